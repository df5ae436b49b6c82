//! What a rules file may be: a regular file of at most 64 KiB (S3's limit for a CORS
//! configuration). A FIFO, a directory or a larger file is an error naming the path or the
//! limit, at start and on reload; nothing hangs, and a later valid file is picked up.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use corsgate::rules::RulesSource;
use http::StatusCode;

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const ALLOW_B: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const LIMIT: usize = 64 * 1024;

/// `ALLOW_A` padded with spaces to exactly `len` bytes.
fn padded(len: usize) -> String {
    let mut xml = ALLOW_A.to_string();
    xml.push_str(&" ".repeat(len - xml.len()));
    xml
}

fn file_route(origin: &Origin, path: &Path) -> corsgate::config::RouteConfig {
    let mut route = route(&["*"], origin, None);
    route.rules = RulesSource::File(path.to_path_buf());
    route
}

/// The start error a rules file at `path` gives.
async fn start_error(path: &Path) -> String {
    let origin = Origin::start(Reply::default()).await;
    match corsgate::gateway::spawn(config(vec![file_route(&origin, path)])).await {
        Ok(_) => panic!("{} must not start the gateway", path.display()),
        Err(err) => err.to_string(),
    }
}

async fn allowed(gateway: SocketAddr, origin: &str) -> bool {
    let answer = send(
        gateway,
        "OPTIONS",
        "/k",
        &[("origin", origin), ("access-control-request-method", "GET")],
    )
    .await;
    answer.status == StatusCode::OK
}

#[test]
fn a_fifo_as_the_rules_file_stops_the_start_naming_it_without_hanging() {
    let fifo = scratch_path("rules.fifo");
    mkfifo(&fifo);
    let path = fifo.to_str().expect("utf-8 temp path");
    let exited = run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--origin",
            "http://127.0.0.1:1",
            "--rules",
            path,
        ],
        &[],
        &[],
        Duration::from_secs(30),
    )
    .expect("corsgate exits instead of waiting for a writer");
    assert_eq!(exited.code, Some(1), "{}", exited.stderr);
    assert!(
        exited.stderr.contains(&format!(
            "{path}: cannot read: it is a FIFO, not a regular file"
        )),
        "{}",
        exited.stderr
    );
}

#[tokio::test]
async fn a_fifo_swapped_in_fails_the_reload_and_a_later_valid_file_is_picked_up() {
    let origin = Origin::start(Reply::default()).await;
    let path = rules_file(ALLOW_A);
    let gateway = start(config_with_admin(vec![file_route(&origin, &path)])).await;
    let admin_addr = gateway.admin.expect("admin listener");
    assert!(allowed(gateway.addr(), "https://a.example").await);

    let fifo = scratch_path("swap.fifo");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &path).expect("FIFO renamed over the rules file");
    // The watch sees the rename and reloads on its own too; that reload must not hang either,
    // or this one would wait behind it.
    let (status, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome}");
    let error = outcome["routes"][0]["results"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("FIFO"), "{error}");
    assert!(
        allowed(gateway.addr(), "https://a.example").await,
        "the rules in force keep serving"
    );

    let tmp = path.with_extension("xml.tmp");
    std::fs::write(&tmp, ALLOW_B).expect("write rules");
    std::fs::rename(&tmp, &path).expect("valid file renamed over the FIFO");
    let (status, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert!(allowed(gateway.addr(), "https://b.example").await);
    assert!(!allowed(gateway.addr(), "https://a.example").await);
}

#[tokio::test]
async fn a_directory_as_the_rules_file_is_an_error_naming_it() {
    let dir = scratch_path("rules-dir");
    std::fs::create_dir_all(&dir).expect("directory");
    let error = start_error(&dir).await;
    assert!(
        error.contains(&format!(
            "{}: cannot read: it is a directory, not a regular file",
            dir.display()
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_rules_file_over_64_kib_is_an_error_naming_the_limit() {
    let path = rules_file(&padded(LIMIT + 1));
    let error = start_error(&path).await;
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(
        error.contains("larger than 65536 bytes (64 KiB)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_rules_file_of_exactly_64_kib_is_read() {
    let origin = Origin::start(Reply::default()).await;
    let path = rules_file(&padded(LIMIT));
    let gateway = start(config(vec![file_route(&origin, &path)])).await;
    assert!(allowed(gateway.addr(), "https://a.example").await);
}

#[test]
fn corsgate_check_reads_rules_files_as_the_gateway_does() {
    let large = rules_file(&padded(LIMIT + 1));
    let dir = scratch_path("check-dir");
    std::fs::create_dir_all(&dir).expect("directory");
    let fifo = scratch_path("check.fifo");
    mkfifo(&fifo);
    let exact = rules_file(&padded(LIMIT));
    let cases = [
        (
            &large,
            1,
            ":1:1: InvalidRequest: the document is 65537 bytes; a CORS configuration may be at most 65536 bytes",
        ),
        (
            &dir,
            2,
            ": cannot read: it is a directory, not a regular file",
        ),
        (&fifo, 2, ": cannot read: it is a FIFO, not a regular file"),
        (&exact, 0, ": valid (1 rule"),
    ];
    for (path, code, message) in cases {
        let path = path.to_str().expect("utf-8 temp path");
        let exited = run_to_exit(&["check", path], &[], &[], Duration::from_secs(30))
            .expect("corsgate check exits");
        assert_eq!(exited.code, Some(code), "{path}: {exited:?}");
        let said = format!("{}{}", exited.stdout, exited.stderr);
        assert!(said.contains(&format!("{path}{message}")), "{said}");
    }
}
