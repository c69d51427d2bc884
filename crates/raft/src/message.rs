//! Messages between nodes. The core produces and consumes these as plain Rust values; how they
//! travel (and how they are encoded) is the caller's business.
//!
//! Every message carries the sender's term (Raft §5.1, S1). The `Debug` form is the compact
//! trace notation used in scenario tests and logs:
//! `n1->n2 @3 Append prev=2/5 [3/6..3/8] commit=5`.

use std::fmt;

use crate::error::Malformed;
use crate::log_view::SnapshotMeta;
use crate::membership::ConfigEntry;
use crate::types::{Entry, EntryId, EntryKind, LogIndex, NodeId, Term};

/// An opaque id the caller attaches to a read request, returned with the read's
/// [`crate::ReadState`]. It only needs to be unique among the caller's pending reads.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ReadId(pub u64);

/// One message from one node to another.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's current term (for pre-votes: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of messages, with their fields.
#[derive(Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// "Could I win an election in `term`?" Sent without raising the sender's term
    /// (Pre-Vote, dissertation §9.6).
    PreVote {
        /// The candidate's last log entry, for the up-to-date check (§5.4.1).
        last: EntryId,
    },
    /// Answer to a `PreVote`.
    PreVoteResponse {
        /// Whether the voter would grant.
        granted: bool,
    },
    /// RequestVote (Raft §5.2).
    Vote {
        /// The candidate's last log entry (§5.4.1).
        last: EntryId,
        /// Set when the election was started by a leadership transfer: voters then skip the
        /// "I heard from a leader recently" check (dissertation §3.10).
        transfer: bool,
    },
    /// Answer to a `Vote`; sent only after the vote is durable (S2).
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (Raft §5.3).
    Append {
        /// The entry just before `entries`, which the follower must hold.
        prev: EntryId,
        /// Entries to append; may be empty (a probe).
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: LogIndex,
    },
    /// Answer to an `Append`.
    AppendResponse {
        /// `Ok(index)`: the follower's log matches the leader's through `index`.
        /// `Err(hint)`: the consistency check failed.
        result: Result<LogIndex, RejectHint>,
    },
    /// Heartbeat: asserts leadership, carries the commit index and, for ReadIndex, a round
    /// number.
    Heartbeat {
        /// `min(leader commit, follower's match)`: never past what the follower is known to
        /// hold, so a follower cannot commit entries of an older leader.
        commit: LogIndex,
        /// The read round this heartbeat confirms leadership for (0: none).
        read_round: u64,
    },
    /// Answer to a `Heartbeat`.
    HeartbeatResponse {
        /// The round from the heartbeat, echoed.
        read_round: u64,
    },
    /// A follower forwards client proposals to the leader.
    Propose {
        /// The payloads, in order.
        entries: Vec<bytes::Bytes>,
    },
    /// A follower asks the leader for a read index (dissertation §6.4).
    ReadIndex {
        /// The follower's id for the read.
        id: ReadId,
    },
    /// The leader's answer to `ReadIndex`.
    ReadIndexResponse {
        /// The read it answers.
        id: ReadId,
        /// The index at or after which the read is safe; `None` if the leader could not serve
        /// it (it stepped down, or is transferring leadership).
        index: Option<LogIndex>,
    },
    /// Leadership transfer: "campaign now, skipping Pre-Vote" (dissertation §3.10).
    TimeoutNow,
    /// InstallSnapshot (Raft §7): the leader's log no longer holds entries this follower
    /// needs. The message only names the snapshot; the caller streams the snapshot's data
    /// beside it (outside the append stream) and steps the message into the follower once the
    /// data is staged there, durable and checked. The caller may send a newer snapshot than
    /// the one named, and then names that one. The leader learns the outcome from the
    /// follower's `AppendResponse` and from [`crate::Node::report_snapshot`].
    Snapshot {
        /// Which snapshot: its last included entry and configuration.
        meta: SnapshotMeta,
    },
    /// A message of the embedding application, carried by the same transport as the core's
    /// (in tenure: a follower's lease renewal forwarded to the leader, and its answer). The
    /// core never sends one and refuses to step one ([`crate::StepError::NotForTheCore`]): the
    /// application takes its own messages out before it steps the rest.
    App {
        /// The application's bytes.
        data: bytes::Bytes,
    },
}

/// Why a follower rejected an `Append`, and where the leader should look next.
///
/// The follower reports the last index it holds at or below the leader's `prev`, and its term.
/// The leader then jumps back to the last entry of its own log whose term is not above that
/// term, skipping a whole diverged term per round trip instead of one entry (Raft §5.3, the
/// optimisation sketched at the end of that section).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RejectHint {
    /// The `prev` index of the rejected append.
    pub rejected: LogIndex,
    /// The follower's candidate match point: an index `<= rejected` and the follower's term
    /// there.
    pub hint: EntryId,
    /// The follower's last index, so the leader never probes past it.
    pub last_index: LogIndex,
}

impl MessageBody {
    /// A short name for the kind of message.
    pub fn kind(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::App { .. } => "App",
        }
    }

    /// Approximate encoded size, for flow control and transport batching.
    pub fn size_bytes(&self) -> u64 {
        match self {
            MessageBody::Append { entries, .. } => {
                48 + entries.iter().map(Entry::size_bytes).sum::<u64>()
            }
            MessageBody::Propose { entries } => {
                16 + entries.iter().map(|e| e.len() as u64 + 8).sum::<u64>()
            }
            MessageBody::App { data } => 8 + data.len() as u64,
            _ => 48,
        }
    }
}

impl Message {
    /// Checks the rules no correct sender breaks (see [`Malformed`]): every term and index in
    /// range, log positions that a log can hold and that are not from a future term, append
    /// entries contiguous after `prev` with non-decreasing terms, rejection hints within the
    /// rejected range, and a valid snapshot configuration. [`crate::Node::step`] calls it
    /// first, so a malformed message never touches a node's state; transports may call it too.
    pub fn validate(&self) -> Result<(), Malformed> {
        let term = self.term;
        if term > Term::MAX {
            return Err(Malformed::TermOutOfRange(term));
        }
        let index_ok = |index: LogIndex| match index <= LogIndex::MAX {
            true => Ok(()),
            false => Err(Malformed::IndexOutOfRange(index)),
        };
        let position_ok = |position: EntryId| {
            index_ok(position.index)?;
            if (position.index.0 == 0) != (position.term.0 == 0) {
                return Err(Malformed::ImpossiblePosition(position));
            }
            if position.term > term {
                return Err(Malformed::PositionAboveTerm { position, term });
            }
            Ok(())
        };
        match &self.body {
            MessageBody::PreVote { last } | MessageBody::Vote { last, .. } => position_ok(*last),
            MessageBody::Append { prev, entries, commit } => {
                position_ok(*prev)?;
                index_ok(*commit)?;
                let mut previous = *prev;
                for e in entries {
                    let expected = previous
                        .index
                        .checked_plus(1)
                        .ok_or(Malformed::IndexOutOfRange(previous.index))?;
                    if e.index() != expected {
                        return Err(Malformed::EntriesNotContiguous { expected, found: e.id });
                    }
                    position_ok(e.id)?;
                    if e.term() < previous.term {
                        return Err(Malformed::TermsGoBackwards { entry: e.id, previous });
                    }
                    if e.kind == EntryKind::Config {
                        ConfigEntry::decode(&e.data)
                            .map_err(|reason| Malformed::ConfigEntry { entry: e.id, reason })?;
                    }
                    previous = e.id;
                }
                Ok(())
            }
            MessageBody::AppendResponse { result: Ok(index) } => index_ok(*index),
            MessageBody::AppendResponse { result: Err(h) } => {
                index_ok(h.rejected)?;
                index_ok(h.last_index)?;
                index_ok(h.hint.index)?;
                if h.hint.term > term {
                    return Err(Malformed::PositionAboveTerm { position: h.hint, term });
                }
                if h.hint.index > h.rejected || h.hint.index > h.last_index {
                    return Err(Malformed::HintOutOfRange {
                        hint: h.hint,
                        rejected: h.rejected,
                        last_index: h.last_index,
                    });
                }
                Ok(())
            }
            MessageBody::Heartbeat { commit, .. } => index_ok(*commit),
            MessageBody::ReadIndexResponse { index: Some(index), .. } => index_ok(*index),
            MessageBody::Snapshot { meta } => {
                position_ok(meta.last_included)?;
                meta.membership.validate().map_err(Malformed::SnapshotMembership)
            }
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::Propose { .. }
            | MessageBody::ReadIndex { .. }
            | MessageBody::ReadIndexResponse { index: None, .. }
            | MessageBody::TimeoutNow
            | MessageBody::App { .. } => Ok(()),
        }
    }

    /// Approximate encoded size of the whole message.
    pub fn size_bytes(&self) -> u64 {
        24 + self.body.size_bytes()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} @{} {:?}", self.from, self.to, self.term, self.body)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Debug for MessageBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageBody::PreVote { last } => write!(f, "PreVote last={last}"),
            MessageBody::PreVoteResponse { granted } => {
                write!(f, "PreVoteResponse {}", if *granted { "yes" } else { "no" })
            }
            MessageBody::Vote { last, transfer } => {
                write!(f, "Vote last={last}{}", if *transfer { " transfer" } else { "" })
            }
            MessageBody::VoteResponse { granted } => {
                write!(f, "VoteResponse {}", if *granted { "yes" } else { "no" })
            }
            MessageBody::Append { prev, entries, commit } => {
                write!(f, "Append prev={prev} ")?;
                match entries.as_slice() {
                    [] => write!(f, "[]")?,
                    [e] => write!(f, "[{:?}]", e)?,
                    [a, .., b] if entries.len() > 3 => write!(f, "[{}..{}]", a.id, b.id)?,
                    es => {
                        write!(f, "[")?;
                        for (i, e) in es.iter().enumerate() {
                            if i > 0 {
                                write!(f, ", ")?;
                            }
                            write!(f, "{e:?}")?;
                        }
                        write!(f, "]")?;
                    }
                }
                write!(f, " commit={commit}")
            }
            MessageBody::AppendResponse { result: Ok(index) } => {
                write!(f, "AppendResponse ok match={index}")
            }
            MessageBody::AppendResponse { result: Err(h) } => write!(
                f,
                "AppendResponse reject at={} hint={} last={}",
                h.rejected, h.hint, h.last_index
            ),
            MessageBody::Heartbeat { commit, read_round } => {
                write!(f, "Heartbeat commit={commit}")?;
                if *read_round > 0 {
                    write!(f, " read={read_round}")?;
                }
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_round } => {
                write!(f, "HeartbeatResponse")?;
                if *read_round > 0 {
                    write!(f, " read={read_round}")?;
                }
                Ok(())
            }
            MessageBody::Propose { entries } => write!(f, "Propose {} entries", entries.len()),
            MessageBody::ReadIndex { id } => write!(f, "ReadIndex id={}", id.0),
            MessageBody::ReadIndexResponse { id, index } => match index {
                Some(i) => write!(f, "ReadIndexResponse id={} index={i}", id.0),
                None => write!(f, "ReadIndexResponse id={} refused", id.0),
            },
            MessageBody::TimeoutNow => write!(f, "TimeoutNow"),
            MessageBody::Snapshot { meta } => write!(f, "Snapshot last={}", meta.last_included),
            MessageBody::App { data } => write!(f, "App {} bytes", data.len()),
        }
    }
}
