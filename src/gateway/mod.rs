//! The gateway: HTTP listeners routing by `Host`, preflights answered from the rules (through a
//! cache), everything else forwarded to the route's origin and decorated with the CORS headers
//! the rules grant (spec §3, §4).
//!
//! [`spawn`] starts everything a [`Config`] describes and hands back a [`Running`] gateway (its
//! bound addresses, and a way to stop it); [`run`] does the same for the command line and stops
//! on SIGTERM or ctrl-c.

pub mod access_log;
pub mod decorate;
pub mod demo;
pub mod doorkeeper;
pub mod error;
pub mod handler;
pub mod preflight;
pub mod proxy;
pub mod request_id;
pub mod route;
pub mod server;
pub mod snapshot;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, Timeouts};
use crate::rules::RulesError;
use preflight::PreflightCache;
use proxy::OriginClient;
use request_id::RequestIds;
use route::{Route, Routes};

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

/// Everything requests share: routes, the preflight cache, the origin client.
pub struct Gateway {
    pub routes: Routes,
    pub preflight_cache: PreflightCache,
    pub ids: RequestIds,
    pub client: OriginClient,
    pub timeouts: Timeouts,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("route[{route}].rules: {error}")]
    Rules { route: usize, error: RulesError },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("demo_origin.root: {} is not a directory", .0.display())]
    DemoRoot(std::path::PathBuf),
}

impl Gateway {
    /// Loads every route's rules; any bad rules file stops the start (a gateway must not come up
    /// with less CORS than configured).
    pub fn new(config: &Config) -> Result<Gateway, StartError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let cors = route.rules.load().map_err(|error| StartError::Rules {
                route: i + 1,
                error,
            })?;
            routes.push((
                Arc::new(Route::new(i + 1, route, cors)),
                route.hosts.clone(),
            ));
        }
        Ok(Gateway {
            routes: Routes::new(routes),
            preflight_cache: PreflightCache::new(&config.server.preflight_cache),
            ids: RequestIds::default(),
            client: proxy::origin_client(&config.server.timeouts),
            timeouts: config.server.timeouts,
        })
    }
}

/// A started gateway.
pub struct Running {
    /// Bound gateway listeners, in configuration order (port 0 resolved).
    pub addrs: Vec<SocketAddr>,
    /// The demo origin's bound address, when the configuration starts one.
    pub demo_origin: Option<SocketAddr>,
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown grace), and returns
    /// when every listener is closed.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts the demo origin (if configured) and every listener; returns once all are bound.
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    let gateway = Arc::new(Gateway::new(&config)?);
    let (shutdown, watcher) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let demo_origin = match &config.demo_origin {
        None => None,
        Some(demo) => {
            if !demo.root.is_dir() {
                return Err(StartError::DemoRoot(demo.root.clone()));
            }
            let listener = bind(demo.listen).await?;
            let addr = local_addr(&listener, demo.listen)?;
            tasks.spawn(demo::serve(listener, demo.root.clone(), watcher.clone()));
            Some(addr)
        }
    };

    let builder = Arc::new(server::connection_builder(&config.server.timeouts));
    let mut addrs = Vec::with_capacity(config.server.listen.len());
    let mut listeners = Vec::with_capacity(config.server.listen.len());
    for &addr in &config.server.listen {
        let listener = bind(addr).await?;
        addrs.push(local_addr(&listener, addr)?);
        listeners.push(listener);
    }
    for listener in listeners {
        tasks.spawn(server::accept_loop(
            listener,
            Arc::clone(&gateway),
            Arc::clone(&builder),
            watcher.clone(),
        ));
    }
    Ok(Running {
        addrs,
        demo_origin,
        gateway,
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
    for addr in &running.addrs {
        tracing::info!("corsgate listening on http://{addr}");
    }
    for route in running.gateway.routes.all() {
        let snapshot = route.snapshot();
        let rules = match snapshot.cors.policy() {
            Some(policy) => format!("{} rule(s)", policy.rules().len()),
            None => "no CORS configuration".to_string(),
        };
        tracing::info!(route = route.index, origin = %route.origin, "{rules}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    running.shutdown().await;
    Ok(())
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
