//! The warnings of `corsgate check`, seen by a running gateway: logged when rules load, listed in
//! `GET /-/rules`, and refused under `deny_warnings` the way an invalid document is.

use std::time::Duration;

use crate::common::*;
use corsgate::rules::{BucketSource, RulesSource, SigningConfig};
use http::StatusCode;

/// Valid for S3, but `null` admits any sandboxed page (line 3) and PUT without ETag exposed
/// breaks browser multipart uploads (the rule, line 2).
const RISKY: &str = "<CORSConfiguration>\n\
    <CORSRule>\n\
    <AllowedOrigin>null</AllowedOrigin>\n\
    <AllowedMethod>PUT</AllowedMethod>\n\
    </CORSRule>\n\
    </CORSConfiguration>\n";

const CLEAN: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";

async fn preflight(gateway: std::net::SocketAddr, origin: &str, method: &str) -> Answer {
    send(
        gateway,
        "OPTIONS",
        "/k",
        &[
            ("origin", origin),
            ("access-control-request-method", method),
        ],
    )
    .await
}

fn codes(warnings: &serde_json::Value) -> Vec<String> {
    warnings
        .as_array()
        .expect("an array")
        .iter()
        .map(|w| w["code"].as_str().expect("a code").to_string())
        .collect()
}

#[tokio::test]
async fn rules_view_lists_each_warning_with_code_message_and_position() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = start(config_with_admin(vec![route(&["*"], &origin, Some(RISKY))])).await;
    let (status, view) = admin(gateway.admin.expect("admin"), "GET", "/-/rules").await;
    assert_eq!(status, StatusCode::OK);
    let warnings = &view["routes"][0]["rules"]["warnings"];
    assert_eq!(codes(warnings), ["W-ETAG-NOT-EXPOSED", "W-NULL-ORIGIN"]);
    assert_eq!(warnings[0]["line"], 2);
    assert_eq!(warnings[1]["line"], 3);
    assert_eq!(warnings[1]["col"], 1);
    assert!(
        warnings[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("AllowedOrigin \"null\"")),
        "{warnings}"
    );
    // Warnings never change what is answered.
    assert_eq!(
        preflight(gateway.addr(), "null", "PUT").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn warnings_go_away_with_the_document_that_had_them() {
    let origin = Origin::start(Reply::default()).await;
    let rules = rules_file(RISKY);
    let config = config_with_admin(vec![route_to(
        &origin.url(),
        RulesSource::File(rules.clone()),
    )]);
    let gateway = start(config).await;
    let admin_addr = gateway.admin.expect("admin");
    std::fs::write(&rules, CLEAN).expect("rewrite the rules");
    let (status, _) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::OK);
    let (_, view) = admin(admin_addr, "GET", "/-/rules").await;
    assert_eq!(
        view["routes"][0]["rules"]["warnings"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn deny_warnings_refuses_to_start_on_a_document_with_warnings() {
    let origin = Origin::start(Reply::default()).await;
    let mut risky = route(&["*"], &origin, Some(RISKY));
    risky.deny_warnings = true;
    let Err(err) = corsgate::gateway::spawn(config(vec![risky])).await else {
        panic!("a gateway started on rules deny_warnings refuses");
    };
    let message = err.to_string();
    assert!(
        message.starts_with("route[1].rules: ")
            && message.contains("W-ETAG-NOT-EXPOSED, W-NULL-ORIGIN"),
        "{message}"
    );
    // One line per warning, as `corsgate check` prints them.
    assert!(
        message.contains(".xml:3:1: W-NULL-ORIGIN: warning:"),
        "{message}"
    );
}

#[tokio::test]
async fn deny_warnings_keeps_the_old_rules_serving_when_a_reload_brings_warnings() {
    let origin = Origin::start(Reply::default()).await;
    let rules = rules_file(CLEAN);
    let mut strict = route_to(&origin.url(), RulesSource::File(rules.clone()));
    strict.deny_warnings = true;
    let gateway = start(config_with_admin(vec![strict])).await;
    let admin_addr = gateway.admin.expect("admin");
    let (_, before) = admin(admin_addr, "GET", "/-/rules").await;
    let generation = before["routes"][0]["rules"]["generation"].clone();

    std::fs::write(&rules, RISKY).expect("rewrite the rules");
    let (status, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome}");
    let error = outcome["routes"][0]["results"][0]["error"]
        .as_str()
        .expect("an error message");
    assert!(
        error.contains("W-ETAG-NOT-EXPOSED, W-NULL-ORIGIN"),
        "{error}"
    );

    let (_, view) = admin(admin_addr, "GET", "/-/rules").await;
    let rules_view = &view["routes"][0]["rules"];
    assert_eq!(rules_view["generation"], generation);
    assert_eq!(
        codes(&rules_view["last_error"]["problems"]),
        ["W-ETAG-NOT-EXPOSED", "W-NULL-ORIGIN"]
    );
    assert_eq!(
        preflight(gateway.addr(), "https://a.example", "GET")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        preflight(gateway.addr(), "null", "PUT").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn deny_warnings_applies_to_bucket_rules_too() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(RISKY));
    let mut bucket = route_to(
        &s3.url(),
        RulesSource::Bucket(BucketSource {
            bucket: "photos".into(),
            poll: Duration::from_secs(3600),
            signing: SigningConfig::default(),
        }),
    );
    bucket.deny_warnings = true;
    let gateway = start(config_with_admin(vec![bucket])).await;
    let (_, view) = admin(gateway.admin.expect("admin"), "GET", "/-/rules").await;
    let rules_view = &view["routes"][0]["rules"];
    assert_eq!(rules_view["state"], "not-loaded", "{rules_view}");
    let message = rules_view["last_error"]["message"]
        .as_str()
        .expect("an error");
    assert!(
        message.starts_with("bucket photos: refused") && message.contains("W-NULL-ORIGIN"),
        "{message}"
    );
    // No rules to judge by: unavailable, as with an invalid stored document.
    assert_eq!(
        preflight(gateway.addr(), "null", "PUT").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn each_warning_is_logged_once_with_its_code_when_the_rules_load() {
    let rules = rules_file(RISKY);
    let path = rules.to_str().expect("utf-8 temp path");
    let (binary, _) = Binary::serve("http://127.0.0.1:9", &["--rules", path], &[]);
    let lines = binary.log_lines("W-NULL-ORIGIN");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains(&format!("route[1]: {path}:3:1: W-NULL-ORIGIN: warning:")),
        "{lines:#?}"
    );
    assert_eq!(binary.log_lines("W-ETAG-NOT-EXPOSED").len(), 1);
}
