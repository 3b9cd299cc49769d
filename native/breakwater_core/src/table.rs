//! The registry's table: names to entries, found without a lock or a write.
//!
//! An open-addressing (linear probing) array of `AtomicPtr<T>`. A slot is *empty*
//! (null), *live* (a pointer to an entry) or a *tombstone* (an entry was removed here).
//! Lookups are lock-free and write nothing: a hash, a few `Acquire` loads, a name
//! comparison. Inserts and removals are serialised by the caller (the registry's lock),
//! so at most one thread changes slots at a time.
//!
//! Invariant (the *probe path* rule): for every live entry at slot `k` whose home slot
//! (its hash) is `h`, every slot from `h` to `k` is non-empty. A lookup walks from the
//! home slot until it finds the name or an empty slot, so the rule is what makes a
//! lookup find every entry that is live while it runs. How each change keeps it:
//!
//! - insert: the entry goes into the first tombstone or empty slot of its probe path,
//!   so every slot before it on the path is non-empty;
//! - remove: the slot becomes a tombstone (non-empty): no path is cut;
//! - cleanup: a tombstone becomes empty only if the slot after it is empty (walking
//!   back from there). A live entry's path never ends at an empty slot before the
//!   entry, so no such tombstone lies on the path of a live entry.
//!
//! Lookups terminate because the table always keeps an empty slot: the registry caps
//! live entries at half the slots and rebuilds the table (a fresh copy of the live
//! entries) before tombstones pass an eighth ([`NameTable::wants_rebuild`]).
//!
//! A removed entry stays readable by lookups that loaded its pointer before the
//! removal; the table never frees entries. The caller keeps a removed entry alive until
//! no such lookup can still run ([`crate::retire`]).
//!
//! Memory ordering: an entry is fully built before its pointer is stored with
//! `Release`, and lookups load with `Acquire`, so a lookup that sees the pointer sees
//! the entry whole. Tombstones and empties are stored with `Release` too, but carry no
//! data. Counts are `Relaxed`: they are changed only under the caller's lock and read
//! elsewhere only as statistics.

#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// An entry the table can find by name.
pub trait Named {
    /// The entry's name; it never changes while the entry is in a table.
    fn name(&self) -> &[u8];
}

/// The address every tombstone holds: a static's, so that it equals no entry's.
static TOMBSTONE_MARK: u8 = 0;

#[inline(always)]
fn tombstone<T>() -> *mut T {
    std::ptr::addr_of!(TOMBSTONE_MARK) as *mut T
}

/// A fixed-size open-addressing table of `T` entries (owned elsewhere) by name.
pub struct NameTable<T> {
    slots: Box<[AtomicPtr<T>]>,
    mask: usize,
    live: AtomicUsize,
    tombstones: AtomicUsize,
}

impl<T: Named> NameTable<T> {
    /// An empty table of `capacity` slots (rounded up to a power of two, at least 4).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.next_power_of_two().max(4);
        Self {
            slots: (0..capacity)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
            mask: capacity - 1,
            live: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
        }
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Live entries.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Tombstones.
    pub fn tombstones(&self) -> usize {
        self.tombstones.load(Ordering::Relaxed)
    }

    /// True when tombstones have passed an eighth of the slots: time for the owner to
    /// copy the live entries into a fresh table.
    pub fn wants_rebuild(&self) -> bool {
        self.tombstones() * 8 > self.capacity()
    }

    /// The entry named `name` (whose hash is `hash`), if live. Lock-free; writes
    /// nothing.
    ///
    /// # Safety
    ///
    /// The caller guarantees that every entry ever stored in this table stays alive for
    /// as long as the returned reference is used (see [`crate::retire`]).
    #[inline]
    pub unsafe fn get<'a>(&self, name: &[u8], hash: usize) -> Option<&'a T> {
        let tomb = tombstone::<T>();
        let mut i = hash & self.mask;
        loop {
            let p = self.slots[i].load(Ordering::Acquire);
            if p.is_null() {
                return None;
            }
            if p != tomb {
                // SAFETY: a non-null, non-tombstone slot holds an entry fully built
                // before its `Release` store, kept alive as the caller guarantees.
                let e = unsafe { &*p };
                if same_name(e.name(), name) {
                    return Some(e);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Stores `entry` (named `name`, hash `hash`, absent from the table) in the first
    /// tombstone or empty slot of its probe path. The caller serialises changes, has
    /// checked that the name is absent, and keeps at most half the slots live.
    pub fn insert(&self, entry: *mut T, hash: usize) {
        debug_assert!(self.live() < self.capacity() / 2 + 1);
        let tomb = tombstone::<T>();
        let mut i = hash & self.mask;
        loop {
            let p = self.slots[i].load(Ordering::Relaxed);
            if p.is_null() || p == tomb {
                if p == tomb {
                    self.tombstones.fetch_sub(1, Ordering::Relaxed);
                }
                // Release: the entry is fully built before a lookup can see it.
                self.slots[i].store(entry, Ordering::Release);
                self.live.fetch_add(1, Ordering::Relaxed);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Removes the entry named `name` (hash `hash`) and returns it; the caller
    /// serialises changes and keeps the entry alive for lookups that may still hold it.
    pub fn remove(&self, name: &[u8], hash: usize) -> Option<*mut T> {
        let tomb = tombstone::<T>();
        let mut i = hash & self.mask;
        loop {
            let p = self.slots[i].load(Ordering::Relaxed);
            if p.is_null() {
                return None;
            }
            // SAFETY: live slots hold entries the caller keeps alive; changes are
            // serialised, so this one cannot be removed meanwhile.
            if p != tomb && same_name(unsafe { &*p }.name(), name) {
                self.slots[i].store(tomb, Ordering::Release);
                self.live.fetch_sub(1, Ordering::Relaxed);
                self.tombstones.fetch_add(1, Ordering::Relaxed);
                self.clear_trailing_tombstones(i);
                return Some(p);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Empties the tombstones that end at an empty slot, walking back from `i`: no
    /// live entry's probe path passes through them (see the module doc).
    fn clear_trailing_tombstones(&self, i: usize) {
        let tomb = tombstone::<T>();
        if !self.slots[(i + 1) & self.mask]
            .load(Ordering::Relaxed)
            .is_null()
        {
            return;
        }
        let mut j = i;
        while self.slots[j].load(Ordering::Relaxed) == tomb {
            self.slots[j].store(std::ptr::null_mut(), Ordering::Release);
            self.tombstones.fetch_sub(1, Ordering::Relaxed);
            j = j.wrapping_sub(1) & self.mask;
        }
    }

    /// A fresh table of the same size holding this one's live entries (placed by
    /// `hash`), without tombstones. The caller serialises it with every change.
    pub fn rebuilt(&self, hash: impl Fn(&T) -> usize) -> Self {
        let fresh = Self::new(self.capacity());
        for p in self.entries() {
            // SAFETY: live entries are kept alive by the caller.
            fresh.insert(p, hash(unsafe { &*p }));
        }
        fresh
    }

    /// Every live entry, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = *mut T> + '_ {
        let tomb = tombstone::<T>();
        self.slots.iter().filter_map(move |slot| {
            let p = slot.load(Ordering::Acquire);
            (!p.is_null() && p != tomb).then_some(p)
        })
    }

    /// The longest run of non-empty slots (the longest a failed lookup can walk), for
    /// tests and statistics.
    pub fn longest_run(&self) -> usize {
        let n = self.slots.len();
        let mut longest = 0;
        let mut run = 0;
        // Twice round, so that a run wrapping past the end is measured whole.
        for k in 0..2 * n {
            if self.slots[k % n].load(Ordering::Relaxed).is_null() {
                run = 0;
            } else {
                run += 1;
                longest = longest.max(run);
            }
        }
        longest.min(n)
    }
}

/// `a == b`, without a call to `memcmp` for names of up to 16 bytes (most subject
/// names): two overlapping word loads compare them, a quarter of a lookup's time saved.
#[inline(always)]
pub fn same_name(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        _ => a == b,
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct E(Vec<u8>);
    impl Named for E {
        fn name(&self) -> &[u8] {
            &self.0
        }
    }

    fn entry(name: &str) -> *mut E {
        Box::into_raw(Box::new(E(name.as_bytes().to_vec())))
    }

    /// Frees what `entry` allocated (tests only; nothing else holds them).
    fn free(p: *mut E) {
        drop(unsafe { Box::from_raw(p) });
    }

    fn find<'a>(t: &NameTable<E>, name: &str, hash: usize) -> Option<&'a E> {
        unsafe { t.get(name.as_bytes(), hash) }
    }

    #[test]
    fn same_name_agrees_with_slice_equality() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(31)).collect();
            assert!(same_name(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x40;
                assert!(!same_name(&a, &b), "length {n}, differing at {at}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_name(&a, &longer));
        }
    }

    #[test]
    fn colliding_entries_survive_removals_around_them() {
        // Every name hashes to slot 2: one cluster, in insertion order.
        let t = NameTable::new(8);
        let names = ["a", "b", "c", "d"];
        let ps: Vec<_> = names.iter().map(|n| entry(n)).collect();
        for p in &ps {
            t.insert(*p, 2);
        }
        assert_eq!(t.remove(b"b", 2), Some(ps[1]));
        assert!(find(&t, "b", 2).is_none());
        for n in ["a", "c", "d"] {
            assert_eq!(find(&t, n, 2).unwrap().0, n.as_bytes(), "{n} still found");
        }
        assert_eq!((t.live(), t.tombstones()), (3, 1));
        // Removing the last of the cluster clears its trailing tombstones.
        assert_eq!(t.remove(b"d", 2), Some(ps[3]));
        assert_eq!((t.live(), t.tombstones()), (2, 1));
        assert_eq!(t.remove(b"c", 2), Some(ps[2]));
        assert_eq!((t.live(), t.tombstones()), (1, 0), "b's tombstone went too");
        assert_eq!(t.longest_run(), 1);
        // A new entry reuses the path.
        let e = entry("e");
        t.insert(e, 2);
        assert_eq!(find(&t, "e", 2).unwrap().0, b"e");
        assert_eq!(find(&t, "a", 2).unwrap().0, b"a");
        for p in ps {
            free(p);
        }
        free(e);
    }

    #[test]
    fn a_tombstone_is_reused_by_the_next_insert_on_its_path() {
        let t = NameTable::new(8);
        let (a, b, c) = (entry("a"), entry("b"), entry("c"));
        t.insert(a, 0);
        t.insert(b, 0);
        t.insert(c, 0);
        t.remove(b"b", 0);
        assert_eq!(t.tombstones(), 1);
        let d = entry("d");
        t.insert(d, 1); // home 1: the tombstone
        assert_eq!((t.live(), t.tombstones()), (3, 0));
        assert_eq!(find(&t, "c", 0).unwrap().0, b"c");
        assert_eq!(find(&t, "d", 1).unwrap().0, b"d");
        for p in [a, b, c, d] {
            free(p);
        }
    }

    #[test]
    fn wraps_around_the_end() {
        let t = NameTable::new(4);
        let (a, b) = (entry("a"), entry("b"));
        t.insert(a, 3);
        t.insert(b, 3); // slot 0
        assert_eq!(find(&t, "b", 3).unwrap().0, b"b");
        t.remove(b"a", 3);
        assert_eq!(find(&t, "b", 3).unwrap().0, b"b");
        t.remove(b"b", 3);
        assert_eq!((t.live(), t.tombstones(), t.longest_run()), (0, 0, 0));
        free(a);
        free(b);
    }

    /// A random model check: after any sequence of inserts and removals with tiny,
    /// colliding hashes, the table agrees with a set, every entry is found, and the
    /// counts are right.
    #[test]
    fn agrees_with_a_set_under_random_churn() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut t = NameTable::new(64);
        let mut rebuilds = 0;
        let mut present: std::collections::BTreeMap<String, (*mut E, usize)> = Default::default();
        let mut removed = Vec::new();
        for _ in 0..20_000 {
            let name = format!("n{}", rnd(48));
            let hash = (rnd(4) * 16 + rnd(3)) as usize; // four crowded regions
            if let Some((p, h)) = present.remove(&name) {
                assert_eq!(t.remove(name.as_bytes(), h), Some(p));
                removed.push(p);
            } else if present.len() < 32 {
                let p = entry(&name);
                t.insert(p, hash);
                present.insert(name, (p, hash));
            }
            assert_eq!(t.live(), present.len());
            for (n, (p, h)) in &present {
                assert_eq!(find(&t, n, *h).map(|e| e as *const E), Some(*p as *const E));
            }
            if t.wants_rebuild() {
                let hashes: std::collections::HashMap<usize, usize> =
                    present.values().map(|(p, h)| (*p as usize, *h)).collect();
                t = t.rebuilt(|e| hashes[&(e as *const E as usize)]);
                assert_eq!((t.live(), t.tombstones()), (present.len(), 0));
                rebuilds += 1;
            }
            assert!(t.tombstones() * 8 <= t.capacity());
            assert!(t.longest_run() < t.capacity());
        }
        assert!(rebuilds > 0, "the churn made the table rebuild");
        for (_, (p, _)) in present {
            free(p);
        }
        for p in removed {
            free(p);
        }
    }
}
