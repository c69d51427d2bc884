//! Entries committed and applied per second through a 3-node in-memory cluster in one thread
//! (the harness of `tenure-raft-bench`), at 1, 64 and 256 proposals in flight.
//!
//! `cargo bench -p tenure-raft` prints tenure's figures; `cargo bench -p tenure-raft-bench`
//! prints them next to raft-rs's in the same run, with the ratio.

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let total = if smoke { 2_000 } else { 400_000 };
    for inflight in [1usize, 64, 256] {
        let d = tenure_raft_bench::run_tenure(inflight, total);
        println!("in-flight {inflight:>3}: {:>10.0} entries/s", total as f64 / d.as_secs_f64());
    }
}
