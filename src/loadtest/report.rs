//! What a run found, as text for people and as one JSON object for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::latency::Percentiles;
use super::mix::RequestKind;
use super::runner::Outcome;

/// How the run was set up, echoed in the report so a result says what produced it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub url: String,
    pub http2: bool,
    pub connections: usize,
    pub streams: usize,
    pub duration: Duration,
    pub rate: Option<f64>,
    pub mix: String,
    pub pool: usize,
}

pub struct Report<'a> {
    pub settings: &'a Settings,
    pub outcome: &'a Outcome,
}

impl Report<'_> {
    /// Responses per second over the whole run.
    pub fn rps(&self) -> f64 {
        let secs = self.outcome.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.outcome.tally.total_responses() as f64 / secs
        } else {
            0.0
        }
    }

    /// A run is clean when every request got an answer and every answer was right.
    pub fn is_clean(&self) -> bool {
        let t = &self.outcome.tally;
        t.total_wrong() == 0 && t.total_errors() == 0 && t.total_responses() > 0
    }

    pub fn to_json(&self) -> Value {
        let s = self.settings;
        let t = &self.outcome.tally;
        let l = &self.outcome.latencies;
        let by_kind: Map<String, Value> = RequestKind::ALL
            .into_iter()
            .filter(|k| t.responses[k.index()] > 0)
            .map(|k| {
                let v = json!({
                    "requests": t.responses[k.index()],
                    "mismatches": t.wrong[k.index()],
                    "latency_us": Percentiles::of(l.of_kind(k)).to_json(),
                });
                (k.as_str().to_string(), v)
            })
            .collect();
        let mismatch_kinds: Map<String, Value> = t
            .mismatches
            .iter()
            .map(|(k, n)| (k.to_string(), json!(n)))
            .collect();
        let error_kinds: Map<String, Value> = t
            .errors
            .iter()
            .map(|(k, n)| (k.as_str().to_string(), json!(n)))
            .collect();
        let samples: Vec<Value> = t
            .samples
            .iter()
            .map(|s| {
                json!({
                    "request": s.request,
                    "expected": s.expected,
                    "got": s.got,
                    "mismatches": s.mismatches,
                })
            })
            .collect();
        json!({
            "url": s.url,
            "protocol": if s.http2 { "h2" } else { "http/1.1" },
            "mode": if s.rate.is_some() { "open" } else { "closed" },
            "connections": s.connections,
            "streams": if s.http2 { s.streams } else { 1 },
            "rate": s.rate,
            "mix": s.mix,
            "pool": s.pool,
            "duration_s": round3(self.outcome.elapsed.as_secs_f64()),
            "requests": t.total_responses(),
            "mismatches": t.total_wrong(),
            "errors": t.total_errors(),
            "rps": round3(self.rps()),
            "body_bytes": t.body_bytes,
            "latency_us": Percentiles::of(&l.overall()).to_json(),
            "by_kind": by_kind,
            "mismatch_kinds": mismatch_kinds,
            "error_kinds": error_kinds,
            "samples": samples,
        })
    }

    pub fn to_text(&self) -> String {
        let s = self.settings;
        let t = &self.outcome.tally;
        let l = &self.outcome.latencies;
        let mut out = String::new();
        let mode = match s.rate {
            Some(r) => format!("open loop at {r} req/s"),
            None => "closed loop".to_string(),
        };
        let streams = if s.http2 {
            format!(" x {} streams", s.streams)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{} {}, {} connections{streams}, {mode}, {:.2}s, mix {} over {} requests",
            s.url,
            if s.http2 { "h2" } else { "http/1.1" },
            s.connections,
            self.outcome.elapsed.as_secs_f64(),
            s.mix,
            s.pool,
        );
        let _ = writeln!(
            out,
            "requests {}  rps {:.0}  mismatches {}  errors {}",
            t.total_responses(),
            self.rps(),
            t.total_wrong(),
            t.total_errors()
        );
        let _ = writeln!(
            out,
            "\nlatency (us)        {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "p50", "p90", "p99", "p999", "max", "count"
        );
        let mut row = |name: &str, p: Percentiles| {
            let _ = writeln!(
                out,
                "  {name:<17} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                p.p50, p.p90, p.p99, p.p999, p.max, p.count
            );
        };
        row("all", Percentiles::of(&l.overall()));
        for kind in RequestKind::ALL {
            if t.responses[kind.index()] > 0 {
                row(kind.as_str(), Percentiles::of(l.of_kind(kind)));
            }
        }
        if !t.mismatches.is_empty() {
            let _ = writeln!(out, "\nmismatches by kind");
            for (k, n) in &t.mismatches {
                let _ = writeln!(out, "  {k:<40} {n}");
            }
        }
        if !t.errors.is_empty() {
            let _ = writeln!(out, "\nerrors by kind");
            for (k, n) in &t.errors {
                let _ = writeln!(out, "  {:<40} {n}", k.as_str());
            }
        }
        // Three examples tell what is wrong; `--json` keeps them all.
        for sample in t.samples.iter().take(3) {
            let _ = writeln!(
                out,
                "\nwrong answer ({}):\n  request:  {}\n  expected: {}\n  got:      {}",
                sample.mismatches.join(", "),
                sample.request,
                sample.expected,
                sample.got
            );
        }
        out
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::check::Mismatch;
    use crate::loadtest::latency::Latencies;
    use crate::loadtest::tally::{ErrorKind, Tally};

    fn outcome() -> Outcome {
        let mut tally = Tally::default();
        let mut latencies = Latencies::default();
        for i in 0..100 {
            tally.response(RequestKind::PreflightAllowed, 0);
            latencies.record(RequestKind::PreflightAllowed, Duration::from_micros(i + 1));
        }
        tally.wrong(RequestKind::PreflightAllowed, &[Mismatch::Status], || {
            crate::loadtest::tally::Sample {
                request: "OPTIONS /k".into(),
                expected: "200".into(),
                got: "204".into(),
                mismatches: vec!["status".into()],
            }
        });
        tally.error(ErrorKind::Timeout);
        Outcome {
            tally,
            latencies,
            elapsed: Duration::from_secs(2),
        }
    }

    fn settings() -> Settings {
        Settings {
            url: "http://127.0.0.1:1/".into(),
            http2: false,
            connections: 4,
            streams: 10,
            duration: Duration::from_secs(2),
            rate: None,
            mix: "preflight-allowed=1".into(),
            pool: 100,
        }
    }

    #[test]
    fn json_has_the_fields_scripts_rely_on() {
        let (s, o) = (settings(), outcome());
        let v = Report {
            settings: &s,
            outcome: &o,
        }
        .to_json();
        assert_eq!(v["requests"], 100);
        assert_eq!(v["mismatches"], 1);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["rps"], 50.0);
        for p in ["p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_us"][p].is_u64(), "{p}");
        }
        assert_eq!(v["latency_us"]["p50"], 50);
        assert_eq!(v["mismatch_kinds"]["status"], 1);
        assert_eq!(v["error_kinds"]["timeout"], 1);
        assert_eq!(v["by_kind"]["preflight-allowed"]["requests"], 100);
        assert_eq!(v["samples"][0]["got"], "204");
    }

    #[test]
    fn a_run_with_wrong_answers_or_errors_is_not_clean() {
        let (s, mut o) = (settings(), outcome());
        assert!(
            !Report {
                settings: &s,
                outcome: &o
            }
            .is_clean()
        );
        o.tally = Tally::default();
        o.tally.response(RequestKind::Get, 0);
        assert!(
            Report {
                settings: &s,
                outcome: &o
            }
            .is_clean()
        );
    }

    #[test]
    fn text_names_mismatch_and_error_kinds() {
        let (s, o) = (settings(), outcome());
        let text = Report {
            settings: &s,
            outcome: &o,
        }
        .to_text();
        assert!(text.contains("requests 100  rps 50"), "{text}");
        assert!(text.contains("status"), "{text}");
        assert!(text.contains("timeout"), "{text}");
        assert!(text.contains("expected: 200"), "{text}");
    }
}
