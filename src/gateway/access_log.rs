//! One access-log line per gateway request (`[log]`: `access`, `format`, `access_file`; the
//! fields are documented in `docs/access-log.md`).
//!
//! The line is written straight into the background writer's buffer ([`super::log_writer`]):
//! no `tracing` event, no field visitors, no `fmt` machinery for numbers (`itoa`), and the
//! time of day formatted once per second per thread, as nginx caches its time strings. A
//! request never waits for the disk: if the writer falls behind, lines are dropped and counted
//! ([`dropped_lines`]).
//!
//! When a line is written: an answer corsgate gives itself (a preflight, a refusal) is logged as
//! soon as it is built, its size known; a forwarded request once its body has been sent to the
//! client, or abandoned ([`LoggedBody`]), so `bytes` is what was sent and `duration_ms` runs to
//! the last byte, as nginx's `$body_bytes_sent` and `$request_time` do.
//!
//! The query string is never logged: presigned URLs carry credentials in it.

use std::cell::Cell;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Method, StatusCode, Uri};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::watch;

use super::log_writer::{Destination, LogWriter, OpenError};
use super::{Body, BodyError};
use crate::config::{LogConfig, LogFormat};

pub use super::log_writer::dropped_lines;
pub use crate::cors::outcome::{CacheUse, Outcome};

/// The origin's part in a forwarded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginTiming {
    /// The origin's status; `None` when it gave no answer (unreachable, timed out, busy).
    pub status: Option<StatusCode>,
    /// From sending the request to the origin's response head (or to giving up).
    pub elapsed: Duration,
}

/// Everything one access-log line says.
pub struct AccessEntry<'a> {
    /// The TCP peer (a load balancer's address when there is one in front).
    pub client: SocketAddr,
    pub method: &'a Method,
    /// `None`: the request named no host.
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub status: StatusCode,
    /// Body bytes sent; `None` when unknown.
    pub bytes: Option<u64>,
    pub elapsed: Duration,
    pub outcome: Outcome,
    /// Forwarded requests only.
    pub origin: Option<OriginTiming>,
    /// The answer's `x-amz-request-id`: corsgate's own, or the origin's on forwarded answers.
    pub request_id: Option<&'a HeaderValue>,
}

/// The access log of one gateway: where lines go and in which format. Cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    writer: Arc<LogWriter>,
    format: LogFormat,
}

impl AccessLog {
    /// The access log `config` asks for, or `None` when it is off: `log.access = false`, or
    /// `RUST_LOG` turning the `corsgate::access` target off (the older switch, still honoured;
    /// a process without a `tracing` subscriber, such as a test, logs no access lines either).
    pub fn start(config: &LogConfig) -> Result<Option<AccessLog>, OpenError> {
        let wanted = tracing::enabled!(target: "corsgate::access", tracing::Level::INFO);
        if !config.access || !wanted {
            return Ok(None);
        }
        AccessLog::open(config).map(Some)
    }

    /// The access log of `config`, whatever `RUST_LOG` says.
    pub fn open(config: &LogConfig) -> Result<AccessLog, OpenError> {
        let destination = match &config.access_file {
            Some(path) => Destination::File(path.clone()),
            None => Destination::Stderr,
        };
        Ok(AccessLog {
            writer: Arc::new(LogWriter::start(destination)?),
            format: config.format,
        })
    }

    /// Writes one line (or drops and counts it when the writer is behind).
    pub fn write(&self, entry: &AccessEntry<'_>) {
        let now = SystemTime::now();
        self.writer.append(|buf| match self.format {
            LogFormat::Text => entry.text(buf, now),
            LogFormat::Json => entry.json(buf, now),
        });
    }

    /// Opens the file again by name (after `logrotate` renamed it).
    pub(crate) fn reopen(&self) {
        self.writer.reopen();
    }

    /// Writes every line logged so far and stops the writer: the last step of a shutdown.
    pub fn close(&self) {
        self.writer.close();
    }
}

/// Reopens `log`'s file on every `SIGUSR1` until `stop` flips; `None` when the signal cannot be
/// listened for (the failure is logged). Listened for even without an access log file, so that
/// a `logrotate` script left in place never terminates the gateway (the signal's default).
pub(crate) fn reopen_on_usr1(
    log: Option<AccessLog>,
    mut stop: watch::Receiver<bool>,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut usr1 = signal(SignalKind::user_defined1())
            .map_err(|err| tracing::warn!("cannot listen for SIGUSR1 (access log reopen): {err}"))
            .ok()?;
        Some(async move {
            loop {
                tokio::select! {
                    received = usr1.recv() => match (received, &log) {
                        (None, _) => return,
                        (Some(()), Some(log)) => log.reopen(),
                        (Some(()), None) => tracing::info!("SIGUSR1: the access log is off, nothing to reopen"),
                    },
                    _ = stop.changed() => return,
                }
            }
        })
    }
    #[cfg(not(unix))]
    {
        let _ = (log, &mut stop);
        None::<std::future::Ready<()>>
    }
}

impl AccessEntry<'_> {
    /// `key=value` pairs (logfmt), every field always present, `-` when it does not apply.
    fn text(&self, buf: &mut Vec<u8>, now: SystemTime) {
        buf.extend_from_slice(b"time=");
        push_time(buf, now);
        buf.extend_from_slice(b" client=");
        push_addr(buf, self.client);
        buf.extend_from_slice(b" method=");
        push_text(buf, self.method.as_str().as_bytes());
        buf.extend_from_slice(b" host=");
        push_text(buf, self.host.unwrap_or("-").as_bytes());
        buf.extend_from_slice(b" path=");
        push_text(buf, self.path.as_bytes());
        buf.extend_from_slice(b" status=");
        push_int(buf, self.status.as_u16());
        buf.extend_from_slice(b" bytes=");
        push_opt_int(buf, self.bytes, b"-");
        buf.extend_from_slice(b" duration_ms=");
        push_millis(buf, self.elapsed);
        buf.extend_from_slice(b" cors=");
        buf.extend_from_slice(self.outcome.as_str().as_bytes());
        buf.extend_from_slice(b" rule=");
        push_opt_int(buf, self.outcome.rule(), b"-");
        buf.extend_from_slice(b" denial=");
        buf.extend_from_slice(self.outcome.denial().unwrap_or("-").as_bytes());
        buf.extend_from_slice(b" cache=");
        buf.extend_from_slice(
            self.outcome
                .cache()
                .map_or("-", CacheUse::as_str)
                .as_bytes(),
        );
        buf.extend_from_slice(b" origin_status=");
        push_opt_int(
            buf,
            self.origin.and_then(|o| o.status).map(|s| s.as_u16()),
            b"-",
        );
        buf.extend_from_slice(b" origin_ms=");
        match self.origin {
            Some(origin) => push_millis(buf, origin.elapsed),
            None => buf.push(b'-'),
        }
        buf.extend_from_slice(b" request_id=");
        match self.request_id {
            Some(id) => push_text(buf, id.as_bytes()),
            None => buf.push(b'-'),
        }
        buf.push(b'\n');
    }

    /// One JSON object, every field always present, `null` when it does not apply.
    fn json(&self, buf: &mut Vec<u8>, now: SystemTime) {
        buf.extend_from_slice(b"{\"time\":\"");
        push_time(buf, now);
        buf.extend_from_slice(b"\",\"client\":\"");
        push_addr(buf, self.client);
        buf.extend_from_slice(b"\",\"method\":");
        push_json(buf, self.method.as_str().as_bytes());
        buf.extend_from_slice(b",\"host\":");
        match self.host {
            Some(host) => push_json(buf, host.as_bytes()),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"path\":");
        push_json(buf, self.path.as_bytes());
        buf.extend_from_slice(b",\"status\":");
        push_int(buf, self.status.as_u16());
        buf.extend_from_slice(b",\"bytes\":");
        push_opt_int(buf, self.bytes, b"null");
        buf.extend_from_slice(b",\"duration_ms\":");
        push_millis(buf, self.elapsed);
        buf.extend_from_slice(b",\"cors\":\"");
        buf.extend_from_slice(self.outcome.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"rule\":");
        push_opt_int(buf, self.outcome.rule(), b"null");
        buf.extend_from_slice(b",\"denial\":");
        push_opt_name(buf, self.outcome.denial());
        buf.extend_from_slice(b",\"cache\":");
        push_opt_name(buf, self.outcome.cache().map(CacheUse::as_str));
        buf.extend_from_slice(b",\"origin_status\":");
        push_opt_int(
            buf,
            self.origin.and_then(|o| o.status).map(|s| s.as_u16()),
            b"null",
        );
        buf.extend_from_slice(b",\"origin_ms\":");
        match self.origin {
            Some(origin) => push_millis(buf, origin.elapsed),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"request_id\":");
        match self.request_id {
            Some(id) => push_json(buf, id.as_bytes()),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b"}\n");
    }
}

/// `2026-11-29T16:00:00.123Z`: the seconds formatted once per second (per thread), the
/// milliseconds appended.
fn push_time(buf: &mut Vec<u8>, now: SystemTime) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let text = SECOND.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return text;
        }
        let mut text = [b'0'; 19];
        // "YYYY-MM-DDTHH:MM:SSZ": the seconds part, without the zone letter.
        let formatted =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
        let n = formatted.len().saturating_sub(1).min(19);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        cached.set((secs, text));
        text
    });
    buf.extend_from_slice(&text);
    buf.push(b'.');
    push_padded(buf, since.subsec_millis(), 3);
    buf.push(b'Z');
}

/// `1.234`: milliseconds with three decimals (microsecond precision).
fn push_millis(buf: &mut Vec<u8>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    push_int(buf, micros / 1000);
    buf.push(b'.');
    push_padded(buf, (micros % 1000) as u32, 3);
}

fn push_padded(buf: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(n);
    for _ in text.len()..width {
        buf.push(b'0');
    }
    buf.extend_from_slice(text.as_bytes());
}

fn push_int(buf: &mut Vec<u8>, n: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_opt_int(buf: &mut Vec<u8>, n: Option<impl itoa::Integer>, none: &[u8]) {
    match n {
        Some(n) => push_int(buf, n),
        None => buf.extend_from_slice(none),
    }
}

/// A value from a fixed set of names (no escaping needed), or `null`.
fn push_opt_name(buf: &mut Vec<u8>, name: Option<&str>) {
    match name {
        Some(name) => {
            buf.push(b'"');
            buf.extend_from_slice(name.as_bytes());
            buf.push(b'"');
        }
        None => buf.extend_from_slice(b"null"),
    }
}

/// `1.2.3.4:5678` or `[::1]:5678`.
fn push_addr(buf: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                push_int(buf, octet);
            }
        }
        SocketAddr::V6(v6) => {
            use std::io::Write;
            // Rare enough on the request path to go through `fmt` (IPv6 compression rules).
            let _ = write!(buf, "[{}]", v6.ip());
        }
    }
    buf.push(b':');
    push_int(buf, addr.port());
}

/// A logfmt value: visible ASCII as is, anything that could break the line (spaces, quotes,
/// control bytes, non-ASCII) as `\xHH`. Runs of plain bytes are copied whole.
fn push_text(buf: &mut Vec<u8>, value: &[u8]) {
    let mut rest = value;
    while let Some(i) = rest.iter().position(|&b| PLAIN[usize::from(b)] & TEXT == 0) {
        buf.extend_from_slice(&rest[..i]);
        push_hex_escape(buf, b"\\x", rest[i]);
        rest = &rest[i + 1..];
    }
    buf.extend_from_slice(rest);
}

/// A JSON string. Bytes that are not ASCII are escaped one by one (`\u00HH`): a header value
/// need not be UTF-8, and the line must stay valid JSON whatever a client or origin sent.
fn push_json(buf: &mut Vec<u8>, value: &[u8]) {
    buf.push(b'"');
    let mut rest = value;
    while let Some(i) = rest.iter().position(|&b| PLAIN[usize::from(b)] & JSON == 0) {
        buf.extend_from_slice(&rest[..i]);
        match rest[i] {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b => push_hex_escape(buf, b"\\u00", b),
        }
        rest = &rest[i + 1..];
    }
    buf.extend_from_slice(rest);
    buf.push(b'"');
}

/// [`PLAIN`]'s bits: written as is in a logfmt value, in a JSON string.
const TEXT: u8 = 1;
const JSON: u8 = 2;

/// Which bytes need no escaping, by format: one table lookup per byte instead of a chain of
/// comparisons (paths and hosts are most of a line's bytes).
const PLAIN: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0x20;
    while b <= 0x7e {
        if b != b'"' as usize && b != b'\\' as usize {
            table[b] = JSON | if b == b' ' as usize { 0 } else { TEXT };
        }
        b += 1;
    }
    table
};

fn push_hex_escape(buf: &mut Vec<u8>, prefix: &[u8], b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.extend_from_slice(prefix);
    buf.push(HEX[usize::from(b >> 4)]);
    buf.push(HEX[usize::from(b & 0xf)]);
}

/// What a forwarded request's line needs once its body is done; owned, since the request has
/// moved on by then.
pub(crate) struct PendingLine {
    pub log: AccessLog,
    pub client: SocketAddr,
    pub method: Method,
    pub host: Option<Authority>,
    /// The request's target (cheap to keep: its bytes are shared).
    pub uri: Uri,
    pub status: StatusCode,
    pub outcome: Outcome,
    pub origin: Option<OriginTiming>,
    pub request_id: Option<HeaderValue>,
    pub started: Instant,
}

impl PendingLine {
    fn write(self, bytes: u64) {
        self.log.write(&AccessEntry {
            client: self.client,
            method: &self.method,
            host: self.host.as_ref().map(Authority::as_str),
            path: self.uri.path(),
            status: self.status,
            bytes: Some(bytes),
            elapsed: self.started.elapsed(),
            outcome: self.outcome,
            origin: self.origin,
            request_id: self.request_id.as_ref(),
        });
    }
}

/// A response body that counts what is sent and writes the request's line when it ends, fails,
/// or is dropped unfinished (the client went away, the connection was cut at shutdown).
pub(crate) struct LoggedBody {
    inner: Body,
    sent: u64,
    line: Option<Box<PendingLine>>,
}

impl LoggedBody {
    pub fn new(inner: Body, line: PendingLine) -> LoggedBody {
        LoggedBody {
            inner,
            sent: 0,
            line: Some(Box::new(line)),
        }
    }

    fn finish(&mut self) {
        if let Some(line) = self.line.take() {
            line.write(self.sent);
        }
    }
}

impl HttpBody for LoggedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_)) | None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(method: &'a Method, id: &'a HeaderValue) -> AccessEntry<'a> {
        AccessEntry {
            client: SocketAddr::from(([10, 0, 0, 7], 51234)),
            method,
            host: Some("assets.example.com"),
            path: "/photos/a \"b\".jpg",
            status: StatusCode::OK,
            bytes: Some(1234),
            elapsed: Duration::from_micros(1_234_567),
            outcome: Outcome::ActualDecorated { rule: 2 },
            origin: Some(OriginTiming {
                status: Some(StatusCode::OK),
                elapsed: Duration::from_micros(1_000_042),
            }),
            request_id: Some(id),
        }
    }

    fn at() -> SystemTime {
        // 2026-11-29T16:00:00.007Z
        UNIX_EPOCH + Duration::from_millis(1_795_968_000_007)
    }

    #[test]
    fn a_text_line_is_logfmt_with_every_field() {
        let id = HeaderValue::from_static("0123456789ABCDEF");
        let mut buf = Vec::new();
        entry(&Method::GET, &id).text(&mut buf, at());
        assert_eq!(
            String::from_utf8(buf).expect("ascii"),
            "time=2026-11-29T16:00:00.007Z client=10.0.0.7:51234 method=GET \
             host=assets.example.com path=/photos/a\\x20\\x22b\\x22.jpg status=200 bytes=1234 \
             duration_ms=1234.567 cors=actual-decorated rule=2 denial=- cache=- \
             origin_status=200 origin_ms=1000.042 request_id=0123456789ABCDEF\n"
        );
    }

    #[test]
    fn a_json_line_is_one_valid_object_with_stable_names() {
        let id = HeaderValue::from_bytes(b"id\xff").expect("obs-text is a valid value");
        let mut buf = Vec::new();
        let mut e = entry(&Method::OPTIONS, &id);
        e.outcome = Outcome::PreflightDenied {
            code: "AccessForbidden",
            cache: CacheUse::Skip,
        };
        e.origin = None;
        e.host = None;
        e.bytes = None;
        e.json(&mut buf, at());
        assert_eq!(buf.last(), Some(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
        assert_eq!(
            line,
            serde_json::json!({
                "time": "2026-11-29T16:00:00.007Z",
                "client": "10.0.0.7:51234",
                "method": "OPTIONS",
                "host": null,
                "path": "/photos/a \"b\".jpg",
                "status": 200,
                "bytes": null,
                "duration_ms": 1234.567,
                "cors": "preflight-denied",
                "rule": null,
                "denial": "AccessForbidden",
                "cache": "skip",
                "origin_status": null,
                "origin_ms": null,
                "request_id": "id\u{ff}",
            })
        );
    }

    #[test]
    fn the_time_follows_the_clock_across_seconds() {
        let mut buf = Vec::new();
        push_time(&mut buf, at());
        push_time(&mut buf, at() + Duration::from_millis(999));
        push_time(&mut buf, at() + Duration::from_millis(61_000));
        assert_eq!(
            String::from_utf8(buf).expect("ascii"),
            "2026-11-29T16:00:00.007Z2026-11-29T16:00:01.006Z2026-11-29T16:01:01.007Z"
        );
    }

    #[test]
    fn ipv6_clients_are_bracketed() {
        let mut buf = Vec::new();
        push_addr(&mut buf, "[::1]:8080".parse().expect("address"));
        assert_eq!(buf, b"[::1]:8080");
    }
}
