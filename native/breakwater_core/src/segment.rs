//! A segment: a fixed block of event storage that a subject fills front to back.
//!
//! Invariant: a segment holds events `first_seq .. first_seq + len` of one subject, their
//! bytes packed back to back in `data`, event `i` ending at `ends[i]`. Events are only
//! appended; a segment is emptied as a whole (by [`Segment::reset`]) when the spool has
//! released every event in it, so the bytes of a taken, un-acknowledged event never
//! move or change. Both buffers are allocated once, when the pool is built.

/// Event storage for one subject at a time.
pub struct Segment {
    data: Box<[u8]>,
    ends: Box<[u32]>,
    len: u32,
    first_seq: u64,
}

/// Events `start..end` of one segment, as one contiguous byte slice and the events'
/// end offsets within the segment.
pub struct Piece<'a> {
    /// The bytes of the events, back to back.
    pub data: &'a [u8],
    /// Offset of `data[0]` within the segment.
    pub base: u32,
    /// End offset (within the segment) of each event.
    pub ends: &'a [u32],
}

impl Piece<'_> {
    /// Each event's range within [`Piece::data`].
    pub fn event_ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let base = self.base;
        let mut start = 0usize;
        self.ends.iter().map(move |&end| {
            let end = (end - base) as usize;
            let r = start..end;
            start = end;
            r
        })
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the piece holds no event.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl Segment {
    /// A segment for `capacity` events and `bytes` bytes of event data.
    pub fn new(capacity: u32, bytes: u32) -> Self {
        Self {
            // vec! of zeroes is calloc'd: pages are committed when first written.
            data: vec![0u8; bytes as usize].into_boxed_slice(),
            ends: vec![0u32; capacity as usize].into_boxed_slice(),
            len: 0,
            first_seq: 0,
        }
    }

    /// Empties the segment; its next event gets sequence number `first_seq`.
    pub fn reset(&mut self, first_seq: u64) {
        self.len = 0;
        self.first_seq = first_seq;
    }

    /// Sequence number of the first event.
    #[inline]
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// Sequence number after the last event.
    #[inline]
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.len)
    }

    /// Events held.
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when no event is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn offset_of(&self, index: u32) -> u32 {
        if index == 0 {
            0
        } else {
            self.ends[index as usize - 1]
        }
    }

    /// Appends `event` if both an index slot and its bytes fit; false otherwise.
    #[inline]
    pub fn try_push(&mut self, event: &[u8]) -> bool {
        if self.len as usize == self.ends.len() {
            return false;
        }
        let start = self.offset_of(self.len) as usize;
        let end = start + event.len();
        if end > self.data.len() {
            return false;
        }
        self.data[start..end].copy_from_slice(event);
        self.ends[self.len as usize] = end as u32;
        self.len += 1;
        true
    }

    /// Events `from..to` (sequence numbers, within this segment) as one piece.
    pub fn piece(&self, from: u64, to: u64) -> Piece<'_> {
        debug_assert!(self.first_seq <= from && from <= to && to <= self.end_seq());
        let i = (from - self.first_seq) as u32;
        let j = (to - self.first_seq) as u32;
        let base = self.offset_of(i);
        let end = self.offset_of(j);
        Piece {
            data: &self.data[base as usize..end as usize],
            base,
            ends: &self.ends[i as usize..j as usize],
        }
    }

    /// Bytes of events `from..to` (sequence numbers, within this segment).
    pub fn bytes_between(&self, from: u64, to: u64) -> u64 {
        let i = (from - self.first_seq) as u32;
        let j = (to - self.first_seq) as u32;
        u64::from(self.offset_of(j) - self.offset_of(i))
    }

    /// Bytes allocated for this segment (data and index).
    pub fn footprint_bytes(&self) -> usize {
        self.data.len() + std::mem::size_of_val(&*self.ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_by_count_and_by_bytes() {
        let mut s = Segment::new(3, 10);
        s.reset(100);
        assert!(s.try_push(b"abcd"));
        assert!(s.try_push(b""));
        assert!(!s.try_push(b"1234567"), "7 more bytes do not fit in 10");
        assert!(s.try_push(b"123456"));
        assert!(!s.try_push(b""), "index full");
        assert_eq!((s.first_seq(), s.end_seq(), s.len()), (100, 103, 3));
        let p = s.piece(100, 103);
        let evs: Vec<&[u8]> = p.event_ranges().map(|r| &p.data[r]).collect();
        assert_eq!(evs, vec![&b"abcd"[..], b"", b"123456"]);
        let p = s.piece(101, 103);
        assert_eq!(p.data, b"123456");
        assert_eq!(s.bytes_between(100, 101), 4);
        assert_eq!(s.bytes_between(100, 103), 10);
        s.reset(7);
        assert!(s.is_empty());
        assert!(s.try_push(b"0123456789"));
        assert_eq!(s.piece(7, 8).data, b"0123456789");
    }
}
