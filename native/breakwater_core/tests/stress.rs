//! Multi-threaded stress tests with exact accounting. Every test checks totals that
//! must hold exactly whatever the interleaving; none depends on timing. Each runs in
//! well under a few seconds in release mode on two cores.

use breakwater_core::backpressure::{self, Thresholds};
use breakwater_core::clock::ManualClock;
use breakwater_core::counters::Counter;
use breakwater_core::policy::{DropPolicy, Policy, PoolConfig};
use breakwater_core::registry::{Registry, RegistryConfig};
use breakwater_core::spool::Taken;
use breakwater_core::state::BackpressureState;
use breakwater_core::state::BreakerState::{Closed, HalfOpen, Open};
use breakwater_core::subject::{Admission, Enqueued, Outcome, Reason, Subject};
use breakwater_core::transition::{Machine, Transition, Transitions};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;

const THREADS: usize = 8;

fn registry(policy: Policy, pool: PoolConfig) -> Registry<ManualClock> {
    Registry::new(
        RegistryConfig {
            max_subjects: 1_024,
            pool,
            default_policy: policy,
        },
        ManualClock::new(1_000),
    )
    .expect("valid registry config")
}

fn small_pool() -> PoolConfig {
    PoolConfig {
        segments: 16,
        segment_capacity: 16,
        // Each event takes its bytes and a 16-byte record header.
        segment_bytes: 16 * (32 + 16),
        max_event_bytes: 32,
    }
}

/// A tiny deterministic PRNG (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn striped_counters_equal_what_was_sent() {
    let policy = Policy {
        failure_threshold: u32::MAX,
        slow_call_ms: Some(100),
        ..Policy::default()
    };
    let reg = registry(policy, small_pool());
    let s = reg.subject(b"hot").unwrap();
    const N: u64 = 50_000;
    let expected: Vec<[u64; 5]> = thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let reg = &reg;
                scope.spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    // accepted, bypassed, successes, failures, slow
                    let mut sent = [0u64; 5];
                    let mut out = Transitions::new();
                    for _ in 0..N {
                        let p = rng.below(10) as u8;
                        assert!(matches!(
                            s.admit(p, reg.clock(), &mut out),
                            Admission::Admit(_)
                        ));
                        sent[if p >= 8 { 1 } else { 0 }] += 1;
                        match rng.below(4) {
                            0 => {
                                s.record(Outcome::Failure, None, reg.clock(), &mut out);
                                sent[3] += 1;
                            }
                            1 => {
                                s.record(Outcome::Success, Some(101), reg.clock(), &mut out);
                                sent[3] += 1;
                                sent[4] += 1;
                            }
                            _ => {
                                s.record(Outcome::Success, Some(100), reg.clock(), &mut out);
                                sent[2] += 1;
                            }
                        }
                    }
                    assert!(out.is_empty(), "nothing may trip: {out:?}");
                    sent
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sum = |i: usize| expected.iter().map(|e| e[i]).sum::<u64>();
    let snap = s.snapshot(reg.clock());
    assert_eq!(snap.counter(Counter::Accepted), sum(0));
    assert_eq!(snap.counter(Counter::Bypassed), sum(1));
    assert_eq!(snap.counter(Counter::Successes), sum(2));
    assert_eq!(snap.counter(Counter::Failures), sum(3));
    assert_eq!(snap.counter(Counter::SlowCalls), sum(4));
    assert_eq!(sum(0) + sum(1), THREADS as u64 * N);
    for c in [
        Counter::RejectedCircuitOpen,
        Counter::RejectedHalfOpenLimit,
        Counter::RejectedBackpressure,
        Counter::RejectedShedLowPriority,
    ] {
        assert_eq!(snap.counter(c), 0, "{c:?}");
    }
    assert_eq!(snap.word.breaker(), Closed);
}

#[test]
fn rejections_are_counted_exactly_while_open() {
    let reg = registry(
        Policy {
            failure_threshold: 1,
            ..Policy::default()
        },
        small_pool(),
    );
    let s = reg.subject(b"open").unwrap();
    let mut t = Transitions::new();
    s.record(Outcome::Failure, None, reg.clock(), &mut t);
    assert_eq!(s.word().breaker(), Open);
    const N: u64 = 40_000;
    let bypassed: u64 = thread::scope(|scope| {
        (0..THREADS as u64)
            .map(|i| {
                let reg = &reg;
                scope.spawn(move || {
                    let mut out = Transitions::new();
                    let mut bypassed = 0;
                    for k in 0..N {
                        let p = ((k + i) % 10) as u8;
                        match s.admit(p, reg.clock(), &mut out) {
                            Admission::Admit(_) => {
                                assert!(p >= 8);
                                bypassed += 1;
                            }
                            Admission::Reject(Reason::CircuitOpen, _) => assert!(p < 8),
                            a => panic!("{a:?}"),
                        }
                    }
                    bypassed
                })
            })
            .map(|h| h.join().unwrap())
            .sum()
    });
    let snap = s.snapshot(reg.clock());
    assert_eq!(snap.counter(Counter::Bypassed), bypassed);
    assert_eq!(
        snap.counter(Counter::RejectedCircuitOpen),
        THREADS as u64 * N - bypassed
    );
    assert_eq!(snap.counter(Counter::Accepted), 0);
}

/// Runs `per_thread` failures on `s` from every thread at once; returns every
/// transition reported.
fn concurrent_failures(
    reg: &Registry<ManualClock>,
    s: &Subject,
    per_thread: usize,
) -> Vec<Transition> {
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let mut all = Vec::new();
                    barrier.wait();
                    for _ in 0..per_thread {
                        let mut out = Transitions::new();
                        s.record(Outcome::Failure, None, reg.clock(), &mut out);
                        all.extend(out.iter().copied());
                    }
                    all
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn concurrent_failures_trip_exactly_once() {
    let reg = registry(
        Policy {
            failure_threshold: 5,
            ..Policy::default()
        },
        small_pool(),
    );
    for round in 0..200 {
        let s = reg.subject(format!("trip-{round}").as_bytes()).unwrap();
        let ts = concurrent_failures(&reg, s, 3);
        assert_eq!(ts.len(), 1, "round {round}: {ts:?}");
        assert_eq!(ts[0].breaker(), (Closed, Open));
        let snap = s.snapshot(reg.clock());
        assert_eq!(snap.opens, 1);
        assert_eq!(snap.breaker_transitions, 1);
        assert_eq!(snap.status_changes, 1);
        assert_eq!(snap.counter(Counter::Failures), (THREADS * 3) as u64);
        assert_eq!(snap.word.breaker(), Open);
    }
}

#[test]
fn concurrent_failure_rate_trips_exactly_once() {
    let reg = registry(
        Policy {
            failure_threshold: 1_000,
            failure_rate_threshold: Some(0.5),
            minimum_calls: 20,
            window_ms: 10_000,
            ..Policy::default()
        },
        small_pool(),
    );
    for round in 0..100 {
        let s = reg.subject(format!("rate-{round}").as_bytes()).unwrap();
        let ts = concurrent_failures(&reg, s, 10);
        assert_eq!(ts.len(), 1, "round {round}: {ts:?}");
        assert_eq!(ts[0].breaker(), (Closed, Open));
        assert_eq!(s.snapshot(reg.clock()).opens, 1);
    }
}

#[test]
fn concurrent_probe_failures_reopen_exactly_once() {
    let reg = registry(
        Policy {
            failure_threshold: 1,
            half_open_max_calls: THREADS as u8,
            ..Policy::default()
        },
        small_pool(),
    );
    let s = reg.subject(b"probes").unwrap();
    let mut t = Transitions::new();
    s.record(Outcome::Failure, None, reg.clock(), &mut t);
    for round in 0..100 {
        reg.clock()
            .advance(s.snapshot(reg.clock()).open_remaining_ms);
        let mut t = Transitions::new();
        s.tick(reg.store(), reg.clock(), &mut t);
        assert_eq!(s.word().breaker(), HalfOpen, "round {round}");
        for _ in 0..THREADS {
            assert!(matches!(
                s.admit(5, reg.clock(), &mut t),
                Admission::Probe(_)
            ));
        }
        let ts = concurrent_failures(&reg, s, 1);
        assert_eq!(ts.len(), 1, "round {round}: {ts:?}");
        assert_eq!(ts[0].breaker(), (HalfOpen, Open));
    }
    let snap = s.snapshot(reg.clock());
    assert_eq!(snap.opens, 101);
    assert_eq!(snap.recovery_attempts, 100);
}

#[test]
fn concurrent_probe_admission_never_exceeds_the_limit() {
    const MAX: u8 = 3;
    let reg = registry(
        Policy {
            failure_threshold: 1,
            half_open_max_calls: MAX,
            success_threshold: 255,
            ..Policy::default()
        },
        small_pool(),
    );
    // Part 1: nobody records. Exactly MAX admissions succeed in total, per round.
    for round in 0..200 {
        let s = reg.subject(format!("limit-{round}").as_bytes()).unwrap();
        let mut t = Transitions::new();
        s.record(Outcome::Failure, None, reg.clock(), &mut t);
        reg.clock().advance(30_000);
        let barrier = Barrier::new(THREADS);
        let (admitted, limited): (u64, u64) = thread::scope(|scope| {
            let hs: Vec<_> = (0..THREADS)
                .map(|_| {
                    let barrier = &barrier;
                    let reg = &reg;
                    scope.spawn(move || {
                        let mut out = Transitions::new();
                        let (mut a, mut l) = (0, 0);
                        barrier.wait();
                        for _ in 0..4 {
                            match s.admit(5, reg.clock(), &mut out) {
                                Admission::Probe(_) => a += 1,
                                Admission::Reject(Reason::HalfOpenLimit, _) => l += 1,
                                x => panic!("{x:?}"),
                            }
                        }
                        (a, l)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .fold((0, 0), |(a, l), (x, y)| (a + x, l + y))
        });
        assert_eq!(admitted, u64::from(MAX), "round {round}");
        assert_eq!(limited, THREADS as u64 * 4 - u64::from(MAX));
        let snap = s.snapshot(reg.clock());
        assert_eq!(snap.word.probes(), MAX);
        assert_eq!(snap.recovery_attempts, 1, "half-opened once, by one thread");
        assert_eq!(snap.counter(Counter::Accepted), u64::from(MAX));
        assert_eq!(snap.counter(Counter::RejectedHalfOpenLimit), limited);
    }

    // Part 2: probes are recorded as they finish; the number in flight, counted by the
    // callers themselves, never exceeds MAX.
    let s = reg.subject(b"limit-rolling").unwrap();
    let mut t = Transitions::new();
    s.record(Outcome::Failure, None, reg.clock(), &mut t);
    reg.clock().advance(30_000);
    let in_flight = AtomicU64::new(0);
    let peak = AtomicU64::new(0);
    let successes: u64 = thread::scope(|scope| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let (in_flight, peak, reg) = (&in_flight, &peak, &reg);
                scope.spawn(move || {
                    let mut out = Transitions::new();
                    let mut ok = 0;
                    // At most 8 x 30 = 240 successes < success_threshold: stays half-open.
                    let mut attempts = 0;
                    while ok < 30 && attempts < 1_000_000 {
                        attempts += 1;
                        if matches!(s.admit(5, reg.clock(), &mut out), Admission::Probe(_)) {
                            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(n, Ordering::SeqCst);
                            assert!(n <= u64::from(MAX), "{n} probes in flight");
                            std::hint::spin_loop();
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            s.record(Outcome::Success, None, reg.clock(), &mut out);
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(successes, THREADS as u64 * 30);
    assert!(peak.load(Ordering::SeqCst) >= 1);
    let w = s.word();
    assert_eq!(w.breaker(), HalfOpen);
    assert_eq!(w.probes(), 0);
    assert_eq!(u64::from(w.probe_successes()), successes);
}

/// With tickets, late outcomes (of calls admitted while the breaker was closed, and
/// second answers of probes) arriving among the probes' own never free a probe's slot:
/// the probes in flight, counted by their callers, never exceed the limit, and every
/// outcome is either a probe's (counted by its episode) or late.
#[test]
fn ticketed_late_outcomes_never_let_more_probes_in() {
    const MAX: u8 = 3;
    let reg = registry(
        Policy {
            failure_threshold: 1,
            half_open_max_calls: MAX,
            success_threshold: 255,
            ..Policy::default()
        },
        small_pool(),
    );
    let s = reg.subject(b"late-tickets").unwrap();
    let mut t = Transitions::new();
    // Calls admitted while closed, whose outcomes will all be late.
    let closed: Vec<_> = (0..THREADS * 200)
        .map(|_| s.admit(5, reg.clock(), &mut t).ticket().unwrap())
        .collect();
    s.record(Outcome::Failure, None, reg.clock(), &mut t);
    reg.clock().advance(30_000);
    let in_flight = AtomicU64::new(0);
    let (probes, late): (u64, u64) = thread::scope(|scope| {
        let hs: Vec<_> = (0..THREADS)
            .map(|i| {
                let (in_flight, reg, closed) = (&in_flight, &reg, &closed);
                scope.spawn(move || {
                    let mut out = Transitions::new();
                    let mut rng = Rng::new(i as u64 + 1);
                    let (mut probes, mut late) = (0u64, 0u64);
                    let mine = &closed[i * 200..(i + 1) * 200];
                    let mut next_late = 0;
                    // At most 8 x 25 = 200 successes < success_threshold: stays half-open.
                    while probes < 25 {
                        if next_late < mine.len() && rng.below(2) == 0 {
                            s.record_ticket(
                                Outcome::Success,
                                None,
                                mine[next_late],
                                reg.clock(),
                                &mut out,
                            );
                            next_late += 1;
                            late += 1;
                            continue;
                        }
                        if let Admission::Probe(ticket) = s.admit(5, reg.clock(), &mut out) {
                            let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(n <= u64::from(MAX), "{n} probes in flight");
                            std::hint::spin_loop();
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            s.record_ticket(Outcome::Success, None, ticket, reg.clock(), &mut out);
                            // A second answer of the same probe: late.
                            s.record_ticket(Outcome::Success, None, ticket, reg.clock(), &mut out);
                            probes += 1;
                            late += 1;
                        }
                    }
                    (probes, late)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, l), (x, y)| (a + x, l + y))
    });
    let snap = s.snapshot(reg.clock());
    assert_eq!(snap.word.breaker(), HalfOpen);
    assert_eq!(snap.word.probes(), 0);
    assert_eq!(u64::from(snap.word.probe_successes()), probes);
    assert_eq!(snap.counter(Counter::ProbeSuccesses), probes);
    assert_eq!(snap.counter(Counter::LateOutcomes), late);
    assert_eq!(snap.counter(Counter::Successes), probes + late);
}

/// Depths around every threshold of warning 100 / critical 500 / recovery 50.
const DEPTHS: [u64; 12] = [0, 49, 50, 51, 99, 100, 101, 300, 499, 500, 501, 10_000];

fn oscillate(stability_ms: u64) {
    let policy = Policy {
        warning_threshold: 100,
        critical_threshold: 500,
        recovery_threshold: 0.5,
        stability_ms,
        ..Policy::default()
    };
    let reg = registry(policy, small_pool());
    let s = reg.subject(b"oscillating").unwrap();
    const N: u64 = 6_000; // 8 x 6_000 reports: fewer transitions than the epoch wraps at
    let reported: Vec<Transition> = thread::scope(|scope| {
        let hs: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let reg = &reg;
                scope.spawn(move || {
                    let mut rng = Rng::new(100 + t);
                    let mut all = Vec::new();
                    for _ in 0..N {
                        let mut out = Transitions::new();
                        let d = DEPTHS[rng.below(DEPTHS.len() as u64) as usize];
                        s.report_depth(d, reg.clock(), &mut out);
                        all.extend(out.iter().copied());
                        if rng.below(8) == 0 {
                            // An operation's own report: one `Transitions` holds what
                            // one operation can make, not two operations' worth.
                            let mut out = Transitions::new();
                            s.check(reg.clock(), &mut out);
                            all.extend(out.iter().copied());
                        }
                    }
                    all
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    // Status changes come from every transition: the depth signal's flag moving alone
    // (between warning and critical) is a transition of its own, and it may change the
    // status (it did, in a run where such a move came between two backpressure ones).
    let status_changes = reported
        .iter()
        .filter(|t| t.from.status() != t.to.status())
        .count() as u64;
    // The backpressure chain is checked on the backpressure transitions.
    let reported: Vec<Transition> = reported
        .into_iter()
        .filter(|t| t.machine() != Machine::Signal)
        .collect();
    let snap = s.snapshot(reg.clock());
    assert!(
        reported.len() > 100,
        "the test must actually oscillate: {}",
        reported.len()
    );
    assert_eq!(snap.backpressure_transitions, reported.len() as u64);
    assert_eq!(snap.status_changes, status_changes);
    // Each transition bumps the backpressure epoch by one: sorted by epoch, the reports
    // must form one unbroken chain from the initial word to the final one (none
    // missing, none twice).
    let mut by_epoch = reported.clone();
    by_epoch.sort_by_key(|t| t.to.backpressure_epoch());
    let mut state = BackpressureState::Normal;
    for (i, t) in by_epoch.iter().enumerate() {
        assert_eq!(
            t.to.backpressure_epoch() as usize,
            i + 1,
            "epoch gap or repeat"
        );
        assert_eq!(t.from.backpressure_epoch() as usize, i);
        assert_eq!(t.from.backpressure(), state, "chain broken at {i}");
        assert_ne!(t.from.backpressure(), t.to.backpressure());
        state = t.to.backpressure();
    }
    assert_eq!(state, snap.word.backpressure());
    // The final state is where the final depth leads: nothing more to do.
    let t = Thresholds {
        warning: 100,
        critical: 500,
        recovery: 50,
    };
    let depth = s.depth();
    let fin = snap.word.backpressure();
    assert_eq!(
        backpressure::next(fin, depth, false, &t),
        fin,
        "final state {fin:?} disagrees with final depth {depth}"
    );
    if stability_ms == 0 && depth <= t.recovery {
        assert_ne!(
            fin,
            BackpressureState::Recovery,
            "zero stability: no lingering"
        );
    }
}

#[test]
fn oscillating_depth_reports_every_transition_once() {
    oscillate(1_000);
}

#[test]
fn oscillating_depth_with_zero_stability() {
    oscillate(0);
}

/// Spins until `ready`, yielding now and then so that a loaded machine still makes
/// progress.
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        spins += 1;
        if spins % 256 == 0 {
            thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Two threads report conflicting depths on the same subject at the same moment, round
/// after round (started together by spinning on a shared round number, so that they
/// really overlap); after each round the state must be where the depth that stayed
/// leads. A thread whose depth read went stale before its CAS won, while the other
/// thread had already found its state current and returned, used to leave e.g.
/// `normal` at a depth above critical.
#[test]
fn concurrent_reports_leave_the_state_where_the_final_depth_leads() {
    const ROUNDS: u64 = 100_000;
    let reg = registry(
        Policy {
            warning_threshold: 100,
            critical_threshold: 500,
            ..Policy::default()
        },
        small_pool(),
    );
    let s = reg.subject(b"race").unwrap();
    let t = Thresholds {
        warning: 100,
        critical: 500,
        recovery: 50,
    };
    let round = AtomicU64::new(0);
    let finished = AtomicU64::new(0);
    let reported = AtomicU64::new(0);
    let disagreements = thread::scope(|scope| {
        let other = scope.spawn(|| {
            for r in 0..ROUNDS {
                wait_until(|| round.load(Ordering::Acquire) == r + 1);
                let mut out = Transitions::new();
                s.report_depth(if r % 2 == 0 { 0 } else { 1_000 }, reg.clock(), &mut out);
                reported.fetch_add(out.len() as u64, Ordering::Relaxed);
                finished.fetch_add(1, Ordering::AcqRel);
            }
        });
        let mut bad = 0u64;
        for r in 0..ROUNDS {
            round.store(r + 1, Ordering::Release);
            let mut out = Transitions::new();
            s.report_depth(if r % 2 == 0 { 1_000 } else { 0 }, reg.clock(), &mut out);
            reported.fetch_add(out.len() as u64, Ordering::Relaxed);
            wait_until(|| finished.load(Ordering::Acquire) == r + 1);
            let w = s.word().backpressure();
            if backpressure::next(w, s.depth(), false, &t) != w {
                bad += 1;
                // Put it right for the next round.
                let mut out = Transitions::new();
                s.report_depth(s.depth(), reg.clock(), &mut out);
                reported.fetch_add(out.len() as u64, Ordering::Relaxed);
            }
        }
        other.join().unwrap();
        bad
    });
    assert_eq!(
        disagreements, 0,
        "rounds whose state disagreed with the final depth"
    );
    let snap = s.snapshot(reg.clock());
    assert_eq!(
        snap.backpressure_transitions,
        reported.load(Ordering::Relaxed)
    );
}

/// A producer's event: producer id and sequence number.
fn event(producer: u64, seq: u64) -> [u8; 16] {
    let mut e = [0u8; 16];
    e[..8].copy_from_slice(&producer.to_be_bytes());
    e[8..].copy_from_slice(&seq.to_be_bytes());
    e
}

fn parse(e: &[u8]) -> (u64, u64) {
    (
        u64::from_be_bytes(e[..8].try_into().unwrap()),
        u64::from_be_bytes(e[8..16].try_into().unwrap()),
    )
}

struct ProducerLog {
    accepted: Vec<u64>,
    refused: u64,
    dropped_oldest: u64,
}

fn spool_stress(drop_policy: DropPolicy) {
    const PRODUCERS: u64 = 3;
    const PER_PRODUCER: u64 = 60_000;
    let pool = PoolConfig {
        segments: 12,
        segment_capacity: 64,
        segment_bytes: 64 * (16 + 16),
        max_event_bytes: 16,
    };
    let reg = registry(
        Policy {
            drop_policy,
            max_segments: Some(8),
            warning_threshold: 100,
            critical_threshold: 400,
            ..Policy::default()
        },
        pool,
    );
    let s = reg.subject(b"spool").unwrap();
    let done = AtomicBool::new(false);
    let (logs, delivered, transitions) = thread::scope(|scope| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let reg = &reg;
                scope.spawn(move || {
                    let mut log = ProducerLog {
                        accepted: Vec::new(),
                        refused: 0,
                        dropped_oldest: 0,
                    };
                    let mut ts = Vec::new();
                    for seq in 0..PER_PRODUCER {
                        let mut out = Transitions::new();
                        match s.enqueue(reg.store(), &event(p, seq), reg.clock(), &mut out) {
                            Ok(Enqueued::Accepted) => log.accepted.push(seq),
                            Ok(Enqueued::AcceptedAfterDrop(n)) => {
                                log.accepted.push(seq);
                                log.dropped_oldest += n;
                            }
                            Ok(Enqueued::Refused(_)) => log.refused += 1,
                            r => panic!("{r:?}"),
                        }
                        ts.extend(out.iter().copied());
                        if seq % 512 == 0 {
                            thread::yield_now();
                        }
                    }
                    (log, ts)
                })
            })
            .collect();
        let drainer = {
            let (reg, done) = (&reg, &done);
            scope.spawn(move || {
                let mut rng = Rng::new(7);
                let mut delivered: Vec<(u64, u64)> = Vec::new();
                let mut ts = Vec::new();
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let max = 1 + rng.below(100);
                    let mut out = Transitions::new();
                    let batch = match s.drain(
                        reg.store(),
                        max,
                        u64::MAX,
                        42,
                        reg.clock(),
                        &mut out,
                        |b, events| (*b, events.map(parse).collect::<Vec<_>>()),
                    ) {
                        Taken::Batch(_, r) => Some(r),
                        Taken::Empty => None,
                        Taken::NeedsLoad => panic!("memory segments are always readable"),
                    };
                    ts.extend(out.iter().copied());
                    let Some((b, events)) = batch else {
                        if finished {
                            break;
                        }
                        thread::yield_now();
                        continue;
                    };
                    assert_eq!(events.len() as u64, b.len());
                    let mut out = Transitions::new();
                    if rng.below(5) == 0 {
                        assert_eq!(s.nack(b.id), Ok(b.len()));
                        // Acks exactly once: a nacked batch cannot be acked.
                        assert!(s.ack(reg.store(), b.id, reg.clock(), &mut out).is_err());
                    } else {
                        s.ack(reg.store(), b.id, reg.clock(), &mut out).unwrap();
                        delivered.extend(events);
                    }
                    ts.extend(out.iter().copied());
                }
                (delivered, ts)
            })
        };
        let mut logs = Vec::new();
        let mut transitions = Vec::new();
        for p in producers {
            let (log, ts) = p.join().unwrap();
            logs.push(log);
            transitions.extend(ts);
        }
        done.store(true, Ordering::SeqCst);
        let (delivered, ts) = drainer.join().unwrap();
        transitions.extend(ts);
        (logs, delivered, transitions)
    });

    let st = s.spool_stats();
    let accepted: u64 = logs.iter().map(|l| l.accepted.len() as u64).sum();
    let refused: u64 = logs.iter().map(|l| l.refused).sum();
    let dropped_oldest: u64 = logs.iter().map(|l| l.dropped_oldest).sum();
    assert_eq!(accepted + refused, PRODUCERS * PER_PRODUCER);
    assert_eq!(st.enqueued_events, accepted);
    assert_eq!(st.dropped_newest_events, refused);
    assert_eq!(st.dropped_oldest_events, dropped_oldest);
    assert_eq!(st.delivered_events, delivered.len() as u64);
    assert_eq!(
        st.enqueued_events,
        st.delivered_events + st.spooled_events + st.dropped_oldest_events
    );
    assert_eq!(
        st.enqueued_bytes,
        st.delivered_bytes + st.spooled_bytes + st.dropped_oldest_bytes
    );
    assert_eq!(st.spooled_events, 0, "the drainer emptied the spool");
    assert_eq!(st.in_flight_events, 0);
    assert_eq!(st.segments, 0);
    assert_eq!(
        reg.pool().free_segments(),
        12,
        "every segment is back in the pool"
    );
    match drop_policy {
        DropPolicy::DropNewest => {
            assert_eq!(dropped_oldest, 0);
            assert_eq!(st.dropped_oldest_events, 0);
        }
        DropPolicy::DropOldest => assert_eq!(refused, st.dropped_newest_events),
    }
    // No event delivered twice, every delivered event was accepted, FIFO per producer.
    let mut last: HashMap<u64, u64> = HashMap::new();
    let accepted_sets: Vec<std::collections::HashSet<u64>> = logs
        .iter()
        .map(|l| l.accepted.iter().copied().collect())
        .collect();
    for &(p, seq) in &delivered {
        assert!(p < PRODUCERS);
        assert!(
            accepted_sets[p as usize].contains(&seq),
            "{p}/{seq} was never accepted"
        );
        if let Some(prev) = last.insert(p, seq) {
            assert!(prev < seq, "producer {p}: {seq} delivered after {prev}");
        }
    }
    if drop_policy == DropPolicy::DropNewest {
        // Nothing accepted is ever discarded: delivered is exactly what was accepted.
        assert_eq!(delivered.len() as u64, accepted);
    } else {
        assert_eq!(delivered.len() as u64 + dropped_oldest, accepted);
    }
    // Every backpressure transition reported once, across producers and the drainer.
    let snap = s.snapshot(reg.clock());
    assert_eq!(
        snap.backpressure_transitions,
        transitions
            .iter()
            .filter(|t| t.machine() != Machine::Signal)
            .count() as u64
    );
    assert!(
        refused + dropped_oldest > 0,
        "the pool must have run out at least once for the test to mean anything"
    );
}

#[test]
fn concurrent_spool_drop_newest_loses_and_duplicates_nothing() {
    spool_stress(DropPolicy::DropNewest);
}

#[test]
fn concurrent_spool_drop_oldest_loses_and_duplicates_nothing() {
    spool_stress(DropPolicy::DropOldest);
}

/// Producers that move between threads (each event of a logical producer may come from
/// another thread, with a happens-before edge between them, as a process migrating
/// between schedulers), into one subject on a durable spool with small segments (many
/// rolls, overflow files, reclaims), and a drainer that nacks now and then: nothing
/// lost, nothing duplicated beyond redelivery, FIFO per producer.
fn migrating_producers_on_a_durable_spool(round: u64) {
    use breakwater_core::policy::Overflow;
    use breakwater_core::store::{Durability, StoreConfig};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const PRODUCERS: u64 = 6;
    const PER_PRODUCER: u64 = 2_000;
    const THREADS: usize = 3;
    let dir = std::env::temp_dir().join(format!(
        "bw-stress-migrating-{}-{round}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let reg = Registry::open(
        RegistryConfig {
            max_subjects: 16,
            pool: PoolConfig {
                segments: 8,
                segment_capacity: 16,
                segment_bytes: 16 * 32 + 64,
                max_event_bytes: 16,
            },
            default_policy: Policy {
                overflow: Overflow::Disk,
                max_segments: Some(3),
                warning_threshold: 1_000_000,
                critical_threshold: 2_000_000,
                ..Policy::default()
            },
        },
        StoreConfig {
            dir: Some(dir.clone()),
            durability: Durability::Crash,
            owner: b"stress".to_vec(),
            adopt: Vec::new(),
            disk_max_bytes: 1 << 30,
        },
        ManualClock::default(),
    )
    .unwrap();
    let s = reg.subject(b"spool").unwrap();
    // Tokens: (producer, next sequence). A thread takes one, enqueues that producer's
    // next event, puts it back: the mutex orders consecutive events of a producer.
    let tokens: Mutex<VecDeque<(u64, u64)>> = Mutex::new((0..PRODUCERS).map(|p| (p, 0)).collect());
    let done = AtomicBool::new(false);
    let finished = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let mut rng = Rng::new(round + 1);
    let nack_every = 3 + rng.below(5);
    let (delivered, redelivered_batches) = thread::scope(|scope| {
        for _ in 0..THREADS {
            let (reg, tokens, finished, refused) = (&reg, &tokens, &finished, &refused);
            scope.spawn(move || loop {
                let token = tokens.lock().unwrap().pop_front();
                let Some((p, seq)) = token else {
                    if finished.load(Ordering::SeqCst) == PRODUCERS {
                        return;
                    }
                    thread::yield_now();
                    continue;
                };
                let mut out = Transitions::new();
                let r = s.enqueue(reg.store(), &event(p, seq), reg.clock(), &mut out);
                if matches!(r, Ok(Enqueued::Unavailable(_))) {
                    // No overflow file was ready (this loop outruns the reserve's
                    // thread): refused and counted; offered again, as a router would.
                    refused.fetch_add(1, Ordering::Relaxed);
                    tokens.lock().unwrap().push_front((p, seq));
                    thread::yield_now();
                    continue;
                }
                assert_eq!(r, Ok(Enqueued::Accepted), "{p}/{seq}");
                if seq + 1 < PER_PRODUCER {
                    tokens.lock().unwrap().push_back((p, seq + 1));
                } else {
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let drainer = {
            let (reg, done) = (&reg, &done);
            scope.spawn(move || {
                let mut delivered = Vec::new();
                let mut nacks = 0u64;
                let mut n = 0u64;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let mut out = Transitions::new();
                    let taken = s.drain(
                        reg.store(),
                        1 + n % 50,
                        u64::MAX,
                        7,
                        reg.clock(),
                        &mut out,
                        |b, events| (*b, events.map(parse).collect::<Vec<_>>()),
                    );
                    n += 1;
                    match taken {
                        Taken::Batch(_, (b, events)) => {
                            if n % nack_every == 0 {
                                s.nack(b.id).unwrap();
                                nacks += 1;
                            } else {
                                s.ack(reg.store(), b.id, reg.clock(), &mut out).unwrap();
                                delivered.extend(events);
                            }
                        }
                        Taken::NeedsLoad => {
                            s.load(reg.store());
                        }
                        Taken::Empty if finished => break,
                        Taken::Empty => thread::yield_now(),
                    }
                }
                (delivered, nacks)
            })
        };
        // A second reader, as a status scrape and a second loader would be: it reads
        // overflow files back while the drainer takes and acks (loads read their files
        // with the drain lock released), and takes exact counts meanwhile.
        let watcher = {
            let (reg, done) = (&reg, &done);
            scope.spawn(move || {
                let mut loads = 0usize;
                while !done.load(Ordering::SeqCst) {
                    loads += s.load(reg.store());
                    let st = s.spool_stats();
                    assert_eq!(st.lost_total(), 0, "{st:?}");
                    thread::yield_now();
                }
                loads
            })
        };
        // Wait for the producers, then let the drainer finish.
        while finished.load(Ordering::SeqCst) < PRODUCERS {
            thread::sleep(std::time::Duration::from_millis(2));
        }
        done.store(true, Ordering::SeqCst);
        let _loads = watcher.join().unwrap();
        drainer.join().unwrap()
    });
    let st = s.spool_stats();
    assert_eq!(st.lost_total(), 0, "{st:?}");
    assert_eq!(st.enqueued_events, PRODUCERS * PER_PRODUCER);
    assert_eq!(st.delivered_events, PRODUCERS * PER_PRODUCER);
    assert_eq!(st.unavailable_events, refused.load(Ordering::Relaxed));
    assert_eq!((st.spooled_events, st.in_flight_events), (0, 0));
    assert!(redelivered_batches > 0);
    assert!(st.overflow_segments == 0 && st.segments == 0, "{st:?}");
    let mut last: HashMap<u64, u64> = HashMap::new();
    for &(p, seq) in &delivered {
        let expected = last.get(&p).map_or(0, |s| s + 1);
        assert_eq!(
            seq,
            expected,
            "producer {p}: {seq} after {:?}",
            last.get(&p)
        );
        last.insert(p, seq);
    }
    assert_eq!(delivered.len() as u64, PRODUCERS * PER_PRODUCER);
    drop(reg);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn migrating_producers_keep_fifo_and_lose_nothing_on_a_durable_spool() {
    for round in 0..3 {
        migrating_producers_on_a_durable_spool(round);
    }
}
