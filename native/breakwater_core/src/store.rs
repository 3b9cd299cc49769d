//! The store: the spool directory, its files, and what went wrong with them.
//!
//! ```text
//! spool_dir/
//!   LOCK                  flock'ed by the node using the directory (one at a time)
//!   EPOCH                 how many times a node started on it (orders runs' records)
//!   pool/000000.seg ...   the pool: one file per slot, mapped and reused for the life
//!                         of the node (segment.rs has the layout)
//!   overflow/<n>.seg      segments beyond the pool: made ahead of need by the reserve
//!                         (reserve.rs), mapped while written, read back with pread,
//!                         deleted once released
//!   meta/<n>.meta         one per subject that ever spooled: counters and cursors
//!                         (also made ahead of need by the reserve)
//! ```
//!
//! Every file is given its full size with `fallocate` before it is mapped, so a store
//! into a mapping can never find the disk full (which would be a `SIGBUS`, the end of
//! the VM): a file that cannot be allocated is refused up front, and the event that
//! needed it is refused with `spool_unavailable`.
//!
//! Durability ([`Durability`]): `Crash` (records are in the kernel's page cache when
//! `enqueue` returns, and survive the VM), `Fsync` (also written to disk every interval
//! by a process of its own, see [`crate::registry::Registry::sync`]), `Memory` (the pool
//! is anonymous memory; overflow and meta files are still files).
//!
//! Failures are reported, never silent: each becomes a [`Report`] (a log line for the
//! VM layer, taken with [`Store::take_reports`]) and, for the outage of a file
//! operation, one report when it starts and one when it clears ([`Store::failed`],
//! [`Store::succeeded`]); while it lasts, file creation is retried at most every
//! [`RETRY_MS`].

use crate::meta::{MetaFile, MetaHeader};
use crate::policy::PoolConfig;
use crate::pool::RingPool;
use crate::reserve::Reserve;
use crate::segment::{Geometry, Identity, Kind, Segment};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How long an outage of file operations refuses without trying again.
pub const RETRY_MS: u64 = 500;
/// Most reports kept between two [`Store::take_reports`] (more are counted only).
const MAX_REPORTS: usize = 1_000;

/// What survives what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash of the VM (records are in the page cache at `:ok`).
    Crash,
    /// Also written to disk at least every `interval_ms`.
    Fsync {
        /// The interval.
        interval_ms: u64,
    },
    /// The pool is memory only: a crash loses (and the next start counts) its events.
    Memory,
}

/// Where and how the spool keeps its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The spool directory; `None`: nothing on disk (memory only, no overflow files).
    pub dir: Option<PathBuf>,
    /// What survives what.
    pub durability: Durability,
    /// This node and application: written into every file, and the files of any other
    /// owner are left alone at recovery.
    pub owner: Vec<u8>,
    /// Other owners whose files recovery takes over.
    pub adopt: Vec<Vec<u8>>,
    /// Overflow bytes (files) a subject may hold.
    pub disk_max_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            dir: None,
            durability: Durability::Memory,
            owner: b"breakwater".to_vec(),
            adopt: Vec::new(),
            disk_max_bytes: 1 << 30,
        }
    }
}

/// How loud a report is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Worth knowing.
    Info,
    /// Something was lost, skipped or degraded.
    Warning,
    /// An outage: events are being refused.
    Error,
}

/// One thing for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// How loud.
    pub level: Level,
    /// A fixed name: `spool_unavailable`, `spool_available`, `corrupt`, `truncated`,
    /// `missing`, `memory`, `unreadable`, `foreign`, `recovered`, `skipped`.
    pub kind: &'static str,
    /// The subject concerned, if one.
    pub subject: Option<Vec<u8>>,
    /// The line.
    pub message: String,
}

struct Outage {
    since_ns: u64,
    refused: u64,
}

#[derive(Default)]
struct Reports {
    list: Vec<Report>,
    suppressed: u64,
}

/// The spool directory, locked.
pub struct SpoolDir {
    root: PathBuf,
    _lock: File,
}

impl SpoolDir {
    /// Creates (if needed) and locks `root`; fails if another node holds it.
    pub fn open(root: &Path) -> io::Result<Self> {
        for sub in ["pool", "overflow", "meta"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(root.join("LOCK"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                if e == rustix::io::Errno::WOULDBLOCK {
                    io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the directory is in use by another running node",
                    )
                } else {
                    io::Error::from(e)
                }
            },
        )?;
        Ok(Self {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of pool slot `slot`.
    pub fn pool_path(&self, slot: u32) -> PathBuf {
        self.root.join("pool").join(format!("{slot:06}.seg"))
    }

    /// Overflow file number `n`.
    pub fn overflow_path(&self, n: u64) -> PathBuf {
        Self::overflow_path_in(&self.root, n)
    }

    /// Meta file number `n`.
    pub fn meta_path(&self, n: u64) -> PathBuf {
        Self::meta_path_in(&self.root, n)
    }

    /// Overflow file number `n` of the directory at `root`.
    pub fn overflow_path_in(root: &Path, n: u64) -> PathBuf {
        root.join("overflow").join(format!("{n:016x}.seg"))
    }

    /// Meta file number `n` of the directory at `root`.
    pub fn meta_path_in(root: &Path, n: u64) -> PathBuf {
        root.join("meta").join(format!("{n:016x}.meta"))
    }

    /// Bumps and returns the epoch (at least `at_least`).
    pub fn next_epoch(&self, at_least: u32) -> io::Result<u32> {
        let path = self.root.join("EPOCH");
        let old = std::fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let epoch = old.max(at_least).saturating_add(1);
        let tmp = self.root.join("EPOCH.tmp");
        std::fs::write(&tmp, epoch.to_string())?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(epoch)
    }

    /// Creates `path` with `len` bytes allocated on disk (refused when the disk cannot
    /// hold them). Removes what it created on failure.
    pub fn create(path: &Path, len: u64) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        match allocate(&file, len) {
            Ok(()) => Ok(file),
            Err(e) => {
                drop(file);
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// `fsync`s the directories (new and removed files survive a power cut).
    pub fn sync(&self) -> io::Result<()> {
        for sub in ["pool", "overflow", "meta"] {
            File::open(self.root.join(sub))?.sync_all()?;
        }
        Ok(())
    }
}

/// Gives `file` `len` bytes on disk. `fallocate` where the filesystem has it; elsewhere
/// the bytes are written (zeros), which allocates them just as surely.
pub fn allocate(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            let zeros = vec![0u8; 64 * 1024];
            let mut at = 0u64;
            while at < len {
                let n = (len - at).min(zeros.len() as u64) as usize;
                let w = rustix::io::pwrite(file, &zeros[..n], at)?;
                at += w as u64;
            }
            file.sync_data()
        }
        Err(e) => Err(e.into()),
    }
}

/// The spool's storage: the pool, the directory and its files.
pub struct Store {
    config: StoreConfig,
    pool: RingPool,
    dir: Option<SpoolDir>,
    epoch: u32,
    reserve: Option<Reserve>,
    starved: AtomicBool,
    reports: Mutex<Reports>,
    outage: Mutex<Option<Outage>>,
    in_outage: AtomicBool,
    retry_at_ns: AtomicU64,
    trash: Mutex<Vec<PathBuf>>,
    last_sync_ns: AtomicU64,
    disk_max_bytes: AtomicU64,
}

impl Store {
    /// A store with no directory: an anonymous pool, nothing on disk.
    pub fn memory(pool: PoolConfig) -> Self {
        Self::assemble(StoreConfig::default(), RingPool::new(pool), None, 1, 0)
    }

    pub(crate) fn assemble(
        config: StoreConfig,
        pool: RingPool,
        dir: Option<SpoolDir>,
        epoch: u32,
        next_file: u64,
    ) -> Self {
        let next_file = Arc::new(AtomicU64::new(next_file));
        let reserve = dir
            .as_ref()
            .map(|d| Reserve::start(d.root(), pool.geometry(), Arc::clone(&next_file)));
        Self {
            disk_max_bytes: AtomicU64::new(config.disk_max_bytes),
            config,
            pool,
            dir,
            epoch,
            reserve,
            starved: AtomicBool::new(false),
            reports: Mutex::new(Reports::default()),
            outage: Mutex::new(None),
            in_outage: AtomicBool::new(false),
            retry_at_ns: AtomicU64::new(0),
            trash: Mutex::new(Vec::new()),
            last_sync_ns: AtomicU64::new(0),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &RingPool {
        &self.pool
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Overflow bytes a subject may hold now.
    pub fn disk_max_bytes(&self) -> u64 {
        self.disk_max_bytes.load(Ordering::Relaxed)
    }

    /// Changes [`Store::disk_max_bytes`] (it applies to files created from now on).
    pub fn set_disk_max_bytes(&self, bytes: u64) {
        self.disk_max_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The durability in force.
    pub fn durability(&self) -> Durability {
        self.config.durability
    }

    /// Whether an event may only be accepted into a file (not memory).
    pub fn durable(&self) -> bool {
        self.config.durability != Durability::Memory
    }

    /// Whether pool segments' records carry checksums (they are read back after a
    /// crash only when they live in files).
    pub fn checksummed(&self) -> bool {
        self.durable()
    }

    /// The spool directory, when one is open.
    pub fn dir(&self) -> Option<&SpoolDir> {
        self.dir.as_ref()
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// A segment's geometry.
    pub fn geometry(&self) -> Geometry {
        self.pool.geometry()
    }

    /// The owner written into files.
    pub fn owner(&self) -> &[u8] {
        &self.config.owner
    }

    /// Whether file operations may be tried now (no outage, or its retry time came).
    #[inline]
    pub fn may_try(&self) -> bool {
        !self.in_outage.load(Ordering::Relaxed)
            || crate::stamp::now() >= self.retry_at_ns.load(Ordering::Relaxed)
    }

    /// Whether an outage of file operations is going on.
    pub fn in_outage(&self) -> bool {
        self.in_outage.load(Ordering::Relaxed)
    }

    /// A file operation failed: starts an outage (one report) or extends it.
    pub fn failed(&self, op: &str, path: Option<&Path>, err: &io::Error) {
        let now = crate::stamp::now();
        self.retry_at_ns
            .store(now + RETRY_MS * 1_000_000, Ordering::Relaxed);
        let mut outage = self.outage.lock();
        if outage.is_none() {
            *outage = Some(Outage {
                since_ns: now,
                refused: 0,
            });
            self.in_outage.store(true, Ordering::Relaxed);
            let what = path.map_or_else(String::new, |p| format!(" {}", p.display()));
            self.report(Report {
                level: Level::Error,
                kind: "spool_unavailable",
                subject: None,
                message: format!(
                    "breakwater spool unavailable: cannot {op}{what}: {err}; enqueue answers \
                     {{:reject, :spool_unavailable, _}} until this clears"
                ),
            });
        }
    }

    /// An event was refused during an outage.
    pub fn refused(&self) {
        if let Some(o) = self.outage.lock().as_mut() {
            o.refused += 1;
        }
    }

    /// A file operation succeeded: ends an outage (one report).
    pub fn succeeded(&self) {
        if !self.in_outage.load(Ordering::Relaxed) {
            return;
        }
        let mut outage = self.outage.lock();
        if let Some(o) = outage.take() {
            self.in_outage.store(false, Ordering::Relaxed);
            let secs = (crate::stamp::now() - o.since_ns) as f64 / 1e9;
            self.report(Report {
                level: Level::Warning,
                kind: "spool_available",
                subject: None,
                message: format!(
                    "breakwater spool available again after {secs:.1} s; {} events were refused \
                     with spool_unavailable meanwhile",
                    o.refused
                ),
            });
        }
    }

    /// Adds a report.
    pub fn report(&self, r: Report) {
        let mut reports = self.reports.lock();
        if reports.list.len() < MAX_REPORTS {
            reports.list.push(r);
        } else {
            reports.suppressed += 1;
        }
    }

    /// Takes the reports made since the last call (and a count of those suppressed).
    pub fn take_reports(&self) -> (Vec<Report>, u64) {
        let mut reports = self.reports.lock();
        let suppressed = std::mem::take(&mut reports.suppressed);
        (std::mem::take(&mut reports.list), suppressed)
    }

    fn no_dir() -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, "no usable spool directory")
    }

    /// The reserve of pre-created files, when a directory is open.
    pub fn reserve(&self) -> Option<&Reserve> {
        self.reserve.as_ref()
    }

    /// Takes an overflow segment from the reserve and makes it live for `id`. Never
    /// creates a file (the reserve's thread does): an empty reserve is an error, and
    /// the event that needed the segment is refused.
    pub fn create_overflow(&self, id: &Identity) -> io::Result<Box<Segment>> {
        let reserve = self.reserve.as_ref().ok_or_else(Self::no_dir)?;
        match reserve.take_overflow() {
            Some(mut s) => {
                s.activate(id);
                self.took();
                Ok(s)
            }
            None => Err(self.starved(reserve, "overflow")),
        }
    }

    /// Takes a blank meta file from the reserve and makes it `subject`'s. Never creates
    /// a file (as [`Store::create_overflow`]).
    pub fn create_meta(&self, subject: &[u8]) -> io::Result<MetaFile> {
        let reserve = self.reserve.as_ref().ok_or_else(Self::no_dir)?;
        match reserve.take_meta() {
            Some(mut m) => {
                m.init(&MetaHeader {
                    owner: self.config.owner.clone(),
                    subject: subject.to_vec(),
                });
                self.took();
                Ok(m)
            }
            None => Err(self.starved(reserve, "meta")),
        }
    }

    /// A file came from the reserve: ends an outage or a starvation.
    fn took(&self) {
        self.succeeded();
        self.starved.store(false, Ordering::Relaxed);
    }

    /// The reserve had no file: an outage when its thread's last creation failed (the
    /// OS error, reported once), else a starvation (files needed faster than they are
    /// made; reported once until a file is taken again).
    fn starved(&self, reserve: &Reserve, what: &str) -> io::Error {
        if let Some((op, path, err)) = reserve.failure() {
            self.failed(op, Some(&path), &err);
            return err;
        }
        if !self.starved.swap(true, Ordering::Relaxed) {
            self.report(Report {
                level: Level::Warning,
                kind: "spool_unavailable",
                subject: None,
                message: format!(
                    "breakwater spool: no pre-created {what} file is ready (files are needed \
                     faster than the reserve's thread creates them); enqueue answers \
                     {{:reject, :spool_unavailable, _}} until one is"
                ),
            });
        }
        io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("no pre-created {what} file is ready"),
        )
    }

    /// Queues `path` for deletion by [`Store::maintain`] (off the caller's path).
    pub fn trash(&self, path: PathBuf) {
        self.trash.lock().push(path);
    }

    /// A released overflow segment: its file is deleted by the next [`Store::maintain`].
    pub fn discard(&self, segment: Segment) {
        let (file, path) = segment.into_file();
        drop(file);
        if let Some(p) = path {
            self.trash.lock().push(p);
        }
    }

    /// Housekeeping, off the routers' paths (a dirty scheduler or a thread of its own):
    /// deletes released overflow files and retries pool slots whose file could not be
    /// created.
    pub fn maintain(&self) {
        let trash = std::mem::take(&mut *self.trash.lock());
        for p in trash {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    self.report(Report {
                        level: Level::Warning,
                        kind: "unreadable",
                        subject: None,
                        message: format!(
                            "breakwater could not delete released spool file {}: {e}",
                            p.display()
                        ),
                    });
                }
            }
        }
        let Some(dir) = &self.dir else {
            return;
        };
        if !self.durable() || self.pool.missing_segments() == 0 {
            return;
        }
        let was_out = self.in_outage();
        let mut still = Vec::new();
        let geometry = self.geometry();
        for slot in self.pool.take_missing() {
            let path = dir.pool_path(slot);
            let _ = std::fs::remove_file(&path);
            match SpoolDir::create(&path, geometry.image_bytes() as u64).and_then(|file| {
                Segment::mapped_file(Kind::Pool(slot), file, path.clone(), geometry, true)
            }) {
                Ok(s) => {
                    self.pool.give(Box::new(s));
                    self.succeeded();
                }
                Err(e) => {
                    self.failed("create pool file", Some(&path), &e);
                    still.push(slot);
                }
            }
        }
        let done = still.is_empty();
        self.pool.put_missing(still);
        if done && was_out {
            self.report(Report {
                level: Level::Info,
                kind: "recovered",
                subject: None,
                message: "breakwater spool pool complete: every pool file is allocated".into(),
            });
        }
    }

    /// Whether a sync is due (`Fsync` durability), and marks it done.
    pub fn sync_due(&self) -> bool {
        let Durability::Fsync { interval_ms } = self.config.durability else {
            return false;
        };
        let now = crate::stamp::now();
        let last = self.last_sync_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= interval_ms * 1_000_000 {
            self.last_sync_ns.store(now, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    pub fn temp_dir(name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "bw-core-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn a_locked_directory_is_refused_to_a_second_opener() {
        let root = temp_dir("lock");
        let a = SpoolDir::open(&root).unwrap();
        let b = SpoolDir::open(&root);
        assert_eq!(b.err().unwrap().kind(), io::ErrorKind::WouldBlock);
        drop(a);
        assert!(SpoolDir::open(&root).is_ok());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn epochs_grow_and_files_are_allocated() {
        let root = temp_dir("epoch");
        let d = SpoolDir::open(&root).unwrap();
        assert_eq!(d.next_epoch(0).unwrap(), 1);
        assert_eq!(d.next_epoch(0).unwrap(), 2);
        assert_eq!(d.next_epoch(7).unwrap(), 8);
        let f = SpoolDir::create(&d.overflow_path(1), 8192).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 8192);
        assert!(
            SpoolDir::create(&d.overflow_path(1), 8192).is_err(),
            "never reused"
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn an_outage_is_reported_once_when_it_starts_and_once_when_it_clears() {
        let s = Store::memory(PoolConfig {
            segments: 1,
            segment_capacity: 4,
            segment_bytes: 128,
            max_event_bytes: 64,
        });
        let err = io::Error::from_raw_os_error(28);
        s.failed("create overflow file", None, &err);
        s.failed("create overflow file", None, &err);
        s.refused();
        s.refused();
        assert!(!s.may_try(), "retries wait for RETRY_MS");
        s.succeeded();
        s.succeeded();
        let (reports, suppressed) = s.take_reports();
        assert_eq!(suppressed, 0);
        let kinds: Vec<_> = reports.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, vec!["spool_unavailable", "spool_available"]);
        assert!(reports[0].message.contains("No space left on device"));
        assert!(reports[1].message.contains("2 events were refused"));
        assert!(s.may_try());
    }
}
