//! Reloading the configuration file while the gateway serves (`SIGHUP`, `POST /-/reload`).
//!
//! A reload reads the file again and, when it is valid, builds a whole new [`Gateway`] and swaps
//! it in at once: requests that arrive after the swap are routed, timed and capped by the new
//! configuration; requests in flight finish under the one they started with (they hold it).
//! A route whose rules source did not change keeps its rules, watch and pollers as they are;
//! a new route loads its rules and starts its own, a removed route's stop. Candidate rules
//! (`shadow_rules`) are built afresh by every reload: the new ones start watching and polling,
//! the previous ones stop.
//!
//! A file with problems changes nothing: the problems are logged and returned (the admin
//! listener answers them as JSON). Some settings are the sockets themselves (the listen
//! addresses, TLS listeners, the redirect and admin listeners, the demo origin, `reuse_port`):
//! those keep their running values until a restart, and the log says so for each.
//!
//! Without a configuration file (`serve --origin`) there is nothing to re-read: a reload reloads
//! every route's rules, as it always has.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::redirect::Redirect;
use super::server::{self, ConnectionLimit};
use super::{Gateway, Instance, StartError};
use crate::config::{Config, ConfigFileError, KeyProblem, RouteConfig};
use crate::rules::{RouteRules, RulesSource};
use crate::watch::{Hangup, Scope};

/// Where a reload reads the configuration: the file `serve --config` names, with what the
/// command line changes in it applied again (`--listen`, `--admin`, ...). Called off the async
/// workers (it reads a file).
pub(crate) type ConfigSource = Arc<dyn Fn() -> Result<Config, ReloadError> + Send + Sync>;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read, is not TOML, or has invalid keys or values.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The file is valid but what the command line adds to it is not.
    #[error("{0}")]
    CommandLine(String),
    /// The configuration is valid but cannot be put in force: a new route's rules file, the
    /// origin CA file, the admin token.
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl ReloadError {
    /// Every problem as JSON objects: `message`, and `file`, `line`, `key` where known.
    pub fn problems(&self) -> Vec<Value> {
        match self {
            ReloadError::Config(error) => {
                let file = error.path().display().to_string();
                error
                    .problems()
                    .iter()
                    .map(|p| problem_json(Some(&file), p))
                    .collect()
            }
            ReloadError::Start(StartError::Rules { route, error }) => {
                vec![
                    json!({ "key": format!("route[{route}].rules"), "message": error.to_string() }),
                ]
            }
            other => vec![json!({ "message": other.to_string() })],
        }
    }
}

fn problem_json(file: Option<&str>, problem: &KeyProblem) -> Value {
    let mut value = json!({ "message": problem.message });
    if let Some(file) = file {
        value["file"] = json!(file);
    }
    if let Some(line) = problem.line {
        value["line"] = json!(line);
    }
    if !problem.key.is_empty() {
        value["key"] = json!(problem.key);
    }
    value
}

/// What a reload of the configuration did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Routes (1-based, in the new configuration) that kept their rules as they were.
    pub kept: Vec<usize>,
    /// Routes whose rules were built afresh: new routes, routes whose rules source changed,
    /// and routes without rules (nothing to keep).
    pub loaded: Vec<usize>,
    /// How many routes of the previous configuration are gone (their rules' tasks stopped).
    pub removed: usize,
    /// Keys that changed in the file but keep their running values until a restart.
    pub restart_needed: Vec<&'static str>,
}

impl Applied {
    pub fn to_json(&self) -> Value {
        json!({
            "kept": self.kept,
            "loaded": self.loaded,
            "removed": self.removed,
            "restart_needed": self.restart_needed,
        })
    }
}

/// The state a configuration reload works from; one reload at a time (it sits in a mutex).
pub(crate) struct Reloader {
    source: Option<ConfigSource>,
    /// The configuration in force, with the restart-only keys at their running values.
    config: Config,
    /// Where every route's and candidate's tasks run (each in a scope of its own).
    scope: Scope,
    /// One per route in force, in order: dropping it stops the route's rules tasks.
    routes: Vec<watch::Sender<bool>>,
    /// Stops the tasks of the candidate rules in force (`shadow_rules`): built afresh by every
    /// reload, so each generation's are stopped when the next one's start.
    shadows: Option<watch::Sender<bool>>,
    connections: Arc<ConnectionLimit>,
    /// The redirect listener's answers and the HTTPS port it sends clients to.
    redirect: Option<(u16, Arc<ArcSwap<Redirect>>)>,
    /// The admin listener's bound address, which a new admin guard must know.
    admin: Option<SocketAddr>,
    stopped: bool,
}

impl Reloader {
    pub(crate) fn new(
        source: Option<ConfigSource>,
        config: Config,
        connections: Arc<ConnectionLimit>,
        scope: Scope,
    ) -> Reloader {
        Reloader {
            source,
            config,
            scope,
            routes: Vec::new(),
            shadows: None,
            connections,
            redirect: None,
            admin: None,
            stopped: false,
        }
    }

    /// Starts the tasks that keep the rules of `gateway` current (watches, pollers, `SIGHUP`):
    /// each route's until it is removed, the candidates' until the next reload, all until the
    /// gateway stops.
    pub(crate) async fn start(&mut self, gateway: &Gateway) {
        for route in gateway.routes.all() {
            let stop = self.start_route(&route.rules).await;
            self.routes.push(stop);
        }
        self.start_shadows(gateway).await;
    }

    async fn start_route(&self, rules: &RouteRules) -> watch::Sender<bool> {
        let (stop, scope) = self.scope.child();
        rules.start(&scope).await;
        stop
    }

    /// Starts the candidates of `gateway` and stops those of the previous generation.
    async fn start_shadows(&mut self, gateway: &Gateway) {
        let (stop, scope) = self.scope.child();
        for shadow in gateway.shadows.iter().flatten() {
            shadow.start(&scope).await;
        }
        if let Some(previous) = self.shadows.replace(stop) {
            let _ = previous.send(true);
        }
    }

    pub(crate) fn admin_bound(&mut self, addr: SocketAddr) {
        self.admin = Some(addr);
    }

    pub(crate) fn redirect(&mut self, https_port: u16, redirect: Arc<ArcSwap<Redirect>>) {
        self.redirect = Some((https_port, redirect));
    }

    /// Stops every route's and candidate's rules tasks, and any reload after.
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        for stop in self.routes.drain(..).chain(self.shadows.take()) {
            let _ = stop.send(true);
        }
    }

    /// Reads the configuration source again and puts it in force; `Ok(None)` without a source.
    pub(crate) async fn reload(
        &mut self,
        instance: &Instance,
        why: &str,
    ) -> Result<Option<Applied>, ReloadError> {
        let Some(source) = self.source.clone() else {
            return Ok(None);
        };
        let read = tokio::task::spawn_blocking(move || source()).await;
        let config = match read {
            Ok(config) => config,
            Err(join) => Err(ReloadError::CommandLine(format!(
                "reading the configuration failed: {join}"
            ))),
        };
        let result = match config {
            Ok(config) => self.apply(instance, config).await,
            Err(error) => Err(error),
        };
        match &result {
            Ok(applied) => {
                for key in &applied.restart_needed {
                    tracing::warn!("{key} changed: restart to apply");
                }
                tracing::info!(
                    "configuration reloaded ({why}): {} route(s), rules kept for {:?}, loaded for \
                     {:?}, {} removed",
                    applied.kept.len() + applied.loaded.len(),
                    applied.kept,
                    applied.loaded,
                    applied.removed
                );
            }
            Err(error) => tracing::error!(
                "configuration not reloaded ({why}), the one in force keeps serving:\n{error}"
            ),
        }
        result.map(Some)
    }

    /// Puts `config` in force (see the module's comment).
    pub(crate) async fn apply(
        &mut self,
        instance: &Instance,
        mut config: Config,
    ) -> Result<Applied, ReloadError> {
        if self.stopped {
            return Err(ReloadError::ShuttingDown);
        }
        let restart_needed = keep_sockets(&self.config, &mut config);
        let current = instance.gateway();
        let (gateway, kept_from) = Gateway::build(&config, Some((&current, &self.config)))?;
        if let Some(addr) = self.admin {
            gateway.admin.bound(addr);
        }
        let mut applied = Applied {
            restart_needed,
            ..Applied::default()
        };
        let mut previous: Vec<Option<watch::Sender<bool>>> = std::mem::take(&mut self.routes)
            .into_iter()
            .map(Some)
            .collect();
        let mut routes = Vec::with_capacity(kept_from.len());
        for (route, kept) in gateway.routes.all().iter().zip(&kept_from) {
            match kept.and_then(|i| previous.get_mut(i).and_then(Option::take)) {
                Some(stop) => {
                    applied.kept.push(route.index);
                    routes.push(stop);
                }
                None => {
                    applied.loaded.push(route.index);
                    routes.push(self.start_route(&route.rules).await);
                }
            }
        }
        // Candidates are never kept: the new ones watch and poll from now on.
        self.start_shadows(&gateway).await;
        instance.gateway.store(Arc::new(gateway));
        self.routes = routes;
        // The routes gone: their watches and pollers stop (requests in flight on them keep
        // the rules they hold).
        for stop in previous.into_iter().flatten() {
            applied.removed += 1;
            let _ = stop.send(true);
        }
        let limits = (&self.config.server.limits, &config.server.limits);
        if limits.0.max_connections != limits.1.max_connections {
            self.connections
                .resize(server::connection_cap(limits.1.max_connections));
        }
        if let Some((port, redirect)) = &self.redirect {
            redirect.store(Arc::new(Redirect::new(*port, hosts(&config.routes))));
        }
        self.config = config;
        Ok(applied)
    }
}

/// SIGHUP means "reload", never "terminate", even when nothing has anything to reload. The
/// configuration file is read again here; rules sources and certificates reload on their own
/// [`Hangup`]s.
pub(crate) async fn reload_on_hangup(
    mut hangup: Hangup,
    instance: Arc<Instance>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = hangup.recv() => {}
            _ = stop.changed() => return,
        }
        // A configuration reload logs its outcome itself, either way.
        if let Ok(None) = instance.reload_config("SIGHUP").await {
            tracing::info!("SIGHUP: reloading every rules source");
        }
    }
}

/// Every route's host patterns, for the redirect listener.
pub(crate) fn hosts(routes: &[RouteConfig]) -> Vec<crate::config::HostPattern> {
    routes
        .iter()
        .flat_map(|r| r.hosts.iter().cloned())
        .collect()
}

/// Sets every key of `new` that only a restart can change to its value in `running`, and names
/// those that differed.
fn keep_sockets(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (old, server) = (&running.server, &mut new.server);
    if old.listen != server.listen {
        changed.push("server.listen");
        server.listen.clone_from(&old.listen);
    }
    if old.tls != server.tls {
        changed.push("server.tls");
        server.tls.clone_from(&old.tls);
    }
    if old.redirect != server.redirect {
        changed.push("server.redirect");
        server.redirect.clone_from(&old.redirect);
    }
    if old.reuse_port != server.reuse_port {
        changed.push("server.reuse_port");
        server.reuse_port = old.reuse_port;
    }
    if running.admin.listen != new.admin.listen {
        changed.push("admin.listen");
        new.admin.listen = running.admin.listen;
    }
    let demo = |c: &Config| c.demo_origin.as_ref().map(|d| (d.listen, d.root.clone()));
    if demo(running) != demo(new) {
        changed.push("demo_origin");
        new.demo_origin.clone_from(&running.demo_origin);
    }
    changed
}

/// Whether a route of the new configuration may keep the rules of a route of the previous one:
/// the same source, read the same way.
pub(crate) fn same_rules(old: (&Config, &RouteConfig), new: (&Config, &RouteConfig)) -> bool {
    let ((old_config, old), (new_config, new)) = (old, new);
    // Bucket rules are fetched from the route's origin, with the server's connect timeout and
    // origin TLS trust.
    let fetched_alike = || {
        old.origin == new.origin
            && old_config.server.timeouts.connect == new_config.server.timeouts.connect
            && old_config.server.origin_tls == new_config.server.origin_tls
    };
    match (&old.rules, &new.rules) {
        (RulesSource::File(a), RulesSource::File(b)) => a == b,
        (RulesSource::Bucket(a), RulesSource::Bucket(b)) => a == b && fetched_alike(),
        (RulesSource::Endpoint(a), RulesSource::Endpoint(b)) => a == b && fetched_alike(),
        // No rules: nothing to keep, a new one costs nothing.
        _ => false,
    }
}

/// The same rules, held twice (by the route in force and the one replacing it); `None` when
/// there is nothing worth keeping.
pub(crate) fn share(rules: &RouteRules) -> Option<RouteRules> {
    match rules {
        RouteRules::Fixed(_) => None,
        RouteRules::File(file) => Some(RouteRules::File(Arc::clone(file))),
        RouteRules::Bucket(bucket) => Some(RouteRules::Bucket(Arc::clone(bucket))),
        RouteRules::Endpoint(endpoint) => Some(RouteRules::Endpoint(Arc::clone(endpoint))),
    }
}

/// The answer of `POST /-/reload`: the configuration reloaded (when there is a file), then
/// every route's rules; `true` when everything loaded.
pub(crate) async fn reload_all(instance: &Instance, why: &str) -> (bool, Value) {
    let reloaded = instance.reloader.lock().await.reload(instance, why).await;
    let config = match reloaded {
        Ok(applied) => applied.map(|applied| applied.to_json()),
        Err(error) => {
            return (
                false,
                json!({
                    "error": format!("configuration not reloaded: {}", summary(&error)),
                    "problems": error.problems(),
                }),
            );
        }
    };
    let (ok, mut outcome) = super::admin::reload(&instance.gateway()).await;
    if let Some(config) = config {
        outcome["config"] = config;
    }
    (ok, outcome)
}

fn summary(error: &ReloadError) -> String {
    match error {
        ReloadError::Config(ConfigFileError::Read { path, source }) => {
            format!("{}: cannot read: {source}", path.display())
        }
        ReloadError::Config(e) => format!("{} has problems", e.path().display()),
        other => other.to_string(),
    }
}
