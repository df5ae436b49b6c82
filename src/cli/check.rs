//! `corsgate check FILE...`: S3's validation, plus warnings for rules S3 accepts but should not.
//! `corsgate check --config FILE`: a whole gateway configuration, as `serve` would read it, and
//! every rules file it names (`nginx -t`, `caddy validate`), for `ExecStartPre` and CI.
//!
//! Every problem is one line, `FILE:LINE:COL: CODE: message`, errors and warnings alike, so that
//! editors and scripts can read them without special cases; then one summary line per file.
//! A configuration's problems are `FILE:LINE: key: message` (a TOML file has no S3 codes).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::config::{Config, KeyProblem};
use crate::cors::Policy;
use crate::cors::document::MAX_DOCUMENT_BYTES;
use crate::cors::error::{Problem, ProblemKind};
use crate::cors::lint::lint;
use crate::rules::file::{ReadError, read_bytes};
use crate::tls::{self, CertResolver};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rules files to check.
    #[arg(required_unless_present = "config")]
    pub files: Vec<PathBuf>,
    /// Treat warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
    /// A gateway configuration (TOML) to check as `serve` reads it, with every rules file,
    /// certificate and CA file it names: unknown keys (with the key probably meant), values of
    /// the wrong type and invalid values, all of them, each as `FILE:LINE: key: message`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Valid,
    Invalid,
    Unreadable,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let config = args
        .config
        .as_deref()
        .map(|c| check_config(c, args.deny_warnings));
    let worst = args
        .files
        .iter()
        .map(|f| check_file(f, args.deny_warnings))
        .chain(config)
        .max()
        .unwrap_or(Outcome::Valid);
    match worst {
        Outcome::Valid => ExitCode::SUCCESS,
        Outcome::Invalid => ExitCode::from(1),
        Outcome::Unreadable => ExitCode::from(super::EXIT_USAGE),
    }
}

fn check_file(path: &Path, deny_warnings: bool) -> Outcome {
    let name = path.display();
    let bytes = match read_bytes(path) {
        Ok(b) => b,
        // S3 refuses such a document (InvalidRequest): the file is invalid, not unreadable.
        Err(ReadError::TooLarge) => {
            let size = std::fs::metadata(path).map_or(MAX_DOCUMENT_BYTES + 1, |m| {
                usize::try_from(m.len()).unwrap_or(usize::MAX)
            });
            let problem = Problem::new(ProblemKind::TooLarge {
                size,
                limit: MAX_DOCUMENT_BYTES,
            });
            println!("{name}:{problem}");
            println!("{name}: invalid (1 problem)");
            return Outcome::Invalid;
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            return Outcome::Unreadable;
        }
    };
    let (doc, policy) = match Policy::parse_document(&bytes) {
        Ok(ok) => ok,
        Err(err) => {
            for problem in &err.problems {
                println!("{name}:{problem}");
            }
            let n = err.problems.len();
            println!("{name}: invalid ({n} problem{})", plural(n));
            return Outcome::Invalid;
        }
    };
    let mut warnings = lint(&doc);
    warnings.sort_by_key(|w| w.pos);
    for w in &warnings {
        println!("{name}:{w}");
    }
    let (rules, n) = (policy.rules().len(), warnings.len());
    if deny_warnings && n > 0 {
        println!("{name}: invalid ({n} warning{} denied)", plural(n));
        return Outcome::Invalid;
    }
    println!(
        "{name}: valid ({rules} rule{}, {n} warning{})",
        plural(rules),
        plural(n)
    );
    Outcome::Valid
}

/// A configuration file: its own problems, then each rules file it names as `check FILE`
/// reports it, then one summary line. An unreadable rules file is a problem of the
/// configuration (exit 1); only an unreadable configuration is an I/O error (exit 2).
fn check_config(path: &Path, deny_warnings: bool) -> Outcome {
    let name = path.display();
    let inspected = match Config::inspect(path) {
        Ok(inspected) => inspected,
        Err(error) => {
            eprintln!("{error}");
            return Outcome::Unreadable;
        }
    };
    let mut problems = inspected.problems.clone();
    let mut readable = Vec::new();
    for (key, line, file) in &inspected.rules_files {
        match read_bytes(file) {
            Ok(_) => readable.push(file),
            Err(error) => problems.push(KeyProblem {
                key: key.clone(),
                message: format!("{}: {error}", file.display()),
                line: Some(*line),
            }),
        }
    }
    if let Some(config) = &inspected.config {
        for (key, message) in files_of(config) {
            let line = inspected.line_of(&key);
            problems.push(KeyProblem { key, message, line });
        }
    }
    problems.sort_by_key(|p| p.line);
    for problem in &problems {
        println!("{}", problem.render(path));
    }
    let invalid_rules = readable
        .iter()
        .filter(|file| check_file(file, deny_warnings) != Outcome::Valid)
        .count();
    let n = problems.len();
    if n > 0 || invalid_rules > 0 {
        let mut counts = Vec::new();
        if n > 0 {
            counts.push(format!("{n} problem{}", plural(n)));
        }
        if invalid_rules > 0 {
            counts.push(format!(
                "{invalid_rules} invalid rules file{}",
                plural(invalid_rules)
            ));
        }
        println!("{name}: invalid ({})", counts.join(", "));
        return Outcome::Invalid;
    }
    let routes = inspected.config.as_ref().map_or(0, |c| c.routes.len());
    let files = inspected.rules_files.len();
    println!(
        "{name}: valid ({routes} route{}, {files} rules file{})",
        plural(routes),
        plural(files)
    );
    Outcome::Valid
}

/// What `serve` would fail to load at start besides rules files: certificates and keys, the
/// origin CA file, the demo origin's directory. Named by key.
fn files_of(config: &Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (i, listener) in config.server.tls.iter().enumerate() {
        if let Err(error) = CertResolver::load(listener.certs.clone(), listener.unknown_name) {
            problems.push((format!("server.tls[{}]", i + 1), error.to_string()));
        }
    }
    let origin_tls = &config.server.origin_tls;
    if let Err(error) = tls::client_config(origin_tls.roots, origin_tls.ca_file.as_deref()) {
        problems.push(("server.origin_tls.ca_file".into(), error.to_string()));
    }
    if let Some(demo) = &config.demo_origin
        && !demo.root.is_dir()
    {
        problems.push((
            "demo_origin.root".into(),
            format!("{} is not a directory", demo.root.display()),
        ));
    }
    problems
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
