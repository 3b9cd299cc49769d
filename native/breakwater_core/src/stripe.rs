//! A stripe: one scheduler thread's ring of a subject's spool.
//!
//! Each thread that enqueues into a subject writes into a stripe of its own (the
//! thread's index modulo [`MAX_STRIPES`], created on its first enqueue), behind a lock
//! that only that thread normally takes: two schedulers enqueueing into one subject do
//! not share a lock or a written cache line. The drain side takes every stripe's lock
//! at once, briefly, for its *cut* ([`crate::spool`]); a thread whose index collides
//! with another's (more threads than stripes) shares the stripe, correctly, at the
//! cost of contention.
//!
//! Invariant (under the lock): records `0..end` of the stripe have been appended, in
//! lock order, each stamped no lower than the one before; `current` holds records
//! `current.first_seq .. end` and its next record goes at data offset `offset`;
//! `handoff` holds, in order, the segments activated since the drain side's last cut,
//! which is how the drain side learns of them. A segment is sealed (its record count
//! written) when the writer moves to the next one, never later.
//!
//! The live slot ([`crate::meta::LiveSlot`]) counts what the stripe appended and
//! refused; its counts are stored after the record they count is published.

use crate::meta::{live, LiveSlot};
use crate::segment::{Identity, Kind, Segment};
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use std::sync::Arc;

/// Stripes per subject and run.
pub const MAX_STRIPES: usize = crate::meta::LIVE_SLOTS;

/// A stripe's name: the run (epoch) that created it and its index in that run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StripeKey {
    /// The run.
    pub epoch: u32,
    /// The index (the thread's stripe slot).
    pub index: u16,
}

/// The writer's state, under the stripe lock.
pub struct Writer {
    /// The segment being written.
    pub current: Option<Arc<Segment>>,
    /// Where its next record goes.
    pub offset: usize,
    /// Records in it.
    pub records: u32,
    /// Records the stripe appended (the next record's sequence number).
    pub end: u64,
    /// The next segment's sequence number.
    pub next_seg_seq: u64,
    /// The last stamp given.
    pub last_stamp: u64,
    /// Segments activated since the last cut.
    pub handoff: Vec<Arc<Segment>>,
    /// Records appended and not yet added to the subject's depth.
    pub depth_delta: u64,
}

/// One thread's ring of a subject. The writer's lock and state sit on cache lines of
/// their own: stripes are small allocations made one after another, and two of them on
/// one line would be written by two schedulers (measured: no scaling at all from one to
/// two schedulers into one subject).
pub struct Stripe {
    key: StripeKey,
    slot: *const LiveSlot,
    _own_slot: Option<Box<LiveSlot>>,
    /// The writer's state.
    pub w: CachePadded<Mutex<Writer>>,
}

// SAFETY: `slot` points into the subject's meta mapping (or `_own_slot`), which lives as
// long as the spool that owns the stripe; it is written only under `w`'s lock.
unsafe impl Send for Stripe {}
// SAFETY: as above.
unsafe impl Sync for Stripe {}

impl Stripe {
    /// A stripe counting into `slot` (a live slot of the meta file), or into a slot of
    /// its own when `slot` is `None`.
    ///
    /// # Safety
    /// A given `slot` outlives the stripe and is written by no one else.
    pub unsafe fn new(key: StripeKey, slot: Option<*const LiveSlot>) -> Self {
        let (slot, own) = match slot {
            Some(p) => (p, None),
            None => {
                let b = Box::new(LiveSlot::new());
                (&*b as *const LiveSlot, Some(b))
            }
        };
        Self {
            key,
            slot,
            _own_slot: own,
            w: CachePadded::new(Mutex::new(Writer {
                current: None,
                offset: 0,
                records: 0,
                end: 0,
                next_seg_seq: 0,
                last_stamp: 0,
                handoff: Vec::new(),
                depth_delta: 0,
            })),
        }
    }

    /// Its name.
    pub fn key(&self) -> StripeKey {
        self.key
    }

    /// Its live counters.
    #[inline]
    pub fn slot(&self) -> &LiveSlot {
        // SAFETY: per `new`'s contract.
        unsafe { &*self.slot }
    }

    /// Appends `payload` to the current segment if it has room. Under the lock.
    #[inline]
    pub fn try_append(&self, w: &mut Writer, payload: &[u8]) -> bool {
        let Some(seg) = &w.current else {
            return false;
        };
        if !seg.fits(w.offset, w.records, payload.len()) {
            return false;
        }
        let stamp = crate::stamp::next(w.last_stamp);
        // SAFETY: we hold the stripe lock (the one writer), the offset chains from the
        // previous append, `fits` said yes, and a current segment is always mapped.
        w.offset = unsafe { seg.append(w.offset, stamp, payload) };
        w.last_stamp = stamp;
        w.records += 1;
        w.end += 1;
        w.depth_delta += 1;
        let slot = self.slot();
        slot.add(live::APPENDED, 1);
        slot.add(live::APPENDED_BYTES, payload.len() as u64);
        match seg.kind() {
            Kind::Overflow(_) => slot.add(live::DISK_APPENDED, 1),
            Kind::Anon => slot.add(live::VOLATILE, 1),
            Kind::Pool(_) => {}
        }
        true
    }

    /// The identity the next segment of this stripe gets. Under the lock.
    pub fn next_identity(&self, w: &Writer, owner: &[u8], subject: &[u8]) -> Identity {
        Identity {
            owner: owner.to_vec(),
            subject: subject.to_vec(),
            epoch: self.key.epoch,
            stripe: self.key.index,
            seg_seq: w.next_seg_seq,
            first_seq: w.end,
        }
    }

    /// Seals the current segment and makes `seg` (activated with
    /// [`Stripe::next_identity`]) current. Under the lock.
    pub fn install(&self, w: &mut Writer, seg: Box<Segment>) {
        debug_assert_eq!(seg.first_seq(), w.end);
        debug_assert_eq!(seg.seg_seq(), w.next_seg_seq);
        if let Some(cur) = w.current.take() {
            cur.seal(u64::from(w.records));
        }
        let seg: Arc<Segment> = Arc::from(seg);
        w.handoff.push(Arc::clone(&seg));
        w.current = Some(seg);
        w.offset = 0;
        w.records = 0;
        w.next_seg_seq += 1;
    }

    /// Counts a refused event under `counter` (one of the refusal counters of
    /// [`live`]). Under the lock.
    pub fn refuse(&self, counter: usize, bytes: usize) {
        let slot = self.slot();
        slot.add(counter, 1);
        slot.add(counter + 1, bytes as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Geometry;

    #[test]
    fn appends_in_order_rolls_and_hands_off() {
        // SAFETY: no slot given: the stripe owns its own.
        let s = unsafe { Stripe::new(StripeKey { epoch: 1, index: 0 }, None) };
        let g = Geometry {
            data_bytes: 64,
            max_records: 2,
        };
        let mut w = s.w.lock();
        assert!(!s.try_append(&mut w, b"x"), "no segment yet");
        for round in 0..3u64 {
            let mut seg = Segment::anon(g).unwrap();
            seg.activate(&s.next_identity(&w, b"o", b"subject"));
            s.install(&mut w, Box::new(seg));
            assert!(s.try_append(&mut w, b"a"));
            assert!(s.try_append(&mut w, b"b"));
            assert!(!s.try_append(&mut w, b"c"), "two records per segment");
            assert_eq!(w.end, 2 * (round + 1));
        }
        assert_eq!(w.handoff.len(), 3);
        assert_eq!(w.handoff[0].sealed(), Some(2));
        assert_eq!(w.handoff[2].sealed(), None, "the current segment is open");
        assert_eq!(w.handoff[1].first_seq(), 2);
        assert_eq!(s.slot().get(live::APPENDED), 6);
        assert_eq!(s.slot().get(live::VOLATILE), 6);
        assert_eq!(w.depth_delta, 6);
    }
}
