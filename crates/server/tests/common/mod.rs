//! Shared by the server's end-to-end tests: free loopback ports for test servers, and for the
//! tests that run real `tenure serve` processes, a three-member plan and a child process that is
//! killed if a test fails before stopping it.

// Each test binary uses part of this module.
#![allow(dead_code)]

pub mod certs;
pub mod isolate;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Ports handed out for test servers lie in `PORTS`, below Linux's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768–60999 by default). A port the kernel picks
/// for a `bind(":0")` or for an outgoing connection comes from the ephemeral range, so it can
/// never take one of these between the test choosing it and the server binding it (the race
/// that "bind port 0, read the port, close" loses under load).
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// How many ports this process has handed out.
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// `n` loopback ports, none handed out before by this process, each bindable a moment ago.
/// Each test process walks `PORTS` from its own offset (by pid), so test binaries that run at
/// the same time rarely meet; a port some other process holds is skipped.
pub fn free_ports(n: usize) -> Vec<u16> {
    let span = PORTS.end - PORTS.start;
    let offset = std::process::id().wrapping_mul(2_654_435_761) % span;
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let k = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        assert!(k < span, "test port range exhausted");
        let port = (PORTS.start + (offset + k) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// One free loopback port (see [`free_ports`]).
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// A `tenure serve` child, killed (by its own pid) when dropped.
pub struct Server(Option<Child>);

impl Server {
    /// A child started by the test itself (with flags `Plan` does not know).
    pub fn from_child(child: Child) -> Server {
        Server(Some(child))
    }

    /// Sends SIGTERM and expects a clean exit.
    pub fn terminate(mut self) {
        let mut child = self.0.take().expect("running");
        let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(kill.expect("runs kill").success());
        let status = child.wait().expect("waits");
        assert_eq!(status.code(), Some(0), "tenure serve exits 0 on SIGTERM, not {status}");
    }

    /// SIGKILL: no shutdown, no final sync.
    pub fn kill(mut self) {
        let mut child = self.0.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Names and loopback URLs for three members.
pub struct Plan {
    pub names: Vec<String>,
    pub clients: Vec<String>,
    pub peers: Vec<String>,
}

impl Plan {
    /// Members `{prefix}1..3` on free ports.
    pub fn new(prefix: &str) -> Plan {
        let ports = free_ports(6);
        let url = |p: &u16| format!("http://127.0.0.1:{p}");
        Plan {
            names: (1..=3).map(|i| format!("{prefix}{i}")).collect(),
            clients: ports[..3].iter().map(url).collect(),
            peers: ports[3..].iter().map(url).collect(),
        }
    }

    /// Starts member `i` with its data under `dir`.
    pub fn start(&self, i: usize, dir: &Path) -> Server {
        self.start_with(i, dir, &[])
    }

    /// Starts member `i` with its data under `dir` and `extra` flags.
    pub fn start_with(&self, i: usize, dir: &Path, extra: &[&str]) -> Server {
        self.spawn(i, dir, &self.peers[i], extra)
    }

    /// Starts member `i` listening for peers on `listen_peer_url`; everything else as the plan
    /// says.
    fn spawn(&self, i: usize, dir: &Path, listen_peer_url: &str, extra: &[&str]) -> Server {
        let cluster: Vec<String> =
            self.names.iter().zip(&self.peers).map(|(n, p)| format!("{n}={p}")).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(["serve", "--name", &self.names[i]])
            .arg("--data-dir")
            .arg(dir.join(&self.names[i]))
            .args(["--listen-client-urls", &self.clients[i]])
            .args(["--advertise-client-urls", &self.clients[i]])
            .args(["--listen-peer-urls", listen_peer_url])
            .args(["--initial-advertise-peer-urls", &self.peers[i]])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr_for(&self.names[i]))
            .spawn()
            .expect("runs tenure serve");
        Server(Some(child))
    }
}

/// Where a member's log goes: nowhere, or with `TENURE_TEST_LOGS=DIR` set, to `DIR/NAME.log`
/// (for looking into a failing test).
pub fn stderr_for(name: &str) -> Stdio {
    match std::env::var_os("TENURE_TEST_LOGS") {
        Some(dir) => std::fs::File::options()
            .create(true)
            .append(true)
            .open(Path::new(&dir).join(format!("{name}.log")))
            .map_or_else(|_| Stdio::null(), Stdio::from),
        None => Stdio::null(),
    }
}

impl Server {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("running").id()
    }

    /// Sends `signal` (a name `kill` knows: "STOP", "CONT") to the child.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(status.expect("runs kill").success(), "kill -{signal} {pid}");
    }
}

impl Plan {
    /// Starts member `i` listening for peers on `listen_peer_url` while every member's
    /// `--initial-cluster` (and its own advertised peer URL) names `self.peers`: a test puts a
    /// proxy on each of `self.peers` that forwards to the member's real peer listener.
    pub fn start_behind_proxy(
        &self,
        i: usize,
        dir: &Path,
        listen_peer_url: &str,
        extra: &[&str],
    ) -> Server {
        self.spawn(i, dir, listen_peer_url, extra)
    }
}

/// Waits (up to `patience`) until one running member of an in-process cluster leads and every
/// running member knows it; returns its position. `members[i]` runs with `configs[i]`.
pub async fn wait_for_leader(
    members: &[Option<tenure_server::member::Member>],
    configs: &[tenure_server::cli::ServeConfig],
    patience: std::time::Duration,
) -> usize {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let running: Vec<(usize, _)> = members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.as_ref().map(|m| (i, m.handle().status())))
            .collect();
        let leaders: Vec<usize> =
            running.iter().filter(|(_, s)| s.is_leader).map(|(i, _)| *i).collect();
        if let [l] = leaders[..] {
            let id = configs[l].member_id;
            if running.iter().all(|(_, s)| s.leader == Some(id)) {
                return l;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no leader elected: {running:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The leader a member names in `Maintenance.Status` and the member's own id, as
/// `(member id, leader id)`, if it answers within half a second.
pub async fn member_status(url: &str) -> Option<(u64, u64)> {
    use tenure_server::pb::etcdserverpb as pb;
    let ask = async {
        let mut c =
            pb::maintenance_client::MaintenanceClient::connect(url.to_string()).await.ok()?;
        let r = c.status(pb::StatusRequest {}).await.ok()?.into_inner();
        Some((r.header?.member_id, r.leader))
    };
    tokio::time::timeout(std::time::Duration::from_millis(500), ask).await.ok().flatten()
}

/// The index (into `plan`) of the member every member of `up` names as leader, once they
/// agree; panics after `patience`.
pub async fn agreed_leader(plan: &Plan, up: &[usize], patience: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let mut seen = Vec::new();
        for &i in up {
            seen.push(member_status(&plan.clients[i]).await);
        }
        let leaders: Vec<u64> = seen.iter().flatten().map(|(_, l)| *l).collect();
        let agreed =
            leaders.len() == up.len() && leaders.iter().all(|l| *l != 0 && *l == leaders[0]);
        if agreed
            && let Some(pos) = seen.iter().position(|s| s.is_some_and(|(id, _)| id == leaders[0]))
        {
            return up[pos];
        }
        assert!(std::time::Instant::now() < deadline, "no agreed leader among {up:?}: {seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Where etcdctl 3.4 is: Debian's `/usr/bin/etcdctl`, or the first on `PATH`.
pub fn etcdctl_path() -> Option<std::path::PathBuf> {
    let bin = Path::new("/usr/bin/etcdctl");
    if bin.exists() {
        return Some(bin.to_path_buf());
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("etcdctl"))
        .find(|p| p.exists())
}

/// Runs etcdctl (API v3) against `endpoints` with a 10 s command timeout; `None` if etcdctl is
/// not installed.
pub fn etcdctl(endpoints: &str, args: &[&str]) -> Option<std::process::Output> {
    let out = Command::new(etcdctl_path()?)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("runs etcdctl");
    Some(out)
}
