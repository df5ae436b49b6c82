//! The end-to-end tests, one binary: each module is a former test file, and `common` is the
//! harness they share (a real origin, corsgate in-process or as the real binary, clients).
//!
//! The modules run side by side in one process, so a test never relies on being alone in it: no
//! `std::env::set_var`, no change of working directory, ephemeral ports, files of its own. A test
//! that reads what the whole process shares (the metrics registry, which every in-process
//! gateway adds to) runs itself again in a child process: `common::alone_in_a_process`. Modules
//! behind the `external` feature drive outside programs (`scripts/test.sh` installs them).

mod common;

mod access_log;
mod admin_guard;
#[cfg(feature = "external")]
mod browser;
#[cfg(feature = "external")]
mod browser_strict;
mod bucket_flood;
mod bucket_rules;
mod cli;
mod core_vectors;
#[cfg(feature = "external")]
mod curl;
mod deploy;
mod fleet;
mod forwarding;
mod hostile_connections;
mod hostile_origin;
mod lint_warnings;
mod loadtest;
mod malformed;
mod metrics;
mod origin_wire;
mod panel;
#[cfg(feature = "external")]
mod panel_browser;
#[cfg(feature = "external")]
mod private_bucket;
#[cfg(feature = "external")]
mod prometheus;
mod proxy;
mod redirect_and_demo;
mod reload;
mod reload_under_load;
#[cfg(feature = "external")]
mod replicas;
mod rules_files;
#[cfg(feature = "external")]
mod s3_moto;
mod shadow;
mod streaming;
mod strict;
mod tls;
#[cfg(feature = "external")]
mod tls_curl;
mod wire_vectors;
