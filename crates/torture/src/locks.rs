//! The lock workload: clients that take etcd's lock (the Lock service) with a lease of their
//! own, and while they believe they hold it write a shared key through a transaction guarded
//! by their fencing token: the lock key's create revision, compared in the transaction, as
//! etcd's documentation and Jepsen's etcd analysis prescribe. A quarter of the holders sleep
//! past their lease's TTL without renewing it, so the lock passes to the next waiter while the
//! old holder still believes it holds it: its guarded writes must then fail.
//!
//! [`check_locks`] takes every put of the shared key that the members committed (the events
//! the watchers agreed on, acknowledged or not) and requires their tokens to be non-decreasing
//! in revision order (no holder's write between another holder's first and last; a stale
//! holder never writes after a newer one), each token to belong to one client only, and every
//! acknowledged guarded write to be the event at its revision.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, LockOptions, Txn, TxnOp};
use serde::Serialize;
use tenure_kv::{Event, EventKind};
use tenure_sim::rng::SimRng;

use crate::check::Verdict;
use crate::workload::Recorder;

/// The lock's name.
pub const LOCK_NAME: &str = "lock/torture";
/// The key the holders write, guarded by their token.
pub const FENCED_KEY: &str = "fenced";
/// The holders' lease TTL, in seconds.
pub const LOCK_TTL_S: i64 = 3;
/// How long a client waits for the lock before it gives up (and lets its lease go).
pub const LOCK_WAIT: Duration = Duration::from_secs(6);

/// One guarded write as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardedWrite {
    /// The client.
    pub client: u64,
    /// Its fencing token (the lock key's create revision).
    pub token: i64,
    /// The value written (`{client}.{token}.{seq}`).
    pub value: String,
    /// `Some(revision)`: the transaction succeeded; `None` with `refused`: the guard failed.
    pub revision: Option<i64>,
    /// The guard failed: the lock key was gone (the lease expired, the lock passed on).
    pub refused: bool,
}

/// What the lock clients recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockLog {
    /// Acquisitions: (client, token).
    pub acquisitions: Vec<(u64, i64)>,
    /// Every guarded write that was answered.
    pub writes: Vec<GuardedWrite>,
    /// Lock attempts that timed out or failed.
    pub failed_attempts: usize,
}

/// The value a guarded write puts: client, token and sequence, so that any committed put names
/// its writer's token.
pub fn fenced_value(client: u64, token: i64, seq: u64) -> String {
    format!("{client}.{token}.{seq}")
}

fn token_of(value: &[u8]) -> Option<(u64, i64)> {
    let s = std::str::from_utf8(value).ok()?;
    let mut parts = s.split('.');
    let client = parts.next()?.parse().ok()?;
    let token = parts.next()?.parse().ok()?;
    Some((client, token))
}

/// Runs lock client `id` until `stop` (each member a client without a request timeout: a lock
/// waits; every call here has its own timeout).
pub async fn run_lock_client(
    id: u64,
    members: Vec<Client>,
    seed: u64,
    op_timeout: Duration,
    log: Arc<Mutex<LockLog>>,
    stop: Arc<AtomicBool>,
    recorder: Arc<Recorder>,
) {
    let mut rng = SimRng::new(seed ^ id.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x10C);
    let mut members = members;
    let mut seq = 0u64;
    let n = members.len() as u64;
    while !stop.load(Ordering::Relaxed) {
        let m = rng.range(0, n) as usize;
        let grant = tokio::time::timeout(op_timeout, members[m].lease_grant(LOCK_TTL_S, None));
        let Ok(Ok(grant)) = grant.await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let lease = grant.id();
        let m = rng.range(0, n) as usize;
        let lock = members[m].lock(LOCK_NAME, Some(LockOptions::new().with_lease(lease)));
        let key = match tokio::time::timeout(LOCK_WAIT, lock).await {
            Ok(Ok(l)) => l.key().to_vec(),
            _ => {
                log.lock().unwrap_or_else(|e| e.into_inner()).failed_attempts += 1;
                let _ = tokio::time::timeout(op_timeout, members[m].lease_revoke(lease)).await;
                continue;
            }
        };
        // The token: the lock key's create revision.
        let get = tokio::time::timeout(op_timeout, members[m].get(key.clone(), None)).await;
        let token = match get {
            Ok(Ok(r)) => r.kvs().first().map(|kv| kv.create_revision()),
            _ => None,
        };
        let Some(token) = token else {
            // Gone already (the lease expired) or no answer: start over.
            let _ = tokio::time::timeout(op_timeout, members[m].lease_revoke(lease)).await;
            continue;
        };
        log.lock().unwrap_or_else(|e| e.into_inner()).acquisitions.push((id, token));
        // Hold it: a few guarded writes, a quarter of the time past the lease's TTL (the lease
        // is never renewed, so the lock passes on meanwhile).
        let stale = rng.chance(0.25);
        let hold_us =
            if stale { rng.range(3_500_000, 5_000_000) } else { rng.range(200_000, 1_500_000) };
        let until = recorder.now_us() + hold_us;
        loop {
            seq += 1;
            let value = fenced_value(id, token, seq);
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, token)])
                .and_then([TxnOp::put(FENCED_KEY, value.as_str(), None)]);
            let m = rng.range(0, n) as usize;
            if let Ok(Ok(r)) = tokio::time::timeout(op_timeout, members[m].txn(txn)).await {
                let revision = r.succeeded().then(|| r.header().map(|h| h.revision())).flatten();
                log.lock().unwrap_or_else(|e| e.into_inner()).writes.push(GuardedWrite {
                    client: id,
                    token,
                    value,
                    revision,
                    refused: !r.succeeded(),
                });
                if !r.succeeded() {
                    break;
                }
            }
            if recorder.now_us() >= until || stop.load(Ordering::Relaxed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.range(50, 300))).await;
        }
        let m = rng.range(0, n) as usize;
        let _ = tokio::time::timeout(op_timeout, members[m].unlock(key)).await;
        let _ = tokio::time::timeout(op_timeout, members[m].lease_revoke(lease)).await;
    }
}

/// Checks the lock log against the committed events (`reference`: revision to events), see
/// the module doc.
pub fn check_locks(log: &LockLog, reference: &BTreeMap<i64, Vec<Event>>) -> Verdict {
    const NAME: &str = "locks";
    let mut problems = Vec::new();
    let mut holder_of: BTreeMap<i64, u64> = BTreeMap::new();
    for &(client, token) in &log.acquisitions {
        if let Some(other) = holder_of.insert(token, client)
            && other != client
        {
            problems.push(format!("token {token} was given to clients {other} and {client}"));
        }
    }
    let mut last: Option<(i64, i64, u64)> = None; // (revision, token, client)
    let mut committed = 0usize;
    for (&revision, events) in reference {
        for e in events {
            if e.kind != EventKind::Put || e.kv.key.as_ref() != FENCED_KEY.as_bytes() {
                continue;
            }
            committed += 1;
            let Some((client, token)) = token_of(&e.kv.value) else {
                problems
                    .push(format!("revision {revision}: {FENCED_KEY} holds a value of no holder"));
                continue;
            };
            if let Some(&holder) = holder_of.get(&token)
                && holder != client
            {
                problems.push(format!(
                    "revision {revision}: client {client} wrote with token {token}, which is \
                     client {holder}'s"
                ));
            }
            if let Some((prev_rev, prev_token, prev_client)) = last
                && token < prev_token
            {
                problems.push(format!(
                    "revision {revision}: client {client} wrote with token {token} after client \
                     {prev_client} wrote with the newer token {prev_token} at revision {prev_rev}"
                ));
            }
            last = Some((revision, token, client));
        }
    }
    let mut acknowledged = 0usize;
    for w in &log.writes {
        let Some(revision) = w.revision else { continue };
        acknowledged += 1;
        let found = reference.get(&revision).is_some_and(|events| {
            events.iter().any(|e| {
                e.kind == EventKind::Put
                    && e.kv.key.as_ref() == FENCED_KEY.as_bytes()
                    && e.kv.value.as_ref() == w.value.as_bytes()
            })
        });
        if !found {
            problems.push(format!(
                "client {} was told its guarded write {} is revision {revision}; the history has \
                 no such put there",
                w.client, w.value
            ));
        }
    }
    if problems.is_empty() {
        let refused = log.writes.iter().filter(|w| w.refused).count();
        Verdict::pass(
            NAME,
            format!(
                "{} acquisitions, {committed} guarded writes committed in token order \
                 ({acknowledged} acknowledged, {refused} refused by the guard), {} lock attempts \
                 gave up",
                log.acquisitions.len(),
                log.failed_attempts
            ),
        )
    } else {
        let shown: Vec<String> = problems.iter().take(5).cloned().collect();
        Verdict::fail(NAME, format!("{} problems: {}", problems.len(), shown.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tenure_kv::KeyValue;

    use super::*;
    use crate::check::Outcome;

    fn put(key: &str, value: &str, revision: i64) -> (i64, Vec<Event>) {
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            create_revision: 2,
            mod_revision: revision,
            version: 1,
            value: Bytes::copy_from_slice(value.as_bytes()),
            lease: 0,
        };
        (revision, vec![Event { kind: EventKind::Put, kv, prev_kv: None }])
    }

    fn write(client: u64, token: i64, seq: u64, revision: i64) -> GuardedWrite {
        GuardedWrite {
            client,
            token,
            value: fenced_value(client, token, seq),
            revision: Some(revision),
            refused: false,
        }
    }

    #[test]
    fn writes_in_token_order_pass() {
        let reference: BTreeMap<_, _> = [
            put("lock/torture/1", "", 10),
            put(FENCED_KEY, "1.10.1", 11),
            put(FENCED_KEY, "1.10.2", 12),
            put(FENCED_KEY, "2.13.3", 14),
        ]
        .into_iter()
        .collect();
        let log = LockLog {
            acquisitions: vec![(1, 10), (2, 13)],
            writes: vec![write(1, 10, 1, 11), write(1, 10, 2, 12), write(2, 13, 3, 14)],
            failed_attempts: 0,
        };
        let v = check_locks(&log, &reference);
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    }

    #[test]
    fn a_stale_holder_writing_after_a_newer_token_fails() {
        // Client 1's lease expired and client 2 took the lock with token 13, yet client 1's
        // write (token 10) committed after client 2's: the guard did not hold.
        let reference: BTreeMap<_, _> = [
            put(FENCED_KEY, "1.10.1", 11),
            put(FENCED_KEY, "2.13.2", 14),
            put(FENCED_KEY, "1.10.3", 15),
        ]
        .into_iter()
        .collect();
        let log = LockLog {
            acquisitions: vec![(1, 10), (2, 13)],
            writes: vec![write(1, 10, 1, 11), write(2, 13, 2, 14)],
            failed_attempts: 0,
        };
        let v = check_locks(&log, &reference);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("newer token 13"), "{v:?}");
    }

    #[test]
    fn a_shared_token_and_a_lost_guarded_write_fail() {
        let reference: BTreeMap<_, _> = [put(FENCED_KEY, "1.10.1", 11)].into_iter().collect();
        let shared = LockLog { acquisitions: vec![(1, 10), (2, 10)], ..LockLog::default() };
        let v = check_locks(&shared, &reference);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("given to clients"), "{v:?}");
        let lost = LockLog {
            acquisitions: vec![(1, 10)],
            writes: vec![write(1, 10, 1, 11), write(1, 10, 2, 12)],
            failed_attempts: 0,
        };
        let v = check_locks(&lost, &reference);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("no such put"), "{v:?}");
    }
}
