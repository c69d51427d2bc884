//! `tenure snapshot save|status|restore`: backups of a running cluster and new clusters from
//! them, like `etcdctl snapshot save` and etcdutl's `snapshot status` and `snapshot restore`.
//!
//! A backup file is what `Maintenance.Snapshot` streams (see [`crate::api::maintenance`]): a
//! header with the length of the kv crate's snapshot encoding of the store at one revision, that
//! encoding, zero padding to a multiple of 512 bytes, then the SHA-256 of everything before it
//! (etcd's trailer; a file saved by `etcdctl snapshot save` from tenure is the same file).
//! `status` and `restore` check the trailer first, then the header, and decode the whole store
//! (every frame is CRC-checked, every invariant of the store) and the padding, so a flipped
//! byte or a truncated file is refused with a message saying so, before anything is written.
//!
//! `restore` works offline, as etcdutl's does: it builds a fresh member data directory whose
//! log starts with a snapshot of the backed-up store, with the membership of the new
//! `--initial-cluster`, from which `tenure serve` with the same flags starts the member of a new
//! cluster. Member ids and the cluster id come from the new peer URLs and
//! `--initial-cluster-token`, as for any new cluster, so the restored cluster is a new cluster
//! with the old data. Every member of the new cluster is restored from the same file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sha2::Digest;
use tenure_kv::Store;
use tenure_raft::{EntryId, HardState, LogIndex, Membership, NodeId, Term};
use tenure_storage::{Disk, RealDisk, SnapshotMeta, Storage};
use tokio_stream::StreamExt;

use super::client::{endpoint_uri, humanize_bytes, table};
use super::{Cli, ServeConfig};
use crate::api::maintenance::{BACKUP_HEADER_BYTES, BACKUP_MAGIC, backup_padding_bytes};
use crate::ids::format_id;
use crate::pb::etcdserverpb as pb;

/// Bytes of the SHA-256 trailer.
const SHA256_BYTES: usize = 32;

/// `tenure snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stream a backup of the store from a member into FILE (like `etcdctl snapshot save`).
    Save(SaveArgs),
    /// Check a backup file and show its revision, key count, size and hash.
    Status(StatusArgs),
    /// Build a new member's data directory from a backup file (offline, like etcdutl).
    Restore(RestoreArgs),
}

/// `tenure snapshot save FILE`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the backup (written to FILE.part, then renamed).
    pub file: PathBuf,
    /// The member to back up (the first of a comma-separated list that answers).
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Time allowed to connect (e.g. `2s`). TLS settings come from etcdctl's environment
    /// variables (ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY, ETCDCTL_INSECURE_SKIP_TLS_VERIFY).
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    pub dial_timeout: std::time::Duration,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// `hash, revision, keys, size` on one line, as etcdctl's simple format.
    Simple,
    /// An ASCII table.
    Table,
    /// One JSON object (etcdctl's field names).
    Json,
}

/// `tenure snapshot status FILE`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The backup file.
    pub file: PathBuf,
    /// Output format.
    #[arg(short = 'w', long, value_enum, default_value = "simple")]
    pub write_out: StatusFormat,
}

/// `tenure snapshot restore FILE --data-dir D ...`: the flags of the new member, as `tenure
/// serve` will be given them.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The data directory to create (must not exist, or be empty) [default: NAME.etcd].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The new member's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// The new cluster, `name=peer-url,...` [default: NAME=INITIAL_ADVERTISE_PEER_URLS].
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// The new cluster's token (give the restored cluster a token of its own).
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// The new member's peer URLs.
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// Restore even if the SHA-256 trailer is missing or wrong (the store's own checksums are
    /// still checked), as etcd's flag of that name.
    #[arg(long)]
    pub skip_hash_check: bool,
}

/// Runs one `tenure snapshot` subcommand; what it prints on success.
pub async fn run(command: &SnapshotCommand) -> anyhow::Result<String> {
    match command {
        SnapshotCommand::Save(a) => save(a).await,
        SnapshotCommand::Status(a) => {
            let file = a.file.clone();
            let status = tokio::task::spawn_blocking(move || status(&file)).await??;
            Ok(format_status(&status, a.write_out))
        }
        SnapshotCommand::Restore(a) => {
            let cfg = restore_config(a)?;
            let (file, skip) = (a.file.clone(), a.skip_hash_check);
            let r = tokio::task::spawn_blocking(move || restore(&file, &cfg, skip)).await??;
            Ok(format!(
                "restored snapshot of revision {} ({} keys) into {} as member {} of cluster {}\n",
                r.revision,
                r.key_count,
                r.data_dir.display(),
                format_id(r.member_id),
                format_id(r.cluster_id)
            ))
        }
    }
}

async fn save(a: &SaveArgs) -> anyhow::Result<String> {
    let mut errors = Vec::new();
    for endpoint in &a.endpoints {
        match save_from(endpoint, a).await {
            Ok(out) => return Ok(out),
            Err(e) => errors.push(format!("{endpoint}: {e:#}")),
        }
    }
    bail!("snapshot save failed: {}", errors.join("; "))
}

/// Streams a backup from one endpoint into `FILE.part`, checks its trailer, syncs it and
/// renames it to `FILE`.
async fn save_from(endpoint: &str, a: &SaveArgs) -> anyhow::Result<String> {
    endpoint_uri(endpoint)?;
    let tls = super::ClientTlsArgs::from_env();
    let channel = super::client::dial(endpoint, &tls, a.dial_timeout, |e| e).await?;
    let mut client = pb::maintenance_client::MaintenanceClient::new(channel)
        .max_decoding_message_size(usize::MAX);
    let mut stream = client.snapshot(pb::SnapshotRequest {}).await?.into_inner();
    let part = part_path(&a.file);
    let mut out = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut received: u64 = 0;
    let mut sha = sha2::Sha256::new();
    // The last message is the trailer; hash everything before it.
    let mut last: Option<bytes::Bytes> = None;
    while let Some(message) = stream.next().await {
        let message = message?;
        if let Some(previous) = last.replace(message.blob) {
            sha.update(&previous);
            tokio::io::AsyncWriteExt::write_all(&mut out, &previous).await?;
            received += previous.len() as u64;
        }
    }
    let trailer = last.ok_or_else(|| anyhow!("the member sent nothing"))?;
    let digest = sha.finalize();
    if trailer.as_ref() != digest.as_slice() {
        let _ = tokio::fs::remove_file(&part).await;
        bail!("the snapshot stream's SHA-256 trailer does not match its data: not saved");
    }
    tokio::io::AsyncWriteExt::write_all(&mut out, &trailer).await?;
    out.sync_all().await?;
    drop(out);
    tokio::fs::rename(&part, &a.file).await?;
    if let Some(dir) = a.file.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    Ok(format!(
        "Snapshot saved at {} ({} from {endpoint})\n",
        a.file.display(),
        humanize_bytes(received + SHA256_BYTES as u64)
    ))
}

fn part_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// What `tenure snapshot status` reports about a backup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStatus {
    /// CRC-32C of the file without its trailer.
    pub hash: u32,
    /// The store's revision.
    pub revision: i64,
    /// Keys with stored history.
    pub key_count: usize,
    /// The file's size in bytes.
    pub size_bytes: u64,
    /// The store restored from it (for `restore`).
    store: Store,
}

/// Checks a backup file end to end and decodes its store. Errors say what is wrong: not a
/// backup, a truncated file, a SHA-256 mismatch or damage inside the store's encoding.
pub fn status(file: &Path) -> anyhow::Result<BackupStatus> {
    load(file, false)
}

fn load(file: &Path, skip_hash_check: bool) -> anyhow::Result<BackupStatus> {
    let mut f = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size_bytes = f.metadata()?.len();
    let damaged =
        |what: String| anyhow!("{}: {what}; the file is damaged or truncated", file.display());
    if size_bytes <= SHA256_BYTES as u64 {
        return Err(damaged(format!("only {size_bytes} bytes, too short for a backup")));
    }
    let data_bytes = size_bytes - SHA256_BYTES as u64;
    let mut sha = sha2::Sha256::new();
    let mut crc = 0u32;
    let mut reader = BufReader::with_capacity(1 << 20, (&mut f).take(data_bytes));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    drop(reader);
    let mut trailer = [0u8; SHA256_BYTES];
    f.read_exact(&mut trailer)?;
    if trailer != sha.finalize().as_slice() && !skip_hash_check {
        return Err(damaged("its SHA-256 trailer does not match its content".to_string()));
    }
    f.seek(SeekFrom::Start(0))?;
    let mut content = BufReader::with_capacity(1 << 20, f.take(data_bytes));
    let mut header = [0u8; BACKUP_HEADER_BYTES];
    content.read_exact(&mut header).map_err(|_| damaged("no backup header".to_string()))?;
    if header[..8] != BACKUP_MAGIC {
        bail!("{}: not a tenure backup (no {:?} header)", file.display(), "TNBACKUP");
    }
    let encoded = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
    let expected = (BACKUP_HEADER_BYTES as u64)
        .checked_add(encoded)
        .and_then(|n| n.checked_add(backup_padding_bytes(encoded)));
    if expected != Some(data_bytes) {
        return Err(damaged(format!(
            "its header announces {encoded} bytes of store but the file holds {data_bytes} bytes              before its trailer"
        )));
    }
    let mut encoding = (&mut content).take(encoded);
    let store = Store::restore(tenure_kv::Config::default(), &mut encoding)
        .map_err(|e| damaged(format!("cannot decode the store: {e}")))?;
    let mut padding = Vec::new();
    content.read_to_end(&mut padding)?;
    if padding.iter().any(|&b| b != 0) {
        return Err(damaged("its padding after the store is not zeros".to_string()));
    }
    Ok(BackupStatus {
        hash: crc,
        revision: store.revision(),
        key_count: store.key_count(),
        size_bytes,
        store,
    })
}

/// etcdctl's `snapshot status` formats (field names and order as etcdctl's).
pub fn format_status(s: &BackupStatus, format: StatusFormat) -> String {
    match format {
        StatusFormat::Simple => format!(
            "{:x}, {}, {}, {}\n",
            s.hash,
            s.revision,
            s.key_count,
            humanize_bytes(s.size_bytes)
        ),
        StatusFormat::Table => table(
            &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
            &[vec![
                format!("{:x}", s.hash),
                s.revision.to_string(),
                s.key_count.to_string(),
                humanize_bytes(s.size_bytes),
            ]],
        ),
        StatusFormat::Json => {
            let v = serde_json::json!({
                "hash": s.hash,
                "revision": s.revision,
                "totalKey": s.key_count,
                "totalSize": s.size_bytes,
            });
            format!("{v}\n")
        }
    }
}

/// The new member's configuration, checked as `tenure serve` checks it (names, URLs, ids).
fn restore_config(a: &RestoreArgs) -> anyhow::Result<ServeConfig> {
    let mut argv: Vec<String> = ["tenure", "serve", "--name", &a.name].map(String::from).to_vec();
    let data_dir = a.data_dir.clone().unwrap_or_else(|| PathBuf::from(format!("{}.etcd", a.name)));
    argv.push("--data-dir".into());
    argv.push(data_dir.to_string_lossy().into_owned());
    for (flag, value) in [
        ("--initial-cluster-token", Some(&a.initial_cluster_token)),
        ("--initial-advertise-peer-urls", Some(&a.initial_advertise_peer_urls)),
        ("--listen-peer-urls", Some(&a.initial_advertise_peer_urls)),
        ("--initial-cluster", a.initial_cluster.as_ref()),
    ] {
        if let Some(v) = value {
            argv.push(flag.into());
            argv.push(v.clone());
        }
    }
    argv.extend(["--initial-cluster-state".into(), "new".into()]);
    let cli = Cli::try_parse_from(&argv).map_err(|e| anyhow!("{}", e.to_string().trim()))?;
    let super::Command::Serve(args) = cli.command else {
        unreachable!("parsed as tenure serve");
    };
    ServeConfig::from_args(&args).map_err(|e| anyhow!("{e}"))
}

/// What [`restore`] made.
#[derive(Debug)]
pub struct Restored {
    /// The directory built.
    pub data_dir: PathBuf,
    /// The store's revision.
    pub revision: i64,
    /// Its keys.
    pub key_count: usize,
    /// The new member's id.
    pub member_id: u64,
    /// The new cluster's id.
    pub cluster_id: u64,
}

/// Builds `cfg.data_dir` from the backup `file`: a storage directory whose log starts after a
/// snapshot (term 1, at the store's applied index) of the backed-up store, with the new
/// cluster's membership as its configuration and that index committed, which is what a member
/// that installed a snapshot from its leader would hold. The store's member table is emptied
/// (the members publish themselves when they start). Refuses a directory that holds anything.
pub fn restore(file: &Path, cfg: &ServeConfig, skip_hash_check: bool) -> anyhow::Result<Restored> {
    let dir = &cfg.data_dir;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!("data-dir {:?} exists and is not empty", dir.display().to_string());
    }
    let backup = load(file, skip_hash_check)?;
    let mut store = backup.store;
    store.forget_members();
    let index = LogIndex(store.applied_index().max(1));
    let membership = Membership::voters(cfg.members.iter().map(|m| NodeId(m.id)));
    let meta = SnapshotMeta { last_included: EntryId::new(Term(1), index), membership };
    let disk: Arc<dyn Disk> = Arc::new(RealDisk);
    let build = || -> anyhow::Result<()> {
        let mut storage = Storage::open(disk, dir, tenure_storage::Options::default())?;
        let mut out =
            tenure_replica::snapshot::ChunkWriter::new(storage.snapshot_writer(meta.clone())?);
        store.write_snapshot(&mut out).context("cannot write the store")?;
        out.finish()?;
        storage.note_snapshot(meta.clone());
        storage.reset_to_snapshot(meta.last_included, meta.membership.clone())?;
        storage.set_hard_state(HardState { term: Term(1), vote: None, commit: index })?;
        storage.sync()?;
        Ok(())
    };
    if let Err(e) = build() {
        // Leave no half-built directory that `tenure serve` could mistake for a member's.
        let _ = std::fs::remove_dir_all(dir);
        return Err(e.context(format!("cannot build data dir {}", dir.display())));
    }
    Ok(Restored {
        data_dir: dir.clone(),
        revision: store.revision(),
        key_count: store.key_count(),
        member_id: cfg.member_id,
        cluster_id: cfg.cluster_id,
    })
}
