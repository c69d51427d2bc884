//! The servers the Lease, Lock and Election conformance tests (`tests/lease.rs`,
//! `tests/lock_election.rs`) run against: an in-process three-member tenure cluster and one
//! real etcd 3.4 (skipped with a printed note when `etcd` is not installed). Both run with
//! etcd's default timing (100 ms heartbeats, 1 s election timeout), so both grant leases of at
//! least 2 s.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tenure_server::cli::ServeConfig;
use tenure_server::cli::dev::{self, Timing};
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;
use tonic::transport::Channel;

use crate::common;

/// etcd's default timing, so that both servers have the same minimum lease TTL (2 s).
pub const TIMING: Timing = Timing { heartbeat_ms: 100, election_ms: 1000 };
/// How long anything may take before a test fails (generous: machines are shared).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// An in-process three-member tenure cluster.
pub struct Tenure {
    pub configs: Vec<ServeConfig>,
    pub members: Vec<Option<Member>>,
    _dir: tempfile::TempDir,
}

impl Tenure {
    pub async fn start() -> Tenure {
        Tenure::start_with(|_| {}).await
    }

    /// A cluster whose configurations `adjust` changes first.
    pub async fn start_with(adjust: impl Fn(&mut ServeConfig)) -> Tenure {
        Tenure::start_timed(TIMING, adjust).await
    }

    /// A cluster with `timing` instead of etcd's defaults, whose configurations `adjust`
    /// changes first.
    pub async fn start_timed(timing: Timing, adjust: impl Fn(&mut ServeConfig)) -> Tenure {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> =
            common::free_ports(6).chunks(2).map(|c| (c[0], c[1])).collect();
        let mut configs = dev::configs(&ports, dir.path(), timing).expect("configs");
        configs.iter_mut().for_each(adjust);
        let members = dev::start(&configs).await.expect("cluster starts");
        let t = Tenure { configs, members: members.into_iter().map(Some).collect(), _dir: dir };
        t.leader().await;
        t
    }

    /// Waits until one running member leads and every running member knows it.
    pub async fn leader(&self) -> usize {
        common::wait_for_leader(&self.members, &self.configs, PATIENCE).await
    }

    pub async fn follower(&self) -> usize {
        (self.leader().await + 1) % 3
    }

    pub fn url(&self, i: usize) -> String {
        self.configs[i].advertise_client_urls[0].to_string()
    }

    pub async fn channel(&self, i: usize) -> Channel {
        connect(&self.url(i)).await
    }

    pub async fn stop(&mut self, i: usize) {
        let m = self.members[i].take().expect("running");
        m.shutdown().await.expect("clean shutdown");
    }

    pub async fn shutdown(mut self) {
        for i in 0..3 {
            if self.members[i].is_some() {
                self.stop(i).await;
            }
        }
    }
}

/// One real etcd on loopback, killed (by its own pid) when dropped.
pub struct Etcd {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `name` is on the `PATH`, if it is.
pub fn binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.exists())
}

impl Etcd {
    /// A fresh single-member etcd, or `None` with a note when it is not installed.
    pub async fn start(test: &str) -> Option<Etcd> {
        let Some(bin) = binary("etcd") else {
            println!(
                "{test}: etcd is not installed (apt-get install etcd-server); skipping the etcd half"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = common::free_ports(2);
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let child = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runs etcd");
        let etcd = Etcd { child, url: client, _dir: dir };
        // Ready once it answers a linearizable read (it has elected itself).
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(ch) = Channel::from_shared(etcd.url.clone()).unwrap().connect().await {
                let mut kv = pb::kv_client::KvClient::new(ch);
                let ready = pb::RangeRequest { key: "ready".into(), ..Default::default() };
                if kv.range(ready).await.is_ok() {
                    return Some(etcd);
                }
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_string()).unwrap().connect().await.expect("connect")
}

/// What a scenario observed, one line per step, holding only what both servers must agree on.
pub type Transcript = Vec<String>;

/// A failed call as a transcript line: its code and exact message.
pub fn error_line(s: &tonic::Status) -> String {
    format!("error {:?}: {}", s.code(), s.message())
}

/// Runs `scenario` against a fresh tenure cluster (through a follower) and, where installed, a
/// fresh etcd; asserts that the transcripts are equal and returns tenure's.
pub async fn compare<F, Fut>(test: &str, scenario: F) -> Transcript
where
    F: Fn(Channel) -> Fut,
    Fut: std::future::Future<Output = Transcript>,
{
    let tenure = Tenure::start().await;
    let ours = scenario(tenure.channel(tenure.follower().await).await).await;
    tenure.shutdown().await;
    if let Some(etcd) = Etcd::start(test).await {
        let theirs = scenario(connect(&etcd.url).await).await;
        assert_eq!(ours, theirs, "{test}: tenure (left) and etcd 3.4 (right) answer differently");
    }
    ours
}
