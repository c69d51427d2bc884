//! Watch against three real `tenure serve` processes: a watcher on a follower keeps receiving
//! every event, in order and exactly once, while the leader is killed with SIGKILL and started
//! again and writes go on through the other members, and while its own member is cut off from
//! the others by a fault proxy (`common::isolate`) and healed; a `hasleader=true` watcher on
//! that member is closed with "etcdserver: no leader" during the partition (issue 12).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Plan, Server};
use tenure_server::pb::etcdserverpb as pb;
use tokio::sync::mpsc;

const PATIENCE: Duration = Duration::from_secs(30);

/// The member every member of `up` names as leader (see [`common::agreed_leader`]).
async fn leader(plan: &Plan, up: &[usize]) -> usize {
    common::agreed_leader(plan, up, PATIENCE).await
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

/// Opens a watch stream on `url` with one watcher on the `wq/` prefix; `require_leader` adds
/// clientv3's `WithRequireLeader` metadata (`hasleader=true`). Returns the request side (the
/// stream stays open while it lives) and the responses after the created one.
async fn watch_prefix(
    url: &str,
    require_leader: bool,
) -> (mpsc::UnboundedSender<pb::WatchRequest>, tonic::Streaming<pb::WatchResponse>) {
    let (requests, rx) = mpsc::unbounded_channel();
    let create = pb::WatchCreateRequest {
        key: Bytes::from_static(b"wq/"),
        range_end: Bytes::from_static(b"wq0"),
        ..Default::default()
    };
    requests
        .send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        })
        .expect("queued");
    let mut request = tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    if require_leader {
        request.metadata_mut().insert("hasleader", "true".parse().expect("ascii"));
    }
    let mut client =
        pb::watch_client::WatchClient::connect(url.to_string()).await.expect("connects");
    let mut events = client.watch(request).await.expect("watch opens").into_inner();
    let created = events.message().await.expect("created").expect("a response");
    assert!(created.created, "{created:?}");
    (requests, events)
}

/// Reads `events` until one at revision `last` or later: (revision, key) of each event.
async fn events_through(
    events: &mut tonic::Streaming<pb::WatchResponse>,
    last: i64,
) -> Vec<(i64, String)> {
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
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_partitioned_follower_gets_every_event_once_after_the_heal_and_a_hasleader_one_is_closed()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("wi");
    // Every member's peer traffic goes through a proxy on the peer URL the others know.
    let real = common::free_ports(3);
    let servers: Vec<Server> = (0..3)
        .map(|i| {
            let listen = format!("http://127.0.0.1:{}", real[i]);
            plan.start_behind_proxy(i, dir.path(), &listen, &[])
        })
        .collect();
    let mut ids = Vec::new();
    for i in 0..3 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((id, _)) = common::member_status(&plan.clients[i]).await {
                ids.push(id);
                break;
            }
            assert!(Instant::now() < deadline, "member {i} never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let isolation = common::isolate::Isolation::default();
    let mut proxies = Vec::new();
    for i in 0..3 {
        let listener = tokio::net::TcpListener::bind(plan.peers[i].trim_start_matches("http://"))
            .await
            .expect("bind proxy");
        let target = format!("127.0.0.1:{}", real[i]);
        proxies.push(common::isolate::spawn(listener, target, ids[i], isolation.clone()));
    }
    let first_leader = leader(&plan, &[0, 1, 2]).await;
    let watched = (first_leader + 1) % 3;
    let others = [first_leader, (first_leader + 2) % 3];

    let (plain_requests, mut plain) = watch_prefix(&plan.clients[watched], false).await;
    let (leader_requests, mut requiring) = watch_prefix(&plan.clients[watched], true).await;
    let mut written = Vec::new();
    for i in 0..20 {
        let key = format!("wq/{i:03}");
        written.push((put(&plan, &others, &key).await, key));
    }

    // The watched member is cut off; the other two go on committing.
    isolation.isolate(ids[watched]);
    let closed = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            match tokio::time::timeout(PATIENCE, requiring.message()).await {
                Ok(Ok(Some(r))) => assert!(!r.canceled, "cancelled instead of closed: {r:?}"),
                Ok(Ok(None)) => panic!("the hasleader stream ended without an error"),
                Ok(Err(s)) => return (s, started.elapsed()),
                Err(_) => panic!("the hasleader stream stayed open through the partition"),
            }
        }
    });
    for i in 20..50 {
        let key = format!("wq/{i:03}");
        written.push((put(&plan, &others, &key).await, key));
    }
    let (status, after) = closed.await.expect("joins");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader"),
        "{status:?}"
    );
    eprintln!("the hasleader stream was closed {after:?} into the partition");
    assert!(!has_leader(&plan, watched).await, "the member was still cut off when it closed");
    isolation.heal();
    for i in 50..80 {
        let key = format!("wq/{i:03}");
        written.push((put(&plan, &[first_leader, watched, others[1]], &key).await, key));
    }

    // Every acknowledged put, each revision once and in order; nothing else but what the
    // cluster committed (a retried put may have committed twice: the reference says so).
    let last = written.iter().map(|(r, _)| *r).max().expect("puts");
    let seen = events_through(&mut plain, last).await;
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "revisions strictly increase (ordered, no duplicates): {seen:?}"
    );
    for put in &written {
        assert!(seen.contains(put), "the put of {put:?} was delivered: {seen:?}");
    }
    let first = seen.first().expect("events").0;
    let reference = {
        let (_r, mut fresh) = {
            let url = &plan.clients[first_leader];
            let (requests, rx) = mpsc::unbounded_channel();
            let create = pb::WatchCreateRequest {
                key: Bytes::from_static(b"wq/"),
                range_end: Bytes::from_static(b"wq0"),
                start_revision: first,
                ..Default::default()
            };
            let union = pb::watch_request::RequestUnion::CreateRequest(create);
            requests.send(pb::WatchRequest { request_union: Some(union) }).expect("queued");
            let mut client =
                pb::watch_client::WatchClient::connect(url.clone()).await.expect("connects");
            let rx = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            (requests, client.watch(rx).await.expect("opens").into_inner())
        };
        let created = fresh.message().await.expect("created").expect("a response");
        assert!(created.created);
        events_through(&mut fresh, last).await
    };
    assert_eq!(seen, reference, "the watcher saw the committed history, exactly");
    drop((plain_requests, leader_requests));
    for p in proxies {
        p.abort();
    }
    for s in servers {
        s.terminate();
    }
}

/// Whether member `i` names a leader (it cannot while it is cut off from the others).
async fn has_leader(plan: &Plan, i: usize) -> bool {
    common::member_status(&plan.clients[i]).await.is_some_and(|(_, leader)| leader != 0)
}
