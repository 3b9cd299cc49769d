//! CRC-32C of records, computed while the payload is copied into its segment.
//!
//! The value is the CRC-32C (Castagnoli polynomial) register after the bytes, from a
//! given seed, without the usual final inversion: `raw(seed, d) ==
//! !crc32c::crc32c_append(!seed, d)` (the `crc32c` crate is the reference in the tests
//! and the fallback on CPUs without the instructions below).
//!
//! Why it is written here rather than taken from a crate: a `:crash` enqueue must have
//! the checksum of its record in the mapped file when it returns, and for a 256-byte
//! event the checksum was the whole difference between `:crash` and `:memory`
//! (measured with `perf` on the criterion bench: with the checksum turned off the two
//! modes cost the same). No crate computes a checksum while copying, and below 768
//! bytes the crates run one dependency chain (`crc32c`: the `crc32` instruction 8 bytes
//! at a time, 3 cycles each; `crc32fast`: carry-less multiplication folds with a long
//! final reduction). Here, on x86-64 with SSE 4.2 and PCLMULQDQ, the payload is read
//! once, 8 bytes at a time: each word is stored into the segment and fed to one of
//! three `crc32` chains that run side by side (three runs of `k` words), and the three
//! registers are combined with a carry-less multiply by `x^(64k)` and `x^(128k)`
//! (constants for every `k` up to [`MAX_K`], built at compile time). The copy costs
//! nothing extra (the loads were needed anyway) and the checksum about a third of a
//! single chain.
//!
//! Invariant: [`raw`] and [`copy_raw`] return the same value for the same bytes on every
//! CPU (checked against the crate for every length up to a few KiB, every alignment).

/// The CRC-32C polynomial, reflected.
const POLY: u32 = 0x82F6_3B78;
/// Longest run (in 8-byte words) of one chain; longer payloads take several rounds.
pub const MAX_K: usize = 128;
/// Shortest run worth three chains (the combine costs about two multiplies).
const MIN_K: usize = 6;

/// `x^m mod P`, reflected, advanced from `x^start` (`r`) by `m - start` steps.
const fn mul_x(mut r: u32, mut steps: u32) -> u32 {
    while steps > 0 {
        r = if r & 1 != 0 { (r >> 1) ^ POLY } else { r >> 1 };
        steps -= 1;
    }
    r
}

/// `SHIFT[k] = (x^(64k - 33) mod P, x^(128k - 33) mod P)`: multiplying a register by
/// one of these with a carry-less multiply and reducing the 64-bit product with the
/// `crc32` instruction shifts it past `k` (or `2k`) words of zeros.
const SHIFT: [(u32, u32); MAX_K + 1] = {
    let mut t = [(0u32, 0u32); MAX_K + 1];
    // x^31 and x^95 (64·1 − 33 and 128·1 − 33), then 64 and 128 more steps per k.
    let mut one = mul_x(0x8000_0000, 31);
    let mut two = mul_x(0x8000_0000, 95);
    let mut k = 1;
    while k <= MAX_K {
        t[k] = (one, two);
        one = mul_x(one, 64);
        two = mul_x(two, 128);
        k += 1;
    }
    t
};

/// The CRC-32C register after `bytes`, from `seed`.
#[inline]
pub fn raw(seed: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if hw() {
        // SAFETY: the CPU has the features (checked); `bytes` is readable, and with
        // COPY false nothing is written.
        return unsafe {
            hw_crc::<false>(
                seed,
                None,
                bytes.as_ptr(),
                std::ptr::null_mut(),
                bytes.len(),
            )
        };
    }
    !crc32c::crc32c_append(!seed, bytes)
}

/// Copies `src` to `dst` and returns the CRC-32C register after `src`, from `seed`.
///
/// # Safety
/// `dst` is valid for writes of `src.len()` bytes and does not overlap `src`.
#[inline]
pub unsafe fn copy_raw(seed: u32, src: &[u8], dst: *mut u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if hw() {
        // SAFETY: features checked; per the caller's contract for `dst`.
        return unsafe { hw_crc::<true>(seed, None, src.as_ptr(), dst, src.len()) };
    }
    // SAFETY: per the caller's contract.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    !crc32c::crc32c_append(!seed, src)
}

/// Copies `payload` to `dst` and returns the CRC-32C register after the 8 bytes of
/// `stamp` (little endian) and then `payload`, from `seed`: a record's checksum, the
/// stamp taken as the first word of the first chain.
///
/// # Safety
/// As [`copy_raw`].
#[inline]
pub unsafe fn copy_record(seed: u32, stamp: u64, payload: &[u8], dst: *mut u8) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if hw() {
        // SAFETY: features checked; per the caller's contract for `dst`.
        return unsafe { hw_crc::<true>(seed, Some(stamp), payload.as_ptr(), dst, payload.len()) };
    }
    // SAFETY: per the caller's contract.
    unsafe { copy_raw(raw_fallback_u64(seed, stamp), payload, dst) }
}

/// The register after the 8 bytes of `word` (little endian), from `seed`.
#[inline]
pub fn raw_u64(seed: u32, word: u64) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if hw() {
        // SAFETY: features checked.
        return unsafe { hw_u64(seed, word) };
    }
    raw_fallback_u64(seed, word)
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn raw_fallback_u64(seed: u32, word: u64) -> u32 {
    !crc32c::crc32c_append(!seed, &word.to_le_bytes())
}

/// Whether the CPU has the `crc32` and carry-less multiply instructions (the check is a
/// cached load).
#[cfg(target_arch = "x86_64")]
#[inline]
fn hw() -> bool {
    std::is_x86_feature_detected!("sse4.2") && std::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn hw_u64(seed: u32, word: u64) -> u32 {
    std::arch::x86_64::_mm_crc32_u64(u64::from(seed), word) as u32
}

/// Shifts register `crc` past the words the constant `k` stands for.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2,pclmulqdq")]
#[inline]
unsafe fn shift(crc: u32, k: u32) -> u32 {
    use std::arch::x86_64::*;
    let p = _mm_clmulepi64_si128(
        _mm_cvtsi32_si128(crc as i32),
        _mm_cvtsi32_si128(k as i32),
        0,
    );
    _mm_crc32_u64(0, _mm_cvtsi128_si64(p) as u64) as u32
}

/// The register after `lead` (8 bytes, when given) then `n` bytes at `src`, copying
/// those to `dst` when `COPY`.
///
/// # Safety
/// The CPU has SSE 4.2 and PCLMULQDQ; `src` is readable for `n` bytes; with `COPY`,
/// `dst` is writable for `n` bytes and does not overlap `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2,pclmulqdq")]
unsafe fn hw_crc<const COPY: bool>(
    seed: u32,
    lead: Option<u64>,
    src: *const u8,
    dst: *mut u8,
    n: usize,
) -> u32 {
    use std::arch::x86_64::*;
    let mut crc = u64::from(seed);
    // Words of the chains: the lead (already in `crc`, counted in chain 0's first
    // round) and the payload's whole words.
    let mut lead_words = 0usize;
    if let Some(w) = lead {
        crc = _mm_crc32_u64(crc, w);
        lead_words = 1;
    }
    let mut at = 0usize; // payload bytes consumed
    let mut words = n / 8 + lead_words;
    // SAFETY (whole block): every access is below `n`, per the contract.
    unsafe {
        while words >= 3 * MIN_K {
            let k = (words / 3).min(MAX_K);
            // Chain 0 takes k words (the lead, if not yet counted, among them), chains
            // 1 and 2 take k each, from the bytes after chain 0's.
            let k0 = k - lead_words;
            let p0 = src.add(at);
            let p1 = p0.add(8 * k0);
            let p2 = p1.add(8 * k);
            let (d0, d1, d2) = (
                dst.wrapping_add(at),
                dst.wrapping_add(at + 8 * k0),
                dst.wrapping_add(at + 8 * (k0 + k)),
            );
            let (mut c0, mut c1, mut c2) = (crc, 0u64, 0u64);
            for j in 0..k0 {
                let w0 = (p0.add(8 * j) as *const u64).read_unaligned();
                let w1 = (p1.add(8 * j) as *const u64).read_unaligned();
                let w2 = (p2.add(8 * j) as *const u64).read_unaligned();
                if COPY {
                    (d0.add(8 * j) as *mut u64).write_unaligned(w0);
                    (d1.add(8 * j) as *mut u64).write_unaligned(w1);
                    (d2.add(8 * j) as *mut u64).write_unaligned(w2);
                }
                c0 = _mm_crc32_u64(c0, w0);
                c1 = _mm_crc32_u64(c1, w1);
                c2 = _mm_crc32_u64(c2, w2);
            }
            for j in k0..k {
                let w1 = (p1.add(8 * j) as *const u64).read_unaligned();
                let w2 = (p2.add(8 * j) as *const u64).read_unaligned();
                if COPY {
                    (d1.add(8 * j) as *mut u64).write_unaligned(w1);
                    (d2.add(8 * j) as *mut u64).write_unaligned(w2);
                }
                c1 = _mm_crc32_u64(c1, w1);
                c2 = _mm_crc32_u64(c2, w2);
            }
            let (one, two) = SHIFT[k];
            crc = u64::from(shift(c0 as u32, two) ^ shift(c1 as u32, one) ^ c2 as u32);
            at += 8 * (k0 + 2 * k);
            words -= 3 * k;
            lead_words = 0;
        }
        while at + 8 <= n {
            let w = (src.add(at) as *const u64).read_unaligned();
            if COPY {
                (dst.add(at) as *mut u64).write_unaligned(w);
            }
            crc = _mm_crc32_u64(crc, w);
            at += 8;
        }
        let mut crc = crc as u32;
        while at < n {
            let b = *src.add(at);
            if COPY {
                *dst.add(at) = b;
            }
            crc = _mm_crc32_u8(crc, b);
            at += 1;
        }
        crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(seed: u32, d: &[u8]) -> u32 {
        !crc32c::crc32c_append(!seed, d)
    }

    #[test]
    fn agrees_with_the_crate_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..9000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut lens: Vec<usize> = (0..700).collect();
        lens.extend([
            8 * 3 * MAX_K - 1,
            8 * 3 * MAX_K,
            8 * 3 * MAX_K + 9,
            8 * 7 * MAX_K + 5,
            8191,
        ]);
        for &len in &lens {
            for off in [0usize, 1, 3, 7] {
                let src = &data[off..off + len];
                for seed in [0u32, 1, 0xdead_beef] {
                    let want = reference(seed, src);
                    assert_eq!(raw(seed, src), want, "len {len} off {off}");
                    let mut dst = vec![0u8; len + 16];
                    // SAFETY: `dst` has room for `len` bytes at 8 and is its own buffer.
                    let got = unsafe { copy_raw(seed, src, dst.as_mut_ptr().add(8)) };
                    assert_eq!(got, want, "copy: len {len} off {off}");
                    assert_eq!(&dst[8..8 + len], src, "copied bytes");
                    assert!(dst[..8].iter().chain(&dst[8 + len..]).all(|&b| b == 0));
                }
            }
        }
    }

    #[test]
    fn a_word_then_bytes_is_the_crc_of_the_concatenation() {
        let stamp = 0x0102_0304_0506_0708u64;
        let payload = [7u8; 300];
        let mut all = stamp.to_le_bytes().to_vec();
        all.extend_from_slice(&payload);
        assert_eq!(raw(5, &payload[..0]), 5);
        assert_eq!(raw(5, &all), raw(raw_u64(5, stamp), &payload));
        assert_eq!(raw_u64(5, stamp), raw_fallback_u64(5, stamp));
        assert_eq!(raw(5, &all), reference(5, &all));
        for len in 0..700 {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut all = stamp.to_le_bytes().to_vec();
            all.extend_from_slice(&payload);
            let mut dst = vec![0u8; len];
            // SAFETY: `dst` holds `len` bytes and is its own buffer.
            let got = unsafe { copy_record(9, stamp, &payload, dst.as_mut_ptr()) };
            assert_eq!(got, reference(9, &all), "len {len}");
            assert_eq!(dst, payload);
        }
    }
}
