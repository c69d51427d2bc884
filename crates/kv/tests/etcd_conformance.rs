//! etcd v3 behaviours, one per test, each named after the behaviour it pins down.

mod common;

use bytes::Bytes;
use common::{Kv, b};
use tenure_kv::{
    Command, Compare, CompareResult, CompareTarget, Config, DeleteRangeRequest, Error, GrpcCode,
    INITIAL_REVISION, LEASE_TTL_MAX, PutRequest, RangeRequest, RequestOp, ResponseOp, SortOrder,
    SortTarget, TXN_DEPTH_MAX, TxnRequest, prefix_end,
};

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(b(key), b(value)))
}

fn get_op(key: &str) -> RequestOp {
    RequestOp::Range(RangeRequest::single(b(key)))
}

fn del_op(key: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest::single(b(key)))
}

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare::new(b(key), result, target)
}

/// Keys a..e with values 1..5, written at revisions 2..6.
fn five_keys() -> Kv {
    let mut kv = Kv::new();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
        kv.put(k, v);
    }
    kv
}

// ---- revisions -------------------------------------------------------------------------

#[test]
fn fresh_store_is_at_revision_one() {
    assert_eq!(Kv::new().revision(), 1);
    assert_eq!(INITIAL_REVISION, 1);
}

#[test]
fn put_bumps_revision_by_one() {
    let mut kv = Kv::new();
    assert_eq!(kv.put("a", "1").revision, 2);
    assert_eq!(kv.put("a", "2").revision, 3);
    assert_eq!(kv.revision(), 3);
}

#[test]
fn delete_of_missing_key_does_not_bump_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let resp = kv.del("zzz");
    assert_eq!((resp.deleted, resp.revision), (0, 2));
    assert_eq!(kv.revision(), 2);
}

#[test]
fn delete_bumps_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    assert_eq!(kv.del("a").revision, 3);
}

#[test]
fn read_only_txn_does_not_bump_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let resp = kv.txn(TxnRequest { success: vec![get_op("a")], ..Default::default() }).unwrap();
    assert_eq!(resp.revision, 2);
    assert_eq!(kv.revision(), 2);
}

#[test]
fn txn_with_several_writes_is_one_revision() {
    let mut kv = Kv::new();
    let resp = kv
        .txn(TxnRequest {
            success: vec![put_op("a", "1"), put_op("b", "2"), put_op("c", "3")],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(resp.revision, 2);
    for k in ["a", "b", "c"] {
        assert_eq!(kv.get(k).unwrap().mod_revision, 2);
    }
}

#[test]
fn txn_that_deletes_nothing_does_not_bump_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let resp =
        kv.txn(TxnRequest { success: vec![del_op("missing")], ..Default::default() }).unwrap();
    assert_eq!(resp.revision, 2);
    assert_eq!(kv.revision(), 2);
}

/// etcd 3.4.23's answer, seen through its gateway: in a txn at revision 2 of
/// `[range a, put b, range a, delete zz, txn [range a]]`, the first range's header says 2,
/// the put's 3, the second range's 3, the delete's 3, the nested txn's header is empty and
/// its range says 3. A txn `[delete zz, put b, delete zz]` at 3: 3, 4, 4.
#[test]
fn nested_responses_carry_the_revision_as_of_their_operation() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let nested = TxnRequest { success: vec![get_op("a")], ..Default::default() };
    let resp = kv
        .txn(TxnRequest {
            success: vec![
                get_op("a"),
                put_op("b", "2"),
                get_op("a"),
                del_op("zz"),
                RequestOp::Txn(nested),
            ],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(resp.revision, 3);
    let revisions: Vec<i64> = resp
        .responses
        .iter()
        .map(|op| match op {
            ResponseOp::Range(r) => r.revision,
            ResponseOp::Put(p) => p.revision,
            ResponseOp::DeleteRange(d) => d.revision,
            ResponseOp::Txn(t) => t.revision,
        })
        .collect();
    assert_eq!(revisions, [2, 3, 3, 3, 0]);
    let ResponseOp::Txn(t) = &resp.responses[4] else { panic!("nested txn") };
    let ResponseOp::Range(r) = &t.responses[0] else { panic!("nested range") };
    assert_eq!(r.revision, 3);

    let resp = kv
        .txn(TxnRequest {
            success: vec![del_op("zz"), put_op("b", "2"), del_op("zz")],
            ..Default::default()
        })
        .unwrap();
    let revisions: Vec<i64> = resp
        .responses
        .iter()
        .map(|op| match op {
            ResponseOp::Put(p) => p.revision,
            ResponseOp::DeleteRange(d) => d.revision,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!((resp.revision, revisions), (4, vec![3, 4, 4]));
}

// ---- key metadata ----------------------------------------------------------------------

#[test]
fn put_creates_key_with_version_one() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let a = kv.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version, a.lease), (2, 2, 1, 0));
}

#[test]
fn put_increments_version_and_keeps_create_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("b", "x");
    kv.put("a", "2");
    let a = kv.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 4, 2));
    assert_eq!(a.value, b("2"));
}

#[test]
fn delete_resets_version() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("a", "2");
    kv.del("a");
    assert!(kv.get("a").is_none());
    kv.put("a", "3");
    let a = kv.get("a").unwrap();
    assert_eq!(a.version, 1);
}

#[test]
fn recreated_key_gets_new_create_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.del("a");
    kv.put("a", "2");
    let a = kv.get("a").unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (4, 4));
}

// ---- range -------------------------------------------------------------------------------

#[test]
fn range_single_key() {
    let kv = five_keys();
    let r = kv.range(RangeRequest::single(b("c"))).unwrap();
    assert_eq!(r.kvs.len(), 1);
    assert_eq!((r.kvs[0].value.clone(), r.count, r.more), (b("3"), 1, false));
}

#[test]
fn range_missing_key_is_empty_with_count_zero() {
    let kv = five_keys();
    let r = kv.range(RangeRequest::single(b("zz"))).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!((r.count, r.revision), (0, 6));
}

#[test]
fn range_prefix_selects_keys_with_the_prefix() {
    let mut kv = Kv::new();
    for k in ["foo", "foo/a", "foo/b", "fop", "fo"] {
        kv.put(k, "v");
    }
    assert_eq!(kv.keys(RangeRequest::prefix(b("foo"))), ["foo", "foo/a", "foo/b"]);
}

#[test]
fn prefix_end_increments_last_byte_and_drops_trailing_ff() {
    assert_eq!(prefix_end(b"abc"), b("abd"));
    assert_eq!(prefix_end(b"a\xff"), b("b"));
    assert_eq!(prefix_end(b"\xff\xff"), Bytes::from_static(b"\0"));
    assert_eq!(prefix_end(b""), Bytes::from_static(b"\0"));
}

#[test]
fn range_from_key_selects_every_key_at_or_after_it() {
    let kv = five_keys();
    assert_eq!(kv.keys(RangeRequest::from_key(b("c"))), ["c", "d", "e"]);
}

#[test]
fn range_nul_key_with_nul_end_selects_all_keys() {
    let kv = five_keys();
    let r = kv.range(RangeRequest::from_key(Bytes::from_static(b"\0"))).unwrap();
    assert_eq!(r.count, 5);
}

#[test]
fn range_end_is_exclusive() {
    let kv = five_keys();
    assert_eq!(kv.keys(RangeRequest::span(b("b"), b("d"))), ["b", "c"]);
}

#[test]
fn range_end_before_key_is_empty() {
    let kv = five_keys();
    let r = kv.range(RangeRequest::span(b("d"), b("b"))).unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 0);
}

#[test]
fn range_limit_sets_more() {
    let kv = five_keys();
    let r = kv.range(RangeRequest { limit: 2, ..RangeRequest::prefix(b("")) }).unwrap();
    assert_eq!(r.kvs.len(), 2);
    assert!(r.more);
}

#[test]
fn range_count_ignores_limit() {
    let kv = five_keys();
    let r = kv.range(RangeRequest { limit: 2, ..RangeRequest::from_key(b("a")) }).unwrap();
    assert_eq!(r.count, 5);
}

#[test]
fn range_limit_equal_to_count_has_no_more() {
    let kv = five_keys();
    let r = kv.range(RangeRequest { limit: 5, ..RangeRequest::from_key(b("a")) }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (5, false, 5));
}

#[test]
fn range_negative_limit_means_no_limit() {
    let kv = five_keys();
    let r = kv.range(RangeRequest { limit: -1, ..RangeRequest::from_key(b("a")) }).unwrap();
    assert_eq!((r.kvs.len(), r.more), (5, false));
}

#[test]
fn range_at_past_revision_sees_old_value() {
    let mut kv = Kv::new();
    kv.put("a", "old");
    kv.put("a", "new");
    let r = kv.range(RangeRequest { revision: 2, ..RangeRequest::single(b("a")) }).unwrap();
    assert_eq!(r.kvs[0].value, b("old"));
    assert_eq!(r.kvs[0].version, 1);
}

#[test]
fn range_at_past_revision_sees_deleted_key() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.del("a");
    let r = kv.range(RangeRequest { revision: 2, ..RangeRequest::single(b("a")) }).unwrap();
    assert_eq!(r.kvs.len(), 1);
    assert!(kv.get("a").is_none());
}

#[test]
fn range_at_revision_before_key_existed_is_empty() {
    let mut kv = Kv::new();
    kv.put("x", "1");
    kv.put("a", "1");
    let r = kv.range(RangeRequest { revision: 2, ..RangeRequest::single(b("a")) }).unwrap();
    assert!(r.kvs.is_empty());
}

#[test]
fn range_header_revision_is_current_for_historical_reads() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("a", "2");
    let r = kv.range(RangeRequest { revision: 2, ..RangeRequest::single(b("a")) }).unwrap();
    assert_eq!(r.revision, 3);
}

#[test]
fn range_future_revision_is_an_error() {
    let kv = five_keys();
    let err = kv.range(RangeRequest { revision: 7, ..RangeRequest::single(b("a")) }).unwrap_err();
    assert_eq!(err, Error::FutureRevision);
    assert_eq!(err.to_string(), "etcdserver: mvcc: required revision is a future revision");
}

#[test]
fn range_compacted_revision_is_an_error() {
    let mut kv = five_keys();
    kv.compact(4).unwrap();
    let err = kv.range(RangeRequest { revision: 3, ..RangeRequest::single(b("a")) }).unwrap_err();
    assert_eq!(err, Error::Compacted);
    assert_eq!(err.to_string(), "etcdserver: mvcc: required revision has been compacted");
}

#[test]
fn range_at_the_compacted_revision_itself_is_allowed() {
    let mut kv = five_keys();
    kv.compact(4).unwrap();
    let r = kv.range(RangeRequest { revision: 4, ..RangeRequest::from_key(b("a")) }).unwrap();
    assert_eq!(r.count, 3);
}

#[test]
fn range_keys_only_omits_values() {
    let kv = five_keys();
    let r = kv.range(RangeRequest { keys_only: true, ..RangeRequest::from_key(b("a")) }).unwrap();
    assert_eq!(r.kvs.len(), 5);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version == 1));
}

#[test]
fn range_count_only_returns_count_without_kvs() {
    let kv = five_keys();
    let r = kv
        .range(RangeRequest { count_only: true, limit: 1, ..RangeRequest::from_key(b("b")) })
        .unwrap();
    assert!(r.kvs.is_empty());
    assert_eq!((r.count, r.more), (4, false));
}

#[test]
fn range_sort_descend_by_key() {
    let kv = five_keys();
    let keys = kv.keys(RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Key,
        ..RangeRequest::from_key(b("a"))
    });
    assert_eq!(keys, ["e", "d", "c", "b", "a"]);
}

#[test]
fn range_sort_target_without_order_sorts_ascending() {
    let mut kv = Kv::new();
    kv.put("b", "1");
    kv.put("a", "2");
    let keys =
        kv.keys(RangeRequest { sort_target: SortTarget::Mod, ..RangeRequest::from_key(b("a")) });
    assert_eq!(keys, ["b", "a"]);
}

#[test]
fn range_sort_by_value_descend() {
    let mut kv = Kv::new();
    kv.put("a", "2");
    kv.put("b", "3");
    kv.put("c", "1");
    let keys = kv.keys(RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Value,
        ..RangeRequest::from_key(b("a"))
    });
    assert_eq!(keys, ["b", "a", "c"]);
}

#[test]
fn range_sort_by_version_and_create_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("b", "1");
    kv.put("a", "2");
    kv.put("a", "3");
    let by_version = kv.keys(RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Version,
        ..RangeRequest::from_key(b("a"))
    });
    assert_eq!(by_version, ["a", "b"]);
    let by_create = kv.keys(RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Create,
        ..RangeRequest::from_key(b("a"))
    });
    assert_eq!(by_create, ["b", "a"]);
}

#[test]
fn range_sort_happens_before_limit() {
    let kv = five_keys();
    let r = kv
        .range(RangeRequest {
            sort_order: SortOrder::Descend,
            limit: 2,
            ..RangeRequest::from_key(b("a"))
        })
        .unwrap();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [b("e"), b("d")]);
    assert!(r.more);
    assert_eq!(r.count, 5);
}

#[test]
fn range_min_and_max_mod_revision_filter() {
    let kv = five_keys();
    let keys = kv.keys(RangeRequest {
        min_mod_revision: 3,
        max_mod_revision: 5,
        ..RangeRequest::from_key(b("a"))
    });
    assert_eq!(keys, ["b", "c", "d"]);
}

#[test]
fn range_min_and_max_create_revision_filter() {
    let mut kv = five_keys();
    kv.put("a", "again");
    let keys = kv.keys(RangeRequest {
        min_create_revision: 2,
        max_create_revision: 3,
        ..RangeRequest::from_key(b("a"))
    });
    assert_eq!(keys, ["a", "b"]);
}

#[test]
fn range_filters_do_not_change_count() {
    let kv = five_keys();
    let r =
        kv.range(RangeRequest { min_mod_revision: 6, ..RangeRequest::from_key(b("a")) }).unwrap();
    assert_eq!((r.kvs.len(), r.count), (1, 5));
}

#[test]
fn range_limit_applies_after_filters() {
    let kv = five_keys();
    let r = kv
        .range(RangeRequest { min_mod_revision: 4, limit: 2, ..RangeRequest::from_key(b("a")) })
        .unwrap();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [b("c"), b("d")]);
    assert!(r.more);
}

#[test]
fn range_empty_key_is_an_error() {
    let kv = five_keys();
    let err = kv.range(RangeRequest::single(Bytes::new())).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: key is not provided");
    assert_eq!(err.grpc_code(), GrpcCode::InvalidArgument);
}

// ---- put ---------------------------------------------------------------------------------

#[test]
fn put_prev_kv_returns_previous_pair() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let resp = kv.put_req(PutRequest { prev_kv: true, ..PutRequest::new(b("a"), b("2")) }).unwrap();
    let prev = resp.prev_kv.unwrap();
    assert_eq!((prev.value, prev.mod_revision, prev.version), (b("1"), 2, 1));
}

#[test]
fn put_prev_kv_on_new_key_is_none() {
    let mut kv = Kv::new();
    let resp = kv.put_req(PutRequest { prev_kv: true, ..PutRequest::new(b("a"), b("1")) }).unwrap();
    assert!(resp.prev_kv.is_none());
}

#[test]
fn put_without_prev_kv_flag_returns_none() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    assert!(kv.put("a", "2").prev_kv.is_none());
}

#[test]
fn put_ignore_value_keeps_value_and_bumps_version() {
    let mut kv = Kv::new();
    kv.put("a", "keep");
    kv.put_req(PutRequest { ignore_value: true, ..PutRequest::new(b("a"), Bytes::new()) }).unwrap();
    let a = kv.get("a").unwrap();
    assert_eq!((a.value, a.version, a.mod_revision), (b("keep"), 2, 3));
}

#[test]
fn put_ignore_lease_keeps_lease() {
    let mut kv = Kv::new();
    kv.grant(7, 60).unwrap();
    kv.put_req(PutRequest { lease: 7, ..PutRequest::new(b("a"), b("1")) }).unwrap();
    kv.put_req(PutRequest { ignore_lease: true, ..PutRequest::new(b("a"), b("2")) }).unwrap();
    let a = kv.get("a").unwrap();
    assert_eq!((a.value, a.lease), (b("2"), 7));
}

#[test]
fn put_ignore_value_on_missing_key_is_key_not_found() {
    let mut kv = Kv::new();
    let err = kv
        .put_req(PutRequest { ignore_value: true, ..PutRequest::new(b("a"), Bytes::new()) })
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: key not found");
    assert_eq!(kv.revision(), 1);
}

#[test]
fn put_ignore_lease_on_missing_key_is_key_not_found() {
    let mut kv = Kv::new();
    let err = kv
        .put_req(PutRequest { ignore_lease: true, ..PutRequest::new(b("a"), b("1")) })
        .unwrap_err();
    assert_eq!(err, Error::KeyNotFound);
}

#[test]
fn put_ignore_value_with_a_value_is_an_error() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let err = kv
        .put_req(PutRequest { ignore_value: true, ..PutRequest::new(b("a"), b("x")) })
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: value is provided");
}

#[test]
fn put_ignore_lease_with_a_lease_is_an_error() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let err = kv
        .put_req(PutRequest { ignore_lease: true, lease: 5, ..PutRequest::new(b("a"), b("x")) })
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: lease is provided");
}

#[test]
fn put_with_unknown_lease_is_lease_not_found() {
    let mut kv = Kv::new();
    let err = kv.put_req(PutRequest { lease: 42, ..PutRequest::new(b("a"), b("1")) }).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    assert_eq!(err.grpc_code(), GrpcCode::NotFound);
    assert!(kv.get("a").is_none());
}

#[test]
fn put_with_lease_attaches_key_to_lease() {
    let mut kv = Kv::new();
    kv.grant(7, 60).unwrap();
    kv.put_req(PutRequest { lease: 7, ..PutRequest::new(b("a"), b("1")) }).unwrap();
    assert_eq!(kv.get("a").unwrap().lease, 7);
    assert!(kv.store.lease(7).unwrap().keys.contains(&b("a")));
}

#[test]
fn put_without_lease_detaches_key_from_its_lease() {
    let mut kv = Kv::new();
    kv.grant(7, 60).unwrap();
    kv.put_req(PutRequest { lease: 7, ..PutRequest::new(b("a"), b("1")) }).unwrap();
    kv.put("a", "2");
    assert_eq!(kv.get("a").unwrap().lease, 0);
    assert!(kv.store.lease(7).unwrap().keys.is_empty());
}

#[test]
fn put_empty_key_is_an_error() {
    let mut kv = Kv::new();
    let err = kv.put_req(PutRequest::new(Bytes::new(), b("1"))).unwrap_err();
    assert_eq!(err, Error::EmptyKey);
}

#[test]
fn put_of_same_value_still_bumps_revision_and_version() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("a", "1");
    assert_eq!(kv.get("a").unwrap().version, 2);
    assert_eq!(kv.revision(), 3);
}

// ---- delete ------------------------------------------------------------------------------

#[test]
fn delete_returns_deleted_count() {
    let mut kv = five_keys();
    let resp = kv.del_req(DeleteRangeRequest::prefix(b(""))).unwrap();
    assert_eq!(resp.deleted, 5);
    assert!(resp.prev_kvs.is_empty());
}

#[test]
fn delete_range_is_one_revision() {
    let mut kv = five_keys();
    let resp = kv
        .del_req(DeleteRangeRequest { range_end: b("d"), ..DeleteRangeRequest::single(b("b")) })
        .unwrap();
    assert_eq!((resp.deleted, resp.revision), (2, 7));
    assert_eq!(kv.keys(RangeRequest::from_key(b("a"))), ["a", "d", "e"]);
}

#[test]
fn delete_prev_kv_returns_deleted_pairs() {
    let mut kv = five_keys();
    let resp = kv
        .del_req(DeleteRangeRequest { prev_kv: true, ..DeleteRangeRequest::prefix(b("c")) })
        .unwrap();
    assert_eq!(resp.prev_kvs.len(), 1);
    assert_eq!((resp.prev_kvs[0].key.clone(), resp.prev_kvs[0].value.clone()), (b("c"), b("3")));
}

#[test]
fn delete_from_key_deletes_every_key_after() {
    let mut kv = five_keys();
    let resp = kv
        .del_req(DeleteRangeRequest {
            range_end: Bytes::from_static(b"\0"),
            ..DeleteRangeRequest::single(b("c"))
        })
        .unwrap();
    assert_eq!(resp.deleted, 3);
    assert_eq!(kv.keys(RangeRequest::from_key(b("a"))), ["a", "b"]);
}

#[test]
fn delete_empty_key_is_an_error() {
    let mut kv = Kv::new();
    let err = kv.del_req(DeleteRangeRequest::single(Bytes::new())).unwrap_err();
    assert_eq!(err, Error::EmptyKey);
}

#[test]
fn delete_detaches_key_from_lease() {
    let mut kv = Kv::new();
    kv.grant(3, 10).unwrap();
    kv.put_req(PutRequest { lease: 3, ..PutRequest::new(b("a"), b("1")) }).unwrap();
    kv.del("a");
    assert!(kv.store.lease(3).unwrap().keys.is_empty());
}

// ---- txn ---------------------------------------------------------------------------------

#[test]
fn txn_runs_success_branch_when_compares_hold() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let resp = kv
        .txn(TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Value(b("1")))],
            success: vec![put_op("b", "yes")],
            failure: vec![put_op("b", "no")],
        })
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(kv.get("b").unwrap().value, b("yes"));
}

#[test]
fn txn_runs_failure_branch_when_a_compare_fails() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let resp = kv
        .txn(TxnRequest {
            compare: vec![
                cmp("a", CompareResult::Equal, CompareTarget::Value(b("1"))),
                cmp("a", CompareResult::Equal, CompareTarget::Version(9)),
            ],
            success: vec![put_op("b", "yes")],
            failure: vec![put_op("b", "no"), get_op("a")],
        })
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(resp.responses.len(), 2);
    assert_eq!(kv.get("b").unwrap().value, b("no"));
}

#[test]
fn txn_value_compare_on_missing_key_fails_even_for_not_equal() {
    let mut kv = Kv::new();
    let resp = kv
        .txn(TxnRequest {
            compare: vec![cmp("missing", CompareResult::NotEqual, CompareTarget::Value(b("x")))],
            ..Default::default()
        })
        .unwrap();
    assert!(!resp.succeeded);
}

#[test]
fn txn_version_compare_on_missing_key_sees_zero() {
    let mut kv = Kv::new();
    let resp = kv
        .txn(TxnRequest {
            compare: vec![cmp("missing", CompareResult::Equal, CompareTarget::Version(0))],
            ..Default::default()
        })
        .unwrap();
    assert!(resp.succeeded);
}

#[test]
fn txn_create_if_absent_with_mod_revision_zero() {
    let mut kv = Kv::new();
    let create = || TxnRequest {
        compare: vec![cmp("obj", CompareResult::Equal, CompareTarget::ModRevision(0))],
        success: vec![put_op("obj", "v1")],
        failure: vec![get_op("obj")],
    };
    assert!(kv.txn(create()).unwrap().succeeded);
    let again = kv.txn(create()).unwrap();
    assert!(!again.succeeded);
    let ResponseOp::Range(r) = &again.responses[0] else {
        panic!("expected a range response");
    };
    assert_eq!(r.kvs[0].value, b("v1"));
}

#[test]
fn txn_update_guarded_by_mod_revision() {
    let mut kv = Kv::new();
    let rev = kv.put("obj", "v1").revision;
    let update = |rev| TxnRequest {
        compare: vec![cmp("obj", CompareResult::Equal, CompareTarget::ModRevision(rev))],
        success: vec![put_op("obj", "v2")],
        failure: vec![get_op("obj")],
    };
    assert!(kv.txn(update(rev)).unwrap().succeeded);
    assert!(!kv.txn(update(rev)).unwrap().succeeded);
}

#[test]
fn txn_compare_create_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let resp = kv
        .txn(TxnRequest {
            compare: vec![cmp("a", CompareResult::Equal, CompareTarget::CreateRevision(2))],
            ..Default::default()
        })
        .unwrap();
    assert!(resp.succeeded);
}

#[test]
fn txn_compare_lease() {
    let mut kv = Kv::new();
    kv.grant(5, 10).unwrap();
    kv.put_req(PutRequest { lease: 5, ..PutRequest::new(b("a"), b("1")) }).unwrap();
    let check = |lease| TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Lease(lease))],
        ..Default::default()
    };
    assert!(kv.txn(check(5)).unwrap().succeeded);
    assert!(!kv.txn(check(0)).unwrap().succeeded);
}

#[test]
fn txn_compare_greater_and_less() {
    let mut kv = Kv::new();
    kv.put("a", "m");
    let check = |result, value: &str| TxnRequest {
        compare: vec![cmp("a", result, CompareTarget::Value(b(value)))],
        ..Default::default()
    };
    assert!(kv.txn(check(CompareResult::Greater, "a")).unwrap().succeeded);
    assert!(!kv.txn(check(CompareResult::Greater, "z")).unwrap().succeeded);
    assert!(kv.txn(check(CompareResult::Less, "z")).unwrap().succeeded);
    assert!(!kv.txn(check(CompareResult::Less, "m")).unwrap().succeeded);
}

#[test]
fn txn_compare_over_a_range_requires_every_key() {
    let mut kv = Kv::new();
    kv.put("p/a", "1");
    kv.put("p/b", "2");
    let check = |version| TxnRequest {
        compare: vec![Compare {
            range_end: prefix_end(b"p/"),
            ..cmp("p/", CompareResult::Equal, CompareTarget::Version(version))
        }],
        ..Default::default()
    };
    assert!(kv.txn(check(1)).unwrap().succeeded);
    kv.put("p/b", "3");
    assert!(!kv.txn(check(1)).unwrap().succeeded);
}

#[test]
fn txn_reads_see_earlier_writes_of_the_same_txn() {
    let mut kv = Kv::new();
    kv.put("a", "old");
    let resp = kv
        .txn(TxnRequest {
            success: vec![get_op("a"), put_op("a", "new"), get_op("a")],
            ..Default::default()
        })
        .unwrap();
    let values: Vec<_> = resp
        .responses
        .iter()
        .filter_map(|r| match r {
            ResponseOp::Range(r) => Some(r.kvs[0].value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(values, [b("old"), b("new")]);
}

#[test]
fn txn_cannot_put_same_key_twice() {
    let mut kv = Kv::new();
    let err = kv
        .txn(TxnRequest { success: vec![put_op("a", "1"), put_op("a", "2")], ..Default::default() })
        .unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: duplicate key given in txn request");
    assert_eq!(kv.revision(), 1);
}

#[test]
fn txn_cannot_put_into_a_range_it_deletes() {
    let mut kv = Kv::new();
    let err = kv
        .txn(TxnRequest {
            success: vec![
                RequestOp::DeleteRange(DeleteRangeRequest::prefix(b("p/"))),
                put_op("p/x", "1"),
            ],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::DuplicateKey);
}

#[test]
fn txn_may_delete_overlapping_ranges() {
    let mut kv = five_keys();
    let resp = kv
        .txn(TxnRequest {
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest::prefix(b(""))), del_op("a")],
            ..Default::default()
        })
        .unwrap();
    let deleted: Vec<_> = resp
        .responses
        .iter()
        .map(|r| match r {
            ResponseOp::DeleteRange(d) => d.deleted,
            _ => panic!("expected deletes"),
        })
        .collect();
    assert_eq!(deleted, [5, 0]);
}

#[test]
fn txn_success_and_failure_may_put_the_same_key() {
    let mut kv = Kv::new();
    let resp = kv
        .txn(TxnRequest {
            success: vec![put_op("a", "1")],
            failure: vec![put_op("a", "2")],
            ..Default::default()
        })
        .unwrap();
    assert!(resp.succeeded);
}

#[test]
fn txn_nested_branches_may_put_the_same_key() {
    let mut kv = Kv::new();
    let nested = TxnRequest {
        compare: vec![cmp("x", CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![put_op("a", "then")],
        failure: vec![put_op("a", "else")],
    };
    kv.txn(TxnRequest { success: vec![RequestOp::Txn(nested)], ..Default::default() }).unwrap();
    assert_eq!(kv.get("a").unwrap().value, b("then"));
}

#[test]
fn txn_nested_put_conflicts_with_outer_put() {
    let mut kv = Kv::new();
    let nested = TxnRequest { success: vec![put_op("a", "inner")], ..Default::default() };
    let err = kv
        .txn(TxnRequest {
            success: vec![put_op("a", "outer"), RequestOp::Txn(nested)],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::DuplicateKey);
}

#[test]
fn txn_nested_put_conflicts_with_outer_delete() {
    let mut kv = Kv::new();
    let nested = TxnRequest { failure: vec![put_op("a", "inner")], ..Default::default() };
    let err = kv
        .txn(TxnRequest {
            success: vec![del_op("a"), RequestOp::Txn(nested)],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::DuplicateKey);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let nested = TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Value(b("1")))],
        success: vec![put_op("seen", "before")],
        failure: vec![put_op("seen", "after")],
    };
    let resp = kv
        .txn(TxnRequest {
            success: vec![put_op("a", "2"), RequestOp::Txn(nested)],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(kv.get("seen").unwrap().value, b("before"));
    let ResponseOp::Txn(inner) = &resp.responses[1] else {
        panic!("expected a nested txn response");
    };
    assert!(inner.succeeded);
    assert_eq!(inner.revision, 0, "etcd leaves a nested txn's header empty");
    let ResponseOp::Put(put) = &inner.responses[0] else { panic!("nested put") };
    assert_eq!(put.revision, resp.revision);
}

#[test]
fn txn_with_too_many_ops_is_an_error() {
    let mut kv = Kv::new();
    let ops: Vec<_> = (0..129).map(|i| put_op(&format!("k{i}"), "v")).collect();
    let err = kv.txn(TxnRequest { success: ops, ..Default::default() }).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: too many operations in txn request");
}

#[test]
fn txn_with_exactly_the_max_ops_is_accepted() {
    let mut kv = Kv::new();
    let ops: Vec<_> = (0..128).map(|i| put_op(&format!("k{i}"), "v")).collect();
    let resp = kv.txn(TxnRequest { success: ops, ..Default::default() }).unwrap();
    assert_eq!(resp.responses.len(), 128);
}

#[test]
fn txn_with_too_many_compares_is_an_error() {
    let mut kv = Kv::with_config(Config { txn_ops_max: 2, ..Config::default() });
    let compare: Vec<_> =
        (0..3).map(|_| cmp("a", CompareResult::Equal, CompareTarget::Version(0))).collect();
    let err = kv.txn(TxnRequest { compare, ..Default::default() }).unwrap_err();
    assert_eq!(err, Error::TooManyOps);
}

#[test]
fn txn_nested_deeper_than_the_bound_is_too_many_ops() {
    let mut kv = Kv::new();
    let mut txn = TxnRequest::default();
    for _ in 0..TXN_DEPTH_MAX {
        txn = TxnRequest { success: vec![RequestOp::Txn(txn)], ..Default::default() };
    }
    assert_eq!(kv.store.validate(&Command::Txn(txn.clone())), Err(Error::TooManyOps));
    assert_eq!(kv.txn(txn).unwrap_err(), Error::TooManyOps);
}

#[test]
fn txn_compare_with_empty_key_is_an_error() {
    let mut kv = Kv::new();
    let err = kv
        .txn(TxnRequest {
            compare: vec![Compare::new(
                Bytes::new(),
                CompareResult::Equal,
                CompareTarget::Version(0),
            )],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::EmptyKey);
}

#[test]
fn txn_put_with_unknown_lease_fails_the_whole_txn() {
    let mut kv = Kv::new();
    let err = kv
        .txn(TxnRequest {
            success: vec![
                put_op("a", "1"),
                RequestOp::Put(PutRequest { lease: 99, ..PutRequest::new(b("b"), b("2")) }),
            ],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::LeaseNotFound);
    assert!(kv.get("a").is_none());
    assert_eq!(kv.revision(), 1);
}

#[test]
fn txn_errors_only_count_on_the_branch_taken() {
    let mut kv = Kv::new();
    let resp = kv
        .txn(TxnRequest {
            success: vec![put_op("a", "1")],
            failure: vec![RequestOp::Put(PutRequest {
                lease: 99,
                ..PutRequest::new(b("b"), b("2"))
            })],
            ..Default::default()
        })
        .unwrap();
    assert!(resp.succeeded);
}

#[test]
fn txn_range_at_future_revision_fails_the_whole_txn() {
    let mut kv = Kv::new();
    let err = kv
        .txn(TxnRequest {
            success: vec![
                put_op("a", "1"),
                RequestOp::Range(RangeRequest { revision: 50, ..RangeRequest::single(b("a")) }),
            ],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::FutureRevision);
    assert_eq!(kv.revision(), 1);
}

#[test]
fn txn_range_at_compacted_revision_fails_the_whole_txn() {
    let mut kv = five_keys();
    kv.compact(5).unwrap();
    let err = kv
        .txn(TxnRequest {
            success: vec![RequestOp::Range(RangeRequest {
                revision: 3,
                ..RangeRequest::single(b("a"))
            })],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::Compacted);
}

// ---- compaction --------------------------------------------------------------------------

#[test]
fn compact_future_revision_is_an_error() {
    let mut kv = five_keys();
    let err = kv.compact(7).unwrap_err();
    assert_eq!(err, Error::FutureRevision);
    assert_eq!(err.grpc_code(), GrpcCode::OutOfRange);
}

#[test]
fn compact_same_revision_twice_is_compacted() {
    let mut kv = five_keys();
    kv.compact(4).unwrap();
    assert_eq!(kv.compact(4).unwrap_err(), Error::Compacted);
}

#[test]
fn compact_older_revision_is_compacted() {
    let mut kv = five_keys();
    kv.compact(4).unwrap();
    assert_eq!(kv.compact(3).unwrap_err(), Error::Compacted);
}

#[test]
fn compact_at_current_revision_is_allowed() {
    let mut kv = five_keys();
    let resp = kv.compact(6).unwrap();
    assert_eq!(resp.revision, 6);
    assert_eq!(kv.store.compact_revision(), Some(6));
}

#[test]
fn compact_does_not_bump_revision() {
    let mut kv = five_keys();
    kv.compact(5).unwrap();
    assert_eq!(kv.revision(), 6);
    assert_eq!(kv.put("z", "1").revision, 7);
}

#[test]
fn compact_keeps_latest_values_readable() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("a", "2");
    kv.put("a", "3");
    kv.compact(4).unwrap();
    let a = kv.get("a").unwrap();
    assert_eq!((a.value, a.version, a.create_revision), (b("3"), 3, 2));
}

#[test]
fn compact_keeps_the_version_visible_at_the_compacted_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.put("b", "x");
    kv.put("a", "2");
    kv.compact(3).unwrap();
    let r = kv.range(RangeRequest { revision: 3, ..RangeRequest::single(b("a")) }).unwrap();
    assert_eq!(r.kvs[0].value, b("1"));
}

#[test]
fn compact_drops_deleted_keys() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.del("a");
    assert_eq!(kv.store.key_count(), 1);
    kv.compact(3).unwrap();
    assert_eq!(kv.store.key_count(), 0);
}

#[test]
fn compact_negative_revision_on_fresh_store_is_compacted() {
    let mut kv = Kv::new();
    assert_eq!(kv.compact(-1).unwrap_err(), Error::Compacted);
    kv.compact(0).unwrap();
    assert_eq!(kv.compact(0).unwrap_err(), Error::Compacted);
}

// ---- leases ------------------------------------------------------------------------------

#[test]
fn lease_grant_with_an_id_uses_it() {
    let mut kv = Kv::new();
    let resp = kv.grant(100, 30).unwrap();
    assert_eq!((resp.id, resp.ttl, resp.revision), (100, 30, 1));
    assert_eq!(kv.store.lease(100).unwrap().ttl, 30);
}

#[test]
fn lease_grant_does_not_bump_revision() {
    let mut kv = Kv::new();
    kv.grant(1, 30).unwrap();
    assert_eq!(kv.revision(), 1);
}

#[test]
fn lease_grant_with_existing_id_is_an_error() {
    let mut kv = Kv::new();
    kv.grant(100, 30).unwrap();
    let err = kv.grant(100, 30).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: lease already exists");
    assert_eq!(err.grpc_code(), GrpcCode::FailedPrecondition);
}

#[test]
fn lease_grant_with_id_zero_picks_the_next_free_id() {
    let mut kv = Kv::new();
    kv.grant(2, 30).unwrap();
    assert_eq!(kv.grant(0, 30).unwrap().id, 1);
    assert_eq!(kv.grant(0, 30).unwrap().id, 3);
}

#[test]
fn lease_grant_with_too_large_ttl_is_an_error() {
    let mut kv = Kv::new();
    let err = kv.grant(1, LEASE_TTL_MAX + 1).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: too large lease TTL");
    kv.grant(1, LEASE_TTL_MAX).unwrap();
}

#[test]
fn lease_revoke_deletes_attached_keys_in_one_revision() {
    let mut kv = Kv::new();
    kv.grant(9, 30).unwrap();
    for k in ["a", "b"] {
        kv.put_req(PutRequest { lease: 9, ..PutRequest::new(b(k), b("v")) }).unwrap();
    }
    kv.put("c", "stays");
    let resp = kv.revoke(9).unwrap();
    assert_eq!(resp.revision, 5);
    assert_eq!(kv.keys(RangeRequest::from_key(b("a"))), ["c"]);
    assert!(kv.store.lease(9).is_none());
}

#[test]
fn lease_revoke_of_unknown_lease_is_lease_not_found() {
    let mut kv = Kv::new();
    assert_eq!(kv.revoke(5).unwrap_err(), Error::LeaseNotFound);
}

#[test]
fn lease_revoke_without_keys_does_not_bump_revision() {
    let mut kv = Kv::new();
    kv.grant(9, 30).unwrap();
    assert_eq!(kv.revoke(9).unwrap().revision, 1);
}

#[test]
fn lease_revoke_spares_keys_moved_to_another_lease() {
    let mut kv = Kv::new();
    kv.grant(1, 30).unwrap();
    kv.grant(2, 30).unwrap();
    kv.put_req(PutRequest { lease: 1, ..PutRequest::new(b("a"), b("v")) }).unwrap();
    kv.put_req(PutRequest { lease: 2, ..PutRequest::new(b("a"), b("v")) }).unwrap();
    kv.revoke(1).unwrap();
    assert_eq!(kv.get("a").unwrap().lease, 2);
}

// ---- limits and messages -----------------------------------------------------------------

#[test]
fn request_too_large_is_an_error() {
    let mut kv = Kv::with_config(Config { request_bytes_max: 64, ..Config::default() });
    let err = kv.put_req(PutRequest::new(b("a"), Bytes::from(vec![b'x'; 100]))).unwrap_err();
    assert_eq!(err.to_string(), "etcdserver: request is too large");
    assert_eq!(kv.revision(), 1);
    kv.put("a", "small");
}

#[test]
fn default_limits_are_etcds() {
    let c = Config::default();
    assert_eq!(c.request_bytes_max, 1536 * 1024);
    assert_eq!(c.txn_ops_max, 128);
}

#[test]
fn error_messages_are_etcds_exact_strings() {
    let cases = [
        (Error::Compacted, "etcdserver: mvcc: required revision has been compacted"),
        (Error::FutureRevision, "etcdserver: mvcc: required revision is a future revision"),
        (Error::EmptyKey, "etcdserver: key is not provided"),
        (Error::KeyNotFound, "etcdserver: key not found"),
        (Error::ValueProvided, "etcdserver: value is provided"),
        (Error::LeaseProvided, "etcdserver: lease is provided"),
        (Error::TooManyOps, "etcdserver: too many operations in txn request"),
        (Error::DuplicateKey, "etcdserver: duplicate key given in txn request"),
        (Error::RequestTooLarge, "etcdserver: request is too large"),
        (Error::LeaseNotFound, "etcdserver: requested lease not found"),
        (Error::LeaseExists, "etcdserver: lease already exists"),
        (Error::LeaseTtlTooLarge, "etcdserver: too large lease TTL"),
    ];
    for (err, msg) in cases {
        assert_eq!(err.to_string(), msg);
        assert!(err.is_deterministic());
    }
}

#[test]
fn txn_cannot_put_into_a_from_key_range_it_deletes() {
    let mut kv = Kv::new();
    let err = kv
        .txn(TxnRequest {
            success: vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    range_end: Bytes::from_static(b"\0"),
                    ..DeleteRangeRequest::single(b("a"))
                }),
                put_op("b", "1"),
            ],
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, Error::DuplicateKey);
}
