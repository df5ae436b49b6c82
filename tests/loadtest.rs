//! `corsgate loadtest` end to end, on 127.0.0.1: a CORS server that answers with corsgate's core
//! must come out clean, and servers that get something wrong must have it counted. Every run is
//! bounded to well under a second.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use corsgate::cors::{BucketCors, CorsRequest, Decision, Policy, Resource};
use corsgate::loadtest::progress::Progress;
use corsgate::loadtest::{
    Checker, GenerateOptions, Mismatch, Outcome, RunConfig, Target, generate, run,
};

const RULES: &[u8] = include_bytes!("../config/cors-app.xml");
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
    let target = Target::parse(&format!("http://{addr}/bucket")).unwrap();
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
    let mut config = config(500);
    config.rate = Some(2000.0);
    let outcome = load(addr, config).await;
    let n = outcome.tally.total_responses();
    // 2000 req/s for 0.5 s is 1000 requests, due at 0, 0.5 ms, ... 499.5 ms.
    assert_eq!(n, 1000, "{:?}", outcome.tally);
    assert_eq!(outcome.tally.total_wrong(), 0);
    assert!(outcome.elapsed >= Duration::from_millis(499));
    assert!(
        outcome.elapsed < Duration::from_secs(2),
        "{:?}",
        outcome.elapsed
    );
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
