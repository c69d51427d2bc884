//! Membership churn: the operator's bookkeeping (see [`crate::world::Profile::membership`]) and
//! the checkers of the quorums that configuration changes must keep (dissertation chapter 4).
//!
//! The checkers see only what crosses the simulated network and what the nodes' logs hold, never
//! a node's own idea of its configuration, so a node whose configuration is wrong cannot vouch
//! for itself:
//!
//! - **Commit quorum** ([`QuorumChecker::on_commit`]): every entry a leader commits was
//!   acknowledged (an `AppendResponse` sent to that leader in its term, or the leader's own
//!   durable copy) by a majority of each half of the configuration in force at that entry's
//!   index, as the committed log defines it: the configuration of the latest configuration
//!   entry at or before the index (configurations take effect when appended, §4.1), both
//!   halves when it is joint (§4.3). One relaxation, which Raft allows and etcd's raft does
//!   too: once the joint entry `C_old,new` is committed, entries after it need only `C_new`
//!   (every later leader needs a majority of `C_new` to be elected, so a `C_new` majority is
//!   enough for them to hold the entry; the leader commits by the configuration at its last
//!   entry, which is `C_new` once it appended the entry leaving the joint configuration).
//! - **Learners never count toward a commit**: the same check, told apart when the entry
//!   would have had its quorum had the learners' acknowledgements counted.
//! - **Election quorum** ([`QuorumChecker::on_elected`]): a leader was granted votes (a
//!   `VoteResponse` sent to it in its term, and its own) by a majority of each half of the
//!   configuration in force at its last entry when it won.
//! - **Learners never vote**: the same check, told apart when only learners' grants would have
//!   made the majority.
//!
//! At most one leader per term is [`crate::checkers::Checkers::on_leader`], whatever the
//! configuration.

use std::collections::{BTreeMap, BTreeSet};

use tenure_raft::{LogIndex, Membership, NodeId, Term};
use tenure_replica::{MemberRequest, RequestId};

use crate::checkers::Violation;
use crate::world::Millis;

/// What the operator did in a run (see [`crate::world::Profile::membership`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChurnCounts {
    /// Learners added: the change completed.
    pub learners_added: u64,
    /// Voters added directly (`MemberAdd` without `is_learner`): the change completed.
    pub voters_added: u64,
    /// Learners promoted to voters: the change completed (the joint configuration left).
    pub promoted: u64,
    /// Members removed: the change completed.
    pub removed: u64,
    /// Of those, removals of the leader that served the request.
    pub leaders_removed: u64,
    /// Replacements: a removal followed by a new learner's addition.
    pub replacements: u64,
    /// New nodes started on an empty disk with the cluster's configuration.
    pub joined: u64,
    /// Removed nodes stopped (after a while, for some).
    pub stopped: u64,
    /// Changes refused before they were proposed (etcd's checks, not the leader, busy).
    pub refused: u64,
    /// Changes whose outcome the operator never heard (timed out, leader changed).
    pub unknown: u64,
    /// Leadership transfers the leader accepted (`MoveLeader`; dissertation §3.10).
    pub transfers: u64,
    /// Of those, transfers whose target led a later term before the operator's patience ran
    /// out (the others were abandoned by the leader or overtaken by faults).
    pub transfers_completed: u64,
    /// Nodes that [`tenure_replica::Replica::is_removed`] called removed before their core did
    /// (a safety failure since the replica waits for the core; see `World::check_removed`).
    pub told_removed_early: u64,
}

impl ChurnCounts {
    /// Membership changes that completed.
    pub fn completed(&self) -> u64 {
        self.learners_added + self.voters_added + self.promoted + self.removed
    }
}

/// The operator's bookkeeping: one change at a time.
pub(crate) struct Operator {
    /// The id the next new member gets (ids are never reused: etcd retires removed ones).
    pub(crate) next_id: u64,
    /// Request ids the operator used so far.
    pub(crate) requests: u64,
    /// The change in flight.
    pub(crate) in_flight: Option<OperatorRequest>,
    /// A replacement removed a member: a new member is added next.
    pub(crate) replace_pending: bool,
    /// The leadership transfer in progress, if any.
    pub(crate) transfer: Option<OperatorTransfer>,
    pub(crate) counts: ChurnCounts,
}

/// A membership change the operator sent and waits on.
pub(crate) struct OperatorRequest {
    pub(crate) node: NodeId,
    pub(crate) id: RequestId,
    pub(crate) request: MemberRequest,
    /// The removal half of a replacement.
    pub(crate) replace: bool,
    /// When the operator stops waiting and looks again.
    pub(crate) deadline: Millis,
}

/// A leadership transfer the operator started and watches.
pub(crate) struct OperatorTransfer {
    /// The target.
    pub(crate) to: NodeId,
    /// The term the transferring leader led.
    pub(crate) term: Term,
    /// When the operator stops watching.
    pub(crate) deadline: Millis,
}

impl Operator {
    pub(crate) fn new(next_id: u64) -> Operator {
        Operator {
            next_id,
            requests: 0,
            in_flight: None,
            replace_pending: false,
            transfer: None,
            counts: ChurnCounts::default(),
        }
    }
}

/// The commit and election quorum checkers across configuration changes.
pub struct QuorumChecker {
    /// The configurations put in force by committed configuration entries, by the entry's
    /// index; index 0 holds the initial configuration.
    configs: BTreeMap<LogIndex, Membership>,
    /// The highest index any leader committed so far (every index through it was checked).
    frontier: LogIndex,
    /// Acknowledgements sent: for a leader in its term, each node's highest acknowledged
    /// match index.
    acks: BTreeMap<(Term, NodeId), BTreeMap<NodeId, LogIndex>>,
    /// Votes granted: for a candidate in a term, the nodes that granted it their vote.
    votes: BTreeMap<(Term, NodeId), BTreeSet<NodeId>>,
    /// Entries checked (for tests and summaries).
    checked: u64,
}

/// Which quorum a check is about, for its messages.
#[derive(Clone, Copy)]
enum Quorum {
    Commit,
    Election,
}

impl QuorumChecker {
    /// A checker for a cluster that starts with `initial`.
    pub fn new(initial: Membership) -> QuorumChecker {
        QuorumChecker {
            configs: BTreeMap::from([(LogIndex(0), initial)]),
            frontier: LogIndex(0),
            acks: BTreeMap::new(),
            votes: BTreeMap::new(),
            checked: 0,
        }
    }

    /// The highest index committed so far: the next [`QuorumChecker::on_commit`] wants the
    /// configuration entries after it.
    pub fn frontier(&self) -> LogIndex {
        self.frontier
    }

    /// Committed entries checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The configuration the committed log puts in force at `index` (for an index at or below
    /// the frontier), with the index of the entry that did.
    pub fn committed_config_at(&self, index: LogIndex) -> (LogIndex, &Membership) {
        let (i, m) = self.configs.range(..=index).next_back().expect("index 0 is always there");
        (*i, m)
    }

    /// `from` sent `to` an `AppendResponse` in `term` saying its log matches through `index`.
    pub fn on_ack(&mut self, from: NodeId, to: NodeId, term: Term, index: LogIndex) {
        let acked = self.acks.entry((term, to)).or_default().entry(from).or_insert(index);
        *acked = (*acked).max(index);
    }

    /// `from` sent `to` a granted `VoteResponse` in `term`.
    pub fn on_vote(&mut self, from: NodeId, to: NodeId, term: Term) {
        self.votes.entry((term, to)).or_default().insert(from);
    }

    /// The leader of `term` moved its commit index to `committed`; its own log is durable
    /// through `persisted`. `configs` are the configuration entries of its log after the
    /// frontier through `committed` (index and the configuration each puts in force). Every
    /// index after the frontier is checked.
    pub fn on_commit(
        &mut self,
        leader: NodeId,
        term: Term,
        committed: LogIndex,
        persisted: LogIndex,
        configs: &[(LogIndex, Membership)],
    ) -> Result<(), Violation> {
        if committed <= self.frontier {
            return Ok(());
        }
        let acks = self.acks.get(&(term, leader));
        let acked = |id: NodeId, index: LogIndex| {
            if id == leader {
                persisted >= index
            } else {
                acks.and_then(|a| a.get(&id)).is_some_and(|m| *m >= index)
            }
        };
        // The configuration is constant between configuration entries, so checking the last
        // index of each stretch checks every index of it (an acknowledgement through an index
        // covers every index before it).
        let mut ends: Vec<LogIndex> =
            configs.iter().map(|(i, _)| LogIndex(i.0 - 1)).filter(|i| *i > self.frontier).collect();
        ends.push(committed);
        let before = self.frontier;
        for end in ends {
            let (at, config) = configs
                .iter()
                .rev()
                .find(|(i, _)| *i <= end)
                .map(|(i, m)| (*i, m))
                .unwrap_or_else(|| self.committed_config_at(end));
            // A joint configuration whose entry was committed before needs only its incoming
            // half from here on (see the module documentation).
            let waived = config.voters.is_joint() && at <= before;
            check_quorum(Quorum::Commit, leader, term, end, config, waived, |id| acked(id, end))?;
        }
        for (i, m) in configs {
            self.configs.insert(*i, m.clone());
        }
        self.checked += committed.0 - self.frontier.0;
        self.frontier = committed;
        Ok(())
    }

    /// `leader` won `term`; the last entry of its log before that term's entries is at
    /// `last`, it knew its log committed through `committed`, and `configs` are the
    /// configuration entries of its log after `committed` through `last` (its log through
    /// its commit index is the committed log; after it, its own).
    pub fn on_elected(
        &self,
        leader: NodeId,
        term: Term,
        committed: LogIndex,
        last: LogIndex,
        configs: &[(LogIndex, Membership)],
    ) -> Result<(), Violation> {
        let config = match configs.iter().rev().find(|(i, _)| *i <= last) {
            Some((_, m)) => m,
            None => self.committed_config_at(last.min(committed).min(self.frontier)).1,
        };
        let granted = self.votes.get(&(term, leader));
        let voted = |id: NodeId| id == leader || granted.is_some_and(|g| g.contains(&id));
        check_quorum(Quorum::Election, leader, term, last, config, false, voted)
    }
}

/// Whether the nodes `said_yes` form a majority of each half of `config` (the outgoing half
/// only if not `waived`); if not, a violation that tells whether learners made up the
/// difference.
fn check_quorum(
    what: Quorum,
    leader: NodeId,
    term: Term,
    index: LogIndex,
    config: &Membership,
    waived: bool,
    said_yes: impl Fn(NodeId) -> bool,
) -> Result<(), Violation> {
    let mut halves = vec![config.voters.incoming.voters()];
    if !waived && config.voters.is_joint() {
        halves.push(config.voters.outgoing.voters());
    }
    for half in halves {
        let yes: BTreeSet<NodeId> = half.iter().copied().filter(|id| said_yes(*id)).collect();
        let quorum = half.len() / 2 + 1;
        if yes.len() >= quorum {
            continue;
        }
        let learners: BTreeSet<NodeId> =
            config.learners.iter().copied().filter(|id| said_yes(*id)).collect();
        let learners_made_it = yes.len() + learners.len() >= quorum;
        let ids = |s: &BTreeSet<NodeId>| s.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        let (property, detail) = match (what, learners_made_it) {
            (Quorum::Commit, true) => (
                "learners never count toward a commit",
                format!(
                    "{leader} (leader of term {term}) committed through {index} with voters \
                     {:?} and learners {:?} acknowledging, of voters {:?} (a majority is \
                     {quorum})",
                    ids(&yes),
                    ids(&learners),
                    ids(half),
                ),
            ),
            (Quorum::Commit, false) => (
                "commits need a majority of each configuration in force",
                format!(
                    "{leader} (leader of term {term}) committed through {index} acknowledged \
                     by {:?} of voters {:?} (a majority is {quorum}) in configuration {config:?}",
                    ids(&yes),
                    ids(half),
                ),
            ),
            (Quorum::Election, true) => (
                "learners' votes never count",
                format!(
                    "{leader} won term {term} with votes of voters {:?} and learners {:?}, of \
                     voters {:?} (a majority is {quorum})",
                    ids(&yes),
                    ids(&learners),
                    ids(half),
                ),
            ),
            (Quorum::Election, false) => (
                "leaders need a majority of each configuration in force",
                format!(
                    "{leader} won term {term} with its log through {index} and votes of {:?} \
                     of voters {:?} (a majority is {quorum}) in configuration {config:?}",
                    ids(&yes),
                    ids(half),
                ),
            ),
        };
        return Err(Violation { property, detail });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_raft::ConfChange;

    fn voters(ids: &[u64]) -> Membership {
        Membership::voters(ids.iter().map(|i| NodeId(*i)))
    }

    fn n(i: u64) -> NodeId {
        NodeId(i)
    }

    #[test]
    fn a_commit_acknowledged_by_a_majority_passes_and_one_without_is_caught() {
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(5));
        // The leader's own durable copy and node 2's acknowledgement: 2 of 3.
        assert!(c.on_commit(n(1), Term(2), LogIndex(5), LogIndex(5), &[]).is_ok());
        assert_eq!(c.checked(), 5);
        // Through 7, node 2 acknowledged only 5 and the leader holds 7 alone.
        let v = c.on_commit(n(1), Term(2), LogIndex(7), LogIndex(7), &[]).unwrap_err();
        assert_eq!(v.property, "commits need a majority of each configuration in force");
        // An acknowledgement to another leader, or in another term, does not count either.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_ack(n(2), n(3), Term(2), LogIndex(5));
        c.on_ack(n(3), n(1), Term(1), LogIndex(5));
        assert!(c.on_commit(n(1), Term(2), LogIndex(5), LogIndex(5), &[]).is_err());
        // Nor the leader's own copy before it is durable.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(5));
        assert!(c.on_commit(n(1), Term(2), LogIndex(5), LogIndex(4), &[]).is_err());
    }

    /// The joint entry at 6 adds voter 4 to {1, 2, 3}: from 6 on, a majority of {1, 2, 3, 4}
    /// is needed too.
    fn joint_at_6() -> Vec<(LogIndex, Membership)> {
        let next = voters(&[1, 2, 3]).apply_changes(&[ConfChange::AddVoter(n(4))]).unwrap();
        assert!(next.voters.is_joint());
        vec![(LogIndex(6), next)]
    }

    #[test]
    fn a_joint_entry_committed_by_the_old_voters_alone_is_caught() {
        // What putting a configuration in force only once committed does: the old voters 1
        // and 2 commit the joint entry, which needs 3 of {1, 2, 3, 4}.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(6));
        let v = c.on_commit(n(1), Term(2), LogIndex(6), LogIndex(6), &joint_at_6()).unwrap_err();
        assert_eq!(v.property, "commits need a majority of each configuration in force");
        // With node 4 too, both halves have their majority.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(6));
        c.on_ack(n(4), n(1), Term(2), LogIndex(6));
        assert!(c.on_commit(n(1), Term(2), LogIndex(6), LogIndex(6), &joint_at_6()).is_ok());
        // Entries before the joint entry needed only the old voters: 2 and the leader
        // through 5 is enough for them, but not for 6.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(6));
        c.on_ack(n(4), n(1), Term(2), LogIndex(5));
        assert!(c.on_commit(n(1), Term(2), LogIndex(5), LogIndex(6), &[]).is_ok());
        assert!(c.on_commit(n(1), Term(2), LogIndex(6), LogIndex(6), &joint_at_6()).is_err());
    }

    #[test]
    fn a_joint_configuration_needs_its_outgoing_half_until_its_entry_is_committed() {
        // Removing 3 from {1, 2, 3, 4}: C_new = {1, 2, 4}, C_old = {1, 2, 3, 4}.
        let joint = voters(&[1, 2, 3, 4]).apply_changes(&[ConfChange::Remove(n(3))]).unwrap();
        let configs = vec![(LogIndex(6), joint.clone())];
        // 1 and 2 are a majority of C_new but not of C_old.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3, 4]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(8));
        let v = c.on_commit(n(1), Term(2), LogIndex(8), LogIndex(8), &configs).unwrap_err();
        assert_eq!(v.property, "commits need a majority of each configuration in force");
        // Once the joint entry is committed (by both halves), later entries of the joint
        // stretch need only C_new: the leader appended the entry leaving it.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3, 4]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(6));
        c.on_ack(n(3), n(1), Term(2), LogIndex(6));
        c.on_commit(n(1), Term(2), LogIndex(6), LogIndex(6), &configs).unwrap();
        c.on_ack(n(2), n(1), Term(2), LogIndex(9));
        let leave = vec![(LogIndex(9), joint.leave_joint())];
        assert!(c.on_commit(n(1), Term(2), LogIndex(9), LogIndex(9), &leave).is_ok());
        assert_eq!(c.committed_config_at(LogIndex(9)).1, &voters(&[1, 2, 4]));
        // C_new's majority is still needed: 1 alone is not.
        assert!(c.on_commit(n(1), Term(2), LogIndex(10), LogIndex(10), &[]).is_err());
    }

    #[test]
    fn a_learner_counted_toward_a_commit_is_caught() {
        // Voters {1, 2}, learner 3: the leader and the learner are not a majority of voters.
        let config = voters(&[1, 2]).apply_changes(&[ConfChange::AddLearner(n(3))]).unwrap();
        let mut c = QuorumChecker::new(voters(&[1, 2]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(3));
        c.on_commit(n(1), Term(2), LogIndex(3), LogIndex(3), &[(LogIndex(3), config)]).unwrap();
        c.on_ack(n(3), n(1), Term(2), LogIndex(7));
        let v = c.on_commit(n(1), Term(2), LogIndex(7), LogIndex(7), &[]).unwrap_err();
        assert_eq!(v.property, "learners never count toward a commit");
        c.on_ack(n(2), n(1), Term(2), LogIndex(7));
        assert!(c.on_commit(n(1), Term(2), LogIndex(7), LogIndex(7), &[]).is_ok());
    }

    #[test]
    fn a_leader_elected_without_a_majority_of_each_configuration_is_caught() {
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_vote(n(2), n(1), Term(3));
        assert!(c.on_elected(n(1), Term(3), LogIndex(0), LogIndex(0), &[]).is_ok());
        // A vote in another term or for another candidate does not count.
        c.on_vote(n(1), n(3), Term(3));
        c.on_vote(n(2), n(3), Term(5));
        let v = c.on_elected(n(3), Term(4), LogIndex(0), LogIndex(0), &[]).unwrap_err();
        assert_eq!(v.property, "leaders need a majority of each configuration in force");
        // A candidate whose log holds the joint entry adding 4 needs 3 of {1, 2, 3, 4}.
        c.on_vote(n(2), n(1), Term(5));
        let v = c.on_elected(n(1), Term(5), LogIndex(0), LogIndex(6), &joint_at_6()).unwrap_err();
        assert_eq!(v.property, "leaders need a majority of each configuration in force");
        c.on_vote(n(4), n(1), Term(5));
        assert!(c.on_elected(n(1), Term(5), LogIndex(0), LogIndex(6), &joint_at_6()).is_ok());
        // Its log through 5 only: the old configuration is in force.
        let mut c = QuorumChecker::new(voters(&[1, 2, 3]));
        c.on_vote(n(2), n(1), Term(5));
        assert!(c.on_elected(n(1), Term(5), LogIndex(0), LogIndex(5), &[]).is_ok());
    }

    #[test]
    fn a_learners_vote_that_counted_is_caught() {
        // Voters {1, 2}, learner 3: node 1 wins with its own vote and the learner's.
        let config = voters(&[1, 2]).apply_changes(&[ConfChange::AddLearner(n(3))]).unwrap();
        let mut c = QuorumChecker::new(voters(&[1, 2]));
        c.on_ack(n(2), n(1), Term(2), LogIndex(3));
        c.on_commit(n(1), Term(2), LogIndex(3), LogIndex(3), &[(LogIndex(3), config)]).unwrap();
        c.on_vote(n(3), n(1), Term(4));
        let v = c.on_elected(n(1), Term(4), LogIndex(3), LogIndex(3), &[]).unwrap_err();
        assert_eq!(v.property, "learners' votes never count");
        c.on_vote(n(2), n(1), Term(4));
        assert!(c.on_elected(n(1), Term(4), LogIndex(3), LogIndex(3), &[]).is_ok());
    }
}
