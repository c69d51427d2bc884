//! Maintenance end to end on in-process clusters: HashKV (equal on every member, etcd's answers
//! and errors, compared with etcd 3.4 where installed), the periodic corruption check (a member
//! corrupted on purpose is found and CORRUPT refuses writes; equal stores never alarm), the
//! backend quota (etcd's error, NOSPACE in `etcdctl alarm list`, compaction + defragment +
//! disarm make room), `Status.dbSize` and auto-compaction in both modes.

mod common;
mod servers;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenure_server::api::maintenance::Quota;
use tenure_server::cli::ServeConfig;
use tenure_server::cli::dev::{self, Timing};
use tenure_server::compactor::AutoCompaction;
use tenure_server::corruption::CorruptCheck;
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;
use tenure_storage::{Disk, RealDisk, SnapshotReader, SnapshotWriter};
use tonic::transport::Channel;

const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };
const PATIENCE: Duration = Duration::from_secs(30);

struct Cluster {
    configs: Vec<ServeConfig>,
    members: Vec<Option<Member>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(adjust: impl Fn(&mut ServeConfig)) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> =
            common::free_ports(6).chunks(2).map(|c| (c[0], c[1])).collect();
        let mut configs = dev::configs(&ports, dir.path(), TIMING).expect("configs");
        configs.iter_mut().for_each(adjust);
        let members = dev::start(&configs).await.expect("cluster starts");
        let c = Cluster { configs, members: members.into_iter().map(Some).collect(), _dir: dir };
        c.leader().await;
        c
    }

    async fn leader(&self) -> usize {
        common::wait_for_leader(&self.members, &self.configs, PATIENCE).await
    }

    fn url(&self, i: usize) -> String {
        self.configs[i].advertise_client_urls[0].to_string()
    }

    async fn channel(&self, i: usize) -> Channel {
        Channel::from_shared(self.url(i)).unwrap().connect().await.expect("connect")
    }

    async fn kv(&self, i: usize) -> pb::kv_client::KvClient<Channel> {
        pb::kv_client::KvClient::new(self.channel(i).await)
    }

    async fn maintenance(&self, i: usize) -> pb::maintenance_client::MaintenanceClient<Channel> {
        pb::maintenance_client::MaintenanceClient::new(self.channel(i).await)
    }

    async fn stop(&mut self, i: usize) {
        self.members[i].take().expect("running").shutdown().await.expect("clean shutdown");
    }

    async fn restart(&mut self, i: usize) {
        let m = Member::start(&self.configs[i], &BTreeMap::new()).await.expect("restarts");
        self.members[i] = Some(m);
    }

    /// Waits until every running member has applied `revision`.
    async fn applied_everywhere(&self, revision: i64) {
        let deadline = Instant::now() + PATIENCE;
        for m in self.members.iter().flatten() {
            while m.handle().status().revision < revision {
                assert!(Instant::now() < deadline, "revision {revision} not applied");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    async fn alarms(&self, i: usize) -> Vec<(u64, i32)> {
        let get = pb::AlarmRequest { action: 0, member_id: 0, alarm: 0 };
        let r = self.maintenance(i).await.alarm(get).await.expect("alarm list").into_inner();
        r.alarms.into_iter().map(|a| (a.member_id, a.alarm)).collect()
    }

    async fn shutdown(mut self) {
        for i in 0..3 {
            if self.members[i].is_some() {
                self.stop(i).await;
            }
        }
    }
}

fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> pb::PutRequest {
    pb::PutRequest { key: key.into().into(), value: value.into().into(), ..Default::default() }
}

const NOSPACE: i32 = 1;
const CORRUPT: i32 = 2;

/// HashKV at one revision is the same on every member, also after a compaction and while
/// writes go on past it, and answers etcd's errors for compacted and future revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hash_kv_is_equal_on_every_member() {
    let c = Cluster::start(|_| {}).await;
    let mut kv = c.kv(0).await;
    for i in 0..60 {
        kv.put(put(format!("k{}", i % 9), format!("v{i}"))).await.unwrap();
    }
    let revision = 61;
    let compact = pb::CompactionRequest { revision: 30, physical: true };
    kv.compact(compact).await.unwrap();
    kv.put(put("later", "x")).await.unwrap();
    c.applied_everywhere(62).await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let r = c.maintenance(i).await.hash_kv(pb::HashKvRequest { revision }).await.unwrap();
        let r = r.into_inner();
        assert_eq!(r.compact_revision, 30);
        assert_eq!(r.header.unwrap().revision, 62, "the header holds the current revision");
        hashes.push(r.hash);
        let whole = c.maintenance(i).await.hash(pb::HashRequest {}).await.unwrap().into_inner();
        assert_ne!(whole.hash, 0);
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    let now = c.maintenance(0).await.hash_kv(pb::HashKvRequest { revision: 0 }).await.unwrap();
    assert_ne!(now.into_inner().hash, hashes[0], "the later put is in the current hash");
    c.shutdown().await;
}

/// What etcd 3.4 and tenure answer alike: compact_revision -1 before any compaction, then the
/// compaction's revision; etcd's errors for a compacted and a future revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hash_kv_answers_as_etcd_does() {
    servers::compare("hash_kv_answers_as_etcd_does", |ch| async move {
        let mut kv = pb::kv_client::KvClient::new(ch.clone());
        let mut m = pb::maintenance_client::MaintenanceClient::new(ch);
        let mut t = Vec::new();
        for i in 0..5 {
            kv.put(put("k", format!("{i}"))).await.unwrap();
        }
        // A barrier: the member answering HashKV has applied the puts.
        kv.range(pb::RangeRequest { key: "k".into(), ..Default::default() }).await.unwrap();
        let r = m.hash_kv(pb::HashKvRequest { revision: 0 }).await.unwrap().into_inner();
        t.push(format!(
            "compact_revision {} revision {}",
            r.compact_revision,
            r.header.unwrap().revision
        ));
        kv.compact(pb::CompactionRequest { revision: 4, physical: true }).await.unwrap();
        for revision in [0, 3, 4, 5, 6, 7] {
            t.push(match m.hash_kv(pb::HashKvRequest { revision }).await {
                Ok(r) => {
                    format!("{revision}: compact_revision {}", r.into_inner().compact_revision)
                }
                Err(e) => format!("{revision}: {}", servers::error_line(&e)),
            });
        }
        t
    })
    .await;
}

/// Writes the newest snapshot of the member in `dir` again with `key`'s value changed, at
/// the same index and revision: data corruption that no checksum catches.
fn corrupt_snapshot(dir: &Path, key: &str) {
    let disk: Arc<dyn Disk> = Arc::new(RealDisk);
    let reader = SnapshotReader::open_latest(&*disk, dir).unwrap().expect("a snapshot was taken");
    let meta = reader.meta().clone();
    let mut input = tenure_replica::snapshot::ChunkReader::new(reader);
    let mut store = tenure_kv::Store::restore(tenure_kv::Config::default(), &mut input).unwrap();
    assert!(store.corrupt_value_for_test(key.as_bytes(), "corrupted".into()), "{key} is live");
    let writer = SnapshotWriter::create(Arc::clone(&disk), dir, meta).unwrap();
    let mut out = tenure_replica::snapshot::ChunkWriter::new(writer);
    store.write_snapshot(&mut out).unwrap();
    out.finish().unwrap();
}

/// Writes a key, then enough more for every member to take snapshots (every 20 entries), and a
/// compaction.
async fn fill(c: &Cluster) {
    let mut kv = c.kv(0).await;
    kv.put(put("victim", "original")).await.unwrap();
    for i in 0..80 {
        kv.put(put(format!("k{}", i % 13), format!("v{i}"))).await.unwrap();
    }
    kv.compact(pb::CompactionRequest { revision: 50, physical: true }).await.unwrap();
}

/// Stops a follower, corrupts its store on disk and restarts it; returns (leader, victim).
async fn corrupt_a_follower(c: &mut Cluster) -> (usize, usize) {
    let leader = c.leader().await;
    let victim = (leader + 1) % 3;
    c.stop(victim).await;
    corrupt_snapshot(&c.configs[victim].data_dir, "victim");
    c.restart(victim).await;
    (leader, victim)
}

/// The alarms once there are any.
async fn first_alarms(c: &Cluster, i: usize) -> Vec<(u64, i32)> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let alarms = c.alarms(i).await;
        if !alarms.is_empty() {
            return alarms;
        }
        assert!(Instant::now() < deadline, "the corrupted member was never found");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With the periodic check on (every 500 ms) equal stores never alarm, through writes and a
/// compaction; then one follower's store is corrupted on disk (a value changed, revisions
/// kept) and restarted: the leader's periodic check finds its hash differs, raises CORRUPT for
/// that member, and every write is refused with etcd's "corrupt cluster" while reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn periodic_check_finds_a_corrupted_member_and_equal_stores_never_alarm() {
    let mut c = Cluster::start(|cfg| {
        cfg.snapshot_count = 20;
        cfg.corrupt_check =
            CorruptCheck { initial: false, interval: Some(Duration::from_millis(500)) };
    })
    .await;
    fill(&c).await;
    // Negative half: several periods and a compaction with equal stores raise nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.alarms(0).await, vec![], "equal stores never alarm");

    let (leader, victim) = corrupt_a_follower(&mut c).await;
    let victim_id = c.configs[victim].member_id;
    assert_eq!(first_alarms(&c, leader).await, vec![(victim_id, CORRUPT)]);
    let err = c.kv(leader).await.put(put("after", "x")).await.expect_err("writes refused");
    assert_eq!(err.message(), "etcdserver: corrupt cluster");
    let read = pb::RangeRequest { key: "k1".into(), ..Default::default() };
    assert_eq!(c.kv(leader).await.range(read).await.unwrap().into_inner().count, 1);
    // The victim itself answers HashKV with another hash than the leader at one revision.
    let at = c.members[leader].as_ref().unwrap().handle().status().revision;
    c.applied_everywhere(at).await;
    let h = |r: pb::HashKvResponse| r.hash;
    let ours = h(c
        .maintenance(leader)
        .await
        .hash_kv(pb::HashKvRequest { revision: at })
        .await
        .unwrap()
        .into_inner());
    let theirs = h(c
        .maintenance(victim)
        .await
        .hash_kv(pb::HashKvRequest { revision: at })
        .await
        .unwrap()
        .into_inner());
    assert_ne!(ours, theirs);
    c.shutdown().await;
}

/// A small quota: puts beyond it get etcd's error and raise NOSPACE (shown by `Alarm` and by
/// etcdctl's `alarm list` where installed), deletes still work; compaction + defragment +
/// disarm make room again. `Status.dbSize` follows what the store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_refuses_writes_and_compaction_defragment_and_disarm_make_room() {
    let c = Cluster::start(|cfg| cfg.quota = Quota::from_flag(64 * 1024)).await;
    let leader = c.leader().await;
    let mut kv = c.kv(leader).await;
    let status = c.maintenance(leader).await.status(pb::StatusRequest {}).await.unwrap();
    let empty = status.into_inner().db_size;
    let mut refused = None;
    for i in 0..200 {
        match kv.put(put("big", vec![b'x'; 1024 + i])).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the quota refuses at last");
    assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let status =
        c.maintenance(leader).await.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(status.db_size > 60 * 1024 && status.db_size > empty, "{status:?}");
    assert_eq!(status.db_size, status.db_size_in_use);
    // The metric shows the same measured figure.
    let authority = c.configs[leader].advertise_client_urls[0].authority();
    let metrics =
        tokio::task::spawn_blocking(move || http_get(&authority, "/metrics")).await.unwrap();
    let line = metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_mvcc_db_total_size_in_bytes "))
        .expect("the metric is exported");
    assert_eq!(line.trim().parse::<i64>().unwrap(), status.db_size);
    let leader_id = c.configs[leader].member_id;
    assert_eq!(c.alarms((leader + 1) % 3).await, vec![(leader_id, NOSPACE)]);
    if let Some(etcdctl) = servers::binary("etcdctl") {
        let out = std::process::Command::new(etcdctl)
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &c.configs[0].advertise_client_urls[0].authority()])
            .args(["alarm", "list"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), format!("memberID:{leader_id} alarm:NOSPACE"));
    } else {
        println!("etcdctl is not installed; alarm list checked through gRPC only");
    }
    // With the alarm raised even a small put is refused; deletes are not.
    let err = kv.put(put("small", "x")).await.expect_err("NOSPACE refuses puts");
    assert_eq!(err.message(), "etcdserver: mvcc: database space exceeded");
    // Make room: compact the history away, defragment every member, disarm.
    let revision = status.header.unwrap().revision;
    kv.compact(pb::CompactionRequest { revision, physical: true }).await.unwrap();
    for i in 0..3 {
        c.maintenance(i).await.defragment(pb::DefragmentRequest {}).await.expect("defragment");
    }
    let disarm = pb::AlarmRequest { action: 2, member_id: leader_id, alarm: NOSPACE };
    c.maintenance(leader).await.alarm(disarm).await.unwrap();
    kv.put(put("small", "x")).await.expect("room again");
    let after =
        c.maintenance(leader).await.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(after.db_size < 8 * 1024, "compaction freed the history: {after:?}");
    assert_eq!(c.alarms(leader).await, vec![]);
    c.shutdown().await;
}

/// Revision mode keeps the last N revisions: the leader compacts at `revision - N` on its
/// next check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_compaction_in_revision_mode_keeps_the_last_revisions() {
    let c = Cluster::start(|cfg| {
        cfg.auto_compaction =
            Some(AutoCompaction::Revision { keep: 10, check_interval: Duration::from_millis(300) });
    })
    .await;
    let mut kv = c.kv(0).await;
    for i in 0..40 {
        kv.put(put("k", format!("{i}"))).await.unwrap();
    }
    // Revision 41 now; within a few checks the history before 31 is gone.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let old = pb::RangeRequest { key: "k".into(), revision: 30, ..Default::default() };
        match kv.range(old).await {
            Err(e) => {
                assert_eq!(e.message(), "etcdserver: mvcc: required revision has been compacted");
                break;
            }
            Ok(_) => assert!(Instant::now() < deadline, "never compacted"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = pb::RangeRequest { key: "k".into(), revision: 31, ..Default::default() };
    assert_eq!(
        kv.range(kept).await.expect("the last 10 revisions stay").into_inner().kvs[0].value,
        b"29"[..]
    );
    let hash = c.maintenance(1).await.hash_kv(pb::HashKvRequest { revision: 0 }).await.unwrap();
    assert_eq!(hash.into_inner().compact_revision, 31);
    c.shutdown().await;
}

/// Periodic mode keeps the retention's worth of time: with a 2 s retention, a revision
/// written 2 s ago becomes compactable and is compacted within about one more retention,
/// while the revisions of the last retention stay readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_compaction_in_periodic_mode_keeps_the_retention() {
    let c = Cluster::start(|cfg| {
        cfg.auto_compaction = Some(AutoCompaction::Periodic(Duration::from_secs(2)));
    })
    .await;
    let mut kv = c.kv(0).await;
    for i in 0..10 {
        kv.put(put("k", format!("{i}"))).await.unwrap();
    }
    let first_batch_end = 11;
    let started = Instant::now();
    let deadline = started + PATIENCE;
    let mut n = 10;
    let compacted_at = loop {
        kv.put(put("k", format!("{n}"))).await.unwrap();
        n += 1;
        let hash = c.maintenance(0).await.hash_kv(pb::HashKvRequest { revision: 0 }).await.unwrap();
        let compacted = hash.into_inner().compact_revision;
        if compacted >= first_batch_end {
            break compacted;
        }
        assert!(Instant::now() < deadline, "never compacted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Not before the retention passed, and it kept what was written within the retention:
    // at 20 puts a second, a 2 s retention keeps far more than the revisions since.
    assert!(started.elapsed() >= Duration::from_secs(2), "compacted after {:?}", started.elapsed());
    let current = c.members[0].as_ref().unwrap().handle().status().revision;
    assert!(current - compacted_at >= 10, "kept {} revisions", current - compacted_at);
    c.shutdown().await;
}

/// With only the startup check on, a member restarted with a corrupted store finds that its
/// hash differs from its peers' and raises CORRUPT for itself; with no check on, nothing does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn startup_check_finds_its_own_corruption() {
    let mut c = Cluster::start(|cfg| {
        cfg.snapshot_count = 20;
        cfg.corrupt_check = CorruptCheck { initial: true, interval: None };
    })
    .await;
    fill(&c).await;
    let (leader, victim) = corrupt_a_follower(&mut c).await;
    assert_eq!(first_alarms(&c, leader).await, vec![(c.configs[victim].member_id, CORRUPT)]);
    c.shutdown().await;

    // The same corruption with no check configured goes unnoticed (the check is what finds it).
    let mut c = Cluster::start(|cfg| cfg.snapshot_count = 20).await;
    fill(&c).await;
    let (leader, _) = corrupt_a_follower(&mut c).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.alarms(leader).await, vec![]);
    c.shutdown().await;
}

/// One HTTP/1.1 GET on a client port; returns the body.
fn http_get(authority: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(authority).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    reply.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

/// A real etcd with `--quota-backend-bytes`, killed when dropped.
struct QuotaEtcd {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for QuotaEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl QuotaEtcd {
    async fn start(quota_bytes: u64) -> Option<QuotaEtcd> {
        let Some(bin) = servers::binary("etcd") else {
            println!("etcd is not installed (apt-get install etcd-server); skipping the etcd half");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let ports = common::free_ports(2);
        let client = format!("http://127.0.0.1:{}", ports[0]);
        let peer = format!("http://127.0.0.1:{}", ports[1]);
        let child = std::process::Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .arg(format!("--quota-backend-bytes={quota_bytes}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("runs etcd");
        let etcd = QuotaEtcd { child, url: client, _dir: dir };
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(ch) = Channel::from_shared(etcd.url.clone()).unwrap().connect().await {
                let ready = pb::StatusRequest {};
                if let Ok(s) =
                    pb::maintenance_client::MaintenanceClient::new(ch).status(ready).await
                    && s.into_inner().leader != 0
                {
                    return Some(etcd);
                }
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The quota's answers, as etcd 3.4 gives them, for a quota nothing fits under: the put is
/// refused and raises NOSPACE for the member, a lease grant is refused, deletes and reads
/// still work, disarming clears the alarm and the next put raises it again.
async fn quota_transcript(ch: Channel) -> Vec<String> {
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    let mut m = pb::maintenance_client::MaintenanceClient::new(ch.clone());
    let mut lease = pb::lease_client::LeaseClient::new(ch);
    let line = |r: Result<String, tonic::Status>| match r {
        Ok(s) => s,
        Err(e) => servers::error_line(&e),
    };
    let mut t = Vec::new();
    let member =
        m.status(pb::StatusRequest {}).await.unwrap().into_inner().header.unwrap().member_id;
    t.push(line(kv.put(put("k", "v")).await.map(|_| "put ok".into())));
    let list = pb::AlarmRequest { action: 0, member_id: 0, alarm: 0 };
    let alarms = m.alarm(list).await.unwrap().into_inner().alarms;
    let alarms: Vec<String> = alarms
        .iter()
        .map(|a| format!("{} {}", if a.member_id == member { "self" } else { "other" }, a.alarm))
        .collect();
    t.push(format!("alarms {alarms:?}"));
    let grant = pb::LeaseGrantRequest { ttl: 60, id: 0 };
    t.push(line(lease.lease_grant(grant).await.map(|_| "grant ok".into())));
    let del = pb::DeleteRangeRequest { key: "k".into(), ..Default::default() };
    t.push(line(kv.delete_range(del).await.map(|r| format!("deleted {}", r.into_inner().deleted))));
    let get = pb::RangeRequest { key: "k".into(), ..Default::default() };
    t.push(line(kv.range(get).await.map(|r| format!("count {}", r.into_inner().count))));
    let disarm = pb::AlarmRequest { action: 2, member_id: member, alarm: NOSPACE };
    let cleared = m.alarm(disarm).await.unwrap().into_inner().alarms.len();
    t.push(format!("disarmed {cleared}"));
    t.push(line(kv.put(put("k", "v")).await.map(|_| "put ok".into())));
    let list = pb::AlarmRequest { action: 0, member_id: 0, alarm: 0 };
    t.push(format!("alarms {}", m.alarm(list).await.unwrap().into_inner().alarms.len()));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_nothing_fits_under_answers_as_etcd_does() {
    let c = Cluster::start(|cfg| cfg.quota = Quota::from_flag(1)).await;
    let leader = c.leader().await;
    let ours = quota_transcript(c.channel(leader).await).await;
    c.shutdown().await;
    assert_eq!(ours[0], "error ResourceExhausted: etcdserver: mvcc: database space exceeded");
    if let Some(etcd) = QuotaEtcd::start(1).await {
        let ch = Channel::from_shared(etcd.url.clone()).unwrap().connect().await.unwrap();
        let theirs = quota_transcript(ch).await;
        assert_eq!(ours, theirs, "tenure (left) and etcd 3.4 (right) answer differently");
    }
}
