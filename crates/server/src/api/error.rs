//! Errors the server returns to clients, as gRPC statuses with etcd's exact codes and
//! messages.
//!
//! `clientv3` (and so etcdctl and the Kubernetes apiserver) turns a gRPC status back into a
//! typed error by looking its message up in a table (`api/v3rpc/rpctypes/error.go`), and
//! retries or fails over depending on the code. So the strings here must be byte-identical to
//! etcd's, and the codes the same: `Unavailable` tells a client to try another member,
//! `InvalidArgument` tells it the request itself is wrong.

use tenure_kv::GrpcCode;
use tonic::{Code, Status};

use crate::api::convert::ConvertError;

/// Everything the server can answer instead of a response.
///
/// The `Display` strings of the etcd variants are etcd's exact messages; [`ServerError::code`]
/// is etcd's gRPC code for each. Convert to a [`Status`] with `Status::from(err)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// The state machine refused the request; its message and code are already etcd's.
    #[error(transparent)]
    Kv(#[from] tenure_kv::Error),
    /// The request could not be translated (an unknown enum value, an empty txn op).
    #[error(transparent)]
    InvalidRequest(#[from] ConvertError),
    /// This member knows no leader (an election is under way or it is cut off).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// A request that only the leader may serve reached a follower.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// The leader changed while the request was in flight; its outcome is unknown to this
    /// member, and the client may retry.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The request was not committed or answered in time.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The request timed out and the previous leader is known to have failed.
    #[error("etcdserver: request timed out, possibly due to previous leader failure")]
    TimeoutDueToLeaderFail,
    /// The request timed out and this member lost its connection to the leader.
    #[error("etcdserver: request timed out, possibly due to connection lost")]
    TimeoutDueToConnectionLost,
    /// The encoded request is larger than the server accepts.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// Too many proposals are waiting to be committed; the client should back off.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// A membership change would leave the cluster without a healthy quorum.
    #[error("etcdserver: unhealthy cluster")]
    UnhealthyCluster,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The storage quota is exhausted (a NOSPACE alarm is active).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// This member's disk is full: it writes nothing new until space is freed, so it takes no
    /// proposal. Not etcd's NOSPACE alarm (a cluster-wide quota that stops writes everywhere):
    /// only this member is affected, and `Unavailable` sends the client to another member.
    #[error(
        "tenure: no space left on this member's disk: writes through it are paused until space is freed; use another member"
    )]
    DiskFull,
    /// A member id named in a request is not in the cluster.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member add used an id that is already taken.
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    /// A member add or update used peer URLs another member already has.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// A promote named a member that is not a learner.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// A promote named a learner that has not caught up with the leader.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// A learner add would exceed the learner limit.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// A leadership transfer named a member that cannot become leader.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A membership change would leave fewer started voters than a quorum
    /// (`--strict-reconfig-check`).
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// A member add or update gave peer URLs that cannot be used.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// `MoveLeader` started a transfer that did not finish in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// Another membership change is still being made (tenure makes one at a time); retry.
    #[error("tenure: {0}; retry")]
    MembershipBusy(String),
    /// The RPC exists in etcd's API but tenure does not serve it (yet).
    #[error("tenure: {0} is not supported")]
    Unsupported(&'static str),
}

impl ServerError {
    /// The gRPC code etcd uses for this error.
    pub fn code(&self) -> Code {
        match self {
            ServerError::Kv(e) => kv_code(e),
            ServerError::InvalidRequest(_) | ServerError::RequestTooLarge => Code::InvalidArgument,
            ServerError::NoLeader
            | ServerError::LeaderChanged
            | ServerError::Timeout
            | ServerError::TimeoutDueToLeaderFail
            | ServerError::TimeoutDueToConnectionLost
            | ServerError::UnhealthyCluster
            | ServerError::MembershipBusy(_)
            | ServerError::LeaderTransferTimeout
            | ServerError::DiskFull
            | ServerError::Stopped => Code::Unavailable,
            ServerError::NotLeader
            | ServerError::MemberExists
            | ServerError::PeerUrlExists
            | ServerError::MemberNotLearner
            | ServerError::LearnerNotReady
            | ServerError::TooManyLearners
            | ServerError::NotEnoughStartedMembers
            | ServerError::BadLeaderTransferee => Code::FailedPrecondition,
            ServerError::MemberBadUrls => Code::InvalidArgument,
            ServerError::TooManyRequests | ServerError::NoSpace => Code::ResourceExhausted,
            ServerError::MemberNotFound => Code::NotFound,
            ServerError::Unsupported(_) => Code::Unimplemented,
        }
    }
}

/// A refused proposal, as etcd reports the same situations: no known leader is
/// `NoLeader`; a follower that does not forward answers `NotLeader`; a leadership transfer
/// under way is `LeaderChanged` (retryable, as etcd's dropped proposals are); too much
/// uncommitted data is `TooManyRequests` (etcd's answer when apply lags commit).
impl From<tenure_raft::ProposeError> for ServerError {
    fn from(e: tenure_raft::ProposeError) -> ServerError {
        use tenure_raft::ProposeError as P;
        match e {
            P::NotLeader { leader_hint: None } => ServerError::NoLeader,
            P::NotLeader { leader_hint: Some(_) } => ServerError::NotLeader,
            P::TransferInProgress { .. } => ServerError::LeaderChanged,
            P::UncommittedBytesExceeded { .. } => ServerError::TooManyRequests,
        }
    }
}

/// A refused membership change, with etcd's answers (a removed id is "member not found", as
/// etcd maps its `ErrIDRemoved`).
impl From<tenure_replica::MemberRefusal> for ServerError {
    fn from(r: tenure_replica::MemberRefusal) -> ServerError {
        use tenure_kv::MemberError as T;
        use tenure_replica::MemberRefusal as R;
        match r {
            R::Table(T::NotFound | T::IdRemoved) | R::NotFound => ServerError::MemberNotFound,
            R::Table(T::IdExists) | R::Exists => ServerError::MemberExists,
            R::Table(T::PeerUrlExists) => ServerError::PeerUrlExists,
            R::Table(_) => ServerError::MemberBadUrls,
            R::NotLearner => ServerError::MemberNotLearner,
            R::LearnerNotReady => ServerError::LearnerNotReady,
            R::TooManyLearners => ServerError::TooManyLearners,
            R::NotEnoughStarted | R::LastVoter => ServerError::NotEnoughStartedMembers,
            R::Unhealthy => ServerError::UnhealthyCluster,
            R::Busy(why) => ServerError::MembershipBusy(why),
        }
    }
}

/// A linearizable read with no leader to confirm it.
impl From<tenure_raft::ReadError> for ServerError {
    fn from(e: tenure_raft::ReadError) -> ServerError {
        match e {
            tenure_raft::ReadError::NoLeader => ServerError::NoLeader,
        }
    }
}

/// A refused leadership transfer (`Maintenance.MoveLeader`), with etcd's answers.
impl From<tenure_raft::TransferError> for ServerError {
    fn from(e: tenure_raft::TransferError) -> ServerError {
        match e {
            tenure_raft::TransferError::NotLeader { .. } => ServerError::NotLeader,
            tenure_raft::TransferError::NotAVoter(_) => ServerError::BadLeaderTransferee,
        }
    }
}

/// The tonic code for a state-machine error's code class.
pub fn kv_code(e: &tenure_kv::Error) -> Code {
    match e.grpc_code() {
        GrpcCode::InvalidArgument => Code::InvalidArgument,
        GrpcCode::NotFound => Code::NotFound,
        GrpcCode::FailedPrecondition => Code::FailedPrecondition,
        GrpcCode::OutOfRange => Code::OutOfRange,
        GrpcCode::ResourceExhausted => Code::ResourceExhausted,
        GrpcCode::DataLoss => Code::DataLoss,
        GrpcCode::Internal => Code::Internal,
        GrpcCode::PermissionDenied => Code::PermissionDenied,
        GrpcCode::Unauthenticated => Code::Unauthenticated,
    }
}

/// The status a client receives for a state-machine error: etcd's code and exact message.
pub fn kv_status(e: &tenure_kv::Error) -> Status {
    Status::new(kv_code(e), e.to_string())
}

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: ServerError) -> (Code, String) {
        let s = Status::from(e);
        (s.code(), s.message().to_string())
    }

    #[test]
    fn server_errors_carry_etcds_codes_and_exact_messages() {
        let table = [
            (ServerError::NoLeader, Code::Unavailable, "etcdserver: no leader"),
            (ServerError::NotLeader, Code::FailedPrecondition, "etcdserver: not leader"),
            (ServerError::LeaderChanged, Code::Unavailable, "etcdserver: leader changed"),
            (ServerError::Timeout, Code::Unavailable, "etcdserver: request timed out"),
            (
                ServerError::TimeoutDueToLeaderFail,
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to previous leader failure",
            ),
            (
                ServerError::TimeoutDueToConnectionLost,
                Code::Unavailable,
                "etcdserver: request timed out, possibly due to connection lost",
            ),
            (
                ServerError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                ServerError::TooManyRequests,
                Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
            (ServerError::UnhealthyCluster, Code::Unavailable, "etcdserver: unhealthy cluster"),
            (ServerError::Stopped, Code::Unavailable, "etcdserver: server stopped"),
            (
                ServerError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (ServerError::MemberNotFound, Code::NotFound, "etcdserver: member not found"),
            (
                ServerError::MemberExists,
                Code::FailedPrecondition,
                "etcdserver: member ID already exist",
            ),
            (
                ServerError::PeerUrlExists,
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ),
            (
                ServerError::MemberNotLearner,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ),
            (
                ServerError::LearnerNotReady,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            (
                ServerError::TooManyLearners,
                Code::FailedPrecondition,
                "etcdserver: too many learner members in cluster",
            ),
            (
                ServerError::BadLeaderTransferee,
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
        ];
        for (err, code, message) in table {
            assert_eq!(status(err), (code, message.to_string()));
        }
    }

    #[test]
    fn kv_errors_keep_their_etcd_messages_and_map_code_classes() {
        use tenure_kv::Error as E;
        let table = [
            (
                E::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                E::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (E::EmptyKey, Code::InvalidArgument, "etcdserver: key is not provided"),
            (E::KeyNotFound, Code::InvalidArgument, "etcdserver: key not found"),
            (
                E::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                E::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (E::RequestTooLarge, Code::InvalidArgument, "etcdserver: request is too large"),
            (E::LeaseNotFound, Code::NotFound, "etcdserver: requested lease not found"),
            (E::LeaseExists, Code::FailedPrecondition, "etcdserver: lease already exists"),
            (E::LeaseTtlTooLarge, Code::OutOfRange, "etcdserver: too large lease TTL"),
        ];
        for (err, code, message) in table {
            let s = kv_status(&err);
            assert_eq!((s.code(), s.message()), (code, message));
            assert_eq!(status(ServerError::Kv(err)), (code, message.to_string()));
        }
        let local = E::OutOfOrder { index: 1, applied_index: 2 };
        assert_eq!(kv_status(&local).code(), Code::Internal);
    }

    #[test]
    fn raft_refusals_map_to_etcds_retryable_or_final_answers() {
        use tenure_raft::{NodeId, ProposeError, ReadError, TransferError};
        let cases = [
            (
                ServerError::from(ProposeError::NotLeader { leader_hint: None }),
                ServerError::NoLeader,
            ),
            (
                ProposeError::NotLeader { leader_hint: Some(NodeId(2)) }.into(),
                ServerError::NotLeader,
            ),
            (ProposeError::TransferInProgress { to: NodeId(2) }.into(), ServerError::LeaderChanged),
            (
                ProposeError::UncommittedBytesExceeded {
                    uncommitted_bytes: 1,
                    entry_bytes: 2,
                    max_bytes: 2,
                }
                .into(),
                ServerError::TooManyRequests,
            ),
            (ReadError::NoLeader.into(), ServerError::NoLeader),
            (TransferError::NotLeader { leader_hint: None }.into(), ServerError::NotLeader),
            (TransferError::NotAVoter(NodeId(4)).into(), ServerError::BadLeaderTransferee),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert_eq!(status(ServerError::NoLeader).0, Code::Unavailable, "clients retry elsewhere");
    }

    #[test]
    fn bad_requests_are_invalid_argument() {
        let e = ServerError::from(ConvertError::InvalidSortOption);
        assert_eq!(status(e), (Code::InvalidArgument, "etcdserver: invalid sort option".into()));
        assert_eq!(ServerError::Unsupported("Auth").code(), Code::Unimplemented);
    }
}
