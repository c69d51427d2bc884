//! Two reports of the same schedule side by side: tenure and etcd 3.4 (issue 18's goal: at
//! least as many completed operations, and a first success after every heal within two
//! election timeouts). Targets such as "the leader" may name different members in the two
//! runs; the planned fault is the same.

use std::fmt::Write as _;

use crate::report::Report;

/// Completed (decided) operations of a report's workload, final reads and probes left out.
pub fn completed_ops(report: &Report) -> usize {
    report.totals.workload_completed
}

/// How many heals were followed by an acknowledged probe write within two election timeouts.
pub fn heals_within_two_elections(report: &Report) -> usize {
    let bound = 2.0 * report.election_ms as f64;
    report.faults.iter().filter(|f| f.heal_probe.first_ms.is_some_and(|ms| ms <= bound)).count()
}

/// The side-by-side table of `a` and `b` (same seed and schedule).
pub fn side_by_side(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "seed {}, {:.0} s, {} clients on {} keys: {} against {}",
        a.seed, a.duration_s, a.clients, a.keys, a.flavor, b.flavor
    );
    let _ = writeln!(
        s,
        "  {:<36} {:>12} {:>12} {:>16} {:>16}",
        "fault (planned)",
        format!("{} ops", a.flavor),
        format!("{} ops", b.flavor),
        format!("{} probe", a.flavor),
        format!("{} probe", b.flavor)
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    for (fa, fb) in a.faults.iter().zip(&b.faults) {
        let _ = writeln!(
            s,
            "  {:<36} {:>12} {:>12} {:>16} {:>16}",
            fa.planned,
            fa.availability.ops_during,
            fb.availability.ops_during,
            ms(fa.heal_probe.first_ms),
            ms(fb.heal_probe.first_ms)
        );
    }
    let _ = writeln!(
        s,
        "  {:<36} {:>12} {:>12}",
        "completed ops, whole run",
        completed_ops(a),
        completed_ops(b)
    );
    let _ = writeln!(
        s,
        "  {:<36} {:>12} {:>12}",
        "heals with a write within 2 elections",
        format!("{}/{}", heals_within_two_elections(a), a.faults.len()),
        format!("{}/{}", heals_within_two_elections(b), b.faults.len())
    );
    let _ = writeln!(s, "  {:<36} {:>12} {:>12}", "anomalies", a.anomalies, b.anomalies);
    s
}
