//! [`SimDisk`]: an in-memory, fault-injecting [`Disk`] for tests and the simulator.
//!
//! It keeps, for every file, the bytes a reader sees now and the bytes that would survive a
//! power loss (the last synced state), plus the list of writes since the last sync. A test or
//! the simulator then injects faults:
//!
//! - [`SimDisk::halt_after`]: cut the power after the k-th mutating operation (every later
//!   write, allocation, sync, create, rename or remove fails), so a test can crash at every point of a
//!   script by enumeration rather than by sampling.
//! - [`SimDisk::crash`]: the process dies; each file keeps its synced bytes plus, depending on
//!   the [`CrashMode`], nothing, a seeded random prefix of its unsynced writes (the last one
//!   possibly torn), or everything but a torn last write. Names created, renamed or removed
//!   since the last [`Disk::sync_dir`] revert. Locks are released and old handles go stale.
//! - [`SimDisk::flip_bit`], [`SimDisk::write_raw`], [`SimDisk::truncate_raw`]: damage what is
//!   on the platter.
//! - [`SimDisk::fail_next_syncs`]: the next syncs fail with `EIO` and, as on Linux, the
//!   unsynced writes are then lost at the next crash even though reads still see them.
//! - [`SimDisk::fail_next_reads`]: the next reads fail with `EIO`.
//! - [`SimDisk::set_full`]: the disk is full. Until it is freed, everything that needs new
//!   space fails with `ENOSPC`: a write past a file's end writes what fits in the file's
//!   length (a short write) and then fails, and growing a file (`set_len`, `allocate`) fails
//!   without effect. Writes within a file's length, as into a preallocated segment, still
//!   succeed, as on a real filesystem after `fallocate`. [`SimDisk::set_free_bytes`] leaves
//!   room for a given number of bytes first.
//!
//! Everything is deterministic given the seed. A `SimDisk` is a cheap handle (`Arc<Mutex<..>>`
//! inside): clone it to share one disk, create one per node to give each node its own disk.
//! Directories are kept simple: they exist once created and creating them is durable at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::disk::{DirLock, Disk, DiskFile};

/// What survives of the unsynced writes at a [`SimDisk::crash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every write not yet synced is lost.
    LoseUnsynced,
    /// Each file keeps a random prefix (chosen by the disk's seeded generator) of its unsynced
    /// writes; the first write not kept may survive in part (a torn write).
    RandomPrefix,
    /// Each file keeps all its unsynced writes except the last, of which only the first
    /// `keep_bytes` bytes survive.
    TearLastWrite {
        /// How many bytes of the last write survive.
        keep_bytes: usize,
    },
}

/// An in-memory disk with fault injection. See the module documentation.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<SimState>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock_state();
        f.debug_struct("SimDisk")
            .field("files", &s.names.len())
            .field("op_count", &s.op_count)
            .field("generation", &s.generation)
            .finish()
    }
}

#[derive(Debug)]
enum Pending {
    Write {
        offset: u64,
        bytes: Vec<u8>,
    },
    SetLen(u64),
    /// Extends to at least this length (never shrinks), as `fallocate` does.
    Allocate(u64),
}

#[derive(Debug, Default)]
struct Node {
    /// What a reader sees now.
    data: Vec<u8>,
    /// What survives a crash: the state at the last successful sync.
    durable: Vec<u8>,
    /// Mutations since the last sync, in order. Invariant: applying them to `durable` gives
    /// `data`, unless a sync failed (its writes are dropped and can never become durable).
    pending: Vec<Pending>,
}

#[derive(Debug)]
struct SimState {
    rng: u64,
    /// Bumped by every crash; handles and locks of an older generation are stale.
    generation: u64,
    nodes: BTreeMap<u64, Node>,
    node_next: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    op_count: u64,
    halt_after: Option<u64>,
    syncs_to_fail: u64,
    /// Syncs to let through before one fails (see [`SimDisk::fail_sync_after`]).
    sync_fail_countdown: Option<u64>,
    reads_to_fail: u64,
    /// Bytes by which files may still grow; `None`: unlimited. See [`SimDisk::set_full`].
    free_bytes: Option<u64>,
    /// Operations refused for lack of space so far.
    no_space_count: u64,
}

fn apply(data: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, bytes } => {
            let offset = *offset as usize;
            let end = offset + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[offset..end].copy_from_slice(bytes);
        }
        Pending::SetLen(len) => data.resize(*len as usize, 0),
        Pending::Allocate(len) => {
            if data.len() < *len as usize {
                data.resize(*len as usize, 0);
            }
        }
    }
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(28)
}

fn power_lost() -> io::Error {
    io::Error::other("simulated power loss: the disk accepts no more operations")
}

fn stale() -> io::Error {
    io::Error::other("stale file handle: the simulated process crashed")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file", path.display()))
}

impl SimState {
    fn next_random(&mut self) -> u64 {
        // splitmix64: tiny, seedable and good enough for choosing fault points.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_random() % n }
    }

    /// Whether this sync must fail (and counts it).
    fn sync_fails(&mut self) -> bool {
        match self.sync_fail_countdown {
            Some(0) => {
                self.sync_fail_countdown = None;
                return true;
            }
            Some(n) => self.sync_fail_countdown = Some(n - 1),
            None => {}
        }
        if self.syncs_to_fail > 0 {
            self.syncs_to_fail -= 1;
            return true;
        }
        false
    }

    /// Takes the space for growing `node` to `len` bytes (nothing if it is that long already),
    /// or fails with `ENOSPC` without taking any.
    fn take_space(&mut self, node: u64, len: u64) -> io::Result<()> {
        let growth = len.saturating_sub(self.nodes[&node].data.len() as u64);
        match self.free_bytes.as_mut() {
            Some(f) if growth > *f => {
                self.no_space_count += 1;
                Err(no_space())
            }
            Some(f) => {
                *f -= growth;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a mutating operation, or refuses it once the power is cut.
    fn mutate(&mut self) -> io::Result<()> {
        if let Some(limit) = self.halt_after
            && self.op_count >= limit
        {
            return Err(power_lost());
        }
        self.op_count += 1;
        Ok(())
    }

    fn node_of(&mut self, path: &Path) -> io::Result<&mut Node> {
        let id = *self.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(self.nodes.get_mut(&id).expect("named node exists"))
    }
}

impl SimDisk {
    /// An empty disk whose random choices follow `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(SimState {
                rng: seed,
                generation: 0,
                nodes: BTreeMap::new(),
                node_next: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                locks: BTreeSet::new(),
                op_count: 0,
                halt_after: None,
                syncs_to_fail: 0,
                sync_fail_countdown: None,
                reads_to_fail: 0,
                free_bytes: None,
                no_space_count: 0,
            })),
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves consistent state (every method mutates in
        // one step), so a poisoned mutex is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An independent copy of this disk (files, names, fault settings, generator state): a
    /// way to try several futures from one point.
    pub fn fork(&self) -> SimDisk {
        let s = self.lock_state();
        let nodes = s
            .nodes
            .iter()
            .map(|(id, n)| {
                let pending = n
                    .pending
                    .iter()
                    .map(|p| match p {
                        Pending::Write { offset, bytes } => {
                            Pending::Write { offset: *offset, bytes: bytes.clone() }
                        }
                        Pending::SetLen(l) => Pending::SetLen(*l),
                        Pending::Allocate(l) => Pending::Allocate(*l),
                    })
                    .collect();
                let node = Node { data: n.data.clone(), durable: n.durable.clone(), pending };
                (*id, node)
            })
            .collect();
        SimDisk {
            state: Arc::new(Mutex::new(SimState {
                rng: s.rng,
                generation: s.generation + 1,
                nodes,
                node_next: s.node_next,
                names: s.names.clone(),
                durable_names: s.durable_names.clone(),
                dirs: s.dirs.clone(),
                locks: BTreeSet::new(),
                op_count: s.op_count,
                halt_after: s.halt_after,
                syncs_to_fail: s.syncs_to_fail,
                sync_fail_countdown: s.sync_fail_countdown,
                reads_to_fail: s.reads_to_fail,
                free_bytes: s.free_bytes,
                no_space_count: s.no_space_count,
            })),
        }
    }

    /// How many mutating operations (write, set_len, allocate, sync, create, rename, remove,
    /// sync_dir) have succeeded so far.
    pub fn op_count(&self) -> u64 {
        self.lock_state().op_count
    }

    /// Cuts the power once `op_count` reaches `ops`: every later mutating operation fails and
    /// has no effect, until [`SimDisk::crash`]. `halt_after(op_count())` cuts it now.
    pub fn halt_after(&self, ops: u64) {
        self.lock_state().halt_after = Some(ops);
    }

    /// The process dies and the machine restarts: see [`CrashMode`]. Restores power, releases
    /// every lock and makes every open handle stale.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.lock_state();
        let ids: Vec<u64> = s.nodes.keys().copied().collect();
        for id in ids {
            let mut node = s.nodes.remove(&id).expect("listed");
            let pending = std::mem::take(&mut node.pending);
            let mut data = std::mem::take(&mut node.durable);
            let n = pending.len();
            let (keep, torn_bytes) = match mode {
                CrashMode::LoseUnsynced => (0, None),
                CrashMode::RandomPrefix => {
                    let keep = s.random_below(n as u64 + 1) as usize;
                    let torn = match pending.get(keep) {
                        Some(Pending::Write { bytes, .. }) if s.random_below(2) == 0 => {
                            Some(s.random_below(bytes.len() as u64) as usize)
                        }
                        _ => None,
                    };
                    (keep, torn)
                }
                CrashMode::TearLastWrite { keep_bytes } => {
                    (n.saturating_sub(1), (n > 0).then_some(keep_bytes))
                }
            };
            for op in &pending[..keep] {
                apply(&mut data, op);
            }
            if let (Some(k), Some(Pending::Write { offset, bytes })) =
                (torn_bytes, pending.get(keep))
            {
                let k = k.min(bytes.len());
                apply(&mut data, &Pending::Write { offset: *offset, bytes: bytes[..k].to_vec() });
            }
            node.durable = data.clone();
            node.data = data;
            s.nodes.insert(id, node);
        }
        s.names = s.durable_names.clone();
        let live: BTreeSet<u64> = s.names.values().copied().collect();
        s.nodes.retain(|id, _| live.contains(id));
        s.generation += 1;
        s.locks.clear();
        s.halt_after = None;
        s.syncs_to_fail = 0;
        s.sync_fail_countdown = None;
        s.reads_to_fail = 0;
    }

    /// Flips one bit of the file at `path`, both in what readers see and on the platter.
    ///
    /// # Panics
    /// If the file does not exist or `offset` is past its end (a test bug).
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) {
        let mut s = self.lock_state();
        let node = s.node_of(path).expect("flip_bit: no such file");
        let o = offset as usize;
        node.data[o] ^= 1 << (bit % 8);
        if o < node.durable.len() {
            node.durable[o] ^= 1 << (bit % 8);
        }
    }

    /// Overwrites bytes of the file at `path`, both in what readers see and on the platter.
    ///
    /// # Panics
    /// If the file does not exist (a test bug).
    pub fn write_raw(&self, path: &Path, offset: u64, bytes: &[u8]) {
        let mut s = self.lock_state();
        let node = s.node_of(path).expect("write_raw: no such file");
        let op = Pending::Write { offset, bytes: bytes.to_vec() };
        apply(&mut node.data, &op);
        apply(&mut node.durable, &op);
    }

    /// Cuts the file at `path` to `len` bytes, both now and on the platter.
    ///
    /// # Panics
    /// If the file does not exist (a test bug).
    pub fn truncate_raw(&self, path: &Path, len: u64) {
        let mut s = self.lock_state();
        let node = s.node_of(path).expect("truncate_raw: no such file");
        node.data.truncate(len as usize);
        node.durable.truncate(len as usize);
    }

    /// Removes the file at `path` at once and durably.
    pub fn remove_raw(&self, path: &Path) {
        let mut s = self.lock_state();
        s.names.remove(path);
        s.durable_names.remove(path);
    }

    /// The bytes a reader of `path` sees now, if it exists.
    pub fn read_raw(&self, path: &Path) -> Option<Vec<u8>> {
        let mut s = self.lock_state();
        s.node_of(path).ok().map(|n| n.data.clone())
    }

    /// The names of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock_state().names.keys().cloned().collect()
    }

    /// The next `n` syncs (of files or directories) fail with an I/O error.
    pub fn fail_next_syncs(&self, n: u64) {
        self.lock_state().syncs_to_fail = n;
    }

    /// Lets `n` syncs (of files or directories) succeed, then fails the one after: a way to
    /// fail each sync of a scripted run in turn.
    pub fn fail_sync_after(&self, n: u64) {
        self.lock_state().sync_fail_countdown = Some(n);
    }

    /// The next `n` reads fail with an I/O error.
    pub fn fail_next_reads(&self, n: u64) {
        self.lock_state().reads_to_fail = n;
    }

    /// Fills the disk (`true`) or frees space on it (`false`). While it is full, every
    /// operation that needs new space fails with `ENOSPC` (see the module documentation). A
    /// crash does not free the disk: the space is still taken when the process comes back.
    pub fn set_full(&self, full: bool) {
        self.lock_state().free_bytes = full.then_some(0);
    }

    /// Lets files grow by `bytes` more in all before the disk is full (`None`: no limit).
    /// Space given back by removing or shrinking files is not counted.
    pub fn set_free_bytes(&self, bytes: Option<u64>) {
        self.lock_state().free_bytes = bytes;
    }

    /// Whether the disk is full (see [`SimDisk::set_full`]).
    pub fn is_full(&self) -> bool {
        self.lock_state().free_bytes == Some(0)
    }

    /// How many operations failed for lack of space so far.
    pub fn no_space_count(&self) -> u64 {
        self.lock_state().no_space_count
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<SimState>>,
    node: u64,
    generation: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation != self.generation {
            return Err(stale());
        }
        f(&mut s)
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let node = self.node;
        self.with(|s| {
            if s.reads_to_fail > 0 {
                s.reads_to_fail -= 1;
                return Err(io::Error::other("simulated read error (EIO)"));
            }
            let data = &s.nodes[&node].data;
            let start = offset as usize;
            let end = start
                .checked_add(buf.len())
                .filter(|&e| e <= data.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
            buf.copy_from_slice(&data[start..end]);
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let node = self.node;
        self.with(|s| {
            s.mutate()?;
            let free = s.free_bytes;
            let n = s.nodes.get_mut(&node).expect("open node");
            let len = n.data.len() as u64;
            let end = offset + buf.len() as u64;
            let growth = end.saturating_sub(len);
            let fits = free.is_none_or(|f| growth <= f);
            // A full disk takes what fits (a short write), then fails.
            let room = len.saturating_sub(offset) + free.unwrap_or(0);
            let bytes = if fits { buf } else { &buf[..(room as usize).min(buf.len())] };
            let grown = (offset + bytes.len() as u64).saturating_sub(len);
            if !bytes.is_empty() {
                let op = Pending::Write { offset, bytes: bytes.to_vec() };
                apply(&mut n.data, &op);
                n.pending.push(op);
            }
            if let Some(f) = s.free_bytes.as_mut() {
                *f -= grown;
            }
            if !fits {
                s.no_space_count += 1;
                return Err(no_space());
            }
            Ok(())
        })
    }

    fn size_bytes(&self) -> io::Result<u64> {
        let node = self.node;
        self.with(|s| Ok(s.nodes[&node].data.len() as u64))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let node = self.node;
        self.with(|s| {
            s.mutate()?;
            s.take_space(node, len)?;
            let n = s.nodes.get_mut(&node).expect("open node");
            let op = Pending::SetLen(len);
            apply(&mut n.data, &op);
            n.pending.push(op);
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let node = self.node;
        self.with(|s| {
            s.mutate()?;
            s.take_space(node, len)?;
            let n = s.nodes.get_mut(&node).expect("open node");
            let op = Pending::Allocate(len);
            apply(&mut n.data, &op);
            n.pending.push(op);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        let node = self.node;
        self.with(|s| {
            s.mutate()?;
            let fail = s.sync_fails();
            let n = s.nodes.get_mut(&node).expect("open node");
            if fail {
                // As on Linux after a failed fsync: the dirty pages are dropped, readers still
                // see them, but they never reach the platter.
                n.pending.clear();
                return Err(io::Error::other("simulated fsync failure (EIO)"));
            }
            // Apply the pending writes rather than copying `data`: writes dropped by an earlier
            // failed sync must stay lost.
            for op in std::mem::take(&mut n.pending) {
                apply(&mut n.durable, &op);
            }
            Ok(())
        })
    }
}

#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<SimState>>,
    dir: PathBuf,
    generation: u64,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation == self.generation {
            s.locks.remove(&self.dir);
        }
    }
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        for a in dir.ancestors() {
            s.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let mut s = self.lock_state();
        let id = match s.names.get(path) {
            Some(&id) => id,
            None if create => {
                if !s.dirs.contains(&parent_of(path)) {
                    return Err(not_found(&parent_of(path)));
                }
                s.mutate()?;
                let id = s.node_next;
                s.node_next += 1;
                s.nodes.insert(id, Node::default());
                s.names.insert(path.to_path_buf(), id);
                id
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile { state: Arc::clone(&self.state), node: id, generation: s.generation }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock_state();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        let id = *s.names.get(from).ok_or_else(|| not_found(from))?;
        s.mutate()?;
        s.names.remove(from);
        s.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        if !s.names.contains_key(path) {
            return Err(not_found(path));
        }
        s.mutate()?;
        s.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock_state();
        s.mutate()?;
        if s.sync_fails() {
            return Err(io::Error::other("simulated directory fsync failure (EIO)"));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        s.durable_names.retain(|p, _| !in_dir(p));
        let current: Vec<(PathBuf, u64)> =
            s.names.iter().filter(|(p, _)| in_dir(p)).map(|(p, id)| (p.clone(), *id)).collect();
        s.durable_names.extend(current);
        Ok(())
    }

    fn lock(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut s = self.lock_state();
        if !s.locks.insert(dir.to_path_buf()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock held by another process"));
        }
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            dir: dir.to_path_buf(),
            generation: s.generation,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_synced_and_unsynced(disk: &SimDisk) -> PathBuf {
        let dir = PathBuf::from("/d");
        disk.create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let f = disk.open(&path, true).unwrap();
        f.write_at(b"synced", 0).unwrap();
        f.sync().unwrap();
        disk.sync_dir(&dir).unwrap();
        f.write_at(b"-unsynced", 6).unwrap();
        path
    }

    #[test]
    fn crash_loses_unsynced_writes_and_unsynced_names() {
        let disk = SimDisk::new(1);
        let path = file_with_synced_and_unsynced(&disk);
        let other = disk.open(Path::new("/d/new"), true).unwrap();
        other.write_at(b"x", 0).unwrap();
        other.sync().unwrap();
        disk.crash(CrashMode::LoseUnsynced);
        assert_eq!(disk.read_raw(&path).unwrap(), b"synced");
        assert_eq!(
            disk.read_raw(Path::new("/d/new")),
            None,
            "a name is durable only after sync_dir"
        );
        assert!(other.size_bytes().is_err(), "handles go stale at a crash");
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_last_write() {
        let disk = SimDisk::new(1);
        let path = file_with_synced_and_unsynced(&disk);
        disk.crash(CrashMode::TearLastWrite { keep_bytes: 3 });
        assert_eq!(disk.read_raw(&path).unwrap(), b"synced-un");
    }

    #[test]
    fn random_prefix_is_deterministic_per_seed_and_always_a_prefix() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..40 {
            let run = |seed| {
                let disk = SimDisk::new(seed);
                let path = file_with_synced_and_unsynced(&disk);
                disk.crash(CrashMode::RandomPrefix);
                disk.read_raw(&path).unwrap()
            };
            let a = run(seed);
            assert_eq!(a, run(seed), "same seed, same outcome");
            assert!(a.starts_with(b"synced"));
            let full = b"synced-unsynced";
            // What survives is the synced bytes plus a prefix of the unsynced write.
            assert!(full.starts_with(&a), "{:?}", String::from_utf8_lossy(&a));
            outcomes.insert(a);
        }
        assert!(outcomes.len() > 2, "the seed should vary the outcome");
    }

    #[test]
    fn halted_disk_refuses_mutations_and_failed_sync_loses_data() {
        let disk = SimDisk::new(1);
        let path = file_with_synced_and_unsynced(&disk);
        let f = disk.open(&path, false).unwrap();
        disk.fail_next_syncs(1);
        assert!(f.sync().is_err());
        assert!(f.sync().is_ok(), "only the next sync fails");
        disk.crash(CrashMode::RandomPrefix);
        assert_eq!(
            disk.read_raw(&path).unwrap(),
            b"synced",
            "writes covered by a failed sync never become durable"
        );
        disk.halt_after(disk.op_count());
        let f = disk.open(&path, false).unwrap();
        assert!(f.write_at(b"z", 0).is_err());
        disk.fail_next_reads(1);
        let mut buf = [0u8; 1];
        assert!(f.read_at(&mut buf, 0).is_err());
        assert!(f.read_at(&mut buf, 0).is_ok());
    }

    #[test]
    fn a_full_disk_refuses_new_space_but_not_writes_within_a_file() {
        let disk = SimDisk::new(1);
        let path = file_with_synced_and_unsynced(&disk);
        let f = disk.open(&path, false).unwrap();
        let len = f.size_bytes().unwrap();
        disk.set_full(true);
        f.write_at(b"S", 0).expect("within the file's length: no new space needed");
        let e = f.write_at(b"-tail", len - 2).unwrap_err();
        assert!(crate::is_no_space(&e), "{e}");
        assert_eq!(f.size_bytes().unwrap(), len, "a short write stops at the end");
        assert_eq!(&disk.read_raw(&path).unwrap()[len as usize - 2..], b"-t");
        assert!(crate::is_no_space(&f.allocate(len + 100).unwrap_err()));
        assert!(crate::is_no_space(&f.set_len(len + 1).unwrap_err()));
        assert!(f.set_len(3).is_ok(), "shrinking needs no space");
        assert_eq!(disk.no_space_count(), 3);
        disk.set_full(false);
        assert!(f.allocate(len + 100).is_ok());
        assert!(f.write_at(b"-tail", len + 100).is_ok());
    }

    #[test]
    fn lock_is_exclusive_until_dropped_or_crash() {
        let disk = SimDisk::new(1);
        let dir = Path::new("/d");
        let g = disk.lock(dir).unwrap();
        assert_eq!(disk.lock(dir).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        drop(g);
        let _g = disk.lock(dir).unwrap();
        disk.crash(CrashMode::LoseUnsynced);
        assert!(disk.lock(dir).is_ok());
    }
}
