//! Connections: the accept loop, the TLS handshake (off the accept loop, bounded in time), and
//! serving one connection with the HTTP version it speaks, its timeouts and graceful shutdown.
//!
//! On TLS connections ALPN decides: `h2` is served as HTTP/2 only and `http/1.1` as HTTP/1.1
//! only, so a client never gets a protocol it did not agree to; without ALPN (and on plain
//! listeners) the first bytes decide, which is how cleartext HTTP/2 with prior knowledge works.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::Gateway;
use super::handler::{self, Handled};
use super::proxy::Peer;
use super::redirect::Redirect;
use super::watchdog::{Activity, Expired, Tracked, Watched};
use crate::config::{Http2Config, Limits, Timeouts};
use crate::tls::{self, Alpn};

/// The connection builders of every listener, one per way a connection may start.
pub struct Protocols {
    /// HTTP/1.1 or HTTP/2, told apart by the first bytes.
    auto: Arc<auto::Builder<TokioExecutor>>,
    http1: Arc<auto::Builder<TokioExecutor>>,
    http2: Arc<auto::Builder<TokioExecutor>>,
}

impl Protocols {
    pub fn new(timeouts: &Timeouts, http2: &Http2Config, limits: &Limits) -> Protocols {
        let builder = connection_builder(timeouts, http2, limits);
        Protocols {
            auto: Arc::new(builder.clone()),
            http1: Arc::new(builder.clone().http1_only()),
            http2: Arc::new(builder.http2_only()),
        }
    }

    fn for_alpn(&self, alpn: Alpn) -> &Arc<auto::Builder<TokioExecutor>> {
        match alpn {
            Alpn::H2 => &self.http2,
            Alpn::Http11 => &self.http1,
            Alpn::None => &self.auto,
        }
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder with the configured timeouts and HTTP/2 settings.
pub fn connection_builder(
    timeouts: &Timeouts,
    http2: &Http2Config,
    limits: &Limits,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No timer for HTTP/1: hyper's header-read timeout arms one per request; the connection's
    // watchdog enforces `header_read` instead (see `watchdog`).
    builder.http1().header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(timeouts.idle / 2))
        .keep_alive_timeout(timeouts.header_read)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(http2.initial_stream_window_size)
        .initial_connection_window_size(http2.initial_connection_window_size);
    builder
}

/// How a listener's connections begin.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(TlsAcceptor),
}

/// What a listener answers.
#[derive(Clone)]
pub enum Role {
    /// The gateway itself: preflights, forwarding, decoration.
    Gateway,
    /// Redirects to HTTPS (health checks excepted).
    Redirect(Arc<Redirect>),
}

/// One listener: its socket, how connections begin and what they are answered.
pub struct Listener {
    pub socket: TcpListener,
    pub transport: Transport,
    pub role: Role,
}

/// Accepts connections until `shutdown` flips, then lets in-flight requests finish for the
/// grace period and cuts what is left.
pub async fn accept_loop(
    listener: Listener,
    gateway: Arc<Gateway>,
    protocols: Arc<Protocols>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Listener {
        socket,
        transport,
        role,
    } = listener;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = socket.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    // The handshake runs in the connection's own task: a slow or hostile client
                    // never holds up the next accept.
                    connections.spawn(connection(
                        stream,
                        addr,
                        transport.clone(),
                        role.clone(),
                        Arc::clone(&gateway),
                        Arc::clone(&protocols),
                        shutdown.clone(),
                    ));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(socket);
    let grace = gateway.timeouts.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connection(s) still busy after {grace:?}: closing them",
            connections.len()
        );
        connections.shutdown().await;
    }
}

/// One accepted socket: the TLS handshake if the listener has TLS, then HTTP.
async fn connection(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    transport: Transport,
    role: Role,
    gateway: Arc<Gateway>,
    protocols: Arc<Protocols>,
    mut shutdown: watch::Receiver<bool>,
) {
    match transport {
        Transport::Plain => {
            let peer = Peer {
                addr,
                scheme: "http",
            };
            let builder = Arc::clone(&protocols.auto);
            let activity = Activity::new(false);
            serve_connection(stream, peer, role, gateway, builder, activity, shutdown).await;
        }
        Transport::Tls(acceptor) => {
            let limit = gateway.timeouts.tls_handshake;
            let handshake = tokio::select! {
                done = tls::handshake(&acceptor, stream, limit) => done,
                // Stopping: a connection that has sent no request yet is simply dropped.
                _ = shutdown.changed() => return,
            };
            let (stream, alpn) = match handshake {
                Ok(done) => done,
                Err(err) => {
                    // Scanners, clients that distrust the certificate, names we reject: routine
                    // on a public port, so not worth more than a debug line.
                    tracing::debug!(peer = %addr, "{err}");
                    return;
                }
            };
            let peer = Peer {
                addr,
                scheme: "https",
            };
            let builder = Arc::clone(protocols.for_alpn(alpn));
            let activity = Activity::new(alpn == Alpn::H2);
            serve_connection(stream, peer, role, gateway, builder, activity, shutdown).await;
        }
    }
}

/// Serves one connection until the client closes it, its watchdog fires (a request head too
/// slow, or idle too long), or `shutdown` flips (then in-flight requests finish and the
/// connection closes).
pub async fn serve_connection<I>(
    io: I,
    peer: Peer,
    role: Role,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    activity: Arc<Activity>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = gateway.timeouts;
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |req: Request<Incoming>| {
            let busy = activity.begin();
            let handled = match &role {
                Role::Gateway => handler::handle(&gateway, peer, req),
                Role::Redirect(redirect) => Handled::Now(std::future::ready(redirect.answer(&req))),
            };
            async move {
                let response = handled.await;
                // The request counts as in flight until its response body is done.
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, busy)))
            }
        })
    };
    let io = Watched::new(io, Arc::clone(&activity));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    // An idle HTTP/2 client that never acknowledges GOAWAY's ping would keep the connection
    // forever: past this deadline the socket is simply dropped.
    let mut give_up: Option<Instant> = None;
    loop {
        tokio::select! {
            // The connection first: it is what wakes this task on nearly every poll.
            biased;
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(peer = %peer.addr, "connection ended: {err}");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            expired = activity.expired(timeouts.header_read, timeouts.idle), if !draining => {
                match expired {
                    // A slowloris gets no graceful close (there is no request to finish).
                    Expired::HeadTooSlow => {
                        tracing::debug!(peer = %peer.addr, "request head not received within {:?}", timeouts.header_read);
                        return;
                    }
                    Expired::Idle => {
                        draining = true;
                        give_up = Some(Instant::now() + timeouts.idle.min(timeouts.header_read));
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            () = tokio::time::sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                return;
            }
        }
    }
}
