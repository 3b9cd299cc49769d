//! Finding the subject a NIF call names: calls that write create it on first use
//! ([`subject`]), reads never do ([`existing`]), configuration puts it in the configured
//! room ([`configured`]).

use crate::args::{self, argument_error};
use crate::atoms;
use crate::instance::{self, Instance};
use breakwater_core::registry::{RegistryError, MAX_NAME_BYTES};
use breakwater_core::subject::Subject;
use rustler::{Encoder, Env, Error, NifResult, Term};

/// The instance, or the exception `breakwater_not_started`.
#[inline]
pub fn instance() -> NifResult<&'static Instance> {
    instance::get().ok_or(Error::RaiseAtom("breakwater_not_started"))
}

/// The subject named by `term`, created on first use; `Err(term)` carries the
/// `{error, {too_many_subjects, Max}}` to return when the cap is reached. Inlined into
/// every caller: its result, returned through memory, stalled store forwarding.
#[inline(always)]
pub fn subject<'a>(
    env: Env<'a>,
    term: Term<'a>,
) -> NifResult<Result<(&'static Instance, &'static Subject), Term<'a>>> {
    let inst = instance()?;
    let name = args::subject(term)?;
    match inst.registry.subject(name) {
        Ok(s) => Ok(Ok((inst, s))),
        Err(e) => registry_error(env, e),
    }
}

/// The subject named by `term` if it exists (never created: for reads, and for calls
/// such as `ack/2` that only make sense on an existing subject).
#[inline(always)]
pub fn existing<'a>(term: Term<'a>) -> NifResult<(&'static Instance, Option<&'static Subject>)> {
    let inst = instance()?;
    let name = args::subject(term)?;
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(bad_name());
    }
    Ok((inst, inst.registry.get(name)))
}

/// The subject named by `term` as a configured subject (created in, or moved to, the
/// configured room); `Err(term)` as for [`subject`].
pub fn configured<'a>(
    env: Env<'a>,
    term: Term<'a>,
) -> NifResult<Result<(&'static Instance, &'static Subject), Term<'a>>> {
    let inst = instance()?;
    let name = args::subject(term)?;
    match inst.registry.configured(name) {
        Ok(s) => Ok(Ok((inst, s))),
        Err(e) => registry_error(env, e),
    }
}

#[cold]
fn registry_error<'a, T>(env: Env<'a>, e: RegistryError) -> NifResult<Result<T, Term<'a>>> {
    match e {
        RegistryError::TooManySubjects { max } => Ok(Err((
            atoms::error(),
            (atoms::too_many_subjects(), max as u64),
        )
            .encode(env))),
        RegistryError::BadName => Err(bad_name()),
    }
}

#[cold]
fn bad_name() -> rustler::Error {
    argument_error(format!(
        "subject must be a non-empty binary of at most {MAX_NAME_BYTES} bytes"
    ))
}
