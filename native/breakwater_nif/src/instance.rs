//! The node's one registry, and the owners of batches in flight.
//!
//! Invariant: a VM holds at most one [`Instance`], created by the first `init/1` and
//! alive until the VM exits; later `init/1` calls (an application restart) reconfigure
//! it and may not change what was allocated (the pool's geometry, the subject table's
//! capacity). A process-wide static is what lets the hot paths reach the registry with
//! one load, where a `persistent_term` lookup of a handle costs ~25 ns here (a third of
//! the budget of `check_backpressure/1`).
//!
//! Batches in flight are owned by the process that drained them. The first drain by a
//! process monitors it (through the [`Watch`] resource); when it dies, every batch it
//! still holds goes back to its spool. Monitored owners are removed when they go
//! down, so the table is bounded by the processes alive.

use breakwater_core::clock::MonotonicClock;
use breakwater_core::registry::{Registry, RegistryConfig};
use breakwater_core::store::StoreConfig;
use breakwater_core::subject::Subject;
use parking_lot::Mutex;
use rustler::{Env, LocalPid, Monitor, Resource, ResourceArc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A process holding batches: its spool owner id and the names of the subjects it
/// drained (names, not references: a subject may be removed between calls, and the
/// registry's references live only for one call).
struct Owner {
    id: u64,
    subjects: Vec<Box<[u8]>>,
}

/// The registry and the batch owners.
pub struct Instance {
    /// Every subject and the pool.
    pub registry: Registry<MonotonicClock>,
    owners: Mutex<BTreeMap<LocalPid, Owner>>,
    next_owner: AtomicU64,
}

static INSTANCE: OnceLock<Instance> = OnceLock::new();
static WATCH: OnceLock<ResourceArc<Watch>> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The instance, if `init/1` has run.
#[inline]
pub fn get() -> Option<&'static Instance> {
    INSTANCE.get()
}

/// Creates the instance from `config`, opening (and recovering) the spool `spool`
/// describes, or reconfigures the existing one. The pool's geometry and the spool's
/// directory, durability and owner cannot change once opened, nor `max_subjects` grow
/// past the table. `reclaim_grace_ms`, when given, sets how long removed subjects are
/// kept before they are freed. Returns whether this call created the instance.
/// Blocking file I/O when it does (recovery): called on a dirty scheduler.
pub fn init(
    config: RegistryConfig,
    reclaim_grace_ms: Option<u64>,
    spool: Option<StoreConfig>,
) -> Result<bool, Vec<(&'static str, String)>> {
    let _serialised = INIT.lock();
    let errors = |e: Vec<breakwater_core::policy::PolicyError>| {
        e.into_iter()
            .map(|e| (e.key, e.expected))
            .collect::<Vec<_>>()
    };
    if let Some(i) = INSTANCE.get() {
        let pool = *i.registry.pool().config();
        if pool != config.pool {
            return Err(vec![(
                "ring_pool",
                format!(
                    "the geometry this node allocated at first start ({pool:?}); changing it needs a node restart"
                ),
            )]);
        }
        let open = i.registry.store().config();
        if let Some(spool) = &spool {
            if open.dir != spool.dir
                || open.durability != spool.durability
                || open.owner != spool.owner
            {
                return Err(vec![(
                    "spool_dir",
                    format!(
                        "the spool this node opened at first start ({:?}, {:?}); changing \
                         spool_dir, durability or the spool owner needs a node restart",
                        open.dir, open.durability
                    ),
                )]);
            }
        }
        i.registry
            .reconfigure(config.max_subjects, config.default_policy)
            .map_err(errors)?;
        if let Some(spool) = spool {
            i.registry.store().set_disk_max_bytes(spool.disk_max_bytes);
        }
        if let Some(ms) = reclaim_grace_ms {
            i.registry.set_reclaim_grace_ms(ms);
        }
        return Ok(false);
    }
    let registry =
        Registry::open(config, spool.unwrap_or_default(), MonotonicClock::new()).map_err(errors)?;
    if let Some(ms) = reclaim_grace_ms {
        registry.set_reclaim_grace_ms(ms);
    }
    let _ = INSTANCE.set(Instance {
        registry,
        owners: Mutex::new(BTreeMap::new()),
        next_owner: AtomicU64::new(1),
    });
    Ok(true)
}

impl Instance {
    /// The spool owner id of `pid` for batches of `subject`, monitoring `pid` on first
    /// sight. `None` when `pid` is already dead (it could not be monitored, so it must
    /// not be handed a batch).
    pub fn owner(&'static self, env: Env, pid: &LocalPid, subject: &Subject) -> Option<u64> {
        let mut owners = self.owners.lock();
        if let Some(o) = owners.get_mut(pid) {
            if !o.subjects.iter().any(|s| **s == *subject.name()) {
                o.subjects.push(subject.name().into());
            }
            return Some(o.id);
        }
        let watch = WATCH.get_or_init(|| ResourceArc::new(Watch));
        watch.monitor(Some(env), pid)?;
        let id = self.next_owner.fetch_add(1, Ordering::Relaxed);
        owners.insert(
            *pid,
            Owner {
                id,
                subjects: vec![subject.name().into()],
            },
        );
        Some(id)
    }

    fn owner_down(&self, pid: &LocalPid) {
        let owner = self.owners.lock().remove(pid);
        if let Some(o) = owner {
            for name in o.subjects {
                // A subject removed since holds no batch (removal needs none in flight).
                if let Some(s) = self.registry.get(&name) {
                    s.nack_owner(o.id);
                }
            }
        }
    }

    /// Processes currently monitored as batch owners.
    pub fn owners(&self) -> usize {
        self.owners.lock().len()
    }
}

/// The resource whose monitors watch batch owners.
pub struct Watch;

#[rustler::resource_impl]
impl Resource for Watch {
    const IMPLEMENTS_DOWN: bool = true;

    fn down<'a>(&'a self, _env: Env<'a>, pid: LocalPid, _monitor: Monitor) {
        if let Some(i) = get() {
            i.owner_down(&pid);
        }
    }
}
