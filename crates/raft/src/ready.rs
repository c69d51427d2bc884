//! The node's output: [`Ready`], and the contract for handling it.

use crate::log_view::SnapshotMeta;
use crate::membership::Membership;
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
/// # What needs a sync
///
/// [`Ready::must_persist`] says whether there is anything to write; [`Ready::must_sync`] says
/// whether that write must be synced (fsync) before step 3, as etcd's `MustSync`. Only a new
/// term or vote (S2: a node must never vote twice in a term, and must never forget a term it
/// answered in), new entries (an append acknowledgement promises them, S10) or a snapshot need
/// a sync. A hard state that differs from the last one only in its commit index does not: it
/// is written with the next sync, or at shutdown, and for such a `Ready` step 3 may follow as
/// soon as every earlier `Ready` is durable. This is safe because the commit index is not what
/// makes a write durable: an acknowledged write is committed because a quorum holds its entry
/// durably (Raft §5.4), and that quorum's logs, not anyone's commit index, carry it into every
/// later leader's log (Leader Completeness). A node that restarts with an older commit index
/// applies less at first and relearns the commit index from the leader's next append or
/// heartbeat (Raft Figure 2: `commitIndex` is volatile state; persisting it only saves
/// re-applying). The caller must still write a lazy commit index in `Ready` order, after the
/// entries of earlier `Ready`s, so that a commit index on disk never points past the entries
/// on disk.
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
    /// The configuration in force at `hard_state.commit`, when that changed (the commit index
    /// passed a configuration entry, or a snapshot was installed): write it before the hard
    /// state. It is what [`crate::InitialState::membership`] returns after a restart; the
    /// configuration entries after it are read back from the log.
    pub membership: Option<Membership>,
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
    /// Whether `hard_state` changed the term or the vote (not only the commit index): set by
    /// the node, read by [`Ready::must_sync`].
    pub(crate) term_or_vote_changed: bool,
}

impl Ready {
    /// Whether this `Ready` has anything to write (a hard state, entries or a snapshot).
    /// Whether the write must also be synced is [`Ready::must_sync`].
    pub fn must_persist(&self) -> bool {
        self.hard_state.is_some() || !self.entries.is_empty() || self.snapshot.is_some()
    }

    /// Whether the write must be synced before [`crate::Node::on_persisted`] acknowledges this
    /// `Ready`: a new term or vote, new entries, or a snapshot. A change of the commit index
    /// alone may be written lazily (see "What needs a sync" on the type). Implies
    /// [`Ready::must_persist`].
    pub fn must_sync(&self) -> bool {
        self.term_or_vote_changed || !self.entries.is_empty() || self.snapshot.is_some()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Entry;

    fn hard_state(term: u64, vote: Option<u64>, commit: u64) -> HardState {
        HardState { term: Term(term), vote: vote.map(NodeId), commit: LogIndex(commit) }
    }

    #[test]
    fn commit_only_hard_state_changes_need_no_sync() {
        let rd = Ready { hard_state: Some(hard_state(2, Some(1), 7)), ..Ready::default() };
        assert!(rd.must_persist(), "the new commit index is still written");
        assert!(!rd.must_sync(), "but needs no fsync of its own");

        let rd = Ready {
            hard_state: Some(hard_state(3, None, 7)),
            term_or_vote_changed: true,
            ..Ready::default()
        };
        assert!(rd.must_sync(), "a new term (or vote) must be durable before answering (S2)");

        let rd = Ready {
            entries: vec![Entry::new(Term(2), LogIndex(8), bytes::Bytes::new())],
            ..Ready::default()
        };
        assert!(rd.must_sync(), "new entries must be durable before they are acknowledged");

        let snapshot = crate::log_view::SnapshotMeta {
            last_included: crate::types::EntryId::new(Term(2), LogIndex(9)),
            membership: crate::membership::Membership::voters([NodeId(1)]),
        };
        let rd = Ready { snapshot: Some(snapshot), ..Ready::default() };
        assert!(rd.must_sync(), "an installed snapshot must be durable");

        assert!(!Ready::default().must_persist() && !Ready::default().must_sync());
    }
}
