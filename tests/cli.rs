//! `corsgate check` and `corsgate explain` as a user runs them: the real binary, real files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn corsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corsgate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the corsgate binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("corsgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("temp file");
    path
}

#[test]
fn check_accepts_the_shipped_examples() {
    let out = corsgate(&["check", "config/cors.xml", "config/cors-app.xml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("config/cors-app.xml: valid (3 rules, 0 warnings)"));
}

#[test]
fn check_lists_every_error_as_file_line_col_code_message_and_exits_1() {
    let bad = temp_file(
        "bad.xml",
        "<CORSConfiguration>\n  <CORSRule>\n    <AllowedOrigin>http://*.*.com</AllowedOrigin>\n    <AllowedMethod>get</AllowedMethod>\n  </CORSRule>\n</CORSConfiguration>\n",
    );
    let out = corsgate(&["check", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let p = bad.display();
    assert!(text.contains(&format!("{p}:3:5: InvalidRequest: CORSRule #1: AllowedOrigin \"http://*.*.com\" can not have more than one wildcard.")), "{text}");
    assert!(text.contains(&format!("{p}:4:5: InvalidRequest: CORSRule #1: Found unsupported HTTP method in CORS config. Unsupported method is get")), "{text}");
}

#[test]
fn check_warnings_pass_unless_denied() {
    let risky = temp_file(
        "risky.xml",
        "<CORSConfiguration><CORSRule><AllowedOrigin>https://*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>",
    );
    let path = risky.to_str().expect("utf-8 path");
    let out = corsgate(&["check", path]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out)
            .contains("warning: CORSRule #1: AllowedOrigin \"https://*\" admits every site")
    );
    let out = corsgate(&["check", "--deny-warnings", path]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn check_unreadable_file_exits_2() {
    let out = corsgate(&["check", "no/such/file.xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no/such/file.xml: cannot read"));
}

#[test]
fn explain_json_for_an_allowed_preflight() {
    let out = corsgate(&[
        "explain",
        "config/cors-app.xml",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://img.example.com",
        "-H",
        "Access-Control-Request-Method: GET",
        "-H",
        "Access-Control-Request-Headers: Range",
        "--path",
        "/photos/cat.jpg",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["kind"], "preflight");
    assert_eq!(v["status"], 200);
    assert_eq!(v["matched_rule"], 2);
    assert_eq!(v["error"], serde_json::Value::Null);
    assert_eq!(
        v["headers"]["access-control-allow-origin"],
        "https://img.example.com"
    );
    assert_eq!(v["headers"]["access-control-allow-headers"], "range");
    assert_eq!(
        v["headers"]["vary"],
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
    );
}

#[test]
fn explain_json_for_a_denied_preflight_and_an_actual_request() {
    let out = corsgate(&[
        "explain",
        "config/cors-app.xml",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://evil.test",
        "-H",
        "Access-Control-Request-Method: PUT",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["status"], 403);
    assert_eq!(v["matched_rule"], serde_json::Value::Null);
    assert_eq!(v["error"]["code"], "AccessForbidden");
    assert_eq!(v["headers"], serde_json::json!({}));

    let out = corsgate(&[
        "explain",
        "config/cors-app.xml",
        "-X",
        "GET",
        "-H",
        "Origin: https://img.example.com",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["kind"], "actual");
    assert_eq!(v["status"], serde_json::Value::Null);
    assert_eq!(v["headers"]["access-control-allow-methods"], "GET, HEAD");
    assert!(v["headers"].get("access-control-allow-headers").is_none());
}

#[test]
fn explain_text_says_why_each_rule_did_not_match() {
    let out = corsgate(&[
        "explain",
        "config/cors-app.xml",
        "-X",
        "OPTIONS",
        "-H",
        "Origin: https://app.example.com",
        "-H",
        "Access-Control-Request-Method: PUT",
        "-H",
        "Access-Control-Request-Headers: x-secret",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("CORSRule #1 (ID \"uploads\"): requested header \"x-secret\" not allowed"),
        "{text}"
    );
    assert!(
        text.contains("CORSRule #2 (ID \"reads\"): method not allowed"),
        "{text}"
    );
    assert!(
        text.contains("CORSRule #3 (ID \"local-dev\"): origin does not match"),
        "{text}"
    );
    assert!(text.contains("=> 403 Forbidden"), "{text}");
}

#[test]
fn explain_rejects_a_malformed_header_flag_with_exit_2() {
    let out = corsgate(&[
        "explain",
        "config/cors.xml",
        "-X",
        "OPTIONS",
        "-H",
        "no-colon",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
