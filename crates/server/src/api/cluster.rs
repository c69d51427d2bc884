//! `etcdserverpb.Cluster`: `MemberList`, `MemberAdd`, `MemberRemove`, `MemberUpdate`,
//! `MemberPromote`; and the body of `Maintenance.MoveLeader`.
//!
//! The members are the Raft configuration in force (voters and learners), shown with what the
//! replicated member table holds for each (name and client URLs as the member published them,
//! peer URLs as the change that added it recorded them). `MemberList` is linearizable, as in
//! etcd 3.5: it waits on a read barrier first.
//!
//! Adds, removes and promotes are configuration changes, which only the leader can propose; a
//! follower forwards the call to the leader's client URL (etcd's followers forward the
//! proposal through Raft; the answer is the same). `MemberUpdate` changes the table only, so
//! it is an ordinary write that any member forwards through the log.

use std::collections::BTreeMap;
use std::time::Duration;

use tenure_kv::{Command, MemberAttributes, MemberPeersAction, MemberPeersRequest};
use tenure_raft::{Membership, NodeId};
use tenure_replica::{Answer, ClientError, MemberRequest};
use tonic::{Request, Status};

use super::{Services, client_status, submit_status};
use crate::ServerError;
use crate::pb::etcdserverpb as pb;

/// How long `MoveLeader` waits for the transferee to take over (etcd waits up to its request
/// timeout, then answers "leader transfer took too long").
const MOVE_LEADER_WAIT: Duration = Duration::from_secs(5);

/// What the member list is built from, read on the replica thread in one go.
struct MemberView {
    membership: Membership,
    attributes: BTreeMap<u64, MemberAttributes>,
    peer_urls: BTreeMap<u64, Vec<String>>,
}

impl Services {
    async fn member_snapshot(&self) -> Result<MemberView, Status> {
        let rx = self
            .runtime
            .inspect(|r| MemberView {
                membership: r.membership().clone(),
                attributes: r.kv().members().map(|(id, a)| (id, a.clone())).collect(),
                peer_urls: r.kv().member_peers().map(|(id, u)| (id, u.to_vec())).collect(),
            })
            .map_err(submit_status)?;
        rx.await.map_err(|_| ServerError::Stopped.into())
    }

    /// The members of the configuration in force, as `MemberList` shows them.
    async fn member_list_pb(&self) -> Result<Vec<pb::Member>, Status> {
        let s = self.member_snapshot().await?;
        let configured: BTreeMap<u64, &super::MemberInfo> =
            self.cluster.members.iter().map(|m| (m.id, m)).collect();
        let members = s
            .membership
            .members()
            .into_iter()
            .map(|id| {
                let id = id.0;
                let published = s.attributes.get(&id);
                let configured = configured.get(&id);
                pb::Member {
                    id,
                    name: published
                        .map(|a| a.name.clone())
                        .or_else(|| configured.map(|c| c.name.clone()))
                        .unwrap_or_default(),
                    peer_ur_ls: s
                        .peer_urls
                        .get(&id)
                        .cloned()
                        .or_else(|| configured.map(|c| c.peer_urls.clone()))
                        .unwrap_or_default(),
                    client_ur_ls: published
                        .map(|a| a.client_urls.clone())
                        .or_else(|| configured.map(|c| c.client_urls.clone()))
                        .unwrap_or_default(),
                    is_learner: s.membership.learners.contains(&NodeId(id)),
                }
            })
            .collect();
        Ok(members)
    }

    /// Runs a configuration change here, or on the leader if this member is a follower.
    async fn change_members(&self, request: MemberRequest) -> Result<(), ChangeOutcome> {
        let _permit = self.admit().map_err(ChangeOutcome::Failed)?;
        let rx = self
            .runtime
            .change_members(request)
            .map_err(|e| ChangeOutcome::Failed(submit_status(e)))?;
        match rx.await {
            Ok(Ok(Answer::Membership(_))) => Ok(()),
            Ok(Ok(_)) => Err(ChangeOutcome::Failed(super::unexpected("a membership change"))),
            Ok(Err(ClientError::NotLeader { leader_hint: Some(leader) })) => {
                Err(ChangeOutcome::NotLeader(leader.0))
            }
            Ok(Err(e)) => Err(ChangeOutcome::Failed(client_status(e))),
            Err(_) => Err(ChangeOutcome::Failed(ServerError::Stopped.into())),
        }
    }

    /// A channel to the leader's client URL, for a call a follower cannot serve.
    async fn leader_channel(&self, leader: u64) -> Result<tonic::transport::Channel, Status> {
        let s = self.member_snapshot().await?;
        let urls = s
            .attributes
            .get(&leader)
            .map(|a| a.client_urls.clone())
            .or_else(|| {
                self.cluster.members.iter().find(|m| m.id == leader).map(|m| m.client_urls.clone())
            })
            .unwrap_or_default();
        let mut why = Vec::new();
        for url in urls {
            // An https client URL is dialled with this member's certificate and trusted CA.
            let tls = self.client_tls.clone();
            let configure =
                |e: tonic::transport::Endpoint| e.connect_timeout(Duration::from_secs(2));
            match crate::tls::connect_channel(&url, tls, configure).await {
                Ok(c) => return Ok(c),
                Err(e) => why.push(format!("{url}: {e}")),
            }
        }
        tracing::warn!("cannot forward a membership change to the leader: {}", why.join("; "));
        Err(ServerError::NotLeader.into())
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.ctx().header(self.runtime.status().revision))
    }

    /// `Maintenance.MoveLeader`: on the leader, hands leadership to `target` and waits until
    /// it leads (etcd answers a follower "not leader").
    pub(super) async fn move_leader_on_leader(
        &self,
        target: u64,
    ) -> Result<tonic::Response<pb::MoveLeaderResponse>, Status> {
        let status = self.runtime.status();
        if status.leader == Some(target) && status.is_leader {
            return Ok(tonic::Response::new(pb::MoveLeaderResponse { header: self.header() }));
        }
        let rx = self.runtime.transfer_leader(NodeId(target)).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServerError::from(e).into()),
            Err(_) => return Err(ServerError::Stopped.into()),
        }
        let deadline = tokio::time::Instant::now() + MOVE_LEADER_WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.runtime.status().leader == Some(target) {
                return Ok(tonic::Response::new(pb::MoveLeaderResponse { header: self.header() }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(ServerError::LeaderTransferTimeout.into())
    }
}

/// How a configuration change attempted here ended.
enum ChangeOutcome {
    /// This member is a follower; `leader` can do it.
    NotLeader(u64),
    /// Refused or failed, with etcd's status.
    Failed(Status),
}

/// A new member's id: a hash of its peer URLs and the time, as etcd's `MemberAdd` makes it
/// (so a member added again at the same URLs after its removal gets a new id).
fn new_member_id(peer_urls: &[String]) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    crate::ids::member_id(peer_urls, &nanos.to_string()).max(1)
}

/// etcd's check of the URLs given to `MemberAdd` and `MemberUpdate`.
fn check_urls(urls: &[String]) -> Result<(), Status> {
    let ok = !urls.is_empty()
        && urls.iter().all(|u| crate::cli::Url::parse(u).is_ok())
        && tenure_kv::check_peer_urls(urls).is_ok();
    if ok { Ok(()) } else { Err(ServerError::MemberBadUrls.into()) }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Services {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<tonic::Response<pb::MemberAddResponse>, Status> {
        let token = super::auth::forwarded_token(&request);
        self.check_admin(&request)?;
        let r = request.into_inner();
        check_urls(&r.peer_ur_ls)?;
        let member_id = new_member_id(&r.peer_ur_ls);
        let change = MemberRequest::Add {
            member_id,
            peer_urls: r.peer_ur_ls.clone(),
            learner: r.is_learner,
        };
        match self.change_members(change).await {
            Ok(()) => {}
            Err(ChangeOutcome::NotLeader(leader)) => {
                let mut c =
                    pb::cluster_client::ClusterClient::new(self.leader_channel(leader).await?);
                return c.member_add(super::auth::forward(r, token)).await;
            }
            Err(ChangeOutcome::Failed(s)) => return Err(s),
        }
        let member = pb::Member {
            id: member_id,
            name: String::new(),
            peer_ur_ls: r.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        let members = self.member_list_pb().await?;
        Ok(tonic::Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<tonic::Response<pb::MemberRemoveResponse>, Status> {
        let token = super::auth::forwarded_token(&request);
        self.check_admin(&request)?;
        let r = request.into_inner();
        match self.change_members(MemberRequest::Remove { member_id: r.id }).await {
            Ok(()) => {}
            Err(ChangeOutcome::NotLeader(leader)) => {
                let mut c =
                    pb::cluster_client::ClusterClient::new(self.leader_channel(leader).await?);
                return c.member_remove(super::auth::forward(r, token)).await;
            }
            Err(ChangeOutcome::Failed(s)) => return Err(s),
        }
        let members = self.member_list_pb().await?;
        Ok(tonic::Response::new(pb::MemberRemoveResponse { header: self.header(), members }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<tonic::Response<pb::MemberUpdateResponse>, Status> {
        self.check_admin(&request)?;
        let r = request.into_inner();
        check_urls(&r.peer_ur_ls)?;
        // Only a member of the configuration can be updated (etcd: "member not found").
        if !self.member_snapshot().await?.membership.contains(NodeId(r.id)) {
            return Err(ServerError::MemberNotFound.into());
        }
        let action = MemberPeersAction::Update { member_id: r.id, peer_urls: r.peer_ur_ls };
        let command = Command::MemberPeers(MemberPeersRequest { action });
        let _permit = self.admit()?;
        let rx = self.runtime.propose(tenure_kv::Proposal::new(command)).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(ClientError::Kv(tenure_kv::Error::InvalidMember(e)))) => {
                return Err(ServerError::from(tenure_replica::MemberRefusal::Table(e)).into());
            }
            Ok(Err(e)) => return Err(client_status(e)),
            Err(_) => return Err(ServerError::Stopped.into()),
        }
        let members = self.member_list_pb().await?;
        Ok(tonic::Response::new(pb::MemberUpdateResponse { header: self.header(), members }))
    }

    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<tonic::Response<pb::MemberListResponse>, Status> {
        // Linearizable, as in etcd 3.5: everything committed before the call is applied here.
        let _permit = self.admit()?;
        let rx = self.runtime.barrier().map_err(submit_status)?;
        match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(client_status(e)),
            Err(_) => return Err(ServerError::Stopped.into()),
        }
        let members = self.member_list_pb().await?;
        Ok(tonic::Response::new(pb::MemberListResponse { header: self.header(), members }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<tonic::Response<pb::MemberPromoteResponse>, Status> {
        let token = super::auth::forwarded_token(&request);
        self.check_admin(&request)?;
        let r = request.into_inner();
        match self.change_members(MemberRequest::Promote { member_id: r.id }).await {
            Ok(()) => {}
            Err(ChangeOutcome::NotLeader(leader)) => {
                let mut c =
                    pb::cluster_client::ClusterClient::new(self.leader_channel(leader).await?);
                return c.member_promote(super::auth::forward(r, token)).await;
            }
            Err(ChangeOutcome::Failed(s)) => return Err(s),
        }
        let members = self.member_list_pb().await?;
        Ok(tonic::Response::new(pb::MemberPromoteResponse { header: self.header(), members }))
    }
}
