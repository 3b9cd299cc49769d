//! The backpressure state machine's depth rules, as a pure function.
//!
//! ```text
//!            depth >= warning                depth >= critical or no segment
//!   normal ───────────────────▶ pressure ─────────────────────────────▶ dropping
//!     ▲  │                         │                                     │   ▲
//!     │  └───── depth >= critical or no segment ────────────────────────▶│   │
//!     │◀──── depth <= recovery ────┘                                     │   │
//!     │                                depth <= recovery and a segment   │   │
//!     │                                 can be had                       ▼   │
//!     └──── depth stayed <= recovery for stability_ms ───────────── recovery ┘
//!                                                     depth >= critical or no segment
//! ```
//!
//! `recovery depth = floor(recovery_threshold × warning)`. Between the recovery depth and
//! the thresholds every state stays as it is (hysteresis). The stability period is the
//! only rule that needs time; [`next`] leaves it to the caller, which keeps the stamp of
//! when the depth last became calm.

use crate::state::BackpressureState::{self, *};

/// Thresholds in events, derived from a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// `pressure` from here.
    pub warning: u64,
    /// `dropping` from here.
    pub critical: u64,
    /// Recovered at or below this.
    pub recovery: u64,
}

/// The state `depth` leads to from `state`, ignoring the stability period (a subject in
/// `recovery` stays there by this rule). `exhausted`: the pool could not give the
/// subject a segment, and it has not released or obtained one since.
#[inline]
pub fn next(
    state: BackpressureState,
    depth: u64,
    exhausted: bool,
    t: &Thresholds,
) -> BackpressureState {
    let critical = depth >= t.critical || exhausted;
    match state {
        Normal if critical => Dropping,
        Normal if depth >= t.warning => Pressure,
        Pressure if critical => Dropping,
        Pressure if depth <= t.recovery => Normal,
        Dropping if depth <= t.recovery && !exhausted => Recovery,
        Recovery if critical => Dropping,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        warning: 10_000,
        critical: 50_000,
        recovery: 5_000,
    };

    #[test]
    fn transition_table() {
        // (from, depth, exhausted, to)
        let table = [
            (Normal, 0, false, Normal),
            (Normal, 9_999, false, Normal),
            (Normal, 10_000, false, Pressure),
            (Normal, 49_999, false, Pressure),
            (Normal, 50_000, false, Dropping),
            (Normal, 0, true, Dropping),
            (Pressure, 7_000, false, Pressure),
            (Pressure, 5_000, false, Normal),
            (Pressure, 50_000, false, Dropping),
            (Pressure, 100, true, Dropping),
            (Dropping, 49_999, false, Dropping),
            (Dropping, 5_001, false, Dropping),
            (Dropping, 5_000, false, Recovery),
            (Dropping, 0, true, Dropping),
            (Recovery, 0, false, Recovery),
            (Recovery, 20_000, false, Recovery),
            (Recovery, 50_000, false, Dropping),
            (Recovery, 0, true, Dropping),
        ];
        for (from, depth, exhausted, to) in table {
            assert_eq!(
                next(from, depth, exhausted, &T),
                to,
                "{from:?} at {depth} exhausted={exhausted}"
            );
        }
    }

    #[test]
    fn next_is_a_fixed_point_after_one_step() {
        // One application reaches the target for any depth: no chains without time.
        for from in [Normal, Pressure, Dropping, Recovery] {
            for depth in [
                0,
                4_999,
                5_000,
                5_001,
                9_999,
                10_000,
                49_999,
                50_000,
                1 << 40,
            ] {
                for ex in [false, true] {
                    let a = next(from, depth, ex, &T);
                    let b = next(a, depth, ex, &T);
                    // dropping -> recovery is the only rule whose target can move again by
                    // depth alone, and it cannot: recovery needs time to reach normal.
                    assert_eq!(a, b, "{from:?} {depth} {ex}");
                }
            }
        }
    }
}
