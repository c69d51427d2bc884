//! Kubernetes-shaped traffic, as kube-apiserver drives etcd: objects under `/registry/pods/`
//! created with `create_revision == 0`, updated and deleted by a compare on their
//! `mod_revision` (optimistic concurrency), paged lists (a first page at the current revision,
//! the rest pinned to it with `limit` and a continue key), an informer (a paged list, then a
//! watch of the prefix from the list's revision + 1 with `prev_kv`, listed again if its
//! revision was compacted), and compaction (below what every watcher has seen, so that none
//! of the run's watchers is cut off).
//!
//! [`check_k8s`] replays the prefix's events from the history every watcher agreed on (the
//! reference) and requires: every complete paged list to equal the prefix's state at its
//! revision; every acknowledged create to find the key absent just before, every acknowledged
//! update or delete to find it at the `mod_revision` it compared; the informer's events to be
//! exactly the reference's from its start on, each `prev_kv` the state just before, and its
//! cache at its last revision to equal the state there.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use serde::Serialize;
use tenure_kv::{Event, EventKind};
use tenure_sim::rng::SimRng;

use crate::check::Verdict;

/// The prefix the objects live under.
pub const PREFIX: &str = "/registry/pods/";
/// How many objects the client churns.
pub const OBJECT_COUNT: u64 = 12;
/// Keys per page of a list.
pub const PAGE_LIMIT: i64 = 4;

/// An object's state: (mod_revision, value).
type State = BTreeMap<String, (i64, String)>;

/// A listed object: (key, mod_revision, value).
pub type Listed = (String, i64, String);

/// A key's changes: (revision, its state after it; `None`: deleted).
type Changes = Vec<(i64, Option<(i64, String)>)>;

/// A write the client was answered for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CasWrite {
    /// The key.
    pub key: String,
    /// `None`: a create (compared `create_revision == 0`); `Some(m)`: compared
    /// `mod_revision == m`.
    pub expected: Option<i64>,
    /// Whether it deletes (else puts `value`).
    pub delete: bool,
    /// The value put.
    pub value: String,
    /// The revision it was acknowledged with.
    pub revision: i64,
}

/// One event the informer received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InformerEvent {
    /// The event's revision (the key's mod_revision; a delete's header revision).
    pub revision: i64,
    /// The key.
    pub key: String,
    /// `None`: a delete.
    pub value: Option<String>,
    /// `prev_kv`: (mod_revision, value), if sent.
    pub prev: Option<(i64, String)>,
}

/// One run of the informer: the list it started from and the events that followed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InformerRun {
    /// The list's revision.
    pub list_revision: i64,
    /// The list.
    pub list: Vec<Listed>,
    /// The events after it, in order.
    pub events: Vec<InformerEvent>,
}

/// What the Kubernetes-shaped client recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct K8sLog {
    /// Complete paged lists: (revision, [(key, mod_revision, value)]).
    pub lists: Vec<(i64, Vec<Listed>)>,
    /// Acknowledged creates, updates and deletes.
    pub writes: Vec<CasWrite>,
    /// Conflicts (the compare failed).
    pub conflicts: usize,
    /// The informer's runs (a new one after a compacted watch).
    pub informer: Vec<InformerRun>,
    /// Compactions the client had acknowledged.
    pub compactions: Vec<i64>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A paged list of the prefix: the first page at the current revision, the rest pinned to
/// it. `None` if a page failed (a timeout, or the revision was compacted meanwhile).
pub async fn paged_list(client: &mut Client, timeout: Duration) -> Option<(i64, Vec<Listed>)> {
    let end = prefix_end();
    let mut from = PREFIX.as_bytes().to_vec();
    let mut revision = 0;
    let mut out = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE_LIMIT);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let page = tokio::time::timeout(timeout, client.get(from.clone(), Some(options)))
            .await
            .ok()?
            .ok()?;
        if revision == 0 {
            revision = page.header()?.revision();
        }
        for kv in page.kvs() {
            out.push((text(kv.key()), kv.mod_revision(), text(kv.value())));
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Some((revision, out)),
        }
    }
}

fn prefix_end() -> Vec<u8> {
    let mut end = PREFIX.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    end
}

/// Runs the Kubernetes-shaped client until `stop`: creates, updates and deletes by CAS, paged
/// lists, and a compaction every few seconds below `compact_below` (the lowest revision every
/// watcher of the run has reached, kept up to date by the run).
pub async fn run_k8s_client(
    members: Vec<Client>,
    seed: u64,
    op_timeout: Duration,
    log: Arc<Mutex<K8sLog>>,
    stop: Arc<AtomicBool>,
    compact_below: Arc<AtomicI64>,
) {
    let mut rng = SimRng::new(seed ^ 0x6B8_5EED);
    let mut members = members;
    let n = members.len() as u64;
    // What the client believes each object's mod_revision is (None: absent).
    let mut known: BTreeMap<String, Option<i64>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut last_compaction = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let m = rng.range(0, n) as usize;
        let roll = rng.range(0, 100);
        if roll < 15 {
            if let Some((revision, list)) = paged_list(&mut members[m], op_timeout).await {
                for (k, rev, _) in &list {
                    known.insert(k.clone(), Some(*rev));
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).lists.push((revision, list));
            }
        } else {
            let key = format!("{PREFIX}pod-{}", rng.range(0, OBJECT_COUNT));
            seq += 1;
            let value = format!("v{seq}");
            let expected = known.get(&key).copied().flatten();
            let delete = expected.is_some() && rng.chance(0.2);
            let compare = match expected {
                None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Some(m) => Compare::mod_revision(key.as_str(), CompareOp::Equal, m),
            };
            let op = if delete {
                TxnOp::delete(key.as_str(), None)
            } else {
                TxnOp::put(key.as_str(), value.as_str(), None)
            };
            // On a conflict, read the object back (as the apiserver's GuaranteedUpdate does).
            let txn =
                Txn::new().when([compare]).and_then([op]).or_else([TxnOp::get(key.as_str(), None)]);
            match tokio::time::timeout(op_timeout, members[m].txn(txn)).await {
                Ok(Ok(r)) if r.succeeded() => {
                    let revision = r.header().map_or(0, |h| h.revision());
                    known.insert(key.clone(), (!delete).then_some(revision));
                    log.lock().unwrap_or_else(|e| e.into_inner()).writes.push(CasWrite {
                        key,
                        expected,
                        delete,
                        value,
                        revision,
                    });
                }
                Ok(Ok(r)) => {
                    let current = r.op_responses().into_iter().find_map(|op| match op {
                        etcd_client::TxnOpResponse::Get(g) => {
                            Some(g.kvs().first().map(|kv| kv.mod_revision()))
                        }
                        _ => None,
                    });
                    known.insert(key, current.flatten());
                    log.lock().unwrap_or_else(|e| e.into_inner()).conflicts += 1;
                }
                // Indeterminate: forget what we knew; a conflict will tell.
                _ => {
                    known.remove(&key);
                }
            }
        }
        if last_compaction.elapsed() >= Duration::from_secs(5) {
            last_compaction = std::time::Instant::now();
            let below = compact_below.load(Ordering::Relaxed) - 50;
            if below > 1 {
                let compact = members[m].compact(below, None);
                if let Ok(Ok(_)) = tokio::time::timeout(op_timeout, compact).await {
                    log.lock().unwrap_or_else(|e| e.into_inner()).compactions.push(below);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range(5, 30))).await;
    }
}

/// Runs the informer on `url` until aborted: list, then watch from the list's revision + 1
/// with `prev_kv`, resuming from the last event + 1; listing again when that was compacted.
/// Its last revision seen goes to `seen` (for the compaction bound).
pub async fn run_informer(url: String, log: Arc<Mutex<K8sLog>>, seen: Arc<AtomicI64>) {
    let timeout = Duration::from_secs(2);
    loop {
        let Ok(mut client) = crate::cluster::connect(&url, timeout, None).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Some((list_revision, list)) = paged_list(&mut client, timeout).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        seen.store(list_revision, Ordering::Relaxed);
        let run_index = {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.informer.push(InformerRun { list_revision, list, events: Vec::new() });
            log.informer.len() - 1
        };
        let mut next = list_revision + 1;
        // Watch until compacted past (then list again).
        'watch: loop {
            let options = WatchOptions::new()
                .with_range(prefix_end())
                .with_start_revision(next)
                .with_prev_key();
            let opened = tokio::time::timeout(timeout, client.watch(PREFIX, Some(options))).await;
            let Ok(Ok(mut stream)) = opened else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            loop {
                let Ok(Some(resp)) = stream.message().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue 'watch;
                };
                if resp.compact_revision() > 0 {
                    break 'watch;
                }
                if resp.canceled() {
                    continue 'watch;
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                let run = &mut log.informer[run_index];
                for e in resp.events() {
                    let Some(kv) = e.kv() else { continue };
                    // A delete's kv carries the deletion's revision as its mod_revision.
                    let revision = kv.mod_revision();
                    let delete = e.event_type() == EventType::Delete;
                    run.events.push(InformerEvent {
                        revision,
                        key: text(kv.key()),
                        value: (!delete).then(|| text(kv.value())),
                        prev: e.prev_kv().map(|p| (p.mod_revision(), text(p.value()))),
                    });
                    next = next.max(revision + 1);
                }
                seen.store(next - 1, Ordering::Relaxed);
            }
        }
    }
}

/// Every change of every key under the prefix, in revision order: (revision, the key's
/// state after it).
struct PrefixHistory {
    keys: BTreeMap<String, Changes>,
}

impl PrefixHistory {
    fn of(events: &BTreeMap<i64, Vec<Event>>) -> PrefixHistory {
        let mut keys: BTreeMap<String, Changes> = BTreeMap::new();
        for (&rev, evs) in events {
            for e in evs.iter().filter(|e| e.kv.key.starts_with(PREFIX.as_bytes())) {
                let after = (e.kind == EventKind::Put).then(|| (rev, text(&e.kv.value)));
                keys.entry(text(&e.kv.key)).or_default().push((rev, after));
            }
        }
        PrefixHistory { keys }
    }

    /// Key `key` after every revision up to and including `revision`.
    fn key_at(&self, key: &str, revision: i64) -> Option<(i64, String)> {
        let changes = self.keys.get(key)?;
        let n = changes.partition_point(|(r, _)| *r <= revision);
        n.checked_sub(1).and_then(|i| changes[i].1.clone())
    }

    /// The prefix after every revision up to and including `revision`.
    fn state_at(&self, revision: i64) -> State {
        self.keys.keys().filter_map(|k| Some((k.clone(), self.key_at(k, revision)?))).collect()
    }
}

fn apply(state: &mut State, revision: i64, events: &[Event]) {
    for e in events {
        let key = text(&e.kv.key);
        if !key.starts_with(PREFIX) {
            continue;
        }
        match e.kind {
            EventKind::Put => {
                state.insert(key, (revision, text(&e.kv.value)));
            }
            EventKind::Delete => {
                state.remove(&key);
            }
        }
    }
}

/// Checks the Kubernetes-shaped client's log against the reference (see the module doc).
pub fn check_k8s(log: &K8sLog, reference: &BTreeMap<i64, Vec<Event>>) -> Verdict {
    const NAME: &str = "kubernetes";
    let mut problems = Vec::new();
    let history = PrefixHistory::of(reference);
    for (revision, list) in &log.lists {
        let want: Vec<Listed> =
            history.state_at(*revision).into_iter().map(|(k, (rev, v))| (k, rev, v)).collect();
        if &want != list {
            problems.push(format!(
                "the paged list at revision {revision} has {} objects, the history {} there \
                 (first difference: {:?})",
                list.len(),
                want.len(),
                want.iter().zip(list).find(|(a, b)| a != b).map_or_else(
                    || "one is a prefix of the other".to_string(),
                    |(a, b)| format!("{a:?} against {b:?}")
                )
            ));
        }
    }
    for w in &log.writes {
        let at = reference.get(&w.revision).map_or(&[][..], Vec::as_slice);
        let done = at.iter().any(|e| {
            text(&e.kv.key) == w.key
                && if w.delete {
                    e.kind == EventKind::Delete
                } else {
                    e.kind == EventKind::Put && text(&e.kv.value) == w.value
                }
        });
        let found = history.key_at(&w.key, w.revision - 1).map(|s| s.0);
        if !done {
            problems.push(format!(
                "{} ({}) acknowledged at revision {}, which the history does not hold",
                w.key,
                if w.delete { "delete" } else { &w.value },
                w.revision
            ));
        } else if found != w.expected {
            problems.push(format!(
                "{} was changed at revision {} on a compare with {:?}, but it was at {found:?} \
                 just before",
                w.key, w.revision, w.expected
            ));
        }
    }
    let mut informer_events = 0;
    for run in &log.informer {
        let want: Vec<Listed> = history
            .state_at(run.list_revision)
            .into_iter()
            .map(|(k, (rev, v))| (k, rev, v))
            .collect();
        if want != run.list {
            problems.push(format!(
                "the informer's list at revision {} differs from the history",
                run.list_revision
            ));
        }
        let mut state = history.state_at(run.list_revision);
        let expected: Vec<(i64, &Event)> = reference
            .range(run.list_revision + 1..)
            .flat_map(|(r, evs)| evs.iter().map(move |e| (*r, e)))
            .filter(|(_, e)| e.kv.key.starts_with(PREFIX.as_bytes()))
            .take(run.events.len())
            .collect();
        if expected.len() < run.events.len() {
            problems.push(format!(
                "the informer got {} events after revision {}, the history has {}",
                run.events.len(),
                run.list_revision,
                expected.len()
            ));
            continue;
        }
        let mut last_rev = run.list_revision;
        for (got, (rev, e)) in run.events.iter().zip(expected) {
            informer_events += 1;
            let key = text(&e.kv.key);
            let value = (e.kind == EventKind::Put).then(|| text(&e.kv.value));
            if got.key != key || got.value != value {
                problems.push(format!(
                    "the informer's event {got:?} is not the history's {key}={value:?} at \
                     revision {rev}"
                ));
                break;
            }
            // Apply the revisions up to this one to see what was there before.
            for (&r, evs) in reference.range(last_rev + 1..rev) {
                apply(&mut state, r, evs);
            }
            let prev = state.get(&key).cloned();
            if got.prev != prev {
                problems.push(format!(
                    "the informer's event on {key} at revision {rev} has prev_kv {:?}, the \
                     history {prev:?}",
                    got.prev
                ));
                break;
            }
            match &got.value {
                Some(v) => {
                    state.insert(key, (rev, v.clone()));
                }
                None => {
                    state.remove(&key);
                }
            }
            last_rev = rev;
        }
    }
    if problems.is_empty() {
        Verdict::pass(
            NAME,
            format!(
                "{} paged lists equal to the history at their revision, {} CAS writes at the \
                 revisions they compared ({} conflicts), {} informer events with prev_kv in \
                 {} informer runs, {} compactions",
                log.lists.len(),
                log.writes.len(),
                log.conflicts,
                informer_events,
                log.informer.len(),
                log.compactions.len()
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

    fn ev(kind: EventKind, key: &str, value: &str, revision: i64) -> (i64, Vec<Event>) {
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            create_revision: 2,
            mod_revision: revision,
            version: 1,
            value: Bytes::copy_from_slice(value.as_bytes()),
            lease: 0,
        };
        (revision, vec![Event { kind, kv, prev_kv: None }])
    }

    fn reference() -> BTreeMap<i64, Vec<Event>> {
        let a = "/registry/pods/pod-0";
        let b = "/registry/pods/pod-1";
        [
            ev(EventKind::Put, a, "v1", 2),
            ev(EventKind::Put, "k0", "x", 3),
            ev(EventKind::Put, b, "v2", 4),
            ev(EventKind::Put, a, "v3", 5),
            ev(EventKind::Delete, b, "", 6),
        ]
        .into_iter()
        .collect()
    }

    fn good() -> K8sLog {
        let a = "/registry/pods/pod-0".to_string();
        let b = "/registry/pods/pod-1".to_string();
        K8sLog {
            lists: vec![(4, vec![(a.clone(), 2, "v1".into()), (b.clone(), 4, "v2".into())])],
            writes: vec![
                CasWrite {
                    key: a.clone(),
                    expected: None,
                    delete: false,
                    value: "v1".into(),
                    revision: 2,
                },
                CasWrite {
                    key: a.clone(),
                    expected: Some(2),
                    delete: false,
                    value: "v3".into(),
                    revision: 5,
                },
                CasWrite {
                    key: b.clone(),
                    expected: Some(4),
                    delete: true,
                    value: "v9".into(),
                    revision: 6,
                },
            ],
            conflicts: 0,
            informer: vec![InformerRun {
                list_revision: 3,
                list: vec![(a.clone(), 2, "v1".into())],
                events: vec![
                    InformerEvent {
                        revision: 4,
                        key: b.clone(),
                        value: Some("v2".into()),
                        prev: None,
                    },
                    InformerEvent {
                        revision: 5,
                        key: a.clone(),
                        value: Some("v3".into()),
                        prev: Some((2, "v1".into())),
                    },
                    InformerEvent {
                        revision: 6,
                        key: b.clone(),
                        value: None,
                        prev: Some((4, "v2".into())),
                    },
                ],
            }],
            compactions: vec![],
        }
    }

    #[test]
    fn a_history_that_matches_passes() {
        let v = check_k8s(&good(), &reference());
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    }

    #[test]
    fn a_list_missing_an_object_fails() {
        let mut log = good();
        log.lists[0].1.pop();
        let v = check_k8s(&log, &reference());
        assert!(
            v.outcome == Outcome::Fail && v.detail.contains("paged list at revision 4"),
            "{v:?}"
        );
    }

    #[test]
    fn an_update_on_a_stale_mod_revision_fails() {
        let mut log = good();
        log.writes[1].expected = Some(1);
        let v = check_k8s(&log, &reference());
        assert!(v.outcome == Outcome::Fail && v.detail.contains("compare with Some(1)"), "{v:?}");
    }

    #[test]
    fn a_wrong_prev_kv_or_a_missed_event_fails() {
        let mut log = good();
        log.informer[0].events[1].prev = Some((4, "v1".into()));
        let v = check_k8s(&log, &reference());
        assert!(v.outcome == Outcome::Fail && v.detail.contains("prev_kv"), "{v:?}");
        let mut log = good();
        log.informer[0].events.remove(0);
        let v = check_k8s(&log, &reference());
        assert!(v.outcome == Outcome::Fail && v.detail.contains("not the history's"), "{v:?}");
    }
}
