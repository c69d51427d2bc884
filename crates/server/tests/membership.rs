//! Membership changes against real `tenure serve` processes (issue 15):
//!
//! - a member SIGKILLed with its data gone is replaced (removed through a follower, which
//!   forwards to the leader; a new member added and started with `--initial-cluster-state
//!   existing`) while a client writes: the new member catches up and every acknowledged write
//!   is there;
//! - etcdctl 3.4's `member add --learner`, a new member started with exactly the environment
//!   `member add` printed, `member promote`, `member list`, `move-leader` and `member remove`
//!   (the removed member stops by itself), with etcd's errors for the refused cases (skipped
//!   with a note where etcdctl is not installed);
//! - a member started with a wrong token or with a stale member list is refused at start-up.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Plan, Server, etcdctl};
use tenure_server::pb::etcdserverpb as pb;

const PATIENCE: Duration = Duration::from_secs(30);

/// A member that is not in the plan: started by hand with `--initial-cluster-state existing`.
struct Joiner {
    name: String,
    client: String,
    peer: String,
}

impl Joiner {
    fn new(name: &str) -> Joiner {
        let ports = common::free_ports(2);
        Joiner {
            name: name.to_string(),
            client: format!("http://127.0.0.1:{}", ports[0]),
            peer: format!("http://127.0.0.1:{}", ports[1]),
        }
    }

    /// `tenure serve` for this member with `--initial-cluster` set to `cluster` and any
    /// `extra` flags; stderr kept for the test to read.
    fn command(&self, dir: &Path, cluster: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenure"));
        c.args(["serve", "--name", &self.name])
            .arg("--data-dir")
            .arg(dir.join(&self.name))
            .args(["--listen-client-urls", &self.client])
            .args(["--advertise-client-urls", &self.client])
            .args(["--listen-peer-urls", &self.peer])
            .args(["--initial-advertise-peer-urls", &self.peer])
            .args(["--initial-cluster", cluster])
            .args(["--initial-cluster-state", "existing"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(extra)
            .stdout(Stdio::null());
        c
    }
}

async fn cluster_client(url: &str) -> pb::cluster_client::ClusterClient<tonic::transport::Channel> {
    pb::cluster_client::ClusterClient::connect(url.to_string()).await.expect("connects")
}

/// Calls `f` until it succeeds or `PATIENCE` runs out (membership calls are refused while a
/// change is in progress or an election is under way).
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match f().await {
            Ok(t) => return t,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn members(url: &str) -> Result<Vec<pb::Member>, String> {
    let mut c = pb::cluster_client::ClusterClient::connect(url.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let r = c.member_list(pb::MemberListRequest { linearizable: true }).await;
    Ok(r.map_err(|s| s.message().to_string())?.into_inner().members)
}

async fn put(url: &str, key: &str, value: &str) -> Result<(), String> {
    let attempt = async {
        let mut kv =
            pb::kv_client::KvClient::connect(url.to_string()).await.map_err(|e| e.to_string())?;
        let req = pb::PutRequest {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(value.to_string()),
            ..Default::default()
        };
        kv.put(req).await.map_err(|s| s.message().to_string())?;
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

async fn get(url: &str, key: &str, serializable: bool) -> Result<Option<String>, String> {
    let mut kv =
        pb::kv_client::KvClient::connect(url.to_string()).await.map_err(|e| e.to_string())?;
    let req =
        pb::RangeRequest { key: Bytes::from(key.to_string()), serializable, ..Default::default() };
    let r = kv.range(req).await.map_err(|s| s.message().to_string())?.into_inner();
    Ok(r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

async fn member_id(url: &str) -> u64 {
    retry("member status", || async {
        common::member_status(url).await.map(|(id, _)| id).ok_or_else(|| "no answer".to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_lost_with_its_data_is_replaced_under_writes_without_losing_an_acknowledged_write()
{
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new("rp");
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(plan.start(i, dir.path()))).collect();
    let leader = common::agreed_leader(&plan, &[0, 1, 2], PATIENCE).await;
    let victim = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;

    // A client writes through the leader and a survivor the whole time, recording what was
    // acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints = [plan.clients[leader].clone(), plan.clients[survivor].clone()];
    let writer = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{i:05}");
                if put(&endpoints[i as usize % 2], &key, &i.to_string()).await.is_ok() {
                    acked.push(key);
                }
                i += 1;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The victim dies and its disk with it.
    let victim_id = member_id(&plan.clients[victim]).await;
    servers[victim].take().unwrap().kill();
    std::fs::remove_dir_all(dir.path().join(&plan.names[victim])).unwrap();

    // Removed through the survivor (a follower: it forwards the call to the leader).
    let survivor_url = plan.clients[survivor].clone();
    retry("member remove", || async {
        let mut c = cluster_client(&survivor_url).await;
        c.member_remove(pb::MemberRemoveRequest { id: victim_id }).await.map_err(|s| s.to_string())
    })
    .await;
    let listed = members(&plan.clients[leader]).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|m| m.id != victim_id));

    // A new member on new ports is added, then started with `existing`.
    let new = Joiner::new("rp-new");
    let added = retry("member add", || async {
        let mut c = cluster_client(&plan.clients[leader]).await;
        let req = pb::MemberAddRequest { peer_ur_ls: vec![new.peer.clone()], is_learner: false };
        c.member_add(req).await.map(|r| r.into_inner()).map_err(|s| s.to_string())
    })
    .await;
    let new_id = added.member.as_ref().unwrap().id;
    assert_eq!(added.members.len(), 3);
    let cluster = format!(
        "{}={},{}={},{}={}",
        plan.names[leader],
        plan.peers[leader],
        plan.names[survivor],
        plan.peers[survivor],
        new.name,
        new.peer
    );
    let child = new.command(dir.path(), &cluster, &[]).stderr(Stdio::null()).spawn().unwrap();
    let _new_server = ChildGuard(child);

    // It joins under the id `member add` gave it, catches up, and publishes its name.
    assert_eq!(member_id(&new.client).await, new_id);
    retry("the new member publishes its name", || async {
        let m = members(&plan.clients[leader]).await?;
        let named = m.iter().any(|m| m.id == new_id && m.name == new.name);
        if named { Ok(()) } else { Err(format!("{m:?}")) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 10, "the client kept writing: {} writes", acked.len());

    // Every acknowledged write is on the new member (a linearizable read through it, and
    // its own serializable read once it has applied that far).
    for key in &acked {
        let v = retry("read on the new member", || get(&new.client, key, false)).await;
        assert!(v.is_some(), "{key} acknowledged but missing on the new member");
    }
    let last = acked.last().unwrap();
    let local = retry("serializable read", || async {
        match get(&new.client, last, true).await? {
            Some(v) => Ok(v),
            None => Err("not applied yet".into()),
        }
    })
    .await;
    assert!(!local.is_empty());
}

/// Kills the child when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_adds_a_learner_promotes_it_moves_leadership_and_removes_a_member() {
    etcdctl_flow(false).await;
}

/// The same flow with leadership moved to the member that just joined and was promoted, which
/// is then removed while it leads (through a follower, which forwards the call to it): it must
/// still hear its followers acknowledge the entry that leaves the joint configuration, which no
/// longer names it, so the followers keep their connection to the leader (they dropped it once,
/// and the removal never completed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_moves_leadership_to_a_joined_member_and_removes_it_while_it_leads() {
    etcdctl_flow(true).await;
}

async fn etcdctl_flow(move_to_new: bool) {
    if etcdctl("http://127.0.0.1:1", &["version"]).is_none() {
        eprintln!("skipped: etcdctl is not installed (apt-get install etcd-client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new("ec");
    let _servers: Vec<Server> = (0..3).map(|i| plan.start(i, dir.path())).collect();
    let leader = common::agreed_leader(&plan, &[0, 1, 2], PATIENCE).await;
    let follower = (leader + 1) % 3;
    let eps = plan.clients[follower].clone();
    // A follower forwards membership changes to the client URL the leader published.
    retry("every member publishes", || async {
        let m = members(&eps).await?;
        if m.iter().all(|m| !m.client_ur_ls.is_empty() && !m.name.is_empty()) {
            Ok(())
        } else {
            Err(format!("{m:?}"))
        }
    })
    .await;

    // Refused cases, with etcd's errors.
    // (etcdctl checks URLs itself; the server's own check answers other clients.)
    let mut c = cluster_client(&eps).await;
    let req = pb::MemberAddRequest { peer_ur_ls: vec!["not a url".into()], is_learner: false };
    let bad = c.member_add(req).await.unwrap_err();
    assert_eq!(bad.message(), "etcdserver: given member URLs are invalid");
    let taken =
        etcdctl(&eps, &["member", "add", "x", &format!("--peer-urls={}", plan.peers[0])]).unwrap();
    assert!(text(&taken).contains("Peer URLs already exists"), "{}", text(&taken));
    let unknown = etcdctl(&eps, &["member", "remove", "1234"]).unwrap();
    assert!(text(&unknown).contains("member not found"), "{}", text(&unknown));
    let leader_id = format!("{:x}", member_id(&plan.clients[leader]).await);
    let voter = etcdctl(&eps, &["member", "promote", &leader_id]).unwrap();
    assert!(text(&voter).contains("can only promote a learner member"), "{}", text(&voter));

    // A learner, added through a follower, started with the environment `member add` printed.
    let new = Joiner::new("ec-new");
    let peer_flag = format!("--peer-urls={}", new.peer);
    let out = etcdctl(&eps, &["member", "add", &new.name, &peer_flag, "--learner"]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let id = printed
        .split_whitespace()
        .nth(1)
        .map(str::to_string)
        .filter(|_| printed.starts_with("Member "))
        .unwrap_or_else(|| panic!("unexpected output: {printed}"));
    let env: Vec<(String, String)> = printed
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("ETCD_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    assert_eq!(env.len(), 4, "{printed}");
    let second =
        etcdctl(&eps, &["member", "add", "y", "--peer-urls=http://127.0.0.1:1", "--learner"])
            .unwrap();
    assert!(text(&second).contains("too many learner members in cluster"), "{}", text(&second));
    let mut serve = Command::new(env!("CARGO_BIN_EXE_tenure"));
    serve
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ETCD_DATA_DIR", dir.path().join(&new.name))
        .env("ETCD_LISTEN_PEER_URLS", &new.peer)
        .env("ETCD_LISTEN_CLIENT_URLS", &new.client)
        .env("ETCD_ADVERTISE_CLIENT_URLS", &new.client)
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(Stdio::null())
        .stderr(common::stderr_for(&new.name));
    let mut learner = ChildGuard(serve.spawn().unwrap());

    // Promoted once caught up (etcdctl retries are ours: "in sync with leader" until then).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = etcdctl(&eps, &["member", "promote", &id]).unwrap();
        if p.status.success() {
            // etcdctl prints ids as `%16x`: padded with spaces.
            assert!(text(&p).contains(&format!("Member {id:>16} promoted")), "{}", text(&p));
            break;
        }
        assert!(text(&p).contains("in sync with leader"), "{}", text(&p));
        assert!(Instant::now() < deadline, "never promoted: {}", text(&p));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let list = etcdctl(&eps, &["member", "list"]).unwrap();
    let list = text(&list);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.lines().any(|l| l.starts_with(&id) && l.ends_with("false")), "{list}");

    // Leadership moves (to the new voter, or to a founding follower).
    let all = format!("{},{},{},{}", plan.clients[0], plan.clients[1], plan.clients[2], new.client);
    let id_num = u64::from_str_radix(&id, 16).unwrap();
    let (to_hex, to_num, to_url) = if move_to_new {
        (id.clone(), id_num, new.client.clone())
    } else {
        let n = member_id(&plan.clients[follower]).await;
        (format!("{n:x}"), n, plan.clients[follower].clone())
    };
    let mv = retry("move-leader", || async {
        let o = etcdctl(&all, &["move-leader", &to_hex]).unwrap();
        if o.status.success() { Ok(text(&o)) } else { Err(text(&o)) }
    })
    .await;
    assert!(mv.contains("Leadership transferred"), "{mv}");
    assert_eq!(common::member_status(&to_url).await.map(|s| s.1), Some(to_num));

    // The new member is removed (through a member that is not it): the others go on, and its
    // process stops by itself.
    let via = if move_to_new { follower } else { leader };
    let removed = retry("member remove", || async {
        let o = etcdctl(&plan.clients[via], &["member", "remove", &id]).unwrap();
        if o.status.success() { Ok(text(&o)) } else { Err(text(&o)) }
    })
    .await;
    assert!(removed.contains(&format!("Member {id:>16} removed")), "{removed}");
    // The removed member learns it was removed (it applied its removal and no leader talks to
    // it any more) and stops by itself, without disrupting the others on the way: the leader
    // and its term stay.
    let before = common::agreed_leader(&plan, &[0, 1, 2], PATIENCE).await;
    let term = |url: String| async move {
        let mut m = pb::maintenance_client::MaintenanceClient::connect(url).await.ok()?;
        Some(m.status(pb::StatusRequest {}).await.ok()?.into_inner().raft_term)
    };
    let term_before = term(plan.clients[before].clone()).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = learner.0.try_wait().unwrap() {
            assert!(status.success(), "the removed member exits cleanly: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the removed member kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(common::agreed_leader(&plan, &[0, 1, 2], PATIENCE).await, before);
    assert_eq!(term(plan.clients[before].clone()).await, term_before, "no election happened");
    common::agreed_leader(&plan, &[0, 1, 2], PATIENCE).await;
    let ok = etcdctl(&plan.clients[follower], &["put", "after", "removal"]).unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_with_a_wrong_token_or_a_stale_member_list_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new("jr");
    let _servers: Vec<Server> = (0..3).map(|i| plan.start(i, dir.path())).collect();
    let leader = common::agreed_leader(&plan, &[0, 1, 2], PATIENCE).await;
    let new = Joiner::new("jr-new");
    retry("member add", || async {
        let mut c = cluster_client(&plan.clients[leader]).await;
        let req = pb::MemberAddRequest { peer_ur_ls: vec![new.peer.clone()], is_learner: true };
        c.member_add(req).await.map_err(|s| s.to_string())
    })
    .await;
    let full: Vec<String> =
        (0..3).map(|i| format!("{}={}", plan.names[i], plan.peers[i])).collect();
    let cluster = format!("{},{}={}", full.join(","), new.name, new.peer);

    let run = |cluster: &str, extra: &[&str]| {
        let out = new.command(dir.path(), cluster, extra).stderr(Stdio::piped()).output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (status, err) = run(&cluster, &["--initial-cluster-token", "not-the-token"]);
    assert!(!status.success() && err.contains("--initial-cluster-token"), "{err}");
    let stale = format!("{},{}={}", full[..2].join(","), new.name, new.peer);
    let (status, err) = run(&stale, &[]);
    assert!(!status.success() && err.contains("does not match"), "{err}");
    let other = Joiner::new("jr-other");
    let (status, err) = {
        let out = other
            .command(dir.path(), &format!("{},{}={}", full.join(","), other.name, other.peer), &[])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(!status.success() && err.contains("add this member first"), "{err}");
    // Nothing was written to the refused members' data directories.
    assert!(!dir.path().join(&new.name).join("member-ids").exists());
}

/// Adds a learner on `new`'s peer URL through `via`, starts it with `existing` and the members
/// `cluster` lists, and promotes it once it is in sync; returns its id and its process.
async fn grow(via: &str, new: &Joiner, cluster: &str, dir: &Path) -> (u64, ChildGuard) {
    let added = retry("member add", || async {
        let mut c = cluster_client(via).await;
        let req = pb::MemberAddRequest { peer_ur_ls: vec![new.peer.clone()], is_learner: true };
        c.member_add(req).await.map(|r| r.into_inner()).map_err(|s| s.to_string())
    })
    .await;
    let id = added.member.expect("the added member").id;
    let child = new.command(dir, cluster, &[]).stderr(common::stderr_for(&new.name)).spawn();
    let guard = ChildGuard(child.expect("runs tenure serve"));
    retry("member promote", || async {
        let mut c = cluster_client(via).await;
        c.member_promote(pb::MemberPromoteRequest { id }).await.map_err(|s| s.to_string())
    })
    .await;
    (id, guard)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_from_three_to_five_voters_and_shrinks_back_under_writes() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new("gs");
    let _servers: Vec<Server> = (0..3).map(|i| plan.start(i, dir.path())).collect();
    common::agreed_leader(&plan, &[0, 1, 2], PATIENCE).await;
    let founders: Vec<String> =
        (0..3).map(|i| format!("{}={}", plan.names[i], plan.peers[i])).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, endpoints) = (Arc::clone(&stop), plan.clients.clone());
        tokio::spawn(async move {
            let (mut acked, mut i) = (Vec::new(), 0usize);
            while !stop.load(Ordering::Relaxed) {
                let key = format!("g{i:05}");
                if put(&endpoints[i % 3], &key, "v").await.is_ok() {
                    acked.push(key);
                }
                i += 1;
            }
            acked
        })
    };

    let (n4, n5) = (Joiner::new("gs4"), Joiner::new("gs5"));
    let with4 = format!("{},{}={}", founders.join(","), n4.name, n4.peer);
    let (id4, _p4) = grow(&plan.clients[0], &n4, &with4, dir.path()).await;
    let with5 = format!("{with4},{}={}", n5.name, n5.peer);
    let (id5, _p5) = grow(&plan.clients[1], &n5, &with5, dir.path()).await;
    let five = members(&plan.clients[2]).await.unwrap();
    assert_eq!(five.len(), 5, "{five:?}");
    assert!(five.iter().all(|m| !m.is_learner), "{five:?}");

    for id in [id5, id4] {
        retry("member remove", || async {
            let mut c = cluster_client(&plan.clients[2]).await;
            c.member_remove(pb::MemberRemoveRequest { id }).await.map_err(|s| s.to_string())
        })
        .await;
    }
    let three = members(&plan.clients[0]).await.unwrap();
    assert_eq!(three.len(), 3, "{three:?}");
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(acked.len() > 10, "the client kept writing: {} writes", acked.len());
    for key in &acked {
        let v = retry("read", || get(&plan.clients[0], key, false)).await;
        assert!(v.is_some(), "{key} acknowledged but missing after the changes");
    }
}
