//! The on-disk record format of the write-ahead log, and its encoder and decoder.
//!
//! A segment file is a sequence of frames followed by zeros (segments are preallocated):
//!
//! ```text
//! offset 0   len        u32 LE   bytes in the body, 1..=FRAME_BODY_BYTES_MAX
//! offset 4   body_crc   u32 LE   CRC-32C of the body
//! offset 8   head_crc   u32 LE   CRC-32C of bytes 0..8 (so a damaged length is caught before
//!                                it is trusted)
//! offset 12  body       len bytes: one type byte, then the record (integers little-endian)
//! 12 + len   0xA5       end marker
//! ```
//!
//! Why the end marker: segments start zeroed and a torn write keeps a prefix of what was
//! written, so the byte after a torn record's cut is zero. A complete record always ends in a
//! non-zero byte, which lets recovery tell a torn tail (the record runs into zeros) from a bit
//! flip in a complete record (which it must refuse to skip). An all-zero header is the end of
//! the data in a segment; a real header is never all zeros because `head_crc` of a zero length
//! is not zero and a zero length is invalid anyway.
//!
//! The decoder never panics and never allocates more than the input it is given, whatever the
//! bytes (property-tested here, fuzzed by `fuzz/fuzz_targets/decode_record.rs`).

use tenure_raft::quorum::{JointConfig, MajorityConfig};
use tenure_raft::{EntryId, EntryKind, HardState, LogIndex, Membership, NodeId, Term};

/// Bytes before the body: `len`, `body_crc`, `head_crc`.
pub const FRAME_HEADER_BYTES: usize = 12;
/// Bytes of framing per record: header plus end marker.
pub const FRAME_OVERHEAD_BYTES: usize = FRAME_HEADER_BYTES + 1;
/// The largest body a frame may carry.
pub const FRAME_BODY_BYTES_MAX: usize = 1 << 30;
const END_MARKER: u8 = 0xA5;

const TYPE_ENTRY: u8 = 1;
const TYPE_TRUNCATE: u8 = 2;
const TYPE_HARD_STATE: u8 = 3;
const TYPE_MEMBERSHIP: u8 = 4;
const TYPE_COMPACT: u8 = 5;
const TYPE_RESET: u8 = 6;
const TYPE_SEGMENT_HEADER: u8 = 7;

/// Bytes of an entry record's body before the payload: type, term, index, kind.
pub const ENTRY_BODY_PREFIX_BYTES: usize = 1 + 8 + 8 + 1;

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The header is all zeros: the end of the data in a segment.
    Zero,
    /// The header's checksum does not match, or its length is out of range.
    BadHeader,
    /// The header is valid but the buffer ends before the frame does.
    Incomplete {
        /// The body length the header claims.
        body_bytes: usize,
    },
    /// The header is valid but the body's checksum does not match.
    BadBody {
        /// The body length the header claims.
        body_bytes: usize,
    },
    /// Header and body are valid but the end marker is missing.
    BadMarker {
        /// The body length the header claims.
        body_bytes: usize,
    },
}

impl FrameError {
    /// The offset, from the frame's start, of the first byte that a complete frame would have
    /// made non-zero and that a torn write may have left zero: the end marker's position when
    /// the header is valid, else the header's last byte. If every byte from there to the end of
    /// the segment is zero, the frame is a torn write; otherwise it is corruption.
    pub fn torn_check_from(self) -> usize {
        match self {
            FrameError::Zero | FrameError::BadHeader => FRAME_HEADER_BYTES - 1,
            FrameError::Incomplete { body_bytes }
            | FrameError::BadBody { body_bytes }
            | FrameError::BadMarker { body_bytes } => FRAME_HEADER_BYTES + body_bytes,
        }
    }

    /// A short description, for error messages.
    pub fn describe(self) -> String {
        match self {
            FrameError::Zero => "no record (zeros)".into(),
            FrameError::BadHeader => "record header checksum mismatch".into(),
            FrameError::Incomplete { body_bytes } => {
                format!("record of {body_bytes} bytes runs past the end of the file")
            }
            FrameError::BadBody { body_bytes } => {
                format!("record checksum mismatch ({body_bytes}-byte body)")
            }
            FrameError::BadMarker { body_bytes } => {
                format!("record end marker missing ({body_bytes}-byte body)")
            }
        }
    }
}

/// A valid frame found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The body (type byte first).
    pub body: &'a [u8],
    /// Total bytes of the frame, framing included.
    pub frame_bytes: usize,
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

/// Decodes the frame at the start of `buf`.
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return if buf.iter().all(|&b| b == 0) {
            Err(FrameError::Zero)
        } else {
            Err(FrameError::BadHeader)
        };
    }
    let header = &buf[..FRAME_HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Err(FrameError::Zero);
    }
    let len = u32_at(header, 0) as usize;
    if crc32c::crc32c(&header[..8]) != u32_at(header, 8) || len == 0 || len > FRAME_BODY_BYTES_MAX {
        return Err(FrameError::BadHeader);
    }
    let end = FRAME_HEADER_BYTES + len;
    if buf.len() < end + 1 {
        return Err(FrameError::Incomplete { body_bytes: len });
    }
    let body = &buf[FRAME_HEADER_BYTES..end];
    if crc32c::crc32c(body) != u32_at(header, 4) {
        return Err(FrameError::BadBody { body_bytes: len });
    }
    if buf[end] != END_MARKER {
        return Err(FrameError::BadMarker { body_bytes: len });
    }
    Ok(Frame { body, frame_bytes: end + 1 })
}

/// Appends a frame to `out` whose body `write_body` appends. Returns the frame's size.
fn frame(out: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    write_body(out);
    let len = out.len() - start - FRAME_HEADER_BYTES;
    assert!((1..=FRAME_BODY_BYTES_MAX).contains(&len), "record body of {len} bytes");
    let body_crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&body_crc.to_le_bytes());
    let head_crc = crc32c::crc32c(&out[start..start + 8]);
    out[start + 8..start + 12].copy_from_slice(&head_crc.to_le_bytes());
    out.push(END_MARKER);
    out.len() - start
}

/// The state written at the start of every segment, so that older segments can be deleted
/// without losing the hard state, the membership or the compaction point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's sequence number (also in its file name).
    pub seq: u64,
    /// The snapshot point (`first_index - 1` and its term) when the segment was started.
    pub base: EntryId,
    /// The last entry of the log when the segment was started (`base` if the log was empty).
    pub last: EntryId,
    /// The hard state when the segment was started.
    pub hard_state: HardState,
    /// The membership when the segment was started.
    pub membership: Membership,
}

/// One decoded record. Entry payloads borrow from the decoded buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A log entry; it replaces any entry at or after its index.
    Entry {
        /// Term and index.
        id: EntryId,
        /// What it carries.
        kind: EntryKind,
        /// The payload.
        data: &'a [u8],
    },
    /// Every entry at or after `from` is removed.
    Truncate {
        /// The first removed index.
        from: LogIndex,
    },
    /// A new hard state.
    HardState(HardState),
    /// A new membership.
    Membership(Membership),
    /// Every entry up to and including `upto` is removed; `upto` becomes the snapshot point.
    Compact {
        /// The new snapshot point.
        upto: EntryId,
    },
    /// The whole log is replaced by an empty log after a snapshot at `base`.
    Reset {
        /// The snapshot point.
        base: EntryId,
        /// The membership of the snapshot.
        membership: Membership,
    },
    /// The state at the start of a segment.
    SegmentHeader(SegmentHeader),
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_id(out: &mut Vec<u8>, id: EntryId) {
    put_u64(out, id.term.0);
    put_u64(out, id.index.0);
}

fn put_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    put_u64(out, hs.term.0);
    match hs.vote {
        Some(n) => {
            out.push(1);
            put_u64(out, n.0);
        }
        None => {
            out.push(0);
            put_u64(out, 0);
        }
    }
    put_u64(out, hs.commit.0);
}

fn put_ids<'a>(out: &mut Vec<u8>, ids: impl ExactSizeIterator<Item = &'a NodeId>) {
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        put_u64(out, id.0);
    }
}

fn put_membership(out: &mut Vec<u8>, m: &Membership) {
    put_ids(out, m.voters.incoming.voters().iter());
    put_ids(out, m.voters.outgoing.voters().iter());
    put_ids(out, m.learners.iter());
}

/// Encoded size of a membership.
pub fn membership_bytes(m: &Membership) -> usize {
    12 + 8 * (m.voters.incoming.len() + m.voters.outgoing.len() + m.learners.len())
}

/// Appends an entry record; returns the frame's size.
pub fn encode_entry(out: &mut Vec<u8>, id: EntryId, kind: EntryKind, data: &[u8]) -> usize {
    frame(out, |b| {
        b.push(TYPE_ENTRY);
        put_id(b, id);
        b.push(kind.code());
        b.extend_from_slice(data);
    })
}

/// Size of the frame [`encode_entry`] writes for a payload of `data_bytes`.
pub fn entry_frame_bytes(data_bytes: usize) -> usize {
    FRAME_OVERHEAD_BYTES + ENTRY_BODY_PREFIX_BYTES + data_bytes
}

/// Appends a truncation record.
pub fn encode_truncate(out: &mut Vec<u8>, from: LogIndex) -> usize {
    frame(out, |b| {
        b.push(TYPE_TRUNCATE);
        put_u64(b, from.0);
    })
}

/// Appends a hard state record.
pub fn encode_hard_state(out: &mut Vec<u8>, hs: &HardState) -> usize {
    frame(out, |b| {
        b.push(TYPE_HARD_STATE);
        put_hard_state(b, hs);
    })
}

/// Appends a membership record.
pub fn encode_membership(out: &mut Vec<u8>, m: &Membership) -> usize {
    frame(out, |b| {
        b.push(TYPE_MEMBERSHIP);
        put_membership(b, m);
    })
}

/// Appends a compaction record.
pub fn encode_compact(out: &mut Vec<u8>, upto: EntryId) -> usize {
    frame(out, |b| {
        b.push(TYPE_COMPACT);
        put_id(b, upto);
    })
}

/// Appends a reset record.
pub fn encode_reset(out: &mut Vec<u8>, base: EntryId, m: &Membership) -> usize {
    frame(out, |b| {
        b.push(TYPE_RESET);
        put_id(b, base);
        put_membership(b, m);
    })
}

/// Appends a segment header record.
pub fn encode_segment_header(out: &mut Vec<u8>, h: &SegmentHeader) -> usize {
    frame(out, |b| {
        b.push(TYPE_SEGMENT_HEADER);
        put_u64(b, h.seq);
        put_id(b, h.base);
        put_id(b, h.last);
        put_hard_state(b, &h.hard_state);
        put_membership(b, &h.membership);
    })
}

/// Encodes a membership alone (used by snapshot metadata).
pub fn encode_membership_raw(out: &mut Vec<u8>, m: &Membership) {
    put_membership(out, m);
}

/// A cursor over a body that fails (never panics) when the bytes run out.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "record too short: wanted {n} more bytes, {} left",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn id(&mut self) -> Result<EntryId, String> {
        let term = Term(self.u64()?);
        let index = LogIndex(self.u64()?);
        Ok(EntryId::new(term, index))
    }

    fn hard_state(&mut self) -> Result<HardState, String> {
        let term = Term(self.u64()?);
        let has_vote = self.u8()?;
        let vote = self.u64()?;
        let commit = LogIndex(self.u64()?);
        let vote = match has_vote {
            0 => None,
            1 => Some(NodeId(vote)),
            x => return Err(format!("bad vote flag {x}")),
        };
        Ok(HardState { term, vote, commit })
    }

    fn ids(&mut self) -> Result<Vec<NodeId>, String> {
        let n = self.u32()? as usize;
        // Check the length against the bytes left before allocating anything.
        let bytes = self.take(n.checked_mul(8).ok_or("id count overflows")?)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| NodeId(u64::from_le_bytes(c.try_into().expect("8"))))
            .collect())
    }

    pub(crate) fn membership(&mut self) -> Result<Membership, String> {
        let incoming = self.ids()?;
        let outgoing = self.ids()?;
        let learners = self.ids()?;
        Ok(Membership {
            voters: JointConfig {
                incoming: MajorityConfig::new(incoming),
                outgoing: MajorityConfig::new(outgoing),
            },
            learners: learners.into_iter().collect(),
        })
    }

    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected bytes at the end of a record", self.buf.len()))
        }
    }
}

/// Decodes a frame body into a record. Never panics, whatever the bytes.
pub fn decode_record(body: &[u8]) -> Result<Record<'_>, String> {
    let mut r = Reader::new(body);
    let record = match r.u8()? {
        TYPE_ENTRY => {
            let id = r.id()?;
            let code = r.u8()?;
            let kind =
                EntryKind::from_code(code).ok_or_else(|| format!("unknown entry kind {code}"))?;
            let data = r.buf;
            r.buf = &[];
            Record::Entry { id, kind, data }
        }
        TYPE_TRUNCATE => Record::Truncate { from: LogIndex(r.u64()?) },
        TYPE_HARD_STATE => Record::HardState(r.hard_state()?),
        TYPE_MEMBERSHIP => Record::Membership(r.membership()?),
        TYPE_COMPACT => Record::Compact { upto: r.id()? },
        TYPE_RESET => Record::Reset { base: r.id()?, membership: r.membership()? },
        TYPE_SEGMENT_HEADER => Record::SegmentHeader(SegmentHeader {
            seq: r.u64()?,
            base: r.id()?,
            last: r.id()?,
            hard_state: r.hard_state()?,
            membership: r.membership()?,
        }),
        t => return Err(format!("unknown record type {t}")),
    };
    r.finish()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_records() -> Vec<u8> {
        let mut out = Vec::new();
        let m = Membership::voters([NodeId(1), NodeId(2), NodeId(3)]);
        encode_entry(&mut out, EntryId::new(Term(2), LogIndex(7)), EntryKind::Normal, b"hello");
        encode_truncate(&mut out, LogIndex(5));
        encode_hard_state(
            &mut out,
            &HardState { term: Term(3), vote: Some(NodeId(2)), commit: LogIndex(4) },
        );
        encode_membership(&mut out, &m);
        encode_compact(&mut out, EntryId::new(Term(1), LogIndex(3)));
        encode_reset(&mut out, EntryId::new(Term(4), LogIndex(90)), &m);
        encode_segment_header(
            &mut out,
            &SegmentHeader {
                seq: 9,
                base: EntryId::new(Term(1), LogIndex(3)),
                last: EntryId::new(Term(2), LogIndex(7)),
                hard_state: HardState::default(),
                membership: m,
            },
        );
        out
    }

    fn decode_all(mut buf: &[u8]) -> Vec<Record<'_>> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let f = decode_frame(buf).expect("valid frame");
            out.push(decode_record(f.body).expect("valid record"));
            buf = &buf[f.frame_bytes..];
        }
        out
    }

    #[test]
    fn every_record_type_round_trips() {
        let buf = sample_records();
        let records = decode_all(&buf);
        assert_eq!(records.len(), 7);
        assert_eq!(
            records[0],
            Record::Entry {
                id: EntryId::new(Term(2), LogIndex(7)),
                kind: EntryKind::Normal,
                data: b"hello"
            }
        );
        assert_eq!(records[1], Record::Truncate { from: LogIndex(5) });
        match &records[6] {
            Record::SegmentHeader(h) => {
                assert_eq!(h.seq, 9);
                assert_eq!(h.membership, Membership::voters([NodeId(1), NodeId(2), NodeId(3)]));
            }
            other => panic!("expected a segment header, got {other:?}"),
        }
    }

    #[test]
    fn frame_errors_are_classified() {
        let mut buf = Vec::new();
        let n =
            encode_entry(&mut buf, EntryId::new(Term(1), LogIndex(1)), EntryKind::Normal, b"abc");
        let body_bytes = n - FRAME_OVERHEAD_BYTES;
        assert_eq!(decode_frame(&[0u8; 40]), Err(FrameError::Zero));
        assert_eq!(decode_frame(&buf[..n - 1]), Err(FrameError::Incomplete { body_bytes }));
        let mut bad = buf.clone();
        bad[FRAME_HEADER_BYTES + 2] ^= 1;
        assert_eq!(decode_frame(&bad), Err(FrameError::BadBody { body_bytes }));
        let mut bad = buf.clone();
        bad[0] ^= 0x40;
        assert_eq!(decode_frame(&bad), Err(FrameError::BadHeader));
        let mut bad = buf.clone();
        bad[n - 1] = 0;
        assert_eq!(decode_frame(&bad), Err(FrameError::BadMarker { body_bytes }));
        assert_eq!(
            FrameError::BadBody { body_bytes }.torn_check_from(),
            n - 1,
            "a torn body is judged from the end marker's position"
        );
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(f) = decode_frame(&bytes) {
                prop_assert!(f.frame_bytes <= bytes.len());
                let _ = decode_record(f.body);
            }
            let _ = decode_record(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_mutated_records(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            let mut buf = sample_records();
            for (at, x) in flips {
                let i = at % buf.len();
                buf[i] ^= x;
            }
            buf.truncate(cut % (buf.len() + 1));
            let mut rest = &buf[..];
            while let Ok(f) = decode_frame(rest) {
                let _ = decode_record(f.body);
                rest = &rest[f.frame_bytes..];
            }
        }

        #[test]
        fn any_single_bit_flip_is_detected(bit in 0usize..(8 * 64)) {
            let mut buf = Vec::new();
            encode_entry(&mut buf, EntryId::new(Term(5), LogIndex(6)), EntryKind::Normal, b"0123456789abcdefghijklmnopqrstuvwxyz");
            let bit = bit % (8 * buf.len());
            buf[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame(&buf).is_err());
        }
    }
}
