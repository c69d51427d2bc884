//! The cluster configuration: who votes and who only learns.
//!
//! Held as a [`JointConfig`] of voters plus a set of learners (dissertation §4.3: during a
//! change the voters are the joint `C_old,new`). This module also holds what a change is made
//! of, all pure functions and data: the changes ([`ConfChange`]) and the configuration they
//! lead to, the configuration entry's encoding ([`ConfigEntry`]), the configurations along a
//! log (`ConfigHistory`), and the safety checks callers run before proposing a change
//! ([`learner_caught_up`], [`enough_active_voters`]).

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::quorum::{JointConfig, MajorityConfig};
use crate::types::{LogIndex, NodeId};

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

// ----- Configuration changes (dissertation chapter 4) -----------------------------------------

/// One change asked for in a configuration change (as etcd's `ConfChangeSingle`). Several
/// changes proposed together take effect together, through a joint configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConfChange {
    /// Add a node that is not a member as a voter.
    AddVoter(NodeId),
    /// Add a node that is not a member as a learner: it receives the log but never votes.
    AddLearner(NodeId),
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

impl ConfChange {
    /// The node the change is about.
    pub fn node(self) -> NodeId {
        match self {
            ConfChange::AddVoter(id)
            | ConfChange::AddLearner(id)
            | ConfChange::Promote(id)
            | ConfChange::Remove(id) => id,
        }
    }
}

/// Why a list of changes cannot be applied to a configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum InvalidChange {
    /// No change was asked for.
    #[error("no change asked for")]
    Empty,
    /// One node is named by two changes.
    #[error("{0} is named by more than one change")]
    Duplicate(NodeId),
    /// The node to add is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(NodeId),
    /// The node to remove is not a member.
    #[error("{0} is not a member")]
    NotAMember(NodeId),
    /// Only a learner can be promoted.
    #[error("{0} is not a learner")]
    NotALearner(NodeId),
    /// The changes would leave no voter.
    #[error("the configuration would have no voter left")]
    NoVoterLeft,
    /// A change is asked for while the configuration is joint: leave it first.
    #[error("the configuration is joint: leave it before changing it again")]
    Joint,
}

impl Membership {
    /// The configuration `changes` lead to from this one (which must not be joint).
    ///
    /// If the voters change, the result is the joint configuration `C_old,new` (incoming: the
    /// new voters, outgoing: the current ones), dissertation §4.3, even for a single voter:
    /// joint consensus is safe whatever the leader changes in between, which the one-server
    /// rule of §4.1 is only with extra care. If only learners change, the voters' quorums do
    /// not, so the result is a simple configuration. Demoting a voter to a learner is not
    /// supported (remove it, then add it as a learner).
    pub fn apply_changes(&self, changes: &[ConfChange]) -> Result<Membership, InvalidChange> {
        if self.voters.is_joint() {
            return Err(InvalidChange::Joint);
        }
        if changes.is_empty() {
            return Err(InvalidChange::Empty);
        }
        let mut seen = BTreeSet::new();
        let mut voters = self.voters.incoming.voters().clone();
        let mut learners = self.learners.clone();
        for change in changes {
            let id = change.node();
            if !seen.insert(id) {
                return Err(InvalidChange::Duplicate(id));
            }
            match *change {
                ConfChange::AddVoter(_) | ConfChange::AddLearner(_) if self.contains(id) => {
                    return Err(InvalidChange::AlreadyMember(id));
                }
                ConfChange::AddVoter(_) => {
                    voters.insert(id);
                }
                ConfChange::AddLearner(_) => {
                    learners.insert(id);
                }
                ConfChange::Promote(_) => {
                    if !learners.remove(&id) {
                        return Err(InvalidChange::NotALearner(id));
                    }
                    voters.insert(id);
                }
                ConfChange::Remove(_) => {
                    if !voters.remove(&id) && !learners.remove(&id) {
                        return Err(InvalidChange::NotAMember(id));
                    }
                }
            }
        }
        if voters.is_empty() {
            return Err(InvalidChange::NoVoterLeft);
        }
        let outgoing = if &voters == self.voters.incoming.voters() {
            MajorityConfig::default()
        } else {
            self.voters.incoming.clone()
        };
        let next = Membership {
            voters: JointConfig { incoming: MajorityConfig::new(voters), outgoing },
            learners,
        };
        debug_assert!(next.validate().is_ok());
        Ok(next)
    }

    /// The configuration that leaves this joint one: the incoming voters alone (§4.3).
    pub fn leave_joint(&self) -> Membership {
        Membership {
            voters: JointConfig::simple(self.voters.incoming.voters().iter().copied()),
            learners: self.learners.clone(),
        }
    }
}

/// How far (in entries) a learner's match index may trail the leader's last index for the
/// learner to count as caught up and be promoted ([`learner_caught_up`]). A learner that keeps
/// up with the leader's pipeline stays within a few batches; one still receiving the log or a
/// snapshot is far behind.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 1000;

/// Whether a learner whose log matches the leader's through `learner_match` is close enough
/// to the leader's `leader_last` index to be promoted (etcd's "can only promote a learner
/// member which is in sync with leader"): promoting a learner that is far behind would make a
/// voter that cannot help commit for a long time, and with it perhaps a quorum that cannot.
pub fn learner_caught_up(learner_match: LogIndex, leader_last: LogIndex) -> bool {
    learner_match.0.saturating_add(PROMOTE_LAG_ENTRIES_MAX) >= leader_last.0
}

/// etcd's strict reconfiguration check: a change is safe to make only if, in the
/// configuration it leads to, a quorum of voters is active now (`active` says which are).
/// Otherwise committing anything afterwards would wait on nodes that are down or not started.
/// Every half of a joint `next` is checked. Returns `(active, needed)` of the first half that
/// falls short.
pub fn enough_active_voters(
    next: &JointConfig,
    active: impl Fn(NodeId) -> bool,
) -> Result<(), (usize, usize)> {
    for half in [&next.incoming, &next.outgoing] {
        if half.is_empty() {
            continue;
        }
        let count = half.voters().iter().filter(|id| active(**id)).count();
        if count < half.quorum() {
            return Err((count, half.quorum()));
        }
    }
    Ok(())
}

// ----- The configuration entry ------------------------------------------------------------------

/// The payload of an [`crate::EntryKind::Config`] entry: the configuration before it and the
/// one it puts in force, and an opaque context for the caller (etcd puts the new member's
/// attributes there).
///
/// Carrying `prev` makes every entry self-contained: a node that restarts with a configuration
/// entry in the uncommitted part of its log knows what to fall back to if a new leader
/// truncates it, without any history kept elsewhere.
///
/// Encoding (version 1, little-endian): `version u8`, `prev`, `next`, `context_len u32`,
/// `context`; a configuration is three id lists (incoming voters, outgoing voters, learners),
/// each `count u32` then `count` ids `u64`, strictly ascending.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConfigEntry {
    /// The configuration in force before this entry.
    pub prev: Membership,
    /// The configuration in force from this entry on.
    pub next: Membership,
    /// Caller data, carried untouched.
    pub context: Bytes,
}

/// The encoding version [`ConfigEntry::encode`] writes.
pub const CONFIG_ENTRY_VERSION: u8 = 1;

/// Most ids a configuration entry may list per set: far more than any cluster, far less than
/// what a forged length could make a decoder allocate.
pub const CONFIG_IDS_MAX: usize = 1024;

/// Why bytes are not a valid [`ConfigEntry`].
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum ConfigDecodeError {
    /// Fewer bytes than the encoding needs.
    #[error("truncated")]
    Truncated,
    /// A version this code does not know.
    #[error("unknown version {0}")]
    UnknownVersion(u8),
    /// An id list longer than [`CONFIG_IDS_MAX`].
    #[error("{0} ids in one set, more than the limit")]
    TooManyIds(u32),
    /// Ids not strictly ascending (the encoding is canonical).
    #[error("ids not strictly ascending")]
    IdsNotAscending,
    /// Bytes left after the context.
    #[error("{0} bytes after the end")]
    TrailingBytes(usize),
    /// A configuration that breaks [`Membership::validate`].
    #[error("invalid configuration: {0}")]
    InvalidMembership(String),
    /// `next` does not follow from `prev` by one step: entering a joint configuration whose
    /// outgoing half is `prev`'s voters, leaving one, or changing learners only.
    #[error("not a valid transition from the previous configuration")]
    InvalidTransition,
}

impl ConfigEntry {
    /// The entry's bytes.
    pub fn encode(&self) -> Bytes {
        let ids = self.prev.members().len() + self.next.members().len() + 6;
        let mut out = Vec::with_capacity(1 + 4 * 6 + 8 * ids + 4 + self.context.len());
        out.push(CONFIG_ENTRY_VERSION);
        for m in [&self.prev, &self.next] {
            for set in [m.voters.incoming.voters(), m.voters.outgoing.voters(), &m.learners] {
                out.extend_from_slice(&(set.len() as u32).to_le_bytes());
                for id in set {
                    out.extend_from_slice(&id.0.to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&(self.context.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.context);
        Bytes::from(out)
    }

    /// Decodes and validates an entry's bytes. Bad bytes are an error, never a panic.
    pub fn decode(data: &[u8]) -> Result<ConfigEntry, ConfigDecodeError> {
        let mut r = Reader(data);
        let version = r.take(1)?[0];
        if version != CONFIG_ENTRY_VERSION {
            return Err(ConfigDecodeError::UnknownVersion(version));
        }
        let prev = r.membership()?;
        let next = r.membership()?;
        let len = r.u32()? as usize;
        let context = Bytes::copy_from_slice(r.take(len)?);
        if !r.0.is_empty() {
            return Err(ConfigDecodeError::TrailingBytes(r.0.len()));
        }
        for m in [&prev, &next] {
            m.validate().map_err(ConfigDecodeError::InvalidMembership)?;
        }
        let entry = ConfigEntry { prev, next, context };
        if !entry.is_valid_transition() {
            return Err(ConfigDecodeError::InvalidTransition);
        }
        Ok(entry)
    }

    /// Whether `next` follows from `prev` by one step of the protocol.
    fn is_valid_transition(&self) -> bool {
        let (p, n) = (&self.prev.voters, &self.next.voters);
        match (p.is_joint(), n.is_joint()) {
            // Enter a joint configuration: C_old is the outgoing half.
            (false, true) => n.outgoing == p.incoming,
            // Leave it: C_new alone, learners unchanged.
            (true, false) => n.incoming == p.incoming && self.next.learners == self.prev.learners,
            // Learners only.
            (false, false) => n.incoming == p.incoming,
            (true, true) => false,
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ConfigDecodeError> {
        if self.0.len() < n {
            return Err(ConfigDecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, ConfigDecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn ids(&mut self) -> Result<BTreeSet<NodeId>, ConfigDecodeError> {
        let n = self.u32()?;
        if n as usize > CONFIG_IDS_MAX {
            return Err(ConfigDecodeError::TooManyIds(n));
        }
        let bytes = self.take(n as usize * 8)?;
        let mut set = BTreeSet::new();
        for chunk in bytes.chunks_exact(8) {
            let id = NodeId(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
            if set.last().is_some_and(|last| *last >= id) {
                return Err(ConfigDecodeError::IdsNotAscending);
            }
            set.insert(id);
        }
        Ok(set)
    }

    fn membership(&mut self) -> Result<Membership, ConfigDecodeError> {
        let incoming = self.ids()?;
        let outgoing = self.ids()?;
        let learners = self.ids()?;
        Ok(Membership {
            voters: JointConfig {
                incoming: MajorityConfig::new(incoming),
                outgoing: MajorityConfig::new(outgoing),
            },
            learners,
        })
    }
}

// ----- The configurations a node's log holds ------------------------------------------------

/// The configurations in force along a node's log, from a base point on: the base
/// configuration, then one per configuration entry after it. The last one is in force
/// (dissertation §4.1: a server uses the latest configuration in its log, committed or not),
/// and truncating entries falls back to the one before them.
///
/// Invariant: `changes` ascend by index, all above `base_index`. Each change keeps its entry's
/// previous configuration too: that, not the configuration before it in this history, is what
/// the entry changed (a node that joined from the configuration naming it and replays older
/// entries has a base that is not what preceded them).
#[derive(Clone, Debug)]
pub(crate) struct ConfigHistory {
    base_index: LogIndex,
    base: Membership,
    changes: Vec<(LogIndex, Membership, Membership)>,
}

impl ConfigHistory {
    /// `base` is in force at `index` and until the next configuration entry.
    pub(crate) fn new(index: LogIndex, base: Membership) -> ConfigHistory {
        ConfigHistory { base_index: index, base, changes: Vec::new() }
    }

    /// The configuration in force at the end of the log.
    pub(crate) fn current(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, _, m)| m)
    }

    /// The index of the entry that put the current configuration in force (or the base
    /// index).
    pub(crate) fn latest_index(&self) -> LogIndex {
        self.changes.last().map_or(self.base_index, |(i, _, _)| *i)
    }

    /// The index of the entry whose configuration is in force at `index` (or the base index).
    pub(crate) fn index_at(&self, index: LogIndex) -> LogIndex {
        self.changes.iter().rev().find(|(i, _, _)| *i <= index).map_or(self.base_index, |c| c.0)
    }

    /// The configuration in force at `index`; the base for any index at or below its point.
    pub(crate) fn at(&self, index: LogIndex) -> &Membership {
        self.changes.iter().rev().find(|(i, _, _)| *i <= index).map_or(&self.base, |(_, _, m)| m)
    }

    /// The previous configuration of the entry that put the current one in force (`None`
    /// when the base is in force).
    pub(crate) fn latest_prev(&self) -> Option<&Membership> {
        self.changes.last().map(|(_, prev, _)| prev)
    }

    /// A configuration entry at `index` was appended: it leads from `prev` to `m`.
    pub(crate) fn push(&mut self, index: LogIndex, prev: Membership, m: Membership) {
        assert!(index > self.latest_index(), "configuration at {index} is not after the last");
        self.changes.push((index, prev, m));
    }

    /// Entries from `index` on were removed: their configurations no longer count. Returns
    /// whether the current configuration changed.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) -> bool {
        assert!(index > self.base_index, "truncating the base configuration at {index}");
        let before = self.changes.len();
        self.changes.retain(|(i, _, _)| *i < index);
        self.changes.len() != before
    }

    /// Forgets what no longer matters once everything through `index` is applied (and so can
    /// never be truncated): the configuration in force at `index` becomes the base.
    pub(crate) fn compact_to(&mut self, index: LogIndex) {
        let keep =
            self.changes.iter().position(|(i, _, _)| *i > index).unwrap_or(self.changes.len());
        if keep > 0 {
            let (i, _, m) = self.changes.drain(..keep).next_back().expect("keep > 0");
            self.base_index = i;
            self.base = m;
        }
    }

    /// The log was replaced by a snapshot at `index` whose configuration is `m`.
    pub(crate) fn reset(&mut self, index: LogIndex, m: Membership) {
        *self = ConfigHistory::new(index, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ids: &[u64]) -> Membership {
        Membership::voters(ids.iter().map(|&i| NodeId(i)))
    }

    #[test]
    fn config_entry_round_trips_and_bad_bytes_are_errors_not_panics() {
        let prev = v(&[1, 2, 3]);
        let next = prev.apply_changes(&[ConfChange::AddVoter(NodeId(4))]).unwrap();
        let e = ConfigEntry { prev, next, context: Bytes::from_static(b"ctx") };
        let bytes = e.encode();
        assert_eq!(ConfigEntry::decode(&bytes), Ok(e));
        // Every truncation, every single-byte change: an error or a valid entry, no panic.
        for len in 0..bytes.len() {
            assert!(ConfigEntry::decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.to_vec();
            b[i] ^= 0xff;
            let _ = ConfigEntry::decode(&b);
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(ConfigEntry::decode(&long), Err(ConfigDecodeError::TrailingBytes(1)));
        let mut huge = vec![CONFIG_ENTRY_VERSION];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(ConfigEntry::decode(&huge), Err(ConfigDecodeError::TooManyIds(u32::MAX)));
        // A jump that is not one step of the protocol.
        let jump = ConfigEntry { prev: v(&[1, 2, 3]), next: v(&[7]), context: Bytes::new() };
        assert_eq!(ConfigEntry::decode(&jump.encode()), Err(ConfigDecodeError::InvalidTransition));
    }

    #[test]
    fn s4_3_voter_changes_go_joint_learner_changes_do_not() {
        let m = v(&[1, 2, 3]);
        let joint = m.apply_changes(&[ConfChange::Remove(NodeId(3))]).unwrap();
        assert!(joint.voters.is_joint());
        assert_eq!(joint.voters.outgoing, m.voters.incoming);
        assert_eq!(joint.leave_joint(), v(&[1, 2]));
        let learner = m.apply_changes(&[ConfChange::AddLearner(NodeId(4))]).unwrap();
        assert!(!learner.voters.is_joint());
        let promoted = learner.apply_changes(&[ConfChange::Promote(NodeId(4))]).unwrap();
        assert_eq!(promoted.leave_joint(), v(&[1, 2, 3, 4]));
        let err = |changes: &[ConfChange]| m.apply_changes(changes).unwrap_err();
        assert_eq!(err(&[]), InvalidChange::Empty);
        assert_eq!(
            err(&[ConfChange::AddVoter(NodeId(1))]),
            InvalidChange::AlreadyMember(NodeId(1))
        );
        assert_eq!(err(&[ConfChange::Remove(NodeId(9))]), InvalidChange::NotAMember(NodeId(9)));
        assert_eq!(err(&[ConfChange::Promote(NodeId(2))]), InvalidChange::NotALearner(NodeId(2)));
        let all = [1, 2, 3].map(|i| ConfChange::Remove(NodeId(i)));
        assert_eq!(err(&all), InvalidChange::NoVoterLeft);
        let dup = [ConfChange::AddVoter(NodeId(5)), ConfChange::AddLearner(NodeId(5))];
        assert_eq!(err(&dup), InvalidChange::Duplicate(NodeId(5)));
        assert_eq!(
            joint.apply_changes(&[ConfChange::Remove(NodeId(1))]),
            Err(InvalidChange::Joint)
        );
    }

    #[test]
    fn s4_1_history_uses_latest_and_falls_back_on_truncation() {
        let mut h = ConfigHistory::new(LogIndex(0), v(&[1]));
        h.push(LogIndex(3), v(&[1]), v(&[1, 2]));
        h.push(LogIndex(5), v(&[1, 2]), v(&[1, 2, 3]));
        assert_eq!(h.current(), &v(&[1, 2, 3]));
        assert_eq!(h.latest_prev(), Some(&v(&[1, 2])));
        assert_eq!(h.at(LogIndex(4)), &v(&[1, 2]));
        assert!(h.truncate_from(LogIndex(5)));
        assert_eq!(h.current(), &v(&[1, 2]));
        assert!(!h.truncate_from(LogIndex(4)));
        h.compact_to(LogIndex(4));
        assert_eq!((h.latest_index(), h.current()), (LogIndex(3), &v(&[1, 2])));
    }

    #[test]
    fn promotion_and_strict_reconfig_thresholds() {
        assert!(learner_caught_up(LogIndex(0), LogIndex(PROMOTE_LAG_ENTRIES_MAX)));
        assert!(!learner_caught_up(LogIndex(0), LogIndex(PROMOTE_LAG_ENTRIES_MAX + 1)));
        let next = JointConfig::simple([1, 2, 3, 4].map(NodeId));
        assert_eq!(enough_active_voters(&next, |id| id.0 <= 2), Err((2, 3)));
        assert_eq!(enough_active_voters(&next, |id| id.0 <= 3), Ok(()));
    }

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
