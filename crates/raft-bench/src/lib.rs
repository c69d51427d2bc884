//! The throughput harness for `tenure-raft`: a 3-node cluster held in memory in one thread.
//!
//! Messages are delivered in-process, every entry is persisted into an in-memory log
//! ([`MemLog`]) and applied on all three nodes; there is no I/O. The benchmark
//! (`cargo bench -p tenure-raft-bench`) drives raft-rs through the same loop for comparison.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_raft::{Config, MemLog, Membership, Message, Node, NodeId, Role};

/// Payload size of every proposal, in bytes.
pub const PAYLOAD_BYTES: usize = 64;

/// The configuration the benchmark uses: tenure's defaults (1 MiB appends, 256 appends in
/// flight) with the commit index learned from the next append, as in raft-rs's
/// `skip_bcast_commit`.
pub fn bench_config(id: NodeId) -> Config {
    let mut cfg = Config::new(id);
    cfg.commit_broadcast = false;
    cfg.append_bytes_max = 1 << 20;
    cfg.inflight_appends_max = 256;
    cfg
}

/// Runs `total` proposals through a 3-node tenure cluster with at most `inflight` proposed but
/// not yet applied on the leader, and returns the time until all three nodes applied all of
/// them.
pub fn run_tenure(inflight: usize, total: usize) -> Duration {
    let members = Membership::voters([NodeId(1), NodeId(2), NodeId(3)]);
    let mut nodes: Vec<Node<MemLog>> = (1..=3)
        .map(|i| Node::new(bench_config(NodeId(i)), MemLog::new(members.clone())).expect("config"))
        .collect();
    let mut net: Vec<Message> = Vec::new();
    let mut applied = [0usize; 3];
    nodes[0].campaign();
    // Elect node 1 and let its no-op settle before timing.
    for _ in 0..20 {
        pump(&mut nodes, &mut net, &mut applied);
    }
    assert_eq!(nodes[0].role(), Role::Leader);
    let base = applied;
    let payload = [7u8; PAYLOAD_BYTES];
    let start = Instant::now();
    let mut proposed = 0usize;
    while applied.iter().zip(base).any(|(a, b)| a - b < total) {
        while proposed < total && proposed - (applied[0] - base[0]) < inflight {
            nodes[0].propose(Bytes::copy_from_slice(&payload)).expect("propose");
            proposed += 1;
        }
        if proposed == total {
            // Followers learn the last commit index from a heartbeat.
            nodes[0].tick();
        }
        pump(&mut nodes, &mut net, &mut applied);
    }
    start.elapsed()
}

/// One round: every node handles its `Ready` (persist, acknowledge, apply), then every message
/// is delivered.
fn pump(nodes: &mut [Node<MemLog>], net: &mut Vec<Message>, applied: &mut [usize; 3]) {
    for (i, node) in nodes.iter_mut().enumerate() {
        if !node.has_ready() {
            continue;
        }
        let rd = node.ready();
        net.extend(rd.messages);
        let log = node.log_view_mut();
        if let Some(hs) = rd.hard_state {
            log.set_hard_state(hs);
        }
        log.append_owned(rd.entries);
        node.on_persisted(rd.number);
        net.extend(rd.persisted_messages);
        if let Some(last) = rd.committed_entries.last() {
            let last = last.index();
            applied[i] += rd.committed_entries.iter().filter(|e| !e.data.is_empty()).count();
            node.on_applied(last);
        }
    }
    for m in net.drain(..) {
        let to = (m.to.0 - 1) as usize;
        nodes[to].step(m).expect("step");
    }
}
