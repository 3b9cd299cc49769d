//! Every backpressure transition (depth rules and recovery), driven through
//! `report_depth` and through the spool (enqueue / drain / ack), plus the admission
//! order of `admit`, run-time reconfiguration and `check`. A `ManualClock` stands in
//! for time; nothing sleeps.
//!
//! Every operation goes through [`H::step`], which checks that the transitions reported
//! in the `Transitions` out-param chain from the word before the operation to the word
//! after it, and that the subject's transition counters equal what was reported so far.

use breakwater_core::clock::Clock;
use breakwater_core::clock::ManualClock;
use breakwater_core::counters::Counter;
use breakwater_core::policy::{DropPolicy, Policy, PoolConfig};
use breakwater_core::registry::{Registry, RegistryConfig};
use breakwater_core::spool::{Batch, Taken};
use breakwater_core::state::BackpressureState::{self, Dropping, Normal, Pressure, Recovery};
use breakwater_core::state::{BreakerState, Status, Word};
use breakwater_core::store::Store;
use breakwater_core::subject::{EnqueueError, Enqueued, Outcome, Reason, Snapshot, Subject};
use breakwater_core::transition::{Machine, Transition, Transitions};
use std::cell::RefCell;

mod common;

use common::Answer;

const NAME: &[u8] = b"intake";

/// warning 100, critical 500, recovery depth 50, shed depth 400, stability 1 s.
fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy {
        warning_threshold: 100,
        critical_threshold: 500,
        recovery_threshold: 0.5,
        stability_ms: 1_000,
        low_priority_shed_ratio: 0.8,
        retry_after_ms: 7_000,
        failure_threshold: 1,
        open_timeout_ms: 30_000,
        half_open_max_calls: 1,
        ..Policy::default()
    };
    f(&mut p);
    p.validate().expect("test policy is valid");
    p
}

/// 8 segments of 4 events (at most 64 bytes each).
fn small_pool() -> PoolConfig {
    PoolConfig {
        segments: 8,
        segment_capacity: 4,
        // Each event takes its bytes and a 16-byte record header.
        segment_bytes: 4 * (64 + 16),
        max_event_bytes: 64,
    }
}

struct H {
    reg: Registry<ManualClock>,
    name: &'static [u8],
    seen: RefCell<Vec<Transition>>,
}

impl H {
    fn new(policy: Policy) -> Self {
        Self::with_pool(policy, small_pool())
    }

    fn with_pool(policy: Policy, pool: PoolConfig) -> Self {
        let reg = Registry::new(
            RegistryConfig {
                max_subjects: 8,
                pool,
                default_policy: policy.clone(),
            },
            ManualClock::new(5_000),
        )
        .expect("valid registry config");
        reg.subject_with(NAME, policy).expect("subject");
        Self {
            reg,
            name: NAME,
            seen: RefCell::new(Vec::new()),
        }
    }

    /// Another handle on the same registry, for a second subject.
    fn other(&self, name: &'static [u8]) -> H2<'_> {
        self.reg.subject(name).expect("subject");
        H2 { h: self, name }
    }

    fn s(&self) -> &Subject {
        self.reg.get(self.name).expect("subject exists")
    }

    fn clock(&self) -> &ManualClock {
        self.reg.clock()
    }

    fn wait(&self, ms: u64) {
        self.clock().advance(ms);
    }

    fn word(&self) -> Word {
        self.s().word()
    }

    fn bp(&self) -> BackpressureState {
        self.word().backpressure()
    }

    fn snap(&self) -> Snapshot {
        self.s().snapshot(self.clock())
    }

    fn step<R>(
        &self,
        f: impl FnOnce(&Subject, &ManualClock, &mut Transitions) -> R,
    ) -> (R, Vec<Transition>) {
        common::checked_step(self.s(), self.clock(), &self.seen, f)
    }

    fn run(&self, op: Op) -> (Out, Vec<Transition>) {
        let pool = self.reg.store();
        self.step(|s, c, t| match op {
            Op::Depth(d) => {
                s.report_depth(d, c, t);
                Out::Done
            }
            Op::Wait(ms) => {
                c.advance(ms);
                Out::Done
            }
            Op::Check => {
                let (st, retry) = s.check(c, t);
                Out::Check(st, retry)
            }
            Op::Tick => {
                s.tick(pool, c, t);
                Out::Done
            }
            Op::Admit(p) => Out::Admission(common::answer(s.admit(p, c, t))),
        })
    }

    fn depth(&self, d: u64) -> Vec<BackpressureState2> {
        pairs(&self.run(Op::Depth(d)).1)
    }

    fn tick(&self) -> Vec<BackpressureState2> {
        pairs(&self.run(Op::Tick).1)
    }

    fn check(&self) -> (Status, u64) {
        match self.run(Op::Check).0 {
            Out::Check(s, r) => (s, r),
            o => panic!("{o:?}"),
        }
    }

    fn admit(&self, p: u8) -> Answer {
        match self.run(Op::Admit(p)).0 {
            Out::Admission(a) => a,
            o => panic!("{o:?}"),
        }
    }

    fn enqueue(&self, event: &[u8]) -> (Enqueued, Vec<BackpressureState2>) {
        let pool = self.reg.store();
        let (r, ts) = self.step(|s, c, t| s.enqueue(pool, event, c, t));
        (r.expect("event within max_event_bytes"), pairs(&ts))
    }

    /// Takes a batch of at most `max` events; returns it with copies of its events.
    fn take(&self, max: u64) -> Option<(Batch, Vec<Vec<u8>>)> {
        let (r, ts) = self.step(|s, c, t| take(s, self.reg.store(), c, t, max));
        assert_eq!(ts, vec![], "taking a batch makes no transition");
        r
    }

    fn ack(&self, id: u64) -> Vec<BackpressureState2> {
        let pool = self.reg.store();
        let (r, ts) = self.step(|s, c, t| s.ack(pool, id, c, t));
        r.expect("known batch");
        pairs(&ts)
    }

    fn fail(&self) -> Vec<Transition> {
        self.step(|s, c, t| s.record(Outcome::Failure, None, c, t))
            .1
    }
}

/// A second subject in the same registry (sharing the pool).
struct H2<'a> {
    h: &'a H,
    name: &'static [u8],
}

impl H2<'_> {
    fn s(&self) -> &Subject {
        self.h.reg.get(self.name).unwrap()
    }

    fn enqueue(&self, event: &[u8]) -> (Enqueued, Vec<BackpressureState2>) {
        let mut t = Transitions::new();
        let r = self
            .s()
            .enqueue(self.h.reg.store(), event, self.h.clock(), &mut t)
            .unwrap();
        (r, pairs(&t.iter().copied().collect::<Vec<_>>()))
    }

    fn take(&self, max: u64) -> Option<(Batch, Vec<Vec<u8>>)> {
        let mut t = Transitions::new();
        take(self.s(), self.h.reg.store(), self.h.clock(), &mut t, max)
    }

    fn ack(&self, id: u64) {
        let mut t = Transitions::new();
        self.s()
            .ack(self.h.reg.store(), id, self.h.clock(), &mut t)
            .unwrap();
    }
}

type BackpressureState2 = (BackpressureState, BackpressureState);

/// The backpressure transitions of `ts` (a depth signal's flag moving alone is
/// `tests/signal_transitions.rs`'s business).
fn pairs(ts: &[Transition]) -> Vec<BackpressureState2> {
    ts.iter()
        .filter(|t| t.machine() != Machine::Signal)
        .inspect(|t| assert_eq!(t.machine(), Machine::Backpressure, "{t:?}"))
        .map(|t| t.backpressure())
        .collect()
}

fn take<C: Clock>(
    s: &Subject,
    store: &Store,
    c: &C,
    t: &mut Transitions,
    max: u64,
) -> Option<(Batch, Vec<Vec<u8>>)> {
    match s.drain(store, max, u64::MAX, 1, c, t, |b, events| {
        (*b, events.map(<[u8]>::to_vec).collect())
    }) {
        Taken::Batch(_, r) => Some(r),
        Taken::Empty => None,
        Taken::NeedsLoad => panic!("memory segments are always readable"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Depth(u64),
    Wait(u64),
    Check,
    Tick,
    Admit(u8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Done,
    Check(Status, u64),
    Admission(Answer),
}

type Step = (
    Op,
    &'static [BackpressureState2],
    BackpressureState,
    Option<Out>,
);

struct Case {
    name: &'static str,
    policy: Policy,
    steps: Vec<Step>,
}

const NONE: &[BackpressureState2] = &[];

const fn check(status: Status, retry: u64) -> Option<Out> {
    Some(Out::Check(status, retry))
}

fn cases() -> Vec<Case> {
    use Op::*;
    vec![
        Case {
            name: "normal -> pressure at warning; pressure -> normal at the recovery depth",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(99), NONE, Normal, None),
                (Check, NONE, Normal, check(Status::Inactive, 0)),
                (Depth(100), &[(Normal, Pressure)], Pressure, None),
                (Check, NONE, Pressure, check(Status::Warning, 0)),
                (Depth(499), NONE, Pressure, None),
                (Depth(51), NONE, Pressure, None),
                (Depth(50), &[(Pressure, Normal)], Normal, None),
                (Depth(99), NONE, Normal, None),
                (Depth(0), NONE, Normal, None),
            ],
        },
        Case {
            name: "normal -> dropping at critical",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(500), &[(Normal, Dropping)], Dropping, None),
                (Check, NONE, Dropping, check(Status::Active, 7_000)),
                (Depth(10_000), NONE, Dropping, None),
            ],
        },
        Case {
            name: "pressure -> dropping at critical",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(300), &[(Normal, Pressure)], Pressure, None),
                (Depth(499), NONE, Pressure, None),
                (Depth(500), &[(Pressure, Dropping)], Dropping, None),
            ],
        },
        Case {
            name: "dropping -> recovery at the recovery depth, recovery -> normal after stability_ms (check)",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(600), &[(Normal, Dropping)], Dropping, None),
                (Depth(100), NONE, Dropping, None),
                (Depth(51), NONE, Dropping, None),
                (Depth(50), &[(Dropping, Recovery)], Recovery, None),
                (Check, NONE, Recovery, check(Status::Warning, 0)),
                (Wait(999), NONE, Recovery, None),
                (Check, NONE, Recovery, check(Status::Warning, 0)),
                (Tick, NONE, Recovery, None),
                (Depth(0), NONE, Recovery, None),
                (Wait(1), NONE, Recovery, None),
                (Check, &[(Recovery, Normal)], Normal, check(Status::Inactive, 0)),
            ],
        },
        Case {
            name: "recovery -> normal by the timer",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(500), &[(Normal, Dropping)], Dropping, None),
                (Depth(10), &[(Dropping, Recovery)], Recovery, None),
                (Wait(999), NONE, Recovery, None),
                (Tick, NONE, Recovery, None),
                (Wait(1), NONE, Recovery, None),
                (Tick, &[(Recovery, Normal)], Normal, None),
                (Tick, NONE, Normal, None),
            ],
        },
        Case {
            name: "recovery -> normal on a depth report after stability_ms",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(500), &[(Normal, Dropping)], Dropping, None),
                (Depth(10), &[(Dropping, Recovery)], Recovery, None),
                (Wait(1_000), NONE, Recovery, None),
                (Depth(20), &[(Recovery, Normal)], Normal, None),
            ],
        },
        Case {
            name: "the calm timer restarts when depth rises above the recovery depth",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(500), &[(Normal, Dropping)], Dropping, None),
                (Depth(50), &[(Dropping, Recovery)], Recovery, None),
                (Wait(500), NONE, Recovery, None),
                // Above the recovery depth (even above warning): recovery holds, calm ends.
                (Depth(51), NONE, Recovery, None),
                (Depth(300), NONE, Recovery, None),
                (Wait(600), NONE, Recovery, None),
                (Tick, NONE, Recovery, None),
                (Check, NONE, Recovery, check(Status::Warning, 0)),
                // Calm again from now: a full stability period is needed from here.
                (Depth(50), NONE, Recovery, None),
                (Wait(999), NONE, Recovery, None),
                (Tick, NONE, Recovery, None),
                (Wait(1), NONE, Recovery, None),
                (Tick, &[(Recovery, Normal)], Normal, None),
            ],
        },
        Case {
            name: "recovery -> dropping at critical",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(500), &[(Normal, Dropping)], Dropping, None),
                (Depth(0), &[(Dropping, Recovery)], Recovery, None),
                (Depth(499), NONE, Recovery, None),
                (Depth(500), &[(Recovery, Dropping)], Dropping, None),
                (Wait(5_000), NONE, Dropping, None),
                (Tick, NONE, Dropping, None),
                (Depth(0), &[(Dropping, Recovery)], Recovery, None),
                // The stability period starts at the new entry into recovery.
                (Tick, NONE, Recovery, None),
                (Wait(1_000), NONE, Recovery, None),
                (Tick, &[(Recovery, Normal)], Normal, None),
            ],
        },
        Case {
            name: "zero stability: dropping -> recovery -> normal in one report",
            policy: policy(|p| p.stability_ms = 0),
            steps: vec![
                (Depth(500), &[(Normal, Dropping)], Dropping, None),
                (
                    Depth(50),
                    &[(Dropping, Recovery), (Recovery, Normal)],
                    Normal,
                    None,
                ),
            ],
        },
        Case {
            name: "a jump past critical from pressure or normal goes straight to dropping",
            policy: policy(|_| {}),
            steps: vec![
                (Depth(1_000_000), &[(Normal, Dropping)], Dropping, None),
                (Depth(49), &[(Dropping, Recovery)], Recovery, None),
                (Wait(1_000), NONE, Recovery, None),
                (Check, &[(Recovery, Normal)], Normal, check(Status::Inactive, 0)),
                (Depth(200), &[(Normal, Pressure)], Pressure, None),
                (Depth(u64::MAX), &[(Pressure, Dropping)], Dropping, None),
            ],
        },
    ]
}

#[test]
fn scripted_depth_transitions() {
    for case in cases() {
        let h = H::new(case.policy.clone());
        for (i, (op, transitions, state, out)) in case.steps.iter().enumerate() {
            let ctx = format!("case {:?}, step {i} ({op:?})", case.name);
            eprintln!("{ctx}");
            let (got, ts) = h.run(*op);
            assert_eq!(pairs(&ts), transitions.to_vec(), "{ctx}: transitions");
            assert_eq!(h.bp(), *state, "{ctx}: state after");
            if let Some(out) = out {
                assert_eq!(got, *out, "{ctx}: result");
            }
        }
    }
}

#[test]
fn counters_and_watermark_follow_depth() {
    let h = H::new(policy(|_| {}));
    for d in [100, 600, 40, 0] {
        h.depth(d);
    }
    h.wait(1_000);
    h.tick();
    let s = h.snap();
    // normal->pressure, pressure->dropping, dropping->recovery, recovery->normal
    assert_eq!(s.backpressure_transitions, 4);
    // Inactive->Warning, Warning->Active, Active->Warning, Warning->Inactive
    assert_eq!(s.status_changes, 4);
    assert_eq!(s.high_watermark, 600);
    assert_eq!((s.depth, s.reported_depth), (0, 0));
}

#[test]
fn check_status_and_retry_values() {
    let h = H::new(policy(|_| {}));
    assert_eq!(h.check(), (Status::Inactive, 0));
    h.depth(100);
    assert_eq!(h.check(), (Status::Warning, 0));
    h.depth(500);
    assert_eq!(h.check(), (Status::Active, 7_000));
    h.depth(0);
    assert_eq!(h.check(), (Status::Warning, 0));
    // Open breaker: active, retry = the open time left (or retry_after_ms when that is
    // larger and the subject is dropping).
    assert_eq!(h.fail().len(), 1);
    assert_eq!(h.check(), (Status::Active, 30_000));
    h.wait(1_000); // recovery -> normal on this check
    assert_eq!(h.check(), (Status::Active, 29_000));
    assert_eq!(h.bp(), Normal);
    h.depth(500);
    assert_eq!(h.check(), (Status::Active, 29_000));
    h.wait(25_000);
    assert_eq!(
        h.check(),
        (Status::Active, 7_000),
        "max of open time left and retry_after_ms"
    );
    h.depth(0);
    assert_eq!(h.check(), (Status::Active, 4_000));
    h.wait(4_000);
    // Half-open, and recovery (calm for 4 s by now) -> normal, on one check.
    let (out, ts) = h.run(Op::Check);
    assert_eq!(out, Out::Check(Status::Warning, 0));
    assert_eq!(ts.len(), 2, "{ts:?}");
    assert_eq!(h.word().breaker(), BreakerState::HalfOpen);
}

#[test]
fn admission_order_is_bypass_open_limit_backpressure_shed() {
    use Reason::*;
    // (setup, priority, expected)
    #[allow(clippy::type_complexity)]
    let table: Vec<(&str, fn(&H), u8, Answer)> = vec![
        ("quiet", |_| {}, 5, Answer::Admit),
        ("quiet, low", |_| {}, 0, Answer::Admit),
        (
            "open + dropping: bypass first",
            |h| {
                h.depth(10_000);
                h.fail();
            },
            8,
            Answer::Admit,
        ),
        (
            "open + dropping + shed depth: circuit_open before backpressure and shedding",
            |h| {
                h.depth(10_000);
                h.fail();
            },
            1,
            Answer::Reject(CircuitOpen, 30_000),
        ),
        (
            "half-open limit + dropping: half_open_limit before backpressure",
            |h| {
                h.fail();
                h.wait(30_000);
                assert_eq!(h.admit(5), Answer::Probe);
                h.depth(10_000);
            },
            5,
            Answer::Reject(HalfOpenLimit, 5_000),
        ),
        (
            "half-open with a free slot + dropping: backpressure",
            |h| {
                h.fail();
                h.wait(30_000);
                h.depth(10_000);
            },
            5,
            Answer::Reject(Backpressure, 7_000),
        ),
        (
            "half-open with a free slot, pressure: a probe",
            |h| {
                h.fail();
                h.wait(30_000);
                h.depth(200);
            },
            5,
            Answer::Probe,
        ),
        (
            "dropping: backpressure before shedding",
            |h| {
                h.depth(10_000);
            },
            0,
            Answer::Reject(Backpressure, 7_000),
        ),
        (
            "dropping: bypass",
            |h| {
                h.depth(10_000);
            },
            9,
            Answer::Admit,
        ),
        (
            "pressure at the shed depth: low priority shed",
            |h| {
                h.depth(400);
            },
            2,
            Answer::Reject(ShedLowPriority, 7_000),
        ),
        (
            "pressure at the shed depth: priority above low_priority_max passes",
            |h| {
                h.depth(400);
            },
            3,
            Answer::Admit,
        ),
        (
            "pressure below the shed depth: low priority passes",
            |h| {
                h.depth(399);
            },
            0,
            Answer::Admit,
        ),
        (
            "recovery at the shed depth: low priority shed",
            |h| {
                h.depth(500);
                h.depth(0);
                h.depth(450);
                assert_eq!(h.bp(), Recovery);
            },
            1,
            Answer::Reject(ShedLowPriority, 7_000),
        ),
        (
            "half-open with a free slot at the shed depth: shed, no slot taken",
            |h| {
                h.fail();
                h.wait(30_000);
                h.depth(450);
            },
            0,
            Answer::Reject(ShedLowPriority, 7_000),
        ),
    ];
    for (name, setup, priority, expected) in table {
        let h = H::new(policy(|_| {}));
        setup(&h);
        let before = h.word();
        let counters_before = h.snap().counters;
        assert_eq!(h.admit(priority), expected, "{name}");
        let after = h.word();
        let counter = match expected {
            Answer::Admit if priority >= 8 => Counter::Bypassed,
            Answer::Admit | Answer::Probe => Counter::Accepted,
            Answer::Reject(CircuitOpen, _) => Counter::RejectedCircuitOpen,
            Answer::Reject(HalfOpenLimit, _) => Counter::RejectedHalfOpenLimit,
            Answer::Reject(Backpressure, _) => Counter::RejectedBackpressure,
            Answer::Reject(ShedLowPriority, _) => Counter::RejectedShedLowPriority,
            Answer::Reject(Reason::Overloaded, _) => Counter::RejectedOverloaded,
        };
        // Exactly the one counter of the answer moved, by one.
        let counters_after = h.snap().counters;
        for (i, (a, b)) in counters_before.iter().zip(&counters_after).enumerate() {
            let want = u64::from(i == counter as usize);
            assert_eq!(
                b - a,
                want,
                "{name}: counter #{i} (answer counts as {counter:?})"
            );
        }
        if expected == Answer::Probe {
            assert_eq!(
                after.probes(),
                before.probes() + 1,
                "{name}: a probe takes a slot"
            );
        } else {
            assert_eq!(
                before.probes(),
                after.probes(),
                "{name}: only a probe takes a slot"
            );
        }
    }
}

#[test]
fn ledger_writes_are_admitted_by_the_breaker_alone() {
    let h = H::new(policy(|p| p.half_open_max_calls = 2));
    let write = |h: &H| {
        let (a, ts) = h.step(|s, c, t| s.admit_write(c, t));
        (common::answer(a), ts)
    };
    // Dropping at a depth past the shed depth: draining is what relieves it, so
    // backpressure never holds a write back.
    h.depth(10_000);
    assert_eq!(write(&h).0, Answer::Admit);
    // An open breaker does.
    h.fail();
    assert_eq!(write(&h).0, Answer::Reject(Reason::CircuitOpen, 30_000));
    // Half-open: writes are probes, limited like any probe, even while dropping.
    h.wait(30_000);
    let (a, ts) = write(&h);
    assert_eq!(a, Answer::Probe);
    assert_eq!(
        ts.iter().map(|t| t.breaker()).collect::<Vec<_>>(),
        vec![(BreakerState::Open, BreakerState::HalfOpen)]
    );
    assert_eq!(write(&h).0, Answer::Probe);
    assert_eq!(write(&h).0, Answer::Reject(Reason::HalfOpenLimit, 5_000));
    assert_eq!(h.word().probes(), 2);
    let s = h.snap();
    assert_eq!(s.counter(Counter::Accepted), 3);
    assert_eq!(s.counter(Counter::RejectedCircuitOpen), 1);
    assert_eq!(s.counter(Counter::RejectedHalfOpenLimit), 1);
    assert_eq!(s.counter(Counter::RejectedBackpressure), 0);
}

#[test]
fn low_priority_shedding_applies_in_the_quiet_state_too() {
    // Shed depth (0.1 x 500 = 50) below warning (100): shedding starts while normal.
    let h = H::new(policy(|p| p.low_priority_shed_ratio = 0.1));
    h.depth(49);
    assert_eq!(h.admit(2), Answer::Admit);
    h.depth(50);
    assert_eq!(h.bp(), Normal);
    assert_eq!(h.admit(2), Answer::Reject(Reason::ShedLowPriority, 7_000));
    assert_eq!(h.admit(3), Answer::Admit);
    assert_eq!(h.admit(8), Answer::Admit);
    let s = h.snap();
    assert_eq!(s.counter(Counter::RejectedShedLowPriority), 1);
    assert_eq!(s.counter(Counter::Accepted), 2);
    assert_eq!(s.counter(Counter::Bypassed), 1);
}

#[test]
fn configure_changes_thresholds_and_reevaluates() {
    let h = H::new(policy(|_| {}));
    h.depth(80);
    assert_eq!(h.bp(), Normal);
    let configure = |p: Policy| {
        let pool_segments = h.reg.pool().config().segments;
        h.step(|s, c, t| s.configure(p, pool_segments, c, t))
    };
    // Lower warning: 80 is now pressure.
    let (r, ts) = configure(policy(|p| p.warning_threshold = 80));
    assert_eq!(r, Ok(()));
    assert_eq!(pairs(&ts), vec![(Normal, Pressure)]);
    // Raise warning to 200: recovery depth 100 >= 80, so pressure -> normal.
    let (r, ts) = configure(policy(|p| p.warning_threshold = 200));
    assert_eq!(r, Ok(()));
    assert_eq!(pairs(&ts), vec![(Pressure, Normal)]);
    // Lower critical to 80: dropping.
    let (_, ts) = configure(policy(|p| {
        p.warning_threshold = 50;
        p.critical_threshold = 80;
    }));
    assert_eq!(pairs(&ts), vec![(Normal, Dropping)]);
    assert_eq!(h.admit(5), Answer::Reject(Reason::Backpressure, 7_000));
    // Raise everything: the recovery depth (0.5 x 1000) is above 80.
    let (_, ts) = configure(policy(|p| {
        p.warning_threshold = 1_000;
        p.critical_threshold = 2_000;
        p.stability_ms = 0;
    }));
    assert_eq!(pairs(&ts), vec![(Dropping, Recovery), (Recovery, Normal)]);
    assert_eq!(h.s().policy().policy.critical_threshold, 2_000);
    // Shed depth follows critical: 0.8 x 2000 = 1600.
    h.depth(1_599);
    assert_eq!(h.admit(0), Answer::Admit);
    h.depth(1_600);
    assert_eq!(h.admit(0), Answer::Reject(Reason::ShedLowPriority, 7_000));
}

#[test]
fn invalid_policies_are_rejected_with_every_key_and_change_nothing() {
    let h = H::new(policy(|_| {}));
    h.depth(150);
    assert_eq!(h.bp(), Pressure);
    let before_word = h.word();
    let before_policy = h.s().policy().policy.clone();
    let bad = Policy {
        warning_threshold: 20,
        critical_threshold: 10,
        recovery_threshold: 1.0,
        low_priority_shed_ratio: 0.0,
        bypass_priority: 10,
        failure_threshold: 0,
        failure_rate_threshold: Some(1.5),
        window_ms: 5,
        minimum_calls: 0,
        slow_call_ms: Some(0),
        open_timeout_ms: 0,
        half_open_max_calls: 0,
        success_threshold: 0,
        call_timeout_ms: 0,
        max_segments: Some(0),
        ..Policy::default()
    };
    let pool_segments = h.reg.pool().config().segments;
    let (r, ts) = h.step(|s, c, t| s.configure(bad, pool_segments, c, t));
    let mut keys: Vec<&str> = r.unwrap_err().iter().map(|e| e.key).collect();
    keys.sort_unstable();
    let mut expected = vec![
        "critical_threshold",
        "recovery_threshold",
        "low_priority_shed_ratio",
        "bypass_priority",
        "failure_threshold",
        "failure_rate_threshold",
        "window_ms",
        "minimum_calls",
        "slow_call_ms",
        "open_timeout_ms",
        "half_open_max_calls",
        "success_threshold",
        "call_timeout_ms",
        "max_segments",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert!(ts.is_empty());
    assert_eq!(h.word(), before_word);
    assert_eq!(h.s().policy().policy, before_policy);
    // The old thresholds still hold (recovery depth 50, warning 100).
    assert_eq!(h.depth(50), vec![(Pressure, Normal)]);
    assert_eq!(h.depth(99), vec![]);
    assert_eq!(h.depth(100), vec![(Normal, Pressure)]);
    // A single bad key is refused just the same.
    let one_bad = Policy {
        warning_threshold: 500,
        ..policy(|_| {})
    };
    let (r, ts) = h.step(|s, c, t| s.configure(one_bad, pool_segments, c, t));
    assert_eq!(
        r.unwrap_err().iter().map(|e| e.key).collect::<Vec<_>>(),
        vec!["critical_threshold"]
    );
    assert!(ts.is_empty());
    assert_eq!(h.s().policy().policy.warning_threshold, 100);
    assert_eq!(h.bp(), Pressure);
}

// ---- the spool ------------------------------------------------------------------------

fn ev(i: u64) -> Vec<u8> {
    format!("event-{i:04}").into_bytes()
}

/// Depth thresholds in spooled events: warning 6, critical 12, recovery 3.
fn spool_policy(f: impl FnOnce(&mut Policy)) -> Policy {
    policy(|p| {
        p.warning_threshold = 6;
        p.critical_threshold = 12;
        p.max_segments = Some(4);
        f(p);
    })
}

#[test]
fn spool_depth_drives_every_transition() {
    let h = H::new(spool_policy(|_| {}));
    for i in 0..5 {
        assert_eq!(h.enqueue(&ev(i)), (Enqueued::Accepted, vec![]));
    }
    assert_eq!(h.enqueue(&ev(5)).1, vec![(Normal, Pressure)]);
    for i in 6..11 {
        assert_eq!(h.enqueue(&ev(i)).1, vec![]);
    }
    assert_eq!(h.enqueue(&ev(11)).1, vec![(Pressure, Dropping)]);
    assert_eq!(h.snap().depth, 12);
    assert_eq!(h.check(), (Status::Active, 7_000));
    // Taking does not lower the depth (in-flight events are still spooled) ...
    let (b, evs) = h.take(9).unwrap();
    assert_eq!(evs, (0..9).map(ev).collect::<Vec<_>>());
    assert_eq!(h.snap().depth, 12);
    // ... acking does: 3 left = the recovery depth.
    assert_eq!(h.ack(b.id), vec![(Dropping, Recovery)]);
    assert_eq!(h.snap().depth, 3);
    h.wait(1_000);
    assert_eq!(h.tick(), vec![(Recovery, Normal)]);
    // Pressure -> normal through the spool as well.
    for i in 12..15 {
        h.enqueue(&ev(i));
    }
    assert_eq!(h.bp(), Pressure);
    let (b, evs) = h.take(3).unwrap();
    assert_eq!(evs, (9..12).map(ev).collect::<Vec<_>>());
    assert_eq!(h.ack(b.id), vec![(Pressure, Normal)]);
    let st = h.snap().spool;
    assert_eq!(st.enqueued_events, 15);
    assert_eq!(st.delivered_events, 12);
    assert_eq!(st.spooled_events, 3);
    assert_eq!(h.snap().high_watermark, 12);
}

#[test]
fn segment_quota_exhaustion_drops_and_acks_recover() {
    // Quota 2 segments = 8 events, far below warning: only exhaustion can drop.
    let h = H::new(policy(|p| p.max_segments = Some(2)));
    for i in 0..8 {
        assert_eq!(h.enqueue(&ev(i)), (Enqueued::Accepted, vec![]));
    }
    let (r, ts) = h.enqueue(b"refused!");
    assert_eq!(r, Enqueued::Refused(7_000));
    assert_eq!(ts, vec![(Normal, Dropping)]);
    let s = h.snap();
    assert!(s.exhausted);
    assert_eq!(s.depth, 8);
    assert_eq!(
        h.reg.pool().free_segments(),
        6,
        "the quota, not the pool, was the limit"
    );
    assert_eq!(h.admit(5), Answer::Reject(Reason::Backpressure, 7_000));
    // Still exhausted: nothing recovers until a segment is freed.
    assert_eq!(h.tick(), vec![]);
    assert_eq!(h.enqueue(b"refused2").1, vec![]);
    // Taking without acking frees nothing.
    let (b, _) = h.take(3).unwrap();
    assert_eq!(h.tick(), vec![]);
    assert_eq!(h.bp(), Dropping);
    // Acking 3 frees no whole segment yet ...
    assert_eq!(h.ack(b.id), vec![]);
    assert_eq!(h.bp(), Dropping);
    // ... acking the 4th does, and the depth (4) is at the recovery depth (50).
    let (b, _) = h.take(1).unwrap();
    assert_eq!(h.ack(b.id), vec![(Dropping, Recovery)]);
    assert!(!h.snap().exhausted);
    assert_eq!(h.enqueue(b"accepted").0, Enqueued::Accepted);
    h.wait(1_000);
    assert_eq!(h.tick(), vec![(Recovery, Normal)]);
    let st = h.snap().spool;
    assert_eq!((st.dropped_newest_events, st.dropped_newest_bytes), (2, 16));
    assert_eq!(st.enqueued_events, 9);
    assert_eq!(
        st.enqueued_events,
        st.delivered_events + st.spooled_events + st.dropped_oldest_events
    );
}

#[test]
fn pool_exhaustion_drops_and_tick_clears_a_stale_exhaustion() {
    // A pool of 4 segments; each subject may take all 4.
    let h = H::with_pool(
        policy(|p| p.max_segments = Some(4)),
        PoolConfig {
            segments: 4,
            ..small_pool()
        },
    );
    let other = h.other(b"hog");
    for i in 0..16 {
        assert_eq!(other.enqueue(&ev(i)).0, Enqueued::Accepted);
    }
    assert_eq!(h.reg.pool().free_segments(), 0);
    // The pool has no segment for this subject: dropping at depth 0.
    let (r, ts) = h.enqueue(b"nope");
    assert_eq!(r, Enqueued::Refused(7_000));
    assert_eq!(ts, vec![(Normal, Dropping)]);
    assert_eq!(h.snap().depth, 0);
    assert_eq!(h.tick(), vec![], "the pool is still empty");
    // The other subject frees segments; this one's exhaustion is now stale.
    let (b, _) = other.take(8).unwrap();
    other.ack(b.id);
    assert_eq!(h.reg.pool().free_segments(), 2);
    assert_eq!(h.bp(), Dropping);
    assert!(h.snap().exhausted);
    assert_eq!(h.tick(), vec![(Dropping, Recovery)]);
    assert!(!h.snap().exhausted);
    h.wait(1_000);
    assert_eq!(h.tick(), vec![(Recovery, Normal)]);
}

#[test]
fn pool_exhaustion_clears_on_the_next_segment_acquired() {
    let h = H::with_pool(
        policy(|p| p.max_segments = Some(4)),
        PoolConfig {
            segments: 4,
            ..small_pool()
        },
    );
    let other = h.other(b"hog");
    for i in 0..16 {
        other.enqueue(&ev(i));
    }
    assert_eq!(h.enqueue(b"nope").1, vec![(Normal, Dropping)]);
    let (b, _) = other.take(4).unwrap();
    other.ack(b.id);
    assert_eq!(h.enqueue(b"yes").0, Enqueued::Accepted);
    assert_eq!(h.bp(), Recovery);
    assert!(!h.snap().exhausted);
}

#[test]
fn tick_keeps_an_exhaustion_at_the_quota() {
    let h = H::new(policy(|p| p.max_segments = Some(1)));
    for i in 0..4 {
        h.enqueue(&ev(i));
    }
    assert_eq!(h.enqueue(b"x").1, vec![(Normal, Dropping)]);
    assert!(h.reg.pool().free_segments() > 0);
    // The pool has room but the subject is at its quota: the exhaustion is not stale.
    h.wait(60_000);
    assert_eq!(h.tick(), vec![]);
    assert!(h.snap().exhausted);
    assert_eq!(h.bp(), Dropping);
}

#[test]
fn drop_newest_counts_every_refused_event_and_byte() {
    let h = H::new(policy(|p| p.max_segments = Some(1)));
    let mut bytes = 0;
    for i in 0..4 {
        h.enqueue(&ev(i));
    }
    for i in 0..5u64 {
        let e = vec![b'x'; 10 + i as usize];
        bytes += e.len() as u64;
        assert_eq!(h.enqueue(&e).0, Enqueued::Refused(7_000));
    }
    let st = h.snap().spool;
    assert_eq!(
        (st.dropped_newest_events, st.dropped_newest_bytes),
        (5, bytes)
    );
    assert_eq!((st.dropped_oldest_events, st.dropped_oldest_bytes), (0, 0));
    assert_eq!(st.enqueued_events, 4);
    // The spooled events are the first four, untouched.
    let (_, evs) = h.take(100).unwrap();
    assert_eq!(evs, (0..4).map(ev).collect::<Vec<_>>());
}

#[test]
fn drop_oldest_discards_the_oldest_and_counts_them() {
    let h = H::new(policy(|p| {
        p.max_segments = Some(2);
        p.drop_policy = DropPolicy::DropOldest;
    }));
    for i in 0..8 {
        assert_eq!(h.enqueue(&ev(i)).0, Enqueued::Accepted);
    }
    let (r, ts) = h.enqueue(&ev(8));
    assert_eq!(r, Enqueued::AcceptedAfterDrop(4));
    assert_eq!(ts, vec![(Normal, Dropping)]);
    for i in 9..12 {
        assert_eq!(h.enqueue(&ev(i)).0, Enqueued::Accepted);
    }
    assert_eq!(h.enqueue(&ev(12)).0, Enqueued::AcceptedAfterDrop(4));
    let st = h.snap().spool;
    let ev_bytes = ev(0).len() as u64;
    assert_eq!(st.dropped_oldest_events, 8);
    assert_eq!(st.dropped_oldest_bytes, 8 * ev_bytes);
    assert_eq!((st.dropped_newest_events, st.dropped_newest_bytes), (0, 0));
    assert_eq!(st.enqueued_events, 13);
    assert_eq!(st.spooled_events, 5);
    // Oldest first: what is left is the newest five, in order.
    let (b, evs) = h.take(100).unwrap();
    assert_eq!(evs, (8..13).map(ev).collect::<Vec<_>>());
    // A batch in flight pins the oldest segment: drop_oldest must refuse instead.
    for i in 13..16 {
        h.enqueue(&ev(i));
    }
    assert_eq!(h.enqueue(&ev(16)).0, Enqueued::Refused(7_000));
    h.ack(b.id);
    let st = h.snap().spool;
    assert_eq!(st.dropped_newest_events, 1);
    assert_eq!(
        st.enqueued_events,
        st.delivered_events + st.spooled_events + st.dropped_oldest_events
    );
    assert_eq!(
        st.enqueued_bytes,
        st.delivered_bytes + st.spooled_bytes + st.dropped_oldest_bytes
    );
}

#[test]
fn oversized_events_are_refused_with_a_clear_error() {
    let h = H::new(policy(|_| {}));
    let pool = h.reg.store();
    let mut t = Transitions::new();
    let r = h.s().enqueue(pool, &[0u8; 65], h.clock(), &mut t);
    assert_eq!(r, Err(EnqueueError::TooLarge { bytes: 65, max: 64 }));
    assert!(h.s().enqueue(pool, &[0u8; 64], h.clock(), &mut t).is_ok());
    assert!(t.is_empty());
    let st = h.snap().spool;
    assert_eq!(st.enqueued_events, 1);
    assert_eq!(
        st.dropped_newest_events, 0,
        "a refused oversized event is not a drop"
    );
}

#[test]
fn nack_redelivers_and_depth_stays_until_ack() {
    let h = H::new(spool_policy(|_| {}));
    for i in 0..12 {
        h.enqueue(&ev(i));
    }
    assert_eq!(h.bp(), Dropping);
    let (b, evs) = h.take(12).unwrap();
    assert_eq!(h.s().nack(b.id), Ok(12));
    assert_eq!(h.bp(), Dropping);
    let (b2, evs2) = h.take(12).unwrap();
    assert_eq!(evs, evs2, "redelivered in the same order");
    assert_ne!(b.id, b2.id);
    assert_eq!(h.ack(b2.id), vec![(Dropping, Recovery)]);
    assert!(h
        .s()
        .ack(h.reg.store(), b.id, h.clock(), &mut Transitions::new())
        .is_err());
    assert_eq!(h.reg.pool().free_segments(), 8);
}

#[test]
fn depth_is_the_larger_of_reported_and_spooled() {
    let h = H::new(spool_policy(|_| {}));
    for i in 0..4 {
        h.enqueue(&ev(i));
    }
    assert_eq!(h.depth(2), vec![]);
    assert_eq!(h.snap().depth, 4);
    assert_eq!(h.depth(6), vec![(Normal, Pressure)]);
    // The report drops but the spool still holds 4 > 3: still pressure.
    assert_eq!(h.depth(0), vec![]);
    assert_eq!(h.bp(), Pressure);
    let (b, _) = h.take(1).unwrap();
    assert_eq!(h.ack(b.id), vec![(Pressure, Normal)]);
}

#[test]
fn transitions_carry_their_cause() {
    use breakwater_core::transition::Cause;
    let causes = |ts: Vec<Transition>| -> Vec<(BackpressureState2, Cause)> {
        ts.iter().map(|t| (t.backpressure(), t.cause)).collect()
    };
    let h = H::new(policy(|p| p.max_segments = Some(1)));
    // The reported depth crosses thresholds.
    let (_, ts) = h.run(Op::Depth(100));
    assert_eq!(causes(ts), vec![((Normal, Pressure), Cause::Depth)]);
    let (_, ts) = h.run(Op::Depth(500));
    assert_eq!(causes(ts), vec![((Pressure, Dropping), Cause::Depth)]);
    let (_, ts) = h.run(Op::Depth(0));
    assert_eq!(causes(ts), vec![((Dropping, Recovery), Cause::Depth)]);
    // The depth stayed calm for the stability period.
    h.wait(1_000);
    let (_, ts) = h.run(Op::Tick);
    assert_eq!(causes(ts), vec![((Recovery, Normal), Cause::Stability)]);
    // A new policy's thresholds.
    h.run(Op::Depth(80));
    let pool_segments = h.reg.pool().config().segments;
    let (r, ts) = h.step(|s, c, t| {
        s.configure(
            policy(|p| {
                p.warning_threshold = 80;
                p.max_segments = Some(1);
            }),
            pool_segments,
            c,
            t,
        )
    });
    assert_eq!(r, Ok(()));
    assert_eq!(causes(ts), vec![((Normal, Pressure), Cause::Configure)]);
    h.run(Op::Depth(0));
    h.wait(1_000);
    h.run(Op::Tick);
    assert_eq!(h.bp(), Normal);
    // No segment for the subject (its quota of one is full) at a depth far below
    // critical: the pool is the cause.
    for i in 0..4 {
        assert_eq!(h.enqueue(&ev(i)).0, Enqueued::Accepted);
    }
    let pool = h.reg.store();
    let (r, ts) = h.step(|s, c, t| s.enqueue(pool, b"refused", c, t));
    assert_eq!(r, Ok(Enqueued::Refused(7_000)));
    assert_eq!(causes(ts), vec![((Normal, Dropping), Cause::Pool)]);
}
