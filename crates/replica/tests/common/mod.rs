//! The harness of the replica's integration tests: three replicas, each over a fault-injecting
//! in-memory disk, joined by an in-memory network that delivers every message in order unless
//! a node is cut off.

#![allow(dead_code)] // Each test file uses part of it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use tenure_kv::{Command, Proposal, PutRequest, RangeRequest};
use tenure_raft::{LogIndex, Membership, Message, MessageBody, NodeId, SnapshotStatus};
use tenure_replica::{
    Answer, Completion, Consistency, LeaseConfig, Output, Replica, ReplicaConfig, RequestId,
    SnapshotPolicy,
};
use tenure_storage::{CrashMode, SimDisk};

/// How every replica of a [`Net`] is configured.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub policy: SnapshotPolicy,
    pub lease: LeaseConfig,
    /// The storage's options; the defaults where `None`.
    pub storage: Option<tenure_storage::Options>,
    /// How many voters (ids 1..=n); three where `None`.
    pub voters: Option<u64>,
}

pub fn members() -> Membership {
    Membership::voters([NodeId(1), NodeId(2), NodeId(3)])
}

fn voter_count(setup: &Setup) -> u64 {
    setup.voters.unwrap_or(3)
}

/// Opens a replica; each run of a process gets a new incarnation, as the server draws one.
pub fn open(id: NodeId, disk: &SimDisk, setup: &Setup) -> Replica {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let incarnation = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut cfg = ReplicaConfig::new(id, incarnation);
    cfg.snapshot = setup.policy.clone();
    cfg.lease = setup.lease;
    if let Some(storage) = &setup.storage {
        cfg.storage = storage.clone();
    }
    let members = Membership::voters((1..=voter_count(setup)).map(NodeId));
    Replica::open(cfg, Arc::new(disk.clone()), Path::new("/data"), members).expect("open")
}

pub struct Net {
    pub replicas: BTreeMap<NodeId, Replica>,
    pub disks: BTreeMap<NodeId, SimDisk>,
    pub wire: VecDeque<Message>,
    pub done: BTreeMap<RequestId, Completion>,
    pub ticks: u64,
    pub next_request: u64,
    /// Nodes cut off from everyone.
    pub isolated: BTreeSet<NodeId>,
    /// Nodes that hear only each other (none: no split).
    pub side: BTreeSet<NodeId>,
    /// The highest index each node acknowledged in an `AppendResponse`.
    pub acked: BTreeMap<NodeId, LogIndex>,
    /// Whether the replicas' own messages (`MessageBody::App`) are lost.
    pub drop_app: bool,
    /// Whether heartbeats (and so heartbeat rounds: a leader's ReadIndex) are lost.
    pub drop_heartbeats: bool,
    pub setup: Setup,
}

impl Net {
    pub fn new() -> Net {
        Net::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Net {
        let mut net = Net {
            replicas: BTreeMap::new(),
            disks: BTreeMap::new(),
            wire: VecDeque::new(),
            done: BTreeMap::new(),
            ticks: 0,
            next_request: 1,
            isolated: BTreeSet::new(),
            side: BTreeSet::new(),
            acked: BTreeMap::new(),
            drop_app: false,
            drop_heartbeats: false,
            setup,
        };
        for i in 1..=voter_count(&net.setup) {
            let id = NodeId(i);
            let disk = SimDisk::new(i);
            net.replicas.insert(id, open(id, &disk, &net.setup));
            net.disks.insert(id, disk);
        }
        net
    }

    /// Delivers one message; a snapshot's data is copied into the receiver's directory first
    /// and the transfer reported to the sender (failed if the copy failed, as a refused
    /// transfer is).
    pub fn deliver(&mut self, m: Message) {
        let (from, to) = (m.from, m.to);
        let cut = self.isolated.contains(&from)
            || self.isolated.contains(&to)
            || (self.side.contains(&from) != self.side.contains(&to) && !self.side.is_empty())
            || (self.drop_app && matches!(m.body, MessageBody::App { .. }))
            || (self.drop_heartbeats && matches!(m.body, MessageBody::Heartbeat { .. }));
        let is_snapshot = matches!(m.body, MessageBody::Snapshot { .. });
        if cut || !self.replicas.contains_key(&to) {
            if is_snapshot && let Some(r) = self.replicas.get_mut(&from) {
                r.report_snapshot(to, SnapshotStatus::Failed);
            }
            return;
        }
        if let MessageBody::AppendResponse { result: Ok(index) } = m.body {
            let a = self.acked.entry(from).or_default();
            *a = (*a).max(index);
        }
        let m = if is_snapshot {
            match self.replicas[&from].copy_snapshot_to(&self.replicas[&to], &m) {
                Ok(m) => m,
                Err(_) => {
                    let sender = self.replicas.get_mut(&from).unwrap();
                    sender.report_snapshot(to, SnapshotStatus::Failed);
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

    pub fn absorb(&mut self, out: Output) {
        self.wire.extend(out.messages);
        for c in out.completions {
            self.done.insert(c.id, c);
        }
    }

    /// Runs every replica's loop and delivers messages until quiet.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            let mut outs = Vec::new();
            for r in self.replicas.values_mut() {
                let mut out = Output::default();
                r.run_until_idle(&mut out).expect("replica loop");
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

    /// `n` ticks of 10 ms on every replica, settling after each.
    pub fn tick(&mut self, n: u32) {
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

    /// The leader, ticking until there is one (at most 200 ticks).
    pub fn leader(&mut self) -> NodeId {
        for _ in 0..200 {
            if let Some((id, _)) = self.replicas.iter().find(|(_, r)| r.is_leader()) {
                return *id;
            }
            self.tick(1);
        }
        panic!("no leader");
    }

    pub fn put(&mut self, on: NodeId, key: &str, value: &str) -> RequestId {
        self.exec(on, Command::Put(PutRequest::new(key.to_string(), value.to_string())))
    }

    pub fn exec(&mut self, on: NodeId, command: Command) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let p = Proposal::new(command);
        let mut out = Output::default();
        self.replicas.get_mut(&on).unwrap().propose(id, &p, &mut out);
        self.absorb(out);
        id
    }

    pub fn get(&mut self, on: NodeId, key: &str, c: Consistency) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let mut out = Output::default();
        let req = RangeRequest::single(key.to_string());
        self.replicas.get_mut(&on).unwrap().read(id, req, c, &mut out);
        self.absorb(out);
        id
    }

    pub fn value(&self, id: RequestId) -> Option<String> {
        match &self.done.get(&id).expect("completed").result {
            Ok(Answer::Read(r)) => {
                r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into())
            }
            other => panic!("not a read answer: {other:?}"),
        }
    }

    pub fn crash_and_restart(&mut self, id: NodeId) {
        self.replicas.remove(&id);
        let disk = self.disks[&id].clone();
        disk.crash(CrashMode::LoseUnsynced);
        self.replicas.insert(id, open(id, &disk, &self.setup));
    }
}
