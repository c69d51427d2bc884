//! # tenure-raft: a sans-IO Raft consensus core
//!
//! A Raft node as a pure, deterministic state machine, in the manner of etcd-io/raft: it does
//! no I/O, reads no clock, starts no threads and draws randomness only from a seeded RNG.
//! The caller owns the disk, the network and the clock:
//!
//! ```text
//!            tick() step(msg) propose(data) read_index(id) transfer_leadership(to)
//!                 \      |        |            |               /
//!                  v     v        v            v              v
//!                 +--------------------------------------------+
//!   LogView  ---> |                 Node<L>                    |
//!  (durable log)  +--------------------------------------------+
//!                                     |
//!                                  ready()  ->  Ready { number, hard_state, entries,
//!                                                       messages, persisted_messages,
//!                                                       committed_entries, read_states }
//!                                     |
//!        persist, send, apply; then on_persisted(number), on_applied(index)
//! ```
//!
//! The ordering rules (what must be durable before which message leaves) are written on
//! [`Ready`]. A minimal driver:
//!
//! ```
//! use tenure_raft::{Config, MemLog, Membership, Node, NodeId};
//!
//! let mut node = Node::new(Config::new(NodeId(1)), MemLog::new(Membership::voters([NodeId(1)])))
//!     .unwrap();
//! node.campaign(); // a one-node cluster elects itself at once
//! for _ in 0..3 {
//!     let rd = node.ready();
//!     // 1. persist (here: into the in-memory log), 2. acknowledge by number.
//!     if let Some(hs) = rd.hard_state { node.log_view_mut().set_hard_state(hs); }
//!     node.log_view_mut().append(&rd.entries);
//!     node.on_persisted(rd.number);
//!     // 3. send rd.messages and rd.persisted_messages (none in a one-node cluster),
//!     // 4. apply rd.committed_entries, then report it.
//!     if let Some(last) = rd.committed_entries.last() { node.on_applied(last.index()); }
//! }
//! assert!(node.propose("hello".into()).is_ok());
//! ```
//!
//! ## Modules
//! - [`types`]: ids (`NodeId`, `Term`, `LogIndex`), `EntryId` (`term/index`), `Entry`,
//!   `HardState`, `Role`.
//! - [`message`]: the messages nodes exchange, with a compact trace notation.
//! - [`config`]: `Config` and `Config::validate()`.
//! - [`log_view`]: the read-only `LogView` trait and the in-memory `MemLog`.
//! - [`quorum`]: majority and joint quorum arithmetic, pure functions.
//! - [`membership`]: voters (a joint config) and learners; configuration changes, the
//!   configuration entry's encoding, and the safety checks run before a change.
//! - [`progress`]: the leader's per-follower replication state and in-flight window.
//! - `node`, `election`, `follower`, `leader`: the state machine, one file per role.
//! - `leader_state`: the data a node keeps while it leads (progress, read rounds, transfer),
//!   a leaf module so that `node` and `leader` do not depend on each other both ways.
//! - `raft_log`: the durable log plus the unstable tail, and the commit/apply pointers.
//! - `testkit` (cargo feature `testkit`, off by default): a deterministic in-memory cluster
//!   and a scenario-script runner for tests and demos.
//!
//! ## What it must never do
//! Perform I/O, read a clock, spawn a thread, use unseeded randomness, or send a message that
//! promises durable state before the caller acknowledged that state durable. Broken invariants
//! panic (in release builds too); bad input from peers is dropped or answered, never a panic.

#![warn(missing_docs)]

pub mod config;
mod election;
pub mod error;
mod follower;
mod leader;
mod leader_state;
pub mod log_view;
pub mod membership;
pub mod message;
mod node;
pub mod progress;
pub mod quorum;
mod raft_log;
pub mod ready;
mod rng;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;

#[cfg(feature = "planted-bugs")]
pub use config::PlantedBugs;
pub use config::{Config, ConfigError, ReadMode};
pub use error::{ConfChangeError, Malformed, ProposeError, ReadError, StepError, TransferError};
pub use log_view::{InitialState, LogError, LogView, MemLog, SnapshotMeta};
pub use membership::{ConfChange, ConfigEntry, Membership};
pub use message::{Message, MessageBody, ReadId, RejectHint};
pub use node::{Node, Proposed, SnapshotStatus, Status};
pub use ready::{ReadState, Ready, SoftState};
pub use types::{Entry, EntryId, EntryKind, HardState, LogIndex, NodeId, Role, Term};
