//! Calls in flight: admitted by a router and not yet recorded.
//!
//! # Counting without a new write on the hot paths
//!
//! The in-flight count is a difference of striped counters the hot paths write anyway
//! ([`crate::counters`]):
//!
//! ```text
//! started  = Accepted + Bypassed − WritesAdmitted            (admit → ok: bypassed and probes included)
//! ended    = Successes + Failures − RecordedUnadmitted       (record)
//! raw      = started − ended
//! ```
//!
//! `WritesAdmitted` and `RecordedUnadmitted` take out a drain worker's ledger writes and
//! health checks: its admissions are polls (most never lead to a call) and its outcomes
//! answer no router admission. So `admit` and `record` pay nothing for the count; the
//! timer sums the stripes.
//!
//! # Never below zero, no drift
//!
//! A router may record a call it never admitted (a health check of its own, a call it
//! made before asking). Such a record lowers `raw` for good, and a plain
//! `max(raw, 0)` would under-count every later call by as much. So the count is
//! `raw − base`, clamped at zero, and the timer moves `base` down to `raw` whenever the
//! count would be negative ([`InflightCount::refresh`]): the unmatched records are
//! forgotten. What is left is bounded and heals itself: the count can read low by the
//! calls that were in flight when it was rebased (their records come later), until they
//! end; once nothing is in flight it is exactly zero again. It never reads high.
//!
//! # Concurrency
//!
//! The counters move while they are summed, so a reading is an interval
//! ([`Bounds`]): the ends are read before the starts and again after them
//! ([`bounds`]). Calls that end between the two readings are counted as ended in the
//! upper bound's reading and not in the lower's, so `lo <= raw <= hi` for the moment
//! the starts were read, give or take a drain worker's counts seen half done (its
//! `Accepted` without its `WritesAdmitted`, its `RecordedUnadmitted` without its
//! outcome), which move the bounds by at most two while they last (the two readings are
//! ordered into `lo <= hi`, so such a race widens the interval). The interval is a
//! few calls wide under load, and wide only when the reading thread is preempted
//! between its loads; [`bounds`] reads again when it is wider than [`SLACK`].
//!
//! Invariant: for traffic whose every record follows its admission, `hi >= 0`, so the
//! timer never rebases on a race of its own reading, and a rebase (to `hi`) can only
//! make the count read low, never high. That holds because the ends are read with
//! `Acquire` and the increments that end a call (`Successes`, `Failures`) are
//! `Release`: a reader that sees a call's end sees its start. Likewise
//! `RecordedUnadmitted` is incremented before its `Successes`/`Failures` and
//! `WritesAdmitted` after its `Accepted`, and each is read so that a race widens the
//! interval rather than moving it. The signal is set only when the lower bound is above
//! its threshold and cleared only when the upper bound is at or below its recovery
//! value, so a wide reading changes nothing. The `base` is written by the timer only
//! (under the subject's upkeep lock); readers load it `Relaxed`.

use crate::counters::{Counter, StripedCounters};
use std::sync::atomic::{AtomicI64, Ordering};

/// A reading of a count that moves while it is read: `lo <= value <= hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds<T> {
    /// At least this.
    pub lo: T,
    /// At most this.
    pub hi: T,
}

impl Bounds<u64> {
    /// An exact value.
    pub fn exact(v: u64) -> Self {
        Bounds { lo: v, hi: v }
    }

    /// Both bounds raised to at least `v` (the larger of a reported and a measured
    /// value).
    pub fn at_least(self, v: u64) -> Self {
        Bounds {
            lo: self.lo.max(v),
            hi: self.hi.max(v),
        }
    }
}

/// Widest interval [`bounds`] accepts without reading again.
pub const SLACK: i64 = 16;

/// Ends of router calls: `Successes + Failures − RecordedUnadmitted`.
fn ends(c: &StripedCounters) -> u64 {
    // Acquire: each end's start is visible to the reads that follow. The unadmitted
    // count is read after the outcomes it is incremented before.
    let ended = c
        .get_acquire(Counter::Successes)
        .wrapping_add(c.get_acquire(Counter::Failures));
    ended.wrapping_sub(c.get_acquire(Counter::RecordedUnadmitted))
}

/// `started − ended` (see the module documentation) as an interval around the moment
/// the starts were read; read again (at most three times) while wider than [`SLACK`].
pub fn bounds(c: &StripedCounters) -> Bounds<i64> {
    let mut best: Option<Bounds<i64>> = None;
    for _ in 0..3 {
        let ends_before = ends(c);
        // Writes are counted after their `Accepted`: read before the starts (Acquire),
        // a write seen here has its start seen below.
        let writes_before = c.get_acquire(Counter::WritesAdmitted);
        let started = c
            .get(Counter::Accepted)
            .wrapping_add(c.get(Counter::Bypassed));
        let writes_after = c.get_acquire(Counter::WritesAdmitted);
        let ends_after = ends(c);
        let lo = started.wrapping_sub(writes_after).wrapping_sub(ends_after) as i64;
        let hi = started
            .wrapping_sub(writes_before)
            .wrapping_sub(ends_before) as i64;
        // A worker's unadmitted record seen half done by the second reading of the ends
        // (its `RecordedUnadmitted` without its outcome) and not at all by the first puts
        // the second one below the first: order the two, so a race only widens the
        // interval.
        let b = Bounds {
            lo: lo.min(hi),
            hi: lo.max(hi),
        };
        if best.map_or(true, |x| b.hi - b.lo < x.hi - x.lo) {
            best = Some(b);
        }
        if b.hi - b.lo <= SLACK {
            break;
        }
    }
    best.expect("read at least once")
}

/// A subject's in-flight count: the base the timer keeps (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct InflightCount {
    base: AtomicI64,
}

impl InflightCount {
    /// The count for `raw`, clamped at zero; changes nothing.
    #[inline]
    pub fn measured(&self, raw: Bounds<i64>) -> Bounds<u64> {
        let base = self.base.load(Ordering::Relaxed);
        Bounds {
            lo: raw.lo.wrapping_sub(base).max(0) as u64,
            hi: raw.hi.wrapping_sub(base).max(0) as u64,
        }
    }

    /// The timer's reading: the count for `raw`, moving the base down to `raw.hi` when
    /// even the upper bound is negative (records no admission matches). Callers
    /// serialise refreshes (the subject's upkeep lock).
    pub fn refresh(&self, raw: Bounds<i64>) -> Bounds<u64> {
        let base = self.base.load(Ordering::Relaxed);
        if raw.hi.wrapping_sub(base) < 0 {
            self.base.store(raw.hi, Ordering::Relaxed);
        }
        self.measured(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(c: &StripedCounters) {
        c.incr(Counter::Accepted);
    }

    fn record(c: &StripedCounters) {
        c.incr_release(Counter::Successes);
    }

    fn record_unadmitted(c: &StripedCounters) {
        c.incr(Counter::RecordedUnadmitted);
        c.incr_release(Counter::Failures);
    }

    fn worker_poll(c: &StripedCounters) {
        c.incr(Counter::Accepted);
        c.incr_release(Counter::WritesAdmitted);
    }

    #[test]
    fn admits_minus_records_with_bypass_and_worker_traffic_left_out() {
        let c = StripedCounters::with_stripes(2);
        let n = InflightCount::default();
        for _ in 0..5 {
            admit(&c);
        }
        c.incr(Counter::Bypassed);
        for _ in 0..100 {
            worker_poll(&c);
            record_unadmitted(&c);
        }
        assert_eq!(n.refresh(bounds(&c)).hi, 6);
        record(&c);
        record(&c);
        assert_eq!(n.measured(bounds(&c)).hi, 4);
    }

    #[test]
    fn unmatched_records_are_forgotten_not_carried() {
        let c = StripedCounters::with_stripes(1);
        let n = InflightCount::default();
        // 50 records without admission: never below zero...
        for _ in 0..50 {
            record(&c);
        }
        assert_eq!(n.measured(bounds(&c)).hi, 0);
        assert_eq!(n.refresh(bounds(&c)).hi, 0);
        // ...and later calls count from zero, not from -50.
        for _ in 0..7 {
            admit(&c);
        }
        assert_eq!(n.refresh(bounds(&c)).hi, 7);
        for _ in 0..7 {
            record(&c);
        }
        assert_eq!(n.refresh(bounds(&c)).hi, 0);
    }

    #[test]
    fn a_rebase_under_load_reads_low_until_those_calls_end_then_exact() {
        let c = StripedCounters::with_stripes(1);
        let n = InflightCount::default();
        for _ in 0..10 {
            admit(&c);
        }
        // 12 records: the 10 calls' and 2 that no admission matches.
        for _ in 0..12 {
            record(&c);
        }
        // The timer rebases to zero.
        assert_eq!(n.refresh(bounds(&c)).hi, 0);
        for _ in 0..3 {
            admit(&c);
        }
        assert_eq!(n.refresh(bounds(&c)).hi, 3);
        for _ in 0..3 {
            record(&c);
        }
        assert_eq!(n.refresh(bounds(&c)).hi, 0);
    }

    #[test]
    fn concurrent_matched_traffic_never_rebases_and_ends_exact() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let c = Arc::new(StripedCounters::with_stripes(4));
        let n = Arc::new(InflightCount::default());
        let done = Arc::new(AtomicBool::new(false));
        let timer = {
            let (c, n, done) = (c.clone(), n.clone(), done.clone());
            std::thread::spawn(move || {
                let mut rebases = 0;
                while !done.load(Ordering::Relaxed) {
                    let b = bounds(&c);
                    assert!(b.lo <= b.hi);
                    if b.hi < 0 {
                        rebases += 1;
                    }
                    n.refresh(b);
                }
                rebases
            })
        };
        let workers: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..50_000 {
                        if t == 0 && i % 3 == 0 {
                            worker_poll(&c);
                            record_unadmitted(&c);
                        } else {
                            admit(&c);
                            record(&c);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert_eq!(timer.join().unwrap(), 0, "the timer saw raw < 0");
        assert_eq!(n.refresh(bounds(&c)).hi, 0);
    }
}
