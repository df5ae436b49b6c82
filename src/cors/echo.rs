//! How a grant echoes what the request sent (`Access-Control-Allow-Origin` for a rule without
//! `*`, `Access-Control-Allow-Headers`): a reference to the request's own bytes, or bytes of
//! the answer's own.
//!
//! A request's header values may be slices of its connection's buffers (hyper's HTTP/1.1 read
//! buffer; h2's decoder splits HTTP/2 values off its own), and an answer holding one keeps the
//! whole buffer alive as long as the answer lives. An HTTP/1.1 answer doing so makes the server
//! allocate a new read buffer for its next request; a cached answer would keep a buffer for the
//! entry's lifetime, uncounted by the cache's bounds. Such answers copy what they echo instead,
//! and a copy is shared with the previous answer that echoed the same bytes on this thread:
//! preflights in a row mostly come from the same page asking for the same headers, and a fresh
//! copy would cost an allocation and a free per answer.

use std::cell::Cell;
use std::thread::LocalKey;

use http::HeaderValue;

/// How echoed values are made (see the module comment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Echo {
    /// A reference to the request's value: nothing to copy (HTTP/2 answers written at once,
    /// which hold the decoder's buffer only until then, and every caller outside the server).
    #[default]
    Shared,
    /// The answer's own bytes (HTTP/1.1, and every answer kept past its request, such as a
    /// cached preflight).
    Copied,
}

impl Echo {
    /// `value` as an answer echoes it: the request's own, or a copy remembered in `last`.
    #[inline]
    pub(crate) fn of(
        self,
        value: &HeaderValue,
        last: &'static LocalKey<Cell<Option<HeaderValue>>>,
    ) -> HeaderValue {
        match self {
            Echo::Shared => value.clone(),
            Echo::Copied => copied(value, last),
        }
    }
}

/// `value` in bytes of the answer's own. Out of line: the shared echo is the one to keep small
/// enough to inline.
#[inline(never)]
fn copied(value: &HeaderValue, last: &'static LocalKey<Cell<Option<HeaderValue>>>) -> HeaderValue {
    // A request's value makes a valid answer value: `None` cannot happen, and the request's own
    // value would still be right.
    remembered(last, value.as_bytes()).unwrap_or_else(|| value.clone())
}

/// Longest value remembered per thread; longer ones are copied afresh each time.
pub(crate) const MAX_REMEMBERED: usize = 256;

thread_local! {
    /// The last `Access-Control-Allow-Origin` echoed on this thread.
    pub(crate) static LAST_ORIGIN: Cell<Option<HeaderValue>> = const { Cell::new(None) };
    /// The last `Access-Control-Allow-Headers` made on this thread.
    pub(crate) static LAST_ALLOW_HEADERS: Cell<Option<HeaderValue>> = const { Cell::new(None) };
}

/// A value holding `bytes`: `last`'s when it holds the same bytes (a reference count more),
/// else a new one, remembered in `last` if it is no longer than [`MAX_REMEMBERED`]. `None`
/// only if `bytes` is no valid value (callers pass bytes a value held or the core built).
pub(crate) fn remembered(
    last: &'static LocalKey<Cell<Option<HeaderValue>>>,
    bytes: &[u8],
) -> Option<HeaderValue> {
    last.with(|last| {
        let held = last.take();
        if let Some(held) = held.filter(|held| held.as_bytes() == bytes) {
            last.set(Some(held.clone()));
            return Some(held);
        }
        let value = HeaderValue::from_bytes(bytes).ok()?;
        if bytes.len() <= MAX_REMEMBERED {
            last.set(Some(value.clone()));
        }
        Some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_bytes_twice_are_one_value_and_other_bytes_a_new_one() {
        let first = remembered(&LAST_ORIGIN, b"https://a.example").expect("valid");
        let again = remembered(&LAST_ORIGIN, b"https://a.example").expect("valid");
        assert_eq!(first, "https://a.example");
        assert_eq!(
            first.as_bytes().as_ptr(),
            again.as_bytes().as_ptr(),
            "shared, not copied again"
        );
        let other = remembered(&LAST_ORIGIN, b"https://b.example").expect("valid");
        assert_eq!(other, "https://b.example");
        assert_ne!(other.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        assert_eq!(remembered(&LAST_ORIGIN, b"bad\nvalue"), None);
    }
}
