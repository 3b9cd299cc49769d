//! The overload signals' rule: a threshold with hysteresis.
//!
//! ```text
//!                 value > threshold
//!   calm ───────────────────────────────▶ overloaded
//!    ▲                                        │
//!    └──── value <= floor(ratio × threshold) ─┘
//! ```
//!
//! A subject has three signals ([`Signal`]): its queue depth against
//! `warning_threshold`, the p95 of its call latencies against `latency_overload_ms`, and
//! its calls in flight against `inflight_overload`; `ratio` is the policy's
//! `recovery_threshold` for all three. Between the recovery value and the threshold a
//! signal keeps its state, so a value that hovers around the threshold does not flap.
//! A threshold of `None` turns the signal off (never overloaded).
//!
//! The flags live in the subject's state word ([`crate::state`]), where the router's
//! status counts them: one overloaded signal is a warning, two or more make the status
//! active and `admit` refuses with `overloaded`. This module is the pure rule; the
//! subject applies it by compare-and-swap when a value changes (depth) or when the
//! timer or a report refreshes it (latency, in-flight).
//!
//! [`Signal`]: crate::state::Signal

/// A signal's threshold and recovery value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threshold {
    /// Overloaded above this.
    pub above: u64,
    /// Calm again at or below this.
    pub recover_at: u64,
}

impl Threshold {
    /// A signal that is never overloaded.
    pub const OFF: Threshold = Threshold {
        above: u64::MAX,
        recover_at: u64::MAX,
    };

    /// The threshold `threshold` (`None`: off) with recovery at
    /// `floor(ratio × threshold)`.
    pub fn new(threshold: Option<u64>, ratio: f64) -> Self {
        match threshold {
            None => Self::OFF,
            Some(t) => Threshold {
                above: t,
                recover_at: recovery_value(t, ratio),
            },
        }
    }

    /// Whether a signal that is `overloaded` now is overloaded at `value`.
    #[inline]
    pub fn next(self, overloaded: bool, value: u64) -> bool {
        if value > self.above {
            true
        } else if value <= self.recover_at {
            false
        } else {
            overloaded
        }
    }

    /// [`Threshold::next`] for a value known only within `lo..=hi` (a count read while
    /// it moves): overloaded once even `lo` is above the threshold, calm once even `hi`
    /// is at or below the recovery value, unchanged otherwise.
    #[inline]
    pub fn next_within(self, overloaded: bool, lo: u64, hi: u64) -> bool {
        if lo > self.above {
            true
        } else if hi <= self.recover_at {
            false
        } else {
            overloaded
        }
    }

    /// True when the signal is off.
    pub fn is_off(self) -> bool {
        self == Self::OFF
    }
}

/// `floor(ratio × threshold)`: at or below it an overloaded signal is calm again.
pub fn recovery_value(threshold: u64, ratio: f64) -> u64 {
    (ratio * threshold as f64).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_sets_at_or_below_recovery_clears_between_holds() {
        let t = Threshold::new(Some(5_000), 0.5);
        assert_eq!(t.recover_at, 2_500);
        // (overloaded now, value, overloaded next)
        let table = [
            (false, 0, false),
            (false, 5_000, false),
            (false, 5_001, true),
            (true, 5_001, true),
            (true, 5_000, true),
            (true, 2_501, true),
            (true, 2_500, false),
            (false, 2_501, false),
            (false, u64::MAX, true),
        ];
        for (now, value, next) in table {
            assert_eq!(t.next(now, value), next, "{now} at {value}");
        }
    }

    #[test]
    fn an_uncertain_reading_changes_nothing() {
        let t = Threshold::new(Some(100), 0.5);
        assert!(!t.next_within(false, 90, 200), "not surely above");
        assert!(t.next_within(true, 40, 60), "not surely recovered");
        assert!(t.next_within(false, 101, 400));
        assert!(!t.next_within(true, 0, 50));
        for v in [0, 50, 51, 100, 101] {
            for now in [false, true] {
                assert_eq!(t.next_within(now, v, v), t.next(now, v));
            }
        }
    }

    #[test]
    fn off_is_never_overloaded_and_clears_a_stale_flag() {
        let t = Threshold::new(None, 0.5);
        assert!(t.is_off());
        for value in [0, 1, 5_000, u64::MAX] {
            assert!(!t.next(false, value));
            assert!(!t.next(true, value));
        }
    }

    #[test]
    fn recovery_is_below_the_threshold_for_every_valid_ratio() {
        for t in [1, 2, 3, 7, 500, 5_000, 1 << 47] {
            for r in [0.01, 0.2, 0.5, 0.9, 0.999_999] {
                let th = Threshold::new(Some(t), r);
                assert!(th.recover_at < th.above, "{t} × {r}");
            }
        }
    }
}
