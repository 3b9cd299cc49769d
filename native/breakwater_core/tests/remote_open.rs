//! `Subject::remote_open`: a peer's breaker opened, so this one opens too.
//!
//! It is an ordinary trip from closed by the breaker's own rules (one CAS, reported
//! once with cause `remote_open`, counted in `opens` and `remote_opens`), it leaves
//! every other state alone (open, forced, half-open, disabled), and the breaker it
//! opened probes and closes on its own. The last test races it against local failures
//! on many threads: exactly one open is reported, with the winner's cause.

use breakwater_core::clock::ManualClock;
use breakwater_core::policy::{Policy, PoolConfig};
use breakwater_core::registry::{Registry, RegistryConfig};
use breakwater_core::state::BreakerState::{self, Closed, HalfOpen, Open};
use breakwater_core::state::Status;
use breakwater_core::subject::{Outcome, Reason, Subject};
use breakwater_core::transition::Cause::{self, *};
use breakwater_core::transition::{Transition, Transitions};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

mod common;

use common::Answer;

const NAME: &[u8] = b"ledger";

fn registry(policy: Policy) -> Registry<ManualClock> {
    let reg = Registry::new(
        RegistryConfig {
            max_subjects: 8,
            pool: PoolConfig {
                segments: 8,
                segment_capacity: 8,
                segment_bytes: 1_024,
                max_event_bytes: 128,
            },
            default_policy: Policy::default(),
        },
        ManualClock::new(1_000),
    )
    .expect("valid registry config");
    reg.subject_with(NAME, policy).expect("subject");
    reg
}

fn policy() -> Policy {
    let p = Policy {
        failure_threshold: 3,
        open_timeout_ms: 10_000,
        max_open_timeout_ms: Some(80_000),
        half_open_max_calls: 2,
        success_threshold: 2,
        ..Policy::default()
    };
    p.validate().expect("valid");
    p
}

/// A breaker transition: from, to, cause.
type Moved = (BreakerState, BreakerState, Cause);

struct H {
    reg: Registry<ManualClock>,
    seen: RefCell<Vec<Transition>>,
}

impl H {
    fn new() -> Self {
        Self {
            reg: registry(policy()),
            seen: RefCell::new(Vec::new()),
        }
    }

    fn s(&self) -> &Subject {
        self.reg.get(NAME).expect("subject")
    }

    fn step<R>(
        &self,
        f: impl FnOnce(&Subject, &ManualClock, &mut Transitions) -> R,
    ) -> (R, Vec<Moved>) {
        let (r, ts) = common::checked_step(self.s(), self.reg.clock(), &self.seen, f);
        let moved = ts
            .iter()
            .filter(|t| t.from.breaker() != t.to.breaker())
            .map(|t| (t.from.breaker(), t.to.breaker(), t.cause))
            .collect();
        (r, moved)
    }

    fn remote_open(&self) -> (bool, Vec<Moved>) {
        self.step(|s, c, t| s.remote_open(c, t))
    }

    fn fail(&self) -> Vec<Moved> {
        self.step(|s, c, t| s.record(Outcome::Failure, None, c, t))
            .1
    }

    fn succeed(&self) -> Vec<Moved> {
        self.step(|s, c, t| s.record(Outcome::Success, None, c, t))
            .1
    }

    fn admit(&self) -> Answer {
        common::answer(self.step(|s, c, t| s.admit(5, c, t)).0)
    }

    fn tick(&self) -> Vec<Moved> {
        self.step(|s, c, t| s.tick(self.reg.store(), c, t)).1
    }

    fn wait(&self, ms: u64) {
        self.reg.clock().advance(ms);
    }

    fn breaker(&self) -> BreakerState {
        self.s().word().breaker()
    }

    fn remote_opens(&self) -> u64 {
        self.s().snapshot(self.reg.clock()).remote_opens
    }
}

#[test]
fn opens_a_closed_breaker_once_and_counts_it() {
    let h = H::new();
    // One failure short of the threshold: the remote open clears the count.
    h.fail();
    h.fail();
    assert_eq!(h.remote_open(), (true, vec![(Closed, Open, RemoteOpen)]));
    assert_eq!(h.remote_opens(), 1);
    let snap = h.s().snapshot(h.reg.clock());
    assert_eq!(snap.opens, 1, "a remote open is an open");
    assert_eq!(snap.consecutive_failures, 0);
    assert_eq!(
        snap.word.trip_streak(),
        0,
        "a first trip: no growth of the open time"
    );
    assert_eq!(
        snap.open_remaining_ms, 10_000,
        "the open time of this node's policy"
    );
    assert_eq!(
        h.admit(),
        Answer::Reject(Reason::CircuitOpen, 10_000),
        "rejects like any open breaker"
    );
    let mut out = Transitions::new();
    assert_eq!(
        h.s().check(h.reg.clock(), &mut out),
        (Status::Active, 10_000)
    );
    assert!(out.is_empty());

    // Already open: nothing changes, nothing is counted.
    assert_eq!(h.remote_open(), (false, vec![]));
    assert_eq!(h.remote_opens(), 1);
}

#[test]
fn the_breaker_it_opened_probes_and_closes_on_its_own() {
    let h = H::new();
    assert!(h.remote_open().0);
    h.wait(10_000);
    assert_eq!(h.tick(), vec![(Open, HalfOpen, OpenTimeout)]);
    assert_eq!(h.admit(), Answer::Probe);
    assert!(h.succeed().is_empty());
    assert_eq!(h.admit(), Answer::Probe);
    assert_eq!(h.succeed(), vec![(HalfOpen, Closed, ProbeSuccesses)]);
    assert_eq!(h.breaker(), Closed);
    let snap = h.s().snapshot(h.reg.clock());
    assert_eq!(
        (snap.opens, snap.remote_opens, snap.successful_recoveries),
        (1, 1, 1)
    );

    // Local failures trip it as before, from a count of zero.
    h.fail();
    h.fail();
    assert_eq!(h.fail(), vec![(Closed, Open, Failures)]);
    assert_eq!(h.remote_opens(), 1);
}

#[test]
fn leaves_half_open_forced_and_disabled_breakers_alone() {
    let h = H::new();
    // Half-open after a local trip, with its growth streak: still probing on its own.
    h.fail();
    h.fail();
    assert_eq!(h.fail(), vec![(Closed, Open, Failures)]);
    assert_eq!(
        h.remote_open(),
        (false, vec![]),
        "already open: its open time is kept"
    );
    h.wait(10_000);
    assert_eq!(h.tick(), vec![(Open, HalfOpen, OpenTimeout)]);
    assert_eq!(h.admit(), Answer::Probe);
    assert_eq!(h.remote_open(), (false, vec![]));
    assert_eq!(h.breaker(), HalfOpen);
    assert_eq!(h.s().word().probes(), 1, "its probe slot is untouched");
    // The probe fails: the re-trip grows the open time as usual.
    assert_eq!(h.fail(), vec![(HalfOpen, Open, ProbeFailure)]);
    assert_eq!(h.s().word().trip_streak(), 1);
    assert_eq!(h.remote_open(), (false, vec![]));
    assert_eq!(h.s().snapshot(h.reg.clock()).open_remaining_ms, 20_000);

    // Forced open.
    h.step(|s, c, t| s.reset(c, t));
    h.step(|s, c, t| s.force_open(c, t));
    assert_eq!(h.remote_open(), (false, vec![]));
    assert!(h.s().word().forced_open());

    // Disabled: never trips, whatever a peer says.
    h.step(|s, c, t| s.reset(c, t));
    h.step(|s, c, t| s.set_disabled(true, c, t));
    assert_eq!(h.remote_open(), (false, vec![]));
    assert_eq!(h.breaker(), Closed);
    assert_eq!(h.remote_opens(), 0);
}

#[test]
fn races_with_local_failures_report_one_open() {
    for round in 0..200 {
        let reg = Arc::new(registry(Policy {
            failure_threshold: 1,
            ..policy()
        }));
        let threads = 4;
        let barrier = Arc::new(Barrier::new(threads));
        let opens = Arc::new(AtomicUsize::new(0));
        let remote_won = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (reg, barrier, opens, remote_won) = (
                    reg.clone(),
                    barrier.clone(),
                    opens.clone(),
                    remote_won.clone(),
                );
                std::thread::spawn(move || {
                    let s = reg.get(NAME).expect("subject");
                    let mut out = Transitions::new();
                    barrier.wait();
                    if (i + round) % 2 == 0 {
                        if s.remote_open(reg.clock(), &mut out) {
                            remote_won.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        s.record(Outcome::Failure, None, reg.clock(), &mut out);
                    }
                    for t in out.iter().filter(|t| t.breaker() == (Closed, Open)) {
                        let expected = if (i + round) % 2 == 0 {
                            RemoteOpen
                        } else {
                            Failures
                        };
                        assert_eq!(t.cause, expected, "the winner's own cause");
                        opens.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let snap = reg.get(NAME).expect("subject").snapshot(reg.clock());
        assert_eq!(
            opens.load(Ordering::Relaxed),
            1,
            "round {round}: one open reported"
        );
        assert_eq!(snap.opens, 1);
        assert_eq!(snap.remote_opens, remote_won.load(Ordering::Relaxed) as u64);
        assert!(snap.remote_opens <= 1);
        assert_eq!(snap.word.breaker(), Open);
    }
}

#[test]
fn a_call_admitted_before_the_remote_open_answers_late() {
    let h = H::new();
    let (admission, _) = h.step(|s, c, t| s.admit(5, c, t));
    let ticket = admission.ticket().expect("admitted while closed");
    assert!(h.remote_open().0);
    // Its failure belongs to the closed period the remote open ended: it is counted
    // as a failure but moves nothing, and the next closed period starts from zero.
    let (_, moved) = h.step(|s, c, t| s.record_ticket(Outcome::Failure, None, ticket, c, t));
    assert!(moved.is_empty());
    let snap = h.s().snapshot(h.reg.clock());
    assert_eq!(snap.consecutive_failures, 0);
    assert_eq!(snap.word.breaker(), Open);
}
