//! Peer failures against three real `tenure serve` processes (heartbeat 50 ms, election
//! timeout 500 ms): a follower killed with SIGKILL, also right after a partition between the
//! two others healed, and a leader stopped with SIGSTOP for three seconds.
//!
//! Every member's peer traffic goes through a proxy in this test (its `--initial-cluster` names
//! the proxies), which can cut a link both ways the way a partition looks to TCP: the bytes
//! wait and the connection stays open. The proxy learns who dialled from the opening frame.
//!
//! Assertions are about outcomes (terms and leaders); the times are printed (see
//! BENCHMARKS.md, "Issue 11: peer failure detection").

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Plan, Server};
use tenure_server::pb::etcdserverpb as pb;
use tenure_server::peer::wire::{FrameHeader, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long anything may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// How long the survivors are watched for an election after a failure: six election timeouts.
const WATCH: Duration = Duration::from_secs(3);

/// Cut links: (dialling member id, index of the member dialled).
type Cuts = Arc<Mutex<BTreeSet<(u64, usize)>>>;

/// Forwards every connection to member `to`'s real peer listener at `target`, both ways,
/// holding the bytes of a cut link until it heals.
async fn proxy(listener: TcpListener, target: String, to: usize, cuts: Cuts) {
    let mut pipes = tokio::task::JoinSet::new();
    loop {
        while pipes.try_join_next().is_some() {}
        if let Ok((inbound, _)) = listener.accept().await {
            pipes.spawn(pipe(inbound, target.clone(), to, Arc::clone(&cuts)));
        }
    }
}

async fn pipe(inbound: TcpStream, target: String, to: usize, cuts: Cuts) {
    let Ok(outbound) = TcpStream::connect(&target).await else { return };
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = outbound.into_split();
    // The dialler opens with a frame header naming it; a snapshot connection (another
    // magic) is never cut.
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let from = loop {
        let n = match in_r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        match FrameHeader::parse(&head) {
            Ok(h) => break h.from_member,
            Err(WireError::Truncated { .. }) => continue,
            Err(_) => break 0,
        }
    };
    held(&cuts, from, to).await;
    if out_w.write_all(&head).await.is_err() {
        return;
    }
    let back_cuts = Arc::clone(&cuts);
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            held(&back_cuts, from, to).await;
            let n = match out_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            held(&back_cuts, from, to).await;
            if in_w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    loop {
        held(&cuts, from, to).await;
        let n = match in_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        held(&cuts, from, to).await;
        if out_w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    back.abort();
}

/// Returns once the link from `from` to member `to` is not cut.
async fn held(cuts: &Cuts, from: u64, to: usize) {
    while cuts.lock().unwrap().contains(&(from, to)) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a member's `Maintenance.Status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    id: u64,
    term: u64,
    leader: u64,
}

/// Member status at `url`, or `None` if it does not answer within half a second (stopped,
/// killed, or not listening yet).
async fn status(url: &str) -> Option<Seen> {
    let ask = async {
        let mut c =
            pb::maintenance_client::MaintenanceClient::connect(url.to_string()).await.ok()?;
        let r = c.status(pb::StatusRequest {}).await.ok()?.into_inner();
        let header = r.header?;
        Some(Seen { id: header.member_id, term: r.raft_term, leader: r.leader })
    };
    tokio::time::timeout(Duration::from_millis(500), ask).await.ok().flatten()
}

struct Cluster {
    plan: Plan,
    servers: Vec<Option<Server>>,
    ids: Vec<u64>,
    cuts: Cuts,
    proxies: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(prefix: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let plan = Plan::new(prefix);
        let real = common::free_ports(3);
        let cuts: Cuts = Arc::default();
        let mut proxies = Vec::new();
        for (i, url) in plan.peers.iter().enumerate() {
            let listener =
                TcpListener::bind(url.trim_start_matches("http://")).await.expect("bind proxy");
            let target = format!("127.0.0.1:{}", real[i]);
            proxies.push(tokio::spawn(proxy(listener, target, i, Arc::clone(&cuts))));
        }
        let servers = (0..3)
            .map(|i| {
                let listen = format!("http://127.0.0.1:{}", real[i]);
                Some(plan.start_behind_proxy(i, dir.path(), &listen, &[]))
            })
            .collect();
        let mut cluster = Cluster { plan, servers, ids: Vec::new(), cuts, proxies, _dir: dir };
        for i in 0..3 {
            let deadline = Instant::now() + PATIENCE;
            loop {
                if let Some(s) = cluster.status(i).await {
                    cluster.ids.push(s.id);
                    break;
                }
                assert!(Instant::now() < deadline, "member {i} never answered");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    async fn status(&self, i: usize) -> Option<Seen> {
        status(&self.plan.clients[i]).await
    }

    /// Waits until every member of `among` answers with the same leader, one of `among`, and
    /// the same term; returns the leader's index and the term.
    async fn stable_leader(&self, among: &[usize]) -> (usize, u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut seen = Vec::new();
            for &i in among {
                seen.push(self.status(i).await);
            }
            if let Some(Some(first)) = seen.first()
                && let Some(l) = among.iter().copied().find(|&i| self.ids[i] == first.leader)
                && seen
                    .iter()
                    .all(|s| s.is_some_and(|s| s.leader == first.leader && s.term == first.term))
            {
                return (l, first.term);
            }
            assert!(Instant::now() < deadline, "no stable leader among {among:?}: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Watches `among` for `WATCH`: returns every answer that differs from `expected`.
    async fn watch(&self, among: &[usize], expected: (usize, u64)) -> Vec<(usize, Seen)> {
        let (leader, term) = expected;
        let until = Instant::now() + WATCH;
        let mut changes = Vec::new();
        while Instant::now() < until {
            for &i in among {
                if let Some(s) = self.status(i).await
                    && (s.term != term || s.leader != self.ids[leader])
                {
                    changes.push((i, s));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        changes
    }

    /// Cuts the links between members `a` and `b`, both ways.
    fn partition(&self, a: usize, b: usize) {
        let mut cuts = self.cuts.lock().unwrap();
        cuts.insert((self.ids[a], b));
        cuts.insert((self.ids[b], a));
    }

    fn heal(&self) {
        self.cuts.lock().unwrap().clear();
    }

    fn server(&self, i: usize) -> &Server {
        self.servers[i].as_ref().expect("running")
    }

    fn kill(&mut self, i: usize) {
        self.servers[i].take().expect("running").kill();
    }

    fn stop(mut self) {
        for s in self.servers.drain(..).flatten() {
            s.terminate();
        }
        for p in &self.proxies {
            p.abort();
        }
    }
}

/// Writes in a loop through etcd-client to one member, recording when each write completed.
struct Writer {
    task: tokio::task::JoinHandle<Vec<Instant>>,
    stop: Arc<AtomicBool>,
}

impl Writer {
    fn start(url: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut done = Vec::new();
            let mut client = None;
            let mut n = 0u64;
            while !stopping.load(Ordering::SeqCst) {
                if client.is_none() {
                    client = etcd_client::Client::connect([url.as_str()], None).await.ok();
                }
                let Some(c) = client.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                n += 1;
                let put = c.put("writer", n.to_string(), None);
                match tokio::time::timeout(Duration::from_secs(2), put).await {
                    Ok(Ok(_)) => done.push(Instant::now()),
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            done
        });
        Writer { task, stop }
    }

    /// Stops and returns the number of writes and the longest time without a completed
    /// write between `from` and `to`.
    async fn finish(self, from: Instant, to: Instant) -> (usize, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let done = self.task.await.expect("writer");
        let mut marks: Vec<Instant> =
            done.iter().copied().filter(|t| *t >= from && *t <= to).collect();
        marks.insert(0, from);
        marks.push(to);
        let longest = marks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        (done.len(), longest)
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_causes_no_election() {
    let mut cluster = Cluster::start("kf").await;
    let (leader, term) = cluster.stable_leader(&[0, 1, 2]).await;
    let writer = Writer::start(cluster.plan.clients[leader].clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (follower, other) = ((leader + 1) % 3, (leader + 2) % 3);
    let killed_at = Instant::now();
    cluster.kill(follower);
    let changes = cluster.watch(&[leader, other], (leader, term)).await;
    let (writes, stall) = writer.finish(killed_at, Instant::now()).await;
    println!(
        "follower killed: {writes} writes, longest stretch without a completed write after the \
         kill {} ms; term {term} before, changes seen: {changes:?}",
        ms(stall)
    );
    assert!(changes.is_empty(), "term or leader changed after a follower was killed: {changes:?}");
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_right_after_a_partition_heals_causes_no_election() {
    let mut cluster = Cluster::start("kh").await;
    let (leader, term_before) = cluster.stable_leader(&[0, 1, 2]).await;
    let began = Instant::now();
    let writer = Writer::start(cluster.plan.clients[leader].clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The leader and one follower cannot reach each other for four election timeouts; the
    // other follower still reaches both.
    let healed_one = (leader + 1) % 3;
    cluster.partition(leader, healed_one);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.heal();
    let healed_at = Instant::now();
    // Only the partition itself may have changed the term (it should not have, but that is
    // the election layer's business); the kill must not change it again.
    let partitioned = [leader, healed_one];
    let (leader, term) = cluster.stable_leader(&[0, 1, 2]).await;
    let stable_after = healed_at.elapsed();
    // Kill the member that was never cut off, so that the leader's quorum needs the link
    // that just healed.
    let victim = (0..3)
        .find(|&i| i != leader && !partitioned.contains(&i))
        .unwrap_or_else(|| (0..3).find(|&i| i != leader).expect("a follower"));
    tokio::time::sleep(Duration::from_millis(250).saturating_sub(healed_at.elapsed())).await;
    let killed_at = Instant::now();
    cluster.kill(victim);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let changes = cluster.watch(&survivors, (leader, term)).await;
    let (writes, stall) = writer.finish(began, Instant::now()).await;
    println!(
        "follower killed {} ms after the heal (cluster agreed {} ms after it): {writes} \
         writes, longest stretch without a completed write over the whole run {} ms (2 s of \
         it partitioned); term {term_before} before the partition, {term} after; changes \
         after the kill: {changes:?}",
        ms(killed_at - healed_at),
        ms(stable_after),
        ms(stall)
    );
    assert!(changes.is_empty(), "term or leader changed after the kill: {changes:?}");
    cluster.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_for_three_seconds_rejoins_as_follower_without_another_election() {
    let cluster = Cluster::start("sp").await;
    let (old, term_before) = cluster.stable_leader(&[0, 1, 2]).await;
    let others = [(old + 1) % 3, (old + 2) % 3];

    cluster.server(old).signal("STOP");
    let stopped_at = Instant::now();
    let (new, term) = cluster.stable_leader(&others).await;
    let elected_after = stopped_at.elapsed();
    assert!(term > term_before, "a new leader in a new term");

    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stopped_at.elapsed())).await;
    cluster.server(old).signal("CONT");
    let resumed_at = Instant::now();
    let (leader, term_after) = cluster.stable_leader(&[0, 1, 2]).await;
    let rejoined_after = resumed_at.elapsed();
    assert_eq!((leader, term_after), (new, term), "the resumed leader caused another election");
    let changes = cluster.watch(&[0, 1, 2], (new, term)).await;
    println!(
        "leader stopped for 3 s: new leader elected {} ms after SIGSTOP (term {term_before} -> \
         {term}); the old leader followed it {} ms after SIGCONT; changes after: {changes:?}",
        ms(elected_after),
        ms(rejoined_after)
    );
    assert!(
        changes.is_empty(),
        "term or leader changed after the old leader rejoined: {changes:?}"
    );
    cluster.stop();
}
