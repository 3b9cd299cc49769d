//! A subject's latency histogram: log-linear buckets in time slices, striped per
//! scheduler thread.
//!
//! # Buckets
//!
//! Values are milliseconds, `0..=MAX_LATENCY_MS` (larger values count as the largest).
//! Values below 64 have a bucket each; above, every power of two `[2^k, 2^(k+1))` is cut
//! into 32 buckets of equal width `2^(k-5)` (as HdrHistogram does). A value is reported
//! as the middle of its bucket, so the reported value is off by at most half a bucket's
//! width over its lower bound: `2^(k-6) / 2^k = 1/64`, a relative error of at most
//! 1.6 % ([`MAX_RELATIVE_ERROR`]). The index of a value is a few shifts of its bit
//! length; recording it is one relaxed `fetch_add`.
//!
//! # Time
//!
//! The window (`latency_window_ms`) is kept as [`SLICES`] slices of a quarter window
//! each: writers count into the current slice; the timer ([`Histogram::rotate`]) clears
//! the oldest slice and makes it current when a quarter window has passed. A quantile
//! sums every slice, so it covers the last three quarters to one whole window.
//!
//! # Memory
//!
//! `SLICES × stripes × BUCKETS` `u32` counts, fixed at creation: with [`BUCKETS`] = 576,
//! 9 216 bytes per stripe, 18 KiB with 2 stripes. A subject allocates its histogram on
//! its first latency ([`crate::subject::Subject`] holds it in a `OnceLock`), so
//! subjects that never record a latency pay one pointer.
//!
//! # Concurrency
//!
//! Invariant: every recorded value is counted in exactly one bucket of one slice of one
//! stripe, and only the timer clears slices; a clear and a late writer can only move a
//! sample from one quarter window to the next, never lose the count of a current one.
//! Each thread writes to the stripe of its own index ([`thread_index`]), and stripes sit
//! on separate cache lines ([`Block`]), so threads on different schedulers do not write
//! the same line. A writer reads the current slice index once; if the timer moves on in
//! between, the value lands in the slice that just closed, which is still summed.
//!
//! Memory ordering: `Relaxed` throughout. Counts order nothing else, a quantile is an
//! estimate of a moving window, and the slice index needs no ordering with the counts:
//! the cleared slice is not current until after it was cleared by the same thread, and a
//! writer that saw an older index writes into a slice that is not being cleared (the
//! timer clears the slice *after* the current one, which no writer has been told of
//! for three quarters of a window).

use crate::counters::{stripe_count, thread_index};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

/// Bits of a value that get a bucket each: values below `2^LINEAR_BITS` are exact.
const LINEAR_BITS: u32 = 6;
/// Sub-buckets per power of two above the linear range: `2^SUB_BITS`.
const SUB_BITS: u32 = 5;
/// Bit length of the largest value kept.
const MAX_BITS: u32 = 22;

/// Largest latency counted as itself (about 70 minutes); larger ones count as this.
pub const MAX_LATENCY_MS: u64 = (1 << MAX_BITS) - 1;
/// Buckets per slice and stripe.
pub const BUCKETS: usize = ((MAX_BITS - LINEAR_BITS + 2) << SUB_BITS) as usize;
/// Time slices per window.
pub const SLICES: usize = 4;
/// Most stripes a histogram has (fewer than the counters may have: a histogram stripe is
/// 9 KiB, a counter stripe 128 bytes).
pub const MAX_STRIPES: usize = 4;
/// Largest relative error of a reported value against the recorded value it stands for.
pub const MAX_RELATIVE_ERROR: f64 = 1.0 / 64.0;

const PER_BLOCK: usize = 32;
const BLOCKS: usize = BUCKETS / PER_BLOCK;

/// 32 counts on their own 128 bytes: the unit of a stripe, so that no two stripes share
/// a cache line (or an adjacent-line prefetch pair).
#[repr(C, align(128))]
struct Block([AtomicU32; PER_BLOCK]);

impl Block {
    fn new() -> Self {
        Block(std::array::from_fn(|_| AtomicU32::new(0)))
    }
}

/// The bucket of `ms`.
#[inline]
pub fn bucket(ms: u64) -> usize {
    let v = ms.min(MAX_LATENCY_MS);
    // Bit length of `v`, at least LINEAR_BITS: values below 64 get shift 0.
    let len = u64::BITS - (v | ((1 << LINEAR_BITS) - 1)).leading_zeros();
    let shift = len - LINEAR_BITS;
    // For shift > 0, `v >> shift` is in [32, 64): the bucket within its power of two.
    ((shift << SUB_BITS) as u64 + (v >> shift)) as usize
}

/// The value a sample in bucket `b` is reported as: the middle of the bucket.
pub fn value(b: usize) -> u64 {
    let b = b as u64;
    if b < 1 << LINEAR_BITS {
        return b;
    }
    let shift = (b >> SUB_BITS) - 1;
    let lo = ((b & ((1 << SUB_BITS) - 1)) | (1 << SUB_BITS)) << shift;
    lo + ((1 << shift) - 1) / 2
}

/// The lowest value of bucket `b`.
pub fn lowest(b: usize) -> u64 {
    let b = b as u64;
    if b < 1 << LINEAR_BITS {
        return b;
    }
    let shift = (b >> SUB_BITS) - 1;
    ((b & ((1 << SUB_BITS) - 1)) | (1 << SUB_BITS)) << shift
}

/// A quantile read from the histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantile {
    /// The value (ms) of the sample at the quantile's rank, within [`MAX_RELATIVE_ERROR`].
    pub value_ms: u64,
    /// Samples in the window.
    pub samples: u64,
}

/// A latency histogram; see the module documentation.
pub struct Histogram {
    blocks: Box<[Block]>,
    stripes: usize,
    current: AtomicUsize,
    /// Set by `record` (when not set already), swapped back by the timer: there are
    /// samples to look at.
    armed: AtomicBool,
}

impl Histogram {
    /// An empty histogram with as many stripes as the counters, at most
    /// [`MAX_STRIPES`].
    pub fn new() -> Self {
        Self::with_stripes(stripe_count().min(MAX_STRIPES))
    }

    /// An empty histogram with `n` stripes (rounded up to a power of two).
    pub fn with_stripes(n: usize) -> Self {
        let stripes = n.max(1).next_power_of_two();
        Self {
            blocks: (0..SLICES * stripes * BLOCKS)
                .map(|_| Block::new())
                .collect(),
            stripes,
            current: AtomicUsize::new(0),
            armed: AtomicBool::new(false),
        }
    }

    /// Bytes of counts this histogram holds.
    pub fn footprint_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.blocks)
    }

    /// Number of stripes.
    pub fn stripes(&self) -> usize {
        self.stripes
    }

    #[inline]
    fn count(&self, slice: usize, stripe: usize, b: usize) -> &AtomicU32 {
        let block = (slice * self.stripes + stripe) * BLOCKS + b / PER_BLOCK;
        &self.blocks[block].0[b % PER_BLOCK]
    }

    /// Counts one call that took `ms`.
    #[inline]
    pub fn record(&self, ms: u64) {
        let slice = self.current.load(Ordering::Relaxed);
        let stripe = thread_index() & (self.stripes - 1);
        self.count(slice, stripe, bucket(ms))
            .fetch_add(1, Ordering::Relaxed);
        // Read before writing: written once per visit of the timer at most.
        if !self.armed.load(Ordering::Relaxed) {
            self.armed.store(true, Ordering::Relaxed);
        }
    }

    /// True when a value was recorded since the last [`Histogram::disarm`].
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// The timer's part: clears [`Histogram::is_armed`] before it reads the counts (a
    /// value recorded after this arms it again).
    pub fn disarm(&self) {
        self.armed.swap(false, Ordering::AcqRel);
    }

    /// The timer's part: moves on by `slices` quarter windows (at most [`SLICES`]),
    /// clearing each slice before it becomes current. Only one thread may rotate at a
    /// time (the subject serialises it).
    pub fn rotate(&self, slices: usize) {
        let mut current = self.current.load(Ordering::Relaxed);
        for _ in 0..slices.min(SLICES) {
            let next = (current + 1) % SLICES;
            for stripe in 0..self.stripes {
                for b in 0..BUCKETS {
                    self.count(next, stripe, b).store(0, Ordering::Relaxed);
                }
            }
            self.current.store(next, Ordering::Relaxed);
            current = next;
        }
    }

    fn merged(&self, b: usize) -> u64 {
        let mut n = 0u64;
        for slice in 0..SLICES {
            for stripe in 0..self.stripes {
                n += u64::from(self.count(slice, stripe, b).load(Ordering::Relaxed));
            }
        }
        n
    }

    /// The `q` quantile (0 < q <= 1) of the window by nearest rank: the value of the
    /// sample at rank `ceil(q × n)` of the `n` samples in order. `None` when the window
    /// holds no sample.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let merged: Vec<u64> = (0..BUCKETS).map(|b| self.merged(b)).collect();
        quantile_of(&merged, q)
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The `q` quantile of bucket counts `counts` (indexed by bucket), by nearest rank.
pub fn quantile_of(counts: &[u64], q: f64) -> Option<Quantile> {
    let samples: u64 = counts.iter().sum();
    if samples == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * samples as f64).ceil() as u64).clamp(1, samples);
    let mut seen = 0;
    for (b, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(Quantile {
                value_ms: value(b),
                samples,
            });
        }
    }
    unreachable!("the ranks of {samples} samples end in the last bucket")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_monotonic_and_exact_below_64() {
        assert_eq!(BUCKETS, 576);
        for v in 0..64 {
            assert_eq!(bucket(v), v as usize);
            assert_eq!(value(bucket(v)), v);
        }
        let mut prev = 0;
        for v in 1..(1u64 << 20) {
            let b = bucket(v);
            assert!(b == prev || b == prev + 1, "gap at {v}: {prev} -> {b}");
            assert!(lowest(b) <= v, "{v} below its bucket {b}");
            prev = b;
        }
        assert_eq!(bucket(MAX_LATENCY_MS), BUCKETS - 1);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert_eq!(bucket(MAX_LATENCY_MS + 1), BUCKETS - 1);
    }

    #[test]
    fn every_value_is_reported_within_the_error_bound() {
        let mut worst = 0.0f64;
        let mut v = 1u64;
        while v <= MAX_LATENCY_MS {
            let r = value(bucket(v));
            let e = (r as f64 - v as f64).abs() / v as f64;
            worst = worst.max(e);
            v = if v < 100_000 { v + 1 } else { v + v / 997 };
        }
        assert!(worst <= MAX_RELATIVE_ERROR, "worst relative error {worst}");
        const { assert!(MAX_RELATIVE_ERROR < 0.02) };
    }

    #[test]
    fn quantile_by_nearest_rank() {
        let h = Histogram::with_stripes(1);
        assert_eq!(h.quantile(0.95), None);
        for v in 1..=60 {
            h.record(v);
        }
        // Exact below 64: ranks ceil(0.95 × 60) = 57, 60 and 1.
        assert_eq!(h.quantile(0.95).unwrap().value_ms, 57);
        assert_eq!(h.quantile(1.0).unwrap().value_ms, 60);
        assert_eq!(h.quantile(0.01).unwrap().value_ms, 1);
        assert_eq!(h.quantile(0.95).unwrap().samples, 60);
        // Above, the middle of the bucket: 95 shares [94, 95] with 94.
        for v in 61..=100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.95).unwrap().value_ms, 94);
        assert_eq!(h.quantile(1.0).unwrap().value_ms, 100);
    }

    #[test]
    fn rotation_forgets_the_oldest_quarter_only() {
        let h = Histogram::with_stripes(2);
        h.record(10);
        h.rotate(1);
        h.record(20);
        h.rotate(1);
        h.record(30);
        h.rotate(1);
        h.record(40);
        assert_eq!(h.quantile(1.0).unwrap().samples, 4);
        h.rotate(1); // the slice holding 10 is cleared and becomes current
        let q = h.quantile(0.01).unwrap();
        assert_eq!((q.samples, q.value_ms), (3, 20));
        h.rotate(SLICES + 3); // a long silence clears everything, once
        assert_eq!(h.quantile(0.5), None);
    }

    #[test]
    fn stripes_are_separate_cache_lines_and_footprint_is_as_documented() {
        let h = Histogram::with_stripes(2);
        assert_eq!(std::mem::size_of::<Block>(), 128);
        assert_eq!(h.footprint_bytes(), SLICES * 2 * BUCKETS * 4);
        assert_eq!(h.footprint_bytes(), 18_432);
        // The last count of stripe 0 and the first of stripe 1 are neighbours in
        // memory, in different 128-byte blocks.
        let a = h.count(0, 0, BUCKETS - 1) as *const _ as usize;
        let b = h.count(0, 1, 0) as *const _ as usize;
        assert_eq!(b - a, 4);
        assert_ne!(a / 128, b / 128);
        assert_eq!(b % 128, 0);
    }

    #[test]
    fn exact_counts_under_many_threads() {
        let h = std::sync::Arc::new(Histogram::with_stripes(4));
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        h.record((i * 7 + t) % 10_000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.quantile(0.5).unwrap().samples, 8 * 20_000);
    }
}
