//! The cluster configuration: who votes and who only learns.
//!
//! Held as a [`JointConfig`] of voters plus a set of learners, so that the membership issue can
//! add joint consensus (dissertation §4.3) without changing how the core counts quorums.

use std::collections::BTreeSet;

use crate::quorum::JointConfig;
use crate::types::NodeId;

/// Voters (possibly a joint config during a change) and learners.
///
/// Invariant: no id is both a voter and a learner.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Membership {
    /// Who votes and counts toward commit.
    pub voters: JointConfig,
    /// Who receives the log but neither votes nor counts toward commit.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A configuration of voters only.
    pub fn voters(ids: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership { voters: JointConfig::simple(ids), learners: BTreeSet::new() }
    }

    /// Every member, voter or learner, ascending.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.ids();
        all.extend(self.learners.iter().copied());
        all
    }

    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(id)
    }

    /// Whether `id` is a member at all.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Checks the invariant; returns a description of the violation if any.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = self.learners.iter().find(|id| self.voters.contains(**id)) {
            return Err(format!("{id} is both a voter and a learner"));
        }
        if self.voters.incoming.is_empty() {
            return Err("a configuration needs at least one voter".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_include_learners_and_both_joint_halves() {
        let mut m = Membership::voters([NodeId(1), NodeId(2)]);
        m.voters.outgoing = crate::quorum::MajorityConfig::new([NodeId(3)]);
        m.learners.insert(NodeId(4));
        let all: Vec<u64> = m.members().into_iter().map(|n| n.0).collect();
        assert_eq!(all, vec![1, 2, 3, 4]);
        assert!(m.validate().is_ok());
        m.learners.insert(NodeId(1));
        assert!(m.validate().is_err());
    }
}
