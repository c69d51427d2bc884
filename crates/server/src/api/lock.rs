//! `v3lockpb.Lock`: Lock and Unlock, as etcd 3.4's server-side lock service (which runs
//! clientv3's `concurrency.Mutex`) serves them, so locks taken here and by `etcdctl lock` (the
//! same recipe on the client side) exclude each other.
//!
//! Lock `name` with lease `L` writes the key `name/<L in hex>` with lease `L` if it does not
//! exist (a transaction on its create revision being 0), which queues the caller among the
//! waiters: the key with the smallest create revision under `name/` holds the lock. The caller
//! then waits until every key under `name/` created before its own is deleted (each waiter
//! watches only the one just before it), checks that its own key still exists (its lease may
//! have expired meanwhile: etcd 3.5's fix for the lock Jepsen found granted after its session
//! expired, etcd issue 11408), and is answered with its key. Unlock deletes the key. The lock is
//! also released when the lease expires or is revoked, which deletes the key.
//!
//! A lock is only as safe as its holder's use of it: a holder paused past its lease's TTL no
//! longer holds the lock without knowing. The key's create revision (the fencing token) lets a
//! resource refuse a stale holder: guard writes with a compare on it.
//!
//! A Lock request without a lease (0) is given a new lease of
//! [`SESSION_TTL_SECS`](super::concurrency::SESSION_TTL_SECS) that nobody renews, as etcd's
//! server does. A Lock call abandoned while waiting (the client cancelled or went away) deletes
//! its key, as etcd's `Mutex.Lock` does when its wait fails.

use bytes::Bytes;
use tenure_kv::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest,
    RequestOp, Response, ResponseOp, TxnRequest,
};
use tonic::{Request, Status};

use super::concurrency::{first_created, lease_key, name_prefix, recipe_error};
use super::{Services, unexpected};
use crate::pb::v3lockpb as pb;

/// etcd's `concurrency.ErrSessionExpired`: the caller's key vanished (its lease expired or
/// was revoked) while it waited, so it does not hold the lock.
pub const SESSION_EXPIRED: &str = "mutex: session is expired";

/// Deletes a waiter's key when a Lock call ends without the lock (cancelled, failed), unless
/// disarmed once the lock is held.
struct Abandon {
    services: Option<Services>,
    key: Bytes,
}

impl Abandon {
    fn disarm(mut self) {
        self.services = None;
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(services) = self.services.take() {
            let key = self.key.clone();
            // The call's own task is going away: the delete runs on a task of its own.
            tokio::spawn(async move {
                let delete = Command::DeleteRange(DeleteRangeRequest::single(key));
                if let Err(e) = services.propose_internal(delete).await {
                    tracing::debug!("could not delete an abandoned lock waiter's key: {e}");
                }
            });
        }
    }
}

impl Services {
    /// Queues `lease`'s key under `name/` and waits until it holds the lock; answers with the
    /// key and the header of the read or write that found the lock held.
    async fn lock_named(&self, name: &[u8], lease: i64) -> Result<pb::LockResponse, Status> {
        let lease = self.session_lease(lease).await?;
        let prefix = name_prefix(name);
        let key = lease_key(&prefix, lease);
        let txn = TxnRequest {
            compare: vec![Compare::new(
                key.clone(),
                CompareResult::Equal,
                CompareTarget::CreateRevision(0),
            )],
            success: vec![
                RequestOp::Put(PutRequest {
                    key: key.clone(),
                    value: Bytes::new(),
                    lease,
                    ..Default::default()
                }),
                RequestOp::Range(first_created(&prefix)),
            ],
            failure: vec![
                RequestOp::Range(RangeRequest::single(key.clone())),
                RequestOp::Range(first_created(&prefix)),
            ],
        };
        let resp = self.txn_internal(txn).await?;
        let abandon = Abandon { services: Some(self.clone()), key: key.clone() };
        let (my_revision, owner) = match (resp.succeeded, resp.responses.as_slice()) {
            (true, [ResponseOp::Put(_), ResponseOp::Range(owner)]) => (resp.revision, owner),
            (false, [ResponseOp::Range(mine), ResponseOp::Range(owner)]) => {
                let Some(kv) = mine.kvs.first() else {
                    return Err(unexpected("the lock transaction"));
                };
                (kv.create_revision, owner)
            }
            _ => return Err(unexpected("the lock transaction")),
        };
        // Uncontended: nobody under the prefix, or the oldest key is this caller's.
        if owner.kvs.first().is_none_or(|kv| kv.create_revision == my_revision) {
            abandon.disarm();
            return Ok(pb::LockResponse { header: Some(self.ctx().header(resp.revision)), key });
        }
        self.wait_deletes(&prefix, my_revision - 1).await?;
        // The key must still be there: a lease that expired while waiting deleted it, and
        // then this caller holds nothing.
        let mine = self.range_internal(RangeRequest::single(key.clone())).await?;
        if mine.kvs.is_empty() {
            abandon.disarm();
            return Err(Status::unknown(SESSION_EXPIRED));
        }
        abandon.disarm();
        Ok(pb::LockResponse { header: Some(self.ctx().header(mine.revision)), key })
    }
}

#[tonic::async_trait]
impl pb::lock_server::Lock for Services {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<tonic::Response<pb::LockResponse>, Status> {
        self.check_recipe(&request, &name_prefix(&request.get_ref().name), true)?;
        let r = request.into_inner();
        self.lock_named(&r.name, r.lease).await.map(tonic::Response::new).map_err(recipe_error)
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<tonic::Response<pb::UnlockResponse>, Status> {
        let info = self.auth_info(&request)?;
        let key = request.into_inner().key;
        self.runtime
            .auth()
            .check_write_range(&info, &key, b"")
            .map_err(super::auth::auth_status)?;
        let delete = Command::DeleteRange(DeleteRangeRequest::single(key));
        match self.propose_internal(delete).await.map_err(recipe_error)? {
            Response::DeleteRange(d) => Ok(tonic::Response::new(pb::UnlockResponse {
                header: Some(self.ctx().header(d.revision)),
            })),
            _ => Err(unexpected("Unlock")),
        }
    }
}
