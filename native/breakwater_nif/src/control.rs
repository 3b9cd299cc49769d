//! Set-up, configuration, manual control, the timer, and inspection.

use crate::args;
use crate::atoms;
use crate::encode;
use crate::instance;
use crate::policy_term::{decode_init_config, decode_policy, problems_term, validation_term};
use crate::subject_arg::{configured, existing, instance, subject};
use breakwater_core::counters::stripe_count;
use breakwater_core::registry::RemoveError;
use breakwater_core::subject::Subject;
use breakwater_core::transition::{Transition, Transitions};
use rustler::{Binary, Encoder, Env, NewBinary, NifResult, Term};
use std::sync::Arc;

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut b = NewBinary::new(env, bytes.len());
    b.as_mut_slice().copy_from_slice(bytes);
    rustler::Binary::from(b).encode(env)
}

/// Creates the node's registry and opens its spool (recovering what the spool
/// directory holds): `{ok, Reports}`, where `Reports` are what recovery found
/// (`crate::spool::reports_term`); or reconfigures it: `ok`; or `{error, Problems}`.
/// A dirty I/O NIF: recovery reads every spool file.
#[rustler::nif(schedule = "DirtyIo")]
fn init<'a>(env: Env<'a>, config: Term<'a>) -> Term<'a> {
    match decode_init_config(config) {
        Err(problems) => problems_term(env, problems),
        Ok((config, grace, spool)) => match instance::init(config, grace, spool) {
            Ok(true) => (atoms::ok(), crate::spool::reports_term(env)).encode(env),
            Ok(false) => atoms::ok().encode(env),
            Err(errors) => validation_term(env, errors),
        },
    }
}

/// True once `init/1` has run.
#[rustler::nif]
fn started() -> bool {
    instance::get().is_some()
}

/// Replaces a subject's policy (a complete native policy map) and keeps `extra` (a
/// binary: the layer above's form of the same policy; `nil` for none) with it. The
/// subject is created in, or moved to, the configured room.
#[rustler::nif]
fn configure<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    policy: Term<'a>,
    extra: Term<'a>,
) -> NifResult<Term<'a>> {
    let inst = instance()?;
    let name = args::subject(subject_name)?;
    let extra: Option<Arc<[u8]>> = match Binary::from_term(extra) {
        Ok(b) => Some(Arc::from(b.as_slice())),
        Err(_) if extra.decode::<rustler::Atom>().ok() == Some(atoms::nil()) => None,
        Err(_) => return Err(args::argument_error("extra must be a binary or nil")),
    };
    let policy = match decode_policy(policy, (*inst.registry.default_policy()).clone()) {
        Ok(p) => p,
        Err(problems) => return Ok(problems_term(env, problems)),
    };
    if let Err(errors) = policy.validate() {
        return Ok(validation_term(
            env,
            errors.into_iter().map(|e| (e.key, e.expected)).collect(),
        ));
    }
    let (inst, s) = match configured(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    debug_assert_eq!(s.name(), name);
    let mut out = Transitions::new();
    let segments = inst.registry.pool().config().segments;
    Ok(
        match s.configure_with(policy, extra, segments, inst.registry.clock(), &mut out) {
            Ok(()) => encode::with_transitions(env, atoms::ok().encode(env), &out),
            Err(errors) => validation_term(
                env,
                errors.into_iter().map(|e| (e.key, e.expected)).collect(),
            ),
        },
    )
}

fn control<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    f: impl Fn(&Subject, &mut Transitions),
) -> NifResult<Term<'a>> {
    let (_, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    let mut out = Transitions::new();
    f(s, &mut out);
    Ok(encode::with_transitions(env, atoms::ok().encode(env), &out))
}

/// Closes the breaker.
#[rustler::nif]
fn reset<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    control(env, subject_name, |s, out| {
        s.reset(inst.registry.clock(), out)
    })
}

/// Opens the breaker until reset.
#[rustler::nif]
fn force_open<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    control(env, subject_name, |s, out| {
        s.force_open(inst.registry.clock(), out)
    })
}

/// Opens a closed breaker because a peer's opened (never creates the subject):
/// `ok` (with the transition when it opened) or `{error, unknown_subject}`.
#[rustler::nif]
fn remote_open<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let (inst, s) = match existing(subject_name)? {
        (inst, Some(s)) => (inst, s),
        (_, None) => return Ok(unknown_subject(env)),
    };
    let mut out = Transitions::new();
    s.remote_open(inst.registry.clock(), &mut out);
    Ok(encode::with_transitions(env, atoms::ok().encode(env), &out))
}

/// Admit everything, never trip, keep counting.
#[rustler::nif]
fn disable<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    control(env, subject_name, |s, out| {
        s.set_disabled(true, inst.registry.clock(), out)
    })
}

/// Undoes `disable/1`.
#[rustler::nif]
fn enable<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    control(env, subject_name, |s, out| {
        s.set_disabled(false, inst.registry.clock(), out)
    })
}

/// The timer's visit to every subject: `[{Subject, Transition}]`. `budgeted`: the
/// periodic visit (the signals' upkeep bounded in time, round robin); otherwise every
/// subject is visited.
#[rustler::nif]
fn tick(env: Env<'_>, budgeted: bool) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let mut out = Vec::new();
    inst.registry.tick_reporting(&mut out, None, budgeted);
    Ok(transition_list(env, &out))
}

fn transition_list<'a>(env: Env<'a>, out: &[(&Subject, Transition)]) -> Term<'a> {
    let list: Vec<Term> = out
        .iter()
        .map(|(s, t)| (binary(env, s.name()), encode::transition(env, t)).encode(env))
        .collect();
    list.encode(env)
}

/// The timer's visit, with the signal values of the subjects it refreshed that have
/// something to tell: `{[{Subject, Transition}], [{Subject, Status, Depth,
/// LatencyP95Ms, Inflight}]}`.
#[rustler::nif]
fn tick_reporting(env: Env<'_>, budgeted: bool) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let mut out = Vec::new();
    let mut reports = Vec::new();
    inst.registry
        .tick_reporting(&mut out, Some(&mut reports), budgeted);
    let reports: Vec<Term> = reports
        .iter()
        .map(|(s, r)| {
            (
                binary(env, s.name()),
                encode::status(r.word.status()),
                r.depth,
                r.latency_p95_ms,
                r.inflight,
            )
                .encode(env)
        })
        .collect();
    Ok((transition_list(env, &out), reports).encode(env))
}

/// The values the signals are judged by, without creating the subject:
/// `{Depth, LatencyP95Ms, Inflight}`, or `nil` for an unknown subject.
#[rustler::nif]
fn signals<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    let Some(s) = inst.registry.get(args::subject(subject_name)?) else {
        return Ok(atoms::nil().encode(env));
    };
    let snap = s.snapshot(inst.registry.clock());
    Ok((snap.depth, snap.latency_p95_ms, snap.inflight).encode(env))
}

/// Makes the subject a configured one without touching its policy (created with the
/// default policy if it does not exist): `ok | {error, {too_many_subjects, Max}}`.
#[rustler::nif]
fn declare<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    Ok(match configured(env, subject_name)? {
        Ok(_) => atoms::ok().encode(env),
        Err(error) => error,
    })
}

/// Creates the subject (dynamic, default policy) if it does not exist: `ok | {error,
/// {too_many_subjects, Max}}`. For writes that reach the subject only in the layer
/// above (history tracked by hand).
#[rustler::nif]
fn touch<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    Ok(match subject(env, subject_name)? {
        Ok(_) => atoms::ok().encode(env),
        Err(error) => error,
    })
}

/// Puts a subject back under the node's default policy and into the dynamic room:
/// `ok | {error, unknown_subject}`.
#[rustler::nif]
fn reset_policy<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let (inst, s) = match existing(subject_name)? {
        (inst, Some(s)) => (inst, s),
        (_, None) => return Ok(unknown_subject(env)),
    };
    inst.registry.unconfigure(s.name());
    let mut out = Transitions::new();
    let policy = (*inst.registry.default_policy()).clone();
    let segments = inst.registry.pool().config().segments;
    Ok(
        match s.configure_with(policy, None, segments, inst.registry.clock(), &mut out) {
            Ok(()) => encode::with_transitions(env, atoms::ok().encode(env), &out),
            Err(errors) => validation_term(
                env,
                errors.into_iter().map(|e| (e.key, e.expected)).collect(),
            ),
        },
    )
}

/// The layer above's form of the subject's policy: the binary given to `configure/3`,
/// `default` for a subject under the default policy, or `{error, unknown_subject}`.
#[rustler::nif]
fn policy_extra<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let Some(s) = existing(subject_name)?.1 else {
        return Ok(unknown_subject(env));
    };
    Ok(match &s.policy().extra {
        Some(bytes) => binary(env, bytes),
        None => atoms::default().encode(env),
    })
}

/// Removes a subject: `ok | {error, spooled | unknown_subject}`.
#[rustler::nif]
fn remove<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    let name = args::subject(subject_name)?;
    Ok(match inst.registry.remove(name) {
        Ok(()) => atoms::ok().encode(env),
        Err(RemoveError::Unknown) => unknown_subject(env),
        Err(RemoveError::Spooled) => (atoms::error(), atoms::spooled()).encode(env),
    })
}

/// Removes every dynamic subject idle for `idle_ms` or more (at rest, nothing spooled),
/// except those named in `keep` (a list of binaries); returns the names removed. Each
/// call also measures idleness: the timer calls it regularly.
#[rustler::nif]
fn expire_idle<'a>(env: Env<'a>, idle_ms: Term<'a>, keep: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    let idle_ms = args::non_neg(idle_ms, "idle_ms")?;
    let keep: Vec<Binary> = keep
        .decode()
        .map_err(|_| args::argument_error("keep must be a list of binaries"))?;
    let removed = inst
        .registry
        .expire_idle(idle_ms, |name| keep.iter().any(|k| k.as_slice() == name));
    let list: Vec<Term> = removed.iter().map(|n| binary(env, n)).collect();
    Ok(list.encode(env))
}

/// Frees the memory of subjects removed at least the grace period ago; the count.
#[rustler::nif]
fn reclaim() -> NifResult<u64> {
    Ok(instance()?.registry.reclaim() as u64)
}

#[cold]
fn unknown_subject(env: Env<'_>) -> Term<'_> {
    (atoms::error(), atoms::unknown_subject()).encode(env)
}

/// A subject's state and counters; `{error, unknown_subject}` for a subject that does
/// not exist (a read creates nothing).
#[rustler::nif]
fn status<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let (inst, s) = match existing(subject_name)? {
        (inst, Some(s)) => (inst, s),
        (_, None) => return Ok(unknown_subject(env)),
    };
    let clock = inst.registry.clock();
    let snap = s.snapshot(clock);
    let quota = s
        .policy()
        .policy
        .segment_quota(inst.registry.pool().config().segments);
    Ok(encode::snapshot(
        env,
        s.name(),
        &snap,
        quota,
        s.retry_after_ms(clock),
    ))
}

/// The subjects that pass `filter` (`all`, `restless`: not at rest, `open`: breaker
/// open), worst first, at most `max`: `[{Subject, StatusRank, Breaker, Backpressure,
/// Depth}]` with `StatusRank` 2 active, 1 warning, 0 inactive; worst means the higher
/// rank, then the greater depth, then the name. Memory is bounded by `max` (a heap of
/// the worst seen so far), whatever the number of subjects.
#[rustler::nif]
fn overview<'a>(env: Env<'a>, max: Term<'a>, filter: Term<'a>) -> NifResult<Term<'a>> {
    use breakwater_core::state::{BackpressureState, BreakerState, Status};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let inst = instance()?;
    let max = args::int_in(max, "max", 0, 1 << 24)? as usize;
    let filter = filter
        .atom_to_string()
        .map_err(|_| args::argument_error("filter must be all, restless or open"))?;
    let keep: fn(&Subject) -> bool = match filter.as_str() {
        "all" => |_| true,
        "restless" => |s| {
            let w = s.word();
            w.status() != Status::Inactive
                || w.breaker() != BreakerState::Closed
                || w.backpressure() != BackpressureState::Normal
        },
        "open" => |s| s.word().breaker() == BreakerState::Open,
        _ => return Err(args::argument_error("filter must be all, restless or open")),
    };
    let rank = |s: &Subject| -> u8 {
        match s.word().status() {
            Status::Active => 2,
            Status::Warning => 1,
            Status::Inactive => 0,
        }
    };
    // Severity order: status rank, then depth, then the name (smaller first).
    type Severity<'s> = (u8, u64, Reverse<&'s [u8]>, *const Subject);
    // A min-heap of the `max` worst: its top is the least bad kept.
    let mut heap: BinaryHeap<Reverse<Severity>> = BinaryHeap::with_capacity(max.min(1 << 16) + 1);
    if max > 0 {
        for s in inst.registry.subjects().filter(|s| keep(s)) {
            heap.push(Reverse((
                rank(s),
                s.depth(),
                Reverse(s.name()),
                s as *const _,
            )));
            if heap.len() > max {
                heap.pop();
            }
        }
    }
    let mut worst: Vec<_> = heap.into_iter().map(|Reverse(e)| e).collect();
    worst.sort_unstable_by(|a, b| b.cmp(a));
    let list: Vec<Term> = worst
        .into_iter()
        .map(|(rank, depth, Reverse(name), p)| {
            // SAFETY: `p` came from the registry during this call; subjects outlive
            // every NIF call (see `breakwater_core::registry`).
            let w = unsafe { &*p }.word();
            (
                binary(env, name),
                rank,
                encode::breaker(w.breaker()),
                encode::backpressure(w.backpressure()),
                depth,
            )
                .encode(env)
        })
        .collect();
    Ok(list.encode(env))
}

/// The counters of `status/1` summed over every subject, with the sum of depths and
/// spool gauges: `#{subjects, queue_depth, reported_depth, segments, counters}`.
#[rustler::nif]
fn totals(env: Env<'_>) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let clock = inst.registry.clock();
    let mut sums: Vec<(&'static str, u64)> = Vec::new();
    let (mut n, mut depth, mut reported, mut segments) = (0u64, 0u64, 0u64, 0u64);
    let mut by_status = [0u64; 3];
    let mut by_breaker = [0u64; 3];
    let mut by_backpressure = [0u64; 4];
    for s in inst.registry.subjects() {
        let snap = s.snapshot(clock);
        n += 1;
        by_status[snap.word.status() as usize] += 1;
        by_breaker[snap.word.breaker() as usize] += 1;
        by_backpressure[snap.word.backpressure() as usize] += 1;
        depth = depth.saturating_add(snap.depth);
        reported = reported.saturating_add(snap.reported_depth);
        segments += u64::from(snap.spool.segments);
        let pairs = encode::counter_pairs(&snap);
        if sums.is_empty() {
            sums = pairs;
        } else {
            for ((_, total), (_, v)) in sums.iter_mut().zip(pairs) {
                *total = total.saturating_add(v);
            }
        }
    }
    // No subject: no counter keys at all (the layer above reads missing ones as 0).
    let counters = encode::pairs_map(env, &sums);
    let statuses = encode::pairs_map(
        env,
        &[
            ("inactive", by_status[0]),
            ("warning", by_status[1]),
            ("active", by_status[2]),
        ],
    );
    let breakers = encode::pairs_map(
        env,
        &[
            ("closed", by_breaker[0]),
            ("open", by_breaker[1]),
            ("half_open", by_breaker[2]),
        ],
    );
    let backpressures = encode::pairs_map(
        env,
        &[
            ("normal", by_backpressure[0]),
            ("pressure", by_backpressure[1]),
            ("dropping", by_backpressure[2]),
            ("recovery", by_backpressure[3]),
        ],
    );
    Ok(encode::pairs_map_with(
        env,
        &[
            ("subjects", n),
            ("queue_depth", depth),
            ("reported_depth", reported),
            ("segments", segments),
        ],
        &[
            ("counters", counters),
            ("by_status", statuses),
            ("by_breaker", breakers),
            ("by_backpressure", backpressures),
        ],
    ))
}

/// True when the subject exists (never creates it).
#[rustler::nif]
fn exists<'a>(subject_name: Term<'a>) -> NifResult<bool> {
    let inst = instance()?;
    Ok(inst.registry.get(args::subject(subject_name)?).is_some())
}

/// Every subject's name.
#[rustler::nif]
fn subjects(env: Env<'_>) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let list: Vec<Term> = inst
        .registry
        .subjects()
        .map(|s| binary(env, s.name()))
        .collect();
    Ok(list.encode(env))
}

/// The pool and registry: geometry, free segments, footprint, subjects.
#[rustler::nif]
fn pool_info(env: Env<'_>) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let r = &inst.registry;
    let c = r.pool().config();
    let rooms = r.stats();
    let keys = [
        "segments",
        "free_segments",
        "missing_segments",
        "segment_capacity",
        "segment_bytes",
        "max_event_bytes",
        "footprint_bytes",
        "subjects",
        "max_subjects",
        "subject_capacity",
        "batch_owners",
        "counter_stripes",
        "dynamic_subjects",
        "configured_subjects",
        "retired_subjects",
        "removed_subjects",
        "table_tombstones",
        "table_rebuilds",
    ];
    let values = [
        u64::from(c.segments),
        r.pool().free_segments() as u64,
        r.pool().missing_segments() as u64,
        u64::from(c.segment_capacity),
        u64::from(c.segment_bytes),
        u64::from(c.max_event_bytes),
        c.footprint_bytes(),
        r.len() as u64,
        r.max_subjects() as u64,
        r.capacity() as u64,
        inst.owners() as u64,
        stripe_count() as u64,
        rooms.dynamic as u64,
        rooms.configured as u64,
        rooms.retired as u64,
        rooms.removed,
        rooms.tombstones as u64,
        rooms.rebuilds,
    ];
    let keys: Vec<Term> = keys
        .iter()
        .map(|k| atoms::key(env, k).encode(env))
        .collect();
    let values: Vec<Term> = values.iter().map(|v| v.encode(env)).collect();
    Term::map_from_term_arrays(env, &keys, &values)
}

/// The registry clock, in ms.
#[rustler::nif]
fn now_ms() -> NifResult<u64> {
    use breakwater_core::clock::Clock;
    Ok(instance()?.registry.clock().now_ms())
}

/// Moves the registry clock forward (tests: timeouts without sleeping).
#[rustler::nif]
fn advance_clock<'a>(ms: Term<'a>) -> NifResult<rustler::Atom> {
    let ms = args::int_in(ms, "ms", 0, 1 << 40)?;
    instance()?.registry.clock().advance(ms);
    Ok(atoms::ok())
}
