//! A full disk (issue 18): a replica whose disk fills keeps running, acknowledges and votes for
//! nothing it has not made durable (Raft's persistence rule, Figure 2), refuses proposals with
//! [`ClientError::DiskFull`], hands leadership over, and catches up by itself once space is
//! freed. Segments are tiny so that the log needs new space within a few entries.

use tenure_raft::{LogIndex, LogView, NodeId};
use tenure_replica::{Answer, ClientError, RequestId, SnapshotPolicy};
use tenure_storage::CrashMode;

mod common;

use common::{Net, Setup, open};

/// Segments of 8 KiB fill within a few dozen writes; 64 MiB (the default) never do in a test.
const SMALL_SEGMENT_BYTES: u64 = 8192;
const LARGE_SEGMENT_BYTES: u64 = 64 << 20;

/// Three replicas with the snapshot `policy` and log segments of `segment_bytes`.
fn net(policy: SnapshotPolicy, segment_bytes: u64) -> Net {
    Net::with(Setup {
        policy,
        storage: Some(tenure_storage::Options {
            segment_bytes_max: segment_bytes,
            entry_bytes_max: 1024,
            membership_bytes_max: 256,
            write_buffer_bytes_max: 700,
            cache_bytes_max: 1 << 20,
        }),
        ..Setup::default()
    })
}

fn acknowledged(net: &Net, id: RequestId) -> bool {
    matches!(net.done.get(&id).map(|c| &c.result), Some(Ok(Answer::Write(_))))
}

/// What `id` would recover if it crashed now, losing every unsynced write (its disk is forked,
/// so the run goes on): the last index of its durable log.
fn durable_last_index(net: &Net, id: NodeId) -> LogIndex {
    let disk = net.disks[&id].fork();
    disk.crash(CrashMode::LoseUnsynced);
    disk.set_full(false);
    open(id, &disk, &net.setup).node().log_view().last_index()
}

/// `n` writes through the leader, each followed by a tick.
fn put_many(net: &mut Net, n: u32, prefix: &str) -> Vec<RequestId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let leader = net.leader();
        let w = net.put(leader, &format!("{prefix}{i}"), &"v".repeat(100));
        net.settle();
        net.tick(1);
        ids.push(w);
    }
    ids
}

#[test]
fn a_follower_with_a_full_disk_acknowledges_only_what_is_durable_and_catches_up_once_freed() {
    let mut net = net(SnapshotPolicy::disabled(), SMALL_SEGMENT_BYTES);
    let leader = net.leader();
    let full = NodeId(leader.0 % 3 + 1);
    net.disks[&full].set_full(true);
    let writes = put_many(&mut net, 120, "k");
    // The other two commit and acknowledge everything.
    assert!(writes.iter().all(|w| acknowledged(&net, *w)), "a majority with space commits");
    let r = &net.replicas[&full];
    assert!(r.disk_full(), "the log needed a new segment and found no space");
    assert!(r.no_space_total() > 0);
    let committed = net.replicas[&leader].node().committed();
    assert!(r.node().status().persisted < committed, "it fell behind");
    // Nothing acknowledged that is not durable: a crash now keeps everything it acked.
    let acked = net.acked.get(&full).copied().unwrap_or_default();
    let durable = durable_last_index(&net, full);
    assert!(acked <= durable, "acknowledged {acked}, durable only through {durable}");
    // Writes through it fail at once with a clear error; serializable reads still work.
    let w = net.put(full, "through-full", "x");
    assert_eq!(net.done[&w].result, Err(ClientError::DiskFull));
    // Space comes back: it writes, syncs, acknowledges and catches up by itself.
    net.disks[&full].set_full(false);
    net.tick(150);
    let r = &net.replicas[&full];
    assert!(!r.disk_full());
    assert_eq!(r.node().status().persisted, net.replicas[&leader].node().last_index());
    assert_eq!(r.kv(), net.replicas[&leader].kv(), "converged");
    let w = net.put(full, "through-freed", "x");
    net.settle();
    net.tick(2);
    assert!(acknowledged(&net, w));
}

#[test]
fn a_leader_with_a_full_disk_hands_leadership_over() {
    let mut net = net(SnapshotPolicy::disabled(), SMALL_SEGMENT_BYTES);
    let old = net.leader();
    net.disks[&old].set_full(true);
    let writes = put_many(&mut net, 120, "k");
    let new = net.leader();
    assert_ne!(new, old, "a member with space leads");
    assert!(net.replicas[&old].disk_full());
    // Whatever was acknowledged is on a majority's durable logs: crash the full one, which
    // loses its unsynced writes, and every acknowledged write is still there.
    let acknowledged: Vec<usize> =
        (0..writes.len()).filter(|i| acknowledged(&net, writes[*i])).collect();
    assert!(acknowledged.len() > 100, "writes go on through the new leader");
    net.disks[&old].set_full(false);
    net.tick(150);
    let kv = net.replicas[&new].kv().clone();
    for i in &acknowledged {
        let key = format!("k{i}");
        assert!(
            kv.range(&tenure_kv::RangeRequest::single(key.clone())).unwrap().kvs.len() == 1,
            "{key} acknowledged but missing"
        );
    }
    assert_eq!(net.replicas[&old].kv(), &kv, "the old leader catches up");
}

#[test]
fn a_snapshot_without_space_is_abandoned_and_taken_later() {
    let policy = SnapshotPolicy { entries: 10, bytes: 0, catchup_entries: 5 };
    // The log stays in its preallocated segment: only snapshot files need new space.
    let mut net = net(policy, LARGE_SEGMENT_BYTES);
    let leader = net.leader();
    let node = NodeId(leader.0 % 3 + 1);
    net.disks[&node].set_full(true);
    put_many(&mut net, 25, "k");
    let r = &net.replicas[&node];
    assert_eq!(r.snapshot_stats().taken, 0);
    assert!(r.no_space_total() >= 2, "snapshots were tried, and tried again later");
    assert!(!r.disk_full(), "the log itself is fine");
    assert_eq!(r.kv(), net.replicas[&leader].kv(), "it applies as before");
    assert!(
        !net.disks[&node].paths().iter().any(|p| p.to_string_lossy().ends_with(".tmp")),
        "no temporary snapshot file left behind"
    );
    net.disks[&node].set_full(false);
    put_many(&mut net, 25, "m");
    assert!(net.replicas[&node].snapshot_stats().taken >= 1, "taken once space is freed");
    assert_eq!(net.replicas[&node].kv(), net.replicas[&leader].kv());
}
