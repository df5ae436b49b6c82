//! The rules panel on the admin listener, end to end: its pages and their headers, drafts judged
//! by the core (problems with S3 codes and fields, lints), a request explained for the draft and
//! the rules in force, and applies — a rules file replaced atomically, a bucket's rules stored
//! with a signed `PUT ?cors` — that the very next preflight through the gateway follows. Stale and
//! invalid drafts change nothing, and the admin guard covers the panel.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::{self, *};
use corsgate::rules::{BucketSource, EndpointSource, RulesSource, SigningConfig};
use corsgate::s3::Addressing;
use http::StatusCode;
use serde_json::{Value, json};

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
const APP: &str = "https://app.example.com";

/// The draft most tests apply: `APP` may PUT.
fn app_may_put() -> Value {
    json!({ "rules": [{
        "ID": "uploads",
        "AllowedOrigins": [APP],
        "AllowedMethods": ["GET", "PUT"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": "600",
    }]})
}

/// Sends JSON to the admin listener as the panel's own page does: same Origin, JSON body.
async fn post(admin: SocketAddr, path: &str, body: &Value) -> (StatusCode, Value) {
    post_from(admin, path, body, &format!("http://{admin}")).await
}

async fn post_from(
    admin: SocketAddr,
    path: &str,
    body: &Value,
    origin: &str,
) -> (StatusCode, Value) {
    let headers = [("content-type", "application/json"), ("origin", origin)];
    let answer = send_body(admin, "POST", path, &headers, body.to_string()).await;
    let json = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    (answer.status, json)
}

async fn preflight(gateway: SocketAddr, origin: &str, method: &str) -> StatusCode {
    send(
        gateway,
        "OPTIONS",
        "/cat.jpg",
        &[
            ("origin", origin),
            ("access-control-request-method", method),
        ],
    )
    .await
    .status
}

/// A gateway with an admin listener and one file route (for any host) with `xml`.
async fn file_gateway(xml: &str) -> (corsgate::gateway::Running, SocketAddr, std::path::PathBuf) {
    let origin = Origin::start(Reply::default()).await;
    let route = route(&["*"], &origin, Some(xml));
    let RulesSource::File(path) = route.rules.clone() else {
        unreachable!("route() with rules makes a file route");
    };
    let gateway = start(config_with_admin(vec![route])).await;
    let admin = gateway.admin.expect("admin listener");
    (gateway, admin, path)
}

async fn generation(admin: SocketAddr, route: &str) -> u64 {
    let (status, rules) =
        common::admin(admin, "GET", &format!("/-/api/routes/{route}/rules")).await;
    assert_eq!(status, StatusCode::OK, "{rules}");
    rules["generation"].as_u64().expect("a generation")
}

#[cfg(unix)]
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).expect("stat").ino()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

#[tokio::test]
async fn the_pages_carry_a_content_security_policy_and_refuse_framing() {
    let (_gateway, admin, _) = file_gateway(ALLOW_A).await;
    for path in ["/", "/ui/routes/1"] {
        let page = send(admin, "GET", path, &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(
            page.header("content-security-policy")
                .is_some_and(|csp| csp.starts_with("default-src 'self'")),
            "{:?}",
            page.headers
        );
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        assert!(String::from_utf8_lossy(&page.body).contains("/ui/app.js"));
    }
    let script = send(admin, "GET", "/ui/app.js", &[]).await;
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        send(admin, "GET", "/ui/missing.js", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let wrong_method = send(admin, "DELETE", "/", &[]).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD"));
    // The other admin endpoints are as they were.
    assert_eq!(
        send(admin, "GET", "/healthz", &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn routes_show_hosts_source_generation_and_lints() {
    let origin = Origin::start(Reply::default()).await;
    let risky = "<CORSConfiguration><CORSRule><AllowedOrigin>https://*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
    let gateway = start(config_with_admin(vec![
        route(&["b.example", "a.example:8443"], &origin, Some(risky)),
        route(&["*"], &origin, None),
    ]))
    .await;
    let admin = gateway.admin.expect("admin listener");
    let (status, view) = common::admin(admin, "GET", "/-/api/routes").await;
    assert_eq!(status, StatusCode::OK);
    let first = &view["routes"][0];
    assert_eq!(first["route"], 1);
    assert_eq!(first["hosts"], json!(["a.example:8443", "b.example"]));
    assert_eq!(first["kind"], "file");
    assert_eq!(first["editable"], true);
    assert_eq!(first["rules"]["state"], "enabled");
    assert!(first["rules"]["generation"].as_u64().is_some());
    assert_eq!(first["rules"]["lints"][0]["kind"], "echoed-catch-all");
    let second = &view["routes"][1];
    assert_eq!(second["hosts"], json!(["*"]));
    assert_eq!(second["kind"], "none");
    assert_eq!(second["editable"], false);
    let (status, refused) = post(
        admin,
        "/-/api/routes/2/apply",
        &json!({ "draft": app_may_put(), "generation": 0 }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("no rules file or bucket")),
        "{refused}"
    );
    let (status, _) = common::admin(admin, "GET", "/-/api/routes/9/rules").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_draft_is_judged_with_s3_codes_fields_positions_and_lints() {
    let (_gateway, admin, _) = file_gateway(ALLOW_A).await;
    let (status, judged) = post(
        admin,
        "/-/api/validate",
        &json!({ "draft": { "rules": [
            { "AllowedOrigins": ["https://*"], "AllowedMethods": ["get"] },
        ]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{judged}");
    assert_eq!(judged["valid"], false);
    let problem = &judged["problems"][0];
    assert_eq!(problem["code"], "InvalidRequest");
    assert_eq!(problem["rule"], 1);
    assert_eq!(problem["field"], "AllowedMethods");
    assert_eq!(problem["value"], "get");
    assert_eq!(judged["lints"][0]["kind"], "echoed-catch-all");
    assert_eq!(judged["lints"][0]["field"], "AllowedOrigins");
    // The same draft in the other form, for the editor's other side.
    assert!(
        judged["xml"]
            .as_str()
            .is_some_and(|x| x.contains("<AllowedOrigin>https://*</AllowedOrigin>")),
        "{judged}"
    );

    let xml = "<CORSConfiguration>\n  <CORSRule>\n    <AllowedOrigin>https://app.example.com</AllowedOrigin>\n    <AllowedMethod>PATCH</AllowedMethod>\n  </CORSRule>\n</CORSConfiguration>";
    let (_, judged) = post(
        admin,
        "/-/api/validate",
        &json!({ "draft": { "xml": xml } }),
    )
    .await;
    assert_eq!(judged["problems"][0]["line"], 4);
    assert_eq!(judged["problems"][0]["col"], 5);
    assert_eq!(judged["rules"][0]["AllowedOrigins"], json!([APP]));

    // Against route 1: what the draft changes for the origins the rules name.
    let (_, judged) = post(
        admin,
        "/-/api/validate",
        &json!({ "draft": app_may_put(), "route": 1 }),
    )
    .await;
    assert_eq!(judged["valid"], true);
    let impact = judged["impact"].as_array().expect("impact");
    assert!(
        impact.contains(
            &json!({ "origin": "https://a.example", "method": "GET", "change": "newly-denied" })
        ),
        "{impact:?}"
    );
    assert!(
        impact.contains(&json!({ "origin": APP, "method": "PUT", "change": "newly-allowed" })),
        "{impact:?}"
    );

    // Not JSON: refused before anything is read.
    let form = send(
        admin,
        "POST",
        "/-/api/validate",
        &[("content-type", "application/x-www-form-urlencoded")],
    )
    .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn explain_reports_the_draft_and_the_rules_in_force_as_corsgate_explain_does() {
    let (_gateway, admin, _) = file_gateway(ALLOW_A).await;
    let request = json!({
        "method": "OPTIONS",
        "path": "/cat.jpg",
        "headers": [["Origin", APP], ["Access-Control-Request-Method", "PUT"]],
    });
    let (status, out) = post(
        admin,
        "/-/api/explain",
        &json!({ "draft": app_may_put(), "route": 1, "request": request }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let draft = &out["draft"]["report"];
    assert_eq!(draft["status"], 200);
    assert_eq!(draft["matched_rule"], 1);
    assert_eq!(draft["verdicts"][0]["verdict"], "matched");
    assert_eq!(draft["headers"]["access-control-allow-methods"], "GET, PUT");
    let live = &out["live"]["report"];
    assert_eq!(live["status"], 403);
    assert_eq!(live["verdicts"][0]["verdict"], "origin-mismatch");
    assert_eq!(out["change"]["kind"], "newly-allowed");
    assert_eq!(
        out["change"]["summary"],
        "This change would newly allow https://app.example.com PUT."
    );

    // Word for word what the command line prints for the same rules and request.
    let (_, judged) = post(admin, "/-/api/validate", &json!({ "draft": app_may_put() })).await;
    let file = rules_file(judged["xml"].as_str().expect("xml"));
    let file = file.to_str().expect("utf-8 path");
    let cli = run_to_exit(
        &[
            "explain",
            file,
            "-X",
            "OPTIONS",
            "-H",
            &format!("Origin: {APP}"),
            "-H",
            "Access-Control-Request-Method: PUT",
            "--path",
            "/cat.jpg",
        ],
        &[],
        &[],
        Duration::from_secs(30),
    )
    .expect("corsgate explain exits");
    assert_eq!(cli.code, Some(0), "{}", cli.stderr);
    assert_eq!(draft["text"], cli.stdout.as_str());

    // The reverse change, in the words the page shows.
    let (_, out) = post(
        admin,
        "/-/api/explain",
        &json!({
            "draft": app_may_put(),
            "route": 1,
            "request": { "method": "OPTIONS", "headers": [["Origin", "https://a.example"], ["Access-Control-Request-Method", "GET"]] },
        }),
    )
    .await;
    assert_eq!(
        out["change"]["summary"],
        "This change would newly deny https://a.example GET."
    );
    let (status, bad) = post(
        admin,
        "/-/api/explain",
        &json!({ "request": { "method": "OPTIONS", "headers": [["Bad Name", "x"]] } }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("Bad Name"))
    );
}

#[cfg(unix)]
#[tokio::test]
async fn an_apply_replaces_the_file_atomically_and_the_next_preflight_follows_it() {
    let (gateway, admin, path) = file_gateway(ALLOW_A).await;
    let addr = gateway.addr();
    assert_eq!(preflight(addr, APP, "PUT").await, StatusCode::FORBIDDEN);
    let before = generation(admin, "1").await;
    let old_inode = inode(&path);

    let (status, applied) = post(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": app_may_put(), "generation": before }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["changed"], true);
    assert_eq!(applied["previous_generation"], before);
    let after = applied["generation"].as_u64().expect("generation");
    assert!(after > before);
    assert_eq!(applied["rules"]["generation"], after);

    // The next preflight, at once: no poll, no watch event waited for.
    assert_eq!(preflight(addr, APP, "PUT").await, StatusCode::OK);
    assert_eq!(
        preflight(addr, "https://a.example", "GET").await,
        StatusCode::FORBIDDEN
    );
    // A new file renamed over the old one, nothing left beside it.
    let written = std::fs::read_to_string(&path).expect("rules file");
    assert!(
        written.contains("<AllowedOrigin>https://app.example.com</AllowedOrigin>"),
        "{written}"
    );
    assert!(written.contains("<ID>uploads</ID>"), "{written}");
    assert_ne!(
        inode(&path),
        old_inode,
        "replaced by rename, not rewritten in place"
    );
    let dir = path.parent().expect("a directory");
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
    assert_eq!(generation(admin, "1").await, after);
}

#[tokio::test]
async fn a_stale_generation_is_409_with_the_rules_in_force_and_changes_nothing() {
    let (gateway, admin, path) = file_gateway(ALLOW_A).await;
    let loaded = generation(admin, "1").await;
    let (status, _) = post(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": app_may_put(), "generation": loaded }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let in_force = std::fs::read(&path).expect("rules file");

    // A second editor who loaded the page before that apply.
    let other = json!({ "rules": [{ "AllowedOrigins": ["https://b.example"], "AllowedMethods": ["GET"] }] });
    let (status, stale) = post(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": other, "generation": loaded }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");
    assert!(
        stale["error"]
            .as_str()
            .is_some_and(|e| e.contains("changed since")),
        "{stale}"
    );
    assert_eq!(stale["rules"]["rules"][0]["AllowedOrigins"], json!([APP]));
    let current = stale["rules"]["generation"].as_u64().expect("generation");
    assert!(current > loaded);
    assert_eq!(std::fs::read(&path).expect("rules file"), in_force);
    assert_eq!(
        preflight(gateway.addr(), "https://b.example", "GET").await,
        StatusCode::FORBIDDEN
    );

    // A change made to the file behind corsgate's back counts too, watched or not yet.
    std::fs::write(&path, ALLOW_A).expect("edit the file");
    let (status, stale) = post(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": other, "generation": current }),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{stale}");
    assert_eq!(
        stale["rules"]["rules"][0]["AllowedOrigins"],
        json!(["https://a.example"])
    );
    assert_eq!(std::fs::read_to_string(&path).expect("rules file"), ALLOW_A);
}

#[tokio::test]
async fn an_invalid_draft_is_422_with_its_problems_and_changes_nothing() {
    let (gateway, admin, path) = file_gateway(ALLOW_A).await;
    let loaded = generation(admin, "1").await;
    let invalid = json!({ "rules": [{ "AllowedOrigins": [APP], "AllowedMethods": ["get"] }] });
    let (status, refused) = post(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": invalid, "generation": loaded }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["problems"][0]["code"], "InvalidRequest");
    assert_eq!(refused["problems"][0]["field"], "AllowedMethods");
    assert_eq!(std::fs::read_to_string(&path).expect("rules file"), ALLOW_A);
    assert_eq!(generation(admin, "1").await, loaded);
    assert_eq!(
        preflight(gateway.addr(), "https://a.example", "GET").await,
        StatusCode::OK
    );

    let (status, _) = post(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": { "xml": "<CORSConfiguration>" }, "generation": loaded }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(std::fs::read_to_string(&path).expect("rules file"), ALLOW_A);
}

#[tokio::test]
async fn the_admin_guard_covers_the_panel() {
    let (_gateway, admin, path) = file_gateway(ALLOW_A).await;
    let loaded = generation(admin, "1").await;
    // Another site's page posting to the panel's API.
    let (status, _) = post_from(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": app_may_put(), "generation": loaded }),
        "https://evil.example",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(std::fs::read_to_string(&path).expect("rules file"), ALLOW_A);
    // A DNS-rebinding page: the right address under a foreign name.
    for path in ["/", "/ui/app.js", "/-/api/routes"] {
        let answer = send(admin, "GET", path, &[("host", "evil.example")]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[test]
fn with_a_token_the_pages_load_and_the_api_wants_it() {
    const TOKEN_VAR: &str = "CORSGATE_TEST_PANEL_TOKEN";
    let config = config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         token_env = \"{TOKEN_VAR}\"\n\n[[route]]\nhosts = [\"*\"]\n\
         origin = \"http://127.0.0.1:1\"\n"
    ));
    let (binary, _) = Binary::start_with_env(
        &["serve", "--config", config.to_str().expect("utf-8 path")],
        env!("CARGO_MANIFEST_DIR"),
        &[(TOKEN_VAR, "panel-token")],
    );
    let admin = binary.admin();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        // A browser cannot send a bearer token with a page it navigates to.
        for path in ["/", "/ui/app.js", "/ui/routes/1"] {
            assert_eq!(
                send(admin, "GET", path, &[]).await.status,
                StatusCode::OK,
                "{path}"
            );
        }
        let none = send(admin, "GET", "/-/api/routes", &[]).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        let with = send(
            admin,
            "GET",
            "/-/api/routes",
            &[("authorization", "Bearer panel-token")],
        )
        .await;
        assert_eq!(with.status, StatusCode::OK);
    });
}

#[test]
fn every_apply_is_logged_with_the_admin_clients_address() {
    let rules = rules_file(ALLOW_A);
    let (binary, _) = Binary::serve(
        "http://127.0.0.1:1",
        &["--rules", rules.to_str().expect("utf-8 path")],
        &[],
    );
    let admin = binary.admin();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let loaded = generation(admin, "1").await;
        let (status, applied) = post(
            admin,
            "/-/api/routes/1/apply",
            &json!({ "draft": app_may_put(), "generation": loaded }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{applied}");
        let (status, _) = post(
            admin,
            "/-/api/routes/1/apply",
            &json!({ "draft": app_may_put(), "generation": loaded }),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        // Logged before the answer was sent; read from the process's stderr by another thread.
        let logged = eventually(Duration::from_secs(10), || async {
            binary.log_lines("applied rules to file").len() == 1
                && !binary.log_lines("apply to file").is_empty()
        })
        .await;
        let applied = binary.log_lines("applied rules to file");
        assert!(logged, "{applied:?}");
        assert!(applied[0].contains("127.0.0.1:"), "{}", applied[0]);
        let refused = binary.log_lines("apply to file");
        assert!(
            refused
                .iter()
                .any(|l| l.contains("127.0.0.1:") && l.contains("changed since")),
            "{refused:?}"
        );
    });
}

#[tokio::test]
async fn a_bucket_routes_rules_are_stored_in_the_bucket_and_followed_at_once() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    let route = route_to(
        &s3.url(),
        RulesSource::Bucket(BucketSource {
            bucket: "photos".into(),
            // No poll during the test: only the apply may explain a change.
            poll: Duration::from_secs(3600),
            signing: SigningConfig::default(),
        }),
    );
    let gateway = start(config_with_admin(vec![route])).await;
    let admin = gateway.admin.expect("admin listener");
    let (_, rules) = common::admin(admin, "GET", "/-/api/routes/1/rules").await;
    assert_eq!(
        rules["source"],
        json!({ "kind": "bucket", "bucket": "photos" })
    );
    let loaded = rules["generation"].as_u64().expect("generation");

    let (status, applied) = post(
        admin,
        "/-/api/routes/1/apply",
        &json!({ "draft": app_may_put(), "generation": loaded }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["in_force"], true);
    assert_eq!(applied["target"], "bucket photos");
    assert_eq!(preflight(gateway.addr(), APP, "PUT").await, StatusCode::OK);
    // The bucket itself holds them.
    let stored = send(s3.addr, "GET", "/photos?cors", &[]).await;
    assert!(
        String::from_utf8_lossy(&stored.body).contains(APP),
        "{:?}",
        stored.body
    );

    // The store refuses what S3 refuses; a page cannot get around the server's own check.
    let (status, refused) = post(
        admin,
        "/-/api/routes/1/apply?bucket=photos",
        &json!({ "draft": { "rules": [{ "AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"] }] }, "generation": applied["generation"] }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (status, other) = common::admin(admin, "GET", "/-/api/routes/1/rules?bucket=videos").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{other}");
}

#[tokio::test]
async fn an_s3_endpoint_routes_buckets_are_edited_by_name() {
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(ALLOW_A));
    let route = route_to(
        &s3.url(),
        RulesSource::Endpoint(EndpointSource {
            poll: Duration::from_secs(3600),
            ..EndpointSource::defaults(Addressing::Path)
        }),
    );
    let gateway = start(config_with_admin(vec![route])).await;
    let admin = gateway.admin.expect("admin listener");
    let (status, need) = common::admin(admin, "GET", "/-/api/routes/1/rules").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        need["error"]
            .as_str()
            .is_some_and(|e| e.contains("?bucket=")),
        "{need}"
    );
    let (status, bad) = common::admin(admin, "GET", "/-/api/routes/1/rules?bucket=a%2Fb").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    let (status, rules) = common::admin(admin, "GET", "/-/api/routes/1/rules?bucket=photos").await;
    assert_eq!(status, StatusCode::OK, "{rules}");
    assert_eq!(rules["source"]["kind"], "s3");
    assert_eq!(
        rules["rules"][0]["AllowedOrigins"],
        json!(["https://a.example"])
    );
    let (status, applied) = post(
        admin,
        "/-/api/routes/1/apply?bucket=photos",
        &json!({ "draft": app_may_put(), "generation": rules["generation"] }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    let answer = send(
        gateway.addr(),
        "OPTIONS",
        "/photos/cat.jpg",
        &[("origin", APP), ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let (_, view) = common::admin(admin, "GET", "/-/api/routes").await;
    assert_eq!(view["routes"][0]["buckets"][0]["bucket"], "photos");
}

/// Against moto's S3 server, the store the Spaces documentation's tools are tested with: the
/// panel's `PUT ?cors` (signed, with its `Content-MD5`) is accepted, and s3cmd reads the new
/// rules back from the bucket.
#[cfg(feature = "external")]
mod moto {
    use super::*;

    /// `s3cmd ARGS` against `endpoint`, which must succeed; what it said.
    fn s3cmd(endpoint: SocketAddr, args: &[&str]) -> String {
        let (ok, said) = S3cmd::new(endpoint).run(args);
        assert!(ok, "s3cmd {args:?} failed:\n{said}");
        said
    }

    #[test]
    fn an_apply_to_a_bucket_route_is_read_back_by_s3cmd() {
        let moto = Moto::start();
        let endpoint = moto.addr;
        s3cmd(endpoint, &["mb", "s3://assets"]);
        let first = rules_file(ALLOW_A);
        s3cmd(
            endpoint,
            &[
                "setcors",
                first.to_str().expect("utf-8 path"),
                "s3://assets",
            ],
        );

        let (binary, addr) = Binary::serve(
            &format!("http://{endpoint}"),
            &["--rules-bucket", "assets"],
            &[
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ],
        );
        let admin = binary.admin();
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let loaded = generation(admin, "1").await;
            let (status, applied) = post(
                admin,
                "/-/api/routes/1/apply",
                &json!({ "draft": app_may_put(), "generation": loaded }),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{applied}");
            assert_eq!(applied["in_force"], true, "{applied}");
            assert_eq!(preflight(addr, APP, "PUT").await, StatusCode::OK);
            assert_eq!(preflight(addr, "https://a.example", "GET").await, StatusCode::FORBIDDEN);

            // A document S3 would refuse never reaches the store.
            let in_force = applied["generation"].clone();
            let (status, _) = post(
                admin,
                "/-/api/routes/1/apply",
                &json!({ "draft": { "rules": [{ "AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"] }] }, "generation": in_force }),
            )
            .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        });
        let info = s3cmd(endpoint, &["info", "s3://assets"]);
        assert!(info.contains(APP), "{info}");
        assert!(!info.contains("https://a.example"), "{info}");
    }
}
