//! The client's request body on its way to an origin, and the silence timer every transfer
//! uses: shared by the forwarding path ([`super::proxy`]) and the origin connection pool
//! ([`super::pool`]), which hands these bodies to its connections.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// One side's silence in a transfer, for a body or a connection to time: it starts with a wait
/// that follows progress and ends with the next progress, so it never runs while the other side
/// is the one holding things up. The timer is made on the first wait: a transfer that never
/// waits (most small bodies) never needs one.
pub(super) struct Silence {
    timer: Option<Pin<Box<Sleep>>>,
    limit: Duration,
    /// The last poll waited: the clock is running.
    waiting: bool,
}

impl Silence {
    pub(super) fn new(limit: Duration) -> Silence {
        Silence {
            timer: None,
            limit,
            waiting: false,
        }
    }

    pub(super) fn limit(&self) -> Duration {
        self.limit
    }

    /// Something moved: the next wait starts a new silence.
    pub(super) fn progressed(&mut self) {
        self.waiting = false;
    }

    /// A wait with a fixed end, on the same timer: ready once `deadline` has passed. The next
    /// [`Silence::poll_expired`] starts a new silence.
    pub(super) fn poll_deadline(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        self.waiting = false;
        self.poll_until(cx, deadline)
    }

    /// A wait: ready once the silence has lasted `limit` (the caller then fails the transfer).
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = match &self.timer {
            Some(timer) if self.waiting => timer.deadline(),
            _ => Instant::now() + self.limit,
        };
        self.waiting = true;
        self.poll_until(cx, deadline)
    }

    /// The one timer, made on the first wait and moved after that (moving a registered timer
    /// costs next to nothing, making one costs a lock).
    fn poll_until(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx)
    }
}

/// Whose turn it is while a body is uploaded: the client's (to send the next piece) or the
/// origin's (to take the piece it was handed, or, the upload done, to answer). Written by the
/// [`Upload`] in the origin connection's task, read by the request waiting for the answer.
pub(super) struct Turn {
    started: Instant,
    /// When the origin's turn began, in nanoseconds after `started`, plus one; 0 while it is
    /// the client's turn.
    origin_since: AtomicU64,
    /// The client stayed silent past `body_read`.
    client_stalled: AtomicBool,
}

impl Turn {
    fn new(started: Instant) -> Turn {
        // Until the upload is first wanted, the origin (connecting, reading the head) has it.
        Turn {
            started,
            origin_since: AtomicU64::new(1),
            client_stalled: AtomicBool::new(false),
        }
    }

    fn to_origin(&self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.origin_since.store(nanos + 1, Ordering::Relaxed);
    }

    fn to_client(&self) {
        self.origin_since.store(0, Ordering::Relaxed);
    }

    /// When the origin's current turn began; `None` during the client's.
    pub(super) fn origin_since(&self) -> Option<Instant> {
        match self.origin_since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.started + Duration::from_nanos(n - 1)),
        }
    }

    pub(super) fn client_stalled(&self) -> bool {
        self.client_stalled.load(Ordering::Relaxed)
    }
}

/// The client's request body on its way to the origin: fails when the client stays silent for
/// `body_read` in the middle of it, which aborts the origin request; and tells whose turn it
/// is, for the origin's silence deadline.
pub struct Upload {
    inner: Incoming,
    /// `None` when there is no body: nothing to share.
    turn: Option<Arc<Turn>>,
    /// The client's: it runs only while the origin wants more, never while the origin is slow
    /// to take it.
    silence: Silence,
}

/// The client sent nothing of its body for too long.
#[derive(Debug, thiserror::Error)]
#[error("the client sent nothing for {0:?} in the middle of its request body")]
pub(crate) struct ClientStalled(Duration);

impl Upload {
    pub(super) fn new(
        inner: Incoming,
        limit: Duration,
        started: Instant,
    ) -> (Upload, Option<Arc<Turn>>) {
        let turn = (!inner.is_end_stream()).then(|| Arc::new(Turn::new(started)));
        let upload = Upload {
            inner,
            turn: turn.clone(),
            silence: Silence::new(limit),
        };
        (upload, turn)
    }
}

impl HttpBody for Upload {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.silence.progressed();
                if let Some(turn) = &self.turn {
                    turn.to_origin();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if let Some(turn) = &self.turn {
                    turn.to_client();
                }
                ready!(self.silence.poll_expired(cx));
                if let Some(turn) = &self.turn {
                    turn.client_stalled.store(true, Ordering::Relaxed);
                }
                let limit = self.silence.limit();
                Poll::Ready(Some(Err(Box::new(ClientStalled(limit)))))
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
