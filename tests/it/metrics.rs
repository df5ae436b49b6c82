//! `GET /metrics` on the admin listener: after known traffic, every family has its name, its
//! type and the exact count of what was sent.
//!
//! The registry is one per process, so the test runs in a process of its own: no other test's
//! gateway adds to the counters it reads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use crate::common::pki::TestCa;
use crate::common::*;
use corsgate::config::{HostPattern, OriginUrl, RouteConfig, TlsListenerConfig};
use corsgate::rules::{BucketSource, RulesSource, SigningConfig};
use corsgate::tls::UnknownName;
use http::StatusCode;

/// One rule for `https://a.example`, and enough wildcard origins that preflights go through the
/// preflight cache (cheaper rules are evaluated afresh, never cached). Their suffixes all differ
/// in length, so the policy cannot index them away.
fn cached_rules() -> String {
    let wildcards: String = (0..corsgate::gateway::preflight::CACHE_FROM_WILDCARDS)
        .map(|i| {
            format!(
                "<AllowedOrigin>https://*.{}.example</AllowedOrigin>",
                "w".repeat(i + 1)
            )
        })
        .collect();
    format!(
        "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin>{wildcards}\
         <AllowedMethod>GET</AllowedMethod><ExposeHeader>ETag</ExposeHeader></CORSRule>\
         </CORSConfiguration>"
    )
}

const INVALID: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin>\
    <AllowedMethod>get</AllowedMethod></CORSRule></CORSConfiguration>";

/// A parsed exposition in the classic text format: each family's type, and each sample's value
/// by its name and labels.
struct Exposition {
    types: HashMap<String, String>,
    samples: HashMap<String, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut types = HashMap::new();
        let mut samples = HashMap::new();
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').expect("# TYPE name type");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().expect("a numeric sample value"),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').expect("}"))),
                None => (series, Vec::new()),
            };
            let previous = samples.insert(key(name, &labels), value);
            assert!(previous.is_none(), "{series} appears twice");
        }
        Exposition { types, samples }
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&key(name, &labels)).copied()
    }

    /// The value of a sample that must be there.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }

    fn type_of(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }
}

/// `a="x",b="y\"z"` as pairs, escapes undone.
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("a closing quote") {
                (_, '\\') => match chars.next().expect("an escaped character") {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    labels
}

fn key(name: &str, labels: &[(String, String)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The admin listener, counting the connections the test opens to it.
struct Admin {
    addr: SocketAddr,
    connections: AtomicUsize,
}

impl Admin {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.connections.fetch_add(1, Ordering::Relaxed);
        send(self.addr, method, path, headers).await
    }

    async fn scrape(&self) -> Exposition {
        let answer = self.send("GET", "/metrics", &[]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        Exposition::parse(std::str::from_utf8(&answer.body).expect("UTF-8 exposition"))
    }
}

fn host_route(host: &str, origin: &str, rules: RulesSource) -> RouteConfig {
    RouteConfig::new(
        vec![HostPattern::parse(host).expect("valid host")],
        OriginUrl::parse(origin).expect("valid origin"),
        rules,
    )
}

#[test]
fn known_traffic_is_counted_exactly_and_served_in_both_formats() {
    alone_in_a_process(
        "metrics::known_traffic_is_counted_exactly_and_served_in_both_formats",
        || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(known_traffic());
        },
    );
}

async fn known_traffic() {
    let started = SystemTime::now();
    let origin = Origin::start(Reply::default()).await;
    let rules = rules_file(&cached_rules());
    // Bound, then closed: nothing listens there any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port");
    let s3 = FakeS3::start().await;
    s3.put_bucket("photos", Some(&cached_rules()));
    let ca = TestCa::new("metrics");
    let leaf = ca.leaf(&["app.test"]);
    // An HTTPS origin whose certificate no root the gateway trusts has signed.
    let untrusted = Origin::start_tls(
        Reply::default(),
        ca.leaf(&["127.0.0.1"]).server_config(&["http/1.1"]),
    )
    .await;

    let mut config = config_with_admin(vec![
        host_route("app.test", &origin.url(), RulesSource::File(rules.clone())),
        host_route("down.test", &format!("http://{closed}"), RulesSource::None),
        host_route(
            "bucket.test",
            &s3.url(),
            RulesSource::Bucket(BucketSource {
                bucket: "photos".into(),
                // Never within the test: every fetch is one the test asks for.
                poll: Duration::from_secs(3600),
                signing: SigningConfig::default(),
            }),
        ),
        host_route("untrusted.test", &untrusted.url(), RulesSource::None),
    ]);
    config.server.tls = vec![TlsListenerConfig {
        listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
        certs: vec![leaf.files.clone()],
        unknown_name: UnknownName::DefaultCert,
    }];
    let gateway = start(config).await;
    let admin = Admin {
        addr: gateway.admin.expect("an admin listener"),
        connections: AtomicUsize::new(0),
    };
    let app = [("host", "app.test")];
    let preflight = |origin: &'static str| {
        [
            ("host", "app.test"),
            ("origin", origin),
            ("access-control-request-method", "GET"),
        ]
    };

    for _ in 0..7 {
        let answer = send(
            gateway.addr(),
            "OPTIONS",
            "/k",
            &preflight("https://a.example"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    for _ in 0..3 {
        let answer = send(
            gateway.addr(),
            "OPTIONS",
            "/k",
            &preflight("https://evil.example"),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
    for _ in 0..2 {
        let answer = send(
            gateway.addr(),
            "GET",
            "/k",
            &[app[0], ("origin", "https://a.example")],
        )
        .await;
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some("https://a.example")
        );
    }
    let unknown = send(gateway.addr(), "GET", "/k", &[("host", "nowhere.test")]).await;
    assert_eq!(unknown.status, StatusCode::MISDIRECTED_REQUEST);
    let down = send(gateway.addr(), "GET", "/k", &[("host", "down.test")]).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    let distrusted = send(gateway.addr(), "GET", "/k", &[("host", "untrusted.test")]).await;
    assert_eq!(distrusted.status, StatusCode::BAD_GATEWAY);
    let tls = gateway.tls_addrs[0];
    let (stream, _, _) =
        crate::common::https::handshake(tls, "app.test", ca.client_config(&["http/1.1"]))
            .await
            .expect("a TLS handshake");
    drop(stream);

    // The same rules again, then a file that does not validate: unchanged, then invalid.
    assert_eq!(
        admin.send("POST", "/-/reload", &[]).await.status,
        StatusCode::OK
    );
    std::fs::write(&rules, INVALID).expect("rewrite the rules");
    assert_eq!(
        admin.send("POST", "/-/reload", &[]).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let generation = admin.send("GET", "/-/rules", &[]).await;
    let rules_view: serde_json::Value =
        serde_json::from_slice(&generation.body).expect("JSON rules");
    let generation = rules_view["routes"][0]["rules"]["generation"]
        .as_f64()
        .expect("route 1 has a generation");

    // Prometheus asks for OpenMetrics first; the admin guard applies to /metrics as to the rest.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
    let open = admin.send("GET", "/metrics", &[("accept", accept)]).await;
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = std::str::from_utf8(&open.body).expect("UTF-8 exposition");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE corsgate_requests counter\n"),
        "{text}"
    );
    let foreign = admin
        .send("GET", "/metrics", &[("host", "evil.example")])
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let post = admin.send("POST", "/metrics", &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    // Every client connection has closed once the gateway has noticed.
    for listener in ["gateway", "tls"] {
        let closed = eventually(Duration::from_secs(10), || async {
            let open = admin.scrape().await;
            open.get("corsgate_connections_open", &[("listener", listener)]) == 0.0
        })
        .await;
        assert!(closed, "{listener} connections still counted open");
    }
    let metrics = admin.scrape().await;

    let requests = |route: &str, kind: &str, outcome: &str| {
        metrics.get(
            "corsgate_requests_total",
            &[("route", route), ("kind", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("1", "preflight", "allowed"), 7.0);
    assert_eq!(requests("1", "preflight", "denied"), 3.0);
    assert_eq!(requests("1", "actual", "decorated"), 2.0);
    assert_eq!(requests("1", "actual", "undecorated"), 0.0);
    assert_eq!(requests("none", "actual", "refused"), 1.0);
    assert_eq!(requests("2", "actual", "error"), 1.0);
    assert_eq!(requests("2", "actual", "undecorated"), 0.0);
    assert_eq!(requests("4", "actual", "error"), 1.0);
    let total: f64 = metrics
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with("corsgate_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        total, 15.0,
        "no request counted twice or under another label"
    );

    let durations = |route: &str, kind: &str| {
        metrics.get(
            "corsgate_request_duration_seconds_count",
            &[("route", route), ("kind", kind)],
        )
    };
    assert_eq!(durations("1", "preflight"), 10.0);
    assert_eq!(durations("1", "actual"), 2.0);
    assert_eq!(durations("2", "actual"), 1.0);
    assert_eq!(durations("none", "actual"), 1.0);
    assert_eq!(
        metrics.get(
            "corsgate_request_duration_seconds_bucket",
            &[("route", "1"), ("kind", "preflight"), ("le", "+Inf")]
        ),
        10.0
    );

    let origin_errors = |route: &str, reason: &str| {
        metrics.get(
            "corsgate_origin_errors_total",
            &[("route", route), ("reason", reason)],
        )
    };
    assert_eq!(origin_errors("2", "connect"), 1.0);
    for reason in ["timeout", "reset", "tls", "refused"] {
        assert_eq!(origin_errors("2", reason), 0.0, "{reason}");
    }
    assert_eq!(origin_errors("1", "connect"), 0.0);
    assert_eq!(origin_errors("4", "tls"), 1.0);
    assert_eq!(origin_errors("4", "connect"), 0.0);

    // Each key: evaluated on its first visit (the doorkeeper's), cached on its second, a hit
    // from then on.
    assert_eq!(
        metrics.get("corsgate_preflight_cache_misses_total", &[]),
        2.0
    );
    assert_eq!(metrics.get("corsgate_preflight_cache_hits_total", &[]), 6.0);
    assert_eq!(metrics.get("corsgate_preflight_cache_entries", &[]), 2.0);

    let reloads = |route: &str, source: &str, result: &str| {
        metrics
            .value(
                "corsgate_rules_reloads_total",
                &[("route", route), ("source", source), ("result", result)],
            )
            .unwrap_or(0.0)
    };
    assert_eq!(reloads("1", "file", "applied"), 1.0, "the load at start");
    assert_eq!(reloads("1", "file", "unchanged"), 1.0);
    assert_eq!(reloads("1", "file", "invalid"), 1.0);
    assert_eq!(reloads("1", "file", "error"), 0.0);
    assert_eq!(reloads("3", "bucket", "applied"), 1.0, "the fetch at start");
    assert_eq!(reloads("3", "bucket", "unchanged"), 2.0);
    assert_eq!(
        metrics.get("corsgate_bucket_fetches_total", &[("result", "rules")]),
        3.0
    );
    assert_eq!(
        metrics.get("corsgate_bucket_fetches_total", &[("result", "error")]),
        0.0
    );
    assert_eq!(
        metrics.get("corsgate_rules_generation", &[("route", "1")]),
        generation
    );
    let applied = metrics.get(
        "corsgate_rules_last_applied_timestamp_seconds",
        &[("route", "1")],
    );
    let since_epoch = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64()
    };
    assert!(
        since_epoch(started) <= applied && applied <= since_epoch(SystemTime::now()),
        "{applied}"
    );

    let connections =
        |listener: &str| metrics.get("corsgate_connections_total", &[("listener", listener)]);
    assert_eq!(connections("gateway"), 15.0, "one per request sent");
    assert_eq!(connections("tls"), 1.0);
    assert_eq!(
        connections("admin"),
        admin.connections.load(Ordering::Relaxed) as f64,
        "the scrape that reads it included"
    );
    assert_eq!(connections("redirect"), 0.0);

    let not_after = rcgen::CertificateParams::default()
        .not_after
        .unix_timestamp() as f64;
    assert_eq!(
        metrics.get(
            "corsgate_tls_certificate_expiry_timestamp_seconds",
            &[("certificate", "app.test")]
        ),
        not_after
    );
    assert_eq!(
        metrics.get(
            "corsgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(metrics.get("process_resident_memory_bytes", &[]) > 0.0);
    assert!(metrics.get("process_open_fds", &[]) > 0.0);
    assert!(metrics.get("process_cpu_seconds_total", &[]) > 0.0);
    assert_eq!(metrics.get("corsgate_log_lines_dropped_total", &[]), 0.0);

    for (family, kind) in [
        ("corsgate_requests_total", "counter"),
        ("corsgate_request_duration_seconds", "histogram"),
        ("corsgate_origin_errors_total", "counter"),
        ("corsgate_preflight_cache_hits_total", "counter"),
        ("corsgate_preflight_cache_misses_total", "counter"),
        ("corsgate_preflight_cache_entries", "gauge"),
        ("corsgate_rules_reloads_total", "counter"),
        ("corsgate_rules_generation", "gauge"),
        ("corsgate_rules_last_applied_timestamp_seconds", "gauge"),
        ("corsgate_bucket_fetches_total", "counter"),
        ("corsgate_connections_open", "gauge"),
        ("corsgate_connections_total", "counter"),
        ("corsgate_tls_certificate_expiry_timestamp_seconds", "gauge"),
        ("corsgate_build_info", "gauge"),
        ("corsgate_log_lines_dropped_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_cpu_seconds_total", "counter"),
    ] {
        assert_eq!(metrics.type_of(family), Some(kind), "{family}");
    }
}
