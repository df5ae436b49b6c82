//! corsgate in a fleet, as the real binary: `check --config` before a start, a configuration
//! reloaded while clients keep sending (SIGHUP and `POST /-/reload`, a bad file changing
//! nothing), draining on SIGTERM, and, with the `external` feature, a new process taking over
//! the port of an old one under `wrk` (SO_REUSEPORT) without a failed request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use http::StatusCode;

const ALLOW_A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";
/// Line 3, column 5: a lower-case method, which S3 refuses with InvalidRequest.
const INVALID: &str = "<CORSConfiguration>\n <CORSRule><AllowedOrigin>https://b.example</AllowedOrigin>\n    <AllowedMethod>get</AllowedMethod></CORSRule>\n</CORSConfiguration>";

fn corsgate_dir() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn serve(config: &Path) -> (Binary, SocketAddr) {
    let path = config.to_str().expect("utf-8 temp path");
    Binary::start(&["serve", "--config", path], corsgate_dir())
}

/// One `[[route]]` for `host` in front of `origin`.
fn route_toml(host: &str, origin: &Origin) -> String {
    format!(
        "[[route]]\nhosts = [\"{host}\"]\norigin = \"{}\"\n",
        origin.url()
    )
}

/// A gateway configuration on `listen` with these timeouts (`key = "value"` lines) and routes.
fn gateway_toml(listen: &str, timeouts: &[(&str, &str)], routes: &[String]) -> String {
    let mut text = format!("[server]\nlisten = [\"{listen}\"]\n[server.timeouts]\n");
    for (key, value) in timeouts {
        text.push_str(&format!("{key} = \"{value}\"\n"));
    }
    for route in routes {
        text.push_str(route);
    }
    text
}

async fn status(gateway: SocketAddr, host: &str) -> Result<StatusCode, String> {
    try_send(&client(), gateway, "/k", &[("host", host)]).await
}

/// Clients sending `GET` to one host in a loop, half on kept-alive connections and half on a
/// new connection each time (both kinds must get through a reload), counting what they get.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: SocketAddr, host: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..clients)
            .map(|i| {
                let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    let kept = client();
                    while !stop.load(Ordering::Relaxed) {
                        let fresh = client();
                        let client = if i % 2 == 0 { &kept } else { &fresh };
                        match try_send(client, gateway, "/k", &[("host", host)]).await {
                            Ok(StatusCode::OK) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failed.lock().expect("failures").push(format!("{other:?}")),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            clients,
        }
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` requests beyond those answered so far are answered.
    async fn answers(&self, more: u64) -> bool {
        let target = self.answered() + more;
        eventually(Duration::from_secs(20), || async {
            self.answered() >= target
        })
        .await
    }

    /// Stops the clients; the requests answered and the failures.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.expect("load client");
        }
        let failed = self.failed.lock().expect("failures").clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

#[test]
fn check_config_lists_every_problem_with_its_line_and_key_and_exits_1() {
    let bad_rules = rules_file(INVALID);
    let missing = bad_rules.with_file_name("no-such-rules.xml");
    let text = format!(
        "[server]\n\
         lsiten = [\"127.0.0.1:8080\"]\n\
         \n\
         [server.timeouts]\n\
         conect = \"5s\"\n\
         \n\
         [server.limits]\n\
         max_connections = \"many\"\n\
         \n\
         [[route]]\n\
         hosts = [\"a.example\"]\n\
         origin = \"ftp://nowhere\"\n\
         \n\
         [[route]]\n\
         hosts = [\"b.example\"]\n\
         origin = \"http://127.0.0.1:9\"\n\
         rules = {{ file = \"{}\" }}\n\
         \n\
         [[route]]\n\
         hosts = [\"c.example\"]\n\
         origin = \"http://127.0.0.1:9\"\n\
         rules = {{ file = \"{}\" }}\n",
        missing.display(),
        bad_rules.display()
    );
    let config = config_file(&text);
    let name = config.display().to_string();
    let path = config.to_str().expect("utf-8 temp path");
    let out = run_to_exit(
        &["check", "--config", path],
        &[],
        &[],
        Duration::from_secs(30),
    )
    .expect("check exits");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let expected = [
        format!("{name}:2: server.lsiten: unknown key, did you mean `listen`?"),
        format!("{name}:5: server.timeouts.conect: unknown key, did you mean `connect`?"),
        format!(
            "{name}:8: server.limits.max_connections: invalid type: string \"many\", expected a \
             whole number"
        ),
        format!(
            "{name}:12: route[1].origin: \"ftp://nowhere\" must start with http:// or https://"
        ),
    ];
    for line in &expected {
        assert!(lines.contains(&line.as_str()), "{line}\n{}", out.stdout);
    }
    let prefix = format!("{name}:17: route[2].rules.file: {}: ", missing.display());
    assert!(
        lines.iter().any(|l| l.starts_with(&prefix)),
        "{prefix}\n{}",
        out.stdout
    );
    let rules = bad_rules.display().to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{rules}:3:5: InvalidRequest: "))),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines.last().copied(),
        Some(format!("{name}: invalid (5 problems, 1 invalid rules file)").as_str()),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);

    let good = config_file(&format!(
        "[server]\nlisten = [\"127.0.0.1:8080\"]\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9\"\nrules = {{ file = \"{}\" }}\n",
        rules_file(ALLOW_A).display()
    ));
    let good_path = good.to_str().expect("utf-8 temp path");
    let out = run_to_exit(
        &["check", "--config", good_path],
        &[],
        &[],
        Duration::from_secs(30),
    )
    .expect("check exits");
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.ends_with(&format!(
            "{}: valid (1 route, 1 rules file)\n",
            good.display()
        )),
        "{}",
        out.stdout
    );

    let out = run_to_exit(
        &["check", "--config", "/nonexistent/corsgate.toml"],
        &[],
        &[],
        Duration::from_secs(30),
    )
    .expect("check exits");
    assert_eq!(
        out.code,
        Some(2),
        "an unreadable configuration is an I/O error"
    );
}

#[test]
fn serve_reports_every_problem_of_its_configuration_with_lines() {
    let config = config_file(
        "[server]\nlisten = [\"127.0.0.1:0\"]\ntrusted_proxy = []\n\
         [server.timeouts]\nidel = \"5s\"\n\
         [[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9\"\n",
    );
    let name = config.display().to_string();
    let path = config.to_str().expect("utf-8 temp path");
    let out = run_to_exit(
        &["serve", "--config", path],
        &[],
        &[],
        Duration::from_secs(30),
    )
    .expect("serve refuses to start");
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "{name}:3: server.trusted_proxy: unknown key, did you mean `trusted_proxies`?"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{name}:5: server.timeouts.idel: unknown key, did you mean `idle`?"
        )),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_route_and_changes_a_timeout_while_clients_lose_no_request() {
    let fast = Origin::start(Reply::default()).await;
    let slow = Origin::start(Reply {
        delay: Duration::from_secs(1),
        ..Reply::default()
    })
    .await;
    let routes = vec![
        route_toml("a.example", &fast),
        route_toml("slow.example", &slow),
    ];
    let config = config_file(&gateway_toml(
        "127.0.0.1:0",
        &[("origin_response", "10s")],
        &routes,
    ));
    let (gateway, addr) = serve(&config);
    assert_eq!(status(addr, "slow.example").await, Ok(StatusCode::OK));
    assert_eq!(
        status(addr, "b.example").await,
        Ok(StatusCode::MISDIRECTED_REQUEST),
        "no route serves b.example yet"
    );

    let load = Load::start(addr, "a.example", 4);
    assert!(load.answers(50).await, "the clients are answered");
    let mut more = routes.clone();
    more.push(route_toml("b.example", &fast));
    std::fs::write(
        &config,
        gateway_toml("127.0.0.1:0", &[("origin_response", "300ms")], &more),
    )
    .expect("write the new configuration");
    gateway.hangup();
    assert!(
        eventually(Duration::from_secs(10), || async {
            status(addr, "b.example").await == Ok(StatusCode::OK)
        })
        .await,
        "the new route answers after SIGHUP"
    );
    assert_eq!(
        status(addr, "slow.example").await,
        Ok(StatusCode::GATEWAY_TIMEOUT),
        "the new origin_response applies"
    );
    assert!(load.answers(50).await, "the clients are still answered");
    let (answered, failed) = load.finish().await;
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(answered >= 100, "{answered}");
    let reloaded = gateway.log_lines("configuration reloaded (SIGHUP): 3 route(s)");
    assert_eq!(reloaded.len(), 1, "{:?}", gateway.log_lines("reload"));
}

#[tokio::test]
async fn an_invalid_configuration_is_a_422_listing_its_problems_and_changes_nothing() {
    let origin = Origin::start(Reply::default()).await;
    let routes = vec![route_toml("a.example", &origin)];
    let config = config_file(&gateway_toml("127.0.0.1:0", &[], &routes));
    let (gateway, addr) = serve(&config);
    let admin_addr = gateway.admin();

    std::fs::write(
        &config,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nlsiten = []\n\
         [[route]]\nhosts = [\"a.example\"]\norigin = \"ftp://nowhere\"\n\
         [[route]]\nhosts = [\"b.example\"]\norigin = \"http://127.0.0.1:9\"\n",
    )
    .expect("write a broken configuration");
    let (code, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{outcome:#}");
    let problems = outcome["problems"].as_array().expect("a list of problems");
    let found: Vec<(u64, &str)> = problems
        .iter()
        .map(|p| {
            assert_eq!(p["file"], config.display().to_string(), "{p}");
            (
                p["line"].as_u64().expect("a line"),
                p["key"].as_str().expect("a key"),
            )
        })
        .collect();
    assert_eq!(found, [(3, "server.lsiten"), (6, "route[1].origin")]);
    assert_eq!(
        problems[0]["message"],
        "unknown key, did you mean `listen`?"
    );
    assert_eq!(status(addr, "a.example").await, Ok(StatusCode::OK));
    assert_eq!(
        status(addr, "b.example").await,
        Ok(StatusCode::MISDIRECTED_REQUEST)
    );
    assert!(!gateway.log_lines("configuration not reloaded").is_empty());

    // Valid again, with a new listen address: everything else applies, the address waits.
    let mut more = routes.clone();
    more.push(route_toml("b.example", &origin));
    std::fs::write(&config, gateway_toml("127.0.0.1:1", &[], &more)).expect("write");
    let (code, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(code, StatusCode::OK, "{outcome:#}");
    assert_eq!(
        outcome["config"]["restart_needed"],
        serde_json::json!(["server.listen"])
    );
    assert_eq!(outcome["config"]["kept"], serde_json::json!([]));
    assert_eq!(outcome["config"]["loaded"], serde_json::json!([1, 2]));
    assert_eq!(status(addr, "b.example").await, Ok(StatusCode::OK));
    assert!(
        gateway
            .logged(
                "server.listen changed: restart to apply",
                Duration::from_secs(5)
            )
            .await
    );
}

#[tokio::test]
async fn a_reload_keeps_the_rules_of_an_unchanged_route_and_stops_those_of_a_removed_one() {
    let origin = Origin::start(Reply::default()).await;
    let kept_rules = rules_file(ALLOW_A);
    let removed_rules = rules_file(ALLOW_A);
    let with_rules = |host: &str, rules: &Path| {
        format!(
            "{}rules = {{ file = \"{}\" }}\n",
            route_toml(host, &origin),
            rules.display()
        )
    };
    let config = config_file(&gateway_toml(
        "127.0.0.1:0",
        &[],
        &[
            with_rules("a.example", &kept_rules),
            with_rules("b.example", &removed_rules),
        ],
    ));
    let (gateway, _addr) = serve(&config);
    let admin_addr = gateway.admin();
    let (_, before) = admin(admin_addr, "GET", "/-/rules").await;
    let generation = &before["routes"][0]["rules"]["generation"];
    assert!(generation.is_u64(), "{before:#}");

    std::fs::write(
        &config,
        gateway_toml("127.0.0.1:0", &[], &[with_rules("a.example", &kept_rules)]),
    )
    .expect("write");
    let (code, outcome) = admin(admin_addr, "POST", "/-/reload").await;
    assert_eq!(code, StatusCode::OK, "{outcome:#}");
    assert_eq!(outcome["config"]["kept"], serde_json::json!([1]));
    assert_eq!(outcome["config"]["removed"], 1);
    let (_, after) = admin(admin_addr, "GET", "/-/rules").await;
    assert_eq!(
        &after["routes"][0]["rules"]["generation"], generation,
        "the kept route's rules were not loaded again: {after:#}"
    );

    // The removed route's file is no longer watched: an edit to it reloads nothing. (Edited
    // first: by the time the kept route's watch reports, the other would have too.)
    std::fs::write(&removed_rules, INVALID).expect("edit the removed route's rules");
    std::fs::write(&kept_rules, INVALID).expect("edit the kept route's rules");
    let refused = |rules: &Path| format!("{}:3:5: InvalidRequest", rules.display());
    assert!(
        gateway
            .logged(&refused(&kept_rules), Duration::from_secs(10))
            .await,
        "the kept route's file is still watched"
    );
    assert!(
        gateway.log_lines(&refused(&removed_rules)).is_empty(),
        "{:?}",
        gateway.log_lines("rules not reloaded")
    );
}

#[tokio::test]
async fn sigterm_fails_readyz_at_once_keeps_serving_for_drain_delay_then_finishes_in_flight_requests()
 {
    let fast = Origin::start(Reply::default()).await;
    let slow = Origin::start(Reply {
        delay: Duration::from_secs(4),
        ..Reply::default()
    })
    .await;
    let config = config_file(&gateway_toml(
        "127.0.0.1:0",
        &[("drain_delay", "2s"), ("shutdown_grace", "20s")],
        &[
            route_toml("a.example", &fast),
            route_toml("slow.example", &slow),
        ],
    ));
    let (mut gateway, addr) = serve(&config);
    let admin_addr = gateway.admin();
    assert_eq!(
        send(admin_addr, "GET", "/readyz", &[]).await.status,
        StatusCode::OK
    );
    let in_flight = tokio::spawn(raw(addr, b"GET /k HTTP/1.1\r\nHost: slow.example\r\n\r\n"));
    assert!(
        eventually(Duration::from_secs(5), || async { slow.count() == 1 }).await,
        "the slow request reached its origin"
    );

    gateway.terminate();
    assert!(
        eventually(Duration::from_secs(1), || async {
            send(admin_addr, "GET", "/readyz", &[]).await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await,
        "/readyz fails as soon as SIGTERM arrives"
    );
    // A new connection during the drain delay is still served.
    assert_eq!(status(addr, "a.example").await, Ok(StatusCode::OK));
    assert!(
        gateway.log_lines("no longer accepting").is_empty(),
        "the drain delay was over before the check"
    );

    assert!(
        gateway
            .logged("no longer accepting", Duration::from_secs(10))
            .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the listener is closed after the drain delay"
    );
    let head = in_flight.await.expect("in-flight request");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "a kept-alive connection is told to close: {head}"
    );
    let exit = gateway.exits(Duration::from_secs(10)).await;
    let exit = exit.expect("the process exits once the request in flight is done");
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn a_second_sigterm_stops_at_once() {
    let slow = Origin::start(Reply {
        delay: Duration::from_secs(60),
        ..Reply::default()
    })
    .await;
    let config = config_file(&gateway_toml(
        "127.0.0.1:0",
        &[("drain_delay", "30s"), ("shutdown_grace", "60s")],
        &[route_toml("*", &slow)],
    ));
    let (mut gateway, addr) = serve(&config);
    let _in_flight = tokio::spawn(raw(addr, b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(eventually(Duration::from_secs(5), || async { slow.count() == 1 }).await);
    gateway.terminate();
    assert!(
        gateway
            .logged("shutting down", Duration::from_secs(5))
            .await
    );
    gateway.terminate();
    let exit = gateway.exits(Duration::from_secs(3)).await;
    let exit = exit.expect("a second SIGTERM waits for neither the drain delay nor the grace");
    assert_eq!(exit.code(), Some(1));
    assert!(!gateway.log_lines("second signal").is_empty());
}

#[tokio::test]
async fn stopping_sends_http2_a_goaway_and_lets_its_streams_in_flight_finish() {
    let slow = Origin::start(Reply {
        delay: Duration::from_secs(1),
        ..Reply::default()
    })
    .await;
    let gateway = gateway_for(&slow, None).await;
    let addr = gateway.addr();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (h2, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
    let connection = tokio::spawn(connection);
    let mut h2 = h2.ready().await.expect("ready");
    let request = http::Request::get(format!("http://{addr}/k"))
        .body(())
        .expect("request");
    let (response, _) = h2.send_request(request, true).expect("send");
    assert!(eventually(Duration::from_secs(5), || async { slow.count() == 1 }).await);

    let stopped = tokio::spawn(gateway.shutdown());
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("answered")
        .expect("the stream in flight is answered, not reset");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the whole body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the connection ends once its stream is done")
        .expect("connection task");
    assert!(ended.is_ok(), "closed with a GOAWAY, not cut: {ended:?}");
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("stopped long before the grace")
        .expect("shutdown task");
}

#[tokio::test]
async fn stopping_closes_an_idle_kept_alive_connection_without_waiting_for_the_grace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start(Reply::default()).await;
    let gateway = gateway_for(&origin, None).await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /k HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).ends_with("origin body") {
        let n = stream.read(&mut buf).await.expect("read the answer");
        assert!(n > 0, "closed before the answer");
        answer.extend_from_slice(&buf[..n]);
    }

    // The shutdown grace is the default: only closing idle connections ends this quickly.
    tokio::time::timeout(Duration::from_secs(10), gateway.shutdown())
        .await
        .expect("stopped without waiting for the kept-alive connection");
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection was closed cleanly: {closed:?}"
    );
}

/// `wrk` sending preflights (answered by corsgate itself) for `seconds`.
#[cfg(feature = "external")]
fn wrk(addr: SocketAddr, seconds: u32) -> std::process::Child {
    let script = std::env::temp_dir().join(format!("corsgate-wrk-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        "wrk.method = \"OPTIONS\"\n\
         wrk.headers[\"Origin\"] = \"https://a.example\"\n\
         wrk.headers[\"Access-Control-Request-Method\"] = \"GET\"\n",
    )
    .expect("write the wrk script");
    std::process::Command::new("wrk")
        .args(["-t1", "-c8", &format!("-d{seconds}s"), "-s"])
        .arg(&script)
        .arg(format!("http://{addr}/k"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("wrk runs (scripts/test.sh installs it)")
}

#[cfg(feature = "external")]
#[tokio::test]
async fn a_new_process_takes_over_the_port_under_wrk_without_an_error() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let route = format!(
        "[[route]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:9\"\nrules = {{ file = \"{}\" }}\n",
        rules_file(ALLOW_A).display()
    );
    let config = config_file(&gateway_toml(&listen, &[("drain_delay", "1s")], &[route]));
    let quiet = [("RUST_LOG", "info,corsgate::access=off")];
    let path = config.to_str().expect("utf-8 temp path");
    let args = ["serve", "--config", path];
    let (mut old, addr) = Binary::start_with_env(&args, corsgate_dir(), &quiet);
    let idle = old.open_descriptors();
    let load = wrk(addr, 6);
    assert!(
        eventually(Duration::from_secs(5), || async {
            old.open_descriptors() >= idle + 8
        })
        .await,
        "wrk is connected to the old process"
    );

    let (new, new_addr) = Binary::start_with_env(&args, corsgate_dir(), &quiet);
    assert_eq!(new_addr, addr, "both listen on the same port");
    let new_idle = new.open_descriptors();
    old.terminate();
    let exit = old.exits(Duration::from_secs(10)).await;
    let exit = exit.expect("the old process drained and stopped");
    assert_eq!(exit.code(), Some(0));
    assert!(
        eventually(Duration::from_secs(5), || async {
            new.open_descriptors() >= new_idle + 8
        })
        .await,
        "wrk's connections moved to the new process"
    );

    let out = tokio::task::spawn_blocking(move || load.wait_with_output())
        .await
        .expect("wrk's waiter")
        .expect("wrk finishes");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    assert!(report.contains(" requests in "), "{report}");
}
