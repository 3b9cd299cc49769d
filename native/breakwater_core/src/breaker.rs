//! The circuit breaker's rules.
//!
//! ```text
//!          failure_threshold consecutive failures,
//!          or the failure rate over window_ms
//!   closed ─────────────────────────────────────▶ open ◀──────────────┐
//!     ▲                                            │                  │
//!     │                     open time has passed   │     a probe      │
//!     │                   (next call or timer)     ▼     failed, or   │
//!     └────── success_threshold probe ──────── half_open ─ stale ─────┘
//!                successes
//! ```
//!
//! A subject starts `closed`. Each recorded failure (an error, or a call slower than
//! `slow_call_ms`) adds one to the consecutive-failure count, and a success clears it;
//! when the count reaches `failure_threshold`, or when the failure rate over the last
//! `window_ms` reaches `failure_rate_threshold` with at least `minimum_calls` calls, the
//! breaker opens. While `open`, every admission fails fast with the open time left as
//! retry hint. Once the open time (`open_timeout_ms`, doubled per consecutive trip up to
//! `max_open_timeout_ms` when that is set) has passed, the next call or timer tick moves
//! it to `half_open`, which admits at most `half_open_max_calls` probes at once;
//! `success_threshold` probe successes close it, any probe failure opens it again. A
//! probe left unanswered for `call_timeout_ms` while every probe slot is taken counts
//! as a failure. `force_open` holds it open until `reset` (its rejections carry the
//! policy's retry hint, `retry_after_ms`, since no timer ends it); `disable` admits
//! everything and never trips, while still counting.
//!
//! # Where the state lives
//!
//! The breaker's state (closed, open, half-open; probes in flight and probe successes;
//! the trip streak; the breaker epoch) is part of the subject's state word
//! ([`crate::state`]), beside the backpressure state: one word, so that a status check
//! is one load and every transition of either machine is one compare-and-swap with one
//! winner. What only the breaker reads and writes lives here, in [`Breaker`], which
//! the subject holds: the stamp of when the breaker entered its state, the consecutive
//! failures, the failure-rate window, the breaker's policy values for the record path
//! and its rare counters. The rules are methods of [`Breaker`] that reach the word
//! through the subject ([`Holder`]), so that the one CAS that reports transitions
//! ([`Holder::swap`]) serves both machines.
//!
//! # Concurrency
//!
//! No mutex on the admit and record paths: every rule reads the state word and changes
//! it by compare-and-swap, retrying on a changed word, so each transition has exactly
//! one winner, which alone stamps it and counts it. A stamp is written after its CAS and
//! tagged with the breaker epoch of the word it belongs to ([`Stamp`]), so a reader
//! never pairs a state with the time of an earlier visit to it. The consecutive-failure
//! count and the window are plain atomics: a trip is decided by the CAS on the word,
//! and a count that races a trip is cleared by the trip's winner.
//!
//! Memory ordering: the word is loaded with `Acquire` and swapped with `AcqRel` (see
//! [`crate::subject`]); stamps are `Release`/`Acquire`; counts, policy values and
//! counters are `Relaxed`, since every decision re-reads the word.

use crate::clock::{Clock, Now};
use crate::policy::Policy;
use crate::state::{BreakerState, Stamp, Word};
use crate::subject::{PolicyView, Reason};
use crate::transition::{Cause, Transitions};
use crate::window::{FailureWindow, WindowCounts};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// What the breaker needs of the subject that holds it: the state word, the one CAS
/// that changes it (and reports and counts the transition), and the policy.
pub(crate) trait Holder {
    /// The state word now (`Acquire`).
    fn word(&self) -> Word;

    /// CAS `from` → `to`; the winner reports the transition, with `cause`, in `out`.
    fn swap<C: Clock>(
        &self,
        from: Word,
        to: Word,
        cause: Cause,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Result<(), Word>;

    /// The policy now.
    fn policy(&self) -> arc_swap::Guard<Arc<PolicyView>>;
}

/// The breaker's answer to an admission, before backpressure has its say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Closed: the call may go ahead.
    Closed,
    /// Half-open with a free probe slot in this word: take it with
    /// [`Breaker::take_probe`].
    HalfOpen(Word),
    /// Open, and the open time has passed: apply the time rules
    /// ([`Breaker::advance`]) and ask again.
    OpenElapsed,
    /// Refused; retry after this many ms.
    Reject(Reason, u64),
}

/// The policy values the record path reads, one atomic each.
#[derive(Debug, Default)]
struct RecordPolicy {
    failure_threshold: AtomicU32,
    slow_call_ms: AtomicU64,
    rate_enabled: AtomicBool,
}

/// Counters written only on the breaker's transitions.
#[derive(Debug, Default)]
struct Counts {
    opens: AtomicU64,
    half_opens: AtomicU64,
    recoveries: AtomicU64,
}

/// The breaker's counts at a moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BreakerCounts {
    /// Consecutive failures while closed.
    pub consecutive_failures: u32,
    /// Breaker opens.
    pub opens: u64,
    /// Entries into half-open.
    pub half_opens: u64,
    /// Half-open → closed by probe successes.
    pub recoveries: u64,
}

/// The breaker-only state of one subject (the rest is in the state word).
#[derive(Debug)]
pub struct Breaker {
    policy: CachePadded<RecordPolicy>,
    consecutive_failures: CachePadded<AtomicU32>,
    /// When the breaker entered its current state, tagged with the breaker epoch.
    since: Stamp,
    /// When the half-open probes in flight last went from none to some (tagged with the
    /// breaker epoch): the age of the oldest unanswered probe, for the stale-probe rule.
    probes_since: Stamp,
    window: FailureWindow,
    counts: Counts,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    /// A closed breaker with no history.
    pub fn new() -> Self {
        Self {
            policy: CachePadded::new(RecordPolicy::default()),
            consecutive_failures: CachePadded::new(AtomicU32::new(0)),
            since: Stamp::default(),
            probes_since: Stamp::default(),
            window: FailureWindow::new(),
            counts: Counts::default(),
        }
    }

    /// Takes the record path's values from `policy` (the holder stores the policy).
    pub(crate) fn store_policy(&self, policy: &Policy) {
        let p = &self.policy;
        p.failure_threshold
            .store(policy.failure_threshold, Ordering::Relaxed);
        p.slow_call_ms
            .store(policy.slow_call_ms.unwrap_or(0), Ordering::Relaxed);
        p.rate_enabled
            .store(policy.failure_rate_threshold.is_some(), Ordering::Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> BreakerCounts {
        BreakerCounts {
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            opens: self.counts.opens.load(Ordering::Relaxed),
            half_opens: self.counts.half_opens.load(Ordering::Relaxed),
            recoveries: self.counts.recoveries.load(Ordering::Relaxed),
        }
    }

    /// The failure-rate window at `now_ms`.
    pub fn window(&self, now_ms: u64, window_ms: u64) -> WindowCounts {
        self.window.counts(now_ms, window_ms)
    }

    // ---- time --------------------------------------------------------------------------

    /// Milliseconds until the open breaker of `w` may half-open; `None` when forced.
    pub(crate) fn open_remaining<H: Holder, C: Clock>(
        &self,
        h: &H,
        w: Word,
        now: &Now<C>,
    ) -> Option<u64> {
        if w.forced_open() {
            return None;
        }
        let open_ms = h.policy().policy.open_time_ms(w.trip_streak());
        Some(match self.since.load(w.breaker_epoch()) {
            Some(since) => (since + open_ms).saturating_sub(now.get()),
            // The stamp belongs to another epoch. Either the breaker has moved on since
            // `w` was read (the stamp is the next state's, stored after its CAS, so the
            // word read now shows the new epoch): `w`'s open period is over, and the
            // caller's CAS from `w` fails and re-reads. Or the winner of this trip has
            // not published its stamp yet: it just opened.
            None if h.word().breaker_epoch() != w.breaker_epoch() => 0,
            None => open_ms,
        })
    }

    /// The retry hint of a rejection while the breaker is open: the open time left, or,
    /// when it is forced open (no timer ends it, only `reset`), the policy's retry hint.
    pub(crate) fn retry_ms<H: Holder, C: Clock>(&self, h: &H, w: Word, now: &Now<C>) -> u64 {
        self.open_remaining(h, w, now)
            .unwrap_or_else(|| h.policy().policy.retry_after_ms)
    }

    /// Open → half-open once the open time has passed; returns the word now (as far
    /// as this call knows it).
    pub(crate) fn advance<H: Holder, C: Clock>(
        &self,
        h: &H,
        mut w: Word,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Word {
        while w.breaker() == BreakerState::Open && self.open_remaining(h, w, now) == Some(0) {
            let to = w.with_breaker(BreakerState::HalfOpen);
            match h.swap(w, to, Cause::OpenTimeout, now, out) {
                Ok(()) => {
                    self.since.store(to.breaker_epoch(), now.get());
                    self.counts.half_opens.fetch_add(1, Ordering::Relaxed);
                    w = to;
                }
                Err(actual) => w = actual,
            }
        }
        w
    }

    /// The timer's part: fails the half-open probes of `w` left unanswered for
    /// `call_timeout_ms` while every probe slot is taken.
    pub(crate) fn expire_probes<H: Holder, C: Clock>(
        &self,
        h: &H,
        w: Word,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        if w.breaker() != BreakerState::HalfOpen {
            return;
        }
        let view = h.policy();
        let p = &view.policy;
        // Measured from when probes were last admitted into an empty half-open
        // breaker, not from when it half-opened: the timer may half-open it long
        // before traffic comes back, and a probe admitted a moment ago is not stale.
        let stale = w.probes() >= p.half_open_max_calls
            && self
                .probes_since
                .load(w.breaker_epoch())
                .is_some_and(|since| now.get().saturating_sub(since) >= p.call_timeout_ms);
        if stale {
            self.trip(h, BreakerState::HalfOpen, Cause::StaleProbe, now, out);
        }
    }

    /// Opens the breaker, for `cause`, if it is still in `from` (closed or half-open).
    pub(crate) fn trip<H: Holder, C: Clock>(
        &self,
        h: &H,
        from: BreakerState,
        cause: Cause,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        let mut w = h.word();
        while w.breaker() == from && !w.disabled() {
            let streak = if from == BreakerState::HalfOpen {
                w.trip_streak().saturating_add(1)
            } else {
                0
            };
            let to = w.with_breaker(BreakerState::Open).with_trip_streak(streak);
            match h.swap(w, to, cause, now, out) {
                Ok(()) => {
                    self.since.store(to.breaker_epoch(), now.get());
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.window.clear();
                    self.counts.opens.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(actual) => w = actual,
            }
        }
    }

    // ---- admission ---------------------------------------------------------------------

    /// The breaker's answer to an admission on `w` (not disabled).
    pub(crate) fn gate<H: Holder, C: Clock>(&self, h: &H, w: Word, now: &Now<C>) -> Gate {
        match w.breaker() {
            BreakerState::Closed => Gate::Closed,
            BreakerState::Open => match self.open_remaining(h, w, now) {
                Some(0) => Gate::OpenElapsed,
                remaining => {
                    let retry = remaining.unwrap_or_else(|| h.policy().policy.retry_after_ms);
                    Gate::Reject(Reason::CircuitOpen, retry.max(1))
                }
            },
            BreakerState::HalfOpen => {
                let view = h.policy();
                if w.probes() >= view.policy.half_open_max_calls {
                    Gate::Reject(Reason::HalfOpenLimit, view.policy.call_timeout_ms)
                } else {
                    Gate::HalfOpen(w)
                }
            }
        }
    }

    /// Takes a probe slot of the half-open word `w` (as [`Breaker::gate`] returned
    /// it); `Err` with the word now when it changed.
    pub(crate) fn take_probe<H: Holder, C: Clock>(
        &self,
        h: &H,
        w: Word,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Result<(), Word> {
        let to = w.with_probes(w.probes() + 1);
        // No state changes here, so nothing is reported.
        h.swap(w, to, Cause::OpenTimeout, now, out)?;
        if w.probes() == 0 {
            // The stale-probe rule of `expire_probes` counts from here.
            self.probes_since.store(to.breaker_epoch(), now.get());
        }
        Ok(())
    }

    // ---- outcomes ----------------------------------------------------------------------

    /// True when a call that took `latency_ms` is slower than `slow_call_ms`.
    #[inline]
    pub(crate) fn is_slow(&self, latency_ms: Option<u64>) -> bool {
        let slow_ms = self.policy.slow_call_ms.load(Ordering::Relaxed);
        slow_ms != 0 && latency_ms.is_some_and(|l| l > slow_ms)
    }

    /// Applies the outcome of a call (`failed`: a failure or a slow call) to the
    /// breaker of `w`.
    #[inline]
    pub(crate) fn record<H: Holder, C: Clock>(
        &self,
        h: &H,
        w: Word,
        failed: bool,
        clock: &C,
        out: &mut Transitions,
    ) {
        if w.disabled() {
            return;
        }
        match w.breaker() {
            BreakerState::Closed if !failed => {
                // Read before writing: a run of successes never writes a shared line.
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                }
                if self.policy.rate_enabled.load(Ordering::Relaxed) {
                    let window_ms = h.policy().policy.window_ms;
                    self.window.record(clock.now_ms(), window_ms, false);
                }
            }
            BreakerState::Closed => self.record_closed_failure(h, &Now::new(clock), out),
            BreakerState::HalfOpen => self.record_probe(h, w, failed, &Now::new(clock), out),
            // The late outcome of a call admitted before the breaker opened.
            BreakerState::Open => {}
        }
    }

    fn record_closed_failure<H: Holder, C: Clock>(
        &self,
        h: &H,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let mut trip =
            (n >= self.policy.failure_threshold.load(Ordering::Relaxed)).then_some(Cause::Failures);
        if self.policy.rate_enabled.load(Ordering::Relaxed) {
            let view = h.policy();
            let p = &view.policy;
            let c = self.window.record(now.get(), p.window_ms, true);
            if let Some(rate) = p.failure_rate_threshold {
                if trip.is_none() && c.calls >= u64::from(p.minimum_calls) && c.rate() >= rate {
                    trip = Some(Cause::FailureRate);
                }
            }
        }
        if let Some(cause) = trip {
            self.trip(h, BreakerState::Closed, cause, now, out);
        }
    }

    fn record_probe<H: Holder, C: Clock>(
        &self,
        h: &H,
        mut w: Word,
        failed: bool,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        if failed {
            self.trip(h, BreakerState::HalfOpen, Cause::ProbeFailure, now, out);
            return;
        }
        let threshold = h.policy().policy.success_threshold;
        while w.breaker() == BreakerState::HalfOpen && !w.disabled() {
            let successes = w.probe_successes().saturating_add(1);
            let to = if successes >= threshold {
                w.with_breaker(BreakerState::Closed).with_trip_streak(0)
            } else {
                w.with_probes(w.probes().saturating_sub(1))
                    .with_probe_successes(successes)
            };
            match h.swap(w, to, Cause::ProbeSuccesses, now, out) {
                Ok(()) => {
                    if to.breaker() == BreakerState::Closed {
                        self.consecutive_failures.store(0, Ordering::Relaxed);
                        self.window.clear();
                        self.counts.recoveries.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Err(actual) => w = actual,
            }
        }
    }

    // ---- manual control ----------------------------------------------------------------

    /// Closes the breaker (clearing a forced open and the trip streak).
    pub(crate) fn reset<H: Holder, C: Clock>(&self, h: &H, now: &Now<C>, out: &mut Transitions) {
        let mut w = h.word();
        loop {
            let mut to = w.with_forced(false).with_trip_streak(0);
            if w.breaker() != BreakerState::Closed {
                to = to.with_breaker(BreakerState::Closed);
            }
            if to == w {
                break;
            }
            match h.swap(w, to, Cause::Reset, now, out) {
                Ok(()) => break,
                Err(actual) => w = actual,
            }
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.window.clear();
    }

    /// Opens the breaker until [`Breaker::reset`].
    pub(crate) fn force_open<H: Holder, C: Clock>(
        &self,
        h: &H,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        let mut w = h.word();
        loop {
            if w.forced_open() {
                return;
            }
            let to = if w.breaker() == BreakerState::Open {
                w.with_forced(true)
            } else {
                w.with_breaker(BreakerState::Open).with_forced(true)
            };
            match h.swap(w, to, Cause::ForceOpen, now, out) {
                Ok(()) => {
                    self.since.store(to.breaker_epoch(), now.get());
                    if w.breaker() != BreakerState::Open {
                        self.counts.opens.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Err(actual) => w = actual,
            }
        }
    }
}
