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
//! # Calls never recorded are forgotten after `call_timeout_ms`
//!
//! A caller that admits and then dies (or forgets to record) would otherwise stay in
//! flight for good, and enough of them would hold the in-flight signal up for ever. No
//! call can be in flight longer than `call_timeout_ms` and still count: the count is
//! capped by the calls started in the last `call_timeout_ms`. The timer keeps a few
//! [`Marks`] of the starts (one per `call_timeout_ms / 8` at most) and, from the newest
//! mark at least `call_timeout_ms` old, raises `base` to `starts_then − ends_now`. That
//! is a lower bound of the calls started before the mark and never ended (at most
//! `ends_now` of them can have ended, whatever the order), so only calls that really
//! are older than the timeout are forgotten. A forgotten call recorded later lowers the
//! count as any unmatched record does, and the base follows it down again.
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
    reading(c).raw
}

/// One reading of the counters: `started − ended` as an interval, and the two sides
/// as the timer's expiry needs them (starts at least, ends at most).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// `started − ended`.
    pub raw: Bounds<i64>,
    /// Router calls started, at least (wrapping counter).
    pub starts_lo: u64,
    /// Router calls ended, at most (wrapping counter).
    pub ends_hi: u64,
}

/// [`bounds`] with the starts and ends it was taken from.
pub fn reading(c: &StripedCounters) -> Reading {
    let mut best: Option<Reading> = None;
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
        if best.map_or(true, |x| b.hi - b.lo < x.raw.hi - x.raw.lo) {
            // The starts net of the larger write count, the larger of the two end
            // readings (compared as a difference: the counters wrap).
            let ends_hi = if (ends_after.wrapping_sub(ends_before) as i64) >= 0 {
                ends_after
            } else {
                ends_before
            };
            best = Some(Reading {
                raw: b,
                starts_lo: started.wrapping_sub(writes_after),
                ends_hi,
            });
        }
        if b.hi - b.lo <= SLACK {
            break;
        }
    }
    best.expect("read at least once")
}

/// Marks of the starts counter taken by the timer, so that it can tell how many calls
/// had started `call_timeout_ms` ago. Fixed size; kept under the subject's upkeep lock.
#[derive(Debug, Default)]
pub struct Marks {
    /// `(time ms, starts_lo)`, oldest overwritten first; `None` until taken.
    marks: [Option<(u64, u64)>; MARKS],
    next: usize,
}

/// Marks kept: one more than the spacing divides the timeout into, so that a mark at
/// least `call_timeout_ms` old is kept once the timer has run that long.
const MARKS: usize = 9;

impl Marks {
    /// Takes a mark when the newest is at least `timeout_ms / 8` old, and answers the
    /// starts of the newest mark at least `timeout_ms` old, if any.
    pub fn update(&mut self, now_ms: u64, starts_lo: u64, timeout_ms: u64) -> Option<u64> {
        let spacing = (timeout_ms / (MARKS as u64 - 1)).max(1);
        let newest = self.marks[(self.next + MARKS - 1) % MARKS];
        if newest.map_or(true, |(t, _)| {
            now_ms.saturating_sub(t) >= spacing || t > now_ms
        }) {
            self.marks[self.next] = Some((now_ms, starts_lo));
            self.next = (self.next + 1) % MARKS;
        }
        self.marks
            .iter()
            .flatten()
            .filter(|(t, _)| *t <= now_ms && now_ms - t >= timeout_ms)
            .max_by_key(|(t, _)| *t)
            .map(|(_, s)| *s)
    }
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

    /// [`InflightCount::refresh`], forgetting the calls that started before the newest
    /// mark at least `timeout_ms` old and have not ended (see the module
    /// documentation). Callers serialise refreshes (the subject's upkeep lock).
    pub fn refresh_expiring(
        &self,
        r: Reading,
        marks: &mut Marks,
        now_ms: u64,
        timeout_ms: u64,
    ) -> Bounds<u64> {
        if let Some(starts_then) = marks.update(now_ms, r.starts_lo, timeout_ms) {
            // At least this many calls started before the mark and never ended.
            let floor = starts_then.wrapping_sub(r.ends_hi) as i64;
            if floor.wrapping_sub(self.base.load(Ordering::Relaxed)) > 0 {
                self.base.store(floor, Ordering::Relaxed);
            }
        }
        self.refresh(r.raw)
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
    fn calls_never_recorded_are_forgotten_after_the_timeout() {
        let c = StripedCounters::with_stripes(2);
        let n = InflightCount::default();
        let mut marks = Marks::default();
        let tick = |t: u64, marks: &mut Marks| n.refresh_expiring(reading(&c), marks, t, 1_000);
        // 10 calls admitted at 0 that never answer, 3 more at 600 of which 1 answers.
        for _ in 0..10 {
            admit(&c);
        }
        assert_eq!(tick(0, &mut marks).hi, 10);
        for _ in 0..3 {
            admit(&c);
        }
        record(&c);
        assert_eq!(tick(600, &mut marks).hi, 12, "nothing is a timeout old yet");
        // At 1 000 the mark of 0 is a timeout old: of its 10 starts at most 1 ended.
        assert_eq!(tick(1_000, &mut marks).hi, 3);
        // The 9 forgotten stay forgotten; the 2 of 600 still count, until 1 600.
        assert_eq!(tick(1_200, &mut marks).hi, 3);
        assert_eq!(tick(1_700, &mut marks).hi, 0);
        // A forgotten call recorded late does not make the count negative or drift.
        record(&c);
        assert_eq!(tick(1_800, &mut marks).hi, 0);
        admit(&c);
        assert_eq!(tick(1_900, &mut marks).hi, 1);
    }

    #[test]
    fn calls_that_answer_in_time_are_never_forgotten() {
        let c = StripedCounters::with_stripes(2);
        let n = InflightCount::default();
        let mut marks = Marks::default();
        // A steady 5 calls in flight, each answering 300 ms after it started, for 10 s.
        let mut t = 0;
        for _ in 0..5 {
            admit(&c);
        }
        while t < 10_000 {
            t += 100;
            record(&c);
            admit(&c);
            assert_eq!(n.refresh_expiring(reading(&c), &mut marks, t, 1_000).hi, 5);
        }
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
