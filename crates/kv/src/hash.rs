//! Integrity hashes behind `Maintenance.Hash` and `Maintenance.HashKV`.
//!
//! [`Store::hash_kv`] is etcd's `HashByRev`: a CRC-32C of the key-value history up to a
//! revision, as compaction left it, so two members that applied the same entries agree on it
//! whatever they applied since (as long as neither compacted past it); a member whose data
//! silently diverged does not. [`Store::hash`] covers the whole state (history, leases,
//! sessions, member attributes, alarms and the applied index), like etcd's hash of its whole
//! backend; it changes with every applied entry, so members agree on it only when idle.
//!
//! Both walk the whole store: call them on a copy of the store ([`Store::clone`] is O(1)), off
//! the thread that applies entries.

use std::io::Write;

use crate::error::Error;
use crate::store::Store;

/// What [`Store::hash_kv`] answers (etcd's `HashKVResponse` plus its header revision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32C of every stored version with `mod_revision <= revision`, in key order.
    pub hash: u32,
    /// The revision hashed (the request's, or the current one for 0).
    pub revision: i64,
    /// The store's current revision.
    pub current_revision: i64,
    /// The last compaction's revision, or -1 if the store was never compacted (etcd's
    /// `compactMainRev` starts at -1).
    pub compact_revision: i64,
}

impl Store {
    /// etcd's `HashByRev(revision)`: a CRC-32C over every stored version whose
    /// `mod_revision <= revision` (0: the current revision), key by key in key order, each
    /// version's key, revisions, version, lease and value (or a tombstone mark). The
    /// sub-revision is left out: stores restored from old snapshots do not have it.
    ///
    /// Errors as etcd's: [`Error::Compacted`] for a revision at or below the last compaction,
    /// [`Error::FutureRevision`] for one above the current revision. O(versions).
    pub fn hash_kv(&self, revision: i64) -> Result<HashKv, Error> {
        let compact_revision = self.compacted.unwrap_or(-1);
        if revision > 0 && revision <= compact_revision {
            return Err(Error::Compacted);
        }
        if revision > self.revision {
            return Err(Error::FutureRevision);
        }
        let upto = if revision <= 0 { self.revision } else { revision };
        let mut crc = crc32c::crc32c(b"key");
        let mut buf = Vec::with_capacity(128);
        for (key, history) in &self.index.keys {
            for v in history.iter().take_while(|v| v.mod_revision <= upto) {
                buf.clear();
                buf.extend_from_slice(&(key.len() as u64).to_le_bytes());
                buf.extend_from_slice(key);
                buf.extend_from_slice(&v.mod_revision.to_le_bytes());
                buf.extend_from_slice(&v.create_revision.to_le_bytes());
                buf.extend_from_slice(&v.version.to_le_bytes());
                buf.extend_from_slice(&v.lease.to_le_bytes());
                match &v.value {
                    None => buf.push(0),
                    Some(value) => {
                        buf.push(1);
                        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
                        buf.extend_from_slice(value);
                    }
                }
                crc = crc32c::crc32c_append(crc, &buf);
            }
        }
        Ok(HashKv { hash: crc, revision: upto, current_revision: self.revision, compact_revision })
    }

    /// A CRC-32C of the whole state: the bytes of [`Store::write_snapshot`], computed without
    /// keeping them. O(state).
    pub fn hash(&self) -> u32 {
        let mut h = CrcWriter(0);
        self.write_snapshot(&mut h).expect("hashing writes to memory and cannot fail");
        h.0
    }
}

/// A writer that only folds what it is given into a CRC-32C.
struct CrcWriter(u32);

impl Write for CrcWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = crc32c::crc32c_append(self.0, buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A test hook: silent data corruption on purpose, for tests that show the integrity checks
/// catch it. Only with the `test-hooks` feature; never in a real member.
#[cfg(feature = "test-hooks")]
impl Store {
    /// Replaces the value of `key`'s newest version in place, moving no revision and recording
    /// no event: what a flipped bit in memory or on disk would do. Returns whether the key had
    /// a live version to corrupt.
    pub fn corrupt_value_for_test(&mut self, key: &[u8], value: bytes::Bytes) -> bool {
        let Some(history) = self.index.keys.get_mut(key) else {
            return false;
        };
        let Some(version) = history.last_mut().filter(|v| v.value.is_some()) else {
            return false;
        };
        version.value = Some(value);
        self.index.recount_bytes();
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        Command, CompactionRequest, DeleteRangeRequest, Error, Proposal, PutRequest, Store,
    };

    fn apply(store: &mut Store, command: Command) {
        let index = store.applied_index() + 1;
        store.apply(index, 0, &Proposal::new(command).encode()).expect("applies");
    }

    fn put(store: &mut Store, k: &str, v: &str) {
        apply(store, Command::Put(PutRequest::new(k.to_string(), v.to_string())));
    }

    #[test]
    fn equal_histories_hash_equal_at_every_revision_both_hold() {
        let (mut a, mut b) = (Store::default(), Store::default());
        for i in 0..20 {
            put(&mut a, &format!("k{}", i % 5), &i.to_string());
            put(&mut b, &format!("k{}", i % 5), &i.to_string());
        }
        let at = a.revision();
        // b goes on writing; at `at` both still agree.
        put(&mut b, "later", "x");
        assert_eq!(a.hash_kv(at).unwrap().hash, b.hash_kv(at).unwrap().hash);
        assert_eq!(a.hash_kv(0).unwrap().revision, at);
        assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
        assert_eq!(a.hash_kv(0).unwrap().compact_revision, -1);
        // The same compaction on both keeps them equal.
        for s in [&mut a, &mut b] {
            apply(s, Command::Compact(CompactionRequest { revision: at - 3, physical: false }));
        }
        let (ha, hb) = (a.hash_kv(at).unwrap(), b.hash_kv(at).unwrap());
        assert_eq!((ha.hash, ha.compact_revision), (hb.hash, hb.compact_revision));
        assert_eq!(ha.compact_revision, at - 3);
    }

    #[test]
    fn a_diverged_value_changes_the_hash() {
        let (mut a, mut b) = (Store::default(), Store::default());
        put(&mut a, "k", "v");
        put(&mut b, "k", "w");
        assert_eq!(a.revision(), b.revision());
        assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
        assert_ne!(a.hash(), b.hash());
        apply(&mut a, Command::DeleteRange(DeleteRangeRequest::single("k")));
        apply(&mut b, Command::DeleteRange(DeleteRangeRequest::single("k")));
        // History still holds the diverged version.
        assert_ne!(a.hash_kv(0).unwrap().hash, b.hash_kv(0).unwrap().hash);
    }

    #[test]
    fn compacted_and_future_revisions_are_refused_as_etcd_does() {
        let mut s = Store::default();
        for i in 0..4 {
            put(&mut s, "k", &i.to_string());
        }
        apply(&mut s, Command::Compact(CompactionRequest { revision: 3, physical: false }));
        assert_eq!(s.hash_kv(3), Err(Error::Compacted));
        assert_eq!(s.hash_kv(2), Err(Error::Compacted));
        assert!(s.hash_kv(4).is_ok());
        assert_eq!(s.hash_kv(s.revision() + 1), Err(Error::FutureRevision));
    }

    #[test]
    fn whole_state_hash_follows_the_snapshot_bytes() {
        let mut s = Store::default();
        put(&mut s, "a", "1");
        let mut bytes = Vec::new();
        s.write_snapshot(&mut bytes).unwrap();
        assert_eq!(s.hash(), crc32c::crc32c(&bytes));
    }
}
