//! End-to-end tests of a real three-member cluster in one process: each member has its own
//! data directory, replica thread, sync thread, TCP peer transport and gRPC listener on free
//! loopback ports. Clients are the generated tonic stubs and, where installed, etcdctl.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::cli::ServeConfig;
use tenure_server::cli::dev::{self, Timing};
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;
use tonic::transport::Channel;

mod common;

use common::etcdctl;

/// Short timeouts so elections take well under a second; the tests only wait on outcomes,
/// never assert on timings.
const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };

/// How long anything may take before the test fails (generous: machines are shared).
const PATIENCE: Duration = Duration::from_secs(20);

/// Three (client, peer) port pairs that were free a moment ago.
fn free_ports() -> Vec<(u16, u16)> {
    common::free_ports(6).chunks(2).map(|c| (c[0], c[1])).collect()
}

struct Cluster {
    configs: Vec<ServeConfig>,
    members: Vec<Option<Member>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(|_| {}).await
    }

    /// Starts a cluster whose members' configurations `tune` has adjusted.
    async fn start_with(tune: impl Fn(&mut ServeConfig)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut configs = dev::configs(&free_ports(), dir.path(), TIMING).expect("configs");
        configs.iter_mut().for_each(tune);
        let members = dev::start(&configs).await.expect("cluster starts");
        Cluster { configs, members: members.into_iter().map(Some).collect(), _dir: dir }
    }

    fn endpoint(&self, i: usize) -> String {
        self.configs[i].advertise_client_urls[0].to_string()
    }

    async fn kv(&self, i: usize) -> pb::kv_client::KvClient<Channel> {
        pb::kv_client::KvClient::connect(self.endpoint(i)).await.expect("connect")
    }

    /// Waits until a running member leads and every running member knows it; returns its
    /// position.
    async fn leader(&self) -> usize {
        common::wait_for_leader(&self.members, &self.configs, PATIENCE).await
    }

    async fn stop(&mut self, i: usize) {
        let m = self.members[i].take().expect("running");
        m.shutdown().await.expect("clean shutdown");
    }

    async fn restart(&mut self, i: usize) {
        assert!(self.members[i].is_none());
        let urls = self
            .configs
            .iter()
            .map(|c| (c.member_id, vec![c.advertise_client_urls[0].to_string()]))
            .collect();
        self.members[i] = Some(Member::start(&self.configs[i], &urls).await.expect("restart"));
    }

    async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            if self.members[i].is_some() {
                self.stop(i).await;
            }
        }
    }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    }
}

fn get(key: &str, serializable: bool) -> pb::RangeRequest {
    pb::RangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        serializable,
        ..Default::default()
    }
}

/// The values a range returned, as strings.
fn values(r: &pb::RangeResponse) -> Vec<String> {
    r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect()
}

/// Retries a write until the cluster accepts it: right after an election a member may still
/// answer "no leader" or "leader changed", which etcd clients retry too.
async fn put_retrying(
    kv: &mut pb::kv_client::KvClient<Channel>,
    req: pb::PutRequest,
) -> pb::PutResponse {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match kv.put(req.clone()).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("put failed: {s}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_member_are_read_linearizably_on_another() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;

    // A put through a follower is forwarded to the leader and answered once applied.
    let mut kv_f = cluster.kv(follower).await;
    let r = put_retrying(&mut kv_f, put("greeting", "hello")).await;
    let h = r.header.expect("header");
    assert_eq!(h.cluster_id, cluster.configs[0].cluster_id);
    assert_eq!(h.member_id, cluster.configs[follower].member_id);
    assert!(h.revision >= 2, "{h:?}");
    assert!(h.raft_term >= 1, "{h:?}");

    // A linearizable read on the third member sees it at once.
    let mut kv_o = cluster.kv(other).await;
    let r = kv_o.range(get("greeting", false)).await.expect("range").into_inner();
    assert_eq!(values(&r), ["hello"]);
    assert_eq!(r.header.expect("header").member_id, cluster.configs[other].member_id);

    // Having served that read, the member's own state holds the write: serializable agrees.
    let r = kv_o.range(get("greeting", true)).await.expect("serializable range").into_inner();
    assert_eq!(values(&r), ["hello"]);

    // A txn: compare the value, then put on success.
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Value as i32,
            key: Bytes::from_static(b"greeting"),
            target_union: Some(pb::compare::TargetUnion::Value(Bytes::from_static(b"hello"))),
            range_end: Bytes::new(),
        }],
        success: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put("answer", "42"))),
        }],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(put("answer", "wrong"))),
        }],
    };
    let mut kv_l = cluster.kv(leader).await;
    let r = kv_l.txn(txn).await.expect("txn").into_inner();
    assert!(r.succeeded);
    let r = kv_f.range(get("answer", false)).await.expect("range").into_inner();
    assert_eq!(values(&r), ["42"]);

    // A delete, seen by a linearizable read elsewhere.
    let del = pb::DeleteRangeRequest {
        key: Bytes::from_static(b"greeting"),
        prev_kv: true,
        ..Default::default()
    };
    let r = kv_o.delete_range(del).await.expect("delete").into_inner();
    assert_eq!(r.deleted, 1);
    assert_eq!(r.prev_kvs.len(), 1);
    let r = kv_f.range(get("greeting", false)).await.expect("range").into_inner();
    assert!(r.kvs.is_empty(), "{r:?}");

    // Maintenance and cluster views agree on who leads.
    let mut m = pb::maintenance_client::MaintenanceClient::connect(cluster.endpoint(other))
        .await
        .expect("connect");
    let s = m.status(pb::StatusRequest {}).await.expect("status").into_inner();
    assert_eq!(s.leader, cluster.configs[leader].member_id);
    assert_eq!(s.version, tenure_server::api::VERSION);
    assert!(s.version.starts_with("3.4.31+tenure."), "{}", s.version);
    assert!(s.raft_applied_index >= 4, "{s:?}");
    let a = m.alarm(pb::AlarmRequest::default()).await.expect("alarm").into_inner();
    assert!(a.alarms.is_empty());
    let mut c =
        pb::cluster_client::ClusterClient::connect(cluster.endpoint(other)).await.expect("connect");
    let l = c.member_list(pb::MemberListRequest::default()).await.expect("list").into_inner();
    // etcd lists members by id.
    let ids: Vec<u64> = l.members.iter().map(|m| m.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let mut names: Vec<&str> = l.members.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["n1", "n2", "n3"]);
    assert!(l.members.iter().all(|m| m.client_ur_ls.len() == 1));

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_publishes_its_attributes_into_every_members_table() {
    let cluster = Cluster::start().await;
    let mut want: Vec<(u64, String, Vec<String>)> = cluster
        .configs
        .iter()
        .map(|c| (c.member_id, c.name.clone(), vec![c.advertise_client_urls[0].to_string()]))
        .collect();
    want.sort();
    let deadline = Instant::now() + PATIENCE;
    for m in cluster.members.iter().flatten() {
        loop {
            let table: Vec<(u64, String, Vec<String>)> = m
                .handle()
                .inspect(|r| {
                    let members = r.kv().members();
                    members.map(|(id, a)| (id, a.name.clone(), a.client_urls.clone())).collect()
                })
                .expect("replica running")
                .await
                .expect("answered");
            if table == want {
                break;
            }
            assert!(Instant::now() < deadline, "{}: table {table:?}", m.name());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Publications are not keys: the revision has not moved.
    let mut kv = cluster.kv(0).await;
    let r = kv.range(get("none", false)).await.expect("range").into_inner();
    assert_eq!(r.header.expect("header").revision, 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_catches_up_after_restart() {
    let mut cluster = Cluster::start().await;
    let old = cluster.leader().await;
    let mut kv = cluster.kv(old).await;
    put_retrying(&mut kv, put("before", "1")).await;

    cluster.stop(old).await;
    let new = cluster.leader().await;
    assert_ne!(new, old);
    let mut kv = cluster.kv(new).await;
    put_retrying(&mut kv, put("after", "2")).await;

    cluster.restart(old).await;
    // The restarted member recovered its log from disk and learns the new write: a
    // linearizable read through it returns both keys.
    let deadline = Instant::now() + PATIENCE;
    let mut kv = cluster.kv(old).await;
    loop {
        let range = pb::RangeRequest {
            key: Bytes::from_static(b"a"),
            range_end: Bytes::from_static(b"c"),
            ..Default::default()
        };
        match kv.range(range).await {
            Ok(r) => {
                assert_eq!(values(&r.into_inner()), ["2", "1"]);
                break;
            }
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("read on the restarted member failed: {s}"),
        }
    }
    cluster.shutdown().await;
}

/// Runs etcdctl with `input` on its standard input (for `txn`).
fn etcdctl_with_input(endpoints: &str, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let bin = common::etcdctl_path().expect("etcdctl");
    let mut child = std::process::Command::new(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs etcdctl");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("etcdctl output")
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "etcdctl failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_works_against_the_cluster() {
    if etcdctl("127.0.0.1:1", &["version"]).is_none() {
        eprintln!("note: etcdctl is not installed; skipping the etcdctl test");
        return;
    }
    let cluster = Cluster::start().await;
    cluster.leader().await;
    let endpoints = dev::endpoints(&cluster.configs);
    let one = cluster.configs[2].advertise_client_urls[0].authority();
    let eps = endpoints.clone();
    // etcdctl blocks; run it off the runtime's workers, which serve the cluster.
    let run = move |args: Vec<&'static str>, eps: String| {
        tokio::task::spawn_blocking(move || etcdctl(&eps, &args).expect("etcdctl present"))
    };

    let o = run(vec!["put", "hello", "world"], eps.clone()).await.expect("join");
    assert_eq!(ok(&o).trim(), "OK");
    let o = run(vec!["get", "hello"], one.clone()).await.expect("join");
    assert_eq!(ok(&o), "hello\nworld\n");
    let o = run(vec!["get", "hello", "--consistency=s", "-w", "json"], one.clone())
        .await
        .expect("join");
    assert!(ok(&o).contains("\"count\":1"), "{}", ok(&o));
    let o = run(vec!["del", "hello"], eps.clone()).await.expect("join");
    assert_eq!(ok(&o).trim(), "1");
    let o = run(vec!["get", "hello"], one.clone()).await.expect("join");
    assert_eq!(ok(&o), "");

    // A transaction: compare, then the success branch (etcdctl's interactive format on stdin).
    let o = run(vec!["put", "x", "1"], eps.clone()).await.expect("join");
    assert_eq!(ok(&o).trim(), "OK");
    let txn_eps = eps.clone();
    let o = tokio::task::spawn_blocking(move || {
        etcdctl_with_input(&txn_eps, &["txn"], "value(\"x\") = \"1\"\n\nput x 2\n\nput x 3\n\n")
    })
    .await
    .expect("join");
    assert_eq!(ok(&o), "SUCCESS\n\nOK\n", "txn output");
    let o = run(vec!["get", "x", "--print-value-only"], one.clone()).await.expect("join");
    assert_eq!(ok(&o), "2\n");

    let o = run(vec!["endpoint", "health"], eps.clone()).await.expect("join");
    let health = ok(&o) + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        health.matches("is healthy: successfully committed proposal").count(),
        3,
        "{health}"
    );

    let o = run(vec!["member", "list"], eps.clone()).await.expect("join");
    let list = ok(&o);
    assert_eq!(list.lines().count(), 3, "{list}");
    for c in &cluster.configs {
        let line = list.lines().find(|l| l.contains(&format!(", {}, ", c.name))).expect("member");
        assert!(line.contains("started"), "{line}");
        assert!(line.contains(&c.advertise_client_urls[0].to_string()), "{line}");
    }

    let o = run(vec!["endpoint", "status"], eps.clone()).await.expect("join");
    let status = ok(&o);
    assert_eq!(status.lines().count(), 3, "{status}");
    // Exactly one member says it leads.
    assert_eq!(status.lines().filter(|l| l.contains(", true, false, ")).count(), 1, "{status}");
    assert!(status.contains(tenure_server::api::VERSION), "{status}");

    cluster.shutdown().await;
}

/// One HTTP/1.1 GET on a client port; returns the status line and the body.
fn http_get(authority: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(authority).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    let status = reply.lines().next().unwrap_or_default().to_string();
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version_are_served_over_http_on_the_client_port() {
    let mut cluster = Cluster::start().await;
    cluster.leader().await;
    let authority = cluster.configs[0].advertise_client_urls[0].authority();
    let a = authority.clone();
    let (status, body) =
        tokio::task::spawn_blocking(move || http_get(&a, "/health")).await.unwrap();
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, r#"{"health":"true"}"#);
    let a = authority.clone();
    let (status, body) =
        tokio::task::spawn_blocking(move || http_get(&a, "/version")).await.unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(
        body.starts_with(r#"{"etcdserver":"3.4.31","etcdcluster":"3.4.0","tenureVersion":""#),
        "{body}"
    );

    // A member cut off from the quorum is unhealthy: its quorum read fails (and soon it
    // knows no leader either).
    cluster.stop(1).await;
    cluster.stop(2).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let a = authority.clone();
        let (status, body) =
            tokio::task::spawn_blocking(move || http_get(&a, "/health")).await.unwrap();
        if status.contains("503") {
            assert_eq!(body, r#"{"health":"false"}"#);
            break;
        }
        assert!(Instant::now() < deadline, "still healthy without a quorum: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_put_is_refused_with_etcds_message() {
    let cluster = Cluster::start().await;
    cluster.leader().await;
    let mut kv = cluster.kv(0).await;
    // Over etcd's default --max-request-bytes (1.5 MiB), within what gRPC accepts.
    let big = "x".repeat(1536 * 1024 + 1);
    let err = kv.put(put("big", &big)).await.expect_err("too large");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "etcdserver: request is too large");
    // Nothing was written.
    let r = kv.range(get("big", true)).await.expect("range").into_inner();
    assert!(r.kvs.is_empty());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_cluster_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let cfg = &cluster.configs[leader];
    let stranger = tenure_server::peer::wire::FrameCodec::new(cfg.cluster_id ^ 1, 42);
    let mut frame = bytes::BytesMut::new();
    stranger.encode_frame(0, &[], &mut frame).expect("encode");
    let peer = cfg.initial_advertise_peer_urls[0].authority();
    let mut s = tokio::net::TcpStream::connect(&peer).await.expect("connect");
    s.write_all(&frame).await.expect("send");
    // The member closes the connection instead of reading on.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, s.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // And the cluster carries on.
    let mut kv = cluster.kv(leader).await;
    put_retrying(&mut kv, put("still", "here")).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_one_line_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = free_ports();
    let taken = std::net::TcpListener::bind(("127.0.0.1", ports[1].0)).expect("bind");
    let configs = dev::configs(&ports, dir.path(), TIMING).expect("configs");
    let err = match dev::start(&configs).await {
        Ok(_) => panic!("started on a port in use"),
        Err(e) => format!("{e:#}"),
    };
    let want = format!("cannot listen for clients on http://127.0.0.1:{}", ports[1].0);
    assert!(err.contains("cannot start member n2") && err.contains(&want), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    drop(taken);
}

/// The value of an unlabelled sample `name` in a `/metrics` body.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name} in:\n{body}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("sample {name} is not a number ({e}) in:\n{body}"))
}

#[test]
fn sample_reader_fails_on_a_missing_or_unparsable_sample() {
    let body = "a_total 3\nb_total x\n";
    assert_eq!(sample(body, "a_total"), 3.0);
    assert!(std::panic::catch_unwind(|| sample(body, "c_total")).is_err());
    assert!(std::panic::catch_unwind(|| sample(body, "b_total")).is_err());
    // A longer name with the same prefix is not the sample asked for.
    assert!(std::panic::catch_unwind(|| sample("a_total_x 1\n", "a_total")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_per_member_and_move_with_writes() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let scrape = |i: usize| {
        let a = cluster.configs[i].advertise_client_urls[0].authority();
        async move { tokio::task::spawn_blocking(move || http_get(&a, "/metrics")).await.unwrap() }
    };
    let (_, before) = scrape(leader).await;
    let mut kv = cluster.kv(leader).await;
    for i in 0..5 {
        put_retrying(&mut kv, put(&format!("m{i}"), "v")).await;
    }
    let (status, after) = scrape(leader).await;
    assert!(status.contains("200"), "{status}");
    let committed = "etcd_server_proposals_committed_total";
    assert!(sample(&after, committed) >= sample(&before, committed) + 5.0, "{after}");
    assert_eq!(sample(&after, "etcd_server_is_leader"), 1.0, "{after}");
    assert_eq!(sample(&after, "etcd_server_has_leader"), 1.0, "{after}");
    assert!(sample(&after, "etcd_server_term") >= 1.0, "{after}");
    assert!(sample(&after, "etcd_server_leader_changes_seen_total") >= 1.0, "{after}");
    assert!(sample(&after, "etcd_disk_wal_fsync_duration_seconds_count") >= 5.0, "{after}");
    assert!(sample(&after, "tenure_peer_messages_sent_total") > 0.0, "{after}");
    // The leader times its heartbeats' round trips (one every heartbeat interval: wait for one).
    let rtt = "etcd_network_peer_round_trip_time_seconds_count";
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, now) = scrape(leader).await;
        if sample(&now, rtt) > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat round trip recorded: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after.contains("tenure_peer_messages_dropped_total "), "{after}");
    assert!(after.contains("tenure_server_apply_lag_entries "), "{after}");
    // A handful of writes is far below --snapshot-count: no snapshot yet, none sent.
    assert_eq!(sample(&after, "tenure_snapshots_total"), 0.0, "{after}");
    assert_eq!(sample(&after, "etcd_network_snapshot_send_success_total"), 0.0, "{after}");

    // Each member reports its own numbers: a follower does not lead and proposed nothing but
    // its own member attributes and the founders' peer URLs (each at most once: a failed
    // attempt does not count as committed).
    let follower = (leader + 1) % 3;
    let (_, theirs) = scrape(follower).await;
    assert_eq!(sample(&theirs, "etcd_server_is_leader"), 0.0, "{theirs}");
    assert!(sample(&theirs, committed) <= 2.0, "{theirs}");
    // But it syncs the log it is sent.
    assert!(sample(&theirs, "etcd_disk_wal_fsync_duration_seconds_count") >= 1.0, "{theirs}");
    cluster.shutdown().await;
}

/// A member that loses its answers: it hands each put (with its metadata) to a real member,
/// then tells the client the leader changed, as a member does when an election interrupts a
/// write that nonetheless applied.
#[derive(Clone)]
struct ForgetfulKv {
    target: String,
    forwarded: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[tonic::async_trait]
impl pb::kv_server::Kv for ForgetfulKv {
    async fn range(
        &self,
        _: tonic::Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<pb::RangeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("range"))
    }

    async fn put(
        &self,
        request: tonic::Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutResponse>, tonic::Status> {
        let mut kv = pb::kv_client::KvClient::connect(self.target.clone()).await.expect("connect");
        let (metadata, _, req) = request.into_parts();
        let mut forwarded = tonic::Request::new(req);
        *forwarded.metadata_mut() = metadata;
        kv.put(forwarded).await?;
        self.forwarded.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(tonic::Status::unavailable("etcdserver: leader changed"))
    }

    async fn delete_range(
        &self,
        _: tonic::Request<pb::DeleteRangeRequest>,
    ) -> Result<tonic::Response<pb::DeleteRangeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("delete_range"))
    }

    async fn txn(
        &self,
        _: tonic::Request<pb::TxnRequest>,
    ) -> Result<tonic::Response<pb::TxnResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("txn"))
    }

    async fn compact(
        &self,
        _: tonic::Request<pb::CompactionRequest>,
    ) -> Result<tonic::Response<pb::CompactionResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("compact"))
    }
}

/// The version of `key` as a linearizable read on `kv` sees it.
async fn version_of(kv: &mut pb::kv_client::KvClient<Channel>, key: &str) -> i64 {
    let r = kv.range(get(key, false)).await.expect("range").into_inner();
    assert_eq!(r.kvs.len(), 1, "{key} missing: {r:?}");
    r.kvs[0].version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenure_put_retried_after_leader_changed_applies_once() {
    use clap::Parser;
    use tenure_server::cli::{Cli, Command};

    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let forwarded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fake = ForgetfulKv { target: cluster.endpoint(leader), forwarded: forwarded.clone() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let fake_addr = listener.local_addr().expect("addr").to_string();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::kv_server::KvServer::new(fake.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut kv = cluster.kv(leader).await;
    // The cluster takes writes before the client runs.
    put_retrying(&mut kv, put("warm", "up")).await;

    // The forgetful endpoint first: the put applies there, the client hears "leader changed"
    // and sends the same write (same client id, sequence 1) to the next endpoint.
    let endpoints = format!("{fake_addr},{}", cluster.configs[leader].advertise_client_urls[0]);
    let cli = Cli::try_parse_from(["tenure", "put", "once", "v", "--endpoints", &endpoints])
        .expect("parses");
    let Command::Put(args) = cli.command else { panic!("not a put") };
    let out = tenure_server::cli::client::put(&args).await.expect("the retried put succeeds");
    assert_eq!(out, "OK\n");
    assert_eq!(forwarded.load(std::sync::atomic::Ordering::SeqCst), 1, "the first try applied");
    assert_eq!(version_of(&mut kv, "once").await, 1, "the retry applied a second time");

    // The same two tries without session metadata apply twice: the check above can fail.
    let mut via_fake =
        pb::kv_client::KvClient::connect(format!("http://{fake_addr}")).await.expect("connect");
    let err = via_fake.put(put("twice", "v")).await.expect_err("the fake always fails");
    assert_eq!(err.message(), "etcdserver: leader changed");
    put_retrying(&mut kv, put("twice", "v")).await;
    assert_eq!(version_of(&mut kv, "twice").await, 2);

    server.abort();
    let _ = server.await;
    cluster.shutdown().await;
}

/// Waits (bounded) until `done` holds, polling.
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first index a member's log still holds, read on its replica thread.
async fn first_index(m: &Member) -> u64 {
    use tenure_raft::LogView;
    let rx = m.handle().inspect(|r| r.node().log_view().first_index().0).expect("running");
    rx.await.expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_follower_behind_a_compacted_log_catches_up_by_snapshot() {
    // Aggressive compaction (etcd's --snapshot-count and --snapshot-catchup-entries): a snapshot
    // every 20 entries, 5 kept behind it.
    let mut cluster = Cluster::start_with(|c| {
        c.snapshot_count = 20;
        c.snapshot_catchup_entries = 5;
    })
    .await;
    let leader = cluster.leader().await;
    let lagging = (leader + 1) % 3;
    cluster.stop(lagging).await;
    let stopped_at = {
        let other = (leader + 2) % 3;
        cluster.members[other].as_ref().unwrap().handle().status().applied
    };

    let mut kv = cluster.kv(leader).await;
    for i in 0..150 {
        put_retrying(&mut kv, put(&format!("key/{i:03}"), &format!("value {i}"))).await;
    }
    let l = cluster.members[leader].as_ref().unwrap();
    let leader_metrics = std::sync::Arc::clone(l.handle().metrics());
    assert!(leader_metrics.snapshot_count() >= 1, "the leader took snapshots");
    let first = first_index(l).await;
    assert!(
        first > stopped_at + 1,
        "the leader compacted past the follower ({first} vs {stopped_at})"
    );
    let term = l.handle().status().term;

    // Back up, the follower needs entries the leader no longer has: it gets a snapshot, then the
    // log after it.
    cluster.restart(lagging).await;
    let target = cluster.members[leader].as_ref().unwrap().handle().status().committed;
    let f = cluster.members[lagging].as_ref().unwrap().handle();
    wait_for("the follower to catch up", || f.status().applied >= target).await;
    assert!(f.metrics().snapshots_installed_count() >= 1, "caught up by a snapshot");
    assert!(f.metrics().snapshots_received_count() >= 1);
    wait_for("the sender to count the transfer", || {
        leader_metrics.render().contains("etcd_network_snapshot_send_success_total 1")
    })
    .await;
    let mut kv_f = cluster.kv(lagging).await;
    for i in [0, 77, 149] {
        let r = kv_f.range(get(&format!("key/{i:03}"), true)).await.expect("range").into_inner();
        assert_eq!(values(&r), [format!("value {i}")], "key/{i:03} on the caught-up follower");
    }
    // The transfer ran beside the heartbeats: nobody started an election meanwhile.
    let status = cluster.members[leader].as_ref().unwrap().handle().status();
    assert!(status.is_leader && status.term == term, "leadership held through the transfer");

    // Writes after the install reach it from the log, and it restarts from its snapshot plus
    // the log after it.
    put_retrying(&mut kv, put("after", "install")).await;
    cluster.stop(lagging).await;
    cluster.restart(lagging).await;
    let f = cluster.members[lagging].as_ref().unwrap().handle();
    let target = cluster.members[leader].as_ref().unwrap().handle().status().committed;
    wait_for("the restarted follower to catch up", || f.status().applied >= target).await;
    let mut kv_f = cluster.kv(lagging).await;
    let r = kv_f.range(get("after", true)).await.expect("range").into_inner();
    assert_eq!(values(&r), ["install"]);
    let r = kv_f.range(get("key/100", true)).await.expect("range").into_inner();
    assert_eq!(values(&r), ["value 100"]);
    cluster.shutdown().await;
}

/// A proxy in front of a member's peer listener that slows snapshot connections (which open
/// with the snapshot stream's magic) to `bytes_per_second`, and passes message connections at
/// full speed. Returns its address.
async fn snapshot_throttle(target: String, bytes_per_second: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else { return };
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                let (mut in_r, mut in_w) = inbound.into_split();
                let (mut out_r, mut out_w) = outbound.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                });
                let mut buf = vec![0u8; 8 * 1024];
                let mut throttled = None;
                loop {
                    let n = match in_r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let slow = *throttled.get_or_insert_with(|| {
                        buf[..n].starts_with(&tenure_server::peer::snapshot_stream::STREAM_MAGIC)
                    });
                    if slow {
                        let pause = n as f64 / bytes_per_second as f64;
                        tokio::time::sleep(Duration::from_secs_f64(pause)).await;
                    }
                    if out_w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                back.abort();
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s11_a_slow_snapshot_transfer_does_not_starve_heartbeats() {
    // Member 2's peer traffic goes through a proxy that carries snapshots at 1 MiB/s; a
    // snapshot of about 3 MB then takes several election timeouts (500 ms) to arrive.
    let ports = free_ports();
    let real_peer = format!("127.0.0.1:{}", ports[2].1);
    let via = snapshot_throttle(real_peer, 1 << 20).await;
    let via = tenure_server::cli::Url::parse(&format!("http://{via}")).expect("url");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut configs = dev::configs(&ports, dir.path(), TIMING).expect("configs");
    let lagging = configs[2].member_id;
    for c in &mut configs {
        c.snapshot_count = 20;
        c.snapshot_catchup_entries = 5;
        for m in c.members.iter_mut().filter(|m| m.id == lagging) {
            m.peer_urls = vec![via.clone()];
        }
    }
    let members = dev::start(&configs).await.expect("cluster starts");
    let mut cluster =
        Cluster { configs, members: members.into_iter().map(Some).collect(), _dir: dir };
    cluster.stop(2).await;
    let leader = cluster.leader().await;
    let mut kv = cluster.kv(leader).await;
    let value = "v".repeat(20 * 1024);
    for i in 0..150 {
        put_retrying(&mut kv, put(&format!("big/{i:03}"), &value)).await;
    }
    let l = cluster.members[leader].as_ref().unwrap().handle();
    let (leader_id, term) = (cluster.configs[leader].member_id, l.status().term);
    let target = l.status().committed;

    cluster.restart(2).await;
    let f = cluster.members[2].as_ref().unwrap().handle();
    wait_for("the follower to hear the leader", || f.status().leader == Some(leader_id)).await;
    let changes = "etcd_server_leader_changes_seen_total 1\n";
    assert!(f.metrics().render().contains(changes), "{}", f.metrics().render());
    let began = Instant::now();
    wait_for("the follower to catch up", || f.status().applied >= target).await;
    assert!(f.metrics().snapshots_installed_count() >= 1, "caught up by a snapshot");
    // Only meaningful if the transfer really outlasted an election timeout.
    assert!(began.elapsed() > Duration::from_millis(TIMING.election_ms), "{:?}", began.elapsed());
    // The follower never lost its leader (a follower whose election timer fires forgets it,
    // which counts as a leader change when it hears the leader again), and nobody's term
    // moved.
    assert!(f.metrics().render().contains(changes), "{}", f.metrics().render());
    assert_eq!(f.status().term, term);
    let st = l.status();
    assert!(st.is_leader && st.term == term, "leadership held through the transfer: {st:?}");
    let mut kv_f = cluster.kv(2).await;
    let r = kv_f.range(get("big/149", true)).await.expect("range").into_inner();
    assert_eq!(values(&r), [value]);
    cluster.shutdown().await;
}
