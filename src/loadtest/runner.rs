//! Sending the pool at a server: N connections spread over T threads, HTTP/1.1 keep-alive or h2
//! with M concurrent streams per connection, over TCP or TLS.
//!
//! Each thread runs its share of the connections on its own single-threaded runtime: a
//! connection's task never migrates, and threads share nothing per request but the ticket
//! counter, so the cost per request stays flat as threads are added. HTTP/1.1 goes through
//! [`super::wire`], which writes bytes rendered before the run and checks the answer's header
//! lines where they were read; h2 goes through hyper's client.
//!
//! Requests are handed out by a shared ticket counter. Closed loop (the default), a worker takes
//! the next ticket as soon as its previous answer is in. Open loop (`rate`), ticket `i` is due at
//! `start + i / rate`, whatever happened before: when every worker is still busy at that moment,
//! the request waits, and its latency counts from when it was due, not from when it could be sent,
//! so a stalled server cannot hide its stall by slowing the load down (no coordinated omission).
//! With `new_connections`, every request opens its own connection (and TLS handshake), and its
//! latency includes them.
//!
//! Every loop is bounded: no ticket is handed out past the deadline or past `max_requests`, every
//! exchange has a timeout, and reconnecting stops at the deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri, Version, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::check::{Checker, Mismatch};
use super::expect::Answer;
use super::generate::{PooledRequest, describe};
use super::latency::Latencies;
use super::mix::RequestKind;
use super::progress::Progress;
use super::tally::{ErrorKind, Sample, Tally};
use super::target::Target;
use super::wire::{H1, WireError};

/// Latency samples a worker keeps before merging them under the shared lock.
const BATCH: usize = 512;
/// Responses a worker counts before adding them to the live progress counters...
const PROGRESS_BATCH: u64 = 64;
/// ...or after this long, so that a slow open-loop run still shows progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Body bytes kept for checking (S3 error documents are a few hundred bytes); the rest is counted
/// and dropped, so a 1 GiB GET costs no memory.
const BODY_KEPT: usize = 4096;
/// Pause after a failed connect, so that a refusing server is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub connections: usize,
    /// Concurrent streams per h2 connection (ignored for HTTP/1.1).
    pub streams: usize,
    /// h2: prior knowledge over cleartext; over TLS, h2 is offered and ALPN decides.
    pub http2: bool,
    pub duration: Duration,
    /// Requests per second, open loop; `None` for closed loop.
    pub rate: Option<f64>,
    pub max_requests: Option<u64>,
    /// Longest wait for one complete answer, body included.
    pub timeout: Duration,
    pub checker: Checker,
    /// Threads sending load, each with its share of the connections.
    pub threads: usize,
    /// A new connection (and TLS handshake) for every request.
    pub new_connections: bool,
    /// The client configuration for `https://` targets (see [`super::secure::client`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub tally: Tally,
    pub latencies: Latencies,
    /// From the first ticket to the last answer.
    pub elapsed: Duration,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("cannot connect to {addr}: {source}")]
    Tcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr} took longer than the timeout")]
    Timeout { addr: std::net::SocketAddr },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("an https:// target needs a TLS client configuration")]
    NoTlsConfig,
}

/// A pooled request made ready for the wire.
struct Prepared {
    request: PooledRequest,
    /// The whole HTTP/1.1 request, `Host` included.
    wire: Vec<u8>,
    /// The absolute URI h2 sends as `:scheme`, `:authority` and `:path`.
    uri: Uri,
}

struct Shared {
    pool: Vec<Prepared>,
    config: RunConfig,
    target: Target,
    tickets: AtomicU64,
    start: Instant,
    deadline: Instant,
    latencies: Mutex<Latencies>,
    progress: Arc<Progress>,
}

/// A request to send now, and the instant its latency counts from.
struct Ticket {
    index: usize,
    since: Instant,
}

impl Shared {
    /// The next request and when it is due; `None` once the run is over.
    async fn next(&self) -> Option<Ticket> {
        let i = self.tickets.fetch_add(1, Ordering::Relaxed);
        if self.config.max_requests.is_some_and(|max| i >= max) {
            return None;
        }
        let claimed = Instant::now();
        let index = (i % self.pool.len() as u64) as usize;
        let Some(rate) = self.config.rate else {
            return (claimed < self.deadline).then_some(Ticket {
                index,
                since: claimed,
            });
        };
        let due = self.start + Duration::from_secs_f64(i as f64 / rate);
        if due >= self.deadline {
            return None;
        }
        if claimed >= due {
            // Every worker was busy when this request was due: its wait is the server's doing.
            return Some(Ticket { index, since: due });
        }
        // Early: wait for the schedule. The timer wakes up to a millisecond late; that delay is
        // the load generator's, so latency counts from the actual send.
        tokio::time::sleep_until(due.into()).await;
        Some(Ticket {
            index,
            since: Instant::now(),
        })
    }

    fn finished(&self) -> bool {
        Instant::now() >= self.deadline
            || self
                .config
                .max_requests
                .is_some_and(|max| self.tickets.load(Ordering::Relaxed) >= max)
    }
}

/// Runs the load test to its end and gathers what every worker saw.
pub async fn run(
    target: &Target,
    pool: Vec<PooledRequest>,
    config: &RunConfig,
    progress: Arc<Progress>,
) -> Outcome {
    assert!(
        !pool.is_empty(),
        "the generator never returns an empty pool"
    );
    let pool = pool
        .into_iter()
        .map(|request| prepare(request, target))
        .collect();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        pool,
        config: config.clone(),
        target: target.clone(),
        tickets: AtomicU64::new(0),
        start,
        deadline: start + config.duration,
        latencies: Mutex::new(Latencies::default()),
        progress,
    });
    let connections = config.connections.max(1);
    let threads = config.threads.clamp(1, connections);
    let done: Vec<_> = (0..threads)
        .map(|t| {
            // Thread t drives connections t, t + threads, ...
            let share = (connections - t).div_ceil(threads);
            let shared = shared.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            // A thread that cannot start drops `tx`, which the loop below counts.
            let _ = std::thread::Builder::new()
                .name(format!("loadtest-{t}"))
                .spawn(move || {
                    let _ = tx.send(thread_main(shared, share));
                });
            rx
        })
        .collect();
    let mut tally = Tally::default();
    for rx in done {
        match rx.await {
            Ok(t) => tally.merge(t),
            // A thread that could not start, or a worker that panicked: its connections never
            // answered, and the report must not look clean.
            Err(_) => tally.error(ErrorKind::Connect),
        }
    }
    let elapsed = start.elapsed();
    let latencies = std::mem::take(
        &mut *shared
            .latencies
            .lock()
            .expect("the latency lock is never held across a panic"),
    );
    Outcome {
        tally,
        latencies,
        elapsed,
    }
}

/// One load thread: its own runtime, `connections` connection tasks on it.
fn thread_main(shared: Arc<Shared>, connections: usize) -> Tally {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(_) => {
            let mut tally = Tally::default();
            tally.error(ErrorKind::Connect);
            return tally;
        }
    };
    runtime.block_on(async {
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(connection(shared.clone())))
            .collect();
        let mut tally = Tally::default();
        for task in tasks {
            match task.await {
                Ok(t) => tally.merge(t),
                Err(_) => tally.error(ErrorKind::Io),
            }
        }
        tally
    })
}

fn prepare(request: PooledRequest, target: &Target) -> Prepared {
    let mut wire = Vec::with_capacity(256);
    wire.extend_from_slice(request.method.as_str().as_bytes());
    wire.push(b' ');
    wire.extend_from_slice(request.path.as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    wire.extend_from_slice(target.host_header.as_bytes());
    wire.extend_from_slice(b"\r\n");
    for (name, value) in &request.headers {
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = format!("{scheme}://{}{}", target.authority, request.path)
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    Prepared { request, wire, uri }
}

/// A connection to the target, and whether it speaks h2.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens a connection (TCP, then TLS for `https://`); says whether h2 is to be spoken on it: by
/// prior knowledge in cleartext, by ALPN over TLS.
async fn open(target: &Target, config: &RunConfig) -> Result<(Stream, bool), ConnectError> {
    let addr = target.addr;
    let tcp = tokio::time::timeout(config.timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout { addr })?
        .map_err(|source| ConnectError::Tcp { addr, source })?;
    // Requests are small and latency-bound: never wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let Some(name) = &target.tls else {
        return Ok((Stream::Plain(tcp), config.http2));
    };
    let tls = config.tls.clone().ok_or(ConnectError::NoTlsConfig)?;
    let stream = tokio::time::timeout(
        config.timeout,
        TlsConnector::from(tls).connect(name.clone(), tcp),
    )
    .await
    .map_err(|_| ConnectError::Timeout { addr })?
    .map_err(|source| ConnectError::Tls { addr, source })?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok((Stream::Tls(Box::new(stream)), h2))
}

/// Opens one connection as the run would, before any load: an unreachable server or an
/// untrusted certificate is then a usage error, not a run of connect errors. Gives the protocol
/// the run will speak.
pub(crate) async fn probe(
    target: &Target,
    config: &RunConfig,
) -> Result<&'static str, ConnectError> {
    let (_, h2) = open(target, config).await?;
    Ok(if h2 { "h2" } else { "http/1.1" })
}

/// One worker's private counts, pending latency samples and buffers.
struct Worker {
    tally: Tally,
    batch: Vec<(RequestKind, Duration)>,
    body: Vec<u8>,
    mismatches: Vec<Mismatch>,
    unreported: u64,
    unreported_wrong: u64,
    reported_at: Instant,
}

impl Worker {
    fn new() -> Worker {
        Worker {
            tally: Tally::default(),
            batch: Vec::with_capacity(BATCH),
            body: Vec::with_capacity(BODY_KEPT),
            mismatches: Vec::new(),
            unreported: 0,
            unreported_wrong: 0,
            reported_at: Instant::now(),
        }
    }

    fn error(&mut self, shared: &Shared, kind: ErrorKind) {
        self.tally.error(kind);
        shared.progress.error();
    }

    /// Counts a checked answer: `self.mismatches` holds what was wrong with it, and `got`
    /// describes it, called only when a wrong answer is kept as an example.
    fn record(
        &mut self,
        shared: &Shared,
        ticket: &Ticket,
        received: u64,
        got: impl FnOnce(&[u8]) -> String,
    ) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(ticket.since);
        let prepared = &shared.pool[ticket.index];
        let kind = prepared.request.kind;
        self.tally.response(kind, received);
        let wrong = !self.mismatches.is_empty();
        if wrong {
            let body = &self.body;
            self.tally.wrong(kind, &self.mismatches, || Sample {
                request: describe(&prepared.request),
                expected: describe_answer(&prepared.request.answer),
                got: got(body),
                mismatches: self.mismatches.iter().map(ToString::to_string).collect(),
            });
            self.unreported_wrong += 1;
        }
        self.unreported += 1;
        if self.unreported >= PROGRESS_BATCH || now - self.reported_at >= PROGRESS_EVERY {
            self.report(shared, now);
        }
        self.batch.push((kind, latency));
        if self.batch.len() >= BATCH {
            self.flush(shared);
        }
    }

    fn report(&mut self, shared: &Shared, now: Instant) {
        shared.progress.add(self.unreported, self.unreported_wrong);
        self.unreported = 0;
        self.unreported_wrong = 0;
        self.reported_at = now;
    }

    fn flush(&mut self, shared: &Shared) {
        if self.batch.is_empty() {
            return;
        }
        shared
            .latencies
            .lock()
            .expect("the latency lock is never held across a panic")
            .record_batch(&self.batch);
        self.batch.clear();
    }

    fn finish(mut self, shared: &Shared) -> Tally {
        self.flush(shared);
        self.report(shared, Instant::now());
        self.tally
    }

    /// One HTTP/1.1 exchange on `conn`; `Ok(true)` when the connection must be closed after it.
    async fn h1_exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        shared: &Shared,
        conn: &mut H1<S>,
        ticket: &Ticket,
    ) -> Result<bool, WireError> {
        let prepared = &shared.pool[ticket.index];
        self.body.clear();
        let head = match tokio::time::timeout(
            shared.config.timeout,
            conn.exchange(&prepared.wire, &mut self.body, BODY_KEPT),
        )
        .await
        {
            Ok(head) => head?,
            Err(_) => return Err(WireError::TimedOut),
        };
        self.mismatches.clear();
        shared.config.checker.check_lines(
            &prepared.request.answer,
            head.status,
            conn.lines(),
            &self.body,
            &mut self.mismatches,
        );
        self.record(shared, ticket, head.body_len, |body| {
            let mut headers = HeaderMap::new();
            for (n, v) in conn.lines() {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                    headers.append(n, v);
                }
            }
            describe_response(head.status, &headers, body)
        });
        Ok(head.close)
    }

    /// One h2 exchange on `sender`, which has room for a stream.
    async fn h2_exchange(
        &mut self,
        shared: &Shared,
        sender: &mut h2::client::SendRequest<Bytes>,
        ticket: &Ticket,
    ) -> Result<(), ErrorKind> {
        let prepared = &shared.pool[ticket.index];
        let mut req = Request::new(());
        *req.method_mut() = prepared.request.method.clone();
        *req.uri_mut() = prepared.uri.clone();
        *req.headers_mut() = prepared.request.headers.clone();
        *req.version_mut() = Version::HTTP_2;
        self.body.clear();
        let body = &mut self.body;
        let answer = tokio::time::timeout(shared.config.timeout, async {
            let (response, _) = sender.send_request(req, true).map_err(|e| h2_kind(&e))?;
            let (parts, mut incoming) = response.await.map_err(|e| h2_kind(&e))?.into_parts();
            let mut received = 0u64;
            while let Some(data) = incoming.data().await {
                let data = data.map_err(|e| h2_kind(&e))?;
                received += data.len() as u64;
                let room = BODY_KEPT - body.len();
                body.extend_from_slice(&data[..data.len().min(room)]);
                let _ = incoming.flow_control().release_capacity(data.len());
            }
            Ok((parts, received))
        })
        .await;
        let (parts, received) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(kind)) => return Err(kind),
            Err(_) => return Err(ErrorKind::Timeout),
        };
        self.mismatches.clear();
        shared.config.checker.check(
            &prepared.request.answer,
            parts.status,
            &parts.headers,
            &self.body,
            &mut self.mismatches,
        );
        self.record(shared, ticket, received, |body| {
            describe_response(parts.status.as_u16(), &parts.headers, body)
        });
        Ok(())
    }
}

fn h2_kind(e: &h2::Error) -> ErrorKind {
    if e.is_io() {
        ErrorKind::Io
    } else if e.is_go_away() || e.is_reset() || e.is_remote() {
        ErrorKind::Closed
    } else {
        ErrorKind::Protocol
    }
}

fn wire_error_kind(e: &WireError) -> ErrorKind {
    match e {
        WireError::Closed | WireError::ClosedIdle => ErrorKind::Closed,
        WireError::Protocol(_) => ErrorKind::Protocol,
        WireError::TimedOut => ErrorKind::Timeout,
        WireError::Io(_) => ErrorKind::Io,
    }
}

/// One connection slot: a connection, re-opened whenever it ends, until the run is over. With
/// `new_connections`, a fresh connection for every ticket.
async fn connection(shared: Arc<Shared>) -> Tally {
    let mut worker = Worker::new();
    let mut tally = Tally::default();
    // A ticket whose request found its reused connection already closed by the server: it is
    // sent again on the next one, as a browser would.
    let mut carried: Option<Ticket> = None;
    while !shared.finished() || carried.is_some() {
        let ticket = if shared.config.new_connections {
            match carried.take() {
                Some(t) => Some(t),
                None => match shared.next().await {
                    Some(t) => Some(t),
                    None => break,
                },
            }
        } else {
            carried.take()
        };
        let (stream, h2) = match open(&shared.target, &shared.config).await {
            Ok(opened) => opened,
            Err(_) => {
                worker.error(&shared, ErrorKind::Connect);
                if !shared.config.new_connections {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                continue;
            }
        };
        if h2 {
            let (t, more) = match stream {
                Stream::Plain(s) => http2_on(&shared, s, ticket).await,
                Stream::Tls(s) => http2_on(&shared, *s, ticket).await,
            };
            tally.merge(t);
            if !more {
                break;
            }
        } else {
            let (more, retry) = match stream {
                Stream::Plain(s) => http1_on(&shared, &mut worker, s, ticket).await,
                Stream::Tls(s) => http1_on(&shared, &mut worker, *s, ticket).await,
            };
            carried = retry;
            if !more {
                break;
            }
        }
    }
    tally.merge(worker.finish(&shared));
    tally
}

/// Sends on one HTTP/1.1 connection until it ends: (whether the run goes on, a ticket to send
/// again on a new connection).
async fn http1_on<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    worker: &mut Worker,
    stream: S,
    mut first: Option<Ticket>,
) -> (bool, Option<Ticket>) {
    let mut conn = H1::new(stream);
    let mut served = 0u64;
    loop {
        let ticket = match first.take() {
            Some(t) => t,
            None => match shared.next().await {
                Some(t) => t,
                None => return (false, None),
            },
        };
        match worker.h1_exchange(shared, &mut conn, &ticket).await {
            Ok(close) => {
                served += 1;
                if close || shared.config.new_connections {
                    return (true, None);
                }
            }
            // The server ended an idle keep-alive connection as this request went out.
            Err(WireError::ClosedIdle) if served > 0 => return (true, Some(ticket)),
            Err(e) => {
                // The connection's state is unknown after a failed exchange: start afresh.
                worker.error(shared, wire_error_kind(&e));
                return (true, None);
            }
        }
    }
}

/// One h2 connection with `streams` workers on it (one request only, for `new_connections`):
/// their counts, and whether the run goes on.
async fn http2_on<S>(shared: &Arc<Shared>, stream: S, first: Option<Ticket>) -> (Tally, bool)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut tally = Tally::default();
    let Ok((sender, conn)) = h2::client::handshake(stream).await else {
        tally.error(ErrorKind::Connect);
        shared.progress.error();
        return (tally, true);
    };
    let driver = tokio::spawn(conn);
    if let Some(ticket) = first {
        let mut worker = Worker::new();
        match sender.ready().await {
            Ok(mut sender) => {
                if let Err(kind) = worker.h2_exchange(shared, &mut sender, &ticket).await {
                    worker.error(shared, kind);
                }
            }
            Err(e) => worker.error(shared, h2_kind(&e)),
        }
        driver.abort();
        tally.merge(worker.finish(shared));
        return (tally, true);
    }
    let streams: Vec<_> = (0..shared.config.streams.max(1))
        .map(|_| {
            let mut sender = sender.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut worker = Worker::new();
                let mut more = true;
                loop {
                    sender = match sender.ready().await {
                        Ok(ready) => ready,
                        Err(_) => break,
                    };
                    let Some(ticket) = shared.next().await else {
                        more = false;
                        break;
                    };
                    // A failed stream leaves the connection to the next `ready`, which fails
                    // once the connection is gone, and the slot then reconnects.
                    if let Err(kind) = worker.h2_exchange(&shared, &mut sender, &ticket).await {
                        worker.error(&shared, kind);
                    }
                }
                (worker.finish(&shared), more)
            })
        })
        .collect();
    drop(sender);
    let mut more = true;
    for stream in streams {
        match stream.await {
            Ok((t, m)) => {
                tally.merge(t);
                more &= m;
            }
            Err(_) => tally.error(ErrorKind::Io),
        }
    }
    driver.abort();
    (tally, more && !shared.finished())
}

fn describe_answer(answer: &Answer) -> String {
    match answer {
        Answer::PreflightGrant { cors } => format!(
            "200 {}, vary: exactly Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
            headers_text(cors)
        ),
        Answer::PreflightDenial { status, code } => {
            format!(
                "{} <Code>{code}</Code>, no Access-Control-*, no Vary",
                status.as_u16()
            )
        }
        Answer::Actual { cors: Some(cors) } => format!(
            "any non-5xx {}, vary: the three CORS tokens once",
            headers_text(cors)
        ),
        Answer::Actual { cors: None } => "any non-5xx, no Access-Control-*".to_string(),
    }
}

fn describe_response(status: u16, headers: &HeaderMap, body: &[u8]) -> String {
    let cors: Vec<(HeaderName, HeaderValue)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-") || *n == header::VARY)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut out = format!("{status} {}", headers_text(&cors));
    if !(200..300).contains(&status) && !body.is_empty() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        out += &format!(" body: {text}");
    }
    out
}

fn headers_text(headers: &[(HeaderName, HeaderValue)]) -> String {
    let parts: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    format!("[{}]", parts.join("; "))
}
