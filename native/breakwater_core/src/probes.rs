//! Half-open probe slots: which probes of a half-open episode are in flight, since when,
//! and the tickets that name admissions.
//!
//! A half-open *episode* is one visit of the breaker to `half_open`, named by the
//! breaker epoch of the state word (bumped by every breaker transition). The word counts
//! the episode's probes in flight; each probe also holds a slot here, one `AtomicU64`:
//!
//! | bits   | field |
//! |--------|-------|
//! | 0..40  | admission time, ms modulo 2^40 (ages are taken modulo 2^40 too) |
//! | 40..47 | generation: bumped by every claim of the slot |
//! | 47     | occupied |
//! | 48..64 | breaker epoch of the episode the probe belongs to |
//!
//! Invariant: for the current episode `E`, the slots occupied and tagged `E` are never
//! more than the probes the word counts for `E`, which are never more than
//! `half_open_max_calls`. A probe's slot is claimed after its admission CAS (probes + 1)
//! and freed before its outcome's CAS (probes − 1), and freeing is a CAS from the exact
//! value claimed, so each slot is freed at most once per claim: an outcome frees one
//! probe, or none. A slot left by a probe that never answered is freed by whoever ends
//! the episode ([`ProbeSlots::end_episode`]), and a claim that lands after the episode
//! ended is undone by its claimer, so no slot outlives its episode.
//!
//! A [`Ticket`] names an admission: the epoch that admitted it and, for a probe, its
//! slot and the slot's generation. An outcome recorded with a ticket counts only in the
//! episode that admitted it, and in half-open only for the probe it names.
//!
//! Memory: [`INLINE`] slots inside the subject; a policy with a larger
//! `half_open_max_calls` allocates the rest once (up to [`MAX_SLOTS`]), when it is
//! configured, never on the admit or record paths. Slots are never moved or freed
//! while the subject lives, so no reader can see them change place.
//!
//! Memory ordering: claims and frees are `AcqRel` compare-and-swaps. A claim followed by
//! a check of the word's epoch, and an episode's end (the word's CAS) followed by the
//! scan that frees its slots, are each separated by a `SeqCst` fence, so that at least
//! one of the two sees the other: either the claimer sees the episode ended and undoes
//! its claim, or the scan sees the claim and frees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Slots kept inside every subject.
pub const INLINE: usize = 4;
/// Most slots a subject can have (`half_open_max_calls` is at most 255).
pub const MAX_SLOTS: usize = 255;

const MS_BITS: u32 = 40;
const MS_MASK: u64 = (1 << MS_BITS) - 1;
const GEN_SHIFT: u32 = 40;
const GEN_MASK: u64 = 0x7f;
const OCCUPIED: u64 = 1 << 47;
const EPOCH_SHIFT: u32 = 48;

/// A copy of one slot's value (plain data: every method returns a new value and
/// touches no memory). A free slot is `Slot(0)` or a slot whose probe was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub u64);

impl Slot {
    /// True when a probe of episode `epoch` holds the slot.
    #[inline]
    pub fn occupied_by(self, epoch: u16) -> bool {
        self.0 & OCCUPIED != 0 && self.epoch() == epoch
    }

    /// The episode of the slot's last claim.
    #[inline]
    pub fn epoch(self) -> u16 {
        (self.0 >> EPOCH_SHIFT) as u16
    }

    /// The slot's generation (bumped by every claim, 7 bits).
    #[inline]
    pub fn generation(self) -> u8 {
        ((self.0 >> GEN_SHIFT) & GEN_MASK) as u8
    }

    fn admitted_ms(self) -> u64 {
        self.0 & MS_MASK
    }

    /// The slot claimed by a probe of `epoch` admitted at `now_ms`.
    pub fn claimed(self, epoch: u16, now_ms: u64) -> Slot {
        let generation = (u64::from(self.generation()) + 1) & GEN_MASK;
        Slot(
            (u64::from(epoch) << EPOCH_SHIFT)
                | OCCUPIED
                | (generation << GEN_SHIFT)
                | (now_ms & MS_MASK),
        )
    }

    /// The slot with its probe answered (or expired).
    pub fn freed(self) -> Slot {
        Slot(self.0 & !OCCUPIED)
    }

    /// How long ago the probe was admitted (modulo 2^40 ms, about 34 years).
    pub fn age(self, now_ms: u64) -> u64 {
        (now_ms & MS_MASK).wrapping_sub(self.admitted_ms()) & MS_MASK
    }
}

/// The name of one admission: the breaker epoch that admitted it and, for a half-open
/// probe, the probe's slot and that slot's generation. At the VM boundary a ticket is
/// an integer in `0..=Ticket::MAX`.
///
/// | bits   | field |
/// |--------|-------|
/// | 0..16  | breaker epoch at admission |
/// | 16..24 | probe slot + 1 (0: the admission took no probe slot) |
/// | 24..31 | the slot's generation |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(u32);

impl Ticket {
    /// The largest ticket value.
    pub const MAX: u64 = (1 << 31) - 1;

    /// An admission that took no probe slot, in breaker epoch `epoch`.
    #[inline]
    pub fn call(epoch: u16) -> Ticket {
        Ticket(u32::from(epoch))
    }

    /// The probe of episode `epoch` in slot `slot` (below [`MAX_SLOTS`]) of
    /// generation `generation`.
    pub fn probe(epoch: u16, slot: usize, generation: u8) -> Ticket {
        debug_assert!(slot < MAX_SLOTS);
        Ticket(u32::from(epoch) | ((slot as u32 + 1) << 16) | (u32::from(generation) << 24))
    }

    /// The ticket of integer `v`, or `None` when `v` is not a ticket value.
    pub fn from_raw(v: u64) -> Option<Ticket> {
        (v <= Self::MAX).then_some(Ticket(v as u32))
    }

    /// The ticket as an integer.
    #[inline]
    pub fn raw(self) -> u32 {
        self.0
    }

    /// The breaker epoch that admitted the call.
    #[inline]
    pub fn epoch(self) -> u16 {
        self.0 as u16
    }

    /// The probe slot the admission took, if it was a half-open probe.
    #[inline]
    pub fn slot(self) -> Option<usize> {
        match (self.0 >> 16) & 0xff {
            0 => None,
            s => Some(s as usize - 1),
        }
    }

    /// The generation of the probe's slot at admission.
    #[inline]
    pub fn generation(self) -> u8 {
        (self.0 >> 24) as u8 & GEN_MASK as u8
    }
}

/// The probe slots of one subject.
#[derive(Debug, Default)]
pub struct ProbeSlots {
    inline: [AtomicU64; INLINE],
    /// Slots `INLINE..MAX_SLOTS`, allocated by the first policy that needs them.
    spill: OnceLock<Box<[AtomicU64]>>,
}

impl ProbeSlots {
    /// [`INLINE`] free slots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes room for `max_calls` probes at once. Called when a policy is stored, before
    /// the policy can admit that many; allocates once, at most [`MAX_SLOTS`] slots.
    pub fn reserve(&self, max_calls: u8) {
        if usize::from(max_calls) > INLINE {
            self.spill.get_or_init(|| {
                (INLINE..MAX_SLOTS)
                    .map(|_| AtomicU64::new(0))
                    .collect::<Vec<_>>()
                    .into_boxed_slice()
            });
        }
    }

    /// How many slots exist now.
    pub fn capacity(&self) -> usize {
        INLINE + self.spill.get().map_or(0, |s| s.len())
    }

    fn slot(&self, i: usize) -> Option<&AtomicU64> {
        match i.checked_sub(INLINE) {
            None => self.inline.get(i),
            Some(j) => self.spill.get().and_then(|s| s.get(j)),
        }
    }

    fn slots(&self) -> impl Iterator<Item = (usize, &AtomicU64)> {
        let spill: &[AtomicU64] = self.spill.get().map_or(&[], |s| s);
        self.inline.iter().chain(spill.iter()).enumerate()
    }

    /// Claims a free slot for a probe of episode `epoch`, admitted at `now_ms`; the
    /// caller has counted the probe in the word first. `None` only if every slot is
    /// taken, which the invariant rules out while the caller's count is in the word.
    pub fn claim(&self, epoch: u16, now_ms: u64) -> Option<Ticket> {
        // Bounded rather than trusting the invariant with a loop: each round can only
        // fail because another claimer took a slot first.
        for _ in 0..MAX_SLOTS {
            let mut raced = false;
            for (i, cell) in self.slots() {
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

    /// Frees the slot `ticket` names if it still holds that probe: true when this call
    /// freed it (the probe's outcome may then count), false when it was answered,
    /// expired or never a probe.
    pub fn free(&self, ticket: Ticket) -> bool {
        let Some(cell) = ticket.slot().and_then(|i| self.slot(i)) else {
            return false;
        };
        let mut s = Slot(cell.load(Ordering::Acquire));
        while s.occupied_by(ticket.epoch()) && s.generation() == ticket.generation() {
            match cell.compare_exchange(s.0, s.freed().0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                // Only the admission time could differ, and a claim sets it once; a
                // retry sees the same probe or a different one.
                Err(actual) => s = Slot(actual),
            }
        }
        false
    }

    /// Frees the slot of the oldest probe of episode `epoch` in flight (the lowest slot
    /// among equally old ones): the probe a bare outcome is attributed to. False when
    /// no probe of the episode holds a slot.
    pub fn free_oldest(&self, epoch: u16, now_ms: u64) -> bool {
        loop {
            let Some((i, s)) = self.oldest_slot(epoch, now_ms) else {
                return false;
            };
            let Some(cell) = self.slot(i) else {
                return false;
            };
            if cell
                .compare_exchange(s.0, s.freed().0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return true;
            }
        }
    }

    /// How long the oldest probe of episode `epoch` in flight has waited, if any.
    pub fn oldest_age(&self, epoch: u16, now_ms: u64) -> Option<u64> {
        self.oldest_slot(epoch, now_ms).map(|(_, s)| s.age(now_ms))
    }

    fn oldest_slot(&self, epoch: u16, now_ms: u64) -> Option<(usize, Slot)> {
        let mut oldest: Option<(usize, Slot)> = None;
        for (i, cell) in self.slots() {
            let s = Slot(cell.load(Ordering::Acquire));
            if s.occupied_by(epoch) && oldest.map_or(true, |(_, o)| s.age(now_ms) > o.age(now_ms)) {
                oldest = Some((i, s));
            }
        }
        oldest
    }

    /// Probes of episode `epoch` holding a slot now.
    pub fn in_flight(&self, epoch: u16) -> usize {
        self.slots()
            .filter(|(_, c)| Slot(c.load(Ordering::Acquire)).occupied_by(epoch))
            .count()
    }

    /// Frees every slot of episode `epoch`, which has just ended: called by the winner
    /// of the transition out of it, after its CAS.
    pub fn end_episode(&self, epoch: u16) {
        // Pairs with the fence in `undo_if_ended` (see the module doc).
        std::sync::atomic::fence(Ordering::SeqCst);
        for (_, cell) in self.slots() {
            let s = Slot(cell.load(Ordering::Acquire));
            if s.occupied_by(epoch) {
                // A failed CAS means the probe's own outcome freed it meanwhile.
                let _ =
                    cell.compare_exchange(s.0, s.freed().0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    /// Called by a claimer after [`ProbeSlots::claim`] with the word's epoch now: if the
    /// episode of `ticket` has ended meanwhile, frees the claim (nobody else will).
    /// True when the claim stands.
    pub fn undo_if_ended(&self, ticket: Ticket, current_epoch: impl FnOnce() -> u16) -> bool {
        // Pairs with the fence in `end_episode`.
        std::sync::atomic::fence(Ordering::SeqCst);
        if current_epoch() == ticket.epoch() {
            return true;
        }
        self.free(ticket);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_reject_out_of_range_values() {
        let t = Ticket::probe(0xbeef, 254, 0x7f);
        assert_eq!(t.epoch(), 0xbeef);
        assert_eq!(t.slot(), Some(254));
        assert_eq!(t.generation(), 0x7f);
        assert_eq!(Ticket::from_raw(u64::from(t.raw())), Some(t));
        assert!(u64::from(t.raw()) <= Ticket::MAX);
        let c = Ticket::call(7);
        assert_eq!((c.epoch(), c.slot()), (7, None));
        assert_eq!(Ticket::from_raw(Ticket::MAX + 1), None);
        assert_eq!(Ticket::from_raw(u64::MAX), None);
        assert_eq!(Ticket::from_raw(0), Some(Ticket::call(0)));
    }

    #[test]
    fn claims_take_the_lowest_free_slot_and_free_exactly_once() {
        let p = ProbeSlots::new();
        let a = p.claim(3, 100).unwrap();
        let b = p.claim(3, 100).unwrap();
        assert_eq!((a.slot(), b.slot()), (Some(0), Some(1)));
        assert_eq!(p.in_flight(3), 2);
        assert!(p.free(a));
        assert!(!p.free(a), "a ticket frees its probe once");
        // The slot is claimed again; the old ticket does not name the new probe.
        let c = p.claim(3, 200).unwrap();
        assert_eq!(c.slot(), Some(0));
        assert_ne!(c, a);
        assert!(!p.free(a));
        assert_eq!(p.in_flight(3), 2);
        // Another episode's ticket, or a ticket without a slot, frees nothing.
        assert!(!p.free(Ticket::probe(4, 1, b.generation())));
        assert!(!p.free(Ticket::call(3)));
        assert!(p.free(b) && p.free(c));
        assert_eq!(p.in_flight(3), 0);
    }

    #[test]
    fn the_oldest_probe_answers_a_bare_outcome() {
        let p = ProbeSlots::new();
        let a = p.claim(1, 1_000).unwrap();
        let b = p.claim(1, 900).unwrap();
        let c = p.claim(1, 900).unwrap();
        assert_eq!(p.oldest_age(1, 1_500), Some(600));
        // b and c are equally old: the lower slot first.
        assert!(p.free_oldest(1, 1_500));
        assert!(!p.free(b));
        assert!(p.free_oldest(1, 1_500));
        assert!(!p.free(c));
        assert_eq!(p.oldest_age(1, 1_500), Some(500));
        assert!(p.free(a));
        assert!(!p.free_oldest(1, 1_500), "no probe in flight");
        assert_eq!(p.oldest_age(1, 1_500), None);
    }

    #[test]
    fn a_slot_freed_by_its_episode_end_is_free_for_the_next() {
        let p = ProbeSlots::new();
        let old = p.claim(5, 10).unwrap();
        p.claim(5, 10).unwrap();
        p.end_episode(5);
        assert_eq!(p.in_flight(5), 0);
        assert!(!p.free(old));
        let new = p.claim(7, 20).unwrap();
        assert_eq!(new.slot(), Some(0));
        assert_eq!(p.oldest_age(7, 25), Some(5));
        // A claim that lands after its episode ended is undone by its claimer.
        let late = p.claim(7, 30).unwrap();
        assert!(!p.undo_if_ended(late, || 8));
        assert!(p.undo_if_ended(new, || 7));
        assert_eq!(p.in_flight(7), 1);
    }

    #[test]
    fn slots_beyond_the_inline_ones_exist_once_a_policy_reserves_them() {
        let p = ProbeSlots::new();
        p.reserve(3);
        assert_eq!(p.capacity(), INLINE);
        for _ in 0..INLINE {
            assert!(p.claim(1, 0).is_some());
        }
        assert_eq!(p.claim(1, 0), None, "every slot taken");
        p.reserve(255);
        assert_eq!(p.capacity(), MAX_SLOTS);
        for i in INLINE..MAX_SLOTS {
            assert_eq!(p.claim(1, 0).and_then(|t| t.slot()), Some(i));
        }
        assert_eq!(p.claim(1, 0), None);
        assert_eq!(p.in_flight(1), MAX_SLOTS);
        // Reserving again keeps the slots (and what they hold).
        p.reserve(200);
        assert_eq!(p.in_flight(1), MAX_SLOTS);
    }

    #[test]
    fn generations_wrap_and_ages_wrap_with_the_clock() {
        let p = ProbeSlots::new();
        let mut last = None;
        for _ in 0..300 {
            let t = p.claim(2, 0).unwrap();
            assert_ne!(Some(t), last);
            assert!(p.free(t));
            last = Some(t);
        }
        // An admission just before the 40-bit wrap is 20 ms old just after it.
        let t = p.claim(2, (1 << 40) - 10).unwrap();
        assert_eq!(p.oldest_age(2, (1 << 40) + 10), Some(20));
        assert!(p.free(t));
    }
}
