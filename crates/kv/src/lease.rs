//! The lease table: granted leases and the keys attached to each.
//!
//! Everything that changes a lease goes through the log, so every replica holds the same
//! table: grants, revokes, renewals ([`crate::LeaseRenewRequest`], or the leader's record of
//! renewals it answered without the log, [`crate::LeaseRefreshRequest`]), checkpoints of the
//! remaining time ([`crate::LeaseCheckpointRequest`]) and expiries
//! ([`crate::LeaseExpireRequest`]).
//!
//! Time is not here. The store has no clock: each replica measures a lease's deadline on its
//! own clock from the moment it applies the entry that set it, which the store reports as a
//! [`LeaseChange`] (see [`crate::Store::take_lease_changes`]), and the leader proposes the
//! expiry. An expiry or checkpoint names the [`Lease::renewed_at`] the leader measured from,
//! and is ignored if the lease was renewed since: whatever the order in which a renewal and an
//! expiry reach the log, a renewal that was applied (and so acknowledged) is never undone.

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
    /// The log index of the grant or of the last renewal (0 for a lease restored from a
    /// snapshot format without it).
    pub renewed_at: u64,
    /// What the log knows of the time left, in milliseconds:
    /// - `Some(t)`: exactly `t` as of the last entry that set it (the grant, with the whole
    ///   TTL, or a checkpoint): every renewal since went through the log, so a member's
    ///   deadline measured from its entries is the leader's;
    /// - `None`: renewed through the log since (or restored from a snapshot format that did
    ///   not say). The leader may then renew the lease without the log (dissertation §6.4's
    ///   leadership check instead of a commit), so no member knows its last renewal: a new
    ///   leader gives it at least the whole TTL from its promotion, as etcd does.
    pub remaining_ms: Option<u64>,
}

impl Lease {
    /// The time the lease has left as of the last entry that set it: the granted or
    /// checkpointed time, or the whole TTL.
    pub fn remaining_ms(&self) -> u64 {
        self.remaining_ms.unwrap_or_else(|| self.ttl_ms())
    }

    /// The granted TTL in milliseconds: the time a renewal gives the lease.
    pub fn ttl_ms(&self) -> u64 {
        ttl_ms(self.ttl)
    }
}

/// A TTL in seconds as milliseconds (a TTL at or below 0 is 0).
pub(crate) fn ttl_ms(ttl: i64) -> u64 {
    u64::try_from(ttl).unwrap_or(0).saturating_mul(1000)
}

/// What an applied entry did to a lease's deadline, for the replica that measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseChange {
    /// The lease has `remaining_ms` left from now: granted, renewed or checkpointed.
    Reset {
        /// The lease.
        id: i64,
        /// Milliseconds left as of this entry.
        remaining_ms: u64,
    },
    /// The lease is gone: revoked or expired.
    Ended {
        /// The lease.
        id: i64,
    },
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

    pub(crate) fn grant(&mut self, id: i64, ttl: i64, auto: bool, renewed_at: u64) {
        assert!(id != 0 && !self.by_id.contains_key(&id), "grant of lease {id} not checked");
        if auto {
            self.last_auto_id = id;
        }
        let keys = imbl::OrdSet::new();
        self.by_id.insert(id, Lease { id, ttl, keys, renewed_at, remaining_ms: None });
    }

    pub(crate) fn get_mut(&mut self, id: i64) -> Option<&mut Lease> {
        self.by_id.get_mut(&id)
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
