//! The fault suite's short run for CI: one fixed seed, 40 s of workload against a debug build
//! of tenure on loopback (about a minute in all on two cores). With iptables (root) the
//! schedule has partitions; without, it runs kills and pauses only and says so.
//!
//! The binary is `TENURE_BIN` if set, else the newest `target/{debug,release}/tenure`, built
//! with `cargo build -p tenure-server --bin tenure` if there is none.

use std::time::Duration;

use tenure_torture::binary::locate_tenure;
use tenure_torture::check::Outcome;
use tenure_torture::net::Firewall;
use tenure_torture::run::{RunConfig, run};
use tenure_torture::schedule::ExtraFaults;

/// Seed 2 draws, in 40 s: with partitions a one-way cut from a follower to the leader, the
/// leader isolated, the leader paused, a follower killed and restarted, the leader isolated
/// again; without, four pauses (one of the leader) and the leader killed.
const SEED: u64 = 2;

#[test]
fn a_fixed_seed_schedule_of_kills_pauses_and_partitions_finds_no_anomaly() {
    let tenure = locate_tenure(true).unwrap_or_else(|e| panic!("{e}"));
    let mut config = RunConfig::new(tenure);
    config.seed = SEED;
    config.duration = Duration::from_secs(40);
    config.check_timeout = Duration::from_secs(60);
    config.verbose = true;
    // Kills, pauses and partitions only (tests/faults.rs runs the other kinds), with the lease,
    // lock and Kubernetes-shaped clients beside the register clients.
    config.extra = ExtraFaults::default();
    match Firewall::install() {
        Ok(firewall) => drop(firewall),
        Err(e) => {
            eprintln!("partitions off, kills and pauses only: {e}");
            config.partitions = false;
            config.partitions_note = Some("iptables unavailable".to_string());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(run(&config)).unwrap_or_else(|e| panic!("the run failed: {e}"));
    let text = report.to_text();
    println!("{text}");
    assert_eq!(report.faults.len(), 5, "{text}");
    assert!(report.faults.iter().any(|f| f.injected.starts_with("kill")), "{text}");
    assert!(report.totals.writes_acknowledged > 0, "{text}");
    for checker in ["leases", "locks", "kubernetes"] {
        assert!(report.verdicts.iter().any(|v| v.checker == checker), "{checker}: {text}");
    }
    for v in &report.verdicts {
        assert_eq!(v.outcome, Outcome::Pass, "{}: {}\n{text}", v.checker, v.detail);
    }
}
