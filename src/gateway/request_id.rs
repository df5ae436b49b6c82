//! Request IDs for corsgate's own answers (`x-amz-request-id` and `<RequestId>` of S3 error
//! bodies), so a client's bug report can be matched to an access-log line.
//!
//! S3's IDs are 16 upper-case hex characters; ours look the same: a process-wide counter
//! started at a value drawn from the clock and the process id, so IDs are unique within a
//! process and unlikely to repeat across restarts or instances. Not a secret, not a nonce.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// One request's ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    /// The `x-amz-request-id` value, marked sensitive: HPACK then sends it as a never-indexed
    /// literal. A value unique to every response would otherwise be inserted into the h2
    /// dynamic table each time, evicting the constant CORS headers that should stay indexed
    /// (see `benches/load/README.md`, "Numbers behind the code").
    pub(crate) fn header_value(self) -> HeaderValue {
        // 16 hex digits are always a valid header value.
        let mut value =
            HeaderValue::from_bytes(&self.hex()).expect("hex digits are a valid header value");
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
    }
}
