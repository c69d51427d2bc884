//! Alarms (`Maintenance.Alarm`) as etcd applies them: raised, listed and cleared through the
//! log, refusing writes while raised (`NOSPACE`: writes that grow the store; `CORRUPT`: every
//! write), carried in snapshots, and entries and snapshots of the previous format still read.

mod common;

use common::{Kv, b};
use tenure_kv::{
    AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, Command, Config,
    DeleteRangeRequest, Error, GrpcCode, LeaseGrantRequest, Proposal, PutRequest, RangeRequest,
    RequestOp, Response, Store, TxnRequest, decode_outcome, encode_outcome,
};

fn alarm(action: AlarmAction, member_id: u64, alarm: Option<AlarmType>) -> Command {
    Command::Alarm(AlarmRequest { action, member_id, alarm })
}

fn raise(kv: &mut Kv, member_id: u64, t: AlarmType) -> AlarmResponse {
    match kv.exec(alarm(AlarmAction::Activate, member_id, Some(t))).unwrap() {
        Response::Alarm(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn list(kv: &mut Kv) -> Vec<AlarmMember> {
    match kv.exec(alarm(AlarmAction::Get, 0, None)).unwrap() {
        Response::Alarm(r) => r.alarms,
        other => panic!("unexpected {other:?}"),
    }
}

fn put_in_txn() -> TxnRequest {
    TxnRequest {
        failure: vec![RequestOp::Put(PutRequest::new(b("t"), b("1")))],
        ..Default::default()
    }
}

fn read_only_txn() -> TxnRequest {
    TxnRequest {
        success: vec![RequestOp::Range(RangeRequest::single(b("a")))],
        ..Default::default()
    }
}

#[test]
fn an_alarm_is_raised_listed_and_cleared_without_moving_the_revision() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    let revision = kv.store.revision();
    let nospace = AlarmMember { member_id: 7, alarm: AlarmType::NoSpace };
    assert_eq!(
        raise(&mut kv, 7, AlarmType::NoSpace),
        AlarmResponse { revision, alarms: vec![nospace] }
    );
    assert_eq!(list(&mut kv), [nospace]);
    assert_eq!(kv.store.alarms().collect::<Vec<_>>(), [nospace]);
    let cleared = kv.exec(alarm(AlarmAction::Deactivate, 7, Some(AlarmType::NoSpace)));
    assert_eq!(cleared, Ok(Response::Alarm(AlarmResponse { revision, alarms: vec![nospace] })));
    assert!(list(&mut kv).is_empty());
    assert_eq!(kv.store.revision(), revision);
}

#[test]
fn nospace_refuses_writes_that_grow_the_store_and_allows_the_rest() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.grant(5, 60).unwrap();
    raise(&mut kv, 1, AlarmType::NoSpace);
    let before = kv.store.clone();
    let refused = [
        Command::Put(PutRequest::new(b("b"), b("2"))),
        Command::Txn(put_in_txn()),
        Command::LeaseGrant(LeaseGrantRequest { id: 6, ttl: 10 }),
    ];
    for cmd in refused {
        let err = kv.exec(cmd.clone()).unwrap_err();
        assert_eq!(err, Error::NoSpace, "{cmd:?}");
        assert!(err.is_deterministic());
    }
    assert_eq!(Error::NoSpace.to_string(), "etcdserver: mvcc: database space exceeded");
    assert_eq!(Error::NoSpace.grpc_code(), GrpcCode::ResourceExhausted);
    assert_eq!(kv.store.revision(), before.revision(), "refused writes change nothing");
    // Reads, deletes, compaction, revokes and read-only transactions still work: they are how
    // an operator makes room before disarming.
    assert!(kv.txn(read_only_txn()).is_ok());
    assert_eq!(kv.store.range(&RangeRequest::single(b("a"))).unwrap().count, 1);
    assert_eq!(kv.del("a").deleted, 1);
    kv.compact(kv.store.revision()).unwrap();
    kv.revoke(5).unwrap();
    kv.exec(alarm(AlarmAction::Deactivate, 1, Some(AlarmType::NoSpace))).unwrap();
    assert_eq!(kv.put("b", "2").revision, kv.store.revision());
}

#[test]
fn corrupt_refuses_every_write_but_not_reads() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    kv.grant(5, 60).unwrap();
    raise(&mut kv, 3, AlarmType::Corrupt);
    let delete_in_txn = TxnRequest {
        success: vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest::single(b("a")))],
            ..Default::default()
        })],
        ..Default::default()
    };
    let refused = [
        Command::Put(PutRequest::new(b("b"), b("2"))),
        Command::DeleteRange(DeleteRangeRequest::single(b("a"))),
        Command::Txn(delete_in_txn),
        Command::Compact(tenure_kv::CompactionRequest { revision: 1, physical: false }),
        Command::LeaseGrant(LeaseGrantRequest { id: 6, ttl: 10 }),
        Command::LeaseRevoke(tenure_kv::LeaseRevokeRequest { id: 5 }),
    ];
    for cmd in refused {
        assert_eq!(kv.exec(cmd.clone()), Err(Error::Corrupt), "{cmd:?}");
    }
    assert_eq!(Error::Corrupt.to_string(), "etcdserver: corrupt cluster");
    assert_eq!(Error::Corrupt.grpc_code(), GrpcCode::DataLoss);
    assert!(kv.txn(read_only_txn()).is_ok());
    assert_eq!(kv.store.range(&RangeRequest::single(b("a"))).unwrap().count, 1);
    // Clearing it for another member clears nothing; for the member that raised it, it does.
    kv.exec(alarm(AlarmAction::Deactivate, 4, Some(AlarmType::Corrupt))).unwrap();
    let delete = Command::DeleteRange(DeleteRangeRequest::single(b("a")));
    assert_eq!(kv.exec(delete.clone()), Err(Error::Corrupt));
    kv.exec(alarm(AlarmAction::Deactivate, 3, Some(AlarmType::Corrupt))).unwrap();
    assert!(kv.exec(delete).is_ok());
}

#[test]
fn alarms_survive_a_snapshot_and_replicas_agree_on_them() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    raise(&mut kv, 2, AlarmType::NoSpace);
    raise(&mut kv, 1, AlarmType::Corrupt);
    raise(&mut kv, 1, AlarmType::NoSpace);
    kv.exec(alarm(AlarmAction::Deactivate, 1, Some(AlarmType::NoSpace))).unwrap();
    let mut bytes = Vec::new();
    kv.store.write_snapshot(&mut bytes).unwrap();
    let restored = Store::restore(Config::default(), &mut bytes.as_slice()).unwrap();
    assert_eq!(restored, kv.store);
    assert_eq!(
        restored.alarms().collect::<Vec<_>>(),
        [
            AlarmMember { member_id: 1, alarm: AlarmType::Corrupt },
            AlarmMember { member_id: 2, alarm: AlarmType::NoSpace },
        ]
    );
    let mut again = Vec::new();
    restored.write_snapshot(&mut again).unwrap();
    assert_eq!(again, bytes);
}

#[test]
fn alarm_outcomes_round_trip_through_their_encoding() {
    let alarms = vec![
        AlarmMember { member_id: u64::MAX, alarm: AlarmType::NoSpace },
        AlarmMember { member_id: 1, alarm: AlarmType::Corrupt },
    ];
    let outcomes: [Result<Response, Error>; 3] = [
        Ok(Response::Alarm(AlarmResponse { revision: 4, alarms })),
        Err(Error::NoSpace),
        Err(Error::Corrupt),
    ];
    for outcome in outcomes {
        assert_eq!(decode_outcome(&encode_outcome(&outcome)), Ok(outcome));
    }
    for action in [AlarmAction::Get, AlarmAction::Activate, AlarmAction::Deactivate] {
        for t in [None, Some(AlarmType::NoSpace), Some(AlarmType::Corrupt)] {
            let p = Proposal::new(alarm(action, 9, t));
            assert_eq!(Proposal::decode(&p.encode()), Ok(p));
        }
    }
}

#[test]
fn entries_of_format_version_2_still_apply() {
    // Version 3 only added alarms and version 4 who sent a proposal (a flag after the session
    // flag): a version 2 or 3 entry is the same bytes without that flag, with its own first
    // byte.
    let mut entry = Proposal::new(Command::Put(PutRequest::new(b("a"), b("1")))).encode().to_vec();
    assert_eq!(entry[..3], [4, 0, 0]);
    entry.remove(2);
    let mut v3 = entry.clone();
    v3[0] = 3;
    let mut store = Store::default();
    assert!(store.apply(1, 0, &v3).is_ok());
    assert_eq!(store.revision(), 2);
    entry[0] = 2;
    let mut store = Store::default();
    assert!(store.apply(1, 0, &entry).is_ok());
    assert_eq!(store.revision(), 2);
}
