//! Property tests: the store against a naive model (a full copy of the state per revision),
//! snapshot round trips, and decoding of random and mutated bytes.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use tenure_kv::{
    Command, CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget, Config,
    DeleteRangeRequest, DeleteRangeResponse, Error, KeyValue, LeaseGrantRequest,
    LeaseRevokeRequest, Proposal, PublishMemberRequest, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, Response, ResponseOp, RevisionEvents, SortOrder, SortTarget, Store,
    TxnRequest, TxnResponse, decode_outcome,
};

// ---- the model ---------------------------------------------------------------------------

fn key(k: u8) -> Bytes {
    Bytes::from(format!("k{k}"))
}

fn value(v: u8) -> Bytes {
    Bytes::from(format!("v{v}"))
}

/// An operation on a six-key space, small enough for the model to enumerate.
#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value: u8,
        prev_kv: bool,
    },
    /// Deletes `[key, key + span)` (a single key when `span` is 0).
    Delete {
        key: u8,
        span: u8,
        prev_kv: bool,
    },
    /// If `key`'s version equals `version`, run `success`, else `failure`.
    Txn {
        key: u8,
        version: i64,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    /// Compacts at `revision - back`.
    Compact {
        back: i64,
    },
    /// Reads `[key, key + span)` at `revision - back` (the current one when `back` is 0).
    Range {
        key: u8,
        span: u8,
        back: i64,
        limit: i64,
    },
}

#[derive(Debug, Clone)]
enum TxnOp {
    Put(u8, u8),
    Delete(u8),
    Get(u8),
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (0u8..6, any::<u8>()).prop_map(|(k, v)| TxnOp::Put(k, v)),
        (0u8..6).prop_map(TxnOp::Delete),
        (0u8..6).prop_map(TxnOp::Get),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, any::<u8>(), any::<bool>())
            .prop_map(|(key, value, prev_kv)| Op::Put { key, value, prev_kv }),
        2 => (0u8..6, 0u8..4, any::<bool>())
            .prop_map(|(key, span, prev_kv)| Op::Delete { key, span, prev_kv }),
        2 => (0u8..6, 0i64..3, prop::collection::vec(txn_op(), 0..4),
              prop::collection::vec(txn_op(), 0..4))
            .prop_map(|(key, version, success, failure)| Op::Txn { key, version, success, failure }),
        1 => (0i64..6).prop_map(|back| Op::Compact { back }),
        3 => (0u8..6, 0u8..7, 0i64..8, 0i64..4)
            .prop_map(|(key, span, back, limit)| Op::Range { key, span, back, limit }),
    ]
}

fn range_end(k: u8, span: u8) -> Bytes {
    if span == 0 { Bytes::new() } else { key(k + span) }
}

fn in_range(candidate: &Bytes, k: u8, span: u8) -> bool {
    if span == 0 {
        *candidate == key(k)
    } else {
        *candidate >= key(k) && *candidate < key(k + span)
    }
}

/// Every revision's full state, plus the compaction point.
struct Model {
    /// `states[i]` is the state at revision `i + 1`.
    states: Vec<BTreeMap<Bytes, KeyValue>>,
    compacted: i64,
}

impl Model {
    fn new() -> Model {
        Model { states: vec![BTreeMap::new()], compacted: -1 }
    }

    fn revision(&self) -> i64 {
        self.states.len() as i64
    }

    fn write(
        state: &mut BTreeMap<Bytes, KeyValue>,
        k: Bytes,
        v: Bytes,
        rev: i64,
    ) -> Option<KeyValue> {
        let prev = state.get(&k).cloned();
        let kv = KeyValue {
            key: k.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: v,
            lease: 0,
        };
        state.insert(k, kv);
        prev
    }

    fn read(
        state: &BTreeMap<Bytes, KeyValue>,
        k: u8,
        span: u8,
        limit: i64,
        current: i64,
    ) -> RangeResponse {
        let all: Vec<KeyValue> =
            state.values().filter(|kv| in_range(&kv.key, k, span)).cloned().collect();
        let count = all.len() as i64;
        let more = limit > 0 && count > limit;
        let kvs = if more { all[..limit as usize].to_vec() } else { all };
        RangeResponse { revision: current, kvs, more, count }
    }

    fn apply(&mut self, op: &Op) -> Result<Response, Error> {
        let cur = self.revision();
        match op {
            Op::Put { key: k, value: v, prev_kv } => {
                let mut next = self.states.last().unwrap().clone();
                let prev = Model::write(&mut next, key(*k), value(*v), cur + 1);
                self.states.push(next);
                Ok(Response::Put(PutResponse {
                    revision: cur + 1,
                    prev_kv: if *prev_kv { prev } else { None },
                }))
            }
            Op::Delete { key: k, span, prev_kv } => {
                let mut next = self.states.last().unwrap().clone();
                let gone: Vec<KeyValue> =
                    next.values().filter(|kv| in_range(&kv.key, *k, *span)).cloned().collect();
                for kv in &gone {
                    next.remove(&kv.key);
                }
                let revision = if gone.is_empty() { cur } else { cur + 1 };
                if !gone.is_empty() {
                    self.states.push(next);
                }
                Ok(Response::DeleteRange(DeleteRangeResponse {
                    revision,
                    deleted: gone.len() as i64,
                    prev_kvs: if *prev_kv { gone } else { Vec::new() },
                }))
            }
            Op::Txn { key: k, version, success, failure } => {
                let before = self.states.last().unwrap();
                let current_version = before.get(&key(*k)).map_or(0, |kv| kv.version);
                let succeeded = current_version == *version;
                let ops = if succeeded { success } else { failure };
                let puts: Vec<u8> = ops
                    .iter()
                    .filter_map(|o| if let TxnOp::Put(k, _) = o { Some(*k) } else { None })
                    .collect();
                let dels: Vec<u8> = ops
                    .iter()
                    .filter_map(|o| if let TxnOp::Delete(k) = o { Some(*k) } else { None })
                    .collect();
                // Duplicate checks look at both branches, taken or not.
                for branch in [success, failure] {
                    let mut seen_puts = Vec::new();
                    for o in branch {
                        if let TxnOp::Put(k, _) = o {
                            let deleted =
                                branch.iter().any(|d| matches!(d, TxnOp::Delete(x) if x == k));
                            if seen_puts.contains(k) || deleted {
                                return Err(Error::DuplicateKey);
                            }
                            seen_puts.push(*k);
                        }
                    }
                }
                let _ = (puts, dels);
                let mut working = before.clone();
                let mut changed = false;
                let mut responses = Vec::new();
                for o in ops {
                    let rev_now = if changed { cur + 1 } else { cur };
                    responses.push(match o {
                        TxnOp::Put(k, v) => {
                            Model::write(&mut working, key(*k), value(*v), cur + 1);
                            changed = true;
                            ResponseOp::Put(PutResponse { revision: cur + 1, prev_kv: None })
                        }
                        TxnOp::Delete(k) => {
                            let deleted = working.remove(&key(*k)).is_some();
                            changed |= deleted;
                            ResponseOp::DeleteRange(DeleteRangeResponse {
                                revision: if changed { cur + 1 } else { cur },
                                deleted: i64::from(deleted),
                                prev_kvs: Vec::new(),
                            })
                        }
                        TxnOp::Get(k) => {
                            ResponseOp::Range(Model::read(&working, *k, 0, 0, rev_now))
                        }
                    });
                }
                // Each response carries the revision as of its operation, as etcd's do.
                let revision = if changed { cur + 1 } else { cur };
                if changed {
                    self.states.push(working);
                }
                Ok(Response::Txn(TxnResponse { revision, succeeded, responses }))
            }
            Op::Compact { back } => {
                let rev = cur - back;
                if rev <= self.compacted {
                    return Err(Error::Compacted);
                }
                self.compacted = rev;
                Ok(Response::Compact(CompactionResponse { revision: cur }))
            }
            Op::Range { .. } => unreachable!("reads are not commands"),
        }
    }

    fn range(&self, k: u8, span: u8, back: i64, limit: i64) -> Result<RangeResponse, Error> {
        let cur = self.revision();
        let rev = if back == 0 { 0 } else { cur - back };
        let at = if rev <= 0 { cur } else { rev };
        if at < self.compacted {
            return Err(Error::Compacted);
        }
        Ok(Model::read(&self.states[(at - 1) as usize], k, span, limit, cur))
    }
}

fn command(op: &Op) -> Option<Command> {
    Some(match op {
        Op::Put { key: k, value: v, prev_kv } => {
            Command::Put(PutRequest { prev_kv: *prev_kv, ..PutRequest::new(key(*k), value(*v)) })
        }
        Op::Delete { key: k, span, prev_kv } => Command::DeleteRange(DeleteRangeRequest {
            key: key(*k),
            range_end: range_end(*k, *span),
            prev_kv: *prev_kv,
        }),
        Op::Txn { key: k, version, success, failure } => {
            let ops = |ops: &[TxnOp]| {
                ops.iter()
                    .map(|o| match o {
                        TxnOp::Put(k, v) => RequestOp::Put(PutRequest::new(key(*k), value(*v))),
                        TxnOp::Delete(k) => {
                            RequestOp::DeleteRange(DeleteRangeRequest::single(key(*k)))
                        }
                        TxnOp::Get(k) => RequestOp::Range(RangeRequest::single(key(*k))),
                    })
                    .collect()
            };
            Command::Txn(TxnRequest {
                compare: vec![Compare::new(
                    key(*k),
                    CompareResult::Equal,
                    CompareTarget::Version(*version),
                )],
                success: ops(success),
                failure: ops(failure),
            })
        }
        Op::Compact { .. } | Op::Range { .. } => return None,
    })
}

fn range_request(k: u8, span: u8, revision: i64, limit: i64) -> RangeRequest {
    RangeRequest {
        key: key(k),
        range_end: range_end(k, span),
        revision,
        limit,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut store = Store::default();
        let mut model = Model::new();
        for (i, op) in ops.iter().enumerate() {
            let index = i as u64 + 1;
            match op {
                Op::Range { key: k, span, back, limit } => {
                    let cur = model.revision();
                    let revision = if *back == 0 { 0 } else { cur - back };
                    let got = store.range(&range_request(*k, *span, revision, *limit));
                    prop_assert_eq!(got, model.range(*k, *span, *back, *limit));
                    // Keep the index moving, as the log does.
                    store.apply(index, 0, &Proposal::new(Command::LeaseGrant(LeaseGrantRequest { id: 0, ttl: 1 })).encode()).unwrap();
                }
                Op::Compact { back } => {
                    let revision = model.revision() - back;
                    let got = store.apply(index, 0, &Proposal::new(Command::Compact(CompactionRequest { revision, physical: false })).encode());
                    prop_assert_eq!(got, model.apply(op));
                }
                _ => {
                    let cmd = command(op).unwrap();
                    let got = store.apply(index, 0, &Proposal::new(cmd).encode());
                    prop_assert_eq!(got, model.apply(op));
                }
            }
            prop_assert_eq!(store.revision(), model.revision());
            let all = RangeRequest::prefix(Bytes::new());
            let current = model.range(0, 6, 0, 0).unwrap();
            prop_assert_eq!(store.range(&all).unwrap(), current);
        }
    }
}

// ---- watch history -----------------------------------------------------------------------

/// Pages through the history of `(key, range_end)` from the first revision above the last
/// compaction, `max_events` at a time, and checks it is exactly `taken` filtered to `keep`:
/// the same events in the same order, grouped by revision, with no page above `max_events`
/// unless it holds one revision, and each `next` where the following page starts.
fn check_history(
    store: &Store,
    taken: &[RevisionEvents],
    key: &[u8],
    range_end: &[u8],
    keep: impl Fn(&Bytes) -> bool,
    max_events: usize,
) -> Result<(), String> {
    let from = store.compact_revision().map_or(1, |c| c + 1);
    let expected: Vec<RevisionEvents> = taken
        .iter()
        .filter(|r| r.revision >= from)
        .filter_map(|r| {
            let events: Vec<_> = r.events.iter().filter(|e| keep(&e.kv.key)).cloned().collect();
            (!events.is_empty()).then_some(RevisionEvents { revision: r.revision, events })
        })
        .collect();
    let mut got = Vec::new();
    let mut next = Some(from);
    while let Some(from) = next {
        let page = store
            .history(key, range_end, from, store.revision(), max_events)
            .map_err(|e| format!("history from {from}: {e}"))?;
        let events: usize = page.revisions.iter().map(|r| r.events.len()).sum();
        if events > max_events && page.revisions.len() > 1 {
            return Err(format!("page from {from} has {events} events over several revisions"));
        }
        if let (Some(n), Some(last)) = (page.next, page.revisions.last())
            && n <= last.revision
        {
            return Err(format!("next {n} is not after the page's last revision"));
        }
        if page.next.is_some() && page.revisions.is_empty() {
            return Err(format!("empty page from {from} with a next"));
        }
        got.extend(page.revisions);
        next = page.next;
    }
    if got != expected {
        return Err(format!("history differs from the events taken:\n{got:?}\n{expected:?}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn history_equals_the_events_taken_during_apply(
        ops in prop::collection::vec(op(), 0..60),
        k in 0u8..6,
        span in 0u8..4,
        max_events in 1usize..6,
    ) {
        let (store, taken) = build_taking_events(&ops);
        // Revisions only grow, and each changed something.
        prop_assert!(taken.windows(2).all(|w| w[0].revision < w[1].revision));
        prop_assert!(taken.iter().all(|r| !r.events.is_empty()));
        prop_assert_eq!(taken.last().map_or(store.revision(), |r| r.revision), store.revision());
        let all = check_history(&store, &taken, b"\0", b"\0", |_| true, max_events);
        prop_assert!(all.is_ok(), "{}", all.unwrap_err());
        let end = range_end(k, span);
        let sub = check_history(&store, &taken, &key(k), &end, |c| in_range(c, k, span), max_events);
        prop_assert!(sub.is_ok(), "{}", sub.unwrap_err());
        // A restored snapshot replays the same history.
        let restored = Store::restore(store.config().clone(), &mut snapshot(&store).as_slice()).unwrap();
        let again = check_history(&restored, &taken, b"\0", b"\0", |_| true, usize::MAX);
        prop_assert!(again.is_ok(), "{}", again.unwrap_err());
    }
}

#[test]
fn history_check_catches_reordered_missing_and_extra_events() {
    let ops = [
        Op::Put { key: 1, value: 1, prev_kv: false },
        Op::Put { key: 2, value: 1, prev_kv: false },
        Op::Txn {
            key: 0,
            version: 0,
            success: vec![TxnOp::Put(3, 1), TxnOp::Delete(1), TxnOp::Put(2, 2)],
            failure: Vec::new(),
        },
    ];
    let (store, taken) = build_taking_events(&ops);
    check_history(&store, &taken, b"\0", b"\0", |_| true, 2).unwrap();
    let mut reordered = taken.clone();
    reordered[2].events.swap(0, 1);
    assert!(check_history(&store, &reordered, b"\0", b"\0", |_| true, 2).is_err());
    let mut missing = taken.clone();
    missing.remove(1);
    assert!(check_history(&store, &missing, b"\0", b"\0", |_| true, 2).is_err());
    let mut extra = taken.clone();
    let copied = extra[1].events[0].clone();
    extra[0].events.push(copied);
    assert!(check_history(&store, &extra, b"\0", b"\0", |_| true, 2).is_err());
}

// ---- snapshots ---------------------------------------------------------------------------

/// Applies `ops` (as commands; reads become lease grants) with session tags on some of them.
fn build(ops: &[Op]) -> Store {
    build_taking_events(ops).0
}

/// [`build`], also returning every event taken after each entry, as the replica takes them.
fn build_taking_events(ops: &[Op]) -> (Store, Vec<RevisionEvents>) {
    let mut taken = Vec::new();
    let mut store = Store::new(Config { sessions_max: 3, ..Config::default() }).unwrap();
    let mut seqs = [0u64; 5];
    for (i, op) in ops.iter().enumerate() {
        let cmd = match op {
            Op::Compact { back } => Command::Compact(CompactionRequest {
                revision: store.revision() - back,
                physical: false,
            }),
            // Member publications (ids 1 to 3, so later ones overwrite earlier ones).
            Op::Range { key, span, .. } if span % 2 == 1 => {
                let urls = (0..*span % 4).map(|u| format!("http://m{key}:{u}")).collect();
                Command::PublishMember(PublishMemberRequest::new(
                    u64::from(*key % 3) + 1,
                    format!("n{key}"),
                    urls,
                ))
            }
            Op::Range { key, .. } if key % 2 == 0 => {
                Command::LeaseGrant(LeaseGrantRequest { id: i64::from(*key) + 1, ttl: 5 })
            }
            Op::Range { key, .. } => {
                Command::LeaseRevoke(LeaseRevokeRequest { id: i64::from(*key) })
            }
            // Some puts carry lease 1, which exists only some of the time.
            Op::Put { key: k, value: v, .. } if v % 4 == 0 => {
                Command::Put(PutRequest { lease: 1, ..PutRequest::new(key(*k), value(*v)) })
            }
            op => command(op).unwrap(),
        };
        let client = (i % 5) as u64;
        let proposal = if i % 2 == 0 {
            seqs[client as usize] += 1;
            Proposal::with_session(cmd, client, seqs[client as usize])
        } else {
            Proposal::new(cmd)
        };
        let _ = store.apply(i as u64 + 1, i as u64 * 100, &proposal.encode());
        taken.extend(store.take_events());
    }
    (store, taken)
}

fn snapshot(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    let n = store.write_snapshot(&mut out).unwrap();
    assert_eq!(n as usize, out.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn snapshot_restores_an_equal_store(ops in prop::collection::vec(op(), 0..60),
                                        more in prop::collection::vec(op(), 0..20)) {
        let store = build(&ops);
        let bytes = snapshot(&store);
        let mut restored = Store::restore(store.config().clone(), &mut bytes.as_slice()).unwrap();
        prop_assert_eq!(&restored, &store);
        prop_assert_eq!(snapshot(&restored), bytes);
        // Both answer the same from here on.
        let mut original = store;
        let base = original.applied_index();
        for (i, op) in more.iter().enumerate() {
            if let Some(cmd) = command(op) {
                let e = Proposal::with_session(cmd, 1, 100 + i as u64).encode();
                let idx = base + 1 + i as u64;
                prop_assert_eq!(original.apply(idx, 1 << 40, &e), restored.apply(idx, 1 << 40, &e));
            }
        }
        prop_assert_eq!(original, restored);
    }

    #[test]
    fn corrupt_snapshot_is_an_error(ops in prop::collection::vec(op(), 0..30),
                                    at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let store = build(&ops);
        let mut bytes = snapshot(&store);
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        prop_assert!(Store::restore(Config::default(), &mut bytes.as_slice()).is_err());
    }

    #[test]
    fn truncated_snapshot_is_an_error(ops in prop::collection::vec(op(), 0..30),
                                      at in any::<prop::sample::Index>()) {
        let store = build(&ops);
        let bytes = snapshot(&store);
        let cut = at.index(bytes.len());
        prop_assert!(Store::restore(Config::default(), &mut &bytes[..cut]).is_err());
    }
}

#[test]
fn snapshot_with_trailing_bytes_is_an_error() {
    let mut bytes = snapshot(&build(&[Op::Put { key: 1, value: 1, prev_kv: false }]));
    bytes.push(0);
    assert!(Store::restore(Config::default(), &mut bytes.as_slice()).is_err());
}

#[test]
fn snapshot_of_many_keys_spans_several_frames_and_restores() {
    let mut store = Store::default();
    for i in 0..5000u64 {
        let put = PutRequest::new(Bytes::from(format!("key/{i:06}")), Bytes::from(vec![7u8; 40]));
        store.apply(i + 1, 0, &Proposal::new(Command::Put(put)).encode()).unwrap();
    }
    let bytes = snapshot(&store);
    assert!(bytes.len() > 3 * tenure_kv::snapshot::FRAME_TARGET_BYTES);
    let restored = Store::restore(Config::default(), &mut bytes.as_slice()).unwrap();
    assert_eq!(restored, store);
}

#[test]
fn snapshot_of_a_large_value_gets_its_own_frame() {
    let mut store = Store::default();
    let big = Bytes::from(vec![1u8; 200 * 1024]);
    let put = PutRequest::new(Bytes::from_static(b"big"), big);
    store.apply(1, 0, &Proposal::new(Command::Put(put)).encode()).unwrap();
    let bytes = snapshot(&store);
    let restored = Store::restore(Config::default(), &mut bytes.as_slice()).unwrap();
    assert_eq!(restored, store);
}

// ---- codec -------------------------------------------------------------------------------

fn small_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..5).prop_map(Bytes::from)
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        (small_bytes(), small_bytes(), any::<i64>(), any::<i64>()),
        (0usize..3, 0usize..5, any::<bool>(), any::<bool>()),
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()),
    )
        .prop_map(
            |((key, range_end, limit, revision), (o, t, keys_only, count_only), (a, b, c, d))| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][o],
                    sort_target: [
                        SortTarget::Key,
                        SortTarget::Version,
                        SortTarget::Create,
                        SortTarget::Mod,
                        SortTarget::Value,
                    ][t],
                    keys_only,
                    count_only,
                    min_mod_revision: a,
                    max_mod_revision: b,
                    min_create_revision: c,
                    max_create_revision: d,
                }
            },
        )
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (small_bytes(), small_bytes(), any::<i64>(), any::<bool>(), any::<bool>(), any::<bool>())
        .prop_map(|(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        })
}

fn del_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (small_bytes(), small_bytes(), any::<bool>())
        .prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest { key, range_end, prev_kv })
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        any::<i64>().prop_map(CompareTarget::Version),
        any::<i64>().prop_map(CompareTarget::CreateRevision),
        any::<i64>().prop_map(CompareTarget::ModRevision),
        small_bytes().prop_map(CompareTarget::Value),
        any::<i64>().prop_map(CompareTarget::Lease),
    ];
    (small_bytes(), small_bytes(), 0usize..4, target).prop_map(|(key, range_end, r, target)| {
        Compare {
            key,
            range_end,
            result: [
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ][r],
            target,
        }
    })
}

fn txn_req() -> impl Strategy<Value = TxnRequest> {
    let leaf_op = prop_oneof![
        range_req().prop_map(RequestOp::Range),
        put_req().prop_map(RequestOp::Put),
        del_req().prop_map(RequestOp::DeleteRange),
    ];
    let leaf = (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(leaf_op.clone(), 0..3),
        prop::collection::vec(leaf_op.clone(), 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest { compare, success, failure });
    leaf.prop_recursive(3, 24, 3, move |inner| {
        let op = prop_oneof![leaf_op.clone(), inner.prop_map(RequestOp::Txn)];
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(op.clone(), 0..3),
            prop::collection::vec(op, 0..3),
        )
            .prop_map(|(compare, success, failure)| TxnRequest {
                compare,
                success,
                failure,
            })
    })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    let command = prop_oneof![
        put_req().prop_map(Command::Put),
        del_req().prop_map(Command::DeleteRange),
        txn_req().prop_map(Command::Txn),
        (any::<i64>(), any::<bool>()).prop_map(|(revision, physical)| Command::Compact(
            CompactionRequest { revision, physical }
        )),
        (any::<i64>(), any::<i64>())
            .prop_map(|(id, ttl)| Command::LeaseGrant(LeaseGrantRequest { id, ttl })),
        any::<i64>().prop_map(|id| Command::LeaseRevoke(LeaseRevokeRequest { id })),
        (any::<u64>(), ".{0,8}", prop::collection::vec(".{0,12}", 0..3)).prop_map(
            |(id, name, urls)| Command::PublishMember(PublishMemberRequest::new(id, name, urls))
        ),
    ];
    (command, prop::option::of((any::<u64>(), any::<u64>()))).prop_map(|(command, session)| {
        match session {
            None => Proposal::new(command),
            Some((c, s)) => Proposal::with_session(command, c, s),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn proposals_round_trip(p in proposal()) {
        prop_assert_eq!(Proposal::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Proposal::decode(&bytes);
        let _ = decode_outcome(&bytes);
        let _ = Store::restore(Config::default(), &mut bytes.as_slice());
        let mut store = Store::default();
        let _ = store.apply(1, 0, &bytes);
    }

    #[test]
    fn mutated_proposals_never_panic_and_apply_cleanly(
        p in proposal(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = p.encode().to_vec();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let cut = cut.index(bytes.len() + 1);
        for candidate in [&bytes[..], &bytes[..cut]] {
            let mut store = Store::default();
            if let Err(e) = store.apply(1, 0, candidate) {
                // Anything but a format version problem is an answer, not a stop.
                prop_assert!(
                    e.is_deterministic() || candidate.first() != Some(&tenure_kv::FORMAT_VERSION)
                );
            }
        }
    }

    #[test]
    fn random_proposals_apply_without_panicking(ps in prop::collection::vec(proposal(), 1..20)) {
        let mut store = Store::default();
        for (i, p) in ps.iter().enumerate() {
            let result = store.apply(i as u64 + 1, 0, &p.encode());
            if let Err(e) = result {
                prop_assert!(e.is_deterministic());
            }
        }
    }
}

#[test]
fn model_comparison_catches_a_diverging_store() {
    let mut store = Store::default();
    let mut model = Model::new();
    // The store applies a put the model never sees; the next put must then disagree.
    let extra = Op::Put { key: 0, value: 9, prev_kv: false };
    store.apply(1, 0, &Proposal::new(command(&extra).unwrap()).encode()).unwrap();
    let op = Op::Put { key: 0, value: 1, prev_kv: true };
    let got = store.apply(2, 0, &Proposal::new(command(&op).unwrap()).encode());
    assert_ne!(got, model.apply(&op));
}
