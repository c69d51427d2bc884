//! Three `tenure serve` processes on free loopback ports, bootstrapped from
//! `--initial-cluster`: they elect a leader, serve writes and linearizable reads, stop
//! gracefully on SIGTERM, and recover their data when started again. Each publishes its name
//! and client URLs through the log, so every member's `MemberList` shows all of them.

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
fn joining_with_no_running_member_to_ask_is_refused_and_leaves_no_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("s");
    // `tenure serve --initial-cluster-state existing` for s1 with `cluster` as the member list.
    let join = |cluster: String| {
        let o = Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(["serve", "--name", "s1", "--initial-cluster-state", "existing"])
            .arg("--data-dir")
            .arg(dir.path().join("s1"))
            .args(["--listen-client-urls", &plan.clients[0]])
            .args(["--advertise-client-urls", &plan.clients[0]])
            .args(["--listen-peer-urls", &plan.peers[0]])
            .args(["--initial-advertise-peer-urls", &plan.peers[0]])
            .args(["--initial-cluster", &cluster])
            .output()
            .expect("runs tenure serve");
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = join(format!("s1={}", plan.peers[0]));
    assert!(err.contains("needs --initial-cluster to list the running cluster's members"), "{err}");
    // A list of members that do not answer: refused, naming what it tried.
    let err = join(format!("s1={},s2={}", plan.peers[0], plan.peers[1]));
    assert!(err.contains("cannot reach the running cluster to join it"), "{err}");
    assert!(!dir.path().join("s1").exists(), "a refused member writes nothing");
}

/// Each member's `MemberList` until every member shows its client URL (members publish them
/// through the log once a leader is known); returns the last answer of each.
async fn member_lists_once_published(plan: &Plan) -> Vec<pb::MemberListResponse> {
    let deadline = Instant::now() + PATIENCE;
    let mut answers = Vec::new();
    for endpoint in &plan.clients {
        loop {
            let last = match pb::cluster_client::ClusterClient::connect(endpoint.clone()).await {
                Ok(mut c) => match c.member_list(pb::MemberListRequest::default()).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let mut urls: Vec<Vec<String>> =
                            r.members.iter().map(|m| m.client_ur_ls.clone()).collect();
                        urls.sort();
                        let mut want: Vec<Vec<String>> =
                            plan.clients.iter().map(|c| vec![c.clone()]).collect();
                        want.sort();
                        if urls == want {
                            answers.push(r);
                            break;
                        }
                        format!("{r:?}")
                    }
                    Err(s) => s.to_string(),
                },
                Err(e) => e.to_string(),
            };
            assert!(Instant::now() < deadline, "{endpoint}: not every client URL shown: {last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    answers
}

#[tokio::test]
async fn member_list_on_every_member_shows_every_members_client_urls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("m");
    let servers: Vec<Server> = (0..3).map(|i| plan.start(i, dir.path())).collect();

    for (i, r) in member_lists_once_published(&plan).await.iter().enumerate() {
        assert_eq!(r.members.len(), 3, "member {i}: {r:?}");
        for m in &r.members {
            let j = plan.names.iter().position(|n| *n == m.name).expect("a configured name");
            assert_eq!(m.peer_ur_ls, [plan.peers[j].clone()], "member {i}: {m:?}");
            assert_eq!(m.client_ur_ls, [plan.clients[j].clone()], "member {i}: {m:?}");
            assert!(m.id != 0 && !m.is_learner, "member {i}: {m:?}");
        }
        let header = r.header.as_ref().expect("header");
        assert!(header.cluster_id != 0 && header.member_id != 0);
    }

    match etcdctl_member_list(&plan.clients[1]) {
        None => println!("etcdctl is not installed; skipping its member list check"),
        Some(out) => {
            for url in plan.clients.iter().chain(&plan.peers).chain(&plan.names) {
                assert!(out.contains(url.as_str()), "etcdctl member list lacks {url}:\n{out}");
            }
            assert_eq!(out.lines().count(), 3, "{out}");
            assert!(out.lines().all(|l| l.contains(", started, ")), "{out}");
        }
    }

    // After a restart the table comes back from the log (and is published again).
    for s in servers {
        s.terminate();
    }
    let servers: Vec<Server> = (0..3).map(|i| plan.start(i, dir.path())).collect();
    member_lists_once_published(&plan).await;
    for s in servers {
        s.terminate();
    }
}

/// `etcdctl member list` (API v3) against `endpoint`; `None` if etcdctl is not installed.
fn etcdctl_member_list(endpoint: &str) -> Option<String> {
    let bin = std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join("etcdctl"))
        .find(|p| p.exists())?;
    let out = Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(["--command-timeout=10s", "member", "list"])
        .output()
        .expect("runs etcdctl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "etcdctl failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(stdout)
}

/// The value of the sample `name` on `/metrics` of the member at `client_url`, if it answers.
fn metric(client_url: &str, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let authority = client_url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(authority).ok()?;
    s.set_read_timeout(Some(PATIENCE)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    reply.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn s11_a_killed_member_catches_up_by_snapshot_with_etcds_compaction_flags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("c");
    // etcd's flags force compaction every 10 entries, keeping 3 behind each snapshot.
    let flags = ["--snapshot-count", "10", "--snapshot-catchup-entries", "3"];
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(plan.start_with(i, dir.path(), &flags))).collect();
    let put = |i: usize| pb::PutRequest {
        key: Bytes::from(format!("key/{i:02}")),
        value: Bytes::from(format!("value {i}")),
        ..Default::default()
    };
    retry(&plan.clients[0], |mut kv| {
        let put = put(0);
        async move { kv.put(put).await }
    })
    .await;
    // The last member dies without a shutdown; the others write far past its log.
    servers[2].take().expect("running").kill();
    for i in 1..60 {
        retry(&plan.clients[i % 2], |mut kv| {
            let put = put(i);
            async move { kv.put(put).await }
        })
        .await;
    }
    let taken: f64 =
        (0..2).filter_map(|i| metric(&plan.clients[i], "tenure_snapshots_total")).sum();
    assert!(taken >= 2.0, "the live members compacted their logs ({taken} snapshots)");

    servers[2] = Some(plan.start_with(2, dir.path(), &flags));
    let deadline = Instant::now() + PATIENCE;
    loop {
        if metric(&plan.clients[2], "tenure_snapshots_installed_total").is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted member installed no snapshot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Serializable: what the member itself holds, not what the leader would answer.
    let local = |key: &'static str| pb::RangeRequest { serializable: true, ..get(key) };
    let deadline = Instant::now() + PATIENCE;
    loop {
        let r = retry(&plan.clients[2], |mut kv| async move { kv.range(local("key/59")).await });
        if let [kv] = &r.await.into_inner().kvs[..] {
            assert_eq!(kv.value, "value 59");
            break;
        }
        assert!(Instant::now() < deadline, "the restarted member never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = retry(&plan.clients[2], |mut kv| async move { kv.range(local("key/00")).await }).await;
    assert_eq!(r.into_inner().kvs[0].value, "value 0", "the snapshot holds the oldest write");
    for s in servers.into_iter().flatten() {
        s.terminate();
    }
}
