//! The admin panel in a real browser: `tests/browser/panel.py` drives headless Chromium through
//! WebDriver (Python's Selenium with Debian's chromedriver: no Rust WebDriver client and its
//! dependency tree to build, and the driver the distribution ships for its Chromium) against the
//! real `corsgate` binary. It edits, lints, tries and applies rules through the pages; this test
//! checks what the script saw and what the gateway now answers.
//!
//! A screenshot of each page is kept in `target/panel-screenshots/` for a reviewer to look at.
//!
//! Needs `chromium`, `chromium-driver` (`/usr/bin/chromedriver`) and `.venv/bin/python` with
//! `selenium` (`scripts/test.sh` installs them); `CHROMIUM`, `CHROMEDRIVER` and
//! `CORSGATE_PYTHON` name others. Fails, never skips, when one is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use http::StatusCode;
use serde_json::Value;

const READS: &str = "<CORSConfiguration><CORSRule><ID>reads</ID><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod><AllowedHeader>*</AllowedHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule></CORSConfiguration>";

/// The screenshots the scenario takes, in order.
const PAGES: [&str; 9] = [
    "1-routes",
    "2-rules",
    "3-problem",
    "4-lint",
    "5-rules-fixed",
    "6-try",
    "7-apply",
    "8-applied",
    "9-stale",
];

fn program(var: &str, default: PathBuf, install: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or(default, PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: {install} (scripts/test.sh does), or set {var}",
        path.display()
    );
    path
}

/// Three routes, so the routes page shows each kind: a rules file, none, an S3 endpoint.
fn configuration(rules: &Path) -> PathBuf {
    config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:1\"\nrules = {{ file = {rules:?} }}\n\n\
         [[route]]\nhosts = [\"static.example.com\"]\norigin = \"http://127.0.0.1:1\"\n\n\
         [[route]]\nhosts = [\"s3.example.com\"]\norigin = \"http://127.0.0.1:1\"\n\
         s3 = {{ addressing = \"path\" }}\n"
    ))
}

#[test]
fn an_operator_edits_tries_and_applies_rules_in_a_real_browser() {
    let python = program(
        "CORSGATE_PYTHON",
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
        "create .venv and pip install selenium into it",
    );
    let chromium = program(
        "CHROMIUM",
        "/usr/bin/chromium".into(),
        "apt-get install chromium",
    );
    let chromedriver = program(
        "CHROMEDRIVER",
        "/usr/bin/chromedriver".into(),
        "apt-get install chromium-driver",
    );
    let rules = rules_file(READS);
    let config = configuration(&rules);
    let (binary, gateway) = Binary::start_with_env(
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        env!("CARGO_MANIFEST_DIR"),
        &[],
    );
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/panel-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);

    let output = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/panel.py"))
        .arg("--admin")
        .arg(format!("http://{}", binary.admin()))
        .arg("--gateway")
        .arg(format!("http://{gateway}"))
        .arg("--rules")
        .arg(&rules)
        .arg("--screenshots")
        .arg(&screenshots)
        .arg("--chromium")
        .arg(chromium)
        .arg("--chromedriver")
        .arg(chromedriver)
        .output()
        .expect("run tests/browser/panel.py");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser scenario failed (see {}/failure.png):\n{stderr}",
        screenshots.display()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("the scenario prints its findings as JSON:\n{stdout}\n{stderr}"));

    // The core's problem and lint, each shown next to the field as the origin was typed.
    let problem = seen["problem"].as_str().expect("problem text");
    assert!(problem.starts_with("InvalidRequest"), "{problem}");
    assert!(
        problem.contains("can not have more than one wildcard"),
        "{problem}"
    );
    let lint = seen["lint"].as_str().expect("lint text");
    assert!(lint.contains("\"https://*\" admits every site"), "{lint}");
    // The request tried against both: the draft answers it, the rules in force do not.
    assert_eq!(
        seen["change"],
        "This change would newly allow https://app.example.com PUT."
    );
    assert!(
        seen["draft_answer"]
            .as_str()
            .is_some_and(|a| a.starts_with("Allowed · 200 OK")),
        "{seen}"
    );
    assert!(
        seen["live_answer"]
            .as_str()
            .is_some_and(|a| a.starts_with("Denied · 403")),
        "{seen}"
    );
    assert!(
        seen["applied"]
            .as_str()
            .is_some_and(|a| a.starts_with("Applied to file")),
        "{seen}"
    );
    assert_eq!(seen["preflight_after_apply"], 200, "{seen}");
    assert!(
        seen["stale"]
            .as_str()
            .is_some_and(|s| s.contains("changed since you loaded them")),
        "{seen}"
    );
    assert_eq!(
        seen["rules_after_stale"],
        serde_json::json!(["1 reads", "2 —", "3 added-elsewhere"])
    );
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen}");

    // The gateway follows the file as the panel and the concurrent editor left it.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        for (origin, method) in [
            ("https://app.example.com", "PUT"),
            ("https://a.example", "GET"),
            ("https://b.example", "GET"),
        ] {
            let answer = send(
                gateway,
                "OPTIONS",
                "/cat.jpg",
                &[
                    ("origin", origin),
                    ("access-control-request-method", method),
                ],
            )
            .await;
            assert_eq!(answer.status, StatusCode::OK, "{origin} {method}");
        }
        // One apply went through, logged; the log arrives through a pipe and a reader thread.
        let logged = eventually(std::time::Duration::from_secs(10), || async {
            binary.log_lines("applied rules to file").len() == 1
        })
        .await;
        assert!(logged, "{:?}", binary.log_lines("apply"));
    });
    for page in PAGES {
        let shot = screenshots.join(format!("{page}.png"));
        let bytes = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", shot.display());
    }
}
