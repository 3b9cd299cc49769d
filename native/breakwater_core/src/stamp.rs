//! Stamps: the order of records written to different stripes of one subject.
//!
//! A stamp is `CLOCK_MONOTONIC` in nanoseconds, read under the stripe's lock. What it
//! must give is this: when one process enqueues `a` and then `b`, `b`'s stamp is not
//! below `a`'s, even when the process moved to another scheduler (another stripe) in
//! between. The enqueue of `a` returned before `b`'s began, and the move of the process
//! from one scheduler thread to another goes through the run queues' locks, so the
//! clock read for `b` happens after the one for `a`; `CLOCK_MONOTONIC` never goes back
//! for reads ordered that way, on one CPU or across CPUs (the kernel only uses a clock
//! source that is synchronised across CPUs for it). Equal stamps are possible in
//! principle at a coarse clock resolution, which is why the resolution is checked at
//! start ([`resolution_ns`]) and reported. Within a stripe, records are in lock order
//! and a stamp is never below the previous one ([`next`]).
//!
//! Stamps of different runs of the node are not comparable (the clock restarts with the
//! machine), so records are ordered by `(epoch, stamp)`, where the epoch counts the
//! node's starts on this spool directory ([`crate::store`]).

/// The monotonic clock now, in nanoseconds.
#[inline]
pub fn now() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The stamp of a record written after one stamped `last` in the same stripe: the clock
/// now, and never below `last`.
#[inline]
pub fn next(last: u64) -> u64 {
    now().max(last)
}

/// The resolution of the monotonic clock, in nanoseconds.
pub fn resolution_ns() -> u64 {
    let t = rustix::time::clock_getres(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_go_back_and_resolution_is_fine() {
        let mut last = 0;
        for _ in 0..10_000 {
            let s = next(last);
            assert!(s >= last);
            last = s;
        }
        assert!(
            resolution_ns() <= 1_000,
            "a clock this coarse would tie stamps"
        );
    }

    #[test]
    fn stamps_read_after_a_thread_handoff_are_not_below() {
        // A "process" moving between threads: each thread stamps, then hands the baton
        // to the next through a channel (a happens-before edge, as a migration is).
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let mut handles = Vec::new();
        let mut rx = rx;
        for _ in 0..4 {
            let (ntx, nrx) = std::sync::mpsc::channel::<u64>();
            let prev = std::mem::replace(&mut rx, nrx);
            handles.push(std::thread::spawn(move || {
                for _ in 0..1_000 {
                    let seen = prev.recv().unwrap();
                    let s = now();
                    assert!(s >= seen, "stamp {s} below {seen} read before the handoff");
                    ntx.send(s).unwrap();
                }
            }));
        }
        // Close the ring: the last thread's output feeds the first.
        tx.send(0).unwrap();
        let mut last = 0;
        for _ in 0..999 {
            last = rx.recv().unwrap();
            tx.send(last).unwrap();
        }
        let _ = rx.recv();
        drop(tx);
        for h in handles {
            h.join().unwrap();
        }
        assert!(last > 0);
    }
}
