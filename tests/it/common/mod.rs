//! The end-to-end harness: a real origin on an ephemeral loopback port that records what
//! reaches it and answers as told, corsgate started in-process (or as the real binary) in front
//! of it, and a real HTTP client. Tests then read like the spec sentence they check.

mod binary;
#[cfg(feature = "external")]
mod external;
mod fake_s3;
pub mod https;
mod origin;
pub mod pki;

pub use binary::{Binary, run_to_exit};
#[cfg(feature = "external")]
pub use external::*;
pub use fake_s3::FakeS3;
pub use origin::{Origin, Reply, SMALL_BODY, StreamingOrigin, Zeros};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use corsgate::config::{AdminConfig, Config, HostPattern, OriginUrl, RouteConfig, ServerConfig};
use corsgate::gateway::{self, Running};
use corsgate::rules::RulesSource;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Polls `check` every 25 ms until it holds (true) or `within` passes (false): for effects that
/// happen in the background (a file watch, a poll, a reload).
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

/// A path nothing uses yet, `N-{name}` in this process's temp directory (which exists): every
/// test of the binary gets paths of its own.
pub fn scratch_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("corsgate-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("{}-{name}", N.fetch_add(1, Ordering::Relaxed)))
}

/// Writes `contents` to a fresh file named `N-{stem}.{extension}`.
fn scratch_file(stem: &str, extension: &str, contents: &str) -> PathBuf {
    let path = scratch_path(&format!("{stem}.{extension}"));
    std::fs::write(&path, contents).expect("write a scratch file");
    path
}

/// Writes rules to a fresh file (the gateway reads rules from files).
pub fn rules_file(xml: &str) -> PathBuf {
    scratch_file("rules", "xml", xml)
}

/// A route for `hosts` to `origin` with these rules (`None`: no CORS configuration).
pub fn route(hosts: &[&str], origin: &Origin, rules: Option<&str>) -> RouteConfig {
    RouteConfig::new(
        hosts
            .iter()
            .map(|h| HostPattern::parse(h).expect("valid host"))
            .collect(),
        OriginUrl::parse(&origin.url()).expect("valid origin"),
        rules.map_or(RulesSource::None, |xml| RulesSource::File(rules_file(xml))),
    )
}

/// A configuration listening on an ephemeral loopback port.
pub fn config(routes: Vec<RouteConfig>) -> Config {
    Config {
        server: ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            ..ServerConfig::default()
        },
        routes,
        demo_origin: None,
        // Tests that need the admin listener ask for one on an ephemeral port.
        admin: AdminConfig {
            listen: None,
            token_env: None,
            metrics: true,
        },
        log: corsgate::config::LogConfig::default(),
    }
}

/// A configuration with an admin listener on an ephemeral loopback port.
pub fn config_with_admin(routes: Vec<RouteConfig>) -> Config {
    let mut config = config(routes);
    config.admin.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    config
}

/// A route for any host in front of `origin_url` with this rules source.
pub fn route_to(origin_url: &str, rules: RulesSource) -> RouteConfig {
    let mut route = RouteConfig::new(
        vec![HostPattern::Any],
        OriginUrl::parse(origin_url).expect("valid origin"),
        rules,
    );
    route.preserve_host = matches!(route.rules, RulesSource::Endpoint(_));
    route
}

/// `GET` (or `POST`) an admin path and parse the JSON answer (`Value::Null` when not JSON).
pub async fn admin(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, serde_json::Value) {
    let answer = send(addr, method, path, &[]).await;
    let json = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
    (answer.status, json)
}

/// corsgate, in this process, with one route for any host in front of `origin`.
pub async fn gateway_for(origin: &Origin, rules: Option<&str>) -> Running {
    start(config(vec![route(&["*"], origin, rules)])).await
}

pub async fn start(config: Config) -> Running {
    gateway::spawn(config).await.expect("gateway starts")
}

/// A response with its body read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// Every `Access-Control-*` header, as (name, value), sorted.
    pub fn cors_headers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("access-control-"))
            .map(|(n, v)| (n.to_string(), v.to_str().expect("ascii").to_string()))
            .collect();
        out.sort();
        out
    }

    pub fn vary_lines(&self) -> Vec<&str> {
        self.headers
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().expect("ascii"))
            .collect()
    }

    /// The text of an element of an S3 XML error body, unescaped.
    pub fn xml(&self, element: &str) -> Option<String> {
        let body = std::str::from_utf8(&self.body).ok()?;
        let open = format!("<{element}>");
        let start = body.find(&open)? + open.len();
        let end = start + body[start..].find(&format!("</{element}>"))?;
        Some(
            body[start..end]
                .replace("&apos;", "'")
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    }
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c, no upgrade dance).
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends `method path` with `headers` to the gateway over HTTP/1.1 and reads the whole answer.
pub async fn send(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send_with(&client(), gateway, method, path, headers).await
}

pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    gateway: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    exchange(client, gateway, method, path, headers, Bytes::new()).await
}

/// Like [`send`], with a request body.
pub async fn send_body(
    gateway: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    exchange(&client(), gateway, method, path, headers, body.into()).await
}

async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    gateway: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"));
    for (name, value) in headers {
        req = req.header(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let req = req.body(Full::new(body)).expect("request");
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("answer within 30 s")
        .expect("gateway answers");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Writes raw bytes to the gateway and returns its answer's head (or all it sent before
/// closing).
pub async fn raw(gateway: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let read_head = async {
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read_head).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `body` in a process of its own: this test binary again, running only `test` (its name
/// as the harness lists it, `module::function`). For a test that reads state the whole process
/// shares, such as the metrics registry, which the other tests' in-process gateways add to.
pub fn alone_in_a_process(test: &str, body: impl FnOnce()) {
    const ALONE: &str = "CORSGATE_TEST_ALONE";
    if std::env::var_os(ALONE).is_some_and(|name| name == test) {
        body();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE, test)
        .output()
        .expect("run the test binary again");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{test}, alone in a process, failed:\n{stdout}{stderr}"
    );
    // A name that matches no test would run nothing and succeed.
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "{test} did not run alone in a process:\n{stdout}{stderr}"
    );
}

/// Makes a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: mkfifo(3) reads a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}
/// A TOML configuration written to a fresh file, for the binary's `--config`.
pub fn config_file(toml: &str) -> PathBuf {
    scratch_file("config", "toml", toml)
}

/// Sends `method path` with `headers` over a fresh connection and gives the status, or the
/// error when no answer came: what a client of a gateway being reconfigured or stopped sees.
pub async fn try_send(
    client: &Client<HttpConnector, Full<Bytes>>,
    gateway: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<StatusCode, String> {
    let mut req = Request::builder().uri(format!("http://{gateway}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(status)
}
