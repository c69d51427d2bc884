//! `Store::apply_shared`: a put's value that is most of its entry is kept as a slice of the
//! entry (one allocation shared with the log's entry cache), anything smaller is copied, and
//! the store ends up exactly as `Store::apply` leaves it.

use bytes::Bytes;
use tenure_kv::{
    Command, Compare, CompareResult, CompareTarget, Config, DeleteRangeRequest, Proposal,
    PutRequest, RangeRequest, RequestOp, Store, TxnRequest,
};

fn store() -> Store {
    Store::new(Config::default()).expect("default config")
}

/// Whether `inner` lies inside `outer`'s bytes.
fn within(inner: &Bytes, outer: &Bytes) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fn value_of(store: &Store, key: &str) -> Bytes {
    let r = store.range(&RangeRequest::single(key.as_bytes().to_vec())).expect("range");
    r.kvs[0].value.clone()
}

fn put(key: &str, value: Vec<u8>) -> Command {
    Command::Put(PutRequest::new(key.as_bytes().to_vec(), value))
}

#[test]
fn a_put_value_that_is_most_of_its_entry_is_a_slice_of_the_entry() {
    let mut s = store();
    let entry = Proposal::new(put("k", vec![7u8; 256])).encode();
    s.apply_shared(1, 0, &entry).unwrap();
    let v = value_of(&s, "k");
    assert_eq!(v, Bytes::from(vec![7u8; 256]));
    assert!(within(&v, &entry), "the stored value should share the entry's allocation");
}

#[test]
fn small_values_and_apply_without_sharing_are_copied() {
    let mut s = store();
    // A short value under a long key is less than half of its entry.
    let entry = Proposal::new(put(&"k".repeat(100), b"v".to_vec())).encode();
    s.apply_shared(1, 0, &entry).unwrap();
    assert!(!within(&value_of(&s, &"k".repeat(100)), &entry));
    // Two puts of one transaction: neither is half of the entry, so neither pins it.
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest::new(b"a".to_vec(), vec![1u8; 200])),
            RequestOp::Put(PutRequest::new(b"b".to_vec(), vec![2u8; 200])),
        ],
        failure: vec![],
    };
    let entry = Proposal::new(Command::Txn(txn)).encode();
    s.apply_shared(2, 0, &entry).unwrap();
    assert!(!within(&value_of(&s, "a"), &entry));
    assert!(!within(&value_of(&s, "b"), &entry));
    // The plain `apply` never keeps a slice of what it is given.
    let entry = Proposal::new(put("c", vec![3u8; 256])).encode();
    s.apply(3, 0, &entry).unwrap();
    assert!(!within(&value_of(&s, "c"), &entry));
}

#[test]
fn apply_shared_leaves_the_store_as_apply_does() {
    let commands = vec![
        put("a", vec![1u8; 300]),
        put("b", vec![]),
        put("a", b"x".to_vec()),
        Command::Txn(TxnRequest {
            compare: vec![Compare::new(
                b"a".to_vec(),
                CompareResult::Equal,
                CompareTarget::Value(Bytes::from_static(b"x")),
            )],
            success: vec![RequestOp::Put(PutRequest::new(b"c".to_vec(), vec![9u8; 1000]))],
            failure: vec![],
        }),
        Command::DeleteRange(DeleteRangeRequest {
            key: Bytes::from_static(b"b"),
            range_end: Bytes::new(),
            prev_kv: true,
        }),
        put("d", vec![4u8; 64]),
    ];
    let (mut plain, mut shared) = (store(), store());
    for (i, c) in commands.into_iter().enumerate() {
        let entry = Proposal::new(c).encode();
        let index = i as u64 + 1;
        assert_eq!(plain.apply(index, 5, &entry), shared.apply_shared(index, 5, &entry));
    }
    let all = RangeRequest::from_key(Bytes::from_static(b"\0"));
    assert_eq!(plain.range(&all), shared.range(&all));
    assert_eq!(plain.hash(), shared.hash());
    assert_eq!(plain.revision(), shared.revision());
}

#[test]
fn a_corrupt_shared_entry_is_refused_as_a_plain_one_is() {
    let entry = Proposal::new(put("k", vec![7u8; 256])).encode();
    let cut = entry.slice(..entry.len() - 3);
    let (mut plain, mut shared) = (store(), store());
    let a = plain.apply(1, 0, &cut);
    assert!(a.is_err());
    assert_eq!(a, shared.apply_shared(1, 0, &cut));
}
