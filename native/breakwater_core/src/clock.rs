//! Time sources.
//!
//! Every time-dependent rule (open timeout, stability period, failure-rate window) asks a
//! [`Clock`] for the current time in milliseconds, and only when the rule is in play: a
//! subject that is `closed` and `normal` never reads the clock on its hot paths.
//!
//! [`MonotonicClock`] is the production clock. It can be moved forward with
//! [`MonotonicClock::advance`] so that tests of the VM layer never sleep through real
//! timeouts; [`ManualClock`] is a clock that only moves when told to, for unit tests.
//!
//! Memory ordering: the offset and the manual time are independent values read with
//! `Relaxed`; a reader that sees an older value sees an earlier time, which every rule
//! treats as "not yet".

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A source of monotonic milliseconds.
pub trait Clock: Send + Sync {
    /// Milliseconds since an arbitrary, fixed origin. Never decreases.
    fn now_ms(&self) -> u64;
}

/// The system's monotonic clock plus an offset that tests may advance.
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
    offset_ms: AtomicU64,
}

impl MonotonicClock {
    /// A clock whose origin is now. Its first reading is 1 ms, so that 0 never names a
    /// real instant.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            offset_ms: AtomicU64::new(1),
        }
    }

    /// Moves this clock forward by `ms` milliseconds, for every reader.
    pub fn advance(&self, ms: u64) {
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + self.offset_ms.load(Ordering::Relaxed)
    }
}

/// A clock that only moves when [`ManualClock::advance`] or [`ManualClock::set`] is called.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock that reads `start_ms` until moved.
    pub fn new(start_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets the clock; callers keep it monotonic.
    pub fn set(&self, ms: u64) {
        self.now_ms.store(ms, Ordering::Relaxed);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(1_000)
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }
}

impl<C: Clock> Clock for &C {
    #[inline]
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// The time of one operation: the clock is read at most once, and only if a rule asks.
pub(crate) struct Now<'a, C: Clock> {
    clock: &'a C,
    ms: std::cell::Cell<Option<u64>>,
}

impl<'a, C: Clock> Now<'a, C> {
    /// The time of an operation that starts now, not read yet.
    pub(crate) fn new(clock: &'a C) -> Self {
        Self {
            clock,
            ms: std::cell::Cell::new(None),
        }
    }

    /// The operation's time: read on the first call, the same value after.
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        match self.ms.get() {
            Some(ms) => ms,
            None => {
                let ms = self.clock.now_ms();
                self.ms.set(Some(ms));
                ms
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_advances_and_never_reads_zero() {
        let c = MonotonicClock::new();
        let a = c.now_ms();
        assert!(a >= 1);
        c.advance(5_000);
        assert!(c.now_ms() >= a + 5_000);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(10);
        assert_eq!(c.now_ms(), 10);
        c.advance(5);
        assert_eq!(c.now_ms(), 15);
        c.set(100);
        assert_eq!(c.now_ms(), 100);
    }
}
