//! The store's running byte count and its history hash under random workloads: the count
//! always equals a recount from scratch (after writes, deletes, transactions, lease revokes,
//! compactions and a snapshot round trip), and two stores fed the same entries hash alike at
//! every revision while a store with one diverged value does not.

use proptest::prelude::*;
use tenure_kv::{
    Command, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    Proposal, PutRequest, RequestOp, Store, TxnRequest,
};

#[derive(Debug, Clone)]
enum Op {
    Put(u8, usize, bool),
    Delete(u8),
    DeletePrefix,
    Txn(u8, u8),
    Grant(u8),
    Revoke(u8),
    Compact(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..12, 0usize..300, any::<bool>()).prop_map(|(k, n, l)| Op::Put(k, n, l)),
        2 => (0u8..12).prop_map(Op::Delete),
        1 => Just(Op::DeletePrefix),
        2 => (0u8..12, 0u8..12).prop_map(|(a, b)| Op::Txn(a, b)),
        1 => (1u8..4).prop_map(Op::Grant),
        1 => (1u8..4).prop_map(Op::Revoke),
        1 => (0u8..100).prop_map(Op::Compact),
    ]
}

fn key(k: u8) -> String {
    format!("key/{k}")
}

fn command(store: &Store, op: &Op) -> Command {
    match op {
        Op::Put(k, n, with_lease) => {
            let mut p = PutRequest::new(key(*k), "v".repeat(*n));
            if *with_lease && store.lease(1).is_some() {
                p.lease = 1;
            }
            Command::Put(p)
        }
        Op::Delete(k) => Command::DeleteRange(DeleteRangeRequest::single(key(*k))),
        Op::DeletePrefix => Command::DeleteRange(DeleteRangeRequest::prefix("key/1")),
        Op::Txn(a, b) => Command::Txn(TxnRequest {
            compare: Vec::new(),
            success: vec![
                RequestOp::Put(PutRequest::new(key(*a), "txn")),
                RequestOp::DeleteRange(DeleteRangeRequest::single(key(*b))),
            ],
            failure: Vec::new(),
        }),
        Op::Grant(id) => Command::LeaseGrant(LeaseGrantRequest { id: i64::from(*id), ttl: 60 }),
        Op::Revoke(id) => Command::LeaseRevoke(LeaseRevokeRequest { id: i64::from(*id) }),
        Op::Compact(pct) => {
            let revision = store.revision() * i64::from(*pct) / 100;
            Command::Compact(CompactionRequest { revision, physical: false })
        }
    }
}

fn apply(store: &mut Store, command: &Command) {
    let index = store.applied_index() + 1;
    // Deterministic refusals (a compacted revision, a missing lease) are answers too.
    let _ = store.apply(index, 0, &Proposal::new(command.clone()).encode());
}

proptest! {
    #[test]
    fn running_count_equals_a_recount(ops in prop::collection::vec(op(), 1..120)) {
        let mut s = Store::default();
        for op in &ops {
            let c = command(&s, op);
            apply(&mut s, &c);
            prop_assert_eq!(s.size_bytes(), s.measure_size_bytes(), "after {:?}", op);
        }
        let mut buf = Vec::new();
        s.write_snapshot(&mut buf).unwrap();
        let restored = Store::restore(s.config().clone(), &mut buf.as_slice()).unwrap();
        prop_assert_eq!(restored.size_bytes(), s.size_bytes());
    }

    #[test]
    fn same_entries_same_hash_at_every_revision(ops in prop::collection::vec(op(), 1..80)) {
        let (mut a, mut b) = (Store::default(), Store::default());
        for op in &ops {
            let c = command(&a, op);
            apply(&mut a, &c);
            apply(&mut b, &c);
        }
        let from = a.compact_revision().map_or(1, |c| c + 1);
        for rev in from..=a.revision() {
            prop_assert_eq!(a.hash_kv(rev), b.hash_kv(rev));
        }
        prop_assert_eq!(a.hash(), b.hash());
        // One more put on one of them: hashes at the new revision differ from the old, and
        // the same value on both agrees again.
        apply(&mut a, &Command::Put(PutRequest::new("diverge", "a")));
        apply(&mut b, &Command::Put(PutRequest::new("diverge", "b")));
        prop_assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
    }
}
