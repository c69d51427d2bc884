//! Runs only the tenure side of the throughput harness, for profilers:
//! `cargo run --release -p tenure-raft-bench --example profile_tenure -- 64 2000000`.
fn main() {
    let mut args = std::env::args().skip(1);
    let inflight: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let total: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let d = tenure_raft_bench::run_tenure(inflight, total);
    println!("{:.0} entries/s", total as f64 / d.as_secs_f64());
}
