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
    /// The other members are split into two halves that cannot reach each other, both ways;
    /// `bridge` still reaches both (Jepsen's "bridge"). With three members: the two others cut
    /// from each other. When `bridge` is a follower, the leader and the follower beyond the
    /// bridge lose each other while the bridge hears both.
    Bridge {
        /// The member that still reaches everyone.
        bridge: Target,
    },
    /// Messages from `from` to `to` are lost; those from `to` to `from` still arrive.
    OneWay {
        /// The member whose messages are lost.
        from: Target,
        /// The member that does not hear them.
        to: Target,
    },
    /// A share of the packets on every peer connection of the member is dropped at random
    /// (iptables' statistic match; TCP retransmits them).
    Loss {
        /// The member whose links are lossy.
        target: Target,
        /// Percent of packets dropped.
        percent: u32,
    },
    /// Every packet on the member's peer connections is held for `ms` milliseconds (its
    /// messages to its peers and theirs to it: each way), through a netfilter queue and a
    /// thread of the suite's ([`crate::delay`]; this kernel has no netem). The delay is fixed,
    /// so nothing is reordered.
    Delay {
        /// The member whose links are slow to cross.
        target: Target,
        /// The delay, in milliseconds, each way.
        ms: u32,
    },
    /// Every peer connection of the member is shaped to a low rate (tc HTB on loopback):
    /// queueing delay that grows with the load, and drops when the queue is full.
    Throttle {
        /// The member whose links are slow.
        target: Target,
        /// The rate, in kbit/s.
        kbit: u32,
    },
    /// The member's data directory (a small tmpfs of its own) is filled to the last byte for
    /// the window, then freed.
    DiskFull {
        /// The member whose disk fills.
        target: Target,
    },
    /// The member is SIGKILLed, and started again half-way through the window with a
    /// failpoint armed (`FAILPOINTS`, a `tenure` built with the `failpoints` feature): it
    /// crashes itself the `after + 1`-th time it reaches `point`, and is started again without
    /// it at once (at the heal if the point was not reached).
    Crash {
        /// The member armed.
        target: Target,
        /// The failpoint's name (see [`FAILPOINTS`]).
        point: &'static str,
        /// How many times the point is passed before it fires.
        after: u32,
    },
    /// The member is removed from the cluster (the leader: it steps down and stops), its data
    /// wiped; half-way through the window its slot is added back as a learner with a new id
    /// and started with `--initial-cluster-state existing`; at the end it is promoted once in
    /// sync with the leader.
    Replace {
        /// The member replaced.
        target: Target,
    },
    /// Two learners are added in the spare slots, started, and promoted one after the other
    /// (three voters to five); at the end every member's HashKV is compared and the two are
    /// removed again (five to three).
    Grow,
    /// The member's clock (under libfaketime) runs `offset_s` seconds off the host's and at
    /// `rate_percent`% of its speed for the window, then is put back (a step back by whatever
    /// it gained). Only the wall clock unless the run fakes the monotonic clock too.
    Clock {
        /// The member whose clock is off.
        target: Target,
        /// The step, in seconds (either way).
        offset_s: i64,
        /// The rate, in percent of real time (100: only a step).
        rate_percent: u32,
    },
}

/// The failpoints a [`FaultKind::Crash`] arms: tenure-storage's and tenure-server's (their
/// `failpoints` feature), with how many passes to let by at most before firing (points reached
/// on every write get more, so that the member first rejoins and works; the suite's snapshots
/// are one chunk, and a member gets one snapshot when it comes back).
pub const FAILPOINTS: [(&str, u32); 6] = [
    ("log-sync-before", 100),
    ("log-sync-after", 100),
    ("log-before-hard-state", 100),
    ("snapshot-chunk-written", 0),
    ("snapshot-sealed-before-step", 0),
    ("kv-put-applied-before-reply", 10),
];

impl FaultKind {
    /// Whether the fault needs the firewall.
    pub fn is_partition(&self) -> bool {
        matches!(
            self,
            FaultKind::Isolate { .. }
                | FaultKind::Bridge { .. }
                | FaultKind::OneWay { .. }
                | FaultKind::Loss { .. }
                | FaultKind::Delay { .. }
                | FaultKind::Throttle { .. }
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Kill { target } => write!(f, "kill {target}"),
            FaultKind::Pause { target } => write!(f, "pause {target}"),
            FaultKind::Isolate { target } => write!(f, "isolate {target}"),
            FaultKind::Bridge { bridge } => write!(f, "split the others, {bridge} bridging"),
            FaultKind::OneWay { from, to } => write!(f, "one-way {from} -/-> {to}"),
            FaultKind::Loss { target, percent } => {
                write!(f, "lose {percent}% of {target}'s packets")
            }
            FaultKind::Delay { target, ms } => write!(f, "delay {target}'s packets {ms} ms"),
            FaultKind::Throttle { target, kbit } => write!(f, "throttle {target} to {kbit} kbit/s"),
            FaultKind::DiskFull { target } => write!(f, "fill {target}'s disk"),
            FaultKind::Crash { target, point, after } => {
                write!(f, "crash {target} at {point} (after {after} passes)")
            }
            FaultKind::Replace { target } => write!(f, "replace {target}"),
            FaultKind::Grow => write!(f, "grow to 5 members and shrink back"),
            FaultKind::Clock { target, offset_s, rate_percent: 100 } => {
                write!(f, "step {target}'s clock {offset_s:+} s")
            }
            FaultKind::Clock { target, offset_s: 0, rate_percent } => {
                write!(f, "run {target}'s clock at {rate_percent}% speed")
            }
            FaultKind::Clock { target, offset_s, rate_percent } => {
                write!(f, "step {target}'s clock {offset_s:+} s, at {rate_percent}% speed")
            }
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
    /// Which other kinds of fault may be drawn.
    pub extra: ExtraFaults,
    /// How many members the cluster has.
    pub member_count: usize,
}

/// The kinds of fault beyond kills, pauses and partitions, each of which needs something of
/// the host or of the binary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExtraFaults {
    /// Packet loss, added delay and throttled links (iptables' statistic match, NFQUEUE, tc
    /// HTB and CLASSIFY).
    pub shaping: bool,
    /// A full disk (a tmpfs per member: mount needs root).
    pub disk_full: bool,
    /// Crashes at failpoints (a `tenure` built with the `failpoints` feature).
    pub failpoints: bool,
    /// Membership changes: a member replaced (the leader half the time), three voters grown to
    /// five and back.
    pub membership: bool,
    /// Clock steps and rates (libfaketime).
    pub clock: bool,
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
        let kind = draw_kind(&mut rng, members, spec.partitions, spec.extra);
        faults.push(PlannedFault { kind, start_ms: t, duration_ms });
        t += duration_ms + rng.range(GAP_MS_MIN, GAP_MS_MAX);
    }
    faults
}

fn draw_kind(rng: &mut SimRng, members: u64, partitions: bool, extra: ExtraFaults) -> FaultKind {
    let anyone = |rng: &mut SimRng| {
        if rng.chance(0.5) {
            Target::Leader
        } else {
            Target::Member(rng.range(0, members) as usize)
        }
    };
    // The kinds drawn from: 0 and 1 always, 2..=4 and 13 with partitions, then the extras.
    // Kinds added later change what a seed draws: the bridge (13) and the delay (12, with
    // shaping) came on 2026-12-07, and seeds quoted from before then drew other schedules.
    let mut kinds: Vec<u64> = vec![0, 1];
    if partitions {
        kinds.extend([2, 3, 4, 13]);
    }
    if extra.shaping {
        kinds.extend([5, 6, 12]);
    }
    if extra.disk_full {
        kinds.push(7);
    }
    if extra.failpoints {
        kinds.push(8);
    }
    if extra.membership {
        kinds.extend([9, 10]);
    }
    if extra.clock {
        kinds.push(11);
    }
    let drawn = kinds[rng.range(0, kinds.len() as u64) as usize];
    match drawn {
        9 => return FaultKind::Replace { target: anyone(rng) },
        10 => return FaultKind::Grow,
        11 => {
            let target = anyone(rng);
            // Half steps (up to ten minutes either way), half a rate off (50% to 200%).
            return if rng.chance(0.5) {
                let offset_s = rng.range(5, 601) as i64;
                let offset_s = if rng.chance(0.5) { -offset_s } else { offset_s };
                FaultKind::Clock { target, offset_s, rate_percent: 100 }
            } else {
                let rate_percent = [50, 75, 150, 200][rng.range(0, 4) as usize];
                FaultKind::Clock { target, offset_s: 0, rate_percent }
            };
        }
        5 => return FaultKind::Loss { target: anyone(rng), percent: rng.range(10, 41) as u32 },
        6 => {
            return FaultKind::Throttle { target: anyone(rng), kbit: rng.range(64, 513) as u32 };
        }
        13 => return FaultKind::Bridge { bridge: anyone(rng) },
        12 => return FaultKind::Delay { target: anyone(rng), ms: rng.range(10, 401) as u32 },
        7 => return FaultKind::DiskFull { target: anyone(rng) },
        8 => {
            let target = anyone(rng);
            let (point, after_max) = FAILPOINTS[rng.range(0, FAILPOINTS.len() as u64) as usize];
            let after = rng.range(0, u64::from(after_max) + 1) as u32;
            return FaultKind::Crash { target, point, after };
        }
        _ => {}
    }
    match drawn {
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
        ScheduleSpec {
            seed,
            duration: Duration::from_secs(120),
            partitions,
            extra: ExtraFaults::default(),
            member_count: 3,
        }
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
    fn extras_are_drawn_only_when_allowed_and_all_are_drawn() {
        let all = ExtraFaults {
            shaping: true,
            disk_full: true,
            failpoints: true,
            membership: true,
            clock: true,
        };
        let drawn: Vec<FaultKind> = (0..20)
            .flat_map(|s| generate(&ScheduleSpec { extra: all, ..spec(s, true) }))
            .map(|f| f.kind)
            .collect();
        let has = |p: fn(&FaultKind) -> bool| drawn.iter().any(p);
        assert!(has(|k| matches!(k, FaultKind::Loss { .. })));
        assert!(has(|k| matches!(k, FaultKind::Throttle { .. })));
        assert!(has(|k| matches!(k, FaultKind::Delay { ms: 10..=400, .. })));
        assert!(has(|k| matches!(k, FaultKind::Bridge { bridge: Target::Leader })));
        assert!(has(|k| matches!(k, FaultKind::Bridge { bridge: Target::Member(_) })));
        assert!(has(|k| matches!(k, FaultKind::DiskFull { .. })));
        assert!(has(|k| matches!(k, FaultKind::Crash { .. })));
        assert!(has(|k| matches!(k, FaultKind::Replace { target: Target::Leader })));
        assert!(has(|k| matches!(k, FaultKind::Grow)));
        assert!(has(|k| matches!(k, FaultKind::Clock { offset_s: ..0, .. })));
        assert!(has(|k| matches!(k, FaultKind::Clock { offset_s: 1.., .. })));
        assert!(has(|k| matches!(k, FaultKind::Clock { rate_percent: 101.., .. })));
        let none: Vec<FaultKind> =
            (0..20).flat_map(|s| generate(&spec(s, true))).map(|f| f.kind).collect();
        assert!(none.iter().all(|k| matches!(
            k,
            FaultKind::Kill { .. }
                | FaultKind::Pause { .. }
                | FaultKind::Isolate { .. }
                | FaultKind::Bridge { .. }
                | FaultKind::OneWay { .. }
        )));
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
