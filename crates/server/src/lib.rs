//! # tenure-server: the `tenure` binary's library
//!
//! The etcd v3 gRPC API, the translation between it and the state machine, the peer wire
//! format, and the command line. The replica (consensus driving storage and the state
//! machine) lives in `tenure-replica`; this crate runs it on threads ([`runtime`]) and serves
//! it to peers ([`peer`]) and clients ([`api`]).
//!
//! ## Modules
//!
//! | module | what it holds |
//! |---|---|
//! | [`api`] | the client API: one module per etcd service (`kv`, `watch`, `lease`, `lock`, `election`, `cluster`, `maintenance`), the HTTP endpoints (`http`), the protobuf conversions (`convert`) and etcd's errors (`error`) |
//! | [`peer`] | talking to other members: the wire format (`wire`), message connections (`transport`), snapshot transfer (`snapshot_stream`) |
//! | [`runtime`] | the replica thread, its sync, snapshot and tick threads, what it publishes (`status`) and its Prometheus metrics (`metrics`) |
//! | [`cli`] | the `tenure` command line: `serve` flags and their validation, client subcommands (`client`), `tenure dev` (`dev`), `tenure demo` (`demo`) |
//! | [`dashboard`] | the live cluster dashboard in the browser (`tenure dev`, `tenure serve --dashboard`): member status and events over server-sent events, the dev cluster's controls, the scenario player |
//! | [`compactor`] | automatic compaction on the leader (`--auto-compaction-mode`, `-retention`) |
//! | [`corruption`] | integrity checks across members (HashKV at startup, periodically and after compaction; the `CORRUPT` alarm) |
//! | [`member`] | [`member::Member`]: listeners, storage, runtime, transport and API of one member |
//! | [`ids`] | etcd-compatible member and cluster ids (SHA-1 based) |
//! | [`tls`] | TLS on the client and peer URLs: certificates re-read when they change, client certificate checks, the client's common name, TLS channels for clients |
//! | [`pb`] | code generated from `proto/` (etcd's `etcdserverpb`, `mvccpb`, `v3lockpb` and `v3electionpb`): messages, tonic clients and server traits |
//!
//! Dependencies between them point one way: `cli` → `dashboard` → `member` → (`api`, `peer`) →
//! `runtime`;
//! `runtime::status` is a leaf that `metrics` and `api` read.
//!
//! ## Contract
//!
//! - **etcd compatibility.** Service, message and field names and numbers are etcd's, and
//!   errors carry etcd's exact codes and messages, because clients match on them.
//! - **Bad input never panics.** A malformed client request is `InvalidArgument`; malformed
//!   peer bytes are a [`peer::wire::WireError`]; bad flags are a one-line message and exit code 2.
//! - **Nothing is touched before the configuration is valid.** `serve` validates every flag
//!   before it looks at the data directory.

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod compactor;
pub mod corruption;
pub mod dashboard;
pub mod ids;
pub mod member;
pub mod peer;
pub mod runtime;
pub mod tls;

pub use api::error::ServerError;

/// Code generated from the `.proto` files in `proto/` by `build.rs`.
pub mod pb {
    /// etcd's `mvccpb` package: `KeyValue` and `Event`.
    #[allow(missing_docs)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    /// etcd's `authpb` package: users, roles and permissions.
    #[allow(missing_docs)]
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    /// etcd's `etcdserverpb` package: the KV, Watch, Lease, Cluster, Maintenance and Auth
    /// services.
    #[allow(missing_docs, clippy::all)]
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// etcd's `v3lockpb` package: the Lock service.
    #[allow(missing_docs, clippy::all)]
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    /// etcd's `v3electionpb` package: the Election service.
    #[allow(missing_docs, clippy::all)]
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}
