//! `etcdserverpb.Maintenance`: `Status` and `Alarm`; the rest answers `Unimplemented`.

use std::pin::Pin;

use tonic::{Request, Status};

use super::{Services, VERSION};
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
