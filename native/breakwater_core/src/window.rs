//! Sliding failure-rate window (only in play when a policy sets
//! `failure_rate_threshold`).
//!
//! The window is [`BUCKETS`] buckets of `window_ms / BUCKETS` each. A bucket is one
//! `AtomicU64` packing the bucket's index in time (32 bits), its calls and its failures
//! (16 bits each), updated by CAS, so a bucket is never reset under a concurrent
//! increment and no call is counted twice. A bucket that would pass 65 535 calls halves
//! both counts, which keeps its ratio. The rate sums the buckets whose index lies in the
//! last `BUCKETS` bucket periods.
//!
//! Memory ordering: `Relaxed`; the window orders nothing else, and the breaker's CAS on
//! the state word decides the trip.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets per window.
pub const BUCKETS: usize = 10;

/// The window's counts at a moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
}

impl WindowCounts {
    /// Failures / calls, or 0 with no calls.
    pub fn rate(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.failures as f64 / self.calls as f64
        }
    }
}

/// A sliding window of call outcomes.
#[derive(Debug)]
pub struct FailureWindow {
    buckets: [AtomicU64; BUCKETS],
}

const CALLS_SHIFT: u32 = 16;
const TAG_SHIFT: u32 = 32;
const HALF: u64 = 0xffff;

fn unpack(v: u64) -> (u32, u64, u64) {
    ((v >> TAG_SHIFT) as u32, (v >> CALLS_SHIFT) & HALF, v & HALF)
}

fn pack(tag: u32, calls: u64, failures: u64) -> u64 {
    (u64::from(tag) << TAG_SHIFT) | (calls << CALLS_SHIFT) | failures
}

impl FailureWindow {
    /// An empty window.
    pub fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn bucket_ms(window_ms: u64) -> u64 {
        (window_ms / BUCKETS as u64).max(1)
    }

    /// Records one call at `now_ms` and returns the window's counts including it.
    pub fn record(&self, now_ms: u64, window_ms: u64, failed: bool) -> WindowCounts {
        let index = now_ms / Self::bucket_ms(window_ms);
        // Tags are the low 32 bits of the bucket index; +1 so that tag 0 means "never used".
        let tag = (index as u32).wrapping_add(1);
        let bucket = &self.buckets[(index % BUCKETS as u64) as usize];
        let mut cur = bucket.load(Ordering::Relaxed);
        loop {
            let (t, mut calls, mut failures) = unpack(cur);
            if t != tag {
                calls = 0;
                failures = 0;
            }
            if calls == HALF {
                calls /= 2;
                failures /= 2;
            }
            let next = pack(tag, calls + 1, failures + u64::from(failed));
            match bucket.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.counts_at(index)
    }

    /// The counts of the window ending in the bucket that holds `now_ms`.
    pub fn counts(&self, now_ms: u64, window_ms: u64) -> WindowCounts {
        self.counts_at(now_ms / Self::bucket_ms(window_ms))
    }

    fn counts_at(&self, index: u64) -> WindowCounts {
        let newest = (index as u32).wrapping_add(1);
        let mut out = WindowCounts::default();
        for b in &self.buckets {
            let (t, calls, failures) = unpack(b.load(Ordering::Relaxed));
            if t != 0 && newest.wrapping_sub(t) < BUCKETS as u32 {
                out.calls += calls;
                out.failures += failures;
            }
        }
        out
    }

    /// Forgets every call.
    pub fn clear(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

impl Default for FailureWindow {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_calls_and_failures_in_the_window() {
        let w = FailureWindow::new();
        for i in 0..10 {
            w.record(1_000 + i * 10, 1_000, i % 2 == 0);
        }
        let c = w.counts(1_100, 1_000);
        assert_eq!(
            c,
            WindowCounts {
                calls: 10,
                failures: 5
            }
        );
        assert!((c.rate() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn old_buckets_slide_out() {
        let w = FailureWindow::new();
        w.record(0, 1_000, true);
        w.record(500, 1_000, false);
        assert_eq!(w.counts(900, 1_000).calls, 2);
        // 1_000 ms later the first bucket (0..100) has left the window.
        assert_eq!(
            w.counts(1_050, 1_000),
            WindowCounts {
                calls: 1,
                failures: 0
            }
        );
        assert_eq!(w.counts(5_000, 1_000), WindowCounts::default());
        // A reused slot starts from zero.
        let c = w.record(10_000, 1_000, true);
        assert_eq!(
            c,
            WindowCounts {
                calls: 1,
                failures: 1
            }
        );
    }

    #[test]
    fn saturation_halves_and_keeps_the_ratio() {
        let w = FailureWindow::new();
        for i in 0..70_000u64 {
            w.record(5, 1_000, i % 4 == 0);
        }
        let c = w.counts(5, 1_000);
        assert!(c.calls < 65_536 && c.calls > 30_000, "{c:?}");
        assert!((c.rate() - 0.25).abs() < 0.01, "{c:?}");
    }

    #[test]
    fn exact_under_threads_within_one_bucket() {
        let w = std::sync::Arc::new(FailureWindow::new());
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.record(42, 10_000, true);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(
            w.counts(42, 10_000),
            WindowCounts {
                calls: 40_000,
                failures: 40_000
            }
        );
    }
}
