//! `etcdserverpb.Maintenance`: `Status` and `Alarm`; the rest answers `Unimplemented`.
//!
//! Alarms live in the replicated state machine ([`tenure_kv::alarm`]): every `Alarm` request,
//! `GET` included, goes through the log as etcd's does, so a listing is linearizable and an
//! alarm raised on one member refuses writes on all of them.

use std::pin::Pin;

use tenure_kv::{Command, Response};
use tonic::{Request, Status};

use super::convert::{alarm_request_from_pb, alarm_response_to_pb, alarm_status_error};
use super::{Services, VERSION, submit_status, unexpected};
use crate::ServerError;
use crate::pb::etcdserverpb as pb;

/// A stream that never yields; `Snapshot` is not served.
type NoSnapshots = Pin<
    Box<
        dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>>
            + Send
            + 'static,
    >,
>;

impl Services {
    /// The alarms this member has applied (not a linearizable read: Status reports this
    /// member's view, as etcd's does).
    async fn applied_alarms(&self) -> Result<Vec<tenure_kv::AlarmMember>, Status> {
        let rx = self
            .runtime
            .inspect(|replica| replica.kv().alarms().collect::<Vec<_>>())
            .map_err(submit_status)?;
        rx.await.map_err(|_| ServerError::Stopped.into())
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Services {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<tonic::Response<pb::AlarmResponse>, Status> {
        let alarm = alarm_request_from_pb(request.get_ref()).map_err(ServerError::from)?;
        match self.write(&request, Command::Alarm(alarm)).await? {
            Response::Alarm(r) => Ok(tonic::Response::new(alarm_response_to_pb(r, &self.ctx()))),
            _ => Err(unexpected("Alarm")),
        }
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
        let st = self.runtime.status();
        if st.stopped {
            return Err(ServerError::Stopped.into());
        }
        // As etcd: no leader, then every raised alarm this member has applied.
        let mut errors = Vec::new();
        if st.leader.is_none() {
            errors.push(ServerError::NoLeader.to_string());
        }
        errors.extend(self.applied_alarms().await?.into_iter().map(alarm_status_error));
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
            errors,
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
