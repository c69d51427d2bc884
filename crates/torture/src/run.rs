//! One run: start the cluster, run the workload and the watchers, inject the schedule's faults,
//! heal, let the members converge, then check everything and write the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::check::{self, MemberHash};
use crate::cluster::{ClockConfig, Cluster, ClusterConfig, ClusterError, MemberSpec, connect};
use crate::election::{self, ElectionLog};
use crate::k8s::{self, K8sLog};
use crate::leases::{self, LeaseRecord};
use crate::locks::{self, LockLog};
use crate::net::{Firewall, FirewallError, Network, NetworkError};
use crate::netns::{Namespaces, NetnsError};
use crate::report::{FaultRecord, HealProbe, Leaders, Report, Totals, availability};
use crate::schedule::{self, ExtraFaults, FaultKind, PlannedFault, ScheduleSpec, Target};
use crate::watchers::{WatchLog, watch_member};
use crate::workload::{self, Recorder, WorkloadConfig};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The seed of the schedule and of the clients.
    pub seed: u64,
    /// How long the workload runs.
    pub duration: Duration,
    /// The server binary.
    pub server: PathBuf,
    /// Whether the server is etcd.
    pub etcd: bool,
    /// Whether partitions are in the schedule (they need iptables).
    pub partitions: bool,
    /// Why partitions are off, when they are, for the report.
    pub partitions_note: Option<String>,
    /// Concurrent clients.
    pub client_count: usize,
    /// Keys.
    pub key_count: usize,
    /// How long an operation may take before it counts as indeterminate.
    pub op_timeout: Duration,
    /// `--heartbeat-interval`, in milliseconds.
    pub heartbeat_ms: u64,
    /// `--election-timeout`, in milliseconds.
    pub election_ms: u64,
    /// Where the members' logs go.
    pub log_dir: Option<PathBuf>,
    /// How long the linearizability checker may search.
    pub check_timeout: Duration,
    /// Print each fault as it is injected and healed (to stderr).
    pub verbose: bool,
    /// Write the history here, one JSON object per operation.
    pub history_path: Option<PathBuf>,
    /// Serializable reads: the planted client-side bug the suite must find (see
    /// [`WorkloadConfig::serializable_reads`]).
    pub serializable_reads: bool,
    /// The fault kinds beyond kills, pauses and partitions in the schedule. Shaping needs
    /// partitions (the firewall); failpoints need a `tenure` built with the `failpoints`
    /// feature (with etcd, a crash is a plain kill and restart).
    pub extra: ExtraFaults,
    /// Why extra kinds are off, when some are, for the report.
    pub extra_note: Option<String>,
    /// Lease clients (keep-alives, expiry; see [`crate::leases`]).
    pub lease_client_count: usize,
    /// Lock clients (fencing tokens; see [`crate::locks`]).
    pub lock_client_count: usize,
    /// Run the Kubernetes-shaped client and its informer (see [`crate::k8s`]); it compacts,
    /// below what every watcher has seen.
    pub k8s: bool,
    /// The members' `--snapshot-count` (a small one makes a member killed for a few seconds
    /// catch up by snapshot, through the snapshot stream and its failpoints); none: the
    /// server's default.
    pub snapshot_count: Option<u64>,
    /// tenure's `--snapshot-catchup-entries` (entries kept behind each snapshot for followers
    /// to catch up from); none: a tenth of `snapshot_count`, so that snapshots are sent often.
    /// etcd 3.4 keeps 5,000, and has no flag for it.
    pub snapshot_catchup_entries: Option<u64>,
    /// Where the members run: each in a network namespace of its own, or on loopback.
    pub network: NetworkMode,
    /// Clock faults step the monotonic clock too (libfaketime fakes `CLOCK_MONOTONIC`, and
    /// with it every timer of the member), not only the wall clock.
    pub clock_monotonic: bool,
}

/// Where the members run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Namespaces where they can be made (root), else loopback; the report says which.
    Auto,
    /// Each member in a network namespace of its own (fails if they cannot be made).
    Netns,
    /// Every member on loopback (127.0.0.11...), told apart by user ids.
    Loopback,
}

impl RunConfig {
    /// A configuration with the suite's defaults for `server`: seed 1, 60 s, partitions on,
    /// 5 clients on 4 keys, 1 s operation timeout, etcd's default timing.
    pub fn new(server: PathBuf) -> RunConfig {
        RunConfig {
            seed: 1,
            duration: Duration::from_secs(60),
            server,
            etcd: false,
            partitions: true,
            partitions_note: None,
            client_count: 5,
            key_count: 4,
            op_timeout: Duration::from_millis(1_000),
            heartbeat_ms: 100,
            election_ms: 1_000,
            log_dir: None,
            check_timeout: Duration::from_secs(60),
            verbose: false,
            history_path: None,
            serializable_reads: false,
            extra: ExtraFaults {
                shaping: true,
                disk_full: true,
                failpoints: false,
                membership: true,
                clock: true,
            },
            extra_note: None,
            lease_client_count: 2,
            lock_client_count: 2,
            k8s: true,
            snapshot_count: Some(300),
            snapshot_catchup_entries: None,
            network: NetworkMode::Auto,
            clock_monotonic: false,
        }
    }

    /// Whether crash faults arm failpoints (a tenure built with them), or are plain kills.
    pub fn failpoints_usable(&self) -> bool {
        self.extra.failpoints && !self.etcd
    }

    /// The schedule's shape.
    pub fn schedule_spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            seed: self.seed,
            duration: self.duration,
            partitions: self.partitions,
            extra: ExtraFaults { shaping: self.extra.shaping && self.partitions, ..self.extra },
            member_count: MEMBER_COUNT,
        }
    }

    /// The command line that reruns this schedule.
    pub fn rerun_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p tenure-torture -- --seed {} --duration {} --clients {} --keys {} \
             --op-timeout {} --heartbeat-interval {} --election-timeout {}",
            self.seed,
            self.duration.as_secs(),
            self.client_count,
            self.key_count,
            self.op_timeout.as_millis(),
            self.heartbeat_ms,
            self.election_ms
        );
        if !self.partitions {
            cmd.push_str(" --no-partitions");
        }
        let extra = self.schedule_spec().extra;
        if !extra.shaping {
            cmd.push_str(" --no-shaping");
        }
        if !extra.disk_full {
            cmd.push_str(" --no-disk-full");
        }
        if extra.failpoints {
            cmd.push_str(" --failpoints");
        }
        if !extra.membership {
            cmd.push_str(" --no-membership");
        }
        if !extra.clock {
            cmd.push_str(" --no-clock");
        } else if self.clock_monotonic {
            cmd.push_str(" --clock-monotonic");
        }
        match self.network {
            NetworkMode::Auto => {}
            NetworkMode::Netns => cmd.push_str(" --network netns"),
            NetworkMode::Loopback => cmd.push_str(" --network loopback"),
        }
        cmd.push_str(&format!(
            " --lease-clients {} --lock-clients {}",
            self.lease_client_count, self.lock_client_count
        ));
        if !self.k8s {
            cmd.push_str(" --no-k8s");
        }
        match self.snapshot_count {
            Some(n) => cmd.push_str(&format!(" --snapshot-count {n}")),
            None => cmd.push_str(" --snapshot-count 0"),
        }
        if let Some(n) = self.snapshot_catchup_entries {
            cmd.push_str(&format!(" --snapshot-catchup-entries {n}"));
        }
        if self.serializable_reads {
            cmd.push_str(" --serializable-reads");
        }
        let flag = if self.etcd { "--etcd" } else { "--tenure" };
        cmd.push_str(&format!(" {flag} {}", self.server.display()));
        cmd
    }
}

/// Turns off the fault kinds this host cannot inject, noting why in the report: throttles
/// need `tc` and loopback's default root qdisc, delays a netfilter queue; full disks need a
/// tmpfs mount (root). Partitions are checked by the run itself (it refuses to start without
/// the firewall it was asked for).
pub fn detect_host(config: &mut RunConfig) {
    let mut notes = Vec::new();
    // In namespaces throttles shape the members' own links; on loopback they need lo's
    // root qdisc.
    let namespaces = config.network != NetworkMode::Loopback && crate::netns::available().is_ok();
    if config.extra.shaping
        && config.partitions
        && !namespaces
        && let Err(e) = crate::net::shaping_available()
    {
        config.extra.shaping = false;
        notes.push(format!("no loss, delay or throttles: {e}"));
    }
    if config.extra.shaping
        && config.partitions
        && let Err(e) = crate::delay::available()
    {
        config.extra.shaping = false;
        notes.push(format!("no loss, delay or throttles: {e}"));
    }
    if config.extra.disk_full
        && let Err(e) = crate::cluster::disks_available()
    {
        config.extra.disk_full = false;
        notes.push(format!("no full disks: {e}"));
    }
    if config.extra.clock && !Path::new(crate::cluster::FAKETIME_LIBRARY).exists() {
        config.extra.clock = false;
        notes.push(format!(
            "no clock steps: {} is not installed (apt-get install -y faketime)",
            crate::cluster::FAKETIME_LIBRARY
        ));
    }
    if config.extra.clock && config.etcd {
        // etcd is a static Go binary: libfaketime is never loaded into it.
        config.extra.clock = false;
        notes.push("no clock steps: etcd is statically linked (libfaketime cannot load)".into());
    }
    if !notes.is_empty() {
        config.extra_note = Some(notes.join("; "));
    }
}

/// The suite runs three members.
pub const MEMBER_COUNT: usize = 3;

/// Slots beyond [`MEMBER_COUNT`] that [`FaultKind::Grow`] adds members in.
pub const SPARE_SLOTS: usize = 2;

/// How long a membership change may take (a learner catches up by snapshot first).
const MEMBERSHIP_PATIENCE: Duration = Duration::from_secs(30);

/// The size of each member's tmpfs disk when the schedule fills disks: room for the log's
/// active and prepared segments (64 MiB each, preallocated) and snapshots.
pub const DISK_BYTES: u64 = 256 << 20;

/// Why a run could not be carried out (as opposed to an anomaly it found).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Partitions were asked for and the firewall cannot be installed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// Network namespaces were asked for and cannot be made.
    #[error("network namespaces: {0}")]
    Netns(#[from] NetnsError),
    /// A network fault could not be injected or healed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The cluster could not be started or driven.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The workload could not connect to a member at the start.
    #[error("cannot connect to {member}: {detail}")]
    Connect {
        /// The member.
        member: String,
        /// The client's error.
        detail: String,
    },
    /// A zero duration, no clients or no keys.
    #[error("bad configuration: {0}")]
    Config(String),
}

/// A fault as it happened: the plan, what was done, its window (µs), who led, and the heal
/// probes still running.
type Window = (PlannedFault, String, u64, u64, Leaders, Vec<tokio::task::JoinHandle<Option<u64>>>);

/// What is in force, to be healed.
enum Active {
    Killed(usize),
    Paused(usize),
    Cut,
    DiskFull(usize),
    /// A member started with a failpoint armed.
    Armed(usize),
    /// A member removed and wiped; added back half-way through the window.
    Replaced(usize),
    /// Members added in these spare slots.
    Grown(Vec<usize>),
    /// A member's clock off.
    Clock(usize),
}

/// The exit code of a member whose failpoint fired (tenure-storage's
/// `failpoints::EXIT_CODE`).
pub const FAILPOINT_EXIT_CODE: i32 = 86;

/// What the fault loop knows about members it expects to exit or to keep down.
#[derive(Default)]
struct Expected {
    /// A member armed with a failpoint: its exit with [`FAILPOINT_EXIT_CODE`] is the fault,
    /// not a crash; when it fired (µs).
    armed: Option<(usize, Option<u64>)>,
    /// A member whose disk is full. It must keep running (issue 18: it pauses its log and
    /// refuses writes until space is freed); if it exits all the same, the exit is a crash (a
    /// failure of the run) and it stays down until the heal, since a start on a full disk fails
    /// at once.
    held_down: Option<usize>,
    /// Whether the held-down member exited (a crash, reported as such).
    held_down_exited: bool,
}

/// Carries out one run and returns its report.
///
/// # Errors
/// [`RunError`] when the run cannot be carried out; anomalies are in the report.
pub async fn run(config: &RunConfig) -> Result<Report, RunError> {
    if config.client_count == 0 || config.key_count == 0 || config.duration.is_zero() {
        return Err(RunError::Config("--clients, --keys and --duration must be above 0".into()));
    }
    let log = |msg: String| {
        if config.verbose {
            eprintln!("{msg}");
        }
    };
    let plan = schedule::generate(&config.schedule_spec());
    let has_disk_faults = plan.iter().any(|f| matches!(f.kind, FaultKind::DiskFull { .. }));
    let has_membership =
        plan.iter().any(|f| matches!(f.kind, FaultKind::Replace { .. } | FaultKind::Grow));
    let has_clock = plan.iter().any(|f| matches!(f.kind, FaultKind::Clock { .. }));
    let spare_slots = if has_membership { SPARE_SLOTS } else { 0 };
    let (mut network, network_note) =
        choose_network(config.network, config.partitions, MEMBER_COUNT + spare_slots)?;
    log(format!("network: {network_note}"));
    let namespaces = match &network {
        Some(Network::Namespaces(ns)) => {
            Some((0..ns.slot_count()).map(|i| (ns.member(i), ns.address(i))).collect())
        }
        _ => None,
    };
    let mut cluster = Cluster::start(
        ClusterConfig {
            binary: config.server.clone(),
            etcd: config.etcd,
            member_count: MEMBER_COUNT,
            heartbeat_ms: config.heartbeat_ms,
            election_ms: config.election_ms,
            run_as_users: matches!(network, Some(Network::Loopback(_))),
            log_dir: config.log_dir.clone(),
            snapshot_count: config.snapshot_count,
            snapshot_catchup_entries: config.snapshot_catchup_entries,
            disk_bytes: has_disk_faults.then_some(DISK_BYTES),
            spare_slots,
            namespaces,
            clock: has_clock.then(|| ClockConfig {
                library: PathBuf::from(crate::cluster::FAKETIME_LIBRARY),
                monotonic: config.clock_monotonic,
            }),
        },
        Duration::from_secs(30),
    )
    .await?;
    log(format!(
        "cluster up: {:?}",
        cluster.specs()[..MEMBER_COUNT].iter().map(|s| s.client_url()).collect::<Vec<_>>()
    ));

    let workload_config = WorkloadConfig {
        client_count: config.client_count,
        key_count: config.key_count,
        op_timeout: config.op_timeout,
        seed: config.seed,
        serializable_reads: config.serializable_reads,
    };
    let mut clients = Vec::new();
    for spec in &cluster.specs()[..MEMBER_COUNT] {
        let c = connect(&spec.client_url(), Duration::from_secs(2), Some(config.op_timeout))
            .await
            .map_err(|e| RunError::Connect { member: spec.name.clone(), detail: e.to_string() })?;
        clients.push(c);
    }
    let watch_logs: Vec<Arc<Mutex<WatchLog>>> =
        (0..MEMBER_COUNT).map(|_| Arc::new(Mutex::new(WatchLog::default()))).collect();
    let watch_tasks: Vec<_> = cluster.specs()[..MEMBER_COUNT]
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(watch_member(i, s.client_url(), watch_logs[i].clone())))
        .collect();
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    // Lease and lock clients wait (a lock, a keep-alive stream): channels without a request
    // timeout, each call bounded by its own.
    let mut waiting_clients = Vec::new();
    if config.lease_client_count + config.lock_client_count > 0 || config.k8s {
        for spec in &cluster.specs()[..MEMBER_COUNT] {
            let c =
                connect(&spec.client_url(), Duration::from_secs(2), None).await.map_err(|e| {
                    RunError::Connect { member: spec.name.clone(), detail: e.to_string() }
                })?;
            waiting_clients.push(c);
        }
    }
    let k8s_log: Arc<Mutex<K8sLog>> = Arc::default();
    // The lowest revision every watcher (the run's and the informer) has reached: the k8s
    // client compacts below it, so that no watcher's resume is compacted away.
    let compact_below = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let informer_seen = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut k8s_tasks = Vec::new();
    if config.k8s {
        k8s_tasks.push(tokio::spawn(k8s::run_k8s_client(
            waiting_clients.clone(),
            config.seed,
            config.op_timeout,
            k8s_log.clone(),
            stop.clone(),
            compact_below.clone(),
        )));
        let url = cluster.specs()[(config.seed % MEMBER_COUNT as u64) as usize].client_url();
        k8s_tasks.push(tokio::spawn(k8s::run_informer(
            url,
            k8s_log.clone(),
            informer_seen.clone(),
        )));
        let (logs, seen, below) =
            (watch_logs.clone(), informer_seen.clone(), compact_below.clone());
        k8s_tasks.push(tokio::spawn(async move {
            loop {
                let lowest = logs
                    .iter()
                    .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).last.unwrap_or(0))
                    .chain([seen.load(Ordering::Relaxed)])
                    .min()
                    .unwrap_or(0);
                below.store(lowest, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    let lease_records: Arc<Mutex<Vec<LeaseRecord>>> = Arc::default();
    let lock_log: Arc<Mutex<LockLog>> = Arc::default();
    let lease_tasks: Vec<_> = (0..config.lease_client_count as u64)
        .map(|id| {
            tokio::spawn(leases::run_lease_client(
                id,
                waiting_clients.clone(),
                config.seed,
                config.op_timeout,
                recorder.clone(),
                lease_records.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // Two candidates for a Kubernetes-shaped Lease object, with the Kubernetes client.
    let election_log: Arc<Mutex<ElectionLog>> = Arc::default();
    let election_tasks: Vec<_> = (0..if config.k8s { 2 } else { 0 })
        .map(|id| {
            tokio::spawn(election::run_candidate(
                id,
                waiting_clients.clone(),
                config.seed,
                config.op_timeout,
                recorder.clone(),
                election_log.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let lock_tasks: Vec<_> = (0..config.lock_client_count as u64)
        .map(|id| {
            tokio::spawn(locks::run_lock_client(
                id,
                waiting_clients.clone(),
                config.seed,
                config.op_timeout,
                lock_log.clone(),
                stop.clone(),
                recorder.clone(),
            ))
        })
        .collect();
    let client_tasks: Vec<_> = (0..config.client_count as u64)
        .map(|id| {
            tokio::spawn(workload::run_client(
                id,
                clients.clone(),
                workload_config.clone(),
                recorder.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let mut crashes = Vec::new();
    let mut grown_verdicts: Vec<check::Verdict> = Vec::new();
    let mut expected = Expected::default();
    let mut windows: Vec<Window> = Vec::new();
    for fault in &plan {
        sleep_until(
            &recorder,
            fault.start_ms * 1_000,
            &mut cluster,
            &mut crashes,
            &mut expected,
            &log,
        )
        .await;
        let leader = cluster.leader().await;
        let who = |t: Target| resolve(t, leader, MEMBER_COUNT);
        let name = |i: usize| format!("n{}", i + 1);
        let mut pending_arm = None;
        // Taken before the fault is injected: a membership change takes seconds (a learner
        // catches up before its promotion), and its window starts when it is asked for.
        let start_us = recorder.now_us();
        let (active, injected) = match fault.kind {
            FaultKind::Kill { target } => {
                let i = who(target);
                cluster.kill(i)?;
                (Active::Killed(i), format!("kill {}", name(i)))
            }
            FaultKind::Pause { target } => {
                let i = who(target);
                cluster.pause(i)?;
                (Active::Paused(i), format!("pause {}", name(i)))
            }
            FaultKind::Isolate { target } => {
                let i = who(target);
                let net = network.as_ref().expect("partitions are drawn only with a network");
                for j in (0..MEMBER_COUNT).filter(|&j| j != i) {
                    net.cut(cluster.specs(), i, j)?;
                    net.cut(cluster.specs(), j, i)?;
                }
                (Active::Cut, format!("isolate {}", name(i)))
            }
            FaultKind::Bridge { bridge } => {
                let b = who(bridge);
                let net = network.as_ref().expect("partitions are drawn only with a network");
                // The others in member order, split in two halves cut from each other.
                let others: Vec<usize> = (0..MEMBER_COUNT).filter(|&j| j != b).collect();
                let (left, right) = others.split_at(others.len() / 2);
                for &l in left {
                    for &r in right {
                        net.cut(cluster.specs(), l, r)?;
                        net.cut(cluster.specs(), r, l)?;
                    }
                }
                let names = |side: &[usize]| side.iter().map(|&j| name(j)).collect::<Vec<_>>();
                let what = format!(
                    "bridge: {} and {} cut from each other, {} reaching both",
                    names(left).join(","),
                    names(right).join(","),
                    name(b)
                );
                (Active::Cut, what)
            }
            FaultKind::OneWay { from, to } => {
                let (f, t) = (who(from), who(to));
                let net = network.as_ref().expect("partitions are drawn only with a network");
                net.cut(cluster.specs(), f, t)?;
                (Active::Cut, format!("one-way {} -/-> {}", name(f), name(t)))
            }
            FaultKind::Loss { target, percent } => {
                let i = who(target);
                let net = network.as_ref().expect("shaping is drawn only with a network");
                net.lose(cluster.specs(), i, percent)?;
                (Active::Cut, format!("lose {percent}% of {}'s peer packets", name(i)))
            }
            FaultKind::Delay { target, ms } => {
                let i = who(target);
                let net = network.as_mut().expect("shaping is drawn only with a network");
                net.delay(cluster.specs(), i, Duration::from_millis(u64::from(ms)))?;
                (Active::Cut, format!("delay {}'s peer packets {ms} ms each way", name(i)))
            }
            FaultKind::Throttle { target, kbit } => {
                let i = who(target);
                let net = network.as_mut().expect("shaping is drawn only with a network");
                net.throttle(cluster.specs(), i, kbit)?;
                (Active::Cut, format!("throttle {} to {kbit} kbit/s", name(i)))
            }
            FaultKind::Replace { target } => {
                let i = who(target);
                let was_leader = leader == Some(i);
                cluster.remove_member(i, MEMBERSHIP_PATIENCE).await?;
                let what = if was_leader { "remove the leader" } else { "remove" };
                (Active::Replaced(i), format!("{what} {}, wipe it", name(i)))
            }
            FaultKind::Grow => {
                let mut added = Vec::new();
                let mut notes = Vec::new();
                for slot in MEMBER_COUNT..MEMBER_COUNT + SPARE_SLOTS {
                    // One learner at a time (etcd allows one), promoted before the next.
                    let id = cluster.add_learner(slot, MEMBERSHIP_PATIENCE).await?;
                    added.push(slot);
                    let asked = cluster.promote(slot, MEMBERSHIP_PATIENCE).await?;
                    notes.push(format!("{} ({id:x}, promoted at ask {asked})", name(slot)));
                }
                (Active::Grown(added), format!("grow: add {}", notes.join(", ")))
            }
            FaultKind::Clock { target, offset_s, rate_percent } => {
                let i = who(target);
                // A monotonic clock never steps back: with it faked, steps are forward only
                // and what the clock gained is kept after the window.
                let (offset_s, clocks) = if config.clock_monotonic {
                    (offset_s.abs(), "wall and monotonic")
                } else {
                    (offset_s, "wall clock only")
                };
                cluster.start_clock_fault(i, offset_s as f64, f64::from(rate_percent) / 100.0)?;
                let kind = FaultKind::Clock { target: Target::Member(i), offset_s, rate_percent };
                (Active::Clock(i), format!("{kind} ({clocks})"))
            }
            FaultKind::DiskFull { target } => {
                let i = who(target);
                let bytes = cluster.fill_disk(i)?;
                expected.held_down = Some(i);
                expected.held_down_exited = false;
                (Active::DiskFull(i), format!("fill {}'s disk ({} MiB)", name(i), bytes >> 20))
            }
            FaultKind::Crash { target, point, after } => {
                let i = who(target);
                cluster.kill(i)?;
                if config.failpoints_usable() {
                    let actions = if after == 0 {
                        "1*return".to_string()
                    } else {
                        format!("{after}*off->1*return")
                    };
                    // Started again half-way through the window, so that it is behind the
                    // compacted log by then and the snapshot points are reached too.
                    pending_arm = Some((i, format!("{point}={actions}")));
                    (Active::Armed(i), format!("crash {} at {point} after {after}", name(i)))
                } else {
                    cluster.restart(i)?;
                    (Active::Killed(i), format!("kill {} (no failpoints in this binary)", name(i)))
                }
            }
        };
        let leader_note =
            leader.map_or("no leader known".to_string(), |l| format!("leader {}", name(l)));
        log(format!(
            "{:>8.2} s  {injected} ({}; {leader_note})",
            start_us as f64 / 1e6,
            fault.kind
        ));
        if let Active::Replaced(i) = &active {
            let i = *i;
            let half_way = (fault.start_ms + fault.duration_ms / 2) * 1_000;
            sleep_until(&recorder, half_way, &mut cluster, &mut crashes, &mut expected, &log).await;
            let id = cluster.add_learner(i, MEMBERSHIP_PATIENCE).await?;
            log(format!(
                "{:>8.2} s  {} added back as learner {id:x}",
                recorder.now_us() as f64 / 1e6,
                name(i)
            ));
        }
        if let Some((i, points)) = pending_arm {
            let half_way = (fault.start_ms + fault.duration_ms / 2) * 1_000;
            sleep_until(&recorder, half_way, &mut cluster, &mut crashes, &mut expected, &log).await;
            if points.starts_with("snapshot-")
                && let Some(count) = config.snapshot_count
            {
                // The snapshot points are reached only if the member comes back behind the
                // leader's compacted log: two snapshots' worth of writes while it is down
                // make sure of that, whatever the clients managed in the window.
                let via = clients[(i + 1) % MEMBER_COUNT].clone();
                let written = write_filler(via, 2 * count as usize, config.op_timeout).await;
                log(format!(
                    "{:>8.2} s  {written} filler writes while {} is down (to force a snapshot)",
                    recorder.now_us() as f64 / 1e6,
                    name(i)
                ));
            }
            cluster.restart_with_failpoints(i, points)?;
            expected.armed = Some((i, None));
        }
        let planned_end = (fault.start_ms + fault.duration_ms) * 1_000;
        sleep_until(&recorder, planned_end, &mut cluster, &mut crashes, &mut expected, &log).await;
        // Who leads just before the heal (asking takes at most one status timeout; the
        // window's end is taken at the heal itself).
        let leader_before_heal = cluster.leader().await;
        let mut injected = injected;
        match active {
            Active::Killed(i) => cluster.restart(i)?,
            Active::Paused(i) => cluster.resume(i)?,
            Active::Cut => {
                if let Some(net) = &mut network {
                    let held = net.delayed_packets();
                    if held > 0 {
                        injected.push_str(&format!(" ({held} packets held)"));
                    }
                    net.heal()?;
                }
            }
            Active::Replaced(i) => {
                let asked = cluster.promote(i, MEMBERSHIP_PATIENCE).await?;
                injected.push_str(&format!(
                    ", add back as learner {:x}, promoted at ask {asked}",
                    cluster.member_ids()[i]
                ));
            }
            Active::Grown(slots) => {
                // Five members, compared before two go: the same HashKV at one revision.
                let (revision, hashes) = hash_members(&cluster).await;
                let mut verdict = check::convergence(&hashes, revision);
                verdict.checker = "convergence (five members)";
                grown_verdicts.push(verdict);
                for &slot in slots.iter().rev() {
                    cluster.remove_member(slot, MEMBERSHIP_PATIENCE).await?;
                }
                injected.push_str("; remove them again");
            }
            Active::Clock(i) => {
                let off_s = cluster.end_clock_fault(i, config.clock_monotonic)?;
                if config.clock_monotonic {
                    injected.push_str(&format!(", {off_s:+.1} s kept"));
                } else {
                    injected.push_str(&format!(", stepped back {:.1} s", -off_s));
                }
            }
            Active::DiskFull(i) => {
                cluster.free_disk(i)?;
                if expected.held_down_exited {
                    injected.push_str(&format!(": {} exited on the full disk", name(i)));
                    cluster.restart(i)?;
                }
                expected.held_down = None;
            }
            Active::Armed(i) => match expected.armed.take() {
                Some((_, Some(fired_us))) => injected.push_str(&format!(
                    ": fired at {:.2} s",
                    fired_us.saturating_sub(start_us) as f64 / 1e6
                )),
                _ => {
                    // Not reached in the window: disarmed by a kill and a plain start.
                    injected.push_str(": not reached, killed to disarm");
                    cluster.kill(i)?;
                    cluster.restart(i)?;
                }
            },
        }
        let end_us = recorder.now_us();
        let leaders =
            Leaders { at_start: leader.map(name), before_heal: leader_before_heal.map(name) };
        log(format!(
            "{:>8.2} s  healed (leader before the heal: {})",
            end_us as f64 / 1e6,
            leaders.before_heal.as_deref().unwrap_or("none")
        ));
        let probes: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(m, c)| {
                tokio::spawn(workload::probe(
                    windows.len(),
                    m,
                    c.clone(),
                    end_us,
                    recorder.clone(),
                    config.op_timeout,
                ))
            })
            .collect();
        windows.push((*fault, injected, start_us, end_us, leaders, probes));
    }
    let end_us = config.duration.as_micros() as u64;
    sleep_until(&recorder, end_us, &mut cluster, &mut crashes, &mut expected, &log).await;
    stop.store(true, Ordering::Relaxed);
    for t in client_tasks {
        let _ = t.await;
    }
    // The lease clients let their last leases go and watch them vanish; the lock clients
    // finish their hold.
    for t in lease_tasks.into_iter().chain(lock_tasks).chain(election_tasks) {
        let _ = t.await;
    }
    let workload_end_us = recorder.now_us();
    let mut probe_results = Vec::new();
    for w in &mut windows {
        let mut per_member = Vec::new();
        for p in w.5.drain(..) {
            per_member.push(p.await.ok().flatten());
        }
        probe_results.push(HealProbe::of(&per_member));
    }
    log(format!(
        "{:>8.2} s  workload stopped; waiting for the members to converge",
        workload_end_us as f64 / 1e6
    ));

    // A lease whose owner stopped (or whose grant's answer was lost) still expires later and
    // deletes its keys at a new revision; the final revision is read once none is left.
    let lease_patience =
        Duration::from_secs(leases::LEASE_TTL_S as u64) + leases::LEASE_EXPIRY_SLACK;
    let leases_note = wait_for_no_leases(&mut clients[0], lease_patience, config.op_timeout).await;
    // Every member up, every rule gone: wait for equal revisions twice in a row.
    let (final_revision, converged_note) = converge(&cluster).await;
    let converged_note = match (converged_note, leases_note) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    let mut hashes = Vec::new();
    for i in cluster.active_members() {
        hashes.push(hash_of(&cluster.specs()[i], final_revision).await);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        workload::final_reads(i, c, &workload_config, &recorder).await;
    }
    if config.lease_client_count > 0 {
        let patience = Duration::from_secs(leases::LEASE_TTL_S as u64) + leases::LEASE_EXPIRY_SLACK;
        leases::final_expiry_reads(
            &mut clients[0],
            &lease_records,
            config.op_timeout,
            &recorder,
            patience,
        )
        .await;
    }
    // The watchers catch up to the final revision (or are given up on).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline
        && !watch_logs
            .iter()
            .all(|l| l.lock().unwrap_or_else(|e| e.into_inner()).last >= Some(final_revision))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for t in &watch_tasks {
        t.abort();
    }
    for t in &k8s_tasks {
        t.abort();
    }
    crashes
        .extend(cluster.exited().into_iter().map(|(i, how)| format!("n{} exited: {how}", i + 1)));
    drop(cluster);
    drop(network);

    let history = recorder.ops();
    if let Some(path) = &config.history_path {
        let lines: Vec<String> = history.iter().map(|o| o.to_json().to_string()).collect();
        if let Err(e) = std::fs::write(path, lines.join("\n") + "\n") {
            log(format!("cannot write the history to {}: {e}", path.display()));
        }
    }
    let logs: Vec<WatchLog> =
        watch_logs.iter().map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
    let mut verdicts = vec![check::linearizable(&history, config.check_timeout)];
    verdicts.extend(grown_verdicts);
    let (watch_verdict, reference) = check::watches(&logs, final_revision);
    verdicts.push(check::acknowledged_writes(&history, &reference));
    verdicts.push(watch_verdict);
    if config.lease_client_count > 0 {
        let records = lease_records.lock().unwrap_or_else(|e| e.into_inner()).clone();
        verdicts.push(leases::check_leases(&records));
    }
    if config.lock_client_count > 0 {
        let log = lock_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        verdicts.push(locks::check_locks(&log, &reference));
    }
    if config.k8s {
        let log = k8s_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        verdicts.push(k8s::check_k8s(&log, &reference));
        let terms = election_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
        verdicts.push(election::check_election(&terms));
    }
    let mut convergence = check::convergence(&hashes, final_revision);
    if let Some(note) = converged_note {
        convergence.outcome = check::Outcome::Fail;
        convergence.detail = format!("{note}; {}", convergence.detail);
    }
    verdicts.push(convergence);
    verdicts.push(check::no_crashes(&crashes));

    let faults = windows
        .iter()
        .enumerate()
        .map(|(k, (planned, injected, start_us, end_us, leaders, _))| {
            let next = windows.get(k + 1).map_or(workload_end_us, |w| w.2);
            FaultRecord {
                planned: planned.kind.to_string(),
                injected: injected.clone(),
                start_ms: *start_us as f64 / 1e3,
                end_ms: *end_us as f64 / 1e3,
                leader_at_start: leaders.at_start.clone(),
                leader_before_heal: leaders.before_heal.clone(),
                availability: availability(&history, *start_us, *end_us, next),
                heal_probe: probe_results[k].clone(),
            }
        })
        .collect();
    let first_fault_us = windows.first().map_or(workload_end_us, |w| w.2);
    let baseline = availability(&history, 0, first_fault_us, first_fault_us);
    let mut report = Report {
        seed: config.seed,
        server: config.server.display().to_string(),
        flavor: if config.etcd { "etcd" } else { "tenure" },
        duration_s: config.duration.as_secs_f64(),
        partitions: config.partitions,
        partitions_note: config.partitions_note.clone(),
        network: network_note,
        extra: config.schedule_spec().extra,
        extra_note: config.extra_note.clone(),
        heartbeat_ms: config.heartbeat_ms,
        election_ms: config.election_ms,
        clients: config.client_count,
        keys: config.key_count,
        baseline_ops_per_s: baseline.ops_per_s_during,
        faults,
        totals: Totals::of(&history),
        final_revision,
        verdicts,
        anomalies: 0,
        undecided: 0,
        rerun: config.rerun_command(),
    };
    report.tally();
    Ok(report)
}

/// The member a target names, given the leader (member 0 if none is known).
fn resolve(target: Target, leader: Option<usize>, members: usize) -> usize {
    match target {
        Target::Member(i) => i % members,
        Target::Leader => leader.unwrap_or(0),
        // With no leader known, "the leader" is member 0, so the followers are the others:
        // a one-way cut never names one member at both ends.
        Target::Follower(k) => {
            let leader = leader.unwrap_or(0);
            let followers: Vec<usize> = (0..members).filter(|&i| i != leader).collect();
            followers[k % followers.len()]
        }
    }
}

/// Sleeps until `at_us` on the recorder's clock, meanwhile restarting any member that exited
/// on its own (and noting the crash); a member whose armed failpoint fired is started again
/// without it (not a crash), one on a full disk is left down until the heal (a crash: a full
/// disk must not stop a member).
async fn sleep_until(
    recorder: &Recorder,
    at_us: u64,
    cluster: &mut Cluster,
    crashes: &mut Vec<String>,
    expected: &mut Expected,
    log: &dyn Fn(String),
) {
    loop {
        for (i, how) in cluster.exited() {
            let now = recorder.now_us();
            if let Some((armed, fired)) = &mut expected.armed
                && *armed == i
                && fired.is_none()
                && how.code() == Some(FAILPOINT_EXIT_CODE)
            {
                *fired = Some(now);
                log(format!("{:>8.2} s  n{} crashed at its failpoint", now as f64 / 1e6, i + 1));
                if let Err(e) = cluster.restart(i) {
                    crashes.push(format!("n{} could not be restarted: {e}", i + 1));
                }
                continue;
            }
            let on_full_disk = if expected.held_down == Some(i) { " on its full disk" } else { "" };
            let msg =
                format!("n{} exited at {:.2} s{on_full_disk}: {how}", i + 1, now as f64 / 1e6);
            log(msg.clone());
            crashes.push(msg);
            if expected.held_down == Some(i) {
                expected.held_down_exited = true;
                continue;
            }
            if let Err(e) = cluster.restart(i) {
                crashes.push(format!("n{} could not be restarted: {e}", i + 1));
            }
        }
        let now = recorder.now_us();
        if now >= at_us {
            return;
        }
        tokio::time::sleep(Duration::from_micros((at_us - now).min(200_000))).await;
    }
}

/// Puts `count` values to keys under `/torture/filler/` through `client`, eight at a time;
/// returns how many were acknowledged. They are not part of the recorded history (no checker
/// reads those keys; the watchers see them as any other revision).
async fn write_filler(client: etcd_client::Client, count: usize, op_timeout: Duration) -> usize {
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for k in (t..count).step_by(8) {
                    let put = c.put(format!("/torture/filler/{}", k % 64), vec![0u8; 64], None);
                    if matches!(tokio::time::timeout(op_timeout, put).await, Ok(Ok(_))) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    ok
}

/// Member `spec`'s HashKV at `revision`.
async fn hash_of(spec: &MemberSpec, revision: i64) -> MemberHash {
    let answer = async {
        let mut c =
            connect(&spec.client_url(), Duration::from_secs(2), Some(Duration::from_secs(10)))
                .await?;
        c.hash_kv(revision).await
    }
    .await;
    match answer {
        Ok(h) => MemberHash {
            member: spec.name.clone(),
            hash: Some((h.hash(), h.compact_version())),
            error: None,
        },
        Err(e) => MemberHash { member: spec.name.clone(), hash: None, error: Some(e.to_string()) },
    }
}

/// Every member's HashKV at the highest revision all of them have applied, taken while the
/// workload runs: asked again (up to 20 times) while a member does not answer or the members
/// differ in how far they have compacted (the Kubernetes client compacts every few seconds,
/// and a member that has not applied the latest compaction hashes more history). Returns the
/// revision and the last answers.
async fn hash_members(cluster: &Cluster) -> (i64, Vec<MemberHash>) {
    let mut last = (0, Vec::new());
    for _ in 0..20 {
        let statuses = cluster.statuses().await;
        let active = cluster.active_members();
        let revision =
            active.iter().filter_map(|&i| statuses[i].map(|s| s.revision)).min().unwrap_or(0);
        let mut hashes = Vec::new();
        for &i in &active {
            hashes.push(hash_of(&cluster.specs()[i], revision).await);
        }
        let compactions: Vec<Option<i64>> =
            hashes.iter().map(|h| h.hash.map(|(_, compact)| compact)).collect();
        let comparable =
            compactions.iter().all(Option::is_some) && compactions.windows(2).all(|w| w[0] == w[1]);
        last = (revision, hashes);
        if comparable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    last
}

/// The network the members run on: namespaces if asked or possible, else loopback with the
/// firewall if partitions are asked for (refusing to start without it), else plain loopback.
/// Returns it and a line for the report.
///
/// # Errors
/// [`RunError`] if namespaces were asked for and cannot be made, or partitions on loopback
/// without the firewall.
fn choose_network(
    mode: NetworkMode,
    partitions: bool,
    slot_count: usize,
) -> Result<(Option<Network>, String), RunError> {
    let why_not = match mode {
        NetworkMode::Loopback => "--network loopback".to_string(),
        NetworkMode::Netns => {
            let ns = Namespaces::create(slot_count)?;
            let note = ns.describe();
            return Ok((Some(Network::Namespaces(ns)), note));
        }
        NetworkMode::Auto => match crate::netns::available() {
            Ok(()) => {
                let ns = Namespaces::create(slot_count)?;
                let note = ns.describe();
                return Ok((Some(Network::Namespaces(ns)), note));
            }
            Err(e) => e,
        },
    };
    let addresses = format!("127.0.0.11-{}", 10 + slot_count);
    if partitions {
        let fw = Firewall::install()?;
        let note = format!("loopback ({addresses}, a user per member; {why_not})");
        Ok((Some(Network::Loopback(fw)), note))
    } else {
        Ok((None, format!("loopback ({addresses}, no network faults; {why_not})")))
    }
}

/// Waits (up to 30 s) until every member answers with the same revision twice in a row;
/// returns it, with a note if they never did (then the highest revision seen).
/// Waits until the cluster lists no lease (every owner has stopped, so each one left is revoked
/// by expiry), for at most `patience`; a note if some remained.
async fn wait_for_no_leases(
    client: &mut etcd_client::Client,
    patience: Duration,
    op_timeout: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let last = match tokio::time::timeout(op_timeout, client.leases()).await {
            Ok(Ok(answer)) if answer.leases().is_empty() => return None,
            Ok(Ok(answer)) => format!("{} leases left", answer.leases().len()),
            Ok(Err(e)) => format!("lease list failed: {e}"),
            Err(_) => "lease list timed out".to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Some(format!(
                "leases still listed {:.0} s after the workload stopped ({last})",
                patience.as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn converge(cluster: &Cluster) -> (i64, Option<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut previous: Option<i64> = None;
    let mut highest = 0;
    let mut last_seen = String::new();
    while tokio::time::Instant::now() < deadline {
        let statuses = cluster.statuses().await;
        let revisions: Vec<Option<i64>> =
            cluster.active_members().into_iter().map(|i| statuses[i].map(|s| s.revision)).collect();
        highest = highest.max(revisions.iter().flatten().copied().max().unwrap_or(0));
        last_seen = format!("{revisions:?}");
        let first = revisions[0];
        if first.is_some() && revisions.iter().all(|r| *r == first) {
            if previous == first {
                return (first.unwrap_or(0), None);
            }
            previous = first;
        } else {
            previous = None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    (highest, Some(format!("members did not converge within 30 s (revisions {last_seen})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_against_the_leader() {
        assert_eq!(resolve(Target::Leader, Some(2), 3), 2);
        assert_eq!(resolve(Target::Follower(0), Some(0), 3), 1);
        assert_eq!(resolve(Target::Follower(1), Some(1), 3), 2);
        assert_eq!(resolve(Target::Member(1), None, 3), 1);
        assert_eq!(resolve(Target::Leader, None, 3), 0);
        assert_eq!(resolve(Target::Follower(0), None, 3), 1);
    }

    #[test]
    fn the_rerun_command_names_every_choice() {
        let mut c = RunConfig::new(PathBuf::from("/x/tenure"));
        c.seed = 42;
        c.partitions = false;
        let cmd = c.rerun_command();
        assert!(cmd.contains("--seed 42 --duration 60"), "{cmd}");
        assert!(cmd.contains("--no-partitions --no-shaping --lease-clients 2"), "{cmd}");
        assert!(cmd.ends_with("--snapshot-count 300 --tenure /x/tenure"), "{cmd}");
        c.partitions = true;
        c.extra = ExtraFaults {
            shaping: true,
            disk_full: false,
            failpoints: true,
            membership: false,
            clock: true,
        };
        c.clock_monotonic = true;
        c.network = NetworkMode::Loopback;
        let cmd = c.rerun_command();
        assert!(cmd.contains("--no-disk-full --failpoints --no-membership"), "{cmd}");
        assert!(cmd.contains("--clock-monotonic --network loopback"), "{cmd}");
        assert!(!cmd.contains("--no-shaping"), "{cmd}");
    }
}
