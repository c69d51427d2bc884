//! The etcd v3 gRPC services one member serves: `KV`, `Cluster/MemberList`,
//! `Maintenance/Status` and `Maintenance/Alarm`. Everything else answers `Unimplemented`.
//! Over HTTP on the same port: `/health`, `/version` and `/metrics`.
//!
//! Writes (`Put`, `DeleteRange`, `Txn`, `Compact`) become a [`Proposal`] and wait for the
//! replica to apply it; a follower forwards the proposal to the leader and answers once it
//! has applied the entry itself. `Range` is linearizable (ReadIndex) unless the request sets
//! `serializable`, which reads this member's state at once. A proposal carries a session tag
//! (exactly-once retries) only when tenure's own client sends `x-tenure-client-id` and
//! `x-tenure-sequence` metadata; etcd clients get etcd's at-least-once behaviour.

use std::collections::BTreeMap;
use std::pin::Pin;

use tenure_kv::{Command, MemberAttributes, Proposal, RangeRequest, Response};
use tenure_replica::{Answer, ClientError, Consistency};
use tonic::{Request, Status};

use crate::convert::{self, HeaderContext};
use crate::error::ServerError;
use crate::pb::etcdserverpb as pb;
use crate::runtime::{RuntimeHandle, SubmitError};

/// The version `Maintenance/Status` reports: etcd's API level, marked as tenure.
pub const VERSION: &str = "3.4.23-tenure";

/// One member as `MemberList` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Member id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs shown until the member has published its own through the log (see
    /// [`ClusterInfo`]).
    pub client_urls: Vec<String>,
}

/// What a member knows about its cluster from its configuration.
///
/// Names and peer URLs come from `--initial-cluster`. Client URLs come from the replicated
/// member table: every member publishes its `--advertise-client-urls` through the log when it
/// starts, as etcd does, so `MemberList` on any member shows every member that has published.
/// Until a member has, `MemberList` shows [`MemberInfo::client_urls`]: empty under
/// `tenure serve` (as etcd shows an unpublished member), every member's under `tenure dev`,
/// which knows them all beforehand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The cluster id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// Every member, sorted by name.
    pub members: Vec<MemberInfo>,
}

/// The services of one member, all over one [`RuntimeHandle`].
#[derive(Clone)]
pub struct Services {
    runtime: RuntimeHandle,
    cluster: std::sync::Arc<ClusterInfo>,
    /// Largest encoded write request accepted (etcd's `--max-request-bytes`).
    request_bytes_max: usize,
}

/// What gRPC may receive beyond the largest request, as etcd allows (`grpcOverheadBytes`);
/// bigger messages are refused by gRPC itself before they are decoded.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl Services {
    /// Services for the member `cluster.member_id`, refusing writes whose encoding exceeds
    /// `request_bytes_max` with etcd's "request is too large".
    pub fn new(runtime: RuntimeHandle, cluster: ClusterInfo, request_bytes_max: usize) -> Services {
        Services { runtime, cluster: std::sync::Arc::new(cluster), request_bytes_max }
    }

    /// A router serving every gRPC service and, on the same port over HTTP/1.1 or HTTP/2,
    /// etcd's `/health` and `/version` endpoints.
    pub fn router(self) -> tonic::transport::server::Router {
        let decode_max = self.request_bytes_max + GRPC_OVERHEAD_BYTES;
        let runtime = self.runtime.clone();
        let metrics_runtime = self.runtime.clone();
        let grpc = tonic::service::Routes::new(
            pb::kv_server::KvServer::new(self.clone()).max_decoding_message_size(decode_max),
        )
        .add_service(pb::cluster_server::ClusterServer::new(self.clone()))
        .add_service(pb::maintenance_server::MaintenanceServer::new(self));
        let http = axum::Router::new()
            .route("/health", axum::routing::get(move || health(runtime.clone())))
            .route("/version", axum::routing::get(version))
            .route("/metrics", axum::routing::get(move || metrics(metrics_runtime.clone())));
        let routes = tonic::service::Routes::from(grpc.into_axum_router().merge(http));
        tonic::transport::Server::builder().accept_http1(true).add_routes(routes)
    }

    fn ctx(&self) -> HeaderContext {
        HeaderContext {
            cluster_id: self.cluster.cluster_id,
            member_id: self.cluster.member_id,
            raft_term: self.runtime.status().term,
        }
    }

    /// The member attributes this member has applied, by member id.
    async fn published_members(&self) -> Result<BTreeMap<u64, MemberAttributes>, Status> {
        let rx = self
            .runtime
            .inspect(|replica| {
                replica.kv().members().map(|(id, a)| (id, a.clone())).collect::<BTreeMap<_, _>>()
            })
            .map_err(submit_status)?;
        rx.await.map_err(|_| ServerError::Stopped.into())
    }

    async fn write<T: prost::Message>(
        &self,
        request: &Request<T>,
        command: Command,
    ) -> Result<Response, Status> {
        // etcd measures the marshalled request against --max-request-bytes before proposing.
        if request.get_ref().encoded_len() > self.request_bytes_max {
            return Err(ServerError::RequestTooLarge.into());
        }
        let proposal = match session(request)? {
            Some((client_id, sequence)) => Proposal::with_session(command, client_id, sequence),
            None => Proposal::new(command),
        };
        let rx = self.runtime.propose(proposal).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(Answer::Write(r))) => Ok(r),
            Ok(Ok(Answer::Read(_))) => Err(Status::internal("tenure: a write answered as a read")),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }
}

/// A JSON body with its content type.
type JsonReply = (axum::http::StatusCode, [(axum::http::HeaderName, &'static str); 1], String);

fn json(status: axum::http::StatusCode, body: String) -> JsonReply {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// How long `/health` waits for its quorum read, as etcd 3.4 does.
const HEALTH_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// etcd's `/health`: healthy when the member knows a leader and a linearizable read (which
/// needs a quorum to confirm the leader) completes within a second (there are no alarms).
async fn health(runtime: RuntimeHandle) -> JsonReply {
    let st = runtime.status();
    let healthy = st.leader.is_some() && !st.stopped && quorum_read_succeeds(&runtime).await;
    if healthy {
        json(axum::http::StatusCode::OK, r#"{"health":"true"}"#.to_string())
    } else {
        json(axum::http::StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#.to_string())
    }
}

/// A linearizable read of the key `health` (what etcd's check reads), bounded in time.
async fn quorum_read_succeeds(runtime: &RuntimeHandle) -> bool {
    let request = RangeRequest::single("health");
    let Ok(rx) = runtime.read(request, Consistency::Linearizable) else { return false };
    matches!(tokio::time::timeout(HEALTH_READ_TIMEOUT, rx).await, Ok(Ok(Ok(_))))
}

/// etcd's `/version`.
async fn version() -> JsonReply {
    let body = format!(r#"{{"etcdserver":"{VERSION}","etcdcluster":"3.4.0"}}"#);
    json(axum::http::StatusCode::OK, body)
}

/// This member's metrics in OpenMetrics text, which Prometheus scrapes.
async fn metrics(
    runtime: RuntimeHandle,
) -> (axum::http::StatusCode, [(axum::http::HeaderName, &'static str); 1], String) {
    let body = runtime.metrics().render();
    (
        axum::http::StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        body,
    )
}

/// Reads tenure's session metadata; both headers or neither.
fn session<T>(request: &Request<T>) -> Result<Option<(u64, u64)>, Status> {
    let md = request.metadata();
    let get = |k: &str| -> Result<Option<u64>, Status> {
        match md.get(k) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| Status::invalid_argument(format!("tenure: bad {k} metadata"))),
        }
    };
    match (get("x-tenure-client-id")?, get("x-tenure-sequence")?) {
        (Some(c), Some(s)) => Ok(Some((c, s))),
        (None, None) => Ok(None),
        _ => Err(Status::invalid_argument(
            "tenure: x-tenure-client-id and x-tenure-sequence go together",
        )),
    }
}

fn submit_status(e: SubmitError) -> Status {
    match e {
        SubmitError::Full => ServerError::TooManyRequests.into(),
        SubmitError::Stopped => ServerError::Stopped.into(),
    }
}

/// A request that failed without a state-machine answer, as etcd reports it.
fn client_status(e: ClientError) -> Status {
    let err = match e {
        ClientError::NoLeader => ServerError::NoLeader,
        ClientError::NotLeader { .. } => ServerError::NotLeader,
        ClientError::LeaderChanged => ServerError::LeaderChanged,
        ClientError::Timeout => ServerError::Timeout,
        // The core refuses during a leadership transfer (retry: the leader is changing) or
        // when too much is uncommitted (back off).
        ClientError::Refused(why) if why.contains("transfer") => ServerError::LeaderChanged,
        ClientError::Refused(_) => ServerError::TooManyRequests,
        ClientError::Kv(e) => ServerError::Kv(e),
        ClientError::Invalid(why) => return Status::invalid_argument(why),
    };
    err.into()
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("tenure: unexpected response to {what}"))
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Services {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<pb::RangeResponse>, Status> {
        let r = request.into_inner();
        let consistency =
            if r.serializable { Consistency::Serializable } else { Consistency::Linearizable };
        let req: RangeRequest =
            convert::range_request_from_pb(r).map_err(|e| Status::from(ServerError::from(e)))?;
        let rx = self.runtime.read(req, consistency).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(Answer::Read(r))) => {
                Ok(tonic::Response::new(convert::range_response_to_pb(r, &self.ctx())))
            }
            Ok(Ok(Answer::Write(_))) => Err(unexpected("Range")),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutResponse>, Status> {
        let cmd = Command::Put(convert::put_request_from_pb(request.get_ref().clone()));
        match self.write(&request, cmd).await? {
            Response::Put(r) => {
                Ok(tonic::Response::new(convert::put_response_to_pb(r, &self.ctx())))
            }
            _ => Err(unexpected("Put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<tonic::Response<pb::DeleteRangeResponse>, Status> {
        let cmd =
            Command::DeleteRange(convert::delete_range_request_from_pb(request.get_ref().clone()));
        match self.write(&request, cmd).await? {
            Response::DeleteRange(r) => {
                Ok(tonic::Response::new(convert::delete_range_response_to_pb(r, &self.ctx())))
            }
            _ => Err(unexpected("DeleteRange")),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<tonic::Response<pb::TxnResponse>, Status> {
        let txn = convert::txn_request_from_pb(request.get_ref().clone())
            .map_err(|e| Status::from(ServerError::from(e)))?;
        match self.write(&request, Command::Txn(txn)).await? {
            Response::Txn(r) => {
                Ok(tonic::Response::new(convert::txn_response_to_pb(r, &self.ctx())))
            }
            _ => Err(unexpected("Txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<tonic::Response<pb::CompactionResponse>, Status> {
        let cmd = Command::Compact(convert::compaction_request_from_pb(*request.get_ref()));
        match self.write(&request, cmd).await? {
            Response::Compact(r) => {
                Ok(tonic::Response::new(convert::compaction_response_to_pb(r, &self.ctx())))
            }
            _ => Err(unexpected("Compact")),
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Services {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<tonic::Response<pb::MemberAddResponse>, Status> {
        Err(ServerError::Unsupported("MemberAdd").into())
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<tonic::Response<pb::MemberRemoveResponse>, Status> {
        Err(ServerError::Unsupported("MemberRemove").into())
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<tonic::Response<pb::MemberUpdateResponse>, Status> {
        Err(ServerError::Unsupported("MemberUpdate").into())
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<tonic::Response<pb::MemberListResponse>, Status> {
        let mut published = self.published_members().await?;
        let members = self
            .cluster
            .members
            .iter()
            .map(|m| pb::Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: published
                    .remove(&m.id)
                    .map_or_else(|| m.client_urls.clone(), |a| a.client_urls),
                is_learner: false,
            })
            .collect();
        let header = Some(self.ctx().header(self.runtime.status().revision));
        Ok(tonic::Response::new(pb::MemberListResponse { header, members }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<tonic::Response<pb::MemberPromoteResponse>, Status> {
        Err(ServerError::Unsupported("MemberPromote").into())
    }
}

/// A stream that never yields; `Snapshot` is not served.
type NoSnapshots = Pin<
    Box<
        dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>>
            + Send
            + 'static,
    >,
>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Services {
    async fn alarm(
        &self,
        _: Request<pb::AlarmRequest>,
    ) -> Result<tonic::Response<pb::AlarmResponse>, Status> {
        let header = Some(self.ctx().header(self.runtime.status().revision));
        Ok(tonic::Response::new(pb::AlarmResponse { header, alarms: Vec::new() }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
        let st = self.runtime.status();
        if st.stopped {
            return Err(ServerError::Stopped.into());
        }
        // The store is in memory; this is a rough estimate of what etcd's bbolt file would
        // hold, not a measurement.
        let db_size = i64::try_from(st.key_count).unwrap_or(i64::MAX).saturating_mul(256) + 16384;
        Ok(tonic::Response::new(pb::StatusResponse {
            header: Some(self.ctx().header(st.revision)),
            version: VERSION.to_string(),
            db_size,
            leader: st.leader.unwrap_or(0),
            raft_index: st.committed,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _: Request<pb::DefragmentRequest>,
    ) -> Result<tonic::Response<pb::DefragmentResponse>, Status> {
        Err(ServerError::Unsupported("Defragment").into())
    }

    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<tonic::Response<pb::HashResponse>, Status> {
        Err(ServerError::Unsupported("Hash").into())
    }

    async fn hash_kv(
        &self,
        _: Request<pb::HashKvRequest>,
    ) -> Result<tonic::Response<pb::HashKvResponse>, Status> {
        Err(ServerError::Unsupported("HashKV").into())
    }

    type SnapshotStream = NoSnapshots;

    async fn snapshot(
        &self,
        _: Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        Err(ServerError::Unsupported("Snapshot").into())
    }

    async fn move_leader(
        &self,
        _: Request<pb::MoveLeaderRequest>,
    ) -> Result<tonic::Response<pb::MoveLeaderResponse>, Status> {
        Err(ServerError::Unsupported("MoveLeader").into())
    }
}
