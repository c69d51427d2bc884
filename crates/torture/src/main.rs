//! `tenure-torture`: one run of the fault suite against real server processes (or, with
//! `--compare-etcd`, a tenure run and an etcd run of the same schedule); prints the report and
//! exits 0 (no anomaly), 1 (anomalies), 2 (the run could not be carried out),
//! 3 (a checker could not decide) or 130 (interrupted; everything was cleaned up).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tenure_torture::binary;
use tenure_torture::report::Report;
use tenure_torture::run::{NetworkMode, RunConfig, RunError, run};

/// Runs a seeded fault schedule against a three-member cluster of real processes and checks
/// the history.
#[derive(Parser, Debug)]
#[command(name = "tenure-torture", version)]
struct Args {
    /// Seed of the schedule and the clients [default: drawn from the clock, and reported].
    #[arg(long)]
    seed: Option<u64>,
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// The tenure binary [default: $TENURE_BIN, else the newest target/{debug,release}/tenure,
    /// built if there is none].
    #[arg(long, value_name = "PATH", conflicts_with = "etcd")]
    tenure: Option<PathBuf>,
    /// Run etcd (3.4's flags) instead of tenure, from PATH.
    #[arg(long, value_name = "PATH", num_args = 0..=1, default_missing_value = "/usr/bin/etcd")]
    etcd: Option<PathBuf>,
    /// Run the schedule against tenure, then against etcd from PATH, and print both side by
    /// side.
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        default_missing_value = "/usr/bin/etcd",
        conflicts_with = "etcd"
    )]
    compare_etcd: Option<PathBuf>,
    /// Inject kills and pauses only (partitions need root and iptables; so do packet loss,
    /// delay and throttles).
    #[arg(long)]
    no_partitions: bool,
    /// Leave packet loss, added delay and throttled links out of the schedule.
    #[arg(long)]
    no_shaping: bool,
    /// Leave full disks out of the schedule (they need root to mount a tmpfs per member).
    #[arg(long)]
    no_disk_full: bool,
    /// Crash members at failpoints: runs a tenure built with the `failpoints` feature
    /// [default: $TENURE_FAILPOINTS_BIN, else target/{debug,release}/tenure-failpoints, built
    /// if there is none; or --tenure PATH, which must have them].
    #[arg(long)]
    failpoints: bool,
    /// Leave membership changes out of the schedule (a member replaced, the leader removed,
    /// three voters grown to five and back).
    #[arg(long)]
    no_membership: bool,
    /// Leave clock steps out of the schedule (they need libfaketime: apt-get install -y
    /// faketime).
    #[arg(long)]
    no_clock: bool,
    /// Clock faults step the monotonic clock too (every timer of the member), not only the
    /// wall clock; a leader whose clock jumps ahead expires leases early by its own clock.
    #[arg(long)]
    clock_monotonic: bool,
    /// Where the members run: each in a network namespace of its own (netns), on loopback, or
    /// namespaces where they can be made (auto).
    #[arg(long, value_enum, default_value_t = NetworkMode::Auto)]
    network: NetworkMode,
    /// Lease clients (keep-alives and expiry, checked).
    #[arg(long, default_value_t = 2)]
    lease_clients: usize,
    /// Lock clients (etcd's Lock with fencing tokens, checked).
    #[arg(long, default_value_t = 2)]
    lock_clients: usize,
    /// Leave out the Kubernetes-shaped client (CAS by mod_revision, paged lists, an informer
    /// with prev_kv, compaction).
    #[arg(long)]
    no_k8s: bool,
    /// The members' --snapshot-count (0: the server's default); small, so that a member down
    /// for a few seconds catches up by snapshot.
    #[arg(long, default_value_t = 300)]
    snapshot_count: u64,
    /// tenure's --snapshot-catchup-entries (entries kept behind each snapshot for followers
    /// to catch up from); default: a tenth of --snapshot-count, so that snapshots are sent
    /// often. 5000 is etcd 3.4's fixed figure, for side-by-side runs.
    #[arg(long)]
    snapshot_catchup_entries: Option<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Keys the clients share.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Milliseconds after which an operation counts as indeterminate.
    #[arg(long, default_value_t = 1_000)]
    op_timeout: u64,
    /// The members' --heartbeat-interval, in milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// The members' --election-timeout, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    election_timeout: u64,
    /// Seconds the linearizability checker may search.
    #[arg(long, default_value_t = 120)]
    check_timeout: u64,
    /// Keep the members' logs here (NAME.log).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Write the history here, one JSON object per operation.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Read with serializable (local) reads: a planted bug the checker must catch.
    #[arg(long)]
    serializable_reads: bool,
    /// Print the schedule the seed draws and exit, starting nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Do not narrate faults on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (server, etcd) = match (&args.etcd, &args.tenure) {
        (Some(path), _) => match binary::check_executable(path) {
            Ok(p) => (p, true),
            Err(e) => return fail(&format!("{e} (install etcd: apt-get install -y etcd-server)")),
        },
        (None, Some(path)) => match binary::check_executable(path) {
            Ok(p) if args.failpoints && !binary::has_failpoints(&p) => {
                return fail(&binary::BinaryError::NoFailpoints { path: p }.to_string());
            }
            Ok(p) => (p, false),
            Err(e) => return fail(&e.to_string()),
        },
        (None, None) if args.failpoints => match binary::locate_tenure_failpoints(true) {
            Ok(p) => (p, false),
            Err(e) => return fail(&e.to_string()),
        },
        (None, None) => match binary::locate_tenure(true) {
            Ok(p) => (p, false),
            Err(e) => return fail(&e.to_string()),
        },
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut config = RunConfig::new(server);
    config.seed = seed;
    config.duration = Duration::from_secs(args.duration);
    config.etcd = etcd;
    config.partitions = !args.no_partitions;
    config.partitions_note = args.no_partitions.then(|| "--no-partitions".to_string());
    config.client_count = args.clients;
    config.key_count = args.keys;
    config.op_timeout = Duration::from_millis(args.op_timeout);
    config.heartbeat_ms = args.heartbeat_interval;
    config.election_ms = args.election_timeout;
    config.check_timeout = Duration::from_secs(args.check_timeout);
    config.log_dir = args.log_dir.clone();
    config.verbose = !args.quiet;
    config.history_path = args.history.clone();
    config.serializable_reads = args.serializable_reads;
    config.extra.shaping = !args.no_shaping && !args.no_partitions;
    config.extra.disk_full = !args.no_disk_full;
    config.extra.failpoints = args.failpoints;
    config.extra.membership = !args.no_membership;
    config.extra.clock = !args.no_clock;
    config.clock_monotonic = args.clock_monotonic;
    config.network = args.network;
    config.lease_client_count = args.lease_clients;
    config.lock_client_count = args.lock_clients;
    config.k8s = !args.no_k8s;
    config.snapshot_count = (args.snapshot_count > 0).then_some(args.snapshot_count);
    config.snapshot_catchup_entries = args.snapshot_catchup_entries;
    if !args.dry_run {
        tenure_torture::run::detect_host(&mut config);
    }

    if args.dry_run {
        let spec = config.schedule_spec();
        println!(
            "seed {seed}, {} s, partitions {}, extra faults {:?}",
            args.duration,
            if config.partitions { "on" } else { "off" },
            spec.extra
        );
        for f in tenure_torture::schedule::generate(&spec) {
            println!(
                "  {:>7.2}..{:>7.2} s  {}",
                f.start_ms as f64 / 1e3,
                (f.start_ms + f.duration_ms) as f64 / 1e3,
                f.kind
            );
        }
        return ExitCode::SUCCESS;
    }
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(r) => r,
            Err(e) => return fail(&format!("cannot start the runtime: {e}")),
        };
    let first = match run_one(&runtime, &config) {
        None => return interrupted(),
        Some(Err(e)) => return fail(&e.to_string()),
        Some(Ok(r)) => r,
    };
    let mut reports = vec![first];
    if let Some(etcd) = &args.compare_etcd {
        let etcd = match binary::check_executable(etcd) {
            Ok(p) => p,
            Err(e) => return fail(&format!("{e} (install etcd: apt-get install -y etcd-server)")),
        };
        let mut other = config.clone();
        other.server = etcd;
        other.etcd = true;
        match run_one(&runtime, &other) {
            None => return interrupted(),
            Some(Err(e)) => return fail(&e.to_string()),
            Some(Ok(r)) => reports.push(r),
        }
    }
    if args.json {
        let value = match &reports[..] {
            [a, b] => serde_json::to_value(serde_json::json!({ a.flavor: a, b.flavor: b })),
            _ => serde_json::to_value(&reports[0]),
        };
        match value.and_then(|v| serde_json::to_string_pretty(&v)) {
            Ok(s) => println!("{s}"),
            Err(e) => return fail(&format!("cannot encode the report: {e}")),
        }
    } else {
        for r in &reports {
            println!("{}", r.to_text());
        }
        if let [a, b] = &reports[..] {
            print!("{}", tenure_torture::compare::side_by_side(a, b));
        }
    }
    if reports.iter().any(|r| r.anomalies > 0) {
        ExitCode::from(1)
    } else if reports.iter().any(|r| r.undecided > 0) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs `config` to its report; `None` if Ctrl-C came first (dropping the run's future kills
/// the members and removes the rules).
fn run_one(
    runtime: &tokio::runtime::Runtime,
    config: &RunConfig,
) -> Option<Result<Report, RunError>> {
    runtime.block_on(async {
        tokio::select! {
            r = run(config) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    })
}

fn interrupted() -> ExitCode {
    eprintln!("tenure-torture: interrupted; members stopped, rules removed");
    ExitCode::from(130)
}

fn fail(message: &str) -> ExitCode {
    eprintln!("tenure-torture: {message}");
    ExitCode::from(2)
}
