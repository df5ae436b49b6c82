//! The gateway: HTTP listeners routing by `Host`, preflights answered from the rules (through a
//! cache), everything else forwarded to the route's origin and decorated with the CORS headers
//! the rules grant (spec §3, §4).
//!
//! [`spawn`] starts everything a [`Config`] describes and hands back a [`Running`] gateway (its
//! bound addresses, its TLS certificates to reload, and a way to stop it); [`run`] does the same
//! for the command line, reloads certificates on SIGHUP and stops on SIGTERM or ctrl-c.

pub mod access_log;
pub mod admin;
pub mod certs;
pub mod decorate;
pub mod demo;
pub mod doorkeeper;
pub mod error;
pub mod handler;
pub mod log_writer;
mod pool;
pub mod preflight;
pub mod proxy;
pub mod redirect;
pub mod request_id;
pub mod route;
pub mod server;
mod watchdog;
/// Snapshots live with the rules that make them; re-exported where the request path reads them.
pub use crate::rules::snapshot;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Timeouts};
use crate::rules::shadow::ShadowRules;
use crate::rules::{RouteRules, RulesError};
use crate::tls::{self, CertResolver, OriginTlsError, TlsError};
use access_log::AccessLog;
use certs::{CertReload, Certificates};
use preflight::PreflightCache;
use redirect::Redirect;
use request_id::RequestIds;
use route::{Route, Routes};
use server::{ConnectionLimit, Listener, Protocols, Role, Transport};

/// Error type of every body the gateway sends.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the gateway sends: streamed from the origin or built here.
pub type Body = BoxBody<Bytes, BodyError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|e: Infallible| match e {}).boxed()
}

/// Everything requests share: routes (each with its way to its origin), the preflight cache.
pub struct Gateway {
    pub routes: Routes,
    pub preflight_cache: PreflightCache,
    pub ids: RequestIds,
    pub timeouts: Timeouts,
    /// Who the admin listener answers.
    pub admin: admin::Guard,
    /// `None` when the access log is off.
    pub access_log: Option<AccessLog>,
    /// Each route's candidate rules, by route position (`shadow_rules`).
    pub shadows: Vec<Option<ShadowRules>>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("route[{route}].rules: {error}")]
    Rules { route: usize, error: RulesError },
    #[error("route[{route}].shadow_rules: {error}")]
    ShadowRules { route: usize, error: RulesError },
    #[error(transparent)]
    AccessLog(#[from] log_writer::OpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("demo_origin.root: {} is not a directory", .0.display())]
    DemoRoot(std::path::PathBuf),
    #[error("server.tls[{listener}]: {error}")]
    Certificates { listener: usize, error: TlsError },
    #[error("server.tls[{listener}]: {error}")]
    TlsConfig {
        listener: usize,
        error: rustls::Error,
    },
    #[error("server.origin_tls: {0}")]
    OriginTls(#[from] OriginTlsError),
    #[error(transparent)]
    AdminToken(#[from] admin::TokenError),
}

impl Gateway {
    /// Loads every route's rules; any bad rules file stops the start (a gateway must not come up
    /// with less CORS than configured).
    pub fn new(config: &Config) -> Result<Gateway, StartError> {
        let admin = admin::Guard::new(&config.admin)?;
        let origin_tls = &config.server.origin_tls;
        let origin_tls = tls::client_config(origin_tls.roots, origin_tls.ca_file.as_deref())?;
        let fetch_client =
            crate::rules::bucket::fetch_client(config.server.timeouts.connect, origin_tls.clone());
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut shadows = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let label = format!("route[{}]", i + 1);
            let rules = RouteRules::build_checked(
                &label,
                &route.rules,
                route.deny_warnings,
                &route.origin,
                &fetch_client,
            )
            .map_err(|error| StartError::Rules {
                route: i + 1,
                error,
            })?;
            let shadow = route.shadow_rules.as_ref().map(|source| {
                ShadowRules::build(i + 1, source, &route.origin, &fetch_client).map_err(|error| {
                    StartError::ShadowRules {
                        route: i + 1,
                        error,
                    }
                })
            });
            shadows.push(shadow.transpose()?);
            routes.push((
                Arc::new(Route::new(i + 1, route, rules, &config.server, &origin_tls)),
                route.hosts.clone(),
            ));
        }
        Ok(Gateway {
            routes: Routes::new(routes),
            preflight_cache: PreflightCache::new(&config.server.preflight_cache),
            ids: RequestIds::default(),
            timeouts: config.server.timeouts,
            admin,
            access_log: AccessLog::start(&config.log)?,
            shadows,
        })
    }

    /// The candidate rules of `route`, if it has any.
    pub fn shadow(&self, route: &Route) -> Option<&ShadowRules> {
        self.shadows.get(route.index.wrapping_sub(1))?.as_ref()
    }
}

/// A started gateway.
pub struct Running {
    /// Bound gateway listeners (port 0 resolved): the plain ones, then the TLS ones, each in
    /// configuration order.
    pub addrs: Vec<SocketAddr>,
    /// The TLS listeners among `addrs`.
    pub tls_addrs: Vec<SocketAddr>,
    /// The plain-HTTP listeners that redirect to HTTPS.
    pub redirect_addrs: Vec<SocketAddr>,
    /// The demo origin's bound address, when the configuration starts one.
    pub demo_origin: Option<SocketAddr>,
    /// The admin listener's bound address, unless it is off.
    pub admin: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    certificates: Certificates,
    connections: Arc<ConnectionLimit>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Re-reads every TLS listener's certificates; a listener whose new files are bad keeps its
    /// previous certificates (see each result). Open connections are not touched.
    pub fn reload_tls(&self) -> Vec<CertReload> {
        self.certificates.reload()
    }

    /// Client connections open now, over every listener but the demo origin's.
    pub fn open_connections(&self) -> usize {
        self.connections.open()
    }

    /// The TLS listeners' certificates, to reload from another task (a signal, a file watcher).
    pub fn certificates(&self) -> Certificates {
        self.certificates.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown grace), and returns
    /// when every listener is closed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        // Every request has finished (or been cut): their lines are all in the writer's hands.
        if let Some(log) = self.gateway.access_log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

/// Starts the demo origin (if configured) and every listener; returns once all are bound.
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    let gateway = Arc::new(Gateway::new(&config)?);
    let (shutdown, watcher) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let server = &config.server;
    let protocols = Arc::new(Protocols::new(
        &server.timeouts,
        &server.http2,
        &server.limits,
    ));
    let max_connections = server::connection_cap(server.limits.max_connections);
    // One cap over every client-facing listener (gateway, redirect, admin).
    let connections = Arc::new(ConnectionLimit::new(max_connections));
    let accept = |listener: Listener, limit: &Arc<ConnectionLimit>| {
        server::accept_loop(
            listener,
            Arc::clone(&gateway),
            Arc::clone(&protocols),
            Arc::clone(limit),
            watcher.clone(),
        )
    };

    let demo_origin = match &config.demo_origin {
        None => None,
        Some(demo) => {
            if !demo.root.is_dir() {
                return Err(StartError::DemoRoot(demo.root.clone()));
            }
            let socket = bind(demo.listen).await?;
            let addr = local_addr(&socket, demo.listen)?;
            // The demo origin is the gateway's own origin: under the clients' cap, clients at
            // the cap would leave the gateway no connection to reach it with.
            let own = Arc::new(ConnectionLimit::new(max_connections));
            let role = Role::Demo(hyper_staticfile::Static::new(demo.root.clone()));
            tasks.spawn(accept(listener(socket, role), &own));
            Some(addr)
        }
    };

    let admin = match config.admin.listen {
        None => None,
        Some(addr) => {
            let socket = bind(addr).await?;
            let bound = local_addr(&socket, addr)?;
            gateway.admin.bound(bound);
            tasks.spawn(accept(listener(socket, Role::Admin), &connections));
            Some(bound)
        }
    };
    // SIGHUP means "reload", never "terminate", even when no route has anything to reload.
    if let Ok(mut hangup) = crate::watch::Hangup::subscribe() {
        let mut stop = watcher.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = hangup.recv() => tracing::info!("SIGHUP: reloading every rules source"),
                    _ = stop.changed() => return,
                }
            }
        });
    }
    // Watches, pollers and first fetches of bucket rules, before the first request is accepted.
    for route in gateway.routes.all() {
        route.rules.start(watcher.clone()).await;
    }
    for shadow in gateway.shadows.iter().flatten() {
        shadow.start(watcher.clone()).await;
    }
    if let Some(reopen) = access_log::reopen_on_usr1(gateway.access_log.clone(), watcher.clone()) {
        tasks.spawn(reopen);
    }

    let mut listeners = Vec::new();
    let mut addrs = bind_all(
        &server.listen,
        &Transport::Plain,
        &Role::Gateway,
        &mut listeners,
    )
    .await?;
    let mut tls_addrs = Vec::new();
    let mut groups = Vec::with_capacity(server.tls.len());
    for (i, t) in server.tls.iter().enumerate() {
        let listener = i + 1;
        let resolver = CertResolver::load(t.certs.clone(), t.unknown_name)
            .map_err(|error| StartError::Certificates { listener, error })?;
        let resolver = Arc::new(resolver);
        let acceptor = TlsAcceptor::from(
            tls::server_config(Arc::clone(&resolver))
                .map_err(|error| StartError::TlsConfig { listener, error })?,
        );
        let transport = Transport::Tls(acceptor);
        let bound = bind_all(&t.listen, &transport, &Role::Gateway, &mut listeners).await?;
        tls_addrs.extend_from_slice(&bound);
        groups.push((listener, bound, resolver));
    }
    addrs.extend_from_slice(&tls_addrs);
    let redirect_addrs = match &server.redirect {
        Some(r) => {
            let port = r
                .https_port
                .or_else(|| tls_addrs.first().map(SocketAddr::port))
                .unwrap_or(443);
            let hosts = config.routes.iter().flat_map(|r| r.hosts.iter().cloned());
            let role = Role::Redirect(Arc::new(Redirect::new(port, hosts.collect())));
            bind_all(&r.listen, &Transport::Plain, &role, &mut listeners).await?
        }
        None => Vec::new(),
    };
    let certificates = Certificates::new(groups);
    if let Some(reloads) = watch_certificates(&certificates, watcher.clone()) {
        tasks.spawn(reloads);
    }
    for listener in listeners {
        tasks.spawn(accept(listener, &connections));
    }
    Ok(Running {
        addrs,
        tls_addrs,
        redirect_addrs,
        demo_origin,
        admin,
        gateway,
        certificates,
        connections,
        shutdown,
        tasks,
    })
}

/// `corsgate serve`: starts, logs where it listens, stops gracefully on SIGTERM or ctrl-c.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = spawn(config).await?;
    if let Some(demo) = running.demo_origin {
        tracing::info!("demo origin serving on http://{demo}");
    }
    if let Some(admin) = running.admin {
        tracing::info!("admin listening on http://{admin}");
    }
    for addr in running
        .addrs
        .iter()
        .filter(|a| !running.tls_addrs.contains(a))
    {
        tracing::info!("corsgate listening on http://{addr}");
    }
    for addr in &running.tls_addrs {
        tracing::info!("corsgate listening on https://{addr}");
    }
    for addr in &running.redirect_addrs {
        tracing::info!("redirecting http://{addr} to https");
    }
    for route in running.gateway.routes.all() {
        tracing::info!(route = route.index, origin = %route.origin, "{}", route.rules.describe());
    }
    for shadow in running.gateway.shadows.iter().flatten() {
        tracing::info!(
            route = shadow.route(),
            "shadow rules: {}",
            shadow.rules().describe()
        );
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await;
    Ok(())
}

/// `SIGHUP` re-reads the TLS certificates (other subscribers to the signal, if any, get it
/// too). Without TLS listeners SIGHUP keeps its default meaning.
/// Certificates reload when their files change (renewal tools write a new file and rename it
/// into place, which the watch sees) and on SIGHUP. A bad renewal keeps the old certificates
/// serving; either way the outcome is logged. The watch starts before `spawn` returns, so no
/// change made after start-up is missed.
fn watch_certificates(
    certificates: &Certificates,
    mut stop: watch::Receiver<bool>,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    use crate::watch::{DEFAULT_DEBOUNCE, FileWatch, Hangup};
    if certificates.is_empty() {
        return None;
    }
    let mut files = FileWatch::spawn(&certificates.paths(), DEFAULT_DEBOUNCE)
        .map_err(|err| {
            tracing::warn!("certificate files are not watched, SIGHUP still reloads them: {err}")
        })
        .ok();
    let mut hangup = Hangup::subscribe()
        .map_err(|err| tracing::warn!("cannot listen for SIGHUP: {err}"))
        .ok();
    let certificates = certificates.clone();
    Some(async move {
        loop {
            tokio::select! {
                () = async {
                    match files.as_mut() {
                        Some(files) => files.changed().await,
                        None => std::future::pending().await,
                    }
                } => {}
                () = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = stop.changed() => return,
            }
            let certificates = certificates.clone();
            // File reads: off the async workers.
            let _ = tokio::task::spawn_blocking(move || certificates.reload_and_log()).await;
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A plain-HTTP listener answering as `role`.
fn listener(socket: TcpListener, role: Role) -> Listener {
    Listener {
        socket,
        transport: Transport::Plain,
        role,
    }
}

/// Binds every address in `addrs` as a listener of this kind, and returns the addresses bound
/// (port 0 resolved).
async fn bind_all(
    addrs: &[SocketAddr],
    transport: &Transport,
    role: &Role,
    listeners: &mut Vec<Listener>,
) -> Result<Vec<SocketAddr>, StartError> {
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let socket = bind(addr).await?;
        bound.push(local_addr(&socket, addr)?);
        listeners.push(Listener {
            socket,
            transport: transport.clone(),
            role: role.clone(),
        });
    }
    Ok(bound)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}
