//! The follower's side of replication (Raft §5.3) and of reads: appends, heartbeats, and
//! read-index answers from the leader.

use crate::log_view::{LogView, SnapshotMeta};
use crate::membership::ConfigEntry;
use crate::message::{MessageBody, ReadId, RejectHint};
use crate::node::Node;
use crate::ready::ReadState;
use crate::types::{Entry, EntryId, EntryKind, LogIndex, NodeId};

impl<L: LogView> Node<L> {
    /// AppendEntries receiver (Raft Figure 2).
    pub(crate) fn on_append(
        &mut self,
        from: NodeId,
        prev: EntryId,
        entries: Vec<Entry>,
        commit: LogIndex,
    ) {
        self.election_elapsed = 0;
        if prev.index < self.log.committed {
            // Everything through our commit index is settled: a late or duplicate append.
            // Tell the leader where we stand instead of re-checking old entries.
            let committed = self.log.committed;
            self.send_after_persist(from, MessageBody::AppendResponse { result: Ok(committed) });
            return;
        }
        // `Message::validate` checked the entries: contiguous after `prev`, terms
        // non-decreasing and not above the leader's term, indexes in range.
        // Configurations take effect when appended (dissertation §4.1). `Message::validate`
        // decoded these already; entries the log holds already are skipped below.
        let configs: Vec<(LogIndex, ConfigEntry)> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Config)
            .map(|e| (e.index(), ConfigEntry::decode(&e.data).expect("validated by the message")))
            .collect();
        match self.log.maybe_append(prev, entries) {
            Some((last_new, written)) => {
                if let Some(first) = written {
                    let rolled_back = self.configs.truncate_from(first);
                    let mut added = false;
                    for (index, c) in configs.into_iter().filter(|(i, _)| *i >= first) {
                        self.configs.push(index, c.prev, c.next);
                        added = true;
                    }
                    if rolled_back || added {
                        self.on_config_changed();
                    }
                }
                // S5: the follower learns the commit index from the leader, but never past
                // what it knows matches the leader's log.
                self.log.commit_to(commit.min(last_new));
                self.send_after_persist(from, MessageBody::AppendResponse { result: Ok(last_new) });
            }
            None => {
                // The consistency check failed. Point the leader at the last entry we hold at
                // or below its `prev` whose term is not above `prev.term`: every entry after it
                // in the leader's log with a higher term cannot match, so the leader can skip a
                // whole term per round trip.
                let last_index = self.log.last_index();
                let hint = self.log.find_at_or_below_term(prev.index.min(last_index), prev.term);
                let reject = RejectHint { rejected: prev.index, hint, last_index };
                self.send_after_persist(from, MessageBody::AppendResponse { result: Err(reject) });
            }
        }
    }

    /// InstallSnapshot receiver (Raft §7, Figure 13). The caller already holds the data.
    pub(crate) fn on_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        self.election_elapsed = 0;
        let snap = meta.last_included;
        if snap.index <= self.log.committed {
            // Old news: everything it covers is committed here already.
            let committed = self.log.committed;
            self.send_after_persist(from, MessageBody::AppendResponse { result: Ok(committed) });
            return;
        }
        if self.log.matches(snap) {
            // Figure 13 step 6: the log holds the snapshot's last entry, so it holds every
            // entry the snapshot covers; keep the log and just learn the commit index.
            self.log.commit_to(snap.index);
            self.send_after_persist(from, MessageBody::AppendResponse { result: Ok(snap.index) });
            return;
        }
        // Steps 7-8: discard the log and install the snapshot.
        self.log.restore(snap);
        self.configs.reset(snap.index, meta.membership.clone());
        self.on_config_changed();
        self.snapshot_to_install = Some(meta);
        self.send_after_persist(from, MessageBody::AppendResponse { result: Ok(snap.index) });
    }

    pub(crate) fn on_heartbeat(&mut self, from: NodeId, commit: LogIndex, read_round: u64) {
        self.election_elapsed = 0;
        // The leader sends min(its commit, our match), so this never commits entries that
        // do not match its log.
        let commit = commit.min(self.log.last_index());
        self.log.commit_to(commit);
        self.send(from, MessageBody::HeartbeatResponse { read_round });
    }

    /// Only the node the read was forwarded to can answer it: an answer from anyone else
    /// (a late one from an earlier leader is dropped with the read, a forged one is ignored)
    /// could name an index that does not reflect every write acknowledged before the read.
    pub(crate) fn on_read_index_response(
        &mut self,
        from: NodeId,
        id: ReadId,
        index: Option<LogIndex>,
    ) {
        let Some(pos) = self.forwarded_reads.iter().position(|&(r, to)| r == id && to == from)
        else {
            return;
        };
        self.forwarded_reads.remove(pos);
        match index {
            Some(index) => self.read_states.push(ReadState { id, index }),
            None => self.dropped_reads.push(id),
        }
    }

    /// Reads forwarded to a leader this node no longer follows cannot be answered.
    pub(crate) fn drop_forwarded_reads(&mut self) {
        let leader = self.leader;
        let mut kept = Vec::new();
        for (id, to) in self.forwarded_reads.drain(..) {
            if Some(to) == leader {
                kept.push((id, to));
            } else {
                self.dropped_reads.push(id);
            }
        }
        self.forwarded_reads = kept;
    }
}
