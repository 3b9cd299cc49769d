//! Recovery after a crash. A registry dropped without any shutdown work is a crash as
//! far as the spool files are concerned: nothing is flushed or finished at drop, the
//! mapped pages are in the page cache exactly as the last store left them. (The ExUnit
//! fault matrix kills real VMs with SIGKILL.)

use crate::clock::ManualClock;
use crate::meta::LostReason;
use crate::policy::{Overflow, Policy, PoolConfig};
use crate::registry::{Registry, RegistryConfig};
use crate::spool::{SpoolStats, Taken};
use crate::store::{tests::temp_dir, Durability, StoreConfig};
use crate::subject::{Enqueued, Subject};
use crate::transition::Transitions;
use std::path::{Path, PathBuf};

type Reg = Registry<ManualClock>;

const EVENT: usize = 16;

fn pool() -> PoolConfig {
    PoolConfig {
        segments: 4,
        segment_capacity: 8,
        segment_bytes: 8 * 32 + 64,
        max_event_bytes: EVENT as u32,
    }
}

fn config(dir: &Path, durability: Durability, owner: &str, adopt: &[&str]) -> StoreConfig {
    StoreConfig {
        dir: Some(dir.to_path_buf()),
        durability,
        owner: owner.as_bytes().to_vec(),
        adopt: adopt.iter().map(|a| a.as_bytes().to_vec()).collect(),
        disk_max_bytes: 1 << 30,
    }
}

fn open_as(dir: &Path, durability: Durability, owner: &str, adopt: &[&str]) -> Reg {
    let policy = Policy {
        overflow: Overflow::Disk,
        max_segments: Some(2),
        warning_threshold: 1_000_000,
        critical_threshold: 2_000_000,
        ..Policy::default()
    };
    Registry::open(
        RegistryConfig {
            max_subjects: 64,
            pool: pool(),
            default_policy: policy,
        },
        config(dir, durability, owner, adopt),
        ManualClock::default(),
    )
    .unwrap()
}

fn open(dir: &Path) -> Reg {
    open_as(dir, Durability::Crash, "node@host/app", &[])
}

fn event(i: u32) -> Vec<u8> {
    let mut e = format!("event-{i:09}").into_bytes();
    e.resize(EVENT, b'.');
    e
}

fn id_of(e: &[u8]) -> u32 {
    std::str::from_utf8(&e[6..15]).unwrap().parse().unwrap()
}

fn enqueue(reg: &Reg, s: &[u8], from: u32, to: u32) {
    let subject = reg.subject(s).unwrap();
    for i in from..to {
        // The reserve's thread may lag behind this loop: these tests are not about it.
        if let Some(r) = reg.store().reserve() {
            if r.ready().0 < 2 {
                r.fill();
            }
        }
        let r = subject.enqueue(reg.store(), &event(i), reg.clock(), &mut Transitions::new());
        assert_eq!(r, Ok(Enqueued::Accepted), "event {i}");
    }
}

/// Takes one batch of at most `max` events (loading overflow files as needed).
fn take(reg: &Reg, s: &Subject, max: u64) -> Option<(u64, Vec<u32>)> {
    loop {
        match s.drain(
            reg.store(),
            max,
            u64::MAX,
            1,
            reg.clock(),
            &mut Transitions::new(),
            |b, it| (b.id, it.map(id_of).collect::<Vec<_>>()),
        ) {
            Taken::Batch(_, r) => return Some(r),
            Taken::Empty => return None,
            Taken::NeedsLoad => {
                assert!(
                    s.load(reg.store()) > 0,
                    "a load that loads nothing would loop"
                );
            }
        }
    }
}

fn drain_all(reg: &Reg, s: &[u8]) -> Vec<u32> {
    let subject = reg.subject(s).unwrap();
    let mut out = Vec::new();
    while let Some((id, events)) = take(reg, subject, 5) {
        out.extend(events);
        subject
            .ack(reg.store(), id, reg.clock(), &mut Transitions::new())
            .unwrap();
    }
    subject.spool().check_invariants();
    out
}

fn stats(reg: &Reg, s: &[u8]) -> SpoolStats {
    reg.subject(s).unwrap().spool_stats()
}

fn balanced(st: &SpoolStats) -> bool {
    st.enqueued_events
        == st.delivered_events + st.dropped_oldest_events + st.lost_total() + st.spooled_events
}

fn reports(reg: &Reg) -> Vec<(&'static str, String)> {
    let (r, _) = reg.store().take_reports();
    r.into_iter().map(|r| (r.kind, r.message)).collect()
}

fn overflow_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("overflow"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .filter(|p| !is_reserve_file(p))
        .collect();
    v.sort();
    v
}

/// Whether `p` is an unused file of the reserve (all zeros at the start: a free
/// segment header or a blank meta header).
fn is_reserve_file(p: &Path) -> bool {
    // A reserve file may be caught while its thread makes it: created, not yet sized.
    std::fs::read(p).is_ok_and(|b| b.iter().take(4096).all(|&x| x == 0))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

#[test]
fn a_crash_loses_nothing_in_pool_or_overflow_files_and_order_holds() {
    let dir = temp_dir("crash");
    let reg = open(&dir);
    // Two pool segments (16 events), then overflow files.
    enqueue(&reg, b"s", 0, 40);
    let st = stats(&reg, b"s");
    assert_eq!((st.spooled_events, st.spooled_disk_events), (40, 24));
    // One batch acknowledged, one taken and not acknowledged when the node dies.
    let subject = reg.subject(b"s").unwrap();
    let (a, first) = take(&reg, subject, 5).unwrap();
    assert_eq!(first, (0..5).collect::<Vec<_>>());
    subject
        .ack(reg.store(), a, reg.clock(), &mut Transitions::new())
        .unwrap();
    let (_held, second) = take(&reg, subject, 5).unwrap();
    assert_eq!(second, (5..10).collect::<Vec<_>>());
    drop(reg);

    let reg = open(&dir);
    let st = stats(&reg, b"s");
    assert_eq!(st.enqueued_events, 40);
    assert_eq!(st.delivered_events, 5);
    assert_eq!(st.spooled_events, 35);
    assert!(balanced(&st));
    let got = drain_all(&reg, b"s");
    assert_eq!(
        got,
        (5..40).collect::<Vec<_>>(),
        "in order, the taken batch again"
    );
    let st = stats(&reg, b"s");
    assert_eq!(st.redelivered_events, 5, "the batch held at the crash");
    assert_eq!(
        (st.delivered_events, st.spooled_events, st.lost_total()),
        (40, 0, 0)
    );
    assert!(
        overflow_files(&dir).is_empty() || {
            reg.store().maintain();
            overflow_files(&dir).is_empty()
        }
    );
    // New events after recovery come after everything recovered.
    enqueue(&reg, b"s", 40, 45);
    assert_eq!(drain_all(&reg, b"s"), (40..45).collect::<Vec<_>>());
    drop(reg);
    let reg = open(&dir);
    let st = stats(&reg, b"s");
    assert_eq!(
        (st.enqueued_events, st.delivered_events, st.spooled_events),
        (45, 45, 0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn crashes_in_a_row_keep_counting_exactly() {
    let dir = temp_dir("crashes");
    let mut next = 0u32;
    let mut delivered = Vec::new();
    for round in 0..6 {
        let reg = open(&dir);
        enqueue(&reg, b"s", next, next + 13);
        next += 13;
        let subject = reg.subject(b"s").unwrap();
        // Deliver some, leave one batch hanging.
        for _ in 0..round % 3 {
            if let Some((id, ev)) = take(&reg, subject, 4) {
                delivered.extend(ev);
                subject
                    .ack(reg.store(), id, reg.clock(), &mut Transitions::new())
                    .unwrap();
            }
        }
        let _ = take(&reg, subject, 3);
        let st = stats(&reg, b"s");
        assert!(balanced(&st), "round {round}: {st:?}");
        assert_eq!(st.enqueued_events, u64::from(next));
    }
    let reg = open(&dir);
    delivered.extend(drain_all(&reg, b"s"));
    let mut sorted = delivered.clone();
    sorted.dedup();
    assert_eq!(
        sorted,
        (0..next).collect::<Vec<_>>(),
        "every event, in order"
    );
    let st = stats(&reg, b"s");
    assert_eq!(st.delivered_events, u64::from(next));
    assert!(balanced(&st));
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes 40 events (16 in pool files, 24 in three overflow files) and crashes.
fn spool_with_overflow(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    let reg = open(&dir);
    enqueue(&reg, b"s", 0, 40);
    drop(reg);
    dir
}

#[test]
fn every_cut_of_an_overflow_file_is_counted_and_the_rest_delivered_in_order() {
    let src = spool_with_overflow("cut-src");
    let files = overflow_files(&src);
    assert_eq!(files.len(), 3);
    let victim = files[1].file_name().unwrap().to_owned();
    let len = std::fs::metadata(&files[1]).unwrap().len();
    // Every record boundary, every byte of the first record and of the header's
    // identity, and a seeded sample of the rest.
    let mut cuts: Vec<u64> = (0..=8).map(|k| 4096 + k * 32).collect();
    cuts.extend(4096..4096 + 40);
    cuts.extend([0, 1, 8, 63, 64, 100, 2047, 2048, 4095]);
    let mut rng = 0x9E3779B97F4A7C15u64;
    for _ in 0..60 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        cuts.push(rng % len);
    }
    cuts.sort();
    cuts.dedup();
    for cut in cuts {
        let dir = temp_dir("cut");
        copy_dir(&src, &dir);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("overflow").join(&victim))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let reg = open(&dir);
        let got = drain_all(&reg, b"s");
        let st = stats(&reg, b"s");
        // What is delivered is in order, the events of the other files are all there,
        // and every missing event is counted lost with a reason.
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(got, sorted, "cut {cut}: out of order");
        for i in (0..24).chain(32..40) {
            assert!(
                got.contains(&i),
                "cut {cut}: event {i} of an intact file missing"
            );
        }
        assert_eq!(got.len() as u64 + st.lost_total(), 40, "cut {cut}: {st:?}");
        let records_kept = cut.saturating_sub(4096) / 32;
        if cut >= 4096 {
            assert_eq!(st.lost_total(), 8 - records_kept.min(8), "cut {cut}");
            let t = st.lost_events[LostReason::Truncated as usize];
            assert_eq!(t, st.lost_total(), "cut {cut}: reason truncated");
        } else {
            assert_eq!(st.lost_total(), 8, "cut {cut}: the whole file");
        }
        assert!(balanced(&st), "cut {cut}: {st:?}");
        let r = reports(&reg);
        if st.lost_total() > 0 {
            assert!(
                r.iter().any(
                    |(k, m)| (*k == "truncated" || *k == "missing" || *k == "corrupt")
                        && m.contains("counted as lost")
                        || m.contains("set aside")
                ),
                "cut {cut}: no report in {r:?}"
            );
        }
        // A second start counts nothing again.
        drop(reg);
        let reg = open(&dir);
        let again = stats(&reg, b"s");
        assert_eq!(
            again.lost_events, st.lost_events,
            "cut {cut}: counted twice"
        );
        assert_eq!(again.spooled_events, 0);
        drop(reg);
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(src);
}

fn flip(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x20;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}

#[test]
fn corrupt_records_in_pool_and_overflow_files_are_counted_once() {
    let dir = spool_with_overflow("corrupt");
    // The 3rd record of the pool file holding the first events, and the 5th of the
    // last overflow file.
    let pool_file = std::fs::read_dir(dir.join("pool"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let b = std::fs::read(p).unwrap();
            matches!(
                crate::segment::decode_header(&b[..4096]),
                crate::segment::Header::Live { id, .. } if id.first_seq == 0
            )
        })
        .expect("the pool file of the first events");
    flip(&pool_file, 4096 + 2 * 32 + 20);
    let last = overflow_files(&dir).pop().unwrap();
    flip(&last, 4096 + 4 * 32 + 18);
    let reg = open(&dir);
    let r = reports(&reg);
    let corrupt: Vec<_> = r.iter().filter(|(k, _)| *k == "corrupt").collect();
    assert_eq!(corrupt.len(), 2, "one report per segment: {r:?}");
    let got = drain_all(&reg, b"s");
    let st = stats(&reg, b"s");
    assert_eq!(st.lost_events[LostReason::Corrupt as usize], 2);
    assert!(!got.contains(&2) && !got.contains(&36));
    assert_eq!(got.len(), 38);
    assert!(balanced(&st));
    drop(reg);
    let reg = open(&dir);
    assert_eq!(
        stats(&reg, b"s").lost_events[LostReason::Corrupt as usize],
        2
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn deleted_files_in_the_middle_and_at_the_end_are_counted_exactly() {
    let dir = spool_with_overflow("deleted");
    let files = overflow_files(&dir);
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::remove_file(&files[2]).unwrap();
    let reg = open(&dir);
    let got = drain_all(&reg, b"s");
    let st = stats(&reg, b"s");
    assert_eq!(st.lost_events[LostReason::Missing as usize], 16);
    assert_eq!(got, (0..16).chain(24..32).collect::<Vec<_>>());
    assert!(balanced(&st));
    assert!(reports(&reg)
        .iter()
        .any(|(k, m)| *k == "missing" && m.contains("16 events")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_damaged_header_sets_the_file_aside_and_its_events_are_counted() {
    let dir = spool_with_overflow("header");
    let files = overflow_files(&dir);
    flip(&files[1], 70);
    let reg = open(&dir);
    let got = drain_all(&reg, b"s");
    let st = stats(&reg, b"s");
    assert_eq!(got.len(), 32);
    assert_eq!(st.lost_total(), 8);
    assert!(balanced(&st));
    assert!(dir
        .join("overflow")
        .read_dir()
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".damaged")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn another_owners_spool_is_left_alone_unless_adopted() {
    let dir = spool_with_overflow("owner");
    let reg = open_as(&dir, Durability::Crash, "other@host/app", &[]);
    assert!(reg.get(b"s").is_none(), "nothing replayed or counted");
    let r = reports(&reg);
    assert!(r
        .iter()
        .any(|(k, m)| *k == "foreign" && m.contains("node@host/app")));
    drop(reg);
    // Still there for its owner.
    let reg = open(&dir);
    assert_eq!(stats(&reg, b"s").spooled_events, 40);
    drop(reg);
    // Adopted: recovered.
    let reg = open_as(
        &dir,
        Durability::Crash,
        "other@host/app",
        &["node@host/app"],
    );
    assert_eq!(drain_all(&reg, b"s"), (0..40).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn memory_durability_counts_what_a_crash_took() {
    let dir = temp_dir("memory");
    let reg = open_as(&dir, Durability::Memory, "n", &[]);
    enqueue(&reg, b"s", 0, 40);
    drop(reg);
    let reg = open_as(&dir, Durability::Memory, "n", &[]);
    let got = drain_all(&reg, b"s");
    let st = stats(&reg, b"s");
    assert_eq!(got, (16..40).collect::<Vec<_>>(), "overflow files survive");
    assert_eq!(st.lost_events[LostReason::Memory as usize], 16);
    assert!(balanced(&st));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failing_directory_refuses_with_unavailable_and_recovers() {
    let dir = temp_dir("enotdir");
    let reg = open(&dir);
    enqueue(&reg, b"s", 0, 16);
    // Overflow files cannot be created any more, and the files made beforehand are
    // used up (the reserve's thread paused while they are taken out, so that the next
    // creation is the one that fails).
    let reserve = reg.store().reserve().unwrap();
    reserve.pause_for_test(true);
    reserve.drain_for_test();
    std::fs::remove_dir_all(dir.join("overflow")).unwrap();
    std::fs::write(dir.join("overflow"), b"in the way").unwrap();
    reserve.pause_for_test(false);
    assert!(!reserve.fill(), "no file can be made");
    let subject = reg.subject(b"s").unwrap();
    let mut t = Transitions::new();
    for i in 16..20 {
        let r = subject.enqueue(reg.store(), &event(i), reg.clock(), &mut t);
        assert!(matches!(r, Ok(Enqueued::Unavailable(_))), "{r:?}");
    }
    let st = stats(&reg, b"s");
    assert_eq!((st.unavailable_events, st.enqueued_events), (4, 16));
    let r = reports(&reg);
    assert_eq!(
        r.iter().filter(|(k, _)| *k == "spool_unavailable").count(),
        1,
        "one report per outage: {r:?}"
    );
    std::fs::remove_file(dir.join("overflow")).unwrap();
    std::fs::create_dir(dir.join("overflow")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(
        crate::store::RETRY_MS + 50,
    ));
    // The reserve's thread retries on its own; filled here too, so that the test does
    // not depend on its timing.
    assert!(reserve.fill());
    assert_eq!(
        subject.enqueue(reg.store(), &event(20), reg.clock(), &mut t),
        Ok(Enqueued::Accepted)
    );
    let r = reports(&reg);
    assert!(r
        .iter()
        .any(|(k, m)| *k == "spool_available" && m.contains("4 events")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn recovering_a_big_spool_reads_every_record() {
    let dir = temp_dir("big");
    let reg = open(&dir);
    enqueue(&reg, b"a", 0, 2_000);
    enqueue(&reg, b"b", 0, 500);
    drop(reg);
    let t = std::time::Instant::now();
    let reg = open(&dir);
    let took = t.elapsed();
    assert_eq!(stats(&reg, b"a").spooled_events, 2_000);
    assert_eq!(stats(&reg, b"b").spooled_events, 500);
    assert_eq!(drain_all(&reg, b"b"), (0..500).collect::<Vec<_>>());
    // No timing assertion (benches measure speed); printed for the curious.
    eprintln!("recovered 2500 events in {took:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_deleted_meta_file_loses_nothing_the_segments_hold() {
    let dir = temp_dir("meta-gone");
    let reg = open(&dir);
    enqueue(&reg, b"s", 0, 40);
    // One batch acknowledged and released before the crash.
    let subject = reg.subject(b"s").unwrap();
    let (id, first) = take(&reg, subject, 10).unwrap();
    assert_eq!(first, (0..10).collect::<Vec<_>>());
    subject
        .ack(reg.store(), id, reg.clock(), &mut Transitions::new())
        .unwrap();
    drop(reg);
    for e in std::fs::read_dir(dir.join("meta")).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let reg = open(&dir);
    let r = reports(&reg);
    assert!(
        r.iter()
            .any(|(k, m)| *k == "missing" && m.contains("meta file is gone")),
        "{r:?}"
    );
    let got = drain_all(&reg, b"s");
    let st = stats(&reg, b"s");
    // Nothing is lost: every event still in a segment is delivered, in order. The first
    // segment (events 0..8) was freed at the ack; the second (8..16) was not, so its
    // acknowledged events 8 and 9 come back: duplicates, which at-least-once allows,
    // where the meta file's cursor would have skipped them.
    assert_eq!(got, (8..40).collect::<Vec<_>>());
    assert_eq!(st.lost_total(), 0);
    assert!(balanced(&st));
    let _ = std::fs::remove_dir_all(dir);
}

fn meta_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("meta"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "meta"))
        .filter(|p| !is_reserve_file(p))
        .collect();
    v.sort();
    v
}

#[test]
fn a_removed_subject_leaves_no_file_and_does_not_come_back() {
    let dir = temp_dir("removed");
    let reg = open(&dir);
    enqueue(&reg, b"gone", 0, 20);
    enqueue(&reg, b"kept", 0, 5);
    assert_eq!(
        reg.remove(b"gone"),
        Err(crate::registry::RemoveError::Spooled),
        "refused while events wait"
    );
    assert_eq!(drain_all(&reg, b"gone"), (0..20).collect::<Vec<_>>());
    assert_eq!(meta_files(&dir).len(), 2);
    assert_eq!(reg.remove(b"gone"), Ok(()));
    // Every pool segment back in the pool; the meta file goes with the housekeeping.
    assert_eq!(
        reg.pool().free_segments() + 1,
        reg.pool().config().segments as usize,
        "only kept's segment is held"
    );
    reg.store().maintain();
    assert_eq!(meta_files(&dir).len(), 1);
    drop(reg);
    let reg = open(&dir);
    assert!(
        reg.get(b"gone").is_none(),
        "a removed subject is not recovered"
    );
    assert_eq!(drain_all(&reg, b"kept"), (0..5).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_crash_before_the_old_meta_file_is_deleted_keeps_the_newer_one() {
    let dir = temp_dir("removed-crash");
    let reg = open(&dir);
    enqueue(&reg, b"s", 0, 10);
    assert_eq!(drain_all(&reg, b"s"), (0..10).collect::<Vec<_>>());
    assert_eq!(reg.remove(b"s"), Ok(()));
    // Created again under the same name, before the housekeeping deleted the old file:
    // then a crash.
    enqueue(&reg, b"s", 100, 110);
    let subject = reg.subject(b"s").unwrap();
    let (id, first) = take(&reg, subject, 4).unwrap();
    assert_eq!(first, (100..104).collect::<Vec<_>>());
    subject
        .ack(reg.store(), id, reg.clock(), &mut Transitions::new())
        .unwrap();
    assert_eq!(meta_files(&dir).len(), 2);
    drop(reg);
    let reg = open(&dir);
    let r = reports(&reg);
    assert!(r.iter().any(|(k, _)| *k == "stale"), "{r:?}");
    assert_eq!(meta_files(&dir).len(), 1, "the stale file is deleted");
    // The newer instance's cursor and counters hold: 4 delivered, 6 redelivered-free.
    assert_eq!(drain_all(&reg, b"s"), (104..110).collect::<Vec<_>>());
    let st = stats(&reg, b"s");
    assert_eq!(st.enqueued_events, 10);
    assert_eq!(st.delivered_events, 10);
    assert!(balanced(&st));
    let _ = std::fs::remove_dir_all(dir);
}

fn files_in(dir: &Path, sub: &str) -> usize {
    std::fs::read_dir(dir.join(sub)).unwrap().flatten().count()
}

#[test]
fn an_empty_reserve_refuses_and_counts_and_a_refilled_one_accepts() {
    let dir = temp_dir("reserve-empty");
    let reg = open(&dir);
    // Two pool segments of 8 (the quota), then overflow files from the reserve.
    enqueue(&reg, b"s", 0, 20);
    let reserve = reg.store().reserve().unwrap();
    reserve.pause_for_test(true);
    assert!(reserve.drain_for_test() > 0);
    assert_eq!(reserve.ready(), (0, 0));
    let overflow_before = files_in(&dir, "overflow");
    let subject = reg.subject(b"s").unwrap();
    let mut t = Transitions::new();
    // Events 20..24 still fit the current overflow segment; the next need a new one.
    enqueue(&reg, b"s", 20, 24);
    for i in 24..27 {
        let r = subject.enqueue(reg.store(), &event(i), reg.clock(), &mut t);
        assert!(
            matches!(r, Ok(Enqueued::Unavailable(ms)) if ms > 0),
            "{r:?}"
        );
    }
    // A subject's first enqueue needs a meta file: refused as well.
    let fresh = reg.subject(b"fresh").unwrap();
    let r = fresh.enqueue(reg.store(), &event(0), reg.clock(), &mut t);
    assert!(matches!(r, Ok(Enqueued::Unavailable(_))), "{r:?}");
    assert_eq!(
        files_in(&dir, "overflow"),
        overflow_before,
        "no file created on the enqueue path"
    );
    let st = stats(&reg, b"s");
    assert_eq!((st.unavailable_events, st.enqueued_events), (3, 24));
    assert!(balanced(&st));
    assert_eq!(stats(&reg, b"fresh").unavailable_events, 1);
    let r = reports(&reg);
    assert_eq!(
        r.iter()
            .filter(|(k, m)| *k == "spool_unavailable" && m.contains("no pre-created"))
            .count(),
        1,
        "one report while the reserve is empty: {r:?}"
    );

    // Refilled: accepted again, and everything accepted is delivered in order.
    reserve.pause_for_test(false);
    assert!(reserve.fill());
    enqueue(&reg, b"s", 27, 40);
    enqueue(&reg, b"fresh", 1, 3);
    assert_eq!(
        drain_all(&reg, b"s"),
        (0..24).chain(27..40).collect::<Vec<_>>()
    );
    assert_eq!(drain_all(&reg, b"fresh"), vec![1, 2]);
    let st = stats(&reg, b"s");
    assert_eq!(st.lost_total(), 0);
    assert!(balanced(&st));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unused_reserve_files_are_neither_loss_nor_damage_at_recovery() {
    let dir = temp_dir("reserve-unused");
    let reg = open(&dir);
    enqueue(&reg, b"s", 0, 30);
    let (overflow, meta) = reg.store().reserve().unwrap().ready();
    assert!(overflow >= 2 && meta >= 1, "{overflow} {meta}");
    assert!(files_in(&dir, "overflow") > overflow_files(&dir).len());
    assert!(files_in(&dir, "meta") > meta_files(&dir).len());
    // A crash: the reserve's files stay on disk, unused.
    drop(reg);
    let reg = open(&dir);
    let r = reports(&reg);
    assert!(r.iter().all(|(k, _)| *k == "recovered"), "{r:?}");
    for sub in ["overflow", "meta"] {
        assert!(!dir
            .join(sub)
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".damaged")));
    }
    // The old reserve files were deleted; on disk: the files in use and the new reserve.
    let (overflow, meta) = reg.store().reserve().unwrap().ready();
    assert_eq!(
        files_in(&dir, "overflow"),
        overflow_files(&dir).len() + overflow
    );
    assert_eq!(files_in(&dir, "meta"), meta_files(&dir).len() + meta);
    assert_eq!(drain_all(&reg, b"s"), (0..30).collect::<Vec<_>>());
    let st = stats(&reg, b"s");
    assert_eq!((st.lost_total(), st.delivered_events), (0, 30));
    assert!(balanced(&st));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reserve_file_cut_short_by_a_crash_is_no_damage() {
    let dir = temp_dir("reserve-cut");
    let reg = open(&dir);
    enqueue(&reg, b"s", 0, 5);
    drop(reg);
    // A crash while the reserve's thread made a meta file: created, not yet sized (and
    // one sized only in part).
    let empty = crate::store::SpoolDir::meta_path_in(&dir, 0xfff0);
    let short = crate::store::SpoolDir::meta_path_in(&dir, 0xfff1);
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&short, [0u8; 100]).unwrap();
    let reg = open(&dir);
    let r = reports(&reg);
    assert!(r.iter().all(|(k, _)| *k != "corrupt"), "{r:?}");
    assert!(
        !empty.exists() && !short.exists(),
        "unused reserve files are deleted"
    );
    assert_eq!(drain_all(&reg, b"s"), (0..5).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(dir);
}
