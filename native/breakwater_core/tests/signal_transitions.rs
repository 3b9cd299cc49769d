//! The overload signals: depth, latency and in-flight flags in the state word, their
//! hysteresis, the router status they lead to, `admit`'s `overloaded` refusal, and the
//! measured values (histogram p95, calls in flight) kept by the timer.

use breakwater_core::clock::ManualClock;
use breakwater_core::counters::Counter;
use breakwater_core::policy::{Policy, PoolConfig};
use breakwater_core::registry::{Registry, RegistryConfig};
use breakwater_core::state::BackpressureState::{Dropping, Normal, Pressure};
use breakwater_core::state::BreakerState::{HalfOpen, Open};
use breakwater_core::state::{Signal, Status, Word};
use breakwater_core::subject::{Admission, Outcome, Reason, SignalReport, Snapshot, Subject};
use breakwater_core::transition::{Machine, Transition, Transitions};
use std::cell::RefCell;

mod common;

use common::{answer, Answer};

/// warning 100 (depth recovers at 50), latency 5 000 ms (2 500), in-flight 10 (5),
/// window 60 s, retry after 7 s.
fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy {
        warning_threshold: 100,
        critical_threshold: 500,
        recovery_threshold: 0.5,
        retry_after_ms: 7_000,
        latency_overload_ms: Some(5_000),
        inflight_overload: Some(10),
        latency_window_ms: 60_000,
        failure_threshold: 3,
        open_timeout_ms: 30_000,
        half_open_max_calls: 2,
        success_threshold: 1,
        ..Policy::default()
    };
    f(&mut p);
    p.validate().expect("test policy is valid");
    p
}

struct H {
    reg: Registry<ManualClock>,
    seen: RefCell<Vec<Transition>>,
}

impl H {
    fn new(policy: Policy) -> Self {
        let reg = Registry::new(
            RegistryConfig {
                max_subjects: 8,
                pool: PoolConfig {
                    segments: 8,
                    segment_capacity: 4,
                    segment_bytes: 256,
                    max_event_bytes: 64,
                },
                default_policy: policy.clone(),
            },
            ManualClock::new(5_000),
        )
        .expect("valid registry config");
        reg.subject_with(b"intake", policy).expect("subject");
        Self {
            reg,
            seen: RefCell::new(Vec::new()),
        }
    }

    fn s(&self) -> &Subject {
        self.reg.get(b"intake").expect("subject exists")
    }

    fn clock(&self) -> &ManualClock {
        self.reg.clock()
    }

    fn word(&self) -> Word {
        self.s().word()
    }

    fn snap(&self) -> Snapshot {
        self.s().snapshot(self.clock())
    }

    /// One operation, its report checked as every transition test does, plus the
    /// signal-transition counter.
    fn step<R>(
        &self,
        f: impl FnOnce(&Subject, &ManualClock, &mut Transitions) -> R,
    ) -> (R, Vec<Transition>) {
        let r = common::checked_step(self.s(), self.clock(), &self.seen, f);
        let flags = self
            .seen
            .borrow()
            .iter()
            .filter(|t| t.signals_changed())
            .count() as u64;
        assert_eq!(self.snap().signal_transitions, flags, "signal_transitions");
        r
    }

    fn depth(&self, d: u64) -> Vec<Transition> {
        self.step(|s, c, t| s.report_depth(d, c, t)).1
    }

    fn latency(&self, ms: u64) -> Vec<Transition> {
        self.step(|s, c, t| s.report_latency(ms, c, t)).1
    }

    fn inflight(&self, n: u64) -> Vec<Transition> {
        self.step(|s, c, t| s.report_inflight(n, c, t)).1
    }

    fn tick(&self) -> (Option<SignalReport>, Vec<Transition>) {
        let store = self.reg.store();
        self.step(|s, c, t| s.tick(store, c, t))
    }

    fn admit(&self, p: u8) -> Answer {
        answer(self.step(|s, c, t| s.admit(p, c, t)).0)
    }

    fn record(&self, latency: Option<u64>) {
        self.step(|s, c, t| s.record(Outcome::Success, latency, c, t));
    }

    fn check(&self) -> (Status, u64) {
        self.step(|s, c, t| s.check(c, t)).0
    }

    fn wait(&self, ms: u64) {
        self.clock().advance(ms);
    }

    fn overloaded(&self) -> Vec<Signal> {
        let w = self.word();
        Signal::ALL
            .into_iter()
            .filter(|s| w.overloaded(*s))
            .collect()
    }
}

/// (overloaded before, after) of each flag transition in `ts`.
fn flags(ts: &[Transition]) -> Vec<(Vec<Signal>, Vec<Signal>)> {
    ts.iter()
        .filter(|t| t.signals_changed())
        .map(|t| t.overloaded())
        .collect()
}

use Signal::{Depth, Inflight, Latency};

#[test]
fn depth_flag_above_warning_clears_at_recovery_depth_with_the_state_in_one_cas() {
    let h = H::new(policy(|_| {}));
    // At the warning threshold: pressure, but the signal needs more than the threshold.
    let ts = h.depth(100);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].backpressure(), (Normal, Pressure));
    assert!(h.overloaded().is_empty());
    // Above it: the flag alone.
    let ts = h.depth(101);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].machine(), Machine::Signal);
    assert_eq!(flags(&ts), vec![(vec![], vec![Depth])]);
    assert_eq!(h.check(), (Status::Warning, 0), "one signal, and pressure");
    // Between recovery and warning it holds.
    assert!(h.depth(51).is_empty());
    assert_eq!(h.overloaded(), vec![Depth]);
    // At the recovery depth both leave, in one transition.
    let ts = h.depth(50);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].machine(), Machine::Backpressure);
    assert_eq!(ts[0].backpressure(), (Pressure, Normal));
    assert_eq!(flags(&ts), vec![(vec![Depth], vec![])]);
    // From normal straight over the threshold: state and flag together.
    let ts = h.depth(300);
    assert_eq!(ts.len(), 1);
    assert_eq!(ts[0].backpressure(), (Normal, Pressure));
    assert_eq!(flags(&ts), vec![(vec![], vec![Depth])]);
    assert_eq!(h.snap().backpressure_transitions, 3);
}

#[test]
fn reported_latency_sets_and_clears_with_hysteresis() {
    let h = H::new(policy(|_| {}));
    assert!(
        h.latency(5_000).is_empty(),
        "at the threshold: not overloaded"
    );
    let ts = h.latency(5_001);
    assert_eq!(flags(&ts), vec![(vec![], vec![Latency])]);
    assert_eq!(ts[0].status(), (Status::Inactive, Status::Warning));
    assert!(
        h.latency(2_501).is_empty(),
        "above the recovery value: holds"
    );
    assert_eq!(h.overloaded(), vec![Latency]);
    let ts = h.latency(2_500);
    assert_eq!(flags(&ts), vec![(vec![Latency], vec![])]);
    assert_eq!(h.check(), (Status::Inactive, 0));
    assert_eq!(h.snap().reported_latency_p95_ms, 2_500);
}

#[test]
fn two_signals_make_the_status_active_and_admit_refuses_overloaded() {
    let h = H::new(policy(|_| {}));
    h.depth(150);
    assert_eq!(h.check(), (Status::Warning, 0));
    let ts = h.latency(6_000);
    assert_eq!(ts[0].status(), (Status::Warning, Status::Active));
    assert_eq!(
        h.check(),
        (Status::Active, 7_000),
        "retry after the policy's time"
    );
    let before = h.snap().counters[Counter::RejectedOverloaded as usize];
    assert_eq!(h.admit(5), Answer::Reject(Reason::Overloaded, 7_000));
    assert_eq!(h.admit(0), Answer::Reject(Reason::Overloaded, 7_000));
    assert_eq!(h.admit(8), Answer::Admit, "bypass passes");
    assert_eq!(
        h.snap().counters[Counter::RejectedOverloaded as usize],
        before + 2
    );
    // Back to one signal: warning, admitted again.
    h.depth(40);
    assert_eq!(h.check(), (Status::Warning, 0));
    assert_eq!(h.admit(5), Answer::Admit);
    // Dropping is refused as backpressure first, whatever the signals.
    h.latency(6_000);
    h.depth(600);
    assert_eq!(h.word().backpressure(), Dropping);
    assert_eq!(h.admit(5), Answer::Reject(Reason::Backpressure, 7_000));
}

#[test]
fn overload_comes_before_low_priority_shedding_and_after_the_breaker() {
    let h = H::new(policy(|p| p.low_priority_shed_ratio = 0.2));
    // depth 120 >= shed depth 100, flag set; a second signal: overloaded wins over shed.
    h.depth(120);
    assert_eq!(h.admit(1), Answer::Reject(Reason::ShedLowPriority, 7_000));
    h.inflight(11);
    assert_eq!(h.admit(1), Answer::Reject(Reason::Overloaded, 7_000));
    // An open breaker answers first, with its own retry time.
    for _ in 0..3 {
        h.record(None);
    }
    let h2 = H::new(policy(|_| {}));
    h2.latency(6_000);
    h2.inflight(20);
    for _ in 0..3 {
        h2.step(|s, c, t| s.record(Outcome::Failure, None, c, t));
    }
    assert_eq!(h2.word().breaker(), Open);
    assert_eq!(h2.admit(5), Answer::Reject(Reason::CircuitOpen, 30_000));
    assert_eq!(h2.check(), (Status::Active, 30_000));
    // Half-open with a free probe slot but two signals: refused, no slot taken.
    h2.wait(30_000);
    assert_eq!(h2.admit(5), Answer::Reject(Reason::Overloaded, 7_000));
    assert_eq!(h2.word().breaker(), HalfOpen);
    assert_eq!(h2.word().probes(), 0);
}

#[test]
fn measured_latency_p95_over_the_window_is_kept_by_the_timer() {
    let h = H::new(policy(|_| {}));
    // 100 calls: 94 fast, 6 slow; p95 (rank 95) is slow.
    for i in 0..100u64 {
        h.record(Some(if i < 94 { 20 } else { 8_000 }));
    }
    assert_eq!(
        h.snap().measured_latency_p95_ms,
        0,
        "not measured before the timer"
    );
    assert!(
        h.overloaded().is_empty(),
        "records never flip flags themselves"
    );
    let (report, ts) = h.tick();
    let report = report.expect("the timer refreshed the signals");
    let p95 = h.snap().measured_latency_p95_ms;
    assert!(
        (p95 as f64 - 8_000.0).abs() / 8_000.0 <= 1.0 / 64.0,
        "{p95}"
    );
    assert_eq!(report.latency_p95_ms, p95);
    assert_eq!(flags(&ts), vec![(vec![], vec![Latency])]);
    assert_eq!(h.snap().latency_samples, 100);
    assert_eq!(h.snap().latency_histogram_bytes % 9_216, 0);
    // The larger of reported and measured counts: a low report does not hide it.
    h.latency(100);
    assert_eq!(h.overloaded(), vec![Latency]);
    // A quarter window later nothing has aged out; a whole window later all has.
    h.wait(15_000);
    h.tick();
    assert_eq!(h.snap().latency_samples, 100);
    h.wait(45_000);
    let (_, ts) = h.tick();
    assert_eq!(h.snap().latency_samples, 0);
    assert_eq!(h.snap().measured_latency_p95_ms, 0);
    assert_eq!(flags(&ts), vec![(vec![Latency], vec![])]);
}

#[test]
fn window_moves_by_quarters_and_fast_calls_bring_p95_down() {
    // Quarters of 1 s. The first latency allocates the histogram; the next visit
    // starts its slice clock.
    let h = H::new(policy(|p| p.latency_window_ms = 4_000));
    for _ in 0..50 {
        h.record(Some(9_000));
    }
    h.tick();
    assert_eq!(h.overloaded(), vec![Latency]);
    // Fast calls in each of the next three quarters: the slow ones stay in the window
    // but fall below the p95.
    for _ in 0..3 {
        h.wait(1_000);
        h.tick();
        for _ in 0..1_000 {
            h.record(Some(10));
        }
    }
    h.wait(250); // the p95 is recomputed every window / 16
    h.tick();
    assert_eq!(h.snap().latency_samples, 3_050);
    assert_eq!(
        h.snap().measured_latency_p95_ms,
        10,
        "50 of 3050 are above the p95"
    );
    assert!(h.overloaded().is_empty());
    h.wait(750);
    h.tick();
    assert_eq!(
        h.snap().latency_samples,
        3_000,
        "the first quarter has aged out"
    );
}

#[test]
fn inflight_counts_admitted_calls_until_recorded_bypass_and_probes_included() {
    let h = H::new(policy(|_| {}));
    for _ in 0..8 {
        assert_eq!(h.admit(5), Answer::Admit);
    }
    for _ in 0..3 {
        assert_eq!(h.admit(9), Answer::Admit);
    }
    assert_eq!(h.snap().measured_inflight, 11);
    assert!(
        h.overloaded().is_empty(),
        "judged by the timer, not on admit"
    );
    let (report, ts) = h.tick();
    assert_eq!(report.unwrap().inflight, 11);
    assert_eq!(flags(&ts), vec![(vec![], vec![Inflight])]);
    for _ in 0..6 {
        h.record(None);
    }
    assert_eq!(h.snap().inflight, 5);
    let (_, ts) = h.tick();
    assert_eq!(flags(&ts), vec![(vec![Inflight], vec![])], "5 <= 10 x 0.5");
    // A half-open probe is in flight too.
    for _ in 0..5 {
        h.record(None);
    }
    // Three failures nobody admitted open the breaker; the timer forgets them.
    for _ in 0..3 {
        h.step(|s, c, t| s.record(Outcome::Failure, None, c, t));
    }
    h.tick();
    h.wait(30_000);
    assert_eq!(h.admit(5), Answer::Probe);
    assert_eq!(h.snap().measured_inflight, 1);
}

#[test]
fn inflight_never_below_zero_and_unmatched_records_do_not_drift() {
    let h = H::new(policy(|_| {}));
    for _ in 0..40 {
        h.record(None); // records nobody admitted
    }
    assert_eq!(h.snap().measured_inflight, 0);
    h.tick();
    for _ in 0..12 {
        h.admit(5);
    }
    assert_eq!(
        h.snap().measured_inflight,
        12,
        "counted from zero, not from -40"
    );
    h.tick();
    assert_eq!(h.overloaded(), vec![Inflight]);
    for _ in 0..12 {
        h.record(None);
    }
    h.tick();
    assert_eq!(h.snap().measured_inflight, 0);
    assert!(h.overloaded().is_empty());
}

#[test]
fn drain_worker_writes_and_health_checks_are_not_in_flight() {
    let h = H::new(policy(|_| {}));
    for i in 0..50 {
        let a = h.step(|s, c, t| s.admit_write(c, t)).0;
        let Admission::Admit(ticket) = a else {
            panic!("a write is admitted: {a:?}")
        };
        if i % 2 == 0 {
            h.step(|s, c, t| s.record_unadmitted(Outcome::Success, Some(30), Some(ticket), c, t));
        }
    }
    // An outcome recorded without any admission's ticket.
    h.step(|s, c, t| s.record_unadmitted(Outcome::Failure, Some(10), None, c, t));
    let snap = h.snap();
    assert_eq!(snap.measured_inflight, 0);
    assert_eq!(
        snap.counters[Counter::Accepted as usize],
        50,
        "still counted as accepted"
    );
    h.tick();
    assert_eq!(h.snap().latency_samples, 26, "their latencies count");
}

#[test]
fn reported_inflight_and_measured_take_the_larger() {
    let h = H::new(policy(|_| {}));
    let ts = h.inflight(11);
    assert_eq!(flags(&ts), vec![(vec![], vec![Inflight])]);
    for _ in 0..3 {
        h.admit(5);
    }
    assert_eq!(h.snap().inflight, 11);
    h.inflight(0);
    assert_eq!(h.snap().inflight, 3);
    assert!(h.overloaded().is_empty());
}

#[test]
fn a_threshold_of_none_turns_a_signal_off_and_configure_re_evaluates() {
    let h = H::new(policy(|_| {}));
    h.latency(6_000);
    h.inflight(50);
    assert_eq!(h.check().0, Status::Active);
    // Turning latency off clears its flag at once.
    let pool_segments = h.reg.pool().config().segments;
    let (r, ts) = h.step(|s, c, t| {
        s.configure(
            policy(|p| p.latency_overload_ms = None),
            pool_segments,
            c,
            t,
        )
    });
    r.unwrap();
    assert_eq!(flags(&ts), vec![(vec![Latency, Inflight], vec![Inflight])]);
    assert_eq!(h.check().0, Status::Warning);
    h.latency(1_000_000);
    assert_eq!(h.overloaded(), vec![Inflight]);
    // Raising the in-flight threshold above the value clears it; lowering sets it.
    // (A policy with latency on again, at 5 000 ms: the reported 1 000 000 counts.)
    let (_, ts) = h.step(|s, c, t| {
        s.configure(
            policy(|p| p.inflight_overload = Some(1_000)),
            pool_segments,
            c,
            t,
        )
    });
    assert_eq!(flags(&ts), vec![(vec![Inflight], vec![Latency])]);
    assert_eq!(h.overloaded(), vec![Latency]);
    let (_, ts) = h.step(|s, c, t| {
        s.configure(
            policy(|p| p.inflight_overload = Some(20)),
            pool_segments,
            c,
            t,
        )
    });
    assert_eq!(flags(&ts), vec![(vec![Latency], vec![Latency, Inflight])]);
    assert_eq!(h.check(), (Status::Active, 7_000));
}

#[test]
fn a_disabled_subject_keeps_its_flags_but_is_inactive_and_admits() {
    let h = H::new(policy(|_| {}));
    h.latency(6_000);
    h.depth(200);
    h.step(|s, c, t| s.set_disabled(true, c, t));
    assert_eq!(h.check(), (Status::Inactive, 0));
    assert_eq!(h.admit(5), Answer::Admit);
    h.step(|s, c, t| s.set_disabled(false, c, t));
    assert_eq!(h.check().0, Status::Active);
}

/// Many threads admit and record (some records unmatched, some by a drain worker) while
/// the timer visits: the count never exceeds the calls truly in flight, and ends at
/// exactly zero with the flag cleared.
#[test]
fn inflight_under_concurrency_is_never_high_and_ends_exact() {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    let h = H::new(policy(|p| p.inflight_overload = Some(4)));
    let s = h.s();
    let clock = h.clock();
    let truly = AtomicI64::new(0);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let timer = scope.spawn(|| {
            let mut max_seen = 0;
            while !done.load(Ordering::Relaxed) {
                let mut t = Transitions::new();
                if let Some(r) = s.tick_signals(clock, &mut t) {
                    max_seen = max_seen.max(r.inflight);
                }
            }
            max_seen
        });
        let callers: Vec<_> = (0..6)
            .map(|id| {
                let truly = &truly;
                scope.spawn(move || {
                    let mut t = Transitions::new();
                    for i in 0..20_000u64 {
                        if id == 0 && i % 5 == 0 {
                            s.record(Outcome::Success, None, clock, &mut t); // unmatched
                        } else if id == 1 && i % 3 == 0 {
                            let ticket = match s.admit_write(clock, &mut t) {
                                Admission::Admit(k) | Admission::Probe(k) => Some(k),
                                Admission::Reject(..) => None,
                            };
                            s.record_unadmitted(Outcome::Success, Some(3), ticket, clock, &mut t);
                        } else if let Admission::Admit(_) =
                            s.admit(if i % 7 == 0 { 9 } else { 5 }, clock, &mut t)
                        {
                            truly.fetch_add(1, Ordering::SeqCst);
                            std::hint::spin_loop();
                            truly.fetch_sub(1, Ordering::SeqCst);
                            s.record(Outcome::Success, Some(i % 100), clock, &mut t);
                        }
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let max_seen = timer.join().unwrap();
        // At most 6 calls at once, and a drain worker's write whose two counts are
        // half done can add one.
        assert!(
            max_seen <= 7,
            "the count read {max_seen} with at most 6 calls in flight"
        );
    });
    let mut t = Transitions::new();
    s.tick_signals(clock, &mut t);
    assert_eq!(s.snapshot(clock).measured_inflight, 0);
    assert!(!s.word().overloaded(Signal::Inflight));
}

/// Concurrent reports of latency and in-flight leave the flags where the last values
/// lead (the re-evaluation after a won CAS), with every flag change reported once.
#[test]
fn concurrent_reports_converge_and_report_each_flag_change_once() {
    let h = H::new(policy(|_| {}));
    let s = h.s();
    let clock = h.clock();
    let reported: Vec<Transition> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..4u64)
            .map(|id| {
                scope.spawn(move || {
                    let mut all = Vec::new();
                    for i in 0..5_000u64 {
                        let mut t = Transitions::new();
                        let v = (i * 7919 + id * 104_729) % 4;
                        if id % 2 == 0 {
                            s.report_latency([100, 2_600, 5_000, 9_000][v as usize], clock, &mut t);
                        } else {
                            s.report_inflight([0, 6, 10, 30][v as usize], clock, &mut t);
                        }
                        all.extend(t.iter().copied());
                    }
                    all
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let snap = s.snapshot(clock);
    assert_eq!(snap.signal_transitions, reported.len() as u64);
    assert!(
        reported.len() > 10,
        "the test must flip flags: {}",
        reported.len()
    );
    // Settle with final values; the flags must match them.
    let mut t = Transitions::new();
    s.report_latency(9_000, clock, &mut t);
    s.report_inflight(0, clock, &mut t);
    let w = s.word();
    assert!(w.overloaded(Signal::Latency) && !w.overloaded(Signal::Inflight));
}

#[test]
fn the_timer_visits_only_subjects_with_something_to_watch() {
    let h = H::new(policy(|p| p.latency_window_ms = 4_000));
    assert!(h.tick().0.is_none(), "at rest: not visited");
    h.admit(5);
    assert!(h.tick().0.is_some(), "an admission arms it");
    assert!(h.tick().0.is_some(), "a call in flight keeps it busy");
    h.record(None);
    assert!(h.tick().0.is_some(), "a record arms it");
    assert!(
        h.tick().0.is_none(),
        "nothing in flight, nothing recorded: at rest"
    );
    h.record(Some(10));
    assert!(h.tick().0.is_some(), "a latency arms it");
    h.wait(1_000);
    assert!(h.tick().0.is_some(), "latencies in the window keep it busy");
    h.wait(4_000);
    assert!(h.tick().0.is_some(), "the visit that empties the window");
    assert_eq!(h.snap().latency_samples, 0);
    assert!(h.tick().0.is_none());
    h.depth(150);
    assert!(h.tick().0.is_some(), "not at rest: visited, for the report");
    h.latency(6_000);
    assert!(h.tick().0.is_some());
}

#[test]
fn budgeted_visits_reach_every_busy_subject_round_robin() {
    let reg = Registry::new(
        RegistryConfig {
            max_subjects: 5_000,
            default_policy: policy(|_| {}),
            ..RegistryConfig::default()
        },
        ManualClock::new(5_000),
    )
    .unwrap();
    let mut t = Transitions::new();
    for i in 0..5_000 {
        let s = reg.subject(format!("s{i}").as_bytes()).unwrap();
        assert_eq!(answer(s.admit(5, reg.clock(), &mut t)), Answer::Admit);
    }
    let mut seen = std::collections::HashSet::new();
    let mut visits = 0;
    while seen.len() < 5_000 {
        visits += 1;
        assert!(visits <= 1_000, "round robin must reach everyone");
        let mut out = Vec::new();
        let mut reports = Vec::new();
        reg.tick_reporting(&mut out, Some(&mut reports), true);
        for (s, r) in reports {
            assert_eq!(r.inflight, 1);
            seen.insert(s.name().to_vec());
        }
    }
    // An unbudgeted visit reaches all of them at once.
    let mut out = Vec::new();
    let mut reports = Vec::new();
    reg.tick_reporting(&mut out, Some(&mut reports), false);
    assert_eq!(reports.len(), 5_000);
}
