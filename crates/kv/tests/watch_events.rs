//! The state-machine side of etcd's Watch: the events each applied revision yields
//! (`Store::take_events`) and the history the index replays (`Store::history`), one behaviour
//! per test. Field values follow etcd's `mvccpb.Event` as its watchers receive them.

mod common;

use bytes::Bytes;
use common::{Kv, b};
use tenure_kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, Event, EventKind, HistoryError,
    KeyValue, PutRequest, RangeRequest, RequestOp, RevisionEvents, Store, TxnRequest,
};

fn pair(key: &str, value: &str, create_revision: i64, mod_revision: i64, version: i64) -> KeyValue {
    KeyValue { key: b(key), value: b(value), create_revision, mod_revision, version, lease: 0 }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(b(key), b(value)))
}

fn del_op(key: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest::single(b(key)))
}

fn txn(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare: Vec::new(), success, failure: Vec::new() }
}

/// The keys of a revision's events, as text, in event order.
fn keys(revision: &RevisionEvents) -> Vec<String> {
    revision.events.iter().map(|e| String::from_utf8(e.kv.key.to_vec()).unwrap()).collect()
}

/// The events taken after one write, which must be exactly one revision.
fn one_revision(kv: &mut Kv) -> RevisionEvents {
    let mut taken = kv.store.take_events();
    assert_eq!(taken.len(), 1, "{taken:?}");
    taken.pop().unwrap()
}

/// Every event of the whole key space from `from` on, in one page.
fn all_history(store: &Store, from: i64) -> Vec<RevisionEvents> {
    let page = store.history(b"\0", b"\0", from, store.revision(), usize::MAX).unwrap();
    assert_eq!(page.next, None);
    page.revisions
}

// ---- events of applied entries -----------------------------------------------------------

#[test]
fn put_of_a_new_key_is_a_put_event_with_create_revision_equal_to_mod_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let rev = one_revision(&mut kv);
    assert_eq!(rev.revision, 2);
    assert_eq!(
        rev.events,
        [Event { kind: EventKind::Put, kv: pair("a", "1", 2, 2, 1), prev_kv: None }]
    );
}

#[test]
fn put_of_an_existing_key_counts_its_version_and_carries_the_previous_pair() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("a", "2");
    kv.store.take_events();
    kv.put("a", "3");
    let rev = one_revision(&mut kv);
    assert_eq!(
        rev.events,
        [Event {
            kind: EventKind::Put,
            kv: pair("a", "3", 2, 4, 3),
            prev_kv: Some(pair("a", "2", 2, 3, 2)),
        }]
    );
}

#[test]
fn delete_event_has_only_the_key_and_the_delete_revision_and_the_deleted_pair_before() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.store.take_events();
    kv.del("a");
    let rev = one_revision(&mut kv);
    let deleted = KeyValue { key: b("a"), mod_revision: 3, ..KeyValue::default() };
    assert_eq!(
        rev.events,
        [Event { kind: EventKind::Delete, kv: deleted, prev_kv: Some(pair("a", "1", 2, 2, 1)) }]
    );
}

#[test]
fn put_after_a_delete_creates_the_key_again_at_version_1_without_a_previous_pair() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.del("a");
    kv.store.take_events();
    kv.put("a", "2");
    let rev = one_revision(&mut kv);
    assert_eq!(
        rev.events,
        [Event { kind: EventKind::Put, kv: pair("a", "2", 4, 4, 1), prev_kv: None }]
    );
}

#[test]
fn put_with_ignore_value_and_a_lease_is_an_event_with_the_kept_value_and_the_lease() {
    let mut kv = Kv::new();
    kv.grant(7, 10).unwrap();
    kv.put("a", "1");
    kv.store.take_events();
    kv.put_req(PutRequest {
        ignore_value: true,
        lease: 7,
        ..PutRequest::new(b("a"), Bytes::new())
    })
    .unwrap();
    let rev = one_revision(&mut kv);
    assert_eq!(rev.events[0].kv, KeyValue { lease: 7, ..pair("a", "1", 2, 3, 2) });
    assert_eq!(rev.events[0].prev_kv, Some(pair("a", "1", 2, 2, 1)));
}

#[test]
fn txn_events_come_in_operation_order_within_one_revision() {
    let mut kv = Kv::new();
    kv.put("m", "0");
    kv.store.take_events();
    let nested = RequestOp::Txn(txn(vec![put_op("b", "2")]));
    let get = RequestOp::Range(RangeRequest::single(b("m")));
    kv.txn(txn(vec![put_op("z", "1"), get, del_op("m"), nested, put_op("a", "3")])).unwrap();
    let rev = one_revision(&mut kv);
    assert_eq!(rev.revision, 3);
    assert_eq!(keys(&rev), ["z", "m", "b", "a"]);
    let kinds: Vec<_> = rev.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Put, EventKind::Delete, EventKind::Put, EventKind::Put]);
    assert!(rev.events.iter().all(|e| e.kv.mod_revision == 3));
}

#[test]
fn txn_delete_range_inside_keeps_its_keys_in_key_order_at_its_place() {
    let mut kv = Kv::new();
    for k in ["p/2", "p/1", "p/3"] {
        kv.put(k, "x");
    }
    kv.store.take_events();
    let del_prefix = RequestOp::DeleteRange(DeleteRangeRequest::prefix(b("p/")));
    kv.txn(txn(vec![put_op("z", "1"), del_prefix, put_op("a", "1")])).unwrap();
    assert_eq!(keys(&one_revision(&mut kv)), ["z", "p/1", "p/2", "p/3", "a"]);
}

#[test]
fn delete_range_events_come_in_key_order_in_one_revision() {
    let mut kv = Kv::new();
    for k in ["c", "a", "b"] {
        kv.put(k, "x");
    }
    kv.store.take_events();
    kv.del_req(DeleteRangeRequest { key: b("a"), range_end: b("d"), prev_kv: false }).unwrap();
    let rev = one_revision(&mut kv);
    assert_eq!(rev.revision, 5);
    assert_eq!(keys(&rev), ["a", "b", "c"]);
    assert!(rev.events.iter().all(|e| e.kind == EventKind::Delete && e.prev_kv.is_some()));
}

#[test]
fn lease_revoke_deletes_its_keys_in_key_order_in_one_revision() {
    let mut kv = Kv::new();
    kv.grant(7, 10).unwrap();
    for k in ["b", "a"] {
        kv.put_req(PutRequest { lease: 7, ..PutRequest::new(b(k), b("x")) }).unwrap();
    }
    kv.store.take_events();
    kv.revoke(7).unwrap();
    let rev = one_revision(&mut kv);
    assert_eq!(keys(&rev), ["a", "b"]);
    assert_eq!(rev.events[0].prev_kv.as_ref().unwrap().lease, 7);
}

#[test]
fn delete_range_over_nothing_makes_no_revision_and_no_event() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.store.take_events();
    let resp = kv.del("zzz");
    assert_eq!((resp.deleted, resp.revision), (0, 2));
    assert_eq!(kv.store.take_events(), []);
}

#[test]
fn commands_that_change_no_key_yield_no_events() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.store.take_events();
    kv.grant(7, 10).unwrap();
    kv.compact(2).unwrap();
    kv.txn(txn(vec![RequestOp::Range(RangeRequest::single(b("a")))])).unwrap();
    let failing = TxnRequest {
        compare: vec![Compare::new(b("a"), CompareResult::Equal, CompareTarget::Version(9))],
        success: vec![put_op("a", "2")],
        failure: Vec::new(),
    };
    kv.txn(failing).unwrap();
    // A deterministic error applies nothing.
    kv.put_req(PutRequest { lease: 99, ..PutRequest::new(b("a"), b("2")) }).unwrap_err();
    assert_eq!(kv.store.take_events(), []);
    assert_eq!(kv.revision(), 2);
}

#[test]
fn take_events_hands_out_each_revision_once_in_revision_order() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("b", "1");
    kv.del("a");
    let taken = kv.store.take_events();
    let revisions: Vec<_> = taken.iter().map(|r| r.revision).collect();
    assert_eq!(revisions, [2, 3, 4]);
    assert_eq!(kv.store.take_events(), []);
}

#[test]
fn pending_events_are_not_state_a_clone_starts_without_them_and_equality_ignores_them() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let mut clone = kv.store.clone();
    assert_eq!(clone.take_events(), []);
    assert_eq!(clone, kv.store);
    assert_eq!(kv.store.take_events().len(), 1);
}

// ---- history -----------------------------------------------------------------------------

/// Puts, a transaction in non-key order, a delete range and re-creations: 9 revisions.
fn busy_store() -> (Kv, Vec<RevisionEvents>) {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("b", "1");
    kv.txn(txn(vec![put_op("c", "1"), del_op("a"), put_op("b", "2")])).unwrap();
    kv.put("a", "2");
    kv.del_req(DeleteRangeRequest { key: b("a"), range_end: b("c"), prev_kv: false }).unwrap();
    kv.put("d", "1");
    kv.txn(txn(vec![put_op("d", "2"), put_op("a", "3"), put_op("b", "3")])).unwrap();
    kv.put("c", "2");
    kv.del("d");
    let taken = kv.store.take_events();
    assert_eq!(kv.revision(), 10);
    (kv, taken)
}

#[test]
fn history_replays_exactly_the_events_taken_during_apply() {
    let (kv, taken) = busy_store();
    assert_eq!(all_history(&kv.store, 1), taken);
}

#[test]
fn history_of_a_single_key_a_span_and_from_key_selects_by_etcds_range_rules() {
    let (kv, taken) = busy_store();
    let select = |key: &[u8], range_end: &[u8], keep: &dyn Fn(&[u8]) -> bool| {
        let page = kv.store.history(key, range_end, 1, 10, usize::MAX).unwrap();
        let expected: Vec<RevisionEvents> = taken
            .iter()
            .filter_map(|r| {
                let events: Vec<Event> =
                    r.events.iter().filter(|e| keep(&e.kv.key)).cloned().collect();
                (!events.is_empty()).then(|| RevisionEvents { revision: r.revision, events })
            })
            .collect();
        assert!(!expected.is_empty());
        assert_eq!(page.revisions, expected);
    };
    select(b"b", b"", &|k| k == b"b");
    select(b"a", b"c", &|k| k == b"a" || k == b"b");
    select(b"b", b"\0", &|k| k >= b"b".as_slice());
    let empty = kv.store.history(b"c", b"a", 1, 10, usize::MAX).unwrap();
    assert_eq!(empty.revisions, []);
}

#[test]
fn history_honours_from_and_to() {
    let (kv, taken) = busy_store();
    let page = kv.store.history(b"\0", b"\0", 4, 7, usize::MAX).unwrap();
    let expected: Vec<_> =
        taken.iter().filter(|r| (4..=7).contains(&r.revision)).cloned().collect();
    assert_eq!(page.revisions, expected);
    assert_eq!(kv.store.history(b"\0", b"\0", 11, 20, 10).unwrap().revisions, []);
}

#[test]
fn history_pages_by_max_events_never_cut_a_revision() {
    let (kv, taken) = busy_store();
    for max_events in 1..=8 {
        let mut from = 1;
        let mut got = Vec::new();
        loop {
            let page = kv.store.history(b"\0", b"\0", from, 10, max_events).unwrap();
            assert!(!page.revisions.is_empty());
            let events: usize = page.revisions.iter().map(|r| r.events.len()).sum();
            assert!(events <= max_events || page.revisions.len() == 1, "{max_events}: {page:?}");
            got.extend(page.revisions);
            match page.next {
                Some(next) => {
                    assert!(next > got.last().unwrap().revision);
                    from = next;
                }
                None => break,
            }
        }
        assert_eq!(got, taken, "max_events {max_events}");
    }
}

#[test]
fn history_returns_a_revision_with_more_than_max_events_whole() {
    let (kv, _) = busy_store();
    // Revision 4 (the first transaction) has three events.
    let page = kv.store.history(b"\0", b"\0", 4, 10, 2).unwrap();
    assert_eq!(page.revisions.len(), 1);
    assert_eq!((page.revisions[0].revision, page.revisions[0].events.len()), (4, 3));
    assert_eq!(page.next, Some(5));
    // At the end of the history there is nothing to continue with.
    let page = kv.store.history(b"\0", b"\0", 8, 8, 1).unwrap();
    assert_eq!((page.revisions[0].events.len(), page.next), (3, None));
}

#[test]
fn history_on_a_clone_is_unmoved_while_the_original_applies_on() {
    let (mut kv, taken) = busy_store();
    let clone = kv.store.clone();
    let reader = std::thread::spawn(move || {
        let page = clone.history(b"\0", b"\0", 1, i64::MAX, usize::MAX).unwrap();
        (page, clone.revision())
    });
    for i in 0..100 {
        kv.put("a", &i.to_string());
        kv.del("c");
    }
    kv.compact(kv.revision()).unwrap();
    let (page, revision) = reader.join().unwrap();
    assert_eq!((page.revisions, page.next, revision), (taken, None, 10));
}

#[test]
fn history_at_or_below_the_compact_revision_is_compacted() {
    let (mut kv, _) = busy_store();
    kv.compact(6).unwrap();
    for from in [0, 1, 6] {
        assert_eq!(
            kv.store.history(b"\0", b"\0", from, 10, 10),
            Err(HistoryError::Compacted { compact_revision: 6 })
        );
    }
    assert!(kv.store.history(b"\0", b"\0", 7, 10, 10).is_ok());
    let err = HistoryError::Compacted { compact_revision: 6 };
    assert_eq!(err.to_string(), "mvcc: required revision has been compacted");
}

#[test]
fn history_above_the_compact_revision_is_complete_with_previous_pairs() {
    for at in 1..=10 {
        let (mut kv, taken) = busy_store();
        kv.compact(at).unwrap();
        let expected: Vec<_> = taken.iter().filter(|r| r.revision > at).cloned().collect();
        assert_eq!(all_history(&kv.store, at + 1), expected, "compacted at {at}");
    }
}

#[test]
fn snapshot_round_trip_keeps_operation_order_within_a_revision() {
    let (kv, taken) = busy_store();
    let mut bytes = Vec::new();
    kv.store.write_snapshot(&mut bytes).unwrap();
    let restored = Store::restore(kv.store.config().clone(), &mut bytes.as_slice()).unwrap();
    let history = all_history(&restored, 1);
    assert_eq!(keys(&history[2]), ["c", "a", "b"]);
    assert_eq!(keys(&history[6]), ["d", "a", "b"]);
    assert_eq!(history, taken);
}
