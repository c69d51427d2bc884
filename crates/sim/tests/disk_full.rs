//! Full disks (issue 18): the swarm's faults plus disks that fill up for a while
//! (`--profile disk-full`). Every checker must pass: one leader per term, leader
//! completeness, state machine safety, nothing acknowledged lost, converged state machines and
//! linearizable client histories; and the seeds must really have run out of space.
//!
//! `SIM_DISK_FULL_SEEDS` overrides the count. A failure prints the command that replays it.

use tenure_sim::run::{ProfileKind, run_seed_kind};

#[test]
fn disk_full_profile_seeds_pass_and_run_out_of_space() {
    let count: u64 =
        std::env::var("SIM_DISK_FULL_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let results: Vec<(Option<String>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..count)
                        .filter(|seed| seed % threads == t)
                        .map(|seed| {
                            let r = run_seed_kind(seed, ProfileKind::DiskFull, false);
                            let failure = r.failure.map(|f| {
                                format!(
                                    "seed {seed}: {f:?}\n  replay: cargo run --release -p \
                                     tenure-sim -- --profile disk-full --seed {seed} --trace"
                                )
                            });
                            (failure, r.no_space)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("worker")).collect()
    });
    let failures: Vec<&String> = results.iter().filter_map(|(f, _)| f.as_ref()).collect();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    );
    // Or the profile would pass while testing nothing: most seeds must have had writes
    // refused for lack of space (single-node clusters with no load may not).
    let refusing = results.iter().filter(|(_, n)| *n > 0).count() as u64;
    assert!(
        refusing * 2 >= count,
        "only {refusing} of {count} seeds had a write refused for lack of space"
    );
}

/// Proof that the checkers see what a full disk could break: a replica that sends the
/// acknowledgements and votes waiting for a write the full disk refused, as if it were
/// durable (planted through the `planted-bugs` feature), loses them in a crash while leaders
/// counted them, and some seed shows it as a safety failure (an acknowledged write lost, a
/// committed entry overwritten, or a second leader in a term).
/// The disk-full profile of `seed` with frequent crashes, so that a node loses what it
/// acknowledged while its disk was full, in a cluster of at least three.
fn crashing(seed: u64) -> tenure_sim::world::Profile {
    let p = tenure_sim::world::Profile::disk_full(seed);
    tenure_sim::world::Profile { crash_every: Some(200), nodes: p.nodes.max(3), ..p }
}

#[test]
fn simulator_finds_acknowledgements_of_writes_a_full_disk_refused() {
    use tenure_sim::run::run_seed_with;
    use tenure_sim::world::Failure;
    let seeds: u64 = std::env::var("SIM_DISK_FULL_PLANTED_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        // About one seed in 260 shows it (seeds 470, 1095, 1200, 1268 and 1314 of the first
        // 1,314 at f677c0d; the search stops at the first).
        .unwrap_or(1500);
    let mut other = Vec::new();
    let found = (0..seeds).find_map(|seed| {
        let r = run_seed_with(seed, crashing(seed), false, |c| {
            c.planted_bugs.ack_before_durable_on_full_disk = true
        });
        match r.failure {
            Some(Failure::Safety(v)) => Some((seed, v)),
            Some(f) => {
                other.push((seed, f));
                None
            }
            None => None,
        }
    });
    let Some((seed, violation)) = found else {
        panic!("the planted bug went unnoticed in {seeds} seeds; other failures: {other:?}");
    };
    eprintln!("seed {seed} finds the planted bug: {violation}");
    // The same seed passes without the bug.
    let r = run_seed_with(seed, crashing(seed), false, |_| {});
    assert!(r.failure.is_none(), "seed {seed} fails without the bug too: {:?}", r.failure);
}
