//! The ring pool: the fixed budget of segments every subject draws from.
//!
//! Invariant: the pool has `segments` slots, built once; a slot's segment is at every
//! moment either in the free queue, owned by exactly one subject's stripe chain, or
//! *missing* (its file could not be created: a full or unwritable disk at start; the
//! store retries). Segments move between the queue and chains as a `Box` (or the only
//! `Arc`), so ownership is checked by the compiler. Memory use is the configured
//! budget, [`PoolConfig::footprint_bytes`], plus constant overhead: pool segments are
//! mapped pool files (or anonymous memory with `durability: :memory`), reused for the
//! life of the node, never allocated again.
//!
//! The free queue is crossbeam's bounded lock-free `ArrayQueue`, sized to hold every
//! slot, so returning a segment never fails.

use crate::policy::PoolConfig;
use crate::segment::{Geometry, Segment};
use crossbeam_queue::ArrayQueue;
use parking_lot::Mutex;

/// The shared budget of segments.
pub struct RingPool {
    free: ArrayQueue<Box<Segment>>,
    config: PoolConfig,
    missing: Mutex<Vec<u32>>,
}

impl RingPool {
    /// A pool of anonymous segments for `config` (which the caller has validated).
    pub fn new(config: PoolConfig) -> Self {
        let segments = (0..config.segments)
            .map(|_| {
                Box::new(Segment::anon(config.geometry()).expect("anonymous memory for the pool"))
            })
            .collect();
        Self::with_segments(config, segments, Vec::new())
    }

    /// A pool of the given free segments; `missing` slots have none yet.
    pub fn with_segments(config: PoolConfig, free: Vec<Box<Segment>>, missing: Vec<u32>) -> Self {
        let queue = ArrayQueue::new(config.segments.max(1) as usize);
        for s in free {
            let pushed = queue.push(s);
            debug_assert!(pushed.is_ok(), "more free segments than slots");
        }
        Self {
            free: queue,
            config,
            missing: Mutex::new(missing),
        }
    }

    /// A free segment, if any is left.
    #[inline]
    pub fn take(&self) -> Option<Box<Segment>> {
        self.free.pop()
    }

    /// Returns a segment to the pool, marked free.
    #[inline]
    pub fn give(&self, mut segment: Box<Segment>) {
        segment.deactivate();
        // The queue holds every segment the pool built, so it has room for any of them.
        let returned = self.free.push(segment);
        debug_assert!(returned.is_ok(), "a segment was returned twice");
    }

    /// Segments currently free.
    pub fn free_segments(&self) -> usize {
        self.free.len()
    }

    /// Slots without a segment (their file could not be created yet).
    pub fn missing_segments(&self) -> usize {
        self.missing.lock().len()
    }

    /// The missing slots, taken out to retry them.
    pub fn take_missing(&self) -> Vec<u32> {
        std::mem::take(&mut *self.missing.lock())
    }

    /// Puts back slots that are still missing.
    pub fn put_missing(&self, slots: Vec<u32>) {
        self.missing.lock().extend(slots);
    }

    /// The pool's geometry.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// A segment's geometry in this pool.
    pub fn geometry(&self) -> Geometry {
        self.config.geometry()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_its_budget_and_no_more() {
        let pool = RingPool::new(PoolConfig {
            segments: 3,
            segment_capacity: 4,
            segment_bytes: 64,
            max_event_bytes: 40,
        });
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        let c = pool.take().unwrap();
        assert!(pool.take().is_none());
        assert_eq!(a.geometry().image_bytes(), 4096 + 64);
        pool.give(a);
        assert_eq!(pool.free_segments(), 1);
        pool.give(b);
        pool.give(c);
        assert_eq!(pool.free_segments(), 3);
        assert_eq!(pool.missing_segments(), 0);
    }
}
