//! The rules a route answers with at one moment: an immutable [`Snapshot`] behind an
//! `ArcSwap`, so every request reads the current one without a lock and a reload swaps it
//! atomically, never disturbing a request that already holds the old one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};

// The preflight answers are built once per snapshot, when it is installed, never on the
// request path.
use super::preflight::PreflightTemplates;
use crate::cors::BucketCors;

/// Generations are unique across all routes of the process, so one preflight cache can serve
/// every route: its keys start with the generation, which names both the route and the rules.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// One version of a route's rules.
#[derive(Debug)]
pub struct Snapshot {
    /// Unique per installed snapshot; preflight cache keys include it, so a cached answer can
    /// never outlive the rules it was computed from.
    pub generation: u64,
    pub cors: BucketCors,
    /// Every allowed preflight's headers, prebuilt per rule.
    pub preflight: PreflightTemplates,
}

impl Snapshot {
    pub fn new(cors: BucketCors) -> Snapshot {
        Snapshot {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            preflight: PreflightTemplates::new(&cors),
            cors,
        }
    }

    /// docs/cors-semantics.md#deviation-vary: "a route that has CORS rules" is one whose bucket has a configuration.
    pub(crate) fn has_rules(&self) -> bool {
        matches!(self.cors, BucketCors::Enabled(_))
    }
}

/// The current snapshot of one route, swapped atomically.
#[derive(Debug)]
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
}

impl SnapshotCell {
    pub fn new(cors: BucketCors) -> SnapshotCell {
        SnapshotCell {
            current: ArcSwap::from_pointee(Snapshot::new(cors)),
        }
    }

    /// The snapshot in force now; cheap and lock-free, meant to be called once per request.
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Installs new rules under a fresh generation and returns it. Requests already holding
    /// the old snapshot finish with it.
    pub fn install(&self, cors: BucketCors) -> u64 {
        let snapshot = Snapshot::new(cors);
        let generation = snapshot.generation;
        self.current.store(Arc::new(snapshot));
        generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installing_rules_bumps_the_generation() {
        let cell = SnapshotCell::new(BucketCors::NotConfigured);
        let before = cell.load().generation;
        let installed = cell.install(BucketCors::NoSuchBucket);
        assert!(installed > before);
        assert_eq!(cell.load().generation, installed);
        assert!(matches!(cell.load().cors, BucketCors::NoSuchBucket));
    }
}
