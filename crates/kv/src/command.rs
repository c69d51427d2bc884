//! What goes through the log ([`Proposal`]: a [`Command`] plus optional session metadata) and
//! what comes back ([`Response`]).
//!
//! Reads that skip the log use [`crate::Store::range`] directly; a read that must be ordered
//! with writes goes through the log as a read-only [`Command::Txn`], which does not bump the
//! revision.

use crate::alarm::{AlarmRequest, AlarmResponse};
use crate::api::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseExpireRequest, LeaseExpireResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRefreshRequest, LeaseRefreshResponse,
    LeaseRenewRequest, LeaseRenewResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, TxnRequest, TxnResponse,
};
use crate::auth::{AuthInfo, AuthRequest, AuthResponse};
use crate::members::{
    MemberPeersRequest, MemberPeersResponse, PublishMemberRequest, PublishMemberResponse,
};

/// A state-machine command, applied in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `KV.Put`.
    Put(PutRequest),
    /// `KV.DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// `KV.Txn`.
    Txn(TxnRequest),
    /// `KV.Compact`.
    Compact(CompactionRequest),
    /// `Lease.LeaseGrant`.
    LeaseGrant(LeaseGrantRequest),
    /// `Lease.LeaseRevoke`; deletes the lease's keys.
    LeaseRevoke(LeaseRevokeRequest),
    /// Sets a member's name and client URLs in the member table (a member proposes its own
    /// when it starts, as etcd does). Idempotent; does not bump the revision.
    PublishMember(PublishMemberRequest),
    /// `Maintenance.Alarm`: lists, raises or clears an alarm (see [`crate::alarm`]). Does not
    /// bump the revision.
    Alarm(AlarmRequest),
    /// `Lease.LeaseKeepAlive`: one renewal. Does not bump the revision.
    LeaseRenew(LeaseRenewRequest),
    /// The leader's record of leases' remaining time. Does not bump the revision.
    LeaseCheckpoint(LeaseCheckpointRequest),
    /// The leader's record of renewals it answered without the log. Does not bump the
    /// revision.
    LeaseRefresh(LeaseRefreshRequest),
    /// The leader's revokes of expired leases; each revoke that deletes keys is a revision.
    LeaseExpire(LeaseExpireRequest),
    /// Records the founding members' peer URLs, or changes one member's (`MemberUpdate`).
    /// Does not bump the revision.
    MemberPeers(MemberPeersRequest),
    /// A change to users, roles or whether auth is on (see [`crate::auth`]). Does not bump
    /// the revision.
    Auth(AuthRequest),
}

/// Identifies one command of one client for exactly-once retries (dissertation §6.3).
///
/// A client numbers its commands 1, 2, 3, ... and reuses the number when it retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionTag {
    /// The client's id, unique across the cluster (chosen by the client or the server).
    pub client_id: u64,
    /// The command's sequence number; the first command of a session is 1.
    pub sequence: u64,
}

/// One log entry's worth of state-machine input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Session metadata; `None` applies the command without duplicate detection.
    pub session: Option<SessionTag>,
    /// Who sent a client's command, checked against the auth state when it applies (see
    /// [`crate::auth`]); `None` for the member's own proposals, which are not checked.
    pub auth: Option<AuthInfo>,
    /// The command.
    pub command: Command,
}

impl Proposal {
    /// A proposal without session metadata.
    pub fn new(command: Command) -> Self {
        Proposal { session: None, auth: None, command }
    }

    /// A proposal carrying `client_id` and `sequence` for duplicate detection.
    pub fn with_session(command: Command, client_id: u64, sequence: u64) -> Self {
        Proposal { session: Some(SessionTag { client_id, sequence }), auth: None, command }
    }

    /// The same proposal sent by the client `info` names.
    pub fn with_auth(mut self, info: AuthInfo) -> Self {
        self.auth = Some(info);
        self
    }
}

/// The result of applying a [`Command`], one variant per command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Result of [`Command::Put`].
    Put(PutResponse),
    /// Result of [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Result of [`Command::Txn`].
    Txn(TxnResponse),
    /// Result of [`Command::Compact`].
    Compact(CompactionResponse),
    /// Result of [`Command::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// Result of [`Command::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
    /// Result of [`Command::PublishMember`].
    PublishMember(PublishMemberResponse),
    /// Result of [`Command::Alarm`].
    Alarm(AlarmResponse),
    /// Result of [`Command::LeaseRenew`].
    LeaseRenew(LeaseRenewResponse),
    /// Result of [`Command::LeaseCheckpoint`].
    LeaseCheckpoint(LeaseCheckpointResponse),
    /// Result of [`Command::LeaseRefresh`].
    LeaseRefresh(LeaseRefreshResponse),
    /// Result of [`Command::LeaseExpire`].
    LeaseExpire(LeaseExpireResponse),
    /// Result of [`Command::MemberPeers`].
    MemberPeers(MemberPeersResponse),
    /// Result of [`Command::Auth`].
    Auth(AuthResponse),
}

impl Response {
    /// The store revision for the response header.
    pub fn revision(&self) -> i64 {
        match self {
            Response::Put(r) => r.revision,
            Response::DeleteRange(r) => r.revision,
            Response::Txn(r) => r.revision,
            Response::Compact(r) => r.revision,
            Response::LeaseGrant(r) => r.revision,
            Response::LeaseRevoke(r) => r.revision,
            Response::PublishMember(r) => r.revision,
            Response::Alarm(r) => r.revision,
            Response::LeaseRenew(r) => r.revision,
            Response::LeaseCheckpoint(r) => r.revision,
            Response::LeaseRefresh(r) => r.revision,
            Response::LeaseExpire(r) => r.revision,
            Response::MemberPeers(r) => r.revision,
            Response::Auth(r) => r.revision,
        }
    }
}
