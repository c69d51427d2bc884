//! The storage under the real consensus core: a single-voter `tenure_raft::Node` whose
//! `LogView` is a `Storage`, driven the way the replica loop drives it (take a `Ready`, append
//! its entries and hard state, sync once, acknowledge). After a crash that loses everything
//! unsynced, the restarted node comes back with every entry it acknowledged.

use std::sync::Arc;

use bytes::Bytes;
use tenure_raft::{Config, EntryKind, LogIndex, LogView, Membership, Node, NodeId, Role};
use tenure_storage::{CrashMode, Options, SimDisk, Storage};

fn open(disk: &SimDisk) -> Storage {
    let options = Options { segment_bytes_max: 8192, ..Options::default() };
    let options = Options { entry_bytes_max: 1024, membership_bytes_max: 1024, ..options };
    Storage::open(Arc::new(disk.clone()), "/raft", options).expect("open")
}

/// Handles every pending `Ready`: persist with one sync, acknowledge, and return what was
/// committed.
fn drive(node: &mut Node<Storage>) -> Vec<Bytes> {
    let mut applied = Vec::new();
    while node.has_ready() {
        let ready = node.ready();
        if ready.must_persist() {
            let storage = node.log_view_mut();
            storage.append(&ready.entries).unwrap();
            if let Some(hs) = ready.hard_state {
                storage.set_hard_state(hs).unwrap();
            }
            storage.sync().unwrap();
        }
        node.on_persisted(ready.number);
        for e in &ready.committed_entries {
            if e.kind == EntryKind::Normal {
                applied.push(e.data.clone());
            }
        }
        if let Some(last) = ready.committed_entries.last() {
            node.on_applied(last.index());
        }
    }
    applied
}

fn elect(node: &mut Node<Storage>) {
    for _ in 0..100 {
        if node.role() == Role::Leader {
            return;
        }
        node.tick();
        drive(node);
    }
    panic!("a single voter should elect itself");
}

#[test]
fn single_node_commits_through_storage_and_keeps_it_across_a_crash() {
    let disk = SimDisk::new(9);
    let mut storage = open(&disk);
    storage.set_membership(Membership::voters([NodeId(1)])).unwrap();
    storage.sync().unwrap();
    let mut node = Node::new(Config::new(NodeId(1)), storage).unwrap();
    elect(&mut node);
    let mut applied = Vec::new();
    for i in 0..200 {
        node.propose(Bytes::from(format!("put k{i}"))).unwrap();
        if i % 7 == 0 {
            applied.extend(drive(&mut node));
        }
    }
    applied.extend(drive(&mut node));
    assert_eq!(applied.len(), 200, "everything proposed was committed");
    let committed = node.committed();
    let term = node.term();
    // An unsynced proposal that must not be needed after the crash.
    node.propose(Bytes::from_static(b"unsynced")).unwrap();
    drop(node);
    disk.crash(CrashMode::LoseUnsynced);

    let storage = open(&disk);
    assert!(storage.last_index() >= committed);
    assert_eq!(storage.initial_state().hard_state.term, term);
    assert!(storage.initial_state().hard_state.commit <= committed);
    let log = storage.read_entries(storage.first_index(), committed).unwrap();
    let normal: Vec<Bytes> =
        log.into_iter().filter(|e| e.kind == EntryKind::Normal).map(|e| e.data).collect();
    assert_eq!(normal, applied, "the log holds exactly what was applied, in order");

    let mut node = Node::new(Config::new(NodeId(1)), storage).unwrap();
    elect(&mut node);
    assert!(node.term() > term);
    node.propose(Bytes::from_static(b"after restart")).unwrap();
    let more = drive(&mut node);
    assert!(more.ends_with(&[Bytes::from_static(b"after restart")]));
    assert!(node.committed() > LogIndex(committed.0));
}
