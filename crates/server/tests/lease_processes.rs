//! Leases and locks against three real `tenure serve` processes (issue 13), with the leader
//! killed by SIGKILL in the middle:
//!
//! - a leased key stays readable while its owner's renewals, sent through a follower, are
//!   acknowledged across the leader's death and restart; once they stop, the key is deleted by
//!   the lease's expiry within its TTL plus an election timeout (and a margin), at one revision
//!   on every member, and every member counts the expiry in `etcd_debugging_lease_revoked`;
//! - two `etcdctl lock` processes, each through a follower, never hold the lock at once while
//!   the leader dies during the first one's hold, and both get it (skipped with a note when
//!   etcdctl is not installed).
//!
//! Timings enter only as liveness bounds: an election is expected to finish well within the
//! lease's TTL, and the expiry within TTL + election timeout + 5 s. The safety checks rest on
//! what the lease protocol guarantees (ARCHITECTURE.md, "Leases"): a lease whose renewal sent
//! at `t` was acknowledged is not revoked before `t + TTL`, and a lease that answers a renewal
//! has not been revoked.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Plan, Server};
use tenure_server::pb::etcdserverpb as pb;
use tokio::sync::{mpsc, watch};

const PATIENCE: Duration = Duration::from_secs(30);
/// The members' election timeout (`Plan` starts them with `--election-timeout 500`).
const ELECTION_TIMEOUT: Duration = Duration::from_millis(500);
/// The leased key's TTL, in seconds (the members' minimum is 1 s).
const TTL_SECS: i64 = 3;
const TTL: Duration = Duration::from_secs(TTL_SECS as u64);
/// Time between the owner's renewals.
const RENEW_EVERY: Duration = Duration::from_millis(500);
/// How long one renewal or one read may take before it counts as failed.
const ATTEMPT_MAX: Duration = Duration::from_secs(1);
/// Slack on top of TTL + election timeout for the expiry to be proposed, committed and
/// applied on a shared, loaded machine.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
const KEY: &str = "lp/key";

/// The member every member of `up` names as leader (see [`common::agreed_leader`]).
async fn leader(plan: &Plan, up: &[usize]) -> usize {
    common::agreed_leader(plan, up, PATIENCE).await
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

/// One linearizable read of [`KEY`] through the member at `url`: whether the key was there,
/// or why the read failed.
async fn read_key(url: &str) -> Result<bool, String> {
    let attempt = async {
        let mut kv =
            pb::kv_client::KvClient::connect(url.to_string()).await.map_err(|e| e.to_string())?;
        let request =
            pb::RangeRequest { key: Bytes::from_static(KEY.as_bytes()), ..Default::default() };
        let r = kv.range(request).await.map_err(|s| s.to_string())?.into_inner();
        Ok(r.kvs.iter().any(|kv| kv.key == KEY.as_bytes()))
    };
    tokio::time::timeout(ATTEMPT_MAX, attempt).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// A read the checker made: through which member, when it was sent and answered, and what it
/// found (or why it failed).
#[derive(Debug)]
struct Read {
    via: usize,
    sent: Instant,
    answered: Instant,
    found: Result<bool, String>,
}

/// A renewal the owner sent: when, and the TTL answered (0: the lease is gone) or why none was.
#[derive(Debug)]
struct Renewal {
    sent: Instant,
    answered: Instant,
    ttl: Result<i64, String>,
}

/// Reads [`KEY`] through the members marked up, in turn, until `stop`; every read recorded.
async fn check_continuously(
    plan: Arc<Plan>,
    up: Arc<Mutex<[bool; 3]>>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Read> {
    let mut reads = Vec::new();
    for turn in 0usize.. {
        if *stop.borrow() {
            break;
        }
        let live: Vec<usize> = (0..3).filter(|&i| up.lock().unwrap()[i]).collect();
        let via = live[turn % live.len()];
        let sent = Instant::now();
        let found = read_key(&plan.clients[via]).await;
        reads.push(Read { via, sent, answered: Instant::now(), found });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => {}
        }
    }
    reads
}

/// Renews lease `id` every [`RENEW_EVERY`] on one KeepAlive stream to the member at `url`
/// (opened again after a failure) until `stop`; every renewal recorded.
async fn renew_continuously(url: String, id: i64, mut stop: watch::Receiver<bool>) -> Vec<Renewal> {
    let mut renewals = Vec::new();
    let mut stream: Option<(
        mpsc::UnboundedSender<pb::LeaseKeepAliveRequest>,
        tonic::Streaming<pb::LeaseKeepAliveResponse>,
    )> = None;
    while !*stop.borrow() {
        let sent = Instant::now();
        let ttl = async {
            if stream.is_none() {
                let (tx, rx) = mpsc::unbounded_channel();
                let mut lease = pb::lease_client::LeaseClient::connect(url.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                let rx = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
                let responses =
                    lease.lease_keep_alive(rx).await.map_err(|s| s.to_string())?.into_inner();
                stream = Some((tx, responses));
            }
            let (tx, responses) = stream.as_mut().expect("opened above");
            tx.send(pb::LeaseKeepAliveRequest { id }).map_err(|e| e.to_string())?;
            match responses.message().await {
                Ok(Some(r)) => Ok(r.ttl),
                Ok(None) => Err("the stream ended".to_string()),
                Err(s) => Err(s.to_string()),
            }
        };
        let ttl = tokio::time::timeout(ATTEMPT_MAX, ttl)
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        if ttl.is_err() {
            // A late answer on the old stream could be taken for the next renewal's.
            stream = None;
        }
        renewals.push(Renewal { sent, answered: Instant::now(), ttl });
        tokio::select! {
            _ = tokio::time::sleep_until((sent + RENEW_EVERY).into()) => {}
            _ = stop.changed() => {}
        }
    }
    renewals
}

/// Opens a watch on [`KEY`] through `url` from `start_revision`; returns the first event's
/// type and revision.
async fn first_event(url: &str, start_revision: i64) -> (i32, i64) {
    let (requests, rx) = mpsc::unbounded_channel();
    let create = pb::WatchCreateRequest {
        key: Bytes::from_static(KEY.as_bytes()),
        start_revision,
        ..Default::default()
    };
    let union = pb::watch_request::RequestUnion::CreateRequest(create);
    requests.send(pb::WatchRequest { request_union: Some(union) }).expect("queued");
    let mut client =
        pb::watch_client::WatchClient::connect(url.to_string()).await.expect("connects");
    let rx = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
    let mut events = client.watch(rx).await.expect("watch opens").into_inner();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, events.message())
            .await
            .unwrap_or_else(|_| panic!("no event on {KEY} through {url}"))
            .expect("the stream stays healthy")
            .expect("the stream stays open");
        assert!(!r.canceled, "the watch was cancelled: {r:?}");
        if let Some(e) = r.events.first() {
            drop(requests);
            return (e.r#type, e.kv.as_ref().expect("kv").mod_revision);
        }
    }
}

/// The last renewal answered, after checking that every answer found the lease alive with its
/// TTL (an answer of TTL 0 means the lease was gone: it expired while its owner renewed it).
fn check_renewals(renewals: &[Renewal]) -> Result<&Renewal, String> {
    let acked: Vec<&Renewal> = renewals.iter().filter(|r| r.ttl.is_ok()).collect();
    if let Some(r) = acked.iter().find(|r| r.ttl != Ok(TTL_SECS)) {
        return Err(format!("a renewal found the lease gone: {r:?}"));
    }
    acked.into_iter().max_by_key(|r| r.sent).ok_or_else(|| "no renewal was answered".into())
}

/// Safety of the reads: none answered before `last_renewal + TTL` missed the key, where
/// `last_renewal` is when the last renewal that was answered was sent. A renewal that found
/// the lease alive proves every read answered before it should have seen the key, and one
/// sent at `t` and answered keeps the lease until `t + TTL` at least. A failed read is no
/// evidence either way.
fn check_reads(reads: &[Read], last_renewal: Instant) -> Result<(), String> {
    match reads.iter().find(|r| r.answered < last_renewal + TTL && r.found == Ok(false)) {
        Some(r) => Err(format!("a read missed the key while the lease was renewed: {r:?}")),
        None => Ok(()),
    }
}

#[test]
fn the_lease_checks_reject_a_missed_key_and_a_lost_lease() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let read = |via, ms, found| Read { via, sent: at(ms), answered: at(ms + 5), found };
    let renewal = |ms, ttl| Renewal { sent: at(ms), answered: at(ms + 5), ttl };
    let renewals =
        [renewal(0, Ok(TTL_SECS)), renewal(500, Err("timed out".into())), renewal(1000, Ok(3))];
    assert_eq!(check_renewals(&renewals).map(|r| r.sent), Ok(at(1000)));
    let lost = [renewal(0, Ok(TTL_SECS)), renewal(500, Ok(0))];
    assert!(check_renewals(&lost).unwrap_err().contains("lease gone"));
    assert!(check_renewals(&[renewal(0, Err("unavailable".into()))]).is_err());

    let good = [read(0, 100, Ok(true)), read(1, 200, Err("no leader".into()))];
    assert_eq!(check_reads(&good, at(1000)), Ok(()));
    // The key is gone only once the last renewal's TTL has run out.
    let expired = [read(0, 100, Ok(true)), read(1, 1000 + 3000, Ok(false))];
    assert_eq!(check_reads(&expired, at(1000)), Ok(()));
    let missed = [read(0, 100, Ok(true)), read(1, 2000, Ok(false))];
    assert!(check_reads(&missed, at(1000)).unwrap_err().contains("missed the key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_lease_survives_a_leader_kill_and_restart_then_expires_everywhere_at_one_revision()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Arc::new(Plan::new("lp"));
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(plan.start(i, dir.path()))).collect();
    let first_leader = leader(&plan, &[0, 1, 2]).await;
    // The owner grants, puts and renews through a follower that is never killed.
    let owner = (first_leader + 1) % 3;

    let mut lease = pb::lease_client::LeaseClient::connect(plan.clients[owner].clone())
        .await
        .expect("connects");
    let grant = lease
        .lease_grant(pb::LeaseGrantRequest { id: 0, ttl: TTL_SECS })
        .await
        .expect("granted")
        .into_inner();
    assert_eq!(grant.ttl, TTL_SECS, "{grant:?}");
    let id = grant.id;
    let mut kv =
        pb::kv_client::KvClient::connect(plan.clients[owner].clone()).await.expect("connects");
    let put = pb::PutRequest {
        key: Bytes::from_static(KEY.as_bytes()),
        value: Bytes::from_static(b"owned"),
        lease: id,
        ..Default::default()
    };
    let put_revision =
        kv.put(put).await.expect("put").into_inner().header.expect("header").revision;

    let up = Arc::new(Mutex::new([true; 3]));
    let (stop_renewing, renewing) = watch::channel(false);
    let (stop_checking, checking) = watch::channel(false);
    let renewer = tokio::spawn(renew_continuously(plan.clients[owner].clone(), id, renewing));
    let checker = tokio::spawn(check_continuously(Arc::clone(&plan), Arc::clone(&up), checking));

    tokio::time::sleep(Duration::from_millis(1500)).await;
    up.lock().unwrap()[first_leader] = false;
    servers[first_leader].take().expect("running").kill();
    let killed = Instant::now();
    // Longer than the TTL: the lease lives on only through renewals the new leader commits.
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    servers[first_leader] = Some(plan.start(first_leader, dir.path()));
    let restarted = Instant::now();
    leader(&plan, &[0, 1, 2]).await;
    up.lock().unwrap()[first_leader] = true;
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop_renewing.send(true).expect("renewer listens");
    let renewals = renewer.await.expect("renewer");
    let last_answered = renewals.iter().filter(|r| r.ttl.is_ok()).map(|r| r.answered).max();
    let last_answered = last_answered.expect("a renewal was answered");
    let gone_by = last_answered + TTL + ELECTION_TIMEOUT + EXPIRY_MARGIN;
    let gone = loop {
        if read_key(&plan.clients[owner]).await == Ok(false) {
            break Instant::now();
        }
        assert!(
            Instant::now() < gone_by,
            "{KEY} was still there {:?} after the last renewal was answered",
            last_answered.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop_checking.send(true).expect("checker listens");
    let reads = checker.await.expect("checker");

    let last = check_renewals(&renewals).unwrap_or_else(|e| panic!("{e}: {renewals:#?}"));
    // Renewals went on through the new leader for longer than the TTL, and after the restart.
    assert!(
        last.sent > killed + TTL && last.sent > restarted,
        "no renewal acknowledged a TTL after the kill and after the restart: {renewals:#?}"
    );
    let reads_ok = check_reads(&reads, last.sent);
    reads_ok.unwrap_or_else(|e| panic!("{e} (the leader was killed at {killed:?})"));
    let ok: Vec<&Read> = reads.iter().filter(|r| r.found.is_ok()).collect();
    // Liveness: reads were answered while the first leader was down (by the other two) and
    // after its restart (by it too).
    let down = killed..restarted;
    assert!(
        ok.iter().any(|r| down.contains(&r.sent) && r.found == Ok(true)),
        "no read answered while the leader was down: {reads:#?}"
    );
    assert!(
        ok.iter().any(|r| r.via == first_leader && r.sent > restarted),
        "the restarted member answered no read: {reads:#?}"
    );
    eprintln!(
        "{} renewals ({} acknowledged), {} reads ({} answered); the key was gone {:?} after \
         the last renewal was sent",
        renewals.len(),
        renewals.iter().filter(|r| r.ttl.is_ok()).count(),
        reads.len(),
        ok.len(),
        gone.saturating_duration_since(last.sent)
    );

    // The expiry deleted the key at one revision on every member, revoked the lease, and each
    // member counted it.
    let mut deletions = Vec::new();
    for url in &plan.clients {
        deletions.push(first_event(url, put_revision + 1).await);
    }
    let delete = tenure_server::pb::mvccpb::event::EventType::Delete as i32;
    assert!(deletions.iter().all(|d| d.0 == delete), "{deletions:?}");
    assert!(
        deletions.iter().all(|d| d.1 == deletions[0].1 && d.1 > put_revision),
        "every member deleted the key at the same revision: {deletions:?}"
    );
    for (i, url) in plan.clients.iter().enumerate() {
        let mut lease =
            pb::lease_client::LeaseClient::connect(url.clone()).await.expect("connects");
        let ttl = lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
            .await
            .expect("answers")
            .into_inner()
            .ttl;
        assert_eq!(ttl, -1, "member {i} still has the lease");
        let counted = tokio::task::spawn_blocking({
            let url = url.clone();
            move || metric(&url, "etcd_debugging_lease_revoked_total")
        })
        .await
        .expect("task");
        assert_eq!(counted, Some(1.0), "member {i} counted the expiry once");
    }
    for s in servers.into_iter().flatten() {
        s.terminate();
    }
}

/// Waits for every child, killing all that are left if `patience` runs out.
fn wait_all(mut children: Vec<Child>, patience: Duration) -> Vec<std::process::Output> {
    let deadline = Instant::now() + patience;
    while children.iter_mut().any(|c| c.try_wait().expect("try_wait").is_none()) {
        if Instant::now() > deadline {
            for c in &mut children {
                let _ = c.kill();
            }
            let outputs: Vec<_> =
                children.into_iter().map(|c| c.wait_with_output().expect("waits")).collect();
            panic!("lock holders did not finish within {patience:?}: {outputs:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    children.into_iter().map(|c| c.wait_with_output().expect("waits")).collect()
}

/// Mutual exclusion, from the critical sections' log: no holder found another inside, and the
/// two holders each entered and left once, one after the other.
fn check_holds(log: &str) -> Result<(), String> {
    let lines: Vec<&str> = log.lines().collect();
    if lines.iter().any(|l| l.starts_with("overlap")) {
        return Err("a holder found the other inside".into());
    }
    let first = lines.first().and_then(|l| l.strip_prefix("enter ")).ok_or("nobody entered")?;
    let second = if first == "0" { "1" } else { "0" };
    let expected = [
        format!("enter {first}"),
        format!("exit {first}"),
        format!("enter {second}"),
        format!("exit {second}"),
    ];
    if lines != expected {
        return Err(format!("not one whole hold after the other (want {expected:?})"));
    }
    Ok(())
}

#[test]
fn the_lock_check_rejects_overlapping_and_missing_holds() {
    assert_eq!(check_holds("enter 1\nexit 1\nenter 0\nexit 0\n"), Ok(()));
    assert!(check_holds("enter 0\nenter 1\nexit 0\nexit 1\n").is_err());
    assert!(check_holds("enter 0\noverlap 1\nexit 0\n").unwrap_err().contains("inside"));
    assert!(check_holds("enter 0\nexit 0\n").is_err(), "the second never ran");
    assert!(check_holds("enter 0\nexit 0\nenter 0\nexit 0\n").is_err(), "one ran twice");
    assert!(check_holds("").is_err());
}

/// Two `etcdctl lock` processes, each through a different follower, run a critical section
/// that writes `enter` and `exit` markers and holds a directory (`mkdir` fails if it exists, so
/// a second holder inside at the same time is detected even between the markers). The leader
/// is killed while the first holder is inside; both still run, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_holders_never_overlap_while_the_leader_is_killed() {
    let Some(etcdctl) = binary("etcdctl") else {
        println!("etcdctl is not installed (apt-get install etcd-client); skipping");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("lk");
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(plan.start(i, dir.path()))).collect();
    let first_leader = leader(&plan, &[0, 1, 2]).await;
    let followers = [(first_leader + 1) % 3, (first_leader + 2) % 3];

    let log = dir.path().join("log");
    let inside = dir.path().join("inside");
    let mut children = Vec::new();
    for (holder, &member) in followers.iter().enumerate() {
        let script = format!(
            "mkdir {inside} || {{ echo overlap {holder} >> {log}; exit 3; }}; \
             echo enter {holder} >> {log}; sleep 3; echo exit {holder} >> {log}; rmdir {inside}",
            inside = inside.display(),
            log = log.display(),
        );
        let child = Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &plan.clients[member]])
            .args(["lock", "lp-shared", "--", "sh", "-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs etcdctl");
        children.push(child);
    }

    // The first holder is inside and the second waits in line (its key is under the
    // prefix): kill the leader. Not before the second is in line: a write in flight when the
    // leader dies may time out ("etcdserver: request timed out", as with etcd), and etcdctl
    // does not retry a txn.
    let deadline = Instant::now() + PATIENCE;
    let mut kv = pb::kv_client::KvClient::connect(plan.clients[followers[0]].clone())
        .await
        .expect("connects");
    loop {
        let entered = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("enter"));
        let in_line = lock_keys(&mut kv).await.is_ok_and(|n| n == 2);
        if entered && in_line {
            break;
        }
        assert!(Instant::now() < deadline, "not one holder inside and one in line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    servers[first_leader].take().expect("running").kill();
    let at_kill = std::fs::read_to_string(&log).expect("log");
    assert!(!at_kill.contains("exit"), "the leader died after the first hold ended: {at_kill}");

    let outputs =
        tokio::task::spawn_blocking(move || wait_all(children, PATIENCE)).await.expect("task");
    let log = std::fs::read_to_string(&log).expect("log");
    check_holds(&log).unwrap_or_else(|e| panic!("{e}: {log:?} {outputs:?}"));
    for o in &outputs {
        assert!(o.status.success(), "etcdctl lock failed: {o:?}");
    }
    // Both unlocked: no lock key is left.
    let held = lock_keys(&mut kv).await.expect("reads");
    assert_eq!(held, 0, "a lock key was left behind");
    for s in servers.into_iter().flatten() {
        s.terminate();
    }
}

/// How many `etcdctl lock lp-shared` keys there are (holder and waiters).
async fn lock_keys(
    kv: &mut pb::kv_client::KvClient<tonic::transport::Channel>,
) -> Result<i64, tonic::Status> {
    let range = pb::RangeRequest {
        key: Bytes::from_static(b"lp-shared/"),
        range_end: Bytes::from_static(b"lp-shared0"),
        count_only: true,
        ..Default::default()
    };
    Ok(kv.range(range).await?.into_inner().count)
}

/// Where `name` is on the `PATH`, if it is.
fn binary(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.exists())
}
