//! Backups end to end: `Maintenance.Snapshot` under writes, `tenure snapshot status` and
//! `restore`, a new three-member cluster started from the restored directories, damaged files
//! refused, and `etcdctl snapshot save` (3.4) against tenure where it is installed.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tenure_server::cli::ServeConfig;
use tenure_server::cli::dev::{self, Timing};
use tenure_server::cli::snapshot::{self, RestoreArgs, SaveArgs, SnapshotCommand, StatusFormat};
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;
use tonic::transport::Channel;

const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };
const PATIENCE: Duration = Duration::from_secs(30);

struct Cluster {
    configs: Vec<ServeConfig>,
    members: Vec<Option<Member>>,
}

impl Cluster {
    async fn start(dir: &Path) -> Cluster {
        let configs = configs(dir);
        let members = dev::start(&configs).await.expect("cluster starts");
        let c = Cluster { configs, members: members.into_iter().map(Some).collect() };
        common::wait_for_leader(&c.members, &c.configs, PATIENCE).await;
        c
    }

    fn url(&self, i: usize) -> String {
        self.configs[i].advertise_client_urls[0].to_string()
    }

    async fn channel(&self, i: usize) -> Channel {
        Channel::from_shared(self.url(i)).unwrap().connect().await.expect("connect")
    }

    async fn shutdown(mut self) {
        for m in self.members.iter_mut() {
            if let Some(m) = m.take() {
                m.shutdown().await.expect("clean shutdown");
            }
        }
    }
}

fn configs(dir: &Path) -> Vec<ServeConfig> {
    let ports: Vec<(u16, u16)> = common::free_ports(6).chunks(2).map(|c| (c[0], c[1])).collect();
    dev::configs(&ports, dir, TIMING).expect("configs")
}

fn range_all(revision: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: vec![0].into(),
        range_end: vec![0].into(),
        revision,
        ..Default::default()
    }
}

/// Every key-value pair at `revision` as `(key, value, create, mod, version)`.
async fn pairs_at(ch: Channel, revision: i64) -> Vec<(Vec<u8>, Vec<u8>, i64, i64, i64)> {
    let mut kv = pb::kv_client::KvClient::new(ch);
    let r = kv.range(range_all(revision)).await.expect("range").into_inner();
    r.kvs
        .into_iter()
        .map(|k| (k.key.to_vec(), k.value.to_vec(), k.create_revision, k.mod_revision, k.version))
        .collect()
}

async fn save(url: &str, file: &Path) -> anyhow::Result<String> {
    let args = SaveArgs {
        file: file.to_path_buf(),
        endpoints: vec![url.to_string()],
        dial_timeout: Duration::from_secs(5),
    };
    snapshot::run(&SnapshotCommand::Save(args)).await
}

fn restore_args(file: &Path, cfg: &ServeConfig, initial_cluster: &str) -> RestoreArgs {
    RestoreArgs {
        file: file.to_path_buf(),
        data_dir: Some(cfg.data_dir.clone()),
        name: cfg.name.clone(),
        initial_cluster: Some(initial_cluster.to_string()),
        initial_cluster_token: cfg.initial_cluster_token.clone(),
        initial_advertise_peer_urls: cfg.initial_advertise_peer_urls[0].to_string(),
        skip_hash_check: false,
    }
}

fn initial_cluster(configs: &[ServeConfig]) -> String {
    configs
        .iter()
        .map(|c| format!("{}={}", c.name, c.initial_advertise_peer_urls[0]))
        .collect::<Vec<_>>()
        .join(",")
}

/// A cluster under a stream of puts (to a few keys, so history has many versions) is backed up
/// while they go on; three fresh directories are restored from the file and a new cluster
/// (new ports, so new member and cluster ids) starts from them and holds exactly what the old
/// one held at the backup's revision, history included, and takes writes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn save_under_writes_then_restore_into_a_new_cluster_with_every_key_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let old = Cluster::start(&dir.path().join("old")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (ch, stop) = (old.channel(0).await, Arc::clone(&stop));
        tokio::spawn(async move {
            let mut kv = pb::kv_client::KvClient::new(ch);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let put = pb::PutRequest {
                    key: format!("key/{}", n % 37).into_bytes().into(),
                    value: format!("value {n}").into_bytes().into(),
                    ..Default::default()
                };
                kv.put(put).await.expect("put");
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let file = dir.path().join("backup.db");
    let out = save(&old.url(1), &file).await.expect("snapshot save");
    assert!(out.starts_with("Snapshot saved at"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let puts = writer.await.unwrap();

    let status = snapshot::status(&file).expect("a good backup");
    let revision = status.revision;
    assert!(revision > 10 && (revision as u64) < puts + 2, "revision {revision} of {puts} puts");
    assert_eq!(status.size_bytes, std::fs::metadata(&file).unwrap().len());
    let json: serde_json::Value =
        serde_json::from_str(&snapshot::format_status(&status, StatusFormat::Json)).unwrap();
    assert_eq!(json["revision"], revision);
    assert_eq!(json["totalKey"], 37);
    // The old cluster went on past the backup; what it held at the backup's revision, and
    // some revisions before, is what the new cluster must hold.
    let expected_now = pairs_at(old.channel(0).await, revision).await;
    let expected_before = pairs_at(old.channel(0).await, revision - 5).await;
    assert_eq!(expected_now.len(), 37);
    let old_cluster_id = old.configs[0].cluster_id;
    old.shutdown().await;

    let new_configs = configs(&dir.path().join("new"));
    let cluster = initial_cluster(&new_configs);
    for cfg in &new_configs {
        let out = snapshot::run(&SnapshotCommand::Restore(restore_args(&file, cfg, &cluster)))
            .await
            .expect("restore");
        assert!(out.contains(&format!("revision {revision}")), "{out}");
    }
    let members = dev::start(&new_configs).await.expect("restored cluster starts");
    let new = Cluster { configs: new_configs, members: members.into_iter().map(Some).collect() };
    common::wait_for_leader(&new.members, &new.configs, PATIENCE).await;
    assert_ne!(new.configs[0].cluster_id, old_cluster_id, "a restored cluster is a new cluster");
    for i in 0..3 {
        let mut kv = pb::kv_client::KvClient::new(new.channel(i).await);
        let r = kv.range(range_all(0)).await.expect("range").into_inner();
        assert_eq!(r.header.unwrap().revision, revision, "member {i}");
        assert_eq!(r.header.unwrap().cluster_id, new.configs[0].cluster_id);
        assert_eq!(pairs_at(new.channel(i).await, 0).await, expected_now, "member {i}");
        assert_eq!(pairs_at(new.channel(i).await, revision - 5).await, expected_before);
    }
    let mut kv = pb::kv_client::KvClient::new(new.channel(2).await);
    let put = pb::PutRequest { key: "after".into(), value: "restore".into(), ..Default::default() };
    let r = kv.put(put).await.expect("writes after a restore").into_inner();
    assert_eq!(r.header.unwrap().revision, revision + 1);
    // Every member applies it.
    let deadline = Instant::now() + PATIENCE;
    for i in 0..3 {
        loop {
            let mut kv = pb::kv_client::KvClient::new(new.channel(i).await);
            let read =
                pb::RangeRequest { key: "after".into(), serializable: true, ..Default::default() };
            if kv.range(read).await.unwrap().into_inner().count == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "member {i} never applied the write");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    new.shutdown().await;
}

async fn small_backup(dir: &Path) -> PathBuf {
    let c = Cluster::start(&dir.join("cluster")).await;
    let mut kv = pb::kv_client::KvClient::new(c.channel(0).await);
    for i in 0..200 {
        let put = pb::PutRequest {
            key: format!("k{i}").into_bytes().into(),
            value: vec![b'x'; 100].into(),
            ..Default::default()
        };
        kv.put(put).await.unwrap();
    }
    let file = dir.join("backup.db");
    save(&c.url(0), &file).await.expect("saved");
    c.shutdown().await;
    file
}

fn damaged_copy(good: &Path, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(good).unwrap();
    damage(&mut bytes);
    let path = good.with_file_name(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A flipped byte anywhere (data or trailer), a truncated file, a flipped byte with a
/// recomputed trailer (caught by the store's own frame checksums) and a file that is not a
/// backup are all refused by `status` and by `restore`, which then leaves no directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_or_a_truncated_file_is_refused() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let good = small_backup(dir.path()).await;
    let len = std::fs::metadata(&good).unwrap().len() as usize;
    assert!(snapshot::status(&good).is_ok());
    assert_eq!((len - 32) % 512, 0, "etcdctl's layout: 512-byte multiple plus the trailer");

    let mut bad = Vec::new();
    bad.push(damaged_copy(&good, "flipped-middle.db", |b| b[len / 2] ^= 0x01));
    bad.push(damaged_copy(&good, "flipped-header.db", |b| b[9] ^= 0x80));
    bad.push(damaged_copy(&good, "flipped-trailer.db", |b| b[len - 1] ^= 0x10));
    bad.push(damaged_copy(&good, "truncated.db", |b| b.truncate(len / 3)));
    bad.push(damaged_copy(&good, "truncated-trailer.db", |b| b.truncate(len - 10)));
    bad.push(damaged_copy(&good, "empty.db", Vec::clear));
    // Flip a byte and fix the trailer: the store's frame CRCs still catch it.
    bad.push(damaged_copy(&good, "flipped-resealed.db", |b| {
        b.truncate(len - 32);
        b[len / 2] ^= 0x04;
        let sha = sha2::Sha256::digest(&b[..]);
        b.extend_from_slice(&sha);
    }));
    bad.push(damaged_copy(&good, "not-a-backup.db", |b| {
        for x in b.iter_mut() {
            *x = b'?';
        }
    }));
    let cfg = &configs(&dir.path().join("restore"))[0];
    for file in &bad {
        let err = snapshot::status(file).expect_err(&format!("{} is refused", file.display()));
        let msg = format!("{err:#}");
        assert!(
            msg.contains("damaged or truncated") || msg.contains("not a tenure backup"),
            "{}: {msg}",
            file.display()
        );
        let args = restore_args(file, cfg, &initial_cluster(std::slice::from_ref(cfg)));
        let err = snapshot::run(&SnapshotCommand::Restore(args)).await.expect_err("refused");
        assert!(format!("{err:#}").contains(&file.display().to_string()), "{err:#}");
        assert!(!cfg.data_dir.exists(), "a refused restore leaves no data dir");
    }
    // --skip-hash-check restores a file whose trailer alone is wrong, and nothing else.
    let mut args = restore_args(&bad[2], cfg, &initial_cluster(std::slice::from_ref(cfg)));
    args.skip_hash_check = true;
    snapshot::run(&SnapshotCommand::Restore(args)).await.expect("trailer ignored");
    assert!(cfg.data_dir.exists());
    // A directory that holds anything is refused.
    let args = restore_args(&good, cfg, &initial_cluster(std::slice::from_ref(cfg)));
    let err = snapshot::run(&SnapshotCommand::Restore(args)).await.expect_err("not empty");
    assert!(format!("{err:#}").contains("exists"), "{err:#}");
}

/// etcdctl 3.4 saves a snapshot from tenure and says so; the file is tenure's backup (status
/// reads it) and the CLI prints it as a table and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcdctl_snapshot_save_against_tenure_succeeds() {
    let Some(etcdctl) = common_binary("etcdctl") else {
        println!("etcdctl is not installed (apt-get install etcd-client); skipping");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(&dir.path().join("cluster")).await;
    let mut kv = pb::kv_client::KvClient::new(c.channel(0).await);
    for i in 0..50 {
        let put = pb::PutRequest {
            key: format!("k{i}").into_bytes().into(),
            value: "v".into(),
            ..Default::default()
        };
        kv.put(put).await.unwrap();
    }
    let file = dir.path().join("etcdctl.db");
    let out = std::process::Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &c.configs[1].advertise_client_urls[0].authority()])
        .arg("snapshot")
        .arg("save")
        .arg(&file)
        .output()
        .expect("runs etcdctl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "etcdctl snapshot save failed: {text}");
    assert!(text.contains("Snapshot saved at"), "{text}");
    let status = snapshot::status(&file).expect("etcdctl's file is a good backup");
    assert_eq!(status.revision, 51);
    assert_eq!(status.key_count, 50);
    let bin = env!("CARGO_BIN_EXE_tenure");
    let json = std::process::Command::new(bin)
        .args(["snapshot", "status", "-w", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!((v["revision"].as_i64(), v["totalKey"].as_i64()), (Some(51), Some(50)));
    let table = std::process::Command::new(bin)
        .args(["snapshot", "status", "-w", "table"])
        .arg(&file)
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("| REVISION |") && table.contains("|       51 |"), "{table}");
    // A damaged file: exit code 1 and a message.
    let bad = damaged_copy(&file, "bad.db", |b| b.truncate(100));
    let out =
        std::process::Command::new(bin).args(["snapshot", "status"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged or truncated"));
    c.shutdown().await;
}

fn common_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.exists())
}

/// The command line end to end with real processes: `tenure snapshot save` from a running
/// `tenure serve` member, `tenure snapshot restore` with etcd's flags for each member of a new
/// cluster, and three `tenure serve` processes started on the restored directories with the
/// same flags serve the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_line_save_and_restore_start_real_members() {
    let bin = env!("CARGO_BIN_EXE_tenure");
    let dir = tempfile::tempdir().unwrap();
    let old = common::Plan::new("old");
    let servers: Vec<_> = (0..3).map(|i| old.start(i, &dir.path().join("old"))).collect();
    common::agreed_leader(&old, &[0, 1, 2], PATIENCE).await;
    let ch = Channel::from_shared(old.clients[0].clone()).unwrap().connect().await.unwrap();
    let mut kv = pb::kv_client::KvClient::new(ch);
    for i in 0..25 {
        kv.put(put_request(&format!("cli/{i}"), &format!("{i}"))).await.unwrap();
    }
    let file = dir.path().join("cli.db");
    let out = std::process::Command::new(bin)
        .args(["snapshot", "save"])
        .arg(&file)
        .args(["--endpoints", &old.clients[2]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for s in servers {
        s.terminate();
    }

    let new = common::Plan::new("new");
    let cluster: Vec<String> =
        new.names.iter().zip(&new.peers).map(|(n, p)| format!("{n}={p}")).collect();
    for i in 0..3 {
        let out = std::process::Command::new(bin)
            .args(["snapshot", "restore"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("new").join(&new.names[i]))
            .args(["--name", &new.names[i]])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-token", "etcd-cluster"])
            .args(["--initial-advertise-peer-urls", &new.peers[i]])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("restored snapshot of revision 26 (25 keys)"), "{text}");
    }
    let servers: Vec<_> = (0..3).map(|i| new.start(i, &dir.path().join("new"))).collect();
    common::agreed_leader(&new, &[0, 1, 2], PATIENCE).await;
    for url in &new.clients {
        let ch = Channel::from_shared(url.clone()).unwrap().connect().await.unwrap();
        let mut kv = pb::kv_client::KvClient::new(ch);
        let all =
            pb::RangeRequest { key: "cli/".into(), range_end: "cli0".into(), ..Default::default() };
        let r = kv.range(all).await.unwrap().into_inner();
        assert_eq!((r.count, r.header.unwrap().revision), (25, 26), "{url}");
    }
    for s in servers {
        s.terminate();
    }
}

fn put_request(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: value.as_bytes().to_vec().into(),
        ..Default::default()
    }
}
