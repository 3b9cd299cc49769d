//! The circuit breaker's rules.
//!
//! ```text
//!          failure_threshold consecutive failures,
//!          or the failure rate over window_ms
//!   closed ─────────────────────────────────────▶ open ◀──────────────┐
//!     ▲                                            │                  │
//!     │                     open time has passed   │    a probe of    │
//!     │                   (next call or timer)     ▼    this episode  │
//!     └────── success_threshold probe ──────── half_open ─ failed, or ┘
//!             successes of this episode                  the oldest probe is stale
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
//! `success_threshold` probe successes close it, any probe failure opens it again.
//! While every probe slot is taken, a probe left unanswered for `call_timeout_ms`
//! counts as a failure: the timer re-opens the breaker when the *oldest* probe in
//! flight was admitted `call_timeout_ms` ago, so a breaker whose probes answer in time
//! stays half-open however quickly their slots are refilled. `force_open` holds it open
//! until `reset` (its rejections carry the policy's retry hint, `retry_after_ms`, since
//! no timer ends it); `disable` admits everything and never trips, while still
//! counting. `remote_open` (the same subject's breaker opened on a peer node) trips a
//! closed, enabled breaker as a first trip would, with this node's own open time, and
//! leaves every other state alone: an open breaker keeps its open time, a half-open
//! one its probes; from then on this breaker probes and closes on its own.
//!
//! # Outcomes belong to their admission
//!
//! Each visit to half-open is an *episode*, named by the breaker epoch of the state
//! word. An episode counts only the outcomes of its own probes; every other outcome
//! is *late*: counted as a success or failure, and in `late_outcomes`, but it neither
//! frees a probe slot nor moves the breaker. Which admission an outcome answers is
//! known exactly when the caller hands back the admission's [`Ticket`] (`call/3` and
//! the ledger workers always do; `admit(s, token: true)` gives one to any caller):
//!
//! - a ticket of another breaker epoch than the current one is late (a call admitted
//!   while closed that answers after the breaker opened, or a probe of an episode that
//!   has ended);
//! - in half-open, a ticket answers the probe it names, once; a ticket that names no
//!   probe (a bypass call) or a probe already answered or expired is late;
//! - while closed, a ticket of the current epoch counts as any outcome does.
//!
//! A bare outcome (no ticket) is attributed as well as the breaker can: while closed it
//! counts; while open it is late; in half-open it answers the oldest probe in flight,
//! and is late when no probe is in flight. So with bare outcomes a late success that
//! arrives while probes are out still frees the oldest probe's slot; with tickets,
//! at most `half_open_max_calls` probes are ever in flight, whatever the order in which
//! late outcomes arrive.
//!
//! # Where the state lives
//!
//! The breaker's state (closed, open, half-open; probes in flight and probe successes;
//! the trip streak; the breaker epoch) is part of the subject's state word
//! ([`crate::state`]), beside the backpressure state: one word, so that a status check
//! is one load and every transition of either machine is one compare-and-swap with one
//! winner. What only the breaker reads and writes lives here, in [`Breaker`], which
//! the subject holds: the stamp of when the breaker entered its state, the probe slots
//! of the half-open episode ([`crate::probes`]), the consecutive failures, the
//! failure-rate window, the breaker's policy values for the record path and its rare
//! counters. The rules are methods of [`Breaker`] that reach the word through the
//! subject ([`Holder`]), so that the one CAS that reports transitions
//! ([`Holder::swap`]) serves both machines.
//!
//! # Concurrency
//!
//! No mutex on the admit and record paths: every rule reads the state word and changes
//! it by compare-and-swap, retrying on a changed word, so each transition has exactly
//! one winner, which alone stamps it, counts it and, when it ends a half-open episode,
//! frees the episode's probe slots. A stamp is written after its CAS and tagged with the
//! breaker epoch of the word it belongs to ([`Stamp`]), so a reader never pairs a state
//! with the time of an earlier visit to it. A probe is counted in the word before it
//! claims its slot and its slot is freed before the word counts its outcome
//! ([`crate::probes`]). The consecutive-failure count and the window are plain
//! atomics: a trip is decided by the CAS on the word, and a count that races a trip is
//! cleared by the trip's winner.
//!
//! Memory ordering: the word is loaded with `Acquire` and swapped with `AcqRel` (see
//! [`crate::subject`]); stamps are `Release`/`Acquire`; probe slots as
//! [`crate::probes`] says; counts, policy values and counters are `Relaxed`, since
//! every decision re-reads the word.

use crate::clock::{Clock, Now};
use crate::policy::Policy;
use crate::probes::{ProbeSlots, Ticket};
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

/// What became of a recorded outcome, as far as the breaker is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Counted by the closed breaker (consecutive failures, failure rate).
    Counted,
    /// The outcome of a probe of the current half-open episode.
    Probe,
    /// Late: it answers no admission the breaker is waiting for.
    Late,
    /// The subject is disabled: the breaker counts nothing.
    Disabled,
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
    stale_probes: AtomicU64,
    remote_opens: AtomicU64,
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
    /// Half-open → open because the oldest probe went unanswered.
    pub stale_probes: u64,
    /// Closed → open because a peer node's breaker opened (a part of `opens`).
    pub remote_opens: u64,
}

/// The breaker-only state of one subject (the rest is in the state word).
#[derive(Debug)]
pub struct Breaker {
    policy: CachePadded<RecordPolicy>,
    consecutive_failures: CachePadded<AtomicU32>,
    /// When the breaker entered its current state, tagged with the breaker epoch.
    since: Stamp,
    /// The half-open episode's probes in flight.
    probes: ProbeSlots,
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
            probes: ProbeSlots::new(),
            window: FailureWindow::new(),
            counts: Counts::default(),
        }
    }

    /// Takes the record path's values from `policy` and makes room for its probes;
    /// called before the holder publishes the policy.
    pub(crate) fn store_policy(&self, policy: &Policy) {
        self.probes.reserve(policy.half_open_max_calls);
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
            stale_probes: self.counts.stale_probes.load(Ordering::Relaxed),
            remote_opens: self.counts.remote_opens.load(Ordering::Relaxed),
        }
    }

    /// The failure-rate window at `now_ms`.
    pub fn window(&self, now_ms: u64, window_ms: u64) -> WindowCounts {
        self.window.counts(now_ms, window_ms)
    }

    // ---- transitions -------------------------------------------------------------------

    /// CAS `from` → `to` for `cause`; the winner of a breaker transition does what
    /// entering the new state takes: stamp it, count it, clear the closed state's
    /// counts, and free the slots of the half-open episode it ends.
    fn transition<H: Holder, C: Clock>(
        &self,
        h: &H,
        from: Word,
        to: Word,
        cause: Cause,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Result<(), Word> {
        h.swap(from, to, cause, now, out)?;
        if from.breaker() == to.breaker() {
            if to.forced_open() && !from.forced_open() {
                // Pinned open: the open time starts again (and is no longer applied).
                self.since.store(to.breaker_epoch(), now.get());
            }
            return Ok(());
        }
        if from.breaker() == BreakerState::HalfOpen {
            self.probes.end_episode(from.breaker_epoch());
        }
        match to.breaker() {
            BreakerState::Open => {
                self.since.store(to.breaker_epoch(), now.get());
                if cause != Cause::ForceOpen {
                    // A trip starts the next closed period afresh (`force_open` leaves
                    // the counts to `reset`).
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.window.clear();
                }
                self.counts.opens.fetch_add(1, Ordering::Relaxed);
                match cause {
                    Cause::StaleProbe => {
                        self.counts.stale_probes.fetch_add(1, Ordering::Relaxed);
                    }
                    Cause::RemoteOpen => {
                        self.counts.remote_opens.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            BreakerState::HalfOpen => {
                self.since.store(to.breaker_epoch(), now.get());
                self.counts.half_opens.fetch_add(1, Ordering::Relaxed);
            }
            BreakerState::Closed => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.window.clear();
                if cause == Cause::ProbeSuccesses {
                    self.counts.recoveries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// The word after a trip from `w` (closed or half-open): a trip from half-open
    /// extends the streak that grows the open time.
    fn tripped(w: Word) -> Word {
        let streak = if w.breaker() == BreakerState::HalfOpen {
            w.trip_streak().saturating_add(1)
        } else {
            0
        };
        w.with_breaker(BreakerState::Open).with_trip_streak(streak)
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
            match self.transition(h, w, to, Cause::OpenTimeout, now, out) {
                Ok(()) => w = to,
                Err(actual) => w = actual,
            }
        }
        w
    }

    /// The timer's part: re-opens a half-open breaker whose probe slots are all taken
    /// and whose oldest probe in flight was admitted `call_timeout_ms` ago or more.
    pub(crate) fn expire_probes<H: Holder, C: Clock>(
        &self,
        h: &H,
        mut w: Word,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        loop {
            if w.breaker() != BreakerState::HalfOpen || w.disabled() {
                return;
            }
            {
                let view = h.policy();
                let p = &view.policy;
                if w.probes() < p.half_open_max_calls {
                    return;
                }
                match self.probes.oldest_age(w.breaker_epoch(), now.get()) {
                    Some(age) if age >= p.call_timeout_ms => {}
                    _ => return,
                }
            }
            match self.transition(h, w, Self::tripped(w), Cause::StaleProbe, now, out) {
                Ok(()) => return,
                // Look again: an answer may have freed the oldest slot meanwhile.
                Err(actual) => w = actual,
            }
        }
    }

    /// Opens the breaker, for `cause`, if it is still closed and enabled; true when
    /// this call's CAS opened it.
    fn trip_closed<H: Holder, C: Clock>(
        &self,
        h: &H,
        cause: Cause,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> bool {
        let mut w = h.word();
        while w.breaker() == BreakerState::Closed && !w.disabled() {
            match self.transition(h, w, Self::tripped(w), cause, now, out) {
                Ok(()) => return true,
                Err(actual) => w = actual,
            }
        }
        false
    }

    /// A peer node's breaker for the same subject opened: trips this breaker if it is
    /// closed and enabled, as a first trip (no growth of the open time), with cause
    /// [`Cause::RemoteOpen`]; every other state is left alone. True when it opened it
    /// (and counted it in `remote_opens` as well as `opens`).
    pub(crate) fn remote_open<H: Holder, C: Clock>(
        &self,
        h: &H,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> bool {
        self.trip_closed(h, Cause::RemoteOpen, now, out)
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
    /// it): counts the probe in the word, then claims its slot, stamped with the
    /// admission time. `Ok(Some(ticket))` when admitted as a probe; `Err` with the word
    /// now when it changed first; `Ok(None)` if no slot could be claimed, which the
    /// slots' invariant rules out (the count is given back, and the caller refuses).
    pub(crate) fn take_probe<H: Holder, C: Clock>(
        &self,
        h: &H,
        w: Word,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Result<Option<Ticket>, Word> {
        let to = w.with_probes(w.probes() + 1);
        // No state changes here, so nothing is reported.
        h.swap(w, to, Cause::OpenTimeout, now, out)?;
        let epoch = to.breaker_epoch();
        match self.probes.claim(epoch, now.get()) {
            Some(ticket) => {
                // If the episode ended between the count and the claim, the claim is
                // undone here and the probe's outcome will be late.
                self.probes
                    .undo_if_ended(ticket, || h.word().breaker_epoch());
                Ok(Some(ticket))
            }
            None => {
                debug_assert!(false, "no probe slot free with {} counted", to.probes());
                self.uncount_probe(h, epoch, now, out);
                Ok(None)
            }
        }
    }

    /// Takes one probe of episode `epoch` off the word's count, if the episode lasts.
    fn uncount_probe<H: Holder, C: Clock>(
        &self,
        h: &H,
        epoch: u16,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        let mut w = h.word();
        while w.breaker() == BreakerState::HalfOpen && w.breaker_epoch() == epoch && w.probes() > 0
        {
            match h.swap(
                w,
                w.with_probes(w.probes() - 1),
                Cause::OpenTimeout,
                now,
                out,
            ) {
                Ok(()) => return,
                Err(actual) => w = actual,
            }
        }
    }

    // ---- outcomes ----------------------------------------------------------------------

    /// True when a call that took `latency_ms` is slower than `slow_call_ms`.
    #[inline]
    pub(crate) fn is_slow(&self, latency_ms: Option<u64>) -> bool {
        let slow_ms = self.policy.slow_call_ms.load(Ordering::Relaxed);
        slow_ms != 0 && latency_ms.is_some_and(|l| l > slow_ms)
    }

    /// Applies the outcome of a call (`failed`: a failure or a slow call), admitted
    /// with `ticket` when the caller kept it, to the breaker of `w` (see the module doc
    /// for which outcomes count).
    #[inline(always)]
    pub(crate) fn record<H: Holder, C: Clock>(
        &self,
        h: &H,
        w: Word,
        failed: bool,
        ticket: Option<Ticket>,
        clock: &C,
        out: &mut Transitions,
    ) -> Disposition {
        if w.disabled() {
            return Disposition::Disabled;
        }
        if ticket.is_some_and(|t| t.epoch() != w.breaker_epoch()) {
            return Disposition::Late;
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
                Disposition::Counted
            }
            BreakerState::Closed => {
                self.record_closed_failure(h, &Now::new(clock), out);
                Disposition::Counted
            }
            BreakerState::HalfOpen => {
                self.record_probe(h, w, failed, ticket, &Now::new(clock), out)
            }
            // A call admitted before the breaker opened, or a bypass call.
            BreakerState::Open => Disposition::Late,
        }
    }

    // Out of line, as `record_probe`: the record path inlines only the closed success.
    #[inline(never)]
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
            self.trip_closed(h, cause, now, out);
        }
    }

    /// An outcome in the half-open episode of `w`: frees the slot of the probe it
    /// answers (the one `ticket` names, or the oldest), then applies it to the word.
    #[inline(never)]
    fn record_probe<H: Holder, C: Clock>(
        &self,
        h: &H,
        w: Word,
        failed: bool,
        ticket: Option<Ticket>,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Disposition {
        let epoch = w.breaker_epoch();
        let freed = match ticket {
            Some(t) => self.probes.free(t),
            None => self.probes.free_oldest(epoch, now.get()),
        };
        if !freed {
            return Disposition::Late;
        }
        let threshold = h.policy().policy.success_threshold;
        let mut w = h.word();
        loop {
            if w.breaker() != BreakerState::HalfOpen || w.breaker_epoch() != epoch {
                // The episode ended after the slot was freed.
                return Disposition::Late;
            }
            let (to, cause) = if w.disabled() {
                // Disabled meanwhile: it never trips or closes; the probe is answered.
                (w.with_probes(w.probes().saturating_sub(1)), Cause::Disable)
            } else if failed {
                (Self::tripped(w), Cause::ProbeFailure)
            } else {
                let successes = w.probe_successes().saturating_add(1);
                let to = if successes >= threshold {
                    w.with_breaker(BreakerState::Closed).with_trip_streak(0)
                } else {
                    w.with_probes(w.probes().saturating_sub(1))
                        .with_probe_successes(successes)
                };
                (to, Cause::ProbeSuccesses)
            };
            match self.transition(h, w, to, cause, now, out) {
                Ok(()) if w.disabled() => return Disposition::Disabled,
                Ok(()) => return Disposition::Probe,
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
            match self.transition(h, w, to, Cause::Reset, now, out) {
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
        while !w.forced_open() {
            let to = if w.breaker() == BreakerState::Open {
                w.with_forced(true)
            } else {
                w.with_breaker(BreakerState::Open).with_forced(true)
            };
            match self.transition(h, w, to, Cause::ForceOpen, now, out) {
                Ok(()) => return,
                Err(actual) => w = actual,
            }
        }
    }
}
