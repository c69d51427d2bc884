//! What a replica puts in a log entry around the state machine's proposal: the log time the
//! leader stamped, and which replica and request it came from, so the proposing replica can
//! answer its client when the entry is applied (whichever node led at the time).
//!
//! Layout, little-endian: `version: u8 (=1) | log_time_ms: u64 | origin: u64 | request: u64 |
//! proposal bytes`.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;
/// Bytes before the proposal.
pub const HEADER_BYTES: usize = 1 + 8 + 8 + 8;

/// The decoded header of an entry's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Log time stamped by the leader that appended the entry (milliseconds on the caller's
    /// clock). The state machine uses it for session expiry: the same on every replica.
    pub log_time_ms: u64,
    /// The replica that proposed the entry.
    pub origin: u64,
    /// The proposing replica's request id (0: none).
    pub request: u64,
}

impl Envelope {
    /// Encodes the header followed by `proposal`.
    pub fn encode(&self, proposal: &[u8]) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_BYTES + proposal.len());
        b.put_u8(VERSION);
        b.put_u64_le(self.log_time_ms);
        b.put_u64_le(self.origin);
        b.put_u64_le(self.request);
        b.put_slice(proposal);
        b.freeze()
    }

    /// Splits an entry's payload into its header and the proposal bytes; `None` if it is too
    /// short or of an unknown version (every replica sees the same bytes, so every replica
    /// reaches the same verdict).
    pub fn decode(data: &[u8]) -> Option<(Envelope, &[u8])> {
        if data.len() < HEADER_BYTES || data[0] != VERSION {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let env = Envelope { log_time_ms: word(1), origin: word(9), request: word(17) };
        Some((env, &data[HEADER_BYTES..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_short_or_unknown_version() {
        let env = Envelope { log_time_ms: 5, origin: 2, request: 99 };
        let bytes = env.encode(b"payload");
        let (back, rest) = Envelope::decode(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(rest, b"payload");
        assert!(Envelope::decode(&bytes[..10]).is_none());
        let mut bad = bytes.to_vec();
        bad[0] = 9;
        assert!(Envelope::decode(&bad).is_none());
    }
}
