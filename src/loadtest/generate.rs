//! Realistic requests made from a set of rules, each with the answer corsgate's core gives it.
//!
//! Origins instantiate the rules' patterns the way real sites look (`https://*.example.com`
//! becomes `https://cdn.example.com`), refused origins are strangers or near misses of allowed
//! ones (scheme swapped, port added, a suffix appended), methods and header lists are taken from
//! the rules or chosen outside them, and every request names its own object key, because a
//! browser's preflight cache is keyed by URL (docs/cors-semantics.md#browser). ACRH is in browser form: lower-case,
//! sorted, de-duplicated, comma-joined without spaces.
//!
//! The generator only proposes; the core decides. A proposal's kind is what the core answers it,
//! and proposals are drawn until each kind has its share of the pool. All of this happens before
//! the first request is sent, so the load loop does nothing but clone and compare.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method};

use super::expect::Answer;
use super::mix::{Mix, RequestKind};
use crate::cors::header::HeaderPattern;
use crate::cors::origin::OriginPattern;
use crate::cors::{BucketCors, CorsMethod, CorsRequest, Decision, Policy, Resource, Rule};

/// Proposals drawn, per pooled request, before a kind is declared unreachable with these rules.
const ATTEMPTS_PER_REQUEST: usize = 500;

/// One request of the pool and the answer it must get.
#[derive(Clone, Debug)]
pub struct PooledRequest {
    pub kind: RequestKind,
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request headers other than `Host`, which the runner adds per connection.
    pub headers: HeaderMap,
    pub answer: Answer,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenerateError {
    #[error("the rules admit no {0} request, but the mix asks for some")]
    Unreachable(RequestKind),
}

/// What the generator needs to know besides the rules.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub mix: Mix,
    /// Requests in the pool; also the number of distinct object keys.
    pub size: usize,
    /// Prefix of every path, e.g. `/my-bucket` for path-style S3 addressing; may be empty.
    pub base_path: String,
    /// When set, every `get` request asks for this path instead of a generated key (a static
    /// origin then serves every one).
    pub get_path: Option<String>,
    pub seed: u64,
}

/// Draws a pool of `options.size` requests following the mix, shuffled.
pub fn generate(
    policy: &Policy,
    options: &GenerateOptions,
) -> Result<Vec<PooledRequest>, GenerateError> {
    let cors = BucketCors::Enabled(policy.clone());
    let mut proposer = Proposer {
        rng: fastrand::Rng::with_seed(options.seed),
        rules: policy.rules(),
    };
    let counts = options.mix.apportion(options.size);
    let mut pool = Vec::with_capacity(options.size);
    for kind in RequestKind::ALL {
        for _ in 0..counts[kind.index()] {
            let n = pool.len();
            let path = match (&options.get_path, kind) {
                (Some(get_path), RequestKind::Get) => get_path.clone(),
                _ => format!("{}/{}", options.base_path, proposer.object_key(n)),
            };
            let request = (0..ATTEMPTS_PER_REQUEST)
                .find_map(|_| {
                    let (method, headers) = proposer.propose(kind);
                    let req = CorsRequest::new(&method, &headers, Resource::of_key(&path));
                    let decision = cors.evaluate(&req);
                    (classify(&decision) == kind).then(|| PooledRequest {
                        kind,
                        answer: Answer::of(&decision),
                        method: method.clone(),
                        path: path.clone(),
                        headers: headers.clone(),
                    })
                })
                .ok_or(GenerateError::Unreachable(kind))?;
            pool.push(request);
        }
    }
    proposer.rng.shuffle(&mut pool);
    Ok(pool)
}

/// The kind of request a decision answers, whatever the proposal meant to be.
fn classify(decision: &Decision<'_>) -> RequestKind {
    match decision {
        Decision::Preflight(Ok(_)) => RequestKind::PreflightAllowed,
        Decision::Preflight(Err(_)) => RequestKind::PreflightDenied,
        Decision::Actual(_) => RequestKind::Get,
    }
}

/// Subdomains and host names that look like the traffic a bucket gets.
const LABELS: &[&str] = &[
    "www", "app", "cdn", "static", "assets", "img", "media", "admin", "staging", "eu", "us-east",
    "beta",
];
const SITES: &[&str] = &[
    "example.org",
    "shop.example",
    "news.example.net",
    "my-app.dev",
    "photos.example.io",
];
/// Names browsers put in ACRH when scripts set them.
const COMMON_HEADERS: &[&str] = &[
    "content-type",
    "authorization",
    "x-requested-with",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "content-md5",
    "range",
    "cache-control",
    "x-csrf-token",
];
const WILDCARD_WORDS: &[&str] = &["date", "meta-owner", "acl", "content-sha256", "request-id"];
const REFUSED_HEADERS: &[&str] = &[
    "x-forbidden",
    "authorization",
    "x-debug-token",
    "content-type",
    "x-api-key",
];
const KEY_DIRS: &[&str] = &[
    "uploads/2024/06",
    "assets/img",
    "user/avatars",
    "videos/raw",
    "docs/shared",
    "build/static/js",
];
const KEY_EXTS: &[&str] = &["jpg", "png", "webp", "mp4", "pdf", "json", "js", "bin"];

struct Proposer<'p> {
    rng: fastrand::Rng,
    rules: &'p [Rule],
}

impl<'p> Proposer<'p> {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    fn rule(&mut self) -> &'p Rule {
        let rules = self.rules;
        &rules[self.rng.usize(..rules.len())]
    }

    fn object_key(&mut self, n: usize) -> String {
        let dir = self.pick(KEY_DIRS);
        let ext = self.pick(KEY_EXTS);
        format!("{dir}/object-{n:06}.{ext}")
    }

    /// A method and headers meant to be of `kind`; the core has the last word.
    fn propose(&mut self, kind: RequestKind) -> (Method, HeaderMap) {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("corsgate-loadtest/", env!("CARGO_PKG_VERSION"))),
        );
        let rule = self.rule();
        match kind {
            RequestKind::PreflightAllowed => {
                let origin = self.matching_origin(rule);
                let method = *self.pick(&rule.methods);
                let names = self.allowed_headers(rule);
                preflight(&mut headers, Some(origin), method.as_str(), &names);
            }
            RequestKind::PreflightDenied => self.denied(rule, &mut headers),
            RequestKind::Get => {
                // Mostly pages of the allowed sites, some strangers, some same-origin (no Origin).
                let origin = match self.rng.u8(..10) {
                    0..7 => Some(self.matching_origin(rule)),
                    7..9 => Some(self.foreign_origin(rule)),
                    _ => None,
                };
                if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
                    headers.insert(header::ORIGIN, origin);
                }
                return (Method::GET, headers);
            }
        }
        (Method::OPTIONS, headers)
    }

    /// A preflight the rule refuses, one way or another.
    fn denied(&mut self, rule: &Rule, headers: &mut HeaderMap) {
        let allowed_method = self.pick(&rule.methods).as_str();
        match self.rng.u8(..100) {
            0..40 => {
                let origin = self.foreign_origin(rule);
                let names = self.allowed_headers(rule);
                preflight(headers, Some(origin), allowed_method, &names);
            }
            40..65 => {
                let refused: Vec<CorsMethod> = CorsMethod::ALL
                    .into_iter()
                    .filter(|m| !rule.methods.contains(m))
                    .collect();
                let method = if refused.is_empty() {
                    "PATCH"
                } else {
                    self.pick(&refused).as_str()
                };
                let origin = self.matching_origin(rule);
                preflight(headers, Some(origin), method, &[]);
            }
            65..90 => {
                let origin = self.matching_origin(rule);
                let mut names = self.allowed_headers(rule);
                let refused = REFUSED_HEADERS
                    .iter()
                    .find(|h| !rule.headers.iter().any(|p| p.matches(h.as_bytes())));
                // A rule allowing every name can only refuse a name that is not a token.
                names.push(refused.map_or("x-not a token".to_string(), |h| h.to_string()));
                preflight(headers, Some(origin), allowed_method, &names);
            }
            // Not a CORS method at all: S3 answers 400 (docs/cors-semantics.md#preflight-checks, check 4).
            90..97 => {
                let origin = self.matching_origin(rule);
                preflight(headers, Some(origin), "PATCH", &[]);
            }
            // No Origin: 400 (check 1). Browsers never do this; scanners and broken proxies do.
            _ => preflight(headers, None, allowed_method, &[]),
        }
    }

    /// An origin one of the rule's patterns matches.
    fn matching_origin(&mut self, rule: &Rule) -> String {
        match self.pick(&rule.origins).clone() {
            OriginPattern::Exact(origin) => origin.into(),
            OriginPattern::Wildcard { prefix, suffix } => {
                // `http://localhost:*` wants a port, `https://*.example.com` a subdomain.
                let middle = if prefix.ends_with(':') {
                    self.rng.u16(1024..65535).to_string()
                } else {
                    self.pick(LABELS).to_string()
                };
                format!("{prefix}{middle}{suffix}")
            }
            OriginPattern::Any => self.stranger(),
        }
    }

    /// An origin that is probably not allowed: a stranger, or a near miss of an allowed one.
    fn foreign_origin(&mut self, rule: &Rule) -> String {
        let near = self.matching_origin(rule);
        match self.rng.u8(..6) {
            0 => match near.strip_prefix("https://") {
                Some(rest) => format!("http://{rest}"),
                None => format!("https://{}", near.trim_start_matches("http://")),
            },
            1 => format!("{near}:8443"),
            2 => format!("{near}/"),
            3 => format!("{near}.attacker.test"),
            4 => near.to_ascii_uppercase(),
            _ => format!(
                "https://{}.attacker-{}.test",
                self.pick(LABELS),
                self.rng.u16(..1000)
            ),
        }
    }

    fn stranger(&mut self) -> String {
        format!("https://{}.{}", self.pick(LABELS), self.pick(SITES))
    }

    /// Zero to three names the rule allows (none when it allows none).
    fn allowed_headers(&mut self, rule: &Rule) -> Vec<String> {
        if rule.headers.is_empty() {
            return Vec::new();
        }
        let count = match self.rng.u8(..20) {
            0..6 => 0,
            6..13 => 1,
            13..18 => 2,
            _ => 3,
        };
        (0..count)
            .map(|_| match self.pick(&rule.headers).clone() {
                HeaderPattern::Exact(name) => String::from_utf8_lossy(&name).into_owned(),
                HeaderPattern::Wildcard { prefix, suffix } => format!(
                    "{}{}{}",
                    String::from_utf8_lossy(&prefix),
                    self.pick(WILDCARD_WORDS),
                    String::from_utf8_lossy(&suffix)
                ),
                HeaderPattern::Any => self.pick(COMMON_HEADERS).to_string(),
            })
            .collect()
    }
}

/// Sets the preflight headers; ACRH in browser form (lower-case, sorted, unique, `,`-joined).
fn preflight(headers: &mut HeaderMap, origin: Option<String>, method: &str, names: &[String]) {
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        headers.insert(header::ORIGIN, origin);
    }
    headers.insert(
        header::ACCESS_CONTROL_REQUEST_METHOD,
        HeaderValue::from_str(method).expect("method names are header-safe"),
    );
    let mut names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    if !names.is_empty()
        && let Ok(value) = HeaderValue::from_str(&names.join(","))
    {
        headers.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, value);
    }
}

/// The names of the CORS request headers, for reports.
pub fn describe(request: &PooledRequest) -> String {
    let mut out = format!("{} {}", request.method, request.path);
    for name in [
        header::ORIGIN,
        header::ACCESS_CONTROL_REQUEST_METHOD,
        header::ACCESS_CONTROL_REQUEST_HEADERS,
    ] {
        if let Some(v) = request.headers.get(&name) {
            out += &format!(
                " {}: {}",
                HeaderName::as_str(&name),
                v.to_str().unwrap_or("?")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &[u8] = include_bytes!("../../config/cors-app.xml");
    const SEED: &[u8] = include_bytes!("../../benches/fixtures/cors.xml");

    fn options(mix: &str, size: usize) -> GenerateOptions {
        GenerateOptions {
            mix: mix.parse().unwrap(),
            size,
            base_path: String::new(),
            get_path: None,
            seed: 7,
        }
    }

    fn count(pool: &[PooledRequest], kind: RequestKind) -> usize {
        pool.iter().filter(|r| r.kind == kind).count()
    }

    #[test]
    fn the_pool_follows_the_mix_exactly() {
        let policy = Policy::parse(APP).unwrap();
        let pool = generate(
            &policy,
            &options("preflight-allowed=70,preflight-denied=20,get=10", 1000),
        )
        .unwrap();
        assert_eq!(pool.len(), 1000);
        assert_eq!(count(&pool, RequestKind::PreflightAllowed), 700);
        assert_eq!(count(&pool, RequestKind::PreflightDenied), 200);
        assert_eq!(count(&pool, RequestKind::Get), 100);
    }

    #[test]
    fn every_request_gets_the_answer_of_its_kind() {
        let policy = Policy::parse(APP).unwrap();
        for r in generate(
            &policy,
            &options("preflight-allowed=1,preflight-denied=1,get=1", 300),
        )
        .unwrap()
        {
            let ok = match (&r.kind, &r.answer) {
                (RequestKind::PreflightAllowed, Answer::PreflightGrant { .. }) => {
                    r.method == Method::OPTIONS
                }
                (RequestKind::PreflightDenied, Answer::PreflightDenial { .. }) => {
                    r.method == Method::OPTIONS
                }
                (RequestKind::Get, Answer::Actual { .. }) => r.method == Method::GET,
                _ => false,
            };
            assert!(ok, "{r:?}");
        }
    }

    #[test]
    fn keys_are_distinct_and_under_the_base_path() {
        let policy = Policy::parse(APP).unwrap();
        let mut opts = options("preflight-allowed=1", 500);
        opts.base_path = "/bucket".into();
        let pool = generate(&policy, &opts).unwrap();
        let mut paths: Vec<&str> = pool.iter().map(|r| r.path.as_str()).collect();
        assert!(paths.iter().all(|p| p.starts_with("/bucket/")));
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 500);
    }

    #[test]
    fn acrh_is_in_browser_form() {
        let policy = Policy::parse(APP).unwrap();
        let pool = generate(&policy, &options("preflight-allowed=1", 500)).unwrap();
        let mut lists = 0;
        for r in &pool {
            if let Some(v) = r.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                let v = v.to_str().unwrap();
                let names: Vec<&str> = v.split(',').collect();
                let mut sorted = names.clone();
                sorted.sort();
                sorted.dedup();
                assert_eq!(names, sorted, "{v}");
                assert_eq!(v, v.to_ascii_lowercase());
                lists += 1;
            }
        }
        assert!(lists > 100, "header lists should be common: {lists}");
    }

    #[test]
    fn wildcard_origins_become_realistic_subdomains() {
        let policy = Policy::parse(APP).unwrap();
        let pool = generate(&policy, &options("preflight-allowed=1", 300)).unwrap();
        let sub = pool
            .iter()
            .filter_map(|r| r.headers.get(header::ORIGIN))
            .filter(|o| {
                let o = o.to_str().unwrap();
                o.ends_with(".example.com") && o != "https://app.example.com"
            })
            .count();
        assert!(sub > 0);
    }

    #[test]
    fn a_catch_all_rule_is_still_refused_by_method() {
        // benches/fixtures/cors.xml allows every origin and header, but only POST, PUT and DELETE.
        let policy = Policy::parse(SEED).unwrap();
        let pool = generate(&policy, &options("preflight-denied=1", 200)).unwrap();
        assert_eq!(count(&pool, RequestKind::PreflightDenied), 200);
    }

    #[test]
    fn get_path_overrides_generated_keys_for_gets_only() {
        let policy = Policy::parse(APP).unwrap();
        let mut opts = options("preflight-allowed=1,get=1", 100);
        opts.get_path = Some("/1k.bin".into());
        for r in generate(&policy, &opts).unwrap() {
            assert_eq!(r.path == "/1k.bin", r.kind == RequestKind::Get);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_pool() {
        let policy = Policy::parse(APP).unwrap();
        let a = generate(&policy, &options("preflight-allowed=1,get=1", 50)).unwrap();
        let b = generate(&policy, &options("preflight-allowed=1,get=1", 50)).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| describe(x) == describe(y)));
    }
}
