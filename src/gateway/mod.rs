//! The gateway: HTTP listeners routing by `Host`, preflights answered from the rules (through a
//! cache), everything else forwarded to the route's origin and decorated with the CORS headers
//! the rules grant (docs/cors-semantics.md#preflight, #actual).
//!
//! [`spawn`] starts everything a [`Config`] describes and hands back a [`Running`] gateway (its
//! bound addresses, its TLS certificates to reload, and a way to stop it); [`run`] does the same
//! for the command line, reloads on SIGHUP and drains, then stops, on SIGTERM or ctrl-c.
//!
//! Every background task a gateway starts (rules watches and pollers, certificate reloads, the
//! configuration reload on SIGHUP, the log reopen on SIGUSR1) runs under one
//! [`Supervisor`], the only subscriber to SIGHUP: stopping cancels them all and
//! waits for each to end. The rest of start-up lives in `build` (a [`Gateway`] from a
//! configuration), `listen` (the sockets), `certs` (certificate reloads) and `serve` (signals).
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
mod build;
pub mod certs;
pub(crate) mod decorate;
pub mod demo;
pub mod doorkeeper;
pub mod error;
pub mod handler;
mod listen;
pub(crate) mod log_writer;
pub mod metrics;
pub mod panel;
mod pool;
pub mod preflight;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod request_id;
pub mod route;
mod serve;
pub mod server;
mod watchdog;
/// Snapshots live with the rules that make them; re-exported where the request path reads them.
pub use crate::rules::snapshot;
pub(crate) use reload::ConfigSource;
pub use reload::{Applied, ReloadError};
pub use serve::{Stopped, run};

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, Timeouts};
use crate::rules::RulesError;
use crate::rules::shadow::ShadowRules;
use crate::tls::{self, CertResolver, OriginTlsError, TlsError};
use crate::watch::Supervisor;
use access_log::AccessLog;
use certs::{CertReload, Certificates, watch_certificates};
use listen::{bind, bind_all, listener, local_addr};
use preflight::PreflightCache;
use redirect::Redirect;
use reload::{Reloader, reload_on_hangup};
use request_id::RequestIds;
use route::Routes;
use server::{ConnectionLimit, Listener, Protocols, Role, Stopping, Transport};

/// Error type of every body the gateway sends.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
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
    /// Whether `/metrics` is served and the request path counts for it.
    pub(crate) counting: crate::metrics::CountingVote,
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
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Reads the configuration file again (when the gateway runs from one) and puts it in
    /// force; `Ok(None)` without a file.
    pub(crate) async fn reload_config(&self, why: &str) -> Result<Option<Applied>, ReloadError> {
        self.reloader.lock().await.reload(self, why).await
    }
}

/// A started gateway.
pub struct Running {
    /// Bound gateway listeners (port 0 resolved): the plain ones, then the TLS ones, each in
    /// configuration order.
    pub(crate) addrs: Vec<SocketAddr>,
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
    /// The accept loops.
    tasks: JoinSet<()>,
    /// Every background task: rules watches and pollers, certificate reloads, signals.
    supervisor: Supervisor,
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
        self.supervisor.cancel();
        self.instance.reloader.lock().await.stop();
        // Connections are told to close only once no listener can take a new one: a client
        // told to reconnect must not land in a backlog about to be reset.
        while self.listeners_open.recv().await.is_some() {}
        let _ = self.close.send(true);
        while self.tasks.join_next().await.is_some() {}
        // No task the gateway started outlives it.
        self.supervisor.shutdown().await;
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
pub(crate) async fn spawn_with(
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
    let supervisor = Supervisor::new();
    let scope = supervisor.scope();
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
            scope.clone(),
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
    scope.spawn(reload_on_hangup(
        scope.hangup(),
        Arc::clone(&instance),
        scope.stop_signal(),
    ));
    // Watches, pollers and first fetches of bucket rules, before the first request is accepted.
    {
        let gateway = instance.gateway();
        instance.reloader.lock().await.start(&gateway).await;
        if let Some(reopen) =
            access_log::reopen_on_usr1(gateway.access_log.clone(), scope.stop_signal())
        {
            scope.spawn(reopen);
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
    if let Some(reloads) = watch_certificates(&certificates, &scope) {
        scope.spawn(reloads);
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
        supervisor,
        demo,
    })
}
