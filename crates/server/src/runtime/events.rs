//! What a member's replica thread saw happen, for people to watch (the dashboard): role and
//! leader changes, the votes it cast, commits, snapshots and membership changes. A leaf
//! module, like `status`.
//!
//! The replica thread records an event only from what a loop turn produced already (the
//! core's soft-state changes, the messages it sends, the status it publishes), so recording
//! costs a lock and a push per event and never changes what the replica does. The log keeps
//! the last [`EVENT_LOG_MAX`] events; a reader remembers the sequence number of the last one
//! it took and asks for those after it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Events a member keeps; older ones are dropped (a reader further behind misses them and
/// is told so by the gap in sequence numbers).
pub const EVENT_LOG_MAX: usize = 256;

/// Something one member saw happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    /// Numbers this member's events from 1, in the order they happened.
    pub seq: u64,
    /// When it was recorded: milliseconds since the Unix epoch (wall clock, for display only).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The node's role, term or known leader changed (an election started, was won or lost;
    /// a leader was learned of or stepped down).
    Role {
        /// The new role.
        role: tenure_raft::Role,
        /// The term.
        term: u64,
        /// The leader known in that term.
        leader: Option<u64>,
    },
    /// This node answered a candidate's vote request (sent once the vote is durable, S2).
    Vote {
        /// The candidate.
        candidate: u64,
        /// The candidate's term.
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// The commit index moved forward (one event per loop turn, however many entries).
    Commit {
        /// The commit index before.
        from: u64,
        /// The commit index now.
        to: u64,
    },
    /// This node wrote a snapshot of its own state; the log before it can be compacted.
    SnapshotTaken {
        /// The snapshot's last index.
        index: u64,
    },
    /// This node installed a snapshot from the leader (it was behind the leader's log).
    SnapshotInstalled {
        /// The snapshot's last index.
        index: u64,
    },
    /// The configuration in force changed (a membership change was appended or applied).
    Members {
        /// The voters, by id.
        voters: Vec<u64>,
        /// The learners, by id.
        learners: Vec<u64>,
    },
}

impl EventKind {
    /// A short name for the kind, as the dashboard's JSON carries it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Role { .. } => "role",
            EventKind::Vote { .. } => "vote",
            EventKind::Commit { .. } => "commit",
            EventKind::SnapshotTaken { .. } => "snapshot_taken",
            EventKind::SnapshotInstalled { .. } => "snapshot_installed",
            EventKind::Members { .. } => "members",
        }
    }
}

/// A member's recent events: written by its replica thread, read by anyone holding a clone.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug, Default)]
struct Ring {
    /// Invariant: at most `EVENT_LOG_MAX` events, `seq` increasing by one from front to back.
    events: VecDeque<MemberEvent>,
    /// The sequence number of the last event recorded (0: none yet).
    last_seq: u64,
}

impl EventLog {
    /// Records `kind` now.
    pub fn record(&self, kind: EventKind) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.last_seq += 1;
        let seq = ring.last_seq;
        if ring.events.len() == EVENT_LOG_MAX {
            ring.events.pop_front();
        }
        ring.events.push_back(MemberEvent { seq, at_ms, kind });
    }

    /// The sequence number of the last event recorded (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).last_seq
    }

    /// The events kept whose sequence number is above `after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<MemberEvent> {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.events.iter().filter(|e| e.seq > after).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_events_numbered_in_order() {
        let log = EventLog::default();
        assert!(log.since(0).is_empty());
        for i in 0..(EVENT_LOG_MAX as u64 + 10) {
            log.record(EventKind::Commit { from: i, to: i + 1 });
        }
        let all = log.since(0);
        assert_eq!(all.len(), EVENT_LOG_MAX);
        assert_eq!(all.first().unwrap().seq, 11, "the 10 oldest were dropped");
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let tail = log.since(all.last().unwrap().seq - 2);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![265, 266]);
    }
}
