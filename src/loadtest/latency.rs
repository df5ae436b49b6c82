//! Latency distributions: one HDR histogram per request kind, in microseconds, and the
//! percentiles a report prints.
//!
//! HDR histograms keep 3 significant digits at every magnitude in constant memory, so a p999 of a
//! ten-minute run is as exact as its p50. Workers batch their samples and merge them under a lock
//! once per batch, so the lock is taken a few hundred times a second, not per request.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::mix::RequestKind;

/// Largest latency recorded exactly (100 s); longer ones are clamped to it.
const HIGHEST_US: u64 = 100_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("constant bounds are valid: 1 <= low, high >= 2 * low, 3 digits")
}

/// Every latency of a run, by request kind.
#[derive(Clone, Debug)]
pub struct Latencies {
    by_kind: [Histogram<u64>; 3],
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            by_kind: [histogram(), histogram(), histogram()],
        }
    }
}

impl Latencies {
    pub fn record(&mut self, kind: RequestKind, latency: Duration) {
        // Below 1 µs is below what a network round trip can take; count it as 1 µs.
        let us = (latency.as_micros() as u64).max(1);
        self.by_kind[kind.index()].saturating_record(us);
    }

    pub fn record_batch(&mut self, batch: &[(RequestKind, Duration)]) {
        for &(kind, latency) in batch {
            self.record(kind, latency);
        }
    }

    pub fn of_kind(&self, kind: RequestKind) -> &Histogram<u64> {
        &self.by_kind[kind.index()]
    }

    /// All kinds together.
    pub fn overall(&self) -> Histogram<u64> {
        let mut all = histogram();
        for h in &self.by_kind {
            all.add(h).expect("histograms of equal bounds always add");
        }
        all
    }
}

/// The figures a report gives of one distribution, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles {
                count: 0,
                min: 0,
                mean: 0.0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                max: 0,
            };
        }
        // `highest_equivalent` reports the top of the bucket a value fell in, so a percentile is
        // never understated: "99% of requests took at most this".
        let at = |q: f64| h.highest_equivalent(h.value_at_quantile(q));
        Percentiles {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: h.highest_equivalent(h.max()),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "min": self.min,
            "mean": (self.mean * 10.0).round() / 10.0,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p999": self.p999,
            "max": self.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_run() {
        let mut l = Latencies::default();
        for us in 1..=1000 {
            l.record(RequestKind::PreflightAllowed, Duration::from_micros(us));
        }
        let p = Percentiles::of(&l.overall());
        assert_eq!(p.count, 1000);
        assert_eq!(p.min, 1);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500, 900, 990, 999, 1000)
        );
        assert!((p.mean - 500.5).abs() < 0.01);
    }

    #[test]
    fn a_single_slow_request_shows_in_the_tail_only() {
        let mut l = Latencies::default();
        for _ in 0..9999 {
            l.record(RequestKind::Get, Duration::from_micros(100));
        }
        l.record(RequestKind::Get, Duration::from_secs(2));
        let p = Percentiles::of(l.of_kind(RequestKind::Get));
        assert_eq!((p.p50, p.p99, p.p999), (100, 100, 100));
        // 3 significant digits: 2 s is reported within 0.1%.
        assert!(p.max >= 2_000_000 && p.max <= 2_002_000, "{}", p.max);
    }

    #[test]
    fn large_values_keep_three_significant_digits() {
        let mut l = Latencies::default();
        l.record(RequestKind::Get, Duration::from_micros(123_456));
        let p = Percentiles::of(&l.overall());
        assert!(p.p50 >= 123_456 && p.p50 < 123_456 + 124, "{}", p.p50);
    }

    #[test]
    fn kinds_are_kept_apart_and_added_up_overall() {
        let mut l = Latencies::default();
        l.record_batch(&[
            (RequestKind::PreflightAllowed, Duration::from_micros(10)),
            (RequestKind::PreflightDenied, Duration::from_micros(20)),
            (RequestKind::PreflightDenied, Duration::from_micros(30)),
        ]);
        assert_eq!(l.of_kind(RequestKind::PreflightDenied).len(), 2);
        assert_eq!(l.of_kind(RequestKind::Get).len(), 0);
        assert_eq!(l.overall().len(), 3);
    }

    #[test]
    fn sub_microsecond_and_huge_latencies_are_clamped_not_lost() {
        let mut l = Latencies::default();
        l.record(RequestKind::Get, Duration::from_nanos(10));
        l.record(RequestKind::Get, Duration::from_secs(1000));
        let p = Percentiles::of(&l.overall());
        assert_eq!(p.count, 2);
        assert_eq!(p.min, 1);
    }

    #[test]
    fn an_empty_distribution_is_all_zero() {
        assert_eq!(Percentiles::of(&histogram()).max, 0);
    }
}
