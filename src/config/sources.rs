//! Where a route's CORS rules come from, as configured (`rules = { ... }`, `s3 = { ... }`,
//! `shadow_rules = { ... }`), with the defaults of what they leave out. Only values: the
//! rules layer reads, fetches and watches them.

use std::path::PathBuf;
use std::time::Duration;

use crate::s3::Addressing;

/// How often bucket rules are fetched again when the configuration does not say.
pub(crate) const DEFAULT_POLL: Duration = Duration::from_secs(30);
/// How many buckets an S3 endpoint route keeps rules for when the configuration does not say.
pub(crate) const DEFAULT_MAX_BUCKETS: u64 = 10_000;
/// The region requests are signed for when the configuration does not say.
pub(crate) const DEFAULT_REGION: &str = "us-east-1";

/// A route's rules source, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulesSource {
    /// The route has no CORS configuration: preflights get S3's 403 "CORS is not enabled",
    /// forwarded responses get no CORS headers.
    None,
    /// An S3 `CORSConfiguration` (XML or AWS CLI JSON) on disk, relative to the working
    /// directory; watched, and reloaded on `SIGHUP` and `POST /-/reload`.
    File(PathBuf),
    /// The rules stored in one bucket of the route's origin (`rules = { bucket = ... }`).
    Bucket(BucketSource),
    /// Every bucket of an S3-compatible endpoint, each with its own stored rules
    /// (`s3 = { addressing = ... }`).
    Endpoint(EndpointSource),
}

/// `rules = { bucket = "name", poll = "30s", region = ..., *_env = ... }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketSource {
    pub bucket: String,
    pub poll: Duration,
    pub signing: SigningConfig,
}

/// `s3 = { addressing = "path" | "virtual", region = ..., poll = ..., max_buckets = ... }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSource {
    pub addressing: Addressing,
    pub poll: Duration,
    /// Buckets whose rules are kept at once; the least used are dropped (and fetched again on
    /// their next request).
    pub max_buckets: u64,
    /// How long a bucket the origin says does not exist (`NoSuchBucket`) is remembered as
    /// missing: its requests are answered without asking the origin again.
    pub negative_ttl: Duration,
    /// Origin fetches of not-yet-known buckets' rules per second, over the whole route; a
    /// request for a new bucket over the rate gets 503 `SlowDown` instead of waiting.
    pub max_fetches_per_second: u32,
    /// A bucket not requested for this long is no longer polled (and is fetched again on its
    /// next request).
    pub bucket_idle: Duration,
    pub signing: SigningConfig,
}

impl EndpointSource {
    /// An endpoint route with every setting but `addressing` at its default.
    pub fn defaults(addressing: Addressing) -> EndpointSource {
        EndpointSource {
            addressing,
            poll: DEFAULT_POLL,
            max_buckets: DEFAULT_MAX_BUCKETS,
            negative_ttl: Duration::from_secs(60),
            max_fetches_per_second: 50,
            bucket_idle: Duration::from_secs(300),
            signing: SigningConfig::default(),
        }
    }
}

/// How corsgate signs its own `GET ?cors` requests: the region, and the names of the
/// environment variables holding the keys (never the keys: secrets stay out of files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningConfig {
    pub region: String,
    pub access_key_env: String,
    pub secret_key_env: String,
    pub(crate) session_token_env: String,
    /// The configuration named the variables: they must be set. With the default names, unset
    /// variables mean unsigned (anonymous) requests, as `aws --no-sign-request` sends.
    pub explicit: bool,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            region: DEFAULT_REGION.into(),
            access_key_env: "AWS_ACCESS_KEY_ID".into(),
            secret_key_env: "AWS_SECRET_ACCESS_KEY".into(),
            session_token_env: "AWS_SESSION_TOKEN".into(),
            explicit: false,
        }
    }
}

/// `shadow_rules = { ... }`: the candidate's source, with the same keys as `rules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowSource {
    pub rules: RulesSource,
    pub deny_warnings: bool,
}
