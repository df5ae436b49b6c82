//! Request IDs for corsgate's own answers (`x-amz-request-id` and `<RequestId>` of S3 error
//! bodies), so a client's bug report can be matched to an access-log line.
//!
//! S3's IDs are 16 upper-case hex characters; ours look the same: a process-wide counter
//! started at a value drawn from the clock and the process id, so IDs are unique within a
//! process and unlikely to repeat across restarts or instances. Not a secret, not a nonce.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::HeaderValue;

/// Hands out request IDs.
#[derive(Debug)]
pub struct RequestIds {
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // splitmix64 finaliser: neighbouring start times give unrelated start values.
        let mut z = nanos ^ (u64::from(std::process::id()) << 32);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        RequestIds {
            next: AtomicU64::new(z ^ (z >> 31)),
        }
    }
}

impl RequestIds {
    pub fn next(&self) -> RequestId {
        RequestId(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Characters of an ID.
const ID_LEN: usize = 16;
/// IDs one shared buffer holds.
const IDS_PER_BUFFER: usize = 256;

thread_local! {
    /// Where the thread writes its `x-amz-request-id` values: each is a slice of it, and a new
    /// buffer is allocated only when it is full while some of its values are still held.
    static ID_BYTES: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(ID_LEN * IDS_PER_BUFFER));
}

/// One request's ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    /// The `x-amz-request-id` value, marked sensitive: HPACK then sends it as a never-indexed
    /// literal. A value unique to every response would otherwise be inserted into the h2
    /// dynamic table each time, evicting the constant CORS headers that should stay indexed
    /// (see `benches/load/README.md`, "Numbers behind the code").
    ///
    /// The digits are written into a buffer the thread's IDs share (see [`ID_BYTES`]), so a
    /// value costs a reference count, not an allocation and a free of its own.
    pub(crate) fn header_value(self) -> HeaderValue {
        let digits = ID_BYTES.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            // Takes back the whole buffer once every value written before is gone.
            buffer.reserve(ID_LEN);
            buffer.extend_from_slice(&self.hex());
            buffer.split().freeze()
        });
        // 16 hex digits are always a valid header value.
        let mut value =
            HeaderValue::from_maybe_shared(digits).expect("hex digits are a valid header value");
        value.set_sensitive(true);
        value
    }

    /// The 16 upper-case hex digits, without formatting machinery or allocation.
    pub(crate) fn hex(self) -> [u8; 16] {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let mut buf = [0u8; 16];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        buf
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_look_like_s3s() {
        let ids = RequestIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 16);
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
        assert_eq!(a.header_value(), text.as_str());
        assert!(a.header_value().is_sensitive());
    }

    #[test]
    fn header_values_stay_distinct_across_shared_buffers() {
        let ids = RequestIds::default();
        // Held values force new buffers; dropped ones let a buffer be taken back.
        let held: Vec<(RequestId, HeaderValue)> = (0..3 * IDS_PER_BUFFER)
            .map(|_| {
                let id = ids.next();
                (id, id.header_value())
            })
            .collect();
        for (id, value) in &held {
            assert_eq!(value, id.to_string().as_str());
        }
        drop(held);
        for _ in 0..2 * IDS_PER_BUFFER {
            let id = ids.next();
            assert_eq!(id.header_value(), id.to_string().as_str());
        }
    }
}
