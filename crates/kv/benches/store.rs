//! Throughput of the state machine over a store of 1,000,000 keys: applied puts (decode +
//! apply + taking the put's events, as the replica does), point gets and 100-key range scans,
//! plus memory per key measured with a counting global allocator. Run: `cargo bench -p
//! tenure-kv`.

// The counting allocator has to implement `GlobalAlloc`, an unsafe trait; it only forwards to
// the system allocator and adds up sizes. This is the one place in the crate that needs it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tenure_kv::{Command, CompactionRequest, Proposal, PutRequest, RangeRequest, Store};

struct Counting;

static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// caller's obligations pass straight through; the counter has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEY_COUNT: u64 = 1_000_000;
const VALUE_BYTES: usize = 64;

fn key(i: u64) -> Bytes {
    Bytes::from(format!("key/{i:08}"))
}

fn put_entry(i: u64) -> Bytes {
    Proposal::new(Command::Put(PutRequest::new(key(i), vec![b'v'; VALUE_BYTES]))).encode()
}

/// Spreads consecutive operation numbers over the key space.
fn scatter(n: u64) -> u64 {
    n.wrapping_mul(7_919) % KEY_COUNT
}

fn bench(c: &mut Criterion) {
    let before = ALLOCATED_BYTES.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut store = Store::default();
    for i in 0..KEY_COUNT {
        store.apply(i + 1, 0, &put_entry(i)).expect("load put");
        // As the replica does after every entry; dropped here, as when no one watches.
        drop(store.take_events());
    }
    let load = started.elapsed();
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - before;
    let payload = key(0).len() + VALUE_BYTES;
    println!(
        "load: {KEY_COUNT} puts applied in {:.2?} ({:.0} puts/s)",
        load,
        KEY_COUNT as f64 / load.as_secs_f64()
    );
    println!(
        "memory: {:.1} MiB for {KEY_COUNT} keys = {} bytes/key ({} bytes of key+value, {} overhead)",
        bytes as f64 / (1024.0 * 1024.0),
        bytes as u64 / KEY_COUNT,
        payload,
        bytes as u64 / KEY_COUNT - payload as u64,
    );
    let mut snapshot = Vec::new();
    let started = Instant::now();
    store.write_snapshot(&mut snapshot).expect("snapshot");
    let written = started.elapsed();
    let started = Instant::now();
    let restored =
        Store::restore(store.config().clone(), &mut snapshot.as_slice()).expect("restore");
    println!(
        "snapshot: {:.1} MiB written in {:.2?}, restored in {:.2?}",
        snapshot.len() as f64 / (1024.0 * 1024.0),
        written,
        started.elapsed()
    );
    drop((snapshot, restored));

    // One compaction over every key, after 1,000 overwrites left some history behind.
    let mut index = store.applied_index();
    for n in 0..1000 {
        index += 1;
        store.apply(index, 0, &put_entry(scatter(n))).expect("put");
        drop(store.take_events());
    }
    index += 1;
    let compact =
        Command::Compact(CompactionRequest { revision: store.revision(), physical: false });
    let started = Instant::now();
    store.apply(index, 0, &Proposal::new(compact).encode()).expect("compact");
    println!(
        "compaction: 1,000 keys with history among {KEY_COUNT} compacted in {:.2?}",
        started.elapsed()
    );

    // A watcher catching up on the last 1,000 revisions: one page of history over the whole
    // key space (a pass over every key) and over a 1,000-key prefix.
    for n in 0..1000 {
        index += 1;
        store.apply(index, 0, &put_entry(scatter(n + 1000))).expect("put");
        drop(store.take_events());
    }
    let to = store.revision();
    for (what, key, range_end) in [
        ("whole key space", &b"\0"[..], &b"\0"[..]),
        ("prefix key/00001", b"key/00001", b"key/00002"),
    ] {
        let started = Instant::now();
        let page = store.history(key, range_end, to - 999, to, 1000).expect("history");
        let events: usize = page.revisions.iter().map(|r| r.events.len()).sum();
        println!(
            "history: {what}, last 1,000 revisions: {events} events in {:.2?}",
            started.elapsed()
        );
    }

    let mut group = c.benchmark_group("store_1m_keys");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // Requests are built ahead so that the timings are the store's alone; 65,536 distinct
    // keys spread over the whole key space keep the index out of the CPU caches.
    const PREPARED: u64 = 1 << 16;
    let entries: Vec<Bytes> = (0..PREPARED).map(|n| put_entry(scatter(n))).collect();
    let gets: Vec<RangeRequest> =
        (0..PREPARED).map(|n| RangeRequest::single(key(scatter(n)))).collect();
    let scans: Vec<RangeRequest> = (0..PREPARED)
        .map(|n| {
            let start = scatter(n) % (KEY_COUNT - 100);
            RangeRequest::span(key(start), key(start + 100))
        })
        .collect();
    group.throughput(Throughput::Elements(1));
    group.bench_function("apply_put_existing_key", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for n in 0..iters {
                index += 1;
                let entry = &entries[(n % entries.len() as u64) as usize];
                black_box(store.apply(index, 0, entry).expect("put"));
                black_box(store.take_events());
            }
            let elapsed = started.elapsed();
            // Compact outside the timing so that history (and memory) does not pile up.
            index += 1;
            let compact =
                Command::Compact(CompactionRequest { revision: store.revision(), physical: false });
            store.apply(index, 0, &Proposal::new(compact).encode()).expect("compact");
            elapsed
        })
    });

    let mut n = 0usize;
    group.bench_function("range_point_get", |b| {
        b.iter(|| {
            n = (n + 1) % gets.len();
            black_box(store.range(&gets[n]).expect("get"))
        })
    });

    group.throughput(Throughput::Elements(100));
    group.bench_function("range_scan_100_keys", |b| {
        b.iter(|| {
            n = (n + 1) % scans.len();
            let resp = store.range(&scans[n]).expect("scan");
            assert_eq!(resp.kvs.len(), 100);
            black_box(resp)
        })
    });

    // One key with 10,000 versions, written while a copy of the store is held (what a
    // published read view or a snapshot job is): the write copies only the part of the
    // history it changes (a bounded tail), not every version the copy shares.
    let mut hot = Store::default();
    let hot_entry = put_entry(0);
    let mut hot_index = 0;
    for _ in 0..10_000 {
        hot_index += 1;
        hot.apply(hot_index, 0, &hot_entry).expect("hot put");
        drop(hot.take_events());
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("apply_put_hot_key_10k_versions_while_copied", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            for _ in 0..iters {
                let view = hot.clone();
                hot_index += 1;
                black_box(hot.apply(hot_index, 0, &hot_entry).expect("put"));
                black_box(hot.take_events());
                drop(view);
            }
            started.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
