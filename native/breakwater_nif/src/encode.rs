//! Encoding core values as terms.
//!
//! A NIF that made transitions returns `{transitions, Result, [Transition]}` instead of
//! `Result`, so the layer above writes history exactly once per transition and the
//! common case (no transition) costs nothing beyond `Result`. A transition is a map:
//! `#{machine, from_breaker, to_breaker, from_backpressure, to_backpressure,
//! from_status, to_status, disabled, forced_open, trip_streak, at_ms}`.

use crate::atoms;
use breakwater_core::counters::Counter;
use breakwater_core::state::{BackpressureState, BreakerState, Status};
use breakwater_core::subject::{Reason, Snapshot};
use breakwater_core::transition::{Machine, Transition, Transitions};
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
    }
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
        Machine::Manual => atoms::manual(),
    };
    map(
        env,
        &[
            ("machine", machine.encode(env)),
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

/// A subject's snapshot as the map `status/1` returns.
pub fn snapshot<'a>(env: Env<'a>, name: &[u8], s: &Snapshot, policy_quota: u32) -> Term<'a> {
    let c = |k: Counter| s.counter(k);
    let sp = &s.spool;
    let rejected_admission = c(Counter::RejectedCircuitOpen)
        + c(Counter::RejectedHalfOpenLimit)
        + c(Counter::RejectedBackpressure)
        + c(Counter::RejectedShedLowPriority);
    let dropped_events = sp.dropped_events();
    let dropped_bytes = sp.dropped_newest_bytes + sp.dropped_oldest_bytes + sp.disk_dropped_bytes;
    let mut subject = rustler::NewBinary::new(env, name.len());
    subject.as_mut_slice().copy_from_slice(name);
    let counters = map(
        env,
        &[
            ("accepted", c(Counter::Accepted).encode(env)),
            ("bypassed", c(Counter::Bypassed).encode(env)),
            (
                "rejected",
                (rejected_admission + sp.dropped_newest_events).encode(env),
            ),
            (
                "rejected_circuit_open",
                c(Counter::RejectedCircuitOpen).encode(env),
            ),
            (
                "rejected_half_open_limit",
                c(Counter::RejectedHalfOpenLimit).encode(env),
            ),
            (
                "rejected_backpressure",
                c(Counter::RejectedBackpressure).encode(env),
            ),
            (
                "rejected_shed_low_priority",
                c(Counter::RejectedShedLowPriority).encode(env),
            ),
            (
                "rejected_pool_exhausted",
                sp.dropped_newest_events.encode(env),
            ),
            ("successes", c(Counter::Successes).encode(env)),
            ("failures", c(Counter::Failures).encode(env)),
            ("slow_calls", c(Counter::SlowCalls).encode(env)),
            ("circuit_opens", s.opens.encode(env)),
            ("recovery_attempts", s.recovery_attempts.encode(env)),
            ("successful_recoveries", s.successful_recoveries.encode(env)),
            ("breaker_transitions", s.breaker_transitions.encode(env)),
            (
                "backpressure_transitions",
                s.backpressure_transitions.encode(env),
            ),
            ("status_changes", s.status_changes.encode(env)),
            ("dropped_events", dropped_events.encode(env)),
            ("dropped_bytes", dropped_bytes.encode(env)),
            (
                "dropped_newest_events",
                sp.dropped_newest_events.encode(env),
            ),
            ("dropped_newest_bytes", sp.dropped_newest_bytes.encode(env)),
            (
                "dropped_oldest_events",
                sp.dropped_oldest_events.encode(env),
            ),
            ("dropped_oldest_bytes", sp.dropped_oldest_bytes.encode(env)),
            ("enqueued_events", sp.enqueued_events.encode(env)),
            ("enqueued_bytes", sp.enqueued_bytes.encode(env)),
            ("delivered_events", sp.delivered_events.encode(env)),
            ("delivered_bytes", sp.delivered_bytes.encode(env)),
            ("taken_events", sp.taken_events.encode(env)),
            ("redelivered_events", sp.redelivered_events.encode(env)),
            ("overflow_events", sp.overflow_events.encode(env)),
            ("overflow_bytes", sp.overflow_bytes.encode(env)),
            ("spooled_events", sp.spooled_events.encode(env)),
            ("spooled_bytes", sp.spooled_bytes.encode(env)),
            ("in_flight_events", sp.in_flight_events.encode(env)),
            ("offered_events", sp.offered_events().encode(env)),
            ("evacuated_events", sp.evacuated_events.encode(env)),
            ("evacuated_bytes", sp.evacuated_bytes.encode(env)),
            ("refilled_events", sp.refilled_events.encode(env)),
            ("disk_dropped_events", sp.disk_dropped_events.encode(env)),
            ("disk_dropped_bytes", sp.disk_dropped_bytes.encode(env)),
            (
                "disk_recovered_events",
                sp.disk_recovered_events.encode(env),
            ),
            ("disk_pending_events", sp.disk_pending_events().encode(env)),
        ],
    );
    let w = s.word;
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
            ("open_remaining_ms", s.open_remaining_ms.encode(env)),
            ("segments", sp.segments.encode(env)),
            ("segment_quota", policy_quota.encode(env)),
            ("window_calls", s.window.calls.encode(env)),
            ("window_failures", s.window.failures.encode(env)),
            ("counters", counters),
        ],
    )
}
