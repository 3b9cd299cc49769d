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

/// Registers `$func(env, args…) -> NifResult<Term>` as the NIF `$name/$arity` of the
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
                        $func(env, $(unsafe { rustler::Term::new(env, args[$i]) }),*)
                    });
                    // SAFETY: `apply` builds the return term (or raises) in `env`, the
                    // environment of this call, as rustler's own shim does.
                    unsafe { rustler::codegen_runtime::handle_nif_result(result, env).apply(env) }
                }
                nif_func
            },
        });
    };
}

pub(crate) use hot_nif;
