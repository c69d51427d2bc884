//! The lease read mode assumes bounded clock drift; a paused process breaks that assumption
//! (its clock stops while the others elect a new leader). With leases and pauses together, the
//! simulator must catch the stale reads this causes: a linearizability violation. This shows
//! both the checker's reach and why leases are an option, not the default.

use tenure_sim::run::run_seed_with;
use tenure_sim::world::{Failure, Profile};

#[test]
fn lease_reads_with_process_pauses_are_caught_as_stale_reads() {
    let mut found = Vec::new();
    for seed in 0..3000 {
        let mut p = Profile::swarm(seed);
        if p.nodes < 3 {
            continue;
        }
        p.lease_reads = true;
        p.pause_every = Some(150);
        p.crash_every = None;
        let r = run_seed_with(seed, p, false, |_| {});
        if let Some(f) = r.failure {
            found.push((seed, f));
            break;
        }
    }
    eprintln!("{found:?}");
    assert!(
        found.iter().any(|(_, f)| matches!(f, Failure::Safety(m) if m.contains("linearizable"))),
        "no stale read found: {found:?}"
    );
}
