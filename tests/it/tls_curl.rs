//! HTTPS with real curl against the real binary: ALPN (`--http2`, `--http1.1`), preflights and
//! proxied bodies, SNI with several certificates (curl verifies the name, so a wrong certificate
//! fails the command), and certificate reload on SIGHUP while a kept-alive connection stays
//! open. Needs `curl` (with HTTP/2) and `kill`; fails, never skips, without them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::https::HttpsConn;
use crate::common::pki::TestCa;
use crate::common::*;
use http::StatusCode;

const RULES: &str = "<CORSConfiguration><CORSRule>\
    <AllowedOrigin>https://app.test</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod>\
    <AllowedHeader>content-type</AllowedHeader>\
    </CORSRule></CORSConfiguration>";

/// Runs curl over TLS to `https://NAME:PORT/PATH`, with NAME resolved to 127.0.0.1 and only
/// `ca` trusted. Returns (exit success, `-w` output appended to the head and body, stderr).
fn curl(ca: &Path, name: &str, port: u16, path: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("curl")
        .args(["-siS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(["-w", "\nversion=%{http_version}"])
        .args(args)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("curl must be installed (Debian package `curl`)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn curl_ok(ca: &Path, name: &str, port: u16, path: &str, args: &[&str]) -> String {
    let (ok, out, err) = curl(ca, name, port, path, args);
    assert!(ok, "curl https://{name}:{port}{path} {args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http2_and_http11_over_tls_and_sees_the_same_cors() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("curl-alpn");
    let leaf = ca.leaf(&["a.test"]);
    let rules = rules_file(RULES);
    let (_gateway, addr) = Binary::serve(
        &origin.url(),
        &[
            "--rules",
            &rules.to_string_lossy(),
            "--tls-cert",
            &leaf.files.cert.to_string_lossy(),
            "--tls-key",
            &leaf.files.key.to_string_lossy(),
        ],
        &[],
    );
    let port = addr.port();
    for (flag, version, status_line) in [
        ("--http2", "version=2", "HTTP/2 200"),
        ("--http1.1", "version=1.1", "HTTP/1.1 200"),
    ] {
        let preflight = curl_ok(
            &ca.file,
            "a.test",
            port,
            "/k.txt",
            &[
                flag,
                "-X",
                "OPTIONS",
                "-H",
                "Origin: https://app.test",
                "-H",
                "Access-Control-Request-Method: PUT",
                "-H",
                "Access-Control-Request-Headers: content-type",
            ],
        );
        assert!(preflight.starts_with(status_line), "{preflight}");
        assert!(preflight.ends_with(version), "{preflight}");
        assert!(
            preflight.contains("access-control-allow-origin: https://app.test\n"),
            "{preflight}"
        );
        assert!(
            preflight.contains("access-control-allow-methods: GET, PUT\n"),
            "{preflight}"
        );

        let get = curl_ok(
            &ca.file,
            "a.test",
            port,
            "/k.txt",
            &[flag, "-H", "Origin: https://app.test"],
        );
        assert!(get.starts_with(status_line), "{get}");
        assert!(get.contains("\n\norigin body\nversion="), "{get}");
        assert!(
            get.contains("access-control-allow-origin: https://app.test\n"),
            "{get}"
        );
        assert!(!get.contains("\nconnection:"), "{get}");
    }
    assert_eq!(origin.count(), 2, "preflights are never forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_the_certificate_for_each_name_from_one_listener() {
    let origin = Origin::start(Reply::default()).await;
    let ca = TestCa::new("curl-sni");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["*.b.test"]);
    let config = format!(
        r#"
        [server]
        listen = []
        [[server.tls]]
        listen = "127.0.0.1:0"
        certs = [{{ cert = {:?}, key = {:?} }}, {{ cert = {:?}, key = {:?} }}]
        unknown_name = "reject"
        [[route]]
        hosts = ["*"]
        origin = "{}"
        "#,
        a.files.cert,
        a.files.key,
        b.files.cert,
        b.files.key,
        origin.url()
    );
    let path = config_file(&config);
    let (_gateway, addr) = Binary::start(
        &["serve", "--config", &path.to_string_lossy()],
        env!("CARGO_MANIFEST_DIR"),
    );
    // curl checks the served certificate against the name it asked for: each success below is
    // SNI choosing the right certificate.
    for name in ["a.test", "img.b.test", "css.b.test"] {
        let out = curl_ok(&ca.file, name, addr.port(), "/", &["--http2"]);
        assert!(out.starts_with("HTTP/2 200"), "{name}: {out}");
    }
    let (ok, _, err) = curl(&ca.file, "c.test", addr.port(), "/", &["--http2"]);
    assert!(!ok, "a name no certificate covers is refused");
    assert!(
        err.contains("alert") || err.contains("SSL"),
        "a TLS failure: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificates_while_an_open_connection_keeps_working() {
    let origin = Origin::start(Reply::default()).await;
    let old_ca = TestCa::new("curl-old");
    let new_ca = TestCa::new("curl-new");
    let leaf = old_ca.leaf(&["a.test"]);
    let (gateway, addr) = Binary::serve(
        &origin.url(),
        &[
            "--tls-cert",
            &leaf.files.cert.to_string_lossy(),
            "--tls-key",
            &leaf.files.key.to_string_lossy(),
        ],
        &[],
    );
    let port = addr.port();
    let pid = gateway.0.id().to_string();
    let hangup = || {
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("`kill` must be installed (Debian package `procps`)");
        assert!(status.success());
    };
    let mut open = HttpsConn::open(addr, "a.test", old_ca.client_config(&["h2"]))
        .await
        .expect("handshake");
    assert_eq!(open.send("GET", "/", &[]).await.status, StatusCode::OK);

    // Each reload's outcome is logged, whether the file watch or SIGHUP started it.
    let reloads_logged = |outcome: &str| gateway.log_lines(outcome).len();
    let logged_again = |outcome: &'static str, before: usize| {
        eventually(Duration::from_secs(10), move || {
            let now = reloads_logged(outcome);
            async move { now > before }
        })
    };
    const RELOADED: &str = "certificates reloaded";
    const KEPT: &str = "the previous certificates stay in use";

    // A renewal signed by another CA: once reloaded, only that CA's trust works.
    let before = reloads_logged(RELOADED);
    new_ca.leaf(&["a.test"]).write_to(&leaf.files);
    hangup();
    assert!(
        logged_again(RELOADED, before).await,
        "SIGHUP did not reload the certificate"
    );
    assert!(curl(&new_ca.file, "a.test", port, "/", &[]).0);
    assert!(!curl(&old_ca.file, "a.test", port, "/", &[]).0);
    assert_eq!(
        open.send("GET", "/", &[]).await.status,
        StatusCode::OK,
        "the connection opened before the reload still works"
    );

    // A broken renewal: the reload fails, the certificate in use stays.
    let before = reloads_logged(KEPT);
    std::fs::write(&leaf.files.cert, "garbage").expect("write");
    hangup();
    assert!(
        logged_again(KEPT, before).await,
        "the failed reload is not logged"
    );
    let out = curl_ok(&new_ca.file, "a.test", port, "/", &["--http1.1"]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(open.send("GET", "/", &[]).await.status, StatusCode::OK);
}
