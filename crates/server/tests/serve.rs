//! Three `tenure serve` processes on free loopback ports, bootstrapped from
//! `--initial-cluster`: they elect a leader, serve writes and linearizable reads, stop
//! gracefully on SIGTERM, and recover their data when started again.

mod common;

use common::{Plan, Server};

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::pb::etcdserverpb as pb;

const PATIENCE: Duration = Duration::from_secs(20);

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
    let plan = Plan::new("s");
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
    let plan = Plan::new("s");
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
