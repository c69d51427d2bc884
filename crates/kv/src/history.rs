//! A key's versions, oldest first, as a persistent sequence: copies share all but the newest
//! few versions, so a write to a key whose history a snapshot job or a published read view
//! still holds copies a bounded part of it, not every version.
//!
//! Before this type a history was an `Arc<Vec<Version>>`, and the first write to a key after
//! each copy of the index cloned its whole history: with serializable reads (each may publish
//! a read view) between writes to a few hot keys, every put copied its key's every version,
//! and throughput fell as histories grew until a compaction (BENCHMARKS, "Hot keys").
//!
//! Layout: sealed runs, shared and never changed, then an open tail of at most [`OPEN_MAX`]
//! versions. A full tail becomes a run; runs merge while the one before is no longer than
//! the last (a binary counter), so run lengths fall strictly from the oldest and there are
//! O(log n) of them. A write to a shared history copies the tail and the list of run
//! pointers; each version is copied O(log n) times over its life. Keys with up to
//! [`OPEN_MAX`] versions (most of them) have no runs and cost what a `Vec` did.

use std::ops::Index;
use std::sync::Arc;

use crate::mvcc::Version;

/// Versions in the open tail at most; a write to a shared history copies this many at most.
pub(crate) const OPEN_MAX: usize = 16;

/// A key's versions, oldest first (see the module docs). Cloning is O(1). Two histories are
/// equal when they hold the same versions, however they are laid out.
#[derive(Clone, Debug, Default)]
pub(crate) struct History(Arc<Parts>);

impl PartialEq for History {
    fn eq(&self, other: &History) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for History {}

#[derive(Clone, Debug, Default)]
struct Parts {
    /// The newest versions, at most [`OPEN_MAX`].
    open: Vec<Version>,
    /// Older versions in runs, oldest first, each run shorter than the one before it; `None`
    /// while there are none (a key with few versions pays one pointer for them, where a bare
    /// `Vec` would take three words: with a million keys that is 16 MB).
    #[allow(clippy::box_collection)]
    runs: Option<Box<Vec<Arc<[Version]>>>>,
}

impl Parts {
    fn runs(&self) -> &[Arc<[Version]>] {
        self.runs.as_deref().map_or(&[], |r| r.as_slice())
    }
}

impl History {
    /// A history holding `versions`, oldest first.
    pub(crate) fn from_vec(mut versions: Vec<Version>) -> History {
        if versions.len() <= OPEN_MAX {
            versions.shrink_to_fit();
            return History(Arc::new(Parts { open: versions, runs: None }));
        }
        let run: Arc<[Version]> = Arc::from(versions);
        History(Arc::new(Parts { open: Vec::new(), runs: Some(Box::new(vec![run])) }))
    }

    /// Number of versions.
    pub(crate) fn len(&self) -> usize {
        self.0.runs().iter().map(|r| r.len()).sum::<usize>() + self.0.open.len()
    }

    /// The newest version.
    pub(crate) fn last(&self) -> Option<&Version> {
        self.0.open.last().or_else(|| self.0.runs().last().and_then(|r| r.last()))
    }

    /// The newest version, to change in place (copying what a copy of this history shares).
    /// Only the corruption hook of tests changes a version in place.
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn last_mut(&mut self) -> Option<&mut Version> {
        let parts = Arc::make_mut(&mut self.0);
        if parts.open.is_empty() {
            // Bring the last run back into the tail; only tests change versions in place.
            let run = parts.runs.as_mut().and_then(|r| r.pop())?;
            parts.open = run.to_vec();
            if parts.runs.as_ref().is_some_and(|r| r.is_empty()) {
                parts.runs = None;
            }
        }
        parts.open.last_mut()
    }

    /// The versions, oldest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = &Version> + Clone + '_ {
        self.0.runs().iter().flat_map(|r| r.iter()).chain(self.0.open.iter())
    }

    /// The number of leading versions for which `pred` holds, `pred` being true for a prefix
    /// of the history and false for the rest (as `slice::partition_point`).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&Version) -> bool) -> usize {
        let mut before = 0;
        for run in self.0.runs() {
            if run.last().is_some_and(&mut pred) {
                before += run.len();
            } else {
                return before + run.partition_point(pred);
            }
        }
        before + self.0.open.partition_point(pred)
    }

    /// Appends `v` as the newest version.
    pub(crate) fn push(&mut self, v: Version) {
        let parts = Arc::make_mut(&mut self.0);
        if parts.open.len() == OPEN_MAX {
            let sealed: Arc<[Version]> = Arc::from(std::mem::take(&mut parts.open));
            let runs = parts.runs.get_or_insert_with(Default::default);
            runs.push(sealed);
            while runs.len() >= 2 && runs[runs.len() - 2].len() <= runs[runs.len() - 1].len() {
                let newer = runs.pop().expect("two runs");
                let older = runs.pop().expect("two runs");
                runs.push(older.iter().chain(newer.iter()).cloned().collect());
            }
        }
        crate::mvcc::push_version(&mut parts.open, v);
    }

    /// Drops the `n` oldest versions.
    pub(crate) fn drop_oldest(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let rest: Vec<Version> = self.iter().skip(n).cloned().collect();
        *self = History::from_vec(rest);
    }
}

impl Index<usize> for History {
    type Output = Version;

    fn index(&self, mut i: usize) -> &Version {
        for run in self.0.runs() {
            if i < run.len() {
                return &run[i];
            }
            i -= run.len();
        }
        &self.0.open[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(revision: i64) -> Version {
        Version {
            mod_revision: revision,
            sub_revision: 0,
            create_revision: 1,
            version: revision,
            lease: 0,
            value: Some(bytes::Bytes::from(revision.to_string())),
        }
    }

    fn revisions(h: &History) -> Vec<i64> {
        h.iter().map(|v| v.mod_revision).collect()
    }

    #[test]
    fn runs_stay_few_and_shorter_than_the_one_before() {
        let mut h = History::default();
        for r in 1..=10_000 {
            h.push(version(r));
            let runs = h.0.runs();
            assert!(runs.windows(2).all(|w| w[0].len() > w[1].len()), "at {r}");
            assert!(runs.len() <= 10, "{} runs at {r}", runs.len());
            assert!(h.0.open.len() <= OPEN_MAX);
        }
        assert_eq!(revisions(&h), (1..=10_000).collect::<Vec<_>>());
        assert_eq!(h.len(), 10_000);
    }

    #[test]
    fn a_write_to_a_shared_history_leaves_the_copy_as_it_was_and_shares_the_runs() {
        let mut h = History::default();
        for r in 1..=1_000 {
            h.push(version(r));
        }
        let copy = h.clone();
        h.push(version(1_001));
        h.last_mut().unwrap().lease = 9;
        assert_eq!(revisions(&copy), (1..=1_000).collect::<Vec<_>>());
        assert!(copy.iter().all(|v| v.lease == 0));
        assert_eq!(h.len(), 1_001);
        assert_eq!(h.last().unwrap().lease, 9);
        // The sealed runs are the same allocations in both.
        let shared = h.0.runs().iter().zip(copy.0.runs()).filter(|(a, b)| Arc::ptr_eq(a, b));
        assert_eq!(shared.count(), copy.0.runs().len());
    }

    #[test]
    fn last_mut_reaches_into_a_run_when_the_tail_is_empty() {
        let mut h = History::from_vec((1..=40).map(version).collect());
        assert!(h.0.open.is_empty());
        h.last_mut().unwrap().lease = 5;
        assert_eq!(h[39].lease, 5);
        assert_eq!(revisions(&h), (1..=40).collect::<Vec<_>>());
    }

    #[test]
    fn equal_versions_are_equal_histories_whatever_the_layout() {
        let mut pushed = History::default();
        for r in 1..=100 {
            pushed.push(version(r));
        }
        let whole = History::from_vec((1..=100).map(version).collect());
        assert_ne!(pushed.0.runs().len(), whole.0.runs().len());
        assert_eq!(pushed, whole);
        assert_ne!(pushed, History::from_vec((1..=99).map(version).collect()));
    }

    proptest! {
        /// Every operation agrees with a `Vec` of the same versions.
        #[test]
        fn behaves_as_a_vec(ops in prop::collection::vec((0u8..4, 0usize..40), 1..300)) {
            let mut h = History::default();
            let mut model: Vec<Version> = Vec::new();
            let mut copies = Vec::new();
            let mut next = 1;
            for (op, n) in ops {
                match op {
                    0 | 1 => {
                        h.push(version(next));
                        model.push(version(next));
                        next += 1;
                    }
                    2 => {
                        let n = n.min(model.len());
                        h.drop_oldest(n);
                        model.drain(..n);
                    }
                    _ => copies.push((h.clone(), model.clone())),
                }
                prop_assert_eq!(h.len(), model.len());
                prop_assert_eq!(h.iter().next(), model.first());
                prop_assert_eq!(h.last(), model.last());
                prop_assert!(h.iter().eq(model.iter()));
                prop_assert!(h.iter().rev().eq(model.iter().rev()));
                for (i, v) in model.iter().enumerate() {
                    prop_assert_eq!(&h[i], v);
                }
                let at = (n as i64) * 3;
                prop_assert_eq!(
                    h.partition_point(|v| v.mod_revision <= at),
                    model.partition_point(|v| v.mod_revision <= at)
                );
            }
            for (copy, model) in copies {
                prop_assert!(copy.iter().eq(model.iter()));
            }
        }
    }
}
