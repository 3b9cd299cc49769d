//! A subject's meta file: its counters and drain cursors, kept apart from the data.
//!
//! ```text
//! 0            4096                 12288                20480                 28672
//! ┌────────────┬────────────────────┬────────────────────┬─────────────────────┐
//! │ header     │ state slot A       │ state slot B       │ live area: one       │
//! │ (owner,    │ seq, len, crc,     │ (the other copy)   │ 128-byte slot per    │
//! │  subject)  │ counters, stripes  │                    │ stripe of this run   │
//! └────────────┴────────────────────┴────────────────────┴─────────────────────┘
//! ```
//!
//! Two kinds of writes, for two rates:
//!
//! - **The live area**, per enqueue: each stripe of the current run owns one slot and
//!   stores there how many records it appended (and bytes), and how many events it
//!   refused and why. One writer per slot (the stripe's lock holder), plain stores into
//!   mapped memory, so a crash leaves the last counts in the page cache. The appended
//!   count is stored after the record is published: it may lag the records by one,
//!   never lead them.
//! - **The state**, per take, ack, nack, drop or loss (under the subject's drain lock):
//!   the delivered, dropped, lost and redelivered counters, the counters of stripes of
//!   earlier runs, and each stripe's cursors: `released` (every record below it is
//!   delivered, dropped or lost: the durable ack cursor, moved only after ack), `taken`
//!   (every record below it was handed out at least once: what is redelivered after a
//!   crash is counted as such) and the ranges already counted as lost. Written whole
//!   into the older of two slots with a sequence number and a CRC-32; a reader takes
//!   the valid slot with the higher sequence, so a crash in the middle of a write
//!   leaves the previous state.
//!
//! Invariant (events): `appended = released + pending` per stripe, and for the subject
//! `enqueued = delivered + dropped_oldest + lost + spooled`, where `enqueued` is the
//! `base` counters (stripes of earlier runs, folded in at recovery) plus the live slots.

use crate::segment::{MAX_OWNER, MAX_SUBJECT};
use memmap2::{MmapMut, MmapOptions};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Stripes of one run a subject can have (each has a live slot).
pub const LIVE_SLOTS: usize = 64;
const HEADER_BYTES: usize = 4096;
const STATE_BYTES: usize = 8192;
const LIVE_AT: usize = HEADER_BYTES + 2 * STATE_BYTES;
const SLOT_BYTES: usize = 128;
/// Bytes of a meta file.
pub const FILE_BYTES: usize = LIVE_AT + LIVE_SLOTS * SLOT_BYTES;
const MAGIC: [u8; 8] = *b"BWSMETA1";
const VERSION: u32 = 1;

/// Why events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum LostReason {
    /// A record failed its checksum or length check.
    Corrupt,
    /// A file was cut short: records known to exist were not in it.
    Truncated,
    /// A file was gone: records known to exist were nowhere.
    Missing,
    /// Held in memory only (`durability: :memory`) when the node stopped or crashed.
    Memory,
    /// A file could not be read (I/O error).
    Unreadable,
}

/// Number of [`LostReason`]s.
pub const LOST_REASONS: usize = 5;

impl LostReason {
    /// Every reason, in index order.
    pub const ALL: [LostReason; LOST_REASONS] = [
        LostReason::Corrupt,
        LostReason::Truncated,
        LostReason::Missing,
        LostReason::Memory,
        LostReason::Unreadable,
    ];

    /// The name used at the VM boundary and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Corrupt => "corrupt",
            Self::Truncated => "truncated",
            Self::Missing => "missing",
            Self::Memory => "memory",
            Self::Unreadable => "unreadable",
        }
    }
}

/// Counters of a live slot, by index.
pub mod live {
    /// Records appended.
    pub const APPENDED: usize = 0;
    /// Bytes appended (payload).
    pub const APPENDED_BYTES: usize = 1;
    /// Events refused for lack of room (`drop_newest`).
    pub const REFUSED: usize = 2;
    /// Bytes of those.
    pub const REFUSED_BYTES: usize = 3;
    /// Events refused because the spool could not store them (`spool_unavailable`).
    pub const UNAVAILABLE: usize = 4;
    /// Bytes of those.
    pub const UNAVAILABLE_BYTES: usize = 5;
    /// Events refused because the subject's overflow files reached `disk_max_bytes`.
    pub const DISK_FULL: usize = 6;
    /// Bytes of those.
    pub const DISK_FULL_BYTES: usize = 7;
    /// Records appended to overflow segments (a part of `APPENDED`).
    pub const DISK_APPENDED: usize = 8;
    /// Records appended to memory-only segments (a part of `APPENDED`).
    pub const VOLATILE: usize = 9;
    /// Number of counters.
    pub const COUNT: usize = 10;
}

/// One stripe's live counters: a slot of the meta file's live area, or memory of its
/// own when the subject has no meta file.
#[repr(C, align(128))]
pub struct LiveSlot {
    /// `epoch << 16 | stripe index`, plus one (0 = slot unused).
    pub key: AtomicU64,
    /// The counters, indexed by [`live`].
    pub counters: [AtomicU64; live::COUNT],
}

const _: () = assert!(std::mem::size_of::<LiveSlot>() == SLOT_BYTES);

impl LiveSlot {
    /// An unused slot.
    pub fn new() -> Self {
        Self {
            key: AtomicU64::new(0),
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Adds `n` to counter `i`. One writer per slot: a load and a store, no RMW.
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        let c = &self.counters[i];
        c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Counter `i`.
    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        self.counters[i].load(Ordering::Relaxed)
    }

    /// The stripe key stored in the slot, if used.
    pub fn stripe(&self) -> Option<(u32, u16)> {
        let k = self.key.load(Ordering::Relaxed).checked_sub(1)?;
        Some(((k >> 16) as u32, k as u16))
    }

    fn claim(&self, epoch: u32, index: u16) {
        for c in &self.counters {
            c.store(0, Ordering::Relaxed);
        }
        self.key.store(
            ((u64::from(epoch) << 16) | u64::from(index)) + 1,
            Ordering::Release,
        );
    }

    fn values(&self) -> [u64; live::COUNT] {
        std::array::from_fn(|i| self.get(i))
    }
}

impl Default for LiveSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// Subject-level counters of the state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events acknowledged by a taker.
    pub delivered: u64,
    /// Bytes of those.
    pub delivered_bytes: u64,
    /// Pending events discarded to make room (`drop_oldest`).
    pub dropped_oldest: u64,
    /// Bytes of those.
    pub dropped_oldest_bytes: u64,
    /// Events handed out again (after a nack, a dead taker, or a crash).
    pub redelivered: u64,
    /// Events handed out (redeliveries included).
    pub taken: u64,
    /// Live counters of stripes of earlier runs, indexed by [`live`].
    pub base: [u64; live::COUNT],
    /// Events lost, by [`LostReason`].
    pub lost: [u64; LOST_REASONS],
    /// Bytes of those, where known (a missing record's size is not).
    pub lost_bytes: [u64; LOST_REASONS],
}

/// One stripe's cursors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeState {
    /// The run that created it.
    pub epoch: u32,
    /// Its index in that run.
    pub index: u16,
    /// Its live slot, while it belongs to the current run.
    pub live: Option<u16>,
    /// Records it appended (for stripes of earlier runs; live ones read their slot).
    pub end: u64,
    /// Every record below this one is released.
    pub released: u64,
    /// Every record below this one was handed out at least once.
    pub taken: u64,
    /// Ranges of records already counted as lost, ascending, disjoint, above `released`.
    pub lost: Vec<(u64, u64)>,
}

/// What a state slot holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Counters.
    pub counters: Counters,
    /// Stripes with records not all released, or of the current run.
    pub stripes: Vec<StripeState>,
}

impl State {
    fn encode(&self, out: &mut Vec<u8>) {
        let c = &self.counters;
        for v in [
            c.delivered,
            c.delivered_bytes,
            c.dropped_oldest,
            c.dropped_oldest_bytes,
            c.redelivered,
            c.taken,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in c.base.iter().chain(&c.lost).chain(&c.lost_bytes) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.stripes.len() as u32).to_le_bytes());
        for s in &self.stripes {
            out.extend_from_slice(&s.epoch.to_le_bytes());
            out.extend_from_slice(&s.index.to_le_bytes());
            out.extend_from_slice(&s.live.map_or(u16::MAX, |l| l).to_le_bytes());
            for v in [s.end, s.released, s.taken] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(s.lost.len() as u32).to_le_bytes());
            for (a, b) in &s.lost {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&b.to_le_bytes());
            }
        }
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let mut r = Reader { b, at: 0 };
        let mut c = Counters {
            delivered: r.u64()?,
            delivered_bytes: r.u64()?,
            dropped_oldest: r.u64()?,
            dropped_oldest_bytes: r.u64()?,
            redelivered: r.u64()?,
            taken: r.u64()?,
            ..Counters::default()
        };
        for v in c.base.iter_mut() {
            *v = r.u64()?;
        }
        for v in c.lost.iter_mut() {
            *v = r.u64()?;
        }
        for v in c.lost_bytes.iter_mut() {
            *v = r.u64()?;
        }
        let n = r.u32()? as usize;
        let mut stripes = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let epoch = r.u32()?;
            let index = r.u16()?;
            let live = r.u16()?;
            let end = r.u64()?;
            let released = r.u64()?;
            let taken = r.u64()?;
            let k = r.u32()? as usize;
            let mut lost = Vec::with_capacity(k.min(1024));
            for _ in 0..k {
                lost.push((r.u64()?, r.u64()?));
            }
            stripes.push(StripeState {
                epoch,
                index,
                live: (live != u16::MAX).then_some(live),
                end,
                released,
                taken,
                lost,
            });
        }
        (r.at == b.len()).then_some(Self {
            counters: c,
            stripes,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let v = self.b.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(v)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take::<2>().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

/// What a meta file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaHeader {
    /// The node and application that wrote it.
    pub owner: Vec<u8>,
    /// Its subject.
    pub subject: Vec<u8>,
}

fn encode_header(h: &MetaHeader) -> Vec<u8> {
    let owner = &h.owner[..h.owner.len().min(MAX_OWNER)];
    let subject = &h.subject[..h.subject.len().min(MAX_SUBJECT)];
    let mut b = vec![0u8; 24];
    b[0..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[16..18].copy_from_slice(&(owner.len() as u16).to_le_bytes());
    b[18..20].copy_from_slice(&(subject.len() as u16).to_le_bytes());
    b.extend_from_slice(owner);
    b.extend_from_slice(subject);
    let crc = crc32fast::hash(&b[16..]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Whether a meta image's header was never written (a reserve file never used).
pub fn is_blank(b: &[u8]) -> bool {
    // Shorter than a header too: a reserve file whose making a crash cut short (created,
    // not yet sized). A meta file given a subject starts with its magic.
    b.iter().take(HEADER_BYTES).all(|&x| x == 0)
}

/// Reads a meta header; `None` when damaged or not a meta file.
pub fn decode_header(b: &[u8]) -> Option<MetaHeader> {
    if b.len() < 24 || b[0..8] != MAGIC || b[8..12] != VERSION.to_le_bytes() {
        return None;
    }
    let owner_len = u16::from_le_bytes(b[16..18].try_into().ok()?) as usize;
    let subject_len = u16::from_le_bytes(b[18..20].try_into().ok()?) as usize;
    let end = 24 + owner_len + subject_len;
    if owner_len > MAX_OWNER || subject_len > MAX_SUBJECT || b.len() < end {
        return None;
    }
    let crc = u32::from_le_bytes(b[12..16].try_into().ok()?);
    if crc != crc32fast::hash(&b[16..end]) {
        return None;
    }
    Some(MetaHeader {
        owner: b[24..24 + owner_len].to_vec(),
        subject: b[24 + owner_len..end].to_vec(),
    })
}

/// Reads the newest valid state of a meta image (both slots damaged: `None`).
pub fn decode_state(image: &[u8]) -> Option<(u64, State)> {
    let mut best: Option<(u64, State)> = None;
    for slot in 0..2 {
        let at = HEADER_BYTES + slot * STATE_BYTES;
        let Some(b) = image.get(at..at + STATE_BYTES) else {
            continue;
        };
        let seq = u64::from_le_bytes(b[0..8].try_into().unwrap());
        let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(b[12..16].try_into().unwrap());
        if seq == 0 || 16 + len > STATE_BYTES || crc32fast::hash(&b[16..16 + len]) != crc {
            continue;
        }
        if let Some(state) = State::decode(&b[16..16 + len]) {
            if best.as_ref().map_or(true, |(s, _)| seq > *s) {
                best = Some((seq, state));
            }
        }
    }
    best
}

/// The live slots of a meta image: `(slot, stripe key, counters)` of each used slot.
pub fn decode_live(image: &[u8]) -> Vec<(u16, (u32, u16), [u64; live::COUNT])> {
    let mut out = Vec::new();
    for i in 0..LIVE_SLOTS {
        let at = LIVE_AT + i * SLOT_BYTES;
        let Some(b) = image.get(at..at + SLOT_BYTES) else {
            break;
        };
        let key = u64::from_le_bytes(b[0..8].try_into().unwrap());
        if let Some(k) = key.checked_sub(1) {
            let counters = std::array::from_fn(|c| {
                u64::from_le_bytes(b[8 + 8 * c..16 + 8 * c].try_into().unwrap())
            });
            out.push((i as u16, ((k >> 16) as u32, k as u16), counters));
        }
    }
    out
}

/// A subject's meta file, mapped.
pub struct MetaFile {
    map: MmapMut,
    path: PathBuf,
    seq: u64,
    scratch: Vec<u8>,
    free_slots: Vec<u16>,
}

impl MetaFile {
    /// Maps `file` (sized and allocated to [`FILE_BYTES`]) and, when `fresh`, writes its
    /// header and an empty state.
    pub fn open(file: &File, path: &Path, header: &MetaHeader, fresh: bool) -> io::Result<Self> {
        let mut m = Self::blank(file, path)?;
        if fresh {
            m.init(header);
        } else {
            m.seq = decode_state(&m.map).map_or(0, |(s, _)| s);
        }
        Ok(m)
    }

    /// Maps `file` (sized and allocated to [`FILE_BYTES`], all zeros: a reserve file)
    /// without writing to it; [`MetaFile::init`] makes it a subject's.
    pub fn blank(file: &File, path: &Path) -> io::Result<Self> {
        // SAFETY: the file is this node's own (the spool directory is locked), sized
        // and allocated before mapping and never truncated while mapped.
        let map = unsafe { MmapOptions::new().len(FILE_BYTES).map_mut(file)? };
        Ok(Self {
            map,
            path: path.to_path_buf(),
            seq: 0,
            scratch: Vec::with_capacity(1024),
            free_slots: (0..LIVE_SLOTS as u16).rev().collect(),
        })
    }

    /// Writes a zero into every page, so that no later store into the mapping faults
    /// a page in (done by the reserve's thread, off the routers' paths).
    pub fn touch(&mut self) {
        for at in (0..FILE_BYTES).step_by(4096) {
            self.map[at] = 0;
        }
    }

    /// Writes the header and an empty state: the file is `header.subject`'s. Only
    /// stores into the mapping (no file operation).
    pub fn init(&mut self, header: &MetaHeader) {
        self.map[..HEADER_BYTES].fill(0);
        let h = encode_header(header);
        self.map[..h.len()].copy_from_slice(&h);
        self.map[LIVE_AT..].fill(0);
        self.seq = 0;
        self.write_state(&State::default());
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The image (for recovery).
    pub fn image(&self) -> &[u8] {
        &self.map
    }

    /// Writes `state` into the older slot. Returns false when it does not fit (the
    /// previous state stays).
    pub fn write_state(&mut self, state: &State) -> bool {
        self.scratch.clear();
        state.encode(&mut self.scratch);
        if 16 + self.scratch.len() > STATE_BYTES {
            return false;
        }
        self.seq += 1;
        let slot = (self.seq % 2) as usize;
        let at = HEADER_BYTES + slot * STATE_BYTES;
        let len = self.scratch.len();
        let crc = crc32fast::hash(&self.scratch);
        // Body first, then the slot header: a crash in between leaves a slot whose
        // checksum fails, and the other slot wins.
        self.map[at + 16..at + 16 + len].copy_from_slice(&self.scratch);
        self.map[at + 8..at + 12].copy_from_slice(&(len as u32).to_le_bytes());
        self.map[at + 12..at + 16].copy_from_slice(&crc.to_le_bytes());
        self.map[at..at + 8].copy_from_slice(&self.seq.to_le_bytes());
        true
    }

    /// Clears the live area (recovery has folded the previous run's slots into the
    /// state).
    pub fn clear_live(&mut self) {
        self.map[LIVE_AT..].fill(0);
        self.free_slots = (0..LIVE_SLOTS as u16).rev().collect();
    }

    /// Claims a free live slot for stripe `(epoch, index)`.
    pub fn claim_slot(&mut self, epoch: u32, index: u16) -> Option<(u16, *const LiveSlot)> {
        let i = self.free_slots.pop()?;
        let slot = self.slot_ptr(i);
        // SAFETY: in the mapped live area, 128-byte aligned (the map is page aligned).
        unsafe { (*slot).claim(epoch, index) };
        Some((i, slot))
    }

    fn slot_ptr(&self, i: u16) -> *const LiveSlot {
        // SAFETY: slot `i < LIVE_SLOTS` lies within the mapping.
        unsafe { self.map.as_ptr().add(LIVE_AT + i as usize * SLOT_BYTES) as *const LiveSlot }
    }

    /// Writes the mapping to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.map.flush()
    }
}

/// The live counters of a heap slot, for a subject without a meta file.
pub fn slot_values(s: &LiveSlot) -> [u64; live::COUNT] {
    s.values()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            counters: Counters {
                delivered: 5,
                delivered_bytes: 50,
                redelivered: 2,
                base: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                lost: [1, 0, 2, 0, 0],
                ..Counters::default()
            },
            stripes: vec![
                StripeState {
                    epoch: 2,
                    index: 1,
                    live: None,
                    end: 100,
                    released: 40,
                    taken: 60,
                    lost: vec![(70, 72)],
                },
                StripeState {
                    epoch: 3,
                    index: 0,
                    live: Some(0),
                    end: 0,
                    released: 0,
                    taken: 0,
                    lost: vec![],
                },
            ],
        }
    }

    fn temp_file(name: &str) -> (File, PathBuf) {
        let dir = std::env::temp_dir().join(format!("bw-meta-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&dir)
            .unwrap();
        f.set_len(FILE_BYTES as u64).unwrap();
        (f, dir)
    }

    #[test]
    fn state_round_trips_and_the_newer_valid_slot_wins() {
        let (f, path) = temp_file("state");
        let header = MetaHeader {
            owner: b"n@h/app".to_vec(),
            subject: b"ledger".to_vec(),
        };
        let mut m = MetaFile::open(&f, &path, &header, true).unwrap();
        assert_eq!(decode_header(m.image()), Some(header.clone()));
        let s1 = state();
        assert!(m.write_state(&s1));
        let mut s2 = s1.clone();
        s2.counters.delivered = 6;
        assert!(m.write_state(&s2));
        assert_eq!(decode_state(m.image()).unwrap().1, s2);
        // A torn write of the next state (its slot's body damaged) leaves s2.
        let at = HEADER_BYTES + ((m.seq + 1) % 2) as usize * STATE_BYTES;
        let mut s3 = s2.clone();
        s3.counters.delivered = 7;
        assert!(m.write_state(&s3));
        m.map[at + 20] ^= 0xff;
        assert_eq!(decode_state(m.image()).unwrap().1, s2);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn live_slots_are_claimed_and_read_back() {
        let (f, path) = temp_file("live");
        let header = MetaHeader {
            owner: b"o".to_vec(),
            subject: b"s".to_vec(),
        };
        let mut m = MetaFile::open(&f, &path, &header, true).unwrap();
        let (i, p) = m.claim_slot(4, 9).unwrap();
        // SAFETY: a slot of the live mapping, alive with `m`.
        let slot = unsafe { &*p };
        slot.add(live::APPENDED, 3);
        slot.add(live::APPENDED_BYTES, 30);
        assert_eq!(slot.stripe(), Some((4, 9)));
        let got = decode_live(m.image());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, i);
        assert_eq!(got[0].1, (4, 9));
        assert_eq!(got[0].2[live::APPENDED], 3);
        drop(m);
        // Reopened: the state and live area are what was written.
        let m = MetaFile::open(&f, &path, &header, false).unwrap();
        assert_eq!(decode_live(m.image())[0].2[live::APPENDED_BYTES], 30);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn damaged_headers_are_refused() {
        let h = encode_header(&MetaHeader {
            owner: b"o".to_vec(),
            subject: b"s".to_vec(),
        });
        assert!(decode_header(&h).is_some());
        let mut bad = h.clone();
        bad[25] ^= 1;
        assert!(decode_header(&bad).is_none());
        assert!(decode_header(&h[..10]).is_none());
    }
}
