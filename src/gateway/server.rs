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

use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_staticfile::Static;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::Gateway;
use super::handler::{self, Handled};
use super::proxy::Peer;
use super::redirect::Redirect;
use super::watchdog::{Activity, Deadlines, Expired, StreamExecutor, Tracked, Watched};
use super::{admin, demo, metrics};
use crate::config::{Http2Config, Limits, Timeouts};
use crate::tls::{self, Alpn};

/// At most one warning of a kind (accept failing, the cap reached) per this period.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);

/// The first pause after `accept` fails for want of resources; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while `accept` keeps failing.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The HTTP/1.1 + HTTP/2 connection builder every connection is served with.
type ConnBuilder = auto::Builder<StreamExecutor>;

/// The connection builders of every listener, one per way a connection may start.
pub struct Protocols {
    /// HTTP/1.1 or HTTP/2, told apart by the first bytes.
    auto: Arc<ConnBuilder>,
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

    fn for_alpn(&self, alpn: Alpn) -> &Arc<ConnBuilder> {
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
    /// Redirects to HTTPS (health checks excepted).
    Redirect(Arc<Redirect>),
    /// The operator's endpoints (see `admin`).
    Admin,
    /// The demo bucket's files (see `demo`).
    Demo(Static),
}

/// One listener: its socket, how connections begin and what they are answered.
pub struct Listener {
    pub socket: TcpListener,
    pub transport: Transport,
    pub role: Role,
}

/// How many connections may be open at once over the listeners that share it.
#[derive(Debug)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
    full: LogThrottle,
    failures: LogThrottle,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            full: LogThrottle::new(REPORT_EVERY),
            failures: LogThrottle::new(REPORT_EVERY),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
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
                self.max,
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
pub fn connection_cap(configured: usize) -> usize {
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

/// Accepts connections while `limit` has room, until `shutdown` flips; then lets in-flight
/// requests finish for the grace period and cuts what is left.
pub async fn accept_loop(
    listener: Listener,
    gateway: Arc<Gateway>,
    protocols: Arc<Protocols>,
    limit: Arc<ConnectionLimit>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Listener {
        socket,
        transport,
        role,
    } = listener;
    let grace = gateway.timeouts.shutdown_grace;
    let served = Arc::new(Served {
        transport,
        role,
        gateway,
        protocols,
    });
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    loop {
        while connections.try_join_next().is_some() {}
        // At the cap, no `accept`: new connections wait in the kernel's backlog.
        tokio::select! {
            () = limit.room() => {}
            _ = shutdown.changed() => break,
        }
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, addr)) => {
                backoff.accepted();
                let permit = tokio::select! {
                    permit = limit.admit() => match permit {
                        Some(permit) => permit,
                        None => break,
                    },
                    _ = shutdown.changed() => break,
                };
                let _ = stream.set_nodelay(true);
                // The handshake runs in the connection's own task: a slow or hostile client
                // never holds up the next accept.
                connections.spawn(connection(
                    stream,
                    addr,
                    Arc::clone(&served),
                    shutdown.clone(),
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
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
    drop(socket);
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

/// What every connection of one listener shares.
struct Served {
    transport: Transport,
    role: Role,
    gateway: Arc<Gateway>,
    protocols: Arc<Protocols>,
}

/// One accepted socket: the TLS handshake if the listener has TLS, then HTTP.
async fn connection(
    stream: TcpStream,
    addr: std::net::SocketAddr,
    served: Arc<Served>,
    mut shutdown: watch::Receiver<bool>,
    // Holds the connection's place under the cap until it closes.
    _permit: OwnedSemaphorePermit,
) {
    let _counted =
        crate::metrics::connection_opened(metrics::listener(&served.role, &served.transport));
    let gateway = Arc::clone(&served.gateway);
    let role = served.role.clone();
    match &served.transport {
        Transport::Plain => {
            let peer = Peer {
                addr,
                scheme: "http",
            };
            let builder = Arc::clone(&served.protocols.auto);
            let activity = Activity::new(false);
            serve_connection(stream, peer, role, gateway, builder, activity, shutdown).await;
        }
        Transport::Tls(acceptor) => {
            let limit = gateway.timeouts.tls_handshake;
            let handshake = tokio::select! {
                done = tls::handshake(acceptor, stream, limit) => done,
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
            let builder = Arc::clone(served.protocols.for_alpn(alpn));
            let activity = Activity::new(alpn == Alpn::H2);
            serve_connection(stream, peer, role, gateway, builder, activity, shutdown).await;
        }
    }
}

/// Serves one connection until the client closes it, its watchdog fires (a request head too
/// slow, a socket that takes nothing, idle or stalled too long), or `shutdown` flips (then
/// in-flight requests finish and the connection closes).
pub async fn serve_connection<I>(
    io: I,
    peer: Peer,
    role: Role,
    gateway: Arc<Gateway>,
    builder: Arc<ConnBuilder>,
    activity: Arc<Activity>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = gateway.timeouts;
    let deadlines = Deadlines::from(&timeouts);
    let service = {
        let activity = Arc::clone(&activity);
        let stopping = shutdown.clone();
        service_fn(move |req: Request<Incoming>| {
            let busy = activity.begin();
            let handled = match &role {
                Role::Gateway => handler::handle(&gateway, peer, req),
                Role::Redirect(redirect) => Handled::Now(std::future::ready(redirect.answer(&req))),
                Role::Admin => {
                    let stopping = *stopping.borrow();
                    Handled::Later(Box::pin(admin::respond(
                        Arc::clone(&gateway),
                        req,
                        stopping,
                        peer.addr,
                    )))
                }
                Role::Demo(files) => Handled::Later(Box::pin(demo::respond(files.clone(), req))),
            };
            async move {
                // The request counts as in flight until its response body is done.
                let response = match handled {
                    Handled::Now(now) => now.await.map(|body| Tracked::whole(body, busy)),
                    Handled::Later(later) => {
                        let response = {
                            let _waiting = busy.waiting();
                            later.await
                        };
                        response.map(|body| Tracked::streamed(body, busy))
                    }
                };
                Ok::<_, Infallible>(response)
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
