//! corsgate's own HTTP/1.1 client, for the requests without a body (GET and HEAD to a bucket,
//! nearly all the traffic) to a plain-HTTP origin.
//!
//! hyper's client connection runs as a task of its own: every request crosses to it through a
//! channel, is written by one pass of its dispatcher, and its response is parsed into hyper's
//! structures and crosses back, waking the request's task a second time. For a small GET that
//! hand-off and those passes cost more than the rest of the proxying. Here the request's own task
//! writes the head (rendered once into the connection's buffer, in one write) and reads the
//! answer: the head parsed once by `httparse`, its header values slices of the one buffer it was
//! read into, its field names shared with the connection's last answer where spelled the same
//! ([`KnownNames`]), the body split off that same buffer as it arrives ([`super::framing`]).
//!
//! What it handles: a request head without a body, and any response an HTTP/1.1 origin may send
//! (1xx interim answers skipped, the body framed as RFC 9112 §6.3 says, trailers passed on).
//! What it does not: request bodies (uploads go through hyper, which streams them and handles
//! `100-continue` and an origin answering early), TLS, HTTP/2, upgrades, pipelining. An answer
//! that leaves any doubt about where the next one starts (close-delimited, both framings, bytes
//! after the body, HTTP/1.0) closes its connection instead of returning it to the pool.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arrayvec::ArrayVec;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version, request};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::framing::{Decoded, Decoder, Framing, FramingError};
use super::{OriginIo, OriginPool};
use crate::cors::header::{list_contains, list_ends_with};

/// Most header fields in a response head: hyper's client default.
pub(super) const MAX_HEADERS: usize = 100;
/// Largest response head: hyper's client reads at most its default buffer size while looking
/// for the end of a head.
pub(super) const MAX_HEAD: usize = 8192 + 4096 * 100;
/// First size of a read; doubled while reads fill it, up to [`MAX_READ`], as hyper does.
const INIT_READ: usize = 8192;
const MAX_READ: usize = MAX_HEAD;
/// Largest read buffer an idle connection keeps: one that grew for a large body is let go, or
/// a pool of idle connections would hold hundreds of KiB each.
const MAX_IDLE_BUFFER: usize = 64 * 1024;

/// What an origin did wrong on the wire, or what broke under it.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(
        "the origin's response head is not HTTP/1.1 ({0}): check that the origin URL names an \
         HTTP server"
    )]
    MalformedHead(&'static str),
    #[error("the origin's response head has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the origin's response head is longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the origin sent a Content-Length that is not one decimal number")]
    InvalidContentLength,
    #[error("the origin sent Transfer-Encoding in an HTTP/1.0 response, which has no such thing")]
    TransferEncodingInHttp10,
    #[error("the origin answered 101 Switching Protocols to a request that asked for no upgrade")]
    UnexpectedUpgrade,
    #[error("the origin closed the connection before a complete response head")]
    ClosedBeforeHead,
    #[error(
        "the origin sent no response head within {0:?} of the request being forwarded \
         (timeouts.origin_response)"
    )]
    HeadTimeout(Duration),
    #[error("the origin closed the connection before the end of the response body")]
    ClosedMidBody,
    #[error(transparent)]
    Framing(#[from] FramingError),
    #[error("writing the request to the origin failed: {0}")]
    Write(#[source] io::Error),
    #[error("reading from the origin failed: {0}")]
    Read(#[source] io::Error),
}

/// A failed exchange, and whether the request may be sent again on another connection.
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) error: WireError,
    /// The request head, rendered, to send on another connection.
    pub(super) rendered: Vec<u8>,
    /// Nothing of the request was written.
    unwritten: bool,
    /// Nothing of a response came back before the connection ended.
    unanswered: bool,
}

impl Failed {
    fn new(error: WireError, unwritten: bool, unanswered: bool) -> Failed {
        Failed {
            error,
            rendered: Vec::new(),
            unwritten,
            unanswered,
        }
    }

    fn with_head(mut self, rendered: Vec<u8>) -> Failed {
        self.rendered = rendered;
        self
    }

    /// A request a reused connection failed may go again when it never left, or when the
    /// connection died before answering and the method may be repeated (RFC 9110 §9.2.2): the
    /// origin closed a keep-alive connection as the request went out.
    pub(super) fn may_retry(&self, method: &Method) -> bool {
        self.unwritten || (self.unanswered && method_is_idempotent(method))
    }
}

fn method_is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether a request with these fields (and its body already at its end) is one this client
/// sends: one that announces no body either.
pub(super) fn is_bodyless(headers: &HeaderMap) -> bool {
    // Most requests have neither field: one pass over the names they have is cheaper than
    // looking up (hashing) the two.
    let announces =
        |name: &HeaderName| *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING;
    if !headers.keys().any(announces) {
        return true;
    }
    !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes() == b"0")
}

/// One HTTP/1.1 connection to the origin, with its buffers.
pub(super) struct Connection {
    io: OriginIo<TcpStream>,
    /// The request head being written; kept for the next request's.
    out: Vec<u8>,
    /// How much of `out` is written.
    sent: usize,
    /// What was read and not used yet.
    buf: BytesMut,
    read: ReadSize,
    /// Some of the answer to the current request has arrived (perhaps only an interim one).
    heard: bool,
    /// The field names of the last answer.
    names: KnownNames,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Whether an idle connection can take a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Liveness {
    Alive,
    /// Closed by the origin, or sent something nobody asked for.
    Unusable,
}

/// What the front of the read buffer holds.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim (1xx) response, now taken off the buffer.
    Interim,
    Final(Head),
}

/// The parts of a final response head the body needs.
struct Head {
    response: Response<()>,
    framing: Framing,
    /// The connection may carry another request once this body is read.
    keep_alive: bool,
}

impl Connection {
    pub(super) fn new(io: OriginIo<TcpStream>) -> Connection {
        Connection {
            io,
            out: Vec::new(),
            sent: 0,
            buf: BytesMut::new(),
            read: ReadSize::default(),
            heard: false,
            names: KnownNames::default(),
        }
    }

    /// Made ready to wait in the pool: a read buffer grown for a large body is dropped (its
    /// memory is freed once the client has been sent the last of it) and reads start small
    /// again.
    fn idle(&mut self) {
        if self.buf.capacity() > MAX_IDLE_BUFFER {
            self.buf = BytesMut::new();
            self.read = ReadSize::default();
        }
    }

    /// Without waiting: an idle connection the origin closed (or wrote to) is not used again.
    /// tokio reports no readiness for a quiet socket and then does not even ask the kernel.
    pub(super) fn liveness(&self) -> Liveness {
        if !self.buf.is_empty() {
            return Liveness::Unusable;
        }
        let mut probe = [0u8; 1];
        match self.io.io.try_read(&mut probe) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Liveness::Alive,
            _ => Liveness::Unusable,
        }
    }

    /// Writes the request head [`Connection::render`]ed (or [`Connection::resume`]d) and reads
    /// the response head, complete by `deadline`, into `fields` (empty: its allocation is
    /// reused, as hyper's client reuses the request's map for the response); the body is read
    /// by the [`WireBody`] this connection moves into. A failure hands the rendered head back,
    /// for another connection.
    pub(super) async fn exchange(
        mut self: Box<Self>,
        method: &Method,
        fields: &mut HeaderMap,
        deadline: Instant,
        pool: &Arc<OriginPool>,
    ) -> Result<Response<WireBody>, Failed> {
        if let Err(failed) = std::future::poll_fn(|cx| self.poll_write_head(cx)).await {
            return Err(failed.with_head(self.out));
        }
        self.heard = false;
        let is_head = *method == Method::HEAD;
        let head =
            match std::future::poll_fn(|cx| self.poll_head(cx, is_head, fields, deadline)).await {
                Ok(head) => head,
                Err(failed) => return Err(failed.with_head(self.out)),
            };
        let (parts, ()) = head.response.into_parts();
        let body = WireBody::new(self, head.framing, head.keep_alive, pool);
        Ok(Response::from_parts(parts, body))
    }

    /// A head rendered for a connection that failed before answering, to send on this one.
    pub(super) fn resume(&mut self, rendered: Vec<u8>) {
        self.out = rendered;
        self.sent = 0;
    }

    /// Renders the request head ([`render_head`]) to be written next.
    pub(super) fn render(&mut self, parts: &request::Parts, more_fields: impl Fn(&mut Vec<u8>)) {
        self.sent = 0;
        render_head(&mut self.out, parts, more_fields);
    }

    /// Writes the whole head; a write the origin makes no room for fails after
    /// `origin_response` ([`OriginIo`]).
    fn poll_write_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        while self.sent < self.out.len() {
            let io = &mut self.io;
            let write = Pin::new(&mut io.io).poll_write(cx, &self.out[self.sent..]);
            let error = match ready!(io.timed(cx, write)) {
                Ok(0) => io::ErrorKind::WriteZero.into(),
                Ok(n) => {
                    self.sent += n;
                    continue;
                }
                Err(err) => err,
            };
            return Poll::Ready(Err(Failed::new(
                WireError::Write(error),
                self.sent == 0,
                true,
            )));
        }
        Poll::Ready(Ok(()))
    }

    /// Reads until a final response head is complete (1xx interim ones skipped).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        is_head: bool,
        fields: &mut HeaderMap,
        deadline: Instant,
    ) -> Poll<Result<Head, Failed>> {
        loop {
            if !self.buf.is_empty() {
                self.heard = true;
                match parse_head_with(&mut self.buf, is_head, fields, &mut self.names) {
                    Ok(Parsed::Final(head)) => return Poll::Ready(Ok(head)),
                    Ok(Parsed::Interim) => continue,
                    Ok(Parsed::Partial) => {}
                    Err(error) => return Poll::Ready(Err(answered_failure(error))),
                }
                if self.buf.len() >= MAX_HEAD {
                    return Poll::Ready(Err(answered_failure(WireError::HeadTooLarge)));
                }
            }
            let filled = match self.poll_fill(cx) {
                Poll::Ready(filled) => filled,
                Poll::Pending => {
                    // The origin's silence before the head, on the connection's own timer.
                    ready!(self.io.silence.poll_deadline(cx, deadline));
                    let limit = self.io.silence.limit();
                    return Poll::Ready(Err(answered_failure(WireError::HeadTimeout(limit))));
                }
            };
            match filled {
                Ok(0) => {
                    return Poll::Ready(Err(Failed::new(
                        WireError::ClosedBeforeHead,
                        false,
                        !self.heard,
                    )));
                }
                Ok(_) => {}
                Err(err) => {
                    let unanswered = !self.heard && is_reset(&err);
                    return Poll::Ready(Err(Failed::new(WireError::Read(err), false, unanswered)));
                }
            }
        }
    }

    /// Reads what the origin has sent into the buffer: the byte count, 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.buf.reserve(self.read.next);
        // tokio's `AsyncRead` path, not `try_read`: a read that leaves room in the buffer tells
        // tokio the socket is drained, so neither the wait for the next answer nor the idle
        // connection's `liveness` probe asks the kernel again before the origin sends more.
        let n = ready!(pin!(self.io.io.read_buf(&mut self.buf)).poll(cx))?;
        self.read.record(n);
        Poll::Ready(Ok(n))
    }
}

/// `METHOD SP origin-form SP HTTP/1.1 CRLF`, the fields as `forward` left them, the lines
/// `more_fields` writes, `CRLF`, into `out`: what hyper's client writes for a request whose body
/// is at its end (it adds no `Content-Length: 0` then, whatever the method).
pub(crate) fn render_head(
    out: &mut Vec<u8>,
    parts: &request::Parts,
    more_fields: impl Fn(&mut Vec<u8>),
) {
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    more_fields(out);
    out.extend_from_slice(b"\r\n");
}

/// The field names of a connection's last answer, as sent and as parsed. An origin answers with
/// the same names in the same order every time (a bucket: its `x-amz-*` ones with the rest): a
/// name sent as before is a clone of the one parsed then (for a name `http` does not know, a
/// reference count instead of an allocation and a copy). Bounded: the first [`KNOWN_NAMES`]
/// names, up to [`KNOWN_NAME_BYTES`] bytes of them.
#[derive(Debug, Default)]
pub(super) struct KnownNames {
    /// The names as the origin spelled them, one after another.
    spelled: Vec<u8>,
    /// Where each name ends in `spelled`, and the name.
    names: Vec<(usize, HeaderName)>,
}

const KNOWN_NAMES: usize = 32;
const KNOWN_NAME_BYTES: usize = 512;

impl KnownNames {
    /// The answer's field name number `i`, spelled `spelled`: the one remembered if the last
    /// answer spelled it the same, else parsed and remembered in its place (the names after it
    /// forgotten: from here on, this answer is not the last one again).
    fn name(&mut self, i: usize, spelled: &[u8]) -> Result<HeaderName, WireError> {
        let parse = |spelled| {
            HeaderName::from_bytes(spelled)
                .map_err(|_| WireError::MalformedHead("a header field name is not valid"))
        };
        // Past what the bounds let be remembered.
        if i > self.names.len() {
            return parse(spelled);
        }
        let start = i.checked_sub(1).map_or(0, |before| self.names[before].0);
        if let Some((end, name)) = self.names.get(i)
            && self.spelled[start..*end] == *spelled
        {
            return Ok(name.clone());
        }
        let name = parse(spelled)?;
        self.names.truncate(i);
        self.spelled.truncate(start);
        if i < KNOWN_NAMES && start + spelled.len() <= KNOWN_NAME_BYTES {
            self.spelled.extend_from_slice(spelled);
            self.names.push((self.spelled.len(), name.clone()));
        }
        Ok(name)
    }
}

/// The head at the front of the buffer, taken off it when complete, with nothing remembered of
/// earlier answers.
#[cfg(test)]
fn parse_head(
    buf: &mut BytesMut,
    is_head: bool,
    fields: &mut HeaderMap,
) -> Result<Parsed, WireError> {
    parse_head_with(buf, is_head, fields, &mut KnownNames::default())
}

/// The head at the front of the buffer, taken off it when complete; its field names looked up
/// in, and remembered in, `known`.
fn parse_head_with(
    buf: &mut BytesMut,
    is_head: bool,
    fields: &mut HeaderMap,
    known: &mut KnownNames,
) -> Result<Parsed, WireError> {
    let mut parsed = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    // Where each field's name and value lie in the head, to slice them once it is frozen
    // (not zeroed first: only the fields parsed are written).
    let mut spans: ArrayVec<[u32; 4], MAX_HEADERS> = ArrayVec::new();
    let mut response = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let (len, code, version, reason) =
        match config.parse_response_with_uninit_headers(&mut response, buf, &mut parsed) {
            Ok(httparse::Status::Complete(len)) => {
                let base = buf.as_ptr() as usize;
                for field in response.headers.iter() {
                    let name = field.name.as_ptr() as usize - base;
                    let value = field.value.as_ptr() as usize - base;
                    // The head is shorter than MAX_HEAD, far below u32::MAX; httparse filled at
                    // most the MAX_HEADERS places it was given.
                    spans
                        .try_push([
                            name as u32,
                            (name + field.name.len()) as u32,
                            value as u32,
                            (value + field.value.len()) as u32,
                        ])
                        .map_err(|_| WireError::TooManyHeaders)?;
                }
                let reason = response.reason.map_or(0..0, |reason| {
                    let at = reason.as_ptr() as usize - base;
                    at..at + reason.len()
                });
                (
                    len,
                    response.code.unwrap_or(0),
                    response.version.unwrap_or(1),
                    reason,
                )
            }
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => return Err(WireError::TooManyHeaders),
            Err(err) => return Err(WireError::MalformedHead(parse_error(err))),
        };
    if len > MAX_HEAD {
        return Err(WireError::HeadTooLarge);
    }
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code)
        .map_err(|_| WireError::MalformedHead("the status code is not a number"))?;
    // RFC 9110 §15.2: interim answers come before the final one, and hyper's client passes
    // over them too. 101 only answers a request that asked to upgrade, and none does.
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError::UnexpectedUpgrade);
    }
    if status.is_informational() {
        return Ok(Parsed::Interim);
    }
    let version = if version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let mut headers = std::mem::take(fields);
    headers.reserve(spans.len());
    let mut close = version == Version::HTTP_10;
    let mut transfer_encoding: Option<HeaderValue> = None;
    let mut lengths = Lengths::None;
    for (i, &[n0, n1, v0, v1]) in spans.iter().enumerate() {
        let name = known.name(i, &head[n0 as usize..n1 as usize])?;
        let value = head.slice(v0 as usize..v1 as usize);
        // SAFETY: httparse took this value only if every byte of it is HTAB, SP to `~`, or
        // obs-text (0x80 and up), and those are the bytes a `HeaderValue` may hold: checking
        // them again is a second pass over every value for nothing (hyper's server takes the
        // same step after httparse). Debug builds check it all the same.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(value) };
        if name == header::CONTENT_LENGTH {
            lengths = lengths.and(&value);
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding = Some(value.clone());
        } else if name == header::CONNECTION && list_contains(value.as_bytes(), b"close") {
            close = true;
        }
        headers.append(name, value);
    }
    // RFC 9112 §6.3, in its order; as hyper's client decides.
    let mut keep_alive = !close;
    let framing =
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED || is_head {
            Framing::Empty
        } else if let Some(te) = transfer_encoding {
            if version == Version::HTTP_10 {
                return Err(WireError::TransferEncodingInHttp10);
            }
            // Both framings: a sign of request smuggling on the way (§6.3 rule 3); read this
            // answer as the Transfer-Encoding says and trust the connection no further.
            if lengths != Lengths::None {
                keep_alive = false;
            }
            if list_ends_with(te.as_bytes(), b"chunked") {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            match lengths {
                Lengths::None => Framing::UntilClose,
                Lengths::One(n) => Framing::Length(n),
                Lengths::Invalid => return Err(WireError::InvalidContentLength),
            }
        };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    // hyper's client keeps a reason phrase that is not the standard one, and hyper's server
    // writes it to the client: so does this.
    let reason = &head[reason];
    if status.canonical_reason().map(str::as_bytes) != Some(reason)
        && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason)
    {
        response.extensions_mut().insert(reason);
    }
    Ok(Parsed::Final(Head {
        response,
        framing,
        keep_alive,
    }))
}

fn answered_failure(error: WireError) -> Failed {
    Failed::new(error, false, false)
}

fn is_reset(err: &io::Error) -> bool {
    use io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    matches!(err.kind(), BrokenPipe | ConnectionAborted | ConnectionReset)
}

fn parse_error(err: httparse::Error) -> &'static str {
    match err {
        httparse::Error::Status => "the status line has no valid status code",
        httparse::Error::Version => "the status line does not start with HTTP/1.x",
        httparse::Error::HeaderName => "a header field name is not valid",
        httparse::Error::HeaderValue => "a header field value is not valid",
        httparse::Error::NewLine | httparse::Error::Token => "a line is malformed",
        httparse::Error::TooManyHeaders => "too many header fields",
    }
}

/// The `Content-Length` values seen so far: all must agree (RFC 9110 §8.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lengths {
    None,
    One(u64),
    Invalid,
}

impl Lengths {
    /// With the values of one more `Content-Length` line (a comma-separated list is the same
    /// value repeated, or invalid).
    fn and(self, line: &HeaderValue) -> Lengths {
        let mut seen = self;
        for value in line.as_bytes().split(|&b| b == b',') {
            let n = match decimal(value.trim_ascii()) {
                Some(n) => n,
                None => return Lengths::Invalid,
            };
            seen = match seen {
                Lengths::None => Lengths::One(n),
                Lengths::One(m) if m == n => seen,
                _ => return Lengths::Invalid,
            };
        }
        seen
    }
}

/// Digits only: `u64::from_str` would take a sign.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// How much to ask of the socket per read: hyper's adaptive strategy, so a large body is read
/// in large pieces and a small answer does not hold a large buffer.
#[derive(Debug)]
struct ReadSize {
    next: usize,
    /// The last read was small: one more, and the size halves.
    shrink: bool,
}

impl Default for ReadSize {
    fn default() -> ReadSize {
        ReadSize {
            next: INIT_READ,
            shrink: false,
        }
    }
}

impl ReadSize {
    fn record(&mut self, read: usize) {
        if read >= self.next {
            self.next = (self.next * 2).min(MAX_READ);
            self.shrink = false;
        } else if read < self.next / 2 {
            if self.shrink {
                self.next = (self.next / 2).max(INIT_READ);
                self.shrink = false;
            } else {
                self.shrink = true;
            }
        } else {
            self.shrink = false;
        }
    }
}

/// A response body read off a [`Connection`] by the task that polls it; the connection goes
/// back to the pool once the body is complete (and only if nothing about the exchange casts
/// doubt on it), and closes when the body is dropped before.
pub struct WireBody {
    /// `None` once the body is complete.
    conn: Option<Box<Connection>>,
    decoder: Decoder,
    keep_alive: bool,
    /// The body broke; told on the next poll.
    failed: Option<WireError>,
    pool: Arc<OriginPool>,
}

impl std::fmt::Debug for WireBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireBody")
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl WireBody {
    fn new(
        conn: Box<Connection>,
        framing: Framing,
        keep_alive: bool,
        pool: &Arc<OriginPool>,
    ) -> Self {
        let mut body = WireBody {
            conn: Some(conn),
            decoder: Decoder::new(framing),
            keep_alive,
            failed: None,
            pool: Arc::clone(pool),
        };
        // An empty body may never be polled: its connection is free now.
        if body.decoder.is_done() {
            body.complete();
        }
        body
    }

    /// The body is read to its end: the connection goes back when the exchange was clean.
    fn complete(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && self.keep_alive
            // Bytes after the body: an origin that sent more than it framed.
            && conn.buf.is_empty()
        {
            conn.idle();
            self.pool.put_wire(conn);
        }
    }
}

impl HttpBody for WireBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(error) = this.failed.take() {
            return Poll::Ready(Some(Err(Box::new(error))));
        }
        let failure = loop {
            let Some(conn) = &mut this.conn else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    if this.decoder.is_done() {
                        this.complete();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Trailers(trailers)) => {
                    this.complete();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Decoded::End) => {
                    this.complete();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(err) => break WireError::Framing(err),
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.decoder.closed().is_ok() => {
                    // Delimited by the close: never kept.
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => break WireError::ClosedMidBody,
                Ok(_) => {}
                Err(err) => break WireError::Read(err),
            }
        };
        this.conn = None;
        // The error aborts the client's response where it stands. hyper's server writes out
        // what it holds of it only when the body makes it wait: so it is made to wait once, and
        // the client gets what the origin did send, as when hyper's client read the body.
        this.failed = Some(failure);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        // Exact for a Content-Length: hyper's server then sends the client the same length.
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The final head at the front of `bytes` fed one byte at a time, and what is left after it.
    fn parse(bytes: &[u8], is_head: bool) -> Result<(Head, Vec<u8>), WireError> {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        loop {
            match parse_head(&mut buf, is_head, &mut HeaderMap::new())? {
                Parsed::Final(head) => {
                    buf.extend_from_slice(&bytes[fed..]);
                    return Ok((head, buf.to_vec()));
                }
                Parsed::Interim => {}
                Parsed::Partial if fed == bytes.len() => return Err(WireError::ClosedBeforeHead),
                Parsed::Partial => {
                    buf.extend_from_slice(&bytes[fed..=fed]);
                    fed += 1;
                }
            }
        }
    }

    /// The final head of `bytes` given whole, as one read brings it.
    fn parse_whole(bytes: &[u8], is_head: bool) -> Result<(Head, Vec<u8>), WireError> {
        let mut buf = BytesMut::from(bytes);
        loop {
            match parse_head(&mut buf, is_head, &mut HeaderMap::new())? {
                Parsed::Final(head) => return Ok((head, buf.to_vec())),
                Parsed::Interim => {}
                Parsed::Partial => return Err(WireError::ClosedBeforeHead),
            }
        }
    }

    /// What a parse came to, comparable: the head's parts and what followed it, or the error.
    fn outcome(parsed: Result<(Head, Vec<u8>), WireError>) -> Result<String, String> {
        parsed
            .map(|(head, rest)| {
                format!(
                    "{:?} {:?} {:?} {} {rest:?}",
                    head.response.status(),
                    head.response.headers(),
                    head.framing,
                    head.keep_alive
                )
            })
            .map_err(|e| e.to_string())
    }

    proptest::proptest! {
        /// Whatever an origin sends, and however the reads cut it, the head parser never
        /// panics and comes to the same answer (or the same refusal) one byte at a time as whole.
        #[test]
        fn any_head_parses_the_same_whatever_the_reads(
            start in proptest::sample::select(vec![
                &b"HTTP/1.1 200 OK\r\n"[..],
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n",
                b"HTTP/1.0 304 Not Modified\r\n",
                b"HTTP/1.1 ",
                b"",
            ]),
            rest in proptest::collection::vec(
                proptest::sample::select(b"0123456789:; ,\r\nContent-Length\ttransfer-encoding chunked".to_vec()),
                0..200,
            ),
            is_head: bool,
        ) {
            let input = [start, &rest].concat();
            proptest::prop_assert_eq!(
                outcome(parse_whole(&input, is_head)),
                outcome(parse(&input, is_head))
            );
        }
    }

    /// `names` as the fields of a 200 answer, each with its position as value.
    fn answer_with(names: &[&str]) -> BytesMut {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        for (i, name) in names.iter().enumerate() {
            head.extend_from_slice(format!("{name}: {i}\r\n").as_bytes());
        }
        head.extend_from_slice(b"content-length: 0\r\n\r\n");
        BytesMut::from(&head[..])
    }

    fn fields_of(parsed: Result<Parsed, WireError>) -> Result<String, String> {
        match parsed {
            Ok(Parsed::Final(head)) => Ok(format!("{:?}", head.response.headers())),
            Ok(Parsed::Interim | Parsed::Partial) => Err("not a final head".into()),
            Err(err) => Err(err.to_string()),
        }
    }

    const LONG_NAME: &str = "x-amz-meta-a-name-long-enough-that-a-few-of-them-fill-what-a-connection-remembers-of-its-last-answer";

    proptest::proptest! {
        /// Whatever names the answers on one connection bring, in whatever case and order, those
        /// remembered from the last answer change nothing: each parses as on a new connection.
        #[test]
        fn remembered_names_parse_as_new_ones(
            answers in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        "x-amz-request-id", "X-Amz-Request-Id", "x-amz-id-2", "ETag", "etag",
                        "Content-Type", "x-amz-meta-a", "x-amz-meta-ab", "Date", LONG_NAME,
                    ]),
                    0..40,
                ),
                1..6,
            ),
        ) {
            let mut known = KnownNames::default();
            for names in answers {
                let shared = parse_head_with(
                    &mut answer_with(&names), false, &mut HeaderMap::new(), &mut known,
                );
                let fresh = parse_head(&mut answer_with(&names), false, &mut HeaderMap::new());
                proptest::prop_assert_eq!(fields_of(shared), fields_of(fresh));
                proptest::prop_assert!(known.names.len() <= KNOWN_NAMES);
                proptest::prop_assert!(known.spelled.len() <= KNOWN_NAME_BYTES);
            }
        }
    }

    #[test]
    fn a_name_the_last_answer_sent_is_shared_not_copied() {
        let mut known = KnownNames::default();
        let mut request_id = |names: &[&str]| {
            let parsed = parse_head_with(
                &mut answer_with(names),
                false,
                &mut HeaderMap::new(),
                &mut known,
            );
            let Ok(Parsed::Final(head)) = parsed else {
                panic!("a valid head");
            };
            let headers = head.response.headers();
            let name = headers.keys().find(|n| n.as_str() == "x-amz-request-id");
            name.map(|n| n.as_str().as_ptr())
        };
        let first = request_id(&["Date", "x-amz-request-id"]);
        assert!(first.is_some());
        assert_eq!(request_id(&["Date", "x-amz-request-id"]), first);
        assert_ne!(
            request_id(&["Date", "X-Amz-Request-Id"]),
            first,
            "spelled otherwise: parsed again"
        );
    }

    fn framing_of(bytes: &[u8]) -> Result<(Framing, bool), WireError> {
        parse(bytes, false).map(|(head, _)| (head.framing, head.keep_alive))
    }

    #[test]
    fn fields_are_slices_of_the_head_and_the_body_stays_in_the_buffer() {
        let (head, rest) = parse(
            b"HTTP/1.1 200 OK\r\nETag: \"abc\"\r\nx-amz-meta-a: 1\r\nx-amz-meta-a: 2\r\ncontent-length: 4\r\n\r\nbody",
            false,
        )
        .expect("valid head");
        let response = head.response;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(response.headers()["etag"], "\"abc\"");
        let metas: Vec<_> = response.headers().get_all("x-amz-meta-a").iter().collect();
        assert_eq!(metas, ["1", "2"]);
        assert!(
            response
                .extensions()
                .get::<hyper::ext::ReasonPhrase>()
                .is_none()
        );
        assert_eq!((head.framing, head.keep_alive), (Framing::Length(4), true));
        assert_eq!(rest, b"body");
    }

    #[test]
    fn a_reason_phrase_of_its_own_is_kept() {
        let (head, _) =
            parse(b"HTTP/1.1 200 Fine\r\ncontent-length: 0\r\n\r\n", false).expect("valid head");
        let reason = head
            .response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .cloned();
        assert_eq!(reason.as_ref().map(|r| r.as_bytes()), Some(&b"Fine"[..]));
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let cases: [(&[u8], Framing, bool); 10] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n",
                Framing::Length(7),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
                Framing::UntilClose,
                false,
            ),
            // Both: Transfer-Encoding wins, and the connection is not trusted again.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            (
                b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\ncontent-length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
        ];
        for (bytes, framing, keep_alive) in cases {
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(
                framing_of(bytes).ok(),
                Some((framing, keep_alive)),
                "{text}"
            );
        }
        // HTTP/1.0 closes unless told otherwise; corsgate does not ask it to stay.
        assert_eq!(
            framing_of(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n").ok(),
            Some((Framing::Length(1), false))
        );
        // A HEAD answer has no body, whatever it announces.
        let (head, _) =
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", true).expect("valid head");
        assert_eq!((head.framing, head.keep_alive), (Framing::Empty, true));
    }

    #[test]
    fn interim_answers_are_passed_over() {
        let (head, rest) = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: <a>\r\n\r\nHTTP/1.1 404 Not Found\r\ncontent-length: 1\r\n\r\nx",
            false,
        )
        .expect("valid heads");
        assert_eq!(head.response.status(), StatusCode::NOT_FOUND);
        assert!(head.response.headers().get("link").is_none());
        assert_eq!(rest, b"x");
    }

    #[test]
    fn broken_heads_are_origin_errors() {
        let refused = |bytes: &[u8]| parse(bytes, false).err();
        assert!(matches!(
            refused(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Some(WireError::MalformedHead(_))
        ));
        assert!(matches!(
            refused(b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"),
            Some(WireError::InvalidContentLength)
        ));
        assert!(matches!(
            refused(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Some(WireError::InvalidContentLength)
        ));
        assert!(matches!(
            refused(b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n"),
            Some(WireError::InvalidContentLength)
        ));
        assert!(matches!(
            refused(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            Some(WireError::TransferEncodingInHttp10)
        ));
        assert!(matches!(
            refused(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"),
            Some(WireError::UnexpectedUpgrade)
        ));
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&many[..]);
        assert!(matches!(
            parse_head(&mut buf, false, &mut HeaderMap::new()),
            Err(WireError::TooManyHeaders)
        ));
    }

    #[test]
    fn content_length_lists_must_agree() {
        let line = |text: &'static str| HeaderValue::from_static(text);
        assert_eq!(Lengths::None.and(&line("12")), Lengths::One(12));
        assert_eq!(Lengths::One(12).and(&line("12, 12")), Lengths::One(12));
        assert_eq!(Lengths::One(12).and(&line("13")), Lengths::Invalid);
        assert_eq!(Lengths::None.and(&line("+12")), Lengths::Invalid);
        assert_eq!(Lengths::None.and(&line("")), Lengths::Invalid);
    }

    #[test]
    fn only_requests_that_announce_no_body_are_sent_here() {
        let mut headers = HeaderMap::new();
        assert!(is_bodyless(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(is_bodyless(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(!is_bodyless(&headers));
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(!is_bodyless(&headers));
    }

    #[test]
    fn reads_grow_while_they_fill_and_shrink_when_they_do_not() {
        let mut size = ReadSize::default();
        for _ in 0..20 {
            let next = size.next;
            size.record(next);
        }
        assert_eq!(size.next, MAX_READ);
        for _ in 0..40 {
            size.record(10);
        }
        assert_eq!(size.next, INIT_READ);
    }

    #[tokio::test]
    async fn an_idle_connection_lets_a_grown_buffer_go() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        let slot = super::super::OriginSlots::new(1, Duration::from_secs(1))
            .try_take()
            .expect("a free slot");
        let mut conn = Connection::new(OriginIo::new(stream, slot, Duration::from_secs(1)));
        conn.buf.reserve(MAX_READ);
        conn.read.next = MAX_READ;
        conn.idle();
        assert!(conn.buf.capacity() <= MAX_IDLE_BUFFER);
        assert_eq!(conn.read.next, INIT_READ);
        assert_eq!(conn.liveness(), Liveness::Alive);
    }

    #[test]
    fn only_a_request_that_never_left_or_may_be_repeated_is_retried() {
        let failed =
            |unwritten, unanswered| Failed::new(WireError::ClosedBeforeHead, unwritten, unanswered);
        assert!(failed(true, true).may_retry(&Method::POST));
        assert!(failed(false, true).may_retry(&Method::GET));
        assert!(!failed(false, true).may_retry(&Method::POST));
        assert!(!failed(false, false).may_retry(&Method::GET));
    }
}
