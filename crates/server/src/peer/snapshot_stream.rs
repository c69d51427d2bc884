//! Snapshot transfer between members (Raft §7), on a TCP connection of its own so that a large
//! snapshot never delays the heartbeats and appends on the message connection: a follower
//! receiving one keeps hearing its leader and does not start an election.
//!
//! # Protocol
//!
//! The sender dials the receiver's peer listener and speaks in stream frames (below). Both
//! directions share the connection:
//!
//! ```text
//! sender                                   receiver
//!   Offer(Snapshot message) ──────────────>  finds a partial transfer of the same snapshot
//!                                            from this sender, or starts a staging file
//!                          <──────────────  Resume(next chunk it needs)
//!   Chunk(i, data) ... (at most WINDOW      writes each chunk, in order
//!   unacknowledged) ──────────────────────>
//!                          <──────────────  Ack(chunks written)            after each chunk
//!   Done(chunk count, CRC-32C of all data)─> checks count and CRC, fsyncs and renames the
//!                                            file into place, steps the message into its
//!                                            replica
//!                          <──────────────  Installed
//! ```
//!
//! - **Checksummed**: every frame carries a CRC-32C; `Done` carries the CRC of all the data, which
//!   the receiver compares with what it wrote (and the sender's file checks its own chunks as it
//!   reads them).
//! - **Flow-controlled**: at most [`WINDOW_CHUNKS`] chunks (1 MiB each) are unacknowledged, so
//!   memory on both sides is bounded by the window, whatever the snapshot's size.
//! - **Resumable**: when the connection drops, the receiver keeps what it wrote for
//!   [`PARTIAL_IDLE_MAX`]; the sender reconnects (backing off) and resumes from the last
//!   acknowledged chunk, which it still holds in its window.
//! - **Retry and abort**: an attempt that makes no progress for [`PROGRESS_TIMEOUT`] is cut;
//!   after [`ATTEMPTS_MAX`] failed attempts in a row, or if the receiver refuses or lost its
//!   partial file, the transfer ends `Failed`. The leader's core then probes the follower again
//!   and asks for a fresh transfer if it still needs one; [`TransferBackoff`] makes each fresh
//!   transfer to a follower whose last ones failed wait longer first (1 s doubling to 30 s), so
//!   a follower that cannot take a snapshot (a full disk) is not sent one in a tight loop. One
//!   transfer per follower at a time is the core's rule (its `Snapshot` progress state).
//!
//! # Frame layout
//!
//! A 40-byte header, little-endian, then the payload:
//!
//! ```text
//! offset size field
//!      0    4 magic          b"TNRS"
//!      4    1 version        1
//!      5    1 kind           1 Offer, 2 Chunk, 3 Done, 4 Resume, 5 Ack, 6 Installed, 7 Refused
//!      6    2 reserved       0
//!      8    8 cluster_id     a mismatch refuses the connection
//!     16    8 group_id       the Raft group
//!     24    8 from_member    the frame's sender
//!     32    4 payload_bytes  at most the chunk limit plus a little
//!     36    4 crc32c         of header bytes 0..36, then of the payload
//! ```
//!
//! Payloads: Offer, the wire encoding of the `Snapshot` message ([`crate::peer::wire`]); Chunk,
//! `index:u64` then the data; Done, `chunks:u64 data_crc:u32`; Resume and Ack, `chunks:u64`;
//! Installed, empty; Refused, a UTF-8 reason.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tenure_raft::{EntryId, Message, MessageBody, NodeId, SnapshotMeta, SnapshotStatus};
use tenure_storage::snapshot::SNAPSHOT_CHUNK_BYTES_MAX;
use tenure_storage::{SnapshotReader, SnapshotWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ids::format_id;
use crate::peer::stream::{PeerDialer, PeerStream};
use crate::peer::wire::{self, WireError};

/// The four bytes every snapshot stream frame starts with.
pub const STREAM_MAGIC: [u8; 4] = *b"TNRS";
/// The stream format version this build writes and reads.
pub const STREAM_VERSION: u8 = 1;
/// Size of the fixed stream frame header.
pub const STREAM_HEADER_BYTES: usize = 40;
/// Largest stream frame payload: one storage chunk and its index.
pub const STREAM_PAYLOAD_BYTES_MAX: usize = SNAPSHOT_CHUNK_BYTES_MAX + 64;
/// Chunks sent and not yet acknowledged, at most.
pub const WINDOW_CHUNKS: usize = 4;
/// An attempt that hears nothing for this long is cut (and retried).
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts in a row that may fail before the transfer is given up.
pub const ATTEMPTS_MAX: u32 = 5;
/// A receiver gives a silent connection up after this long: sooner than the sender does, so
/// that when the sender reconnects, the partial transfer is already free to resume.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// After `Done`, the sender waits this long for `Installed`: the receiver fsyncs the whole
/// file first, which takes a while for a large snapshot on a slow disk.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// A partial transfer is kept this long after its connection dropped, for the sender to resume.
pub const PARTIAL_IDLE_MAX: Duration = Duration::from_secs(60);

/// The wait before a transfer to a follower whose last transfer failed; it doubles with each
/// failure in a row, up to [`FAILED_TRANSFER_DELAY_MAX`].
pub const FAILED_TRANSFER_DELAY_MIN: Duration = Duration::from_secs(1);
/// The longest wait before a transfer to a follower whose transfers keep failing.
pub const FAILED_TRANSFER_DELAY_MAX: Duration = Duration::from_secs(30);

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One stream frame's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamFrame {
    /// The sender offers the snapshot this `Snapshot` message names.
    Offer(Message),
    /// Chunk `index` (from 0) of the snapshot's data.
    Chunk {
        /// Position of the chunk in the data.
        index: u64,
        /// The chunk.
        data: Bytes,
    },
    /// Every chunk was sent.
    Done {
        /// Chunks in all.
        chunks: u64,
        /// CRC-32C of all the data, in order.
        data_crc: u32,
    },
    /// The receiver holds the first `next` chunks: send from there.
    Resume {
        /// The first chunk it needs.
        next: u64,
    },
    /// The receiver has written the first `written` chunks.
    Ack {
        /// Chunks written.
        written: u64,
    },
    /// The snapshot is durable on the receiver and its message was handed to the replica.
    Installed,
    /// The receiver will not take this snapshot (the reason says why); the sender gives up.
    Refused(String),
}

impl StreamFrame {
    fn kind(&self) -> u8 {
        match self {
            StreamFrame::Offer(_) => 1,
            StreamFrame::Chunk { .. } => 2,
            StreamFrame::Done { .. } => 3,
            StreamFrame::Resume { .. } => 4,
            StreamFrame::Ack { .. } => 5,
            StreamFrame::Installed => 6,
            StreamFrame::Refused(_) => 7,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            StreamFrame::Offer(_) => "Offer",
            StreamFrame::Chunk { .. } => "Chunk",
            StreamFrame::Done { .. } => "Done",
            StreamFrame::Resume { .. } => "Resume",
            StreamFrame::Ack { .. } => "Ack",
            StreamFrame::Installed => "Installed",
            StreamFrame::Refused(_) => "Refused",
        }
    }
}

/// Encodes and decodes stream frames for one member of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCodec {
    /// This member's cluster; frames from other clusters are refused.
    pub cluster_id: u64,
    /// This member's id, written as the sender of every frame.
    pub member_id: u64,
}

/// A decoded stream frame with its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    /// The Raft group.
    pub group_id: u64,
    /// The sending member.
    pub from_member: u64,
    /// What it says.
    pub frame: StreamFrame,
}

impl StreamCodec {
    /// Appends `frame` for `group_id` to `out`.
    pub fn encode(&self, group_id: u64, frame: &StreamFrame, out: &mut BytesMut) {
        if let StreamFrame::Chunk { index, data } = frame {
            self.encode_chunk_head(group_id, *index, data, out);
            out.extend_from_slice(data);
            return;
        }
        let start = out.len();
        out.put_bytes(0, STREAM_HEADER_BYTES);
        match frame {
            StreamFrame::Offer(m) => wire::encode_message(m, out),
            StreamFrame::Chunk { .. } => unreachable!("encoded above"),
            StreamFrame::Done { chunks, data_crc } => {
                out.put_u64_le(*chunks);
                out.put_u32_le(*data_crc);
            }
            StreamFrame::Resume { next: n } | StreamFrame::Ack { written: n } => out.put_u64_le(*n),
            StreamFrame::Installed => {}
            StreamFrame::Refused(reason) => out.extend_from_slice(reason.as_bytes()),
        }
        let payload_bytes = out.len() - start - STREAM_HEADER_BYTES;
        let h = &mut out[start..];
        self.write_header(group_id, frame.kind(), payload_bytes, &mut h[..STREAM_HEADER_BYTES]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..36]), &h[STREAM_HEADER_BYTES..]);
        h[36..40].copy_from_slice(&crc.to_le_bytes());
    }

    /// Appends the header and index of a `Chunk` frame carrying `data` to `out`, without the
    /// data itself: the sender writes the data straight from the chunk it read, uncopied.
    pub fn encode_chunk_head(&self, group_id: u64, index: u64, data: &[u8], out: &mut BytesMut) {
        let start = out.len();
        out.put_bytes(0, STREAM_HEADER_BYTES);
        out.put_u64_le(index);
        let h = &mut out[start..];
        self.write_header(group_id, 2, 8 + data.len(), &mut h[..STREAM_HEADER_BYTES]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[..36]), &h[STREAM_HEADER_BYTES..]);
        let crc = crc32c::crc32c_append(crc, data);
        h[36..40].copy_from_slice(&crc.to_le_bytes());
    }

    /// Fills header bytes 0..36 (the CRC is the caller's).
    fn write_header(&self, group_id: u64, kind: u8, payload_bytes: usize, h: &mut [u8]) {
        h[0..4].copy_from_slice(&STREAM_MAGIC);
        h[4] = STREAM_VERSION;
        h[5] = kind;
        h[6..8].copy_from_slice(&[0, 0]);
        h[8..16].copy_from_slice(&self.cluster_id.to_le_bytes());
        h[16..24].copy_from_slice(&group_id.to_le_bytes());
        h[24..32].copy_from_slice(&self.member_id.to_le_bytes());
        h[32..36].copy_from_slice(&(payload_bytes as u32).to_le_bytes());
    }

    /// Takes one whole frame off the front of `buf`; `Ok(None)` if more bytes are needed.
    /// Never panics on any input; a malformed frame is an error that says what was wrong.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<DecodedFrame>, WireError> {
        if buf.len() < STREAM_HEADER_BYTES {
            // Refuse a non-stream peer as soon as its first bytes show it.
            if buf.len() >= 4 && buf[..4] != STREAM_MAGIC {
                return Err(WireError::BadMagic(buf[..4].try_into().expect("4 bytes")));
            }
            return Ok(None);
        }
        let mut h = &buf[..STREAM_HEADER_BYTES];
        let mut magic = [0u8; 4];
        h.copy_to_slice(&mut magic);
        if magic != STREAM_MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = h.get_u8();
        if version != STREAM_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let kind = h.get_u8();
        let reserved = h.get_u16_le();
        if reserved != 0 {
            return Err(WireError::ReservedFlags(reserved as u8 | (reserved >> 8) as u8));
        }
        let cluster_id = h.get_u64_le();
        let group_id = h.get_u64_le();
        let from_member = h.get_u64_le();
        let payload_bytes = h.get_u32_le() as usize;
        let crc = h.get_u32_le();
        if cluster_id != self.cluster_id {
            return Err(WireError::ClusterMismatch {
                expected: self.cluster_id,
                got: cluster_id,
                from_member,
            });
        }
        if payload_bytes > STREAM_PAYLOAD_BYTES_MAX {
            return Err(WireError::FrameTooLarge {
                bytes: payload_bytes as u64,
                max: STREAM_PAYLOAD_BYTES_MAX as u32,
            });
        }
        if buf.len() < STREAM_HEADER_BYTES + payload_bytes {
            buf.reserve(STREAM_HEADER_BYTES + payload_bytes - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(STREAM_HEADER_BYTES + payload_bytes).freeze();
        let actual = crc32c::crc32c_append(crc32c::crc32c(&frame[..36]), &frame[40..]);
        if actual != crc {
            return Err(WireError::ChecksumMismatch { expected: crc, actual });
        }
        let mut p = frame.slice(STREAM_HEADER_BYTES..);
        let need = |p: &Bytes, n: usize| {
            if p.len() < n {
                Err(WireError::Truncated { needed: n, available: p.len() })
            } else {
                Ok(())
            }
        };
        let exact = |p: &Bytes, n: usize| {
            need(p, n)?;
            if p.len() > n { Err(WireError::TrailingBytes(p.len() - n)) } else { Ok(()) }
        };
        let frame = match kind {
            1 => StreamFrame::Offer(wire::decode_message(p)?),
            2 => {
                need(&p, 8)?;
                let index = p.get_u64_le();
                StreamFrame::Chunk { index, data: p }
            }
            3 => {
                exact(&p, 12)?;
                StreamFrame::Done { chunks: p.get_u64_le(), data_crc: p.get_u32_le() }
            }
            4 => {
                exact(&p, 8)?;
                StreamFrame::Resume { next: p.get_u64_le() }
            }
            5 => {
                exact(&p, 8)?;
                StreamFrame::Ack { written: p.get_u64_le() }
            }
            6 => {
                exact(&p, 0)?;
                StreamFrame::Installed
            }
            7 => StreamFrame::Refused(String::from_utf8_lossy(&p).into_owned()),
            tag => return Err(WireError::UnknownTag { what: "snapshot stream frame", tag }),
        };
        Ok(Some(DecodedFrame { group_id, from_member, frame }))
    }
}

/// Why an attempt or a transfer ended badly.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The connection failed or timed out; worth another attempt.
    #[error("{0}")]
    Connection(String),
    /// The other side sent damaged or malformed bytes; worth another attempt.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The other side sent a well-formed frame out of turn; worth another attempt.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The transfer cannot succeed as it stands (refused, or the receiver lost its partial
    /// file, or the local snapshot file is unreadable): give up and let the core start over.
    #[error("{0}")]
    Fatal(String),
}

/// One side of a stream connection: a frame reader over a buffer, and a writer.
struct Conn {
    stream: PeerStream,
    buf: BytesMut,
    out: BytesMut,
    codec: StreamCodec,
    group_id: u64,
}

impl Conn {
    fn new(stream: PeerStream, buf: BytesMut, codec: StreamCodec, group_id: u64) -> Conn {
        Conn { stream, buf, out: BytesMut::new(), codec, group_id }
    }

    async fn send(&mut self, frame: &StreamFrame) -> Result<(), TransferError> {
        self.out.clear();
        let data = match frame {
            // A chunk's data is written from where it lies, after its encoded head.
            StreamFrame::Chunk { index, data } => {
                self.codec.encode_chunk_head(self.group_id, *index, data, &mut self.out);
                &data[..]
            }
            _ => {
                self.codec.encode(self.group_id, frame, &mut self.out);
                &[][..]
            }
        };
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.write_all(data).await?;
            // TLS buffers what it encrypts: the frame leaves only when flushed.
            self.stream.flush().await
        };
        match tokio::time::timeout(PROGRESS_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransferError::Connection(format!("write failed: {e}"))),
            Err(_) => Err(TransferError::Connection("write stalled".into())),
        }
    }

    /// The next frame, waiting at most `timeout` for it.
    async fn recv(&mut self, timeout: Duration) -> Result<DecodedFrame, TransferError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.codec.decode(&mut self.buf)? {
                return Ok(f);
            }
            let read = self.stream.read_buf(&mut self.buf);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(0)) => return Err(TransferError::Connection("connection closed".into())),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(TransferError::Connection(format!("read failed: {e}"))),
                Err(_) => {
                    return Err(TransferError::Connection(format!(
                        "nothing heard for {timeout:?}"
                    )));
                }
            }
        }
    }
}

// ----- Sending ----------------------------------------------------------------------------------

/// The data of a snapshot being sent: read from its file chunk by chunk, with the chunks sent
/// and not yet acknowledged kept for a resume.
struct Source {
    /// The snapshot file; `None` only while a read is on a blocking thread.
    reader: Option<SnapshotReader>,
    /// Chunks sent and not acknowledged, by index. Invariant: at most [`WINDOW_CHUNKS`].
    window: VecDeque<(u64, Bytes)>,
    /// Chunks read from the file so far (the next chunk's index).
    read: u64,
    /// Chunks the receiver acknowledged. Invariant: `acked + window.len() == read`.
    acked: u64,
    /// CRC-32C of the chunks read so far.
    data_crc: u32,
    eof: bool,
}

impl Source {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, TransferError> {
        if self.eof {
            return Ok(None);
        }
        // File reads are blocking: off the async workers. The reader moves there and back.
        let mut reader = self.reader.take().expect("the reader is back after every read");
        let (reader, chunk) = tokio::task::spawn_blocking(move || {
            let chunk = reader.next_chunk();
            (reader, chunk)
        })
        .await
        .map_err(|e| TransferError::Fatal(format!("snapshot read task failed: {e}")))?;
        self.reader = Some(reader);
        match chunk {
            Ok(Some(c)) => {
                self.data_crc = crc32c::crc32c_append(self.data_crc, &c);
                self.window.push_back((self.read, c.clone()));
                self.read += 1;
                Ok(Some(c))
            }
            Ok(None) => {
                self.eof = true;
                Ok(None)
            }
            Err(e) => Err(TransferError::Fatal(format!("cannot read the snapshot: {e}"))),
        }
    }

    /// The receiver has the first `written` chunks.
    fn acknowledge(&mut self, written: u64) -> Result<(), TransferError> {
        if written < self.acked || written > self.read {
            return Err(TransferError::Protocol(format!(
                "acknowledgement of {written} chunks outside the window {}..={}",
                self.acked, self.read
            )));
        }
        while self.acked < written {
            self.window.pop_front();
            self.acked += 1;
        }
        Ok(())
    }
}

/// How a transfer went, for the sender's caller.
#[derive(Debug)]
pub struct SendOutcome {
    /// `Delivered` or `Failed`, for the core.
    pub status: SnapshotStatus,
    /// Chunks in the snapshot (as far as it was read).
    pub chunks: u64,
    /// Bytes of snapshot data read and sent.
    pub bytes: u64,
    /// Connection attempts made.
    pub attempts: u32,
    /// Chunks sent again after a reconnect resumed (0 without a resume).
    pub resumed_at: Option<u64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Sends the snapshot `reader` holds (named by `msg`, a `Snapshot` message) to the peer at
/// `addr` (`host:port`, plain TCP), reconnecting and resuming as needed. Never panics; every
/// end is an outcome.
pub async fn send_snapshot(
    codec: StreamCodec,
    group_id: u64,
    addr: String,
    msg: Message,
    reader: SnapshotReader,
) -> SendOutcome {
    send_snapshot_with(&PeerDialer::plain(), codec, group_id, addr, msg, reader).await
}

/// [`send_snapshot`] to a peer URL or `host:port`, dialled by `dialer` (TLS for `https://`,
/// as the message connections).
pub async fn send_snapshot_with(
    dialer: &PeerDialer,
    codec: StreamCodec,
    group_id: u64,
    addr: String,
    msg: Message,
    reader: SnapshotReader,
) -> SendOutcome {
    let peer = format_id(msg.to.0);
    let mut source = Source {
        reader: Some(reader),
        window: VecDeque::new(),
        read: 0,
        acked: 0,
        data_crc: 0,
        eof: false,
    };
    let mut bytes = 0u64;
    let mut attempts = 0u32;
    let mut failures = 0u32;
    let mut backoff = BACKOFF_MIN;
    let mut resumed_at = None;
    let mut last_error;
    loop {
        attempts += 1;
        let outcome =
            attempt(dialer, codec, group_id, &addr, &msg, &mut source, &mut bytes, &mut resumed_at)
                .await;
        match outcome {
            Ok(()) => {
                return SendOutcome {
                    status: SnapshotStatus::Delivered,
                    chunks: source.read,
                    bytes,
                    attempts,
                    resumed_at,
                    error: None,
                };
            }
            Err(TransferError::Fatal(e)) => {
                last_error = e;
                break;
            }
            Err(e) => {
                last_error = e.to_string();
                failures += 1;
                if failures >= ATTEMPTS_MAX {
                    last_error = format!("{ATTEMPTS_MAX} attempts failed; last: {last_error}");
                    break;
                }
                tracing::debug!("snapshot to {peer}: attempt {attempts} failed: {last_error}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    SendOutcome {
        status: SnapshotStatus::Failed,
        chunks: source.read,
        bytes,
        attempts,
        resumed_at,
        error: Some(last_error),
    }
}

/// One connection's worth of a transfer.
#[allow(clippy::too_many_arguments)] // one transfer's state, threaded through its attempts
async fn attempt(
    dialer: &PeerDialer,
    codec: StreamCodec,
    group_id: u64,
    addr: &str,
    msg: &Message,
    source: &mut Source,
    bytes: &mut u64,
    resumed_at: &mut Option<u64>,
) -> Result<(), TransferError> {
    let stream = match dialer.dial(addr, CONNECT_TIMEOUT).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(TransferError::Connection("connect timed out".into()));
        }
        Err(e) => return Err(TransferError::Connection(format!("cannot connect: {e}"))),
    };
    let _ = stream.tcp().set_nodelay(true);
    let mut conn = Conn::new(stream, BytesMut::new(), codec, group_id);
    conn.send(&StreamFrame::Offer(msg.clone())).await?;
    let next = match conn.recv(PROGRESS_TIMEOUT).await?.frame {
        StreamFrame::Resume { next } => next,
        StreamFrame::Refused(reason) => {
            return Err(TransferError::Fatal(format!("the receiver refused: {reason}")));
        }
        other => return Err(protocol(&other, "Resume")),
    };
    if next < source.acked {
        // The receiver lost what it had acknowledged (it restarted, or dropped an idle partial
        // transfer): this stream cannot resume, the core starts a fresh one.
        return Err(TransferError::Fatal(format!(
            "the receiver holds {next} chunks but had acknowledged {}",
            source.acked
        )));
    }
    source.acknowledge(next)?;
    if next > 0 {
        *resumed_at = Some(next);
    }
    // Chunks of the window not yet sent on this connection: all of them after a resume.
    let mut unsent: VecDeque<(u64, Bytes)> = source.window.clone();
    let mut done_sent = false;
    loop {
        while let Some((index, data)) = unsent.pop_front() {
            conn.send(&StreamFrame::Chunk { index, data }).await?;
        }
        while source.window.len() < WINDOW_CHUNKS {
            let Some(data) = source.next_chunk().await? else { break };
            *bytes += data.len() as u64;
            conn.send(&StreamFrame::Chunk { index: source.read - 1, data }).await?;
        }
        if source.eof && !done_sent {
            let done = StreamFrame::Done { chunks: source.read, data_crc: source.data_crc };
            conn.send(&done).await?;
            done_sent = true;
        }
        let wait =
            if done_sent && source.window.is_empty() { INSTALL_TIMEOUT } else { PROGRESS_TIMEOUT };
        match conn.recv(wait).await?.frame {
            StreamFrame::Ack { written } => source.acknowledge(written)?,
            StreamFrame::Installed if done_sent && source.window.is_empty() => return Ok(()),
            StreamFrame::Refused(reason) => {
                return Err(TransferError::Fatal(format!("the receiver refused: {reason}")));
            }
            other => return Err(protocol(&other, "Ack or Installed")),
        }
    }
}

fn protocol(got: &StreamFrame, expected: &str) -> TransferError {
    TransferError::Protocol(format!("{} frame where {expected} was expected", got.name()))
}

/// Failed transfers in a row, per follower, and the wait they call for before the next one.
#[derive(Default, Clone)]
pub struct TransferBackoff {
    failures: Arc<Mutex<BTreeMap<NodeId, u32>>>,
}

impl TransferBackoff {
    /// How long a new transfer to `to` waits before it starts: nothing after a success,
    /// [`FAILED_TRANSFER_DELAY_MIN`] after one failure, doubling up to
    /// [`FAILED_TRANSFER_DELAY_MAX`].
    pub fn delay(&self, to: NodeId) -> Duration {
        let n = self.failures.lock().unwrap_or_else(|e| e.into_inner()).get(&to).copied();
        match n {
            None | Some(0) => Duration::ZERO,
            Some(n) => FAILED_TRANSFER_DELAY_MIN
                .saturating_mul(1 << (n - 1).min(16))
                .min(FAILED_TRANSFER_DELAY_MAX),
        }
    }

    /// Records how a transfer to `to` ended.
    pub fn record(&self, to: NodeId, status: SnapshotStatus) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match status {
            SnapshotStatus::Delivered => {
                failures.remove(&to);
            }
            SnapshotStatus::Failed => *failures.entry(to).or_default() += 1,
        }
    }
}

// ----- Receiving --------------------------------------------------------------------------------

/// What a receiving member needs from its replica: a staging file for an offered snapshot, and
/// a way to step the message once the file is in place.
pub trait SnapshotSink: Send + Sync + 'static {
    /// A writer for the snapshot `meta` names, in this member's data directory.
    fn writer(
        &self,
        meta: SnapshotMeta,
    ) -> impl std::future::Future<Output = Result<SnapshotWriter, String>> + Send;
    /// Hands the `Snapshot` message to the replica, its data now durable.
    fn deliver(&self, msg: Message)
    -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// A transfer that lost its connection, kept for the sender to resume.
struct Partial {
    snapshot: EntryId,
    writer: SnapshotWriter,
    written: u64,
    idle_since: Instant,
}

/// The partial transfers a member holds, one per sender at most (a newer snapshot from the
/// same sender replaces an older one).
#[derive(Clone)]
pub struct Partials {
    inner: Arc<Mutex<BTreeMap<NodeId, Partial>>>,
    idle_max: Duration,
}

impl Default for Partials {
    /// Partials kept for [`PARTIAL_IDLE_MAX`].
    fn default() -> Partials {
        Partials::with_idle_max(PARTIAL_IDLE_MAX)
    }
}

impl Partials {
    /// Partials kept for `idle_max` after their connection dropped.
    pub fn with_idle_max(idle_max: Duration) -> Partials {
        Partials { inner: Arc::default(), idle_max }
    }

    /// The partial transfer of `snapshot` from `from`, if one is kept. Any other partial from
    /// `from`, and any idle for longer than the limit, is given up (its file removed).
    fn take(&self, from: NodeId, snapshot: EntryId) -> Option<Partial> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let expired: Vec<NodeId> = map
            .iter()
            .filter(|(id, p)| {
                now.duration_since(p.idle_since) > self.idle_max
                    || (**id == from && p.snapshot != snapshot)
            })
            .map(|(id, _)| *id)
            .collect();
        let found = map.remove(&from).filter(|p| p.snapshot == snapshot);
        let dropped: Vec<Partial> = expired.iter().filter_map(|id| map.remove(id)).collect();
        drop(map);
        for p in dropped {
            abort(p.writer);
        }
        found
    }

    fn keep(&self, from: NodeId, mut partial: Partial) {
        partial.idle_since = Instant::now();
        let old = self.inner.lock().unwrap_or_else(|e| e.into_inner()).insert(from, partial);
        if let Some(old) = old {
            abort(old.writer);
        }
    }

    /// Partial transfers held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn abort(writer: SnapshotWriter) {
    if let Err(e) = writer.abort() {
        tracing::warn!("cannot remove an abandoned snapshot transfer's file: {e}");
    }
}

/// How a received transfer ended.
#[derive(Debug)]
pub enum ReceiveOutcome {
    /// The snapshot is in place and its message was delivered.
    Installed(EntryId),
    /// The connection ended mid-way; what was written is kept for a resume.
    Interrupted(String),
    /// The transfer was refused or failed for good.
    Failed(String),
}

/// Serves one inbound snapshot stream connection (its first bytes already in `buf`) for the
/// member `codec` speaks for. `stream` is a TCP stream or a [`PeerStream`] (TLS).
pub async fn receive_snapshot(
    stream: impl Into<PeerStream>,
    buf: BytesMut,
    codec: StreamCodec,
    sink: &impl SnapshotSink,
    partials: &Partials,
) -> ReceiveOutcome {
    let mut conn = Conn::new(stream.into(), buf, codec, 0);
    let offer = match conn.recv(RECEIVE_TIMEOUT).await {
        Ok(f) => f,
        Err(e) => return ReceiveOutcome::Failed(format!("no offer: {e}")),
    };
    conn.group_id = offer.group_id;
    let msg = match offer.frame {
        StreamFrame::Offer(m) => m,
        other => return ReceiveOutcome::Failed(protocol(&other, "Offer").to_string()),
    };
    let meta = match &msg.body {
        MessageBody::Snapshot { meta }
            if msg.from.0 == offer.from_member && msg.to.0 == codec.member_id =>
        {
            meta.clone()
        }
        _ => {
            let reason = format!("not a snapshot from {} to this member", format_id(msg.from.0));
            let _ = conn.send(&StreamFrame::Refused(reason.clone())).await;
            return ReceiveOutcome::Failed(reason);
        }
    };
    let snapshot = meta.last_included;
    let mut partial = match partials.take(msg.from, snapshot) {
        Some(p) => p,
        None => match sink.writer(meta).await {
            Ok(writer) => Partial { snapshot, writer, written: 0, idle_since: Instant::now() },
            Err(reason) => {
                let _ = conn.send(&StreamFrame::Refused(reason.clone())).await;
                return ReceiveOutcome::Failed(reason);
            }
        },
    };
    if let Err(e) = conn.send(&StreamFrame::Resume { next: partial.written }).await {
        partials.keep(msg.from, partial);
        return ReceiveOutcome::Interrupted(e.to_string());
    }
    loop {
        let frame = match conn.recv(RECEIVE_TIMEOUT).await {
            Ok(f) => f.frame,
            Err(e) => {
                partials.keep(msg.from, partial);
                return ReceiveOutcome::Interrupted(e.to_string());
            }
        };
        match frame {
            StreamFrame::Chunk { index, data } if index == partial.written => {
                let writer = partial.writer;
                let (writer, result) = match tokio::task::spawn_blocking(move || {
                    let mut writer = writer;
                    let r = writer.write_chunk(&data);
                    (writer, r)
                })
                .await
                {
                    Ok(x) => x,
                    Err(e) => return ReceiveOutcome::Failed(format!("write task failed: {e}")),
                };
                partial.writer = writer;
                // The fault suite's crash in the middle of an install: a staged partial file.
                tenure_storage::failpoint!("snapshot-chunk-written");
                match result {
                    Ok(()) => partial.written += 1,
                    Err(e) => {
                        let reason = format!("cannot write the snapshot: {e}");
                        let _ = conn.send(&StreamFrame::Refused(reason.clone())).await;
                        abort(partial.writer);
                        return ReceiveOutcome::Failed(reason);
                    }
                }
                if let Err(e) = conn.send(&StreamFrame::Ack { written: partial.written }).await {
                    partials.keep(msg.from, partial);
                    return ReceiveOutcome::Interrupted(e.to_string());
                }
            }
            StreamFrame::Done { chunks, data_crc } => {
                let received_crc = partial.writer.data_crc();
                if chunks != partial.written || data_crc != received_crc {
                    let reason = format!(
                        "the snapshot does not check out: {chunks} chunks with CRC {data_crc:08x} \
                         sent, {} chunks with CRC {:08x} received",
                        partial.written, received_crc
                    );
                    let _ = conn.send(&StreamFrame::Refused(reason.clone())).await;
                    abort(partial.writer);
                    return ReceiveOutcome::Failed(reason);
                }
                let writer = partial.writer;
                let sealed = tokio::task::spawn_blocking(move || writer.finish()).await;
                match sealed {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        let reason = format!("cannot seal the snapshot: {e}");
                        let _ = conn.send(&StreamFrame::Refused(reason.clone())).await;
                        return ReceiveOutcome::Failed(reason);
                    }
                    Err(e) => return ReceiveOutcome::Failed(format!("seal task failed: {e}")),
                }
                // Sealed and renamed into place, the snapshot message not yet stepped.
                tenure_storage::failpoint!("snapshot-sealed-before-step");
                if let Err(reason) = sink.deliver(msg).await {
                    let _ = conn.send(&StreamFrame::Refused(reason.clone())).await;
                    return ReceiveOutcome::Failed(reason);
                }
                let _ = conn.send(&StreamFrame::Installed).await;
                return ReceiveOutcome::Installed(snapshot);
            }
            other => {
                // Out of order or unexpected: a broken sender. Keep what was written; a resume
                // restarts from the last chunk written.
                let e = match other {
                    StreamFrame::Chunk { index, .. } => format!(
                        "chunk {index} arrived where chunk {} was expected",
                        partial.written
                    ),
                    other => protocol(&other, "Chunk or Done").to_string(),
                };
                partials.keep(msg.from, partial);
                return ReceiveOutcome::Interrupted(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_transfers_wait_longer_each_time_and_a_success_resets_the_wait() {
        let b = TransferBackoff::default();
        let (n2, n3) = (NodeId(2), NodeId(3));
        assert_eq!(b.delay(n2), Duration::ZERO, "a first transfer starts at once");
        let mut waits = Vec::new();
        for _ in 0..8 {
            b.record(n2, SnapshotStatus::Failed);
            waits.push(b.delay(n2).as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(b.delay(n3), Duration::ZERO, "per follower");
        b.record(n2, SnapshotStatus::Delivered);
        assert_eq!(b.delay(n2), Duration::ZERO);
        for _ in 0..100 {
            b.record(n3, SnapshotStatus::Failed);
        }
        assert_eq!(b.delay(n3), FAILED_TRANSFER_DELAY_MAX, "no overflow after many failures");
    }
}
