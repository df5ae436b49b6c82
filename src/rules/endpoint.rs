//! An S3 endpoint route's rules: one [`BucketRules`] per bucket, each loaded on the bucket's first
//! request and kept in a bounded map (the least recently used are dropped, and fetched again on
//! their next request), each polled and refreshed by write-through like a bucket route's.
//!
//! The bucket comes from the request as the route's addressing says (the path's first segment, or
//! the Host's first label). A request that names no bucket (the endpoint root) or a name no bucket
//! can have is judged as S3 judges a missing bucket, without asking the origin.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use moka::sync::Cache;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::bucket::{BucketFetcher, BucketRules, is_bucket_name};
use super::live::{LiveRules, Loaded};
use super::{Resolved, RulesError};
use crate::cors::{BucketCors, Resource};
use crate::s3::Addressing;

/// A bucket nobody asked for in this long is dropped (and stops being polled).
const IDLE_BUCKET: Duration = Duration::from_secs(3600);
/// `POST /-/reload` refetches the buckets at most this many at a time.
const RELOAD_CONCURRENCY: usize = 16;

pub struct EndpointBuckets {
    /// `route[N]`, for logs.
    label: String,
    addressing: Addressing,
    region: String,
    fetcher: Arc<BucketFetcher>,
    poll: Duration,
    buckets: Cache<String, Arc<BucketRules>>,
    /// What requests naming no bucket are judged by.
    no_bucket: LiveRules,
    /// Set once the gateway runs: new buckets start polling until it flips.
    shutdown: OnceLock<watch::Receiver<bool>>,
}

impl EndpointBuckets {
    pub fn new(
        label: String,
        addressing: Addressing,
        region: String,
        fetcher: Arc<BucketFetcher>,
        poll: Duration,
        max_buckets: u64,
    ) -> EndpointBuckets {
        EndpointBuckets {
            label,
            addressing,
            region,
            fetcher,
            poll,
            buckets: Cache::builder()
                .max_capacity(max_buckets)
                .time_to_idle(IDLE_BUCKET)
                .build(),
            no_bucket: LiveRules::with(Loaded::without_document(BucketCors::NoSuchBucket)),
            shutdown: OnceLock::new(),
        }
    }

    /// Lets buckets poll from now on, until `shutdown` flips.
    pub fn start(&self, shutdown: watch::Receiver<bool>) {
        let _ = self.shutdown.set(shutdown);
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

    fn entry(&self, bucket: &str) -> Arc<BucketRules> {
        if let Some(rules) = self.buckets.get(bucket) {
            return rules;
        }
        let rules = self.buckets.get_with(bucket.to_string(), || {
            Arc::new(BucketRules::new(
                self.label.clone(),
                bucket.to_string(),
                Arc::clone(&self.fetcher),
                self.poll,
            ))
        });
        if let Some(shutdown) = self.shutdown.get() {
            rules.spawn_poller(shutdown.clone());
        }
        rules
    }

    pub async fn resolve(&self, host: &str, path: &str) -> Resolved {
        let Some((bucket, key)) = self.bucket_name(host, path) else {
            return Resolved {
                rules: self.no_bucket.current().ok_or_else(unreachable_state),
                resource: Resource::of_key(path),
            };
        };
        let rules = self.entry(&bucket);
        Resolved {
            rules: rules.current_or_load().await,
            resource: Resource::of_key(key),
        }
    }

    /// The bucket a request to the bucket itself (not to one of its objects) names.
    pub fn bucket_written(&self, host: &str, path: &str) -> Option<Arc<BucketRules>> {
        let (bucket, key) = self.bucket_name(host, path)?;
        key.is_empty().then(|| self.entry(&bucket))
    }

    /// The rules of bucket `name`, held from now on as a request for it would hold them (the
    /// admin panel opens buckets by name); `None` for a name no bucket can have.
    pub fn bucket(&self, name: &str) -> Option<Arc<BucketRules>> {
        if !is_bucket_name(name) {
            return None;
        }
        Some(match self.addressing {
            Addressing::Virtual => self.entry(&name.to_ascii_lowercase()),
            Addressing::Path => self.entry(name),
        })
    }

    /// Refetches every bucket held now.
    pub async fn refresh_all(&self, why: &str) -> Vec<(Option<String>, Result<bool, RulesError>)> {
        let limit = Arc::new(Semaphore::new(RELOAD_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for (_, rules) in self.buckets.iter() {
            let limit = Arc::clone(&limit);
            let why = why.to_string();
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                let result = rules.refresh(&why).await;
                (Some(rules.name().to_string()), result)
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
            .map(|(name, rules)| ((*name).clone(), rules.live().view()))
            .collect();
        buckets.sort_by(|a, b| a.0.cmp(&b.0));
        json!({
            "source": {
                "s3": {
                    "addressing": match self.addressing { Addressing::Path => "path", Addressing::Virtual => "virtual" },
                    "region": self.region,
                    "poll": humantime::format_duration(self.poll).to_string(),
                    "signed": self.fetcher.is_signing(),
                }
            },
            "buckets": buckets.into_iter().map(|(bucket, rules)| json!({ "bucket": bucket, "rules": rules })).collect::<Vec<_>>(),
        })
    }

    pub fn describe(&self) -> String {
        let addressing = match self.addressing {
            Addressing::Path => "path-style",
            Addressing::Virtual => "virtual-hosted",
        };
        format!("S3 endpoint ({addressing}): each bucket's rules read from the bucket")
    }
}

fn unreachable_state() -> super::Unavailable {
    super::Unavailable {
        bucket: String::new(),
        reason: "no rules".into(),
    }
}
