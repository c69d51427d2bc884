//! Cost of many pending client requests, and syncs per committed batch (issue 11 item 5).
//!
//! `cargo bench -p tenure-replica --bench pending`
//!
//! Three replicas in one thread on in-memory disks ([`SimDisk`]), messages delivered in
//! process, syncs run inline (no real fsync: the disk is memory, so the timings are the
//! replica's own bookkeeping, the core, storage encoding and the state machine). For N
//! requests pending at once on the leader it measures:
//!
//! - writes: propose N puts on the leader, then run the cluster until all N are answered;
//! - reads: start N linearizable reads on the leader, then run until all N are answered;
//! - tick: one `Replica::tick` of the leader while N/2 writes and N/2 reads are pending
//!   (median of 5 ticks, well within the request timeout and the election timeout);
//!
//! and, for a fixed workload (1,000 batches of 16 puts proposed together on the leader, the
//! cluster run until idle and then ticked once after each), the sync tickets each replica's
//! `poll` and `finish_sync` hand out, per batch.
//!
//! The same file runs against older revisions of the replica for before/after figures; only
//! the `ReplicaConfig::new` call differs (see `open`).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenure_kv::{Command, Proposal, PutRequest, RangeRequest};
use tenure_raft::{Membership, Message, NodeId};
use tenure_replica::{Consistency, Output, Replica, ReplicaConfig, RequestId, SnapshotPolicy};
use tenure_storage::SimDisk;

const PENDING_COUNTS: [usize; 3] = [1_000, 10_000, 50_000];
const SYNC_BATCHES: usize = 1_000;
const SYNC_BATCH_WRITES: usize = 16;
const TICK_SAMPLES: usize = 5;

fn open(id: NodeId) -> Replica {
    let disk = SimDisk::new(id.0);
    // Before issue 11 item 5 (a922cf2^) this was `ReplicaConfig::new(id)`.
    let mut cfg = ReplicaConfig::new(id, 1);
    cfg.snapshot = SnapshotPolicy::disabled();
    let members = Membership::voters([NodeId(1), NodeId(2), NodeId(3)]);
    Replica::open(cfg, Arc::new(disk), Path::new("/data"), members).expect("open replica")
}

struct Cluster {
    /// Replica `i + 1` at index `i`.
    replicas: Vec<Replica>,
    wire: VecDeque<Message>,
    /// Sync tickets handed out, per replica.
    syncs: [u64; 3],
    /// Successful answers seen, per replica.
    answered: [usize; 3],
    ticks: u64,
    next_request: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let replicas = (1..=3).map(|i| open(NodeId(i))).collect();
        let mut c = Cluster {
            replicas,
            wire: VecDeque::new(),
            syncs: [0; 3],
            answered: [0; 3],
            ticks: 0,
            next_request: 1,
        };
        for _ in 0..200 {
            if c.leader().is_some() {
                c.settle();
                return c;
            }
            c.tick_all();
        }
        panic!("no leader elected");
    }

    fn leader(&self) -> Option<usize> {
        self.replicas.iter().position(|r| r.is_leader())
    }

    fn absorb(&mut self, i: usize, out: Output) {
        self.wire.extend(out.messages);
        for c in out.completions {
            match c.result {
                Ok(_) => self.answered[i] += 1,
                Err(e) => panic!("request {:?} on n{} failed: {e}", c.id, i + 1),
            }
        }
    }

    /// The replica loop of `Replica::run_until_idle`, counting the sync tickets.
    fn run_replica(&mut self, i: usize) -> bool {
        let mut out = Output::default();
        let mut any = false;
        let r = &mut self.replicas[i];
        loop {
            let (worked, mut ticket) = r.poll(&mut out).expect("poll");
            while let Some(t) = ticket {
                self.syncs[i] += 1;
                ticket = r.finish_sync(t.wait(), &mut out).expect("finish_sync");
            }
            if !worked {
                break;
            }
            any = true;
        }
        self.absorb(i, out);
        any
    }

    /// Runs every replica and delivers messages until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut worked = false;
            for i in 0..3 {
                worked |= self.run_replica(i);
            }
            if self.wire.is_empty() && !worked {
                return;
            }
            while let Some(m) = self.wire.pop_front() {
                let to = (m.to.0 - 1) as usize;
                self.replicas[to].step(m);
            }
        }
    }

    fn tick_all(&mut self) {
        self.ticks += 1;
        let now_ms = self.ticks * 10;
        for i in 0..3 {
            let mut out = Output::default();
            self.replicas[i].tick(now_ms, &mut out);
            self.absorb(i, out);
        }
        self.settle();
    }

    fn request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    fn propose_put(&mut self, on: usize, n: u64) {
        let id = self.request_id();
        let put = PutRequest::new(format!("key-{n:08}"), format!("value-{n:08}"));
        let mut out = Output::default();
        self.replicas[on].propose(id, &Proposal::new(Command::Put(put)), &mut out);
        self.absorb(on, out);
    }

    fn start_read(&mut self, on: usize, n: u64) {
        let id = self.request_id();
        let req = RangeRequest::single(format!("key-{:08}", n % 16));
        let mut out = Output::default();
        self.replicas[on].read(id, req, Consistency::Linearizable, &mut out);
        self.absorb(on, out);
    }

    /// Runs until replica `on` has answered `target` requests in all.
    fn run_until_answered(&mut self, on: usize, target: usize) {
        for _ in 0..100 {
            self.settle();
            if self.answered[on] >= target {
                return;
            }
            self.tick_all();
        }
        panic!("n{} answered {} of {target}", on + 1, self.answered[on]);
    }
}

/// Proposes `n` puts on the leader and runs until all are answered.
fn writes(n: usize) -> Duration {
    let mut c = Cluster::new();
    let leader = c.leader().expect("leader");
    let target = c.answered[leader] + n;
    let start = Instant::now();
    for k in 0..n {
        c.propose_put(leader, k as u64);
    }
    c.run_until_answered(leader, target);
    start.elapsed()
}

/// Starts `n` linearizable reads on the leader and runs until all are answered.
fn reads(n: usize) -> Duration {
    let mut c = Cluster::new();
    let leader = c.leader().expect("leader");
    for k in 0..16 {
        c.propose_put(leader, k);
    }
    c.settle();
    let target = c.answered[leader] + n;
    let start = Instant::now();
    for k in 0..n {
        c.start_read(leader, k as u64);
    }
    c.run_until_answered(leader, target);
    let elapsed = start.elapsed();
    let last = c.replicas[leader].kv().applied_index();
    assert!(last > 0, "reads were served after the puts");
    elapsed
}

/// The median duration of one leader tick with n/2 writes and n/2 reads pending.
fn tick(n: usize) -> Duration {
    let mut c = Cluster::new();
    let leader = c.leader().expect("leader");
    for k in 0..n / 2 {
        c.propose_put(leader, k as u64);
        c.start_read(leader, k as u64);
    }
    assert_eq!(c.replicas[leader].pending_requests(), n / 2 * 2);
    let mut samples = Vec::with_capacity(TICK_SAMPLES);
    for _ in 0..TICK_SAMPLES {
        c.ticks += 1;
        let mut out = Output::default();
        let start = Instant::now();
        c.replicas[leader].tick(c.ticks * 10, &mut out);
        samples.push(start.elapsed());
        assert!(out.completions.is_empty(), "nothing times out within the samples");
    }
    assert_eq!(c.replicas[leader].pending_requests(), n / 2 * 2);
    samples.sort();
    samples[samples.len() / 2]
}

/// Sync tickets per committed batch on each replica (leader first), and the workload's time.
fn syncs_per_batch() -> ([f64; 3], usize, Duration) {
    let mut c = Cluster::new();
    let leader = c.leader().expect("leader");
    c.syncs = [0; 3];
    let target = c.answered[leader] + SYNC_BATCHES * SYNC_BATCH_WRITES;
    let start = Instant::now();
    for b in 0..SYNC_BATCHES {
        for k in 0..SYNC_BATCH_WRITES {
            c.propose_put(leader, (b * SYNC_BATCH_WRITES + k) as u64);
        }
        c.settle();
        c.tick_all();
    }
    let elapsed = start.elapsed();
    assert_eq!(c.answered[leader], target, "every batch committed and was answered");
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    let per_batch = order.map(|i| c.syncs[i] as f64 / SYNC_BATCHES as f64);
    (per_batch, leader + 1, elapsed)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    println!("pending requests on the leader (3 replicas, SimDisk, one thread)");
    println!(
        "| pending N | N writes: propose to all answered (ms) | N linearizable reads (ms) | one tick, N pending (µs) |"
    );
    println!("|---|---|---|---|");
    for n in PENDING_COUNTS {
        let w = writes(n);
        let r = reads(n);
        let t = tick(n);
        println!("| {n} | {} | {} | {:.1} |", ms(w), ms(r), t.as_secs_f64() * 1e6);
    }
    let (per_batch, leader, elapsed) = syncs_per_batch();
    println!();
    println!(
        "sync tickets per committed batch ({SYNC_BATCHES} batches of {SYNC_BATCH_WRITES} puts, \
         a tick after each; leader n{leader}; {} ms): leader {:.2}, followers {:.2} and {:.2}",
        ms(elapsed),
        per_batch[0],
        per_batch[1],
        per_batch[2]
    );
}
