//! A latency histogram that requests can feed without a lock.
//!
//! `prometheus-client`'s own histogram takes a lock per observation, and every request is
//! observed: on many cores at once that lock would be the one place requests wait for each
//! other. Here the buckets are fixed and each is its own atomic counter, and the sum is kept in
//! whole nanoseconds (an integer add, where an `f64` sum needs a compare-and-swap loop). An
//! observation is two atomic adds; the count and the cumulative buckets are worked out at
//! scrape time. A scrape racing observations may see a sum a few observations ahead of the
//! buckets, which Prometheus's own Go client also allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds of the buckets, in seconds: from a cached preflight (tens of microseconds) to a
/// slow origin (seconds), about three per decade.
pub(crate) const BOUNDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// [`BOUNDS`] in nanoseconds, for the request path to compare integers.
const BOUNDS_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

#[derive(Debug, Default)]
struct Buckets {
    /// Observations per bucket (not cumulative); the last one is `+Inf`'s.
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

/// Durations in fixed buckets; clones share the buckets.
#[derive(Clone, Debug, Default)]
pub(crate) struct Histogram(Arc<Buckets>);

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.0.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0); BOUNDS.len() + 1];
        for (i, (bound, count)) in buckets.iter_mut().enumerate() {
            if let Some(&b) = BOUNDS.get(i) {
                *bound = b;
            }
            *count = self.0.counts[i].load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = Duration::from_nanos(self.0.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanosecond_bounds_are_the_second_bounds() {
        for (seconds, nanos) in BOUNDS.iter().zip(BOUNDS_NANOS) {
            assert_eq!(
                Duration::from_secs_f64(*seconds).as_nanos(),
                u128::from(nanos)
            );
        }
    }

    #[test]
    fn an_observation_on_a_bound_falls_in_that_bucket() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(1));
        histogram.observe(Duration::from_nanos(1_000_001));
        histogram.observe(Duration::from_secs(60));
        let counts: Vec<u64> = histogram
            .0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[3], 1, "1 ms is in the le=0.001 bucket");
        assert_eq!(counts[4], 1, "just over 1 ms is in the next");
        assert_eq!(counts[BOUNDS.len()], 1, "a minute is only in +Inf");
        assert_eq!(histogram.count(), 3);
    }
}
