//! Errors the caller handles. Broken invariants are panics, not errors.

use crate::types::NodeId;

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
}
