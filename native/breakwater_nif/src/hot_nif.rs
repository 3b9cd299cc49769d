//! Registration of the hot NIFs without rustler's per-call argument vector.
//!
//! `#[rustler::nif]` wraps every function in a shim that collects `argv` into a
//! `Vec<Term>` before decoding it: one `malloc` and one `free` per call, about 7 % of a
//! `check_backpressure/1` in a profile (`perf`, OTP 25). [`hot_nif!`] registers the
//! same kind of [`rustler::Nif`] entry with a shim that reads `argv` in place and keeps
//! everything else rustler's shim does: the `Env`, `catch_unwind` (a panic is raised
//! as `nif_panicked` and never reaches the VM) and rustler's own conversion of the
//! `NifResult` into a return value or an exception. Written here because rustler
//! offers no allocation-free variant of its attribute.

/// A term as the VM passes it, without rustler's `Term` wrapper.
pub(crate) type Raw = rustler::sys::ErlNifTerm;

/// Registers `$func(env, args…) -> NifResult<Raw>` as the NIF `$name/$arity` of the
/// module `rustler::init!` names.
macro_rules! hot_nif {
    ($name:literal, $func:path, $arity:literal, [$($i:literal),*]) => {
        rustler::codegen_runtime::inventory::submit!(rustler::Nif {
            name: concat!($name, "\0").as_ptr() as *const rustler::codegen_runtime::c_char,
            arity: $arity,
            flags: 0,
            raw_func: {
                unsafe extern "C" fn nif_func(
                    nif_env: *mut rustler::sys::ErlNifEnv,
                    argc: rustler::codegen_runtime::c_int,
                    argv: *const rustler::sys::ErlNifTerm,
                ) -> rustler::sys::ErlNifTerm {
                    let lifetime = ();
                    // SAFETY: `nif_env` is the calling process's environment, valid for
                    // this call, which is what `lifetime` bounds.
                    let env = unsafe { rustler::Env::new(&lifetime, nif_env) };
                    debug_assert_eq!(argc, $arity);
                    // SAFETY: the VM calls a NIF registered with arity `$arity` with
                    // exactly that many terms in `argv`, valid in `env`.
                    let args = unsafe { std::slice::from_raw_parts(argv, $arity) };
                    let result = std::panic::catch_unwind(move || {
                        // SAFETY: as above; each term belongs to `env`.
                        match $func(env, $(unsafe { rustler::Term::new(env, args[$i]) }),*) {
                            // The raw term: copies of a `Term` (a word, a pointer
                            // and a one-byte kind) through the unwind guard cost
                            // store-forwarding stalls, about a quarter of a check.
                            Ok(term) => term,
                            Err(error) => $crate::hot_nif::failed(env, Ok(Err(error))),
                        }
                    });
                    match result {
                        Ok(term) => term,
                        Err(panic) => $crate::hot_nif::failed(env, Err(panic)),
                    }
                }
                nif_func
            },
        });
    };
}

pub(crate) use hot_nif;

/// An error or a panic of a hot NIF, turned into the exception rustler's own shim
/// raises (`ArgumentError`, `nif_panicked`, …).
#[cold]
#[inline(never)]
pub(crate) fn failed(
    env: rustler::Env<'_>,
    outcome: std::thread::Result<rustler::NifResult<rustler::Term<'_>>>,
) -> rustler::sys::ErlNifTerm {
    // SAFETY: `apply` builds the exception (or term) in `env`, the environment of the
    // NIF call that failed, as rustler's own shim does.
    unsafe { rustler::codegen_runtime::handle_nif_result(outcome, env).apply(env) }
}
