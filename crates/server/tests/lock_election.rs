//! Lock and Election conformance (issue 13), through the generated tonic clients: against an
//! in-process three-member tenure cluster (asking a follower) and, where `etcd` is installed,
//! the same requests against a fresh etcd 3.4, transcripts compared line by line (see
//! `servers`). Then mutual exclusion under concurrent lockers on tenure, and etcdctl's
//! client-side `lock` and `elect` recipes against tenure, mixed with the server-side services.

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::pb::etcdserverpb as pb;
use tenure_server::pb::v3electionpb as epb;
use tenure_server::pb::v3lockpb as lpb;
use tonic::transport::Channel;

mod common;
mod servers;

use servers::{PATIENCE, Tenure, Transcript, compare, error_line};

/// How long a test waits to see that a call is still waiting (it may miss a bug, never fails a
/// correct server).
const QUIET: Duration = Duration::from_millis(500);

fn lock_client(ch: &Channel) -> lpb::lock_client::LockClient<Channel> {
    lpb::lock_client::LockClient::new(ch.clone())
}

fn election_client(ch: &Channel) -> epb::election_client::ElectionClient<Channel> {
    epb::election_client::ElectionClient::new(ch.clone())
}

fn revision(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().expect("a header").revision
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn grant(ch: &Channel, id: i64) {
    let mut c = pb::lease_client::LeaseClient::new(ch.clone());
    c.lease_grant(pb::LeaseGrantRequest { id, ttl: 60 }).await.expect("granted");
}

async fn revoke(ch: &Channel, id: i64) -> String {
    let mut c = pb::lease_client::LeaseClient::new(ch.clone());
    match c.lease_revoke(pb::LeaseRevokeRequest { id }).await {
        Ok(r) => format!("revoke rev={}", revision(&r.into_inner().header)),
        Err(s) => error_line(&s),
    }
}

/// The keys under `prefix`, with create revision and lease.
async fn keys(ch: &Channel, prefix: &str) -> String {
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let key = Bytes::copy_from_slice(prefix.as_bytes());
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    let req = pb::RangeRequest { key, range_end: end.into(), ..Default::default() };
    let r = kv.range(req).await.expect("read").into_inner();
    let kvs: Vec<String> = r
        .kvs
        .iter()
        .map(|kv| {
            format!(
                "{}@{} lease={:x} {:?}",
                text(&kv.key),
                kv.create_revision,
                kv.lease,
                text(&kv.value)
            )
        })
        .collect();
    format!("keys {prefix} rev={} {kvs:?}", revision(&r.header))
}

async fn lock(ch: &Channel, name: &str, lease: i64) -> String {
    let req = lpb::LockRequest { name: Bytes::copy_from_slice(name.as_bytes()), lease };
    match lock_client(ch).lock(req).await {
        Ok(r) => {
            let r = r.into_inner();
            format!("lock {} rev={}", text(&r.key), revision(&r.header))
        }
        Err(s) => error_line(&s),
    }
}

/// A Lock call on a task of its own.
fn lock_later(ch: &Channel, name: &str, lease: i64) -> tokio::task::JoinHandle<String> {
    let (ch, name) = (ch.clone(), name.to_string());
    tokio::spawn(async move { lock(&ch, &name, lease).await })
}

async fn unlock(ch: &Channel, key: &str) -> String {
    let req = lpb::UnlockRequest { key: Bytes::copy_from_slice(key.as_bytes()) };
    match lock_client(ch).unlock(req).await {
        Ok(r) => format!("unlock rev={}", revision(&r.into_inner().header)),
        Err(s) => error_line(&s),
    }
}

/// Whether `call` is still waiting after [`QUIET`].
async fn still_waiting(call: &mut tokio::task::JoinHandle<String>) -> String {
    match tokio::time::timeout(QUIET, &mut *call).await {
        Err(_) => "waiting".to_string(),
        Ok(done) => format!("done early: {}", done.expect("task")),
    }
}

async fn finished(call: tokio::task::JoinHandle<String>) -> String {
    tokio::time::timeout(PATIENCE, call).await.expect("answered in time").expect("task")
}

fn leader_key_line(l: &epb::LeaderKey) -> String {
    format!("leader name={} key={} rev={} lease={:x}", text(&l.name), text(&l.key), l.rev, l.lease)
}

async fn campaign(
    ch: &Channel,
    name: &str,
    lease: i64,
    value: &str,
) -> Result<epb::LeaderKey, String> {
    let req = epb::CampaignRequest {
        name: Bytes::copy_from_slice(name.as_bytes()),
        lease,
        value: Bytes::copy_from_slice(value.as_bytes()),
    };
    match election_client(ch).campaign(req).await {
        Ok(r) => {
            let r = r.into_inner();
            let leader = r.leader.expect("a leader key");
            assert!(revision(&r.header) >= leader.rev);
            Ok(leader)
        }
        Err(s) => Err(error_line(&s)),
    }
}

fn campaign_line(r: &Result<epb::LeaderKey, String>) -> String {
    match r {
        Ok(l) => format!("campaign {}", leader_key_line(l)),
        Err(e) => e.clone(),
    }
}

async fn proclaim(ch: &Channel, leader: Option<epb::LeaderKey>, value: &str) -> String {
    let req = epb::ProclaimRequest { leader, value: Bytes::copy_from_slice(value.as_bytes()) };
    match election_client(ch).proclaim(req).await {
        Ok(r) => format!("proclaim rev={}", revision(&r.into_inner().header)),
        Err(s) => error_line(&s),
    }
}

async fn resign(ch: &Channel, leader: Option<epb::LeaderKey>) -> String {
    match election_client(ch).resign(epb::ResignRequest { leader }).await {
        Ok(r) => format!("resign rev={}", revision(&r.into_inner().header)),
        Err(s) => error_line(&s),
    }
}

fn leader_response_line(r: &epb::LeaderResponse) -> String {
    let kv = r.kv.as_ref().expect("a kv");
    format!(
        "leader {}={:?} create={} mod={} lease={:x} rev={}",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.lease,
        revision(&r.header)
    )
}

async fn leader(ch: &Channel, name: &str) -> String {
    let req = epb::LeaderRequest { name: Bytes::copy_from_slice(name.as_bytes()) };
    match election_client(ch).leader(req).await {
        Ok(r) => leader_response_line(&r.into_inner()),
        Err(s) => error_line(&s),
    }
}

// ---------------------------------------------------------------------------------------------
// Lock.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_answers_the_name_slash_lease_in_hex_key_attached_to_the_lease() {
    let t = compare("lock_answers_the_key", |ch| async move {
        grant(&ch, 0x1a).await;
        vec![lock(&ch, "lk", 0x1a).await, keys(&ch, "lk/").await]
    })
    .await;
    assert_eq!(t[0], "lock lk/1a rev=2");
    assert_eq!(t[1], "keys lk/ rev=2 [\"lk/1a@2 lease=1a \\\"\\\"\"]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_with_an_unknown_lease_is_not_found() {
    let t = compare("lock_with_an_unknown_lease", |ch| async move {
        vec![lock(&ch, "lk", 77).await, keys(&ch, "lk/").await]
    })
    .await;
    // etcd's lock service answers its recipe's errors with code Unknown.
    assert_eq!(t[0], "error Unknown: etcdserver: requested lease not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_again_with_the_same_lease_answers_at_once_with_the_same_key() {
    let t = compare("lock_again_with_the_same_lease", |ch| async move {
        grant(&ch, 1).await;
        vec![lock(&ch, "lk", 1).await, lock(&ch, "lk", 1).await, keys(&ch, "lk/").await]
    })
    .await;
    assert_eq!(t[1], "lock lk/1 rev=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_deletes_the_key_and_the_next_waiter_gets_the_lock() {
    let t = compare("unlock_hands_the_lock_on", |ch| async move {
        grant(&ch, 1).await;
        grant(&ch, 2).await;
        let mut t = vec![lock(&ch, "lk", 1).await];
        let mut second = lock_later(&ch, "lk", 2);
        t.push(still_waiting(&mut second).await);
        t.push(unlock(&ch, "lk/1").await);
        t.push(finished(second).await);
        t.push(keys(&ch, "lk/").await);
        t
    })
    .await;
    assert_eq!(t[1], "waiting");
    assert_eq!(t[3], "lock lk/2 rev=4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_holders_lease_hands_the_lock_to_the_next_waiter() {
    let t = compare("revoked_holder_hands_the_lock_on", |ch| async move {
        grant(&ch, 1).await;
        grant(&ch, 2).await;
        grant(&ch, 3).await;
        let mut t = vec![lock(&ch, "lk", 1).await];
        let mut second = lock_later(&ch, "lk", 2);
        t.push(still_waiting(&mut second).await);
        let mut third = lock_later(&ch, "lk", 3);
        t.push(still_waiting(&mut third).await);
        t.push(revoke(&ch, 1).await);
        t.push(finished(second).await);
        t.push(still_waiting(&mut third).await);
        t.push(revoke(&ch, 2).await);
        t.push(finished(third).await);
        t
    })
    .await;
    assert_eq!(t[4], "lock lk/2 rev=5");
    assert_eq!(t[7], "lock lk/3 rev=6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lock_call_deletes_its_waiting_key() {
    let t = compare("abandoned_lock_call", |ch| async move {
        grant(&ch, 1).await;
        grant(&ch, 2).await;
        let mut t = vec![lock(&ch, "lk", 1).await];
        let mut second = lock_later(&ch, "lk", 2);
        t.push(still_waiting(&mut second).await);
        t.push(keys(&ch, "lk/").await);
        // The client gives up: its call is cancelled.
        second.abort();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let k = keys(&ch, "lk/").await;
            if !k.contains("lk/2") {
                t.push(k);
                break;
            }
            assert!(Instant::now() < deadline, "the waiter's key stayed: {k}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t
    })
    .await;
    assert_eq!(t[3], "keys lk/ rev=4 [\"lk/1@2 lease=1 \\\"\\\"\"]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlock_without_a_key_is_refused() {
    compare("unlock_without_a_key", |ch| async move { vec![unlock(&ch, "").await] }).await;
}

/// Six lockers through all three members, each holding the lock three times: inside the lock,
/// each checks that nobody else is inside (a shared key it writes on entry and deletes on exit,
/// guarded by its fencing token), so any overlap is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lockers_hold_the_lock_one_at_a_time() {
    let tenure = Tenure::start().await;
    let mut tasks = Vec::new();
    for locker in 0..6i64 {
        let ch = tenure.channel(locker as usize % 3).await;
        tasks.push(tokio::spawn(async move {
            let lease = 100 + locker;
            grant(&ch, lease).await;
            let mut kv = pb::kv_client::KvClient::new(ch.clone());
            let mut tokens = Vec::new();
            for _ in 0..3 {
                let r = lock_client(&ch)
                    .lock(lpb::LockRequest { name: "mutex".into(), lease })
                    .await
                    .expect("locked")
                    .into_inner();
                let key = r.key.clone();
                // The fencing token: the lock key's create revision.
                let got = kv
                    .range(pb::RangeRequest { key: key.clone(), ..Default::default() })
                    .await
                    .expect("read")
                    .into_inner();
                let token = got.kvs[0].create_revision;
                tokens.push(token);
                // Enter: "inside" must not exist.
                let enter = pb::TxnRequest {
                    compare: vec![pb::Compare {
                        key: "inside".into(),
                        target: pb::compare::CompareTarget::Create as i32,
                        result: pb::compare::CompareResult::Equal as i32,
                        target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
                        ..Default::default()
                    }],
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key: "inside".into(),
                            value: Bytes::from(token.to_string()),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                };
                let entered = kv.txn(enter).await.expect("txn").into_inner().succeeded;
                assert!(entered, "locker {locker} found someone inside");
                tokio::time::sleep(Duration::from_millis(20)).await;
                kv.delete_range(pb::DeleteRangeRequest {
                    key: "inside".into(),
                    ..Default::default()
                })
                .await
                .expect("left");
                lock_client(&ch).unlock(lpb::UnlockRequest { key }).await.expect("unlocked");
            }
            tokens
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.extend(tokio::time::timeout(PATIENCE * 2, t).await.expect("in time").expect("task"));
    }
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 18, "every hold has its own fencing token: {tokens:?}");
    tenure.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Election.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_leader_proclaim_and_resign_hand_leadership_on() {
    let t = compare("campaign_leader_proclaim_resign", |ch| async move {
        grant(&ch, 0xa).await;
        grant(&ch, 0xb).await;
        let first = campaign(&ch, "el", 0xa, "one").await;
        let mut t = vec![campaign_line(&first)];
        let first = first.ok();
        t.push(leader(&ch, "el").await);
        t.push(proclaim(&ch, first.clone(), "uno").await);
        t.push(leader(&ch, "el").await);
        let second = {
            let ch = ch.clone();
            tokio::spawn(async move { campaign_line(&campaign(&ch, "el", 0xb, "two").await) })
        };
        let mut second = second;
        t.push(still_waiting(&mut second).await);
        t.push(keys(&ch, "el/").await);
        t.push(resign(&ch, first).await);
        t.push(finished(second).await);
        t.push(leader(&ch, "el").await);
        t
    })
    .await;
    assert_eq!(t[0], "campaign leader name=el key=el/a rev=2 lease=a");
    assert_eq!(t[1], "leader el/a=\"one\" create=2 mod=2 lease=a rev=2");
    assert_eq!(t[3], "leader el/a=\"uno\" create=2 mod=3 lease=a rev=3");
    assert_eq!(t[7], "campaign leader name=el key=el/b rev=4 lease=b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_again_with_another_value_proclaims_it() {
    let t = compare("campaign_again_with_another_value", |ch| async move {
        grant(&ch, 1).await;
        vec![
            campaign_line(&campaign(&ch, "el", 1, "one").await),
            campaign_line(&campaign(&ch, "el", 1, "two").await),
            leader(&ch, "el").await,
        ]
    })
    .await;
    assert_eq!(t[2], "leader el/1=\"two\" create=2 mod=3 lease=1 rev=3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proclaim_and_resign_by_a_former_leader() {
    let t = compare("proclaim_and_resign_by_a_former_leader", |ch| async move {
        grant(&ch, 1).await;
        let first = campaign(&ch, "el", 1, "one").await.ok();
        vec![
            resign(&ch, first.clone()).await,
            proclaim(&ch, first.clone(), "again").await,
            resign(&ch, first).await,
            leader(&ch, "el").await,
        ]
    })
    .await;
    assert_eq!(t[1], "error Unknown: election: not leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_with_an_unknown_lease_is_not_found() {
    compare("campaign_with_an_unknown_lease", |ch| async move {
        vec![campaign_line(&campaign(&ch, "el", 5, "v").await), keys(&ch, "el/").await]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_of_an_election_without_candidates_is_refused() {
    let t =
        compare("leader_without_candidates", |ch| async move { vec![leader(&ch, "nobody").await] })
            .await;
    assert_eq!(t[0], "error Unknown: election: no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proclaim_and_resign_without_a_leader_key_are_refused() {
    compare("proclaim_and_resign_without_a_leader_key", |ch| async move {
        vec![proclaim(&ch, None, "v").await, resign(&ch, None).await]
    })
    .await;
}

/// Observe, opened before anyone campaigns: the first leader, its proclamation, and after it
/// resigns, the next leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_streams_each_leader_and_proclamation() {
    let t = compare("observe_streams_leaders", |ch| async move {
        grant(&ch, 1).await;
        grant(&ch, 2).await;
        let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
        let observer = {
            let ch = ch.clone();
            tokio::spawn(async move {
                let req = epb::LeaderRequest { name: "el".into() };
                let mut stream =
                    election_client(&ch).observe(req).await.expect("observing").into_inner();
                while let Ok(Some(r)) = stream.message().await {
                    if lines_tx.send(leader_response_line(&r)).is_err() {
                        return;
                    }
                }
            })
        };
        tokio::time::sleep(QUIET).await;
        let first = campaign(&ch, "el", 1, "one").await.ok();
        let mut t = vec![
            tokio::time::timeout(PATIENCE, lines.recv()).await.expect("observed").expect("line"),
        ];
        proclaim(&ch, first.clone(), "uno").await;
        t.push(
            tokio::time::timeout(PATIENCE, lines.recv()).await.expect("observed").expect("line"),
        );
        // A second candidate queues; nothing is observed until the leader resigns.
        let second = {
            let ch = ch.clone();
            tokio::spawn(async move { campaign_line(&campaign(&ch, "el", 2, "two").await) })
        };
        tokio::time::sleep(QUIET).await;
        resign(&ch, first).await;
        t.push(
            tokio::time::timeout(PATIENCE, lines.recv()).await.expect("observed").expect("line"),
        );
        finished(second).await;
        observer.abort();
        t
    })
    .await;
    assert_eq!(t[0], "leader el/1=\"one\" create=2 mod=2 lease=1 rev=2");
    assert_eq!(t[1], "leader el/1=\"uno\" create=2 mod=3 lease=1 rev=3");
    assert_eq!(t[2], "leader el/2=\"two\" create=4 mod=4 lease=2 rev=5");
}

#[test]
fn transcripts_that_differ_in_a_key_are_not_equal() {
    let a: Transcript = vec!["lock lk/1a rev=2".into()];
    let b: Transcript = vec!["lock lk/1b rev=2".into()];
    assert_ne!(a, b);
}

// ---------------------------------------------------------------------------------------------
// etcdctl's client-side recipes against tenure.

fn etcdctl(endpoints: &str) -> Option<std::process::Command> {
    let bin = servers::binary("etcdctl")?;
    let mut c = std::process::Command::new(bin);
    c.env("ETCDCTL_API", "3").args(["--endpoints", endpoints]);
    Some(c)
}

/// Two `etcdctl lock NAME -- command` processes through different members: each command
/// writes its start and end to a file and sleeps between them; the two holds never overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_processes_exclude_each_other() {
    let Some(_) = servers::binary("etcdctl") else {
        println!("etcdctl is not installed; skipping");
        return;
    };
    let tenure = Tenure::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log");
    let mut children = Vec::new();
    for i in 0..2 {
        let script = format!("echo start {i} >> {0}; sleep 1; echo end {i} >> {0}", log.display());
        let child = etcdctl(&tenure.url(i))
            .expect("etcdctl")
            .args(["lock", "shared", "--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("runs etcdctl");
        children.push(child);
    }
    let outputs = tokio::task::spawn_blocking(move || {
        children.into_iter().map(|c| c.wait_with_output().expect("waits")).collect::<Vec<_>>()
    })
    .await
    .expect("task");
    for o in &outputs {
        assert!(o.status.success(), "{o:?}");
    }
    let lines: Vec<String> =
        std::fs::read_to_string(&log).expect("log").lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let first = lines[0].strip_prefix("start ").expect("a start");
    assert_eq!(lines[1], format!("end {first}"), "holds overlapped: {lines:?}");
    assert!(lines[2].starts_with("start ") && lines[3].starts_with("end "), "{lines:?}");
    tenure.shutdown().await;
}

/// `etcdctl elect` (clientv3's recipe) campaigns; tenure's Election service sees it lead, a
/// server-side candidate queues behind it, and `etcdctl elect --listen` prints both leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_and_the_election_service_share_one_election() {
    let Some(_) = servers::binary("etcdctl") else {
        println!("etcdctl is not installed; skipping");
        return;
    };
    let tenure = Tenure::start().await;
    let ch = tenure.channel(tenure.follower().await).await;
    let mut candidate = etcdctl(&tenure.url(0))
        .expect("etcdctl")
        .args(["elect", "mixed", "from-etcdctl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs etcdctl");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let l = leader(&ch, "mixed").await;
        if l.contains("from-etcdctl") {
            break;
        }
        assert!(Instant::now() < deadline, "etcdctl never led: {l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut listener = etcdctl(&tenure.url(1))
        .expect("etcdctl")
        .args(["elect", "--listen", "mixed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs etcdctl");
    grant(&ch, 9).await;
    let mut ours = {
        let ch = ch.clone();
        tokio::spawn(async move { campaign_line(&campaign(&ch, "mixed", 9, "from-tenure").await) })
    };
    assert_eq!(still_waiting(&mut ours).await, "waiting");
    // etcdctl resigns when interrupted; a kill leaves its key to its lease's expiry.
    let kill = std::process::Command::new("kill")
        .args(["-INT", &candidate.id().to_string()])
        .status()
        .expect("runs kill");
    assert!(kill.success());
    let _ = tokio::task::spawn_blocking(move || candidate.wait()).await;
    assert!(finished(ours).await.starts_with("campaign leader name=mixed key=mixed/9 "));
    tokio::time::sleep(QUIET).await;
    let _ = listener.kill();
    let out = tokio::task::spawn_blocking(move || listener.wait_with_output())
        .await
        .expect("task")
        .expect("output");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains("from-etcdctl") && printed.contains("from-tenure"),
        "etcdctl elect --listen printed {printed:?}"
    );
    tenure.shutdown().await;
}

/// Two `tenure lock NAME -- command` processes through different members: the holds never
/// overlap, and each command sees its lock key and fencing token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenure_lock_processes_exclude_each_other_and_pass_the_fencing_token() {
    let tenure = Tenure::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log");
    let mut children = Vec::new();
    for i in 0..2 {
        let script = format!(
            "echo start $ETCD_LOCK_KEY $ETCD_LOCK_REV >> {0}; sleep 1; echo end >> {0}",
            log.display()
        );
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(["lock", "shared", "--ttl", "5", "--endpoints", &tenure.url(i)])
            .args(["--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs tenure lock");
        children.push(child);
    }
    let outputs = tokio::task::spawn_blocking(move || {
        children.into_iter().map(|c| c.wait_with_output().expect("waits")).collect::<Vec<_>>()
    })
    .await
    .expect("task");
    let lines: Vec<String> =
        std::fs::read_to_string(&log).expect("log").lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:?} {outputs:?}");
    assert!(lines[0].starts_with("start shared/") && lines[1] == "end", "{lines:?}");
    assert!(lines[2].starts_with("start shared/") && lines[3] == "end", "{lines:?}");
    for o in &outputs {
        assert!(o.status.success(), "{o:?}");
        // As etcdctl, nothing is printed but the command's output (here none).
        assert!(o.stdout.is_empty(), "{o:?}");
    }
    let key = |l: &str| l.split(' ').nth(1).map(str::to_string);
    assert_ne!(key(&lines[0]), key(&lines[2]), "each holder has a key of its own: {lines:?}");
    // Both leases were revoked and the keys deleted on the way out.
    let ch = tenure.channel(0).await;
    assert!(keys(&ch, "shared/").await.ends_with(" []"));
    tenure.shutdown().await;
}

/// `tenure elect NAME PROPOSAL` leads and prints its key and value; `tenure elect NAME`
/// prints the leader; Ctrl-C resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenure_elect_campaigns_observes_and_resigns_on_interrupt() {
    let tenure = Tenure::start().await;
    let spawn = |args: &[&str], url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(args)
            .args(["--endpoints", &url])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("runs tenure elect")
    };
    let candidate = spawn(&["elect", "el", "hello"], tenure.url(0));
    let ch = tenure.channel(1).await;
    let deadline = Instant::now() + PATIENCE;
    while !leader(&ch, "el").await.contains("\"hello\"") {
        assert!(Instant::now() < deadline, "the candidate never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let observer = spawn(&["elect", "el"], tenure.url(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for child in [&candidate, &observer] {
        let pid = child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .expect("kill")
                .success()
        );
    }
    let (c, o) = tokio::task::spawn_blocking(move || {
        (candidate.wait_with_output().expect("waits"), observer.wait_with_output().expect("waits"))
    })
    .await
    .expect("task");
    assert!(c.status.success() && o.status.success(), "{c:?} {o:?}");
    let printed = String::from_utf8_lossy(&c.stdout).into_owned();
    assert!(printed.starts_with("el/") && printed.ends_with("\nhello\n"), "{printed:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), printed);
    assert_eq!(leader(&ch, "el").await, "error Unknown: election: no leader");
    tenure.shutdown().await;
}
