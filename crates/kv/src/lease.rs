//! The lease table: granted leases and the keys attached to each.
//!
//! Leases are granted and revoked only through the log, so every replica holds the same
//! table. Expiry by time is not done here: the server (or a later issue) must propose a
//! revoke when a lease's TTL runs out.

use std::collections::BTreeMap;

use bytes::Bytes;

/// The largest TTL a grant may ask for, in seconds (etcd's `MaxLeaseTTL`).
pub const LEASE_TTL_MAX: i64 = 9_000_000_000;

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease id (never 0).
    pub id: i64,
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// Keys whose current version is attached to this lease, in key order. A persistent set,
    /// like the key index, so that copying the store for a snapshot does not copy it.
    pub keys: imbl::OrdSet<Bytes>,
}

/// All granted leases.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Leases {
    /// Invariant: a key is in `keys` of the lease named by its current version, and no other.
    pub(crate) by_id: BTreeMap<i64, Lease>,
    /// The last id chosen for a grant with id 0; the next is searched from here.
    pub(crate) last_auto_id: i64,
}

impl Leases {
    /// Whether any lease exists (if none, puts can skip lease bookkeeping).
    pub(crate) fn any(&self) -> bool {
        !self.by_id.is_empty()
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn get(&self, id: i64) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    /// The id a grant with id 0 gets: the smallest unused id above the last one chosen.
    pub(crate) fn next_auto_id(&self) -> i64 {
        let mut id = self.last_auto_id.max(0);
        loop {
            // Ids are i64 on the wire; wrapping past i64::MAX restarts at 1.
            id = if id == i64::MAX { 1 } else { id + 1 };
            if !self.by_id.contains_key(&id) {
                return id;
            }
        }
    }

    pub(crate) fn grant(&mut self, id: i64, ttl: i64, auto: bool) {
        assert!(id != 0 && !self.by_id.contains_key(&id), "grant of lease {id} not checked");
        if auto {
            self.last_auto_id = id;
        }
        self.by_id.insert(id, Lease { id, ttl, keys: imbl::OrdSet::new() });
    }

    pub(crate) fn attach(&mut self, id: i64, key: &Bytes) {
        if id != 0 {
            let lease = self.by_id.get_mut(&id).expect("attach to a lease that was checked");
            lease.keys.insert(key.clone());
        }
    }

    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if id != 0
            && let Some(lease) = self.by_id.get_mut(&id)
        {
            lease.keys.remove(key);
        }
    }

    pub(crate) fn remove(&mut self, id: i64) -> Option<Lease> {
        self.by_id.remove(&id)
    }
}
