//! loom model checking of the state-word protocol of `src/subject.rs` and
//! `src/breaker.rs`.
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p breakwater_core --release --test loom_state_word
//! ```
//!
//! The production code uses `std` atomics, which loom cannot schedule, so this file
//! re-implements the small compare-and-swap loops of `Subject` and `Breaker` line for
//! line over `loom::sync::atomic` cells, with the same orderings, and uses the crate's
//! own [`Word`] encoding (plain data) and [`backpressure::next`] rule. loom then runs
//! every model under every interleaving (and every weak-memory outcome it models) of
//! its threads. What each model function mirrors:
//!
//! | model                | source                                                       |
//! |----------------------|--------------------------------------------------------------|
//! | [`Cell::swap`]       | `Subject::swap`: one CAS (`AcqRel`/`Acquire`), the winner reports and counts |
//! | [`Cell::record`]     | `Breaker::record`: dispatch on the breaker state               |
//! | [`Cell::record_failure`] | `Breaker::record` (closed branch) → `record_closed_failure` → `trip` |
//! | [`Cell::trip`]       | `Breaker::trip`                                              |
//! | [`Cell::half_open`]  | `Breaker::advance` (open time elapsed)                       |
//! | [`Cell::admit_probe`] | `Breaker::gate` (half-open) and `Breaker::take_probe`       |
//! | [`Cell::record_probe`] | `Breaker::record` (half-open branch) → `record_probe`      |
//! | [`Cell::report_depth`], [`Cell::evaluate`] | `Subject::report_depth`, `Subject::evaluate` (with its re-evaluation after a won CAS and the `SeqCst` fences) |
//!
//! The properties checked are the ones the state word exists for (`src/state.rs`):
//! every transition has exactly one winner, which alone reports it; a trip by
//! concurrent failures is one closed → open transition; half-open never has more than
//! `half_open_max_calls` probes in flight; and concurrent depth reports leave the
//! backpressure state where the final depth leads.
//!
//! If `subject.rs` or `breaker.rs` changes one of these loops, change its model here
//! too.

#![cfg(loom)]

use breakwater_core::backpressure::{self, Thresholds};
use breakwater_core::state::BackpressureState::{self, Dropping, Normal, Pressure};
use breakwater_core::state::BreakerState::{self, Closed, HalfOpen, Open};
use breakwater_core::state::Word;
use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// The atomics of one subject that the modelled paths touch.
#[derive(Default)]
struct Cell {
    word: AtomicU64,
    consecutive_failures: AtomicU32,
    reported_depth: AtomicU64,
    /// Transitions counted by their winners (`RareCounters` in `subject.rs`, `Counts` in
    /// `breaker.rs`).
    breaker_transitions: AtomicU64,
    backpressure_transitions: AtomicU64,
    opens: AtomicU64,
    half_opens: AtomicU64,
    recoveries: AtomicU64,
}

/// The transitions one operation reported (the `Transitions` out-param).
type Reports = Vec<(Word, Word)>;

impl Cell {
    fn with(word: Word) -> Self {
        let c = Self::default();
        c.word.store(word.0, Ordering::Relaxed);
        c
    }

    fn word(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// `Subject::swap`.
    fn swap(&self, from: Word, to: Word, out: &mut Reports) -> Result<(), Word> {
        self.word
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map_err(Word)?;
        if from.differs_in_state(to) {
            if from.breaker() != to.breaker() {
                self.breaker_transitions.fetch_add(1, Ordering::Relaxed);
            }
            if from.backpressure() != to.backpressure() {
                self.backpressure_transitions
                    .fetch_add(1, Ordering::Relaxed);
            }
            out.push((from, to));
        }
        Ok(())
    }

    /// `Subject::trip`.
    fn trip(&self, from: BreakerState, out: &mut Reports) {
        let mut w = self.word();
        while w.breaker() == from && !w.disabled() {
            let streak = if from == HalfOpen {
                w.trip_streak().saturating_add(1)
            } else {
                0
            };
            let to = w.with_breaker(Open).with_trip_streak(streak);
            match self.swap(w, to, out) {
                Ok(()) => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.opens.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// `Subject::record(Failure)` on a closed breaker: `record_closed_failure`.
    fn record_failure(&self, threshold: u32, out: &mut Reports) {
        let w = self.word();
        if w.disabled() || w.breaker() != Closed {
            return;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= threshold {
            self.trip(Closed, out);
        }
    }

    /// The open → half-open loop of `Subject::advance_time`, the open time having passed.
    fn half_open(&self, out: &mut Reports) -> Word {
        let mut w = self.word();
        while w.breaker() == Open && !w.forced_open() {
            let to = w.with_breaker(HalfOpen);
            match self.swap(w, to, out) {
                Ok(()) => {
                    self.half_opens.fetch_add(1, Ordering::Relaxed);
                    w = to;
                }
                Err(actual) => w = actual,
            }
        }
        w
    }

    /// The half-open branch of `Subject::admit_slow`: true when admitted as a probe.
    fn admit_probe(&self, max: u8, out: &mut Reports) -> bool {
        let mut w = self.word();
        loop {
            if w.disabled() {
                return true;
            }
            match w.breaker() {
                HalfOpen => {
                    if w.probes() >= max {
                        return false;
                    }
                    let to = w.with_probes(w.probes() + 1);
                    match self.swap(w, to, out) {
                        Ok(()) => return true,
                        Err(actual) => w = actual,
                    }
                }
                // Not modelled here: the breaker left half-open under us.
                _ => return false,
            }
        }
    }

    /// `Subject::record` of a probe's outcome: `record_probe`.
    fn record_probe(&self, failed: bool, success_threshold: u8, out: &mut Reports) {
        let mut w = self.word();
        if w.disabled() || w.breaker() != HalfOpen {
            return;
        }
        if failed {
            self.trip(HalfOpen, out);
            return;
        }
        while w.breaker() == HalfOpen && !w.disabled() {
            let successes = w.probe_successes().saturating_add(1);
            let to = if successes >= success_threshold {
                w.with_breaker(Closed).with_trip_streak(0)
            } else {
                w.with_probes(w.probes().saturating_sub(1))
                    .with_probe_successes(successes)
            };
            match self.swap(w, to, out) {
                Ok(()) => {
                    if to.breaker() == Closed {
                        self.consecutive_failures.store(0, Ordering::Relaxed);
                        self.recoveries.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// `Subject::record`: dispatches on the breaker state it reads first.
    fn record(&self, failed: bool, threshold: u32, success_threshold: u8, out: &mut Reports) {
        let w = self.word();
        if w.disabled() {
            return;
        }
        match w.breaker() {
            Closed if !failed => self.consecutive_failures.store(0, Ordering::Relaxed),
            Closed => self.record_failure(threshold, out),
            HalfOpen => self.record_probe(failed, success_threshold, out),
            // The late outcome of a call admitted before the breaker opened.
            Open => {}
        }
    }

    /// `Subject::report_depth`.
    fn report_depth(&self, depth: u64, t: &Thresholds, recheck: Recheck, out: &mut Reports) {
        self.reported_depth.store(depth, Ordering::Relaxed);
        if recheck == Recheck::Fenced {
            fence(Ordering::SeqCst);
        }
        self.evaluate(t, recheck, out);
    }

    /// `Subject::evaluate` without the stability timer (the models never let it run
    /// out, so `recovery` only leaves by depth, as in [`backpressure::next`]).
    fn evaluate(&self, t: &Thresholds, recheck: Recheck, out: &mut Reports) {
        let mut w = self.word();
        let mut rounds = 3;
        loop {
            let depth = self.reported_depth.load(Ordering::Relaxed);
            let current = w.backpressure();
            let target = backpressure::next(current, depth, false, t);
            if target == current {
                return;
            }
            let to = w.with_backpressure(target);
            match self.swap(w, to, out) {
                Ok(()) => {
                    if recheck == Recheck::None {
                        return;
                    }
                    rounds -= 1;
                    if rounds == 0 {
                        return;
                    }
                    if recheck == Recheck::Fenced {
                        fence(Ordering::SeqCst);
                    }
                    w = to;
                }
                Err(actual) => w = actual,
            }
        }
    }
}

/// How `evaluate` follows a won CAS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Recheck {
    /// As `subject.rs` does: go round, with the `SeqCst` fences.
    Fenced,
    /// Go round without the fences.
    Unfenced,
    /// The earlier protocol: return after a won CAS.
    None,
}

fn closed() -> Word {
    Word::INITIAL
}

fn open() -> Word {
    Word::INITIAL.with_breaker(Open)
}

fn half_open(probes: u8, successes: u8) -> Word {
    open()
        .with_breaker(HalfOpen)
        .with_probes(probes)
        .with_probe_successes(successes)
}

/// Runs `f` on `n` threads (thread `i` gets `i`) and returns each one's reports.
fn on_threads<F>(cell: &Arc<Cell>, n: usize, f: F) -> Vec<Reports>
where
    F: Fn(&Cell, usize, &mut Reports) + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (cell, f) = (cell.clone(), f.clone());
            thread::spawn(move || {
                let mut out = Reports::new();
                f(&cell, i, &mut out);
                out
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b
}

/// closed → open by concurrent failures: exactly one thread reports the trip, and the
/// counters agree.
#[test]
fn concurrent_failures_trip_once() {
    bounded(3).check(|| {
        let cell = Arc::new(Cell::with(closed()));
        let reports = on_threads(&cell, 3, |c, _, out| c.record_failure(2, out));
        let all: Reports = reports.iter().flatten().copied().collect();
        assert_eq!(all.len(), 1, "one winner: {all:?}");
        let (from, to) = all[0];
        assert_eq!((from.breaker(), to.breaker()), (Closed, Open));
        assert_eq!(to.trip_streak(), 0);
        let w = cell.word();
        assert_eq!(w, to, "the report's word is the final word");
        assert_eq!(w.breaker_epoch(), 1);
        assert_eq!(cell.opens.load(Ordering::Relaxed), 1);
        assert_eq!(cell.breaker_transitions.load(Ordering::Relaxed), 1);
    });
}

/// Failures below the threshold never trip, however they interleave.
#[test]
fn failures_below_the_threshold_never_trip() {
    loom::model(|| {
        let cell = Arc::new(Cell::with(closed()));
        let reports = on_threads(&cell, 2, |c, _, out| c.record_failure(3, out));
        assert!(reports.iter().all(Vec::is_empty));
        assert_eq!(cell.word(), closed());
        assert_eq!(cell.consecutive_failures.load(Ordering::Relaxed), 2);
    });
}

/// open → half-open from several callers at once (admit, check and the timer all run
/// this loop): one winner, one entry into half-open counted.
#[test]
fn half_open_entry_has_one_winner() {
    bounded(3).check(|| {
        let cell = Arc::new(Cell::with(open()));
        let reports = on_threads(&cell, 3, |c, _, out| {
            let w = c.half_open(out);
            assert_eq!(
                w.breaker(),
                HalfOpen,
                "every caller ends up seeing half-open"
            );
        });
        let all: Reports = reports.iter().flatten().copied().collect();
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!((all[0].0.breaker(), all[0].1.breaker()), (Open, HalfOpen));
        assert_eq!(cell.half_opens.load(Ordering::Relaxed), 1);
        assert_eq!(cell.word().breaker_epoch(), open().breaker_epoch() + 1);
    });
}

/// Probe slots: three callers race for two slots; exactly two win, and the word counts
/// exactly the winners.
#[test]
fn probe_slots_are_never_oversubscribed() {
    bounded(3).check(|| {
        let cell = Arc::new(Cell::with(half_open(0, 0)));
        let admitted = Arc::new(AtomicUsize::new(0));
        let a = admitted.clone();
        let reports = on_threads(&cell, 3, move |c, _, out| {
            if c.admit_probe(2, out) {
                a.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(
            reports.iter().all(Vec::is_empty),
            "taking a slot is no transition"
        );
        assert_eq!(admitted.load(Ordering::Relaxed), 2);
        assert_eq!(cell.word().probes(), 2);
        assert_eq!(cell.word().breaker(), HalfOpen);
    });
}

/// Probes admitted and recorded concurrently: the callers' own count of probes in
/// flight never exceeds the limit, and the successes close the breaker exactly once.
#[test]
fn probes_in_flight_stay_within_the_limit_while_recording() {
    bounded(3).check(|| {
        let cell = Arc::new(Cell::with(half_open(0, 0)));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicUsize::new(0));
        let (f, a) = (in_flight.clone(), admitted.clone());
        let reports = on_threads(&cell, 3, move |c, _, out| {
            if c.admit_probe(1, out) {
                a.fetch_add(1, Ordering::Relaxed);
                let n = f.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(n <= 1, "{n} probes in flight with a limit of 1");
                f.fetch_sub(1, Ordering::SeqCst);
                c.record_probe(false, 2, out);
            }
        });
        let all: Reports = reports.iter().flatten().copied().collect();
        let admitted = admitted.load(Ordering::Relaxed);
        let w = cell.word();
        assert!((1..=2).contains(&admitted));
        if admitted == 2 {
            // Two successes reach the threshold: closed, reported once.
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!((all[0].0.breaker(), all[0].1.breaker()), (HalfOpen, Closed));
            assert_eq!(w.breaker(), Closed);
            assert_eq!(cell.recoveries.load(Ordering::Relaxed), 1);
        } else {
            assert!(all.is_empty());
            assert_eq!(
                (w.breaker(), w.probes(), w.probe_successes()),
                (HalfOpen, 0, 1)
            );
        }
    });
}

/// A failing probe and a succeeding one race when the success would close the breaker:
/// exactly one of them moves it out of half-open, and the report names the final state.
#[test]
fn probe_success_and_failure_race_has_one_winner() {
    loom::model(|| {
        let cell = Arc::new(Cell::with(half_open(2, 1)));
        let reports = on_threads(&cell, 2, |c, i, out| c.record_probe(i == 1, 2, out));
        let all: Reports = reports.iter().flatten().copied().collect();
        assert_eq!(all.len(), 1, "{all:?}");
        let (from, to) = all[0];
        assert_eq!(from.breaker(), HalfOpen);
        let w = cell.word();
        assert_eq!(w, to);
        match w.breaker() {
            Closed => {
                assert_eq!(cell.recoveries.load(Ordering::Relaxed), 1);
                assert_eq!(cell.opens.load(Ordering::Relaxed), 0);
                assert_eq!(w.trip_streak(), 0);
            }
            Open => {
                assert_eq!(cell.opens.load(Ordering::Relaxed), 1);
                assert_eq!(cell.recoveries.load(Ordering::Relaxed), 0);
                assert_eq!(
                    w.trip_streak(),
                    1,
                    "a reopen from half-open grows the streak"
                );
            }
            HalfOpen => panic!("nobody left half-open"),
        }
        assert_eq!(cell.breaker_transitions.load(Ordering::Relaxed), 1);
    });
}

/// A probe success that closes the breaker races a failure (a probe's, or a call's
/// admitted once the breaker closed): whatever the order, the transitions reported chain
/// from the old word to the final one, each reported once.
#[test]
fn close_and_failure_race_report_a_chain() {
    loom::model(|| {
        let cell = Arc::new(Cell::with(half_open(1, 0)));
        let reports = on_threads(&cell, 2, |c, i, out| c.record(i == 1, 1, 1, out));
        let mut all: Reports = reports.iter().flatten().copied().collect();
        assert!(!all.is_empty() && all.len() <= 2, "{all:?}");
        all.sort_by_key(|(_, to)| to.breaker_epoch());
        assert_eq!(
            all[0].0,
            half_open(1, 0),
            "the first report starts at the old word"
        );
        for pair in all.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "reports chain");
        }
        let w = cell.word();
        assert_eq!(w, all.last().unwrap().1);
        assert_ne!(w.breaker(), HalfOpen);
        assert_eq!(
            cell.breaker_transitions.load(Ordering::Relaxed),
            all.len() as u64
        );
        let to_open = all.iter().filter(|(_, t)| t.breaker() == Open).count() as u64;
        assert_eq!(cell.opens.load(Ordering::Relaxed), to_open);
    });
}

const T: Thresholds = Thresholds {
    warning: 10,
    critical: 50,
    recovery: 5,
};

/// Two routers report conflicting depths at once; afterwards the state must be where
/// the final depth leads, and every transition must have been reported once.
fn depth_race(recheck: Recheck, initial: (BackpressureState, u64), depths: [u64; 2]) {
    let cell = Arc::new(Cell::with(Word::INITIAL.with_backpressure(initial.0)));
    cell.reported_depth.store(initial.1, Ordering::Relaxed);
    let reports = on_threads(&cell, 2, move |c, i, out| {
        c.report_depth(depths[i], &T, recheck, out)
    });
    let all: Reports = reports.iter().flatten().copied().collect();
    assert_eq!(
        cell.backpressure_transitions.load(Ordering::Relaxed),
        all.len() as u64
    );
    let w = cell.word();
    let depth = cell.reported_depth.load(Ordering::Relaxed);
    assert_eq!(
        backpressure::next(w.backpressure(), depth, false, &T),
        w.backpressure(),
        "{:?} at final depth {depth} ({recheck:?})",
        w.backpressure()
    );
}

#[test]
fn concurrent_depth_reports_leave_the_state_where_the_final_depth_leads() {
    for (initial, depths) in [
        ((Normal, 0), [100, 0]),
        ((Pressure, 20), [100, 0]),
        ((Dropping, 100), [0, 100]),
        ((Normal, 0), [20, 100]),
    ] {
        loom::model(move || depth_race(Recheck::Fenced, initial, depths));
    }
}

/// Why `evaluate` goes round after a won CAS: without it, loom finds the interleaving
/// where the loser found its state current and returned before the winner's CAS on a
/// stale depth.
#[test]
#[should_panic(expected = "at final depth")]
fn without_the_recheck_a_stale_evaluation_wins() {
    loom::model(|| depth_race(Recheck::None, (Normal, 0), [100, 0]));
}

/// Why the fences: without them the re-read after the CAS may still see the old depth
/// while the other thread's read of the word missed the CAS (store buffering).
#[test]
#[should_panic(expected = "at final depth")]
fn without_the_fences_the_recheck_can_read_a_stale_depth() {
    loom::model(|| depth_race(Recheck::Unfenced, (Normal, 0), [100, 0]));
}
