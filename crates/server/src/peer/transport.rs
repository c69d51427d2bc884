//! The peer transport: Raft messages over TCP in [`crate::peer::wire`] frames.
//!
//! - **Outbound**: one long-lived connection per peer, owned by a tokio task fed by a bounded
//!   queue. The task batches everything queued into one write ([`FrameCodec::encode_batch`])
//!   and reconnects with backoff when the connection fails. A full queue drops the message:
//!   Raft retransmits, and a slow peer must not hold up the replica thread.
//! - **Inbound**: an accept loop on the peer listener; each connection is read as a stream of
//!   frames and every message is handed to the runtime. A frame from another cluster, or any
//!   malformed frame, closes that connection with a logged error.
//!
//! - **Snapshots** travel on connections of their own ([`crate::peer::snapshot_stream`]), one per
//!   transfer, so a large snapshot never delays heartbeats or appends. The accept loop tells
//!   the two kinds of connection apart by their first four bytes.
//!
//! Message connections are one-way: a member writes on the connections it dialled and reads on
//! the ones it accepted. Snapshot connections carry acknowledgements back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tenure_raft::{Message, MessageBody, NodeId, SnapshotMeta, SnapshotStatus};
use tenure_storage::{SnapshotReader, SnapshotWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::ids::format_id;
use crate::peer::snapshot_stream::{
    self, Partials, ReceiveOutcome, STREAM_MAGIC, SnapshotSink, StreamCodec, TransferBackoff,
};
use crate::peer::wire::{FrameCodec, WireError};
use crate::runtime::Metrics;
use crate::runtime::{Outbox, RuntimeHandle, SnapshotReport, SubmitError};

/// Messages queued for one peer at most; more are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;

/// Messages written in one batch at most.
const BATCH_MESSAGES_MAX: usize = 1024;

/// The group id of the one Raft group a member runs.
pub const GROUP_ID: u64 = 0;

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Failed connection attempts to a peer before it is worth a warning.
const CONNECT_FAILURES_QUIET: u32 = 5;

/// The sending side: one queue per peer. Implements [`Outbox`] for the runtime.
pub struct PeerSender {
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
    /// Each peer's `host:port`, for snapshot connections.
    addrs: BTreeMap<NodeId, String>,
    stream_codec: StreamCodec,
    /// Where snapshot transfers run: `send_snapshot` is called from the replica thread.
    tokio: tokio::runtime::Handle,
    /// Waits before transfers to followers whose last transfers failed.
    backoff: TransferBackoff,
    metrics: Arc<Metrics>,
}

impl PeerSender {
    /// Starts one connection task per peer (`peers`: member id and `host:port`) on the
    /// current tokio runtime, counting messages in `metrics`.
    pub fn start(codec: FrameCodec, peers: &[(u64, String)], metrics: Arc<Metrics>) -> PeerSender {
        let mut queues = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for (id, addr) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            tokio::spawn(peer_loop(codec, *id, addr.clone(), rx, Arc::clone(&metrics)));
            queues.insert(NodeId(*id), tx);
            addrs.insert(NodeId(*id), addr.clone());
        }
        let stream_codec = StreamCodec { cluster_id: codec.cluster_id, member_id: codec.member_id };
        let tokio = tokio::runtime::Handle::current();
        let backoff = TransferBackoff::default();
        PeerSender { queues, addrs, stream_codec, tokio, backoff, metrics }
    }
}

impl Outbox for PeerSender {
    fn send(&mut self, messages: Vec<Message>) {
        let (mut sent, mut dropped) = (0, 0);
        for m in messages {
            if let MessageBody::Heartbeat { read_round, .. } = m.body {
                self.metrics.heartbeat_sent(m.to.0, read_round);
            }
            if let Some(q) = self.queues.get(&m.to) {
                // Full or closed: drop it; Raft retransmits.
                match q.try_send(m) {
                    Ok(()) => sent += 1,
                    Err(_) => dropped += 1,
                }
            }
        }
        self.metrics.peer_messages_sent(sent);
        self.metrics.peer_messages_dropped(dropped);
    }

    fn send_snapshot(&mut self, message: Message, data: SnapshotReader, report: SnapshotReport) {
        let Some(addr) = self.addrs.get(&message.to).cloned() else {
            report(SnapshotStatus::Failed);
            return;
        };
        let (codec, metrics) = (self.stream_codec, Arc::clone(&self.metrics));
        let backoff = self.backoff.clone();
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
                snapshot_stream::send_snapshot(codec, GROUP_ID, addr, message, data).await;
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

/// Keeps one connection to a peer and writes its queue to it.
async fn peer_loop(
    codec: FrameCodec,
    peer: u64,
    addr: String,
    mut rx: mpsc::Receiver<Message>,
    metrics: Arc<Metrics>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut warned = false;
    let mut failures = 0u32;
    let mut buf = BytesMut::new();
    loop {
        let mut stream = match TcpStream::connect(&addr).await {
            Ok(s) => {
                backoff = BACKOFF_MIN;
                failures = 0;
                if warned {
                    tracing::info!("connected to peer {} at {addr}", format_id(peer));
                }
                s
            }
            Err(e) => {
                failures += 1;
                // Members start at different moments: stay quiet through the first few
                // attempts.
                if !warned && failures >= CONNECT_FAILURES_QUIET {
                    tracing::warn!("cannot reach peer {} at {addr}: {e}", format_id(peer));
                    warned = true;
                }
                // What was queued for a peer we cannot reach is stale by the time we can.
                let mut stale = 0;
                while rx.try_recv().is_ok() {
                    stale += 1;
                }
                metrics.peer_messages_dropped(stale);
                if rx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut batch = vec![first];
            while batch.len() < BATCH_MESSAGES_MAX {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            buf.clear();
            if let Err(e) = codec.encode_batch(GROUP_ID, &batch, &mut buf) {
                tracing::error!("cannot encode messages for peer {}: {e}", format_id(peer));
                continue;
            }
            if let Err(e) = stream.write_all(&buf).await {
                tracing::warn!("lost connection to peer {} at {addr}: {e}", format_id(peer));
                warned = true;
                break;
            }
        }
    }
}

/// Accepts peer connections and feeds their messages to the runtime; runs until the task is
/// dropped, which also closes every connection it accepted (so peers notice and reconnect
/// to whoever listens next on this address).
pub async fn accept_loop(listener: TcpListener, codec: FrameCodec, runtime: RuntimeHandle) {
    let mut readers = tokio::task::JoinSet::new();
    let partials = Partials::default();
    loop {
        // Reap finished readers so the set does not grow with every reconnect.
        while readers.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                let (runtime, partials) = (runtime.clone(), partials.clone());
                readers.spawn(read_loop(stream, from.to_string(), codec, runtime, partials));
            }
            Err(e) => {
                tracing::warn!("peer accept failed: {e}");
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

/// Reads frames from one inbound connection until it closes or sends something bad; a
/// connection that opens with [`STREAM_MAGIC`] is a snapshot transfer instead.
async fn read_loop(
    mut stream: TcpStream,
    from: String,
    codec: FrameCodec,
    runtime: RuntimeHandle,
    partials: Partials,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while buf.len() < STREAM_MAGIC.len() {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
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
    let me = NodeId(codec.member_id);
    loop {
        loop {
            match codec.decode_frame(&mut buf) {
                Ok(Some(frame)) => {
                    for m in frame.messages {
                        // A peer speaks only for itself and only to us.
                        if m.from.0 != frame.from_member || m.to != me {
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
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
