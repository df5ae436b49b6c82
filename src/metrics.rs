//! What corsgate counts, and the Prometheus exposition of it (served by the admin listener's
//! `GET /metrics`).
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: typed metric
//! families, a registry that is a plain value rather than macros feeding a hidden global, and
//! encoders for both the OpenMetrics text Prometheus asks for and the classic text format
//! (0.0.4) that `promtool check metrics` and older scrapers read. `metrics` +
//! `metrics-exporter-prometheus` was the other candidate: it puts a recorder behind a global
//! and its histograms keep every observation until the next upkeep, where here a histogram is
//! a fixed set of atomic buckets ([`histogram`]).
//!
//! The request path must stay as cheap as it was, so it never touches a family: every label
//! set it counts under is resolved once, when its route is built ([`RouteMetrics`]), into
//! handles that are `Arc`'d atomics. Counting a request is then one atomic add, timing it one
//! histogram observation: no map lookup, no lock, no allocation. Families are looked up only
//! off the request path (rules loads, bucket fetches, scrapes).
//!
//! No label ever carries a value a client chose: routes are named by their 1-based index,
//! listeners by their kind, certificates by their first DNS name (from the operator's files),
//! everything else by a fixed set of words.
//!
//! The registry is one per process, as the process's own metrics are, and as the access-log
//! writer and the rules loaders, which have no gateway at hand, need it to be. This module is
//! a leaf: it knows nothing of the gateway, the rules or the configuration; they hold its
//! handles and tell it what happened.

pub mod histogram;
pub mod process;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

pub(crate) use histogram::Histogram;

/// Whether the request path counts: off when nothing could read the counts (no admin listener,
/// or `admin.metrics = false`), so that such a gateway pays nothing for them. Every gateway
/// alive votes ([`CountingVote`]); counting stays on while any wants it, or none has voted.
static COUNTING: AtomicBool = AtomicBool::new(true);

/// Gateways alive that want counting, and that do not.
static VOTES: Mutex<(usize, usize)> = Mutex::new((0, 0));

/// Whether the request path counts (requests, their durations, origin errors, preflight cache
/// lookups, connections, shadow disagreements); loads, fetches and reloads count either way.
pub(crate) fn counting() -> bool {
    COUNTING.load(Ordering::Relaxed)
}

/// The outcome of the votes `(for, against)`: a process where no gateway has voted yet
/// counts, so that nothing is lost before the first gateway is built.
fn counts((yes, no): (usize, usize)) -> bool {
    yes > 0 || no == 0
}

/// A gateway's vote on [`counting`], held for as long as the gateway is alive.
#[derive(Debug)]
pub(crate) struct CountingVote {
    wants: bool,
}

impl CountingVote {
    pub(crate) fn new(wants: bool) -> CountingVote {
        CountingVote::tally(|(yes, no)| if wants { *yes += 1 } else { *no += 1 });
        CountingVote { wants }
    }

    /// What this gateway asked for.
    pub(crate) fn wants(&self) -> bool {
        self.wants
    }

    fn tally(change: impl FnOnce(&mut (usize, usize))) {
        let mut votes = VOTES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut votes);
        COUNTING.store(counts(*votes), Ordering::Relaxed);
    }
}

impl Drop for CountingVote {
    fn drop(&mut self) {
        let wants = self.wants;
        CountingVote::tally(|(yes, no)| {
            let side = if wants { yes } else { no };
            *side = side.saturating_sub(1);
        });
    }
}

/// The route label of requests no route serves (unknown host, no host, a malformed target).
pub(crate) const UNROUTED: &str = "none";

/// Whether a request was a preflight (`OPTIONS`) or anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Preflight,
    Actual,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Preflight => "preflight",
            Kind::Actual => "actual",
        }
    }
}

/// How a request was answered: the `outcome` label of `corsgate_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A preflight answered 200.
    Allowed,
    /// A preflight refused by the rules (403, or 400 for a malformed one).
    Denied,
    /// Forwarded; the response carries the CORS headers a rule granted.
    Decorated,
    /// Forwarded; no rule granted anything.
    Undecorated,
    /// Refused by corsgate for the client's doing, before any CORS evaluation or forwarding
    /// (no route for the host, a malformed target, a body too slow, `SlowDown`).
    Refused(Kind),
    /// Not answered as asked for a reason on the server's side: the origin failed or timed out,
    /// or a bucket's rules could not be loaded.
    Error(Kind),
}

impl Answer {
    pub fn kind(self) -> Kind {
        match self {
            Answer::Allowed | Answer::Denied => Kind::Preflight,
            Answer::Decorated | Answer::Undecorated => Kind::Actual,
            Answer::Refused(kind) | Answer::Error(kind) => kind,
        }
    }

    /// Every answer, in the order [`RouteMetrics`] keeps their counters.
    const ALL: [Answer; 8] = [
        Answer::Allowed,
        Answer::Denied,
        Answer::Refused(Kind::Preflight),
        Answer::Error(Kind::Preflight),
        Answer::Decorated,
        Answer::Undecorated,
        Answer::Refused(Kind::Actual),
        Answer::Error(Kind::Actual),
    ];

    fn index(self) -> usize {
        match self {
            Answer::Allowed => 0,
            Answer::Denied => 1,
            Answer::Refused(Kind::Preflight) => 2,
            Answer::Error(Kind::Preflight) => 3,
            Answer::Decorated => 4,
            Answer::Undecorated => 5,
            Answer::Refused(Kind::Actual) => 6,
            Answer::Error(Kind::Actual) => 7,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Answer::Allowed => "allowed",
            Answer::Denied => "denied",
            Answer::Decorated => "decorated",
            Answer::Undecorated => "undecorated",
            Answer::Refused(_) => "refused",
            Answer::Error(_) => "error",
        }
    }
}

/// Why a forwarded request got no answer from its origin: the `reason` label of
/// `corsgate_origin_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OriginError {
    /// No connection could be made (refused, unreachable, name not resolved).
    Connect,
    /// The origin took too long: to accept a connection, to take the request or to answer.
    Timeout,
    /// The connection broke while the request was on it, or the answer was not HTTP.
    Reset,
    /// The TLS handshake with an `https://` origin failed (its certificate, its protocols).
    Tls,
    /// corsgate did not send it: every connection the route may open to the origin
    /// (`limits.origin_connections`) stayed busy.
    Refused,
}

impl OriginError {
    /// In declaration order: `reason as usize` indexes it.
    const ALL: [OriginError; 5] = [
        OriginError::Connect,
        OriginError::Timeout,
        OriginError::Reset,
        OriginError::Tls,
        OriginError::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            OriginError::Connect => "connect",
            OriginError::Timeout => "timeout",
            OriginError::Reset => "reset",
            OriginError::Tls => "tls",
            OriginError::Refused => "refused",
        }
    }
}

/// Where a route's rules come from: the `source` label of `corsgate_rules_reloads_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RulesSource {
    File,
    /// A bucket route's bucket, or a bucket an S3 endpoint route holds.
    Bucket,
}

/// What one load of a route's rules did: the `result` label of `corsgate_rules_reloads_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RulesLoad {
    /// New rules are in force.
    Applied,
    /// The source said what was already in force.
    Unchanged,
    /// The document did not validate; the rules in force stay.
    Invalid,
    /// The source could not be read (file, origin); the rules in force stay.
    Error,
}

/// What one fetch of a bucket's `?cors` brought: the `result` label of
/// `corsgate_bucket_fetches_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BucketFetch {
    /// A CORS configuration.
    Rules,
    /// `NoSuchCORSConfiguration`: CORS is off for the bucket.
    NotConfigured,
    /// `NoSuchBucket`.
    NoSuchBucket,
    /// A document corsgate cannot accept.
    Invalid,
    /// No usable answer: unreachable, timed out, an origin error, a request that could not be
    /// signed.
    Error,
    /// Not made: an S3 endpoint route already fetches new buckets as fast as
    /// `s3.max_fetches_per_second` allows (the request got `503 SlowDown`).
    Throttled,
}

impl BucketFetch {
    /// In declaration order: `result as usize` indexes it.
    const ALL: [BucketFetch; 6] = [
        BucketFetch::Rules,
        BucketFetch::NotConfigured,
        BucketFetch::NoSuchBucket,
        BucketFetch::Invalid,
        BucketFetch::Error,
        BucketFetch::Throttled,
    ];

    fn label(self) -> &'static str {
        match self {
            BucketFetch::Rules => "rules",
            BucketFetch::NotConfigured => "not_configured",
            BucketFetch::NoSuchBucket => "no_such_bucket",
            BucketFetch::Invalid => "invalid",
            BucketFetch::Error => "error",
            BucketFetch::Throttled => "throttled",
        }
    }
}

/// The kinds of listener connections are counted by: the `listener` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// A plain-HTTP gateway listener (`server.listen`).
    Gateway,
    /// A TLS gateway listener (`server.tls`).
    Tls,
    /// The HTTP-to-HTTPS redirect listener.
    Redirect,
    Admin,
    /// The demo origin.
    Demo,
}

impl Listener {
    /// In declaration order: [`Listener::index`] indexes it.
    const ALL: [Listener; 5] = [
        Listener::Gateway,
        Listener::Tls,
        Listener::Redirect,
        Listener::Admin,
        Listener::Demo,
    ];

    fn label(self) -> &'static str {
        match self {
            Listener::Gateway => "gateway",
            Listener::Tls => "tls",
            Listener::Redirect => "redirect",
            Listener::Admin => "admin",
            Listener::Demo => "demo",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginErrorLabels {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    route: String,
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    route: String,
    kind: &'static str,
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabel {
    certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Every metric of the process, registered once.
struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
    origin_errors: Family<OriginErrorLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_entries: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    generations: Family<RouteLabel, Gauge>,
    last_applied: Family<RouteLabel, Gauge<f64, AtomicU64>>,
    bucket_fetches: [Counter; BucketFetch::ALL.len()],
    /// Open and total, by [`Listener::index`].
    connections: [(Gauge, Counter); Listener::ALL.len()],
    certificates: Family<CertificateLabel, Gauge>,
    log_lines_dropped: Counter,
    shadow_disagreements: Family<ShadowLabels, Counter>,
    unrouted: RouteMetrics,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "corsgate_requests",
            "Requests answered, by route (its 1-based index, or \"none\" when no route serves \
             the host), kind (preflight or actual) and outcome",
            requests.clone(),
        );
        let durations = Family::<DurationLabels, Histogram>::default();
        registry.register_with_unit(
            "corsgate_request_duration",
            "Time from a request's arrival to its response head, by route and kind",
            Unit::Seconds,
            durations.clone(),
        );
        let origin_errors = Family::<OriginErrorLabels, Counter>::default();
        registry.register(
            "corsgate_origin_errors",
            "Forwarded requests that got no answer from the origin, by route and reason",
            origin_errors.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "corsgate_preflight_cache_hits",
            "Preflights answered from the preflight cache",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "corsgate_preflight_cache_misses",
            "Preflight cache lookups that found no answer (the preflight was evaluated)",
            cache_misses.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "corsgate_preflight_cache_entries",
            "Answers held by the preflight cache",
            cache_entries.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "corsgate_rules_reloads",
            "Loads of a route's rules (the first included), by route, source and result",
            reloads.clone(),
        );
        let generations = Family::<RouteLabel, Gauge>::default();
        registry.register(
            "corsgate_rules_generation",
            "Generation of the rules in force, by route (not for S3 endpoint routes, whose \
             buckets each have their own)",
            generations.clone(),
        );
        let last_applied = Family::<RouteLabel, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "corsgate_rules_last_applied_timestamp",
            "When new rules last came into force on a route, as a Unix time",
            Unit::Seconds,
            last_applied.clone(),
        );
        let fetches = Family::<ResultLabel, Counter>::default();
        registry.register(
            "corsgate_bucket_fetches",
            "Fetches of a bucket's CORS configuration from the origin, by result",
            fetches.clone(),
        );
        let bucket_fetches = BucketFetch::ALL.map(|result| {
            fetches
                .get_or_create(&ResultLabel {
                    result: result.label(),
                })
                .clone()
        });
        let open = Family::<ListenerLabel, Gauge>::default();
        registry.register(
            "corsgate_connections_open",
            "Client connections open now, by listener",
            open.clone(),
        );
        let total = Family::<ListenerLabel, Counter>::default();
        registry.register(
            "corsgate_connections",
            "Client connections accepted, by listener",
            total.clone(),
        );
        let connections = Listener::ALL.map(|listener| {
            let label = ListenerLabel {
                listener: listener.label(),
            };
            (
                open.get_or_create(&label).clone(),
                total.get_or_create(&label).clone(),
            )
        });
        let certificates = Family::<CertificateLabel, Gauge>::default();
        registry.register_with_unit(
            "corsgate_tls_certificate_expiry_timestamp",
            "When each TLS certificate in use expires (its notAfter), as a Unix time, by its \
             first DNS name",
            Unit::Seconds,
            certificates.clone(),
        );
        registry.register(
            "corsgate_build",
            "The running corsgate's version",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "corsgate_log_lines_dropped",
            "Access-log lines dropped because the log writer could not keep up",
            log_lines_dropped.clone(),
        );
        let shadow_disagreements = Family::<ShadowLabels, Counter>::default();
        registry.register(
            "corsgate_shadow_disagreements",
            "Requests a route's shadow rules would have answered differently, by route, kind \
             and change (newly_allowed, newly_denied, headers_changed)",
            shadow_disagreements.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        let unrouted = RouteMetrics::resolve(UNROUTED.to_string(), &requests, &durations, None);
        Metrics {
            registry,
            requests,
            durations,
            origin_errors,
            cache_hits,
            cache_misses,
            cache_entries,
            reloads,
            generations,
            last_applied,
            bucket_fetches,
            connections,
            certificates,
            log_lines_dropped,
            shadow_disagreements,
            unrouted,
        }
    }
}

/// One route's request counters and timings, resolved once when the route is built: counting
/// a request through them touches no family.
#[derive(Debug)]
pub struct RouteMetrics {
    /// By [`Answer::index`].
    answers: [Counter; Answer::ALL.len()],
    /// Preflights, then the others.
    durations: [Histogram; 2],
    /// By position in [`OriginError::ALL`]; none for the unrouted (nothing is forwarded).
    origin_errors: Option<[Counter; OriginError::ALL.len()]>,
}

impl RouteMetrics {
    /// The handles of route `index` (1-based). Its series appear at once, at zero.
    pub fn new(index: usize) -> RouteMetrics {
        let metrics = &*METRICS;
        RouteMetrics::resolve(
            index.to_string(),
            &metrics.requests,
            &metrics.durations,
            Some(&metrics.origin_errors),
        )
    }

    /// The handles of requests no route serves.
    pub(crate) fn unrouted() -> &'static RouteMetrics {
        &METRICS.unrouted
    }

    fn resolve(
        route: String,
        requests: &Family<RequestLabels, Counter>,
        durations: &Family<DurationLabels, Histogram>,
        origin_errors: Option<&Family<OriginErrorLabels, Counter>>,
    ) -> RouteMetrics {
        let answers = Answer::ALL.map(|answer| {
            requests
                .get_or_create(&RequestLabels {
                    route: route.clone(),
                    kind: answer.kind().label(),
                    outcome: answer.label(),
                })
                .clone()
        });
        let durations = [Kind::Preflight, Kind::Actual].map(|kind| {
            durations
                .get_or_create(&DurationLabels {
                    route: route.clone(),
                    kind: kind.label(),
                })
                .clone()
        });
        let origin_errors = origin_errors.map(|family| {
            OriginError::ALL.map(|reason| {
                family
                    .get_or_create(&OriginErrorLabels {
                        route: route.clone(),
                        reason: reason.label(),
                    })
                    .clone()
            })
        });
        RouteMetrics {
            answers,
            durations,
            origin_errors,
        }
    }

    /// One request answered `answer`, `elapsed` after it arrived.
    pub fn answered(&self, answer: Answer, elapsed: Duration) {
        if !counting() {
            return;
        }
        self.answers[answer.index()].inc();
        let kind = usize::from(answer.kind() == Kind::Actual);
        self.durations[kind].observe(elapsed);
    }

    /// One forwarded request the origin failed.
    pub(crate) fn origin_error(&self, reason: OriginError) {
        if let Some(counters) = &self.origin_errors
            && counting()
        {
            counters[reason as usize].inc();
        }
    }
}

/// A preflight answered from the cache.
pub(crate) fn preflight_cache_hit() {
    if counting() {
        METRICS.cache_hits.inc();
    }
}

/// A preflight looked up in the cache and not found there.
pub(crate) fn preflight_cache_miss() {
    if counting() {
        METRICS.cache_misses.inc();
    }
}

/// The preflight cache's entry count, as read at a scrape.
pub(crate) fn set_preflight_cache_entries(entries: u64) {
    METRICS
        .cache_entries
        .set(i64::try_from(entries).unwrap_or(i64::MAX));
}

/// One load of `route`'s rules (`route` as labelled: its 1-based index).
pub(crate) fn rules_loaded(route: &str, source: RulesSource, load: RulesLoad) {
    let metrics = &*METRICS;
    metrics
        .reloads
        .get_or_create(&ReloadLabels {
            route: route.to_string(),
            source: match source {
                RulesSource::File => "file",
                RulesSource::Bucket => "bucket",
            },
            result: match load {
                RulesLoad::Applied => "applied",
                RulesLoad::Unchanged => "unchanged",
                RulesLoad::Invalid => "invalid",
                RulesLoad::Error => "error",
            },
        })
        .inc();
    if load == RulesLoad::Applied {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        metrics
            .last_applied
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .set(now.as_secs_f64());
    }
}

/// The generation of route `index`'s rules, as read at a scrape.
pub(crate) fn set_rules_generation(index: usize, generation: u64) {
    METRICS
        .generations
        .get_or_create(&RouteLabel {
            route: index.to_string(),
        })
        .set(i64::try_from(generation).unwrap_or(i64::MAX));
}

/// One fetch of a bucket's rules (or one not made).
pub(crate) fn bucket_fetched(result: BucketFetch) {
    METRICS.bucket_fetches[result as usize].inc();
}

/// A client connection, counted open until this is dropped.
/// (`None`: opened while counting was off, so not counted open.)
#[derive(Debug)]
pub struct OpenConnection(Option<&'static Gauge>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(open) = self.0 {
            open.dec();
        }
    }
}

/// A connection accepted on a `listener`; keep the guard for as long as it is open.
pub(crate) fn connection_opened(listener: Listener) -> OpenConnection {
    if !counting() {
        return OpenConnection(None);
    }
    let (open, total) = &METRICS.connections[listener.index()];
    total.inc();
    open.inc();
    OpenConnection(Some(open))
}

/// The TLS certificates in use now, each as its name and its expiry (Unix seconds): replaces
/// what was shown before, so a certificate no longer served disappears.
pub(crate) fn certificates_in_use(certificates: impl IntoIterator<Item = (String, i64)>) {
    let family = &METRICS.certificates;
    family.clear();
    for (certificate, not_after) in certificates {
        family
            .get_or_create(&CertificateLabel { certificate })
            .set(not_after);
    }
}

/// Access-log lines dropped: the access-log writer calls `inc()` (or `inc_by(n)`) on this for
/// every line it had to drop, whatever the reason (a full queue, a failed write).
pub fn log_lines_dropped() -> &'static Counter {
    &METRICS.log_lines_dropped
}

/// The disagreement counter of route `index` (1-based) for one `kind` and `change` of
/// `corsgate_shadow_disagreements_total`, resolved once by the route's shadow rules; the series
/// appears at once, at zero, and keeps counting across configuration reloads.
pub(crate) fn shadow_disagreements(
    index: usize,
    kind: &'static str,
    change: &'static str,
) -> Counter {
    METRICS
        .shadow_disagreements
        .get_or_create(&ShadowLabels {
            route: index.to_string(),
            kind,
            change,
        })
        .clone()
}

/// How an exposition is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics text 1.0.0: what Prometheus asks for first.
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4: what `promtool check metrics`, older
    /// scrapers and people with `curl` read.
    Prometheus,
}

impl Format {
    /// The `Content-Type` of an exposition in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format a scraper's `Accept` header prefers: OpenMetrics when it is accepted at all
    /// (Prometheus offers it first), else the classic text format, which every scraper reads.
    pub(crate) fn negotiate(accept: Option<&str>) -> Format {
        let accepts_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut params = range.split(';').map(str::trim);
                let media = params.next().unwrap_or_default();
                media.eq_ignore_ascii_case("application/openmetrics-text")
                    && !params.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f64>().ok())
                            .is_some_and(|q| q <= 0.0)
                    })
            })
        });
        if accepts_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// Every metric, as text in `format`.
pub(crate) fn render(format: Format) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let registry = &METRICS.registry;
    // Writing into a String cannot fail; an encoder error would be a bug in a metric's
    // encoding, and a partial exposition is still worth more than none.
    let written = match format {
        Format::OpenMetrics => text::encode(&mut out, registry),
        Format::Prometheus => prometheus_text::encode(&mut out, registry),
    };
    if let Err(err) = written {
        tracing::warn!("metrics exposition cut short: {err}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_is_off_only_when_every_gateway_declines() {
        assert!(counts((0, 0)), "no gateway yet");
        assert!(counts((1, 0)));
        assert!(counts((1, 3)), "one gateway that wants counts is enough");
        assert!(!counts((0, 1)));
        assert!(!counts((0, 2)));
    }

    #[test]
    fn openmetrics_is_chosen_only_when_accepted() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
    }

    #[test]
    fn every_handle_array_is_indexed_in_declaration_order() {
        for (i, answer) in Answer::ALL.iter().enumerate() {
            assert_eq!(answer.index(), i, "{answer:?}");
        }
        for (i, reason) in OriginError::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
        for (i, result) in BucketFetch::ALL.iter().enumerate() {
            assert_eq!(*result as usize, i, "{result:?}");
        }
        for (i, listener) in Listener::ALL.iter().enumerate() {
            assert_eq!(listener.index(), i, "{listener:?}");
        }
    }

    #[test]
    fn a_route_counts_each_answer_under_its_own_labels() {
        let route = RouteMetrics::new(9_001);
        route.answered(Answer::Allowed, Duration::from_micros(50));
        route.answered(Answer::Error(Kind::Actual), Duration::from_millis(30));
        route.origin_error(OriginError::Tls);
        let text = render(Format::Prometheus);
        for line in [
            r#"corsgate_requests_total{route="9001",kind="preflight",outcome="allowed"} 1"#,
            r#"corsgate_requests_total{route="9001",kind="actual",outcome="error"} 1"#,
            r#"corsgate_requests_total{route="9001",kind="actual",outcome="decorated"} 0"#,
            r#"corsgate_request_duration_seconds_count{route="9001",kind="preflight"} 1"#,
            r#"corsgate_request_duration_seconds_bucket{route="9001",kind="actual",le="0.025"} 0"#,
            r#"corsgate_request_duration_seconds_bucket{route="9001",kind="actual",le="0.05"} 1"#,
            r#"corsgate_origin_errors_total{route="9001",reason="tls"} 1"#,
            r#"corsgate_origin_errors_total{route="9001",reason="connect"} 0"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn both_formats_describe_every_family() {
        let open = render(Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(
            open.contains("# TYPE corsgate_requests counter\n"),
            "{open}"
        );
        let classic = render(Format::Prometheus);
        assert!(!classic.contains("# EOF"), "{classic}");
        for family in [
            "corsgate_requests_total counter",
            "corsgate_request_duration_seconds histogram",
            "corsgate_preflight_cache_entries gauge",
            "corsgate_build_info gauge",
            "corsgate_log_lines_dropped_total counter",
        ] {
            assert!(
                classic.contains(&format!("# TYPE {family}\n")),
                "{family} missing from\n{classic}"
            );
        }
    }
}
