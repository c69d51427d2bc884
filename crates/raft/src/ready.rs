//! The node's output: [`Ready`], and the contract for handling it.

use crate::log_view::SnapshotMeta;
use crate::message::{Message, ReadId};
use crate::types::{Entry, HardState, LogIndex, NodeId, Role, Term};

/// Role, term and leader: state that is not persisted but that callers watch (for logs,
/// metrics, and to redirect clients).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SoftState {
    /// This node's role.
    pub role: Role,
    /// The current term.
    pub term: Term,
    /// The leader of the current term, if known.
    pub leader: Option<NodeId>,
}

/// A linearizable read that is now safe: once the caller's state machine has applied through
/// `index`, reading it answers the read with `id` (dissertation §6.4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReadState {
    /// The id the caller passed to [`crate::Node::read_index`].
    pub id: ReadId,
    /// The commit index at the time the read was confirmed.
    pub index: LogIndex,
}

/// Everything the node asks the caller to do, numbered.
///
/// # The contract
///
/// Take a `Ready` with [`crate::Node::ready`], then, in this order of dependency:
///
/// 1. **Send `messages` at once.** They depend on nothing in this `Ready` being durable: the
///    leader's appends to followers go out while the leader's own write of the same entries is
///    still in progress (Raft dissertation §10.2.1), and heartbeats and pre-votes promise
///    nothing. They may be sent in any order and over any number of connections.
/// 2. **Install `snapshot`, then persist `entries` and `hard_state`.** A snapshot (accepted
///    from the leader, Raft §7) replaces the state machine with the snapshot's data and the
///    whole log with an empty one that starts after `snapshot.last_included`, before this
///    `Ready`'s entries are written. Entries overwrite any existing entries from
///    `entries[0].index` on (a new leader replaced a conflicting suffix). The write may be
///    asynchronous, but `Ready`s must become durable in number order, and the store must show
///    the snapshot point once this `Ready` is acknowledged.
/// 3. **When the write is durable, call [`crate::Node::on_persisted`] with `number`**, then send
///    `persisted_messages`. These promise durable state to their receiver (a vote, S2; an
///    append acknowledgement, S10) and must never leave before it.
/// 4. **Apply `committed_entries`** in order. They are committed and durable locally; applying
///    may happen concurrently with 1-3. Report progress with [`crate::Node::on_applied`].
/// 5. **Answer `read_states`** once the state machine has applied through each one's index;
///    fail the reads in `dropped_reads` (leadership was lost; the client may retry).
///
/// A caller that does everything synchronously simply does 2, 3, 1 and 4 in a loop; a caller
/// that persists on another thread keeps taking `Ready`s while earlier ones are being written.
///
/// # Snapshots
///
/// A leader whose log no longer holds what a follower needs emits a
/// [`crate::MessageBody::Snapshot`] naming its [`crate::LogView::snapshot`]. The caller streams
/// that snapshot's data to the follower beside the normal messages (it must not hold up
/// heartbeats), the follower's caller stages the data durably and then steps the message, and
/// the sender reports the outcome with [`crate::Node::report_snapshot`].
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled: persist, send, apply, and acknowledge by number"]
pub struct Ready {
    /// This `Ready`'s number, for [`crate::Node::on_persisted`]. Numbers increase by one.
    pub number: u64,
    /// Set when role, term or leader changed since the previous `Ready`.
    pub soft_state: Option<SoftState>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot from the leader to install before anything else in this `Ready`: the
    /// caller has its data staged (it stepped the [`crate::MessageBody::Snapshot`] that named
    /// it). Installing it counts as applying every entry through its last index.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to persist (append, overwriting from `entries[0].index`).
    pub entries: Vec<Entry>,
    /// Messages to send now.
    pub messages: Vec<Message>,
    /// Messages to send only after this `Ready` (and every earlier one) is durable.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in log order.
    pub committed_entries: Vec<Entry>,
    /// Reads that are safe once applied through their index.
    pub read_states: Vec<ReadState>,
    /// Reads that can no longer be confirmed (this node lost or never reached the leader).
    pub dropped_reads: Vec<ReadId>,
}

impl Ready {
    /// Whether this `Ready` has anything to make durable (and so the write needs a sync).
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }

    /// Whether this `Ready` asks for nothing at all.
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && !self.must_persist()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }
}
