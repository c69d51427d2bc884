//! One test per protocol rule, named after the rule and the section of the Raft paper
//! ("In Search of an Understandable Consensus Algorithm", extended version) or Ongaro's
//! dissertation that states it. Each test sets up a state, applies one stimulus, and checks
//! the one consequence the rule demands.

use bytes::Bytes;
use tenure_raft::testkit::Cluster;
use tenure_raft::{
    Config, Entry, EntryId, HardState, LogIndex, LogView, MemLog, Membership, Message, MessageBody,
    Node, NodeId, ProposeError, Proposed, ReadId, ReadMode, Ready, RejectHint, Role, SnapshotMeta,
    SnapshotStatus, StepError, Term, TransferError,
};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn three() -> Membership {
    Membership::voters([N1, N2, N3])
}

fn node(id: NodeId, log: MemLog) -> Node<MemLog> {
    Node::new(Config::new(id), log).unwrap()
}

fn node_with(id: NodeId, log: MemLog, f: impl Fn(&mut Config)) -> Node<MemLog> {
    let mut cfg = Config::new(id);
    f(&mut cfg);
    Node::new(cfg, log).unwrap()
}

/// A log holding entries with the given terms at indexes 1.., and a hard state at `term`.
fn log_with(terms: &[u64], term: u64) -> MemLog {
    let mut log = MemLog::new(three());
    for &t in terms {
        log.push(Term(t), "e");
    }
    log.set_hard_state(HardState { term: Term(term), vote: None, commit: LogIndex(0) });
    log
}

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message { from, to, term: Term(term), body }
}

/// Persists and acknowledges a Ready the way a synchronous caller would.
fn persist(n: &mut Node<MemLog>, rd: &Ready) {
    if let Some(hs) = rd.hard_state {
        n.log_view_mut().set_hard_state(hs);
    }
    n.log_view_mut().append(&rd.entries);
    n.on_persisted(rd.number);
}

fn all_messages(rd: &Ready) -> Vec<&Message> {
    rd.messages.iter().chain(&rd.persisted_messages).collect()
}

fn elected_leader_of_three() -> Cluster {
    let mut c = Cluster::new(3, |_| {});
    c.campaign(N1);
    assert_eq!(c.node(N1).role(), Role::Leader);
    c
}

// ----- §5.1 Terms (S1) ----------------------------------------------------------------------

#[test]
fn s1_higher_term_in_any_message_makes_node_adopt_it_raft_5_1() {
    let mut c = elected_leader_of_three();
    let leader_term = c.node(N1).term();
    // A heartbeat response from a node in a later term deposes the leader at once.
    let body = MessageBody::HeartbeatResponse { read_round: 0 };
    c.node_mut(N1).step(msg(N2, N1, leader_term.0 + 5, body)).unwrap();
    assert_eq!(c.node(N1).role(), Role::Follower);
    assert_eq!(c.node(N1).term(), Term(leader_term.0 + 5));
    assert_eq!(c.node(N1).hard_state().vote, None, "a new term clears the vote");
}

#[test]
fn s1_request_with_lower_term_is_rejected_and_reply_carries_newer_term_raft_5_1() {
    let mut n = node(N1, log_with(&[], 5));
    let last = EntryId::default();
    n.step(msg(N2, N1, 3, MessageBody::Vote { last, transfer: false })).unwrap();
    let rd = n.ready();
    let reply = all_messages(&rd)[0].clone();
    assert_eq!(reply.body, MessageBody::VoteResponse { granted: false });
    assert_eq!(reply.term, Term(5), "the stale candidate learns the newer term");
    assert_eq!(n.term(), Term(5));
}

#[test]
fn s1_stale_leader_append_gets_an_answer_that_deposes_it_raft_5_1() {
    let mut n = node(N2, log_with(&[1], 4));
    let append =
        MessageBody::Append { prev: EntryId::default(), entries: vec![], commit: LogIndex(0) };
    n.step(msg(N1, N2, 2, append)).unwrap();
    let rd = n.ready();
    let reply = &all_messages(&rd)[0];
    assert_eq!(reply.to, N1);
    assert_eq!(reply.term, Term(4));
}

#[test]
fn s1_term_and_vote_survive_restart_raft_5_1_figure_2() {
    let mut c = elected_leader_of_three();
    let term = c.node(N2).term();
    c.crash(N2);
    c.restart(N2);
    assert_eq!(c.node(N2).term(), term);
    assert_eq!(c.node(N2).hard_state().vote, Some(N1));
}

// ----- §5.2 Leader election (S2, S4) ----------------------------------------------------------

#[test]
fn s4_election_timeout_is_randomised_in_t_to_2t_raft_5_2() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut n = node_with(N1, log_with(&[], 0), |c| {
            c.seed = seed;
            c.pre_vote = false;
        });
        let mut ticks = 0;
        while n.role() == Role::Follower {
            n.tick();
            ticks += 1;
            assert!(ticks < 20, "timeout past 2T");
        }
        assert!(ticks >= 10, "timeout before T");
        seen.insert(ticks);
    }
    assert_eq!(seen.len(), 10, "every timeout in [T, 2T) occurs: {seen:?}");
}

#[test]
fn s4_candidate_increments_term_and_votes_for_itself_raft_5_2() {
    let mut n = node_with(N1, log_with(&[], 3), |c| c.pre_vote = false);
    n.campaign();
    assert_eq!(n.role(), Role::Candidate);
    assert_eq!(n.term(), Term(4));
    assert_eq!(n.hard_state().vote, Some(N1));
}

#[test]
fn s2_vote_requests_leave_only_after_term_and_vote_are_durable_raft_5_2() {
    let mut n = node_with(N1, log_with(&[], 0), |c| c.pre_vote = false);
    n.campaign();
    let rd = n.ready();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((Term(1), Some(N1))));
    assert!(rd.messages.is_empty(), "nothing may leave before the self-vote is durable");
    assert_eq!(rd.persisted_messages.len(), 2);
}

#[test]
fn commit_only_hard_state_change_needs_no_sync_but_a_vote_does() {
    // A follower holding entries 1..=2 of term 1 learns from a heartbeat that they committed:
    // the hard state changes only in its commit index, which may be written lazily.
    let mut n = node(N2, log_with(&[1, 1], 1));
    n.step(msg(N1, N2, 1, MessageBody::Heartbeat { commit: LogIndex(2), read_round: 0 })).unwrap();
    let rd = n.ready();
    assert_eq!(rd.hard_state.map(|h| h.commit), Some(LogIndex(2)));
    assert!(rd.must_persist() && !rd.must_sync(), "a commit-only change needs no fsync");
    persist(&mut n, &rd);
    // A vote in a new term must be durable before the answer leaves (S2). (A transfer vote,
    // so that N2's fresh contact with the leader does not make it ignore the election.)
    let last = EntryId::new(Term(1), LogIndex(2));
    n.step(msg(N3, N2, 2, MessageBody::Vote { last, transfer: true })).unwrap();
    let rd = n.ready();
    assert!(rd.must_sync(), "a new term and vote need a sync");
}

#[test]
fn s2_vote_is_persisted_before_the_granting_reply_raft_5_2() {
    let mut n = node(N2, log_with(&[], 1));
    let last = EntryId::default();
    n.step(msg(N1, N2, 2, MessageBody::Vote { last, transfer: false })).unwrap();
    let rd = n.ready();
    assert_eq!(rd.hard_state.unwrap().vote, Some(N1));
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages[0].body, MessageBody::VoteResponse { granted: true });
}

#[test]
fn s2_candidate_counts_its_own_vote_only_once_durable_raft_5_2() {
    // A one-node cluster wins with its own vote alone, but only after the vote is durable: a
    // crash before that must not leave a leader of a term the node will reuse.
    let log = MemLog::new(Membership::voters([N1]));
    let mut n = node_with(N1, log, |c| c.pre_vote = false);
    n.campaign();
    assert_eq!(n.role(), Role::Candidate);
    let rd = n.ready();
    assert_eq!(n.role(), Role::Candidate, "handed out, not yet durable");
    persist(&mut n, &rd);
    assert_eq!(n.role(), Role::Leader);
}

#[test]
fn s2_at_most_one_vote_per_term_raft_5_2() {
    let mut n = node(N3, log_with(&[], 1));
    let last = EntryId::default();
    n.step(msg(N1, N3, 2, MessageBody::Vote { last, transfer: false })).unwrap();
    n.step(msg(N2, N3, 2, MessageBody::Vote { last, transfer: false })).unwrap();
    // Asking again for the same candidate is answered the same way (a retry).
    n.step(msg(N1, N3, 2, MessageBody::Vote { last, transfer: false })).unwrap();
    let rd = n.ready();
    let answers: Vec<(NodeId, MessageBody)> =
        all_messages(&rd).iter().map(|m| (m.to, m.body.clone())).collect();
    assert_eq!(
        answers,
        vec![
            (N1, MessageBody::VoteResponse { granted: true }),
            (N2, MessageBody::VoteResponse { granted: false }),
            (N1, MessageBody::VoteResponse { granted: true }),
        ]
    );
}

#[test]
fn s2_candidate_with_majority_becomes_leader_and_minority_does_not_raft_5_2() {
    let mut n = node_with(N1, log_with(&[], 0), |c| c.pre_vote = false);
    n.campaign();
    let rd = n.ready();
    persist(&mut n, &rd);
    n.step(msg(N2, N1, 1, MessageBody::VoteResponse { granted: false })).unwrap();
    assert_eq!(n.role(), Role::Candidate, "1 of 3 is not a majority");
    n.step(msg(N3, N1, 1, MessageBody::VoteResponse { granted: true })).unwrap();
    assert_eq!(n.role(), Role::Leader);
}

#[test]
fn s2_candidate_that_loses_the_majority_returns_to_follower_raft_5_2() {
    let mut n = node_with(N1, log_with(&[], 0), |c| c.pre_vote = false);
    n.campaign();
    n.step(msg(N2, N1, 1, MessageBody::VoteResponse { granted: false })).unwrap();
    n.step(msg(N3, N1, 1, MessageBody::VoteResponse { granted: false })).unwrap();
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(n.term(), Term(1));
}

#[test]
fn s4_candidate_steps_down_on_append_from_leader_of_same_term_raft_5_2() {
    let mut n = node_with(N1, log_with(&[], 0), |c| c.pre_vote = false);
    n.campaign();
    let append =
        MessageBody::Append { prev: EntryId::default(), entries: vec![], commit: LogIndex(0) };
    n.step(msg(N2, N1, 1, append)).unwrap();
    assert_eq!(n.role(), Role::Follower);
    assert_eq!(n.leader(), Some(N2));
}

#[test]
fn s4_split_vote_ends_with_new_election_in_higher_term_raft_5_2() {
    let mut c = Cluster::new(4, |cfg| cfg.pre_vote = false);
    // Two candidates at once, each reaching only one other voter: 2 of 4 is no majority.
    c.partition(&[&[1, 3], &[2, 4]]);
    c.node_mut(N1).campaign();
    c.node_mut(NodeId(2)).campaign();
    c.stabilize();
    c.heal();
    let term = (1..=4).map(|i| c.node(NodeId(i)).term()).max().unwrap();
    assert!(c.leaders().is_empty(), "a split vote elects nobody");
    let leader = c.run_until_leader(100);
    assert!(c.node(leader).term() > term, "the next election is in a higher term");
}

// ----- §5.4.1 Election restriction (S3) ----------------------------------------------------

#[test]
fn s3_vote_refused_to_candidate_with_older_last_term_raft_5_4_1() {
    let mut n = node(N2, log_with(&[1, 2], 2));
    let last = EntryId::new(Term(1), LogIndex(10));
    n.step(msg(N1, N2, 3, MessageBody::Vote { last, transfer: false })).unwrap();
    let rd = n.ready();
    assert_eq!(all_messages(&rd)[0].body, MessageBody::VoteResponse { granted: false });
}

#[test]
fn s3_vote_refused_to_candidate_with_shorter_log_in_same_term_raft_5_4_1() {
    let mut n = node(N2, log_with(&[1, 1, 1], 1));
    let last = EntryId::new(Term(1), LogIndex(2));
    n.step(msg(N1, N2, 2, MessageBody::Vote { last, transfer: false })).unwrap();
    let rd = n.ready();
    assert_eq!(all_messages(&rd)[0].body, MessageBody::VoteResponse { granted: false });
}

#[test]
fn s3_vote_granted_to_candidate_with_newer_last_term_even_if_shorter_raft_5_4_1() {
    let mut n = node(N2, log_with(&[1, 1, 1, 1], 1));
    let last = EntryId::new(Term(2), LogIndex(2));
    n.step(msg(N1, N2, 3, MessageBody::Vote { last, transfer: false })).unwrap();
    let rd = n.ready();
    assert_eq!(all_messages(&rd)[0].body, MessageBody::VoteResponse { granted: true });
}

#[test]
fn s3_node_missing_committed_entries_cannot_become_leader_raft_5_4_1() {
    let mut c = elected_leader_of_three();
    c.isolate(N3);
    c.propose(N1, "a").unwrap();
    c.stabilize();
    c.heal();
    // n3 lacks the committed entry "a": both others refuse it.
    c.crash(N1);
    c.node_mut(N3).campaign();
    c.stabilize();
    assert_ne!(c.node(N3).role(), Role::Leader);
    let leader = c.run_until_leader(200);
    assert_eq!(leader, N2);
}

// ----- §5.3 Log replication (S5) -------------------------------------------------------------

#[test]
fn s5_leader_appends_noop_at_start_of_term_raft_5_4_2() {
    let c = elected_leader_of_three();
    let log = c.node(N2).log_view().all_entries();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, tenure_raft::EntryKind::Noop);
    assert_eq!(log[0].id, EntryId::new(Term(1), LogIndex(1)));
}

#[test]
fn s5_follower_rejects_append_whose_prev_does_not_match_raft_5_3() {
    let mut n = node(N2, log_with(&[1, 1], 2));
    let prev = EntryId::new(Term(2), LogIndex(2));
    let entries = vec![Entry::new(Term(2), LogIndex(3), Bytes::from_static(b"x"))];
    n.step(msg(N1, N2, 2, MessageBody::Append { prev, entries, commit: LogIndex(0) })).unwrap();
    assert_eq!(n.last_index(), LogIndex(2), "nothing appended");
    let rd = n.ready();
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::AppendResponse { result: Err(_) }
    ));
}

#[test]
fn s5_follower_truncates_conflicting_suffix_and_appends_raft_5_3() {
    let mut n = node(N2, log_with(&[1, 1, 1, 1], 2));
    let prev = EntryId::new(Term(1), LogIndex(2));
    let entries = vec![Entry::new(Term(2), LogIndex(3), Bytes::from_static(b"new"))];
    n.step(msg(N1, N2, 2, MessageBody::Append { prev, entries, commit: LogIndex(0) })).unwrap();
    assert_eq!(n.last_index(), LogIndex(3));
    assert_eq!(n.entry_term(LogIndex(3)), Some(Term(2)));
    let rd = n.ready();
    persist(&mut n, &rd);
    let log = n.log_view().all_entries();
    assert_eq!(log.len(), 3, "index 4 of the old term is gone from the durable log too");
}

#[test]
fn s5_follower_keeps_entries_after_a_matching_duplicate_append_raft_5_3() {
    let mut n = node(N2, log_with(&[1, 1, 1], 1));
    let prev = EntryId::new(Term(1), LogIndex(1));
    let entries = vec![Entry::new(Term(1), LogIndex(2), Bytes::from_static(b"e"))];
    n.step(msg(N1, N2, 1, MessageBody::Append { prev, entries, commit: LogIndex(0) })).unwrap();
    assert_eq!(n.last_index(), LogIndex(3), "a late append must not truncate newer entries");
}

#[test]
fn s5_append_acknowledgements_leave_only_after_persistence_raft_5_3() {
    let mut n = node(N2, log_with(&[], 1));
    let entries = vec![Entry::new(Term(1), LogIndex(1), Bytes::from_static(b"x"))];
    n.step(msg(
        N1,
        N2,
        1,
        MessageBody::Append { prev: EntryId::default(), entries, commit: LogIndex(0) },
    ))
    .unwrap();
    let rd = n.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.messages.is_empty());
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::AppendResponse { result: Ok(LogIndex(1)) }
    ));
}

#[test]
fn s5_followers_learn_commit_index_from_heartbeats_raft_5_3() {
    let mut c = Cluster::new(3, |cfg| cfg.commit_broadcast = false);
    c.campaign(N1);
    c.propose(N1, "x").unwrap();
    c.stabilize();
    assert_eq!(c.node(N1).committed(), LogIndex(2));
    assert_eq!(c.node(N2).committed(), LogIndex(1), "without broadcast, not yet");
    c.tick(N1); // heartbeat
    c.stabilize();
    assert_eq!(c.node(N2).committed(), LogIndex(2));
    assert_eq!(c.applied_data(N2), vec!["x"]);
}

#[test]
fn s5_leader_counts_its_own_entry_only_once_durable_dissertation_10_2_1() {
    let mut c = elected_leader_of_three();
    c.crash(N3);
    c.propose(N1, "x").unwrap();
    // Hand the entry out but do not acknowledge it on the leader.
    let rd = c.node_mut(N1).ready();
    assert_eq!(rd.entries.len(), 1);
    let append = rd.messages.iter().find(|m| m.to == N2).expect("append leaves before the write");
    let append = append.clone();
    c.node_mut(N2).step(append).unwrap();
    let rd2 = c.node_mut(N2).ready();
    persist(c.node_mut(N2), &rd2);
    for m in rd2.persisted_messages {
        c.node_mut(N1).step(m).unwrap();
    }
    assert_eq!(c.node(N1).committed(), LogIndex(1), "n2 alone is not a majority of 3");
    c.node_mut(N1).log_view_mut().append(&rd.entries);
    c.node_mut(N1).on_persisted(rd.number);
    assert_eq!(c.node(N1).committed(), LogIndex(2), "n1's own durable copy completes the majority");
}

#[test]
fn s5_follower_forwards_proposals_to_leader_or_refuses_with_hint() {
    let mut c = elected_leader_of_three();
    assert_eq!(c.propose(N2, "x"), Ok(Proposed::Forwarded { to: N1 }));
    c.stabilize();
    assert_eq!(c.applied_data(N3), vec!["x"]);

    let mut c = Cluster::new(3, |cfg| cfg.forward_proposals = false);
    c.campaign(N1);
    assert_eq!(c.propose(N2, "x"), Err(ProposeError::NotLeader { leader_hint: Some(N1) }));
}

#[test]
fn s5_entries_are_applied_in_log_order_on_every_node_raft_5_3() {
    let mut c = elected_leader_of_three();
    for i in 0..20 {
        c.propose(N1, &format!("v{i}")).unwrap();
    }
    c.stabilize();
    let want: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    for id in [N1, N2, N3] {
        assert_eq!(c.applied_data(id), want);
    }
}

// ----- §5.4.2 Committing entries from previous terms (Figure 8) -----------------------------

#[test]
fn leader_never_commits_old_term_entry_by_counting_replicas_raft_5_4_2_figure_8() {
    // n1 leads term 2 with an entry of term 1 at index 2 that only n1 holds.
    let mut log1 = log_with(&[1, 1], 1);
    log1.set_hard_state(HardState { term: Term(1), vote: None, commit: LogIndex(1) });
    let mut log2 = log_with(&[1], 1);
    log2.set_hard_state(HardState { term: Term(1), vote: None, commit: LogIndex(1) });
    let mut n = node_with(N1, log1, |c| c.pre_vote = false);
    n.campaign(); // term 2
    let rd = n.ready();
    persist(&mut n, &rd);
    n.step(msg(N2, N1, 2, MessageBody::VoteResponse { granted: true })).unwrap();
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready();
    persist(&mut n, &rd);
    // n2 acknowledges index 2 (the old-term entry) but not yet the no-op at 3.
    n.step(msg(N2, N1, 2, MessageBody::AppendResponse { result: Ok(LogIndex(2)) })).unwrap();
    assert_eq!(n.committed(), LogIndex(1), "a majority holds 1/2, but it is of an older term");
    n.step(msg(N2, N1, 2, MessageBody::AppendResponse { result: Ok(LogIndex(3)) })).unwrap();
    assert_eq!(n.committed(), LogIndex(3), "committing 2/3 commits 1/2 with it");
    drop(log2);
}

// ----- Fast log backtracking (§5.3, end) ---------------------------------------------------

#[test]
fn conflict_hint_repairs_50_divergent_entries_in_a_few_round_trips_raft_5_3() {
    // n2 holds 60 entries of term 2 that the term-3 leader never had; the leader holds 60
    // entries of term 3 after a common prefix of 5.
    let mut leader_log = log_with(&[1; 5], 3);
    let mut follower_log = log_with(&[1; 5], 2);
    for _ in 0..60 {
        leader_log.push(Term(3), "l");
        follower_log.push(Term(2), "f");
    }
    let mut leader = node_with(N1, leader_log, |c| c.pre_vote = false);
    let mut follower = node(N2, follower_log);
    leader.campaign();
    let rd = leader.ready();
    persist(&mut leader, &rd);
    leader.step(msg(N3, N1, 4, MessageBody::VoteResponse { granted: true })).unwrap();
    assert_eq!(leader.role(), Role::Leader);
    let mut round_trips = 0;
    loop {
        let rd = leader.ready();
        persist(&mut leader, &rd);
        let to_n2: Vec<Message> =
            all_messages(&rd).into_iter().filter(|m| m.to == N2).cloned().collect();
        if to_n2.is_empty() {
            break;
        }
        round_trips += 1;
        for m in to_n2 {
            follower.step(m).unwrap();
        }
        let frd = follower.ready();
        persist(&mut follower, &frd);
        for m in all_messages(&frd) {
            leader.step(m.clone()).unwrap();
        }
        if follower.last_index() == leader.last_index()
            && follower.entry_term(leader.last_index()) == Some(Term(4))
        {
            break;
        }
        assert!(round_trips < 10, "too many round trips");
    }
    assert!(round_trips <= 3, "took {round_trips} round trips");
    assert_eq!(follower.entry_term(LogIndex(6)), Some(Term(3)));
}

// ----- Flow control ---------------------------------------------------------------------------

#[test]
fn replicate_window_limits_messages_in_flight() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.inflight_appends_max = 2;
        cfg.append_bytes_max = 1;
    });
    c.campaign(N1);
    for i in 0..10 {
        c.propose(N1, &format!("{i}")).unwrap();
    }
    c.process(N1);
    let to_n2 = c.in_flight().iter().filter(|m| m.to == N2).count();
    assert_eq!(to_n2, 2, "one entry per message, two messages in flight");
    c.stabilize();
    assert_eq!(c.applied(N2).len(), 10, "the window refills as acknowledgements arrive");
}

#[test]
fn replicate_window_limits_bytes_in_flight() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.inflight_appends_max = 100;
        cfg.append_bytes_max = 100;
        cfg.inflight_bytes_max = 250;
    });
    c.campaign(N1);
    for _ in 0..10 {
        c.node_mut(N1).propose(Bytes::from(vec![7u8; 76])).unwrap(); // 100 bytes each
    }
    c.process(N1);
    let msgs = c.in_flight().iter().filter(|m| m.to == N2).count();
    assert_eq!(msgs, 3, "stops once 250 bytes (three entries of 100) are in flight");
    c.stabilize();
    assert_eq!(c.applied(N2).len(), 10);
}

#[test]
fn appends_are_batched_up_to_the_byte_limit() {
    let mut c = Cluster::new(3, |cfg| cfg.append_bytes_max = 1000);
    c.campaign(N1);
    for _ in 0..30 {
        c.node_mut(N1).propose(Bytes::from(vec![1u8; 76])).unwrap();
    }
    let rd = c.node_mut(N1).ready();
    let sizes: Vec<usize> = rd
        .messages
        .iter()
        .filter(|m| m.to == N2)
        .map(|m| match &m.body {
            MessageBody::Append { entries, .. } => entries.len(),
            _ => 0,
        })
        .collect();
    assert_eq!(sizes, vec![10, 10, 10], "30 entries of 100 bytes in messages of 1000 bytes");
}

#[test]
fn uncommitted_bytes_cap_refuses_proposals_instead_of_growing() {
    let mut c = Cluster::new(3, |cfg| cfg.uncommitted_bytes_max = 500);
    c.campaign(N1);
    c.isolate(N1);
    let mut accepted = 0;
    let err = loop {
        match c.node_mut(N1).propose(Bytes::from(vec![0u8; 76])) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(accepted, 5);
    assert!(matches!(err, ProposeError::UncommittedBytesExceeded { max_bytes: 500, .. }));
    c.heal();
    c.stabilize();
    c.tick(N1);
    c.stabilize();
    assert!(c.node_mut(N1).propose(Bytes::from(vec![0u8; 76])).is_ok(), "commits free room");
}

// ----- Pre-Vote and Check-Quorum (S9) -----------------------------------------------------

#[test]
fn s9_prevote_does_not_raise_the_term_dissertation_9_6() {
    let mut c = elected_leader_of_three();
    c.isolate(N3);
    c.run_ticks(100);
    assert_eq!(c.node(N3).term(), Term(1), "an isolated node keeps its term");
    assert_eq!(c.node(N3).role(), Role::PreCandidate);
}

#[test]
fn s9_follower_hearing_from_leader_ignores_vote_requests_dissertation_4_2_3() {
    let mut c = elected_leader_of_three();
    let last = c.node(N2).status().last;
    // n3 asks n2 for a vote in a higher term while n2 hears from n1.
    c.node_mut(N2).step(msg(N3, N2, 5, MessageBody::Vote { last, transfer: false })).unwrap();
    assert_eq!(c.node(N2).term(), Term(1), "the request is ignored: no term change");
    assert!(!c.node(N2).has_ready());
}

#[test]
fn s9_check_quorum_leader_steps_down_without_a_majority_dissertation_6_2() {
    let mut c = elected_leader_of_three();
    c.isolate(N1);
    for _ in 0..20 {
        c.tick(N1);
    }
    assert_eq!(c.node(N1).role(), Role::Follower);
}

#[test]
fn check_quorum_leader_with_a_majority_stays() {
    let mut c = elected_leader_of_three();
    c.isolate(N3);
    c.run_ticks(50);
    assert_eq!(c.node(N1).role(), Role::Leader);
}

// ----- Linearizable reads (S12, dissertation §6.4) ----------------------------------------

#[test]
fn s12_read_index_waits_until_leader_commits_in_its_term_dissertation_6_4() {
    let mut c = Cluster::new(3, |cfg| cfg.pre_vote = false);
    c.node_mut(N1).campaign();
    // Win the election without letting the no-op commit.
    for _ in 0..4 {
        c.process_all();
        c.drop_where(|m| matches!(m.body, MessageBody::Append { .. }));
        c.deliver_all();
    }
    assert_eq!(c.node(N1).role(), Role::Leader);
    c.node_mut(N1).read_index(ReadId(7)).unwrap();
    c.process_all();
    assert!(c.reads(N1).is_empty(), "no read before the no-op commits");
    c.stabilize();
    c.tick(N1);
    c.stabilize();
    assert_eq!(c.reads(N1).len(), 1);
    assert_eq!(c.reads(N1)[0].index, LogIndex(1));
}

#[test]
fn s12_many_reads_share_one_heartbeat_round_dissertation_6_4() {
    let mut c = elected_leader_of_three();
    let before = c.delivered_count;
    for i in 0..100 {
        c.node_mut(N1).read_index(ReadId(i)).unwrap();
    }
    c.stabilize();
    assert_eq!(c.reads(N1).len(), 100);
    assert_eq!(c.delivered_count - before, 4, "one heartbeat and one answer per follower");
}

#[test]
fn s12_follower_read_asks_the_leader_for_the_index() {
    let mut c = elected_leader_of_three();
    c.propose(N1, "x").unwrap();
    c.stabilize();
    c.node_mut(N2).read_index(ReadId(1)).unwrap();
    c.stabilize();
    assert_eq!(c.reads(N2), &[tenure_raft::ReadState { id: ReadId(1), index: LogIndex(2) }]);
}

#[test]
fn s12_deposed_leader_cannot_confirm_a_read() {
    let mut c = elected_leader_of_three();
    c.isolate(N1);
    c.node_mut(N1).read_index(ReadId(1)).unwrap();
    c.stabilize();
    c.run_ticks(30); // n2 or n3 takes over; n1 steps down by Check-Quorum
    assert!(c.reads(N1).is_empty());
    assert_eq!(c.dropped_reads(N1), &[ReadId(1)], "the read is failed, not answered stale");
}

#[test]
fn s12_lease_read_is_answered_without_a_round_while_lease_holds() {
    let mut c = Cluster::new(3, |cfg| cfg.read_mode = ReadMode::Lease { clock_drift_ticks: 2 });
    // Freshly started nodes refuse votes for one election timeout (they may have promised a
    // lease before a crash), so the first leader emerges from the timers.
    let leader = c.run_until_leader(100);
    c.run_ticks(1); // a heartbeat round confirms the lease
    let before = c.delivered_count;
    c.node_mut(leader).read_index(ReadId(1)).unwrap();
    c.stabilize();
    assert_eq!(c.reads(leader).len(), 1);
    assert_eq!(c.delivered_count, before, "no messages needed");
}

#[test]
fn s12_lease_expires_when_the_leader_is_cut_off() {
    let mut c = Cluster::new(3, |cfg| cfg.read_mode = ReadMode::Lease { clock_drift_ticks: 2 });
    let leader = c.run_until_leader(100);
    c.run_ticks(1);
    c.isolate(leader);
    for _ in 0..8 {
        c.tick(leader);
    }
    c.node_mut(leader).read_index(ReadId(1)).unwrap();
    c.stabilize();
    assert!(c.reads(leader).is_empty(), "lease of 10-2 ticks ran out; a round is needed and fails");
}

#[test]
fn lease_reads_require_check_quorum() {
    let mut cfg = Config::new(N1);
    cfg.check_quorum = false;
    cfg.read_mode = ReadMode::Lease { clock_drift_ticks: 1 };
    assert!(Node::new(cfg, MemLog::new(three())).is_err());
}

// ----- Leadership transfer (dissertation §3.10) --------------------------------------------

#[test]
fn transfer_catches_up_the_target_then_it_campaigns_at_once_dissertation_3_10() {
    let mut c = elected_leader_of_three();
    c.isolate(N3);
    c.propose(N1, "x").unwrap();
    c.stabilize();
    c.heal();
    c.node_mut(N1).transfer_leadership(N3).unwrap();
    c.stabilize();
    c.tick(N1);
    c.stabilize();
    assert_eq!(c.node(N3).role(), Role::Leader);
    assert_eq!(c.node(N1).role(), Role::Follower);
    assert_eq!(c.node(N3).term(), Term(2));
    assert_eq!(c.applied_data(N3), vec!["x"]);
}

#[test]
fn transfer_refuses_proposals_while_in_progress() {
    let mut c = elected_leader_of_three();
    c.isolate(N3);
    c.node_mut(N1).transfer_leadership(N3).unwrap();
    assert_eq!(c.propose(N1, "x"), Err(ProposeError::TransferInProgress { to: N3 }));
}

#[test]
fn transfer_is_abandoned_after_an_election_timeout() {
    let mut c = elected_leader_of_three();
    c.isolate(N3);
    c.node_mut(N1).transfer_leadership(N3).unwrap();
    for _ in 0..10 {
        c.tick(N1);
        c.stabilize();
    }
    assert_eq!(c.node(N1).role(), Role::Leader);
    assert!(c.propose(N1, "x").is_ok(), "proposals are accepted again");
}

/// Dissertation §3.10 with §6.4.1: once the leader sends `TimeoutNow`, its target may win an
/// election at once, without waiting out the leader's read lease (a transfer's votes are
/// granted even by voters that heard from the leader within the election timeout). So the
/// lease ends there: a read asked for afterwards needs a round, never the lease.
#[test]
fn transfer_ends_the_read_lease_when_timeout_now_is_sent_dissertation_3_10() {
    let mut c = Cluster::new(3, |cfg| cfg.read_mode = ReadMode::Lease { clock_drift_ticks: 2 });
    let leader = c.run_until_leader(100);
    c.run_ticks(1); // a heartbeat round confirms the lease
    let target = if leader == N3 { N2 } else { N3 };
    c.node_mut(leader).read_index(ReadId(1)).unwrap();
    assert_eq!(c.node_mut(leader).ready().read_states.len(), 1, "the lease answers at once");
    // The target is caught up, so TimeoutNow goes out with the transfer's start.
    c.node_mut(leader).transfer_leadership(target).unwrap();
    c.node_mut(leader).read_index(ReadId(2)).unwrap();
    let ready = c.node_mut(leader).ready();
    assert!(ready.messages.iter().any(|m| m.to == target && m.body == MessageBody::TimeoutNow));
    assert!(
        ready.read_states.is_empty(),
        "a read after TimeoutNow was answered from the lease: {:?}",
        ready.read_states
    );
}

#[test]
fn transfer_errors_name_the_problem() {
    let mut c = elected_leader_of_three();
    assert_eq!(
        c.node_mut(N2).transfer_leadership(N3),
        Err(TransferError::NotLeader { leader_hint: Some(N1) })
    );
    assert_eq!(
        c.node_mut(N1).transfer_leadership(NodeId(9)),
        Err(TransferError::NotAVoter(NodeId(9)))
    );
}

// ----- Snapshots (Raft §7, Figure 13; S11) ------------------------------------------------------

fn is_snapshot(m: &Message) -> bool {
    matches!(m.body, MessageBody::Snapshot { .. })
}

fn snapshot_msg(from: NodeId, to: NodeId, term: u64, last: EntryId) -> Message {
    let meta = SnapshotMeta { last_included: last, membership: three() };
    msg(from, to, term, MessageBody::Snapshot { meta })
}

/// n1 leads term 1 and has committed and compacted `a` and `b` (through 1/3) while n3 was cut
/// off; n3 holds only 1/1.
fn leader_compacted_past_n3() -> Cluster {
    let mut c = elected_leader_of_three();
    c.isolate(N3);
    c.propose(N1, "a").unwrap();
    c.propose(N1, "b").unwrap();
    c.stabilize();
    c.compact(N1, LogIndex(3));
    c.heal();
    c
}

/// From a heartbeat on, runs the cluster until n1's Snapshot message to n3 leaves, and takes
/// it out of the network (a slow transfer the test delivers or fails later).
fn run_until_snapshot_sent(c: &mut Cluster) -> Message {
    c.tick(N1);
    for _ in 0..100 {
        c.process_all();
        if let Some(m) = c.hold_where(is_snapshot).pop() {
            return m;
        }
        c.deliver_all();
    }
    panic!("no snapshot was sent");
}

#[test]
fn s11_leader_sends_snapshot_when_follower_needs_compacted_entries_raft_7() {
    let mut c = leader_compacted_past_n3();
    let m = run_until_snapshot_sent(&mut c);
    assert_eq!((m.from, m.to, m.term), (N1, N3, Term(1)));
    let MessageBody::Snapshot { meta } = &m.body else { unreachable!() };
    assert_eq!(meta.last_included, EntryId::new(Term(1), LogIndex(3)));
    assert_eq!(Some(meta.clone()), c.node(N1).log_view().snapshot(), "the leader's snapshot");
    c.deliver(m);
    c.stabilize();
    assert_eq!(c.node(N3).status().first_index, LogIndex(4), "n3's log starts after it");
    assert_eq!(c.applied_data(N3), vec!["a", "b"]);
    assert_eq!(c.node(N1).status().matched[&N3], LogIndex(3));
}

#[test]
fn s11_leader_sends_snapshot_when_follower_disagrees_at_its_snapshot_point_raft_7() {
    // n2's log holds term-2 entries through 2/5, compacted through 2/4. It wins term 3, so it
    // probes n3 at its last entry 2/5. n3 holds an old term-1 suffix through 1/5: its rejection
    // hints at 1/5. The last entry of n2 at a term <= 1 would be below its snapshot point,
    // whose term 2 is newer: nothing n2 still holds can match, and only the snapshot helps.
    let mut log = log_with(&[1, 2, 2, 2, 2], 2);
    log.compact(LogIndex(4));
    let mut n = node_with(N2, log, |c| c.pre_vote = false);
    n.campaign();
    let rd = n.ready();
    persist(&mut n, &rd);
    n.step(msg(N1, N2, 3, MessageBody::VoteResponse { granted: true })).unwrap();
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready();
    persist(&mut n, &rd);
    let reject = RejectHint {
        rejected: LogIndex(5),
        hint: EntryId::new(Term(1), LogIndex(5)),
        last_index: LogIndex(5),
    };
    n.step(msg(N3, N2, 3, MessageBody::AppendResponse { result: Err(reject) })).unwrap();
    let rd = n.ready();
    let to_n3: Vec<&Message> = all_messages(&rd).into_iter().filter(|m| m.to == N3).collect();
    assert_eq!(to_n3.len(), 1, "{to_n3:?}");
    let MessageBody::Snapshot { meta } = &to_n3[0].body else {
        panic!("expected a snapshot, got {:?}", to_n3[0]);
    };
    assert_eq!(meta.last_included, EntryId::new(Term(2), LogIndex(4)));
}

#[test]
fn s11_one_snapshot_in_flight_no_appends_but_heartbeats_continue_raft_7() {
    let mut c = leader_compacted_past_n3();
    let held = run_until_snapshot_sent(&mut c);
    c.stabilize();
    let term = c.node(N3).term();
    // While the transfer is slow, n1 keeps proposing and heartbeating for three election
    // timeouts: n3 gets heartbeats and no appends, no second snapshot, and never campaigns.
    let mut heartbeats = 0;
    for i in 0..30 {
        if i % 5 == 0 {
            c.propose(N1, &format!("x{i}")).unwrap();
        }
        for id in c.ids() {
            c.tick(id);
        }
        c.process_all();
        for m in c.in_flight().iter().filter(|m| m.to == N3) {
            match &m.body {
                MessageBody::Heartbeat { .. } => heartbeats += 1,
                other => panic!("only heartbeats go to n3 while it gets a snapshot: {other:?}"),
            }
        }
        c.stabilize();
    }
    assert!(heartbeats >= 25, "heartbeats continue: {heartbeats}");
    assert_eq!(c.node(N3).role(), Role::Follower);
    assert_eq!(c.node(N3).leader(), Some(N1));
    assert_eq!(c.node(N3).term(), term, "a follower receiving a snapshot does not time out");
    // The transfer completes: n3 installs it and catches up by append.
    c.deliver(held);
    c.stabilize();
    c.propose(N1, "last").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(N3), c.applied_data(N1));
    assert_eq!(c.applied_data(N3).len(), 9);
}

#[test]
fn s11_follower_ignores_snapshot_at_or_below_its_commit_index_but_acks_raft_7() {
    for snap_index in [2, 3] {
        let mut log = log_with(&[1, 1, 1, 1], 1);
        log.set_hard_state(HardState { term: Term(1), vote: None, commit: LogIndex(3) });
        let mut n = node(N2, log);
        let last = EntryId::new(Term(1), LogIndex(snap_index));
        n.step(snapshot_msg(N1, N2, 1, last)).unwrap();
        let rd = n.ready();
        assert_eq!(rd.snapshot, None, "nothing to install");
        assert_eq!(n.last_index(), LogIndex(4), "the log is kept");
        assert_eq!(
            rd.persisted_messages[0].body,
            MessageBody::AppendResponse { result: Ok(LogIndex(3)) },
            "acknowledged with the commit index"
        );
    }
}

#[test]
fn s11_follower_keeps_log_holding_the_snapshot_last_entry_raft_7_figure_13_step_6() {
    let mut log = log_with(&[1, 1, 1, 1, 1], 1);
    log.set_hard_state(HardState { term: Term(1), vote: None, commit: LogIndex(1) });
    let mut n = node(N2, log);
    n.step(snapshot_msg(N1, N2, 1, EntryId::new(Term(1), LogIndex(3)))).unwrap();
    let rd = n.ready();
    assert_eq!(rd.snapshot, None, "the entries it covers are already here");
    assert_eq!(n.committed(), LogIndex(3), "but they are now known committed");
    assert_eq!(n.last_index(), LogIndex(5), "entries after the snapshot are retained");
    let applied: Vec<LogIndex> = rd.committed_entries.iter().map(|e| e.index()).collect();
    // Nothing was applied at start (Config::applied is 0): 1..=3 are applied from the log.
    assert_eq!(applied, vec![LogIndex(1), LogIndex(2), LogIndex(3)], "applied from the log");
    assert_eq!(
        rd.persisted_messages[0].body,
        MessageBody::AppendResponse { result: Ok(LogIndex(3)) }
    );
}

#[test]
fn s11_follower_discards_log_and_installs_snapshot_otherwise_raft_7_figure_13_steps_7_8() {
    // Conflicting entry at the snapshot index (and a suffix after it), or a log too short.
    for (terms, snap) in [(&[1, 1, 2, 2][..], (3, 3)), (&[1][..], (1, 5))] {
        let mut n = node(N2, log_with(terms, 3));
        let last = EntryId::new(Term(snap.0), LogIndex(snap.1));
        n.step(snapshot_msg(N1, N2, 3, last)).unwrap();
        assert_eq!(n.last_index(), last.index, "the whole log is replaced");
        assert_eq!(n.committed(), last.index);
        let rd = n.ready();
        let meta = rd.snapshot.clone().expect("the caller must install the snapshot");
        assert_eq!(meta.last_included, last);
        assert!(rd.committed_entries.is_empty(), "installing counts as applying through it");
        n.log_view_mut().reset_to_snapshot(meta.last_included, meta.membership);
        persist(&mut n, &rd);
        assert_eq!(n.status().applied, last.index);
        assert_eq!(n.status().first_index, last.index.next());
        assert!(n.log_view().all_entries().is_empty(), "the conflicting suffix is gone");
        assert_eq!(n.entry_term(last.index), Some(last.term));
    }
}

#[test]
fn s11_snapshot_from_a_stale_term_is_rejected_raft_5_1_and_7() {
    let mut n = node(N2, log_with(&[1], 3));
    n.step(snapshot_msg(N1, N2, 2, EntryId::new(Term(2), LogIndex(5)))).unwrap();
    assert_eq!(n.last_index(), LogIndex(1), "nothing installed");
    assert_eq!(n.committed(), LogIndex(0));
    let rd = n.ready();
    assert_eq!(rd.snapshot, None);
    let replies = all_messages(&rd);
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].to, replies[0].term), (N1, Term(3)), "tells the sender of term 3");
    assert!(matches!(replies[0].body, MessageBody::HeartbeatResponse { .. }));
}

#[test]
fn s11_failed_snapshot_returns_to_probe_and_next_heartbeat_answer_resends_raft_7() {
    let mut c = leader_compacted_past_n3();
    let held = run_until_snapshot_sent(&mut c);
    c.stabilize();
    c.node_mut(N1).report_snapshot(N3, SnapshotStatus::Failed);
    drop(held);
    // Nothing is sent at once: the probe waits for the next heartbeat answer...
    c.process_all();
    assert!(!c.in_flight().iter().any(|m| m.to == N3), "{:?}", c.in_flight());
    // ...which is answered with a new snapshot (the entries are still compacted).
    let again = run_until_snapshot_sent(&mut c);
    assert_eq!(again.to, N3);
    c.deliver(again);
    c.stabilize();
    assert_eq!(c.applied_data(N3), vec!["a", "b"]);
}

#[test]
fn s11_snapshot_ack_leaves_only_after_the_install_is_persisted_raft_7() {
    let mut n = node(N2, log_with(&[1], 1));
    let last = EntryId::new(Term(1), LogIndex(4));
    n.step(snapshot_msg(N1, N2, 1, last)).unwrap();
    let rd = n.ready();
    assert!(rd.snapshot.is_some() && rd.must_persist());
    assert!(rd.messages.is_empty(), "no acknowledgement before the install is durable");
    assert_eq!(
        rd.persisted_messages.iter().map(|m| &m.body).collect::<Vec<_>>(),
        vec![&MessageBody::AppendResponse { result: Ok(LogIndex(4)) }]
    );
    // A later Ready handed out before the install is acknowledged does not repeat it.
    n.step(msg(N1, N2, 1, MessageBody::Heartbeat { commit: LogIndex(4), read_round: 1 })).unwrap();
    let rd2 = n.ready();
    assert!(rd2.snapshot.is_none());
    assert!(
        all_messages(&rd2).iter().all(|m| !matches!(m.body, MessageBody::AppendResponse { .. }))
    );
}

// ----- Bad input -------------------------------------------------------------------------------

#[test]
fn misaddressed_and_self_sent_messages_are_errors_not_panics() {
    let mut n = node(N1, log_with(&[], 0));
    let body = MessageBody::TimeoutNow;
    assert_eq!(
        n.step(msg(N2, N3, 1, body.clone())),
        Err(StepError::WrongRecipient { to: N3, me: N1 })
    );
    assert_eq!(n.step(msg(N1, N1, 1, body)), Err(StepError::FromSelf));
}

#[test]
fn an_application_message_stepped_into_the_core_is_refused_and_changes_nothing() {
    let mut n = node(N1, log_with(&[], 0));
    let before = n.soft_state();
    // Even from a higher term: the core never adopts the term of a message that is not its.
    let app = MessageBody::App { data: Bytes::from_static(b"lease") };
    assert_eq!(n.step(msg(N2, N1, 9, app)), Err(StepError::NotForTheCore { from: N2 }));
    assert_eq!(n.soft_state(), before);
    assert!(!n.has_ready());
}

#[test]
fn malformed_append_with_gaps_is_dropped() {
    let mut n = node(N2, log_with(&[], 1));
    let entries = vec![
        Entry::new(Term(1), LogIndex(1), Bytes::new()),
        Entry::new(Term(1), LogIndex(5), Bytes::new()),
    ];
    let err = n
        .step(msg(
            N1,
            N2,
            1,
            MessageBody::Append { prev: EntryId::default(), entries, commit: LogIndex(9) },
        ))
        .unwrap_err();
    assert!(matches!(err, StepError::Malformed { from: N1, .. }), "{err}");
    assert_eq!(n.last_index(), LogIndex(0));
    assert_eq!(n.committed(), LogIndex(0));
}

#[test]
fn restart_with_inconsistent_state_is_a_config_error() {
    let mut log = log_with(&[1], 1);
    log.set_hard_state(HardState { term: Term(1), vote: None, commit: LogIndex(5) });
    assert!(Node::new(Config::new(N1), log).is_err());
}
