//! Seed scenario S11 (snapshots, Raft §7) as scripted runs of the simulator: the production
//! replica code compacts its log by policy and streams snapshots chunk by chunk through the
//! simulated network, and each test places a fault in that path by hand. Every run also
//! passes the world's online checkers, including [`tenure_sim::checkers::Checkers::on_snapshot`]
//! (snapshots hold only committed entries and reproduce the applied prefix's state), and ends
//! with the final checks (log matching, nothing acknowledged lost, converged whole states).
//!
//! Each catch-up test first shows that the follower cannot catch up from the log alone (the
//! leader's log starts past everything the follower holds), so a broken snapshot path fails it
//! rather than being bypassed by ordinary appends.

use tenure_raft::{LogIndex, LogView, NodeId};
use tenure_replica::{Answer, RequestId, SnapshotPolicy};
use tenure_sim::world::{Profile, TransferPoint, World};
use tenure_storage::CrashMode;

/// Keys written per batch: with [`value`]'s 100-byte values the snapshot is a few KiB, so its
/// transfer takes many chunks and has crash points between them.
const KEYS: u64 = 30;

/// Three (or more) quiet nodes that snapshot every 5 entries and keep no log behind a
/// snapshot, so that a follower a few writes behind already needs one.
fn world(nodes: u64) -> World {
    let profile = Profile {
        snapshot: SnapshotPolicy { entries: 5, bytes: 0, catchup_entries: 0 },
        ..Profile::quiet(nodes)
    };
    World::new(11, profile, |_| {})
}

fn run_for(w: &mut World, ms: u64) {
    let t = w.now() + ms;
    w.run_until(t).expect("run");
}

/// Runs until a leader exists (bounded) and returns it.
fn elect(w: &mut World) -> NodeId {
    for _ in 0..300 {
        if let Some(l) = w.leader() {
            return l;
        }
        run_for(w, 10);
    }
    panic!("no leader");
}

fn value(batch: &str, k: u64) -> String {
    format!("{batch}{k}-{}", "x".repeat(100))
}

/// Writes `KEYS` keys of `batch` through `leader`, one a millisecond, and checks each was
/// acknowledged.
fn write_batch(w: &mut World, leader: NodeId, batch: &str) {
    let reqs: Vec<RequestId> = (0..KEYS)
        .map(|k| {
            let req = w.put(leader, &format!("{batch}{k}"), &value(batch, k), None);
            run_for(w, 1);
            req
        })
        .collect();
    run_for(w, 200);
    for (k, req) in reqs.iter().enumerate() {
        let result = w.completion(*req).map(|c| &c.result);
        assert!(matches!(result, Some(Ok(Answer::Write(_)))), "{batch}{k}: {result:?}");
    }
}

fn assert_batch_readable(w: &World, node: NodeId, batch: &str) {
    for k in 0..KEYS {
        let key = format!("{batch}{k}");
        assert_eq!(w.value_at(node, &key), Some(value(batch, k)), "{key} on {node}");
    }
}

fn applied(w: &World, id: NodeId) -> LogIndex {
    w.replica(id).expect("up").node().status().applied
}

fn first_index(w: &World, id: NodeId) -> LogIndex {
    w.replica(id).expect("up").node().log_view().first_index()
}

/// A node other than `leader`.
fn follower_of(leader: NodeId, nodes: u64) -> NodeId {
    NodeId(leader.0 % nodes + 1)
}

/// Cuts `f` off, writes a batch through the rest, and shows that the leader compacted its log
/// past everything `f` holds: only a snapshot can bring `f` up to date.
fn leave_behind(w: &mut World, leader: NodeId, f: NodeId, batch: &str) {
    let nodes = w.profile.nodes;
    let rest: Vec<u64> = (1..=nodes).filter(|i| *i != f.0).collect();
    w.set_partition(&[&[f.0], &rest]);
    write_batch(w, leader, batch);
    let f_last = w.replica(f).map_or(LogIndex(0), |r| r.node().last_index());
    assert!(
        first_index(w, leader).0 > f_last.0 + 1,
        "the leader's log starts at {} but {f} holds entries only through {f_last}",
        first_index(w, leader)
    );
}

/// Runs (bounded) until every running node has applied what the leader applied.
fn catch_up(w: &mut World) -> NodeId {
    for _ in 0..300 {
        run_for(w, 10);
        let Some(leader) = w.leader() else { continue };
        // Everything the leader holds, its own no-op included: a new leader's applied index
        // lags until that no-op commits (a restarted node's durable commit index may lag too).
        let target = w.replica(leader).expect("up").node().last_index();
        let up: Vec<NodeId> =
            (1..=w.profile.nodes).map(NodeId).filter(|id| w.replica(*id).is_some()).collect();
        if up.iter().all(|id| applied(w, *id) >= target) {
            return leader;
        }
    }
    panic!("the cluster did not catch up");
}

/// Runs in small steps (bounded) until the scripted transfer crash has happened.
/// Runs (at most a simulated second) until a transfer to `to` has written `chunks` chunks.
fn transfer_under_way(
    w: &mut World,
    to: NodeId,
    chunks: usize,
) -> Option<tenure_sim::world::TransferStatus> {
    for _ in 0..1000 {
        run_for(w, 1);
        if let Some(t) = w.transfers().into_iter().find(|t| t.to == to && t.chunks_done >= chunks) {
            return Some(t);
        }
    }
    None
}

fn run_until_transfer_crash(w: &mut World) {
    for _ in 0..2000 {
        if !w.transfer_crash_pending() {
            return;
        }
        run_for(w, 1);
    }
    panic!("the scripted crash during a snapshot transfer never came");
}

#[test]
fn s11_follower_behind_compacted_log_catches_up_by_snapshot() {
    let mut w = world(3);
    let leader = elect(&mut w);
    let f = follower_of(leader, 3);
    leave_behind(&mut w, leader, f, "a");
    assert_eq!(w.snapshots_installed, 0, "nothing installed while {f} was cut off");
    assert!(w.snapshots_taken >= 2, "the other nodes compacted their logs");
    w.heal();
    let leader = catch_up(&mut w);
    let stats = w.replica(f).expect("up").snapshot_stats();
    assert!(stats.installed >= 1, "{f} caught up by installing a snapshot: {stats:?}");
    assert!(w.snapshots_installed >= stats.installed, "the world counted the install");
    assert!(first_index(&w, f) > LogIndex(1), "{f}'s log starts after the installed snapshot");
    assert_eq!(applied(&w, f), applied(&w, leader));
    assert_batch_readable(&w, f, "a");
    // Writes after the install reach it through ordinary appends.
    write_batch(&mut w, leader, "b");
    catch_up(&mut w);
    assert_batch_readable(&w, f, "b");
    w.check_now().unwrap();
}

#[test]
fn s11_snapshot_transfer_streams_in_many_chunks() {
    // The crash tests below place crashes between chunks; this shows there are chunks to
    // place them between.
    let mut w = world(3);
    let leader = elect(&mut w);
    let f = follower_of(leader, 3);
    leave_behind(&mut w, leader, f, "a");
    w.set_transfer_bytes_per_ms(16);
    w.heal();
    let t = transfer_under_way(&mut w, f, 1).expect("a snapshot transfer to the follower");
    assert_eq!(t.from, leader);
    assert!(t.chunks_total >= 4, "a {KEYS}-key snapshot crosses in several chunks: {t:?}");
    assert!(t.chunks_done < t.chunks_total, "seen part way through: {t:?}");
    catch_up(&mut w);
    assert_batch_readable(&w, f, "a");
    w.check_now().unwrap();
}

#[test]
fn s11_follower_crash_during_snapshot_install() {
    let points = [
        (TransferPoint::AfterChunks(1), CrashMode::LoseUnsynced),
        (TransferPoint::AfterChunks(3), CrashMode::TearLastWrite { keep_bytes: 5 }),
        (TransferPoint::Staged, CrashMode::RandomPrefix),
        (TransferPoint::Staged, CrashMode::LoseUnsynced),
        (TransferPoint::Stepped, CrashMode::LoseUnsynced),
        (TransferPoint::Stepped, CrashMode::RandomPrefix),
    ];
    for (point, mode) in points {
        let mut w = world(3);
        let leader = elect(&mut w);
        let f = follower_of(leader, 3);
        leave_behind(&mut w, leader, f, "a");
        w.crash_during_transfer(f, point, mode);
        w.heal();
        run_until_transfer_crash(&mut w);
        assert!(w.replica(f).is_none(), "{f} crashed at {point:?}");
        // The cluster moves on while the follower is down; it falls further behind.
        write_batch(&mut w, leader, "b");
        // Whatever the crash left (a partial staging file, a durable staged snapshot, an
        // unsynced install), the restarted follower must end with the leader's state. Storage
        // may open a staged snapshot it never stepped: it holds only committed entries, and
        // the checkers vouch for its state ("restored").
        w.restart(f).unwrap();
        let leader = catch_up(&mut w);
        assert_eq!(applied(&w, f), applied(&w, leader), "{point:?} {mode:?}");
        assert!(first_index(&w, f) > LogIndex(1), "{f} holds a snapshot after {point:?} {mode:?}");
        assert!(w.snapshots_installed >= 1, "{point:?} {mode:?}");
        assert_batch_readable(&w, f, "a");
        assert_batch_readable(&w, f, "b");
        w.check_now().unwrap_or_else(|e| panic!("{point:?} {mode:?}: {e:?}"));
    }
}

#[test]
fn s11_leader_crash_during_snapshot_transfer() {
    for (point, mode) in [
        (TransferPoint::AfterChunks(2), CrashMode::LoseUnsynced),
        (TransferPoint::Staged, CrashMode::RandomPrefix),
    ] {
        let mut w = world(3);
        let old = elect(&mut w);
        let f = follower_of(old, 3);
        leave_behind(&mut w, old, f, "a");
        w.crash_during_transfer(old, point, mode);
        w.heal();
        run_until_transfer_crash(&mut w);
        assert!(w.replica(old).is_none(), "the leader crashed at {point:?}");
        assert_eq!(w.snapshots_installed, 0, "the transfer died with its sender");
        // The third node, the only one with the whole log, is elected and sends its own
        // snapshot to the follower.
        let new = elect(&mut w);
        assert_ne!(new, old);
        assert_ne!(new, f, "a follower missing committed entries cannot win an election");
        let leader = catch_up(&mut w);
        assert_eq!(leader, new);
        assert!(w.replica(f).expect("up").snapshot_stats().installed >= 1, "{point:?}");
        assert_batch_readable(&w, f, "a");
        w.restart(old).unwrap();
        catch_up(&mut w);
        assert_batch_readable(&w, old, "a");
        w.check_now().unwrap_or_else(|e| panic!("{point:?} {mode:?}: {e:?}"));
    }
}

#[test]
fn s11_snapshot_transfer_cut_by_partition_is_retried() {
    let mut w = world(3);
    let leader = elect(&mut w);
    let f = follower_of(leader, 3);
    leave_behind(&mut w, leader, f, "a");
    // Slow enough that the partition falls in the middle of the stream.
    w.set_transfer_bytes_per_ms(4);
    w.heal();
    assert!(transfer_under_way(&mut w, f, 2).is_some(), "a snapshot transfer to {f} got under way");
    let failed_before = w.transfers_failed;
    w.set_partition(&[&[f.0], &(1..=3).filter(|i| *i != f.0).collect::<Vec<_>>()]);
    run_for(&mut w, 300);
    assert!(w.transfers_failed > failed_before, "the cut stream was reported Failed");
    assert_eq!(w.snapshots_installed, 0, "nothing was installed from the cut stream");
    w.set_transfer_bytes_per_ms(1024);
    w.heal();
    let leader = catch_up(&mut w);
    assert!(w.replica(f).expect("up").snapshot_stats().installed >= 1, "the leader sent again");
    assert_eq!(applied(&w, f), applied(&w, leader));
    assert_batch_readable(&w, f, "a");
    w.check_now().unwrap();
}

#[test]
fn s11_restart_from_snapshot_plus_log_tail() {
    let mut w = world(3);
    let leader = elect(&mut w);
    write_batch(&mut w, leader, "a");
    // Two more writes, fewer than a snapshot's five: every node's log ends in a tail of
    // entries after its newest snapshot.
    for k in 0..2 {
        w.put(leader, &format!("tail{k}"), &value("tail", k), None);
    }
    run_for(&mut w, 200);
    let f = follower_of(leader, 3);
    let snapshot = w.replica(f).expect("up").node().log_view().snapshot_point();
    let last = w.replica(f).expect("up").node().last_index();
    assert!(snapshot.index > LogIndex(0) && snapshot.index < last, "{snapshot} then up to {last}");
    let applied_before = applied(&w, f);
    let installs_before = w.snapshots_installed;
    // Everything is synced; the follower restarts cut off, so that all it holds afterwards
    // comes from its own disk.
    w.crash(f, CrashMode::LoseUnsynced);
    w.set_partition(&[&[f.0], &(1..=3).filter(|i| *i != f.0).collect::<Vec<_>>()]);
    w.restart(f).unwrap();
    let r = w.replica(f).expect("up");
    assert_eq!(r.node().log_view().snapshot_point(), snapshot, "restarted from its snapshot");
    assert_eq!(r.node().last_index(), last, "the log tail survived");
    assert_eq!(w.snapshots_installed, installs_before, "nothing came from a leader");
    assert_batch_readable(&w, f, "a");
    // The tail is re-applied up to the durable commit index. That may lag what was applied
    // before the crash: a commit-index-only change is written without a sync of its own
    // (`Ready::must_sync`), and the rest is relearned from the leader.
    let reapplied = applied(&w, f);
    assert!(
        snapshot.index <= reapplied && reapplied <= applied_before,
        "re-applied {reapplied}: between the snapshot {snapshot} and {applied_before}"
    );
    w.heal();
    catch_up(&mut w);
    assert!(applied(&w, f) >= applied_before, "the rest of the tail is applied after the heal");
    for k in 0..2 {
        assert_eq!(w.value_at(f, &format!("tail{k}")), Some(value("tail", k)), "tail{k}");
    }
    // The whole cluster restarts from snapshots and tails, and keeps every write.
    for id in 1..=3 {
        w.crash(NodeId(id), CrashMode::LoseUnsynced);
    }
    for id in 1..=3 {
        w.restart(NodeId(id)).unwrap();
    }
    catch_up(&mut w);
    for id in 1..=3 {
        assert_batch_readable(&w, NodeId(id), "a");
        for k in 0..2 {
            assert_eq!(w.value_at(NodeId(id), &format!("tail{k}")), Some(value("tail", k)));
        }
    }
    w.check_now().unwrap();
}

#[test]
fn s11_log_compacted_through_its_last_entry_still_holds_every_acknowledged_write() {
    // The leader's no-op and four puts make five entries: every node snapshots through its
    // last entry and keeps no log at all. The final checks must read such a log as starting at
    // its snapshot point, not as an empty log that lost every acknowledged write.
    let mut w = world(3);
    let leader = elect(&mut w);
    let reqs: Vec<RequestId> = (0..4).map(|k| w.put(leader, &format!("k{k}"), "v", None)).collect();
    run_for(&mut w, 200);
    for req in reqs {
        assert!(matches!(w.completion(req).map(|c| &c.result), Some(Ok(Answer::Write(_)))));
    }
    for id in (1..=3).map(NodeId) {
        let n = w.replica(id).expect("up").node();
        assert_eq!(n.log_view().snapshot_point().index, n.last_index(), "{id}'s log is compacted");
        assert_eq!(first_index(&w, id).0, n.last_index().0 + 1, "{id} holds no entries");
    }
    w.check_now().unwrap();
}
