//! Reload under load: the real binary serves preflights and proxied GETs at full speed on many
//! connections while its rules file alternates between two documents (watched rewrites, SIGHUP,
//! admin reloads, mixed). Not one request may fail or be reset, and every answer must be exactly
//! the old document's or the new one's, never a mix. Then the same with an invalid file: nothing
//! may change, and the error must be reported.
//!
//! The durations are configurable (`CORSGATE_RELOAD_SECS`, default 10, and
//! `CORSGATE_RELOAD_STEADY_SECS`, default 3, the reload-free stretch measured first as the
//! throughput baseline). Counts and throughput are printed (`--nocapture` shows them), never
//! asserted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use corsgate::cors::{BucketCors, CorsRequest, Policy, Resource};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const DOC_A: &str = r#"<CORSConfiguration>
  <CORSRule>
    <AllowedOrigin>https://app.example</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>PUT</AllowedMethod>
    <AllowedHeader>x-a</AllowedHeader>
    <ExposeHeader>ETag</ExposeHeader>
    <MaxAgeSeconds>100</MaxAgeSeconds>
  </CORSRule>
</CORSConfiguration>"#;

const DOC_B: &str = r#"<CORSConfiguration>
  <CORSRule>
    <AllowedOrigin>https://app.example</AllowedOrigin>
    <AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>POST</AllowedMethod>
    <AllowedMethod>DELETE</AllowedMethod>
    <ExposeHeader>x-b-expose</ExposeHeader>
    <MaxAgeSeconds>200</MaxAgeSeconds>
  </CORSRule>
</CORSConfiguration>"#;

const INVALID: &str = "<CORSConfiguration>\n  <CORSRule>\n    <AllowedOrigin>https://app.example</AllowedOrigin>\n    <AllowedMethod>FETCH</AllowedMethod>\n  </CORSRule>\n</CORSConfiguration>";

const CONNECTIONS: usize = 32;
const SLOT: Duration = Duration::from_millis(100);

fn secs(var: &str, default: f64) -> Duration {
    let secs = std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(default);
    Duration::from_secs_f64(secs)
}

/// What a response says CORS-wise: every `Access-Control-*` header and `Vary`, sorted.
type Signature = Vec<(String, String)>;

fn signature(headers: &HeaderMap) -> Signature {
    let mut out: Signature = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-") || n.as_str() == "vary")
        .map(|(n, v)| {
            (
                n.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("origin", HeaderValue::from_static("https://app.example"));
    h
}

fn preflight_headers() -> HeaderMap {
    let mut h = request_headers();
    h.insert(
        "access-control-request-method",
        HeaderValue::from_static("GET"),
    );
    h
}

/// The answer the core gives under `doc`, as the gateway must send it.
fn expected(doc: &str, method: &Method, headers: &HeaderMap) -> Signature {
    let cors = BucketCors::Enabled(Policy::parse(doc.as_bytes()).expect("valid document"));
    let req = CorsRequest::new(method, headers, Resource::Object);
    let grant = match cors.evaluate(&req) {
        corsgate::cors::Decision::Preflight(result) => result.expect("allowed preflight"),
        corsgate::cors::Decision::Actual(grant) => grant.expect("decorated GET"),
    };
    let mut out: Signature = grant
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_string()))
        .collect();
    out.sort();
    out
}

/// An origin that answers every request 200 with a short body, remembering nothing.
async fn quiet_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"object"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Everything the load saw.
struct Tally {
    start: Instant,
    /// Requests completed per `SLOT` since `start`.
    slots: Vec<AtomicU64>,
    preflights: AtomicU64,
    gets: AtomicU64,
    failures: AtomicU64,
    /// Answers that were neither document's.
    mixed: AtomicU64,
    /// Answers per document (A, B).
    per_doc: [AtomicU64; 2],
    samples: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn new(total: Duration) -> Tally {
        let n = (total.as_millis() / SLOT.as_millis()) as usize + 20;
        Tally {
            start: Instant::now(),
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            preflights: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            mixed: AtomicU64::new(0),
            per_doc: [AtomicU64::new(0), AtomicU64::new(0)],
            samples: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn sample(&self, what: String) {
        let mut samples = self.samples.lock().expect("samples");
        if samples.len() < 5 {
            samples.push(what);
        }
    }

    /// Mean and worst-slot requests per second over the slots in `[from, to)` since start.
    fn rate(&self, from: Duration, to: Duration) -> (f64, f64) {
        let a = from.as_millis().div_ceil(SLOT.as_millis()) as usize;
        let b = ((to.as_millis() / SLOT.as_millis()) as usize).min(self.slots.len());
        let counts: Vec<u64> = self.slots[a..b]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let per_sec = |n: u64| n as f64 / SLOT.as_secs_f64();
        let mean = per_sec(counts.iter().sum::<u64>()) / counts.len().max(1) as f64;
        let worst = counts.iter().copied().min().map_or(0.0, per_sec);
        (mean, worst)
    }
}

/// One connection sending preflights and GETs alternately until `stop`.
async fn drive(
    gateway: SocketAddr,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    allowed: Arc<[[Signature; 2]; 2]>,
) {
    let stream = match TcpStream::connect(gateway).await {
        Ok(s) => s,
        Err(err) => {
            tally.failures.fetch_add(1, Ordering::Relaxed);
            tally.sample(format!("connect: {err}"));
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(err) => {
            tally.failures.fetch_add(1, Ordering::Relaxed);
            tally.sample(format!("handshake: {err}"));
            return;
        }
    };
    tokio::spawn(conn);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let preflight = n.is_multiple_of(2);
        let mut req = Request::builder()
            .method(if preflight {
                Method::OPTIONS
            } else {
                Method::GET
            })
            .uri("/photos/cat.jpg")
            .header("host", "gateway.test")
            .header("origin", "https://app.example");
        if preflight {
            req = req.header("access-control-request-method", "GET");
        }
        let req = req.body(Empty::<Bytes>::new()).expect("request");
        if sender.ready().await.is_err() {
            tally.failures.fetch_add(1, Ordering::Relaxed);
            tally.sample("connection closed by the gateway".into());
            return;
        }
        let result = async {
            let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = response.into_parts();
            body.collect().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(parts)
        }
        .await;
        let parts = match result {
            Ok(parts) => parts,
            Err(err) => {
                tally.failures.fetch_add(1, Ordering::Relaxed);
                tally.sample(format!("request failed: {err}"));
                return;
            }
        };
        if parts.status != StatusCode::OK {
            tally.failures.fetch_add(1, Ordering::Relaxed);
            tally.sample(format!("status {}", parts.status));
            continue;
        }
        let kind = usize::from(preflight);
        let got = signature(&parts.headers);
        match allowed[kind].iter().position(|s| *s == got) {
            Some(doc) => {
                tally.per_doc[doc].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                tally.mixed.fetch_add(1, Ordering::Relaxed);
                tally.sample(format!("neither document: {got:?}"));
            }
        }
        if preflight {
            tally.preflights.fetch_add(1, Ordering::Relaxed)
        } else {
            tally.gets.fetch_add(1, Ordering::Relaxed)
        };
        let slot = (tally.start.elapsed().as_millis() / SLOT.as_millis()) as usize;
        if let Some(counter) = tally.slots.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn signatures(docs: [&str; 2]) -> Arc<[[Signature; 2]; 2]> {
    let get = request_headers();
    let pre = preflight_headers();
    Arc::new([
        [
            expected(docs[0], &Method::GET, &get),
            expected(docs[1], &Method::GET, &get),
        ],
        [
            expected(docs[0], &Method::OPTIONS, &pre),
            expected(docs[1], &Method::OPTIONS, &pre),
        ],
    ])
}

fn save_by_rename(path: &Path, contents: &str) {
    let tmp = path.with_extension("xml.saving");
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn generation(admin_addr: SocketAddr) -> Option<u64> {
    let (_, view) = admin(admin_addr, "GET", "/-/rules").await;
    view["routes"][0]["rules"]["generation"].as_u64()
}

async fn wait_for_new_generation(admin_addr: SocketAddr, old: Option<u64>) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let now = generation(admin_addr).await;
        if now != old {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn start_gateway(rules: &Path, origin: SocketAddr) -> (Binary, SocketAddr) {
    Binary::serve(
        &format!("http://{origin}"),
        &["--rules", &rules.to_string_lossy()],
        &[],
    )
}

fn spawn_load(
    runtime: &tokio::runtime::Runtime,
    gateway: SocketAddr,
    tally: &Arc<Tally>,
    stop: &Arc<AtomicBool>,
    allowed: &Arc<[[Signature; 2]; 2]>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CONNECTIONS)
        .map(|_| {
            runtime.spawn(drive(
                gateway,
                Arc::clone(tally),
                Arc::clone(stop),
                Arc::clone(allowed),
            ))
        })
        .collect()
}

/// Slow on purpose, and never skipped: the gateway stays under full load through the warm-up,
/// the reload-free stretch and the reload phase (`CORSGATE_RELOAD_STEADY_SECS` and
/// `CORSGATE_RELOAD_SECS` shorten them), because an answer torn or dropped by a swap is rare and
/// only shows when many swaps meet many requests in flight.
#[test]
fn rules_alternating_under_load_drop_nothing_and_never_mix() {
    let reload_phase = secs("CORSGATE_RELOAD_SECS", 10.0);
    let steady_phase = secs("CORSGATE_RELOAD_STEADY_SECS", 3.0);
    let warmup = Duration::from_millis(500);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let origin = runtime.block_on(quiet_origin());
    let rules = rules_file(DOC_A);
    let (binary, gateway) = start_gateway(&rules, origin);
    let admin_addr = binary.admin();

    let tally = Arc::new(Tally::new(warmup + steady_phase + reload_phase));
    let stop = Arc::new(AtomicBool::new(false));
    let allowed = signatures([DOC_A, DOC_B]);
    let load = spawn_load(&runtime, gateway, &tally, &stop, &allowed);

    let (alternations, by_trigger, reload_window) = runtime.block_on(async {
        tokio::time::sleep(warmup + steady_phase).await;
        let phase_start = Instant::now();
        let reload_from = tally.start.elapsed();
        let target = 60u32;
        let step = reload_phase / target;
        let mut current = generation(admin_addr).await;
        let mut alternations = 0u32;
        let mut by_trigger = [0u32; 3];
        let mut doc_b = true;
        while phase_start.elapsed() < reload_phase {
            let doc = if doc_b { DOC_B } else { DOC_A };
            let trigger = alternations as usize % 3;
            match trigger {
                0 => save_by_rename(&rules, doc),
                1 => {
                    std::fs::write(&rules, doc).expect("rewrite in place");
                    binary.hangup();
                }
                _ => {
                    save_by_rename(&rules, doc);
                    let (status, outcome) = admin(admin_addr, "POST", "/-/reload").await;
                    assert_eq!(status, StatusCode::OK, "{outcome}");
                }
            }
            let Some(new) = wait_for_new_generation(admin_addr, current).await else {
                panic!("alternation {alternations} ({trigger}) was not applied within 5 s");
            };
            current = Some(new);
            alternations += 1;
            by_trigger[trigger] += 1;
            doc_b = !doc_b;
            let next = step * alternations;
            if let Some(wait) = next.checked_sub(phase_start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let reload_to = tally.start.elapsed();
        stop.store(true, Ordering::Relaxed);
        for task in load {
            let _ = task.await;
        }
        (alternations, by_trigger, (reload_from, reload_to))
    });

    let total = tally.preflights.load(Ordering::Relaxed) + tally.gets.load(Ordering::Relaxed);
    let (steady, steady_worst) = tally.rate(warmup, warmup + steady_phase);
    // Whole slots only, inside the stretch where the rules alternated and the load ran.
    let (during, during_worst) = tally.rate(reload_window.0 + SLOT, reload_window.1 - SLOT);
    eprintln!(
        "reload under load: {total} requests ({} preflights, {} GETs) on {CONNECTIONS} connections; \
         {alternations} alternations ({} file watch, {} SIGHUP, {} admin reload); \
         answers by document A/B: {}/{}; failures {}, mixed {}",
        tally.preflights.load(Ordering::Relaxed),
        tally.gets.load(Ordering::Relaxed),
        by_trigger[0],
        by_trigger[1],
        by_trigger[2],
        tally.per_doc[0].load(Ordering::Relaxed),
        tally.per_doc[1].load(Ordering::Relaxed),
        tally.failures.load(Ordering::Relaxed),
        tally.mixed.load(Ordering::Relaxed),
    );
    eprintln!(
        "throughput: steady {steady:.0} req/s (worst 100 ms slot {steady_worst:.0}); \
         during reloads {during:.0} req/s = {:.3}x steady (worst 100 ms slot {during_worst:.0} = {:.3}x)",
        during / steady,
        during_worst / steady,
    );
    let samples = tally.samples.lock().expect("samples").clone();
    assert_eq!(tally.failures.load(Ordering::Relaxed), 0, "{samples:#?}");
    assert_eq!(tally.mixed.load(Ordering::Relaxed), 0, "{samples:#?}");
    assert!(alternations >= 50, "only {alternations} alternations");
    assert!(
        tally.per_doc[0].load(Ordering::Relaxed) > 0
            && tally.per_doc[1].load(Ordering::Relaxed) > 0,
        "both documents were served"
    );
}

#[test]
fn an_invalid_rules_file_under_load_changes_nothing_and_is_reported() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let origin = runtime.block_on(quiet_origin());
    let rules = rules_file(DOC_A);
    let (binary, gateway) = start_gateway(&rules, origin);
    let admin_addr = binary.admin();
    let phase = secs("CORSGATE_RELOAD_INVALID_SECS", 3.0);

    let tally = Arc::new(Tally::new(phase + Duration::from_secs(1)));
    let stop = Arc::new(AtomicBool::new(false));
    // Only document A may ever be seen.
    let allowed = signatures([DOC_A, DOC_A]);
    let load = spawn_load(&runtime, gateway, &tally, &stop, &allowed);

    runtime.block_on(async {
        let before = generation(admin_addr).await;
        tokio::time::sleep(phase / 3).await;
        save_by_rename(&rules, INVALID);
        let reported = async {
            loop {
                let (_, view) = admin(admin_addr, "GET", "/-/rules").await;
                if !view["routes"][0]["rules"]["last_error"].is_null() {
                    return view;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let view = tokio::time::timeout(Duration::from_secs(5), reported)
            .await
            .expect("the error is reported in /-/rules");
        let problem = &view["routes"][0]["rules"]["last_error"]["problems"][0];
        assert_eq!(problem["line"], 4);
        assert_eq!(problem["col"], 5);
        assert_eq!(problem["code"], "InvalidRequest");
        binary.hangup();
        let (status, _) = admin(admin_addr, "POST", "/-/reload").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        tokio::time::sleep(phase * 2 / 3).await;
        assert_eq!(
            generation(admin_addr).await,
            before,
            "the good rules stayed"
        );
        stop.store(true, Ordering::Relaxed);
        for task in load {
            let _ = task.await;
        }
    });

    let total = tally.preflights.load(Ordering::Relaxed) + tally.gets.load(Ordering::Relaxed);
    eprintln!(
        "invalid file under load: {total} requests, failures {}, changed answers {}",
        tally.failures.load(Ordering::Relaxed),
        tally.mixed.load(Ordering::Relaxed)
    );
    let samples = tally.samples.lock().expect("samples").clone();
    assert_eq!(tally.failures.load(Ordering::Relaxed), 0, "{samples:#?}");
    assert_eq!(tally.mixed.load(Ordering::Relaxed), 0, "{samples:#?}");
    let logged = binary.log_lines("4:5: InvalidRequest");
    assert!(
        !logged.is_empty(),
        "the error (file:line:col, S3 code) is logged"
    );
    assert!(
        binary
            .log_lines("rules not reloaded")
            .iter()
            .any(|l| l.contains("keeps serving")),
        "the log says the old rules keep serving"
    );
}
