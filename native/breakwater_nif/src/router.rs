//! The router's hot paths: check, admit, record, and the reports of depth, latency and
//! calls in flight; and the variants of admit and record that hand out and take back an
//! admission's token (`admit_token`, `record_token`).
//!
//! Each validates its arguments first (a bad call changes nothing, not even by creating
//! a subject), decodes the subject by reference (no copy, no refcount), finds it in the
//! registry with one hash, and calls the core; when nothing changed state, the result
//! is the only term built. `check` is a read and creates nothing; the others write and
//! create the subject on first use.

use crate::args::{self, argument_error};
use crate::atoms;
use crate::encode;
use crate::hot_nif::{hot_nif, Raw};
use crate::subject_arg::{instance, subject};
use breakwater_core::clock::MonotonicClock;
use breakwater_core::probes::Ticket;
use breakwater_core::subject::{Admission, Outcome, Subject};
use breakwater_core::transition::Transitions;
use rustler::{Atom, Encoder, Env, NifResult, Term};

// The router's NIFs, registered without rustler's per-call allocation (`hot_nif`).
hot_nif!("check", check, 1, [0]);
hot_nif!("check_ms", check_ms, 1, [0]);
hot_nif!("admit", admit, 2, [0, 1]);
hot_nif!("admit_event", admit_event, 2, [0, 1]);
hot_nif!("admit_write", admit_write, 1, [0]);
hot_nif!("record", record, 3, [0, 1, 2]);
hot_nif!("admit_token", admit_token, 2, [0, 1]);
hot_nif!("admit_event_token", admit_event_token, 2, [0, 1]);
hot_nif!("record_token", record_token, 4, [0, 1, 2, 3]);
hot_nif!("report_depth", report_depth, 2, [0, 1]);
hot_nif!("report_latency", report_latency, 2, [0, 1]);
hot_nif!("report_inflight", report_inflight, 2, [0, 1]);
hot_nif!("record_write", record_write, 4, [0, 1, 2, 3]);

/// Longest subject the router module accepts (its callers' rule: 1..1023 bytes).
const ROUTER_MAX_SUBJECT: usize = 1_023;

/// The subject `check/1` names, if it exists (a read creates nothing), or the router's
/// error term for a bad name: `{error, {invalid_subject, invalid_subject_type |
/// invalid_subject_length}}`.
type Found = (&'static crate::instance::Instance, Option<&'static Subject>);

#[inline(always)]
fn router_subject<'a>(env: Env<'a>, term: Term<'a>) -> NifResult<Result<Found, Term<'a>>> {
    let inst = instance()?;
    let Ok(name) = rustler::Binary::from_term(term) else {
        return Ok(Err(invalid_subject(env, atoms::invalid_subject_type())));
    };
    let name = name.as_slice();
    if name.is_empty() || name.len() > ROUTER_MAX_SUBJECT {
        return Ok(Err(invalid_subject(env, atoms::invalid_subject_length())));
    }
    Ok(Ok((inst, inst.registry.get(name))))
}

#[cold]
fn unknown_check(env: Env<'_>) -> Raw {
    (atoms::backpressure_inactive(), 0u64)
        .encode(env)
        .as_c_arg()
}

#[cold]
fn invalid_subject<'a>(env: Env<'a>, why: Atom) -> Term<'a> {
    (atoms::error(), (atoms::invalid_subject(), why)).encode(env)
}

/// `{Status, RetryAfterSeconds}` for `router_intake_backpressure:check_backpressure/1`:
/// the retry hint in whole seconds, rounded up (0 unless active). A read: an unknown
/// subject is at rest (`{backpressure_inactive, 0}`) and is not created. A subject that
/// is not a binary of 1..1023 bytes gives `{error, {invalid_subject, Why}}`.
fn check<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Raw> {
    let (inst, s) = match router_subject(env, subject_name)? {
        Ok((inst, Some(s))) => (inst, s),
        Ok((_, None)) => return Ok(unknown_check(env)),
        Err(error) => return Ok(error.as_c_arg()),
    };
    let mut out = Transitions::new();
    let (status, retry_ms) = s.check(inst.registry.clock(), &mut out);
    let result = (encode::check_status(status), retry_ms.div_ceil(1_000)).encode(env);
    Ok(encode::raw_with_transitions(env, result, &out))
}

/// [`check`] with the retry hint in milliseconds (the detailed status).
fn check_ms<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Raw> {
    let (inst, s) = match router_subject(env, subject_name)? {
        Ok((inst, Some(s))) => (inst, s),
        Ok((_, None)) => return Ok(unknown_check(env)),
        Err(error) => return Ok(error.as_c_arg()),
    };
    let mut out = Transitions::new();
    let (status, retry_ms) = s.check(inst.registry.clock(), &mut out);
    let result = (encode::check_status(status), retry_ms).encode(env);
    Ok(encode::raw_with_transitions(env, result, &out))
}

fn admission<'a>(env: Env<'a>, a: Admission) -> Term<'a> {
    match a {
        Admission::Admit(_) | Admission::Probe(_) => atoms::ok().encode(env),
        Admission::Reject(reason, retry) => rejection(env, reason, retry),
    }
}

/// `{ok, Token} | {reject, Reason, RetryAfterMs}`.
fn admission_token<'a>(env: Env<'a>, a: Admission) -> Term<'a> {
    match a {
        Admission::Admit(t) | Admission::Probe(t) => (atoms::ok(), t.raw()).encode(env),
        Admission::Reject(reason, retry) => rejection(env, reason, retry),
    }
}

fn rejection<'a>(env: Env<'a>, reason: breakwater_core::subject::Reason, retry: u64) -> Term<'a> {
    (atoms::reject(), encode::reason(reason), retry).encode(env)
}

/// `ok | {reject, Reason, RetryAfterMs}` for a call at `priority` (0..9).
fn admit<'a>(env: Env<'a>, subject_name: Term<'a>, priority: Term<'a>) -> NifResult<Raw> {
    let priority = args::int_in(priority, "priority", 0, 9)? as u8;
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error.as_c_arg()),
    };
    let mut out = Transitions::new();
    let a = s.admit(priority, inst.registry.clock(), &mut out);
    Ok(encode::raw_with_transitions(env, admission(env, a), &out))
}

/// `admit/2` answering `{ok, Token}` instead of `ok`: the token names the admission,
/// for `record_token/4`.
fn admit_token<'a>(env: Env<'a>, subject_name: Term<'a>, priority: Term<'a>) -> NifResult<Raw> {
    let priority = args::int_in(priority, "priority", 0, 9)? as u8;
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error.as_c_arg()),
    };
    let mut out = Transitions::new();
    let a = s.admit(priority, inst.registry.clock(), &mut out);
    Ok(encode::raw_with_transitions(
        env,
        admission_token(env, a),
        &out,
    ))
}

/// Priority of an event type the policy does not name.
const DEFAULT_PRIORITY: u8 = 5;

fn admit_event_with<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    event_type: Term<'a>,
    answer: fn(Env<'a>, Admission) -> Term<'a>,
) -> NifResult<Raw> {
    let event_type = rustler::Binary::from_term(event_type)
        .map_err(|_| argument_error("event_type must be a binary"))?;
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error.as_c_arg()),
    };
    let priority = s
        .priority_of(event_type.as_slice())
        .unwrap_or(DEFAULT_PRIORITY);
    let mut out = Transitions::new();
    let a = s.admit(priority, inst.registry.clock(), &mut out);
    Ok(encode::raw_with_transitions(env, answer(env, a), &out))
}

/// `admit/2` at the priority the subject's policy gives `event_type` (5 when unnamed).
fn admit_event<'a>(env: Env<'a>, subject_name: Term<'a>, event_type: Term<'a>) -> NifResult<Raw> {
    admit_event_with(env, subject_name, event_type, admission)
}

/// `admit_event/2` answering `{ok, Token}` instead of `ok`.
fn admit_event_token<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    event_type: Term<'a>,
) -> NifResult<Raw> {
    admit_event_with(env, subject_name, event_type, admission_token)
}

// Inlined into the hot NIFs: a `NifResult` returned through memory costs a record
// about 5 ns (BEAM bench).
#[inline(always)]
fn outcome_arg(outcome: Term<'_>) -> NifResult<Outcome> {
    match outcome.decode::<Atom>() {
        Ok(a) if a == atoms::success() => Ok(Outcome::Success),
        Ok(a) if a == atoms::failure() => Ok(Outcome::Failure),
        _ => Err(argument_error("outcome must be :success or :failure")),
    }
}

#[inline(always)]
fn latency_arg(latency_ms: Term<'_>) -> NifResult<Option<u64>> {
    match latency_ms.decode::<Atom>() {
        Ok(a) if a == atoms::nil() => Ok(None),
        _ => Ok(Some(args::non_neg(latency_ms, "latency_ms")?)),
    }
}

/// Records `success | failure` of a call the router admitted, with an optional latency
/// in ms (`nil` for none): the latency goes into the histogram, the call is no longer
/// in flight.
fn record<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    outcome: Term<'a>,
    latency_ms: Term<'a>,
) -> NifResult<Raw> {
    let outcome = outcome_arg(outcome)?;
    let latency = latency_arg(latency_ms)?;
    apply_ok(env, subject_name, |s, clock, out| {
        s.record(outcome, latency, clock, out)
    })
}

/// `record/3` of the call admitted with `token` (from `admit_token/2`,
/// `admit_event_token/2` or `admit_write/1`).
fn record_token<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    outcome: Term<'a>,
    latency_ms: Term<'a>,
    token: Term<'a>,
) -> NifResult<Raw> {
    let outcome = outcome_arg(outcome)?;
    let latency = latency_arg(latency_ms)?;
    let ticket = ticket_arg(token)?;
    apply_ok(env, subject_name, |s, clock, out| {
        s.record_ticket(outcome, latency, ticket, clock, out)
    })
}

#[inline(always)]
fn ticket_arg(token: Term<'_>) -> NifResult<Ticket> {
    token
        .decode::<u64>()
        .ok()
        .and_then(Ticket::from_raw)
        .ok_or_else(|| {
            argument_error(format!(
                "token must be an integer in 0..{} (from admit with token: true)",
                Ticket::MAX
            ))
        })
}

/// `record_token/4` for a drain worker's write or health check (admitted by
/// `admit_write/1`, whose token it takes back): no router admitted it, so it ends no
/// call in flight.
fn record_write<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    outcome: Term<'a>,
    latency_ms: Term<'a>,
    token: Term<'a>,
) -> NifResult<Raw> {
    let outcome = outcome_arg(outcome)?;
    let latency = latency_arg(latency_ms)?;
    let ticket = ticket_arg(token)?;
    apply_ok(env, subject_name, |s, clock, out| {
        s.record_unadmitted(outcome, latency, Some(ticket), clock, out)
    })
}

/// Sets the p95 latency (ms) the router measured.
fn report_latency<'a>(env: Env<'a>, subject_name: Term<'a>, p95_ms: Term<'a>) -> NifResult<Raw> {
    report(env, subject_name, p95_ms, "p95_ms", Subject::report_latency)
}

/// Sets the calls in flight the router counts.
fn report_inflight<'a>(env: Env<'a>, subject_name: Term<'a>, n: Term<'a>) -> NifResult<Raw> {
    report(env, subject_name, n, "inflight", Subject::report_inflight)
}

/// Sets the depth the router reports.
fn report_depth<'a>(env: Env<'a>, subject_name: Term<'a>, depth: Term<'a>) -> NifResult<Raw> {
    report(env, subject_name, depth, "depth", Subject::report_depth)
}

/// A report NIF: `value` (a non-negative integer, named `what` in the error) applied
/// to the subject by `apply`; `ok`, with the transitions it made.
fn report<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    value: Term<'a>,
    what: &str,
    apply: fn(&Subject, u64, &MonotonicClock, &mut Transitions),
) -> NifResult<Raw> {
    let value = args::non_neg(value, what)?;
    apply_ok(env, subject_name, |s, clock, out| {
        apply(s, value, clock, out)
    })
}

/// The body of the NIFs that change a subject and answer `ok`: finds the subject (or
/// answers the lookup's error), applies `f` with the clock and a fresh `Transitions`,
/// and answers `ok` with the transitions it made.
#[inline(always)]
fn apply_ok<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    f: impl FnOnce(&Subject, &MonotonicClock, &mut Transitions),
) -> NifResult<Raw> {
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error.as_c_arg()),
    };
    let mut out = Transitions::new();
    f(s, inst.registry.clock(), &mut out);
    Ok(encode::raw_with_transitions(
        env,
        atoms::ok().encode(env),
        &out,
    ))
}

/// A drain worker's admission of a ledger write: the breaker alone decides.
/// `{ok, Token} | {probe, Token} | {reject, Reason, RetryAfterMs}`; after `probe` the
/// outcome, recorded with the token, decides the half-open breaker.
fn admit_write<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Raw> {
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error.as_c_arg()),
    };
    let mut out = Transitions::new();
    let result = match s.admit_write(inst.registry.clock(), &mut out) {
        Admission::Probe(t) => (atoms::probe(), t.raw()).encode(env),
        a => admission_token(env, a),
    };
    Ok(encode::raw_with_transitions(env, result, &out))
}
