//! The leader's view of one follower: how much of the log it holds, and the window of appends
//! in flight to it (Raft §5.3 `nextIndex`/`matchIndex`, plus flow control).
//!
//! A follower is either probed (one append at a time until the leader finds where the logs
//! match) or replicated to (appends pipelined up to a window of messages **and** bytes).
//! This module knows nothing about messages; the leader code drives it.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader sends to a follower.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProgressState {
    /// The match point is unknown: send one append, wait for its answer.
    Probe,
    /// The follower matches through `match_index`: pipeline appends optimistically.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot through
    /// `pending_snapshot` is being sent to it, and appends wait until it is acknowledged or
    /// reported (one transfer per follower at a time, Raft §7).
    Snapshot,
}

/// Appends in flight to one follower, oldest first: the last index each carried and its bytes.
#[derive(Clone, Debug)]
pub struct Inflights {
    window: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    count_max: usize,
    bytes_max: u64,
}

impl Inflights {
    /// An empty window with the given limits.
    pub fn new(count_max: usize, bytes_max: u64) -> Inflights {
        assert!(count_max > 0 && bytes_max > 0);
        Inflights { window: VecDeque::new(), bytes: 0, count_max, bytes_max }
    }

    /// Whether no more appends may be sent.
    pub fn is_full(&self) -> bool {
        self.window.len() >= self.count_max || self.bytes >= self.bytes_max
    }

    /// Records an append whose last entry is `last` and which carried `bytes`.
    pub fn add(&mut self, last: LogIndex, bytes: u64) {
        assert!(!self.is_full(), "inflight window overflow");
        if let Some(&(prev, _)) = self.window.back() {
            assert!(last > prev, "inflight appends must move forward: {prev} then {last}");
        }
        self.window.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Frees every append whose last index is at or below `index` (they were acknowledged).
    pub fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.window.front() {
            if last > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Frees the oldest append, so a window stalled by lost messages can send again.
    pub fn free_first(&mut self) {
        if let Some((_, bytes)) = self.window.pop_front() {
            self.bytes -= bytes;
        }
    }

    /// Forgets everything in flight.
    pub fn reset(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    /// Appends in flight.
    pub fn count(&self) -> usize {
        self.window.len()
    }

    /// Bytes in flight.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// The leader's record of one follower (or of itself).
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log.
    /// Invariant: `match_index < next_index`.
    pub match_index: LogIndex,
    /// The next index to send.
    pub next_index: LogIndex,
    /// Probe or replicate.
    pub state: ProgressState,
    /// In probe state: an append was sent and not yet answered, so sending is paused.
    pub probe_sent: bool,
    /// Appends in flight (replicate state).
    pub inflights: Inflights,
    /// Whether the follower answered anything since the last Check-Quorum.
    pub recent_active: bool,
    /// The highest heartbeat round the follower acknowledged (ReadIndex and leases).
    pub round_acked: u64,
    /// The highest commit index sent to the follower.
    pub commit_sent: LogIndex,
    /// In snapshot state: the last index of the snapshot being sent.
    pub pending_snapshot: LogIndex,
    /// In replicate state: the follower answered a heartbeat while behind, so an append it
    /// was sent may have been lost. The next send is an (empty) append at `next_index - 1`,
    /// which it either confirms or rejects, moving the leader to probe.
    pub confirm_tail: bool,
}

impl Progress {
    /// A new follower record at the start of a term: probe from the leader's last index + 1.
    pub fn new(
        next_index: LogIndex,
        inflight_count_max: usize,
        inflight_bytes_max: u64,
    ) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_count_max, inflight_bytes_max),
            recent_active: false,
            round_acked: 0,
            commit_sent: LogIndex(0),
            pending_snapshot: LogIndex(0),
            confirm_tail: false,
        }
    }

    /// Whether an append may be sent now.
    pub fn can_send(&self) -> bool {
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => !self.inflights.is_full(),
            ProgressState::Snapshot => false,
        }
    }

    /// Records that an append ending at `last` (carrying `bytes`) was sent.
    pub fn sent_append(&mut self, last: LogIndex, entry_count: usize, bytes: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => unreachable!("no appends while a snapshot is pending"),
            ProgressState::Replicate => {
                if entry_count > 0 {
                    assert_eq!(last, self.next_index.plus(entry_count as u64 - 1));
                    self.next_index = last.next();
                    self.inflights.add(last, bytes);
                }
            }
        }
    }

    /// The follower matches through `index`. Returns whether anything moved.
    pub fn on_match(&mut self, index: LogIndex) -> bool {
        self.probe_sent = false;
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
        }
        if self.next_index <= index {
            self.next_index = index.next();
        }
        self.inflights.free_to(index);
        match self.state {
            // Any success answers the probe: the logs match through the match index.
            ProgressState::Probe => self.become_replicate(),
            // The follower holds the snapshot (it installed it, or already had its entries).
            ProgressState::Snapshot if self.match_index >= self.pending_snapshot => {
                self.become_replicate()
            }
            _ => {}
        }
        self.check();
        moved
    }

    /// The follower rejected an append whose previous index was `rejected`; the leader will
    /// next probe at `next`. Returns false if the rejection is stale and was ignored.
    pub fn on_reject(&mut self, rejected: LogIndex, next: LogIndex) -> bool {
        match self.state {
            // In replicate mode, a rejection for an index at or below the match is stale (an
            // older append arrived late).
            ProgressState::Replicate if rejected <= self.match_index => return false,
            // In probe mode only the answer to the latest probe counts.
            ProgressState::Probe if rejected != self.next_index.prev() => return false,
            // Appends sent before the snapshot: stale.
            ProgressState::Snapshot => return false,
            _ => {}
        }
        self.become_probe();
        self.next_index = next.max(self.match_index.next());
        self.check();
        true
    }

    /// Switch to probing from just after the match.
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.next_index = self.match_index.next();
        self.pending_snapshot = LogIndex(0);
        self.inflights.reset();
    }

    /// Start sending a snapshot through `index`; appends pause until it is acknowledged.
    pub fn become_snapshot(&mut self, index: LogIndex) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.pending_snapshot = index;
        self.inflights.reset();
    }

    /// The snapshot transfer ended (`failed` or not) without the follower acknowledging it.
    /// Probe again: after a delivered snapshot from just past it, so the follower confirms
    /// it; after a failed one from just past the match, which leads to a new snapshot if the
    /// entries are still compacted. The probe waits for the next heartbeat answer, so a
    /// failing transfer is retried at most once per heartbeat.
    pub fn snapshot_done(&mut self, failed: bool) {
        if self.state != ProgressState::Snapshot {
            return;
        }
        let pending = self.pending_snapshot;
        self.become_probe();
        if !failed {
            self.next_index = self.next_index.max(pending.next());
        }
        self.probe_sent = true;
        self.check();
    }

    /// Switch to pipelining from just after the match.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.pending_snapshot = LogIndex(0);
        self.next_index = self.match_index.next();
        self.inflights.reset();
    }

    fn check(&self) {
        assert!(
            self.match_index < self.next_index,
            "progress invariant: match {} < next {}",
            self.match_index,
            self.next_index
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_limit_by_count_and_by_bytes() {
        let mut w = Inflights::new(3, 100);
        w.add(LogIndex(1), 10);
        w.add(LogIndex(2), 10);
        assert!(!w.is_full());
        w.add(LogIndex(3), 10);
        assert!(w.is_full(), "three messages fill a window of three");
        w.free_to(LogIndex(2));
        assert_eq!((w.count(), w.bytes()), (1, 10));
        w.add(LogIndex(9), 95);
        assert!(w.is_full(), "bytes fill the window before the count does");
        w.free_first();
        assert_eq!((w.count(), w.bytes()), (1, 95));
    }

    #[test]
    fn probe_pauses_until_answered_then_replicates() {
        let mut p = Progress::new(LogIndex(11), 4, 1 << 20);
        assert!(p.can_send());
        p.sent_append(LogIndex(10), 0, 0);
        assert!(!p.can_send(), "one probe at a time");
        p.on_match(LogIndex(10));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, LogIndex(11));
        p.sent_append(LogIndex(15), 5, 50);
        assert_eq!(p.next_index, LogIndex(16), "replicate mode sends optimistically");
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(LogIndex(11), 4, 1 << 20);
        p.on_match(LogIndex(10));
        p.sent_append(LogIndex(12), 2, 20);
        assert!(!p.on_reject(LogIndex(10), LogIndex(5)), "at or below the match: stale");
        assert!(p.on_reject(LogIndex(11), LogIndex(11)), "an append after a lost one");
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, LogIndex(11));
        assert!(!p.on_reject(LogIndex(3), LogIndex(2)), "not the latest probe");
    }

    #[test]
    fn snapshot_state_pauses_appends_until_acknowledged() {
        let mut p = Progress::new(LogIndex(11), 4, 1 << 20);
        p.become_snapshot(LogIndex(50));
        assert!(!p.can_send(), "one snapshot at a time, no appends beside it");
        assert!(!p.on_reject(LogIndex(10), LogIndex(5)), "rejections of older appends are stale");
        p.on_match(LogIndex(20));
        assert_eq!(p.state, ProgressState::Snapshot, "a match below the snapshot is not its ack");
        p.on_match(LogIndex(50));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, LogIndex(51));
    }

    #[test]
    fn snapshot_report_returns_to_probe() {
        let mut p = Progress::new(LogIndex(11), 4, 1 << 20);
        p.become_snapshot(LogIndex(50));
        p.snapshot_done(false);
        assert_eq!((p.state, p.next_index), (ProgressState::Probe, LogIndex(51)));
        assert!(!p.can_send(), "the probe waits for a heartbeat answer");
        p.become_snapshot(LogIndex(50));
        p.snapshot_done(true);
        assert_eq!((p.state, p.next_index), (ProgressState::Probe, LogIndex(1)));
    }
}
