use super::*;
use crate::policy::PoolConfig;

const NAME: &[u8] = b"subject";

fn store(segments: u32, capacity: u32) -> Store {
    Store::memory(PoolConfig {
        segments,
        segment_capacity: capacity,
        segment_bytes: capacity * 40 + 64,
        max_event_bytes: 16,
    })
}

fn push(s: &Spool, st: &Store, ev: &[u8], quota: u32, d: DropPolicy) -> PushOutcome {
    let p = s.push(NAME, st, ev, quota, d, Overflow::Drop, u64::MAX);
    s.check_invariants();
    p.outcome
}

fn take(s: &Spool, st: &Store, max: u64, owner: u64) -> Option<(Batch, Vec<Vec<u8>>)> {
    take_bytes(s, st, max, u64::MAX, owner)
}

fn take_bytes(
    s: &Spool,
    st: &Store,
    max: u64,
    max_bytes: u64,
    owner: u64,
) -> Option<(Batch, Vec<Vec<u8>>)> {
    let r = match s.take(NAME, st, max, max_bytes, owner, |b, it| {
        (*b, it.map(<[u8]>::to_vec).collect::<Vec<_>>())
    }) {
        Taken::Batch(_, r) => Some(r),
        Taken::Empty => None,
        Taken::NeedsLoad => panic!("memory segments never need a load"),
    };
    s.check_invariants();
    r
}

fn ev(i: u32) -> Vec<u8> {
    format!("e{i}").into_bytes()
}

#[test]
fn fifo_across_segments_and_segments_return_on_ack() {
    let st = store(4, 2);
    let s = Spool::new();
    for i in 0..5 {
        assert_eq!(
            push(&s, &st, &ev(i), 4, DropPolicy::DropNewest),
            PushOutcome::Accepted
        );
    }
    assert_eq!(s.segments(), 3);
    assert_eq!(st.pool().free_segments(), 1);
    let (b, e) = take(&s, &st, 3, 1).unwrap();
    assert_eq!(e, vec![ev(0), ev(1), ev(2)]);
    let (b2, e2) = take(&s, &st, 10, 1).unwrap();
    assert_eq!(e2, vec![ev(3), ev(4)]);
    assert!(take(&s, &st, 10, 1).is_none());
    // Acks out of order: nothing is released (or counted delivered) until the oldest
    // batch is done: the durable cursor moves over a done prefix only.
    assert_eq!(s.ack(&st, b2.id), Ok(0));
    s.check_invariants();
    assert_eq!(s.stats().delivered_events, 0);
    assert_eq!(s.stats().spooled_events, 5);
    assert_eq!(
        s.ack(&st, b.id),
        Ok(3),
        "every segment back, the open one too"
    );
    s.check_invariants();
    assert_eq!(st.pool().free_segments(), 4);
    assert_eq!(s.ack(&st, b.id), Err(BatchError::UnknownBatch));
    let stats = s.stats();
    assert_eq!(
        (stats.delivered_events, stats.spooled_events, stats.segments),
        (5, 0, 0)
    );
    assert_eq!(stats.delivered_bytes, 10);
    // The stripe takes a new segment for the next event.
    assert_eq!(
        push(&s, &st, &ev(5), 4, DropPolicy::DropNewest),
        PushOutcome::Accepted
    );
    assert_eq!(take(&s, &st, 10, 1).unwrap().1, vec![ev(5)]);
}

#[test]
fn nacked_events_come_back_first_and_in_order() {
    let st = store(4, 4);
    let s = Spool::new();
    for i in 0..6 {
        push(&s, &st, &ev(i), 4, DropPolicy::DropNewest);
    }
    let (a, _) = take(&s, &st, 2, 1).unwrap();
    let (b, _) = take(&s, &st, 2, 1).unwrap();
    assert_eq!(s.nack(a.id), Ok(2));
    s.check_invariants();
    let (a2, e) = take(&s, &st, 1, 2).unwrap();
    assert_eq!(e, vec![ev(0)]);
    let (a3, e) = take(&s, &st, 10, 2).unwrap();
    assert_eq!(e, vec![ev(1)], "the rest of the nacked run, alone");
    let (c, e) = take(&s, &st, 10, 2).unwrap();
    assert_eq!(e, vec![ev(4), ev(5)]);
    for id in [b.id, a2.id, c.id, a3.id] {
        s.ack(&st, id).unwrap();
        s.check_invariants();
    }
    let stats = s.stats();
    assert_eq!(stats.delivered_events, 6);
    assert_eq!(stats.redelivered_events, 2);
    assert_eq!(stats.taken_events, 8);
}

#[test]
fn nack_owner_returns_only_that_owners_batches() {
    let st = store(4, 4);
    let s = Spool::new();
    for i in 0..4 {
        push(&s, &st, &ev(i), 4, DropPolicy::DropNewest);
    }
    let (a, _) = take(&s, &st, 1, 7).unwrap();
    let _b = take(&s, &st, 1, 8).unwrap();
    let _c = take(&s, &st, 1, 7).unwrap();
    assert_eq!(s.nack_owner(7), 2);
    s.check_invariants();
    assert_eq!(s.stats().in_flight_events, 1);
    let (again, e) = take(&s, &st, 10, 9).unwrap();
    assert_eq!(e, vec![ev(0)]);
    assert_eq!(again.start, a.start);
    assert_eq!(s.nack_all(), 2);
    s.check_invariants();
}

#[test]
fn drop_newest_refuses_and_counts_when_quota_is_reached() {
    let st = store(8, 2);
    let s = Spool::new();
    for i in 0..4 {
        assert_eq!(
            push(&s, &st, &ev(i), 2, DropPolicy::DropNewest),
            PushOutcome::Accepted
        );
    }
    let p = s.push(
        NAME,
        &st,
        b"late!",
        2,
        DropPolicy::DropNewest,
        Overflow::Drop,
        u64::MAX,
    );
    assert_eq!(
        (p.outcome, p.segment),
        (PushOutcome::Refused, SegmentEvent::Exhausted)
    );
    let stats = s.stats();
    assert_eq!(
        (stats.dropped_newest_events, stats.dropped_newest_bytes),
        (1, 5)
    );
    assert_eq!(stats.spooled_events, 4);
    assert_eq!(
        st.pool().free_segments(),
        6,
        "the quota, not the pool, was the limit"
    );
    assert_eq!(stats.offered_events(), 5);
}

#[test]
fn drop_oldest_discards_the_oldest_segment_and_reuses_it() {
    let st = store(2, 2);
    let s = Spool::new();
    for i in 0..4 {
        push(&s, &st, &ev(i), 8, DropPolicy::DropOldest);
    }
    assert_eq!(st.pool().free_segments(), 0);
    let o = push(&s, &st, &ev(4), 8, DropPolicy::DropOldest);
    assert_eq!(
        o,
        PushOutcome::AcceptedAfterDrop {
            events: 2,
            bytes: 4
        }
    );
    let (b, e) = take(&s, &st, 10, 1).unwrap();
    assert_eq!(e, vec![ev(2), ev(3), ev(4)]);
    s.ack(&st, b.id).unwrap();
    s.check_invariants();
    let stats = s.stats();
    assert_eq!(
        (stats.dropped_oldest_events, stats.delivered_events),
        (2, 3)
    );
    assert_eq!(stats.enqueued_events, 5);
    assert_eq!(stats.spooled_events, 0);
}

#[test]
fn drop_oldest_drops_nacked_events_and_refuses_when_pinned() {
    let st = store(2, 2);
    let s = Spool::new();
    for i in 0..4 {
        push(&s, &st, &ev(i), 8, DropPolicy::DropOldest);
    }
    // A batch in flight pins the oldest segment: nothing can be discarded.
    let (b, _) = take(&s, &st, 1, 1).unwrap();
    assert_eq!(
        push(&s, &st, &ev(9), 8, DropPolicy::DropOldest),
        PushOutcome::Refused
    );
    // Once nacked, the batch's events are pending again and may be discarded.
    s.nack(b.id).unwrap();
    let o = push(&s, &st, &ev(4), 8, DropPolicy::DropOldest);
    assert_eq!(
        o,
        PushOutcome::AcceptedAfterDrop {
            events: 2,
            bytes: 4
        }
    );
    let stats = s.stats();
    assert_eq!(
        (stats.dropped_oldest_events, stats.dropped_newest_events),
        (2, 1)
    );
    let (_, e) = take(&s, &st, 10, 1).unwrap();
    assert_eq!(e, vec![ev(2), ev(3), ev(4)]);
}

#[test]
fn batches_are_cut_by_bytes_but_hold_at_least_one_event() {
    let st = store(2, 8);
    let s = Spool::new();
    for _ in 0..6 {
        push(&s, &st, &[7u8; 10], 2, DropPolicy::DropNewest);
    }
    let (b, _) = take_bytes(&s, &st, 100, 25, 1).unwrap();
    assert_eq!((b.len(), b.bytes), (2, 20));
    let (b, _) = take_bytes(&s, &st, 100, 5, 1).unwrap();
    assert_eq!((b.len(), b.bytes), (1, 10));
    // A nacked batch is cut by bytes too.
    s.nack(b.id).unwrap();
    let (b, _) = take_bytes(&s, &st, 100, 1, 1).unwrap();
    assert_eq!((b.len(), b.bytes), (1, 10));
    assert!(matches!(
        s.take(NAME, &st, 0, 100, 1, |_, _| ()),
        Taken::Empty
    ));
}

#[test]
fn take_with_no_event_limit_takes_everything_pending() {
    let st = store(4, 2);
    let s = Spool::new();
    for i in 0..5 {
        push(&s, &st, &ev(i), 4, DropPolicy::DropNewest);
    }
    let (first, _) = take(&s, &st, 1, 1).unwrap();
    let (_, e) = take(&s, &st, u64::MAX, 1).unwrap();
    assert_eq!(e, vec![ev(1), ev(2), ev(3), ev(4)]);
    assert!(take(&s, &st, u64::MAX, 1).is_none());
    assert_eq!(s.nack(first.id), Ok(1));
    let (_, e) = take(&s, &st, u64::MAX, 1).unwrap();
    assert_eq!(e, vec![ev(0)]);
}

#[test]
fn the_depth_mirror_is_exact_near_thresholds_and_lags_far_below() {
    let st = store(64, 64);
    let s = Spool::new();
    // Far below the limit: added every LAZY_BATCH events.
    for i in 0..(LAZY_BATCH as u32 - 1) {
        let p = s.push(
            NAME,
            &st,
            &ev(i),
            64,
            DropPolicy::DropNewest,
            Overflow::Drop,
            1_000_000,
        );
        if i == 0 {
            assert!(p.depth.is_some(), "a new segment always publishes");
        }
    }
    assert!(s.depth() < LAZY_BATCH - 1, "lagging far below");
    assert_eq!(
        s.stats().spooled_events,
        LAZY_BATCH - 1,
        "stats are exact (a cut)"
    );
    assert_eq!(s.depth(), LAZY_BATCH - 1, "the cut flushed the mirror");
    // Near the limit: every push publishes.
    let s = Spool::new();
    for i in 0..10u32 {
        let p = s.push(
            NAME,
            &st,
            &ev(i),
            64,
            DropPolicy::DropNewest,
            Overflow::Drop,
            10,
        );
        assert_eq!(p.depth, Some(u64::from(i) + 1));
    }
}

#[test]
fn stripes_of_different_threads_merge_in_stamp_order() {
    let st = store(64, 16);
    let s = Spool::new();
    // Four threads in turns (a baton passed through a channel is a happens-before
    // edge, like a process migrating): the merged order is the order of the turns.
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let mut txs = Vec::new();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for t in 0..4u32 {
            let (ttx, trx) = std::sync::mpsc::channel::<u32>();
            txs.push(ttx);
            let tx = tx.clone();
            let s = &s;
            let st = &st;
            handles.push(scope.spawn(move || {
                while let Ok(i) = trx.recv() {
                    if i == u32::MAX {
                        break;
                    }
                    let p = s.push(
                        NAME,
                        st,
                        &ev(i),
                        64,
                        DropPolicy::DropNewest,
                        Overflow::Drop,
                        u64::MAX,
                    );
                    assert_eq!(p.outcome, PushOutcome::Accepted);
                    tx.send(t).unwrap();
                }
            }));
        }
        let mut order = Vec::new();
        for i in 0..200u32 {
            let t = (i * 7 + i / 3) % 4;
            txs[t as usize].send(i).unwrap();
            rx.recv().unwrap();
            order.push(ev(i));
        }
        for t in &txs {
            t.send(u32::MAX).unwrap();
        }
        for h in handles.drain(..) {
            h.join().unwrap();
        }
        let mut got = Vec::new();
        while let Some((b, e)) = take(&s, &st, 37, 1) {
            got.extend(e);
            s.ack(&st, b.id).unwrap();
        }
        assert_eq!(got, order);
    });
    let stats = s.stats();
    assert!(
        stats.stripes >= 2,
        "the threads wrote to stripes of their own"
    );
    assert_eq!((stats.delivered_events, stats.spooled_events), (200, 0));
    assert_eq!(stats.segments, 0);
}

/// A deterministic random walk over every operation, checking the invariants after each
/// and the at-least-once contract at the end.
#[test]
fn random_operations_keep_every_invariant() {
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..40 {
        let st = store(3 + (round % 3), 3);
        let s = Spool::new();
        let drop = if round % 2 == 0 {
            DropPolicy::DropNewest
        } else {
            DropPolicy::DropOldest
        };
        let mut in_flight: Vec<(u64, Vec<Vec<u8>>)> = Vec::new();
        let mut delivered: Vec<u64> = Vec::new();
        let mut accepted = std::collections::HashSet::new();
        let mut n = 0u64;
        for _ in 0..400 {
            match next() % 5 {
                0 | 1 => {
                    let e = n.to_be_bytes();
                    let o = push(&s, &st, &e, 2 + (round % 3), drop);
                    if matches!(
                        o,
                        PushOutcome::Accepted | PushOutcome::AcceptedAfterDrop { .. }
                    ) {
                        accepted.insert(n);
                    }
                    n += 1;
                }
                2 => {
                    if let Some((b, e)) = take(&s, &st, 1 + next() % 4, next() % 3) {
                        in_flight.push((b.id, e));
                    }
                }
                3 if !in_flight.is_empty() => {
                    let k = (next() % in_flight.len() as u64) as usize;
                    let (id, events) = in_flight.swap_remove(k);
                    for e in events {
                        delivered.push(u64::from_be_bytes(e.try_into().unwrap()));
                    }
                    s.ack(&st, id).unwrap();
                }
                4 if !in_flight.is_empty() => {
                    let k = (next() % in_flight.len() as u64) as usize;
                    let (id, _) = in_flight.swap_remove(k);
                    s.nack(id).unwrap();
                }
                _ => {}
            }
            s.check_invariants();
            let stats = s.stats();
            assert_eq!(
                stats.enqueued_events,
                stats.delivered_events
                    + stats.dropped_oldest_events
                    + stats.lost_total()
                    + stats.spooled_events
            );
        }
        // Every delivered event was accepted, and none twice (acks are exactly once).
        let mut seen = std::collections::HashSet::new();
        for d in &delivered {
            assert!(accepted.contains(d));
            assert!(seen.insert(*d), "event {d} delivered twice");
        }
        for (id, _) in in_flight {
            s.ack(&st, id).unwrap();
        }
        while let Some((b, _)) = take(&s, &st, 100, 1) {
            s.ack(&st, b.id).unwrap();
        }
        let stats = s.stats();
        assert_eq!(stats.spooled_events, 0);
        assert_eq!(
            stats.enqueued_events,
            stats.delivered_events + stats.dropped_oldest_events
        );
        assert_eq!(
            st.pool().free_segments() + s.segments() as usize,
            st.pool().config().segments as usize
        );
        assert_eq!(s.segments(), 0, "an empty spool holds no segment");
    }
}
