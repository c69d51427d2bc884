//! The core's one window onto durable state: the read-only [`LogView`] trait, and [`MemLog`],
//! an in-memory implementation for tests, benchmarks and embedders that keep their own disk.
//!
//! The core never writes through this trait. It emits what to persist in a
//! [`crate::Ready`], the caller writes it, and when the caller acknowledges the write with
//! [`crate::Node::on_persisted`], the core expects the view to show it.

use bytes::Bytes;

use crate::membership::Membership;
use crate::types::{Entry, EntryId, HardState, LogIndex, Term};

/// Why a log read could not be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The requested index is below the first index: it was compacted into a snapshot.
    #[error("log index {index} is compacted (first index is {first_index})")]
    Compacted {
        /// The index that was asked for.
        index: LogIndex,
        /// The first index still in the log.
        first_index: LogIndex,
    },
    /// The requested index is past the last index.
    #[error("log index {index} is past the last index {last_index}")]
    Unavailable {
        /// The index that was asked for.
        index: LogIndex,
        /// The last index in the log.
        last_index: LogIndex,
    },
    /// The storage below failed; the node cannot go on safely and must stop.
    #[error("log storage failed: {0}")]
    Storage(String),
}

/// What a node starts from: its durable hard state and the cluster configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialState {
    /// Term, vote and commit as last persisted.
    pub hard_state: HardState,
    /// The configuration in force at `hard_state.commit`: what the caller last wrote from
    /// [`crate::Ready::membership`] (or a snapshot's, or the bootstrap configuration). The
    /// node reads the configuration entries after its applied index back from the log, so
    /// one in force later in the log (the latest counts, committed or not) is found there.
    pub membership: Membership,
}

/// What a snapshot covers: the state machine after applying every entry through
/// `last_included`, and the configuration in force there. The snapshot's data is the caller's
/// business; the core only names snapshots by this metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last entry the snapshot includes.
    pub last_included: EntryId,
    /// The membership in force at `last_included`.
    pub membership: Membership,
}

/// Read-only access to the durable part of the log.
///
/// Indexes run from `first_index()` to `last_index()` inclusive. The entry just before the first
/// (`first_index() - 1`) is the last entry covered by a snapshot (or index 0, term 0, on a fresh
/// log); `term()` must answer for it, which is how the core checks a follower's log against a
/// compacted prefix.
///
/// Contract with the core:
/// - After [`crate::Node::on_persisted`] acknowledges a [`crate::Ready`], every entry and hard
///   state in it (and in every earlier `Ready`) is visible here.
/// - Entries handed to the view are never changed except by a later `Ready` that overwrites a
///   suffix (a conflicting leader) or by compaction of a prefix that is already applied.
pub trait LogView {
    /// Hard state and configuration to start from.
    fn initial_state(&self) -> InitialState;

    /// The first index still held in the log. It can only move forward (compaction).
    fn first_index(&self) -> LogIndex;

    /// The last index in the log; `first_index() - 1` when the log holds no entries.
    fn last_index(&self) -> LogIndex;

    /// The term of the entry at `index`, for `index` in `first_index()-1 ..= last_index()`.
    fn term(&self, index: LogIndex) -> Result<Term, LogError>;

    /// The newest snapshot the caller can send to a follower, if any. When the log has been
    /// compacted (`first_index() > 1`), it must cover the compacted prefix:
    /// `last_included.index >= first_index() - 1`, and its data must be durable. The leader
    /// sends it to followers that need compacted entries (Raft §7).
    fn snapshot(&self) -> Option<SnapshotMeta>;

    /// Appends to `out` the entries from `lo` through `hi` inclusive, stopping early once their
    /// total [`Entry::size_bytes`] would exceed `bytes_max`; at least one entry is always
    /// returned when `lo <= hi`, however large.
    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        bytes_max: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), LogError>;
}

/// Appends clones of `entries` to `out` under the byte rule of [`LogView::entries`]: stop
/// before the total [`Entry::size_bytes`] (counting `bytes_so_far` already taken) would exceed
/// `bytes_max`, but always take at least one entry overall. Returns the new byte total.
pub fn push_within_bytes<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    mut bytes_so_far: u64,
    bytes_max: u64,
    out: &mut Vec<Entry>,
) -> u64 {
    for e in entries {
        let size = e.size_bytes();
        if bytes_so_far > 0 && bytes_so_far + size > bytes_max {
            break;
        }
        bytes_so_far += size;
        out.push(e.clone());
    }
    bytes_so_far
}

/// An in-memory [`LogView`] that the caller also writes to.
///
/// It implements the caller's half of the contract with plain methods: [`MemLog::append`]
/// (overwriting a conflicting suffix), [`MemLog::set_hard_state`], [`MemLog::compact`] and
/// [`MemLog::reset_to_snapshot`]. Its snapshot (for [`LogView::snapshot`]) is its compaction
/// point: the caller keeps the matching state-machine data.
#[derive(Clone, Debug)]
pub struct MemLog {
    hard_state: HardState,
    membership: Membership,
    /// The configuration at the snapshot point.
    snapshot_membership: Membership,
    /// The id of the entry just before `entries[0]` (the snapshot point).
    /// Invariant: `entries[i].index == snapshot.index + 1 + i`.
    snapshot: EntryId,
    entries: Vec<Entry>,
}

impl MemLog {
    /// An empty log for a node in the given configuration.
    pub fn new(membership: Membership) -> MemLog {
        MemLog {
            hard_state: HardState::default(),
            snapshot_membership: membership.clone(),
            membership,
            snapshot: EntryId::default(),
            entries: Vec::new(),
        }
    }

    /// Writes the hard state.
    pub fn set_hard_state(&mut self, hard_state: HardState) {
        assert!(hard_state.term >= self.hard_state.term, "term went backwards");
        self.hard_state = hard_state;
    }

    /// The hard state last written.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends entries, first removing any existing entries at or after `entries[0].index`
    /// (the suffix a new leader overwrote).
    ///
    /// # Panics
    /// If the entries leave a gap after the current last index or are not consecutive.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index() > self.snapshot.index,
            "append at {} overwrites the compacted prefix ending at {}",
            first.id,
            self.snapshot
        );
        let keep = (first.index().0 - self.snapshot.index.0 - 1) as usize;
        assert!(keep <= self.entries.len(), "append at {} leaves a gap", first.id);
        self.entries.truncate(keep);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.index(), first.index().plus(i as u64), "entries not consecutive");
        }
        self.entries.extend_from_slice(entries);
    }

    /// Like [`MemLog::append`], but takes the entries by value instead of cloning them.
    pub fn append_owned(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let first = first.id;
        assert!(first.index > self.snapshot.index, "append at {first} overwrites the snapshot");
        let keep = (first.index.0 - self.snapshot.index.0 - 1) as usize;
        assert!(keep <= self.entries.len(), "append at {first} leaves a gap");
        self.entries.truncate(keep);
        let mut expect = first.index;
        for e in entries {
            assert_eq!(e.index(), expect, "entries not consecutive");
            expect = expect.next();
            self.entries.push(e);
        }
    }

    /// Writes the configuration in force at the commit index ([`crate::Ready::membership`]).
    pub fn set_membership(&mut self, membership: Membership) {
        self.membership = membership;
    }

    /// Like [`MemLog::compact`], recording `membership` (the configuration in force at
    /// `index`, [`crate::Node::membership_at`]) as the snapshot's.
    pub fn compact_with_membership(&mut self, index: LogIndex, membership: Membership) {
        if index > self.snapshot.index {
            self.compact(index);
            self.snapshot_membership = membership;
        }
    }

    /// Drops every entry up to and including `index`, which becomes the snapshot point. The
    /// snapshot's configuration is the one last written.
    pub fn compact(&mut self, index: LogIndex) {
        if index <= self.snapshot.index {
            return;
        }
        let term = self.term(index).expect("compact past the last index");
        let drop = (index.0 - self.snapshot.index.0) as usize;
        self.entries.drain(..drop);
        self.snapshot = EntryId::new(term, index);
        self.snapshot_membership = self.membership.clone();
    }

    /// Replaces the whole log with an empty one that starts after a snapshot at `snapshot`.
    pub fn reset_to_snapshot(&mut self, snapshot: EntryId, membership: Membership) {
        self.entries.clear();
        self.snapshot = snapshot;
        self.snapshot_membership = membership.clone();
        self.membership = membership;
    }

    /// Appends a normal entry with the given payload at the end, in `term`. A convenience for
    /// building logs in tests.
    pub fn push(&mut self, term: Term, data: impl Into<Bytes>) -> EntryId {
        let index = self.last_index().next();
        self.entries.push(Entry::new(term, index, data.into()));
        EntryId::new(term, index)
    }

    /// Every entry currently held (for tests and checkers).
    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl LogView for MemLog {
    fn initial_state(&self) -> InitialState {
        InitialState { hard_state: self.hard_state, membership: self.membership.clone() }
    }

    fn snapshot(&self) -> Option<SnapshotMeta> {
        (self.snapshot.index.0 > 0).then(|| SnapshotMeta {
            last_included: self.snapshot,
            membership: self.snapshot_membership.clone(),
        })
    }

    fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.snapshot.index.plus(self.entries.len() as u64)
    }

    fn term(&self, index: LogIndex) -> Result<Term, LogError> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return Err(LogError::Compacted { index, first_index: self.first_index() });
        }
        let offset = (index.0 - self.snapshot.index.0 - 1) as usize;
        match self.entries.get(offset) {
            Some(e) => Ok(e.term()),
            None => Err(LogError::Unavailable { index, last_index: self.last_index() }),
        }
    }

    fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        bytes_max: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), LogError> {
        if lo <= self.snapshot.index {
            return Err(LogError::Compacted { index: lo, first_index: self.first_index() });
        }
        if hi > self.last_index() {
            return Err(LogError::Unavailable { index: hi, last_index: self.last_index() });
        }
        let start = (lo.0 - self.snapshot.index.0 - 1) as usize;
        let end = (hi.0 - self.snapshot.index.0) as usize;
        push_within_bytes(&self.entries[start..end.max(start)], 0, bytes_max, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn log_with_terms(terms: &[u64]) -> MemLog {
        let mut log = MemLog::new(Membership::voters([NodeId(1)]));
        for &t in terms {
            log.push(Term(t), "x");
        }
        log
    }

    #[test]
    fn append_overwrites_conflicting_suffix() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.append(&[Entry::new(Term(3), LogIndex(3), Bytes::from_static(b"y"))]);
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.term(LogIndex(3)), Ok(Term(3)));
    }

    #[test]
    fn compaction_moves_first_index_and_keeps_snapshot_term() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.compact(LogIndex(2));
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.term(LogIndex(2)), Ok(Term(1)));
        assert!(matches!(log.term(LogIndex(1)), Err(LogError::Compacted { .. })));
        let mut out = Vec::new();
        log.entries(LogIndex(3), LogIndex(4), u64::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn entries_respect_byte_limit_but_return_at_least_one() {
        let log = log_with_terms(&[1, 1, 1, 1]);
        let mut out = Vec::new();
        log.entries(LogIndex(1), LogIndex(4), 1, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        out.clear();
        let two = 2 * (1 + crate::types::ENTRY_OVERHEAD_BYTES);
        log.entries(LogIndex(1), LogIndex(4), two, &mut out).unwrap();
        assert_eq!(out.len(), 2);
    }
}
