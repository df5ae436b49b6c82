//! Connections: the accept loop, the TLS handshake (off the accept loop, bounded in time), and
//! serving one connection with the HTTP version it speaks, its timeouts and graceful shutdown.
//!
//! On TLS connections ALPN decides: `h2` is served as HTTP/2 only and `http/1.1` as HTTP/1.1
//! only, so a client never gets a protocol it did not agree to; without ALPN (and on plain
//! listeners) the first bytes decide, which is how cleartext HTTP/2 with prior knowledge works.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::proxy::Peer;
use super::redirect::Redirect;
use super::{Body, BodyError, Gateway, handler};
use crate::config::{Http2Config, Timeouts};
use crate::tls::{self, Alpn};

/// The connection builders of every listener, one per way a connection may start.
pub struct Protocols {
    /// HTTP/1.1 or HTTP/2, told apart by the first bytes.
    auto: Arc<auto::Builder<TokioExecutor>>,
    http1: Arc<auto::Builder<TokioExecutor>>,
    http2: Arc<auto::Builder<TokioExecutor>>,
}

impl Protocols {
    pub fn new(timeouts: &Timeouts, http2: &Http2Config) -> Protocols {
        let builder = connection_builder(timeouts, http2);
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
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slowloris guard; on a kept-alive connection it also bounds the wait for the next
        // request head.
        .header_read_timeout(timeouts.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(timeouts.idle / 2))
        .keep_alive_timeout(timeouts.header_read)
        .max_concurrent_streams(http2.max_concurrent_streams)
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
            serve_connection(stream, peer, role, gateway, builder, shutdown).await;
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
            serve_connection(stream, peer, role, gateway, builder, shutdown).await;
        }
    }
}

/// Serves one connection until the client closes it, it idles past the idle timeout, or
/// `shutdown` flips (then in-flight requests finish and the connection closes).
pub async fn serve_connection<I>(
    io: I,
    peer: Peer,
    role: Role,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let gateway_timeouts = gateway.timeouts;
    let idle = gateway_timeouts.idle;
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |req: Request<Incoming>| {
            let gateway = Arc::clone(&gateway);
            let role = role.clone();
            let busy = activity.begin();
            async move {
                let response = match role {
                    Role::Gateway => handler::handle(gateway, peer, req).await,
                    Role::Redirect(redirect) => redirect.answer(&req),
                };
                // The request counts as in flight until its response body is done.
                Ok::<_, Infallible>(response.map(|body| Tracked {
                    inner: body,
                    _busy: busy,
                }))
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    // An idle HTTP/2 client that never acknowledges GOAWAY's ping would keep the connection
    // forever: past this deadline the socket is simply dropped.
    let mut give_up: Option<Instant> = None;
    loop {
        tokio::select! {
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
            () = activity.idle_for(idle), if !draining => {
                draining = true;
                give_up = Some(Instant::now() + idle.min(gateway_timeouts.header_read));
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(give_up.unwrap_or_else(Instant::now)), if give_up.is_some() => {
                return;
            }
        }
    }
}

/// Requests in flight on one connection, and when the last one finished.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `started` when the connection last became idle.
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let since = Duration::from_millis(self.idle_since.load(Ordering::Acquire));
            let deadline = self.started + since + limit;
            tokio::time::sleep_until(deadline).await;
            let still = Duration::from_millis(self.idle_since.load(Ordering::Acquire)) == since;
            if still && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            if self.in_flight.load(Ordering::Acquire) > 0 {
                // Busy: look again one period later.
                tokio::time::sleep(limit).await;
            }
        }
    }
}

/// Marks one request in flight until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let now = self.0.started.elapsed().as_millis() as u64;
        self.0.idle_since.store(now, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
