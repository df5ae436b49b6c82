//! Shadow rules: every request judged by a candidate document beside the live one, each
//! disagreement counted and a few sampled for `GET /-/shadow`, and never an answer changed.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use corsgate::rules::RulesSource;
use corsgate::rules::shadow::ShadowSource;
use http::StatusCode;

const LIVE: &str = r#"<CORSConfiguration>
  <CORSRule><AllowedOrigin>https://app.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>PUT</AllowedMethod><AllowedHeader>content-type</AllowedHeader><ExposeHeader>ETag</ExposeHeader></CORSRule>
  <CORSRule><AllowedOrigin>https://old.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>
  <CORSRule><AllowedOrigin>https://cdn.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule>
</CORSConfiguration>"#;

/// `app` unchanged, `old` gone, `new` added, `cdn` cached longer.
const CANDIDATE: &str = r#"<CORSConfiguration>
  <CORSRule><AllowedOrigin>https://app.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod>
    <AllowedMethod>PUT</AllowedMethod><AllowedHeader>content-type</AllowedHeader><ExposeHeader>ETag</ExposeHeader></CORSRule>
  <CORSRule><AllowedOrigin>https://new.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>
  <CORSRule><AllowedOrigin>https://cdn.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule>
</CORSConfiguration>"#;

/// One request of the crafted traffic.
struct Sent {
    method: &'static str,
    origin: &'static str,
    acrm: Option<&'static str>,
}

fn preflight(origin: &'static str, acrm: &'static str) -> Sent {
    Sent {
        method: "OPTIONS",
        origin,
        acrm: Some(acrm),
    }
}

fn get(origin: &'static str) -> Sent {
    Sent {
        method: "GET",
        origin,
        acrm: None,
    }
}

/// 10 newly allowed (6 preflights, 4 forwarded), 5 newly denied (3 + 2), 3 preflights with
/// other headers, and agreements around them.
fn traffic() -> Vec<Sent> {
    let mut t = Vec::new();
    t.extend((0..6).map(|_| preflight("https://new.example", "GET")));
    t.extend((0..4).map(|_| get("https://new.example")));
    t.extend((0..3).map(|_| preflight("https://old.example", "GET")));
    t.extend((0..2).map(|_| get("https://old.example")));
    t.extend((0..3).map(|_| preflight("https://cdn.example", "GET")));
    // Agreements: both allow the same way, both refuse, or the request is not CORS at all.
    t.extend((0..5).map(|_| preflight("https://app.example", "PUT")));
    t.extend((0..3).map(|_| get("https://app.example")));
    t.extend((0..2).map(|_| preflight("https://evil.example", "GET")));
    t.extend((0..2).map(|_| get("https://evil.example")));
    t
}

/// What a client sees of an answer, the request ID aside.
async fn answer(
    gateway: SocketAddr,
    sent: &Sent,
) -> (StatusCode, Vec<(String, String)>, Vec<String>) {
    let mut headers = vec![("origin", sent.origin)];
    if let Some(acrm) = sent.acrm {
        headers.push(("access-control-request-method", acrm));
    }
    let a = send(gateway, sent.method, "/photos/cat.jpg", &headers).await;
    let vary = a.vary_lines().into_iter().map(str::to_string).collect();
    (a.status, a.cors_headers(), vary)
}

fn shadowed(origin: &Origin, candidate: &std::path::Path) -> corsgate::config::RouteConfig {
    let mut route = route(&["*"], origin, Some(LIVE));
    route.shadow_rules = Some(ShadowSource {
        rules: RulesSource::File(candidate.to_path_buf()),
        deny_warnings: false,
    });
    route
}

#[tokio::test]
async fn disagreements_are_counted_exactly_and_no_answer_changes() {
    let origin = Origin::start(Reply::default()).await;
    let candidate = rules_file(CANDIDATE);
    let with_shadow = start(config_with_admin(vec![shadowed(&origin, &candidate)])).await;
    let live_only = gateway_for(&origin, Some(LIVE)).await;

    for sent in traffic() {
        let shadowed = answer(with_shadow.addr(), &sent).await;
        let live = answer(live_only.addr(), &sent).await;
        assert_eq!(shadowed, live, "{} from {}", sent.method, sent.origin);
    }

    let (status, view) = admin(with_shadow.admin.expect("admin"), "GET", "/-/shadow").await;
    assert_eq!(status, StatusCode::OK);
    let route = &view["routes"][0];
    assert_eq!(route["route"], 1);
    assert_eq!(
        route["disagreements"],
        serde_json::json!({
            "preflight": { "newly_allowed": 6, "newly_denied": 3, "headers_changed": 3 },
            "actual": { "newly_allowed": 4, "newly_denied": 2, "headers_changed": 0 },
        })
    );
    // The same counts, as the metrics read them.
    let gateway = with_shadow.gateway();
    let counts = gateway.shadows[0]
        .as_ref()
        .expect("route 1 has shadow rules")
        .disagreements();
    assert_eq!(counts.total(), 18);

    // The first disagreement, sampled: both answers, as a client would have seen them.
    let first = &route["samples"][0];
    assert_eq!(first["kind"], "preflight");
    assert_eq!(first["change"], "newly_allowed");
    assert_eq!(first["origin"], "https://new.example");
    assert_eq!(first["requested_method"], "GET");
    assert_eq!(first["path"], "/photos/cat.jpg");
    assert_eq!(first["live"]["status"], 403);
    assert_eq!(first["live"]["headers"], serde_json::json!({}));
    assert_eq!(first["candidate"]["status"], 200);
    assert_eq!(
        first["candidate"]["headers"]["access-control-allow-origin"],
        "https://new.example"
    );
    let samples = route["samples"].as_array().expect("samples").len();
    assert!((1..=18).contains(&samples), "{samples} samples");
}

#[tokio::test]
async fn the_candidate_reloads_like_live_rules() {
    let origin = Origin::start(Reply::default()).await;
    let candidate = rules_file(CANDIDATE);
    let gateway = start(config_with_admin(vec![shadowed(&origin, &candidate)])).await;
    let admin_addr = gateway.admin.expect("admin");
    let evil = preflight("https://evil.example", "GET");
    answer(gateway.addr(), &evil).await;
    let newly_allowed = |view: &serde_json::Value| {
        view["routes"][0]["disagreements"]["preflight"]["newly_allowed"].clone()
    };
    let (_, view) = admin(admin_addr, "GET", "/-/shadow").await;
    assert_eq!(newly_allowed(&view), 0);
    let generation = view["routes"][0]["rules"]["generation"].clone();

    // Promote-to-be: the candidate now also allows evil.example.
    let reloaded = allow_evil_in_candidate(admin_addr, &candidate, &generation).await;
    assert!(reloaded, "the candidate file's change was not picked up");
    let (status, _, _) = answer(gateway.addr(), &evil).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the live rules still answer");
    let (_, view) = admin(admin_addr, "GET", "/-/shadow").await;
    assert_eq!(newly_allowed(&view), 1);

    // POST /-/reload reloads the candidate as well, and says so.
    let (status, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(outcome["routes"][0]["shadow_results"][0]["changed"], false);
}

/// Rewrites the candidate to also allow `https://evil.example`; whether `/-/shadow` then shows
/// a candidate generation other than `generation` within 10 s.
async fn allow_evil_in_candidate(
    admin_addr: SocketAddr,
    candidate: &Path,
    generation: &serde_json::Value,
) -> bool {
    std::fs::write(
        candidate,
        CANDIDATE.replace("https://new.example", "https://evil.example"),
    )
    .expect("rewrite the candidate");
    eventually(Duration::from_secs(10), || async {
        let (_, view) = admin(admin_addr, "GET", "/-/shadow").await;
        view["routes"][0]["rules"]["generation"] != *generation
    })
    .await
}

#[tokio::test]
async fn after_a_configuration_reload_the_candidate_file_is_still_watched() {
    let origin = Origin::start(Reply::default()).await;
    let candidate = rules_file(CANDIDATE);
    let config = config_with_admin(vec![shadowed(&origin, &candidate)]);
    let gateway = start(config.clone()).await;
    let admin_addr = gateway.admin.expect("admin");
    let applied = gateway
        .reconfigure(config)
        .await
        .expect("the same configuration applies");
    assert_eq!(applied.kept, vec![1]);
    // The reload built the candidate afresh: its generation is the one to see change.
    let (_, view) = admin(admin_addr, "GET", "/-/shadow").await;
    let generation = view["routes"][0]["rules"]["generation"].clone();
    assert!(generation.is_u64(), "{view}");

    let reloaded = allow_evil_in_candidate(admin_addr, &candidate, &generation).await;
    assert!(
        reloaded,
        "the candidate file's change after a configuration reload was not picked up"
    );
    let evil = preflight("https://evil.example", "GET");
    let (status, _, _) = answer(gateway.addr(), &evil).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the live rules still answer");
    let (_, view) = admin(admin_addr, "GET", "/-/shadow").await;
    assert_eq!(
        view["routes"][0]["disagreements"]["preflight"]["newly_allowed"],
        1
    );
}

#[tokio::test]
async fn a_route_without_shadow_rules_is_not_listed() {
    let origin = Origin::start(Reply::default()).await;
    let gateway = start(config_with_admin(vec![route(&["*"], &origin, Some(LIVE))])).await;
    let (status, view) = admin(gateway.admin.expect("admin"), "GET", "/-/shadow").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view, serde_json::json!({ "routes": [] }));
}

#[tokio::test]
async fn an_invalid_candidate_stops_the_start_naming_its_key() {
    let origin = Origin::start(Reply::default()).await;
    let candidate = rules_file(
        "<CORSConfiguration><CORSRule><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>",
    );
    let Err(err) = corsgate::gateway::spawn(config(vec![shadowed(&origin, &candidate)])).await
    else {
        panic!("started with an invalid candidate");
    };
    assert!(
        err.to_string().starts_with("route[1].shadow_rules: "),
        "{err}"
    );
}

/// The value of one sample of a classic-text exposition, by its whole series (name and labels
/// as printed).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn disagreements_are_exported_as_a_counter() {
    // The registry is one per process: no other gateway may add to the route's counters.
    alone_in_a_process("shadow::disagreements_are_exported_as_a_counter", || {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(async {
                let origin = Origin::start(Reply::default()).await;
                let candidate = rules_file(CANDIDATE);
                let gateway =
                    start(config_with_admin(vec![shadowed(&origin, &candidate)])).await;
                let admin_addr = gateway.admin.expect("admin");
                let before = send(admin_addr, "GET", "/metrics", &[]).await;
                let before = String::from_utf8_lossy(&before.body).into_owned();
                let series = |kind: &str, change: &str| {
                    format!(
                        "corsgate_shadow_disagreements_total{{route=\"1\",kind=\"{kind}\",change=\"{change}\"}}"
                    )
                };
                assert_eq!(
                    sample(&before, &series("preflight", "newly_allowed")),
                    Some(0.0),
                    "the series is there from the start:\n{before}"
                );
                for sent in traffic() {
                    answer(gateway.addr(), &sent).await;
                }
                let after = send(admin_addr, "GET", "/metrics", &[]).await;
                assert_eq!(after.status, StatusCode::OK);
                let after = String::from_utf8_lossy(&after.body).into_owned();
                for (kind, change, expected) in [
                    ("preflight", "newly_allowed", 6.0),
                    ("preflight", "newly_denied", 3.0),
                    ("preflight", "headers_changed", 3.0),
                    ("actual", "newly_allowed", 4.0),
                    ("actual", "newly_denied", 2.0),
                    ("actual", "headers_changed", 0.0),
                ] {
                    assert_eq!(
                        sample(&after, &series(kind, change)),
                        Some(expected),
                        "{kind} {change}:\n{after}"
                    );
                }
            });
    });
}

#[tokio::test]
async fn metrics_off_means_no_metrics_endpoint() {
    let origin = Origin::start(Reply::default()).await;
    let candidate = rules_file(CANDIDATE);
    let mut config = config_with_admin(vec![shadowed(&origin, &candidate)]);
    config.admin.metrics = false;
    let gateway = start(config).await;
    let admin_addr = gateway.admin.expect("admin");
    let metrics = send(admin_addr, "GET", "/metrics", &[]).await;
    assert_eq!(metrics.status, StatusCode::NOT_FOUND);
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("admin.metrics = false"),
        "the 404 says why"
    );
    // The rest of the admin listener is unchanged.
    let (status, _) = admin(admin_addr, "GET", "/-/shadow").await;
    assert_eq!(status, StatusCode::OK);
}
