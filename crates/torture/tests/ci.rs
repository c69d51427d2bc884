//! The fault suite's short run for CI: one fixed seed, 34 s of workload against a debug build
//! of tenure, each member in a network namespace of its own (on loopback where namespaces
//! cannot be made), about a minute in all on two cores. With namespaces or iptables (root)
//! the schedule has partitions; without, it runs kills, pauses and membership changes only and
//! says so.
//!
//! The binary is `TENURE_BIN` if set, else the newest `target/{debug,release}/tenure`, built
//! with `cargo build -p tenure-server --bin tenure` if there is none.

use std::time::Duration;

use tenure_torture::binary::locate_tenure;
use tenure_torture::check::Outcome;
use tenure_torture::net::Firewall;
use tenure_torture::run::{RunConfig, run};
use tenure_torture::schedule::ExtraFaults;

/// Seed 438 draws, in 34 s with partitions and membership changes: the leader removed (wiped,
/// added back as a learner, promoted), n1 paused, a bridge (n1 and n2 cut from each other both
/// ways, n3 reaching both), the leader killed and restarted, three voters grown to five and
/// back. Without partitions the bridge is drawn as something else.
const SEED: u64 = 438;

#[test]
fn a_fixed_seed_schedule_of_kills_pauses_partitions_and_membership_changes_finds_no_anomaly() {
    let tenure = locate_tenure(true).unwrap_or_else(|e| panic!("{e}"));
    let mut config = RunConfig::new(tenure);
    config.seed = SEED;
    config.duration = Duration::from_secs(34);
    config.check_timeout = Duration::from_secs(60);
    config.verbose = true;
    // Kills, pauses, partitions and membership changes (tests/faults.rs runs the other
    // kinds), with the lease, lock and Kubernetes-shaped clients beside the register clients.
    config.extra = ExtraFaults { membership: true, ..ExtraFaults::default() };
    if tenure_torture::netns::available().is_err() {
        match Firewall::install() {
            Ok(firewall) => drop(firewall),
            Err(e) => {
                eprintln!("partitions off, kills, pauses and membership changes only: {e}");
                config.partitions = false;
                config.partitions_note = Some("iptables unavailable".to_string());
            }
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
    let injected = |what: &str| report.faults.iter().any(|f| f.injected.contains(what));
    assert_eq!(report.faults.len(), 5, "{text}");
    assert!(injected("remove the leader") && injected("promoted"), "{text}");
    assert!(injected("grow: add n4") && injected("remove them again"), "{text}");
    if config.partitions {
        assert!(injected("bridge: n1 and n2 cut from each other, n3 reaching both"), "{text}");
    }
    assert!(report.totals.writes_acknowledged > 0, "{text}");
    for checker in ["leases", "locks", "kubernetes", "convergence (five members)"] {
        assert!(report.verdicts.iter().any(|v| v.checker == checker), "{checker}: {text}");
    }
    for v in &report.verdicts {
        assert_eq!(v.outcome, Outcome::Pass, "{}: {}\n{text}", v.checker, v.detail);
    }
}
