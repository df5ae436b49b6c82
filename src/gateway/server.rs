//! Connections: the accept loop, and serving one connection (HTTP/1.1 or cleartext HTTP/2, as
//! the client speaks) with its timeouts and graceful shutdown.
//!
//! [`serve_connection`] takes any `AsyncRead + AsyncWrite` stream, so a TLS listener only has
//! to wrap the stream before handing it over.

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
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::proxy::Peer;
use super::{Body, BodyError, Gateway, handler};
use crate::config::Timeouts;

/// The HTTP/1.1 + HTTP/2 connection builder with the configured timeouts.
pub fn connection_builder(timeouts: &Timeouts) -> auto::Builder<TokioExecutor> {
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
        .keep_alive_timeout(timeouts.header_read);
    builder
}

/// Accepts connections until `shutdown` flips, then lets in-flight requests finish for the
/// grace period and cuts what is left.
pub async fn accept_loop(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = Peer { addr, scheme: "http" };
                    connections.spawn(serve_connection(
                        stream,
                        peer,
                        Arc::clone(&gateway),
                        Arc::clone(&builder),
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
    drop(listener);
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

/// Serves one connection until the client closes it, it idles past the idle timeout, or
/// `shutdown` flips (then in-flight requests finish and the connection closes).
pub async fn serve_connection<I>(
    io: I,
    peer: Peer,
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
            let busy = activity.begin();
            async move {
                let response = handler::handle(gateway, peer, req).await;
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
