//! The leader: proposals, replication with flow control (Raft §5.3), commit (§5.4.2),
//! heartbeats and Check-Quorum (dissertation §6.2), ReadIndex and leases (§6.4), and
//! leadership transfer (§3.10).

use bytes::Bytes;

use crate::config::ReadMode;
use crate::error::{ProposeError, StepError};
use crate::leader_state::{LeaderState, PendingRead, ROUND_HISTORY_MAX, Transfer};
use crate::log_view::{LogError, LogView};
use crate::message::{MessageBody, ReadId, RejectHint};
use crate::node::Node;
use crate::progress::{Progress, ProgressState};
use crate::quorum::VoteResult;
use crate::ready::ReadState;
use crate::types::{Entry, EntryId, EntryKind, LogIndex, NodeId, Role};

impl<L: LogView> Node<L> {
    /// Raft §5.2: a candidate with a majority becomes leader and at once appends an empty
    /// entry of its term, so earlier entries can commit (§5.4.2, §8).
    pub(crate) fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate, "only a candidate becomes leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.election_elapsed = 0;
        self.drop_forwarded_reads();
        let next = self.log.last_index().next();
        let progress = self
            .membership
            .members()
            .into_iter()
            .filter(|id| *id != self.id)
            .map(|id| {
                (
                    id,
                    Progress::new(next, self.cfg.inflight_appends_max, self.cfg.inflight_bytes_max),
                )
            })
            .collect();
        self.leader_state = Some(LeaderState::new(progress));
        let noop =
            Entry { id: EntryId::new(self.term, next), kind: EntryKind::Noop, data: Bytes::new() };
        self.log.append(noop);
        self.maybe_commit();
        if self.role == Role::Leader
            && self.membership.voters.is_joint()
            && self.configs.latest_index() <= self.log.committed
        {
            // The joint configuration committed under an earlier leader, which did not leave
            // it: leave it now (dissertation §4.3).
            self.append_config(self.membership.leave_joint(), Bytes::new());
        }
    }

    /// Leaves the leader role: reads that were waiting can no longer be confirmed.
    pub(crate) fn step_down(&mut self) {
        let Some(mut ls) = self.leader_state.take() else {
            return;
        };
        let reads = ls
            .reads
            .drain(..)
            .map(|r| (r.id, r.from))
            .chain(ls.reads_waiting_commit.drain(..))
            .collect::<Vec<_>>();
        for (id, from) in reads {
            if from == self.id {
                self.dropped_reads.push(id);
            } else {
                self.send(from, MessageBody::ReadIndexResponse { id, index: None });
            }
        }
    }

    fn ls(&mut self) -> &mut LeaderState {
        self.leader_state.as_mut().expect("leader state exists while leading")
    }

    pub(crate) fn tick_leader(&mut self) {
        self.election_elapsed += 1;
        let election_ticks = self.cfg.election_ticks;
        let heartbeat_ticks = self.cfg.heartbeat_ticks;
        if self.election_elapsed >= election_ticks {
            self.election_elapsed = 0;
            // Check-Quorum: a leader that has not heard from a quorum for an election timeout
            // steps down, so clients stop waiting on a leader that cannot commit (S9).
            if self.cfg.check_quorum && !self.quorum_recently_active() {
                self.become_follower(self.term, None);
                return;
            }
            let ls = self.ls();
            ls.active_last_window.clear();
            for (id, pr) in ls.progress.iter_mut() {
                if pr.recent_active {
                    ls.active_last_window.insert(*id);
                }
                pr.recent_active = false;
            }
        }
        let ls = self.ls();
        if let Some(t) = ls.transfer.as_mut() {
            t.elapsed_ticks += 1;
            if t.elapsed_ticks >= election_ticks {
                // The target did not take over in time: abandon the transfer.
                ls.transfer = None;
            }
        }
        ls.heartbeat_elapsed += 1;
        if ls.heartbeat_elapsed >= heartbeat_ticks {
            ls.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    fn quorum_recently_active(&self) -> bool {
        let ls = self.leader_state.as_ref().expect("leader");
        let active = |id: NodeId| {
            Some(id == self.id || ls.progress.get(&id).is_some_and(|p| p.recent_active))
        };
        self.membership.voters.vote_result(active) == VoteResult::Won
    }

    /// Appends a client proposal to the leader's log.
    pub(crate) fn append_proposal(&mut self, data: Bytes) -> Result<EntryId, ProposeError> {
        let max_bytes = self.cfg.uncommitted_bytes_max;
        let id = EntryId::new(self.term, self.log.last_index().next());
        let entry = Entry::new(id.term, id.index, data);
        let entry_bytes = entry.size_bytes();
        let ls = self.ls();
        if let Some(t) = ls.transfer {
            return Err(ProposeError::TransferInProgress { to: t.to });
        }
        // An empty pipeline always admits one entry, so a single oversized proposal is not
        // refused forever.
        if ls.uncommitted_bytes > 0 && ls.uncommitted_bytes + entry_bytes > max_bytes {
            return Err(ProposeError::UncommittedBytesExceeded {
                uncommitted_bytes: ls.uncommitted_bytes,
                entry_bytes,
                max_bytes,
            });
        }
        ls.uncommitted_bytes += entry_bytes;
        ls.uncommitted.push_back((id.index, entry_bytes));
        self.log.append(entry);
        Ok(id)
    }

    pub(crate) fn on_forwarded_proposals(&mut self, entries: Vec<Bytes>) {
        if self.role != Role::Leader {
            // Not forwarded again: a proposal chasing a moving leader could loop. The
            // proposer times out and retries.
            return;
        }
        for data in entries {
            if self.append_proposal(data).is_err() {
                break;
            }
        }
    }

    /// Raft §5.3-§5.4: the commit index is the highest index a quorum of voters holds, but
    /// only an entry of the leader's own term is committed by counting replicas (§5.4.2,
    /// Figure 8); earlier entries commit with it.
    pub(crate) fn maybe_commit(&mut self) {
        let persisted = self.log.persisted_index();
        let ls = self.leader_state.as_ref().expect("leader");
        #[cfg(feature = "planted-bugs")]
        let planted_voters = self.cfg.planted_bugs.learner_counts_for_commit.then(|| {
            let mut incoming = self.membership.voters.incoming.voters().clone();
            incoming.extend(self.membership.learners.iter().copied());
            crate::quorum::JointConfig {
                incoming: crate::quorum::MajorityConfig::new(incoming),
                outgoing: self.membership.voters.outgoing.clone(),
            }
        });
        #[cfg(feature = "planted-bugs")]
        let voters = planted_voters.as_ref().unwrap_or(&self.membership.voters);
        #[cfg(not(feature = "planted-bugs"))]
        let voters = &self.membership.voters;
        let quorum = voters.committed(|id| {
            if id == self.id {
                Some(persisted.0)
            } else {
                ls.progress.get(&id).map(|p| p.match_index.0)
            }
        });
        let quorum = LogIndex(quorum);
        #[cfg(feature = "planted-bugs")]
        let own_term_rule = !self.cfg.planted_bugs.commit_by_counting_old_terms;
        #[cfg(not(feature = "planted-bugs"))]
        let own_term_rule = true;
        if quorum <= self.log.committed
            || (own_term_rule && self.log.term_opt(quorum) != Some(self.term))
        {
            return;
        }
        let before = self.log.committed;
        self.log.commit_to(quorum);
        let committed = self.log.committed;
        #[cfg(feature = "planted-bugs")]
        self.planted_config_on_commit();
        let ls = self.ls();
        while let Some(&(index, bytes)) = ls.uncommitted.front() {
            if index > committed {
                break;
            }
            ls.uncommitted.pop_front();
            ls.uncommitted_bytes -= bytes;
        }
        if !ls.committed_in_term {
            ls.committed_in_term = true;
            let waiting = std::mem::take(&mut ls.reads_waiting_commit);
            for (id, from) in waiting {
                self.leader_read(id, from);
            }
        }
        let latest = self.configs.latest_index();
        if latest > before && latest <= committed {
            self.on_config_committed();
        }
    }

    /// The configuration in force is committed (dissertation §4.3): a joint one is left at
    /// once; nodes no longer members are let go; a leader that is not a voter of it steps
    /// down (§4.2.2), and being no voter, it will not campaign.
    fn on_config_committed(&mut self) {
        if self.membership.voters.is_joint() {
            self.append_config(self.membership.leave_joint(), Bytes::new());
            return;
        }
        self.release_removed();
        if !self.membership.is_voter(self.id) {
            self.become_follower(self.term, None);
        }
    }

    /// Stops tracking the nodes the committed configuration removed once they hold the entry
    /// that removed them, telling each that it is committed, so they learn they were removed
    /// ([`Node::is_removed`]). Until then they are sent the log like any follower (one that
    /// never answers is tracked until the next leader, which tracks members only).
    fn release_removed(&mut self) {
        let latest = self.configs.latest_index();
        let committed = self.log.committed;
        if latest > committed {
            return;
        }
        let membership = &self.membership;
        let ls = self.leader_state.as_mut().expect("leader");
        let released: Vec<(NodeId, LogIndex)> = ls
            .progress
            .iter()
            .filter(|(id, pr)| !membership.contains(**id) && pr.match_index >= latest)
            .map(|(id, pr)| (*id, committed.min(pr.match_index)))
            .collect();
        for (id, commit) in released {
            self.ls().progress.remove(&id);
            self.send(id, MessageBody::Heartbeat { commit, read_round: 0 });
        }
    }

    /// Sends whatever each follower's window allows.
    pub(crate) fn send_appends_to_all(&mut self) {
        let ids: Vec<NodeId> = self.ls().progress.keys().copied().collect();
        for id in ids {
            let last = self.log.last_index();
            while self.send_append(id) {
                let pr = &self.ls().progress[&id];
                if pr.state == ProgressState::Probe || pr.next_index > last {
                    break;
                }
            }
        }
    }

    /// Whether `ready()` would send appends.
    pub(crate) fn leader_has_sends(&self) -> bool {
        let Some(ls) = &self.leader_state else {
            return false;
        };
        let last = self.log.last_index();
        let committed = self.log.committed;
        let read_round_due = ls.read_round_inflight.is_none()
            && ls.reads.back().is_some_and(|r| r.round > ls.round_sent);
        read_round_due
            || ls.progress.values().any(|pr| {
                pr.can_send()
                    && (pr.next_index <= last
                        || pr.state == ProgressState::Probe
                        || pr.confirm_tail
                        || (self.cfg.commit_broadcast
                            && pr.commit_sent < committed.min(pr.match_index)))
            })
    }

    /// Sends one append to `to` if its flow control allows and there is something to say.
    /// Returns whether a message was sent.
    fn send_append(&mut self, to: NodeId) -> bool {
        let last = self.log.last_index();
        let committed = self.log.committed;
        let bytes_max = self.cfg.append_bytes_max;
        let commit_broadcast = self.cfg.commit_broadcast;
        let pr = self.leader_state.as_ref().expect("leader").progress[&to].clone_flow();
        if !pr.can_send {
            return false;
        }
        let mut entries = Vec::new();
        let prev_index;
        if pr.next <= last {
            prev_index = pr.next.prev();
            if let Err(e) = self.log.entries(pr.next, last, bytes_max, &mut entries) {
                return self.on_log_unreadable(to, e);
            }
        } else if pr.state == ProgressState::Probe || pr.confirm_tail {
            prev_index = pr.next.prev();
        } else if commit_broadcast && pr.commit_sent < committed.min(pr.match_index) {
            // Nothing new to send, but the follower should learn the commit index promptly.
            // Anchor on the match point, which the follower certainly holds.
            prev_index = pr.match_index;
        } else {
            return false;
        }
        let prev_term = match self.log.term(prev_index) {
            Ok(t) => t,
            Err(e) => return self.on_log_unreadable(to, e),
        };
        let count = entries.len();
        let last_sent = prev_index.plus(count as u64);
        let bytes: u64 = entries.iter().map(Entry::size_bytes).sum();
        let pr = self.ls().progress.get_mut(&to).expect("progress");
        pr.confirm_tail = false;
        pr.sent_append(last_sent, count, bytes);
        pr.commit_sent = pr.commit_sent.max(committed.min(last_sent));
        let prev = EntryId::new(prev_term, prev_index);
        self.send(to, MessageBody::Append { prev, entries, commit: committed });
        true
    }

    fn on_log_unreadable(&mut self, to: NodeId, e: LogError) -> bool {
        match e {
            // The entries this follower needs were compacted into a snapshot (Raft §7).
            LogError::Compacted { .. } => self.send_snapshot(to),
            other => panic!("leader cannot read its own log: {other}"),
        }
    }

    /// Asks the caller to send `to` the latest snapshot, and pauses appends to it. Returns
    /// whether a message was sent: if no snapshot covers the compacted log yet (the caller is
    /// still writing one), the follower waits and is retried on its next heartbeat answer.
    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let floor = self.log.first_index().prev();
        let meta = self.log.store().snapshot().filter(|m| m.last_included.index >= floor);
        let pr = self.ls().progress.get_mut(&to).expect("progress");
        let Some(meta) = meta else {
            pr.become_probe();
            pr.probe_sent = true;
            return false;
        };
        pr.become_snapshot(meta.last_included.index);
        self.send(to, MessageBody::Snapshot { meta });
        true
    }

    pub(crate) fn on_append_response(
        &mut self,
        from: NodeId,
        result: Result<LogIndex, RejectHint>,
    ) -> Result<(), StepError> {
        if self.role != Role::Leader {
            return Ok(());
        }
        let last = self.log.last_index();
        let first = self.log.first_index();
        match result {
            Ok(index) => {
                if index > last {
                    // A faulty peer claims entries we never had.
                    return Err(StepError::MatchPastLastIndex { from, index, last_index: last });
                }
                let Some(pr) = self.ls().progress.get_mut(&from) else {
                    // Not a member of the configuration: nothing to track.
                    return Ok(());
                };
                pr.recent_active = true;
                let moved = pr.on_match(index);
                let matched = pr.match_index;
                if moved {
                    self.maybe_commit();
                    if self.role != Role::Leader {
                        // Stepped down: the configuration that removed it committed.
                        return Ok(());
                    }
                    if !self.membership.contains(from) {
                        self.release_removed();
                    }
                }
                let ls = self.ls();
                if ls.transfer.is_some_and(|t| t.to == from && matched == last) {
                    self.send_timeout_now(from);
                }
            }
            Err(reject) => {
                // Skip back over the follower's diverged term in one step (Raft §5.3).
                let target = self.log.find_at_or_below_term(reject.hint.index, reject.hint.term);
                // The follower does not hold our snapshot point, or disagrees with it: no
                // entry we still have can be matched, so it needs the snapshot (Raft §7).
                let floor = first.prev();
                let needs_snapshot = floor.0 > 0
                    && (reject.rejected <= floor
                        || (target.index <= floor && target.term > reject.hint.term));
                let next = target.index.next().min(reject.last_index.next());
                let Some(pr) = self.ls().progress.get_mut(&from) else {
                    return Ok(());
                };
                pr.recent_active = true;
                if pr.on_reject(reject.rejected, next) && needs_snapshot {
                    self.send_snapshot(from);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn on_heartbeat_response(&mut self, from: NodeId, round: u64) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let ls = self.ls();
        let Some(pr) = ls.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.round_acked = pr.round_acked.max(round.min(ls.round_sent));
        // A probe or a window lost to the network is retried on the heartbeat's answer.
        match pr.state {
            ProgressState::Probe => pr.probe_sent = false,
            // Waits for the snapshot's acknowledgement or report.
            ProgressState::Snapshot => {}
            ProgressState::Replicate if pr.inflights.is_full() => pr.inflights.free_first(),
            ProgressState::Replicate => pr.confirm_tail = pr.match_index < last,
        }
        self.update_read_rounds();
    }

    fn broadcast_heartbeat(&mut self) {
        let committed = self.log.committed;
        let now = self.now_ticks;
        let ls = self.ls();
        ls.round_sent += 1;
        let round = ls.round_sent;
        ls.round_ticks.push_back((round, now));
        if ls.round_ticks.len() > ROUND_HISTORY_MAX {
            ls.round_ticks.pop_front();
        }
        let targets: Vec<(NodeId, LogIndex)> = ls
            .progress
            .iter_mut()
            .map(|(id, pr)| {
                let commit = committed.min(pr.match_index);
                pr.commit_sent = pr.commit_sent.max(commit);
                (*id, commit)
            })
            .collect();
        for (to, commit) in targets {
            self.send(to, MessageBody::Heartbeat { commit, read_round: round });
        }
        // A single-voter cluster confirms its own rounds.
        self.update_read_rounds();
    }

    /// Recomputes the round a quorum has confirmed; releases the reads it covers and renews
    /// the lease.
    fn update_read_rounds(&mut self) {
        let id = self.id;
        let voters = &self.membership.voters;
        let ls = self.leader_state.as_mut().expect("leader");
        let confirmed = voters.committed(|v| {
            if v == id { Some(ls.round_sent) } else { ls.progress.get(&v).map(|p| p.round_acked) }
        });
        if confirmed <= ls.round_confirmed {
            return;
        }
        ls.round_confirmed = confirmed;
        while ls.round_ticks.len() > 1 && ls.round_ticks[1].0 <= confirmed {
            ls.round_ticks.pop_front();
        }
        if let Some(&(_, tick)) = ls.round_ticks.front().filter(|(r, _)| *r <= confirmed) {
            ls.lease_start_tick = Some(tick);
        }
        if ls.read_round_inflight.is_some_and(|r| r <= confirmed) {
            ls.read_round_inflight = None;
        }
        let mut released = Vec::new();
        while ls.reads.front().is_some_and(|r| r.round <= confirmed) {
            released.push(ls.reads.pop_front().expect("front exists"));
        }
        for r in released {
            self.answer_read(r.id, r.from, r.index);
        }
    }

    /// Starts a heartbeat round for reads that are waiting for one, unless one is in flight
    /// (then they share the next round: batching).
    pub(crate) fn maybe_start_read_round(&mut self) {
        let ls = self.ls();
        let due = ls.read_round_inflight.is_none()
            && ls.reads.back().is_some_and(|r| r.round > ls.round_sent);
        if due {
            self.broadcast_heartbeat();
            let ls = self.ls();
            if ls.round_confirmed < ls.round_sent {
                ls.read_round_inflight = Some(ls.round_sent);
            }
        }
    }

    /// ReadIndex at the leader (dissertation §6.4).
    pub(crate) fn leader_read(&mut self, id: ReadId, from: NodeId) {
        let committed = self.log.committed;
        // Only when this node is the one voter: a leader removed from the configuration
        // (waiting for that to commit) must still confirm its reads with the voters.
        let single_voter = self.membership.voters.ids().into_iter().eq([self.id]);
        let lease_ok = self.lease_valid();
        let ls = self.ls();
        if !ls.committed_in_term {
            ls.reads_waiting_commit.push((id, from));
            return;
        }
        if single_voter || lease_ok {
            self.answer_read(id, from, committed);
            return;
        }
        let round = ls.round_sent + 1;
        ls.reads.push_back(PendingRead { id, from, index: committed, round });
    }

    fn lease_valid(&self) -> bool {
        let ReadMode::Lease { clock_drift_ticks } = self.cfg.read_mode else {
            return false;
        };
        let Some(ls) = &self.leader_state else {
            return false;
        };
        if ls.lease_revoked {
            return false;
        }
        let span = u64::from(self.cfg.election_ticks - clock_drift_ticks);
        ls.lease_start_tick.is_some_and(|start| self.now_ticks < start + span)
    }

    fn answer_read(&mut self, id: ReadId, from: NodeId, index: LogIndex) {
        if from == self.id {
            self.read_states.push(ReadState { id, index });
        } else {
            self.send(from, MessageBody::ReadIndexResponse { id, index: Some(index) });
        }
    }

    pub(crate) fn on_read_index_request(&mut self, from: NodeId, id: ReadId) {
        if self.role == Role::Leader {
            self.leader_read(id, from);
        } else {
            self.send(from, MessageBody::ReadIndexResponse { id, index: None });
        }
    }

    pub(crate) fn start_transfer(&mut self, to: NodeId) {
        if to == self.id {
            return;
        }
        let last = self.log.last_index();
        let ls = self.ls();
        ls.transfer = Some(Transfer { to, elapsed_ticks: 0 });
        let caught_up = ls.progress.get(&to).is_some_and(|p| p.match_index == last);
        if caught_up {
            self.send_timeout_now(to);
        }
        // Otherwise the target is brought up to date by the normal appends; its answer
        // sends TimeoutNow.
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        // From here another node may win an election without waiting out our lease.
        #[cfg(feature = "planted-bugs")]
        let revoke = !self.cfg.planted_bugs.transfer_keeps_lease;
        #[cfg(not(feature = "planted-bugs"))]
        let revoke = true;
        if revoke {
            self.ls().lease_revoked = true;
        }
        self.send(to, MessageBody::TimeoutNow);
    }
}

/// The flow-control facts `send_append` needs, copied so the log can be read meanwhile.
struct FlowView {
    can_send: bool,
    next: LogIndex,
    match_index: LogIndex,
    commit_sent: LogIndex,
    state: ProgressState,
    confirm_tail: bool,
}

impl Progress {
    fn clone_flow(&self) -> FlowView {
        FlowView {
            can_send: self.can_send(),
            next: self.next_index,
            match_index: self.match_index,
            commit_sent: self.commit_sent,
            state: self.state,
            confirm_tail: self.confirm_tail,
        }
    }
}
