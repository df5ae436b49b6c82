//! Who the admin listener answers: its own Host only (DNS rebinding), its own Origin only (other
//! web pages), the bearer token when `admin.token_env` names one, and the start refusing an
//! admin listener that would be exposed or whose token cannot be read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use corsgate::rules::{BucketSource, RulesSource, SigningConfig};
use http::StatusCode;

const TOKEN_VAR: &str = "CORSGATE_TEST_ADMIN_TOKEN";
const RULES: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";

/// A gateway with an admin listener on 127.0.0.1 and one route without rules.
async fn admin_gateway() -> (corsgate::gateway::Running, SocketAddr) {
    let origin = Origin::start(Reply::default()).await;
    let gateway = start(config_with_admin(vec![route(&["*"], &origin, None)])).await;
    let admin = gateway.admin.expect("admin listener");
    (gateway, admin)
}

/// A configuration file naming `TOKEN_VAR`, for the binary.
fn token_config() -> PathBuf {
    config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         token_env = \"{TOKEN_VAR}\"\n\n[[route]]\nhosts = [\"*\"]\n\
         origin = \"http://127.0.0.1:1\"\n"
    ))
}

#[tokio::test]
async fn a_foreign_host_is_403_and_the_listeners_own_hosts_are_answered() {
    let (_gateway, admin) = admin_gateway().await;
    let port = admin.port();

    for host in ["evil.example", &format!("evil.example:{port}"), "10.9.8.7"] {
        let answer = send(admin, "GET", "/healthz", &[("host", host)]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{host}");
        assert!(
            String::from_utf8_lossy(&answer.body).contains("Host"),
            "the refusal says why: {:?}",
            answer.body
        );
    }
    for host in [
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let answer = send(admin, "GET", "/-/rules", &[("host", &host)]).await;
        assert_eq!(answer.status, StatusCode::OK, "{host}");
    }
}

#[tokio::test]
async fn a_request_without_host_is_403() {
    let (_gateway, admin) = admin_gateway().await;
    let head = raw(admin, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

#[tokio::test]
async fn a_reload_sent_by_another_page_is_403_and_reloads_nothing() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(RULES));
    let route = route_to(
        &s3.url(),
        RulesSource::Bucket(BucketSource {
            bucket: "photos".into(),
            // No poll during the test: every fetch is one the test asked for.
            poll: Duration::from_secs(3600),
            signing: SigningConfig::default(),
        }),
    );
    let gateway = start(config_with_admin(vec![route])).await;
    let admin_addr = gateway.admin.expect("admin listener");
    let own = format!("localhost:{}", admin_addr.port());
    let fetches = s3.cors_gets();

    let foreign = send(
        admin_addr,
        "POST",
        "/-/reload",
        &[("host", &own), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    assert_eq!(s3.cors_gets(), fetches, "a refused reload fetches nothing");

    let same_origin = format!("http://{own}");
    let allowed = send(
        admin_addr,
        "POST",
        "/-/reload",
        &[("host", &own), ("origin", &same_origin)],
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(
        s3.cors_gets(),
        fetches + 1,
        "the listener's own page reloads"
    );

    // No Origin at all: curl, scripts.
    let (status, _) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s3.cors_gets(), fetches + 2);
}

#[tokio::test]
async fn with_a_token_every_request_but_the_health_checks_needs_it() {
    let config = token_config();
    let config = config.to_str().expect("utf-8 temp path");
    let (binary, _) = Binary::start_with_env(
        &["serve", "--config", config],
        env!("CARGO_MANIFEST_DIR"),
        &[(TOKEN_VAR, "s3cret-token")],
    );
    let admin = binary.admin();

    let none = send(admin, "GET", "/-/rules", &[]).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(
        none.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "{:?}",
        none.headers
    );
    let wrong = send(
        admin,
        "POST",
        "/-/reload",
        &[("authorization", "Bearer s3cret-tokem")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.header("www-authenticate").is_some());

    let right = send(
        admin,
        "GET",
        "/-/rules",
        &[("authorization", "Bearer s3cret-token")],
    )
    .await;
    assert_eq!(right.status, StatusCode::OK);
    for path in ["/healthz", "/readyz"] {
        let probe = send(admin, "GET", path, &[]).await;
        assert_eq!(probe.status, StatusCode::OK, "{path} needs no token");
    }
}

#[test]
fn an_exposed_admin_address_without_a_token_does_not_start() {
    let exited = run_to_exit(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--origin",
            "http://127.0.0.1:1",
            "--admin",
            "0.0.0.0:0",
        ],
        &[],
        &[],
        Duration::from_secs(30),
    )
    .expect("corsgate exits");
    assert_eq!(exited.code, Some(2), "{}", exited.stderr);
    assert!(
        exited
            .stderr
            .contains("--admin: 0.0.0.0:0 is reachable from other machines"),
        "{}",
        exited.stderr
    );
    assert!(
        exited.stderr.contains("admin.token_env"),
        "{}",
        exited.stderr
    );
}

#[test]
fn an_unset_or_empty_token_variable_does_not_start() {
    let config = token_config();
    let config = config.to_str().expect("utf-8 temp path");
    let args = ["serve", "--config", config, "--admin", "127.0.0.1:0"];
    let unset =
        run_to_exit(&args, &[], &[TOKEN_VAR], Duration::from_secs(30)).expect("corsgate exits");
    let empty = run_to_exit(&args, &[(TOKEN_VAR, "")], &[], Duration::from_secs(30))
        .expect("corsgate exits");
    for (exited, what) in [(unset, "is not set"), (empty, "is empty")] {
        assert_eq!(exited.code, Some(1), "{}", exited.stderr);
        assert!(
            exited.stderr.contains(&format!(
                "admin.token_env: the environment variable {TOKEN_VAR} {what}"
            )),
            "{}",
            exited.stderr
        );
        assert!(
            !exited.stderr.contains("listening on"),
            "nothing was started: {}",
            exited.stderr
        );
    }
}
