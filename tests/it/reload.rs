//! Rules files change while corsgate runs: watched edits (rename included), SIGHUP, the admin
//! listener's reload, and what a bad file does (nothing, loudly).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use corsgate::rules::{BucketSource, RulesSource, SigningConfig};
use http::StatusCode;

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const ALLOW_B: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://b.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
/// Line 3, column 5: a lower-case method, which S3 refuses with InvalidRequest.
const INVALID: &str = "<CORSConfiguration>\n <CORSRule><AllowedOrigin>https://b.example</AllowedOrigin>\n    <AllowedMethod>get</AllowedMethod></CORSRule>\n</CORSConfiguration>";

async fn allowed(gateway: SocketAddr, origin: &str) -> bool {
    send(
        gateway,
        "OPTIONS",
        "/k",
        &[("origin", origin), ("access-control-request-method", "GET")],
    )
    .await
    .status
        == StatusCode::OK
}

/// An editor's save: a temporary file renamed over the original.
fn save_by_rename(path: &Path, contents: &str) {
    let tmp = path.with_extension("xml.tmp");
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

fn file_route(origin: &Origin, path: &Path) -> corsgate::config::RouteConfig {
    let mut route = route(&["*"], origin, None);
    route.rules = RulesSource::File(path.to_path_buf());
    route
}

#[tokio::test]
async fn an_edit_saved_by_rename_is_in_force_without_a_restart() {
    let origin = Origin::start(Reply::default()).await;
    let path = rules_file(ALLOW_A);
    let gateway = start(config_with_admin(vec![file_route(&origin, &path)])).await;
    let admin_addr = gateway.admin.expect("admin");
    let (_, before) = admin(admin_addr, "GET", "/-/rules").await;
    assert!(allowed(gateway.addr(), "https://a.example").await);

    save_by_rename(&path, ALLOW_B);
    assert!(
        eventually(Duration::from_secs(5), || allowed(
            gateway.addr(),
            "https://b.example"
        ))
        .await,
        "the saved rules are in force"
    );
    assert!(!allowed(gateway.addr(), "https://a.example").await);

    let (_, after) = admin(admin_addr, "GET", "/-/rules").await;
    let rules = &after["routes"][0]["rules"];
    assert!(rules["generation"].as_u64() > before["routes"][0]["rules"]["generation"].as_u64());
    assert_eq!(
        rules["document"]["CORSRules"][0]["AllowedOrigins"][0],
        "https://b.example"
    );
    assert_eq!(
        after["routes"][0]["source"]["file"],
        path.display().to_string()
    );
    assert!(rules["loaded_at"].is_string() && rules["last_error"].is_null());
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_invalid_file_keeps_the_old_rules_and_shows_line_column_and_s3_code() {
    let origin = Origin::start(Reply::default()).await;
    let path = rules_file(ALLOW_A);
    let gateway = start(config_with_admin(vec![file_route(&origin, &path)])).await;
    let admin_addr = gateway.admin.expect("admin");
    let (_, before) = admin(admin_addr, "GET", "/-/rules").await;

    save_by_rename(&path, INVALID);
    let reported = eventually(Duration::from_secs(5), || async {
        let (_, view) = admin(admin_addr, "GET", "/-/rules").await;
        !view["routes"][0]["rules"]["last_error"].is_null()
    })
    .await;
    assert!(reported, "the error is shown");
    let (_, view) = admin(admin_addr, "GET", "/-/rules").await;
    let rules = &view["routes"][0]["rules"];
    let problem = &rules["last_error"]["problems"][0];
    assert_eq!(
        (&problem["line"], &problem["col"], &problem["code"]),
        (&3.into(), &5.into(), &"InvalidRequest".into())
    );
    let message = rules["last_error"]["message"].as_str().expect("message");
    assert!(
        message.contains(&format!("{}:3:5: InvalidRequest", path.display())),
        "{message}"
    );
    assert_eq!(
        rules["generation"],
        before["routes"][0]["rules"]["generation"]
    );
    assert!(allowed(gateway.addr(), "https://a.example").await);
    assert!(!allowed(gateway.addr(), "https://b.example").await);

    // The admin reload says so too; once the file is fixed, it says the rules changed.
    let (status, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(outcome["routes"][0]["results"][0]["error"].is_string());
    std::fs::write(&path, ALLOW_B).expect("fix");
    let (status, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert!(allowed(gateway.addr(), "https://b.example").await);
    gateway.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_answer_health_readiness_and_refuse_other_methods() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = start(config_with_admin(vec![route(
        &["*"],
        &origin,
        Some(ALLOW_A),
    )]))
    .await;
    let admin_addr = gateway.admin.expect("admin");
    assert_eq!(
        send(admin_addr, "GET", "/healthz", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(admin_addr, "GET", "/readyz", &[]).await.status,
        StatusCode::OK
    );
    let refused = send(admin_addr, "GET", "/-/reload", &[]).await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.header("allow"), Some("POST"));
    assert_eq!(
        send(admin_addr, "GET", "/nope", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // Nothing CORS-related is served there.
    assert_eq!(
        send(admin_addr, "OPTIONS", "/k", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_bucket_route_is_not_ready_until_its_rules_are_loaded() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    s3.set_failing(true);
    let route = route_to(
        &s3.url(),
        RulesSource::Bucket(BucketSource {
            bucket: "photos".into(),
            poll: Duration::from_secs(2),
            signing: SigningConfig::default(),
        }),
    );
    let gateway = start(config_with_admin(vec![route])).await;
    let admin_addr = gateway.admin.expect("admin");
    let waiting = send(admin_addr, "GET", "/readyz", &[]).await;
    assert_eq!(waiting.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(waiting.body, "route[1]: rules not loaded\n");

    s3.set_failing(false);
    // Backoff: the first retry comes a second after the failed start.
    let ready = eventually(Duration::from_secs(5), || async {
        send(admin_addr, "GET", "/readyz", &[]).await.status == StatusCode::OK
    })
    .await;
    assert!(ready);
    assert!(allowed(gateway.addr(), "https://a.example").await);
    gateway.shutdown().await;
}

#[test]
fn sighup_reloads_a_change_the_file_watch_cannot_see() {
    // The rules path is a symlink into another directory: writing the target in place is
    // invisible to a watch on the symlink's directory, which is what SIGHUP is for.
    let target = rules_file(ALLOW_A);
    let link_dir = target.with_extension("links");
    std::fs::create_dir_all(&link_dir).expect("link dir");
    let link = link_dir.join("cors.xml");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).expect("symlink");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let origin = runtime.block_on(Origin::start(Reply::default()));
    let (binary, addr) = Binary::serve(&origin.url(), &["--rules", &link.to_string_lossy()], &[]);
    runtime.block_on(async {
        assert!(allowed(addr, "https://a.example").await);
        std::fs::write(&target, ALLOW_B).expect("write target in place");
        // Nothing to wait for: the point is that nothing happens. Several debounce windows of
        // the watch pass first, by which time a change it saw would have been applied.
        tokio::time::sleep(corsgate::watch::DEFAULT_DEBOUNCE * 4).await;
        assert!(
            allowed(addr, "https://a.example").await,
            "not seen without a signal"
        );
        binary.hangup();
        assert!(
            eventually(Duration::from_secs(5), || allowed(
                addr,
                "https://b.example"
            ))
            .await,
            "SIGHUP reloaded the rules"
        );
    });
    assert!(!binary.log_lines("(SIGHUP): generation").is_empty());
}
