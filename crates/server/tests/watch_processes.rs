//! Watch against three real `tenure serve` processes: a watcher on a follower keeps receiving
//! every event, in order and exactly once, while the leader is killed with SIGKILL and started
//! again and writes go on through the other members (issue 12).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Plan, Server};
use tenure_server::pb::etcdserverpb as pb;
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(30);

/// The leader a member names in `Maintenance.Status` and the member's own id, if it answers
/// within half a second.
async fn status(url: &str) -> Option<(u64, u64)> {
    let ask = async {
        let mut c =
            pb::maintenance_client::MaintenanceClient::connect(url.to_string()).await.ok()?;
        let r = c.status(pb::StatusRequest {}).await.ok()?.into_inner();
        Some((r.header?.member_id, r.leader))
    };
    tokio::time::timeout(Duration::from_millis(500), ask).await.ok().flatten()
}

/// The index of the member every running member names as leader.
async fn leader(plan: &Plan, up: &[usize]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut seen = Vec::new();
        for &i in up {
            seen.push(status(&plan.clients[i]).await);
        }
        let leaders: Vec<u64> = seen.iter().flatten().map(|(_, l)| *l).collect();
        let agreed =
            leaders.len() == up.len() && leaders.iter().all(|l| *l != 0 && *l == leaders[0]);
        if agreed
            && let Some(pos) = seen.iter().position(|s| s.is_some_and(|(id, _)| id == leaders[0]))
        {
            return up[pos];
        }
        assert!(Instant::now() < deadline, "no agreed leader among {up:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts `key` through the members `via` in turn until one succeeds; returns the revision.
async fn put(plan: &Plan, via: &[usize], key: &str) -> i64 {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    for attempt in 0.. {
        assert!(Instant::now() < deadline, "put {key} never succeeded: {last}");
        let url = &plan.clients[via[attempt % via.len()]];
        let request = pb::PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        let attempt = async {
            let mut kv = pb::kv_client::KvClient::connect(url.to_string())
                .await
                .map_err(|e| e.to_string())?;
            kv.put(request).await.map_err(|s| s.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(r)) => return r.into_inner().header.expect("header").revision,
            Ok(Err(e)) => last = e,
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_follower_sees_every_event_once_in_order_through_a_leader_kill_and_restart()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("wp");
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(plan.start(i, dir.path()))).collect();
    let first_leader = leader(&plan, &[0, 1, 2]).await;
    let watched = (first_leader + 1) % 3;
    let other = (first_leader + 2) % 3;

    // The watch stream stays open for the whole test: its request side never closes.
    let (requests, rx) = mpsc::unbounded_channel();
    let create = pb::WatchCreateRequest {
        key: Bytes::from_static(b"wp/"),
        range_end: Bytes::from_static(b"wp0"),
        ..Default::default()
    };
    requests
        .send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        })
        .expect("queued");
    let mut client = pb::watch_client::WatchClient::connect(plan.clients[watched].clone())
        .await
        .expect("connects to the follower");
    let mut events = client
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("watch opens")
        .into_inner();
    let created = events.message().await.expect("created").expect("a response");
    assert!(created.created, "{created:?}");

    // Writes through the leader and the other follower, never through the watched member.
    let mut written = Vec::new();
    for i in 0..30 {
        written.push((
            format!("wp/{i:03}"),
            put(&plan, &[first_leader, other], &format!("wp/{i:03}")).await,
        ));
    }
    servers[first_leader].take().expect("running").kill();
    for i in 30..60 {
        written.push((format!("wp/{i:03}"), put(&plan, &[other], &format!("wp/{i:03}")).await));
    }
    servers[first_leader] = Some(plan.start(first_leader, dir.path()));
    for i in 60..90 {
        written.push((
            format!("wp/{i:03}"),
            put(&plan, &[other, first_leader], &format!("wp/{i:03}")).await,
        ));
    }

    // Every acknowledged put arrives, each revision once and in increasing order. A put whose
    // answer was lost and was sent again may add a revision of its own; that is an event too.
    let last = written.iter().map(|(_, r)| *r).max().expect("puts");
    let mut seen: Vec<(i64, String)> = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while seen.last().is_none_or(|(r, _)| *r < last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, events.message())
            .await
            .unwrap_or_else(|_| panic!("events stopped at {:?} of {last}", seen.last()))
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        assert!(!r.canceled, "the watch was cancelled: {r:?}");
        for e in r.events {
            let kv = e.kv.expect("kv");
            seen.push((kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned()));
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions strictly increase (ordered, no duplicates): {seen:?}"
    );
    for (key, revision) in &written {
        assert!(
            seen.contains(&(*revision, key.clone())),
            "the put of {key} at revision {revision} was delivered: {seen:?}"
        );
    }
    drop(requests);
    for s in servers.into_iter().flatten() {
        s.terminate();
    }
}
