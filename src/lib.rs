//! corsgate: a CORS enforcement gateway that gives any HTTP origin Amazon S3's exact bucket CORS
//! behaviour.

pub mod cli;
pub mod config;
pub mod cors;
pub mod gateway;
pub mod loadtest;
pub mod metrics;
pub mod rules;
pub mod s3;
pub mod tls;
pub mod watch;
