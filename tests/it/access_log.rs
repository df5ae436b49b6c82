//! The access log of the real binary: JSON lines checked field by field, the file reopened on
//! `SIGUSR1` as logrotate expects, no line lost on `SIGTERM`, text lines on stderr by default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use serde_json::Value;

const RULES: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://app.example</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><ExposeHeader>ETag</ExposeHeader>\
    </CORSRule></CORSConfiguration>";

/// A fresh directory for one test's log files.
fn log_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "corsgate-access-log-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// `corsgate serve --config` with a JSON access log at `log`, in front of `origin`.
fn serve_json(origin: &Origin, log: &Path) -> (Binary, SocketAddr) {
    let toml = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [log]\nformat = \"json\"\naccess_file = \"{}\"\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"{}\"\nrules = {{ file = \"{}\" }}\n",
        log.display(),
        origin.url(),
        rules_file(RULES).display()
    );
    let config = config_file(&toml);
    let config = config.to_str().expect("utf-8 temp path");
    Binary::start(&["serve", "--config", config], env!("CARGO_MANIFEST_DIR"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `path` holds `n` lines (the writer flushes in the background).
async fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let written = eventually(Duration::from_secs(10), || async { lines(path).len() >= n }).await;
    let got = lines(path);
    assert!(written, "{} of {n} lines written: {got:#?}", got.len());
    got
}

fn signal(binary: &Binary, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(binary.0.id()).expect("pid fits pid_t");
    // SAFETY: kill(2) only reads its arguments; the pid is our own child's.
    let rc = unsafe { libc::kill(pid, signal) };
    assert_eq!(rc, 0, "kill -{signal} {pid}");
}

/// Waits for the binary to exit on its own; its exit code.
async fn exited(binary: &mut Binary) -> Option<i32> {
    let mut status = None;
    let done = eventually(Duration::from_secs(30), || {
        status = status.or_else(|| binary.0.try_wait().ok().flatten());
        std::future::ready(status.is_some())
    })
    .await;
    assert!(done, "corsgate did not exit after SIGTERM");
    status.and_then(|s| s.code())
}

async fn preflight(gateway: SocketAddr, origin: &str) -> Answer {
    send(
        gateway,
        "OPTIONS",
        "/photos/cat.jpg",
        &[("origin", origin), ("access-control-request-method", "PUT")],
    )
    .await
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_every_field_with_its_documented_value() {
    let origin = Origin::start(Reply::default()).await;
    let log = log_dir().join("access.log");
    let (_binary, gateway) = serve_json(&origin, &log);

    let allowed = preflight(gateway, "https://app.example").await;
    let denied = preflight(gateway, "https://evil.example").await;
    let forwarded = send(
        gateway,
        "GET",
        "/photos/cat.jpg?X-Amz-Signature=secret",
        &[("origin", "https://app.example")],
    )
    .await;
    assert_eq!(
        (allowed.status, denied.status, forwarded.status),
        (StatusCode::OK, StatusCode::FORBIDDEN, StatusCode::OK)
    );

    let written: Vec<Value> = wait_for_lines(&log, 3)
        .await
        .iter()
        .map(|l| parse(l))
        .collect();
    // Lines appended on different worker threads may be written out of time order (see
    // docs/access-log.md): each line is found by what it records.
    let line_of = |cors: &str| {
        let mut found = written.iter().filter(|l| l["cors"] == cors);
        let line = found
            .next()
            .unwrap_or_else(|| panic!("no {cors} line: {written:#?}"));
        assert!(found.next().is_none(), "two {cors} lines: {written:#?}");
        line.clone()
    };
    let [allowed_line, denied_line, forwarded_line] =
        ["preflight-allowed", "preflight-denied", "actual-decorated"].map(line_of);
    let names = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    let every_field = [
        "bytes",
        "cache",
        "client",
        "cors",
        "denial",
        "duration_ms",
        "host",
        "method",
        "origin_ms",
        "origin_status",
        "path",
        "request_id",
        "rule",
        "status",
        "time",
    ];
    for line in [&allowed_line, &denied_line, &forwarded_line] {
        assert_eq!(names(line), every_field, "{line}");
        let time = line["time"].as_str().expect("time");
        assert!(
            humantime::parse_rfc3339(time).is_ok() && time.len() == 24,
            "{time}"
        );
        let client = line["client"].as_str().expect("client");
        assert!(client.starts_with("127.0.0.1:"), "{client}");
        assert_eq!(line["host"], gateway.to_string());
        // The query (a presigned URL's signature) is never logged.
        assert_eq!(line["path"], "/photos/cat.jpg");
        assert!(
            line["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{line}"
        );
    }

    assert_eq!(allowed_line["method"], "OPTIONS");
    assert_eq!(allowed_line["status"], 200);
    assert_eq!(allowed_line["bytes"], 0);
    assert_eq!(allowed_line["cors"], "preflight-allowed");
    assert_eq!(allowed_line["rule"], 1);
    assert_eq!(allowed_line["denial"], Value::Null);
    // One rule, no wildcard: evaluated without the cache, and the line says so.
    assert_eq!(allowed_line["cache"], "skip");
    assert_eq!(allowed_line["origin_status"], Value::Null);
    assert_eq!(allowed_line["origin_ms"], Value::Null);
    assert_eq!(
        allowed_line["request_id"],
        allowed.header("x-amz-request-id").expect("a request ID")
    );

    assert_eq!(denied_line["status"], 403);
    assert_eq!(denied_line["cors"], "preflight-denied");
    assert_eq!(denied_line["rule"], Value::Null);
    assert_eq!(denied_line["denial"], "AccessForbidden");
    assert_eq!(denied_line["bytes"], denied.body.len());
    assert_eq!(
        denied_line["request_id"],
        denied.header("x-amz-request-id").expect("a request ID")
    );

    assert_eq!(forwarded_line["method"], "GET");
    assert_eq!(forwarded_line["status"], 200);
    assert_eq!(forwarded_line["cors"], "actual-decorated");
    assert_eq!(forwarded_line["rule"], 1);
    assert_eq!(forwarded_line["cache"], Value::Null);
    assert_eq!(forwarded_line["bytes"], forwarded.body.len());
    assert_eq!(forwarded_line["origin_status"], 200);
    let origin_ms = forwarded_line["origin_ms"].as_f64().expect("origin time");
    let total_ms = forwarded_line["duration_ms"].as_f64().expect("duration");
    assert!(origin_ms <= total_ms, "{forwarded_line}");
    // The origin sent none, and corsgate adds none to an origin's answer.
    assert_eq!(forwarded_line["request_id"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_file_by_name_after_a_rename() {
    let origin = Origin::start(Reply::default()).await;
    let dir = log_dir();
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let (binary, gateway) = serve_json(&origin, &log);

    for _ in 0..3 {
        preflight(gateway, "https://app.example").await;
    }
    wait_for_lines(&log, 3).await;
    std::fs::rename(&log, &rotated).expect("rotate");
    signal(&binary, libc::SIGUSR1);
    let reopened = eventually(Duration::from_secs(10), || async { log.exists() }).await;
    assert!(reopened, "no new file at {}", log.display());

    for _ in 0..2 {
        preflight(gateway, "https://evil.example").await;
    }
    let new = wait_for_lines(&log, 2).await;
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|l| parse(l)["status"] == 403), "{new:#?}");
    let old = lines(&rotated);
    assert_eq!(old.len(), 3, "{old:#?}");
    assert!(old.iter().all(|l| parse(l)["status"] == 200), "{old:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_line_even_of_requests_still_in_flight() {
    const PREFLIGHTS: usize = 200;
    const IN_FLIGHT: usize = 10;
    let origin = Origin::start(Reply {
        delay: Duration::from_millis(300),
        ..Reply::default()
    })
    .await;
    let log = log_dir().join("access.log");
    let (mut binary, gateway) = serve_json(&origin, &log);

    let client = client();
    for i in 0..PREFLIGHTS {
        let from = if i % 2 == 0 {
            "https://app.example"
        } else {
            "https://evil.example"
        };
        send_with(
            &client,
            gateway,
            "OPTIONS",
            "/k",
            &[("origin", from), ("access-control-request-method", "GET")],
        )
        .await;
    }
    let slow: Vec<_> = (0..IN_FLIGHT)
        .map(|_| tokio::spawn(async move { send(gateway, "GET", "/slow", &[]).await.status }))
        .collect();
    let all_at_origin = eventually(Duration::from_secs(10), || async {
        origin.count() == IN_FLIGHT
    })
    .await;
    assert!(
        all_at_origin,
        "{} of {IN_FLIGHT} requests reached the origin",
        origin.count()
    );

    signal(&binary, libc::SIGTERM);
    for request in slow {
        assert_eq!(request.await.expect("request task"), StatusCode::OK);
    }
    assert_eq!(exited(&mut binary).await, Some(0));

    let written = lines(&log);
    assert_eq!(written.len(), PREFLIGHTS + IN_FLIGHT);
    let forwarded = written
        .iter()
        .map(|l| parse(l))
        .filter(|l| l["path"] == "/slow" && l["origin_status"] == 200)
        .count();
    assert_eq!(forwarded, IN_FLIGHT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_go_to_stderr_by_default() {
    let origin = Origin::start(Reply::default()).await;
    let rules = rules_file(RULES);
    let (binary, gateway) = Binary::serve(
        &origin.url(),
        &["--rules", rules.to_str().expect("utf-8 temp path")],
        &[],
    );
    let answer = preflight(gateway, "https://app.example").await;
    let id = answer
        .header("x-amz-request-id")
        .expect("a request ID")
        .to_string();
    let logged = eventually(Duration::from_secs(10), || {
        std::future::ready(!binary.log_lines(&format!("request_id={id}")).is_empty())
    })
    .await;
    assert!(logged, "no access line for {id}");
    let line = &binary.log_lines(&format!("request_id={id}"))[0];
    assert!(line.starts_with("time="), "{line}");
    for field in [
        "method=OPTIONS",
        "path=/photos/cat.jpg",
        "status=200",
        "bytes=0",
        "cors=preflight-allowed",
        "rule=1",
        "denial=-",
        "cache=skip",
        "origin_status=-",
        "origin_ms=-",
    ] {
        assert!(line.contains(&format!(" {field} ")), "{field} in {line}");
    }
}

/// The binary with its stderr in a file, so that everything it wrote can be read once it exits.
struct Quiet {
    child: std::process::Child,
    stderr: PathBuf,
}

impl Quiet {
    fn start(args: &[&str], env: &[(&str, &str)]) -> (Quiet, SocketAddr) {
        use std::process::{Command, Stdio};
        let stderr = log_dir().join("stderr");
        let file = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(env!("CARGO_BIN_EXE_corsgate"))
            .args(args)
            .args(["--admin", "127.0.0.1:0"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start the corsgate binary");
        let quiet = Quiet { child, stderr };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&quiet.stderr).unwrap_or_default();
            let addr = text
                .lines()
                .find_map(|l| l.split("corsgate listening on http://").nth(1))
                .and_then(|a| a.trim().parse().ok());
            if let Some(addr) = addr {
                return (quiet, addr);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never listened: {text}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_access_false_and_the_rust_log_switch_both_turn_it_off_and_sigusr1_is_harmless() {
    let origin = Origin::start(Reply::default()).await;
    let rules = rules_file(RULES);
    let rules = rules.to_str().expect("utf-8 temp path");
    let quiet = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[log]\naccess = false\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"{}\"\nrules = {{ file = \"{rules}\" }}\n",
        origin.url(),
    );
    let quiet = config_file(&quiet);
    let url = origin.url();
    let by_config = Quiet::start(
        &[
            "serve",
            "--config",
            quiet.to_str().expect("utf-8 temp path"),
        ],
        &[],
    );
    let by_env = Quiet::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--origin",
            &url,
            "--rules",
            rules,
        ],
        &[("RUST_LOG", "info,corsgate::access=off")],
    );
    for (mut binary, gateway) in [by_config, by_env] {
        let pid = libc::pid_t::try_from(binary.child.id()).expect("pid fits pid_t");
        // A logrotate script left in place: SIGUSR1 must not stop a gateway without a log file.
        // SAFETY: kill(2) only reads its arguments; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
        assert_eq!(
            preflight(gateway, "https://app.example").await.status,
            StatusCode::OK
        );
        // SAFETY: kill(2) only reads its arguments; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = binary.child.wait().expect("corsgate exits");
        assert_eq!(status.code(), Some(0));
        // Exited: everything it would have logged is in the file.
        let stderr = std::fs::read_to_string(&binary.stderr).expect("stderr");
        assert!(stderr.contains("shutting down"), "{stderr}");
        assert!(!stderr.contains("cors="), "{stderr}");
    }
}
