//! `etcdserverpb.Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive and
//! LeaseLeases, as etcd 3.4 serves them.
//!
//! Grants, revokes and renewals are proposals: they go through the log (a follower's reach the
//! leader as forwarded proposals), so every member holds the same lease table and measures each
//! lease's remaining TTL on its own clock from when it applied the grant or the last renewal.
//! The leader decides expiry on its clock and proposes the revoke through the log (the
//! replica's business, not this module's). TimeToLive and Leases answer from this member's
//! state after a linearizable barrier (a ReadIndex read), so they see every grant, renewal and
//! revoke acknowledged before they were asked.
//!
//! etcd's rules kept here:
//! - a grant's TTL below the minimum ([`lease_ttl_min_secs`]: 1.5 election timeouts, rounded up
//!   to whole seconds) is raised to it and the response reports the raised TTL; above
//!   9,000,000,000 s is "etcdserver: too large lease TTL"; id 0 has the server choose one; an id
//!   in use is "etcdserver: lease already exists"; a negative id is accepted, as etcd 3.4 does
//!   (etcd then lost such a lease on restart, issue 13676; tenure's lease table survives
//!   restarts and snapshots whatever the id);
//! - a revoke of an unknown lease is "etcdserver: requested lease not found";
//! - a keep-alive of an unknown lease is answered with TTL 0, not an error; any other failure
//!   ends the stream with its error; the TTL answered is the lease's granted TTL;
//! - TimeToLive of an unknown lease answers TTL -1 (no error); the remaining TTL is truncated
//!   to whole seconds.

use std::pin::Pin;

use tenure_kv::{Command, LEASE_TTL_MAX, Proposal, Response};
use tenure_replica::{Answer, ClientError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use super::{Services, client_status, convert, submit_status, unexpected};
use crate::ServerError;
use crate::pb::etcdserverpb as pb;

/// Renewals of one keep-alive stream in flight at once at most; the stream's next request is
/// read once the oldest is answered.
pub const KEEPALIVES_IN_FLIGHT_MAX: usize = 64;

/// etcd's minimum lease TTL in seconds: `ceil(1.5 election timeouts)`, with the election timeout
/// counted in whole heartbeat ticks as etcd does (`3 * election_ticks / 2` ticks of
/// `heartbeat_ms`). 2 s with etcd's defaults (100 ms, 10 ticks). A lease shorter than this could
/// expire during a single leader election, before any renewal can be applied.
pub fn lease_ttl_min_secs(heartbeat_ms: u64, election_ticks: u32) -> i64 {
    let min_ms = u64::from(3 * election_ticks / 2) * heartbeat_ms;
    i64::try_from(min_ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// The TTL a grant asking for `ttl` gets: etcd's errors first, then the minimum.
pub fn granted_ttl(ttl: i64, ttl_min_secs: i64) -> Result<i64, tenure_kv::Error> {
    if ttl > LEASE_TTL_MAX {
        return Err(tenure_kv::Error::LeaseTtlTooLarge);
    }
    Ok(ttl.max(ttl_min_secs))
}

impl Services {
    /// Waits until this member has applied everything committed before the call (a ReadIndex
    /// round, as a linearizable read does).
    async fn linearizable_barrier(&self) -> Result<(), Status> {
        let rx = self.runtime.barrier().map_err(submit_status)?;
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }

    /// One renewal through the log: the answer to a keep-alive request for `id`.
    async fn renew(
        &self,
        id: i64,
        info: tenure_kv::AuthInfo,
    ) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let _permit = self.admit()?;
        let renew = Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id });
        let proposal = Proposal::new(renew).with_auth(info);
        let rx = self.runtime.propose(proposal).map_err(submit_status)?;
        let (revision, ttl) = match rx.await {
            Ok(Ok(Answer::Write(Response::LeaseRenew(r)))) => {
                self.runtime.metrics().lease_renewed();
                (r.revision, r.ttl)
            }
            // etcd answers an unknown lease with TTL 0 and the current revision.
            Ok(Err(ClientError::Kv(tenure_kv::Error::LeaseNotFound))) => {
                (self.runtime.status().revision, 0)
            }
            Ok(Ok(_)) => return Err(unexpected("LeaseRenew")),
            Ok(Err(e)) => return Err(client_status(e)),
            Err(_) => return Err(ServerError::Stopped.into()),
        };
        Ok(pb::LeaseKeepAliveResponse { header: Some(self.ctx().header(revision)), id, ttl })
    }
}

/// The responses of one keep-alive stream.
type KeepAliveStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for Services {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<tonic::Response<pb::LeaseGrantResponse>, Status> {
        let mut grant = convert::lease_grant_request_from_pb(*request.get_ref());
        grant.ttl = granted_ttl(grant.ttl, self.lease_ttl_min_secs)
            .map_err(|e| Status::from(ServerError::from(e)))?;
        match self.write(&request, Command::LeaseGrant(grant)).await? {
            Response::LeaseGrant(g) => {
                self.runtime.metrics().lease_granted(g.ttl);
                Ok(tonic::Response::new(convert::lease_grant_response_to_pb(g, &self.ctx())))
            }
            _ => Err(unexpected("LeaseGrant")),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<tonic::Response<pb::LeaseRevokeResponse>, Status> {
        let revoke = convert::lease_revoke_request_from_pb(*request.get_ref());
        match self.write(&request, Command::LeaseRevoke(revoke)).await? {
            Response::LeaseRevoke(r) => {
                self.runtime.metrics().lease_revoked(1);
                Ok(tonic::Response::new(convert::lease_revoke_response_to_pb(r, &self.ctx())))
            }
            _ => Err(unexpected("LeaseRevoke")),
        }
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// Each request proposes a renewal at once (many in flight per stream, at most
    /// [`KEEPALIVES_IN_FLIGHT_MAX`]); answers go out in request order.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<tonic::Response<KeepAliveStream>, Status> {
        // The stream's credentials go with every renewal (checked when it applies).
        let info = self.auth_info(&request)?;
        let mut requests = request.into_inner();
        let (out, rx) = mpsc::channel(KEEPALIVES_IN_FLIGHT_MAX);
        // Renewals in flight, oldest first: a reader starts them, an answerer sends their
        // answers in the order asked.
        let (in_flight, mut answers) = mpsc::channel::<
            tokio::task::JoinHandle<Result<pb::LeaseKeepAliveResponse, Status>>,
        >(KEEPALIVES_IN_FLIGHT_MAX);
        let services = self.clone();
        let reader = tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = requests.message() => next,
                    _ = in_flight.closed() => return,
                };
                match next {
                    Ok(Some(req)) => {
                        let services = services.clone();
                        let info = info.clone();
                        let renewal =
                            tokio::spawn(async move { services.renew(req.id, info).await });
                        if in_flight.send(renewal).await.is_err() {
                            return;
                        }
                    }
                    // The client closed its side, or the stream broke: no more requests.
                    Ok(None) | Err(_) => return,
                }
            }
        });
        tokio::spawn(async move {
            while let Some(renewal) = answers.recv().await {
                let answer = match renewal.await {
                    Ok(answer) => answer,
                    Err(_) => Err(ServerError::Stopped.into()),
                };
                let failed = answer.is_err();
                if out.send(answer).await.is_err() || failed {
                    break;
                }
            }
            // An error ended the stream, or the client left: stop reading its requests.
            reader.abort();
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<tonic::Response<pb::LeaseTimeToLiveResponse>, Status> {
        let _permit = self.admit()?;
        self.check_authenticated(&request)?;
        let r = request.into_inner();
        self.linearizable_barrier().await?;
        let (id, with_keys) = (r.id, r.keys);
        let rx = self
            .runtime
            .inspect(move |replica| {
                let store = replica.kv();
                let lease = store.lease(id).map(|l| {
                    let keys: Vec<bytes::Bytes> =
                        if with_keys { l.keys.iter().cloned().collect() } else { Vec::new() };
                    (l.ttl, keys)
                });
                (lease, replica.lease_remaining_ms(id), store.revision())
            })
            .map_err(submit_status)?;
        let (lease, remaining_ms, revision) =
            rx.await.map_err(|_| Status::from(ServerError::Stopped))?;
        let header = Some(self.ctx().header(revision));
        let response = match lease {
            Some((granted_ttl, keys)) => pb::LeaseTimeToLiveResponse {
                header,
                id,
                // Truncated to whole seconds, as etcd's `Remaining().Seconds()` is.
                ttl: remaining_ms
                    .map_or(granted_ttl, |ms| i64::try_from(ms / 1000).unwrap_or(i64::MAX)),
                granted_ttl,
                keys,
            },
            None => pb::LeaseTimeToLiveResponse { header, id, ttl: -1, ..Default::default() },
        };
        Ok(tonic::Response::new(response))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<tonic::Response<pb::LeaseLeasesResponse>, Status> {
        let _permit = self.admit()?;
        self.check_authenticated(&request)?;
        self.linearizable_barrier().await?;
        let rx = self
            .runtime
            .inspect(|replica| {
                let store = replica.kv();
                let ids: Vec<i64> = store.leases().map(|l| l.id).collect();
                (ids, store.revision())
            })
            .map_err(submit_status)?;
        let (ids, revision) = rx.await.map_err(|_| Status::from(ServerError::Stopped))?;
        Ok(tonic::Response::new(pb::LeaseLeasesResponse {
            header: Some(self.ctx().header(revision)),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_ttl_is_one_and_a_half_election_timeouts_rounded_up_to_seconds() {
        // etcd's defaults: 100 ms heartbeats, 1,000 ms election timeout: 1.5 s, so 2 s.
        assert_eq!(lease_ttl_min_secs(100, 10), 2);
        // Test clusters: 50 ms, 500 ms: 0.75 s, so 1 s.
        assert_eq!(lease_ttl_min_secs(50, 10), 1);
        // Whole ticks: 11 ticks of 100 ms are 16 ticks (16 * 100 ms = 1.6 s), so 2 s.
        assert_eq!(lease_ttl_min_secs(100, 11), 2);
        assert_eq!(lease_ttl_min_secs(1000, 20), 30);
    }

    #[test]
    fn grants_below_the_minimum_are_raised_and_above_the_maximum_refused() {
        assert_eq!(granted_ttl(1, 2), Ok(2));
        assert_eq!(granted_ttl(0, 2), Ok(2));
        assert_eq!(granted_ttl(-5, 2), Ok(2));
        assert_eq!(granted_ttl(60, 2), Ok(60));
        assert_eq!(granted_ttl(LEASE_TTL_MAX, 2), Ok(LEASE_TTL_MAX));
        assert_eq!(granted_ttl(LEASE_TTL_MAX + 1, 2), Err(tenure_kv::Error::LeaseTtlTooLarge));
    }
}
