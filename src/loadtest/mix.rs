//! The request mix: which kinds of request a load test sends, in which proportions
//! (`preflight-allowed=70,preflight-denied=20,get=10`).

use std::fmt;
use std::str::FromStr;

/// A kind of request the generator can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    /// An `OPTIONS` preflight that the rules allow: S3 answers 200 with CORS headers.
    PreflightAllowed,
    /// An `OPTIONS` preflight that the rules refuse: S3 answers 403 (or 400), no CORS headers.
    PreflightDenied,
    /// A real `GET` with an `Origin` that may or may not match, forwarded to the origin server.
    Get,
}

impl RequestKind {
    pub const ALL: [RequestKind; 3] = [
        RequestKind::PreflightAllowed,
        RequestKind::PreflightDenied,
        RequestKind::Get,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::PreflightAllowed => "preflight-allowed",
            RequestKind::PreflightDenied => "preflight-denied",
            RequestKind::Get => "get",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixError {
    #[error("{0:?}: expected KIND=WEIGHT, e.g. preflight-allowed=70")]
    Syntax(String),
    #[error("{0:?} is not a request kind (preflight-allowed, preflight-denied, get)")]
    UnknownKind(String),
    #[error("{0:?}: the weight must be a non-negative integer")]
    BadWeight(String),
    #[error("{0} is given twice")]
    Duplicate(RequestKind),
    #[error("the weights add up to zero: nothing to send")]
    Empty,
}

/// Relative weights of each [`RequestKind`]; kinds not named weigh 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 3],
}

impl Default for Mix {
    /// Mostly preflights, as a bucket behind a browser app sees: every object key costs its own
    /// preflight, and most of them are allowed.
    fn default() -> Self {
        Mix {
            weights: [70, 20, 10],
        }
    }
}

impl Mix {
    pub fn weight(&self, kind: RequestKind) -> u32 {
        self.weights[kind.index()]
    }

    /// How many of `total` requests each kind gets, largest remainders first, so the counts add up
    /// to `total` exactly and follow the weights as closely as integers can.
    pub fn apportion(&self, total: usize) -> [usize; 3] {
        let sum: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        let mut counts = [0usize; 3];
        let mut remainders = [(0u64, 0usize); 3];
        for (i, &w) in self.weights.iter().enumerate() {
            let exact = total as u64 * u64::from(w);
            counts[i] = (exact / sum) as usize;
            remainders[i] = (exact % sum, i);
        }
        let short = total - counts.iter().sum::<usize>();
        remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in remainders.iter().take(short) {
            counts[i] += 1;
        }
        counts
    }
}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Mix, MixError> {
        let mut weights = [0u32; 3];
        let mut seen = [false; 3];
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, weight) = item
                .split_once('=')
                .ok_or_else(|| MixError::Syntax(item.to_string()))?;
            let kind = RequestKind::ALL
                .into_iter()
                .find(|k| k.as_str() == name.trim())
                .ok_or_else(|| MixError::UnknownKind(name.trim().to_string()))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| MixError::BadWeight(item.to_string()))?;
            if std::mem::replace(&mut seen[kind.index()], true) {
                return Err(MixError::Duplicate(kind));
            }
            weights[kind.index()] = weight;
        }
        if weights.iter().all(|&w| w == 0) {
            return Err(MixError::Empty);
        }
        Ok(Mix { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for kind in RequestKind::ALL {
            if self.weight(kind) > 0 {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                write!(f, "{kind}={}", self.weight(kind))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let mix: Mix = "preflight-allowed=70,preflight-denied=20,get=10"
            .parse()
            .unwrap();
        assert_eq!(mix, Mix::default());
        assert_eq!(
            mix.to_string(),
            "preflight-allowed=70,preflight-denied=20,get=10"
        );
    }

    #[test]
    fn kinds_not_named_weigh_nothing() {
        let mix: Mix = "get=1".parse().unwrap();
        assert_eq!(mix.weight(RequestKind::PreflightAllowed), 0);
        assert_eq!(mix.apportion(10), [0, 0, 10]);
    }

    #[test]
    fn bad_mixes_are_refused_with_the_reason() {
        let err = |s: &str| s.parse::<Mix>().unwrap_err();
        assert_eq!(
            err("preflight=1"),
            MixError::UnknownKind("preflight".into())
        );
        assert_eq!(err("get"), MixError::Syntax("get".into()));
        assert_eq!(err("get=-1"), MixError::BadWeight("get=-1".into()));
        assert_eq!(err("get=1,get=2"), MixError::Duplicate(RequestKind::Get));
        assert_eq!(err("get=0"), MixError::Empty);
    }

    #[test]
    fn apportioned_counts_add_up_and_follow_the_weights() {
        let mix: Mix = "preflight-allowed=1,preflight-denied=1,get=1"
            .parse()
            .unwrap();
        assert_eq!(mix.apportion(10).iter().sum::<usize>(), 10);
        assert_eq!(mix.apportion(10), [4, 3, 3]);
        assert_eq!(Mix::default().apportion(1000), [700, 200, 100]);
    }
}
