//! The registry: every subject, found by name without a lock, and the ring pool.
//!
//! Invariant: subjects are never removed. The table is an open-addressing array of
//! `AtomicPtr<Subject>` sized at creation to at least twice `max_subjects` (so probes
//! stay short and an insert always finds a slot); a slot goes from null to a subject
//! once and never changes again. So a lookup is a hash of the name, a few `Acquire`
//! loads and one byte comparison, with no lock, no reference count and no write to
//! shared memory — the property the hot path needs to scale with schedulers. Inserts
//! are serialised by a mutex; the number of subjects is capped by `max_subjects`, so
//! nothing grows without bound from input.
//!
//! This is written here rather than taken from a concurrent map crate because the maps
//! on crates.io (dashmap, papaya, ...) support removal and pay for it on every read (a
//! shard read lock or an epoch pin); an insert-only table of immortal entries needs
//! neither.
//!
//! Memory ordering: a subject is fully built before its pointer is stored with
//! `Release`; readers load with `Acquire` and so see it whole.

use crate::clock::Clock;
use crate::policy::{Policy, PolicyError, PoolConfig};
use crate::pool::RingPool;
use crate::subject::Subject;
use crate::transition::{Transition, Transitions};
use parking_lot::Mutex;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest subject name, in bytes.
pub const MAX_NAME_BYTES: usize = 1_024;

/// Why a subject could not be found or created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// `max_subjects` subjects exist already.
    TooManySubjects {
        /// The cap.
        max: usize,
    },
    /// The name is empty or longer than [`MAX_NAME_BYTES`].
    BadName,
}

/// What a registry is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryConfig {
    /// Most subjects; the table is sized for it and it may later be lowered, not raised
    /// past the table's capacity.
    pub max_subjects: usize,
    /// The ring pool's geometry.
    pub pool: PoolConfig,
    /// The policy of subjects created on first use.
    pub default_policy: Policy,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            max_subjects: 10_000,
            pool: PoolConfig::default(),
            default_policy: Policy::default(),
        }
    }
}

/// Largest `max_subjects` a registry accepts.
pub const MAX_SUBJECTS_LIMIT: usize = 1 << 20;

impl RegistryConfig {
    /// Every rule this configuration breaks.
    pub fn validate(&self) -> Result<(), Vec<PolicyError>> {
        let mut errors = Vec::new();
        if !(1..=MAX_SUBJECTS_LIMIT).contains(&self.max_subjects) {
            errors.push(PolicyError {
                key: "max_subjects",
                expected: format!("an integer in 1..{MAX_SUBJECTS_LIMIT}"),
            });
        }
        if let Err(e) = self.pool.validate() {
            errors.extend(e);
        }
        if let Err(e) = self.default_policy.validate() {
            errors.extend(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Every subject and the pool they share.
pub struct Registry<C: Clock> {
    clock: C,
    pool: RingPool,
    slots: Box<[AtomicPtr<Subject>]>,
    mask: usize,
    count: AtomicUsize,
    max_subjects: AtomicUsize,
    default_policy: Mutex<Arc<Policy>>,
    insert_lock: Mutex<()>,
}

// SAFETY-free: `AtomicPtr<Subject>` is Send + Sync, and every pointer stored is a
// `Box<Subject>` owned by the registry until drop.

impl<C: Clock> Registry<C> {
    /// Builds a registry (validating `config`) and its whole pool.
    pub fn new(config: RegistryConfig, clock: C) -> Result<Self, Vec<PolicyError>> {
        config.validate()?;
        let capacity = (config.max_subjects * 2).next_power_of_two().max(16);
        Ok(Self {
            clock,
            pool: RingPool::new(config.pool),
            slots: (0..capacity).map(|_| AtomicPtr::default()).collect(),
            mask: capacity - 1,
            count: AtomicUsize::new(0),
            max_subjects: AtomicUsize::new(config.max_subjects),
            default_policy: Mutex::new(Arc::new(config.default_policy)),
            insert_lock: Mutex::new(()),
        })
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The ring pool.
    pub fn pool(&self) -> &RingPool {
        &self.pool
    }

    /// Subjects that exist.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// True when no subject exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap on subjects.
    pub fn max_subjects(&self) -> usize {
        self.max_subjects.load(Ordering::Relaxed)
    }

    /// The largest `max_subjects` this registry's table can take.
    pub fn capacity(&self) -> usize {
        self.slots.len() / 2
    }

    /// The policy subjects get on first use.
    pub fn default_policy(&self) -> Arc<Policy> {
        Arc::clone(&self.default_policy.lock())
    }

    /// Changes the cap on subjects (at most [`Registry::capacity`]) and the default
    /// policy of subjects created from now on.
    pub fn reconfigure(
        &self,
        max_subjects: usize,
        default_policy: Policy,
    ) -> Result<(), Vec<PolicyError>> {
        let mut errors = default_policy.validate().err().unwrap_or_default();
        if !(1..=self.capacity()).contains(&max_subjects) {
            errors.push(PolicyError {
                key: "max_subjects",
                expected: format!(
                    "an integer in 1..{} (the table was sized when the node started)",
                    self.capacity()
                ),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        self.max_subjects.store(max_subjects, Ordering::Relaxed);
        *self.default_policy.lock() = Arc::new(default_policy);
        Ok(())
    }

    #[inline]
    fn hash(name: &[u8]) -> usize {
        rustc_hash::FxBuildHasher.hash_one(name) as usize
    }

    /// The subject named `name`, if it exists. Lock-free; writes nothing.
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<&Subject> {
        let mut i = Self::hash(name) & self.mask;
        loop {
            let p = self.slots[i].load(Ordering::Acquire);
            if p.is_null() {
                return None;
            }
            // SAFETY: non-null slots point at subjects the registry owns until drop, and
            // subjects are never removed, so the reference lives as long as `&self`.
            let s = unsafe { &*p };
            if same_name(s.name(), name) {
                return Some(s);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The subject named `name`, created with the default policy if it does not exist.
    #[inline]
    pub fn subject(&self, name: &[u8]) -> Result<&Subject, RegistryError> {
        match self.get(name) {
            Some(s) => Ok(s),
            None => self.create(name, None),
        }
    }

    /// The subject named `name`, created with `policy` if it does not exist (an existing
    /// subject keeps its policy).
    pub fn subject_with(&self, name: &[u8], policy: Policy) -> Result<&Subject, RegistryError> {
        match self.get(name) {
            Some(s) => Ok(s),
            None => self.create(name, Some(policy)),
        }
    }

    #[cold]
    fn create(&self, name: &[u8], policy: Option<Policy>) -> Result<&Subject, RegistryError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(RegistryError::BadName);
        }
        let _serialised = self.insert_lock.lock();
        if let Some(s) = self.get(name) {
            return Ok(s);
        }
        let max = self.max_subjects();
        if self.len() >= max {
            return Err(RegistryError::TooManySubjects { max });
        }
        let policy = policy.unwrap_or_else(|| (*self.default_policy()).clone());
        let subject = Box::new(Subject::new(name, policy, self.pool.config().segments));
        let mut i = Self::hash(name) & self.mask;
        while !self.slots[i].load(Ordering::Acquire).is_null() {
            i = (i + 1) & self.mask;
        }
        let p = Box::into_raw(subject);
        self.slots[i].store(p, Ordering::Release);
        self.count.fetch_add(1, Ordering::Relaxed);
        // SAFETY: just stored; owned by the registry until drop.
        Ok(unsafe { &*p })
    }

    /// Every subject, in table order.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        self.slots.iter().filter_map(|slot| {
            let p = slot.load(Ordering::Acquire);
            // SAFETY: as in `get`.
            (!p.is_null()).then(|| unsafe { &*p })
        })
    }

    /// The timer's visit to every subject; transitions go to `out` with their subject.
    pub fn tick<'a>(&'a self, out: &mut Vec<(&'a Subject, Transition)>) {
        for s in self.subjects() {
            let mut t = Transitions::new();
            s.tick(&self.pool, &self.clock, &mut t);
            out.extend(t.iter().map(|t| (s, *t)));
        }
    }
}

/// `a == b`, without a call to `memcmp` for names of up to 16 bytes (most subject
/// names): two overlapping word loads compare them, a quarter of a lookup's time saved.
#[inline(always)]
fn same_name(a: &[u8], b: &[u8]) -> bool {
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

impl<C: Clock> Drop for Registry<C> {
    fn drop(&mut self) {
        for slot in self.slots.iter() {
            let p = slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: every non-null slot holds a pointer from `Box::into_raw`, and
                // `&mut self` means no reference into the table is alive.
                drop(unsafe { Box::from_raw(p) });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn registry(max: usize) -> Registry<ManualClock> {
        Registry::new(
            RegistryConfig {
                max_subjects: max,
                ..RegistryConfig::default()
            },
            ManualClock::default(),
        )
        .unwrap()
    }

    #[test]
    fn same_name_agrees_with_slice_equality() {
        // Every length around the word-load cases, differing at every position.
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
    fn creates_on_first_use_and_finds_again() {
        let r = registry(10);
        assert!(r.get(b"ledger").is_none());
        let a = r.subject(b"ledger").unwrap() as *const Subject;
        let b = r.subject(b"ledger").unwrap() as *const Subject;
        assert_eq!(a, b);
        assert_eq!(r.len(), 1);
        assert_eq!(r.subjects().count(), 1);
    }

    #[test]
    fn caps_subjects_and_rejects_bad_names() {
        let r = registry(3);
        for i in 0..3 {
            r.subject(format!("s{i}").as_bytes()).unwrap();
        }
        assert_eq!(
            r.subject(b"s3").err(),
            Some(RegistryError::TooManySubjects { max: 3 })
        );
        assert!(
            r.subject(b"s1").is_ok(),
            "existing subjects are still found"
        );
        assert_eq!(r.subject(b"").err(), Some(RegistryError::BadName));
        assert_eq!(
            r.subject(&[b'x'; MAX_NAME_BYTES + 1]).err(),
            Some(RegistryError::BadName)
        );
    }

    #[test]
    fn reconfigure_is_bounded_by_the_table() {
        let r = registry(10);
        assert!(r.reconfigure(r.capacity() + 1, Policy::default()).is_err());
        assert!(r.reconfigure(2, Policy::default()).is_ok());
        assert_eq!(r.max_subjects(), 2);
        let bad = Policy {
            warning_threshold: 0,
            ..Policy::default()
        };
        assert_eq!(
            r.reconfigure(5, bad).unwrap_err()[0].key,
            "warning_threshold"
        );
        assert_eq!(r.max_subjects(), 2, "a refused change changes nothing");
    }

    #[test]
    fn full_table_of_colliding_names_still_resolves() {
        let r = registry(1_000);
        for i in 0..1_000 {
            r.subject(format!("subject-{i}").as_bytes()).unwrap();
        }
        for i in 0..1_000 {
            let name = format!("subject-{i}");
            assert_eq!(r.get(name.as_bytes()).unwrap().name(), name.as_bytes());
        }
        assert!(r.get(b"subject-1000").is_none());
    }

    #[test]
    fn concurrent_creation_makes_each_subject_once() {
        let r = std::sync::Arc::new(registry(64));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    (0..64)
                        .map(|i| {
                            r.subject(format!("s{i}").as_bytes()).unwrap() as *const Subject
                                as usize
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let seen: Vec<Vec<usize>> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(r.len(), 64);
    }
}
