//! `tenure member add|remove|update|promote` and `tenure move-leader`, with etcdctl 3.4's
//! output: `member add` prints the environment a new member starts with
//! (`ETCD_INITIAL_CLUSTER_STATE="existing"`), which `tenure serve` reads as etcd does.

use anyhow::{anyhow, bail};

use crate::cli::client::{connect_one, endpoint_uri, with_retries};
use crate::cli::{MemberCommand, MoveLeaderArgs};
use crate::ids::format_id;
use crate::pb::etcdserverpb as pb;
use pb::cluster_client::ClusterClient;
use pb::maintenance_client::MaintenanceClient;

/// `tenure member ...` other than `list`.
pub async fn member(command: &MemberCommand) -> anyhow::Result<String> {
    match command {
        MemberCommand::List(a) => super::client::member_list(a).await,
        MemberCommand::Add { name, peer_urls, learner, client } => {
            let req = pb::MemberAddRequest { peer_ur_ls: peer_urls.clone(), is_learner: *learner };
            let r = with_retries(client, |ch| {
                let req = req.clone();
                async move { ClusterClient::new(ch).member_add(req).await }
            })
            .await?;
            let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
            let added = r.member.as_ref().map_or(0, |m| m.id);
            Ok(format_added(name, added, cluster, peer_urls, &r.members))
        }
        MemberCommand::Remove { id, client } => {
            let req = pb::MemberRemoveRequest { id: *id };
            let r = with_retries(client, |ch| async move {
                ClusterClient::new(ch).member_remove(req).await
            })
            .await?;
            Ok(format!(
                "Member {} removed from cluster {}\n",
                format_id(*id),
                cluster_of(&r.header)
            ))
        }
        MemberCommand::Update { id, peer_urls, client } => {
            let req = pb::MemberUpdateRequest { id: *id, peer_ur_ls: peer_urls.clone() };
            let r = with_retries(client, |ch| {
                let req = req.clone();
                async move { ClusterClient::new(ch).member_update(req).await }
            })
            .await?;
            Ok(format!("Member {} updated in cluster {}\n", padded(*id), cluster_of(&r.header)))
        }
        MemberCommand::Promote { id, client } => {
            let req = pb::MemberPromoteRequest { id: *id };
            let r = with_retries(client, |ch| async move {
                ClusterClient::new(ch).member_promote(req).await
            })
            .await?;
            Ok(format!("Member {} promoted in cluster {}\n", padded(*id), cluster_of(&r.header)))
        }
    }
}

fn cluster_of(header: &Option<pb::ResponseHeader>) -> String {
    padded(header.as_ref().map_or(0, |h| h.cluster_id))
}

/// An id as etcdctl prints it in these messages (`%16x`: padded with spaces).
fn padded(id: u64) -> String {
    format!("{id:16x}")
}

/// etcdctl's `member add` output: the new member's flags as environment variables.
fn format_added(
    name: &str,
    id: u64,
    cluster: u64,
    peer_urls: &[String],
    members: &[pb::Member],
) -> String {
    let mut out = format!("Member {} added to cluster {}\n\n", format_id(id), format_id(cluster));
    let mut initial = Vec::new();
    for m in members {
        let member_name = if m.id == id { name } else { m.name.as_str() };
        for u in &m.peer_ur_ls {
            initial.push(format!("{member_name}={u}"));
        }
    }
    out.push_str(&format!("ETCD_NAME=\"{name}\"\n"));
    out.push_str(&format!("ETCD_INITIAL_CLUSTER=\"{}\"\n", initial.join(",")));
    out.push_str(&format!("ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{}\"\n", peer_urls.join(",")));
    out.push_str("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n");
    out
}

/// `tenure move-leader ID`: finds the leader among the endpoints (as etcdctl does, from each
/// endpoint's status) and asks it to hand leadership to `ID`.
pub async fn move_leader(a: &MoveLeaderArgs) -> anyhow::Result<String> {
    let args = &a.client;
    for ep in &args.endpoints {
        endpoint_uri(ep)?;
    }
    let mut leader = None;
    for ep in &args.endpoints {
        let Ok(ch) = connect_one(ep, args).await else { continue };
        let Ok(Ok(s)) = tokio::time::timeout(
            args.command_timeout,
            MaintenanceClient::new(ch.clone()).status(pb::StatusRequest {}),
        )
        .await
        else {
            continue;
        };
        let s = s.into_inner();
        if s.header.as_ref().is_some_and(|h| h.member_id == s.leader) {
            leader = Some((ch, s.leader));
            break;
        }
    }
    let Some((ch, from)) = leader else {
        bail!("no leader endpoint given at {}", args.endpoints.join(","));
    };
    let req = pb::MoveLeaderRequest { target_id: a.id };
    match tokio::time::timeout(args.command_timeout, MaintenanceClient::new(ch).move_leader(req))
        .await
    {
        Ok(Ok(_)) => {
            Ok(format!("Leadership transferred from {} to {}\n", format_id(from), format_id(a.id)))
        }
        Ok(Err(status)) => Err(anyhow!("{}", status.message())),
        Err(_) => Err(anyhow!("context deadline exceeded")),
    }
}
