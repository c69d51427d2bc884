fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let start = std::time::Instant::now();
    let mut ops = 0;
    let mut failed = 0;
    for seed in 0..n {
        let r = tenure_sim::run::run_seed(seed, false);
        ops += r.ops;
        if let Some(f) = &r.failure {
            failed += 1;
            if failed <= 10 {
                println!(
                    "seed {seed}: {f:?} profile={:?}",
                    tenure_sim::world::Profile::swarm(seed)
                );
            }
        }
    }
    println!("seeds={n} failed={failed} ops={ops} in {:.1}s", start.elapsed().as_secs_f64());
}
