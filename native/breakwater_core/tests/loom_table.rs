//! loom model checking of the registry's name table (`src/table.rs`).
//!
//! Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p breakwater_core --release --test loom_table
//! ```
//!
//! Under `--cfg loom`, `NameTable` is built on `loom::sync::atomic`, so these models
//! run the table's own code under every interleaving (and every weak-memory outcome
//! loom models) of a lock-free lookup against the changes a registry makes under its
//! lock: a removal (tombstone, then the cleanup of trailing tombstones), an insert that
//! reuses a tombstone, and the replacement of the whole table by a rebuilt copy (the
//! table pointer is mirrored here as `Registry::table` holds it: swapped `AcqRel`,
//! loaded `Acquire`). Entries are never freed during a model, as the registry's grace
//! period guarantees.
//!
//! Properties: a lookup of an entry that is live throughout always finds it; a lookup
//! never returns an entry of another name; an entry a lookup finds is seen whole (a
//! field written before publication reads its value).

#![cfg(loom)]

use breakwater_core::table::{NameTable, Named};
use loom::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

struct E {
    name: &'static [u8],
    home: usize,
    /// Written after construction, before publication: must read 42 once found.
    tag: AtomicUsize,
}

impl Named for E {
    fn name(&self) -> &[u8] {
        self.name
    }
}

fn entry(name: &'static [u8], home: usize) -> *mut E {
    let e = Box::new(E {
        name,
        home,
        tag: AtomicUsize::new(0),
    });
    e.tag.store(42, Ordering::Relaxed);
    Box::into_raw(e)
}

/// What a lookup saw: `Some(tag)` when it found the entry (checking its name).
fn lookup(t: &NameTable<E>, name: &'static [u8], home: usize) -> Option<usize> {
    // SAFETY: no entry is freed before the model's threads are joined.
    unsafe { t.get(name, home) }.map(|e| {
        assert_eq!(e.name, name, "a lookup returns only an entry of its name");
        e.tag.load(Ordering::Relaxed)
    })
}

fn free_all(ps: &[*mut E]) {
    for &p in ps {
        // SAFETY: every entry of the model came from `entry`, freed once, after joins.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// Raw pointers are shared between loom threads as addresses.
#[derive(Clone, Copy)]
struct P(*mut E);
unsafe impl Send for P {}
unsafe impl Sync for P {}

#[test]
fn an_entry_behind_a_removal_and_its_cleanup_is_always_found() {
    loom::model(|| {
        // Slots 0..4: a (home 0) @0, b (home 0) @1, c (home 1) @2; slot 3 empty.
        let t = Arc::new(NameTable::new(4));
        let (a, b, c) = (entry(b"a", 0), entry(b"b", 0), entry(b"c", 1));
        for p in [a, b, c] {
            t.insert(p, unsafe { &*p }.home);
        }
        let writes = Arc::new(Mutex::new(()));
        let w = {
            let (t, writes) = (t.clone(), writes.clone());
            thread::spawn(move || {
                // Removing c clears its tombstone (slot 3 is empty); removing a leaves
                // one (b follows it).
                let _g = writes.lock().unwrap();
                assert!(t.remove(b"c", 1).is_some());
                assert!(t.remove(b"a", 0).is_some());
            })
        };
        assert_eq!(lookup(&t, b"b", 0), Some(42), "b is live throughout");
        let seen_a = lookup(&t, b"a", 0);
        assert!(seen_a.is_none() || seen_a == Some(42));
        w.join().unwrap();
        assert_eq!(lookup(&t, b"b", 0), Some(42));
        assert_eq!(lookup(&t, b"a", 0), None);
        assert_eq!(lookup(&t, b"c", 1), None);
        free_all(&[a, b, c]);
    });
}

#[test]
fn a_reused_tombstone_never_answers_for_the_old_name() {
    loom::model(|| {
        let t = Arc::new(NameTable::new(4));
        let (a, b) = (entry(b"a", 0), entry(b"b", 0));
        t.insert(a, 0);
        t.insert(b, 0);
        let w = {
            let t = t.clone();
            thread::spawn(move || {
                assert!(t.remove(b"a", 0).is_some());
                // Built here, published by the insert: a reader must see it whole.
                let d = entry(b"d", 0);
                t.insert(d, 0); // into a's tombstone
                P(d)
            })
        };
        let r = {
            let t = t.clone();
            thread::spawn(move || {
                let seen_d = lookup(&t, b"d", 0);
                assert!(seen_d.is_none() || seen_d == Some(42), "d is seen whole");
                let seen_a = lookup(&t, b"a", 0);
                assert!(seen_a.is_none() || seen_a == Some(42));
            })
        };
        assert_eq!(lookup(&t, b"b", 0), Some(42), "b is live throughout");
        let d = w.join().unwrap().0;
        r.join().unwrap();
        assert_eq!(lookup(&t, b"d", 0), Some(42));
        assert_eq!(lookup(&t, b"a", 0), None);
        free_all(&[a, b, d]);
    });
}

#[test]
fn a_lookup_during_a_table_rebuild_finds_the_live_entry() {
    loom::model(|| {
        let (a, b) = (entry(b"a", 1), entry(b"b", 1));
        let old = NameTable::new(4);
        old.insert(a, 1);
        old.insert(b, 1);
        old.remove(b"a", 1); // a tombstone before b: the rebuild drops it
        let table = Arc::new(AtomicPtr::new(Box::into_raw(Box::new(old))));
        let w = {
            let table = table.clone();
            thread::spawn(move || {
                // SAFETY: the model frees tables only after the joins.
                let current = unsafe { &*table.load(Ordering::Acquire) };
                let fresh = Box::new(current.rebuilt(|e| e.home));
                table.swap(Box::into_raw(fresh), Ordering::AcqRel)
            })
        };
        // SAFETY: as above.
        let t = unsafe { &*table.load(Ordering::Acquire) };
        assert_eq!(lookup(t, b"b", 1), Some(42));
        let old = w.join().unwrap();
        let fresh = unsafe { Box::from_raw(table.load(Ordering::Acquire)) };
        assert_eq!(fresh.tombstones(), 0);
        assert_eq!(lookup(&fresh, b"b", 1), Some(42));
        drop(unsafe { Box::from_raw(old) });
        drop(fresh);
        free_all(&[a, b]);
    });
}
