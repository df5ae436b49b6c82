//! The gateway: HTTP listeners routing by `Host`, preflights answered from the rules (through a
//! cache), everything else forwarded to the route's origin and decorated with the CORS headers
//! the rules grant (docs/cors-semantics.md#preflight, #actual).
//!
//! [`spawn`] starts everything a [`Config`] describes and hands back a [`Running`] gateway (its
//! bound addresses, its TLS certificates to reload, and a way to stop it); [`run`] does the same
//! for the command line, reloads on SIGHUP and drains, then stops, on SIGTERM or ctrl-c.
//!
//! The configuration in force is one [`Gateway`], swapped whole by a reload (see `reload`):
//! every request reads the one in force when it arrives and keeps it to the end.
//!
//! Stopping (see [`run`]) drains first: `/readyz` answers 503 at once while every listener keeps
//! accepting for `timeouts.drain_delay`, so load balancers stop sending before anything is
//! refused; then the listeners close (see `server`) and in-flight requests get
//! `timeouts.shutdown_grace`.

pub mod access_log;
pub mod admin;
mod body;
pub mod certs;
pub mod decorate;
pub mod demo;
pub mod doorkeeper;
pub mod error;
pub mod handler;
pub mod log_writer;
pub mod metrics;
pub mod panel;
mod pool;
pub mod preflight;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod request_id;
pub mod route;
pub mod server;
mod watchdog;
/// Snapshots live with the rules that make them; re-exported where the request path reads them.
pub use crate::rules::snapshot;
pub use reload::{Applied, ConfigSource, ReloadError};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, watch};
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
use reload::Reloader;
use request_id::RequestIds;
use route::{Route, Routes};
use server::{ConnectionLimit, Listener, Protocols, Role, Stopping, Transport};

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

/// Everything requests share under one configuration: routes (each with its way to its
/// origin), the preflight cache, the timeouts, and how connections are served.
pub struct Gateway {
    pub routes: Routes,
    pub preflight_cache: PreflightCache,
    /// Shared by every configuration of a run: IDs stay unique across reloads.
    pub ids: Arc<RequestIds>,
    pub timeouts: Timeouts,
    /// Who the admin listener answers.
    pub admin: admin::Guard,
    /// The HTTP/1.1 and HTTP/2 settings of connections begun under this configuration.
    pub(crate) protocols: Arc<Protocols>,
    /// `None` when the access log is off.
    pub access_log: Option<AccessLog>,
    /// Each route's candidate rules, by route position (`shadow_rules`).
    pub shadows: Vec<Option<ShadowRules>>,
}

/// Why the gateway could not start (or a configuration could not be put in force).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("route[{route}].rules: {error}")]
    Rules { route: usize, error: RulesError },
    #[error("route[{route}].sign: {error}")]
    Signing {
        route: usize,
        error: crate::s3::SigningError,
    },
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
        };
        Ok((gateway, kept_from))
    }

    /// The candidate rules of `route`, if it has any.
    pub fn shadow(&self, route: &Route) -> Option<&ShadowRules> {
        self.shadows.get(route.index.wrapping_sub(1))?.as_ref()
    }
}

/// One running gateway as its connections see it: the configuration in force (swapped whole
/// by a reload), whether it is draining, and its reloads.
pub struct Instance {
    gateway: ArcSwap<Gateway>,
    /// SIGTERM received: `/readyz` answers 503 while the listeners still accept.
    draining: AtomicBool,
    reloader: Mutex<Reloader>,
}

impl Instance {
    /// The configuration in force.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    /// The configuration in force, for one request (no reference count taken unless kept).
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Gateway>> {
        self.gateway.load()
    }

    /// Stopping: `/readyz` answers 503 from now on.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Reads the configuration file again (when the gateway runs from one) and puts it in
    /// force; `Ok(None)` without a file.
    pub async fn reload_config(&self, why: &str) -> Result<Option<Applied>, ReloadError> {
        self.reloader.lock().await.reload(self, why).await
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
    instance: Arc<Instance>,
    certificates: Certificates,
    connections: Arc<ConnectionLimit>,
    stop_accepting: watch::Sender<bool>,
    close: watch::Sender<bool>,
    /// Ends once every listener has closed its socket.
    listeners_open: mpsc::Receiver<()>,
    tasks: JoinSet<()>,
    /// The demo origin, stopped last: requests in flight may still need it.
    demo: Option<(watch::Sender<bool>, watch::Sender<bool>, JoinSet<()>)>,
}

impl Running {
    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The configuration in force.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.instance.gateway()
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

    /// Puts `config` in force, as a reload of the configuration file would (the listen
    /// addresses and other sockets keep their running values).
    pub async fn reconfigure(&self, config: Config) -> Result<Applied, ReloadError> {
        let mut reloader = self.instance.reloader.lock().await;
        reloader.apply(&self.instance, config).await
    }

    /// What `POST /-/reload` does: the configuration file again (if any), then every rules
    /// source; `true` when everything loaded.
    pub async fn reload(&self, why: &str) -> (bool, serde_json::Value) {
        reload::reload_all(&self.instance, why).await
    }

    /// The first step of stopping: `/readyz` answers 503 from now on, while every listener
    /// keeps accepting and serving.
    pub fn drain(&self) {
        self.instance.draining.store(true, Ordering::Release);
    }

    /// Stops accepting (taking what waits in the listen backlogs), lets in-flight requests
    /// finish (up to the shutdown grace), and returns when every listener is closed.
    pub async fn shutdown(mut self) {
        self.drain();
        let _ = self.stop_accepting.send(true);
        self.instance.reloader.lock().await.stop();
        // Connections are told to close only once no listener can take a new one: a client
        // told to reconnect must not land in a backlog about to be reset.
        while self.listeners_open.recv().await.is_some() {}
        let _ = self.close.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Some((stop_accepting, close, mut tasks)) = self.demo.take() {
            let _ = stop_accepting.send(true);
            let _ = close.send(true);
            while tasks.join_next().await.is_some() {}
        }
        // Every request has finished (or been cut): their lines are all in the writer's hands.
        if let Some(log) = self.instance.gateway().access_log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

/// Starts the demo origin (if configured) and every listener; returns once all are bound.
/// SIGHUP and `POST /-/reload` reload the rules; see [`spawn_with`] to reload a configuration
/// file too.
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    spawn_with(config, None).await
}

/// [`spawn`], with the source a reload reads the configuration from.
pub async fn spawn_with(
    config: Config,
    source: Option<ConfigSource>,
) -> Result<Running, StartError> {
    let gateway = Gateway::new(&config)?;
    let (stop_accepting, accept_signal) = watch::channel(false);
    let (close, close_signal) = watch::channel(false);
    let stopping = Stopping {
        accept: accept_signal.clone(),
        close: close_signal,
    };
    let (open, listeners_open) = mpsc::channel(1);
    let mut tasks = JoinSet::new();
    let server = &config.server;
    let reuse_port = server.reuse_port;
    let max_connections = server::connection_cap(server.limits.max_connections);
    // One cap over every client-facing listener (gateway, redirect, admin).
    let connections = Arc::new(ConnectionLimit::new(max_connections));
    let instance = Arc::new(Instance {
        gateway: ArcSwap::from_pointee(gateway),
        draining: AtomicBool::new(false),
        reloader: Mutex::new(Reloader::new(
            source,
            config.clone(),
            Arc::clone(&connections),
        )),
    });
    let accept = |listener: Listener,
                  limit: &Arc<ConnectionLimit>,
                  stopping: &Stopping,
                  open: &mpsc::Sender<()>| {
        server::accept_loop(
            listener,
            Arc::clone(&instance),
            Arc::clone(limit),
            stopping.clone(),
            open.clone(),
        )
    };

    let mut demo = None;
    let demo_origin = match &config.demo_origin {
        None => None,
        Some(settings) => {
            if !settings.root.is_dir() {
                return Err(StartError::DemoRoot(settings.root.clone()));
            }
            let socket = bind(settings.listen, reuse_port)?;
            let addr = local_addr(&socket, settings.listen)?;
            // The demo origin is the gateway's own origin: under the clients' cap, clients at
            // the cap would leave the gateway no connection to reach it with.
            let own = Arc::new(ConnectionLimit::new(max_connections));
            let role = Role::Demo(hyper_staticfile::Static::new(settings.root.clone()));
            let (stop, accept_signal) = watch::channel(false);
            let (close, close_signal) = watch::channel(false);
            let its_own = Stopping {
                accept: accept_signal,
                close: close_signal,
            };
            // Nobody waits for the demo listener to close: its own channel, dropped at once.
            let (closed, _) = mpsc::channel(1);
            let mut demo_tasks = JoinSet::new();
            demo_tasks.spawn(accept(listener(socket, role), &own, &its_own, &closed));
            demo = Some((stop, close, demo_tasks));
            Some(addr)
        }
    };

    let mut listeners = Vec::new();
    let admin = match config.admin.listen {
        None => None,
        Some(addr) => {
            let socket = bind(addr, reuse_port)?;
            let bound = local_addr(&socket, addr)?;
            instance.gateway().admin.bound(bound);
            instance.reloader.lock().await.admin_bound(bound);
            listeners.push(listener(socket, Role::Admin));
            Some(bound)
        }
    };
    if let Ok(hangup) = crate::watch::Hangup::subscribe() {
        tasks.spawn(reload_on_hangup(
            hangup,
            Arc::clone(&instance),
            accept_signal.clone(),
        ));
    }
    // Watches, pollers and first fetches of bucket rules, before the first request is accepted.
    {
        let gateway = instance.gateway();
        let mut reloader = instance.reloader.lock().await;
        for route in gateway.routes.all() {
            reloader.start_route(&route.rules).await;
        }
    }
    {
        let gateway = instance.gateway();
        for shadow in gateway.shadows.iter().flatten() {
            shadow.start(accept_signal.clone()).await;
        }
        if let Some(reopen) =
            access_log::reopen_on_usr1(gateway.access_log.clone(), accept_signal.clone())
        {
            tasks.spawn(reopen);
        }
    }

    let mut addrs = bind_all(
        &server.listen,
        reuse_port,
        &Transport::Plain,
        &Role::Gateway,
        &mut listeners,
    )?;
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
        let bound = bind_all(
            &t.listen,
            reuse_port,
            &transport,
            &Role::Gateway,
            &mut listeners,
        )?;
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
            let redirect = Arc::new(ArcSwap::from_pointee(Redirect::new(
                port,
                reload::hosts(&config.routes),
            )));
            instance
                .reloader
                .lock()
                .await
                .redirect(port, Arc::clone(&redirect));
            let role = Role::Redirect(redirect);
            bind_all(
                &r.listen,
                reuse_port,
                &Transport::Plain,
                &role,
                &mut listeners,
            )?
        }
        None => Vec::new(),
    };
    let certificates = Certificates::new(groups);
    if let Some(reloads) = watch_certificates(&certificates, accept_signal) {
        tasks.spawn(reloads);
    }
    for listener in listeners {
        tasks.spawn(accept(listener, &connections, &stopping, &open));
    }
    Ok(Running {
        addrs,
        tls_addrs,
        redirect_addrs,
        demo_origin,
        admin,
        instance,
        certificates,
        connections,
        stop_accepting,
        close,
        listeners_open,
        tasks,
        demo,
    })
}

/// SIGHUP means "reload", never "terminate", even when nothing has anything to reload. The
/// configuration file is read again here; rules sources and certificates have their own
/// SIGHUP subscriptions.
async fn reload_on_hangup(
    mut hangup: crate::watch::Hangup,
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

/// How a `corsgate serve` run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Drained: every request that was in flight finished or had its grace.
    Drained,
    /// A second SIGTERM or ctrl-c: stopped at once, requests in flight cut.
    Forced,
}

/// `corsgate serve`: starts, logs where it listens, reloads on SIGHUP, and on SIGTERM or
/// ctrl-c drains then stops (a second signal stops at once).
pub async fn run(config: Config, source: Option<ConfigSource>) -> Result<Stopped, StartError> {
    let running = spawn_with(config, source).await?;
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
    for route in running.gateway().routes.all() {
        tracing::info!(route = route.index, origin = %route.origin, "{}", route.rules.describe());
    }
    for shadow in running.gateway().shadows.iter().flatten() {
        tracing::info!(
            route = shadow.route(),
            "shadow rules: {}",
            shadow.rules().describe()
        );
    }
    let mut signals = Signals::new();
    signals.next().await;
    running.drain();
    let delay = running.gateway().timeouts.drain_delay;
    tracing::info!(
        "shutting down: /readyz answers 503; accepting for {} more, then finishing in-flight \
         requests",
        humantime::format_duration(delay)
    );
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = signals.next() => return Ok(forced()),
    }
    tracing::info!("no longer accepting: finishing in-flight requests");
    tokio::select! {
        () = running.shutdown() => {
            tracing::info!("stopped");
            Ok(Stopped::Drained)
        }
        () = signals.next() => Ok(forced()),
    }
}

fn forced() -> Stopped {
    tracing::warn!("second signal: stopping now, requests in flight are cut");
    Stopped::Forced
}

/// SIGTERM and ctrl-c (SIGINT), every time they come.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .map_err(|err| tracing::warn!("cannot listen for SIGTERM: {err}"))
                .ok();
            Signals { term }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
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
fn bind_all(
    addrs: &[SocketAddr],
    reuse_port: bool,
    transport: &Transport,
    role: &Role,
    listeners: &mut Vec<Listener>,
) -> Result<Vec<SocketAddr>, StartError> {
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let socket = bind(addr, reuse_port)?;
        bound.push(local_addr(&socket, addr)?);
        listeners.push(Listener {
            socket,
            transport: transport.clone(),
            role: role.clone(),
        });
    }
    Ok(bound)
}

fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener, StartError> {
    server::bind(addr, reuse_port).map_err(|source| StartError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}
