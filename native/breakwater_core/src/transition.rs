//! Transition reports.
//!
//! Invariant: the caller whose compare-and-swap on a subject's state word changed a
//! reported state (breaker, backpressure, disabled, forced) gets exactly one
//! [`Transition`] for it; nobody else does. The VM layer writes history and events from
//! these reports, so history holds each transition once.

use crate::state::{BackpressureState, BreakerState, Status, Word};

/// What a transition changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// The breaker state changed (possibly with the forced flag).
    Breaker,
    /// The backpressure state changed.
    Backpressure,
    /// A manual flag changed (disable, enable, force on an open breaker).
    Manual,
}

/// One observed transition: the state word before and after the winning CAS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Word before.
    pub from: Word,
    /// Word after.
    pub to: Word,
    /// When it happened (the subject's clock), in ms.
    pub at_ms: u64,
}

impl Transition {
    /// Which machine changed.
    pub fn machine(&self) -> Machine {
        if self.from.breaker() != self.to.breaker() {
            Machine::Breaker
        } else if self.from.backpressure() != self.to.backpressure() {
            Machine::Backpressure
        } else {
            Machine::Manual
        }
    }

    /// Breaker state before and after.
    pub fn breaker(&self) -> (BreakerState, BreakerState) {
        (self.from.breaker(), self.to.breaker())
    }

    /// Backpressure state before and after.
    pub fn backpressure(&self) -> (BackpressureState, BackpressureState) {
        (self.from.backpressure(), self.to.backpressure())
    }

    /// Status before and after (equal when the transition left the status alone).
    pub fn status(&self) -> (Status, Status) {
        (self.from.status(), self.to.status())
    }
}

/// The transitions one operation made: at most [`Transitions::CAPACITY`], kept inline
/// so that reporting allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Transitions {
    items: [Option<Transition>; Self::CAPACITY],
    len: usize,
}

impl Transitions {
    /// Most transitions one operation can make (e.g. dropping → recovery → normal with
    /// a zero stability period, then an open → half-open on the same call).
    pub const CAPACITY: usize = 4;

    /// No transitions.
    pub const fn new() -> Self {
        Self {
            items: [None; Self::CAPACITY],
            len: 0,
        }
    }

    /// Adds a transition. Operations make fewer than `CAPACITY` by construction; a
    /// further one is dropped from the report (the transition itself has happened and is
    /// counted in the subject's counters) rather than panicking.
    pub fn push(&mut self, t: Transition) {
        if self.len < Self::CAPACITY {
            self.items[self.len] = Some(t);
            self.len += 1;
        } else {
            debug_assert!(
                false,
                "more than {} transitions in one operation",
                Self::CAPACITY
            );
        }
    }

    /// True when none were made.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many were made.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The transitions, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Transition> {
        self.items[..self.len].iter().flatten()
    }
}
