//! The seed scenarios as scripted runs of the simulator: the production replica code, with
//! faults placed by hand instead of by the seed's swarm profile. Each run also passes the
//! world's online checkers (one leader per term, append-only leaders, state machine safety,
//! applied <= committed) and, at the end, the final checks (log matching, nothing acknowledged
//! lost, converged state machines).

use tenure_raft::{NodeId, Role, Term};
use tenure_replica::{Answer, ClientError};
use tenure_sim::world::{Profile, World};
use tenure_storage::CrashMode;

fn world(nodes: u64) -> World {
    World::new(7, Profile::quiet(nodes), |_| {})
}

/// Runs until a leader exists (bounded) and returns it.
fn elect(w: &mut World) -> NodeId {
    for _ in 0..200 {
        if let Some(l) = w.leader() {
            return l;
        }
        let t = w.now() + 10;
        w.run_until(t).expect("run");
    }
    panic!("no leader");
}

fn run_for(w: &mut World, ms: u64) {
    let t = w.now() + ms;
    w.run_until(t).expect("run");
}

fn acked(w: &World, req: tenure_replica::RequestId) -> bool {
    matches!(w.completion(req).map(|c| &c.result), Some(Ok(Answer::Write(_))))
}

#[test]
fn s1_terms_only_grow_and_survive_restarts() {
    let mut w = world(3);
    let leader = elect(&mut w);
    let before = w.terms();
    w.crash(leader, CrashMode::LoseUnsynced);
    run_for(&mut w, 500);
    w.restart(leader).unwrap();
    let after_restart = w.terms();
    assert!(after_restart[&leader] >= before[&leader], "a restarted node keeps its term");
    run_for(&mut w, 300);
    for (id, t) in w.terms() {
        assert!(t >= before[&id], "{id}'s term went backwards");
        assert!(t > Term(before[&leader].0), "the crashed leader was replaced in a higher term");
    }
    w.check_now().unwrap();
}

#[test]
fn s2_s4_one_leader_per_term_through_repeated_leader_crashes() {
    let mut w = world(5);
    for _ in 0..5 {
        let leader = elect(&mut w);
        w.crash(leader, CrashMode::RandomPrefix);
        run_for(&mut w, 400);
        w.restart(leader).unwrap();
    }
    elect(&mut w);
    run_for(&mut w, 300);
    // The online checker would have failed the run on two leaders in one term.
    w.check_now().unwrap();
}

#[test]
fn s3_s5_writes_flow_through_the_leader_and_reach_every_node() {
    let mut w = world(3);
    let leader = elect(&mut w);
    let follower = NodeId(leader.0 % 3 + 1);
    let a = w.put(leader, "a", "1", None);
    let b = w.put(follower, "b", "2", None); // forwarded to the leader
    run_for(&mut w, 200);
    assert!(acked(&w, a) && acked(&w, b));
    for id in 1..=3 {
        assert_eq!(w.value_at(NodeId(id), "a").as_deref(), Some("1"));
        assert_eq!(w.value_at(NodeId(id), "b").as_deref(), Some("2"));
    }
    w.check_now().unwrap();
}

#[test]
fn s6_leader_crash_under_writes_loses_nothing_acknowledged() {
    for (i, mode) in [
        CrashMode::LoseUnsynced,
        CrashMode::RandomPrefix,
        CrashMode::TearLastWrite { keep_bytes: 7 },
    ]
    .into_iter()
    .enumerate()
    {
        let mut w = world(3);
        let leader = elect(&mut w);
        let mut reqs = Vec::new();
        for k in 0..20 {
            reqs.push((k, w.put(leader, &format!("k{k}"), &format!("v{i}"), None)));
            if k == 10 {
                // Crash in the middle of the stream: some writes are acknowledged, some are in
                // flight at every stage.
                w.crash(leader, mode);
            }
            run_for(&mut w, 1);
        }
        run_for(&mut w, 600);
        w.restart(leader).unwrap();
        run_for(&mut w, 600);
        let new_leader = elect(&mut w);
        for (k, req) in reqs {
            if acked(&w, req) {
                assert_eq!(
                    w.value_at(new_leader, &format!("k{k}")).as_deref(),
                    Some(format!("v{i}").as_str()),
                    "acknowledged write k{k} lost ({mode:?})"
                );
            }
        }
        w.check_now().unwrap();
    }
}

#[test]
fn s7_retry_after_lost_reply_is_applied_once_and_gets_the_original_answer() {
    let mut w = world(3);
    let leader = elect(&mut w);
    // The write commits everywhere, but the leader crashes before its client hears back.
    let first = w.put(leader, "x", "once", Some((42, 1)));
    run_for(&mut w, 100);
    let original = match w.completion(first).map(|c| c.result.clone()) {
        Some(Ok(Answer::Write(r))) => r,
        other => panic!("first attempt: {other:?}"),
    };
    w.crash(leader, CrashMode::LoseUnsynced);
    let new_leader = elect(&mut w);
    // The client retries with the same session and sequence number at the new leader.
    let retry = w.put(new_leader, "x", "once", Some((42, 1)));
    run_for(&mut w, 200);
    match w.completion(retry).map(|c| c.result.clone()) {
        Some(Ok(Answer::Write(r))) => assert_eq!(r, original, "the retry gets the original answer"),
        other => panic!("retry: {other:?}"),
    }
    let kv = w.record_at(new_leader, "x").unwrap();
    assert_eq!(kv.version, 1, "applied exactly once");
    w.check_now().unwrap();
}

#[test]
fn s8_split_brain_old_leader_cannot_commit() {
    let mut w = world(5);
    let old = elect(&mut w);
    let others: Vec<u64> = (1..=5).filter(|i| *i != old.0).collect();
    let minority = [old.0, others[0]];
    let majority = [others[1], others[2], others[3]];
    w.set_partition(&[&minority, &majority]);
    let lost = w.put(old, "k", "from-old-leader", None);
    run_for(&mut w, 600);
    let new = elect(&mut w);
    assert!(majority.contains(&new.0));
    let won = w.put(new, "k", "from-new-leader", None);
    run_for(&mut w, 200);
    assert!(acked(&w, won));
    assert!(!acked(&w, lost), "the old leader committed without a majority");
    let old_role = w.replica(old).map(|r| r.node().role());
    assert_ne!(old_role, Some(Role::Leader), "check-quorum deposes the cut-off leader");
    w.heal();
    run_for(&mut w, 600);
    for id in 1..=5 {
        assert_eq!(w.value_at(NodeId(id), "k").as_deref(), Some("from-new-leader"));
    }
    if let Some(c) = w.completion(lost) {
        assert!(c.result.is_err(), "the old leader's write failed: {:?}", c.result);
        assert!(matches!(
            c.result,
            Err(ClientError::Timeout)
                | Err(ClientError::LeaderChanged)
                | Err(ClientError::NotLeader { .. })
        ));
    }
    w.check_now().unwrap();
}

#[test]
fn s9_rejoining_follower_does_not_disrupt_the_leader() {
    let mut w = world(3);
    let leader = elect(&mut w);
    let term = w.terms()[&leader];
    let loner = NodeId(leader.0 % 3 + 1);
    let rest: Vec<u64> = (1..=3).filter(|i| *i != loner.0).collect();
    w.set_partition(&[&[loner.0], &rest]);
    run_for(&mut w, 2000);
    assert_eq!(w.terms()[&loner], term, "pre-vote keeps the loner's term");
    w.heal();
    run_for(&mut w, 500);
    assert_eq!(w.leader(), Some(leader));
    assert_eq!(w.terms()[&leader], term, "the healthy leader kept its term");
    w.check_now().unwrap();
}
