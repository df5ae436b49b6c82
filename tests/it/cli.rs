//! `corsgate check`, `explain` and `serve` as a user runs them: the real binary, real files.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::Binary;

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
fn check_accepts_the_shipped_rules_and_the_benchmark_fixture() {
    let out = corsgate(&["check", "config/cors-app.xml", "benches/fixtures/cors.xml"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("config/cors-app.xml: valid (3 rules, 0 warnings)"));
    assert!(stdout(&out).contains("benches/fixtures/cors.xml: valid (1 rule, 0 warnings)"));
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
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{path}:1:30: W-CREDENTIALED-WILDCARD: warning: CORSRule #1: AllowedOrigin \"https://*\" admits every site")),
        "{text}"
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
        "config/cors-app.xml",
        "-X",
        "OPTIONS",
        "-H",
        "no-colon",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// Whether `line` is `FILE:LINE:COL: CODE: message`, the one shape of a problem line.
fn is_problem_line(line: &str, file: &str) -> bool {
    let Some(rest) = line.strip_prefix(&format!("{file}:")) else {
        return false;
    };
    let mut parts = rest.splitn(4, ": ");
    let place = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let message = parts.next().unwrap_or_default();
    let numbers: Vec<&str> = place.split(':').collect();
    numbers.len() == 2
        && numbers
            .iter()
            .all(|n| n.parse::<u32>().is_ok_and(|n| n > 0))
        && (["MalformedXML", "InvalidRequest"].contains(&code) || code.starts_with("W-"))
        && !message.is_empty()
}

/// Runs `check` on one file and returns its problem lines, checking that every line but the
/// last (the summary) has the one shape.
fn check_lines(name: &str, contents: &str) -> Vec<String> {
    let file = temp_file(name, contents);
    let path = file.to_str().expect("utf-8 path");
    let out = corsgate(&["check", path]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let summary = lines.pop().unwrap_or_default();
    assert!(summary.starts_with(&format!("{path}: invalid (")), "{text}");
    for line in &lines {
        assert!(
            is_problem_line(line, path),
            "not FILE:LINE:COL: CODE: message: {line}"
        );
    }
    lines
        .iter()
        .map(|l| l.trim_start_matches(path).to_string())
        .collect()
}

#[test]
fn check_puts_a_whole_document_problem_at_the_root_element() {
    let lines = check_lines(
        "empty.xml",
        "<?xml version=\"1.0\"?>\n<CORSConfiguration>\n</CORSConfiguration>\n",
    );
    assert_eq!(
        lines,
        [":2:1: MalformedXML: the configuration has no <CORSRule>"]
    );
    let lines = check_lines("big.xml", &" ".repeat(70_000));
    assert!(lines[0].starts_with(":1:1: InvalidRequest: the document is 70000 bytes"));
}

#[test]
fn check_reports_every_problem_of_a_rule_with_two_ids() {
    let lines = check_lines(
        "two-ids.xml",
        "<CORSConfiguration>\n  <CORSRule>\n    <ID>a</ID>\n    <ID>b</ID>\n    <AllowedMethod>get</AllowedMethod>\n  </CORSRule>\n</CORSConfiguration>\n",
    );
    assert_eq!(
        lines,
        [
            ":2:3: MalformedXML: CORSRule #1 (ID \"a\"): the rule has no <AllowedOrigin>",
            ":4:5: MalformedXML: CORSRule #1 (ID \"a\"): <ID> appears more than once in one rule",
            ":5:5: InvalidRequest: CORSRule #1 (ID \"a\"): Found unsupported HTTP method in CORS config. Unsupported method is get",
        ]
    );
}

#[test]
fn check_words_json_problems_in_json_terms_at_their_place() {
    let lines = check_lines("rules.json", "{\"Rules\": []}\n");
    assert_eq!(
        lines,
        [
            ":1:1: MalformedXML: the configuration has no rule: \"CORSRules\" is missing or empty",
            ":1:2: MalformedXML: unknown key \"Rules\" in the document's object; the keys allowed there are \"CORSRules\"",
        ]
    );
    let lines = check_lines(
        "cli.json",
        "{\n  \"CORSRules\": [\n    {\"AllowedOrigins\": [\"*\"]},\n    {\"AllowedOrigins\": [\"*\"], \"AllowedMethods\": [\"GET\",]}\n  ]\n}\n",
    );
    assert_eq!(
        lines,
        [":4:56: MalformedXML: the JSON is not well-formed: trailing comma"]
    );
    let lines = check_lines(
        "cli.json",
        "{\n  \"CORSRules\": [\n    {\"AllowedOrigins\": [\"*\"]}\n  ]\n}\n",
    );
    assert_eq!(
        lines,
        [":3:5: MalformedXML: CORSRule #1: the rule's \"AllowedMethods\" is missing or empty"]
    );
    for line in &lines {
        assert!(!line.contains('<'), "XML wording for JSON: {line}");
    }
}

#[test]
fn explain_help_gives_the_exit_status_and_the_default_path() {
    let out = corsgate(&["explain", "--help"]);
    let help = stdout(&out);
    assert!(
        help.contains("Exit status: 0 the request was explained"),
        "{help}"
    );
    assert!(help.contains("[default: /object]"), "{help}");
    let bad = temp_file("bad-for-explain.xml", "<CORSConfiguration/>");
    let out = corsgate(&["explain", bad.to_str().expect("utf-8 path"), "-X", "GET"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":1:1: MalformedXML: the configuration has no <CORSRule>"),
        "{err}"
    );
}

#[test]
fn loadtest_help_examples_use_the_rules_the_demo_serves() {
    let help = stdout(&corsgate(&["loadtest", "--help"]));
    assert!(
        help.contains("http://127.0.0.1:8080/ --rules config/cors-app.xml"),
        "{help}"
    );
    assert!(
        !help.contains("http://127.0.0.1:8080/ --rules config/cors.xml"),
        "{help}"
    );
}

/// One HTTP/1.1 request on a fresh connection; the whole answer, read until the server closes.
fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the gateway");
    // A bound on a broken gateway, not a wait: the answer ends the read as soon as it is sent.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
}

#[test]
fn serve_reads_the_files_of_a_configuration_from_its_directory() {
    let dir = std::env::temp_dir().join(format!("corsgate-cli-conf-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rules")).expect("temp dir");
    std::fs::write(
        dir.join("rules/app.xml"),
        "<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example</AllowedOrigin><AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>",
    )
    .expect("rules file");
    let config = dir.join("gateway.toml");
    // The origin is never contacted: preflights are answered by corsgate itself.
    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9\"\nrules = { file = \"rules/app.xml\" }\n",
    )
    .expect("configuration");
    // From `/`, where `rules/app.xml` does not exist.
    let (_gateway, addr) = Binary::start(
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        "/",
    );
    let answer = http(
        addr,
        "OPTIONS /key HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\
         Access-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("access-control-allow-origin: https://app.example\r\n"),
        "{answer}"
    );
}
