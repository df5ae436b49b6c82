//! Preflights (`OPTIONS`): answered here, exactly per docs/cors-semantics.md#preflight, never forwarded, from prebuilt
//! header templates and, where it pays, through a cache of whole answers.
//!
//! Every answer starts from a per-rule template built when the rules are installed
//! ([`PreflightTemplates`], built with the snapshot): the grant's headers in the core's order, with slots for the values
//! that differ per request (`Access-Control-Allow-Origin` when echoed,
//! `Access-Control-Allow-Headers`, `x-amz-request-id`). So an answer costs one `HeaderMap` clone
//! and a few in-place inserts, whether it is fresh or cached.
//!
//! The cache key is everything the answer depends on: the snapshot generation (so no entry
//! outlives its rules), the resource type, the `Origin` bytes, the ACRM bytes and the requested
//! header names lower-cased in request order (the core lower-cases them in its answer and
//! matches them case-insensitively, so that normalisation cannot change a byte). An entry lives
//! as long as a browser may cache the answer: the rule's `MaxAgeSeconds`, 5 s when it sets none
//! (the browser default), 5 s for refusals; `MaxAgeSeconds` 0 is not cached at all. The cache is
//! bounded in entries and bytes, so a flood of random origins costs a bounded amount of memory.
//!
//! The cache must never cost more than it saves, so it is skipped where it cannot win:
//! - for rules whose evaluation is cheaper than a lookup (measured with
//!   `cargo bench --bench preflight_cache`: a lookup costs about what scanning
//!   [`CACHE_FROM_WILDCARDS`] wildcard origins does; exact origins are one hash-map probe);
//! - for a key seen for the first time: the [`Doorkeeper`] admits a key on its second visit, so
//!   a flood of one-off origins costs a hash and a bit test, never a cache insertion;
//! - for requests refused on ACRH bounds alone (too long, not a token), answers without `Origin`
//!   (a fixed 400), and keys longer than [`MAX_KEY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use moka::Expiry;
use moka::sync::Cache;

use super::access_log::{CacheUse, Outcome};
use super::doorkeeper::Doorkeeper;
use super::request_id::RequestId;
use super::snapshot::Snapshot;
use super::{Body, empty, full};
use crate::config::PreflightCacheConfig;
use crate::cors::header::RequestedHeaders;
use crate::cors::{CorsRequest, Denial, Echo, Grant};
pub use crate::rules::preflight::PreflightTemplates;

/// A browser's preflight cache time when `Access-Control-Max-Age` is absent (Fetch standard).
const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// How long a refusal is cached.
const DENIAL_TTL: Duration = Duration::from_secs(5);
/// Longest cache key; longer ones (huge origins or header lists) are evaluated afresh. Built on
/// the stack, so a lookup allocates nothing.
pub(crate) const MAX_KEY: usize = 512;
/// Wildcard `AllowedOrigin`s from which a cache lookup is cheaper than an evaluation
/// (`cargo bench --bench preflight_cache` compares the two; see `benches/load/README.md`).
pub const CACHE_FROM_WILDCARDS: usize = 32;
/// Rough per-entry bookkeeping (Arc, HeaderMap, moka's node) counted against `max_bytes`.
const ENTRY_OVERHEAD: usize = 256;
/// Every S3 error body ends with the request ID and this.
const ERROR_TAIL: &str = "</RequestId></Error>";
/// S3's request ID header, on every answer.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-amz-request-id");
/// What a slot holds until the request's own value replaces it.
const SLOT: HeaderValue = HeaderValue::from_static("");

/// One prebuilt preflight answer, shared by every request it fits.
#[derive(Debug)]
pub struct PreflightAnswer {
    status: StatusCode,
    /// Ends with the request-ID slot.
    headers: HeaderMap,
    /// Error bodies up to the request ID, which differs per request; empty on success.
    body_head: Bytes,
    ttl: Duration,
    rule: Option<usize>,
    code: &'static str,
}

impl PreflightAnswer {
    fn new(templates: &PreflightTemplates, result: &Result<Grant<'_>, Denial>) -> PreflightAnswer {
        match result {
            Ok(grant) => PreflightAnswer {
                status: StatusCode::OK,
                headers: templates.headers(grant.clone(), None),
                body_head: Bytes::new(),
                ttl: grant
                    .rule
                    .max_age
                    .map_or(DEFAULT_TTL, |s| Duration::from_secs(s.into())),
                rule: Some(grant.rule.index),
                code: "",
            },
            Err(denial) => {
                let xml = denial.to_xml("");
                let head = xml
                    .strip_suffix(ERROR_TAIL)
                    .and_then(|h| h.strip_suffix("<RequestId>").map(|_| h))
                    .unwrap_or(&xml);
                PreflightAnswer {
                    status: denial.status,
                    headers: denial_headers(),
                    body_head: Bytes::copy_from_slice(head.as_bytes()),
                    ttl: DENIAL_TTL,
                    rule: None,
                    code: denial.code(),
                }
            }
        }
    }

    /// The response, with this request's ID in `x-amz-request-id` and in an error body.
    pub(crate) fn render(&self, id: RequestId) -> Response<Body> {
        let body = if self.body_head.is_empty() {
            empty()
        } else {
            let mut b = Vec::with_capacity(self.body_head.len() + 16 + ERROR_TAIL.len());
            b.extend_from_slice(&self.body_head);
            b.extend_from_slice(&id.hex());
            b.extend_from_slice(ERROR_TAIL.as_bytes());
            full(b)
        };
        respond_with(self.status, self.headers.clone(), id, body)
    }

    pub fn outcome(&self, cache: CacheUse) -> Outcome {
        match self.rule {
            Some(rule) => Outcome::PreflightAllowed { rule, cache },
            None => Outcome::PreflightDenied {
                code: self.code,
                cache,
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

/// docs/cors-semantics.md#preflight-errors: no Access-Control-* and no Vary on a refusal.
fn denial_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert(REQUEST_ID, SLOT);
    headers
}

fn respond_with(
    status: StatusCode,
    mut headers: HeaderMap,
    id: RequestId,
    body: Body,
) -> Response<Body> {
    headers.insert(REQUEST_ID, id.header_value());
    response(status, headers, body)
}

fn response(status: StatusCode, headers: HeaderMap, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Cached preflight answers for every route (keys start with the snapshot generation, unique
/// across routes).
#[derive(Clone)]
pub struct PreflightCache {
    entries: Option<Cache<PreflightKey, Arc<PreflightAnswer>>>,
    doorkeeper: Arc<Doorkeeper>,
    /// Rules with fewer wildcard origins than this are evaluated afresh.
    cache_from_wildcards: usize,
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
            return PreflightCache::disabled();
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
            doorkeeper: Arc::default(),
            cache_from_wildcards: CACHE_FROM_WILDCARDS,
        }
    }

    /// A cache that remembers nothing: every preflight is evaluated afresh.
    pub fn disabled() -> PreflightCache {
        PreflightCache {
            entries: None,
            doorkeeper: Arc::default(),
            cache_from_wildcards: usize::MAX,
        }
    }

    /// This cache, used for every policy however cheap its evaluation (for benchmarks and tests
    /// that compare a lookup with an evaluation).
    pub fn for_every_policy(mut self) -> PreflightCache {
        self.cache_from_wildcards = 0;
        self
    }

    /// Entries currently held (approximate: moka applies evictions lazily).
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Total weight (≈ bytes) currently held.
    #[cfg(test)]
    pub(crate) fn weighted_size(&self) -> u64 {
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
            return fresh(snapshot, req, id, CacheUse::Skip);
        };
        if snapshot.preflight.wildcard_origins() < self.cache_from_wildcards {
            return fresh(snapshot, req, id, CacheUse::Skip);
        }
        let Some(key) = cache_key(snapshot, req) else {
            return fresh(snapshot, req, id, CacheUse::Skip);
        };
        // A first visit is only noted: not in the cache, so a miss.
        if !self.doorkeeper.seen_before(&key) {
            return fresh(snapshot, req, id, CacheUse::Miss);
        }
        if let Some(answer) = entries.get(key.as_slice()) {
            crate::metrics::preflight_cache_hit();
            return (answer.render(id), answer.outcome(CacheUse::Hit));
        }
        crate::metrics::preflight_cache_miss();
        // An entry outlives its request, so it echoes copies: a slice of an HTTP/2 request's
        // value would keep the connection's buffer alive as long as the entry (`cors::echo`).
        let owned = CorsRequest {
            echo: Echo::Copied,
            ..*req
        };
        let answer = PreflightAnswer::new(&snapshot.preflight, &snapshot.cors.preflight(&owned));
        let outcome = answer.outcome(CacheUse::Miss);
        if answer.ttl.is_zero() {
            return (answer.render(id), outcome);
        }
        let answer = Arc::new(answer);
        entries.insert(PreflightKey(key.as_slice().into()), Arc::clone(&answer));
        (answer.render(id), outcome)
    }

    /// The cached answer for this request, if any (no evaluation, no insertion).
    pub fn get(&self, snapshot: &Snapshot, req: &CorsRequest<'_>) -> Option<Arc<PreflightAnswer>> {
        self.entries
            .as_ref()?
            .get(cache_key(snapshot, req)?.as_slice())
    }
}

/// Evaluates afresh and answers straight from the templates: no intermediate answer, no copy.
fn fresh(
    snapshot: &Snapshot,
    req: &CorsRequest<'_>,
    id: RequestId,
    cache: CacheUse,
) -> (Response<Body>, Outcome) {
    match snapshot.cors.preflight(req) {
        Ok(grant) => {
            let outcome = Outcome::PreflightAllowed {
                rule: grant.rule.index,
                cache,
            };
            let headers = snapshot.preflight.headers(grant, Some(id.header_value()));
            (response(StatusCode::OK, headers, empty()), outcome)
        }
        Err(denial) => {
            let body = full(denial.to_xml(&id.to_string()));
            let outcome = Outcome::PreflightDenied {
                code: denial.code(),
                cache,
            };
            (
                respond_with(denial.status, denial_headers(), id, body),
                outcome,
            )
        }
    }
}

/// A cache key: everything a preflight answer depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PreflightKey(Box<[u8]>);

/// Lookups borrow a key built on the stack; `Box<[u8]>` hashes and compares as `[u8]`, so the
/// two agree.
impl std::borrow::Borrow<[u8]> for PreflightKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

type KeyBuf = ArrayVec<u8, MAX_KEY>;

/// Everything the answer depends on, on the stack; `None` for requests not worth caching.
fn cache_key(snapshot: &Snapshot, req: &CorsRequest<'_>) -> Option<KeyBuf> {
    // Without Origin the answer is a fixed 400, cheaper to build than to look up.
    let origin = req.origin?.as_bytes();
    // Refused on ACRH bounds alone: evaluate afresh so the exact refusal is computed.
    let headers = RequestedHeaders::parse(req.acrh.iter()).ok()?;
    let mut key = KeyBuf::new();
    key.try_extend_from_slice(&snapshot.generation.to_le_bytes())
        .ok()?;
    key.try_push(req.resource as u8).ok()?;
    // Lengths make the encoding unambiguous (an origin may contain any byte).
    key.try_extend_from_slice(&(origin.len() as u32).to_le_bytes())
        .ok()?;
    key.try_extend_from_slice(origin).ok()?;
    match req.acrm.map(HeaderValue::as_bytes) {
        None => key.try_push(0).ok()?,
        Some(m) => {
            key.try_push(1).ok()?;
            key.try_extend_from_slice(&(m.len() as u32).to_le_bytes())
                .ok()?;
            key.try_extend_from_slice(m).ok()?;
        }
    }
    // Names are tokens, which never contain ',': joining is unambiguous.
    let start = key.len();
    let mut fits = true;
    headers.for_each_name(|name| {
        if key.len() > start {
            fits &= key.try_push(b',').is_ok();
        }
        fits &= key.try_extend_from_slice(name).is_ok();
    });
    key[start..].make_ascii_lowercase();
    fits.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::{BucketCors, Policy, Resource};
    use crate::gateway::request_id::RequestIds;
    use crate::gateway::snapshot::SnapshotCell;
    use http::Method;
    use http::header::{ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN};
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
        let cache = PreflightCache::new(&PreflightCacheConfig::default()).for_every_policy();
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

    #[test]
    fn a_cached_answer_holds_no_bytes_of_the_request_it_was_made_for() {
        // An HTTP/2 request's values are slices of its connection's buffers (h2's decoder
        // splits them off); an entry holding one would keep a whole buffer alive for the
        // entry's lifetime, far beyond the bytes the cache counts.
        let buffer = Bytes::from(
            "https://a.example|x-amz-acl, x-amz-meta-a|and the rest of a connection's read buffer",
        );
        let range = buffer.as_ptr_range();
        let slice = |from: usize, to: usize| {
            HeaderValue::from_maybe_shared(buffer.slice(from..to)).expect("valid")
        };
        let mut h = HeaderMap::new();
        h.insert("origin", slice(0, 17));
        h.insert(
            "access-control-request-method",
            HeaderValue::from_static("PUT"),
        );
        h.insert("access-control-request-headers", slice(18, 41));
        assert_eq!(
            h["access-control-request-headers"],
            "x-amz-acl, x-amz-meta-a"
        );
        let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
        assert_eq!(
            req.echo,
            Echo::Shared,
            "as the server passes HTTP/2 requests"
        );
        let cache = PreflightCache::new(&PreflightCacheConfig::default()).for_every_policy();
        let cell = cell();
        let ids = RequestIds::default();
        for _ in 0..2 {
            let (response, _) = cache.respond(&cell.load(), &req, ids.next());
            assert_eq!(response.status(), StatusCode::OK);
        }
        let answer = cache
            .get(&cell.load(), &req)
            .expect("cached on its second visit");
        for name in [ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_ALLOW_HEADERS] {
            let value = &answer.headers[&name];
            assert!(!value.is_empty(), "{name} echoed");
            assert!(
                !range.contains(&value.as_bytes().as_ptr()),
                "{name} points into the request's buffer"
            );
        }
    }

    #[tokio::test]
    async fn an_error_body_carries_this_requests_id() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default()).for_every_policy();
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
    fn a_key_is_cached_on_its_second_visit_and_max_age_zero_never() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default()).for_every_policy();
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
        // First visit: the doorkeeper's; second: cached; third: a hit.
        for cache in [CacheUse::Miss, CacheUse::Miss, CacheUse::Hit, CacheUse::Hit] {
            assert_eq!(outcome(&a), Outcome::PreflightAllowed { rule: 1, cache });
        }
        // MaxAgeSeconds 0: looked up every time, never stored.
        for _ in 0..3 {
            assert_eq!(
                outcome(&b),
                Outcome::PreflightAllowed {
                    rule: 2,
                    cache: CacheUse::Miss
                }
            );
        }
    }

    #[test]
    fn new_rules_are_never_answered_from_the_old_generation() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default()).for_every_policy();
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
                cache: CacheUse::Miss
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
        let cache = PreflightCache::new(&config).for_every_policy();
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

    #[test]
    fn templates_give_the_cores_headers_in_the_cores_order() {
        let xml = r#"<CORSConfiguration>
          <CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedHeader>x-*</AllowedHeader></CORSRule>
          <CORSRule><AllowedOrigin>https://*.example</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>
            <AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><ExposeHeader>x-amz-id-2</ExposeHeader>
            <MaxAgeSeconds>60</MaxAgeSeconds></CORSRule>
        </CORSConfiguration>"#;
        let cors = BucketCors::Enabled(Policy::parse(xml.as_bytes()).expect("valid"));
        let templates = PreflightTemplates::new(&cors);
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("origin", "https://x.example"),
                ("access-control-request-method", "GET"),
            ],
            &[
                ("origin", "https://x.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "X-A, x-b"),
            ],
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
            ],
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "Content-Type"),
            ],
        ];
        for pairs in cases {
            let h = headers(pairs);
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            let grant = cors.preflight(&req).expect("allowed");
            let mut expected: Vec<(String, Vec<u8>)> = grant
                .headers()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            let got = |id: Option<RequestId>| -> Vec<(String, Vec<u8>)> {
                templates
                    .headers(grant.clone(), id.map(RequestId::header_value))
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                    .collect()
            };
            expected.push(("x-amz-request-id".into(), Vec::new()));
            assert_eq!(got(None), expected, "{pairs:?}");
            let id = RequestIds::default().next();
            if let Some(last) = expected.last_mut() {
                last.1 = id.hex().to_vec();
            }
            assert_eq!(got(Some(id)), expected, "{pairs:?}");
        }
    }

    #[test]
    fn cheap_rules_are_evaluated_and_never_cached() {
        let cell = cell();
        let cache = PreflightCache::new(&PreflightCacheConfig::default());
        let ids = RequestIds::default();
        let h = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ]);
        let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
        for _ in 0..3 {
            assert_eq!(
                cache.respond(&cell.load(), &req, ids.next()).1,
                Outcome::PreflightAllowed {
                    rule: 1,
                    cache: CacheUse::Skip
                }
            );
        }
        assert_eq!(cache.entry_count(), 0);
    }
}
