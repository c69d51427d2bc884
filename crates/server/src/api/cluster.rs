//! `etcdserverpb.Cluster`: `MemberList` (membership changes are not served yet).

use tonic::{Request, Status};

use super::Services;
use crate::ServerError;
use crate::pb::etcdserverpb as pb;

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
