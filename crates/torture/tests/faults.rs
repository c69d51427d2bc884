//! The fault suite's second short run for CI: the faults beyond kills, pauses and partitions,
//! on a `tenure` with the `failpoints` feature (under `cargo test --workspace` that is
//! `target/debug/tenure` itself, this crate's dev-dependency turning the feature on; otherwise
//! `target/debug/tenure-failpoints`, built by the test if missing), with the lease and lock
//! workloads, and clock steps (libfaketime; left out with a note where it is not installed).
//! 38 s of workload, about a minute in all.
//!
//! Full disks are left out of this short run (`tenure-torture` draws them unless
//! `--no-disk-full`; a member whose disk fills keeps running and refuses writes until space is
//! freed).

use std::time::Duration;

use tenure_torture::binary::locate_tenure_failpoints;
use tenure_torture::check::Outcome;
use tenure_torture::net::Firewall;
use tenure_torture::run::{RunConfig, detect_host, run};
use tenure_torture::schedule::ExtraFaults;

/// Seed 143832 draws, in 38 s with shaping, failpoints and clock steps: the leader's peer
/// links throttled to 214 kbit/s, every peer packet of the leader delayed 255 ms each way, 32%
/// of n3's peer packets lost, n3 killed and started again with `log-sync-before` armed to fire
/// at its 22nd log sync (which it reaches soon after it rejoins), the leader's wall clock
/// stepped back 65 s.
const SEED: u64 = 143_832;

/// Where libfaketime is not installed the schedule has no clock kind and a seed draws other
/// faults; seed 226 then draws: one-way leader -/-> follower0, n3 throttled to 481 kbit/s, 39% of
/// n3's peer packets lost, n3 killed at its 63rd pass through `log-sync-before`, and the
/// leader's peer packets delayed 206 ms each way.
const SEED_WITHOUT_CLOCK: u64 = 226;

#[test]
fn failpoint_crashes_packet_loss_delay_throttles_and_clock_steps_with_leases_and_locks_find_no_anomaly()
 {
    let tenure = locate_tenure_failpoints(true).unwrap_or_else(|e| panic!("{e}"));
    let mut config = RunConfig::new(tenure);
    config.seed = SEED;
    config.duration = Duration::from_secs(38);
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
    if !config.extra.clock {
        config.seed = SEED_WITHOUT_CLOCK;
    }
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
        let delay =
            report.faults.iter().find(|f| f.injected.starts_with("delay")).expect("a delay");
        assert!(delay.injected.contains("packets held"), "the delay held no packet: {text}");
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
