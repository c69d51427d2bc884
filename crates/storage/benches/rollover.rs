//! Append latency on the replica thread across segment rollovers, on the real filesystem.
//!
//! Run with `cargo bench -p tenure-storage --bench rollover` (about 20 s). It works in a
//! temporary directory under `$TENURE_BENCH_DIR`, else `$CARGO_TARGET_DIR`, else `/work` (not
//! `/tmp`, which may be a tmpfs), and drives the storage the way the server does: one thread
//! (the "replica") appends 64 KiB batches (16 entries of 4 KiB) as fast as it can, begins a
//! sync whenever none is in flight and compacts the log to keep about two segments; a second
//! thread runs [`tenure_storage::SyncTicket::wait`]. Segments are 8 MiB, so a run of 512 MiB
//! crosses 64 rollovers and deletes about 62 segments.
//!
//! It reports, per run, the latency of every `append` call (median, 99th and 99.9th
//! percentile, maximum), separately for the calls that rolled over to a new segment, the
//! longest `finish_sync` and `compact` calls (also on the replica thread), and the longest
//! `wait` on the sync thread. Timings are printed, never asserted.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_raft::{Entry, LogIndex, LogView, Term};
use tenure_storage::{FinishedSync, Options, RealDisk, Storage, SyncTicket};

const SEGMENT_BYTES: u64 = 8 << 20;
const ENTRY_BYTES: usize = 4096;
const BATCH_ENTRIES: usize = 16;
const TOTAL_BYTES: u64 = 512 << 20;
const RUNS: usize = 3;

fn bench_root() -> PathBuf {
    std::env::var_os("TENURE_BENCH_DIR")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work"))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct RunResult {
    appends: Vec<Duration>,
    rollovers: Vec<Duration>,
    /// The rollovers that found a prepared segment file.
    prepared_rollovers: Vec<Duration>,
    finish_max: Duration,
    compact_max: Duration,
    wait_max: Duration,
    elapsed: Duration,
}

fn run(dir: &std::path::Path) -> RunResult {
    let options = Options {
        segment_bytes_max: SEGMENT_BYTES,
        entry_bytes_max: 64 << 10,
        ..Options::default()
    };
    let mut storage = Storage::open(Arc::new(RealDisk), dir, options).unwrap();
    let (ticket_tx, ticket_rx) = mpsc::channel::<SyncTicket>();
    let (done_tx, done_rx) = mpsc::channel::<(FinishedSync, Duration)>();
    let syncer = std::thread::spawn(move || {
        for ticket in ticket_rx {
            let start = Instant::now();
            let done = ticket.wait();
            if done_tx.send((done, start.elapsed())).is_err() {
                return;
            }
        }
    });
    let payload = Bytes::from(vec![0x42u8; ENTRY_BYTES]);
    let batches = TOTAL_BYTES / (ENTRY_BYTES * BATCH_ENTRIES) as u64;
    let mut next = 1u64;
    let mut in_flight = false;
    let mut result = RunResult {
        appends: Vec::with_capacity(batches as usize),
        rollovers: Vec::new(),
        prepared_rollovers: Vec::new(),
        finish_max: Duration::ZERO,
        compact_max: Duration::ZERO,
        wait_max: Duration::ZERO,
        elapsed: Duration::ZERO,
    };
    let keep_entries = 2 * SEGMENT_BYTES / ENTRY_BYTES as u64;
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH_ENTRIES);
    for _ in 0..batches {
        batch.clear();
        for _ in 0..BATCH_ENTRIES {
            batch.push(Entry::new(Term(1), LogIndex(next), payload.clone()));
            next += 1;
        }
        let segments_before = storage.segment_count();
        let prepared_before = storage.has_prepared_segment();
        let start = Instant::now();
        storage.append(&batch).unwrap();
        let took = start.elapsed();
        result.appends.push(took);
        if storage.segment_count() > segments_before {
            result.rollovers.push(took);
            if prepared_before && !storage.has_prepared_segment() {
                result.prepared_rollovers.push(took);
            }
        }
        let mut finished = if in_flight { done_rx.try_recv().ok() } else { None };
        if let Some((done, waited)) = finished.take() {
            result.wait_max = result.wait_max.max(waited);
            let start = Instant::now();
            storage.finish_sync(done).unwrap();
            result.finish_max = result.finish_max.max(start.elapsed());
            in_flight = false;
            let last = storage.last_index().0;
            if last > keep_entries {
                let start = Instant::now();
                storage.compact(LogIndex(last - keep_entries)).unwrap();
                result.compact_max = result.compact_max.max(start.elapsed());
            }
        }
        if !in_flight {
            ticket_tx.send(storage.begin_sync().unwrap()).unwrap();
            in_flight = true;
        }
    }
    if in_flight {
        let (done, waited) = done_rx.recv().unwrap();
        result.wait_max = result.wait_max.max(waited);
        storage.finish_sync(done).unwrap();
    }
    result.elapsed = started.elapsed();
    drop(ticket_tx);
    syncer.join().unwrap();
    result
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rollover benchmark: skipped (run it with `cargo bench -p tenure-storage`)");
        return;
    }
    let root = bench_root();
    fs::create_dir_all(&root).unwrap();
    let tmp = tempfile::Builder::new().prefix("tenure-storage-rollover").tempdir_in(&root).unwrap();
    println!(
        "tenure-storage rollover benchmark in {}: {} MiB per run, {} MiB segments, \
         {BATCH_ENTRIES} x {ENTRY_BYTES} B per append",
        tmp.path().display(),
        TOTAL_BYTES >> 20,
        SEGMENT_BYTES >> 20
    );
    for r in 0..RUNS {
        let mut res = run(&tmp.path().join(format!("run-{r}")));
        res.appends.sort_unstable();
        res.rollovers.sort_unstable();
        res.prepared_rollovers.sort_unstable();
        let mb_s = TOTAL_BYTES as f64 / 1e6 / res.elapsed.as_secs_f64();
        println!(
            "run {r}: {mb_s:.0} MB/s; append µs median {:.0} p99 {:.0} p99.9 {:.0} max {:.0}; \
             {} rollover appends µs median {:.0} max {:.0}, of which {} into a prepared file µs \
             median {:.0} max {:.0}; finish_sync max {:.0} µs, \
             compact max {:.0} µs; sync thread wait max {:.0} µs",
            micros(percentile(&res.appends, 0.5)),
            micros(percentile(&res.appends, 0.99)),
            micros(percentile(&res.appends, 0.999)),
            micros(percentile(&res.appends, 1.0)),
            res.rollovers.len(),
            micros(percentile(&res.rollovers, 0.5)),
            micros(percentile(&res.rollovers, 1.0)),
            res.prepared_rollovers.len(),
            micros(percentile(&res.prepared_rollovers, 0.5)),
            micros(percentile(&res.prepared_rollovers, 1.0)),
            micros(res.finish_max),
            micros(res.compact_max),
            micros(res.wait_max),
        );
    }
}
