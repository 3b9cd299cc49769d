//! Recovery: what a node finds in its spool directory when it starts.
//!
//! 1. Lock the directory, bump the epoch (records of this run sort after every earlier
//!    one).
//! 2. Read every meta file, pool file and overflow file header. Files of another owner
//!    are left alone and reported, counting nothing, unless the configuration adopts
//!    that owner; damaged headers are reported and the file set aside (`.damaged`).
//! 3. Validate every record of every live segment (length and CRC-32), in place for
//!    pool files (mapped) and with `pread` for overflow files (not kept in memory).
//! 4. Per subject and stripe, put the segments in order and compare with the meta file:
//!    its cursors say what was released (acknowledged, dropped or lost) and taken, its
//!    live slots how many records each stripe of the last run appended. Whatever should
//!    exist and does not is counted as lost, with a reason, once: a segment missing from
//!    a chain or after its end (`missing`, or `memory` for records that were only in
//!    memory), a file shorter than its records (`truncated`), a record that fails its
//!    checks (`corrupt`). The ranges counted are kept in the meta file, so a later
//!    recovery does not count them again. Segments wholly released are freed.
//! 5. Hand each subject its stripes ([`crate::spool::Recovered`]) and build the pool from
//!    the free slots; slots whose file cannot be created (a full disk) stay missing and
//!    are retried by [`crate::store::Store::maintain`].

use crate::meta::{self, live, LostReason, MetaFile, State, StripeState};
use crate::policy::PoolConfig;
use crate::pool::RingPool;
use crate::record::{self, Parsed};
use crate::segment::{self, Geometry, Header, Identity, Kind, Segment, HEADER_BYTES};
use crate::spool::{Recovered, RecoveredStripe};
use crate::store::{Durability, Level, Report, SpoolDir, Store, StoreConfig};
use crate::stripe::StripeKey;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// What [`open`] returns: the store, and each subject found with its spool.
pub struct Opened {
    /// The store, its pool built.
    pub store: Store,
    /// Subjects with something to recover (or counters to keep).
    pub subjects: Vec<(Vec<u8>, Recovered)>,
    /// Events found pending, over every subject.
    pub events: u64,
}

/// A live segment found on disk, validated.
struct Found {
    seg: Segment,
    id: Identity,
    sealed: Option<u64>,
    /// Records parsed (valid or corrupt) before the end.
    count: u64,
    /// Sequences of corrupt records.
    corrupt: Vec<u64>,
    /// The records ended in a cut record (the file is shorter than they are).
    cut: bool,
    /// The file is shorter than a segment.
    short: bool,
    path: PathBuf,
}

/// Validates records of `data` (from the segment's start); returns (count, corrupt
/// sequences, cut short).
fn scan(data: &[u8], first: u64, checked: bool, limit: u64) -> (u64, Vec<u64>, bool, u64) {
    let mut off = 0;
    let mut n = 0u64;
    let mut corrupt = Vec::new();
    let mut bytes = 0u64;
    while n < limit {
        match record::parse(&data[off.min(data.len())..], checked) {
            Parsed::Valid { size, payload, .. } => {
                off += size;
                bytes += payload.len() as u64;
            }
            Parsed::Corrupt { size } => {
                corrupt.push(first + n);
                off += size;
            }
            Parsed::End => return (n, corrupt, false, bytes),
            Parsed::Truncated => return (n, corrupt, true, bytes),
        }
        n += 1;
    }
    (n, corrupt, false, bytes)
}

fn read_header(file: &File) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; HEADER_BYTES];
    let mut got = 0;
    while got < b.len() {
        let n = rustix::io::pread(file, &mut b[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    b.truncate(got);
    Ok(b)
}

fn read_all(file: &File, from: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = rustix::io::pread(file, &mut b[got..], from + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    b.truncate(got);
    Ok(b)
}

fn number_of(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    u64::from_str_radix(stem, 16).ok()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn set_aside(path: &Path) -> PathBuf {
    let mut to = path.as_os_str().to_owned();
    to.push(".damaged");
    let to = PathBuf::from(to);
    let _ = std::fs::rename(path, &to);
    to
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

struct Ctx {
    reports: Vec<Report>,
    owner: Vec<u8>,
    adopt: Vec<Vec<u8>>,
    foreign_reported: std::collections::HashSet<Vec<u8>>,
}

impl Ctx {
    fn report(
        &mut self,
        level: Level,
        kind: &'static str,
        subject: Option<&[u8]>,
        message: String,
    ) {
        self.reports.push(Report {
            level,
            kind,
            subject: subject.map(<[u8]>::to_vec),
            message,
        });
    }

    /// Whether files of `owner` are ours to recover (reports a foreign owner once).
    fn ours(&mut self, owner: &[u8], path: &Path) -> bool {
        if owner == self.owner.as_slice() || self.adopt.iter().any(|a| a.as_slice() == owner) {
            return true;
        }
        if self.foreign_reported.insert(owner.to_vec()) {
            let me = lossy(&self.owner);
            self.report(
                Level::Error,
                "foreign",
                None,
                format!(
                    "breakwater spool directory holds files of {:?} (e.g. {}), not of this node \
                     ({me:?}): left alone, nothing replayed or counted; to take them over, set \
                     spool_adopt: [{:?}]",
                    lossy(owner),
                    path.display(),
                    lossy(owner)
                ),
            );
        }
        false
    }
}

/// Opens the spool described by `config`, recovering what its directory holds.
pub fn open(pool: PoolConfig, config: StoreConfig) -> Opened {
    let started = std::time::Instant::now();
    let geometry = pool.geometry();
    let durable = config.durability != Durability::Memory;
    let Some(root) = config.dir.clone() else {
        let store = if durable {
            let missing = (0..pool.segments).collect();
            let s = Store::assemble(
                config,
                RingPool::with_segments(pool, Vec::new(), missing),
                None,
                1,
                0,
            );
            s.failed(
                "use a spool directory",
                None,
                &io::Error::new(io::ErrorKind::NotFound, "no spool_dir configured"),
            );
            s
        } else {
            Store::assemble(config, RingPool::new(pool), None, 1, 0)
        };
        return Opened {
            store,
            subjects: Vec::new(),
            events: 0,
        };
    };
    let dir = match SpoolDir::open(&root) {
        Ok(d) => d,
        Err(e) => {
            let store = if durable {
                let missing = (0..pool.segments).collect();
                Store::assemble(
                    config,
                    RingPool::with_segments(pool, Vec::new(), missing),
                    None,
                    1,
                    0,
                )
            } else {
                Store::assemble(config, RingPool::new(pool), None, 1, 0)
            };
            store.failed("open spool directory", Some(&root), &e);
            store.report(Report {
                level: Level::Error,
                kind: "spool_unavailable",
                subject: None,
                message: format!(
                    "breakwater spool directory {} is unusable ({e}); nothing was recovered \
                     from it; restart the node once it is fixed",
                    root.display()
                ),
            });
            return Opened {
                store,
                subjects: Vec::new(),
                events: 0,
            };
        }
    };
    let mut ctx = Ctx {
        reports: Vec::new(),
        owner: config.owner.clone(),
        adopt: config.adopt.clone(),
        foreign_reported: Default::default(),
    };
    let mut max_number = 0u64;
    let mut max_epoch = 0u32;

    // ---- meta files ------------------------------------------------------------------
    let mut metas: HashMap<Vec<u8>, MetaFile> = HashMap::new();
    for path in files(&root.join("meta"), "meta") {
        max_number = max_number.max(number_of(&path).unwrap_or(0));
        let Ok(file) = open_rw(&path) else {
            ctx.report(
                Level::Warning,
                "unreadable",
                None,
                format!("breakwater cannot open meta file {}", path.display()),
            );
            continue;
        };
        let head = read_header(&file).ok();
        if head.as_deref().is_some_and(meta::is_blank) {
            // A reserve file never used (made ahead of need, never given a subject).
            drop(file);
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let header = head.and_then(|b| meta::decode_header(&b));
        let size_ok = file
            .metadata()
            .is_ok_and(|m| m.len() >= meta::FILE_BYTES as u64);
        let Some(header) = header.filter(|_| size_ok) else {
            let to = set_aside(&path);
            ctx.report(
                Level::Warning,
                "corrupt",
                None,
                format!(
                    "breakwater meta file {} is damaged; set aside as {}: its subject's \
                     counters restart from what its segments hold",
                    path.display(),
                    to.display()
                ),
            );
            continue;
        };
        if !ctx.ours(&header.owner, &path) {
            continue;
        }
        match MetaFile::open(&file, &path, &header, false) {
            Ok(m) => {
                if let Some((_, st)) = meta::decode_state(m.image()) {
                    for s in &st.stripes {
                        max_epoch = max_epoch.max(s.epoch);
                    }
                }
                // Files come in the order of their numbers, which only grow: a second
                // file for a subject is newer. A subject gets a new meta file only when
                // it is created again after a removal, and a removal requires an empty
                // spool and deletes the old file (after the crash, if this one came
                // first): the older file holds nothing but a removed subject's counters.
                if let Some(old) = metas.insert(header.subject.clone(), m) {
                    let stale = old.path().to_path_buf();
                    drop(old);
                    let _ = std::fs::remove_file(&stale);
                    ctx.report(
                        Level::Info,
                        "stale",
                        Some(&header.subject),
                        format!(
                            "breakwater: meta file {} of a removed instance of {:?} deleted \
                             (a newer one, {}, holds the subject)",
                            stale.display(),
                            lossy(&header.subject),
                            path.display()
                        ),
                    );
                }
            }
            Err(e) => ctx.report(
                Level::Warning,
                "unreadable",
                None,
                format!("breakwater cannot map meta file {}: {e}", path.display()),
            ),
        }
    }

    // ---- segments ----------------------------------------------------------------------
    let mut found: Vec<Found> = Vec::new();
    let mut free_slots: Vec<Box<Segment>> = Vec::new();
    let mut missing_slots: Vec<u32> = Vec::new();
    let mut occupied: Vec<u32> = Vec::new();
    let image = geometry.image_bytes();
    // Pool files: live ones of ours are recovered in place (mapped), others are free.
    for slot in 0..pool.segments {
        let path = dir.pool_path(slot);
        let file = match open_rw(&path) {
            Ok(f) => f,
            Err(_) => {
                missing_slots.push(slot);
                continue;
            }
        };
        let header = read_header(&file).map(|b| segment::decode_header(&b));
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        match header {
            Ok(Header::Live {
                id,
                geometry: g,
                checksummed,
                sealed,
            }) => {
                max_epoch = max_epoch.max(id.epoch);
                if !ctx.ours(&id.owner, &path) {
                    occupied.push(slot);
                    continue;
                }
                if g != geometry || size < image as u64 {
                    // Written with another geometry, or cut short: recovered as an
                    // overflow file (read back with pread), and the slot made anew.
                    let n = max_number.max(1 << 40) + slot as u64 + 1;
                    let to = dir.overflow_path(n);
                    if std::fs::rename(&path, &to).is_ok() {
                        max_number = max_number.max(n);
                        if let Ok(f) = open_rw(&to) {
                            found.extend(validate_file(f, to, n, id, g, sealed, checksummed));
                        }
                    }
                    missing_slots.push(slot);
                    continue;
                }
                match Segment::mapped_file(Kind::Pool(slot), file, path.clone(), geometry, true) {
                    Ok(seg) => {
                        let data = seg.data(geometry.data_bytes as usize).unwrap_or(&[]);
                        let (count, corrupt, cut, _) =
                            scan(data, id.first_seq, checksummed, u64::from(g.max_records));
                        let mut seg = seg;
                        seg.set_identity(&id);
                        found.push(Found {
                            seg,
                            id,
                            sealed,
                            count,
                            corrupt,
                            cut,
                            short: false,
                            path,
                        });
                    }
                    Err(_) => missing_slots.push(slot),
                }
            }
            Ok(Header::Damaged) => {
                let to = set_aside(&path);
                ctx.report(
                    Level::Warning,
                    "corrupt",
                    None,
                    format!(
                        "breakwater pool file {} has a damaged header; set aside as {} (its \
                         events, if any, are counted lost with their subject)",
                        path.display(),
                        to.display()
                    ),
                );
                missing_slots.push(slot);
            }
            Ok(Header::Free) if size == image as u64 && durable => {
                match Segment::mapped_file(Kind::Pool(slot), file, path, geometry, true) {
                    Ok(s) => free_slots.push(Box::new(s)),
                    Err(_) => missing_slots.push(slot),
                }
            }
            Ok(Header::Free) if !durable => missing_slots.push(slot),
            _ => {
                drop(file);
                let _ = std::fs::remove_file(&path);
                missing_slots.push(slot);
            }
        }
    }
    // Pool files beyond the configured pool (it shrank): recovered as overflow files.
    for path in files(&root.join("pool"), "seg") {
        let Some(slot) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if slot < pool.segments {
            continue;
        }
        let Ok(file) = open_rw(&path) else { continue };
        match read_header(&file).map(|b| segment::decode_header(&b)) {
            Ok(Header::Live {
                id,
                geometry: g,
                checksummed,
                sealed,
            }) if ctx.ours(&id.owner, &path) => {
                max_epoch = max_epoch.max(id.epoch);
                let n = (1u64 << 41) + slot as u64;
                let to = dir.overflow_path(n);
                drop(file);
                if std::fs::rename(&path, &to).is_ok() {
                    max_number = max_number.max(n);
                    if let Ok(f) = open_rw(&to) {
                        found.extend(validate_file(f, to, n, id, g, sealed, checksummed));
                    }
                }
            }
            Ok(Header::Free) => {
                drop(file);
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    // Overflow files.
    for path in files(&root.join("overflow"), "seg") {
        let n = number_of(&path).unwrap_or(0);
        max_number = max_number.max(n);
        let Ok(file) = open_rw(&path) else {
            ctx.report(
                Level::Warning,
                "unreadable",
                None,
                format!("breakwater cannot open spool file {}", path.display()),
            );
            continue;
        };
        match read_header(&file).map(|b| segment::decode_header(&b)) {
            Ok(Header::Live {
                id,
                geometry: g,
                checksummed,
                sealed,
            }) => {
                max_epoch = max_epoch.max(id.epoch);
                if !ctx.ours(&id.owner, &path) {
                    continue;
                }
                if found.iter().any(|f| f.path == path) {
                    continue;
                }
                found.extend(validate_file(file, path, n, id, g, sealed, checksummed));
            }
            Ok(Header::Free) => {
                drop(file);
                let _ = std::fs::remove_file(&path);
            }
            Ok(Header::Damaged) | Err(_) => {
                let to = set_aside(&path);
                ctx.report(
                    Level::Warning,
                    "corrupt",
                    None,
                    format!(
                        "breakwater spool file {} has a damaged header; set aside as {} (its \
                         events are counted lost with their subject)",
                        path.display(),
                        to.display()
                    ),
                );
            }
        }
    }

    let epoch = match dir.next_epoch(max_epoch) {
        Ok(e) => e,
        Err(e) => {
            ctx.report(
                Level::Error,
                "spool_unavailable",
                None,
                format!("breakwater cannot write the spool epoch: {e}"),
            );
            max_epoch.saturating_add(1)
        }
    };

    // ---- per subject -------------------------------------------------------------------
    let mut by_subject: BTreeMap<Vec<u8>, Vec<Found>> = BTreeMap::new();
    for f in found {
        by_subject.entry(f.id.subject.clone()).or_default().push(f);
    }
    for subject in metas.keys() {
        by_subject.entry(subject.clone()).or_default();
    }
    let mut subjects = Vec::new();
    let mut events = 0u64;
    let mut store_trash: Vec<Segment> = Vec::new();
    let mut freed_slots: Vec<Segment> = Vec::new();
    for (subject, segs) in by_subject {
        let meta = metas.remove(&subject);
        let (rec, pending) = rebuild(
            &mut ctx,
            &subject,
            meta,
            segs,
            epoch,
            &mut store_trash,
            &mut freed_slots,
        );
        events += pending;
        subjects.push((subject, rec));
    }
    for mut s in freed_slots {
        s.deactivate();
        free_slots.push(Box::new(s));
    }

    let next_file = max_number + 1;
    if !occupied.is_empty() {
        ctx.report(
            Level::Warning,
            "foreign",
            None,
            format!(
                "breakwater pool: {} of {} slots hold another owner's segments and are not used",
                occupied.len(),
                pool.segments
            ),
        );
    }
    if !durable {
        // The pool is memory: one anonymous segment per slot not holding records.
        for _ in missing_slots.drain(..) {
            if let Ok(s) = Segment::anon(geometry) {
                free_slots.push(Box::new(s));
            }
        }
    }
    let store = Store::assemble(
        config,
        RingPool::with_segments(pool, Vec::new(), missing_slots),
        Some(dir),
        epoch,
        next_file,
    );
    for s in free_slots {
        store.pool().give(s);
    }
    for s in store_trash {
        store.discard(s);
    }
    for r in ctx.reports {
        store.report(r);
    }
    if store.durable() || store.pool().missing_segments() > 0 {
        // Create the pool files that do not exist yet (first start), now.
        store.maintain();
    }
    let ms = started.elapsed().as_secs_f64() * 1e3;
    store.report(Report {
        level: Level::Info,
        kind: "recovered",
        subject: None,
        message: format!(
            "breakwater spool {}: recovered {events} pending events of {} subjects in {ms:.0} ms \
             (epoch {epoch})",
            root.display(),
            subjects.len()
        ),
    });
    Opened {
        store,
        subjects,
        events,
    }
}

/// Validates an overflow (or set-aside pool) file; it is kept unmapped.
#[allow(clippy::too_many_arguments)]
fn validate_file(
    file: File,
    path: PathBuf,
    n: u64,
    id: Identity,
    g: Geometry,
    sealed: Option<u64>,
    checksummed: bool,
) -> Option<Found> {
    let data = read_all(&file, HEADER_BYTES as u64, g.data_bytes as usize).ok()?;
    let limit = sealed.unwrap_or(u64::from(g.max_records));
    let (count, corrupt, cut, _) = scan(&data, id.first_seq, checksummed, limit);
    // A file shorter than its data area whose records end at its end was cut short.
    let short = data.len() < g.data_bytes as usize;
    let seg = Segment::unmapped_file(n, file, path.clone(), g, &id, count);
    Some(Found {
        seg,
        id,
        sealed,
        count,
        corrupt,
        cut,
        short,
        path,
    })
}

/// Subtracts the ranges of `known` from `a..b`.
fn minus(a: u64, b: u64, known: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = vec![(a, b)];
    for &(x, y) in known {
        let mut next = Vec::new();
        for (s, e) in out {
            if y <= s || e <= x {
                next.push((s, e));
            } else {
                if s < x {
                    next.push((s, x));
                }
                if y < e {
                    next.push((y, e));
                }
            }
        }
        out = next;
    }
    out.into_iter().filter(|(s, e)| s < e).collect()
}

/// Rebuilds one subject: its stripes, losses and counters.
fn rebuild(
    ctx: &mut Ctx,
    subject: &[u8],
    meta: Option<MetaFile>,
    segs: Vec<Found>,
    epoch: u32,
    trash: &mut Vec<Segment>,
    freed_slots: &mut Vec<Segment>,
) -> (Recovered, u64) {
    let name = lossy(subject);
    let (mut state, live_slots) = match &meta {
        Some(m) => (
            meta::decode_state(m.image())
                .map(|(_, s)| s)
                .unwrap_or_default(),
            meta::decode_live(m.image()),
        ),
        None => (State::default(), Vec::new()),
    };
    if meta.is_none() && !segs.is_empty() {
        ctx.report(
            Level::Warning,
            "missing",
            Some(subject),
            format!(
                "breakwater spool of {name:?}: its meta file is gone; counters restart from \
                 what its segments hold, and every event found is delivered (again)"
            ),
        );
    }
    let mut counters = state.counters.clone();
    // Stripes: from the state, the live slots of the last run, and the segments found.
    struct S {
        state: Option<StripeState>,
        slot: Option<[u64; live::COUNT]>,
        segs: Vec<Found>,
    }
    let mut stripes: BTreeMap<StripeKey, S> = BTreeMap::new();
    for st in std::mem::take(&mut state.stripes) {
        let key = StripeKey {
            epoch: st.epoch,
            index: st.index,
        };
        stripes.insert(
            key,
            S {
                state: Some(st),
                slot: None,
                segs: Vec::new(),
            },
        );
    }
    for (_, (e, i), values) in live_slots {
        let key = StripeKey { epoch: e, index: i };
        stripes
            .entry(key)
            .or_insert(S {
                state: None,
                slot: None,
                segs: Vec::new(),
            })
            .slot = Some(values);
    }
    for f in segs {
        let key = StripeKey {
            epoch: f.id.epoch,
            index: f.id.stripe,
        };
        stripes
            .entry(key)
            .or_insert(S {
                state: None,
                slot: None,
                segs: Vec::new(),
            })
            .segs
            .push(f);
    }

    let mut out = Vec::new();
    let mut pending_total = 0u64;
    let mut lost_new = [0u64; meta::LOST_REASONS];
    for (key, mut s) in stripes {
        // The last run's live counters join the base counters.
        let volatile = s.slot.is_some_and(|v| v[live::VOLATILE] > 0);
        if let Some(v) = s.slot {
            for (b, x) in counters.base.iter_mut().zip(v.iter()) {
                *b += x;
            }
        }
        let (released, taken, mut known) = match &s.state {
            Some(st) => (st.released, st.taken, st.lost.clone()),
            None => (0, 0, Vec::new()),
        };
        let recorded_end = match (&s.state, &s.slot) {
            (_, Some(v)) => v[live::APPENDED],
            (Some(st), None) => st.end,
            (None, None) => 0,
        };
        s.segs.sort_by_key(|f| f.id.seg_seq);
        // Ends of each segment: sealed count, else up to the next segment, else found.
        let mut ends = Vec::with_capacity(s.segs.len());
        for k in 0..s.segs.len() {
            let f = &s.segs[k];
            let expected = match (f.sealed, s.segs.get(k + 1)) {
                (Some(n), _) => f.id.first_seq + n,
                (None, Some(next)) => next.id.first_seq,
                (None, None) => {
                    f.id.first_seq + f.count.max(recorded_end.saturating_sub(f.id.first_seq))
                }
            };
            ends.push(expected.max(f.id.first_seq + f.count));
        }
        let found_end = ends.last().copied().unwrap_or(0);
        // With no meta file, the segments are all there is to go by.
        let first_found = s.segs.first().map_or(0, |f| f.id.first_seq);
        if s.state.is_none() && s.slot.is_none() && meta.is_some() {
            // The meta file knows every stripe with records not all released: this one
            // was forgotten because everything in it was released, and its files were
            // only waiting to be deleted.
            for f in s.segs {
                match f.seg.kind() {
                    Kind::Pool(_) => freed_slots.push(f.seg),
                    _ => trash.push(f.seg),
                }
            }
            continue;
        }
        let end = if s.state.is_none() && s.slot.is_none() {
            // No meta (or it does not know the stripe): the segments are all there is;
            // what came before the first one is unknown and not counted.
            counters.base[live::APPENDED] += found_end.saturating_sub(first_found);
            found_end
        } else {
            // A slot's count is stored after its record: it may lag the records by one.
            let end = recorded_end.max(found_end);
            counters.base[live::APPENDED] += end - recorded_end;
            end
        };
        let released = released.min(end);
        let start_seq = s.segs.first().map_or(end, |f| f.id.first_seq);
        let released = if s.state.is_none() && s.slot.is_none() {
            start_seq.max(released)
        } else {
            released
        };
        let gap_reason = if volatile {
            LostReason::Memory
        } else {
            LostReason::Missing
        };
        // (from, to, reason, file): file is None for records in no file at all.
        let mut losses: Vec<(u64, u64, LostReason, Option<String>)> = Vec::new();
        // Before the first segment, between segments, after the last.
        let mut at = released;
        for (k, f) in s.segs.iter().enumerate() {
            if f.id.first_seq > at {
                losses.push((at, f.id.first_seq, gap_reason, None));
            }
            at = at.max(ends[k]);
        }
        if end > at {
            losses.push((at, end, gap_reason, None));
        }
        // Within segments.
        let mut chain = Vec::new();
        for (k, f) in s.segs.into_iter().enumerate() {
            let seg_end = ends[k];
            if seg_end <= released {
                // Wholly released (acknowledged before the crash): freed.
                match f.seg.kind() {
                    Kind::Pool(_) => freed_slots.push(f.seg),
                    _ => trash.push(f.seg),
                }
                continue;
            }
            let file = Some(f.path.display().to_string());
            for &c in &f.corrupt {
                if c >= released {
                    losses.push((c, c + 1, LostReason::Corrupt, file.clone()));
                }
            }
            let have = f.id.first_seq + f.count;
            if have < seg_end {
                // Records end before they should: cut off (a short file, or a length
                // that runs past the end), or gone from an intact file.
                let reason = if f.cut || f.short {
                    LostReason::Truncated
                } else {
                    LostReason::Missing
                };
                losses.push((have.max(released), seg_end, reason, file.clone()));
            }
            let seg = f.seg;
            seg.seal(seg_end - f.id.first_seq);
            chain.push((seg, f.path.clone(), f.corrupt.len()));
        }
        // Count each loss once: ranges already known (an earlier recovery) are not new.
        // One report per segment file (or per gap between files) and reason.
        let mut by_reason = [0u64; meta::LOST_REASONS];
        let mut per_file: BTreeMap<(Option<String>, usize), (u64, LostReason)> = BTreeMap::new();
        losses.sort_by_key(|l| l.0);
        for (a, b, reason, file) in losses {
            for (x, y) in minus(a.max(released), b, &known) {
                by_reason[reason as usize] += y - x;
                per_file
                    .entry((file.clone(), reason as usize))
                    .or_insert((0, reason))
                    .0 += y - x;
                known.push((x, y));
            }
        }
        known.sort();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (x, y) in known {
            match merged.last_mut() {
                Some(l) if x <= l.1 => l.1 = l.1.max(y),
                _ => merged.push((x, y)),
            }
        }
        let known: Vec<(u64, u64)> = merged
            .into_iter()
            .filter_map(|(x, y)| {
                let x = x.max(released);
                let y = y.min(end);
                (x < y).then_some((x, y))
            })
            .collect();
        for (reason, n) in LostReason::ALL.iter().map(|r| (*r, by_reason[*r as usize])) {
            lost_new[reason as usize] += n;
        }
        for ((file, _), (n, reason)) in per_file {
            let what = match reason {
                LostReason::Corrupt => "records failed their checksum or length check",
                LostReason::Truncated => "records were cut off a file shorter than they are",
                LostReason::Missing => "records are in files that are gone",
                LostReason::Memory => "records were in memory only (durability: :memory)",
                LostReason::Unreadable => "records could not be read",
            };
            let place = match &file {
                Some(f) => format!("in {f}"),
                None => format!("of stripe {}/{}, in no file", key.epoch, key.index),
            };
            ctx.report(
                Level::Warning,
                reason.name(),
                Some(subject),
                format!(
                    "breakwater spool of {name:?}: {n} events {place} lost: {what}; counted \
                     as lost ({})",
                    reason.name()
                ),
            );
        }
        let lost_pending: u64 = known.iter().map(|&(x, y)| y - x).sum();
        let pending = (end - released).saturating_sub(lost_pending);
        pending_total += pending;
        if released >= end && chain.is_empty() {
            continue;
        }
        out.push(RecoveredStripe {
            key,
            chain: chain.into_iter().map(|(s, _, _)| Box::new(s)).collect(),
            end,
            released,
            taken: taken.max(released),
            lost: known,
        });
    }
    for (c, n) in counters.lost.iter_mut().zip(lost_new) {
        *c += n;
    }
    let _ = epoch;
    let mut meta = meta;
    if let Some(m) = meta.as_mut() {
        let st = State {
            counters: counters.clone(),
            stripes: out
                .iter()
                .map(|s| StripeState {
                    epoch: s.key.epoch,
                    index: s.key.index,
                    live: None,
                    end: s.end,
                    released: s.released,
                    taken: s.taken,
                    lost: s.lost.clone(),
                })
                .collect(),
        };
        // The state (with the last run's live counts folded in) first, then the live
        // area is cleared: a crash in between finds the counts in the state.
        m.write_state(&st);
        m.clear_live();
    }
    (
        Recovered {
            meta,
            counters,
            stripes: out,
        },
        pending_total,
    )
}

#[cfg(test)]
mod tests;
