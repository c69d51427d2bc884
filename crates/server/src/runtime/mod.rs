//! The replica runtime: one OS thread owns a [`Replica`] and drives it from three input
//! lanes; a second thread runs the fsyncs.
//!
//! ```text
//!   ticker ──────────Tick every tick_interval──┐
//!   sync thread──────Synced(FinishedSync)──────┤ control lane (unbounded: never full,
//!   snapshot thread──SnapshotDone──────────────┤   never dropped, never behind clients)
//!   snapshot transfers──SnapshotReport─────────┤
//!   Runtime::shutdown──Shutdown────────────────┘
//!   transport ───────Peer(msg)───────────────── peer lane (bounded, large)     ──> replica thread
//!   gRPC tasks ──────Propose/Read/Inspect ───── client lane (bounded: "too many requests")
//!                                                                   │  poll()
//!                                     messages ──> Outbox (transport) ┤
//!                                completions ──> oneshot by RequestId ┤
//!                                    SyncTicket ──> sync thread (fsync) ┤
//!                                   SnapshotJob ──> snapshot thread ────┘
//! ```
//!
//! **Lanes.** Each turn the thread waits for an input on any lane, then takes every queued
//! control input, up to [`PEER_INPUTS_PER_TURN_MAX`] peer messages and up to
//! [`CLIENT_INPUTS_PER_TURN_MAX`] client requests, in that order, and polls once. So a flood of
//! clients can fill only its own lane: heartbeats and their responses, ticks and fsync
//! completions never wait behind it and are never dropped because of it, and the leader keeps
//! its quorum (Check-Quorum) however busy its clients are. Only client requests are refused
//! when their lane is full, with etcd's "too many requests". The control lane is unbounded
//! because its producers are few and paced (one tick per interval, one sync and one snapshot
//! at a time, one report per transfer). The peer lane is bounded so that a faulty peer cannot
//! exhaust memory; Raft's flow control (in-flight windows, one heartbeat per tick) keeps honest
//! peers far below its limit, and a message that finds it full is dropped and counted (Raft
//! retransmits).
//!
//! Snapshots: when the replica's policy says one is due, its [`SnapshotJob`] (an O(1) copy of
//! the store, sharing its persistent index) goes to the snapshot thread, which encodes and
//! writes it while the replica goes on applying; the finished job comes back as an input and
//! the log is compacted. A `Snapshot` message for a follower leaves with the newest snapshot file
//! opened for it ([`Outbox::send_snapshot`]); how its transfer ended comes back as an input.
//!
//! **Serializable reads run on the caller's task.** The thread publishes a
//! [`tenure_kv::ReadView`] of the store (O(1): the index is a persistent map) when a
//! serializable read needs one, and only then: a view shares the index with the store, so each
//! later write copies the path it changes, which a write-only load should not pay for every
//! turn. A serializable read uses the published view if it holds everything the store had
//! applied when the read began (the status says), which covers the reader's own acknowledged
//! writes; otherwise it asks the thread for a fresh one (`FreshView`) and runs on that, on the
//! gRPC task that asked, so a read-mostly load scales with the tokio workers.
//!
//! Linearizable reads are answered on the replica thread once their ReadIndex is confirmed and
//! applied, all those of a turn together. Running them off the thread too (a barrier, then a
//! view) was measured slower on two cores: with three members and the client sharing them,
//! the views published every turn made every write copy histories, and mixed loads lost a
//! third of their throughput (BENCHMARKS.md, issue 14).
//!
//! The replica thread never waits on I/O: it writes (buffered) inside `poll` and hands each
//! [`SyncTicket`] to the sync thread, so the leader's fsync overlaps replication and readies
//! that arrive meanwhile join the next sync (group commit).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tenure_kv::{AuthState, Proposal, RangeRequest, ReadView};
use tenure_raft::{LogView, Message, MessageBody, NodeId, Role, SnapshotStatus};
use tenure_replica::{
    Answer, ClientError, Completion, Consistency, MemberRequest, Output, Replica, ReplicaError,
    RequestId, SnapshotDone, SnapshotJob,
};
use tenure_storage::{FinishedSync, SnapshotReader, SyncTicket};
use tokio::sync::oneshot;

pub mod events;
pub mod metrics;
pub mod status;

pub use self::events::{EventKind, EventLog, MemberEvent, MemberReport, ReportError};
pub use self::metrics::Metrics;
pub use self::status::NodeStatus;

/// Client requests queued for the replica thread at most; more are refused with "too many
/// requests".
pub const CLIENT_QUEUE_MAX: usize = 4096;

/// Peer messages queued for the replica thread at most; more are dropped (and counted).
pub const PEER_QUEUE_MAX: usize = 65_536;

/// Client requests taken per loop turn at most, so that one turn's output is never held up
/// long by a flood of requests.
pub const CLIENT_INPUTS_PER_TURN_MAX: usize = 1024;

/// Peer messages taken per loop turn at most.
pub const PEER_INPUTS_PER_TURN_MAX: usize = 4096;

/// Where a client's answer goes.
pub type Reply = oneshot::Sender<Result<Answer, ClientError>>;

/// A client's request for the replica thread: the client lane.
pub enum ClientInput {
    /// A client's write.
    Propose {
        /// The command.
        proposal: Proposal,
        /// Where the answer goes.
        reply: Reply,
    },
    /// A linearizable read, answered once applied through a confirmed read index.
    Read {
        /// What to read.
        request: RangeRequest,
        /// Where the answer goes.
        reply: Reply,
    },
    /// A linearizable barrier ([`Replica::read_barrier`]): answered with an empty read once
    /// the replica has applied through a confirmed read index.
    Barrier {
        /// Where the answer goes.
        reply: Reply,
    },
    /// A read view of the store as it is now (published for later readers too).
    FreshView(oneshot::Sender<Arc<ReadView>>),
    /// A look at the replica's state on its own thread (for what is neither a proposal nor a
    /// range read, such as the member table).
    Inspect(Box<dyn FnOnce(&Replica) + Send>),
    /// A membership change ([`Replica::change_members`]).
    ChangeMembers {
        /// The change.
        request: MemberRequest,
        /// Where the answer goes.
        reply: Reply,
    },
    /// Start a leadership transfer ([`Replica::transfer_leadership`]); the answer says whether
    /// it started.
    TransferLeader {
        /// The member to hand leadership to.
        to: NodeId,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), tenure_raft::TransferError>>,
    },
}

/// What the runtime's own threads tell the replica thread: the control lane.
pub enum Control {
    /// One clock tick.
    Tick,
    /// The sync thread finished a sync.
    Synced(FinishedSync),
    /// The snapshot thread finished a snapshot job.
    SnapshotDone(SnapshotDone),
    /// A snapshot transfer to a follower ended.
    SnapshotReport {
        /// The follower.
        to: NodeId,
        /// How it ended.
        status: SnapshotStatus,
    },
    /// Finish the sync in flight, make everything written durable, and exit.
    Shutdown,
    /// Nothing: wakes an idle replica thread so that it sees a pause at once.
    Wake,
}

/// Batches of applied events kept for watchers that have not taken them yet; a watcher further
/// behind than this is told it lagged and catches up from the store's history instead.
pub const WATCH_FEED_MAX: usize = 1024;

/// What the replica thread publishes to watchers after a turn that applied entries.
#[derive(Debug)]
pub enum Published {
    /// The events of the entries applied in one turn, revision by revision, in order.
    Events {
        /// One element per revision that changed keys.
        revisions: Vec<tenure_kv::RevisionEvents>,
        /// The store's revision after them.
        revision: i64,
    },
    /// The store was replaced by a snapshot from the leader: the events between what was
    /// published before and the snapshot were never produced one by one, so a watcher must
    /// catch up from the new store's history (it holds every version since compaction).
    Reset,
}

/// Called once with how a snapshot transfer ended; it hands the status to the replica thread.
pub type SnapshotReport = Box<dyn FnOnce(SnapshotStatus) + Send>;

/// Where the replica's outgoing messages go (the peer transport, or a test's network).
pub trait Outbox: Send + 'static {
    /// Sends `messages` (best effort: Raft retransmits whatever is lost). Never holds a
    /// `Snapshot` message: those go through [`Outbox::send_snapshot`].
    fn send(&mut self, messages: Vec<Message>);

    /// Streams the snapshot `data` to `message.to` beside the message traffic, then calls
    /// `report` exactly once with how it ended (the leader's core waits for it before it sends
    /// that follower anything but heartbeats). `message` is the `Snapshot` message naming
    /// `data`'s snapshot, to be stepped into the follower once the data is durable there.
    fn send_snapshot(&mut self, message: Message, data: SnapshotReader, report: SnapshotReport);

    /// The members to keep connections to, each with its peer URLs as the member table has
    /// them (empty where the table has none yet: the outbox may know them from its
    /// configuration). Called when the replica starts and whenever a configuration entry or
    /// a snapshot was applied.
    fn set_peers(&mut self, peers: &BTreeMap<NodeId, Vec<String>>) {
        let _ = peers;
    }
}

/// Why a request could not be handed to the replica thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The input queue is full.
    #[error("input queue full")]
    Full,
    /// The replica thread has stopped.
    #[error("replica stopped")]
    Stopped,
}

/// A cheap, cloneable handle for talking to a running replica.
#[derive(Clone)]
pub struct RuntimeHandle {
    lanes: Lanes,
    status: Arc<Mutex<NodeStatus>>,
    /// Becomes `true` when the replica thread has exited.
    exited: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    /// Applied events, for watchers (see [`RuntimeHandle::subscribe`]).
    feed: tokio::sync::broadcast::Sender<Arc<Published>>,
    /// The last read view published (see the module docs).
    view: Arc<Mutex<Arc<ReadView>>>,
    /// The auth state as of the last turn (see [`RuntimeHandle::auth`]).
    auth: Arc<Mutex<Arc<AuthState>>>,
    /// What the replica thread saw happen (see [`RuntimeHandle::events`]).
    events: EventLog,
    /// Whether the replica thread and its ticker are held still (see
    /// [`RuntimeHandle::set_paused`]).
    pause: Arc<PauseState>,
}

/// Holds the replica thread and its ticker still while `paused` is set, as a stopped process
/// would be (`tenure dev`'s pause button): no ticks, no input taken, nothing sent.
#[derive(Debug, Default)]
struct PauseState {
    paused: Mutex<bool>,
    resumed: Condvar,
}

impl PauseState {
    fn set(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = paused;
        self.resumed.notify_all();
    }

    fn is_paused(&self) -> bool {
        *self.paused.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while paused.
    fn wait_until_running(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        while *paused {
            paused = self.resumed.wait(paused).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl RuntimeHandle {
    /// What this member's replica thread saw happen recently: role changes, votes, commits,
    /// snapshots, membership changes (see [`events`]).
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Holds the replica thread still (`true`) or lets it go on (`false`), as SIGSTOP and
    /// SIGCONT would a process: while paused it ticks no clock and takes no input, so it sends
    /// nothing; peer messages and client requests wait in their lanes (and are refused or
    /// dropped once those are full) and are taken when it resumes. Its listeners stay open.
    pub fn set_paused(&self, paused: bool) {
        self.pause.set(paused);
        // An idle thread waits on its lanes, not on the pause: wake it so it ends its turn
        // and stops before taking anything else. (A turn in progress finishes first.)
        let _ = self.lanes.control.send(Control::Wake);
    }

    /// Whether the replica thread is held still by [`RuntimeHandle::set_paused`].
    pub fn is_paused(&self) -> bool {
        self.pause.is_paused()
    }

    /// The auth state this member has applied, as of its last loop turn: replaced (a new
    /// `Arc`) only when an entry changed it. Published before the turn's events, so a watcher
    /// that looks at it when it gets events sees any change applied before them.
    pub fn auth(&self) -> Arc<AuthState> {
        Arc::clone(&self.auth.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Subscribes to the events this member applies from now on. Everything applied before
    /// the call is in the store already: a watcher that subscribes first and then takes a
    /// copy of the store (through [`RuntimeHandle::inspect`]) misses nothing, since the
    /// replica thread publishes a turn's events before it runs any later inspection.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Published>> {
        self.feed.subscribe()
    }

    /// Queues a write; the answer arrives on the returned receiver (a dropped sender means the
    /// replica stopped).
    pub fn propose(
        &self,
        proposal: Proposal,
    ) -> Result<oneshot::Receiver<Result<Answer, ClientError>>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.submit(ClientInput::Propose { proposal, reply })?;
        Ok(rx)
    }

    /// Starts a read; awaiting the returned future answers it (an `Err` means the replica
    /// stopped). A linearizable read is answered by the replica thread once its ReadIndex is
    /// confirmed and applied; a serializable one runs on the awaiting task against a view of
    /// this member's applied state that holds everything applied when the call was made.
    pub fn read(
        &self,
        request: RangeRequest,
        consistency: Consistency,
    ) -> Result<
        impl std::future::Future<
            Output = Result<Result<Answer, ClientError>, oneshot::error::RecvError>,
        > + Send
        + 'static,
        SubmitError,
    > {
        enum Wait {
            Answer(oneshot::Receiver<Result<Answer, ClientError>>),
            Fresh(oneshot::Receiver<Arc<ReadView>>, RangeRequest),
            Ready(Arc<ReadView>, RangeRequest),
        }
        let wait = match consistency {
            Consistency::Linearizable => {
                let (reply, rx) = oneshot::channel();
                self.submit(ClientInput::Read { request, reply })?;
                Wait::Answer(rx)
            }
            Consistency::Serializable => {
                let view = self.read_view();
                if view.applied_index() >= self.status().store_applied {
                    Wait::Ready(view, request)
                } else {
                    let (reply, rx) = oneshot::channel();
                    self.submit(ClientInput::FreshView(reply))?;
                    Wait::Fresh(rx, request)
                }
            }
        };
        Ok(async move {
            let (view, request) = match wait {
                Wait::Answer(rx) => return rx.await,
                Wait::Ready(view, request) => (view, request),
                Wait::Fresh(rx, request) => (rx.await?, request),
            };
            Ok(view.range(&request).map(Answer::Read).map_err(ClientError::Kv))
        })
    }

    /// Queues a membership change; the answer arrives once the change is in force (see
    /// [`Replica::change_members`]).
    pub fn change_members(
        &self,
        request: MemberRequest,
    ) -> Result<oneshot::Receiver<Result<Answer, ClientError>>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.submit(ClientInput::ChangeMembers { request, reply })?;
        Ok(rx)
    }

    /// Asks the replica to start handing leadership to `to`.
    pub fn transfer_leader(
        &self,
        to: NodeId,
    ) -> Result<oneshot::Receiver<Result<(), tenure_raft::TransferError>>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.submit(ClientInput::TransferLeader { to, reply })?;
        Ok(rx)
    }

    /// Queues a linearizable barrier: the answer arrives once this member has applied
    /// everything committed before the call, so whatever a later [`RuntimeHandle::inspect`]
    /// sees is as fresh as a linearizable read (for state that is not a key range, such as
    /// leases).
    pub fn barrier(&self) -> Result<oneshot::Receiver<Result<Answer, ClientError>>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.submit(ClientInput::Barrier { reply })?;
        Ok(rx)
    }

    /// The last read view published (see the module docs); it may be behind the store.
    pub fn read_view(&self) -> Arc<ReadView> {
        Arc::clone(&self.view.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Runs `f` on the replica thread against this member's applied state; its result arrives
    /// on the returned receiver.
    pub fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Replica) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, SubmitError> {
        let (tx, rx) = oneshot::channel();
        self.submit(ClientInput::Inspect(Box::new(move |replica| drop(tx.send(f(replica))))))?;
        Ok(rx)
    }

    /// Hands a peer's message to the replica on the peer lane (never behind client
    /// requests); `Full` if that lane is full, in which case the message is dropped and counted.
    pub fn step(&self, message: Message) -> Result<(), SubmitError> {
        self.lanes.peers.try_send(message).map_err(|e| match e {
            TrySendError::Full(_) => {
                self.metrics.peer_messages_dropped(1);
                SubmitError::Full
            }
            TrySendError::Disconnected(_) => SubmitError::Stopped,
        })
    }

    /// Resolves once the replica thread has exited (after a shutdown, or a storage or state
    /// machine failure that stops the node).
    pub async fn exited(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(|e| *e).await;
    }

    /// This member's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The status published after the last loop turn.
    pub fn status(&self) -> NodeStatus {
        *self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, input: ClientInput) -> Result<(), SubmitError> {
        self.lanes.clients.try_send(input).map_err(|e| match e {
            TrySendError::Full(_) => SubmitError::Full,
            TrySendError::Disconnected(_) => SubmitError::Stopped,
        })
    }
}

/// The sending ends of the three lanes into the replica thread.
#[derive(Clone)]
struct Lanes {
    control: Sender<Control>,
    peers: Sender<Message>,
    clients: Sender<ClientInput>,
}

/// The receiving ends, owned by the replica thread.
struct LaneReceivers {
    control: Receiver<Control>,
    peers: Receiver<Message>,
    clients: Receiver<ClientInput>,
}

/// A running replica: its threads and a handle to them.
pub struct Runtime {
    handle: RuntimeHandle,
    thread: Option<JoinHandle<Result<(), ReplicaError>>>,
}

impl Runtime {
    /// Starts the replica thread, its sync thread and its ticker. `name` labels log lines;
    /// `tick_interval` is the Raft tick (etcd's heartbeat interval).
    pub fn start(
        name: String,
        replica: Replica,
        outbox: Box<dyn Outbox>,
        tick_interval: Duration,
    ) -> std::io::Result<Runtime> {
        Runtime::start_with_metrics(name, replica, outbox, tick_interval, Arc::default())
    }

    /// [`Runtime::start`], recording into `metrics` (shared with the member's transport).
    pub fn start_with_metrics(
        name: String,
        replica: Replica,
        outbox: Box<dyn Outbox>,
        tick_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Runtime> {
        let (control, control_rx) = crossbeam_channel::unbounded();
        let (peers, peers_rx) = crossbeam_channel::bounded(PEER_QUEUE_MAX);
        let (clients, clients_rx) = crossbeam_channel::bounded(CLIENT_QUEUE_MAX);
        let lanes = Lanes { control, peers, clients };
        let rx = LaneReceivers { control: control_rx, peers: peers_rx, clients: clients_rx };
        let (feed, _) = tokio::sync::broadcast::channel(WATCH_FEED_MAX);
        let replica_installed = replica.snapshot_stats().installed;
        let (exit_tx, exited) = tokio::sync::watch::channel(false);
        let status = Arc::new(Mutex::new(NodeStatus::default()));
        let view = Arc::new(Mutex::new(Arc::new(replica.kv().read_view())));
        let auth = Arc::new(Mutex::new(Arc::clone(replica.kv().auth())));
        let (sync_tx, sync_rx) = mpsc::channel::<SyncTicket>();

        let synced_tx = lanes.control.clone();
        let sync_metrics = Arc::clone(&metrics);
        std::thread::Builder::new().name(format!("{name}-sync")).spawn(move || {
            // One ticket at a time: the replica starts the next sync only after this one is
            // handed back. Ends when the replica thread drops its sender.
            for ticket in sync_rx {
                let began = Instant::now();
                let done = ticket.wait();
                sync_metrics.fsync(began.elapsed());
                if synced_tx.send(Control::Synced(done)).is_err() {
                    return;
                }
            }
        })?;

        let (snap_tx, snap_rx) = mpsc::channel::<SnapshotJob>();
        let snapped_tx = lanes.control.clone();
        std::thread::Builder::new().name(format!("{name}-snap")).spawn(move || {
            // One job at a time (the replica hands out the next only after this one is
            // finished). Ends when the replica thread drops its sender.
            for job in snap_rx {
                if snapped_tx.send(Control::SnapshotDone(job.run())).is_err() {
                    return;
                }
            }
        })?;

        let pause = Arc::new(PauseState::default());
        let events = EventLog::default();
        let tick_tx = lanes.control.clone();
        let tick_pause = Arc::clone(&pause);
        std::thread::Builder::new().name(format!("{name}-tick")).spawn(move || {
            // Ends when the replica thread is gone and the send fails.
            loop {
                std::thread::sleep(tick_interval);
                // A paused member's clock stands still: no ticks pile up to fire at once
                // when it resumes.
                if tick_pause.is_paused() {
                    continue;
                }
                if tick_tx.send(Control::Tick).is_err() {
                    return;
                }
            }
        })?;

        let mut worker = Worker {
            name: name.clone(),
            replica,
            outbox,
            sync_tx,
            snap_tx,
            lanes: lanes.clone(),
            installed_seen: replica_installed,
            feed_installed_seen: replica_installed,
            feed: feed.clone(),
            rx,
            status: Arc::clone(&status),
            view: Arc::clone(&view),
            auth: Arc::clone(&auth),
            replies: BTreeMap::new(),
            next_request: 1,
            start: Instant::now(),
            last: None,
            metrics: Arc::clone(&metrics),
            events: events.clone(),
            pause: Arc::clone(&pause),
            committed_seen: 0,
        };
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let result = worker.run();
            if let Err(e) = &result {
                tracing::error!("{}: replica stopped: {e}", worker.name);
            }
            worker.status.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
            let _ = exit_tx.send(true);
            result
        })?;
        Ok(Runtime {
            handle: RuntimeHandle {
                lanes,
                status,
                exited,
                metrics,
                feed,
                view,
                auth,
                events,
                pause,
            },
            thread: Some(thread),
        })
    }

    /// A handle for clients and the transport.
    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// Asks the replica thread to make what it wrote durable and exit, and waits for it.
    pub fn shutdown(mut self) -> Result<(), ReplicaError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ReplicaError> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        // A paused thread would never take the input.
        self.handle.pause.set(false);
        // The control lane goes before queued peer messages and clients: those still queued
        // get no answer (their senders drop: "server stopped").
        let _ = self.handle.lanes.control.send(Control::Shutdown);
        thread.join().unwrap_or_else(|_| panic!("replica thread panicked"))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The state the replica thread owns.
struct Worker {
    name: String,
    replica: Replica,
    outbox: Box<dyn Outbox>,
    sync_tx: mpsc::Sender<SyncTicket>,
    snap_tx: mpsc::Sender<SnapshotJob>,
    /// The replica's own lanes: snapshot transfer reports come back on its control lane, and
    /// holding every sender keeps the lanes connected for as long as the thread runs.
    lanes: Lanes,
    /// Snapshots installed from a leader, as last counted in the metrics.
    installed_seen: u64,
    /// Snapshots installed from a leader, as last told to watchers.
    feed_installed_seen: u64,
    /// Where applied events go, for watchers.
    feed: tokio::sync::broadcast::Sender<Arc<Published>>,
    rx: LaneReceivers,
    status: Arc<Mutex<NodeStatus>>,
    /// Where the read view is published (see the module docs).
    view: Arc<Mutex<Arc<ReadView>>>,
    /// Where the auth state is published (see [`RuntimeHandle::auth`]).
    auth: Arc<Mutex<Arc<AuthState>>>,
    /// Clients waiting, by the request id the runtime gave them, with when each write was
    /// taken (`None` for reads), for the proposal counters and latency.
    replies: BTreeMap<RequestId, (Reply, Option<Instant>)>,
    /// Invariant: greater than every id in `replies`.
    next_request: u64,
    start: Instant,
    /// Role, term and leader last logged.
    last: Option<(Role, u64, Option<NodeId>)>,
    metrics: Arc<Metrics>,
    /// Where what happened is recorded for people to watch.
    events: EventLog,
    pause: Arc<PauseState>,
    /// The commit index last recorded as an event.
    committed_seen: u64,
}

/// Whether the loop goes on after an input.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Worker {
    fn run(&mut self) -> Result<(), ReplicaError> {
        self.publish();
        loop {
            self.pause.wait_until_running();
            let mut out = Output::default();
            let mut flow = self.wait_and_take(&mut out)?;
            if flow == Flow::Continue {
                flow = self.take_queued(&mut out)?;
            }
            loop {
                let (worked, ticket) = self.replica.poll(&mut out)?;
                if let Some(t) = ticket {
                    self.begin_sync(t);
                }
                if !worked {
                    break;
                }
            }
            // The status first: a client that got its answer and then reads the status (a
            // response header, a watch's created revision) sees at least its own write.
            self.publish();
            self.dispatch(out);
            // After the messages left, so that this turn's appends and heartbeats never wait
            // for the job (an O(1) copy of the store, and a new file).
            if let Some(job) = self.replica.take_snapshot_job()? {
                tracing::debug!("{}: taking snapshot {}", self.name, job.meta().last_included);
                // The snapshot thread lives as long as this sender.
                let _ = self.snap_tx.send(job);
            }
            if flow == Flow::Stop {
                return self.drain_for_exit();
            }
        }
    }

    /// Blocks until an input arrives on any lane and handles it.
    fn wait_and_take(&mut self, out: &mut Output) -> Result<Flow, ReplicaError> {
        crossbeam_channel::select_biased! {
            recv(self.rx.control) -> c => match c {
                Ok(c) => self.control(c, out),
                Err(_) => Ok(Flow::Stop),
            },
            recv(self.rx.peers) -> m => {
                if let Ok(m) = m {
                    self.replica.step(m);
                }
                Ok(Flow::Continue)
            }
            recv(self.rx.clients) -> c => {
                if let Ok(c) = c {
                    self.client(c, out);
                }
                Ok(Flow::Continue)
            }
        }
    }

    /// Takes what else is queued, lane by lane in priority order: every control input, then
    /// peer messages and client requests up to their per-turn limits.
    fn take_queued(&mut self, out: &mut Output) -> Result<Flow, ReplicaError> {
        while let Ok(c) = self.rx.control.try_recv() {
            if self.control(c, out)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
        for m in self.rx.peers.try_iter().take(PEER_INPUTS_PER_TURN_MAX) {
            self.replica.step(m);
        }
        let clients: Vec<ClientInput> =
            self.rx.clients.try_iter().take(CLIENT_INPUTS_PER_TURN_MAX).collect();
        for c in clients {
            self.client(c, out);
        }
        Ok(Flow::Continue)
    }

    fn client(&mut self, input: ClientInput, out: &mut Output) {
        match input {
            ClientInput::Propose { proposal, reply } => {
                let id = self.register(reply, true);
                self.replica.propose(id, &proposal, out);
            }
            ClientInput::Read { request, reply } => {
                let id = self.register(reply, false);
                self.replica.read(id, request, Consistency::Linearizable, out);
            }
            ClientInput::Barrier { reply } => {
                let id = self.register(reply, false);
                self.replica.read_barrier(id, out);
            }
            ClientInput::FreshView(reply) => {
                let _ = reply.send(self.publish_view());
            }
            ClientInput::Inspect(f) => f(&self.replica),
            ClientInput::ChangeMembers { request, reply } => {
                let id = self.register(reply, true);
                self.replica.change_members(id, request, out);
            }
            ClientInput::TransferLeader { to, reply } => {
                let _ = reply.send(self.replica.transfer_leadership(to));
            }
        }
    }

    fn control(&mut self, input: Control, out: &mut Output) -> Result<Flow, ReplicaError> {
        match input {
            Control::Tick => {
                let now_ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.replica.tick(now_ms, out);
            }
            Control::Synced(done) => {
                if let Some(t) = self.replica.finish_sync(done, out)? {
                    self.begin_sync(t);
                }
            }
            Control::SnapshotDone(done) => {
                let taken = self.replica.snapshot_stats().taken;
                self.replica.finish_snapshot(done)?;
                if self.replica.snapshot_stats().taken == taken {
                    // Abandoned for lack of space (the replica logged it); tried again later.
                    return Ok(Flow::Continue);
                }
                self.metrics.snapshot_taken();
                let stats = self.replica.snapshot_stats();
                self.events.record(EventKind::SnapshotTaken { index: stats.index });
                tracing::info!(
                    "{}: snapshot at index {} written ({} bytes); log starts at {}",
                    self.name,
                    stats.index,
                    stats.last_bytes,
                    self.replica.node().log_view().first_index()
                );
            }
            Control::SnapshotReport { to, status } => self.replica.report_snapshot(to, status),
            Control::Shutdown => return Ok(Flow::Stop),
            Control::Wake => {}
        }
        Ok(Flow::Continue)
    }

    fn register(&mut self, reply: Reply, write: bool) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.replies.insert(id, (reply, write.then(Instant::now)));
        id
    }

    fn begin_sync(&mut self, ticket: SyncTicket) {
        // The sync thread lives as long as this sender; a failed send means it is gone, which
        // only happens on exit.
        let _ = self.sync_tx.send(ticket);
    }

    fn dispatch(&mut self, mut out: Output) {
        self.publish_events(std::mem::take(&mut out.events));
        if out.messages.iter().any(|m| matches!(m.body, MessageBody::Snapshot { .. })) {
            let (snapshots, rest) = std::mem::take(&mut out.messages)
                .into_iter()
                .partition(|m| matches!(m.body, MessageBody::Snapshot { .. }));
            out.messages = rest;
            for m in snapshots {
                self.send_snapshot(m);
            }
        }
        for m in &out.messages {
            if let MessageBody::VoteResponse { granted } = m.body {
                let (candidate, term) = (m.to.0, m.term.0);
                self.events.record(EventKind::Vote { candidate, term, granted });
            }
        }
        if !out.messages.is_empty() {
            self.outbox.send(out.messages);
        }
        // After the messages: the last ones to a member just removed (the core's final
        // heartbeat telling it the change committed) still leave on its connection.
        if self.replica.take_members_changed() {
            self.outbox.set_peers(&peers_of(&self.replica));
            let membership = self.replica.membership();
            self.events.record(EventKind::Members {
                voters: membership.voters.ids().into_iter().map(|n| n.0).collect(),
                learners: membership.learners.iter().map(|n| n.0).collect(),
            });
        }
        for Completion { id, result, .. } in out.completions {
            if let Some((reply, began)) = self.replies.remove(&id) {
                if let Some(began) = began {
                    match &result {
                        Ok(_) => self.metrics.proposal_committed(),
                        Err(_) => self.metrics.proposal_failed(),
                    }
                    self.metrics.proposal_answered(began.elapsed());
                }
                // The client may have given up; that is fine.
                let _ = reply.send(result);
            }
        }
        for ss in out.changes {
            self.log_change(ss.role, ss.term.0, ss.leader);
        }
    }

    /// Hands this turn's applied events to the watchers (a send never blocks: a watcher that
    /// falls `WATCH_FEED_MAX` batches behind is told it lagged). A snapshot installed in this
    /// turn is announced first, as a `Reset`.
    fn publish_events(&mut self, revisions: Vec<tenure_kv::RevisionEvents>) {
        let installed = self.replica.snapshot_stats().installed;
        if installed != self.feed_installed_seen {
            self.feed_installed_seen = installed;
            let _ = self.feed.send(Arc::new(Published::Reset));
        }
        if !revisions.is_empty() {
            let revision = self.replica.kv().revision();
            // No receiver (no watcher) is not an error.
            let _ = self.feed.send(Arc::new(Published::Events { revisions, revision }));
        }
    }

    /// Opens the newest snapshot for a `Snapshot` message and hands both to the outbox; the
    /// message is rewritten to name the snapshot actually sent (it may be newer than the one
    /// the core asked for). If there is none to send, the transfer fails at once and the core
    /// tries again later.
    fn send_snapshot(&mut self, mut m: Message) {
        let to = m.to;
        let reader = match self.replica.snapshot_to_send() {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::warn!("{}: no snapshot file to send to {to}", self.name);
                self.replica.report_snapshot(to, SnapshotStatus::Failed);
                return;
            }
            Err(e) => {
                tracing::warn!("{}: cannot open the snapshot to send to {to}: {e}", self.name);
                self.replica.report_snapshot(to, SnapshotStatus::Failed);
                return;
            }
        };
        m.body = MessageBody::Snapshot { meta: reader.meta().clone() };
        let control = self.lanes.control.clone();
        let report: SnapshotReport = Box::new(move |status| {
            // A lost report would leave the follower waiting for this transfer forever; the
            // control lane is unbounded, so the report always arrives and never blocks whoever
            // reports.
            let _ = control.send(Control::SnapshotReport { to, status });
        });
        self.outbox.send_snapshot(m, reader, report);
    }

    fn log_change(&mut self, role: Role, term: u64, leader: Option<NodeId>) {
        if self.last != Some((role, term, leader)) {
            self.events.record(EventKind::Role { role, term, leader: leader.map(|n| n.0) });
        }
        let was_leader = self.last.is_some_and(|(r, _, _)| r == Role::Leader);
        let is_leader = role == Role::Leader;
        if is_leader && self.last != Some((role, term, leader)) {
            tracing::info!("{} became leader at term {term}", self.name);
        } else if was_leader && !is_leader {
            tracing::info!("{} stepped down at term {term}", self.name);
        }
        self.last = Some((role, term, leader));
    }

    fn publish(&mut self) {
        let stats = self.replica.snapshot_stats();
        let installed = stats.installed;
        self.metrics.snapshots_installed(installed - self.installed_seen);
        if installed != self.installed_seen {
            self.events.record(EventKind::SnapshotInstalled { index: stats.index });
        }
        self.installed_seen = installed;
        let st = self.replica.node().status();
        if st.committed.0 > self.committed_seen {
            let (from, to) = (self.committed_seen, st.committed.0);
            self.events.record(EventKind::Commit { from, to });
            self.committed_seen = to;
        }
        let kv = self.replica.kv();
        let status = NodeStatus {
            role: Some(st.soft.role),
            term: st.soft.term.0,
            vote: st.vote.map(|n| n.0),
            leader: st.soft.leader.map(|n| n.0),
            is_leader: st.soft.role == Role::Leader,
            last_index: st.last.index.0,
            committed: st.committed.0,
            applied: st.applied.0,
            snapshot_index: stats.index,
            first_index: st.first_index.0,
            revision: kv.revision(),
            store_applied: kv.applied_index(),
            key_count: kv.key_count(),
            db_bytes: kv.size_bytes(),
            leases_expired: self.replica.leases_expired(),
            stopped: false,
            removed: self.replica.is_removed(),
            disk_full: self.replica.disk_full(),
            no_space_total: self.replica.no_space_total(),
        };
        let mut published = self.status.lock().unwrap_or_else(|e| e.into_inner());
        self.metrics.observe_status(&published, &status);
        *published = status;
        drop(published);
        let mut auth = self.auth.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&auth, kv.auth()) {
            *auth = Arc::clone(kv.auth());
        }
    }

    /// Publishes a view of the store as it is now, unless the published one is it already,
    /// and returns it.
    fn publish_view(&mut self) -> Arc<ReadView> {
        let kv = self.replica.kv();
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if view.applied_index() != kv.applied_index() || view.revision() != kv.revision() {
            *view = Arc::new(kv.read_view());
        }
        Arc::clone(&view)
    }

    /// On the way out: waits for the sync in flight, then writes and syncs whatever is left
    /// inline. Clients still waiting get no answer (their senders drop: "server stopped").
    fn drain_for_exit(&mut self) -> Result<(), ReplicaError> {
        let mut out = Output::default();
        while self.replica.sync_in_flight() {
            match self.rx.control.recv() {
                Ok(Control::Synced(done)) => {
                    if let Some(t) = self.replica.finish_sync(done, &mut out)? {
                        let mut next = Some(t);
                        while let Some(t) = next {
                            next = self.replica.finish_sync(t.wait(), &mut out)?;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.replica.run_until_idle(&mut out)?;
        // A commit index written lazily is made durable too.
        self.replica.sync_for_shutdown()?;
        self.dispatch(out);
        self.replies.clear();
        // Client requests still queued get no answer: dropping them drops their reply senders,
        // which their callers hear as "server stopped". (A channel keeps what it holds until
        // every sender is gone, and clients hold senders for as long as they hold a handle.)
        while self.rx.clients.try_recv().is_ok() {}
        while self.rx.peers.try_recv().is_ok() {}
        tracing::info!("{} stopped", self.name);
        Ok(())
    }
}

/// Every other member of the configuration in force, every node a leader still tracks (a
/// member being removed is told the change committed before the leader lets it go), and the
/// leader (a leader removing itself still needs its followers' acknowledgements of the entry
/// that leaves the joint configuration, which no longer names it), with their peer URLs from
/// the member table.
fn peers_of(replica: &Replica) -> BTreeMap<NodeId, Vec<String>> {
    let me = replica.id();
    let kv = replica.kv();
    let status = replica.node().status();
    let mut ids = replica.membership().members();
    ids.extend(status.matched.keys().copied());
    ids.extend(status.soft.leader);
    ids.into_iter()
        .filter(|id| *id != me)
        .map(|id| (id, kv.member_peer_urls(id.0).map(<[String]>::to_vec).unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use tenure_kv::{Command, PutRequest, RangeRequest, Response};
    use tenure_raft::{Membership, Message, NodeId};
    use tenure_replica::{Answer, Consistency, Replica, ReplicaConfig};
    use tenure_storage::{CrashMode, SimDisk, SnapshotReader};

    use super::{Outbox, Runtime};

    /// A lone member sends nothing; anything sent is a bug worth seeing.
    struct NoPeers;

    impl Outbox for NoPeers {
        fn send(&mut self, messages: Vec<Message>) {
            panic!("a single member sent {} message(s)", messages.len());
        }

        fn send_snapshot(&mut self, m: Message, _: SnapshotReader, _: super::SnapshotReport) {
            panic!("a single member sent a snapshot to {}", m.to);
        }
    }

    fn open(disk: &SimDisk) -> Replica {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let cfg =
            ReplicaConfig::new(NodeId(1), RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let members = Membership::voters([NodeId(1)]);
        Replica::open(cfg, Arc::new(disk.clone()), Path::new("/data"), members).expect("open")
    }

    fn start(disk: &SimDisk) -> Runtime {
        let tick = std::time::Duration::from_millis(2);
        Runtime::start("n1".into(), open(disk), Box::new(NoPeers), tick).expect("start")
    }

    /// Waits (bounded) for the lone member to elect itself.
    async fn wait_until_leader(h: &super::RuntimeHandle) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !h.status().is_leader {
            assert!(std::time::Instant::now() < deadline, "no election: {:?}", h.status());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn put(key: &str, value: &str) -> tenure_kv::Proposal {
        tenure_kv::Proposal::new(Command::Put(PutRequest::new(key.to_string(), value.to_string())))
    }

    #[tokio::test]
    async fn answers_reach_their_own_callers_and_acknowledged_writes_survive_a_crash() {
        let disk = SimDisk::new(7);
        let rt = start(&disk);
        let h = rt.handle();
        // Until it elects itself the member refuses; a client would retry the same way.
        wait_until_leader(&h).await;
        // Several requests in flight at once: each answer goes to its own receiver.
        let waits: Vec<_> =
            (0..20).map(|i| h.propose(put(&format!("k{i:02}"), &i.to_string())).unwrap()).collect();
        let mut revisions = Vec::new();
        for w in waits {
            match w.await.expect("answered") {
                Ok(Answer::Write(Response::Put(r))) => revisions.push(r.revision),
                other => panic!("unexpected answer {other:?}"),
            }
        }
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(revisions.len(), 20, "each put got its own revision");
        let read = h.read(RangeRequest::single("k07"), Consistency::Linearizable).unwrap();
        match read.await.expect("answered") {
            Ok(Answer::Read(r)) => assert_eq!(r.kvs[0].value, "7"),
            other => panic!("unexpected answer {other:?}"),
        }
        // An acknowledged write was synced: it survives losing every unsynced byte.
        let last = h.propose(put("last", "x")).unwrap();
        assert!(matches!(last.await.expect("answered"), Ok(Answer::Write(_))));
        rt.shutdown().expect("clean shutdown");
        assert!(h.status().stopped);
        assert!(h.propose(put("late", "x")).is_err(), "a stopped replica takes nothing");
        disk.crash(CrashMode::LoseUnsynced);
        let mut replica = open(&disk);
        replica.run_until_idle(&mut tenure_replica::Output::default()).expect("recover");
        // The committed log is re-applied once the lone member commits again: elect it.
        let mut out = tenure_replica::Output::default();
        for t in 0..200 {
            if replica.kv().range(&RangeRequest::single("last")).unwrap().kvs.len() == 1 {
                return;
            }
            replica.tick(t, &mut out);
            replica.run_until_idle(&mut out).expect("run");
        }
        panic!("acknowledged write lost after a crash");
    }

    #[tokio::test]
    async fn a_serializable_read_sees_every_write_acknowledged_before_it_and_views_are_lazy() {
        let disk = SimDisk::new(11);
        let rt = start(&disk);
        let h = rt.handle();
        wait_until_leader(&h).await;
        let serializable = |key: &str| {
            h.read(RangeRequest::single(key.to_string()), Consistency::Serializable).expect("read")
        };
        for i in 0..20 {
            let value = format!("v{i}");
            let w = h.propose(put("k", &value)).expect("queued").await.expect("answered");
            assert!(matches!(w, Ok(Answer::Write(_))), "{w:?}");
            // No read since the write: the published view is behind the store.
            assert!(h.read_view().applied_index() < h.status().store_applied);
            match serializable("k").await.expect("answered") {
                Ok(Answer::Read(r)) => assert_eq!(r.kvs[0].value, value.as_bytes()),
                other => panic!("{other:?}"),
            }
            // The read published a view that holds the write; the next read uses it as is.
            assert_eq!(h.read_view().applied_index(), h.status().store_applied);
        }
        rt.shutdown().expect("clean shutdown");
    }

    #[tokio::test]
    async fn a_failed_fsync_stops_the_replica_and_its_waiting_clients_hear_it() {
        let disk = SimDisk::new(8);
        let rt = start(&disk);
        let h = rt.handle();
        wait_until_leader(&h).await;
        disk.fail_next_syncs(1_000);
        let w = h.propose(put("doomed", "x")).unwrap();
        // A failed fsync is final: the thread exits and the caller's answer never comes.
        tokio::time::timeout(std::time::Duration::from_secs(20), h.exited())
            .await
            .expect("the replica stops");
        assert!(w.await.is_err(), "the waiting client sees the replica gone");
        assert!(h.status().stopped);
        assert!(rt.shutdown().is_err(), "shutdown reports the storage failure");
    }

    /// Holds the replica thread inside an `Inspect` until the returned sender is dropped, so
    /// that a test can fill its lanes.
    async fn hold_replica_thread(h: &super::RuntimeHandle) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = tokio::sync::oneshot::channel();
        let _running = h
            .inspect(move |_| {
                let _ = entered_tx.send(());
                let _ = held.recv();
            })
            .expect("queued");
        entered.await.expect("the replica thread runs the inspection");
        release
    }

    fn stray_message() -> Message {
        Message {
            from: NodeId(9),
            to: NodeId(1),
            term: tenure_raft::Term(1),
            body: tenure_raft::MessageBody::Heartbeat {
                commit: tenure_raft::LogIndex(0),
                read_round: 0,
            },
        }
    }

    #[tokio::test]
    async fn a_full_client_lane_refuses_clients_but_peer_messages_still_get_in() {
        let disk = SimDisk::new(9);
        let rt = start(&disk);
        let h = rt.handle();
        wait_until_leader(&h).await;
        let release = hold_replica_thread(&h).await;
        let queued: Vec<_> =
            (0..super::CLIENT_QUEUE_MAX).map(|i| h.propose(put(&format!("q{i}"), "v"))).collect();
        assert!(queued.iter().all(Result::is_ok), "the client lane holds CLIENT_QUEUE_MAX");
        assert_eq!(
            h.propose(put("one-too-many", "v")).err(),
            Some(super::SubmitError::Full),
            "a client finding its lane full is refused at once"
        );
        assert!(h.read(RangeRequest::single("k"), Consistency::Linearizable).is_err());
        // A serializable read needs no lane and no replica thread: it is answered even now,
        // with the replica thread held and the client lane full.
        let read = h.read(RangeRequest::single("k"), Consistency::Serializable).expect("no lane");
        assert!(matches!(read.await.expect("answered"), Ok(Answer::Read(_))));
        assert_eq!(h.step(stray_message()), Ok(()), "peer messages have a lane of their own");
        drop(release);
        for w in queued {
            let answer = w.unwrap().await.expect("answered");
            assert!(matches!(answer, Ok(Answer::Write(_))), "{answer:?}");
        }
        rt.shutdown().expect("clean shutdown");
    }

    #[tokio::test]
    async fn a_full_peer_lane_drops_and_counts_but_never_blocks() {
        let disk = SimDisk::new(10);
        let rt = start(&disk);
        let h = rt.handle();
        wait_until_leader(&h).await;
        let release = hold_replica_thread(&h).await;
        for _ in 0..super::PEER_QUEUE_MAX {
            assert_eq!(h.step(stray_message()), Ok(()));
        }
        assert_eq!(h.step(stray_message()), Err(super::SubmitError::Full));
        assert!(h.metrics().render().contains("tenure_peer_messages_dropped_total 1"));
        // Clients are unaffected by a full peer lane.
        let w = h.propose(put("still", "served")).expect("the client lane has room");
        drop(release);
        assert!(matches!(w.await.expect("answered"), Ok(Answer::Write(_))));
        rt.shutdown().expect("clean shutdown");
    }

    #[tokio::test]
    async fn a_paused_replica_takes_nothing_until_it_resumes() {
        let disk = SimDisk::new(12);
        let rt = start(&disk);
        let h = rt.handle();
        wait_until_leader(&h).await;
        h.set_paused(true);
        assert!(h.is_paused());
        // The wake-up ends the thread's turn; from then on it stands still.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut w = Box::pin(h.propose(put("while-paused", "x")).expect("queued"));
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut w).await;
        assert!(waited.is_err(), "a paused replica answered {waited:?}");
        let served = h.events().last_seq();
        h.set_paused(false);
        assert!(!h.is_paused());
        assert!(matches!(w.await.expect("answered"), Ok(Answer::Write(_))));
        assert!(h.events().last_seq() > served, "the write's commit is an event");
        rt.shutdown().expect("clean shutdown");
    }

    #[tokio::test]
    async fn control_inputs_go_before_queued_client_requests() {
        let disk = SimDisk::new(11);
        let rt = start(&disk);
        let h = rt.handle();
        wait_until_leader(&h).await;
        let release = hold_replica_thread(&h).await;
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waits: Vec<_> = (0..100)
            .map(|_| {
                let ran = Arc::clone(&ran);
                h.inspect(move |_| {
                    ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
                .expect("queued")
            })
            .collect();
        // Shutdown travels on the control lane: queued behind the held inspection but ahead
        // of the 100 client requests queued before it.
        let stopping = std::thread::spawn(move || rt.shutdown());
        // `shutdown` queues its input at once (the control lane is never full); give the
        // thread a moment to get there, then let the replica thread go.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(release);
        stopping.join().expect("joined").expect("clean shutdown");
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 0, "no client request ran");
        for w in waits {
            assert!(w.await.is_err(), "queued clients hear that the replica stopped");
        }
    }
}
