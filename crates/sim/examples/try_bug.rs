fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let n: u64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let hook: fn(&mut tenure_replica::ReplicaConfig) = if which == "vote" {
        |c| c.raft.planted_bugs.vote_ignores_log = true
    } else if which == "persist" {
        |c| c.raft.planted_bugs.vote_before_persist = true
    } else {
        |c| c.raft.planted_bugs.commit_by_counting_old_terms = true
    };
    let mut found = 0;
    for seed in 0..n {
        let r = tenure_sim::run::run_seed_with(
            seed,
            tenure_sim::world::Profile::swarm(seed),
            false,
            hook,
        );
        if let Some(f) = r.failure {
            found += 1;
            if found <= 3 {
                println!("seed {seed}: {f:?}");
            }
        }
    }
    println!("{which}: {found}/{n} seeds found the bug");
}
