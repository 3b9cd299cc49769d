//! Shared by the transition tests (`breaker_transitions`, `backpressure_transitions`):
//! one operation on a subject, with its transition report and the subject's counters
//! checked against every transition reported so far.

use breakwater_core::clock::{Clock, ManualClock};
use breakwater_core::state::BreakerState::{HalfOpen, Open};
use breakwater_core::subject::{Admission, Reason, Subject};
use breakwater_core::transition::{Transition, Transitions};
use std::cell::RefCell;

/// Runs `f` on `s` and checks that its report chains from the old word to the new one
/// (probe bookkeeping may change without a report; states may not), that every
/// transition is stamped with the subject's clock, and that the subject's transition
/// counters equal the counts of `seen`, to which the report is added.
pub fn checked_step<R>(
    s: &Subject,
    clock: &ManualClock,
    seen: &RefCell<Vec<Transition>>,
    f: impl FnOnce(&Subject, &ManualClock, &mut Transitions) -> R,
) -> (R, Vec<Transition>) {
    let before = s.word();
    let mut out = Transitions::new();
    let r = f(s, clock, &mut out);
    let after = s.word();
    let ts: Vec<Transition> = out.iter().copied().collect();
    assert_eq!(ts.len(), out.len());
    if let Some(first) = ts.first() {
        assert_eq!(
            first.from, before,
            "the first transition starts at the old word"
        );
    }
    let mut cur = before;
    for t in &ts {
        assert!(
            !cur.differs_in_state(t.from),
            "transitions chain: {cur:?} then {t:?}"
        );
        assert!(t.from.differs_in_state(t.to), "a reported no-op: {t:?}");
        assert_eq!(t.at_ms, clock.now_ms(), "stamped with the subject's clock");
        cur = t.to;
    }
    assert!(
        !cur.differs_in_state(after),
        "the report ends at the new word: {cur:?} vs {after:?}"
    );
    seen.borrow_mut().extend(ts.iter().copied());

    let snap = s.snapshot(clock);
    let seen = seen.borrow();
    let count = |f: &dyn Fn(&Transition) -> bool| seen.iter().filter(|t| f(t)).count() as u64;
    assert_eq!(
        snap.breaker_transitions,
        count(&|t| t.from.breaker() != t.to.breaker()),
        "breaker_transitions"
    );
    assert_eq!(
        snap.backpressure_transitions,
        count(&|t| t.from.backpressure() != t.to.backpressure()),
        "backpressure_transitions"
    );
    assert_eq!(
        snap.status_changes,
        count(&|t| t.from.status() != t.to.status()),
        "status_changes"
    );
    assert_eq!(
        snap.opens,
        count(&|t| t.to.breaker() == Open && t.from.breaker() != Open),
        "opens"
    );
    assert_eq!(
        snap.recovery_attempts,
        count(&|t| t.to.breaker() == HalfOpen && t.from.breaker() != HalfOpen),
        "recovery_attempts = entries into half-open"
    );
    (r, ts)
}

/// An admission's answer without its ticket, for comparing answers in tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `Admission::Admit`.
    Admit,
    /// `Admission::Probe`.
    Probe,
    /// `Admission::Reject`.
    Reject(Reason, u64),
}

/// `a` without its ticket.
pub fn answer(a: Admission) -> Answer {
    match a {
        Admission::Admit(_) => Answer::Admit,
        Admission::Probe(_) => Answer::Probe,
        Admission::Reject(r, ms) => Answer::Reject(r, ms),
    }
}
