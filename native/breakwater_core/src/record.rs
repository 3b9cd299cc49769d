//! A record: how one event is laid out in a segment, published, and validated.
//!
//! ```text
//!  0        4        8                16                 16 + n      size(n)
//!  ┌────────┬────────┬────────────────┬──────────────────┬──────────┐
//!  │ word   │ crc    │ stamp          │ payload (n bytes)│ zero pad │
//!  └────────┴────────┴────────────────┴──────────────────┴──────────┘
//!   u32 LE   u32 LE   u64 LE                               to 8 bytes
//! ```
//!
//! `word` is the payload length plus one, so that 0 means "nothing written here yet" (an
//! empty event is a valid event). `crc` is the CRC-32C (Castagnoli) register after the
//! stamp and the payload (16 contiguous bytes on), seeded with the word, without the
//! final inversion ([`crate::checksum`]), so that a damaged length changes both the bytes
//! checksummed and the seed; 0 in segments that are never read back after a crash (see
//! [`crate::segment`]). The writer computes it while it copies the payload in: each
//! 8-byte word is loaded once, stored into the segment and fed to one of three `crc32`
//! instruction chains that run side by side; that is what keeps a `:crash` enqueue
//! within a few nanoseconds of a `:memory` one (see `docs/design.md`). `stamp` orders
//! the record against records of other stripes ([`crate::stamp`]).
//!
//! Invariant: a writer fills stamp, payload and crc, and only then stores `word`, with
//! `Release`. A reader (or recovery, after a crash) that sees `word == 0` has found the
//! end of what was written; one that sees a word sees a whole record, because the word
//! was stored last. A record whose checksum does not match (a torn page after a power
//! cut, a damaged disk, a file someone edited) is reported as corrupt; if its length is
//! plausible the next record can still be found after it.
//!
//! Memory ordering: the `Release` store of the word orders every byte of the record
//! before it, for any thread that loads the word with `Acquire`; in-process readers
//! synchronise through the stripe lock instead (see [`crate::stripe`]), and after a
//! crash program order is what matters: a killed process's earlier stores are all in
//! the page cache, its later ones none.

use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes before the payload.
pub const HEADER: usize = 16;
/// Records start at multiples of this.
pub const ALIGN: usize = 8;
/// Largest payload a record can describe (the word is a `u32`).
pub const MAX_PAYLOAD: usize = (u32::MAX - 1) as usize;

/// Bytes a record of `payload` bytes takes, padding included.
#[inline]
pub const fn size(payload: usize) -> usize {
    (HEADER + payload + ALIGN - 1) & !(ALIGN - 1)
}

/// The checksum of a record: `stamp_and_payload` is its bytes from offset 8 (the stamp)
/// to the end of the payload.
#[inline]
pub fn checksum(stamp_and_payload: &[u8], word: u32) -> u32 {
    crate::checksum::raw(word, stamp_and_payload)
}

/// Writes a record of `payload` stamped `stamp` at `dst`, word last.
///
/// # Safety
/// `dst` is 8-byte aligned, valid for writes of [`size`]`(payload.len())` bytes, and no
/// other thread reads or writes those bytes until the word is published (readers that
/// load the word with `Acquire` may race with the store of the word itself). The bytes
/// after the record keep whatever they held: the caller guarantees the next word is 0.
#[inline]
pub unsafe fn write(dst: *mut u8, stamp: u64, payload: &[u8], checksummed: bool) {
    debug_assert_eq!(dst as usize % ALIGN, 0);
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let n = payload.len();
    let word = n as u32 + 1;
    // SAFETY (whole block): within the caller's exclusive, aligned region.
    unsafe {
        (dst.add(8) as *mut u64).write(stamp.to_le());
        let crc = if checksummed {
            // One pass over the payload: copied and checksummed together.
            crate::checksum::copy_record(word, stamp, payload, dst.add(HEADER))
        } else {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(HEADER), n);
            0
        };
        let pad = size(n) - HEADER - n;
        std::ptr::write_bytes(dst.add(HEADER + n), 0, pad);
        (dst.add(4) as *mut u32).write(crc.to_le());
        // Published last: the word is what says the record exists.
        (*(dst as *const AtomicU32)).store(word.to_le(), Ordering::Release);
    }
}

/// What [`parse`] found at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Nothing was written here (word 0): the end of the records.
    End,
    /// A whole, valid record.
    Valid {
        /// Its stamp.
        stamp: u64,
        /// Its payload.
        payload: &'a [u8],
        /// Bytes it takes, padding included.
        size: usize,
    },
    /// A record whose length is plausible but whose checksum does not match: its bytes
    /// are not the event's. The next record starts `size` bytes on.
    Corrupt {
        /// Bytes it takes, padding included.
        size: usize,
    },
    /// A record that runs past the end of the bytes available: the file was cut short
    /// (or the length is damaged). Nothing after it can be found.
    Truncated,
}

/// Reads the record at the start of `bytes` (which run to the end of the segment's data,
/// or to the end of the file when that comes first). `checked` validates the checksum.
pub fn parse(bytes: &[u8], checked: bool) -> Parsed<'_> {
    if bytes.len() < 4 {
        // Not even a word: the records end here, or the file was cut in a word.
        return if bytes.iter().all(|&b| b == 0) {
            Parsed::End
        } else {
            Parsed::Truncated
        };
    }
    let word = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    if word == 0 {
        return Parsed::End;
    }
    let n = (word - 1) as usize;
    let total = size(n);
    if bytes.len() < total {
        return Parsed::Truncated;
    }
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    let stamp = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let payload = &bytes[HEADER..HEADER + n];
    if checked && crc != checksum(&bytes[8..HEADER + n], word) {
        return Parsed::Corrupt { size: total };
    }
    Parsed::Valid {
        stamp,
        payload,
        size: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(align(8))]
    struct Buf([u8; 256]);

    fn written(events: &[&[u8]], checked: bool) -> Buf {
        let mut b = Buf([0; 256]);
        let mut at = 0;
        for (i, e) in events.iter().enumerate() {
            // SAFETY: in bounds, aligned, exclusively ours.
            unsafe { write(b.0.as_mut_ptr().add(at), 100 + i as u64, e, checked) };
            at += size(e.len());
        }
        b
    }

    fn read_all(bytes: &[u8], checked: bool) -> Vec<Parsed<'_>> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let p = parse(&bytes[at..], checked);
            out.push(p);
            match p {
                Parsed::Valid { size, .. } | Parsed::Corrupt { size } => at += size,
                Parsed::End | Parsed::Truncated => return out,
            }
        }
    }

    #[test]
    fn sizes_are_aligned_and_count_the_header() {
        assert_eq!(size(0), 16);
        assert_eq!(size(1), 24);
        assert_eq!(size(8), 24);
        assert_eq!(size(256), 272);
    }

    #[test]
    fn round_trip_including_an_empty_event() {
        let b = written(&[b"abc", b"", b"0123456789"], true);
        let got = read_all(&b.0, true);
        assert_eq!(
            got,
            vec![
                Parsed::Valid {
                    stamp: 100,
                    payload: b"abc",
                    size: 24
                },
                Parsed::Valid {
                    stamp: 101,
                    payload: b"",
                    size: 16
                },
                Parsed::Valid {
                    stamp: 102,
                    payload: b"0123456789",
                    size: 32
                },
                Parsed::End
            ]
        );
    }

    #[test]
    fn a_flipped_byte_is_corrupt_and_the_next_record_is_still_found() {
        let mut b = written(&[b"first", b"second"], true);
        b.0[HEADER + 2] ^= 0x01;
        let got = read_all(&b.0, true);
        assert_eq!(got[0], Parsed::Corrupt { size: 24 });
        assert!(matches!(
            got[1],
            Parsed::Valid {
                payload: b"second",
                ..
            }
        ));
        // Unchecked readers (segments never recovered) do not look at the checksum.
        assert!(matches!(parse(&b.0, false), Parsed::Valid { .. }));
    }

    #[test]
    fn a_damaged_stamp_or_length_is_caught() {
        let mut b = written(&[b"first", b"second"], true);
        b.0[9] ^= 0x80;
        assert_eq!(parse(&b.0, true), Parsed::Corrupt { size: 24 });
        let mut b = written(&[b"first", b"second"], true);
        b.0[0] = 4; // payload length 3 instead of 5: the checksum covers the word
        assert!(matches!(parse(&b.0, true), Parsed::Corrupt { .. }));
        let mut b = written(&[b"x"], true);
        b.0[3] = 0x7f; // a length far past the end
        assert_eq!(parse(&b.0, true), Parsed::Truncated);
    }

    #[test]
    fn every_cut_of_a_record_reads_as_truncated_or_end() {
        let b = written(&[b"hello world"], true);
        let whole = size(11);
        for cut in 0..whole {
            let p = parse(&b.0[..cut], true);
            if cut < 4 {
                // A cut inside the word: the bytes seen are the word's low bytes.
                assert!(
                    matches!(p, Parsed::Truncated | Parsed::End),
                    "cut {cut}: {p:?}"
                );
            } else {
                assert_eq!(p, Parsed::Truncated, "cut {cut}");
            }
        }
        assert!(matches!(parse(&b.0[..whole], true), Parsed::Valid { .. }));
    }
}
