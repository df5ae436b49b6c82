//! Shadow rules: a candidate document beside a route's live one (`shadow_rules = { file = ... }`
//! or `{ bucket = ... }`), to try a change on real traffic before making it.
//!
//! Every request the live rules judge is also judged by the candidate; the candidate never
//! changes an answer. Each disagreement is counted by kind (preflight, actual request) and
//! change:
//! - `newly_allowed`: the live rules refuse (preflight) or grant nothing (actual), the candidate
//!   would grant;
//! - `newly_denied`: the reverse;
//! - `headers_changed`: both grant, with different CORS headers (credentials, methods, exposed
//!   headers, max age), or both refuse a preflight with a different status.
//!
//! A few disagreements (at most [`SAMPLES_PER_SECOND`]) are logged and kept, the last
//! [`SAMPLES_KEPT`], for `GET /-/shadow`. The candidate is loaded, watched, polled and reloaded
//! exactly as live rules are ([`RouteRules`]); a request is not judged by it while it has no
//! rules loaded, nor while the live rules have none.
//!
//! Cost: an agreement costs the candidate's evaluation without its answer (no header is built,
//! nothing is allocated) and a comparison of the two winning rules' prebuilt header values; only
//! a disagreement touches shared counters, and only a sampled one builds anything or takes a lock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use http::header::{HeaderName, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::bucket::FetchClient;
use super::live::Current;
use super::{RouteRules, RulesError, RulesSource};
use crate::config::OriginUrl;
use crate::cors::header::RequestedHeaders;
use crate::cors::{BucketCors, CorsMethod, CorsRequest, Rule};
use crate::gateway::access_log::Outcome;
use crate::gateway::snapshot::Snapshot;

/// Disagreements sampled (logged and kept) per second, at most, per route.
pub const SAMPLES_PER_SECOND: u32 = 10;
/// Sampled disagreements kept for `GET /-/shadow`, per route.
pub const SAMPLES_KEPT: usize = 100;

/// `shadow_rules = { ... }`: the candidate's source, with the same keys as `rules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowSource {
    pub rules: RulesSource,
    pub deny_warnings: bool,
}

/// Which kind of request disagreed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Preflight,
    Actual,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Preflight, Kind::Actual];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Preflight => "preflight",
            Kind::Actual => "actual",
        }
    }
}

/// How the candidate's answer differs from the live one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    NewlyAllowed,
    NewlyDenied,
    HeadersChanged,
}

impl Change {
    pub const ALL: [Change; 3] = [
        Change::NewlyAllowed,
        Change::NewlyDenied,
        Change::HeadersChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Change::NewlyAllowed => "newly_allowed",
            Change::NewlyDenied => "newly_denied",
            Change::HeadersChanged => "headers_changed",
        }
    }
}

/// Disagreement counts of one route at one moment, by kind and change
/// (`corsgate_shadow_disagreements_total{route,kind,change}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disagreements([[u64; 3]; 2]);

impl Disagreements {
    pub fn get(&self, kind: Kind, change: Change) -> u64 {
        self.0[kind as usize][change as usize]
    }

    /// Every (kind, change) pair, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, Change, u64)> + '_ {
        Kind::ALL
            .into_iter()
            .flat_map(move |k| Change::ALL.into_iter().map(move |c| (k, c, self.get(k, c))))
    }

    pub fn total(&self) -> u64 {
        self.iter().map(|(_, _, n)| n).sum()
    }
}

/// What a request was answered, as far as the comparison needs: the winning rule (whose
/// prebuilt header values make the answer) or the refusal's status.
#[derive(Clone, Copy, Debug)]
enum Verdict<'p> {
    Allowed(&'p Rule),
    Denied(StatusCode),
}

/// Spec §3's verdict, in the core's order, without building the answer: the same winner and
/// status as [`BucketCors::preflight`] (a test holds them together), at the cost of the checks
/// alone.
fn preflight_verdict<'p>(cors: &'p BucketCors, req: &CorsRequest<'_>) -> Verdict<'p> {
    let Some(origin) = req.origin else {
        return Verdict::Denied(StatusCode::BAD_REQUEST);
    };
    let BucketCors::Enabled(policy) = cors else {
        return Verdict::Denied(StatusCode::FORBIDDEN);
    };
    let Some(method) = req.acrm.and_then(|m| CorsMethod::parse(m.as_bytes())) else {
        return Verdict::Denied(StatusCode::BAD_REQUEST);
    };
    let Ok(headers) = RequestedHeaders::parse(req.acrh.iter()) else {
        return Verdict::Denied(StatusCode::FORBIDDEN);
    };
    match policy.find(origin.as_bytes(), method, &headers) {
        Some(rule) => Verdict::Allowed(rule),
        None => Verdict::Denied(StatusCode::FORBIDDEN),
    }
}

/// How `candidate` differs from `live`, if it does.
fn change(live: Verdict<'_>, candidate: Verdict<'_>) -> Option<Change> {
    match (live, candidate) {
        (Verdict::Denied(_), Verdict::Allowed(_)) => Some(Change::NewlyAllowed),
        (Verdict::Allowed(_), Verdict::Denied(_)) => Some(Change::NewlyDenied),
        (Verdict::Allowed(a), Verdict::Allowed(b)) => {
            (!same_headers(a, b)).then_some(Change::HeadersChanged)
        }
        (Verdict::Denied(a), Verdict::Denied(b)) => (a != b).then_some(Change::HeadersChanged),
    }
}

/// Whether two rules grant the same headers to the same request: the echoed origin and the
/// requested headers come from the request, everything else from the rule.
fn same_headers(a: &Rule, b: &Rule) -> bool {
    a.allows_any_origin() == b.allows_any_origin()
        && a.allow_methods_value() == b.allow_methods_value()
        && a.expose_headers_value() == b.expose_headers_value()
        && a.max_age_value() == b.max_age_value()
}

/// A route's candidate rules and what they disagreed on.
pub struct ShadowRules {
    /// The route's 1-based index.
    route: usize,
    rules: RouteRules,
    /// By kind, then change.
    counts: [[AtomicU64; 3]; 2],
    samples: Samples,
}

impl ShadowRules {
    /// Loads the candidate as a route's rules are loaded: a file now (an error stops the
    /// start), a bucket by [`ShadowRules::start`].
    pub fn build(
        route: usize,
        source: &ShadowSource,
        origin: &OriginUrl,
        client: &FetchClient,
    ) -> Result<ShadowRules, RulesError> {
        let label = format!("route[{route}] shadow_rules");
        let rules =
            RouteRules::build_checked(&label, &source.rules, source.deny_warnings, origin, client)?;
        Ok(ShadowRules {
            route,
            rules,
            counts: Default::default(),
            samples: Samples::new(),
        })
    }

    /// The route's 1-based index.
    pub fn route(&self) -> usize {
        self.route
    }

    /// The candidate's own source and rules in force (as `GET /-/rules` shows a route's).
    pub fn rules(&self) -> &RouteRules {
        &self.rules
    }

    /// Keeps the candidate current (file watch, `SIGHUP`, bucket polls) until `shutdown` flips.
    pub async fn start(&self, shutdown: watch::Receiver<bool>) {
        self.rules.start(shutdown).await;
    }

    /// Reloads the candidate now (`POST /-/reload`).
    pub async fn reload(&self, why: &str) -> Vec<(Option<String>, Result<bool, RulesError>)> {
        self.rules.reload(why).await
    }

    /// The counts so far.
    pub fn disagreements(&self) -> Disagreements {
        let mut out = Disagreements::default();
        for (k, row) in self.counts.iter().enumerate() {
            for (c, count) in row.iter().enumerate() {
                out.0[k][c] = count.load(Ordering::Relaxed);
            }
        }
        out
    }

    fn candidate(&self, path: &str) -> Option<Current> {
        self.rules.resolve_now(path).ok()?.rules.ok()
    }

    /// Judges a preflight the live rules (`live`) answered with `outcome` and `status` (the
    /// answer's headers are only read for a sample).
    pub fn judge_preflight(
        &self,
        live: &Snapshot,
        outcome: &Outcome,
        status: StatusCode,
        live_headers: &HeaderMap,
        req: &CorsRequest<'_>,
        path: &str,
    ) {
        let live_verdict = match *outcome {
            Outcome::PreflightAllowed { rule, .. } => {
                let Some(rule) = live
                    .cors
                    .policy()
                    .and_then(|p| p.rules().get(rule.wrapping_sub(1)))
                else {
                    return;
                };
                Verdict::Allowed(rule)
            }
            Outcome::PreflightDenied { .. } => Verdict::Denied(status),
            _ => return,
        };
        let Some(candidate) = self.candidate(path) else {
            return;
        };
        let Some(change) = change(live_verdict, preflight_verdict(&candidate.cors, req)) else {
            return;
        };
        self.disagree(Kind::Preflight, change, || Sample {
            live: Answer {
                status: Some(status.as_u16()),
                headers: cors_headers(live_headers.iter().map(|(n, v)| (n.clone(), v.clone()))),
            },
            candidate: Answer::preflight(&candidate.cors, req),
            ..Sample::of(Kind::Preflight, change, req, path)
        });
    }

    /// Judges a request forwarded to the origin, which the live rules (`live`) decorated by
    /// `live_rule` (1-based; `None`: no CORS headers).
    pub fn judge_actual(
        &self,
        live: &Snapshot,
        live_rule: Option<usize>,
        req: &CorsRequest<'_>,
        path: &str,
    ) {
        let Some(candidate) = self.candidate(path) else {
            return;
        };
        let live_rule = live_rule.and_then(|i| live.cors.policy()?.rules().get(i.wrapping_sub(1)));
        let candidate_rule = candidate.cors.actual(req).map(|grant| grant.rule);
        let change = match (live_rule, candidate_rule) {
            (None, None) => return,
            (None, Some(_)) => Change::NewlyAllowed,
            (Some(_), None) => Change::NewlyDenied,
            (Some(a), Some(b)) if same_headers(a, b) => return,
            (Some(_), Some(_)) => Change::HeadersChanged,
        };
        self.disagree(Kind::Actual, change, || Sample {
            live: Answer::actual(&live.cors, req),
            candidate: Answer::actual(&candidate.cors, req),
            ..Sample::of(Kind::Actual, change, req, path)
        });
    }

    fn disagree(&self, kind: Kind, change: Change, sample: impl FnOnce() -> Sample) {
        self.counts[kind as usize][change as usize].fetch_add(1, Ordering::Relaxed);
        if !self.samples.admit() {
            return;
        }
        let sample = sample();
        tracing::info!(
            target: "corsgate::shadow",
            "route[{}]: shadow rules disagree ({}, {}): {}",
            self.route,
            kind.as_str(),
            change.as_str(),
            sample.describe()
        );
        self.samples.keep(sample);
    }

    /// What `GET /-/shadow` shows of this route.
    pub fn view(&self) -> Value {
        let counts = self.disagreements();
        let by_kind = |kind: Kind| {
            let mut row = serde_json::Map::new();
            for change in Change::ALL {
                row.insert(change.as_str().into(), json!(counts.get(kind, change)));
            }
            Value::Object(row)
        };
        let mut view = self.rules.view();
        view["route"] = json!(self.route);
        view["disagreements"] = json!({
            "preflight": by_kind(Kind::Preflight),
            "actual": by_kind(Kind::Actual),
        });
        view["samples"] = Value::Array(self.samples.views());
        view
    }
}

/// One answer of a sampled disagreement: its status (none for a forwarded request: the origin
/// decides it) and its CORS headers.
#[derive(Clone, Debug)]
struct Answer {
    status: Option<u16>,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn preflight(cors: &BucketCors, req: &CorsRequest<'_>) -> Answer {
        match cors.preflight(req) {
            Ok(grant) => Answer {
                status: Some(StatusCode::OK.as_u16()),
                headers: cors_headers(grant.headers()),
            },
            // Spec §3: a refusal carries no CORS header.
            Err(denial) => Answer {
                status: Some(denial.status.as_u16()),
                headers: Vec::new(),
            },
        }
    }

    fn actual(cors: &BucketCors, req: &CorsRequest<'_>) -> Answer {
        Answer {
            status: None,
            headers: cors
                .actual(req)
                .map(|grant| cors_headers(grant.headers()))
                .unwrap_or_default(),
        }
    }

    fn view(&self) -> Value {
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        json!({ "status": self.status, "headers": headers })
    }
}

/// The CORS headers (`Access-Control-*` and `Vary`) among `headers`, as text.
fn cors_headers(headers: impl Iterator<Item = (HeaderName, HeaderValue)>) -> Vec<(String, String)> {
    headers
        .filter(|(n, _)| n.as_str().starts_with("access-control-") || *n == VARY)
        .map(|(n, v)| (n.to_string(), text(&v)))
        .collect()
}

fn text(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// One sampled disagreement.
#[derive(Clone, Debug)]
struct Sample {
    at: SystemTime,
    kind: Kind,
    change: Change,
    method: String,
    origin: Option<String>,
    requested_method: Option<String>,
    requested_headers: Option<String>,
    path: String,
    live: Answer,
    candidate: Answer,
}

impl Sample {
    /// The request's side of a sample; the answers are filled in by the caller.
    fn of(kind: Kind, change: Change, req: &CorsRequest<'_>, path: &str) -> Sample {
        let requested_headers: Vec<String> = req.acrh.iter().map(text).collect();
        Sample {
            at: SystemTime::now(),
            kind,
            change,
            method: req.method.to_string(),
            origin: req.origin.map(text),
            requested_method: req.acrm.map(text),
            requested_headers: (!requested_headers.is_empty()).then(|| requested_headers.join(",")),
            path: path.to_string(),
            live: Answer {
                status: None,
                headers: Vec::new(),
            },
            candidate: Answer {
                status: None,
                headers: Vec::new(),
            },
        }
    }

    fn describe(&self) -> String {
        let status = |a: &Answer| a.status.map_or("-".to_string(), |s| s.to_string());
        format!(
            "{} {} origin={} requested_method={} requested_headers={}: live {} {:?}, candidate {} {:?}",
            self.method,
            self.path,
            self.origin.as_deref().unwrap_or("-"),
            self.requested_method.as_deref().unwrap_or("-"),
            self.requested_headers.as_deref().unwrap_or("-"),
            status(&self.live),
            self.live.headers,
            status(&self.candidate),
            self.candidate.headers,
        )
    }

    fn view(&self) -> Value {
        json!({
            "at": humantime::format_rfc3339_millis(self.at).to_string(),
            "kind": self.kind.as_str(),
            "change": self.change.as_str(),
            "method": self.method,
            "origin": self.origin,
            "requested_method": self.requested_method,
            "requested_headers": self.requested_headers,
            "path": self.path,
            "live": self.live.view(),
            "candidate": self.candidate.view(),
        })
    }
}

/// The last [`SAMPLES_KEPT`] samples, admitted at most [`SAMPLES_PER_SECOND`] per second. The
/// admission is one atomic add, so a candidate that disagrees with every request does not make
/// requests queue on the lock.
struct Samples {
    epoch: Instant,
    /// The current second since `epoch` (high half) and the samples admitted in it (low half).
    window: AtomicU64,
    kept: Mutex<VecDeque<Sample>>,
}

impl Samples {
    fn new() -> Samples {
        Samples {
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            kept: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
        }
    }

    fn admit(&self) -> bool {
        let second = self.epoch.elapsed().as_secs();
        let seen = self.window.fetch_add(1, Ordering::Relaxed);
        if seen >> 32 == second {
            return (seen & u64::from(u32::MAX)) < u64::from(SAMPLES_PER_SECOND);
        }
        // A new second: whoever moves the window to it is its first sample.
        self.window
            .compare_exchange(
                seen.wrapping_add(1),
                (second << 32) | 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    fn keep(&self, sample: Sample) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == SAMPLES_KEPT {
            kept.pop_front();
        }
        kept.push_back(sample);
    }

    /// Oldest first.
    fn views(&self) -> Vec<Value> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().map(Sample::view).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::{Policy, Resource};
    use http::Method;

    const LIVE: &str = r#"<CORSConfiguration>
      <CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>
        <AllowedHeader>x-amz-*</AllowedHeader><ExposeHeader>ETag</ExposeHeader></CORSRule>
      <CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>
    </CORSConfiguration>"#;

    fn cors(xml: &str) -> BucketCors {
        BucketCors::Enabled(Policy::parse(xml.as_bytes()).expect("valid"))
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_verdict_picks_the_cores_winner_and_status() {
        let policies = [
            cors(LIVE),
            BucketCors::NotConfigured,
            BucketCors::NoSuchBucket,
        ];
        let cases: &[&[(&str, &str)]] = &[
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-amz-acl"),
            ],
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
            ],
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "bad header"),
            ],
            &[
                ("origin", "https://b.example"),
                ("access-control-request-method", "GET"),
            ],
            &[
                ("origin", "https://b.example"),
                ("access-control-request-method", "get"),
            ],
            &[("origin", "https://b.example")],
            &[("access-control-request-method", "GET")],
            &[],
        ];
        for cors in &policies {
            for pairs in cases {
                let h = headers(pairs);
                let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
                match (cors.preflight(&req), preflight_verdict(cors, &req)) {
                    (Ok(grant), Verdict::Allowed(rule)) => {
                        assert!(std::ptr::eq(grant.rule, rule), "{pairs:?}")
                    }
                    (Err(denial), Verdict::Denied(status)) => {
                        assert_eq!(denial.status, status, "{pairs:?}")
                    }
                    (core, verdict) => panic!("{pairs:?}: core {core:?}, verdict {verdict:?}"),
                }
            }
        }
    }

    #[test]
    fn changes_are_classified_by_what_the_client_would_see() {
        let live = cors(LIVE);
        let candidate = cors(
            r#"<CORSConfiguration>
              <CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>
                <AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader></CORSRule>
              <CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>60</MaxAgeSeconds></CORSRule>
            </CORSConfiguration>"#,
        );
        let judge = |pairs: &[(&'static str, &'static str)]| {
            let h = headers(pairs);
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            change(
                preflight_verdict(&live, &req),
                preflight_verdict(&candidate, &req),
            )
        };
        // Same rule content, request headers echoed the same way: no change.
        assert_eq!(
            judge(&[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-amz-acl"),
            ]),
            None
        );
        assert_eq!(
            judge(&[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
            ]),
            Some(Change::NewlyAllowed)
        );
        assert_eq!(
            judge(&[
                ("origin", "https://b.example"),
                ("access-control-request-method", "GET"),
            ]),
            Some(Change::HeadersChanged)
        );
        assert_eq!(
            change(
                Verdict::Denied(StatusCode::FORBIDDEN),
                Verdict::Denied(StatusCode::FORBIDDEN)
            ),
            None
        );
        let any = Policy::parse(LIVE.as_bytes()).expect("valid");
        assert_eq!(
            change(
                Verdict::Allowed(&any.rules()[0]),
                Verdict::Denied(StatusCode::FORBIDDEN)
            ),
            Some(Change::NewlyDenied)
        );
    }

    #[test]
    fn samples_are_admitted_at_most_ten_a_second_and_the_last_hundred_kept() {
        let samples = Samples::new();
        let admitted = (0..1000).filter(|_| samples.admit()).count();
        // All in the same second, unless the test straddled a second boundary.
        assert!(
            (SAMPLES_PER_SECOND as usize..=2 * SAMPLES_PER_SECOND as usize).contains(&admitted),
            "{admitted}"
        );
        let h = HeaderMap::new();
        let req = CorsRequest::new(&Method::GET, &h, Resource::Object);
        for i in 0..150 {
            samples.keep(Sample::of(
                Kind::Actual,
                Change::NewlyAllowed,
                &req,
                &format!("/{i}"),
            ));
        }
        let views = samples.views();
        assert_eq!(views.len(), SAMPLES_KEPT);
        assert_eq!(views[0]["path"], "/50");
        assert_eq!(views[SAMPLES_KEPT - 1]["path"], "/149");
    }
}
