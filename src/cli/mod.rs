//! The command line: `check`, `explain`, `healthcheck`, `loadtest` and `serve`. Each subcommand is
//! a thin shell over the layer that does the work.

mod check;
// The admin panel prints the same report.
pub(crate) mod explain;
mod healthcheck;
mod loadtest;
mod serve;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a usage or I/O error (clap uses 2 too).
pub(crate) const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "corsgate",
    // The crate version, and the commit when built from a git checkout (see build.rs).
    version = env!("CORSGATE_VERSION"),
    about = "A CORS enforcement gateway with Amazon S3's exact bucket CORS behaviour"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate CORS configuration files (S3 XML or AWS CLI JSON) the way S3's PutBucketCors does.
    ///
    /// Every problem is printed as one line, `FILE:LINE:COL: CODE: message`. CODE is the S3 error
    /// code (MalformedXML, InvalidRequest) for an error, and a code starting with `W-` for a
    /// warning, whose message starts with `warning:`. A problem about the whole document points
    /// at its root element (XML), its "CORSRules" key (JSON) or 1:1. Each file ends with one line
    /// `FILE: valid (...)` or `FILE: invalid (...)`.
    ///
    /// With `--config FILE`, the gateway configuration too, as `serve` reads it, and every rules
    /// file it names: each problem of the configuration as `FILE:LINE: key: message` (with the
    /// key probably meant when one is misspelt), each rules file as above, then
    /// `FILE: valid (...)` or `FILE: invalid (...)`. An unreadable rules file is a problem of
    /// the configuration.
    ///
    /// Exit status: 0 valid (warnings allowed), 1 invalid (or warnings with --deny-warnings),
    /// 2 usage or I/O error.
    Check(check::CheckArgs),
    /// Show how a set of rules answers one request, described with curl-like flags.
    ///
    /// The request is for the object `/object` unless `--path` names another key (`/` is the
    /// bucket root).
    ///
    /// Exit status: 0 the request was explained, whether the rules allow it or not; 1 the rules
    /// file is invalid (its problems are printed as `corsgate check` prints them); 2 usage or
    /// I/O error (a bad -X or -H, an unreadable file).
    Explain(explain::ExplainArgs),
    /// Ask a running corsgate's admin listener whether it is ready (`GET /readyz`), for health
    /// checks in images with no shell or curl (Docker HEALTHCHECK, Kubernetes exec probes).
    ///
    /// Prints one line saying why. Exit status: 0 ready, 1 not ready or not reachable.
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Load-test a CORS server (corsgate, nginx, a CDN, S3) and check every answer against
    /// corsgate's own evaluation of the same rules.
    ///
    /// Exit status: 0 all answers right, 1 mismatches or errors, 2 usage, rules or URL error.
    Loadtest(Box<loadtest::LoadtestArgs>),
    /// Run the gateway: answer preflights, forward everything else to the origin, decorate.
    ///
    /// Reads `config/corsgate.toml` unless `--config` names another file, or serves a single
    /// route (any Host) given with `--origin` and `--rules`. Logs go to stderr; `RUST_LOG`
    /// filters them (default `info`). The access log follows `[log]` (stderr by default);
    /// `RUST_LOG=info,corsgate::access=off` also turns it off.
    Serve(serve::ServeArgs),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Healthcheck(args) => healthcheck::run(&args),
        Command::Loadtest(args) => loadtest::run_command(&args),
        Command::Serve(args) => serve::run(&args),
    }
}

/// Reads a rules file as the gateway does (regular files of at most 64 KiB), with an error
/// message that names it.
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    crate::rules::file::read_bytes(path).map_err(|e| format!("{}: {e}", path.display()))
}
