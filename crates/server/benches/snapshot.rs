//! Snapshots of a large key-value store between two local members (issue 6): the time to
//! produce, transfer and install one, and the memory each phase needs on top of the store.
//!
//! Run with `cargo bench -p tenure-server --bench snapshot` (a few minutes).
//! `SNAPSHOT_BENCH_MIB` picks the sizes of key-value data (default `256,1024`: 1 GiB and a
//! smaller size to compare with), `SNAPSHOT_BENCH_RUNS` the runs per size (default 3; the
//! summary shows medians). Files go in a temporary directory under `$TENURE_BENCH_DIR`, else
//! the cargo target directory (a real disk, never a tmpfs, so that the fsyncs cost what they
//! cost).
//!
//! Every phase runs the production code path, each in a child process of its own (this binary
//! run again with `--phase`) so that its peak resident memory (`VmHWM`) is its own:
//!
//! - **produce**: a [`Store`] filled through [`Store::apply`] with 1 KiB values, cloned as
//!   `Replica::take_snapshot_job` clones it, then what `SnapshotJob::run` does:
//!   [`Store::write_snapshot`] into a [`ChunkWriter`] over a [`SnapshotWriter`], and `finish`
//!   (fsync, rename). The peak is measured from the moment the clone exists.
//! - **transfer**: [`send_snapshot`] and [`receive_snapshot`] over loopback TCP, on the
//!   server's runtime (two tokio workers), from the leader's directory to the follower's; it
//!   ends when the follower has fsynced the file and answered `Installed`.
//! - **install**: what the replica's `restore_store` does: [`Store::restore`] from a
//!   [`ChunkReader`] over [`SnapshotReader::open`] of the received file.
//!
//! The snapshot file is in the page cache when the transfer reads it and when the install
//! reads the received copy (as it is on a member that has just written or received one).
//! Timings are printed, never asserted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tenure_kv::{Command, Config, Proposal, PutRequest, Store};
use tenure_raft::{
    EntryId, LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta, Term,
};
use tenure_replica::snapshot::{ChunkReader, ChunkWriter};
use tenure_server::peer::snapshot_stream::{
    Partials, ReceiveOutcome, SnapshotSink, StreamCodec, receive_snapshot, send_snapshot,
};
use tenure_storage::{Disk, RealDisk, SnapshotReader, SnapshotWriter};
use tokio::net::TcpListener;

const CLUSTER_ID: u64 = 0x5a_b0;
const LEADER: u64 = 1;
const FOLLOWER: u64 = 2;
const TERM: Term = Term(7);
const VALUE_BYTES: usize = 1024;
const MIB: u64 = 1 << 20;

/// Key `i`: `key/` and ten digits (14 bytes).
fn key(i: u64) -> Bytes {
    Bytes::from(format!("key/{i:010}"))
}

const KEY_BYTES: u64 = 14;

/// Keys needed for `mib` MiB of key and value bytes.
fn key_count(mib: u64) -> u64 {
    (mib * MIB).div_ceil(KEY_BYTES + VALUE_BYTES as u64)
}

/// Value of key `i`: 1 KiB of xorshift bytes, distinct per key, so nothing is shared or
/// compressible by accident.
fn value(i: u64) -> Vec<u8> {
    let mut x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut v = Vec::with_capacity(VALUE_BYTES);
    while v.len() < VALUE_BYTES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_included: EntryId::new(TERM, LogIndex(index)),
        membership: Membership::voters([NodeId(LEADER), NodeId(FOLLOWER)]),
    }
}

fn disk() -> Arc<dyn Disk> {
    Arc::new(RealDisk)
}

// ----- Memory -----------------------------------------------------------------------------------

/// A field of `/proc/self/status` in bytes (`VmRSS`: resident now; `VmHWM`: peak resident).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"));
    kib * 1024
}

fn rss() -> u64 {
    status_bytes("VmRSS")
}

fn peak() -> u64 {
    status_bytes("VmHWM")
}

/// Resets the peak (`VmHWM`) to the current resident size (Linux `clear_refs`, value 5), so
/// that what a phase allocated before its measured part does not count.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM via /proc/self/clear_refs");
    let (now, hwm) = (rss(), peak());
    assert!(hwm <= now + MIB, "VmHWM {hwm} was not reset to VmRSS {now}");
}

// ----- Phases (each in a child process) ---------------------------------------------------------

/// What a phase reports to the parent: one line `result name=value ...` on stdout.
fn report(values: &[(&str, f64)]) {
    let fields: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("result {}", fields.join(" "));
}

fn produce(dir: &Path, mib: u64) {
    let keys = key_count(mib);
    let started = Instant::now();
    let mut store = Store::default();
    for i in 0..keys {
        let put = Proposal::new(Command::Put(PutRequest::new(key(i), value(i)))).encode();
        store.apply(i + 1, 0, &put).expect("apply a put");
    }
    let fill_seconds = started.elapsed().as_secs_f64();
    let store_rss = rss();
    // `take_snapshot_job` hands the job a clone of the store: the index is a persistent map, so
    // the clone shares it. It is the only part that runs on the replica thread.
    let started = Instant::now();
    let copy = store.clone();
    let clone_seconds = started.elapsed().as_secs_f64();
    let clone_rss = rss();
    reset_peak();
    let started = Instant::now();
    let meta = meta(keys);
    let writer = SnapshotWriter::create(disk(), dir, meta.clone()).expect("create the snapshot");
    let mut out = ChunkWriter::new(writer);
    let kv_bytes = copy.write_snapshot(&mut out).expect("write the snapshot");
    let sealed = out.finish().expect("finish the snapshot");
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss = peak();
    assert_eq!(sealed, meta);
    let file = SnapshotReader::open(&RealDisk, dir, meta.last_included).expect("reopen");
    let file_bytes = std::fs::metadata(file.path()).expect("snapshot file").len();
    report(&[
        ("keys", keys as f64),
        ("revision", store.revision() as f64),
        ("fill_seconds", fill_seconds),
        ("store_rss", store_rss as f64),
        ("clone_rss", clone_rss as f64),
        ("clone_seconds", clone_seconds),
        ("peak_rss", peak_rss as f64),
        ("seconds", seconds),
        ("kv_bytes", kv_bytes as f64),
        ("file_bytes", file_bytes as f64),
    ]);
    drop(copy);
}

/// The follower's side of a transfer: a staging file in its directory; delivered messages are
/// counted (there is no replica to step them into).
struct FollowerSink {
    dir: PathBuf,
    delivered: Mutex<Vec<Message>>,
}

impl SnapshotSink for FollowerSink {
    async fn writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, String> {
        SnapshotWriter::create(disk(), &self.dir, meta).map_err(|e| e.to_string())
    }

    async fn deliver(&self, msg: Message) -> Result<(), String> {
        self.delivered.lock().expect("not poisoned").push(msg);
        Ok(())
    }
}

fn transfer(from: &Path, to: &Path) {
    let base_rss = rss();
    // The server's runtime (`server_runtime` in main.rs): two workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sink = Arc::new(FollowerSink { dir: to.to_path_buf(), delivered: Mutex::new(Vec::new()) });
    let (sent, received, seconds, ready_rss, peak_rss) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let ready_rss = rss();
        reset_peak();
        let started = Instant::now();
        let follower = tokio::spawn({
            let sink = Arc::clone(&sink);
            async move {
                let (stream, _) = listener.accept().await.expect("accept");
                let codec = StreamCodec { cluster_id: CLUSTER_ID, member_id: FOLLOWER };
                receive_snapshot(stream, BytesMut::new(), codec, &*sink, &Partials::default()).await
            }
        });
        let reader = SnapshotReader::open_latest(&RealDisk, from).expect("open").expect("a file");
        let msg = Message {
            from: NodeId(LEADER),
            to: NodeId(FOLLOWER),
            term: TERM,
            body: MessageBody::Snapshot { meta: reader.meta().clone() },
        };
        let codec = StreamCodec { cluster_id: CLUSTER_ID, member_id: LEADER };
        let sent = send_snapshot(codec, 0, addr, msg, reader).await;
        let received = follower.await.expect("receiver task");
        (sent, received, started.elapsed().as_secs_f64(), ready_rss, peak())
    });
    assert_eq!(sent.status, tenure_raft::SnapshotStatus::Delivered, "{sent:?}");
    assert!(matches!(received, ReceiveOutcome::Installed(_)), "{received:?}");
    assert_eq!((sent.attempts, sent.resumed_at), (1, None), "{sent:?}");
    assert_eq!(sink.delivered.lock().expect("not poisoned").len(), 1);
    report(&[
        ("base_rss", base_rss as f64),
        ("ready_rss", ready_rss as f64),
        ("peak_rss", peak_rss as f64),
        ("seconds", seconds),
        ("bytes", sent.bytes as f64),
        ("chunks", sent.chunks as f64),
    ]);
}

fn install(dir: &Path, index: u64) {
    let base_rss = rss();
    reset_peak();
    let meta = meta(index);
    let started = Instant::now();
    // As `restore_store` in crates/replica/src/lib.rs, after `Storage::open_snapshot`.
    let reader = SnapshotReader::open(&RealDisk, dir, meta.last_included).expect("open");
    let mut input = ChunkReader::new(reader);
    let store = match Store::restore(Config::default(), &mut input) {
        Ok(store) => store,
        Err(e) => panic!("restore: {e} (storage: {:?})", input.error),
    };
    assert!(store.applied_index() <= meta.last_included.index.0);
    let seconds = started.elapsed().as_secs_f64();
    let (peak_rss, final_rss) = (peak(), rss());
    report(&[
        ("keys", store.key_count() as f64),
        ("revision", store.revision() as f64),
        ("base_rss", base_rss as f64),
        ("peak_rss", peak_rss as f64),
        ("final_rss", final_rss as f64),
        ("seconds", seconds),
    ]);
    drop(store);
}

// ----- The parent: runs the phases and prints the figures --------------------------------------

type Figures = BTreeMap<String, f64>;

/// Runs this binary again for one phase and parses its `result` line.
fn child(args: &[&str]) -> Figures {
    let exe = std::env::current_exe().expect("current exe");
    let out = Process::new(exe).arg("--bench").args(args).output().expect("run a phase");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "phase {args:?} failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or_else(|| panic!("phase {args:?} printed no result: {stdout}"));
    line.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("name=value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

fn bench_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("TENURE_BENCH_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // target/release/deps/snapshot-<hash>: three levels up is the target directory.
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors().nth(3).expect("the target directory").to_path_buf()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn mib(bytes: f64) -> f64 {
    bytes / MIB as f64
}

fn mb_per_s(bytes: f64, seconds: f64) -> f64 {
    bytes / 1e6 / seconds
}

/// One run at one size: the three phases, checked against each other.
struct Run {
    produce: Figures,
    transfer: Figures,
    install: Figures,
}

fn run_once(root: &Path, size_mib: u64) -> Run {
    let tmp =
        tempfile::Builder::new().prefix("tenure-snapshot-bench").tempdir_in(root).expect("tmp");
    let (leader, follower) = (tmp.path().join("leader"), tmp.path().join("follower"));
    std::fs::create_dir_all(&leader).expect("leader dir");
    std::fs::create_dir_all(&follower).expect("follower dir");
    let dir = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    let size = size_mib.to_string();
    let produce = child(&["--phase", "produce", "--dir", &dir(&leader), "--mib", &size]);
    let transfer =
        child(&["--phase", "transfer", "--from", &dir(&leader), "--to", &dir(&follower)]);
    let index = (produce["keys"] as u64).to_string();
    let install = child(&["--phase", "install", "--dir", &dir(&follower), "--index", &index]);
    // The follower's copy is the leader's file, and restores the same store.
    assert_eq!(install["keys"], produce["keys"]);
    assert_eq!(install["revision"], produce["revision"]);
    let follower_file =
        SnapshotReader::open_latest(&RealDisk, &follower).expect("open").expect("a file");
    let follower_bytes = std::fs::metadata(follower_file.path()).expect("follower file").len();
    assert_eq!(follower_bytes as f64, produce["file_bytes"], "the copy has the leader's size");
    Run { produce, transfer, install }
}

fn print_run(size_mib: u64, n: usize, r: &Run) {
    let (p, t, i) = (&r.produce, &r.transfer, &r.install);
    println!(
        "{size_mib:>5} MiB run {n}: produce {:.2} s ({:.0} MB/s), store {:.0} MiB, clone +{:.1} MiB, \
         peak while writing +{:.1} MiB | transfer {:.2} s ({:.0} MB/s), peak {:.1} MiB \
         (+{:.1} over idle) | install {:.2} s ({:.0} MB/s), peak {:.0} MiB vs store {:.0} MiB \
         (+{:.1}) | load {}",
        p["seconds"],
        mb_per_s(p["file_bytes"], p["seconds"]),
        mib(p["store_rss"]),
        mib(p["clone_rss"] - p["store_rss"]),
        mib(p["peak_rss"] - p["clone_rss"]),
        t["seconds"],
        mb_per_s(t["bytes"], t["seconds"]),
        mib(t["peak_rss"]),
        mib(t["peak_rss"] - t["ready_rss"]),
        i["seconds"],
        mb_per_s(p["file_bytes"], i["seconds"]),
        mib(i["peak_rss"]),
        mib(i["final_rss"]),
        mib(i["peak_rss"] - i["final_rss"]),
        load_average(),
    );
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn print_summary(sizes: &[(u64, Vec<Run>)]) {
    println!();
    println!("medians over the runs of each size (MiB = 2^20 bytes, MB = 10^6 bytes):");
    let header: Vec<String> = sizes.iter().map(|(s, _)| format!("{s} MiB")).collect();
    println!("| measure | {} |", header.join(" | "));
    println!("|---|{}", "---|".repeat(sizes.len()));
    let row = |name: &str, cell: &dyn Fn(&Run) -> f64, fmt: &dyn Fn(f64) -> String| {
        let cells: Vec<String> =
            sizes.iter().map(|(_, runs)| fmt(median(runs.iter().map(cell).collect()))).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let secs = |x: f64| format!("{x:.2} s");
    let millis = |x: f64| format!("{:.0} ms", x * 1e3);
    let rate = |x: f64| format!("{x:.0} MB/s");
    let mibs = |x: f64| format!("{x:.1} MiB");
    let count = |x: f64| format!("{x:.0}");
    row("keys (14 B key, 1 KiB value)", &|r| r.produce["keys"], &count);
    row("snapshot file", &|r| mib(r.produce["file_bytes"]), &mibs);
    row("fill the store (applied puts)", &|r| r.produce["fill_seconds"], &secs);
    row("produce: clone the store (replica thread)", &|r| r.produce["clone_seconds"], &millis);
    row("produce: write + fsync + rename", &|r| r.produce["seconds"], &secs);
    row("produce rate", &|r| mb_per_s(r.produce["file_bytes"], r.produce["seconds"]), &rate);
    row("produce: RSS with the store built", &|r| mib(r.produce["store_rss"]), &mibs);
    row(
        "produce: store clone, extra RSS",
        &|r| mib(r.produce["clone_rss"] - r.produce["store_rss"]),
        &mibs,
    );
    row(
        "produce: peak while writing, over store + clone",
        &|r| mib(r.produce["peak_rss"] - r.produce["clone_rss"]),
        &mibs,
    );
    row("transfer: send, receive, fsync, Installed", &|r| r.transfer["seconds"], &secs);
    row("transfer rate", &|r| mb_per_s(r.transfer["bytes"], r.transfer["seconds"]), &rate);
    row("transfer: RSS before (runtime started)", &|r| mib(r.transfer["ready_rss"]), &mibs);
    row("transfer: peak RSS (both ends)", &|r| mib(r.transfer["peak_rss"]), &mibs);
    row(
        "transfer: peak over before",
        &|r| mib(r.transfer["peak_rss"] - r.transfer["ready_rss"]),
        &mibs,
    );
    row("install: open + restore", &|r| r.install["seconds"], &secs);
    row("install rate", &|r| mb_per_s(r.produce["file_bytes"], r.install["seconds"]), &rate);
    row("install: final store RSS", &|r| mib(r.install["final_rss"]), &mibs);
    row("install: peak RSS", &|r| mib(r.install["peak_rss"]), &mibs);
    row(
        "install: peak over final",
        &|r| mib(r.install["peak_rss"] - r.install["final_rss"]),
        &mibs,
    );
}

/// The value after `name` in `args`.
fn arg<'a>(args: &'a [String], name: &str) -> &'a str {
    let at = args.iter().position(|a| a == name).unwrap_or_else(|| panic!("{name} is missing"));
    args.get(at + 1).unwrap_or_else(|| panic!("{name} needs a value"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and minutes of gigabyte snapshots have no place in a test run.
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "snapshot benchmark: skipped (run it with `cargo bench -p tenure-server --bench snapshot`)"
        );
        return;
    }
    if args.iter().any(|a| a == "--phase") {
        match arg(&args, "--phase") {
            "produce" => {
                produce(Path::new(arg(&args, "--dir")), arg(&args, "--mib").parse().expect("MiB"))
            }
            "transfer" => transfer(Path::new(arg(&args, "--from")), Path::new(arg(&args, "--to"))),
            "install" => install(
                Path::new(arg(&args, "--dir")),
                arg(&args, "--index").parse().expect("index"),
            ),
            other => panic!("unknown phase {other}"),
        }
        return;
    }
    let sizes: Vec<u64> = std::env::var("SNAPSHOT_BENCH_MIB")
        .unwrap_or_else(|_| "256,1024".into())
        .split(',')
        .map(|s| s.trim().parse().expect("SNAPSHOT_BENCH_MIB: sizes in MiB, comma-separated"))
        .collect();
    let runs: usize = std::env::var("SNAPSHOT_BENCH_RUNS")
        .map(|s| s.parse().expect("SNAPSHOT_BENCH_RUNS: a count"))
        .unwrap_or(3);
    assert!(runs > 0 && !sizes.is_empty());
    let root = bench_root();
    std::fs::create_dir_all(&root).expect("bench dir");
    println!(
        "snapshot benchmark in {}: sizes {sizes:?} MiB, {runs} runs each, load average {}",
        root.display(),
        load_average()
    );
    let mut results = Vec::new();
    for &size in &sizes {
        let mut done = Vec::new();
        for n in 1..=runs {
            let r = run_once(&root, size);
            print_run(size, n, &r);
            done.push(r);
        }
        results.push((size, done));
    }
    print_summary(&results);
    println!("load average at the end: {}", load_average());
}
