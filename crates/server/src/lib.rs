//! # tenure-server: the `tenure` binary's library
//!
//! The etcd v3 gRPC API, the translation between it and the state machine, the peer wire
//! format, and the command line. The replica (consensus driving storage and the state
//! machine) lives in `tenure-replica`; this crate runs it on threads ([`runtime`]) and serves
//! it to peers ([`transport`]) and clients ([`grpc`]).
//!
//! ## Modules
//!
//! | module | what it holds |
//! |---|---|
//! | [`pb`] | code generated from `proto/` (etcd's `etcdserverpb` and `mvccpb`): messages, tonic clients and server traits |
//! | [`convert`] | protobuf ⇄ [`tenure_kv`] requests and responses; [`convert::HeaderContext`] |
//! | [`error`] | [`ServerError`] and its mapping to `tonic::Status` with etcd's exact codes and messages |
//! | [`wire`] | the peer wire format: framed, versioned, checksummed batches of Raft messages |
//! | [`ids`] | etcd-compatible member and cluster ids (SHA-1 based) |
//! | [`cli`] | the `tenure` command line: `serve` flags and their validation into [`cli::ServeConfig`], client subcommands |
//! | [`client`] | `tenure put/get/del/member list/endpoint status` over gRPC, with etcdctl-style output |
//! | [`demo`] | `tenure demo`: a simulated three-node cluster narrating an election, commits and a crash |
//! | [`metrics`] | one member's Prometheus metrics, served on `/metrics` |
//! | [`runtime`] | the replica thread, its sync thread and ticker, and [`runtime::RuntimeHandle`] |
//! | [`transport`] | peer TCP connections carrying [`wire`] frames to and from the runtime |
//! | [`snapshot_stream`] | snapshot transfer on connections of its own: chunked, checksummed, flow-controlled, resumable |
//! | [`grpc`] | the etcd services (`KV`, `Cluster/MemberList`, `Maintenance/Status`, `Alarm`) |
//! | [`server`] | [`server::Member`]: listeners, storage, runtime, transport and gRPC of one member |
//! | [`dev`] | `tenure dev`: three real members in one process on loopback |
//!
//! ## Contract
//!
//! - **etcd compatibility.** Service, message and field names and numbers are etcd's, and
//!   errors carry etcd's exact codes and messages, because clients match on them.
//! - **Bad input never panics.** A malformed client request is `InvalidArgument`; malformed
//!   peer bytes are a [`wire::WireError`]; bad flags are a one-line message and exit code 2.
//! - **Nothing is touched before the configuration is valid.** `serve` validates every flag
//!   before it looks at the data directory.

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod convert;
pub mod demo;
pub mod dev;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod metrics;
pub mod runtime;
pub mod server;
pub mod snapshot_stream;
pub mod transport;
pub mod wire;

pub use error::ServerError;

/// Code generated from the `.proto` files in `proto/` by `build.rs`.
pub mod pb {
    /// etcd's `mvccpb` package: `KeyValue` and `Event`.
    #[allow(missing_docs)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's `etcdserverpb` package: the KV, Watch, Lease, Cluster and Maintenance services.
    #[allow(missing_docs, clippy::all)]
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}
