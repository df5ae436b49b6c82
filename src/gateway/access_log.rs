//! One access-log line per request, through `tracing` (target `corsgate::access`): method, host,
//! path, status, what CORS decided, and the time to the response head.
//!
//! A formatted line and its write cost more than answering a preflight does (measured: about
//! a third of the instructions of the whole preflight path, plus a `write` per request), so
//! the target can be turned off (`RUST_LOG=info,corsgate::access=off`), and the handler then
//! gathers nothing for it ([`enabled`]).

use std::fmt;
use std::time::Duration;

use http::{Method, StatusCode};

/// What corsgate did with a request, CORS-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A preflight answered 200 by this rule (1-based); `cached` when it came from the cache.
    PreflightAllowed { rule: usize, cached: bool },
    /// A preflight refused (400/403) with this S3 error code.
    PreflightDenied { code: &'static str, cached: bool },
    /// Forwarded, response decorated by this rule.
    ActualDecorated { rule: usize },
    /// Forwarded, no CORS headers earned.
    ActualUndecorated,
    /// A cross-origin write no rule grants, refused under `enforce = "strict"`: never forwarded.
    ActualRefused,
    /// Refused before routing or forwarding (421, 400): no CORS evaluation.
    Refused,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = |cached: bool| if cached { "hit" } else { "miss" };
        match *self {
            Outcome::PreflightAllowed { rule, cached } => {
                write!(f, "preflight-allowed rule={rule} cache={}", cache(cached))
            }
            Outcome::PreflightDenied { code, cached } => {
                write!(f, "preflight-denied code={code} cache={}", cache(cached))
            }
            Outcome::ActualDecorated { rule } => write!(f, "actual-decorated rule={rule}"),
            Outcome::ActualUndecorated => f.write_str("actual-undecorated"),
            Outcome::ActualRefused => f.write_str("actual-refused"),
            Outcome::Refused => f.write_str("refused"),
        }
    }
}

/// Whether access-log lines are wanted (a cached per-callsite check: a few loads when off).
pub fn enabled() -> bool {
    tracing::enabled!(target: "corsgate::access", tracing::Level::INFO)
}

/// Everything one access-log line says.
pub struct AccessEntry<'a> {
    pub method: &'a Method,
    pub host: &'a str,
    pub path: &'a str,
    pub status: StatusCode,
    pub outcome: Outcome,
    pub elapsed: Duration,
}

impl AccessEntry<'_> {
    pub fn log(&self) {
        tracing::info!(
            target: "corsgate::access",
            method = %self.method,
            host = self.host,
            path = self.path,
            status = self.status.as_u16(),
            cors = %self.outcome,
            micros = self.elapsed.as_micros() as u64,
        );
    }
}
