//! The suite must be able to fail on real processes. tenure's planted bugs are runtime flags of
//! the core that the server never sets (a `tenure` built with `tenure-raft/planted-bugs`
//! behaves as any other), so the bug planted here is the client's: serializable reads, which a
//! member answers from its own state without asking the leader. A follower that has not yet
//! applied the latest write (or a member cut off from the others) answers with an older value,
//! and the linearizability checker must say so.

use std::time::Duration;

use tenure_torture::binary::locate_tenure;
use tenure_torture::check::Outcome;
use tenure_torture::net::Firewall;
use tenure_torture::run::{RunConfig, run};
use tenure_torture::schedule::ExtraFaults;

#[test]
fn serializable_reads_are_found_not_linearizable() {
    let tenure = locate_tenure(true).unwrap_or_else(|e| panic!("{e}"));
    let mut config = RunConfig::new(tenure);
    // Seed 8 isolates the leader from 3.0 s to 5.4 s of a 12 s run; without iptables the
    // run has a pause instead, and followers lagging behind the leader suffice.
    config.seed = 8;
    config.duration = Duration::from_secs(12);
    config.serializable_reads = true;
    // The schedule and workload this test was written for: register clients only, kills,
    // pauses and partitions.
    config.extra = ExtraFaults::default();
    config.lease_client_count = 0;
    config.lock_client_count = 0;
    config.k8s = false;
    config.verbose = true;
    if let Err(e) = Firewall::install() {
        eprintln!("partitions off: {e}");
        config.partitions = false;
        config.partitions_note = Some("iptables unavailable".to_string());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(run(&config)).unwrap_or_else(|e| panic!("the run failed: {e}"));
    let text = report.to_text();
    println!("{text}");
    let linearizable = report.verdicts.iter().find(|v| v.checker == "linearizable").expect("run");
    assert_eq!(linearizable.outcome, Outcome::Fail, "{text}");
    assert!(linearizable.detail.contains("cannot have seen its value"), "{text}");
    assert!(report.anomalies >= 1 && report.rerun.contains("--serializable-reads"), "{text}");
}
