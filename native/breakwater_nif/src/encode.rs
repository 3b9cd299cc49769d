//! Encoding core values as terms.
//!
//! A NIF that made transitions returns `{transitions, Result, [Transition]}` instead of
//! `Result`, so the layer above writes history exactly once per transition and the
//! common case (no transition) costs nothing beyond `Result`. A transition is a map:
//! `#{machine, cause, from_breaker, to_breaker, from_backpressure, to_backpressure,
//! from_status, to_status, from_overloaded, to_overloaded, disabled, forced_open,
//! trip_streak, at_ms}` (the overloaded ones are lists of `depth | latency | inflight`).

use crate::atoms;
use breakwater_core::counters::Counter;
use breakwater_core::meta::LostReason;
use breakwater_core::state::{BackpressureState, BreakerState, Signal, Status, Word};
use breakwater_core::subject::{Reason, Snapshot};
use breakwater_core::transition::{Cause, Machine, Transition, Transitions};
use rustler::{Atom, Encoder, Env, Term};

/// `backpressure_inactive | backpressure_warning | backpressure_active`.
#[inline]
pub fn check_status(s: Status) -> Atom {
    match s {
        Status::Inactive => atoms::backpressure_inactive(),
        Status::Warning => atoms::backpressure_warning(),
        Status::Active => atoms::backpressure_active(),
    }
}

/// `inactive | warning | active`.
pub fn status(s: Status) -> Atom {
    match s {
        Status::Inactive => atoms::inactive(),
        Status::Warning => atoms::warning(),
        Status::Active => atoms::active(),
    }
}

/// `closed | open | half_open`.
pub fn breaker(s: BreakerState) -> Atom {
    match s {
        BreakerState::Closed => atoms::closed(),
        BreakerState::Open => atoms::open(),
        BreakerState::HalfOpen => atoms::half_open(),
    }
}

/// `normal | pressure | dropping | recovery`.
pub fn backpressure(s: BackpressureState) -> Atom {
    match s {
        BackpressureState::Normal => atoms::normal(),
        BackpressureState::Pressure => atoms::pressure(),
        BackpressureState::Dropping => atoms::dropping(),
        BackpressureState::Recovery => atoms::recovery(),
    }
}

/// A rejection reason.
pub fn reason(r: Reason) -> Atom {
    match r {
        Reason::CircuitOpen => atoms::circuit_open(),
        Reason::HalfOpenLimit => atoms::half_open_limit(),
        Reason::Backpressure => atoms::backpressure(),
        Reason::ShedLowPriority => atoms::shed_low_priority(),
        Reason::Overloaded => atoms::overloaded(),
    }
}

/// The cause of a transition.
pub fn cause(c: Cause) -> Atom {
    match c {
        Cause::Failures => atoms::failures(),
        Cause::FailureRate => atoms::failure_rate(),
        Cause::RemoteOpen => atoms::remote_open(),
        Cause::ProbeFailure => atoms::probe_failure(),
        Cause::StaleProbe => atoms::stale_probe(),
        Cause::OpenTimeout => atoms::open_timeout(),
        Cause::ProbeSuccesses => atoms::probe_successes(),
        Cause::Reset => atoms::reset(),
        Cause::ForceOpen => atoms::force_open(),
        Cause::Disable => atoms::disable(),
        Cause::Enable => atoms::enable(),
        Cause::Depth => atoms::depth(),
        Cause::Pool => atoms::pool(),
        Cause::Stability => atoms::stability(),
        Cause::Configure => atoms::configure(),
        Cause::Latency => atoms::latency(),
        Cause::Inflight => atoms::inflight(),
    }
}

/// `depth | latency | inflight`.
pub fn signal(s: Signal) -> Atom {
    match s {
        Signal::Depth => atoms::depth(),
        Signal::Latency => atoms::latency(),
        Signal::Inflight => atoms::inflight(),
    }
}

/// The signals overloaded in `w`, as a list of atoms.
pub fn overloaded<'a>(env: Env<'a>, w: Word) -> Term<'a> {
    Signal::ALL
        .into_iter()
        .filter(|s| w.overloaded(*s))
        .map(signal)
        .collect::<Vec<_>>()
        .encode(env)
}

fn map<'a>(env: Env<'a>, pairs: &[(&'static str, Term<'a>)]) -> Term<'a> {
    let keys: Vec<Term<'a>> = pairs
        .iter()
        .map(|(k, _)| atoms::key(env, k).encode(env))
        .collect();
    let values: Vec<Term<'a>> = pairs.iter().map(|(_, v)| *v).collect();
    Term::map_from_term_arrays(env, &keys, &values).unwrap_or_else(|_| atoms::error().encode(env))
}

/// One transition as a map.
pub fn transition<'a>(env: Env<'a>, t: &Transition) -> Term<'a> {
    let machine = match t.machine() {
        Machine::Breaker => atoms::breaker(),
        Machine::Backpressure => atoms::backpressure(),
        Machine::Signal => atoms::signal(),
        Machine::Manual => atoms::manual(),
    };
    map(
        env,
        &[
            ("machine", machine.encode(env)),
            ("cause", cause(t.cause).encode(env)),
            ("from_breaker", breaker(t.from.breaker()).encode(env)),
            ("to_breaker", breaker(t.to.breaker()).encode(env)),
            (
                "from_backpressure",
                backpressure(t.from.backpressure()).encode(env),
            ),
            (
                "to_backpressure",
                backpressure(t.to.backpressure()).encode(env),
            ),
            ("from_status", status(t.from.status()).encode(env)),
            ("to_status", status(t.to.status()).encode(env)),
            ("from_overloaded", overloaded(env, t.from)),
            ("to_overloaded", overloaded(env, t.to)),
            ("disabled", t.to.disabled().encode(env)),
            ("forced_open", t.to.forced_open().encode(env)),
            ("trip_streak", t.to.trip_streak().encode(env)),
            ("at_ms", t.at_ms.encode(env)),
        ],
    )
}

/// `result`, or `{transitions, result, [T]}` when `out` holds any.
#[inline(always)]
pub fn with_transitions<'a>(env: Env<'a>, result: Term<'a>, out: &Transitions) -> Term<'a> {
    if out.is_empty() {
        result
    } else {
        wrap_transitions(env, result, out)
    }
}

/// [`with_transitions`] as the raw term, for the hot NIFs (`crate::hot_nif`): taking
/// the term out of `result` here, where it was built, spares the copies of the
/// `Term` struct that stall store forwarding.
#[inline(always)]
pub fn raw_with_transitions<'a>(
    env: Env<'a>,
    result: Term<'a>,
    out: &Transitions,
) -> rustler::sys::ErlNifTerm {
    if out.is_empty() {
        result.as_c_arg()
    } else {
        wrap_transitions(env, result, out).as_c_arg()
    }
}

// Out of line: the hot paths inline only the emptiness test above.
#[cold]
#[inline(never)]
fn wrap_transitions<'a>(env: Env<'a>, result: Term<'a>, out: &Transitions) -> Term<'a> {
    let list: Vec<Term<'a>> = out.iter().map(|t| transition(env, t)).collect();
    (atoms::transitions(), result, list).encode(env)
}

/// The counters of `status/1`'s `counters` map, by key, in a fixed order (so that the
/// pairs of two snapshots line up for summing).
pub fn counter_pairs(s: &Snapshot) -> Vec<(&'static str, u64)> {
    let c = |k: Counter| s.counter(k);
    let sp = &s.spool;
    let rejected_admission = c(Counter::RejectedCircuitOpen)
        + c(Counter::RejectedHalfOpenLimit)
        + c(Counter::RejectedBackpressure)
        + c(Counter::RejectedShedLowPriority)
        + c(Counter::RejectedOverloaded);
    let lost = |r: LostReason| sp.lost_events[r as usize];
    vec![
        ("accepted", c(Counter::Accepted)),
        ("bypassed", c(Counter::Bypassed)),
        (
            "rejected",
            rejected_admission
                + sp.dropped_newest_events
                + sp.disk_full_events
                + sp.unavailable_events,
        ),
        ("rejected_circuit_open", c(Counter::RejectedCircuitOpen)),
        (
            "rejected_half_open_limit",
            c(Counter::RejectedHalfOpenLimit),
        ),
        ("rejected_backpressure", c(Counter::RejectedBackpressure)),
        (
            "rejected_shed_low_priority",
            c(Counter::RejectedShedLowPriority),
        ),
        ("rejected_overloaded", c(Counter::RejectedOverloaded)),
        (
            "rejected_pool_exhausted",
            sp.dropped_newest_events + sp.disk_full_events,
        ),
        ("rejected_spool_unavailable", sp.unavailable_events),
        ("successes", c(Counter::Successes)),
        ("failures", c(Counter::Failures)),
        ("slow_calls", c(Counter::SlowCalls)),
        ("late_outcomes", c(Counter::LateOutcomes)),
        ("probe_successes", c(Counter::ProbeSuccesses)),
        ("probe_failures", c(Counter::ProbeFailures)),
        ("stale_probes", s.stale_probes),
        ("circuit_opens", s.opens),
        ("remote_opens", s.remote_opens),
        ("recovery_attempts", s.recovery_attempts),
        ("successful_recoveries", s.successful_recoveries),
        ("breaker_transitions", s.breaker_transitions),
        ("backpressure_transitions", s.backpressure_transitions),
        ("signal_transitions", s.signal_transitions),
        ("status_changes", s.status_changes),
        ("dropped_events", sp.dropped_events()),
        ("dropped_bytes", sp.dropped_bytes()),
        ("dropped_newest_events", sp.dropped_newest_events),
        ("dropped_newest_bytes", sp.dropped_newest_bytes),
        ("dropped_oldest_events", sp.dropped_oldest_events),
        ("dropped_oldest_bytes", sp.dropped_oldest_bytes),
        ("enqueued_events", sp.enqueued_events),
        ("enqueued_bytes", sp.enqueued_bytes),
        ("delivered_events", sp.delivered_events),
        ("delivered_bytes", sp.delivered_bytes),
        ("taken_events", sp.taken_events),
        ("redelivered_events", sp.redelivered_events),
        ("spooled_events", sp.spooled_events),
        ("spooled_bytes", sp.spooled_bytes),
        ("spooled_disk_events", sp.spooled_disk_events),
        ("in_flight_events", sp.in_flight_events),
        ("offered_events", sp.offered_events()),
        ("dropped_unavailable_events", sp.unavailable_events),
        ("dropped_unavailable_bytes", sp.unavailable_bytes),
        ("dropped_disk_full_events", sp.disk_full_events),
        ("dropped_disk_full_bytes", sp.disk_full_bytes),
        ("lost_events", sp.lost_total()),
        ("lost_bytes", sp.lost_bytes.iter().sum::<u64>()),
        ("lost_corrupt", lost(LostReason::Corrupt)),
        ("lost_truncated", lost(LostReason::Truncated)),
        ("lost_missing", lost(LostReason::Missing)),
        ("lost_memory", lost(LostReason::Memory)),
        ("lost_unreadable", lost(LostReason::Unreadable)),
        ("overflow_segments", u64::from(sp.overflow_segments)),
        ("stripes", u64::from(sp.stripes)),
    ]
}

/// A map of integer values by fixed key names.
pub fn pairs_map<'a>(env: Env<'a>, pairs: &[(&'static str, u64)]) -> Term<'a> {
    pairs_map_with(env, pairs, &[])
}

/// A map of integer values and other terms by fixed key names.
pub fn pairs_map_with<'a>(
    env: Env<'a>,
    pairs: &[(&'static str, u64)],
    terms: &[(&'static str, Term<'a>)],
) -> Term<'a> {
    let all: Vec<(&'static str, Term<'a>)> = pairs
        .iter()
        .map(|(k, v)| (*k, v.encode(env)))
        .chain(terms.iter().copied())
        .collect();
    map(env, &all)
}

/// A subject's snapshot as the map `status/1` returns. `retry_after_ms` is the hint a
/// check would give now (0 unless active); `open_remaining_ms` is `nil` while the
/// breaker is forced open (no timer ends it).
pub fn snapshot<'a>(
    env: Env<'a>,
    name: &[u8],
    s: &Snapshot,
    policy_quota: u32,
    retry_after_ms: u64,
) -> Term<'a> {
    let sp = &s.spool;
    let mut subject = rustler::NewBinary::new(env, name.len());
    subject.as_mut_slice().copy_from_slice(name);
    let counters = pairs_map(env, &counter_pairs(s));
    let w = s.word;
    let open_remaining = if w.forced_open() {
        atoms::nil().encode(env)
    } else {
        s.open_remaining_ms.encode(env)
    };
    map(
        env,
        &[
            ("subject", rustler::Binary::from(subject).encode(env)),
            ("status", status(w.status()).encode(env)),
            ("breaker", breaker(w.breaker()).encode(env)),
            ("backpressure", backpressure(w.backpressure()).encode(env)),
            ("disabled", w.disabled().encode(env)),
            ("forced_open", w.forced_open().encode(env)),
            ("queue_depth", s.depth.encode(env)),
            ("reported_depth", s.reported_depth.encode(env)),
            ("high_watermark", s.high_watermark.encode(env)),
            ("pool_exhausted", s.exhausted.encode(env)),
            ("disk_pending", s.disk_pending.encode(env)),
            ("consecutive_failures", s.consecutive_failures.encode(env)),
            ("probes_in_flight", w.probes().encode(env)),
            ("probe_successes", w.probe_successes().encode(env)),
            ("trip_streak", w.trip_streak().encode(env)),
            ("open_remaining_ms", open_remaining),
            ("retry_after_ms", retry_after_ms.encode(env)),
            ("segments", sp.segments.encode(env)),
            ("segment_quota", policy_quota.encode(env)),
            ("window_calls", s.window.calls.encode(env)),
            ("window_failures", s.window.failures.encode(env)),
            ("overloaded", overloaded(env, w)),
            ("latency_p95_ms", s.latency_p95_ms.encode(env)),
            (
                "measured_latency_p95_ms",
                s.measured_latency_p95_ms.encode(env),
            ),
            (
                "reported_latency_p95_ms",
                s.reported_latency_p95_ms.encode(env),
            ),
            ("latency_samples", s.latency_samples.encode(env)),
            (
                "latency_histogram_bytes",
                s.latency_histogram_bytes.encode(env),
            ),
            ("inflight", s.inflight.encode(env)),
            ("measured_inflight", s.measured_inflight.encode(env)),
            ("reported_inflight", s.reported_inflight.encode(env)),
            ("counters", counters),
        ],
    )
}
