//! A route's connections to its origin: how many may be open at once, and, for a plain-HTTP
//! origin, the ones kept for reuse between requests.
//!
//! **The cap** ([`OriginSlots`], `limits.origin_connections`): every connection to the route's
//! origin, busy or idle, plain or TLS, from whichever client connection, holds a [`Slot`] until
//! it closes. Without it one HTTP/2 client with a few hundred stalled uploads makes as many
//! origin connections (an HTTP/1.1 origin needs one per request in flight). A request that finds
//! no idle connection and no free slot waits up to `timeouts.connect` for either, then is
//! refused ([`NoFreeConnection`], answered `503 SlowDown`). Plain origins take slots in
//! [`OriginPool`]; HTTPS ones through [`SlotConnector`], the TCP connector under hyper-util's
//! client. Either way the slot lives in the connection's [`OriginIo`], which also cuts a
//! connection whose origin stops reading what is written to it.
//!
//! **The plain-HTTP pool**: hyper-util's pooled client finds a connection by hashing the
//! origin's scheme and authority, races a checkout against a new connect, and hands the
//! connection back through a future once the response is done: a sizeable part of a proxied
//! small GET (see `benches/load/README.md`, "Numbers behind the code"). A route forwards to one
//! origin, so its pool needs no key: a stack of idle HTTP/1.1 connections behind a mutex, most
//! recently used on top. A request without a body (GET, HEAD: nearly all of them) is sent by
//! corsgate's own client ([`wire`]), in the request's own task; one with a body goes through a
//! hyper connection, which streams uploads. Both kinds share the stack and the cap. HTTPS
//! origins (TLS, and HTTP/2 where the origin's ALPN offers it) stay on hyper-util's client.
//!
//! - Idle connections are reused before a new one is made, and a request waiting for a slot
//!   takes an idle connection returned in the meantime (of its kind; with every slot taken, an
//!   idle connection of the other kind is closed to free one).
//! - A connection goes back to the pool when its response body has been read to the end (the
//!   [`Lease`] a hyper body carries; a [`WireBody`] returns its own); a body dropped half-way
//!   closes its connection, which may still be carrying the rest of it. So does an answer that
//!   leaves doubt about where the next one starts (see [`wire`]).
//! - A request that a reused connection refused before sending anything (the origin closed it
//!   while it was idle) is sent again, on another connection: nothing of it reached the origin.
//!   So is a request without a body whose method may be repeated (RFC 9110 §9.2.2) when the
//!   reused connection ends before any byte of an answer.
//! - Idle connections are dropped once older than the idle timeout, when the pool is next used;
//!   those the origin closed, as soon as their task ends (hyper's) or when next looked at (a
//!   non-blocking read, corsgate's own). At most [`MAX_IDLE`] are kept.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::body::{Silence, Upload};
use crate::config::Timeouts;

mod framing;
mod wire;

pub(crate) use wire::{WireBody, WireError};

#[cfg(test)]
pub(crate) use wire::render_head;

use wire::{Connection as WireConnection, Liveness};

/// Idle connections kept per route; past it, the oldest is closed.
pub(crate) const MAX_IDLE: usize = 1024;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("cannot connect: {0}")]
    Connect(#[source] io::Error),
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error(transparent)]
    Busy(#[from] NoFreeConnection),
    #[error("{0}")]
    Http(#[source] hyper::Error),
    #[error("{0}")]
    Wire(#[source] WireError),
}

/// Every connection the cap allows stayed busy for as long as a request may wait.
#[derive(Debug, thiserror::Error)]
#[error(
    "all {limit} connections to the origin (limits.origin_connections) stayed busy for {waited:?}"
)]
pub struct NoFreeConnection {
    pub limit: usize,
    pub waited: Duration,
}

/// The cap on connections to one route's origin, shared by every client connection.
#[derive(Clone, Debug)]
pub struct OriginSlots {
    free: Arc<Semaphore>,
    limit: usize,
    /// How long a request waits for a slot (`timeouts.connect`).
    wait: Duration,
}

/// One open origin connection's place under the cap: freed when dropped, so it is dropped with
/// the connection.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl OriginSlots {
    pub fn new(limit: usize, wait: Duration) -> OriginSlots {
        // Configuration refuses 0; the semaphore refuses more than its maximum.
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        OriginSlots {
            free: Arc::new(Semaphore::new(limit)),
            limit,
            wait,
        }
    }

    /// A free slot, if there is one now.
    pub(crate) fn try_take(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.free).try_acquire_owned().ok()?;
        Some(Slot { _permit: permit })
    }

    /// A slot, waiting up to `timeouts.connect` for one (first come, first served).
    pub async fn take(&self) -> Result<Slot, NoFreeConnection> {
        if let Some(slot) = self.try_take() {
            return Ok(slot);
        }
        tokio::time::timeout(self.wait, self.next_free())
            .await
            .map_err(|_| self.refusal())
    }

    /// The next slot freed. The semaphore is never closed, so this only ever waits.
    async fn next_free(&self) -> Slot {
        match Arc::clone(&self.free).acquire_owned().await {
            Ok(permit) => Slot { _permit: permit },
            Err(_) => std::future::pending().await,
        }
    }

    /// Every slot is taken: requests may be waiting for one.
    fn exhausted(&self) -> bool {
        self.free.available_permits() == 0
    }

    fn refusal(&self) -> NoFreeConnection {
        NoFreeConnection {
            limit: self.limit,
            waited: self.wait,
        }
    }
}

/// A response body from a plain-HTTP origin's connection, or an HTTPS origin's: read by hyper
/// (uploads, HTTPS) or by corsgate's own client ([`wire`], requests without a body).
#[derive(Debug)]
pub enum OriginBody {
    Hyper(Incoming),
    Wire(WireBody),
}

impl HttpBody for OriginBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            OriginBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into))),
            OriginBody::Wire(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OriginBody::Hyper(body) => body.is_end_stream(),
            OriginBody::Wire(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            OriginBody::Hyper(body) => body.size_hint(),
            OriginBody::Wire(body) => body.size_hint(),
        }
    }
}

/// The idle connections to one origin, and how to make new ones.
#[derive(Debug)]
pub struct OriginPool {
    /// Host (IPv6 without brackets) and port to connect to.
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// `timeouts.origin_response`, for [`OriginIo`].
    write_stall: Duration,
    slots: OriginSlots,
    /// Oldest first; both kinds of connection in one stack, so that the oldest idle one is
    /// the one closed, whichever kind it is.
    idle: Mutex<Vec<Idle>>,
    /// Signalled when a connection goes back to the pool while every slot is taken: a request
    /// waiting for a slot takes it instead.
    returned: Notify,
}

#[derive(Debug)]
struct Idle {
    conn: Pooled,
    /// When it goes stale (returned + the idle timeout); `None`: beyond what a clock holds.
    stale_at: Option<Instant>,
}

/// An open connection to the origin, by the client that speaks on it.
#[derive(Debug)]
enum Pooled {
    Hyper(SendRequest<Upload>),
    /// Boxed: it moves from the stack to the request and on into the body, and back.
    Wire(Box<WireConnection>),
}

impl Pooled {
    fn is_wire(&self) -> bool {
        matches!(self, Pooled::Wire(_))
    }
}

impl OriginPool {
    pub fn new(host: &str, port: u16, timeouts: &Timeouts, slots: OriginSlots) -> OriginPool {
        // An IPv6 literal comes bracketed in a URL; the resolver wants it bare.
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        OriginPool {
            host: host.to_string(),
            port,
            connect_timeout: timeouts.connect,
            idle_timeout: timeouts.idle,
            write_stall: timeouts.origin_response,
            slots,
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
        }
    }

    /// Whether a request goes through corsgate's own client ([`OriginPool::send_bodyless`]): its
    /// body is at its end and its fields announce none.
    pub fn is_bodyless(parts: &http::request::Parts, body: &Upload) -> bool {
        body.is_end_stream() && wire::is_bodyless(&parts.headers)
    }

    /// Sends a request without a body (see [`OriginPool::is_bodyless`]; its URI in origin
    /// form) through corsgate's own client and returns the response head; the body streams on
    /// and returns the connection itself. `more_fields` writes header lines of its own after the
    /// request's fields (`name: value CRLF` each). Fails with [`WireError::HeadTimeout`] once
    /// `deadline` passes before a complete response head.
    pub async fn send_bodyless(
        self: &Arc<Self>,
        mut parts: http::request::Parts,
        more_fields: impl Fn(&mut Vec<u8>),
        deadline: tokio::time::Instant,
    ) -> Result<Response<WireBody>, PoolError> {
        // One wait for a slot per request, however many retries it takes.
        let mut give_up = None;
        // The head as first rendered, handed back by a connection that failed to send it.
        let mut rendered = None;
        loop {
            let (mut conn, reused) = match self.checkout(true) {
                Some(Pooled::Wire(conn)) => (conn, true),
                // The slow path (connecting, waiting for a slot) is boxed so that its state is
                // not part of every request's future; it has a timer of its own.
                _ => {
                    let connection = self.connection(&mut give_up, true);
                    match Box::pin(tokio::time::timeout_at(deadline, connection)).await {
                        Err(_) => {
                            return Err(PoolError::Wire(WireError::HeadTimeout(self.write_stall)));
                        }
                        Ok(Err(err)) => return Err(err),
                        Ok(Ok((Pooled::Wire(conn), reused))) => (conn, reused),
                        Ok(Ok((Pooled::Hyper(_), _))) => {
                            unreachable!("connection(wire) makes wire connections")
                        }
                    }
                }
            };
            match rendered.take() {
                Some(head) => conn.resume(head),
                None => {
                    conn.render(&parts, &more_fields);
                    // Rendered, the request's fields are done with: their map takes the
                    // response's, its allocation reused.
                    parts.headers.clear();
                }
            }
            let exchange = conn.exchange(&parts.method, &mut parts.headers, deadline, self);
            match exchange.await {
                Ok(response) => return Ok(response),
                // Each retry uses up an idle connection, and a new one is not retried, so this
                // ends.
                Err(failed) if reused && failed.may_retry(&parts.method) => {
                    rendered = Some(failed.rendered);
                }
                Err(failed) => return Err(PoolError::Wire(failed.error)),
            }
        }
    }

    /// Sends `req` (its URI in origin form) through a hyper connection and returns the response
    /// head, with the lease of the connection its body arrives on.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<Upload>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        // Rare next to GETs: boxed, so that hyper's state is not part of every request's future.
        Box::pin(self.send_hyper(req)).await
    }

    async fn send_hyper(
        self: &Arc<Self>,
        mut req: Request<Upload>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        let mut give_up = None;
        loop {
            let (mut sender, reused) = match self.checkout(false) {
                Some(Pooled::Hyper(sender)) => (sender, true),
                _ => match self.connection(&mut give_up, false).await? {
                    (Pooled::Hyper(sender), reused) => (sender, reused),
                    (Pooled::Wire(_), _) => unreachable!("connection(hyper) makes hyper ones"),
                },
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let lease = Lease {
                        sender: Some(sender),
                        pool: Arc::clone(self),
                    };
                    return Ok((response, lease));
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: safe to send again whatever the method. Each retry uses up
                    // an idle connection, and a new one is not retried, so this ends.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(PoolError::Http(failed.into_error())),
                },
            }
        }
    }

    /// With no idle connection of the kind (`wire`: corsgate's own, else hyper's): a new one
    /// under the cap (`false`). With every slot taken, waits until `give_up` for a slot or a
    /// returned connection of the kind (`true`), whichever comes first, closing the idle ones
    /// of the other kind meanwhile to free their slots.
    async fn connection(
        &self,
        give_up: &mut Option<tokio::time::Instant>,
        wire: bool,
    ) -> Result<(Pooled, bool), PoolError> {
        if let Some(slot) = self.slots.try_take() {
            return Ok((self.connect(slot, wire).await?, false));
        }
        let give_up = *give_up.get_or_insert_with(|| tokio::time::Instant::now() + self.slots.wait);
        loop {
            // Listening before looking: a connection returned between the look and the wait
            // still wakes this request.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.checkout(wire) {
                return Ok((conn, true));
            }
            // None of this kind is idle: one of the other kind holds a slot for nothing.
            self.close_idle_other(wire);
            tokio::select! {
                slot = self.slots.next_free() => return Ok((self.connect(slot, wire).await?, false)),
                () = returned => {}
                () = tokio::time::sleep_until(give_up) => {
                    return Err(PoolError::Busy(self.slots.refusal()));
                }
            }
        }
    }

    /// Closes the oldest idle connection of the other kind than `wire`, if any: the slot it
    /// holds is of more use to a request that cannot use it.
    fn close_idle_other(&self, wire: bool) {
        let closed = {
            let mut idle = self.lock();
            let other = idle.iter().position(|c| c.conn.is_wire() != wire);
            other.map(|i| idle.remove(i))
        };
        drop(closed);
    }

    /// The most recently used idle connection of the kind ready for a request, dropping the
    /// closed and the stale on the way.
    fn checkout(&self, wire: bool) -> Option<Pooled> {
        let mut idle = self.lock();
        let now = Instant::now();
        let stale = idle
            .iter()
            .take_while(|c| c.stale_at.is_some_and(|at| now >= at))
            .count();
        if stale > 0 {
            idle.drain(..stale);
        }
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            match &idle[i].conn {
                Pooled::Hyper(sender) if sender.is_closed() => {
                    idle.remove(i);
                }
                // Not ready yet (still finishing an upload the origin answered early): skip it.
                Pooled::Hyper(sender) if !wire && sender.is_ready() => {
                    return Some(idle.remove(i).conn);
                }
                Pooled::Wire(conn) if wire => {
                    let conn_alive = conn.liveness() == Liveness::Alive;
                    let taken = idle.remove(i).conn;
                    if conn_alive {
                        return Some(taken);
                    }
                }
                _ => {}
            }
        }
        None
    }

    fn put(&self, conn: Pooled) {
        if let Pooled::Hyper(sender) = &conn
            && sender.is_closed()
        {
            return;
        }
        {
            let mut idle = self.lock();
            if idle.len() >= MAX_IDLE {
                idle.remove(0);
            }
            idle.push(Idle {
                conn,
                stale_at: Instant::now().checked_add(self.idle_timeout),
            });
        }
        // Requests wait only while every slot is taken; otherwise nobody needs telling.
        if self.slots.exhausted() {
            self.returned.notify_waiters();
        }
    }

    /// A [`WireBody`] read to its end gives its connection back.
    fn put_wire(&self, conn: Box<WireConnection>) {
        self.put(Pooled::Wire(conn));
    }

    /// A new connection, holding `slot` for as long as it is open.
    async fn connect(&self, slot: Slot, wire: bool) -> Result<Pooled, PoolError> {
        let connecting = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => return Err(PoolError::ConnectTimeout(self.connect_timeout)),
            Ok(Err(err)) => return Err(PoolError::Connect(err)),
            Ok(Ok(stream)) => stream,
        };
        // Requests and responses are written whole: no point in Nagle's delay.
        let _ = stream.set_nodelay(true);
        if wire {
            let io = OriginIo::new(stream, slot, self.write_stall);
            return Ok(Pooled::Wire(Box::new(WireConnection::new(io))));
        }
        let io = OriginIo::new(TokioIo::new(stream), slot, self.write_stall);
        let (sender, connection) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(PoolError::Http)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("origin connection ended: {err}");
            }
        });
        Ok(Pooled::Hyper(sender))
    }

    /// A poisoned lock only means a panic elsewhere mid-push or mid-pop: the list is still a
    /// list of connections.
    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The right to a hyper connection while its response body is read: [`Lease::release`] returns
/// it to the pool; dropping it closes the connection.
#[derive(Debug)]
pub struct Lease {
    sender: Option<SendRequest<Upload>>,
    pool: Arc<OriginPool>,
}

impl Lease {
    /// The response is complete: the connection may serve another request.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put(Pooled::Hyper(sender));
        }
    }
}

/// The TCP connector under hyper-util's client (HTTPS origins, TLS on top): a connection is
/// made only once it has a slot, waiting up to `timeouts.connect` for one, and keeps it until
/// it is closed. hyper-util reuses an idle connection before it connects, and hands one
/// returned while a connect waits to the waiting request.
#[derive(Clone, Debug)]
pub struct SlotConnector {
    tcp: HttpConnector,
    slots: OriginSlots,
    /// `timeouts.origin_response`, for [`OriginIo`].
    write_stall: Duration,
}

impl SlotConnector {
    pub fn new(tcp: HttpConnector, slots: OriginSlots, write_stall: Duration) -> SlotConnector {
        SlotConnector {
            tcp,
            slots,
            write_stall,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for SlotConnector {
    type Response = OriginIo<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let slots = self.slots.clone();
        let write_stall = self.write_stall;
        Box::pin(async move {
            let slot = slots.take().await?;
            let io = tcp.call(uri).await?;
            Ok(OriginIo::new(io, slot, write_stall))
        })
    }
}

/// A connection to the origin: holds its slot (freed when it is dropped, after the socket
/// closes), and fails a write the origin has made no room for within `origin_response`, as
/// nginx's `proxy_send_timeout` does. So an origin that stops reading an upload cannot keep the
/// connection, whatever state the request is in (even answered, with the upload still going).
pub struct OriginIo<T> {
    io: T,
    /// The origin's, while a write waits for room.
    silence: Silence,
    _slot: Slot,
}

/// The origin took none of what was written for too long.
#[derive(Debug, thiserror::Error)]
#[error("the origin read nothing for {0:?} while a request was being written to it")]
pub(crate) struct OriginNotReading(pub Duration);

impl<T> OriginIo<T> {
    pub fn new(io: T, slot: Slot, limit: Duration) -> OriginIo<T> {
        OriginIo {
            io,
            silence: Silence::new(limit),
            _slot: slot,
        }
    }

    /// Passes a write's outcome on; while it waits for room, fails it once `limit` has passed.
    fn timed<R>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if write.is_ready() {
            self.silence.progressed();
            return write;
        }
        ready!(self.silence.poll_expired(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            OriginNotReading(self.silence.limit()),
        )))
    }
}

impl<T: Read + Unpin> Read for OriginIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for OriginIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.io).poll_write(cx, buf);
        this.timed(cx, write)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flush = Pin::new(&mut this.io).poll_flush(cx);
        this.timed(cx, flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.timed(cx, write)
    }
}

impl<T: Connection> Connection for OriginIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}
