//! Rules read from the bucket itself: `GET /<bucket>?cors` on the origin, signed with AWS
//! Signature V4 when credentials are in the environment, fetched again every `poll` and at once
//! when a `PUT`/`DELETE ?cors` succeeds through the gateway.
//!
//! `NoSuchCORSConfiguration` means CORS is off for the bucket and `NoSuchBucket` that there is no
//! bucket (docs/cors-semantics.md#bucket-state): both are rules like any other. Anything else (an origin error,
//! an unreachable origin, a document corsgate cannot accept) keeps the last good rules; a
//! transient failure is retried with exponential backoff (1 s, 2 s, 4 s, ... up to `poll`).
//! Fetches of one bucket never overlap, so an older answer can never overwrite a newer one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Mutex;

use super::live::{self, Current, LiveRules, Loaded};
use super::{RulesError, SigningConfig, Unavailable};
use crate::config::OriginUrl;
use crate::cors::BucketCors;
use crate::cors::document::MAX_DOCUMENT_BYTES;
use crate::metrics::{self, BucketFetch, RulesSource};
use crate::s3::{Addressing, Credentials, FetchError, interpret_document, sign_payload};
use crate::watch::Scope;

/// A whole fetch (connect, answer, body) must end within this; past it the fetch failed
/// (transiently) and the rules in force stay.
pub(crate) const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay after a transient failure; doubled each time, capped at the poll interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Room for an error body or XML preamble beyond the largest document S3 accepts.
const MAX_BODY: usize = MAX_DOCUMENT_BYTES + 16 * 1024;

/// The client corsgate's own requests to origins go through (the pool is keyed by origin): `GET
/// ?cors` with no body, and the admin panel's `PUT ?cors` with a document.
pub(crate) type FetchClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn fetch_client(connect_timeout: Duration, tls: rustls::ClientConfig) -> FetchClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(crate::tls::origin_connector(connect_timeout, tls))
}

/// Where a bucket's `?cors` subresource is on the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchStyle {
    /// `GET {prefix}/{bucket}?cors` to the origin's host.
    Path,
    /// `GET {prefix}/?cors` with `Host: {bucket}.{origin host}`.
    Virtual,
    /// The origin's own host names the bucket (`https://photos.nyc3.digitaloceanspaces.com`):
    /// `GET {prefix}/?cors` to it.
    OriginIsBucket,
}

impl FetchStyle {
    /// How a single-bucket route reaches its bucket: through the origin's host when that host
    /// starts with `{bucket}.`, else path-style (a path prefix ending in `/{bucket}` is the
    /// bucket itself, not a place the bucket lives under).
    pub(crate) fn for_bucket_route(origin: &OriginUrl, bucket: &str) -> FetchStyle {
        let host = origin.authority.host().to_ascii_lowercase();
        if host
            .strip_prefix(&bucket.to_ascii_lowercase())
            .is_some_and(|rest| rest.starts_with('.'))
        {
            FetchStyle::OriginIsBucket
        } else {
            FetchStyle::Path
        }
    }
}

impl From<Addressing> for FetchStyle {
    fn from(addressing: Addressing) -> FetchStyle {
        match addressing {
            Addressing::Path => FetchStyle::Path,
            Addressing::Virtual => FetchStyle::Virtual,
        }
    }
}

/// Fetches buckets' rules from one origin.
pub struct BucketFetcher {
    client: FetchClient,
    origin: OriginUrl,
    style: FetchStyle,
    region: String,
    /// `None`: unsigned requests.
    credentials: Option<Credentials>,
    /// `deny_warnings`: a document with lint warnings is a failed fetch.
    deny_warnings: bool,
}

impl BucketFetcher {
    /// Reads the credentials now: explicitly named variables must be set; unset default ones mean
    /// unsigned requests.
    pub fn new(
        client: FetchClient,
        origin: OriginUrl,
        style: FetchStyle,
        signing: &SigningConfig,
    ) -> Result<BucketFetcher, RulesError> {
        let credentials = match Credentials::from_env(
            &signing.access_key_env,
            &signing.secret_key_env,
            &signing.session_token_env,
        ) {
            Ok(credentials) => Some(credentials),
            Err(err) if signing.explicit => return Err(err.into()),
            Err(_) => None,
        };
        Ok(BucketFetcher {
            client,
            origin,
            style,
            region: signing.region.clone(),
            credentials,
            deny_warnings: false,
        })
    }

    /// Refuses documents with lint warnings (`deny_warnings`), as invalid ones are.
    pub fn deny_warnings(mut self, deny: bool) -> BucketFetcher {
        self.deny_warnings = deny;
        self
    }

    /// With these credentials (or none), whatever the environment says.
    #[cfg(test)]
    pub(crate) fn with_credentials(
        client: FetchClient,
        origin: OriginUrl,
        style: FetchStyle,
        region: String,
        credentials: Option<Credentials>,
    ) -> BucketFetcher {
        BucketFetcher {
            client,
            origin,
            style,
            region,
            credentials,
            deny_warnings: false,
        }
    }

    pub(crate) fn is_signing(&self) -> bool {
        self.credentials.is_some()
    }

    /// The client the requests go through.
    pub(crate) fn client(&self) -> &FetchClient {
        &self.client
    }

    pub(crate) fn origin(&self) -> &OriginUrl {
        &self.origin
    }

    /// The `GET ?cors` request for `bucket`, signed when there are credentials.
    fn request(&self, bucket: &str) -> Result<Request<Full<Bytes>>, FetchError> {
        self.cors_request(Method::GET, bucket, &[], Bytes::new())
    }

    /// A `?cors` request for `bucket` (`GET` reads the rules, `PUT` with a document stores them)
    /// with `headers` added, signed with `body` when there are credentials.
    pub(crate) fn cors_request(
        &self,
        method: Method,
        bucket: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, FetchError> {
        let prefix = self.origin.path_prefix.as_str();
        let authority = self.origin.authority.as_str();
        let (path, host) = match self.style {
            FetchStyle::Path => {
                let prefix = prefix.strip_suffix(&format!("/{bucket}")).unwrap_or(prefix);
                (format!("{prefix}/{bucket}?cors"), authority.to_string())
            }
            FetchStyle::Virtual => (format!("{prefix}/?cors"), format!("{bucket}.{authority}")),
            FetchStyle::OriginIsBucket => (format!("{prefix}/?cors"), authority.to_string()),
        };
        let bad = |what: &str| FetchError::Signing(format!("bucket {bucket:?} makes {what}"));
        let path = PathAndQuery::try_from(path).map_err(|_| bad("an invalid path"))?;
        let uri = Uri::builder()
            .scheme(self.origin.scheme.clone())
            .authority(self.origin.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| bad("an invalid URL"))?;
        let host = HeaderValue::from_str(&host).map_err(|_| bad("an invalid Host"))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, host);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let mut request = builder
            .body(Full::new(body.clone()))
            .map_err(|e| FetchError::Signing(e.to_string()))?;
        if let Some(credentials) = &self.credentials {
            sign_payload(
                &mut request,
                credentials,
                &self.region,
                SystemTime::now(),
                &body,
            )
            .map_err(|e| FetchError::Signing(e.to_string()))?;
        }
        Ok(request)
    }

    /// Fetches and interprets `bucket`'s rules.
    pub async fn fetch(&self, bucket: &str) -> Result<Loaded, RulesError> {
        let fetched = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_inner(bucket))
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Unreachable(format!(
                    "no complete answer from {} within {FETCH_TIMEOUT:?}",
                    self.origin
                )))
            });
        metrics::bucket_fetched(match &fetched {
            Ok(loaded) => match loaded.cors {
                BucketCors::Enabled(_) => BucketFetch::Rules,
                BucketCors::NotConfigured => BucketFetch::NotConfigured,
                BucketCors::NoSuchBucket => BucketFetch::NoSuchBucket,
            },
            Err(FetchError::InvalidDocument(_)) => BucketFetch::Invalid,
            Err(_) => BucketFetch::Error,
        });
        let loaded = fetched.map_err(|error| RulesError::Fetch {
            bucket: bucket.to_string(),
            error,
        })?;
        if self.deny_warnings {
            loaded.deny_warnings(|| format!("bucket {bucket}"))
        } else {
            Ok(loaded)
        }
    }

    async fn fetch_inner(&self, bucket: &str) -> Result<Loaded, FetchError> {
        let request = self.request(bucket)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Unreachable(format!("{}: {e}", self.origin)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                FetchError::Unreachable(format!("{}: reading the answer: {e}", self.origin))
            })?
            .to_bytes();
        let (cors, document) = interpret_document(status, &body)?;
        Ok(Loaded { cors, document })
    }
}

/// One bucket's rules.
pub struct BucketRules {
    /// `route[N]`, for logs.
    label: String,
    bucket: String,
    fetcher: Arc<BucketFetcher>,
    poll: Duration,
    live: LiveRules,
    /// Held for the whole of a fetch: fetches of one bucket never overlap.
    fetching: Mutex<()>,
    /// Why the last fetch failed, for "unavailable" answers (read off the request path only when
    /// no rules were ever loaded).
    last_failure: StdMutex<Option<String>>,
    polling: AtomicBool,
}

impl BucketRules {
    pub fn new(label: String, bucket: String, fetcher: Arc<BucketFetcher>, poll: Duration) -> Self {
        let live = LiveRules::named(format!("{label}: bucket {bucket}"));
        BucketRules {
            label,
            bucket,
            fetcher,
            poll,
            live,
            fetching: Mutex::new(()),
            last_failure: StdMutex::new(None),
            polling: AtomicBool::new(false),
        }
    }

    /// A bucket whose first fetch already answered: nothing is ever served without rules.
    pub fn with_rules(
        label: String,
        bucket: String,
        fetcher: Arc<BucketFetcher>,
        poll: Duration,
        loaded: Loaded,
    ) -> Self {
        let rules = BucketRules::new(label, bucket, fetcher, poll);
        rules.live.offer(loaded);
        rules
    }

    pub fn name(&self) -> &str {
        &self.bucket
    }

    pub fn poll(&self) -> Duration {
        self.poll
    }

    pub fn live(&self) -> &LiveRules {
        &self.live
    }

    /// Where the bucket's rules are read from (and, by the admin panel, written to).
    pub(crate) fn fetcher(&self) -> &BucketFetcher {
        &self.fetcher
    }

    /// The rules in force, without fetching.
    pub fn current(&self) -> Result<Current, Unavailable> {
        self.live.current().ok_or_else(|| self.unavailable())
    }

    fn unavailable(&self) -> Unavailable {
        let reason = self
            .last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "not fetched yet".into());
        Unavailable::NotLoaded {
            bucket: self.bucket.clone(),
            reason,
        }
    }

    /// Fetches now (after any fetch in progress); returns whether the rules changed.
    pub(crate) async fn refresh(&self, why: &str) -> Result<bool, RulesError> {
        let _fetching = self.fetching.lock().await;
        let result = match self.fetcher.fetch(&self.bucket).await {
            Ok(loaded) => {
                let changed = self.live.offer(loaded);
                if changed {
                    tracing::info!(
                        "{}: rules of bucket {} loaded ({why}): generation {}",
                        self.label,
                        self.bucket,
                        self.live.generation()
                    );
                }
                Ok(changed)
            }
            Err(error) => {
                let serving = match self.live.generation() {
                    0 => "no rules yet: preflights are answered 503".to_string(),
                    generation => format!("generation {generation} keeps serving"),
                };
                tracing::warn!("{}: {error} ({why}); {serving}", self.label);
                *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(error.to_string());
                self.live.failed(&error);
                Err(error)
            }
        };
        live::count_load(&self.label, RulesSource::Bucket, &result);
        result
    }

    /// Polls until `scope` stops or the bucket is dropped (evicted from its route's map).
    /// Starts once, however often it is called.
    pub(crate) fn spawn_poller(self: &Arc<Self>, scope: &Scope) {
        let mut shutdown = scope.stop_signal();
        if self.polling.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<BucketRules> = Arc::downgrade(self);
        let poll = self.poll;
        let mut delay = if self.live.current().is_some() {
            poll
        } else {
            FIRST_BACKOFF.min(poll)
        };
        scope.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(jitter(delay)) => {}
                    _ = shutdown.changed() => return,
                }
                let Some(rules) = weak.upgrade() else { return };
                let polled = rules.refresh("poll").await;
                delay = next_poll(&polled, rules.live.current().is_some(), delay, poll);
            }
        });
    }
}

/// The wait before the next poll: `poll` after an answer, and after an error that waiting will
/// not cure while there are rules to serve; otherwise backing off from [`FIRST_BACKOFF`] up to
/// `poll`, so a flapping origin is asked again soon but never hammered.
pub(super) fn next_poll(
    polled: &Result<bool, RulesError>,
    has_rules: bool,
    delay: Duration,
    poll: Duration,
) -> Duration {
    match polled {
        Ok(_) => poll,
        Err(error) if error.is_transient() || !has_rules => {
            (delay * 2).clamp(FIRST_BACKOFF.min(poll), poll)
        }
        Err(_) => poll,
    }
}

/// ±10 %, so instances started together do not poll in step.
pub(super) fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.9 + fastrand::f64() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_tls() -> rustls::ClientConfig {
        crate::tls::client_config(crate::tls::OriginRoots::Webpki, None).expect("built-in roots")
    }

    fn fetcher(origin: &str, style: FetchStyle) -> BucketFetcher {
        BucketFetcher::with_credentials(
            fetch_client(Duration::from_secs(1), test_tls()),
            OriginUrl::parse(origin).expect("valid origin"),
            style,
            "us-east-1".into(),
            None,
        )
    }

    fn target(origin: &str, style: FetchStyle, bucket: &str) -> (String, String) {
        let req = fetcher(origin, style).request(bucket).expect("request");
        (
            req.uri().to_string(),
            req.headers()[HOST].to_str().expect("ascii").to_string(),
        )
    }

    #[test]
    fn cors_subresource_is_addressed_as_the_route_addresses_buckets() {
        let cases = [
            (
                "http://127.0.0.1:9000",
                FetchStyle::Path,
                "http://127.0.0.1:9000/photos?cors",
                "127.0.0.1:9000",
            ),
            (
                "http://127.0.0.1:9000/photos",
                FetchStyle::Path,
                "http://127.0.0.1:9000/photos?cors",
                "127.0.0.1:9000",
            ),
            (
                "http://127.0.0.1:9000/s3",
                FetchStyle::Path,
                "http://127.0.0.1:9000/s3/photos?cors",
                "127.0.0.1:9000",
            ),
            (
                "http://localhost:9000",
                FetchStyle::Virtual,
                "http://localhost:9000/?cors",
                "photos.localhost:9000",
            ),
            (
                "http://photos.store.example",
                FetchStyle::OriginIsBucket,
                "http://photos.store.example/?cors",
                "photos.store.example",
            ),
        ];
        for (origin, style, uri, host) in cases {
            assert_eq!(
                target(origin, style, "photos"),
                (uri.to_string(), host.to_string()),
                "{origin} {style:?}"
            );
        }
    }

    #[test]
    fn a_bucket_route_uses_the_origin_host_when_it_names_the_bucket() {
        let style = |origin: &str| {
            FetchStyle::for_bucket_route(&OriginUrl::parse(origin).expect("valid"), "photos")
        };
        assert_eq!(
            style("http://photos.nyc3.example.com"),
            FetchStyle::OriginIsBucket
        );
        assert_eq!(style("http://photosx.nyc3.example.com"), FetchStyle::Path);
        assert_eq!(style("http://127.0.0.1:9000/photos"), FetchStyle::Path);
    }
}
