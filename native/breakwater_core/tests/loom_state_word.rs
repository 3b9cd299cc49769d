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
//! | [`Cell::transition`] | `Breaker::transition`: the CAS, and the end of the half-open episode it makes |
//! | [`Cell::trip`]       | `Breaker::trip_closed` and the trips from half-open           |
//! | [`Cell::half_open`]  | `Breaker::advance` (open time elapsed)                       |
//! | [`Cell::admit_probe`] | `Breaker::gate` (half-open) and `Breaker::take_probe`       |
//! | [`Cell::record_probe`] | `Breaker::record` (half-open branch) → `record_probe`      |
//! | [`Cell::claim`], [`Cell::free`], [`Cell::free_oldest`], [`Cell::end_episode`], [`Cell::undo_if_ended`] | `ProbeSlots` (`src/probes.rs`), with the crate's own [`Slot`] and [`Ticket`] encodings |
//! | [`Cell::report_depth`], [`Cell::evaluate`] | `Subject::report_depth`, `Subject::evaluate` (with its re-evaluation after a won CAS and the `SeqCst` fences) |
//!
//! The properties checked are the ones the state word exists for (`src/state.rs`):
//! every transition has exactly one winner, which alone reports it; a trip by
//! concurrent failures is one closed → open transition; half-open never has more than
//! `half_open_max_calls` probes in flight; and concurrent depth reports leave the
//! backpressure state where the final depth leads. And the ones the probe slots exist
//! for (`src/probes.rs`): a ticket answers its own probe once, a late ticket frees no
//! slot, the word's count equals the probes holding slots once everyone is done, and
//! no slot outlives its half-open episode (which needs the `SeqCst` fences).
//!
//! If `subject.rs` or `breaker.rs` changes one of these loops, change its model here
//! too.

#![cfg(loom)]

use breakwater_core::backpressure::{self, Thresholds};
use breakwater_core::probes::{Slot, Ticket};
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
    /// The probe slots (`ProbeSlots`).
    slots: [AtomicU64; SLOTS],
    /// Without the `SeqCst` fences between a claim and its epoch check, and between an
    /// episode's end and its scan (for the test that shows why they are there).
    unfenced: bool,
}

/// Probe slots in the models (`ProbeSlots` has 4 inline, more on demand).
const SLOTS: usize = 2;

/// The transitions one operation reported (the `Transitions` out-param).
type Reports = Vec<(Word, Word)>;

/// What became of an outcome in half-open (`Disposition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answered {
    /// A probe's outcome, counted by its episode.
    Probe,
    /// Late: it freed no slot, or its episode ended first.
    Late,
}

impl Cell {
    fn with(word: Word) -> Self {
        let c = Self::default();
        c.word.store(word.0, Ordering::Relaxed);
        c
    }

    /// A half-open cell whose probes in flight (`word.probes()`) hold slots from time 0,
    /// and their tickets.
    fn with_probes(word: Word) -> (Self, Vec<Ticket>) {
        let c = Self::with(word);
        let tickets = (0..word.probes())
            .map(|_| c.claim(word.breaker_epoch(), 0).expect("a slot per probe"))
            .collect();
        (c, tickets)
    }

    fn fence(&self) {
        if !self.unfenced {
            fence(Ordering::SeqCst);
        }
    }

    // ---- ProbeSlots ------------------------------------------------------------------

    /// `ProbeSlots::claim`.
    fn claim(&self, epoch: u16, now_ms: u64) -> Option<Ticket> {
        for _ in 0..SLOTS + 1 {
            let mut raced = false;
            for (i, cell) in self.slots.iter().enumerate() {
                let s = Slot(cell.load(Ordering::Acquire));
                if s.occupied_by(epoch) {
                    continue;
                }
                let to = s.claimed(epoch, now_ms);
                match cell.compare_exchange(s.0, to.0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Some(Ticket::probe(epoch, i, to.generation())),
                    Err(_) => raced = true,
                }
            }
            if !raced {
                return None;
            }
        }
        None
    }

    /// `ProbeSlots::free`.
    fn free(&self, ticket: Ticket) -> bool {
        let Some(cell) = ticket.slot().and_then(|i| self.slots.get(i)) else {
            return false;
        };
        let mut s = Slot(cell.load(Ordering::Acquire));
        while s.occupied_by(ticket.epoch()) && s.generation() == ticket.generation() {
            match cell.compare_exchange(s.0, s.freed().0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => s = Slot(actual),
            }
        }
        false
    }

    /// `ProbeSlots::free_oldest`.
    fn free_oldest(&self, epoch: u16, now_ms: u64) -> bool {
        loop {
            let mut oldest: Option<(usize, Slot)> = None;
            for (i, cell) in self.slots.iter().enumerate() {
                let s = Slot(cell.load(Ordering::Acquire));
                if s.occupied_by(epoch)
                    && oldest.map_or(true, |(_, o)| s.age(now_ms) > o.age(now_ms))
                {
                    oldest = Some((i, s));
                }
            }
            let Some((i, s)) = oldest else {
                return false;
            };
            if self.slots[i]
                .compare_exchange(s.0, s.freed().0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// `ProbeSlots::end_episode`.
    fn end_episode(&self, epoch: u16) {
        self.fence();
        for cell in &self.slots {
            let s = Slot(cell.load(Ordering::Acquire));
            if s.occupied_by(epoch) {
                let _ =
                    cell.compare_exchange(s.0, s.freed().0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    /// `ProbeSlots::undo_if_ended`.
    fn undo_if_ended(&self, ticket: Ticket) -> bool {
        self.fence();
        if self.word().breaker_epoch() == ticket.epoch() {
            return true;
        }
        self.free(ticket);
        false
    }

    /// Slots a probe of `epoch` holds.
    fn in_flight(&self, epoch: u16) -> usize {
        self.slots
            .iter()
            .filter(|c| Slot(c.load(Ordering::Acquire)).occupied_by(epoch))
            .count()
    }

    /// Slots any probe holds, of whatever episode.
    fn occupied(&self) -> usize {
        self.slots
            .iter()
            .filter(|c| {
                let s = Slot(c.load(Ordering::Acquire));
                s.occupied_by(s.epoch())
            })
            .count()
    }

    // ---- the word ----------------------------------------------------------------------

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

    /// `Breaker::transition`: the CAS; its winner ends the half-open episode it leaves
    /// and counts what it enters.
    fn transition(&self, from: Word, to: Word, out: &mut Reports) -> Result<(), Word> {
        self.swap(from, to, out)?;
        if from.breaker() != to.breaker() {
            if from.breaker() == HalfOpen {
                self.end_episode(from.breaker_epoch());
            }
            match to.breaker() {
                Open => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.opens.fetch_add(1, Ordering::Relaxed);
                }
                HalfOpen => {
                    self.half_opens.fetch_add(1, Ordering::Relaxed);
                }
                Closed => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.recoveries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// `Breaker::tripped`.
    fn tripped(w: Word) -> Word {
        let streak = if w.breaker() == HalfOpen {
            w.trip_streak().saturating_add(1)
        } else {
            0
        };
        w.with_breaker(Open).with_trip_streak(streak)
    }

    /// `Breaker::trip_closed` from closed; from half-open, the trips of
    /// `expire_probes` and `force_open` (a trip that ends the episode whatever its
    /// probes do).
    fn trip(&self, from: BreakerState, out: &mut Reports) {
        let mut w = self.word();
        while w.breaker() == from && !w.disabled() {
            match self.transition(w, Self::tripped(w), out) {
                Ok(()) => return,
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

    /// `Breaker::advance`, the open time having passed.
    fn half_open(&self, out: &mut Reports) -> Word {
        let mut w = self.word();
        while w.breaker() == Open && !w.forced_open() {
            let to = w.with_breaker(HalfOpen);
            match self.transition(w, to, out) {
                Ok(()) => w = to,
                Err(actual) => w = actual,
            }
        }
        w
    }

    /// The half-open branch of `Subject::admit_slow` (`Breaker::gate`,
    /// `Breaker::take_probe`): the probe's ticket when admitted as a probe at `now_ms`.
    fn admit_probe(&self, max: u8, now_ms: u64, out: &mut Reports) -> Option<Ticket> {
        let mut w = self.word();
        loop {
            if w.disabled() || w.breaker() != HalfOpen || w.probes() >= max {
                // Not modelled here: disabled, or the breaker left half-open under us.
                return None;
            }
            let to = w.with_probes(w.probes() + 1);
            match self.swap(w, to, out) {
                Ok(()) => {
                    let ticket = self
                        .claim(to.breaker_epoch(), now_ms)
                        .expect("a free slot for every probe the word counts");
                    self.undo_if_ended(ticket);
                    return Some(ticket);
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// `Breaker::record` in half-open (`record_probe`): the outcome of the probe
    /// `ticket` names, or with no ticket of the oldest probe in flight.
    fn record_probe(
        &self,
        failed: bool,
        success_threshold: u8,
        ticket: Option<Ticket>,
        out: &mut Reports,
    ) -> Answered {
        let w = self.word();
        if w.disabled() || w.breaker() != HalfOpen {
            return Answered::Late;
        }
        if ticket.is_some_and(|t| t.epoch() != w.breaker_epoch()) {
            return Answered::Late;
        }
        let epoch = w.breaker_epoch();
        let freed = match ticket {
            Some(t) => self.free(t),
            None => self.free_oldest(epoch, 0),
        };
        if !freed {
            return Answered::Late;
        }
        let mut w = self.word();
        loop {
            if w.breaker() != HalfOpen || w.breaker_epoch() != epoch {
                return Answered::Late;
            }
            let to = if failed {
                Self::tripped(w)
            } else {
                let successes = w.probe_successes().saturating_add(1);
                if successes >= success_threshold {
                    w.with_breaker(Closed).with_trip_streak(0)
                } else {
                    w.with_probes(w.probes().saturating_sub(1))
                        .with_probe_successes(successes)
                }
            };
            match self.transition(w, to, out) {
                Ok(()) => return Answered::Probe,
                Err(actual) => w = actual,
            }
        }
    }

    /// `Breaker::record`: dispatches on the breaker state it reads first (bare
    /// outcomes).
    fn record(&self, failed: bool, threshold: u32, success_threshold: u8, out: &mut Reports) {
        let w = self.word();
        if w.disabled() {
            return;
        }
        match w.breaker() {
            Closed if !failed => self.consecutive_failures.store(0, Ordering::Relaxed),
            Closed => self.record_failure(threshold, out),
            HalfOpen => {
                self.record_probe(failed, success_threshold, None, out);
            }
            // Late.
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
            if c.admit_probe(2, 0, out).is_some() {
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
        assert_eq!(cell.in_flight(cell.word().breaker_epoch()), 2);
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
            if let Some(ticket) = c.admit_probe(1, 0, out) {
                a.fetch_add(1, Ordering::Relaxed);
                let n = f.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(n <= 1, "{n} probes in flight with a limit of 1");
                f.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(c.record_probe(false, 2, Some(ticket), out), Answered::Probe);
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
        let (cell, tickets) = Cell::with_probes(half_open(2, 1));
        let cell = Arc::new(cell);
        let reports = on_threads(&cell, 2, move |c, i, out| {
            c.record_probe(i == 1, 2, Some(tickets[i]), out);
        });
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
        let cell = Arc::new(Cell::with_probes(half_open(1, 0)).0);
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

/// Probes admitted with tickets and answered, among a late outcome (the ticket of a
/// call admitted while closed): the late outcome frees no slot, each probe frees its
/// own, and at the end the word counts no probe and no slot is held.
#[test]
fn tickets_answer_their_own_probes_and_late_ones_free_nothing() {
    // Two preemptions keep this model at about a second (three take over 20 s).
    bounded(2).check(|| {
        let cell = Arc::new(Cell::with(half_open(0, 0)));
        // Admitted while closed, two breaker transitions ago.
        let late = Ticket::call(closed().breaker_epoch());
        let probes = Arc::new(AtomicUsize::new(0));
        let p = probes.clone();
        on_threads(&cell, 3, move |c, i, out| {
            if i == 2 {
                assert_eq!(c.record_probe(false, 255, Some(late), out), Answered::Late);
            } else if let Some(ticket) = c.admit_probe(2, 0, out) {
                p.fetch_add(1, Ordering::Relaxed);
                assert_eq!(
                    c.record_probe(false, 255, Some(ticket), out),
                    Answered::Probe
                );
            }
        });
        let w = cell.word();
        assert_eq!(w.probes(), 0);
        assert_eq!(cell.occupied(), 0);
        assert_eq!(
            usize::from(w.probe_successes()),
            probes.load(Ordering::Relaxed)
        );
    });
}

/// Two answers with the same ticket (a caller's bug, or a retry): one counts, the
/// other is late, and the other probe keeps its slot.
#[test]
fn a_ticket_answers_once() {
    loom::model(|| {
        let (cell, tickets) = Cell::with_probes(half_open(2, 0));
        let cell = Arc::new(cell);
        let t = tickets[0];
        let answers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let a = answers.clone();
        on_threads(&cell, 2, move |c, _, out| {
            let r = c.record_probe(false, 255, Some(t), out);
            a.lock().unwrap().push(r);
        });
        let mut answers = answers.lock().unwrap().clone();
        answers.sort_by_key(|a| *a == Answered::Late);
        assert_eq!(answers, vec![Answered::Probe, Answered::Late]);
        let w = cell.word();
        assert_eq!((w.probes(), w.probe_successes()), (1, 1));
        assert_eq!(cell.in_flight(w.breaker_epoch()), 1);
    });
}

/// A bare outcome (the oldest probe's) and a ticketed one race: each frees one slot or
/// is late, and the word's count always equals the slots held.
#[test]
fn bare_and_ticketed_outcomes_keep_count_and_slots_equal() {
    loom::model(|| {
        let (cell, tickets) = Cell::with_probes(half_open(2, 0));
        let cell = Arc::new(cell);
        let t = tickets[1];
        on_threads(&cell, 2, move |c, i, out| {
            let ticket = (i == 1).then_some(t);
            c.record_probe(false, 255, ticket, out);
        });
        let w = cell.word();
        assert_eq!(usize::from(w.probes()), cell.in_flight(w.breaker_epoch()));
        assert_eq!(usize::from(w.probes() + w.probe_successes()), 2);
    });
}

/// A probe admitted while another thread ends the episode (a stale-probe trip, a
/// force_open): whichever comes first, no slot is left held once both are done, and a
/// probe admitted into the ended episode answers late.
fn claim_races_episode_end(unfenced: bool) {
    let mut cell = Cell::with(half_open(0, 0));
    cell.unfenced = unfenced;
    let cell = Arc::new(cell);
    on_threads(&cell, 2, |c, i, out| {
        if i == 0 {
            if let Some(ticket) = c.admit_probe(2, 0, out) {
                c.record_probe(false, 255, Some(ticket), out);
            }
        } else {
            c.trip(HalfOpen, out);
        }
    });
    assert_eq!(cell.word().breaker(), Open);
    assert_eq!(cell.occupied(), 0, "a slot outlived its episode");
}

#[test]
fn no_slot_outlives_its_episode() {
    loom::model(|| claim_races_episode_end(false));
}

/// Why the fences: without them the claimer may read the old epoch while the trip's
/// scan misses the claim (store buffering), and the slot stays held by a dead episode.
#[test]
#[should_panic(expected = "outlived its episode")]
fn without_the_fences_a_slot_can_outlive_its_episode() {
    loom::model(|| claim_races_episode_end(true));
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
