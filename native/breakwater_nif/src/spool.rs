//! The spool's NIFs: enqueue, drain, ack, nack.

use crate::args::{self, argument_error};
use crate::atoms;
use crate::encode;
use crate::hot_nif::{hot_nif, Raw};
use crate::subject_arg::{existing, subject};
use breakwater_core::spool::BatchError;
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

/// `ok | {dropped_oldest, N} | {reject, pool_exhausted, RetryAfterMs} | overflow |
/// {error, {event_too_large, Bytes, Max}}`. `{dropped_oldest, N}`: spooled after
/// discarding the N oldest pending events.
fn enqueue<'a>(env: Env<'a>, subject_name: Term<'a>, event: Term<'a>) -> NifResult<Raw> {
    let event = Binary::from_term(event).map_err(|_| argument_error("event must be a binary"))?;
    let mut out = Transitions::new();
    let outcome = loop {
        let (inst, s) = match subject(env, subject_name)? {
            Ok(found) => found,
            Err(error) => return Ok(error.as_c_arg()),
        };
        match s.enqueue(
            inst.registry.pool(),
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
        Ok(Enqueued::Overflow) => atoms::overflow().encode(env),
        Err(EnqueueError::TooLarge { bytes, max }) => (
            atoms::error(),
            (atoms::event_too_large(), bytes as u64, max),
        )
            .encode(env),
        Err(EnqueueError::Removed) => unreachable!("retried above"),
    };
    Ok(encode::raw_with_transitions(env, result, &out))
}

/// `{ok, BatchId, [binary]} | empty`: at most `max` (1..10000) of the oldest pending
/// events, owned by the caller until acked or nacked (or the caller dies). An unknown
/// subject has nothing to drain (and is not created).
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
    let taken = s.drain(max, DRAIN_MAX_BYTES, owner, |batch, pieces| {
        let mut events: Vec<Term<'a>> = Vec::with_capacity(batch.len() as usize);
        // One binary per segment piece, one copy; each event is a sub-binary of it.
        for piece in pieces {
            let mut bin = NewBinary::new(env, piece.data.len());
            bin.as_mut_slice().copy_from_slice(piece.data);
            let bin: Binary<'a> = bin.into();
            for r in piece.event_ranges() {
                match bin.make_subbinary(r.start, r.len()) {
                    Ok(sub) => events.push(sub.to_term(env)),
                    Err(_) => events.push(atoms::error().encode(env)),
                }
            }
        }
        events
    });
    match taken {
        None => Ok(atoms::empty().encode(env)),
        Some((batch, events)) => Ok((atoms::ok(), batch.id, events).encode(env)),
    }
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
    let r = s.ack(inst.registry.pool(), id, inst.registry.clock(), &mut out);
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

/// Marks whether events of the subject wait in the disk spool (see
/// `Subject::disk_pending`).
#[rustler::nif]
fn set_disk_pending<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    pending: bool,
) -> NifResult<Term<'a>> {
    let (_, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    s.set_disk_pending(pending);
    Ok(atoms::ok().encode(env))
}

/// Releases a batch as written to the disk spool (application stop), not delivered.
#[rustler::nif]
fn evacuate<'a>(env: Env<'a>, subject_name: Term<'a>, batch_id: Term<'a>) -> NifResult<Term<'a>> {
    let id = args::non_neg(batch_id, "batch_id")?;
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    let mut out = Transitions::new();
    let r = s.evacuate(inst.registry.pool(), id, inst.registry.clock(), &mut out);
    Ok(encode::with_transitions(env, batch_result(env, r), &out))
}

/// Puts an event read back from the disk spool into memory: `ok`, or `full` when the
/// pool has no room for it now.
#[rustler::nif]
fn refill<'a>(env: Env<'a>, subject_name: Term<'a>, event: Term<'a>) -> NifResult<Term<'a>> {
    let event = Binary::from_term(event).map_err(|_| argument_error("event must be a binary"))?;
    let (inst, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    if event.len() > inst.registry.pool().config().max_event_bytes as usize {
        return Err(argument_error(
            "event is larger than the pool's max_event_bytes",
        ));
    }
    let mut out = Transitions::new();
    let fit = s.refill(
        inst.registry.pool(),
        event.as_slice(),
        inst.registry.clock(),
        &mut out,
    );
    let result = if fit { atoms::ok() } else { atoms::full() };
    Ok(encode::with_transitions(env, result.encode(env), &out))
}

/// Counts overflow events (and their bytes) the disk spool could not store.
#[rustler::nif]
fn disk_dropped<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    events: Term<'a>,
    bytes: Term<'a>,
) -> NifResult<Term<'a>> {
    let events = args::non_neg(events, "events")?;
    let bytes = args::non_neg(bytes, "bytes")?;
    let (_, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    s.disk_dropped(events, bytes);
    Ok(atoms::ok().encode(env))
}

/// Counts events found in the disk spool at start that this node had not counted.
#[rustler::nif]
fn disk_recovered<'a>(
    env: Env<'a>,
    subject_name: Term<'a>,
    events: Term<'a>,
) -> NifResult<Term<'a>> {
    let events = args::non_neg(events, "events")?;
    let (_, s) = match subject(env, subject_name)? {
        Ok(found) => found,
        Err(error) => return Ok(error),
    };
    s.disk_recovered(events);
    Ok(atoms::ok().encode(env))
}
