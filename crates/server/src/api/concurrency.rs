//! What the Lock and Election services share: etcd's client-side concurrency recipes
//! (`clientv3/concurrency`: sessions, `waitDeletes`, the `name/<lease in hex>` key layout) run
//! inside the member, over the runtime directly.
//!
//! etcd's server-side `v3lock` and `v3election` services are thin wrappers over those recipes,
//! which talk to the cluster through an ordinary client. Here the same steps are proposals
//! (transactions, deletes, lease grants), linearizable reads, and a [`KeyWatch`] that follows
//! this member's applied events (the watch feed, after a catch-up from the store's history),
//! so a waiter sees every delete after the revision it starts from, exactly once and in order,
//! as a watch would.

use bytes::Bytes;
use tenure_kv::{
    Command, Event, EventKind, HistoryError, Proposal, RangeRequest, RangeResponse, Response,
    SortOrder, SortTarget, TxnRequest, TxnResponse, WatchCursor, WatchSpec,
};
use tenure_replica::{Answer, Consistency};
use tokio::sync::broadcast;
use tonic::Status;

use super::{Services, client_status, submit_status, unexpected};
use crate::ServerError;
use crate::runtime::Published;

/// The TTL of the lease a Lock or Campaign request without one is given, in seconds (etcd's
/// session default, `concurrency.NewSession`'s `defaultSessionTTL`). Nobody renews it: etcd's
/// server orphans the session, so the lock or candidacy lasts at most this long.
pub const SESSION_TTL_SECS: i64 = 60;

/// The key a session with `lease` holds under `prefix` (which ends in `/`): the lease id in
/// lowercase hexadecimal, as Go's `fmt.Sprintf("%s%x", prefix, lease)` writes it (a negative
/// id gets a minus sign).
pub fn lease_key(prefix: &[u8], lease: i64) -> Bytes {
    let hex = if lease < 0 { format!("-{:x}", lease.unsigned_abs()) } else { format!("{lease:x}") };
    let mut key = Vec::with_capacity(prefix.len() + hex.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(hex.as_bytes());
    Bytes::from(key)
}

/// An error of a recipe's request as etcd's Lock and Election services answer it: their
/// recipes run on a client that turns etcd's own errors into plain Go errors, which gRPC sends
/// with code `Unknown` and the same message. Other errors keep their code.
pub fn recipe_error(status: Status) -> Status {
    if status.message().starts_with("etcdserver: ") {
        Status::unknown(status.message())
    } else {
        status
    }
}

/// `name/`: the prefix under which a lock's or an election's keys live.
pub fn name_prefix(name: &[u8]) -> Bytes {
    let mut p = Vec::with_capacity(name.len() + 1);
    p.extend_from_slice(name);
    p.push(b'/');
    Bytes::from(p)
}

/// clientv3's `WithFirstCreate`: the key under `prefix` with the smallest create revision.
pub fn first_created(prefix: &Bytes) -> RangeRequest {
    RangeRequest {
        sort_order: SortOrder::Ascend,
        sort_target: SortTarget::Create,
        limit: 1,
        ..RangeRequest::prefix(prefix.clone())
    }
}

/// clientv3's `WithLastCreate` and `WithMaxCreateRev`: the key under `prefix` with the largest
/// create revision not above `max_create_revision`.
fn last_created_before(prefix: &Bytes, max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Create,
        limit: 1,
        max_create_revision,
        ..RangeRequest::prefix(prefix.clone())
    }
}

impl Services {
    /// Proposes `command` (no session tag: the recipes are etcd's at-least-once client calls)
    /// and waits for the state machine's answer, admitted like any client request.
    pub(super) async fn propose_internal(&self, command: Command) -> Result<Response, Status> {
        let _permit = self.admit()?;
        let rx = self.runtime.propose(Proposal::new(command)).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(Answer::Write(r))) => Ok(r),
            Ok(Ok(_)) => Err(unexpected("a proposal")),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }

    /// A transaction, through the log.
    pub(super) async fn txn_internal(&self, txn: TxnRequest) -> Result<TxnResponse, Status> {
        match self.propose_internal(Command::Txn(txn)).await? {
            Response::Txn(r) => Ok(r),
            _ => Err(unexpected("Txn")),
        }
    }

    /// A linearizable read (ReadIndex).
    pub(super) async fn range_internal(
        &self,
        request: RangeRequest,
    ) -> Result<RangeResponse, Status> {
        let _permit = self.admit()?;
        let rx = self.runtime.read(request, Consistency::Linearizable).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(Answer::Read(r))) => Ok(r),
            Ok(Ok(_)) => Err(unexpected("Range")),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }

    /// The lease a recipe runs with: `lease` itself, or for 0 a new lease of
    /// [`SESSION_TTL_SECS`] (etcd's `NewSession` without a lease grants one).
    pub(super) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = tenure_kv::LeaseGrantRequest {
            id: 0,
            ttl: SESSION_TTL_SECS.max(self.lease_ttl_min_secs),
        };
        match self.propose_internal(Command::LeaseGrant(grant)).await? {
            Response::LeaseGrant(g) => {
                self.runtime.metrics().lease_granted(g.ttl);
                Ok(g.id)
            }
            _ => Err(unexpected("LeaseGrant")),
        }
    }

    /// clientv3's `waitDeletes`: waits until no key under `prefix` with a create revision at
    /// or below `max_create_revision` exists, one at a time from the newest (each waiter waits
    /// for the one just before it, so a release wakes only the next waiter). Returns the
    /// revision of the read that found none.
    pub(super) async fn wait_deletes(
        &self,
        prefix: &Bytes,
        max_create_revision: i64,
    ) -> Result<i64, Status> {
        loop {
            let r = self.range_internal(last_created_before(prefix, max_create_revision)).await?;
            let Some(last) = r.kvs.first() else {
                return Ok(r.revision);
            };
            self.wait_delete(&last.key, r.revision).await?;
        }
    }

    /// clientv3's `waitDelete`: waits for a delete of `key` at or after `revision` (the
    /// revision of a read that saw it).
    async fn wait_delete(&self, key: &Bytes, revision: i64) -> Result<(), Status> {
        let mut watch =
            KeyWatch::start(self, WatchSpec::new(key.clone(), Bytes::new()), revision).await?;
        loop {
            let (event, _) = watch.next().await?;
            if event.kind == EventKind::Delete {
                return Ok(());
            }
        }
    }
}

/// A watch that runs inside the member: the events on a key or range from a start revision
/// on, each once and in order, as a watch stream would deliver them. It catches up from a copy
/// of the store's history, then follows the feed, and catches up again when it lags the feed
/// or the store is replaced by a snapshot, exactly as the Watch service's watchers do, through
/// the same [`WatchCursor`].
pub(super) struct KeyWatch {
    services: Services,
    feed: broadcast::Receiver<std::sync::Arc<Published>>,
    cursor: WatchCursor,
    /// Events selected and not yet returned, with their revisions, in order.
    pending: std::collections::VecDeque<(Event, i64)>,
}

impl KeyWatch {
    /// A watch of `spec` from `start_revision` on.
    pub(super) async fn start(
        services: &Services,
        spec: WatchSpec,
        start_revision: i64,
    ) -> Result<KeyWatch, Status> {
        let mut w = KeyWatch {
            services: services.clone(),
            feed: services.runtime.subscribe(),
            cursor: WatchCursor::new(spec, start_revision),
            pending: std::collections::VecDeque::new(),
        };
        w.catch_up().await?;
        Ok(w)
    }

    /// The next event and its revision; waits for one. An error if the start revision was
    /// compacted ("mvcc: required revision has been compacted", as a watch is cancelled) or
    /// the member stopped.
    pub(super) async fn next(&mut self) -> Result<(Event, i64), Status> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            match self.feed.recv().await {
                Ok(published) => match &*published {
                    Published::Events { revisions, revision } => {
                        let wanted = self.cursor.on_live(revisions, *revision);
                        self.queue(wanted);
                    }
                    Published::Reset => self.catch_up().await?,
                },
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await?,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(ServerError::Stopped.into());
                }
            }
        }
    }

    fn queue(&mut self, wanted: Vec<tenure_kv::RevisionEvents>) {
        for r in wanted {
            self.pending.extend(r.events.into_iter().map(|e| (e, r.revision)));
        }
    }

    /// Reads the history from the cursor's next revision through a fresh copy of the store.
    async fn catch_up(&mut self) -> Result<(), Status> {
        // Subscribe again first: whatever the copy misses, the feed holds.
        self.feed = self.feed.resubscribe();
        let stopped = || Status::from(ServerError::Stopped);
        let store = super::watch::store_copy(&self.services).await.ok_or_else(stopped)?;
        let upto = store.revision();
        while self.cursor.next() <= upto {
            match super::watch::history_page(&store, &mut self.cursor, upto)
                .await
                .ok_or_else(stopped)?
            {
                Ok(wanted) => self.queue(wanted),
                Err(e @ HistoryError::Compacted { .. }) => {
                    return Err(Status::out_of_range(format!("etcdserver: {e}")));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_gos_lowercase_hex_after_the_prefix() {
        assert_eq!(lease_key(b"lk/", 0x694d_6368_b4ed_c60e), Bytes::from("lk/694d6368b4edc60e"));
        assert_eq!(lease_key(b"lk/", 10), Bytes::from("lk/a"));
        assert_eq!(lease_key(b"lk/", -26), Bytes::from("lk/-1a"));
        assert_eq!(lease_key(b"lk/", i64::MIN), Bytes::from("lk/-8000000000000000"));
        assert_eq!(name_prefix(b"lk"), Bytes::from("lk/"));
    }
}
