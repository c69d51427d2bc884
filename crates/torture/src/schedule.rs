//! The fault schedule: which fault, on whom, when and for how long, drawn from a seed.
//!
//! A schedule is a function of `(seed, duration, whether partitions are allowed)` and nothing
//! else, so the rerun command in a report replays it exactly. Faults never overlap: each one
//! is followed by a quiet gap in which the cluster recovers, so that availability "after" a
//! fault is measured on a healed cluster. Targets that depend on the cluster's state (the
//! leader, "the first follower") are resolved when the fault starts, and the report records
//! which member they named.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tenure_sim::rng::SimRng;

/// Whom a fault hits, resolved when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The member at this position (0-based) of the cluster.
    Member(usize),
    /// The member that leads when the fault starts.
    Leader,
    /// The `k`-th follower (in member order) when the fault starts.
    Follower(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Member(i) => write!(f, "n{}", i + 1),
            Target::Leader => write!(f, "leader"),
            Target::Follower(k) => write!(f, "follower{k}"),
        }
    }
}

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL the member at the start; start it again on its data directory at the end.
    Kill {
        /// The member killed.
        target: Target,
    },
    /// SIGSTOP the member at the start, SIGCONT at the end.
    Pause {
        /// The member paused.
        target: Target,
    },
    /// Cut the member off from every other member, both ways (its clients still reach it).
    Isolate {
        /// The member cut off.
        target: Target,
    },
    /// Messages from `from` to `to` are lost; those from `to` to `from` still arrive.
    OneWay {
        /// The member whose messages are lost.
        from: Target,
        /// The member that does not hear them.
        to: Target,
    },
}

impl FaultKind {
    /// Whether the fault needs the firewall.
    pub fn is_partition(&self) -> bool {
        matches!(self, FaultKind::Isolate { .. } | FaultKind::OneWay { .. })
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Kill { target } => write!(f, "kill {target}"),
            FaultKind::Pause { target } => write!(f, "pause {target}"),
            FaultKind::Isolate { target } => write!(f, "isolate {target}"),
            FaultKind::OneWay { from, to } => write!(f, "one-way {from} -/-> {to}"),
        }
    }
}

/// A fault and its planned window, relative to the start of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedFault {
    /// What happens.
    pub kind: FaultKind,
    /// When it starts, in milliseconds after the workload started.
    pub start_ms: u64,
    /// How long it lasts, in milliseconds.
    pub duration_ms: u64,
}

/// The shape of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ScheduleSpec {
    /// The seed every choice is drawn from.
    pub seed: u64,
    /// How long the workload runs.
    #[serde(serialize_with = "serialize_duration_ms")]
    pub duration: Duration,
    /// Whether partitions may be drawn (they need the firewall).
    pub partitions: bool,
    /// How many members the cluster has.
    pub member_count: usize,
}

fn serialize_duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Quiet time before the first fault, so that the cluster has a leader and a baseline rate.
pub const WARMUP_MS: u64 = 3_000;
/// Quiet time after the last fault ends, before the workload stops.
pub const COOLDOWN_MS: u64 = 3_000;
/// A fault lasts this long at least (a few election timeouts at etcd's defaults)...
pub const FAULT_MS_MIN: u64 = 2_000;
/// ...and less than this.
pub const FAULT_MS_MAX: u64 = 5_000;
/// The quiet gap after a fault lasts this long at least...
pub const GAP_MS_MIN: u64 = 2_500;
/// ...and less than this.
pub const GAP_MS_MAX: u64 = 4_500;

/// Draws the schedule for `spec`: faults one after another from [`WARMUP_MS`] on, each
/// followed by a gap, until the next would end within [`COOLDOWN_MS`] of the end.
pub fn generate(spec: &ScheduleSpec) -> Vec<PlannedFault> {
    let mut rng = SimRng::new(spec.seed);
    let end_ms = spec.duration.as_millis() as u64;
    let members = spec.member_count.max(1) as u64;
    let mut faults = Vec::new();
    let mut t = WARMUP_MS;
    loop {
        let duration_ms = rng.range(FAULT_MS_MIN, FAULT_MS_MAX);
        if t + duration_ms + COOLDOWN_MS > end_ms {
            break;
        }
        let kind = draw_kind(&mut rng, members, spec.partitions);
        faults.push(PlannedFault { kind, start_ms: t, duration_ms });
        t += duration_ms + rng.range(GAP_MS_MIN, GAP_MS_MAX);
    }
    faults
}

fn draw_kind(rng: &mut SimRng, members: u64, partitions: bool) -> FaultKind {
    let anyone = |rng: &mut SimRng| {
        if rng.chance(0.5) {
            Target::Leader
        } else {
            Target::Member(rng.range(0, members) as usize)
        }
    };
    let kinds = if partitions { 5 } else { 2 };
    match rng.range(0, kinds) {
        0 => FaultKind::Kill { target: anyone(rng) },
        1 => FaultKind::Pause { target: anyone(rng) },
        2 => FaultKind::Isolate { target: anyone(rng) },
        // The leader cannot reach one follower: that follower stops hearing heartbeats.
        3 => FaultKind::OneWay {
            from: Target::Leader,
            to: Target::Follower(rng.range(0, members.saturating_sub(1)) as usize),
        },
        // The leader hears no follower but still reaches them (it is "deaf"): Check-Quorum
        // must make it step down.
        _ => FaultKind::OneWay {
            from: Target::Follower(rng.range(0, members.saturating_sub(1)) as usize),
            to: Target::Leader,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64, partitions: bool) -> ScheduleSpec {
        ScheduleSpec { seed, duration: Duration::from_secs(120), partitions, member_count: 3 }
    }

    #[test]
    fn a_seed_always_draws_the_same_schedule() {
        assert_eq!(generate(&spec(7, true)), generate(&spec(7, true)));
        assert_ne!(generate(&spec(7, true)), generate(&spec(8, true)));
    }

    #[test]
    fn faults_do_not_overlap_and_end_before_the_cooldown() {
        let faults = generate(&spec(3, true));
        assert!(faults.len() >= 10, "{faults:?}");
        assert!(faults[0].start_ms >= WARMUP_MS);
        for pair in faults.windows(2) {
            assert!(pair[0].start_ms + pair[0].duration_ms + GAP_MS_MIN <= pair[1].start_ms);
        }
        let last = faults.last().expect("faults");
        assert!(last.start_ms + last.duration_ms + COOLDOWN_MS <= 120_000);
    }

    #[test]
    fn without_partitions_only_kills_and_pauses_are_drawn() {
        for seed in 0..20 {
            assert!(generate(&spec(seed, false)).iter().all(|f| !f.kind.is_partition()));
        }
        let drawn: Vec<bool> =
            (0..20).flat_map(|s| generate(&spec(s, true))).map(|f| f.kind.is_partition()).collect();
        assert!(drawn.contains(&true));
    }
}
