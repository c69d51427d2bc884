//! The peer wire format: a compact, versioned binary encoding of [`tenure_raft::Message`] and
//! the frames that carry batches of them between members over TCP.
//!
//! # Frame layout (version 2)
//!
//! Every frame is a fixed 40-byte header followed by the payload. Integers in the header are
//! little-endian.
//!
//! ```text
//! offset size field
//!      0    4 magic            b"TNRW"
//!      4    1 version          2 (WIRE_VERSION)
//!      5    1 flags            bit 0: keepalive (below); every other bit is reserved and clear
//!      6    2 message_count    messages in the payload
//!      8    8 cluster_id       the sender's cluster; a mismatch refuses the frame
//!     16    8 group_id         which Raft group the messages belong to
//!     24    8 from_member      the sender's member id; every message's `from` must equal it
//!     32    4 payload_bytes    length of the payload, at most the decoder's limit
//!     36    4 crc32c           CRC-32C of header bytes 0..36, then of the payload
//!     40    - payload          message_count encoded messages, back to back
//! ```
//!
//! # Two kinds of frame, one per direction
//!
//! A message connection is dialled by the member that sends the messages. It writes
//! **message frames** (flags 0). The member that accepted it writes **keepalive frames**
//! back (flag bit 0 set, no messages, no payload, group 0, `from_member` its own id) every
//! heartbeat interval, so that the dialler can tell a live peer from a dead, paused or
//! unreachable one by the silence (`crate::peer::transport`). Each side decodes only the kind
//! it expects: [`FrameCodec::decode_frame`] refuses a keepalive and
//! [`FrameCodec::decode_keepalive`] refuses a message frame.
//!
//! Versions: 1 had message frames only and one-way connections. Version 2 added keepalives.
//! A member refuses any other version at the first header: a version-1 receiver would never
//! write keepalives, so a version-2 sender would take it for dead every election timeout; a
//! clear "unsupported wire version" error is better than a connection that half works.
//!
//! # Message encoding
//!
//! ```text
//! message := tag:u8 from:u64le to:u64le term:varint body
//! entry   := kind:u8 term:varint index:varint len:varint data[len]
//! bool    := 0 | 1
//! ```
//! Bodies by tag: 1 PreVote `last.term last.index`; 2 PreVoteResponse `granted`; 3 Vote
//! `last.term last.index transfer`; 4 VoteResponse `granted`; 5 Append `prev.term prev.index
//! commit count entry*`; 6 AppendResponse `0 match` or `1 rejected hint.term hint.index
//! last_index`; 7 Heartbeat `commit read_round`; 8 HeartbeatResponse `read_round`; 9 Propose
//! `count (len data)*`; 10 ReadIndex `id`; 11 ReadIndexResponse `id (0 | 1 index)`;
//! 12 TimeoutNow (no body); 13 Snapshot `last.term last.index` and the membership's three id
//! sets; 14 App `len data` (the replica's own messages: lease renewals forwarded to the leader
//! and their answers). Numbers other than ids are unsigned LEB128 varints; ids are fixed
//! 8 bytes because member ids are hashes and would take 9–10 varint bytes.
//!
//! # Guarantees
//!
//! - Decoding never panics: truncated, oversized, corrupted or hostile input is a
//!   [`WireError`] that says what was wrong. Allocation is bounded by the bytes present, not
//!   by counts the input claims.
//! - Entry and proposal payloads decoded from a frame are [`Bytes`] slices of the received
//!   buffer: no copy.
//! - A frame from another cluster, or claiming messages from a member other than its sender,
//!   is refused (a misconfigured peer is told apart from a corrupted stream).
//! - Raft node ids are member ids: a message's `from`/`to` are the members' 64-bit ids.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use tenure_raft::{LogIndex, Message, MessageBody, NodeId, Term};
//! use tenure_server::peer::wire::FrameCodec;
//!
//! let (cluster, n1, n2) = (0xc1, 0x11, 0x22);
//! let heartbeat = Message {
//!     from: NodeId(n1),
//!     to: NodeId(n2),
//!     term: Term(3),
//!     body: MessageBody::Heartbeat { commit: LogIndex(7), read_round: 0 },
//! };
//! // The sender packs everything queued for a peer into one buffer: one write.
//! let mut out = BytesMut::new();
//! let frames = FrameCodec::new(cluster, n1).encode_batch(0, &[heartbeat.clone()], &mut out)?;
//! assert_eq!(frames, 1);
//! // The receiver feeds what it read and takes whole frames out.
//! let mut received = out;
//! let frame = FrameCodec::new(cluster, n2).decode_frame(&mut received)?.expect("complete");
//! assert_eq!((frame.group_id, frame.from_member), (0, n1));
//! assert_eq!(frame.messages, vec![heartbeat]);
//! # Ok::<(), tenure_server::peer::wire::WireError>(())
//! ```

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tenure_raft::quorum::{JointConfig, MajorityConfig};
use tenure_raft::{
    Entry, EntryId, EntryKind, LogIndex, Membership, Message, MessageBody, NodeId, ReadId,
    RejectHint, SnapshotMeta, Term,
};

/// The four bytes every frame starts with.
pub const FRAME_MAGIC: [u8; 4] = *b"TNRW";
/// The wire format version this build writes and reads (2: keepalive frames).
pub const WIRE_VERSION: u8 = 2;
/// The flag bit of a keepalive frame; every other flag bit is reserved.
pub const FLAG_KEEPALIVE: u8 = 0x01;
/// Size of the fixed frame header.
pub const FRAME_HEADER_BYTES: usize = 40;
/// Default limit on one frame's payload (64 MiB): far above Raft's append size (1 MiB by
/// default) so a batch fits, far below what would let a peer exhaust memory.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = 64 << 20;
/// Most messages one frame can carry (the count is a `u16`).
pub const FRAME_MESSAGES_MAX: usize = u16::MAX as usize;

/// Why bytes could not be decoded as a frame or a message, or messages could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended before a complete value.
    #[error("truncated: needed {needed} more bytes, {available} available")]
    Truncated {
        /// Bytes the value needed.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The frame did not start with [`FRAME_MAGIC`]: the other end is not a tenure peer.
    #[error("bad frame magic {0:02x?}: the other end is not a tenure peer")]
    BadMagic([u8; 4]),
    /// The frame's version is not [`WIRE_VERSION`].
    #[error("unsupported wire version {0} (this member speaks version {WIRE_VERSION})")]
    UnsupportedVersion(u8),
    /// Reserved flag bits were set.
    #[error("reserved frame flags {0:#04x} are set")]
    ReservedFlags(u8),
    /// A frame of the other kind than this side of the connection reads: a keepalive where
    /// messages were expected, or messages where only keepalives may come.
    #[error("a {got} frame where only {expected} frames may come")]
    WrongFrameKind {
        /// The kind this side reads.
        expected: FrameKind,
        /// The kind that arrived.
        got: FrameKind,
    },
    /// A keepalive frame claimed messages or a payload.
    #[error("a keepalive frame with {message_count} messages and {payload_bytes} payload bytes")]
    KeepaliveWithPayload {
        /// The message count in the header.
        message_count: u16,
        /// The payload length in the header.
        payload_bytes: u32,
    },
    /// A keepalive came from another member than the one this connection was dialled to.
    #[error("keepalive from member {got:016x} on a connection to member {expected:016x}")]
    KeepaliveFromStranger {
        /// The member dialled.
        expected: u64,
        /// The member the keepalive names.
        got: u64,
    },
    /// The sender belongs to another cluster.
    #[error(
        "peer member {from_member:016x} is in cluster {got:016x} but this member is in \
         cluster {expected:016x}; check --initial-cluster and --initial-cluster-token"
    )]
    ClusterMismatch {
        /// This member's cluster id.
        expected: u64,
        /// The cluster id in the frame.
        got: u64,
        /// The sender's member id.
        from_member: u64,
    },
    /// The frame's payload is over the limit.
    #[error("frame payload of {bytes} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The payload length the header claims (or an encoder would need).
        bytes: u64,
        /// The limit.
        max: u32,
    },
    /// One message alone is larger than a frame may be, so it cannot be sent.
    #[error("a {kind} message of {bytes} bytes cannot fit in a frame of at most {max} bytes")]
    MessageTooLarge {
        /// The message kind.
        kind: &'static str,
        /// Its encoded size.
        bytes: usize,
        /// The frame payload limit.
        max: u32,
    },
    /// More messages than a frame header can count.
    #[error("{0} messages do not fit in one frame (at most {FRAME_MESSAGES_MAX})")]
    TooManyMessages(usize),
    /// The checksum did not match: the bytes were damaged on the way.
    #[error("frame checksum mismatch: header says {expected:08x}, bytes hash to {actual:08x}")]
    ChecksumMismatch {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of what arrived.
        actual: u32,
    },
    /// A tag byte did not name a known variant.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// What was being decoded.
        what: &'static str,
        /// The byte found.
        tag: u8,
    },
    /// A boolean byte was neither 0 nor 1.
    #[error("invalid boolean byte {0}")]
    InvalidBool(u8),
    /// A varint ran past 64 bits.
    #[error("varint longer than 64 bits")]
    VarintOverflow,
    /// Bytes were left after the last message the header counted.
    #[error("{0} bytes left after the last message")]
    TrailingBytes(usize),
    /// A snapshot message names an impossible configuration.
    #[error("invalid membership in a snapshot message: {0}")]
    InvalidMembership(String),
    /// A message claims a sender other than the frame's member.
    #[error("message from {claimed} in a frame sent by member {from_member:016x}")]
    SenderMismatch {
        /// The message's `from`.
        claimed: NodeId,
        /// The frame's sender.
        from_member: u64,
    },
}

/// What a frame carries, from its flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Raft messages, from the member that dialled the connection.
    Messages,
    /// Nothing: proof of life from the member that accepted the connection.
    Keepalive,
}

impl std::fmt::Display for FrameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameKind::Messages => "message",
            FrameKind::Keepalive => "keepalive",
        })
    }
}

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Message frame or keepalive (flag bit 0).
    pub kind: FrameKind,
    /// Messages in the payload.
    pub message_count: u16,
    /// The sender's cluster.
    pub cluster_id: u64,
    /// The Raft group of the messages.
    pub group_id: u64,
    /// The sender's member id.
    pub from_member: u64,
    /// Payload length.
    pub payload_bytes: u32,
    /// CRC-32C of header bytes 0..36 and the payload.
    pub crc32c: u32,
}

impl FrameHeader {
    /// Parses and checks the magic, version and flags of a header (the first
    /// [`FRAME_HEADER_BYTES`] of `bytes`).
    pub fn parse(bytes: &[u8]) -> Result<FrameHeader, WireError> {
        if bytes.len() < FRAME_HEADER_BYTES {
            return Err(WireError::Truncated {
                needed: FRAME_HEADER_BYTES,
                available: bytes.len(),
            });
        }
        let mut b = &bytes[..FRAME_HEADER_BYTES];
        let mut magic = [0u8; 4];
        b.copy_to_slice(&mut magic);
        if magic != FRAME_MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = b.get_u8();
        if version != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let flags = b.get_u8();
        if flags & !FLAG_KEEPALIVE != 0 {
            return Err(WireError::ReservedFlags(flags & !FLAG_KEEPALIVE));
        }
        let kind =
            if flags & FLAG_KEEPALIVE != 0 { FrameKind::Keepalive } else { FrameKind::Messages };
        let header = FrameHeader {
            kind,
            message_count: b.get_u16_le(),
            cluster_id: b.get_u64_le(),
            group_id: b.get_u64_le(),
            from_member: b.get_u64_le(),
            payload_bytes: b.get_u32_le(),
            crc32c: b.get_u32_le(),
        };
        if kind == FrameKind::Keepalive && (header.message_count != 0 || header.payload_bytes != 0)
        {
            return Err(WireError::KeepaliveWithPayload {
                message_count: header.message_count,
                payload_bytes: header.payload_bytes,
            });
        }
        Ok(header)
    }
}

/// One decoded frame: the messages of one Raft group from one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The Raft group.
    pub group_id: u64,
    /// The sending member.
    pub from_member: u64,
    /// The messages, in send order.
    pub messages: Vec<Message>,
}

/// Frames messages for sending and checks and decodes received frames, for one member of one
/// cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    /// This member's cluster; frames from other clusters are refused.
    pub cluster_id: u64,
    /// This member's id, written as the sender of every frame it encodes.
    pub member_id: u64,
    /// Largest payload encoded or accepted.
    pub payload_bytes_max: u32,
}

impl FrameCodec {
    /// A codec for `member_id` of `cluster_id` with the default payload limit.
    pub fn new(cluster_id: u64, member_id: u64) -> FrameCodec {
        FrameCodec { cluster_id, member_id, payload_bytes_max: FRAME_PAYLOAD_BYTES_MAX }
    }

    /// Appends one frame holding `messages` of `group_id` to `out`.
    ///
    /// Fails (writing nothing) if the payload would exceed the limit or there are more than
    /// [`FRAME_MESSAGES_MAX`] messages.
    pub fn encode_frame(
        &self,
        group_id: u64,
        messages: &[Message],
        out: &mut BytesMut,
    ) -> Result<(), WireError> {
        if messages.len() > FRAME_MESSAGES_MAX {
            return Err(WireError::TooManyMessages(messages.len()));
        }
        let payload_bytes: usize = messages.iter().map(encoded_len).sum();
        if payload_bytes > self.payload_bytes_max as usize {
            return Err(WireError::FrameTooLarge {
                bytes: payload_bytes as u64,
                max: self.payload_bytes_max,
            });
        }
        let start = out.len();
        out.reserve(FRAME_HEADER_BYTES + payload_bytes);
        out.put_bytes(0, FRAME_HEADER_BYTES);
        for m in messages {
            encode_message(m, out);
        }
        debug_assert_eq!(out.len() - start - FRAME_HEADER_BYTES, payload_bytes);
        self.write_header(group_id, messages.len() as u16, &mut out[start..]);
        Ok(())
    }

    /// Appends `messages` to `out` in as few frames as the limits allow, so that one write
    /// sends them all. Returns the number of frames written.
    ///
    /// Fails (writing nothing) only if a single message is too large for any frame.
    pub fn encode_batch(
        &self,
        group_id: u64,
        messages: &[Message],
        out: &mut BytesMut,
    ) -> Result<usize, WireError> {
        let max = self.payload_bytes_max as usize;
        let start = out.len();
        let mut frames = 0;
        let mut frame_start = out.len();
        let mut count = 0usize;
        for m in messages {
            let len = encoded_len(m);
            if len > max {
                out.truncate(start);
                return Err(WireError::MessageTooLarge {
                    kind: m.body.kind(),
                    bytes: len,
                    max: self.payload_bytes_max,
                });
            }
            if count > 0 {
                let payload_bytes = out.len() - frame_start - FRAME_HEADER_BYTES;
                if payload_bytes + len > max || count == FRAME_MESSAGES_MAX {
                    self.write_header(group_id, count as u16, &mut out[frame_start..]);
                    frames += 1;
                    count = 0;
                }
            }
            if count == 0 {
                frame_start = out.len();
                out.put_bytes(0, FRAME_HEADER_BYTES);
            }
            encode_message(m, out);
            count += 1;
        }
        if count > 0 {
            self.write_header(group_id, count as u16, &mut out[frame_start..]);
            frames += 1;
        }
        Ok(frames)
    }

    /// Appends one keepalive frame to `out`: what the accepting side of a message connection
    /// writes back every heartbeat interval.
    pub fn encode_keepalive(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_bytes(0, FRAME_HEADER_BYTES);
        self.write_header_with_flags(FLAG_KEEPALIVE, 0, 0, &mut out[start..]);
    }

    /// Fills in the header of a message frame at the start of `frame` (header placeholder
    /// plus payload).
    fn write_header(&self, group_id: u64, message_count: u16, frame: &mut [u8]) {
        self.write_header_with_flags(0, group_id, message_count, frame);
    }

    fn write_header_with_flags(
        &self,
        flags: u8,
        group_id: u64,
        message_count: u16,
        frame: &mut [u8],
    ) {
        let payload_bytes = (frame.len() - FRAME_HEADER_BYTES) as u32;
        let mut h = &mut frame[..36];
        h.put_slice(&FRAME_MAGIC);
        h.put_u8(WIRE_VERSION);
        h.put_u8(flags);
        h.put_u16_le(message_count);
        h.put_u64_le(self.cluster_id);
        h.put_u64_le(group_id);
        h.put_u64_le(self.member_id);
        h.put_u32_le(payload_bytes);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&frame[..36]), &frame[FRAME_HEADER_BYTES..]);
        frame[36..40].copy_from_slice(&crc.to_le_bytes());
    }

    /// Checks a header against this member: cluster and payload limit.
    pub fn check_header(&self, h: &FrameHeader) -> Result<(), WireError> {
        if h.cluster_id != self.cluster_id {
            return Err(WireError::ClusterMismatch {
                expected: self.cluster_id,
                got: h.cluster_id,
                from_member: h.from_member,
            });
        }
        if h.payload_bytes > self.payload_bytes_max {
            return Err(WireError::FrameTooLarge {
                bytes: h.payload_bytes as u64,
                max: self.payload_bytes_max,
            });
        }
        Ok(())
    }

    /// Decodes the next message frame from a receive buffer, for a stream reader.
    ///
    /// Returns `Ok(None)` while the frame is incomplete (read more and call again), and takes
    /// the frame's bytes out of `buf` once it is complete. The header is checked as soon as it
    /// has arrived, so a frame from another cluster, over the limit or of the wrong kind is
    /// refused before its payload is buffered. After an error the stream is out of step and
    /// must be closed.
    pub fn decode_frame(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.take_frame(buf, FrameKind::Messages)? {
            None => Ok(None),
            Some((header, frame)) => self.decode_checked(header, frame).map(Some),
        }
    }

    /// Decodes the next keepalive from a receive buffer, for the dialling side of a message
    /// connection, and returns the member that wrote it. `Ok(None)` and errors as in
    /// [`FrameCodec::decode_frame`]; a message frame here is an error.
    pub fn decode_keepalive(&self, buf: &mut BytesMut) -> Result<Option<u64>, WireError> {
        let Some((header, frame)) = self.take_frame(buf, FrameKind::Keepalive)? else {
            return Ok(None);
        };
        check_crc(&header, &frame)?;
        Ok(Some(header.from_member))
    }

    /// Takes the next complete frame of kind `expected` out of `buf`, unchecked beyond its
    /// header.
    fn take_frame(
        &self,
        buf: &mut BytesMut,
        expected: FrameKind,
    ) -> Result<Option<(FrameHeader, Bytes)>, WireError> {
        if buf.len() < FRAME_HEADER_BYTES {
            // Refuse a stranger at once instead of waiting for 40 bytes it may never send.
            let n = buf.len().min(4);
            if buf[..n] != FRAME_MAGIC[..n] {
                let mut magic = [0u8; 4];
                magic[..n].copy_from_slice(&buf[..n]);
                return Err(WireError::BadMagic(magic));
            }
            return Ok(None);
        }
        let header = FrameHeader::parse(buf)?;
        self.check_header(&header)?;
        if header.kind != expected {
            return Err(WireError::WrongFrameKind { expected, got: header.kind });
        }
        let total = FRAME_HEADER_BYTES + header.payload_bytes as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        Ok(Some((header, buf.split_to(total).freeze())))
    }

    /// Decodes exactly one complete message frame held in `frame` (payloads stay slices of
    /// it).
    pub fn decode_frame_bytes(&self, frame: Bytes) -> Result<Frame, WireError> {
        let header = FrameHeader::parse(&frame)?;
        self.check_header(&header)?;
        if header.kind != FrameKind::Messages {
            return Err(WireError::WrongFrameKind {
                expected: FrameKind::Messages,
                got: header.kind,
            });
        }
        let total = FRAME_HEADER_BYTES + header.payload_bytes as usize;
        if frame.len() < total {
            return Err(WireError::Truncated { needed: total, available: frame.len() });
        }
        if frame.len() > total {
            return Err(WireError::TrailingBytes(frame.len() - total));
        }
        self.decode_checked(header, frame)
    }

    /// Verifies the checksum and decodes the payload of a frame of exactly the right length.
    fn decode_checked(&self, header: FrameHeader, frame: Bytes) -> Result<Frame, WireError> {
        check_crc(&header, &frame)?;
        let messages =
            decode_messages(frame.slice(FRAME_HEADER_BYTES..), header.message_count as usize)?;
        if let Some(m) = messages.iter().find(|m| m.from.0 != header.from_member) {
            return Err(WireError::SenderMismatch {
                claimed: m.from,
                from_member: header.from_member,
            });
        }
        Ok(Frame { group_id: header.group_id, from_member: header.from_member, messages })
    }
}

/// Verifies the checksum of a whole frame (header and payload) against its header.
fn check_crc(header: &FrameHeader, frame: &[u8]) -> Result<(), WireError> {
    let actual = crc32c::crc32c_append(crc32c::crc32c(&frame[..36]), &frame[FRAME_HEADER_BYTES..]);
    if actual != header.crc32c {
        return Err(WireError::ChecksumMismatch { expected: header.crc32c, actual });
    }
    Ok(())
}

// ---- Messages --------------------------------------------------------------------------------

const TAG_PRE_VOTE: u8 = 1;
const TAG_PRE_VOTE_RESPONSE: u8 = 2;
const TAG_VOTE: u8 = 3;
const TAG_VOTE_RESPONSE: u8 = 4;
const TAG_APPEND: u8 = 5;
const TAG_APPEND_RESPONSE: u8 = 6;
const TAG_HEARTBEAT: u8 = 7;
const TAG_HEARTBEAT_RESPONSE: u8 = 8;
const TAG_PROPOSE: u8 = 9;
const TAG_READ_INDEX: u8 = 10;
const TAG_READ_INDEX_RESPONSE: u8 = 11;
const TAG_TIMEOUT_NOW: u8 = 12;
const TAG_SNAPSHOT: u8 = 13;
const TAG_APP: u8 = 14;

/// Smallest possible encoded entry (kind, three one-byte varints); bounds preallocation.
const ENTRY_BYTES_MIN: usize = 4;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn entry_id_len(id: EntryId) -> usize {
    varint_len(id.term.0) + varint_len(id.index.0)
}

/// The three id sets of a membership, in wire order: incoming voters, outgoing voters,
/// learners.
fn membership_sets(m: &Membership) -> [&BTreeSet<NodeId>; 3] {
    [m.voters.incoming.voters(), m.voters.outgoing.voters(), &m.learners]
}

fn membership_len(m: &Membership) -> usize {
    membership_sets(m)
        .iter()
        .map(|set| {
            varint_len(set.len() as u64) + set.iter().map(|id| varint_len(id.0)).sum::<usize>()
        })
        .sum()
}

/// The exact number of bytes [`encode_message`] writes for `m`.
pub fn encoded_len(m: &Message) -> usize {
    let body = match &m.body {
        MessageBody::PreVote { last } => entry_id_len(*last),
        MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => 1,
        MessageBody::Vote { last, .. } => entry_id_len(*last) + 1,
        MessageBody::Append { prev, entries, commit } => {
            entry_id_len(*prev)
                + varint_len(commit.0)
                + varint_len(entries.len() as u64)
                + entries
                    .iter()
                    .map(|e| {
                        1 + entry_id_len(e.id) + varint_len(e.data.len() as u64) + e.data.len()
                    })
                    .sum::<usize>()
        }
        MessageBody::AppendResponse { result: Ok(index) } => 1 + varint_len(index.0),
        MessageBody::AppendResponse { result: Err(h) } => {
            1 + varint_len(h.rejected.0) + entry_id_len(h.hint) + varint_len(h.last_index.0)
        }
        MessageBody::Heartbeat { commit, read_round } => {
            varint_len(commit.0) + varint_len(*read_round)
        }
        MessageBody::HeartbeatResponse { read_round } => varint_len(*read_round),
        MessageBody::Propose { entries } => {
            varint_len(entries.len() as u64)
                + entries.iter().map(|d| varint_len(d.len() as u64) + d.len()).sum::<usize>()
        }
        MessageBody::ReadIndex { id } => varint_len(id.0),
        MessageBody::ReadIndexResponse { id, index } => {
            varint_len(id.0) + 1 + index.map_or(0, |i| varint_len(i.0))
        }
        MessageBody::TimeoutNow => 0,
        MessageBody::Snapshot { meta } => {
            entry_id_len(meta.last_included) + membership_len(&meta.membership)
        }
        MessageBody::App { data } => varint_len(data.len() as u64) + data.len(),
    };
    1 + 8 + 8 + varint_len(m.term.0) + body
}

/// Appends the encoding of one message to `out`.
pub fn encode_message(m: &Message, out: &mut BytesMut) {
    let b = &m.body;
    out.put_u8(match b {
        MessageBody::PreVote { .. } => TAG_PRE_VOTE,
        MessageBody::PreVoteResponse { .. } => TAG_PRE_VOTE_RESPONSE,
        MessageBody::Vote { .. } => TAG_VOTE,
        MessageBody::VoteResponse { .. } => TAG_VOTE_RESPONSE,
        MessageBody::Append { .. } => TAG_APPEND,
        MessageBody::AppendResponse { .. } => TAG_APPEND_RESPONSE,
        MessageBody::Heartbeat { .. } => TAG_HEARTBEAT,
        MessageBody::HeartbeatResponse { .. } => TAG_HEARTBEAT_RESPONSE,
        MessageBody::Propose { .. } => TAG_PROPOSE,
        MessageBody::ReadIndex { .. } => TAG_READ_INDEX,
        MessageBody::ReadIndexResponse { .. } => TAG_READ_INDEX_RESPONSE,
        MessageBody::TimeoutNow => TAG_TIMEOUT_NOW,
        MessageBody::Snapshot { .. } => TAG_SNAPSHOT,
        MessageBody::App { .. } => TAG_APP,
    });
    out.put_u64_le(m.from.0);
    out.put_u64_le(m.to.0);
    put_varint(out, m.term.0);
    match b {
        MessageBody::PreVote { last } => put_entry_id(out, *last),
        MessageBody::PreVoteResponse { granted } | MessageBody::VoteResponse { granted } => {
            out.put_u8(*granted as u8)
        }
        MessageBody::Vote { last, transfer } => {
            put_entry_id(out, *last);
            out.put_u8(*transfer as u8);
        }
        MessageBody::Append { prev, entries, commit } => {
            put_entry_id(out, *prev);
            put_varint(out, commit.0);
            put_varint(out, entries.len() as u64);
            for e in entries {
                out.put_u8(e.kind.code());
                put_entry_id(out, e.id);
                put_varint(out, e.data.len() as u64);
                out.extend_from_slice(&e.data);
            }
        }
        MessageBody::AppendResponse { result: Ok(index) } => {
            out.put_u8(0);
            put_varint(out, index.0);
        }
        MessageBody::AppendResponse { result: Err(h) } => {
            out.put_u8(1);
            put_varint(out, h.rejected.0);
            put_entry_id(out, h.hint);
            put_varint(out, h.last_index.0);
        }
        MessageBody::Heartbeat { commit, read_round } => {
            put_varint(out, commit.0);
            put_varint(out, *read_round);
        }
        MessageBody::HeartbeatResponse { read_round } => put_varint(out, *read_round),
        MessageBody::Propose { entries } => {
            put_varint(out, entries.len() as u64);
            for data in entries {
                put_varint(out, data.len() as u64);
                out.extend_from_slice(data);
            }
        }
        MessageBody::ReadIndex { id } => put_varint(out, id.0),
        MessageBody::ReadIndexResponse { id, index } => {
            put_varint(out, id.0);
            match index {
                None => out.put_u8(0),
                Some(i) => {
                    out.put_u8(1);
                    put_varint(out, i.0);
                }
            }
        }
        MessageBody::TimeoutNow => {}
        MessageBody::App { data } => {
            put_varint(out, data.len() as u64);
            out.extend_from_slice(data);
        }
        MessageBody::Snapshot { meta } => {
            put_entry_id(out, meta.last_included);
            for set in membership_sets(&meta.membership) {
                put_varint(out, set.len() as u64);
                for id in set {
                    put_varint(out, id.0);
                }
            }
        }
    }
}

/// Decodes exactly `count` messages filling all of `payload`. Entry and proposal data are
/// slices of `payload`.
pub fn decode_messages(payload: Bytes, count: usize) -> Result<Vec<Message>, WireError> {
    let mut r = Reader { buf: payload, pos: 0 };
    // Every message takes at least 18 bytes (tag, two ids, a term byte).
    let mut messages = Vec::with_capacity(count.min(r.remaining() / 18));
    for _ in 0..count {
        messages.push(r.message()?);
    }
    if r.remaining() > 0 {
        return Err(WireError::TrailingBytes(r.remaining()));
    }
    Ok(messages)
}

/// Decodes one message that fills all of `bytes`.
pub fn decode_message(bytes: Bytes) -> Result<Message, WireError> {
    let mut messages = decode_messages(bytes, 1)?;
    Ok(messages.pop().expect("decode_messages returns exactly count messages"))
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn put_entry_id(out: &mut BytesMut, id: EntryId) {
    put_varint(out, id.term.0);
    put_varint(out, id.index.0);
}

/// A cursor over a received payload; slices share its buffer.
struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.remaining() < n {
            Err(WireError::Truncated { needed: n, available: self.remaining() })
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        let b = self.buf[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn u64_le(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        Ok(u64::from_le_bytes(raw))
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = (b & 0x7f) as u64;
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && bits > 1 {
                return Err(WireError::VarintOverflow);
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(WireError::VarintOverflow)
    }

    fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(WireError::InvalidBool(b)),
        }
    }

    fn entry_id(&mut self) -> Result<EntryId, WireError> {
        Ok(EntryId::new(Term(self.varint()?), LogIndex(self.varint()?)))
    }

    /// A length-prefixed byte string, as a slice of the buffer (no copy).
    fn data(&mut self) -> Result<Bytes, WireError> {
        let len = self.varint()?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.need(len)?;
        let data = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(data)
    }

    /// A log entry's payload, copied into an allocation of its own: the log caches entries
    /// and the state machine keeps values as slices of them (`Store::apply_shared`), so a
    /// slice of the frame would keep the whole frame alive for as long as any of its values.
    fn entry_data(&mut self) -> Result<Bytes, WireError> {
        Ok(Bytes::copy_from_slice(&self.data()?))
    }

    /// A count of items each taking at least `item_bytes_min`, refused if the rest of the
    /// buffer could not hold them (so a hostile count cannot force a huge allocation).
    fn count(&mut self, item_bytes_min: usize) -> Result<usize, WireError> {
        let n = self.varint()?;
        let fits = self.remaining() / item_bytes_min;
        if n > fits as u64 {
            return Err(WireError::Truncated {
                needed: usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(item_bytes_min),
                available: self.remaining(),
            });
        }
        Ok(n as usize)
    }

    fn message(&mut self) -> Result<Message, WireError> {
        let tag = self.u8()?;
        let from = NodeId(self.u64_le()?);
        let to = NodeId(self.u64_le()?);
        let term = Term(self.varint()?);
        let body = match tag {
            TAG_PRE_VOTE => MessageBody::PreVote { last: self.entry_id()? },
            TAG_PRE_VOTE_RESPONSE => MessageBody::PreVoteResponse { granted: self.bool()? },
            TAG_VOTE => MessageBody::Vote { last: self.entry_id()?, transfer: self.bool()? },
            TAG_VOTE_RESPONSE => MessageBody::VoteResponse { granted: self.bool()? },
            TAG_APPEND => {
                let prev = self.entry_id()?;
                let commit = LogIndex(self.varint()?);
                let n = self.count(ENTRY_BYTES_MIN)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let code = self.u8()?;
                    let kind = EntryKind::from_code(code)
                        .ok_or(WireError::UnknownTag { what: "entry kind", tag: code })?;
                    let id = self.entry_id()?;
                    entries.push(Entry { id, kind, data: self.entry_data()? });
                }
                MessageBody::Append { prev, entries, commit }
            }
            TAG_APPEND_RESPONSE => match self.u8()? {
                0 => MessageBody::AppendResponse { result: Ok(LogIndex(self.varint()?)) },
                1 => MessageBody::AppendResponse {
                    result: Err(RejectHint {
                        rejected: LogIndex(self.varint()?),
                        hint: self.entry_id()?,
                        last_index: LogIndex(self.varint()?),
                    }),
                },
                t => return Err(WireError::UnknownTag { what: "append result", tag: t }),
            },
            TAG_HEARTBEAT => MessageBody::Heartbeat {
                commit: LogIndex(self.varint()?),
                read_round: self.varint()?,
            },
            TAG_HEARTBEAT_RESPONSE => MessageBody::HeartbeatResponse { read_round: self.varint()? },
            TAG_PROPOSE => {
                let n = self.count(1)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(self.entry_data()?);
                }
                MessageBody::Propose { entries }
            }
            TAG_READ_INDEX => MessageBody::ReadIndex { id: ReadId(self.varint()?) },
            TAG_READ_INDEX_RESPONSE => {
                let id = ReadId(self.varint()?);
                let index = match self.u8()? {
                    0 => None,
                    1 => Some(LogIndex(self.varint()?)),
                    t => return Err(WireError::UnknownTag { what: "read index result", tag: t }),
                };
                MessageBody::ReadIndexResponse { id, index }
            }
            TAG_TIMEOUT_NOW => MessageBody::TimeoutNow,
            TAG_APP => MessageBody::App { data: self.data()? },
            TAG_SNAPSHOT => {
                let last_included = self.entry_id()?;
                let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
                for set in &mut sets {
                    let n = self.count(1)?;
                    for _ in 0..n {
                        set.insert(NodeId(self.varint()?));
                    }
                }
                let [incoming, outgoing, learners] = sets;
                let membership = Membership {
                    voters: JointConfig {
                        incoming: MajorityConfig::new(incoming),
                        outgoing: MajorityConfig::new(outgoing),
                    },
                    learners,
                };
                membership.validate().map_err(WireError::InvalidMembership)?;
                MessageBody::Snapshot { meta: SnapshotMeta { last_included, membership } }
            }
            t => return Err(WireError::UnknownTag { what: "message", tag: t }),
        };
        Ok(Message { from, to, term, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CLUSTER: u64 = 0xcdf8_1819_4e3a_8c32;
    const ME: u64 = 0x8e9e_05c5_2164_694d;

    fn codec() -> FrameCodec {
        FrameCodec::new(CLUSTER, ME)
    }

    fn msg(body: MessageBody) -> Message {
        Message { from: NodeId(ME), to: NodeId(u64::MAX), term: Term(7), body }
    }

    fn eid(t: u64, i: u64) -> EntryId {
        EntryId::new(Term(t), LogIndex(i))
    }

    /// One message of every variant (and both arms of the two with a result).
    fn every_variant() -> Vec<Message> {
        let entries = vec![
            Entry { id: eid(3, 6), kind: EntryKind::Noop, data: Bytes::new() },
            Entry { id: eid(3, 7), kind: EntryKind::Normal, data: Bytes::from_static(b"put k v") },
            Entry { id: eid(3, 8), kind: EntryKind::Config, data: Bytes::from(vec![0xff; 300]) },
        ];
        [
            MessageBody::PreVote { last: eid(2, 5) },
            MessageBody::PreVoteResponse { granted: true },
            MessageBody::Vote { last: eid(u64::MAX, u64::MAX), transfer: true },
            MessageBody::VoteResponse { granted: false },
            MessageBody::Append { prev: eid(2, 5), entries, commit: LogIndex(5) },
            MessageBody::Append { prev: eid(0, 0), entries: vec![], commit: LogIndex(0) },
            MessageBody::AppendResponse { result: Ok(LogIndex(8)) },
            MessageBody::AppendResponse {
                result: Err(RejectHint {
                    rejected: LogIndex(9),
                    hint: eid(2, 4),
                    last_index: LogIndex(4),
                }),
            },
            MessageBody::Heartbeat { commit: LogIndex(5), read_round: 12 },
            MessageBody::HeartbeatResponse { read_round: 12 },
            MessageBody::Propose { entries: vec![Bytes::from_static(b"a"), Bytes::new()] },
            MessageBody::ReadIndex { id: ReadId(99) },
            MessageBody::ReadIndexResponse { id: ReadId(99), index: Some(LogIndex(8)) },
            MessageBody::ReadIndexResponse { id: ReadId(100), index: None },
            MessageBody::TimeoutNow,
        ]
        .into_iter()
        .map(msg)
        .collect()
    }

    #[test]
    fn every_variant_round_trips_alone_and_in_one_frame() {
        let all = every_variant();
        for m in &all {
            let mut out = BytesMut::new();
            encode_message(m, &mut out);
            assert_eq!(&decode_message(out.freeze()).unwrap(), m);
        }
        let mut out = BytesMut::new();
        codec().encode_frame(42, &all, &mut out).unwrap();
        let frame = codec().decode_frame_bytes(out.freeze()).unwrap();
        assert_eq!(frame, Frame { group_id: 42, from_member: ME, messages: all });
    }

    #[test]
    fn frame_header_has_the_documented_layout() {
        let mut out = BytesMut::new();
        codec().encode_frame(0x0102, &[msg(MessageBody::TimeoutNow)], &mut out).unwrap();
        assert_eq!(&out[0..4], b"TNRW");
        assert_eq!(out[4], WIRE_VERSION);
        assert_eq!(out[5], 0);
        assert_eq!(u16::from_le_bytes([out[6], out[7]]), 1);
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), CLUSTER);
        assert_eq!(u64::from_le_bytes(out[16..24].try_into().unwrap()), 0x0102);
        assert_eq!(u64::from_le_bytes(out[24..32].try_into().unwrap()), ME);
        let payload = u32::from_le_bytes(out[32..36].try_into().unwrap()) as usize;
        assert_eq!(out.len(), FRAME_HEADER_BYTES + payload);
        // tag, from, to, term: 1 + 8 + 8 + 1 bytes.
        assert_eq!(payload, 18);
    }

    #[test]
    fn decoded_entry_payloads_are_copied_out_of_the_received_buffer() {
        let big = Bytes::from(vec![7u8; 4096]);
        let m = msg(MessageBody::Append {
            prev: eid(1, 1),
            entries: vec![Entry { id: eid(1, 2), kind: EntryKind::Normal, data: big }],
            commit: LogIndex(1),
        });
        let mut out = BytesMut::new();
        codec().encode_frame(1, std::slice::from_ref(&m), &mut out).unwrap();
        let received = out.freeze();
        let range = received.as_ptr_range();
        let frame = codec().decode_frame_bytes(received.clone()).unwrap();
        let MessageBody::Append { entries, .. } = &frame.messages[0].body else { panic!() };
        // The state machine keeps values as slices of entries: a slice of the frame would keep
        // the whole frame alive for as long as one of its values.
        assert!(!range.contains(&entries[0].data.as_ptr()), "payload is a copy, not a slice");
        assert_eq!(entries[0].data, Bytes::from(vec![7u8; 4096]));
    }

    #[test]
    fn streaming_decoder_waits_for_whole_frames_and_takes_them_in_order() {
        let all = every_variant();
        let mut wire = BytesMut::new();
        codec().encode_frame(1, &all[..3], &mut wire).unwrap();
        codec().encode_frame(2, &all[3..], &mut wire).unwrap();
        let wire = wire.freeze();
        // Feed one byte at a time: no frame until it is complete, then exactly the frames.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = codec().decode_frame(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].group_id, &frames[0].messages[..]), (1, &all[..3]));
        assert_eq!((frames[1].group_id, &frames[1].messages[..]), (2, &all[3..]));
    }

    #[test]
    fn peer_from_another_cluster_is_refused_with_a_clear_error() {
        let stranger = FrameCodec::new(0xdead, 5);
        let mut out = BytesMut::new();
        stranger
            .encode_frame(
                1,
                &[Message { from: NodeId(5), ..msg(MessageBody::TimeoutNow) }],
                &mut out,
            )
            .unwrap();
        // Only the header has arrived: already refused.
        let mut partial = BytesMut::from(&out[..FRAME_HEADER_BYTES]);
        let err = codec().decode_frame(&mut partial).unwrap_err();
        assert_eq!(
            err,
            WireError::ClusterMismatch { expected: CLUSTER, got: 0xdead, from_member: 5 }
        );
        assert!(err.to_string().contains("--initial-cluster-token"), "{err}");
    }

    #[test]
    fn non_peer_bytes_are_refused_at_once() {
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(codec().decode_frame(&mut http), Err(WireError::BadMagic(_))));
        let mut two = BytesMut::from(&b"TX"[..]);
        assert!(matches!(codec().decode_frame(&mut two), Err(WireError::BadMagic(_))));
        let mut ok_so_far = BytesMut::from(&b"TNR"[..]);
        assert_eq!(codec().decode_frame(&mut ok_so_far), Ok(None));
    }

    #[test]
    fn spoofed_sender_is_refused() {
        let mut out = BytesMut::new();
        let spoof = Message { from: NodeId(3), ..msg(MessageBody::TimeoutNow) };
        codec().encode_frame(1, &[spoof], &mut out).unwrap();
        assert_eq!(
            codec().decode_frame_bytes(out.freeze()),
            Err(WireError::SenderMismatch { claimed: NodeId(3), from_member: ME })
        );
    }

    #[test]
    fn oversized_frames_are_refused_on_both_sides() {
        let small = FrameCodec { payload_bytes_max: 64, ..codec() };
        let big = msg(MessageBody::Propose { entries: vec![Bytes::from(vec![0; 100])] });
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(matches!(
            small.encode_frame(1, std::slice::from_ref(&big), &mut out),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert_eq!(&out[..], b"keep", "a failed encode writes nothing");
        assert!(matches!(
            small.encode_batch(1, &[msg(MessageBody::TimeoutNow), big.clone()], &mut out),
            Err(WireError::MessageTooLarge { kind: "Propose", .. })
        ));
        assert_eq!(&out[..], b"keep", "frames already written for the batch are rolled back");
        // A frame a lenient sender produced is refused by a strict receiver from its header.
        let mut wire = BytesMut::new();
        codec().encode_frame(1, &[big], &mut wire).unwrap();
        let mut header_only = BytesMut::from(&wire[..FRAME_HEADER_BYTES]);
        assert!(
            matches!(small.decode_frame(&mut header_only), Err(WireError::FrameTooLarge { bytes, max: 64 }) if bytes > 64)
        );
    }

    #[test]
    fn batches_split_at_the_limit_and_decode_back_in_order() {
        let small = FrameCodec { payload_bytes_max: 200, ..codec() };
        let messages: Vec<Message> = (0..20)
            .map(|i| msg(MessageBody::Propose { entries: vec![Bytes::from(vec![i as u8; 40])] }))
            .collect();
        let mut out = BytesMut::new();
        let frames = small.encode_batch(9, &messages, &mut out).unwrap();
        assert!(frames > 1, "200-byte frames cannot hold 20 60-byte messages");
        let mut decoded = Vec::new();
        let mut n = 0;
        while let Some(f) = small.decode_frame(&mut out).unwrap() {
            assert_eq!(f.group_id, 9);
            decoded.extend(f.messages);
            n += 1;
        }
        assert_eq!(n, frames);
        assert_eq!(decoded, messages);
        let mut empty = BytesMut::new();
        assert_eq!(small.encode_batch(9, &[], &mut empty), Ok(0));
        assert!(empty.is_empty());
    }

    #[test]
    fn corrupted_payload_fails_the_checksum() {
        let mut out = BytesMut::new();
        codec().encode_frame(1, &every_variant(), &mut out).unwrap();
        let last = out.len() - 1;
        out[last] ^= 1;
        assert!(matches!(
            codec().decode_frame_bytes(out.freeze()),
            Err(WireError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn malformed_messages_give_specific_errors() {
        let mut tag = BytesMut::new();
        encode_message(&msg(MessageBody::TimeoutNow), &mut tag);
        tag[0] = 200;
        assert_eq!(
            decode_message(tag.freeze()),
            Err(WireError::UnknownTag { what: "message", tag: 200 })
        );

        let mut b = BytesMut::new();
        encode_message(&msg(MessageBody::VoteResponse { granted: true }), &mut b);
        let last = b.len() - 1;
        b[last] = 2;
        assert_eq!(decode_message(b.freeze()), Err(WireError::InvalidBool(2)));

        let mut v = BytesMut::new();
        encode_message(&msg(MessageBody::HeartbeatResponse { read_round: 0 }), &mut v);
        v.truncate(v.len() - 1);
        v.extend_from_slice(&[0xff; 11]);
        assert_eq!(decode_message(v.freeze()), Err(WireError::VarintOverflow));

        // A count far beyond the bytes present is refused before allocating.
        let mut c = BytesMut::new();
        encode_message(&msg(MessageBody::Propose { entries: vec![] }), &mut c);
        c.truncate(c.len() - 1);
        put_varint(&mut c, u64::MAX);
        assert!(matches!(decode_message(c.freeze()), Err(WireError::Truncated { .. })));

        let mut t = BytesMut::new();
        encode_message(&msg(MessageBody::TimeoutNow), &mut t);
        t.put_u8(0);
        assert_eq!(decode_message(t.freeze()), Err(WireError::TrailingBytes(1)));
    }

    #[test]
    fn wrong_version_and_flags_are_named() {
        let mut out = BytesMut::new();
        codec().encode_frame(1, &[], &mut out).unwrap();
        // Version 1 (no keepalives) and any later version are refused at the header.
        for version in [1, 3] {
            let mut other = out.clone();
            other[4] = version;
            assert_eq!(FrameHeader::parse(&other), Err(WireError::UnsupportedVersion(version)));
            let mut stream = other.clone();
            assert_eq!(
                codec().decode_frame(&mut stream),
                Err(WireError::UnsupportedVersion(version))
            );
        }
        let mut flags = out.clone();
        flags[5] = 0x80 | FLAG_KEEPALIVE;
        assert_eq!(FrameHeader::parse(&flags), Err(WireError::ReservedFlags(0x80)));
        // An empty message frame is still valid.
        assert_eq!(codec().decode_frame_bytes(out.freeze()).unwrap().messages, vec![]);
    }

    #[test]
    fn keepalive_has_the_documented_layout_and_decodes_back() {
        let mut out = BytesMut::new();
        codec().encode_keepalive(&mut out);
        assert_eq!(out.len(), FRAME_HEADER_BYTES);
        assert_eq!(&out[0..4], b"TNRW");
        assert_eq!((out[4], out[5]), (WIRE_VERSION, FLAG_KEEPALIVE));
        assert_eq!(&out[6..8], &[0, 0], "no messages");
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), CLUSTER);
        assert_eq!(u64::from_le_bytes(out[16..24].try_into().unwrap()), 0, "group 0");
        assert_eq!(u64::from_le_bytes(out[24..32].try_into().unwrap()), ME);
        assert_eq!(&out[32..36], &[0; 4], "no payload");
        let header = FrameHeader::parse(&out).unwrap();
        assert_eq!(header.kind, FrameKind::Keepalive);

        // Two keepalives and half of a third, fed to the dialler's decoder.
        let mut stream = BytesMut::new();
        codec().encode_keepalive(&mut stream);
        codec().encode_keepalive(&mut stream);
        stream.extend_from_slice(&out[..20]);
        assert_eq!(codec().decode_keepalive(&mut stream), Ok(Some(ME)));
        assert_eq!(codec().decode_keepalive(&mut stream), Ok(Some(ME)));
        assert_eq!(codec().decode_keepalive(&mut stream), Ok(None));
        stream.extend_from_slice(&out[20..]);
        assert_eq!(codec().decode_keepalive(&mut stream), Ok(Some(ME)));
        assert!(stream.is_empty());
    }

    #[test]
    fn each_side_refuses_the_other_kind_of_frame() {
        let mut keepalive = BytesMut::new();
        codec().encode_keepalive(&mut keepalive);
        let mut messages = BytesMut::new();
        codec().encode_frame(0, &[], &mut messages).unwrap();
        let wrong = |expected, got| WireError::WrongFrameKind { expected, got };
        // Refused from the header alone, before any payload.
        assert_eq!(
            codec().decode_frame(&mut keepalive.clone()).unwrap_err(),
            wrong(FrameKind::Messages, FrameKind::Keepalive)
        );
        assert_eq!(
            codec().decode_frame_bytes(keepalive.clone().freeze()).unwrap_err(),
            wrong(FrameKind::Messages, FrameKind::Keepalive)
        );
        assert_eq!(
            codec().decode_keepalive(&mut messages.clone()).unwrap_err(),
            wrong(FrameKind::Keepalive, FrameKind::Messages)
        );
        // A keepalive from another cluster is refused like any frame.
        let mut stranger = BytesMut::new();
        FrameCodec::new(0xdead, 5).encode_keepalive(&mut stranger);
        assert!(matches!(
            codec().decode_keepalive(&mut stranger),
            Err(WireError::ClusterMismatch { got: 0xdead, .. })
        ));
    }

    #[test]
    fn a_keepalive_with_a_payload_or_a_bad_checksum_is_refused() {
        let mut out = BytesMut::new();
        codec().encode_keepalive(&mut out);
        let mut counted = out.clone();
        counted[6] = 1;
        assert_eq!(
            FrameHeader::parse(&counted),
            Err(WireError::KeepaliveWithPayload { message_count: 1, payload_bytes: 0 })
        );
        let mut sized = out.clone();
        sized[32] = 8;
        sized.extend_from_slice(&[0; 8]);
        assert_eq!(
            codec().decode_keepalive(&mut sized),
            Err(WireError::KeepaliveWithPayload { message_count: 0, payload_bytes: 8 })
        );
        let mut damaged = out.clone();
        damaged[20] ^= 1;
        assert!(matches!(
            codec().decode_keepalive(&mut damaged),
            Err(WireError::ChecksumMismatch { .. })
        ));
    }

    // ---- Properties ------------------------------------------------------------------------

    fn data() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    fn entry_id() -> impl Strategy<Value = EntryId> {
        (any::<u64>(), any::<u64>()).prop_map(|(t, i)| eid(t, i))
    }

    fn body() -> impl Strategy<Value = MessageBody> {
        let entry = (0..3u8, entry_id(), data()).prop_map(|(k, id, data)| Entry {
            id,
            kind: EntryKind::from_code(k).unwrap(),
            data,
        });
        prop_oneof![
            entry_id().prop_map(|last| MessageBody::PreVote { last }),
            any::<bool>().prop_map(|granted| MessageBody::PreVoteResponse { granted }),
            (entry_id(), any::<bool>())
                .prop_map(|(last, transfer)| MessageBody::Vote { last, transfer }),
            any::<bool>().prop_map(|granted| MessageBody::VoteResponse { granted }),
            (entry_id(), proptest::collection::vec(entry, 0..5), any::<u64>()).prop_map(
                |(prev, entries, c)| MessageBody::Append { prev, entries, commit: LogIndex(c) }
            ),
            any::<u64>().prop_map(|i| MessageBody::AppendResponse { result: Ok(LogIndex(i)) }),
            (any::<u64>(), entry_id(), any::<u64>()).prop_map(|(r, hint, l)| {
                MessageBody::AppendResponse {
                    result: Err(RejectHint {
                        rejected: LogIndex(r),
                        hint,
                        last_index: LogIndex(l),
                    }),
                }
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(c, read_round)| MessageBody::Heartbeat {
                commit: LogIndex(c),
                read_round
            }),
            any::<u64>().prop_map(|read_round| MessageBody::HeartbeatResponse { read_round }),
            proptest::collection::vec(data(), 0..5)
                .prop_map(|entries| MessageBody::Propose { entries }),
            any::<u64>().prop_map(|id| MessageBody::ReadIndex { id: ReadId(id) }),
            (any::<u64>(), proptest::option::of(any::<u64>())).prop_map(|(id, index)| {
                MessageBody::ReadIndexResponse { id: ReadId(id), index: index.map(LogIndex) }
            }),
            Just(MessageBody::TimeoutNow),
            data().prop_map(|data| MessageBody::App { data }),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (any::<u64>(), any::<u64>(), body()).prop_map(|(to, term, body)| Message {
            from: NodeId(ME),
            to: NodeId(to),
            term: Term(term),
            body,
        })
    }

    fn encoded_frame() -> impl Strategy<Value = (Vec<Message>, Bytes)> {
        (any::<u64>(), proptest::collection::vec(message(), 0..6)).prop_map(|(group, ms)| {
            let mut out = BytesMut::new();
            codec().encode_frame(group, &ms, &mut out).unwrap();
            (ms, out.freeze())
        })
    }

    proptest! {
        #[test]
        fn frames_round_trip(group in any::<u64>(), ms in proptest::collection::vec(message(), 0..8)) {
            let mut out = BytesMut::new();
            codec().encode_frame(group, &ms, &mut out).unwrap();
            prop_assert_eq!(out.len(), FRAME_HEADER_BYTES + ms.iter().map(encoded_len).sum::<usize>());
            let f = codec().decode_frame_bytes(out.freeze()).unwrap();
            prop_assert_eq!(f, Frame { group_id: group, from_member: ME, messages: ms });
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), count in 0usize..4) {
            let b = Bytes::from(bytes);
            let _ = decode_messages(b.clone(), count);
            let _ = codec().decode_frame_bytes(b.clone());
            let mut buf = BytesMut::from(&b[..]);
            let _ = codec().decode_frame(&mut buf);
            let mut buf = BytesMut::from(&b[..]);
            let _ = codec().decode_keepalive(&mut buf);
            // With a valid header in front, the payload decoder sees the random bytes.
            let mut framed = BytesMut::new();
            codec().encode_frame(1, &[], &mut framed).unwrap();
            let _ = decode_messages(b, count);
        }

        #[test]
        fn mutated_payloads_never_panic(
            (ms, wire) in encoded_frame(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            // Mutate the payload and decode it directly, past the checksum.
            let payload = wire.slice(FRAME_HEADER_BYTES..);
            if !payload.is_empty() {
                let mut p = payload.to_vec();
                for (i, b) in &flips {
                    let i = i.index(p.len());
                    p[i] ^= b | 1;
                }
                let _ = decode_messages(Bytes::from(p), ms.len());
                let truncated = payload.slice(..cut.index(payload.len()));
                prop_assert!(decode_messages(truncated, ms.len()).is_err());
            }
            // Mutated whole frames are refused, never mis-decoded.
            let mut w = wire.to_vec();
            let (i, b) = flips[0];
            let i = i.index(w.len());
            w[i] ^= b | 1;
            prop_assert!(codec().decode_frame_bytes(Bytes::from(w)).is_err());
            let truncated = wire.slice(..cut.index(wire.len()));
            prop_assert!(codec().decode_frame_bytes(truncated.clone()).is_err());
            let mut buf = BytesMut::from(&truncated[..]);
            prop_assert!(!matches!(codec().decode_frame(&mut buf), Ok(Some(_))));
        }
    }
}
