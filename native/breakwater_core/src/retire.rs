//! Deferred reclamation: what the registry removed is freed only after a grace period.
//!
//! The registry's lookups take no lock, count no reference and write nothing (that is
//! what lets `check_backpressure/1` scale with schedulers), so a removal cannot know
//! whether some thread still holds the removed subject or table it looked up a moment
//! before. Every such hold is bounded: a reference lives for one NIF call, and a NIF
//! call returns in microseconds (no NIF blocks or waits, and none holds a reference
//! across calls). So a removed value is *retired* here with the time of its removal and
//! dropped once `grace_ms` has passed, far longer than any NIF call lasts
//! (`reclaim_grace_ms`, default 10 s: a thousand times the 10 ms a NIF call may take
//! under heavy preemption).
//!
//! Invariant: a value is dropped only by [`Retired::reclaim`], and only when
//! `now_ms >= retired_at_ms + grace_ms`. Until then it stays allocated and unchanged
//! (retired values are owned here and never handed out again), so a lookup that loaded
//! its pointer before the removal reads a whole, if removed, value.
//!
//! This is epoch-based reclamation with the epoch boundaries given by time rather than
//! by per-thread announcements: an announcement would be a write on every lookup, the
//! cost this design exists to avoid. The time source is the real monotonic clock of the
//! caller, never the clock tests move forward.
//!
//! Memory is bounded: the registry counts retired subjects against the subject caps
//! until they are dropped, so removals cannot outrun reclamation.

use parking_lot::Mutex;
use std::collections::VecDeque;

/// Values removed from a shared structure, waiting out their grace period.
pub struct Retired<T> {
    queue: Mutex<VecDeque<(u64, T)>>,
}

impl<T> Default for Retired<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl<T> Retired<T> {
    /// Retires `value`, removed at `now_ms`. Times must not decrease between calls.
    pub fn retire(&self, now_ms: u64, value: T) {
        self.queue.lock().push_back((now_ms, value));
    }

    /// Drops every value retired at least `grace_ms` before `now_ms`, oldest first,
    /// handing each to `dropped` just before it goes. Returns how many went.
    pub fn reclaim(&self, now_ms: u64, grace_ms: u64, mut dropped: impl FnMut(&T)) -> usize {
        let due: Vec<T> = {
            let mut q = self.queue.lock();
            let mut due = Vec::new();
            while q
                .front()
                .is_some_and(|(at, _)| at.saturating_add(grace_ms) <= now_ms)
            {
                if let Some((_, v)) = q.pop_front() {
                    due.push(v);
                }
            }
            due
        };
        // Dropped outside the lock: a subject's drop returns segments to the pool.
        let n = due.len();
        for v in due {
            dropped(&v);
            drop(v);
        }
        n
    }

    /// Values waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn drops_only_after_the_grace_period_oldest_first() {
        let drops = Arc::new(AtomicUsize::new(0));
        let r = Retired::default();
        r.retire(100, (1, Counted(drops.clone())));
        r.retire(150, (2, Counted(drops.clone())));
        let mut seen = Vec::new();
        assert_eq!(r.reclaim(1_099, 1_000, |v| seen.push(v.0)), 0);
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        assert_eq!(r.reclaim(1_100, 1_000, |v| seen.push(v.0)), 1);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        assert_eq!(r.len(), 1);
        assert_eq!(r.reclaim(5_000, 1_000, |v| seen.push(v.0)), 1);
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        assert!(r.is_empty());
    }
}
