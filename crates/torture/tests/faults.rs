//! The fault suite's second short run for CI: the faults beyond kills, pauses and partitions,
//! on a `tenure` built with the `failpoints` feature (`target/debug/tenure-failpoints`, built
//! by the test if missing: `cargo build -p tenure-server --bin tenure --features failpoints`,
//! then copied), with the lease and lock workloads, and clock steps (libfaketime; left out with
//! a note where it is not installed). 30 s of workload, about a minute in all.
//!
//! Full disks are left out here: a member whose disk fills stops with an error (its snapshot
//! file write fails with ENOSPC and the replica stops), which the suite reports as a crash
//! (found by this suite; see README's fault suite section). `tenure-torture` without
//! `--no-disk-full` still draws them.

use std::time::Duration;

use tenure_torture::binary::locate_tenure_failpoints;
use tenure_torture::check::Outcome;
use tenure_torture::net::Firewall;
use tenure_torture::run::{RunConfig, detect_host, run};
use tenure_torture::schedule::ExtraFaults;

/// Seed 203 draws, in 30 s with shaping, failpoints and clock steps: n2's peer links throttled
/// to 358 kbit/s, the leader's wall clock stepped back 281 s, 27% of n3's peer packets lost,
/// then the leader killed and started again with `log-sync-after` armed to fire at its third
/// log sync (which it reaches as soon as it rejoins).
const SEED: u64 = 203;

#[test]
fn failpoint_crashes_packet_loss_throttles_and_clock_steps_with_leases_and_locks_find_no_anomaly() {
    let tenure = locate_tenure_failpoints(true).unwrap_or_else(|e| panic!("{e}"));
    let mut config = RunConfig::new(tenure);
    config.seed = SEED;
    config.duration = Duration::from_secs(30);
    config.check_timeout = Duration::from_secs(60);
    config.verbose = true;
    config.extra = ExtraFaults {
        shaping: true,
        disk_full: false,
        failpoints: true,
        membership: false,
        clock: true,
    };
    if tenure_torture::netns::available().is_err() {
        match Firewall::install() {
            Ok(firewall) => drop(firewall),
            Err(e) => {
                eprintln!("no partitions, loss or throttles: {e}");
                config.partitions = false;
                config.partitions_note = Some("iptables unavailable".to_string());
            }
        }
    }
    detect_host(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime.block_on(run(&config)).unwrap_or_else(|e| panic!("the run failed: {e}"));
    let text = report.to_text();
    println!("{text}");
    let injected = |prefix: &str| report.faults.iter().any(|f| f.injected.starts_with(prefix));
    assert!(injected("crash"), "{text}");
    let crash = report.faults.iter().find(|f| f.injected.starts_with("crash")).expect("a crash");
    assert!(crash.injected.contains("fired at"), "{text}");
    if config.schedule_spec().extra.shaping {
        assert!(injected("lose") && injected("throttle"), "{text}");
    }
    let spec = config.schedule_spec();
    if spec.extra.clock && spec.extra.shaping {
        let stepped = |f: &&tenure_torture::report::FaultRecord| {
            f.injected.contains("clock") && f.injected.contains("stepped back")
        };
        assert!(report.faults.iter().any(|f| stepped(&f)), "{text}");
    }
    for checker in ["leases", "locks", "kubernetes"] {
        assert!(report.verdicts.iter().any(|v| v.checker == checker), "{checker}: {text}");
    }
    for v in &report.verdicts {
        assert_eq!(v.outcome, Outcome::Pass, "{}: {}\n{text}", v.checker, v.detail);
    }
}
