//! `corsgate loadtest` end to end, on 127.0.0.1: a CORS server that answers with corsgate's core
//! must come out clean, and servers that get something wrong must have it counted; https://
//! targets (corsgate's own TLS listener) by ALPN, with the trust flags curl has. Every run is
//! bounded to well under a second.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use corsgate::config::TlsListenerConfig;
use corsgate::cors::{BucketCors, CorsRequest, Decision, Policy, Resource};
use corsgate::gateway::Running;
use corsgate::loadtest::progress::Progress;
use corsgate::loadtest::{
    Checker, GenerateOptions, Mismatch, Outcome, RunConfig, Target, Trust, generate, run, secure,
};
use corsgate::tls::{CertFiles, UnknownName};

use crate::common;
use crate::common::pki::{Leaf, TestCa};
use crate::common::{Origin, Reply};

const RULES: &[u8] = include_bytes!("../../config/cors-app.xml");
const RULES_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cors-app.xml");

/// How a test server departs from S3's answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flaw {
    None,
    /// Answers allowed preflights with only the requested method in Allow-Methods (as Ceph RGW
    /// does), instead of all of the rule's methods.
    EchoMethodOnly,
    /// Answers allowed preflights 204, as nginx configurations usually do.
    NoContent,
}

/// Answers like corsgate: preflights from the core, GETs as an origin's 200 decorated per §4.
fn answer(cors: &BucketCors, flaw: Flaw, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let cors_req = CorsRequest::new(req.method(), req.headers(), Resource::of_key(path));
    let mut response = Response::new(Full::new(Bytes::new()));
    match cors.evaluate(&cors_req) {
        Decision::Preflight(Ok(grant)) => {
            response.headers_mut().extend(grant.headers());
            if flaw == Flaw::EchoMethodOnly
                && let Some(m) = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)
            {
                response
                    .headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_METHODS, m.clone());
            }
            if flaw == Flaw::NoContent {
                *response.status_mut() = StatusCode::NO_CONTENT;
            }
        }
        Decision::Preflight(Err(denial)) => {
            *response.status_mut() = denial.status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml"),
            );
            *response.body_mut() = Full::new(Bytes::from(denial.to_xml("TEST")));
        }
        Decision::Actual(grant) => {
            *response.body_mut() = Full::new(Bytes::from_static(b"hello, object"));
            match grant {
                Some(grant) => response.headers_mut().extend(
                    grant
                        .headers()
                        .filter(|(n, _)| n != header::ACCESS_CONTROL_ALLOW_HEADERS),
                ),
                // corsgate's cache-safety default (docs/cors-semantics.md#deviation-vary).
                None => {
                    response
                        .headers_mut()
                        .insert(header::VARY, HeaderValue::from_static("Origin"));
                }
            }
        }
    }
    response
}

/// Starts a CORS server on an ephemeral loopback port (HTTP/1.1 and h2); it lives as long as the
/// test's runtime.
async fn serve(flaw: Flaw) -> SocketAddr {
    let cors = Arc::new(BucketCors::Enabled(Policy::parse(RULES).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let cors = cors.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let cors = cors.clone();
                    async move { Ok::<_, Infallible>(answer(&cors, flaw, &req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn config(duration_ms: u64) -> RunConfig {
    RunConfig {
        connections: 4,
        streams: 4,
        http2: false,
        duration: Duration::from_millis(duration_ms),
        rate: None,
        max_requests: None,
        timeout: Duration::from_secs(2),
        checker: Checker::default(),
        threads: 2,
        new_connections: false,
        tls: None,
    }
}

async fn load(addr: SocketAddr, config: RunConfig) -> Outcome {
    load_url(&format!("http://{addr}/bucket"), config).await
}

async fn load_url(url: &str, config: RunConfig) -> Outcome {
    let target = Target::parse(url).expect("a valid URL");
    let pool = generate(
        &Policy::parse(RULES).unwrap(),
        &GenerateOptions {
            mix: "preflight-allowed=70,preflight-denied=20,get=10"
                .parse()
                .unwrap(),
            size: 512,
            base_path: target.base_path.clone(),
            get_path: None,
            seed: 3,
        },
    )
    .unwrap();
    run(&target, pool, &config, Arc::new(Progress::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_like_s3_has_no_mismatches() {
    let addr = serve(Flaw::None).await;
    let outcome = load(addr, config(400)).await;
    let t = &outcome.tally;
    assert!(t.total_responses() > 100, "{:?}", t);
    assert!(
        t.responses.iter().all(|&n| n > 0),
        "every kind was sent: {t:?}"
    );
    assert_eq!(t.total_wrong(), 0, "{:#?}", t.samples);
    assert_eq!(t.total_errors(), 0, "{:?}", t.errors);
    assert_eq!(outcome.latencies.overall().len(), t.total_responses());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_h2_too() {
    let addr = serve(Flaw::None).await;
    let mut config = config(300);
    config.http2 = true;
    config.connections = 2;
    let outcome = load(addr, config).await;
    assert!(outcome.tally.total_responses() > 100);
    assert_eq!(
        outcome.tally.total_wrong(),
        0,
        "{:#?}",
        outcome.tally.samples
    );
    assert_eq!(outcome.tally.total_errors(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_allow_methods_is_counted_by_header() {
    let addr = serve(Flaw::EchoMethodOnly).await;
    let outcome = load(addr, config(300)).await;
    let t = &outcome.tally;
    let wrong = t.mismatches[&Mismatch::Header(header::ACCESS_CONTROL_ALLOW_METHODS)];
    assert!(wrong > 0);
    // Every rule of cors-app.xml has several methods, so every allowed preflight is wrong, in
    // that one header only; refusals and GETs stay right.
    assert_eq!(t.mismatches.len(), 1, "{:?}", t.mismatches);
    assert_eq!((t.wrong[0], t.wrong[1], t.wrong[2]), (t.responses[0], 0, 0));
    assert!(!t.samples.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_204_is_wrong_unless_lenient() {
    let addr = serve(Flaw::NoContent).await;
    let outcome = load(addr, config(200)).await;
    assert_eq!(
        outcome.tally.mismatches[&Mismatch::Status],
        outcome.tally.responses[0]
    );
    let mut lenient = config(200);
    lenient.checker.lenient_status = true;
    assert_eq!(load(addr, lenient).await.tally.total_wrong(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_to_the_schedule() {
    let addr = serve(Flaw::None).await;
    for http2 in [false, true] {
        let mut config = config(500);
        config.rate = Some(2000.0);
        config.http2 = http2;
        let outcome = load(addr, config).await;
        let n = outcome.tally.total_responses();
        // 2000 req/s for 0.5 s is 1000 requests, due at 0, 0.5 ms, ... 499.5 ms.
        assert_eq!(n, 1000, "h2 {http2}: {:?}", outcome.tally);
        assert_eq!(outcome.tally.total_wrong(), 0);
        assert!(outcome.elapsed >= Duration::from_millis(499));
        assert!(
            outcome.elapsed < Duration::from_secs(2),
            "h2 {http2}: {:?}",
            outcome.elapsed
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_stops_the_run_early() {
    let addr = serve(Flaw::None).await;
    let mut config = config(5_000);
    config.max_requests = Some(300);
    let outcome = load(addr, config).await;
    assert_eq!(outcome.tally.total_responses(), 300);
    assert!(outcome.elapsed < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_connect_error_and_the_run_still_ends() {
    // Bind then drop: nothing listens on this port any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let outcome = load(addr, config(200)).await;
    assert_eq!(outcome.tally.total_responses(), 0);
    assert!(outcome.tally.errors[&corsgate::loadtest::tally::ErrorKind::Connect] > 0);
    assert!(outcome.elapsed < Duration::from_secs(1));
}

/// The command line: JSON on stdout, and an exit status scripts can assert on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_exits_non_zero_on_mismatches_and_prints_json() {
    let good = serve(Flaw::None).await;
    let bad = serve(Flaw::EchoMethodOnly).await;
    let cmd = |addr: SocketAddr| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_corsgate"))
                .args([
                    "loadtest",
                    &format!("http://{addr}/"),
                    "--rules",
                    RULES_PATH,
                ])
                .args(["-c", "2", "-d", "300ms", "--json", "--threads", "1"])
                .output()
                .unwrap()
        })
    };
    let (good, bad) = tokio::join!(cmd(good), cmd(bad));
    let (good, bad) = (good.unwrap(), bad.unwrap());
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert_eq!(bad.status.code(), Some(1));
    let good: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    let bad: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(good["mismatches"], 0);
    assert!(good["requests"].as_u64().unwrap() > 0);
    assert!(good["rps"].as_f64().unwrap() > 0.0);
    assert!(good["latency_us"]["p999"].is_u64());
    assert!(bad["mismatches"].as_u64().unwrap() > 0);
    assert!(bad["mismatch_kinds"]["header:access-control-allow-methods"].is_u64());
}

/// corsgate with the rules of cors-app.xml on one TLS listener (and no plain one) presenting
/// `cert`, in front of an origin that answers every GET 200; the gateway, its origin and the
/// listener's address.
async fn corsgate_tls(cert: CertFiles) -> (Running, Origin, SocketAddr) {
    let origin = Origin::start(Reply::default()).await;
    let rules = std::str::from_utf8(RULES).expect("cors-app.xml is UTF-8");
    let mut config = common::config(vec![common::route(&["*"], &origin, Some(rules))]);
    config.server.listen = Vec::new();
    config.server.tls = vec![TlsListenerConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        certs: vec![cert],
        unknown_name: UnknownName::DefaultCert,
    }];
    let gateway = common::start(config).await;
    let addr = gateway.tls_addrs[0];
    (gateway, origin, addr)
}

/// `corsgate loadtest URL --rules cors-app.xml` with `args`, briefly, on one thread: exit code,
/// the JSON report (Null when none), stderr.
async fn loadtest_command(url: String, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_corsgate"))
            .args(["loadtest", &url, "--rules", RULES_PATH])
            .args(["-c", "2", "-d", "300ms", "--json", "--threads", "1"])
            .args(&args)
            .output()
            .expect("corsgate runs")
    })
    .await
    .expect("the command's thread ends");
    let json = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    (
        output.status.code(),
        json,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_corsgate_with_its_ca_is_clean_over_http11_and_h2_by_alpn() {
    let ca = TestCa::new("loadtest");
    let leaf = ca.leaf(&["127.0.0.1"]);
    let (_gateway, origin, addr) = corsgate_tls(leaf.files.clone()).await;
    let url = format!("https://{addr}/");
    let cacert = ca.file.to_str().expect("temp paths are UTF-8");
    let h1_args = ["--cacert", cacert];
    let h2_args = ["--cacert", cacert, "--http2", "--streams", "4"];
    let (h1, h2) = tokio::join!(
        loadtest_command(url.clone(), &h1_args),
        loadtest_command(url.clone(), &h2_args),
    );
    for ((code, json, stderr), protocol) in [(h1, "http/1.1"), (h2, "h2")] {
        assert_eq!(code, Some(0), "{protocol}: {stderr} {json}");
        assert_eq!(json["protocol"], protocol, "{json}");
        assert_eq!(json["mismatches"], 0, "{json}");
        assert_eq!(json["errors"], 0, "{json}");
        assert!(json["requests"].as_u64().is_some_and(|n| n > 50), "{json}");
    }
    assert!(origin.count() > 0, "GETs went through to the origin");
}

/// A self-signed certificate for 127.0.0.1, in fresh files.
fn self_signed() -> CertFiles {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .expect("self-signed certificate");
    let dir = std::env::temp_dir().join(format!(
        "corsgate-loadtest-self-signed-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).expect("write certificate");
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).expect("write key");
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_server_needs_insecure_and_an_untrusted_one_is_a_usage_error() {
    let (_gateway, _origin, addr) = corsgate_tls(self_signed()).await;
    let url = format!("https://{addr}/");
    let (code, json, stderr) = loadtest_command(url.clone(), &["--insecure"]).await;
    assert_eq!(code, Some(0), "{stderr} {json}");
    assert_eq!(json["mismatches"], 0, "{json}");

    // Not trusted: exit status 2 before any load, saying why and what to do.
    let (code, json, stderr) = loadtest_command(url.clone(), &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(json.is_null(), "no report without a run: {json}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");

    // A CA file that did not sign the server's certificate is no better.
    let other = TestCa::new("stranger");
    let cacert = other.file.to_str().expect("temp paths are UTF-8");
    let (code, _, stderr) = loadtest_command(url, &["--cacert", cacert]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--cacert"), "{stderr}");
}

/// A TLS CORS server (HTTP/1.1 and h2 by ALPN) that counts the connections it accepts.
async fn serve_tls_counting(leaf: &Leaf) -> (SocketAddr, Arc<AtomicUsize>) {
    let cors = Arc::new(BucketCors::Enabled(
        Policy::parse(RULES).expect("valid rules"),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config(&["h2", "http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let (cors, acceptor) = (cors.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req| {
                    let cors = cors.clone();
                    async move { Ok::<_, Infallible>(answer(&cors, Flaw::None, &req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_opens_one_connection_and_handshake_per_request() {
    let ca = TestCa::new("handshakes");
    let leaf = ca.leaf(&["127.0.0.1"]);
    for http2 in [false, true] {
        let (addr, accepted) = serve_tls_counting(&leaf).await;
        let mut config = config(5_000);
        config.max_requests = Some(60);
        config.new_connections = true;
        config.http2 = http2;
        config.tls = Some(
            secure::client(&Trust::CaFile(ca.file.clone()), http2).expect("client configuration"),
        );
        let outcome = load_url(&format!("https://{addr}/bucket"), config).await;
        let t = &outcome.tally;
        assert_eq!(t.total_responses(), 60, "h2 {http2}: {t:?}");
        assert_eq!(t.total_wrong(), 0, "{:#?}", t.samples);
        assert_eq!(accepted.load(Ordering::Relaxed), 60, "h2 {http2}");
    }
    // Keep-alive, for contrast: the four connections carry every request.
    let (addr, accepted) = serve_tls_counting(&leaf).await;
    let mut config = config(5_000);
    config.max_requests = Some(60);
    config.tls =
        Some(secure::client(&Trust::CaFile(ca.file.clone()), false).expect("client configuration"));
    let outcome = load_url(&format!("https://{addr}/bucket"), config).await;
    assert_eq!(outcome.tally.total_responses(), 60);
    assert_eq!(accepted.load(Ordering::Relaxed), 4);
}

/// An h2c CORS server allowing `max_streams` concurrent streams and an HPACK table of
/// `header_table` bytes for the requests' fields, which ends each connection gracefully (GOAWAY,
/// then the streams already sent are answered) once it has received `per_connection` requests
/// on it; counts the connections it accepts.
async fn serve_h2_ending(
    per_connection: usize,
    max_streams: u32,
    header_table: u32,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let cors = Arc::new(BucketCors::Enabled(
        Policy::parse(RULES).expect("valid rules"),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let cors = cors.clone();
            tokio::spawn(async move {
                let received = Arc::new(AtomicUsize::new(0));
                let enough = Arc::new(tokio::sync::Notify::new());
                let service = {
                    let enough = enough.clone();
                    service_fn(move |req| {
                        if received.fetch_add(1, Ordering::Relaxed) + 1 == per_connection {
                            enough.notify_one();
                        }
                        let response = answer(&cors, Flaw::None, &req);
                        async move { Ok::<_, Infallible>(response) }
                    })
                };
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(max_streams)
                    .header_table_size(header_table)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = enough.notified() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// An h2 run of exactly `requests` requests.
fn h2_requests(requests: u64) -> RunConfig {
    let mut config = config(10_000);
    config.http2 = true;
    config.max_requests = Some(requests);
    config
}

/// Every one of `requests` answered, and answered right.
fn assert_all_answered_right(outcome: &Outcome, requests: u64, context: &str) {
    let t = &outcome.tally;
    assert_eq!(t.total_responses(), requests, "{context}{t:?}");
    assert_eq!(t.total_wrong(), 0, "{context}{:#?}", t.samples);
    assert_eq!(t.total_errors(), 0, "{context}{:?}", t.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_goaway_mid_run_sends_the_rest_on_new_connections() {
    let (addr, accepted) = serve_h2_ending(25, 100, 4096).await;
    let outcome = load(addr, h2_requests(400)).await;
    assert_all_answered_right(&outcome, 400, "");
    assert_eq!(outcome.latencies.overall().len(), 400);
    // Each of the four connection slots went through several connections.
    assert!(accepted.load(Ordering::Relaxed) >= 8, "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_blocks_decode_whatever_table_size_the_server_allows() {
    // None, room for a few of the pool's repeated fields, and for all of them.
    for table in [0, 150, 4096] {
        let (addr, _) = serve_h2_ending(usize::MAX, 100, table).await;
        let outcome = load(addr, h2_requests(600)).await;
        assert_all_answered_right(&outcome, 600, &format!("table {table}: "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_over_the_server_limit_are_refused_and_sent_again() {
    let (addr, accepted) = serve_h2_ending(usize::MAX, 2, 4096).await;
    let mut config = h2_requests(300);
    config.streams = 6;
    let outcome = load(addr, config).await;
    assert_all_answered_right(&outcome, 300, "");
    assert_eq!(accepted.load(Ordering::Relaxed), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_streams_a_server_never_answers_time_out_and_the_run_still_ends() {
    use tokio::io::AsyncReadExt;
    // Reads whatever comes and never writes a byte, not even its SETTINGS.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = [0; 4096];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    let mut config = config(500);
    config.http2 = true;
    config.connections = 1;
    config.threads = 1;
    config.streams = 3;
    config.timeout = Duration::from_millis(100);
    let outcome = load(addr, config).await;
    let t = &outcome.tally;
    assert_eq!(t.total_responses(), 0, "{t:?}");
    // Three streams at a time, each cancelled after 100 ms, for 500 ms: at most six rounds
    // (the last sent just before the end), at least the first.
    let timeouts = t.errors[&corsgate::loadtest::tally::ErrorKind::Timeout];
    assert!((3..=18).contains(&timeouts), "{t:?}");
    assert_eq!(t.total_errors(), timeouts, "{t:?}");
    assert!(
        outcome.elapsed < Duration::from_secs(2),
        "{:?}",
        outcome.elapsed
    );
}
