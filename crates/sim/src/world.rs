//! The simulated world: nodes running the production [`Replica`] code over [`SimDisk`]s, a
//! network that drops, duplicates, delays and partitions, clocks that drift, clients with
//! sessions, and a discrete-event scheduler. One [`SimRng`] drives every choice, so a seed
//! replays exactly.
//!
//! A run has two phases (after TigerBeetle's VOPR): a **safety phase** with the seed's faults,
//! checked as it goes, then a **liveness phase** in which every fault is healed and every
//! node restarted: a leader must emerge and every pending client request complete within a
//! bound.
//!
//! Snapshots (Raft §7) run as they do in production, with their races: a node's snapshot job is
//! taken after it polls, writes its file after a random delay and is finished (the log
//! compacted) a little later, unless a crash discards it first. A leader's `Snapshot` message
//! carries the sender's newest snapshot through the network as a stream of chunks, written into
//! the receiver's directory one by one (each chunk takes its size over the profile's bandwidth),
//! made durable, then stepped into the receiver; the sender hears `Delivered` or, if the stream
//! was lost, cut or its receiver went down, `Failed`. Crashes may fall between any two steps.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use tenure_kv::{
    Command, CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    HistoryError, Proposal, PutRequest, RangeRequest, RequestOp, Response, RevisionEvents, Store,
    TxnRequest, WatchCursor, WatchSpec,
};
use tenure_raft::{
    ConfigEntry, EntryId, EntryKind, LogIndex, LogView, Membership, Message, MessageBody, NodeId,
    Role, SnapshotStatus, Term,
};
use tenure_replica::{
    Answer, ClientError, Completion, Consistency, Envelope, MemberRequest, Output, Replica,
    ReplicaConfig, RequestId, SnapshotDone, SnapshotJob, SnapshotPolicy,
};
use tenure_storage::{CrashMode, SimDisk, SnapshotWriter, SyncTicket};

use crate::auth::{AuthChecker, AuthCounts, AuthWorkload, Observed, carries_auth};
use crate::checkers::{
    Checkers, EntrySeen, SnapshotEvent, Violation, check_answer_source, digest, state_digest,
};
use crate::lease::{LeaseBounds, LeaseWorkload, check_leases};
use crate::linearizability::{OpKind, Operation as HistOp, Status};
use crate::lock::{LockRequest, LockWorkload, check_lock};
use crate::membership::{ChurnCounts, Operator, OperatorRequest, OperatorTransfer, QuorumChecker};
use crate::rng::SimRng;
use crate::watch::{EventReference, WatchObservation, check_watch};

/// Milliseconds of simulated time.
pub type Millis = u64;

/// A bound on the events of one run, so a runaway world fails its seed instead of the machine.
pub const EVENTS_MAX: u64 = 3_000_000;

/// Nominal tick interval of every node's clock.
pub const TICK_MS: Millis = 10;
/// Election timeout in ticks (`T`; timeouts are drawn from `[T, 2T)`).
pub const ELECTION_TICKS: u32 = 10;
/// A snapshot's data crosses the simulated network in chunks of at most this size, so that a
/// transfer has crash points between chunks even for the simulator's small state machines.
pub const TRANSFER_CHUNK_BYTES: usize = 256;

/// Which faults a run injects and how often ("swarm testing": each seed picks its own).
#[derive(Clone, Debug)]
pub struct Profile {
    /// Cluster size.
    pub nodes: u64,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is delayed by up to several election timeouts (which also
    /// reorders it).
    pub long_delay: f64,
    /// Mean time between partition changes (`None`: no partitions).
    pub partition_every: Option<Millis>,
    /// Mean time between crashes (`None`: no crashes).
    pub crash_every: Option<Millis>,
    /// Mean time between pauses (`None`: no pauses).
    pub pause_every: Option<Millis>,
    /// Largest clock drift, in percent of the tick interval.
    pub drift_percent: u64,
    /// Largest fsync latency (0: instant).
    pub sync_ms_max: Millis,
    /// Largest append message, in bytes (small values split appends into many messages).
    pub append_bytes_max: u64,
    /// Appends in flight per follower.
    pub inflight_appends_max: usize,
    /// Serve reads from a lease (with a drift bound covering the profile's drift) instead of
    /// a heartbeat round. Never combined with pauses: a paused leader's clock stops, which no
    /// drift bound covers (the lease's documented assumption).
    pub lease_reads: bool,
    /// Number of clients.
    pub clients: u64,
    /// Number of keys the clients share.
    pub keys: u64,
    /// Length of the safety phase.
    pub safety_ms: Millis,
    /// Bound on the liveness phase.
    pub liveness_ms: Millis,
    /// When replicas snapshot and compact their logs.
    pub snapshot: SnapshotPolicy,
    /// Largest time a snapshot job takes to write its file (0: at once).
    pub snapshot_ms_max: Millis,
    /// Snapshot transfer bandwidth: each chunk of a snapshot's data takes its size over this
    /// many bytes per millisecond.
    pub transfer_bytes_per_ms: u64,
    /// Probability, at each step of a snapshot transfer (a chunk written, the data staged, the
    /// message stepped), that its receiver or its sender crashes right there. Only with
    /// crashes, and only in the safety phase.
    pub transfer_crash: f64,
    /// The last node starts only once another node has compacted its log (or, at the latest,
    /// halfway through the safety phase): it joins a cluster whose log no longer begins at
    /// index 1, so it must catch up by snapshot, as a long-offline member does in production.
    /// Starting it at a fixed time would not do: how fast a seed's log grows varies tenfold
    /// with its faults.
    pub late_start: bool,
    /// Request ids are counted per node and restart at 1 whenever the node starts, as the
    /// server's are (its runtime counts from 1 in every process). Otherwise they are unique
    /// across the whole run, which hides any confusion between an earlier run's entries and
    /// a later run's requests. Each run still has its own incarnation.
    pub restart_request_ids: bool,
    /// A few simulated watchers (the whole key space, a single key, a prefix; some with
    /// NOPUT/NODELETE or prev_kv), each attached to a node, kept open across crashes,
    /// partitions, snapshots and compactions, and a watch workload that puts, deletes, writes
    /// several keys in one transaction and compacts on keys of its own (`w0`..`w3`, apart from
    /// the clients' registers). Their streams are checked against the committed history of
    /// events at the end (see [`crate::watch`]).
    pub watchers: bool,
    /// Two or three lease clients (see [`crate::lease`]): each grants 1 s leases, attaches a
    /// key to each, renews it through random members a few times and lets it expire. Each
    /// node's clock runs at its own drifted rate for lease deadlines. Checked at the end:
    /// no key deleted early, none late, all at one revision.
    pub leases: bool,
    /// Two or three lock clients running etcd's lock recipe with fenced writes (see
    /// [`crate::lock`]); a quarter of the holders stop renewing their lease while they hold
    /// the lock. Checked at the end: the guarded writes never interleave between holders.
    pub locks: bool,
    /// Membership churn: an operator changes the cluster's members one change at a time
    /// through [`Replica::change_members`], as etcd's Cluster API does, under the seed's
    /// faults: it adds a learner (a new node id, which the world then starts on an empty disk
    /// with the cluster's committed configuration, as `--initial-cluster-state existing`
    /// does), promotes it once it caught up, removes a voter (the leader a third of the time)
    /// or a learner, and replaces a member (a removal, then a new learner). Clusters keep
    /// between 1 and 5 voters. A removed node is stopped, as the server stops once it learns
    /// it was removed, half the time only after it kept running for up to a second (it must
    /// not disrupt the others). Only for clusters of at most 5 nodes.
    pub membership: bool,
    /// The auth workload (see [`crate::auth`]): an administrator sets up `root`, a user and
    /// roles, enables auth and keeps changing permissions, roles and the user's password
    /// while user clients write as that user (with tokens that a password change
    /// invalidates), as root and as no one. Each member's outcome of every such entry is
    /// observed and checked against a model of the auth rules at that point of the log.
    pub auth: bool,
    /// Mean time between disks filling up (`None`: never; issue 18). A node's disk fills
    /// ([`SimDisk::set_full`]: everything that needs new space fails with `ENOSPC`) for 0.1 to
    /// 1.2 s; the node keeps running, writes nothing new and acknowledges nothing it has not
    /// made durable, and catches up once the space is freed. A crashed node whose disk is full
    /// is restarted only once it is freed (its storage cannot open without space). With it,
    /// segments are small (32 KiB), so that logs need new segments while disks are full.
    pub disk_full_every: Option<Millis>,
}

impl Profile {
    /// The profile seed `seed` picks: cluster size and every fault's rate.
    pub fn swarm(seed: u64) -> Profile {
        let mut r = SimRng::new(seed ^ 0x5157_4152_4d00);
        let nodes = r.pick(&[1, 3, 3, 3, 5, 5, 7]);
        let every = |r: &mut SimRng, options: &[Millis]| {
            let v = r.pick(options);
            (v > 0).then_some(v)
        };
        let mut p = Profile {
            nodes,
            drop: r.pick(&[0.0, 0.0, 0.01, 0.05, 0.2]),
            duplicate: r.pick(&[0.0, 0.01, 0.05]),
            long_delay: r.pick(&[0.0, 0.0, 0.01, 0.05]),
            partition_every: every(&mut r, &[0, 0, 150, 400, 1000]),
            crash_every: every(&mut r, &[0, 0, 200, 500, 1000]),
            pause_every: every(&mut r, &[0, 0, 300, 1000]),
            drift_percent: r.pick(&[0, 2, 10]),
            sync_ms_max: r.pick(&[0, 0, 2, 10, 40]),
            append_bytes_max: r.pick(&[1 << 20, 1 << 20, 64]),
            inflight_appends_max: r.pick(&[256, 256, 2]),
            lease_reads: false,
            clients: r.range(2, 6),
            keys: r.range(1, 4),
            safety_ms: 2_000,
            liveness_ms: 6_000,
            snapshot: SnapshotPolicy::disabled(),
            snapshot_ms_max: 0,
            transfer_bytes_per_ms: 1024,
            transfer_crash: 0.0,
            late_start: false,
            restart_request_ids: false,
            watchers: false,
            leases: false,
            locks: false,
            membership: false,
            auth: false,
            disk_full_every: None,
        };
        p.lease_reads = p.pause_every.is_none() && r.chance(0.3);
        // Aggressive compaction, so that nearly every seed takes, sends and installs
        // snapshots; one seed in seven never snapshots.
        let entries = r.pick(&[0, 2, 3, 5, 8, 13, 20]);
        p.snapshot = if entries == 0 {
            SnapshotPolicy::disabled()
        } else {
            SnapshotPolicy {
                entries,
                bytes: r.pick(&[0, 0, 0, 1024]),
                catchup_entries: r.pick(&[0, 0, 1, 3, 6]),
            }
        };
        p.snapshot_ms_max = r.pick(&[0, 5, 30, 150]);
        p.transfer_bytes_per_ms = r.pick(&[16, 128, 1024]);
        p.transfer_crash = if p.crash_every.is_some() { r.pick(&[0.0, 0.02, 0.1]) } else { 0.0 };
        // Drawn last, so that the picks above keep their values for every seed. Without
        // partitions, crashes or pauses no follower falls far enough behind to need a
        // snapshot, so such seeds always start one node late. Never in three-node clusters
        // with crashes: with one node not yet started, any crash stops all progress.
        let faults =
            p.partition_every.is_some() || p.crash_every.is_some() || p.pause_every.is_some();
        let stalls = nodes == 3 && p.crash_every.is_some();
        p.late_start = nodes > 1 && entries > 0 && !stalls && (!faults || r.chance(0.5));
        p.restart_request_ids = r.chance(0.5);
        // Drawn last, like the pick above.
        p.watchers = r.chance(0.5);
        // Drawn last, like the pick above.
        p.leases = r.chance(0.5);
        // Drawn last, like the pick above.
        p.locks = r.chance(0.5);
        // Drawn last, like the pick above (and only for clusters that start with at most five
        // voters, so that seeds with seven nodes keep their draws).
        p.membership = nodes <= 5 && r.chance(0.4);
        p
    }

    /// The swarm profile of `seed` with full disks (`--profile disk-full`): every seed fills
    /// disks, besides its own faults.
    pub fn disk_full(seed: u64) -> Profile {
        let mut r = SimRng::new(seed ^ 0x4449_534b_4655_4c4c);
        let p = Profile::swarm(seed);
        Profile { disk_full_every: Some(r.pick(&[150, 300, 600])), ..p }
    }

    /// No faults at all (for scripted scenarios that inject their own).
    pub fn quiet(nodes: u64) -> Profile {
        Profile {
            nodes,
            drop: 0.0,
            duplicate: 0.0,
            long_delay: 0.0,
            partition_every: None,
            crash_every: None,
            pause_every: None,
            drift_percent: 0,
            sync_ms_max: 0,
            append_bytes_max: 1 << 20,
            inflight_appends_max: 256,
            lease_reads: false,
            clients: 0,
            keys: 1,
            safety_ms: 0,
            liveness_ms: 6_000,
            snapshot: SnapshotPolicy::disabled(),
            snapshot_ms_max: 0,
            transfer_bytes_per_ms: 1024,
            transfer_crash: 0.0,
            late_start: false,
            restart_request_ids: true,
            watchers: false,
            leases: false,
            locks: false,
            membership: false,
            auth: false,
            disk_full_every: None,
        }
    }

    /// The swarm profile of `seed` with the auth workload (`--profile auth`).
    pub fn auth(seed: u64) -> Profile {
        // A longer safety phase than the swarm's: the administrator's setup takes eight
        // round trips under the seed's faults before any permission decides anything.
        Profile { auth: true, safety_ms: 3_000, ..Profile::swarm(seed) }
    }
}

/// A step of a snapshot transfer, where a scripted crash can be placed (see
/// [`World::crash_during_transfer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferPoint {
    /// Right after this many chunks were written into the receiver's staging file.
    AfterChunks(usize),
    /// The data is durable and in place on the receiver; the message is not yet stepped.
    Staged,
    /// The message was stepped and the receiver polled (the install is written, not yet
    /// synced); the sender has not yet heard `Delivered`.
    Stepped,
}

/// A snapshot transfer in flight, as [`World::transfers`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferStatus {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The snapshot's last entry.
    pub last: EntryId,
    /// Chunks written into the receiver so far.
    pub chunks_done: usize,
    /// Chunks in all.
    pub chunks_total: usize,
}

/// Where a transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Chunks are being written (or the staging file is yet to be sealed).
    Streaming,
    /// The data is durable; the message is stepped next.
    Staged,
    /// The message was stepped; the sender hears `Delivered` next.
    Stepped,
}

/// One snapshot message on its way: the data read from the sender when it was sent.
struct Transfer {
    /// The `Snapshot` message, naming the snapshot actually sent.
    msg: Message,
    /// The sender's epoch when it sent: the stream dies with the process.
    from_epoch: u64,
    /// The receiver's epoch when the first chunk arrived.
    to_epoch: Option<u64>,
    /// Chunks not yet written.
    chunks: VecDeque<Bytes>,
    chunks_done: usize,
    chunks_total: usize,
    /// The receiver's staging file, once the first chunk arrived.
    writer: Option<SnapshotWriter>,
    /// The network lost the stream: the sender hears `Failed` when it would have arrived.
    lost: bool,
    stage: Stage,
}

/// A node's snapshot job: handed out, then run (its file written), then finished.
enum SnapshotWork {
    /// Boxed: a job holds a copy of the state machine and its file writer inline.
    Job(Box<SnapshotJob>),
    Done(SnapshotDone),
}

/// A crash placed at a step of the next transfer to or from a node.
#[derive(Clone, Copy, Debug)]
struct TransferCrash {
    victim: NodeId,
    at: TransferPoint,
    mode: CrashMode,
}

/// How a run ended badly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A checker saw a broken safety property.
    Safety(String),
    /// After healing, the cluster did not elect a leader or finish requests in time.
    Liveness(String),
    /// A node panicked or stopped with a fatal error.
    Crash(String),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Deliver(u64),
    Tick(NodeId),
    SyncDone(NodeId, u64),
    Restart(NodeId),
    Unpause(NodeId),
    /// The node's disk gets its space back (see [`Profile::disk_full_every`]).
    DiskFreed(NodeId),
    Nemesis,
    /// A client's next step: start an operation or retry the current one.
    Client(u64),
    /// A client stops waiting for the attempt with this request id on this node (ignored if
    /// that attempt is no longer the one in flight; ids repeat across nodes and runs).
    ClientTimeout(u64, NodeId, RequestId),
    /// The next step of a node's snapshot job (ignored if the epoch is over).
    SnapshotWork(NodeId, u64),
    /// The next step of the snapshot transfer with this key.
    Transfer(u64),
    /// The late node starts (ignored if it already did; see [`Profile::late_start`]).
    LateStart(NodeId),
    /// A watcher's next step: connect, lag, reconnect elsewhere or take a progress
    /// notification (see [`Profile::watchers`]).
    Watcher(usize),
    /// The next history page of a watcher catching up (ignored unless the generation is the
    /// watcher's current one).
    WatchPage(usize, u64),
    /// The watch workload's next write.
    WatchWrite,
    /// A lease client's next step (see [`Profile::leases`]).
    LeaseClient(usize),
    /// A lock client's next step (see [`Profile::locks`]).
    LockClient(usize),
    /// The operator's next step (see [`Profile::membership`]).
    Operator,
    /// A node added to the configuration starts on an empty disk (ignored if it did).
    Join(NodeId),
    /// A removed node stops for good (ignored if it did).
    Stop(NodeId),
    /// An auth client's next step (see [`Profile::auth`]).
    AuthClient(usize),
}

/// Live batches a watcher buffers while it reads history (the server's feed); past this it
/// has lagged, and catches up again from a fresh copy once done.
const WATCH_BUFFER_BATCHES: usize = 4;

/// A simulated watch client: one watch, kept open across crashes, partitions, snapshots and
/// compactions, as a client library keeps it (etcd's clientv3 resumes from the last revision
/// it received + 1 on another member, and starts a new watch after a cancellation).
struct SimWatcher {
    spec: WatchSpec,
    /// `None` until the watch starts.
    cursor: Option<WatchCursor>,
    /// The node it is attached to, with that node's epoch then (a crash ends it).
    node: Option<(NodeId, u64)>,
    /// The node it was last attached to (a reconnect prefers another).
    last_node: Option<NodeId>,
    /// The node's count of installed snapshots when last looked at: a new install resets the
    /// watcher (no events are produced for what a snapshot covers), as the server's feed does.
    installed_seen: u64,
    state: WatchState,
    /// Bumped whenever a catch-up starts or the watcher detaches, so that stale page events
    /// are ignored.
    generation: u64,
    observations: Vec<WatchObservation>,
}

enum WatchState {
    /// Not attached to any node.
    Detached,
    /// Reading history from a copy of its node's store through `upto`, one small page per
    /// step, while buffering the node's live batches (`lagged` once the buffer overflowed).
    CatchingUp {
        copy: Box<Store>,
        upto: i64,
        buffered: Vec<(Vec<RevisionEvents>, i64)>,
        lagged: bool,
    },
    /// Taking its node's live batches as they are applied.
    Following,
}

struct SimNode {
    replica: Option<Replica>,
    disk: SimDisk,
    /// This node's tick interval (drift).
    tick_ms: Millis,
    paused: bool,
    /// Ticks that came due while the node was paused. A process that resumes catches up its
    /// clock before it reads its input (`World::resume`), as the lease reads' contract
    /// requires (see `tenure_raft::ReadMode::Lease`).
    ticks_missed: u64,
    /// A sync in flight: its ticket and an epoch that a crash invalidates.
    sync: Option<(SyncTicket, u64)>,
    epoch: u64,
    /// The leader term this node was last seen leading, for the checkers.
    led: Option<Term>,
    /// The snapshot job out, if any (a crash discards it).
    snapshot: Option<SnapshotWork>,
    /// The replica's count of installed snapshots as last seen, to notice a new install.
    installed_seen: u64,
    /// The next request id of this run (see [`Profile::restart_request_ids`]).
    next_request: u64,
    /// The configuration the node joined with (`None`: one of the initial nodes, which start
    /// with the initial configuration).
    joined_with: Option<Membership>,
    /// Removed from the cluster: stopping (`Stop` is scheduled) or stopped for good. A removed
    /// node is never restarted.
    removed: bool,
    /// For the auth checker: a copy of this run's store as of the applied index it holds
    /// (the last output taken), on which the entries the node applies next are replayed to
    /// observe each one's outcome. `None` until the first output after a start.
    shadow: Option<(LogIndex, Store)>,
}

impl SimNode {
    /// The incarnation of the node's next run: `epoch` only grows (at every start and every
    /// crash), so every run of a node has its own.
    fn incarnation(&self) -> u64 {
        self.epoch + 1
    }
}

/// One client operation in progress.
struct ClientOp {
    kind: OpKind,
    key: String,
    call: Millis,
    sequence: u64,
    attempts: u32,
    /// Whether some attempt may have taken effect (its outcome is unknown).
    maybe_applied: bool,
    /// The node and request id of the attempt in flight, and when it gives up waiting.
    in_flight: Option<(NodeId, RequestId, Millis)>,
}

struct Client {
    id: u64,
    next_sequence: u64,
    op: Option<ClientOp>,
    leader_hint: Option<NodeId>,
}

/// A simulated cluster.
pub struct World {
    /// The seed.
    pub seed: u64,
    /// The fault profile.
    pub profile: Profile,
    rng: SimRng,
    now: Millis,
    queue: BinaryHeap<Reverse<(Millis, u64, Event)>>,
    event_seq: u64,
    messages: BTreeMap<u64, Message>,
    nodes: BTreeMap<NodeId, SimNode>,
    /// `Replica::renewals_without_round` of the runs of nodes that ended.
    renewals_without_round_gone: u64,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    clients: Vec<Client>,
    /// Which client waits on which (node, request).
    waiting: BTreeMap<(NodeId, RequestId), u64>,
    /// Completions of scripted requests (not from the clients).
    scripted: BTreeMap<RequestId, Completion>,
    next_request: u64,
    history: Vec<HistOp>,
    checkers: Checkers,
    liveness: bool,
    /// Readable event lines, when tracing.
    pub trace: Option<Vec<String>>,
    configure: fn(&mut ReplicaConfig),
    /// Operations completed.
    pub ops_done: u64,
    /// Messages delivered.
    pub messages_delivered: u64,
    /// Events handled so far.
    pub events_processed: u64,
    /// Snapshots finished by their nodes (the log compacted behind them).
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Snapshot transfers reported `Failed` to their sender.
    pub transfers_failed: u64,
    scripted_seq: u64,
    transfers: BTreeMap<u64, Transfer>,
    transfer_crash_plan: Option<TransferCrash>,
    /// The node waiting to start late (see [`Profile::late_start`]), until it is started.
    late_node: Option<NodeId>,
    /// The simulated watchers (see [`Profile::watchers`]).
    watchers: Vec<SimWatcher>,
    /// The committed history of events, from what the nodes applied.
    events: EventReference,
    /// Watch events delivered to the simulated watchers.
    pub watch_events_delivered: u64,
    /// Writes the watch workload proposed.
    watch_writes: u64,
    /// The lease clients (see [`Profile::leases`]).
    leases: Option<LeaseWorkload>,
    /// The lock clients (see [`Profile::locks`]).
    locks: Option<LockWorkload>,
    /// When the liveness phase began.
    healed_at: Option<Millis>,
    /// The membership operator (see [`Profile::membership`]).
    operator: Option<Operator>,
    /// The commit and election quorum checkers, across configuration changes.
    quorums: QuorumChecker,
    /// The auth clients (see [`Profile::auth`]).
    auth: Option<AuthWorkload>,
    /// The auth checker (fed only when the auth workload runs).
    auth_checker: AuthChecker,
    /// What the auth checker checked, once it ran.
    auth_counts: AuthCounts,
}

/// How often leaders checkpoint leases' remaining time in the simulator.
const LEASE_CHECKPOINT_MS: Millis = 300;
/// How late past its TTL an unrenewed lease may be deleted once faults heal: an election
/// (with Pre-Vote, a few timeouts), the promotion extension (one election timeout), a
/// checkpoint interval a restarted member may be behind by, and commit and apply.
const LEASE_LATE_MS: Millis = 2_000;

/// Request ids at or above this are scripted requests (see [`World::put`]).
const SCRIPTED_REQUEST_BASE: u64 = 1 << 62;
/// Request ids of the watch workload's writes start here (below the scripted ones; their
/// completions are ignored).
const WATCH_REQUEST_BASE: u64 = 1 << 61;
/// Request ids of the membership operator start here (between the watch workload's and the
/// lease clients').
const OPERATOR_REQUEST_BASE: u64 = 5 << 59;
/// How long the operator waits on a change before it looks at the cluster again.
const OPERATOR_PATIENCE_MS: Millis = 2_000;
/// The most voters the operator lets a cluster have.
const VOTERS_MAX: usize = 5;

fn membership(n: u64) -> Membership {
    Membership::voters((1..=n).map(NodeId))
}

impl World {
    /// A world for `seed` with `profile`; `configure` may adjust every replica's
    /// configuration (tests use it to plant bugs).
    pub fn new(seed: u64, profile: Profile, configure: fn(&mut ReplicaConfig)) -> World {
        let mut rng = SimRng::new(seed);
        let mut nodes = BTreeMap::new();
        for i in 1..=profile.nodes {
            let drift = profile.drift_percent * TICK_MS;
            let tick_ms = (TICK_MS * 100 + rng.range(0, 2 * drift + 1) - drift).max(50) / 100;
            let node = SimNode {
                replica: None,
                disk: SimDisk::new(seed.wrapping_mul(31).wrapping_add(i)),
                tick_ms: tick_ms.max(1),
                paused: false,
                ticks_missed: 0,
                sync: None,
                epoch: 0,
                next_request: 1,
                led: None,
                snapshot: None,
                installed_seen: 0,
                joined_with: None,
                removed: false,
                shadow: None,
            };
            nodes.insert(NodeId(i), node);
        }
        let clients = (0..profile.clients)
            .map(|i| Client { id: i + 1, next_sequence: 1, op: None, leader_hint: None })
            .collect();
        let quorums = QuorumChecker::new(membership(profile.nodes));
        let mut w = World {
            seed,
            profile,
            rng,
            now: 0,
            queue: BinaryHeap::new(),
            event_seq: 0,
            messages: BTreeMap::new(),
            nodes,
            renewals_without_round_gone: 0,
            cut: BTreeSet::new(),
            clients,
            waiting: BTreeMap::new(),
            scripted: BTreeMap::new(),
            next_request: 1,
            history: Vec::new(),
            checkers: Checkers::default(),
            liveness: false,
            trace: None,
            configure,
            ops_done: 0,
            messages_delivered: 0,
            events_processed: 0,
            snapshots_taken: 0,
            snapshots_installed: 0,
            transfers_failed: 0,
            scripted_seq: 0,
            transfers: BTreeMap::new(),
            transfer_crash_plan: None,
            late_node: None,
            watchers: Vec::new(),
            events: EventReference::default(),
            watch_events_delivered: 0,
            watch_writes: 0,
            leases: None,
            locks: None,
            healed_at: None,
            operator: None,
            quorums,
            auth: None,
            auth_checker: AuthChecker::default(),
            auth_counts: AuthCounts::default(),
        };
        w.late_node = w.profile.late_start.then_some(NodeId(w.profile.nodes));
        let ids: Vec<NodeId> = w.nodes.keys().copied().collect();
        for id in ids {
            if w.late_node == Some(id) {
                let latest = w.profile.safety_ms / 2;
                w.schedule(latest, Event::LateStart(id));
            } else {
                w.start_node(id).expect("fresh node opens");
            }
            let first_tick = w.rng.range(1, TICK_MS + 1);
            w.schedule(first_tick, Event::Tick(id));
        }
        for c in 0..w.clients.len() as u64 {
            let at = w.rng.range(1, 50);
            w.schedule(at, Event::Client(c));
        }
        if w.profile.partition_every.is_some()
            || w.profile.crash_every.is_some()
            || w.profile.pause_every.is_some()
            || w.profile.disk_full_every.is_some()
        {
            let at = w.rng.range(50, 200);
            w.schedule(at, Event::Nemesis);
        }
        if w.profile.watchers {
            w.add_watchers();
        }
        if w.profile.leases {
            let clients = w.rng.range(2, 4) as usize;
            w.leases = Some(LeaseWorkload::new(clients));
            for c in 0..clients {
                let at = w.rng.range(50, 300);
                w.schedule(at, Event::LeaseClient(c));
            }
        }
        if w.profile.locks {
            let clients = w.rng.range(2, 4) as usize;
            w.locks = Some(LockWorkload::new(clients));
            for c in 0..clients {
                let at = w.rng.range(50, 300);
                w.schedule(at, Event::LockClient(c));
            }
        }
        if w.profile.auth {
            let writers = w.rng.range(2, 4) as usize;
            let workload = AuthWorkload::new(writers, seed);
            for c in 0..workload.clients() {
                let at = w.rng.range(20, 200);
                w.schedule(at, Event::AuthClient(c));
            }
            w.auth = Some(workload);
        }
        if w.profile.membership {
            w.operator = Some(Operator::new(w.profile.nodes + 1));
            let at = w.rng.range(100, 300);
            w.schedule(at, Event::Operator);
        }
        w
    }

    /// Turns on the readable trace.
    pub fn with_trace(mut self) -> World {
        self.trace = Some(Vec::new());
        self
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{:>6}ms {}", self.now, line()));
        }
    }

    fn schedule(&mut self, after: Millis, event: Event) {
        self.event_seq += 1;
        self.queue.push(Reverse((self.now + after, self.event_seq, event)));
    }

    fn start_node(&mut self, id: NodeId) -> Result<(), Failure> {
        let n = self.profile.nodes;
        let node = self.nodes.get_mut(&id).expect("node");
        assert!(!node.removed, "{id} was removed and is never started again");
        node.ticks_missed = 0;
        let mut cfg = ReplicaConfig::new(id, node.incarnation());
        cfg.raft.election_ticks = ELECTION_TICKS;
        cfg.raft.heartbeat_ticks = 1;
        cfg.raft.seed = self.seed.wrapping_mul(1_000_003).wrapping_add(id.0 + 7 * node.epoch);
        cfg.storage.segment_bytes_max = 256 << 10;
        cfg.storage.entry_bytes_max = 64 << 10;
        if self.profile.disk_full_every.is_some() {
            cfg.storage.segment_bytes_max = 4 << 10;
            cfg.storage.entry_bytes_max = 2 << 10;
            cfg.storage.membership_bytes_max = 1 << 10;
            cfg.storage.write_buffer_bytes_max = 1 << 10;
        }
        cfg.storage.cache_bytes_max = 1 << 20;
        cfg.storage.write_buffer_bytes_max = 64 << 10;
        cfg.request_timeout_ticks = 40;
        cfg.raft.append_bytes_max = self.profile.append_bytes_max;
        cfg.raft.inflight_appends_max = self.profile.inflight_appends_max;
        cfg.raft.inflight_bytes_max = cfg.raft.inflight_bytes_max.max(cfg.raft.append_bytes_max);
        cfg.snapshot = self.profile.snapshot.clone();
        // Lease timings scaled to the simulated cluster (an election timeout of 100 ms).
        cfg.lease = tenure_replica::LeaseConfig {
            checkpoint_interval_ms: LEASE_CHECKPOINT_MS,
            expire_batch_max: 2,
            promotion_extension_ms: u64::from(ELECTION_TICKS) * TICK_MS,
            retry_ms: 400,
        };
        if self.profile.lease_reads {
            // Drift of up to 10% over an election timeout of 10 ticks is one tick; allow two.
            cfg.raft.read_mode = tenure_raft::ReadMode::Lease { clock_drift_ticks: 2 };
        }
        (self.configure)(&mut cfg);
        let disk: Arc<dyn tenure_storage::Disk> = Arc::new(node.disk.clone());
        let bootstrap = node.joined_with.clone().unwrap_or_else(|| membership(n));
        match Replica::open(cfg, disk, Path::new("/data"), bootstrap) {
            Ok(r) => {
                let restored = r.node().log_view().snapshot().map(|m| m.last_included);
                let state = state_digest(r.kv());
                node.replica = Some(r);
                node.epoch += 1;
                node.next_request = 1;
                node.snapshot = None;
                node.shadow = None;
                node.installed_seen = 0;
                if let Some(last) = restored {
                    self.note(|| format!("{id} restarts from snapshot {last}"));
                    self.checkers
                        .on_snapshot(id, SnapshotEvent::Restored, last, Some(state))
                        .map_err(|v| Failure::Safety(v.to_string()))?;
                }
                Ok(())
            }
            Err(e) => Err(Failure::Crash(format!("{id} failed to open after a crash: {e}"))),
        }
    }

    /// Runs the safety phase, then the liveness phase. Returns the failure, if any.
    pub fn run(&mut self) -> Result<(), Failure> {
        let safety_end = self.profile.safety_ms;
        self.run_until(safety_end)?;
        self.start_liveness_phase()?;
        let deadline = safety_end + self.profile.liveness_ms;
        loop {
            if self.now >= deadline {
                return Err(Failure::Liveness(self.liveness_report()));
            }
            let step_end = (self.now + 100).min(deadline);
            self.run_until(step_end)?;
            if self.converged() {
                break;
            }
        }
        self.final_checks()
    }

    /// Processes events up to simulated time `until`.
    pub fn run_until(&mut self, until: Millis) -> Result<(), Failure> {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Reverse((at, _, event)) = self.queue.pop().expect("peeked");
            self.now = at;
            self.events_processed += 1;
            if self.events_processed > EVENTS_MAX {
                return Err(Failure::Crash(format!(
                    "runaway: more than {EVENTS_MAX} events by {}ms",
                    self.now
                )));
            }
            self.handle(event)?;
        }
        self.now = self.now.max(until);
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), Failure> {
        match event {
            Event::Deliver(key) => {
                let Some(m) = self.messages.remove(&key) else { return Ok(()) };
                let to = m.to;
                let Some(node) = self.nodes.get_mut(&to) else { return Ok(()) };
                if node.paused {
                    // A paused process reads its socket later.
                    self.messages.insert(key, m);
                    self.schedule(5, Event::Deliver(key));
                    return Ok(());
                }
                let Some(r) = node.replica.as_mut() else { return Ok(()) };
                if self.cut.contains(&(m.from, to)) {
                    return Ok(());
                }
                self.messages_delivered += 1;
                if self.trace.is_some() {
                    let line = format!("{m:?}");
                    self.note(|| line);
                    let r = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()).expect("up");
                    r.step(m);
                } else {
                    r.step(m);
                }
                self.pump(to)?;
            }
            Event::Tick(id) => {
                let node = self.nodes.get_mut(&id).expect("node");
                let next = node.tick_ms;
                if node.paused && node.replica.is_some() {
                    node.ticks_missed += 1;
                } else if let Some(r) = node.replica.as_mut() {
                    let mut out = Output::default();
                    // Each node's clock runs at its own rate (its drifted tick length).
                    r.tick(self.now * TICK_MS / next, &mut out);
                    self.absorb(id, out)?;
                    self.pump(id)?;
                }
                self.schedule(next, Event::Tick(id));
            }
            Event::SyncDone(id, epoch) => {
                let node = self.nodes.get_mut(&id).expect("node");
                if node.epoch != epoch || node.replica.is_none() {
                    return Ok(());
                }
                if node.paused {
                    self.schedule(5, Event::SyncDone(id, epoch));
                    return Ok(());
                }
                if let Some((ticket, _)) = node.sync.take() {
                    let mut out = Output::default();
                    let r = node.replica.as_mut().expect("up");
                    let next = r
                        .finish_sync(ticket.wait(), &mut out)
                        .map_err(|e| Failure::Crash(format!("{id} stopped: {e}")))?;
                    self.absorb(id, out)?;
                    if let Some(t) = next {
                        self.start_sync(id, t);
                    }
                    self.pump(id)?;
                }
            }
            Event::Restart(id) if self.nodes[&id].disk.is_full() => {
                // Its storage cannot open on a full disk: a supervisor tries again later.
                self.schedule(50, Event::Restart(id));
            }
            Event::DiskFreed(id) => {
                self.nodes[&id].disk.set_full(false);
                self.note(|| format!("{id}'s disk has space again"));
                self.pump(id)?;
            }
            Event::Restart(id) => {
                if self.nodes[&id].replica.is_none() && !self.nodes[&id].removed {
                    self.note(|| format!("{id} restarts"));
                    self.start_node(id)?;
                    self.pump(id)?;
                }
            }
            Event::LateStart(id) => {
                if self.late_node == Some(id) && !self.nodes[&id].removed {
                    self.late_node = None;
                    self.note(|| format!("{id} starts late"));
                    self.start_node(id)?;
                    self.pump(id)?;
                }
            }
            Event::Unpause(id) => {
                self.resume(id)?;
                self.note(|| format!("{id} resumes"));
                self.pump(id)?;
            }
            Event::Nemesis => self.nemesis()?,
            Event::Client(c) => self.client_step(c)?,
            Event::ClientTimeout(c, node, req) => self.client_timeout(c, node, req),
            Event::SnapshotWork(id, epoch) => self.snapshot_work(id, epoch)?,
            Event::Transfer(key) => self.transfer_step(key)?,
            Event::Watcher(w) => self.watcher_step(w),
            Event::WatchPage(w, generation) => self.watch_page(w, generation),
            Event::WatchWrite => self.watch_write()?,
            Event::LeaseClient(c) => self.lease_step(c)?,
            Event::LockClient(c) => self.lock_step(c)?,
            Event::Operator => self.operator_step()?,
            Event::Join(id) => self.join(id)?,
            Event::Stop(id) => self.stop(id),
            Event::AuthClient(c) => self.auth_step(c)?,
        }
        Ok(())
    }

    /// Ends a node's pause. Its clock first catches up with the ticks that came due meanwhile,
    /// before it reads any input: a resumed leader that answered a queued read before its
    /// clock moved would take a lease that ran out during the pause for a live one (found by
    /// the membership churn with lease reads: a stale read after a 750 ms pause).
    fn resume(&mut self, id: NodeId) -> Result<(), Failure> {
        let Some(node) = self.nodes.get_mut(&id) else { return Ok(()) };
        node.paused = false;
        let missed = std::mem::take(&mut node.ticks_missed);
        let local_now = self.now * TICK_MS / node.tick_ms;
        let Some(r) = node.replica.as_mut() else { return Ok(()) };
        let mut out = Output::default();
        for _ in 0..missed {
            r.tick(local_now, &mut out);
        }
        self.absorb(id, out)
    }

    /// Runs a node's replica loop until idle, sending its messages and starting syncs.
    fn pump(&mut self, id: NodeId) -> Result<(), Failure> {
        for _ in 0..1000 {
            let node = self.nodes.get_mut(&id).expect("node");
            if node.paused {
                return Ok(());
            }
            let Some(r) = node.replica.as_mut() else { return Ok(()) };
            let mut out = Output::default();
            let polled = r.poll(&mut out);
            let (worked, ticket) =
                polled.map_err(|e| Failure::Crash(format!("{id} stopped: {e}")))?;
            self.check_install(id)?;
            self.absorb(id, out)?;
            if let Some(t) = ticket {
                self.start_sync(id, t);
            }
            if !worked {
                self.check_removed(id)?;
                return self.take_snapshot_job(id);
            }
        }
        Err(Failure::Crash(format!("{id} never went idle")))
    }

    // ----- Snapshots ----------------------------------------------------------------------------

    /// After a poll: if the node installed a snapshot from a leader, the checkers look at it.
    fn check_install(&mut self, id: NodeId) -> Result<(), Failure> {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(r) = node.replica.as_ref() else { return Ok(()) };
        let installed = r.snapshot_stats().installed;
        if installed == node.installed_seen {
            return Ok(());
        }
        node.installed_seen = installed;
        // The snapshot noted at the install (the log is reset to it with the ready's writes,
        // which a full disk may hold back).
        let last = r
            .node()
            .log_view()
            .snapshot()
            .map_or_else(|| r.node().log_view().snapshot_point(), |m| m.last_included);
        // The state is compared only if nothing was applied after the install in that poll.
        let state = (r.node().status().applied == last.index).then(|| state_digest(r.kv()));
        self.snapshots_installed += 1;
        self.note(|| format!("{id} installs snapshot {last}"));
        self.checkers
            .on_snapshot(id, SnapshotEvent::Installed, last, state)
            .map_err(|v| Failure::Safety(v.to_string()))
    }

    /// Hands out the node's snapshot job if its policy says one is due; the job writes its
    /// file after a random delay.
    fn take_snapshot_job(&mut self, id: NodeId) -> Result<(), Failure> {
        let node = self.nodes.get_mut(&id).expect("node");
        if node.snapshot.is_some() || node.paused {
            return Ok(());
        }
        let Some(r) = node.replica.as_mut() else { return Ok(()) };
        let job =
            r.take_snapshot_job().map_err(|e| Failure::Crash(format!("{id} stopped: {e}")))?;
        let Some(job) = job else { return Ok(()) };
        let last = job.meta().last_included;
        let state = state_digest(r.kv());
        node.snapshot = Some(SnapshotWork::Job(Box::new(job)));
        let epoch = node.epoch;
        self.note(|| format!("{id} starts snapshot {last}"));
        self.checkers
            .on_snapshot(id, SnapshotEvent::Taken, last, Some(state))
            .map_err(|v| Failure::Safety(v.to_string()))?;
        let delay = self.rng.range(0, self.profile.snapshot_ms_max + 1);
        self.schedule(delay, Event::SnapshotWork(id, epoch));
        Ok(())
    }

    /// Runs a node's snapshot job (writes its file), then, a little later, finishes it (the
    /// replica records it and compacts its log).
    fn snapshot_work(&mut self, id: NodeId, epoch: u64) -> Result<(), Failure> {
        let node = self.nodes.get_mut(&id).expect("node");
        if node.epoch != epoch || node.replica.is_none() {
            return Ok(());
        }
        if node.paused {
            self.schedule(5, Event::SnapshotWork(id, epoch));
            return Ok(());
        }
        match node.snapshot.take() {
            Some(SnapshotWork::Job(job)) => {
                node.snapshot = Some(SnapshotWork::Done((*job).run()));
                let delay = self.rng.range(0, 3);
                self.schedule(delay, Event::SnapshotWork(id, epoch));
            }
            Some(SnapshotWork::Done(done)) => {
                let r = node.replica.as_mut().expect("up");
                let taken = r.snapshot_stats().taken;
                r.finish_snapshot(done)
                    .map_err(|e| Failure::Crash(format!("{id} stopped: {e}")))?;
                if r.snapshot_stats().taken == taken {
                    // Abandoned for lack of space; the replica tries again later.
                    self.note(|| format!("{id} abandoned a snapshot: the disk is full"));
                    return self.pump(id);
                }
                let first = r.node().log_view().first_index();
                self.snapshots_taken += 1;
                self.note(|| format!("{id} finished a snapshot; log starts at {first}"));
                if first > LogIndex(1)
                    && let Some(late) = self.late_node
                {
                    let after = self.rng.range(1, 100);
                    self.schedule(after, Event::LateStart(late));
                }
                self.pump(id)?;
            }
            None => {}
        }
        Ok(())
    }

    /// A leader's `Snapshot` message: its data is read from the sender now and streamed to
    /// the receiver chunk by chunk.
    fn send_snapshot(&mut self, mut m: Message, lost: bool) -> Result<(), Failure> {
        let from = m.from;
        let node = &self.nodes[&from];
        let from_epoch = node.epoch;
        let r = node.replica.as_ref().expect("the sender is up");
        let stopped = |e: &dyn std::fmt::Display| Failure::Crash(format!("{from} stopped: {e}"));
        let mut reader = r
            .snapshot_to_send()
            .map_err(|e| stopped(&e))?
            .ok_or_else(|| stopped(&"a Snapshot message but no snapshot file to send"))?;
        let meta = reader.meta().clone();
        let mut chunks = VecDeque::new();
        while let Some(data) = reader.next_chunk().map_err(|e| stopped(&e))? {
            let mut at = 0;
            while at < data.len() {
                let end = (at + TRANSFER_CHUNK_BYTES).min(data.len());
                chunks.push_back(data.slice(at..end));
                at = end;
            }
        }
        m.body = MessageBody::Snapshot { meta };
        let chunks_total = chunks.len();
        let transfer = Transfer {
            msg: m,
            from_epoch,
            to_epoch: None,
            chunks,
            chunks_done: 0,
            chunks_total,
            writer: None,
            lost,
            stage: Stage::Streaming,
        };
        let delay = self.network_delay();
        self.event_seq += 1;
        let key = self.event_seq;
        self.transfers.insert(key, transfer);
        self.schedule(delay, Event::Transfer(key));
        Ok(())
    }

    /// One step of a transfer: a chunk, sealing the staged file, stepping the message, or
    /// reporting to the sender.
    fn transfer_step(&mut self, key: u64) -> Result<(), Failure> {
        let Some(mut t) = self.transfers.remove(&key) else { return Ok(()) };
        let (from, to) = (t.msg.from, t.msg.to);
        let sender = &self.nodes[&from];
        if sender.epoch != t.from_epoch || sender.replica.is_none() {
            // The stream died with its sender; the receiver drops what it staged.
            self.note(|| format!("snapshot transfer {from} -> {to} ends: sender crashed"));
            return Ok(());
        }
        if t.stage == Stage::Stepped {
            return self.report_snapshot(from, to, SnapshotStatus::Delivered);
        }
        // A node added to the configuration may not have started yet.
        let receiver_gone = self.nodes.get(&to).is_none_or(|receiver| {
            receiver.replica.is_none() || t.to_epoch.is_some_and(|e| e != receiver.epoch)
        });
        if t.lost || self.cut.contains(&(from, to)) || receiver_gone {
            self.note(|| format!("snapshot transfer {from} -> {to} failed"));
            self.transfers_failed += 1;
            return self.report_snapshot(from, to, SnapshotStatus::Failed);
        }
        if sender.paused || self.nodes[&to].paused {
            self.transfers.insert(key, t);
            self.schedule(5, Event::Transfer(key));
            return Ok(());
        }
        let stopped = |e: &dyn std::fmt::Display| Failure::Crash(format!("{to} stopped: {e}"));
        let to_epoch = self.nodes[&to].epoch;
        let r = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()).expect("up");
        let point = match t.stage {
            Stage::Streaming => {
                let MessageBody::Snapshot { meta } = &t.msg.body else {
                    unreachable!("a transfer carries a Snapshot message")
                };
                // The receiver's disk is full: it refuses the transfer (the server answers
                // Refused) and the leader tries again later.
                let refused = |e: &tenure_storage::StorageError| e.is_no_space();
                if t.writer.is_none() {
                    match r.snapshot_receiver(meta.clone()) {
                        Ok(w) => t.writer = Some(w),
                        Err(tenure_replica::ReplicaError::Storage(e)) if refused(&e) => {
                            r.note_snapshot_no_space();
                            self.note(|| format!("{to} refuses a snapshot from {from}: {e}"));
                            self.transfers_failed += 1;
                            return self.report_snapshot(from, to, SnapshotStatus::Failed);
                        }
                        Err(e) => return Err(stopped(&e)),
                    }
                    t.to_epoch = Some(to_epoch);
                }
                let writer = t.writer.as_mut().expect("created");
                if let Some(chunk) = t.chunks.pop_front() {
                    if let Err(e) = writer.write_chunk(&chunk) {
                        if !refused(&e) {
                            return Err(stopped(&e));
                        }
                        r.note_snapshot_no_space();
                        self.note(|| format!("{to} refuses a snapshot from {from}: {e}"));
                        self.transfers_failed += 1;
                        return self.report_snapshot(from, to, SnapshotStatus::Failed);
                    }
                    t.chunks_done += 1;
                    let delay = (chunk.len() as u64).div_ceil(self.profile.transfer_bytes_per_ms);
                    let point = TransferPoint::AfterChunks(t.chunks_done);
                    self.transfers.insert(key, t);
                    self.schedule(delay.max(1), Event::Transfer(key));
                    self.transfer_crash_point(from, to, point);
                    return Ok(());
                }
                let writer = t.writer.take().expect("created");
                if let Err(e) = writer.finish() {
                    if !refused(&e) {
                        return Err(stopped(&e));
                    }
                    let r = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()).expect("up");
                    r.note_snapshot_no_space();
                    self.note(|| format!("{to} refuses a snapshot from {from}: {e}"));
                    self.transfers_failed += 1;
                    return self.report_snapshot(from, to, SnapshotStatus::Failed);
                }
                t.stage = Stage::Staged;
                let last = meta.last_included;
                self.note(|| format!("{to} staged snapshot {last} from {from}"));
                TransferPoint::Staged
            }
            Stage::Staged => {
                let msg = t.msg.clone();
                if self.trace.is_some() {
                    let line = format!("{msg:?}");
                    self.note(|| line);
                }
                let r = self.nodes.get_mut(&to).and_then(|n| n.replica.as_mut()).expect("up");
                r.step(msg);
                self.messages_delivered += 1;
                self.pump(to)?;
                t.stage = Stage::Stepped;
                TransferPoint::Stepped
            }
            Stage::Stepped => unreachable!("handled above"),
        };
        self.transfers.insert(key, t);
        self.schedule(0, Event::Transfer(key));
        self.transfer_crash_point(from, to, point);
        Ok(())
    }

    fn report_snapshot(
        &mut self,
        from: NodeId,
        to: NodeId,
        status: SnapshotStatus,
    ) -> Result<(), Failure> {
        let Some(r) = self.nodes.get_mut(&from).and_then(|n| n.replica.as_mut()) else {
            return Ok(());
        };
        r.report_snapshot(to, status);
        self.pump(from)
    }

    /// A crash at a step of a transfer: the scripted one, if placed here, or, with the
    /// profile's probability, of the receiver or the sender.
    fn transfer_crash_point(&mut self, from: NodeId, to: NodeId, point: TransferPoint) {
        if let Some(plan) = self.transfer_crash_plan
            && (plan.victim == from || plan.victim == to)
            && plan.at == point
        {
            self.transfer_crash_plan = None;
            self.note(|| format!("scripted crash of {} at {point:?}", plan.victim));
            self.crash(plan.victim, plan.mode);
            return;
        }
        if self.liveness
            || self.profile.transfer_crash == 0.0
            || !self.rng.chance(self.profile.transfer_crash)
        {
            return;
        }
        let victim = if self.rng.chance(0.5) { to } else { from };
        let mode = self.crash_mode();
        self.note(|| format!("crash of {victim} during a snapshot transfer, at {point:?}"));
        self.crash(victim, mode);
        let after = self.rng.range(20, 600);
        self.schedule(after, Event::Restart(victim));
    }

    fn start_sync(&mut self, id: NodeId, ticket: SyncTicket) {
        let latency = self.rng.range(0, self.profile.sync_ms_max + 1);
        let node = self.nodes.get_mut(&id).expect("node");
        let epoch = node.epoch;
        node.sync = Some((ticket, epoch));
        self.schedule(latency, Event::SyncDone(id, epoch));
    }

    /// Takes a replica's output: sends messages through the network, feeds the checkers,
    /// routes completions to clients.
    fn absorb(&mut self, id: NodeId, out: Output) -> Result<(), Failure> {
        if self.auth.is_some() {
            self.auth_observe(id, &out)?;
        }
        // First, so that no early return leaves a revision out of the reference.
        if !out.events.is_empty() {
            self.events.on_events(id, &out.events).map_err(|v| Failure::Safety(v.to_string()))?;
        }
        if !self.watchers.is_empty() {
            self.watch_live(id, &out.events);
        }
        if let Some(leases) = self.leases.as_mut() {
            leases
                .on_events(id, &out.events, self.now)
                .map_err(|v| Failure::Safety(v.to_string()))?;
        }
        for ss in &out.changes {
            let line = format!("{id} is {} at term {}", ss.role, ss.term);
            self.note(|| line);
        }
        self.check_node(id)?;
        for e in &out.applied {
            let committed = self.nodes[&id].replica.as_ref().expect("up").node().committed();
            let seen = EntrySeen { id: e.id, digest: digest(e.kind.code(), &e.data) };
            self.checkers
                .on_apply(id, seen, committed)
                .map_err(|v| Failure::Safety(v.to_string()))?;
        }
        for m in out.messages {
            self.send(m)?;
        }
        for c in out.completions {
            self.complete(id, c, &out.applied)?;
        }
        Ok(())
    }

    fn check_node(&mut self, id: NodeId) -> Result<(), Failure> {
        let safety = |v: Violation| Failure::Safety(v.to_string());
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(r) = node.replica.as_ref() else { return Ok(()) };
        let n = r.node();
        let term = n.term();
        let leading = n.role() == Role::Leader;
        // Every index a leader commits is checked against the acknowledgements it was sent in
        // its term, also when it stepped down in the step that committed (a leader that is
        // not in C_new does once C_new commits).
        let committed = n.committed();
        if !leading && node.led != Some(term) {
            return Ok(());
        }
        self.checkers.on_leader_commit(term, committed);
        if committed > self.quorums.frontier() {
            let configs = config_entries(r, self.quorums.frontier().next(), committed)?;
            let persisted = n.status().persisted;
            self.quorums.on_commit(id, term, committed, persisted, &configs).map_err(safety)?;
        }
        if !leading {
            return Ok(());
        }
        let first = n.log_view().first_index();
        let newly = node.led != Some(term);
        node.led = Some(term);
        let log = log_of(r);
        if newly {
            self.checkers.on_leader(id, term, |i| n.entry_term(i), first).map_err(safety)?;
            // The configuration it won in is the one at its last entry before its term's.
            let mut last = n.last_index();
            while last.0 > 0 && n.entry_term(last) == Some(term) {
                last = LogIndex(last.0 - 1);
            }
            let configs = config_entries(r, committed.next(), last)?;
            self.quorums.on_elected(id, term, committed, last, &configs).map_err(safety)?;
        }
        self.checkers.on_leader_log(id, term, &log).map_err(safety)
    }

    fn send(&mut self, m: Message) -> Result<(), Failure> {
        // What was sent, lost or not: the quorum checkers count only what could have counted.
        match m.body {
            MessageBody::AppendResponse { result: Ok(index) } => {
                self.quorums.on_ack(m.from, m.to, m.term, index)
            }
            MessageBody::VoteResponse { granted: true } => {
                self.quorums.on_vote(m.from, m.to, m.term)
            }
            _ => {}
        }
        let lost = self.cut.contains(&(m.from, m.to))
            || (!self.liveness && self.rng.chance(self.profile.drop));
        if matches!(m.body, MessageBody::Snapshot { .. }) {
            // A transfer is one stream: never duplicated, and its sender learns its fate.
            return self.send_snapshot(m, lost);
        }
        if lost {
            return Ok(());
        }
        let copies = if !self.liveness && self.rng.chance(self.profile.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.network_delay();
            self.event_seq += 1;
            let key = self.event_seq;
            self.messages.insert(key, m.clone());
            self.schedule(delay, Event::Deliver(key));
        }
        Ok(())
    }

    /// A message's time on the wire: a few milliseconds, or, with the profile's probability,
    /// up to several election timeouts (which reorders it).
    fn network_delay(&mut self) -> Millis {
        if !self.liveness && self.rng.chance(self.profile.long_delay) {
            self.rng.range(1, 3 * 2 * u64::from(ELECTION_TICKS) * TICK_MS)
        } else {
            self.rng.range(1, 4)
        }
    }

    // ----- Faults -------------------------------------------------------------------------------

    fn nemesis(&mut self) -> Result<(), Failure> {
        if self.liveness {
            return Ok(());
        }
        let ids: Vec<NodeId> =
            self.nodes.iter().filter(|(_, n)| !n.removed).map(|(id, _)| *id).collect();
        let mut choices = Vec::new();
        if self.profile.partition_every.is_some() {
            choices.push(0);
        }
        if self.profile.crash_every.is_some() {
            choices.push(1);
        }
        if self.profile.pause_every.is_some() {
            choices.push(2);
        }
        if self.profile.disk_full_every.is_some() {
            choices.push(3);
        }
        match self.rng.pick(&choices) {
            0 => {
                self.partition(&ids);
                self.watchers_leave_cut_nodes();
            }
            1 => {
                let up: Vec<NodeId> =
                    ids.iter().copied().filter(|i| self.nodes[i].replica.is_some()).collect();
                if !up.is_empty() {
                    let victim = self.pick_victim(&up);
                    let mode = self.crash_mode();
                    self.crash(victim, mode);
                    let after = self.rng.range(20, 600);
                    self.schedule(after, Event::Restart(victim));
                }
            }
            3 => {
                // A running node: one not started yet would not start on a full disk.
                let up: Vec<NodeId> =
                    ids.iter().copied().filter(|i| self.nodes[i].replica.is_some()).collect();
                let victim = if up.is_empty() { None } else { Some(self.pick_victim(&up)) };
                if let Some(victim) = victim
                    && !self.nodes[&victim].disk.is_full()
                {
                    self.nodes[&victim].disk.set_full(true);
                    self.note(|| format!("{victim}'s disk is full"));
                    let after = self.rng.range(100, 1200);
                    self.schedule(after, Event::DiskFreed(victim));
                }
            }
            _ => {
                let victim = self.pick_victim(&ids);
                if !self.nodes[&victim].paused {
                    self.nodes.get_mut(&victim).expect("node").paused = true;
                    self.note(|| format!("{victim} paused"));
                    let after = self.rng.range(50, 800);
                    self.schedule(after, Event::Unpause(victim));
                }
            }
        }
        let mean = [
            self.profile.partition_every,
            self.profile.crash_every,
            self.profile.pause_every,
            self.profile.disk_full_every,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(1000);
        let next = self.rng.range(mean / 2, mean * 3 / 2 + 1);
        self.schedule(next, Event::Nemesis);
        Ok(())
    }

    fn crash_mode(&mut self) -> CrashMode {
        match self.rng.range(0, 3) {
            0 => CrashMode::LoseUnsynced,
            1 => CrashMode::RandomPrefix,
            _ => CrashMode::TearLastWrite { keep_bytes: self.rng.range(0, 64) as usize },
        }
    }

    /// The leader half the time (faults that hit the leader find the most bugs), else anyone.
    fn pick_victim(&mut self, among: &[NodeId]) -> NodeId {
        let leader = among
            .iter()
            .copied()
            .find(|id| self.nodes[id].replica.as_ref().is_some_and(|r| r.is_leader()));
        match leader {
            Some(l) if self.rng.chance(0.5) => l,
            _ => self.rng.pick(among),
        }
    }

    fn partition(&mut self, ids: &[NodeId]) {
        self.cut.clear();
        let kind = self.rng.range(0, 5);
        match kind {
            0 => self.note(|| "network healed".into()),
            1 => {
                // A random split into two sides.
                let side: Vec<bool> = ids.iter().map(|_| self.rng.chance(0.5)).collect();
                for (i, a) in ids.iter().enumerate() {
                    for (j, b) in ids.iter().enumerate() {
                        if side[i] != side[j] {
                            self.cut.insert((*a, *b));
                        }
                    }
                }
                self.note(|| "network split".into());
            }
            2 => {
                // Isolate the leader (or someone).
                let v = self.pick_victim(ids);
                for o in ids.iter().filter(|o| **o != v) {
                    self.cut.insert((v, *o));
                    self.cut.insert((*o, v));
                }
                self.note(|| format!("{v} isolated"));
            }
            3 => {
                // One-way: a node can send but not receive (or the reverse).
                let v = self.pick_victim(ids);
                let inbound = self.rng.chance(0.5);
                for o in ids.iter().filter(|o| **o != v) {
                    if inbound {
                        self.cut.insert((*o, v));
                    } else {
                        self.cut.insert((v, *o));
                    }
                }
                self.note(|| format!("{v} cut one way ({})", if inbound { "in" } else { "out" }));
            }
            _ => {
                // A bridge: two sides that only one node sees both of.
                if ids.len() >= 3 {
                    let bridge = self.rng.pick(ids);
                    let others: Vec<NodeId> =
                        ids.iter().copied().filter(|i| *i != bridge).collect();
                    let half = others.len() / 2;
                    for a in &others[..half] {
                        for b in &others[half..] {
                            self.cut.insert((*a, *b));
                            self.cut.insert((*b, *a));
                        }
                    }
                    self.note(|| format!("{bridge} bridges a split"));
                }
            }
        }
    }

    /// Crashes a node: its process state is gone, its disk loses (some) unsynced writes.
    pub fn crash(&mut self, id: NodeId, mode: CrashMode) {
        if !self.take_down(id) {
            return;
        }
        self.nodes.get_mut(&id).expect("node").disk.crash(mode);
        self.note(|| format!("{id} crashed ({mode:?})"));
    }

    /// Ends a node's process: whatever it had in flight is gone. Returns whether it was up.
    fn take_down(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(gone) = node.replica.take() else { return false };
        self.renewals_without_round_gone += gone.renewals_without_round();
        node.sync = None;
        node.snapshot = None;
        node.epoch += 1;
        node.led = None;
        self.waiting.retain(|(n, _), _| *n != id);
        // Its watchers lose their stream; each reconnects at its next step.
        for w in 0..self.watchers.len() {
            if self.watchers[w].node.is_some_and(|(n, _)| n == id) {
                self.watch_detach(w);
            }
        }
        true
    }

    fn start_liveness_phase(&mut self) -> Result<(), Failure> {
        self.liveness = true;
        self.healed_at = Some(self.now);
        // A late node still waiting starts below with every crashed one.
        self.late_node = None;
        self.cut.clear();
        self.note(|| "liveness phase: every fault healed".into());
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.resume(id)?;
            let node = self.nodes.get_mut(&id).expect("node");
            node.disk.set_full(false);
            if node.removed {
                // A removed node still running (to show it does not disrupt) stops now.
                self.stop(id);
                continue;
            }
            if node.replica.is_none() {
                self.start_node(id)?;
            }
            self.pump(id)?;
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        let leader = self.nodes.values().filter_map(|n| n.replica.as_ref()).find(|r| r.is_leader());
        let Some(leader) = leader else { return false };
        let committed = leader.node().committed();
        let clients_done = self.clients.iter().all(|c| c.op.is_none());
        // Every member (a removed node that still runs is not one) caught up, in a simple
        // configuration.
        let members = leader.membership().members();
        let nodes_caught_up = !leader.membership().voters.is_joint()
            && self
                .nodes
                .iter()
                .filter(|(id, _)| members.contains(id))
                .filter_map(|(_, n)| n.replica.as_ref())
                .all(|r| r.node().status().applied >= committed && r.pending_requests() == 0);
        // Lease clients stop renewing when faults heal: every lease must then expire.
        let leases_gone = self.leases.is_none()
            || self
                .nodes
                .values()
                .filter_map(|n| n.replica.as_ref())
                .all(|r| r.kv().leases().next().is_none());
        clients_done && nodes_caught_up && leases_gone
    }

    fn liveness_report(&self) -> String {
        let mut s = String::from("no convergence after healing:");
        for (id, n) in &self.nodes {
            match &n.replica {
                _ if n.removed => s.push_str(&format!(" [{id} removed]")),
                Some(r) => {
                    let st = r.node().status();
                    s.push_str(&format!(
                        " [{id} {} term={} commit={} applied={} pending={}]",
                        st.soft.role,
                        st.soft.term,
                        st.committed,
                        st.applied,
                        r.pending_requests()
                    ));
                }
                None => s.push_str(&format!(" [{id} down]")),
            }
        }
        let busy = self.clients.iter().filter(|c| c.op.is_some()).count();
        s.push_str(&format!(" clients with an open operation: {busy}"));
        s
    }

    fn final_checks(&mut self) -> Result<(), Failure> {
        // Nodes that are no longer members stop (their state machines stopped at their
        // removal and are not expected to converge).
        let members = self.quorums.committed_config_at(self.quorums.frontier()).1.members();
        let gone: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, n)| n.replica.is_some() && !members.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.stop(id);
        }
        let logs: Vec<(NodeId, Vec<(LogIndex, Term)>)> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.replica.as_ref().map(|r| (*id, log_of(r))))
            .collect();
        self.checkers.on_logs(&logs).map_err(|v| Failure::Safety(v.to_string()))?;
        self.checkers.check_final(&logs).map_err(|v| Failure::Safety(v.to_string()))?;
        // Every replica's state machine converged to the same state.
        let mut states = self.nodes.iter().filter_map(|(id, n)| {
            n.replica.as_ref().map(|r| {
                let all = RangeRequest {
                    key: Bytes::from_static(b"\0"),
                    range_end: Bytes::from_static(b"\0"),
                    ..RangeRequest::single("")
                };
                (*id, r.kv().revision(), r.kv().range(&all).map(|resp| resp.kvs))
            })
        });
        if let Some((first_id, rev, kvs)) = states.next() {
            for (id, rev2, kvs2) in states {
                if rev2 != rev || kvs2 != kvs {
                    return Err(Failure::Safety(format!(
                        "state machines diverged: {first_id} at revision {rev}, {id} at revision {rev2}"
                    )));
                }
            }
        }
        // Whole states (sessions, leases, members too), however each node got there.
        let states: Vec<(NodeId, LogIndex, u64)> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                let r = n.replica.as_ref()?;
                Some((*id, r.node().status().applied, state_digest(r.kv())))
            })
            .collect();
        self.checkers.check_final_states(&states).map_err(|v| Failure::Safety(v.to_string()))?;
        self.check_watchers()?;
        self.check_leases()?;
        if self.locks.is_some() {
            check_lock(self.events.revisions()).map_err(|v| Failure::Safety(v.to_string()))?;
        }
        if self.auth.is_some() {
            self.auth_counts =
                self.auth_checker.check().map_err(|v| Failure::Safety(v.to_string()))?;
        }
        Ok(())
    }

    // ----- Membership churn ---------------------------------------------------------------------

    /// What the membership operator did so far (see [`Profile::membership`]).
    pub fn churn(&self) -> ChurnCounts {
        self.operator.as_ref().map_or_else(ChurnCounts::default, |o| o.counts)
    }

    /// Committed entries the commit quorum checker looked at.
    pub fn quorum_checked(&self) -> u64 {
        self.quorums.checked()
    }

    /// The configuration of the committed log, as far as any leader committed.
    fn committed_config(&self) -> Membership {
        self.quorums.committed_config_at(self.quorums.frontier()).1.clone()
    }

    /// The operator's step: bring the world in line with the committed configuration (start
    /// members added, stop members removed); then, in the safety phase and with no change
    /// in flight, ask the leader for the next change.
    fn operator_step(&mut self) -> Result<(), Failure> {
        let after = self.rng.range(50, 250);
        self.schedule(after, Event::Operator);
        self.operator_reconcile()?;
        self.operator_watch_transfer();
        let now = self.now;
        let Some(op) = self.operator.as_mut() else { return Ok(()) };
        if op.transfer.is_some() {
            return Ok(()); // The leader refuses changes while it hands over.
        }
        if let Some(f) = &op.in_flight {
            if f.deadline > now {
                return Ok(());
            }
            // No answer in time (its node crashed, or the answer was lost with it): the
            // change may or may not have happened; the committed configuration will tell.
            op.in_flight = None;
            op.counts.unknown += 1;
        }
        if self.liveness || self.now >= self.profile.safety_ms {
            return Ok(());
        }
        let Some(leader) = self.leader() else { return Ok(()) };
        let committed = self.committed_config();
        let current = self.nodes[&leader].replica.as_ref().expect("up").membership().clone();
        if current != committed || current.voters.is_joint() {
            return Ok(()); // A change is still on its way.
        }
        let voters: Vec<NodeId> = committed.voters.incoming.voters().iter().copied().collect();
        let learner = committed.learners.iter().next().copied();
        let mut replace = false;
        let request = if let Some(learner) = learner {
            if !self.nodes.contains_key(&learner) {
                return Ok(()); // It has not started yet.
            }
            if self.rng.chance(0.15) {
                MemberRequest::Remove { member_id: learner.0 }
            } else {
                MemberRequest::Promote { member_id: learner.0 }
            }
        } else {
            let op = self.operator.as_mut().expect("operator");
            let grow = voters.len() < VOTERS_MAX;
            let shrink = voters.len() > 1;
            let choice = if op.replace_pending && grow {
                0
            } else {
                let mut choices = Vec::new();
                if grow {
                    choices.extend([0, 0]);
                }
                if shrink {
                    choices.extend([1, 2, 3]);
                }
                self.rng.pick(&choices)
            };
            if choice == 3 {
                return self.operator_transfer(leader, &voters);
            }
            // Most new members start as learners, as etcd advises; some join as voters at
            // once, which puts an empty log in the quorum until it catches up.
            let learner = self.rng.chance(0.7);
            let op = self.operator.as_mut().expect("operator");
            op.replace_pending = false;
            match choice {
                0 => {
                    let member_id = op.next_id;
                    op.next_id += 1;
                    let peer_urls = vec![format!("http://n{member_id}:2380")];
                    MemberRequest::Add { member_id, peer_urls, learner }
                }
                _ => {
                    replace = choice == 2;
                    let victim = if self.rng.chance(0.3) { leader } else { self.rng.pick(&voters) };
                    MemberRequest::Remove { member_id: victim.0 }
                }
            }
        };
        // Now and then through a member that is not the leader, which must refuse it.
        let target =
            if self.rng.chance(0.9) { leader } else { self.workload_target(0.0).unwrap_or(leader) };
        let op = self.operator.as_mut().expect("operator");
        op.requests += 1;
        let id = RequestId(OPERATOR_REQUEST_BASE + op.requests);
        let deadline = self.now + OPERATOR_PATIENCE_MS;
        op.in_flight =
            Some(OperatorRequest { node: target, id, request: request.clone(), replace, deadline });
        self.note(|| format!("operator asks {target}: {request:?}"));
        let mut out = Output::default();
        let r = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()).expect("up");
        r.change_members(id, request, &mut out);
        self.absorb(target, out)?;
        self.pump(target)
    }

    /// The operator asks `leader` to hand leadership to another of `voters` (etcd's
    /// `MoveLeader`, dissertation §3.10), now and then to a node that is down, so that the
    /// transfer is abandoned after an election timeout.
    fn operator_transfer(&mut self, leader: NodeId, voters: &[NodeId]) -> Result<(), Failure> {
        let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != leader).collect();
        if others.is_empty() {
            return Ok(());
        }
        let to = self.rng.pick(&others);
        let deadline = self.now + OPERATOR_PATIENCE_MS;
        let r = self.nodes.get_mut(&leader).and_then(|n| n.replica.as_mut()).expect("up");
        let term = r.node().term();
        match r.transfer_leadership(to) {
            Ok(()) => {
                self.note(|| format!("operator asks {leader} to hand leadership to {to}"));
                let op = self.operator.as_mut().expect("operator");
                op.counts.transfers += 1;
                op.transfer = Some(OperatorTransfer { to, term, deadline });
                self.pump(leader)
            }
            Err(e) => Err(Failure::Safety(format!(
                "leader {leader} of term {term} refused to hand leadership to voter {to}: {e}"
            ))),
        }
    }

    /// Follows the transfer in progress: done once its target leads a later term; given up
    /// at the operator's deadline (the leader abandons a transfer after an election timeout,
    /// and faults may elect someone else).
    fn operator_watch_transfer(&mut self) {
        let Some(t) = self.operator.as_ref().and_then(|op| op.transfer.as_ref()) else { return };
        let (to, term, deadline) = (t.to, t.term, t.deadline);
        let led = self
            .nodes
            .get(&to)
            .and_then(|n| n.replica.as_ref())
            .is_some_and(|r| r.is_leader() && r.node().term() > term);
        let op = self.operator.as_mut().expect("operator");
        if led {
            op.counts.transfers_completed += 1;
            op.transfer = None;
            self.note(|| format!("operator: {to} leads after the transfer"));
        } else if self.now >= deadline {
            op.transfer = None;
        }
    }

    /// The operator heard how its change ended.
    fn operator_complete(&mut self, completion: Completion) -> Result<(), Failure> {
        let op = self.operator.as_mut().expect("operator");
        let f = op.in_flight.take().expect("in flight");
        let id = NodeId(f.request.member_id());
        let m = match completion.result {
            Ok(Answer::Membership(m)) => m,
            Ok(other) => {
                return Err(Failure::Safety(format!(
                    "a membership change ({:?}) was answered with {other:?}",
                    f.request
                )));
            }
            Err(error) => {
                if matches!(error, ClientError::Member(_)) {
                    op.counts.refused += 1;
                } else {
                    op.counts.unknown += 1;
                }
                self.note(|| format!("operator: {:?} failed: {error}", f.request));
                return Ok(());
            }
        };
        // The answer is the configuration once the change took effect.
        let answered_right = match f.request {
            MemberRequest::Add { learner: true, .. } => m.learners.contains(&id),
            MemberRequest::Add { learner: false, .. } => m.is_voter(id),
            MemberRequest::Promote { .. } => m.is_voter(id),
            MemberRequest::Remove { .. } => !m.contains(id),
        };
        if !answered_right || m.voters.is_joint() {
            return Err(Failure::Safety(format!(
                "membership change {:?} was answered with configuration {m:?}",
                f.request
            )));
        }
        self.note(|| format!("operator: {:?} done: {m:?}", f.request));
        let op = self.operator.as_mut().expect("operator");
        match f.request {
            MemberRequest::Add { learner, .. } => {
                if learner {
                    op.counts.learners_added += 1;
                } else {
                    op.counts.voters_added += 1;
                }
                let after = self.rng.range(0, 200);
                self.schedule(after, Event::Join(id));
            }
            MemberRequest::Promote { .. } => op.counts.promoted += 1,
            MemberRequest::Remove { .. } => {
                op.counts.removed += 1;
                op.counts.leaders_removed += u64::from(f.node == id);
                if f.replace {
                    op.counts.replacements += 1;
                    op.replace_pending = true;
                }
                self.retire(id);
            }
        }
        Ok(())
    }

    /// Starts every member of the committed configuration that has not started, and retires
    /// every node that the committed configuration no longer names.
    fn operator_reconcile(&mut self) -> Result<(), Failure> {
        let committed = self.committed_config();
        for id in committed.members() {
            if !self.nodes.contains_key(&id) {
                self.join(id)?;
            }
        }
        let gone: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(id, n)| !n.removed && !committed.contains(**id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.retire(id);
        }
        Ok(())
    }

    /// A node added to the configuration starts on an empty disk with the committed
    /// configuration (which names it), as `tenure serve --initial-cluster-state existing`
    /// starts with the member list `MemberAdd` returned.
    fn join(&mut self, id: NodeId) -> Result<(), Failure> {
        let committed = self.committed_config();
        if self.nodes.contains_key(&id) || !committed.contains(id) {
            return Ok(());
        }
        let drift = self.profile.drift_percent * TICK_MS;
        let tick_ms = (TICK_MS * 100 + self.rng.range(0, 2 * drift + 1) - drift).max(50) / 100;
        let node = SimNode {
            replica: None,
            disk: SimDisk::new(self.seed.wrapping_mul(31).wrapping_add(id.0)),
            tick_ms: tick_ms.max(1),
            paused: false,
            ticks_missed: 0,
            sync: None,
            epoch: 0,
            next_request: 1,
            led: None,
            snapshot: None,
            installed_seen: 0,
            joined_with: Some(committed.clone()),
            removed: false,
            shadow: None,
        };
        self.nodes.insert(id, node);
        self.note(|| format!("{id} joins with {committed:?}"));
        if let Some(op) = self.operator.as_mut() {
            op.counts.joined += 1;
        }
        self.start_node(id)?;
        let first_tick = self.rng.range(1, TICK_MS + 1);
        self.schedule(first_tick, Event::Tick(id));
        self.pump(id)
    }

    /// A node was removed from the cluster: it stops, at once or (half the time, in the
    /// safety phase) after running for up to a second, during which it must not disrupt the
    /// others. It is never restarted.
    fn retire(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        if node.removed {
            return;
        }
        node.removed = true;
        if node.replica.is_none() || self.liveness || self.rng.chance(0.5) {
            self.stop(id);
        } else {
            let after = self.rng.range(100, 1000);
            self.note(|| format!("{id} was removed and keeps running for {after}ms"));
            self.schedule(after, Event::Stop(id));
        }
    }

    /// A removed node stops for good.
    fn stop(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("node").removed = true;
        if self.late_node == Some(id) {
            self.late_node = None;
        }
        if self.take_down(id) {
            if let Some(op) = self.operator.as_mut() {
                op.counts.stopped += 1;
            }
            self.note(|| format!("{id} stops: removed"));
        }
    }

    /// After a node went idle: if its replica says it was removed, it stops, as the server
    /// does on [`Replica::is_removed`]. It must really have been: the committed configuration
    /// no longer names it (ids are never reused, so a member that believes otherwise would stop
    /// a member of the cluster), and the replica must not say so before its core does (the
    /// joint configuration may still need its vote; `tests/membership.rs` shows a two-voter
    /// cluster that removed its leader stuck for good when it did).
    fn check_removed(&mut self, id: NodeId) -> Result<(), Failure> {
        let node = &self.nodes[&id];
        let Some(r) = node.replica.as_ref().filter(|_| !node.removed) else { return Ok(()) };
        let (core, replica) = (r.node().is_removed(), r.is_removed());
        if !replica {
            return Ok(());
        }
        let committed = self.committed_config();
        if !core {
            if let Some(op) = self.operator.as_mut() {
                op.counts.told_removed_early += 1;
            }
            return Err(Failure::Safety(format!(
                "{id} is told it was removed before its core knows it (committed configuration \
                 {committed:?})"
            )));
        }
        if committed.contains(id) {
            return Err(Failure::Safety(format!(
                "a member never removed believes it was: {id} says it was removed, but the \
                 committed configuration {committed:?} names it"
            )));
        }
        self.note(|| format!("{id} learned it was removed"));
        self.retire(id);
        Ok(())
    }

    // ----- Auth clients -------------------------------------------------------------------------

    /// What the auth checker checked (zero unless the run had the auth workload and passed).
    pub fn auth_counts(&self) -> AuthCounts {
        self.auth_counts
    }

    /// The auth checker, for tests that feed it.
    pub fn auth_checker_mut(&mut self) -> &mut AuthChecker {
        &mut self.auth_checker
    }

    /// An auth client's step: its next request, to the leader or (half the time) any member.
    fn auth_step(&mut self, c: usize) -> Result<(), Failure> {
        let after = self.rng.range(20, 120);
        self.schedule(after, Event::AuthClient(c));
        let Some(target) = self.workload_target(0.5) else { return Ok(()) };
        let stop = self.liveness || self.now >= self.profile.safety_ms;
        let state = {
            let r = self.nodes[&target].replica.as_ref().expect("up");
            Arc::clone(r.kv().auth())
        };
        let Some(auth) = self.auth.as_mut() else { return Ok(()) };
        let Some(send) = auth.step(c, target, &state, self.now, stop, &mut self.rng) else {
            return Ok(());
        };
        let line = format!("auth client {c} sends {:?} to {target}", send.proposal);
        self.note(|| line);
        let mut out = Output::default();
        let r = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()).expect("up");
        r.propose(send.id, &send.proposal, &mut out);
        self.absorb(target, out)?;
        self.pump(target)
    }

    /// Observes what node `id` applied in `out` for the auth checker: every entry's index and
    /// auth-carrying content; and, replayed on the node's copy of its store from before, each
    /// one's outcome and the auth state after it. The copy must end equal to the node's store.
    fn auth_observe(&mut self, id: NodeId, out: &Output) -> Result<(), Failure> {
        let safety = |v: Violation| Failure::Safety(v.to_string());
        let node = self.nodes.get_mut(&id).expect("node");
        let shadow = node.shadow.take();
        let Some(r) = node.replica.as_ref() else { return Ok(()) };
        let applied = r.node().status().applied;
        let checker = &mut self.auth_checker;
        checker.on_events(&out.events);
        for e in &out.applied {
            let proposal = (e.kind == EntryKind::Normal)
                .then(|| Envelope::decode(&e.data))
                .flatten()
                .and_then(|(_, bytes)| Proposal::decode(bytes).ok())
                .filter(carries_auth);
            checker.on_applied(e.index(), proposal);
        }
        let follows = |from: LogIndex| {
            out.applied.first().is_some_and(|e| e.index() == from.next())
                && out.applied.last().is_some_and(|e| e.index() == applied)
        };
        if let Some((from, mut copy)) = shadow
            && follows(from)
        {
            let mut whole = true;
            for e in &out.applied {
                let index = e.index();
                match e.kind {
                    EntryKind::Normal => {
                        let Some((env, bytes)) = Envelope::decode(&e.data) else { continue };
                        let revision = copy.revision();
                        let outcome = copy.apply(index.0, env.log_time_ms, bytes);
                        let changed = !copy.take_events().is_empty() || copy.revision() != revision;
                        let _ = copy.take_lease_changes();
                        if Proposal::decode(bytes).is_ok_and(|p| carries_auth(&p)) {
                            let seen = Observed { node: id, outcome, changed };
                            checker.on_outcome(index, seen).map_err(safety)?;
                        }
                        checker.on_state(id, index, copy.auth()).map_err(safety)?;
                    }
                    EntryKind::Noop => {}
                    // A configuration entry changes the store through the replica's member
                    // bookkeeping, which the copy does not follow: stop here.
                    _ => {
                        whole = false;
                        break;
                    }
                }
            }
            if whole && copy != *r.kv() {
                return Err(Failure::Safety(format!(
                    "the auth checker's replay of {id}'s entries through {applied} does not \
                     end in {id}'s store: the outcomes observed are not the node's"
                )));
            }
        }
        checker.on_state(id, applied, r.kv().auth()).map_err(safety)?;
        node.shadow = Some((applied, r.kv().clone()));
        Ok(())
    }

    // ----- Lease clients ------------------------------------------------------------------------

    /// Where a workload sends its next request: the leader with probability `leader_share`
    /// (if there is one up), otherwise any node that is up and not paused; `None` if none is.
    fn workload_target(&mut self, leader_share: f64) -> Option<NodeId> {
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.replica.is_some() && !n.paused)
            .map(|(id, _)| *id)
            .collect();
        if up.is_empty() {
            return None;
        }
        let leader = up.iter().copied().find(|id| node_is_leader(&self.nodes, *id));
        Some(match leader {
            Some(l) if self.rng.chance(leader_share) => l,
            _ => self.rng.pick(&up),
        })
    }

    /// A lease client's step: its next request, to the leader or (half the time) any member,
    /// so that renewals also travel as forwarded proposals.
    fn lease_step(&mut self, c: usize) -> Result<(), Failure> {
        let after = self.rng.range(100, 300);
        self.schedule(after, Event::LeaseClient(c));
        let Some(target) = self.workload_target(0.5) else { return Ok(()) };
        let stop = self.liveness || self.now >= self.profile.safety_ms;
        let Some(leases) = self.leases.as_mut() else { return Ok(()) };
        let Some((req, command)) = leases.step(c, target, self.now, stop, &mut self.rng) else {
            return Ok(());
        };
        self.note(|| format!("lease client {c} sends {command:?} to {target}"));
        let mut out = Output::default();
        let r = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()).expect("up");
        r.propose(req, &Proposal::new(command), &mut out);
        self.absorb(target, out)?;
        self.pump(target)
    }

    /// A lock client's step: its next request to the leader or any member.
    fn lock_step(&mut self, c: usize) -> Result<(), Failure> {
        let after = self.rng.range(50, 200);
        self.schedule(after, Event::LockClient(c));
        let Some(target) = self.workload_target(0.5) else { return Ok(()) };
        let stop = self.liveness || self.now >= self.profile.safety_ms;
        let Some(locks) = self.locks.as_mut() else { return Ok(()) };
        let Some((req, request)) = locks.step(c, target, self.now, stop) else {
            return Ok(());
        };
        self.note(|| format!("lock client {c} sends {request:?} to {target}"));
        let mut out = Output::default();
        let r = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()).expect("up");
        match request {
            LockRequest::Propose(command) => r.propose(req, &Proposal::new(command), &mut out),
            LockRequest::Read(range) => r.read(req, range, Consistency::Linearizable, &mut out),
        }
        self.absorb(target, out)?;
        self.pump(target)
    }

    /// Guarded writes the lock clients were told took effect.
    pub fn lock_writes(&self) -> u64 {
        self.locks.as_ref().map_or(0, |l| l.acknowledged_writes)
    }

    /// Leases of the lease clients whose key was deleted (they expired).
    pub fn leases_expired(&self) -> u64 {
        self.leases
            .as_ref()
            .map_or(0, |l| l.records().iter().filter(|r| r.deleted_at.is_some()).count() as u64)
    }

    /// Lease renewals the lease clients saw acknowledged without a log entry.
    pub fn lease_renewals_without_log(&self) -> u64 {
        self.leases.as_ref().map_or(0, |l| l.renewed_without_log)
    }

    /// Followers' forwarded renewals that leaders took without a heartbeat round (the
    /// follower's message and the leader were the quorum), over every run of every node.
    pub fn lease_renewals_without_round(&self) -> u64 {
        let running: u64 = self
            .nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| r.renewals_without_round())
            .sum();
        self.renewals_without_round_gone + running
    }

    /// The lease checkers, at the end of the run.
    fn check_leases(&self) -> Result<(), Failure> {
        let Some(leases) = self.leases.as_ref() else { return Ok(()) };
        let ticks = self.nodes.values().map(|n| n.tick_ms);
        let (fast, slow) = (ticks.clone().min().unwrap_or(TICK_MS), ticks.max().unwrap_or(TICK_MS));
        let bounds = LeaseBounds {
            fastest: (TICK_MS, fast),
            slowest: (TICK_MS, slow),
            healed_at: self.healed_at.unwrap_or(self.now),
            late_ms: LEASE_LATE_MS,
        };
        check_leases(&leases.records(), &bounds).map_err(|v| Failure::Safety(v.to_string()))
    }

    // ----- Watchers -----------------------------------------------------------------------------

    /// Two to four watchers, each of one kind (the whole key space, a single key, the watch
    /// workload's prefix, the clients' prefix) with random filters and prev_kv, starting at
    /// random times in the first half of the safety phase; and the watch workload.
    fn add_watchers(&mut self) {
        let count = self.rng.range(2, 5);
        for i in 0..count {
            let mut spec = match i % 4 {
                0 => WatchSpec::new("\0", "\0"),
                1 => {
                    let key = self.rng.pick(&["w0", "w1", "w2", "k0"]);
                    WatchSpec::new(key, "")
                }
                2 => WatchSpec::new("w", tenure_kv::prefix_end(b"w")),
                _ => WatchSpec::new("k", tenure_kv::prefix_end(b"k")),
            };
            match self.rng.range(0, 5) {
                0 => spec.no_put = true,
                1 => spec.no_delete = true,
                _ => {}
            }
            spec.prev_kv = self.rng.chance(0.5);
            self.watchers.push(SimWatcher {
                spec,
                cursor: None,
                node: None,
                last_node: None,
                installed_seen: 0,
                state: WatchState::Detached,
                generation: 0,
                observations: Vec::new(),
            });
            let at = self.rng.range(1, self.profile.safety_ms / 2 + 2);
            self.schedule(at, Event::Watcher(i as usize));
        }
        let at = self.rng.range(1, 50);
        self.schedule(at, Event::WatchWrite);
    }

    /// A watcher's periodic step: a detached one connects; one that follows its node lags now
    /// and then (catches up from history again), moves to another node now and then, and
    /// otherwise takes a progress notification.
    fn watcher_step(&mut self, w: usize) {
        let next = self.rng.range(10, 80);
        self.schedule(next, Event::Watcher(w));
        match self.watchers[w].state {
            WatchState::Detached => self.watch_connect(w),
            WatchState::CatchingUp { .. } => {}
            WatchState::Following => match self.rng.range(0, 20) {
                0..=2 => {
                    self.note(|| format!("watcher {w} lags"));
                    self.watch_catch_up(w);
                }
                3 => {
                    self.watch_detach(w);
                    self.watch_connect(w);
                }
                _ => {
                    let watcher = &mut self.watchers[w];
                    let revision = watcher.cursor.as_ref().expect("following").next() - 1;
                    watcher.observations.push(WatchObservation::Progress { revision });
                }
            },
        }
    }

    /// Attaches a watcher to an up node (another than its last one if it can), starting its
    /// watch there (from the node's next revision or a little in the past) or resuming it from
    /// its next revision, and catches up from history.
    fn watch_connect(&mut self, w: usize) {
        let up: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.replica.is_some() && !n.paused)
            .map(|(id, _)| *id)
            .collect();
        let others: Vec<NodeId> =
            up.iter().copied().filter(|id| Some(*id) != self.watchers[w].last_node).collect();
        let target = match (others.is_empty(), up.is_empty()) {
            (_, true) => return,
            (true, false) => self.rng.pick(&up),
            (false, false) => self.rng.pick(&others),
        };
        let node = &self.nodes[&target];
        let r = node.replica.as_ref().expect("up");
        let (revision, installed, epoch) =
            (r.kv().revision(), r.snapshot_stats().installed, node.epoch);
        let from_now = self.rng.chance(0.5);
        let back = self.rng.range(0, 8) as i64;
        let watcher = &mut self.watchers[w];
        match &watcher.cursor {
            None => {
                let from = if from_now { revision + 1 } else { (revision - back).max(1) };
                watcher.cursor = Some(WatchCursor::new(watcher.spec.clone(), from));
                watcher.observations.push(WatchObservation::Start { from });
                self.note(|| format!("watcher {w} starts on {target} from {from}"));
            }
            Some(cursor) => {
                let next = cursor.next();
                watcher.observations.push(WatchObservation::Resume { node: target, next });
                self.note(|| format!("watcher {w} resumes on {target} from {next}"));
            }
        }
        let watcher = &mut self.watchers[w];
        watcher.node = Some((target, epoch));
        watcher.last_node = Some(target);
        watcher.installed_seen = installed;
        self.watch_catch_up(w);
    }

    /// The watcher loses its stream.
    fn watch_detach(&mut self, w: usize) {
        let watcher = &mut self.watchers[w];
        watcher.node = None;
        watcher.state = WatchState::Detached;
        watcher.generation += 1;
    }

    /// After a partition change, each watcher whose node lost a link moves to another node
    /// half the time (a client whose member is cut off reconnects elsewhere).
    fn watchers_leave_cut_nodes(&mut self) {
        for w in 0..self.watchers.len() {
            let Some((node, _)) = self.watchers[w].node else { continue };
            let cut = self.cut.iter().any(|(a, b)| *a == node || *b == node);
            if cut && self.rng.chance(0.5) {
                self.note(|| format!("watcher {w} leaves {node}"));
                self.watch_detach(w);
                self.watch_connect(w);
            }
        }
    }

    /// Starts reading history from a copy of the watcher's node's store (O(1)), from the
    /// watcher's next revision through the copy's revision.
    fn watch_catch_up(&mut self, w: usize) {
        let Some((id, _)) = self.watchers[w].node else { return };
        let Some(r) = self.nodes[&id].replica.as_ref() else {
            self.watch_detach(w);
            return;
        };
        let copy = Box::new(r.kv().clone());
        let upto = copy.revision();
        let watcher = &mut self.watchers[w];
        watcher.generation += 1;
        watcher.state = WatchState::CatchingUp { copy, upto, buffered: Vec::new(), lagged: false };
        let generation = watcher.generation;
        let after = self.rng.range(0, 3);
        self.schedule(after, Event::WatchPage(w, generation));
    }

    /// One history page for a watcher catching up (a compacted start cancels its watch and
    /// starts a new one after the compaction, as a client does); once through the copy, the
    /// buffered live batches, or a fresh copy if it lagged.
    fn watch_page(&mut self, w: usize, generation: u64) {
        let max_events = self.rng.range(1, 4) as usize;
        let watcher = &mut self.watchers[w];
        if watcher.generation != generation {
            return;
        }
        let WatchState::CatchingUp { copy, upto, .. } = &watcher.state else { return };
        let upto = *upto;
        let cursor = watcher.cursor.as_mut().expect("a catching-up watcher has started");
        let mut cancelled = None;
        if cursor.next() <= upto {
            let (spec, seen) = (&watcher.spec, &mut watcher.observations);
            let (delivered, c) = history_page(cursor, spec, seen, copy, upto, max_events);
            self.watch_events_delivered += delivered;
            cancelled = c;
        }
        if let Some(c) = cancelled {
            self.note(|| {
                format!("watcher {w} cancelled: compacted at {c}; a new watch from {}", c + 1)
            });
        }
        let watcher = &mut self.watchers[w];
        let cursor = watcher.cursor.as_mut().expect("started");
        if cursor.next() <= upto {
            let after = self.rng.range(0, 3);
            self.schedule(after, Event::WatchPage(w, generation));
            return;
        }
        let state = std::mem::replace(&mut watcher.state, WatchState::Following);
        let WatchState::CatchingUp { buffered, lagged, .. } = state else { unreachable!() };
        if lagged {
            self.watch_catch_up(w);
            return;
        }
        for (batch, revision) in buffered {
            let out = cursor.on_live(&batch, revision);
            self.watch_events_delivered += deliver(&mut watcher.observations, out);
        }
    }

    /// A node's output: its watchers take the live batch (or buffer it while catching up),
    /// or start over from history if the node installed a snapshot since they last looked.
    fn watch_live(&mut self, id: NodeId, events: &[RevisionEvents]) {
        let node = &self.nodes[&id];
        let Some(r) = node.replica.as_ref() else { return };
        let (revision, installed, epoch) =
            (r.kv().revision(), r.snapshot_stats().installed, node.epoch);
        for w in 0..self.watchers.len() {
            let watcher = &mut self.watchers[w];
            if watcher.node != Some((id, epoch)) {
                continue;
            }
            if watcher.installed_seen != installed {
                watcher.installed_seen = installed;
                self.note(|| format!("watcher {w} resets: {id} installed a snapshot"));
                self.watch_catch_up(w);
                continue;
            }
            match &mut watcher.state {
                WatchState::Detached => {}
                WatchState::Following => {
                    let cursor = watcher.cursor.as_mut().expect("following");
                    let out = cursor.on_live(events, revision);
                    self.watch_events_delivered += deliver(&mut watcher.observations, out);
                }
                WatchState::CatchingUp { buffered, lagged, .. } => {
                    if *lagged || events.is_empty() {
                        continue;
                    }
                    if buffered.len() >= WATCH_BUFFER_BATCHES {
                        *lagged = true;
                        buffered.clear();
                    } else {
                        buffered.push((events.to_vec(), revision));
                    }
                }
            }
        }
    }

    /// The watch workload's next write, on keys of its own (`w0`..`w3`): puts, deletes of a
    /// key or the whole prefix, transactions writing several keys in one revision, and now and
    /// then a compaction a few revisions back. Fire and forget: outcomes are not checked here;
    /// the watchers see what was applied.
    fn watch_write(&mut self) -> Result<(), Failure> {
        if self.liveness || self.now >= self.profile.safety_ms {
            return Ok(());
        }
        let after = self.rng.range(5, 40);
        self.schedule(after, Event::WatchWrite);
        let Some(target) = self.workload_target(0.8) else { return Ok(()) };
        self.watch_writes += 1;
        let value = format!("x{}", self.watch_writes);
        let key = |rng: &mut SimRng| format!("w{}", rng.range(0, 4));
        let kv = self.nodes[&target].replica.as_ref().expect("up").kv();
        let (revision, compacted) = (kv.revision(), kv.compact_revision().unwrap_or(0));
        let cmd = match self.rng.range(0, 12) {
            5 => Command::DeleteRange(DeleteRangeRequest::single(key(&mut self.rng))),
            6 => Command::DeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(b"w"),
                range_end: tenure_kv::prefix_end(b"w"),
                prev_kv: false,
            }),
            7..=9 => {
                // Distinct keys: etcd refuses a transaction that writes one key twice.
                let first = self.rng.range(0, 4);
                let count = self.rng.range(2, 5);
                let ops = (0..count)
                    .map(|i| {
                        let k = format!("w{}", (first + i) % 4);
                        if self.rng.chance(0.3) {
                            RequestOp::DeleteRange(DeleteRangeRequest::single(k))
                        } else {
                            RequestOp::Put(PutRequest::new(k, value.clone()))
                        }
                    })
                    .collect();
                Command::Txn(TxnRequest { compare: vec![], success: ops, failure: vec![] })
            }
            10 | 11 if revision - 1 > compacted => {
                let back = self.rng.range(0, 6) as i64;
                let at = (revision - back).max(compacted + 1);
                Command::Compact(CompactionRequest { revision: at, physical: false })
            }
            _ => Command::Put(PutRequest::new(key(&mut self.rng), value)),
        };
        let req = RequestId(WATCH_REQUEST_BASE + self.watch_writes);
        let mut out = Output::default();
        let r = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()).expect("up");
        r.propose(req, &Proposal::new(cmd), &mut out);
        self.absorb(target, out)?;
        self.pump(target)
    }

    /// At the end: every watcher resumes on the node furthest ahead and catches up through its
    /// revision (all nodes have converged), then takes a progress notification there; each
    /// stream is then checked against the reference, and the replicas' events against each
    /// other.
    fn check_watchers(&mut self) -> Result<(), Failure> {
        self.events.check().map_err(|v| Failure::Safety(v.to_string()))?;
        let target = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.replica.as_ref().map(|r| (r.kv().revision(), *id)))
            .max();
        for w in 0..self.watchers.len() {
            let Some((_, id)) = target else { break };
            if self.watchers[w].cursor.is_none() {
                continue;
            }
            self.watch_detach(w);
            let store = self.nodes[&id].replica.as_ref().expect("up").kv().clone();
            let upto = store.revision();
            let watcher = &mut self.watchers[w];
            let cursor = watcher.cursor.as_mut().expect("started");
            watcher.observations.push(WatchObservation::Resume { node: id, next: cursor.next() });
            while cursor.next() <= upto {
                let (spec, seen) = (&watcher.spec, &mut watcher.observations);
                self.watch_events_delivered += history_page(cursor, spec, seen, &store, upto, 64).0;
            }
            let revision = cursor.next() - 1;
            watcher.observations.push(WatchObservation::Progress { revision });
        }
        for (w, watcher) in self.watchers.iter().enumerate() {
            check_watch(
                &w.to_string(),
                &watcher.spec,
                &watcher.observations,
                self.events.revisions(),
            )
            .map_err(|v| Failure::Safety(v.to_string()))?;
        }
        Ok(())
    }

    // ----- Clients ------------------------------------------------------------------------------

    fn client_step(&mut self, c: u64) -> Result<(), Failure> {
        let idx = c as usize;
        match &self.clients[idx].op {
            // An attempt is in flight: its completion or its timeout moves the client on.
            Some(op) if op.in_flight.is_some() => return Ok(()),
            Some(_) => {}
            None => {
                if self.liveness || self.now >= self.profile.safety_ms {
                    return Ok(()); // No new operations after the safety phase.
                }
                let op = self.new_op(idx);
                self.clients[idx].op = Some(op);
            }
        }
        self.attempt(idx);
        Ok(())
    }

    /// The client gives up waiting on an attempt whose node went silent (crashed, cut off):
    /// its outcome is unknown, and it retries.
    fn client_timeout(&mut self, c: u64, node: NodeId, req: RequestId) {
        let idx = c as usize;
        let Some(op) = self.clients[idx].op.as_mut() else { return };
        if op.in_flight.map(|(n, r, _)| (n, r)) != Some((node, req)) {
            return;
        }
        op.in_flight = None;
        op.maybe_applied |= is_write(&op.kind);
        self.waiting.remove(&(node, req));
        self.attempt(idx);
    }

    fn new_op(&mut self, idx: usize) -> ClientOp {
        let key = format!("k{}", self.rng.range(0, self.profile.keys));
        let value = format!("c{}v{}", self.clients[idx].id, self.clients[idx].next_sequence);
        let kind = match self.rng.range(0, 10) {
            0..=3 => OpKind::Write { value },
            4..=7 => OpKind::Read { value: None },
            _ => {
                let expected = format!(
                    "c{}v{}",
                    self.rng.range(1, self.profile.clients + 1),
                    self.rng.range(1, 8)
                );
                OpKind::Cas { expected: Some(expected), value }
            }
        };
        let sequence = if is_write(&kind) {
            let s = self.clients[idx].next_sequence;
            self.clients[idx].next_sequence += 1;
            s
        } else {
            0
        };
        ClientOp {
            kind,
            key,
            call: self.now,
            sequence,
            attempts: 0,
            maybe_applied: false,
            in_flight: None,
        }
    }

    fn attempt(&mut self, idx: usize) {
        let c = idx as u64;
        let up: Vec<NodeId> =
            self.nodes.iter().filter(|(_, n)| n.replica.is_some()).map(|(id, _)| *id).collect();
        if up.is_empty() {
            self.schedule(50, Event::Client(c));
            return;
        }
        let hint = self.clients[idx].leader_hint.filter(|h| up.contains(h));
        let target = match hint {
            Some(h) if self.rng.chance(0.8) => h,
            _ => self.rng.pick(&up),
        };
        let req = if self.profile.restart_request_ids {
            let node = self.nodes.get_mut(&target).expect("up");
            node.next_request += 1;
            RequestId(node.next_request - 1)
        } else {
            self.next_request += 1;
            RequestId(self.next_request - 1)
        };
        let client_id = self.clients[idx].id;
        let op = self.clients[idx].op.as_mut().expect("op");
        op.attempts += 1;
        op.in_flight = Some((target, req, self.now + 700));
        let key = op.key.clone();
        let mut out = Output::default();
        let r = self.nodes.get_mut(&target).and_then(|n| n.replica.as_mut()).expect("up");
        match &op.kind {
            OpKind::Read { .. } | OpKind::Append { .. } => {
                r.read(req, RangeRequest::single(key), Consistency::Linearizable, &mut out);
            }
            OpKind::Write { value } => {
                let cmd = Command::Put(PutRequest::new(key, value.clone()));
                r.propose(req, &Proposal::with_session(cmd, client_id, op.sequence), &mut out);
            }
            OpKind::Cas { expected, value } => {
                let expected = expected.clone().unwrap_or_default();
                let cmd = Command::Txn(TxnRequest {
                    compare: vec![Compare::new(
                        key.clone(),
                        CompareResult::Equal,
                        CompareTarget::Value(Bytes::from(expected)),
                    )],
                    success: vec![RequestOp::Put(PutRequest::new(key, value.clone()))],
                    failure: vec![],
                });
                r.propose(req, &Proposal::with_session(cmd, client_id, op.sequence), &mut out);
            }
        }
        self.waiting.insert((target, req), c);
        self.schedule(700, Event::ClientTimeout(c, target, req));
        // Completions produced at once (for example "no leader") are handled like any other.
        let _ = self.absorb(target, out);
        let _ = self.pump(target);
    }

    fn complete(
        &mut self,
        node: NodeId,
        completion: Completion,
        applied: &[tenure_raft::Entry],
    ) -> Result<(), Failure> {
        if let Some(leases) = self.leases.as_mut()
            && leases.owns(node, completion.id)
        {
            leases.complete(node, &completion, &mut self.rng);
            return Ok(());
        }
        if let Some(locks) = self.locks.as_mut()
            && locks.owns(node, completion.id)
        {
            locks.complete(node, &completion, &mut self.rng);
            return Ok(());
        }
        if let Some(auth) = self.auth.as_mut()
            && auth.owns(node, completion.id)
        {
            if let Some((index, proposal, result)) = auth.complete(node, &completion) {
                self.auth_checker.on_ack(node, index, proposal, result);
            }
            return Ok(());
        }
        if self
            .operator
            .as_ref()
            .and_then(|o| o.in_flight.as_ref())
            .is_some_and(|f| (f.node, f.id) == (node, completion.id))
        {
            return self.operator_complete(completion);
        }
        let Some(c) = self.waiting.remove(&(node, completion.id)) else {
            if completion.id.0 >= SCRIPTED_REQUEST_BASE {
                // Scripted writes are acknowledged writes too: the durability checker holds
                // them to the same rule as the clients'.
                if matches!(completion.result, Ok(Answer::Write(_))) {
                    self.acknowledge(completion.entry, applied);
                }
                self.scripted.insert(completion.id, completion);
            }
            return Ok(());
        };
        let idx = c as usize;
        let now = self.now;
        let Some(op) = self.clients[idx].op.as_mut() else { return Ok(()) };
        if op.in_flight.map(|(n, r, _)| (n, r)) != Some((node, completion.id)) {
            return Ok(());
        }
        op.in_flight = None;
        // What the operation's history entry is, once it is over: `Some(Some(status))` to
        // record it, `Some(None)` when it certainly had no effect (nothing to record), `None`
        // to retry.
        let mut read_value = None;
        let verdict: Option<Option<Status>> = match completion.result {
            Ok(Answer::Membership(_)) => {
                let what = "a key-value operation was answered with a membership change";
                return Err(Failure::Safety(what.into()));
            }
            Ok(Answer::Read(r)) => {
                read_value =
                    Some(r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()));
                Some(Some(Status::Ok))
            }
            Ok(Answer::Write(response)) => {
                let entry = completion.entry.and_then(|id| applied.iter().find(|e| e.id == id));
                if let Some(e) = entry {
                    let client = &self.clients[idx];
                    let sequence = client.op.as_ref().map_or(0, |o| o.sequence);
                    let client_id = client.id;
                    check_answer_source(e.id, &e.data, client_id, sequence)
                        .map_err(|v| Failure::Safety(v.to_string()))?;
                }
                self.acknowledge(completion.entry, applied);
                match response {
                    // The comparison did not match: nothing was written.
                    Response::Txn(t) if !t.succeeded => Some(Some(Status::Fail)),
                    _ => Some(Some(Status::Ok)),
                }
            }
            Err(ClientError::Kv(tenure_kv::Error::SessionExpired)) => {
                // The store has no session for this client id, so none of its commands
                // applied under it: start a fresh session and send this operation again.
                let client = &mut self.clients[idx];
                client.id += 1000;
                client.next_sequence = 2;
                let op = client.op.as_mut().expect("op");
                op.sequence = 1;
                let backoff = self.rng.range(1, 5);
                self.schedule(backoff, Event::Client(c));
                None
            }
            Err(ClientError::Kv(_)) => {
                // A deterministic refusal is final; the command changed nothing.
                let op = self.clients[idx].op.as_ref().expect("op");
                Some(op.maybe_applied.then_some(Status::Info))
            }
            Err(e) => {
                if let ClientError::NotLeader { leader_hint: Some(h) } = &e {
                    self.clients[idx].leader_hint = Some(*h);
                }
                let liveness = self.liveness;
                let op = self.clients[idx].op.as_mut().expect("op");
                op.maybe_applied |= matches!(e, ClientError::Timeout) && is_write(&op.kind);
                if op.attempts >= 12 && !liveness || op.attempts >= 60 {
                    Some(op.maybe_applied.then_some(Status::Info))
                } else {
                    // Retry with the same session sequence number, so it applies at most once
                    // (S7).
                    let backoff = self.rng.range(5, 30);
                    self.schedule(backoff, Event::Client(c));
                    None
                }
            }
        };
        let Some(status) = verdict else {
            return Ok(());
        };
        let op = self.clients[idx].op.take().expect("op");
        match status {
            Some(status) => {
                let mut kind = op.kind.clone();
                if let (OpKind::Read { value }, Some(v)) = (&mut kind, read_value) {
                    *value = v;
                }
                let ret = (status != Status::Info).then_some(now);
                self.history.push(HistOp {
                    client: c,
                    key: Some(op.key),
                    kind,
                    call: op.call,
                    ret,
                    status,
                });
            }
            None => {
                // Certainly never applied: its sequence number is free for the next command.
                if is_write(&op.kind) {
                    self.clients[idx].next_sequence = op.sequence;
                }
            }
        }
        self.ops_done += 1;
        if node_is_leader(&self.nodes, node) {
            self.clients[idx].leader_hint = Some(node);
        }
        let think = self.rng.range(1, 20);
        self.schedule(think, Event::Client(c));
        Ok(())
    }

    /// A write acknowledged as the entry `entry` (found among the entries just applied):
    /// from now on the durability checker expects it never to be lost.
    fn acknowledge(&mut self, entry: Option<EntryId>, applied: &[tenure_raft::Entry]) {
        if let Some(e) = entry.and_then(|id| applied.iter().find(|e| e.id == id)) {
            self.checkers
                .on_acknowledged(EntrySeen { id: e.id, digest: digest(e.kind.code(), &e.data) });
        }
    }

    /// The clients' history so far.
    pub fn history(&self) -> &[HistOp] {
        &self.history
    }

    /// Current simulated time.
    pub fn now(&self) -> Millis {
        self.now
    }

    // ----- Scripted control (scenarios) ------------------------------------------------------

    /// Cuts every link between the groups.
    pub fn set_partition(&mut self, groups: &[&[u64]]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in a.iter() {
                        for y in b.iter() {
                            self.cut.insert((NodeId(*x), NodeId(*y)));
                        }
                    }
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Restarts a crashed node now.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Failure> {
        self.start_node(id)?;
        self.pump(id)
    }

    /// Disk operations refused for lack of space so far, on all nodes' disks.
    pub fn no_space_count(&self) -> u64 {
        self.nodes.values().map(|n| n.disk.no_space_count()).sum()
    }

    /// The replica of a running node.
    pub fn replica(&self, id: NodeId) -> Option<&Replica> {
        self.nodes.get(&id).and_then(|n| n.replica.as_ref())
    }

    /// The running node that leads the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        let max_term = self
            .nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .map(|r| r.node().term())
            .max()?;
        self.nodes
            .iter()
            .find(|(_, n)| {
                n.replica.as_ref().is_some_and(|r| r.is_leader() && r.node().term() == max_term)
            })
            .map(|(id, _)| *id)
    }

    /// Proposes a put on `node` outside the clients (scripted scenarios), optionally with a
    /// client session; returns the request, whose completion [`World::completion`] shows.
    pub fn put(
        &mut self,
        node: NodeId,
        key: &str,
        value: &str,
        session: Option<(u64, u64)>,
    ) -> RequestId {
        self.scripted_seq += 1;
        let req = RequestId(SCRIPTED_REQUEST_BASE + self.scripted_seq);
        let mut out = Output::default();
        if let Some(r) = self.nodes.get_mut(&node).and_then(|n| n.replica.as_mut()) {
            let cmd = Command::Put(PutRequest::new(key.to_string(), value.to_string()));
            let proposal = match session {
                Some((client, seq)) => Proposal::with_session(cmd, client, seq),
                None => Proposal::new(cmd),
            };
            r.propose(req, &proposal, &mut out);
        }
        let _ = self.absorb(node, out);
        let _ = self.pump(node);
        req
    }

    /// A linearizable read of `key` on `node` outside the clients (scripted scenarios); returns
    /// the request, whose completion [`World::completion`] shows.
    pub fn read(&mut self, node: NodeId, key: &str) -> RequestId {
        self.scripted_seq += 1;
        let req = RequestId(SCRIPTED_REQUEST_BASE + self.scripted_seq);
        let mut out = Output::default();
        if let Some(r) = self.nodes.get_mut(&node).and_then(|n| n.replica.as_mut()) {
            let range = RangeRequest::single(key.to_string());
            r.read(req, range, Consistency::Linearizable, &mut out);
        }
        let _ = self.absorb(node, out);
        let _ = self.pump(node);
        req
    }

    /// Asks leader `from` to hand leadership to `to` (scripted scenarios; etcd's
    /// `MoveLeader`).
    pub fn transfer_leadership(
        &mut self,
        from: NodeId,
        to: NodeId,
    ) -> Result<(), tenure_raft::TransferError> {
        let r = self.nodes.get_mut(&from).and_then(|n| n.replica.as_mut()).expect("running");
        r.transfer_leadership(to)?;
        let _ = self.pump(from);
        Ok(())
    }

    /// Asks `node` for a membership change outside the operator (scripted scenarios); returns
    /// the request, whose completion [`World::completion`] shows.
    pub fn change_members(&mut self, node: NodeId, request: MemberRequest) -> RequestId {
        self.scripted_seq += 1;
        let req = RequestId(SCRIPTED_REQUEST_BASE + self.scripted_seq);
        let mut out = Output::default();
        if let Some(r) = self.nodes.get_mut(&node).and_then(|n| n.replica.as_mut()) {
            r.change_members(req, request, &mut out);
        }
        let _ = self.absorb(node, out);
        let _ = self.pump(node);
        req
    }

    /// Starts node `id` on an empty disk as a member that joins: the committed configuration
    /// must name it (scripted scenarios; the operator does this by itself).
    pub fn join_node(&mut self, id: NodeId) -> Result<(), Failure> {
        self.join(id)
    }

    /// Stops node `id` for good, as a removed member stops (scripted scenarios).
    pub fn stop_removed(&mut self, id: NodeId) {
        self.stop(id);
    }

    /// The completion of a scripted request, once it arrived.
    pub fn completion(&self, req: RequestId) -> Option<&Completion> {
        self.scripted.get(&req)
    }

    /// The full key-value record of `key` on `node` (value, version, revisions).
    pub fn record_at(&self, node: NodeId, key: &str) -> Option<tenure_kv::KeyValue> {
        let r = self.replica(node)?;
        r.kv().range(&RangeRequest::single(key.to_string())).ok()?.kvs.into_iter().next()
    }

    /// Every running node's current term.
    pub fn terms(&self) -> BTreeMap<NodeId, Term> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.replica.as_ref().map(|r| (*id, r.node().term())))
            .collect()
    }

    /// Drops messages to and from `node` from now on only in the direction given; see
    /// [`World::set_partition`] for symmetric cuts.
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Crashes `victim` (losing unsynced writes as `mode` says) at `at` in the next snapshot
    /// transfer it sends or receives. It stays down until [`World::restart`].
    pub fn crash_during_transfer(&mut self, victim: NodeId, at: TransferPoint, mode: CrashMode) {
        self.transfer_crash_plan = Some(TransferCrash { victim, at, mode });
    }

    /// Whether a crash placed by [`World::crash_during_transfer`] is still waiting.
    pub fn transfer_crash_pending(&self) -> bool {
        self.transfer_crash_plan.is_some()
    }

    /// The snapshot transfers in flight.
    pub fn transfers(&self) -> Vec<TransferStatus> {
        self.transfers
            .values()
            .map(|t| TransferStatus {
                from: t.msg.from,
                to: t.msg.to,
                last: match &t.msg.body {
                    MessageBody::Snapshot { meta } => meta.last_included,
                    _ => EntryId::default(),
                },
                chunks_done: t.chunks_done,
                chunks_total: t.chunks_total,
            })
            .collect()
    }

    /// Changes the bandwidth of snapshot transfers from now on (scripted scenarios slow it
    /// down to act during a transfer).
    pub fn set_transfer_bytes_per_ms(&mut self, bytes_per_ms: u64) {
        self.profile.transfer_bytes_per_ms = bytes_per_ms.max(1);
    }

    /// Runs the final safety checks (log matching, durability, converged state machines)
    /// and the linearizability of the clients' history, now.
    pub fn check_now(&mut self) -> Result<(), Failure> {
        self.final_checks()
    }

    /// The committed value of `key` as `node`'s state machine holds it.
    pub fn value_at(&self, node: NodeId, key: &str) -> Option<String> {
        let r = self.replica(node)?;
        let resp = r.kv().range(&RangeRequest::single(key.to_string())).ok()?;
        resp.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }
}

/// Records the revisions a watcher delivered; returns how many events they hold.
/// Reads one history page from `store` for a watcher's `cursor`, up to `upto`, and delivers its
/// events. A compacted start cancels the watch and starts a new one after the compaction, as a
/// client does. Returns the events delivered and, if cancelled, the compact revision.
fn history_page(
    cursor: &mut WatchCursor,
    spec: &WatchSpec,
    observations: &mut Vec<WatchObservation>,
    store: &Store,
    upto: i64,
    max_events: usize,
) -> (u64, Option<i64>) {
    let range = cursor.spec();
    match store.history(&range.key, &range.range_end, cursor.next(), upto, max_events) {
        Ok(page) => {
            let out = cursor.on_history(&page, upto);
            (deliver(observations, out), None)
        }
        Err(HistoryError::Compacted { compact_revision }) => {
            observations.push(WatchObservation::Cancel { compact_revision });
            let from = compact_revision + 1;
            *cursor = WatchCursor::new(spec.clone(), from);
            observations.push(WatchObservation::Start { from });
            (0, Some(compact_revision))
        }
    }
}

fn deliver(observations: &mut Vec<WatchObservation>, revisions: Vec<RevisionEvents>) -> u64 {
    let mut count = 0;
    for r in revisions {
        count += r.events.len() as u64;
        observations.push(WatchObservation::Deliver(r));
    }
    count
}

fn is_write(kind: &OpKind) -> bool {
    !matches!(kind, OpKind::Read { .. })
}

fn node_is_leader(nodes: &BTreeMap<NodeId, SimNode>, id: NodeId) -> bool {
    nodes.get(&id).and_then(|n| n.replica.as_ref()).is_some_and(|r| r.is_leader())
}

/// The configuration entries of a node's log from `lo` through `hi` (from its first index, if
/// `lo` was compacted): each one's index and the configuration it puts in force. The log is the
/// core's: what a full disk has not taken yet counts (`Replica::log_entries`).
fn config_entries(
    r: &Replica,
    lo: LogIndex,
    hi: LogIndex,
) -> Result<Vec<(LogIndex, Membership)>, Failure> {
    let n = r.node();
    let unreadable = |what: String| Failure::Crash(format!("{}'s log: {what}", n.id()));
    let at = lo.max(n.log_view().first_index());
    if at > hi {
        return Ok(Vec::new());
    }
    let entries =
        r.log_entries(at, hi).map_err(|e| unreadable(format!("entries {at}..={hi}: {e:?}")))?;
    let mut configs = Vec::new();
    for e in entries.iter().filter(|e| e.kind == EntryKind::Config) {
        let entry = ConfigEntry::decode(&e.data)
            .map_err(|err| unreadable(format!("configuration entry {}: {err}", e.id)))?;
        configs.push((e.index(), entry.next));
    }
    Ok(configs)
}

/// A replica's log as `(index, term)` pairs, starting at its snapshot point when the log was
/// compacted. The snapshot point is a committed entry the node still knows the term of
/// (`LogView::term` answers for `first_index - 1`); keeping it means a log compacted through
/// its last entry is not mistaken for an empty one, and the checkers still compare it.
fn log_of(r: &Replica) -> Vec<(LogIndex, Term)> {
    let n = r.node();
    let first = n.log_view().first_index().0.saturating_sub(1).max(1);
    let last = n.last_index();
    (first..=last.0).filter_map(|i| n.entry_term(LogIndex(i)).map(|t| (LogIndex(i), t))).collect()
}
