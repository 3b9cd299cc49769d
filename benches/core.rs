//! Criterion benchmarks of the Rust core, run by `make bench-core`
//! (`cargo bench -p breakwater_core --bench core`).
//!
//! Targets: the state check in the normal state ≤ 5 ns; the drop path (an
//! enqueue refused under `drop_newest` on an exhausted subject, an admission rejected
//! with `backpressure` while dropping) ≤ 25 ns; recovery detection (the
//! `report_depth` that moves dropping → recovery, and the check that moves recovery →
//! normal after the stability period) ≤ 50 ns.
//!
//! Every benchmark that claims a transition makes one on every iteration, and counts
//! them: a run that did not is a failed benchmark, not a fast one. Results land in
//! `target/criterion/<group>/<bench>/new/estimates.json`, which the BEAM bench
//! (`benches/beam_bench.exs`) copies into `docs/benchmarks.md`.
//!
//! The `signals` group measures the overload signals' costs: a record with a latency
//! (into the histogram), the histogram alone, the timer's p95 of a full histogram, the
//! timer's visit to a subject at rest and to a busy one, and a check of a subject made
//! active by two signals.
//!
//! After the criterion groups, a plain multi-threaded measurement prints the aggregate
//! throughput of check and admit on one shared subject at 1 and 2 threads (and more
//! when the machine has them) and the scaling factor.

use breakwater_core::clock::ManualClock;
use breakwater_core::policy::{Overflow, Policy, PoolConfig};
use breakwater_core::registry::{Registry, RegistryConfig};
use breakwater_core::spool::Taken;
use breakwater_core::state::{BackpressureState, Status};
use breakwater_core::store::{Durability, StoreConfig};
use breakwater_core::subject::{Admission, Enqueued, Outcome, Reason, Subject};
use breakwater_core::transition::Transitions;
use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, Throughput};
// `std::hint::black_box`, not criterion's: criterion 0.5's is a volatile read, which copies a
// 24-byte result byte by byte and was most of what `normal/check` measured.
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Size of the events the spool benchmarks enqueue (256 B).
const EVENT_BYTES: usize = 256;
/// Events per drain batch (1000).
const BATCH: u64 = 1_000;
/// Drain's byte cap, as in the NIF.
const DRAIN_MAX_BYTES: u64 = 1 << 20;

type Reg = Registry<ManualClock>;

fn registry(pool: PoolConfig) -> Reg {
    Registry::new(
        RegistryConfig {
            max_subjects: 4_096,
            pool,
            default_policy: Policy::default(),
        },
        ManualClock::default(),
    )
    .expect("valid registry configuration")
}

fn default_registry() -> Reg {
    registry(PoolConfig::default())
}

/// Short measurement windows: the whole `cargo bench` stays well under three minutes.
fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
}

// ---- state check, admit, record, lookup (normal state) --------------------------------

fn normal_state(c: &mut Criterion) {
    let reg = default_registry();
    let s = reg.subject(b"ledger").unwrap();
    let clock = reg.clock();
    let mut g = c.benchmark_group("normal");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));

    g.bench_function("check", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            let r = black_box(s).check(clock, &mut out);
            black_box((r, out.is_empty()))
        })
    });
    assert_eq!(
        s.check(clock, &mut Transitions::new()),
        (Status::Inactive, 0)
    );

    g.bench_function("admit", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            let a = black_box(s).admit(black_box(5), clock, &mut out);
            black_box((a, out.is_empty()))
        })
    });
    assert!(matches!(
        s.admit(5, clock, &mut Transitions::new()),
        Admission::Admit(_)
    ));

    g.bench_function("record_success", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            black_box(s).record(black_box(Outcome::Success), None, clock, &mut out);
            black_box(out.is_empty())
        })
    });

    // The registry: a few subjects besides the one looked up, as on a real node.
    for i in 0..1_000 {
        reg.subject(format!("intake-{i}").as_bytes()).unwrap();
    }
    let name: &[u8] = b"ledger";
    g.bench_function("registry_get", |b| {
        b.iter(|| black_box(reg.get(black_box(name))).is_some())
    });
    // What a NIF does before the core: find (or create) the subject, then check it.
    g.bench_function("registry_subject_then_check", |b| {
        b.iter(|| {
            let s = reg.subject(black_box(name)).unwrap();
            let mut out = Transitions::new();
            black_box(s.check(clock, &mut out))
        })
    });
    g.finish();
}

// ---- the overload signals --------------------------------------------------------------

fn signals(c: &mut Criterion) {
    use breakwater_core::latency::Histogram;
    let reg = default_registry();
    let clock = reg.clock();
    let mut g = c.benchmark_group("signals");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));

    let s = reg.subject(b"latency").unwrap();
    g.bench_function("record_success_latency", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            black_box(s).record(
                black_box(Outcome::Success),
                black_box(Some(12)),
                clock,
                &mut out,
            );
            black_box(out.is_empty())
        })
    });

    let h = Histogram::with_stripes(2);
    let mut v = 0u64;
    g.bench_function("histogram_record", |b| {
        b.iter(|| {
            v = v.wrapping_add(7_919) % 100_000;
            black_box(&h).record(black_box(v));
        })
    });
    // The timer's p95 of a histogram with samples in every bucket range.
    for i in 0..100_000u64 {
        h.record(i * 37 % 4_000_000);
    }
    g.bench_function("histogram_p95", |b| {
        b.iter(|| black_box(black_box(&h).quantile(0.95)))
    });

    let idle = reg.subject(b"idle").unwrap();
    g.bench_function("tick_signals_idle", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            black_box(black_box(idle).tick_signals(clock, &mut out))
        })
    });
    // A subject with calls in flight: every visit counts them.
    let busy = reg.subject(b"busy").unwrap();
    for _ in 0..10 {
        busy.admit(5, clock, &mut Transitions::new());
    }
    g.bench_function("tick_signals_inflight", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            black_box(black_box(busy).tick_signals(clock, &mut out))
        })
    });
    assert_eq!(
        busy.tick_signals(clock, &mut Transitions::new())
            .unwrap()
            .inflight,
        10
    );

    // Active by two signals: the check reads the word, sees it is not quiet, and
    // answers active with the retry hint.
    let hot = reg.subject(b"overloaded").unwrap();
    hot.report_latency(10_000, clock, &mut Transitions::new());
    hot.report_inflight(10_000, clock, &mut Transitions::new());
    g.bench_function("check_overloaded", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            black_box(black_box(hot).check(clock, &mut out))
        })
    });
    assert_eq!(
        hot.check(clock, &mut Transitions::new()),
        (Status::Active, 30_000)
    );
    g.finish();
}

// ---- the drop path ---------------------------------------------------------------------

fn drop_path(c: &mut Criterion) {
    // A pool of two small segments and a subject allowed one: it is exhausted after
    // `segment_capacity` events.
    let reg = registry(PoolConfig {
        segments: 2,
        segment_capacity: 64,
        segment_bytes: 64 * EVENT_BYTES as u32,
        max_event_bytes: EVENT_BYTES as u32,
    });
    let clock = reg.clock();
    let pool = reg.store();
    let full = reg.subject(b"full").unwrap();
    let event = [7u8; EVENT_BYTES];
    let mut out = Transitions::new();
    while let Ok(Enqueued::Accepted) = full.enqueue(pool, &event, clock, &mut out) {}
    assert_eq!(
        full.enqueue(pool, &event, clock, &mut Transitions::new()),
        Ok(Enqueued::Refused(Policy::default().retry_after_ms))
    );
    assert_eq!(full.word().backpressure(), BackpressureState::Dropping);

    // A subject dropping because the router reported a critical depth.
    let dropping = reg.subject(b"dropping").unwrap();
    dropping.report_depth(Policy::default().critical_threshold, clock, &mut out);
    assert_eq!(dropping.word().backpressure(), BackpressureState::Dropping);

    let mut g = c.benchmark_group("drop");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    g.bench_function("enqueue_refused_drop_newest", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            let r = black_box(full).enqueue(pool, black_box(&event), clock, &mut out);
            debug_assert!(matches!(r, Ok(Enqueued::Refused(_))));
            black_box((r, out.is_empty()))
        })
    });
    g.bench_function("admit_rejected_backpressure", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            let a = black_box(dropping).admit(black_box(5), clock, &mut out);
            debug_assert!(matches!(a, Admission::Reject(Reason::Backpressure, _)));
            black_box((a, out.is_empty()))
        })
    });
    g.bench_function("check_dropping", |b| {
        b.iter(|| {
            let mut out = Transitions::new();
            black_box(black_box(dropping).check(clock, &mut out))
        })
    });
    g.finish();
    assert!(matches!(
        dropping.admit(5, clock, &mut Transitions::new()),
        Admission::Reject(Reason::Backpressure, _)
    ));
}

// ---- recovery detection ----------------------------------------------------------------

/// Subjects checked per timed batch in `recovery/check_recovery_to_normal`.
const RECOVERING: usize = 64;

fn recovery(c: &mut Criterion) {
    let reg = default_registry();
    let clock = reg.clock();
    let p = Policy::default();
    let critical = p.critical_threshold;
    let calm = p.recovery_depth();
    let stability = p.stability_ms;

    let mut g = c.benchmark_group("recovery");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));

    // Each iteration is one report_depth that makes one transition: the depth alternates
    // between critical (recovery → dropping) and the recovery depth (dropping →
    // recovery), so half the iterations are the recovery detection proper and half its
    // inverse, of the same shape. Every transition is counted and checked.
    let s = reg.subject(b"oscillating").unwrap();
    s.report_depth(critical, clock, &mut Transitions::new());
    assert_eq!(s.word().backpressure(), BackpressureState::Dropping);
    let mut high = true; // the depth reported last
    g.bench_function("report_depth_dropping_recovery_transition", |b| {
        b.iter_custom(|iters| {
            let mut transitions = 0u64;
            let start = Instant::now();
            for _ in 0..iters {
                high = !high;
                let depth = if high { critical } else { calm };
                let mut out = Transitions::new();
                black_box(s).report_depth(black_box(depth), clock, &mut out);
                transitions += out.len() as u64;
            }
            let elapsed = start.elapsed();
            assert_eq!(
                transitions, iters,
                "every report_depth must make a transition"
            );
            elapsed
        })
    });

    // recovery → normal by a check once the stability period has passed. A batch of
    // subjects is put in recovery and the clock advanced past the stability period
    // (untimed); then one check per subject (timed) makes the transition.
    let subjects: Vec<&Subject> = (0..RECOVERING)
        .map(|i| reg.subject(format!("recovering-{i}").as_bytes()).unwrap())
        .collect();
    g.bench_function("check_recovery_to_normal_after_stability", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            let mut transitions = 0u64;
            while done < iters {
                let n = (iters - done).min(RECOVERING as u64) as usize;
                for s in &subjects[..n] {
                    let mut out = Transitions::new();
                    s.report_depth(critical, clock, &mut out);
                    s.report_depth(calm, clock, &mut out);
                    debug_assert_eq!(s.word().backpressure(), BackpressureState::Recovery);
                }
                clock.advance(stability);
                let start = Instant::now();
                for s in &subjects[..n] {
                    let mut out = Transitions::new();
                    black_box(black_box(*s).check(clock, &mut out));
                    transitions += out.len() as u64;
                }
                total += start.elapsed();
                done += n as u64;
            }
            assert_eq!(transitions, iters, "every check must end a recovery");
            total
        })
    });
    g.finish();
}

// ---- the spool -------------------------------------------------------------------------

/// A fresh spool directory for a bench (removed when dropped).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("breakwater-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A policy for the spool benches: thresholds far above any depth reached, the whole
/// pool as quota, overflow to files.
fn spool_policy(pool: &PoolConfig) -> Policy {
    Policy {
        warning_threshold: 1 << 40,
        critical_threshold: 1 << 41,
        max_segments: Some(pool.segments),
        overflow: Overflow::Disk,
        ..Policy::default()
    }
}

/// A registry whose spool is `durability` in `dir` (none: memory only).
fn spool_registry(dir: Option<&TempDir>, durability: Durability) -> Reg {
    let pool = PoolConfig::default();
    let config = RegistryConfig {
        max_subjects: 64,
        pool,
        default_policy: spool_policy(&pool),
    };
    let store = StoreConfig {
        dir: dir.map(|d| d.0.clone()),
        durability,
        owner: b"bench".to_vec(),
        adopt: Vec::new(),
        disk_max_bytes: 1 << 40,
    };
    let reg = Registry::open(config, store, ManualClock::default()).expect("a valid config");
    let (reports, _) = reg.store().take_reports();
    assert!(
        reports
            .iter()
            .all(|r| r.kind == "recovered" || r.kind == "spool_available"),
        "{reports:?}"
    );
    reg
}

/// Drains and acks everything pending; returns the events taken. The payloads are
/// copied out, as the NIF copies them into binaries.
fn drain_all(s: &Subject, reg: &Reg, sink: &mut Vec<u8>) -> u64 {
    let mut n = 0;
    loop {
        let mut out = Transitions::new();
        let taken = s.drain(
            reg.store(),
            u64::MAX,
            DRAIN_MAX_BYTES,
            1,
            reg.clock(),
            &mut out,
            |b, events| {
                sink.clear();
                for e in events {
                    sink.extend_from_slice(e);
                }
                b.id
            },
        );
        match taken {
            Taken::Batch(batch, id) => {
                s.ack(reg.store(), id, reg.clock(), &mut Transitions::new())
                    .unwrap();
                n += batch.len();
            }
            Taken::NeedsLoad => {
                s.load(reg.store());
            }
            Taken::Empty => return n,
        }
    }
}

/// One event per iteration into subject `s` of `reg`; drained (untimed) every BATCH.
fn bench_enqueue(b: &mut criterion::Bencher<'_>, reg: &Reg, s: &Subject, sink: &mut Vec<u8>) {
    let event = [42u8; EVENT_BYTES];
    let clock = reg.clock();
    let store = reg.store();
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = (iters - done).min(BATCH);
            let start = Instant::now();
            for _ in 0..n {
                let mut out = Transitions::new();
                let r = black_box(s).enqueue(store, black_box(&event), clock, &mut out);
                debug_assert_eq!(r, Ok(Enqueued::Accepted));
                black_box(r).ok();
            }
            total += start.elapsed();
            assert_eq!(drain_all(s, reg, sink), n);
            done += n;
        }
        total
    })
}

fn spool(c: &mut Criterion) {
    let dir = TempDir::new("spool");
    let crash = spool_registry(Some(&dir), Durability::Crash);
    let memory = spool_registry(None, Durability::Memory);
    let event = [42u8; EVENT_BYTES];
    let mut sink = Vec::with_capacity(DRAIN_MAX_BYTES as usize + EVENT_BYTES);

    let mut g = c.benchmark_group("spool");
    configure(&mut g);

    // One event per iteration, the two durabilities side by side.
    g.throughput(Throughput::Elements(1));
    let s = crash.subject(b"enqueue").unwrap();
    g.bench_function("enqueue_256B_crash", |b| {
        bench_enqueue(b, &crash, s, &mut sink)
    });
    let s = memory.subject(b"enqueue").unwrap();
    g.bench_function("enqueue_256B_memory", |b| {
        bench_enqueue(b, &memory, s, &mut sink)
    });

    // One batch of BATCH events per iteration: drain (copying the events out, as the
    // NIF does into one binary) and ack. Filled untimed.
    for (name, reg) in [("crash", &crash), ("memory", &memory)] {
        let s = reg.subject(b"drain").unwrap();
        g.throughput(Throughput::Elements(BATCH));
        g.bench_function(format!("drain_ack_batch_1000x256B_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for _ in 0..BATCH {
                        s.enqueue(reg.store(), &event, reg.clock(), &mut Transitions::new())
                            .unwrap();
                    }
                    let start = Instant::now();
                    let mut out = Transitions::new();
                    let taken = s.drain(
                        reg.store(),
                        BATCH,
                        DRAIN_MAX_BYTES,
                        1,
                        reg.clock(),
                        &mut out,
                        |_, events| {
                            sink.clear();
                            let mut n = 0u64;
                            for e in events {
                                sink.extend_from_slice(e);
                                n += 1;
                            }
                            n
                        },
                    );
                    let Taken::Batch(batch, events) = taken else {
                        panic!("a batch");
                    };
                    s.ack(reg.store(), batch.id, reg.clock(), &mut out).unwrap();
                    total += start.elapsed();
                    assert_eq!((batch.len(), events), (BATCH, BATCH));
                }
                total
            })
        });
    }
    g.finish();
}

// ---- recovery --------------------------------------------------------------------------

/// Events in the recovery bench's spool.
const RECOVERY_EVENTS: u64 = 1_000_000;

fn recovery_bench(c: &mut Criterion) {
    let dir = TempDir::new("recovery");
    // Written on the first run of the benchmark, not here: criterion runs every group's
    // set-up even when a filter leaves its benchmarks out, and this one writes 1 M
    // events (about 280 MB of spool files).
    let written = std::cell::Cell::new(false);
    let write = || {
        if written.replace(true) {
            return;
        }
        let reg = spool_registry(Some(&dir), Durability::Crash);
        let s = reg.subject(b"ledger").unwrap();
        let mut event = [0u8; EVENT_BYTES];
        let reserve = reg.store().reserve().expect("a spool directory");
        for i in 0..RECOVERY_EVENTS {
            // This loop outruns the reserve's thread: filled here when it runs low.
            if reserve.ready().0 < 2 {
                reserve.fill();
            }
            event[..8].copy_from_slice(&i.to_le_bytes());
            let r = s.enqueue(reg.store(), &event, reg.clock(), &mut Transitions::new());
            assert_eq!(r, Ok(Enqueued::Accepted));
        }
        // Dropped without any shutdown work: as after a crash.
    };
    let mut g = c.benchmark_group("recovery");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .sample_size(10);
    g.throughput(Throughput::Elements(RECOVERY_EVENTS));
    g.bench_function("open_1M_events_256B", |b| {
        write();
        b.iter(|| {
            let reg = spool_registry(Some(&dir), Durability::Crash);
            let st = reg.subject(b"ledger").unwrap().spool_stats();
            assert_eq!(st.spooled_events, RECOVERY_EVENTS);
            assert_eq!(st.lost_total(), 0);
            black_box(reg)
        })
    });
    g.finish();
}

// ---- enqueue into one subject from several threads: stripes against a shared claim ----

/// The alternative to per-thread stripes, for comparison: one log per subject in a
/// file mapping, where a writer claims space with one atomic add on a shared tail,
/// writes its record (stamped by its position, checksummed like the spool's) and
/// publishes it by storing its length last, as Aeron's log buffers do. The claim gives
/// one order for all writers, and no lock, but every writer's add hits the same cache
/// line. (Written here, not in the crate: it is measured, not used.)
struct SharedClaimLog {
    map: memmap2::MmapMut,
    tail: crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>,
}

impl SharedClaimLog {
    fn new(dir: &TempDir, bytes: usize) -> Self {
        std::fs::create_dir_all(&dir.0).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.0.join("claim.log"))
            .unwrap();
        f.set_len(bytes as u64).unwrap();
        // SAFETY: a file of the bench's own, sized before mapping, never truncated.
        let map = unsafe { memmap2::MmapOptions::new().len(bytes).map_mut(&f).unwrap() };
        Self {
            map,
            tail: Default::default(),
        }
    }

    #[inline]
    fn append(&self, payload: &[u8]) -> bool {
        use std::sync::atomic::Ordering;
        let size = breakwater_core::record::size(payload.len());
        let at = self.tail.fetch_add(size as u64, Ordering::Relaxed) as usize;
        if at + size > self.map.len() {
            return false;
        }
        // SAFETY: the claimed range is this writer's alone, aligned (records are
        // multiples of 8), within the mapping.
        unsafe {
            let p = self.map.as_ptr().add(at) as *mut u8;
            breakwater_core::record::write(p, at as u64, payload, true);
        }
        true
    }

    /// Empties the log; returns how many records it held (whole records, all of the
    /// bench's events being the same size).
    fn reset(&self, record: usize) -> u64 {
        use std::sync::atomic::Ordering;
        let claimed = self.tail.swap(0, Ordering::Relaxed) as usize;
        let used = claimed.min(self.map.len());
        // SAFETY: no writer runs during a reset (between rounds).
        unsafe { std::ptr::write_bytes(self.map.as_ptr() as *mut u8, 0, used) };
        (used / record) as u64
    }
}

/// Events per thread per round of the scaling measurement (the spool is drained and
/// the shared log reset between rounds, untimed). Small on purpose: a round's records
/// (about 1 MiB per thread) stay in the caches, so the comparison measures how the
/// writers claim their space (a stripe's own lock against one atomic add on a shared
/// tail), not the memory bandwidth both designs need alike; with 40 000 per round the
/// 2-core machine's figures were dominated by cache misses and varied by half from one
/// run to the next.
const SCALING_ROUND: u64 = 4_000;

/// Runs `op` `iters` times on each of `threads` threads that live for the whole call,
/// in rounds of at most [`SCALING_ROUND`] per thread; `reset` runs between rounds
/// while the threads wait (untimed) and returns how many events the round stored,
/// which must be every one: a round that stored fewer failed, it was not fast.
/// Returns the time of the rounds: from each round's common start to its last
/// thread's end. The same threads throughout, so each keeps its stripe (as a scheduler
/// thread does).
fn rounds_on_threads(
    threads: usize,
    iters: u64,
    op: &(dyn Fn() + Sync),
    reset: &dyn Fn() -> u64,
) -> Duration {
    let rounds: Vec<u64> = {
        let mut v = Vec::new();
        let mut left = iters;
        while left > 0 {
            let n = left.min(SCALING_ROUND);
            v.push(n);
            left -= n;
        }
        v
    };
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (start, end, rounds) = (&start, &end, &rounds);
            scope.spawn(move || {
                for &n in rounds {
                    start.wait();
                    for _ in 0..n {
                        op();
                    }
                    end.wait();
                }
            });
        }
        let mut total = Duration::ZERO;
        for &n in &rounds {
            start.wait();
            let t0 = Instant::now();
            end.wait();
            total += t0.elapsed();
            let stored = reset();
            assert_eq!(
                stored,
                threads as u64 * n,
                "a round stored only {stored} events"
            );
        }
        total
    })
}

/// Aggregate Mops/s of `threads` threads each running `op` `iters` times (in rounds,
/// `reset` between them); best of five.
fn append_mops(threads: usize, iters: u64, op: &(dyn Fn() + Sync), reset: &dyn Fn() -> u64) -> f64 {
    (0..5)
        .map(|_| {
            let t = rounds_on_threads(threads, iters, op, reset);
            (threads as u64 * iters) as f64 / t.as_secs_f64() / 1e6
        })
        .fold(0.0, f64::max)
}

fn spool_scaling(c: &mut Criterion) {
    let dir = TempDir::new("scaling");
    let reg = spool_registry(Some(&dir), Durability::Crash);
    let s = reg.subject(b"shared").unwrap();
    let claim_dir = TempDir::new("claim");
    let log = SharedClaimLog::new(&claim_dir, 2 * SCALING_ROUND as usize * 16 * 272);
    let event = [42u8; EVENT_BYTES];
    let stripes = || {
        let mut out = Transitions::new();
        let r = black_box(s).enqueue(reg.store(), black_box(&event), reg.clock(), &mut out);
        debug_assert_eq!(r, Ok(Enqueued::Accepted));
        black_box(r).ok();
    };
    let claim = || {
        let ok = log.append(black_box(&event));
        debug_assert!(ok);
        black_box(ok);
    };
    let mut sink = Vec::new();
    let drain = std::cell::RefCell::new(&mut sink);
    let reset_spool = || drain_all(s, &reg, &mut drain.borrow_mut());
    let record = breakwater_core::record::size(EVENT_BYTES);
    let reset_log = || log.reset(record);
    let mut g = c.benchmark_group("spool_scaling");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for threads in thread_counts() {
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(format!("stripes/{threads}_threads"), |b| {
            b.iter_custom(|iters| rounds_on_threads(threads, iters, &stripes, &reset_spool))
        });
        g.bench_function(format!("shared_claim/{threads}_threads"), |b| {
            b.iter_custom(|iters| rounds_on_threads(threads, iters, &claim, &reset_log))
        });
    }
    g.finish();
}

/// Prints the stripes-against-shared-claim table (not part of criterion's statistics).
fn spool_scaling_report() {
    let dir = TempDir::new("scaling-report");
    let reg = spool_registry(Some(&dir), Durability::Crash);
    let s = reg.subject(b"shared").unwrap();
    let claim_dir = TempDir::new("claim-report");
    let log = SharedClaimLog::new(&claim_dir, 2 * SCALING_ROUND as usize * 16 * 272);
    let event = [42u8; EVENT_BYTES];
    let stripes = || {
        let mut out = Transitions::new();
        let r = black_box(s).enqueue(reg.store(), black_box(&event), reg.clock(), &mut out);
        debug_assert_eq!(r, Ok(Enqueued::Accepted));
        black_box(r).ok();
    };
    let claim = || {
        let ok = log.append(black_box(&event));
        debug_assert!(ok);
        black_box(ok);
    };
    let counts = thread_counts();
    println!();
    println!("enqueue 256 B into one subject (crash durability), aggregate throughput (best of 5)");
    print!("{:<16}", "design");
    for t in &counts {
        print!("{:>16}", format!("{t} thr Mops/s"));
    }
    for t in &counts[1..] {
        print!("{:>12}", format!("x{t}/x1"));
    }
    println!();
    let mut sink = Vec::new();
    let cell = std::cell::RefCell::new(&mut sink);
    let reset_spool = || drain_all(s, &reg, &mut cell.borrow_mut());
    let record = breakwater_core::record::size(EVENT_BYTES);
    let reset_log = || log.reset(record);
    type Design<'a> = (&'a str, &'a (dyn Fn() + Sync), &'a dyn Fn() -> u64);
    let designs: [Design; 2] = [
        ("stripes", &stripes, &reset_spool),
        ("shared_claim", &claim, &reset_log),
    ];
    for (name, op, reset) in designs {
        let results: Vec<f64> = counts
            .iter()
            .map(|&t| append_mops(t, 4 * SCALING_ROUND, op, reset))
            .collect();
        print!("{name:<16}");
        for r in &results {
            print!("{r:>16.1}");
        }
        for r in &results[1..] {
            print!("{:>12.2}", r / results[0]);
        }
        println!();
    }
}

// ---- scaling across threads ------------------------------------------------------------

/// Runs `op` `iters` times on each of `threads` threads at once; returns the wall time
/// from the common start to the last thread's end.
fn on_threads(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    for _ in 0..iters {
                        op();
                    }
                    Instant::now()
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let end = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .expect("one thread at least");
        end - start
    })
}

fn thread_counts() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut v = vec![1, 2];
    if cores > 2 {
        v.push(cores);
    }
    v
}

/// One check of `s`, as the scaling measurements repeat it on every thread.
#[inline(always)]
fn check_once(s: &Subject, clock: &ManualClock) {
    let mut out = Transitions::new();
    black_box(black_box(s).check(clock, &mut out));
}

/// One normal-priority admission of `s`.
#[inline(always)]
fn admit_once(s: &Subject, clock: &ManualClock) {
    let mut out = Transitions::new();
    black_box(black_box(s).admit(black_box(5), clock, &mut out));
}

fn scaling(c: &mut Criterion) {
    let reg = default_registry();
    let s = reg.subject(b"shared").unwrap();
    let clock = reg.clock();
    let check = || check_once(s, clock);
    let admit = || admit_once(s, clock);
    let mut g = c.benchmark_group("scaling");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for threads in thread_counts() {
        // An iteration is one call on every thread: criterion's elements/s is the
        // aggregate throughput.
        g.throughput(Throughput::Elements(threads as u64));
        g.bench_function(format!("check/{threads}_threads"), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &check))
        });
        g.bench_function(format!("admit/{threads}_threads"), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, &admit))
        });
    }
    g.finish();
}

/// Aggregate Mops/s of `op` on `threads` threads: best of five runs of `iters` calls
/// per thread.
fn mops(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> f64 {
    on_threads(threads, iters / 10, op); // warm-up
    (0..5)
        .map(|_| {
            let t = on_threads(threads, iters, op);
            (threads as u64 * iters) as f64 / t.as_secs_f64() / 1e6
        })
        .fold(0.0, f64::max)
}

/// Prints the scaling table (not part of criterion's statistics).
fn scaling_report() {
    let reg = default_registry();
    let s = reg.subject(b"shared").unwrap();
    let clock = reg.clock();
    let check = || check_once(s, clock);
    let admit = || admit_once(s, clock);
    let record = || {
        let mut out = Transitions::new();
        black_box(s).record(black_box(Outcome::Success), None, clock, &mut out);
        black_box(out.is_empty());
    };
    let ops: [(&str, &(dyn Fn() + Sync), u64); 3] = [
        ("check", &check, 50_000_000),
        ("admit", &admit, 20_000_000),
        ("record_success", &record, 20_000_000),
    ];
    let counts = thread_counts();
    println!();
    println!("scaling: one shared subject, aggregate throughput (best of 5)");
    print!("{:<16}", "op");
    for t in &counts {
        print!("{:>16}", format!("{t} thr Mops/s"));
    }
    for t in &counts[1..] {
        print!("{:>12}", format!("x{t}/x1"));
    }
    println!();
    for (name, op, iters) in ops {
        let results: Vec<f64> = counts.iter().map(|&t| mops(t, iters, op)).collect();
        print!("{name:<16}");
        for r in &results {
            print!("{r:>16.1}");
        }
        for r in &results[1..] {
            print!("{:>12.2}", r / results[0]);
        }
        println!();
    }
}

criterion_group!(
    benches,
    normal_state,
    signals,
    drop_path,
    recovery,
    spool,
    spool_scaling,
    recovery_bench,
    scaling
);

fn main() {
    benches();
    // `cargo test --benches` runs this binary with `--test`, `--list` lists: neither
    // wants the extra table.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--test" || a == "--list");
    let filtered_out = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .any(|f| !"scaling".contains(f.as_str()) && !"spool_scaling".contains(f.as_str()));
    if !quick && !filtered_out {
        scaling_report();
        spool_scaling_report();
    }
    Criterion::default().configure_from_args().final_summary();
}
