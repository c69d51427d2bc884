//! # tenure-sim: a deterministic simulator for tenure, and its checkers
//!
//! Runs the production replica code (consensus core + storage + key-value state machine) in a
//! simulated world: one seeded RNG drives the network (drops, duplicates, long delays,
//! partitions of every shape), the disks (lost unsynced writes, torn writes, slow fsyncs), the
//! clocks (drift, paused processes) and the clients. Checkers watch every step; after the run
//! the clients' history is checked for linearizability. A failing seed replays exactly.
//!
//! ## Modules
//! - [`world`]: the world, its fault profile ("swarm": each seed picks its faults) and the
//!   two phases of a run (safety, then liveness).
//! - [`checkers`]: online safety checkers, each testable on known-bad input.
//! - [`watch`]: the watch checkers: replicas agree on events, and each simulated watcher's
//!   stream is ordered, unique, atomic, reliable, resumable and bookmarkable, with correct
//!   `prev_kv` and filters, against the committed history of events.
//! - [`lease`]: the lease workload and its checkers: no lease's key deleted while a renewal
//!   acknowledged within its TTL is live, none deleted late once faults heal, and every
//!   member deleting it at the same revision.
//! - [`lock`]: the lock clients (etcd's lock recipe with fenced writes, some holders letting
//!   their lease expire) and the checker that guarded writes never interleave between holders.
//! - [`membership`]: the operator's membership churn (add a learner, promote it, remove a
//!   voter or the leader, replace a member) and the checkers that every commit and every
//!   election had a majority of each configuration in force, and that learners never counted.
//! - [`auth`]: the auth workload (an administrator changing permissions, roles and a
//!   password while clients write as the user, as root and as no one) and its checker: every
//!   member's outcome of each auth-carrying entry and auth state at each index are the same,
//!   and what a model of etcd's rules gives for the log up to there.
//! - [`run`]: running one seed and classifying its outcome.
//! - [`linearizability`]: a Wing & Gong / Porcupine style checker that decides whether a
//!   history of client operations on a map of registers (read, write, cas, append) is
//!   linearizable, key by key, within a time bound.
//! - [`history`]: the history file format (one JSON object per operation per line), read and
//!   written.
//! - [`rng`]: the world's one seeded generator.
//! - [`scenario`]: the seed scenarios S1-S12 as the core's scenario scripts (S7 and S10 played
//!   on three real replicas over simulated disks instead), run afresh and explained line by
//!   line in plain words (`tenure-sim --scenario s8 --trace`, and the dashboard's scenario
//!   player).
//!
//! ## Contract
//! The simulator runs the same replica code as production; a seed and the code's commit
//! reproduce a run exactly. The linearizability checker never says `Linearizable` for a
//! history that has no linearization, never panics on a malformed history (it returns an
//! error), and never runs past its time bound by more than a few milliseconds (it answers
//! `Unknown` instead).

#![warn(missing_docs)]

pub mod auth;
pub mod checkers;
pub mod history;
pub mod lease;
pub mod linearizability;
pub mod lock;
pub mod membership;
mod outstanding;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod watch;
pub mod world;
