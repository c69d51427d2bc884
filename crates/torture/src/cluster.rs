//! A cluster of real server processes on loopback: start, SIGKILL and restart, SIGSTOP and
//! SIGCONT, and who leads.
//!
//! Member `i` (0-based, named `n{i+1}`) listens for clients and peers on `127.0.0.{11+i}`,
//! on ports no other process held a moment before. The flags are etcd's, so the same
//! [`Cluster`] runs `tenure serve` or etcd. With `run_as_users` (needed for partitions, see
//! [`crate::net`]) each member runs as a user id of its own, which owns its data directory.
//!
//! Every process is killed when the [`Cluster`] is dropped, paused or not, so a failing run,
//! an error or Ctrl-C never leaves servers behind; the data directories go with it. Where
//! util-linux's `setpriv` is installed, members also get SIGKILL when the suite itself is
//! SIGKILLed (its parent-death signal); the processes are spawned from the thread that runs
//! the suite's future, which lives as long as the suite. The data directories such a run
//! leaves (named after its pid) are removed by the next run.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

use crate::net::PeerEndpoint;

/// Why a cluster could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// No free port on a member's address.
    #[error("no free port on {ip} in 20000..32000")]
    NoPort {
        /// The address.
        ip: Ipv4Addr,
    },
    /// A membership change was not accepted in time.
    #[error("{what}: {detail}")]
    Membership {
        /// The change.
        what: String,
        /// The last answer.
        detail: String,
    },
    /// The members did not all answer and agree on a leader in time.
    #[error("the cluster did not come up within {waited:?} ({detail}); logs: {logs}")]
    NotReady {
        /// How long it was given.
        waited: Duration,
        /// What was seen last.
        detail: String,
        /// Where the members' logs are.
        logs: String,
    },
}

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The server binary (`tenure` or `etcd`); `tenure` is started as `tenure serve`.
    pub binary: PathBuf,
    /// Whether the binary is etcd (no `serve` subcommand).
    pub etcd: bool,
    /// How many members.
    pub member_count: usize,
    /// `--heartbeat-interval`, in milliseconds.
    pub heartbeat_ms: u64,
    /// `--election-timeout`, in milliseconds.
    pub election_ms: u64,
    /// Run each member as a user of its own (partitions need it).
    pub run_as_users: bool,
    /// Where the members' logs go (`NAME.log`, appended across restarts); none: discarded.
    pub log_dir: Option<PathBuf>,
    /// `--snapshot-count` (and, for tenure, `--snapshot-catchup-entries` a tenth of it), so
    /// that a member killed for a few seconds catches up by snapshot; none: the defaults.
    pub snapshot_count: Option<u64>,
    /// tenure's `--snapshot-catchup-entries`; none: a tenth of `snapshot_count` (when that is
    /// set), else the server's default.
    pub snapshot_catchup_entries: Option<u64>,
    /// Give each member a tmpfs of this many bytes of its own as its disk (needs root), so
    /// that its disk can be filled ([`Cluster::fill_disk`]).
    pub disk_bytes: Option<u64>,
    /// Member slots beyond `member_count` that membership changes may add members in (started
    /// only when added).
    pub spare_slots: usize,
    /// Each slot's network namespace and address ([`crate::netns`]); none: loopback.
    pub namespaces: Option<Vec<(String, Ipv4Addr)>>,
    /// Start every member under libfaketime, so that its clock can be stepped
    /// ([`Cluster::set_clock`]).
    pub clock: Option<ClockConfig>,
}

/// How members run under libfaketime.
#[derive(Clone, Debug)]
pub struct ClockConfig {
    /// The library (`libfaketime.so.1`).
    pub library: PathBuf,
    /// Fake `CLOCK_MONOTONIC` too (and with it every timer: elections, heartbeats, lease
    /// expiry); otherwise only the wall clock (`CLOCK_REALTIME`) is stepped.
    pub monotonic: bool,
}

/// The line for libfaketime's timestamp file that puts a clock `base_s + step_s` seconds off
/// the host's now and has it run at `rate` from here on, for a process that loaded the library
/// `age_s` seconds ago (libfaketime reads `+N xR` as `real + N + (now - start)(R - 1)`).
pub fn faketime_spec(base_s: f64, step_s: f64, rate: f64, age_s: f64) -> String {
    let offset_s = base_s + step_s - age_s * (rate - 1.0);
    format!("{offset_s:+.3} x{rate}")
}

/// Where Debian's `faketime` package puts libfaketime.
pub const FAKETIME_LIBRARY: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// One member's addresses and identity.
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// Its name, `n1`...
    pub name: String,
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// Its client port.
    pub client_port: u16,
    /// Its peer port.
    pub peer_port: u16,
    /// The user id it runs as, with `run_as_users`.
    pub uid: Option<u32>,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    /// Its libfaketime timestamp file, with [`ClusterConfig::clock`].
    pub clock_file: Option<PathBuf>,
    /// The tmpfs mounted for it (the data directory's parent), with
    /// [`ClusterConfig::disk_bytes`].
    pub disk: Option<PathBuf>,
}

impl MemberSpec {
    /// Its client URL.
    pub fn client_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    /// Its peer URL.
    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }

    /// Its peer endpoint, for the firewall (uid 0 when not run as a user of its own).
    pub fn peer_endpoint(&self) -> PeerEndpoint {
        PeerEndpoint { uid: self.uid.unwrap_or(0), ip: self.ip, port: self.peer_port }
    }
}

/// What one member said of the cluster (`Maintenance.Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member's own id.
    pub member_id: u64,
    /// The leader it knows of (0: none).
    pub leader_id: u64,
    /// Its store's current revision.
    pub revision: i64,
}

/// A running cluster; every process is killed on drop.
pub struct Cluster {
    config: ClusterConfig,
    specs: Vec<MemberSpec>,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
    member_ids: Vec<u64>,
    /// Which slots are members of the cluster now (the first `member_count` at the start).
    active: Vec<bool>,
    /// Per slot that joined a running cluster: the `--initial-cluster` it joined with (its
    /// restarts pass the same, with `--initial-cluster-state existing`).
    joined: Vec<Option<String>>,
    /// When each slot's process was last started (libfaketime's rates count from there).
    spawned_at: Vec<Option<Instant>>,
    /// Per slot, the seconds its clock keeps off the host's between faults.
    clock_offset_s: Vec<f64>,
    /// Per slot, the clock fault in force: since when, its step and its rate.
    clock_fault: Vec<Option<(Instant, f64, f64)>>,
    /// Per member, `FAILPOINTS` for its next start (taken by it).
    failpoints: Vec<Option<String>>,
    /// Start members through `setpriv --pdeathsig KILL`, so that they die with the suite even
    /// when it is SIGKILLed (and its drop never runs).
    pdeathsig: bool,
    _dir: tempfile::TempDir,
}

/// How long one status question may take.
const STATUS_TIMEOUT: Duration = Duration::from_millis(700);
/// How long one membership request may take.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `url` within `timeout`, each request bounded by `request_timeout` (none for a
/// client that holds a watch stream open). The channel reconnects by itself afterwards.
pub async fn connect(
    url: &str,
    timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new().with_connect_timeout(timeout);
    if let Some(t) = request_timeout {
        options = options.with_timeout(t);
    }
    Client::connect([url], Some(options)).await
}

impl Cluster {
    /// Starts the members and waits (up to `patience`) until every one answers and all agree
    /// on a leader.
    ///
    /// # Errors
    /// [`ClusterError`] if a directory, port or process cannot be had, or the cluster does not
    /// come up in time.
    pub async fn start(config: ClusterConfig, patience: Duration) -> Result<Cluster, ClusterError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| ClusterError::Io { what, source }
        };
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("tenure-torture-{}-", std::process::id()))
            .tempdir()
            .map_err(io("creating the data directory"))?;
        set_mode(dir.path(), 0o755).map_err(io("opening the data directory to the members"))?;
        if let Some(logs) = &config.log_dir {
            std::fs::create_dir_all(logs).map_err(io("creating the log directory"))?;
        }
        let pid = std::process::id();
        let mut specs = Vec::new();
        let mut next_port = 20_000 + (pid.wrapping_mul(2_654_435_761) % 12_000) as u16;
        let slot_count = config.member_count + config.spare_slots;
        for i in 0..slot_count {
            let (ip, client_port, peer_port, netns) = match &config.namespaces {
                Some(places) => {
                    let (ns, ip) = places[i].clone();
                    (ip, crate::netns::CLIENT_PORT, crate::netns::PEER_PORT, Some(ns))
                }
                None => {
                    let ip = Ipv4Addr::new(127, 0, 0, 11 + i as u8);
                    let client_port = free_port(ip, &mut next_port)?;
                    let peer_port = free_port(ip, &mut next_port)?;
                    (ip, client_port, peer_port, None)
                }
            };
            let name = format!("n{}", i + 1);
            let (data_dir, disk) = match config.disk_bytes {
                None => (dir.path().join(&name), None),
                Some(bytes) => {
                    let disk = dir.path().join(format!("{name}-disk"));
                    std::fs::create_dir(&disk).map_err(io("creating a member's disk"))?;
                    mount_tmpfs(&disk, bytes).map_err(io("mounting a tmpfs as a member's disk"))?;
                    (disk.join("data"), Some(disk))
                }
            };
            std::fs::create_dir(&data_dir).map_err(io("creating a member's data directory"))?;
            // Distinct per run (by pid) and per member, so two runs never share a user.
            let uid = config.run_as_users.then(|| 100_000 + (pid % 50_000) * 8 + i as u32);
            if let Some(uid) = uid {
                std::os::unix::fs::chown(&data_dir, Some(uid), Some(uid))
                    .map_err(io("giving a member its data directory"))?;
            }
            let clock_file = match &config.clock {
                Some(_) => {
                    let file = dir.path().join(format!("{name}.faketime"));
                    std::fs::write(&file, "+0\n").map_err(io("writing a member's clock file"))?;
                    Some(file)
                }
                None => None,
            };
            specs.push(MemberSpec {
                name,
                ip,
                client_port,
                peer_port,
                uid,
                data_dir,
                disk,
                netns,
                clock_file,
            });
        }
        let n = specs.len();
        let member_count = config.member_count;
        let mut cluster = Cluster {
            config,
            specs,
            children: (0..n).map(|_| None).collect(),
            paused: vec![false; n],
            member_ids: vec![0; n],
            active: (0..n).map(|i| i < member_count).collect(),
            joined: vec![None; n],
            spawned_at: vec![None; n],
            clock_offset_s: vec![0.0; n],
            clock_fault: vec![None; n],
            failpoints: vec![None; n],
            pdeathsig: Command::new("setpriv")
                .args(["--pdeathsig", "KILL", "--", "true"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            _dir: dir,
        };
        for i in 0..cluster.config.member_count {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(patience).await?;
        Ok(cluster)
    }

    /// The members, in order.
    pub fn specs(&self) -> &[MemberSpec] {
        &self.specs
    }

    /// The members' ids (from their status), in member order.
    pub fn member_ids(&self) -> &[u64] {
        &self.member_ids
    }

    /// The configuration the cluster was started with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn logs(&self) -> String {
        self.config
            .log_dir
            .as_ref()
            .map_or_else(|| "discarded (pass --log-dir)".to_string(), |d| d.display().to_string())
    }

    fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let spec = &self.specs[i];
        let (initial_cluster, state) = match &self.joined[i] {
            Some(cluster) => (cluster.clone(), "existing"),
            None => (self.initial_cluster((0..self.config.member_count).collect()), "new"),
        };
        // `ip netns exec` and `setpriv` exec what follows, so the child's pid is the member's.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = &spec.netns {
            argv.extend(["ip", "netns", "exec", ns].map(Into::into));
        }
        if self.pdeathsig {
            argv.extend(["setpriv", "--pdeathsig", "KILL", "--"].map(Into::into));
        }
        argv.push(self.config.binary.clone().into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        if !self.config.etcd {
            cmd.arg("serve");
        }
        cmd.args(["--name", &spec.name])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args(["--listen-client-urls", &spec.client_url()])
            .args(["--advertise-client-urls", &spec.client_url()])
            .args(["--listen-peer-urls", &spec.peer_url()])
            .args(["--initial-advertise-peer-urls", &spec.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--heartbeat-interval", &self.config.heartbeat_ms.to_string()])
            .args(["--election-timeout", &self.config.election_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(self.log_for(&spec.name));
        if let Some(count) = self.config.snapshot_count {
            cmd.args(["--snapshot-count", &count.to_string()]);
        }
        let keep = self
            .config
            .snapshot_catchup_entries
            .or(self.config.snapshot_count.map(|c| (c / 10).max(1)));
        if let Some(keep) = keep.filter(|_| !self.config.etcd) {
            cmd.args(["--snapshot-catchup-entries", &keep.to_string()]);
        }
        match self.failpoints[i].take() {
            Some(points) => cmd.env("FAILPOINTS", points),
            None => cmd.env_remove("FAILPOINTS"),
        };
        if let Some(uid) = spec.uid {
            cmd.uid(uid).gid(uid);
        }
        if let (Some(clock), Some(file)) = (&self.config.clock, &spec.clock_file) {
            // libfaketime reads the file again on every clock read (FAKETIME_NO_CACHE), so a
            // write to it steps the member's clock at once (`+N` seconds, `xR` a rate).
            cmd.env("LD_PRELOAD", &clock.library)
                .env("FAKETIME_TIMESTAMP_FILE", file)
                .env("FAKETIME_NO_CACHE", "1");
            if !clock.monotonic {
                cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            }
        }
        let child = cmd.spawn().map_err(|source| ClusterError::Io {
            what: format!("starting {} ({})", spec.name, self.config.binary.display()),
            source,
        })?;
        self.children[i] = Some(child);
        self.spawned_at[i] = Some(Instant::now());
        self.paused[i] = false;
        Ok(())
    }

    fn log_for(&self, name: &str) -> Stdio {
        match &self.config.log_dir {
            Some(dir) => File::options()
                .create(true)
                .append(true)
                .open(dir.join(format!("{name}.log")))
                .map_or_else(|_| Stdio::null(), Stdio::from),
            None => Stdio::null(),
        }
    }

    async fn wait_ready(&mut self, patience: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(exited) = self.exited().first() {
                return Err(ClusterError::NotReady {
                    waited: patience,
                    detail: format!("{} exited: {}", self.specs[exited.0].name, exited.1),
                    logs: self.logs(),
                });
            }
            let active = self.active_members();
            let all = self.statuses().await;
            let statuses: Vec<Option<MemberStatus>> = active.iter().map(|&i| all[i]).collect();
            let detail = if statuses.iter().all(Option::is_some) {
                let statuses: Vec<MemberStatus> = statuses.into_iter().flatten().collect();
                let leader = statuses[0].leader_id;
                if leader != 0 && statuses.iter().all(|s| s.leader_id == leader) {
                    for (&i, s) in active.iter().zip(&statuses) {
                        self.member_ids[i] = s.member_id;
                    }
                    return Ok(());
                }
                format!("no agreed leader: {statuses:?}")
            } else {
                let down: Vec<&str> = statuses
                    .iter()
                    .zip(&active)
                    .filter(|(s, _)| s.is_none())
                    .map(|(_, &i)| self.specs[i].name.as_str())
                    .collect();
                format!("no answer from {}", down.join(", "))
            };
            if Instant::now() >= deadline {
                return Err(ClusterError::NotReady { waited: patience, detail, logs: self.logs() });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Each slot's status, `None` for those that do not answer in time and for slots that are
    /// not members now.
    pub async fn statuses(&self) -> Vec<Option<MemberStatus>> {
        // Asked at once: a paused member costs one timeout, not one per member.
        let asks: Vec<_> = self
            .specs
            .iter()
            .zip(&self.active)
            .map(|(s, active)| active.then(|| tokio::spawn(status_of(s.client_url()))))
            .collect();
        let mut out = Vec::new();
        for ask in asks {
            out.push(match ask {
                Some(ask) => ask.await.ok().flatten(),
                None => None,
            });
        }
        out
    }

    /// The slots that are members now, in order.
    pub fn active_members(&self) -> Vec<usize> {
        (0..self.specs.len()).filter(|&i| self.active[i]).collect()
    }

    /// `--initial-cluster` for these slots.
    fn initial_cluster(&self, slots: Vec<usize>) -> String {
        let entries: Vec<String> = slots
            .into_iter()
            .map(|i| format!("{}={}", self.specs[i].name, self.specs[i].peer_url()))
            .collect();
        entries.join(",")
    }

    /// A client of any member but `not`, asked in turn, for a membership change: returns the
    /// first answer that is not a transport error or a timeout (the change is then decided),
    /// or the last error after `patience`.
    async fn ask_cluster<T, F, Fut>(
        &self,
        not: Option<usize>,
        patience: Duration,
        what: &str,
        ask: F,
    ) -> Result<T, ClusterError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + patience;
        let mut last = String::from("no member to ask");
        loop {
            for i in self.active_members().into_iter().filter(|&i| Some(i) != not) {
                let url = self.specs[i].client_url();
                let answer = async {
                    let client = connect(&url, STATUS_TIMEOUT, Some(MEMBERSHIP_TIMEOUT)).await?;
                    ask(client).await
                };
                match tokio::time::timeout(MEMBERSHIP_TIMEOUT, answer).await {
                    Ok(Ok(t)) => return Ok(t),
                    Ok(Err(e)) => last = format!("{}: {e}", self.specs[i].name),
                    Err(_) => last = format!("{}: timed out", self.specs[i].name),
                }
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Membership { what: what.to_string(), detail: last });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Removes slot `i`'s member from the cluster (asking the others; a member that is gone
    /// already counts as removed), then SIGKILLs its process (a removed tenure member stops by
    /// itself, etcd's does not always) and wipes its data directory.
    ///
    /// # Errors
    /// [`ClusterError`] if no member accepts the removal within `patience`, or the directory
    /// cannot be wiped.
    pub async fn remove_member(
        &mut self,
        i: usize,
        patience: Duration,
    ) -> Result<(), ClusterError> {
        let id = self.member_ids[i];
        let what = format!("removing {} ({id:x})", self.specs[i].name);
        let removed = self
            .ask_cluster(Some(i), patience, &what, |mut c| async move {
                match c.member_remove(id).await {
                    Ok(_) => Ok(()),
                    // A retry of a removal that was applied.
                    Err(e) if e.to_string().contains("member not found") => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
        removed?;
        self.kill(i)?;
        self.active[i] = false;
        self.member_ids[i] = 0;
        self.wipe(i)
    }

    /// Empties slot `i`'s data directory (the member is stopped).
    fn wipe(&self, i: usize) -> Result<(), ClusterError> {
        let dir = &self.specs[i].data_dir;
        let io = |source| ClusterError::Io { what: format!("wiping {}", dir.display()), source };
        std::fs::remove_dir_all(dir).map_err(io)?;
        std::fs::create_dir(dir).map_err(io)?;
        if let Some(uid) = self.specs[i].uid {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid)).map_err(io)?;
        }
        Ok(())
    }

    /// Adds slot `i` (not a member, its directory empty) to the cluster as a learner, then
    /// starts it with `--initial-cluster-state existing`. Returns its new member id.
    ///
    /// # Errors
    /// [`ClusterError`] if no member accepts the addition within `patience`, or the process
    /// cannot be started.
    pub async fn add_learner(&mut self, i: usize, patience: Duration) -> Result<u64, ClusterError> {
        let url = self.specs[i].peer_url();
        let what = format!("adding {} as a learner", self.specs[i].name);
        let id = self
            .ask_cluster(Some(i), patience, &what, |mut c| {
                let url = url.clone();
                async move {
                    let options = etcd_client::MemberAddOptions::new().with_is_learner();
                    let r = c.member_add([url], Some(options)).await?;
                    Ok(r.member().map_or(0, |m| m.id()))
                }
            })
            .await?;
        let mut slots = self.active_members();
        slots.push(i);
        slots.sort_unstable();
        self.joined[i] = Some(self.initial_cluster(slots));
        self.member_ids[i] = id;
        self.active[i] = true;
        self.spawn(i)?;
        Ok(id)
    }

    /// Promotes slot `i`'s learner to voter, asking again while the leader says it is not in
    /// sync yet (it catches up by snapshot and log first). Returns how many times it asked.
    ///
    /// # Errors
    /// [`ClusterError`] if it is not promoted within `patience`.
    pub async fn promote(&mut self, i: usize, patience: Duration) -> Result<u32, ClusterError> {
        let id = self.member_ids[i];
        let what = format!("promoting {} ({id:x})", self.specs[i].name);
        let deadline = Instant::now() + patience;
        let mut asked = 0;
        loop {
            asked += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .ask_cluster(Some(i), left.min(Duration::from_secs(5)), &what, |mut c| async move {
                    match c.member_promote(id).await {
                        Ok(_) => Ok(Ok(())),
                        // Not in sync yet (etcd's words, which tenure keeps): ask again.
                        Err(e) if e.to_string().contains("in sync with leader") => {
                            Ok(Err(e.to_string()))
                        }
                        // A voter already: an earlier ask that timed out promoted it.
                        Err(e) if e.to_string().contains("can only promote a learner") => {
                            Ok(Ok(()))
                        }
                        Err(e) => Err(e),
                    }
                })
                .await?;
            match answer {
                Ok(()) => return Ok(asked),
                Err(e) if Instant::now() >= deadline => {
                    return Err(ClusterError::Membership { what, detail: e });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    }

    /// From now on slot `i`'s clock is `step_s` seconds further off the host's and runs at
    /// `rate` times real speed, until [`Cluster::end_clock_fault`].
    ///
    /// libfaketime applies a rate to the time elapsed since the process loaded it (`+N xR`
    /// reads `real + N + (now - start)(R - 1)`), so the offset written makes up for the
    /// member's age: the clock moves by `step_s` now and drifts from here on, with no jump by
    /// its age.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the cluster was started without fake clocks or the file cannot
    /// be written.
    pub fn start_clock_fault(
        &mut self,
        i: usize,
        step_s: f64,
        rate: f64,
    ) -> Result<(), ClusterError> {
        let now = Instant::now();
        let age_s = self.spawned_at[i].map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        self.clock_fault[i] = Some((now, step_s, rate));
        self.write_clock(i, &faketime_spec(self.clock_offset_s[i], step_s, rate, age_s))
    }

    /// Ends slot `i`'s clock fault: with `keep`, the clock keeps what it gained or lost and
    /// runs at real speed from here on (a monotonic clock never steps back); otherwise it
    /// steps back to the host's time (as NTP would step a wall clock). Returns the seconds it
    /// was off at the end.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the file cannot be written.
    pub fn end_clock_fault(&mut self, i: usize, keep: bool) -> Result<f64, ClusterError> {
        let Some((started, step_s, rate)) = self.clock_fault[i].take() else { return Ok(0.0) };
        let gained_s = step_s + started.elapsed().as_secs_f64() * (rate - 1.0);
        if keep {
            self.clock_offset_s[i] += gained_s;
        }
        let offset_s = self.clock_offset_s[i];
        self.write_clock(i, &format!("{offset_s:+.3}"))?;
        Ok(gained_s)
    }

    fn write_clock(&self, i: usize, spec: &str) -> Result<(), ClusterError> {
        let Some(file) = &self.specs[i].clock_file else {
            return Err(ClusterError::Io {
                what: format!("stepping {}'s clock", self.specs[i].name),
                source: std::io::Error::other("the cluster was started without fake clocks"),
            });
        };
        // Written beside and renamed over, so that a member never reads half a line.
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, format!("{spec}\n"))
            .and_then(|()| std::fs::rename(&tmp, file))
            .map_err(|source| ClusterError::Io {
                what: format!("writing {}", file.display()),
                source,
            })
    }

    /// The member most of the answering members name as leader, if any.
    pub async fn leader(&self) -> Option<usize> {
        let mut votes = vec![0usize; self.specs.len()];
        for s in self.statuses().await.into_iter().flatten().filter(|s| s.leader_id != 0) {
            if let Some(i) = self.member_ids.iter().position(|&id| id == s.leader_id) {
                votes[i] += 1;
            }
        }
        let (best, count) = votes.iter().enumerate().max_by_key(|(_, c)| **c)?;
        (*count > 0).then_some(best)
    }

    /// SIGKILLs member `i` (no shutdown, no final sync) and reaps it.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the signal cannot be sent.
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        if let Some(mut child) = self.children[i].take() {
            child.kill().map_err(|source| ClusterError::Io {
                what: format!("SIGKILL {}", self.specs[i].name),
                source,
            })?;
            let _ = child.wait();
        }
        self.paused[i] = false;
        Ok(())
    }

    /// Starts member `i` again on its data directory (after [`Cluster::kill`]).
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the process cannot be started.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        if self.children[i].is_none() {
            self.spawn(i)?;
        }
        Ok(())
    }

    /// Starts member `i` again with `FAILPOINTS=points` (after [`Cluster::kill`]); later
    /// starts are without.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the process cannot be started.
    pub fn restart_with_failpoints(
        &mut self,
        i: usize,
        points: String,
    ) -> Result<(), ClusterError> {
        self.failpoints[i] = Some(points);
        let r = self.restart(i);
        self.failpoints[i] = None;
        r
    }

    /// Fills member `i`'s disk (its tmpfs) to the last byte with a file of the suite's, beside
    /// its data directory. Returns the bytes written.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the cluster has no disks of its own or the file cannot be made.
    pub fn fill_disk(&self, i: usize) -> Result<u64, ClusterError> {
        let filler = self.filler(i)?;
        let io =
            |source| ClusterError::Io { what: format!("filling {}", filler.display()), source };
        let mut file = File::create(&filler).map_err(io)?;
        let block = vec![0u8; 1 << 20];
        let mut written = 0u64;
        // Whole blocks, then single pages, until the filesystem refuses.
        for size in [block.len(), 4096, 1] {
            loop {
                match std::io::Write::write(&mut file, &block[..size]) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => return Err(io(e)),
                }
            }
        }
        Ok(written)
    }

    /// Removes the file [`Cluster::fill_disk`] made.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if it cannot be removed.
    pub fn free_disk(&self, i: usize) -> Result<(), ClusterError> {
        let filler = self.filler(i)?;
        // Emptied before it is unlinked: an unlinked file's blocks are freed only when the
        // last descriptor on it closes, and a process forked by another thread of this one
        // (the suite runs ip, iptables and tc) holds a copy of every descriptor until it execs.
        // Truncation frees them at once. (The test below failed now and then without it.)
        if let Ok(file) = File::options().write(true).open(&filler) {
            let _ = file.set_len(0);
        }
        match std::fs::remove_file(&filler) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ClusterError::Io { what: format!("removing {}", filler.display()), source: e })
            }
            _ => Ok(()),
        }
    }

    fn filler(&self, i: usize) -> Result<PathBuf, ClusterError> {
        match &self.specs[i].disk {
            Some(disk) => Ok(disk.join("filler")),
            None => Err(ClusterError::Io {
                what: format!("filling {}'s disk", self.specs[i].name),
                source: std::io::Error::other("the cluster was started without disks of its own"),
            }),
        }
    }

    /// SIGSTOPs member `i`.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the signal cannot be sent.
    pub fn pause(&mut self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, "STOP")?;
        self.paused[i] = true;
        Ok(())
    }

    /// SIGCONTs member `i`.
    ///
    /// # Errors
    /// [`ClusterError::Io`] if the signal cannot be sent.
    pub fn resume(&mut self, i: usize) -> Result<(), ClusterError> {
        self.signal(i, "CONT")?;
        self.paused[i] = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: &str) -> Result<(), ClusterError> {
        let Some(child) = &self.children[i] else { return Ok(()) };
        let what = format!("kill -{signal} {}", self.specs[i].name);
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .map_err(|source| ClusterError::Io { what: what.clone(), source })?;
        if status.success() {
            Ok(())
        } else {
            Err(ClusterError::Io { what, source: std::io::Error::other(status.to_string()) })
        }
    }

    /// Members whose process exited without being killed by the suite, with how.
    pub fn exited(&mut self) -> Vec<(usize, std::process::ExitStatus)> {
        let mut out = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push((i, status));
                *slot = None;
            }
        }
        out
    }

    /// Whether member `i` runs (and is not paused).
    pub fn is_up(&self, i: usize) -> bool {
        self.children[i].is_some() && !self.paused[i]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for disk in self.specs.iter().filter_map(|s| s.disk.as_ref()) {
            unmount(disk);
        }
    }
}

fn mount_tmpfs(at: &Path, bytes: u64) -> std::io::Result<()> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755"), "tenure-torture"])
        .arg(at)
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// Unmounts `at` (lazily: a member that was just killed may hold it a moment longer).
fn unmount(at: &Path) {
    let _ = Command::new("umount").arg("-l").arg(at).stderr(Stdio::null()).status();
}

/// Whether tmpfs disks can be mounted here (root, and mount not refused).
pub fn disks_available() -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("tenure-torture-{}-probe", std::process::id()))
        .tempdir()
        .map_err(|e| e.to_string())?;
    mount_tmpfs(dir.path(), 1 << 20).map_err(|e| format!("cannot mount a tmpfs: {e}"))?;
    unmount(dir.path());
    Ok(())
}

async fn status_of(url: String) -> Option<MemberStatus> {
    let ask = async {
        let mut client = connect(&url, STATUS_TIMEOUT, Some(STATUS_TIMEOUT)).await.ok()?;
        let s = client.status().await.ok()?;
        let header = s.header()?;
        Some(MemberStatus {
            member_id: header.member_id(),
            leader_id: s.leader(),
            revision: header.revision(),
        })
    };
    tokio::time::timeout(STATUS_TIMEOUT, ask).await.ok().flatten()
}

/// Removes the data directories (`tenure-torture-<pid>-*` in the temporary directory) of runs
/// whose process is gone: a run that was SIGKILLed never dropped its [`Cluster`].
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("tenure-torture-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !crate::net::process_alive(pid) {
            // A run with disks of its own mounted a tmpfs per member inside.
            if let Ok(inner) = std::fs::read_dir(entry.path()) {
                for e in
                    inner.flatten().filter(|e| e.file_name().to_string_lossy().ends_with("-disk"))
                {
                    unmount(&e.path());
                }
            }
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// The next port from `*next` on that `ip` can bind, below Linux's ephemeral range so that
/// no outgoing connection takes it between now and the server binding it.
fn free_port(ip: Ipv4Addr, next: &mut u16) -> Result<u16, ClusterError> {
    for _ in 0..12_000 {
        let port = *next;
        *next = if *next >= 31_999 { 20_000 } else { *next + 1 };
        if TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(ClusterError::NoPort { ip })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// A cluster of no processes whose one member has a small tmpfs disk.
    fn cluster_with_disk(dir: &tempfile::TempDir, disk: PathBuf) -> Cluster {
        let spec = MemberSpec {
            name: "n1".into(),
            ip: Ipv4Addr::LOCALHOST,
            client_port: 0,
            peer_port: 0,
            uid: None,
            data_dir: disk.join("data"),
            disk: Some(disk),
            netns: None,
            clock_file: None,
        };
        Cluster {
            config: ClusterConfig {
                binary: PathBuf::from("/bin/false"),
                etcd: false,
                member_count: 1,
                heartbeat_ms: 100,
                election_ms: 1_000,
                run_as_users: false,
                log_dir: None,
                snapshot_count: None,
                snapshot_catchup_entries: None,
                disk_bytes: Some(4 << 20),
                spare_slots: 0,
                namespaces: None,
                clock: None,
            },
            specs: vec![spec],
            children: vec![None],
            paused: vec![false],
            member_ids: vec![0],
            active: vec![true],
            joined: vec![None],
            spawned_at: vec![None],
            clock_offset_s: vec![0.0],
            clock_fault: vec![None],
            failpoints: vec![None],
            pdeathsig: false,
            _dir: tempfile::Builder::new().tempdir_in(dir.path()).expect("a directory"),
        }
    }

    #[test]
    fn a_clock_fault_moves_the_clock_by_its_step_now_whatever_the_member_s_age() {
        // A member 100 s old, its clock 2 s ahead already: stepped 5 s more, at double speed.
        assert_eq!(faketime_spec(2.0, 5.0, 2.0, 100.0), "-93.000 x2");
        // libfaketime's reading of that line now: real + N + age (R - 1) = real + 7 s.
        let (offset, age, rate) = (-93.0, 100.0, 2.0);
        assert_eq!(offset + age * (rate - 1.0), 7.0);
        assert_eq!(faketime_spec(0.0, -30.0, 1.0, 55.5), "-30.000 x1");
        assert_eq!(faketime_spec(0.0, 0.0, 0.5, 10.0), "+5.000 x0.5");
    }

    #[test]
    fn a_filled_disk_refuses_writes_until_it_is_freed() {
        let dir = tempfile::tempdir().expect("a directory");
        let disk = dir.path().join("n1-disk");
        std::fs::create_dir(&disk).expect("a mount point");
        if let Err(e) = mount_tmpfs(&disk, 4 << 20) {
            eprintln!("skipped: no tmpfs here ({e}); full disks need root");
            return;
        }
        let cluster = cluster_with_disk(&dir, disk.clone());
        std::fs::create_dir(disk.join("data")).expect("a data directory");
        let write =
            || File::create(disk.join("data").join("f")).and_then(|mut f| f.write_all(&[7; 8192]));
        let filled = cluster.fill_disk(0).expect("filled");
        assert!(filled > 3 << 20, "{filled}");
        let refused = write().expect_err("a full disk takes no more");
        assert_eq!(refused.raw_os_error(), Some(28), "{refused}");
        cluster.free_disk(0).expect("freed");
        write().expect("a freed disk takes writes again");
        drop(cluster); // unmounts
        assert!(
            !std::fs::read_to_string("/proc/mounts")
                .expect("mounts")
                .contains(disk.to_str().expect("a path"))
        );
    }
}
