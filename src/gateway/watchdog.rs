//! A connection's timeouts between requests: how long a client may take to send a request head
//! (`timeouts.header_read`, the slowloris guard) and how long a connection may sit idle
//! (`timeouts.idle`).
//!
//! One watchdog per connection wakes a few times per period and looks at counters the
//! connection updates as it goes; a request itself never reads the clock or arms a timer. (A
//! timer armed, boxed and dropped for every request head, which is how hyper's own
//! header-read timeout works, cost about 5% of a whole preflight's instructions.) The price is
//! precision: a deadline is noticed between its length and `1 + 1/CHECKS` times it.
//!
//! What counts, per connection:
//! - a request is in flight from the moment hyper hands it over until its response body is done
//!   (no deadline applies; the origin's timeouts do);
//! - a request head is pending from the first byte a client sends with no request in flight
//!   (and from the start of the connection) until hyper hands the request over: it must finish
//!   within `header_read`, or the connection is dropped;
//! - otherwise the connection is idle: after `idle`, it is closed gracefully.
//!
//! HTTP/2 sends frames (PING, SETTINGS, WINDOW_UPDATE) with no stream open, so on an HTTP/2
//! connection bytes do not start a head: only the idle deadline applies between streams.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Body, BodyError};

/// How many times per deadline the watchdog looks at its connection.
const CHECKS: u32 = 4;

/// The HTTP/2 connection preface's first bytes (RFC 9113 §3.4); no HTTP/1 method is `PRI`.
const H2_PREFACE: &[u8] = b"PRI ";

/// Why a connection's watchdog fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expired {
    /// A request head took longer than `header_read`.
    HeadTooSlow,
    /// No request for `idle`.
    Idle,
}

/// What one connection has been doing, as the watchdog sees it.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Changes whenever something happens: a head starts, a request starts or finishes.
    events: AtomicU64,
    head_pending: AtomicBool,
    /// Bytes no longer start heads (HTTP/2).
    http2: AtomicBool,
    /// Whether the first bytes have been looked at for the HTTP/2 preface.
    sniffed: AtomicBool,
}

impl Activity {
    /// A new connection: waiting for its first request head, unless it is known to be HTTP/2
    /// (agreed by ALPN), which opens with frames rather than a head.
    pub fn new(http2: bool) -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            head_pending: AtomicBool::new(!http2),
            http2: AtomicBool::new(http2),
            sniffed: AtomicBool::new(http2),
        })
    }

    /// A request handed over by hyper; in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_pending.store(false, Ordering::Release);
        self.events.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// `bytes` just arrived from the client.
    fn received(&self, bytes: &[u8]) {
        if !self.sniffed.load(Ordering::Relaxed) {
            self.sniffed.store(true, Ordering::Relaxed);
            if bytes.starts_with(H2_PREFACE) {
                self.http2.store(true, Ordering::Release);
                self.head_pending.store(false, Ordering::Release);
                self.events.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_pending.load(Ordering::Acquire)
            && !self.http2.load(Ordering::Acquire)
        {
            self.head_pending.store(true, Ordering::Release);
            self.events.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Resolves when a deadline passes: a head pending for `header_read`, or nothing in flight
    /// and nothing pending for `idle`.
    pub async fn expired(&self, header_read: Duration, idle: Duration) -> Expired {
        let period = header_read.min(idle) / CHECKS;
        let ticks = |limit: Duration| {
            let nanos = period.as_nanos().max(1);
            u32::try_from(limit.as_nanos().div_ceil(nanos)).unwrap_or(u32::MAX)
        };
        let (head_ticks, idle_ticks) = (ticks(header_read), ticks(idle));
        // Ticks since the last event; the event happened within the tick before the count
        // restarted, so `n` ticks mean at least `n` periods of the current state.
        let mut quiet = 0;
        let mut seen = self.events.load(Ordering::Acquire);
        loop {
            tokio::time::sleep(period).await;
            let events = self.events.load(Ordering::Acquire);
            if events != seen || self.in_flight.load(Ordering::Acquire) > 0 {
                seen = events;
                quiet = 0;
                continue;
            }
            quiet += 1;
            if self.head_pending.load(Ordering::Acquire) {
                if quiet >= head_ticks {
                    return Expired::HeadTooSlow;
                }
            } else if quiet >= idle_ticks {
                return Expired::Idle;
            }
        }
    }
}

/// One request in flight, until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is done.
pub struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl Tracked {
    pub fn new(inner: Body, busy: Busy) -> Tracked {
        Tracked { inner, _busy: busy }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, telling its [`Activity`] when the client sends something.
pub struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub fn new(io: I, activity: Arc<Activity>) -> Watched<I> {
        Watched { io, activity }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.activity.received(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(75);

    /// How long `expired` takes to fire on `activity`, in paused (virtual) time.
    async fn fires_after(activity: &Activity) -> (Expired, Duration) {
        let start = tokio::time::Instant::now();
        let why = activity.expired(HEAD, IDLE).await;
        (why, start.elapsed())
    }

    fn within(elapsed: Duration, limit: Duration) -> bool {
        elapsed >= limit && elapsed <= limit + limit / CHECKS
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_must_send_its_first_head_within_header_read() {
        let activity = Activity::new(false);
        let (why, after) = fires_after(&activity).await;
        assert_eq!(why, Expired::HeadTooSlow);
        assert!(within(after, HEAD), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_deadline_applies_until_a_byte_arrives() {
        let activity = Activity::new(false);
        drop(activity.begin());
        let (why, after) = fires_after(&activity).await;
        assert_eq!(why, Expired::Idle);
        assert!(within(after, IDLE), "{after:?}");

        let activity = Activity::new(false);
        drop(activity.begin());
        activity.received(b"GET / HT");
        let (why, after) = fires_after(&activity).await;
        assert_eq!(why, Expired::HeadTooSlow);
        assert!(within(after, HEAD), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_holds_off_both_deadlines() {
        let activity = Activity::new(false);
        let busy = activity.begin();
        let watch = activity.expired(HEAD, IDLE);
        let outlived = tokio::time::timeout(IDLE * 3, watch).await;
        assert!(outlived.is_err(), "fired with a request in flight");
        drop(busy);
        let (why, after) = fires_after(&activity).await;
        assert_eq!(why, Expired::Idle);
        assert!(within(after, IDLE), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_streams_do_not_start_a_head() {
        for activity in [Activity::new(true), Activity::new(false)] {
            activity.received(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            activity.received(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00");
            let (why, after) = fires_after(&activity).await;
            assert_eq!(why, Expired::Idle);
            assert!(within(after, IDLE), "{after:?}");
        }
    }
}
