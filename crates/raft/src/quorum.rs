//! Quorum arithmetic as pure functions: which index a set of voters has committed, and whether
//! an election is won, lost or still open.
//!
//! A [`JointConfig`] is two [`MajorityConfig`]s that must both agree (joint consensus, Raft
//! §6 / dissertation §4.3). By convention an empty majority config commits everything and wins
//! every vote, so a joint config whose outgoing half is empty behaves exactly like its incoming
//! half alone, with no special case.
//!
//! This module knows nothing about messages or roles; it sees ids and numbers only.

use std::collections::BTreeSet;

use crate::types::NodeId;

/// The outcome of counting votes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VoteResult {
    /// Not decided yet: enough voters have not answered.
    Pending,
    /// A majority rejected: the election cannot be won.
    Lost,
    /// A majority granted.
    Won,
}

/// A set of voters of which a strict majority decides.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct MajorityConfig {
    voters: BTreeSet<NodeId>,
}

impl MajorityConfig {
    /// A config of the given voters.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> MajorityConfig {
        MajorityConfig { voters: voters.into_iter().collect() }
    }

    /// The voters, in ascending order.
    pub fn voters(&self) -> &BTreeSet<NodeId> {
        &self.voters
    }

    /// Whether `id` is a voter.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Number of voters.
    pub fn len(&self) -> usize {
        self.voters.len()
    }

    /// Whether there are no voters.
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty()
    }

    /// Votes needed to win: a strict majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The largest value that a majority of voters has reached, given each voter's value
    /// (`None` counts as 0). With indexes this is the commit index (Raft §5.3); with other
    /// monotonic counters (read rounds, lease ticks) it is the value a quorum has confirmed.
    /// An empty config returns `u64::MAX`.
    pub fn committed(&self, acked: impl Fn(NodeId) -> Option<u64>) -> u64 {
        let n = self.voters.len();
        if n == 0 {
            return u64::MAX;
        }
        // Clusters have at most a handful of voters; a stack buffer avoids allocating on the
        // hot path (this runs on every append response).
        let mut stack = [0u64; 9];
        let mut heap = Vec::new();
        let values: &mut [u64] = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap
        };
        for (slot, id) in values.iter_mut().zip(&self.voters) {
            *slot = acked(*id).unwrap_or(0);
        }
        values.sort_unstable();
        // Sorted ascending, the value at position n - quorum is held by at least a quorum.
        values[n - self.quorum()]
    }

    /// Counts votes: `Some(true)` granted, `Some(false)` rejected, `None` not yet answered.
    /// An empty config wins.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        if self.voters.is_empty() {
            return VoteResult::Won;
        }
        let (mut granted, mut missing) = (0usize, 0usize);
        for id in &self.voters {
            match votes(*id) {
                Some(true) => granted += 1,
                Some(false) => {}
                None => missing += 1,
            }
        }
        let q = self.quorum();
        if granted >= q {
            VoteResult::Won
        } else if granted + missing >= q {
            VoteResult::Pending
        } else {
            VoteResult::Lost
        }
    }
}

/// Two majority configs that must both agree; `outgoing` is empty outside a configuration
/// change.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct JointConfig {
    /// The configuration being moved to (or the only one).
    pub incoming: MajorityConfig,
    /// The configuration being left; empty when no change is in progress.
    pub outgoing: MajorityConfig,
}

impl JointConfig {
    /// A simple (non-joint) config.
    pub fn simple(voters: impl IntoIterator<Item = NodeId>) -> JointConfig {
        JointConfig { incoming: MajorityConfig::new(voters), outgoing: MajorityConfig::default() }
    }

    /// Whether this is a joint config (a change is in progress).
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Every voter of either half, ascending, without repeats.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming.voters().union(self.outgoing.voters()).copied().collect()
    }

    /// Whether `id` votes in either half.
    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(id) || self.outgoing.contains(id)
    }

    /// The value both halves have reached (the smaller of the two).
    pub fn committed(&self, acked: impl Fn(NodeId) -> Option<u64>) -> u64 {
        let a = self.incoming.committed(&acked);
        let b = self.outgoing.committed(&acked);
        a.min(b)
    }

    /// Both halves must win; either losing loses.
    pub fn vote_result(&self, votes: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let r1 = self.incoming.vote_result(&votes);
        let r2 = self.outgoing.vote_result(&votes);
        match (r1, r2) {
            (a, b) if a == b => a,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn majority_commit_is_the_median_for_three_raft_5_3() {
        let c = MajorityConfig::new(ids(&[1, 2, 3]));
        let acked: BTreeMap<u64, u64> = [(1, 10), (2, 7), (3, 3)].into();
        assert_eq!(c.committed(|id| acked.get(&id.0).copied()), 7);
    }

    #[test]
    fn missing_voters_count_as_zero() {
        let c = MajorityConfig::new(ids(&[1, 2, 3]));
        assert_eq!(c.committed(|id| (id.0 == 1).then_some(5)), 0);
    }

    #[test]
    fn empty_config_commits_everything_and_wins() {
        let c = MajorityConfig::default();
        assert_eq!(c.committed(|_| None), u64::MAX);
        assert_eq!(c.vote_result(|_| None), VoteResult::Won);
    }

    #[test]
    fn joint_commit_is_the_minimum_of_both_halves_dissertation_4_3() {
        let c = JointConfig {
            incoming: MajorityConfig::new(ids(&[1, 2, 3])),
            outgoing: MajorityConfig::new(ids(&[3, 4, 5])),
        };
        let acked: BTreeMap<u64, u64> = [(1, 9), (2, 9), (3, 4), (4, 2), (5, 2)].into();
        assert_eq!(c.committed(|id| acked.get(&id.0).copied()), 2);
    }

    #[test]
    fn joint_vote_needs_both_halves() {
        let c = JointConfig {
            incoming: MajorityConfig::new(ids(&[1, 2, 3])),
            outgoing: MajorityConfig::new(ids(&[4, 5, 6])),
        };
        let yes = |set: &'static [u64]| move |id: NodeId| set.contains(&id.0).then_some(true);
        assert_eq!(c.vote_result(yes(&[1, 2])), VoteResult::Pending);
        assert_eq!(c.vote_result(yes(&[1, 2, 4, 5])), VoteResult::Won);
        // 1-3 grant, 4-6 reject: the incoming half wins but the outgoing half loses.
        assert_eq!(c.vote_result(|id| Some(id.0 <= 3)), VoteResult::Lost);
    }

    /// The obvious way: try every candidate value, keep the largest that a majority reached.
    fn naive_committed(voters: &[NodeId], acked: &BTreeMap<NodeId, u64>) -> u64 {
        if voters.is_empty() {
            return u64::MAX;
        }
        let mut best = 0;
        for &candidate in acked.values().chain(std::iter::once(&0)) {
            let n = voters.iter().filter(|v| acked.get(v).copied().unwrap_or(0) >= candidate);
            if n.count() > voters.len() / 2 {
                best = best.max(candidate);
            }
        }
        best
    }

    fn naive_vote(voters: &[NodeId], votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        if voters.is_empty() {
            return VoteResult::Won;
        }
        let yes = voters.iter().filter(|v| votes.get(v) == Some(&true)).count();
        let no = voters.iter().filter(|v| votes.get(v) == Some(&false)).count();
        if yes * 2 > voters.len() {
            VoteResult::Won
        } else if (voters.len() - no) * 2 <= voters.len() {
            // Even if every unanswered voter granted, no strict majority could be reached.
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    fn config_strategy() -> impl Strategy<Value = (Vec<NodeId>, BTreeMap<NodeId, u64>)> {
        (proptest::collection::btree_set(1u64..12, 0..9)).prop_flat_map(|set| {
            let voters: Vec<NodeId> = set.iter().map(|&i| NodeId(i)).collect();
            let acked = proptest::collection::btree_map(
                proptest::sample::select(if voters.is_empty() {
                    vec![NodeId(99)]
                } else {
                    voters.clone()
                }),
                0u64..20,
                0..9,
            );
            (Just(voters), acked)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn majority_committed_matches_naive_oracle((voters, acked) in config_strategy()) {
            let c = MajorityConfig::new(voters.clone());
            prop_assert_eq!(c.committed(|id| acked.get(&id).copied()), naive_committed(&voters, &acked));
        }

        #[test]
        fn majority_vote_matches_naive_oracle(
            set in proptest::collection::btree_set(1u64..10, 0..8),
            answers in proptest::collection::vec(proptest::option::of(any::<bool>()), 8),
        ) {
            let voters: Vec<NodeId> = set.iter().map(|&i| NodeId(i)).collect();
            let votes: BTreeMap<NodeId, bool> = voters
                .iter()
                .zip(&answers)
                .filter_map(|(v, a)| a.map(|a| (*v, a)))
                .collect();
            let c = MajorityConfig::new(voters.clone());
            prop_assert_eq!(c.vote_result(|id| votes.get(&id).copied()), naive_vote(&voters, &votes));
        }

        #[test]
        fn joint_committed_is_min_of_naive_halves(
            (a, acked) in config_strategy(),
            b in proptest::collection::btree_set(1u64..12, 0..6),
        ) {
            let b: Vec<NodeId> = b.into_iter().map(NodeId).collect();
            let c = JointConfig { incoming: MajorityConfig::new(a.clone()), outgoing: MajorityConfig::new(b.clone()) };
            let want = naive_committed(&a, &acked).min(naive_committed(&b, &acked));
            prop_assert_eq!(c.committed(|id| acked.get(&id).copied()), want);
        }
    }
}
