//! The state a node keeps only while it leads: per-follower progress, heartbeat rounds for
//! ReadIndex and leases, pending reads, a leadership transfer, and the uncommitted-bytes
//! budget.
//!
//! A leaf module: it holds data and its invariants, and knows nothing of `Node` or
//! of messages. The leader's behaviour (`leader.rs`) drives it, so dependencies point one
//! way: `node -> leader_state` and `leader -> {node, leader_state}`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::message::ReadId;
use crate::progress::Progress;
use crate::types::{LogIndex, NodeId};

/// Most heartbeat rounds remembered for lease timing; older ones are dropped.
pub(crate) const ROUND_HISTORY_MAX: usize = 1024;

/// A read waiting for its heartbeat round to be confirmed by a quorum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingRead {
    pub(crate) id: ReadId,
    /// Who asked: this node, or a follower to answer with `ReadIndexResponse`.
    pub(crate) from: NodeId,
    /// The commit index when the read arrived.
    pub(crate) index: LogIndex,
    /// The first heartbeat round sent after the read arrived; its confirmation proves this
    /// node was still leader when the read began.
    pub(crate) round: u64,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Transfer {
    pub(crate) to: NodeId,
    pub(crate) elapsed_ticks: u32,
}

/// State that exists only while leading.
pub(crate) struct LeaderState {
    /// Every other member (voters and learners).
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    pub(crate) heartbeat_elapsed: u32,
    pub(crate) transfer: Option<Transfer>,
    /// Whether an entry of this term is committed yet. Until it is, the commit index may be
    /// stale, so reads wait (dissertation §6.4 step 1).
    pub(crate) committed_in_term: bool,
    pub(crate) reads_waiting_commit: Vec<(ReadId, NodeId)>,
    pub(crate) reads: VecDeque<PendingRead>,
    /// Every heartbeat broadcast is a numbered round. Invariant: `round_confirmed <= round_sent`.
    pub(crate) round_sent: u64,
    pub(crate) round_confirmed: u64,
    /// A round started for waiting reads and not yet confirmed.
    pub(crate) read_round_inflight: Option<u64>,
    /// When each recent round was sent (for leases): `(round, tick)`, ascending.
    pub(crate) round_ticks: VecDeque<(u64, u64)>,
    /// The tick at which the last quorum-confirmed round was sent.
    pub(crate) lease_start_tick: Option<u64>,
    /// Set once leadership is being handed away: leases are no longer safe.
    pub(crate) lease_revoked: bool,
    /// Proposed entries not yet committed, with their sizes.
    pub(crate) uncommitted: VecDeque<(LogIndex, u64)>,
    pub(crate) uncommitted_bytes: u64,
    /// The followers that were `recent_active` in the previous Check-Quorum window, so the
    /// strict reconfiguration check does not see everyone idle just after a window starts.
    pub(crate) active_last_window: BTreeSet<NodeId>,
}

impl LeaderState {
    /// The state at the start of a term: `progress` holds every other member.
    pub(crate) fn new(progress: BTreeMap<NodeId, Progress>) -> LeaderState {
        LeaderState {
            progress,
            heartbeat_elapsed: 0,
            transfer: None,
            committed_in_term: false,
            reads_waiting_commit: Vec::new(),
            reads: VecDeque::new(),
            round_sent: 0,
            round_confirmed: 0,
            read_round_inflight: None,
            round_ticks: VecDeque::new(),
            lease_start_tick: None,
            lease_revoked: false,
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            active_last_window: BTreeSet::new(),
        }
    }
}
