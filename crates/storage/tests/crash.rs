//! Crash at every point of a scripted sequence of operations, enumerated rather than sampled.
//!
//! The script mixes appends (some overwriting a conflicting suffix), explicit truncations,
//! compactions that delete whole segments, a reset to a snapshot, hard state and membership
//! changes, and syncs, on tiny segments so that segments rotate often. Some syncs are split
//! as the server runs them (`begin_sync`, more appends, then `wait` and `finish_sync`), so
//! rollovers happen while a ticket is out. Every disk operation of a sync ticket is a crash
//! point too: the fsyncs, the deletion of released segments, and the preparation of the next
//! segment file (create, allocate, fsync), as is the rename that puts it into use. For every k, the disk
//! cuts the power after its k-th mutating operation; the process then crashes (losing all
//! unsynced writes, a random prefix of them, or all but a torn last write), reopens, and the
//! recovered state is checked against a model:
//!
//! **The recovered state equals the model's state after some prefix of the records issued, and
//! that prefix contains every record issued before the last successful sync.** No torn entry,
//! no entry truncated before a sync coming back, no corruption error.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tenure_raft::{Entry, EntryId, HardState, LogIndex, LogView, Membership, NodeId, Term};
use tenure_storage::{CrashMode, Options, SimDisk, Storage, StorageError, SyncTicket};

const DIR: &str = "/node1";

fn options() -> Options {
    Options {
        segment_bytes_max: 4096,
        entry_bytes_max: 1024,
        membership_bytes_max: 256,
        write_buffer_bytes_max: 700,
        cache_bytes_max: 900,
    }
}

fn entry(term: u64, index: u64) -> Entry {
    let pad = "p".repeat((index * 7 % 90) as usize);
    Entry::new(Term(term), LogIndex(index), Bytes::from(format!("{term}/{index}{pad}")))
}

fn entries(term: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| entry(term, i)).collect()
}

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Entry>),
    Truncate(u64),
    Compact(u64),
    Reset(EntryId, Membership),
    HardState(HardState),
    Membership(Membership),
    Sync,
    /// `begin_sync`: the ticket stays out while the next operations run.
    BeginSync,
    /// `wait` on the ticket, then `finish_sync`.
    FinishSync,
}

fn script() -> Vec<Op> {
    let hs = |term, vote: Option<u64>, commit| {
        Op::HardState(HardState {
            term: Term(term),
            vote: vote.map(NodeId),
            commit: LogIndex(commit),
        })
    };
    let voters = |ids: &[u64]| Membership::voters(ids.iter().copied().map(NodeId));
    vec![
        Op::Membership(voters(&[1, 2, 3])),
        hs(1, Some(1), 0),
        Op::Append(entries(1, 1, 30)),
        Op::Sync,
        Op::Append(entries(1, 31, 60)),
        hs(1, Some(1), 20),
        Op::Sync,
        Op::Append(entries(2, 50, 70)),
        Op::Sync,
        Op::Truncate(65),
        Op::Append(entries(3, 65, 90)),
        Op::Sync,
        Op::Compact(45),
        Op::Sync,
        Op::Append(entries(3, 91, 120)),
        hs(3, Some(2), 80),
        Op::Membership(voters(&[1, 2, 3, 4])),
        Op::Sync,
        Op::Compact(100),
        Op::Append(entries(3, 121, 130)),
        Op::Sync,
        Op::BeginSync,
        Op::Append(entries(3, 131, 180)),
        Op::FinishSync,
        Op::Compact(125),
        Op::BeginSync,
        Op::Append(entries(3, 181, 190)),
        Op::FinishSync,
        Op::Sync,
        Op::Reset(EntryId::new(Term(4), LogIndex(200)), voters(&[1, 2])),
        Op::Append(entries(4, 201, 210)),
        hs(4, None, 200),
        Op::Sync,
        Op::Append(entries(4, 211, 215)),
        Op::Truncate(213),
    ]
}

/// What a log should hold: the model the storage is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Model {
    base: EntryId,
    entries: Vec<Entry>,
    hard_state: HardState,
    membership: Membership,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.base.index.0 + self.entries.len() as u64
    }

    fn truncate(&mut self, from: u64) {
        self.entries.truncate((from - self.base.index.0 - 1) as usize);
    }

    /// Applies an operation, one record at a time: `states` receives the model after each
    /// record the storage writes.
    fn apply(&mut self, op: &Op, states: &mut Vec<Model>) {
        match op {
            Op::Append(es) => {
                if es[0].index().0 <= self.last_index() {
                    self.truncate(es[0].index().0);
                    states.push(self.clone());
                }
                for e in es {
                    self.entries.push(e.clone());
                    states.push(self.clone());
                }
            }
            Op::Truncate(from) => {
                if *from <= self.last_index() {
                    self.truncate(*from);
                    states.push(self.clone());
                }
            }
            Op::Compact(upto) => {
                let n = (upto - self.base.index.0) as usize;
                self.base = self.entries[n - 1].id;
                self.entries.drain(..n);
                states.push(self.clone());
            }
            Op::Reset(base, m) => {
                self.base = *base;
                self.entries.clear();
                self.membership = m.clone();
                states.push(self.clone());
            }
            Op::HardState(hs) => {
                if *hs != self.hard_state {
                    self.hard_state = *hs;
                    states.push(self.clone());
                }
            }
            Op::Membership(m) => {
                if *m != self.membership {
                    self.membership = m.clone();
                    states.push(self.clone());
                }
            }
            Op::Sync | Op::BeginSync | Op::FinishSync => {}
        }
    }
}

fn empty_model() -> Model {
    Model {
        base: EntryId::default(),
        entries: Vec::new(),
        hard_state: HardState::default(),
        membership: Membership::default(),
    }
}

fn observe(s: &Storage) -> Model {
    let (first, last) = (s.first_index(), s.last_index());
    let entries = if first <= last {
        s.read_entries(first, last).expect("read the recovered log")
    } else {
        Vec::new()
    };
    let base_term = s.term(first.prev()).expect("term of the snapshot point");
    Model {
        base: EntryId::new(base_term, first.prev()),
        entries,
        hard_state: s.initial_state().hard_state,
        membership: s.initial_state().membership,
    }
}

fn open(disk: &SimDisk) -> Result<Storage, StorageError> {
    Storage::open(Arc::new(disk.clone()), DIR, options())
}

/// What a run without faults went through, to show the script exercises the sync path.
#[derive(Debug, Default)]
struct Seen {
    /// Rollovers into a segment prepared by a sync ticket.
    prepared_rollovers: usize,
    /// Segments released by a compaction (deleted by a later ticket).
    released_segments: usize,
}

/// Runs the script until the disk refuses an operation. Returns the model states after each
/// record (`states[0]` is the empty log) and how many records were issued before the last
/// successful sync.
fn run(disk: &SimDisk, script: &[Op]) -> (Vec<Model>, usize) {
    let (states, synced, _) = run_seeing(disk, script);
    (states, synced)
}

fn run_seeing(disk: &SimDisk, script: &[Op]) -> (Vec<Model>, usize, Seen) {
    let mut states = vec![empty_model()];
    let mut model = empty_model();
    let mut synced = 0;
    let mut seen = Seen::default();
    let Ok(mut s) = open(disk) else {
        return (states, synced, seen);
    };
    // The ticket out, and how many records it covers.
    let mut ticket: Option<(SyncTicket, usize)> = None;
    for op in script {
        model.apply(op, &mut states);
        let (prepared, segments, released) =
            (s.has_prepared_segment(), s.segment_count(), s.released_segment_count());
        let r = match op {
            Op::Append(es) => s.append(es),
            Op::Truncate(from) => s.truncate_suffix(LogIndex(*from)),
            Op::Compact(upto) => s.compact(LogIndex(*upto)),
            Op::Reset(base, m) => s.reset_to_snapshot(*base, m.clone()),
            Op::HardState(hs) => s.set_hard_state(*hs),
            Op::Membership(m) => s.set_membership(m.clone()),
            Op::Sync => s.sync().map(|_| ()),
            Op::BeginSync => s.begin_sync().map(|t| ticket = Some((t, states.len() - 1))),
            Op::FinishSync => {
                let (t, covered) = ticket.take().expect("the script begins a sync first");
                s.finish_sync(t.wait()).map(|_| synced = covered)
            }
        };
        if prepared && !s.has_prepared_segment() && s.segment_count() > segments {
            seen.prepared_rollovers += 1;
        }
        seen.released_segments += s.released_segment_count().saturating_sub(released);
        if r.is_err() {
            if let Some((t, _)) = ticket.take() {
                let _ = s.finish_sync(t.wait());
            }
            assert!(
                matches!(s.sync(), Err(StorageError::Poisoned { .. })),
                "after a failed {op:?} the storage refuses further writes"
            );
            break;
        }
        if matches!(op, Op::Sync) {
            synced = states.len() - 1;
        }
        // Without faults the storage must show exactly the model, before any sync.
        assert_eq!(observe(&s), model, "live view after {op:?}");
    }
    (states, synced, seen)
}

/// Reopens and checks the recovered state; returns which record's state it is.
fn check_recovered(disk: &SimDisk, states: &[Model], synced: usize, what: &str) -> usize {
    let s = open(disk).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let got = observe(&s);
    let found = states.iter().enumerate().rposition(|(_, m)| *m == got);
    match found {
        Some(j) if j >= synced => j,
        Some(j) => {
            panic!("{what}: recovered the state after record {j}, but {synced} records were synced")
        }
        None => panic!("{what}: recovered a state that is no prefix of the script: {got:#?}"),
    }
}

#[test]
fn the_script_rolls_over_into_prepared_segments_and_releases_compacted_ones() {
    let (_, _, seen) = run_seeing(&SimDisk::new(0), &script());
    assert!(seen.prepared_rollovers >= 3, "{seen:?}");
    assert!(seen.released_segments >= 3, "{seen:?}");
    // And the random scripts too, taken together.
    let mut total = Seen::default();
    for seed in 0..12 {
        let (_, _, seen) = run_seeing(&SimDisk::new(seed), &random_script(seed, 60));
        total.prepared_rollovers += seen.prepared_rollovers;
        total.released_segments += seen.released_segments;
    }
    assert!(total.prepared_rollovers >= 10, "{total:?}");
    assert!(total.released_segments >= 10, "{total:?}");
}

#[test]
fn crash_after_every_disk_operation_recovers_a_prefix_containing_everything_synced() {
    let total = {
        let disk = SimDisk::new(0);
        let (states, synced) = run(&disk, &script());
        assert_eq!(synced + 6, states.len() - 1, "the whole script ran");
        disk.op_count()
    };
    assert!(total > 40, "the script exercises the disk ({total} ops)");
    let modes = [
        CrashMode::LoseUnsynced,
        CrashMode::RandomPrefix,
        CrashMode::TearLastWrite { keep_bytes: 5 },
        CrashMode::TearLastWrite { keep_bytes: 150 },
    ];
    let mut partial_survivals = 0;
    for k in 0..=total {
        for (m, mode) in modes.iter().enumerate() {
            let disk = SimDisk::new(k * 31 + m as u64);
            disk.halt_after(k);
            let (states, synced) = run(&disk, &script());
            disk.crash(*mode);
            let what = format!("crash after op {k} ({mode:?})");
            // Crash again at every step of the recovery itself, then recover for real.
            let recovery_ops = {
                let probe = disk.fork();
                let before = probe.op_count();
                drop(open(&probe).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}")));
                probe.op_count() - before
            };
            for r in 0..recovery_ops {
                let again = disk.fork();
                again.halt_after(again.op_count() + r);
                let _ = open(&again);
                again.crash(CrashMode::RandomPrefix);
                check_recovered(
                    &again,
                    &states,
                    synced,
                    &format!("{what}, then during recovery op {r}"),
                );
            }
            let j = check_recovered(&disk, &states, synced, &what);
            if j > synced && j + 1 < states.len() {
                partial_survivals += 1;
            }
        }
    }
    assert!(
        partial_survivals > 20,
        "crashes should often keep part of the unsynced records ({partial_survivals})"
    );
}

/// A small deterministic generator for random scripts.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// A random but valid script: appends (some overwriting), truncations, compactions, resets,
/// hard state and membership changes and syncs, with payloads of random size.
fn random_script(seed: u64, len: usize) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut model = empty_model();
    let mut term = 1;
    let mut ops = Vec::new();
    let mut ticket_out = false;
    while ops.len() < len {
        let last = model.last_index();
        let base = model.base.index.0;
        let op = match rng.below(100) {
            0..=44 => {
                if rng.below(10) == 0 {
                    term += 1;
                }
                let from = if last > base && rng.below(5) == 0 {
                    base + 1 + rng.below(last - base)
                } else {
                    last + 1
                };
                let n = 1 + rng.below(8);
                let es = (from..from + n)
                    .map(|i| {
                        let size = rng.below(300) as usize;
                        Entry::new(
                            Term(term),
                            LogIndex(i),
                            Bytes::from(vec![b'a' + (i % 26) as u8; size]),
                        )
                    })
                    .collect();
                Op::Append(es)
            }
            45..=52 if last > base => Op::Truncate(base + 1 + rng.below(last - base)),
            53..=60 if last > base => Op::Compact(base + 1 + rng.below(last - base)),
            61..=62 => Op::Reset(
                EntryId::new(Term(term), LogIndex(last + rng.below(20))),
                Membership::voters([NodeId(1 + rng.below(5))]),
            ),
            63..=72 => Op::HardState(HardState {
                term: Term(term),
                vote: Some(NodeId(rng.below(3))),
                commit: LogIndex(rng.below(last + 1)),
            }),
            73..=76 => Op::Membership(Membership::voters((1..=1 + rng.below(4)).map(NodeId))),
            _ if ticket_out => Op::FinishSync,
            _ if rng.below(2) == 0 => Op::BeginSync,
            _ => Op::Sync,
        };
        match op {
            Op::BeginSync => ticket_out = true,
            Op::FinishSync => ticket_out = false,
            _ => {}
        }
        model.apply(&op, &mut Vec::new());
        ops.push(op);
    }
    if ticket_out {
        ops.push(Op::FinishSync);
    }
    ops.push(Op::Append(entries(term, model.last_index() + 1, model.last_index() + 2)));
    ops
}

#[test]
fn random_scripts_crashed_at_every_disk_operation_recover_a_synced_prefix() {
    for seed in 0..12 {
        let script = random_script(seed, 60);
        let total = {
            let disk = SimDisk::new(seed);
            run(&disk, &script);
            disk.op_count()
        };
        for k in 0..=total {
            let disk = SimDisk::new(seed * 1000 + k);
            disk.halt_after(k);
            let (states, synced) = run(&disk, &script);
            disk.crash(CrashMode::RandomPrefix);
            check_recovered(&disk, &states, synced, &format!("seed {seed}, crash after op {k}"));
        }
    }
}

#[test]
fn the_checker_rejects_a_lost_synced_record() {
    // Show the check can fail: drop the durable tail behind the storage's back.
    let disk = SimDisk::new(1);
    let (states, synced) = run(&disk, &script());
    let last_segment =
        disk.paths().into_iter().rfind(|p| p.extension().is_some_and(|e| e == "wal")).unwrap();
    disk.crash(CrashMode::LoseUnsynced);
    // Zero the whole segment after its header: its synced records vanish as if never written.
    let data = disk.read_raw(&last_segment).unwrap();
    let header = tenure_storage::record::decode_frame(&data).unwrap().frame_bytes;
    disk.write_raw(&last_segment, header as u64, &vec![0u8; data.len() - header]);
    let result = std::panic::catch_unwind(|| check_recovered(&disk, &states, synced, "tampered"));
    assert!(result.is_err(), "losing synced records must fail the check");
}

#[test]
fn failing_each_sync_in_turn_poisons_the_storage_and_recovers_a_synced_prefix() {
    let mut n = 0;
    loop {
        let disk = SimDisk::new(n);
        disk.fail_sync_after(n);
        let (states, synced) = run(&disk, &script());
        let failed = disk.op_count() < {
            let clean = SimDisk::new(n);
            run(&clean, &script());
            clean.op_count()
        };
        if !failed {
            assert!(n > 5, "the script syncs several times ({n})");
            break;
        }
        disk.crash(CrashMode::RandomPrefix);
        check_recovered(&disk, &states, synced, &format!("sync {n} failed"));
        n += 1;
    }
}

#[test]
fn failed_fsync_poisons_the_storage_and_keeps_only_what_was_synced() {
    let disk = SimDisk::new(2);
    let mut s = open(&disk).unwrap();
    s.append(&entries(1, 1, 10)).unwrap();
    s.sync().unwrap();
    s.append(&entries(1, 11, 20)).unwrap();
    disk.fail_next_syncs(1);
    assert!(matches!(s.sync(), Err(StorageError::SyncFailed { .. })));
    assert!(matches!(s.append(&entries(1, 21, 21)), Err(StorageError::Poisoned { .. })));
    assert!(
        matches!(s.sync(), Err(StorageError::Poisoned { .. })),
        "the failed fsync is never retried"
    );
    assert_eq!(s.last_index(), LogIndex(20), "reads still see what was written");
    drop(s);
    disk.crash(CrashMode::RandomPrefix);
    let s = open(&disk).unwrap();
    assert_eq!(s.last_index(), LogIndex(10));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
    let disk = SimDisk::new(3);
    let s = open(&disk).unwrap();
    let err = open(&disk).unwrap_err();
    assert!(matches!(err, StorageError::Locked { .. }));
    assert_eq!(err.to_string(), format!("data directory {DIR} is locked by another process"));
    drop(s);
    open(&disk).unwrap();
}

#[test]
fn real_disk_lock_keeps_a_second_opener_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let disk = Arc::new(tenure_storage::RealDisk);
    let mut s = Storage::open(disk.clone(), &dir, options()).unwrap();
    s.append(&entries(1, 1, 50)).unwrap();
    s.sync().unwrap();
    let err = Storage::open(disk.clone(), &dir, options()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("data directory {} is locked by another process", dir.display())
    );
    drop(s);
    let s = Storage::open(disk, Path::new(&dir), options()).unwrap();
    assert_eq!(s.read_entries(LogIndex(1), LogIndex(50)).unwrap(), entries(1, 1, 50));
}
