//! Striped event counters.
//!
//! Invariant: every increment lands in exactly one stripe and a read sums all stripes,
//! so once the writers are done the sum is exact; while they run, each counter read is
//! a value it had at some moment between the start and the end of the read (counters
//! only grow).
//!
//! Each thread writes to the stripe of its own index, and stripes sit on separate cache
//! lines ([`CachePadded`]), so threads on different schedulers never write the same line
//! and increments scale with cores. Threads get indices round-robin on first use; with
//! more threads than stripes, threads share stripes, which stays exact (the increments
//! are atomic) at some cost in contention.
//!
//! Memory ordering: `Relaxed`, except where the in-flight count
//! ([`crate::inflight`]) needs one counter's increment to be seen with another's: the
//! increments that end a call are `Release` ([`StripedCounters::incr_release`]) and the
//! timer reads them with `Acquire` ([`StripedCounters::get_acquire`]) before the
//! counters that started it.

use crossbeam_utils::CachePadded;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The counters kept per subject on the hot paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Admitted by `admit`.
    Accepted,
    /// Admitted at bypass priority.
    Bypassed,
    /// Rejected: breaker open.
    RejectedCircuitOpen,
    /// Rejected: half-open probe limit.
    RejectedHalfOpenLimit,
    /// Rejected: backpressure `dropping`.
    RejectedBackpressure,
    /// Rejected: low priority shed.
    RejectedShedLowPriority,
    /// Recorded successes.
    Successes,
    /// Recorded failures (including slow calls).
    Failures,
    /// Recorded calls slower than `slow_call_ms`.
    SlowCalls,
    /// Recorded outcomes the breaker set aside: they answer no admission it waits for.
    LateOutcomes,
    /// Successes of half-open probes, counted by their episode.
    ProbeSuccesses,
    /// Failures of half-open probes, counted by their episode.
    ProbeFailures,
    /// Rejected: two or more overload signals.
    RejectedOverloaded,
    /// Of `Accepted`: admissions of a drain worker's ledger writes (not router calls,
    /// so not in flight).
    WritesAdmitted,
    /// Of `Successes` and `Failures`: outcomes recorded without a router admission (a
    /// drain worker's writes and health checks).
    RecordedUnadmitted,
}

/// Number of [`Counter`] kinds.
pub const COUNTERS: usize = 15;

/// Stripes per counter set: the machine's parallelism rounded up to a power of two,
/// between 1 and 32 (beyond 32, memory per subject grows faster than contention falls).
pub fn stripe_count() -> usize {
    static STRIPES: AtomicUsize = AtomicUsize::new(0);
    match STRIPES.load(Ordering::Relaxed) {
        0 => {
            let n = std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .next_power_of_two()
                .clamp(1, 32);
            STRIPES.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

thread_local! {
    // Const-initialised and without a destructor, so access is a plain TLS read.
    static THREAD_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_THREAD_INDEX: AtomicUsize = AtomicUsize::new(0);

/// This thread's stripe index (unbounded; callers mask it).
#[inline]
pub fn thread_index() -> usize {
    THREAD_INDEX.with(|c| {
        let i = c.get();
        if i != usize::MAX {
            i
        } else {
            let i = NEXT_THREAD_INDEX.fetch_add(1, Ordering::Relaxed);
            c.set(i);
            i
        }
    })
}

/// One set of [`COUNTERS`] counters, striped.
pub struct StripedCounters {
    stripes: Box<[CachePadded<[AtomicU64; COUNTERS]>]>,
    mask: usize,
}

impl StripedCounters {
    /// Counters with [`stripe_count`] stripes, all zero.
    pub fn new() -> Self {
        Self::with_stripes(stripe_count())
    }

    /// Counters with `n` stripes (rounded up to a power of two).
    pub fn with_stripes(n: usize) -> Self {
        let n = n.max(1).next_power_of_two();
        Self {
            stripes: (0..n)
                .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            mask: n - 1,
        }
    }

    /// Adds one to `c`.
    #[inline]
    pub fn incr(&self, c: Counter) {
        self.add(c, 1);
    }

    /// Adds `n` to `c`.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        let stripe = &self.stripes[thread_index() & self.mask];
        stripe[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to `c` with `Release`: a reader that sees it with
    /// [`StripedCounters::get_acquire`] also sees every increment this thread made
    /// before (on x86 the same instruction as [`StripedCounters::incr`]).
    #[inline]
    pub fn incr_release(&self, c: Counter) {
        let stripe = &self.stripes[thread_index() & self.mask];
        stripe[c as usize].fetch_add(1, Ordering::Release);
    }

    /// The sum of `c` over all stripes.
    pub fn get(&self, c: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s[c as usize].load(Ordering::Relaxed))
            .sum()
    }

    /// The sum of `c` over all stripes, each read with `Acquire` (see
    /// [`StripedCounters::incr_release`]).
    pub fn get_acquire(&self, c: Counter) -> u64 {
        self.stripes
            .iter()
            .map(|s| s[c as usize].load(Ordering::Acquire))
            .sum()
    }

    /// All counters, summed, indexed by `Counter as usize`.
    pub fn snapshot(&self) -> [u64; COUNTERS] {
        let mut out = [0u64; COUNTERS];
        for s in self.stripes.iter() {
            for (o, v) in out.iter_mut().zip(s.iter()) {
                *o += v.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// Number of stripes.
    pub fn stripes(&self) -> usize {
        self.stripes.len()
    }
}

impl Default for StripedCounters {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn stripes_are_separate_cache_lines() {
        let c = StripedCounters::with_stripes(4);
        assert_eq!(c.stripes(), 4);
        let a = &c.stripes[0] as *const _ as usize;
        let b = &c.stripes[1] as *const _ as usize;
        assert!(b - a >= 64, "stripes {a:#x} and {b:#x} share a cache line");
    }

    #[test]
    fn exact_under_many_threads() {
        let c = Arc::new(StripedCounters::with_stripes(4));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for i in 0..50_000u64 {
                        c.incr(Counter::Accepted);
                        if i % 3 == 0 {
                            c.add(Counter::Failures, t + 1);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(Counter::Accepted), 16 * 50_000);
        let per_thread_calls = (0..50_000u64).filter(|i| i % 3 == 0).count() as u64;
        let expected: u64 = (1..=16).map(|t| t * per_thread_calls).sum();
        assert_eq!(c.get(Counter::Failures), expected);
        assert_eq!(c.snapshot()[Counter::Accepted as usize], 16 * 50_000);
        assert_eq!(c.get(Counter::Bypassed), 0);
    }
}
