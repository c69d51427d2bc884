//! A peer's message can never panic a node. Every message is checked against the rules no
//! correct peer breaks ([`Message::validate`]) before it touches any state; what is left is
//! answered or ignored. One test per rule, named after it, then property tests that step
//! arbitrary messages into nodes in every role and check that nothing panics and Raft's
//! safety properties still hold.

use bytes::Bytes;
use tenure_raft::{
    Config, Entry, EntryId, HardState, LogIndex, LogView, Malformed, MemLog, Membership, Message,
    MessageBody, Node, NodeId, ReadId, RejectHint, Role, SnapshotMeta, StepError, Term,
};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn three() -> Membership {
    Membership::voters([N1, N2, N3])
}

/// A node over a log holding entries with the given terms at indexes 1.., in `term`.
fn node(id: NodeId, terms: &[u64], term: u64) -> Node<MemLog> {
    let mut log = MemLog::new(three());
    for &t in terms {
        log.push(Term(t), "e");
    }
    log.set_hard_state(HardState { term: Term(term), vote: None, commit: LogIndex(0) });
    Node::new(Config::new(id), log).unwrap()
}

fn msg(from: NodeId, to: NodeId, term: u64, body: MessageBody) -> Message {
    Message { from, to, term: Term(term), body }
}

fn id(term: u64, index: u64) -> EntryId {
    EntryId::new(Term(term), LogIndex(index))
}

fn entry(term: u64, index: u64) -> Entry {
    Entry::new(Term(term), LogIndex(index), Bytes::from_static(b"x"))
}

fn append(prev: EntryId, entries: Vec<Entry>, commit: u64) -> MessageBody {
    MessageBody::Append { prev, entries, commit: LogIndex(commit) }
}

/// Steps `m` and expects it refused as malformed for `reason`, with nothing changed.
fn refused(n: &mut Node<MemLog>, m: Message, reason: Malformed) {
    let before = n.status();
    let from = m.from;
    match n.step(m) {
        Err(StepError::Malformed { from: f, reason: r, .. }) => {
            assert_eq!((f, r), (from, reason));
        }
        other => panic!("expected a refusal for {reason}, got {other:?}"),
    }
    assert_eq!(n.status(), before, "a refused message must leave the node as it was");
    assert!(!n.has_ready(), "a refused message must cause no output");
}

// ----- Appends (Raft §5.3) --------------------------------------------------------------------

#[test]
fn append_with_entries_not_following_prev_is_refused_raft_5_3() {
    let mut n = node(N2, &[1, 1], 1);
    let gap = append(id(1, 2), vec![entry(1, 3), entry(1, 5)], 0);
    let reason = Malformed::EntriesNotContiguous { expected: LogIndex(4), found: id(1, 5) };
    refused(&mut n, msg(N1, N2, 1, gap), reason);
    let late_start = append(id(1, 2), vec![entry(1, 4)], 0);
    let reason = Malformed::EntriesNotContiguous { expected: LogIndex(3), found: id(1, 4) };
    refused(&mut n, msg(N1, N2, 1, late_start), reason);
}

#[test]
fn append_with_terms_going_backwards_is_refused_raft_5_3() {
    let mut n = node(N2, &[1], 1);
    let body = append(id(1, 1), vec![entry(3, 2), entry(2, 3)], 0);
    let reason = Malformed::TermsGoBackwards { entry: id(2, 3), previous: id(3, 2) };
    refused(&mut n, msg(N1, N2, 3, body), reason);
}

#[test]
fn append_with_entry_term_below_prev_term_is_refused_raft_5_3() {
    let mut n = node(N2, &[1, 2], 2);
    let body = append(id(2, 2), vec![entry(1, 3)], 0);
    let reason = Malformed::TermsGoBackwards { entry: id(1, 3), previous: id(2, 2) };
    refused(&mut n, msg(N1, N2, 2, body), reason);
}

#[test]
fn append_with_entry_term_above_message_term_is_refused_raft_5_3() {
    let mut n = node(N2, &[1], 2);
    let body = append(id(1, 1), vec![entry(2, 2), entry(7, 3)], 0);
    let reason = Malformed::PositionAboveTerm { position: id(7, 3), term: Term(2) };
    refused(&mut n, msg(N1, N2, 2, body), reason);
    let body = append(id(5, 1), vec![], 0);
    let reason = Malformed::PositionAboveTerm { position: id(5, 1), term: Term(2) };
    refused(&mut n, msg(N1, N2, 2, body), reason);
}

#[test]
fn append_with_an_entry_of_term_zero_is_refused() {
    let mut n = node(N2, &[], 1);
    let body = append(id(0, 0), vec![entry(0, 1)], 0);
    refused(&mut n, msg(N1, N2, 1, body), Malformed::ImpossiblePosition(id(0, 1)));
}

#[test]
fn append_running_past_the_largest_index_is_refused() {
    let mut n = node(N2, &[1], 1);
    let max = LogIndex::MAX.0;
    let body = append(id(1, max), vec![entry(1, u64::MAX)], 0);
    refused(&mut n, msg(N1, N2, 1, body), Malformed::IndexOutOfRange(LogIndex::MAX));
    let body = append(id(1, u64::MAX), vec![], 0);
    refused(&mut n, msg(N1, N2, 1, body), Malformed::IndexOutOfRange(LogIndex(u64::MAX)));
    let body = append(id(1, 1), vec![], u64::MAX);
    refused(&mut n, msg(N1, N2, 1, body), Malformed::IndexOutOfRange(LogIndex(u64::MAX)));
}

#[test]
fn append_with_huge_but_valid_values_is_answered_not_panicked_on() {
    let mut n = node(N2, &[1], 1);
    let max = LogIndex::MAX.0;
    let body = append(id(1, max - 1), vec![entry(1, max)], max);
    n.step(msg(N1, N2, 1, body)).unwrap();
    assert_eq!(n.last_index(), LogIndex(1), "prev does not match: rejected, log unchanged");
    let rd = n.ready();
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::AppendResponse { result: Err(RejectHint { last_index: LogIndex(1), .. }) }
    ));
}

// ----- Terms (Raft §5.1) ----------------------------------------------------------------------

#[test]
fn message_with_term_past_the_largest_term_is_refused_raft_5_1() {
    let mut n = node(N2, &[1], 1);
    let body = MessageBody::Heartbeat { commit: LogIndex(0), read_round: 0 };
    refused(&mut n, msg(N1, N2, u64::MAX, body), Malformed::TermOutOfRange(Term(u64::MAX)));
    assert_eq!(n.term(), Term(1), "the term was not raised");
}

#[test]
fn node_in_the_last_usable_term_does_not_campaign() {
    let mut n = node(N2, &[1], 1);
    let body = MessageBody::Heartbeat { commit: LogIndex(0), read_round: 0 };
    n.step(msg(N1, N2, Term::MAX.0, body)).unwrap();
    assert_eq!(n.term(), Term::MAX);
    n.campaign();
    for _ in 0..100 {
        n.tick();
    }
    assert_eq!((n.role(), n.term()), (Role::Follower, Term::MAX), "no term to campaign in");
}

// ----- Votes (Raft §5.2, §5.4.1) --------------------------------------------------------------

#[test]
fn vote_request_with_a_last_entry_from_a_future_term_is_refused_raft_5_4_1() {
    let mut n = node(N2, &[1], 1);
    let body = MessageBody::Vote { last: id(9, 1), transfer: false };
    let reason = Malformed::PositionAboveTerm { position: id(9, 1), term: Term(2) };
    refused(&mut n, msg(N3, N2, 2, body), reason);
    let body = MessageBody::PreVote { last: id(0, 4) };
    refused(&mut n, msg(N3, N2, 2, body), Malformed::ImpossiblePosition(id(0, 4)));
}

// ----- Responses to the leader ------------------------------------------------------------------

fn leader_of_three() -> Node<MemLog> {
    let mut cfg = Config::new(N1);
    cfg.pre_vote = false;
    let mut n = Node::new(cfg, MemLog::new(three())).unwrap();
    n.campaign();
    let rd = n.ready();
    n.log_view_mut().set_hard_state(rd.hard_state.unwrap());
    n.on_persisted(rd.number);
    n.step(msg(N2, N1, 1, MessageBody::VoteResponse { granted: true })).unwrap();
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready();
    n.log_view_mut().append(&rd.entries);
    n.on_persisted(rd.number);
    n
}

#[test]
fn acknowledgement_past_the_leaders_last_index_is_refused_raft_5_3() {
    let mut n = leader_of_three();
    let last = n.last_index();
    let body = MessageBody::AppendResponse { result: Ok(LogIndex(50)) };
    assert_eq!(
        n.step(msg(N2, N1, 1, body)),
        Err(StepError::MatchPastLastIndex { from: N2, index: LogIndex(50), last_index: last })
    );
    assert_eq!(n.committed(), LogIndex(0), "nothing committed on a false claim");
}

#[test]
fn rejection_hint_past_the_rejected_index_is_refused_raft_5_3() {
    let mut n = leader_of_three();
    let hint = RejectHint { rejected: LogIndex(1), hint: id(1, 3), last_index: LogIndex(3) };
    let reason = Malformed::HintOutOfRange {
        hint: id(1, 3),
        rejected: LogIndex(1),
        last_index: LogIndex(3),
    };
    let body = MessageBody::AppendResponse { result: Err(hint) };
    refused(&mut n, msg(N2, N1, 1, body), reason);
}

#[test]
fn responses_from_nodes_outside_the_configuration_are_ignored() {
    let mut n = leader_of_three();
    let before = n.status();
    let stranger = NodeId(99);
    for body in [
        MessageBody::AppendResponse { result: Ok(LogIndex(1)) },
        MessageBody::AppendResponse {
            result: Err(RejectHint {
                rejected: LogIndex(1),
                hint: id(0, 0),
                last_index: LogIndex(0),
            }),
        },
        MessageBody::HeartbeatResponse { read_round: u64::MAX },
        MessageBody::VoteResponse { granted: true },
    ] {
        n.step(msg(stranger, N1, 1, body)).unwrap();
    }
    assert_eq!(n.status(), before, "a stranger's answers count for nothing");
}

// ----- Snapshots (Raft §7) ----------------------------------------------------------------------

#[test]
fn snapshot_with_an_impossible_position_or_configuration_is_refused_raft_7() {
    let mut n = node(N2, &[1], 1);
    let meta = SnapshotMeta { last_included: id(0, 7), membership: three() };
    let body = MessageBody::Snapshot { meta };
    refused(&mut n, msg(N1, N2, 1, body), Malformed::ImpossiblePosition(id(0, 7)));
    let meta = SnapshotMeta { last_included: id(1, 7), membership: Membership::default() };
    let body = MessageBody::Snapshot { meta };
    let reason = Malformed::SnapshotMembership("a configuration needs at least one voter".into());
    refused(&mut n, msg(N1, N2, 1, body), reason);
}

#[test]
fn snapshot_superseded_before_it_is_durable_does_not_panic_raft_7() {
    // A caller that persists asynchronously: a second snapshot arrives while the first one's
    // Ready is still being written. Acknowledging the first, then the second, is fine.
    let mut n = node(N2, &[1], 1);
    let snap = |index| SnapshotMeta { last_included: id(1, index), membership: three() };
    n.step(msg(N1, N2, 1, MessageBody::Snapshot { meta: snap(5) })).unwrap();
    let first = n.ready();
    n.step(msg(N1, N2, 1, MessageBody::Snapshot { meta: snap(9) })).unwrap();
    let second = n.ready();
    assert_eq!(second.snapshot.as_ref().map(|m| m.last_included), Some(id(1, 9)));
    n.log_view_mut().reset_to_snapshot(id(1, 5), three());
    n.on_persisted(first.number);
    n.log_view_mut().reset_to_snapshot(id(1, 9), three());
    n.on_persisted(second.number);
    assert_eq!((n.committed(), n.log_view().first_index()), (LogIndex(9), LogIndex(10)));
}

// ----- Reads (dissertation §6.4) ----------------------------------------------------------------

#[test]
fn read_index_answer_from_a_node_not_asked_is_ignored() {
    let mut n = node(N2, &[1], 1);
    n.step(msg(N1, N2, 1, MessageBody::Heartbeat { commit: LogIndex(0), read_round: 0 })).unwrap();
    n.read_index(ReadId(7)).unwrap();
    let forged = MessageBody::ReadIndexResponse { id: ReadId(7), index: Some(LogIndex(0)) };
    n.step(msg(N3, N2, 1, forged)).unwrap();
    let rd = n.ready();
    assert!(rd.read_states.is_empty(), "only the leader asked may answer");
    let answer = MessageBody::ReadIndexResponse { id: ReadId(7), index: Some(LogIndex(1)) };
    n.step(msg(N1, N2, 1, answer)).unwrap();
    assert_eq!(n.ready().read_states.len(), 1);
}

// ----- Property: arbitrary messages into a node in every role -----------------------------------

mod arbitrary {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use tenure_raft::testkit::Cluster;
    use tenure_raft::{Proposed, Ready, Status};

    use super::*;

    fn any_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            6 => 0..6u64,
            1 => Just(LogIndex::MAX.0),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ]
    }

    fn any_id() -> impl Strategy<Value = EntryId> {
        (any_u64(), any_u64()).prop_map(|(t, i)| id(t, i))
    }

    fn any_node() -> impl Strategy<Value = NodeId> {
        prop_oneof![4 => (1..4u64).prop_map(NodeId), 1 => any_u64().prop_map(NodeId)]
    }

    fn any_entries() -> impl Strategy<Value = (EntryId, Vec<Entry>)> {
        prop_oneof![
            // Well formed: contiguous after prev, terms non-decreasing.
            (0..6u64, 0..6u64, proptest::collection::vec(0..3u64, 0..4)).prop_map(
                |(t, i, steps)| {
                    let prev = if i == 0 { id(0, 0) } else { id(t.max(1), i) };
                    let mut term = prev.term.0.max(1);
                    let entries = (0..steps.len())
                        .map(|k| {
                            term += steps[k];
                            entry(term, i + 1 + k as u64)
                        })
                        .collect();
                    (prev, entries)
                }
            ),
            // Anything at all.
            (any_id(), proptest::collection::vec(any_id(), 0..4)).prop_map(|(prev, ids)| {
                (prev, ids.into_iter().map(|e| entry(e.term.0, e.index.0)).collect())
            }),
        ]
    }

    fn any_membership() -> impl Strategy<Value = Membership> {
        prop_oneof![
            3 => Just(three()),
            1 => proptest::collection::vec(any_node(), 0..4).prop_map(Membership::voters),
            1 => Just(Membership::default()),
        ]
    }

    fn any_body() -> impl Strategy<Value = MessageBody> {
        prop_oneof![
            any_id().prop_map(|last| MessageBody::PreVote { last }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (any_id(), any::<bool>())
                .prop_map(|(last, transfer)| MessageBody::Vote { last, transfer }),
            any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
            (any_entries(), any_u64()).prop_map(|((prev, entries), c)| append(prev, entries, c)),
            any_u64().prop_map(|i| MessageBody::AppendResponse { result: Ok(LogIndex(i)) }),
            (any_u64(), any_id(), any_u64()).prop_map(|(r, hint, l)| {
                MessageBody::AppendResponse {
                    result: Err(RejectHint {
                        rejected: LogIndex(r),
                        hint,
                        last_index: LogIndex(l),
                    }),
                }
            }),
            (any_u64(), any_u64()).prop_map(|(c, read_round)| MessageBody::Heartbeat {
                commit: LogIndex(c),
                read_round
            }),
            any_u64().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
            (0..3usize)
                .prop_map(|n| MessageBody::Propose { entries: vec![Bytes::from_static(b"p"); n] }),
            any_u64().prop_map(|i| MessageBody::ReadIndex { id: ReadId(i) }),
            (0..3u64, proptest::option::of(any_u64())).prop_map(|(i, index)| {
                MessageBody::ReadIndexResponse { id: ReadId(i), index: index.map(LogIndex) }
            }),
            Just(MessageBody::TimeoutNow),
            (any_id(), any_membership()).prop_map(|(last_included, membership)| {
                MessageBody::Snapshot { meta: SnapshotMeta { last_included, membership } }
            }),
        ]
    }

    /// A message from anyone to anyone (mostly to `to`), in any term.
    fn any_message(to: NodeId) -> impl Strategy<Value = Message> {
        let to = prop_oneof![8 => Just(to), 1 => any_node()];
        (any_node(), to, any_u64(), any_body()).prop_map(|(from, to, term, body)| Message {
            from,
            to,
            term: Term(term),
            body,
        })
    }

    /// A caller that persists asynchronously: readies wait in `pending` until `persist`.
    struct Driver {
        node: Node<MemLog>,
        pending: Vec<Ready>,
        /// Terms of committed entries seen, by index: they must never change.
        committed_terms: BTreeMap<LogIndex, Term>,
        committed: LogIndex,
        /// Snapshot messages the node asked to send.
        snapshots_sent: usize,
    }

    impl Driver {
        fn new(node: Node<MemLog>) -> Driver {
            Driver {
                node,
                pending: Vec::new(),
                committed_terms: BTreeMap::new(),
                committed: LogIndex(0),
                snapshots_sent: 0,
            }
        }

        fn take_ready(&mut self) {
            if !self.node.has_ready() {
                return;
            }
            let rd = self.node.ready();
            self.snapshots_sent += rd
                .messages
                .iter()
                .filter(|m| matches!(m.body, MessageBody::Snapshot { .. }))
                .count();
            if let Some(last) = rd.committed_entries.last() {
                self.node.on_applied(last.index());
            }
            self.pending.push(rd);
        }

        fn persist(&mut self) {
            let Some(number) = self.pending.last().map(|rd| rd.number) else { return };
            for rd in std::mem::take(&mut self.pending) {
                let log = self.node.log_view_mut();
                if let Some(meta) = &rd.snapshot {
                    log.reset_to_snapshot(meta.last_included, meta.membership.clone());
                }
                if let Some(hs) = rd.hard_state {
                    log.set_hard_state(hs);
                }
                log.append(&rd.entries);
            }
            self.node.on_persisted(number);
        }

        /// Synchronous rounds until the node has nothing more to do.
        fn settle(&mut self) {
            for _ in 0..10 {
                self.take_ready();
                self.persist();
            }
        }

        fn check(&mut self) {
            let s: Status = self.node.status();
            assert!(
                s.first_index.prev() <= s.applied
                    && s.applied <= s.committed
                    && s.committed <= s.last.index
                    && s.persisted <= s.last.index,
                "log pointer chain broken: {s:?}"
            );
            assert!(s.committed >= self.committed, "commit went backwards: {s:?}");
            // Committed entries never change (Raft §5.4, State Machine Safety): check the
            // ones still in the log, and remember the newly committed ones.
            for (index, term) in &self.committed_terms {
                if let Some(now) = self.node.entry_term(*index) {
                    assert_eq!(now, *term, "committed entry at {index} changed");
                }
            }
            let lo = self.committed.next().max(s.committed.prev().prev());
            let mut i = lo;
            while i <= s.committed {
                if let Some(t) = self.node.entry_term(i) {
                    self.committed_terms.insert(i, t);
                }
                i = i.next();
            }
            self.committed = s.committed;
        }
    }

    fn step(d: &mut Driver, m: Message) {
        // Anything may be refused; nothing may panic.
        let _ = d.node.step(m);
    }

    fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
        Message { from, to, term, body }
    }

    /// A node of a three-node cluster brought into the given role (`0..6`).
    fn in_role(role: u8) -> Driver {
        let mut cfg = Config::new(N1);
        cfg.pre_vote = role == 1;
        let mut log = MemLog::new(three());
        for t in [1, 1, 2, 2] {
            log.push(Term(t), "e");
        }
        if role == 4 {
            log.compact(LogIndex(3));
        }
        log.set_hard_state(HardState { term: Term(2), vote: None, commit: LogIndex(3) });
        let mut cfg_applied = cfg.clone();
        cfg_applied.applied = LogIndex(3);
        let mut d = Driver::new(Node::new(cfg_applied, log).unwrap());
        let term = d.node.term();
        match role {
            // A follower of n2.
            0 => {
                let hb = MessageBody::Heartbeat { commit: LogIndex(2), read_round: 0 };
                step(&mut d, msg(N2, N1, term, hb));
            }
            // A pre-candidate, or a candidate waiting for votes.
            1 | 2 => {
                d.node.campaign();
                d.settle();
            }
            // A leader, with entries in flight; or a leader sending n2 a snapshot.
            3 | 4 => {
                d.node.campaign();
                d.settle();
                let term = d.node.term();
                step(&mut d, msg(N2, N1, term, MessageBody::VoteResponse { granted: true }));
                d.settle();
                let _ = d.node.propose(Bytes::from_static(b"a"));
                if role == 4 {
                    let hint = RejectHint {
                        rejected: LogIndex(4),
                        hint: id(0, 0),
                        last_index: LogIndex(0),
                    };
                    let body = MessageBody::AppendResponse { result: Err(hint) };
                    step(&mut d, msg(N2, N1, term, body));
                }
                d.settle();
            }
            // A follower that accepted a snapshot whose installation is not yet durable.
            _ => {
                let meta = SnapshotMeta { last_included: id(2, 9), membership: three() };
                step(&mut d, msg(N2, N1, term, MessageBody::Snapshot { meta }));
                d.take_ready();
            }
        }
        let expected = match role {
            1 => Role::PreCandidate,
            2 => Role::Candidate,
            3 | 4 => Role::Leader,
            _ => Role::Follower,
        };
        assert_eq!(d.node.role(), expected, "setup for role {role}");
        if role == 4 {
            assert!(d.snapshots_sent > 0, "the leader is sending n2 a snapshot");
        }
        d.check();
        d
    }

    #[test]
    fn every_role_setup_reaches_its_role_and_snapshot_states() {
        for role in 0..6 {
            in_role(role);
        }
        let follower = in_role(5);
        assert_eq!(
            follower.pending.last().and_then(|rd| rd.snapshot.as_ref()).map(|m| m.last_included),
            Some(id(2, 9))
        );
    }

    #[test]
    fn driver_check_catches_a_changed_committed_entry() {
        let mut d = in_role(0);
        d.committed_terms.insert(LogIndex(1), Term(7));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.check()));
        assert!(caught.is_err(), "the checker must be able to fail");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Step(Message),
        Tick,
        Ready,
        Persist,
        Propose,
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => any_message(N1).prop_map(Op::Step),
            2 => Just(Op::Tick),
            2 => Just(Op::Ready),
            2 => Just(Op::Persist),
            1 => Just(Op::Propose),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any sequence of arbitrary messages (every kind, any sender, any term, huge and zero
        /// values), interleaved with ticks, proposals and a caller that persists late, leaves
        /// a node in any role unpanicked, its log pointer chain intact and its committed
        /// entries unchanged.
        #[test]
        fn arbitrary_messages_never_panic_a_node_in_any_role(
            role in 0..6u8,
            ops in proptest::collection::vec(any_op(), 1..40),
        ) {
            let mut d = in_role(role);
            for op in ops {
                match op {
                    Op::Step(m) => step(&mut d, m),
                    Op::Tick => d.node.tick(),
                    Op::Ready => d.take_ready(),
                    Op::Persist => d.persist(),
                    Op::Propose => { let _ = d.node.propose(Bytes::from_static(b"c")); }
                }
                d.check();
            }
            d.settle();
            d.check();
        }
    }

    // ----- Property: a cluster keeps Raft's safety among hostile strangers ------------------

    /// A message from a stranger (an id outside the configuration). Raft does not tolerate
    /// Byzantine members: a well-formed append, heartbeat or snapshot from anyone is believed
    /// (a forged one from a member could commit anything), so those are sent only malformed,
    /// which every node must refuse. Every other kind goes as generated.
    fn stranger_message() -> impl Strategy<Value = Message> {
        (4..u64::MAX, 1..4u64, any_u64(), any_body()).prop_map(|(from, to, term, body)| Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(term),
            body,
        })
    }

    fn carries_authority(m: &Message) -> bool {
        matches!(
            m.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. }
        ) && m.validate().is_ok()
    }

    #[derive(Clone, Debug)]
    enum ClusterOp {
        Hostile(Message),
        Tick(u64),
        Propose,
        Deliver,
        DropSome,
        Compact,
    }

    fn any_cluster_op() -> impl Strategy<Value = ClusterOp> {
        prop_oneof![
            4 => stranger_message().prop_map(ClusterOp::Hostile),
            3 => (1..4u64).prop_map(ClusterOp::Tick),
            2 => Just(ClusterOp::Propose),
            4 => Just(ClusterOp::Deliver),
            1 => Just(ClusterOp::DropSome),
            1 => Just(ClusterOp::Compact),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// A three-node cluster under normal traffic (elections, proposals, lost messages,
        /// compaction and snapshots) while strangers send arbitrary messages: nothing panics,
        /// and the test kit's checks hold on every step: at most one leader per term, no two
        /// nodes apply different entries at one index, and each log's pointer chain.
        #[test]
        fn strangers_cannot_break_safety_of_a_cluster(
            ops in proptest::collection::vec(any_cluster_op(), 1..80),
        ) {
            let mut c = Cluster::new(3, |_| {});
            c.campaign(N1);
            let mut proposals = 0u32;
            for op in ops {
                match op {
                    ClusterOp::Hostile(m) => {
                        if !carries_authority(&m) && c.is_up(m.to) {
                            let to = m.to;
                            let _ = c.node_mut(to).step(m);
                        }
                    }
                    ClusterOp::Tick(n) => c.tick(NodeId(n)),
                    ClusterOp::Propose => {
                        if let Some(l) = c.leader() {
                            proposals += 1;
                            let r = c.propose(l, &format!("v{proposals}"));
                            prop_assert!(r.is_err() || matches!(r, Ok(Proposed::Appended(_))));
                        }
                    }
                    ClusterOp::Deliver => {
                        c.process_all();
                        c.deliver_all();
                    }
                    ClusterOp::DropSome => {
                        c.drop_where(|m| m.to == N3 || matches!(m.body, MessageBody::Append { .. }));
                    }
                    ClusterOp::Compact => {
                        for id in [N1, N2, N3] {
                            let applied = c.node(id).status().applied;
                            c.compact(id, applied);
                        }
                    }
                }
                for id in [N1, N2, N3] {
                    let s = c.node(id).status();
                    prop_assert!(s.first_index.prev() <= s.applied && s.applied <= s.committed
                        && s.committed <= s.last.index, "pointer chain: {s:?}");
                }
            }
            c.stabilize();
            c.check_logs_agree();
        }
    }
}
