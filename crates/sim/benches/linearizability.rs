//! How long the linearizability checker takes on generated histories of realistic size.
//!
//! `cargo bench -p tenure-sim --bench linearizability` prints one line per history shape: the
//! verdict and the median, minimum and maximum of a few runs. A plain `main` (no harness): each
//! run takes long enough that statistics beyond a median would only slow the bench down.

use std::time::{Duration, Instant};

use tenure_sim::linearizability::generate::{GenerateConfig, linearizable_history};
use tenure_sim::linearizability::{CheckResult, OpKind, Status, check};

const RUNS: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let realistic = GenerateConfig {
        client_count: 50,
        op_count: 5_000,
        key_count: 10,
        info_per_mille: 10,
        appends: false,
        value_pool: None,
    };
    let cases = [
        ("50 clients, 5000 ops, 10 keys, 1% info", realistic.clone()),
        (
            "50 clients, 5000 ops, 10 keys, 1% info, appends",
            GenerateConfig { appends: true, ..realistic.clone() },
        ),
        (
            "50 clients, 5000 ops, 10 keys, 5 distinct values",
            GenerateConfig { value_pool: Some(5), ..realistic.clone() },
        ),
        (
            "50 clients, 5000 ops, 10 keys, 10% info",
            GenerateConfig { info_per_mille: 100, ..realistic.clone() },
        ),
        (
            "50 clients, 5000 ops, 1 register, no info",
            GenerateConfig { key_count: 0, info_per_mille: 0, ..realistic.clone() },
        ),
    ];
    for (name, config) in &cases {
        let history = linearizable_history(config, 42);
        report(name, &history);
        // The same history with one late read made impossible: the search must exhaust the
        // failing key before it can say so. First a value nothing writes, then a stale value
        // (the key's first write, long overwritten unless values repeat).
        let Some(last_read) = history
            .iter()
            .rposition(|op| op.status == Status::Ok && matches!(op.kind, OpKind::Read { .. }))
        else {
            continue;
        };
        let mut broken = history.clone();
        broken[last_read].kind = OpKind::Read { value: Some("#corrupt".to_owned()) };
        report(&format!("{name}, one corrupt read"), &broken);
        let first_write = history.iter().find_map(|op| match &op.kind {
            OpKind::Write { value } if op.key == history[last_read].key => Some(value.clone()),
            _ => None,
        });
        if let Some(stale) = first_write {
            let mut stale_history = history.clone();
            stale_history[last_read].kind = OpKind::Read { value: Some(stale) };
            report(&format!("{name}, one read of the key's first write"), &stale_history);
        }
    }
}

fn report(name: &str, history: &[tenure_sim::linearizability::Operation]) {
    let mut timings = Vec::with_capacity(RUNS);
    let mut verdict = "";
    for _ in 0..RUNS {
        let start = Instant::now();
        let result = check(history, TIMEOUT).expect("generated histories are well formed");
        timings.push(start.elapsed());
        verdict = match result {
            CheckResult::Linearizable => "linearizable",
            CheckResult::NotLinearizable(_) => "not linearizable",
            CheckResult::Unknown { .. } => "unknown",
        };
    }
    timings.sort();
    println!(
        "{name}: {verdict}; median {:?} (min {:?}, max {:?}) over {RUNS} runs",
        timings[RUNS / 2],
        timings[0],
        timings[RUNS - 1]
    );
}
