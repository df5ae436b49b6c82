//! Preflights (`OPTIONS`): answered here, exactly per spec §3, never forwarded, through a cache
//! of prebuilt answers.
//!
//! The cache key is everything the answer depends on: the snapshot generation (so no entry
//! outlives its rules), the resource type, the `Origin` bytes, the ACRM bytes and the requested
//! header names lower-cased in request order (the core lower-cases them in its answer and
//! matches them case-insensitively, so that normalisation cannot change a byte). An entry lives
//! as long as a browser may cache the answer: the rule's `MaxAgeSeconds`, 5 s when it sets none
//! (the browser default), 5 s for refusals; `MaxAgeSeconds` 0 is not cached at all. The cache is
//! bounded in entries and bytes, so a flood of random origins costs a bounded amount of memory.
//! Requests the core refuses on ACRH bounds alone (too long, not a token) bypass the cache, as do
//! huge origins: caching them would buy nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use moka::Expiry;
use moka::sync::Cache;

use super::access_log::Outcome;
use super::request_id::RequestId;
use super::snapshot::Snapshot;
use super::{Body, empty, full};
use crate::config::PreflightCacheConfig;
use crate::cors::header::RequestedHeaders;
use crate::cors::{CorsRequest, Denial, Grant};

/// A browser's preflight cache time when `Access-Control-Max-Age` is absent (Fetch standard).
const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// How long a refusal is cached.
const DENIAL_TTL: Duration = Duration::from_secs(5);
/// Longest `Origin` worth caching; real ones are far shorter.
const MAX_CACHED_ORIGIN: usize = 1024;
/// Rough per-entry bookkeeping (Arc, HeaderMap, moka's node) counted against `max_bytes`.
const ENTRY_OVERHEAD: usize = 256;
/// Every S3 error body ends with the request ID and this.
const ERROR_TAIL: &str = "</RequestId></Error>";

/// One prebuilt preflight answer, shared by every request it fits.
#[derive(Debug)]
pub struct PreflightAnswer {
    status: StatusCode,
    headers: HeaderMap,
    /// Error bodies up to the request ID, which differs per request; empty on success.
    body_head: Bytes,
    ttl: Duration,
    rule: Option<usize>,
    code: &'static str,
}

impl PreflightAnswer {
    fn new(result: &Result<Grant<'_>, Denial>) -> PreflightAnswer {
        match result {
            Ok(grant) => {
                let mut headers = HeaderMap::with_capacity(8);
                for (name, value) in grant.headers() {
                    headers.append(name, value);
                }
                PreflightAnswer {
                    status: StatusCode::OK,
                    headers,
                    body_head: Bytes::new(),
                    ttl: grant
                        .rule
                        .max_age
                        .map_or(DEFAULT_TTL, |s| Duration::from_secs(s.into())),
                    rule: Some(grant.rule.index),
                    code: "",
                }
            }
            Err(denial) => {
                // Spec §3: no Access-Control-* and no Vary on a refusal.
                let mut headers = HeaderMap::with_capacity(2);
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
                let xml = denial.to_xml("");
                let head = xml
                    .strip_suffix(ERROR_TAIL)
                    .and_then(|h| h.strip_suffix("<RequestId>").map(|_| h))
                    .unwrap_or(&xml);
                PreflightAnswer {
                    status: denial.status,
                    headers,
                    body_head: Bytes::copy_from_slice(head.as_bytes()),
                    ttl: DENIAL_TTL,
                    rule: None,
                    code: denial.code(),
                }
            }
        }
    }

    /// The response, with this request's ID in `x-amz-request-id` and in an error body.
    pub fn render(&self, id: RequestId) -> Response<Body> {
        self.response(self.headers.clone(), id)
    }

    /// Like [`PreflightAnswer::render`], reusing this answer's headers (no copy) when it is not
    /// going to be cached.
    fn into_response(self, id: RequestId) -> Response<Body> {
        let mut answer = self;
        let headers = std::mem::take(&mut answer.headers);
        answer.response(headers, id)
    }

    fn response(&self, mut headers: HeaderMap, id: RequestId) -> Response<Body> {
        let body = if self.body_head.is_empty() {
            empty()
        } else {
            let mut b = BytesMut::with_capacity(self.body_head.len() + 16 + ERROR_TAIL.len());
            b.put_slice(&self.body_head);
            b.put_slice(id.to_string().as_bytes());
            b.put_slice(ERROR_TAIL.as_bytes());
            full(b.freeze())
        };
        headers.insert("x-amz-request-id", id.header_value());
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }

    pub fn outcome(&self, cached: bool) -> Outcome {
        match self.rule {
            Some(rule) => Outcome::PreflightAllowed { rule, cached },
            None => Outcome::PreflightDenied {
                code: self.code,
                cached,
            },
        }
    }

    fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        ENTRY_OVERHEAD + headers + self.body_head.len()
    }
}

/// Cached preflight answers for every route (keys start with the snapshot generation, unique
/// across routes).
#[derive(Clone)]
pub struct PreflightCache {
    entries: Option<Cache<PreflightKey, Arc<PreflightAnswer>>>,
}

struct PerEntryTtl;

impl Expiry<PreflightKey, Arc<PreflightAnswer>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &PreflightKey,
        value: &Arc<PreflightAnswer>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

impl PreflightCache {
    /// Both bounds hold: every entry weighs at least `max_bytes / max_entries`, and the total
    /// weight is capped at `max_bytes` (moka evicts by weight, keeping the frequently used).
    pub fn new(config: &PreflightCacheConfig) -> PreflightCache {
        if config.max_entries == 0 || config.max_bytes == 0 {
            return PreflightCache { entries: None };
        }
        let floor = config.max_bytes.div_ceil(config.max_entries);
        let floor = usize::try_from(floor).unwrap_or(usize::MAX);
        let entries = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |key: &PreflightKey, value: &Arc<PreflightAnswer>| {
                let weight = (key.0.len() + value.weight()).max(floor);
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        PreflightCache {
            entries: Some(entries),
        }
    }

    /// A cache that remembers nothing: every preflight is evaluated afresh.
    pub fn disabled() -> PreflightCache {
        PreflightCache { entries: None }
    }

    /// Entries currently held (approximate: moka applies evictions lazily).
    pub fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Total weight (≈ bytes) currently held.
    pub fn weighted_size(&self) -> u64 {
        self.entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.weighted_size()
        })
    }

    /// Answers a preflight under `snapshot`: from the cache when it can, else from the core.
    pub fn respond(
        &self,
        snapshot: &Snapshot,
        req: &CorsRequest<'_>,
        id: RequestId,
    ) -> (Response<Body>, Outcome) {
        let Some(entries) = &self.entries else {
            return fresh(snapshot, req, id);
        };
        let Some(key) = cache_key(snapshot, req) else {
            return fresh(snapshot, req, id);
        };
        if let Some(answer) = entries.get(&key) {
            return (answer.render(id), answer.outcome(true));
        }
        let answer = PreflightAnswer::new(&snapshot.cors.preflight(req));
        let outcome = answer.outcome(false);
        if answer.ttl.is_zero() {
            return (answer.into_response(id), outcome);
        }
        let answer = Arc::new(answer);
        entries.insert(key, Arc::clone(&answer));
        (answer.render(id), outcome)
    }

    /// The cached answer for this request, if any (no evaluation, no insertion).
    pub fn get(&self, snapshot: &Snapshot, req: &CorsRequest<'_>) -> Option<Arc<PreflightAnswer>> {
        self.entries.as_ref()?.get(&cache_key(snapshot, req)?)
    }
}

fn fresh(snapshot: &Snapshot, req: &CorsRequest<'_>, id: RequestId) -> (Response<Body>, Outcome) {
    let answer = PreflightAnswer::new(&snapshot.cors.preflight(req));
    let outcome = answer.outcome(false);
    (answer.into_response(id), outcome)
}

/// A cache key: everything a preflight answer depends on, encoded in one allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PreflightKey(Box<[u8]>);

/// Everything the answer depends on, in one allocation; `None` for requests not worth caching.
fn cache_key(snapshot: &Snapshot, req: &CorsRequest<'_>) -> Option<PreflightKey> {
    // Without Origin the answer is a fixed 400, cheaper to build than to look up.
    let origin = req.origin?.as_bytes();
    if origin.len() > MAX_CACHED_ORIGIN {
        return None;
    }
    // Refused on ACRH bounds alone: evaluate afresh so the exact refusal is computed.
    let headers = RequestedHeaders::parse(req.acrh.iter()).ok()?;
    let acrm = req.acrm.map(HeaderValue::as_bytes);
    let names = headers.byte_len() + headers.len();
    let mut key =
        Vec::with_capacity(8 + 1 + 4 + origin.len() + 5 + acrm.map_or(0, <[u8]>::len) + names);
    key.extend_from_slice(&snapshot.generation.to_le_bytes());
    key.push(req.resource as u8);
    // Lengths make the encoding unambiguous (an origin may contain any byte).
    key.extend_from_slice(&(origin.len() as u32).to_le_bytes());
    key.extend_from_slice(origin);
    match acrm {
        None => key.push(0),
        Some(m) => {
            key.push(1);
            key.extend_from_slice(&(m.len() as u32).to_le_bytes());
            key.extend_from_slice(m);
        }
    }
    // Names are tokens, which never contain ',': joining is unambiguous.
    headers.write_lower_case(b",", &mut key);
    Some(PreflightKey(key.into_boxed_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::{BucketCors, Policy, Resource};
    use crate::gateway::request_id::RequestIds;
    use crate::gateway::snapshot::SnapshotCell;
    use http::Method;
    use http_body_util::BodyExt;

    const RULES: &str = r#"<CORSConfiguration>
      <CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>
        <AllowedHeader>x-amz-*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule>
      <CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod>
        <MaxAgeSeconds>0</MaxAgeSeconds></CORSRule>
    </CORSConfiguration>"#;

    fn cell() -> SnapshotCell {
        SnapshotCell::new(BucketCors::Enabled(
            Policy::parse(RULES.as_bytes()).expect("valid"),
        ))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    async fn wire(response: Response<Body>) -> (StatusCode, Vec<(String, Vec<u8>)>, Bytes) {
        let (parts, body) = response.into_parts();
        let headers = parts
            .headers
            .iter()
            .filter(|(n, _)| n.as_str() != "x-amz-request-id")
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        let body = body.collect().await.expect("in-memory body").to_bytes();
        (parts.status, headers, body)
    }

    #[tokio::test]
    async fn a_cached_answer_is_byte_identical_to_a_fresh_one() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default());
        let ids = RequestIds::default();
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "X-Amz-Acl, x-amz-meta-a"),
            ],
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
            ],
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PATCH"),
            ],
            &[("origin", "https://a.example")],
            &[("access-control-request-method", "PUT")],
        ];
        for pairs in cases {
            let h = headers(pairs);
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            let snapshot = cell.load();
            let fresh = PreflightCache::disabled().respond(&snapshot, &req, ids.next());
            let first = cache.respond(&snapshot, &req, ids.next());
            let second = cache.respond(&snapshot, &req, ids.next());
            let fresh_status = fresh.0.status();
            let (fresh, first, second) = (
                wire(fresh.0).await,
                wire(first.0).await,
                wire(second.0).await,
            );
            // Bodies differ only by the request ID, which is per request.
            let strip = |b: &Bytes| {
                String::from_utf8_lossy(b)
                    .split("<RequestId>")
                    .next()
                    .map(str::to_string)
            };
            assert_eq!(
                (&fresh.0, &fresh.1, strip(&fresh.2)),
                (&second.0, &second.1, strip(&second.2)),
                "{pairs:?}"
            );
            assert_eq!((&first.0, &first.1), (&second.0, &second.1));
            if fresh_status != StatusCode::OK {
                assert!(String::from_utf8_lossy(&second.2).ends_with("</RequestId></Error>"));
            }
        }
    }

    #[tokio::test]
    async fn an_error_body_carries_this_requests_id() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default());
        let h = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ]);
        let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
        let ids = RequestIds::default();
        for _ in 0..2 {
            let id = ids.next();
            let (response, _) = cache.respond(&cell.load(), &req, id);
            let expected = cell
                .load()
                .cors
                .preflight(&req)
                .expect_err("denied")
                .to_xml(&id.to_string());
            assert_eq!(
                response.headers()["x-amz-request-id"],
                id.to_string().as_str()
            );
            let (_, _, body) = wire(response).await;
            assert_eq!(body, expected.as_bytes());
        }
    }

    #[test]
    fn hits_are_reported_and_max_age_zero_is_never_cached() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default());
        let ids = RequestIds::default();
        let a = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        let b = headers(&[
            ("origin", "https://b.example"),
            ("access-control-request-method", "GET"),
        ]);
        let outcome = |h: &HeaderMap| {
            let req = CorsRequest::new(&Method::OPTIONS, h, Resource::Object);
            cache.respond(&cell.load(), &req, ids.next()).1
        };
        assert_eq!(
            outcome(&a),
            Outcome::PreflightAllowed {
                rule: 1,
                cached: false
            }
        );
        assert_eq!(
            outcome(&a),
            Outcome::PreflightAllowed {
                rule: 1,
                cached: true
            }
        );
        assert_eq!(
            outcome(&b),
            Outcome::PreflightAllowed {
                rule: 2,
                cached: false
            }
        );
        assert_eq!(
            outcome(&b),
            Outcome::PreflightAllowed {
                rule: 2,
                cached: false
            }
        );
    }

    #[test]
    fn new_rules_are_never_answered_from_the_old_generation() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default());
        let ids = RequestIds::default();
        let h = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
        assert!(matches!(
            cache.respond(&cell.load(), &req, ids.next()).1,
            Outcome::PreflightAllowed { .. }
        ));
        cell.install(BucketCors::NotConfigured);
        assert_eq!(
            cache.respond(&cell.load(), &req, ids.next()).1,
            Outcome::PreflightDenied {
                code: "AccessForbidden",
                cached: false
            }
        );
    }

    #[test]
    fn a_flood_of_origins_stays_within_both_bounds() {
        let cell = cell();
        let config = PreflightCacheConfig {
            max_entries: 100,
            max_bytes: 64 * 1024,
        };
        let cache = PreflightCache::new(&config);
        let ids = RequestIds::default();
        for i in 0..5_000 {
            let mut h = HeaderMap::new();
            h.insert(
                "origin",
                HeaderValue::from_str(&format!("https://{i}.example")).expect("valid"),
            );
            h.insert(
                "access-control-request-method",
                HeaderValue::from_static("PUT"),
            );
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            let _ = cache.respond(&cell.load(), &req, ids.next());
        }
        assert!(
            cache.entry_count() <= config.max_entries,
            "{}",
            cache.entry_count()
        );
        assert!(
            cache.weighted_size() <= config.max_bytes,
            "{}",
            cache.weighted_size()
        );
    }
}
