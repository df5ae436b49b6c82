//! The admin listener's `/metrics` read by the Prometheus project's own tools: `promtool check
//! metrics` lints the exposition, and a real Prometheus server on loopback scrapes corsgate
//! and gives back, through its query API, exactly the counts of the traffic sent. Needs the
//! Debian package `prometheus` (`/usr/bin/prometheus`, `/usr/bin/promtool`); fails, never
//! skips, without it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

const RULES: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";

/// A Prometheus server, killed (and reaped) when dropped, however the test ends.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `target`'s `/metrics` every second, keeping its data in `dir`.
    fn start(target: SocketAddr, dir: &Path) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: corsgate\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .expect("write the Prometheus configuration");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).expect("Prometheus log file");
        let err = out.try_clone().expect("Prometheus log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("prometheus must be installed (Debian package `prometheus`)");
        Prometheus { child, addr, log }
    }

    fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on its web listener; `None` while it does not answer.
    async fn get(&self, path: &str) -> Option<(StatusCode, Bytes)> {
        let req = Request::get(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(5), client().request(req))
            .await
            .ok()?
            .ok()?;
        let status = response.status();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    }

    /// The value of an instant query that selects one series, once Prometheus has one.
    async fn query(&self, promql: &str) -> Option<f64> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .await?;
        if status != StatusCode::OK {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let result = answer["data"]["result"].as_array()?;
        match result.as_slice() {
            [series] => series["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` on `exposition`: its exit status and what it said.
fn promtool_check(exposition: &[u8]) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`)");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(exposition)
        .expect("write the exposition to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), said)
}

/// Alone in a process: the metrics registry is one per process, and other tests' in-process
/// gateways would add to the counts Prometheus must read back exactly.
#[test]
fn promtool_accepts_the_exposition_and_prometheus_reads_back_the_counts_sent() {
    alone_in_a_process(
        "prometheus::promtool_accepts_the_exposition_and_prometheus_reads_back_the_counts_sent",
        || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(exposition_and_counts());
        },
    );
}

async fn exposition_and_counts() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = start(config_with_admin(vec![route(&["*"], &origin, Some(RULES))])).await;
    let admin = gateway.admin.expect("an admin listener");
    // One of every kind first, so the lint sees every family with samples.
    let preflight =
        |origin: &'static str| [("origin", origin), ("access-control-request-method", "GET")];
    send(
        gateway.addr(),
        "OPTIONS",
        "/k",
        &preflight("https://a.example"),
    )
    .await;

    let exposition = send(admin, "GET", "/metrics", &[]).await;
    assert_eq!(exposition.status, StatusCode::OK);
    let (clean, said) = promtool_check(&exposition.body);
    assert!(
        clean && said.trim().is_empty(),
        "promtool check metrics:\n{said}\non:\n{}",
        String::from_utf8_lossy(&exposition.body)
    );

    let dir = scratch_dir("prometheus");
    let prometheus = Prometheus::start(admin, &dir);
    let ready = eventually(Duration::from_secs(60), || async {
        matches!(prometheus.get("/-/ready").await, Some((StatusCode::OK, _)))
    })
    .await;
    assert!(
        ready,
        "Prometheus did not become ready:\n{}",
        prometheus.said()
    );

    for _ in 0..4 {
        let answer = send(
            gateway.addr(),
            "OPTIONS",
            "/k",
            &preflight("https://a.example"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    for _ in 0..2 {
        let answer = send(
            gateway.addr(),
            "OPTIONS",
            "/k",
            &preflight("https://evil.example"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
    for _ in 0..3 {
        let answer = send(
            gateway.addr(),
            "GET",
            "/k",
            &[("origin", "https://a.example")],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }

    let expected = [
        (
            r#"corsgate_requests_total{route="1",kind="preflight",outcome="allowed"}"#,
            5.0,
        ),
        (
            r#"corsgate_requests_total{route="1",kind="preflight",outcome="denied"}"#,
            2.0,
        ),
        (
            r#"corsgate_requests_total{route="1",kind="actual",outcome="decorated"}"#,
            3.0,
        ),
        (
            r#"corsgate_request_duration_seconds_count{route="1",kind="preflight"}"#,
            7.0,
        ),
        (
            r#"corsgate_request_duration_seconds_bucket{route="1",kind="actual",le="+Inf"}"#,
            3.0,
        ),
        (
            r#"corsgate_rules_reloads_total{route="1",source="file",result="applied"}"#,
            1.0,
        ),
    ];
    let build = format!(
        r#"corsgate_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    // Counters only grow: once Prometheus has scraped after the traffic, every reading is
    // final.
    let scraped = eventually(Duration::from_secs(30), || async {
        prometheus.query(expected[0].0).await == Some(expected[0].1)
            && prometheus.query(expected[2].0).await == Some(expected[2].1)
    })
    .await;
    assert!(
        scraped,
        "Prometheus never read the traffic's counts:\n{}",
        prometheus.said()
    );
    for (series, value) in expected {
        assert_eq!(prometheus.query(series).await, Some(value), "{series}");
    }
    assert_eq!(prometheus.query(&build).await, Some(1.0), "{build}");
    // The scrape itself went well: the target is up and its last scrape had no error.
    assert_eq!(prometheus.query(r#"up{job="corsgate"}"#).await, Some(1.0));
    let (_, targets) = prometheus
        .get("/api/v1/targets")
        .await
        .expect("the targets API answers");
    let targets: serde_json::Value = serde_json::from_slice(&targets).expect("JSON targets");
    assert_eq!(
        targets["data"]["activeTargets"][0]["lastError"], "",
        "{targets}"
    );
}
