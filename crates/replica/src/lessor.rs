//! Lease deadlines on this replica's clock, and the leader's expiry and checkpoint proposals.
//!
//! The store holds the lease table; everything that changes it is a log entry (see
//! `tenure_kv::lease`). Time lives here. Every replica, leader or not, keeps a deadline per
//! lease on its own clock: when it applies the entry that granted, renewed or checkpointed a
//! lease (reported by [`tenure_kv::Store::take_lease_changes`]), the deadline becomes "the next
//! tick's time plus the time that entry left". (The next tick, not the last one: the clock is
//! read only at ticks, and a process that was stopped applies what it received before its
//! clock moves; the simulator found leases cut short that way.) A follower's deadlines are
//! therefore a close copy of the leader's, measured from a moment no earlier than the leader's
//! own apply.
//!
//! Only the leader acts on them:
//! - **Expiry.** Leases past their deadline are revoked by a `LeaseExpire` entry, at most
//!   [`LeaseConfig::expire_batch_max`] per tick, so a mass expiry is spread out and client
//!   writes keep flowing between the batches (etcd revokes at most 1,000 leases a second). Each
//!   expiry names the renewal it measured from; if a renewal reached the log first, the expiry
//!   is ignored when applied, so an acknowledged renewal is never undone.
//! - **Checkpoints.** Every [`LeaseConfig::checkpoint_interval_ms`], the leases not renewed
//!   within the interval get their remaining time written to the log, so a member that did not
//!   see the lease's history (restarted, or restored from a snapshot) continues from it rather
//!   than from the full TTL: a leader change never resets a lease's TTL (etcd issue 13508).
//! - **Renewals without the log.** A lease whose last entry was a renewal (its
//!   [`tenure_kv::Lease::remaining_ms`] is `None`) may be renewed by the leader without an
//!   entry, once a heartbeat round confirms its leadership (the replica runs a ReadIndex for
//!   it), as etcd's leader renews in memory: the deadline restarts, and the next tick records
//!   the renewals of the last tick in one `LeaseRefresh` entry so followers' deadlines follow.
//!   A follower's clients' renewals reach the leader the same way, forwarded as messages
//!   outside the log (`crate::forward`); with two or three voters the follower's message and
//!   the leader are the quorum, and no round is needed (`Replica::quorum_with`).
//!   A granted or checkpointed lease is renewed through the log first (the log knows its time
//!   left exactly, and a new leader relies on that), and so is one with an expiry of its own
//!   under way.
//! - **Promotion.** A replica that becomes leader gives every lease renewed since its last
//!   grant or checkpoint at least its whole TTL from now (the old leader may have renewed it
//!   without the log until it was replaced; etcd's `Promote` does the same), then adds
//!   [`LeaseConfig::promotion_extension_ms`] (the election timeout) to every deadline, as etcd
//!   does: a renewal the old leader acknowledged just before it was replaced is covered even if
//!   this replica measured it late.
//!
//! Why this is safe: a client sent its renewal at `t`. If it was answered through the log, the
//! entry was committed; every replica that applies it later (a future leader included) starts
//! its deadline at its own apply time, which is after `t`. If the leader answered it without
//! the log, a quorum confirmed that leader after the renewal arrived, so any later leader was
//! elected after `t` and starts the lease's whole TTL at its promotion. Either way no replica
//! expires the lease before `t + TTL` on a clock running at the client's rate. Clock-rate drift
//! is what the promotion extension covers. The price, as in etcd: a lease renewed shortly
//! before a leader change may live up to a TTL longer than its last renewal asked.

use std::collections::{BTreeSet, HashMap};

use tenure_kv::{
    Command, LeaseChange, LeaseCheckpoint, LeaseCheckpointRequest, LeaseExpireRequest, LeaseExpiry,
    LeaseRefreshRequest, Store,
};

/// Most lease ids in one `LeaseRefresh` entry (8 bytes each).
const REFRESH_BATCH_MAX: usize = 8192;

/// How the leader expires and checkpoints leases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How often the leader writes the remaining time of leases not renewed within the
    /// interval to the log (etcd's `--experimental-lease-checkpoint-interval`, default 5
    /// minutes). 0 turns checkpoints off.
    pub checkpoint_interval_ms: u64,
    /// Most leases revoked per tick (and per `LeaseExpire` entry); also the most checkpoints
    /// per entry.
    pub expire_batch_max: usize,
    /// Added to every deadline when this replica becomes leader (etcd: the election timeout).
    pub promotion_extension_ms: u64,
    /// An expiry proposed but not applied within this long is proposed again (the entry may
    /// have been lost to a leader change).
    pub retry_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            checkpoint_interval_ms: 5 * 60 * 1000,
            expire_batch_max: 100,
            promotion_extension_ms: 1000,
            retry_ms: 5000,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Deadline {
    /// When the lease expires, on this replica's clock.
    at_ms: u64,
    /// When the entry that set it was applied here.
    set_ms: u64,
}

/// Lease deadlines and the leader's pending proposals.
#[derive(Debug, Default)]
pub(crate) struct Lessor {
    cfg: LeaseConfig,
    deadlines: HashMap<i64, Deadline>,
    /// `(at_ms, id)` of every deadline, to find the expired ones without a scan.
    by_deadline: BTreeSet<(u64, i64)>,
    /// Whether this replica led at the last tick.
    leading: bool,
    /// Leases set by entries applied since the last tick, with the time each had left: their
    /// deadlines start at the next tick. The clock is read only at ticks, so the last tick's
    /// time may be well before the apply (a process stopped and resumed applies what it
    /// received before its clock moves); counting from the next tick never shortens a lease.
    unclocked: HashMap<i64, u64>,
    /// Expiries proposed and not yet applied, with when they were proposed.
    proposed: HashMap<i64, u64>,
    /// When the leader last wrote checkpoints.
    last_checkpoint_ms: u64,
    /// Leases this replica renewed as leader without the log since the last tick, to record
    /// in a `LeaseRefresh` entry at the next one.
    refreshed: BTreeSet<i64>,
    /// Leases revoked by expiry, as applied here.
    pub(crate) expired_total: u64,
    /// Renewals this replica answered as leader without the log.
    pub(crate) renewed_locally_total: u64,
    /// Planted bug: a new leader keeps its own deadlines for leases the old leader may have
    /// renewed without the log.
    #[cfg(feature = "planted-bugs")]
    pub(crate) promotion_keeps_deadlines: bool,
}

impl Lessor {
    pub(crate) fn new(cfg: LeaseConfig) -> Lessor {
        Lessor { cfg, ..Lessor::default() }
    }

    /// Forgets every deadline and starts each lease of `store` afresh from its remaining time
    /// (after a restart or a snapshot install: the lease's history is not known here).
    pub(crate) fn rebuild(&mut self, store: &Store) {
        self.deadlines.clear();
        self.by_deadline.clear();
        self.proposed.clear();
        self.unclocked.clear();
        self.refreshed.clear();
        for lease in store.leases() {
            self.unclocked.insert(lease.id, lease.remaining_ms());
        }
    }

    /// Follows an applied entry's change to a lease; the new deadline counts from the next
    /// tick.
    pub(crate) fn apply(&mut self, change: LeaseChange) {
        match change {
            LeaseChange::Reset { id, remaining_ms } => {
                self.proposed.remove(&id);
                self.unclocked.insert(id, remaining_ms);
            }
            LeaseChange::Ended { id } => {
                self.proposed.remove(&id);
                self.unclocked.remove(&id);
                if let Some(d) = self.deadlines.remove(&id) {
                    self.by_deadline.remove(&(d.at_ms, id));
                }
            }
        }
    }

    fn set(&mut self, id: i64, now_ms: u64, remaining_ms: u64) {
        let d = Deadline { at_ms: now_ms.saturating_add(remaining_ms), set_ms: now_ms };
        if let Some(old) = self.deadlines.insert(id, d) {
            self.by_deadline.remove(&(old.at_ms, id));
        }
        self.by_deadline.insert((d.at_ms, id));
    }

    /// Starts the deadlines of entries applied since the last tick at `now_ms` (a planted
    /// bug when `now_ms` is the last tick's time).
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn clock_now(&mut self, now_ms: u64) {
        let mut unclocked: Vec<(i64, u64)> = self.unclocked.drain().collect();
        unclocked.sort_unstable();
        for (id, remaining_ms) in unclocked {
            self.set(id, now_ms, remaining_ms);
        }
    }

    /// The time lease `id` has left on this replica's clock (0 once past its deadline), if
    /// this replica knows the lease.
    pub(crate) fn remaining_ms(&self, id: i64, now_ms: u64) -> Option<u64> {
        if let Some(&remaining) = self.unclocked.get(&id) {
            return Some(remaining);
        }
        self.deadlines.get(&id).map(|d| d.at_ms.saturating_sub(now_ms))
    }

    /// Whether this replica, as leader, may renew lease `id` without the log now: the lease
    /// says the log does not know its last renewal anyway (`remaining_ms` is `None`, see
    /// [`tenure_kv::Lease::remaining_ms`]), it has time left here, and no expiry of it is
    /// under way. The caller also makes sure that no checkpoint or expiry this leader proposed
    /// is still unapplied, and that its leadership was confirmed after the request arrived.
    pub(crate) fn renewable_locally(&self, id: i64, now_ms: u64, store: &Store) -> bool {
        self.leading
            && store.lease(id).is_some_and(|l| l.remaining_ms.is_none())
            && !self.proposed.contains_key(&id)
            && self.remaining_ms(id, now_ms).is_some_and(|left| left > 0)
    }

    /// Renews lease `id` of `store` without the log: its deadline restarts at the next tick
    /// with its whole TTL, and the next tick records the renewal in a `LeaseRefresh` entry.
    pub(crate) fn renew_locally(&mut self, id: i64, store: &Store) {
        let Some(lease) = store.lease(id) else { return };
        self.unclocked.insert(id, lease.ttl_ms());
        self.refreshed.insert(id);
        self.renewed_locally_total += 1;
    }

    /// Advances to `now_ms`; on the leader, returns the commands to propose: records of the
    /// renewals made without the log, expiries of leases past their deadline and, when due,
    /// checkpoints.
    pub(crate) fn tick(&mut self, now_ms: u64, leader: bool, store: &Store) -> Vec<Command> {
        let mut unclocked: Vec<(i64, u64)> = self.unclocked.drain().collect();
        unclocked.sort_unstable();
        for (id, remaining_ms) in unclocked {
            self.set(id, now_ms, remaining_ms);
        }
        let mut out = Vec::new();
        if leader && !self.leading {
            // Promotion. The old leader may have renewed any lease whose last entry was a
            // renewal without the log, up to the moment this replica was elected: those
            // get at least their whole TTL from now. Then every deadline moves out by the
            // extension, and checkpoints restart their interval from here.
            self.promote(now_ms, store);
            self.shift_all(self.cfg.promotion_extension_ms);
            self.proposed.clear();
            self.last_checkpoint_ms = now_ms;
        }
        self.leading = leader;
        if !leader {
            self.proposed.clear();
            self.refreshed.clear();
            return out;
        }
        if !self.refreshed.is_empty() {
            let ids: Vec<i64> = std::mem::take(&mut self.refreshed).into_iter().collect();
            for chunk in ids.chunks(REFRESH_BATCH_MAX) {
                out.push(Command::LeaseRefresh(LeaseRefreshRequest { ids: chunk.to_vec() }));
            }
        }
        let expired = self.expired(now_ms, store);
        if !expired.is_empty() {
            out.push(Command::LeaseExpire(LeaseExpireRequest { leases: expired }));
        }
        let interval = self.cfg.checkpoint_interval_ms;
        if interval > 0 && now_ms.saturating_sub(self.last_checkpoint_ms) >= interval {
            self.last_checkpoint_ms = now_ms;
            out.extend(self.checkpoints(now_ms, store));
        }
        out
    }

    /// At promotion: every lease the log does not know the last renewal of lasts at least
    /// its whole TTL from `now_ms` (the deadlines of the others are copies of the old
    /// leader's, measured from the entries that set them).
    fn promote(&mut self, now_ms: u64, store: &Store) {
        #[cfg(feature = "planted-bugs")]
        if self.promotion_keeps_deadlines {
            return;
        }
        for lease in store.leases() {
            if lease.remaining_ms.is_some() {
                continue;
            }
            let full = lease.ttl_ms();
            let short = self.deadlines.get(&lease.id).is_none_or(|d| d.at_ms < now_ms + full);
            if short {
                self.set(lease.id, now_ms, full);
            }
        }
    }

    /// Moves every deadline (and when it was set) `by_ms` later.
    fn shift_all(&mut self, by_ms: u64) {
        if by_ms == 0 {
            return;
        }
        self.by_deadline.clear();
        for (id, d) in &mut self.deadlines {
            d.at_ms = d.at_ms.saturating_add(by_ms);
            d.set_ms = d.set_ms.saturating_add(by_ms);
            self.by_deadline.insert((d.at_ms, *id));
        }
    }

    /// Up to a batch of leases past their deadline, not proposed within the retry time.
    fn expired(&mut self, now_ms: u64, store: &Store) -> Vec<LeaseExpiry> {
        let mut expired = Vec::new();
        for &(at_ms, id) in &self.by_deadline {
            if at_ms > now_ms || expired.len() >= self.cfg.expire_batch_max {
                break;
            }
            if self.proposed.get(&id).is_some_and(|&at| now_ms < at + self.cfg.retry_ms) {
                continue;
            }
            if let Some(lease) = store.lease(id) {
                expired.push(LeaseExpiry { id, renewed_at: lease.renewed_at });
            }
        }
        for e in &expired {
            self.proposed.insert(e.id, now_ms);
        }
        expired
    }

    /// Checkpoint entries for the leases that have time left and whose deadline was not set
    /// within the last half interval (leases renewed more often need none; a lease whose last
    /// checkpoint applied a tick after the previous round is still due in this one).
    fn checkpoints(&self, now_ms: u64, store: &Store) -> Vec<Command> {
        let interval = self.cfg.checkpoint_interval_ms;
        let mut due: Vec<LeaseCheckpoint> = self
            .deadlines
            .iter()
            .filter(|(_, d)| d.set_ms.saturating_add(interval / 2) <= now_ms && d.at_ms > now_ms)
            .filter_map(|(&id, d)| {
                let lease = store.lease(id)?;
                let remaining_ms = d.at_ms - now_ms;
                Some(LeaseCheckpoint { id, renewed_at: lease.renewed_at, remaining_ms })
            })
            .collect();
        // The hash map's order must not leak into the log.
        due.sort_by_key(|c| c.id);
        due.chunks(self.cfg.expire_batch_max.max(1))
            .map(|c| Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints: c.to_vec() }))
            .collect()
    }
}
