//! A subject: one intake stream's breaker, backpressure state, counters and spool.
//!
//! The breaker's rules are in [`crate::breaker`], the backpressure machine's depth
//! rules in [`crate::backpressure`]; both machines live in the subject's one state word
//! ([`crate::state`]), and [`Subject`] is where they meet: the router's paths (check,
//! admit, record, depth), the spool, manual control and the timer's visit.
//!
//! # Backpressure
//!
//! Depth is the larger of the depth the router last reported and the events waiting in
//! the spool, in pool segments and overflow files (so a subject that overflows to disk
//! still pushes back). Every change of depth re-evaluates the rules of [`crate::backpressure`]; the
//! stability period of `recovery` is checked against a stamp of when the depth last
//! became calm, by depth updates, checks and timer ticks.
//!
//! # Overload signals
//!
//! Beside the backpressure state, three signals ([`Signal`]) each hold a flag in the
//! word, set and cleared by the rule of [`crate::signals`]: depth (against
//! `warning_threshold`, evaluated with the backpressure state, in the same CAS),
//! latency (the p95 of the calls' latencies over `latency_window_ms`, from the
//! [`crate::latency`] histogram) and in-flight (calls admitted and not yet recorded,
//! [`crate::inflight`]). A router may report latency and in-flight itself
//! ([`Subject::report_latency`], [`Subject::report_inflight`]); the value a signal is
//! judged by is the larger of the reported and the measured one, as for depth. Depth
//! flags change on every depth change; latency and in-flight flags on a report, on a
//! change of policy, and on the timer's visit ([`Subject::tick_signals`]), which is
//! what keeps the measured values current: the hot paths only count.
//!
//! # Concurrency
//!
//! No mutex on the admit, record, check and depth paths: each reads the state word and
//! changes it only by compare-and-swap ([`crate::state`]); counters are striped
//! ([`crate::counters`]). The spool is striped per thread ([`crate::spool`]): an enqueue
//! takes only its own thread's stripe lock. Fields written on different paths sit on
//! different cache lines.
//!
//! Memory ordering: the state word is loaded with `Acquire` and swapped with `AcqRel`,
//! so a reader that sees a state also sees what its winner wrote before the CAS; depths,
//! flags and policy values are `Relaxed` because every decision re-reads them and the
//! state word is the only thing whose order matters.

use crate::backpressure::{self, Thresholds};
use crate::breaker::{Breaker, Disposition, Gate, Holder};
use crate::clock::{Clock, Now};
use crate::counters::{Counter, StripedCounters, COUNTERS};
use crate::inflight::{self, Bounds, InflightCount};
use crate::latency::{self, Histogram};
use crate::lifecycle::Lifecycle;
use crate::policy::{DropPolicy, Overflow, Policy, PolicyError};
use crate::probes::Ticket;
use crate::signals::Threshold;
use crate::spool::{
    Batch, BatchError, PushOutcome, Recovered, SegmentEvent, Spool, SpoolStats, Taken,
};
use crate::state::{BackpressureState, BreakerState, Signal, Stamp, Status, Word, NO_TIME};
use crate::store::Store;
use crate::transition::{Cause, Transition, Transitions};
use crate::window::WindowCounts;
use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// Why an admission was refused, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Breaker open.
    CircuitOpen,
    /// Breaker half-open and every probe slot taken.
    HalfOpenLimit,
    /// Backpressure `dropping`.
    Backpressure,
    /// Low priority at a depth from `low_priority_shed_ratio × critical`.
    ShedLowPriority,
    /// Two or more overload signals.
    Overloaded,
}

impl Reason {
    /// The name used at the VM boundary.
    pub fn name(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::HalfOpenLimit => "half_open_limit",
            Self::Backpressure => "backpressure",
            Self::ShedLowPriority => "shed_low_priority",
            Self::Overloaded => "overloaded",
        }
    }
}

/// The answer to an admission. An admitted call's [`Ticket`] names the admission;
/// recording the outcome with it ([`Subject::record_ticket`]) makes the outcome count
/// for that admission only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Admit(Ticket),
    /// Go ahead, as a half-open probe: the call's outcome decides the breaker.
    Probe(Ticket),
    /// Refused; retry after this many milliseconds.
    Reject(Reason, u64),
}

impl Admission {
    /// The ticket of an admitted call.
    pub fn ticket(self) -> Option<Ticket> {
        match self {
            Admission::Admit(t) | Admission::Probe(t) => Some(t),
            Admission::Reject(..) => None,
        }
    }
}

/// Outcome of a call, for [`Subject::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed.
    Failure,
}

/// What became of an event offered to [`Subject::enqueue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// Spooled.
    Accepted,
    /// Spooled after `drop_oldest` discarded this many older events.
    AcceptedAfterDrop(u64),
    /// Refused for lack of room and counted as dropped; retry after this many ms.
    Refused(u64),
    /// Refused because the spool cannot store it now (disk full, unwritable, a failing
    /// write), counted; retry after this many ms.
    Unavailable(u64),
}

/// Why an event was not even offered to the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnqueueError {
    /// Larger than the pool's `max_event_bytes`.
    TooLarge {
        /// The event's size.
        bytes: usize,
        /// The limit.
        max: u32,
    },
    /// The subject was removed after the caller looked it up; nothing was stored. The
    /// caller looks the name up again.
    Removed,
}

/// Why a subject cannot be removed now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spooled {
    /// Events wait in its spool (memory or disk), or a batch is in flight.
    Events,
}

/// Counters kept outside the stripes: written only on transitions.
#[derive(Debug, Default)]
struct RareCounters {
    breaker_transitions: AtomicU64,
    backpressure_transitions: AtomicU64,
    signal_transitions: AtomicU64,
    status_changes: AtomicU64,
}

/// The policy values the hot paths read, one atomic each, and the in-flight signal's
/// request for the timer (on the line `admit` reads first).
#[derive(Debug, Default)]
struct HotPolicy {
    bypass_priority: AtomicU8,
    /// Set by `admit` (when not set already): calls may be in flight, the timer should
    /// count them. Swapped back by the timer's visit.
    inflight_armed: AtomicBool,
    low_priority_max: AtomicU8,
    warning: AtomicU64,
    critical: AtomicU64,
    recovery: AtomicU64,
    shed_depth: AtomicU64,
    retry_after_ms: AtomicU64,
    quota: AtomicU32,
    drop_oldest: AtomicBool,
    overflow_disk: AtomicBool,
    latency_above: AtomicU64,
    latency_recover: AtomicU64,
    inflight_above: AtomicU64,
    inflight_recover: AtomicU64,
}

impl HotPolicy {
    fn latency(&self) -> Threshold {
        Threshold {
            above: self.latency_above.load(Ordering::Relaxed),
            recover_at: self.latency_recover.load(Ordering::Relaxed),
        }
    }

    fn inflight(&self) -> Threshold {
        Threshold {
            above: self.inflight_above.load(Ordering::Relaxed),
            recover_at: self.inflight_recover.load(Ordering::Relaxed),
        }
    }
}

/// The values the latency and in-flight signals are judged by, beside the counters.
#[derive(Debug, Default)]
struct SignalValues {
    /// p95 latency last reported by the router (0: none).
    reported_latency: AtomicU64,
    /// Calls in flight last reported by the router.
    reported_inflight: AtomicU64,
    /// p95 of the histogram's window at the timer's last refresh (0: no sample).
    measured_latency: AtomicU64,
    /// Samples in the window at the timer's last refresh.
    latency_samples: AtomicU64,
    /// The timer's last visit left something to watch: calls in flight, samples in
    /// the latency window, or a latency or in-flight flag set.
    busy: AtomicBool,
}

/// What only the timer's visit reads and writes (under the subject's upkeep lock).
#[derive(Debug, Default)]
struct Upkeep {
    /// When the histogram's current slice began.
    slice_started_ms: Option<u64>,
    /// When the p95 was last computed.
    refreshed_ms: Option<u64>,
    /// Marks of the starts, to forget calls never recorded.
    inflight_marks: inflight::Marks,
}

/// The signals' values at a timer visit, for the layer above (telemetry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalReport {
    /// The state word after the visit.
    pub word: Word,
    /// Depth.
    pub depth: u64,
    /// The p95 latency the signal is judged by (larger of reported and measured).
    pub latency_p95_ms: u64,
    /// The calls in flight the signal is judged by (larger of reported and measured).
    pub inflight: u64,
}

impl SignalReport {
    /// True when there is something to tell: a status other than inactive, or a signal
    /// with a value.
    pub fn is_notable(&self) -> bool {
        self.word.status() != Status::Inactive
            || self.depth > 0
            || self.latency_p95_ms > 0
            || self.inflight > 0
    }
}

/// The whole policy with its lookup table, swapped as one.
#[derive(Debug)]
pub struct PolicyView {
    /// The policy.
    pub policy: Policy,
    /// The same policy in the form the layer above keeps it (opaque bytes here), set
    /// with it in one swap so the two never disagree; `None` for a subject that runs
    /// under the registry's default policy.
    pub extra: Option<Arc<[u8]>>,
    priorities: FxHashMap<Vec<u8>, u8>,
}

impl PolicyView {
    fn new(policy: Policy, extra: Option<Arc<[u8]>>) -> Self {
        let priorities = policy.priorities.iter().cloned().collect();
        Self {
            policy,
            extra,
            priorities,
        }
    }
}

/// A subject's state at a moment, for status and metrics.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The state word.
    pub word: Word,
    /// Depth (larger of reported and spooled).
    pub depth: u64,
    /// Depth the router last reported.
    pub reported_depth: u64,
    /// Highest depth seen.
    pub high_watermark: u64,
    /// The pool could not give the subject a segment.
    pub exhausted: bool,
    /// Events of the subject wait in overflow files.
    pub disk_pending: bool,
    /// Consecutive failures while closed.
    pub consecutive_failures: u32,
    /// Striped counters, indexed by `Counter as usize`.
    pub counters: [u64; COUNTERS],
    /// Half-open episodes ended by a stale probe.
    pub stale_probes: u64,
    /// Breaker opens.
    pub opens: u64,
    /// Breaker opens because a peer's breaker opened ([`Subject::remote_open`]); a
    /// part of `opens`.
    pub remote_opens: u64,
    /// Entries into half-open.
    pub recovery_attempts: u64,
    /// Half-open → closed.
    pub successful_recoveries: u64,
    /// Breaker transitions.
    pub breaker_transitions: u64,
    /// Backpressure transitions.
    pub backpressure_transitions: u64,
    /// Transitions that moved an overload flag.
    pub signal_transitions: u64,
    /// Status changes (inactive/warning/active).
    pub status_changes: u64,
    /// Spool counts.
    pub spool: SpoolStats,
    /// Milliseconds until an open breaker half-opens (0 otherwise; forced: 0).
    pub open_remaining_ms: u64,
    /// The failure-rate window now.
    pub window: WindowCounts,
    /// p95 latency the latency signal is judged by: the larger of reported and measured.
    pub latency_p95_ms: u64,
    /// p95 of the latency histogram's window at the timer's last visit (0: no sample).
    pub measured_latency_p95_ms: u64,
    /// p95 latency last reported by the router.
    pub reported_latency_p95_ms: u64,
    /// Latency samples in the window at the timer's last visit.
    pub latency_samples: u64,
    /// Bytes of the latency histogram (0 until the first latency).
    pub latency_histogram_bytes: u64,
    /// Calls in flight the in-flight signal is judged by: the larger of reported and
    /// measured.
    pub inflight: u64,
    /// Calls admitted and not yet recorded, now (at least this many: the counters move
    /// while they are read, see [`crate::inflight`]).
    pub measured_inflight: u64,
    /// Calls in flight last reported by the router.
    pub reported_inflight: u64,
}

impl Snapshot {
    /// A striped counter.
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters[c as usize]
    }
}

/// One subject.
pub struct Subject {
    name: Box<[u8]>,
    word: CachePadded<AtomicU64>,
    hot: CachePadded<HotPolicy>,
    reported_depth: CachePadded<AtomicU64>,
    breaker: Breaker,
    exhausted: AtomicBool,
    high_watermark: AtomicU64,
    calm_since: Stamp,
    rare: RareCounters,
    counters: StripedCounters,
    signals: CachePadded<SignalValues>,
    latency: OnceLock<Box<Histogram>>,
    inflight: InflightCount,
    upkeep: Mutex<Upkeep>,
    policy: ArcSwap<PolicyView>,
    configure_lock: Mutex<()>,
    spool: Spool,
    lifecycle: Lifecycle,
}

impl Subject {
    /// A fresh subject named `name` under `policy` (validated by the caller), in a pool
    /// of `pool_segments` segments.
    pub fn new(name: &[u8], policy: Policy, pool_segments: u32) -> Self {
        let s = Self {
            name: name.into(),
            word: CachePadded::new(AtomicU64::new(Word::INITIAL.0)),
            hot: CachePadded::new(HotPolicy::default()),
            reported_depth: CachePadded::new(AtomicU64::new(0)),
            breaker: Breaker::new(),
            exhausted: AtomicBool::new(false),
            high_watermark: AtomicU64::new(0),
            calm_since: Stamp::default(),
            rare: RareCounters::default(),
            counters: StripedCounters::new(),
            signals: CachePadded::new(SignalValues::default()),
            latency: OnceLock::new(),
            inflight: InflightCount::default(),
            upkeep: Mutex::new(Upkeep::default()),
            policy: ArcSwap::from_pointee(PolicyView::new(Policy::default(), None)),
            configure_lock: Mutex::new(()),
            spool: Spool::new(),
            lifecycle: Lifecycle::default(),
        };
        s.store_policy(policy, None, pool_segments);
        s
    }

    /// The subject's lifecycle state (class, removal, idleness).
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The subject's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The state word now.
    #[inline]
    pub fn word(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// The policy now.
    pub fn policy(&self) -> Arc<PolicyView> {
        self.policy.load_full()
    }

    /// Depth: the larger of the reported depth and the events waiting in the spool
    /// (pool segments and overflow files; see [`Spool::depth`]).
    #[inline]
    pub fn depth(&self) -> u64 {
        self.reported_depth
            .load(Ordering::Relaxed)
            .max(self.spool.depth())
    }

    /// The priority of `event_type` in this subject's policy, if it names one.
    pub fn priority_of(&self, event_type: &[u8]) -> Option<u8> {
        self.policy.load().priorities.get(event_type).copied()
    }

    fn thresholds(&self) -> Thresholds {
        Thresholds {
            warning: self.hot.warning.load(Ordering::Relaxed),
            critical: self.hot.critical.load(Ordering::Relaxed),
            recovery: self.hot.recovery.load(Ordering::Relaxed),
        }
    }

    fn store_policy(&self, policy: Policy, extra: Option<Arc<[u8]>>, pool_segments: u32) {
        let h = &self.hot;
        h.bypass_priority
            .store(policy.bypass_priority, Ordering::Relaxed);
        h.low_priority_max
            .store(policy.low_priority_max, Ordering::Relaxed);
        h.warning.store(policy.warning_threshold, Ordering::Relaxed);
        h.critical
            .store(policy.critical_threshold, Ordering::Relaxed);
        h.recovery.store(policy.recovery_depth(), Ordering::Relaxed);
        h.shed_depth.store(policy.shed_depth(), Ordering::Relaxed);
        h.retry_after_ms
            .store(policy.retry_after_ms, Ordering::Relaxed);
        self.breaker.store_policy(&policy);
        h.quota
            .store(policy.segment_quota(pool_segments), Ordering::Relaxed);
        h.drop_oldest.store(
            policy.drop_policy == DropPolicy::DropOldest,
            Ordering::Relaxed,
        );
        h.overflow_disk
            .store(policy.overflow == Overflow::Disk, Ordering::Relaxed);
        let ratio = policy.recovery_threshold;
        let lt = Threshold::new(policy.latency_overload_ms, ratio);
        h.latency_above.store(lt.above, Ordering::Relaxed);
        h.latency_recover.store(lt.recover_at, Ordering::Relaxed);
        let it = Threshold::new(policy.inflight_overload, ratio);
        h.inflight_above.store(it.above, Ordering::Relaxed);
        h.inflight_recover.store(it.recover_at, Ordering::Relaxed);
        self.policy.store(Arc::new(PolicyView::new(policy, extra)));
    }

    fn depth_threshold(&self) -> Threshold {
        Threshold {
            above: self.hot.warning.load(Ordering::Relaxed),
            recover_at: self.hot.recovery.load(Ordering::Relaxed),
        }
    }

    /// Replaces the policy (validated here too) and re-evaluates the backpressure state
    /// against the new thresholds.
    pub fn configure<C: Clock>(
        &self,
        policy: Policy,
        pool_segments: u32,
        clock: &C,
        out: &mut Transitions,
    ) -> Result<(), Vec<PolicyError>> {
        self.configure_with(policy, None, pool_segments, clock, out)
    }

    /// [`Subject::configure`], keeping `extra` (the layer above's form of the policy,
    /// see [`PolicyView::extra`]) with the policy in the same swap.
    pub fn configure_with<C: Clock>(
        &self,
        policy: Policy,
        extra: Option<Arc<[u8]>>,
        pool_segments: u32,
        clock: &C,
        out: &mut Transitions,
    ) -> Result<(), Vec<PolicyError>> {
        policy.validate()?;
        let _serialised = self.configure_lock.lock();
        self.store_policy(policy, extra, pool_segments);
        let now = Now::new(clock);
        self.evaluate(&now, true, out);
        self.evaluate_signals(None, Some(Cause::Configure), &now, out);
        Ok(())
    }

    // ---- transitions -------------------------------------------------------------

    /// CAS `from` → `to`; on success reports the transition, with `cause`, and counts
    /// it. The clock is read only when a transition is reported.
    fn swap<C: Clock>(
        &self,
        from: Word,
        to: Word,
        cause: Cause,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Result<(), Word> {
        self.word
            .compare_exchange(from.0, to.0, Ordering::AcqRel, Ordering::Acquire)
            .map_err(Word)?;
        if from.differs_in_state(to) {
            let t = Transition {
                from,
                to,
                at_ms: now.get(),
                cause,
            };
            if from.breaker() != to.breaker() {
                self.rare
                    .breaker_transitions
                    .fetch_add(1, Ordering::Relaxed);
            }
            if from.backpressure() != to.backpressure() {
                self.rare
                    .backpressure_transitions
                    .fetch_add(1, Ordering::Relaxed);
            }
            if from.signals_differ(to) {
                self.rare.signal_transitions.fetch_add(1, Ordering::Relaxed);
            }
            if from.status() != to.status() {
                self.rare.status_changes.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(
                subject = %String::from_utf8_lossy(&self.name),
                from = ?from,
                to = ?to,
                cause = cause.name(),
                "breakwater transition"
            );
            out.push(t);
        }
        Ok(())
    }

    /// Applies the time-based rules: open → half-open once the open time has passed,
    /// recovery → normal once the depth has been calm for the stability period.
    fn advance_time<C: Clock>(&self, w: Word, now: &Now<C>, out: &mut Transitions) -> Word {
        let mut w = self.breaker.advance(self, w, now, out);
        if w.backpressure() == BackpressureState::Recovery {
            self.evaluate(now, false, out);
            w = self.word();
        }
        w
    }

    /// Moves the backpressure state, and the depth signal's flag, to where the current
    /// depth leads (one CAS for both); `configure`: the policy has just changed (the
    /// cause of any transition this makes).
    fn evaluate<C: Clock>(&self, now: &Now<C>, configure: bool, out: &mut Transitions) {
        let mut w = self.word();
        // Transitions this call may make: one rule step, recovery -> normal with a zero
        // stability period, and a re-evaluation after a concurrent depth change; one slot
        // of the report is left for a breaker transition of the same operation.
        let mut rounds = Transitions::CAPACITY - 1;
        loop {
            let depth = self.depth();
            let exhausted = self.exhausted.load(Ordering::Relaxed);
            let t = self.thresholds();
            let current = w.backpressure();
            let mut target = backpressure::next(current, depth, exhausted, &t);
            if current == BackpressureState::Recovery && target == current {
                let epoch = w.backpressure_epoch();
                let calm = self.calm_since.load(epoch);
                if depth <= t.recovery {
                    match calm {
                        Some(NO_TIME) => self.calm_since.store(epoch, now.get()),
                        Some(since) => {
                            let stability = self.policy.load().policy.stability_ms;
                            if now.get().saturating_sub(since) >= stability {
                                target = BackpressureState::Normal;
                            }
                        }
                        // Its winner has not stamped this recovery yet; it will.
                        None => {}
                    }
                } else if calm.is_some_and(|c| c != NO_TIME) {
                    self.calm_since.store(epoch, NO_TIME);
                }
            }
            let overloaded = self
                .depth_threshold()
                .next(w.overloaded(Signal::Depth), depth);
            if target == current && overloaded == w.overloaded(Signal::Depth) {
                return;
            }
            let cause = if configure {
                Cause::Configure
            } else if current == BackpressureState::Recovery && target == BackpressureState::Normal
            {
                Cause::Stability
            } else if target == BackpressureState::Dropping && depth < t.critical {
                Cause::Pool
            } else {
                Cause::Depth
            };
            // The epoch moves only with the state (the calm stamp is tagged by it).
            let mut to = w.with_overloaded(Signal::Depth, overloaded);
            if target != current {
                to = to.with_backpressure(target);
            }
            match self.swap(w, to, cause, now, out) {
                Ok(()) => {
                    if target == BackpressureState::Recovery && current != target {
                        self.calm_since.store(to.backpressure_epoch(), now.get());
                    }
                    // Go round: with a zero stability period recovery may end at once,
                    // and the depth read above may be stale by now. Another thread may
                    // have changed it and returned from its own evaluation before this
                    // CAS, finding its state current; nobody else would correct ours.
                    rounds -= 1;
                    if rounds == 0 {
                        return;
                    }
                    // Pairs with the fence in `report_depth`: either that thread's
                    // evaluation sees this CAS, or this re-read sees its depth.
                    fence(Ordering::SeqCst);
                    w = to;
                }
                Err(actual) => w = actual,
            }
        }
    }

    // ---- the router's paths --------------------------------------------------------

    /// The router-facing status and retry hint (0 unless active). Applies the time-based
    /// rules lazily; with both machines at rest it reads one word and nothing else.
    #[inline]
    pub fn check<C: Clock>(&self, clock: &C, out: &mut Transitions) -> (Status, u64) {
        let w = self.word();
        if w.is_quiet() {
            return (Status::Inactive, 0);
        }
        self.check_slow(w, clock, out)
    }

    fn check_slow<C: Clock>(&self, w: Word, clock: &C, out: &mut Transitions) -> (Status, u64) {
        if w.disabled() {
            return (Status::Inactive, 0);
        }
        let now = Now::new(clock);
        let w = self.advance_time(w, &now, out);
        match w.status() {
            Status::Active => (Status::Active, self.retry_ms(w, &now)),
            s => (s, 0),
        }
    }

    /// The retry hint `check` would give now: 0 unless the status is active. Reads only
    /// (no transition is made).
    pub fn retry_after_ms<C: Clock>(&self, clock: &C) -> u64 {
        let w = self.word();
        if w.status() == Status::Active && !w.disabled() {
            self.retry_ms(w, &Now::new(clock))
        } else {
            0
        }
    }

    fn retry_ms<C: Clock>(&self, w: Word, now: &Now<C>) -> u64 {
        let mut r = 0;
        if w.breaker() == BreakerState::Open {
            r = self.breaker.retry_ms(self, w, now);
        }
        if w.backpressure() == BackpressureState::Dropping || w.overload_count() >= 2 {
            r = r.max(self.hot.retry_after_ms.load(Ordering::Relaxed));
        }
        r.max(1)
    }

    /// Admission for a call at `priority` (0..=9), in this order: bypass, circuit open,
    /// half-open limit, backpressure, two or more overloaded signals, low-priority
    /// shedding. An admitted call is in flight until its outcome is recorded
    /// ([`crate::inflight`]: counted from the counters this path increments anyway).
    #[inline]
    pub fn admit<C: Clock>(&self, priority: u8, clock: &C, out: &mut Transitions) -> Admission {
        self.arm_inflight();
        if priority >= self.hot.bypass_priority.load(Ordering::Relaxed) {
            self.counters.incr(Counter::Bypassed);
            // A bypass admission does not depend on the word: any moment of the call
            // names its breaker epoch.
            return Admission::Admit(Ticket::call(self.word().breaker_epoch()));
        }
        let w = self.word();
        if w.is_quiet() {
            if let Some(reject) = self.shed(priority) {
                return reject;
            }
            self.counters.incr(Counter::Accepted);
            return Admission::Admit(Ticket::call(w.breaker_epoch()));
        }
        self.admit_slow(w, Some(priority), clock, out)
    }

    /// Asks the timer to count the calls in flight (see [`Subject::tick_signals`]).
    /// Read before writing: the line is read by `admit` anyway, and written once per
    /// visit of the timer at most. Release: the timer that swaps it sees the counts
    /// incremented before.
    #[inline]
    fn arm_inflight(&self) {
        if !self.hot.inflight_armed.load(Ordering::Relaxed) {
            self.hot.inflight_armed.store(true, Ordering::Release);
        }
    }

    fn shed(&self, priority: u8) -> Option<Admission> {
        if priority <= self.hot.low_priority_max.load(Ordering::Relaxed)
            && self.depth() >= self.hot.shed_depth.load(Ordering::Relaxed)
        {
            self.counters.incr(Counter::RejectedShedLowPriority);
            let retry = self.hot.retry_after_ms.load(Ordering::Relaxed);
            return Some(Admission::Reject(Reason::ShedLowPriority, retry));
        }
        None
    }

    fn backpressure_reject(&self, w: Word, priority: u8) -> Option<Admission> {
        if w.backpressure() == BackpressureState::Dropping {
            self.counters.incr(Counter::RejectedBackpressure);
            let retry = self.hot.retry_after_ms.load(Ordering::Relaxed);
            return Some(Admission::Reject(Reason::Backpressure, retry));
        }
        if w.overload_count() >= 2 {
            self.counters.incr(Counter::RejectedOverloaded);
            let retry = self.hot.retry_after_ms.load(Ordering::Relaxed);
            return Some(Admission::Reject(Reason::Overloaded, retry));
        }
        self.shed(priority)
    }

    fn admit_slow<C: Clock>(
        &self,
        mut w: Word,
        priority: Option<u8>,
        clock: &C,
        out: &mut Transitions,
    ) -> Admission {
        let now = Now::new(clock);
        loop {
            if w.disabled() {
                self.counters.incr(Counter::Accepted);
                return Admission::Admit(Ticket::call(w.breaker_epoch()));
            }
            match self.breaker.gate(self, w, &now) {
                Gate::OpenElapsed => w = self.advance_time(w, &now, out),
                Gate::Reject(reason, retry) => return self.reject_breaker(reason, retry),
                Gate::Closed => {
                    if let Some(reject) = priority.and_then(|p| self.backpressure_reject(w, p)) {
                        return reject;
                    }
                    self.counters.incr(Counter::Accepted);
                    return Admission::Admit(Ticket::call(w.breaker_epoch()));
                }
                Gate::HalfOpen(half) => {
                    if let Some(reject) = priority.and_then(|p| self.backpressure_reject(half, p)) {
                        return reject;
                    }
                    match self.breaker.take_probe(self, half, &now, out) {
                        Ok(Some(ticket)) => {
                            self.counters.incr(Counter::Accepted);
                            return Admission::Probe(ticket);
                        }
                        Ok(None) => {
                            let retry = self.policy.load().policy.call_timeout_ms;
                            return self.reject_breaker(Reason::HalfOpenLimit, retry);
                        }
                        Err(actual) => w = actual,
                    }
                }
            }
        }
    }

    fn reject_breaker(&self, reason: Reason, retry: u64) -> Admission {
        self.counters.incr(match reason {
            Reason::HalfOpenLimit => Counter::RejectedHalfOpenLimit,
            _ => Counter::RejectedCircuitOpen,
        });
        Admission::Reject(reason, retry)
    }

    /// Admission of a write to the ledger by a drain worker: the breaker alone decides.
    /// Draining is what relieves backpressure, so backpressure never holds it back.
    /// Answers [`Admission::Probe`] when the write takes a half-open probe slot: its
    /// outcome must be recorded, with the ticket.
    ///
    /// A write is not a router call: it is counted as accepted and as `WritesAdmitted`
    /// (after), so that it is not in flight ([`crate::inflight`]); its outcome is
    /// recorded with [`Subject::record_unadmitted`].
    pub fn admit_write<C: Clock>(&self, clock: &C, out: &mut Transitions) -> Admission {
        let w = self.word();
        let a = if w.breaker() == BreakerState::Closed || w.disabled() {
            self.counters.incr(Counter::Accepted);
            Admission::Admit(Ticket::call(w.breaker_epoch()))
        } else {
            self.admit_slow(w, None, clock, out)
        };
        if !matches!(a, Admission::Reject(..)) {
            self.counters.incr_release(Counter::WritesAdmitted);
        }
        a
    }

    /// Records the outcome of a call a router admitted (it is no longer in flight)
    /// whose admission is not known; `latency_ms`, when given, goes into the latency
    /// histogram and makes a call slower than `slow_call_ms` a failure. In half-open
    /// the outcome is attributed to the oldest probe in flight (see [`crate::breaker`]).
    #[inline]
    pub fn record<C: Clock>(
        &self,
        outcome: Outcome,
        latency_ms: Option<u64>,
        clock: &C,
        out: &mut Transitions,
    ) {
        self.record_outcome(outcome, latency_ms, None, clock, out);
    }

    /// Records the outcome of the call admitted with `ticket`: it counts for that
    /// admission only (see [`crate::breaker`]).
    pub fn record_ticket<C: Clock>(
        &self,
        outcome: Outcome,
        latency_ms: Option<u64>,
        ticket: Ticket,
        clock: &C,
        out: &mut Transitions,
    ) {
        self.record_outcome(outcome, latency_ms, Some(ticket), clock, out);
    }

    #[inline(always)]
    fn record_outcome<C: Clock>(
        &self,
        outcome: Outcome,
        latency_ms: Option<u64>,
        ticket: Option<Ticket>,
        clock: &C,
        out: &mut Transitions,
    ) {
        if let Some(ms) = latency_ms {
            self.histogram().record(ms);
        }
        let slow = self.breaker.is_slow(latency_ms);
        if slow {
            self.counters.incr(Counter::SlowCalls);
        }
        let failed = outcome == Outcome::Failure || slow;
        // Release: the in-flight count reads ends before starts (see `inflight`).
        self.counters.incr_release(if failed {
            Counter::Failures
        } else {
            Counter::Successes
        });
        // A record nobody admitted must be forgotten by the timer's next visit, before
        // later admissions are counted against it.
        self.arm_inflight();
        match self
            .breaker
            .record(self, self.word(), failed, ticket, clock, out)
        {
            Disposition::Counted | Disposition::Disabled => {}
            Disposition::Late => self.counters.incr(Counter::LateOutcomes),
            Disposition::Probe if failed => self.counters.incr(Counter::ProbeFailures),
            Disposition::Probe => self.counters.incr(Counter::ProbeSuccesses),
        }
    }

    /// [`Subject::record`] (or, with a `ticket`, [`Subject::record_ticket`]) of a call no
    /// router admitted (a drain worker's write or health check, admitted by
    /// [`Subject::admit_write`]): the same outcome and latency, and not an end of a call
    /// in flight.
    pub fn record_unadmitted<C: Clock>(
        &self,
        outcome: Outcome,
        latency_ms: Option<u64>,
        ticket: Option<Ticket>,
        clock: &C,
        out: &mut Transitions,
    ) {
        // Before the outcome's increment, which the in-flight count reads first.
        self.counters.incr(Counter::RecordedUnadmitted);
        self.record_outcome(outcome, latency_ms, ticket, clock, out);
    }

    /// The latency histogram, allocated on first use.
    #[inline]
    fn histogram(&self) -> &Histogram {
        self.latency.get_or_init(|| Box::new(Histogram::new()))
    }

    /// Sets the p95 latency (ms) the router measured and re-evaluates the latency
    /// signal. The signal is judged by the larger of this and the measured p95; a
    /// report stays until the next one (report 0 to withdraw it).
    pub fn report_latency<C: Clock>(&self, p95_ms: u64, clock: &C, out: &mut Transitions) {
        self.signals
            .reported_latency
            .store(p95_ms, Ordering::Relaxed);
        // Orders the store before the word is read in `evaluate_signals` (see there).
        fence(Ordering::SeqCst);
        self.evaluate_signals(None, None, &Now::new(clock), out);
    }

    /// Sets the calls in flight the router counts and re-evaluates the in-flight
    /// signal, judged by the larger of this and the measured count; a report stays
    /// until the next one.
    pub fn report_inflight<C: Clock>(&self, n: u64, clock: &C, out: &mut Transitions) {
        self.signals.reported_inflight.store(n, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.evaluate_signals(None, None, &Now::new(clock), out);
    }

    /// The p95 latency the signal is judged by.
    fn latency_value(&self) -> u64 {
        let s = &self.signals;
        s.reported_latency
            .load(Ordering::Relaxed)
            .max(s.measured_latency.load(Ordering::Relaxed))
    }

    /// Calls admitted and not yet recorded, now (sums the counter stripes).
    fn measured_inflight(&self) -> Bounds<u64> {
        self.inflight.measured(inflight::bounds(&self.counters))
    }

    /// Moves the latency and in-flight flags to where their values lead (one CAS for
    /// both). `measured_inflight`: the timer's count, or `None` to count now. `cause`:
    /// the cause of any transition this makes, or `None` for the signal that moved
    /// ([`Cause::Latency`] when the latency flag did, else [`Cause::Inflight`]).
    fn evaluate_signals<C: Clock>(
        &self,
        measured_inflight: Option<Bounds<u64>>,
        cause: Option<Cause>,
        now: &Now<C>,
        out: &mut Transitions,
    ) {
        let mut w = self.word();
        // As in `evaluate`: after a won CAS, go round once more, since a concurrent
        // report may have found its value current before this CAS.
        let mut rounds = 2;
        loop {
            let latency = self.latency_value();
            let inflight = measured_inflight
                .unwrap_or_else(|| self.measured_inflight())
                .at_least(self.signals.reported_inflight.load(Ordering::Relaxed));
            let to = w
                .with_overloaded(
                    Signal::Latency,
                    self.hot
                        .latency()
                        .next(w.overloaded(Signal::Latency), latency),
                )
                .with_overloaded(
                    Signal::Inflight,
                    self.hot.inflight().next_within(
                        w.overloaded(Signal::Inflight),
                        inflight.lo,
                        inflight.hi,
                    ),
                );
            if to == w {
                return;
            }
            let cause = cause.unwrap_or(
                if w.overloaded(Signal::Latency) != to.overloaded(Signal::Latency) {
                    Cause::Latency
                } else {
                    Cause::Inflight
                },
            );
            match self.swap(w, to, cause, now, out) {
                Ok(()) => {
                    rounds -= 1;
                    if rounds == 0 {
                        return;
                    }
                    // Pairs with the fences in the reports: either that report's
                    // evaluation sees this CAS, or this round sees its value.
                    fence(Ordering::SeqCst);
                    w = to;
                }
                Err(actual) => w = actual,
            }
        }
    }

    /// Sets the depth the router reports and re-evaluates backpressure.
    #[inline]
    pub fn report_depth<C: Clock>(&self, depth: u64, clock: &C, out: &mut Transitions) {
        self.reported_depth.store(depth, Ordering::Relaxed);
        self.watermark(depth);
        // Orders the store before the state word is read in `evaluate` (see there).
        fence(Ordering::SeqCst);
        self.evaluate(&Now::new(clock), false, out);
    }

    fn watermark(&self, depth: u64) {
        if depth > self.high_watermark.load(Ordering::Relaxed) {
            self.high_watermark.fetch_max(depth, Ordering::Relaxed);
        }
    }

    // ---- the spool -----------------------------------------------------------------

    /// Offers `event` to the subject's spool.
    pub fn enqueue<C: Clock>(
        &self,
        store: &Store,
        event: &[u8],
        clock: &C,
        out: &mut Transitions,
    ) -> Result<Enqueued, EnqueueError> {
        let max = store.pool().config().max_event_bytes;
        if event.len() > max as usize {
            return Err(EnqueueError::TooLarge {
                bytes: event.len(),
                max,
            });
        }
        let h = &self.hot;
        let quota = h.quota.load(Ordering::Relaxed);
        let drop = if h.drop_oldest.load(Ordering::Relaxed) {
            DropPolicy::DropOldest
        } else {
            DropPolicy::DropNewest
        };
        let overflow = if h.overflow_disk.load(Ordering::Relaxed) {
            Overflow::Disk
        } else {
            Overflow::Drop
        };
        let push = self.spool.push(
            &self.name,
            store,
            event,
            quota,
            drop,
            overflow,
            h.recovery.load(Ordering::Relaxed),
        );
        match push.segment {
            SegmentEvent::Acquired => self.exhausted.store(false, Ordering::Relaxed),
            SegmentEvent::Exhausted => self.exhausted.store(true, Ordering::Relaxed),
            SegmentEvent::None => {}
        }
        let result = match push.outcome {
            PushOutcome::Accepted => Enqueued::Accepted,
            PushOutcome::AcceptedAfterDrop { events, .. } => Enqueued::AcceptedAfterDrop(events),
            PushOutcome::Refused | PushOutcome::DiskFull => {
                Enqueued::Refused(h.retry_after_ms.load(Ordering::Relaxed))
            }
            PushOutcome::Unavailable => Enqueued::Unavailable(crate::store::RETRY_MS),
            // Removed after the caller looked it up (see `prepare_removal`).
            PushOutcome::Removed => return Err(EnqueueError::Removed),
        };
        // Only a change of segment or of the depth mirror can move the state: the
        // common case (an event into the current segment, far from a threshold) reads a
        // few atomics and changes nothing.
        if let Some(depth) = push.depth {
            self.watermark(depth);
        }
        if push.depth.is_some() || push.segment != SegmentEvent::None {
            self.evaluate(&Now::new(clock), false, out);
        }
        Ok(result)
    }

    /// Hands out a batch of at most `max_events` events (and, beyond the first, at most
    /// `max_bytes` bytes), oldest first, to `owner`; `read` sees the batch's event
    /// payloads while the spool is locked and copies them out.
    #[allow(clippy::too_many_arguments)]
    pub fn drain<C: Clock, R>(
        &self,
        store: &Store,
        max_events: u64,
        max_bytes: u64,
        owner: u64,
        clock: &C,
        out: &mut Transitions,
        read: impl FnOnce(&Batch, &mut dyn Iterator<Item = &[u8]>) -> R,
    ) -> Taken<R> {
        let taken = self
            .spool
            .take(&self.name, store, max_events, max_bytes, owner, read);
        // Lost records skipped, or a cut, may have moved the depth.
        self.evaluate(&Now::new(clock), false, out);
        taken
    }

    /// Reads back the overflow files the next drain needs (blocking I/O: call from a
    /// dirty scheduler or a thread of its own). Returns the segments read.
    pub fn load(&self, store: &Store) -> usize {
        self.spool.load(&self.name, store)
    }

    /// Acknowledges batch `id`; released segments go back to the pool, and
    /// backpressure is re-evaluated.
    pub fn ack<C: Clock>(
        &self,
        store: &Store,
        id: u64,
        clock: &C,
        out: &mut Transitions,
    ) -> Result<(), BatchError> {
        let released = self.spool.ack(store, id)?;
        if released > 0 {
            self.exhausted.store(false, Ordering::Relaxed);
        }
        self.evaluate(&Now::new(clock), false, out);
        Ok(())
    }

    /// Installs what recovery found for this subject (a fresh subject only).
    pub fn restore(&self, recovered: Recovered) {
        self.spool.restore(recovered);
        let d = self.spool.depth();
        self.watermark(d);
    }

    /// Whether events of this subject wait in overflow files.
    pub fn disk_pending(&self) -> bool {
        self.spool.stats().spooled_disk_events > 0
    }

    /// The one step of a removal that concerns the spool: refuses while events wait
    /// (in memory or on disk), a batch is in flight or a segment is held; otherwise
    /// closes the subject, under the spool's locks (its drain lock and every stripe's),
    /// so that no event is stored in it afterwards (a store on a reference looked up
    /// before the removal gets [`EnqueueError::Removed`] and looks the name up again).
    /// The subject's meta file is deleted (by the store's housekeeping); it holds no
    /// segment by then.
    pub fn prepare_removal(&self, store: &Store) -> Result<(), Spooled> {
        if !self.spool.close(store) {
            return Err(Spooled::Events);
        }
        self.lifecycle.close();
        Ok(())
    }

    /// A fingerprint of everything a caller changes by using the subject (counters,
    /// spool counts, reported depth, state word): equal fingerprints at two moments
    /// mean nobody wrote to it in between. Read by the idle sweep, never on a hot path.
    pub fn activity(&self) -> u64 {
        let st = self.spool_stats();
        let mix = |h: u64, v: u64| (h ^ v).wrapping_mul(0x0000_0100_0000_01B3);
        let mut h = 0xcbf2_9ce4_8422_2325;
        for v in self.counters.snapshot() {
            h = mix(h, v);
        }
        for v in [
            st.enqueued_events,
            st.taken_events,
            st.delivered_events,
            st.redelivered_events,
            st.dropped_newest_events,
            st.dropped_oldest_events,
            st.unavailable_events,
            st.disk_full_events,
            st.lost_total(),
            self.reported_depth.load(Ordering::Relaxed),
            self.signals.reported_latency.load(Ordering::Relaxed),
            self.signals.reported_inflight.load(Ordering::Relaxed),
            self.word.load(Ordering::Relaxed),
        ] {
            h = mix(h, v);
        }
        h
    }

    /// Returns batch `id` to the spool for redelivery.
    pub fn nack(&self, id: u64) -> Result<u64, BatchError> {
        self.spool.nack(id)
    }

    /// Returns every batch in flight to `owner` to the spool.
    pub fn nack_owner(&self, owner: u64) -> u64 {
        self.spool.nack_owner(owner)
    }

    /// Returns every batch in flight to the spool.
    pub fn nack_all(&self) -> u64 {
        self.spool.nack_all()
    }

    /// Writes the subject's spool files to disk (`fsync` durability).
    pub fn sync(&self) -> std::io::Result<()> {
        self.spool.sync()
    }

    /// The spool's counts, exact.
    pub fn spool_stats(&self) -> SpoolStats {
        self.spool.stats()
    }

    /// The spool, for invariant checks in tests.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    // ---- manual control and the timer ------------------------------------------------

    /// Closes the breaker (clearing a forced open and the trip streak).
    pub fn reset<C: Clock>(&self, clock: &C, out: &mut Transitions) {
        self.breaker.reset(self, &Now::new(clock), out);
    }

    /// Opens the breaker until [`Subject::reset`].
    pub fn force_open<C: Clock>(&self, clock: &C, out: &mut Transitions) {
        self.breaker.force_open(self, &Now::new(clock), out);
    }

    /// Opens a closed breaker because the same subject's breaker opened on a peer
    /// node (the layer above relays that). The open is an ordinary trip from closed:
    /// one compare-and-swap, the open time of this subject's own policy (first trip:
    /// no growth), and from then on this breaker probes and closes on its own. A
    /// breaker that is not closed (open, forced open, or half-open: already probing on
    /// its own) or is disabled is left as it is. Returns true when it opened the
    /// breaker, and counts that in `remote_opens` (and `opens`).
    pub fn remote_open<C: Clock>(&self, clock: &C, out: &mut Transitions) -> bool {
        self.breaker.remote_open(self, &Now::new(clock), out)
    }

    /// Disables (`true`) or enables (`false`) the subject: while disabled it admits
    /// everything and never trips, and still counts.
    pub fn set_disabled<C: Clock>(&self, disabled: bool, clock: &C, out: &mut Transitions) {
        let now = Now::new(clock);
        let mut w = self.word();
        let cause = if disabled {
            Cause::Disable
        } else {
            Cause::Enable
        };
        while w.disabled() != disabled {
            match self.swap(w, w.with_disabled(disabled), cause, &now, out) {
                Ok(()) => return,
                Err(actual) => w = actual,
            }
        }
    }

    /// The timer's visit: [`Subject::tick_state`], then [`Subject::tick_signals`].
    pub fn tick<C: Clock>(
        &self,
        store: &Store,
        clock: &C,
        out: &mut Transitions,
    ) -> Option<SignalReport> {
        self.tick_state(store, clock, out);
        self.tick_signals(clock, out)
    }

    /// The timer's visit to the states: applies the time-based rules without traffic,
    /// clears a stale exhaustion once the pool has room again, and fails half-open
    /// probes left unanswered for `call_timeout_ms`. Costs one load of the word for a
    /// subject at rest.
    pub fn tick_state<C: Clock>(&self, store: &Store, clock: &C, out: &mut Transitions) {
        let w = self.word();
        let exhausted = self.exhausted.load(Ordering::Relaxed);
        if w.is_quiet() && !exhausted {
            return;
        }
        let now = Now::new(clock);
        if exhausted
            && store.pool().free_segments() > 0
            && self.spool.segments() < self.hot.quota.load(Ordering::Relaxed)
        {
            self.exhausted.store(false, Ordering::Relaxed);
        }
        self.evaluate(&now, false, out);
        let w = self.advance_time(self.word(), &now, out);
        self.breaker.expire_probes(self, w, &now, out);
    }

    /// The timer's visit to the signals: counts the calls in flight, moves the latency
    /// window on and recomputes its p95 (every `latency_window_ms / 16`, at most every
    /// second, and whenever the window moved), and re-evaluates the latency and
    /// in-flight flags.
    ///
    /// Only a subject with something to watch is visited: one that admitted a call or
    /// recorded a latency since the last visit (they arm it), whose last visit left
    /// calls in flight, latencies in the window or a flag set, or whose state is not at
    /// rest (for the report); any other costs three loads. `None` when not visited (or
    /// another visit is under way).
    pub fn tick_signals<C: Clock>(&self, clock: &C, out: &mut Transitions) -> Option<SignalReport> {
        let v = &self.signals;
        let histogram = self.latency.get();
        let armed = self.hot.inflight_armed.load(Ordering::Relaxed)
            || histogram.is_some_and(|h| h.is_armed());
        if !armed && !v.busy.load(Ordering::Relaxed) && self.word().is_quiet() {
            return None;
        }
        let mut upkeep = self.upkeep.try_lock()?;
        // Disarm before counting (AcqRel: pairs with the arming stores): a call admitted
        // after this swap arms the subject again; one before it is in the counts below.
        self.hot.inflight_armed.swap(false, Ordering::AcqRel);
        if let Some(h) = histogram {
            h.disarm();
        }
        let now = Now::new(clock);
        let timeout = self.policy.load().policy.call_timeout_ms;
        let inflight = self.inflight.refresh_expiring(
            inflight::reading(&self.counters),
            &mut upkeep.inflight_marks,
            now.get(),
            timeout,
        );
        if let Some(h) = histogram {
            let t = now.get();
            let window = self.policy.load().policy.latency_window_ms;
            let slice = (window / latency::SLICES as u64).max(1);
            let mut moved = false;
            match upkeep.slice_started_ms {
                None => upkeep.slice_started_ms = Some(t),
                Some(start) if t >= start.saturating_add(slice) => {
                    let n = (t - start) / slice;
                    h.rotate(n.min(latency::SLICES as u64) as usize);
                    upkeep.slice_started_ms = Some(if n >= latency::SLICES as u64 {
                        t
                    } else {
                        start + n * slice
                    });
                    moved = true;
                }
                Some(_) => {}
            }
            let every = (window / 16).clamp(1, 1_000);
            if moved
                || upkeep
                    .refreshed_ms
                    .map_or(true, |r| t >= r.saturating_add(every))
            {
                let q = h.quantile(0.95);
                v.measured_latency
                    .store(q.map_or(0, |q| q.value_ms), Ordering::Relaxed);
                v.latency_samples
                    .store(q.map_or(0, |q| q.samples), Ordering::Relaxed);
                upkeep.refreshed_ms = Some(t);
            }
        }
        self.evaluate_signals(Some(inflight), None, &now, out);
        let w = self.word();
        v.busy.store(
            inflight.hi > 0
                || v.latency_samples.load(Ordering::Relaxed) > 0
                || w.overloaded(Signal::Latency)
                || w.overloaded(Signal::Inflight),
            Ordering::Relaxed,
        );
        Some(SignalReport {
            word: w,
            depth: self.depth(),
            latency_p95_ms: self.latency_value(),
            inflight: inflight.lo.max(v.reported_inflight.load(Ordering::Relaxed)),
        })
    }

    /// The subject's state and counts now.
    pub fn snapshot<C: Clock>(&self, clock: &C) -> Snapshot {
        let now = Now::new(clock);
        let w = self.word();
        let open_remaining_ms = if w.breaker() == BreakerState::Open {
            self.breaker.open_remaining(self, w, &now).unwrap_or(0)
        } else {
            0
        };
        let window_ms = self.policy.load().policy.window_ms;
        let b = self.breaker.counts();
        // Exact counts (the depth mirror may lag by a few events far below every
        // threshold; status shows the exact depth).
        let spool = self.spool_stats();
        let reported = self.reported_depth.load(Ordering::Relaxed);
        let measured_inflight = self.measured_inflight().lo;
        Snapshot {
            word: w,
            depth: reported.max(spool.spooled_events),
            reported_depth: reported,
            high_watermark: self
                .high_watermark
                .load(Ordering::Relaxed)
                .max(spool.spooled_events),
            exhausted: self.exhausted.load(Ordering::Relaxed),
            disk_pending: spool.spooled_disk_events > 0,
            consecutive_failures: b.consecutive_failures,
            counters: self.counters.snapshot(),
            stale_probes: b.stale_probes,
            opens: b.opens,
            remote_opens: b.remote_opens,
            recovery_attempts: b.half_opens,
            successful_recoveries: b.recoveries,
            breaker_transitions: self.rare.breaker_transitions.load(Ordering::Relaxed),
            backpressure_transitions: self.rare.backpressure_transitions.load(Ordering::Relaxed),
            signal_transitions: self.rare.signal_transitions.load(Ordering::Relaxed),
            status_changes: self.rare.status_changes.load(Ordering::Relaxed),
            spool,
            open_remaining_ms,
            window: self.breaker.window(now.get(), window_ms),
            latency_p95_ms: self.latency_value(),
            measured_latency_p95_ms: self.signals.measured_latency.load(Ordering::Relaxed),
            reported_latency_p95_ms: self.signals.reported_latency.load(Ordering::Relaxed),
            latency_samples: self.signals.latency_samples.load(Ordering::Relaxed),
            latency_histogram_bytes: self.latency.get().map_or(0, |h| h.footprint_bytes() as u64),
            inflight: measured_inflight.max(self.signals.reported_inflight.load(Ordering::Relaxed)),
            measured_inflight,
            reported_inflight: self.signals.reported_inflight.load(Ordering::Relaxed),
        }
    }
}

impl Holder for Subject {
    #[inline]
    fn word(&self) -> Word {
        Subject::word(self)
    }

    #[inline]
    fn swap<C: Clock>(
        &self,
        from: Word,
        to: Word,
        cause: Cause,
        now: &Now<C>,
        out: &mut Transitions,
    ) -> Result<(), Word> {
        Subject::swap(self, from, to, cause, now, out)
    }

    #[inline]
    fn policy(&self) -> arc_swap::Guard<Arc<PolicyView>> {
        self.policy.load()
    }
}
