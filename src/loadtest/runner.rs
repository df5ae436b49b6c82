//! Sending the pool at a server: N connections spread over T threads, HTTP/1.1 keep-alive or h2
//! with M concurrent streams per connection, over TCP or TLS.
//!
//! Each thread runs its share of the connections on its own single-threaded runtime: a
//! connection's task never migrates, and threads share nothing per request but the ticket
//! counter, so the cost per request stays flat as threads are added. HTTP/1.1 goes through
//! [`super::wire`], which writes bytes rendered before the run and checks the answer's header
//! lines where they were read; h2 goes through [`super::h2wire`], one task per connection driving
//! all of its streams, with header blocks encoded before the run up to what each connection's
//! HPACK table holds ([`super::hpack`]).
//!
//! Requests are handed out by a shared ticket counter. Closed loop (the default), a worker (an
//! HTTP/1.1 connection, an h2 stream) takes the next ticket as soon as its previous answer is in. Open loop (`rate`), ticket `i` is due at
//! `start + i / rate`, whatever happened before: when every worker is still busy at that moment,
//! the request waits, and its latency counts from when it was due, not from when it could be sent,
//! so a stalled server cannot hide its stall by slowing the load down (no coordinated omission).
//! With `new_connections`, every request opens its own connection (and TLS handshake), and its
//! latency includes them. A request the server did not process (sent on a keep-alive connection
//! it had just closed, an h2 stream refused or above a GOAWAY's last stream) is sent once more,
//! on the next connection, as a browser would.
//!
//! Every loop is bounded: no ticket is handed out past the deadline or past `max_requests`, every
//! exchange has a timeout, and reconnecting stops at the deadline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::check::{Checker, Mismatch};
use super::expect::Answer;
use super::generate::{PooledRequest, describe};
use super::h2wire::{H2, H2Error, Reply, StreamError};
use super::hpack;
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
/// When an h2 connection's timer is not needed sooner, it wakes this far ahead, to no effect.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

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
    /// The h2 header block, `:scheme` and `:authority` included, for a connection's encoder.
    h2: hpack::Block,
}

struct Shared {
    pool: Vec<Prepared>,
    /// The fields that the pool's h2 blocks share, for every connection's table.
    repeated: hpack::Repeated,
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
    /// Already sent once and refused unprocessed: a second refusal is an error.
    retried: bool,
}

impl Ticket {
    fn new(index: usize, since: Instant) -> Ticket {
        Ticket {
            index,
            since,
            retried: false,
        }
    }
}

/// What [`Shared::claim`] hands out.
enum Claim {
    /// To send now.
    Now(Ticket),
    /// Request `index` of the pool, to send at `due` (open loop, ahead of the schedule).
    Due(usize, Instant),
    /// The run is over.
    Over,
}

impl Shared {
    /// The next request, and when it is due, without waiting for it.
    fn claim(&self) -> Claim {
        let i = self.tickets.fetch_add(1, Ordering::Relaxed);
        if self.config.max_requests.is_some_and(|max| i >= max) {
            return Claim::Over;
        }
        let claimed = Instant::now();
        let index = (i % self.pool.len() as u64) as usize;
        let Some(rate) = self.config.rate else {
            return if claimed < self.deadline {
                Claim::Now(Ticket::new(index, claimed))
            } else {
                Claim::Over
            };
        };
        let due = self.start + Duration::from_secs_f64(i as f64 / rate);
        if due >= self.deadline {
            return Claim::Over;
        }
        if claimed >= due {
            // Every worker was busy when this request was due: its wait is the server's doing.
            return Claim::Now(Ticket::new(index, due));
        }
        Claim::Due(index, due)
    }

    /// The next request, once it is due; `None` once the run is over.
    async fn next(&self) -> Option<Ticket> {
        match self.claim() {
            Claim::Now(ticket) => Some(ticket),
            Claim::Over => None,
            // Early: wait for the schedule. The timer wakes up to a millisecond late; that delay
            // is the load generator's, so latency counts from the actual send.
            Claim::Due(index, due) => {
                tokio::time::sleep_until(due.into()).await;
                Some(Ticket::new(index, Instant::now()))
            }
        }
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
    let fields: Vec<_> = pool.iter().map(|r| h2_fields(r, target)).collect();
    let (repeated, blocks) = hpack::pool_blocks(&fields);
    let pool = pool
        .into_iter()
        .zip(blocks)
        .map(|(request, h2)| prepare(request, target, h2))
        .collect();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        pool,
        repeated,
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

/// A pooled request's h2 fields, pseudo-headers first.
fn h2_fields(request: &PooledRequest, target: &Target) -> Vec<(Vec<u8>, Vec<u8>)> {
    hpack::request_fields(
        request.method.as_str().as_bytes(),
        target.tls.is_some(),
        target.authority.as_bytes(),
        request.path.as_bytes(),
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
    )
}

fn prepare(request: PooledRequest, target: &Target, h2: hpack::Block) -> Prepared {
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
    Prepared { request, wire, h2 }
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
        got: impl FnOnce() -> String,
    ) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(ticket.since);
        let prepared = &shared.pool[ticket.index];
        let kind = prepared.request.kind;
        self.tally.response(kind, received);
        let wrong = !self.mismatches.is_empty();
        if wrong {
            self.tally.wrong(kind, &self.mismatches, || Sample {
                request: describe(&prepared.request),
                expected: describe_answer(&prepared.request.answer),
                got: got(),
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
        let body = std::mem::take(&mut self.body);
        self.record(shared, ticket, head.body_len, || {
            describe_lines(head.status, conn.lines(), &body)
        });
        self.body = body;
        Ok(head.close)
    }

    /// Checks and counts one h2 answer.
    fn h2_answer(&mut self, shared: &Shared, ticket: &Ticket, reply: &Reply<'_>) {
        let prepared = &shared.pool[ticket.index];
        self.mismatches.clear();
        shared.config.checker.check_lines(
            &prepared.request.answer,
            reply.status,
            reply.fields(),
            reply.body,
            &mut self.mismatches,
        );
        self.record(shared, ticket, reply.received, || {
            describe_lines(reply.status, reply.fields(), reply.body)
        });
    }
}

fn h2_error_kind(e: &H2Error) -> ErrorKind {
    match e {
        H2Error::Closed => ErrorKind::Closed,
        H2Error::Protocol(_) | H2Error::FrameSize(_) | H2Error::FlowControl | H2Error::Hpack(_) => {
            ErrorKind::Protocol
        }
        H2Error::Io(_) => ErrorKind::Io,
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
    // Tickets whose requests the server did not process (a reused HTTP/1.1 connection already
    // closed, h2 streams refused or beyond a GOAWAY): sent again on the next connection, as a
    // browser would.
    let mut carried: VecDeque<Ticket> = VecDeque::new();
    while !shared.finished() || !carried.is_empty() {
        if shared.config.new_connections && carried.is_empty() {
            match shared.next().await {
                Some(t) => carried.push_back(t),
                None => break,
            }
        }
        let (stream, h2) = match open(&shared.target, &shared.config).await {
            Ok(opened) => opened,
            Err(_) => {
                // The tickets waiting for this connection are lost with it: one connect error.
                worker.error(&shared, ErrorKind::Connect);
                carried.clear();
                if !shared.config.new_connections {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
                continue;
            }
        };
        let more = if h2 {
            match stream {
                Stream::Plain(s) => http2_on(&shared, &mut worker, s, &mut carried).await,
                Stream::Tls(s) => http2_on(&shared, &mut worker, *s, &mut carried).await,
            }
        } else {
            let first = carried.pop_front();
            let (more, retry) = match stream {
                Stream::Plain(s) => http1_on(&shared, &mut worker, s, first).await,
                Stream::Tls(s) => http1_on(&shared, &mut worker, *s, first).await,
            };
            carried.extend(retry);
            more
        };
        if !more && carried.is_empty() {
            break;
        }
    }
    worker.finish(&shared)
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

/// Sends on one h2 connection until it ends, all of its streams driven from this one task:
/// whether the run goes on. Tickets in `carried` go first; the ones the server did not process
/// are put back there for the next connection. With `new_connections`, only the first ticket of
/// `carried` is sent.
async fn http2_on<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    worker: &mut Worker,
    stream: S,
    carried: &mut VecDeque<Ticket>,
) -> bool {
    let one_shot = shared.config.new_connections;
    let streams = if one_shot {
        1
    } else {
        shared.config.streams.max(1)
    };
    let mut conn: H2<S, Ticket> = H2::new(stream, streams, BODY_KEPT);
    // An open-loop request claimed ahead of its time: (pool index, due).
    let mut pending: Option<(usize, Instant)> = None;
    let mut over = false;
    let mut sent = 0u64;
    // Wakes the task for the earliest stream deadline, a pending request's due time, or the end
    // of the run. Streams are opened in deadline order, so once set to the earliest deadline
    // (`armed`) the timer stays early enough until it fires: it is reset about once per timeout,
    // not once per request.
    let idle = || Instant::now() + IDLE_WAKE;
    let timer = tokio::time::sleep_until(idle().into());
    tokio::pin!(timer);
    let mut armed = false;
    let failure = loop {
        // Keep `streams` requests in flight, written together.
        let mut now = None;
        while conn.can_open() && !(one_shot && sent > 0) {
            let ticket = match carried.pop_front() {
                Some(t) => t,
                None if over || one_shot => break,
                None => match pending {
                    Some((index, due)) => {
                        let at = *now.get_or_insert_with(Instant::now);
                        if at < due {
                            break;
                        }
                        pending = None;
                        Ticket::new(index, at)
                    }
                    None => match shared.claim() {
                        Claim::Now(t) => t,
                        Claim::Due(index, due) => {
                            pending = Some((index, due));
                            continue;
                        }
                        Claim::Over => {
                            over = true;
                            break;
                        }
                    },
                },
            };
            let at = *now.get_or_insert_with(Instant::now);
            let block = &shared.pool[ticket.index].h2;
            conn.open(&shared.repeated, block, ticket, at + shared.config.timeout);
            sent += 1;
        }
        if let Err(e) = conn.flush().await {
            break Some(e);
        }
        let sending_done = over || conn.going_away() || (one_shot && sent > 0);
        if conn.in_flight() == 0 && (sending_done || (shared.finished() && pending.is_none())) {
            break None;
        }
        if !armed && let Some(deadline) = conn.earliest_deadline() {
            timer.as_mut().reset(deadline.into());
            armed = true;
        }
        let mut wake = pending.map(|(_, due)| due);
        if conn.in_flight() == 0 {
            // Nothing to read for: a server allowing no stream is waited on until the run ends.
            wake = Some(wake.map_or(shared.deadline, |w| w.min(shared.deadline)));
        }
        if let Some(wake) = wake
            && wake < timer.deadline().into_std()
        {
            timer.as_mut().reset(wake.into());
        }
        // The timer first: it is rarely ready, and a connection whose reads are always ready
        // must still see its streams time out.
        let failed = tokio::select! {
            biased;
            () = &mut timer => {
                conn.expire(Instant::now());
                timer.as_mut().reset(idle().into());
                armed = false;
                None
            }
            read = conn.read() => read.err(),
        };
        while let Some((ticket, reply)) = conn.next_ended() {
            match reply {
                Ok(reply) => worker.h2_answer(shared, &ticket, &reply),
                Err(StreamError::Refused) if !ticket.retried => carried.push_back(Ticket {
                    retried: true,
                    ..ticket
                }),
                Err(StreamError::Refused | StreamError::Reset(_)) => {
                    worker.error(shared, ErrorKind::Closed);
                }
                Err(StreamError::TimedOut) => worker.error(shared, ErrorKind::Timeout),
            }
        }
        if failed.is_some() {
            break failed;
        }
    };
    if let Some(e) = failure {
        // Whether the server processed the streams still open is unknown: each is an error.
        let kind = h2_error_kind(&e);
        while conn.abandon().is_some() {
            worker.error(shared, kind);
        }
    }
    if let Some((index, due)) = pending {
        carried.push_front(Ticket::new(index, due));
    }
    !over
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

/// [`describe_response`] of an answer whose header lines were kept as bytes.
fn describe_lines<'a>(
    status: u16,
    lines: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    body: &[u8],
) -> String {
    let mut headers = HeaderMap::new();
    for (n, v) in lines {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            headers.append(n, v);
        }
    }
    describe_response(status, &headers, body)
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
