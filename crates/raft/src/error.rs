//! Errors the caller handles. Broken invariants are panics, not errors.

use crate::membership::{ConfigDecodeError, InvalidChange};
use crate::types::{EntryId, LogIndex, NodeId, Term};

/// Why a proposal was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader and does not forward (or knows no leader).
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from, if any.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing leadership to another node and accepts no proposals meanwhile.
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress {
        /// The node leadership is moving to.
        to: NodeId,
    },
    /// Too many bytes are proposed but not yet committed; retry after commits catch up.
    #[error("uncommitted bytes {uncommitted_bytes} + {entry_bytes} exceed the limit {max_bytes}")]
    UncommittedBytesExceeded {
        /// Bytes already waiting to commit.
        uncommitted_bytes: u64,
        /// Bytes of the refused proposal.
        entry_bytes: u64,
        /// The configured limit.
        max_bytes: u64,
    },
}

/// Why a read could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known to confirm the read.
    #[error("no leader")]
    NoLeader,
}

/// Why a leadership transfer could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can transfer leadership.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from, if any.
        leader_hint: Option<NodeId>,
    },
    /// The target does not vote in the current configuration.
    #[error("{0} is not a voter")]
    NotAVoter(NodeId),
}

/// Why a configuration change was refused (see [`crate::Node::propose_conf_change`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfChangeError {
    /// Only the leader proposes configuration changes.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node last heard from, if any.
        leader_hint: Option<NodeId>,
    },
    /// The leader is handing leadership to another node and accepts no proposals meanwhile.
    #[error("leadership transfer to {to} in progress")]
    TransferInProgress {
        /// The node leadership is moving to.
        to: NodeId,
    },
    /// A new leader has not committed an entry of its term yet, so it does not know whether
    /// the last configuration in its log is committed; retry shortly.
    #[error("the leader has not committed an entry of its term yet")]
    LeaderNotReady,
    /// One change at a time: the configuration entry at `index` is not committed yet, or the
    /// configuration is joint and must be left first.
    #[error("a configuration change is in progress (entry {index})")]
    ChangeInProgress {
        /// The configuration entry that is still in progress.
        index: LogIndex,
    },
    /// Leaving was asked for but the configuration is not joint.
    #[error("the configuration is not joint")]
    NotJoint,
    /// The changes do not apply to the current configuration.
    #[error(transparent)]
    Invalid(#[from] InvalidChange),
    /// The learner to promote trails the leader by too much ([`crate::membership::learner_caught_up`]).
    #[error("learner {id} is not caught up (match {match_index}, leader's last {last_index})")]
    LearnerNotCaughtUp {
        /// The learner.
        id: NodeId,
        /// Its match index.
        match_index: LogIndex,
        /// The leader's last index.
        last_index: LogIndex,
    },
    /// The change would leave fewer active voters than a quorum (etcd's strict
    /// reconfiguration check, [`crate::membership::enough_active_voters`]).
    #[error("not enough active voters after the change: {active} active, {needed} needed")]
    NotEnoughActiveVoters {
        /// Active voters in the configuration the change leads to.
        active: usize,
        /// Its quorum.
        needed: usize,
    },
}

/// A message that this node must not accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The message is addressed to another node.
    #[error("message for {to} delivered to {me}")]
    WrongRecipient {
        /// The addressee.
        to: NodeId,
        /// This node.
        me: NodeId,
    },
    /// The message claims to come from this node itself.
    #[error("message from self")]
    FromSelf,
    /// An application's message ([`crate::MessageBody::App`]) was stepped into the core,
    /// which has nothing to do with it; the application takes its own messages out first.
    #[error("application message from {from} stepped into the consensus core")]
    NotForTheCore {
        /// The sender.
        from: NodeId,
    },
    /// The message is malformed: no correct peer sends it (see [`Malformed`]). It was dropped
    /// before it touched any state.
    #[error("malformed {kind} from {from}: {reason}")]
    Malformed {
        /// The sender the message claims.
        from: NodeId,
        /// The kind of message ([`crate::MessageBody::kind`]).
        kind: &'static str,
        /// What is wrong with it.
        reason: Malformed,
    },
    /// An append acknowledgement from the current term claims entries past this leader's last
    /// index. Within one term a leader's log only grows, so no correct follower can hold them.
    #[error("{from} acknowledges index {index}, past this leader's last index {last_index}")]
    MatchPastLastIndex {
        /// The sender.
        from: NodeId,
        /// The index it claims to match through.
        index: LogIndex,
        /// This leader's last index.
        last_index: LogIndex,
    },
    /// A (pre-)vote request from a node that does not vote in this node's configuration: a
    /// removed server must not disrupt the cluster (dissertation §4.2.3), so it is not
    /// answered and its term is not adopted.
    #[error("vote request from {from}, which does not vote in this configuration")]
    VoteFromNonVoter {
        /// The sender.
        from: NodeId,
    },
}

/// What makes a message malformed, checked by [`crate::Message::validate`] on every message
/// before it is stepped. Each rule is one no correct peer breaks, so a message breaking it
/// comes from a faulty (or hostile) sender or a broken transport.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A term past [`Term::MAX`] (reserved so that every term in use has a next term).
    #[error("term {0} is past the largest usable term")]
    TermOutOfRange(Term),
    /// An index past [`LogIndex::MAX`], or an append whose entries would run past it.
    #[error("index {0} is past the largest usable index")]
    IndexOutOfRange(LogIndex),
    /// A log position that no log holds: index 0 has term 0 and every real entry a term of at
    /// least 1.
    #[error("no log holds an entry at {0}")]
    ImpossiblePosition(EntryId),
    /// A log position whose term is above the message's term: no node holds entries of a term
    /// it has not reached (a leader only creates entries in its own term, Raft §5.3).
    #[error("entry {position} is from a term above the message's term {term}")]
    PositionAboveTerm {
        /// The position.
        position: EntryId,
        /// The message's term.
        term: Term,
    },
    /// Append entries must run on from `prev.index + 1` without gaps (Raft §5.3).
    #[error("entry {found} should be at index {expected}: entries must follow prev contiguously")]
    EntriesNotContiguous {
        /// The index the entry should have.
        expected: LogIndex,
        /// The entry found there.
        found: EntryId,
    },
    /// Terms never decrease along a log (each leader appends in its own, newer term, Raft
    /// §5.3), so an append's entries, starting from `prev`, have non-decreasing terms.
    #[error("entry {entry} has a lower term than the entry {previous} before it")]
    TermsGoBackwards {
        /// The offending entry.
        entry: EntryId,
        /// The entry just before it (`prev` or the previous entry).
        previous: EntryId,
    },
    /// A rejection hint must point at or below both the rejected index and the follower's
    /// last index (Raft §5.3, the conflict optimisation).
    #[error(
        "rejection hint {hint} is past the rejected index {rejected} or last index {last_index}"
    )]
    HintOutOfRange {
        /// The hint.
        hint: EntryId,
        /// The rejected `prev` index.
        rejected: LogIndex,
        /// The follower's last index.
        last_index: LogIndex,
    },
    /// A snapshot's configuration is invalid (no voter, or a member both voter and learner).
    #[error("snapshot configuration: {0}")]
    SnapshotMembership(String),
    /// A configuration entry's data does not decode ([`crate::membership::ConfigEntry`]).
    #[error("configuration entry {entry}: {reason}")]
    ConfigEntry {
        /// The entry.
        entry: EntryId,
        /// What is wrong with it.
        reason: ConfigDecodeError,
    },
}
