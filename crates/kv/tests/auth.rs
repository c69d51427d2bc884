//! Authentication and role-based access as the store applies it: auth changes go through the
//! log, a client's write is checked against the auth state as it is at its entry (so every
//! member refuses or applies it alike), and the state survives snapshots and entry encoding.
//! The property test checks that no sequence of auth changes and requests lets a user read or
//! write outside its roles, through transactions' branches included.

mod common;

use bytes::Bytes;
use common::{Kv, b};
use proptest::prelude::*;
use tenure_kv::{
    AuthError, AuthInfo, AuthRequest, Command, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, Error, LeaseGrantRequest, LeaseRevokeRequest, Permission, PermissionKind,
    Proposal, PutRequest, RangeRequest, RequestOp, Response, Store, TxnRequest, decode_outcome,
    encode_outcome,
};

fn user(name: &str) -> AuthInfo {
    AuthInfo { user: name.into(), token_revision: None }
}

fn auth(kv: &mut Kv, by: Option<&AuthInfo>, req: AuthRequest) -> Result<Response, Error> {
    let mut p = Proposal::new(Command::Auth(req));
    p.auth = by.cloned();
    kv.apply(&p)
}

fn as_user(kv: &mut Kv, who: &AuthInfo, command: Command) -> Result<Response, Error> {
    kv.apply(&Proposal::new(command).with_auth(who.clone()))
}

fn perm(kind: PermissionKind, key: &str, end: &str) -> Permission {
    Permission { kind, key: b(key), range_end: Bytes::copy_from_slice(end.as_bytes()) }
}

/// root, and alice with READWRITE on the prefix `/a/`, then auth on.
fn setup() -> Kv {
    let mut kv = Kv::new();
    for req in [
        AuthRequest::UserAdd { name: "root".into(), password_hash: Some("$2b$hash".into()) },
        AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() },
        AuthRequest::UserAdd { name: "alice".into(), password_hash: Some("$2b$hash".into()) },
        AuthRequest::RoleAdd { name: "app".into() },
        AuthRequest::RoleGrantPermission {
            role: "app".into(),
            permission: perm(PermissionKind::ReadWrite, "/a/", "/a0"),
        },
        AuthRequest::UserGrantRole { user: "alice".into(), role: "app".into() },
        AuthRequest::Enable { token_key: Bytes::from_static(&[9; 32]) },
    ] {
        auth(&mut kv, None, req).unwrap();
    }
    kv
}

fn denied() -> Error {
    Error::Auth(AuthError::PermissionDenied)
}

#[test]
fn auth_changes_do_not_move_the_revision_and_bump_the_auth_revision() {
    let mut kv = Kv::new();
    kv.put("x", "1");
    let rev = kv.revision();
    let r = auth(&mut kv, None, AuthRequest::RoleAdd { name: "r".into() }).unwrap();
    match r {
        Response::Auth(a) => assert_eq!((a.revision, a.auth_revision), (rev, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(kv.revision(), rev);
    assert_eq!(kv.store.auth().revision(), 1);
}

#[test]
fn writes_are_checked_when_they_apply() {
    let mut kv = setup();
    let alice = user("alice");
    as_user(&mut kv, &alice, Command::Put(PutRequest::new(b("/a/1"), b("v")))).unwrap();
    assert_eq!(
        as_user(&mut kv, &alice, Command::Put(PutRequest::new(b("/b"), b("v")))),
        Err(denied())
    );
    // prev_kv needs READ too; a delete of a range needs WRITE on all of it.
    let mut del = DeleteRangeRequest::prefix(b("/a/"));
    del.prev_kv = true;
    as_user(&mut kv, &alice, Command::DeleteRange(del)).unwrap();
    assert_eq!(
        as_user(&mut kv, &alice, Command::DeleteRange(DeleteRangeRequest::prefix(b("/")))),
        Err(denied())
    );
    // No user while auth is on, a user that does not exist, a token from before a password
    // change.
    assert_eq!(
        as_user(&mut kv, &user(""), Command::Put(PutRequest::new(b("/a/1"), b("v")))),
        Err(Error::Auth(AuthError::UserEmpty))
    );
    assert_eq!(
        as_user(&mut kv, &user("mallory"), Command::Put(PutRequest::new(b("/a/1"), b("v")))),
        Err(denied())
    );
    let rev = kv.store.auth().user("alice").unwrap().password_revision;
    let token = AuthInfo { user: "alice".into(), token_revision: Some(rev) };
    as_user(&mut kv, &token, Command::Put(PutRequest::new(b("/a/2"), b("v")))).unwrap();
    auth(
        &mut kv,
        Some(&user("root")),
        AuthRequest::UserChangePassword { name: "alice".into(), password_hash: "$2b$new".into() },
    )
    .unwrap();
    assert_eq!(
        as_user(&mut kv, &token, Command::Put(PutRequest::new(b("/a/2"), b("v")))),
        Err(Error::Auth(AuthError::InvalidAuthToken))
    );
}

#[test]
fn a_refused_write_changes_nothing() {
    let mut kv = setup();
    kv.put("/b", "1");
    let before = kv.store.clone();
    let r = as_user(&mut kv, &user("alice"), Command::Put(PutRequest::new(b("/b"), b("2"))));
    assert_eq!(r, Err(denied()));
    assert_eq!(kv.get("/b").unwrap().value, b("1"));
    assert_eq!(kv.revision(), before.revision());
}

#[test]
fn every_branch_and_compare_of_a_txn_is_checked() {
    let mut kv = setup();
    let alice = user("alice");
    let ok = TxnRequest {
        compare: vec![Compare::new(b("/a/c"), CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![RequestOp::Put(PutRequest::new(b("/a/x"), b("1")))],
        failure: vec![RequestOp::Range(RangeRequest::prefix(b("/a/")))],
    };
    as_user(&mut kv, &alice, Command::Txn(ok.clone())).unwrap();
    // The failure branch would never run, but it writes outside /a/: refused.
    let mut bad = ok.clone();
    bad.failure.push(RequestOp::DeleteRange(DeleteRangeRequest::single(b("/b"))));
    assert_eq!(as_user(&mut kv, &alice, Command::Txn(bad)), Err(denied()));
    // A compare reads.
    let mut bad = ok.clone();
    bad.compare.push(Compare::new(b("/secret"), CompareResult::Equal, CompareTarget::Version(0)));
    assert_eq!(as_user(&mut kv, &alice, Command::Txn(bad)), Err(denied()));
    // Nested transactions too.
    let mut bad = ok;
    bad.success.push(RequestOp::Txn(TxnRequest {
        success: vec![RequestOp::Range(RangeRequest::single(b("/b")))],
        ..Default::default()
    }));
    assert_eq!(as_user(&mut kv, &alice, Command::Txn(bad)), Err(denied()));
}

#[test]
fn revoking_a_lease_needs_write_on_every_key_attached() {
    let mut kv = setup();
    kv.grant(7, 60).unwrap();
    let mut put = PutRequest::new(b("/b"), b("1"));
    put.lease = 7;
    kv.put_req(put).unwrap();
    let alice = user("alice");
    assert_eq!(
        as_user(&mut kv, &alice, Command::LeaseRevoke(LeaseRevokeRequest { id: 7 })),
        Err(denied())
    );
    // Granting needs only a valid user.
    as_user(&mut kv, &alice, Command::LeaseGrant(LeaseGrantRequest { id: 8, ttl: 60 })).unwrap();
    as_user(&mut kv, &alice, Command::LeaseRevoke(LeaseRevokeRequest { id: 8 })).unwrap();
    as_user(&mut kv, &user("root"), Command::LeaseRevoke(LeaseRevokeRequest { id: 7 })).unwrap();
}

#[test]
fn a_revoke_applied_before_a_write_refuses_it_on_every_member() {
    let mut kv = setup();
    let alice = user("alice");
    auth(
        &mut kv,
        Some(&user("root")),
        AuthRequest::RoleRevokePermission {
            role: "app".into(),
            key: b("/a/"),
            range_end: b("/a0"),
        },
    )
    .unwrap();
    assert_eq!(
        as_user(&mut kv, &alice, Command::Put(PutRequest::new(b("/a/1"), b("v")))),
        Err(denied())
    );
    assert_eq!(
        auth(
            &mut kv,
            Some(&user("root")),
            AuthRequest::RoleRevokePermission {
                role: "app".into(),
                key: b("/a/"),
                range_end: b("/a0")
            },
        ),
        Err(Error::Auth(AuthError::PermissionNotGranted))
    );
}

#[test]
fn only_root_manages_auth_and_errors_are_etcds() {
    let mut kv = setup();
    let alice = user("alice");
    assert_eq!(
        auth(&mut kv, Some(&alice), AuthRequest::RoleAdd { name: "r".into() }),
        Err(denied())
    );
    let root = Some(user("root"));
    let cases = [
        (AuthRequest::UserAdd { name: "".into(), password_hash: None }, AuthError::UserEmpty),
        (
            AuthRequest::UserAdd { name: "alice".into(), password_hash: None },
            AuthError::UserAlreadyExist,
        ),
        (AuthRequest::UserDelete { name: "bob".into() }, AuthError::UserNotFound),
        (AuthRequest::RoleAdd { name: "".into() }, AuthError::RoleEmpty),
        (AuthRequest::RoleAdd { name: "app".into() }, AuthError::RoleAlreadyExist),
        (AuthRequest::RoleDelete { name: "nope".into() }, AuthError::RoleNotFound),
        (
            AuthRequest::UserRevokeRole { user: "alice".into(), role: "other".into() },
            AuthError::RoleNotGranted,
        ),
        (
            AuthRequest::UserGrantRole { user: "alice".into(), role: "nope".into() },
            AuthError::RoleNotFound,
        ),
        (AuthRequest::UserDelete { name: "root".into() }, AuthError::InvalidAuthMgmt),
    ];
    for (req, err) in cases {
        assert_eq!(auth(&mut kv, root.as_ref(), req.clone()), Err(Error::Auth(err)), "{req:?}");
    }
    assert_eq!(
        Error::Auth(AuthError::PermissionDenied).to_string(),
        "etcdserver: permission denied"
    );
    assert_eq!(
        Error::Auth(AuthError::AuthFailed).to_string(),
        "etcdserver: authentication failed, invalid user ID or password"
    );
    assert_eq!(
        Error::Auth(AuthError::InvalidAuthToken).to_string(),
        "etcdserver: invalid auth token"
    );
    assert_eq!(Error::Auth(AuthError::UserEmpty).to_string(), "etcdserver: user name is empty");
}

#[test]
fn deleting_a_role_revokes_it_from_its_users() {
    let mut kv = setup();
    auth(&mut kv, Some(&user("root")), AuthRequest::RoleDelete { name: "app".into() }).unwrap();
    assert!(kv.store.auth().user("alice").unwrap().roles.is_empty());
    assert_eq!(
        as_user(&mut kv, &user("alice"), Command::Put(PutRequest::new(b("/a/1"), b("v")))),
        Err(denied())
    );
}

#[test]
fn auth_state_survives_a_snapshot_and_outcomes_round_trip() {
    let kv = setup();
    let mut buf = Vec::new();
    kv.store.write_snapshot(&mut buf).unwrap();
    let restored = Store::restore(kv.store.config().clone(), &mut buf.as_slice()).unwrap();
    assert_eq!(restored, kv.store);
    assert!(restored.auth().enabled());
    let out: Result<Response, Error> = Err(Error::Auth(AuthError::InvalidAuthMgmt));
    assert_eq!(decode_outcome(&encode_outcome(&out)).unwrap(), out);
    let p = Proposal::new(Command::Auth(AuthRequest::RoleGrantPermission {
        role: "r".into(),
        permission: perm(PermissionKind::Write, "a", "\0"),
    }))
    .with_auth(AuthInfo { user: "root".into(), token_revision: Some(3) });
    assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
}

// ---- the property: no user reads or writes outside its roles ----

const KEYS: [&str; 5] = ["a", "ab", "b", "ba", "c"];
const ENDS: [&str; 5] = ["", "\0", "b", "bb", "c"];

/// An operation of the generated sequences.
#[derive(Debug, Clone)]
enum Op {
    Grant { role: usize, kind: PermissionKind, key: usize, end: usize },
    Revoke { role: usize, key: usize, end: usize },
    GrantRole { role: usize },
    RevokeRole { role: usize },
    Write { key: usize, end: usize, delete: bool, in_txn_failure: bool },
    Read { key: usize, end: usize },
}

fn kind() -> impl Strategy<Value = PermissionKind> {
    prop_oneof![
        Just(PermissionKind::Read),
        Just(PermissionKind::Write),
        Just(PermissionKind::ReadWrite)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize, kind(), 0..5usize, 0..5usize).prop_map(|(role, kind, key, end)| Op::Grant {
            role,
            kind,
            key,
            end
        }),
        (0..2usize, 0..5usize, 0..5usize).prop_map(|(role, key, end)| Op::Revoke {
            role,
            key,
            end
        }),
        (0..2usize).prop_map(|role| Op::GrantRole { role }),
        (0..2usize).prop_map(|role| Op::RevokeRole { role }),
        (0..5usize, 0..5usize, any::<bool>(), any::<bool>()).prop_map(
            |(key, end, delete, in_txn_failure)| Op::Write { key, end, delete, in_txn_failure }
        ),
        (0..5usize, 0..5usize).prop_map(|(key, end)| Op::Read { key, end }),
    ]
}

/// The model's view of a range: every key of the universe in it (the universe holds every
/// bound a permission or request can have, and each key followed by `\0`, so a gap in the
/// permissions always starts at a key of the universe).
fn universe() -> Vec<Vec<u8>> {
    let mut u = Vec::new();
    for k in KEYS.iter().chain(ENDS.iter()).filter(|k| !k.is_empty() && **k != "\0") {
        u.push(k.as_bytes().to_vec());
        let mut z = k.as_bytes().to_vec();
        z.push(0);
        u.push(z);
    }
    u
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// What the model says the user may do: every key of the range is in some permission of a
/// role the user holds that allows `need`.
fn model_allows(
    roles: &[Vec<(PermissionKind, String, String)>; 2],
    held: &[bool; 2],
    need: PermissionKind,
    key: &str,
    end: &str,
) -> bool {
    universe().iter().filter(|k| in_range(k, key.as_bytes(), end.as_bytes())).all(|k| {
        (0..2).any(|r| {
            held[r]
                && roles[r].iter().any(|(kind, pk, pe)| {
                    kind.allows(need) && in_range(k, pk.as_bytes(), pe.as_bytes())
                })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The state machine allows a user's read or write exactly when the model (a per-key check
    /// over every key that matters) does, whatever auth changes came before, and a write it
    /// refuses changes no key.
    #[test]
    fn no_user_reads_or_writes_outside_its_roles(ops in proptest::collection::vec(op(), 1..40)) {
        let mut kv = Kv::new();
        let root = user("root");
        for req in [
            AuthRequest::UserAdd { name: "root".into(), password_hash: None },
            AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() },
            AuthRequest::UserAdd { name: "u".into(), password_hash: None },
            AuthRequest::RoleAdd { name: "r0".into() },
            AuthRequest::RoleAdd { name: "r1".into() },
            AuthRequest::Enable { token_key: Bytes::from_static(&[1; 16]) },
        ] {
            auth(&mut kv, None, req).unwrap();
        }
        let u = user("u");
        let mut roles: [Vec<(PermissionKind, String, String)>; 2] = [vec![], vec![]];
        let mut held = [false; 2];
        for op in ops {
            match op {
                Op::Grant { role, kind, key, end } => {
                    let p = perm(kind, KEYS[key], ENDS[end]);
                    auth(&mut kv, Some(&root), AuthRequest::RoleGrantPermission {
                        role: format!("r{role}"), permission: p,
                    }).unwrap();
                    roles[role].retain(|(_, k, e)| k != KEYS[key] || e != ENDS[end]);
                    roles[role].push((kind, KEYS[key].into(), ENDS[end].into()));
                }
                Op::Revoke { role, key, end } => {
                    let had = roles[role].iter().any(|(_, k, e)| k == KEYS[key] && e == ENDS[end]);
                    let r = auth(&mut kv, Some(&root), AuthRequest::RoleRevokePermission {
                        role: format!("r{role}"), key: b(KEYS[key]), range_end: Bytes::copy_from_slice(ENDS[end].as_bytes()),
                    });
                    prop_assert_eq!(r.is_ok(), had);
                    roles[role].retain(|(_, k, e)| k != KEYS[key] || e != ENDS[end]);
                }
                Op::GrantRole { role } => {
                    auth(&mut kv, Some(&root), AuthRequest::UserGrantRole { user: "u".into(), role: format!("r{role}") }).unwrap();
                    held[role] = true;
                }
                Op::RevokeRole { role } => {
                    let r = auth(&mut kv, Some(&root), AuthRequest::UserRevokeRole { user: "u".into(), role: format!("r{role}") });
                    prop_assert_eq!(r.is_ok(), held[role]);
                    held[role] = false;
                }
                Op::Write { key, end, delete, in_txn_failure } => {
                    let (k, e) = (KEYS[key], if delete { ENDS[end] } else { "" });
                    let write = if delete {
                        RequestOp::DeleteRange(DeleteRangeRequest { key: b(k), range_end: Bytes::copy_from_slice(e.as_bytes()), prev_kv: false })
                    } else {
                        RequestOp::Put(PutRequest::new(b(k), b("v")))
                    };
                    let command = if in_txn_failure {
                        // In the branch that does not run: still checked.
                        Command::Txn(TxnRequest { failure: vec![write], ..Default::default() })
                    } else {
                        match write {
                            RequestOp::Put(p) => Command::Put(p),
                            RequestOp::DeleteRange(d) => Command::DeleteRange(d),
                            _ => unreachable!(),
                        }
                    };
                    let before = kv.store.revision();
                    let allowed = model_allows(&roles, &held, PermissionKind::Write, k, e);
                    let r = as_user(&mut kv, &u, command);
                    prop_assert_eq!(r.is_ok(), allowed, "write {} {:?}: {:?}", k, e, r);
                    if !allowed {
                        prop_assert_eq!(r, Err(denied()));
                        prop_assert_eq!(kv.store.revision(), before);
                    }
                }
                Op::Read { key, end } => {
                    let (k, e) = (KEYS[key], ENDS[end]);
                    let allowed = model_allows(&roles, &held, PermissionKind::Read, k, e);
                    let checked = kv.store.auth().check_range(&u, k.as_bytes(), e.as_bytes());
                    prop_assert_eq!(checked.is_ok(), allowed, "read {} {:?}", k, e);
                    // The same read inside a transaction, through the log.
                    let txn = TxnRequest {
                        success: vec![RequestOp::Range(RangeRequest { key: b(k), range_end: Bytes::copy_from_slice(e.as_bytes()), ..Default::default() })],
                        ..Default::default()
                    };
                    prop_assert_eq!(as_user(&mut kv, &u, Command::Txn(txn)).is_ok(), allowed);
                }
            }
        }
    }
}
