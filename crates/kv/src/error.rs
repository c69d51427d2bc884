//! Errors of the state machine, with etcd's exact messages and gRPC code classes.
//!
//! An error is either *deterministic* (every replica computes the same error from the same
//! entry: it goes back to the client, the entry still counts as applied and the state is
//! unchanged) or *non-deterministic* (this replica cannot apply the entry and must stop rather
//! than diverge from the others). The split follows toyDB's `Error::is_deterministic`.

/// The gRPC status code class the server should use when returning an [`Error`] to a client.
///
/// The server maps these to `tonic::Code`; this crate does not depend on tonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// `INVALID_ARGUMENT` (3): the request itself is malformed or breaks a limit.
    InvalidArgument,
    /// `NOT_FOUND` (5): a referenced object (a lease) does not exist.
    NotFound,
    /// `FAILED_PRECONDITION` (9): the request conflicts with the current state.
    FailedPrecondition,
    /// `OUT_OF_RANGE` (11): a revision or TTL outside what the store accepts.
    OutOfRange,
    /// `RESOURCE_EXHAUSTED` (8): the cluster is out of space (a `NOSPACE` alarm).
    ResourceExhausted,
    /// `DATA_LOSS` (15): the cluster's data is corrupt (a `CORRUPT` alarm).
    DataLoss,
    /// `INTERNAL` (13): this replica failed; it must stop.
    Internal,
    /// `PERMISSION_DENIED` (7): the user may not do this.
    PermissionDenied,
    /// `UNAUTHENTICATED` (16): the credentials are not (or no longer) valid.
    Unauthenticated,
}

/// Why bytes could not be decoded into a proposal, a response or a snapshot record.
///
/// Decoding never panics: every malformed input maps to one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("input truncated")]
    Truncated,
    /// A variable-length integer was longer than 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A tag byte did not name a known variant.
    #[error("unknown {what} tag {tag}")]
    InvalidTag {
        /// Which kind of value was being decoded.
        what: &'static str,
        /// The tag byte found.
        tag: u8,
    },
    /// A boolean byte was neither 0 nor 1.
    #[error("invalid boolean byte {0}")]
    InvalidBool(u8),
    /// Bytes were left over after a complete value.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
    /// Transactions were nested deeper than [`crate::TXN_DEPTH_MAX`].
    #[error("transactions nested too deeply")]
    TooDeep,
    /// The encoding names a format version this build does not know.
    #[error("unsupported encoding version {0}")]
    UnsupportedVersion(u8),
    /// A text field (a member name or URL) is not valid UTF-8.
    #[error("invalid UTF-8 in a text field")]
    InvalidUtf8,
}

impl DecodeError {
    /// Whether every replica would hit the same error on the same bytes.
    ///
    /// Only an unknown format version is non-deterministic: a newer node wrote an entry this
    /// build cannot read, so this node must be upgraded instead of skipping the entry.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, DecodeError::UnsupportedVersion(_))
    }
}

/// Everything the state machine can return instead of a response.
///
/// `Display` strings of the etcd variants are byte-identical to etcd's
/// (`api/v3rpc/rpctypes/error.go`), because `clientv3` matches on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A read or compaction asked for a revision that compaction already removed.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction asked for a revision the store has not reached.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request (or a compare) had an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a non-zero lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction had more compares or ops per branch than
    /// [`Config::txn_ops_max`](crate::Config::txn_ops_max), or nested deeper than
    /// [`TXN_DEPTH_MAX`](crate::TXN_DEPTH_MAX).
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A transaction would write one key twice.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The encoded proposal is larger than
    /// [`Config::request_bytes_max`](crate::Config::request_bytes_max).
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A put or revoke named a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant named a lease id that already exists.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant asked for a TTL above [`LEASE_TTL_MAX`](crate::LEASE_TTL_MAX).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A client retried a sequence number older than its last applied one
    /// (dissertation §6.3: the response for it is no longer cached).
    #[error("session: stale sequence")]
    StaleSequence,
    /// A command from a client with no session whose sequence number is not 1: its session
    /// expired or was evicted, so the store cannot tell whether the command already applied.
    #[error("session: expired or unknown client")]
    SessionExpired,
    /// A write that grows the store while a `NOSPACE` alarm is raised (see [`crate::alarm`]).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A write while a `CORRUPT` alarm is raised (see [`crate::alarm`]).
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// Refused by authentication or authorization (see [`crate::auth`]).
    #[error("{0}")]
    Auth(crate::auth::AuthError),
    /// The committed entry could not be decoded.
    #[error("kv: undecodable entry: {0}")]
    Decode(DecodeError),
    /// A member publication broke a limit of the member table.
    #[error("member: {0}")]
    InvalidMember(crate::members::MemberError),
    /// The caller applied an entry whose index is not above the last applied index.
    #[error("kv: entry index {index} applied after index {applied_index}")]
    OutOfOrder {
        /// The index passed to `apply`.
        index: u64,
        /// The last index applied before.
        applied_index: u64,
    },
}

impl Error {
    /// Whether every replica computes this same error for the same entry.
    ///
    /// Deterministic errors are answers: the entry counts as applied and the state did not
    /// change. A non-deterministic error means this replica must stop applying.
    pub fn is_deterministic(&self) -> bool {
        match self {
            Error::Decode(e) => e.is_deterministic(),
            Error::OutOfOrder { .. } => false,
            _ => true,
        }
    }

    /// The gRPC code class etcd uses for this error.
    pub fn grpc_code(&self) -> GrpcCode {
        match self {
            Error::Compacted | Error::FutureRevision | Error::LeaseTtlTooLarge => {
                GrpcCode::OutOfRange
            }
            Error::EmptyKey
            | Error::KeyNotFound
            | Error::ValueProvided
            | Error::LeaseProvided
            | Error::TooManyOps
            | Error::DuplicateKey
            | Error::RequestTooLarge
            | Error::InvalidMember(_) => GrpcCode::InvalidArgument,
            Error::LeaseNotFound => GrpcCode::NotFound,
            Error::NoSpace => GrpcCode::ResourceExhausted,
            Error::Corrupt => GrpcCode::DataLoss,
            Error::LeaseExists | Error::StaleSequence | Error::SessionExpired => {
                GrpcCode::FailedPrecondition
            }
            Error::Auth(a) => a.grpc_code(),
            Error::Decode(e) if e.is_deterministic() => GrpcCode::InvalidArgument,
            Error::Decode(_) | Error::OutOfOrder { .. } => GrpcCode::Internal,
        }
    }
}

impl From<crate::auth::AuthError> for Error {
    fn from(e: crate::auth::AuthError) -> Self {
        Error::Auth(e)
    }
}

impl From<DecodeError> for Error {
    /// Nesting beyond [`TXN_DEPTH_MAX`](crate::TXN_DEPTH_MAX) is what validation reports as
    /// too many ops, so a proposal that skipped validation gets the same answer from `apply`.
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::TooDeep => Error::TooManyOps,
            e => Error::Decode(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_errors_are_deterministic_and_local_failures_are_not() {
        assert!(Error::Compacted.is_deterministic());
        assert!(Error::Decode(DecodeError::Truncated).is_deterministic());
        assert!(!Error::Decode(DecodeError::UnsupportedVersion(9)).is_deterministic());
        assert!(!Error::OutOfOrder { index: 1, applied_index: 2 }.is_deterministic());
        assert_eq!(
            Error::OutOfOrder { index: 1, applied_index: 2 }.grpc_code(),
            GrpcCode::Internal
        );
    }

    #[test]
    fn grpc_codes_match_etcd() {
        assert_eq!(Error::Compacted.grpc_code(), GrpcCode::OutOfRange);
        assert_eq!(Error::FutureRevision.grpc_code(), GrpcCode::OutOfRange);
        assert_eq!(Error::EmptyKey.grpc_code(), GrpcCode::InvalidArgument);
        assert_eq!(Error::LeaseNotFound.grpc_code(), GrpcCode::NotFound);
        assert_eq!(Error::LeaseExists.grpc_code(), GrpcCode::FailedPrecondition);
        assert_eq!(Error::LeaseTtlTooLarge.grpc_code(), GrpcCode::OutOfRange);
        assert_eq!(Error::RequestTooLarge.grpc_code(), GrpcCode::InvalidArgument);
        assert_eq!(Error::NoSpace.grpc_code(), GrpcCode::ResourceExhausted);
        assert_eq!(Error::Corrupt.grpc_code(), GrpcCode::DataLoss);
    }
}
