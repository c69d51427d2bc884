//! The peer transport: Raft messages over TCP in [`crate::peer::wire`] frames.
//!
//! - **Outbound**: one long-lived connection per peer, owned by a tokio task fed by a bounded
//!   queue. The task batches everything queued into one write ([`FrameCodec::encode_batch`])
//!   and reconnects when the connection fails. A full queue drops the message: Raft
//!   retransmits, and a slow peer must not hold up the replica thread.
//! - **Inbound**: an accept loop on the peer listener; each connection is read as a stream of
//!   frames and every message is handed to the runtime. A frame from another cluster, or any
//!   malformed frame, closes that connection with a logged error.
//!
//! - **Members come and go**: the runtime calls [`Outbox::set_peers`] with the configuration's
//!   members and their peer URLs from the replicated member table whenever a configuration
//!   entry or snapshot is applied; a new member gets a connection task, a removed one loses
//!   its own (dropping its queue ends the task), and a member whose address changed
//!   (`MemberUpdate`) gets a new one. A member the table has no URLs for yet keeps the address
//!   from `--initial-cluster`.
//!
//! - **Snapshots** travel on connections of their own ([`crate::peer::snapshot_stream`]), one per
//!   transfer, so a large snapshot never delays heartbeats or appends. The accept loop tells
//!   the two kinds of connection apart by their first four bytes.
//!
//! # Noticing a dead peer
//!
//! Messages flow one way, from the member that dialled to the one that accepted; a write
//! "succeeds" as soon as the kernel has the bytes, so writes alone notice a dead peer late
//! or never (a paused process still acknowledges at the TCP level, a partitioned one leaves
//! the connection in retransmission backoff for seconds). So, with [`PeerTiming`] taken from
//! the member's heartbeat interval and election timeout:
//!
//! - the dialler opens every connection with a message frame (empty if nothing is queued),
//!   so the acceptor knows at once it is a message connection;
//! - the acceptor writes a keepalive frame back every heartbeat interval, and the dialler
//!   reads them: a connection it has heard nothing on for one election timeout is dead, and
//!   one the peer closed (a restart closes every socket of the old process) is dead the
//!   moment the end of the stream arrives, before the next message is written into it;
//! - every write, of messages or keepalives, has a deadline of one election timeout;
//! - the kernel backs this up: `TCP_USER_TIMEOUT` (data unacknowledged for one election
//!   timeout fails the socket), TCP keepalive, and `TCP_NODELAY` so small frames leave at once;
//! - reconnecting is immediate after a connection that was up, and otherwise backs off from
//!   50 ms to at most two heartbeat intervals, with a connect deadline of its own: a healed
//!   partition is in use again within a heartbeat or two.
//!
//! # What can still be lost
//!
//! The transport never resends. A message is counted as sent (`tenure_peer_messages_sent`)
//! only once its write returned; the batch whose write failed or timed out is counted as
//! dropped, as are the messages queued before a connection attempt that failed (stale by
//! the time the peer is back). What the kernel accepted on a connection before it was found
//! dead may never arrive (up to a socket buffer), and the sender cannot tell which part did:
//! there are no per-frame acknowledgements. Raft tolerates any message lost: the leader
//! resends appends from what each follower's responses show it holds (Raft §5.3), heartbeats
//! repeat every interval, a candidate asks again at its next election timeout (§5.2), and a
//! forwarded proposal or read times out and the client retries. Loss costs time, never
//! safety; the liveness checks above keep that time within about one election timeout.

use crate::peer::join::{self, QUERY_MAGIC, Responder};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tenure_raft::{Message, MessageBody, NodeId, SnapshotMeta, SnapshotStatus};
use tenure_storage::{SnapshotReader, SnapshotWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::peer::stream::{PeerAcceptor, PeerDialer, PeerStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::ids::format_id;
use crate::peer::snapshot_stream::{
    self, Partials, ReceiveOutcome, STREAM_MAGIC, SnapshotSink, StreamCodec, TransferBackoff,
};
use crate::peer::wire::{FRAME_HEADER_BYTES, FrameCodec, WireError};
use crate::runtime::Metrics;
use crate::runtime::{Outbox, RuntimeHandle, SnapshotReport, SubmitError};

/// Messages queued for one peer at most; more are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;

/// Messages written in one batch at most.
const BATCH_MESSAGES_MAX: usize = 1024;

/// The group id of the one Raft group a member runs.
pub const GROUP_ID: u64 = 0;

/// The first wait before reconnecting to a peer that could not be reached.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between connection attempts, whatever the heartbeat interval.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The shortest connect deadline, whatever the heartbeat interval.
const CONNECT_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// TCP keepalive probes unanswered before the kernel fails the socket.
const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Failed connection attempts to a peer before it is worth a warning.
const CONNECT_FAILURES_QUIET: u32 = 5;

/// A switch on one member's peer traffic and what its connections tell about its peers; clones
/// share it. Used by `tenure dev`'s dashboard (isolate a member, show who it reaches).
///
/// Isolated, the member neither sends nor takes a Raft message, answers no keepalive, refuses
/// snapshot connections and ignores the keepalives it is sent: both sides' connections go
/// silent and are found dead within an election timeout, as in a real partition, and come
/// back within a heartbeat or two of the isolation ending. Reachable means a connection to
/// the peer is up and a keepalive came back on it.
#[derive(Clone, Debug, Default)]
pub struct PeerGate {
    inner: Arc<GateInner>,
}

#[derive(Debug, Default)]
struct GateInner {
    isolated: std::sync::atomic::AtomicBool,
    /// Each peer this member dials, and whether it is reachable now.
    reachable: std::sync::Mutex<BTreeMap<u64, bool>>,
}

impl PeerGate {
    /// Cuts (`true`) or restores (`false`) this member's peer traffic.
    pub fn set_isolated(&self, isolated: bool) {
        self.inner.isolated.store(isolated, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether this member's peer traffic is cut.
    pub fn is_isolated(&self) -> bool {
        self.inner.isolated.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Each peer this member dials, by id, with whether it is reachable now.
    pub fn reachable(&self) -> BTreeMap<u64, bool> {
        self.inner.reachable.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn mark(&self, peer: u64, reachable: bool) {
        self.inner.reachable.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, reachable);
    }

    fn forget(&self, peer: u64) {
        self.inner.reachable.lock().unwrap_or_else(|e| e.into_inner()).remove(&peer);
    }
}

/// How quickly peer connections give up on a silent peer, from the member's Raft timing
/// (etcd's `--heartbeat-interval` and `--election-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerTiming {
    /// How often the accepting side writes a keepalive.
    pub heartbeat_interval: Duration,
    /// Silence on a connection for this long means the peer is dead, paused or unreachable;
    /// also the deadline of every write and the kernel's `TCP_USER_TIMEOUT`.
    pub election_timeout: Duration,
}

impl Default for PeerTiming {
    /// etcd's defaults: 100 ms and 1000 ms.
    fn default() -> PeerTiming {
        PeerTiming {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
        }
    }
}

impl PeerTiming {
    /// The longest wait between connection attempts: two heartbeat intervals, so a healed
    /// partition is used again within a heartbeat or two (at least 50 ms, at most 1 s).
    pub fn backoff_max(&self) -> Duration {
        (self.heartbeat_interval * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
    }

    /// How long a connection attempt may take: two heartbeat intervals (etcd's tuning
    /// guide sets the heartbeat near the round trip), at least 100 ms, at most an election
    /// timeout. A SYN lost to a partition is retried by a fresh attempt, not by the
    /// kernel's one-second SYN backoff.
    pub fn connect_timeout(&self) -> Duration {
        (self.heartbeat_interval * 2).max(CONNECT_TIMEOUT_MIN).min(self.election_timeout)
    }
}

/// The sending side: one queue per peer. Implements [`Outbox`] for the runtime.
pub struct PeerSender {
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
    /// Each peer's URL (or `host:port`), for snapshot connections.
    addrs: BTreeMap<NodeId, String>,
    /// The addresses from the member's configuration, for members the table has none for.
    configured: BTreeMap<NodeId, String>,
    codec: FrameCodec,
    timing: PeerTiming,
    stream_codec: StreamCodec,
    /// Where snapshot transfers run: `send_snapshot` is called from the replica thread.
    tokio: tokio::runtime::Handle,
    /// Waits before transfers to followers whose last transfers failed.
    backoff: TransferBackoff,
    metrics: Arc<Metrics>,
    /// Opens connections: TLS to `https://` peer URLs.
    dialer: PeerDialer,
    /// Isolation and reachability (see [`PeerGate`]).
    gate: PeerGate,
}

impl PeerSender {
    /// Starts one connection task per peer (`peers`: member id and `host:port`) on the
    /// current tokio runtime, with liveness checks from `timing`, counting messages in
    /// `metrics`. Plain TCP only: see [`PeerSender::start_with_dialer`].
    pub fn start(
        codec: FrameCodec,
        peers: &[(u64, String)],
        timing: PeerTiming,
        metrics: Arc<Metrics>,
    ) -> PeerSender {
        PeerSender::start_with_dialer(codec, peers, timing, metrics, PeerDialer::plain())
    }

    /// [`PeerSender::start`] with peers given by URL (`https://` ones dialled with TLS by
    /// `dialer`) or `host:port`.
    pub fn start_with_dialer(
        codec: FrameCodec,
        peers: &[(u64, String)],
        timing: PeerTiming,
        metrics: Arc<Metrics>,
        dialer: PeerDialer,
    ) -> PeerSender {
        PeerSender::start_with_gate(codec, peers, timing, metrics, dialer, PeerGate::default())
    }

    /// [`PeerSender::start_with_dialer`] behind `gate` (shared with the member's
    /// [`accept_loop`]).
    pub fn start_with_gate(
        codec: FrameCodec,
        peers: &[(u64, String)],
        timing: PeerTiming,
        metrics: Arc<Metrics>,
        dialer: PeerDialer,
        gate: PeerGate,
    ) -> PeerSender {
        let stream_codec = StreamCodec { cluster_id: codec.cluster_id, member_id: codec.member_id };
        let tokio = tokio::runtime::Handle::current();
        let backoff = TransferBackoff::default();
        let configured: BTreeMap<NodeId, String> =
            peers.iter().map(|(id, addr)| (NodeId(*id), addr.clone())).collect();
        let mut sender = PeerSender {
            queues: BTreeMap::new(),
            addrs: BTreeMap::new(),
            configured: configured.clone(),
            codec,
            timing,
            stream_codec,
            tokio,
            backoff,
            metrics,
            dialer,
            gate,
        };
        for (id, addr) in configured {
            sender.connect(id, addr);
        }
        sender
    }

    /// Starts (or restarts, for a new address) the connection task for `id`.
    fn connect(&mut self, id: NodeId, addr: String) {
        let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
        let link = Link {
            codec: self.codec,
            peer: id.0,
            addr: addr.clone(),
            timing: self.timing,
            dialer: self.dialer.clone(),
            gate: self.gate.clone(),
        };
        self.tokio.spawn(peer_loop(link, rx, Arc::clone(&self.metrics)));
        self.queues.insert(id, tx);
        self.addrs.insert(id, addr);
    }

    /// The peers connected to now, with their addresses.
    pub fn peers(&self) -> &BTreeMap<NodeId, String> {
        &self.addrs
    }
}

/// The first peer URL that parses, normalised (its scheme says whether to dial with TLS).
fn peer_address(urls: &[String]) -> Option<String> {
    urls.iter().find_map(|u| crate::cli::Url::parse(u).ok()).map(|u| u.to_string())
}

impl Outbox for PeerSender {
    fn send(&mut self, messages: Vec<Message>) {
        // Counted as sent by the connection task once written; only drops are counted here.
        if self.gate.is_isolated() {
            self.metrics.peer_messages_dropped(messages.len() as u64);
            return;
        }
        let mut dropped = 0;
        for m in messages {
            if let MessageBody::Heartbeat { read_round, .. } = m.body {
                self.metrics.heartbeat_sent(m.to.0, read_round);
            }
            if let Some(q) = self.queues.get(&m.to) {
                // Full or closed: drop it; Raft retransmits.
                if q.try_send(m).is_err() {
                    dropped += 1;
                }
            }
        }
        self.metrics.peer_messages_dropped(dropped);
    }

    fn send_snapshot(&mut self, message: Message, data: SnapshotReader, report: SnapshotReport) {
        if self.gate.is_isolated() {
            report(SnapshotStatus::Failed);
            return;
        }
        let Some(addr) = self.addrs.get(&message.to).cloned() else {
            report(SnapshotStatus::Failed);
            return;
        };
        let (codec, metrics) = (self.stream_codec, Arc::clone(&self.metrics));
        let backoff = self.backoff.clone();
        let dialer = self.dialer.clone();
        self.tokio.spawn(async move {
            let peer = message.to;
            let to = format_id(peer.0);
            let snapshot = data.meta().last_included;
            // The snapshot may be a little older by the time it leaves; the follower then
            // catches up from the log after it, or is sent a newer one.
            let wait = backoff.delay(peer);
            if !wait.is_zero() {
                tracing::info!("waiting {wait:?} before sending snapshot {snapshot} to {to}");
                tokio::time::sleep(wait).await;
            }
            let began = std::time::Instant::now();
            tracing::info!("sending snapshot {snapshot} to {to}");
            let outcome =
                snapshot_stream::send_snapshot_with(&dialer, codec, GROUP_ID, addr, message, data)
                    .await;
            let seconds = began.elapsed().as_secs_f64();
            match &outcome.error {
                None => {
                    metrics.snapshot_sent(began.elapsed());
                    tracing::info!(
                        "sent snapshot {snapshot} to {to}: {} bytes in {} chunks, {seconds:.2} s{}",
                        outcome.bytes,
                        outcome.chunks,
                        outcome.resumed_at.map_or(String::new(), |c| format!(
                            ", resumed at chunk {c} after {} attempts",
                            outcome.attempts
                        ))
                    );
                }
                Some(e) => {
                    metrics.snapshot_send_failed();
                    tracing::warn!("snapshot {snapshot} to {to} failed after {seconds:.2} s: {e}");
                }
            }
            backoff.record(peer, outcome.status);
            report(outcome.status);
        });
    }

    fn set_peers(&mut self, peers: &BTreeMap<NodeId, Vec<String>>) {
        let me = NodeId(self.codec.member_id);
        let wanted: BTreeMap<NodeId, String> = peers
            .iter()
            .filter(|(id, _)| **id != me)
            .filter_map(|(id, urls)| {
                // The table drops a member's URLs when the change removing it applies, while
                // the joint configuration still counts it: keep talking to it where it is.
                let addr = peer_address(urls)
                    .or_else(|| self.addrs.get(id).cloned())
                    .or_else(|| self.configured.get(id).cloned());
                if addr.is_none() {
                    tracing::warn!(
                        "no peer URL known for member {}; not connecting",
                        format_id(id.0)
                    );
                }
                addr.map(|a| (*id, a))
            })
            .collect();
        let gone: Vec<NodeId> =
            self.addrs.keys().filter(|id| !wanted.contains_key(id)).copied().collect();
        for id in gone {
            tracing::info!("disconnecting from {}: no longer a member", format_id(id.0));
            self.queues.remove(&id);
            self.addrs.remove(&id);
            self.gate.forget(id.0);
        }
        for (id, addr) in wanted {
            if self.addrs.get(&id) != Some(&addr) {
                tracing::info!("connecting to member {} at {addr}", format_id(id.0));
                self.connect(id, addr);
            }
        }
    }
}

/// The receiving member's replica, as the snapshot stream sees it.
impl SnapshotSink for RuntimeHandle {
    async fn writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, String> {
        let rx = self
            .inspect(move |r| r.snapshot_receiver(meta).map_err(|e| e.to_string()))
            .map_err(|e| format!("the replica cannot take it now: {e}"))?;
        rx.await.map_err(|_| "the replica stopped".to_string())?
    }

    async fn deliver(&self, msg: Message) -> Result<(), String> {
        // The data is durable; only the message is missing. A full queue clears quickly, so
        // wait for it a little rather than throw the transfer away.
        for _ in 0..200 {
            match self.step(msg.clone()) {
                Ok(()) => return Ok(()),
                Err(SubmitError::Full) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(SubmitError::Stopped) => return Err("the replica stopped".into()),
            }
        }
        Err("the replica's input queue stayed full".into())
    }
}

/// One peer as its connection task sees it.
struct Link {
    codec: FrameCodec,
    peer: u64,
    addr: String,
    timing: PeerTiming,
    dialer: PeerDialer,
    gate: PeerGate,
}

/// Why a connection to a peer was given up.
enum Ended {
    /// The queue's sender is gone: the member is stopping.
    Stopping,
    /// The connection is dead; the reason is for the log.
    Dead(String),
}

/// Keeps one connection to a peer and writes its queue to it, replacing the connection
/// whenever it is found dead (see the module documentation).
async fn peer_loop(link: Link, mut rx: mpsc::Receiver<Message>, metrics: Arc<Metrics>) {
    let Link { peer, ref addr, timing, ref dialer, .. } = link;
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    let mut failures = 0u32;
    loop {
        // Only what was queued before this attempt counts as stale if it fails: a message
        // queued while we wait to retry still goes out if the next attempt succeeds.
        let queued_before = rx.len();
        let mut stream = match connect(dialer, addr, timing).await {
            Ok(s) => {
                failures = 0;
                s
            }
            Err(e) => {
                link.gate.mark(peer, false);
                failures += 1;
                // Members start at different moments: stay quiet through the first few
                // attempts.
                if !warned && failures >= CONNECT_FAILURES_QUIET {
                    tracing::warn!("cannot reach peer {} at {addr}: {e}", format_id(peer));
                    warned = true;
                }
                let mut stale = 0;
                while stale < queued_before && rx.try_recv().is_ok() {
                    stale += 1;
                }
                metrics.peer_messages_dropped(stale as u64);
                if rx.is_closed() && rx.is_empty() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(timing.backoff_max());
                continue;
            }
        };
        let began = Instant::now();
        let mut heard = false;
        let ended = run_connection(&link, &mut stream, &mut rx, &metrics, &mut heard).await;
        link.gate.mark(peer, false);
        if heard && warned {
            tracing::info!("peer {} at {addr} is reachable again", format_id(peer));
            warned = false;
        }
        match ended {
            Ended::Stopping => return,
            Ended::Dead(why) => {
                // Warn once per outage; a paused peer accepts and goes silent again and
                // again.
                if !warned {
                    tracing::warn!("connection to peer {} at {addr}: {why}", format_id(peer));
                    warned = true;
                } else {
                    tracing::debug!("connection to peer {} at {addr}: {why}", format_id(peer));
                }
            }
        }
        drop(stream);
        // A connection that was up (the peer restarted, or a partition healed and the old
        // connection was found dead) is replaced at once. One that ended as soon as it was
        // made (a peer that accepts and closes) is retried with backoff, not in a tight loop.
        if began.elapsed() >= timing.backoff_max() {
            backoff = BACKOFF_MIN;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(timing.backoff_max());
        }
    }
}

/// Dials `addr` within the connect deadline (a TLS handshake gets an election timeout more)
/// and sets the socket options of a message connection.
async fn connect(
    dialer: &PeerDialer,
    addr: &str,
    timing: PeerTiming,
) -> std::io::Result<PeerStream> {
    let stream = dialer.dial(addr, timing.connect_timeout() + timing.election_timeout).await?;
    tune_socket(stream.tcp(), timing);
    Ok(stream)
}

/// `TCP_NODELAY`, TCP keepalive and `TCP_USER_TIMEOUT` on a message connection. Failures are
/// logged, not fatal: the application-level keepalives still notice a dead peer.
fn tune_socket(stream: &TcpStream, timing: PeerTiming) {
    let socket = socket2::SockRef::from(stream);
    if let Err(e) = socket.set_tcp_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY on a peer connection: {e}");
    }
    // The kernel counts keepalive times in whole seconds.
    let whole_seconds = |d: Duration| Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(whole_seconds(timing.election_timeout))
        .with_interval(whole_seconds(timing.heartbeat_interval))
        .with_retries(TCP_KEEPALIVE_PROBES);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive on a peer connection: {e}");
    }
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    if let Err(e) = socket.set_tcp_user_timeout(Some(timing.election_timeout)) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT on a peer connection: {e}");
    }
}

/// Writes `bytes` within the write deadline.
async fn write_within(
    stream: &mut PeerStream,
    bytes: &[u8],
    deadline: Duration,
) -> Result<(), String> {
    let write = async {
        stream.write_all(bytes).await?;
        // TLS buffers what it encrypts: the bytes leave only when flushed.
        stream.flush().await
    };
    match tokio::time::timeout(deadline, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => {
            Err(format!("a write of {} bytes did not finish within {deadline:?}", bytes.len()))
        }
    }
}

/// Writes the peer's queue to one connection and reads the keepalives coming back, until
/// the connection is found dead or the member stops. Sets `heard` once a keepalive arrives.
async fn run_connection(
    link: &Link,
    stream: &mut PeerStream,
    rx: &mut mpsc::Receiver<Message>,
    metrics: &Metrics,
    heard: &mut bool,
) -> Ended {
    let Link { codec, peer, timing, .. } = link;
    let (codec, peer, timing) = (*codec, *peer, *timing);
    let silence_max = timing.election_timeout;
    let mut out = BytesMut::new();
    // The opening frame, empty unless something is queued: it tells the acceptor at once
    // that this is a message connection, so its keepalives start even if we stay idle.
    codec.encode_frame(GROUP_ID, &[], &mut out).expect("an empty frame always fits");
    if let Err(e) = write_within(stream, &out, timing.election_timeout).await {
        return Ended::Dead(e);
    }
    let mut received = BytesMut::with_capacity(4 * FRAME_HEADER_BYTES);
    let mut last_heard = Instant::now();
    loop {
        // Biased: what has arrived is read before the silence deadline is judged, and the
        // deadline before more is written (a queue that never empties cannot hide silence).
        tokio::select! {
            biased;
            r = stream.read_buf(&mut received) => {
                match r {
                    Ok(0) => return Ended::Dead("closed by the peer".into()),
                    Err(e) => return Ended::Dead(format!("read failed: {e}")),
                    Ok(_) => {}
                }
                loop {
                    match codec.decode_keepalive(&mut received) {
                        // An isolated member hears nothing: the connection goes silent.
                        Ok(Some(from)) if from == peer && !link.gate.is_isolated() => {
                            last_heard = Instant::now();
                            *heard = true;
                            link.gate.mark(peer, true);
                        }
                        Ok(Some(from)) if from == peer => {}
                        Ok(Some(from)) => {
                            let e = WireError::KeepaliveFromStranger { expected: peer, got: from };
                            return Ended::Dead(e.to_string());
                        }
                        Ok(None) => break,
                        Err(e) => return Ended::Dead(format!("bad keepalive: {e}")),
                    }
                }
            }
            () = tokio::time::sleep_until(last_heard + silence_max) => {
                return Ended::Dead(format!("nothing heard for {silence_max:?}"));
            }
            first = rx.recv() => {
                let Some(first) = first else { return Ended::Stopping };
                let mut batch = vec![first];
                while batch.len() < BATCH_MESSAGES_MAX {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                out.clear();
                if let Err(e) = codec.encode_batch(GROUP_ID, &batch, &mut out) {
                    tracing::error!("cannot encode messages for peer {}: {e}", format_id(peer));
                    metrics.peer_messages_dropped(batch.len() as u64);
                    continue;
                }
                // A batch whose write failed is not sent: how much of it the peer got is
                // unknown, and a truncated frame is discarded by the peer.
                if let Err(e) = write_within(stream, &out, timing.election_timeout).await {
                    metrics.peer_messages_dropped(batch.len() as u64);
                    return Ended::Dead(e);
                }
                metrics.peer_messages_sent(batch.len() as u64);
            }
        }
    }
}

/// Accepts peer connections and feeds their messages to the runtime; runs until the task is
/// dropped, which also closes every connection it accepted (so peers notice and reconnect
/// to whoever listens next on this address). Each connection's TLS handshake, on an
/// `https://` listener, runs in the connection's own task: a slow or failed one never holds
/// up the loop.
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: PeerAcceptor,
    codec: FrameCodec,
    timing: PeerTiming,
    runtime: RuntimeHandle,
    responder: Arc<Responder>,
    gate: PeerGate,
) {
    let mut readers = tokio::task::JoinSet::new();
    let partials = Partials::default();
    loop {
        // Reap finished readers so the set does not grow with every reconnect.
        while readers.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                let (runtime, partials) = (runtime.clone(), partials.clone());
                let from = from.to_string();
                let responder = Arc::clone(&responder);
                let acceptor = acceptor.clone();
                let gate = gate.clone();
                readers.spawn(async move {
                    let stream = match acceptor.accept(stream).await {
                        Ok(s) => s,
                        Err(e) => {
                            // A member with the wrong certificate retries every few
                            // milliseconds: a warning per attempt would flood the log.
                            tracing::debug!("refusing peer connection from {from}: TLS: {e}");
                            return;
                        }
                    };
                    let peers = (runtime, partials, gate);
                    read_loop(stream, from, codec, timing, peers, &responder).await;
                });
            }
            Err(e) => {
                tracing::warn!("peer accept failed: {e}");
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

/// Reads frames from one inbound connection until it closes or sends something bad, and
/// writes a keepalive back every heartbeat interval; a connection that opens with
/// [`STREAM_MAGIC`] is a snapshot transfer instead, and one that opens with [`QUERY_MAGIC`] a
/// joining member's question (answered with this member's view of the cluster).
async fn read_loop(
    mut stream: PeerStream,
    from: String,
    codec: FrameCodec,
    timing: PeerTiming,
    (runtime, partials, gate): (RuntimeHandle, Partials, PeerGate),
    responder: &Responder,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while buf.len() < STREAM_MAGIC.len() {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    if buf[..QUERY_MAGIC.len()] == QUERY_MAGIC {
        tracing::info!("answering a cluster query from {from}");
        join::answer(stream, responder, &runtime).await;
        return;
    }
    if buf[..STREAM_MAGIC.len()] == STREAM_MAGIC && gate.is_isolated() {
        tracing::debug!("refusing a snapshot transfer from {from}: isolated");
        return;
    }
    if buf[..STREAM_MAGIC.len()] == STREAM_MAGIC {
        let stream_codec = StreamCodec { cluster_id: codec.cluster_id, member_id: codec.member_id };
        let metrics = Arc::clone(runtime.metrics());
        let outcome =
            snapshot_stream::receive_snapshot(stream, buf, stream_codec, &runtime, &partials).await;
        match outcome {
            ReceiveOutcome::Installed(snapshot) => {
                metrics.snapshot_received();
                tracing::info!("received snapshot {snapshot} from {from}");
            }
            ReceiveOutcome::Interrupted(e) => {
                tracing::warn!("snapshot transfer from {from} interrupted (kept to resume): {e}");
            }
            ReceiveOutcome::Failed(e) => {
                metrics.snapshot_receive_failed();
                tracing::warn!("snapshot transfer from {from} failed: {e}");
            }
        }
        return;
    }
    tune_socket(stream.tcp(), timing);
    let mut keepalive = BytesMut::new();
    codec.encode_keepalive(&mut keepalive);
    // The first tick is immediate: the dialler hears from us as soon as it has opened.
    let mut ticks = tokio::time::interval(timing.heartbeat_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = NodeId(codec.member_id);
    loop {
        loop {
            match codec.decode_frame(&mut buf) {
                Ok(Some(frame)) => {
                    for m in frame.messages {
                        // A peer speaks only for itself and only to us; an isolated member
                        // takes nothing.
                        if m.from.0 != frame.from_member || m.to != me || gate.is_isolated() {
                            continue;
                        }
                        if let MessageBody::HeartbeatResponse { read_round } = m.body {
                            runtime.metrics().heartbeat_answered(m.from.0, read_round);
                        }
                        match runtime.step(m) {
                            // Full queue: drop; Raft retransmits.
                            Ok(()) | Err(SubmitError::Full) => {}
                            Err(SubmitError::Stopped) => return,
                        }
                    }
                }
                Ok(None) => break,
                Err(e @ WireError::ClusterMismatch { .. }) => {
                    tracing::error!(
                        "refusing peer connection from {from}: {e} (is it a member of \
                         another cluster, started with a different --initial-cluster?)"
                    );
                    return;
                }
                Err(e) => {
                    tracing::error!("closing peer connection from {from}: {e}");
                    return;
                }
            }
        }
        // Biased: the keepalive first, so that a dialler sending without pause still hears
        // from us every heartbeat interval (the tick is ready only once per interval).
        tokio::select! {
            biased;
            _ = ticks.tick() => {
                if gate.is_isolated() {
                    continue;
                }
                // A dialler that stopped reading is paused or gone: close, and let it dial
                // again when it can.
                if let Err(e) = write_within(&mut stream, &keepalive, timing.election_timeout).await {
                    tracing::debug!("closing peer connection from {from}: keepalive {e}");
                    return;
                }
            }
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}
