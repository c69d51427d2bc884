//! # tenure-replica: one node = consensus core + durable storage + key-value state machine
//!
//! A [`Replica`] owns a [`tenure_raft::Node`] over a [`tenure_storage::Storage`] and a
//! [`tenure_kv::Store`], and runs the loop that carries the core's output through them in the
//! order the core's [`tenure_raft::Ready`] contract demands:
//!
//! ```text
//!   poll():   Ready ─┬─> messages ............................. sent at once (out.messages)
//!                    ├─> hard state + entries ─> storage write ─> begin_sync() ─> SyncTicket
//!                    ├─> committed entries ─> kv apply ─> client completions
//!                    └─> read states ─> (once applied) kv range ─> read completions
//!   finish_sync(ticket.wait()):  on_persisted(n) ─> persisted messages (votes, acks) released
//! ```
//!
//! The sync runs wherever the caller likes (another thread in the server, instantly or later
//! in the simulator), so the leader's own fsync overlaps replication. Readies that arrive
//! while a sync is in flight are written at once and join the next sync (group commit).
//!
//! It does no I/O of its own beyond the [`tenure_storage::Disk`] it is given, reads no clock
//! (the caller passes time to [`Replica::tick`]) and starts no threads: the server and the
//! simulator run this same code.
//!
//! ## Snapshots
//!
//! When [`SnapshotPolicy`] says so, [`Replica::take_snapshot_job`] hands out a
//! [`SnapshotJob`] (a point-in-time copy of the store and a snapshot file to write) that the
//! caller runs on any thread; [`Replica::finish_snapshot`] then records it and compacts the log,
//! keeping a trailing window. A leader's `Snapshot` messages ask the caller to stream
//! [`Replica::snapshot_to_send`] to the follower, whose caller writes it through
//! [`Replica::snapshot_receiver`] and then steps the message; the install happens in
//! [`Replica::poll`]. [`Replica::open`] restarts from the newest snapshot plus the log after
//! it. The pointer chain `first - 1 <= snapshot <= applied <= committed <= last` is checked
//! after every change.
//!
//! ## A full disk
//!
//! A storage write or sync that finds no space ([`StorageError::NoSpace`]) does not stop the
//! replica. The ready's writes wait in order (later readies' writes queue behind them) and are
//! tried again after 100 ms, doubling to 1 s while the disk stays full; a sync covers only
//! readies whose writes the storage took, so nothing that depends on them happens meanwhile:
//! no append acknowledgement or vote leaves and nothing is applied past the durable log (Raft
//! Figure 2: persistent state is updated on stable storage before responding). The replica
//! goes on stepping messages, sending what needs nothing durable and serving serializable
//! reads; [`Replica::propose`] fails with [`ClientError::DiskFull`]; a leader hands leadership
//! to its most up-to-date voter (it could not apply anything new). A snapshot that finds no
//! space is abandoned (its file removed) and tried again after the policy's count of entries;
//! a compaction that finds no space waits for the next snapshot. Once the storage takes every
//! write and a sync begins, [`Replica::disk_full`] clears and the replica catches up as any
//! follower does.
//!
//! ## Modules
//! - [`envelope`]: what wraps a state-machine proposal in a log entry (log time, origin,
//!   request id).
//! - [`snapshot`]: snapshot jobs, the policy, and chunked adapters between the state machine
//!   and snapshot files.
//! - `lessor`: lease deadlines on this replica's clock; the leader's renewals without the log,
//!   and its expiry, checkpoint and refresh proposals ([`LeaseConfig`]).
//! - `forward`: lease renewals a follower forwards to the leader outside the log, as
//!   [`tenure_raft::MessageBody::App`] messages, and the answers.
//! - this file: [`Replica`], its configuration, requests, completions and errors.

#![warn(missing_docs)]

pub mod envelope;
mod forward;
mod lessor;
mod members;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tenure_kv::{Command, Proposal, RangeRequest, RangeResponse, Response, Store};
use tenure_raft::{
    ConfigError, Entry, EntryId, EntryKind, HardState, LogIndex, LogView, Membership, Message,
    Node, NodeId, ProposeError, Proposed, ReadId, Role, SnapshotMeta, SnapshotStatus, SoftState,
    Term,
};
use tenure_storage::{
    Disk, FinishedSync, SnapshotReader, SnapshotWriter, Storage, StorageError, SyncTicket,
};

pub use envelope::Envelope;
pub use lessor::LeaseConfig;
pub use members::{MemberRefusal, MemberRequest, MembershipConfig};
pub use snapshot::{SnapshotDone, SnapshotJob, SnapshotPolicy};

/// Everything a replica is configured with.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// The consensus core's configuration (its `id` is this replica's id).
    pub raft: tenure_raft::Config,
    /// Storage limits.
    pub storage: tenure_storage::Options,
    /// State-machine limits; must be identical on every replica.
    pub kv: tenure_kv::Config,
    /// A client request not completed within this many ticks completes with
    /// [`ClientError::Timeout`].
    pub request_timeout_ticks: u64,
    /// When to snapshot and compact the log.
    pub snapshot: SnapshotPolicy,
    /// How the leader expires and checkpoints leases.
    pub lease: LeaseConfig,
    /// Limits on membership changes.
    pub members: MembershipConfig,
    /// Which run of this replica this is: it must differ from every earlier run's (the server
    /// draws 64 random bits at start; the simulator counts restarts). Request ids are the
    /// caller's and restart with the process, so the incarnation is what tells an entry or a
    /// read confirmation of an earlier run from one of this run: it is carried in every
    /// entry's [`Envelope`] and in every read id, and only this run's are answered.
    pub incarnation: u64,
    /// Behaviour a test can break on purpose (feature `planted-bugs`, never in release).
    #[cfg(feature = "planted-bugs")]
    pub planted_bugs: PlantedBugs,
}

/// Rules a test can break on purpose, to show that the simulator catches the result.
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Answer a client from any applied entry that carries this replica's id and the
    /// client's request id, as tenure did before incarnations: the incarnation is ignored in
    /// entries and read ids, and the entry's payload is not checked against the request.
    pub completion_ignores_incarnation: bool,
    /// Start a lease's deadline at the last tick's time when the entry that set it is
    /// applied, instead of at the next tick: a process that was stopped applies entries
    /// before its clock moves, and cuts leases short.
    pub lease_deadline_from_last_tick: bool,
    /// When a write finds the disk full, send the acknowledgements and votes that wait for it
    /// anyway, as if the write had been made durable (Raft Figure 2 broken).
    pub ack_before_durable_on_full_disk: bool,
    /// A new leader keeps its own deadlines for leases the old leader may have renewed
    /// without the log, instead of giving them their whole TTL from its promotion.
    pub promotion_keeps_lease_deadlines: bool,
}

impl ReplicaConfig {
    /// Defaults for replica `id` in its run `incarnation` (see [`ReplicaConfig::incarnation`]).
    pub fn new(id: NodeId, incarnation: u64) -> ReplicaConfig {
        ReplicaConfig {
            raft: tenure_raft::Config::new(id),
            storage: tenure_storage::Options::default(),
            kv: tenure_kv::Config::default(),
            request_timeout_ticks: 50,
            snapshot: SnapshotPolicy::default(),
            lease: LeaseConfig::default(),
            members: MembershipConfig::default(),
            incarnation,
            #[cfg(feature = "planted-bugs")]
            planted_bugs: PlantedBugs::default(),
        }
    }
}

/// Identifies a client request within one run of a replica; chosen by the caller, unique among
/// its pending requests. Ids may repeat across runs (see [`ReplicaConfig::incarnation`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct RequestId(pub u64);

/// Why a client request failed without a state-machine answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No leader is known.
    #[error("no leader")]
    NoLeader,
    /// This replica is not the leader and does not forward.
    #[error("not leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this replica last heard from.
        leader_hint: Option<NodeId>,
    },
    /// The proposal was appended but a new leader replaced it, or a read could no longer be
    /// confirmed: it certainly did not take effect through this request.
    #[error("leader changed")]
    LeaderChanged,
    /// The request did not complete in time; it may or may not have taken effect.
    #[error("request timed out")]
    Timeout,
    /// The leader refused the proposal (flow control or a leadership transfer); retry.
    #[error("proposal refused: {0}")]
    Refused(String),
    /// The state machine answered with an error (a deterministic one: the entry was applied
    /// and changed nothing).
    #[error("{0}")]
    Kv(tenure_kv::Error),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A membership change was refused before it was proposed (etcd's reasons).
    #[error("{0}")]
    Member(MemberRefusal),
    /// This replica's disk is full: it writes nothing new until space is freed, so it takes no
    /// proposal (it could not apply it). Another member may take it.
    #[error(
        "no space left on this member's disk: writes through it are paused until space is freed"
    )]
    DiskFull,
}

/// The answer to a client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A write's response.
    Write(Response),
    /// A read's response.
    Read(RangeResponse),
    /// A membership change's: the configuration in force once it took effect.
    Membership(Membership),
}

/// A finished client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The request.
    pub id: RequestId,
    /// Its outcome.
    pub result: Result<Answer, ClientError>,
    /// For a write that was applied: the log entry that carried it.
    pub entry: Option<tenure_raft::EntryId>,
}

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable (S12): confirmed through ReadIndex before reading.
    Linearizable,
    /// Serializable: served from this replica's state at once; may be stale.
    Serializable,
}

/// A failure that stops the replica: its storage failed or its state machine hit a
/// non-deterministic error. The node must not continue.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Storage failed (corruption names file and offset; a failed fsync is final).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The configuration or the recovered state is invalid.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// The state machine's configuration is invalid.
    #[error("kv config: {0}")]
    KvConfig(String),
    /// A snapshot could not be restored (damaged, or inconsistent with the log).
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The state machine failed in a way that could make replicas diverge.
    #[error("state machine failed at index {index}: {error}")]
    StateMachine {
        /// The entry being applied.
        index: LogIndex,
        /// The error.
        error: tenure_kv::Error,
    },
}

/// What one call handed back to the caller.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send to peers.
    pub messages: Vec<Message>,
    /// Finished client requests.
    pub completions: Vec<Completion>,
    /// Role, term or leader changes, for logs and metrics.
    pub changes: Vec<SoftState>,
    /// Entries applied to the state machine (index and term), for checkers.
    pub applied: Vec<Entry>,
    /// Events of the entries applied in this call, for watchers: one per revision that
    /// changed keys, in revision order (from [`Store::take_events`] after each entry).
    pub events: Vec<tenure_kv::RevisionEvents>,
}

struct PendingWrite {
    /// The entry payload proposed: the applied entry that answers this request must carry
    /// exactly these bytes.
    data: Bytes,
    /// Where the leader put it, if this replica was the leader; `None` if forwarded.
    at: Option<tenure_raft::EntryId>,
    deadline_tick: u64,
}

/// A lease renewal waiting for the leader's read index.
enum Renewal {
    /// A client's `LeaseRenew` proposal on this replica.
    Local(Box<Proposal>),
    /// A follower's, forwarded (see `forward`): answered with a message.
    Remote { from: NodeId, request: u64, incarnation: u64, lease: i64 },
}

/// A renewal this follower forwarded to the leader: proposed through the log if the leader
/// says so, or if no answer comes by `fallback_tick`.
struct Forwarded {
    proposal: Box<Proposal>,
    fallback_tick: u64,
}

/// Request ids with this bit set are the replica's own (forwarded renewals it serves as
/// leader); callers' ids must leave it clear.
const OWN_REQUEST_BIT: u64 = 1 << 63;

struct PendingRead {
    /// `None` for a barrier (see [`Replica::read_barrier`]) or a renewal.
    request: Option<RangeRequest>,
    /// A renewal the leader answers without the log once its leadership is confirmed (see
    /// [`Replica::propose`]).
    renew: Option<Renewal>,
    /// The index the read waits for, once confirmed.
    index: Option<LogIndex>,
    deadline_tick: u64,
}

/// Client requests waiting for an answer, indexed so that no step on the hot path scans them
/// all: by request id (hashed; never iterated, so the hash order is never observed), by log
/// position (writes this replica appended as leader), by read index (confirmed reads) and by
/// deadline.
#[derive(Default)]
struct Pending {
    writes: HashMap<RequestId, PendingWrite>,
    reads: HashMap<RequestId, PendingRead>,
    /// Writes appended here as leader, by the index they were appended at (several runs of
    /// leadership may have put different writes at one index).
    writes_at: BTreeSet<(LogIndex, RequestId)>,
    /// Confirmed reads, by the index they wait for.
    reads_at: BTreeSet<(LogIndex, RequestId)>,
    /// Requests by deadline tick, in the order they were registered. Deadlines are the tick of
    /// registration plus a fixed timeout, so this order is also deadline order. Entries of
    /// requests that completed stay until their deadline passes and are skipped then, so
    /// completing a request costs nothing here.
    deadlines: VecDeque<(u64, RequestId)>,
}

impl Pending {
    fn len(&self) -> usize {
        self.writes.len() + self.reads.len()
    }

    fn add_write(&mut self, id: RequestId, w: PendingWrite) {
        if let Some(at) = w.at {
            self.writes_at.insert((at.index, id));
        }
        self.deadlines.push_back((w.deadline_tick, id));
        self.writes.insert(id, w);
    }

    fn add_read(&mut self, id: RequestId, r: PendingRead) {
        self.deadlines.push_back((r.deadline_tick, id));
        self.reads.insert(id, r);
    }

    fn take_write(&mut self, id: RequestId) -> Option<PendingWrite> {
        let w = self.writes.remove(&id)?;
        if let Some(at) = w.at {
            self.writes_at.remove(&(at.index, id));
        }
        Some(w)
    }

    fn take_read(&mut self, id: RequestId) -> Option<PendingRead> {
        let r = self.reads.remove(&id)?;
        if let Some(index) = r.index {
            self.reads_at.remove(&(index, id));
        }
        Some(r)
    }

    /// Records the index a pending read waits for.
    fn confirm_read(&mut self, id: RequestId, index: LogIndex) {
        if let Some(r) = self.reads.get_mut(&id)
            && r.index.is_none()
        {
            r.index = Some(index);
            self.reads_at.insert((index, id));
        }
    }

    /// Takes the earliest pending request whose deadline is `now` or earlier.
    fn next_expired(&mut self, now: u64) -> Option<RequestId> {
        while let Some(&(deadline, id)) = self.deadlines.front() {
            if deadline > now {
                return None;
            }
            self.deadlines.pop_front();
            let still_pending = self.writes.get(&id).map(|w| w.deadline_tick) == Some(deadline)
                || self.reads.get(&id).map(|r| r.deadline_tick) == Some(deadline);
            if still_pending {
                return Some(id);
            }
        }
        None
    }

    /// The writes appended here as leader at `index`.
    fn writes_appended_at(&self, index: LogIndex) -> Vec<RequestId> {
        self.writes_at
            .range((index, RequestId(0))..=(index, RequestId(u64::MAX)))
            .map(|(_, id)| *id)
            .collect()
    }

    /// The earliest confirmed read that may be served once `applied` is applied.
    fn next_servable_read(&self, applied: LogIndex) -> Option<RequestId> {
        self.reads_at.first().filter(|(i, _)| *i <= applied).map(|(_, id)| *id)
    }
}

/// What a `Ready` asks the storage to write, kept until the storage took all of it: while the
/// disk is full, writes wait here in order (see [`Replica::disk_full`]).
struct UnwrittenReady {
    number: u64,
    /// A snapshot installed from the leader: the log is reset to it first.
    reset: Option<SnapshotMeta>,
    entries: Vec<Entry>,
    membership: Option<Membership>,
    hard_state: Option<HardState>,
}

impl UnwrittenReady {
    fn is_empty(&self) -> bool {
        self.reset.is_none()
            && self.entries.is_empty()
            && self.membership.is_none()
            && self.hard_state.is_none()
    }

    /// Hands everything to the storage, in the order the crash rules need (module docs of
    /// `poll`). Safe to call again after a [`StorageError::NoSpace`]: the reset and the
    /// membership and hard state are idempotent, and an append of the same batch replaces the
    /// prefix an earlier try left.
    fn write(&self, storage: &mut Storage) -> Result<(), StorageError> {
        if let Some(meta) = &self.reset {
            storage.reset_to_snapshot(meta.last_included, meta.membership.clone())?;
        }
        // Entries before the hard state: a crash keeps some prefix of the writes, and a
        // durable commit index must never point past durable entries (found by the simulator,
        // seed 217).
        if !self.entries.is_empty() {
            storage.append(&self.entries)?;
        }
        // The configuration at the new commit index goes before the hard state, so a durable
        // commit index never runs ahead of the durable configuration (the core reads the
        // configuration entries after it back from the log on restart).
        if let Some(m) = &self.membership {
            storage.set_membership(m.clone())?;
        }
        if let Some(hs) = self.hard_state {
            storage.set_hard_state(hs)?;
        }
        Ok(())
    }
}

/// The first wait before writing again after the disk was found full; it doubles up to
/// [`DISK_FULL_RETRY_MS_MAX`] while the disk stays full.
pub const DISK_FULL_RETRY_MS_MIN: u64 = 100;
/// The longest wait between two tries to write to a full disk.
pub const DISK_FULL_RETRY_MS_MAX: u64 = 1_000;

/// Since when the disk is full, and when to try writing again.
#[derive(Clone, Copy, Debug)]
struct DiskFull {
    since_ms: u64,
    retry_at_ms: u64,
    backoff_ms: u64,
}

/// A `Ready` that was written and waits for a sync before its messages may leave.
struct Unsynced {
    number: u64,
    needs_sync: bool,
    messages: Vec<Message>,
}

/// One node of the cluster.
pub struct Replica {
    id: NodeId,
    node: Node<Storage>,
    kv: Store,
    cfg: ReplicaConfig,
    ticks: u64,
    now_ms: u64,
    pending: Pending,
    unsynced: VecDeque<Unsynced>,
    /// The highest ready number covered by the sync in flight.
    sync_in_flight: Option<u64>,
    /// The highest ready number covered by a finished sync.
    synced_upto: u64,
    /// The newest snapshot taken or installed here.
    snapshot_index: LogIndex,
    /// Entries and bytes applied since that snapshot (the policy's inputs).
    applied_since_snapshot: (u64, u64),
    /// Whether a snapshot job is out.
    snapshot_in_flight: bool,
    stats: SnapshotStats,
    /// The highest index applied to the state machine (or installed with a snapshot).
    applied: LogIndex,
    /// Lease deadlines on this replica's clock.
    lessor: lessor::Lessor,
    /// The last index at which this replica appended a lease expiry or checkpoint of its own;
    /// leases are renewed without the log only once it is applied.
    lessor_appended: LogIndex,
    /// Renewals this follower forwarded to the leader, by request.
    forwarded: BTreeMap<RequestId, Forwarded>,
    /// Forwarded renewals (and answers) received, handled at the next `poll`.
    forward_inbox: Vec<(NodeId, Term, forward::Forward)>,
    /// The next id (below [`OWN_REQUEST_BIT`]) for a forwarded renewal served as leader.
    next_own_request: u64,
    /// Forwarded renewals served without a heartbeat round (see `quorum_with`).
    renewals_without_round: u64,
    /// Pending requests that are membership changes (see `members`).
    conf_requests: BTreeSet<RequestId>,
    /// Membership changes applied in a joint configuration, answered once it is left.
    awaiting_simple: Vec<RequestId>,
    /// Whether a configuration entry or a snapshot was applied since the caller last asked.
    members_changed: bool,
    /// Storage writes of readies not yet taken, oldest first (the disk was full). Readies are
    /// written in order, so while this is not empty every new ready's writes join it.
    /// Invariant: empty unless `disk_full` is set.
    unwritten: VecDeque<UnwrittenReady>,
    /// Set while the log cannot be written or synced for lack of space; cleared once every
    /// write was taken and a sync began (or none was needed).
    disk_full: Option<DiskFull>,
    /// Operations that found no space: log writes, syncs, snapshots taken or received.
    no_space_total: u64,
}

/// Snapshot counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots this replica wrote of its own state.
    pub taken: u64,
    /// Snapshots received from a leader and installed.
    pub installed: u64,
    /// The last index of the newest snapshot.
    pub index: u64,
    /// Bytes of state-machine data in the last snapshot taken.
    pub last_bytes: u64,
}

impl Replica {
    /// Opens (or creates) a replica's storage in `dir` on `disk` and starts its node.
    ///
    /// A fresh directory is bootstrapped with `membership`; an existing one keeps the
    /// configuration it recorded. The state machine restarts from the newest snapshot and
    /// re-applies the committed log after it.
    pub fn open(
        cfg: ReplicaConfig,
        disk: Arc<dyn Disk>,
        dir: &Path,
        membership: Membership,
    ) -> Result<Replica, ReplicaError> {
        let mut storage = Storage::open(disk, dir, cfg.storage.clone())?;
        if storage.membership().voters.incoming.is_empty() && storage.snapshot().is_none() {
            storage.set_membership(membership)?;
            storage.sync()?;
        }
        let (kv, snapshot_index) = recover_snapshot(&mut storage, &cfg.kv)?;
        let mut raft_cfg = cfg.raft.clone();
        raft_cfg.applied = snapshot_index;
        let node = Node::new(raft_cfg, storage)?;
        let mut lessor = lessor::Lessor::new(cfg.lease);
        lessor.rebuild(&kv);
        #[cfg(feature = "planted-bugs")]
        {
            lessor.promotion_keeps_deadlines = cfg.planted_bugs.promotion_keeps_lease_deadlines;
        }
        let r = Replica {
            id: cfg.raft.id,
            node,
            kv,
            cfg,
            ticks: 0,
            now_ms: 0,
            pending: Pending::default(),
            unsynced: VecDeque::new(),
            sync_in_flight: None,
            synced_upto: 0,
            snapshot_index,
            applied_since_snapshot: (0, 0),
            snapshot_in_flight: false,
            stats: SnapshotStats { index: snapshot_index.0, ..SnapshotStats::default() },
            applied: snapshot_index,
            lessor,
            lessor_appended: LogIndex(0),
            forwarded: BTreeMap::new(),
            forward_inbox: Vec::new(),
            next_own_request: 0,
            renewals_without_round: 0,
            conf_requests: BTreeSet::new(),
            awaiting_simple: Vec::new(),
            members_changed: true,
            unwritten: VecDeque::new(),
            disk_full: None,
            no_space_total: 0,
        };
        r.check_pointers();
        Ok(r)
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The consensus node (read-only: for status and checkers).
    pub fn node(&self) -> &Node<Storage> {
        &self.node
    }

    /// The state machine (read-only).
    pub fn kv(&self) -> &Store {
        &self.kv
    }

    /// Role, term, leader.
    pub fn soft_state(&self) -> SoftState {
        self.node.soft_state()
    }

    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.node.role() == Role::Leader
    }

    /// The time lease `id` has left by this replica's clock (0 once past its deadline and
    /// not yet revoked), or `None` if the lease does not exist here. On the leader this is
    /// the deadline it expires the lease by; on a follower a close copy of it (measured from
    /// when this replica applied the grant, renewal or checkpoint). Answer `LeaseTimeToLive`
    /// with it after a linearizable barrier.
    pub fn lease_remaining_ms(&self, id: i64) -> Option<u64> {
        self.kv.lease(id)?;
        self.lessor.remaining_ms(id, self.now_ms)
    }

    /// Leases revoked because they expired, as applied by this replica since it started.
    pub fn leases_expired(&self) -> u64 {
        self.lessor.expired_total
    }

    /// Followers' forwarded renewals this replica took as leader without a heartbeat round
    /// since it started: the follower's message and this leader were the quorum (see
    /// [`tenure_raft::Node::quorum_with`]).
    pub fn renewals_without_round(&self) -> u64 {
        self.renewals_without_round
    }

    /// Lease renewals this replica answered as leader without the log since it started
    /// (see [`Replica::propose`]).
    pub fn leases_renewed_locally(&self) -> u64 {
        self.lessor.renewed_locally_total
    }

    /// Requests waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// This run's incarnation, as used in entries and read ids (0 where a planted bug makes
    /// the replica ignore it).
    fn incarnation(&self) -> u64 {
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bugs.completion_ignores_incarnation {
            return 0;
        }
        self.cfg.incarnation
    }

    /// The read id the core carries for request `id`: unique across runs, so that a leader's
    /// confirmation of an earlier run's read can never release one of this run's.
    fn read_id(&self, id: RequestId) -> ReadId {
        ReadId(self.incarnation().wrapping_add(id.0))
    }

    /// The request a read id of this run stands for (an earlier run's ids map to requests that
    /// are not pending).
    fn request_of_read(&self, id: ReadId) -> RequestId {
        RequestId(id.0.wrapping_sub(self.incarnation()))
    }

    /// Advances the clock: one tick of the core, and `now_ms` becomes the log time stamped on
    /// new proposals. Requests past their deadline complete with [`ClientError::Timeout`].
    pub fn tick(&mut self, now_ms: u64, out: &mut Output) {
        self.ticks += 1;
        self.now_ms = self.now_ms.max(now_ms);
        self.node.tick();
        for command in self.lessor.tick(self.now_ms, self.is_leader(), &self.kv) {
            let settles = matches!(command, Command::LeaseExpire(_) | Command::LeaseCheckpoint(_));
            if let Some(index) = self.propose_internal(&Proposal::new(command))
                && settles
            {
                self.lessor_appended = self.lessor_appended.max(index);
            }
        }
        while let Some(id) = self.pending.next_expired(self.ticks) {
            self.conf_requests.remove(&id);
            if self.pending.take_write(id).is_none()
                && let Some(read) = self.pending.take_read(id)
                && let Some(renewal) = &read.renew
                && id.0 & OWN_REQUEST_BIT != 0
            {
                self.refuse_remote(renewal, out);
                continue;
            }
            out.completions.push(Completion { id, result: Err(ClientError::Timeout), entry: None });
        }
        let ticks = self.ticks;
        let late: Vec<RequestId> = self
            .forwarded
            .iter()
            .filter(|(_, f)| f.fallback_tick <= ticks)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let fwd = self.forwarded.remove(&id).expect("listed");
            self.append(id, &fwd.proposal, out);
        }
    }

    /// Handles a message from a peer. Misaddressed, malformed or impossible messages are
    /// dropped and logged with the sender's id, and so is a `Snapshot` message whose data was
    /// not staged first (see [`Replica::snapshot_receiver`]).
    pub fn step(&mut self, msg: Message) {
        if let tenure_raft::MessageBody::App { data } = &msg.body {
            if msg.to != self.id || msg.from == self.id {
                tracing::warn!(replica = %self.id, from = %msg.from, "dropping a misaddressed message");
            } else if let Some(f) = forward::Forward::decode(data) {
                self.forward_inbox.push((msg.from, msg.term, f));
            } else {
                tracing::warn!(replica = %self.id, from = %msg.from, "dropping a malformed lease message");
            }
            return;
        }
        if let tenure_raft::MessageBody::Snapshot { meta } = &msg.body {
            let staged = self.node.log_view().open_snapshot(meta.last_included);
            if let Err(e) = staged {
                tracing::warn!(
                    replica = %self.id,
                    from = %msg.from,
                    snapshot = %meta.last_included,
                    "dropping a snapshot message whose data is not here: {e}"
                );
                return;
            }
        }
        // Bad input from the network is never a panic: a misaddressed, malformed or impossible
        // message is refused by the core and dropped here, with the sender named.
        let from = msg.from;
        if let Err(e) = self.node.step(msg) {
            tracing::warn!(replica = %self.id, %from, "dropping a message from a peer: {e}");
        }
    }

    /// Proposes a state-machine command on behalf of a client. The answer comes back as a
    /// [`Completion`] with the same `id` once the entry is applied here.
    ///
    /// A `LeaseRenew` may be answered without an entry (its completion then names none): on
    /// the leader, once a heartbeat round confirms its leadership; on a follower, by the leader
    /// it forwards the renewal to (see `lessor` and `forward`). Ids with the top bit set are
    /// reserved for the replica's own use.
    pub fn propose(&mut self, id: RequestId, proposal: &Proposal, out: &mut Output) {
        if self.disk_full.is_some() {
            // It would never be applied here until space is freed: say so now rather than let
            // the client wait for its deadline.
            out.completions.push(Completion {
                id,
                result: Err(ClientError::DiskFull),
                entry: None,
            });
            return;
        }
        if let Err(e) = self.kv.validate(&proposal.command) {
            out.completions.push(Completion { id, result: Err(ClientError::Kv(e)), entry: None });
            return;
        }
        debug_assert_eq!(id.0 & OWN_REQUEST_BIT, 0, "request ids with the top bit are reserved");
        if let Command::LeaseRenew(r) = &proposal.command {
            if self.is_leader()
                && self.lessor.renewable_locally(r.id, self.now_ms, &self.kv)
                && self.node.read_index(self.read_id(id)).is_ok()
            {
                // Renewed without the log once a heartbeat round confirms that this replica
                // still leads (see `renew_locally`).
                let deadline_tick = self.ticks + self.cfg.request_timeout_ticks;
                let renew = Some(Renewal::Local(Box::new(proposal.clone())));
                let read = PendingRead { request: None, renew, index: None, deadline_tick };
                self.pending.add_read(id, read);
                return;
            }
            if self.forward_renewal(id, proposal, out) {
                return;
            }
        }
        self.append(id, proposal, out);
    }

    /// On a follower that knows its leader: sends a client's renewal to the leader to be
    /// renewed without the log (see `forward`). Returns whether it was sent or answered.
    fn forward_renewal(&mut self, id: RequestId, proposal: &Proposal, out: &mut Output) -> bool {
        let Command::LeaseRenew(r) = &proposal.command else { return false };
        let ss = self.node.soft_state();
        let Some(leader) = ss.leader.filter(|&l| l != self.id && ss.role == Role::Follower) else {
            return false;
        };
        // Refused here what the entry would refuse anywhere (auth, alarms); a lease unknown
        // here may be one whose grant this follower has not applied yet: the leader says.
        match self.kv.renew_check(r, proposal.auth.as_ref()) {
            Ok(_) | Err(tenure_kv::Error::LeaseNotFound) => {}
            Err(e) => {
                out.completions.push(Completion {
                    id,
                    result: Err(ClientError::Kv(e)),
                    entry: None,
                });
                return true;
            }
        }
        let incarnation = self.incarnation();
        let f = forward::Forward::Renew { request: id.0, incarnation, lease: r.id };
        self.send_app(leader, f, out);
        let fallback_tick = self.ticks + u64::from(self.cfg.raft.election_ticks);
        self.forwarded
            .insert(id, Forwarded { proposal: Box::new(proposal.clone()), fallback_tick });
        true
    }

    fn send_app(&self, to: NodeId, f: forward::Forward, out: &mut Output) {
        let body = tenure_raft::MessageBody::App { data: f.encode() };
        out.messages.push(Message { from: self.id, to, term: self.node.term(), body });
    }

    /// Handles the forwarded renewals and answers that arrived since the last call.
    fn handle_forwards(&mut self, out: &mut Output) {
        use forward::{Forward, Outcome};
        for (from, term, f) in std::mem::take(&mut self.forward_inbox) {
            match f {
                Forward::Renew { request, incarnation, lease } => {
                    let answer = |outcome| Forward::Answer { request, incarnation, outcome };
                    if !self.is_leader()
                        || !self.lessor.renewable_locally(lease, self.now_ms, &self.kv)
                    {
                        self.send_app(from, answer(Outcome::UseLog), out);
                        continue;
                    }
                    let own = RequestId(OWN_REQUEST_BIT | self.next_own_request);
                    self.next_own_request = (self.next_own_request + 1) & !OWN_REQUEST_BIT;
                    let deadline_tick = self.ticks + self.cfg.request_timeout_ticks;
                    let renew = Some(Renewal::Remote { from, request, incarnation, lease });
                    let read = PendingRead { request: None, renew, index: None, deadline_tick };
                    if self.quorum_with(from, term) {
                        // The follower's message and this leader are the quorum a heartbeat
                        // round would ask for: served once everything committed when it
                        // arrived is applied (see `quorum_with`).
                        self.pending.add_read(own, read);
                        self.pending.confirm_read(own, self.node.committed());
                        self.renewals_without_round += 1;
                        continue;
                    }
                    if self.node.read_index(self.read_id(own)).is_err() {
                        self.send_app(from, answer(Outcome::UseLog), out);
                        continue;
                    }
                    self.pending.add_read(own, read);
                }
                Forward::Answer { request, incarnation, outcome } => {
                    if incarnation != self.incarnation() {
                        continue;
                    }
                    let id = RequestId(request);
                    let Some(fwd) = self.forwarded.remove(&id) else { continue };
                    let Command::LeaseRenew(r) = &fwd.proposal.command else {
                        unreachable!("only renewals are forwarded")
                    };
                    let result = match outcome {
                        Outcome::Renewed { ttl, revision } => {
                            let response =
                                tenure_kv::LeaseRenewResponse { revision, id: r.id, ttl };
                            Ok(Answer::Write(Response::LeaseRenew(response)))
                        }
                        Outcome::NotFound { .. } => {
                            Err(ClientError::Kv(tenure_kv::Error::LeaseNotFound))
                        }
                        Outcome::UseLog => {
                            self.append(id, &fwd.proposal, out);
                            continue;
                        }
                    };
                    out.completions.push(Completion { id, result, entry: None });
                }
            }
        }
    }

    /// A forwarded renewal served as leader whose read could not be served: the follower
    /// proposes it through the log.
    fn refuse_remote(&self, renewal: &Renewal, out: &mut Output) {
        if let Renewal::Remote { from, request, incarnation, .. } = *renewal {
            let outcome = forward::Outcome::UseLog;
            self.send_app(from, forward::Forward::Answer { request, incarnation, outcome }, out);
        }
    }

    /// Proposes `proposal` as a log entry (see [`Replica::propose`]).
    fn append(&mut self, id: RequestId, proposal: &Proposal, out: &mut Output) {
        let env = Envelope {
            log_time_ms: self.now_ms,
            origin: self.id.0,
            incarnation: self.incarnation(),
            request: id.0,
        };
        let data = env.encode(&proposal.encode());
        let deadline_tick = self.ticks + self.cfg.request_timeout_ticks;
        match self.node.propose(data.clone()) {
            Ok(Proposed::Appended(at)) => {
                self.pending.add_write(id, PendingWrite { data, at: Some(at), deadline_tick });
            }
            Ok(Proposed::Forwarded { .. }) => {
                self.pending.add_write(id, PendingWrite { data, at: None, deadline_tick });
            }
            Err(ProposeError::NotLeader { leader_hint: None }) => {
                out.completions.push(Completion {
                    id,
                    result: Err(ClientError::NoLeader),
                    entry: None,
                });
            }
            Err(ProposeError::NotLeader { leader_hint }) => {
                let result = Err(ClientError::NotLeader { leader_hint });
                out.completions.push(Completion { id, result, entry: None });
            }
            Err(e) => {
                let result = Err(ClientError::Refused(e.to_string()));
                out.completions.push(Completion { id, result, entry: None });
            }
        }
    }

    /// Proposes a command of the replica's own (lease expiries, checkpoints and refreshes):
    /// no client waits for it (request id 0), and if it cannot be proposed now it is proposed
    /// again later by whoever needs it. Returns the index it was appended at, as leader.
    fn propose_internal(&mut self, proposal: &Proposal) -> Option<LogIndex> {
        let env = Envelope {
            log_time_ms: self.now_ms,
            origin: self.id.0,
            incarnation: self.incarnation(),
            request: 0,
        };
        match self.node.propose(env.encode(&proposal.encode())) {
            Ok(Proposed::Appended(at)) => Some(at.index),
            Ok(Proposed::Forwarded { .. }) => None,
            Err(e) => {
                tracing::debug!(replica = %self.id, "lease proposal not made: {e}");
                None
            }
        }
    }

    /// Reads on behalf of a client, linearizably (ReadIndex) or from local state.
    pub fn read(
        &mut self,
        id: RequestId,
        request: RangeRequest,
        consistency: Consistency,
        out: &mut Output,
    ) {
        if consistency == Consistency::Serializable {
            let result = self.kv.range(&request).map(Answer::Read).map_err(ClientError::Kv);
            out.completions.push(Completion { id, result, entry: None });
            return;
        }
        self.read_index(id, Some(request), out);
    }

    /// A linearizable barrier: completes with an empty [`Answer::Read`] (no keys, the store's
    /// revision at that point) once this replica has applied through a read index the leader
    /// confirmed after the call (dissertation §6.4). Whatever state the caller reads after the
    /// completion (such as a [`tenure_kv::ReadView`] taken once it has been applied) answers
    /// a linearizable read, which lets the caller run the read itself, off the thread that
    /// drives the replica.
    pub fn read_barrier(&mut self, id: RequestId, out: &mut Output) {
        self.read_index(id, None, out);
    }

    fn read_index(&mut self, id: RequestId, request: Option<RangeRequest>, out: &mut Output) {
        match self.node.read_index(self.read_id(id)) {
            Ok(()) => {
                let deadline_tick = self.ticks + self.cfg.request_timeout_ticks;
                let read = PendingRead { request, renew: None, index: None, deadline_tick };
                self.pending.add_read(id, read);
            }
            Err(_) => {
                let result = Err(ClientError::NoLeader);
                out.completions.push(Completion { id, result, entry: None });
            }
        }
    }

    /// Runs the loop once: takes the core's output, sends, writes, applies. Returns a sync
    /// ticket when written state must be made durable: wait on it (on any thread) and hand the
    /// result to [`Replica::finish_sync`]. Returns whether there was any work.
    pub fn poll(&mut self, out: &mut Output) -> Result<(bool, Option<SyncTicket>), ReplicaError> {
        let forwards = !self.forward_inbox.is_empty();
        if forwards {
            self.handle_forwards(out);
        }
        if !self.node.has_ready() {
            if forwards {
                // A renewal served without a round may be servable at once.
                self.serve_reads(out);
                return Ok((true, None));
            }
            // Nothing new; but writes held back by a full disk are tried again when due.
            if !self.disk_full_retry_due() {
                return Ok((false, None));
            }
            let waiting = self.unwritten.len();
            self.write_unwritten()?;
            let ticket = self.maybe_begin_sync()?;
            let worked = ticket.is_some() || self.unwritten.len() < waiting;
            return Ok((worked, ticket));
        }
        let mut rd = self.node.ready();
        if let Some(ss) = rd.soft_state {
            out.changes.push(ss);
        }
        // 0. A snapshot from the leader replaces the state machine (now) and the log (with
        //    this ready's writes, before its entries).
        let reset = match rd.snapshot.take() {
            Some(meta) => Some(self.install_snapshot(meta)?),
            None => None,
        };
        // 1. Messages that depend on nothing durable leave at once (the leader's appends go
        //    out while its own write is in progress).
        out.messages.append(&mut rd.messages);
        // 2. Write; the sync comes later and may cover several readies.
        // A commit-index-only hard state is written now and made durable by the next sync
        // (or at shutdown): it needs no fsync of its own (see `Ready::must_sync`).
        // The storage may refuse for lack of space: the writes then wait, in order, and
        // nothing that depends on them (acknowledgements, votes, applying) happens meanwhile,
        // since the sync that would cover them waits too (Raft's persistence rule, Figure 2).
        let needs_sync = rd.must_sync();
        let write = UnwrittenReady {
            number: rd.number,
            reset,
            entries: std::mem::take(&mut rd.entries),
            membership: rd.membership.take(),
            hard_state: rd.hard_state,
        };
        if !write.is_empty() {
            self.unwritten.push_back(write);
        }
        self.write_unwritten()?;
        if needs_sync || !rd.persisted_messages.is_empty() {
            let messages = std::mem::take(&mut rd.persisted_messages);
            self.unsynced.push_back(Unsynced { number: rd.number, needs_sync, messages });
        }
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bugs.ack_before_durable_on_full_disk && !self.unwritten.is_empty() {
            for u in &mut self.unsynced {
                out.messages.append(&mut u.messages);
            }
        }
        // 3. Apply what is committed and durable here.
        for entry in std::mem::take(&mut rd.committed_entries) {
            self.apply(entry, out)?;
        }
        // 4. Reads.
        for rs in rd.read_states {
            let id = self.request_of_read(rs.id);
            self.pending.confirm_read(id, rs.index);
        }
        for read in rd.dropped_reads {
            let id = self.request_of_read(read);
            if let Some(r) = self.pending.take_read(id) {
                if id.0 & OWN_REQUEST_BIT != 0 {
                    if let Some(renewal) = &r.renew {
                        self.refuse_remote(renewal, out);
                    }
                    continue;
                }
                let result = Err(ClientError::LeaderChanged);
                out.completions.push(Completion { id, result, entry: None });
            }
        }
        self.serve_reads(out);
        self.release_unsynced(out);
        let ticket = self.maybe_begin_sync()?;
        self.check_pointers();
        Ok((true, ticket))
    }

    /// Completes a sync started by [`Replica::poll`]: acknowledges the covered readies to the
    /// core and releases the messages that waited for them. May return the next ticket.
    pub fn finish_sync(
        &mut self,
        done: FinishedSync,
        out: &mut Output,
    ) -> Result<Option<SyncTicket>, ReplicaError> {
        let covered = self.sync_in_flight.take().expect("finish_sync without a sync in flight");
        self.node.log_view_mut().finish_sync(done)?;
        self.synced_upto = covered;
        self.node.on_persisted(covered);
        self.release_unsynced(out);
        // The acknowledgement may have committed entries (leader) or produced messages.
        self.maybe_begin_sync()
    }

    /// Polls and syncs inline until there is nothing left to do: the simple synchronous loop,
    /// used by tests and the simulator when the disk is not slowed.
    /// Snapshot jobs run inline too.
    pub fn run_until_idle(&mut self, out: &mut Output) -> Result<(), ReplicaError> {
        loop {
            let (worked, mut ticket) = self.poll(out)?;
            while let Some(t) = ticket {
                ticket = self.finish_sync(t.wait(), out)?;
            }
            if let Some(job) = self.take_snapshot_job()? {
                self.finish_snapshot(job.run())?;
            }
            if !worked {
                return Ok(());
            }
        }
    }

    // ----- Snapshots ------------------------------------------------------------------------

    /// A snapshot job, if the policy says one is due and none is out. Run it on any thread
    /// and pass the result to [`Replica::finish_snapshot`]. The apply loop pauses only to
    /// copy the store's index.
    pub fn take_snapshot_job(&mut self) -> Result<Option<SnapshotJob>, ReplicaError> {
        let (entries, bytes) = self.applied_since_snapshot;
        if self.snapshot_in_flight || !self.cfg.snapshot.due(entries, bytes) {
            return Ok(None);
        }
        let applied = self.applied;
        if applied <= self.snapshot_index {
            return Ok(None);
        }
        match self.snapshot_job_at(applied) {
            Ok(job) => Ok(Some(job)),
            Err(ReplicaError::Storage(e)) if e.is_no_space() => {
                self.snapshot_no_space(&e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn snapshot_no_space(&mut self, e: &StorageError) {
        self.no_space_total += 1;
        tracing::warn!(
            replica = %self.id,
            "snapshot abandoned, the disk is full ({e}); the log is kept and a snapshot is \
             tried again after the next {} entries",
            self.cfg.snapshot.entries
        );
    }

    fn snapshot_job_at(&mut self, applied: LogIndex) -> Result<SnapshotJob, ReplicaError> {
        let term = self.node.entry_term(applied).ok_or_else(|| {
            ReplicaError::Snapshot(format!("no term for applied index {applied} in the log"))
        })?;
        let meta = SnapshotMeta {
            last_included: EntryId::new(term, applied),
            membership: self.node.membership_at(applied).clone(),
        };
        // Counted from now whether or not the writer can start: a snapshot that finds no space
        // is tried again after as many entries as the policy asks between two.
        self.applied_since_snapshot = (0, 0);
        let writer = self.node.log_view().snapshot_writer(meta.clone())?;
        self.snapshot_in_flight = true;
        Ok(SnapshotJob { store: self.kv.clone(), writer, meta })
    }

    /// Completes a snapshot job: records the snapshot and compacts the log up to the policy's
    /// trailing window behind it. A failed job is fatal (its error is a storage error), unless
    /// it found no space: then the snapshot is abandoned (its file is gone) and tried again
    /// after the policy's count of entries.
    pub fn finish_snapshot(&mut self, done: SnapshotDone) -> Result<(), ReplicaError> {
        self.snapshot_in_flight = false;
        let (meta, bytes) = match done.result {
            Ok(r) => r,
            Err(e) if e.is_no_space() => {
                self.snapshot_no_space(&e);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let index = meta.last_included.index;
        let storage = self.node.log_view_mut();
        storage.note_snapshot(meta);
        if index > self.snapshot_index {
            self.snapshot_index = index;
            self.stats.index = index.0;
        }
        self.stats.taken += 1;
        self.stats.last_bytes = bytes;
        let keep = self.cfg.snapshot.catchup_entries;
        let upto = LogIndex(index.0.saturating_sub(keep));
        let storage = self.node.log_view_mut();
        // Not past what the storage took: a log a full disk holds writes back for may end
        // before the snapshot (the core's view runs ahead of it until they are written).
        if upto > storage.snapshot_point().index && upto <= storage.last_index() {
            match storage.compact(upto) {
                Ok(()) => {}
                // The compaction record did not fit (the active segment is full and the next
                // cannot be made): the next snapshot compacts instead.
                Err(e) if e.is_no_space() => self.no_space_total += 1,
                Err(e) => return Err(e.into()),
            }
        }
        self.check_pointers();
        Ok(())
    }

    /// Opens the newest snapshot, to stream to a follower that a `Snapshot` message names.
    /// It may be newer than the message says; send its [`SnapshotReader::meta`] with it.
    pub fn snapshot_to_send(&self) -> Result<Option<SnapshotReader>, ReplicaError> {
        Ok(self.node.log_view().latest_snapshot()?)
    }

    /// A writer for a snapshot streamed from the leader. Write its chunks, `finish` it (which
    /// makes it durable), then [`Replica::step`] the `Snapshot` message that names it.
    pub fn snapshot_receiver(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, ReplicaError> {
        Ok(self.node.log_view().snapshot_writer(meta)?)
    }

    /// Copies the snapshot a leader's `Snapshot` message asks for from `self` (the leader) to
    /// `receiver`'s directory, chunk by chunk, and returns the message to step into the
    /// receiver (naming the snapshot actually sent, which may be newer). For callers whose
    /// replicas share a process (tests, the simulator); a network transport streams the same
    /// chunks instead.
    pub fn copy_snapshot_to(
        &self,
        receiver: &Replica,
        msg: &Message,
    ) -> Result<Message, ReplicaError> {
        let mut reader = self
            .snapshot_to_send()?
            .ok_or_else(|| ReplicaError::Snapshot("no snapshot to send".into()))?;
        let meta = reader.meta().clone();
        let mut writer = receiver.snapshot_receiver(meta.clone())?;
        while let Some(chunk) = reader.next_chunk()? {
            writer.write_chunk(&chunk)?;
        }
        writer.finish()?;
        Ok(Message { body: tenure_raft::MessageBody::Snapshot { meta }, ..msg.clone() })
    }

    /// Reports how a snapshot transfer to `to` ended (see [`Node::report_snapshot`]).
    pub fn report_snapshot(&mut self, to: NodeId, status: SnapshotStatus) {
        self.node.report_snapshot(to, status);
    }

    /// Snapshot counters.
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.stats
    }

    /// Installs a snapshot the core accepted from the leader: the state machine is restored
    /// from the staged file and the log replaced by one that starts after it.
    /// The log's part (noting the snapshot and resetting the log to it) is the ready's first
    /// write: the returned metadata, for [`UnwrittenReady::reset`].
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<SnapshotMeta, ReplicaError> {
        let storage = self.node.log_view_mut();
        let reader = storage.open_snapshot(meta.last_included)?;
        // The old state goes first, so that only one copy of the state is ever in memory.
        self.kv =
            Store::new(self.cfg.kv.clone()).map_err(|e| ReplicaError::KvConfig(e.to_string()))?;
        self.kv = restore_store(reader, &self.cfg.kv, &meta)?;
        self.lessor.rebuild(&self.kv);
        self.members_changed = true;
        // The file is durable already (staged before the message was stepped).
        self.node.log_view_mut().note_snapshot(meta.clone());
        self.snapshot_index = meta.last_included.index;
        self.applied = self.snapshot_index;
        self.applied_since_snapshot = (0, 0);
        self.stats.installed += 1;
        self.stats.index = self.snapshot_index.0;
        tracing::info!(
            replica = %self.id,
            snapshot = %meta.last_included,
            "installed a snapshot from the leader"
        );
        Ok(meta)
    }

    /// Asserts the pointer chain `first - 1 <= snapshot <= applied <= committed <= last` (with
    /// the snapshot being the newest one taken or installed here).
    fn check_pointers(&self) {
        let first = self.node.log_view().first_index();
        let (applied, committed, last) =
            (self.applied, self.node.committed(), self.node.last_index());
        assert!(
            first.prev() <= self.snapshot_index
                && self.snapshot_index <= applied
                && applied <= committed
                && committed <= last,
            "{}: log pointer chain broken: first={first} snapshot={} applied={applied} \
             committed={committed} last={last}",
            self.id,
            self.snapshot_index,
        );
    }

    /// Makes everything written so far durable, inline, including a commit index that was
    /// written lazily (see `Ready::must_sync`): for shutdown, once no sync is in flight.
    ///
    /// On a full disk, what could not be written is dropped as a crash would drop it (it was
    /// never acknowledged), with a warning, rather than failing the shutdown.
    pub fn sync_for_shutdown(&mut self) -> Result<(), ReplicaError> {
        assert!(self.sync_in_flight.is_none(), "sync_for_shutdown with a sync in flight");
        if let Err(e) =
            self.write_unwritten_now().and_then(|()| Ok(self.node.log_view_mut().sync()?))
        {
            match &e {
                ReplicaError::Storage(se) if se.is_no_space() => tracing::warn!(
                    replica = %self.id,
                    "shutting down with writes the full disk did not take (never acknowledged): {e}"
                ),
                _ => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes every waiting write now, whatever the backoff; fails on the first that finds no
    /// space.
    fn write_unwritten_now(&mut self) -> Result<(), ReplicaError> {
        while let Some(w) = self.unwritten.front() {
            w.write(self.node.log_view_mut())?;
            self.unwritten.pop_front();
        }
        Ok(())
    }

    /// Whether a sync is in flight.
    pub fn sync_in_flight(&self) -> bool {
        self.sync_in_flight.is_some()
    }

    fn maybe_begin_sync(&mut self) -> Result<Option<SyncTicket>, ReplicaError> {
        if self.sync_in_flight.is_some() || self.disk_full_waiting() {
            return Ok(None);
        }
        // A sync covers only readies whose writes the storage took.
        let first_unwritten = self.unwritten.front().map_or(u64::MAX, |w| w.number);
        let last = self
            .unsynced
            .iter()
            .rev()
            .find(|u| u.needs_sync && u.number < first_unwritten)
            .map(|u| u.number);
        let Some(last) = last else {
            if self.unwritten.is_empty() {
                self.disk_full_cleared();
            }
            return Ok(None);
        };
        match self.node.log_view_mut().begin_sync() {
            Ok(ticket) => {
                self.sync_in_flight = Some(last);
                if self.unwritten.is_empty() {
                    self.disk_full_cleared();
                }
                Ok(Some(ticket))
            }
            Err(e) if e.is_no_space() => {
                self.note_no_space("sync", &e);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Hands the waiting writes to the storage, oldest first, unless the disk is full and the
    /// next try is not due. Stops at the first that finds no space.
    fn write_unwritten(&mut self) -> Result<(), ReplicaError> {
        if self.unwritten.is_empty() || self.disk_full_waiting() {
            return Ok(());
        }
        while let Some(w) = self.unwritten.front() {
            match w.write(self.node.log_view_mut()) {
                Ok(()) => {
                    self.unwritten.pop_front();
                }
                Err(e) if e.is_no_space() => {
                    self.note_no_space("log write", &e);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether the disk is full and the next try to write is not due yet.
    fn disk_full_waiting(&self) -> bool {
        self.disk_full.is_some_and(|f| self.now_ms < f.retry_at_ms)
    }

    /// Whether the disk is full and the next try to write is due.
    fn disk_full_retry_due(&self) -> bool {
        self.disk_full.is_some_and(|f| self.now_ms >= f.retry_at_ms)
    }

    /// The log found no space: wait before trying again (doubling the wait while it stays
    /// full), and, as leader, hand leadership to the most up-to-date voter: a leader that
    /// cannot make its own log durable cannot apply anything new, so a member with space
    /// should lead.
    fn note_no_space(&mut self, what: &str, e: &StorageError) {
        self.no_space_total += 1;
        let now = self.now_ms;
        let full = match self.disk_full {
            None => {
                tracing::warn!(
                    replica = %self.id,
                    "the disk is full ({what}: {e}): this member writes nothing new, acknowledges \
                     and votes for nothing it has not made durable, and tries again every \
                     {DISK_FULL_RETRY_MS_MIN}..{DISK_FULL_RETRY_MS_MAX} ms"
                );
                DiskFull {
                    since_ms: now,
                    retry_at_ms: now + DISK_FULL_RETRY_MS_MIN,
                    backoff_ms: DISK_FULL_RETRY_MS_MIN,
                }
            }
            Some(f) => {
                let backoff_ms = (f.backoff_ms * 2).min(DISK_FULL_RETRY_MS_MAX);
                DiskFull { retry_at_ms: now + backoff_ms, backoff_ms, ..f }
            }
        };
        self.disk_full = Some(full);
        if self.is_leader() {
            self.hand_over_leadership();
        }
    }

    fn disk_full_cleared(&mut self) {
        if let Some(f) = self.disk_full.take() {
            tracing::info!(
                replica = %self.id,
                full_ms = self.now_ms.saturating_sub(f.since_ms),
                "the disk has space again: writing and syncing as before"
            );
        }
    }

    /// Starts a leadership transfer to the voter whose log matches the most of ours.
    fn hand_over_leadership(&mut self) {
        let status = self.node.status();
        let membership = self.node.membership();
        let target = status
            .matched
            .iter()
            .filter(|(id, _)| **id != self.id && membership.is_voter(**id))
            .max_by_key(|(id, matched)| (**matched, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(to) = target {
            tracing::info!(replica = %self.id, %to, "handing leadership over: the disk is full");
            if let Err(e) = self.node.transfer_leadership(to) {
                tracing::debug!(replica = %self.id, "no leadership transfer: {e}");
            }
        }
    }

    /// Entries `lo..=hi` of the log as the consensus core sees it: the storage's, with the
    /// writes a full disk holds back laid over them in order (they may replace a suffix). For
    /// checkers; `lo` must not be below the storage's first index.
    pub fn log_entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
    ) -> Result<Vec<Entry>, tenure_raft::LogError> {
        let storage = self.node.log_view();
        let stored_hi = hi.min(storage.last_index());
        let mut out =
            if lo <= stored_hi { storage.read_entries(lo, stored_hi)? } else { Vec::new() };
        for w in &self.unwritten {
            if w.reset.is_some() {
                out.clear();
            }
            if let Some(first) = w.entries.first() {
                out.retain(|e| e.index() < first.index());
                out.extend(
                    w.entries.iter().filter(|e| lo <= e.index() && e.index() <= hi).cloned(),
                );
            }
        }
        Ok(out)
    }

    /// Whether this replica's disk is full: its log writes or syncs wait for space (see the
    /// crate documentation, "A full disk"). While it is, proposals through it fail with
    /// [`ClientError::DiskFull`].
    pub fn disk_full(&self) -> bool {
        self.disk_full.is_some()
    }

    /// Operations that found no space on the disk so far: log writes, syncs, snapshots taken
    /// or received here. For metrics.
    pub fn no_space_total(&self) -> u64 {
        self.no_space_total
    }

    /// Counts a snapshot that was abandoned for lack of space (the caller's receiver, or a
    /// job): not fatal, it is retried later.
    pub fn note_snapshot_no_space(&mut self) {
        self.no_space_total += 1;
    }

    /// Releases, in order, the messages of readies that are durable: those covered by a
    /// finished sync, and those that wrote nothing and follow durable ones.
    fn release_unsynced(&mut self, out: &mut Output) {
        while let Some(front) = self.unsynced.front() {
            if front.needs_sync && front.number > self.synced_upto {
                break;
            }
            let u = self.unsynced.pop_front().expect("front exists");
            self.node.on_persisted(u.number);
            out.messages.extend(u.messages);
        }
    }

    fn apply(&mut self, entry: Entry, out: &mut Output) -> Result<(), ReplicaError> {
        let index = entry.index();
        self.applied_since_snapshot.0 += 1;
        self.applied_since_snapshot.1 += entry.data.len() as u64;
        if entry.kind == EntryKind::Normal {
            let (env, proposal) = match Envelope::decode(&entry.data) {
                Some(parts) => parts,
                None => {
                    // Every replica sees the same bytes and skips them alike.
                    self.node_applied(index);
                    out.applied.push(entry);
                    return Ok(());
                }
            };
            // The entry's payload is its own allocation (the log and the peer transport copy
            // each entry out of the buffers they read), so the store may keep values as
            // slices of it: one copy in memory, shared with the log's entry cache.
            let outcome =
                self.kv.apply_shared(index.0, env.log_time_ms, &entry.data.slice_ref(proposal));
            if let Some(e) = outcome.as_ref().err().filter(|e| !e.is_deterministic()) {
                return Err(ReplicaError::StateMachine { index, error: e.clone() });
            }
            out.events.append(&mut self.kv.take_events());
            for change in self.kv.take_lease_changes() {
                self.lessor.apply(change);
                #[cfg(feature = "planted-bugs")]
                if self.cfg.planted_bugs.lease_deadline_from_last_tick {
                    self.lessor.clock_now(self.now_ms);
                }
            }
            if let Ok(Response::LeaseExpire(r)) = &outcome {
                self.lessor.expired_total += r.revoked.len() as u64;
            }
            // Request 0 is the replica's own proposal (see `propose_internal`): no one waits.
            if env.origin == self.id.0 && env.incarnation == self.incarnation() && env.request != 0
            {
                let id = RequestId(env.request);
                if self.is_entry_of(id, &entry) {
                    self.pending.take_write(id);
                    let result = outcome.map(Answer::Write).map_err(ClientError::Kv);
                    out.completions.push(Completion { id, result, entry: Some(entry.id) });
                }
            }
        } else if entry.kind == EntryKind::Config {
            self.apply_config(&entry, out)?;
        }
        self.fail_replaced_writes(index, entry.term(), out);
        self.node_applied(index);
        out.applied.push(entry);
        Ok(())
    }

    /// Whether `entry`, which names request `id` of this run, is the entry that request
    /// proposed: it must carry exactly the proposed bytes. Anything else is not this
    /// request's answer (it would take an id collision, which incarnations rule out; the
    /// check makes a wrong answer impossible even then).
    fn is_entry_of(&self, id: RequestId, entry: &Entry) -> bool {
        let Some(w) = self.pending.writes.get(&id) else { return false };
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bugs.completion_ignores_incarnation {
            return true;
        }
        if w.data != entry.data {
            tracing::error!(
                replica = %self.id,
                entry = %entry.id,
                request = id.0,
                "an applied entry names a pending request of this run but is not its proposal; \
                 not answering the request from it"
            );
            return false;
        }
        true
    }

    /// A write this replica appended as leader at `index` but whose slot now holds an entry of
    /// another term was lost to a leader change.
    fn fail_replaced_writes(&mut self, index: LogIndex, term: Term, out: &mut Output) {
        for id in self.pending.writes_appended_at(index) {
            let replaced =
                self.pending.writes.get(&id).and_then(|w| w.at).is_some_and(|at| at.term != term);
            if replaced {
                self.pending.take_write(id);
                let result = Err(ClientError::LeaderChanged);
                out.completions.push(Completion { id, result, entry: None });
            }
        }
    }

    fn node_applied(&mut self, index: LogIndex) {
        self.applied = index;
        self.node.on_applied(index);
    }

    fn serve_reads(&mut self, out: &mut Output) {
        let applied = self.applied;
        while let Some(id) = self.pending.next_servable_read(applied) {
            let r = self.pending.take_read(id).expect("an indexed read is pending");
            match r.renew {
                Some(Renewal::Local(proposal)) => {
                    self.renew_locally(id, &proposal, out);
                    continue;
                }
                Some(Renewal::Remote { from, request, incarnation, lease }) => {
                    let outcome = self.renew_remote(lease);
                    let answer = forward::Forward::Answer { request, incarnation, outcome };
                    self.send_app(from, answer, out);
                    continue;
                }
                None => {}
            }
            let result = match &r.request {
                Some(request) => self.kv.range(request).map(Answer::Read).map_err(ClientError::Kv),
                None => Ok(Answer::Read(RangeResponse {
                    revision: self.kv.revision(),
                    ..RangeResponse::default()
                })),
            };
            out.completions.push(Completion { id, result, entry: None });
        }
    }
}

impl Replica {
    /// Answers a `LeaseRenew` whose read index is confirmed and applied: renewed without the
    /// log if this replica still leads and may (see `lessor::Lessor::renewable_locally`),
    /// otherwise through the log after all.
    ///
    /// Why an answer without the log is safe (etcd's renewals work the same way): the
    /// confirmation came from a quorum after the request arrived, so any later leader was
    /// elected after the client sent it, and a new leader gives every lease whose last entry
    /// is a renewal (`remaining_ms` `None`) its whole TTL from its promotion, plus the
    /// promotion extension for clock drift. The read index covers this leader's first entry of
    /// its term, so every expiry or checkpoint an earlier leader (or an earlier run of this
    /// one) proposed has been applied; this leader's own must be applied too
    /// (`lessor_appended`): a checkpoint applied after the renewal would shorten it.
    fn renew_locally(&mut self, id: RequestId, proposal: &Proposal, out: &mut Output) {
        let Command::LeaseRenew(r) = &proposal.command else {
            unreachable!("only renewals wait as renewals")
        };
        if !self.may_renew_locally(r.id) {
            self.append(id, proposal, out);
            return;
        }
        let result = match self.kv.renew_check(r, proposal.auth.as_ref()) {
            Ok(response) => {
                self.lessor.renew_locally(r.id, &self.kv);
                Ok(Answer::Write(Response::LeaseRenew(response)))
            }
            Err(e) => Err(ClientError::Kv(e)),
        };
        out.completions.push(Completion { id, result, entry: None });
    }

    /// Whether the leader may renew `lease` without the log now that its read index is
    /// confirmed and applied (see `renew_locally`).
    fn may_renew_locally(&self, lease: i64) -> bool {
        self.is_leader()
            && self.applied >= self.lessor_appended
            && self.lessor.renewable_locally(lease, self.now_ms, &self.kv)
    }

    /// Whether a renewal that `from` forwarded in `term` may be served without a heartbeat
    /// round. The follower wrote it as this leader's follower in this leader's term, and the
    /// two are a quorum that no leader of a later term could have been elected without
    /// ([`tenure_raft::Node::quorum_with`]: two or three voters, the configuration settled),
    /// so no later leader existed when the follower sent it: the confirmation a heartbeat
    /// round gives (see `renew_locally`), obtained from the message itself. Its read index is
    /// this leader's commit index when it arrived, which covers every expiry, checkpoint or
    /// revoke acknowledged before (the leader has committed an entry of its term).
    fn quorum_with(&self, from: NodeId, term: Term) -> bool {
        term == self.node.term() && self.node.quorum_with(from)
    }

    /// A follower's forwarded renewal of `lease`, its read index confirmed and applied: the
    /// same rules as `renew_locally`. The follower checked the client's permissions.
    fn renew_remote(&mut self, lease: i64) -> forward::Outcome {
        let revision = self.kv.revision();
        if self.may_renew_locally(lease) {
            let ttl = self.kv.lease(lease).map_or(0, |l| l.ttl);
            self.lessor.renew_locally(lease, &self.kv);
            return forward::Outcome::Renewed { ttl, revision };
        }
        if self.is_leader() && self.kv.lease(lease).is_none() {
            // Linearizable: everything committed before the renewal arrived is applied here.
            return forward::Outcome::NotFound { revision };
        }
        forward::Outcome::UseLog
    }
}

/// Restart: brings the log in line with the newest snapshot file and restores the state
/// machine from it. Returns the store and the snapshot's index (0 without one).
///
/// A snapshot file newer than the log (received from a leader just before a crash, before its
/// install was durable) is installed now: a snapshot only ever holds committed state, so the
/// log is reset to it unless the log already holds its last entry.
fn recover_snapshot(
    storage: &mut Storage,
    kv_cfg: &tenure_kv::Config,
) -> Result<(Store, LogIndex), ReplicaError> {
    let new_store =
        || Store::new(kv_cfg.clone()).map_err(|e| ReplicaError::KvConfig(e.to_string()));
    let Some(meta) = storage.snapshot() else {
        let base = storage.snapshot_point();
        if base.index.0 > 0 {
            return Err(ReplicaError::Snapshot(format!(
                "the log in {} is compacted through {base} but no snapshot file covers it",
                storage.dir().display()
            )));
        }
        return Ok((new_store()?, LogIndex(0)));
    };
    let snap = meta.last_included;
    let base = storage.snapshot_point();
    if snap.index < base.index {
        return Err(ReplicaError::Snapshot(format!(
            "the log in {} is compacted through {base}, past the newest snapshot {snap}",
            storage.dir().display()
        )));
    }
    let mut changed = false;
    if storage.term(snap.index) != Ok(snap.term) {
        storage.reset_to_snapshot(snap, meta.membership.clone())?;
        changed = true;
    }
    let hs = storage.hard_state();
    if hs.commit < snap.index {
        // The membership recorded is the one at the commit index (`Ready::membership`).
        if !changed {
            storage.set_membership(meta.membership.clone())?;
        }
        storage.set_hard_state(tenure_raft::HardState { commit: snap.index, ..hs })?;
        changed = true;
    }
    if changed {
        storage.sync()?;
    }
    let reader = storage.open_snapshot(snap)?;
    let store = restore_store(reader, kv_cfg, &meta)?;
    Ok((store, snap.index))
}

/// Restores a store from a snapshot file and checks that it is the state at `meta`.
fn restore_store(
    reader: SnapshotReader,
    kv_cfg: &tenure_kv::Config,
    meta: &SnapshotMeta,
) -> Result<Store, ReplicaError> {
    let path = reader.path().to_path_buf();
    let mut input = snapshot::ChunkReader::new(reader);
    let store = match Store::restore(kv_cfg.clone(), &mut input) {
        Ok(store) => store,
        Err(e) => {
            if let Some(storage_error) = input.error.take() {
                return Err(storage_error.into());
            }
            return Err(ReplicaError::Snapshot(format!("{}: {e}", path.display())));
        }
    };
    if store.applied_index() > meta.last_included.index.0 {
        return Err(ReplicaError::Snapshot(format!(
            "{}: the state machine applied index {} is past the snapshot's {}",
            path.display(),
            store.applied_index(),
            meta.last_included
        )));
    }
    Ok(store)
}
