//! Breakwater's NIF glue: converts terms and calls `breakwater_core`, nothing more.
//!
//! The functions are the stubs of `Breakwater.Native`; only the Elixir layer above
//! calls them. Modules by concept: [`router`] (the hot paths), [`spool`] (enqueue and
//! two-phase drain), [`control`] (set-up, configuration, manual control, timer,
//! inspection), [`instance`] (the node's one registry and batch-owner monitors),
//! [`args`], [`subject_arg`], [`encode`], [`policy_term`] (term conversion).
//!
//! No NIF blocks or waits: the longest, `drain/2`, copies at most 1 MiB. A panic is
//! caught by rustler and raised as `nif_panicked`; it never reaches the VM.

mod args;
mod atoms;
mod control;
mod encode;
mod hot_nif;
mod instance;
mod policy_term;
mod router;
mod spool;
mod subject_arg;

rustler::init!("Elixir.Breakwater.Native");
