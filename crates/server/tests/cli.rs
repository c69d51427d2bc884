//! End-to-end tests of the `tenure` binary: exit codes and messages of `serve`'s validation,
//! the `demo`, `serve` starting and stopping on SIGTERM, and the client commands. When an `etcd` binary is installed (Debian's
//! `etcd-server`), the client commands and the generated stubs are also checked against a
//! real etcd on loopback, which proves the hand-written protos match etcd's wire format.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::pb::etcdserverpb as pb;

mod common;
use common::free_port;

fn tenure(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenure")).args(args).output().expect("runs tenure")
}

fn tenure_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenure"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("runs tenure")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tenure-cli-test-{}-{name}", std::process::id()))
}

#[test]
fn bad_serve_flags_fail_with_one_line_before_touching_the_data_dir() {
    let dir = scratch_dir("bad");
    let d = dir.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["serve", "--data-dir", d, "--name", "a", "--initial-cluster", "b=http://h:2380"],
            "couldn't find local name \"a\"",
        ),
        (&["serve", "--data-dir", d, "--election-timeout", "300"], "should be at least as 5 times"),
        (
            &["serve", "--data-dir", d, "--listen-client-urls", "http://0.0.0.0:2379"],
            "--advertise-client-urls is required",
        ),
        (
            &["serve", "--data-dir", d, "--initial-advertise-peer-urls", "http://h:2380/x"],
            "must not contain a path",
        ),
        (&["serve", "--data-dir", d, "--snapshot-count", "many"], "invalid value 'many'"),
    ];
    for (args, needle) in cases {
        let o = tenure(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert!(!dir.exists(), "validation must not create the data dir");
}

#[test]
fn serve_reads_etcd_environment_variables() {
    let o = tenure_env(&["serve"], &[("ETCD_INITIAL_CLUSTER_STATE", "sideways")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid --initial-cluster-state \"sideways\""), "{}", stderr(&o));
    // etcd 3.4's lease checkpoint variables reach the flags (and are checked before anything
    // starts; the enable flag is accepted and ignored).
    let o = tenure_env(
        &["serve"],
        &[
            ("ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", "0s"),
            ("ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", "false"),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--experimental-lease-checkpoint-interval must be greater than 0"),
        "{}",
        stderr(&o)
    );
    let o = tenure_env(&["serve"], &[("ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT", "maybe")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("experimental-enable-lease-checkpoint"), "{}", stderr(&o));
    let client = format!("http://127.0.0.1:{}", free_port());
    let dir = scratch_dir("env");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tenure"))
        .arg("serve")
        .envs([
            ("ETCD_NAME", "n1"),
            ("ETCD_INITIAL_ADVERTISE_PEER_URLS", "http://127.0.0.1:23801"),
            ("ETCD_LISTEN_PEER_URLS", "http://127.0.0.1:23801"),
            ("ETCD_INITIAL_CLUSTER", "n1=http://127.0.0.1:23801"),
            ("ETCD_LISTEN_CLIENT_URLS", client.as_str()),
            ("ETCD_ADVERTISE_CLIENT_URLS", client.as_str()),
            ("ETCD_DATA_DIR", dir.to_str().unwrap()),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs tenure serve");
    // Read the log on a thread so a silent server fails the test instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.contains("became leader") {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => log.push_str(&(line + "\n")),
            Err(_) => {
                let _ = child.kill();
                panic!("tenure serve did not elect itself: {log}");
            }
        }
    }
    // Valid configuration: the same member and cluster ids etcd derives from these flags.
    assert!(log.contains("member bdae9bbc11dd390d (n1) of cluster d1cfaf999eb97a2a"), "{log}");
    assert!(dir.exists(), "the data dir is created once the configuration is valid");
    // SIGTERM is a graceful shutdown with exit code 0.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(term.expect("runs kill").success());
    let status = child.wait().expect("waits");
    assert_eq!(status.code(), Some(0), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_runs_and_exits_zero() {
    let o = tenure(&["demo", "--pace-ms", "0"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("elected leader for term"), "{out}");
    assert!(out.contains("crashing leader"), "{out}");
    assert!(out.contains("all 3 nodes applied the same 5 entries"), "{out}");
}

#[test]
fn client_commands_report_unreachable_endpoints() {
    let port = free_port();
    let ep = format!("127.0.0.1:{port}");
    let o = tenure(&["get", "k", "--endpoints", &ep, "--dial-timeout", "300ms"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("Error: could not connect to any endpoint"), "{}", stderr(&o));
    // An https endpoint is dialled with TLS; nobody there is the same error.
    let o = tenure(&["put", "k", "v", "--endpoints", "https://127.0.0.1:1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).starts_with("Error: could not connect to any endpoint"), "{}", stderr(&o));
}

/// A real etcd on loopback, stopped (by its own pid) when dropped.
struct Etcd {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_etcd() -> Option<Etcd> {
    let client = free_port();
    let peer = free_port();
    let dir = scratch_dir(&format!("etcd-{client}"));
    let child = Command::new("etcd")
        .args([
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let etcd = Etcd { child, dir, endpoint: format!("127.0.0.1:{client}") };
    // Generous bound: this only waits for startup, it measures nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tenure(&["endpoint", "status", "--endpoints", &etcd.endpoint]).status.success() {
            return Some(etcd);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("etcd did not start");
}

#[test]
fn client_commands_and_stubs_work_against_real_etcd() {
    if Command::new("etcd").arg("--version").output().is_err() {
        eprintln!("skipped: no etcd binary installed (apt-get install etcd-server)");
        return;
    }
    let etcd = start_etcd().expect("etcd starts");
    let ep = etcd.endpoint.as_str();
    let run = |args: &[&str]| {
        let mut full = args.to_vec();
        full.extend_from_slice(&["--endpoints", ep]);
        let o = tenure(&full);
        (o.status.code(), stdout(&o), stderr(&o))
    };
    assert_eq!(run(&["put", "foo", "bar"]), (Some(0), "OK\n".into(), String::new()));
    assert_eq!(run(&["put", "foo", "baz", "--prev-kv"]).1, "OK\nfoo\nbar\n");
    assert_eq!(run(&["put", "fob", "1"]).1, "OK\n");
    assert_eq!(run(&["get", "fo", "--prefix"]).1, "fob\n1\nfoo\nbaz\n");
    assert_eq!(run(&["get", "foo", "--rev", "2", "--consistency", "s"]).1, "foo\nbar\n");
    let (code, _, err) = run(&["get", "foo", "--rev", "99"]);
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "Error: etcdserver: mvcc: required revision is a future revision\n")
    );
    assert_eq!(run(&["del", "fo", "--prefix"]).1, "2\n");
    let members = run(&["member", "list", "-w", "table"]).1;
    assert!(members.contains("| started | default |"), "{members}");
    let status = run(&["endpoint", "status"]).1;
    assert!(status.contains(", 3.4.23, ") && status.contains(", true, false, "), "{status}");

    // Txn, lease and compaction messages through the generated stubs.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut kv = pb::kv_client::KvClient::new(ch.clone());
        let mut lease = pb::lease_client::LeaseClient::new(ch);
        let grant =
            lease.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 }).await.unwrap().into_inner();
        assert!(grant.id != 0 && grant.ttl == 60);
        let create = tenure_kv::TxnRequest {
            compare: vec![tenure_kv::Compare::new(
                "k",
                tenure_kv::CompareResult::Equal,
                tenure_kv::CompareTarget::ModRevision(0),
            )],
            success: vec![tenure_kv::RequestOp::Put(tenure_kv::PutRequest {
                lease: grant.id,
                ..tenure_kv::PutRequest::new("k", "v")
            })],
            failure: vec![tenure_kv::RequestOp::Range(tenure_kv::RangeRequest::single("k"))],
        };
        let txn = tenure_server::api::convert::txn_request_to_pb(&create);
        let first = kv.txn(txn.clone()).await.unwrap().into_inner();
        assert!(first.succeeded);
        let second = kv.txn(txn).await.unwrap().into_inner();
        assert!(!second.succeeded);
        let Some(pb::response_op::Response::ResponseRange(r)) = &second.responses[0].response
        else {
            panic!("failure branch reads the key")
        };
        assert_eq!((r.kvs[0].value.clone(), r.kvs[0].lease), (Bytes::from_static(b"v"), grant.id));
        let rev = second.header.unwrap().revision;
        kv.compact(pb::CompactionRequest { revision: rev, physical: true }).await.unwrap();
        let old = kv
            .range(pb::RangeRequest {
                key: Bytes::from_static(b"k"),
                revision: 1,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (old.code(), old.message()),
            (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted")
        );
        // The state machine's own error for the same case carries the identical status.
        let ours = tenure_server::api::error::kv_status(&tenure_kv::Error::Compacted);
        assert_eq!((ours.code(), ours.message()), (old.code(), old.message()));
        lease.lease_revoke(pb::LeaseRevokeRequest { id: grant.id }).await.unwrap();
        let gone = kv
            .range(pb::RangeRequest { key: Bytes::from_static(b"k"), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(gone.count, 0, "revoking the lease deleted its key");
    });
}

#[test]
fn streaming_and_maintenance_messages_match_real_etcd() {
    use tonic::codegen::tokio_stream::{self, StreamExt};

    if Command::new("etcd").arg("--version").output().is_err() {
        eprintln!("skipped: no etcd binary installed (apt-get install etcd-server)");
        return;
    }
    let etcd = start_etcd().expect("etcd starts");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", etcd.endpoint))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut kv = pb::kv_client::KvClient::new(ch.clone());
        let mut lease = pb::lease_client::LeaseClient::new(ch.clone());
        let mut watch = pb::watch_client::WatchClient::new(ch.clone());
        let mut maintenance = pb::maintenance_client::MaintenanceClient::new(ch.clone());
        let mut cluster = pb::cluster_client::ClusterClient::new(ch);

        // Watch: create, then see a put with its prev_kv.
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: Bytes::from_static(b"w"),
                    prev_kv: true,
                    ..Default::default()
                },
            )),
        };
        let requests = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
        let mut events = watch.watch(requests).await.unwrap().into_inner();
        let created = events.next().await.unwrap().unwrap();
        assert!(created.created);
        kv.put(pb::PutRequest {
            key: Bytes::from_static(b"w"),
            value: Bytes::from_static(b"1"),
            ..Default::default()
        })
        .await
        .unwrap();
        kv.put(pb::PutRequest {
            key: Bytes::from_static(b"w"),
            value: Bytes::from_static(b"2"),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let r = events.next().await.unwrap().unwrap();
            seen.extend(r.events);
        }
        assert_eq!(seen[0].r#type, crate_event_put());
        assert_eq!(seen[1].kv.as_ref().unwrap().value, Bytes::from_static(b"2"));
        assert_eq!(seen[1].prev_kv.as_ref().unwrap().value, Bytes::from_static(b"1"));

        // Lease: grant, keep alive once, time to live with keys, list.
        let id = lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 0x77 })
            .await
            .unwrap()
            .into_inner()
            .id;
        assert_eq!(id, 0x77);
        kv.put(pb::PutRequest { key: Bytes::from_static(b"l"), lease: id, ..Default::default() })
            .await
            .unwrap();
        let keepalive = tokio_stream::iter(vec![pb::LeaseKeepAliveRequest { id }])
            .chain(tokio_stream::pending());
        let mut acks = lease.lease_keep_alive(keepalive).await.unwrap().into_inner();
        let ack = acks.next().await.unwrap().unwrap();
        assert_eq!((ack.id, ack.ttl), (id, 30));
        let ttl = lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((ttl.granted_ttl, ttl.keys), (30, vec![Bytes::from_static(b"l")]));
        let leases = lease.lease_leases(pb::LeaseLeasesRequest {}).await.unwrap().into_inner();
        assert_eq!(leases.leases.iter().map(|l| l.id).collect::<Vec<_>>(), vec![id]);
        let missing = lease.lease_revoke(pb::LeaseRevokeRequest { id: 0x78 }).await.unwrap_err();
        assert_eq!(
            (missing.code(), missing.message()),
            (tonic::Code::NotFound, "etcdserver: requested lease not found")
        );

        // Maintenance and cluster.
        let alarms = maintenance.alarm(pb::AlarmRequest::default()).await.unwrap().into_inner();
        assert!(alarms.alarms.is_empty());
        let hash =
            maintenance.hash_kv(pb::HashKvRequest { revision: 0 }).await.unwrap().into_inner();
        assert!(hash.hash != 0);
        let status = maintenance.status(pb::StatusRequest {}).await.unwrap().into_inner();
        let header = status.header.unwrap();
        assert_eq!(status.leader, header.member_id);
        assert!(status.raft_applied_index > 0 && status.db_size > 0);
        let members =
            cluster.member_list(pb::MemberListRequest::default()).await.unwrap().into_inner();
        assert_eq!(members.members[0].id, header.member_id);
        assert_eq!(members.members[0].client_ur_ls, vec![format!("http://{}", etcd.endpoint)]);
    });
}

fn crate_event_put() -> i32 {
    tenure_server::pb::mvccpb::event::EventType::Put as i32
}

#[test]
fn dev_refuses_a_zero_snapshot_count_before_binding_anything() {
    let o = tenure(&["dev", "--snapshot-count", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "tenure dev: --snapshot-count and --snapshot-catchup-entries must be positive\n"
    );
}
