//! The subject's state word: both state machines packed into one `u64`.
//!
//! Invariant: a subject's breaker state, backpressure state, overload flags, manual flags
//! and half-open probe bookkeeping live in one `AtomicU64`, and every transition is one
//! successful compare-and-swap on it. So every transition has exactly one winner, which is the
//! one that reports it, and the derived [`Status`] (`inactive | warning | active`)
//! changes exactly when a reported transition changes it: a status change is observed
//! once, never twice, never missed.
//!
//! Layout (bit ranges, low to high):
//!
//! | bits   | field |
//! |--------|-------|
//! | 0..2   | breaker: 0 closed, 1 open, 2 half-open |
//! | 2..4   | backpressure: 0 normal, 1 pressure, 2 dropping, 3 recovery |
//! | 4      | disabled (admit everything, count, never trip) |
//! | 5      | forced open (stays open until reset) |
//! | 6      | latency signal overloaded |
//! | 7      | in-flight signal overloaded |
//! | 8..16  | half-open probes in flight |
//! | 16..24 | half-open probe successes |
//! | 24..31 | trip streak: opens since the breaker last closed, for the growing open time (0..127) |
//! | 31     | depth signal overloaded |
//! | 32..48 | breaker epoch: bumped by every breaker transition |
//! | 48..64 | backpressure epoch: bumped by every backpressure transition |
//!
//! The epochs tag the timestamps kept beside the word (when the breaker opened, since
//! when the depth has been calm), so that a reader never pairs a state with a timestamp
//! of an earlier visit to it; see [`Stamp`].
//!
//! The three overload flags ([`Signal`]) are set and cleared by the rules of
//! [`crate::signals`]; they live here so that the router's status, which counts them,
//! is still one load of this word.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Circuit-breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BreakerState {
    /// Calls pass; failures are counted.
    Closed = 0,
    /// Calls fail fast until the open time has passed.
    Open = 1,
    /// A limited number of probe calls pass; their outcome closes or reopens.
    HalfOpen = 2,
}

/// Backpressure state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackpressureState {
    /// Depth below the warning threshold.
    Normal = 0,
    /// Depth reached the warning threshold.
    Pressure = 1,
    /// Depth reached the critical threshold, or the pool had no room.
    Dropping = 2,
    /// Depth fell back to the recovery depth; waiting for it to stay there.
    Recovery = 3,
}

/// The router-facing summary of both machines and the overload signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Nothing holds traffic back.
    Inactive,
    /// One overloaded signal, pressure, recovery or a half-open breaker.
    Warning,
    /// Dropping, an open breaker, or two or more overloaded signals.
    Active,
}

/// An overload signal: each has a flag in the word, set above its threshold and cleared
/// at or below `recovery_threshold` × threshold (see [`crate::signals`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Queue depth against `warning_threshold`.
    Depth,
    /// p95 call latency against `latency_overload_ms`.
    Latency,
    /// Calls in flight against `inflight_overload`.
    Inflight,
}

impl Signal {
    /// Every signal, in the order they are reported.
    pub const ALL: [Signal; 3] = [Signal::Depth, Signal::Latency, Signal::Inflight];

    /// The name used at the VM boundary.
    pub fn name(self) -> &'static str {
        match self {
            Self::Depth => "depth",
            Self::Latency => "latency",
            Self::Inflight => "inflight",
        }
    }

    #[inline]
    const fn bit(self) -> u64 {
        match self {
            Self::Depth => DEPTH_OVERLOADED,
            Self::Latency => LATENCY_OVERLOADED,
            Self::Inflight => INFLIGHT_OVERLOADED,
        }
    }
}

impl BreakerState {
    /// The name used at the VM boundary.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl BackpressureState {
    /// The name used at the VM boundary.
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Pressure => "pressure",
            Self::Dropping => "dropping",
            Self::Recovery => "recovery",
        }
    }
}

const BREAKER_MASK: u64 = 0b11;
const BP_SHIFT: u32 = 2;
const BP_MASK: u64 = 0b11 << BP_SHIFT;
const DISABLED: u64 = 1 << 4;
const FORCED: u64 = 1 << 5;
const LATENCY_OVERLOADED: u64 = 1 << 6;
const INFLIGHT_OVERLOADED: u64 = 1 << 7;
const DEPTH_OVERLOADED: u64 = 1 << 31;
const SIGNALS: u64 = LATENCY_OVERLOADED | INFLIGHT_OVERLOADED | DEPTH_OVERLOADED;
const PROBES_SHIFT: u32 = 8;
const SUCCESSES_SHIFT: u32 = 16;
const STREAK_SHIFT: u32 = 24;
const STREAK: u64 = 0x7f;
/// Largest trip streak the word holds (7 bits; the eighth is the depth flag). The open
/// time stops growing long before: it doubles per trip up to `max_open_timeout_ms`.
pub const MAX_TRIP_STREAK: u8 = 127;
const BREAKER_EPOCH_SHIFT: u32 = 32;
const BP_EPOCH_SHIFT: u32 = 48;
const BYTE: u64 = 0xff;
const EPOCH: u64 = 0xffff;

/// A decoded copy of the state word. Every `with_*` returns a new word; nothing here
/// touches memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Word(pub u64);

impl Word {
    /// A fresh subject: closed, normal, enabled.
    pub const INITIAL: Word = Word(0);

    /// True when both machines rest (closed, normal), no signal is overloaded and the
    /// subject is enabled: the state in which the hot paths do nothing but this one test.
    #[inline]
    pub fn is_quiet(self) -> bool {
        self.0 & (BREAKER_MASK | BP_MASK | DISABLED | SIGNALS) == 0
    }

    /// Breaker state.
    #[inline]
    pub fn breaker(self) -> BreakerState {
        match self.0 & BREAKER_MASK {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Backpressure state.
    #[inline]
    pub fn backpressure(self) -> BackpressureState {
        match (self.0 & BP_MASK) >> BP_SHIFT {
            0 => BackpressureState::Normal,
            1 => BackpressureState::Pressure,
            2 => BackpressureState::Dropping,
            _ => BackpressureState::Recovery,
        }
    }

    /// Disabled: admit everything, never trip.
    #[inline]
    pub fn disabled(self) -> bool {
        self.0 & DISABLED != 0
    }

    /// Forced open: stays open until reset.
    #[inline]
    pub fn forced_open(self) -> bool {
        self.0 & FORCED != 0
    }

    /// Half-open probes admitted and not yet recorded.
    #[inline]
    pub fn probes(self) -> u8 {
        ((self.0 >> PROBES_SHIFT) & BYTE) as u8
    }

    /// Half-open probe successes so far.
    #[inline]
    pub fn probe_successes(self) -> u8 {
        ((self.0 >> SUCCESSES_SHIFT) & BYTE) as u8
    }

    /// Opens since the breaker last closed, minus one (0 on the first trip), up to
    /// [`MAX_TRIP_STREAK`].
    #[inline]
    pub fn trip_streak(self) -> u8 {
        ((self.0 >> STREAK_SHIFT) & STREAK) as u8
    }

    /// Whether `signal` is overloaded.
    #[inline]
    pub fn overloaded(self, signal: Signal) -> bool {
        self.0 & signal.bit() != 0
    }

    /// How many signals are overloaded (0..=3).
    #[inline]
    pub fn overload_count(self) -> u32 {
        (self.0 & SIGNALS).count_ones()
    }

    /// Breaker epoch (wraps at 2^16).
    #[inline]
    pub fn breaker_epoch(self) -> u16 {
        ((self.0 >> BREAKER_EPOCH_SHIFT) & EPOCH) as u16
    }

    /// Backpressure epoch (wraps at 2^16).
    #[inline]
    pub fn backpressure_epoch(self) -> u16 {
        ((self.0 >> BP_EPOCH_SHIFT) & EPOCH) as u16
    }

    /// The router-facing status: active when dropping, open or with two or more
    /// overloaded signals; warning with one overloaded signal, pressure, recovery or
    /// half-open; inactive otherwise. A disabled subject is always inactive.
    #[inline]
    pub fn status(self) -> Status {
        if self.disabled() {
            return Status::Inactive;
        }
        let overloaded = self.overload_count();
        match (self.breaker(), self.backpressure()) {
            (BreakerState::Open, _) | (_, BackpressureState::Dropping) => Status::Active,
            _ if overloaded >= 2 => Status::Active,
            (BreakerState::HalfOpen, _)
            | (_, BackpressureState::Pressure)
            | (_, BackpressureState::Recovery) => Status::Warning,
            _ if overloaded == 1 => Status::Warning,
            _ => Status::Inactive,
        }
    }

    fn set_byte(self, shift: u32, v: u8) -> Word {
        Word((self.0 & !(BYTE << shift)) | (u64::from(v) << shift))
    }

    /// The word after a breaker transition to `to`: the breaker epoch is bumped and the
    /// half-open bookkeeping cleared. The streak and the forced flag are left to the
    /// caller.
    pub fn with_breaker(self, to: BreakerState) -> Word {
        let epoch = u64::from(self.breaker_epoch().wrapping_add(1));
        let mut w = (self.0 & !BREAKER_MASK & !(EPOCH << BREAKER_EPOCH_SHIFT)) | to as u64;
        w = (w & !(BYTE << PROBES_SHIFT) & !(BYTE << SUCCESSES_SHIFT))
            | (epoch << BREAKER_EPOCH_SHIFT);
        Word(w)
    }

    /// The word after a backpressure transition to `to` (epoch bumped).
    pub fn with_backpressure(self, to: BackpressureState) -> Word {
        let epoch = u64::from(self.backpressure_epoch().wrapping_add(1));
        let w = (self.0 & !BP_MASK & !(EPOCH << BP_EPOCH_SHIFT))
            | ((to as u64) << BP_SHIFT)
            | (epoch << BP_EPOCH_SHIFT);
        Word(w)
    }

    /// The word with the disabled flag set to `on`.
    pub fn with_disabled(self, on: bool) -> Word {
        Word(if on {
            self.0 | DISABLED
        } else {
            self.0 & !DISABLED
        })
    }

    /// The word with the forced-open flag set to `on`.
    pub fn with_forced(self, on: bool) -> Word {
        Word(if on {
            self.0 | FORCED
        } else {
            self.0 & !FORCED
        })
    }

    /// The word with `n` probes in flight.
    pub fn with_probes(self, n: u8) -> Word {
        self.set_byte(PROBES_SHIFT, n)
    }

    /// The word with `n` probe successes.
    pub fn with_probe_successes(self, n: u8) -> Word {
        self.set_byte(SUCCESSES_SHIFT, n)
    }

    /// The word with trip streak `n`, saturating at [`MAX_TRIP_STREAK`].
    pub fn with_trip_streak(self, n: u8) -> Word {
        let n = u64::from(n.min(MAX_TRIP_STREAK));
        Word((self.0 & !(STREAK << STREAK_SHIFT)) | (n << STREAK_SHIFT))
    }

    /// The word with `signal`'s overload flag set to `on`.
    #[inline]
    pub fn with_overloaded(self, signal: Signal, on: bool) -> Word {
        Word(if on {
            self.0 | signal.bit()
        } else {
            self.0 & !signal.bit()
        })
    }

    /// True when `self` and `other` differ in an overload flag.
    #[inline]
    pub fn signals_differ(self, other: Word) -> bool {
        (self.0 ^ other.0) & SIGNALS != 0
    }

    /// True when `self` and `other` differ in a state a transition reports: breaker,
    /// backpressure, an overload flag, disabled or forced.
    pub fn differs_in_state(self, other: Word) -> bool {
        (self.0 ^ other.0) & (BREAKER_MASK | BP_MASK | DISABLED | FORCED | SIGNALS) != 0
    }
}

impl fmt::Debug for Word {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Word")
            .field("breaker", &self.breaker())
            .field("backpressure", &self.backpressure())
            .field("disabled", &self.disabled())
            .field("forced_open", &self.forced_open())
            .field("probes", &self.probes())
            .field("probe_successes", &self.probe_successes())
            .field("trip_streak", &self.trip_streak())
            .field(
                "overloaded",
                &Signal::ALL
                    .iter()
                    .filter(|s| self.overloaded(**s))
                    .map(|s| s.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A millisecond timestamp tagged with the epoch of the state it belongs to.
///
/// A stamp is written by the winner of a transition *after* its CAS, so a reader can
/// see the new state before its stamp. A reader therefore only trusts a stamp whose tag
/// equals the epoch in the word it read; otherwise the stamp is from an earlier visit
/// to the state and the reader acts as if the time had only just begun.
///
/// Memory ordering: stamps are stored with `Release` after the CAS and read with
/// `Acquire`; the tag, not the ordering, decides whether a stamp is current.
#[derive(Debug, Default)]
pub struct Stamp(AtomicU64);

const STAMP_MS: u64 = (1 << 48) - 1;
/// The millisecond value that means "no time": e.g. depth is not calm.
pub const NO_TIME: u64 = STAMP_MS;

impl Stamp {
    /// Stores `ms` for epoch `epoch`.
    #[inline]
    pub fn store(&self, epoch: u16, ms: u64) {
        self.0.store(
            (u64::from(epoch) << 48) | ms.min(STAMP_MS),
            Ordering::Release,
        );
    }

    /// The time stored for `epoch`, or `None` if the stamp belongs to another epoch.
    #[inline]
    pub fn load(&self, epoch: u16) -> Option<u64> {
        let v = self.0.load(Ordering::Acquire);
        ((v >> 48) as u16 == epoch).then_some(v & STAMP_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_word_is_quiet_closed_normal() {
        let w = Word::INITIAL;
        assert!(w.is_quiet());
        assert_eq!(w.breaker(), BreakerState::Closed);
        assert_eq!(w.backpressure(), BackpressureState::Normal);
        assert_eq!(w.status(), Status::Inactive);
    }

    #[test]
    fn status_table() {
        use BackpressureState::*;
        use BreakerState::*;
        let cases = [
            (Closed, Normal, Status::Inactive),
            (Closed, Pressure, Status::Warning),
            (Closed, Dropping, Status::Active),
            (Closed, Recovery, Status::Warning),
            (HalfOpen, Normal, Status::Warning),
            (HalfOpen, Dropping, Status::Active),
            (Open, Normal, Status::Active),
            (Open, Recovery, Status::Active),
        ];
        for (b, p, s) in cases {
            let w = Word::INITIAL.with_breaker(b).with_backpressure(p);
            assert_eq!(w.status(), s, "{b:?}/{p:?}");
            assert_eq!(w.with_disabled(true).status(), Status::Inactive);
        }
    }

    #[test]
    fn transitions_bump_their_own_epoch_only() {
        let w = Word::INITIAL.with_breaker(BreakerState::Open);
        assert_eq!((w.breaker_epoch(), w.backpressure_epoch()), (1, 0));
        let w = w.with_backpressure(BackpressureState::Pressure);
        assert_eq!((w.breaker_epoch(), w.backpressure_epoch()), (1, 1));
        assert_eq!(w.breaker(), BreakerState::Open);
        assert_eq!(w.backpressure(), BackpressureState::Pressure);
    }

    #[test]
    fn breaker_transition_clears_probes_keeps_streak_and_flags() {
        let w = Word::INITIAL
            .with_breaker(BreakerState::HalfOpen)
            .with_probes(3)
            .with_probe_successes(2)
            .with_trip_streak(4)
            .with_disabled(true);
        let o = w.with_breaker(BreakerState::Open);
        assert_eq!((o.probes(), o.probe_successes()), (0, 0));
        assert_eq!(o.trip_streak(), 4);
        assert!(o.disabled());
        assert!(w.differs_in_state(o));
        assert!(!w.differs_in_state(w.with_probes(1)));
    }

    #[test]
    fn overload_flags_count_towards_the_status() {
        use BackpressureState::*;
        use BreakerState::*;
        let one = Word::INITIAL.with_overloaded(Signal::Latency, true);
        assert!(!one.is_quiet());
        assert_eq!(one.status(), Status::Warning);
        assert_eq!(one.overload_count(), 1);
        let two = one.with_overloaded(Signal::Depth, true);
        assert_eq!(two.status(), Status::Active);
        let three = two.with_overloaded(Signal::Inflight, true);
        assert_eq!(three.overload_count(), 3);
        assert_eq!(three.status(), Status::Active);
        assert_eq!(three.with_disabled(true).status(), Status::Inactive);
        // One signal does not lift an active state, nor lower it.
        assert_eq!(one.with_breaker(Open).status(), Status::Active);
        assert_eq!(one.with_backpressure(Pressure).status(), Status::Warning);
        assert_eq!(two.with_breaker(HalfOpen).status(), Status::Active);
        // Flags are reported states, and cleared independently.
        assert!(Word::INITIAL.differs_in_state(one));
        let back = three
            .with_overloaded(Signal::Depth, false)
            .with_overloaded(Signal::Latency, false);
        assert!(back.overloaded(Signal::Inflight) && !back.overloaded(Signal::Depth));
        assert_eq!(back.status(), Status::Warning);
    }

    #[test]
    fn trip_streak_saturates_below_the_depth_flag() {
        let w = Word::INITIAL.with_overloaded(Signal::Depth, true);
        let s = w.with_trip_streak(200);
        assert_eq!(s.trip_streak(), MAX_TRIP_STREAK);
        assert!(
            s.overloaded(Signal::Depth),
            "the streak never spills into the flag"
        );
        let s = s.with_trip_streak(s.trip_streak().saturating_add(1));
        assert_eq!(s.trip_streak(), MAX_TRIP_STREAK);
        let cleared = Word::INITIAL.with_trip_streak(255);
        assert!(!cleared.overloaded(Signal::Depth));
        assert_eq!(cleared.with_trip_streak(0).0, 0);
    }

    #[test]
    fn epochs_wrap() {
        let mut w = Word::INITIAL;
        for _ in 0..=u16::MAX as u32 {
            w = w.with_backpressure(BackpressureState::Normal);
        }
        assert_eq!(w.backpressure_epoch(), 0);
        assert_eq!(w.breaker(), BreakerState::Closed);
    }

    #[test]
    fn stamps_are_trusted_only_for_their_epoch() {
        let s = Stamp::default();
        s.store(7, 1234);
        assert_eq!(s.load(7), Some(1234));
        assert_eq!(s.load(8), None);
        s.store(8, u64::MAX);
        assert_eq!(s.load(8), Some(NO_TIME));
    }
}
