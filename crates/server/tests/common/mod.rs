//! Shared by the tests that run real `tenure serve` processes: free loopback ports for a
//! three-member cluster, and a child process that is killed if a test fails before stopping it.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `tenure serve` child, killed (by its own pid) when dropped.
pub struct Server(Option<Child>);

impl Server {
    /// Sends SIGTERM and expects a clean exit.
    pub fn terminate(mut self) {
        let mut child = self.0.take().expect("running");
        let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(kill.expect("runs kill").success());
        let status = child.wait().expect("waits");
        assert_eq!(status.code(), Some(0), "tenure serve exits 0 on SIGTERM");
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
        // Hold every listener until all are chosen so no port is picked twice.
        let listeners: Vec<TcpListener> =
            (0..6).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        let url = |l: &TcpListener| format!("http://{}", l.local_addr().expect("addr"));
        Plan {
            names: (1..=3).map(|i| format!("{prefix}{i}")).collect(),
            clients: listeners[..3].iter().map(url).collect(),
            peers: listeners[3..].iter().map(url).collect(),
        }
    }

    /// Starts member `i` with its data under `dir`.
    pub fn start(&self, i: usize, dir: &Path) -> Server {
        self.start_with(i, dir, &[])
    }

    /// Starts member `i` with its data under `dir` and `extra` flags.
    pub fn start_with(&self, i: usize, dir: &Path, extra: &[&str]) -> Server {
        let cluster: Vec<String> =
            self.names.iter().zip(&self.peers).map(|(n, p)| format!("{n}={p}")).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(["serve", "--name", &self.names[i]])
            .arg("--data-dir")
            .arg(dir.join(&self.names[i]))
            .args(["--listen-client-urls", &self.clients[i]])
            .args(["--advertise-client-urls", &self.clients[i]])
            .args(["--listen-peer-urls", &self.peers[i]])
            .args(["--initial-advertise-peer-urls", &self.peers[i]])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runs tenure serve");
        Server(Some(child))
    }
}
