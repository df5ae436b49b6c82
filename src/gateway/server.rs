//! Connections, for every listener alike (gateway plain and TLS, redirect, admin, demo): the
//! accept loop with the connection cap, the TLS handshake (off the accept loop, bounded in
//! time), and serving one connection with the HTTP version it speaks, its deadlines (see
//! `watchdog`) and graceful shutdown. What a listener answers is its [`Role`]; how its
//! connections are accepted and served never depends on it.
//!
//! On TLS connections ALPN decides: `h2` is served as HTTP/2 only and `http/1.1` as HTTP/1.1
//! only, so a client never gets a protocol it did not agree to; without ALPN (and on plain
//! listeners) the first bytes decide, which is how cleartext HTTP/2 with prior knowledge works.
//!
//! The cap (`server.limits.max_connections`) is one semaphore shared by every accept loop: at
//! the cap a loop stops calling `accept`, so new connections wait in the kernel's listen
//! backlog until one closes (as nginx's `worker_connections`). `accept` failing for want of
//! descriptors (`EMFILE`, `ENFILE`) must not spin the loop or flood the log: the loop backs off,
//! and such warnings are logged at most once per [`REPORT_EVERY`], with a count of the others.
//!
//! Stopping never refuses a connection the kernel has accepted: a loop told to stop accepts what
//! is left in its backlog before it closes its socket (a closed socket resets them), and only
//! once every listener is closed are connections told to close, so that a client told to
//! reconnect cannot land in a backlog about to be reset. Each connection then closes as soon as
//! no request is cut short: HTTP/2 with a GOAWAY, HTTP/1 with `Connection: close` on its next
//! answer, or at once when it has been quiet for [`SETTLE`].
//!
//! Every request is answered by the configuration in force when it arrives ([`Instance`]); a
//! connection's own settings (deadlines, HTTP/2 settings) are those in force when it began.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{CONNECTION, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_staticfile::Static;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::Instance;
use super::handler::{self, Handled};
use super::proxy::Peer;
use super::redirect::Redirect;
use super::watchdog::{
    Activity, Deadlines, Expired, H2_PREFACE, StreamExecutor, Tracked, Watched, poll_serving,
};
use super::{admin, demo, metrics};
use crate::config::{Http2Config, Limits, Timeouts};
use crate::tls::{self, Alpn};

/// At most one warning of a kind (accept failing, the cap reached) per this period.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(5);

/// When the gateway stops, an HTTP/1 connection with no request for this long is closed rather
/// than left to answer one more with `Connection: close`: long enough that a client sending
/// request after request is never caught between two, short next to any grace period.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);

/// At most this many connections are taken from a listener's backlog as it closes: a flood
/// arriving as fast as it is accepted must not keep the gateway from stopping.
const BACKLOG_MAX: usize = 4096;

/// The listen backlog of every listener (tokio's own default).
const LISTEN_BACKLOG: u32 = 1024;

/// The first pause after `accept` fails for want of resources; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while `accept` keeps failing.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The HTTP/1.1 + HTTP/2 connection builder every connection is served with.
type ConnBuilder = auto::Builder<StreamExecutor>;

/// The connection builders of every listener, one per way a connection may start.
pub(crate) struct Protocols {
    /// HTTP/1.1 or HTTP/2, told apart by the first bytes.
    pub(crate) auto: Arc<ConnBuilder>,
    http1: Arc<ConnBuilder>,
    http2: Arc<ConnBuilder>,
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

    pub(crate) fn for_alpn(&self, alpn: Alpn) -> &Arc<ConnBuilder> {
        match alpn {
            Alpn::H2 => &self.http2,
            Alpn::Http11 => &self.http1,
            Alpn::None => &self.auto,
        }
    }
}

/// The HTTP/1.1 + HTTP/2 connection builder with the configured timeouts and HTTP/2 settings.
pub(crate) fn connection_builder(
    timeouts: &Timeouts,
    http2: &Http2Config,
    limits: &Limits,
) -> ConnBuilder {
    // HTTP/2 streams run as tasks the watchdog can cancel one by one (`timeouts.send`).
    let mut builder = auto::Builder::new(StreamExecutor);
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
    /// Redirects to HTTPS (health checks excepted), to the hosts of the routes in force.
    Redirect(Arc<ArcSwap<Redirect>>),
    /// The operator's endpoints (see `admin`).
    Admin,
    /// The demo bucket's files (see `demo`).
    Demo(Static),
}

/// One listener: its socket, how connections begin and what they are answered.
pub struct Listener {
    pub socket: TcpListener,
    pub(crate) transport: Transport,
    pub(crate) role: Role,
}

/// How many connections may be open at once over the listeners that share it.
#[derive(Debug)]
pub(crate) struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: AtomicUsize,
    full: LogThrottle,
    failures: LogThrottle,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max: AtomicUsize::new(max),
            full: LogThrottle::new(REPORT_EVERY),
            failures: LogThrottle::new(REPORT_EVERY),
        }
    }

    /// Connections open now (approximate while a lowered cap waits for connections to close).
    pub fn open(&self) -> usize {
        self.max
            .load(Ordering::Acquire)
            .saturating_sub(self.permits.available_permits())
    }

    /// The cap now.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Acquire)
    }

    /// Changes the cap (a configuration reload). A lower cap than the connections open closes
    /// none of them: accepting waits until enough have closed on their own.
    pub(crate) fn resize(&self, max: usize) {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        let old = self.max.swap(max, Ordering::AcqRel);
        if max > old {
            self.permits.add_permits(max - old);
            return;
        }
        let owed = (old - max) - self.permits.forget_permits(old - max);
        if owed == 0 {
            return;
        }
        // Places held by open connections: taken back as they close, ahead of any new one.
        let permits = Arc::clone(&self.permits);
        let owed = u32::try_from(owed).unwrap_or(u32::MAX);
        tokio::spawn(async move {
            if let Ok(taken) = permits.acquire_many_owned(owed).await {
                taken.forget();
            }
        });
    }

    /// Returns once there is room for one more connection, saying so now and then when there
    /// is none. It takes no place: a listener waiting for its next connection must not hold
    /// one that another listener's client could use.
    async fn room(&self) {
        if self.permits.available_permits() > 0 {
            return;
        }
        if let Some(held_back) = self.full.admit(Instant::now()) {
            tracing::warn!(
                "{} connections open (server.limits.max_connections): new connections wait in \
                 the listen backlog until one closes{}",
                self.max(),
                repeats(held_back)
            );
        }
        let _ = self.permits.acquire().await;
    }

    /// A place for one accepted connection, held until it closes. Waits only when another
    /// listener took the last place between [`ConnectionLimit::room`] and `accept`.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => Arc::clone(&self.permits).acquire_owned().await.ok(),
        }
    }

    fn report_accept_failure(&self, err: &io::Error, pause: Duration) {
        if let Some(held_back) = self.failures.admit(Instant::now()) {
            tracing::warn!(
                "cannot accept connections: {err}{}; retrying in {pause:?}{}",
                descriptor_hint(err),
                repeats(held_back)
            );
        }
    }
}

fn repeats(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} more since the last report)")
    }
}

#[cfg(unix)]
fn descriptor_hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            " (out of file descriptors: lower server.limits.max_connections or raise the \
             descriptor limit)"
        }
        _ => "",
    }
}

#[cfg(not(unix))]
fn descriptor_hint(_: &io::Error) -> &'static str {
    ""
}

/// Logs a kind of warning at most once per period, counting the ones held back.
#[derive(Debug)]
struct LogThrottle {
    every: Duration,
    /// When the last line was logged, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(held back since the last line)` when a line may be logged at `now`.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, held_back) = &mut *state;
        if last.is_some_and(|last| now < last + self.every) {
            *held_back += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held_back))
    }
}

/// How long the accept loop pauses after a failed `accept`.
#[derive(Debug)]
struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            next: ACCEPT_BACKOFF_FIRST,
        }
    }
}

impl AcceptBackoff {
    fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (pause * 2).min(ACCEPT_BACKOFF_MAX);
        pause
    }

    fn accepted(&mut self) {
        self.next = ACCEPT_BACKOFF_FIRST;
    }
}

/// An `accept` error that concerns only the connection being accepted (it was reset while in
/// the backlog): the next one may be fine, no reason to pause.
fn concerns_one_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// `max_connections` as it is served. The descriptor limit is raised from its soft to its hard
/// value first (as nginx's `worker_rlimit_nofile`); then, if half of it is less than
/// `configured`, that half is the cap, and one warning says so: each client connection may need
/// an origin connection too, and rules, certificates and logs need descriptors of their own.
pub(crate) fn connection_cap(configured: usize) -> usize {
    let Some(limit) = descriptor_limit() else {
        return configured;
    };
    let half = usize::try_from(limit / 2).unwrap_or(usize::MAX).max(1);
    if half >= configured {
        return configured;
    }
    tracing::warn!(
        "server.limits.max_connections lowered from {configured} to {half}: half the open-file \
         limit ({limit}); raise the hard limit (ulimit -Hn, systemd LimitNOFILE) to serve more"
    );
    half
}

/// The descriptor limit after raising the soft one to the hard one; `None` when unlimited or
/// unknown.
#[cfg(unix)]
fn descriptor_limit() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::debug!(
            "cannot read the descriptor limit: {}",
            io::Error::last_os_error()
        );
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::debug!(
                "descriptor limit raised from {} to {}",
                limit.rlim_cur,
                raised.rlim_cur
            );
            limit = raised;
        } else {
            // Some systems refuse an unlimited hard value as a soft one; the soft one stands.
            tracing::debug!(
                "cannot raise the descriptor limit from {}: {}",
                limit.rlim_cur,
                io::Error::last_os_error()
            );
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn descriptor_limit() -> Option<u64> {
    None
}

/// A listening socket on `addr`, with `SO_REUSEPORT` when `reuse_port` (and the system has it):
/// then another process may listen on the same address at the same time, and the kernel
/// spreads new connections over both, which is how a new corsgate takes over from an old one
/// without a moment when nothing listens.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restart may bind while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    let _ = reuse_port;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How a listener's accept loop learns that the gateway stops.
#[derive(Clone)]
pub(crate) struct Stopping {
    /// Stop accepting: take what waits in the backlog, then close the socket.
    pub accept: watch::Receiver<bool>,
    /// Every listener is closed: connections close as soon as they can without cutting a
    /// request short, and in-flight requests get `timeouts.shutdown_grace`.
    pub close: watch::Receiver<bool>,
}

/// Accepts connections while `limit` has room, until told to stop; then accepts what is left in
/// the backlog, closes the socket, and lets in-flight requests finish for the grace period once
/// told to close. `open` is dropped once the socket is closed.
pub(crate) async fn accept_loop(
    listener: Listener,
    instance: Arc<Instance>,
    limit: Arc<ConnectionLimit>,
    mut stopping: Stopping,
    open: mpsc::Sender<()>,
) {
    let Listener {
        socket,
        transport,
        role,
    } = listener;
    let served = Arc::new(Served {
        transport,
        role,
        instance,
    });
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    let stop = &mut stopping.accept;
    loop {
        while connections.try_join_next().is_some() {}
        if *stop.borrow_and_update() {
            break;
        }
        // At the cap, no `accept`: new connections wait in the kernel's backlog.
        tokio::select! {
            () = limit.room() => {}
            _ = stop.changed() => break,
        }
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = stop.changed() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff.accepted();
                let permit = tokio::select! {
                    permit = limit.admit() => match permit {
                        Some(permit) => Some(permit),
                        None => break,
                    },
                    // Accepted: served past the cap rather than reset.
                    _ = stop.changed() => None,
                };
                // The handshake runs in the connection's own task: a slow or hostile client
                // never holds up the next accept.
                connections.spawn(connection(
                    stream,
                    addr,
                    Arc::clone(&served),
                    stopping.close.clone(),
                    permit,
                ));
            }
            Err(err) if concerns_one_connection(&err) => {
                tracing::debug!("accept: {err}");
            }
            // Out of descriptors and the like: the backlog still holds the connection, and
            // retrying at once would fail again at once.
            Err(err) => {
                let pause = backoff.failed();
                limit.report_accept_failure(&err, pause);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => break,
                }
            }
        }
    }
    for (stream, addr) in accept_backlog(socket) {
        // Past the cap if need be: the alternative is a reset.
        let permit = Arc::clone(&limit.permits).try_acquire_owned().ok();
        connections.spawn(connection(
            stream,
            addr,
            Arc::clone(&served),
            stopping.close.clone(),
            permit,
        ));
    }
    drop(open);
    let _ = stopping.close.wait_for(|close| *close).await;
    // The grace of the configuration in force when the gateway stops.
    let grace = served.instance.gateway().timeouts.shutdown_grace;
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

/// Takes every connection waiting in `socket`'s backlog, then closes the socket.
///
/// A connection the kernel has completed is reset when its listening socket closes, even though
/// its client may already have sent a request: under `SO_REUSEPORT` the kernel spreads new
/// connections over every process's socket, so a process handing over to another must empty its
/// own before closing it. `accept` is called without waiting (tokio's readiness could still be
/// stale), until the backlog is empty.
fn accept_backlog(socket: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut accepted = Vec::new();
    let socket = match socket.into_std() {
        Ok(socket) => socket,
        Err(err) => {
            tracing::debug!("cannot take the listen backlog: {err}");
            return accepted;
        }
    };
    // `into_std` leaves the socket non-blocking, but say so rather than rely on it.
    if let Err(err) = socket.set_nonblocking(true) {
        tracing::debug!("cannot take the listen backlog: {err}");
        return accepted;
    }
    while accepted.len() < BACKLOG_MAX {
        match socket.accept() {
            Ok((stream, addr)) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(stream) => accepted.push((stream, addr)),
                    Err(err) => {
                        tracing::debug!(peer = %addr, "cannot serve a backlog connection: {err}")
                    }
                }
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if concerns_one_connection(&err) => {}
            Err(err) => {
                tracing::warn!("cannot take the rest of the listen backlog: {err}");
                break;
            }
        }
    }
    accepted
}

/// What every connection of one listener shares.
struct Served {
    transport: Transport,
    role: Role,
    instance: Arc<Instance>,
}

/// One accepted socket: the TLS handshake if the listener has TLS, then HTTP.
async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    served: Arc<Served>,
    close: watch::Receiver<bool>,
    // Holds the connection's place under the cap until it closes (none for the backlog taken
    // at the cap while stopping).
    _permit: Option<OwnedSemaphorePermit>,
) {
    let _counted =
        crate::metrics::connection_opened(metrics::listener(&served.role, &served.transport));
    let _ = stream.set_nodelay(true);
    // Settings of the configuration in force when the connection began, for all its life
    // (only these: a long-lived connection must not keep a replaced configuration's routes and
    // origin connections alive).
    let (timeouts, protocols) = {
        let gateway = served.instance.current();
        (gateway.timeouts, Arc::clone(&gateway.protocols))
    };
    let role = served.role.clone();
    let instance = Arc::clone(&served.instance);
    match &served.transport {
        Transport::Plain => {
            let began = Instant::now();
            let Some(protocol) = sniff(&stream, timeouts.header_read, close.clone()).await else {
                return;
            };
            let activity = Activity::new(protocol == Alpn::H2);
            activity.waited_for_first_bytes(began.elapsed());
            let peer = Peer {
                addr,
                scheme: "http",
            };
            let conn = Conn {
                peer,
                role,
                instance,
                timeouts,
                builder: Arc::clone(protocols.for_alpn(protocol)),
                activity,
            };
            serve_connection(stream, conn, close).await;
        }
        // Boxed: an idle plain connection's task is then sized for plain serving, not for the
        // larger TLS stream it will never hold (the task lives as long as the connection).
        Transport::Tls(acceptor) => {
            Box::pin(async move {
                // Not cut short when the gateway stops: the client may have sent its request
                // already, and the handshake has its own deadline.
                let limit = timeouts.tls_handshake;
                let (stream, alpn) = match tls::handshake(acceptor, stream, limit).await {
                    Ok(done) => done,
                    Err(err) => {
                        // Scanners, clients that distrust the certificate, names we reject:
                        // routine on a public port, so not worth more than a debug line.
                        tracing::debug!(peer = %addr, "{err}");
                        return;
                    }
                };
                let peer = Peer {
                    addr,
                    scheme: "https",
                };
                let conn = Conn {
                    peer,
                    role,
                    instance,
                    timeouts,
                    builder: Arc::clone(protocols.for_alpn(alpn)),
                    activity: Activity::new(alpn == Alpn::H2),
                };
                serve_connection(stream, conn, close).await;
            })
            .await;
        }
    }
}

/// A plain connection's protocol, told by its first bytes, looked at without reading them, as
/// ALPN tells a TLS one's: HTTP/2 when they are the whole preface, HTTP/1 when they cannot begin
/// it, unknown when they are only part of it. hyper's single-protocol connection then reads the
/// socket from its first byte; the auto builder would read those bytes into a buffer of its own
/// and replay them, after which hyper's read buffer grows past its first size and stays so for
/// as long as the connection is idle. `None`: nothing came within `header_read` (the watchdog
/// would have closed it then too), the client left, or the gateway is stopping and it had sent
/// nothing.
async fn sniff(
    stream: &TcpStream,
    header_read: Duration,
    mut close: watch::Receiver<bool>,
) -> Option<Alpn> {
    let mut first = [0u8; H2_PREFACE.len()];
    let waited = tokio::select! {
        biased;
        peeked = tokio::time::timeout(header_read, stream.peek(&mut first)) => Some(peeked),
        _ = close.wait_for(|close| *close) => None,
    };
    // Stopping: a client that has sent something is still answered (with `Connection: close`);
    // one that has sent nothing is let go, as an idle connection is.
    let peeked = match waited {
        Some(peeked) => peeked,
        None => tokio::time::timeout(Duration::ZERO, stream.peek(&mut first)).await,
    };
    let seen = match peeked {
        Ok(Ok(n)) if n > 0 => &first[..n],
        _ => return None,
    };
    Some(if seen == H2_PREFACE {
        Alpn::H2
    } else if H2_PREFACE.starts_with(seen) {
        Alpn::None
    } else {
        Alpn::Http11
    })
}

pin_project_lite::pin_project! {
    /// A request's answer as hyper awaits it: given at once (no state machine to build and
    /// move for a preflight), or once the origin or a handler has answered.
    #[project = ReplyProj]
    enum Reply<L> {
        Now { #[pin] ready: Ready<Response<Tracked>> },
        Later { #[pin] later: L },
    }
}

impl<L: Future<Output = Response<Tracked>>> Future for Reply<L> {
    type Output = Result<Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ReplyProj::Now { ready } => ready.poll(cx).map(Ok),
            ReplyProj::Later { later } => later.poll(cx).map(Ok),
        }
    }
}

/// hyper closes an HTTP/1 connection once an answer saying so is sent: every answer after the
/// gateway started stopping says so.
fn close_if_stopping(response: &mut Response<Tracked>, http1: bool, closing: &AtomicBool) {
    if http1 && closing.load(Ordering::Relaxed) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// One connection, as it is served.
pub struct Conn {
    pub peer: Peer,
    pub(crate) role: Role,
    /// Read for every request: the configuration in force then answers it.
    pub(crate) instance: Arc<Instance>,
    /// The connection's deadlines, from the configuration in force when it began.
    pub timeouts: Timeouts,
    pub builder: Arc<ConnBuilder>,
    pub(crate) activity: Arc<Activity>,
}

/// Serves one connection until the client closes it, its watchdog fires (a request head too
/// slow, a socket that takes nothing, idle or stalled too long), or `close` flips: then an
/// HTTP/2 connection gets a GOAWAY, an HTTP/1 one answers its next request with
/// `Connection: close` (or is closed once settled with none), and in-flight requests finish.
pub async fn serve_connection<I>(io: I, conn: Conn, mut close: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        peer,
        role,
        instance,
        timeouts,
        builder,
        activity,
    } = conn;
    let deadlines = Deadlines::from(&timeouts);
    // Set by this task when `close` flips, read by every answer after.
    let closing = Arc::new(AtomicBool::new(false));
    let service = {
        let activity = Arc::clone(&activity);
        let closing = Arc::clone(&closing);
        service_fn(move |req: Request<Incoming>| {
            // The request counts as in flight until its response body is done.
            let busy = activity.begin();
            let http1 = req.version() <= Version::HTTP_11;
            let handled = match &role {
                Role::Gateway => handler::handle(&instance.current(), peer, req),
                Role::Redirect(redirect) => {
                    Handled::Now(std::future::ready(redirect.load().answer(&req)))
                }
                Role::Admin => Handled::Later(Box::pin(admin::respond(
                    Arc::clone(&instance),
                    req,
                    peer.addr,
                ))),
                Role::Demo(files) => Handled::Later(Box::pin(demo::respond(files.clone(), req))),
            };
            match handled {
                Handled::Now(now) => {
                    let mut response = now.into_inner().map(|body| Tracked::whole(body, busy));
                    close_if_stopping(&mut response, http1, &closing);
                    Reply::Now {
                        ready: std::future::ready(response),
                    }
                }
                Handled::Later(later) => {
                    let closing = Arc::clone(&closing);
                    Reply::Later {
                        later: async move {
                            let response = {
                                let _waiting = busy.waiting();
                                later.await
                            };
                            let mut response = response.map(|body| Tracked::streamed(body, busy));
                            close_if_stopping(&mut response, http1, &closing);
                            response
                        },
                    }
                }
            }
        })
    };
    let io = Watched::new(io, Arc::clone(&activity));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining = false;
    // A client that never closes after GOAWAY (or whose streams never finish) would keep the
    // connection forever: past this deadline the socket is simply dropped.
    let mut give_up: Option<Instant> = None;
    loop {
        let closing_now = closing.load(Ordering::Relaxed);
        tokio::select! {
            // The connection first: it is what wakes this task on nearly every poll.
            biased;
            // Only HTTP/2 hands streams over; an HTTP/1 connection is polled as it is.
            result = std::future::poll_fn(|cx| if activity.is_http2() {
                poll_serving(conn.as_mut(), cx)
            } else {
                conn.as_mut().poll(cx)
            }) => {
                if let Err(err) = result {
                    tracing::debug!(peer = %peer.addr, "connection ended: {err}");
                }
                return;
            }
            _ = close.wait_for(|close| *close), if !closing_now => {
                closing.store(true, Ordering::Relaxed);
            }
            () = activity.settled(SETTLE), if closing_now && !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            expired = activity.expired(deadlines, draining) => {
                match expired {
                    // A slowloris gets no graceful close (there is no request to finish), nor
                    // does a client that takes nothing of what is sent.
                    Expired::HeadTooSlow => {
                        tracing::debug!(peer = %peer.addr, "request not received within {:?}", timeouts.header_read);
                        return;
                    }
                    Expired::SendStalled => {
                        tracing::debug!(peer = %peer.addr, "client read nothing for {:?}", timeouts.send);
                        return;
                    }
                    Expired::Idle | Expired::Stalled => {
                        if expired == Expired::Stalled {
                            tracing::debug!(peer = %peer.addr, "no request moved for {:?}", timeouts.idle);
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn warnings_of_a_kind_are_logged_at_most_once_per_period_with_a_count() {
        let throttle = LogThrottle::new(REPORT_EVERY);
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        // A failing accept loop retries every second at most: a few per period.
        let mut logged = Vec::new();
        for i in 1..=20u32 {
            let now = start + Duration::from_millis(250) * i;
            if let Some(held_back) = throttle.admit(now) {
                logged.push((now - start, held_back));
            }
        }
        assert_eq!(
            logged,
            vec![(REPORT_EVERY, 19)],
            "one line per period, counting the others"
        );
    }

    #[test]
    fn accept_backs_off_from_fifty_milliseconds_to_a_second_and_starts_over_after_an_accept() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<u128> = (0..7).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1000, 1000]);
        backoff.accepted();
        assert_eq!(backoff.failed(), ACCEPT_BACKOFF_FIRST);
    }

    #[test]
    fn a_connection_reset_in_the_backlog_is_no_reason_to_pause() {
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
        ] {
            assert!(concerns_one_connection(&io::Error::from(kind)));
        }
        #[cfg(unix)]
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(!concerns_one_connection(&io::Error::from_raw_os_error(
                errno
            )));
        }
    }

    #[tokio::test]
    async fn a_lowered_cap_waits_for_open_connections_to_close_and_a_raised_one_admits_at_once() {
        let limit = Arc::new(ConnectionLimit::new(3));
        let open: Vec<_> = [limit.admit().await, limit.admit().await]
            .into_iter()
            .map(|p| p.expect("room"))
            .collect();
        limit.resize(1);
        assert_eq!(limit.max(), 1);
        let waiting = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.admit().await }
        });
        tokio::task::yield_now().await;
        let mut open = open.into_iter();
        drop(open.next());
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "admitted with the lowered cap reached"
        );
        drop(open.next());
        let admitted = waiting.await.expect("admission task");
        assert!(admitted.is_some(), "admitted below the cap");
        assert_eq!(limit.open(), 1);
        std::mem::forget(admitted);

        limit.resize(4);
        for _ in 0..3 {
            let permit = tokio::time::timeout(Duration::from_secs(5), limit.admit()).await;
            std::mem::forget(permit.expect("admitted at once").expect("room"));
        }
        assert_eq!(limit.open(), 4);
    }

    #[tokio::test]
    async fn the_listen_backlog_is_taken_before_the_socket_closes() {
        let socket = bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).expect("bind");
        let addr = socket.local_addr().expect("bound address");
        // Completed by the kernel, never accepted by the loop.
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let accepted = accept_backlog(socket);
        assert_eq!(accepted.len(), clients.len());
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the socket is closed once its backlog is taken"
        );
    }

    #[test]
    fn two_sockets_share_an_address_with_reuse_port_and_not_without() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _entered = runtime.enter();
        let first = bind(SocketAddr::from(([127, 0, 0, 1], 0)), true).expect("bind");
        let addr = first.local_addr().expect("bound address");
        assert!(bind(addr, true).is_ok(), "a second process could take over");
        assert!(bind(addr, false).is_err(), "only where both ask for it");
    }

    #[tokio::test]
    async fn the_cap_counts_open_connections_and_waits_at_the_top() {
        let limit = Arc::new(ConnectionLimit::new(2));
        let first = limit.admit().await.expect("room");
        let _second = limit.admit().await.expect("room");
        assert_eq!(limit.open(), 2);
        let waiting = tokio::spawn({
            let limit = Arc::clone(&limit);
            async move { limit.admit().await.is_some() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "admitted past the cap");
        drop(first);
        assert!(
            waiting.await.expect("admission task"),
            "admitted once one closed"
        );
    }
}
