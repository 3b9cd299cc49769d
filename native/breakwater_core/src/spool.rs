//! A subject's spool: per-thread stripes on the write side, one merged, two-phase,
//! at-least-once drain on the read side.
//!
//! # Writing
//!
//! An enqueue appends a record to the calling thread's stripe ([`crate::stripe`]): the
//! stripe's lock, a stamp, a copy into the stripe's current segment, and two counter
//! stores into the subject's meta file. When the segment is full the stripe takes the
//! next one: from the pool while the subject is under its quota, else an overflow file
//! (policy `overflow: :disk`; taken ready-made from the store's reserve, never created
//! here: [`crate::reserve`]), else the drop policy applies. Nothing on this path is
//! shared with another thread's stripe, with one exception kept rare: the subject's
//! depth mirror, which a stripe adds to every [`LAZY_BATCH`] events, or at once when the
//! depth is near the backpressure thresholds (so transitions happen at exactly the
//! depth they would without batching).
//!
//! # Draining
//!
//! The drain side (under the spool's drain lock) learns what was written by a **cut**:
//! it takes every stripe's lock at once, moves each stripe's newly activated segments
//! into its chain and notes how many records each stripe holds, then lets go. A record
//! inside the cut was published before the cut; a record after it was stamped after
//! every record inside it. Records are handed out in `(epoch, stamp)` order across
//! stripes (a merge; within a stripe they are in order already). Together this keeps
//! FIFO per producer process: if a process enqueued `a` then `b`, on any schedulers,
//! `b`'s stamp is not below `a`'s ([`crate::stamp`]), and `b` is inside a cut only if `a`
//! is.
//!
//! Merged records get positions in one *merged sequence*; `runs` map merged positions
//! back to `(stripe, record)`; `ranges` tile the merged positions handed out so far,
//! exactly as a single queue's would:
//!
//! ```text
//!   released │ taken at least once: in flight, nacked or done │ never taken (in stripes)
//!   ─────────┼────────────────────────────────────────────────┼──────────────────▶
//!          head                                             take
//! ```
//!
//! [`Kind::InFlight`] ranges are batches waiting for ack or nack, [`Kind::Nacked`] ones
//! are handed out again before anything newer, [`Kind::Done`] ones are acknowledged,
//! discarded (`drop_oldest`) or lost. When the first range is done, `head` moves past
//! it: each run it passes moves its stripe's durable cursor (`released`, persisted in
//! the meta file: the ack cursor, moved after ack only), and a segment whose records
//! are all released goes back to the pool (or, an overflow file, is deleted).
//!
//! Invariants (checked by [`Spool::check_invariants`] in the tests):
//! - `ranges` tile `head..take`; a batch id names at most one range; `runs` cover
//!   `head..take` in order, and each stripe's runs are in its record order;
//! - per stripe, `released <= taken <= end`, and `lost` ranges lie in `released..end`;
//! - accounting: `enqueued = delivered + dropped_oldest + lost + spooled` (events);
//!   in-flight events are spooled until acked.

use crate::counters::thread_index;
use crate::meta::{self, live, Counters, LostReason, MetaFile, State, StripeState};
use crate::policy::{DropPolicy, Overflow};
use crate::record::{self, Parsed};
use crate::segment::{Kind as SegKind, Segment};
use crate::store::{Level, Report, Store};
use crate::stripe::{Stripe, StripeKey, MAX_STRIPES};
use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Records `start..end` of a stripe found lost, and why.
type LostRange = (u64, u64, LostReason);

/// Events a stripe appends before it adds them to the subject's depth (when the depth
/// is far from every threshold).
pub const LAZY_BATCH: u64 = 64;

/// State of a range of merged positions.
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
    /// Finished: counted when `head` passes it (with the durable cursor).
    Done(How),
}

/// How a range was finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// Acknowledged.
    Delivered,
    /// Discarded to make room (`drop_oldest`).
    Dropped,
    /// Lost records skipped (counted when found).
    Skipped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    kind: Kind,
    /// Bytes of its events.
    bytes: u64,
}

/// What a run of merged positions holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunKind {
    /// Records to read.
    Data,
    /// Records already counted (lost, or discarded): nothing to read.
    Skip,
}

/// Merged positions `merged .. merged + len` are records `seq .. seq + len` of reader
/// `reader`, from data offset `offset` of segment `seg_seq` (a data run never crosses a
/// segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    merged: u64,
    len: u64,
    reader: u32,
    seq: u64,
    seg_seq: u64,
    offset: u32,
    bytes: u64,
    kind: RunKind,
}

/// Exact counts of what happened to a spool's events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Events accepted (appended to a stripe).
    pub enqueued_events: u64,
    /// Bytes of those.
    pub enqueued_bytes: u64,
    /// Events acknowledged by a taker.
    pub delivered_events: u64,
    /// Bytes of those.
    pub delivered_bytes: u64,
    /// Events handed out (redeliveries included).
    pub taken_events: u64,
    /// Events handed out again: after a nack, a taker's death, or a crash.
    pub redelivered_events: u64,
    /// Events refused for lack of room (`drop_newest`; `pool_exhausted`).
    pub dropped_newest_events: u64,
    /// Bytes of those.
    pub dropped_newest_bytes: u64,
    /// Pending events discarded to make room (`drop_oldest`).
    pub dropped_oldest_events: u64,
    /// Bytes of those.
    pub dropped_oldest_bytes: u64,
    /// Events refused because the spool could not store them (`spool_unavailable`).
    pub unavailable_events: u64,
    /// Bytes of those.
    pub unavailable_bytes: u64,
    /// Events refused because the subject's overflow files reached `disk_max_bytes`.
    pub disk_full_events: u64,
    /// Bytes of those.
    pub disk_full_bytes: u64,
    /// Events lost, by [`LostReason`] index.
    pub lost_events: [u64; meta::LOST_REASONS],
    /// Bytes of those, where known.
    pub lost_bytes: [u64; meta::LOST_REASONS],
    /// Events spooled now: in flight, nacked or never taken.
    pub spooled_events: u64,
    /// Bytes of those.
    pub spooled_bytes: u64,
    /// Of the spooled events, those in overflow files.
    pub spooled_disk_events: u64,
    /// Events in batches waiting for ack or nack.
    pub in_flight_events: u64,
    /// Pool segments the spool holds.
    pub segments: u32,
    /// Overflow files the spool holds.
    pub overflow_segments: u32,
    /// Stripes (of this run and earlier ones) with records.
    pub stripes: u32,
}

impl SpoolStats {
    /// Events offered to `enqueue` (accepted or refused).
    pub fn offered_events(&self) -> u64 {
        self.enqueued_events
            + self.dropped_newest_events
            + self.unavailable_events
            + self.disk_full_events
    }

    /// Events dropped: refused for lack of room, discarded, refused by the disk.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_newest_events
            + self.dropped_oldest_events
            + self.unavailable_events
            + self.disk_full_events
    }

    /// Bytes dropped.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_newest_bytes
            + self.dropped_oldest_bytes
            + self.unavailable_bytes
            + self.disk_full_bytes
    }

    /// Events lost, every reason.
    pub fn lost_total(&self) -> u64 {
        self.lost_events.iter().sum()
    }
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
    /// No room: refused and counted (`drop_newest`, or `drop_oldest` with nothing that
    /// could be discarded).
    Refused,
    /// The spool cannot store it (disk full, unwritable, a failing write): refused,
    /// counted.
    Unavailable,
    /// The subject's overflow files reached `disk_max_bytes`: refused, counted.
    DiskFull,
    /// The spool was closed ([`Spool::close`]: its subject is being removed): nothing
    /// stored, nothing counted.
    Removed,
}

/// Whether a push obtained a segment or found none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentEvent {
    /// The event fit in the current segment.
    None,
    /// A segment was obtained from the pool.
    Acquired,
    /// No pool segment could be had: quota reached or pool empty (an overflow file
    /// may have been used instead).
    Exhausted,
}

/// The result of a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Push {
    /// What became of the event.
    pub outcome: PushOutcome,
    /// Whether a segment was obtained or missed.
    pub segment: SegmentEvent,
    /// The depth mirror after this push, when it changed.
    pub depth: Option<u64>,
}

/// A batch handed out by [`Spool::take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Id to ack or nack it with.
    pub id: u64,
    /// First merged position.
    pub start: u64,
    /// Merged position after the last.
    pub end: u64,
    /// Bytes of its events.
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

/// What [`Spool::take`] found.
pub enum Taken<R> {
    /// A batch, and what `read` returned.
    Batch(Batch, R),
    /// Nothing pending.
    Empty,
    /// The next events are in overflow files not read back yet: call
    /// [`Spool::load`] (blocking I/O, off the routers' paths), then take again.
    NeedsLoad,
}

/// A stripe of an earlier run, as recovery rebuilt it.
pub struct RecoveredStripe {
    /// Its name.
    pub key: StripeKey,
    /// Its segments, in order (gaps are in `lost`).
    pub chain: Vec<Box<Segment>>,
    /// Records it appended.
    pub end: u64,
    /// Every record below is released.
    pub released: u64,
    /// Every record below was handed out before the crash.
    pub taken: u64,
    /// Records known lost (counted), ascending, disjoint, within `released..end`.
    pub lost: Vec<(u64, u64)>,
}

/// A subject's spool as recovery rebuilt it.
pub struct Recovered {
    /// Its meta file (its state already rewritten for this run).
    pub meta: Option<MetaFile>,
    /// Counters, losses found at recovery included.
    pub counters: Counters,
    /// Its stripes.
    pub stripes: Vec<RecoveredStripe>,
}

/// Where a reader's next record is.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    seq: u64,
    seg_seq: u64,
    offset: usize,
    /// The segment's readable bytes and end, as last found: the next record is read
    /// from here without looking the segment up again.
    data: *const u8,
    len: usize,
    seg_end: u64,
}

/// What a reader has next.
enum Head {
    /// Nothing (as of the last cut).
    None,
    /// Records up to this sequence are known lost: skip them.
    Lost(u64),
    /// Records up to this sequence are not where they should be (a segment is gone,
    /// or ends early): count them lost, then skip them.
    Gap(u64, LostReason),
    /// The segment holding the next record must be read back first.
    Load,
    /// A record.
    Record {
        stamp: u64,
        len: usize,
        size: usize,
        seg_seq: u64,
        offset: usize,
    },
}

/// A reader's next record, in a merge: its order key `(epoch, stamp, reader)` and
/// place.
#[derive(Clone, Copy)]
struct HeadAt {
    key: (u32, u64, u32),
    len: usize,
    size: usize,
    seg_seq: u64,
    offset: usize,
}

/// The drain side's view of one stripe.
struct Reader {
    key: StripeKey,
    /// The live stripe (this run's), else null.
    stripe: *const Stripe,
    live_slot: Option<u16>,
    chain: VecDeque<Arc<Segment>>,
    /// Records known (as of the last cut, for a live stripe).
    end: u64,
    /// Sequence of the segment that was open at the last cut, and its readable bytes.
    open_seg: Option<(u64, usize)>,
    released: u64,
    taken: u64,
    redeliver_until: u64,
    lost: VecDeque<(u64, u64)>,
    cursor: Option<Cursor>,
}

// SAFETY: `stripe` points at a stripe owned by the same spool, freed only when the
// spool is dropped (after the drain state).
unsafe impl Send for Reader {}

impl Reader {
    fn new(key: StripeKey, stripe: *const Stripe, live_slot: Option<u16>) -> Self {
        Self {
            key,
            stripe,
            live_slot,
            chain: VecDeque::new(),
            end: 0,
            open_seg: None,
            released: 0,
            taken: 0,
            redeliver_until: 0,
            lost: VecDeque::new(),
            cursor: None,
        }
    }

    fn live(&self) -> bool {
        !self.stripe.is_null()
    }

    fn seg_index(&self, seg_seq: u64) -> Option<usize> {
        let i = self.chain.partition_point(|s| s.seg_seq() < seg_seq);
        (i < self.chain.len() && self.chain[i].seg_seq() == seg_seq).then_some(i)
    }

    /// Sequence after the last record of chain segment `i`: its sealed count, or for
    /// the open segment the cut's end. Never clamped to the cut: a segment sealed
    /// after the cut holds records beyond it, and must not look released before they
    /// are (reads are bounded by `end` elsewhere).
    fn seg_end(&self, i: usize) -> u64 {
        let s = &self.chain[i];
        match s.sealed() {
            Some(n) => s.first_seq() + n,
            None => self.end,
        }
    }

    fn data<'a>(&self, s: &'a Segment) -> Option<&'a [u8]> {
        let len = match self.open_seg {
            Some((seq, bytes)) if seq == s.seg_seq() => bytes,
            _ => s.geometry().data_bytes as usize,
        };
        s.data(len)
    }

    /// The segment holding record `seq`, if the chain has it.
    fn find(&self, seq: u64) -> Option<usize> {
        let i = self.chain.partition_point(|s| s.first_seq() <= seq);
        if i == 0 {
            return None;
        }
        let i = i - 1;
        (seq < self.seg_end(i)).then_some(i)
    }

    fn head(&mut self) -> Head {
        if self.taken >= self.end {
            return Head::None;
        }
        if let Some(&(a, b)) = self.lost.front() {
            if a <= self.taken {
                return Head::Lost(b.min(self.end).max(self.taken + 1));
            }
        }
        let stop = self
            .lost
            .front()
            .map_or(self.end, |&(a, _)| a.min(self.end));
        // The next record of the segment the cursor is in: no lookup.
        if let Some(c) = self.cursor {
            if c.seq == self.taken && c.seq < c.seg_end && c.seq < stop {
                // SAFETY: the cursor's segment holds record `taken`, so it is in the
                // chain, neither released, unmapped nor unloaded (those only touch
                // segments with no record in `released..=taken`, and drop the cursor
                // when they touch its segment), and `len` bytes of it were readable.
                let data = unsafe { std::slice::from_raw_parts(c.data, c.len) };
                if let Parsed::Valid {
                    stamp,
                    payload,
                    size,
                } = record::parse(data.get(c.offset..).unwrap_or(&[]), false)
                {
                    return Head::Record {
                        stamp,
                        len: payload.len(),
                        size,
                        seg_seq: c.seg_seq,
                        offset: c.offset,
                    };
                }
            }
        }
        let Some(i) = self.find(self.taken) else {
            // Not in any segment: up to the next segment (or the end) is gone.
            let next = self.chain.partition_point(|s| s.first_seq() <= self.taken);
            let until = self
                .chain
                .get(next)
                .map_or(stop, |s| s.first_seq().min(stop));
            return Head::Gap(until.max(self.taken + 1), LostReason::Missing);
        };
        let seg = &self.chain[i];
        let Some(data) = self.data(seg) else {
            return Head::Load;
        };
        let (mut seq, mut off) = match self.cursor {
            Some(c) if c.seg_seq == seg.seg_seq() && c.seq <= self.taken => (c.seq, c.offset),
            _ => (seg.first_seq(), 0),
        };
        let seg_end = self.seg_end(i);
        loop {
            match record::parse(data.get(off..).unwrap_or(&[]), false) {
                Parsed::Valid {
                    stamp,
                    payload,
                    size,
                } => {
                    if seq == self.taken {
                        self.cursor = Some(Cursor {
                            seq,
                            seg_seq: seg.seg_seq(),
                            offset: off,
                            data: data.as_ptr(),
                            len: data.len(),
                            seg_end,
                        });
                        return Head::Record {
                            stamp,
                            len: payload.len(),
                            size,
                            seg_seq: seg.seg_seq(),
                            offset: off,
                        };
                    }
                    seq += 1;
                    off += size;
                }
                Parsed::Corrupt { size } => {
                    seq += 1;
                    off += size;
                }
                Parsed::End | Parsed::Truncated => {
                    // The segment ends before the records it should hold.
                    return Head::Gap(seg_end.min(stop).max(self.taken + 1), LostReason::Truncated);
                }
            }
        }
    }

    fn advance(&mut self, seg_seq: u64, offset: usize, size: usize) {
        self.taken += 1;
        match &mut self.cursor {
            Some(c) if c.seg_seq == seg_seq && c.offset == offset => {
                c.seq = self.taken;
                c.offset = offset + size;
                // At a segment's end, the next record is in the next segment.
                if self.taken >= c.seg_end {
                    self.cursor = None;
                }
            }
            _ => self.cursor = None,
        }
    }

    fn add_lost(&mut self, a: u64, b: u64) {
        let i = self.lost.partition_point(|&(s, _)| s < a);
        self.lost.insert(i, (a, b));
        // Merge neighbours.
        let mut merged: VecDeque<(u64, u64)> = VecDeque::with_capacity(self.lost.len());
        for &(s, e) in &self.lost {
            match merged.back_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push_back((s, e)),
            }
        }
        self.lost = merged;
    }

    fn is_lost(&self, seq: u64) -> bool {
        self.lost.iter().any(|&(a, b)| a <= seq && seq < b)
    }
}

/// The drain side of a spool, under its lock.
struct Drain {
    readers: Vec<Option<Reader>>,
    /// Reader index of each live stripe slot.
    live: [Option<u32>; MAX_STRIPES],
    runs: VecDeque<Run>,
    ranges: VecDeque<Range>,
    head: u64,
    take: u64,
    next_batch: u64,
    counters: Counters,
    in_flight: u64,
    meta: Option<MetaFile>,
    meta_failed: bool,
}

impl Drain {
    fn new() -> Self {
        Self {
            readers: Vec::new(),
            live: [None; MAX_STRIPES],
            runs: VecDeque::new(),
            ranges: VecDeque::new(),
            head: 0,
            take: 0,
            next_batch: 1,
            counters: Counters::default(),
            in_flight: 0,
            meta: None,
            meta_failed: false,
        }
    }

    fn reader(&self, i: u32) -> &Reader {
        self.readers[i as usize].as_ref().expect("a reader in use")
    }

    fn reader_mut(&mut self, i: u32) -> &mut Reader {
        self.readers[i as usize].as_mut().expect("a reader in use")
    }

    fn add_reader(&mut self, r: Reader) -> u32 {
        if let Some(i) = self.readers.iter().position(Option::is_none) {
            self.readers[i] = Some(r);
            i as u32
        } else {
            self.readers.push(Some(r));
            (self.readers.len() - 1) as u32
        }
    }

    /// The cut: every live stripe's lock at once; new segments into the chains, record
    /// counts noted, depth deltas collected. Returns the depth delta.
    fn cut(&mut self) -> u64 {
        let mut guards: Vec<(u32, MutexGuard<'_, crate::stripe::Writer>)> = Vec::new();
        for (i, r) in self.readers.iter().enumerate() {
            if let Some(r) = r {
                if r.live() {
                    // SAFETY: live stripes outlive the drain state (see Reader).
                    let stripe = unsafe { &*r.stripe };
                    guards.push((i as u32, stripe.w.lock()));
                }
            }
        }
        let mut delta = 0;
        let mut updates = Vec::with_capacity(guards.len());
        for (i, w) in guards.iter_mut() {
            delta += std::mem::take(&mut w.depth_delta);
            let open = w.current.as_ref().map(|s| (s.seg_seq(), w.offset));
            updates.push((*i, std::mem::take(&mut w.handoff), w.end, open));
        }
        drop(guards);
        for (i, handoff, end, open) in updates {
            let r = self.reader_mut(i);
            r.chain.extend(handoff);
            r.end = end;
            r.open_seg = open;
            // Sealed overflow segments not being read are unmapped: memory holds the
            // pool, the segments being written and those in use, nothing more.
            let n = r.chain.len();
            let (released, taken) = (r.released, r.taken);
            for k in 0..n.saturating_sub(1) {
                let first = r.chain[k].first_seq();
                let in_use = {
                    let end_k = r.seg_end(k);
                    end_k > released && first <= taken
                };
                let cursor_here = r.cursor.is_some_and(|c| c.seg_seq == r.chain[k].seg_seq());
                let seg = &mut r.chain[k];
                if !in_use && seg.mapped() && matches!(seg.kind(), SegKind::Overflow(_)) {
                    if let Some(s) = Arc::get_mut(seg) {
                        s.unmap();
                        if cursor_here {
                            r.cursor = None;
                        }
                    }
                }
            }
        }
        delta
    }

    fn live_readers(&self) -> impl Iterator<Item = &Reader> {
        self.readers.iter().flatten()
    }

    // ---- ranges --------------------------------------------------------------------

    fn split_at(&mut self, pos: u64) {
        if let Some(i) = self
            .ranges
            .iter()
            .position(|r| r.start < pos && pos < r.end)
        {
            let r = self.ranges[i];
            let head_bytes = self.bytes_between(r.start, pos);
            self.ranges[i].end = pos;
            self.ranges[i].bytes = head_bytes;
            self.ranges.insert(
                i + 1,
                Range {
                    start: pos,
                    bytes: r.bytes.saturating_sub(head_bytes),
                    ..r
                },
            );
        }
    }

    fn find_batch(&self, id: u64) -> Option<usize> {
        self.ranges
            .iter()
            .position(|r| matches!(r.kind, Kind::InFlight { batch, .. } if batch == id))
    }

    fn run_index(&self, pos: u64) -> usize {
        self.runs.partition_point(|r| r.merged + r.len <= pos)
    }

    /// Calls `f(payload)` for each event of merged positions `from..to`.
    fn for_each_event<'a>(&'a self, from: u64, to: u64, mut f: impl FnMut(&'a [u8])) {
        let mut i = self.run_index(from);
        let mut pos = from;
        while pos < to && i < self.runs.len() {
            let run = self.runs[i];
            if run.kind == RunKind::Data {
                let r = self.reader(run.reader);
                let seg = r.seg_index(run.seg_seq).map(|k| &r.chain[k]);
                let data = seg.and_then(|s| r.data(s));
                if let Some(data) = data {
                    let mut off = run.offset as usize;
                    let mut at = run.merged;
                    let stop = (run.merged + run.len).min(to);
                    while at < stop {
                        match record::parse(&data[off..], false) {
                            Parsed::Valid { payload, size, .. } => {
                                if at >= pos {
                                    f(payload);
                                }
                                off += size;
                            }
                            Parsed::Corrupt { size } => off += size,
                            Parsed::End | Parsed::Truncated => break,
                        }
                        at += 1;
                    }
                }
            }
            pos = run.merged + run.len;
            i += 1;
        }
    }

    fn bytes_between(&self, from: u64, to: u64) -> u64 {
        let mut b = 0;
        self.for_each_event(from, to, |p| b += p.len() as u64);
        b
    }

    /// The end of the longest run of events from `start` (at most to `limit`) whose
    /// bytes stay within `max_bytes`; at least one event.
    fn cut_by_bytes(&self, start: u64, limit: u64, max_bytes: u64) -> u64 {
        let mut end = start;
        let mut bytes = 0u64;
        let mut stop = false;
        self.for_each_event(start, limit, |p| {
            if stop {
                return;
            }
            let b = p.len() as u64;
            if end > start && bytes + b > max_bytes {
                stop = true;
                return;
            }
            bytes += b;
            end += 1;
        });
        end.max(start + 1).min(limit)
    }

    /// Whether every segment holding merged positions `from..to` is readable now.
    fn readable(&self, from: u64, to: u64) -> bool {
        let mut i = self.run_index(from);
        while i < self.runs.len() && self.runs[i].merged < to {
            let run = self.runs[i];
            if run.kind == RunKind::Data {
                let r = self.reader(run.reader);
                match r.seg_index(run.seg_seq) {
                    Some(k) if r.chain[k].readable() => {}
                    _ => return false,
                }
            }
            i += 1;
        }
        true
    }

    // ---- the merge -----------------------------------------------------------------

    fn push_run(&mut self, run: Run) {
        if let Some(last) = self.runs.back_mut() {
            if last.kind == run.kind
                && last.reader == run.reader
                && last.seg_seq == run.seg_seq
                && last.seq + last.len == run.seq
                && last.merged + last.len == run.merged
            {
                last.len += run.len;
                last.bytes += run.bytes;
                return;
            }
        }
        self.runs.push_back(run);
    }

    /// Skips records `taken..until` of reader `i` (already counted): a done run.
    fn skip(&mut self, i: u32, until: u64) {
        let r = self.reader_mut(i);
        let seq = r.taken;
        let n = until - seq;
        r.taken = until;
        r.cursor = None;
        while r.lost.front().is_some_and(|&(_, b)| b <= until) {
            r.lost.pop_front();
        }
        if let Some(front) = r.lost.front_mut() {
            if front.0 < until {
                front.0 = until;
            }
        }
        let merged = self.take;
        self.push_run(Run {
            merged,
            len: n,
            reader: i,
            seq,
            seg_seq: u64::MAX,
            offset: 0,
            bytes: 0,
            kind: RunKind::Skip,
        });
        self.ranges.push_back(Range {
            start: merged,
            end: merged + n,
            kind: Kind::Done(How::Skipped),
            bytes: 0,
        });
        self.take += n;
    }

    /// Counts records `a..b` of reader `i` as lost for `reason`, once.
    fn count_lost(&mut self, i: u32, a: u64, b: u64, reason: LostReason, spool: &Spool) -> u64 {
        let r = self.reader_mut(i);
        let already: u64 = r
            .lost
            .iter()
            .map(|&(x, y)| y.min(b).saturating_sub(x.max(a)))
            .sum();
        let n = (b - a) - already;
        r.add_lost(a, b);
        self.counters.lost[reason as usize] += n;
        spool.depth.fetch_sub(
            n.min(spool.depth.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        n
    }

    /// Merges up to `max_events` (beyond the first, `max_bytes`) new records into the
    /// merged sequence, after `take`. Returns the events merged, their bytes, and
    /// whether a segment must be loaded first.
    fn merge(
        &mut self,
        spool: &Spool,
        store: &Store,
        max_events: u64,
        max_bytes: u64,
        subject: &[u8],
        handing_out: bool,
    ) -> (u64, u64, bool) {
        let mut events = 0u64;
        let mut bytes = 0u64;
        let start = self.take;
        // Heads of readers: (epoch, stamp, reader), with the record's place.
        let mut heads: Vec<HeadAt> = Vec::new();
        let mut i = 0;
        while i < self.readers.len() {
            let Some(r) = self.readers[i].as_mut() else {
                i += 1;
                continue;
            };
            let epoch = r.key.epoch;
            match r.head() {
                Head::None => i += 1,
                Head::Lost(until) => {
                    self.skip(i as u32, until);
                }
                Head::Gap(until, reason) => {
                    let a = self.reader(i as u32).taken;
                    let n = self.count_lost(i as u32, a, until, reason, spool);
                    if n > 0 {
                        store.report(Report {
                            level: Level::Warning,
                            kind: reason.name(),
                            subject: Some(subject.to_vec()),
                            message: format!(
                                "breakwater spool of {}: {n} events ({}) not found where they \
                                 were written; counted as lost ({})",
                                String::from_utf8_lossy(subject),
                                reason.name(),
                                reason.name()
                            ),
                        });
                    }
                    self.skip(i as u32, until);
                }
                Head::Load => return (0, 0, true),
                Head::Record {
                    stamp,
                    len,
                    size,
                    seg_seq,
                    offset,
                } => {
                    heads.push(HeadAt {
                        key: (epoch, stamp, i as u32),
                        len,
                        size,
                        seg_seq,
                        offset,
                    });
                    i += 1;
                }
            }
        }
        let merged_base = self.take;
        debug_assert_eq!(merged_base, start + (self.take - start));
        while !heads.is_empty() && events < max_events {
            let (k, _) = heads
                .iter()
                .enumerate()
                .min_by_key(|(_, h)| h.key)
                .expect("non-empty");
            let HeadAt {
                key: (_, _, ri),
                len,
                size,
                seg_seq,
                offset,
            } = heads[k];
            if events > 0 && bytes + len as u64 > max_bytes {
                break;
            }
            let merged = self.take + events;
            let r = self.reader_mut(ri);
            let seq = r.taken;
            if handing_out && seq < r.redeliver_until {
                self.counters.redelivered += 1;
            }
            let r = self.reader_mut(ri);
            r.advance(seg_seq, offset, size);
            self.push_run(Run {
                merged,
                len: 1,
                reader: ri,
                seq,
                seg_seq,
                offset: offset as u32,
                bytes: len as u64,
                kind: RunKind::Data,
            });
            events += 1;
            bytes += len as u64;
            let r = self.reader_mut(ri);
            let epoch = r.key.epoch;
            match r.head() {
                Head::Record {
                    stamp,
                    len,
                    size,
                    seg_seq,
                    offset,
                } => {
                    heads[k] = HeadAt {
                        key: (epoch, stamp, ri),
                        len,
                        size,
                        seg_seq,
                        offset,
                    }
                }
                Head::None => {
                    heads.swap_remove(k);
                }
                // Lost records, a gap, or a segment to load: this reader's next record
                // may be older than the others' heads; the batch ends here.
                _ => break,
            }
        }
        (events, bytes, false)
    }

    /// Discards (as `drop_oldest`) the oldest pending events so that one pool segment
    /// is released, and returns it with the events and bytes discarded. Nacked events
    /// go first (they are the oldest pending); then the pending records of the pool
    /// segment, among the stripes' sealed front segments, whose first pending record is
    /// oldest. Discarded records need no order among themselves, so a stripe's front
    /// segment can be discarded alone. Discards nothing and returns `None` when a batch
    /// in flight pins the oldest records (the durable cursor cannot pass it) or no
    /// sealed pool segment holds pending records.
    fn make_room(&mut self, spool: &Spool, store: &Store) -> (Option<Box<Segment>>, u64, u64) {
        let delta = self.cut();
        spool.depth.fetch_add(delta, Ordering::Relaxed);
        if self
            .ranges
            .iter()
            .any(|r| matches!(r.kind, Kind::InFlight { .. }))
        {
            return (None, 0, 0);
        }
        // The victim: a reader whose front segment is a sealed pool segment.
        let mut victim: Option<(u32, (u32, u64))> = None;
        for i in 0..self.readers.len() {
            let Some(r) = self.readers[i].as_mut() else {
                continue;
            };
            let Some(front) = r.chain.front() else {
                continue;
            };
            if front.sealed().is_none() || matches!(front.kind(), SegKind::Overflow(_)) {
                continue;
            }
            let epoch = r.key.epoch;
            let key = match r.head() {
                Head::Record { stamp, .. } => (epoch, stamp),
                // Nothing pending to read in it (all taken, or lost): it frees once the
                // nacked ranges are discarded.
                _ => (0, 0),
            };
            if victim.map_or(true, |(_, k)| key < k) {
                victim = Some((i as u32, key));
            }
        }
        let Some((vi, _)) = victim else {
            return (None, 0, 0);
        };
        let mut events = 0;
        let mut bytes = 0;
        for k in 0..self.ranges.len() {
            if self.ranges[k].kind == Kind::Nacked {
                let r = self.ranges[k];
                self.ranges[k].kind = Kind::Done(How::Dropped);
                events += r.end - r.start;
                bytes += r.bytes;
            }
        }
        // The victim's never-taken records of its front segment.
        let start = self.take;
        let mut n = 0;
        let mut b = 0;
        let mut lost_until = None;
        loop {
            let r = self.reader_mut(vi);
            if r.taken >= r.seg_end(0) {
                break;
            }
            match r.head() {
                Head::Record {
                    len,
                    size,
                    seg_seq,
                    offset,
                    ..
                } => {
                    let seq = r.taken;
                    r.advance(seg_seq, offset, size);
                    self.push_run(Run {
                        merged: start + n,
                        len: 1,
                        reader: vi,
                        seq,
                        seg_seq,
                        offset: offset as u32,
                        bytes: len as u64,
                        kind: RunKind::Data,
                    });
                    n += 1;
                    b += len as u64;
                }
                Head::Lost(until) | Head::Gap(until, _) => {
                    // Records not there: count them lost first (a gap), skip them below.
                    if let Head::Gap(until, reason) = self.reader_mut(vi).head() {
                        let a = self.reader(vi).taken;
                        self.count_lost(vi, a, until, reason, spool);
                    }
                    lost_until = Some(until);
                    break;
                }
                Head::None | Head::Load => break,
            }
        }
        if n > 0 {
            self.ranges.push_back(Range {
                start,
                end: start + n,
                kind: Kind::Done(How::Dropped),
                bytes: b,
            });
            self.take = start + n;
            events += n;
            bytes += b;
        }
        if let Some(until) = lost_until {
            self.skip(vi, until);
        }
        let mut freed = Vec::new();
        self.release(spool, store, Some(&mut freed));
        let seg = freed.pop();
        for other in freed {
            spool.segments_held.fetch_sub(1, Ordering::Relaxed);
            store.pool().give(other);
        }
        self.persist();
        (seg, events, bytes)
    }

    // Boxed: segments move between the pool's queue and `keep` without copying.
    #[allow(clippy::vec_box)]
    /// Moves `head` past done ranges, each stripe's `released` with it, persists the
    /// cursors, then gives back every segment whose records are all released. Pool
    /// segments go to `keep` when given (for `drop_oldest`), else back to the pool.
    /// Returns the pool segments freed.
    fn release(
        &mut self,
        spool: &Spool,
        store: &Store,
        mut keep: Option<&mut Vec<Box<Segment>>>,
    ) -> usize {
        while let Some(&r) = self.ranges.front() {
            let Kind::Done(how) = r.kind else {
                break;
            };
            let n = r.end - r.start;
            match how {
                How::Delivered => {
                    self.counters.delivered += n;
                    self.counters.delivered_bytes += r.bytes;
                }
                How::Dropped => {
                    self.counters.dropped_oldest += n;
                    self.counters.dropped_oldest_bytes += r.bytes;
                }
                How::Skipped => {}
            }
            if how != How::Skipped {
                spool.depth.fetch_sub(
                    n.min(spool.depth.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
            self.head = r.end;
            self.ranges.pop_front();
        }
        let mut touched: Vec<u32> = Vec::new();
        while let Some(run) = self.runs.front() {
            if run.merged + run.len > self.head {
                break;
            }
            let run = *run;
            self.runs.pop_front();
            let r = self.reader_mut(run.reader);
            r.released = r.released.max(run.seq + run.len);
            if !touched.contains(&run.reader) {
                touched.push(run.reader);
            }
        }
        // A live stripe whose every record is released gives up its open segment, so
        // that an idle subject holds no pool segment (taking the stripe's lock: drain
        // lock first, then stripe locks, as in the cut).
        for (i, r) in self.readers.iter_mut().enumerate() {
            let Some(r) = r else { continue };
            if !r.live() || r.released < r.end {
                continue;
            }
            let Some(back) = r.chain.back() else { continue };
            if back.sealed().is_some() {
                continue;
            }
            // SAFETY: live stripes outlive the drain state.
            let stripe = unsafe { &*r.stripe };
            let mut w = stripe.w.lock();
            let same = w.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, back));
            if same && w.end == r.end && w.handoff.is_empty() {
                if let Some(cur) = w.current.take() {
                    cur.seal(u64::from(w.records));
                }
                r.open_seg = None;
                if !touched.contains(&(i as u32)) {
                    touched.push(i as u32);
                }
            }
        }
        // The cursors are durable before any segment they passed is freed: a segment
        // freed first (and reused) with the old cursor persisted would be found
        // missing after a crash in between.
        self.persist();
        let mut freed = 0;
        for i in touched {
            let r = self.readers[i as usize].as_mut().expect("a reader");
            while r.lost.front().is_some_and(|&(_, b)| b <= r.released) {
                r.lost.pop_front();
            }
            while let Some(front) = r.chain.front() {
                // A live stripe's open segment may still be written.
                if r.live() && front.sealed().is_none() {
                    break;
                }
                if r.seg_end(0) > r.released {
                    break;
                }
                let arc = r.chain.pop_front().expect("non-empty");
                if r.cursor.is_some_and(|c| c.seg_seq == arc.seg_seq()) {
                    r.cursor = None;
                }
                match Arc::try_unwrap(arc) {
                    Ok(mut seg) => {
                        seg.unload();
                        match seg.kind() {
                            SegKind::Overflow(_) => {
                                spool.disk_bytes.fetch_sub(
                                    seg.geometry().image_bytes() as u64,
                                    Ordering::Relaxed,
                                );
                                store.discard(seg);
                            }
                            SegKind::Pool(_) | SegKind::Anon => {
                                freed += 1;
                                match keep.as_deref_mut() {
                                    Some(k) => k.push(Box::new(seg)),
                                    None => {
                                        spool.segments_held.fetch_sub(1, Ordering::Relaxed);
                                        store.pool().give(Box::new(seg));
                                    }
                                }
                            }
                        }
                    }
                    Err(arc) => {
                        // Still referenced (a load reading its file right now; kept
                        // for the next release).
                        r.chain.push_front(arc);
                        break;
                    }
                }
            }
            // A stripe of an earlier run with everything released is forgotten (its
            // counts are in the base counters already).
            if !r.live() && r.released >= r.end && r.chain.is_empty() {
                self.readers[i as usize] = None;
            }
        }
        freed
    }

    fn persist(&mut self) {
        let Some(meta) = self.meta.as_mut() else {
            return;
        };
        let state = State {
            counters: self.counters.clone(),
            stripes: self
                .readers
                .iter()
                .flatten()
                .map(|r| StripeState {
                    epoch: r.key.epoch,
                    index: r.key.index,
                    live: r.live_slot,
                    end: if r.live() { 0 } else { r.end },
                    released: r.released,
                    taken: r.taken.max(r.redeliver_until),
                    lost: r.lost.iter().copied().collect(),
                })
                .collect(),
        };
        meta.write_state(&state);
    }
}

/// A subject's spool.
pub struct Spool {
    table: OnceLock<Box<[AtomicPtr<Stripe>]>>,
    stripes_created: AtomicU32,
    depth: CachePadded<AtomicU64>,
    segments_held: AtomicU32,
    disk_bytes: AtomicU64,
    disk_full_reported: std::sync::atomic::AtomicBool,
    /// Set by [`Spool::close`] under every stripe's lock; read under a stripe's lock.
    closed: std::sync::atomic::AtomicBool,
    /// Refusals when no stripe could be made (no meta file could be created).
    orphan: crate::meta::LiveSlot,
    drain: Mutex<Drain>,
}

impl Default for Spool {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(table) = self.table.get() {
            for slot in table.iter() {
                let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
                if !p.is_null() {
                    // SAFETY: every stripe pointer comes from `Box::into_raw` in
                    // `stripe`, and `&mut self` means no reference to it is alive.
                    drop(unsafe { Box::from_raw(p) });
                }
            }
        }
    }
}

impl Spool {
    /// An empty spool.
    pub fn new() -> Self {
        Self {
            table: OnceLock::new(),
            stripes_created: AtomicU32::new(0),
            depth: CachePadded::new(AtomicU64::new(0)),
            segments_held: AtomicU32::new(0),
            disk_bytes: AtomicU64::new(0),
            disk_full_reported: std::sync::atomic::AtomicBool::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
            orphan: crate::meta::LiveSlot::new(),
            drain: Mutex::new(Drain::new()),
        }
    }

    /// The depth mirror: spooled events, as the backpressure rules see them (may lag
    /// the exact count by up to [`LAZY_BATCH`] per stripe while far below every
    /// threshold; see [`Spool::stats`] for the exact count).
    #[inline]
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::Relaxed)
    }

    /// Pool segments held.
    #[inline]
    pub fn segments(&self) -> u32 {
        self.segments_held.load(Ordering::Relaxed)
    }

    /// Installs what recovery found (a fresh spool only).
    pub fn restore(&self, rec: Recovered) {
        let mut d = self.drain.lock();
        debug_assert!(d.readers.is_empty());
        d.meta = rec.meta;
        d.counters = rec.counters;
        let mut pending = 0u64;
        for s in rec.stripes {
            let mut r = Reader::new(s.key, std::ptr::null(), None);
            for seg in s.chain {
                match seg.kind() {
                    SegKind::Overflow(_) => {
                        self.disk_bytes
                            .fetch_add(seg.geometry().image_bytes() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        self.segments_held.fetch_add(1, Ordering::Relaxed);
                    }
                }
                r.chain.push_back(Arc::from(seg));
            }
            r.end = s.end;
            r.released = s.released;
            r.taken = s.released;
            r.redeliver_until = s.taken.max(s.released);
            r.lost = s.lost.into_iter().collect();
            let lost: u64 = r.lost.iter().map(|&(a, b)| b - a).sum();
            pending += (r.end - r.released).saturating_sub(lost);
            d.add_reader(r);
        }
        self.depth.store(pending, Ordering::Relaxed);
        d.persist();
    }

    fn table(&self) -> &[AtomicPtr<Stripe>] {
        self.table.get_or_init(|| {
            (0..MAX_STRIPES)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect()
        })
    }

    /// This thread's stripe, created on first use (with the subject's meta file, when
    /// there is a directory). `None` when a durable store cannot create the meta file.
    #[inline]
    fn stripe(&self, name: &[u8], store: &Store) -> Option<&Stripe> {
        let idx = thread_index() % MAX_STRIPES;
        let p = self.table()[idx].load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: stripes live until the spool is dropped.
            return Some(unsafe { &*p });
        }
        self.create_stripe(idx, name, store)
    }

    #[cold]
    fn create_stripe(&self, idx: usize, name: &[u8], store: &Store) -> Option<&Stripe> {
        let mut d = self.drain.lock();
        let p = self.table()[idx].load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: as in `stripe`.
            return Some(unsafe { &*p });
        }
        if self.closed.load(Ordering::Relaxed) {
            // No stripe (and no meta file) for a closed spool; `push` answers Removed.
            return None;
        }
        if d.meta.is_none() && store.dir().is_some() && (!d.meta_failed || store.may_try()) {
            match store.create_meta(name) {
                Ok(m) => {
                    d.meta = Some(m);
                    d.meta_failed = false;
                }
                Err(_) => d.meta_failed = true,
            }
        }
        if d.meta.is_none() && store.durable() {
            return None;
        }
        let key = StripeKey {
            epoch: store.epoch(),
            index: idx as u16,
        };
        let claimed = d
            .meta
            .as_mut()
            .and_then(|m| m.claim_slot(key.epoch, key.index));
        // SAFETY: a claimed slot lives in the meta mapping, owned by the drain state,
        // which outlives the stripe (freed in Spool's drop, before the fields).
        let stripe = Box::new(unsafe { Stripe::new(key, claimed.map(|(_, p)| p)) });
        let p = Box::into_raw(stripe);
        let mut r = Reader::new(key, p, claimed.map(|(i, _)| i));
        r.end = 0;
        let ri = d.add_reader(r);
        d.live[idx] = Some(ri);
        d.persist();
        self.table()[idx].store(p, Ordering::Release);
        self.stripes_created.fetch_add(1, Ordering::Relaxed);
        // SAFETY: just stored; lives until the spool is dropped.
        Some(unsafe { &*p })
    }

    /// Offers `event` to the spool. `quota` is the most pool segments this spool may
    /// hold; `lazy_limit` the depth below which the depth mirror may lag (the
    /// subject's recovery depth: no rule changes the state below it).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn push(
        &self,
        name: &[u8],
        store: &Store,
        event: &[u8],
        quota: u32,
        drop_policy: DropPolicy,
        overflow: Overflow,
        lazy_limit: u64,
    ) -> Push {
        let Some(stripe) = self.stripe(name, store) else {
            if self.closed.load(Ordering::Relaxed) {
                return Push {
                    outcome: PushOutcome::Removed,
                    segment: SegmentEvent::None,
                    depth: None,
                };
            }
            self.orphan.add(live::UNAVAILABLE, 1);
            self.orphan.add(live::UNAVAILABLE_BYTES, event.len() as u64);
            store.refused();
            return Push {
                outcome: PushOutcome::Unavailable,
                segment: SegmentEvent::None,
                depth: None,
            };
        };
        let mut w = stripe.w.lock();
        if self.closed.load(Ordering::Relaxed) {
            return Push {
                outcome: PushOutcome::Removed,
                segment: SegmentEvent::None,
                depth: None,
            };
        }
        let mut segment = SegmentEvent::None;
        if !stripe.try_append(&mut w, event) {
            match self.roll(stripe, &mut w, name, store, quota, overflow) {
                Ok(ev) => {
                    segment = ev;
                    let fit = stripe.try_append(&mut w, event);
                    debug_assert!(fit, "an event that fits an empty segment did not");
                }
                Err(PushOutcome::Refused) if drop_policy == DropPolicy::DropOldest => {
                    drop(w);
                    return self.push_after_drop(stripe, name, store, event, lazy_limit);
                }
                Err(outcome) => {
                    let counter = match outcome {
                        PushOutcome::Unavailable => {
                            store.refused();
                            live::UNAVAILABLE
                        }
                        PushOutcome::DiskFull => live::DISK_FULL,
                        _ => live::REFUSED,
                    };
                    stripe.refuse(counter, event.len());
                    let segment = if outcome == PushOutcome::Unavailable {
                        SegmentEvent::None
                    } else {
                        SegmentEvent::Exhausted
                    };
                    return Push {
                        outcome,
                        segment,
                        depth: None,
                    };
                }
            }
        }
        let depth = self.flush_depth(&mut w, lazy_limit, segment != SegmentEvent::None);
        Push {
            outcome: PushOutcome::Accepted,
            segment,
            depth,
        }
    }

    #[inline]
    fn flush_depth(
        &self,
        w: &mut crate::stripe::Writer,
        lazy_limit: u64,
        force: bool,
    ) -> Option<u64> {
        let d = self.depth.load(Ordering::Relaxed);
        let margin = u64::from(self.stripes_created.load(Ordering::Relaxed)) * LAZY_BATCH;
        if force || w.depth_delta >= LAZY_BATCH || d + margin >= lazy_limit {
            let delta = std::mem::take(&mut w.depth_delta);
            Some(self.depth.fetch_add(delta, Ordering::Relaxed) + delta)
        } else {
            None
        }
    }

    /// A new segment for `stripe`: from the pool under the quota, else an overflow
    /// file, else the reason there is none.
    #[cold]
    fn roll(
        &self,
        stripe: &Stripe,
        w: &mut crate::stripe::Writer,
        name: &[u8],
        store: &Store,
        quota: u32,
        overflow: Overflow,
    ) -> Result<SegmentEvent, PushOutcome> {
        let r = self.try_roll(stripe, w, name, store, quota, overflow);
        if r.is_err() {
            // The writer lets go of its full segment: once its records are released it
            // can go back to the pool (or be reused by drop_oldest).
            if let Some(cur) = w.current.take() {
                cur.seal(u64::from(w.records));
            }
        }
        r
    }

    fn try_roll(
        &self,
        stripe: &Stripe,
        w: &mut crate::stripe::Writer,
        name: &[u8],
        store: &Store,
        quota: u32,
        overflow: Overflow,
    ) -> Result<SegmentEvent, PushOutcome> {
        let mut incomplete = false;
        if self.segments_held.fetch_add(1, Ordering::Relaxed) < quota {
            if let Some(mut seg) = store.pool().take() {
                seg.activate(&stripe.next_identity(w, store.owner(), name));
                stripe.install(w, seg);
                return Ok(SegmentEvent::Acquired);
            }
            incomplete = store.durable() && store.pool().missing_segments() > 0;
        }
        self.segments_held.fetch_sub(1, Ordering::Relaxed);
        if overflow == Overflow::Disk && store.dir().is_some() {
            let image = store.geometry().image_bytes() as u64;
            let held = self.disk_bytes.load(Ordering::Relaxed);
            if held + image > store.disk_max_bytes() {
                if !self.disk_full_reported.swap(true, Ordering::Relaxed) {
                    store.report(Report {
                        level: Level::Warning,
                        kind: "disk_full",
                        subject: Some(name.to_vec()),
                        message: format!(
                            "breakwater spool of {:?} reached disk_max_bytes ({held} bytes of \
                             overflow files): further events are refused (pool_exhausted, \
                             counted as dropped) until it drains",
                            String::from_utf8_lossy(name)
                        ),
                    });
                }
                return Err(PushOutcome::DiskFull);
            }
            self.disk_full_reported.store(false, Ordering::Relaxed);
            if !store.may_try() {
                return Err(PushOutcome::Unavailable);
            }
            let id = stripe.next_identity(w, store.owner(), name);
            return match store.create_overflow(&id) {
                Ok(seg) => {
                    self.disk_bytes.fetch_add(image, Ordering::Relaxed);
                    stripe.install(w, seg);
                    Ok(SegmentEvent::Exhausted)
                }
                Err(_) => Err(PushOutcome::Unavailable),
            };
        }
        if incomplete {
            return Err(PushOutcome::Unavailable);
        }
        Err(PushOutcome::Refused)
    }

    #[cold]
    fn push_after_drop(
        &self,
        stripe: &Stripe,
        name: &[u8],
        store: &Store,
        event: &[u8],
        lazy_limit: u64,
    ) -> Push {
        let (freed, events, bytes) = {
            let mut drain = self.drain.lock();
            let (mut freed, mut events, mut bytes) = drain.make_room(self, store);
            // Discarding the nacked ranges alone may free no segment: discard on (the
            // next victim) until one is freed or nothing more can go, so that what was
            // discarded is answered as `AcceptedAfterDrop`, not behind a refusal.
            while freed.is_none() {
                let (f, e, b) = drain.make_room(self, store);
                if e == 0 && f.is_none() {
                    break;
                }
                freed = f;
                events += e;
                bytes += b;
            }
            (freed, events, bytes)
        };
        let mut w = stripe.w.lock();
        if self.closed.load(Ordering::Relaxed) {
            // Closed meanwhile (everything discarded and the subject removed).
            if let Some(seg) = freed {
                self.segments_held.fetch_sub(1, Ordering::Relaxed);
                store.pool().give(seg);
            }
            return Push {
                outcome: PushOutcome::Removed,
                segment: SegmentEvent::None,
                depth: None,
            };
        }
        if stripe.try_append(&mut w, event) {
            if let Some(seg) = freed {
                self.segments_held.fetch_sub(1, Ordering::Relaxed);
                store.pool().give(seg);
            }
        } else if let Some(mut seg) = freed {
            seg.activate(&stripe.next_identity(&w, store.owner(), name));
            stripe.install(&mut w, seg);
            let fit = stripe.try_append(&mut w, event);
            debug_assert!(fit);
        } else {
            // make_room discards only what frees a segment.
            debug_assert_eq!(events, 0, "events discarded without room made");
            stripe.refuse(live::REFUSED, event.len());
            return Push {
                outcome: PushOutcome::Refused,
                segment: SegmentEvent::Exhausted,
                depth: Some(self.depth()),
            };
        }
        let depth = self.flush_depth(&mut w, lazy_limit, true);
        Push {
            outcome: if events > 0 {
                PushOutcome::AcceptedAfterDrop { events, bytes }
            } else {
                PushOutcome::Accepted
            },
            segment: SegmentEvent::Exhausted,
            depth,
        }
    }

    /// Hands out the oldest pending events, at most `max_events` and, beyond the first,
    /// at most `max_bytes`, as a batch owned by `owner`; `read` sees the batch's event
    /// payloads in order while the spool is locked. Nacked events come first.
    pub fn take<R>(
        &self,
        name: &[u8],
        store: &Store,
        max_events: u64,
        max_bytes: u64,
        owner: u64,
        read: impl FnOnce(&Batch, &mut dyn Iterator<Item = &[u8]>) -> R,
    ) -> Taken<R> {
        if max_events == 0 {
            return Taken::Empty;
        }
        let mut d = self.drain.lock();
        let delta = d.cut();
        self.depth.fetch_add(delta, Ordering::Relaxed);
        let id = d.next_batch;
        let kind = Kind::InFlight { batch: id, owner };
        let (start, end) =
            if let Some(r) = d.ranges.iter().find(|r| r.kind == Kind::Nacked).copied() {
                if !d.readable(r.start, r.end) {
                    return Taken::NeedsLoad;
                }
                let end = d.cut_by_bytes(
                    r.start,
                    r.end.min(r.start.saturating_add(max_events)),
                    max_bytes,
                );
                d.split_at(end);
                if let Some(x) = d.ranges.iter_mut().find(|x| x.start == r.start) {
                    x.kind = kind;
                }
                (r.start, end)
            } else {
                let (n, b, load) = d.merge(self, store, max_events, max_bytes, name, true);
                if n == 0 {
                    // Skipped (lost) records may have freed segments.
                    d.release(self, store, None);
                    d.persist();
                    return if load { Taken::NeedsLoad } else { Taken::Empty };
                }
                let start = d.take;
                d.ranges.push_back(Range {
                    start,
                    end: start + n,
                    kind,
                    bytes: b,
                });
                d.take = start + n;
                (start, start + n)
            };
        d.next_batch += 1;
        let n = end - start;
        d.counters.taken += n;
        d.in_flight += n;
        let r = {
            let view: &Drain = &d;
            let mut payloads: Vec<&[u8]> = Vec::with_capacity(n as usize);
            view.for_each_event(start, end, |p| payloads.push(p));
            let bytes = payloads.iter().map(|p| p.len() as u64).sum();
            let batch = Batch {
                id,
                start,
                end,
                bytes,
            };
            (batch, read(&batch, &mut payloads.iter().copied()))
        };
        let (batch, r) = r;
        d.release(self, store, None);
        d.persist();
        Taken::Batch(batch, r)
    }

    /// Reads back, from their files, the overflow segments the next take needs
    /// (blocking I/O: a dirty scheduler or a thread of its own). Records that fail
    /// their checks are counted lost and reported. Returns the segments loaded.
    ///
    /// The files are read with the drain lock released: a slow disk never holds up
    /// the NIFs that take that lock on normal schedulers (drain, ack, nack, status, a
    /// dead taker's batches going back). The lock is taken twice: once to choose the
    /// segments (shared, so they stay alive meanwhile), once to install the copies of
    /// those still wanted.
    pub fn load(&self, name: &[u8], store: &Store) -> usize {
        let wanted: Vec<(usize, u64, Arc<Segment>, usize)> = {
            let mut d = self.drain.lock();
            let delta = d.cut();
            self.depth.fetch_add(delta, Ordering::Relaxed);
            let mut wanted = Vec::new();
            for (ri, r) in d.readers.iter().enumerate() {
                let Some(r) = r.as_ref() else {
                    continue;
                };
                let (released, taken, end) = (r.released, r.taken, r.end);
                for k in 0..r.chain.len() {
                    let first = r.chain[k].first_seq();
                    let seg_end = r.seg_end(k);
                    let needed = seg_end > released && first <= taken && taken < end
                        || (seg_end > released && first < taken);
                    if needed && !r.chain[k].readable() {
                        let seg = &r.chain[k];
                        let bytes = seg.geometry().data_bytes as usize;
                        wanted.push((ri, seg.seg_seq(), Arc::clone(seg), bytes));
                    }
                }
            }
            wanted
        };
        if wanted.is_empty() {
            return 0;
        }
        // The blocking part, unlocked. Each shared handle is dropped once read, so
        // that the segment can be changed (installed, unmapped, freed) again.
        let copies: Vec<(usize, u64, std::io::Result<crate::segment::Loaded>, String)> = wanted
            .into_iter()
            .map(|(ri, seq, seg, bytes)| {
                let path = seg
                    .path()
                    .map_or_else(String::new, |p| p.display().to_string());
                (ri, seq, seg.read_back(bytes), path)
            })
            .collect();
        let mut d = self.drain.lock();
        let mut loaded = 0;
        let mut by_reader: Vec<(usize, Vec<LostRange>)> = Vec::new();
        for (ri, seq, copy, path) in copies {
            let Some(r) = d.readers.get_mut(ri).and_then(Option::as_mut) else {
                continue;
            };
            // Still in the chain and still unread (released, or loaded by another
            // caller meanwhile: nothing to do).
            let Some(k) = r.chain.iter().position(|s| s.seg_seq() == seq) else {
                continue;
            };
            if r.chain[k].readable() {
                continue;
            }
            let (first, seg_end, released) = (r.chain[k].first_seq(), r.seg_end(k), r.released);
            if r.cursor.is_some_and(|c| c.seg_seq == seq) {
                r.cursor = None;
            }
            let Some(seg) = Arc::get_mut(&mut r.chain[k]) else {
                // Shared again (another load reading it): that one installs it.
                continue;
            };
            let mut found: Vec<LostRange> = Vec::new();
            match copy {
                Ok(copy) => {
                    let got = seg.install(copy);
                    loaded += 1;
                    // Validate what was read: every record up to the segment's end.
                    let data = seg.data(got).unwrap_or(&[]);
                    let mut off = 0;
                    let mut at = first;
                    while at < seg_end {
                        match record::parse(&data[off.min(data.len())..], true) {
                            Parsed::Valid { size, .. } => off += size,
                            Parsed::Corrupt { size } => {
                                found.push((at, at + 1, LostReason::Corrupt));
                                off += size;
                            }
                            Parsed::End | Parsed::Truncated => {
                                found.push((at, seg_end, LostReason::Truncated));
                                break;
                            }
                        }
                        at += 1;
                    }
                }
                Err(e) => {
                    let reason = if e.kind() == std::io::ErrorKind::NotFound {
                        LostReason::Missing
                    } else {
                        LostReason::Unreadable
                    };
                    found.push((first.max(released), seg_end, reason));
                    // Nothing to read: an empty copy, so the chain moves on.
                    seg.install(crate::segment::Loaded::empty());
                    store.report(Report {
                        level: Level::Warning,
                        kind: reason.name(),
                        subject: Some(name.to_vec()),
                        message: format!(
                            "breakwater spool file {path} of {} cannot be read back: {e}",
                            String::from_utf8_lossy(name)
                        ),
                    });
                }
            }
            match by_reader.iter_mut().find(|(i, _)| *i == ri) {
                Some((_, f)) => f.extend(found),
                None => by_reader.push((ri, found)),
            }
        }
        for (ri, found) in by_reader {
            let mut by_reason = [0u64; meta::LOST_REASONS];
            for (a, b, reason) in found {
                by_reason[reason as usize] += d.count_lost(ri as u32, a, b, reason, self);
            }
            let n = by_reason[LostReason::Corrupt as usize];
            if n > 0 {
                store.report(Report {
                    level: Level::Warning,
                    kind: LostReason::Corrupt.name(),
                    subject: Some(name.to_vec()),
                    message: format!(
                        "breakwater spool of {}: {n} corrupt events in an overflow file; \
                         counted as lost (corrupt)",
                        String::from_utf8_lossy(name)
                    ),
                });
            }
        }
        d.persist();
        loaded
    }

    /// Acknowledges batch `id`: its events are delivered and their segments can go
    /// back. Returns how many pool segments went back.
    pub fn ack(&self, store: &Store, id: u64) -> Result<usize, BatchError> {
        let mut d = self.drain.lock();
        let i = d.find_batch(id).ok_or(BatchError::UnknownBatch)?;
        let Range { start, end, .. } = d.ranges[i];
        d.ranges[i].kind = Kind::Done(How::Delivered);
        d.in_flight -= end - start;
        let freed = d.release(self, store, None);
        d.persist();
        Ok(freed)
    }

    /// Returns batch `id` to the spool: its events are handed out again before newer
    /// ones.
    pub fn nack(&self, id: u64) -> Result<u64, BatchError> {
        let mut d = self.drain.lock();
        let i = d.find_batch(id).ok_or(BatchError::UnknownBatch)?;
        let n = nack_at(&mut d, i);
        d.persist();
        Ok(n)
    }

    /// Nacks every batch in flight to `owner` (e.g. a taker that died).
    pub fn nack_owner(&self, owner: u64) -> u64 {
        let mut d = self.drain.lock();
        let mut n = 0;
        for i in 0..d.ranges.len() {
            if matches!(d.ranges[i].kind, Kind::InFlight { owner: o, .. } if o == owner) {
                n += nack_at(&mut d, i);
            }
        }
        if n > 0 {
            d.persist();
        }
        n
    }

    /// Nacks every batch in flight.
    pub fn nack_all(&self) -> u64 {
        let mut d = self.drain.lock();
        let mut n = 0;
        for i in 0..d.ranges.len() {
            if matches!(d.ranges[i].kind, Kind::InFlight { .. }) {
                n += nack_at(&mut d, i);
            }
        }
        if n > 0 {
            d.persist();
        }
        n
    }

    /// Writes the spool's files to disk (`fsync` durability): segments and meta. The
    /// segments are written with the drain lock released (shared handles keep them
    /// alive), so a slow disk does not hold up drain, ack, nack or status; only the
    /// small meta file is written under it.
    pub fn sync(&self) -> std::io::Result<()> {
        let segments: Vec<Arc<Segment>> = {
            let mut d = self.drain.lock();
            let delta = d.cut();
            self.depth.fetch_add(delta, Ordering::Relaxed);
            d.live_readers()
                .flat_map(|r| r.chain.iter().cloned())
                .collect()
        };
        let mut first_err = None;
        for s in segments {
            if let Err(e) = s.sync() {
                first_err.get_or_insert(e);
            }
        }
        let d = self.drain.lock();
        if let Some(m) = &d.meta {
            if let Err(e) = m.sync() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The spool's counts, exact (a cut is made).
    pub fn stats(&self) -> SpoolStats {
        let mut d = self.drain.lock();
        let delta = d.cut();
        self.depth.fetch_add(delta, Ordering::Relaxed);
        let c = &d.counters;
        let mut l = c.base;
        for r in d.live_readers() {
            if r.live() {
                // SAFETY: live stripes outlive the drain state.
                let slot = unsafe { &*r.stripe }.slot();
                for (k, v) in l.iter_mut().enumerate() {
                    *v += slot.get(k);
                }
            }
        }
        for (k, v) in l.iter_mut().enumerate() {
            *v += self.orphan.get(k);
        }
        let lost_events: u64 = c.lost.iter().sum();
        let lost_bytes: u64 = c.lost_bytes.iter().sum();
        let spooled_events =
            l[live::APPENDED].saturating_sub(c.delivered + c.dropped_oldest + lost_events);
        let spooled_bytes = l[live::APPENDED_BYTES]
            .saturating_sub(c.delivered_bytes + c.dropped_oldest_bytes + lost_bytes);
        let mut disk = 0u64;
        let mut overflow_segments = 0u32;
        for r in d.live_readers() {
            for k in 0..r.chain.len() {
                if matches!(r.chain[k].kind(), SegKind::Overflow(_)) {
                    overflow_segments += 1;
                    let first = r.chain[k].first_seq().max(r.released);
                    let end = r.seg_end(k);
                    for seq in first..end {
                        if !r.is_lost(seq) {
                            disk += 1;
                        }
                    }
                }
            }
        }
        SpoolStats {
            enqueued_events: l[live::APPENDED],
            enqueued_bytes: l[live::APPENDED_BYTES],
            delivered_events: c.delivered,
            delivered_bytes: c.delivered_bytes,
            taken_events: c.taken,
            redelivered_events: c.redelivered,
            dropped_newest_events: l[live::REFUSED],
            dropped_newest_bytes: l[live::REFUSED_BYTES],
            dropped_oldest_events: c.dropped_oldest,
            dropped_oldest_bytes: c.dropped_oldest_bytes,
            unavailable_events: l[live::UNAVAILABLE],
            unavailable_bytes: l[live::UNAVAILABLE_BYTES],
            disk_full_events: l[live::DISK_FULL],
            disk_full_bytes: l[live::DISK_FULL_BYTES],
            lost_events: c.lost,
            lost_bytes: c.lost_bytes,
            spooled_events,
            spooled_bytes,
            spooled_disk_events: disk.min(spooled_events),
            in_flight_events: d.in_flight,
            segments: self.segments(),
            overflow_segments,
            stripes: d.live_readers().count() as u32,
        }
    }

    /// Closes the spool for good when nothing waits in it: no event pending (in a
    /// segment or an overflow file, lost ones not yet counted included), none in flight,
    /// no segment held. Checked and set under the drain lock and every stripe's lock at
    /// once, so no push can slip in between: a push that takes its stripe's lock
    /// afterwards, or creates a stripe, answers [`PushOutcome::Removed`]. The meta file
    /// goes to the store's trash (deleted by [`Store::maintain`]); the spool holds no
    /// other file. Returns false, changing nothing, when something waits.
    pub fn close(&self, store: &Store) -> bool {
        let d = self.drain.lock();
        {
            let mut guards = Vec::new();
            for r in d.readers.iter().flatten() {
                if !r.live() {
                    // A stripe of an earlier run is forgotten once all its records are
                    // released: one still here holds something.
                    return false;
                }
                // SAFETY: live stripes outlive the drain state (see Reader).
                let w = unsafe { &*r.stripe }.w.lock();
                if w.end != r.released || w.current.is_some() || !w.handoff.is_empty() {
                    return false;
                }
                guards.push(w);
            }
            if d.in_flight > 0
                || !d.ranges.is_empty()
                || self.segments_held.load(Ordering::Relaxed) > 0
                || self.disk_bytes.load(Ordering::Relaxed) > 0
            {
                return false;
            }
            self.closed.store(true, Ordering::Relaxed);
        }
        // The mapping stays (stripes point into it, and a late `stats` reads it) until
        // the spool is dropped; only the file's name goes.
        if let Some(meta) = d.meta.as_ref() {
            store.trash(meta.path().to_path_buf());
        }
        true
    }

    /// Whether [`Spool::close`] closed it.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Checks every invariant of the module documentation; panics on a violation.
    pub fn check_invariants(&self) {
        let d = self.drain.lock();
        assert!(d.head <= d.take);
        let mut at = d.head;
        let mut in_flight = 0;
        let mut ids = std::collections::HashSet::new();
        for r in &d.ranges {
            assert_eq!(r.start, at, "ranges must tile head..take: {:?}", d.ranges);
            assert!(r.end > r.start, "empty range {r:?}");
            at = r.end;
            if let Kind::InFlight { batch, .. } = r.kind {
                assert!(ids.insert(batch), "batch {batch} twice");
                in_flight += r.end - r.start;
            }
        }
        assert_eq!(at, d.take, "ranges must end at take");
        assert_eq!(in_flight, d.in_flight);
        let mut at = d.head;
        let mut next_seq: std::collections::HashMap<u32, u64> = Default::default();
        for run in &d.runs {
            assert!(run.merged <= at && at < run.merged + run.len || run.merged == at);
            at = run.merged + run.len;
            let expected = next_seq.entry(run.reader).or_insert(run.seq);
            assert_eq!(*expected, run.seq, "a stripe's runs out of order");
            *expected = run.seq + run.len;
        }
        assert_eq!(at.max(d.head), d.take, "runs must cover head..take");
        for r in d.live_readers() {
            assert!(
                r.released <= r.taken && r.taken <= r.end,
                "cursors of {:?}",
                r.key
            );
            for &(a, b) in &r.lost {
                assert!(
                    r.released <= a && a < b && b <= r.end,
                    "lost range {a}..{b}"
                );
            }
        }
    }
}

fn nack_at(d: &mut Drain, i: usize) -> u64 {
    let r = &mut d.ranges[i];
    r.kind = Kind::Nacked;
    let n = r.end - r.start;
    d.counters.redelivered += n;
    d.in_flight -= n;
    n
}

#[cfg(test)]
mod tests;
