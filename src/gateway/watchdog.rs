//! A connection's deadlines while it serves: how long a client may take to send a request head
//! (`timeouts.header_read`, the slowloris guard), how long a connection may sit idle
//! (`timeouts.idle`), and how long a client may leave an answer unread (`timeouts.send`).
//!
//! One watchdog per connection wakes a few times per period and looks at counters the
//! connection updates as it goes; a request itself never reads the clock or arms a timer. (A
//! timer armed, boxed and dropped for every request head, which is how hyper's own
//! header-read timeout works, is a cost every preflight would pay.) The price is
//! precision: a deadline is noticed between its length and `1 + 1/CHECKS` times it.
//!
//! What counts, per connection:
//! - a request is in flight from the moment hyper hands it over until its response body is done
//!   (neither the head nor the idle deadline applies; the origin's timeouts do);
//! - a request head is pending from the first byte a client sends with no request in flight
//!   (and from the start of the connection) until hyper hands the request over: it must finish
//!   within `header_read`, or the connection is dropped. That holds for every connection,
//!   whatever its first bytes: an HTTP/2 client must send its preface and its first request
//!   within `header_read` too;
//! - otherwise the connection is idle: after `idle`, it is closed gracefully;
//! - a socket that takes no bytes for `send` while there is something to write is dropped (on
//!   HTTP/1.1 that is how a client that reads nothing of its answer shows);
//! - on HTTP/2 a client stalls one stream by leaving its flow-control window at zero: hyper then
//!   stops asking that answer's body for more. A streamed answer whose body hyper has not asked
//!   for more for `send`, while it has more, has its stream reset (RST_STREAM); the others go on;
//! - requests in flight that all make no progress for `idle` (no answer chunk handed to hyper,
//!   none waiting on its origin, none starting or ending) close the connection gracefully (on
//!   HTTP/2 a GOAWAY).
//!
//! HTTP/2 sends frames (PING, SETTINGS, WINDOW_UPDATE) with no stream open, so once an HTTP/2
//! connection has sent its whole preface, bytes no longer start a head: only the idle deadline
//! applies between streams. A head that merely begins like the preface (`PRI `) is HTTP/1 as
//! soon as a byte differs, as hyper reads it.
//!
//! Preflight answers are complete in one frame: they take no part in stall detection beyond
//! the in-flight count (no clock, no allocation, no lock); only streamed answers (those that
//! waited on an origin or an admin/demo handler) count their chunks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Body, BodyError};
use crate::config::Timeouts;

/// How many times per deadline the watchdog looks at its connection.
const CHECKS: u32 = 4;

/// The HTTP/2 connection preface (RFC 9113 §3.4); no HTTP/1 request line is this.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `Activity::preface` once the connection's protocol is known.
const SNIFFED: usize = usize::MAX;

/// The deadlines a watchdog enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadlines {
    pub header_read: Duration,
    pub idle: Duration,
    pub send: Duration,
}

impl From<&Timeouts> for Deadlines {
    fn from(t: &Timeouts) -> Deadlines {
        Deadlines {
            header_read: t.header_read,
            idle: t.idle,
            send: t.send,
        }
    }
}

impl Deadlines {
    /// How often the watchdog looks: a fraction of the shortest deadline.
    fn period(&self) -> Duration {
        let shortest = self.header_read.min(self.idle).min(self.send);
        // Never a busy loop, whatever a caller passes.
        (shortest / CHECKS).max(Duration::from_millis(1))
    }
}

/// Why a connection's watchdog fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A request head (or an HTTP/2 connection's first request) took longer than `header_read`.
    HeadTooSlow,
    /// No request for `idle`.
    Idle,
    /// The socket took nothing for `send` while there was something to write.
    SendStalled,
    /// Requests in flight, none of them moving, for `idle`.
    Stalled,
}

/// What one connection has been doing, as the watchdog sees it.
#[derive(Debug)]
pub(crate) struct Activity {
    in_flight: AtomicUsize,
    /// Changes whenever something happens: a head starts, a request starts or finishes.
    events: AtomicU64,
    head_pending: AtomicBool,
    /// Bytes no longer start heads (HTTP/2).
    http2: AtomicBool,
    /// How many bytes of the HTTP/2 preface the connection's first bytes have matched, or
    /// [`SNIFFED`] once they told HTTP/1 from HTTP/2.
    preface: AtomicUsize,
    /// Requests waiting on something other than their client: the origin's answer, or the next
    /// chunk of a streamed body.
    waiting: AtomicUsize,
    /// Chunks of streamed answers handed to hyper.
    chunks: AtomicU64,
    /// The socket's last write (or flush) was refused and none has gone through since.
    write_blocked: AtomicBool,
    /// How many times the socket has started refusing writes.
    write_stalls: AtomicU64,
    /// The streamed answers of an HTTP/2 connection, each resettable on its own.
    streams: Mutex<Vec<Arc<StreamWatch>>>,
    /// Nanoseconds the connection waited for its first bytes before it was served: they count
    /// against its first head.
    waited: AtomicU64,
}

impl Activity {
    /// A new connection: waiting for its first request, whose head (or, if it is known to be
    /// HTTP/2 by ALPN, whose preface and first HEADERS) must arrive within `header_read`.
    pub fn new(http2: bool) -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            head_pending: AtomicBool::new(true),
            http2: AtomicBool::new(http2),
            preface: AtomicUsize::new(if http2 { SNIFFED } else { 0 }),
            waiting: AtomicUsize::new(0),
            chunks: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            write_stalls: AtomicU64::new(0),
            streams: Mutex::new(Vec::new()),
            waited: AtomicU64::new(0),
        })
    }

    /// The connection waited `waited` for its first bytes before it was served (its protocol
    /// was told by them): its first head has that much less of `header_read` left.
    pub(crate) fn waited_for_first_bytes(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.waited.store(nanos, Ordering::Release);
    }

    /// A request handed over by hyper; in flight until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_pending.store(false, Ordering::Release);
        self.events.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// `bytes` just arrived from the client.
    fn received(&self, bytes: &[u8]) {
        let matched = self.preface.load(Ordering::Relaxed);
        if matched < H2_PREFACE.len() {
            self.sniff(matched, bytes);
        }
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.head_pending.load(Ordering::Acquire)
            && !self.http2.load(Ordering::Acquire)
        {
            self.head_pending.store(true, Ordering::Release);
            self.events.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Follows the first bytes through the HTTP/2 preface, however they are split into reads:
    /// the connection is HTTP/2 once all of it has arrived, HTTP/1 at the first byte that
    /// differs. Until then it is a head like any other.
    fn sniff(&self, matched: usize, bytes: &[u8]) {
        let expected = &H2_PREFACE[matched..];
        let n = expected.len().min(bytes.len());
        if bytes[..n] != expected[..n] {
            self.preface.store(SNIFFED, Ordering::Relaxed);
            return;
        }
        if matched + n < H2_PREFACE.len() {
            self.preface.store(matched + n, Ordering::Relaxed);
            return;
        }
        self.preface.store(SNIFFED, Ordering::Relaxed);
        self.http2.store(true, Ordering::Release);
    }

    fn wrote(&self) {
        if self.write_blocked.load(Ordering::Relaxed) {
            self.write_blocked.store(false, Ordering::Relaxed);
        }
    }

    fn write_refused(&self) {
        if !self.write_blocked.swap(true, Ordering::Relaxed) {
            self.write_stalls.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The stall being watched, if the socket refuses writes right now.
    fn write_stall(&self) -> Option<u64> {
        self.write_blocked
            .load(Ordering::Relaxed)
            .then(|| self.write_stalls.load(Ordering::Relaxed))
    }

    fn watch_stream(&self, watch: Arc<StreamWatch>) {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The watchdog forgets finished streams a few times per period; a busy connection
        // finishes many more in between, forgotten here before the list would grow.
        if streams.len() == streams.capacity() {
            streams.retain(|watch| !watch.done.load(Ordering::Acquire));
        }
        streams.push(watch);
    }

    /// Resets every streamed HTTP/2 answer that hyper has not asked for more for `ticks`
    /// periods while it had more; forgets finished ones.
    fn reset_stalled_streams(&self, ticks: u32) {
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        streams.retain(|watch| {
            if watch.done.load(Ordering::Acquire) {
                return false;
            }
            if watch.stalled_for(ticks) {
                watch.reset();
                return false;
            }
            true
        });
    }

    /// Whether the connection speaks HTTP/2 (by ALPN or by its preface).
    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Acquire)
    }

    /// Resolves once the connection may be closed with the least chance of cutting a request
    /// short: at once on HTTP/2 (a GOAWAY lets the client retry anything it sent after), and
    /// on HTTP/1 once no request has been in flight nor any head arriving for `quiet`. A client
    /// that sends its next request as soon as an answer arrives is never quiet that long: its
    /// next answer carries `Connection: close` instead. (RFC 9112 §9.6: a client must be ready
    /// for a kept-alive connection to close, but a request sent at that very moment is lost.)
    pub async fn settled(&self, quiet: Duration) {
        let mut seen = self.events.load(Ordering::Acquire);
        loop {
            if self.is_http2() {
                return;
            }
            tokio::time::sleep(quiet).await;
            let now = self.events.load(Ordering::Acquire);
            if now == seen
                && self.in_flight.load(Ordering::Acquire) == 0
                && !self.head_pending.load(Ordering::Acquire)
            {
                return;
            }
            seen = now;
        }
    }

    /// Resolves when a deadline passes. While the connection drains (`draining`), only the
    /// deadlines that drop it count: a head too slow, a socket that takes nothing.
    pub(crate) async fn expired(&self, deadlines: Deadlines, draining: bool) -> Expired {
        let period = deadlines.period();
        let ticks = |limit: Duration| {
            let nanos = period.as_nanos().max(1);
            u32::try_from(limit.as_nanos().div_ceil(nanos)).unwrap_or(u32::MAX)
        };
        let (head_ticks, idle_ticks, send_ticks) = (
            ticks(deadlines.header_read),
            ticks(deadlines.idle),
            ticks(deadlines.send),
        );
        // Ticks since the last event; the event happened within the tick before the count
        // restarted, so `n` ticks mean at least `n` periods of the current state. The first
        // head starts with the whole periods spent waiting for the first bytes.
        let waited = self.waited.swap(0, Ordering::AcqRel);
        let mut quiet =
            u32::try_from(u128::from(waited) / period.as_nanos().max(1)).unwrap_or(u32::MAX);
        let mut seen = self.events.load(Ordering::Acquire);
        let mut chunks = self.chunks.load(Ordering::Relaxed);
        let mut stall: Option<u64> = None;
        let mut stalled = 0;
        loop {
            tokio::time::sleep(period).await;

            let now_stalled = self.write_stall();
            if now_stalled.is_some() && now_stalled == stall {
                stalled += 1;
                if stalled >= send_ticks {
                    return Expired::SendStalled;
                }
            } else {
                stall = now_stalled;
                stalled = 0;
            }
            self.reset_stalled_streams(send_ticks);

            let events = self.events.load(Ordering::Acquire);
            let now_chunks = self.chunks.load(Ordering::Relaxed);
            if events != seen || now_chunks != chunks {
                (seen, chunks) = (events, now_chunks);
                quiet = 0;
                continue;
            }
            if self.in_flight.load(Ordering::Acquire) > 0 {
                if self.waiting.load(Ordering::Acquire) > 0 {
                    quiet = 0;
                    continue;
                }
                quiet += 1;
                if !draining && quiet >= idle_ticks {
                    return Expired::Stalled;
                }
                continue;
            }
            quiet += 1;
            if self.head_pending.load(Ordering::Acquire) {
                if quiet >= head_ticks {
                    return Expired::HeadTooSlow;
                }
            } else if !draining && quiet >= idle_ticks {
                return Expired::Idle;
            }
        }
    }
}

/// One request in flight, until dropped.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Busy {
    /// The request waits on something other than its client (its origin) until the guard drops.
    pub fn waiting(&self) -> Waiting<'_> {
        self.0.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(&self.0)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.events.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request waiting on its origin, until dropped.
#[derive(Debug)]
pub struct Waiting<'a>(&'a Activity);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it is done.
pub(crate) struct Tracked {
    inner: Body,
    busy: Busy,
    /// Only for answers that stream: how their chunks go.
    streamed: Option<Streamed>,
}

/// A streamed answer's state, as its chunks go.
struct Streamed {
    /// Its last poll found no chunk ready: it waits on its source, not on the client.
    waiting: bool,
    /// On HTTP/2: what lets the watchdog reset its stream alone.
    watch: Option<Arc<StreamWatch>>,
}

impl Tracked {
    /// An answer complete in one frame (a preflight, a refusal, a redirect).
    pub fn whole(inner: Body, busy: Busy) -> Tracked {
        Tracked {
            inner,
            busy,
            streamed: None,
        }
    }

    /// An answer that may come in many chunks (from an origin, a file). On HTTP/2 its stream
    /// is reset if hyper does not ask for more for `timeouts.send` while it has more.
    pub fn streamed(inner: Body, busy: Busy) -> Tracked {
        let watch = in_stream_task().then(|| {
            let watch = Arc::new(StreamWatch::default());
            busy.0.watch_stream(Arc::clone(&watch));
            hand_over(Arc::clone(&watch));
            watch
        });
        Tracked {
            inner,
            busy,
            streamed: Some(Streamed {
                waiting: false,
                watch,
            }),
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Some(streamed) = &mut this.streamed else {
            return polled;
        };
        let activity = &this.busy.0;
        let pending = polled.is_pending();
        if pending != streamed.waiting {
            streamed.waiting = pending;
            if pending {
                activity.waiting.fetch_add(1, Ordering::AcqRel);
            } else {
                activity.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let chunk = matches!(polled, Poll::Ready(Some(Ok(_))));
        if chunk {
            activity.chunks.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(watch) = &streamed.watch {
            watch.polled(chunk);
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

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(streamed) = &self.streamed {
            if streamed.waiting {
                self.busy.0.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            if let Some(watch) = &streamed.watch {
                watch.done.store(true, Ordering::Release);
            }
        }
    }
}

/// One streamed answer on an HTTP/2 connection, seen from both its body (polls) and the
/// watchdog (stalls), and the way to cancel the task that sends it.
#[derive(Debug, Default)]
pub(crate) struct StreamWatch {
    /// Chunks handed to hyper.
    chunks: AtomicU64,
    /// The last poll handed a chunk over: hyper holds it until the client's window opens.
    holding: AtomicBool,
    done: AtomicBool,
    cancelled: AtomicBool,
    /// The task sending the stream, to wake when it is cancelled.
    task: Mutex<Option<Waker>>,
    /// The watchdog's own: `chunks` when it last looked, and for how many ticks it has not moved.
    seen: AtomicU64,
    still: AtomicU32,
}

impl StreamWatch {
    fn polled(&self, chunk: bool) {
        if chunk {
            self.chunks.fetch_add(1, Ordering::Relaxed);
        }
        if self.holding.load(Ordering::Relaxed) != chunk {
            self.holding.store(chunk, Ordering::Relaxed);
        }
    }

    /// One more watchdog tick: whether hyper has held this stream's chunk for `ticks` ticks.
    fn stalled_for(&self, ticks: u32) -> bool {
        let chunks = self.chunks.load(Ordering::Relaxed);
        if !self.holding.load(Ordering::Relaxed)
            || self.seen.swap(chunks, Ordering::Relaxed) != chunks
        {
            self.still.store(0, Ordering::Relaxed);
            return false;
        }
        self.still.fetch_add(1, Ordering::Relaxed) + 1 >= ticks
    }

    fn reset(&self) {
        self.cancelled.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.wake();
        }
    }
}

thread_local! {
    /// Set while a [`StreamTask`] polls its stream: a streamed answer made there is on HTTP/2.
    static IN_STREAM_TASK: Cell<bool> = const { Cell::new(false) };
    /// A streamed answer's watch, left by [`Tracked::streamed`] for the task polling it.
    static HANDED_OVER: Cell<Option<Arc<StreamWatch>>> = const { Cell::new(None) };
}

/// Runs hyper's HTTP/2 streams as [`StreamTask`]s, so the watchdog can cancel one.
///
/// A stream handed over while its connection is polled through [`poll_serving`] is first
/// polled right after that poll, in the connection's task: a stream answered at once (a
/// preflight, a refusal) is then done without a task of its own, whose spawn, scheduling and
/// teardown would cost more than the answer. Its answer is queued like one from a task, and
/// the connection, woken by it, writes all the answers of the streams it just read together.
/// (Polled during the connection's poll instead, each answer would be written on its own.) Only
/// a stream that has to wait (on its origin, on the client's window) is spawned, boxed as it
/// was polled; its task polls it again at once with the task's own waker, as futures
/// re-register theirs on every poll, so nothing that happened in between is missed.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamExecutor;

type HandedStream = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// Set while [`poll_serving`] polls a connection.
    static SERVING: Cell<bool> = const { Cell::new(false) };
    /// The streams handed over during that poll, in order.
    static HANDED_STREAMS: RefCell<Vec<HandedStream>> = const { RefCell::new(Vec::new()) };
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let task = Box::pin(StreamTask {
            stream,
            watch: None,
        });
        if SERVING.with(Cell::get) {
            HANDED_STREAMS.with_borrow_mut(|streams| streams.push(task));
        } else {
            tokio::spawn(task);
        }
    }
}

/// Polls a connection served with [`StreamExecutor`], then the streams it handed over meanwhile
/// (see there).
pub(crate) fn poll_serving<C: Future>(conn: Pin<&mut C>, cx: &mut Context<'_>) -> Poll<C::Output> {
    let outer = SERVING.with(|serving| serving.replace(true));
    let restore = Restore(outer);
    let polled = conn.poll(cx);
    drop(restore);
    let handed = HANDED_STREAMS
        .with_borrow_mut(|handed| (!handed.is_empty()).then(|| std::mem::take(handed)));
    let Some(mut streams) = handed else {
        return polled;
    };
    let mut answer = Context::from_waker(Waker::noop());
    for mut task in streams.drain(..) {
        // A panic ends the stream alone, as it would end its task: the connection goes on.
        match panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut answer))) {
            Ok(Poll::Pending) => {
                tokio::spawn(task);
            }
            Ok(Poll::Ready(())) => {}
            Err(_) => tracing::error!("an HTTP/2 stream panicked; it is reset"),
        }
    }
    // The list's room is kept for the next poll.
    HANDED_STREAMS.with_borrow_mut(|handed| {
        if handed.is_empty() {
            *handed = streams;
        }
    });
    polled
}

/// Restores [`SERVING`] however a connection's poll ends.
struct Restore(bool);

impl Drop for Restore {
    fn drop(&mut self) {
        SERVING.with(|serving| serving.set(self.0));
    }
}

pin_project_lite::pin_project! {
    /// One HTTP/2 stream's task (its request's handling, then its answer's body). Cancelled by
    /// its watch, it ends: hyper's stream is dropped, which resets it (RST_STREAM CANCEL), and
    /// the origin's body with it, which releases the origin connection.
    pub(crate) struct StreamTask<F> {
        #[pin]
        stream: F,
        watch: Option<Arc<StreamWatch>>,
    }
}

/// Whether this code runs inside a [`StreamTask`]'s poll, that is on an HTTP/2 stream.
fn in_stream_task() -> bool {
    IN_STREAM_TASK.with(Cell::get)
}

/// Leaves a streamed answer's watch for the [`StreamTask`] polling it.
fn hand_over(watch: Arc<StreamWatch>) {
    HANDED_OVER.with(|slot| slot.set(Some(watch)));
}

/// Restores the thread's stream-task marks however the poll ends.
struct InStreamTask(bool);

impl Drop for InStreamTask {
    fn drop(&mut self) {
        IN_STREAM_TASK.with(|mark| mark.set(self.0));
        HANDED_OVER.with(Cell::take);
    }
}

impl<F: Future<Output = ()>> Future for StreamTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if let Some(watch) = this.watch.as_ref() {
            let mut task = watch
                .task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
            drop(task);
            if watch.cancelled.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
        }
        let _restore = InStreamTask(IN_STREAM_TASK.with(|mark| mark.replace(true)));
        let polled = this.stream.poll(cx);
        if let Some(watch) = HANDED_OVER.with(Cell::take) {
            *this.watch = Some(watch);
        }
        polled
    }
}

/// A connection's socket, telling its [`Activity`] when the client sends something and when
/// it stops taking what is written.
pub(crate) struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I> Watched<I> {
    pub fn new(io: I, activity: Arc<Activity>) -> Watched<I> {
        Watched { io, activity }
    }

    fn written<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match &polled {
            Poll::Ready(Ok(_)) => self.activity.wrote(),
            Poll::Pending => self.activity.write_refused(),
            Poll::Ready(Err(_)) => {}
        }
        polled
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
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.written(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.written(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.written(polled)
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
    const SEND: Duration = Duration::from_secs(60);
    const DEADLINES: Deadlines = Deadlines {
        header_read: HEAD,
        idle: IDLE,
        send: SEND,
    };

    /// How long `expired` takes to fire on `activity`, in paused (virtual) time.
    async fn fires_after(activity: &Activity) -> (Expired, Duration) {
        let start = tokio::time::Instant::now();
        let why = activity.expired(DEADLINES, false).await;
        (why, start.elapsed())
    }

    fn within(elapsed: Duration, limit: Duration) -> bool {
        let period = DEADLINES.period();
        elapsed >= limit && elapsed <= limit + period
    }

    /// A connection that hands `streams` over to [`StreamExecutor`] on its first poll, as
    /// hyper's HTTP/2 server does, and is then done.
    fn handing_over(streams: Vec<HandedStream>) -> impl Future<Output = ()> {
        let mut streams = Some(streams);
        std::future::poll_fn(move |_| {
            use hyper::rt::Executor;
            for stream in streams.take().into_iter().flatten() {
                StreamExecutor.execute(stream);
            }
            Poll::Ready(())
        })
    }

    #[tokio::test]
    async fn a_stream_answered_at_once_is_done_right_after_its_connection_is_polled() {
        let done = Arc::new(AtomicBool::new(false));
        let marked = Arc::clone(&done);
        let stream: HandedStream = Box::pin(async move {
            assert!(in_stream_task(), "polled as a stream task");
            marked.store(true, Ordering::Release);
        });
        let conn = std::pin::pin!(handing_over(vec![stream]));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(poll_serving(conn, &mut cx).is_ready());
        assert!(
            done.load(Ordering::Acquire),
            "done before the poll returned"
        );
        assert!(!in_stream_task(), "the mark is restored");
        assert!(!SERVING.with(Cell::get), "no longer serving");
    }

    #[tokio::test]
    async fn a_stream_that_waits_is_spawned_and_woken_by_what_it_waits_for() {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let stream: HandedStream = Box::pin(async move {
            let _ = released.await;
            let _ = finish.send(());
        });
        let mut conn = std::pin::pin!(handing_over(vec![stream]));
        std::future::poll_fn(|cx| poll_serving(conn.as_mut(), cx)).await;
        // Sent before the spawned task first runs: its own poll must still see it.
        release.send(()).expect("the stream waits for it");
        finished.await.expect("the stream finished in its own task");
    }

    #[tokio::test]
    async fn a_stream_that_panics_ends_alone() {
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let streams: Vec<HandedStream> = vec![
            Box::pin(async { panic!("a stream's bug") }),
            Box::pin(async move {
                let _ = finish.send(());
            }),
        ];
        let mut conn = std::pin::pin!(handing_over(streams));
        std::future::poll_fn(|cx| poll_serving(conn.as_mut(), cx)).await;
        finished.await.expect("the next stream is served");
    }

    #[tokio::test]
    async fn a_stream_handed_over_outside_a_served_connection_gets_its_own_task() {
        use hyper::rt::Executor;
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        StreamExecutor.execute(async move {
            let _ = finish.send(());
        });
        finished.await.expect("spawned");
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
        let waiting = busy.waiting();
        let watch = activity.expired(DEADLINES, false);
        let outlived = tokio::time::timeout(IDLE * 3, watch).await;
        assert!(outlived.is_err(), "fired with a request in flight");
        drop(waiting);
        drop(busy);
        let (why, after) = fires_after(&activity).await;
        assert_eq!(why, Expired::Idle);
        assert!(within(after, IDLE), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_streams_do_not_start_a_head() {
        for activity in [Activity::new(true), Activity::new(false)] {
            activity.received(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
            drop(activity.begin());
            activity.received(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00");
            let (why, after) = fires_after(&activity).await;
            assert_eq!(why, Expired::Idle);
            assert!(within(after, IDLE), "{after:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_must_send_its_first_request_within_header_read() {
        // By ALPN, by a preface in one read, and by a preface one byte at a time.
        let alpn = Activity::new(true);
        let whole = Activity::new(false);
        whole.received(H2_PREFACE);
        let dribbled = Activity::new(false);
        for byte in H2_PREFACE.chunks(1) {
            dribbled.received(byte);
        }
        assert!(dribbled.http2.load(Ordering::Acquire));
        for activity in [alpn, whole, dribbled] {
            activity.received(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
            let (why, after) = fires_after(&activity).await;
            assert_eq!(why, Expired::HeadTooSlow);
            assert!(within(after, HEAD), "{after:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_only_begins_like_the_preface_is_http1() {
        for head in [&b"PRI / HTTP/1.1\r\n"[..], b"PRI * HTTP/2.0\r\n\r\nXX"] {
            let activity = Activity::new(false);
            for byte in head.chunks(1) {
                activity.received(byte);
            }
            assert!(!activity.http2.load(Ordering::Acquire), "{head:?}");
            // A first request, then bytes: a new head, as on any HTTP/1 connection.
            drop(activity.begin());
            activity.received(b"P");
            let (why, after) = fires_after(&activity).await;
            assert_eq!(why, Expired::HeadTooSlow, "{head:?}");
            assert!(within(after, HEAD), "{after:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_nothing_for_send_is_dropped_even_mid_request() {
        let activity = Activity::new(false);
        let _busy = activity.begin();
        activity.write_refused();
        let (why, after) = fires_after(&activity).await;
        assert_eq!(why, Expired::SendStalled);
        assert!(within(after, SEND), "{after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_keeps_taking_bytes_is_not_stalled() {
        let activity = Activity::new(false);
        let busy = activity.begin();
        let _waiting = busy.waiting();
        let writer = {
            let activity = Arc::clone(&activity);
            async move {
                // Refused, then taking a little, again and again: a slow reader, not a stalled one.
                loop {
                    activity.write_refused();
                    tokio::time::sleep(SEND / 2).await;
                    activity.wrote();
                }
            }
        };
        let outlived = tokio::time::timeout(SEND * 4, async {
            tokio::select! {
                why = activity.expired(DEADLINES, false) => why,
                () = writer => unreachable!("the writer loops"),
            }
        })
        .await;
        assert!(outlived.is_err(), "fired: {outlived:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_all_stall_for_idle_close_the_connection() {
        let activity = Activity::new(true);
        let busy = activity.begin();
        // A streamed answer handed one chunk to hyper, which holds it.
        let mut body = std::pin::pin!(Tracked::streamed(crate::gateway::full("chunk"), busy));
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        assert!(matches!(frame, Some(Ok(_))));
        let (why, after) = fires_after(&activity).await;
        assert_eq!(why, Expired::Stalled);
        assert!(within(after, IDLE), "{after:?}");
    }

    /// A body whose source never sends anything.
    struct Silent;

    impl HttpBody for Silent {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_waiting_on_its_origin_is_not_stalled() {
        let activity = Activity::new(true);
        let busy = activity.begin();
        let mut body = std::pin::pin!(Tracked::streamed(Body::new(Silent), busy));
        let polled = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
        assert!(polled.is_pending());
        let outlived = tokio::time::timeout(IDLE * 3, activity.expired(DEADLINES, false)).await;
        assert!(outlived.is_err(), "fired: {outlived:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_settles_only_after_a_quiet_time_without_a_request() {
        const QUIET: Duration = Duration::from_millis(200);
        let activity = Activity::new(false);
        // A new connection waits for its first head: never settled while it may be on its way.
        let waiting = tokio::time::timeout(QUIET * 10, activity.settled(QUIET)).await;
        assert!(waiting.is_err(), "settled before its first request");

        let busy = activity.begin();
        let in_flight = tokio::time::timeout(QUIET * 10, activity.settled(QUIET)).await;
        assert!(in_flight.is_err(), "settled with a request in flight");
        drop(busy);
        let start = tokio::time::Instant::now();
        activity.settled(QUIET).await;
        assert!(start.elapsed() >= QUIET, "{:?}", start.elapsed());
        assert!(start.elapsed() <= QUIET * 2, "{:?}", start.elapsed());

        let http2 = Activity::new(true);
        let start = tokio::time::Instant::now();
        http2.settled(QUIET).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "HTTP/2 closes with a GOAWAY at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_stream_held_for_send_is_cancelled_alone() {
        let activity = Activity::new(true);
        let _other = activity.begin();
        let watch = Arc::new(StreamWatch::default());
        activity.watch_stream(Arc::clone(&watch));
        watch.polled(true);
        let task = tokio::spawn(StreamTask {
            stream: std::future::pending::<()>(),
            watch: Some(Arc::clone(&watch)),
        });
        let start = tokio::time::Instant::now();
        let watchdog = activity.expired(DEADLINES, false);
        let ended = tokio::time::timeout(SEND * 2, async {
            tokio::select! {
                why = watchdog => panic!("the connection expired: {why:?}"),
                done = task => done,
            }
        })
        .await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
        assert!(within(start.elapsed(), SEND), "{:?}", start.elapsed());
    }
}
