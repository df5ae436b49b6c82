//! What corsgate did with a request, CORS-wise: the verdict the access log, the metrics and the
//! shadow comparison all read. Plain values, named here so every layer above can share them.

/// Whether the preflight cache answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// The answer came from the cache.
    Hit,
    /// The request was worth caching but its answer was not cached (yet): evaluated, and
    /// remembered for next time (a key's first visit is only noted, see `Doorkeeper`).
    Miss,
    /// The cache was not consulted: it is off, the rules are cheaper to evaluate than a lookup,
    /// or the request is not worth caching.
    Skip,
}

impl CacheUse {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Skip => "skip",
        }
    }
}

/// What corsgate did with a request, CORS-wise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A preflight answered 200 by this rule (1-based).
    PreflightAllowed { rule: usize, cache: CacheUse },
    /// A preflight refused (400/403) with this S3 error code.
    PreflightDenied { code: &'static str, cache: CacheUse },
    /// Forwarded, response decorated by this rule.
    ActualDecorated { rule: usize },
    /// Forwarded, no CORS headers earned.
    ActualUndecorated,
    /// A cross-origin write no rule grants, refused under `enforce = "strict"`: never forwarded.
    ActualRefused,
    /// Refused before routing or forwarding (421, 400, 503): no CORS evaluation.
    Refused,
}

impl Outcome {
    /// The `cors` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::PreflightAllowed { .. } => "preflight-allowed",
            Outcome::PreflightDenied { .. } => "preflight-denied",
            Outcome::ActualDecorated { .. } => "actual-decorated",
            Outcome::ActualUndecorated => "actual-undecorated",
            Outcome::ActualRefused => "actual-refused",
            Outcome::Refused => "refused",
        }
    }

    /// The rule that granted, 1-based.
    pub fn rule(&self) -> Option<usize> {
        match *self {
            Outcome::PreflightAllowed { rule, .. } | Outcome::ActualDecorated { rule } => {
                Some(rule)
            }
            _ => None,
        }
    }

    /// The S3 error code of a refused preflight.
    pub fn denial(&self) -> Option<&'static str> {
        match *self {
            Outcome::PreflightDenied { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the preflight cache answered (preflights only).
    pub fn cache(&self) -> Option<CacheUse> {
        match *self {
            Outcome::PreflightAllowed { cache, .. } | Outcome::PreflightDenied { cache, .. } => {
                Some(cache)
            }
            _ => None,
        }
    }
}
