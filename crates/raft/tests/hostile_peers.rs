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
