//! Seed scenario S8 against real members: a minority partition made by a fault proxy.
//!
//! Five in-process members, each behind a small TCP proxy on its peer port: every member's
//! `--initial-cluster` names the proxies, so every Raft message goes through one. A proxy
//! learns who sent a connection from the first frame header and closes the connection when
//! that link is cut (the sender reconnects and is cut again until the link heals), which is
//! a network that drops everything on the link.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::cli::dev;
use tenure_server::cli::{ServeArgs, ServeConfig};
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;
use tenure_server::peer::wire::{FrameHeader, WireError};
use tenure_server::runtime::NodeStatus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

mod common;

/// How long anything may take before the test fails (generous: machines are shared).
const PATIENCE: Duration = Duration::from_secs(30);

const MEMBERS: usize = 5;

/// Links that drop everything: (from member id, to member id).
type Cuts = Arc<Mutex<BTreeSet<(u64, u64)>>>;

/// Accepts connections meant for member `to` and forwards them to `target` (its real peer
/// listener) unless their link is cut.
async fn proxy(listener: TcpListener, target: String, to: u64, cuts: Cuts) {
    let mut pipes = tokio::task::JoinSet::new();
    loop {
        while pipes.try_join_next().is_some() {}
        if let Ok((inbound, _)) = listener.accept().await {
            pipes.spawn(pipe(inbound, target.clone(), to, Arc::clone(&cuts)));
        }
    }
}

/// Copies one peer connection until either side closes or the link is cut: the dialler's
/// frames forward, and the listener's keepalives back, so that the dialler keeps hearing its
/// peer while the link is up.
async fn pipe(inbound: TcpStream, target: String, to: u64, cuts: Cuts) {
    let Ok(outbound) = TcpStream::connect(&target).await else { return };
    let (mut inbound, mut inbound_back) = inbound.into_split();
    let (mut outbound_back, mut outbound) = outbound.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut outbound_back, &mut inbound_back).await;
    });
    forward(&mut inbound, &mut outbound, to, &cuts).await;
    back.abort();
}

async fn forward(
    inbound: &mut tokio::net::tcp::OwnedReadHalf,
    outbound: &mut tokio::net::tcp::OwnedWriteHalf,
    to: u64,
    cuts: &Cuts,
) {
    let mut from = None;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match inbound.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = match from {
            Some(_) => &buf[..n],
            None => {
                head.extend_from_slice(&buf[..n]);
                match FrameHeader::parse(&head) {
                    Ok(h) => from = Some(h.from_member),
                    Err(WireError::Truncated { .. }) => continue,
                    // Not a peer frame: pass it on and let the member refuse it.
                    Err(_) => from = Some(0),
                }
                &head[..]
            }
        };
        let sender = from.expect("known once a chunk is forwarded");
        if cuts.lock().unwrap().contains(&(sender, to)) {
            return;
        }
        if outbound.write_all(chunk).await.is_err() {
            return;
        }
    }
}

struct Cluster {
    configs: Vec<ServeConfig>,
    members: Vec<Member>,
    proxies: Vec<JoinHandle<()>>,
    cuts: Cuts,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        // The members bind these themselves; the proxies keep their listeners.
        let free = common::free_ports(2 * MEMBERS);
        let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
        let proxy_listeners: Vec<std::net::TcpListener> = (0..MEMBERS)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let name = |i: usize| format!("p{}", i + 1);
        let initial_cluster = proxy_listeners
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}=http://127.0.0.1:{}", name(i), port(l)))
            .collect::<Vec<_>>()
            .join(",");
        let configs: Vec<ServeConfig> = (0..MEMBERS)
            .map(|i| {
                let client_url = format!("http://127.0.0.1:{}", free[2 * i]);
                let args = ServeArgs {
                    name: name(i),
                    data_dir: Some(dir.path().join(name(i))),
                    listen_client_urls: Some(client_url.clone()),
                    advertise_client_urls: Some(client_url),
                    listen_peer_urls: Some(format!("http://127.0.0.1:{}", free[2 * i + 1])),
                    initial_advertise_peer_urls: Some(format!(
                        "http://127.0.0.1:{}",
                        port(&proxy_listeners[i])
                    )),
                    initial_cluster: Some(initial_cluster.clone()),
                    initial_cluster_state: "new".to_string(),
                    initial_cluster_token: "tenure-s8".to_string(),
                    snapshot_count: 100_000,
                    snapshot_catchup_entries: 5_000,
                    heartbeat_interval: 50,
                    election_timeout: 500,
                    max_request_bytes: 1536 * 1024,
                    max_txn_ops: 128,
                    experimental_watch_progress_notify_interval: std::time::Duration::from_secs(
                        600,
                    ),
                    experimental_lease_checkpoint_interval: std::time::Duration::from_secs(300),
                    experimental_enable_lease_checkpoint: true,
                    max_concurrent_requests: tenure_server::api::REQUESTS_IN_FLIGHT_MAX,
                    auth_token: "simple".to_string(),
                    auth_token_ttl: tenure_server::api::auth::TOKEN_TTL_SECS_DEFAULT,
                    bcrypt_cost: tenure_server::api::auth::BCRYPT_COST_DEFAULT,
                    ..ServeArgs::default()
                };
                ServeConfig::from_args(&args).expect("valid config")
            })
            .collect();
        let cuts: Cuts = Arc::default();
        let mut proxies = Vec::new();
        for (i, l) in proxy_listeners.into_iter().enumerate() {
            l.set_nonblocking(true).expect("nonblocking");
            let l = TcpListener::from_std(l).expect("tokio listener");
            let target = configs[i].listen_peer_urls[0].authority();
            let to = configs[i].member_id;
            proxies.push(tokio::spawn(proxy(l, target, to, Arc::clone(&cuts))));
        }
        let members = dev::start(&configs).await.expect("cluster starts");
        Cluster { configs, members, proxies, cuts, _dir: dir }
    }

    fn id(&self, i: usize) -> u64 {
        self.configs[i].member_id
    }

    fn status(&self, i: usize) -> NodeStatus {
        self.members[i].handle().status()
    }

    /// Cuts every link between `side` and the other members, both ways.
    fn partition(&self, side: &[usize]) {
        let mut cuts = self.cuts.lock().unwrap();
        for &a in side {
            for b in (0..MEMBERS).filter(|b| !side.contains(b)) {
                cuts.insert((self.id(a), self.id(b)));
                cuts.insert((self.id(b), self.id(a)));
            }
        }
    }

    fn heal(&self) {
        self.cuts.lock().unwrap().clear();
    }

    /// Waits until exactly one of `among` leads and all of `among` know it; returns it.
    async fn leader(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let st: Vec<(usize, NodeStatus)> = among.iter().map(|&i| (i, self.status(i))).collect();
            let leaders: Vec<usize> =
                st.iter().filter(|(_, s)| s.is_leader).map(|(i, _)| *i).collect();
            if let [l] = leaders[..]
                && st.iter().all(|(_, s)| s.leader == Some(self.id(l)))
            {
                return l;
            }
            assert!(Instant::now() < deadline, "no single leader among {among:?}: {st:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn kv(&self, i: usize) -> pb::kv_client::KvClient<tonic::transport::Channel> {
        let url = self.configs[i].advertise_client_urls[0].to_string();
        pb::kv_client::KvClient::connect(url).await.expect("connect")
    }

    async fn shutdown(self) {
        for m in self.members {
            m.shutdown().await.expect("clean shutdown");
        }
        for p in self.proxies {
            p.abort();
            let _ = p.await;
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

/// Puts, retrying while the member answers `Unavailable` (no leader yet, leader changed).
async fn put_retrying(
    kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>,
    req: pb::PutRequest,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match kv.put(req.clone()).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("put failed: {s}"),
        }
    }
}

/// Every key in [a, z) with its value and modification revision, read linearizably.
async fn everything(
    kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>,
) -> Vec<(String, String, i64)> {
    let deadline = Instant::now() + PATIENCE;
    let req = pb::RangeRequest {
        key: Bytes::from_static(b"a"),
        range_end: Bytes::from_static(b"z"),
        ..Default::default()
    };
    loop {
        match kv.range(req.clone()).await {
            Ok(r) => {
                return r
                    .into_inner()
                    .kvs
                    .iter()
                    .map(|kv| {
                        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                        (s(&kv.key), s(&kv.value), kv.mod_revision)
                    })
                    .collect();
            }
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("read failed: {s}"),
        }
    }
}

/// The errors etcd gives a write that could not be committed.
const ETCD_WRITE_FAILURES: [&str; 4] = [
    "etcdserver: request timed out",
    "etcdserver: leader changed",
    "etcdserver: no leader",
    "etcdserver: not leader",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s8_minority_leader_cannot_commit_and_its_write_is_gone_after_heal() {
    let cluster = Cluster::start().await;
    let all: Vec<usize> = (0..MEMBERS).collect();
    let old = cluster.leader(&all).await;
    let old_term = cluster.status(old).term;
    let mut kv_old = cluster.kv(old).await;
    put_retrying(&mut kv_old, put("before", "1")).await;

    // The old leader and one follower on one side, the other three on the other.
    let buddy = (old + 1) % MEMBERS;
    let majority: Vec<usize> = all.iter().copied().filter(|&i| i != old && i != buddy).collect();
    cluster.partition(&[old, buddy]);

    // A write to the old leader: it may append it, but two of five cannot commit it.
    let doomed = tokio::spawn(async move {
        tokio::time::timeout(PATIENCE, kv_old.put(put("doomed", "x"))).await
    });

    let new = cluster.leader(&majority).await;
    assert!(cluster.status(new).term > old_term);
    let mut kv_new = cluster.kv(new).await;
    put_retrying(&mut kv_new, put("after", "2")).await;

    // The doomed write ends before the heal, and never in success.
    match doomed.await.expect("join") {
        Err(_) => {} // still unanswered after PATIENCE: a timeout, as the client sees it
        Ok(Ok(r)) => panic!("a minority leader committed a write: {r:?}"),
        Ok(Err(s)) => {
            assert!(ETCD_WRITE_FAILURES.contains(&s.message()), "not etcd's error: {s}");
            assert!(
                matches!(s.code(), tonic::Code::Unavailable | tonic::Code::FailedPrecondition),
                "{s}"
            );
        }
    }

    // The old leader appended the doomed write but never committed it.
    let st = cluster.status(old);
    assert!(st.last_index > st.committed, "no uncommitted entry on the old leader: {st:?}");

    cluster.heal();
    // The old leader steps down (it hears the higher term) and follows the new leader.
    let after_heal = cluster.leader(&all).await;
    assert_ne!(after_heal, old, "the old leader still leads after the heal");
    assert!(!cluster.status(old).is_leader);

    // Every member agrees, the old leader included: the committed writes, with the same
    // revisions, and no trace of the uncommitted one.
    let mut views = Vec::new();
    for i in 0..MEMBERS {
        let mut kv = cluster.kv(i).await;
        views.push(everything(&mut kv).await);
    }
    let keys: Vec<(&str, &str)> =
        views[0].iter().map(|(k, v, _)| (k.as_str(), v.as_str())).collect();
    assert_eq!(keys, [("after", "2"), ("before", "1")], "{views:?}");
    assert!(views.iter().all(|v| *v == views[0]), "members disagree: {views:?}");
    cluster.shutdown().await;
}
