//! loom model checking of the spool's write/cut/merge protocol (`src/spool.rs`,
//! `src/stripe.rs`).
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p breakwater_core --release --test loom_spool_cut
//! ```
//!
//! The production code uses `parking_lot` mutexes and the system clock, which loom
//! cannot schedule, so this file re-implements the protocol over `loom::sync` with the
//! same structure, line for line where it matters:
//!
//! | model                 | production                                               |
//! |-----------------------|----------------------------------------------------------|
//! | [`Stripe::append`]    | `Stripe::try_append` under the stripe lock: stamp, record, count |
//! | [`Spool::cut`]        | `Drain::cut`: every stripe's lock at once, counts noted   |
//! | [`Spool::merge`]      | `Drain::merge`: records below the cut, by `(stamp, stripe)` |
//! | the clock             | `stamp::next`: monotonic for reads ordered by happens-before; modelled by an atomic counter read under the stripe lock |
//!
//! A *producer* is a loom thread writing to one stripe, then to another (a process
//! migrating between schedulers: program order is the happens-before edge a migration
//! gives). The properties: every record is merged exactly once over any sequence of
//! cuts, and each producer's records come out in the order it wrote them, whatever the
//! interleaving of writers and the drainer.

#![cfg(loom)]

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// A record: producer, its sequence, and the stamp.
type Record = (u8, u8, u64);

struct Stripe {
    records: Mutex<Vec<Record>>,
}

impl Stripe {
    /// Under the stripe's lock: read the clock, append, publish (the lock's release).
    fn append(&self, clock: &AtomicU64, producer: u8, seq: u8) {
        let mut r = self.records.lock().unwrap();
        // `stamp::next`: the clock, never below the stripe's last stamp.
        let now = clock.fetch_add(1, Ordering::SeqCst);
        let last = r.last().map_or(0, |x| x.2);
        r.push((producer, seq, now.max(last)));
    }
}

struct Spool {
    stripes: Vec<Stripe>,
    /// The drain side: per stripe, records taken so far. Only one thread drains at a
    /// time (the drain lock in production), so this is not a synchronisation point
    /// under test: a std mutex, invisible to loom, keeps the state space small.
    taken: std::sync::Mutex<Vec<usize>>,
}

impl Spool {
    /// Every stripe's lock at once, in index order; the counts inside the cut.
    fn cut(&self) -> Vec<Vec<Record>> {
        let guards: Vec<_> = self
            .stripes
            .iter()
            .map(|s| s.records.lock().unwrap())
            .collect();
        guards.iter().map(|g| g.to_vec()).collect()
    }

    /// Merges what the cut holds beyond what was taken, by (stamp, stripe).
    fn merge(&self) -> Vec<Record> {
        let mut taken = self.taken.lock().unwrap();
        let snapshot = self.cut();
        let mut heads: Vec<usize> = taken.clone();
        let mut out = Vec::new();
        loop {
            let next = (0..snapshot.len())
                .filter(|&i| heads[i] < snapshot[i].len())
                .min_by_key(|&i| (snapshot[i][heads[i]].2, i));
            let Some(i) = next else { break };
            out.push(snapshot[i][heads[i]]);
            heads[i] += 1;
        }
        *taken = heads;
        out
    }
}

fn check(delivered: &[Record], producers: &[(u8, u8)]) {
    // Exactly once, and in each producer's order.
    for &(p, n) in producers {
        let seqs: Vec<u8> = delivered.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
        assert_eq!(
            seqs,
            (0..n).collect::<Vec<_>>(),
            "producer {p}: {delivered:?}"
        );
    }
}

/// At most three preemptions per execution: loom's advice for models this size (every
/// bug loom's authors report needs fewer); unbounded, this model takes minutes.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

#[test]
fn migrating_producers_come_out_in_order_over_concurrent_cuts() {
    model(|| {
        let clock = Arc::new(AtomicU64::new(1));
        let spool = Arc::new(Spool {
            stripes: (0..2)
                .map(|_| Stripe {
                    records: Mutex::new(Vec::new()),
                })
                .collect(),
            taken: std::sync::Mutex::new(vec![0, 0]),
        });
        // Producer 0 writes on stripe 0, then migrates to stripe 1; producer 1 the
        // other way round.
        let writers: Vec<_> = [(0u8, [0usize, 1]), (1u8, [1, 0])]
            .into_iter()
            .map(|(p, stripes)| {
                let (spool, clock) = (Arc::clone(&spool), Arc::clone(&clock));
                thread::spawn(move || {
                    for (seq, s) in stripes.into_iter().enumerate() {
                        spool.stripes[s].append(&clock, p, seq as u8);
                    }
                })
            })
            .collect();
        // The drainer cuts and merges while they write.
        let drainer = {
            let spool = Arc::clone(&spool);
            thread::spawn(move || spool.merge())
        };
        for w in writers {
            w.join().unwrap();
        }
        let mut delivered = drainer.join().unwrap();
        // A last cut after every writer is done takes the rest.
        delivered.extend(spool.merge());
        check(&delivered, &[(0, 2), (1, 2)]);
    });
}

#[test]
fn a_producer_sharing_a_stripe_with_another_keeps_its_order() {
    model(|| {
        let clock = Arc::new(AtomicU64::new(1));
        let spool = Arc::new(Spool {
            stripes: (0..2)
                .map(|_| Stripe {
                    records: Mutex::new(Vec::new()),
                })
                .collect(),
            taken: std::sync::Mutex::new(vec![0, 0]),
        });
        // Producer 0 writes twice to stripe 0 then once to stripe 1; producer 1 writes
        // once to stripe 0 (a thread sharing the stripe); two cuts race with them.
        let p0 = {
            let (spool, clock) = (Arc::clone(&spool), Arc::clone(&clock));
            thread::spawn(move || {
                spool.stripes[0].append(&clock, 0, 0);
                spool.stripes[0].append(&clock, 0, 1);
                spool.stripes[1].append(&clock, 0, 2);
            })
        };
        let p1 = {
            let (spool, clock) = (Arc::clone(&spool), Arc::clone(&clock));
            thread::spawn(move || spool.stripes[0].append(&clock, 1, 0))
        };
        let mut delivered = spool.merge();
        p0.join().unwrap();
        p1.join().unwrap();
        delivered.extend(spool.merge());
        check(&delivered, &[(0, 3), (1, 1)]);
    });
}
