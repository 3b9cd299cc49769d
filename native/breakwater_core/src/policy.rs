//! Policies: what a subject's breaker, backpressure and spool obey, and the ring pool's
//! geometry.
//!
//! These are plain values with serde support and a `validate` that reports every
//! violation at once. The Elixir layer validates user input first and gives the
//! user-facing messages; the core validates again so that no invariant it relies on
//! (recovery depth < warning < critical, probe limits that fit the state word, ...)
//! depends on the caller.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Highest priority; priorities are `0..=MAX_PRIORITY`, higher is more important.
pub const MAX_PRIORITY: u8 = 9;

/// What the spool does with an event when the pool has no room for the subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Refuse the incoming event.
    DropNewest,
    /// Discard the oldest events nobody has taken yet to make room for the new one.
    DropOldest,
}

/// Where events go when the memory pool has no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Apply the drop policy.
    Drop,
    /// Hand the event back to the caller, which writes it to the disk spool.
    Disk,
}

/// A subject's policy, as the core uses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Depth at which `pressure` starts.
    pub warning_threshold: u64,
    /// Depth at which `dropping` starts.
    pub critical_threshold: u64,
    /// Ratio of `warning_threshold` at or below which the depth counts as recovered.
    pub recovery_threshold: f64,
    /// Time in `recovery` with a recovered depth before `normal`.
    pub stability_ms: u64,
    /// Low priorities are shed from this fraction of `critical_threshold`.
    pub low_priority_shed_ratio: f64,
    /// Priorities at or above this always pass.
    pub bypass_priority: u8,
    /// Priorities at or below this are shed first.
    pub low_priority_max: u8,
    /// Event type → priority.
    pub priorities: Vec<(Vec<u8>, u8)>,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Optional failure ratio over `window_ms` that opens the breaker.
    pub failure_rate_threshold: Option<f64>,
    /// Window of the failure rate.
    pub window_ms: u64,
    /// Calls the window must hold before the rate counts.
    pub minimum_calls: u32,
    /// Calls slower than this count as failures.
    pub slow_call_ms: Option<u64>,
    /// Time from open to half-open.
    pub open_timeout_ms: u64,
    /// Cap of the open time when it doubles on repeated trips; `None`: no growth.
    pub max_open_timeout_ms: Option<u64>,
    /// Probes admitted at once while half-open.
    pub half_open_max_calls: u8,
    /// Probe successes that close the breaker.
    pub success_threshold: u8,
    /// Longest a call may take; a half-open probe unanswered for this long is a failure.
    pub call_timeout_ms: u64,
    /// Retry hint while backpressure is active.
    pub retry_after_ms: u64,
    /// What to do when the pool has no room.
    pub drop_policy: DropPolicy,
    /// Where events go when the pool has no room.
    pub overflow: Overflow,
    /// Per-subject segment quota; `None`: a quarter of the pool (at least one).
    pub max_segments: Option<u32>,
    /// p95 latency (ms) above which the latency signal is overloaded; `None`: off.
    pub latency_overload_ms: Option<u64>,
    /// Calls in flight above which the in-flight signal is overloaded; `None`: off.
    pub inflight_overload: Option<u64>,
    /// Window of the latency p95.
    pub latency_window_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            warning_threshold: 10_000,
            critical_threshold: 50_000,
            recovery_threshold: 0.5,
            stability_ms: 1_000,
            low_priority_shed_ratio: 0.8,
            bypass_priority: 8,
            low_priority_max: 2,
            priorities: Vec::new(),
            failure_threshold: 5,
            failure_rate_threshold: None,
            window_ms: 10_000,
            minimum_calls: 20,
            slow_call_ms: None,
            open_timeout_ms: 30_000,
            max_open_timeout_ms: None,
            half_open_max_calls: 3,
            success_threshold: 3,
            call_timeout_ms: 5_000,
            retry_after_ms: 30_000,
            drop_policy: DropPolicy::DropNewest,
            overflow: Overflow::Drop,
            max_segments: None,
            latency_overload_ms: Some(5_000),
            inflight_overload: Some(500),
            latency_window_ms: 60_000,
        }
    }
}

/// Shortest `latency_window_ms`.
pub const MIN_LATENCY_WINDOW_MS: u64 = 100;

/// One violated rule: the key, and what was expected of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The offending key.
    pub key: &'static str,
    /// What the key must satisfy.
    pub expected: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}", self.key, self.expected)
    }
}

fn check(errors: &mut Vec<PolicyError>, ok: bool, key: &'static str, expected: &str) {
    if !ok {
        errors.push(PolicyError {
            key,
            expected: expected.to_string(),
        });
    }
}

impl Policy {
    /// Depth at or below which a subject counts as recovered.
    pub fn recovery_depth(&self) -> u64 {
        (self.recovery_threshold * self.warning_threshold as f64).floor() as u64
    }

    /// Depth from which priorities at or below `low_priority_max` are shed.
    pub fn shed_depth(&self) -> u64 {
        (self.low_priority_shed_ratio * self.critical_threshold as f64).ceil() as u64
    }

    /// Every rule this policy breaks; `Ok` when it breaks none.
    pub fn validate(&self) -> Result<(), Vec<PolicyError>> {
        let mut e = Vec::new();
        check(
            &mut e,
            self.warning_threshold >= 1,
            "warning_threshold",
            "an integer >= 1",
        );
        check(
            &mut e,
            self.critical_threshold > self.warning_threshold,
            "critical_threshold",
            "an integer greater than warning_threshold",
        );
        check(
            &mut e,
            self.recovery_threshold > 0.0 && self.recovery_threshold < 1.0,
            "recovery_threshold",
            "a number strictly between 0 and 1",
        );
        check(
            &mut e,
            self.low_priority_shed_ratio > 0.0 && self.low_priority_shed_ratio <= 1.0,
            "low_priority_shed_ratio",
            "a number in (0, 1]",
        );
        check(
            &mut e,
            (1..=MAX_PRIORITY).contains(&self.bypass_priority),
            "bypass_priority",
            "an integer in 1..9",
        );
        check(
            &mut e,
            self.low_priority_max < self.bypass_priority,
            "low_priority_max",
            "an integer in 0..9 below bypass_priority",
        );
        check(
            &mut e,
            self.priorities.iter().all(|(_, p)| *p <= MAX_PRIORITY),
            "priorities",
            "priorities in 0..9",
        );
        check(
            &mut e,
            self.failure_threshold >= 1,
            "failure_threshold",
            "an integer >= 1",
        );
        check(
            &mut e,
            self.failure_rate_threshold
                .map_or(true, |r| r > 0.0 && r <= 1.0),
            "failure_rate_threshold",
            "none or a number in (0, 1]",
        );
        check(
            &mut e,
            self.window_ms >= 10,
            "window_ms",
            "an integer >= 10",
        );
        check(
            &mut e,
            self.minimum_calls >= 1,
            "minimum_calls",
            "an integer >= 1",
        );
        check(
            &mut e,
            self.slow_call_ms.map_or(true, |s| s >= 1),
            "slow_call_ms",
            "none or an integer >= 1",
        );
        check(
            &mut e,
            self.open_timeout_ms >= 1,
            "open_timeout_ms",
            "an integer >= 1",
        );
        check(
            &mut e,
            self.max_open_timeout_ms
                .map_or(true, |m| m >= self.open_timeout_ms),
            "max_open_timeout_ms",
            "none or an integer >= open_timeout_ms",
        );
        check(
            &mut e,
            self.half_open_max_calls >= 1,
            "half_open_max_calls",
            "an integer in 1..255",
        );
        check(
            &mut e,
            self.success_threshold >= 1,
            "success_threshold",
            "an integer in 1..255",
        );
        check(
            &mut e,
            self.call_timeout_ms >= 1,
            "call_timeout_ms",
            "an integer >= 1",
        );
        check(
            &mut e,
            self.max_segments.map_or(true, |m| m >= 1),
            "max_segments",
            "none or an integer >= 1",
        );
        check(
            &mut e,
            self.latency_overload_ms.map_or(true, |m| m >= 1),
            "latency_overload_ms",
            "none or an integer >= 1",
        );
        check(
            &mut e,
            self.inflight_overload.map_or(true, |m| m >= 1),
            "inflight_overload",
            "none or an integer >= 1",
        );
        check(
            &mut e,
            self.latency_window_ms >= MIN_LATENCY_WINDOW_MS,
            "latency_window_ms",
            "an integer >= 100",
        );
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// The segment quota of a subject in a pool of `pool_segments` segments.
    pub fn segment_quota(&self, pool_segments: u32) -> u32 {
        self.max_segments
            .unwrap_or((pool_segments / 4).max(1))
            .min(pool_segments)
    }

    /// The open time after `streak` consecutive trips without a successful close:
    /// `open_timeout_ms`, doubled per trip up to `max_open_timeout_ms` when that is set.
    pub fn open_time_ms(&self, streak: u8) -> u64 {
        match self.max_open_timeout_ms {
            None => self.open_timeout_ms,
            Some(cap) => {
                let grown = self
                    .open_timeout_ms
                    .checked_shl(u32::from(streak))
                    .filter(|v| v >> u32::from(streak) == self.open_timeout_ms)
                    .unwrap_or(u64::MAX);
                grown.min(cap)
            }
        }
    }
}

/// The ring pool's geometry; fixed for the life of a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Segments in the pool.
    pub segments: u32,
    /// Events a segment holds at most.
    pub segment_capacity: u32,
    /// Bytes of records a segment holds at most: each event takes its bytes rounded up
    /// to 8, plus a 16-byte record header.
    pub segment_bytes: u32,
    /// Largest event accepted.
    pub max_event_bytes: u32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            segments: 256,
            segment_capacity: 1_024,
            segment_bytes: 256 * 1024,
            max_event_bytes: 64 * 1024,
        }
    }
}

/// Largest segment the pool accepts (offsets within a segment are `u32`).
pub const MAX_SEGMENT_BYTES: u32 = 1 << 30;

/// Bytes a segment needs beyond its largest event: the record header and padding.
pub const RECORD_OVERHEAD: u32 = 24;

impl PoolConfig {
    /// Every rule this geometry breaks.
    pub fn validate(&self) -> Result<(), Vec<PolicyError>> {
        let mut e = Vec::new();
        check(&mut e, self.segments >= 1, "segments", "an integer >= 1");
        check(
            &mut e,
            (1..=1 << 20).contains(&self.segment_capacity),
            "segment_capacity",
            "an integer in 1..1048576",
        );
        check(
            &mut e,
            (64..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes),
            "segment_bytes",
            "an integer in 64..1073741824",
        );
        check(
            &mut e,
            self.max_event_bytes >= 1
                && u64::from(self.max_event_bytes) + u64::from(RECORD_OVERHEAD)
                    <= u64::from(self.segment_bytes),
            "max_event_bytes",
            "an integer >= 1 and <= segment_bytes - 24",
        );
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Bytes the pool allocates (in memory, or in pool files mapped into memory): each
    /// segment's records plus its header page.
    pub fn footprint_bytes(&self) -> u64 {
        u64::from(self.segments)
            * (u64::from(self.segment_bytes) + crate::segment::HEADER_BYTES as u64)
    }

    /// A segment's geometry.
    pub fn geometry(&self) -> crate::segment::Geometry {
        crate::segment::Geometry {
            data_bytes: self.segment_bytes,
            max_records: self.segment_capacity,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let p = Policy::default();
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.recovery_depth(), 5_000);
        assert_eq!(p.shed_depth(), 40_000);
        assert_eq!(PoolConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_reports_every_violation() {
        let p = Policy {
            warning_threshold: 100,
            critical_threshold: 50,
            recovery_threshold: 1.5,
            bypass_priority: 0,
            half_open_max_calls: 0,
            ..Policy::default()
        };
        let keys: Vec<_> = p.validate().unwrap_err().iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            vec![
                "critical_threshold",
                "recovery_threshold",
                "bypass_priority",
                "low_priority_max",
                "half_open_max_calls"
            ]
        );
    }

    #[test]
    fn open_time_grows_and_is_capped() {
        let mut p = Policy {
            open_timeout_ms: 1_000,
            ..Policy::default()
        };
        assert_eq!(p.open_time_ms(3), 1_000, "no growth without a cap");
        p.max_open_timeout_ms = Some(5_000);
        assert_eq!(p.open_time_ms(0), 1_000);
        assert_eq!(p.open_time_ms(1), 2_000);
        assert_eq!(p.open_time_ms(2), 4_000);
        assert_eq!(p.open_time_ms(3), 5_000);
        assert_eq!(p.open_time_ms(200), 5_000, "overflow saturates to the cap");
    }

    #[test]
    fn quota_defaults_to_a_quarter_of_the_pool() {
        let p = Policy::default();
        assert_eq!(p.segment_quota(256), 64);
        assert_eq!(p.segment_quota(2), 1);
        let q = Policy {
            max_segments: Some(1_000),
            ..Policy::default()
        };
        assert_eq!(q.segment_quota(16), 16);
    }

    #[test]
    fn policy_round_trips_through_serde() {
        let p = Policy {
            priorities: vec![(b"critical-alarm".to_vec(), 9)],
            drop_policy: DropPolicy::DropOldest,
            ..Policy::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"drop_oldest\""));
        let back: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        assert!(serde_json::from_str::<Policy>("{\"nope\": 1}").is_err());
    }
}
