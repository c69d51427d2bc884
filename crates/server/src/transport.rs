//! The peer transport: Raft messages over TCP in [`crate::wire`] frames.
//!
//! - **Outbound**: one long-lived connection per peer, owned by a tokio task fed by a bounded
//!   queue. The task batches everything queued into one write ([`FrameCodec::encode_batch`])
//!   and reconnects with backoff when the connection fails. A full queue drops the message:
//!   Raft retransmits, and a slow peer must not hold up the replica thread.
//! - **Inbound**: an accept loop on the peer listener; each connection is read as a stream of
//!   frames and every message is handed to the runtime. A frame from another cluster, or any
//!   malformed frame, closes that connection with a logged error.
//!
//! Connections are one-way: a member writes on the connections it dialled and reads on the
//! ones it accepted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tenure_raft::{Message, MessageBody, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::ids::format_id;
use crate::metrics::Metrics;
use crate::runtime::{Outbox, RuntimeHandle, SubmitError};
use crate::wire::{FrameCodec, WireError};

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
    metrics: Arc<Metrics>,
}

impl PeerSender {
    /// Starts one connection task per peer (`peers`: member id and `host:port`) on the
    /// current tokio runtime, counting messages in `metrics`.
    pub fn start(codec: FrameCodec, peers: &[(u64, String)], metrics: Arc<Metrics>) -> PeerSender {
        let mut queues = BTreeMap::new();
        for (id, addr) in peers {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
            tokio::spawn(peer_loop(codec, *id, addr.clone(), rx, Arc::clone(&metrics)));
            queues.insert(NodeId(*id), tx);
        }
        PeerSender { queues, metrics }
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
    loop {
        // Reap finished readers so the set does not grow with every reconnect.
        while readers.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, from)) => {
                let _ = stream.set_nodelay(true);
                readers.spawn(read_loop(stream, from.to_string(), codec, runtime.clone()));
            }
            Err(e) => {
                tracing::warn!("peer accept failed: {e}");
                tokio::time::sleep(BACKOFF_MIN).await;
            }
        }
    }
}

/// Reads frames from one inbound connection until it closes or sends something bad.
async fn read_loop(mut stream: TcpStream, from: String, codec: FrameCodec, runtime: RuntimeHandle) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
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
