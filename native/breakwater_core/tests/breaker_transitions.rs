//! Every circuit-breaker transition, driven through the public
//! `Registry`/`Subject` API with a `ManualClock` (nothing here sleeps).
//!
//! Every operation goes through [`H::step`], which checks on each call that the
//! transitions reported in the `Transitions` out-param chain from the word before the
//! operation to the word after it, carry the clock's time, and that the subject's
//! transition counters (breaker, backpressure, status changes, opens, entries into
//! half-open) equal what was reported so far: each transition is reported exactly once.

use breakwater_core::clock::ManualClock;
use breakwater_core::counters::Counter;
use breakwater_core::policy::{Policy, PoolConfig};
use breakwater_core::probes::Ticket;
use breakwater_core::registry::{Registry, RegistryConfig};
use breakwater_core::state::BreakerState::{self, Closed, HalfOpen, Open};
use breakwater_core::state::{Status, Word};
use breakwater_core::subject::{Outcome, Reason, Snapshot, Subject};
use breakwater_core::transition::Cause::{self, *};
use breakwater_core::transition::{Machine, Transition, Transitions};
use std::cell::RefCell;

mod common;

use common::Answer;

const NAME: &[u8] = b"ledger";
const START_MS: u64 = 1_000;

fn pool() -> PoolConfig {
    PoolConfig {
        segments: 8,
        segment_capacity: 8,
        segment_bytes: 1_024,
        max_event_bytes: 128,
    }
}

/// A registry with one subject, and the transitions reported so far.
struct H {
    reg: Registry<ManualClock>,
    seen: RefCell<Vec<Transition>>,
    /// Tickets of admissions made with `Op::Hold`, in order.
    held: RefCell<Vec<Ticket>>,
}

impl H {
    fn new(policy: Policy) -> Self {
        let reg = Registry::new(
            RegistryConfig {
                max_subjects: 8,
                pool: pool(),
                default_policy: Policy::default(),
            },
            ManualClock::new(START_MS),
        )
        .expect("valid registry config");
        reg.subject_with(NAME, policy).expect("subject");
        Self {
            reg,
            seen: RefCell::new(Vec::new()),
            held: RefCell::new(Vec::new()),
        }
    }

    fn s(&self) -> &Subject {
        self.reg.get(NAME).expect("subject exists")
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

    fn breaker(&self) -> BreakerState {
        self.word().breaker()
    }

    fn snap(&self) -> Snapshot {
        self.s().snapshot(self.clock())
    }

    /// Runs one operation and checks its transition report and the counters.
    fn step<R>(
        &self,
        f: impl FnOnce(&Subject, &ManualClock, &mut Transitions) -> R,
    ) -> (R, Vec<Transition>) {
        common::checked_step(self.s(), self.clock(), &self.seen, f)
    }

    fn run(&self, op: Op) -> (Out, Vec<Transition>) {
        self.step(|s, c, t| match op {
            Op::Fail => {
                s.record(Outcome::Failure, None, c, t);
                Out::Done
            }
            Op::Succeed => {
                s.record(Outcome::Success, None, c, t);
                Out::Done
            }
            Op::Took(ms) => {
                s.record(Outcome::Success, Some(ms), c, t);
                Out::Done
            }
            Op::Admit(p) => Out::Admission(common::answer(s.admit(p, c, t))),
            Op::Check => {
                let (st, retry) = s.check(c, t);
                Out::Check(st, retry)
            }
            Op::Tick => {
                s.tick(self.reg.store(), c, t);
                Out::Done
            }
            Op::Wait(ms) => {
                c.advance(ms);
                Out::Done
            }
            Op::Reset => {
                s.reset(c, t);
                Out::Done
            }
            Op::ForceOpen => {
                s.force_open(c, t);
                Out::Done
            }
            Op::Disable => {
                s.set_disabled(true, c, t);
                Out::Done
            }
            Op::Enable => {
                s.set_disabled(false, c, t);
                Out::Done
            }
            Op::Hold(p) => {
                let a = s.admit(p, c, t);
                if let Some(ticket) = a.ticket() {
                    self.held.borrow_mut().push(ticket);
                }
                Out::Admission(common::answer(a))
            }
            Op::Answer(i, outcome) => {
                let ticket = self.held.borrow()[i];
                s.record_ticket(outcome, None, ticket, c, t);
                Out::Done
            }
        })
    }

    fn fail(&self) -> Vec<Transition> {
        self.run(Op::Fail).1
    }

    fn succeed(&self) -> Vec<Transition> {
        self.run(Op::Succeed).1
    }

    fn admit(&self, priority: u8) -> Answer {
        self.run(Op::Admit(priority)).0.admission()
    }

    fn tick(&self) -> Vec<Transition> {
        self.run(Op::Tick).1
    }

    /// Trips a closed breaker with consecutive failures.
    fn trip(&self) {
        assert_eq!(self.breaker(), Closed);
        let threshold = self.s().policy().policy.failure_threshold;
        for i in 1..=threshold {
            let ts = self.fail();
            if i < threshold {
                assert!(ts.is_empty());
            } else {
                assert_eq!(breakers(&ts), vec![(Closed, Open)]);
            }
        }
    }

    /// Moves an open breaker to half-open through the timer.
    fn half_open(&self) {
        assert_eq!(self.breaker(), Open);
        self.wait(self.snap().open_remaining_ms);
        assert_eq!(breakers(&self.tick()), vec![(Open, HalfOpen)]);
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Fail,
    Succeed,
    /// A success that took this many ms.
    Took(u64),
    Admit(u8),
    Check,
    Tick,
    Wait(u64),
    Reset,
    ForceOpen,
    Disable,
    Enable,
    /// Admit at this priority and keep the admission's ticket.
    Hold(u8),
    /// Record this outcome with the `i`th ticket kept by `Hold`.
    Answer(usize, Outcome),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    Done,
    Admission(Answer),
    Check(Status, u64),
}

impl Out {
    fn admission(self) -> Answer {
        match self {
            Out::Admission(a) => a,
            o => panic!("not an admission: {o:?}"),
        }
    }
}

fn breakers(ts: &[Transition]) -> Vec<(BreakerState, BreakerState)> {
    ts.iter().map(|t| t.breaker()).collect()
}

/// Breaker states before and after, and the cause, of each transition.
fn caused(ts: &[Transition]) -> Vec<(BreakerState, BreakerState, Cause)> {
    ts.iter()
        .map(|t| (t.from.breaker(), t.to.breaker(), t.cause))
        .collect()
}

const OK: Option<Out> = Some(Out::Admission(Answer::Admit));
/// Admitted as a half-open probe.
const PROBE: Option<Out> = Some(Out::Admission(Answer::Probe));

const fn reject(reason: Reason, retry: u64) -> Option<Out> {
    Some(Out::Admission(Answer::Reject(reason, retry)))
}

const fn check(status: Status, retry: u64) -> Option<Out> {
    Some(Out::Check(status, retry))
}

/// One step of a scripted case: the operation, the breaker transitions it must report
/// with their causes (a manual flag change reports `(s, s, cause)`), the breaker state
/// after it, and the result it must return when that matters.
type Step = (Op, &'static [Reported], BreakerState, Option<Out>);

/// A reported transition: breaker state before and after, and the cause.
type Reported = (BreakerState, BreakerState, Cause);

struct Case {
    name: &'static str,
    policy: Policy,
    steps: Vec<Step>,
}

fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy {
        failure_threshold: 3,
        open_timeout_ms: 30_000,
        half_open_max_calls: 2,
        success_threshold: 2,
        call_timeout_ms: 5_000,
        ..Policy::default()
    };
    f(&mut p);
    p.validate().expect("test policy is valid");
    p
}

const NONE: &[Reported] = &[];
const TRIP: &[Reported] = &[(Closed, Open, Failures)];
const REOPEN: &[Reported] = &[(HalfOpen, Open, ProbeFailure)];
const STALE: &[Reported] = &[(HalfOpen, Open, StaleProbe)];
const HALF: &[Reported] = &[(Open, HalfOpen, OpenTimeout)];
const CLOSE: &[Reported] = &[(HalfOpen, Closed, ProbeSuccesses)];

fn cases() -> Vec<Case> {
    use Op::*;
    let to_half_open: Vec<Step> = vec![
        (Fail, NONE, Closed, None),
        (Fail, NONE, Closed, None),
        (Fail, TRIP, Open, None),
        (Wait(30_000), NONE, Open, None),
        (Tick, HALF, HalfOpen, None),
    ];
    let then =
        |tail: Vec<Step>| -> Vec<Step> { to_half_open.iter().copied().chain(tail).collect() };
    vec![
        Case {
            name: "closed -> open after failure_threshold consecutive failures",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Check, NONE, Closed, check(Status::Inactive, 0)),
                (Fail, TRIP, Open, None),
                (Fail, NONE, Open, None),
            ],
        },
        Case {
            name: "a success in between resets the consecutive count",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Succeed, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Succeed, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
            ],
        },
        Case {
            name: "slow calls count as failures; calls at exactly slow_call_ms do not",
            policy: policy(|p| p.slow_call_ms = Some(100)),
            steps: vec![
                (Took(101), NONE, Closed, None),
                (Took(5_000), NONE, Closed, None),
                (Took(100), NONE, Closed, None),
                (Took(101), NONE, Closed, None),
                (Took(101), NONE, Closed, None),
                (Took(250), TRIP, Open, None),
            ],
        },
        Case {
            name: "open rejects with the open time left, then half-opens lazily on admit",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 30_000)),
                (Check, NONE, Open, check(Status::Active, 30_000)),
                (Wait(10_000), NONE, Open, None),
                (Admit(0), NONE, Open, reject(Reason::CircuitOpen, 20_000)),
                (Admit(7), NONE, Open, reject(Reason::CircuitOpen, 20_000)),
                (Wait(19_999), NONE, Open, None),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 1)),
                (Tick, NONE, Open, None),
                (Check, NONE, Open, check(Status::Active, 1)),
                (Wait(1), NONE, Open, None),
                (Admit(5), HALF, HalfOpen, PROBE),
            ],
        },
        Case {
            name: "open -> half_open lazily on check",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
                (Wait(29_999), NONE, Open, None),
                (Check, NONE, Open, check(Status::Active, 1)),
                (Wait(1), NONE, Open, None),
                (Check, HALF, HalfOpen, check(Status::Warning, 0)),
                (Check, NONE, HalfOpen, check(Status::Warning, 0)),
                (Admit(5), NONE, HalfOpen, PROBE),
            ],
        },
        Case {
            name: "open -> half_open by the timer with no traffic",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
                (Wait(29_999), NONE, Open, None),
                (Tick, NONE, Open, None),
                (Wait(1), NONE, Open, None),
                (Tick, HALF, HalfOpen, None),
                (Tick, NONE, HalfOpen, None),
            ],
        },
        Case {
            name: "half_open admits at most half_open_max_calls probes at once",
            policy: policy(|p| p.success_threshold = 3),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Admit(5), NONE, HalfOpen, PROBE),
                (
                    Admit(5),
                    NONE,
                    HalfOpen,
                    reject(Reason::HalfOpenLimit, 5_000),
                ),
                (
                    Admit(1),
                    NONE,
                    HalfOpen,
                    reject(Reason::HalfOpenLimit, 5_000),
                ),
                (Succeed, NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                (
                    Admit(5),
                    NONE,
                    HalfOpen,
                    reject(Reason::HalfOpenLimit, 5_000),
                ),
                (Succeed, NONE, HalfOpen, None),
                (Succeed, CLOSE, Closed, None),
                (Admit(5), NONE, Closed, OK),
                (Admit(5), NONE, Closed, OK),
                (Admit(5), NONE, Closed, OK),
            ]),
        },
        Case {
            name: "success_threshold probe successes close the breaker",
            policy: policy(|p| p.success_threshold = 2),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Succeed, NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Succeed, CLOSE, Closed, None),
                (Check, NONE, Closed, check(Status::Inactive, 0)),
            ]),
        },
        Case {
            name: "any probe failure reopens, even after successes",
            policy: policy(|p| p.success_threshold = 3),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Succeed, NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Succeed, NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Fail, REOPEN, Open, None),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 30_000)),
            ]),
        },
        Case {
            name: "a slow probe is a failure and reopens",
            policy: policy(|p| p.slow_call_ms = Some(50)),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Took(50), NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Took(51), REOPEN, Open, None),
            ]),
        },
        Case {
            name: "stale probes: every slot taken, no record for call_timeout_ms -> open on tick",
            policy: policy(|_| {}),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Wait(4_999), NONE, HalfOpen, None),
                (Tick, NONE, HalfOpen, None),
                (Wait(1), NONE, HalfOpen, None),
                (Tick, STALE, Open, None),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 30_000)),
            ]),
        },
        Case {
            name: "probes are not stale while a slot is free",
            policy: policy(|_| {}),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Wait(60_000), NONE, HalfOpen, None),
                (Tick, NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                // Every slot is taken now, and the first probe has been unanswered for
                // far longer than call_timeout_ms.
                (Tick, STALE, Open, None),
            ]),
        },
        Case {
            name: "answered probes free their slots; new probes start a new clock",
            policy: policy(|p| p.success_threshold = 3),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Succeed, NONE, HalfOpen, None),
                (Succeed, NONE, HalfOpen, None),
                (Wait(10_000), NONE, HalfOpen, None),
                (Tick, NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Tick, NONE, HalfOpen, None),
                (Wait(4_999), NONE, HalfOpen, None),
                (Tick, NONE, HalfOpen, None),
                (Succeed, CLOSE, Closed, None),
            ]),
        },
        Case {
            name: "probe staleness counts from the probes' admission, not from half-open entry",
            policy: policy(|_| {}),
            steps: then(vec![
                // The timer half-opened the breaker; traffic only comes back much later.
                (Wait(60_000), NONE, HalfOpen, None),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Tick, NONE, HalfOpen, None),
                (Wait(4_999), NONE, HalfOpen, None),
                (Tick, NONE, HalfOpen, None),
                (Wait(1), NONE, HalfOpen, None),
                (Tick, STALE, Open, None),
            ]),
        },
        Case {
            name: "force_open stays open past the timeout until reset",
            policy: policy(|_| {}),
            steps: vec![
                (ForceOpen, &[(Closed, Open, Cause::ForceOpen)], Open, None),
                (ForceOpen, NONE, Open, None),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 30_000)),
                (Wait(300_000), NONE, Open, None),
                (Tick, NONE, Open, None),
                (Check, NONE, Open, check(Status::Active, 30_000)),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 30_000)),
                (Succeed, NONE, Open, None),
                (Reset, &[(Open, Closed, Cause::Reset)], Closed, None),
                (Admit(5), NONE, Closed, OK),
                (Reset, NONE, Closed, None),
            ],
        },
        Case {
            name: "force_open on an open breaker only pins it; reset closes it",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
                (ForceOpen, &[(Open, Open, Cause::ForceOpen)], Open, None),
                (Wait(30_000), NONE, Open, None),
                (Tick, NONE, Open, None),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 30_000)),
                (Reset, &[(Open, Closed, Cause::Reset)], Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
                (Wait(30_000), NONE, Open, None),
                (Admit(5), HALF, HalfOpen, PROBE),
            ],
        },
        Case {
            name: "force_open and reset from half_open",
            policy: policy(|_| {}),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (ForceOpen, &[(HalfOpen, Open, Cause::ForceOpen)], Open, None),
                (Wait(100_000), NONE, Open, None),
                (Tick, NONE, Open, None),
                (Reset, &[(Open, Closed, Cause::Reset)], Closed, None),
                (Fail, NONE, Closed, None),
                (Wait(30_000), NONE, Closed, None),
                (Tick, NONE, Closed, None),
                (Reset, NONE, Closed, None),
            ]),
        },
        Case {
            name: "reset from half_open closes",
            policy: policy(|_| {}),
            steps: then(vec![
                (Admit(5), NONE, HalfOpen, PROBE),
                (Reset, &[(HalfOpen, Closed, Cause::Reset)], Closed, None),
                (Admit(5), NONE, Closed, OK),
                // The late outcome of the old probe changes nothing.
                (Succeed, NONE, Closed, None),
            ]),
        },
        Case {
            name: "disable admits everything, never trips; enable resumes",
            policy: policy(|_| {}),
            steps: vec![
                (Disable, &[(Closed, Closed, Cause::Disable)], Closed, None),
                (Disable, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Admit(0), NONE, Closed, OK),
                (Check, NONE, Closed, check(Status::Inactive, 0)),
                (Enable, &[(Closed, Closed, Cause::Enable)], Closed, None),
                (Enable, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
            ],
        },
        Case {
            name: "disable while open admits; enable brings the open breaker back",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
                (Disable, &[(Open, Open, Cause::Disable)], Open, None),
                (Admit(5), NONE, Open, OK),
                (Check, NONE, Open, check(Status::Inactive, 0)),
                (Wait(10_000), NONE, Open, None),
                (Enable, &[(Open, Open, Cause::Enable)], Open, None),
                (Admit(5), NONE, Open, reject(Reason::CircuitOpen, 20_000)),
                (Check, NONE, Open, check(Status::Active, 20_000)),
            ],
        },
        Case {
            name: "disable in half_open: probes unlimited, a failure does not reopen",
            policy: policy(|_| {}),
            steps: then(vec![
                (
                    Disable,
                    &[(HalfOpen, HalfOpen, Cause::Disable)],
                    HalfOpen,
                    None,
                ),
                (Admit(5), NONE, HalfOpen, OK),
                (Admit(5), NONE, HalfOpen, OK),
                (Admit(5), NONE, HalfOpen, OK),
                (Fail, NONE, HalfOpen, None),
                (Wait(10_000), NONE, HalfOpen, None),
                (Tick, NONE, HalfOpen, None),
                (
                    Enable,
                    &[(HalfOpen, HalfOpen, Cause::Enable)],
                    HalfOpen,
                    None,
                ),
                (Admit(5), NONE, HalfOpen, PROBE),
                (Fail, REOPEN, Open, None),
            ]),
        },
        Case {
            name: "bypass priority is admitted whatever the breaker",
            policy: policy(|_| {}),
            steps: vec![
                (Fail, NONE, Closed, None),
                (Fail, NONE, Closed, None),
                (Fail, TRIP, Open, None),
                (Admit(8), NONE, Open, OK),
                (Admit(9), NONE, Open, OK),
                (Admit(7), NONE, Open, reject(Reason::CircuitOpen, 30_000)),
                (Wait(30_000), NONE, Open, None),
                // A bypass call neither half-opens the breaker nor takes a probe slot.
                (Admit(9), NONE, Open, OK),
                (Admit(5), HALF, HalfOpen, PROBE),
                (Admit(5), NONE, HalfOpen, PROBE),
                (
                    Admit(5),
                    NONE,
                    HalfOpen,
                    reject(Reason::HalfOpenLimit, 5_000),
                ),
                (Admit(8), NONE, HalfOpen, OK),
                (ForceOpen, &[(HalfOpen, Open, Cause::ForceOpen)], Open, None),
                (Admit(9), NONE, Open, OK),
            ],
        },
    ]
}

/// Plays `steps` on `h`, checking each step's transitions, state and result.
fn play(h: &H, name: &str, steps: &[Step]) {
    for (i, (op, transitions, state, out)) in steps.iter().enumerate() {
        let ctx = format!("case {name:?}, step {i} ({op:?})");
        // Shown if a check inside `run` fails.
        eprintln!("{ctx}");
        let (got, ts) = h.run(*op);
        assert_eq!(caused(&ts), transitions.to_vec(), "{ctx}: transitions");
        assert_eq!(h.breaker(), *state, "{ctx}: state after");
        if let Some(out) = out {
            assert_eq!(got, *out, "{ctx}: result");
        }
    }
}

#[test]
fn scripted_breaker_transitions() {
    for case in cases() {
        let h = H::new(case.policy.clone());
        play(&h, case.name, &case.steps);
    }
}

/// Opens the breaker with three failures and half-opens it by the timer (the
/// `policy()` defaults: failure_threshold 3, open 30 s).
fn to_half_open() -> Vec<Step> {
    vec![
        (Op::Fail, NONE, Closed, None),
        (Op::Fail, NONE, Closed, None),
        (Op::Fail, TRIP, Open, None),
        (Op::Wait(30_000), NONE, Open, None),
        (Op::Tick, HALF, HalfOpen, None),
    ]
}

/// The counts of what became of outcomes: (late, probe successes, probe failures,
/// stale probes).
fn outcome_counts(h: &H) -> (u64, u64, u64, u64) {
    let s = h.snap();
    (
        s.counter(Counter::LateOutcomes),
        s.counter(Counter::ProbeSuccesses),
        s.counter(Counter::ProbeFailures),
        s.stale_probes,
    )
}

/// A half-open breaker whose probes answer in time, and whose freed slots are refilled
/// at once, stays half-open: staleness counts from the oldest probe in flight, not from
/// when the slots first filled. Once nobody answers, the oldest probe goes stale.
#[test]
fn refilled_probe_slots_are_not_stale() {
    let h = H::new(policy(|p| {
        p.half_open_max_calls = 2;
        p.success_threshold = 10;
        p.call_timeout_ms = 600;
    }));
    let mut steps = to_half_open();
    // Probes A and B at +0.
    steps.push((Op::Admit(5), NONE, HalfOpen, PROBE));
    steps.push((Op::Admit(5), NONE, HalfOpen, PROBE));
    // Every 100 ms the oldest probe answers and its slot is refilled at once: 8 rounds,
    // well past call_timeout_ms after A and B.
    for _ in 0..8 {
        steps.push((Op::Wait(100), NONE, HalfOpen, None));
        steps.push((Op::Succeed, NONE, HalfOpen, None));
        steps.push((Op::Admit(5), NONE, HalfOpen, PROBE));
        steps.push((Op::Tick, NONE, HalfOpen, None));
    }
    // In flight now: the probes of +700 and +800. The one of +700 goes stale at +1300.
    steps.push((Op::Wait(499), NONE, HalfOpen, None));
    steps.push((Op::Tick, NONE, HalfOpen, None));
    steps.push((Op::Wait(1), NONE, HalfOpen, None));
    steps.push((Op::Tick, STALE, Open, None));
    play(&h, "refilled slots", &steps);
    assert_eq!(outcome_counts(&h), (0, 8, 0, 1));
    assert_eq!(h.snap().opens, 2);
}

/// A bare outcome in half-open answers the oldest probe in flight; with no probe in
/// flight it is late: it frees nothing and decides nothing, even a failure.
#[test]
fn bare_outcomes_answer_the_oldest_probe_or_are_late() {
    let h = H::new(policy(|p| p.success_threshold = 3));
    let mut steps = to_half_open();
    steps.extend([
        // No probe in flight: late.
        (Op::Succeed, NONE, HalfOpen, None),
        (Op::Fail, NONE, HalfOpen, None),
        (Op::Admit(5), NONE, HalfOpen, PROBE),
        (Op::Wait(10), NONE, HalfOpen, None),
        (Op::Admit(5), NONE, HalfOpen, PROBE),
        (
            Op::Admit(5),
            NONE,
            HalfOpen,
            Some(Out::Admission(Answer::Reject(Reason::HalfOpenLimit, 5_000))),
        ),
        // The oldest answers; its slot is free again.
        (Op::Succeed, NONE, HalfOpen, None),
        (Op::Admit(5), NONE, HalfOpen, PROBE),
        (Op::Succeed, NONE, HalfOpen, None),
        (Op::Succeed, CLOSE, Closed, None),
        // The probe still out when the breaker closed answers late, bare: a closed
        // breaker counts it as any outcome.
        (Op::Fail, NONE, Closed, None),
    ]);
    play(&h, "bare outcomes", &steps);
    assert_eq!(outcome_counts(&h), (2, 3, 0, 0));
    assert_eq!(h.snap().consecutive_failures, 1);
    // While open every outcome is late.
    let h = H::new(policy(|_| {}));
    play(&h, "open", &to_half_open()[..3]);
    h.run(Op::Succeed);
    h.run(Op::Fail);
    assert_eq!(outcome_counts(&h), (2, 0, 0, 0));
}

/// With tickets an outcome counts only for the admission it answers: its own probe of
/// its own episode, once.
#[test]
fn ticketed_outcomes_count_only_for_their_admission() {
    use Outcome::{Failure, Success};
    let h = H::new(policy(|p| p.success_threshold = 2));
    let limit = Some(Out::Admission(Answer::Reject(Reason::HalfOpenLimit, 5_000)));
    let steps = [
        // ticket 0: admitted while closed.
        (Op::Hold(5), NONE, Closed, OK),
        (Op::Fail, NONE, Closed, None),
        (Op::Fail, NONE, Closed, None),
        (Op::Fail, TRIP, Open, None),
        // ticket 1: a bypass call while open.
        (Op::Hold(9), NONE, Open, OK),
        (Op::Wait(30_000), NONE, Open, None),
        (Op::Tick, HALF, HalfOpen, None),
        // tickets 2 and 3: the probes.
        (Op::Hold(5), NONE, HalfOpen, PROBE),
        (Op::Hold(5), NONE, HalfOpen, PROBE),
        // The call admitted while closed succeeds now: late, the probes stay out.
        (Op::Answer(0, Success), NONE, HalfOpen, None),
        (Op::Admit(5), NONE, HalfOpen, limit),
        // The bypass call of the open breaker fails now: late, no trip.
        (Op::Answer(1, Failure), NONE, HalfOpen, None),
        // ticket 4: a bypass call in half-open takes no slot; its failure decides
        // nothing.
        (Op::Hold(9), NONE, HalfOpen, OK),
        (Op::Answer(4, Failure), NONE, HalfOpen, None),
        // The second probe answers first, for itself; a second answer is late.
        (Op::Answer(3, Success), NONE, HalfOpen, None),
        (Op::Answer(3, Failure), NONE, HalfOpen, None),
        // ticket 5 takes the freed slot.
        (Op::Hold(5), NONE, HalfOpen, PROBE),
        (Op::Admit(5), NONE, HalfOpen, limit),
        (Op::Answer(2, Success), CLOSE, Closed, None),
        // A probe of the episode that has ended: late, and the closed breaker does not
        // count it either.
        (Op::Answer(5, Failure), NONE, Closed, None),
    ];
    play(&h, "tickets", &steps);
    assert_eq!(outcome_counts(&h), (5, 2, 0, 0));
    let s = h.snap();
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(s.counter(Counter::Successes), 3);
    assert_eq!(s.counter(Counter::Failures), 7);
    assert_eq!(s.successful_recoveries, 1);
}

/// A probe's failure, recorded with its ticket, re-opens its episode; a failure of a
/// probe of an earlier episode does not re-open the next one.
#[test]
fn a_probe_fails_only_its_own_episode() {
    use Outcome::{Failure, Success};
    let h = H::new(policy(|p| {
        p.success_threshold = 3;
        p.open_timeout_ms = 1_000;
        p.failure_threshold = 1;
    }));
    let half: &[Reported] = &[(Open, HalfOpen, OpenTimeout)];
    let steps = [
        (Op::Fail, TRIP, Open, None),
        (Op::Wait(1_000), NONE, Open, None),
        (Op::Tick, half, HalfOpen, None),
        (Op::Hold(5), NONE, HalfOpen, PROBE),
        (Op::Hold(5), NONE, HalfOpen, PROBE),
        (Op::Answer(0, Failure), REOPEN, Open, None),
        (Op::Wait(1_000), NONE, Open, None),
        (Op::Tick, half, HalfOpen, None),
        // The second probe of the first episode fails late: the new episode stands.
        (Op::Answer(1, Failure), NONE, HalfOpen, None),
        (Op::Hold(5), NONE, HalfOpen, PROBE),
        (Op::Answer(2, Success), NONE, HalfOpen, None),
        (Op::Hold(5), NONE, HalfOpen, PROBE),
        (Op::Answer(3, Failure), REOPEN, Open, None),
    ];
    play(&h, "episodes", &steps);
    assert_eq!(outcome_counts(&h), (1, 1, 2, 0));
}

#[test]
fn manual_flag_transitions_are_reported_as_manual() {
    let h = H::new(policy(|_| {}));
    let ts = h.run(Op::Disable).1;
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].machine(), Machine::Manual);
    assert_eq!(ts[0].cause, Cause::Disable);
    assert!(!ts[0].from.disabled() && ts[0].to.disabled());
    assert!(h.word().disabled());
    h.run(Op::Enable);
    h.trip();
    let ts = h.run(Op::ForceOpen).1;
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].machine(), Machine::Manual);
    assert!(!ts[0].from.forced_open() && ts[0].to.forced_open());
    let ts = h.run(Op::Reset).1;
    assert_eq!(ts[0].machine(), Machine::Breaker);
    assert_eq!(ts[0].cause, Cause::Reset);
    assert!(!ts[0].to.forced_open());
    // Forcing a closed breaker is one breaker transition that also sets the flag.
    let ts = h.run(Op::ForceOpen).1;
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].machine(), Machine::Breaker);
    assert_eq!(ts[0].breaker(), (Closed, Open));
    assert!(ts[0].to.forced_open());
    assert_eq!(h.snap().opens, 2);
}

#[test]
fn failure_rate_trips_only_with_enough_calls() {
    let h = H::new(policy(|p| {
        p.failure_threshold = 1_000;
        p.failure_rate_threshold = Some(0.5);
        p.window_ms = 1_000;
        p.minimum_calls = 10;
    }));
    // 9 failures in a row: rate 1.0 but fewer than minimum_calls calls.
    for _ in 0..9 {
        assert!(h.fail().is_empty());
    }
    assert_eq!(h.breaker(), Closed);
    assert_eq!(h.snap().window.calls, 9);
    // The tenth call reaches minimum_calls and trips.
    assert_eq!(caused(&h.fail()), vec![(Closed, Open, FailureRate)]);
    assert_eq!(h.snap().window.calls, 0, "the window is cleared on a trip");
}

#[test]
fn failure_rate_below_the_threshold_does_not_trip() {
    let h = H::new(policy(|p| {
        p.failure_threshold = 1_000;
        p.failure_rate_threshold = Some(0.5);
        p.window_ms = 1_000;
        p.minimum_calls = 4;
    }));
    // Alternate success/failure: after each failure the rate is just under 0.5 until
    // the calls balance out.
    for _ in 0..10 {
        assert!(h.succeed().is_empty());
        assert!(h.succeed().is_empty());
        assert!(h.fail().is_empty());
    }
    let w = h.snap().window;
    assert_eq!((w.calls, w.failures), (30, 10));
    assert_eq!(h.breaker(), Closed);
    // Ten failures more bring it to 20/40 = 0.5: the failure that reaches it trips.
    for _ in 0..9 {
        assert!(h.fail().is_empty());
    }
    assert_eq!(breakers(&h.fail()), vec![(Closed, Open)]);
}

#[test]
fn failure_rate_window_slides() {
    let h = H::new(policy(|p| {
        p.failure_threshold = 1_000;
        p.failure_rate_threshold = Some(0.5);
        p.window_ms = 1_000;
        p.minimum_calls = 10;
    }));
    for _ in 0..9 {
        assert!(h.fail().is_empty());
    }
    // Those nine leave the window: the next failures start from an empty window.
    h.wait(1_000);
    assert_eq!(h.snap().window.calls, 0);
    for _ in 0..9 {
        assert!(h.fail().is_empty());
    }
    assert_eq!(h.breaker(), Closed);
    assert_eq!(breakers(&h.fail()), vec![(Closed, Open)]);
}

#[test]
fn slow_calls_are_counted_as_slow_and_as_failures() {
    let h = H::new(policy(|p| {
        p.slow_call_ms = Some(100);
        p.failure_threshold = 10;
    }));
    h.run(Op::Took(101));
    h.run(Op::Took(99));
    h.run(Op::Took(100));
    h.run(Op::Took(1_000));
    h.step(|s, c, t| s.record(Outcome::Failure, Some(500), c, t));
    h.step(|s, c, t| s.record(Outcome::Failure, Some(5), c, t));
    h.succeed();
    let s = h.snap();
    assert_eq!(s.counter(Counter::SlowCalls), 3);
    assert_eq!(s.counter(Counter::Failures), 4);
    assert_eq!(s.counter(Counter::Successes), 3);
    assert_eq!(s.consecutive_failures, 0);
    // Without slow_call_ms, latency does not matter.
    let h = H::new(policy(|_| {}));
    for _ in 0..5 {
        assert!(h.run(Op::Took(1_000_000)).1.is_empty());
    }
    assert_eq!(h.snap().counter(Counter::SlowCalls), 0);
    assert_eq!(h.breaker(), Closed);
}

#[test]
fn open_time_grows_per_trip_up_to_the_cap_and_resets_after_a_close() {
    let h = H::new(policy(|p| {
        p.open_timeout_ms = 1_000;
        p.max_open_timeout_ms = Some(3_500);
        p.success_threshold = 1;
        p.half_open_max_calls = 1;
    }));
    h.trip();
    for (trip, open_ms) in [1_000, 2_000, 3_500, 3_500, 3_500].into_iter().enumerate() {
        let ctx = format!("trip {trip}");
        assert_eq!(h.word().trip_streak() as usize, trip, "{ctx}");
        assert_eq!(h.snap().open_remaining_ms, open_ms, "{ctx}");
        assert_eq!(
            h.admit(5),
            Answer::Reject(Reason::CircuitOpen, open_ms),
            "{ctx}"
        );
        h.wait(open_ms - 1);
        assert!(h.tick().is_empty(), "{ctx}: not before {open_ms} ms");
        h.wait(1);
        assert_eq!(breakers(&h.tick()), vec![(Open, HalfOpen)], "{ctx}");
        assert_eq!(h.admit(5), Answer::Probe);
        assert_eq!(breakers(&h.fail()), vec![(HalfOpen, Open)], "{ctx}");
    }
    // A close ends the streak: the next trip waits the base time again.
    h.half_open();
    assert_eq!(h.admit(5), Answer::Probe);
    assert_eq!(breakers(&h.succeed()), vec![(HalfOpen, Closed)]);
    assert_eq!(h.word().trip_streak(), 0);
    h.trip();
    assert_eq!(h.snap().open_remaining_ms, 1_000);
    // Grow again, then a manual reset also ends the streak.
    h.half_open();
    h.admit(5);
    h.fail();
    assert_eq!(h.snap().open_remaining_ms, 2_000);
    h.run(Op::Reset);
    h.trip();
    assert_eq!(h.snap().open_remaining_ms, 1_000);
}

#[test]
fn open_time_does_not_grow_without_a_cap() {
    let h = H::new(policy(|p| p.open_timeout_ms = 1_000));
    h.trip();
    for _ in 0..4 {
        assert_eq!(h.admit(5), Answer::Reject(Reason::CircuitOpen, 1_000));
        h.half_open();
        h.admit(5);
        h.fail();
    }
    assert_eq!(h.snap().open_remaining_ms, 1_000);
}

#[test]
fn counters_follow_the_transitions() {
    let h = H::new(policy(|p| p.success_threshold = 2));
    h.trip(); // opens 1
    h.admit(5); // rejected circuit open
    h.admit(9); // bypassed
    h.half_open(); // attempt 1
    h.admit(5);
    h.fail(); // opens 2
    h.half_open(); // attempt 2
    h.admit(5);
    h.admit(5);
    assert_eq!(h.admit(5), Answer::Reject(Reason::HalfOpenLimit, 5_000));
    h.succeed();
    h.succeed(); // recovery 1
    h.run(Op::ForceOpen); // opens 3
    h.run(Op::Reset); // not a recovery
    let s = h.snap();
    assert_eq!(s.opens, 3);
    assert_eq!(s.recovery_attempts, 2);
    assert_eq!(s.successful_recoveries, 1);
    // closed->open, open->half, half->open, open->half, half->closed, closed->open,
    // open->closed.
    assert_eq!(s.breaker_transitions, 7);
    // Inactive->Active, Active->Warning, Warning->Active, Active->Warning,
    // Warning->Inactive, Inactive->Active, Active->Inactive.
    assert_eq!(s.status_changes, 7);
    assert_eq!(s.backpressure_transitions, 0);
    assert_eq!(s.counter(Counter::RejectedCircuitOpen), 1);
    assert_eq!(s.counter(Counter::RejectedHalfOpenLimit), 1);
    assert_eq!(s.counter(Counter::Bypassed), 1);
    assert_eq!(s.counter(Counter::Accepted), 3);
    assert_eq!(s.counter(Counter::Failures), 4);
    assert_eq!(s.counter(Counter::Successes), 2);
    // Disabling is a status change (active -> inactive) but no breaker transition.
    h.trip();
    h.run(Op::Disable);
    let s2 = h.snap();
    assert_eq!(s2.breaker_transitions, 8);
    assert_eq!(s2.status_changes, 9);
}

#[test]
fn disabled_subject_still_counts() {
    let h = H::new(policy(|_| {}));
    h.run(Op::Disable);
    for _ in 0..10 {
        assert_eq!(h.admit(5), Answer::Admit);
        h.fail();
    }
    assert_eq!(h.admit(9), Answer::Admit);
    h.succeed();
    let s = h.snap();
    assert_eq!(s.counter(Counter::Accepted), 10);
    assert_eq!(s.counter(Counter::Bypassed), 1);
    assert_eq!(s.counter(Counter::Failures), 10);
    assert_eq!(s.counter(Counter::Successes), 1);
    assert_eq!(s.opens, 0);
    assert_eq!(h.breaker(), Closed);
}

#[test]
fn bypass_is_counted_as_bypassed_not_accepted() {
    let h = H::new(policy(|_| {}));
    assert_eq!(h.admit(8), Answer::Admit);
    h.trip();
    for p in [8, 9, 8] {
        assert_eq!(h.admit(p), Answer::Admit);
    }
    h.run(Op::ForceOpen);
    assert_eq!(h.admit(9), Answer::Admit);
    let s = h.snap();
    assert_eq!(s.counter(Counter::Bypassed), 5);
    assert_eq!(s.counter(Counter::Accepted), 0);
    assert_eq!(s.counter(Counter::RejectedCircuitOpen), 0);
    // The bypass level is the policy's.
    let h = H::new(policy(|p| p.bypass_priority = 6));
    h.trip();
    assert_eq!(h.admit(6), Answer::Admit);
    assert_eq!(h.admit(5), Answer::Reject(Reason::CircuitOpen, 30_000));
}

/// The classic breaker scenario: 5 failures -> open; 30 s -> half-open; 3 successes -> closed;
/// a failure in half-open -> open. With the default policy.
#[test]
fn spec_a2_scenario_with_default_policy() {
    let h = H::new(Policy::default());
    for _ in 0..4 {
        assert!(h.fail().is_empty());
    }
    assert_eq!(breakers(&h.fail()), vec![(Closed, Open)]);
    assert_eq!(h.admit(5), Answer::Reject(Reason::CircuitOpen, 30_000));
    assert_eq!(h.admit(9), Answer::Admit, "priority 9 bypasses");
    h.wait(30_000);
    let (out, ts) = h.run(Op::Check);
    assert_eq!(out, Out::Check(Status::Warning, 0));
    assert_eq!(breakers(&ts), vec![(Open, HalfOpen)]);
    for _ in 0..3 {
        assert_eq!(h.admit(5), Answer::Probe);
    }
    assert_eq!(h.admit(5), Answer::Reject(Reason::HalfOpenLimit, 5_000));
    assert!(h.succeed().is_empty());
    assert!(h.succeed().is_empty());
    assert_eq!(breakers(&h.succeed()), vec![(HalfOpen, Closed)]);
    // Again: open, half-open, and a failing probe reopens.
    for _ in 0..4 {
        h.fail();
    }
    assert_eq!(breakers(&h.fail()), vec![(Closed, Open)]);
    h.wait(30_000);
    assert_eq!(h.admit(5), Answer::Probe);
    assert_eq!(h.breaker(), HalfOpen);
    assert_eq!(breakers(&h.fail()), vec![(HalfOpen, Open)]);
    assert_eq!(h.admit(5), Answer::Reject(Reason::CircuitOpen, 30_000));
    let s = h.snap();
    assert_eq!(s.opens, 3);
    assert_eq!(s.recovery_attempts, 2);
    assert_eq!(s.successful_recoveries, 1);
    assert_eq!(s.counter(Counter::Bypassed), 1);
}

#[test]
fn registry_tick_half_opens_every_due_subject_once() {
    let reg = Registry::new(
        RegistryConfig {
            max_subjects: 8,
            pool: pool(),
            default_policy: policy(|p| p.failure_threshold = 1),
        },
        ManualClock::new(START_MS),
    )
    .unwrap();
    let mut t = Transitions::new();
    for name in [&b"a"[..], b"b", b"c"] {
        reg.subject(name).unwrap();
    }
    reg.subject(b"a")
        .unwrap()
        .record(Outcome::Failure, None, reg.clock(), &mut t);
    reg.clock().advance(10_000);
    reg.subject(b"b")
        .unwrap()
        .record(Outcome::Failure, None, reg.clock(), &mut t);
    assert_eq!(t.len(), 2);
    reg.clock().advance(20_000);
    let mut out = Vec::new();
    reg.tick(&mut out);
    assert_eq!(out.len(), 1, "only a is due");
    assert_eq!(out[0].0.name(), b"a");
    assert_eq!(out[0].1.breaker(), (Open, HalfOpen));
    out.clear();
    reg.tick(&mut out);
    assert!(out.is_empty(), "reported once");
    reg.clock().advance(10_000);
    reg.tick(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0.name(), b"b");
    assert_eq!(reg.subject(b"c").unwrap().word().breaker(), Closed);
}

#[test]
fn late_outcomes_while_open_change_nothing() {
    let h = H::new(policy(|_| {}));
    h.trip();
    for _ in 0..10 {
        assert!(h.fail().is_empty());
        assert!(h.succeed().is_empty());
    }
    assert_eq!(h.breaker(), Open);
    assert_eq!(h.snap().open_remaining_ms, 30_000);
    assert_eq!(h.snap().opens, 1);
}
