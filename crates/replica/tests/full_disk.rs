//! A full disk (issue 18): a replica whose disk fills keeps running, acknowledges and votes for
//! nothing it has not made durable (Raft's persistence rule, Figure 2), refuses proposals with
//! [`ClientError::DiskFull`], hands leadership over, and catches up by itself once space is
//! freed. Segments are tiny so that the log needs new space within a few entries.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use tenure_kv::{Command, Proposal, PutRequest};
use tenure_raft::{LogIndex, LogView, Membership, Message, MessageBody, NodeId, SnapshotStatus};
use tenure_replica::{
    Answer, ClientError, Completion, Output, Replica, ReplicaConfig, RequestId, SnapshotPolicy,
};
use tenure_storage::{CrashMode, SimDisk};

struct Net {
    replicas: BTreeMap<NodeId, Replica>,
    disks: BTreeMap<NodeId, SimDisk>,
    wire: VecDeque<Message>,
    done: BTreeMap<RequestId, Completion>,
    ticks: u64,
    next_request: u64,
    policy: SnapshotPolicy,
    segment_bytes: u64,
    /// The highest index each node acknowledged in an `AppendResponse`.
    acked: BTreeMap<NodeId, LogIndex>,
}

/// Segments of 8 KiB fill within a few dozen writes; 64 MiB (the default) never do in a test.
const SMALL_SEGMENT_BYTES: u64 = 8192;
const LARGE_SEGMENT_BYTES: u64 = 64 << 20;

fn open(id: NodeId, disk: &SimDisk, policy: &SnapshotPolicy, segment_bytes: u64) -> Replica {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let incarnation = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut cfg = ReplicaConfig::new(id, incarnation);
    cfg.snapshot = policy.clone();
    cfg.storage = tenure_storage::Options {
        segment_bytes_max: segment_bytes,
        entry_bytes_max: 1024,
        membership_bytes_max: 256,
        write_buffer_bytes_max: 700,
        cache_bytes_max: 1 << 20,
    };
    let members = Membership::voters([NodeId(1), NodeId(2), NodeId(3)]);
    Replica::open(cfg, Arc::new(disk.clone()), Path::new("/data"), members).expect("open")
}

impl Net {
    fn new(policy: SnapshotPolicy, segment_bytes: u64) -> Net {
        let mut net = Net {
            replicas: BTreeMap::new(),
            disks: BTreeMap::new(),
            wire: VecDeque::new(),
            done: BTreeMap::new(),
            ticks: 0,
            next_request: 1,
            policy,
            segment_bytes,
            acked: BTreeMap::new(),
        };
        for i in 1..=3 {
            let id = NodeId(i);
            let disk = SimDisk::new(i);
            net.replicas.insert(id, open(id, &disk, &net.policy, segment_bytes));
            net.disks.insert(id, disk);
        }
        net
    }

    fn deliver(&mut self, m: Message) {
        let (from, to) = (m.from, m.to);
        if let MessageBody::AppendResponse { result: Ok(index) } = m.body {
            let a = self.acked.entry(from).or_default();
            *a = (*a).max(index);
        }
        let is_snapshot = matches!(m.body, MessageBody::Snapshot { .. });
        let m = if is_snapshot {
            match self.replicas[&from].copy_snapshot_to(&self.replicas[&to], &m) {
                Ok(m) => m,
                Err(_) => {
                    self.replicas
                        .get_mut(&from)
                        .unwrap()
                        .report_snapshot(to, SnapshotStatus::Failed);
                    return;
                }
            }
        } else {
            m
        };
        self.replicas.get_mut(&to).unwrap().step(m);
        if is_snapshot {
            self.replicas.get_mut(&from).unwrap().report_snapshot(to, SnapshotStatus::Delivered);
        }
    }

    fn absorb(&mut self, out: Output) {
        self.wire.extend(out.messages);
        for c in out.completions {
            self.done.insert(c.id, c);
        }
    }

    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut outs = Vec::new();
            for r in self.replicas.values_mut() {
                let mut out = Output::default();
                r.run_until_idle(&mut out).expect("a full disk never stops a replica");
                outs.push(out);
            }
            for out in outs {
                self.absorb(out);
            }
            if self.wire.is_empty() {
                return;
            }
            while let Some(m) = self.wire.pop_front() {
                self.deliver(m);
            }
        }
        panic!("did not settle");
    }

    fn tick(&mut self, n: u32) {
        for _ in 0..n {
            self.ticks += 1;
            let now = self.ticks * 10;
            let mut outs = Vec::new();
            for r in self.replicas.values_mut() {
                let mut out = Output::default();
                r.tick(now, &mut out);
                outs.push(out);
            }
            for out in outs {
                self.absorb(out);
            }
            self.settle();
        }
    }

    fn leader(&mut self) -> NodeId {
        for _ in 0..200 {
            if let Some((id, _)) = self.replicas.iter().find(|(_, r)| r.is_leader()) {
                return *id;
            }
            self.tick(1);
        }
        panic!("no leader");
    }

    fn put(&mut self, on: NodeId, key: &str, value: &str) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let p = Proposal::new(Command::Put(PutRequest::new(key.to_string(), value.to_string())));
        let mut out = Output::default();
        self.replicas.get_mut(&on).unwrap().propose(id, &p, &mut out);
        self.absorb(out);
        id
    }

    fn acknowledged(&self, id: RequestId) -> bool {
        matches!(self.done.get(&id).map(|c| &c.result), Some(Ok(Answer::Write(_))))
    }

    /// What `id` would recover if it crashed now, losing every unsynced write (its disk is
    /// forked, so the run goes on): the last index of its durable log.
    fn durable_last_index(&self, id: NodeId) -> LogIndex {
        let disk = self.disks[&id].fork();
        disk.crash(CrashMode::LoseUnsynced);
        disk.set_full(false);
        open(id, &disk, &self.policy, self.segment_bytes).node().log_view().last_index()
    }

    /// Writes through the leader until one is not acknowledged within a few ticks or `n` are.
    fn put_many(&mut self, n: u32, prefix: &str) -> Vec<RequestId> {
        let mut ids = Vec::new();
        for i in 0..n {
            let leader = self.leader();
            let w = self.put(leader, &format!("{prefix}{i}"), &"v".repeat(100));
            self.settle();
            self.tick(1);
            ids.push(w);
        }
        ids
    }
}

#[test]
fn a_follower_with_a_full_disk_acknowledges_only_what_is_durable_and_catches_up_once_freed() {
    let mut net = Net::new(SnapshotPolicy::disabled(), SMALL_SEGMENT_BYTES);
    let leader = net.leader();
    let full = NodeId(leader.0 % 3 + 1);
    net.disks[&full].set_full(true);
    let writes = net.put_many(120, "k");
    // The other two commit and acknowledge everything.
    assert!(writes.iter().all(|w| net.acknowledged(*w)), "a majority with space commits");
    let r = &net.replicas[&full];
    assert!(r.disk_full(), "the log needed a new segment and found no space");
    assert!(r.no_space_total() > 0);
    let committed = net.replicas[&leader].node().committed();
    assert!(r.node().status().persisted < committed, "it fell behind");
    // Nothing acknowledged that is not durable: a crash now keeps everything it acked.
    let acked = net.acked.get(&full).copied().unwrap_or_default();
    let durable = net.durable_last_index(full);
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
    assert!(net.acknowledged(w));
}

#[test]
fn a_leader_with_a_full_disk_hands_leadership_over() {
    let mut net = Net::new(SnapshotPolicy::disabled(), SMALL_SEGMENT_BYTES);
    let old = net.leader();
    net.disks[&old].set_full(true);
    let writes = net.put_many(120, "k");
    let new = net.leader();
    assert_ne!(new, old, "a member with space leads");
    assert!(net.replicas[&old].disk_full());
    // Whatever was acknowledged is on a majority's durable logs: crash the full one, which
    // loses its unsynced writes, and every acknowledged write is still there.
    let acknowledged: Vec<usize> =
        (0..writes.len()).filter(|i| net.acknowledged(writes[*i])).collect();
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
    let mut net = Net::new(policy, LARGE_SEGMENT_BYTES);
    let leader = net.leader();
    let node = NodeId(leader.0 % 3 + 1);
    net.disks[&node].set_full(true);
    net.put_many(25, "k");
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
    net.put_many(25, "m");
    assert!(net.replicas[&node].snapshot_stats().taken >= 1, "taken once space is freed");
    assert_eq!(net.replicas[&node].kv(), net.replicas[&leader].kv());
}
