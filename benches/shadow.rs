//! What shadow rules and the access log add to a preflight: the gateway's preflight answer
//! (cache lookup or evaluation, headers, request ID) alone, then with a candidate document
//! judging the same request (agreeing, then disagreeing), then with an access-log line written
//! (to `/dev/null`: the request thread's cost, formatting and handing over, is what is measured;
//! the writer thread's `write` is not on the request path).
//!
//! `cargo bench --bench shadow` prints every case as a ratio to `preflight-unshadowed` measured
//! in the same run (the machine is shared and noisy; ratios travel, nanoseconds don't).

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corsgate::config::{LogConfig, LogFormat, OriginUrl, PreflightCacheConfig};
use corsgate::cors::{BucketCors, CorsRequest, Policy, Resource};
use corsgate::gateway::access_log::{AccessEntry, AccessLog};
use corsgate::gateway::preflight::PreflightCache;
use corsgate::gateway::request_id::RequestIds;
use corsgate::gateway::snapshot::SnapshotCell;
use corsgate::rules::RulesSource;
use corsgate::rules::shadow::{ShadowRules, ShadowSource};
use criterion::{Criterion, criterion_group};
use http::{HeaderMap, HeaderValue, Method};

const LIVE: &str = include_str!("../config/cors-app.xml");
const PATH: &str = "/uploads/photo.jpg";
const GROUP: &str = "shadow";
const BASELINE: &str = "preflight-unshadowed";

/// The candidate: the live document with one value changed. `agreeing` changes a rule the
/// benchmarked request does not reach; otherwise the winning rule's `MaxAgeSeconds` changes, so
/// every request is a `headers_changed` disagreement.
fn candidate(agreeing: bool) -> ShadowRules {
    let xml = if agreeing {
        LIVE.replacen("http://localhost:3000", "http://localhost:3001", 1)
    } else {
        LIVE.replacen(
            "<MaxAgeSeconds>3600</MaxAgeSeconds>",
            "<MaxAgeSeconds>7000</MaxAgeSeconds>",
            1,
        )
    };
    assert_ne!(
        xml, LIVE,
        "the bench's candidate must differ from the live rules"
    );
    let path = std::env::temp_dir().join(format!(
        "corsgate-bench-shadow-{}-{agreeing}.xml",
        std::process::id()
    ));
    std::fs::write(&path, xml).expect("write the candidate");
    let tls = corsgate::tls::client_config(corsgate::tls::OriginRoots::Webpki, None)
        .expect("built-in roots");
    let client = corsgate::rules::bucket::fetch_client(Duration::from_secs(1), tls);
    let origin = OriginUrl::parse("http://127.0.0.1:9000").expect("valid origin");
    let source = ShadowSource {
        rules: RulesSource::File(path),
        deny_warnings: false,
    };
    ShadowRules::build(1, &source, &origin, &client).expect("the candidate loads")
}

fn access_log(format: LogFormat) -> AccessLog {
    AccessLog::open(&LogConfig {
        access: true,
        format,
        access_file: Some(PathBuf::from("/dev/null")),
    })
    .expect("/dev/null opens")
}

fn bench(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    headers.insert(
        "origin",
        HeaderValue::from_static("https://app.example.com"),
    );
    headers.insert(
        "access-control-request-method",
        HeaderValue::from_static("PUT"),
    );
    headers.insert(
        "access-control-request-headers",
        HeaderValue::from_static("content-type,x-amz-acl,x-amz-meta-owner"),
    );
    let policy = Policy::parse(LIVE.as_bytes()).expect("the shipped rules are valid");
    let cell = SnapshotCell::new(BucketCors::Enabled(policy));
    // The gateway's own cache, as configured by default (these rules are answered without it).
    let cache = PreflightCache::new(&PreflightCacheConfig::default());
    let ids = RequestIds::default();
    let agreeing = candidate(true);
    let disagreeing = candidate(false);
    let text_log = access_log(LogFormat::Text);
    let json_log = access_log(LogFormat::Json);
    let client = SocketAddr::from(([10, 0, 0, 7], 51234));

    let mut group = c.benchmark_group(GROUP);
    group.bench_function(BASELINE, |b| {
        b.iter(|| {
            let snapshot = cell.load();
            let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
            black_box(cache.respond(&snapshot, &req, ids.next()))
        })
    });
    for (name, shadow) in [
        ("preflight-shadowed-agreeing", &agreeing),
        ("preflight-shadowed-disagreeing", &disagreeing),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let snapshot = cell.load();
                let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
                let (response, outcome) = cache.respond(&snapshot, &req, ids.next());
                shadow.judge_preflight(
                    &snapshot,
                    &outcome,
                    response.status(),
                    response.headers(),
                    &req,
                    PATH,
                );
                black_box(response)
            })
        });
    }
    for (name, log) in [
        ("preflight-access-log-text", &text_log),
        ("preflight-access-log-json", &json_log),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let started = Instant::now();
                let snapshot = cell.load();
                let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
                let (response, outcome) = cache.respond(&snapshot, &req, ids.next());
                log.write(&AccessEntry {
                    client,
                    method: &Method::OPTIONS,
                    host: Some("assets.example.com"),
                    path: PATH,
                    status: response.status(),
                    bytes: Some(0),
                    elapsed: started.elapsed(),
                    outcome,
                    origin: None,
                    request_id: response.headers().get("x-amz-request-id"),
                });
                black_box(response)
            })
        });
    }
    group.finish();
    let disagreements = disagreeing.disagreements().total();
    assert!(
        disagreements > 0,
        "the disagreeing candidate never disagreed"
    );
    assert_eq!(
        agreeing.disagreements().total(),
        0,
        "the agreeing candidate disagreed"
    );
    text_log.close();
    json_log.close();
}

criterion_group!(benches, bench);

/// Each case's median as a ratio to the baseline, from criterion's estimates of this run.
fn print_ratios() {
    let root = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("criterion"))
        })
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
        .join(GROUP);
    let median = |case: &str| -> Option<f64> {
        let text = std::fs::read_to_string(root.join(case).join("new/estimates.json")).ok()?;
        let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
        estimates["median"]["point_estimate"].as_f64()
    };
    let Some(base) = median(BASELINE) else {
        return;
    };
    println!("\n{:40} {:>12} {:>14}", "case", "median", "vs unshadowed");
    for case in [
        BASELINE,
        "preflight-shadowed-agreeing",
        "preflight-shadowed-disagreeing",
        "preflight-access-log-text",
        "preflight-access-log-json",
    ] {
        if let Some(ns) = median(case) {
            println!(
                "{:40} {:10.1}ns {:13.2}x",
                format!("{GROUP}/{case}"),
                ns,
                ns / base
            );
        }
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
