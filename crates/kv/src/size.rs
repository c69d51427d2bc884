//! What the store holds, in bytes: the figure behind `Maintenance.Status`'s `dbSize`, the
//! backend quota and `etcd_mvcc_db_total_size_in_bytes`.
//!
//! etcd measures its bbolt file; tenure's store is in memory, so it counts what it keeps the
//! way etcd's backend lays it out: every stored version of every key (etcd writes each
//! revision as a record holding the key, the value and the revision numbers, tombstones
//! included) and every lease. The count is kept as writes and compactions happen (O(1) per
//! version), so reading it costs nothing; a restore recounts it from the histories.
//! Allocator slack and the persistent index's inner nodes are not counted: the figure is what
//! the data weighs, equal on every member that applied the same entries.

use bytes::Bytes;

use crate::mvcc::Version;
use crate::store::Store;

/// Bytes a version costs beyond its key and value: etcd's revision key (17 bytes), the
/// encoded revision numbers, version and lease of its `KeyValue` record, and the B+tree's
/// per-element header.
pub const VERSION_OVERHEAD_BYTES: u64 = 64;

/// Bytes one granted lease costs (etcd keeps a small record per lease in its lease bucket).
pub const LEASE_BYTES: u64 = 32;

/// What one version of `key` weighs: its key, its value (none for a tombstone) and
/// [`VERSION_OVERHEAD_BYTES`].
pub(crate) fn version_bytes(key: &Bytes, v: &Version) -> u64 {
    let value = v.value.as_ref().map_or(0, Bytes::len);
    (key.len() + value) as u64 + VERSION_OVERHEAD_BYTES
}

impl Store {
    /// What the store holds, in bytes: every stored version (key, value and
    /// [`VERSION_OVERHEAD_BYTES`] each) and [`LEASE_BYTES`] per lease. O(1): the count is
    /// kept by every write and compaction. Equal on every replica that applied the same
    /// entries; compaction lowers it by what it dropped.
    pub fn size_bytes(&self) -> u64 {
        self.index.bytes + self.leases.by_id.len() as u64 * LEASE_BYTES
    }

    /// [`Store::size_bytes`] counted from scratch by walking every version (O(versions)), for
    /// checks of the running count.
    pub fn measure_size_bytes(&self) -> u64 {
        self.index.measure_bytes() + self.leases.by_id.len() as u64 * LEASE_BYTES
    }

    /// Recounts [`Store::size_bytes`] from the histories: for a store whose index was built
    /// without its writes (a restore from a snapshot).
    pub(crate) fn recount_size_bytes(&mut self) {
        self.index.recount_bytes();
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        Command, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
        Proposal, PutRequest, Store,
    };

    fn apply(store: &mut Store, command: Command) {
        let index = store.applied_index() + 1;
        store.apply(index, 0, &Proposal::new(command).encode()).expect("applies");
    }

    #[test]
    fn running_count_follows_writes_compaction_and_leases() {
        let mut s = Store::default();
        assert_eq!(s.size_bytes(), 0);
        apply(&mut s, Command::Put(PutRequest::new("key", "value")));
        assert_eq!(s.size_bytes(), 3 + 5 + super::VERSION_OVERHEAD_BYTES);
        apply(&mut s, Command::Put(PutRequest::new("key", "v2")));
        apply(&mut s, Command::DeleteRange(DeleteRangeRequest::single("key")));
        // Two puts and a tombstone are held until compaction.
        let three = (3 + 5) + (3 + 2) + 3 + 3 * super::VERSION_OVERHEAD_BYTES;
        assert_eq!(s.size_bytes(), three);
        apply(&mut s, Command::LeaseGrant(LeaseGrantRequest { id: 7, ttl: 60 }));
        assert_eq!(s.size_bytes(), three + super::LEASE_BYTES);
        apply(&mut s, Command::LeaseRevoke(LeaseRevokeRequest { id: 7 }));
        let revision = s.revision();
        apply(&mut s, Command::Compact(CompactionRequest { revision, physical: false }));
        // The deleted key is gone entirely.
        assert_eq!(s.size_bytes(), 0);
        assert_eq!(s.size_bytes(), s.measure_size_bytes());
    }

    #[test]
    fn restore_recounts_what_the_snapshot_holds() {
        let mut s = Store::default();
        for i in 0..50 {
            apply(&mut s, Command::Put(PutRequest::new(format!("k{}", i % 7), "x".repeat(i))));
        }
        let mut buf = Vec::new();
        s.write_snapshot(&mut buf).expect("writes");
        let restored = Store::restore(s.config().clone(), &mut buf.as_slice()).expect("restores");
        assert_eq!(restored.size_bytes(), s.size_bytes());
        assert_eq!(restored.size_bytes(), restored.measure_size_bytes());
        assert!(restored.size_bytes() > 0);
    }

    #[test]
    fn a_wrong_running_count_is_noticed_by_the_measure() {
        // The check the tests rely on must be able to fail.
        let mut s = Store::default();
        apply(&mut s, Command::Put(PutRequest::new("a", "b")));
        s.index.bytes += 1;
        assert_ne!(s.size_bytes(), s.measure_size_bytes());
    }
}
