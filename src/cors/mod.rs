//! The CORS core: S3 `CORSConfiguration` documents, their validation and compilation into a
//! [`Policy`], and the exact S3 answer to any request.
//!
//! No I/O and no async here, ever: this is a pure function of (rules, request) that the server,
//! the proxy and the command-line tools all call. Everything S3-exact lives in this module.

pub mod decision;
pub mod document;
pub mod echo;
pub mod error;
pub mod explain;
pub mod header;
pub mod lint;
pub mod method;
pub mod origin;
pub mod outcome;
pub mod policy;
pub mod rule;

pub use decision::{CorsRequest, Decision, Denial, DenialReason, Grant, Resource};
pub use document::Document;
pub use echo::Echo;
pub use error::{ConfigError, Pos, Problem, ProblemKind, RuleRef, S3Code};
pub use method::CorsMethod;
pub use policy::{BucketCors, Policy};
pub use rule::Rule;
