//! Entries committed and applied per second through a 3-node cluster held in memory in one
//! thread, for tenure-raft and for raft-rs (TiKV's `raft` 0.7) through the identical harness,
//! at 1, 64 and 256 proposals in flight with 64-byte payloads.
//!
//! raft-rs runs in its best configuration: `batch_append`, `skip_bcast_commit`,
//! `max_size_per_msg` 1 MiB, `max_inflight_msgs` 256.
//!
//! Run: `cargo bench -p tenure-raft-bench` (set `BENCH_ENTRIES` to change the run length).

use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use tenure_raft_bench::{PAYLOAD_BYTES, run_tenure};

fn raft_rs_config(id: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        batch_append: true,
        skip_bcast_commit: true,
        ..Default::default()
    }
}

fn run_raft_rs(inflight: usize, total: usize) -> Duration {
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let mut nodes: Vec<RawNode<MemStorage>> = (1..=3)
        .map(|id| {
            let storage = MemStorage::new_with_conf_state((vec![1, 2, 3], vec![]));
            RawNode::new(&raft_rs_config(id), storage, &logger).expect("raft-rs node")
        })
        .collect();
    let mut net: Vec<Message> = Vec::new();
    let mut applied = [0usize; 3];
    nodes[0].campaign().expect("campaign");
    for _ in 0..20 {
        pump_raft_rs(&mut nodes, &mut net, &mut applied);
    }
    assert_eq!(nodes[0].raft.state, StateRole::Leader);
    let base = applied;
    let payload = [7u8; PAYLOAD_BYTES];
    let start = Instant::now();
    let mut proposed = 0usize;
    while applied.iter().zip(base).any(|(a, b)| a - b < total) {
        while proposed < total && proposed - (applied[0] - base[0]) < inflight {
            nodes[0].propose(vec![], payload.to_vec()).expect("propose");
            proposed += 1;
        }
        if proposed == total {
            // Followers learn the last commit index from a heartbeat.
            nodes[0].tick();
        }
        pump_raft_rs(&mut nodes, &mut net, &mut applied);
    }
    start.elapsed()
}

/// The loop raft-rs documents for RawNode (its `five_mem_node` example): messages, apply,
/// persist, persisted messages, advance, light ready, advance_apply.
fn pump_raft_rs(
    nodes: &mut [RawNode<MemStorage>],
    net: &mut Vec<Message>,
    applied: &mut [usize; 3],
) {
    for (i, node) in nodes.iter_mut().enumerate() {
        if !node.has_ready() {
            continue;
        }
        let mut rd = node.ready();
        net.extend(rd.take_messages());
        let count = |es: &[raft::eraftpb::Entry]| es.iter().filter(|e| !e.data.is_empty()).count();
        applied[i] += count(&rd.take_committed_entries());
        let store = node.mut_store().clone();
        if !rd.entries().is_empty() {
            store.wl().append(rd.entries()).expect("append");
        }
        if let Some(hs) = rd.hs() {
            store.wl().set_hardstate(hs.clone());
        }
        net.extend(rd.take_persisted_messages());
        let mut light = node.advance(rd);
        if let Some(commit) = light.commit_index() {
            store.wl().mut_hard_state().commit = commit;
        }
        net.extend(light.take_messages());
        applied[i] += count(&light.take_committed_entries());
        node.advance_apply();
    }
    for m in net.drain(..) {
        let to = (m.to - 1) as usize;
        nodes[to].step(m).expect("step");
    }
}

/// Median of `reps` runs, as entries per second.
fn rate(reps: usize, total: usize, run: impl Fn() -> Duration) -> f64 {
    let mut rates: Vec<f64> = (0..reps).map(|_| total as f64 / run().as_secs_f64()).collect();
    rates.sort_by(f64::total_cmp);
    rates[reps / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing: run a smoke
    // version then.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let total: usize = std::env::var("BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 2_000 } else { 400_000 });
    let reps = if smoke { 1 } else { 3 };
    let started = Instant::now();
    println!(
        "3-node in-memory cluster, one thread, {PAYLOAD_BYTES}-byte payloads, {total} entries, median of {reps}"
    );
    println!(
        "{:>9} {:>16} {:>16} {:>7}",
        "in-flight", "tenure entries/s", "raft-rs entries/s", "ratio"
    );
    for inflight in [1usize, 64, 256] {
        let t = rate(reps, total, || run_tenure(inflight, total));
        let r = rate(reps, total, || run_raft_rs(inflight, total));
        println!("{inflight:>9} {t:>16.0} {r:>17.0} {:>6.2}x", t / r);
    }
    println!("(took {:.1}s)", started.elapsed().as_secs_f64());
}
