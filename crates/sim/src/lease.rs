//! The lease checkers: what the simulated lease clients were told, held against when each
//! lease's key was deleted. Like [`crate::checkers`], they take plain observations, so each is
//! fed planted bad input in its own tests.
//!
//! A lease client grants a lease, attaches its own key to it, renews it a few times through
//! random members, then stops renewing. What etcd's users rely on, and what is checked:
//!
//! - **never early** ([`check_leases`]): a lease's key is not deleted before `s + TTL` for any
//!   grant or renewal sent at `s` and acknowledged, with `TTL` as measured by the fastest
//!   clock of the run (clock drift is part of the fault profile: each node's clock runs at its
//!   own rate). Whatever happens to the leader in between: crashes, pauses, partitions, leader
//!   changes, snapshots.
//! - **not late** ([`check_leases`]): once the faults are healed, a lease that is no longer
//!   renewed is deleted within `TTL` (by the slowest clock) plus a bound made of the promotion
//!   extension, the checkpoint interval and the time to elect a leader and commit, counted from
//!   its last renewal or from the healing, whichever is later.
//! - **one revision** ([`LeaseDeletions::on_delete`]): every member deletes a lease's key at
//!   the same revision.

use std::collections::BTreeMap;

use tenure_kv::{
    Command, Error, EventKind, LeaseGrantRequest, LeaseRenewRequest, PutRequest, Response,
    RevisionEvents,
};
use tenure_raft::NodeId;
use tenure_replica::{Answer, ClientError, Completion, RequestId};

use crate::checkers::Violation;
use crate::outstanding::Outstanding;
use crate::rng::SimRng;
use crate::world::Millis;

/// What a lease client did with one lease and what it saw happen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The lease id.
    pub id: i64,
    /// The TTL granted, in milliseconds.
    pub ttl_ms: u64,
    /// When each acknowledged grant or renewal was sent.
    pub acknowledged: Vec<Millis>,
    /// When the last grant or renewal was sent, acknowledged or not (it may still apply).
    pub last_sent: Millis,
    /// When a node first applied the deletion of the lease's key, if it was deleted.
    pub deleted_at: Option<Millis>,
}

/// The clock and timing bounds the checks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseBounds {
    /// The fastest clock's rate against true time, as `(nominal, actual)` tick lengths: a TTL
    /// of `t` ms lasts at least `t * fastest.1 / fastest.0` ms of true time.
    pub fastest: (u64, u64),
    /// The slowest clock's rate, the same way.
    pub slowest: (u64, u64),
    /// When every fault was healed (the liveness phase began).
    pub healed_at: Millis,
    /// How late past `TTL` an unrenewed lease may go once faults are healed.
    pub late_ms: Millis,
}

/// Checks that no lease's key was deleted early, and none that was deleted was deleted late.
pub fn check_leases(records: &[LeaseRecord], bounds: &LeaseBounds) -> Result<(), Violation> {
    for r in records {
        let Some(deleted_at) = r.deleted_at else { continue };
        let shortest_ttl = r.ttl_ms * bounds.fastest.1 / bounds.fastest.0;
        if let Some(&sent) = r.acknowledged.iter().max()
            && deleted_at < sent + shortest_ttl
        {
            return Err(Violation {
                property: "lease expired early",
                detail: format!(
                    "lease {} (TTL {} ms) lost its key at {deleted_at}ms, but a renewal sent at \
                     {sent}ms was acknowledged: it was live until at least {}ms",
                    r.id,
                    r.ttl_ms,
                    sent + shortest_ttl
                ),
            });
        }
        let longest_ttl = r.ttl_ms * bounds.slowest.1 / bounds.slowest.0;
        let from = r.last_sent.max(bounds.healed_at);
        let latest = from + longest_ttl + bounds.late_ms;
        if deleted_at > latest {
            return Err(Violation {
                property: "lease expired late",
                detail: format!(
                    "lease {} (TTL {} ms) lost its key at {deleted_at}ms, after {latest}ms: \
                     last renewal sent at {}ms, faults healed at {}ms, allowance {} ms",
                    r.id, r.ttl_ms, r.last_sent, bounds.healed_at, bounds.late_ms
                ),
            });
        }
    }
    Ok(())
}

/// The revision at which each lease's key was deleted, as each node applied it.
#[derive(Debug, Default)]
pub struct LeaseDeletions {
    by_lease: BTreeMap<i64, (u64, i64)>,
}

impl LeaseDeletions {
    /// Node `node` applied the deletion of lease `id`'s key at `revision`.
    pub fn on_delete(&mut self, node: u64, id: i64, revision: i64) -> Result<(), Violation> {
        match self.by_lease.get(&id) {
            None => {
                self.by_lease.insert(id, (node, revision));
                Ok(())
            }
            Some(&(first, at)) if at != revision => Err(Violation {
                property: "lease keys deleted at one revision",
                detail: format!(
                    "lease {id}'s key was deleted at revision {at} on n{first} but at \
                     {revision} on n{node}"
                ),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// The lease clients of a run (see [`crate::world::Profile::leases`]): each grants a lease of
/// [`LEASE_TTL_S`], attaches its key `l/<id>` to it, renews it a few times through random
/// members, then lets it expire and starts the next one, up to [`LEASES_PER_CLIENT`].
#[derive(Debug, Default)]
pub(crate) struct LeaseWorkload {
    clients: Vec<LeaseClient>,
    records: BTreeMap<i64, LeaseRecord>,
    deletions: LeaseDeletions,
    requests: Outstanding,
    /// Renewals acknowledged without a log entry (the leader's renewals after a heartbeat
    /// round; a renewal through the log names its entry).
    pub(crate) renewed_without_log: u64,
}

/// The TTL the lease clients ask for, in seconds (etcd's TTLs are whole seconds).
pub const LEASE_TTL_S: i64 = 1;
/// Leases each client goes through in a run.
pub const LEASES_PER_CLIENT: i64 = 4;
/// A request not answered within this long is given up (its effect is unknown).
const LEASE_REQUEST_PATIENCE_MS: Millis = 500;

#[derive(Debug, Default)]
struct LeaseClient {
    state: LeaseState,
    /// The current lease.
    lease: i64,
    /// Leases started so far.
    started: i64,
    /// Renewals left before the client lets the lease go.
    renewals_left: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LeaseState {
    #[default]
    Idle,
    Granting,
    Attaching,
    Renewing,
}

impl LeaseWorkload {
    pub(crate) fn new(clients: usize) -> LeaseWorkload {
        LeaseWorkload {
            clients: (0..clients).map(|_| LeaseClient::default()).collect(),
            requests: Outstanding::new(LEASE_REQUEST_BASE, clients),
            ..LeaseWorkload::default()
        }
    }

    /// Client `c`'s next request, if it has one to send now; `stop` once the run no longer
    /// renews or grants. The caller proposes it on `node` (or drops it if it cannot).
    pub(crate) fn step(
        &mut self,
        c: usize,
        node: NodeId,
        now: Millis,
        stop: bool,
        rng: &mut SimRng,
    ) -> Option<(RequestId, Command)> {
        if stop || self.requests.waiting(c, now, LEASE_REQUEST_PATIENCE_MS) {
            return None;
        }
        let client = &mut self.clients[c];
        let command = match client.state {
            LeaseState::Idle => {
                if client.started >= LEASES_PER_CLIENT {
                    return None;
                }
                client.started += 1;
                client.lease = (c as i64 + 1) * 1_000 + client.started;
                client.renewals_left = rng.range(0, 6);
                client.state = LeaseState::Granting;
                self.records.insert(
                    client.lease,
                    LeaseRecord {
                        id: client.lease,
                        ttl_ms: LEASE_TTL_S as u64 * 1_000,
                        ..LeaseRecord::default()
                    },
                );
                Command::LeaseGrant(LeaseGrantRequest { id: client.lease, ttl: LEASE_TTL_S })
            }
            LeaseState::Granting => {
                Command::LeaseGrant(LeaseGrantRequest { id: client.lease, ttl: LEASE_TTL_S })
            }
            LeaseState::Attaching => {
                let mut put = PutRequest::new(format!("l/{}", client.lease), "leased");
                put.lease = client.lease;
                Command::Put(put)
            }
            LeaseState::Renewing => Command::LeaseRenew(LeaseRenewRequest { id: client.lease }),
        };
        if matches!(command, Command::LeaseGrant(_) | Command::LeaseRenew(_)) {
            let record = self.records.get_mut(&client.lease).expect("recorded at grant");
            record.last_sent = now;
        }
        Some((self.requests.send(c, node, now), command))
    }

    /// Whether `req` on `node` is a lease client's request.
    pub(crate) fn owns(&self, node: NodeId, req: RequestId) -> bool {
        self.requests.owns(node, req)
    }

    /// A lease client's request completed.
    pub(crate) fn complete(&mut self, node: NodeId, completion: &Completion, rng: &mut SimRng) {
        let Some((c, sent_at)) = self.requests.take(node, completion.id) else { return };
        let client = &mut self.clients[c];
        let record = self.records.get_mut(&client.lease).expect("recorded at grant");
        let not_found = Err(ClientError::Kv(Error::LeaseNotFound));
        match (&completion.result, client.state) {
            (Ok(Answer::Write(Response::LeaseGrant(_))), LeaseState::Granting) => {
                record.acknowledged.push(sent_at);
                client.state = LeaseState::Attaching;
            }
            // An earlier attempt of ours was applied: granted, but not acknowledged to us.
            (Err(ClientError::Kv(Error::LeaseExists)), LeaseState::Granting) => {
                client.state = LeaseState::Attaching;
            }
            (Ok(Answer::Write(Response::Put(_))), LeaseState::Attaching) => {
                client.state =
                    if client.renewals_left == 0 { LeaseState::Idle } else { LeaseState::Renewing };
            }
            (Ok(Answer::Write(Response::LeaseRenew(_))), LeaseState::Renewing) => {
                record.acknowledged.push(sent_at);
                if completion.entry.is_none() {
                    self.renewed_without_log += 1;
                }
                client.renewals_left -= 1;
                if client.renewals_left == 0 {
                    client.state = LeaseState::Idle;
                }
            }
            (result, LeaseState::Attaching | LeaseState::Renewing) if *result == not_found => {
                client.state = LeaseState::Idle;
            }
            // Failed: try again at the next step (a grant may give up and start over).
            _ => {
                if client.state == LeaseState::Granting && rng.chance(0.3) {
                    client.state = LeaseState::Idle;
                }
            }
        }
    }

    /// Events node `node` applied at `now`: deletions of lease keys.
    pub(crate) fn on_events(
        &mut self,
        node: NodeId,
        events: &[RevisionEvents],
        now: Millis,
    ) -> Result<(), Violation> {
        for rev in events {
            for e in &rev.events {
                if e.kind != EventKind::Delete {
                    continue;
                }
                let Some(id) = e.kv.key.strip_prefix(b"l/") else { continue };
                let Some(id) = std::str::from_utf8(id).ok().and_then(|s| s.parse::<i64>().ok())
                else {
                    continue;
                };
                self.deletions.on_delete(node.0, id, rev.revision)?;
                if let Some(r) = self.records.get_mut(&id) {
                    r.deleted_at = Some(r.deleted_at.map_or(now, |d| d.min(now)));
                }
            }
        }
        Ok(())
    }

    /// Every lease's record, in id order.
    pub(crate) fn records(&self) -> Vec<LeaseRecord> {
        self.records.values().cloned().collect()
    }
}

/// Request ids of the lease clients start here (between the watch workload's and the
/// scripted ones).
pub(crate) const LEASE_REQUEST_BASE: u64 = 3 << 60;

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> LeaseBounds {
        LeaseBounds { fastest: (10, 9), slowest: (10, 11), healed_at: 2_000, late_ms: 1_000 }
    }

    fn record(
        acknowledged: &[Millis],
        last_sent: Millis,
        deleted_at: Option<Millis>,
    ) -> LeaseRecord {
        LeaseRecord {
            id: 7,
            ttl_ms: 1_000,
            acknowledged: acknowledged.to_vec(),
            last_sent,
            deleted_at,
        }
    }

    #[test]
    fn a_key_deleted_after_every_acknowledged_renewal_ran_out_passes() {
        // Shortest TTL by the fastest clock: 900 ms.
        let r = record(&[0, 300, 600], 600, Some(1_500));
        assert_eq!(check_leases(&[r], &bounds()), Ok(()));
        // Never deleted (the run ended with it still renewed): nothing to say here.
        assert_eq!(check_leases(&[record(&[0], 0, None)], &bounds()), Ok(()));
    }

    #[test]
    fn a_key_deleted_while_an_acknowledged_renewal_is_live_is_an_early_expiry() {
        let r = record(&[0, 300, 600], 600, Some(1_400));
        let v = check_leases(&[r], &bounds()).unwrap_err();
        assert_eq!(v.property, "lease expired early");
        assert!(v.detail.contains("600ms"), "{}", v.detail);
    }

    #[test]
    fn an_unacknowledged_renewal_does_not_protect_a_lease() {
        // The renewal sent at 900 may or may not have applied: deleting at 1,600 is allowed.
        let r = record(&[0, 600], 900, Some(1_600));
        assert_eq!(check_leases(&[r], &bounds()), Ok(()));
    }

    #[test]
    fn a_key_deleted_long_after_healing_is_a_late_expiry() {
        // Last sent at 600, healed at 2,000: due by 2,000 + 1,100 + 1,000.
        assert_eq!(check_leases(&[record(&[0, 600], 600, Some(4_100))], &bounds()), Ok(()));
        let v = check_leases(&[record(&[0, 600], 600, Some(4_101))], &bounds()).unwrap_err();
        assert_eq!(v.property, "lease expired late");
        // Renewed after healing: counted from the renewal.
        let r = record(&[0, 2_500], 2_500, Some(4_601));
        assert_eq!(check_leases(&[r], &bounds()).unwrap_err().property, "lease expired late");
    }

    #[test]
    fn nodes_deleting_a_lease_key_at_different_revisions_are_caught() {
        let mut d = LeaseDeletions::default();
        d.on_delete(1, 7, 10).unwrap();
        d.on_delete(2, 7, 10).unwrap();
        d.on_delete(1, 8, 12).unwrap();
        let v = d.on_delete(3, 7, 11).unwrap_err();
        assert_eq!(v.property, "lease keys deleted at one revision");
    }
}
