//! Configuration changes (Raft dissertation chapter 4): one test per rule, named with its
//! section, and scenarios on the testkit `Cluster`: add, remove, replace, promote, remove the
//! leader, a crash or leader change in the middle of a joint change, a removed member that
//! keeps running. `check_commit_quorums` checks every committed entry against every
//! configuration in force at its index.

use bytes::Bytes;
use tenure_raft::membership::{ConfChange, ConfigEntry};
use tenure_raft::testkit::Cluster;
use tenure_raft::{
    ConfChangeError, Entry, EntryId, EntryKind, LogIndex, LogView, Membership, Message,
    MessageBody, NodeId, Role, StepError, Term,
};

fn n(id: u64) -> NodeId {
    NodeId(id)
}

fn voters(ids: &[u64]) -> Membership {
    Membership::voters(ids.iter().map(|&i| NodeId(i)))
}

/// A cluster of `size` voters with node 1 elected.
fn cluster(size: u64) -> Cluster {
    let mut c = Cluster::new(size, |_| {});
    c.campaign(n(1));
    assert_eq!(c.leader(), Some(n(1)));
    c
}

fn incoming(c: &Cluster, id: u64) -> Vec<u64> {
    c.node(n(id)).membership().voters.incoming.voters().iter().map(|i| i.0).collect()
}

/// Every entry a running node has committed is held (same term) by a majority of each half of
/// the configuration in force at its index (the latest configuration entry at or before it,
/// as in the committing leader's log), counting every node's log, crashed nodes excluded.
fn check_commit_quorums(c: &Cluster, initial: &Membership) {
    for id in c.ids().into_iter().filter(|id| c.is_up(*id)) {
        let node = c.node(id);
        let log = node.log_view();
        let mut config = initial.clone();
        let first = log.first_index();
        if first > LogIndex(1) {
            continue; // compacted logs are out of this check's reach
        }
        for e in log.all_entries().iter().filter(|e| e.index() <= node.committed()) {
            if e.kind == EntryKind::Config {
                config = ConfigEntry::decode(&e.data).expect("valid").next;
            }
            let holds = |v: NodeId| c.is_up(v) && c.node(v).entry_term(e.index()) == Some(e.term());
            for half in [&config.voters.incoming, &config.voters.outgoing] {
                if half.is_empty() {
                    continue;
                }
                let count = half.voters().iter().filter(|v| holds(**v)).count();
                assert!(
                    count >= half.quorum() || half.voters().iter().any(|v| !c.is_up(*v)),
                    "{id} committed {} held by {count} of {:?}",
                    e.id,
                    half.voters()
                );
            }
        }
    }
}

#[test]
fn s4_3_add_voter_goes_through_joint_and_leaves_automatically() {
    let mut c = cluster(3);
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    let joint = c.propose_conf_change(n(1), &[ConfChange::AddVoter(n(4))]).unwrap();
    assert!(c.node(n(1)).membership().voters.is_joint(), "in force on the leader at once");
    c.stabilize();
    for id in 1..=4 {
        let m = c.node(n(id)).membership();
        assert!(!m.voters.is_joint(), "{id} left the joint configuration");
        assert_eq!(incoming(&c, id), vec![1, 2, 3, 4], "{id}");
    }
    // The joint entry and the leave entry right after it, both committed everywhere.
    let leader = c.node(n(1));
    assert!(leader.committed() > joint.index);
    assert_eq!(leader.entry_term(joint.index.next()), Some(joint.term));
    c.propose(n(1), "after").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(n(4)), vec!["after"]);
    check_commit_quorums(&c, &voters(&[1, 2, 3]));
}

#[test]
fn s4_1_configuration_takes_effect_when_appended_on_followers() {
    let mut c = cluster(3);
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    c.process(n(1));
    // Deliver the append to node 2 only; nothing is acknowledged, so nothing commits.
    let held = c.hold_where(|m| m.to != n(2) || !matches!(m.body, MessageBody::Append { .. }));
    c.deliver_all();
    c.process(n(2));
    assert!(c.node(n(2)).membership().learners.contains(&n(4)), "in force once appended");
    assert!(c.node(n(2)).committed() < c.node(n(2)).last_index(), "not yet committed");
    assert!(!c.node(n(3)).membership().learners.contains(&n(4)));
    drop(held);
}

#[test]
fn s4_1_truncated_configuration_entry_rolls_back() {
    let mut c = cluster(3);
    c.isolate(n(1));
    c.propose_conf_change(n(1), &[ConfChange::AddVoter(n(4))]).unwrap();
    c.stabilize();
    assert!(c.node(n(1)).membership().voters.is_joint());
    // Node 2 or 3 takes over and commits entries of its own; node 1's joint entry is
    // overwritten.
    c.run_ticks(30);
    let leader = c.run_until_leader(200);
    assert_ne!(leader, n(1));
    c.propose(leader, "x").unwrap();
    c.stabilize();
    c.heal();
    c.run_ticks(3);
    c.stabilize();
    let m = c.node(n(1)).membership();
    assert!(!m.voters.is_joint(), "rolled back with the entry");
    assert_eq!(incoming(&c, 1), vec![1, 2, 3]);
    assert_eq!(c.node(n(1)).membership(), &voters(&[1, 2, 3]));
}

#[test]
fn s4_3_joint_commit_needs_majorities_of_both() {
    let mut c = cluster(3);
    for id in [4, 5] {
        c.add_node(n(id), voters(&[1, 2, 3]), |_| {});
        c.isolate(n(id));
    }
    // Replace 2 and 3 by 4 and 5: incoming {1, 4, 5}, outgoing {1, 2, 3}.
    let changes = [
        ConfChange::AddVoter(n(4)),
        ConfChange::AddVoter(n(5)),
        ConfChange::Remove(n(2)),
        ConfChange::Remove(n(3)),
    ];
    let joint = c.propose_conf_change(n(1), &changes).unwrap();
    c.stabilize();
    // The old majority holds the entry; the new one (1 of {1, 4, 5}) does not.
    assert!(c.node(n(2)).entry_term(joint.index).is_some());
    assert!(c.node(n(1)).committed() < joint.index, "C_new has no majority yet");
    c.heal();
    c.run_ticks(3);
    assert!(c.node(n(1)).committed() > joint.index);
    assert_eq!(incoming(&c, 1), vec![1, 4, 5]);
    assert!(c.node(n(2)).is_removed() || c.node(n(2)).membership().voters.is_joint());
    check_commit_quorums(&c, &voters(&[1, 2, 3]));
}

#[test]
fn s4_3_joint_election_needs_majorities_of_both() {
    let mut c = cluster(3);
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    c.add_node(n(5), voters(&[1, 2, 3]), |_| {});
    c.propose_conf_change(n(1), &[ConfChange::AddVoter(n(4)), ConfChange::AddVoter(n(5))]).unwrap();
    // Only the joint entry reaches everyone; the leave entry is never appended.
    c.process(n(1));
    c.deliver_all();
    c.process_all();
    assert!(c.node(n(2)).membership().voters.is_joint());
    // Node 2 with votes of 2 and 3 only (2 of 3 old, 2 of 5 new) cannot win.
    c.crash(n(1));
    c.isolate(n(4));
    c.isolate(n(5));
    c.run_ticks(40);
    assert_eq!(c.leaders().iter().filter(|l| **l != n(1)).count(), 0, "no leader without both");
    c.heal();
    let leader = c.run_until_leader(100);
    assert_ne!(leader, n(1));
}

#[test]
fn s4_learner_never_votes_nor_counts() {
    let mut c = cluster(3);
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    c.stabilize();
    assert!(c.node(n(1)).membership().learners.contains(&n(4)));
    assert!(!c.node(n(1)).membership().voters.is_joint(), "learners only: a simple change");
    // The learner gets the log...
    c.propose(n(1), "a").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(n(4)), vec!["a"]);
    // ...but with two voters down, leader plus learner commit nothing.
    c.crash(n(2));
    c.crash(n(3));
    c.propose(n(1), "b").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(n(4)), vec!["a"], "a learner's copy does not count");
    // Nor does it keep the leader alive under Check-Quorum, nor campaign itself.
    c.run_ticks(40);
    assert_ne!(c.node(n(1)).role(), Role::Leader);
    assert_eq!(c.node(n(4)).role(), Role::Follower);
    // A learner's vote requests are refused: it is not a voter.
    let msg = Message {
        from: n(4),
        to: n(1),
        term: Term(50),
        body: MessageBody::Vote { last: EntryId::new(Term(1), LogIndex(9)), transfer: false },
    };
    let err = c.node_mut(n(1)).step(msg).unwrap_err();
    assert_eq!(err, StepError::VoteFromNonVoter { from: n(4) });
}

#[test]
fn s4_promote_learner_once_caught_up() {
    let mut c = cluster(3);
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    c.isolate(n(4));
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    c.stabilize();
    for i in 0..1100 {
        c.propose(n(1), &format!("e{i}")).unwrap();
        if i % 100 == 0 {
            c.stabilize();
        }
    }
    c.stabilize();
    let err = c.node(n(1)).can_promote(n(4)).unwrap_err();
    assert!(matches!(err, ConfChangeError::LearnerNotCaughtUp { .. }), "{err}");
    assert!(matches!(c.node(n(1)).can_promote(n(2)), Err(ConfChangeError::Invalid(_))));
    c.heal();
    c.run_ticks(5);
    c.node(n(1)).can_promote(n(4)).unwrap();
    c.propose_conf_change(n(1), &[ConfChange::Promote(n(4))]).unwrap();
    c.stabilize();
    assert_eq!(incoming(&c, 4), vec![1, 2, 3, 4]);
    assert!(c.node(n(4)).membership().learners.is_empty());
    check_commit_quorums(&c, &voters(&[1, 2, 3]));
}

#[test]
fn s4_one_change_at_a_time() {
    let mut c = cluster(3);
    let joint = c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    let err = c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(5))]).unwrap_err();
    assert_eq!(err, ConfChangeError::ChangeInProgress { index: joint.index });
    c.stabilize();
    c.propose_conf_change(n(1), &[ConfChange::AddVoter(n(5))]).unwrap();
    // Joint now: a new change waits for the leave.
    let err = c.propose_conf_change(n(1), &[ConfChange::Remove(n(4))]).unwrap_err();
    assert!(matches!(err, ConfChangeError::ChangeInProgress { .. }), "{err}");
    let err = c.propose_conf_change(n(2), &[ConfChange::Remove(n(4))]).unwrap_err();
    assert_eq!(err, ConfChangeError::NotLeader { leader_hint: Some(n(1)) });
}

#[test]
fn s4_strict_reconfig_check_counts_active_voters() {
    let mut c = cluster(3);
    c.run_ticks(3);
    let leader = c.node(n(1));
    leader.check_active_quorum(&[ConfChange::AddVoter(n(4))]).unwrap();
    c.crash(n(2));
    c.run_ticks(25); // two Check-Quorum windows without node 2
    let leader = c.node(n(1));
    // {1, 2, 3, 4}: 1 and 3 active, 3 needed.
    assert_eq!(
        leader.check_active_quorum(&[ConfChange::AddVoter(n(4))]),
        Err(ConfChangeError::NotEnoughActiveVoters { active: 2, needed: 3 })
    );
    // {1, 2}: only 1 active, 2 needed.
    assert_eq!(
        leader.check_active_quorum(&[ConfChange::Remove(n(3))]),
        Err(ConfChangeError::NotEnoughActiveVoters { active: 1, needed: 2 })
    );
    // Removing the dead node leaves {1, 3}, both active.
    leader.check_active_quorum(&[ConfChange::Remove(n(2))]).unwrap();
}

#[test]
fn s4_2_2_removed_leader_steps_down_after_the_change_commits() {
    let mut c = cluster(3);
    c.propose_conf_change(n(1), &[ConfChange::Remove(n(1))]).unwrap();
    c.stabilize();
    let old = c.node(n(1));
    assert_eq!(old.role(), Role::Follower, "stepped down once C_new committed");
    assert!(old.is_removed());
    assert!(!old.membership().contains(n(1)));
    // The rest elect a leader among themselves; the old leader never campaigns.
    let leader = c.run_until_leader(100);
    assert_ne!(leader, n(1));
    c.run_ticks(50);
    assert_eq!(c.node(n(1)).role(), Role::Follower);
    c.propose(c.leader().unwrap(), "x").unwrap();
    c.stabilize();
    assert_eq!(incoming(&c, 2), vec![2, 3]);
    check_commit_quorums(&c, &voters(&[1, 2, 3]));
}

#[test]
fn s4_2_3_removed_server_cannot_disrupt() {
    // Without Pre-Vote and Check-Quorum, only the non-member rule keeps the removed node from
    // deposing the leader with its higher term.
    let mut c = Cluster::new(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.campaign(n(1));
    // Node 3 is removed but never hears of the leave entry: it still believes it votes.
    c.propose_conf_change(n(1), &[ConfChange::Remove(n(3))]).unwrap();
    c.process(n(1));
    c.deliver_all();
    c.process_all();
    c.isolate(n(3));
    c.stabilize();
    c.run_ticks(2);
    assert_eq!(incoming(&c, 1), vec![1, 2]);
    assert!(c.node(n(3)).membership().voters.is_joint(), "3 missed the leave");
    let term = c.node(n(1)).term();
    c.heal();
    // It keeps running and ticking: it campaigns, and is refused without effect.
    for _ in 0..60 {
        c.tick(n(3));
        c.stabilize();
    }
    assert!(c.node(n(3)).term() > term, "it did campaign");
    assert_eq!(c.node(n(1)).term(), term, "the leader's term is untouched");
    assert_eq!(c.node(n(1)).role(), Role::Leader);
    c.propose(n(1), "still").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(n(2)), vec!["still"]);
}

#[test]
fn s4_removed_member_learns_it_was_removed() {
    let mut c = cluster(3);
    c.propose_conf_change(n(1), &[ConfChange::Remove(n(3))]).unwrap();
    c.stabilize();
    assert!(c.node(n(3)).is_removed());
    assert!(!c.node(n(2)).is_removed());
    // It keeps running and ticking without disturbing anyone.
    let term = c.node(n(1)).term();
    c.run_ticks(50);
    assert_eq!(c.node(n(1)).term(), term);
    assert_eq!(c.leader(), Some(n(1)));
    assert_eq!(c.node(n(3)).role(), Role::Follower);
}

#[test]
fn s4_replace_a_node_in_one_joint_change() {
    let mut c = cluster(3);
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    c.propose_conf_change(n(1), &[ConfChange::AddVoter(n(4)), ConfChange::Remove(n(3))]).unwrap();
    c.stabilize();
    for id in [1, 2, 4] {
        assert_eq!(incoming(&c, id), vec![1, 2, 4], "{id}");
    }
    assert!(c.node(n(3)).is_removed());
    c.crash(n(3));
    c.propose(n(1), "y").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(n(4)), vec!["y"]);
    check_commit_quorums(&c, &voters(&[1, 2, 3]));
}

#[test]
fn s4_3_leader_crash_in_the_middle_of_a_joint_change() {
    let mut c = cluster(3);
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    let joint = c.propose_conf_change(n(1), &[ConfChange::AddVoter(n(4))]).unwrap();
    // The joint entry reaches everyone and commits, but the leader crashes before anyone
    // learns of the leave entry.
    c.process(n(1));
    c.deliver_all();
    c.process_all();
    c.deliver_all(); // acknowledgements: the joint entry commits, the leave is appended
    c.process(n(1));
    c.drop_where(|_| true);
    c.crash(n(1));
    assert!(c.node(n(2)).membership().voters.is_joint());
    // A new leader (needs both halves) finds the joint entry committed and leaves it.
    let leader = c.run_until_leader(100);
    c.stabilize();
    assert!(c.node(leader).committed() > joint.index);
    for id in [2, 3, 4] {
        assert!(!c.node(n(id)).membership().voters.is_joint(), "{id}");
        assert_eq!(incoming(&c, id), vec![1, 2, 3, 4]);
    }
    // The old leader restarts with the configuration its log holds, then catches up.
    c.restart(n(1));
    assert!(c.node(n(1)).membership().voters.contains(n(4)));
    c.run_ticks(3);
    assert_eq!(incoming(&c, 1), vec![1, 2, 3, 4]);
    assert!(!c.node(n(1)).membership().voters.is_joint());
    check_commit_quorums(&c, &voters(&[1, 2, 3]));
}

#[test]
fn s4_1_restart_recovers_the_configuration() {
    let mut c = cluster(3);
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    c.stabilize();
    c.propose_conf_change(n(1), &[ConfChange::Promote(n(4))]).unwrap();
    c.stabilize();
    let want = c.node(n(2)).membership().clone();
    assert_eq!(c.node(n(2)).log_view().initial_state().membership, want, "written at commit");
    c.crash(n(2));
    c.restart(n(2));
    assert_eq!(c.node(n(2)).membership(), &want);
    // Uncommitted configuration entries are read back from the log, and still roll back.
    c.isolate(n(1));
    c.propose_conf_change(n(1), &[ConfChange::Remove(n(4))]).unwrap();
    c.stabilize();
    c.crash(n(1));
    // The others elect a leader of a later term, whose log wins over node 1's entry.
    let leader = c.run_until_leader(200);
    c.propose(leader, "z").unwrap();
    c.stabilize();
    c.restart(n(1));
    assert!(c.node(n(1)).membership().voters.is_joint(), "the uncommitted entry is in force");
    c.heal();
    c.run_ticks(3);
    assert_eq!(c.node(n(1)).membership(), &want, "rolled back after the restart");
}

#[test]
fn s4_malformed_configuration_entry_is_refused() {
    let mut c = cluster(3);
    let last = EntryId::new(c.node(n(2)).term(), c.node(n(2)).last_index());
    let mut bad =
        ConfigEntry { prev: voters(&[1, 2, 3]), next: voters(&[9]), context: Bytes::new() }
            .encode()
            .to_vec();
    for data in [vec![], vec![7u8], bad.clone(), {
        bad.truncate(5);
        bad
    }] {
        let entry = Entry {
            id: EntryId::new(last.term, last.index.next()),
            kind: EntryKind::Config,
            data: data.into(),
        };
        let msg = Message {
            from: n(1),
            to: n(2),
            term: last.term,
            body: MessageBody::Append { prev: last, entries: vec![entry], commit: LogIndex(0) },
        };
        let err = c.node_mut(n(2)).step(msg).unwrap_err();
        assert!(matches!(err, StepError::Malformed { .. }), "{err}");
    }
    assert_eq!(c.node(n(2)).last_index(), last.index, "nothing appended");
}

/// Random changes (add, remove, promote, leave) under message loss and crashes: at most one
/// leader per term (the testkit asserts it on every step), logs agree, and every commit is
/// held by a quorum of each configuration in force at its index.
#[test]
fn s4_random_changes_under_message_loss_keep_safety() {
    for seed in 0..12u64 {
        let mut c = Cluster::new(3, |_| {});
        c.set_unreliable(0.1, true, seed);
        for id in 4..=6 {
            c.add_node(n(id), voters(&[1, 2, 3]), |_| {});
        }
        let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut crashed: Option<NodeId> = None;
        for step in 0..300 {
            c.run_ticks(1);
            let Some(leader) = c.leader() else { continue };
            let _ = c.propose(leader, &format!("s{seed}-{step}"));
            if next() % 5 == 0 {
                let m = c.node(leader).membership().clone();
                let id = n(1 + next() % 6);
                let change = if m.learners.contains(&id) {
                    if next() % 2 == 0 { ConfChange::Promote(id) } else { ConfChange::Remove(id) }
                } else if m.voters.contains(id) {
                    ConfChange::Remove(id)
                } else if next() % 2 == 0 {
                    ConfChange::AddVoter(id)
                } else {
                    ConfChange::AddLearner(id)
                };
                let _ = c.node_mut(leader).propose_conf_change(&[change], Bytes::new());
            }
            if next() % 40 == 0 {
                match crashed.take() {
                    Some(id) => c.restart(id),
                    None => {
                        let id = n(1 + next() % 6);
                        c.crash(id);
                        crashed = Some(id);
                    }
                }
            }
            c.check_logs_agree();
        }
        if let Some(id) = crashed {
            c.restart(id);
        }
        check_commit_quorums(&c, &voters(&[1, 2, 3]));
    }
}

/// Found by the simulator's membership churn (seed 133 of `tenure-sim --seeds`, before the
/// fix): a new member starts, as the server starts one with the member list `MemberAdd`
/// returned, from the configuration that names it, then replays the leader's log from an
/// older point. Each configuration entry it appends must be judged against that entry's own
/// previous configuration: against the one it started from, an older entry that never named
/// it looked like its removal, and once committed, `is_removed()` told its caller to stop it.
#[test]
fn s4_a_member_that_joins_and_replays_older_configurations_is_never_removed() {
    // One entry per append, so the new member commits each entry before it sees the next.
    let mut c = Cluster::new(3, |cfg| cfg.append_bytes_max = 1);
    c.campaign(n(1));
    assert_eq!(c.leader(), Some(n(1)));
    // An earlier change the new member's log will replay: learner 4 added, then removed.
    c.add_node(n(4), voters(&[1, 2, 3]), |cfg| cfg.append_bytes_max = 1);
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    c.stabilize();
    c.propose_conf_change(n(1), &[ConfChange::Remove(n(4))]).unwrap();
    c.stabilize();
    c.crash(n(4));
    c.propose(n(1), "before 5").unwrap();
    c.stabilize();
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(5))]).unwrap();
    c.stabilize();
    let joined_with = c.node(n(1)).membership().clone();
    assert!(joined_with.learners.contains(&n(5)));
    c.add_node(n(5), joined_with, |cfg| cfg.append_bytes_max = 1);
    // Message by message, so that every state the new member passes through is looked at.
    for _ in 0..1_000 {
        let worked = c.process_all();
        let held = c.hold_where(|_| true);
        let moved = !held.is_empty();
        for m in held {
            c.deliver(m);
            assert!(!c.node(n(5)).is_removed(), "{}", c.describe(n(5)));
        }
        if !worked && !moved {
            c.tick(n(1));
        }
    }
    assert_eq!(c.node(n(5)).committed(), c.node(n(1)).committed());
    assert!(c.node(n(5)).membership().learners.contains(&n(5)));
}

/// Found while building the simulator's membership churn: a learner that never answered the
/// leader (not started yet, or cut off since it was added) has match index 0, which is
/// within `PROMOTE_LAG_ENTRIES_MAX` of any log shorter than that, so it could be promoted
/// while holding nothing: a voter that cannot help commit, as etcd's "in sync with leader"
/// check (a learner's match against the leader's) is there to prevent.
#[test]
fn s4_a_learner_that_never_acknowledged_anything_is_not_promoted() {
    let mut c = cluster(3);
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    c.stabilize();
    // Node 4 was never started: the leader has heard nothing from it.
    let err = c.node(n(1)).can_promote(n(4)).unwrap_err();
    assert!(matches!(err, ConfChangeError::LearnerNotCaughtUp { .. }), "{err}");
    // Once it runs and catches up, it may be.
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    c.run_ticks(5);
    c.stabilize();
    c.node(n(1)).can_promote(n(4)).unwrap();
}

/// Dissertation §4.2.2: a server uses the latest configuration in its log, committed or not,
/// but one that a not yet committed entry removes is still needed until that entry commits,
/// so it keeps campaigning. The case the simulator found (seed 1813 of its first membership
/// runs): in {1, 2}, leader 2 removes 1; the entry leaving the joint configuration reaches 1,
/// then 2 crashes before persisting it. 2 restarts in the joint configuration and needs 1's
/// vote, which 1 refuses (its log is longer); so 1, whose latest configuration {2} does not
/// name it, must campaign itself, or nobody is ever elected.
#[test]
fn s4_2_2_a_voter_removed_by_an_uncommitted_entry_still_campaigns() {
    let mut c = Cluster::new(2, |_| {});
    c.campaign(n(2));
    assert_eq!(c.leader(), Some(n(2)));
    c.propose_conf_change(n(2), &[ConfChange::Remove(n(1))]).unwrap();
    // Run until the leader has the leave entry in memory only.
    let mut steps = 0;
    while c.node(n(2)).membership().voters.is_joint() || c.node(n(2)).membership().contains(n(1)) {
        steps += 1;
        assert!(steps < 100, "the leader never proposed leaving the joint configuration");
        c.process(n(2));
        c.process(n(1));
        c.deliver_all();
    }
    let leave = c.node(n(2)).last_index();
    assert!(c.node(n(2)).log_view().last_index() < leave, "the leave entry is not yet durable");
    // The leader sends it to 1 and crashes before persisting it.
    let rd = c.node_mut(n(2)).ready();
    assert!(rd.entries.iter().any(|e| e.index() == leave));
    let to_1: Vec<Message> = rd.messages.into_iter().filter(|m| m.to == n(1)).collect();
    assert!(
        to_1.iter().any(|m| matches!(&m.body, MessageBody::Append { entries, .. }
            if entries.iter().any(|e| e.index() == leave))),
        "the leave entry is sent to 1 before the leader persists it"
    );
    for m in to_1 {
        c.deliver(m);
    }
    c.process(n(1));
    c.crash(n(2));
    assert_eq!(c.node(n(1)).last_index(), leave);
    assert!(!c.node(n(1)).membership().contains(n(1)), "1's latest configuration drops it");
    assert!(!c.node(n(1)).is_removed(), "the entry removing it is not committed");
    c.restart(n(2));
    assert!(c.node(n(2)).membership().voters.is_joint(), "2 lost the leave entry");
    let term = c.node(n(1)).term();
    // Someone is elected: 1 (the only one whose log is up to date), which commits the leave
    // entry and steps down; then 2 leads alone.
    c.run_until_leader(200);
    assert!(c.node(n(1)).term() > term, "1 campaigned");
    for _ in 0..300 {
        c.run_ticks(1);
        if c.leader() == Some(n(2)) && c.node(n(1)).is_removed() {
            break;
        }
    }
    assert_eq!(c.leader(), Some(n(2)));
    assert!(c.node(n(1)).is_removed());
    assert_eq!(incoming(&c, 2), vec![2]);
    assert!(!c.node(n(2)).membership().voters.is_joint());
    check_commit_quorums(&c, &voters(&[1, 2]));
}

/// `Node::quorum_with`: a follower's message of the current term and the leader make a
/// quorum only when no other configuration can be in force (§4.1: one change at a time, none
/// before an entry of the term commits) and two voters are a majority of it.
#[test]
fn s4_1_leader_and_one_follower_are_a_quorum_only_in_a_settled_small_configuration() {
    let mut c = cluster(3);
    let l = c.node(n(1));
    assert!(l.quorum_with(n(2)) && l.quorum_with(n(3)), "three voters, settled");
    assert!(!l.quorum_with(n(1)), "the leader itself is not a second voter");
    assert!(!l.quorum_with(n(9)), "not a member");
    assert!(!c.node(n(2)).quorum_with(n(1)), "only a leader answers");
    // A configuration entry not yet committed: another configuration may be in force.
    c.add_node(n(4), voters(&[1, 2, 3]), |_| {});
    c.propose_conf_change(n(1), &[ConfChange::AddLearner(n(4))]).unwrap();
    assert!(!c.node(n(1)).quorum_with(n(2)), "a change in flight");
    c.stabilize();
    assert!(c.node(n(1)).quorum_with(n(2)), "the learner added, committed");
    assert!(!c.node(n(1)).quorum_with(n(4)), "a learner does not vote");
    // Joint while the promotion is under way, then four voters: two are not a majority.
    c.propose_conf_change(n(1), &[ConfChange::Promote(n(4))]).unwrap();
    assert!(c.node(n(1)).membership().voters.is_joint());
    assert!(!c.node(n(1)).quorum_with(n(2)), "joint");
    c.stabilize();
    assert_eq!(incoming(&c, 1), vec![1, 2, 3, 4]);
    assert!(!c.node(n(1)).quorum_with(n(2)), "2 of 4 voters");
    assert!(!c.node(n(1)).quorum_with(n(4)), "2 of 4 voters");
}

#[test]
fn s4_1_new_leader_is_no_quorum_with_a_follower_until_an_entry_of_its_term_commits() {
    let mut c = Cluster::new(3, |_| {});
    c.node_mut(n(1)).campaign();
    // Elect 1, but hold its appends: its first entry of the term does not commit.
    let mut held = Vec::new();
    for _ in 0..100 {
        c.process_all();
        held.extend(
            c.hold_where(|m| m.from == n(1) && matches!(m.body, MessageBody::Append { .. })),
        );
        if c.deliver_all() == 0 && c.node(n(1)).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(c.node(n(1)).role(), Role::Leader);
    assert!(!held.is_empty());
    assert!(!c.node(n(1)).quorum_with(n(2)), "nothing of its term committed yet");
    for m in held {
        c.deliver(m);
    }
    c.stabilize();
    assert_eq!(c.leader(), Some(n(1)));
    assert!(c.node(n(1)).quorum_with(n(2)) && c.node(n(1)).quorum_with(n(3)));
    // A leadership transfer under way: the target may be elected at any moment.
    c.node_mut(n(1)).transfer_leadership(n(3)).unwrap();
    assert!(!c.node(n(1)).quorum_with(n(2)), "transfer under way");
}

#[test]
fn s4_1_two_voters_are_a_quorum_of_two_but_not_of_five() {
    let two = cluster(2);
    assert!(two.node(n(1)).quorum_with(n(2)));
    let five = cluster(5);
    assert!(!five.node(n(1)).quorum_with(n(2)));
}
