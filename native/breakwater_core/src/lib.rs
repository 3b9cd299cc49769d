//! Breakwater's native core: a circuit breaker, backpressure state with striped
//! counters, and a ring pool of segments that spools events, per subject.
//!
//! This crate knows nothing of the BEAM; `breakwater_nif` wraps it. Each module is one
//! concept:
//!
//! - [`state`]: the packed state word both machines live in (one CAS per transition).
//! - [`breaker`]: the circuit breaker's rules and its own state beside the word.
//! - [`probes`]: the half-open episode's probe slots, and the tickets that name
//!   admissions.
//! - [`backpressure`]: the depth rules of the backpressure machine.
//! - [`subject`]: a subject's breaker, backpressure, counters and spool together.
//! - [`counters`]: per-thread striped counters on separate cache lines.
//! - [`window`]: the optional failure-rate window.
//! - [`signals`], [`latency`], [`inflight`]: the overload signals' rule, the latency
//!   histogram and the count of calls in flight.
//! - [`record`], [`segment`], [`pool`], [`stripe`], [`spool`]: event storage (records
//!   in segment files, the pool of mapped segments that is the memory budget, one
//!   write stripe per scheduler thread) and a subject's spool with two-phase drain;
//!   [`stamp`] orders events across stripes.
//! - [`store`], [`meta`], [`recovery`]: the spool directory and its durability, each
//!   subject's counters and cursors on disk, and recovery at start.
//! - [`registry`]: all subjects, found by name without a lock; creation, removal and
//!   idle expiry, in two rooms ([`lifecycle`]); [`table`] is its lock-free name table
//!   and [`retire`] the grace period before removed memory is freed.
//! - [`policy`], [`clock`], [`transition`]: configuration, time, transition reports.
//!
//! ```
//! use breakwater_core::{clock::ManualClock, registry::{Registry, RegistryConfig}};
//! use breakwater_core::subject::{Admission, Outcome};
//! use breakwater_core::transition::Transitions;
//!
//! let reg = Registry::new(RegistryConfig::default(), ManualClock::default()).unwrap();
//! let ledger = reg.subject(b"ledger").unwrap();
//! let mut t = Transitions::new();
//! for _ in 0..5 {
//!     ledger.record(Outcome::Failure, None, reg.clock(), &mut t);
//! }
//! assert_eq!(t.len(), 1); // closed -> open, reported once
//! assert!(matches!(ledger.admit(5, reg.clock(), &mut t), Admission::Reject(..)));
//! assert!(matches!(ledger.admit(9, reg.clock(), &mut t), Admission::Admit(_))); // bypass
//! ```

#![deny(missing_docs)]

pub mod backpressure;
pub mod breaker;
pub mod checksum;
pub mod clock;
pub mod counters;
pub mod inflight;
pub mod latency;
pub mod lifecycle;
pub mod meta;
pub mod policy;
pub mod pool;
pub mod probes;
pub mod record;
pub mod recovery;
pub mod registry;
pub mod reserve;
pub mod retire;
pub mod segment;
pub mod signals;
pub mod spool;
pub mod stamp;
pub mod state;
pub mod store;
pub mod stripe;
pub mod subject;
pub mod table;
pub mod transition;
pub mod window;
