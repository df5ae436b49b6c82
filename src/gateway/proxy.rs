//! Forwarding to the origin: the route's own pool of HTTP/1.1 connections for plain-HTTP
//! origins ([`super::pool`]), hyper-util's pooled client for HTTPS ones (TLS through rustls, with
//! HTTP/2 or HTTP/1.1 as ALPN agrees), both under the route's cap on origin connections; bodies
//! streamed both ways (never buffered, so a multi-GiB object passes with flat memory);
//! hop-by-hop headers removed, then the forwarding headers written ([`forwarding`]); `Host`
//! preserved or rewritten per route; path and query forwarded byte for byte; every failure
//! turned into a typed [`GatewayError`].
//!
//! Once a request is in flight, two deadlines keep either side from holding it (and an origin
//! connection) for ever, both measured as silence, never as a total, so a long transfer of a
//! large object is never cut:
//!
//! - `timeouts.body_read`: the client's silence while its body is read ([`Upload`]). A request
//!   without a body never arms this timer; one with a body arms it only when the body is not
//!   already there when wanted.
//! - `timeouts.origin_response`: the origin's silence from the moment the request is sent:
//!   while it takes none of the upload it was given, before the response head, and between two
//!   chunks of the response body ([`Download`]).
//!
//! A route with `sign` sends its origin a request of its own making: the client's credentials
//! (SigV4 headers, a presigned URL's query parameters) removed, the target spelled as S3 signs
//! it ([`crate::s3::target`]), and corsgate's signature added. An origin refusing that
//! signature is corsgate's problem, not the client's: its 4xx becomes a 502
//! ([`GatewayError::SignatureRefused`]) after a look at the start of the body.
//!
//! CORS is not this module's business: the caller decorates whatever comes back.

mod forwarding;

pub use forwarding::TrustedProxies;

pub(crate) use forwarding::{client_scheme, strip_hop_by_hop};

use forwarding::Forwarding;

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::Body;
use super::body::{Silence, Turn, Upload};
use super::error::GatewayError;
use super::pool::{
    Lease, NoFreeConnection, OriginBody, OriginNotReading, OriginPool, OriginSlots, PoolError,
    SlotConnector, WireError,
};
use super::route::{OriginLink, Route};
use crate::config::Timeouts;
use crate::s3::error_body::S3ErrorBody;
use crate::s3::{OriginSigner, signed_target, strip_credentials};

/// The pooled client an HTTPS route forwards through, its TCP connections under the route's cap.
pub(crate) type OriginClient = Client<HttpsConnector<SlotConnector>, Upload>;

/// `tls` verifies `https://` origins; every connection made holds one of `slots`.
pub(crate) fn origin_client(
    timeouts: &Timeouts,
    tls: rustls::ClientConfig,
    slots: OriginSlots,
) -> OriginClient {
    let tcp = SlotConnector::new(
        crate::tls::tcp_connector(timeouts.connect),
        slots,
        timeouts.origin_response,
    );
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(timeouts.idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(crate::tls::https_connector(tcp, tls))
}

/// Who sent a request, as the forwarding headers tell the origin.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The listener's scheme: `http` or `https`.
    pub scheme: &'static str,
}

/// Sends `req` to the route's origin and returns its response head; the body streams on.
///
/// A signing route's request is signed for the origin; an origin's 400/403 to it is read up to
/// [`REFUSAL_PREFIX`] bytes, and fails with `SignatureRefused` when S3 says the signature or
/// the keys are wrong. Fails with `OriginTimeout` once the origin has been silent for `origin_response` before the
/// head (the clock starts when forwarding starts, and restarts whenever the origin takes a
/// piece of the upload; it stops while the upload waits for the client), with
/// `ClientBodyTimeout` once the client has been silent for `body_read` in the middle of its
/// body, and with `OriginBusy` when no origin connection came free within `timeouts.connect`.
pub async fn forward(
    route: &Route,
    req: Request<Incoming>,
    from: Peer,
    authority: Option<&Authority>,
    timeouts: &Timeouts,
) -> Result<Response<Body>, GatewayError> {
    let origin_response = timeouts.origin_response;
    let (mut parts, body) = req.into_parts();
    // A pooled HTTP/1.1 connection is to the origin itself: origin form. hyper-util's client
    // picks the connection by the URI, and writes origin form itself.
    let absolute = matches!(route.link, OriginLink::Https(_));
    parts.uri = upstream_uri(route, &parts.method, &parts.uri, absolute)?;
    // Whatever the client spoke to us: HTTP/1.1 to the origin, or HTTP/2 where the origin's
    // ALPN chose it (the client switches on its own; HTTP_11 here does not pin it).
    parts.version = Version::HTTP_11;
    // First: nothing a `Connection` header names can remove what is written next.
    forwarding::strip_request_hop_by_hop(&mut parts.headers);
    if route.signer.is_some() {
        strip_credentials(&mut parts.headers);
    }
    let authority = authority.and_then(|a| header_value_of(a, &parts.headers));
    let forwarding = Forwarding::new(
        &parts.headers,
        from,
        &route.trusted_proxies,
        authority.clone(),
    );
    forwarding.clear_claims(&mut parts.headers);
    let host = match authority {
        Some(a) if route.preserve_host => a,
        _ => route.origin_host.clone(),
    };
    parts.headers.insert(header::HOST, host);

    let started = Instant::now();
    let (upload, turn) = Upload::new(body, timeouts.body_read, started);
    // The usual GET or HEAD to a plain-HTTP origin is sent by corsgate's own client, which
    // writes the forwarding headers straight into the head it renders.
    let own_client = match &route.link {
        OriginLink::Plain(pool) if OriginPool::is_bodyless(&parts, &upload) => Some(pool),
        _ => None,
    };
    if own_client.is_none() {
        forwarding.insert_into(&mut parts.headers);
    }
    // Last: the signature covers the `Host` and the target exactly as they are sent.
    if let Some(signer) = &route.signer {
        signer
            .sign(
                &parts.method,
                &parts.uri,
                &mut parts.headers,
                SystemTime::now(),
            )
            .map_err(|error| GatewayError::Signing {
                route: route.index,
                error,
            })?;
    }
    let method = parts.method.clone();

    let origin = || route.origin.to_string();
    let (response, lease) = match own_client {
        // It watches the origin's silence before the head itself, on the connection's timer.
        Some(pool) => {
            let lines = |out: &mut Vec<u8>| forwarding.write_lines(out);
            match pool
                .send_bodyless(parts, lines, started + origin_response)
                .await
            {
                Ok(response) => (response.map(OriginBody::Wire), None),
                Err(err) => return Err(pool_failure(err, origin())),
            }
        }
        None => {
            let request = Request::from_parts(parts, upload);
            watched(route, request, turn, started, timeouts).await?
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Download::new(body, origin_response, lease);
    match &route.signer {
        // HEAD has no body to tell why: its 403 goes to the client as it came.
        Some(signer)
            if method != Method::HEAD
                && matches!(
                    parts.status,
                    StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN
                ) =>
        {
            // Boxed, as it is rare: its state would otherwise enlarge every request's future.
            let body = Box::pin(screen_refusal(route, signer, body)).await?;
            Ok(Response::from_parts(parts, body))
        }
        _ => Ok(Response::from_parts(parts, body.boxed())),
    }
}

/// Sends `request` through hyper (an upload, or any request to an HTTPS origin) and returns
/// the response head, failing once the origin has been silent for `origin_response`: counted
/// from `started`, and restarted whenever the origin takes a piece of the upload (`turn`).
async fn watched(
    route: &Route,
    request: Request<Upload>,
    turn: Option<Arc<Turn>>,
    started: Instant,
    timeouts: &Timeouts,
) -> Result<(Response<OriginBody>, Option<Lease>), GatewayError> {
    let origin_response = timeouts.origin_response;
    let origin = || route.origin.to_string();
    let response = async {
        match &route.link {
            OriginLink::Plain(pool) => match pool.send(request).await {
                Ok((response, lease)) => Ok((response.map(OriginBody::Hyper), Some(lease))),
                Err(err) => Err(pool_failure(err, origin())),
            },
            OriginLink::Https(client) => match client.request(request).await {
                Ok(response) => Ok((response.map(OriginBody::Hyper), None)),
                Err(err) => Err(classify(err, origin(), timeouts.connect)),
            },
        }
    };
    tokio::pin!(response);
    // One timer, moved on lazily: when it fires, it is set again to the end of the origin's
    // current silence, which began at the last piece of upload the origin took.
    let silence = tokio::time::sleep_until(started + origin_response);
    tokio::pin!(silence);
    let answered = loop {
        tokio::select! {
            biased;
            r = &mut response => break r,
            () = &mut silence => {
                let since = match &turn {
                    None => Some(started),
                    Some(turn) => turn.origin_since(),
                };
                let now = Instant::now();
                match since {
                    Some(since) if now >= since + origin_response => {
                        return Err(GatewayError::OriginTimeout {
                            origin: origin(),
                            timeout: origin_response,
                        });
                    }
                    Some(since) => silence.as_mut().reset(since + origin_response),
                    // The client's turn: `body_read` watches it.
                    None => silence.as_mut().reset(now + origin_response),
                }
            }
        }
    };
    match answered {
        Ok(answered) => Ok(answered),
        // However the abort surfaced (a body error, a reset stream), the cause is the client.
        Err(_) if turn.as_ref().is_some_and(|t| t.client_stalled()) => {
            Err(GatewayError::ClientBodyTimeout {
                timeout: timeouts.body_read,
            })
        }
        Err(err) => Err(err),
    }
}

/// How much of an origin's 400/403 body is read to find its S3 error code: S3's `<Code>` comes
/// first, well within it.
pub(crate) const REFUSAL_PREFIX: usize = 4096;

/// The S3 error codes that mean the origin refused corsgate's own signature or keys: a wrong
/// secret, an unknown or revoked key, a bad or expired session token, a wrong region.
const SIGNATURE_REFUSALS: [&str; 5] = [
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
];

/// Reads the start of a refusal's body; fails with `SignatureRefused` when it is one of
/// [`SIGNATURE_REFUSALS`], else hands the body back whole, the part read first.
async fn screen_refusal(
    route: &Route,
    signer: &OriginSigner,
    mut body: Download,
) -> Result<Body, GatewayError> {
    let mut read: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut prefix: Vec<u8> = Vec::new();
    let mut ended = body.is_end_stream();
    while !ended && prefix.len() < REFUSAL_PREFIX {
        match body.frame().await {
            None => ended = true,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = REFUSAL_PREFIX - prefix.len();
                    prefix.extend_from_slice(&data[..data.len().min(room)]);
                }
                ended = body.is_end_stream();
                read.push_back(frame);
            }
            Some(Err(cause)) => {
                let origin = route.origin.to_string();
                return Err(match cause.downcast_ref::<OriginStalled>() {
                    Some(OriginStalled(timeout)) => GatewayError::OriginTimeout {
                        origin,
                        timeout: *timeout,
                    },
                    None => failed(origin, cause),
                });
            }
        }
    }
    let code = S3ErrorBody::parse(&prefix).code;
    if SIGNATURE_REFUSALS.contains(&code.as_str()) {
        return Err(GatewayError::SignatureRefused {
            route: route.index,
            origin: route.origin.to_string(),
            code,
            keys: signer.describe(),
        });
    }
    let rest = (!ended).then_some(body);
    Ok(Replay { read, rest }.boxed())
}

/// A body of which the first frames were already read: those, then the rest.
struct Replay {
    read: VecDeque<Frame<Bytes>>,
    rest: Option<Download>,
}

impl HttpBody for Replay {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(frame) = self.read.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self
            .read
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.len() as u64)
            .sum();
        let mut hint = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint);
        hint.set_lower(hint.lower() + read);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

/// `authority` as a header value: the request's own `Host` value when it says the same (a
/// shared, copy-free clone, the usual HTTP/1.1 case), else a copy.
fn header_value_of(authority: &Authority, headers: &HeaderMap) -> Option<HeaderValue> {
    match headers.get(header::HOST) {
        Some(host) if host.as_bytes() == authority.as_str().as_bytes() => Some(host.clone()),
        _ => HeaderValue::from_str(authority.as_str()).ok(),
    }
}

/// `origin + path prefix + the request's path [+ index] and query`, bytes untouched (in S3's
/// canonical spelling on a signing route, see [`signed_target`]); without the origin unless
/// `absolute`.
fn upstream_uri(
    route: &Route,
    method: &Method,
    uri: &Uri,
    absolute: bool,
) -> Result<Uri, GatewayError> {
    let Some(pq) = uri.path_and_query() else {
        return Err(GatewayError::NoPath(uri.to_string()));
    };
    // `OPTIONS *` style targets have no leading '/'; nothing else reaches here without one.
    if !pq.as_str().starts_with('/') {
        return Err(GatewayError::NoPath(uri.to_string()));
    }
    let prefix = &route.origin.path_prefix;
    let index = route
        .index_file
        .as_deref()
        .filter(|_| (method == Method::GET || method == Method::HEAD) && uri.path().ends_with('/'));
    let rebuilt = if route.signer.is_some() {
        let path = format!("{prefix}{}{}", uri.path(), index.unwrap_or(""));
        Some(signed_target(&path, uri.query()))
    } else if !prefix.is_empty() || index.is_some() {
        let mut text = format!("{prefix}{}{}", uri.path(), index.unwrap_or(""));
        if let Some(query) = uri.query() {
            text.push('?');
            text.push_str(query);
        }
        Some(text)
    } else {
        None
    };
    let pq = match rebuilt {
        None => pq.clone(),
        Some(text) => {
            PathAndQuery::try_from(text).map_err(|_| GatewayError::NoPath(uri.to_string()))?
        }
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

fn classify(
    err: hyper_util::client::legacy::Error,
    origin: String,
    connect_timeout: Duration,
) -> GatewayError {
    if err.is_connect() {
        if let Some(busy) = sources(&err).find_map(|e| e.downcast_ref::<NoFreeConnection>()) {
            return GatewayError::OriginBusy {
                origin,
                limit: busy.limit,
                waited: busy.waited,
            };
        }
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
    failed(origin, Box::new(err))
}

/// A connection that broke while the request was on it: an origin that stopped reading the
/// upload (see `OriginIo`) timed out; anything else failed.
fn failed(origin: String, cause: Box<dyn StdError + Send + Sync>) -> GatewayError {
    let not_reading = sources(&*cause).find_map(|e| {
        e.downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|e| e.downcast_ref::<OriginNotReading>())
    });
    match not_reading {
        Some(OriginNotReading(timeout)) => GatewayError::OriginTimeout {
            origin,
            timeout: *timeout,
        },
        None => GatewayError::OriginFailed { origin, cause },
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
        PoolError::Busy(busy) => GatewayError::OriginBusy {
            origin,
            limit: busy.limit,
            waited: busy.waited,
        },
        PoolError::Http(err) => failed(origin, Box::new(err)),
        PoolError::Wire(WireError::HeadTimeout(timeout)) => {
            GatewayError::OriginTimeout { origin, timeout }
        }
        PoolError::Wire(err) => failed(origin, Box::new(err)),
    }
}

/// Why no connection to the origin could be made, in full: hyper-util's own message is only
/// "client error (Connect)", and what an operator needs (refused, DNS, the TLS certificate
/// error) is further down the chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct ConnectFailed {
    message: String,
    /// The TLS handshake failed (metrics tell it from a connection that was never made).
    tls: bool,
}

impl ConnectFailed {
    fn of(err: &hyper_util::client::legacy::Error) -> ConnectFailed {
        let mut messages: Vec<String> = Vec::new();
        let mut tls = false;
        for e in sources(err) {
            tls |= is_rustls(e);
            let message = e.to_string();
            // io::Error repeats its inner error's message as its own.
            if messages.last() != Some(&message) {
                messages.push(message);
            }
        }
        ConnectFailed {
            message: messages.join(": "),
            tls,
        }
    }
}

/// Whether `err` is rustls's, perhaps wrapped in `io::Error`s (as tokio-rustls and
/// hyper-rustls hand it on, one inside the other): `source()` skips the error an `io::Error`
/// wraps, so each is unwrapped by hand.
fn is_rustls(mut err: &(dyn StdError + 'static)) -> bool {
    loop {
        if err.is::<rustls::Error>() {
            return true;
        }
        match err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => err = inner,
            None => return false,
        }
    }
}

/// Whether `err` is a failed TLS handshake with an `https://` origin.
pub(super) fn is_tls_failure(err: &GatewayError) -> bool {
    match err {
        GatewayError::OriginUnreachable { cause, .. } => cause
            .downcast_ref::<ConnectFailed>()
            .is_some_and(|failed| failed.tls),
        _ => false,
    }
}

fn sources<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| e.source())
}

/// The origin's response body on its way to the client; fails when the origin stalls longer
/// than `origin_response` between two chunks, so a hung origin cannot pin a connection forever.
pub struct Download {
    inner: OriginBody,
    /// The pooled hyper connection the body arrives on, returned once the body is complete (a
    /// body read by corsgate's own client returns its connection itself, at the same point).
    lease: Option<Lease>,
    /// The origin's: it runs only while we wait for the origin, never while the client is slow
    /// to read.
    silence: Silence,
}

/// The origin stopped sending in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("the origin sent nothing for {0:?} in the middle of a response body")]
pub(crate) struct OriginStalled(Duration);

impl Download {
    fn new(inner: OriginBody, limit: Duration, mut lease: Option<Lease>) -> Download {
        // An empty body (HEAD, 204, 304) may never be polled: its connection is free now.
        if inner.is_end_stream()
            && let Some(lease) = lease.take()
        {
            lease.release();
        }
        Download {
            inner,
            lease,
            silence: Silence::new(limit),
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
                self.silence.progressed();
                let complete = match &frame {
                    None => true,
                    Some(Ok(_)) => self.inner.is_end_stream(),
                    // The connection is broken: the lease drops with the body, closing it.
                    Some(Err(_)) => false,
                };
                if complete && let Some(lease) = self.lease.take() {
                    lease.release();
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                ready!(self.silence.poll_expired(cx));
                let limit = self.silence.limit();
                Poll::Ready(Some(Err(Box::new(OriginStalled(limit)))))
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
