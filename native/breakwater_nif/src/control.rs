//! Set-up, configuration, manual control, the timer, and inspection.

use crate::args;
use crate::atoms;
use crate::encode;
use crate::instance;
use crate::policy_term::{decode_policy, decode_registry_config, problems_term, validation_term};
use crate::subject_arg::{instance, subject};
use breakwater_core::counters::stripe_count;
use breakwater_core::subject::Subject;
use breakwater_core::transition::Transitions;
use rustler::{Encoder, Env, NewBinary, NifResult, Term};

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut b = NewBinary::new(env, bytes.len());
    b.as_mut_slice().copy_from_slice(bytes);
    rustler::Binary::from(b).encode(env)
}

/// Creates the node's registry, or reconfigures it: `ok | {error, Problems}`.
#[rustler::nif]
fn init<'a>(env: Env<'a>, config: Term<'a>) -> Term<'a> {
    match decode_registry_config(config) {
        Err(problems) => problems_term(env, problems),
        Ok(config) => match instance::init(config) {
            Ok(()) => atoms::ok().encode(env),
            Err(errors) => validation_term(env, errors),
        },
    }
}

/// True once `init/1` has run.
#[rustler::nif]
fn started() -> bool {
    instance::get().is_some()
}

/// Replaces a subject's policy (a complete native policy map).
#[rustler::nif]
fn configure<'a>(env: Env<'a>, subject_name: Term<'a>, policy: Term<'a>) -> NifResult<Term<'a>> {
    let inst = instance()?;
    let name = args::subject(subject_name)?;
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
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    debug_assert_eq!(s.name(), name);
    let mut out = Transitions::new();
    let segments = inst.registry.pool().config().segments;
    Ok(
        match s.configure(policy, segments, inst.registry.clock(), &mut out) {
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

/// The timer's visit to every subject: `[{Subject, Transition}]`.
#[rustler::nif]
fn tick(env: Env<'_>) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let mut out = Vec::new();
    inst.registry.tick(&mut out);
    let list: Vec<Term> = out
        .iter()
        .map(|(s, t)| (binary(env, s.name()), encode::transition(env, t)).encode(env))
        .collect();
    Ok(list.encode(env))
}

/// A subject's state and counters (the subject is created on first use).
#[rustler::nif]
fn status<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    let snap = s.snapshot(inst.registry.clock());
    let quota = s
        .policy()
        .policy
        .segment_quota(inst.registry.pool().config().segments);
    Ok(encode::snapshot(env, s.name(), &snap, quota))
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
    let keys = [
        "segments",
        "free_segments",
        "segment_capacity",
        "segment_bytes",
        "max_event_bytes",
        "footprint_bytes",
        "subjects",
        "max_subjects",
        "subject_capacity",
        "batch_owners",
        "counter_stripes",
    ];
    let values = [
        u64::from(c.segments),
        r.pool().free_segments() as u64,
        u64::from(c.segment_capacity),
        u64::from(c.segment_bytes),
        u64::from(c.max_event_bytes),
        c.footprint_bytes(),
        r.len() as u64,
        r.max_subjects() as u64,
        r.capacity() as u64,
        inst.owners() as u64,
        stripe_count() as u64,
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
