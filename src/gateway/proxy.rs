//! Forwarding to the origin: the route's own pool of HTTP/1.1 connections for plain-HTTP
//! origins ([`super::pool`]), hyper-util's pooled client for HTTPS ones (TLS through rustls, with
//! HTTP/2 or HTTP/1.1 as ALPN agrees), bodies streamed both ways (never buffered, so a multi-GiB
//! object passes with flat memory), hop-by-hop headers removed,
//! `X-Forwarded-For/-Proto/-Host` added, `Host` preserved or rewritten per route, path and query
//! forwarded byte for byte, and every origin failure turned into a typed [`GatewayError`].
//!
//! CORS is not this module's business: the caller decorates whatever comes back.

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arrayvec::ArrayVec;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{HeaderMap, Request, Response, Version};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::error::GatewayError;
use super::pool::{Lease, PoolError};
use super::route::Route;
use crate::config::Timeouts;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The pooled client HTTPS routes forward through (the pool is keyed by scheme and authority).
pub type OriginClient = Client<HttpsConnector<HttpConnector>, Upload>;

/// `tls` verifies `https://` origins; `http://` origins stay plain.
pub fn origin_client(timeouts: &Timeouts, tls: rustls::ClientConfig) -> OriginClient {
    let connector = crate::tls::origin_connector(timeouts.connect, tls);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(timeouts.idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// Who sent a request, as `X-Forwarded-*` tells the origin.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The listener's scheme: `http` or `https`.
    pub scheme: &'static str,
}

/// Sends `req` to the route's origin and returns its response head; the body streams on.
///
/// `origin_response` bounds the origin's silence: before the response head, counted from the end
/// of the upload (so a long upload is not cut short), and between two chunks of the response
/// body.
pub async fn forward(
    client: &OriginClient,
    route: &Route,
    req: Request<Incoming>,
    from: Peer,
    authority: Option<&Authority>,
    timeouts: &Timeouts,
) -> Result<Response<Download>, GatewayError> {
    let origin_response = timeouts.origin_response;
    let (mut parts, body) = req.into_parts();
    // A pooled HTTP/1.1 connection is to the origin itself: origin form. hyper-util's client
    // picks the connection by the URI, and writes origin form itself.
    parts.uri = upstream_uri(route, &parts.uri, route.pool.is_none())?;
    // Whatever the client spoke to us: HTTP/1.1 to the origin, or HTTP/2 where the origin's
    // ALPN chose it (the client switches on its own; HTTP_11 here does not pin it).
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let authority = authority.and_then(|a| header_value_of(a, &parts.headers));
    add_forwarded(&mut parts.headers, from, authority.clone());
    let host = match authority {
        Some(a) if route.preserve_host => a,
        _ => route.origin_host.clone(),
    };
    parts.headers.insert(header::HOST, host);

    let (upload, sent) = Upload::new(body);
    let origin = || route.origin.to_string();
    let request = Request::from_parts(parts, upload);
    let response = async {
        match &route.pool {
            Some(pool) => match pool.send(request).await {
                Ok((response, lease)) => Ok((response, Some(lease))),
                Err(err) => Err(pool_failure(err, origin())),
            },
            None => match client.request(request).await {
                Ok(response) => Ok((response, None)),
                Err(err) => Err(classify(err, origin(), timeouts.connect)),
            },
        }
    };
    tokio::pin!(response);
    let deadline = async {
        // Resolves when the upload ends, fails or is dropped: the origin's turn starts.
        if let Some(sent) = sent {
            let _ = sent.await;
        }
        tokio::time::sleep(origin_response).await;
    };
    let (response, lease) = tokio::select! {
        biased;
        r = &mut response => r?,
        () = deadline => return Err(GatewayError::OriginTimeout { origin: origin(), timeout: origin_response }),
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(
        parts,
        Download::new(body, origin_response, lease),
    ))
}

/// `authority` as a header value: the request's own `Host` value when it says the same (a
/// shared, copy-free clone, the usual HTTP/1.1 case), else a copy.
fn header_value_of(authority: &Authority, headers: &HeaderMap) -> Option<HeaderValue> {
    match headers.get(header::HOST) {
        Some(host) if host.as_bytes() == authority.as_str().as_bytes() => Some(host.clone()),
        _ => HeaderValue::from_str(authority.as_str()).ok(),
    }
}

/// `origin + path prefix + the request's path and query`, bytes untouched; without the origin
/// unless `absolute`.
fn upstream_uri(route: &Route, uri: &Uri, absolute: bool) -> Result<Uri, GatewayError> {
    let Some(pq) = uri.path_and_query() else {
        return Err(GatewayError::NoPath(uri.to_string()));
    };
    // `OPTIONS *` style targets have no leading '/'; nothing else reaches here without one.
    if !pq.as_str().starts_with('/') {
        return Err(GatewayError::NoPath(uri.to_string()));
    }
    let prefix = &route.origin.path_prefix;
    let pq = if prefix.is_empty() {
        pq.clone()
    } else {
        PathAndQuery::try_from(format!("{prefix}{}", pq.as_str()))
            .map_err(|_| GatewayError::NoPath(uri.to_string()))?
    };
    if !absolute {
        return Ok(Uri::from(pq));
    }
    Uri::builder()
        .scheme(route.origin.scheme.clone())
        .authority(route.origin.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|_| GatewayError::NoPath(uri.to_string()))
}

/// The hop-by-hop headers of RFC 9110 §7.6.1 (and the obsolete `Keep-Alive` and
/// `Proxy-Connection`).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The hop-by-hop headers, and those the `Connection` header names: they concern one
/// connection, not the message, and are removed in both directions.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names they have is cheaper than looking up
    // (hashing) each of the nine names they might have.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// `X-Forwarded-For` gets the client appended (earlier proxies' entries kept);
/// `X-Forwarded-Proto` and `-Host` say what this gateway saw, replacing anything the client
/// claimed.
fn add_forwarded(headers: &mut HeaderMap, from: Peer, authority: Option<HeaderValue>) {
    let ip = ip_value(from.addr.ip());
    let xff = match headers.get(X_FORWARDED_FOR) {
        None => ip,
        Some(_) => {
            let mut joined: Vec<u8> = Vec::new();
            for v in headers.get_all(X_FORWARDED_FOR) {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(ip.as_ref().map_or(&b""[..], |ip| ip.as_bytes()));
            HeaderValue::from_bytes(&joined).ok()
        }
    };
    if let Some(xff) = xff {
        headers.insert(X_FORWARDED_FOR, xff);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(from.scheme));
    match authority {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// `ip` as a header value. IPv4 is written by hand: this runs on every forwarded request, and
/// the formatting machinery costs more than the rest of the `X-Forwarded-*` work together.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).ok();
    };
    let mut text = ArrayVec::<u8, 15>::new();
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        if octet >= 100 {
            text.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            text.push(b'0' + octet / 10 % 10);
        }
        text.push(b'0' + octet % 10);
    }
    HeaderValue::from_bytes(&text).ok()
}

fn classify(
    err: hyper_util::client::legacy::Error,
    origin: String,
    connect_timeout: Duration,
) -> GatewayError {
    if err.is_connect() {
        let timed_out = sources(&err).any(|e| {
            e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::TimedOut)
        });
        if timed_out {
            return GatewayError::OriginConnectTimeout {
                origin,
                timeout: connect_timeout,
            };
        }
        return GatewayError::OriginUnreachable {
            origin,
            cause: Box::new(ConnectFailed::of(&err)),
        };
    }
    GatewayError::OriginFailed {
        origin,
        cause: Box::new(err),
    }
}

fn pool_failure(err: PoolError, origin: String) -> GatewayError {
    match err {
        PoolError::ConnectTimeout(timeout) => {
            GatewayError::OriginConnectTimeout { origin, timeout }
        }
        PoolError::Connect(err) => GatewayError::OriginUnreachable {
            origin,
            cause: Box::new(err),
        },
        PoolError::Http(err) => GatewayError::OriginFailed {
            origin,
            cause: Box::new(err),
        },
    }
}

/// Why no connection to the origin could be made, in full: hyper-util's own message is only
/// "client error (Connect)", and what an operator needs (refused, DNS, the TLS certificate
/// error) is further down the chain.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConnectFailed(String);

impl ConnectFailed {
    fn of(err: &hyper_util::client::legacy::Error) -> ConnectFailed {
        let mut messages: Vec<String> = Vec::new();
        for e in sources(err) {
            let message = e.to_string();
            // io::Error repeats its inner error's message as its own.
            if messages.last() != Some(&message) {
                messages.push(message);
            }
        }
        ConnectFailed(messages.join(": "))
    }
}

fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

/// The client's request body on its way to the origin; says when it has been sent in full.
pub struct Upload {
    inner: Incoming,
    sent: Option<oneshot::Sender<()>>,
}

impl Upload {
    /// The receiver resolves once the body is sent; `None` when there is none to send (no
    /// channel for the usual `GET`).
    fn new(inner: Incoming) -> (Upload, Option<oneshot::Receiver<()>>) {
        if inner.is_end_stream() {
            return (Upload { inner, sent: None }, None);
        }
        let (tx, rx) = oneshot::channel();
        let upload = Upload {
            inner,
            sent: Some(tx),
        };
        (upload, Some(rx))
    }

    fn finish(&mut self) {
        if let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
    }
}

impl HttpBody for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) || self.inner.is_end_stream() {
            self.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The origin's response body on its way to the client; fails when the origin stalls longer
/// than `origin_response` between two chunks, so a hung origin cannot pin a connection forever.
pub struct Download {
    inner: Incoming,
    /// The pooled connection the body arrives on, returned once the body is complete.
    lease: Option<Lease>,
    /// Made on the first wait: a body that is all there when first polled (most small ones)
    /// never needs a timer.
    stall: Option<Pin<Box<Sleep>>>,
    limit: Duration,
    /// The last poll found nothing: the stall clock is running. It only runs while we wait for
    /// the origin, never while the client is slow to read.
    waiting: bool,
}

/// The origin stopped sending in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("the origin sent nothing for {0:?} in the middle of a response body")]
pub struct OriginStalled(Duration);

impl Download {
    fn new(inner: Incoming, limit: Duration, mut lease: Option<Lease>) -> Download {
        // An empty body (HEAD, 204, 304) may never be polled: its connection is free now.
        if inner.is_end_stream()
            && let Some(lease) = lease.take()
        {
            lease.release();
        }
        Download {
            inner,
            lease,
            stall: None,
            limit,
            waiting: false,
        }
    }
}

impl HttpBody for Download {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.waiting = false;
                let complete = match &frame {
                    None => true,
                    Some(Ok(_)) => self.inner.is_end_stream(),
                    // The connection is broken: the lease drops with the body, closing it.
                    Some(Err(_)) => false,
                };
                if complete && let Some(lease) = self.lease.take() {
                    lease.release();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let this = &mut *self;
                let deadline = || Instant::now() + this.limit;
                let stall = match &mut this.stall {
                    Some(stall) if this.waiting => stall,
                    Some(stall) => {
                        stall.as_mut().reset(deadline());
                        stall
                    }
                    None => this
                        .stall
                        .insert(Box::pin(tokio::time::sleep_until(deadline()))),
                };
                this.waiting = true;
                ready!(stall.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(OriginStalled(self.limit)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_in_their_standard_text_form() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = text.parse().expect("test address");
            let value = ip_value(ip).expect("an address is a valid header value");
            assert_eq!(value.as_bytes(), ip.to_string().as_bytes(), "{text}");
        }
    }
}
