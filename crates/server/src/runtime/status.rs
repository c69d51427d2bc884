//! What the replica thread publishes for everyone else to read: a leaf module, so that the
//! metrics and the API can depend on it without depending on the runtime.

/// What the replica thread publishes after every loop turn, for response headers and
/// `Maintenance/Status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The role this node plays in its term; `None` until the replica thread's first turn.
    pub role: Option<tenure_raft::Role>,
    /// The current term.
    pub term: u64,
    /// The member this node voted for in the current term (Raft §5.2: at most one per term).
    pub vote: Option<u64>,
    /// The leader this node knows of.
    pub leader: Option<u64>,
    /// Whether this node leads.
    pub is_leader: bool,
    /// The last log index.
    pub last_index: u64,
    /// The commit index.
    pub committed: u64,
    /// The applied index.
    pub applied: u64,
    /// The last index of this node's newest snapshot (taken or installed); 0 before any.
    pub snapshot_index: u64,
    /// The first index still in the log (everything before it is in the snapshot).
    pub first_index: u64,
    /// The store's revision.
    pub revision: i64,
    /// The index of the last entry the store applied (the node's applied index also counts
    /// entries that are not for the store, such as a new leader's no-op).
    pub store_applied: u64,
    /// Keys in the store.
    pub key_count: usize,
    /// What the store holds, in bytes (`kv::Store::size_bytes`): `dbSize`, the quota's figure.
    pub db_bytes: u64,
    /// Leases this replica revoked because they expired (applied `LeaseExpire` entries), since
    /// the process started; only grows.
    pub leases_expired: u64,
    /// Whether the replica thread has stopped (shutdown or a fatal error).
    pub stopped: bool,
    /// Whether this member was removed from the cluster (it should stop).
    pub removed: bool,
    /// Whether this member's disk is full: its log writes wait for space, it acknowledges and
    /// votes for nothing new and refuses writes (`tenure_replica::Replica::disk_full`).
    pub disk_full: bool,
    /// Operations that found no space on the disk since the process started (log writes,
    /// syncs, snapshots taken); only grows.
    pub no_space_total: u64,
}
