//! Request and response types mirroring etcd v3's `etcdserverpb` and `mvccpb` messages.
//!
//! Field names and integer types follow etcd (`i64` revisions, versions and lease ids) so the
//! server's protobuf translation is field-by-field. Where etcd uses a protobuf `oneof` plus an
//! enum (the compare target), these types use one Rust enum carrying the operand. Fields that
//! only matter to the server (`serializable`, response header cluster and member ids) are not
//! here; every response carries `revision`, the store revision for its header.

use bytes::Bytes;

/// The lease id meaning "no lease" on the wire (etcd's `NoLease`).
pub const NO_LEASE: i64 = 0;

/// A key with its value and metadata at some revision (`mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key; never empty.
    pub key: Bytes,
    /// Revision of the put that last created the key (after a delete, a put creates it again).
    pub create_revision: i64,
    /// Revision of the last modification.
    pub mod_revision: i64,
    /// Number of puts since the key was created; 1 after creation, reset by deletion.
    pub version: i64,
    /// The value (empty when the range asked for `keys_only`).
    pub value: Bytes,
    /// Attached lease id, [`NO_LEASE`] for none.
    pub lease: i64,
}

/// Order of a range's results (`RangeRequest.SortOrder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Key order (what the index yields).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// The field a range sorts on (`RangeRequest.SortTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// `version`.
    Version,
    /// `create_revision`.
    Create,
    /// `mod_revision`.
    Mod,
    /// The value bytes.
    Value,
}

/// `etcdserverpb.RangeRequest` (without `serializable`, which is the server's concern).
///
/// The key range is `key` alone when `range_end` is empty, `[key, range_end)` otherwise, and
/// every key `>= key` when `range_end` is `"\0"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    /// First key of the range (or the only key).
    pub key: Bytes,
    /// End of the range, exclusive; empty for a single key, `"\0"` for "from key".
    pub range_end: Bytes,
    /// Maximum number of keys returned; 0 means no limit.
    pub limit: i64,
    /// Revision to read at; 0 or less means the current revision.
    pub revision: i64,
    /// Sort order of the results.
    pub sort_order: SortOrder,
    /// Field the results are sorted on.
    pub sort_target: SortTarget,
    /// Return keys and metadata without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Drop keys whose `mod_revision` is below this (0: no filter).
    pub min_mod_revision: i64,
    /// Drop keys whose `mod_revision` is above this (0: no filter).
    pub max_mod_revision: i64,
    /// Drop keys whose `create_revision` is below this (0: no filter).
    pub min_create_revision: i64,
    /// Drop keys whose `create_revision` is above this (0: no filter).
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// A read of one key.
    pub fn single(key: impl Into<Bytes>) -> Self {
        RangeRequest { key: key.into(), ..Default::default() }
    }

    /// A read of every key starting with `prefix` (etcdctl `get --prefix`).
    /// An empty prefix reads every key (`"\0"` to `"\0"`, as clientv3's `WithPrefix` does).
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let (key, range_end) = prefix_range(prefix.into());
        RangeRequest { key, range_end, ..Default::default() }
    }

    /// A read of every key `>= key` (etcdctl `get --from-key`).
    pub fn from_key(key: impl Into<Bytes>) -> Self {
        RangeRequest { key: key.into(), range_end: Bytes::from_static(b"\0"), ..Default::default() }
    }

    /// A read of `[key, range_end)`.
    pub fn span(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> Self {
        RangeRequest { key: key.into(), range_end: range_end.into(), ..Default::default() }
    }
}

/// The `range_end` that selects every key with this prefix (clientv3 `GetPrefixRangeEnd`):
/// the prefix with trailing `0xff` bytes dropped and the last byte incremented, or `"\0"`
/// (every key) when the prefix is empty or all `0xff`.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

/// `key` and `range_end` selecting every key with `prefix` (clientv3 `WithPrefix`).
fn prefix_range(prefix: Bytes) -> (Bytes, Bytes) {
    if prefix.is_empty() {
        (Bytes::from_static(b"\0"), Bytes::from_static(b"\0"))
    } else {
        let end = prefix_end(&prefix);
        (prefix, end)
    }
}

/// `etcdserverpb.RangeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResponse {
    /// Store revision for the response header (the current revision, not the one read at).
    pub revision: i64,
    /// The keys, after filters, sorting and the limit.
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut off further keys.
    pub more: bool,
    /// Number of keys in the range at the revision read, ignoring `limit` and the filters.
    pub count: i64,
}

/// `etcdserverpb.PutRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutRequest {
    /// The key; must not be empty.
    pub key: Bytes,
    /// The new value.
    pub value: Bytes,
    /// Lease to attach, [`NO_LEASE`] for none (which detaches any current lease).
    pub lease: i64,
    /// Return the previous key-value pair.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist; `value` must be empty).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist; `lease` must be 0).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put of `value` at `key`.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        PutRequest { key: key.into(), value: value.into(), ..Default::default() }
    }
}

/// `etcdserverpb.PutResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutResponse {
    /// Store revision for the response header.
    pub revision: i64,
    /// The pair before the put, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.DeleteRangeRequest`; the key range works as in [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeRequest {
    /// First key of the range (or the only key); must not be empty.
    pub key: Bytes,
    /// End of the range, as in [`RangeRequest::range_end`].
    pub range_end: Bytes,
    /// Return the deleted pairs.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// A delete of one key.
    pub fn single(key: impl Into<Bytes>) -> Self {
        DeleteRangeRequest { key: key.into(), ..Default::default() }
    }

    /// A delete of every key starting with `prefix`.
    /// An empty prefix deletes every key.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let (key, range_end) = prefix_range(prefix.into());
        DeleteRangeRequest { key, range_end, ..Default::default() }
    }
}

/// `etcdserverpb.DeleteRangeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteRangeResponse {
    /// Store revision for the response header.
    pub revision: i64,
    /// Number of keys deleted.
    pub deleted: i64,
    /// The deleted pairs, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare relates the stored field to the operand (`Compare.CompareResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    /// Stored == operand.
    Equal,
    /// Stored > operand.
    Greater,
    /// Stored < operand.
    Less,
    /// Stored != operand.
    NotEqual,
}

/// The field a compare reads, with its operand (etcd's `target` plus `target_union`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// `version` against the operand.
    Version(i64),
    /// `create_revision` against the operand.
    CreateRevision(i64),
    /// `mod_revision` against the operand.
    ModRevision(i64),
    /// The value bytes against the operand (byte-wise); fails on a missing key.
    Value(Bytes),
    /// The lease id against the operand.
    Lease(i64),
}

/// `etcdserverpb.Compare`: a guard of a transaction.
///
/// Over a range, every key must satisfy it. A missing key compares as all-zero metadata,
/// except that a value compare on a missing key is always false (etcd `applyCompare`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// Key (or first key of the range); must not be empty.
    pub key: Bytes,
    /// End of the range, as in [`RangeRequest::range_end`].
    pub range_end: Bytes,
    /// The relation.
    pub result: CompareResult,
    /// The field and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// A compare of one key.
    pub fn new(key: impl Into<Bytes>, result: CompareResult, target: CompareTarget) -> Self {
        Compare { key: key.into(), range_end: Bytes::new(), result, target }
    }
}

/// One operation of a transaction branch (`etcdserverpb.RequestOp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOp {
    /// A read; it sees the writes of earlier ops in the same transaction.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction (etcd 3.3+).
    Txn(TxnRequest),
}

/// One result of a transaction branch (`etcdserverpb.ResponseOp`), in op order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOp {
    /// Result of a range.
    Range(RangeResponse),
    /// Result of a put.
    Put(PutResponse),
    /// Result of a delete.
    DeleteRange(DeleteRangeResponse),
    /// Result of a nested transaction.
    Txn(TxnResponse),
}

/// `etcdserverpb.TxnRequest`: if all compares hold, run `success`, else `failure`.
///
/// All compares, including those of nested transactions, are evaluated against the state
/// before the transaction (etcd `compareToPath`). The whole transaction is one revision, and
/// none at all if it writes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnRequest {
    /// The guards.
    pub compare: Vec<Compare>,
    /// Ops run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Ops run otherwise.
    pub failure: Vec<RequestOp>,
}

impl TxnRequest {
    /// Whether no op on either branch, at any depth, writes (etcd `isTxnReadonly`, which
    /// also looks into nested transactions).
    pub fn is_read_only(&self) -> bool {
        !self.any_op(&|op| matches!(op, RequestOp::Put(_) | RequestOp::DeleteRange(_)))
    }

    /// Whether some op on either branch, at any depth, is a put.
    pub fn has_put(&self) -> bool {
        self.any_op(&|op| matches!(op, RequestOp::Put(_)))
    }

    fn any_op(&self, f: &impl Fn(&RequestOp) -> bool) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .any(|op| f(op) || matches!(op, RequestOp::Txn(t) if t.any_op(f)))
    }
}

/// `etcdserverpb.TxnResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TxnResponse {
    /// Store revision after the transaction; 0 in a nested transaction, whose header etcd
    /// leaves empty. Each nested range, put or delete carries the revision as of its own
    /// operation, as etcd's do: the revision before the transaction until the transaction's
    /// first write, the new revision from it on.
    pub revision: i64,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One response per op of the branch taken.
    pub responses: Vec<ResponseOp>,
}

/// `etcdserverpb.CompactionRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionRequest {
    /// Drop history before this revision.
    pub revision: i64,
    /// etcd waits for the physical compaction when set; compaction here is immediate, so it
    /// only travels through for the server's benefit.
    pub physical: bool,
}

/// `etcdserverpb.CompactionResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionResponse {
    /// Store revision for the response header.
    pub revision: i64,
}

/// `etcdserverpb.LeaseGrantRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseGrantRequest {
    /// Requested id; 0 lets the store choose the lowest unused positive id above the last
    /// one it chose (deterministic, unlike etcd's random ids).
    pub id: i64,
    /// TTL in seconds, stored and reported. Expiry by time is the replica's (its leader
    /// proposes a [`LeaseExpireRequest`]); the server raises a TTL below etcd's minimum before
    /// proposing, so the store keeps what the log says.
    pub ttl: i64,
}

/// `etcdserverpb.LeaseGrantResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseGrantResponse {
    /// Store revision for the response header.
    pub revision: i64,
    /// The granted id.
    pub id: i64,
    /// The granted TTL.
    pub ttl: i64,
}

/// `etcdserverpb.LeaseRevokeRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseRevokeRequest {
    /// The lease to revoke; its keys are deleted in one revision.
    pub id: i64,
}

/// `etcdserverpb.LeaseRevokeResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseRevokeResponse {
    /// Store revision for the response header.
    pub revision: i64,
}

/// `etcdserverpb.LeaseKeepAliveRequest` as a log command: one renewal of one lease.
///
/// A renewal through the log is ordered against the leader's expiries and checkpoints, so
/// every member learns of it at the same position (see [`crate::lease`]). The leader may
/// also answer one without the log (see [`LeaseRefreshRequest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseRenewRequest {
    /// The lease to renew.
    pub id: i64,
}

/// Renewals the leader made without the log, recorded after the fact (proposed by the
/// leader's replica, never by clients): each lease still present restarts its TTL from this
/// entry, as a [`LeaseRenewRequest`] would, so followers' deadlines follow the leader's. The
/// leader answered those renewals before this entry existed; a new leader does not rely on it
/// (see [`crate::Lease::remaining_ms`]). Does not bump the revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRefreshRequest {
    /// The leases renewed, in any order; ids of leases that are gone are skipped.
    pub ids: Vec<i64>,
}

/// The answer to a [`LeaseRefreshRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseRefreshResponse {
    /// Store revision for the response header.
    pub revision: i64,
}

/// The answer to a [`LeaseRenewRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseRenewResponse {
    /// Store revision for the response header (a renewal does not change it).
    pub revision: i64,
    /// The renewed lease.
    pub id: i64,
    /// Its granted TTL in seconds: the time it now has left.
    pub ttl: i64,
}

/// One lease's remaining time as the leader saw it (etcd's `LeaseCheckpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseCheckpoint {
    /// The lease.
    pub id: i64,
    /// The [`crate::Lease::renewed_at`] the leader measured from: a lease renewed since is
    /// left alone, since the checkpoint would shorten a renewal.
    pub renewed_at: u64,
    /// Milliseconds left.
    pub remaining_ms: u64,
}

/// Records leases' remaining time in the log, so a new leader (or a restarted member)
/// continues from it instead of from the full TTL (etcd issue 13508). Proposed by the leader's
/// replica, never by clients. Does not bump the revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseCheckpointRequest {
    /// The checkpoints, in any order.
    pub checkpoints: Vec<LeaseCheckpoint>,
}

/// The answer to a [`LeaseCheckpointRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseCheckpointResponse {
    /// Store revision for the response header.
    pub revision: i64,
}

/// One lease the leader found expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseExpiry {
    /// The lease.
    pub id: i64,
    /// The [`crate::Lease::renewed_at`] the leader's deadline was measured from: if the lease
    /// was renewed since (the renewal was ordered before this entry), it is not revoked.
    pub renewed_at: u64,
}

/// Revokes leases whose TTL ran out on the leader's clock, each as its own revision (as etcd
/// revokes each expired lease with its own request), in the order given. Proposed by the
/// leader's replica, never by clients.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseExpireRequest {
    /// The expired leases.
    pub leases: Vec<LeaseExpiry>,
}

/// The answer to a [`LeaseExpireRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseExpireResponse {
    /// Store revision after the last revoke.
    pub revision: i64,
    /// The leases revoked (those that still existed and were not renewed since).
    pub revoked: Vec<i64>,
}
