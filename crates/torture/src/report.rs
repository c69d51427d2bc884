//! A run's report: the seed and schedule, each fault's window with what the workload got done
//! inside and after it, the checkers' verdicts, and the command that reruns the same schedule.
//! Printed as text, or as JSON with `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use crate::check::{Outcome, Verdict};
use crate::workload::OpRecord;

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// The planned fault, as the schedule names it (`kill leader`).
    pub planned: String,
    /// What was done, with the members resolved (`kill n2`).
    pub injected: String,
    /// When it started, in milliseconds since the workload started.
    pub start_ms: f64,
    /// When it was healed (the member restarted or resumed, the rules removed).
    pub end_ms: f64,
    /// Who led when the fault started (`None`: no leader known).
    pub leader_at_start: Option<String>,
    /// Who led just before the heal.
    pub leader_before_heal: Option<String>,
    /// What the workload got done in the window and after it.
    pub availability: Availability,
    /// When each member acknowledged a probe write after the heal.
    pub heal_probe: HealProbe,
}

/// When the members served writes again after a heal: each member is sent writes from the
/// heal on until one is acknowledged (see [`crate::workload::probe`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealProbe {
    /// Per member, milliseconds from the heal to its first acknowledged probe write (`None`:
    /// none within the probe's patience).
    pub member_ms: Vec<Option<f64>>,
    /// The first member to acknowledge: the cluster serves writes again.
    pub first_ms: Option<f64>,
    /// The last: every member serves writes again (`None` if one never did).
    pub all_ms: Option<f64>,
}

impl HealProbe {
    /// The summary of per-member probe results, in microseconds.
    pub fn of(member_us: &[Option<u64>]) -> HealProbe {
        let member_ms: Vec<Option<f64>> =
            member_us.iter().map(|u| u.map(|u| u as f64 / 1e3)).collect();
        let first_ms = member_ms.iter().flatten().copied().reduce(f64::min);
        let all_ms = if member_ms.iter().all(Option::is_some) {
            member_ms.iter().flatten().copied().reduce(f64::max)
        } else {
            None
        };
        HealProbe { member_ms, first_ms, all_ms }
    }
}

/// Who led at a fault's start and just before its heal, by member name.
#[derive(Clone, Debug, Default)]
pub struct Leaders {
    /// At the start.
    pub at_start: Option<String>,
    /// Just before the heal.
    pub before_heal: Option<String>,
}

/// What the workload got done in a window and after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Availability {
    /// Operations decided (answered ok or fail) that returned inside the fault's window.
    pub ops_during: usize,
    /// The same per second.
    pub ops_per_s_during: f64,
    /// Of those, acknowledged writes and successful cas.
    pub writes_during: usize,
    /// Operations decided in the quiet time after the heal (up to the next fault, or 5 s).
    pub ops_after: usize,
    /// The same per second.
    pub ops_per_s_after: f64,
    /// From the heal to the first acknowledged write or cas issued after it, in milliseconds.
    pub first_write_after_heal_ms: Option<f64>,
    /// From the heal to the first decided operation of any kind issued after it, in
    /// milliseconds.
    pub first_op_after_heal_ms: Option<f64>,
}

/// How long after a heal counts as "after" at most.
pub const AFTER_US_MAX: u64 = 5_000_000;

/// Computes the availability of the window `[start_us, end_us]`, with "after" running to
/// `after_end_us` (the next fault's start, or the end of the workload).
pub fn availability(
    history: &[OpRecord],
    start_us: u64,
    end_us: u64,
    after_end_us: u64,
) -> Availability {
    let after_end_us = after_end_us.min(end_us + AFTER_US_MAX).max(end_us);
    let per_s = |n: usize, from: u64, to: u64| {
        if to > from { n as f64 / ((to - from) as f64 / 1e6) } else { 0.0 }
    };
    let decided =
        history.iter().filter(|o| o.completed() && o.client < crate::workload::FINAL_READ_CLIENT);
    let during: Vec<&OpRecord> =
        decided.clone().filter(|o| o.ret_us >= start_us && o.ret_us <= end_us).collect();
    let after = decided.clone().filter(|o| o.ret_us > end_us && o.ret_us <= after_end_us).count();
    let first = |writes_only: bool| {
        decided
            .clone()
            .filter(|o| o.call_us >= end_us && (!writes_only || o.acknowledged_write().is_some()))
            .map(|o| o.ret_us)
            .min()
            .map(|ret| (ret - end_us) as f64 / 1e3)
    };
    Availability {
        ops_during: during.len(),
        ops_per_s_during: per_s(during.len(), start_us, end_us),
        writes_during: during.iter().filter(|o| o.acknowledged_write().is_some()).count(),
        ops_after: after,
        ops_per_s_after: per_s(after, end_us, after_end_us),
        first_write_after_heal_ms: first(true),
        first_op_after_heal_ms: first(false),
    }
}

/// Counts of the history by outcome.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Totals {
    /// Operations recorded (the final reads included).
    pub ops: usize,
    /// Answered ok.
    pub ok: usize,
    /// Cas whose comparison failed.
    pub fail: usize,
    /// Indeterminate (an error or a timeout).
    pub info: usize,
    /// Acknowledged writes and successful cas.
    pub writes_acknowledged: usize,
    /// Operations of the workload's clients decided (ok or fail): the final reads and the
    /// heal probes left out.
    pub workload_completed: usize,
}

impl Totals {
    /// Counts `history`.
    pub fn of(history: &[OpRecord]) -> Totals {
        use tenure_sim::linearizability::Status;
        Totals {
            ops: history.len(),
            ok: history.iter().filter(|o| o.status == Status::Ok).count(),
            fail: history.iter().filter(|o| o.status == Status::Fail).count(),
            info: history.iter().filter(|o| o.status == Status::Info).count(),
            writes_acknowledged: history
                .iter()
                .filter(|o| o.acknowledged_write().is_some())
                .count(),
            workload_completed: history
                .iter()
                .filter(|o| o.completed() && o.client < crate::workload::FINAL_READ_CLIENT)
                .count(),
        }
    }
}

/// The report of one run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed of the schedule and of the clients.
    pub seed: u64,
    /// The server binary run.
    pub server: String,
    /// `tenure` or `etcd`.
    pub flavor: &'static str,
    /// How long the workload ran, in seconds.
    pub duration_s: f64,
    /// Whether partitions were part of the schedule.
    pub partitions: bool,
    /// Why partitions were left out, when they were.
    pub partitions_note: Option<String>,
    /// Where the members ran: network namespaces or loopback, and why.
    pub network: String,
    /// The other fault kinds in the schedule.
    pub extra: crate::schedule::ExtraFaults,
    /// Why some were left out.
    pub extra_note: Option<String>,
    /// `--heartbeat-interval` and `--election-timeout`, in milliseconds.
    pub heartbeat_ms: u64,
    /// The election timeout, in milliseconds.
    pub election_ms: u64,
    /// Clients and keys.
    pub clients: usize,
    /// Keys.
    pub keys: usize,
    /// Decided operations per second before the first fault.
    pub baseline_ops_per_s: f64,
    /// The faults, in order.
    pub faults: Vec<FaultRecord>,
    /// The history's counts.
    pub totals: Totals,
    /// The final revision the members agreed on.
    pub final_revision: i64,
    /// Each checker's verdict.
    pub verdicts: Vec<Verdict>,
    /// How many verdicts are failures.
    pub anomalies: usize,
    /// How many checkers could not decide.
    pub undecided: usize,
    /// The command that reruns this schedule.
    pub rerun: String,
}

impl Report {
    /// Counts the anomalies and undecided verdicts.
    pub fn tally(&mut self) {
        self.anomalies = self.verdicts.iter().filter(|v| v.outcome == Outcome::Fail).count();
        self.undecided = self.verdicts.iter().filter(|v| v.outcome == Outcome::Unknown).count();
    }

    /// The report as text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tenure-torture: {} ({}), seed {}, {:.0} s, {} clients on {} keys, heartbeat {} ms, \
             election {} ms",
            self.flavor,
            self.server,
            self.seed,
            self.duration_s,
            self.clients,
            self.keys,
            self.heartbeat_ms,
            self.election_ms
        );
        let _ = writeln!(s, "network: {}", self.network);
        if let Some(note) = &self.partitions_note {
            let _ = writeln!(s, "partitions: off ({note})");
        }
        let on_off = |b: bool| if b { "on" } else { "off" };
        let _ = writeln!(
            s,
            "loss, delay and throttles: {}, full disks: {}, failpoint crashes: {}, membership changes: \
             {}, clock steps: {}{}",
            on_off(self.extra.shaping),
            on_off(self.extra.disk_full),
            on_off(self.extra.failpoints),
            on_off(self.extra.membership),
            on_off(self.extra.clock),
            self.extra_note.as_ref().map_or(String::new(), |n| format!(" ({n})"))
        );
        let _ =
            writeln!(s, "baseline: {:.0} ops/s before the first fault", self.baseline_ops_per_s);
        let _ = writeln!(
            s,
            "\nfaults (ops: decided in the window; 1st write: the clients' first acknowledged \
             write issued after the heal; probe: a write per member from the heal on, first and \
             last member to acknowledge):"
        );
        let _ = writeln!(
            s,
            "  {:<44} {:>17}  {:>9} {:>6} {:>8} {:>8} {:>11} {:>17}",
            "fault",
            "window (s)",
            "leader",
            "ops",
            "ops/s",
            "after/s",
            "1st write",
            "probe 1st/all"
        );
        for f in &self.faults {
            let a = &f.availability;
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
            let _ = writeln!(
                s,
                "  {:<44} {:>7.2}..{:>7.2}  {:>9} {:>6} {:>8.0} {:>8.0} {:>11} {:>17}",
                if f.planned == f.injected {
                    f.injected.clone()
                } else {
                    format!("{} ({})", f.injected, f.planned)
                },
                f.start_ms / 1e3,
                f.end_ms / 1e3,
                format!(
                    "{}>{}",
                    f.leader_at_start.as_deref().unwrap_or("-"),
                    f.leader_before_heal.as_deref().unwrap_or("-")
                ),
                a.ops_during,
                a.ops_per_s_during,
                a.ops_per_s_after,
                ms(a.first_write_after_heal_ms),
                format!("{} / {}", ms(f.heal_probe.first_ms), ms(f.heal_probe.all_ms))
            );
        }
        let t = &self.totals;
        let _ = writeln!(
            s,
            "\nhistory: {} ops: {} ok, {} failed cas, {} indeterminate; {} writes acknowledged; \
             final revision {}",
            t.ops, t.ok, t.fail, t.info, t.writes_acknowledged, self.final_revision
        );
        let _ = writeln!(s, "\nverdicts:");
        for v in &self.verdicts {
            let mark = match v.outcome {
                Outcome::Pass => "ok  ",
                Outcome::Fail => "FAIL",
                Outcome::Unknown => "??  ",
            };
            let _ = writeln!(s, "  {mark} {:<20} {}", v.checker, v.detail);
        }
        let _ = writeln!(
            s,
            "\n{} anomalies, {} undecided\nrerun: {}",
            self.anomalies, self.undecided, self.rerun
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use tenure_sim::linearizability::{OpKind, Status};

    use super::*;

    fn op(call_us: u64, ret_us: u64, status: Status, write: bool) -> OpRecord {
        OpRecord {
            client: 1,
            member: 0,
            key: "k0".into(),
            kind: if write {
                OpKind::Write { value: "v".into() }
            } else {
                OpKind::Read { value: None }
            },
            call_us,
            ret_us,
            status,
            revision: write.then_some(5),
        }
    }

    #[test]
    fn availability_counts_the_window_the_after_and_the_first_success() {
        let history = vec![
            op(0, 500_000, Status::Ok, false),            // before
            op(1_100_000, 1_200_000, Status::Ok, false),  // during
            op(1_300_000, 1_900_000, Status::Info, true), // indeterminate: not counted
            op(2_000_000, 2_300_000, Status::Ok, false),  // after: first op at +300 ms
            op(2_100_000, 2_600_000, Status::Ok, true),   // after: first write at +600 ms
        ];
        let a = availability(&history, 1_000_000, 2_000_000, 4_000_000);
        assert_eq!(a.ops_during, 1);
        assert_eq!(a.ops_after, 2);
        assert_eq!(a.first_op_after_heal_ms, Some(300.0));
        assert_eq!(a.first_write_after_heal_ms, Some(600.0));
        assert!((a.ops_per_s_during - 1.0).abs() < 1e-9);
    }
}

#[cfg(test)]
mod probe_tests {
    use super::HealProbe;

    #[test]
    fn a_probe_summary_names_the_first_and_the_last_member() {
        let p = HealProbe::of(&[Some(30_000), Some(10_000), Some(20_000)]);
        assert_eq!((p.first_ms, p.all_ms), (Some(10.0), Some(30.0)));
        let p = HealProbe::of(&[Some(30_000), None, Some(20_000)]);
        assert_eq!((p.first_ms, p.all_ms), (Some(20.0), None));
    }
}
