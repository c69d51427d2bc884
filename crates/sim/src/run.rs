//! Running seeds: one seed is one [`World`] with the swarm profile the seed picks, run through
//! its safety and liveness phases, then its clients' history checked for linearizability.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::auth::AuthCounts;
use crate::history::format_operation;
use crate::linearizability::{CheckResult, check};
use crate::membership::ChurnCounts;

use crate::world::{Failure, Profile, World};

/// The outcome of one seed.
#[derive(Debug)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// Client operations completed.
    pub ops: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Snapshots finished (taken and the log compacted behind them), on all nodes.
    pub snapshots_taken: u64,
    /// Snapshots installed from a leader, on all nodes.
    pub snapshots_installed: u64,
    /// Events delivered to the simulated watchers.
    pub watch_events: u64,
    /// Leases of the lease clients whose key was deleted by expiry.
    pub leases_expired: u64,
    /// Renewals of the lease clients the leader acknowledged without the log.
    pub lease_renewals_without_log: u64,
    /// Followers' renewals leaders took without a heartbeat round.
    pub lease_renewals_without_round: u64,
    /// Guarded writes the lock clients were told took effect.
    pub lock_writes: u64,
    /// What the membership operator did (all zero unless the profile churns members).
    pub churn: ChurnCounts,
    /// Committed entries whose commit quorum was checked.
    pub quorum_checked: u64,
    /// What the auth checker checked (all zero unless the profile runs the auth workload).
    pub auth: AuthCounts,
    /// Disk operations refused for lack of space, on all nodes (zero unless disks fill up).
    pub no_space: u64,
    /// The failure, if any.
    pub failure: Option<Failure>,
    /// The readable trace, when asked for.
    pub trace: Vec<String>,
}

/// Runs one seed. Panics inside the nodes are caught and reported as [`Failure::Crash`].
pub fn run_seed(seed: u64, trace: bool) -> SeedResult {
    run_seed_with(seed, Profile::swarm(seed), trace, |_| {})
}

/// Which profile a seed runs with: the swarm's, or the swarm's with a workload added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProfileKind {
    /// [`Profile::swarm`].
    #[default]
    Swarm,
    /// [`Profile::auth`]: the swarm's with the auth workload and its checker.
    Auth,
    /// [`Profile::disk_full`]: the swarm's with disks that fill up and are freed (issue 18).
    DiskFull,
}

impl ProfileKind {
    /// The profile of `seed`.
    pub fn profile(self, seed: u64) -> Profile {
        match self {
            ProfileKind::Swarm => Profile::swarm(seed),
            ProfileKind::Auth => Profile::auth(seed),
            ProfileKind::DiskFull => Profile::disk_full(seed),
        }
    }
}

/// Runs one seed with the profile `kind` gives it.
pub fn run_seed_kind(seed: u64, kind: ProfileKind, trace: bool) -> SeedResult {
    run_seed_with(seed, kind.profile(seed), trace, |_| {})
}

/// Runs one seed with an explicit profile and configuration hook.
pub fn run_seed_with(
    seed: u64,
    profile: Profile,
    trace: bool,
    configure: fn(&mut tenure_replica::ReplicaConfig),
) -> SeedResult {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut world = World::new(seed, profile, configure);
        if trace {
            world = world.with_trace();
        }
        let outcome = world.run();
        let outcome = outcome.and_then(|()| check_linearizable(&world));
        let counts = (
            world.snapshots_taken,
            world.snapshots_installed,
            world.watch_events_delivered,
            (
                world.leases_expired(),
                world.lease_renewals_without_log(),
                world.lease_renewals_without_round(),
            ),
            world.lock_writes(),
            world.churn(),
            world.quorum_checked(),
            world.auth_counts(),
            world.no_space_count(),
        );
        let trace = world.trace.take().unwrap_or_default();
        (world.ops_done, world.messages_delivered, counts, outcome, trace)
    }));
    match result {
        Ok((
            ops,
            messages,
            (
                snapshots_taken,
                snapshots_installed,
                watch_events,
                (leases_expired, lease_renewals_without_log, lease_renewals_without_round),
                lock_writes,
                churn,
                quorum_checked,
                auth,
                no_space,
            ),
            outcome,
            trace,
        )) => SeedResult {
            seed,
            ops,
            messages,
            snapshots_taken,
            snapshots_installed,
            watch_events,
            leases_expired,
            lease_renewals_without_log,
            lease_renewals_without_round,
            lock_writes,
            churn,
            quorum_checked,
            auth,
            no_space,
            failure: outcome.err(),
            trace,
        },
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            SeedResult {
                seed,
                ops: 0,
                messages: 0,
                snapshots_taken: 0,
                snapshots_installed: 0,
                watch_events: 0,
                leases_expired: 0,
                lease_renewals_without_log: 0,
                lease_renewals_without_round: 0,
                lock_writes: 0,
                churn: ChurnCounts::default(),
                quorum_checked: 0,
                auth: AuthCounts::default(),
                no_space: 0,
                failure: Some(Failure::Crash(msg)),
                trace: vec![],
            }
        }
    }
}

/// Time bound for checking one seed's history.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks the world's client history for linearizability. `Unknown` (time bound hit) is not a
/// failure of the system under test; it is reported in the trace and counted as a pass.
pub fn check_linearizable(world: &World) -> Result<(), Failure> {
    match check(world.history(), CHECK_TIMEOUT) {
        Ok(CheckResult::Linearizable) | Ok(CheckResult::Unknown { .. }) => Ok(()),
        Ok(CheckResult::NotLinearizable(v)) => {
            let history = world.history();
            let name = |i: usize| format_operation(&history[i]);
            Err(Failure::Safety(format!("not linearizable: {}", v.explain(&name))))
        }
        Err(e) => Err(Failure::Safety(format!("malformed history: {e}"))),
    }
}
