//! tenure-sim: tools to test tenure under simulation.
//!
//! Module map:
//! - [`linearizability`]: a Wing & Gong / Porcupine style checker that decides whether a
//!   history of client operations on a map of registers (read, write, cas, append) is
//!   linearizable, key by key, within a time bound;
//! - [`history`]: the history file format (one JSON object per operation per line), read and
//!   written.
//!
//! Contract: the checker never says `Linearizable` for a history that has no linearization,
//! never panics on a malformed history (it returns an error), and never runs past its time
//! bound by more than a few milliseconds (it answers `Unknown` instead).

pub mod history;
pub mod linearizability;
