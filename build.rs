//! Stamps the binary with the commit it was built from, for `corsgate --version`.
//!
//! Only a build from a git checkout of this crate (a `.git` beside `Cargo.toml`: a directory, or
//! the file a worktree has) gets a commit; a build from a tarball, or from a copy inside some
//! other repository, prints the bare version rather than a commit that is not its own. No crate:
//! the `git` program, when there is one.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = if manifest_dir.join(".git").exists() {
        watch_head(&manifest_dir);
        git(&manifest_dir, &["rev-parse", "--short", "HEAD"])
    } else {
        None
    };
    let full = match commit {
        Some(commit) => format!("{version} ({commit})"),
        None => version,
    };
    println!("cargo:rustc-env=CORSGATE_VERSION={full}");
}

/// Reruns this script when HEAD moves: `HEAD` itself (a checkout), the branch it points to (a
/// commit), and `packed-refs` (where the branch is once git packs it). Paths come from git, as a
/// worktree keeps `HEAD` apart from the shared refs. Only existing files are named: cargo reruns
/// on every build for a missing one.
fn watch_head(dir: &Path) {
    let mut files = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        files.push(branch);
    }
    for file in files {
        let Some(path) = git(dir, &["rev-parse", "--git-path", &file]) else {
            continue;
        };
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// `git ARGS` in `dir`: its first line of output, or `None` when git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_string())
}
