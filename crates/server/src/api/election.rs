//! `v3electionpb.Election`: Campaign, Proclaim, Leader, Observe and Resign, as etcd 3.4's
//! server-side election service (which runs clientv3's `concurrency.Election`) serves them, so
//! candidates campaigning here and through `etcdctl elect` (the same recipe on the client
//! side) take part in one election.
//!
//! Every candidate of election `name` writes `name/<its lease in hex>` with its lease and its
//! value; the key with the smallest create revision is the leader. Campaign writes the key if
//! it does not exist (or, if it does with another value, proclaims the new value), then waits
//! until every key under `name/` created before its own is deleted. A leader is identified by
//! its [`LeaderKey`](pb::LeaderKey): name, key, the key's create revision and lease. Proclaim
//! rewrites the value only while that key still exists with that create revision ("election:
//! not leader" otherwise); Resign deletes it under the same condition, and is answered without
//! an error when it no longer leads (as etcd). Leader reads the oldest key ("election: no
//! leader" when there is none); Observe streams the leader's key-value whenever a new leader
//! is elected or the leader proclaims.
//!
//! A Campaign without a lease (0) is given a new lease of
//! [`SESSION_TTL_SECS`](super::concurrency::SESSION_TTL_SECS) that nobody renews, as etcd's
//! server does; so is a Proclaim whose leader key names lease 0 (etcd's server opens a session
//! for it). A Campaign abandoned while waiting (cancelled, client gone) resigns, as etcd's does.

use std::pin::Pin;

use bytes::Bytes;
use tenure_kv::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, EventKind, PutRequest, RangeRequest,
    RequestOp, ResponseOp, TxnRequest, WatchSpec,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::concurrency::{KeyWatch, first_created, lease_key, name_prefix, recipe_error};
use super::convert::key_value_to_pb;
use super::{Services, unexpected};
use crate::pb::v3electionpb as pb;

/// etcd's `concurrency.ErrElectionNotLeader`.
pub const NOT_LEADER: &str = "election: not leader";
/// etcd's `concurrency.ErrElectionNoLeader`.
pub const NO_LEADER: &str = "election: no leader";
/// etcd's `v3election.ErrMissingLeaderKey`, for a Proclaim or Resign without a leader key.
pub const MISSING_LEADER_KEY: &str = "\"leader\" field must be provided";

/// Leader responses an Observe stream holds for a slow client at most.
const OBSERVE_QUEUE_MAX: usize = 16;

/// A leader key's create revision still being `rev`: it still leads.
fn still_leads(key: &Bytes, rev: i64) -> Compare {
    Compare::new(key.clone(), CompareResult::Equal, CompareTarget::CreateRevision(rev))
}

/// Resigns a candidacy when a Campaign ends without leading (cancelled while waiting), unless
/// disarmed once it leads.
struct Withdraw {
    services: Option<Services>,
    key: Bytes,
    rev: i64,
}

impl Withdraw {
    fn disarm(mut self) {
        self.services = None;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if let Some(services) = self.services.take() {
            let (key, rev) = (self.key.clone(), self.rev);
            tokio::spawn(async move {
                if let Err(e) = services.resign_key(&key, rev).await {
                    tracing::debug!("could not withdraw an abandoned candidacy: {e}");
                }
            });
        }
    }
}

impl Services {
    /// Deletes the leader key `key` if it was created at `rev`; the transaction's revision.
    async fn resign_key(&self, key: &Bytes, rev: i64) -> Result<i64, Status> {
        let txn = TxnRequest {
            compare: vec![still_leads(key, rev)],
            success: vec![RequestOp::DeleteRange(DeleteRangeRequest::single(key.clone()))],
            failure: vec![],
        };
        Ok(self.txn_internal(txn).await?.revision)
    }

    /// Sets the leader key's value if it still leads; the transaction's revision, or "election:
    /// not leader".
    async fn proclaim_key(
        &self,
        key: &Bytes,
        rev: i64,
        lease: i64,
        value: Bytes,
    ) -> Result<i64, Status> {
        let txn = TxnRequest {
            compare: vec![still_leads(key, rev)],
            success: vec![RequestOp::Put(PutRequest {
                key: key.clone(),
                value,
                lease,
                ..Default::default()
            })],
            failure: vec![],
        };
        let r = self.txn_internal(txn).await?;
        if !r.succeeded {
            return Err(Status::unknown(NOT_LEADER));
        }
        Ok(r.revision)
    }

    async fn campaign(&self, r: pb::CampaignRequest) -> Result<pb::CampaignResponse, Status> {
        let lease = self.session_lease(r.lease).await?;
        let prefix = name_prefix(&r.name);
        let key = lease_key(&prefix, lease);
        let txn = TxnRequest {
            compare: vec![Compare::new(
                key.clone(),
                CompareResult::Equal,
                CompareTarget::CreateRevision(0),
            )],
            success: vec![RequestOp::Put(PutRequest {
                key: key.clone(),
                value: r.value.clone(),
                lease,
                ..Default::default()
            })],
            failure: vec![RequestOp::Range(RangeRequest::single(key.clone()))],
        };
        let resp = self.txn_internal(txn).await?;
        let mut rev = resp.revision;
        if !resp.succeeded {
            let existing = match resp.responses.as_slice() {
                [ResponseOp::Range(range)] => range.kvs.first().cloned(),
                _ => None,
            };
            let existing = existing.ok_or_else(|| unexpected("the campaign transaction"))?;
            rev = existing.create_revision;
            // The same session campaigned before with another value: proclaim the new one.
            if existing.value != r.value
                && let Err(e) = self.proclaim_key(&key, rev, lease, r.value.clone()).await
            {
                let _ = self.resign_key(&key, rev).await;
                return Err(e);
            }
        }
        let withdraw = Withdraw { services: Some(self.clone()), key: key.clone(), rev };
        self.wait_deletes(&prefix, rev - 1).await?;
        withdraw.disarm();
        Ok(pb::CampaignResponse {
            header: Some(self.ctx().header(resp.revision)),
            leader: Some(pb::LeaderKey { name: r.name, key, rev, lease }),
        })
    }

    /// The oldest key under `prefix`, with the read's revision; "election: no leader" if none.
    async fn leader_kv(&self, prefix: &Bytes) -> Result<(tenure_kv::KeyValue, i64), Status> {
        let r = self.range_internal(first_created(prefix)).await?;
        match r.kvs.into_iter().next() {
            Some(kv) => Ok((kv, r.revision)),
            None => Err(Status::unknown(NO_LEADER)),
        }
    }

    /// etcd's `Election.observe`: sends the leader, then each new value it proclaims; once its
    /// key is deleted, the next leader (waiting for a first candidate if there is none).
    async fn observe_loop(
        &self,
        prefix: Bytes,
        tx: mpsc::Sender<Result<pb::LeaderResponse, Status>>,
    ) -> Result<(), Status> {
        let send = |kv: tenure_kv::KeyValue, revision: i64| {
            let tx = tx.clone();
            let header = Some(self.ctx().header(revision));
            async move {
                let r = pb::LeaderResponse { header, kv: Some(key_value_to_pb(kv)) };
                tx.send(Ok(r)).await.is_ok()
            }
        };
        loop {
            let r = self.range_internal(first_created(&prefix)).await?;
            let (leader, revision) = match r.kvs.into_iter().next() {
                Some(kv) => (kv, r.revision),
                None => {
                    // No candidate: the first put under the prefix after the read is the
                    // leader (deletes are skipped).
                    let spec = WatchSpec::new(prefix.clone(), tenure_kv::prefix_end(&prefix));
                    let mut watch = KeyWatch::start(self, spec, r.revision).await?;
                    loop {
                        let (event, _) = watch.next().await?;
                        if event.kind == EventKind::Put {
                            let revision = event.kv.mod_revision;
                            break (event.kv, revision);
                        }
                    }
                }
            };
            let key = leader.key.clone();
            if !send(leader, revision).await {
                return Ok(());
            }
            let spec = WatchSpec::new(key, Bytes::new());
            let mut watch = KeyWatch::start(self, spec, revision + 1).await?;
            loop {
                let (event, revision) = watch.next().await?;
                if event.kind == EventKind::Delete {
                    break;
                }
                if !send(event.kv, revision).await {
                    return Ok(());
                }
            }
        }
    }
}

#[tonic::async_trait]
impl pb::election_server::Election for Services {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<tonic::Response<pb::CampaignResponse>, Status> {
        self.check_recipe(&request, &name_prefix(&request.get_ref().name), true)?;
        Services::campaign(self, request.into_inner())
            .await
            .map(tonic::Response::new)
            .map_err(recipe_error)
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<tonic::Response<pb::ProclaimResponse>, Status> {
        if let Some(l) = &request.get_ref().leader {
            self.check_recipe(&request, &name_prefix(&l.name), true)?;
        }
        let r = request.into_inner();
        let leader = r.leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        let lease = self.session_lease(leader.lease).await.map_err(recipe_error)?;
        let key = leader.key;
        let revision =
            self.proclaim_key(&key, leader.rev, lease, r.value).await.map_err(recipe_error)?;
        Ok(tonic::Response::new(pb::ProclaimResponse { header: Some(self.ctx().header(revision)) }))
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<tonic::Response<pb::LeaderResponse>, Status> {
        self.check_recipe(&request, &name_prefix(&request.get_ref().name), false)?;
        let prefix = name_prefix(&request.into_inner().name);
        let (kv, revision) = self.leader_kv(&prefix).await.map_err(recipe_error)?;
        Ok(tonic::Response::new(pb::LeaderResponse {
            header: Some(self.ctx().header(revision)),
            kv: Some(key_value_to_pb(kv)),
        }))
    }

    type ObserveStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LeaderResponse, Status>> + Send>>;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<tonic::Response<Self::ObserveStream>, Status> {
        self.check_recipe(&request, &name_prefix(&request.get_ref().name), false)?;
        let prefix = name_prefix(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_QUEUE_MAX);
        let services = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = services.observe_loop(prefix, tx.clone()) => {
                    if let Err(status) = result {
                        let _ = tx.send(Err(recipe_error(status))).await;
                    }
                }
                // The client went away: stop following.
                _ = tx.closed() => {}
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<tonic::Response<pb::ResignResponse>, Status> {
        if let Some(l) = &request.get_ref().leader {
            self.check_recipe(&request, &name_prefix(&l.name), true)?;
        }
        let leader =
            request.into_inner().leader.ok_or_else(|| Status::unknown(MISSING_LEADER_KEY))?;
        // etcd's server opens a session here too (granting a lease for lease 0), but Resign
        // never uses its lease; tenure grants none.
        let revision = self.resign_key(&leader.key, leader.rev).await.map_err(recipe_error)?;
        Ok(tonic::Response::new(pb::ResignResponse { header: Some(self.ctx().header(revision)) }))
    }
}
