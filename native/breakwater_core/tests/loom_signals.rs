//! loom model checking of the in-flight count's reading protocol (`src/inflight.rs`).
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p breakwater_core --release --test loom_signals
//! ```
//!
//! The production code sums striped `std` atomics, which loom cannot schedule, so this
//! file re-implements the counters the count is made of as one `loom` atomic each
//! (striping adds nothing: each stripe is read with the same ordering) and
//! [`bounds`] line for line, with the same orderings: outcomes of calls are counted with
//! `Release` and read first with `Acquire`; `RecordedUnadmitted` is counted before its
//! outcome and read after; `WritesAdmitted` is counted after its `Accepted` and read
//! before and after the starts.
//!
//! The property checked is the one the rebase depends on (a rebase to a reading that is
//! too low would make the count read high for good): for traffic whose every record
//! follows its admission, the upper bound is never negative, and the lower bound never
//! exceeds the calls that could be in flight by more than a drain worker's half-seen
//! counts (two). Each model has one timer reading beside one caller, with loom's
//! preemption bound of 3 (as `loom_state_word.rs`): the orderings are what is checked,
//! and each reading is a straight line of loads. With `Relaxed` outcome increments loom
//! finds a reading whose upper bound is -1.
//!
//! If `inflight.rs` or the counting in `subject.rs` changes, change the model here too.

#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    bypassed: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    writes_admitted: AtomicU64,
    recorded_unadmitted: AtomicU64,
}

impl Counters {
    /// `Subject::admit` → ok (`Accepted`, or `Bypassed` at bypass priority).
    fn admit(&self, bypass: bool) {
        let c = if bypass {
            &self.bypassed
        } else {
            &self.accepted
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `Subject::record` (`incr_release` of the outcome).
    fn record(&self, failed: bool) {
        let c = if failed {
            &self.failures
        } else {
            &self.successes
        };
        c.fetch_add(1, Ordering::Release);
    }

    /// `Subject::admit_write` → ok: `Accepted`, then `WritesAdmitted` (Release).
    fn admit_write(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.writes_admitted.fetch_add(1, Ordering::Release);
    }

    /// `Subject::record_unadmitted`: `RecordedUnadmitted`, then the outcome.
    fn record_unadmitted(&self) {
        self.recorded_unadmitted.fetch_add(1, Ordering::Relaxed);
        self.record(true);
    }

    /// `inflight::ends`.
    fn ends(&self) -> u64 {
        let ended = self
            .successes
            .load(Ordering::Acquire)
            .wrapping_add(self.failures.load(Ordering::Acquire));
        ended.wrapping_sub(self.recorded_unadmitted.load(Ordering::Acquire))
    }

    /// One reading of `inflight::bounds`: (lo, hi).
    fn bounds(&self) -> (i64, i64) {
        let ends_before = self.ends();
        let writes_before = self.writes_admitted.load(Ordering::Acquire);
        let started = self
            .accepted
            .load(Ordering::Relaxed)
            .wrapping_add(self.bypassed.load(Ordering::Relaxed));
        let writes_after = self.writes_admitted.load(Ordering::Acquire);
        let ends_after = self.ends();
        let hi = started
            .wrapping_sub(writes_before)
            .wrapping_sub(ends_before) as i64;
        let lo = started.wrapping_sub(writes_after).wrapping_sub(ends_after) as i64;
        (lo.min(hi), lo.max(hi))
    }
}

fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b
}

/// A router call (admit, then record) beside a timer's reading.
#[test]
fn a_router_call_never_reads_below_zero() {
    bounded(3).check(|| {
        let c = Arc::new(Counters::default());
        let router = {
            let c = c.clone();
            thread::spawn(move || {
                c.admit(false);
                c.record(false);
            })
        };
        let (lo, hi) = c.bounds();
        assert!(hi >= 0, "upper bound {hi}: a rebase here would drift");
        assert!(lo <= hi && lo <= 1, "({lo}, {hi}) with one call");
        router.join().unwrap();
        assert_eq!(c.bounds(), (0, 0), "exact once the call is done");
    });
}

/// A drain worker (a write admitted and recorded) beside a timer's reading: never a
/// call in flight, give or take its counts seen half done.
#[test]
fn a_drain_workers_write_is_not_in_flight() {
    bounded(3).check(|| {
        let c = Arc::new(Counters::default());
        let worker = {
            let c = c.clone();
            thread::spawn(move || {
                c.admit_write();
                c.record_unadmitted();
            })
        };
        let (lo, hi) = c.bounds();
        assert!(hi >= 0, "upper bound {hi}: a rebase here would drift");
        // `Accepted` without `WritesAdmitted`, `RecordedUnadmitted` without its outcome:
        // each raises the reading by one while it lasts.
        assert!(lo <= hi && lo <= 2, "({lo}, {hi})");
        worker.join().unwrap();
        assert_eq!(c.bounds(), (0, 0));
    });
}

/// A bypassed call whose record comes from another thread (a process that moved
/// between schedulers): the record's `Release` and the reader's `Acquire` still pair.
#[test]
fn a_call_recorded_on_another_thread_is_seen_with_its_start() {
    bounded(3).check(|| {
        let c = Arc::new(Counters::default());
        let started = Arc::new(AtomicU64::new(0));
        let a = {
            let (c, started) = (c.clone(), started.clone());
            thread::spawn(move || {
                c.admit(true);
                // The hand-over between schedulers synchronises (a lock in the VM).
                started.store(1, Ordering::Release);
            })
        };
        let b = {
            let (c, started) = (c.clone(), started.clone());
            thread::spawn(move || {
                if started.load(Ordering::Acquire) == 1 {
                    c.record(false);
                }
            })
        };
        let (lo, hi) = c.bounds();
        assert!(hi >= 0 && lo <= hi && lo <= 1, "({lo}, {hi})");
        a.join().unwrap();
        b.join().unwrap();
    });
}
