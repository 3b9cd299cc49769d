//! A subject's spool: its chain of segments, and two-phase, at-least-once drain.
//!
//! Every event accepted gets the next sequence number. The spool keeps three cursors,
//! `head <= take <= tail`:
//!
//! ```text
//!   released │ taken at least once: in flight, nacked or done │ never taken │
//!   ─────────┼────────────────────────────────────────────────┼─────────────┼──▶ seq
//!          head                                             take          tail
//! ```
//!
//! `ranges` covers `head..take` exactly, in order, with contiguous ranges that are
//! [`Kind::InFlight`] (a batch handed out, waiting for ack or nack), [`Kind::Nacked`]
//! (to be handed out again before anything newer) or [`Kind::Done`] (acknowledged, or
//! discarded by `drop_oldest`). Whenever the first range is done, `head` moves past it,
//! and every segment wholly below `head` goes back to the pool.
//!
//! Invariants, checked by [`Spool::check_invariants`] in the tests:
//! - the chain's segments hold `head'..tail` back to back for some `head' <= head`;
//! - `ranges` tile `head..take`; a batch id names at most one range;
//! - `stats.spooled_events` = events in `head..tail` not done = in flight + nacked +
//!   never taken; likewise for bytes;
//! - accounting: `enqueued = delivered + spooled + dropped_oldest + evacuated` (events
//!   and bytes), where `evacuated` left memory for the disk spool at application stop.
//!
//! The spool is not synchronised; the subject holds it in a mutex.

use crate::policy::{DropPolicy, Overflow};
use crate::pool::RingPool;
use crate::segment::{Piece, Segment};
use std::collections::VecDeque;

/// State of a range of taken events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Handed out in batch `batch` to `owner`; waiting for ack or nack.
    InFlight {
        /// The batch id.
        batch: u64,
        /// Opaque owner token (the VM layer uses the taker's pid).
        owner: u64,
    },
    /// Handed out, then nacked: delivered again before newer events.
    Nacked,
    /// Acknowledged or discarded.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    kind: Kind,
}

/// Exact counts of what happened to a spool's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Events accepted into memory.
    pub enqueued_events: u64,
    /// Bytes accepted into memory.
    pub enqueued_bytes: u64,
    /// Events acknowledged by a taker.
    pub delivered_events: u64,
    /// Bytes acknowledged by a taker.
    pub delivered_bytes: u64,
    /// Events handed out by `take` (redeliveries included).
    pub taken_events: u64,
    /// Events nacked (each will be handed out again).
    pub redelivered_events: u64,
    /// Events refused because the pool had no room (`drop_newest`).
    pub dropped_newest_events: u64,
    /// Bytes refused because the pool had no room.
    pub dropped_newest_bytes: u64,
    /// Spooled events discarded to make room (`drop_oldest`).
    pub dropped_oldest_events: u64,
    /// Spooled bytes discarded to make room.
    pub dropped_oldest_bytes: u64,
    /// Events handed back to the caller for the disk spool (`overflow: disk`).
    pub overflow_events: u64,
    /// Bytes handed back to the caller for the disk spool.
    pub overflow_bytes: u64,
    /// Events in memory now: in flight, nacked or never taken.
    pub spooled_events: u64,
    /// Bytes in memory now.
    pub spooled_bytes: u64,
    /// Events in batches waiting for ack or nack.
    pub in_flight_events: u64,
    /// Segments the spool holds now.
    pub segments: u32,
    /// Events moved from memory to the disk spool (application stop).
    pub evacuated_events: u64,
    /// Bytes moved from memory to the disk spool.
    pub evacuated_bytes: u64,
    /// Events moved from the disk spool back into memory.
    pub refilled_events: u64,
    /// Overflow events the disk spool could not store (disk full, write error).
    pub disk_dropped_events: u64,
    /// Bytes of those.
    pub disk_dropped_bytes: u64,
    /// Events found in the disk spool at start that this node had not counted.
    pub disk_recovered_events: u64,
}

impl SpoolStats {
    /// Events in the disk spool: in by overflow, evacuation and recovery, out by refill
    /// or a failed write.
    pub fn disk_pending_events(&self) -> u64 {
        (self.overflow_events + self.evacuated_events + self.disk_recovered_events)
            .saturating_sub(self.disk_dropped_events + self.refilled_events)
    }

    /// Events offered by callers of `push` (refills from disk excluded).
    pub fn offered_events(&self) -> u64 {
        self.enqueued_events - self.refilled_events
            + self.dropped_newest_events
            + self.overflow_events
    }

    /// Events dropped for good, by every cause.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_newest_events + self.dropped_oldest_events + self.disk_dropped_events
    }
}

/// How an acknowledged batch left memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Delivered to the ledger.
    Delivered,
    /// Written to the disk spool (application stop).
    Evacuated,
}

/// What became of an event offered to [`Spool::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Spooled.
    Accepted,
    /// Spooled after discarding this many of the oldest events (`drop_oldest`).
    AcceptedAfterDrop {
        /// Events discarded.
        events: u64,
        /// Bytes discarded.
        bytes: u64,
    },
    /// No room: refused and counted as dropped (`drop_newest`, or `drop_oldest` when the
    /// oldest segment is pinned by a batch in flight).
    Refused,
    /// No room: the caller must put the event on the disk spool (`overflow: disk`).
    Overflow,
}

/// Whether a push obtained a segment or found none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEvent {
    /// The event fit in the current segment.
    None,
    /// A segment was obtained from the pool.
    Acquired,
    /// No segment could be had: quota reached or pool empty.
    Exhausted,
}

/// A batch handed out by [`Spool::take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Id to ack or nack it with.
    pub id: u64,
    /// First sequence number.
    pub start: u64,
    /// Sequence number after the last.
    pub end: u64,
    /// Bytes in the batch.
    pub bytes: u64,
}

impl Batch {
    /// Events in the batch.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True when the batch is empty (never, for a batch `take` returned).
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Why an ack or nack was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchError {
    /// No batch with that id is in flight (never taken, or already acked or nacked).
    UnknownBatch,
}

/// A subject's chain of segments and its drain cursors.
pub struct Spool {
    chain: VecDeque<Box<Segment>>,
    head: u64,
    take: u64,
    tail: u64,
    ranges: VecDeque<Range>,
    next_batch: u64,
    stats: SpoolStats,
}

impl Default for Spool {
    fn default() -> Self {
        Self::new()
    }
}

impl Spool {
    /// An empty spool holding no segment.
    pub fn new() -> Self {
        Self {
            chain: VecDeque::new(),
            head: 0,
            take: 0,
            tail: 0,
            ranges: VecDeque::new(),
            next_batch: 1,
            stats: SpoolStats::default(),
        }
    }

    /// Events waiting for the ledger: spooled in memory (in flight included) plus
    /// waiting in the disk spool. This is the spool's part of the subject's depth.
    pub fn waiting_events(&self) -> u64 {
        self.stats.spooled_events + self.stats.disk_pending_events()
    }

    /// The spool's counts.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            segments: self.chain.len() as u32,
            ..self.stats
        }
    }

    /// Segments held.
    pub fn segments(&self) -> usize {
        self.chain.len()
    }

    /// Offers `event` to the spool. `quota` is the most segments this spool may hold.
    pub fn push(
        &mut self,
        pool: &RingPool,
        event: &[u8],
        quota: u32,
        drop_policy: DropPolicy,
        overflow: Overflow,
    ) -> (PushOutcome, SegmentEvent) {
        if let Some(seg) = self.chain.back_mut() {
            if seg.try_push(event) {
                self.accepted(event.len());
                return (PushOutcome::Accepted, SegmentEvent::None);
            }
        }
        if self.chain.len() < quota as usize {
            if let Some(seg) = pool.take() {
                self.append_segment(seg, event);
                return (PushOutcome::Accepted, SegmentEvent::Acquired);
            }
        }
        let outcome = match (overflow, drop_policy) {
            (Overflow::Disk, _) => self.overflow(event),
            (Overflow::Drop, DropPolicy::DropOldest) => match self.drop_front_pending() {
                Some((seg, events, bytes)) => {
                    self.append_segment(seg, event);
                    PushOutcome::AcceptedAfterDrop { events, bytes }
                }
                None => self.refuse(event),
            },
            (Overflow::Drop, DropPolicy::DropNewest) => self.refuse(event),
        };
        (outcome, SegmentEvent::Exhausted)
    }

    /// Puts an event read back from the disk spool into memory, if a segment has room
    /// (never discarding anything, never overflowing). Returns false when it did not fit.
    pub fn refill(&mut self, pool: &RingPool, event: &[u8], quota: u32) -> (bool, SegmentEvent) {
        if self.chain.back_mut().is_some_and(|seg| seg.try_push(event)) {
            self.accepted(event.len());
            self.stats.refilled_events += 1;
            return (true, SegmentEvent::None);
        }
        if self.chain.len() < quota as usize {
            if let Some(seg) = pool.take() {
                self.append_segment(seg, event);
                self.stats.refilled_events += 1;
                return (true, SegmentEvent::Acquired);
            }
        }
        (false, SegmentEvent::None)
    }

    /// Counts overflow events the disk spool failed to store.
    pub fn disk_dropped(&mut self, events: u64, bytes: u64) {
        self.stats.disk_dropped_events += events;
        self.stats.disk_dropped_bytes += bytes;
    }

    /// Counts events found in the disk spool at start that this node had not counted.
    pub fn disk_recovered(&mut self, events: u64) {
        self.stats.disk_recovered_events += events;
    }

    /// Counts `event` as handed to the disk spool without offering it to memory (the
    /// subject's older events are on disk already).
    pub fn overflow(&mut self, event: &[u8]) -> PushOutcome {
        self.stats.overflow_events += 1;
        self.stats.overflow_bytes += event.len() as u64;
        PushOutcome::Overflow
    }

    fn refuse(&mut self, event: &[u8]) -> PushOutcome {
        self.stats.dropped_newest_events += 1;
        self.stats.dropped_newest_bytes += event.len() as u64;
        PushOutcome::Refused
    }

    fn accepted(&mut self, bytes: usize) {
        self.tail += 1;
        self.stats.enqueued_events += 1;
        self.stats.enqueued_bytes += bytes as u64;
        self.stats.spooled_events += 1;
        self.stats.spooled_bytes += bytes as u64;
    }

    fn append_segment(&mut self, mut seg: Box<Segment>, event: &[u8]) {
        seg.reset(self.tail);
        // The pool refuses geometries whose max event does not fit an empty segment and
        // the subject refuses larger events, so this push cannot fail.
        let fits = seg.try_push(event);
        debug_assert!(
            fits,
            "an event of {} bytes did not fit an empty segment",
            event.len()
        );
        self.chain.push_back(seg);
        self.accepted(event.len());
    }

    fn segment_index(&self, seq: u64) -> usize {
        self.chain.partition_point(|s| s.end_seq() <= seq)
    }

    /// Bytes of events `from..to`.
    fn bytes_between(&self, from: u64, to: u64) -> u64 {
        self.pieces(from, to).map(|p| p.data.len() as u64).sum()
    }

    /// Events `from..to` as contiguous pieces, one per segment they span.
    pub fn pieces(&self, from: u64, to: u64) -> impl Iterator<Item = Piece<'_>> + '_ {
        let first = self.segment_index(from);
        self.chain
            .range(first..)
            .take_while(move |s| s.first_seq() < to)
            .map(move |s| s.piece(from.max(s.first_seq()), to.min(s.end_seq())))
            .filter(|p| !p.is_empty())
    }

    /// Ensures a range boundary at `seq` (which lies in `head..=take`).
    fn split_at(&mut self, seq: u64) {
        if let Some(i) = self
            .ranges
            .iter()
            .position(|r| r.start < seq && seq < r.end)
        {
            let r = self.ranges[i];
            self.ranges[i].end = seq;
            self.ranges.insert(i + 1, Range { start: seq, ..r });
        }
    }

    /// Moves `head` past done ranges and returns wholly released segments to the pool.
    /// Returns how many segments went back.
    fn release(&mut self, pool: &RingPool) -> usize {
        while let Some(r) = self.ranges.front() {
            if r.kind != Kind::Done {
                break;
            }
            self.head = r.end;
            self.ranges.pop_front();
        }
        let mut released = 0;
        while self.chain.front().is_some_and(|s| s.end_seq() <= self.head) {
            if let Some(seg) = self.chain.pop_front() {
                pool.give(seg);
                released += 1;
            }
        }
        released
    }

    /// Discards every pending (nacked or never taken) event of the oldest segment. If that
    /// releases the segment, returns it (for reuse by the caller, so that no other
    /// subject can take it in between) with the events and bytes discarded. Returns
    /// `None`, discarding nothing, when a batch in flight pins the oldest segment.
    fn drop_front_pending(&mut self) -> Option<(Box<Segment>, u64, u64)> {
        let seg_end = self.chain.front()?.end_seq();
        let pinned = self
            .ranges
            .iter()
            .any(|r| r.start < seg_end && matches!(r.kind, Kind::InFlight { .. }));
        if pinned {
            return None;
        }
        let fresh_end = seg_end.min(self.tail).max(self.take);
        if fresh_end > self.take {
            self.ranges.push_back(Range {
                start: self.take,
                end: fresh_end,
                kind: Kind::Nacked,
            });
            self.take = fresh_end;
        }
        self.split_at(seg_end.min(self.take));
        let mut events = 0;
        let mut bytes = 0;
        let mut discard = Vec::new();
        for r in self.ranges.iter_mut() {
            if r.start >= seg_end {
                break;
            }
            if r.kind == Kind::Nacked {
                r.kind = Kind::Done;
                discard.push((r.start, r.end));
            }
        }
        for (s, e) in discard {
            events += e - s;
            bytes += self.bytes_between(s, e);
        }
        self.stats.dropped_oldest_events += events;
        self.stats.dropped_oldest_bytes += bytes;
        self.stats.spooled_events -= events;
        self.stats.spooled_bytes -= bytes;
        while let Some(r) = self.ranges.front() {
            if r.kind != Kind::Done {
                break;
            }
            self.head = r.end;
            self.ranges.pop_front();
        }
        debug_assert!(self.head >= seg_end);
        let seg = self.chain.pop_front()?;
        Some((seg, events, bytes))
    }

    /// Hands out the oldest pending events, at most `max_events` and, beyond the first,
    /// at most `max_bytes`, as a batch owned by `owner`. Nacked events come first, then
    /// never-taken ones; each batch is one contiguous run of sequence numbers.
    pub fn take(&mut self, max_events: u64, max_bytes: u64, owner: u64) -> Option<Batch> {
        if max_events == 0 {
            return None;
        }
        let (start, limit) = match self.ranges.iter().find(|r| r.kind == Kind::Nacked) {
            Some(r) => (r.start, r.end),
            None if self.take < self.tail => (self.take, self.tail),
            None => return None,
        };
        // Saturating: `max_events` may be anything up to u64::MAX ("everything").
        let end = self.cut(
            start,
            limit.min(start.saturating_add(max_events)),
            max_bytes,
        );
        let bytes = self.bytes_between(start, end);
        let id = self.next_batch;
        self.next_batch += 1;
        let kind = Kind::InFlight { batch: id, owner };
        if start < self.take {
            self.split_at(end);
            if let Some(r) = self.ranges.iter_mut().find(|r| r.start == start) {
                r.kind = kind;
            }
        } else {
            self.ranges.push_back(Range { start, end, kind });
            self.take = end;
        }
        let n = end - start;
        self.stats.taken_events += n;
        self.stats.in_flight_events += n;
        Some(Batch {
            id,
            start,
            end,
            bytes,
        })
    }

    /// The end of the longest run from `start` (at most to `limit`) whose bytes stay
    /// within `max_bytes`; at least one event.
    fn cut(&self, start: u64, limit: u64, max_bytes: u64) -> u64 {
        let mut end = start;
        let mut bytes = 0u64;
        for p in self.pieces(start, limit) {
            for r in p.event_ranges() {
                let b = r.len() as u64;
                if end > start && bytes + b > max_bytes {
                    return end;
                }
                bytes += b;
                end += 1;
            }
        }
        end
    }

    fn find_batch(&self, id: u64) -> Option<usize> {
        self.ranges
            .iter()
            .position(|r| matches!(r.kind, Kind::InFlight { batch, .. } if batch == id))
    }

    /// Acknowledges batch `id`: its events are delivered and their segments can go back.
    /// Returns how many segments went back to the pool.
    pub fn ack(&mut self, pool: &RingPool, id: u64) -> Result<usize, BatchError> {
        self.release_batch(pool, id, Release::Delivered)
    }

    /// Releases batch `id` as delivered or as evacuated to disk. Returns how many
    /// segments went back to the pool.
    pub fn release_batch(
        &mut self,
        pool: &RingPool,
        id: u64,
        how: Release,
    ) -> Result<usize, BatchError> {
        let i = self.find_batch(id).ok_or(BatchError::UnknownBatch)?;
        let Range { start, end, .. } = self.ranges[i];
        let (n, bytes) = (end - start, self.bytes_between(start, end));
        self.ranges[i].kind = Kind::Done;
        match how {
            Release::Delivered => {
                self.stats.delivered_events += n;
                self.stats.delivered_bytes += bytes;
            }
            Release::Evacuated => {
                self.stats.evacuated_events += n;
                self.stats.evacuated_bytes += bytes;
            }
        }
        self.stats.spooled_events -= n;
        self.stats.spooled_bytes -= bytes;
        self.stats.in_flight_events -= n;
        Ok(self.release(pool))
    }

    /// Returns batch `id` to the spool: its events are handed out again before newer ones.
    pub fn nack(&mut self, id: u64) -> Result<u64, BatchError> {
        let i = self.find_batch(id).ok_or(BatchError::UnknownBatch)?;
        Ok(self.nack_at(i))
    }

    fn nack_at(&mut self, i: usize) -> u64 {
        let r = &mut self.ranges[i];
        r.kind = Kind::Nacked;
        let n = r.end - r.start;
        self.stats.redelivered_events += n;
        self.stats.in_flight_events -= n;
        n
    }

    /// Nacks every batch in flight to `owner` (e.g. a taker that died). Returns the events
    /// returned to the spool.
    pub fn nack_owner(&mut self, owner: u64) -> u64 {
        let mut n = 0;
        for i in 0..self.ranges.len() {
            if matches!(self.ranges[i].kind, Kind::InFlight { owner: o, .. } if o == owner) {
                n += self.nack_at(i);
            }
        }
        n
    }

    /// Nacks every batch in flight. Returns the events returned to the spool.
    pub fn nack_all(&mut self) -> u64 {
        let mut n = 0;
        for i in 0..self.ranges.len() {
            if matches!(self.ranges[i].kind, Kind::InFlight { .. }) {
                n += self.nack_at(i);
            }
        }
        n
    }

    /// Checks every invariant of the module documentation; panics on a violation.
    pub fn check_invariants(&self) {
        assert!(self.head <= self.take && self.take <= self.tail);
        let mut at = self.head;
        let mut pending = self.tail - self.take;
        let mut in_flight = 0;
        let mut ids = std::collections::HashSet::new();
        for r in &self.ranges {
            assert_eq!(
                r.start, at,
                "ranges must tile head..take: {:?}",
                self.ranges
            );
            assert!(r.end > r.start, "empty range {r:?}");
            at = r.end;
            match r.kind {
                Kind::InFlight { batch, .. } => {
                    assert!(ids.insert(batch), "batch {batch} twice");
                    in_flight += r.end - r.start;
                    pending += r.end - r.start;
                }
                Kind::Nacked => pending += r.end - r.start,
                Kind::Done => {}
            }
        }
        assert_eq!(at, self.take, "ranges must end at take");
        assert_eq!(pending, self.stats.spooled_events);
        assert_eq!(in_flight, self.stats.in_flight_events);
        if let Some(first) = self.chain.front() {
            assert!(first.first_seq() <= self.head);
            let mut seq = first.first_seq();
            for s in &self.chain {
                assert_eq!(s.first_seq(), seq, "segments must be back to back");
                seq = s.end_seq();
            }
            assert_eq!(seq, self.tail);
        } else {
            assert_eq!(self.head, self.tail, "no segment but events spooled");
        }
        let s = self.stats;
        assert_eq!(
            s.enqueued_events,
            s.delivered_events + s.spooled_events + s.dropped_oldest_events + s.evacuated_events
        );
        assert_eq!(
            s.enqueued_bytes,
            s.delivered_bytes + s.spooled_bytes + s.dropped_oldest_bytes + s.evacuated_bytes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PoolConfig;

    fn pool(segments: u32, capacity: u32) -> RingPool {
        RingPool::new(PoolConfig {
            segments,
            segment_capacity: capacity,
            segment_bytes: capacity * 16,
            max_event_bytes: 16,
        })
    }

    fn push(s: &mut Spool, p: &RingPool, ev: &[u8], quota: u32, d: DropPolicy) -> PushOutcome {
        let (o, _) = s.push(p, ev, quota, d, Overflow::Drop);
        s.check_invariants();
        o
    }

    fn events(s: &Spool, b: &Batch) -> Vec<Vec<u8>> {
        s.pieces(b.start, b.end)
            .flat_map(|p| {
                p.event_ranges()
                    .map(|r| p.data[r].to_vec())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn ev(i: u32) -> Vec<u8> {
        format!("e{i}").into_bytes()
    }

    #[test]
    fn fifo_across_segments_and_segments_return_on_ack() {
        let p = pool(4, 2);
        let mut s = Spool::new();
        for i in 0..5 {
            assert_eq!(
                push(&mut s, &p, &ev(i), 4, DropPolicy::DropNewest),
                PushOutcome::Accepted
            );
        }
        assert_eq!(s.segments(), 3);
        assert_eq!(p.free_segments(), 1);
        let b = s.take(3, u64::MAX, 1).unwrap();
        assert_eq!(events(&s, &b), vec![ev(0), ev(1), ev(2)]);
        let b2 = s.take(10, u64::MAX, 1).unwrap();
        assert_eq!(events(&s, &b2), vec![ev(3), ev(4)]);
        assert!(s.take(10, u64::MAX, 1).is_none());
        // Acks out of order: nothing is released until the oldest batch is done.
        assert_eq!(s.ack(&p, b2.id), Ok(0));
        s.check_invariants();
        assert_eq!(s.ack(&p, b.id), Ok(3));
        s.check_invariants();
        assert_eq!(p.free_segments(), 4);
        assert_eq!(s.ack(&p, b.id), Err(BatchError::UnknownBatch));
        let st = s.stats();
        assert_eq!(
            (st.delivered_events, st.spooled_events, st.segments),
            (5, 0, 0)
        );
    }

    #[test]
    fn nacked_events_come_back_first_and_in_order() {
        let p = pool(4, 4);
        let mut s = Spool::new();
        for i in 0..6 {
            push(&mut s, &p, &ev(i), 4, DropPolicy::DropNewest);
        }
        let a = s.take(2, u64::MAX, 1).unwrap();
        let b = s.take(2, u64::MAX, 1).unwrap();
        assert_eq!(s.nack(a.id), Ok(2));
        s.check_invariants();
        let a2 = s.take(1, u64::MAX, 2).unwrap();
        assert_eq!(events(&s, &a2), vec![ev(0)]);
        let a3 = s.take(10, u64::MAX, 2).unwrap();
        assert_eq!(
            events(&s, &a3),
            vec![ev(1)],
            "the rest of the nacked run, alone"
        );
        let c = s.take(10, u64::MAX, 2).unwrap();
        assert_eq!(events(&s, &c), vec![ev(4), ev(5)]);
        for id in [b.id, a2.id, c.id, a3.id] {
            s.ack(&p, id).unwrap();
            s.check_invariants();
        }
        let st = s.stats();
        assert_eq!(st.delivered_events, 6);
        assert_eq!(st.redelivered_events, 2);
        assert_eq!(st.taken_events, 8);
    }

    #[test]
    fn nack_owner_returns_only_that_owners_batches() {
        let p = pool(4, 4);
        let mut s = Spool::new();
        for i in 0..4 {
            push(&mut s, &p, &ev(i), 4, DropPolicy::DropNewest);
        }
        let a = s.take(1, u64::MAX, 7).unwrap();
        let _b = s.take(1, u64::MAX, 8).unwrap();
        let _c = s.take(1, u64::MAX, 7).unwrap();
        assert_eq!(s.nack_owner(7), 2);
        s.check_invariants();
        assert_eq!(s.stats().in_flight_events, 1);
        let again = s.take(10, u64::MAX, 9).unwrap();
        assert_eq!(events(&s, &again), vec![ev(0)]);
        assert_eq!(again.start, a.start);
        assert_eq!(s.nack_all(), 2);
        s.check_invariants();
    }

    #[test]
    fn drop_newest_refuses_and_counts_when_quota_is_reached() {
        let p = pool(8, 2);
        let mut s = Spool::new();
        for i in 0..4 {
            assert_eq!(
                push(&mut s, &p, &ev(i), 2, DropPolicy::DropNewest),
                PushOutcome::Accepted
            );
        }
        let (o, seg) = s.push(&p, b"late!", 2, DropPolicy::DropNewest, Overflow::Drop);
        assert_eq!((o, seg), (PushOutcome::Refused, SegmentEvent::Exhausted));
        let st = s.stats();
        assert_eq!((st.dropped_newest_events, st.dropped_newest_bytes), (1, 5));
        assert_eq!(st.spooled_events, 4);
        assert_eq!(
            p.free_segments(),
            6,
            "the quota, not the pool, was the limit"
        );
    }

    #[test]
    fn drop_oldest_discards_the_oldest_segment_and_reuses_it() {
        let p = pool(2, 2);
        let mut s = Spool::new();
        for i in 0..4 {
            push(&mut s, &p, &ev(i), 8, DropPolicy::DropOldest);
        }
        assert_eq!(p.free_segments(), 0);
        let o = push(&mut s, &p, &ev(4), 8, DropPolicy::DropOldest);
        assert_eq!(
            o,
            PushOutcome::AcceptedAfterDrop {
                events: 2,
                bytes: 4
            }
        );
        let b = s.take(10, u64::MAX, 1).unwrap();
        assert_eq!(events(&s, &b), vec![ev(2), ev(3), ev(4)]);
        s.ack(&p, b.id).unwrap();
        s.check_invariants();
        let st = s.stats();
        assert_eq!((st.dropped_oldest_events, st.delivered_events), (2, 3));
    }

    #[test]
    fn drop_oldest_drops_nacked_events_and_refuses_when_pinned() {
        let p = pool(2, 2);
        let mut s = Spool::new();
        for i in 0..4 {
            push(&mut s, &p, &ev(i), 8, DropPolicy::DropOldest);
        }
        // A batch in flight pins the oldest segment: nothing can be discarded.
        let b = s.take(1, u64::MAX, 1).unwrap();
        assert_eq!(
            push(&mut s, &p, &ev(9), 8, DropPolicy::DropOldest),
            PushOutcome::Refused
        );
        // Once nacked, the batch's events are pending again and may be discarded.
        s.nack(b.id).unwrap();
        let o = push(&mut s, &p, &ev(4), 8, DropPolicy::DropOldest);
        assert_eq!(
            o,
            PushOutcome::AcceptedAfterDrop {
                events: 2,
                bytes: 4
            }
        );
        let st = s.stats();
        assert_eq!((st.dropped_oldest_events, st.dropped_newest_events), (2, 1));
        let b = s.take(10, u64::MAX, 1).unwrap();
        assert_eq!(events(&s, &b), vec![ev(2), ev(3), ev(4)]);
    }

    #[test]
    fn overflow_to_disk_hands_the_event_back() {
        let p = pool(1, 1);
        let mut s = Spool::new();
        push(&mut s, &p, b"a", 1, DropPolicy::DropOldest);
        let (o, seg) = s.push(&p, b"bb", 1, DropPolicy::DropOldest, Overflow::Disk);
        assert_eq!((o, seg), (PushOutcome::Overflow, SegmentEvent::Exhausted));
        let st = s.stats();
        assert_eq!(
            (st.overflow_events, st.overflow_bytes, st.spooled_events),
            (1, 2, 1)
        );
    }

    #[test]
    fn batches_are_cut_by_bytes_but_hold_at_least_one_event() {
        let p = pool(2, 8);
        let mut s = Spool::new();
        for _ in 0..6 {
            push(&mut s, &p, &[7u8; 10], 2, DropPolicy::DropNewest);
        }
        let b = s.take(100, 25, 1).unwrap();
        assert_eq!((b.len(), b.bytes), (2, 20));
        let b = s.take(100, 5, 1).unwrap();
        assert_eq!((b.len(), b.bytes), (1, 10));
        assert!(s.take(0, 100, 1).is_none());
    }

    #[test]
    fn take_with_no_event_limit_takes_everything_pending() {
        let p = pool(4, 2);
        let mut s = Spool::new();
        for i in 0..5 {
            push(&mut s, &p, &ev(i), 4, DropPolicy::DropNewest);
        }
        let first = s.take(1, u64::MAX, 1).unwrap();
        // u64::MAX events from a non-zero start must not wrap around to an empty batch.
        let b = s.take(u64::MAX, u64::MAX, 1).unwrap();
        assert_eq!(events(&s, &b), vec![ev(1), ev(2), ev(3), ev(4)]);
        assert!(s.take(u64::MAX, u64::MAX, 1).is_none());
        assert_eq!(s.nack(first.id), Ok(1));
        let again = s.take(u64::MAX, u64::MAX, 1).unwrap();
        assert_eq!(events(&s, &again), vec![ev(0)]);
        s.check_invariants();
    }

    /// A deterministic random walk over every operation, checking the invariants after
    /// each and the FIFO/at-least-once contract at the end.
    #[test]
    fn random_operations_keep_every_invariant() {
        let mut rng = 0x2545F4914F6CDD1Du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..50 {
            let p = pool(3 + (round % 3), 3);
            let mut s = Spool::new();
            let drop = if round % 2 == 0 {
                DropPolicy::DropNewest
            } else {
                DropPolicy::DropOldest
            };
            let mut in_flight: Vec<u64> = Vec::new();
            let mut delivered: Vec<u64> = Vec::new();
            let mut seq_of = std::collections::HashMap::new();
            let mut n = 0u64;
            for _ in 0..400 {
                match next() % 5 {
                    0 | 1 => {
                        let e = n.to_be_bytes();
                        let (o, _) = s.push(&p, &e, 2 + (round % 3), drop, Overflow::Drop);
                        if matches!(
                            o,
                            PushOutcome::Accepted | PushOutcome::AcceptedAfterDrop { .. }
                        ) {
                            seq_of.insert(n, ());
                        }
                        n += 1;
                    }
                    2 => {
                        if let Some(b) = s.take(1 + next() % 4, u64::MAX, next() % 3) {
                            in_flight.push(b.id);
                            let _ = &b;
                        }
                    }
                    3 if !in_flight.is_empty() => {
                        let id = in_flight.swap_remove((next() % in_flight.len() as u64) as usize);
                        let r = s
                            .ranges
                            .iter()
                            .find(|r| matches!(r.kind, Kind::InFlight { batch, .. } if batch == id))
                            .copied()
                            .unwrap();
                        for piece in s.pieces(r.start, r.end) {
                            for rg in piece.event_ranges() {
                                delivered
                                    .push(u64::from_be_bytes(piece.data[rg].try_into().unwrap()));
                            }
                        }
                        s.ack(&p, id).unwrap();
                    }
                    4 if !in_flight.is_empty() => {
                        let id = in_flight.swap_remove((next() % in_flight.len() as u64) as usize);
                        s.nack(id).unwrap();
                    }
                    _ => {}
                }
                s.check_invariants();
            }
            // Every delivered event was accepted, and none twice (acks are exactly once).
            let mut seen = std::collections::HashSet::new();
            for d in &delivered {
                assert!(seq_of.contains_key(d));
                assert!(seen.insert(*d), "event {d} delivered twice");
            }
            let st = s.stats();
            assert_eq!(st.delivered_events, delivered.len() as u64);
            assert_eq!(
                p.free_segments() + s.segments(),
                p.config().segments as usize
            );
        }
    }
}
