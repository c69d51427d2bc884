//! tenure's key-value state machine: a deterministic MVCC store with etcd v3 semantics.
//!
//! The replica layer feeds it committed log entries in order ([`Store::apply`]); the server
//! translates etcd protobuf requests into the types of [`api`] and reads with
//! [`Store::range`]. It depends on no other tenure crate.
//!
//! # Module map
//!
//! | module | what it holds |
//! |---|---|
//! | [`api`] | request and response types mirroring `etcdserverpb` / `mvccpb` |
//! | [`auth`] | users, roles and key permissions ([`AuthState`]), changed through the log and checked when writes apply |
//! | [`alarm`] | the replicated alarms behind `Maintenance.Alarm` (`NOSPACE`, `CORRUPT`) and what they refuse |
//! | [`command`] | [`Command`], the session-tagged [`Proposal`] that goes in the log, [`Response`] |
//! | `codec` | the compact versioned binary encoding of proposals and responses |
//! | [`error`] | [`Error`] with etcd's exact messages, [`GrpcCode`], [`DecodeError`] |
//! | [`hash`] | [`Store::hash_kv`] and [`Store::hash`]: the CRC-32C behind `Maintenance.HashKV` and `Hash` |
//! | [`size`] | [`Store::size_bytes`]: what the store holds, kept as it changes (dbSize, quota) |
//! | [`event`] | [`Event`]s for watchers: per applied revision ([`Store::take_events`]) and from history ([`Store::history`]) |
//! | `mvcc` | the multi-version index: key -> history of versions, each with its sub-revision |
//! | [`lease`] | granted leases and their keys |
//! | [`members`] | the replicated member attributes (name, client URLs) behind `MemberList` |
//! | `session` | client sessions for exactly-once retries (dissertation §6.3) |
//! | `validate` | the stateless checks etcd runs before proposing |
//! | [`store`] | [`Store`]: apply, range, txn, compaction |
//! | [`watch`] | [`WatchCursor`]: a watcher's position in the event stream (which events to deliver from history pages and live batches, where to resume), without I/O |
//! | [`snapshot`] | streamed, checksummed snapshot and restore |
//! | [`config`] | [`Config`]: request size, txn ops and session limits |
//!
//! # Contract
//!
//! - **Deterministic.** The state after an entry depends only on the state before it, the
//!   entry's bytes, its index and the log time passed with it. No clock, no randomness, no
//!   I/O except the reader or writer a snapshot is given; everything observable iterates in
//!   sorted order. Every replica must run with the same [`Config`].
//! - **etcd semantics.** Revisions start at 1 and grow by one per command that changes a key
//!   (a delete of nothing, a read-only txn, a member publication and an alarm do not);
//!   `create_revision`, `mod_revision` and `version` behave as in etcd; errors carry etcd's
//!   exact messages and code classes.
//! - **Errors are answers or stops.** A deterministic error ([`Error::is_deterministic`]) is
//!   the entry's result: the entry is applied and the state is unchanged. A non-deterministic
//!   one leaves the store untouched and the node must stop.
//! - **Bad input never panics.** Decoding proposals, responses and snapshots returns errors
//!   on any malformed input. Panics are reserved for broken internal invariants.
//! - **Events, not streams.** Every applied revision that changed keys yields its events, in
//!   the order of the operations, and the index can replay them ([`Store::history`]) for any
//!   revision above the last compaction. Watch streams, filters and fragmenting are the
//!   server's.
//! - **Not here:** lease expiry by time (a lease lives until revoked through the log; the
//!   server must propose revokes when TTLs run out), watch streams, password hashing and
//!   tokens (the server hashes and signs; the store keeps hashes and the token key), and the physical
//!   compaction and quota of etcd's bbolt backend (the store is in memory; alarms are
//!   replicated and enforced here, but nothing here raises `NOSPACE` by itself).
//!
//! # Tests
//!
//! Unit tests sit in the leaf modules. `tests/etcd_conformance.rs` states one etcd behaviour
//! per test; `tests/apply_and_sessions.rs` covers the apply contract and sessions;
//! `tests/alarms.rs` the alarms; `tests/watch_events.rs` the events and history behind Watch;
//! `tests/properties.rs` checks the store against a naive model (a full copy of the state per
//! revision), that history replays exactly the events taken during apply (after compaction
//! and a snapshot round trip too), snapshot round trips and corruption, and decoding of random
//! and mutated bytes.
//!
//! # Example
//!
//! ```
//! use tenure_kv::{Command, Proposal, PutRequest, RangeRequest, Store};
//!
//! let mut store = Store::default();
//! // The leader encodes the proposal; every replica applies the committed bytes in order.
//! let entry = Proposal::new(Command::Put(PutRequest::new("greeting", "hello"))).encode();
//! let response = store.apply(1, 0, &entry).unwrap();
//! assert_eq!(response.revision(), 2);
//! // Reads go straight to the store.
//! let read = store.range(&RangeRequest::single("greeting")).unwrap();
//! assert_eq!(read.kvs[0].value, "hello");
//! assert_eq!(read.kvs[0].version, 1);
//! ```

#![warn(missing_docs)]

pub mod alarm;
pub mod api;
pub mod auth;
mod codec;
pub mod command;
pub mod config;
pub mod error;
pub mod event;
pub mod hash;
mod history;
pub mod lease;
pub mod members;
mod mvcc;
mod session;
pub mod size;
pub mod snapshot;
pub mod store;
mod validate;
pub mod watch;

pub use alarm::{AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
pub use api::{
    CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, LeaseCheckpoint, LeaseCheckpointRequest,
    LeaseCheckpointResponse, LeaseExpireRequest, LeaseExpireResponse, LeaseExpiry,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRefreshRequest, LeaseRefreshResponse,
    LeaseRenewRequest, LeaseRenewResponse, LeaseRevokeRequest, LeaseRevokeResponse, NO_LEASE,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder,
    SortTarget, TxnRequest, TxnResponse, prefix_end,
};
pub use auth::{
    AuthError, AuthInfo, AuthRequest, AuthResponse, AuthState, Permission, PermissionKind, Role,
    User,
};
pub use codec::{FORMAT_VERSION, TXN_DEPTH_MAX};
pub use codec::{decode_outcome, encode_outcome};
pub use command::{Command, Proposal, Response, SessionTag};
pub use config::{Config, ConfigError};
pub use error::{DecodeError, Error, GrpcCode};
pub use event::{Event, EventKind, HistoryError, HistoryPage, RevisionEvents};
pub use hash::HashKv;
pub use lease::{LEASE_TTL_MAX, Lease, LeaseChange};
pub use members::{
    MEMBER_CLIENT_URL_BYTES_MAX, MEMBER_CLIENT_URLS_MAX, MEMBER_NAME_BYTES_MAX,
    MEMBER_PEER_URL_BYTES_MAX, MEMBER_PEER_URLS_MAX, MEMBER_SEED_MAX, MemberAttributes,
    MemberChange, MemberError, MemberPeersAction, MemberPeersRequest, MemberPeersResponse,
    PublishMemberRequest, PublishMemberResponse, check_peer_urls,
};
pub use snapshot::SnapshotError;
pub use store::{INITIAL_REVISION, ReadView, Store};
pub use watch::{WatchCursor, WatchSpec};
