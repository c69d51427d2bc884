//! The simulator's auth workload and checker (issue 17): every member enforces the same
//! permissions at each point of the log, as a model of etcd's rules says, under crashes,
//! partitions, leader changes and snapshots. The checker is shown able to fail on known-bad
//! input (members disagreeing, an outcome the rules do not give, a refused write that changed
//! a key, auth states differing at one index, nothing observed), and a bounded range of seeds
//! of the auth profile passes while deciding both ways.
//!
//! Longer runs: `cargo run --release -p tenure-sim -- --profile auth --seeds 0..2000`.

use bytes::Bytes;
use std::sync::Arc;
use tenure_kv::{
    AuthError, AuthInfo, AuthRequest, AuthState, Command, Error, Permission, PermissionKind,
    Proposal, PutRequest, PutResponse, Response, Store,
};
use tenure_raft::{LogIndex, NodeId};
use tenure_sim::auth::{AuthChecker, Observed};
use tenure_sim::run::{ProfileKind, run_seed_kind};
use tenure_sim::world::{Profile, World};

fn root() -> AuthInfo {
    AuthInfo { user: "root".into(), token_revision: None }
}

fn change(req: AuthRequest) -> Proposal {
    Proposal::new(Command::Auth(req)).with_auth(root())
}

fn put_as(user: &str, key: &str, value: &str) -> Proposal {
    Proposal::new(Command::Put(PutRequest::new(key.to_string(), value.to_string())))
        .with_auth(AuthInfo { user: user.into(), token_revision: None })
}

/// root, `u` with READWRITE on `[a/a, a/b)` through `r0`, auth on: indexes 1 to 6.
fn setup() -> Vec<Proposal> {
    vec![
        change(AuthRequest::UserAdd { name: "root".into(), password_hash: None }),
        change(AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() }),
        change(AuthRequest::UserAdd { name: "u".into(), password_hash: None }),
        change(AuthRequest::RoleAdd { name: "r0".into() }),
        change(AuthRequest::RoleGrantPermission {
            role: "r0".into(),
            permission: Permission {
                kind: PermissionKind::ReadWrite,
                key: Bytes::from_static(b"a/a"),
                range_end: Bytes::from_static(b"a/b"),
            },
        }),
        change(AuthRequest::UserGrantRole { user: "u".into(), role: "r0".into() }),
        change(AuthRequest::Enable { token_key: Bytes::from_static(&[3; 16]) }),
    ]
}

/// A store applying `proposals` from index 1, as a member would: each index's real outcome,
/// whether it changed keys, and the auth state after it.
#[allow(clippy::type_complexity)]
fn apply_all(
    proposals: &[Proposal],
) -> Vec<(LogIndex, Proposal, Result<Response, Error>, bool, Arc<AuthState>)> {
    let mut store = Store::new(tenure_kv::Config::default()).expect("config");
    proposals
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let index = LogIndex(i as u64 + 1);
            let revision = store.revision();
            let outcome = store.apply(index.0, 0, &p.encode());
            let changed = !store.take_events().is_empty() || store.revision() != revision;
            (index, p.clone(), outcome, changed, store.auth().clone())
        })
        .collect()
}

/// A checker fed `proposals` as node 1 applied them, with their real outcomes.
fn fed(proposals: &[Proposal]) -> AuthChecker {
    let mut c = AuthChecker::default();
    for (index, p, outcome, changed, state) in apply_all(proposals) {
        c.on_applied(index, Some(p));
        c.on_outcome(index, Observed { node: NodeId(1), outcome, changed }).expect("one member");
        c.on_state(NodeId(1), index, &state).expect("one member");
    }
    c
}

/// The setup, then `u` writing inside (index 8) and outside (index 9) its permissions.
fn history() -> Vec<Proposal> {
    let mut h = setup();
    h.push(put_as("u", "a/a", "v1"));
    h.push(put_as("u", "a/c", "v2"));
    h
}

fn put_ok(revision: i64) -> Result<Response, Error> {
    Ok(Response::Put(PutResponse { revision, prev_kv: None }))
}

#[test]
fn a_consistent_history_passes_and_counts_both_verdicts() {
    let mut c = fed(&history());
    let counts = c.check().expect("the store's own outcomes are the rules'");
    assert_eq!((counts.allowed, counts.denied), (1, 1), "{counts:?}");
    assert_eq!(counts.changes, 7);
}

#[test]
fn checker_finds_members_disagreeing_on_an_outcome() {
    let mut c = fed(&history());
    let other = Observed { node: NodeId(2), outcome: put_ok(2), changed: true };
    let v = c.on_outcome(LogIndex(9), other).expect_err("n2 allowed what n1 refused");
    assert!(v.to_string().contains("same outcome"), "{v}");
}

#[test]
fn checker_finds_an_outcome_the_rules_do_not_give() {
    // A planted wrong outcome: the only member observed allowed u's write outside its role.
    let mut c = AuthChecker::default();
    for (index, p, outcome, changed, state) in apply_all(&history()) {
        let (outcome, changed) =
            if index == LogIndex(9) { (put_ok(3), true) } else { (outcome, changed) };
        c.on_applied(index, Some(p));
        c.on_outcome(index, Observed { node: NodeId(1), outcome, changed }).unwrap();
        c.on_state(NodeId(1), index, &state).unwrap();
    }
    let v = c.check().expect_err("the write at 9 is outside u's permissions");
    assert!(v.to_string().contains("what the auth rules say"), "{v}");
    // And the reverse: a write inside them refused.
    let mut c = AuthChecker::default();
    for (index, p, outcome, changed, state) in apply_all(&history()) {
        let outcome = if index == LogIndex(8) {
            Err(Error::Auth(AuthError::PermissionDenied))
        } else {
            outcome
        };
        let changed = changed && index != LogIndex(8);
        c.on_applied(index, Some(p));
        c.on_outcome(index, Observed { node: NodeId(1), outcome, changed }).unwrap();
        c.on_state(NodeId(1), index, &state).unwrap();
    }
    assert!(c.check().is_err(), "a refused write u was allowed to make went unnoticed");
}

#[test]
fn checker_finds_a_refused_write_that_changed_a_key() {
    // Seen on the member: refused, yet the revision moved.
    let mut c = fed(&history()[..8]);
    let seen = Observed {
        node: NodeId(1),
        outcome: Err(Error::Auth(AuthError::PermissionDenied)),
        changed: true,
    };
    let v = c.on_outcome(LogIndex(9), seen).expect_err("refused and changed");
    assert!(v.to_string().contains("refused write changes no key"), "{v}");
    // Told to the client as refused, yet its value is in a member's events.
    let h = history();
    let mut c = fed(&h);
    c.on_ack(NodeId(1), LogIndex(9), h[8].clone(), Err(Error::Auth(AuthError::PermissionDenied)));
    let mut store = Store::new(tenure_kv::Config::default()).unwrap();
    store.apply(1, 0, &Proposal::new(Command::Put(PutRequest::new("a/c", "v2"))).encode()).unwrap();
    c.on_events(&store.take_events());
    let v = c.check().expect_err("the refused write's value was written");
    assert!(v.to_string().contains("refused write changes no key"), "{v}");
}

#[test]
fn checker_finds_an_acknowledgement_the_rules_do_not_give() {
    let h = history();
    let mut c = fed(&h);
    c.on_ack(NodeId(1), LogIndex(9), h[8].clone(), put_ok(3));
    assert!(c.check().is_err(), "a client told its forbidden write succeeded went unnoticed");
    // Told a different refusal than the members' outcome.
    let mut c = fed(&h);
    c.on_ack(NodeId(1), LogIndex(9), h[8].clone(), Err(Error::Auth(AuthError::InvalidAuthToken)));
    let v = c.check().expect_err("another error than the entry's");
    assert!(v.to_string().contains("told the outcome its entry had"), "{v}");
    // An acknowledgement from an entry holding another proposal.
    let mut c = fed(&h);
    c.on_ack(NodeId(1), LogIndex(8), h[8].clone(), put_ok(2));
    assert!(c.check().is_err());
}

#[test]
fn checker_finds_auth_states_differing_at_one_index() {
    let results = apply_all(&history());
    let mut c = fed(&history());
    // n2 shows, at index 8, the state from before the grant of r0 to u.
    let v = c.on_state(NodeId(2), LogIndex(8), &results[4].4).expect_err("different states");
    assert!(v.to_string().contains("same auth state"), "{v}");
    // A state the model does not have, even if only one member showed it.
    let mut c = AuthChecker::default();
    for (index, p, outcome, changed, state) in apply_all(&history()) {
        let state = if index == LogIndex(8) { results[4].4.clone() } else { state };
        c.on_applied(index, Some(p));
        c.on_outcome(index, Observed { node: NodeId(1), outcome, changed }).unwrap();
        c.on_state(NodeId(1), index, &state).unwrap();
    }
    let v = c.check().expect_err("a state behind the log");
    assert!(v.to_string().contains("the model's"), "{v}");
}

#[test]
fn checker_fails_when_it_observed_nothing_or_missed_an_entry() {
    let mut c = AuthChecker::default();
    for (i, p) in history().into_iter().enumerate() {
        c.on_applied(LogIndex(i as u64 + 1), Some(p));
    }
    let v = c.check().expect_err("no outcome observed");
    assert!(v.to_string().contains("observes outcomes"), "{v}");
    let mut c = fed(&history());
    c.on_applied(LogIndex(11), None);
    let v = c.check().expect_err("index 10 never seen");
    assert!(v.to_string().contains("sees every committed entry"), "{v}");
}

/// In a real run, the checker holds outcomes of both kinds, and a member showing another
/// outcome at one of them would be caught.
#[test]
fn a_planted_disagreement_in_a_real_run_is_found() {
    let seed = (0..20)
        .find(|s| {
            let mut w = World::new(*s, Profile::auth(*s), |_| {});
            w.run().is_ok() && w.auth_counts().allowed > 0 && w.auth_counts().denied > 0
        })
        .expect("a seed among the first 20 decides both ways");
    let mut w = World::new(seed, Profile::auth(seed), |_| {});
    w.run().expect("passes");
    let checker = w.auth_checker_mut();
    let (index, seen) = checker
        .outcomes()
        .iter()
        .find(|(_, o)| matches!(o.outcome, Err(Error::Auth(_))))
        .map(|(i, o)| (*i, o.clone()))
        .expect("a refused entry");
    let other = Observed { node: NodeId(99), outcome: put_ok(1), changed: true };
    assert!(checker.on_outcome(index, other).is_err(), "n99 allowed {index}, refused as {seen:?}");
}

/// CI's share of the auth profile: a bounded range of seeds passes, and most decide both ways
/// (or the checker would pass while checking little).
#[test]
fn auth_profile_seeds_pass_and_decide_both_ways() {
    let count: u64 =
        std::env::var("SIM_AUTH_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..count)
                        .filter(|seed| seed % threads == t)
                        .map(|seed| (seed, run_seed_kind(seed, ProfileKind::Auth, false)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("worker")).collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(seed, r)| {
            r.failure.as_ref().map(|f| {
                format!(
                    "seed {seed}: {f:?}\n  replay: cargo run --release -p tenure-sim -- --profile auth --seed {seed} --trace"
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let both = results.iter().filter(|(_, r)| r.auth.allowed > 0 && r.auth.denied > 0).count();
    let allowed: u64 = results.iter().map(|(_, r)| r.auth.allowed).sum();
    let denied: u64 = results.iter().map(|(_, r)| r.auth.denied).sum();
    let observed = results.iter().filter(|(_, r)| r.auth.outcomes > 0).count();
    println!("{count} seeds: {both} decided both ways, {allowed} allowed, {denied} denied");
    // A seed whose faults leave it without a leader most of the time may decide nothing
    // (seed 51: crashes every 200 ms of a cluster shrunk to two voters); nearly all decide.
    let silent: Vec<u64> =
        results.iter().filter(|(_, r)| r.auth.outcomes == 0).map(|(seed, _)| *seed).collect();
    assert!(
        observed as u64 * 10 >= count * 9,
        "{} of {count} seeds observed no auth outcome at all: {silent:?}",
        silent.len()
    );
    assert!(
        both as u64 * 3 >= count,
        "only {both} of {count} seeds saw a write both allowed and denied by permissions"
    );
}
