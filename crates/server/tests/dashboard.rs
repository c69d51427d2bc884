//! The dashboard (`tenure_server::dashboard`) against real members: the event stream's JSON
//! schema, the controls (which work under `tenure dev` and are refused elsewhere), members in
//! other processes (a member added to a dev cluster with MemberAdd; three `tenure serve`
//! processes, one with `--dashboard`), the scenario player's traces (the same on every run),
//! and the page itself in headless Chromium driven through chromedriver's WebDriver API
//! (skipped, with a note, where Debian's `chromium` and `chromium-driver` are not installed).
//!
//! Every cluster runs on free ports, never `tenure dev`'s, so these run beside other tests.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tenure_server::cli::dev;
use tenure_server::dashboard::{Dashboard, DevCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A dev cluster of three members on free ports with its dashboard.
struct Cluster {
    cluster: Arc<DevCluster>,
    dashboard: Dashboard,
    /// Each member's name and peer URL.
    peers: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let p = common::free_ports(7);
        let ports = [(p[0], p[1]), (p[2], p[3]), (p[4], p[5])];
        let dir = tempfile::tempdir().expect("temp dir");
        let configs = dev::configs(&ports, dir.path(), dev::Timing::default()).expect("configs");
        let members = dev::start(&configs).await.expect("members start");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", p[6])).await.expect("bind");
        let peers = configs
            .iter()
            .map(|c| (c.name.clone(), c.initial_advertise_peer_urls[0].to_string()))
            .collect();
        let (cluster, dashboard) =
            dev::start_dashboard(listener, configs.clone(), members).expect("dashboard");
        Cluster { cluster, dashboard, peers, _dir: dir }
    }

    fn addr(&self) -> String {
        self.dashboard.addr().to_string()
    }

    async fn stop(self) {
        drop(self.dashboard);
        self.cluster.shutdown().await.expect("clean shutdown");
    }
}

/// One HTTP/1.1 request (`Connection: close`): the status and the body.
async fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body.as_bytes()).await.expect("write");
    // Read the head, then exactly the body it announces: not every server closes the
    // connection after the answer (chromedriver keeps it open).
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "the connection closed before a response head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status");
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &raw[head_end..];
        let complete = match length {
            Some(n) => body.len() >= n,
            None if chunked => body.windows(5).any(|w| w == b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..]).into_owned();
    (status, if chunked { dechunk(&body) } else { body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

async fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = http(addr, "GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

async fn post(addr: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, text) = http(addr, "POST", path, body).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
}

/// Reads the event stream until `done` accepts a `state` message's document (bounded).
async fn follow_until(addr: &str, patience: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head =
        format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let deadline = Instant::now() + patience;
    let mut buf = String::new();
    let mut raw = [0u8; 16384];
    let mut last = Value::Null;
    loop {
        // Each message is `event: state` and one `data:` line; the chunk framing around them
        // is skipped by looking for the lines themselves.
        while let Some(start) = buf.find("event: state\ndata: ") {
            let from = start + "event: state\ndata: ".len();
            let Some(len) = buf[from..].find('\n') else { break };
            let doc: Value = serde_json::from_str(&buf[from..from + len]).expect("state is JSON");
            buf.drain(..from + len);
            if done(&doc) {
                return doc;
            }
            last = doc;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the stream never showed what was awaited; last: {last:#}");
        match tokio::time::timeout(left, s.read(&mut raw)).await {
            Ok(Ok(n)) if n > 0 => buf.push_str(&String::from_utf8_lossy(&raw[..n])),
            Ok(r) => panic!("the event stream ended: {r:?}"),
            Err(_) => panic!("the stream never showed what was awaited; last: {last:#}"),
        }
    }
}

fn leaders(doc: &Value) -> Vec<String> {
    doc["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["role"] == "leader" && m["state"] == "up")
        .map(|m| m["name"].as_str().expect("name").to_string())
        .collect()
}

fn assert_u64(v: &Value, field: &str) {
    assert!(v[field].is_u64(), "{field} is a u64 in {v:#}");
}

fn assert_name_or_null(v: &Value, field: &str) {
    assert!(v[field].is_null() || v[field].is_string(), "{field} is a name or null in {v:#}");
}

/// The schema of the document (see `dashboard::state`), every field checked.
fn check_schema(doc: &Value) {
    assert_eq!(doc["version"], 2);
    assert!(doc["mode"] == "dev" || doc["mode"] == "serve", "{doc:#}");
    assert_u64(doc, "now_ms");
    assert_name_or_null(doc, "leader");
    let members = doc["members"].as_array().expect("members is an array");
    for m in members {
        for f in ["name", "id", "client_url", "state"] {
            assert!(m[f].is_string(), "{f} in {m:#}");
        }
        let states = ["up", "paused", "down", "unreachable", "removed"];
        assert!(states.contains(&m["state"].as_str().unwrap()), "{m:#}");
        assert!(m["isolated"].is_boolean());
        assert!(m["local"].is_boolean() && m["learner"].is_boolean(), "{m:#}");
        let role = &m["role"];
        assert!(
            role.is_null()
                || ["leader", "follower", "candidate", "pre-candidate"]
                    .contains(&role.as_str().expect("role is a string")),
            "{m:#}"
        );
        for f in
            ["term", "last_index", "commit_index", "applied_index", "snapshot_index", "first_index"]
        {
            assert_u64(m, f);
        }
        assert_name_or_null(m, "vote");
        assert_name_or_null(m, "leader");
        for f in ["peers", "peers_reachable"] {
            assert!(m[f].as_array().expect(f).iter().all(Value::is_string), "{f} in {m:#}");
        }
        let reachable = m["peers_reachable"].as_array().unwrap();
        assert!(reachable.iter().all(|p| m["peers"].as_array().unwrap().contains(p)));
        assert!(m["applied_per_s"].as_array().expect("samples").iter().all(Value::is_number));
        for f in ["write_latency_ms", "fsync_ms"] {
            let samples = m[f].as_array().expect(f);
            assert!(samples.iter().all(|s| s.is_null() || s.is_number()), "{f} in {m:#}");
        }
        assert!(m["applied_index"].as_u64() <= m["commit_index"].as_u64(), "{m:#}");
        assert!(m["commit_index"].as_u64() <= m["last_index"].as_u64(), "{m:#}");
    }
    let kinds =
        ["role", "vote", "commit", "snapshot_taken", "snapshot_installed", "members", "control"];
    for e in doc["events"].as_array().expect("events is an array") {
        assert_u64(e, "seq");
        assert_u64(e, "at_ms");
        assert!(e["member"].is_string() && e["text"].as_str().is_some_and(|t| !t.is_empty()));
        let kind = e["kind"].as_str().expect("kind");
        assert!(kinds.contains(&kind), "{e:#}");
        match kind {
            "role" => {
                assert_u64(e, "term");
                assert!(e["role"].is_string());
                assert_name_or_null(e, "leader");
            }
            "vote" => {
                assert_u64(e, "term");
                assert!(e["candidate"].is_string() && e["granted"].is_boolean(), "{e:#}");
            }
            "commit" | "snapshot_taken" | "snapshot_installed" => assert_u64(e, "index"),
            _ => {}
        }
    }
    let timeline = doc["timeline"].as_array().expect("timeline is an array");
    for t in timeline {
        assert_u64(t, "term");
        assert_u64(t, "at_ms");
        assert_name_or_null(t, "leader");
    }
    let terms: Vec<u64> = timeline.iter().map(|t| t["term"].as_u64().unwrap()).collect();
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "the timeline is in term order: {terms:?}");
}

#[test]
fn the_schema_check_fails_on_a_bad_document() {
    let good = json!({
        "version": 2, "mode": "dev", "now_ms": 1, "leader": null, "events": [], "timeline": [],
        "members": [{
            "name": "n1", "id": "1", "client_url": "http://x", "state": "up", "local": true,
            "learner": false,
            "isolated": false, "role": "follower", "term": 1, "vote": null, "leader": null,
            "last_index": 3, "commit_index": 2, "applied_index": 2, "snapshot_index": 0,
            "first_index": 1, "peers": ["n2"], "peers_reachable": ["n2"],
            "applied_per_s": [0.0], "write_latency_ms": [null], "fsync_ms": [1.5],
        }],
    });
    check_schema(&good);
    for (path, bad) in [
        ("/members/0/role", json!("king")),
        ("/members/0/state", json!("lost")),
        ("/members/0/learner", json!(null)),
        ("/members/0/applied_index", json!(9)),
        ("/members/0/peers_reachable", json!(["n7"])),
        (
            "/timeline",
            json!([{"term": 2, "leader": null, "at_ms": 1}, {"term": 1, "leader": null, "at_ms": 1}]),
        ),
        ("/events", json!([{"seq": 1, "at_ms": 1, "member": "n1", "kind": "vote", "text": "t"}])),
    ] {
        let mut doc = good.clone();
        *doc.pointer_mut(path).expect(path) = bad;
        let caught = std::panic::catch_unwind(|| check_schema(&doc)).is_err();
        assert!(caught, "the schema check let a bad {path} through");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_members_elections_votes_and_commits_in_its_schema() {
    let c = Cluster::start().await;
    let addr = c.addr();
    // Elections with their votes, then a write's commit on every member.
    let doc = follow_until(&addr, Duration::from_secs(30), |d| leaders(d).len() == 1).await;
    check_schema(&doc);
    assert_eq!(doc["mode"], "dev");
    assert_eq!(doc["members"].as_array().unwrap().len(), 3);
    let leader = leaders(&doc).remove(0);
    let (status, put) = post(&addr, "/api/put", Some(&json!({"key": "k", "value": "v"}))).await;
    assert_eq!(status, 200, "{put}");
    let revision = put["revision"].as_i64().expect("a revision");
    assert!(revision >= 2, "{put}");
    let doc = follow_until(&addr, Duration::from_secs(10), |d| {
        let events = d["events"].as_array().unwrap();
        let wrote = events
            .iter()
            .any(|e| e["kind"] == "control" && e["text"].as_str().unwrap().contains("wrote k=v"));
        let committed_everywhere = d["members"].as_array().unwrap().iter().all(|m| {
            m["commit_index"] == d["members"][0]["commit_index"]
                && m["peers_reachable"].as_array().unwrap().len() == 2
        });
        wrote && committed_everywhere
    })
    .await;
    check_schema(&doc);
    let events = doc["events"].as_array().unwrap();
    let has = |kind: &str| events.iter().any(|e| e["kind"] == kind);
    assert!(has("role") && has("vote") && has("commit") && has("members"), "{doc:#}");
    assert!(
        events.iter().any(|e| e["kind"] == "role"
            && e["role"] == "leader"
            && e["member"] == leader.as_str()),
        "the leader's election is an event"
    );
    let timeline = doc["timeline"].as_array().unwrap();
    assert_eq!(timeline.last().unwrap()["leader"], leader.as_str(), "{timeline:?}");
    for m in doc["members"].as_array().unwrap() {
        assert_eq!(m["leader"], leader.as_str());
        assert_eq!(m["state"], "up");
    }
    // `/api/state` serves the same document.
    check_schema(&get_json(&addr, "/api/state").await);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_the_leader_elects_another_and_kill_and_restart_bring_a_member_back() {
    let c = Cluster::start().await;
    let addr = c.addr();
    let doc = follow_until(&addr, Duration::from_secs(30), |d| leaders(d).len() == 1).await;
    let old = leaders(&doc).remove(0);
    let old_term = doc["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["term"].as_u64().unwrap())
        .max()
        .unwrap();

    // S8 by hand: the isolated leader cannot stay leader of the majority's term.
    let (status, r) = post(&addr, "/api/leader/isolate", None).await;
    assert_eq!(status, 200, "{r}");
    let doc = follow_until(&addr, Duration::from_secs(20), |d| {
        d["members"].as_array().unwrap().iter().any(|m| {
            m["role"] == "leader"
                && m["name"] != old.as_str()
                && m["term"].as_u64().unwrap() > old_term
        })
    })
    .await;
    let isolated = doc["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == old.as_str())
        .unwrap()
        .clone();
    assert_eq!(isolated["isolated"], true);
    let (status, r) = post(&addr, &format!("/api/members/{old}/heal"), None).await;
    assert_eq!(status, 200, "{r}");

    // Kill the new leader; a member that is down refuses what needs it running.
    let doc = follow_until(&addr, Duration::from_secs(20), |d| leaders(d).len() == 1).await;
    let victim = leaders(&doc).remove(0);
    let (status, r) = post(&addr, &format!("/api/members/{victim}/kill"), None).await;
    assert_eq!(status, 200, "{r}");
    let (status, r) = post(&addr, &format!("/api/members/{victim}/pause"), None).await;
    assert_eq!(status, 409, "{r}");
    assert!(r["error"].as_str().unwrap().contains("down"), "{r}");
    let doc = follow_until(&addr, Duration::from_secs(20), |d| {
        let l = leaders(d);
        l.len() == 1 && l[0] != victim
    })
    .await;
    check_schema(&doc);
    assert!(
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "control" && e["member"] == victim.as_str())
    );
    let (status, r) = post(&addr, &format!("/api/members/{victim}/restart"), None).await;
    assert_eq!(status, 200, "{r}");
    let (status, _) = post(&addr, &format!("/api/members/{victim}/restart"), None).await;
    assert_eq!(status, 409, "a running member is not restarted");
    follow_until(&addr, Duration::from_secs(20), |d| {
        d["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["state"] == "up" && !m["leader"].is_null())
    })
    .await;
    let (status, r) = post(&addr, "/api/members/n9/kill", None).await;
    assert_eq!(status, 404, "{r}");
    let (status, r) = post(&addr, "/api/members/n1/explode", None).await;
    assert_eq!(status, 404, "{r}");
    let (status, r) = post(&addr, "/api/put", Some(&json!({"key": 1}))).await;
    assert_eq!(status, 400, "{r}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_tenure_dev_the_controls_are_refused_and_nothing_changes() {
    let c = Cluster::start().await;
    // A dashboard without controls, as `tenure serve --dashboard` runs one (there of its own
    // member only), watching this cluster's members.
    let doc = follow_until(&c.addr(), Duration::from_secs(30), |d| leaders(d).len() == 1).await;
    assert_eq!(doc["members"].as_array().unwrap().len(), 3);
    let listener =
        tokio::net::TcpListener::bind(("127.0.0.1", common::free_port())).await.expect("bind");
    let sources = c.cluster.sources();
    let serve = Dashboard::start(listener, sources, None).expect("dashboard");
    let addr = serve.addr().to_string();
    let before = get_json(&addr, "/api/state").await;
    assert_eq!(before["mode"], "serve");
    check_schema(&before);
    for path in [
        "/api/members/n1/kill".to_string(),
        "/api/members/n1/restart".into(),
        "/api/members/n1/pause".into(),
        "/api/members/n1/isolate".into(),
        "/api/members/n9/heal".into(),
        "/api/leader/kill".into(),
        "/api/leader/isolate".into(),
    ] {
        let (status, r) = post(&addr, &path, None).await;
        assert_eq!(status, 403, "{path}: {r}");
        assert!(r["error"].as_str().unwrap().contains("only under `tenure dev`"), "{r}");
    }
    let (status, r) = post(&addr, "/api/put", Some(&json!({"key": "k", "value": "v"}))).await;
    assert_eq!(status, 403, "{r}");
    // Nothing was done: every member still runs, none isolated, no control noted.
    let after = follow_until(&addr, Duration::from_secs(5), |_| true).await;
    for m in after["members"].as_array().unwrap() {
        assert_eq!(m["state"], "up", "{m:#}");
        assert_eq!(m["isolated"], false, "{m:#}");
    }
    assert!(!after["events"].as_array().unwrap().iter().any(|e| e["kind"] == "control"));
    // The page and the scenario player are served all the same.
    let (status, page) = http(&addr, "GET", "/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("Scenario player"));
    drop(serve);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_the_page_plays_replays_identically_and_matches_the_simulator() {
    let c = Cluster::start().await;
    let addr = c.addr();
    let list = get_json(&addr, "/api/scenarios").await;
    let ids: Vec<String> =
        list.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, tenure_sim::scenario::ids());
    for required in ["s1", "s2", "s3", "s4", "s5", "s6a", "s7", "s8", "s9", "s10", "s11a", "s12"] {
        assert!(ids.iter().any(|i| i == required), "{required} is playable");
    }
    for id in &ids {
        let first = get_json(&addr, &format!("/api/scenarios/{id}")).await;
        let again = get_json(&addr, &format!("/api/scenarios/{id}")).await;
        assert_eq!(first, again, "{id} replays identically");
        let run = tenure_sim::scenario::run(tenure_sim::scenario::find(id).unwrap()).unwrap();
        let steps = first["steps"].as_array().unwrap();
        assert_eq!(steps.len(), run.steps.len(), "{id}");
        for (s, r) in steps.iter().zip(&run.steps) {
            assert_eq!(s["line"], r.line.as_str());
            assert_eq!(s["explanation"], r.explanation.as_str());
            assert!(!s["command_explanation"].as_str().unwrap().is_empty());
            if !r.line.is_empty() {
                assert!(!r.explanation.is_empty(), "{id}: {} unexplained", r.line);
            }
        }
    }
    let (status, _) = http(&addr, "GET", "/api/scenarios/s99", None).await;
    assert_eq!(status, 404);
    c.stop().await;
}

// ----- members in other processes ----------------------------------------------------------

/// `tenure serve` for a member joining the cluster whose members `cluster` lists (with it),
/// with `--initial-cluster-state existing`, killed when dropped.
fn join(
    dir: &std::path::Path,
    name: &str,
    client: &str,
    peer: &str,
    cluster: &str,
    token: &str,
) -> common::Server {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tenure"))
        .args(["serve", "--name", name])
        .arg("--data-dir")
        .arg(dir.join(name))
        .args(["--listen-client-urls", client, "--advertise-client-urls", client])
        .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
        .args(["--initial-cluster", cluster, "--initial-cluster-state", "existing"])
        .args(["--initial-cluster-token", token])
        .stdout(std::process::Stdio::null())
        .stderr(common::stderr_for(name))
        .spawn()
        .expect("runs tenure serve");
    common::Server::from_child(child)
}

/// Calls `f` until it succeeds (membership calls are refused while a change is in progress or
/// during an election), bounded.
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "{what}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Adds a learner on `peer` through the member at `via`; returns its id.
async fn add_learner(via: &str, peer: &str) -> u64 {
    use tenure_server::pb::etcdserverpb as pb;
    let added = retry("member add", || async {
        let mut c = pb::cluster_client::ClusterClient::connect(via.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let req = pb::MemberAddRequest { peer_ur_ls: vec![peer.to_string()], is_learner: true };
        c.member_add(req).await.map(|r| r.into_inner()).map_err(|s| s.to_string())
    })
    .await;
    added.member.expect("the added member").id
}

/// Removes member `id` through the member at `via`.
async fn remove_member(via: &str, id: u64) {
    use tenure_server::pb::etcdserverpb as pb;
    retry("member remove", || async {
        let mut c = pb::cluster_client::ClusterClient::connect(via.to_string())
            .await
            .map_err(|e| e.to_string())?;
        c.member_remove(pb::MemberRemoveRequest { id }).await.map_err(|s| s.to_string())
    })
    .await;
}

fn member<'d>(doc: &'d Value, name: &str) -> Option<&'d Value> {
    doc["members"].as_array().unwrap().iter().find(|m| m["name"] == name)
}

/// Polls `GET /api/state` (bounded) until `done` accepts it.
async fn poll_until(
    addr: &str,
    patience: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + patience;
    loop {
        let doc = get_json(addr, "/api/state").await;
        if done(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "the dashboard never showed {what}: {doc:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_with_member_add_shows_up_as_a_member_and_goes_when_removed() {
    let c = Cluster::start().await;
    let addr = c.addr();
    follow_until(&addr, Duration::from_secs(30), |d| leaders(d).len() == 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ports = common::free_ports(2);
    let (client, peer) =
        (format!("http://127.0.0.1:{}", ports[0]), format!("http://127.0.0.1:{}", ports[1]));
    let doc = get_json(&addr, "/api/state").await;
    let n1 = member(&doc, "n1").expect("n1")["client_url"].as_str().unwrap().to_string();
    let id = add_learner(&n1, &peer).await;
    // In the configuration before it runs: shown as a learner that cannot be read yet.
    let doc = poll_until(&addr, Duration::from_secs(10), "the added learner", |d| {
        d["members"].as_array().unwrap().len() == 4
    })
    .await;
    check_schema(&doc);
    let added = doc["members"].as_array().unwrap().iter().find(|m| m["local"] == false).unwrap();
    assert_eq!(added["learner"], true, "{added:#}");
    assert_eq!(added["state"], "unreachable", "{added:#}");

    // Started in a process of its own, it is read from its client URL: a full member with its
    // role, indexes and events, and the others list it as a peer by name.
    let cluster = c
        .peers
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .chain(std::iter::once(format!("n4={peer}")))
        .collect::<Vec<_>>()
        .join(",");
    let _n4 = join(dir.path(), "n4", &client, &peer, &cluster, "tenure-dev");
    let doc = poll_until(&addr, Duration::from_secs(30), "n4 as a member", |d| {
        let Some(n4) = member(d, "n4") else { return false };
        let leader_commit = d["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "leader")
            .and_then(|m| m["commit_index"].as_u64());
        n4["state"] == "up"
            && n4["role"] == "follower"
            && n4["applied_index"].as_u64().is_some_and(|a| a > 0)
            && n4["applied_index"].as_u64() >= leader_commit.map(|c| c.saturating_sub(5))
    })
    .await;
    check_schema(&doc);
    let n4 = member(&doc, "n4").unwrap();
    assert_eq!((n4["learner"].as_bool(), n4["local"].as_bool()), (Some(true), Some(false)));
    assert_eq!(n4["client_url"], client.as_str());
    assert_eq!(n4["id"], format!("{id:x}").as_str());
    assert!(n4["leader"].as_str().is_some_and(|l| l.starts_with('n')), "{n4:#}");
    let doc = poll_until(&addr, Duration::from_secs(10), "n4's events", |d| {
        d["events"].as_array().unwrap().iter().any(|e| e["member"] == "n4")
    })
    .await;
    assert!(
        doc["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["peers"].as_array().unwrap().contains(&json!("n4"))),
        "a member lists n4 as a peer by name: {doc:#}"
    );
    // Its controls are not the dev cluster's.
    let (status, _) = post(&addr, "/api/members/n4/kill", None).await;
    assert_eq!(status, 404);

    remove_member(&n1, id).await;
    let doc =
        poll_until(&addr, Duration::from_secs(20), "n4 gone", |d| member(d, "n4").is_none()).await;
    assert_eq!(doc["members"].as_array().unwrap().len(), 3);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenure_serve_dashboard_shows_every_member_of_three_processes() {
    let plan = common::Plan::new("s");
    let dir = tempfile::tempdir().expect("temp dir");
    let dashboard = format!("127.0.0.1:{}", common::free_port());
    let _s1 = plan.start_with(0, dir.path(), &["--dashboard", &dashboard]);
    let _s2 = plan.start(1, dir.path());
    let s3 = plan.start(2, dir.path());
    // The dashboard of s1 lists all three, read from their client URLs, each with its role:
    // exactly one leader, the same term everywhere.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&dashboard).await.is_err() {
        assert!(Instant::now() < deadline, "the dashboard never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let doc = poll_until(&dashboard, Duration::from_secs(30), "three members, one leader", |d| {
        let members = d["members"].as_array().unwrap();
        members.len() == 3
            && members.iter().all(|m| m["state"] == "up" && !m["leader"].is_null())
            && leaders(d).len() == 1
    })
    .await;
    check_schema(&doc);
    assert_eq!(doc["mode"], "serve");
    let mut names: Vec<&str> =
        doc["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["s1", "s2", "s3"]);
    for m in doc["members"].as_array().unwrap() {
        assert_eq!(m["local"], m["name"] == "s1", "{m:#}");
        assert_eq!(m["learner"], false);
        assert_eq!(
            m["client_url"],
            plan.clients[m["name"].as_str().unwrap()[1..].parse::<usize>().unwrap() - 1].as_str()
        );
    }
    let leader = leaders(&doc).remove(0);
    for m in doc["members"].as_array().unwrap() {
        assert_eq!(m["leader"], leader.as_str(), "{m:#}");
    }
    // Events of the other processes reach it (their elections, votes and commits).
    poll_until(&dashboard, Duration::from_secs(10), "events of s2 and s3", |d| {
        let events = d["events"].as_array().unwrap();
        ["s2", "s3"].iter().all(|n| events.iter().any(|e| e["member"] == *n))
    })
    .await;
    // Watch only.
    for path in ["/api/members/s2/kill", "/api/leader/isolate", "/api/put"] {
        let (status, r) = post(&dashboard, path, Some(&json!({"key": "k", "value": "v"}))).await;
        assert_eq!(status, 403, "{path}: {r}");
    }
    // A member added later, in a process of its own, shows up as a learner member.
    let ports = common::free_ports(2);
    let (client, peer) =
        (format!("http://127.0.0.1:{}", ports[0]), format!("http://127.0.0.1:{}", ports[1]));
    add_learner(&plan.clients[0], &peer).await;
    let cluster = plan
        .names
        .iter()
        .zip(&plan.peers)
        .map(|(n, p)| format!("{n}={p}"))
        .chain(std::iter::once(format!("s4={peer}")))
        .collect::<Vec<_>>()
        .join(",");
    let _s4 = join(dir.path(), "s4", &client, &peer, &cluster, "etcd-cluster");
    poll_until(&dashboard, Duration::from_secs(30), "s4 as a learner member", |d| {
        member(d, "s4")
            .is_some_and(|m| m["state"] == "up" && m["learner"] == true && m["role"] == "follower")
    })
    .await;
    // A member that stops answering is shown unreachable, the others go on.
    s3.kill();
    let doc = poll_until(&dashboard, Duration::from_secs(20), "s3 unreachable", |d| {
        member(d, "s3").is_some_and(|m| m["state"] == "unreachable")
    })
    .await;
    check_schema(&doc);
    assert_eq!(member(&doc, "s2").unwrap()["state"], "up");
}

// ----- the page in headless Chromium ------------------------------------------------------

/// chromedriver and the browser it drives, if installed.
fn browser() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|n| {
            let p = std::path::Path::new("/usr/bin").join(n);
            p.exists().then_some(p)
        })
    };
    Some((find(&["chromedriver"])?, find(&["chromium", "chromium-browser", "google-chrome"])?))
}

/// A chromedriver process, killed (by its own pid) when dropped.
struct Driver {
    child: std::process::Child,
    addr: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Ending the session ends the browser (killing chromedriver would leave it running),
        // also when the test failed half-way.
        if !self.session.is_empty() {
            use std::io::{Read, Write};
            if let Ok(mut s) = std::net::TcpStream::connect(&self.addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let request = format!(
                    "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
                    self.session, self.addr
                );
                let _ = s.write_all(request.as_bytes());
                let _ = s.read(&mut [0u8; 1024]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    async fn start(driver: &std::path::Path, chromium: &std::path::Path) -> Driver {
        let port = common::free_port();
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        let mut d = Driver { child, addr, session: String::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(&d.addr).await.is_ok() {
                let (status, body) = http(&d.addr, "GET", "/status", None).await;
                if status == 200 && body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium.to_string_lossy(),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1100", "--hide-scrollbars"],
        }}}});
        let (status, r) = post(&d.addr, "/session", Some(&caps)).await;
        assert_eq!(status, 200, "new session: {r}");
        d.session = r["value"]["sessionId"].as_str().expect("a session id").to_string();
        d
    }

    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, text) = http(&self.addr, method, &path, body).await;
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    async fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({"script": js, "args": []}))).await
    }

    async fn click(&self, css: &str) {
        let e = self
            .call("POST", "/element", Some(&json!({"using": "css selector", "value": css})))
            .await;
        let id = e[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {e}")).to_string();
        self.call("POST", &format!("/element/{id}/click"), Some(&json!({}))).await;
    }

    async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine;
        let png = self.call("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64"))
            .expect("a PNG");
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-test");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write screenshot");
        path
    }

    /// What the page shows of each member: name, role (empty unless up), state, commit index.
    async fn members(&self) -> Vec<(String, String, String, u64)> {
        let v = self
            .script(
                "return [...document.querySelectorAll('#members .member')].map(m => [m.dataset.member, \
                 m.dataset.role, m.dataset.state, m.querySelector('[data-field=commit]').textContent]);",
            )
            .await;
        v.as_array()
            .expect("an array")
            .iter()
            .map(|m| {
                let s = |i: usize| m[i].as_str().unwrap_or_default().to_string();
                (s(0), s(1), s(2), s(3).parse().unwrap_or(0))
            })
            .collect()
    }

    /// Polls the page (bounded) until `done` accepts what it shows of the members.
    async fn wait_for(
        &self,
        patience: Duration,
        what: &str,
        done: impl Fn(&[(String, String, String, u64)]) -> bool,
    ) -> Vec<(String, String, String, u64)> {
        let deadline = Instant::now() + patience;
        loop {
            let shown = self.members().await;
            if done(&shown) {
                return shown;
            }
            assert!(Instant::now() < deadline, "the page never showed {what}: {shown:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn shown_leaders(shown: &[(String, String, String, u64)]) -> Vec<String> {
    shown.iter().filter(|m| m.1 == "leader").map(|m| m.0.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_headless_chromium_shows_the_cluster_a_write_and_a_new_leader_after_a_kill() {
    let Some((driver, chromium)) = browser() else {
        eprintln!(
            "note: skipped: chromium and chromedriver are not installed \
             (apt-get install -y chromium chromium-driver)"
        );
        return;
    };
    let c = Cluster::start().await;
    let d = Driver::start(&driver, &chromium).await;
    d.call("POST", "/url", Some(&json!({"url": format!("http://{}/?scenario=s8", c.addr())})))
        .await;

    // Three members, exactly one leader.
    let shown = d
        .wait_for(Duration::from_secs(30), "three members and one leader", |s| {
            s.len() == 3 && shown_leaders(s).len() == 1 && s.iter().all(|m| m.2 == "up")
        })
        .await;
    let leader = shown_leaders(&shown).remove(0);
    let commit = |s: &[(String, String, String, u64)]| s.iter().find(|m| m.0 == leader).unwrap().3;
    let before = commit(&shown);

    // A write from the page's own form shows on the page within a second.
    d.click("#put-button").await;
    let clicked = Instant::now();
    d.wait_for(Duration::from_secs(10), "the write's commit", |s| commit(s) > before).await;
    let took = clicked.elapsed();
    assert!(took < Duration::from_secs(1), "the page showed the write after {took:?}");
    // The write's own answer may reach the page after the event stream showed its commit.
    let result = "return document.querySelector('#control-result').textContent;";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = d.script(result).await;
        if shown.as_str().unwrap_or_default().contains("revision") {
            break;
        }
        assert!(Instant::now() < deadline, "the write's answer never showed: {shown}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // The scenario player has loaded its first scenario and steps forward.
    let step_count = "return document.querySelector('#step-count').textContent;";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.script(step_count).await.as_str().unwrap_or_default().starts_with("step 1 of ") {
        assert!(Instant::now() < deadline, "the scenario player never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.click("#next").await;
    d.click("#next").await;
    d.click("#prev").await;
    let step = d.script(step_count).await;
    assert!(step.as_str().unwrap().starts_with("step 2 of "), "{step}");
    let explained = d.script("return document.querySelector('#explanation').textContent;").await;
    assert!(!explained.as_str().unwrap().is_empty(), "each step is explained");
    let shot = d.screenshot("dashboard.png").await;
    eprintln!("screenshot: {}", shot.display());

    // S7 and S10, played on real replicas, are in the player too: pick each, go to its last
    // step and see the state it ends in.
    for (id, summary, last) in [
        ("s7", "sequence number", "store: y=1 version=2"),
        ("s10", "fsynced", "store: k=v version=1"),
    ] {
        d.script(&format!(
            "const s = document.querySelector('#scenario'); s.value = '{id}'; \
             s.dispatchEvent(new Event('change'));"
        ))
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let shown = "return document.querySelector('#summary').textContent;";
        while !d.script(shown).await.as_str().unwrap_or_default().contains(summary) {
            assert!(Instant::now() < deadline, "the player never loaded {id}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d.click("#last").await;
        let line = d.script("return document.querySelector('#line').textContent;").await;
        assert!(line.as_str().unwrap_or_default().contains(last), "{id} ends with {line}");
    }

    // The kill button on the leader: the page shows it down and another member leading.
    d.click(&format!("button[data-action=kill][data-member={leader}]")).await;
    let shown = d
        .wait_for(Duration::from_secs(30), "a new leader", |s| {
            let l = shown_leaders(s);
            l.len() == 1 && l[0] != leader
        })
        .await;
    assert_eq!(shown.iter().find(|m| m.0 == leader).unwrap().2, "down");
    let shot = d.screenshot("dashboard-after-kill.png").await;
    eprintln!("screenshot: {}", shot.display());
    drop(d);
    c.stop().await;
}
