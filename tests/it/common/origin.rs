//! Origins for the gateway to front: [`Origin`] records every request and answers as told;
//! [`StreamingOrigin`] streams large bodies and counts what a slow client leaves behind.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
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
