//! corsgate's own HTTP/1.1 client to plain-HTTP origins, on the wire: an origin that writes
//! exact bytes (every framing RFC 9112 allows, interim answers, broken heads and bodies) behind
//! a real gateway and a real client; what the client gets, and which origin connections are
//! used again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use corsgate::gateway::Running;
use corsgate::rules::RulesSource;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Far above anything these tests wait for, so a loaded machine cannot fail them.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the origin does with one request.
#[derive(Clone)]
struct Step {
    answer: Vec<u8>,
    /// Close the connection once the answer is written.
    close: bool,
}

fn answer(bytes: &[u8]) -> Step {
    Step {
        answer: bytes.to_vec(),
        close: false,
    }
}

fn answer_then_close(bytes: &[u8]) -> Step {
    Step {
        answer: bytes.to_vec(),
        close: true,
    }
}

/// An origin on 127.0.0.1 that answers the n-th request it reads (over all its connections)
/// with the n-th step of its script, the last one repeated; it counts connections and keeps
/// every request head.
struct ScriptedOrigin {
    url: String,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ScriptedOrigin {
    async fn start(script: Vec<Step>) -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let origin = ScriptedOrigin {
            url: format!("http://{addr}"),
            accepted: Arc::default(),
            closed: Arc::default(),
            heads: Arc::default(),
        };
        let (accepted, closed, heads) = (
            Arc::clone(&origin.accepted),
            Arc::clone(&origin.closed),
            Arc::clone(&origin.heads),
        );
        let script = Arc::new(script);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (closed, heads, script) =
                    (Arc::clone(&closed), Arc::clone(&heads), Arc::clone(&script));
                tokio::spawn(async move {
                    serve(stream, &heads, &script).await;
                    closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        origin
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }

    /// corsgate in front of this origin, forwarding everything (no rules).
    async fn gateway(&self) -> Running {
        start(config(vec![route_to(&self.url, RulesSource::None)])).await
    }
}

/// Reads requests (head, and the body its Content-Length announces) and answers each from
/// the script, until either side closes.
async fn serve(mut stream: TcpStream, heads: &Mutex<Vec<String>>, script: &[Step]) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let body_len: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + body_len);
        let step = {
            let mut heads = heads.lock().expect("heads lock");
            heads.push(head);
            script[(heads.len() - 1).min(script.len() - 1)].clone()
        };
        if stream.write_all(&step.answer).await.is_err() || step.close {
            return;
        }
    }
}

/// `method path` through the gateway over HTTP/1.1, the body collected with its trailers.
async fn fetch(
    gateway: &Running,
    method: &str,
    path: &str,
) -> (
    http::response::Parts,
    Result<http_body_util::Collected<Bytes>, hyper::Error>,
) {
    fetch_with(gateway, method, path, Bytes::new()).await
}

/// As [`fetch`], with a request body.
async fn fetch_with(
    gateway: &Running,
    method: &str,
    path: &str,
    body: Bytes,
) -> (
    http::response::Parts,
    Result<http_body_util::Collected<Bytes>, hyper::Error>,
) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", gateway.addr()))
        .body(Full::new(body))
        .expect("request");
    let response = tokio::time::timeout(PATIENCE, client().request(req))
        .await
        .expect("an answer in time")
        .expect("the gateway answers");
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(PATIENCE, body.collect())
        .await
        .expect("the body in time");
    (parts, collected)
}

async fn body_of(gateway: &Running, method: &str, path: &str) -> (StatusCode, Bytes) {
    let (parts, body) = fetch(gateway, method, path).await;
    (parts.status, body.expect("a whole body").to_bytes())
}

#[tokio::test]
async fn a_get_reaches_the_origin_as_hyper_wrote_it_and_two_share_one_connection() {
    let origin = ScriptedOrigin::start(vec![answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let gateway = origin.gateway().await;
    for _ in 0..2 {
        assert_eq!(
            body_of(&gateway, "GET", "/a?b=c").await,
            (StatusCode::OK, Bytes::from_static(b"ok"))
        );
    }
    assert_eq!(origin.accepted(), 1, "the second GET reuses the connection");
    let heads = origin.heads();
    assert!(
        heads[0].starts_with("GET /a?b=c HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].ends_with("\r\n\r\n"), "{}", heads[0]);
    // A request without a body announces none (as hyper's client writes it).
    let lower = heads[0].to_ascii_lowercase();
    assert!(!lower.contains("content-length"), "{}", heads[0]);
    assert!(!lower.contains("transfer-encoding"), "{}", heads[0]);
    assert!(lower.contains("\r\nhost: "), "{}", heads[0]);
}

#[tokio::test]
async fn a_chunked_answer_with_extensions_and_trailers_reaches_the_client_whole() {
    let origin = ScriptedOrigin::start(vec![answer(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
          5;name=value\r\nhello\r\n7 ; q=\"a;b\"\r\n, world\r\n0\r\nx-checksum: abc\r\n\r\n",
    )])
    .await;
    let gateway = origin.gateway().await;
    let (parts, body) = fetch(&gateway, "GET", "/c").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body.expect("whole body").to_bytes(), "hello, world");
    // Over HTTP/2 the trailers reach the client too (HTTP/1.1 only sends those asked for).
    let req = Request::builder()
        .uri(format!("http://{}/c", gateway.addr()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = h2c_client().request(req).await.expect("h2 answer");
    let collected = response.into_body().collect().await.expect("whole h2 body");
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "hello, world");
    assert_eq!(
        origin.accepted(),
        1,
        "a complete chunked body keeps its connection"
    );
}

#[tokio::test]
async fn a_close_delimited_answer_is_passed_whole_and_its_connection_never_reused() {
    let origin = ScriptedOrigin::start(vec![answer_then_close(
        b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
    )])
    .await;
    let gateway = origin.gateway().await;
    for _ in 0..2 {
        assert_eq!(
            body_of(&gateway, "GET", "/d").await,
            (StatusCode::OK, Bytes::from_static(b"until the end"))
        );
    }
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_their_content_length_says() {
    let origin = ScriptedOrigin::start(vec![
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n"),
        answer(b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"),
        answer(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n"),
        answer(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast"),
    ])
    .await;
    let gateway = origin.gateway().await;
    let (parts, body) = fetch(&gateway, "HEAD", "/h").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-length"], "1234");
    assert!(body.expect("empty body").to_bytes().is_empty());
    assert_eq!(
        body_of(&gateway, "GET", "/n").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        body_of(&gateway, "GET", "/m").await.0,
        StatusCode::NOT_MODIFIED
    );
    // Had any of them been read as having a body, this answer would be out of step.
    assert_eq!(
        body_of(&gateway, "GET", "/l").await,
        (StatusCode::OK, Bytes::from_static(b"last"))
    );
    assert_eq!(origin.accepted(), 1);
}

#[tokio::test]
async fn interim_answers_are_skipped_for_the_final_one() {
    let origin = ScriptedOrigin::start(vec![answer(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
    )])
    .await;
    let gateway = origin.gateway().await;
    let (parts, body) = fetch(&gateway, "GET", "/i").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(
        parts.headers.get("link").is_none(),
        "hints are not the answer's fields"
    );
    assert_eq!(body.expect("whole body").to_bytes(), "final");
}

#[tokio::test]
async fn a_malformed_or_oversized_head_is_a_502() {
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    let mut long = b"HTTP/1.1 200 OK\r\nx-long: ".to_vec();
    long.resize(long.len() + 500 * 1024, b'a');
    long.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
    let cases: [(&str, Vec<u8>); 5] = [
        (
            "a status line that is not HTTP",
            b"ICY 200 OK\r\n\r\n".to_vec(),
        ),
        (
            "a status code that is not one",
            b"HTTP/1.1 2x0 OK\r\n\r\n".to_vec(),
        ),
        ("101 fields", many),
        ("a head over the limit", long),
        (
            "two Content-Lengths",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_vec(),
        ),
    ];
    for (case, bytes) in cases {
        let origin = ScriptedOrigin::start(vec![answer_then_close(&bytes)]).await;
        let gateway = origin.gateway().await;
        let (parts, body) = fetch(&gateway, "GET", "/bad").await;
        assert_eq!(parts.status, StatusCode::BAD_GATEWAY, "{case}");
        let body = body.expect("the error body").to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("<Code>BadGateway</Code>"),
            "{case}: {body:?}"
        );
    }
}

#[tokio::test]
async fn an_origin_closing_before_its_content_length_fails_the_transfer() {
    let origin = ScriptedOrigin::start(vec![answer_then_close(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    )])
    .await;
    let gateway = origin.gateway().await;
    let (parts, body) = fetch(&gateway, "GET", "/short").await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(parts.headers["content-length"], "10");
    assert!(
        body.is_err(),
        "the client must not take 3 bytes for 10: {body:?}"
    );
}

#[tokio::test]
async fn an_origin_closing_an_idle_connection_costs_no_request() {
    let origin = ScriptedOrigin::start(vec![answer_then_close(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let gateway = origin.gateway().await;
    assert_eq!(body_of(&gateway, "GET", "/1").await.0, StatusCode::OK);
    // The origin has closed the kept connection before the next request is sent.
    assert!(eventually(PATIENCE, || async { origin.closed() == 1 }).await);
    assert_eq!(
        body_of(&gateway, "GET", "/2").await,
        (StatusCode::OK, Bytes::from_static(b"ok"))
    );
    assert_eq!(origin.accepted(), 2);
}

#[tokio::test]
async fn connection_close_or_bytes_after_the_body_end_the_connection() {
    for (case, first) in [
        (
            "Connection: close",
            &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"[..],
        ),
        (
            "bytes after the body",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
        ),
        (
            "both framings",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        ("HTTP/1.0", b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ] {
        let origin = ScriptedOrigin::start(vec![
            answer(first),
            answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
        ])
        .await;
        let gateway = origin.gateway().await;
        for _ in 0..2 {
            assert_eq!(
                body_of(&gateway, "GET", "/k").await,
                (StatusCode::OK, Bytes::from_static(b"ok")),
                "{case}"
            );
        }
        assert_eq!(origin.accepted(), 2, "{case}");
    }
}

#[tokio::test]
async fn an_upload_still_goes_through_and_gets_its_answer() {
    let origin = ScriptedOrigin::start(vec![answer(
        b"HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\nstored!",
    )])
    .await;
    let gateway = origin.gateway().await;
    let (parts, body) = fetch_with(&gateway, "PUT", "/u", Bytes::from_static(b"payload")).await;
    assert_eq!(parts.status, StatusCode::CREATED);
    assert_eq!(body.expect("whole body").to_bytes(), "stored!");
    let heads = origin.heads();
    assert!(heads[0].starts_with("PUT /u HTTP/1.1\r\n"), "{}", heads[0]);
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("content-length: 7\r\n"),
        "{}",
        heads[0]
    );
}
