//! The small value types every other module speaks in: ids, terms, indexes, entries and the
//! durable hard state.
//!
//! Ids are newtypes so a term can never be passed where an index is expected; "none" is always
//! `Option`, never a sentinel `0`. Positions in the log are written `term/index` everywhere
//! (Display, traces, logs), e.g. `3/17`.

use std::fmt;

use bytes::Bytes;

/// A member of the cluster. Any `u64` is a valid id; "no node" is `Option<NodeId>::None`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

/// A Raft term: the logical clock of the cluster (Raft §5.1). Terms only grow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

/// A position in the log. Index 0 is the empty prefix before the first entry (its term is 0);
/// real entries start at 1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The largest index in use. `u64::MAX` is kept out of use (no message may carry it, no log
    /// reaches it), so that [`LogIndex::next`] of every index in use is defined.
    pub const MAX: LogIndex = LogIndex(u64::MAX - 1);

    /// The index just after this one.
    ///
    /// # Panics
    /// On overflow, which only a bug can cause: indexes from the wire are checked against
    /// [`LogIndex::MAX`] before use (see [`crate::Message::validate`]).
    #[inline]
    pub fn next(self) -> LogIndex {
        LogIndex(self.0.checked_add(1).expect("log index overflow"))
    }

    /// The index just before this one, saturating at 0.
    #[inline]
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// `self + n`.
    ///
    /// # Panics
    /// On overflow (a bug, as for [`LogIndex::next`]); use [`LogIndex::checked_plus`] on
    /// values from the wire.
    #[inline]
    pub fn plus(self, n: u64) -> LogIndex {
        LogIndex(self.0.checked_add(n).expect("log index overflow"))
    }

    /// `self + n`, or `None` if that is past [`LogIndex::MAX`].
    #[inline]
    pub fn checked_plus(self, n: u64) -> Option<LogIndex> {
        self.0.checked_add(n).map(LogIndex).filter(|i| *i <= LogIndex::MAX)
    }
}

impl Term {
    /// The largest term in use. `u64::MAX` is kept out of use (no message may carry it, no node
    /// campaigns into it), so that [`Term::next`] of every term in use is defined.
    pub const MAX: Term = Term(u64::MAX - 1);

    /// The term after this one.
    ///
    /// # Panics
    /// On overflow, which only a bug can cause: terms from the wire are checked against
    /// [`Term::MAX`], and a node campaigns only through [`Term::checked_next`].
    #[inline]
    pub fn next(self) -> Term {
        Term(self.0.checked_add(1).expect("term overflow"))
    }

    /// The term after this one, or `None` if that is past [`Term::MAX`]: a node in the last
    /// usable term cannot start an election.
    #[inline]
    pub fn checked_next(self) -> Option<Term> {
        (self < Term::MAX).then(|| Term(self.0 + 1))
    }
}

macro_rules! display_as_number {
    ($t:ty, $prefix:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}
display_as_number!(NodeId, "n");
display_as_number!(Term, "");
display_as_number!(LogIndex, "");

/// The position of an entry: its term and index, written `term/index`.
///
/// Two logs that hold an entry with the same `EntryId` are identical up to that entry (the Log
/// Matching Property, Raft §5.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntryId {
    /// The term in which a leader created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
}

impl EntryId {
    /// Builds an id from a term and an index.
    pub fn new(term: Term, index: LogIndex) -> EntryId {
        EntryId { term, index }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.term.0, self.index.0)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialOrd for EntryId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Logs compare by last term first, then by last index: the "at least as up-to-date" order of
/// Raft §5.4.1.
impl Ord for EntryId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.term, self.index).cmp(&(other.term, other.index))
    }
}

/// What an entry carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum EntryKind {
    /// Application data proposed by a client; opaque to Raft.
    Normal,
    /// The empty entry a new leader appends at the start of its term so that it can commit
    /// entries of earlier terms (Raft §5.4.2, §8). The state machine skips it.
    Noop,
    /// A change of the cluster configuration; its data is an encoded
    /// [`crate::membership::ConfigEntry`]. It takes effect when appended; the state machine
    /// skips it.
    Config,
}

impl EntryKind {
    /// Stable one-byte code used by encodings (storage, network).
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Normal => 0,
            EntryKind::Noop => 1,
            EntryKind::Config => 2,
        }
    }

    /// Inverse of [`EntryKind::code`]; `None` for an unknown code (bad input, never a panic).
    pub fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Normal),
            1 => Some(EntryKind::Noop),
            2 => Some(EntryKind::Config),
            _ => None,
        }
    }
}

/// One entry of the replicated log.
///
/// The payload is a [`Bytes`], so handing an entry to storage, to several followers and to the
/// state machine shares one buffer instead of copying it.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Term and index of the entry.
    pub id: EntryId,
    /// What the entry carries.
    pub kind: EntryKind,
    /// The payload (empty for `Noop`).
    pub data: Bytes,
}

impl Entry {
    /// A normal entry with the given payload.
    pub fn new(term: Term, index: LogIndex, data: Bytes) -> Entry {
        Entry { id: EntryId::new(term, index), kind: EntryKind::Normal, data }
    }

    /// The entry's term.
    #[inline]
    pub fn term(&self) -> Term {
        self.id.term
    }

    /// The entry's index.
    #[inline]
    pub fn index(&self) -> LogIndex {
        self.id.index
    }

    /// Bytes the entry counts for in batching and flow-control limits: its payload plus a small
    /// fixed overhead, so that empty entries still cost something.
    #[inline]
    pub fn size_bytes(&self) -> u64 {
        self.data.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// Fixed per-entry cost used in byte limits (term, index, kind and framing).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            EntryKind::Noop => write!(f, "{} noop", self.id),
            EntryKind::Config => write!(f, "{} config({}B)", self.id, self.data.len()),
            EntryKind::Normal => match std::str::from_utf8(&self.data) {
                Ok(s) if s.len() <= 32 => write!(f, "{} {:?}", self.id, s),
                _ => write!(f, "{} ({}B)", self.id, self.data.len()),
            },
        }
    }
}

/// The state every node must make durable before it sends any message that depends on it
/// (Raft Figure 2, "Persistent state on all servers").
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known to be committed. Persisting it is an optimisation (a restarted
    /// node can apply up to it at once); it may lag the real commit index.
    pub commit: LogIndex,
}

/// The role a node plays in its current term.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election without raising its term (Pre-Vote, dissertation
    /// §9.6).
    PreCandidate,
    /// Runs for leader in a new term.
    Candidate,
    /// Leads the current term.
    Leader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_by_term_then_index_raft_5_4_1() {
        let a = EntryId::new(Term(2), LogIndex(10));
        let b = EntryId::new(Term(3), LogIndex(1));
        let c = EntryId::new(Term(3), LogIndex(2));
        assert!(a < b, "a larger last term is more up to date whatever the index");
        assert!(b < c, "on equal terms the longer log is more up to date");
        assert_eq!(format!("{a}"), "2/10");
    }

    #[test]
    fn checked_arithmetic_keeps_out_of_the_reserved_maximum() {
        assert_eq!(Term::MAX.checked_next(), None, "no election past the last usable term");
        assert_eq!(Term(5).checked_next(), Some(Term(6)));
        assert_eq!(LogIndex(u64::MAX - 2).checked_plus(1), Some(LogIndex::MAX));
        assert_eq!(LogIndex::MAX.checked_plus(1), None);
        assert_eq!(LogIndex(7).checked_plus(u64::MAX), None);
    }

    #[test]
    fn entry_kind_codes_round_trip_and_reject_unknown() {
        for k in [EntryKind::Normal, EntryKind::Noop, EntryKind::Config] {
            assert_eq!(EntryKind::from_code(k.code()), Some(k));
        }
        assert_eq!(EntryKind::from_code(200), None);
    }
}
