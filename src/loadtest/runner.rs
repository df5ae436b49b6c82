//! Sending the pool at a server: N connections, each driven by its own task over hyper's
//! connection API (not a pooled client, so the connection count is exactly N), HTTP/1.1
//! keep-alive or h2 with M concurrent streams per connection.
//!
//! Requests are handed out by a shared ticket counter. Closed loop (the default), a worker takes
//! the next ticket as soon as its previous answer is in. Open loop (`rate`), ticket `i` is due at
//! `start + i / rate`, whatever happened before: when every worker is still busy at that moment,
//! the request waits, and its latency counts from when it was due, not from when it could be sent,
//! so a stalled server cannot hide its stall by slowing the load down (no coordinated omission).
//!
//! Every loop is bounded: no ticket is handed out past the deadline or past `max_requests`, every
//! exchange has a timeout, and reconnecting stops at the deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri, Version, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::check::{Checker, Mismatch};
use super::expect::Answer;
use super::generate::{PooledRequest, describe};
use super::latency::Latencies;
use super::progress::Progress;
use super::tally::{ErrorKind, Sample, Tally};
use super::target::Target;

/// Latency samples a worker keeps before merging them under the shared lock.
const BATCH: usize = 512;
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
    pub http2: bool,
    pub duration: Duration,
    /// Requests per second, open loop; `None` for closed loop.
    pub rate: Option<f64>,
    pub max_requests: Option<u64>,
    /// Longest wait for one complete answer, body included.
    pub timeout: Duration,
    pub checker: Checker,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub tally: Tally,
    pub latencies: Latencies,
    /// From the first ticket to the last answer.
    pub elapsed: Duration,
}

/// A pooled request made ready for the wire: the URI form and headers the protocol needs.
struct Prepared {
    request: PooledRequest,
    uri: Uri,
    headers: HeaderMap,
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
        .map(|request| prepare(request, target, config.http2))
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
    let tasks: Vec<_> = (0..config.connections.max(1))
        .map(|_| {
            let shared = shared.clone();
            if config.http2 {
                tokio::spawn(http2_connection(shared))
            } else {
                tokio::spawn(http1_connection(shared))
            }
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        // A worker only ends by returning its tally; a panic there is a bug worth surfacing.
        tally.merge(task.await.expect("load workers do not panic"));
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

fn prepare(request: PooledRequest, target: &Target, http2: bool) -> Prepared {
    let mut headers = request.headers.clone();
    let uri = if http2 {
        // h2 carries the authority in `:authority`; a `Host` header would be redundant.
        format!("http://{}{}", target.authority, request.path)
    } else {
        headers.insert(header::HOST, target.host_header.clone());
        request.path.clone()
    };
    Prepared {
        uri: uri.parse().unwrap_or_else(|_| Uri::from_static("/")),
        headers,
        request,
    }
}

/// One worker's private state: its counts, its pending latency samples, its buffers.
struct Worker {
    shared: Arc<Shared>,
    tally: Tally,
    batch: Vec<(super::mix::RequestKind, Duration)>,
    body: Vec<u8>,
    mismatches: Vec<Mismatch>,
}

impl Worker {
    fn new(shared: Arc<Shared>) -> Worker {
        Worker {
            shared,
            tally: Tally::default(),
            batch: Vec::with_capacity(BATCH),
            body: Vec::with_capacity(BODY_KEPT),
            mismatches: Vec::new(),
        }
    }

    fn error(&mut self, kind: ErrorKind) {
        self.tally.error(kind);
        self.shared.progress.error();
    }

    /// Sends one request with `send`, reads the whole answer, checks and records it.
    async fn exchange<F>(
        &mut self,
        ticket: Ticket,
        send: impl FnOnce(Request<Empty<Bytes>>) -> F,
    ) -> Result<(), ErrorKind>
    where
        F: Future<Output = hyper::Result<Response<Incoming>>>,
    {
        let shared = self.shared.clone();
        let prepared = &shared.pool[ticket.index];
        let mut req = Request::new(Empty::new());
        *req.method_mut() = prepared.request.method.clone();
        *req.uri_mut() = prepared.uri.clone();
        *req.headers_mut() = prepared.headers.clone();
        if shared.config.http2 {
            *req.version_mut() = Version::HTTP_2;
        }
        self.body.clear();
        let body = &mut self.body;
        let answer = tokio::time::timeout(shared.config.timeout, async {
            let response = send(req).await.map_err(|e| ErrorKind::of_hyper(&e))?;
            let (parts, mut incoming) = response.into_parts();
            let mut received = 0u64;
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| ErrorKind::of_hyper(&e))?;
                if let Some(data) = frame.data_ref() {
                    received += data.len() as u64;
                    let room = BODY_KEPT - body.len();
                    body.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Ok((parts, received))
        })
        .await;
        let (parts, received) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(kind)) => return Err(kind),
            Err(_) => return Err(ErrorKind::Timeout),
        };
        let latency = ticket.since.elapsed();
        let kind = prepared.request.kind;
        self.tally.response(kind, received);
        self.mismatches.clear();
        shared.config.checker.check(
            &prepared.request.answer,
            parts.status,
            &parts.headers,
            &self.body,
            &mut self.mismatches,
        );
        let wrong = !self.mismatches.is_empty();
        if wrong {
            let body = &self.body;
            self.tally.wrong(kind, &self.mismatches, || Sample {
                request: describe(&prepared.request),
                expected: describe_answer(&prepared.request.answer),
                got: describe_response(parts.status, &parts.headers, body),
                mismatches: self.mismatches.iter().map(ToString::to_string).collect(),
            });
        }
        shared.progress.response(wrong);
        self.batch.push((kind, latency));
        if self.batch.len() >= BATCH {
            self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        self.shared
            .latencies
            .lock()
            .expect("the latency lock is never held across a panic")
            .record_batch(&self.batch);
        self.batch.clear();
    }

    fn finish(mut self) -> Tally {
        self.flush();
        self.tally
    }
}

async fn connect(shared: &Shared) -> Option<TokioIo<TcpStream>> {
    let stream = tokio::time::timeout(
        shared.config.timeout,
        TcpStream::connect(shared.target.addr),
    )
    .await
    .ok()?
    .ok()?;
    // Requests are small and latency-bound: never wait for Nagle.
    let _ = stream.set_nodelay(true);
    Some(TokioIo::new(stream))
}

/// Waits before the next connect attempt; false when the run is over instead.
async fn after_failed_connect(worker: &mut Worker) -> bool {
    worker.error(ErrorKind::Connect);
    tokio::time::sleep(RECONNECT_PAUSE).await;
    !worker.shared.finished()
}

/// One HTTP/1.1 keep-alive connection, re-opened whenever it breaks.
async fn http1_connection(shared: Arc<Shared>) -> Tally {
    let mut worker = Worker::new(shared.clone());
    while !shared.finished() {
        let handshake = match connect(&shared).await {
            Some(io) => hyper::client::conn::http1::handshake(io).await.ok(),
            None => None,
        };
        let Some((mut sender, conn)) = handshake else {
            if after_failed_connect(&mut worker).await {
                continue;
            }
            break;
        };
        // The connection is driven here, in the worker's own task, not spawned: a request then
        // costs no wake-up of another task on the way out and back in.
        let mut conn = std::pin::pin!(conn);
        loop {
            let ready = tokio::select! {
                biased;
                ready = sender.ready() => ready.is_ok(),
                _ = &mut conn => false,
            };
            if !ready {
                // Closed between requests (the server's keep-alive ended): not an error.
                break;
            }
            let Some(ticket) = shared.next().await else {
                return worker.finish();
            };
            let (result, closed) = {
                let exchange = worker.exchange(ticket, |req| sender.send_request(req));
                let mut exchange = std::pin::pin!(exchange);
                tokio::select! {
                    biased;
                    result = &mut exchange => (result, false),
                    // The connection ended: the answer is complete already or never will be.
                    _ = &mut conn => (exchange.await, true),
                }
            };
            if let Err(kind) = result {
                // The connection's state is unknown after a failed exchange: start afresh.
                worker.error(kind);
                break;
            }
            if closed {
                break;
            }
        }
    }
    worker.finish()
}

/// One h2 connection with `streams` workers on it, re-opened whenever it breaks.
async fn http2_connection(shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let mut failed = Worker::new(shared.clone());
    while !shared.finished() {
        let handshake = match connect(&shared).await {
            Some(io) => hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .ok(),
            None => None,
        };
        let Some((sender, conn)) = handshake else {
            if after_failed_connect(&mut failed).await {
                continue;
            }
            break;
        };
        tokio::spawn(conn);
        let streams: Vec<_> = (0..shared.config.streams.max(1))
            .map(|_| {
                let mut sender = sender.clone();
                let mut worker = Worker::new(shared.clone());
                tokio::spawn(async move {
                    while sender.ready().await.is_ok() {
                        let Some(ticket) = worker.shared.next().await else {
                            break;
                        };
                        if let Err(kind) = worker
                            .exchange(ticket, |req| sender.send_request(req))
                            .await
                        {
                            worker.error(kind);
                            if sender.is_closed() {
                                break;
                            }
                        }
                    }
                    worker.finish()
                })
            })
            .collect();
        drop(sender);
        for stream in streams {
            tally.merge(stream.await.expect("load workers do not panic"));
        }
    }
    tally.merge(failed.finish());
    tally
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

fn describe_response(status: http::StatusCode, headers: &HeaderMap, body: &[u8]) -> String {
    let cors: Vec<(http::HeaderName, http::HeaderValue)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-") || *n == header::VARY)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let mut out = format!("{} {}", status.as_u16(), headers_text(&cors));
    if !status.is_success() && !body.is_empty() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        out += &format!(" body: {text}");
    }
    out
}

fn headers_text(headers: &[(http::HeaderName, http::HeaderValue)]) -> String {
    let parts: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    format!("[{}]", parts.join("; "))
}
