//! Elections (Raft §5.2, §5.4.1): the follower's election timer, Pre-Vote (dissertation
//! §9.6), candidates, and how any node answers a vote request.

use crate::log_view::LogView;
use crate::message::MessageBody;
use crate::node::Node;
use crate::quorum::VoteResult;
use crate::types::{EntryId, NodeId, Role, Term};

impl<L: LogView> Node<L> {
    /// A follower or candidate tick: campaign when the randomised timeout expires (S4).
    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_ticks {
            self.boot_guard = false;
        }
        if self.election_elapsed >= self.election_timeout && self.may_campaign() {
            self.start_election(false);
        }
    }

    /// Starts an election: a pre-vote round first if enabled, unless the election was asked
    /// for by a leadership transfer.
    ///
    /// A node in the last usable term ([`Term::MAX`]) cannot start an election: there is no
    /// term to run in. It can only follow (a peer that pushed the cluster's term that far
    /// stopped elections; better that than a term that wraps around).
    pub(crate) fn start_election(&mut self, transfer: bool) {
        if self.term.checked_next().is_none() {
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_pre_candidate(&mut self) {
        assert_ne!(self.role, Role::Leader);
        // The term does not change: a node that cannot win leaves no trace (S9).
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        self.votes.insert(self.id, true);
        if self.tally() == VoteResult::Won {
            self.become_candidate(false);
            return;
        }
        let last = self.log.last_id();
        let term = self.term.next();
        for to in self.other_voters() {
            self.send_with_term(to, term, MessageBody::PreVote { last });
        }
    }

    fn become_candidate(&mut self, transfer: bool) {
        assert_ne!(self.role, Role::Leader);
        // S4: a new election is a new term, and the candidate votes for itself.
        self.term = self.term.next();
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.reset_election_timer();
        // S2: the self-vote counts only once the new term and vote are durable (see
        // `count_durable_self_vote`), and the requests leave only then too: a crash before
        // that must leave no trace of this candidacy.
        self.candidacy_ready = None;
        let last = self.log.last_id();
        for to in self.other_voters() {
            self.send_after_persist(to, MessageBody::Vote { last, transfer });
        }
    }

    /// Called when readies are acknowledged durable: once the ready that carried this
    /// candidacy's term and vote is durable, the candidate counts its own vote.
    pub(crate) fn count_durable_self_vote(&mut self, persisted: u64) {
        let durable = self.candidacy_ready.is_some_and(|n| n <= persisted);
        if self.role == Role::Candidate && durable && !self.votes.contains_key(&self.id) {
            self.votes.insert(self.id, true);
            match self.tally() {
                VoteResult::Won => self.become_leader(),
                VoteResult::Lost => self.become_follower(self.term, None),
                VoteResult::Pending => {}
            }
        }
    }

    fn tally(&self) -> VoteResult {
        self.membership.voters.vote_result(|id| self.votes.get(&id).copied())
    }

    /// Answers a (pre-)vote request that is not from an older term.
    pub(crate) fn on_vote_request(&mut self, from: NodeId, term: Term, last: EntryId, pre: bool) {
        // S2: one vote per term: we may vote for `from` if we already did, or if we have not
        // voted and know of no leader. A pre-vote for a future term promises nothing.
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && term > self.term);
        // S3 (Raft §5.4.1): only for a log at least as up to date as ours.
        #[cfg(feature = "planted-bugs")]
        let up_to_date = last >= self.log.last_id() || self.cfg.planted_bugs.vote_ignores_log;
        #[cfg(not(feature = "planted-bugs"))]
        let up_to_date = last >= self.log.last_id();
        let granted = can_vote && up_to_date;
        if pre {
            // A granted pre-vote answers in the candidate's future term so it is counted; a
            // refusal carries our term so a stale candidate catches up.
            let reply_term = if granted { term } else { self.term };
            self.send_with_term(from, reply_term, MessageBody::PreVoteResponse { granted });
        } else {
            if granted {
                self.vote = Some(from);
                // Granting a vote defers our own candidacy (Raft §5.2).
                self.reset_election_timer();
            }
            // The vote is durable before the answer leaves (S2).
            #[cfg(feature = "planted-bugs")]
            if self.cfg.planted_bugs.vote_before_persist {
                self.send(from, MessageBody::VoteResponse { granted });
                return;
            }
            self.send_after_persist(from, MessageBody::VoteResponse { granted });
        }
    }

    pub(crate) fn on_vote_response(&mut self, from: NodeId, granted: bool, pre: bool) {
        let expected = if pre { Role::PreCandidate } else { Role::Candidate };
        if self.role != expected || !self.membership.is_voter(from) {
            return;
        }
        self.votes.insert(from, granted);
        match self.tally() {
            VoteResult::Won if pre => self.become_candidate(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => {
                // A lost election ends the term's attempt; the timer will try again (S2).
                self.become_follower(self.term, None);
            }
            VoteResult::Pending => {}
        }
    }

    /// Leadership transfer: the old leader says "campaign now" (dissertation §3.10).
    pub(crate) fn on_timeout_now(&mut self) {
        if self.role != Role::Leader && self.may_campaign() {
            self.start_election(true);
        }
    }
}
