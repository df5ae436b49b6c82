//! A preflight answered from the cache against one evaluated afresh, for small and large rule
//! sets. Both produce the complete `Response` the gateway sends (headers, request ID, body), so
//! the difference is what the cache saves per preflight.
//!
//! `cargo bench --bench preflight_cache`

use std::hint::black_box;

use corsgate::config::PreflightCacheConfig;
use corsgate::cors::{BucketCors, CorsRequest, Policy, Resource};
use corsgate::gateway::preflight::PreflightCache;
use corsgate::gateway::request_id::RequestIds;
use corsgate::gateway::snapshot::SnapshotCell;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};

/// `n` rules with wildcard origins that do not match, then the one that does.
fn rules(n: usize) -> String {
    let mut xml = String::from("<CORSConfiguration>");
    for i in 0..n.saturating_sub(1) {
        xml.push_str(&format!(
            "<CORSRule><AllowedOrigin>https://*.tenant{i}.example</AllowedOrigin>\
             <AllowedMethod>PUT</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader></CORSRule>"
        ));
    }
    xml.push_str(
        "<CORSRule><AllowedOrigin>https://*.example.com</AllowedOrigin>\
         <AllowedMethod>PUT</AllowedMethod><AllowedMethod>POST</AllowedMethod>\
         <AllowedHeader>content-type</AllowedHeader><AllowedHeader>x-amz-*</AllowedHeader>\
         <ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule>\
         </CORSConfiguration>",
    );
    xml
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
    let ids = RequestIds::default();
    for n in [1usize, 10, 100] {
        let policy = Policy::parse(rules(n).as_bytes()).expect("bench rules are valid");
        let cell = SnapshotCell::new(BucketCors::Enabled(policy));
        // Cache every policy, even where the gateway would evaluate instead: this bench is what
        // tells where a lookup starts to pay (`preflight::CACHE_FROM_WILDCARDS`).
        let cached = PreflightCache::new(&PreflightCacheConfig::default()).for_every_policy();
        let fresh = PreflightCache::disabled();
        let mut group = c.benchmark_group(format!("preflight/{n}-rules"));
        group.bench_function("fresh", |b| {
            b.iter(|| {
                let snapshot = cell.load();
                let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
                black_box(fresh.respond(&snapshot, &req, ids.next()))
            })
        });
        group.bench_function("cache-hit", |b| {
            b.iter(|| {
                let snapshot = cell.load();
                let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
                black_box(cached.respond(&snapshot, &req, ids.next()))
            })
        });
        // The two halves on their own: the core's evaluation, and the cache's lookup.
        group.bench_function("core-evaluate-only", |b| {
            b.iter(|| {
                let snapshot = cell.load();
                let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
                black_box(snapshot.cors.preflight(&req).is_ok())
            })
        });
        group.bench_function("cache-lookup-only", |b| {
            b.iter(|| {
                let snapshot = cell.load();
                let req = CorsRequest::new(&Method::OPTIONS, &headers, Resource::Object);
                black_box(cached.get(&snapshot, &req).is_some())
            })
        });
        group.finish();
    }
}

/// The worst case: every preflight from a new origin (a flood), so none is ever a hit. With the
/// cache used for every policy, so this is the doorkeeper's cost over `fresh`.
fn flood(c: &mut Criterion) {
    let policy = Policy::parse(rules(1).as_bytes()).expect("bench rules are valid");
    let cell = SnapshotCell::new(BucketCors::Enabled(policy));
    let cache = PreflightCache::new(&PreflightCacheConfig::default()).for_every_policy();
    let ids = RequestIds::default();
    let requests: Vec<HeaderMap> = (0..100_000)
        .map(|i| {
            let mut h = HeaderMap::new();
            let origin = format!("https://u{i}.example.com");
            h.insert(
                "origin",
                HeaderValue::from_str(&origin).expect("valid origin"),
            );
            h.insert(
                "access-control-request-method",
                HeaderValue::from_static("PUT"),
            );
            h
        })
        .collect();
    let mut next = requests.iter().cycle();
    c.bench_function("preflight/1-rules/flood-of-new-origins", |b| {
        b.iter(|| {
            let headers = next.next().expect("cycle never ends");
            let snapshot = cell.load();
            let req = CorsRequest::new(&Method::OPTIONS, headers, Resource::Object);
            black_box(cache.respond(&snapshot, &req, ids.next()))
        })
    });
}

criterion_group!(benches, bench, flood);
criterion_main!(benches);
