//! Requests that stall once in flight: a client that stops sending its body, an origin that
//! never reads an upload or stops in the middle of its answer, and one HTTP/2 connection with
//! hundreds of stalled uploads. Each is cut after its deadline, gives back its origin
//! connection, and never keeps a well-behaved client from being served.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::common::pki::TestCa;
use crate::common::*;
use bytes::Bytes;
use corsgate::config::Config;
use corsgate::rules::RulesSource;
use corsgate::tls::OriginRoots;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

const RULES: &str = r#"<CORSConfiguration>
  <CORSRule>
    <AllowedOrigin>https://app.example.com</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>PUT</AllowedMethod>
    <AllowedMethod>POST</AllowedMethod>
  </CORSRule>
</CORSConfiguration>"#;

const APP: &str = "https://app.example.com";
const BODY_READ: Duration = Duration::from_millis(500);
const ORIGIN_RESPONSE: Duration = Duration::from_millis(500);
const CONNECT: Duration = Duration::from_millis(300);
const ORIGIN_CONNECTIONS: usize = 4;
/// Far above every deadline, so a loaded machine cannot fail a test that behaves.
const PATIENCE: Duration = Duration::from_secs(10);

/// corsgate in front of `origin_url` with the small deadlines and cap these tests push against.
fn hostile_config(origin_url: &str) -> Config {
    let mut config = config(vec![route_to(
        origin_url,
        RulesSource::File(rules_file(RULES)),
    )]);
    let server = &mut config.server;
    server.timeouts.body_read = BODY_READ;
    server.timeouts.origin_response = ORIGIN_RESPONSE;
    server.timeouts.connect = CONNECT;
    server.limits.origin_connections = ORIGIN_CONNECTIONS;
    server.limits.max_concurrent_streams = 256;
    config
}

/// How many connections an origin has open, the most it ever had at once, and how many closed.
#[derive(Default)]
struct Tally {
    open: AtomicUsize,
    max_open: AtomicUsize,
    closed: AtomicUsize,
}

impl Tally {
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn max_open(&self) -> usize {
        self.max_open.load(Ordering::SeqCst)
    }

    async fn until_open(&self, n: usize) -> bool {
        eventually(PATIENCE, || async { self.open() == n }).await
    }

    async fn until_closed(&self, n: usize) -> bool {
        eventually(PATIENCE, || async {
            self.closed.load(Ordering::SeqCst) == n
        })
        .await
    }
}

/// Counts a connection as open from accept until dropped.
struct Opened(Arc<Tally>);

impl Opened {
    fn new(tally: &Arc<Tally>) -> Opened {
        let open = tally.open.fetch_add(1, Ordering::SeqCst) + 1;
        tally.max_open.fetch_max(open, Ordering::SeqCst);
        Opened(Arc::clone(tally))
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
}

/// An HTTP/1.1 origin that reads every upload to its end and answers `200 ok`, except
/// `GET /stall-body`: the head and one chunk, then nothing, ever.
async fn counting_origin() -> (SocketAddr, Arc<Tally>) {
    counting_origin_with(None).await
}

/// The same over TLS (HTTP/1.1 only: each request in flight needs its own connection).
async fn counting_origin_with(tls: Option<TlsAcceptor>) -> (SocketAddr, Arc<Tally>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let tally = Arc::new(Tally::default());
    let counts = Arc::clone(&tally);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let opened = Opened::new(&counts);
            let tls = tls.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http
                            .serve_connection(TokioIo::new(stream), service_fn(origin_answer))
                            .await;
                    }
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http
                                .serve_connection(TokioIo::new(stream), service_fn(origin_answer))
                                .await;
                        }
                    }
                }
                drop(opened);
            });
        }
    });
    (addr, tally)
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn origin_answer(req: Request<Incoming>) -> Result<Response<OriginBody>, Infallible> {
    let body = if req.uri().path() == "/stall-body" {
        StallForever { sent: false }.boxed()
    } else {
        // An aborted upload is the point of some tests: its error is expected.
        let _ = req.into_body().collect().await;
        Full::new(Bytes::from_static(b"ok")).boxed()
    };
    Ok(Response::new(body))
}

/// One chunk, then pending for ever.
struct StallForever {
    sent: bool,
}

impl Body for StallForever {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first chunk")))))
    }
}

/// An origin on raw TCP: a `PUT /upload` has its head read and nothing more, its socket handed
/// to the test; a `PUT /early` the same, after a `200 ok` answer that leaves the connection
/// open; any other request is answered `200 ok` and its connection closed.
async fn deaf_origin() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    let (held, holding) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let held = held.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else {
                    return;
                };
                if head.starts_with("PUT /upload ") {
                    let _ = held.send(stream).await;
                } else if head.starts_with("PUT /early ") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                    let _ = held.send(stream).await;
                } else {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                }
            });
        }
    });
    (addr, holding)
}

/// Reads a request head byte by byte, so nothing of the body after it is consumed.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    String::from_utf8(head).ok()
}

/// Reads until the peer closes; `None` if it has not closed within `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let reading = async {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, reading).await.ok()?;
    Some(all)
}

fn assert_within(elapsed: Duration, bound: Duration, what: &str) {
    assert!(
        elapsed >= bound,
        "{what} after {elapsed:?}, before {bound:?}"
    );
    assert!(
        elapsed < bound + PATIENCE,
        "{what} after {elapsed:?}, long past {bound:?}"
    );
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_gets_408_and_the_origin_request_is_aborted() {
    let (origin, tally) = counting_origin().await;
    let gateway = start(hostile_config(&format!("http://{origin}"))).await;

    let mut slow = TcpStream::connect(gateway.addr()).await.expect("connect");
    let started = Instant::now();
    slow.write_all(
        format!(
            "PUT /k HTTP/1.1\r\nHost: a.test\r\nOrigin: {APP}\r\nContent-Length: 100\r\n\r\nabc"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    assert!(tally.until_open(1).await, "the upload reaches the origin");

    let served = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(served.status, StatusCode::OK, "a well-behaved client");

    let answer = read_to_close(&mut slow, PATIENCE)
        .await
        .expect("the connection is closed after the answer");
    assert_within(started.elapsed(), BODY_READ, "408");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer.contains("<Code>RequestTimeout</Code><Message>Your socket connection to the server was not read from or written to within the timeout period.</Message>"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("access-control-allow-origin: {APP}")),
        "decorated like any answer: {answer}"
    );
    // The well-behaved request's connection stays in the pool.
    assert!(
        tally.until_closed(1).await,
        "the origin connection is closed"
    );
    assert_eq!(tally.open(), 1);
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_origin_that_never_reads_the_upload_is_cut_after_origin_response_with_504() {
    let (origin, mut held) = deaf_origin().await;
    let gateway = start(hostile_config(&format!("http://{origin}"))).await;

    let stream = TcpStream::connect(gateway.addr()).await.expect("connect");
    let (mut uploader, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    // Far more than every socket buffer on the way holds.
    let upload = Request::put(format!("http://{}/upload", gateway.addr()))
        .header("origin", APP)
        .body(Zeros::new(256 << 20))
        .expect("request");
    let started = Instant::now();
    let answer = tokio::spawn(async move {
        let response = uploader.send_request(upload).await;
        (response, started.elapsed())
    });
    let mut deaf = tokio::time::timeout(PATIENCE, held.recv())
        .await
        .expect("the upload reaches the origin")
        .expect("a held socket");

    let served = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(served.status, StatusCode::OK, "a well-behaved client");

    let (response, elapsed) = answer.await.expect("upload task");
    let response = response.expect("an answer while the upload is still going");
    assert_within(elapsed, ORIGIN_RESPONSE, "504");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        APP,
        "decorated like any answer"
    );
    assert!(
        read_to_close(&mut deaf, PATIENCE).await.is_some(),
        "corsgate closes the origin connection"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_origin_that_answers_early_then_stops_reading_the_upload_loses_its_connection() {
    let (origin, mut held) = deaf_origin().await;
    let gateway = start(hostile_config(&format!("http://{origin}"))).await;

    let stream = TcpStream::connect(gateway.addr()).await.expect("connect");
    let (mut uploader, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let client_connection = tokio::spawn(connection);
    let upload = Request::put(format!("http://{}/early", gateway.addr()))
        .body(Zeros::new(256 << 20))
        .expect("request");
    let started = Instant::now();
    let response = tokio::time::timeout(PATIENCE, uploader.send_request(upload))
        .await
        .expect("answered early")
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole answer");
    assert_eq!(body.to_bytes(), "ok");
    // Held, not read: reading it would take the upload.
    let mut deaf = tokio::time::timeout(PATIENCE, held.recv())
        .await
        .expect("the upload reaches the origin")
        .expect("a held socket");

    // With the origin connection gone, so is the rest of the upload: the client is cut off.
    let ended = tokio::time::timeout(ORIGIN_RESPONSE + PATIENCE, client_connection)
        .await
        .expect("the client connection ends")
        .expect("client connection task");
    assert!(ended.is_err(), "the upload is cut off, not finished");
    assert_within(started.elapsed(), ORIGIN_RESPONSE, "the cut");
    assert!(
        read_to_close(&mut deaf, PATIENCE).await.is_some(),
        "corsgate closed the origin connection"
    );
    let served = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(served.status, StatusCode::OK, "a well-behaved client");
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_origin_that_stalls_mid_body_has_the_client_connection_closed_after_origin_response() {
    let (origin, tally) = counting_origin().await;
    let gateway = start(hostile_config(&format!("http://{origin}"))).await;

    let response = client()
        .request(
            Request::get(format!("http://{}/stall-body", gateway.addr()))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("the head arrives");
    assert_eq!(response.status(), StatusCode::OK);
    let head_at = Instant::now();

    let served = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(served.status, StatusCode::OK, "a well-behaved client");

    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a frame")
        .expect("the first chunk");
    assert_eq!(first.into_data().expect("data"), "first chunk");
    let rest = tokio::time::timeout(ORIGIN_RESPONSE + PATIENCE, body.frame())
        .await
        .expect("the stall ends");
    assert!(
        matches!(rest, Some(Err(_))),
        "the body is cut, not ended: {rest:?}"
    );
    assert_within(head_at.elapsed(), ORIGIN_RESPONSE, "the cut");
    // The well-behaved request's connection stays in the pool.
    assert!(
        tally.until_closed(1).await,
        "the origin connection is closed"
    );
    assert_eq!(tally.open(), 1);
    gateway.shutdown().await;
}

/// The status, S3 error code and time of one answer.
struct Outcome {
    status: StatusCode,
    code: Option<String>,
    elapsed: Duration,
}

async fn outcome(response: h2::client::ResponseFuture, started: Instant) -> Option<Outcome> {
    let response = response.await.ok()?;
    let elapsed = started.elapsed();
    let status = response.status();
    let mut body = response.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&text);
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string());
    Some(Outcome {
        status,
        code,
        elapsed,
    })
}

/// Opens `streams` uploads on one HTTP/2 connection to the gateway, each sending a few bytes
/// and then nothing, and checks every answer: `503 SlowDown` after `connect` for those that
/// found no origin connection, `408 RequestTimeout` after `body_read` for those that did. Returns
/// how many of each.
async fn stall_uploads(gateway: SocketAddr, streams: usize, tally: &Tally) -> (usize, usize) {
    let tcp = TcpStream::connect(gateway).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let started = Instant::now();
    let mut uploads = Vec::with_capacity(streams);
    let mut answers = tokio::task::JoinSet::new();
    for i in 0..streams {
        h2 = h2.ready().await.expect("a stream may open");
        let req = Request::post(format!("http://{gateway}/up/{i}"))
            .header("origin", APP)
            .body(())
            .expect("request");
        let (response, mut upload) = h2.send_request(req, false).expect("send");
        upload
            .send_data(Bytes::from_static(b"abc"), false)
            .expect("a few bytes");
        // Kept open, never ended: the stall.
        uploads.push(upload);
        answers.spawn(outcome(response, started));
    }
    assert!(
        tally.until_open(ORIGIN_CONNECTIONS).await,
        "the cap is reached"
    );

    // A second client connection, during the attack: refused like the others while the cap is
    // full, never left hanging.
    let during = send(gateway, "GET", "/k", &[]).await;
    assert!(
        during.status == StatusCode::OK
            || (during.status == StatusCode::SERVICE_UNAVAILABLE
                && during.xml("Code").as_deref() == Some("SlowDown")),
        "{during:?}"
    );

    let mut slow_down = 0;
    let mut timed_out = 0;
    while let Some(answer) = answers.join_next().await {
        let answer = answer
            .expect("answer task")
            .expect("every stream is answered");
        match (answer.status, answer.code.as_deref()) {
            (StatusCode::SERVICE_UNAVAILABLE, Some("SlowDown")) => {
                assert_within(answer.elapsed, CONNECT, "503 SlowDown");
                slow_down += 1;
            }
            (StatusCode::REQUEST_TIMEOUT, Some("RequestTimeout")) => {
                assert_within(answer.elapsed, BODY_READ, "408 RequestTimeout");
                timed_out += 1;
            }
            (status, code) => panic!("unexpected answer {status} {code:?}"),
        }
    }
    drop(uploads);
    (slow_down, timed_out)
}

#[tokio::test]
async fn stalled_http2_uploads_never_open_more_origin_connections_than_the_cap() {
    const STREAMS: usize = 200;
    let (origin, tally) = counting_origin().await;
    let gateway = start(hostile_config(&format!("http://{origin}"))).await;

    let (slow_down, timed_out) = stall_uploads(gateway.addr(), STREAMS, &tally).await;
    assert!(
        timed_out >= ORIGIN_CONNECTIONS,
        "{timed_out} stalled uploads cut"
    );
    assert!(slow_down > STREAMS / 2, "{slow_down} requests refused");
    assert_eq!(
        tally.max_open(),
        ORIGIN_CONNECTIONS,
        "origin connections at once"
    );

    assert!(
        tally.until_closed(timed_out).await,
        "stalled origin connections closed"
    );
    let after = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(after.status, StatusCode::OK, "served once the stall is cut");
    assert!(tally.max_open() <= ORIGIN_CONNECTIONS);
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_cap_on_origin_connections_holds_for_https_origins_too() {
    const STREAMS: usize = 40;
    let ca = TestCa::new("capped-origin");
    let leaf = ca.leaf(&["127.0.0.1"]);
    let tls = TlsAcceptor::from(leaf.server_config(&["http/1.1"]));
    let (origin, tally) = counting_origin_with(Some(tls)).await;
    let mut config = hostile_config(&format!("https://{origin}"));
    config.server.origin_tls.roots = OriginRoots::None;
    config.server.origin_tls.ca_file = Some(ca.file.clone());
    let gateway = start(config).await;

    let (slow_down, timed_out) = stall_uploads(gateway.addr(), STREAMS, &tally).await;
    assert!(
        timed_out >= ORIGIN_CONNECTIONS,
        "{timed_out} stalled uploads cut"
    );
    assert!(slow_down > STREAMS / 2, "{slow_down} requests refused");
    assert_eq!(
        tally.max_open(),
        ORIGIN_CONNECTIONS,
        "origin connections at once"
    );
    assert!(
        tally.until_closed(timed_out).await,
        "stalled origin connections closed"
    );
    let after = send(gateway.addr(), "GET", "/k", &[]).await;
    assert_eq!(after.status, StatusCode::OK, "served once the stall is cut");
    gateway.shutdown().await;
}
