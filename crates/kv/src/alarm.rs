//! The replicated alarm table behind `Maintenance.Alarm`, with etcd's semantics.
//!
//! An alarm is raised for one member (`ACTIVATE`), listed (`GET`) and cleared (`DEACTIVATE`)
//! through the log, as etcd does (`etcdserver/apply.go`, `Alarm`), so every member agrees on
//! the set and it survives restarts and snapshots. While any `NOSPACE` alarm is raised, the
//! commands that grow the store fail with [`Error::NoSpace`](crate::Error::NoSpace) (etcd's
//! capped applier); while any `CORRUPT` alarm is raised, every write fails with
//! [`Error::Corrupt`](crate::Error::Corrupt) (etcd's corrupt applier). Reads are served either
//! way, as in etcd, whose reads bypass the alarm appliers.
//!
//! Alarms do not move the revision: they are not keys.

use std::collections::BTreeSet;

/// What an alarm is about (etcd's `AlarmType`; `NONE` is "any" in a request and never
/// raised).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmType {
    /// `NOSPACE`: the member's backend ran out of its quota; writes that grow the store fail.
    NoSpace,
    /// `CORRUPT`: a member's data disagrees with the others'; every write fails.
    Corrupt,
}

impl AlarmType {
    /// etcd's name for the type (`NOSPACE`, `CORRUPT`).
    pub fn name(self) -> &'static str {
        match self {
            AlarmType::NoSpace => "NOSPACE",
            AlarmType::Corrupt => "CORRUPT",
        }
    }
}

/// What an [`AlarmRequest`] does (etcd's `AlarmRequest.AlarmAction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    /// Lists the raised alarms of the request's type, or all of them for `None`.
    Get,
    /// Raises the alarm for the member. Raising one that is already raised changes nothing.
    Activate,
    /// Clears the alarm of the member, if raised.
    Deactivate,
}

/// `Maintenance.Alarm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmRequest {
    /// What to do.
    pub action: AlarmAction,
    /// The member the alarm is for (ignored by `Get`). Any id is accepted, as in etcd.
    pub member_id: u64,
    /// The alarm; `None` is etcd's `NONE`: "every type" for `Get`, nothing for the others.
    pub alarm: Option<AlarmType>,
}

/// One raised alarm (etcd's `AlarmMember`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmMember {
    /// The member that raised it.
    pub member_id: u64,
    /// What it is about.
    pub alarm: AlarmType,
}

/// Result of [`AlarmRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlarmResponse {
    /// The store revision, unchanged by alarms.
    pub revision: i64,
    /// `Get`: the raised alarms asked for, sorted by member then type. `Activate`: the alarm
    /// (also when it was already raised). `Deactivate`: the alarm cleared, or nothing if it was
    /// not raised.
    pub alarms: Vec<AlarmMember>,
}

/// The raised alarms. Sorted, so that listing and snapshots are deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Alarms {
    pub(crate) raised: BTreeSet<AlarmMember>,
}

impl Alarms {
    /// Applies one request (etcd `applierV3backend.Alarm`). etcd stores an `ACTIVATE` of type
    /// `NONE` as an alarm of no type that nothing acts on; tenure ignores it instead.
    pub(crate) fn apply(&mut self, r: &AlarmRequest) -> Vec<AlarmMember> {
        match (r.action, r.alarm) {
            (AlarmAction::Get, filter) => self
                .raised
                .iter()
                .filter(|m| filter.is_none_or(|t| m.alarm == t))
                .copied()
                .collect(),
            (AlarmAction::Activate, Some(alarm)) => {
                let m = AlarmMember { member_id: r.member_id, alarm };
                self.raised.insert(m);
                vec![m]
            }
            (AlarmAction::Deactivate, Some(alarm)) => {
                let m = AlarmMember { member_id: r.member_id, alarm };
                if self.raised.remove(&m) { vec![m] } else { Vec::new() }
            }
            (AlarmAction::Activate | AlarmAction::Deactivate, None) => Vec::new(),
        }
    }

    /// Whether an alarm of type `alarm` is raised for any member.
    pub(crate) fn any(&self, alarm: AlarmType) -> bool {
        self.raised.iter().any(|m| m.alarm == alarm)
    }

    pub(crate) fn len(&self) -> usize {
        self.raised.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: AlarmAction, member_id: u64, alarm: Option<AlarmType>) -> AlarmRequest {
        AlarmRequest { action, member_id, alarm }
    }

    #[test]
    fn activate_get_and_deactivate_follow_etcd() {
        let mut a = Alarms::default();
        let nospace = AlarmMember { member_id: 2, alarm: AlarmType::NoSpace };
        let corrupt = AlarmMember { member_id: 1, alarm: AlarmType::Corrupt };
        assert_eq!(a.apply(&req(AlarmAction::Activate, 2, Some(AlarmType::NoSpace))), [nospace]);
        // Raising it again answers the alarm and changes nothing.
        assert_eq!(a.apply(&req(AlarmAction::Activate, 2, Some(AlarmType::NoSpace))), [nospace]);
        assert_eq!(a.apply(&req(AlarmAction::Activate, 1, Some(AlarmType::Corrupt))), [corrupt]);
        assert_eq!(a.apply(&req(AlarmAction::Get, 0, None)), [corrupt, nospace]);
        assert_eq!(a.apply(&req(AlarmAction::Get, 0, Some(AlarmType::NoSpace))), [nospace]);
        assert!(a.any(AlarmType::NoSpace) && a.any(AlarmType::Corrupt));
        // NONE raises and clears nothing; clearing what is not raised answers nothing.
        assert!(a.apply(&req(AlarmAction::Activate, 3, None)).is_empty());
        assert!(a.apply(&req(AlarmAction::Deactivate, 0, None)).is_empty());
        assert!(a.apply(&req(AlarmAction::Deactivate, 1, Some(AlarmType::NoSpace))).is_empty());
        assert_eq!(a.apply(&req(AlarmAction::Deactivate, 2, Some(AlarmType::NoSpace))), [nospace]);
        assert!(!a.any(AlarmType::NoSpace));
        assert_eq!(a.len(), 1);
    }
}
