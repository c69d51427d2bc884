//! `etcdserverpb.KV`: Range, Put, DeleteRange, Txn and Compact.
//!
//! Writes become a [`tenure_kv::Proposal`] and wait for the replica to apply it; `Range` is
//! linearizable (ReadIndex) unless the request sets `serializable`.

use tenure_kv::{Command, RangeRequest, Response};
use tenure_replica::{Answer, Consistency};
use tonic::{Request, Status};

use super::{Services, client_status, convert, submit_status, unexpected};
use crate::ServerError;
use crate::pb::etcdserverpb as pb;

#[tonic::async_trait]
impl pb::kv_server::Kv for Services {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<tonic::Response<pb::RangeResponse>, Status> {
        let _permit = self.admit()?;
        let info = self.auth_info(&request)?;
        let r = request.into_inner();
        let consistency =
            if r.serializable { Consistency::Serializable } else { Consistency::Linearizable };
        let req: RangeRequest =
            convert::range_request_from_pb(r).map_err(|e| Status::from(ServerError::from(e)))?;
        let (key, range_end) = (req.key.clone(), req.range_end.clone());
        let rx = self.runtime.read(req, consistency).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(Answer::Read(r))) => {
                // Checked after the read, against the auth state applied by then: a revoke
                // committed before a linearizable read refuses it.
                self.check_read(&info, &key, &range_end)?;
                Ok(tonic::Response::new(convert::range_response_to_pb(r, &self.ctx())))
            }
            Ok(Ok(_)) => Err(unexpected("Range")),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutResponse>, Status> {
        let cmd = Command::Put(convert::put_request_from_pb(request.get_ref().clone()));
        let response = self.write(&request, cmd).await?;
        // Applied, not yet answered: the client must treat the put as indeterminate.
        tenure_storage::failpoint!("kv-put-applied-before-reply");
        match response {
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
