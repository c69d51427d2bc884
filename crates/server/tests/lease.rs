//! Lease conformance (issue 13): one behaviour per test, through the generated tonic client,
//! against an in-process three-member tenure cluster (asking a follower, so every grant, renewal
//! and revoke is forwarded to the leader) and, where `etcd` is installed, the same requests
//! against a fresh etcd 3.4. Each step writes a transcript line holding only what both must
//! agree on (ids chosen by the client, TTLs, revisions, keys, exact error codes and messages);
//! the transcripts must be equal. Without `etcd` the etcd half is skipped with a printed note.
//!
//! Expiry is checked with generous bounds: a lease of 2 s must be gone well within a minute
//! of its last renewal, and a renewed one must still be there after several TTLs.

use std::time::{Duration, Instant};

use tenure_server::pb::etcdserverpb as pb;
use tokio::sync::mpsc;
use tonic::transport::Channel;

mod common;
mod servers;

use servers::{PATIENCE, Tenure, Transcript, compare, error_line};

fn lease_client(ch: &Channel) -> pb::lease_client::LeaseClient<Channel> {
    pb::lease_client::LeaseClient::new(ch.clone())
}

fn kv_client(ch: &Channel) -> pb::kv_client::KvClient<Channel> {
    pb::kv_client::KvClient::new(ch.clone())
}

fn revision(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().expect("a header").revision
}

async fn grant(ch: &Channel, id: i64, ttl: i64) -> String {
    match lease_client(ch).lease_grant(pb::LeaseGrantRequest { id, ttl }).await {
        Ok(r) => {
            let r = r.into_inner();
            format!(
                "grant id={} ttl={} rev={} error={:?}",
                r.id,
                r.ttl,
                revision(&r.header),
                r.error
            )
        }
        Err(s) => error_line(&s),
    }
}

async fn revoke(ch: &Channel, id: i64) -> String {
    match lease_client(ch).lease_revoke(pb::LeaseRevokeRequest { id }).await {
        Ok(r) => format!("revoke rev={}", revision(&r.into_inner().header)),
        Err(s) => error_line(&s),
    }
}

async fn put(ch: &Channel, key: &str, lease: i64) -> String {
    let req = pb::PutRequest {
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        value: "v".into(),
        lease,
        ..Default::default()
    };
    match kv_client(ch).put(req).await {
        Ok(r) => format!("put {key} rev={}", revision(&r.into_inner().header)),
        Err(s) => error_line(&s),
    }
}

async fn get(ch: &Channel, key: &str) -> String {
    let req = pb::RangeRequest {
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        ..Default::default()
    };
    match kv_client(ch).range(req).await {
        Ok(r) => {
            let r = r.into_inner();
            let kvs: Vec<String> = r
                .kvs
                .iter()
                .map(|kv| {
                    format!(
                        "{}@{} lease={}",
                        String::from_utf8_lossy(&kv.key),
                        kv.mod_revision,
                        kv.lease
                    )
                })
                .collect();
            format!("get {key} rev={} {kvs:?}", revision(&r.header))
        }
        Err(s) => error_line(&s),
    }
}

/// TimeToLive, with the remaining TTL checked to lie in `(granted - slack, granted]` and then
/// left out (it depends on timing).
async fn time_to_live(ch: &Channel, id: i64, keys: bool) -> String {
    match lease_client(ch).lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys }).await {
        Ok(r) => {
            let r = r.into_inner();
            let ttl = if r.ttl == -1 {
                "-1".to_string()
            } else {
                assert!(
                    r.ttl <= r.granted_ttl && r.ttl >= r.granted_ttl - 5,
                    "remaining {} of {}",
                    r.ttl,
                    r.granted_ttl
                );
                "remaining".to_string()
            };
            // etcd lists them from a Go map, in no particular order; tenure in key order.
            let mut keys: Vec<String> =
                r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
            keys.sort();
            format!(
                "ttl id={} ttl={ttl} granted={} keys={keys:?} rev={}",
                r.id,
                r.granted_ttl,
                revision(&r.header)
            )
        }
        Err(s) => error_line(&s),
    }
}

async fn leases(ch: &Channel) -> String {
    match lease_client(ch).lease_leases(pb::LeaseLeasesRequest {}).await {
        Ok(r) => {
            let r = r.into_inner();
            let mut ids: Vec<i64> = r.leases.iter().map(|l| l.id).collect();
            ids.sort_unstable();
            format!("leases {ids:?} rev={}", revision(&r.header))
        }
        Err(s) => error_line(&s),
    }
}

/// Sends every id on one keep-alive stream at once, then reads one answer per id.
async fn keep_alive(
    ch: &Channel,
    ids: &[i64],
) -> Vec<Result<pb::LeaseKeepAliveResponse, tonic::Status>> {
    let (tx, rx) = mpsc::unbounded_channel();
    for &id in ids {
        tx.send(pb::LeaseKeepAliveRequest { id }).expect("queued");
    }
    let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let mut answers = Vec::new();
    let mut responses = match lease_client(ch).lease_keep_alive(stream).await {
        Ok(r) => r.into_inner(),
        Err(s) => return vec![Err(s)],
    };
    while answers.len() < ids.len() {
        match tokio::time::timeout(PATIENCE, responses.message()).await.expect("answered") {
            Ok(Some(r)) => answers.push(Ok(r)),
            Ok(None) => panic!("the keep-alive stream ended"),
            Err(s) => {
                answers.push(Err(s));
                break;
            }
        }
    }
    drop(tx);
    answers
}

fn keep_alive_lines(
    answers: Vec<Result<pb::LeaseKeepAliveResponse, tonic::Status>>,
) -> Vec<String> {
    answers
        .into_iter()
        .map(|a| match a {
            Ok(r) => format!("keepalive id={} ttl={} rev={}", r.id, r.ttl, revision(&r.header)),
            Err(s) => error_line(&s),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// LeaseGrant.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_with_a_client_chosen_id_answers_that_id_and_ttl() {
    let t = compare("grant_with_a_client_chosen_id", |ch| async move {
        vec![grant(&ch, 100, 60).await, grant(&ch, 0x7fff_ffff_ffff_ffff, 3600).await]
    })
    .await;
    assert_eq!(t[0], "grant id=100 ttl=60 rev=1 error=\"\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_below_the_minimum_ttl_is_raised_to_it() {
    let t = compare("grant_below_the_minimum_ttl", |ch| async move {
        vec![
            grant(&ch, 1, 1).await,
            grant(&ch, 2, 0).await,
            grant(&ch, 3, -7).await,
            grant(&ch, 4, 2).await,
            grant(&ch, 5, 3).await,
        ]
    })
    .await;
    assert!(t[..4].iter().all(|l| l.contains("ttl=2 ")), "{t:?}");
    assert!(t[4].contains("ttl=3 "), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_above_the_maximum_ttl_is_refused() {
    let t = compare("grant_above_the_maximum_ttl", |ch| async move {
        vec![
            grant(&ch, 1, 9_000_000_001).await,
            grant(&ch, 2, 9_000_000_000).await,
            leases(&ch).await,
        ]
    })
    .await;
    assert_eq!(t[0], "error OutOfRange: etcdserver: too large lease TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_of_an_id_in_use_is_refused() {
    let t = compare("grant_of_an_id_in_use", |ch| async move {
        vec![grant(&ch, 7, 60).await, grant(&ch, 7, 30).await]
    })
    .await;
    assert_eq!(t[1], "error FailedPrecondition: etcdserver: lease already exists");
}

/// etcd 3.4 accepts a negative id (issue 13676: it then lost such a lease on restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_of_a_negative_id_is_accepted_as_etcd_does() {
    let t = compare("grant_of_a_negative_id", |ch| async move {
        vec![
            grant(&ch, -5, 60).await,
            put(&ch, "neg", -5).await,
            time_to_live(&ch, -5, true).await,
            leases(&ch).await,
            revoke(&ch, -5).await,
            get(&ch, "neg").await,
        ]
    })
    .await;
    assert!(t[0].starts_with("grant id=-5 ttl=60"), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_with_id_zero_gets_a_distinct_server_chosen_id() {
    let tenure = Tenure::start().await;
    let ch = tenure.channel(tenure.follower().await).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = lease_client(&ch).lease_grant(pb::LeaseGrantRequest { id: 0, ttl: 60 }).await;
        let r = r.expect("granted").into_inner();
        assert!(r.id > 0, "{r:?}");
        assert_eq!(r.ttl, 60);
        ids.push(r.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    tenure.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// LeaseRevoke.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_deletes_the_attached_keys_in_one_revision() {
    let t = compare("revoke_deletes_the_attached_keys", |ch| async move {
        vec![
            grant(&ch, 10, 60).await,
            put(&ch, "a", 10).await,
            put(&ch, "b", 10).await,
            put(&ch, "c", 0).await,
            revoke(&ch, 10).await,
            get(&ch, "a").await,
            get(&ch, "b").await,
            get(&ch, "c").await,
            time_to_live(&ch, 10, false).await,
        ]
    })
    .await;
    assert_eq!(t[4], "revoke rev=5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_of_an_unknown_lease_is_not_found() {
    let t = compare("revoke_of_an_unknown_lease", |ch| async move {
        vec![
            revoke(&ch, 1234).await,
            grant(&ch, 1234, 60).await,
            revoke(&ch, 1234).await,
            revoke(&ch, 1234).await,
        ]
    })
    .await;
    assert_eq!(t[0], "error NotFound: etcdserver: requested lease not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_with_an_unknown_lease_is_not_found() {
    let t = compare("put_with_an_unknown_lease", |ch| async move {
        vec![put(&ch, "k", 99).await, get(&ch, "k").await]
    })
    .await;
    assert_eq!(t[0], "error NotFound: etcdserver: requested lease not found");
}

// ---------------------------------------------------------------------------------------------
// LeaseKeepAlive.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_answers_the_granted_ttl() {
    let t = compare("keep_alive_answers_the_granted_ttl", |ch| async move {
        let mut t = vec![grant(&ch, 20, 45).await, put(&ch, "k", 20).await];
        t.extend(keep_alive_lines(keep_alive(&ch, &[20]).await));
        t.push(time_to_live(&ch, 20, false).await);
        t
    })
    .await;
    assert_eq!(t[2], "keepalive id=20 ttl=45 rev=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_of_an_unknown_lease_answers_ttl_zero() {
    let t = compare("keep_alive_of_an_unknown_lease", |ch| async move {
        let mut t = vec![put(&ch, "k", 0).await];
        t.extend(keep_alive_lines(keep_alive(&ch, &[4321, 4321]).await));
        t
    })
    .await;
    assert_eq!(t[1], "keepalive id=4321 ttl=0 rev=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_answers_many_requests_on_one_stream_in_order() {
    let t = compare("keep_alive_many_requests", |ch| async move {
        let mut t = vec![grant(&ch, 1, 30).await, grant(&ch, 2, 40).await];
        let ids: Vec<i64> = (0..200).map(|i| [1, 2, 3][i % 3]).collect();
        t.extend(keep_alive_lines(keep_alive(&ch, &ids).await));
        t
    })
    .await;
    assert_eq!(t.len(), 202);
    assert_eq!(t[2], "keepalive id=1 ttl=30 rev=1");
    assert_eq!(t[3], "keepalive id=2 ttl=40 rev=1");
    assert_eq!(t[4], "keepalive id=3 ttl=0 rev=1");
}

// ---------------------------------------------------------------------------------------------
// LeaseTimeToLive and LeaseLeases.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_answers_the_granted_ttl_and_the_keys_when_asked() {
    let t = compare("time_to_live_with_keys", |ch| async move {
        vec![
            grant(&ch, 30, 600).await,
            put(&ch, "b", 30).await,
            put(&ch, "a", 30).await,
            time_to_live(&ch, 30, true).await,
            time_to_live(&ch, 30, false).await,
            // A key moved to no lease leaves the lease's keys.
            put(&ch, "b", 0).await,
            time_to_live(&ch, 30, true).await,
        ]
    })
    .await;
    assert_eq!(t[3], "ttl id=30 ttl=remaining granted=600 keys=[\"a\", \"b\"] rev=3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_of_an_unknown_lease_answers_minus_one() {
    let t = compare("time_to_live_of_an_unknown_lease", |ch| async move {
        vec![put(&ch, "k", 0).await, time_to_live(&ch, 555, true).await]
    })
    .await;
    assert_eq!(t[1], "ttl id=555 ttl=-1 granted=0 keys=[] rev=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_counts_down_on_the_member_asked() {
    let tenure = Tenure::start().await;
    let ch = tenure.channel(tenure.follower().await).await;
    grant(&ch, 1, 30).await;
    let first = lease_client(&ch)
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 1, keys: false })
        .await
        .expect("answered")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = lease_client(&ch)
        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 1, keys: false })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(first.granted_ttl, 30);
    assert!(first.ttl <= 30 && first.ttl >= 28, "{first:?}");
    assert!(later.ttl <= first.ttl - 2, "{first:?} then {later:?}");
    tenure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_lists_every_granted_lease() {
    let t = compare("leases_lists_every_granted_lease", |ch| async move {
        vec![
            leases(&ch).await,
            grant(&ch, 3, 60).await,
            grant(&ch, 1, 60).await,
            grant(&ch, 2, 60).await,
            leases(&ch).await,
            revoke(&ch, 1).await,
            leases(&ch).await,
        ]
    })
    .await;
    assert_eq!(t[4], "leases [1, 2, 3] rev=1");
}

// ---------------------------------------------------------------------------------------------
// Expiry.

/// Polls `key` on `ch` until it is gone; returns how long that took.
async fn until_gone(ch: &Channel, key: &str, patience: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let req = pb::RangeRequest {
            key: bytes::Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        let r = kv_client(ch).range(req).await.expect("read").into_inner();
        if r.kvs.is_empty() {
            return start.elapsed();
        }
        assert!(start.elapsed() < patience, "{key} still there after {patience:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_key_disappears_after_the_ttl_once_keep_alives_stop() {
    let tenure = Tenure::start().await;
    let ch = tenure.channel(tenure.follower().await).await;
    assert_eq!(grant(&ch, 1, 2).await, "grant id=1 ttl=2 rev=1 error=\"\"");
    put(&ch, "leased", 1).await;
    put(&ch, "kept", 0).await;
    let answers = keep_alive(&ch, &[1]).await;
    assert_eq!(answers[0].as_ref().expect("renewed").ttl, 2);
    let took = until_gone(&ch, "leased", PATIENCE).await;
    // Not before the TTL from the last renewal (the renewal was answered before `took` began).
    assert!(took >= Duration::from_millis(1900), "gone after {took:?}");
    assert_eq!(get(&ch, "kept").await, "get kept rev=4 [\"kept@3 lease=0\"]");
    assert!(time_to_live(&ch, 1, false).await.contains("ttl=-1"));
    // Every member deleted it at the same revision.
    for i in 0..3 {
        let ch = tenure.channel(i).await;
        assert_eq!(get(&ch, "leased").await, "get leased rev=4 []");
    }
    tenure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leased_key_stays_while_keep_alives_run() {
    let tenure = Tenure::start().await;
    let ch = tenure.channel(tenure.follower().await).await;
    grant(&ch, 1, 2).await;
    put(&ch, "leased", 1).await;
    // One stream renewing every 500 ms for four TTLs.
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(pb::LeaseKeepAliveRequest { id: 1 }).expect("queued");
    let mut responses = lease_client(&ch)
        .lease_keep_alive(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let r = responses.message().await.expect("answered").expect("open");
        assert_eq!(r.ttl, 2, "{r:?}");
        assert_eq!(get(&ch, "leased").await, "get leased rev=2 [\"leased@2 lease=1\"]");
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(pb::LeaseKeepAliveRequest { id: 1 }).expect("queued");
    }
    drop(tx);
    until_gone(&ch, "leased", PATIENCE).await;
    tenure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_metrics_count_grants_revokes_renewals_and_ttls() {
    let tenure = Tenure::start().await;
    let f = tenure.follower().await;
    let ch = tenure.channel(f).await;
    grant(&ch, 1, 60).await;
    grant(&ch, 2, 5).await;
    keep_alive(&ch, &[1, 1, 1]).await;
    revoke(&ch, 2).await;
    let text = tenure.members[f].as_ref().expect("running").handle().metrics().render();
    for line in [
        "etcd_debugging_lease_granted_total 2\n",
        "etcd_debugging_lease_revoked_total 1\n",
        "etcd_debugging_lease_renewed_total 3\n",
        "etcd_debugging_lease_ttl_total_count 2\n",
        "etcd_debugging_lease_ttl_total_sum 65.0\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    tenure.shutdown().await;
}

#[test]
fn transcripts_that_differ_in_a_ttl_or_an_error_are_not_equal() {
    let a: Transcript = vec!["grant id=1 ttl=2 rev=1 error=\"\"".into()];
    let b: Transcript = vec!["grant id=1 ttl=3 rev=1 error=\"\"".into()];
    assert_ne!(a, b);
    let s = tonic::Status::not_found("etcdserver: requested lease not found");
    assert_eq!(error_line(&s), "error NotFound: etcdserver: requested lease not found");
}

/// `tenure lease ...` prints what etcdctl prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenure_lease_subcommands_print_as_etcdctl_does() {
    let tenure = Tenure::start().await;
    let url = tenure.url(tenure.follower().await);
    let run = |args: Vec<String>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenure"))
                    .args(&args)
                    .args(["--endpoints", &url])
                    .output()
                    .expect("runs tenure");
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                (out.status.success(), text)
            })
            .await
            .expect("task")
        }
    };
    let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let (ok, granted) = run(args("lease grant 1")).await;
    assert!(ok && granted.ends_with(" granted with TTL(2s)\n"), "{granted}");
    let id = granted.split(' ').nth(1).expect("an id").to_string();
    assert_eq!(id.len(), 16, "{granted}");
    let lease = i64::from_str_radix(&id, 16).expect("hex");
    let ch = tenure.channel(0).await;
    let long = grant(&ch, 0x2a, 600).await;
    assert!(long.starts_with("grant id=42 "), "{long}");
    put(&ch, "k", 0x2a).await;
    assert_eq!(
        run(args("lease keep-alive --once 000000000000002a")).await,
        (true, "lease 000000000000002a keepalived with TTL(600)\n".to_string())
    );
    let (ok, ttl) = run(args("lease timetolive --keys 2a")).await;
    assert!(ok && ttl.starts_with("lease 000000000000002a granted with TTL(600s), remaining("));
    assert!(ttl.ends_with("s), attached keys([k])\n"), "{ttl}");
    let mut ids = [lease, 0x2a];
    ids.sort_unstable();
    assert_eq!(
        run(args("lease list")).await,
        (true, format!("found 2 leases\n{:016x}\n{:016x}\n", ids[0], ids[1]))
    );
    assert_eq!(
        run(args("lease revoke 2a")).await,
        (true, "lease 000000000000002a revoked\n".to_string())
    );
    assert_eq!(
        run(args("lease timetolive 2a")).await,
        (true, "lease 000000000000002a already expired\n".to_string())
    );
    let (ok, err) = run(args("lease revoke 2a")).await;
    assert!(!ok && err.contains("etcdserver: requested lease not found"), "{err}");
    // Keep-alive of a lease that is gone says so and ends.
    run(args(&format!("lease revoke {id}"))).await;
    assert_eq!(
        run(args(&format!("lease keep-alive {id}"))).await,
        (true, format!("lease {id} expired or revoked.\n"))
    );
    tenure.shutdown().await;
}
