//! The core's log: the durable part (read through [`LogView`]) plus the unstable tail that has
//! been appended in memory but not yet acknowledged durable, and the commit/apply pointers.
//!
//! ```text
//!   first_index            offset                 last_index
//!   |  durable (LogView)   |  unstable (in memory)  |
//!   [......................][.......................]
//!          ^ applied  ^ applying     ^ committed
//! ```
//!
//! Invariants (checked after every change):
//! `first_index - 1 <= applied <= applying <= committed <= last_index`, and
//! `applying <= persisted_index()`: only entries durable locally are handed out for apply.

use std::collections::VecDeque;

use crate::log_view::{LogError, LogView, push_within_bytes};
use crate::types::{Entry, EntryId, LogIndex, Term};

pub(crate) struct RaftLog<L> {
    store: L,
    /// Entries not yet acknowledged durable. Invariant: `unstable[i].index == offset + i`.
    unstable: VecDeque<Entry>,
    /// Index of `unstable[0]` (or where it would be). Everything below is durable in `store`.
    offset: LogIndex,
    /// Unstable entries at or above this index have not yet been handed out in a `Ready`.
    /// Invariant: `offset <= handed_out <= last_index + 1`.
    handed_out: LogIndex,
    /// The highest index known committed.
    pub(crate) committed: LogIndex,
    /// The highest index handed to the caller to apply.
    pub(crate) applying: LogIndex,
    /// The highest index the caller reported applied.
    pub(crate) applied: LogIndex,
    /// A snapshot this node accepted from the leader whose installation is not yet durable.
    /// While set, the log below `offset` is this snapshot point and nothing else: the store
    /// still shows the old log until the caller installs the snapshot.
    installing: Option<EntryId>,
}

fn storage_failure(e: LogError) -> ! {
    // A failed read of the durable log leaves the node unable to proceed safely; the caller's
    // storage is expected to have reported the failure already (file and offset).
    panic!("raft log read failed: {e}")
}

impl<L: LogView> RaftLog<L> {
    pub(crate) fn new(store: L, committed: LogIndex, applied: LogIndex) -> RaftLog<L> {
        let offset = store.last_index().next();
        let mut log = RaftLog {
            store,
            unstable: VecDeque::new(),
            offset,
            handed_out: offset,
            committed,
            applying: applied,
            applied,
            installing: None,
        };
        // A hard state may record a commit index beyond a log that lost its unsynced tail is
        // impossible by contract (entries are durable before the hard state that commits them)
        // but be strict about it.
        assert!(
            log.committed <= log.last_index(),
            "hard state commit {} is past the last log index {}",
            log.committed,
            log.last_index()
        );
        if log.applied < log.first_index().prev() {
            log.applied = log.first_index().prev();
            log.applying = log.applied;
        }
        log.check();
        log
    }

    pub(crate) fn store(&self) -> &L {
        &self.store
    }

    pub(crate) fn store_mut(&mut self) -> &mut L {
        &mut self.store
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        match self.installing {
            Some(snap) => snap.index.next(),
            None => self.store.first_index(),
        }
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.offset.plus(self.unstable.len() as u64).prev()
    }

    pub(crate) fn last_id(&self) -> EntryId {
        let last = self.last_index();
        EntryId::new(self.term(last).unwrap_or_else(|e| storage_failure(e)), last)
    }

    /// The highest index durable locally.
    pub(crate) fn persisted_index(&self) -> LogIndex {
        self.offset.prev()
    }

    /// Term at `index`; `Err(Compacted)` below the snapshot point.
    pub(crate) fn term(&self, index: LogIndex) -> Result<Term, LogError> {
        if index >= self.offset {
            let i = (index.0 - self.offset.0) as usize;
            match self.unstable.get(i) {
                Some(e) => Ok(e.term()),
                None => Err(LogError::Unavailable { index, last_index: self.last_index() }),
            }
        } else if let Some(snap) = self.installing {
            // `offset == snap.index + 1` while installing: only the snapshot point is left.
            if index == snap.index {
                Ok(snap.term)
            } else {
                Err(LogError::Compacted { index, first_index: snap.index.next() })
            }
        } else {
            self.store.term(index)
        }
    }

    /// Term at `index`, or `None` if the index is outside the log (compacted or past the end).
    pub(crate) fn term_opt(&self, index: LogIndex) -> Option<Term> {
        match self.term(index) {
            Ok(t) => Some(t),
            Err(LogError::Storage(msg)) => storage_failure(LogError::Storage(msg)),
            Err(_) => None,
        }
    }

    pub(crate) fn matches(&self, id: EntryId) -> bool {
        self.term_opt(id.index) == Some(id.term)
    }

    /// Entries `lo..=hi`, up to `bytes_max` (at least one).
    pub(crate) fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        bytes_max: u64,
        out: &mut Vec<Entry>,
    ) -> Result<(), LogError> {
        if lo > hi {
            return Ok(());
        }
        assert!(hi <= self.last_index(), "entries past the last index");
        let mut bytes = 0;
        if lo < self.offset && self.installing.is_some() {
            return Err(LogError::Compacted { index: lo, first_index: self.first_index() });
        }
        if lo < self.offset {
            let store_hi = hi.min(self.offset.prev());
            let before = out.len();
            self.store.entries(lo, store_hi, bytes_max, out)?;
            bytes = out[before..].iter().map(Entry::size_bytes).sum::<u64>();
            let got = out.len() - before;
            if (got as u64) < store_hi.0 - lo.0 + 1 || store_hi == hi {
                return Ok(());
            }
        }
        let start = lo.max(self.offset);
        let from = (start.0 - self.offset.0) as usize;
        let to = (hi.0 - self.offset.0) as usize;
        push_within_bytes(self.unstable.range(from..=to), bytes, bytes_max, out);
        Ok(())
    }

    /// Appends entries as the leader (they continue the log).
    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index(), self.last_index().next(), "leader append must continue the log");
        self.unstable.push_back(entry);
    }

    /// The follower's side of AppendEntries (Raft §5.3, receiver steps 2-5): checks `prev`,
    /// skips entries already held, truncates a conflicting suffix and appends the rest (moved,
    /// not copied). Returns the index of the last new entry and the index from which the log
    /// was written (everything from there was replaced or added; `None` if every entry was
    /// already held), or `None` if `prev` does not match.
    pub(crate) fn maybe_append(
        &mut self,
        prev: EntryId,
        mut entries: Vec<Entry>,
    ) -> Option<(LogIndex, Option<LogIndex>)> {
        if !self.matches(prev) {
            return None;
        }
        let last_new = prev.index.plus(entries.len() as u64);
        let mut written = None;
        // The first entry that is not already in our log (by index and term).
        if let Some(pos) = entries.iter().position(|e| !self.matches(e.id)) {
            let first = entries[pos].index();
            assert!(
                first > self.committed,
                "entry {} conflicts with committed entry (commit {})",
                entries[pos].id,
                self.committed
            );
            entries.drain(..pos);
            written = Some(first);
            self.truncate_and_append(entries);
        }
        Some((last_new, written))
    }

    fn truncate_and_append(&mut self, entries: Vec<Entry>) {
        let first = entries[0].index();
        let end = self.last_index().next();
        assert!(first <= end, "append at {first} leaves a gap after {end}");
        if first == end {
            // Plain append.
        } else if first <= self.offset {
            // Replaces part of the durable log: everything from `first` becomes unstable.
            self.offset = first;
            self.unstable.clear();
        } else {
            self.unstable.truncate((first.0 - self.offset.0) as usize);
        }
        self.handed_out = self.handed_out.min(first);
        self.unstable.extend(entries);
        self.check();
    }

    /// Whether some unstable entries were not yet handed out.
    pub(crate) fn has_unpersisted(&self) -> bool {
        self.handed_out <= self.last_index()
    }

    /// Hands out the unstable entries not yet handed out, and marks them so.
    pub(crate) fn take_unpersisted(&mut self, out: &mut Vec<Entry>) {
        let from = (self.handed_out.0 - self.offset.0) as usize;
        out.extend(self.unstable.range(from..).cloned());
        self.handed_out = self.last_index().next();
    }

    /// The caller made every entry through `id` durable. Ignored if `id` was since
    /// overwritten by a new leader or is already durable.
    pub(crate) fn stable_to(&mut self, id: EntryId) {
        if id.index < self.offset {
            return;
        }
        let i = (id.index.0 - self.offset.0) as usize;
        match self.unstable.get(i) {
            Some(e) if e.term() == id.term => {
                self.unstable.drain(..=i);
                self.offset = id.index.next();
                self.handed_out = self.handed_out.max(self.offset);
            }
            _ => {}
        }
        self.check();
    }

    /// Replaces the whole log by the snapshot point `snap` (a follower accepting a snapshot
    /// from the leader, Raft §7): nothing is left to persist or apply below it, and the state
    /// machine counts as applied through it once the caller installs it. Until
    /// [`RaftLog::snapshot_installed`], the store is not read.
    pub(crate) fn restore(&mut self, snap: EntryId) {
        assert!(snap.index > self.committed, "restoring {snap} at or below the commit index");
        self.unstable.clear();
        self.offset = snap.index.next();
        self.handed_out = self.offset;
        self.committed = snap.index;
        self.applying = snap.index;
        self.applied = snap.index;
        self.installing = Some(snap);
        self.check();
    }

    /// The caller made the snapshot `snap`, handed out after [`RaftLog::restore`], durable:
    /// the store shows it now. A newer snapshot accepted meanwhile (a later `restore`) stays
    /// pending until its own `Ready` is durable.
    ///
    /// # Panics
    /// If the store does not show the snapshot point (the caller broke the `Ready` contract).
    pub(crate) fn snapshot_installed(&mut self, snap: EntryId) {
        if self.installing == Some(snap) {
            self.installing = None;
        }
        let term = self.store.term(snap.index);
        // The caller may already have compacted past the snapshot (it took a snapshot of its
        // own after installing this one, before this acknowledgement): its log then starts
        // after the snapshot point, which it could only have reached through it.
        let compacted_past = self.store.first_index() > snap.index.next();
        assert!(
            compacted_past
                || (term == Ok(snap.term) && self.store.first_index() <= snap.index.next()),
            "the caller's log does not show the installed snapshot {snap} (term there: {term:?}, \
             first index {})",
            self.store.first_index()
        );
        self.check();
    }

    pub(crate) fn commit_to(&mut self, index: LogIndex) -> bool {
        if index <= self.committed {
            return false;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} past the last index {}",
            self.last_index()
        );
        self.committed = index;
        true
    }

    /// The highest index that may be handed out for apply now.
    pub(crate) fn applicable(&self) -> LogIndex {
        self.committed.min(self.persisted_index())
    }

    pub(crate) fn has_applicable(&self) -> bool {
        self.applicable() > self.applying
    }

    /// Hands out committed, durable entries after `applying`, up to `bytes_max`.
    pub(crate) fn take_applicable(&mut self, bytes_max: u64, out: &mut Vec<Entry>) {
        let hi = self.applicable();
        if hi <= self.applying {
            return;
        }
        let before = out.len();
        self.entries(self.applying.next(), hi, bytes_max, out)
            .unwrap_or_else(|e| storage_failure(e));
        if let Some(last) = out[before..].last() {
            self.applying = last.index();
        }
        self.check();
    }

    pub(crate) fn applied_to(&mut self, index: LogIndex) {
        assert!(
            index <= self.applying,
            "applied {index} was never handed out (applying {})",
            self.applying
        );
        if index > self.applied {
            self.applied = index;
        }
    }

    /// Walks back from `index` to the last entry whose term is at most `term` (the conflict
    /// hint search, Raft §5.3). Returns that entry's id; stops at the compacted prefix.
    pub(crate) fn find_at_or_below_term(&self, index: LogIndex, term: Term) -> EntryId {
        let mut i = index.min(self.last_index());
        let floor = self.first_index().prev();
        loop {
            match self.term_opt(i) {
                Some(t) if t <= term => return EntryId::new(t, i),
                Some(_) if i > floor => i = i.prev(),
                Some(t) => return EntryId::new(t, i),
                None => return EntryId::new(Term(0), floor),
            }
        }
    }

    /// Asserts the pointer chain `first-1 <= applied <= applying <= committed <= last`.
    pub(crate) fn check(&self) {
        let first = self.first_index();
        assert!(
            first.prev() <= self.applied
                && self.applied <= self.applying
                && self.applying <= self.committed
                && self.committed <= self.last_index(),
            "log pointer chain broken: first={first} applied={} applying={} committed={} last={}",
            self.applied,
            self.applying,
            self.committed,
            self.last_index()
        );
        assert!(self.applying <= self.persisted_index().max(first.prev()));
        assert!(self.offset <= self.handed_out && self.handed_out <= self.last_index().next());
    }
}
