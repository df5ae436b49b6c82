//! An S3 endpoint route's rules: one [`BucketRules`] per bucket the origin has, loaded on the
//! bucket's first request, polled while the bucket is requested, and refreshed by write-through
//! like a bucket route's.
//!
//! The bucket comes from the request as the route's addressing says (the path's first segment, or
//! the Host's first label). A request that names no bucket (the endpoint root) or a name no bucket
//! can have is judged as S3 judges a missing bucket, without asking the origin.
//!
//! Anyone can make bucket names up, so what a name can cost the origin is bounded:
//! - A name not held is fetched once, however many requests name it at once: they all wait for
//!   that one fetch, which runs in a task of its own (a client going away does not restart it).
//! - At most `max_fetches_per_second` names not held are fetched per second (a token bucket with a
//!   burst of the same size). A request for one more is refused at once with S3's `503 SlowDown`
//!   and nothing is remembered of the name: the next request after the rate allows fetches it.
//!   Polls of held buckets and write-through are not counted: `max_buckets` and `poll` bound them.
//! - A name the origin says has no bucket (`NoSuchBucket`) is remembered for `negative_ttl` and
//!   never polled: its requests are judged from memory exactly as the fetched answer judged them.
//!   A name whose fetch failed is answered "unavailable" for [`RETRY_FIRST_LOAD_AFTER`], so a
//!   failing origin is not asked once per request.
//! - Only buckets with rules are held and polled, and only while requested: one unseen for
//!   `bucket_idle`, or dropped to keep `max_buckets`, stops polling (its poller ends) and is
//!   fetched again on its next request.
//!
//! Nothing here logs a line per made-up name above debug: warnings about new names are throttled.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::ops::compute::Op;
use moka::sync::Cache;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use super::bucket::{BucketFetcher, BucketRules, jitter, next_poll};
use super::live::{Current, LiveRules, Loaded};
use super::{EndpointSource, Resolved, RulesError, Unavailable};
use crate::cors::{BucketCors, Resource};
use crate::s3::{Addressing, is_bucket_name};
use crate::watch::Scope;

/// After a failed fetch of a name not held, its requests are answered "unavailable" for this long
/// before one of them tries again.
pub(crate) const RETRY_FIRST_LOAD_AFTER: Duration = Duration::from_secs(1);
/// `POST /-/reload` refetches the buckets at most this many at a time.
const RELOAD_CONCURRENCY: usize = 16;
/// A throttled warning is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// A bucket's last request is recorded to this precision.
const SEEN_PRECISION_MS: u64 = 100;
/// moka panics on expiry times beyond its range; no configuration means longer than this.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A bucket the origin has, and what keeps it polled.
struct KnownBucket {
    /// Shared with the admin panel while it edits the bucket, so its apply refreshes these.
    rules: Arc<BucketRules>,
    /// When it was last requested, in milliseconds from the route's start.
    last_seen: AtomicU64,
    /// It left the map (idle, capacity, replaced, deleted): its poller ends.
    dropped: AtomicBool,
    /// Wakes the poller when it is dropped, so the task does not outlive the entry.
    dropped_signal: Notify,
}

impl KnownBucket {
    fn new(rules: BucketRules, now_ms: u64) -> KnownBucket {
        KnownBucket {
            rules: Arc::new(rules),
            last_seen: AtomicU64::new(now_ms),
            dropped: AtomicBool::new(false),
            dropped_signal: Notify::new(),
        }
    }

    fn seen(&self, now_ms: u64) {
        // Stored only when it moved: a bucket requested from every core at once would otherwise
        // bounce this cache line between them on every request.
        if now_ms.saturating_sub(self.last_seen.load(Ordering::Relaxed)) >= SEEN_PRECISION_MS {
            self.last_seen.store(now_ms, Ordering::Relaxed);
        }
    }

    fn idle_for(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.last_seen.load(Ordering::Relaxed)))
    }

    fn drop_now(&self) {
        if !self.dropped.swap(true, Ordering::AcqRel) {
            // `notify_one` keeps the wake-up for a poller that is not waiting right now.
            self.dropped_signal.notify_one();
        }
    }

    fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    fn is_missing(&self) -> bool {
        self.rules
            .live()
            .current()
            .is_some_and(|c| matches!(c.cors, BucketCors::NoSuchBucket))
    }
}

/// A name the origin holds no rules for, remembered for a while.
#[derive(Clone, Debug)]
enum Absent {
    /// `NoSuchBucket`: judged as S3 judges a missing bucket, for `negative_ttl`.
    NoSuchBucket,
    /// The fetch failed: "unavailable", for [`RETRY_FIRST_LOAD_AFTER`].
    Unreadable(Unavailable),
}

/// How long each kind of [`Absent`] is remembered: from when it was learnt, however often it is
/// read.
struct AbsentFor {
    no_such_bucket: Duration,
}

impl AbsentFor {
    fn ttl(&self, absent: &Absent) -> Duration {
        match absent {
            Absent::NoSuchBucket => self.no_such_bucket,
            Absent::Unreadable(_) => RETRY_FIRST_LOAD_AFTER,
        }
    }
}

impl Expiry<String, Absent> for AbsentFor {
    fn expire_after_create(&self, _: &String, absent: &Absent, _: Instant) -> Option<Duration> {
        Some(self.ttl(absent))
    }

    fn expire_after_update(
        &self,
        _: &String,
        absent: &Absent,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.ttl(absent))
    }
}

/// What is known of a name without asking the origin.
#[derive(Clone)]
enum Held {
    Known(Arc<KnownBucket>),
    Absent(Absent),
}

/// A fetch of a name not held, in flight: `None` until it has settled.
type Pending = watch::Receiver<Option<Held>>;

/// A token bucket: on average `per_second` takes a second, and at most `per_second` at once.
struct FetchRate {
    per_second: u32,
    tokens: StdMutex<Tokens>,
}

struct Tokens {
    available: f64,
    at: Instant,
}

impl FetchRate {
    fn new(per_second: u32, now: Instant) -> FetchRate {
        // Configuration refuses 0; a rate of 0 would refuse every new bucket for ever.
        let per_second = per_second.max(1);
        FetchRate {
            per_second,
            tokens: StdMutex::new(Tokens {
                available: f64::from(per_second),
                at: now,
            }),
        }
    }

    fn try_take(&self, now: Instant) -> bool {
        let mut tokens = lock(&self.tokens);
        let rate = f64::from(self.per_second);
        let refill = now.saturating_duration_since(tokens.at).as_secs_f64() * rate;
        tokens.available = (tokens.available + refill).min(rate);
        tokens.at = tokens.at.max(now);
        if tokens.available >= 1.0 {
            tokens.available -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A warning logged at most once per [`WARN_EVERY`]; the occurrences in between go to the debug
/// log and are counted in the next warning.
#[derive(Default)]
struct Throttled(StdMutex<(Option<Instant>, u64)>);

impl Throttled {
    /// `Some(unlogged)` when a warning may be logged now: `unlogged` occurrences were not since
    /// the last one.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = lock(&self.0);
        let (last, unlogged) = &mut *state;
        if last.is_some_and(|at| now.saturating_duration_since(at) < WARN_EVERY) {
            *unlogged += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(unlogged))
    }
}

fn unlogged(n: u64) -> String {
    match n {
        0 => String::new(),
        n => format!(" ({n} more since the last warning, logged at debug level)"),
    }
}

pub struct EndpointBuckets {
    /// `route[N]`, for logs.
    label: String,
    addressing: Addressing,
    region: String,
    fetcher: Arc<BucketFetcher>,
    poll: Duration,
    bucket_idle: Duration,
    negative_ttl: Duration,
    /// Buckets with rules, each polled while it is here.
    buckets: Cache<String, Arc<KnownBucket>>,
    /// Names with no rules to hold, while they are remembered.
    absent: Cache<String, Absent>,
    /// Fetches of names not held, in flight. A lock, but only requests for names not held take
    /// it (briefly, never across an await): requests for held buckets stay lock-free.
    loading: StdMutex<HashMap<String, Pending>>,
    new_fetches: FetchRate,
    slow_down_log: Throttled,
    failed_fetch_log: Throttled,
    /// The origin of `last_seen` times.
    epoch: Instant,
    /// What requests naming no bucket, or a missing one, are judged by.
    no_bucket: LiveRules,
    /// Set once the gateway runs: new buckets poll, and fetch, in this scope until it stops.
    scope: OnceLock<Scope>,
}

impl EndpointBuckets {
    pub fn new(
        label: String,
        source: &EndpointSource,
        fetcher: Arc<BucketFetcher>,
    ) -> EndpointBuckets {
        let bucket_idle = source.bucket_idle.min(LONGEST);
        let negative_ttl = source.negative_ttl.min(LONGEST);
        let now = Instant::now();
        EndpointBuckets {
            label,
            addressing: source.addressing,
            region: source.signing.region.clone(),
            fetcher,
            poll: source.poll,
            bucket_idle,
            negative_ttl,
            buckets: Cache::builder()
                .max_capacity(source.max_buckets)
                .time_to_idle(bucket_idle)
                .eviction_listener(|_, known: Arc<KnownBucket>, _| known.drop_now())
                .build(),
            absent: Cache::builder()
                .max_capacity(source.max_buckets)
                .expire_after(AbsentFor {
                    no_such_bucket: negative_ttl,
                })
                .build(),
            loading: StdMutex::new(HashMap::new()),
            new_fetches: FetchRate::new(source.max_fetches_per_second, now),
            slow_down_log: Throttled::default(),
            failed_fetch_log: Throttled::default(),
            epoch: now,
            no_bucket: LiveRules::with(Loaded::without_document(BucketCors::NoSuchBucket)),
            scope: OnceLock::new(),
        }
    }

    /// Lets buckets poll from now on, until `scope` stops.
    pub fn start(&self, scope: &Scope) {
        let _ = self.scope.set(scope.clone());
    }

    /// The bucket a request names, if it could be one.
    fn bucket_name<'a>(&self, host: &'a str, path: &'a str) -> Option<(Cow<'a, str>, &'a str)> {
        let location = self.addressing.locate(host, path)?;
        if !is_bucket_name(location.bucket) {
            return None;
        }
        // Host names are case-insensitive, so a virtual-hosted bucket is its lower-case name.
        let bucket = match self.addressing {
            Addressing::Virtual if location.bucket.bytes().any(|b| b.is_ascii_uppercase()) => {
                Cow::Owned(location.bucket.to_ascii_lowercase())
            }
            _ => Cow::Borrowed(location.bucket),
        };
        Some((bucket, location.key))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub async fn resolve(self: &Arc<Self>, host: &str, path: &str) -> Resolved {
        let Some((bucket, key)) = self.bucket_name(host, path) else {
            return Resolved {
                rules: self.missing(),
                resource: Resource::of_key(path),
            };
        };
        let rules = match self.held(&bucket) {
            Some(held) => self.judge(held),
            None => self.first_load(&bucket).await,
        };
        Resolved {
            rules,
            resource: Resource::of_key(key),
        }
    }

    /// What is known of `bucket` without asking the origin; a request for it counts as use.
    fn held(&self, bucket: &str) -> Option<Held> {
        if let Some(known) = self.buckets.get(bucket) {
            known.seen(self.now_ms());
            return Some(Held::Known(known));
        }
        self.absent.get(bucket).map(Held::Absent)
    }

    fn judge(&self, held: Held) -> Result<Current, Unavailable> {
        match held {
            Held::Known(known) => known.rules.current(),
            Held::Absent(Absent::NoSuchBucket) => self.missing(),
            Held::Absent(Absent::Unreadable(unavailable)) => Err(unavailable),
        }
    }

    fn missing(&self) -> Result<Current, Unavailable> {
        self.no_bucket
            .current()
            .ok_or_else(|| Unavailable::NotLoaded {
                bucket: String::new(),
                reason: "no rules".into(),
            })
    }

    /// Joins the fetch of `bucket` in flight, or starts one if the rate allows.
    async fn first_load(self: &Arc<Self>, bucket: &str) -> Result<Current, Unavailable> {
        let pending = {
            let mut loading = lock(&self.loading);
            if let Some(pending) = loading.get(bucket) {
                pending.clone()
            } else if let Some(held) = self.held(bucket) {
                // A fetch settled between the first look and taking the lock.
                return self.judge(held);
            } else if !self.new_fetches.try_take(Instant::now()) {
                return Err(self.slow_down(bucket));
            } else {
                self.spawn_fetch(&mut loading, bucket, "first request")
            }
        };
        match settled(pending).await {
            Some(held) => self.judge(held),
            None => Err(Unavailable::NotLoaded {
                bucket: bucket.to_string(),
                reason: "the fetch was abandoned".into(),
            }),
        }
    }

    fn slow_down(&self, bucket: &str) -> Unavailable {
        crate::metrics::bucket_fetched(crate::metrics::BucketFetch::Throttled);
        let per_second = self.new_fetches.per_second;
        match self.slow_down_log.admit(Instant::now()) {
            Some(n) => tracing::warn!(
                "{}: new buckets are requested faster than {per_second} per second \
                 (s3.max_fetches_per_second): requests for them are answered 503 SlowDown{}",
                self.label,
                unlogged(n)
            ),
            None => tracing::debug!("{}: bucket {bucket}: 503 SlowDown", self.label),
        }
        Unavailable::SlowDown {
            bucket: bucket.to_string(),
            per_second,
        }
    }

    /// Fetches `bucket` in a task of its own, registered in `loading` until it has settled.
    fn spawn_fetch(
        self: &Arc<Self>,
        loading: &mut HashMap<String, Pending>,
        bucket: &str,
        why: &'static str,
    ) -> Pending {
        let (settle, pending) = watch::channel(None);
        loading.insert(bucket.to_string(), pending.clone());
        let slot = LoadingSlot {
            endpoint: Arc::clone(self),
            bucket: bucket.to_string(),
        };
        let fetch = async move {
            let fetched = slot.endpoint.fetcher.fetch(&slot.bucket).await;
            let held = slot.endpoint.settle(&slot.bucket, fetched, why);
            // Remembered before the slot is freed, so no request finds neither.
            drop(slot);
            let _ = settle.send(Some(held));
        };
        // Bounded by the fetch timeout; held by the supervisor once the gateway runs, so
        // stopping waits for it.
        match self.scope.get() {
            Some(scope) => scope.spawn(fetch),
            None => {
                tokio::spawn(fetch);
            }
        }
        pending
    }

    /// Remembers what a fetch of a name not held taught.
    fn settle(
        self: &Arc<Self>,
        bucket: &str,
        fetched: Result<Loaded, RulesError>,
        why: &str,
    ) -> Held {
        match fetched {
            Ok(loaded) if matches!(loaded.cors, BucketCors::NoSuchBucket) => {
                tracing::debug!(
                    "{}: bucket {bucket} does not exist ({why}); remembered for {}",
                    self.label,
                    humantime::format_duration(self.negative_ttl)
                );
                self.absent.insert(bucket.to_string(), Absent::NoSuchBucket);
                Held::Absent(Absent::NoSuchBucket)
            }
            Ok(loaded) => {
                let enabled = matches!(loaded.cors, BucketCors::Enabled(_));
                let rules = BucketRules::with_rules(
                    self.label.clone(),
                    bucket.to_string(),
                    Arc::clone(&self.fetcher),
                    self.poll,
                    loaded,
                );
                let known = Arc::new(KnownBucket::new(rules, self.now_ms()));
                let generation = known.rules.live().generation();
                if enabled {
                    tracing::info!(
                        "{}: rules of bucket {bucket} loaded ({why}): generation {generation}",
                        self.label
                    );
                } else {
                    tracing::debug!(
                        "{}: bucket {bucket} has no CORS configuration ({why}): generation \
                         {generation}",
                        self.label
                    );
                }
                self.buckets.insert(bucket.to_string(), Arc::clone(&known));
                self.absent.invalidate(bucket);
                self.spawn_poller(&known);
                Held::Known(known)
            }
            Err(error) => {
                match self.failed_fetch_log.admit(Instant::now()) {
                    Some(n) => tracing::warn!(
                        "{}: {error} ({why}); its requests are answered 503 for {RETRY_FIRST_LOAD_AFTER:?}, \
                         then fetched again{}",
                        self.label,
                        unlogged(n)
                    ),
                    None => tracing::debug!("{}: {error} ({why})", self.label),
                }
                let unavailable = Unavailable::NotLoaded {
                    bucket: bucket.to_string(),
                    reason: error.to_string(),
                };
                let absent = Absent::Unreadable(unavailable);
                self.absent.insert(bucket.to_string(), absent.clone());
                Held::Absent(absent)
            }
        }
    }

    /// Polls `known` until it is dropped, goes unseen for `bucket_idle`, or `shutdown` flips.
    fn spawn_poller(self: &Arc<Self>, known: &Arc<KnownBucket>) {
        let Some(scope) = self.scope.get() else {
            return;
        };
        let mut shutdown = scope.stop_signal();
        let endpoint = Arc::downgrade(self);
        let known = Arc::clone(known);
        let poll = self.poll;
        scope.spawn(async move {
            let mut delay = poll;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(jitter(delay)) => {}
                    () = known.dropped_signal.notified() => return,
                    _ = shutdown.changed() => return,
                }
                let Some(endpoint) = endpoint.upgrade() else {
                    return;
                };
                if !endpoint.still_polled(&known) {
                    return;
                }
                let polled = endpoint.refresh_known(&known, "poll").await;
                if known.is_dropped() {
                    return;
                }
                delay = next_poll(&polled, true, delay, poll);
            }
        });
    }

    fn still_polled(&self, known: &Arc<KnownBucket>) -> bool {
        // moka applies evictions (for capacity, for idleness) only while the map is used: applied
        // here, a poll never outlives its bucket's entry for lack of traffic.
        self.buckets.run_pending_tasks();
        if known.is_dropped() || !self.buckets.contains_key(known.rules.name()) {
            return false;
        }
        if known.idle_for(self.now_ms()) >= self.bucket_idle {
            tracing::debug!(
                "{}: bucket {} unseen for {}: no longer polled",
                self.label,
                known.rules.name(),
                humantime::format_duration(self.bucket_idle)
            );
            self.forget(known);
            return false;
        }
        true
    }

    /// Drops `known` from the map, unless another entry has replaced it already.
    fn forget(&self, known: &Arc<KnownBucket>) {
        known.drop_now();
        self.buckets
            .entry_by_ref(known.rules.name())
            .and_compute_with(|entry| match entry {
                Some(entry) if Arc::ptr_eq(entry.value(), known) => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// Fetches a held bucket again; a bucket deleted since is then remembered as missing, and no
    /// longer polled.
    async fn refresh_known(&self, known: &Arc<KnownBucket>, why: &str) -> Result<bool, RulesError> {
        let refreshed = known.rules.refresh(why).await;
        if known.is_missing() {
            self.absent
                .insert(known.rules.name().to_string(), Absent::NoSuchBucket);
            self.forget(known);
        }
        refreshed
    }

    /// The rules of bucket `name` for the admin panel: the ones requests are judged by (loaded
    /// as a request would load them, so an apply refreshes what requests see), or, for a bucket
    /// the origin does not have or that cannot be loaded now, a standalone copy; `None` for a
    /// name no bucket can have.
    pub async fn bucket(self: &Arc<Self>, name: &str) -> Option<Arc<BucketRules>> {
        if !is_bucket_name(name) {
            return None;
        }
        let name = match self.addressing {
            Addressing::Virtual => name.to_ascii_lowercase(),
            Addressing::Path => name.to_string(),
        };
        if self.buckets.get(&name).is_none() {
            let _ = self.first_load(&name).await;
        }
        if let Some(known) = self.buckets.get(&name) {
            return Some(Arc::clone(&known.rules));
        }
        Some(Arc::new(BucketRules::new(
            self.label.clone(),
            name,
            Arc::clone(&self.fetcher),
            self.poll,
        )))
    }

    /// The bucket a request to the bucket itself (not to one of its objects) names.
    pub(crate) fn bucket_written(&self, host: &str, path: &str) -> Option<String> {
        let (bucket, key) = self.bucket_name(host, path)?;
        key.is_empty().then(|| bucket.into_owned())
    }

    /// A write to `bucket` succeeded through the gateway: fetches it now (after any fetch in
    /// flight, which may have asked before the write), whether or not it is held.
    pub async fn written(self: &Arc<Self>, bucket: &str) {
        enum Next {
            Wait(Pending),
            Refresh(Arc<KnownBucket>),
            Fetched(Pending),
        }
        loop {
            let next = {
                let mut loading = lock(&self.loading);
                match loading.get(bucket) {
                    Some(pending) => Next::Wait(pending.clone()),
                    None => match self.buckets.get(bucket) {
                        Some(known) => Next::Refresh(known),
                        None => {
                            self.absent.invalidate(bucket);
                            Next::Fetched(self.spawn_fetch(&mut loading, bucket, "write-through"))
                        }
                    },
                }
            };
            match next {
                Next::Wait(pending) => {
                    settled(pending).await;
                }
                Next::Refresh(known) => {
                    let _ = self.refresh_known(&known, "write-through").await;
                    return;
                }
                Next::Fetched(pending) => {
                    settled(pending).await;
                    return;
                }
            }
        }
    }

    /// Refetches every bucket held now, and forgets which names were missing (they are fetched
    /// again on their next request).
    pub(crate) async fn refresh_all(
        self: &Arc<Self>,
        why: &str,
    ) -> Vec<(Option<String>, Result<bool, RulesError>)> {
        self.absent.invalidate_all();
        let limit = Arc::new(Semaphore::new(RELOAD_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for (_, known) in self.buckets.iter() {
            let limit = Arc::clone(&limit);
            let endpoint = Arc::clone(self);
            let why = why.to_string();
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                let result = endpoint.refresh_known(&known, &why).await;
                (Some(known.rules.name().to_string()), result)
            });
        }
        let mut results = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Ok(result) = done {
                results.push(result);
            }
        }
        results.sort_by(|a, b| a.0.cmp(&b.0));
        results
    }

    pub fn view(&self) -> Value {
        let mut buckets: Vec<(String, Value)> = self
            .buckets
            .iter()
            .map(|(name, known)| ((*name).clone(), known.rules.live().view()))
            .collect();
        buckets.sort_by(|a, b| a.0.cmp(&b.0));
        let mut missing = 0;
        let mut unreadable = Vec::new();
        for (name, absent) in self.absent.iter() {
            match absent {
                Absent::NoSuchBucket => missing += 1,
                Absent::Unreadable(why) => unreadable.push(((*name).clone(), why.to_string())),
            }
        }
        unreadable.sort();
        json!({
            "source": {
                "s3": {
                    "addressing": match self.addressing { Addressing::Path => "path", Addressing::Virtual => "virtual" },
                    "region": self.region,
                    "poll": humantime::format_duration(self.poll).to_string(),
                    "signed": self.fetcher.is_signing(),
                    "negative_ttl": humantime::format_duration(self.negative_ttl).to_string(),
                    "max_fetches_per_second": self.new_fetches.per_second,
                    "bucket_idle": humantime::format_duration(self.bucket_idle).to_string(),
                }
            },
            "buckets": buckets.into_iter().map(|(bucket, rules)| json!({ "bucket": bucket, "rules": rules })).collect::<Vec<_>>(),
            "missing_buckets": missing,
            "unreadable_buckets": unreadable.into_iter().map(|(bucket, error)| json!({ "bucket": bucket, "error": error })).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn describe(&self) -> String {
        let addressing = match self.addressing {
            Addressing::Path => "path-style",
            Addressing::Virtual => "virtual-hosted",
        };
        format!(
            "S3 endpoint ({addressing}): each bucket's rules read from the bucket, at most {} new \
             bucket(s) per second",
            self.new_fetches.per_second
        )
    }
}

/// A name's entry in `loading`, removed when the fetch's task ends however it ends: a name must
/// never stay "in flight" with nobody fetching it.
struct LoadingSlot {
    endpoint: Arc<EndpointBuckets>,
    bucket: String,
}

impl Drop for LoadingSlot {
    fn drop(&mut self) {
        lock(&self.endpoint.loading).remove(&self.bucket);
    }
}

/// What the fetch in flight settled on; `None` if its task ended without saying.
async fn settled(mut pending: Pending) -> Option<Held> {
    pending
        .wait_for(Option::is_some)
        .await
        .ok()
        .and_then(|held| held.clone())
}

/// A poisoned lock only means a panic elsewhere; the data it guards stays consistent.
fn lock<T>(mutex: &StdMutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fetch_rate_allows_a_burst_then_its_rate() {
        let start = Instant::now();
        let rate = FetchRate::new(4, start);
        let taken = (0..10).filter(|_| rate.try_take(start)).count();
        assert_eq!(taken, 4, "a burst of the rate's size");
        let later = start + Duration::from_millis(500);
        let taken = (0..10).filter(|_| rate.try_take(later)).count();
        assert_eq!(taken, 2, "half a second refills half the rate");
        let much_later = later + Duration::from_secs(60);
        let taken = (0..10).filter(|_| rate.try_take(much_later)).count();
        assert_eq!(taken, 4, "an idle while never saves more than one burst");
    }

    #[test]
    fn a_clock_going_backwards_takes_nothing_extra() {
        let start = Instant::now() + Duration::from_secs(1);
        let rate = FetchRate::new(1, start);
        assert!(rate.try_take(start));
        assert!(!rate.try_take(start - Duration::from_millis(500)));
        assert!(!rate.try_take(start + Duration::from_millis(500)));
        assert!(rate.try_take(start + Duration::from_secs(1)));
    }

    #[test]
    fn a_throttled_warning_counts_what_it_did_not_log() {
        let start = Instant::now();
        let log = Throttled::default();
        assert_eq!(log.admit(start), Some(0));
        for _ in 0..5 {
            assert_eq!(log.admit(start + Duration::from_secs(1)), None);
        }
        assert_eq!(log.admit(start + WARN_EVERY), Some(5));
        assert_eq!(log.admit(start + WARN_EVERY), None);
    }

    #[test]
    fn a_missing_bucket_is_remembered_longer_than_an_unreadable_one() {
        let expiry = AbsentFor {
            no_such_bucket: Duration::from_secs(60),
        };
        let unreadable = Absent::Unreadable(Unavailable::NotLoaded {
            bucket: "b".into(),
            reason: "down".into(),
        });
        assert_eq!(expiry.ttl(&Absent::NoSuchBucket), Duration::from_secs(60));
        assert_eq!(expiry.ttl(&unreadable), RETRY_FIRST_LOAD_AFTER);
    }

    #[test]
    fn a_bucket_is_idle_from_its_last_request() {
        let known = KnownBucket::new(
            BucketRules::new(
                "route[1]".into(),
                "b".into(),
                Arc::new(test_fetcher()),
                Duration::from_secs(30),
            ),
            1_000,
        );
        known.seen(1_050);
        assert_eq!(
            known.idle_for(1_050),
            Duration::from_millis(50),
            "too close to record"
        );
        known.seen(5_000);
        assert_eq!(known.idle_for(6_000), Duration::from_secs(1));
        known.drop_now();
        known.drop_now();
        assert!(known.is_dropped());
    }

    fn test_fetcher() -> BucketFetcher {
        let tls = crate::tls::client_config(crate::tls::OriginRoots::Webpki, None)
            .expect("built-in roots");
        BucketFetcher::with_credentials(
            super::super::bucket::fetch_client(Duration::from_secs(1), tls),
            crate::config::OriginUrl::parse("http://127.0.0.1:9").expect("valid origin"),
            super::super::bucket::FetchStyle::Path,
            "us-east-1".into(),
            None,
        )
    }
}
