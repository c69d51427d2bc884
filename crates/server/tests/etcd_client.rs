//! A client nobody here wrote: the `etcd-client` crate (etcd's v3 API over tonic) against three
//! `tenure serve` processes. The leader is killed with SIGKILL in the middle of a stream of
//! writes; the writes carry on through the new leader, the killed member comes back from its
//! data directory, and every write the client saw acknowledged is then readable, with its
//! value, from every member.

mod common;

use common::{Plan, Server};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, GetOptions};

/// How long anything may take before the test fails (generous: machines are shared).
const PATIENCE: Duration = Duration::from_secs(30);

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_timeout(Duration::from_secs(3))
        .with_connect_timeout(Duration::from_secs(1))
}

/// A client of one member only.
async fn client_of(endpoint: &str) -> Client {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Client::connect([endpoint], Some(options())).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "cannot connect to {endpoint}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until one of the members `alive` says it leads (by `Maintenance/Status`) and
/// returns its position.
async fn leader(plan: &Plan, alive: &[usize]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for &i in alive {
            let Ok(mut c) = Client::connect([&plan.clients[i]], Some(options())).await else {
                continue;
            };
            if let Ok(st) = c.status().await {
                let me = st.header().map(|h| h.member_id());
                if st.leader() != 0 && me == Some(st.leader()) {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader among {alive:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acknowledged writes so far: key number and value.
type Acked = Arc<Mutex<BTreeMap<usize, String>>>;

/// Waits until at least `n` writes have been acknowledged.
async fn wait_acked(acked: &Acked, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let have = acked.lock().unwrap().len();
        if have >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {have} of {n} writes acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_killed_leader_as_seen_by_etcd_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plan = Plan::new("e");
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(plan.start(i, dir.path()))).collect();
    let old = leader(&plan, &[0, 1, 2]).await;

    // One writer streams k0, k1, ... through a client of all three members, keeping what was
    // acknowledged. A failed put is not retried: it may or may not have been applied, and
    // only acknowledged writes are checked.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut client = Client::connect(&plan.clients, Some(options())).await.expect("connect");
    let writer = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut failed = 0usize;
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let value = format!("v{i}");
                match client.put(format!("k{i}"), value.clone(), None).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(i, value);
                    }
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            failed
        })
    };

    wait_acked(&acked, 20).await;
    servers[old].take().expect("running").kill();
    let at_kill = acked.lock().unwrap().len();
    let rest: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = leader(&plan, &rest).await;
    assert_ne!(new, old);
    // Writes carry on without the old leader...
    wait_acked(&acked, at_kill + 20).await;
    // ...and after it comes back from its data directory.
    servers[old] = Some(plan.start(old, dir.path()));
    let at_restart = acked.lock().unwrap().len();
    wait_acked(&acked, at_restart + 20).await;
    stop.store(true, Ordering::Relaxed);
    let failed = tokio::time::timeout(PATIENCE, writer).await.expect("writer stops").unwrap();

    let acked = acked.lock().unwrap().clone();
    for (i, url) in plan.clients.iter().enumerate() {
        // A linearizable read (etcd-client's default) on each member: the restarted member
        // answers only once it has applied everything committed before the read.
        let mut c = client_of(url).await;
        let deadline = Instant::now() + PATIENCE;
        let kvs = loop {
            match c.get("k", Some(GetOptions::new().with_prefix())).await {
                Ok(r) => break r,
                Err(e) => assert!(Instant::now() < deadline, "member {i} cannot read: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let seen: BTreeMap<String, String> = kvs
            .kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string()))
            .collect();
        for (k, v) in &acked {
            let key = format!("k{k}");
            assert_eq!(
                seen.get(&key),
                Some(v),
                "member {i} lost acknowledged {key} ({} acked, {failed} failed)",
                acked.len()
            );
        }
    }
    drop(servers);
}
