//! Leases through the log: renewals, checkpoints and expiries, as the replica's lessor
//! proposes them. The store has no clock; these tests check what each entry does to the table,
//! to the keys, to the revision and to the lease changes the replica measures deadlines from.

mod common;

use common::{Kv, b};
use tenure_kv::{
    Command, Error, LeaseChange, LeaseCheckpoint, LeaseCheckpointRequest, LeaseExpireRequest,
    LeaseExpiry, LeaseGrantRequest, LeaseRefreshRequest, LeaseRenewRequest, LeaseRevokeRequest,
    PutRequest, Response, Store,
};

fn grant(kv: &mut Kv, id: i64, ttl: i64) {
    kv.exec(Command::LeaseGrant(LeaseGrantRequest { id, ttl })).unwrap();
}

fn put_leased(kv: &mut Kv, key: &str, lease: i64) {
    let mut req = PutRequest::new(b(key), b("v"));
    req.lease = lease;
    kv.put_req(req).unwrap();
}

fn expire(kv: &mut Kv, leases: &[(i64, u64)]) -> Vec<i64> {
    let leases = leases.iter().map(|&(id, renewed_at)| LeaseExpiry { id, renewed_at }).collect();
    match kv.exec(Command::LeaseExpire(LeaseExpireRequest { leases })).unwrap() {
        Response::LeaseExpire(r) => r.revoked,
        other => panic!("unexpected {other:?}"),
    }
}

fn checkpoint(kv: &mut Kv, id: i64, renewed_at: u64, remaining_ms: u64) {
    let checkpoints = vec![LeaseCheckpoint { id, renewed_at, remaining_ms }];
    kv.exec(Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })).unwrap();
}

#[test]
fn a_grant_records_its_index_and_reports_the_full_ttl() {
    let mut kv = Kv::new();
    kv.put("a", "1");
    grant(&mut kv, 7, 10);
    let lease = kv.store.lease(7).unwrap();
    assert_eq!(lease.renewed_at, 2);
    // The log knows its time left exactly: nothing but the log has renewed it.
    assert_eq!(lease.remaining_ms, Some(10_000));
    assert_eq!(lease.remaining_ms(), 10_000);
    assert_eq!(
        kv.store.take_lease_changes(),
        vec![LeaseChange::Reset { id: 7, remaining_ms: 10_000 }]
    );
    assert!(kv.store.take_lease_changes().is_empty(), "changes are handed out once");
}

#[test]
fn a_renewal_restarts_the_ttl_forgets_the_checkpoint_and_keeps_the_revision() {
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    checkpoint(&mut kv, 7, 1, 4_000);
    assert_eq!(kv.store.lease(7).unwrap().remaining_ms(), 4_000);
    let revision = kv.store.revision();
    let r = kv.exec(Command::LeaseRenew(LeaseRenewRequest { id: 7 })).unwrap();
    let Response::LeaseRenew(r) = r else { panic!("unexpected {r:?}") };
    assert_eq!((r.id, r.ttl, r.revision), (7, 10, revision));
    let lease = kv.store.lease(7).unwrap();
    assert_eq!((lease.renewed_at, lease.remaining_ms), (3, None));
    assert_eq!(kv.store.revision(), revision);
    assert_eq!(
        kv.store.take_lease_changes(),
        vec![
            LeaseChange::Reset { id: 7, remaining_ms: 10_000 },
            LeaseChange::Reset { id: 7, remaining_ms: 4_000 },
            LeaseChange::Reset { id: 7, remaining_ms: 10_000 },
        ]
    );
}

#[test]
fn a_refresh_restarts_the_ttl_of_each_lease_still_there_as_a_renewal_would() {
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    grant(&mut kv, 8, 20);
    checkpoint(&mut kv, 8, 2, 1_500);
    kv.store.take_lease_changes();
    let revision = kv.store.revision();
    let ids = vec![8, 99, 7];
    let r = kv.exec(Command::LeaseRefresh(LeaseRefreshRequest { ids })).unwrap();
    assert_eq!(r, Response::LeaseRefresh(tenure_kv::LeaseRefreshResponse { revision }));
    for (id, ttl_ms) in [(7, 10_000), (8, 20_000)] {
        let lease = kv.store.lease(id).unwrap();
        assert_eq!((lease.renewed_at, lease.remaining_ms, lease.remaining_ms()), (4, None, ttl_ms));
    }
    assert!(kv.store.lease(99).is_none(), "a refresh grants nothing");
    assert_eq!(
        kv.store.take_lease_changes(),
        vec![
            LeaseChange::Reset { id: 8, remaining_ms: 20_000 },
            LeaseChange::Reset { id: 7, remaining_ms: 10_000 },
        ]
    );
    // An expiry measured before the refresh is ignored, as after a renewal.
    assert_eq!(expire(&mut kv, &[(7, 1)]), Vec::<i64>::new());
}

#[test]
fn a_renew_check_answers_as_the_renewal_would_without_changing_anything() {
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    checkpoint(&mut kv, 7, 1, 4_000);
    kv.store.take_lease_changes();
    let before = kv.store.clone();
    let check = kv.store.renew_check(&LeaseRenewRequest { id: 7 }, None).unwrap();
    assert_eq!(kv.store, before, "a check changes nothing");
    assert!(kv.store.take_lease_changes().is_empty(), "and reports no change");
    assert_eq!(kv.store.lease(7).unwrap().remaining_ms, Some(4_000));
    let applied = kv.exec(Command::LeaseRenew(LeaseRenewRequest { id: 7 })).unwrap();
    assert_eq!(Response::LeaseRenew(check), applied);
    assert_eq!(kv.store.renew_check(&LeaseRenewRequest { id: 9 }, None), Err(Error::LeaseNotFound));
}

#[test]
fn renewing_a_lease_that_does_not_exist_is_lease_not_found() {
    let mut kv = Kv::new();
    let r = kv.exec(Command::LeaseRenew(LeaseRenewRequest { id: 9 }));
    assert_eq!(r, Err(Error::LeaseNotFound));
    assert!(kv.store.take_lease_changes().is_empty());
}

#[test]
fn an_expiry_revokes_the_lease_and_deletes_its_keys_in_one_revision() {
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    put_leased(&mut kv, "a", 7);
    put_leased(&mut kv, "b", 7);
    kv.put("c", "unleased");
    let before = kv.store.revision();
    kv.store.take_events();
    assert_eq!(expire(&mut kv, &[(7, 1)]), vec![7]);
    assert!(kv.store.lease(7).is_none());
    assert_eq!(kv.store.revision(), before + 1);
    let events = kv.store.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].events.len(), 2, "both keys deleted at one revision");
    assert_eq!(kv.store.key_count(), 3, "history stays until compaction");
    assert!(kv.store.take_lease_changes().contains(&LeaseChange::Ended { id: 7 }));
}

#[test]
fn an_expiry_measured_before_a_renewal_that_reached_the_log_first_is_ignored() {
    // The leader measured lease 7 from its grant (index 1) and proposed the expiry; a client's
    // renewal (index 2) was ordered before it. The renewal was acknowledged: it must stand.
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    kv.exec(Command::LeaseRenew(LeaseRenewRequest { id: 7 })).unwrap();
    put_leased(&mut kv, "a", 7);
    assert_eq!(expire(&mut kv, &[(7, 1)]), Vec::<i64>::new());
    assert!(kv.store.lease(7).is_some());
    assert!(kv.get("a").is_some());
    // Measured from the renewal, it goes.
    assert_eq!(expire(&mut kv, &[(7, 2)]), vec![7]);
}

#[test]
fn a_checkpoint_measured_before_a_renewal_is_ignored() {
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    kv.exec(Command::LeaseRenew(LeaseRenewRequest { id: 7 })).unwrap();
    kv.store.take_lease_changes();
    checkpoint(&mut kv, 7, 1, 500);
    assert_eq!(kv.store.lease(7).unwrap().remaining_ms, None);
    assert!(kv.store.take_lease_changes().is_empty());
}

#[test]
fn an_expiry_of_leases_gone_or_unknown_revokes_only_the_rest_each_in_its_own_revision() {
    let mut kv = Kv::new();
    grant(&mut kv, 1, 10);
    grant(&mut kv, 2, 10);
    grant(&mut kv, 3, 10);
    put_leased(&mut kv, "one", 1);
    put_leased(&mut kv, "three", 3);
    kv.exec(Command::LeaseRevoke(LeaseRevokeRequest { id: 2 })).unwrap();
    let before = kv.store.revision();
    assert_eq!(expire(&mut kv, &[(1, 1), (2, 2), (99, 0), (3, 3)]), vec![1, 3]);
    assert_eq!(kv.store.revision(), before + 2, "one revision per lease with keys");
    assert_eq!(kv.store.leases().count(), 0);
}

#[test]
fn an_expiry_while_corrupt_is_refused_and_leaves_the_lease() {
    use tenure_kv::{AlarmAction, AlarmRequest, AlarmType};
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    kv.exec(Command::Alarm(AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 1,
        alarm: Some(AlarmType::Corrupt),
    }))
    .unwrap();
    let leases = vec![LeaseExpiry { id: 7, renewed_at: 1 }];
    let r = kv.exec(Command::LeaseExpire(LeaseExpireRequest { leases }));
    assert_eq!(r, Err(Error::Corrupt));
    assert!(kv.store.lease(7).is_some());
    // A renewal still works: it changes no key.
    kv.exec(Command::LeaseRenew(LeaseRenewRequest { id: 7 })).unwrap();
}

#[test]
fn renewals_and_checkpoints_survive_a_snapshot() {
    let mut kv = Kv::new();
    grant(&mut kv, 7, 10);
    grant(&mut kv, 8, 20);
    kv.exec(Command::LeaseRenew(LeaseRenewRequest { id: 7 })).unwrap();
    checkpoint(&mut kv, 8, 2, 1_234);
    let mut bytes = Vec::new();
    kv.store.write_snapshot(&mut bytes).unwrap();
    let restored = Store::restore(kv.store.config().clone(), &mut bytes.as_slice()).unwrap();
    assert_eq!(restored, kv.store);
    let l7 = restored.lease(7).unwrap();
    assert_eq!((l7.renewed_at, l7.remaining_ms), (3, None));
    let l8 = restored.lease(8).unwrap();
    assert_eq!((l8.renewed_at, l8.remaining_ms), (2, Some(1_234)));
}

#[test]
fn lease_commands_round_trip_through_the_codec() {
    use tenure_kv::Proposal;
    let commands = [
        Command::LeaseRenew(LeaseRenewRequest { id: -5 }),
        Command::LeaseCheckpoint(LeaseCheckpointRequest {
            checkpoints: vec![
                LeaseCheckpoint { id: 1, renewed_at: 2, remaining_ms: 3 },
                LeaseCheckpoint { id: i64::MAX, renewed_at: u64::MAX, remaining_ms: 0 },
            ],
        }),
        Command::LeaseExpire(LeaseExpireRequest {
            leases: vec![LeaseExpiry { id: 4, renewed_at: 5 }],
        }),
        Command::LeaseRefresh(LeaseRefreshRequest { ids: vec![] }),
        Command::LeaseRefresh(LeaseRefreshRequest { ids: vec![-1, 7, i64::MAX] }),
    ];
    for c in commands {
        let p = Proposal::new(c);
        assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
    }
}

/// etcd issue 13676: a lease granted with a negative id (which etcd's API accepts) was not
/// loaded again after a restart, so its keys lived on with a lease that "was not found".
#[test]
fn etcd_13676_a_lease_with_a_negative_id_survives_a_snapshot_restore_with_its_keys() {
    let mut kv = Kv::new();
    grant(&mut kv, -7, 10);
    grant(&mut kv, 5, 10);
    put_leased(&mut kv, "neg", -7);
    let mut bytes = Vec::new();
    kv.store.write_snapshot(&mut bytes).unwrap();
    let restored = Store::restore(kv.store.config().clone(), &mut bytes.as_slice()).unwrap();
    assert_eq!(restored, kv.store);
    let lease = restored.lease(-7).expect("the negative lease is restored");
    assert!(lease.keys.contains(&b("neg")));
    // And it is revoked, keys and all, like any other.
    let mut kv = Kv { store: restored, index: kv.index, log_time_ms: 0 };
    assert_eq!(expire(&mut kv, &[(-7, 1)]), vec![-7]);
    assert!(kv.get("neg").is_none());
}

/// Jepsen's etcd analysis (etcd issue 11408): a client that held a lock and was paused past
/// its lease's TTL still believed it held the lock when it resumed, while another client had
/// taken it. A lock is only safe with its fencing token: a write guarded by "my lock key still
/// has the create revision I locked with" fails once the lease expired, and the new holder's
/// guarded write succeeds.
#[test]
fn etcd_11408_a_lock_holder_whose_lease_expired_cannot_write_with_its_fencing_token() {
    use tenure_kv::{Compare, CompareResult, CompareTarget, RequestOp, TxnRequest};
    let mut kv = Kv::new();
    grant(&mut kv, 1, 1);
    grant(&mut kv, 2, 1);
    put_leased(&mut kv, "lock/1", 1);
    let token_a = kv.get("lock/1").unwrap().create_revision;
    let guarded = |key: &str, token: i64, value: &str| TxnRequest {
        compare: vec![Compare::new(
            b(key),
            CompareResult::Equal,
            CompareTarget::CreateRevision(token),
        )],
        success: vec![RequestOp::Put(PutRequest::new(b("resource"), b(value)))],
        failure: vec![],
    };
    assert!(kv.txn(guarded("lock/1", token_a, "a1")).unwrap().succeeded);
    // A is paused; its lease runs out and the leader expires it.
    assert_eq!(expire(&mut kv, &[(1, 1)]), vec![1]);
    // B's lock key is now the oldest under lock/: B holds the lock.
    put_leased(&mut kv, "lock/2", 2);
    let token_b = kv.get("lock/2").unwrap().create_revision;
    assert!(kv.txn(guarded("lock/2", token_b, "b1")).unwrap().succeeded);
    // A resumes and writes with its token: refused, the resource keeps B's write.
    assert!(!kv.txn(guarded("lock/1", token_a, "a2")).unwrap().succeeded);
    assert_eq!(kv.get("resource").unwrap().value, b("b1"));
}
