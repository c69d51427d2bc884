//! What a replica puts in a log entry around the state machine's proposal: the log time the
//! proposer stamped, and which replica, which run of it and which request it came from, so the
//! proposing replica can answer its client when the entry is applied (whichever node led at
//! the time).
//!
//! Layout, little-endian: `version: u8 (=2) | log_time_ms: u64 | origin: u64 |
//! incarnation: u64 | request: u64 | proposal bytes`. Version 1 (no incarnation) is still
//! decoded, with incarnation 0, so that logs written before it replay.
//!
//! Why the incarnation: request ids are chosen per process and restart at 1. An entry proposed
//! by a replica's previous run (forwarded to the leader, committed late) must never answer a
//! request of the current run that happens to have the same id.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 2;
/// The layout before incarnations; decoded with incarnation 0.
const VERSION_WITHOUT_INCARNATION: u8 = 1;
/// Bytes before the proposal.
pub const HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 8;
/// Bytes before the proposal in version 1.
const HEADER_BYTES_V1: usize = 1 + 8 + 8 + 8;

/// The decoded header of an entry's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Log time stamped by the leader that appended the entry (milliseconds on the caller's
    /// clock). The state machine uses it for session expiry: the same on every replica.
    pub log_time_ms: u64,
    /// The replica that proposed the entry.
    pub origin: u64,
    /// Which run of that replica proposed it (see [`crate::ReplicaConfig::incarnation`]).
    pub incarnation: u64,
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
        b.put_u64_le(self.incarnation);
        b.put_u64_le(self.request);
        b.put_slice(proposal);
        b.freeze()
    }

    /// Splits an entry's payload into its header and the proposal bytes; `None` if it is too
    /// short or of an unknown version (every replica sees the same bytes, so every replica
    /// reaches the same verdict).
    pub fn decode(data: &[u8]) -> Option<(Envelope, &[u8])> {
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        match data.first() {
            Some(&VERSION) if data.len() >= HEADER_BYTES => {
                let env = Envelope {
                    log_time_ms: word(1),
                    origin: word(9),
                    incarnation: word(17),
                    request: word(25),
                };
                Some((env, &data[HEADER_BYTES..]))
            }
            Some(&VERSION_WITHOUT_INCARNATION) if data.len() >= HEADER_BYTES_V1 => {
                let env = Envelope {
                    log_time_ms: word(1),
                    origin: word(9),
                    incarnation: 0,
                    request: word(17),
                };
                Some((env, &data[HEADER_BYTES_V1..]))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_short_or_unknown_version() {
        let env = Envelope { log_time_ms: 5, origin: 2, incarnation: 7, request: 99 };
        let bytes = env.encode(b"payload");
        let (back, rest) = Envelope::decode(&bytes).unwrap();
        assert_eq!(back, env);
        assert_eq!(rest, b"payload");
        assert!(Envelope::decode(&bytes[..10]).is_none());
        let mut bad = bytes.to_vec();
        bad[0] = 9;
        assert!(Envelope::decode(&bad).is_none());
    }

    #[test]
    fn version_1_entries_still_decode_with_incarnation_zero() {
        let mut v1 = vec![1u8];
        for word in [5u64, 2, 99] {
            v1.extend_from_slice(&word.to_le_bytes());
        }
        v1.extend_from_slice(b"payload");
        let (env, rest) = Envelope::decode(&v1).expect("version 1 decodes");
        assert_eq!(env, Envelope { log_time_ms: 5, origin: 2, incarnation: 0, request: 99 });
        assert_eq!(rest, b"payload");
        assert!(Envelope::decode(&v1[..HEADER_BYTES_V1 - 1]).is_none());
    }
}
