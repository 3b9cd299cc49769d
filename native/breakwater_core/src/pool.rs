//! The ring pool: the fixed budget of segments every subject draws from.
//!
//! Invariant: the pool has `segments` slots, built once; a slot's segment is at every
//! moment either free, owned by exactly one subject's stripe chain, or
//! *missing* (its file could not be created: a full or unwritable disk at start; the
//! store retries). Segments move between the free stack and chains as a `Box` (or the only
//! `Arc`), so ownership is checked by the compiler. Memory use is the configured
//! budget, [`PoolConfig::footprint_bytes`], plus constant overhead: pool segments are
//! mapped pool files (or anonymous memory with `durability: :memory`), reused for the
//! life of the node, never allocated again.
//!
//! The free segments are a stack (last freed, first reused) behind a mutex taken once
//! per segment handed out or given back (every `segment_capacity` events at most): the
//! segment reused is the one whose pages were written last, still mapped, dirty and in
//! cache, where a queue would cycle through the whole pool and fault its pages in
//! again and again (measured: about 50 ns per 256-byte event on mapped pool files).

use crate::policy::PoolConfig;
use crate::segment::{Geometry, Segment};
use parking_lot::Mutex;

/// The shared budget of segments.
pub struct RingPool {
    // Boxed: segments move between the stack and the subjects' chains without copying.
    #[allow(clippy::vec_box)]
    free: Mutex<Vec<Box<Segment>>>,
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
        debug_assert!(
            free.len() <= config.segments as usize,
            "more free segments than slots"
        );
        let mut stack = Vec::with_capacity(config.segments as usize);
        stack.extend(free);
        Self {
            free: Mutex::new(stack),
            config,
            missing: Mutex::new(missing),
        }
    }

    /// A free segment (the last one given back), if any is left.
    #[inline]
    pub fn take(&self) -> Option<Box<Segment>> {
        self.free.lock().pop()
    }

    /// Returns a segment to the pool, marked free.
    #[inline]
    pub fn give(&self, mut segment: Box<Segment>) {
        segment.deactivate();
        let mut free = self.free.lock();
        debug_assert!(
            free.len() < self.config.segments as usize,
            "a segment returned twice"
        );
        free.push(segment);
    }

    /// Segments currently free.
    pub fn free_segments(&self) -> usize {
        self.free.lock().len()
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
