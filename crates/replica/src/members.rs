//! Membership changes as etcd's Cluster API asks for them: add (a voter or a learner),
//! remove, promote.
//!
//! A change is one Raft configuration entry (dissertation chapter 4; the core enters and
//! leaves the joint configuration by itself) whose context is the member table's part of it,
//! a [`MemberChange`] (the new member's peer URLs, or the id to retire), applied to the kv
//! store when the entry is applied, so that every member's table and every snapshot agree
//! with the configuration. Before proposing, the leader runs etcd's checks: the table's (new
//! id, unused peer URLs, never-removed id), at most [`MembershipConfig::learners_max`]
//! learners, promotion only of a caught-up learner, and the strict reconfiguration check (no
//! change that leaves fewer active voters than a quorum).
//!
//! The request completes once the change is in force and the configuration is simple again:
//! when the entry is applied, or, for a change of voters, when the entry that leaves the
//! joint configuration is applied. Its answer is the configuration then in force.

use tenure_kv::{MemberChange, MemberError};
use tenure_raft::{ConfChange, ConfChangeError, ConfigEntry, Entry, Membership, NodeId};

use crate::{
    Answer, ClientError, Completion, Output, PendingWrite, Replica, ReplicaError, RequestId,
};

/// Limits on membership changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// The most learners the cluster may have (etcd's default: 1).
    pub learners_max: usize,
    /// etcd's `--strict-reconfig-check`: refuse changes that would leave fewer active
    /// voters than a quorum.
    pub strict_reconfig_check: bool,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig { learners_max: 1, strict_reconfig_check: true }
    }
}

/// A change of members, as the etcd Cluster API asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberRequest {
    /// `MemberAdd`: a new member reached at `peer_urls`, a learner or a voter.
    Add {
        /// The new member's id.
        member_id: u64,
        /// Where its peers reach it.
        peer_urls: Vec<String>,
        /// Whether it joins as a learner.
        learner: bool,
    },
    /// `MemberRemove`.
    Remove {
        /// The member to remove.
        member_id: u64,
    },
    /// `MemberPromote`: a learner becomes a voter.
    Promote {
        /// The learner.
        member_id: u64,
    },
}

impl MemberRequest {
    /// The member the request is about.
    pub fn member_id(&self) -> u64 {
        match self {
            MemberRequest::Add { member_id, .. }
            | MemberRequest::Remove { member_id }
            | MemberRequest::Promote { member_id } => *member_id,
        }
    }
}

/// Why a membership change was refused before it was proposed. The messages are etcd's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberRefusal {
    /// The member table refuses it (unknown, existing or removed id, taken peer URLs).
    #[error("{0}")]
    Table(MemberError),
    /// The member to remove or promote is not in the configuration.
    #[error("member not found")]
    NotFound,
    /// The member to add is already in the configuration.
    #[error("member ID already exist")]
    Exists,
    /// Only a learner can be promoted.
    #[error("can only promote a learner member")]
    NotLearner,
    /// The learner trails the leader too far to be promoted.
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// Another learner would exceed [`MembershipConfig::learners_max`].
    #[error("too many learner members in cluster")]
    TooManyLearners,
    /// Adding or promoting would leave fewer active voters than a quorum.
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// Removing would leave fewer active voters than a quorum.
    #[error("unhealthy cluster")]
    Unhealthy,
    /// The last voter cannot be removed.
    #[error("re-configuration failed due to not enough started members")]
    LastVoter,
    /// Another change is still in progress, or the new leader is not ready; retry.
    #[error("{0}")]
    Busy(String),
}

impl Replica {
    /// Proposes a membership change (leader only; a follower answers
    /// [`ClientError::NotLeader`]). Completes with [`Answer::Membership`] once the change is
    /// in force and the configuration is simple again (see the module documentation).
    pub fn change_members(&mut self, id: RequestId, request: MemberRequest, out: &mut Output) {
        let deadline_tick = self.ticks + self.cfg.request_timeout_ticks;
        match self.propose_member_change(&request) {
            Ok(at) => {
                let data = bytes::Bytes::new();
                self.pending.add_write(id, PendingWrite { data, at: Some(at), deadline_tick });
                self.conf_requests.insert(id);
            }
            Err(result) => {
                out.completions.push(Completion { id, result: Err(result), entry: None })
            }
        }
    }

    fn propose_member_change(
        &mut self,
        request: &MemberRequest,
    ) -> Result<tenure_raft::EntryId, ClientError> {
        if !self.is_leader() {
            let leader_hint = self.node.soft_state().leader;
            return Err(match leader_hint {
                None => ClientError::NoLeader,
                Some(_) => ClientError::NotLeader { leader_hint },
            });
        }
        let refuse = |r: MemberRefusal| ClientError::Member(r);
        let node = NodeId(request.member_id());
        let membership = self.node.membership();
        let (change, table) = match request {
            MemberRequest::Add { member_id, peer_urls, learner } => {
                if membership.contains(node) {
                    return Err(refuse(MemberRefusal::Exists));
                }
                if *learner && membership.learners.len() >= self.cfg.members.learners_max {
                    return Err(refuse(MemberRefusal::TooManyLearners));
                }
                let change = if *learner {
                    ConfChange::AddLearner(node)
                } else {
                    ConfChange::AddVoter(node)
                };
                let table =
                    MemberChange::Add { member_id: *member_id, peer_urls: peer_urls.clone() };
                (change, table)
            }
            MemberRequest::Remove { member_id } => {
                if !membership.contains(node) {
                    return Err(refuse(MemberRefusal::NotFound));
                }
                (ConfChange::Remove(node), MemberChange::Remove { member_id: *member_id })
            }
            MemberRequest::Promote { member_id } => {
                if !membership.contains(node) {
                    return Err(refuse(MemberRefusal::NotFound));
                }
                if !membership.learners.contains(&node) {
                    return Err(refuse(MemberRefusal::NotLearner));
                }
                (ConfChange::Promote(node), MemberChange::Promote { member_id: *member_id })
            }
        };
        self.kv.check_member_change(&table).map_err(|e| refuse(MemberRefusal::Table(e)))?;
        if let ConfChange::Promote(learner) = change {
            self.node.can_promote(learner).map_err(|e| conf_error(e, &change))?;
        }
        let changes = [change];
        if self.cfg.members.strict_reconfig_check {
            self.node.check_active_quorum(&changes).map_err(|e| conf_error(e, &changes[0]))?;
        }
        let context = bytes::Bytes::from(table.encode());
        self.node.propose_conf_change(&changes, context).map_err(|e| conf_error(e, &changes[0]))
    }

    /// Applies a configuration entry: its member-table part to the store, and answers the
    /// requests that wait for it.
    pub(crate) fn apply_config(
        &mut self,
        entry: &Entry,
        out: &mut Output,
    ) -> Result<(), ReplicaError> {
        let index = entry.index();
        // The core decoded and checked the entry when it was appended; bytes it refused never
        // reach the log.
        let Ok(config) = ConfigEntry::decode(&entry.data) else {
            return Ok(());
        };
        if !config.context.is_empty() {
            let log_time = self.kv.log_time_ms();
            if let Err(error) = self.kv.apply_member_change(index.0, log_time, &config.context)
                && !error.is_deterministic()
            {
                return Err(ReplicaError::StateMachine { index, error });
            }
        }
        self.members_changed = true;
        for id in self.pending.writes_appended_at(index) {
            let here = self
                .pending
                .writes
                .get(&id)
                .and_then(|w| w.at)
                .is_some_and(|at| at.term == entry.term());
            if here && self.conf_requests.contains(&id) {
                self.awaiting_simple.push(id);
                if let Some(w) = self.pending.writes.get_mut(&id) {
                    w.at = None;
                }
                self.pending.writes_at.remove(&(index, id));
            }
        }
        if !config.next.voters.is_joint() {
            for id in std::mem::take(&mut self.awaiting_simple) {
                self.conf_requests.remove(&id);
                if self.pending.take_write(id).is_some() {
                    let result = Ok(Answer::Membership(config.next.clone()));
                    out.completions.push(Completion { id, result, entry: Some(entry.id) });
                }
            }
        }
        Ok(())
    }

    /// Whether a configuration entry was applied since the last call (the caller then
    /// refreshes whatever it derives from the members, such as its peer connections).
    pub fn take_members_changed(&mut self) -> bool {
        std::mem::take(&mut self.members_changed)
    }

    /// Starts handing leadership to `to` (leader only; dissertation §3.10, etcd's
    /// `MoveLeader`): the core catches `to` up, then tells it to campaign at once.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), tenure_raft::TransferError> {
        self.node.transfer_leadership(to)
    }

    /// The configuration in force (appended, perhaps not yet committed).
    pub fn membership(&self) -> &Membership {
        self.node.membership()
    }

    /// Whether this member was removed from the cluster and knows it, so that its server can
    /// stop it: the core saw a committed configuration without it
    /// ([`tenure_raft::Node::is_removed`]). Not earlier: until the entry that leaves the joint
    /// configuration commits, an election may still need its vote (a two-voter cluster whose
    /// leader removes itself has no other way to elect). A removed follower learns it from
    /// the leader's last heartbeat, which tells it the leaving entry committed.
    pub fn is_removed(&self) -> bool {
        self.node.is_removed()
    }
}

/// etcd's answer for a change the core refused.
fn conf_error(e: ConfChangeError, change: &ConfChange) -> ClientError {
    match e {
        ConfChangeError::NotLeader { leader_hint: None } => ClientError::NoLeader,
        ConfChangeError::NotLeader { leader_hint } => ClientError::NotLeader { leader_hint },
        ConfChangeError::LearnerNotCaughtUp { .. } => {
            ClientError::Member(MemberRefusal::LearnerNotReady)
        }
        ConfChangeError::NotEnoughActiveVoters { .. } => ClientError::Member(match change {
            ConfChange::Remove(_) => MemberRefusal::Unhealthy,
            _ => MemberRefusal::NotEnoughStarted,
        }),
        ConfChangeError::Invalid(tenure_raft::membership::InvalidChange::NoVoterLeft) => {
            ClientError::Member(MemberRefusal::LastVoter)
        }
        ConfChangeError::Invalid(tenure_raft::membership::InvalidChange::NotALearner(_)) => {
            ClientError::Member(MemberRefusal::NotLearner)
        }
        ConfChangeError::Invalid(tenure_raft::membership::InvalidChange::AlreadyMember(_)) => {
            ClientError::Member(MemberRefusal::Exists)
        }
        ConfChangeError::Invalid(tenure_raft::membership::InvalidChange::NotAMember(_)) => {
            ClientError::Member(MemberRefusal::NotFound)
        }
        e => ClientError::Member(MemberRefusal::Busy(e.to_string())),
    }
}
