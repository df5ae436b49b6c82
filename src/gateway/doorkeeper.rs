//! The preflight cache's doorkeeper: a small Bloom filter that lets a key into the cache only
//! the second time it is seen within a window (TinyLFU's doorkeeper).
//!
//! A preflight key seen once is, under a flood of random origins, never seen again: inserting
//! it would cost several fresh evaluations (moka's write path and its later eviction) and save
//! nothing. Behind this filter a one-off key costs one hash and one atomic bit test; a key that
//! comes back is cached on its second visit. After `capacity / 8` admissions the filter is
//! cleared, so it forgets the flood and its false-positive rate stays near 5%. A false positive
//! only means one key is cached a visit early; a reset only means a popular key is evaluated
//! afresh once more. Neither ever changes an answer.
//!
//! Lock-free and shared by every worker; never allocates after construction.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Bits in the filter: 16 KiB.
const BITS: usize = 1 << 17;
const WORDS: usize = BITS / 64;
/// Admissions between resets: at 1/8 of the bits, with two bits per key, about 5% false
/// positives just before a reset.
const RESET_AFTER: usize = BITS / 8;

pub(crate) struct Doorkeeper {
    words: Box<[AtomicU64]>,
    admitted: AtomicUsize,
    /// Keyed per process, so no one can aim keys at chosen bits.
    hasher: RandomState,
}

impl Default for Doorkeeper {
    fn default() -> Self {
        Doorkeeper {
            words: (0..WORDS).map(|_| AtomicU64::new(0)).collect(),
            admitted: AtomicUsize::new(0),
            hasher: RandomState::new(),
        }
    }
}

impl Doorkeeper {
    /// Whether `key` was seen since the last reset; records it as seen either way.
    pub(crate) fn seen_before(&self, key: &[u8]) -> bool {
        let hash = self.hasher.hash_one(key);
        // Both bits in one word (a blocked Bloom filter): one load, at most one write.
        let word = &self.words[(hash as usize) % WORDS];
        let bits = (1u64 << (hash >> 52 & 63)) | (1u64 << (hash >> 58));
        if word.load(Ordering::Relaxed) & bits == bits {
            return true;
        }
        word.fetch_or(bits, Ordering::Relaxed);
        if self.admitted.fetch_add(1, Ordering::Relaxed) + 1 >= RESET_AFTER {
            self.reset();
        }
        false
    }

    fn reset(&self) {
        self.admitted.store(0, Ordering::Relaxed);
        for word in self.words.iter() {
            word.store(0, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for Doorkeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorkeeper")
            .field("admitted", &self.admitted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_admitted_on_its_second_visit() {
        let door = Doorkeeper::default();
        assert!(!door.seen_before(b"https://a.example"));
        assert!(door.seen_before(b"https://a.example"));
        assert!(!door.seen_before(b"https://b.example"));
    }

    #[test]
    fn a_flood_is_forgotten_and_false_positives_stay_rare() {
        let door = Doorkeeper::default();
        let mut false_positives = 0;
        let n = 4 * RESET_AFTER;
        for i in 0..n {
            if door.seen_before(format!("https://u{i}.example").as_bytes()) {
                false_positives += 1;
            }
        }
        // At most ~5% just before each reset, far less on average.
        assert!(false_positives < n / 25, "{false_positives} of {n}");
        assert!(door.admitted.load(Ordering::Relaxed) < RESET_AFTER);
    }
}
