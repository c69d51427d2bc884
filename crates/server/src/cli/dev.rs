//! `tenure dev`: a real three-member cluster in one process, on loopback.
//!
//! Each member is a full [`Member`] (its own storage directory, replica thread, sync thread,
//! peer listener and gRPC listener), so etcdctl and etcd clients talk to it exactly as they
//! would to three `tenure serve` processes. The tests start the same clusters on free ports.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cli::{ServeArgs, ServeConfig};
use crate::member::Member;

/// The client and peer ports `tenure dev` uses: clients on 2379, 12379, 22379 and each
/// member's peers on the next port up.
pub const DEV_PORTS: [(u16, u16); 3] = [(2379, 2380), (12379, 12380), (22379, 22380)];

/// Heartbeat and election timeout of a dev cluster, in milliseconds (etcd's defaults).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// `--heartbeat-interval`.
    pub heartbeat_ms: u64,
    /// `--election-timeout`.
    pub election_ms: u64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing { heartbeat_ms: 100, election_ms: 1000 }
    }
}

/// The configurations of members `n1`, `n2`, ... with `ports` (client, peer) on 127.0.0.1,
/// each keeping its data in `data_dir/<name>`.
pub fn configs(
    ports: &[(u16, u16)],
    data_dir: &Path,
    timing: Timing,
) -> anyhow::Result<Vec<ServeConfig>> {
    let name = |i: usize| format!("n{}", i + 1);
    let initial_cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("{}=http://127.0.0.1:{peer}", name(i)))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args = ServeArgs {
                name: name(i),
                data_dir: Some(data_dir.join(name(i))),
                listen_client_urls: Some(client_url.clone()),
                advertise_client_urls: Some(client_url),
                listen_peer_urls: Some(peer_url.clone()),
                initial_advertise_peer_urls: Some(peer_url),
                initial_cluster: Some(initial_cluster.clone()),
                initial_cluster_state: "new".to_string(),
                initial_cluster_token: "tenure-dev".to_string(),
                snapshot_count: 100_000,
                snapshot_catchup_entries: 5_000,
                heartbeat_interval: timing.heartbeat_ms,
                election_timeout: timing.election_ms,
                max_request_bytes: 1536 * 1024,
                max_txn_ops: 128,
                experimental_watch_progress_notify_interval: std::time::Duration::from_secs(600),
                experimental_lease_checkpoint_interval: std::time::Duration::from_secs(300),
                experimental_enable_lease_checkpoint: true,
                max_concurrent_requests: crate::api::REQUESTS_IN_FLIGHT_MAX,
                auth_token: "simple".to_string(),
                auth_token_ttl: crate::api::auth::TOKEN_TTL_SECS_DEFAULT,
                bcrypt_cost: crate::api::auth::BCRYPT_COST_DEFAULT,
                ..ServeArgs::default()
            };
            ServeConfig::from_args(&args).map_err(anyhow::Error::from)
        })
        .collect()
}

/// Starts every member of `configs` (each knows all members' client URLs). On an error the
/// members already started are stopped.
pub async fn start(configs: &[ServeConfig]) -> anyhow::Result<Vec<Member>> {
    let client_urls: BTreeMap<u64, Vec<String>> = configs
        .iter()
        .map(|c| (c.member_id, c.advertise_client_urls.iter().map(|u| u.to_string()).collect()))
        .collect();
    let mut members = Vec::new();
    for cfg in configs {
        match Member::start(cfg, &client_urls).await {
            Ok(m) => members.push(m),
            Err(e) => {
                for m in members {
                    let _ = m.shutdown().await;
                }
                return Err(e.context(format!("cannot start member {}", cfg.name)));
            }
        }
    }
    Ok(members)
}

/// The `--endpoints` value for etcdctl: every member's client address.
pub fn endpoints(configs: &[ServeConfig]) -> String {
    configs
        .iter()
        .flat_map(|c| c.advertise_client_urls.iter().map(|u| u.authority()))
        .collect::<Vec<_>>()
        .join(",")
}
