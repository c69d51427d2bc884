//! A client flood against three real `tenure serve` processes (heartbeat 50 ms, election
//! timeout 500 ms, so a server-side request timeout of 2.5 s): thousands of concurrent Puts,
//! far more than the members admit at once, for `TENURE_FLOOD_SECS` seconds (30 by
//! default). The replica thread takes peer messages and ticks on lanes of their own, so the
//! flood must not cost the leader its quorum: no member's term changes, the leader stays the
//! leader, and `etcd_server_leader_changes_seen_total` does not move. Clients are told "too
//! many requests" at once, rather than left to time out. Once the flood stops, a normal Put
//! and a linearizable Range succeed.
//!
//! `/metrics` is what is watched during the flood: it reads the member's published status
//! without queueing on the replica thread, whereas `Maintenance.Status` reads the alarms there
//! and is itself refused while the client lane is full.
//!
//! Assertions are about outcomes; the counts and rates are printed (see BENCHMARKS.md, "Issue
//! 11: a client flood against three members"). `TENURE_FLOOD_TASKS` and
//! `TENURE_FLOOD_CONNECTIONS` change the concurrency.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Plan, Server};
use tenure_server::pb::etcdserverpb as pb;
use tonic::transport::{Channel, Endpoint};

/// How long anything outside the flood may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// Each flood request's own deadline, above the server's 2.5 s request timeout so that a
/// request the server accepted is answered by the server.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

/// How often every member's `/metrics` is read during the flood.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Resolution of the record of when writes succeeded.
const BUCKET: Duration = Duration::from_millis(10);

/// A number from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// What a member's `/metrics` says about its leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    term: u64,
    is_leader: bool,
    has_leader: bool,
    leader_changes: u64,
}

/// Every sample on `/metrics` of the member at `client_url`, or `None` if it does not answer
/// within `wait`. Blocking, so that it can run on a thread of its own beside the flood.
fn scrape(client_url: &str, wait: Duration) -> Option<BTreeMap<String, f64>> {
    let authority = client_url.trim_start_matches("http://");
    let addr = authority.parse().ok()?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, wait).ok()?;
    s.set_read_timeout(Some(wait)).ok()?;
    s.set_write_timeout(Some(wait)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let samples: BTreeMap<String, f64> = reply
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect();
    (!samples.is_empty()).then_some(samples)
}

fn seen(samples: &BTreeMap<String, f64>) -> Option<Seen> {
    let get = |name: &str| samples.get(name).copied();
    Some(Seen {
        term: get("etcd_server_term")? as u64,
        is_leader: get("etcd_server_is_leader")? == 1.0,
        has_leader: get("etcd_server_has_leader")? == 1.0,
        leader_changes: get("etcd_server_leader_changes_seen_total")? as u64,
    })
}

/// Waits until exactly one member says it leads and all three agree on the term and know a
/// leader; returns the leader's index and what each member said.
fn stable_leader(plan: &Plan) -> (usize, Vec<Seen>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all: Vec<Option<Seen>> = plan
            .clients
            .iter()
            .map(|u| scrape(u, Duration::from_secs(1)).as_ref().and_then(seen))
            .collect();
        if let Some(all) = all.iter().copied().collect::<Option<Vec<Seen>>>() {
            let leaders: Vec<usize> = (0..3).filter(|&i| all[i].is_leader).collect();
            if let [leader] = leaders[..]
                && all.iter().all(|s| s.has_leader && s.term == all[leader].term)
            {
                return (leader, all);
            }
        }
        assert!(Instant::now() < deadline, "no stable leader: {all:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the watcher saw during the flood.
#[derive(Debug, Default)]
struct Watched {
    polls: u64,
    /// Scrapes that got no answer within a second.
    unanswered: u64,
    slowest: Duration,
    /// Every answer that differed from the one before the flood, with when (since the start).
    changes: Vec<(Duration, usize, Seen)>,
}

/// Reads every member's `/metrics` every [`POLL_INTERVAL`] until `stop`, on a thread of its
/// own so that the flood's tasks cannot delay it.
fn watch(
    clients: Vec<String>,
    before: Vec<Seen>,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Watched> {
    std::thread::spawn(move || {
        let mut w = Watched::default();
        while !stop.load(Ordering::SeqCst) {
            let round = Instant::now();
            for (i, url) in clients.iter().enumerate() {
                let asked = Instant::now();
                let answer = scrape(url, Duration::from_secs(1));
                w.polls += 1;
                w.slowest = w.slowest.max(asked.elapsed());
                match answer.as_ref().and_then(seen) {
                    None => w.unanswered += 1,
                    Some(s) if s != before[i] => w.changes.push((start.elapsed(), i, s)),
                    Some(_) => {}
                }
            }
            std::thread::sleep(POLL_INTERVAL.saturating_sub(round.elapsed()));
        }
        w
    })
}

/// How a flood request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Ok,
    TooManyRequests,
    ServerTimeout,
    ClientDeadline,
    Other,
}

const OUTCOMES: [Outcome; 5] = [
    Outcome::Ok,
    Outcome::TooManyRequests,
    Outcome::ServerTimeout,
    Outcome::ClientDeadline,
    Outcome::Other,
];

fn classify(
    r: &Result<Result<tonic::Response<pb::PutResponse>, tonic::Status>, impl Sized>,
) -> Outcome {
    match r {
        Ok(Ok(_)) => Outcome::Ok,
        Ok(Err(s))
            if s.code() == tonic::Code::ResourceExhausted
                && s.message() == "etcdserver: too many requests" =>
        {
            Outcome::TooManyRequests
        }
        Ok(Err(s)) if s.message().starts_with("etcdserver: request timed out") => {
            Outcome::ServerTimeout
        }
        Ok(Err(_)) => Outcome::Other,
        Err(_) => Outcome::ClientDeadline,
    }
}

/// The flood's tallies, shared by its tasks.
struct Tally {
    start: Instant,
    /// Requests by outcome (indexed as [`OUTCOMES`]).
    counts: [AtomicU64; 5],
    /// Successful writes per [`BUCKET`] since `start`.
    ok_buckets: Vec<AtomicU64>,
    /// Other errors by code and message.
    others: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn new(start: Instant, flood: Duration) -> Tally {
        let buckets = (flood + CLIENT_DEADLINE).as_millis() / BUCKET.as_millis() + 1;
        Tally {
            start,
            counts: Default::default(),
            ok_buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            others: Mutex::default(),
        }
    }

    fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome as usize].load(Ordering::Relaxed)
    }

    fn record(
        &self,
        r: &Result<Result<tonic::Response<pb::PutResponse>, tonic::Status>, impl Sized>,
    ) -> Outcome {
        let outcome = classify(r);
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
        match (outcome, r) {
            (Outcome::Ok, _) => {
                let k = (self.start.elapsed().as_millis() / BUCKET.as_millis()) as usize;
                if let Some(b) = self.ok_buckets.get(k) {
                    b.fetch_add(1, Ordering::Relaxed);
                }
            }
            (Outcome::Other, Ok(Err(s))) => {
                let what = format!("{:?}: {}", s.code(), s.message());
                *self.others.lock().unwrap().entry(what).or_default() += 1;
            }
            _ => {}
        }
        outcome
    }

    /// The longest stretch without a successful write within the first `span` since `start`.
    fn longest_without_ok(&self, span: Duration) -> Duration {
        let n = (span.as_millis() / BUCKET.as_millis()) as usize;
        let mut longest = 0;
        let mut run = 0;
        for b in self.ok_buckets.iter().take(n) {
            if b.load(Ordering::Relaxed) == 0 {
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        BUCKET * longest
    }
}

/// One flood task: Puts of its own small key in a loop through `kv` until `stop`, each with
/// [`CLIENT_DEADLINE`].
async fn flood_task(
    task: u64,
    mut kv: pb::kv_client::KvClient<Channel>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let key = Bytes::from(format!("flood/{task:05}"));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let put = pb::PutRequest {
            key: key.clone(),
            value: Bytes::from(format!("{n:08}")),
            ..Default::default()
        };
        let r = tokio::time::timeout(CLIENT_DEADLINE, kv.put(put)).await;
        tally.record(&r);
    }
}

/// Retries `op` against `url` until it succeeds or `within` passes; returns how long it took
/// and how many attempts, or the last error.
async fn eventually<T, F, Fut>(url: &str, within: Duration, mut op: F) -> (Duration, u32, T)
where
    F: FnMut(pb::kv_client::KvClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let began = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let last = match pb::kv_client::KvClient::connect(url.to_string()).await {
            Ok(kv) => match tokio::time::timeout(Duration::from_secs(3), op(kv)).await {
                Ok(Ok(v)) => return (began.elapsed(), attempts, v),
                Ok(Err(s)) => s.to_string(),
                Err(_) => "client deadline".to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(began.elapsed() < within, "{url}: no success within {within:?}: {last}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::from(key.to_string()),
        value: Bytes::from(value.to_string()),
        ..Default::default()
    }
}

fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

// About 35 s with both cores busy. 20,000 requests in flight are well above what the three
// members admit (`api::REQUESTS_IN_FLIGHT_MAX` each) yet few enough that the test's own client
// (on the same two cores) can still drive them; at 40,000 the client's own HTTP/2 work starves
// and most requests die at their client-side deadline before reaching any server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flood_gets_too_many_requests_and_leaves_the_leader_in_place() {
    let flood_for = Duration::from_secs(env_or("TENURE_FLOOD_SECS", 30));
    let tasks = env_or("TENURE_FLOOD_TASKS", 20_000);
    let connections = env_or("TENURE_FLOOD_CONNECTIONS", 48).max(3);

    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("fl");
    // A low admission limit, so that the flood is far above it whatever share of the
    // requests the test's own client (on the same two cores) keeps in flight.
    let limit = ["--max-concurrent-requests", "512"];
    let servers: Vec<Server> = (0..3).map(|i| plan.start_with(i, dir.path(), &limit)).collect();
    let (leader, _) = tokio::task::block_in_place(|| stable_leader(&plan));
    // The cluster serves writes before the flood begins.
    eventually(&plan.clients[leader], PATIENCE, |mut kv| async move {
        kv.put(put("before", "flood")).await
    })
    .await;
    let (leader_after_put, before) = tokio::task::block_in_place(|| stable_leader(&plan));
    assert_eq!(leader_after_put, leader, "the leader changed before the flood: {before:?}");

    // Connections spread over the three members in turn; the tasks over the connections.
    let mut channels = Vec::new();
    for c in 0..connections {
        let url = plan.clients[c as usize % 3].clone();
        let channel = Endpoint::from_shared(url)
            .expect("a URL")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connects");
        channels.push(channel);
    }

    let start = Instant::now();
    let tally = Arc::new(Tally::new(start, flood_for));
    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = watch(plan.clients.clone(), before.clone(), start, Arc::clone(&watching));
    let mut flood = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let kv = pb::kv_client::KvClient::new(channels[(t % connections) as usize].clone());
        flood.spawn(flood_task(t, kv, Arc::clone(&tally), Arc::clone(&stop)));
    }
    tokio::time::sleep(flood_for).await;
    stop.store(true, Ordering::SeqCst);
    let flooded = start.elapsed();
    let snapshot: Vec<u64> = OUTCOMES.iter().map(|&o| tally.count(o)).collect();
    // Requests still in flight are abandoned, not waited for.
    flood.abort_all();
    while flood.join_next().await.is_some() {}
    drop(channels);
    watching.store(true, Ordering::SeqCst);
    let watched = watcher.join().expect("watcher");

    // After the flood: a normal write and a linearizable read, through the leader.
    let url = &plan.clients[leader];
    let (put_took, put_attempts, _) =
        eventually(url, Duration::from_secs(10), |mut kv| async move {
            kv.put(put("after", "flood")).await
        })
        .await;
    let (read_took, read_attempts, r) =
        eventually(url, Duration::from_secs(10), |mut kv| async move {
            let get = pb::RangeRequest { key: Bytes::from_static(b"after"), ..Default::default() };
            kv.range(get).await
        })
        .await;
    assert_eq!(r.into_inner().kvs[0].value, "flood");
    let (leader_at_end, after) = tokio::task::block_in_place(|| stable_leader(&plan));
    let metrics_after: Vec<BTreeMap<String, f64>> = plan
        .clients
        .iter()
        .map(|u| scrape(u, Duration::from_secs(2)).unwrap_or_default())
        .collect();

    let [ok, too_many, server_timeouts, client_deadlines, other] = snapshot[..] else {
        unreachable!()
    };
    let longest = tally.longest_without_ok(flooded);
    println!(
        "flood: {tasks} tasks on {connections} connections (to all three members) for {} ms; \
         leader member {leader}, term {}",
        flooded.as_millis(),
        before[leader].term
    );
    println!(
        "outcomes: ok {ok} ({:.0}/s), too many requests {too_many} ({:.0}/s), server timeouts \
         {server_timeouts}, client deadlines {client_deadlines}, other {other}",
        per_s(ok, flooded),
        per_s(too_many, flooded)
    );
    println!("longest stretch without an ok: {} ms", longest.as_millis());
    let ok_per_s: Vec<u64> = tally
        .ok_buckets
        .chunks(100)
        .take(flooded.as_secs() as usize)
        .map(|c| c.iter().map(|b| b.load(Ordering::Relaxed)).sum())
        .collect();
    println!("ok per second: {ok_per_s:?}");
    for (what, n) in tally.others.lock().unwrap().iter().take(5) {
        println!("other: {n} x {what}");
    }
    println!(
        "watched: {} polls, {} unanswered, slowest {} ms; {} answers differed from before the \
         flood, the first: {:?}",
        watched.polls,
        watched.unanswered,
        watched.slowest.as_millis(),
        watched.changes.len(),
        &watched.changes[..watched.changes.len().min(12)]
    );
    for (i, m) in metrics_after.iter().enumerate() {
        let get = |n: &str| m.get(n).copied().unwrap_or(-1.0);
        // Heartbeat round trips, sent from the replica thread and answered back to the
        // transport: how long peer traffic waited on both members' runtimes.
        let rtt = |le: &str| {
            get(&format!("etcd_network_peer_round_trip_time_seconds_bucket{{le=\"{le}\"}}"))
        };
        let rtts = get("etcd_network_peer_round_trip_time_seconds_count");
        println!(
            "member {i}: proposals committed {}, failed {}, peer messages dropped {}; heartbeat \
             round trips {rtts}, over 102 ms {}, over 410 ms {}, over 819 ms {}",
            get("etcd_server_proposals_committed_total"),
            get("etcd_server_proposals_failed_total"),
            get("tenure_peer_messages_dropped_total"),
            rtts - rtt("0.1024"),
            rtts - rtt("0.4096"),
            rtts - rtt("0.8192"),
        );
    }
    println!(
        "after the flood: put ok in {} ms ({put_attempts} attempts), linearizable range in {} ms \
         ({read_attempts} attempts)",
        put_took.as_millis(),
        read_took.as_millis()
    );

    assert!(
        watched.changes.is_empty(),
        "a member's term or leadership changed during the flood: {:?}",
        watched.changes
    );
    assert_eq!(leader_at_end, leader, "the leader changed");
    assert_eq!(after, before, "term, leadership or leader changes seen differ after the flood");
    assert!(too_many > 0, "the flood never exceeded capacity (no 'too many requests')");
    assert!(
        too_many > server_timeouts + client_deadlines,
        "clients timed out ({server_timeouts} server, {client_deadlines} client) more often than \
         they were told 'too many requests' ({too_many})"
    );
    for s in servers {
        s.terminate();
    }
}
