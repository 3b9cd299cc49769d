//! Transition reports.
//!
//! Invariant: the caller whose compare-and-swap on a subject's state word changed a
//! reported state (breaker, backpressure, an overload flag, disabled, forced) gets exactly one
//! [`Transition`] for it; nobody else does. The VM layer writes history and events from
//! these reports, so history holds each transition once, with its [`Cause`]: the rule
//! or the manual action that made it.

use crate::state::{BackpressureState, BreakerState, Signal, Status, Word};

/// What a transition changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    /// The breaker state changed (possibly with the forced flag).
    Breaker,
    /// The backpressure state changed (possibly with the depth signal's flag).
    Backpressure,
    /// Only overload flags changed (see [`crate::signals`]).
    Signal,
    /// A manual flag changed (disable, enable, force on an open breaker).
    Manual,
}

/// Why a transition happened: the rule that fired, or the manual action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Closed → open: `failure_threshold` consecutive failures.
    Failures,
    /// Closed → open: the failure rate over `window_ms` reached
    /// `failure_rate_threshold` (with at least `minimum_calls` calls).
    FailureRate,
    /// Closed → open: the same subject's breaker opened on a peer node (a subject
    /// shared with `share: :breaker`).
    RemoteOpen,
    /// Half-open → open: a probe failed (an error or a slow call).
    ProbeFailure,
    /// Half-open → open: every probe slot taken and the oldest probe unanswered for
    /// `call_timeout_ms`.
    StaleProbe,
    /// Open → half-open: the open time passed (seen by a call or the timer).
    OpenTimeout,
    /// Half-open → closed: `success_threshold` probe successes.
    ProbeSuccesses,
    /// `reset`: the breaker closed by hand (and a forced open cleared).
    Reset,
    /// `force_open`: the breaker opened (or pinned open) by hand.
    ForceOpen,
    /// `disable`.
    Disable,
    /// `enable`.
    Enable,
    /// Backpressure or the depth signal: the depth (reported or spooled) crossed a
    /// threshold.
    Depth,
    /// Backpressure → dropping: the pool had no segment for the subject.
    Pool,
    /// Backpressure recovery → normal: the depth stayed at or below the recovery depth
    /// for `stability_ms`.
    Stability,
    /// Backpressure or an overload flag: a new policy's thresholds moved the state
    /// (`configure`).
    Configure,
    /// The latency signal: the p95 latency (measured or reported) went above
    /// `latency_overload_ms`, or down to its recovery value.
    Latency,
    /// The in-flight signal: the calls in flight (measured or reported) went above
    /// `inflight_overload`, or down to its recovery value.
    Inflight,
}

impl Cause {
    /// Every cause, in declaration order.
    pub const ALL: [Cause; 17] = [
        Cause::Failures,
        Cause::FailureRate,
        Cause::RemoteOpen,
        Cause::ProbeFailure,
        Cause::StaleProbe,
        Cause::OpenTimeout,
        Cause::ProbeSuccesses,
        Cause::Reset,
        Cause::ForceOpen,
        Cause::Disable,
        Cause::Enable,
        Cause::Depth,
        Cause::Pool,
        Cause::Stability,
        Cause::Configure,
        Cause::Latency,
        Cause::Inflight,
    ];

    /// The name used at the VM boundary.
    pub fn name(self) -> &'static str {
        match self {
            Cause::Failures => "failures",
            Cause::FailureRate => "failure_rate",
            Cause::RemoteOpen => "remote_open",
            Cause::ProbeFailure => "probe_failure",
            Cause::StaleProbe => "stale_probe",
            Cause::OpenTimeout => "open_timeout",
            Cause::ProbeSuccesses => "probe_successes",
            Cause::Reset => "reset",
            Cause::ForceOpen => "force_open",
            Cause::Disable => "disable",
            Cause::Enable => "enable",
            Cause::Depth => "depth",
            Cause::Pool => "pool",
            Cause::Stability => "stability",
            Cause::Configure => "configure",
            Cause::Latency => "latency",
            Cause::Inflight => "inflight",
        }
    }
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
    /// Why.
    pub cause: Cause,
}

impl Transition {
    /// Which machine changed.
    pub fn machine(&self) -> Machine {
        if self.from.breaker() != self.to.breaker() {
            Machine::Breaker
        } else if self.from.backpressure() != self.to.backpressure() {
            Machine::Backpressure
        } else if self.signals_changed() {
            Machine::Signal
        } else {
            Machine::Manual
        }
    }

    /// True when an overload flag changed.
    pub fn signals_changed(&self) -> bool {
        self.from.signals_differ(self.to)
    }

    /// The signals overloaded before and after.
    pub fn overloaded(&self) -> (Vec<Signal>, Vec<Signal>) {
        let of = |w: Word| {
            Signal::ALL
                .into_iter()
                .filter(|s| w.overloaded(*s))
                .collect()
        };
        (of(self.from), of(self.to))
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
