//! The ring pool: the fixed budget of segments every subject draws from.
//!
//! Invariant: the pool builds `segments` segments once, at creation, and never
//! allocates another; a segment is at every moment either in the free queue or owned by
//! exactly one subject's spool (it moves between them as a `Box`, so ownership is
//! checked by the compiler). Memory use is therefore the configured budget,
//! [`PoolConfig::footprint_bytes`], plus constant overhead.
//!
//! The free queue is crossbeam's bounded lock-free `ArrayQueue`, sized to hold every
//! segment, so returning a segment never fails.

use crate::policy::PoolConfig;
use crate::segment::Segment;
use crossbeam_queue::ArrayQueue;

/// The shared budget of segments.
pub struct RingPool {
    free: ArrayQueue<Box<Segment>>,
    config: PoolConfig,
}

impl RingPool {
    /// Builds every segment of `config` (which the caller has validated).
    pub fn new(config: PoolConfig) -> Self {
        let free = ArrayQueue::new(config.segments.max(1) as usize);
        for _ in 0..config.segments {
            let pushed = free.push(Box::new(Segment::new(
                config.segment_capacity,
                config.segment_bytes,
            )));
            debug_assert!(pushed.is_ok());
        }
        Self { free, config }
    }

    /// A free segment, if any is left.
    #[inline]
    pub fn take(&self) -> Option<Box<Segment>> {
        self.free.pop()
    }

    /// Returns a segment to the pool.
    #[inline]
    pub fn give(&self, segment: Box<Segment>) {
        // The queue holds every segment the pool built, so it has room for any of them.
        let returned = self.free.push(segment);
        debug_assert!(returned.is_ok(), "a segment was returned twice");
    }

    /// Segments currently free.
    pub fn free_segments(&self) -> usize {
        self.free.len()
    }

    /// The pool's geometry.
    pub fn config(&self) -> &PoolConfig {
        &self.config
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
            max_event_bytes: 64,
        });
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        let c = pool.take().unwrap();
        assert!(pool.take().is_none());
        assert_eq!(a.footprint_bytes(), 64 + 16);
        pool.give(a);
        assert_eq!(pool.free_segments(), 1);
        pool.give(b);
        pool.give(c);
        assert_eq!(pool.free_segments(), 3);
    }
}
