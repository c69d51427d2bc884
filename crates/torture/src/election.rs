//! Kubernetes-shaped leader election: candidates contend for one Lease object
//! (`/registry/leases/kube-system/torture-elector`), created only where absent
//! (`create_revision == 0`) and renewed by CAS on its `mod_revision`, attached to an etcd lease
//! with a TTL that the holder keeps alive; a holder lets go by deleting it (CAS) or by letting
//! its etcd lease expire. Recorded for [`check_election`].
//!
//! What a holder may believe, as a client can know it: it leads from the acknowledgement of
//! its create until the send time of its latest acknowledged keep-alive (or of the grant) plus
//! [`RENEW_DEADLINE`], shorter than the TTL, and no longer once it sends its delete or a renewal
//! CAS fails. The key cannot vanish before that keep-alive's send time plus the TTL (lease
//! safety), nor be taken while it exists (the create's compare), so two holders' belief
//! intervals never overlap in real time: the checker fails if they do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use serde::Serialize;
use tenure_sim::rng::SimRng;

use crate::check::Verdict;
use crate::workload::Recorder;

/// The Lease object's key.
pub const KEY: &str = "/registry/leases/kube-system/torture-elector";
/// The etcd lease's TTL, in seconds.
pub const TTL_S: i64 = 3;
/// How long after a renewal's send time a holder still believes it leads (under the TTL).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(2);
/// How often a holder renews.
pub const RENEW_EVERY: Duration = Duration::from_millis(500);

/// One term of one candidate, as it believed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Term {
    /// The candidate.
    pub client: u64,
    /// When its create was acknowledged (µs since the run began): it leads from here.
    pub from_us: u64,
    /// When it stopped believing it leads (µs): its last renewal's send time plus
    /// [`RENEW_DEADLINE`], or the send time of its delete or of a renewal that failed, if
    /// earlier.
    pub until_us: u64,
    /// The revision its create was written at.
    pub revision: i64,
    /// Renewals acknowledged (keep-alive and CAS both).
    pub renewals: usize,
}

/// Every term of every candidate.
pub type ElectionLog = Vec<Term>;

/// A candidate: tries to create the Lease object, holds it for 1 to 5 s renewing it, then lets
/// go (half the time by deleting it, half by letting its etcd lease expire), until `stop`.
pub async fn run_candidate(
    id: u64,
    members: Vec<Client>,
    seed: u64,
    op_timeout: Duration,
    recorder: Arc<Recorder>,
    log: Arc<Mutex<ElectionLog>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SimRng::new(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xE1EC7);
    let mut members = members;
    let n = members.len() as u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
        let m = rng.range(0, n) as usize;
        let granted_us = recorder.now_us();
        let grant = tokio::time::timeout(op_timeout, members[m].lease_grant(TTL_S, None)).await;
        let Ok(Ok(grant)) = grant else { continue };
        let lease = grant.id();
        let create =
            Txn::new().when([Compare::create_revision(KEY, CompareOp::Equal, 0)]).and_then([
                TxnOp::put(KEY, format!("holder=c{id}"), Some(PutOptions::new().with_lease(lease))),
            ]);
        let m = rng.range(0, n) as usize;
        let created = tokio::time::timeout(op_timeout, members[m].txn(create)).await;
        let revision = match created {
            Ok(Ok(r)) if r.succeeded() => r.header().map_or(0, |h| h.revision()),
            _ => {
                // Held by another, or unknown: this lease is not needed.
                let _ = tokio::time::timeout(op_timeout, members[m].lease_revoke(lease)).await;
                continue;
            }
        };
        let from_us = recorder.now_us();
        let deadline = RENEW_DEADLINE.as_micros() as u64;
        let mut term =
            Term { client: id, from_us, until_us: granted_us + deadline, revision, renewals: 0 };
        let mut mod_revision = revision;
        let hold_until = from_us + rng.range(1_000_000, 5_000_001);
        let mut lost = false;
        while recorder.now_us() < hold_until && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(RENEW_EVERY).await;
            let sent = recorder.now_us();
            if sent >= term.until_us {
                lost = true; // past its deadline: it no longer believes it leads
                break;
            }
            let m = rng.range(0, n) as usize;
            let kept = async {
                let (mut keeper, mut stream) = members[m].lease_keep_alive(lease).await.ok()?;
                keeper.keep_alive().await.ok()?;
                let answer = stream.message().await.ok()??;
                (answer.ttl() > 0).then_some(())
            };
            if tokio::time::timeout(op_timeout, kept).await.ok().flatten().is_none() {
                continue; // tried again next round, while its deadline lasts
            }
            let renew = Txn::new()
                .when([Compare::mod_revision(KEY, CompareOp::Equal, mod_revision)])
                .and_then([TxnOp::put(
                    KEY,
                    format!("holder=c{id}"),
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            match tokio::time::timeout(op_timeout, members[m].txn(renew)).await {
                Ok(Ok(r)) if r.succeeded() => {
                    mod_revision = r.header().map_or(mod_revision, |h| h.revision());
                    term.until_us = sent + deadline;
                    term.renewals += 1;
                }
                Ok(Ok(_)) => {
                    // The object changed under it: it is no longer the holder.
                    term.until_us = term.until_us.min(sent);
                    lost = true;
                    break;
                }
                _ => {} // unknown: its deadline decides
            }
        }
        if !lost && rng.chance(0.5) {
            let sent = recorder.now_us();
            term.until_us = term.until_us.min(sent);
            let delete = Txn::new()
                .when([Compare::mod_revision(KEY, CompareOp::Equal, mod_revision)])
                .and_then([TxnOp::delete(KEY, None)]);
            let m = rng.range(0, n) as usize;
            let _ = tokio::time::timeout(op_timeout, members[m].txn(delete)).await;
        } else {
            // Let the etcd lease expire; it believes it leads until its deadline at most.
            term.until_us = term.until_us.min(recorder.now_us().max(term.from_us));
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).push(term);
    }
}

/// Checks that no two candidates believed they led at the same time.
pub fn check_election(log: &ElectionLog) -> Verdict {
    const NAME: &str = "leader election";
    let mut terms: Vec<&Term> = log.iter().collect();
    terms.sort_by_key(|t| t.from_us);
    let mut problems = Vec::new();
    for (k, t) in terms.iter().enumerate() {
        for u in terms[k + 1..].iter().take_while(|u| u.from_us < t.until_us) {
            if u.client != t.client {
                problems.push(format!(
                    "c{} led from {:.3} s (revision {}) while c{} still did until {:.3} s \
                     (revision {})",
                    u.client,
                    u.from_us as f64 / 1e6,
                    u.revision,
                    t.client,
                    t.until_us as f64 / 1e6,
                    t.revision
                ));
            }
        }
    }
    let revisions_unique = {
        let mut r: Vec<i64> = terms.iter().map(|t| t.revision).collect();
        r.sort_unstable();
        r.windows(2).all(|w| w[0] != w[1])
    };
    if !revisions_unique {
        problems.push("two terms were created at one revision".to_string());
    }
    if problems.is_empty() {
        let renewals: usize = terms.iter().map(|t| t.renewals).sum();
        let handovers = terms.windows(2).filter(|w| w[0].client != w[1].client).count();
        Verdict::pass(
            NAME,
            format!(
                "{} terms, {renewals} renewals, {handovers} handovers between candidates, no two \
                 leaders at once",
                terms.len()
            ),
        )
    } else {
        Verdict::fail(NAME, format!("{} problems: {}", problems.len(), problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Outcome;

    fn term(client: u64, from_us: u64, until_us: u64, revision: i64) -> Term {
        Term { client, from_us, until_us, revision, renewals: 1 }
    }

    #[test]
    fn terms_one_after_another_pass() {
        let log =
            vec![term(0, 1_000, 5_000, 3), term(1, 6_000, 9_000, 10), term(0, 9_500, 12_000, 14)];
        let v = check_election(&log);
        assert_eq!(v.outcome, Outcome::Pass, "{}", v.detail);
        assert!(v.detail.contains("3 terms") && v.detail.contains("2 handovers"), "{}", v.detail);
    }

    #[test]
    fn two_leaders_at_once_fail() {
        let log = vec![term(0, 1_000, 5_000, 3), term(1, 4_000, 9_000, 10)];
        let v = check_election(&log);
        assert_eq!(v.outcome, Outcome::Fail, "{}", v.detail);
        assert!(v.detail.contains("c1 led from 0.004 s"), "{}", v.detail);
        let twice = vec![term(0, 1_000, 2_000, 3), term(1, 3_000, 4_000, 3)];
        assert_eq!(check_election(&twice).outcome, Outcome::Fail);
    }
}
