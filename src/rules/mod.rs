//! Where a route's CORS rules come from, and keeping them current while traffic flows.
//!
//! A route's rules come from nothing, a file ([`file`]: watched, reloaded on `SIGHUP` and on the
//! admin listener's `POST /-/reload`), one bucket ([`bucket`]: `GET /<bucket>?cors` on the
//! origin, signed, polled, refreshed at once when a `PUT`/`DELETE ?cors` passes through), or
//! every bucket of an S3 endpoint ([`endpoint`]: each bucket loaded on its first request into a
//! bounded map, with what made-up bucket names may cost the origin bounded too). Each source
//! keeps its rules in a [`LiveRules`]: an atomically swapped
//! [`Snapshot`] that requests read without a lock, plus what the admin listener shows.
//!
//! Two promises hold for every source: a swap never blocks or fails a request in flight (it keeps
//! the snapshot it loaded), and a bad update (unreadable file, invalid document, origin error,
//! or a document with lint warnings under `deny_warnings`) never replaces good rules: the error
//! is logged and shown, the old rules keep serving.
//!
//! A route may also name candidate rules ([`shadow`]): loaded and kept current the same way,
//! they judge every request beside the live rules without ever changing an answer.
//!
//! Nothing here speaks to clients: the gateway asks [`RouteRules::resolve`] which snapshot a
//! request is judged by, and answers.

pub mod bucket;
pub mod endpoint;
pub mod file;
pub mod live;
pub mod preflight;
pub mod shadow;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;

use http::Method;

pub use bucket::{BucketFetcher, BucketRules};
pub use endpoint::EndpointBuckets;
pub use file::FileRules;
pub use live::{Current, LiveRules, Loaded};
pub use snapshot::{Snapshot, SnapshotCell};

// The sources are configuration, and defined there; named here too, where they are started.
pub use crate::config::{BucketSource, EndpointSource, RulesSource, SigningConfig};

use crate::config::OriginUrl;
use crate::cors::lint::Lint;
use crate::cors::{BucketCors, ConfigError, Problem, Resource};
use crate::s3::{FetchError, SigningError};
use crate::watch::Scope;
use bucket::FetchClient;

/// Why rules could not be loaded. The rules in force (if any) stay.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: file::ReadError,
    },
    #[error("{}", render(path, error))]
    Invalid { path: PathBuf, error: ConfigError },
    #[error("bucket {bucket}: {error}")]
    Fetch { bucket: String, error: FetchError },
    #[error("{0}")]
    Credentials(#[from] SigningError),
    /// `deny_warnings`: the document is valid for S3 but has lint warnings.
    #[error("{}", render_warnings(document, warnings))]
    Warnings {
        /// The document, as log lines name it (a path, `bucket NAME`).
        document: String,
        warnings: Vec<Lint>,
    },
}

/// `SOURCE: refused (...): CODES`, then one `SOURCE:LINE:COL: CODE: warning: ...` line each, as
/// `corsgate check` prints them.
fn render_warnings(document: &str, warnings: &[Lint]) -> String {
    let mut codes: Vec<&str> = Vec::new();
    for warning in warnings {
        if !codes.contains(&warning.kind.code()) {
            codes.push(warning.kind.code());
        }
    }
    let mut text = format!(
        "{document}: refused, the document has warnings and deny_warnings is set: {}",
        codes.join(", ")
    );
    for warning in warnings {
        text.push_str(&format!("\n{document}:{warning}"));
    }
    text
}

fn render(path: &std::path::Path, error: &ConfigError) -> String {
    let lines: Vec<String> = error
        .problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect();
    lines.join("\n")
}

impl RulesError {
    /// The document's problems (each with line, column and S3 code), when it was invalid.
    pub fn problems(&self) -> &[Problem] {
        match self {
            RulesError::Invalid { error, .. }
            | RulesError::Fetch {
                error: FetchError::InvalidDocument(error),
                ..
            } => &error.problems,
            _ => &[],
        }
    }

    /// Worth retrying soon (the origin or the network may recover by themselves).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            RulesError::Fetch { error, .. } => error.is_transient(),
            _ => false,
        }
    }
}

/// A route's rules at run time, whatever their source.
pub enum RouteRules {
    /// No CORS configuration, for ever.
    Fixed(LiveRules),
    File(Arc<FileRules>),
    Bucket(Arc<BucketRules>),
    Endpoint(Arc<EndpointBuckets>),
}

/// What a request is judged by.
pub struct Resolved {
    /// The rules in force, or why there are none to judge by.
    pub rules: Result<Current, Unavailable>,
    /// `<ResourceType>` of S3's answers: from the key the request names.
    pub resource: Resource,
}

/// No rules are known for the request's bucket: answering as if CORS were off would be a guess.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unavailable {
    /// The last attempt to load them failed.
    #[error("the CORS rules of bucket {bucket} are not loaded: {reason}")]
    NotLoaded { bucket: String, reason: String },
    /// The bucket is new to its S3 endpoint route, and the route already fetches new buckets'
    /// rules as fast as `max_fetches_per_second` allows: S3's own `SlowDown`, so clients back
    /// off and retry.
    #[error(
        "the CORS rules of bucket {bucket} are not loaded: new buckets are requested faster than \
         the route fetches them ({per_second} per second, s3.max_fetches_per_second)"
    )]
    SlowDown { bucket: String, per_second: u32 },
}

impl Unavailable {
    /// Refused to spare the origin, not because it failed: the request must not reach it either.
    pub(crate) fn is_slow_down(&self) -> bool {
        matches!(self, Unavailable::SlowDown { .. })
    }
}

/// A bucket whose rules must be fetched again once a write through the gateway succeeds.
pub(crate) struct WriteThrough(Written);

enum Written {
    Bucket(Arc<BucketRules>),
    /// A bucket of an S3 endpoint route, by name: it may not be held yet (a `CreateBucket`).
    Endpoint(Arc<EndpointBuckets>, String),
}

impl WriteThrough {
    /// Refetches now; the next request sees what the origin now holds.
    ///
    /// Boxed: the fetch's state machine would otherwise sit inside every proxied request's
    /// future, to be copied each time one is created, for the rare write that changes CORS.
    pub(crate) async fn refresh(self) {
        match self.0 {
            Written::Bucket(bucket) => {
                let _ = Box::pin(bucket.refresh("write-through")).await;
            }
            Written::Endpoint(endpoint, bucket) => Box::pin(endpoint.written(&bucket)).await,
        }
    }
}

impl RouteRules {
    /// A route's rules from its source: a file is read now (an error stops the start); bucket
    /// sources start empty and are fetched by [`RouteRules::start`].
    pub fn build(
        label: &str,
        source: &RulesSource,
        origin: &OriginUrl,
        client: &FetchClient,
    ) -> Result<RouteRules, RulesError> {
        RouteRules::build_checked(label, source, false, origin, client)
    }

    /// [`RouteRules::build`]; with `deny_warnings`, documents with lint warnings are refused
    /// like invalid ones, at start and on every reload.
    pub(crate) fn build_checked(
        label: &str,
        source: &RulesSource,
        deny_warnings: bool,
        origin: &OriginUrl,
        client: &FetchClient,
    ) -> Result<RouteRules, RulesError> {
        Ok(match source {
            RulesSource::None => RouteRules::Fixed(LiveRules::with(Loaded::without_document(
                BucketCors::NotConfigured,
            ))),
            RulesSource::File(path) => RouteRules::File(Arc::new(FileRules::load(
                label.into(),
                path.clone(),
                deny_warnings,
            )?)),
            RulesSource::Bucket(source) => {
                let style = bucket::FetchStyle::for_bucket_route(origin, &source.bucket);
                let fetcher =
                    BucketFetcher::new(client.clone(), origin.clone(), style, &source.signing)?
                        .deny_warnings(deny_warnings);
                RouteRules::Bucket(Arc::new(BucketRules::new(
                    label.into(),
                    source.bucket.clone(),
                    Arc::new(fetcher),
                    source.poll,
                )))
            }
            RulesSource::Endpoint(source) => {
                let fetcher = BucketFetcher::new(
                    client.clone(),
                    origin.clone(),
                    source.addressing.into(),
                    &source.signing,
                )?
                .deny_warnings(deny_warnings);
                RouteRules::Endpoint(Arc::new(EndpointBuckets::new(
                    label.into(),
                    source,
                    Arc::new(fetcher),
                )))
            }
        })
    }

    /// Starts, in `scope`, what keeps the rules current until it stops: the file watch, the
    /// pollers, `SIGHUP`. A bucket route's first fetch is awaited (it is bounded by
    /// [`bucket::FETCH_TIMEOUT`]), so the gateway starts serving with the bucket's rules whenever
    /// the origin answers; if it does not, the route starts without rules and keeps trying.
    pub async fn start(&self, scope: &Scope) {
        match self {
            RouteRules::Fixed(_) => {}
            RouteRules::File(file) => file.spawn(scope),
            RouteRules::Bucket(bucket) => {
                let _ = bucket.refresh("start").await;
                bucket.spawn_poller(scope);
                let bucket = Arc::clone(bucket);
                on_hangup(scope, move || {
                    let bucket = Arc::clone(&bucket);
                    async move {
                        let _ = bucket.refresh("SIGHUP").await;
                    }
                });
            }
            RouteRules::Endpoint(endpoint) => {
                endpoint.start(scope);
                let endpoint = Arc::clone(endpoint);
                on_hangup(scope, move || {
                    let endpoint = Arc::clone(&endpoint);
                    async move {
                        endpoint.refresh_all("SIGHUP").await;
                    }
                });
            }
        }
    }

    /// The snapshot and resource type a request to `host` + `path` is judged by. Loads the
    /// snapshot once: the caller keeps it for the whole request.
    pub async fn resolve(&self, host: &str, path: &str) -> Resolved {
        match self.resolve_now(path) {
            Ok(resolved) => resolved,
            // Boxed: a first request for a bucket fetches its rules, and that state machine
            // (hundreds of bytes) would otherwise sit inside every request's future on every
            // route, to be copied each time one is created.
            Err(endpoint) => Box::pin(endpoint.resolve(host, path)).await,
        }
    }

    /// [`RouteRules::resolve`] without waiting, or the S3 endpoint whose bucket's rules may have
    /// to be fetched first.
    pub(crate) fn resolve_now(&self, path: &str) -> Result<Resolved, &Arc<EndpointBuckets>> {
        match self {
            RouteRules::Fixed(live) => Ok(resolved(live, path)),
            RouteRules::File(file) => Ok(resolved(file.live(), path)),
            RouteRules::Bucket(bucket) => Ok(Resolved {
                rules: bucket.current(),
                resource: Resource::of_key(path),
            }),
            RouteRules::Endpoint(endpoint) => Err(endpoint),
        }
    }

    /// Whether `method host path?query` may change a bucket's CORS state through this route;
    /// the caller refreshes the bucket once the origin says 2xx.
    ///
    /// On a bucket route that is a `PUT`/`DELETE ?cors`. On an S3 endpoint route it is any
    /// `PUT`/`DELETE` of a bucket itself (not of an object): `PutBucketCors` and
    /// `DeleteBucketCors`, but also `CreateBucket` and `DeleteBucket`, which turn "no such bucket"
    /// into "CORS not enabled" and back (the bucket's state was fetched for the request that
    /// created it, and must not stay "no such bucket" until the next poll).
    pub(crate) fn write_through(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<WriteThrough> {
        if !(method == Method::PUT || method == Method::DELETE) {
            return None;
        }
        match self {
            // A bucket route serves one bucket: any `?cors` write through it is that bucket's.
            RouteRules::Bucket(bucket) => crate::s3::addressing::is_cors_subresource(query)
                .then(|| WriteThrough(Written::Bucket(Arc::clone(bucket)))),
            RouteRules::Endpoint(endpoint) => endpoint
                .bucket_written(host, path)
                .map(|bucket| WriteThrough(Written::Endpoint(Arc::clone(endpoint), bucket))),
            RouteRules::Fixed(_) | RouteRules::File(_) => None,
        }
    }

    /// Reloads now (file read again, buckets fetched again): `POST /-/reload`.
    pub async fn reload(&self, why: &str) -> Vec<(Option<String>, Result<bool, RulesError>)> {
        match self {
            RouteRules::Fixed(_) => Vec::new(),
            RouteRules::File(file) => vec![(None, file.reload(why).await)],
            RouteRules::Bucket(bucket) => vec![(None, bucket.refresh(why).await)],
            RouteRules::Endpoint(endpoint) => endpoint.refresh_all(why).await,
        }
    }

    /// Whether the route has rules to judge by (an S3 endpoint route always has: each bucket
    /// is loaded on demand).
    pub(crate) fn is_ready(&self) -> bool {
        match self {
            RouteRules::Fixed(_) | RouteRules::Endpoint(_) => true,
            RouteRules::File(file) => file.live().current().is_some(),
            RouteRules::Bucket(bucket) => bucket.live().current().is_some(),
        }
    }

    /// The generation in force (`None` on an S3 endpoint route: each bucket has its own).
    pub fn generation(&self) -> Option<u64> {
        match self {
            RouteRules::Fixed(live) => Some(live.generation()),
            RouteRules::File(file) => Some(file.live().generation()),
            RouteRules::Bucket(bucket) => Some(bucket.live().generation()),
            RouteRules::Endpoint(_) => None,
        }
    }

    /// What `GET /-/rules` shows of this route.
    pub fn view(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            RouteRules::Fixed(live) => json!({ "source": "none", "rules": live.view() }),
            RouteRules::File(file) => json!({
                "source": { "file": file.path().display().to_string() },
                "rules": file.live().view(),
            }),
            RouteRules::Bucket(bucket) => json!({
                "source": { "bucket": bucket.name(), "poll": humantime::format_duration(bucket.poll()).to_string() },
                "rules": bucket.live().view(),
            }),
            RouteRules::Endpoint(endpoint) => endpoint.view(),
        }
    }

    /// One line for the start-up log.
    pub(crate) fn describe(&self) -> String {
        let rules = |live: &LiveRules| match live.current() {
            Some(snapshot) => match snapshot.cors.policy() {
                Some(policy) => format!("{} rule(s)", policy.rules().len()),
                None => "no CORS configuration".to_string(),
            },
            None => "rules not loaded yet".to_string(),
        };
        match self {
            RouteRules::Fixed(live) => rules(live),
            RouteRules::File(file) => {
                format!("{} from {}", rules(file.live()), file.path().display())
            }
            RouteRules::Bucket(bucket) => {
                format!("{} from bucket {}", rules(bucket.live()), bucket.name())
            }
            RouteRules::Endpoint(endpoint) => endpoint.describe(),
        }
    }
}

/// Runs `reload` on every `SIGHUP` until `scope` stops.
fn on_hangup<F, Fut>(scope: &Scope, reload: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut hangup = scope.hangup();
    let mut shutdown = scope.stop_signal();
    scope.spawn(async move {
        loop {
            tokio::select! {
                () = hangup.recv() => reload().await,
                _ = shutdown.changed() => return,
            }
        }
    });
}

fn resolved(live: &LiveRules, path: &str) -> Resolved {
    Resolved {
        rules: live.current().ok_or_else(|| Unavailable::NotLoaded {
            bucket: String::new(),
            reason: "no rules loaded".into(),
        }),
        resource: Resource::of_key(path),
    }
}
