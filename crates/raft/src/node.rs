//! [`Node`]: the consensus state machine. This file holds the public API, the rules every role
//! shares (terms, S1) and the `Ready` bookkeeping; role behaviour lives in `election.rs`
//! (follower timers, pre-candidates, candidates), `follower.rs` and `leader.rs`.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use crate::config::{Config, ConfigError};
use crate::error::{ConfChangeError, ProposeError, ReadError, StepError, TransferError};
use crate::leader_state::LeaderState;
use crate::log_view::{LogView, SnapshotMeta};
use crate::membership::{ConfChange, ConfigEntry, ConfigHistory, Membership};
use crate::message::{Message, MessageBody, ReadId};
use crate::raft_log::RaftLog;
use crate::ready::{ReadState, Ready, SoftState};
use crate::rng::Rng;
use crate::types::{EntryId, EntryKind, HardState, LogIndex, NodeId, Role, Term};

/// What happened to an accepted proposal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Proposed {
    /// Appended to the leader's log at this position. It is committed when an entry with this
    /// exact id comes out in [`Ready::committed_entries`]; if an entry with the same index but
    /// another term comes out instead, the proposal was lost to a leader change.
    Appended(EntryId),
    /// Forwarded to the leader, which will assign it a position.
    Forwarded {
        /// The leader it was sent to.
        to: NodeId,
    },
}

/// How a snapshot transfer to a follower ended, as the caller's transport saw it (see
/// [`Node::report_snapshot`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SnapshotStatus {
    /// The data was delivered and the message stepped into the follower.
    Delivered,
    /// The transfer failed or was abandoned; the leader will probe and send a snapshot again.
    Failed,
}

/// A snapshot of a node's state, for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Role, term, leader.
    pub soft: SoftState,
    /// The vote in the current term.
    pub vote: Option<NodeId>,
    /// Last log position.
    pub last: EntryId,
    /// Highest index known committed.
    pub committed: LogIndex,
    /// Highest index durable locally.
    pub persisted: LogIndex,
    /// Highest index reported applied.
    pub applied: LogIndex,
    /// First index still in the log (everything before is compacted into a snapshot).
    pub first_index: LogIndex,
    /// For a leader: each follower's match index.
    pub matched: BTreeMap<NodeId, LogIndex>,
}

/// A Raft node: a deterministic state machine with no I/O, no clock and no threads.
///
/// Feed it [`tick`](Node::tick), [`step`](Node::step), [`propose`](Node::propose),
/// [`read_index`](Node::read_index) and [`transfer_leadership`](Node::transfer_leadership);
/// take its output with [`ready`](Node::ready) and handle it as [`Ready`] describes. It reads
/// durable state through the [`LogView`] it owns.
pub struct Node<L: LogView> {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) log: RaftLog<L>,
    /// The configuration in force: a copy of `configs.current()`, kept in step by
    /// `on_config_changed`.
    pub(crate) membership: Membership,
    /// The configurations along the log from the applied index on (dissertation §4.1: the
    /// latest one in the log is in force, committed or not; truncation falls back).
    pub(crate) configs: ConfigHistory,
    /// The index of the configuration entry in force at the commit index last handed out in a
    /// `Ready`'s hard state, so `Ready::membership` says when the caller must write it.
    reported_config_index: LogIndex,
    /// The configuration entry that removed this node (its previous configuration included
    /// it, the one it put in force does not), while that configuration is in force.
    removal_index: Option<LogIndex>,
    /// Current term (S1). Only grows.
    pub(crate) term: Term,
    /// Vote in `term` (S2). Invariant: reset to `None` whenever `term` grows.
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) rng: Rng,
    /// Ticks since the last election-relevant event: for followers, since they last heard from
    /// the leader (or started); for candidates, since the campaign started; for leaders, since
    /// the last Check-Quorum.
    pub(crate) election_elapsed: u32,
    /// The current randomised election timeout, in `[election_ticks, 2 * election_ticks)`.
    pub(crate) election_timeout: u32,
    /// Ticks since the node started; the leader's lease clock.
    pub(crate) now_ticks: u64,
    /// A node that just started ignores vote requests for one election timeout when reads
    /// use leases, since it may have promised a leader not to vote before it crashed.
    pub(crate) boot_guard: bool,
    /// Votes received in the current (pre-)campaign.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// Leader-only state; `Some` exactly when `role == Leader`.
    pub(crate) leader_state: Option<LeaderState>,
    /// Proposals waiting to be forwarded to the leader in the next `Ready`.
    pub(crate) forward_queue: Vec<Bytes>,
    /// Reads this follower asked the leader to confirm.
    pub(crate) forwarded_reads: Vec<(ReadId, NodeId)>,
    /// As a candidate: the number of the ready that carried the campaign's term and vote.
    pub(crate) candidacy_ready: Option<u64>,
    // Output, drained by `ready()`.
    pub(crate) msgs: Vec<Message>,
    pub(crate) msgs_after_persist: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) dropped_reads: Vec<ReadId>,
    /// A snapshot accepted from the leader, to hand to the caller in the next `Ready`.
    pub(crate) snapshot_to_install: Option<SnapshotMeta>,
    // Bookkeeping for the Ready contract.
    ready_number: u64,
    /// Readies handed out and not yet acknowledged durable, with the last entry each carried
    /// and the snapshot it carried to install, if any.
    unpersisted: VecDeque<(u64, Option<EntryId>, Option<EntryId>)>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
}

impl<L: LogView> Node<L> {
    /// Creates a node from its configuration and its durable log.
    ///
    /// The node starts as a follower in the persisted term; with an empty log and a
    /// configuration that names it a voter it will campaign after an election timeout.
    pub fn new(cfg: Config, store: L) -> Result<Node<L>, ConfigError> {
        cfg.validate()?;
        let init = store.initial_state();
        init.membership.validate().map_err(ConfigError::InitialState)?;
        let hs = init.hard_state;
        if hs.commit > store.last_index() {
            return Err(ConfigError::InitialState(format!(
                "commit {} is past the last log index {}",
                hs.commit,
                store.last_index()
            )));
        }
        if cfg.applied > hs.commit.max(store.first_index().prev()) {
            return Err(ConfigError::InitialState(format!(
                "applied {} is past the commit index {}",
                cfg.applied, hs.commit
            )));
        }
        let committed = hs.commit.max(store.first_index().prev());
        let log = RaftLog::new(store, committed, cfg.applied);
        let configs = recover_configs(&log, init.membership)?;
        let reported_config_index = configs.index_at(committed);
        let soft = SoftState { role: Role::Follower, term: hs.term, leader: None };
        let mut node = Node {
            id: cfg.id,
            rng: Rng::new(cfg.seed),
            boot_guard: matches!(cfg.read_mode, crate::config::ReadMode::Lease { .. }),
            cfg,
            log,
            membership: configs.current().clone(),
            configs,
            reported_config_index,
            removal_index: None,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            election_elapsed: 0,
            election_timeout: 0,
            now_ticks: 0,
            votes: BTreeMap::new(),
            leader_state: None,
            forward_queue: Vec::new(),
            forwarded_reads: Vec::new(),
            candidacy_ready: None,
            msgs: Vec::new(),
            msgs_after_persist: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            snapshot_to_install: None,
            ready_number: 0,
            unpersisted: VecDeque::new(),
            last_hard_state: HardState { commit: committed, ..hs },
            last_soft_state: soft,
        };
        // A restarted node knows again whether its latest configuration entry removed it.
        node.on_config_changed();
        node.reset_election_timer();
        Ok(node)
    }

    // ----- Inputs ---------------------------------------------------------------------------

    /// Advances the logical clock by one tick: election timeouts, heartbeats, Check-Quorum.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    /// Starts an election now (as if the election timeout fired), with Pre-Vote if enabled.
    /// Does nothing on a leader or a node that does not vote.
    pub fn campaign(&mut self) {
        if self.role != Role::Leader && self.may_campaign() {
            self.start_election(false);
        }
    }

    /// Handles a message from another node.
    ///
    /// Bad input is an error, never a panic, and leaves the node as it was: a message for
    /// someone else, from "self", or malformed ([`Message::validate`]: out-of-range terms and
    /// indexes, appends whose entries do not follow `prev` contiguously with non-decreasing
    /// terms, ...). The caller logs the error; nothing is sent back. Messages from an older
    /// term are answered or dropped as Raft §5.1 prescribes.
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        if msg.to != self.id {
            return Err(StepError::WrongRecipient { to: msg.to, me: self.id });
        }
        if msg.from == self.id {
            return Err(StepError::FromSelf);
        }
        if matches!(msg.body, MessageBody::App { .. }) {
            return Err(StepError::NotForTheCore { from: msg.from });
        }
        msg.validate().map_err(|reason| StepError::Malformed {
            from: msg.from,
            kind: msg.body.kind(),
            reason,
        })?;
        if matches!(msg.body, MessageBody::PreVote { .. } | MessageBody::Vote { .. })
            && !self.membership.is_voter(msg.from)
        {
            // Dissertation §4.2.3: a server removed from the configuration (or never in it)
            // must not disrupt it. Its request is not answered and, above all, its term is
            // not adopted, which would depose the leader.
            return Err(StepError::VoteFromNonVoter { from: msg.from });
        }
        if msg.term > self.term
            && !matches!(
                msg.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::Snapshot { .. }
            )
            && !self.membership.contains(msg.from)
        {
            // The same rule for the answers of a removed node that kept campaigning: a
            // leader still sending it the entry that removed it must not adopt its term.
            // A leader's messages are not concerned: this node may not yet know a
            // configuration that names the new leader.
            return Ok(());
        }
        if msg.term > self.term {
            if self.on_higher_term(&msg) == Handled::Done {
                return Ok(());
            }
        } else if msg.term < self.term {
            self.on_lower_term(&msg);
            return Ok(());
        }
        let Message { from, body, .. } = msg;
        match body {
            MessageBody::PreVote { last } => self.on_vote_request(from, msg.term, last, true),
            MessageBody::Vote { last, .. } => self.on_vote_request(from, msg.term, last, false),
            MessageBody::PreVoteResponse { granted } => self.on_vote_response(from, granted, true),
            MessageBody::VoteResponse { granted } => self.on_vote_response(from, granted, false),
            MessageBody::Append { prev, entries, commit } => {
                if self.become_follower_of(from) {
                    self.on_append(from, prev, entries, commit);
                }
            }
            MessageBody::Heartbeat { commit, read_round } => {
                if self.become_follower_of(from) {
                    self.on_heartbeat(from, commit, read_round);
                }
            }
            MessageBody::AppendResponse { result } => return self.on_append_response(from, result),
            MessageBody::HeartbeatResponse { read_round } => {
                self.on_heartbeat_response(from, read_round)
            }
            MessageBody::Propose { entries } => self.on_forwarded_proposals(entries),
            MessageBody::ReadIndex { id } => self.on_read_index_request(from, id),
            MessageBody::ReadIndexResponse { id, index } => {
                self.on_read_index_response(from, id, index)
            }
            MessageBody::TimeoutNow => self.on_timeout_now(),
            MessageBody::Snapshot { meta } => {
                if self.become_follower_of(from) {
                    self.on_snapshot(from, meta);
                }
            }
            MessageBody::App { .. } => unreachable!("refused above"),
        }
        Ok(())
    }

    /// Proposes `data` for the log.
    ///
    /// On the leader the entry is appended (not yet durable, not yet committed). On a follower
    /// it is forwarded to the leader if [`Config::forward_proposals`] is set, otherwise
    /// refused with a leader hint (S5).
    pub fn propose(&mut self, data: Bytes) -> Result<Proposed, ProposeError> {
        if self.role == Role::Leader {
            return self.append_proposal(data).map(Proposed::Appended);
        }
        match self.leader {
            Some(to) if self.cfg.forward_proposals => {
                self.forward_queue.push(data);
                Ok(Proposed::Forwarded { to })
            }
            leader_hint => Err(ProposeError::NotLeader { leader_hint }),
        }
    }

    /// Asks for a linearizable read (ReadIndex, dissertation §6.4; S12). When it is safe, a
    /// [`ReadState`] with this `id` comes out of [`Node::ready`]; if it can no longer be
    /// confirmed, the id comes out in [`Ready::dropped_reads`].
    ///
    /// A follower asks the leader; the leader confirms its leadership with one heartbeat round
    /// shared by every read that arrived meanwhile (or, with leases, answers at once).
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        if self.role == Role::Leader {
            self.leader_read(id, self.id);
            return Ok(());
        }
        match self.leader {
            Some(leader) => {
                self.forwarded_reads.push((id, leader));
                self.send(leader, MessageBody::ReadIndex { id });
                Ok(())
            }
            None => Err(ReadError::NoLeader),
        }
    }

    /// Hands leadership to `to` (dissertation §3.10): the leader stops accepting proposals,
    /// brings `to` up to date, then tells it to campaign at once. The transfer is abandoned
    /// after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader { leader_hint: self.leader });
        }
        if !self.membership.is_voter(to) {
            return Err(TransferError::NotAVoter(to));
        }
        self.start_transfer(to);
        Ok(())
    }

    /// Reports how the transfer of a snapshot to `to` (asked for by a
    /// [`MessageBody::Snapshot`] message) ended. The leader sends nothing else to `to` but
    /// heartbeats until the follower acknowledges the snapshot or this is called, so the
    /// caller's transport must call it for every snapshot message it could not deliver.
    /// Ignored unless this node leads and is sending `to` a snapshot.
    pub fn report_snapshot(&mut self, to: NodeId, status: SnapshotStatus) {
        if let Some(pr) = self.leader_state.as_mut().and_then(|ls| ls.progress.get_mut(&to)) {
            pr.snapshot_done(status == SnapshotStatus::Failed);
        }
    }

    // ----- Output ---------------------------------------------------------------------------

    /// Whether [`Node::ready`] would return anything.
    pub fn has_ready(&self) -> bool {
        (self.role == Role::Candidate && self.candidacy_ready.is_none())
            || self.snapshot_to_install.is_some()
            || !self.msgs.is_empty()
            || !self.msgs_after_persist.is_empty()
            || !self.forward_queue.is_empty()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || self.log.has_unpersisted()
            || self.log.has_applicable()
            || self.hard_state() != self.last_hard_state
            || self.soft_state() != self.last_soft_state
            || self.leader_has_sends()
    }

    /// Takes everything the node wants done. See [`Ready`] for the contract.
    pub fn ready(&mut self) -> Ready {
        #[cfg(feature = "planted-bugs")]
        self.planted_config_on_commit();
        if self.role == Role::Leader {
            self.send_appends_to_all();
            self.maybe_start_read_round();
        }
        if !self.forward_queue.is_empty() {
            if let Some(leader) = self.leader {
                let entries = std::mem::take(&mut self.forward_queue);
                self.send(leader, MessageBody::Propose { entries });
            } else {
                self.forward_queue.clear();
            }
        }
        self.ready_number += 1;
        let mut rd = Ready { number: self.ready_number, ..Ready::default() };
        if self.role == Role::Candidate && self.candidacy_ready.is_none() {
            self.candidacy_ready = Some(rd.number);
        }
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            rd.soft_state = Some(soft);
            self.last_soft_state = soft;
        }
        let hs = self.hard_state();
        if hs != self.last_hard_state {
            let config_index = self.configs.index_at(hs.commit);
            if config_index != self.reported_config_index {
                self.reported_config_index = config_index;
                rd.membership = Some(self.configs.at(hs.commit).clone());
            }
            rd.term_or_vote_changed =
                hs.term != self.last_hard_state.term || hs.vote != self.last_hard_state.vote;
            rd.hard_state = Some(hs);
            self.last_hard_state = hs;
        }
        rd.snapshot = self.snapshot_to_install.take();
        self.log.take_unpersisted(&mut rd.entries);
        rd.messages = std::mem::take(&mut self.msgs);
        rd.persisted_messages = std::mem::take(&mut self.msgs_after_persist);
        self.log.take_applicable(self.cfg.apply_bytes_max, &mut rd.committed_entries);
        rd.read_states = std::mem::take(&mut self.read_states);
        rd.dropped_reads = std::mem::take(&mut self.dropped_reads);
        if rd.must_persist() || !rd.persisted_messages.is_empty() {
            let last = rd.entries.last().map(|e| e.id);
            let snapshot = rd.snapshot.as_ref().map(|m| m.last_included);
            self.unpersisted.push_back((rd.number, last, snapshot));
        }
        rd
    }

    /// Acknowledges that the `Ready` numbered `number`, and every earlier one, is durable.
    ///
    /// The leader counts its own log toward commit only from here, so its write runs in
    /// parallel with the followers'.
    pub fn on_persisted(&mut self, number: u64) {
        assert!(number <= self.ready_number, "ready {number} was never handed out");
        let mut last = None;
        // Only the newest snapshot acknowledged here is checked: the store shows it, and no
        // longer the older ones it replaced.
        let mut installed = None;
        while let Some(&(n, id, snapshot)) = self.unpersisted.front() {
            if n > number {
                break;
            }
            self.unpersisted.pop_front();
            if snapshot.is_some() {
                installed = snapshot;
            }
            if id.is_some() {
                last = id;
            }
        }
        if let Some(snapshot) = installed {
            self.log.snapshot_installed(snapshot);
        }
        if let Some(id) = last {
            self.log.stable_to(id);
            if self.role == Role::Leader {
                self.maybe_commit();
            }
        }
        self.count_durable_self_vote(number);
    }

    /// Reports that the state machine applied every entry through `index`.
    pub fn on_applied(&mut self, index: LogIndex) {
        self.log.applied_to(index);
        self.configs.compact_to(self.log.applied);
    }

    // ----- Configuration changes (dissertation chapter 4) -------------------------------------

    /// Proposes a configuration change (leader only): several changes at once go through the
    /// joint configuration `C_old,new` (dissertation §4.3), as does any change of voters; a
    /// change of learners only is a simple step. The entry takes effect on every node as soon
    /// as it is appended (§4.1). Once the joint entry commits, the leader proposes the entry
    /// that leaves it ([`Node::leave_joint`] asks for it explicitly).
    ///
    /// One change at a time: refused while a configuration entry is uncommitted or the
    /// configuration is joint. `context` is carried untouched in the entry for the caller
    /// (see [`ConfigEntry`]). The safety checks a server runs first are
    /// [`Node::can_promote`] and [`Node::check_active_quorum`]; this method does not run them.
    pub fn propose_conf_change(
        &mut self,
        changes: &[ConfChange],
        context: Bytes,
    ) -> Result<EntryId, ConfChangeError> {
        self.check_can_change()?;
        if self.membership.voters.is_joint() {
            return Err(ConfChangeError::ChangeInProgress { index: self.configs.latest_index() });
        }
        let next = self.membership.apply_changes(changes)?;
        Ok(self.append_config(next, context))
    }

    /// Proposes leaving the joint configuration (leader only). The leader does this by itself
    /// once the joint entry commits; this asks for it explicitly (for example after a leader
    /// change while the leave entry was not yet appended).
    pub fn leave_joint(&mut self) -> Result<EntryId, ConfChangeError> {
        self.check_can_change()?;
        if !self.membership.voters.is_joint() {
            return Err(ConfChangeError::NotJoint);
        }
        let next = self.membership.leave_joint();
        Ok(self.append_config(next, Bytes::new()))
    }

    fn check_can_change(&self) -> Result<(), ConfChangeError> {
        let Some(ls) = &self.leader_state else {
            return Err(ConfChangeError::NotLeader { leader_hint: self.leader });
        };
        if let Some(t) = ls.transfer {
            return Err(ConfChangeError::TransferInProgress { to: t.to });
        }
        if !ls.committed_in_term {
            return Err(ConfChangeError::LeaderNotReady);
        }
        let latest = self.configs.latest_index();
        if latest > self.log.committed {
            return Err(ConfChangeError::ChangeInProgress { index: latest });
        }
        Ok(())
    }

    /// Whether this leader and `peer`, which sent it a message of the current term as its
    /// follower, together show that no leader of a later term had been elected when `peer`
    /// sent it (leader only). That holds when the two are a quorum of the configuration in
    /// force and no other configuration can be in force anywhere: this leader has committed
    /// an entry of its term (so any configuration a candidate could hold that this log lacks
    /// lost to that entry's quorum, which meets every quorum of it: §4.1 and the 2015
    /// correction, "a leader may not append a configuration entry until it has committed an
    /// entry of its term"), its latest configuration is committed, not joint, and names both
    /// as voters, and no leadership transfer is under way. A candidate of a later term would
    /// then need the vote of one of the two; `peer` had not voted in a later term when it
    /// sent the message (its term was the current one), and this node has not either (it
    /// still leads in that term).
    ///
    /// An application uses this to answer a follower's request that needs a quorum's
    /// confirmation of the leadership (a ReadIndex round) without one: the follower's message
    /// is the other half of the quorum. Only clusters of two or three voters qualify.
    pub fn quorum_with(&self, peer: NodeId) -> bool {
        let Some(ls) = &self.leader_state else { return false };
        let voters = &self.membership.voters;
        ls.committed_in_term
            && ls.transfer.is_none()
            && self.configs.latest_index() <= self.log.committed
            && !voters.is_joint()
            && peer != self.id
            && voters.contains(peer)
            && voters.contains(self.id)
            && voters.incoming.quorum() <= 2
    }

    /// Whether `learner` may be promoted now (leader only): it must be a learner whose log
    /// matches the leader's within [`crate::membership::PROMOTE_LAG_ENTRIES_MAX`] entries of
    /// the leader's last index (etcd: "can only promote a learner member which is in sync
    /// with leader"), and that has acknowledged some entry (one that never answered holds
    /// nothing, however short the log).
    pub fn can_promote(&self, learner: NodeId) -> Result<(), ConfChangeError> {
        let Some(ls) = &self.leader_state else {
            return Err(ConfChangeError::NotLeader { leader_hint: self.leader });
        };
        if !self.membership.learners.contains(&learner) {
            return Err(crate::membership::InvalidChange::NotALearner(learner).into());
        }
        let match_index = ls.progress.get(&learner).map_or(LogIndex(0), |p| p.match_index);
        let last_index = self.log.last_index();
        // A learner that never acknowledged anything holds nothing, however short the log.
        let answered = match_index > LogIndex(0);
        if !answered || !crate::membership::learner_caught_up(match_index, last_index) {
            return Err(ConfChangeError::LearnerNotCaughtUp {
                id: learner,
                match_index,
                last_index,
            });
        }
        Ok(())
    }

    /// etcd's strict reconfiguration check (leader only): refuses `changes` if, in the
    /// configuration they lead to, fewer voters than a quorum are active. A voter is active if
    /// it is this leader or answered it during the current or the previous Check-Quorum window
    /// (about one to two election timeouts); a node being added is not active until it
    /// answers.
    pub fn check_active_quorum(&self, changes: &[ConfChange]) -> Result<(), ConfChangeError> {
        let Some(ls) = &self.leader_state else {
            return Err(ConfChangeError::NotLeader { leader_hint: self.leader });
        };
        let next = self.membership.apply_changes(changes)?;
        let active = |id: NodeId| {
            id == self.id
                || ls.progress.get(&id).is_some_and(|p| p.recent_active)
                || ls.active_last_window.contains(&id)
        };
        // Only the configuration being moved to matters: the joint phase's outgoing half is
        // today's voters, who are committing now.
        let incoming =
            crate::quorum::JointConfig::simple(next.voters.incoming.voters().iter().copied());
        crate::membership::enough_active_voters(&incoming, active)
            .map_err(|(active, needed)| ConfChangeError::NotEnoughActiveVoters { active, needed })
    }

    /// Whether this node was removed: it saw the configuration entry that removed it (the
    /// configuration before included it, the one in force does not) and that entry is
    /// committed. A removed node never campaigns and the members refuse its vote requests
    /// (§4.2.3); its caller should shut it down. A node that restarts after its removal
    /// committed, or that missed the entry, does not know; it stays silent (it does not
    /// vote) and the members refuse it.
    pub fn is_removed(&self) -> bool {
        self.removal_index.is_some_and(|i| i <= self.log.committed)
    }

    /// Whether this node may start an election: it votes in the configuration in force, or
    /// it voted in the one the latest configuration entry removed it from and that entry is
    /// not committed yet. Until it is, the remaining voters may need this node (which may
    /// hold entries they lost or never got, the removing entry among them) to elect a leader
    /// that commits it: dissertation §4.2.2, "a server that is not part of its own latest
    /// configuration should still start new elections, as it might still be needed until the
    /// C_new entry is committed". Its own vote does not count; it needs a majority of the
    /// configuration in force, and steps down once that commits.
    pub(crate) fn may_campaign(&self) -> bool {
        self.membership.is_voter(self.id)
            || (self.removal_index.is_some()
                && !self.is_removed()
                && self.configs.latest_prev().is_some_and(|prev| prev.is_voter(self.id)))
    }

    /// The configuration in force at `index`, for an `index` at or after the applied index
    /// (a snapshot taken at the applied index records this one).
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.configs.at(index)
    }

    /// Appends a configuration entry leading from the current configuration to `next`, which
    /// takes effect at once (leader only).
    pub(crate) fn append_config(&mut self, next: Membership, context: Bytes) -> EntryId {
        assert_eq!(self.role, Role::Leader, "only the leader appends configuration entries");
        let id = EntryId::new(self.term, self.log.last_index().next());
        let data = ConfigEntry { prev: self.membership.clone(), next: next.clone(), context };
        let entry = crate::types::Entry { id, kind: EntryKind::Config, data: data.encode() };
        self.log.append(entry);
        self.configs.push(id.index, data.prev, next);
        self.on_config_changed();
        id
    }

    /// The configuration in force changed (an entry appended or truncated, a snapshot): take
    /// it, and as leader start tracking new members at once (nodes removed are tracked until
    /// the change commits, so they learn of it).
    pub(crate) fn on_config_changed(&mut self) {
        self.membership = self.configs.current().clone();
        #[cfg(feature = "planted-bugs")]
        if self.cfg.planted_bugs.config_on_commit {
            self.membership = self.configs.at(self.log.committed).clone();
        }
        let latest = self.configs.latest_index();
        // Removed by the latest entry: its own previous configuration named this node (not
        // the one before it here, which for a node that joined is where it started).
        let named_before = self.configs.latest_prev().is_some_and(|prev| prev.contains(self.id));
        self.removal_index = (!self.membership.contains(self.id) && named_before).then_some(latest);
        let next = self.log.last_index().next();
        let (appends_max, bytes_max) = (self.cfg.inflight_appends_max, self.cfg.inflight_bytes_max);
        let members = self.membership.members();
        let me = self.id;
        if let Some(ls) = self.leader_state.as_mut() {
            for id in members.into_iter().filter(|id| *id != me) {
                ls.progress.entry(id).or_insert_with(|| {
                    crate::progress::Progress::new(next, appends_max, bytes_max)
                });
            }
        }
        if self.role != Role::Leader {
            // A pending (pre-)campaign counted votes under the old configuration.
            self.votes.retain(|id, _| self.membership.is_voter(*id) || *id == me);
        }
    }

    /// Planted bug `config_on_commit`: the configuration in force follows the commit index.
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn planted_config_on_commit(&mut self) {
        if self.cfg.planted_bugs.config_on_commit
            && self.membership != *self.configs.at(self.log.committed)
        {
            self.on_config_changed();
        }
    }

    // ----- Accessors ------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The configuration in force.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The highest index known committed.
    pub fn committed(&self) -> LogIndex {
        self.log.committed
    }

    /// The last index of the log (durable or not).
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The term of the entry at `index`, if the log holds it (durable or not).
    pub fn entry_term(&self, index: LogIndex) -> Option<Term> {
        self.log.term_opt(index)
    }

    /// The durable log this node reads.
    pub fn log_view(&self) -> &L {
        self.log.store()
    }

    /// The durable log, for the caller to write what a `Ready` asked for.
    pub fn log_view_mut(&mut self) -> &mut L {
        self.log.store_mut()
    }

    /// Role, term, leader.
    pub fn soft_state(&self) -> SoftState {
        SoftState { role: self.role, term: self.term, leader: self.leader }
    }

    /// The hard state as it stands (possibly not yet durable).
    pub fn hard_state(&self) -> HardState {
        HardState { term: self.term, vote: self.vote, commit: self.log.committed }
    }

    /// A summary of the node's state.
    pub fn status(&self) -> Status {
        let matched = match &self.leader_state {
            Some(ls) => ls.progress.iter().map(|(id, p)| (*id, p.match_index)).collect(),
            None => BTreeMap::new(),
        };
        Status {
            id: self.id,
            soft: self.soft_state(),
            vote: self.vote,
            last: self.log.last_id(),
            committed: self.log.committed,
            persisted: self.log.persisted_index(),
            applied: self.log.applied,
            first_index: self.log.first_index(),
            matched,
        }
    }

    // ----- Shared rules -----------------------------------------------------------------------

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.msgs.push(Message { from: self.id, to, term: self.term, body });
    }

    pub(crate) fn send_after_persist(&mut self, to: NodeId, body: MessageBody) {
        self.msgs_after_persist.push(Message { from: self.id, to, term: self.term, body });
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.msgs.push(Message { from: self.id, to, term, body });
    }

    /// S1: a message from a higher term. Returns `Done` when the message must be dropped.
    fn on_higher_term(&mut self, msg: &Message) -> Handled {
        match msg.body {
            MessageBody::PreVote { .. } | MessageBody::Vote { transfer: false, .. }
                if self.in_leader_lease() =>
            {
                // S9: a follower that hears from a live leader ignores elections, so a node
                // rejoining from a partition cannot depose it (dissertation §4.2.3).
                return Handled::Done;
            }
            // A pre-vote does not raise anyone's term (dissertation §9.6)...
            MessageBody::PreVote { .. } => {}
            // ...and a granted pre-vote answer carries the term we would campaign in.
            MessageBody::PreVoteResponse { granted: true } => {}
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                self.become_follower(msg.term, Some(msg.from));
            }
            _ => self.become_follower(msg.term, None),
        }
        Handled::Continue
    }

    /// S1: a message from an older term is rejected, and the sender learns the newer term.
    fn on_lower_term(&mut self, msg: &Message) {
        match msg.body {
            // A stale leader (for example one cut off by a partition, S8) must learn that it
            // was replaced; with Pre-Vote and Check-Quorum it would otherwise never see a
            // higher term from the nodes that ignore its elections.
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::Snapshot { .. } => {
                self.send(msg.from, MessageBody::HeartbeatResponse { read_round: 0 });
            }
            MessageBody::PreVote { .. } => {
                self.send(msg.from, MessageBody::PreVoteResponse { granted: false });
            }
            MessageBody::Vote { .. } => {
                self.send(msg.from, MessageBody::VoteResponse { granted: false });
            }
            _ => {}
        }
    }

    /// Whether this node heard from a leader recently enough to refuse elections.
    pub(crate) fn in_leader_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.election_elapsed < self.cfg.election_ticks
            && (self.leader.is_some() || self.boot_guard)
    }

    /// Becomes a follower in `term` (raising the term clears the vote).
    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "term went backwards: {} -> {term}", self.term);
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.step_down();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.reset_election_timer();
        self.drop_forwarded_reads();
    }

    /// On an append or heartbeat from the current term's leader: follow it. Returns false if
    /// this node is itself the leader of this term (two leaders in one term would violate S2;
    /// it can only come from a faulty peer, so the message is dropped).
    fn become_follower_of(&mut self, from: NodeId) -> bool {
        match self.role {
            Role::Leader => false,
            Role::Follower if self.leader == Some(from) => true,
            _ => {
                self.become_follower(self.term, Some(from));
                true
            }
        }
    }

    pub(crate) fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout =
            self.rng.range(self.cfg.election_ticks, 2 * self.cfg.election_ticks);
    }

    /// Voters other than this node, ascending.
    pub(crate) fn other_voters(&self) -> Vec<NodeId> {
        self.membership.voters.ids().into_iter().filter(|id| *id != self.id).collect()
    }
}

/// The configurations along a restarted node's log: the entries after the applied index are
/// read back (the caller re-applies them anyway), since the configuration in force is the
/// latest in the log, committed or not (dissertation §4.1), and each entry names the one
/// before it, to fall back to if it is truncated. With no configuration entry there, the
/// caller's `membership` (in force at the durable commit index) is in force.
fn recover_configs<L: LogView>(
    log: &RaftLog<L>,
    membership: Membership,
) -> Result<ConfigHistory, ConfigError> {
    let mut history = None::<ConfigHistory>;
    let mut next = log.applied.next();
    let last = log.last_index();
    let mut batch = Vec::new();
    while next <= last {
        batch.clear();
        log.entries(next, last, 1 << 20, &mut batch)
            .map_err(|e| ConfigError::InitialState(format!("reading the log: {e}")))?;
        for e in batch.iter().filter(|e| e.kind == EntryKind::Config) {
            let c = ConfigEntry::decode(&e.data).map_err(|err| {
                ConfigError::InitialState(format!("configuration entry {}: {err}", e.id))
            })?;
            let h = history.get_or_insert_with(|| ConfigHistory::new(log.applied, c.prev.clone()));
            h.push(e.index(), c.prev, c.next);
        }
        next = batch.last().map_or(last, |e| e.index()).next();
    }
    Ok(history.unwrap_or_else(|| ConfigHistory::new(log.applied, membership)))
}

#[derive(PartialEq, Eq)]
enum Handled {
    Continue,
    Done,
}
