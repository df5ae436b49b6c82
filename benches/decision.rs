//! What one CORS decision costs: request headers in, every response header out.
//!
//! `scripts/bench-core.sh` runs this and prints each case as a ratio to `preflight/allowed`,
//! measured in the same run (the machine is shared and noisy; ratios travel, nanoseconds don't).

use std::hint::black_box;

use corsgate::cors::{BucketCors, CorsRequest, Decision, Policy, Resource};
use criterion::{Criterion, criterion_group, criterion_main};
use http::header::{ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN};
use http::{HeaderMap, HeaderValue, Method};

fn policy(xml: &str) -> BucketCors {
    BucketCors::Enabled(Policy::parse(xml.as_bytes()).expect("bench rules are valid"))
}

fn preflight(origin: &str, method: &'static str, acrh: Option<String>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ORIGIN, HeaderValue::from_str(origin).expect("ascii"));
    h.insert(
        ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_static(method),
    );
    if let Some(acrh) = acrh {
        h.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_str(&acrh).expect("ascii"),
        );
    }
    h
}

/// Evaluates and renders every header, as the gateway does for an uncached answer (it moves
/// the grant's values into the response).
fn decide(cors: &BucketCors, method: &Method, headers: &HeaderMap) -> usize {
    let req = CorsRequest::new(method, headers, Resource::Object);
    match cors.evaluate(&req) {
        Decision::Preflight(Ok(g)) | Decision::Actual(Some(g)) => g.into_headers().count(),
        Decision::Preflight(Err(d)) => d.status.as_u16() as usize,
        Decision::Actual(None) => 0,
    }
}

fn rule(origin: &str, method: &str, extra: &str) -> String {
    format!(
        "<CORSRule><AllowedOrigin>{origin}</AllowedOrigin><AllowedMethod>{method}</AllowedMethod>{extra}</CORSRule>"
    )
}

fn doc(rules: &[String]) -> String {
    format!("<CORSConfiguration>{}</CORSConfiguration>", rules.concat())
}

fn benches(c: &mut Criterion) {
    let options = Method::OPTIONS;
    let seed = policy(include_str!("fixtures/cors.xml"));
    let app = policy(include_str!("../config/cors-app.xml"));
    let browser_acrh = Some("content-type,x-amz-acl".to_string());

    let allowed = preflight("https://www.example.org", "PUT", browser_acrh.clone());
    c.bench_function("preflight/allowed", |b| {
        b.iter(|| decide(&seed, &options, black_box(&allowed)))
    });
    let rejected = preflight("https://evil.example.net", "PUT", browser_acrh.clone());
    c.bench_function("preflight/rejected", |b| {
        b.iter(|| decide(&app, &options, black_box(&rejected)))
    });

    // 100 rules, only the last one matches: the index must not walk the other 99.
    let mut rules: Vec<String> = (0..99)
        .map(|i| rule(&format!("https://site{i}.example.com"), "PUT", ""))
        .collect();
    rules.push(rule(
        "https://last.example.com",
        "PUT",
        "<AllowedHeader>*</AllowedHeader>",
    ));
    let hundred = policy(&doc(&rules));
    let last = preflight("https://last.example.com", "PUT", browser_acrh.clone());
    c.bench_function("preflight/100-rules-last-matches", |b| {
        b.iter(|| decide(&hundred, &options, black_box(&last)))
    });

    // 99 wildcard rules that do not match, then one that does: the wildcards are indexed by
    // suffix, so this costs a probe per suffix length, not 99 comparisons.
    let mut rules: Vec<String> = (0..99)
        .map(|i| rule(&format!("https://*.tenant{i}.example"), "PUT", ""))
        .collect();
    rules.push(rule(
        "https://*.last.example.com",
        "PUT",
        "<AllowedHeader>*</AllowedHeader>",
    ));
    let wild = policy(&doc(&rules));
    let last = preflight("https://a.last.example.com", "PUT", browser_acrh.clone());
    c.bench_function("preflight/100-wildcard-rules-last-matches", |b| {
        b.iter(|| decide(&wild, &options, black_box(&last)))
    });

    // Exact origins are hashed: 1,000 of them cost what 1 does.
    for n in [1usize, 1000] {
        let origins: String = (0..n)
            .map(|i| format!("<AllowedOrigin>https://o{i}.example.com</AllowedOrigin>"))
            .collect();
        let xml = doc(&[format!(
            "<CORSRule>{origins}<AllowedMethod>PUT</AllowedMethod><AllowedHeader>*</AllowedHeader></CORSRule>"
        )]);
        let many = policy(&xml);
        let hit = preflight(
            &format!("https://o{}.example.com", n - 1),
            "PUT",
            browser_acrh.clone(),
        );
        c.bench_function(&format!("preflight/{n}-exact-origins"), |b| {
            b.iter(|| decide(&many, &options, black_box(&hit)))
        });
    }

    let names: Vec<String> = (0..64).map(|i| format!("x-amz-meta-h{i:02}")).collect();
    let wide = preflight("https://app.example.com", "PUT", Some(names.join(",")));
    c.bench_function("preflight/acrh-64-names", |b| {
        b.iter(|| decide(&app, &options, black_box(&wide)))
    });

    // 400 KB of header names: refused after reading the first 8 KiB, whatever follows.
    let hostile_names: Vec<String> = (0..40_000).map(|i| format!("x-h{i:05}")).collect();
    let hostile = preflight(
        "https://app.example.com",
        "PUT",
        Some(hostile_names.join(",")),
    );
    c.bench_function("preflight/acrh-hostile-400KB", |b| {
        b.iter(|| decide(&app, &options, black_box(&hostile)))
    });

    let get = Method::GET;
    let mut actual = HeaderMap::new();
    actual.insert(ORIGIN, HeaderValue::from_static("https://img.example.com"));
    c.bench_function("actual/decorated", |b| {
        b.iter(|| decide(&app, &get, black_box(&actual)))
    });
}

criterion_group!(decision, benches);
criterion_main!(decision);
