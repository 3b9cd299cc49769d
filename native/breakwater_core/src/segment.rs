//! A segment: one block of records of one stripe of one subject, the unit the pool
//! hands out and the unit of every spool file.
//!
//! # Layout (the same in memory, in pool files and in overflow files)
//!
//! ```text
//! 0                                    4096
//! ┌──────────────────────────────────────┬───────────────────────────────────────────┐
//! │ header page                          │ data: records back to back (record.rs),   │
//! │  magic, version, state, header crc,  │ ended by a zero word                      │
//! │  geometry, owner, subject, epoch,    │                                           │
//! │  stripe, segment seq, first record   │                                           │
//! │  seq; at 2048: sealed record count   │                                           │
//! └──────────────────────────────────────┴───────────────────────────────────────────┘
//! ```
//!
//! Header fields (little endian): `0` magic `BWSEGMT1`; `8` version; `12` state (0 free,
//! 1 live); `16` CRC-32 of bytes `20..64 + owner + subject`; `20` data bytes; `24` most
//! records; `28` owner length; `30` subject length; `32` epoch; `36` stripe; `38` flags
//! (bit 0: records carry checksums); `40` segment sequence (per stripe); `48` sequence
//! of its first record (per stripe); `64` owner, then subject. At `2048`, outside the
//! checksum: the record count plus one once the writer has moved to another segment
//! (0 while open).
//!
//! # Invariants
//!
//! - A live segment holds records `first_seq .. first_seq + n` of stripe `stripe` of
//!   `subject`, in order, from data offset 0, and the word after the last record is 0
//!   (the writer zeroes the next word before it publishes a record, so a reused segment
//!   never shows a record of its previous life).
//! - One writer at a time appends (the stripe's lock), only at its offset; readers read
//!   only bytes below an offset they learnt under that lock (the drain's cut), so the
//!   bytes read and the bytes written never overlap.
//! - The identity is written while the segment is owned by one thread only (taken from
//!   the pool, not yet shared), then never changed until it goes back.
//!
//! Memory ordering: records publish their word with `Release` ([`crate::record`]); the
//! state word is stored with `Release` after the rest of the header, so recovery (or a
//! reader loading it with `Acquire`) never sees a live state with a stale identity.

use crate::record;
use memmap2::{MmapMut, MmapOptions};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Bytes of the header page.
pub const HEADER_BYTES: usize = 4096;
/// Longest owner recorded.
pub const MAX_OWNER: usize = 512;
/// Longest subject recorded.
pub const MAX_SUBJECT: usize = 1024;
const MAGIC: [u8; 8] = *b"BWSEGMT1";
/// 2: record checksums are CRC-32C (1 had CRC-32 with the IEEE polynomial).
const VERSION: u32 = 2;
const STATE_FREE: u32 = 0;
const STATE_LIVE: u32 = 1;
const SEALED_AT: usize = 2048;
const FLAG_CHECKSUMMED: u16 = 1;

/// How big a segment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes of records (headers and padding included) it holds at most.
    pub data_bytes: u32,
    /// Records it holds at most.
    pub max_records: u32,
}

impl Geometry {
    /// Bytes of the whole image (header page and data).
    pub fn image_bytes(&self) -> usize {
        HEADER_BYTES + self.data_bytes as usize
    }
}

/// Whose records a live segment holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The node and application that wrote it.
    pub owner: Vec<u8>,
    /// The subject.
    pub subject: Vec<u8>,
    /// The node's run (start) that wrote it.
    pub epoch: u32,
    /// The stripe within the subject and run.
    pub stripe: u16,
    /// Its place in the stripe's chain.
    pub seg_seq: u64,
    /// The stripe sequence number of its first record.
    pub first_seq: u64,
}

/// What a header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    /// Never used, or given back: holds nothing.
    Free,
    /// Holds records.
    Live {
        /// Whose.
        id: Identity,
        /// Its size.
        geometry: Geometry,
        /// Whether its records carry checksums.
        checksummed: bool,
        /// Its record count, once sealed.
        sealed: Option<u64>,
    },
    /// Not a header this version wrote, or damaged (bad magic, version or checksum).
    Damaged,
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The static part of a live header (everything but state and sealed count), in `out`.
fn encode_identity(out: &mut [u8], id: &Identity, g: Geometry, checksummed: bool) {
    let owner = &id.owner[..id.owner.len().min(MAX_OWNER)];
    let subject = &id.subject[..id.subject.len().min(MAX_SUBJECT)];
    out[0..8].copy_from_slice(&MAGIC);
    put_u32(out, 8, VERSION);
    put_u32(out, 20, g.data_bytes);
    put_u32(out, 24, g.max_records);
    put_u16(out, 28, owner.len() as u16);
    put_u16(out, 30, subject.len() as u16);
    put_u32(out, 32, id.epoch);
    put_u16(out, 36, id.stripe);
    put_u16(out, 38, if checksummed { FLAG_CHECKSUMMED } else { 0 });
    put_u64(out, 40, id.seg_seq);
    put_u64(out, 48, id.first_seq);
    put_u64(out, 56, 0);
    out[64..64 + owner.len()].copy_from_slice(owner);
    out[64 + owner.len()..64 + owner.len() + subject.len()].copy_from_slice(subject);
    let end = 64 + owner.len() + subject.len();
    put_u32(out, 16, crc32fast::hash(&out[20..end]));
}

/// Reads a header page (at least [`HEADER_BYTES`] bytes; fewer reads as damaged).
pub fn decode_header(b: &[u8]) -> Header {
    if b.len() < HEADER_BYTES {
        return if b.iter().all(|&x| x == 0) {
            Header::Free
        } else {
            Header::Damaged
        };
    }
    if b[0..8] != MAGIC {
        return if b[0..64].iter().all(|&x| x == 0) {
            Header::Free
        } else {
            Header::Damaged
        };
    }
    if u32_at(b, 8) != VERSION {
        return Header::Damaged;
    }
    if u32_at(b, 12) != STATE_LIVE {
        return Header::Free;
    }
    let owner_len = u16_at(b, 28) as usize;
    let subject_len = u16_at(b, 30) as usize;
    if owner_len > MAX_OWNER || subject_len > MAX_SUBJECT {
        return Header::Damaged;
    }
    let end = 64 + owner_len + subject_len;
    if u32_at(b, 16) != crc32fast::hash(&b[20..end]) {
        return Header::Damaged;
    }
    let sealed = u64_at(b, SEALED_AT);
    Header::Live {
        id: Identity {
            owner: b[64..64 + owner_len].to_vec(),
            subject: b[64 + owner_len..end].to_vec(),
            epoch: u32_at(b, 32),
            stripe: u16_at(b, 36),
            seg_seq: u64_at(b, 40),
            first_seq: u64_at(b, 48),
        },
        geometry: Geometry {
            data_bytes: u32_at(b, 20),
            max_records: u32_at(b, 24),
        },
        checksummed: u16_at(b, 38) & FLAG_CHECKSUMMED != 0,
        sealed: sealed.checked_sub(1),
    }
}

/// Where a segment's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Anonymous memory (durability `memory`, or a test): gone with the process.
    Anon,
    /// Slot `n` of the pool: a file mapped for the life of the node and reused.
    Pool(u32),
    /// Overflow file number `n`: mapped while written, read back with `pread` once
    /// sealed, deleted once every record in it is released.
    Overflow(u64),
}

/// A segment's bytes and identity.
pub struct Segment {
    kind: Kind,
    geometry: Geometry,
    checksummed: bool,
    file: Option<File>,
    path: Option<PathBuf>,
    map: Option<MmapMut>,
    loaded: Option<Box<[u64]>>,
    /// Base of the image while mapped (`map`), else null.
    ptr: *mut u8,
    /// Bytes of data the loaded copy holds.
    loaded_bytes: usize,
    id_epoch: u32,
    id_stripe: u16,
    seg_seq: u64,
    first_seq: u64,
    /// Records + 1 once sealed, 0 while open.
    sealed: AtomicU64,
    /// Written since the last sync (`fsync` durability).
    dirty: AtomicBool,
}

// SAFETY: the raw pointer is the base of `map`, which the segment owns; writes through
// it follow the single-writer discipline of the module documentation, reads only touch
// bytes below what was published under the stripe lock.
unsafe impl Send for Segment {}
// SAFETY: as above; every shared mutation is through atomics or the disjoint
// writer/reader byte ranges the module documentation describes.
unsafe impl Sync for Segment {}

/// A copy of an overflow segment's data read back from its file.
#[derive(Debug)]
pub struct Loaded {
    buf: Box<[u64]>,
    got: usize,
}

impl Loaded {
    /// No data (a file that cannot be read: the chain moves on past it).
    pub fn empty() -> Self {
        Self {
            buf: Box::new([]),
            got: 0,
        }
    }
}

impl Segment {
    fn from_map(kind: Kind, geometry: Geometry, checksummed: bool, mut map: MmapMut) -> Self {
        let ptr = map.as_mut_ptr();
        Self {
            kind,
            geometry,
            checksummed,
            file: None,
            path: None,
            map: Some(map),
            loaded: None,
            ptr,
            loaded_bytes: 0,
            id_epoch: 0,
            id_stripe: 0,
            seg_seq: 0,
            first_seq: 0,
            sealed: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
        }
    }

    /// A segment in anonymous memory (pages committed when first written).
    pub fn anon(geometry: Geometry) -> io::Result<Self> {
        let map = MmapOptions::new().len(geometry.image_bytes()).map_anon()?;
        Ok(Self::from_map(Kind::Anon, geometry, false, map))
    }

    /// A segment over `file` (already sized to the image, and allocated), mapped.
    pub fn mapped_file(
        kind: Kind,
        file: File,
        path: PathBuf,
        geometry: Geometry,
        checksummed: bool,
    ) -> io::Result<Self> {
        // SAFETY: the file is this node's own (the spool directory is locked), sized
        // and allocated to the image before mapping, and never truncated while mapped:
        // a store into the mapping cannot fault for lack of disk space.
        let map = unsafe {
            MmapOptions::new()
                .len(geometry.image_bytes())
                .map_mut(&file)?
        };
        let mut s = Self::from_map(kind, geometry, checksummed, map);
        s.file = Some(file);
        s.path = Some(path);
        Ok(s)
    }

    /// A sealed overflow segment known from its file only (recovery): neither mapped nor
    /// loaded yet.
    pub fn unmapped_file(
        number: u64,
        file: File,
        path: PathBuf,
        geometry: Geometry,
        id: &Identity,
        records: u64,
    ) -> Self {
        Self {
            kind: Kind::Overflow(number),
            geometry,
            checksummed: true,
            file: Some(file),
            path: Some(path),
            map: None,
            loaded: None,
            ptr: std::ptr::null_mut(),
            loaded_bytes: 0,
            id_epoch: id.epoch,
            id_stripe: id.stripe,
            seg_seq: id.seg_seq,
            first_seq: id.first_seq,
            sealed: AtomicU64::new(records + 1),
            dirty: AtomicBool::new(false),
        }
    }

    /// Where its bytes live.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its size.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Whether its records carry checksums.
    pub fn checksummed(&self) -> bool {
        self.checksummed
    }

    /// Its file, if any.
    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Its place in its stripe's chain.
    pub fn seg_seq(&self) -> u64 {
        self.seg_seq
    }

    /// Stripe sequence of its first record.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Record count once sealed.
    pub fn sealed(&self) -> Option<u64> {
        self.sealed.load(Ordering::Acquire).checked_sub(1)
    }

    /// Whether its bytes can be read now (mapped or loaded).
    pub fn readable(&self) -> bool {
        !self.ptr.is_null() || self.loaded.is_some()
    }

    /// Whether it is mapped.
    pub fn mapped(&self) -> bool {
        !self.ptr.is_null()
    }

    /// Makes it live for `id` (writes and publishes the header; the first word of the
    /// data is zeroed so that no record of a previous life shows). Needs the segment
    /// to itself (taken from the pool, not yet shared).
    pub fn activate(&mut self, id: &Identity) {
        assert!(!self.ptr.is_null(), "only a mapped segment is activated");
        self.id_epoch = id.epoch;
        self.id_stripe = id.stripe;
        self.seg_seq = id.seg_seq;
        self.first_seq = id.first_seq;
        self.sealed.store(0, Ordering::Relaxed);
        let mut header = [0u8; 64 + MAX_OWNER + MAX_SUBJECT];
        encode_identity(&mut header, id, self.geometry, self.checksummed);
        // SAFETY: exclusively ours (`&mut self`), within the mapped image.
        unsafe {
            self.word_at(12).store(STATE_FREE, Ordering::Relaxed);
            std::ptr::copy_nonoverlapping(header.as_ptr().add(16), self.ptr.add(16), 48);
            std::ptr::copy_nonoverlapping(
                header.as_ptr().add(64),
                self.ptr.add(64),
                header.len() - 64,
            );
            std::ptr::copy_nonoverlapping(header.as_ptr(), self.ptr, 12);
            (self.ptr.add(SEALED_AT) as *mut u64).write(0);
            self.word_at(HEADER_BYTES).store(0, Ordering::Relaxed);
            self.word_at(12).store(STATE_LIVE, Ordering::Release);
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Writes a zero into every page of a free, mapped segment, so that no later store
    /// into it faults a page in (the reserve's thread does this, off the routers'
    /// paths). Needs the segment to itself.
    pub fn touch(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        for at in (0..self.geometry.image_bytes()).step_by(4096) {
            // SAFETY: exclusively ours, within the mapped image; the byte is 0 already
            // (a fresh, allocated file), the write only makes the page resident.
            unsafe { std::ptr::write_volatile(self.ptr.add(at), 0) };
        }
    }

    /// Sets the identity of a live segment found at recovery (its header already says
    /// it; nothing is written).
    pub fn set_identity(&mut self, id: &Identity) {
        self.id_epoch = id.epoch;
        self.id_stripe = id.stripe;
        self.seg_seq = id.seg_seq;
        self.first_seq = id.first_seq;
    }

    /// Marks it free (its records are all released). Needs it to itself.
    pub fn deactivate(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: exclusively ours, within the mapped image.
            unsafe { self.word_at(12).store(STATE_FREE, Ordering::Release) };
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// # Safety
    /// `at` is 4-byte aligned and within the mapped image.
    unsafe fn word_at(&self, at: usize) -> &AtomicU32 {
        // SAFETY: per the contract; AtomicU32 has the alignment and size of u32.
        unsafe { &*(self.ptr.add(at) as *const AtomicU32) }
    }

    /// Whether a record of `payload` bytes fits after `records` records ending at data
    /// offset `offset` (a zero word must still fit after it, or the data be full).
    #[inline]
    pub fn fits(&self, offset: usize, records: u32, payload: usize) -> bool {
        records < self.geometry.max_records
            && offset + record::size(payload) <= self.geometry.data_bytes as usize
    }

    /// Appends a record at data offset `offset`; returns the offset after it.
    ///
    /// # Safety
    /// The caller is the segment's one writer (holds its stripe's lock), `offset` is
    /// where the previous append ended (0 for the first), and [`Segment::fits`] said
    /// yes. The segment is mapped.
    #[inline]
    pub unsafe fn append(&self, offset: usize, stamp: u64, payload: &[u8]) -> usize {
        debug_assert!(!self.ptr.is_null());
        let end = offset + record::size(payload.len());
        // SAFETY: within the data area (fits), past every byte a reader may read.
        unsafe {
            if end + 4 <= self.geometry.data_bytes as usize {
                // The terminator first: a crash now leaves a zero word after the record.
                self.word_at(HEADER_BYTES + end).store(0, Ordering::Relaxed);
            }
            record::write(
                self.ptr.add(HEADER_BYTES + offset),
                stamp,
                payload,
                self.checksummed,
            );
        }
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
        end
    }

    /// Records that the writer has moved on after `records` records. Writer only.
    pub fn seal(&self, records: u64) {
        self.sealed.store(records + 1, Ordering::Release);
        if !self.ptr.is_null() {
            // SAFETY: the sealed field is written by the writer only, in the mapped image.
            unsafe {
                (*(self.ptr.add(SEALED_AT) as *const AtomicU64))
                    .store(records + 1, Ordering::Release)
            };
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// The first `len` bytes of the data area, if readable.
    ///
    /// The caller asks only for bytes published before it learnt `len` (under the
    /// stripe lock, or after a load), so no writer touches them.
    pub fn data(&self, len: usize) -> Option<&[u8]> {
        if !self.ptr.is_null() {
            let len = len.min(self.geometry.data_bytes as usize);
            // SAFETY: mapped image; bytes below a published offset are never written
            // again while the segment is live.
            Some(unsafe { std::slice::from_raw_parts(self.ptr.add(HEADER_BYTES), len) })
        } else if let Some(buf) = &self.loaded {
            let len = len.min(self.loaded_bytes);
            // SAFETY: the loaded copy is a `[u64]` of at least `loaded_bytes` bytes.
            Some(unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, len) })
        } else {
            None
        }
    }

    /// Drops the mapping of an overflow segment (its bytes are read back with a load).
    pub fn unmap(&mut self) {
        if matches!(self.kind, Kind::Overflow(_)) {
            self.map = None;
            self.ptr = std::ptr::null_mut();
        }
    }

    /// Reads the data of an unmapped overflow segment back from its file (blocking
    /// I/O: callers run on a dirty scheduler or a thread of their own). Returns the
    /// bytes read; fewer than asked means the file is shorter.
    pub fn load(&mut self, bytes: usize) -> io::Result<usize> {
        if !self.ptr.is_null() {
            return Ok(bytes.min(self.geometry.data_bytes as usize));
        }
        if self.loaded.is_some() {
            return Ok(self.loaded_bytes);
        }
        let copy = self.read_back(bytes)?;
        Ok(self.install(copy))
    }

    /// The first `bytes` of data of the segment's file, read without changing the
    /// segment (blocking I/O), so that a caller can read while the segment is shared
    /// and install the copy later ([`Segment::install`]).
    pub fn read_back(&self, bytes: usize) -> io::Result<Loaded> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "segment has no file"))?;
        let want = bytes.min(self.geometry.data_bytes as usize);
        let mut buf = vec![0u64; want.div_ceil(8)].into_boxed_slice();
        // SAFETY: a `[u64]` viewed as bytes, within its length.
        let bytes_view =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, want) };
        let mut got = 0;
        while got < want {
            let n = rustix::io::pread(file, &mut bytes_view[got..], (HEADER_BYTES + got) as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(Loaded { buf, got })
    }

    /// Installs a copy read by [`Segment::read_back`] (nothing if the segment is
    /// readable already). Returns the bytes readable.
    pub fn install(&mut self, copy: Loaded) -> usize {
        if !self.ptr.is_null() {
            return self.geometry.data_bytes as usize;
        }
        if self.loaded.is_none() {
            self.loaded = Some(copy.buf);
            self.loaded_bytes = copy.got;
        }
        self.loaded_bytes
    }

    /// Drops a loaded copy.
    pub fn unload(&mut self) {
        self.loaded = None;
        self.loaded_bytes = 0;
    }

    /// Writes the mapping (or the file) to disk if written since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let r = match (&self.map, &self.file) {
            (Some(m), Some(_)) => m.flush(),
            (None, Some(f)) => f.sync_data(),
            _ => Ok(()),
        };
        if r.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        r
    }

    /// Takes the file out (to delete it).
    pub fn into_file(self) -> (Option<File>, Option<PathBuf>) {
        (self.file, self.path)
    }

    /// The header of this segment as recorded (for tests and recovery checks).
    pub fn header(&self) -> Header {
        if self.ptr.is_null() {
            return Header::Damaged;
        }
        // SAFETY: the header page of the mapped image; fields other threads write are
        // atomics read here as bytes after an Acquire load of the state.
        unsafe {
            let _ = self.word_at(12).load(Ordering::Acquire);
            decode_header(std::slice::from_raw_parts(self.ptr, HEADER_BYTES))
        }
    }

    /// The stripe identity this segment was activated with.
    pub fn stripe_key(&self) -> (u32, u16) {
        (self.id_epoch, self.id_stripe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            owner: b"node@host/app".to_vec(),
            subject: b"ledger".to_vec(),
            epoch: 3,
            stripe: 1,
            seg_seq: 7,
            first_seq: 1_000,
        }
    }

    const G: Geometry = Geometry {
        data_bytes: 256,
        max_records: 8,
    };

    #[test]
    fn header_round_trip_and_damage() {
        let mut s = Segment::anon(G).unwrap();
        s.activate(&id());
        match s.header() {
            Header::Live {
                id: got,
                geometry,
                sealed,
                checksummed,
            } => {
                assert_eq!(got, id());
                assert_eq!(geometry, G);
                assert_eq!(sealed, None);
                assert!(!checksummed);
            }
            other => panic!("{other:?}"),
        }
        s.seal(5);
        assert!(matches!(
            s.header(),
            Header::Live {
                sealed: Some(5),
                ..
            }
        ));
        // SAFETY: test-only poke at the subject bytes of our own mapping.
        unsafe { *s.ptr.add(64 + 13) ^= 1 };
        assert_eq!(s.header(), Header::Damaged);
        s.deactivate();
        assert_eq!(s.header(), Header::Free);
        assert_eq!(decode_header(&[0u8; HEADER_BYTES]), Header::Free);
        assert_eq!(decode_header(&[1u8; 100]), Header::Damaged);
    }

    #[test]
    fn appends_until_full_and_a_reused_segment_shows_no_old_record() {
        let mut s = Segment::anon(G).unwrap();
        s.activate(&id());
        let mut off = 0;
        let mut n = 0;
        while s.fits(off, n, 20) {
            // SAFETY: single writer, offsets chained, fits checked.
            off = unsafe { s.append(off, 10 + n as u64, &[n as u8; 20]) };
            n += 1;
        }
        assert_eq!(n, 6, "256 bytes hold six 40-byte records");
        let data = s.data(off).unwrap();
        let mut at = 0;
        for i in 0..n {
            match record::parse(&data[at..], false) {
                record::Parsed::Valid {
                    stamp,
                    payload,
                    size,
                } => {
                    assert_eq!((stamp, payload), (10 + i as u64, &[i as u8; 20][..]));
                    at += size;
                }
                other => panic!("{other:?}"),
            }
        }
        // Reuse: one short record, and the old second record must not show after it.
        s.deactivate();
        s.activate(&id());
        // SAFETY: as above.
        let off = unsafe { s.append(0, 99, b"new") };
        let data = s.data(G.data_bytes as usize).unwrap();
        assert!(matches!(
            record::parse(data, false),
            record::Parsed::Valid { stamp: 99, .. }
        ));
        assert_eq!(record::parse(&data[off..], false), record::Parsed::End);
    }
}
