//! Building a [`Gateway`] from a configuration: each route's rules (kept from the gateway in
//! force when a reload leaves their source alone), candidates, origin links, the preflight
//! cache and the access log.

use std::sync::Arc;

use super::access_log::AccessLog;
use super::preflight::PreflightCache;
use super::reload;
use super::route::{Route, Routes};
use super::server::Protocols;
use super::{Gateway, StartError, admin};
use crate::config::Config;
use crate::rules::RouteRules;
use crate::rules::shadow::ShadowRules;
use crate::tls;

impl Gateway {
    /// Loads every route's rules; any bad rules file stops the start (a gateway must not come up
    /// with less CORS than configured).
    pub fn new(config: &Config) -> Result<Gateway, StartError> {
        Gateway::build(config, None).map(|(gateway, _)| gateway)
    }

    /// The gateway `config` describes. With `previous` (the gateway in force and its
    /// configuration), a route whose rules come from the same source keeps the rules of the
    /// previous route (no reload from scratch, no second watch or poller): the second value
    /// says, for each route, which previous route's rules it kept.
    pub(crate) fn build(
        config: &Config,
        previous: Option<(&Gateway, &Config)>,
    ) -> Result<(Gateway, Vec<Option<usize>>), StartError> {
        let admin = admin::Guard::new(&config.admin)?;
        let origin_tls = &config.server.origin_tls;
        let origin_tls = tls::client_config(origin_tls.roots, origin_tls.ca_file.as_deref())?;
        let fetch_client =
            crate::rules::bucket::fetch_client(config.server.timeouts.connect, origin_tls.clone());
        let mut taken = vec![false; previous.map_or(0, |(_, old)| old.routes.len())];
        let mut kept_from = Vec::with_capacity(config.routes.len());
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut shadows = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let kept = previous.and_then(|(gateway, old)| {
                let (j, _) = old.routes.iter().enumerate().find(|(j, was)| {
                    !taken[*j] && reload::same_rules((old, was), (config, route))
                })?;
                let rules = reload::share(&gateway.routes.all().get(j)?.rules)?;
                Some((j, rules))
            });
            let rules = match kept {
                Some((j, rules)) => {
                    taken[j] = true;
                    kept_from.push(Some(j));
                    rules
                }
                None => {
                    kept_from.push(None);
                    let label = format!("route[{}]", i + 1);
                    RouteRules::build_checked(
                        &label,
                        &route.rules,
                        route.deny_warnings,
                        &route.origin,
                        &fetch_client,
                    )
                    .map_err(|error| StartError::Rules {
                        route: i + 1,
                        error,
                    })?
                }
            };
            let shadow = route.shadow_rules.as_ref().map(|source| {
                ShadowRules::build(i + 1, source, &route.origin, &fetch_client).map_err(|error| {
                    StartError::ShadowRules {
                        route: i + 1,
                        error,
                    }
                })
            });
            shadows.push(shadow.transpose()?);
            let built =
                Route::new(i + 1, route, rules, &config.server, &origin_tls).map_err(|error| {
                    StartError::Signing {
                        route: i + 1,
                        error,
                    }
                })?;
            routes.push((Arc::new(built), route.hosts.clone()));
        }
        let server = &config.server;
        // Keys start with each snapshot's generation, unique across routes and reloads: the
        // answers cached for kept rules stay right.
        let preflight_cache = match previous {
            Some((gateway, old)) if old.server.preflight_cache == server.preflight_cache => {
                gateway.preflight_cache.clone()
            }
            _ => PreflightCache::new(&server.preflight_cache),
        };
        let gateway = Gateway {
            routes: Routes::new(routes),
            preflight_cache,
            ids: previous.map_or_else(Arc::default, |(gateway, _)| Arc::clone(&gateway.ids)),
            timeouts: server.timeouts,
            admin,
            protocols: Arc::new(Protocols::new(
                &server.timeouts,
                &server.http2,
                &server.limits,
            )),
            // One writer for the process's life: a reload that keeps `[log]` keeps it.
            access_log: match previous {
                Some((gateway, old)) if old.log == config.log => gateway.access_log.clone(),
                _ => AccessLog::start(&config.log)?,
            },
            shadows,
            counting: crate::metrics::CountingVote::new(config.admin.counts()),
        };
        Ok((gateway, kept_from))
    }

    /// The candidate rules of `route`, if it has any.
    pub fn shadow(&self, route: &Route) -> Option<&ShadowRules> {
        self.shadows.get(route.index.wrapping_sub(1))?.as_ref()
    }
}
