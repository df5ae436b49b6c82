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
//! Cost: a candidate is usually the live document with a few rules changed. Once per pair of
//! generations the two documents are lined up rule by rule ([`Alignment`]), which tells for most
//! requests what the candidate would answer without evaluating it: a request the live rules
//! granted by a rule that lines up is granted by the candidate's rule of the same position, and
//! whether the answer changes is known. Any other request is evaluated by the candidate, without
//! building its answer (no header is built, nothing is allocated), and the two winning rules'
//! prebuilt header values are compared; a preflight's outcome is then remembered per thread for
//! the same request under the same two generations ([`Recent`]), since browsers send the same
//! preflight again and again. Only a disagreement touches shared counters, and only a sampled
//! one builds anything or takes a lock.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwapOption, Guard};
use arrayvec::ArrayVec;
use http::header::{HeaderName, VARY};
use http::{HeaderMap, HeaderValue, StatusCode};
use prometheus_client::metrics::counter::Counter;
use serde_json::{Value, json};

use super::bucket::FetchClient;
use super::live::Current;
use super::snapshot::Snapshot;
use super::{RouteRules, RulesError};
use crate::config::OriginUrl;
pub use crate::config::ShadowSource;
use crate::cors::header::{HeaderPattern, RequestedHeaders, line_names};
use crate::cors::outcome::Outcome;
use crate::cors::{BucketCors, CorsMethod, CorsRequest, Rule};
use crate::metrics;
use crate::watch::Scope;

/// Disagreements sampled (logged and kept) per second, at most, per route.
pub(crate) const SAMPLES_PER_SECOND: u32 = 10;
/// Sampled disagreements kept for `GET /-/shadow`, per route.
pub(crate) const SAMPLES_KEPT: usize = 100;

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

/// The preflight verdict (docs/cors-semantics.md#preflight-checks), in the core's order, without building the answer: the same winner and
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

/// Whether none of the headers `req` asks for is matched by one of `lost`. Asked only of
/// requests the live rules granted, whose ACRH is therefore well-formed: its names are read
/// without validating them again.
fn none_requested(lost: &[HeaderPattern], req: &CorsRequest<'_>) -> bool {
    req.acrh
        .iter()
        .all(|line| line_names(line.as_bytes()).all(|name| !lost.iter().any(|p| p.matches(name))))
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

/// Whether `wider` matches every request `narrower` matches (origin, method, requested
/// headers). Sufficient, not necessary: each of `narrower`'s patterns must be covered by one of
/// `wider`'s, as the lint for unreachable rules checks.
fn covers(wider: &Rule, narrower: &Rule) -> bool {
    covers_origins_and_methods(wider, narrower)
        && narrower
            .headers
            .iter()
            .all(|n| wider.headers.iter().any(|w| w.covers(n)))
}

/// [`covers`] without the requested headers: what an actual request is matched on.
fn covers_origins_and_methods(wider: &Rule, narrower: &Rule) -> bool {
    narrower.method_set.is_subset(wider.method_set)
        && narrower
            .origins
            .iter()
            .all(|n| wider.origins.iter().any(|w| w.covers(n)))
}

/// One live snapshot's rules lined up with one candidate snapshot's, position by position.
///
/// S3's winner is the first rule that matches. So a request the live rules granted by rule `i`
/// is granted by the candidate's rule `i` whenever each candidate rule before `i` matches no
/// more than the live rule in its place (it cannot match: the live one did not) and the
/// candidate's rule `i` matches at least what the live one does (it matches). When that rule
/// matches at least the live one's origins and methods but not all its requested headers (a
/// header taken out), whether it wins is one check of the request's headers against it, not an
/// evaluation. Likewise, if no candidate rule matches more than the live rule in its place,
/// whatever the live rules refuse the candidate refuses the same way. Changed rules only cost
/// an evaluation for the requests they might change.
#[derive(Debug)]
struct Alignment {
    live: u64,
    candidate: u64,
    /// By live rule: what the candidate's rule in the same place does with the requests the
    /// live one grants.
    granted: Box<[Granted]>,
    /// Whatever the live rules refuse, the candidate refuses the same way (both enabled).
    same_refusals: bool,
}

/// What the candidate's rule in a live rule's place does with the requests the live one grants
/// (`same`: the two grant the same headers).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Granted {
    /// It wins every one of them.
    Wins { same: bool },
    /// It matches their origins and methods, and every requested header the live rule allows
    /// except, perhaps, those of the `lost` patterns (the live rule's patterns no candidate
    /// pattern covers): it wins those that request none of these; the others need an
    /// evaluation.
    WinsUnlessLost {
        same: bool,
        lost: Box<[HeaderPattern]>,
    },
    /// Only an evaluation tells.
    Unknown,
}

impl Alignment {
    fn new(live: &Snapshot, candidate: &Snapshot) -> Alignment {
        fn rules(s: &Snapshot) -> &[Rule] {
            s.cors.policy().map_or(&[], |p| p.rules())
        }
        let (a, b) = (rules(live), rules(candidate));
        // Every candidate rule so far matches no more than the live rule in its place.
        let mut narrower_so_far = true;
        let granted: Box<[Granted]> = a
            .iter()
            .enumerate()
            .map(|(i, live_rule)| {
                let candidate_rule = b.get(i);
                let known = match candidate_rule {
                    Some(c) if narrower_so_far && covers(c, live_rule) => Granted::Wins {
                        same: same_headers(live_rule, c),
                    },
                    Some(c) if narrower_so_far && covers_origins_and_methods(c, live_rule) => {
                        Granted::WinsUnlessLost {
                            same: same_headers(live_rule, c),
                            lost: live_rule
                                .headers
                                .iter()
                                .filter(|l| !c.headers.iter().any(|p| p.covers(l)))
                                .cloned()
                                .collect(),
                        }
                    }
                    _ => Granted::Unknown,
                };
                // A missing candidate rule matches nothing.
                narrower_so_far &= candidate_rule.is_none_or(|c| covers(live_rule, c));
                known
            })
            .collect();
        let enabled = |s: &Snapshot| matches!(s.cors, BucketCors::Enabled(_));
        Alignment {
            live: live.generation,
            candidate: candidate.generation,
            same_refusals: enabled(live)
                && enabled(candidate)
                && narrower_so_far
                && b.len() <= a.len(),
            granted,
        }
    }

    /// The change the candidate makes to a request the live rules granted by `rule` (1-based)
    /// or refused (`None`), when the alignment tells: `Some(None)` for no change.
    /// `none_requested` says whether the request asks for no header these patterns match; it
    /// is asked only when that alone decides.
    fn known(
        &self,
        rule: Option<usize>,
        none_requested: impl FnOnce(&[HeaderPattern]) -> bool,
    ) -> Option<Option<Change>> {
        match rule {
            Some(rule) => {
                let same = match self.granted.get(rule.checked_sub(1)?)? {
                    Granted::Wins { same } => *same,
                    Granted::WinsUnlessLost { same, lost } if none_requested(lost) => *same,
                    Granted::WinsUnlessLost { .. } | Granted::Unknown => return None,
                };
                Some((!same).then_some(Change::HeadersChanged))
            }
            None => self.same_refusals.then_some(None),
        }
    }
}

/// A route's candidate rules and what they disagreed on.
pub struct ShadowRules {
    /// The route's 1-based index.
    route: usize,
    rules: RouteRules,
    /// The latest live and candidate generations lined up.
    alignment: ArcSwapOption<Alignment>,
    /// By kind, then change: since this candidate was built (`GET /-/shadow`).
    counts: [[AtomicU64; 3]; 2],
    /// The same, as `corsgate_shadow_disagreements_total` (which outlives reloads).
    counters: [[Counter; 3]; 2],
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
            alignment: ArcSwapOption::empty(),
            counts: Default::default(),
            counters: Kind::ALL.map(|kind| {
                Change::ALL.map(|change| {
                    metrics::shadow_disagreements(route, kind.as_str(), change.as_str())
                })
            }),
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

    /// Keeps the candidate current (file watch, `SIGHUP`, bucket polls) until `scope` stops.
    pub async fn start(&self, scope: &Scope) {
        self.rules.start(scope).await;
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

    /// The candidate's rules in force (a candidate is a file or a bucket: never per-bucket).
    fn candidate(&self) -> Option<Current> {
        match &self.rules {
            RouteRules::Fixed(live) => live.current(),
            RouteRules::File(file) => file.live().current(),
            RouteRules::Bucket(bucket) => bucket.live().current(),
            RouteRules::Endpoint(_) => None,
        }
    }

    /// `live` and `candidate` lined up: kept for the newest live generation seen (a reload makes
    /// a new one); a request still holding an older snapshot, or one of an S3 endpoint's other
    /// buckets, gets `None` and is evaluated.
    fn alignment(
        &self,
        live: &Snapshot,
        candidate: &Snapshot,
    ) -> Option<Guard<Option<Arc<Alignment>>>> {
        let fits = |a: &Alignment| a.live == live.generation && a.candidate == candidate.generation;
        let cached = self.alignment.load();
        if cached.as_deref().is_some_and(fits) {
            return Some(cached);
        }
        let newer = cached
            .as_deref()
            .is_none_or(|a| a.candidate != candidate.generation || a.live < live.generation);
        if !newer {
            return None;
        }
        self.alignment
            .store(Some(Arc::new(Alignment::new(live, candidate))));
        let cached = self.alignment.load();
        cached.as_deref().is_some_and(fits).then_some(cached)
    }

    /// How the candidate's answer differs from the live one, for a request the live rules
    /// granted by `live_rule` (1-based) or refused: from the alignment when it tells, else
    /// from `evaluate`, the candidate's own verdict.
    fn change(
        &self,
        live: &Snapshot,
        candidate: &Snapshot,
        req: &CorsRequest<'_>,
        live_rule: Option<usize>,
        evaluate: impl FnOnce() -> Option<Change>,
    ) -> Option<Change> {
        if let Some(alignment) = self.alignment(live, candidate)
            && let Some(known) = alignment
                .as_deref()
                .and_then(|a| a.known(live_rule, |lost| none_requested(lost, req)))
        {
            return known;
        }
        evaluate()
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
        let (live_rule, live_verdict) = match *outcome {
            Outcome::PreflightAllowed { rule: index, .. } => {
                let Some(rule) = live
                    .cors
                    .policy()
                    .and_then(|p| p.rules().get(index.wrapping_sub(1)))
                else {
                    return;
                };
                (Some(index), Verdict::Allowed(rule))
            }
            Outcome::PreflightDenied { .. } => (None, Verdict::Denied(status)),
            _ => return,
        };
        let Some(candidate) = self.candidate() else {
            return;
        };
        let Some(change) = self.change(live, &candidate, req, live_rule, || {
            Recent::remembered(live.generation, candidate.generation, req, || {
                change(live_verdict, preflight_verdict(&candidate.cors, req))
            })
        }) else {
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
    pub(crate) fn judge_actual(
        &self,
        live: &Snapshot,
        live_rule: Option<usize>,
        req: &CorsRequest<'_>,
        path: &str,
    ) {
        let Some(candidate) = self.candidate() else {
            return;
        };
        let evaluate = || {
            let live_rule =
                live_rule.and_then(|i| live.cors.policy()?.rules().get(i.wrapping_sub(1)));
            match (
                live_rule,
                candidate.cors.actual(req).map(|grant| grant.rule),
            ) {
                (None, None) => None,
                (None, Some(_)) => Some(Change::NewlyAllowed),
                (Some(_), None) => Some(Change::NewlyDenied),
                (Some(a), Some(b)) if same_headers(a, b) => None,
                (Some(_), Some(_)) => Some(Change::HeadersChanged),
            }
        };
        let Some(change) = self.change(live, &candidate, req, live_rule, evaluate) else {
            return;
        };
        self.disagree(Kind::Actual, change, || Sample {
            live: Answer::actual(&live.cors, req),
            candidate: Answer::actual(&candidate.cors, req),
            ..Sample::of(Kind::Actual, change, req, path)
        });
    }

    fn disagree(&self, kind: Kind, change: Change, sample: impl FnOnce() -> Sample) {
        self.counts[kind as usize][change as usize].fetch_add(1, Ordering::Relaxed);
        if metrics::counting() {
            self.counters[kind as usize][change as usize].inc();
        }
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

/// Requests whose candidate outcome [`Recent`] remembers, per thread.
const RECENT_SLOTS: usize = 256;
/// Misses in a row after which lookups are only made now and then, and how often then.
const RECENT_MISSES: u32 = 64;
const RECENT_PROBE: u32 = 16;
/// Longest request key remembered (origin, ACRM and ACRH with their lengths); longer ones are
/// evaluated every time.
const RECENT_KEY: usize = 192;

/// The candidate's outcome for recent preflights the alignment could not tell, per thread: no
/// lock, no atomic, no allocation after the first use. A slot holds one request under one pair
/// of generations, so a reload on either side never reuses an outcome; a collision only costs
/// an evaluation.
#[derive(Clone, Copy)]
struct Recent {
    live: u64,
    candidate: u64,
    len: usize,
    key: [u8; RECENT_KEY],
    change: Option<Change>,
}

impl Recent {
    /// Generation 0 is never handed out: an empty slot matches nothing.
    const EMPTY: Recent = Recent {
        live: 0,
        candidate: 0,
        len: 0,
        key: [0; RECENT_KEY],
        change: None,
    };

    /// `evaluate`'s outcome for `req` under these generations, remembered.
    fn remembered(
        live: u64,
        candidate: u64,
        req: &CorsRequest<'_>,
        evaluate: impl FnOnce() -> Option<Change>,
    ) -> Option<Change> {
        thread_local! {
            static SLOTS: RefCell<Option<Box<[Recent]>>> = const { RefCell::new(None) };
            /// Lookups in a row that found nothing.
            static MISSES: Cell<u32> = const { Cell::new(0) };
        }
        // A stream of requests never seen before (a flood of new origins or headers) would pay
        // for a key, a lookup and a store each time for nothing: after a run of misses, only
        // every `RECENT_PROBE`th request looks, until one finds its outcome again.
        let misses = MISSES.get();
        MISSES.set(misses.wrapping_add(1));
        if misses >= RECENT_MISSES && !misses.is_multiple_of(RECENT_PROBE) {
            return evaluate();
        }
        let Some(key) = Recent::key(req) else {
            return evaluate();
        };
        // A fixed seed: a key made to collide only costs its sender an evaluation.
        let hash = foldhash::fast::FixedState::with_seed(0).hash_one(key.as_slice());
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let slots = slots.get_or_insert_with(|| vec![Recent::EMPTY; RECENT_SLOTS].into());
            let slot = &mut slots[(hash % RECENT_SLOTS as u64) as usize];
            if slot.live == live
                && slot.candidate == candidate
                && slot.key.get(..slot.len) == Some(key.as_slice())
            {
                MISSES.set(0);
                return slot.change;
            }
            let change = evaluate();
            slot.live = live;
            slot.candidate = candidate;
            slot.len = key.len();
            slot.key[..key.len()].copy_from_slice(&key);
            slot.change = change;
            change
        })
    }

    /// Everything a preflight's verdict depends on, each part with its length so that no two
    /// requests make the same key.
    fn key(req: &CorsRequest<'_>) -> Option<ArrayVec<u8, RECENT_KEY>> {
        let mut key = ArrayVec::new();
        let mut part = |tag: u8, bytes: &[u8]| -> Option<()> {
            key.try_push(tag).ok()?;
            let len = u16::try_from(bytes.len()).ok()?.to_le_bytes();
            key.try_extend_from_slice(&len).ok()?;
            key.try_extend_from_slice(bytes).ok()
        };
        part(b'o', req.origin.map_or(&[][..], HeaderValue::as_bytes))?;
        part(b'm', req.acrm.map_or(&[][..], HeaderValue::as_bytes))?;
        for line in req.acrh.iter() {
            part(b'h', line.as_bytes())?;
        }
        // An absent header and an empty one differ.
        part(
            b'-',
            &[u8::from(req.origin.is_none()), u8::from(req.acrm.is_none())],
        )?;
        Some(key)
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
            // docs/cors-semantics.md#preflight-errors: a refusal carries no CORS header.
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
    use proptest::prelude::*;

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
    fn the_alignment_tells_what_an_evaluation_would_whenever_it_tells() {
        let live = Snapshot::new(cors(LIVE));
        let candidates = [
            LIVE.to_string(),
            // The second rule grants other headers; both still match the same requests.
            LIVE.replace(
                "<AllowedMethod>GET</AllowedMethod></CORSRule>",
                "<AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>60</MaxAgeSeconds></CORSRule>",
            ),
            // The first rule matches more requests: what it grants is known, not what it may
            // take from the rules after it.
            LIVE.replace("x-amz-*", "*"),
            // The first rule matches fewer requests: what it granted must be evaluated, the
            // rest is known.
            LIVE.replace("<AllowedHeader>x-amz-*</AllowedHeader>", ""),
            // A rule taken out, and one more at the end.
            LIVE.replace(
                "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>",
                "",
            ),
            LIVE.replace(
                "</CORSConfiguration>",
                "<CORSRule><AllowedOrigin>https://c.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>",
            ),
            // A rule in front of every other.
            LIVE.replace(
                "<CORSConfiguration>",
                "<CORSConfiguration><CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>",
            ),
        ];
        let requests: &[&[(&str, &str)]] = &[
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
                ("origin", "https://b.example"),
                ("access-control-request-method", "GET"),
            ],
            &[("origin", "https://c.example")],
            &[],
        ];
        let mut told = 0;
        for (i, xml) in candidates.iter().enumerate() {
            assert!(i == 0 || xml != LIVE, "candidate {i} is the live document");
            let candidate = Snapshot::new(cors(xml));
            let alignment = Alignment::new(&live, &candidate);
            for pairs in requests {
                let h = headers(pairs);
                for method in [Method::OPTIONS, Method::GET] {
                    let req = CorsRequest::new(&method, &h, Resource::Object);
                    let (live_rule, evaluated) = if method == Method::OPTIONS {
                        let verdict = preflight_verdict(&live.cors, &req);
                        let rule = match verdict {
                            Verdict::Allowed(rule) => Some(rule.index),
                            Verdict::Denied(_) => None,
                        };
                        (
                            rule,
                            change(verdict, preflight_verdict(&candidate.cors, &req)),
                        )
                    } else {
                        let (a, b) = (live.cors.actual(&req), candidate.cors.actual(&req));
                        let evaluated = match (a.as_ref().map(|g| g.rule), b.map(|g| g.rule)) {
                            (None, None) => None,
                            (None, Some(_)) => Some(Change::NewlyAllowed),
                            (Some(_), None) => Some(Change::NewlyDenied),
                            (Some(x), Some(y)) => {
                                (!same_headers(x, y)).then_some(Change::HeadersChanged)
                            }
                        };
                        (a.map(|g| g.rule.index), evaluated)
                    };
                    let none = |lost: &[HeaderPattern]| none_requested(lost, &req);
                    if let Some(known) = alignment.known(live_rule, none) {
                        told += 1;
                        assert_eq!(known, evaluated, "{xml}\n{method} {pairs:?}");
                    }
                }
            }
        }
        assert!(told >= 20, "the alignment told only {told} answers");
    }

    #[test]
    fn a_narrowed_rule_is_judged_by_the_headers_it_lost_alone() {
        let live = Snapshot::new(cors(LIVE));
        // The first rule keeps `x-amz-acl` of the `x-amz-*` it had, and lasts an hour.
        let candidate = Snapshot::new(cors(&LIVE.replace(
            "<AllowedHeader>x-amz-*</AllowedHeader>",
            "<AllowedHeader>x-amz-acl</AllowedHeader><MaxAgeSeconds>3600</MaxAgeSeconds>",
        )));
        let alignment = Alignment::new(&live, &candidate);
        assert!(
            matches!(&alignment.granted[0], Granted::WinsUnlessLost { same: false, lost }
            if **lost == [HeaderPattern::parse("x-amz-*").expect("a pattern")])
        );
        let judged = |acrh: &'static str| {
            let h = headers(&[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", acrh),
            ]);
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            let told = alignment.known(Some(1), |lost| none_requested(lost, &req));
            let evaluated = change(
                preflight_verdict(&live.cors, &req),
                preflight_verdict(&candidate.cors, &req),
            );
            (told, evaluated)
        };
        // No header requested: the candidate's rule wins, with its own max age.
        assert_eq!(
            judged(""),
            (
                Some(Some(Change::HeadersChanged)),
                Some(Change::HeadersChanged)
            )
        );
        // A header of the lost pattern: evaluated (here the candidate refuses it).
        assert_eq!(
            judged("x-amz-acl,x-amz-date"),
            (None, Some(Change::NewlyDenied))
        );
        assert_eq!(judged("x-amz-acl"), (None, Some(Change::HeadersChanged)));
    }

    /// One generated rule, from a few origins, methods, header patterns and max ages.
    fn rule_xml() -> impl Strategy<Value = String> {
        let origins = proptest::sample::subsequence(
            vec!["*", "https://a.x", "https://*.x", "https://b.x", "http://*"],
            1..3,
        );
        let methods = proptest::sample::subsequence(vec!["GET", "PUT", "POST"], 1..3);
        let headers =
            proptest::sample::subsequence(vec!["*", "x-a*", "x-ab", "content-type"], 0..3);
        let max_age = proptest::option::of(proptest::sample::select(vec![0u32, 60]));
        (origins, methods, headers, max_age).prop_map(|(origins, methods, headers, max_age)| {
            let mut xml = String::from("<CORSRule>");
            for o in origins {
                xml += &format!("<AllowedOrigin>{o}</AllowedOrigin>");
            }
            for m in methods {
                xml += &format!("<AllowedMethod>{m}</AllowedMethod>");
            }
            for h in headers {
                xml += &format!("<AllowedHeader>{h}</AllowedHeader>");
            }
            if let Some(secs) = max_age {
                xml += &format!("<MaxAgeSeconds>{secs}</MaxAgeSeconds>");
            }
            xml + "</CORSRule>"
        })
    }

    fn snapshot(rules: &[String]) -> Snapshot {
        let xml = format!("<CORSConfiguration>{}</CORSConfiguration>", rules.concat());
        Snapshot::new(cors(&xml))
    }

    proptest! {
        #[test]
        fn whatever_the_alignment_tells_an_evaluation_confirms(
            live in proptest::collection::vec(rule_xml(), 1..5),
            edit in 0usize..3,
            at in 0usize..5,
            other in rule_xml(),
            origin in proptest::sample::select(vec!["https://a.x", "https://b.x", "https://c.x", "http://a.x"]),
            method in proptest::sample::select(vec!["GET", "PUT", "POST", "DELETE"]),
            acrh in proptest::sample::select(vec!["", "x-ab", "x-abc", "content-type", "x-ab,content-type"]),
        ) {
            // The candidate: the live rules with one rule replaced, taken out or put in.
            let mut changed = live.clone();
            let at = at % (live.len() + 1);
            match edit {
                0 if at < changed.len() => changed[at] = other,
                1 if at < changed.len() => { changed.remove(at); }
                _ => changed.insert(at, other),
            }
            prop_assume!(!changed.is_empty());
            let (live, candidate) = (snapshot(&live), snapshot(&changed));
            let alignment = Alignment::new(&live, &candidate);
            let mut h = HeaderMap::new();
            h.insert("origin", HeaderValue::from_static(origin));
            h.insert("access-control-request-method", HeaderValue::from_static(method));
            if !acrh.is_empty() {
                h.insert("access-control-request-headers", HeaderValue::from_static(acrh));
            }
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            let verdict = preflight_verdict(&live.cors, &req);
            let rule = match verdict {
                Verdict::Allowed(rule) => Some(rule.index),
                Verdict::Denied(_) => None,
            };
            let none = |lost: &[HeaderPattern]| none_requested(lost, &req);
            if let Some(known) = alignment.known(rule, none) {
                prop_assert_eq!(known, change(verdict, preflight_verdict(&candidate.cors, &req)));
            }
        }
    }

    #[test]
    fn an_outcome_is_remembered_for_the_same_request_under_the_same_generations_only() {
        let evaluations = std::cell::Cell::new(0);
        let judge = |live: u64, candidate: u64, pairs: &[(&'static str, &'static str)]| {
            let h = headers(pairs);
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            Recent::remembered(live, candidate, &req, || {
                evaluations.set(evaluations.get() + 1);
                Some(Change::NewlyDenied)
            })
        };
        let a = [
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-amz-acl"),
        ];
        assert_eq!(judge(u64::MAX - 1, u64::MAX, &a), Some(Change::NewlyDenied));
        assert_eq!(judge(u64::MAX - 1, u64::MAX, &a), Some(Change::NewlyDenied));
        assert_eq!(evaluations.get(), 1, "the same request was evaluated again");
        judge(u64::MAX - 2, u64::MAX, &a);
        judge(u64::MAX - 1, u64::MAX - 3, &a);
        let mut b = a;
        b[2].1 = "x-amz-acm";
        judge(u64::MAX - 1, u64::MAX, &b);
        // No ACRH at all is not an empty one.
        judge(u64::MAX - 1, u64::MAX, &a[..2]);
        judge(
            u64::MAX - 1,
            u64::MAX,
            &[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", ""),
            ],
        );
        assert_eq!(evaluations.get(), 6);
    }

    #[test]
    fn after_a_flood_of_new_requests_a_repeated_one_is_remembered_again() {
        let evaluations = std::cell::Cell::new(0);
        let judge = |acrh: &str| {
            let mut h = headers(&[
                ("origin", "https://a.example"),
                ("access-control-request-method", "PUT"),
            ]);
            h.insert(
                "access-control-request-headers",
                HeaderValue::from_str(acrh).expect("a header value"),
            );
            let req = CorsRequest::new(&Method::OPTIONS, &h, Resource::Object);
            Recent::remembered(7, 8, &req, || {
                evaluations.set(evaluations.get() + 1);
                None
            });
        };
        for i in 0..1000 {
            judge(&format!("x-new-{i}"));
        }
        assert_eq!(evaluations.get(), 1000, "every new request is evaluated");
        // Looked up only now and then during the flood, the repeated request is found within
        // two probes, and from then on every time.
        for _ in 0..2 * RECENT_PROBE {
            judge("x-amz-acl");
        }
        let before = evaluations.get();
        for _ in 0..100 {
            judge("x-amz-acl");
        }
        assert_eq!(
            evaluations.get(),
            before,
            "the repeated request is remembered"
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
