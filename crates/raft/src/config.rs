//! Everything tunable about a node, with [`Config::validate`] checking every limit.

use crate::types::{LogIndex, NodeId};

/// How the leader decides that a linearizable read is safe (dissertation §6.4, S12).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReadMode {
    /// ReadIndex: before answering, confirm leadership with a heartbeat round acknowledged by a
    /// quorum. Safe whatever the clocks do. Many reads share one round.
    Safe,
    /// Lease: answer at once while a quorum acknowledged a heartbeat sent less than
    /// `election_ticks - clock_drift_ticks` ticks ago. Voters ignore vote requests for
    /// `election_ticks` after hearing from a leader, so no other leader can exist during the
    /// lease, provided no node's clock runs more than `clock_drift_ticks` fast over that span.
    /// Requires `check_quorum`.
    ///
    /// Ticks are the lease's clock, so the embedder must deliver every tick that came due
    /// before it steps other input or asks for a read: a process that was paused (or starved)
    /// and answers a queued read before its missed ticks arrive takes a lease that ran out
    /// meanwhile for a live one, and serves a stale read. tenure's server uses [`Self::Safe`].
    /// The simulator catches a resumed node's clock up first.
    Lease {
        /// How many ticks a lease is shortened by, to cover clock drift between nodes.
        clock_drift_ticks: u32,
    },
}

/// A node's configuration.
///
/// Times are in ticks: the caller calls [`crate::Node::tick`] at a fixed interval (for
/// example every 10 ms) and the node counts them. Names carry their unit last.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// `T`: the minimum election timeout. Each election timeout is drawn from `[T, 2T)`
    /// (Raft §5.2). Also the Check-Quorum interval and the span during which a follower that
    /// heard from a leader ignores vote requests.
    pub election_ticks: u32,
    /// How often a leader sends heartbeats. Must be below `election_ticks`.
    pub heartbeat_ticks: u32,
    /// Seed for the randomised election timeout; runs with the same seed and inputs are
    /// identical.
    pub seed: u64,
    /// Pre-Vote (dissertation §9.6): a node first asks whether it could win before raising its
    /// term, so a node rejoining after a partition does not depose a healthy leader (S9).
    pub pre_vote: bool,
    /// Check-Quorum (dissertation §6.2): a leader that has not heard from a quorum for an
    /// election timeout steps down, and followers that heard from a leader within
    /// `election_ticks` ignore vote requests.
    pub check_quorum: bool,
    /// How linearizable reads are confirmed.
    pub read_mode: ReadMode,
    /// Whether a follower forwards proposals to the leader (`true`) or rejects them with
    /// [`crate::ProposeError::NotLeader`] and a leader hint (`false`).
    pub forward_proposals: bool,
    /// Whether the leader sends an otherwise empty append as soon as its commit index moves, so
    /// followers apply promptly. When `false` they learn it with the next append or heartbeat.
    pub commit_broadcast: bool,
    /// Maximum total entry bytes in one append message (at least one entry is always sent).
    pub append_bytes_max: u64,
    /// Maximum append messages in flight to one follower in replicate mode.
    pub inflight_appends_max: usize,
    /// Maximum entry bytes in flight to one follower in replicate mode.
    pub inflight_bytes_max: u64,
    /// Maximum bytes of proposed-but-uncommitted entries at the leader; proposals past it fail
    /// with [`crate::ProposeError::UncommittedBytesExceeded`].
    pub uncommitted_bytes_max: u64,
    /// Maximum bytes of committed entries handed out for apply in one [`crate::Ready`].
    pub apply_bytes_max: u64,
    /// The index the caller's state machine has applied (on restart: the snapshot index, or
    /// 0). The node hands out entries after it.
    pub applied: LogIndex,
    /// Known bugs to plant, for proving that the simulator finds them. Test builds only.
    #[cfg(feature = "planted-bugs")]
    pub planted_bugs: PlantedBugs,
}

/// Protocol rules a test can break on purpose (feature `planted-bugs`, never in release).
#[cfg(feature = "planted-bugs")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Commit an entry of an earlier term by counting replicas (violates Raft §5.4.2,
    /// Figure 8).
    pub commit_by_counting_old_terms: bool,
    /// Grant votes without the up-to-date check (violates Raft §5.4.1, S3).
    pub vote_ignores_log: bool,
    /// Send a vote before it is durable (violates S2: a crash can make the node vote twice).
    pub vote_before_persist: bool,
    /// Put a configuration in force when its entry commits instead of when it is appended
    /// (violates dissertation §4.1: the joint entry is committed by the old voters alone).
    pub config_on_commit: bool,
    /// Count learners as voters toward commit: the commit quorum is a majority of voters and
    /// learners together (violates dissertation §4.2.1: learners never count).
    pub learner_counts_for_commit: bool,
    /// Keep the read lease after sending `TimeoutNow` to a transfer's target (violates
    /// dissertation §6.4.1 with §3.10: the target wins at once, without waiting out the old
    /// leader's lease, so the old leader can serve a stale read from its lease).
    pub transfer_keeps_lease: bool,
}

impl Config {
    /// A configuration with tenure's defaults: `election_ticks` 10, `heartbeat_ticks` 1,
    /// Pre-Vote and Check-Quorum on, ReadIndex reads, forwarding on, 1 MiB appends, 256
    /// appends and 64 MiB in flight per follower, 64 MiB of uncommitted entries.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            seed: id.0,
            pre_vote: true,
            check_quorum: true,
            read_mode: ReadMode::Safe,
            forward_proposals: true,
            commit_broadcast: true,
            append_bytes_max: 1 << 20,
            inflight_appends_max: 256,
            inflight_bytes_max: 64 << 20,
            uncommitted_bytes_max: 64 << 20,
            apply_bytes_max: 16 << 20,
            applied: LogIndex(0),
            #[cfg(feature = "planted-bugs")]
            planted_bugs: PlantedBugs::default(),
        }
    }

    /// Checks every limit and every combination rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ticks == 0 {
            return Err(ConfigError::Invalid("heartbeat_ticks must be at least 1"));
        }
        if self.election_ticks <= self.heartbeat_ticks {
            return Err(ConfigError::Invalid(
                "election_ticks must be greater than heartbeat_ticks",
            ));
        }
        if self.election_ticks > 1_000_000 {
            return Err(ConfigError::Invalid("election_ticks must be at most 1000000"));
        }
        if self.append_bytes_max == 0 {
            return Err(ConfigError::Invalid("append_bytes_max must be positive"));
        }
        if self.inflight_appends_max == 0 || self.inflight_appends_max > 1 << 16 {
            return Err(ConfigError::Invalid("inflight_appends_max must be in 1..=65536"));
        }
        if self.inflight_bytes_max < self.append_bytes_max {
            return Err(ConfigError::Invalid(
                "inflight_bytes_max must be at least append_bytes_max",
            ));
        }
        if self.uncommitted_bytes_max == 0 {
            return Err(ConfigError::Invalid("uncommitted_bytes_max must be positive"));
        }
        if self.apply_bytes_max == 0 {
            return Err(ConfigError::Invalid("apply_bytes_max must be positive"));
        }
        if let ReadMode::Lease { clock_drift_ticks } = self.read_mode {
            if !self.check_quorum {
                return Err(ConfigError::Invalid("lease reads require check_quorum"));
            }
            if clock_drift_ticks >= self.election_ticks {
                return Err(ConfigError::Invalid(
                    "clock_drift_ticks must be below election_ticks (the lease would be empty)",
                ));
            }
        }
        Ok(())
    }
}

/// A configuration or starting state that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limit or a combination of options is invalid.
    #[error("invalid config: {0}")]
    Invalid(&'static str),
    /// The starting state read from the log view is inconsistent.
    #[error("invalid initial state: {0}")]
    InitialState(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(NodeId(1)).validate(), Ok(()));
    }

    #[test]
    fn validate_rejects_each_bad_limit() {
        let base = Config::new(NodeId(1));
        type Breaker = Box<dyn Fn(&mut Config)>;
        let cases: Vec<Breaker> = vec![
            Box::new(|c| c.heartbeat_ticks = 0),
            Box::new(|c| c.election_ticks = c.heartbeat_ticks),
            Box::new(|c| c.append_bytes_max = 0),
            Box::new(|c| c.inflight_appends_max = 0),
            Box::new(|c| c.inflight_bytes_max = c.append_bytes_max - 1),
            Box::new(|c| c.uncommitted_bytes_max = 0),
            Box::new(|c| c.apply_bytes_max = 0),
            Box::new(|c| {
                c.check_quorum = false;
                c.read_mode = ReadMode::Lease { clock_drift_ticks: 1 };
            }),
            Box::new(|c| c.read_mode = ReadMode::Lease { clock_drift_ticks: c.election_ticks }),
        ];
        for (i, break_it) in cases.iter().enumerate() {
            let mut c = base.clone();
            break_it(&mut c);
            assert!(c.validate().is_err(), "case {i} should be invalid: {c:?}");
        }
    }
}
