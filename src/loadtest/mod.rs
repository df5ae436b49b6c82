//! `corsgate loadtest`: load-tests any CORS server (corsgate, nginx, a CDN, S3 itself) and checks
//! every answer against corsgate's own evaluation of the same rules.
//!
//! The work is split so that the hot loop only sends, compares and counts: [`generate`] draws a
//! pool of realistic requests from the rules and [`expect`] computes each one's answer before the
//! first byte is sent; [`runner`] drives the connections, over TCP or TLS ([`secure`]), speaking
//! HTTP/1.1 through [`wire`] and h2 through [`h2wire`] and [`hpack`]; [`check`] compares an answer
//! with its expectation; [`tally`] and [`latency`] count; [`report`] and [`plot`] present.
//!
//! Never used by the gateway itself: nothing here may be on a request path.

pub mod check;
pub mod expect;
pub mod generate;
pub(crate) mod h2wire;
pub(crate) mod hpack;
pub mod latency;
pub mod mix;
pub mod plot;
pub mod progress;
pub mod report;
pub mod runner;
pub mod secure;
pub mod tally;
pub mod target;
pub(crate) mod wire;

pub use check::{Checker, Mismatch};
pub use expect::Answer;
pub use generate::{GenerateError, GenerateOptions, PooledRequest, generate};
pub use mix::{Mix, RequestKind};
pub use report::{Report, Settings};
pub(crate) use runner::{ConnectError, probe};
pub use runner::{Outcome, RunConfig, run};
pub use secure::Trust;
pub use target::Target;
