//! `enforce = "strict"`: a cross-origin write no rule grants is answered 403 by corsgate and
//! never reaches the origin; a granted one, a same-origin one and one that names no origin go
//! through; on an `s3` route (the default) every write reaches the origin, as on S3. Plus the
//! route's other options on the wire: `Timing-Allow-Origin`, `Cross-Origin-Resource-Policy`,
//! `index`.

use crate::common::*;
use corsgate::config::{Enforce, ResourcePolicy};
use http::StatusCode;

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";
const RULES: &str = "<CORSConfiguration><CORSRule>\
    <AllowedOrigin>https://app.example</AllowedOrigin>\
    <AllowedMethod>GET</AllowedMethod><AllowedMethod>POST</AllowedMethod>\
    </CORSRule></CORSConfiguration>";
const NOT_ALLOWED: &str = "CORSResponse: This CORS request is not allowed. This is usually because the evalution of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.";

/// A strict route for `strict.test` and an `s3` one for `s3.test`, each with its own origin.
async fn two_routes() -> (corsgate::gateway::Running, Origin, Origin) {
    let strict_origin = Origin::start(Reply::default()).await;
    let s3_origin = Origin::start(Reply::default()).await;
    let mut strict = route(&["strict.test"], &strict_origin, Some(RULES));
    strict.enforce = Enforce::Strict;
    let s3 = route(&["s3.test"], &s3_origin, Some(RULES));
    let gateway = start(config(vec![strict, s3])).await;
    (gateway, strict_origin, s3_origin)
}

fn host(gateway: &corsgate::gateway::Running, name: &str) -> String {
    format!("{name}:{}", gateway.addr().port())
}

/// `method path` to the route serving `host` (as [`host`] gives it), with `headers` besides.
async fn send_to(
    gateway: &corsgate::gateway::Running,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    send(gateway.addr(), method, path, &all).await
}

#[tokio::test]
async fn a_cross_origin_write_no_rule_grants_is_refused_before_the_origin() {
    let (gateway, origin, _) = two_routes().await;
    let strict = host(&gateway, "strict.test");
    let answer = send_to(
        &gateway,
        &strict,
        "POST",
        "/uploads/cat.txt",
        &[("origin", EVIL)],
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.header("content-type"), Some("application/xml"));
    assert_eq!(answer.xml("Code").as_deref(), Some("AccessForbidden"));
    assert_eq!(answer.xml("Message").as_deref(), Some(NOT_ALLOWED));
    assert_eq!(answer.xml("Method").as_deref(), Some("POST"));
    assert_eq!(answer.xml("ResourceType").as_deref(), Some("OBJECT"));
    assert!(answer.header("x-amz-request-id").is_some());
    assert!(answer.cors_headers().is_empty(), "{:?}", answer.headers);
    assert_eq!(origin.count(), 0, "the origin never saw it");

    // A method no rule names at all, from the granted origin.
    let answer = send_to(
        &gateway,
        &strict,
        "DELETE",
        "/uploads/cat.txt",
        &[("origin", APP)],
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.xml("Method").as_deref(), Some("DELETE"));
    // S3 judges a request carrying Access-Control-Request-Method by it; a write cannot pass by
    // naming a method the rules grant.
    let answer = send_to(
        &gateway,
        &strict,
        "DELETE",
        "/uploads/cat.txt",
        &[("origin", APP), ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(origin.count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn granted_same_origin_and_originless_writes_reach_the_origin() {
    let (gateway, origin, _) = two_routes().await;
    let strict = host(&gateway, "strict.test");

    let answer = send_to(&gateway, &strict, "POST", "/form", &[("origin", APP)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("access-control-allow-origin"), Some(APP));
    assert_eq!(origin.count(), 1, "a granted origin's write is forwarded");

    // The route's own origin: the listener's scheme, a host it serves, the port it came to.
    let own = format!("http://{strict}");
    let answer = send_to(&gateway, &strict, "POST", "/form", &[("origin", &own)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(origin.count(), 2, "a same-origin write is forwarded");

    // What a non-browser client sends, and a same-site browser request without Origin.
    send_to(&gateway, &strict, "PUT", "/k", &[]).await;
    send_to(
        &gateway,
        &strict,
        "PUT",
        "/k",
        &[("sec-fetch-site", "same-site")],
    )
    .await;
    assert_eq!(origin.count(), 4);

    // Reads are never refused here: the browser keeps a refused read's answer from the page.
    let answer = send_to(&gateway, &strict, "GET", "/k", &[("origin", EVIL)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.cors_headers().is_empty());
    assert_eq!(origin.count(), 5);
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_same_host_on_another_scheme_or_port_is_another_origin() {
    let (gateway, origin, _) = two_routes().await;
    let strict = host(&gateway, "strict.test");
    for foreign in [
        format!("https://{strict}"),
        "http://strict.test:1".to_string(),
        "null".to_string(),
    ] {
        let answer = send_to(&gateway, &strict, "POST", "/form", &[("origin", &foreign)]).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{foreign}");
    }
    assert_eq!(origin.count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_cross_site_write_without_origin_is_refused() {
    let (gateway, origin, _) = two_routes().await;
    let strict = host(&gateway, "strict.test");
    let answer = send_to(
        &gateway,
        &strict,
        "POST",
        "/form",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.xml("Code").as_deref(), Some("AccessForbidden"));
    assert_eq!(origin.count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn on_an_s3_route_every_write_reaches_the_origin_as_on_s3() {
    let (gateway, strict_origin, s3_origin) = two_routes().await;
    let s3 = host(&gateway, "s3.test");
    let answer = send_to(&gateway, &s3, "POST", "/form", &[("origin", EVIL)]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.cors_headers().is_empty());
    let answer = send_to(
        &gateway,
        &s3,
        "POST",
        "/form",
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(s3_origin.count(), 2);
    assert_eq!(strict_origin.count(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_strict_refusal_is_logged_as_actual_refused() {
    let origin = Origin::start(Reply::default()).await;
    let rules = rules_file(RULES);
    let file = config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"off\"\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"{}\"\nrules = {{ file = \"{}\" }}\n\
         enforce = \"strict\"\n",
        origin.url(),
        rules.display()
    ));
    let path = file.to_string_lossy().into_owned();
    let (binary, addr) = Binary::start(&["serve", "--config", &path], env!("CARGO_MANIFEST_DIR"));
    let answer = send(addr, "PUT", "/k", &[("origin", EVIL)]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let logged = eventually(std::time::Duration::from_secs(10), || async {
        !binary.log_lines("cors=actual-refused").is_empty()
    })
    .await;
    assert!(logged, "{:?}", binary.log_lines("corsgate::access"));
    assert_eq!(origin.count(), 0);
}

#[tokio::test]
async fn timing_allow_origin_follows_the_grant_and_the_resource_policy_replaces_the_origins() {
    let origin = Origin::start(Reply {
        headers: vec![
            ("cross-origin-resource-policy", "same-origin"),
            ("timing-allow-origin", "*"),
        ],
        ..Reply::default()
    })
    .await;
    let mut r = route(&["*"], &origin, Some(RULES));
    r.timing_allow_origin = true;
    r.cross_origin_resource_policy = Some(ResourcePolicy::CrossOrigin);
    let gateway = start(config(vec![r])).await;

    let granted = send(gateway.addr(), "GET", "/a.js", &[("origin", APP)]).await;
    assert_eq!(granted.header("timing-allow-origin"), Some(APP));
    assert_eq!(
        granted.header("cross-origin-resource-policy"),
        Some("cross-origin")
    );
    assert_eq!(
        granted
            .headers
            .get_all("cross-origin-resource-policy")
            .iter()
            .count(),
        1
    );
    // Not granted: no Timing-Allow-Origin at all (corsgate is its only source), CORP still.
    let other = send(gateway.addr(), "GET", "/a.js", &[("origin", EVIL)]).await;
    assert_eq!(other.header("timing-allow-origin"), None);
    assert_eq!(
        other.header("cross-origin-resource-policy"),
        Some("cross-origin")
    );
    // A preflight is corsgate's CORS answer alone.
    let preflight = send(
        gateway.addr(),
        "OPTIONS",
        "/a.js",
        &[("origin", APP), ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(preflight.status, StatusCode::OK);
    assert!(preflight.header("cross-origin-resource-policy").is_none());
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_index_file_is_fetched_for_reads_of_a_directory_path() {
    let origin = Origin::start(Reply::default()).await;
    let mut r = route(&["*"], &origin, None);
    r.index = Some("index.html".into());
    let gateway = start(config(vec![r])).await;
    send(gateway.addr(), "GET", "/docs/", &[]).await;
    send(gateway.addr(), "HEAD", "/?v=2", &[]).await;
    send(gateway.addr(), "GET", "/docs/page.html", &[]).await;
    send(gateway.addr(), "PUT", "/docs/", &[]).await;
    let targets: Vec<String> = origin.received().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        [
            "/docs/index.html",
            "/index.html?v=2",
            "/docs/page.html",
            "/docs/"
        ]
    );
    gateway.shutdown().await;
}
