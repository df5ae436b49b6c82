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
        },
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
