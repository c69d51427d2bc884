//! Lease renewals a follower forwards to the leader outside the log, and the leader's answers.
//!
//! A follower that holds a client's keep-alive sends the renewal to the leader as an
//! application message ([`tenure_raft::MessageBody::App`], carried by the same transport as
//! the core's messages). The leader renews the lease without the log once a heartbeat round
//! confirms its leadership, exactly as for a renewal of its own client (see `lessor`), or at
//! once where the message, written in the leader's term, and the leader are the quorum that
//! round would ask for (two or three voters: [`tenure_raft::Node::quorum_with`]), and
//! answers; when it may not (it no longer leads, the lease must be renewed through the log, or
//! its leadership could not be confirmed) it answers [`Outcome::UseLog`] and the follower
//! proposes the renewal as a log entry after all. A follower that hears nothing within an
//! election timeout does the same, so a lost message costs time, never the renewal.
//!
//! Layout, little-endian: `version: u8 (=1) | kind: u8 | request: u64 | incarnation: u64 |`
//! then for a renewal (kind 1) `lease: i64`, and for an answer (kind 2) `outcome: u8` (1
//! renewed, 2 not found, 3 use the log) followed by `ttl: i64 | revision: i64` when renewed
//! and `revision: i64` when not found. Anything else is refused by [`Forward::decode`] (a
//! faulty peer's bytes are dropped, never a panic).

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;
const KIND_RENEW: u8 = 1;
const KIND_ANSWER: u8 = 2;
const OUTCOME_RENEWED: u8 = 1;
const OUTCOME_NOT_FOUND: u8 = 2;
const OUTCOME_USE_LOG: u8 = 3;

/// One forwarded renewal or its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Forward {
    /// Follower to leader: "renew `lease` for my request `request` of my run `incarnation`".
    Renew { request: u64, incarnation: u64, lease: i64 },
    /// Leader to follower: the outcome of that request.
    Answer { request: u64, incarnation: u64, outcome: Outcome },
}

/// What the leader did with a forwarded renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Renewed: the lease has `ttl` seconds from now; `revision` is the leader's.
    Renewed { ttl: i64, revision: i64 },
    /// The lease does not exist (as of a read index the leader confirmed).
    NotFound { revision: i64 },
    /// Not renewed: propose it through the log.
    UseLog,
}

impl Forward {
    pub(crate) fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + 8 + 8 + 1 + 16);
        b.put_u8(VERSION);
        match *self {
            Forward::Renew { request, incarnation, lease } => {
                b.put_u8(KIND_RENEW);
                b.put_u64_le(request);
                b.put_u64_le(incarnation);
                b.put_i64_le(lease);
            }
            Forward::Answer { request, incarnation, outcome } => {
                b.put_u8(KIND_ANSWER);
                b.put_u64_le(request);
                b.put_u64_le(incarnation);
                match outcome {
                    Outcome::Renewed { ttl, revision } => {
                        b.put_u8(OUTCOME_RENEWED);
                        b.put_i64_le(ttl);
                        b.put_i64_le(revision);
                    }
                    Outcome::NotFound { revision } => {
                        b.put_u8(OUTCOME_NOT_FOUND);
                        b.put_i64_le(revision);
                    }
                    Outcome::UseLog => b.put_u8(OUTCOME_USE_LOG),
                }
            }
        }
        b.freeze()
    }

    /// The message in `data`, or `None` if it is not one this version writes (whole, with
    /// nothing after it).
    pub(crate) fn decode(mut data: &[u8]) -> Option<Forward> {
        fn take<const N: usize>(d: &mut &[u8]) -> Option<[u8; N]> {
            if d.remaining() < N {
                return None;
            }
            let mut out = [0u8; N];
            d.copy_to_slice(&mut out);
            Some(out)
        }
        let d = &mut data;
        let [version, kind] = take::<2>(d)?;
        if version != VERSION {
            return None;
        }
        let request = u64::from_le_bytes(take(d)?);
        let incarnation = u64::from_le_bytes(take(d)?);
        let forward = match kind {
            KIND_RENEW => {
                Forward::Renew { request, incarnation, lease: i64::from_le_bytes(take(d)?) }
            }
            KIND_ANSWER => {
                let [code] = take::<1>(d)?;
                let outcome = match code {
                    OUTCOME_RENEWED => Outcome::Renewed {
                        ttl: i64::from_le_bytes(take(d)?),
                        revision: i64::from_le_bytes(take(d)?),
                    },
                    OUTCOME_NOT_FOUND => {
                        Outcome::NotFound { revision: i64::from_le_bytes(take(d)?) }
                    }
                    OUTCOME_USE_LOG => Outcome::UseLog,
                    _ => return None,
                };
                Forward::Answer { request, incarnation, outcome }
            }
            _ => return None,
        };
        d.is_empty().then_some(forward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_damaged_bytes_are_refused() {
        let all = [
            Forward::Renew { request: 1, incarnation: 2, lease: -3 },
            Forward::Answer {
                request: u64::MAX,
                incarnation: 0,
                outcome: Outcome::Renewed { ttl: 60, revision: 7 },
            },
            Forward::Answer {
                request: 5,
                incarnation: 6,
                outcome: Outcome::NotFound { revision: 1 },
            },
            Forward::Answer { request: 5, incarnation: 6, outcome: Outcome::UseLog },
        ];
        for f in all {
            let bytes = f.encode();
            assert_eq!(Forward::decode(&bytes), Some(f));
            for cut in 0..bytes.len() {
                assert_eq!(Forward::decode(&bytes[..cut]), None, "{f:?} cut at {cut}");
            }
            let mut longer = bytes.to_vec();
            longer.push(0);
            assert_eq!(Forward::decode(&longer), None, "trailing bytes");
            let mut other_version = bytes.to_vec();
            other_version[0] = 2;
            assert_eq!(Forward::decode(&other_version), None);
        }
        assert_eq!(Forward::decode(&[VERSION, 9, 0, 0]), None, "unknown kind");
        let mut bad_outcome =
            Forward::Answer { request: 1, incarnation: 1, outcome: Outcome::UseLog }
                .encode()
                .to_vec();
        *bad_outcome.last_mut().unwrap() = 9;
        assert_eq!(Forward::decode(&bad_outcome), None, "unknown outcome");
    }
}
