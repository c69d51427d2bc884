//! CI's bounded share of the simulator: a fixed range of seeds across every swarm profile.
//! Long runs use the command (`cargo run --release -p tenure-sim -- --seeds 0..100000`).
//!
//! `SIM_SEEDS` overrides the count. A failure prints the command that replays the seed.

use tenure_sim::run::run_seed;

#[test]
fn bounded_seed_range_passes() {
    let count: u64 = std::env::var("SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..count)
                        .filter(|seed| seed % threads == t)
                        .filter_map(|seed| {
                            run_seed(seed, false).failure.map(|f| {
                                format!(
                                    "seed {seed}: {f:?}\n  replay: cargo run --release -p tenure-sim -- --seed {seed} --trace"
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("worker")).collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
