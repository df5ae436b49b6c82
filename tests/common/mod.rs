//! The end-to-end harness: a real origin on an ephemeral loopback port that records what
//! reaches it and answers as told, corsgate started in-process (or as the real binary) in front
//! of it, and a real HTTP client. Tests then read like the spec sentence they check.

#![allow(dead_code)] // each test binary uses its own part of the harness

mod fake_s3;
#[allow(unused_imports)] // not every test binary fronts a bucket
pub use fake_s3::FakeS3;
pub mod https;
pub mod pki;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use corsgate::config::{AdminConfig, Config, HostPattern, OriginUrl, RouteConfig, ServerConfig};
use corsgate::gateway::{self, Running};
use corsgate::rules::RulesSource;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// What the origin saw of one request.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub version: Version,
    /// Path and query exactly as they arrived.
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: u64,
}

/// How the origin answers every request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Bytes,
    /// Wait this long before the response head.
    pub delay: Duration,
    /// Instead of `body`, answer GET requests with this many zero bytes, streamed.
    pub stream: Option<u64>,
    /// After the response head, send the first chunk, then stall this long.
    pub stall_after_head: Option<Duration>,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: StatusCode::OK,
            headers: Vec::new(),
            body: Bytes::from_static(b"origin body"),
            delay: Duration::ZERO,
            stream: None,
            stall_after_head: None,
        }
    }
}

/// A real origin server on 127.0.0.1.
pub struct Origin {
    pub addr: SocketAddr,
    scheme: &'static str,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
}

impl Origin {
    pub async fn start(reply: Reply) -> Origin {
        Origin::start_with(reply, None).await
    }

    /// An HTTPS origin presenting `tls`'s certificate (ALPN as `tls` offers it).
    pub async fn start_tls(reply: Reply, tls: Arc<rustls::ServerConfig>) -> Origin {
        Origin::start_with(reply, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn start_with(reply: Reply, tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::clone(&received);
        let count = Arc::clone(&connections);
        let reply = Arc::new(reply);
        let scheme = if tls.is_some() { "https" } else { "http" };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let log = Arc::clone(&log);
                let reply = Arc::clone(&reply);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let log = Arc::clone(&log);
                        let reply = Arc::clone(&reply);
                        async move { Ok::<_, Infallible>(answer(req, &log, &reply).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            scheme,
            received,
            connections,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every request that reached the origin, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("origin log").clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("origin log").len()
    }
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    log: &Mutex<Vec<Received>>,
    reply: &Reply,
) -> Response<OriginBody> {
    let (parts, mut body) = req.into_parts();
    // Count the upload without keeping it: a 2 GiB upload must not live in the test's memory.
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_len += frame.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    log.lock().expect("origin log").push(Received {
        method: parts.method.clone(),
        version: parts.version,
        target: parts
            .uri
            .path_and_query()
            .map_or_else(String::new, |pq| pq.as_str().to_string()),
        headers: parts.headers,
        body_len,
    });
    tokio::time::sleep(reply.delay).await;
    let stream = reply.stream.filter(|_| parts.method == Method::GET);
    let body: OriginBody = match (stream, reply.stall_after_head) {
        (Some(n), _) => Zeros::new(n).boxed(),
        (None, Some(stall)) => Stalling {
            sent: false,
            stall: Box::pin(tokio::time::sleep(stall)),
        }
        .boxed(),
        (None, None) => Full::new(reply.body.clone()).boxed(),
    };
    let mut response = Response::new(body);
    *response.status_mut() = reply.status;
    for (name, value) in &reply.headers {
        response
            .headers_mut()
            .append(*name, HeaderValue::from_static(value));
    }
    response
        .headers_mut()
        .insert("x-upload-bytes", HeaderValue::from(body_len));
    response
}

/// `n` zero bytes in 64 KiB chunks, generated on the fly.
pub struct Zeros {
    remaining: u64,
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl Zeros {
    pub fn new(n: u64) -> Zeros {
        Zeros { remaining: n }
    }
}

impl Body for Zeros {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(ZEROS.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// One chunk, then nothing for a while, then the end.
struct Stalling {
    sent: bool,
    stall: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first chunk")))));
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Writes rules to a fresh file (the gateway reads rules from files).
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

pub fn rules_file(xml: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("corsgate-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("rules-{}.xml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, xml).expect("write rules");
    path
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
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"));
    for (name, value) in headers {
        req = req.header(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
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

/// The real `corsgate` binary, killed when the test ends however it ends.
pub struct Binary(pub std::process::Child, pub BinaryInfo);

/// What the binary said about itself.
#[derive(Clone, Debug, Default)]
pub struct BinaryInfo {
    /// The admin listener (the harness asks for an ephemeral port unless the test names one).
    pub admin: Option<SocketAddr>,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Runs `corsgate ARGS` in `dir` and waits until it says where it listens.
    pub fn start(args: &[&str], dir: &str) -> (Binary, SocketAddr) {
        Binary::start_with_env(args, dir, &[])
    }

    /// `corsgate serve --listen 127.0.0.1:0 --origin ORIGIN ARGS` in the crate's directory, with
    /// extra environment variables: the gateway most tests run.
    pub fn serve(origin: &str, args: &[&str], env: &[(&str, &str)]) -> (Binary, SocketAddr) {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--origin", origin];
        all.extend_from_slice(args);
        Binary::start_with_env(&all, env!("CARGO_MANIFEST_DIR"), env)
    }

    /// Like [`Binary::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], dir: &str, env: &[(&str, &str)]) -> (Binary, SocketAddr) {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut command = Command::new(env!("CARGO_BIN_EXE_corsgate"));
        command.args(args);
        // Parallel tests must not fight over the default admin port.
        if args.first() == Some(&"serve") && !args.contains(&"--admin") {
            command.args(["--admin", "127.0.0.1:0"]);
        }
        let mut child = command
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the corsgate binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut info = BinaryInfo::default();
        let mut binary = Binary(child, info.clone());
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("corsgate says where it listens before exiting")
                .expect("readable stderr");
            info.log.lock().expect("log").push(line.clone());
            if let Some(rest) = line.split("admin listening on http://").nth(1) {
                info.admin = Some(rest.trim().parse().expect("admin address"));
            }
            let rest = line.split("corsgate listening on ").nth(1);
            let addr = rest.and_then(|r| r.split("://").nth(1));
            if let Some(addr) = addr {
                break addr.trim().parse().expect("listen address");
            }
        };
        binary.1 = info.clone();
        // Keep draining the log so the gateway never blocks on a full pipe.
        let log = Arc::clone(&info.log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().expect("log").push(line);
            }
        });
        (binary, addr)
    }

    pub fn admin(&self) -> SocketAddr {
        self.1.admin.expect("the binary runs an admin listener")
    }

    /// The log lines so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.1
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Sends `SIGHUP`: reload.
    pub fn hangup(&self) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) only reads its arguments; the pid is our own child's.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(rc, 0, "kill -HUP {pid}");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a `corsgate` run that was expected to stop on its own ended.
#[derive(Debug)]
pub struct Exited {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `corsgate ARGS` in the crate's directory with these extra environment variables (and
/// without those in `unset`) and waits up to `within` for it to exit; `None` if it was still
/// running then (it is killed).
pub fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
    within: Duration,
) -> Option<Exited> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut command = Command::new(env!("CARGO_BIN_EXE_corsgate"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in unset {
        command.env_remove(name);
    }
    let mut child = command.spawn().expect("start the corsgate binary");
    // Both pipes drained as they fill, so the process never blocks on a full one.
    fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    }
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        match child.try_wait().expect("wait for corsgate") {
            Some(status) => break Some(status),
            None if std::time::Instant::now() >= deadline => break None,
            None => std::thread::sleep(Duration::from_millis(25)),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    };
    Some(Exited {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    })
}

/// Makes a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    // SAFETY: mkfifo(3) reads a NUL-terminated path that lives across the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

// Outside programs the `external` tests drive: moto's S3 server, s3cmd, nginx.
#[cfg(feature = "external")]
#[allow(unused_imports)] // not every test binary runs outside programs
pub use external::*;

#[cfg(feature = "external")]
mod external {
    use std::io::Read;
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant, SystemTime};

    /// An executable of the repo-local virtualenv, or the one the environment variable `var`
    /// names; fails the test when it is missing.
    pub fn venv_program(var: &str, name: &str) -> PathBuf {
        let path = std::env::var_os(var).map_or_else(
            || {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join(".venv/bin")
                    .join(name)
            },
            PathBuf::from,
        );
        assert!(
            path.is_file(),
            "{} is missing: run scripts/test.sh (it installs moto[server] and s3cmd into .venv/), or set {var}",
            path.display()
        );
        path
    }

    /// A port on 127.0.0.1 nothing listens on right now, for a program that must be told its
    /// port (it is free again once this returns: the program binds it moments later).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port()
    }

    /// A fresh directory of its own under the tests' temp directory.
    pub fn scratch_dir(what: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir()
            .join(format!("corsgate-tests-{}", std::process::id()))
            .join(format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// Waits until `addr` accepts connections; fails the test, with what the program said in
    /// `log`, if it exits first or takes longer than `within`.
    fn wait_listening(
        child: &mut Child,
        addr: SocketAddr,
        what: &str,
        log: &Path,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        while std::net::TcpStream::connect(addr).is_err() {
            let said = || std::fs::read_to_string(log).unwrap_or_default();
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{what} exited ({status}) before listening on {addr}:\n{}",
                    said()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not listen on {addr} within {within:?}:\n{}",
                said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A child process killed (and reaped) when dropped, however the test ends.
    struct Killed(Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// moto's S3 server on an ephemeral loopback port, stopped when dropped.
    pub struct Moto {
        child: Killed,
        pub addr: SocketAddr,
    }

    impl Moto {
        pub fn start() -> Moto {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = scratch_dir("moto").join("moto.log");
            let out = std::fs::File::create(&log).expect("moto log file");
            let child = Command::new(venv_program("CORSGATE_MOTO_SERVER", "moto_server"))
                .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .expect("start moto_server");
            let mut moto = Moto {
                child: Killed(child),
                addr,
            };
            wait_listening(
                &mut moto.child.0,
                addr,
                "moto_server",
                &log,
                Duration::from_secs(30),
            );
            moto
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }
    }

    /// s3cmd, configured for one endpoint, path-style, SigV4, moto's test keys.
    pub struct S3cmd {
        config: PathBuf,
    }

    impl S3cmd {
        pub fn new(endpoint: SocketAddr) -> S3cmd {
            let config = scratch_dir("s3cmd").join("s3cfg");
            // `host_bucket` without `%(bucket)s`: path-style requests.
            std::fs::write(
                &config,
                format!(
                    "[default]\naccess_key = testing\nsecret_key = testing\nhost_base = {endpoint}\n\
                     host_bucket = {endpoint}\nuse_https = False\nsignature_v2 = False\n\
                     bucket_location = us-east-1\n"
                ),
            )
            .expect("write s3cmd config");
            S3cmd { config }
        }

        /// Runs `s3cmd ARGS`; returns whether it succeeded and what it said.
        pub fn run(&self, args: &[&str]) -> (bool, String) {
            let output = Command::new(venv_program("CORSGATE_S3CMD", "s3cmd"))
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .output()
                .expect("run s3cmd");
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status.success(), said)
        }

        pub fn ok(&self, args: &[&str]) {
            let (ok, said) = self.run(args);
            assert!(ok, "s3cmd {args:?} failed:\n{said}");
        }

        pub fn setcors(&self, xml: &str, bucket: &str) -> (bool, String) {
            let file = super::rules_file(xml);
            self.run(&[
                "setcors",
                &file.to_string_lossy(),
                &format!("s3://{bucket}"),
            ])
        }
    }

    /// The nginx of the Debian package, or the one `CORSGATE_NGINX` names.
    fn nginx_program() -> PathBuf {
        let path = std::env::var_os("CORSGATE_NGINX")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|dir| dir.join("nginx"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
        assert!(
            path.is_file(),
            "{} is missing: run scripts/test.sh (it installs nginx-light), or set CORSGATE_NGINX",
            path.display()
        );
        path
    }

    /// nginx as a round-robin HTTP load balancer on an ephemeral loopback port, in a prefix
    /// directory of its own, stopped when dropped.
    ///
    /// One process (`master_process off`): killing it leaves no orphaned worker behind. Each
    /// request goes to the next upstream and is never retried on another, and the `Host` the
    /// client signed reaches the upstream unchanged.
    pub struct Nginx {
        child: Killed,
        pub addr: SocketAddr,
        dir: PathBuf,
    }

    /// One line of nginx's access log: a request it proxied.
    #[derive(Clone, Debug)]
    pub struct Proxied {
        /// When nginx read the request's first bytes.
        pub arrived: SystemTime,
        /// When nginx had sent the whole answer.
        pub answered: SystemTime,
        pub status: u16,
        /// The upstream that answered, as nginx names it (`127.0.0.1:PORT`).
        pub upstream: String,
        pub method: String,
        /// Path and query as the client sent them.
        pub target: String,
    }

    impl Nginx {
        pub fn round_robin(upstreams: &[SocketAddr]) -> Nginx {
            let dir = scratch_dir("nginx");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let d = dir.display();
            let servers: String = upstreams
                .iter()
                .map(|u| format!("        server {u};\n"))
                .collect();
            let conf = format!(
                "daemon off;\n\
                 master_process off;\n\
                 pid {d}/nginx.pid;\n\
                 error_log stderr;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 \x20   log_format timing '$msec $request_time $status $upstream_addr $request_method $request_uri';\n\
                 \x20   access_log {d}/access.log timing;\n\
                 \x20   client_body_temp_path {d}/client_body;\n\
                 \x20   proxy_temp_path {d}/proxy;\n\
                 \x20   fastcgi_temp_path {d}/fastcgi;\n\
                 \x20   uwsgi_temp_path {d}/uwsgi;\n\
                 \x20   scgi_temp_path {d}/scgi;\n\
                 \x20   upstream replicas {{\n{servers}    }}\n\
                 \x20   server {{\n\
                 \x20       listen {addr};\n\
                 \x20       location / {{\n\
                 \x20           proxy_pass http://replicas;\n\
                 \x20           proxy_set_header Host $http_host;\n\
                 \x20           proxy_next_upstream off;\n\
                 \x20       }}\n\
                 \x20   }}\n\
                 }}\n"
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let log = dir.join("stderr.log");
            let out = std::fs::File::create(&log).expect("nginx log file");
            let child = Command::new(nginx_program())
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&conf_path)
                // Before reading its configuration nginx opens its compiled-in error log.
                .args(["-e", "stderr"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(out)
                .spawn()
                .expect("start nginx");
            let mut nginx = Nginx {
                child: Killed(child),
                addr,
                dir,
            };
            wait_listening(
                &mut nginx.child.0,
                addr,
                "nginx",
                &log,
                Duration::from_secs(10),
            );
            nginx
        }

        /// Every request proxied so far (a line nginx has not finished writing is left out).
        pub fn access_log(&self) -> Vec<Proxied> {
            let mut text = String::new();
            if let Ok(mut file) = std::fs::File::open(self.dir.join("access.log")) {
                let _ = file.read_to_string(&mut text);
            }
            text.lines().filter_map(parse_access_line).collect()
        }
    }

    /// `$msec $request_time $status $upstream_addr $request_method $request_uri`.
    fn parse_access_line(line: &str) -> Option<Proxied> {
        let mut fields = line.splitn(6, ' ');
        let answered = std::time::UNIX_EPOCH + seconds(fields.next()?)?;
        let took = seconds(fields.next()?)?;
        Some(Proxied {
            arrived: answered.checked_sub(took)?,
            answered,
            status: fields.next()?.parse().ok()?,
            upstream: fields.next()?.to_string(),
            method: fields.next()?.to_string(),
            target: fields.next()?.to_string(),
        })
    }

    /// nginx's `SECONDS.MILLIS`.
    fn seconds(text: &str) -> Option<Duration> {
        let (secs, millis) = text.split_once('.')?;
        Some(Duration::from_secs(secs.parse().ok()?) + Duration::from_millis(millis.parse().ok()?))
    }
}

/// An origin that streams `large` zero bytes for `GET /large` and a short body for anything
/// else, counting its open connections and the large bodies dropped before their end: what a
/// test of a slow client needs to see the origin side released.
pub struct StreamingOrigin {
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    cut_short: Arc<AtomicUsize>,
}

/// The short body `StreamingOrigin` answers anything but `/large` with.
pub const SMALL_BODY: &[u8] = b"small answer";

impl StreamingOrigin {
    pub async fn start(large: u64) -> StreamingOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let open = Arc::new(AtomicUsize::new(0));
        let cut_short = Arc::new(AtomicUsize::new(0));
        let (count, cut) = (Arc::clone(&open), Arc::clone(&cut_short));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let open = OpenConnection::new(Arc::clone(&count));
                let cut = Arc::clone(&cut);
                tokio::spawn(async move {
                    let _open = open;
                    let service = service_fn(move |req: Request<Incoming>| {
                        let body: OriginBody = if req.uri().path() == "/large" {
                            Counted {
                                zeros: Zeros::new(large),
                                cut_short: Arc::clone(&cut),
                            }
                            .boxed()
                        } else {
                            Full::new(Bytes::from_static(SMALL_BODY)).boxed()
                        };
                        async move { Ok::<_, Infallible>(Response::new(body)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        StreamingOrigin {
            addr,
            open,
            cut_short,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Large bodies dropped before their last byte was taken.
    pub fn cut_short(&self) -> usize {
        self.cut_short.load(Ordering::SeqCst)
    }
}

/// One open origin connection, counted until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(count: Arc<AtomicUsize>) -> OpenConnection {
        count.fetch_add(1, Ordering::SeqCst);
        OpenConnection(count)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Zeros` that count themselves when dropped before their end.
struct Counted {
    zeros: Zeros,
    cut_short: Arc<AtomicUsize>,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.zeros).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.zeros.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.zeros.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if !self.zeros.is_end_stream() {
            self.cut_short.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Binary {
    /// `corsgate ARGS` in the crate's directory with its descriptor limit (soft and hard) set to
    /// `nofile` before it starts, as `ulimit -n` would; waits until it says where it listens.
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> (Binary, SocketAddr) {
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let mut command = Command::new(env!("CARGO_BIN_EXE_corsgate"));
        command.args(args);
        if args.first() == Some(&"serve") && !args.contains(&"--admin") {
            command.args(["--admin", "127.0.0.1:0"]);
        }
        let limit = libc::rlimit {
            rlim_cur: nofile,
            rlim_max: nofile,
        };
        // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe and
        // reads a struct copied into the closure.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the corsgate binary");
        Binary::follow(child)
    }

    /// Reads a started binary's log until it says where it listens, and keeps reading it.
    fn follow(mut child: std::process::Child) -> (Binary, SocketAddr) {
        use std::io::{BufRead, BufReader};
        let stderr = child.stderr.take().expect("piped stderr");
        let info = BinaryInfo::default();
        let mut binary = Binary(child, info.clone());
        let mut lines = BufReader::new(stderr).lines();
        let mut admin = None;
        let addr = loop {
            let line = lines
                .next()
                .expect("corsgate says where it listens before exiting")
                .expect("readable stderr");
            info.log.lock().expect("log").push(line.clone());
            if let Some(rest) = line.split("admin listening on http://").nth(1) {
                admin = Some(rest.trim().parse().expect("admin address"));
            }
            let rest = line.split("corsgate listening on ").nth(1);
            if let Some(addr) = rest.and_then(|r| r.split("://").nth(1)) {
                break addr.trim().parse().expect("listen address");
            }
        };
        binary.1.admin = admin;
        let log = Arc::clone(&info.log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                log.lock().expect("log").push(line);
            }
        });
        (binary, addr)
    }

    /// Descriptors the binary has open now.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.id()))
            .expect("the binary's /proc entry")
            .count()
    }

    /// CPU time the binary has used so far (user and system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id()))
            .expect("the binary's /proc stat");
        // Fields after the command name (which may hold spaces) start at the state, field 3;
        // utime and stime are fields 14 and 15, in clock ticks.
        let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
        let fields: Vec<u64> = after_name
            .split(' ')
            .skip(11)
            .take(2)
            .map(|f| f.parse().expect("tick count"))
            .collect();
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let ticks = u64::try_from(ticks).expect("clock ticks per second");
        Duration::from_millis((fields[0] + fields[1]) * 1000 / ticks)
    }
}

/// A TOML configuration written to a fresh file, for the binary's `--config`.
pub fn config_file(toml: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("corsgate-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("config-{}.toml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, toml).expect("write configuration");
    path
}

impl Binary {
    /// Sends `SIGTERM`: drain, then stop.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.0.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) only reads its arguments; the pid is our own child's.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill -{signal} {pid}");
    }

    /// How the binary ended, if it has (without waiting).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().expect("wait for corsgate")
    }

    /// Waits up to `within` for the binary to end on its own; how it ended, if it did.
    pub async fn exits(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits up to `within` for a log line containing `needle`.
    pub async fn logged(&self, needle: &str, within: Duration) -> bool {
        eventually(within, || async { !self.log_lines(needle).is_empty() }).await
    }
}

/// A loopback port nothing listens on now (bound, then released): for a configuration two
/// processes must share, which port 0 cannot express.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
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
