//! The multi-version index: every key's history of versions, ordered by key.
//!
//! One persistent B-tree map (`imbl::OrdMap`) from key to a short vector of versions, oldest
//! first; cloning it is O(1) and shares every node, so a snapshot of the store neither pauses
//! the apply loop for long nor copies the index. A read at revision `r`
//! takes, for each key, the last version with `mod_revision <= r`; a tombstone there means the
//! key did not exist at `r`. Each key is stored once (a `Bytes`) however many versions it has,
//! and values are `Bytes` shared with the responses that return them, never copied.

use imbl::ordmap::Entry;
use imbl::{OrdMap, OrdSet};
use std::collections::BinaryHeap;
use std::ops::Bound;

use bytes::Bytes;

use crate::api::KeyValue;
use crate::event::{Event, EventKind, RevisionEvents};

/// One version of a key: a put, or a deletion (tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    /// Revision of the write. Invariant: strictly increasing along a key's history.
    pub(crate) mod_revision: i64,
    /// Position of the write among the writes of its revision (etcd's sub-revision): 0 for
    /// the first key a command changed, 1 for the second, and so on. It orders the events of
    /// one revision in history as they were applied. Invariant: distinct among the versions of
    /// one revision when applied here; a store restored from a snapshot of format 3 or older
    /// has 0 everywhere, and ties are then broken by key (see [`Index::history`]).
    pub(crate) sub_revision: u32,
    /// Revision of the put that created this generation of the key; 0 for a tombstone.
    pub(crate) create_revision: i64,
    /// Puts since creation (1 for the creating put); 0 for a tombstone.
    pub(crate) version: i64,
    /// Attached lease, 0 for none (and for a tombstone).
    pub(crate) lease: i64,
    /// The value, `None` for a tombstone.
    pub(crate) value: Option<Bytes>,
}

impl Version {
    fn to_kv(&self, key: &Bytes) -> Option<KeyValue> {
        self.value.as_ref().map(|value| KeyValue {
            key: key.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: value.clone(),
            lease: self.lease,
        })
    }
}

/// A parsed key range: etcd's `key` plus `range_end` convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyRange {
    /// Exactly one key (`range_end` empty).
    Single(Bytes),
    /// `[start, end)`, or every key `>= start` when `end` is `None` (`range_end == "\0"`).
    Span { start: Bytes, end: Option<Bytes> },
}

impl KeyRange {
    pub(crate) fn new(key: &Bytes, range_end: &Bytes) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Single(key.clone())
        } else if range_end.as_ref() == b"\0" {
            KeyRange::Span { start: key.clone(), end: None }
        } else {
            KeyRange::Span { start: key.clone(), end: Some(range_end.clone()) }
        }
    }

    /// Whether `key` lies in the range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_ref() == key,
            KeyRange::Span { start, end } => {
                key >= start.as_ref() && end.as_ref().is_none_or(|e| key < e.as_ref())
            }
        }
    }

    /// Whether the range selects no key at all (`range_end <= key`).
    fn is_empty(&self) -> bool {
        matches!(self, KeyRange::Span { start, end: Some(end) } if end <= start)
    }

    /// `BTreeMap::range` bounds. Callers check `is_empty` first: `range` panics on start > end.
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            KeyRange::Single(k) => (Bound::Included(k.as_ref()), Bound::Included(k.as_ref())),
            KeyRange::Span { start, end } => (
                Bound::Included(start.as_ref()),
                match end {
                    Some(e) => Bound::Excluded(e.as_ref()),
                    None => Bound::Unbounded,
                },
            ),
        }
    }
}

/// What a put replaced, and what it wrote.
pub(crate) struct Replaced {
    /// The previous pair, if the key existed.
    pub(crate) prev: Option<KeyValue>,
    /// The pair written.
    pub(crate) kv: KeyValue,
    /// The previous version's lease (0 if none or no previous version).
    pub(crate) prev_lease: i64,
    /// The lease of the new version.
    pub(crate) lease: i64,
}

/// The index of all keys and their histories.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Index {
    /// Invariant: every history is non-empty, strictly increasing in `mod_revision`, starts
    /// with a put and has no two tombstones in a row.
    ///
    /// A persistent B-tree: cloning the index (what a snapshot does) is O(1) and shares every
    /// node; a write after a clone copies only the nodes on its path. So a snapshot costs
    /// neither a pause proportional to the key count nor a second copy of the index.
    ///
    /// Each history is a persistent sequence behind an `Arc` ([`History`]): copying a leaf of
    /// the map (which a write does when the leaf is shared with a snapshot job's copy or a
    /// published read view) then copies pointers, not every key's versions; and the one
    /// history the write changes copies only its newest few versions if a copy still holds it,
    /// so a write to a hot key costs the same however long its history.
    pub(crate) keys: OrdMap<Bytes, History>,
    /// Keys compaction may shrink: those with more than one version. A key with one version
    /// always has a live one, which compaction keeps, so compaction only walks this set.
    /// Invariant: `key in dirty` iff `keys[key].len() > 1`.
    pub(crate) dirty: OrdSet<Bytes>,
    /// What the histories hold, in bytes: the sum of [`crate::size::version_bytes`] over every
    /// stored version. Kept by every write and compaction, recounted on restore
    /// ([`Index::recount_bytes`]). Invariant: equals [`Index::measure_bytes`].
    pub(crate) bytes: u64,
}

pub(crate) use crate::history::History;

/// Appends to a list of versions (a history being built, or a [`History`]'s open tail)
/// without `Vec`'s default minimum capacity of four: most keys hold one or two versions, and
/// with a million keys the slack would outweigh the data.
pub(crate) fn push_version(history: &mut Vec<Version>, v: Version) {
    if history.len() < 8 {
        history.reserve_exact(1);
    }
    history.push(v);
}

/// The version visible at `revision` in a history, if any (tombstones included).
fn visible(history: &History, revision: i64) -> Option<&Version> {
    let n = history.partition_point(|v| v.mod_revision <= revision);
    n.checked_sub(1).map(|i| &history[i])
}

impl Index {
    /// Live key-value pairs of `range` at `revision`, in key order.
    pub(crate) fn range_at<'a>(
        &'a self,
        range: &'a KeyRange,
        revision: i64,
    ) -> impl Iterator<Item = KeyValue> + 'a {
        let iter =
            if range.is_empty() { None } else { Some(self.keys.range::<_, [u8]>(range.bounds())) };
        iter.into_iter()
            .flatten()
            .filter_map(move |(key, history)| visible(history, revision)?.to_kv(key))
    }

    /// Number of live keys of `range` at `revision`.
    pub(crate) fn count_at(&self, range: &KeyRange, revision: i64) -> usize {
        if range.is_empty() {
            return 0;
        }
        self.keys
            .range::<_, [u8]>(range.bounds())
            .filter(|(_, history)| visible(history, revision).is_some_and(|v| v.value.is_some()))
            .count()
    }

    /// The current pair for `key`, if it exists.
    pub(crate) fn latest(&self, key: &[u8]) -> Option<KeyValue> {
        let (key, history) = self.keys.get_key_value(key)?;
        history.last()?.to_kv(key)
    }

    /// Writes a put at `revision`, as its `sub_revision`th write. `None` for `value` or
    /// `lease` keeps the current one (the key must exist: callers check `ignore_value` and
    /// `ignore_lease` first). The key is moved in, not copied, when the key is new; the pairs
    /// returned share the key and values with the index.
    pub(crate) fn put(
        &mut self,
        key: Bytes,
        value: Option<Bytes>,
        lease: Option<i64>,
        revision: i64,
        sub_revision: u32,
    ) -> Replaced {
        let (stored_key, history) = match self.keys.entry(key) {
            Entry::Occupied(o) => (o.key().clone(), o.into_mut()),
            Entry::Vacant(v) => {
                let key = v.key().clone();
                (key, v.insert(History::default()))
            }
        };
        if let Some(last) = history.last() {
            assert!(
                last.mod_revision < revision,
                "put at revision {revision} after a write at {}",
                last.mod_revision
            );
        }
        let live = history.last().filter(|v| v.value.is_some());
        let prev = live.and_then(|v| v.to_kv(&stored_key));
        let prev_lease = live.map_or(0, |v| v.lease);
        let (create_revision, version) =
            live.map_or((revision, 1), |v| (v.create_revision, v.version + 1));
        let value = value
            .or_else(|| live.and_then(|v| v.value.clone()))
            .expect("ignore_value on a missing key is rejected before writing");
        let lease = lease
            .or(live.map(|v| v.lease))
            .expect("ignore_lease on a missing key is rejected before writing");
        let written = Version {
            mod_revision: revision,
            sub_revision,
            create_revision,
            version,
            lease,
            value: Some(value),
        };
        let kv = written.to_kv(&stored_key).expect("a put is live");
        let added = crate::size::version_bytes(&stored_key, &written);
        history.push(written);
        self.bytes += added;
        if history.len() == 2 {
            self.dirty.insert(stored_key);
        }
        Replaced { prev, kv, prev_lease, lease }
    }

    /// Writes a tombstone for `key` at `revision`, as its `sub_revision`th write, if the key
    /// exists; returns the deleted pair.
    pub(crate) fn delete(
        &mut self,
        key: &[u8],
        revision: i64,
        sub_revision: u32,
    ) -> Option<KeyValue> {
        let (key, history) = self.keys.get_key_value(key)?;
        let prev = history.last()?.to_kv(key)?;
        let history = self.keys.get_mut(prev.key.as_ref()).expect("key was just found");
        assert!(prev.mod_revision < revision, "delete at a past revision");
        let tombstone = Version {
            mod_revision: revision,
            sub_revision,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: None,
        };
        self.bytes += crate::size::version_bytes(&prev.key, &tombstone);
        history.push(tombstone);
        if history.len() == 2 {
            self.dirty.insert(prev.key.clone());
        }
        Some(prev)
    }

    /// Keys of `range` that exist now, in key order.
    pub(crate) fn live_keys(&self, range: &KeyRange) -> Vec<Bytes> {
        if range.is_empty() {
            return Vec::new();
        }
        self.keys
            .range::<_, [u8]>(range.bounds())
            .filter(|(_, h)| h.last().is_some_and(|v| v.value.is_some()))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Drops every version that no read at `revision` or later can see.
    ///
    /// Per key, the version visible at `revision` is kept unless it is a tombstone, and all
    /// older ones go; a key left with no versions goes too. Only keys with more than one
    /// version can lose any, so this walks the dirty set, not every key.
    pub(crate) fn compact(&mut self, revision: i64) {
        let keys = &mut self.keys;
        let mut freed: u64 = 0;
        // Keys left with at most one version stop being dirty; a persistent set has no
        // `retain`, so they are collected and removed after the walk.
        let mut clean = Vec::new();
        for key in &self.dirty {
            let history = keys.get(&key[..]).expect("dirty keys are in the index");
            let n = history.partition_point(|v| v.mod_revision <= revision);
            let keep_from = match n.checked_sub(1) {
                None => 0,
                Some(i) if history[i].value.is_some() => i,
                Some(_) => n,
            };
            let mut left = history.len();
            if keep_from > 0 {
                let history = keys.get_mut(&key[..]).expect("dirty keys are in the index");
                freed += history
                    .iter()
                    .take(keep_from)
                    .map(|v| crate::size::version_bytes(key, v))
                    .sum::<u64>();
                history.drop_oldest(keep_from);
                left = history.len();
            }
            if left == 0 {
                keys.remove(&key[..]);
            }
            // After a tombstone comes a put, so a single remaining version is live.
            if left <= 1 {
                clean.push(key.clone());
            }
        }
        for key in clean {
            self.dirty.remove(&key);
        }
        self.bytes -= freed;
    }

    /// The bytes the histories hold, counted from scratch (O(versions)); see [`Index::bytes`].
    pub(crate) fn measure_bytes(&self) -> u64 {
        self.keys
            .iter()
            .map(|(key, history)| {
                history.iter().map(|v| crate::size::version_bytes(key, v)).sum::<u64>()
            })
            .sum()
    }

    /// Sets [`Index::bytes`] from the histories, for an index built without its writes (a
    /// restore).
    pub(crate) fn recount_bytes(&mut self) {
        self.bytes = self.measure_bytes();
    }

    /// The events with `from <= revision <= to` on keys of `range`, in revision order and,
    /// within a revision, in `(sub_revision, key)` order: the order they were applied in.
    /// At most about `events_max` events (at least one revision if there is any; a revision
    /// is never cut), with the first revision left out when the page is cut.
    ///
    /// Complete for `from` above the last compaction: compaction only drops versions that
    /// some later version of the same key hides at the compaction revision, so every version
    /// written after it stays, and so does the version before each of them unless that was a
    /// tombstone (whose absence reads the same: no previous pair).
    ///
    /// Cost: one pass over the keys of the range, with a look at each key's newest version
    /// and a binary search in the histories that reach `from`; memory for about `events_max`
    /// candidates. The index is keyed by key, not by revision, so a page costs the same pass
    /// however few events it holds.
    pub(crate) fn history(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
        events_max: usize,
    ) -> (Vec<RevisionEvents>, Option<i64>) {
        let events_max = events_max.max(1);
        let mut kept: BinaryHeap<Candidate<'_>> = BinaryHeap::new();
        // The smallest revision with a candidate that did not fit.
        let mut left_out: Option<i64> = None;
        self.for_each_version(range, from, to, |c| {
            let c = if kept.len() < events_max {
                kept.push(c);
                return;
            } else if kept.peek().is_some_and(|top| c < *top) {
                kept.push(c);
                kept.pop().expect("just pushed")
            } else {
                c
            };
            left_out = Some(left_out.map_or(c.revision, |r| r.min(c.revision)));
        });
        let mut kept = kept.into_sorted_vec();
        let Some(cut) = left_out else {
            return (group(kept), None);
        };
        // Everything kept sorts before everything left out, so only the last kept revision
        // can be partial: the one at `cut`.
        kept.retain(|c| c.revision < cut);
        if !kept.is_empty() {
            return (group(kept), Some(cut));
        }
        // One revision holds more than `events_max` events: return it whole.
        let mut whole = Vec::new();
        let mut after: Option<i64> = None;
        self.for_each_version(range, cut, to, |c| {
            if c.revision == cut {
                whole.push(c);
            } else {
                after = Some(after.map_or(c.revision, |r| r.min(c.revision)));
            }
        });
        whole.sort_unstable();
        (group(whole), after)
    }

    /// Calls `f` with every version of `range` with `from <= mod_revision <= to`.
    fn for_each_version<'a>(
        &'a self,
        range: &KeyRange,
        from: i64,
        to: i64,
        mut f: impl FnMut(Candidate<'a>),
    ) {
        if range.is_empty() || from > to {
            return;
        }
        for (key, history) in self.keys.range::<_, [u8]>(range.bounds()) {
            // Most keys were last written before `from`: one look at the newest version.
            if history.last().is_none_or(|v| v.mod_revision < from) {
                continue;
            }
            let first = history.partition_point(|v| v.mod_revision < from);
            for (at, v) in history.iter().enumerate().skip(first) {
                if v.mod_revision > to {
                    break;
                }
                f(Candidate {
                    revision: v.mod_revision,
                    sub_revision: v.sub_revision,
                    key,
                    history,
                    at,
                });
            }
        }
    }

    /// Number of keys with any stored version (live or only history).
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// A version found by [`Index::history`], ordered by `(revision, sub_revision, key)`.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    revision: i64,
    sub_revision: u32,
    key: &'a Bytes,
    history: &'a History,
    /// Position of the version in `history`.
    at: usize,
}

impl Candidate<'_> {
    fn order(&self) -> (i64, u32, &Bytes) {
        (self.revision, self.sub_revision, self.key)
    }

    /// The event this version records, with the version before it as `prev_kv`.
    fn event(&self) -> Event {
        let v = &self.history[self.at];
        let prev_kv = self.at.checked_sub(1).and_then(|i| self.history[i].to_kv(self.key));
        match v.to_kv(self.key) {
            Some(kv) => Event { kind: EventKind::Put, kv, prev_kv },
            None => Event {
                kind: EventKind::Delete,
                kv: tombstone_kv(self.key, v.mod_revision),
                prev_kv,
            },
        }
    }
}

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl Eq for Candidate<'_> {}

impl PartialOrd for Candidate<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Candidate<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// etcd's delete event pair: the key and the delete's revision, every other field zero.
pub(crate) fn tombstone_kv(key: &Bytes, revision: i64) -> KeyValue {
    KeyValue { key: key.clone(), mod_revision: revision, ..KeyValue::default() }
}

/// Sorted candidates as events grouped by revision.
fn group(sorted: Vec<Candidate<'_>>) -> Vec<RevisionEvents> {
    let mut out: Vec<RevisionEvents> = Vec::new();
    for c in sorted {
        match out.last_mut() {
            Some(last) if last.revision == c.revision => last.events.push(c.event()),
            _ => out.push(RevisionEvents { revision: c.revision, events: vec![c.event()] }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn reads_see_the_version_current_at_their_revision() {
        let mut ix = Index::default();
        ix.put(b("k"), Some(b("v1")), Some(0), 2, 0);
        ix.put(b("k"), Some(b("v2")), Some(0), 3, 0);
        ix.delete(b"k", 4, 0);
        let one = KeyRange::Single(b("k"));
        assert_eq!(ix.range_at(&one, 1).count(), 0);
        assert_eq!(ix.range_at(&one, 2).next().unwrap().value, b("v1"));
        let kv = ix.range_at(&one, 3).next().unwrap();
        assert_eq!((kv.value, kv.version, kv.create_revision), (b("v2"), 2, 2));
        assert_eq!(ix.range_at(&one, 4).count(), 0);
        assert_eq!(ix.count_at(&one, 3), 1);
    }

    #[test]
    fn compaction_keeps_what_later_reads_see() {
        let mut ix = Index::default();
        ix.put(b("a"), Some(b("1")), Some(0), 2, 0);
        ix.put(b("a"), Some(b("2")), Some(0), 3, 0);
        ix.put(b("b"), Some(b("1")), Some(0), 4, 0);
        ix.delete(b"b", 5, 0);
        ix.compact(4);
        assert_eq!(ix.keys[&b("a")].len(), 1);
        assert_eq!(ix.keys[&b("b")].len(), 2);
        assert!(ix.dirty.contains(&b("b")[..]) && !ix.dirty.contains(&b("a")[..]));
        ix.compact(5);
        assert!(!ix.keys.contains_key(&b("b")[..]));
        assert!(ix.dirty.is_empty());
        assert_eq!(ix.range_at(&KeyRange::Single(b("a")), 5).next().unwrap().value, b("2"));
    }

    #[test]
    fn inverted_span_is_empty() {
        let mut ix = Index::default();
        ix.put(b("m"), Some(b("1")), Some(0), 2, 0);
        let r = KeyRange::new(&b("z"), &b("a"));
        assert_eq!(ix.range_at(&r, 2).count(), 0);
        assert_eq!(ix.count_at(&r, 2), 0);
        assert!(ix.live_keys(&r).is_empty());
    }
}
