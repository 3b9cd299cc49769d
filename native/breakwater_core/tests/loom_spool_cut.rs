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
//! | [`Closable::close`]   | `Spool::close` (a subject's removal): the drain lock, every stripe's lock at once, nothing pending, then the flag |
//!
//! A *producer* is a loom thread writing to one stripe, then to another (a process
//! migrating between schedulers: program order is the happens-before edge a migration
//! gives). The properties: every record is merged exactly once over any sequence of
//! cuts, and each producer's records come out in the order it wrote them, whatever the
//! interleaving of writers and the drainer; and a close that succeeds strands no
//! accepted record (every record accepted was delivered before it, none is accepted
//! after it).

#![cfg(loom)]

use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The spool with its removal: a flag read under a stripe's lock by every append, set
/// by `close` under all of them.
struct Closable {
    stripes: Vec<Mutex<Vec<Record>>>,
    closed: AtomicBool,
    /// The drain lock and the drain side's state (as in [`Spool`]).
    taken: std::sync::Mutex<Vec<usize>>,
}

impl Closable {
    /// `Spool::push`: the stripe's lock, then the flag (Relaxed, as in production: the
    /// lock orders it), then the record. False: refused, nothing stored.
    fn append(&self, clock: &AtomicU64, stripe: usize, producer: u8, seq: u8) -> bool {
        let mut r = self.stripes[stripe].lock().unwrap();
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let now = clock.fetch_add(1, Ordering::SeqCst);
        let last = r.last().map_or(0, |x| x.2);
        r.push((producer, seq, now.max(last)));
        true
    }

    fn merge(&self) -> Vec<Record> {
        let mut taken = self.taken.lock().unwrap();
        let snapshot: Vec<Vec<Record>> = {
            let guards: Vec<_> = self.stripes.iter().map(|s| s.lock().unwrap()).collect();
            guards.iter().map(|g| g.to_vec()).collect()
        };
        let mut heads = taken.clone();
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

    /// `Spool::close`: under the drain lock and every stripe's lock at once, closes
    /// only when every record was taken (and, in production, acknowledged).
    fn close(&self) -> bool {
        let taken = self.taken.lock().unwrap();
        let guards: Vec<_> = self.stripes.iter().map(|s| s.lock().unwrap()).collect();
        if guards.iter().zip(taken.iter()).any(|(g, &t)| g.len() != t) {
            return false;
        }
        self.closed.store(true, Ordering::Relaxed);
        true
    }
}

/// A close that checks the stripes one lock at a time and sets the flag afterwards
/// fails this model: a migrating producer's record lands in a stripe already checked,
/// is accepted, and is never delivered.
#[test]
fn a_close_never_strands_an_accepted_record() {
    model(|| {
        let clock = Arc::new(AtomicU64::new(1));
        let spool = Arc::new(Closable {
            stripes: (0..2).map(|_| Mutex::new(Vec::new())).collect(),
            closed: AtomicBool::new(false),
            taken: std::sync::Mutex::new(vec![0, 0]),
        });
        // Two producers migrating in opposite directions.
        let writers: Vec<_> = [(0u8, [0usize, 1]), (1u8, [1, 0])]
            .into_iter()
            .map(|(p, stripes)| {
                let (spool, clock) = (Arc::clone(&spool), Arc::clone(&clock));
                thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for (seq, s) in stripes.into_iter().enumerate() {
                        if spool.append(&clock, s, p, seq as u8) {
                            accepted.push((p, seq as u8));
                        }
                    }
                    accepted
                })
            })
            .collect();
        // The remover: drain what is there, then close if nothing is left.
        let remover = {
            let spool = Arc::clone(&spool);
            thread::spawn(move || {
                let delivered = spool.merge();
                let closed = spool.close();
                (delivered, closed)
            })
        };
        let mut accepted: Vec<(u8, u8)> = writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        let (mut delivered, closed) = remover.join().unwrap();
        if !closed {
            // Not removed: the next drain takes the rest.
            delivered.extend(spool.merge());
        }
        // Closed or not, every accepted record was delivered, exactly once.
        let mut got: Vec<(u8, u8)> = delivered.iter().map(|r| (r.0, r.1)).collect();
        got.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(got, accepted, "closed: {closed}");
        // A producer refused once (closed) is refused from then on: its accepted
        // records are a prefix of what it wrote.
        for p in 0..2u8 {
            let seqs: Vec<u8> = accepted.iter().filter(|a| a.0 == p).map(|a| a.1).collect();
            assert_eq!(seqs, (0..seqs.len() as u8).collect::<Vec<_>>());
        }
    });
}
