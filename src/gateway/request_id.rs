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
    pub fn header_value(self) -> HeaderValue {
        let mut buf = [0u8; 16];
        self.write_hex(&mut buf);
        // 16 hex digits are always a valid header value.
        HeaderValue::from_bytes(&buf).expect("hex digits are a valid header value")
    }

    fn write_hex(self, buf: &mut [u8; 16]) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        for (i, b) in buf.iter_mut().enumerate() {
            *b = HEX[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
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
