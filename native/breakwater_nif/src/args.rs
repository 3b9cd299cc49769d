//! Decoding arguments, and the errors bad ones raise.
//!
//! A bad argument raises `ArgumentError` (an Elixir exception struct, which Erlang
//! callers see as `error:#{'__struct__' := 'Elixir.ArgumentError', message := Msg}`)
//! whose message names the argument and what was expected. Nothing here panics.

use crate::atoms;
use rustler::{Binary, Encoder, Env, Error, NifResult, Term};

struct ArgumentError(String);

impl Encoder for ArgumentError {
    fn encode<'a>(&self, env: Env<'a>) -> Term<'a> {
        let keys = [
            atoms::__struct__().encode(env),
            atoms::__exception__().encode(env),
            atoms::message().encode(env),
        ];
        let values = [
            atoms::argument_error().encode(env),
            true.encode(env),
            self.0.as_str().encode(env),
        ];
        Term::map_from_term_arrays(env, &keys, &values)
            .unwrap_or_else(|_| atoms::error().encode(env))
    }
}

/// An `ArgumentError` with `message`.
pub fn argument_error(message: impl Into<String>) -> Error {
    Error::RaiseTerm(Box::new(ArgumentError(message.into())))
}

/// The bytes of a subject name (a binary; the Elixir layer turns atoms into binaries).
#[inline]
pub fn subject<'a>(term: Term<'a>) -> NifResult<&'a [u8]> {
    match Binary::from_term(term) {
        Ok(b) => Ok(b.as_slice()),
        Err(_) => Err(argument_error(
            "subject must be a binary (or an atom in the Elixir API)",
        )),
    }
}

/// A non-negative integer argument named `name`.
pub fn non_neg(term: Term, name: &str) -> NifResult<u64> {
    term.decode::<u64>()
        .map_err(|_| argument_error(format!("{name} must be a non-negative integer")))
}

/// An integer argument named `name` within `lo..=hi`.
pub fn int_in(term: Term, name: &str, lo: u64, hi: u64) -> NifResult<u64> {
    match term.decode::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(argument_error(format!(
            "{name} must be an integer in {lo}..{hi}"
        ))),
    }
}
