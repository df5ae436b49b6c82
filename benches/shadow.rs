//! What shadow rules and the access log add to a preflight: the gateway's preflight answer
//! (cache lookup or evaluation, headers, request ID) alone, then with a candidate document
//! judging the same request, then with an access-log line written (to `/dev/null`: the request
//! thread's cost, formatting and handing over, is what is measured; the writer thread's `write`
//! is not on the request path).
//!
//! The candidates: `agreeing` changes a rule the request does not reach, `disagreeing` changes
//! the winning rule's `MaxAgeSeconds` (every request a `headers_changed`), both answered from
//! the two documents' alignment; `evaluated` narrows what the winning rule matches (one allowed
//! header fewer), so each request that rule grants is checked against the header it lost;
//! `inserted` puts a new rule in front of every other, so that nothing lines up and only an
//! evaluation of the candidate tells (the worst case: a full evaluation per request, without
//! building the answer). The `-unique` cases send a request never seen before every time.
//!
//! `cargo bench --bench shadow` prints every case as a ratio to the unshadowed preflight of the
//! same requests, measured in the same run (the machine is shared and noisy; ratios travel,
//! nanoseconds don't).

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

/// The live document with `from` replaced by `to`, as a candidate.
fn candidate(name: &str, from: &str, to: &str) -> ShadowRules {
    let xml = LIVE.replacen(from, to, 1);
    assert_ne!(
        xml, LIVE,
        "the bench's candidate must differ from the live rules"
    );
    let path = std::env::temp_dir().join(format!(
        "corsgate-bench-shadow-{}-{name}.xml",
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
    let agreeing = candidate("agreeing", "http://localhost:3000", "http://localhost:3001");
    let disagreeing = candidate(
        "disagreeing",
        "<MaxAgeSeconds>3600</MaxAgeSeconds>",
        "<MaxAgeSeconds>7000</MaxAgeSeconds>",
    );
    let evaluated = candidate(
        "evaluated",
        "<AllowedHeader>content-md5</AllowedHeader>",
        "",
    );
    let inserted = candidate(
        "inserted",
        "<CORSRule>",
        "<CORSRule><AllowedOrigin>https://new.example.com</AllowedOrigin>\
         <AllowedMethod>GET</AllowedMethod></CORSRule><CORSRule>",
    );
    // The gateway's answer to a preflight with `headers`, judged by `shadow` if there is one.
    let preflight = |headers: &HeaderMap, shadow: Option<&ShadowRules>| {
        let snapshot = cell.load();
        let req = CorsRequest::new(&Method::OPTIONS, headers, Resource::Object);
        let (response, outcome) = cache.respond(&snapshot, &req, ids.next());
        if let Some(shadow) = shadow {
            shadow.judge_preflight(
                &snapshot,
                &outcome,
                response.status(),
                response.headers(),
                &req,
                PATH,
            );
        }
        response
    };
    // Each candidate does what its name says, before anything is measured.
    for (shadow, disagreements) in [
        (&agreeing, 0),
        (&disagreeing, 1),
        (&evaluated, 0),
        (&inserted, 0),
    ] {
        preflight(&headers, Some(shadow));
        assert_eq!(shadow.disagreements().total(), disagreements);
    }
    let text_log = access_log(LogFormat::Text);
    let json_log = access_log(LogFormat::Json);
    let client = SocketAddr::from(([10, 0, 0, 7], 51234));

    let mut group = c.benchmark_group(GROUP);
    group.bench_function(BASELINE, |b| {
        b.iter(|| black_box(preflight(&headers, None)))
    });
    for (name, shadow) in [
        ("preflight-shadowed-agreeing", &agreeing),
        ("preflight-shadowed-disagreeing", &disagreeing),
        ("preflight-shadowed-evaluated", &evaluated),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(preflight(&headers, Some(shadow))))
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
    // Every request new (another requested header each time), so that the candidate's
    // per-thread memory cannot answer: with `inserted`, a full evaluation each.
    let unique: Vec<HeaderMap> = (0..100_000)
        .map(|i| {
            let mut h = headers.clone();
            let acrh = format!("content-type,x-amz-meta-h{i}");
            h.insert(
                "access-control-request-headers",
                HeaderValue::from_str(&acrh).expect("a valid header value"),
            );
            h
        })
        .collect();
    for (name, shadow) in [
        ("preflight-unshadowed-unique", None),
        ("preflight-shadowed-evaluated-unique", Some(&evaluated)),
        ("preflight-shadowed-inserted-unique", Some(&inserted)),
    ] {
        let mut next = unique.iter().cycle();
        group.bench_function(name, |b| {
            b.iter(|| {
                let headers = next.next().expect("cycle never ends");
                black_box(preflight(headers, shadow))
            })
        });
    }
    group.finish();
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
    const UNIQUE: &str = "preflight-unshadowed-unique";
    println!("\n{:48} {:>12} {:>16}", "case", "median", "vs its baseline");
    // Each case against the unshadowed preflight of the same requests.
    for (case, baseline) in [
        (BASELINE, BASELINE),
        ("preflight-shadowed-agreeing", BASELINE),
        ("preflight-shadowed-disagreeing", BASELINE),
        ("preflight-shadowed-evaluated", BASELINE),
        (UNIQUE, UNIQUE),
        ("preflight-shadowed-evaluated-unique", UNIQUE),
        ("preflight-shadowed-inserted-unique", UNIQUE),
        ("preflight-access-log-text", BASELINE),
        ("preflight-access-log-json", BASELINE),
    ] {
        if let (Some(ns), Some(base)) = (median(case), median(baseline)) {
            println!(
                "{:48} {:10.1}ns {:15.2}x",
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
