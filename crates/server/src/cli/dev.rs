//! `tenure dev`: a real three-member cluster in one process, on loopback.
//!
//! Each member is a full [`Member`] (its own storage directory, replica thread, sync thread,
//! peer listener and gRPC listener), so etcdctl and etcd clients talk to it exactly as they
//! would to three `tenure serve` processes. The tests start the same clusters on free ports.
//!
//! The dashboard ([`crate::dashboard`]) watches the three and has the buttons that kill,
//! restart, pause and isolate them: `http://127.0.0.1:8379` unless `--dashboard` says
//! otherwise.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::cli::{DevArgs, ServeArgs, ServeConfig};
use crate::dashboard::{Dashboard, DevCluster};
use crate::member::Member;

/// Where `tenure dev`'s dashboard listens unless `--dashboard` says otherwise.
pub const DASHBOARD_ADDR: &str = "127.0.0.1:8379";

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

/// Puts `members` (started from `configs`, in order) under a dashboard with controls on
/// `listener`; the returned cluster owns the members (stop them with
/// [`DevCluster::shutdown`]).
pub fn start_dashboard(
    listener: tokio::net::TcpListener,
    configs: Vec<ServeConfig>,
    members: Vec<Member>,
) -> anyhow::Result<(Arc<DevCluster>, Dashboard)> {
    let (cluster, sources) = DevCluster::new(configs, members);
    let cluster = Arc::new(cluster);
    let dashboard = Dashboard::start(listener, sources, Some(Arc::clone(&cluster)))?;
    Ok((cluster, dashboard))
}

/// `tenure dev`: starts the cluster and its dashboard, prints what to try, and runs until
/// `stop` resolves (Ctrl-C).
pub async fn run(args: DevArgs, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    // The temporary directory lives until the cluster has stopped.
    let temp;
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new().prefix("tenure-dev-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let mut configs = configs(&DEV_PORTS, &data_dir, Timing::default())?;
    for c in &mut configs {
        c.snapshot_count = args.snapshot_count;
        c.snapshot_catchup_entries = args.snapshot_catchup_entries;
    }
    // Bound before the members start: a dashboard port in use is a one-line error.
    let listener = tokio::net::TcpListener::bind(&args.dashboard).await.map_err(|e| {
        anyhow::anyhow!("cannot listen for the dashboard on {}: {e}", args.dashboard)
    })?;
    let members = start(&configs).await?;
    let endpoints = endpoints(&configs);
    println!("tenure dev: 3 members on loopback, data in {}", data_dir.display());
    for c in &configs {
        let client = c.advertise_client_urls.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        let peer = c.initial_advertise_peer_urls.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        println!("  {}: clients {}  peers {}", c.name, client.join(","), peer.join(","));
    }
    let (cluster, dashboard) = start_dashboard(listener, configs, members)?;
    println!(
        "dashboard: http://{} (kill, pause, isolate members; scenario player)",
        dashboard.addr()
    );
    println!("try:");
    println!("  ETCDCTL_API=3 etcdctl --endpoints={endpoints} put hello world");
    println!("  ETCDCTL_API=3 etcdctl --endpoints={endpoints} get hello");
    println!("  ETCDCTL_API=3 etcdctl --endpoints={endpoints} endpoint status -w table");
    println!("Ctrl-C stops the cluster.");
    stop.await;
    println!("tenure dev: stopping");
    drop(dashboard);
    cluster.shutdown().await
}
