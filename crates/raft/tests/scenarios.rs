//! Scenario scripts: each file in `tests/scenarios/` is a script of commands with the trace
//! they must produce, one per seed behaviour (S1-S9, S11, S12; S6 at all five crash points, S11
//! (catch-up from a snapshot) at six: behind, crashes, leader changes, races, divergence). Run
//! with `REWRITE=1` to regenerate after reviewing the diff. S7 (deduplicated retries) is a
//! property of the state machine's client sessions and is tested in `tenure-kv` and the
//! simulator.

use std::fmt::Write as _;
use std::path::Path;

/// Runs a script file and compares the output with the file; with `REWRITE=1` in the
/// environment, writes the output over the file instead (review the diff before committing).
fn check(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(name);
    let script =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let got = tenure_raft::testkit::run_script(&script);
    if std::env::var("REWRITE").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &got).expect("rewrite script");
        return;
    }
    if got != script {
        let mut diff = String::new();
        for (i, (a, b)) in script.lines().zip(got.lines()).enumerate() {
            if a != b {
                let _ = writeln!(diff, "line {}:\n  expected: {a}\n  got:      {b}", i + 1);
            }
        }
        let (want, have) = (script.lines().count(), got.lines().count());
        let _ = writeln!(diff, "(expected {want} lines, got {have})");
        panic!("scenario {name} differs; run with REWRITE=1 to accept after reviewing\n{diff}");
    }
}

#[test]
fn s12_reads_are_linearizable() {
    check("s12_reads_are_linearizable.txt");
}

#[test]
fn s1_term_is_a_logical_clock() {
    check("s1_term_is_a_logical_clock.txt");
}

#[test]
fn s2_one_leader_per_term() {
    check("s2_one_leader_per_term.txt");
}

#[test]
fn s3_vote_only_for_up_to_date_log() {
    check("s3_vote_only_for_up_to_date_log.txt");
}

#[test]
fn s4_term_changes_on_leader_crash() {
    check("s4_term_changes_on_leader_crash.txt");
}

#[test]
fn s5_data_flows_only_from_leader() {
    check("s5_data_flows_only_from_leader.txt");
}

#[test]
fn s6a_leader_crash_before_replicating() {
    check("s6a_leader_crash_before_replicating.txt");
}

#[test]
fn s6b_leader_crash_after_replicating_to_minority() {
    check("s6b_leader_crash_after_replicating_to_minority.txt");
}

#[test]
fn s6c_leader_crash_after_replicating_to_all() {
    check("s6c_leader_crash_after_replicating_to_all.txt");
}

#[test]
fn s6d_leader_crash_after_commit_before_followers_learn() {
    check("s6d_leader_crash_after_commit_before_followers_learn.txt");
}

#[test]
fn s6e_leader_crash_after_commit_everywhere() {
    check("s6e_leader_crash_after_commit_everywhere.txt");
}

#[test]
fn s8_split_brain_cannot_commit_twice() {
    check("s8_split_brain_cannot_commit_twice.txt");
}

#[test]
fn s9_rejoining_node_does_not_disrupt() {
    check("s9_rejoining_node_does_not_disrupt.txt");
}

#[test]
fn s9_without_prevote_rejoining_node_disrupts() {
    check("s9_without_prevote_rejoining_node_disrupts.txt");
}

#[test]
fn s11a_follower_behind_compacted_log_gets_snapshot() {
    check("s11a_follower_behind_compacted_log_gets_snapshot.txt");
}

#[test]
fn s11b_follower_crash_during_snapshot_install() {
    check("s11b_follower_crash_during_snapshot_install.txt");
}

#[test]
fn s11c_leader_crash_during_snapshot_transfer() {
    check("s11c_leader_crash_during_snapshot_transfer.txt");
}

#[test]
fn s11d_leader_change_during_snapshot_transfer() {
    check("s11d_leader_change_during_snapshot_transfer.txt");
}

#[test]
fn s11e_snapshot_races_newer_appends() {
    check("s11e_snapshot_races_newer_appends.txt");
}

#[test]
fn s11f_divergent_follower_gets_snapshot_and_drops_conflicts() {
    check("s11f_divergent_follower_gets_snapshot_and_drops_conflicts.txt");
}
