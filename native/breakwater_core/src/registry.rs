//! The registry: every subject, found by name without a lock, and the spool's store
//! (the ring pool and the spool directory).
//!
//! Subjects live in a [`NameTable`]: lookups are a hash, a few `Acquire` loads and a
//! name comparison, with no lock, no reference count and no write to shared memory —
//! what the hot paths need to scale with schedulers. Creations and removals take one
//! mutex (`changes`), so the table sees one change at a time.
//!
//! # Rooms
//!
//! Subjects come in two classes ([`Class`]), each capped at `max_subjects`: *dynamic*
//! subjects, created by the first call that writes whatever name a caller passes, and
//! *configured* ones, named by an operator. A flood of dynamic subjects fills only the
//! dynamic room, so configuring a subject always finds room. Removed subjects count
//! against their room until their memory is reclaimed, so memory stays bounded by
//! `2 × max_subjects` subjects whatever the rate of creations and removals. The table
//! has four slots per subject of both rooms (at most half of them live).
//!
//! # Removal and reclamation
//!
//! [`Registry::remove`] takes a subject out of the table (a tombstone), after
//! [`Subject::prepare_removal`] has checked, under the spool's locks, that nothing is
//! spooled and closed the subject so that nothing can be spooled into it any more. The
//! subject itself is not freed: a lookup that loaded its pointer just before may still
//! be using it. It is retired ([`crate::retire`]) and dropped after a grace period
//! (`reclaim_grace_ms`) by [`Registry::reclaim`], which the timer calls. When
//! tombstones pass an eighth of the slots, the table is copied (live entries only) into
//! a fresh one, which replaces it; the old table is retired the same way.
//!
//! Invariant: a pointer a lookup can load (from the current table or a retired one) is
//! to a subject that is in the table or retired, never to one that was dropped; a
//! retired subject or table is dropped only after the grace period, far longer than any
//! NIF call, the only place lookups' references live.
//!
//! Memory ordering: a subject or table is fully built before its pointer is published
//! with `Release` (a slot store, or the table pointer swap); readers load with
//! `Acquire`. Room counts are changed under `changes` and read `Relaxed` as statistics.

use crate::clock::Clock;
use crate::lifecycle::Class;
use crate::policy::{Policy, PolicyError, PoolConfig};
use crate::pool::RingPool;
use crate::recovery;
use crate::retire::Retired;
use crate::store::{Store, StoreConfig};
use crate::subject::{SignalReport, Spooled, Subject};
use crate::table::{NameTable, Named};
use crate::transition::{Transition, Transitions};
use parking_lot::Mutex;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Longest subject name, in bytes.
pub const MAX_NAME_BYTES: usize = 1_024;

/// Default time a removed subject's memory is kept before it is freed.
pub const DEFAULT_RECLAIM_GRACE_MS: u64 = 10_000;

/// Why a subject could not be found or created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// The subject's room (dynamic or configured) is full.
    TooManySubjects {
        /// The cap.
        max: usize,
    },
    /// The name is empty or longer than [`MAX_NAME_BYTES`].
    BadName,
}

/// Why a subject could not be removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoveError {
    /// No subject has that name.
    Unknown,
    /// Events wait in its spool or a batch is in flight.
    Spooled,
}

/// What a registry is built from.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryConfig {
    /// Most subjects of each room; the table is sized for it and it may later be
    /// lowered, not raised past the table's capacity.
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

impl Named for Subject {
    fn name(&self) -> &[u8] {
        Subject::name(self)
    }
}

/// Live and retired subjects of one room.
#[derive(Default)]
struct Room {
    live: AtomicUsize,
    retired: AtomicUsize,
}

impl Room {
    fn used(&self) -> usize {
        self.live.load(Ordering::Relaxed) + self.retired.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicUsize, delta: isize) {
        if delta >= 0 {
            counter.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            counter.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

/// What a removal left behind, held (for its drop) until its grace period is over.
enum Leftover {
    Subject {
        class: Class,
        _subject: Box<Subject>,
    },
    Table {
        _table: Box<NameTable<Subject>>,
    },
}

/// Counts of the registry, for statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// Live dynamic subjects.
    pub dynamic: usize,
    /// Live configured subjects.
    pub configured: usize,
    /// Removed subjects whose memory waits for its grace period.
    pub retired: usize,
    /// Tombstones in the table.
    pub tombstones: usize,
    /// Table rebuilds so far.
    pub rebuilds: u64,
    /// Subjects removed so far (by `remove` or idle expiry).
    pub removed: u64,
}

/// Every subject and the store they share.
pub struct Registry<C: Clock> {
    clock: C,
    store: Store,
    table: AtomicPtr<NameTable<Subject>>,
    table_capacity: usize,
    max_subjects: AtomicUsize,
    dynamic: Room,
    configured: Room,
    default_policy: Mutex<Arc<Policy>>,
    changes: Mutex<()>,
    retired: Retired<Leftover>,
    grace_origin: Instant,
    reclaim_grace_ms: AtomicU64,
    rebuilds: AtomicU64,
    removed: AtomicU64,
    signal_cursor: AtomicUsize,
}

impl<C: Clock> Registry<C> {
    /// Builds a registry (validating `config`) and its whole pool, in memory (no spool
    /// directory).
    pub fn new(config: RegistryConfig, clock: C) -> Result<Self, Vec<PolicyError>> {
        config.validate()?;
        let store = Store::memory(config.pool);
        Ok(Self::with_store(config, store, clock))
    }

    /// Builds a registry (validating `config`) on the spool `spool` describes, and
    /// recovers what its directory holds: the subjects found are created with the
    /// default policy and get their spools back. What recovery had to say is in the
    /// store's reports ([`Store::take_reports`]). Blocking file I/O: call it from a
    /// dirty scheduler or a thread of its own.
    pub fn open(
        config: RegistryConfig,
        spool: StoreConfig,
        clock: C,
    ) -> Result<Self, Vec<PolicyError>> {
        config.validate()?;
        let opened = recovery::open(config.pool, spool);
        let reg = Self::with_store(config, opened.store, clock);
        for (name, recovered) in opened.subjects {
            match reg.subject(&name) {
                Ok(s) => s.restore(recovered),
                Err(e) => reg.store.report(crate::store::Report {
                    level: crate::store::Level::Error,
                    kind: "skipped",
                    subject: Some(name.clone()),
                    message: format!(
                        "breakwater spool of {:?} not recovered ({e:?}): its files are left \
                         as they are",
                        String::from_utf8_lossy(&name)
                    ),
                }),
            }
        }
        Ok(reg)
    }

    fn with_store(config: RegistryConfig, store: Store, clock: C) -> Self {
        // Two rooms of `max_subjects`, at most half the slots live.
        let capacity = (config.max_subjects * 4).next_power_of_two().max(16);
        let table = Box::new(NameTable::new(capacity));
        Self {
            clock,
            store,
            table: AtomicPtr::new(Box::into_raw(table)),
            table_capacity: capacity,
            max_subjects: AtomicUsize::new(config.max_subjects),
            dynamic: Room::default(),
            configured: Room::default(),
            default_policy: Mutex::new(Arc::new(config.default_policy)),
            changes: Mutex::new(()),
            retired: Retired::default(),
            grace_origin: Instant::now(),
            reclaim_grace_ms: AtomicU64::new(DEFAULT_RECLAIM_GRACE_MS),
            rebuilds: AtomicU64::new(0),
            removed: AtomicU64::new(0),
            signal_cursor: AtomicUsize::new(0),
        }
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The ring pool.
    pub fn pool(&self) -> &RingPool {
        self.store.pool()
    }

    /// The spool's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes every subject's spool files to disk (`fsync` durability; a process of its
    /// own calls this, never a router). Returns the first error.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut first = None;
        for s in self.subjects() {
            if let Err(e) = s.sync() {
                first.get_or_insert(e);
            }
        }
        if let Some(d) = self.store.dir() {
            if let Err(e) = d.sync() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    #[inline]
    fn table(&self) -> &NameTable<Subject> {
        // SAFETY: the table pointer always holds a table built before its `Release`
        // store; a replaced table is retired, not freed, for the grace period, and
        // references to it live no longer than a NIF call (see the module doc).
        unsafe { &*self.table.load(Ordering::Acquire) }
    }

    /// Subjects that exist (both rooms).
    pub fn len(&self) -> usize {
        self.dynamic.live.load(Ordering::Relaxed) + self.configured.live.load(Ordering::Relaxed)
    }

    /// True when no subject exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cap of each room.
    pub fn max_subjects(&self) -> usize {
        self.max_subjects.load(Ordering::Relaxed)
    }

    /// The largest `max_subjects` this registry's table can take.
    pub fn capacity(&self) -> usize {
        self.table_capacity / 4
    }

    /// Counts by room, retired subjects, tombstones.
    pub fn stats(&self) -> RegistryStats {
        RegistryStats {
            dynamic: self.dynamic.live.load(Ordering::Relaxed),
            configured: self.configured.live.load(Ordering::Relaxed),
            retired: self.dynamic.retired.load(Ordering::Relaxed)
                + self.configured.retired.load(Ordering::Relaxed),
            tombstones: self.table().tombstones(),
            rebuilds: self.rebuilds.load(Ordering::Relaxed),
            removed: self.removed.load(Ordering::Relaxed),
        }
    }

    /// The policy subjects get on first use.
    pub fn default_policy(&self) -> Arc<Policy> {
        Arc::clone(&self.default_policy.lock())
    }

    /// How long a removed subject's memory is kept before it is freed (at least as long
    /// as any NIF call may hold a reference to it; see [`crate::retire`]).
    pub fn set_reclaim_grace_ms(&self, ms: u64) {
        self.reclaim_grace_ms.store(ms, Ordering::Relaxed);
    }

    /// Changes the cap of each room (at most [`Registry::capacity`]) and the default
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
        // SAFETY: every subject stored in a table is kept alive (in it, or retired)
        // beyond the life of a NIF call's reference (see the module doc).
        unsafe { self.table().get(name, Self::hash(name)) }
    }

    /// The subject named `name`, created (dynamic, default policy) if it does not exist.
    #[inline]
    pub fn subject(&self, name: &[u8]) -> Result<&Subject, RegistryError> {
        match self.get(name) {
            Some(s) => Ok(s),
            None => self.create(name, None, Class::Dynamic),
        }
    }

    /// The subject named `name`, created dynamic with `policy` if it does not exist (an
    /// existing subject keeps its policy).
    pub fn subject_with(&self, name: &[u8], policy: Policy) -> Result<&Subject, RegistryError> {
        match self.get(name) {
            Some(s) => Ok(s),
            None => self.create(name, Some(policy), Class::Dynamic),
        }
    }

    /// The subject named `name` as a configured subject: created in the configured room
    /// (default policy) if it does not exist, moved there if it is dynamic.
    pub fn configured(&self, name: &[u8]) -> Result<&Subject, RegistryError> {
        if let Some(s) = self.get(name) {
            if s.lifecycle().class() == Class::Configured {
                return Ok(s);
            }
        }
        self.create(name, None, Class::Configured)
    }

    /// Moves a configured subject back to the dynamic room (its policy is the caller's
    /// business). The dynamic room may go over its cap by this: then no dynamic subject
    /// is created until it is below again.
    pub fn unconfigure(&self, name: &[u8]) -> bool {
        let _serialised = self.changes.lock();
        match self.get(name) {
            Some(s) if s.lifecycle().class() == Class::Configured => {
                s.lifecycle().set_class(Class::Dynamic);
                Room::add(&self.configured.live, -1);
                Room::add(&self.dynamic.live, 1);
                true
            }
            _ => false,
        }
    }

    fn room(&self, class: Class) -> &Room {
        match class {
            Class::Dynamic => &self.dynamic,
            Class::Configured => &self.configured,
        }
    }

    #[cold]
    fn create(
        &self,
        name: &[u8],
        policy: Option<Policy>,
        class: Class,
    ) -> Result<&Subject, RegistryError> {
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(RegistryError::BadName);
        }
        let _serialised = self.changes.lock();
        let max = self.max_subjects();
        if let Some(s) = self.get(name) {
            if class == Class::Dynamic || s.lifecycle().class() == Class::Configured {
                return Ok(s);
            }
            // A dynamic subject becomes configured: it changes rooms.
            if self.configured.used() >= max {
                return Err(RegistryError::TooManySubjects { max });
            }
            s.lifecycle().set_class(Class::Configured);
            Room::add(&self.dynamic.live, -1);
            Room::add(&self.configured.live, 1);
            return Ok(s);
        }
        let room = self.room(class);
        if room.used() >= max {
            return Err(RegistryError::TooManySubjects { max });
        }
        let policy = policy.unwrap_or_else(|| (*self.default_policy()).clone());
        let subject = Box::new(Subject::new(name, policy, self.pool().config().segments));
        subject.lifecycle().set_class(class);
        subject.lifecycle().start(self.clock.now_ms());
        let p = Box::into_raw(subject);
        self.table().insert(p, Self::hash(name));
        Room::add(&room.live, 1);
        // SAFETY: just stored; kept alive as the module doc says.
        Ok(unsafe { &*p })
    }

    /// Removes the subject named `name`: refused while events are spooled (memory or
    /// disk) or a batch is in flight. Its memory is freed by [`Registry::reclaim`] once
    /// the grace period is over.
    pub fn remove(&self, name: &[u8]) -> Result<(), RemoveError> {
        let _serialised = self.changes.lock();
        let s = self.get(name).ok_or(RemoveError::Unknown)?;
        s.prepare_removal(&self.store)
            .map_err(|Spooled::Events| RemoveError::Spooled)?;
        self.unlink(name);
        Ok(())
    }

    /// Takes the (prepared) subject `name` out of the table and retires it; the caller
    /// holds `changes`.
    fn unlink(&self, name: &[u8]) {
        let Some(p) = self.table().remove(name, Self::hash(name)) else {
            return;
        };
        // SAFETY: `p` came from `Box::into_raw` in `create`, and leaves the table here,
        // under `changes`, exactly once; retiring it keeps it alive for the grace period.
        let subject = unsafe { Box::from_raw(p) };
        let class = subject.lifecycle().class();
        let room = self.room(class);
        Room::add(&room.live, -1);
        Room::add(&room.retired, 1);
        self.removed.fetch_add(1, Ordering::Relaxed);
        self.retired.retire(
            self.grace_now_ms(),
            Leftover::Subject {
                class,
                _subject: subject,
            },
        );
        if self.table().wants_rebuild() {
            self.rebuild();
        }
    }

    /// Copies the live subjects into a fresh table now, which replaces the current one
    /// (retired for the grace period). The registry does it by itself when tombstones
    /// pile up; tests call it to exercise the swap under concurrent lookups.
    pub fn rebuild_table(&self) {
        let _serialised = self.changes.lock();
        self.rebuild();
    }

    /// Replaces the table by a copy of its live entries; the caller holds `changes`.
    fn rebuild(&self) {
        let fresh = Box::new(self.table().rebuilt(|s| Self::hash(s.name())));
        let old = self.table.swap(Box::into_raw(fresh), Ordering::AcqRel);
        // SAFETY: `old` came from `Box::into_raw` (in `new` or an earlier rebuild) and
        // left the table pointer here, under `changes`, exactly once.
        let old = unsafe { Box::from_raw(old) };
        self.retired
            .retire(self.grace_now_ms(), Leftover::Table { _table: old });
        self.rebuilds.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes every dynamic subject that has been idle (nothing written to it) for at
    /// least `idle_ms` by the registry's clock, rests (closed breaker, normal
    /// backpressure, enabled), has nothing spooled and is not kept by `keep`; returns
    /// their names. Also notes every subject's activity, which is what measures idleness:
    /// call it regularly (the timer does).
    pub fn expire_idle(&self, idle_ms: u64, keep: impl Fn(&[u8]) -> bool) -> Vec<Box<[u8]>> {
        let now = self.clock.now_ms();
        let due: Vec<Box<[u8]>> = self
            .subjects()
            .filter(|s| {
                let idle = s.lifecycle().observe(s.activity(), now);
                idle >= idle_ms
                    && s.lifecycle().class() == Class::Dynamic
                    && s.word().is_quiet()
                    && !keep(s.name())
            })
            .map(|s| Box::from(s.name()))
            .collect();
        let mut removed = Vec::with_capacity(due.len());
        for name in due {
            let _serialised = self.changes.lock();
            // Looked up again under the lock: it may have changed meanwhile.
            let Some(s) = self.get(&name) else { continue };
            if s.lifecycle().class() != Class::Dynamic || !s.word().is_quiet() {
                continue;
            }
            if s.prepare_removal(&self.store).is_ok() {
                self.unlink(&name);
                removed.push(name);
            }
        }
        removed
    }

    /// Frees what removals retired at least the grace period ago. Returns how many
    /// subjects were freed.
    pub fn reclaim(&self) -> usize {
        let grace = self.reclaim_grace_ms.load(Ordering::Relaxed);
        let mut subjects = 0;
        self.retired.reclaim(self.grace_now_ms(), grace, |left| {
            if let Leftover::Subject { class, .. } = left {
                // Under `changes`: room counts change only there.
                let _serialised = self.changes.lock();
                Room::add(&self.room(*class).retired, -1);
                subjects += 1;
            }
        });
        subjects
    }

    /// Milliseconds of the real monotonic clock (never the clock tests move).
    fn grace_now_ms(&self) -> u64 {
        self.grace_origin.elapsed().as_millis() as u64
    }

    /// Every subject, in table order.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        // SAFETY: as in `get`.
        self.table().entries().map(|p| unsafe { &*p })
    }

    /// A complete visit of the timer to every subject; transitions go to `out` with
    /// their subject. [`Registry::tick_reporting`] without reports or budget.
    pub fn tick<'a>(&'a self, out: &mut Vec<(&'a Subject, Transition)>) {
        self.tick_reporting(out, None, false);
    }

    /// The timer's visit: the state rules of every subject ([`Subject::tick_state`]),
    /// then the signals' upkeep ([`Subject::tick_signals`], which costs a few loads for
    /// a subject with nothing to watch). With `budgeted`, the upkeep stops after
    /// [`SIGNAL_BUDGET`] and the next visit goes on from there (round robin), so that a
    /// periodic visit returns in well under a millisecond however many subjects are
    /// busy; without, it visits every subject (an explicit visit: tests, operators).
    /// Transitions go to `out` with their subject; with `reports`, the signal values of
    /// each visited subject that has something to tell ([`SignalReport::is_notable`]).
    pub fn tick_reporting<'a>(
        &'a self,
        out: &mut Vec<(&'a Subject, Transition)>,
        mut reports: Option<&mut Vec<(&'a Subject, SignalReport)>>,
        budgeted: bool,
    ) {
        for s in self.subjects() {
            let mut t = Transitions::new();
            s.tick_state(&self.store, &self.clock, &mut t);
            out.extend(t.iter().map(|t| (s, *t)));
        }
        // Round robin over the table's order: from where the last visit stopped, then
        // those before it (removals and rebuilds move subjects around; a subject visited
        // twice or once late is all that costs).
        let start = self.signal_cursor.load(Ordering::Relaxed);
        let began = Instant::now();
        let mut visited = 0usize;
        let mut stopped_at = None;
        let order = self
            .subjects()
            .enumerate()
            .skip(start)
            .chain(self.subjects().enumerate().take(start));
        for (i, s) in order {
            let mut t = Transitions::new();
            let report = s.tick_signals(&self.clock, &mut t);
            out.extend(t.iter().map(|t| (s, *t)));
            if let (Some(r), Some(reports)) = (report, reports.as_deref_mut()) {
                if r.is_notable() {
                    reports.push((s, r));
                }
            }
            visited += 1;
            if budgeted && visited % 32 == 0 && began.elapsed() >= SIGNAL_BUDGET {
                stopped_at = Some(i + 1);
                break;
            }
        }
        if let Some(next) = stopped_at {
            self.signal_cursor.store(next, Ordering::Relaxed);
        }
    }
}

/// Longest a timer visit spends on the signals' upkeep (checked every 32 subjects).
pub const SIGNAL_BUDGET: std::time::Duration = std::time::Duration::from_micros(250);

impl<C: Clock> Drop for Registry<C> {
    fn drop(&mut self) {
        // `&mut self`: no reference into the table is alive, so everything can go now.
        let table = std::mem::replace(self.table.get_mut(), std::ptr::null_mut());
        // SAFETY: the table pointer came from `Box::into_raw`; its live entries came from
        // `Box::into_raw` in `create` and are owned by it.
        let table = unsafe { Box::from_raw(table) };
        for p in table.entries() {
            drop(unsafe { Box::from_raw(p) });
        }
        self.retired.reclaim(u64::MAX, 0, |_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn registry(max: usize) -> Registry<ManualClock> {
        let r = Registry::new(
            RegistryConfig {
                max_subjects: max,
                ..RegistryConfig::default()
            },
            ManualClock::default(),
        )
        .unwrap();
        r.set_reclaim_grace_ms(0);
        r
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
    fn configured_subjects_have_a_room_no_flood_can_take() {
        let r = registry(3);
        for i in 0..10 {
            let _ = r.subject(format!("junk{i}").as_bytes());
        }
        assert_eq!(r.stats().dynamic, 3);
        let legit = r.configured(b"legit").unwrap();
        assert_eq!(legit.lifecycle().class(), Class::Configured);
        // A dynamic subject moves rooms when configured, freeing a dynamic place.
        r.configured(b"junk0").unwrap();
        assert_eq!((r.stats().dynamic, r.stats().configured), (2, 2));
        assert!(r.subject(b"new").is_ok());
        r.configured(b"c3").unwrap();
        assert_eq!(
            r.configured(b"c4").err(),
            Some(RegistryError::TooManySubjects { max: 3 })
        );
        assert!(r.unconfigure(b"c3"));
        assert_eq!(r.stats().configured, 2);
        assert_eq!(r.get(b"c3").unwrap().lifecycle().class(), Class::Dynamic);
    }

    #[test]
    fn removal_frees_the_room_after_the_grace_period() {
        let r = registry(2);
        r.set_reclaim_grace_ms(60_000);
        r.subject(b"a").unwrap();
        r.subject(b"b").unwrap();
        assert_eq!(r.remove(b"zz"), Err(RemoveError::Unknown));
        assert_eq!(r.remove(b"a"), Ok(()));
        assert!(r.get(b"a").is_none());
        assert_eq!(r.remove(b"a"), Err(RemoveError::Unknown));
        // Retired, not freed: the room is still taken.
        assert_eq!(r.stats().retired, 1);
        assert!(r.subject(b"c").is_err());
        assert_eq!(r.reclaim(), 0);
        r.set_reclaim_grace_ms(0);
        assert_eq!(r.reclaim(), 1);
        assert_eq!(r.stats().retired, 0);
        assert!(r.subject(b"c").is_ok());
        assert_eq!(r.stats().removed, 1);
    }

    #[test]
    fn removal_is_refused_while_events_are_spooled_and_closes_the_spool() {
        let r = registry(4);
        let s = r.subject(b"s").unwrap();
        let mut t = Transitions::new();
        s.enqueue(r.store(), b"e", r.clock(), &mut t).unwrap();
        assert_eq!(r.remove(b"s"), Err(RemoveError::Spooled));
        let crate::spool::Taken::Batch(batch, ()) =
            s.drain(r.store(), 10, 1 << 20, 1, r.clock(), &mut t, |_, _| ())
        else {
            panic!("a batch")
        };
        assert_eq!(r.remove(b"s"), Err(RemoveError::Spooled), "in flight");
        s.ack(r.store(), batch.id, r.clock(), &mut t).unwrap();
        assert_eq!(
            r.pool().free_segments(),
            r.pool().config().segments as usize
        );
        assert_eq!(r.remove(b"s"), Ok(()));
        // A store on the old reference is refused, not lost.
        assert_eq!(
            s.enqueue(r.store(), b"late", r.clock(), &mut t),
            Err(crate::subject::EnqueueError::Removed)
        );
        // The name gets a fresh subject.
        let fresh = r.subject(b"s").unwrap();
        assert!(!std::ptr::eq(fresh, s));
        assert_eq!(fresh.spool_stats().enqueued_events, 0);
    }

    #[test]
    fn idle_dynamic_subjects_expire_configured_and_busy_ones_stay() {
        let r = registry(10);
        let mut t = Transitions::new();
        r.subject(b"idle").unwrap();
        r.subject(b"kept").unwrap();
        r.configured(b"configured").unwrap();
        let busy = r.subject(b"busy").unwrap();
        let spooled = r.subject(b"spooled").unwrap();
        spooled.enqueue(r.store(), b"e", r.clock(), &mut t).unwrap();
        let open = r.subject(b"open").unwrap();
        open.force_open(r.clock(), &mut t);
        assert!(
            r.expire_idle(1_000, |_| false).is_empty(),
            "nothing idle yet"
        );
        for _ in 0..3 {
            r.clock().advance(600);
            busy.admit(5, r.clock(), &mut t);
            let mut gone = r.expire_idle(1_000, |n| n == b"kept");
            gone.sort();
            if !gone.is_empty() {
                assert_eq!(gone, vec![Box::from(&b"idle"[..])]);
            }
        }
        assert!(r.get(b"idle").is_none());
        for name in [&b"kept"[..], b"configured", b"busy", b"spooled", b"open"] {
            assert!(r.get(name).is_some(), "{}", String::from_utf8_lossy(name));
        }
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
    fn churn_rebuilds_the_table_and_keeps_every_subject() {
        let r = registry(64);
        let mut live = std::collections::BTreeSet::new();
        for round in 0..200u32 {
            for i in 0..40u32 {
                let name = format!("s{}", round * 40 + i);
                r.subject(name.as_bytes()).unwrap();
                live.insert(name);
            }
            let gone: Vec<String> = live.iter().take(40).cloned().collect();
            for name in gone {
                r.remove(name.as_bytes()).unwrap();
                live.remove(&name);
            }
            r.reclaim();
            for name in &live {
                assert!(r.get(name.as_bytes()).is_some());
            }
            assert!(r.table().tombstones() * 8 <= r.table().capacity());
            assert!(r.table().longest_run() < r.table().capacity() / 2);
            if round % 50 == 0 {
                r.rebuild_table();
                assert_eq!(r.table().tombstones(), 0);
            }
        }
        assert!(r.stats().rebuilds >= 4);
        r.reclaim();
        assert_eq!(r.stats().retired, 0);
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
