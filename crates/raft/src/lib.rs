//! # tenure-raft: a sans-IO Raft consensus core
//!
//! (Module map and contract: see below; the node itself is being written.)

#![warn(missing_docs)]

pub mod log_view;
pub mod membership;
pub mod message;
pub mod quorum;
pub mod types;

pub use log_view::{InitialState, LogError, LogView, MemLog};
pub use membership::Membership;
pub use message::{Message, MessageBody, ReadId, RejectHint};
pub use types::{Entry, EntryId, EntryKind, HardState, LogIndex, NodeId, Role, Term};
