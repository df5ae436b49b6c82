//! Counts kept by each load worker and added up at the end: requests and wrong answers by kind,
//! transport errors by kind, and a few examples of wrong answers to show.

use std::collections::BTreeMap;
use std::fmt;

use super::check::Mismatch;
use super::mix::RequestKind;

/// Wrong answers kept as examples, at most.
pub const MAX_SAMPLES: usize = 8;

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// TCP connect or the HTTP/2 handshake failed.
    Connect,
    /// The server closed the connection before answering.
    Closed,
    /// The server's answer was not valid HTTP.
    Protocol,
    /// Any other I/O error, reading the body included.
    Io,
    /// No complete answer within `--timeout`.
    Timeout,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Closed => "closed",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Io => "io",
            ErrorKind::Timeout => "timeout",
        }
    }

    pub fn of_hyper(e: &hyper::Error) -> ErrorKind {
        if e.is_parse() || e.is_parse_status() || e.is_user() {
            ErrorKind::Protocol
        } else if e.is_closed() || e.is_incomplete_message() || e.is_canceled() {
            ErrorKind::Closed
        } else if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Io
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A wrong answer, as a report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub request: String,
    pub expected: String,
    pub got: String,
    pub mismatches: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Responses received, by request kind.
    pub responses: [u64; 3],
    /// Responses with at least one mismatch, by request kind.
    pub wrong: [u64; 3],
    pub mismatches: BTreeMap<Mismatch, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Body bytes received.
    pub body_bytes: u64,
    pub samples: Vec<Sample>,
}

impl Tally {
    pub fn response(&mut self, kind: RequestKind, body_bytes: u64) {
        self.responses[kind.index()] += 1;
        self.body_bytes += body_bytes;
    }

    /// Counts a wrong answer; `sample` is called only while examples are still wanted.
    pub fn wrong(
        &mut self,
        kind: RequestKind,
        mismatches: &[Mismatch],
        sample: impl FnOnce() -> Sample,
    ) {
        self.wrong[kind.index()] += 1;
        for m in mismatches {
            *self.mismatches.entry(m.clone()).or_default() += 1;
        }
        if self.samples.len() < MAX_SAMPLES {
            self.samples.push(sample());
        }
    }

    pub fn error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        for i in 0..3 {
            self.responses[i] += other.responses[i];
            self.wrong[i] += other.wrong[i];
        }
        for (k, n) in other.mismatches {
            *self.mismatches.entry(k).or_default() += n;
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.body_bytes += other.body_bytes;
        for s in other.samples {
            if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&s) {
                self.samples.push(s);
            }
        }
    }

    pub fn total_responses(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// Responses that were wrong in at least one way.
    pub fn total_wrong(&self) -> u64 {
        self.wrong.iter().sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u8) -> Sample {
        Sample {
            request: format!("r{n}"),
            expected: String::new(),
            got: String::new(),
            mismatches: Vec::new(),
        }
    }

    #[test]
    fn merging_adds_every_count() {
        let mut a = Tally::default();
        a.response(RequestKind::Get, 10);
        a.wrong(
            RequestKind::Get,
            &[Mismatch::Status, Mismatch::Vary],
            || sample(1),
        );
        a.error(ErrorKind::Timeout);
        let mut b = Tally::default();
        b.response(RequestKind::Get, 5);
        b.response(RequestKind::PreflightAllowed, 0);
        b.wrong(RequestKind::Get, &[Mismatch::Status], || sample(2));
        b.error(ErrorKind::Timeout);
        b.error(ErrorKind::Connect);
        a.merge(b);
        assert_eq!(a.total_responses(), 3);
        assert_eq!(a.total_wrong(), 2);
        assert_eq!(a.mismatches[&Mismatch::Status], 2);
        assert_eq!(a.mismatches[&Mismatch::Vary], 1);
        assert_eq!(a.errors[&ErrorKind::Timeout], 2);
        assert_eq!(a.total_errors(), 3);
        assert_eq!(a.body_bytes, 15);
        assert_eq!(a.samples.len(), 2);
    }

    #[test]
    fn samples_are_bounded() {
        let mut a = Tally::default();
        for n in 0..100 {
            a.wrong(RequestKind::Get, &[Mismatch::Status], || sample(n));
        }
        assert_eq!(a.samples.len(), MAX_SAMPLES);
        assert_eq!(a.total_wrong(), 100);
    }
}
