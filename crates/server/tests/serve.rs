//! Three `tenure serve` processes on free loopback ports, bootstrapped from
//! `--initial-cluster`: they elect a leader, serve writes and linearizable reads, stop
//! gracefully on SIGTERM, and recover their data when started again.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::pb::etcdserverpb as pb;

const PATIENCE: Duration = Duration::from_secs(20);

/// A `tenure serve` child, killed (by its own pid) if the test fails before stopping it.
struct Server(Option<Child>);

impl Server {
    /// Sends SIGTERM and expects a clean exit.
    fn terminate(mut self) {
        let mut child = self.0.take().expect("running");
        let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        assert!(kill.expect("runs kill").success());
        let status = child.wait().expect("waits");
        assert_eq!(status.code(), Some(0), "tenure serve exits 0 on SIGTERM");
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

struct Plan {
    names: Vec<String>,
    clients: Vec<String>,
    peers: Vec<String>,
}

impl Plan {
    fn new() -> Plan {
        let listeners: Vec<TcpListener> =
            (0..6).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        let url = |l: &TcpListener| format!("http://{}", l.local_addr().expect("addr"));
        Plan {
            names: (1..=3).map(|i| format!("s{i}")).collect(),
            clients: listeners[..3].iter().map(url).collect(),
            peers: listeners[3..].iter().map(url).collect(),
        }
    }

    fn start(&self, i: usize, dir: &Path) -> Server {
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runs tenure serve");
        Server(Some(child))
    }
}

/// Retries `op` on member `endpoint` until it succeeds: the process may not listen yet, or
/// the cluster may have no leader yet.
async fn retry<T, F, Fut>(endpoint: &str, mut op: F) -> T
where
    F: FnMut(pb::kv_client::KvClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = match pb::kv_client::KvClient::connect(endpoint.to_string()).await {
            Ok(kv) => match op(kv).await {
                Ok(v) => return v,
                Err(s) if s.code() == tonic::Code::Unavailable => s.to_string(),
                Err(s) => panic!("{endpoint}: {s}"),
            },
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "{endpoint} never answered: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn get(key: &'static str) -> pb::RangeRequest {
    pb::RangeRequest { key: Bytes::from_static(key.as_bytes()), ..Default::default() }
}

#[tokio::test]
async fn three_serve_processes_form_a_cluster_and_recover_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new();
    let servers: Vec<Server> = (0..3).map(|i| plan.start(i, dir.path())).collect();

    let put = pb::PutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v1"),
        ..Default::default()
    };
    retry(&plan.clients[0], |mut kv| {
        let put = put.clone();
        async move { kv.put(put).await }
    })
    .await;
    let r = retry(&plan.clients[2], |mut kv| async move { kv.range(get("k")).await }).await;
    assert_eq!(r.into_inner().kvs[0].value, "v1");

    for s in servers {
        s.terminate();
    }

    // Started again on the same data directories, the members recover the write.
    let servers: Vec<Server> = (0..3).map(|i| plan.start(i, dir.path())).collect();
    let r = retry(&plan.clients[1], |mut kv| async move { kv.range(get("k")).await }).await;
    let r = r.into_inner();
    assert_eq!(r.kvs.len(), 1, "{r:?}");
    assert_eq!(r.kvs[0].value, "v1");
    for s in servers {
        s.terminate();
    }
}

#[test]
fn joining_an_existing_cluster_with_an_empty_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new();
    let o = Command::new(env!("CARGO_BIN_EXE_tenure"))
        .args(["serve", "--name", "s1", "--initial-cluster-state", "existing"])
        .arg("--data-dir")
        .arg(dir.path().join("s1"))
        .args(["--listen-client-urls", &plan.clients[0]])
        .args(["--advertise-client-urls", &plan.clients[0]])
        .args(["--listen-peer-urls", &plan.peers[0]])
        .args(["--initial-advertise-peer-urls", &plan.peers[0]])
        .args(["--initial-cluster", &format!("s1={}", plan.peers[0])])
        .output()
        .expect("runs tenure serve");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("joining a running cluster is not supported yet"), "{err}");
}
