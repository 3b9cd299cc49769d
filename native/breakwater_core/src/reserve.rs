//! The reserve: spool files created, allocated, mapped and paged in ahead of need, by a
//! thread of its own, so that the enqueue path never creates a file.
//!
//! An enqueue needs a new file in two cases: an overflow segment when its stripe's
//! segment is full and the pool is not to be used, and a subject's meta file on the
//! subject's first enqueue. Creating one (`open`, `fallocate`, `mmap`, then page faults
//! on first touch) can block on the file system for as long as the file system likes;
//! on a normal scheduler, under the stripe's lock, that would stall every router on
//! that scheduler. So the files are made here beforehand and the enqueue path only
//! pops one from a list (a lock held for a `Vec::pop`). An empty reserve is a refusal
//! (`spool_unavailable`, counted), never a fallback to creating the file.
//!
//! Invariant: every file in the reserve exists under its final name
//! (`overflow/<n>.seg`, `meta/<n>.meta`), has its full size allocated, is mapped, and
//! is all zeros. A zero header is what recovery reads as "never used": an overflow
//! segment whose header is free, a meta file whose header page is blank; both are
//! deleted at the next start without a report, so unused reserve files never count as
//! loss or as foreign data. The thread stops (and is joined) when the reserve is
//! dropped; files left in it are unused and are found as such at the next start.
//!
//! Memory ordering: everything shared is under one mutex; the thread is woken with a
//! condition variable when a file is taken.

use crate::meta::MetaFile;
use crate::segment::{Geometry, Kind, Segment};
use crate::store::SpoolDir;
use parking_lot::{Condvar, Mutex};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of overflow files the reserve holds at most (and at least two files).
pub const OVERFLOW_BYTES: u64 = 32 << 20;
/// Most overflow files held.
pub const MAX_OVERFLOW: usize = 8;
/// Meta files held.
pub const META: usize = 4;
/// How long the thread waits after a failed creation before trying again.
const RETRY: Duration = Duration::from_millis(crate::store::RETRY_MS);

/// The last creation that failed (cleared by the next success).
#[derive(Debug)]
pub struct Failure {
    /// What was being done.
    pub op: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why it failed.
    pub error: io::Error,
}

struct State {
    // Boxed: a segment leaves the reserve as the `Box` a stripe installs.
    #[allow(clippy::vec_box)]
    overflow: Vec<Box<Segment>>,
    meta: Vec<MetaFile>,
    failure: Option<Failure>,
    /// The reserve is dropped: the thread ends.
    stop: bool,
    /// A test keeps the reserve from refilling.
    paused: bool,
    /// The thread is making a file (outside the lock).
    filling: bool,
}

struct Shared {
    root: PathBuf,
    geometry: Geometry,
    want_overflow: usize,
    next_file: Arc<AtomicU64>,
    state: Mutex<State>,
    wake: Condvar,
}

/// Pre-created files, and the thread that keeps them ready.
pub struct Reserve {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Reserve {
    /// A reserve for the spool directory at `root` (already locked by its
    /// [`SpoolDir`]), filled once before it returns (recovery runs on a dirty
    /// scheduler), then kept filled by a thread of its own. File numbers come from
    /// `next_file`.
    pub fn start(root: &Path, geometry: Geometry, next_file: Arc<AtomicU64>) -> Self {
        let image = geometry.image_bytes() as u64;
        let want_overflow = ((OVERFLOW_BYTES / image.max(1)) as usize).clamp(2, MAX_OVERFLOW);
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            geometry,
            want_overflow,
            next_file,
            state: Mutex::new(State {
                overflow: Vec::with_capacity(want_overflow),
                meta: Vec::with_capacity(META),
                failure: None,
                stop: false,
                paused: false,
                filling: false,
            }),
            wake: Condvar::new(),
        });
        while shared.fill_one() == Some(true) {}
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("breakwater-reserve".into())
            .spawn(move || for_thread.run())
            .ok();
        Self { shared, thread }
    }

    /// An overflow segment (mapped, free, paged in), if one is ready. Never blocks on
    /// the file system.
    pub fn take_overflow(&self) -> Option<Box<Segment>> {
        // The oldest, as for meta files: files are used in the order of their numbers.
        let seg = {
            let mut st = self.shared.state.lock();
            (!st.overflow.is_empty()).then(|| st.overflow.remove(0))
        };
        self.shared.wake.notify_one();
        seg
    }

    /// A blank meta file (mapped, paged in), if one is ready. Never blocks on the file
    /// system.
    pub fn take_meta(&self) -> Option<MetaFile> {
        // The oldest: a meta file taken later must have a higher number than any taken
        // before it (recovery keeps the higher-numbered file of a subject), and files
        // join the reserve in the order of their numbers.
        let m = {
            let mut st = self.shared.state.lock();
            (!st.meta.is_empty()).then(|| st.meta.remove(0))
        };
        self.shared.wake.notify_one();
        m
    }

    /// Why the last creation failed, if the last one did.
    pub fn failure(&self) -> Option<(&'static str, PathBuf, io::Error)> {
        let st = self.shared.state.lock();
        st.failure.as_ref().map(|f| {
            (
                f.op,
                f.path.clone(),
                io::Error::new(f.error.kind(), f.error.to_string()),
            )
        })
    }

    /// Files ready: `(overflow, meta)`.
    pub fn ready(&self) -> (usize, usize) {
        let st = self.shared.state.lock();
        (st.overflow.len(), st.meta.len())
    }

    /// Overflow files the reserve keeps ready.
    pub fn target(&self) -> (usize, usize) {
        (self.shared.want_overflow, META)
    }

    /// Fills the reserve now, on the caller's thread (blocking file I/O: tests, and
    /// callers already on a dirty scheduler). Returns whether it is full.
    pub fn fill(&self) -> bool {
        loop {
            match self.shared.fill_one() {
                Some(true) => continue,
                Some(false) => return false,
                None => return true,
            }
        }
    }

    /// Takes every ready file out and drops it (tests: an empty reserve). The files
    /// stay on disk, unused, as after a crash.
    pub fn drain_for_test(&self) -> usize {
        let mut st = self.shared.state.lock();
        let n = st.overflow.len() + st.meta.len();
        st.overflow.clear();
        st.meta.clear();
        n
    }

    /// Stops the thread from refilling (tests: keeps the reserve empty) or lets it go
    /// on.
    /// Pausing waits for a file the thread is making to be in the reserve, so that a
    /// `drain_for_test` after it leaves the reserve empty and no file appears later.
    pub fn pause_for_test(&self, paused: bool) {
        self.shared.state.lock().paused = paused;
        self.shared.wake.notify_one();
        while paused && self.shared.state.lock().filling {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// Creates one missing file. `Some(true)`: made one; `Some(false)`: failed (the
    /// failure is recorded); `None`: nothing missing (or stopped).
    fn fill_one(&self) -> Option<bool> {
        let (need_overflow, need_meta) = {
            let mut st = self.state.lock();
            if st.stop || st.paused {
                return None;
            }
            let needs = (st.overflow.len() < self.want_overflow, st.meta.len() < META);
            // Until `record` (both branches below end in it).
            st.filling = needs.0 || needs.1;
            needs
        };
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        if need_overflow {
            let path = SpoolDir::overflow_path_in(&self.root, n);
            let made = SpoolDir::create(&path, self.geometry.image_bytes() as u64).and_then(|f| {
                Segment::mapped_file(Kind::Overflow(n), f, path.clone(), self.geometry, true)
            });
            Some(self.record(
                made.map(|mut s| {
                    s.touch();
                    Item::Overflow(Box::new(s))
                }),
                "create overflow file",
                path,
            ))
        } else if need_meta {
            let path = SpoolDir::meta_path_in(&self.root, n);
            let made = SpoolDir::create(&path, crate::meta::FILE_BYTES as u64)
                .and_then(|f| MetaFile::blank(&f, &path));
            Some(self.record(
                made.map(|mut m| {
                    m.touch();
                    Item::Meta(m)
                }),
                "create meta file",
                path,
            ))
        } else {
            None
        }
    }

    fn record(&self, made: io::Result<Item>, op: &'static str, path: PathBuf) -> bool {
        let mut st = self.state.lock();
        st.filling = false;
        match made {
            Ok(item) => {
                st.failure = None;
                match item {
                    Item::Overflow(s) => st.overflow.push(s),
                    Item::Meta(m) => st.meta.push(m),
                }
                true
            }
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                st.failure = Some(Failure { op, path, error });
                false
            }
        }
    }

    fn run(&self) {
        loop {
            let made = self.fill_one();
            let mut st = self.state.lock();
            if st.stop {
                return;
            }
            match made {
                Some(true) => {}
                // Failed: wait out the retry time, whatever takes happen meanwhile.
                Some(false) => {
                    let until = Instant::now() + RETRY;
                    while !st.stop && Instant::now() < until {
                        self.wake.wait_until(&mut st, until);
                    }
                }
                // Full (or paused): until a take, or a second as a safety net.
                None => {
                    self.wake.wait_for(&mut st, Duration::from_secs(1));
                }
            }
        }
    }
}

enum Item {
    Overflow(Box<Segment>),
    Meta(MetaFile),
}
