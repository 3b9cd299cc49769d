//! The spool's NIFs: enqueue, drain, ack, nack, and the spool's upkeep (read-back of
//! overflow files, housekeeping, sync), the last three on dirty I/O schedulers.

use crate::args::{self, argument_error};
use crate::atoms;
use crate::encode;
use crate::hot_nif::{hot_nif, Raw};
use crate::subject_arg::{existing, instance, subject};
use breakwater_core::spool::{BatchError, Taken};
use breakwater_core::store::{Durability, Level};
use breakwater_core::subject::{EnqueueError, Enqueued};
use breakwater_core::transition::Transitions;
use rustler::{Binary, Encoder, Env, NewBinary, NifResult, Term};

// Registered without rustler's per-call allocation (`hot_nif`).
hot_nif!("enqueue", enqueue, 2, [0, 1]);

/// Most events one drain returns.
pub const DRAIN_MAX_EVENTS: u64 = 10_000;
/// Most bytes one drain copies (beyond its first event), so a drain stays well under a
/// millisecond.
pub const DRAIN_MAX_BYTES: u64 = 1 << 20;

/// `ok | {dropped_oldest, N} | {reject, pool_exhausted | spool_unavailable,
/// RetryAfterMs} | {error, {event_too_large, Bytes, Max}}`. `{dropped_oldest, N}`:
/// spooled after discarding the N oldest pending events.
fn enqueue<'a>(env: Env<'a>, subject_name: Term<'a>, event: Term<'a>) -> NifResult<Raw> {
    let event = Binary::from_term(event).map_err(|_| argument_error("event must be a binary"))?;
    let mut out = Transitions::new();
    let outcome = loop {
        let (inst, s) = match subject(env, subject_name)? {
            Ok(found) => found,
            Err(error) => return Ok(error.as_c_arg()),
        };
        match s.enqueue(
            inst.registry.store(),
            event.as_slice(),
            inst.registry.clock(),
            &mut out,
        ) {
            // Removed between the lookup and the store (nothing was stored): the name
            // now leads to a fresh subject, or to a new one made by the next lookup.
            Err(EnqueueError::Removed) => continue,
            other => break other,
        }
    };
    let result = match outcome {
        Ok(Enqueued::Accepted) => atoms::ok().encode(env),
        Ok(Enqueued::AcceptedAfterDrop(n)) => (atoms::dropped_oldest(), n).encode(env),
        Ok(Enqueued::Refused(retry)) => {
            (atoms::reject(), atoms::pool_exhausted(), retry).encode(env)
        }
        Ok(Enqueued::Unavailable(retry)) => {
            (atoms::reject(), atoms::spool_unavailable(), retry).encode(env)
        }
        Err(EnqueueError::TooLarge { bytes, max }) => (
            atoms::error(),
            (atoms::event_too_large(), bytes as u64, max),
        )
            .encode(env),
        Err(EnqueueError::Removed) => unreachable!("retried above"),
    };
    Ok(encode::raw_with_transitions(env, result, &out))
}

/// `{ok, BatchId, [binary]} | empty | load`: at most `max` (1..10000) of the oldest
/// pending events, owned by the caller until acked or nacked (or the caller dies). An
/// unknown subject has nothing to drain (and is not created). `load`: the next events
/// are in overflow files not read back yet; call `load/1` (a dirty I/O NIF) and drain
/// again.
#[rustler::nif]
fn drain<'a>(env: Env<'a>, subject_name: Term<'a>, max: Term<'a>) -> NifResult<Term<'a>> {
    let max = args::int_in(max, "max", 1, DRAIN_MAX_EVENTS)?;
    let (inst, s) = match existing(subject_name)? {
        (inst, Some(s)) => (inst, s),
        (_, None) => return Ok(atoms::empty().encode(env)),
    };
    let pid = env.pid();
    let Some(owner) = inst.owner(env, &pid, s) else {
        return Ok(atoms::empty().encode(env));
    };
    let mut out = Transitions::new();
    let taken = s.drain(
        inst.registry.store(),
        max,
        DRAIN_MAX_BYTES,
        owner,
        inst.registry.clock(),
        &mut out,
        |batch, events| {
            // One binary for the batch, one copy of each event; each event is a
            // sub-binary of it.
            let mut bin = NewBinary::new(env, batch.bytes as usize);
            let mut ends = Vec::with_capacity(batch.len() as usize);
            {
                let buf = bin.as_mut_slice();
                let mut at = 0;
                for e in events {
                    buf[at..at + e.len()].copy_from_slice(e);
                    at += e.len();
                    ends.push(at);
                }
            }
            let bin: Binary<'a> = bin.into();
            let mut start = 0;
            let mut terms: Vec<Term<'a>> = Vec::with_capacity(ends.len());
            for end in ends {
                match bin.make_subbinary(start, end - start) {
                    Ok(sub) => terms.push(sub.to_term(env)),
                    Err(_) => terms.push(atoms::error().encode(env)),
                }
                start = end;
            }
            terms
        },
    );
    let result = match taken {
        Taken::Batch(batch, events) => (atoms::ok(), batch.id, events).encode(env),
        Taken::Empty => atoms::empty().encode(env),
        Taken::NeedsLoad => atoms::load().encode(env),
    };
    Ok(encode::with_transitions(env, result, &out))
}

/// Reads back the overflow files the subject's next drain needs: the number of segment
/// files read (0 for an unknown subject, which is not created). A dirty I/O NIF.
#[rustler::nif(schedule = "DirtyIo")]
fn load<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let (inst, s) = match existing(subject_name)? {
        (inst, Some(s)) => (inst, s),
        (_, None) => return Ok(0u64.encode(env)),
    };
    Ok((s.load(inst.registry.store()) as u64).encode(env))
}

fn batch_result<'a>(env: Env<'a>, r: Result<(), BatchError>) -> Term<'a> {
    match r {
        Ok(()) => atoms::ok().encode(env),
        Err(BatchError::UnknownBatch) => (atoms::error(), atoms::unknown_batch()).encode(env),
    }
}

fn unknown_batch(env: Env<'_>) -> Term<'_> {
    batch_result(env, Err(BatchError::UnknownBatch))
}

/// Acknowledges a batch: its events are delivered. No batch of an unknown subject
/// exists (and the subject is not created).
#[rustler::nif]
fn ack<'a>(env: Env<'a>, subject_name: Term<'a>, batch_id: Term<'a>) -> NifResult<Term<'a>> {
    let id = args::non_neg(batch_id, "batch_id")?;
    let (inst, s) = match existing(subject_name)? {
        (inst, Some(s)) => (inst, s),
        (_, None) => return Ok(unknown_batch(env)),
    };
    let mut out = Transitions::new();
    let r = s.ack(inst.registry.store(), id, inst.registry.clock(), &mut out);
    Ok(encode::with_transitions(env, batch_result(env, r), &out))
}

/// Returns a batch to the spool, to be delivered again before newer events.
#[rustler::nif]
fn nack<'a>(env: Env<'a>, subject_name: Term<'a>, batch_id: Term<'a>) -> NifResult<Term<'a>> {
    let id = args::non_neg(batch_id, "batch_id")?;
    let Some(s) = existing(subject_name)?.1 else {
        return Ok(unknown_batch(env));
    };
    Ok(batch_result(env, s.nack(id).map(|_| ())))
}

/// Returns every batch in flight of the subject to its spool; the count of events.
#[rustler::nif]
fn nack_all<'a>(env: Env<'a>, subject_name: Term<'a>) -> NifResult<Term<'a>> {
    let Some(s) = existing(subject_name)?.1 else {
        return Ok(0u64.encode(env));
    };
    Ok(s.nack_all().encode(env))
}

/// The store's reports since the last call, as `{[Report], Suppressed}` where a
/// report is `#{level, kind, subject, message}` (`subject` is `nil` or a binary).
pub fn reports_term(env: Env<'_>) -> Term<'_> {
    let Some(inst) = crate::instance::get() else {
        return (Vec::<Term>::new(), 0u64).encode(env);
    };
    let (reports, suppressed) = inst.registry.store().take_reports();
    let list: Vec<Term> = reports
        .iter()
        .map(|r| {
            let level = match r.level {
                Level::Info => atoms::info(),
                Level::Warning => atoms::warning(),
                Level::Error => atoms::error(),
            };
            let subject = match &r.subject {
                Some(s) => {
                    let mut b = NewBinary::new(env, s.len());
                    b.as_mut_slice().copy_from_slice(s);
                    Binary::from(b).encode(env)
                }
                None => atoms::nil().encode(env),
            };
            let keys = [
                atoms::key(env, "level").encode(env),
                atoms::key(env, "kind").encode(env),
                atoms::key(env, "subject").encode(env),
                atoms::key(env, "message").encode(env),
            ];
            let values = [
                level.encode(env),
                atoms::key(env, r.kind).encode(env),
                subject,
                r.message.as_str().encode(env),
            ];
            Term::map_from_term_arrays(env, &keys, &values)
                .unwrap_or_else(|_| atoms::error().encode(env))
        })
        .collect();
    (list, suppressed).encode(env)
}

/// The spool's housekeeping (deletes released overflow files, retries pool files a
/// full disk refused, writes to disk when `fsync` durability's interval has passed):
/// `{Reports, Suppressed}` (see `reports_term`). A dirty I/O NIF, called by a process
/// of its own, never by a router.
#[rustler::nif(schedule = "DirtyIo")]
fn spool_maintain(env: Env<'_>) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let store = inst.registry.store();
    store.maintain();
    if store.sync_due() {
        if let Err(e) = inst.registry.sync() {
            store.report(breakwater_core::store::Report {
                level: Level::Error,
                kind: "spool_unavailable",
                subject: None,
                message: format!(
                    "breakwater spool sync failed: {e}; events since the last sync may not \
                     survive a power cut"
                ),
            });
        }
    }
    Ok(reports_term(env))
}

/// Writes every spool file to disk now (`ok | {error, Message}`). A dirty I/O NIF.
#[rustler::nif(schedule = "DirtyIo")]
fn spool_sync(env: Env<'_>) -> NifResult<Term<'_>> {
    let inst = instance()?;
    Ok(match inst.registry.sync() {
        Ok(()) => atoms::ok().encode(env),
        Err(e) => (atoms::error(), e.to_string()).encode(env),
    })
}

/// The spool's state: `#{durability, dir, epoch, available, pool_missing,
/// reserve_overflow, reserve_meta, reserve_failing}` where `durability` is
/// `crash | memory | {fsync, Ms}`, `available` is false during an outage of file
/// operations, `pool_missing` counts pool slots without a file, `reserve_*` count the
/// pre-created files ready for the enqueue path and say whether the reserve's thread's
/// last creation failed.
#[rustler::nif]
fn spool_info(env: Env<'_>) -> NifResult<Term<'_>> {
    let inst = instance()?;
    let store = inst.registry.store();
    let durability = match store.durability() {
        Durability::Crash => atoms::crash().encode(env),
        Durability::Memory => atoms::memory().encode(env),
        Durability::Fsync { interval_ms } => (atoms::fsync(), interval_ms).encode(env),
    };
    let dir = match store.dir() {
        Some(d) => d.root().display().to_string().encode(env),
        None => atoms::nil().encode(env),
    };
    let (ready, failing) = match store.reserve() {
        Some(r) => (r.ready(), r.failure().is_some()),
        None => ((0, 0), false),
    };
    let keys = [
        "durability",
        "dir",
        "epoch",
        "available",
        "pool_missing",
        "reserve_overflow",
        "reserve_meta",
        "reserve_failing",
    ];
    let values = [
        durability,
        dir,
        store.epoch().encode(env),
        (!store.in_outage()).encode(env),
        (store.pool().missing_segments() as u64).encode(env),
        (ready.0 as u64).encode(env),
        (ready.1 as u64).encode(env),
        failing.encode(env),
    ];
    let keys: Vec<Term> = keys
        .iter()
        .map(|k| atoms::key(env, k).encode(env))
        .collect();
    Term::map_from_term_arrays(env, &keys, &values)
}
