//! Proof that the simulator can fail: with a known protocol bug planted in the core through a
//! test-only hook (the `planted-bugs` feature, never in release builds), the simulator must
//! find it within a bounded number of seeds; without the bug, the same seeds pass.

use tenure_replica::ReplicaConfig;
use tenure_sim::run::run_seed_with;
use tenure_sim::world::{Failure, Profile};

const SEEDS: u64 = 40;

fn failures(hook: fn(&mut ReplicaConfig)) -> Vec<(u64, Failure)> {
    (0..SEEDS)
        .filter_map(|seed| {
            let r = run_seed_with(seed, Profile::swarm(seed), false, hook);
            r.failure.map(|f| (seed, f))
        })
        .collect()
}

#[test]
fn simulator_finds_a_vote_granted_to_an_out_of_date_log_within_40_seeds() {
    let found = failures(|c| c.raft.planted_bugs.vote_ignores_log = true);
    assert!(!found.is_empty(), "the planted S3 bug went unnoticed in {SEEDS} seeds");
    assert!(
        found.iter().all(|(_, f)| matches!(f, Failure::Safety(_))),
        "the bug shows as a safety failure: {found:?}"
    );
}

#[test]
fn the_same_seeds_pass_without_the_bug() {
    let found = failures(|_| {});
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn liveness_phase_fails_a_cluster_that_cannot_elect_in_time() {
    // Election timeouts far beyond the liveness bound: after healing, no leader emerges and
    // the clients' requests never complete, which the liveness phase must report.
    let profile = Profile { clients: 2, ..Profile::quiet(3) };
    let r = run_seed_with(1, profile, false, |c| c.raft.election_ticks = 100_000);
    assert!(matches!(r.failure, Some(Failure::Liveness(_))), "{:?}", r.failure);
}

/// Swarm profiles with the server's request ids (restarting at 1 in every run), frequent
/// crashes, partitions and long message delays, so that entries an earlier run proposed are
/// committed late and meet requests of a later run that reuse their ids (issue 11: "an entry
/// its previous incarnation proposed, forwarded to the leader, committed late").
fn restarting_ids(seed: u64) -> Profile {
    let p = Profile::swarm(seed);
    Profile {
        restart_request_ids: true,
        crash_every: Some(200),
        partition_every: Some(150),
        long_delay: 0.2,
        drop: 0.05,
        clients: 8,
        nodes: p.nodes.max(3),
        ..p
    }
}

fn failures_in(profile: fn(u64) -> Profile, hook: fn(&mut ReplicaConfig)) -> Vec<(u64, Failure)> {
    (0..ID_REUSE_SEEDS)
        .filter_map(|seed| {
            let r = run_seed_with(seed, profile(seed), false, hook);
            r.failure.map(|f| (seed, f))
        })
        .collect()
}

const ID_REUSE_SEEDS: u64 = 200;

#[test]
fn simulator_finds_an_answer_from_an_earlier_runs_entry_when_incarnations_are_ignored() {
    let found =
        failures_in(restarting_ids, |c| c.planted_bugs.completion_ignores_incarnation = true);
    assert!(!found.is_empty(), "the planted id-reuse bug went unnoticed in {ID_REUSE_SEEDS} seeds");
    assert!(
        found.iter().any(|(_, f)| matches!(f, Failure::Safety(v) if v.contains("own entry"))),
        "the bug shows as a wrong answer: {found:?}"
    );
}

#[test]
fn the_same_restarting_id_seeds_pass_with_incarnations() {
    let found = failures_in(restarting_ids, |_| {});
    assert!(found.is_empty(), "{found:?}");
}

/// Swarm profiles with lease clients, frequent pauses and crashes: a paused process applies
/// what it received before its clock moves.
fn leasing(seed: u64) -> Profile {
    let p = Profile::swarm(seed);
    Profile {
        leases: true,
        pause_every: Some(300),
        crash_every: Some(500),
        lease_reads: false,
        nodes: p.nodes.max(3),
        ..p
    }
}

#[test]
fn simulator_finds_leases_cut_short_when_deadlines_start_at_the_last_tick() {
    let found = failures_in(leasing, |c| c.planted_bugs.lease_deadline_from_last_tick = true);
    assert!(
        found.iter().any(|(_, f)| matches!(f, Failure::Safety(v) if v.contains("expired early"))),
        "the planted lease-clock bug went unnoticed in {ID_REUSE_SEEDS} seeds: {found:?}"
    );
    let clean = failures_in(leasing, |_| {});
    assert!(clean.is_empty(), "the same seeds fail without the bug: {clean:?}");
    // The leader's renewals without the log, and followers' renewals it took without a
    // heartbeat round, are part of what those seeds check.
    let (without_log, without_round) = (0..ID_REUSE_SEEDS)
        .map(|seed| run_seed_with(seed, leasing(seed), false, |_| {}))
        .fold((0, 0), |(l, r), s| {
            (l + s.lease_renewals_without_log, r + s.lease_renewals_without_round)
        });
    assert!(without_log > 0, "no renewal was answered without the log in {ID_REUSE_SEEDS} seeds");
    assert!(without_round > 0, "no renewal was taken without a round in {ID_REUSE_SEEDS} seeds");
}

/// Lease clients, crashes, and disks that fill up for a while: a leader whose disk is full
/// still confirms its leadership with heartbeats and renews leases without the log, while its
/// records of those renewals cannot be written, so a new leader's own deadlines fall behind.
fn leasing_on_full_disks(seed: u64) -> Profile {
    let p = Profile::disk_full(seed);
    Profile { leases: true, crash_every: Some(500), lease_reads: false, nodes: p.nodes.max(3), ..p }
}

#[test]
fn simulator_finds_leases_cut_short_when_a_new_leader_keeps_deadlines_renewed_without_the_log() {
    // The leader answers renewals of a renewed lease after a heartbeat round, without the log;
    // a new leader that measured the lease from its last entry (not from its own promotion)
    // can expire it before a renewal the old leader acknowledged has run out. The promotion
    // extension hides this while the old leader's records of its renewals keep committing.
    let hook = |c: &mut ReplicaConfig| c.planted_bugs.promotion_keeps_lease_deadlines = true;
    let found = failures_in(leasing_on_full_disks, hook);
    assert!(
        found.iter().any(|(_, f)| matches!(f, Failure::Safety(v) if v.contains("expired early"))),
        "the planted promotion bug went unnoticed in {ID_REUSE_SEEDS} seeds: {found:?}"
    );
    let clean = failures_in(leasing_on_full_disks, |_| {});
    assert!(clean.is_empty(), "the same seeds fail without the bug: {clean:?}");
}
