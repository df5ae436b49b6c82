//! `corsgate check FILE...`: S3's validation, plus warnings for rules S3 accepts but should not.
//!
//! Every problem is one line, `FILE:LINE:COL: CODE: message`, errors and warnings alike, so that
//! editors and scripts can read them without special cases; then one summary line per file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::cors::Policy;
use crate::cors::document::MAX_DOCUMENT_BYTES;
use crate::cors::error::{Problem, ProblemKind};
use crate::cors::lint::lint;
use crate::rules::file::{ReadError, read_bytes};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rules files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Treat warnings as errors.
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Valid,
    Invalid,
    Unreadable,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    let worst = args
        .files
        .iter()
        .map(|f| check_file(f, args.deny_warnings))
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

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
