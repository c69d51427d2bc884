//! One running member: storage, the replica runtime, the peer transport and the gRPC
//! services, started from a [`ServeConfig`] and stopped gracefully.
//!
//! Start order matters for clear errors: every listener is bound first (a port in use is a
//! one-line error before anything touches the disk), then the data directory is opened
//! (bootstrapped with `--initial-cluster` when new), then the threads and tasks start.
//!
//! Once started, a member publishes its name and client URLs through the log (etcd's
//! `publish`), retrying until the entry is applied, so that `MemberList` on every member shows
//! them. A founding member (`--initial-cluster-state new`) also proposes the founders' peer
//! URLs for the member table (idempotent), which is where every transport finds its peers.
//!
//! Identity: the data directory keeps the cluster id and the member id in a file of their own
//! ([`IDS_FILE`]), written when the directory is created; a restart runs with those, whatever
//! the flags say now. A new member joining a running cluster (`--initial-cluster-state
//! existing` with an empty data directory) asks the members it is given for the cluster's view
//! ([`crate::peer::join`]), checks its flags against it, and takes its member id from the
//! `MemberAdd` that added its peer URLs and its first configuration from the view.
//!
//! A member that learns it was removed from the cluster stops serving: [`Member::removed`]
//! resolves, and `tenure serve` exits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tenure_kv::{Command, MemberPeersAction, MemberPeersRequest, Proposal, PublishMemberRequest};
use tenure_raft::{Membership, NodeId};
use tenure_replica::{ClientError, Replica, ReplicaConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{ClusterInfo, MemberInfo, Services};
use crate::cli::{ClusterState, Scheme, ServeConfig, Url};
use crate::peer::stream::{PeerAcceptor, PeerDialer};
use crate::peer::transport::{self, PeerGate, PeerSender, PeerTiming};
use crate::peer::wire::FrameCodec;
use crate::runtime::Metrics;
use crate::runtime::{Runtime, RuntimeHandle, SubmitError};
use crate::tls::MemberTls;

/// A member serving clients and peers until [`Member::shutdown`].
pub struct Member {
    name: String,
    runtime: Option<Runtime>,
    /// The peer transport's own tokio runtime (one thread): messages to and from peers never
    /// queue behind client requests on the runtime that serves gRPC, so a flood of clients
    /// cannot delay heartbeats (the replica thread's lanes keep them apart after that).
    peer_runtime: Option<tokio::runtime::Runtime>,
    tasks: Vec<JoinHandle<()>>,
    stop_clients: watch::Sender<bool>,
    /// The switch on this member's peer traffic (see [`PeerGate`]).
    gate: PeerGate,
    /// TLS for calls to other members' https client URLs, when its client URLs are https.
    client_tls: Option<Arc<rustls::ClientConfig>>,
}

async fn bind(url: &Url, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(url.authority())
        .await
        .with_context(|| format!("cannot listen for {what} on {url}"))
}

impl Member {
    /// Binds, opens storage and starts serving. `client_urls` supplies the client URLs of
    /// other members for `MemberList`, where the caller knows them (`tenure dev` does).
    pub async fn start(
        cfg: &ServeConfig,
        client_urls: &BTreeMap<u64, Vec<String>>,
    ) -> anyhow::Result<Member> {
        let mut peer_listeners = Vec::new();
        for url in &cfg.listen_peer_urls {
            peer_listeners.push(bind(url, "peers").await?);
        }
        let mut client_listeners = Vec::new();
        for url in &cfg.listen_client_urls {
            client_listeners.push(bind(url, "clients").await?);
        }

        // Every certificate file is read now: a missing file or a key that does not match
        // ends start-up before the data directory is opened (auto TLS writes its pair there,
        // which `identify` does not count as data).
        crate::tls::install_crypto_provider();
        let client_tls = match &cfg.client_tls {
            Some(s) => {
                let hosts =
                    url_hosts(cfg.listen_client_urls.iter().chain(&cfg.advertise_client_urls));
                Some(MemberTls::load(s, &cfg.data_dir, &hosts, &crate::tls::CLIENT_ALPN)?)
            }
            None => None,
        };
        let peer_tls = match &cfg.peer_tls {
            Some(s) => {
                let urls = cfg.listen_peer_urls.iter().chain(&cfg.initial_advertise_peer_urls);
                Some(MemberTls::load(s, &cfg.data_dir, &url_hosts(urls), &[])?)
            }
            None => None,
        };
        let dialer = match &peer_tls {
            Some(t) => PeerDialer::with_tls(Arc::clone(&t.client)),
            None => PeerDialer::plain(),
        };

        let (effective, bootstrap) = identify(cfg, &dialer).await?;
        let cfg = &effective;
        let replica = open_replica(cfg, bootstrap)?;
        let request_bytes_max = replica.kv().config().request_bytes_max;

        let codec = FrameCodec::new(cfg.cluster_id, cfg.member_id);
        let peers: Vec<(u64, String)> = cfg
            .members
            .iter()
            .filter(|m| m.id != cfg.member_id)
            .filter_map(|m| m.peer_urls.first().map(|u| (m.id, u.to_string())))
            .collect();
        let metrics = Arc::new(Metrics::new());
        // Peer connections give up on a silent peer within one election timeout.
        let timing = PeerTiming {
            heartbeat_interval: cfg.heartbeat_interval,
            election_timeout: cfg.election_timeout,
        };
        let peer_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("{}-peer", cfg.name))
            .enable_all()
            .build()
            .context("cannot start the peer transport's runtime")?;
        // The sender spawns its connection tasks, and later its snapshot streams, on the
        // runtime it is started in.
        let gate = PeerGate::default();
        let sender = {
            let _peer_context = peer_runtime.enter();
            let metrics = Arc::clone(&metrics);
            PeerSender::start_with_gate(codec, &peers, timing, metrics, dialer, gate.clone())
        };
        let runtime = Runtime::start_with_metrics(
            cfg.name.clone(),
            replica,
            Box::new(sender),
            cfg.tick_interval(),
            metrics,
        )
        .context("cannot start the replica threads")?;
        let handle = runtime.handle();

        let mut tasks = Vec::new();
        let responder = Arc::new(crate::peer::join::Responder {
            cluster_id: cfg.cluster_id,
            token_hash: crate::peer::join::token_hash(&cfg.initial_cluster_token),
            configured: cfg
                .members
                .iter()
                .map(|m| (m.id, m.peer_urls.iter().map(Url::to_string).collect()))
                .collect(),
        });
        for (l, url) in peer_listeners.into_iter().zip(&cfg.listen_peer_urls) {
            let acceptor = match (&peer_tls, url.scheme) {
                (Some(t), Scheme::Https) => PeerAcceptor::with_tls(Arc::clone(&t.server)),
                _ => PeerAcceptor::plain(),
            };
            let accept = transport::accept_loop(
                l,
                acceptor,
                codec,
                timing,
                handle.clone(),
                Arc::clone(&responder),
                gate.clone(),
            );
            tasks.push(peer_runtime.spawn(accept));
        }
        if cfg.initial_cluster_state == ClusterState::New {
            let seed = MemberPeersAction::Seed(responder.configured.clone().into_iter().collect());
            let seed = Command::MemberPeers(MemberPeersRequest { action: seed });
            let name = format!("{}: the founding members' peer URLs", cfg.name);
            tasks.push(tokio::spawn(propose_until_applied(
                handle.clone(),
                name,
                seed,
                cfg.tick_interval(),
            )));
        }
        let attributes = PublishMemberRequest::new(
            cfg.member_id,
            cfg.name.clone(),
            cfg.advertise_client_urls.iter().map(Url::to_string).collect(),
        );
        tasks.push(tokio::spawn(publish(
            handle.clone(),
            cfg.name.clone(),
            attributes,
            cfg.tick_interval(),
        )));
        if let Some(mode) = cfg.auto_compaction {
            tasks.push(tokio::spawn(crate::compactor::run(handle.clone(), cfg.name.clone(), mode)));
        }
        if cfg.corrupt_check != crate::corruption::CorruptCheck::default() {
            tasks.push(tokio::spawn(crate::corruption::run(
                handle.clone(),
                cfg.name.clone(),
                cfg.member_id,
                cfg.corrupt_check,
                cfg.election_timeout.max(Duration::from_secs(1)),
                client_tls.as_ref().map(|t| Arc::clone(&t.client)),
            )));
        }
        let (stop_clients, stopped) = watch::channel(false);
        let watch = crate::api::watch::WatchConfig {
            leader_check_interval: cfg.election_timeout,
            progress_notify_interval: cfg.watch_progress_notify_interval,
        };
        let services = Services::new(handle, cluster_info(cfg, client_urls), request_bytes_max)
            .with_requests_in_flight_max(cfg.max_concurrent_requests)
            .with_watch_config(watch)
            .with_quota(cfg.quota)
            .with_auth_config(cfg.auth)
            .with_cors(cfg.cors.clone())
            .with_lease_ttl_min_secs(crate::api::lease::lease_ttl_min_secs(
                u64::try_from(cfg.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
                cfg.election_ticks(),
            ))
            .with_client_tls(client_tls.as_ref().map(|t| Arc::clone(&t.client)))
            .with_report(cfg.name.clone(), gate.clone());
        for (l, url) in client_listeners.into_iter().zip(&cfg.listen_client_urls) {
            let router = services.clone().router();
            let tls = match (&client_tls, url.scheme) {
                (Some(t), Scheme::Https) => Some(Arc::clone(&t.server)),
                _ => None,
            };
            // TCP_NODELAY, TLS on https listeners, and the :authority fix for etcd 3.4
            // clients (see api::incoming).
            let incoming = crate::api::incoming::incoming_with_tls(l, tls);
            let mut stopped = stopped.clone();
            let name = cfg.name.clone();
            tasks.push(tokio::spawn(async move {
                let signal = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                if let Err(e) = router.serve_with_incoming_shutdown(incoming, signal).await {
                    tracing::error!("{name}: client listener failed: {e}");
                }
            }));
        }
        Ok(Member {
            name: cfg.name.clone(),
            runtime: Some(runtime),
            peer_runtime: Some(peer_runtime),
            tasks,
            stop_clients,
            gate,
            client_tls: client_tls.as_ref().map(|t| Arc::clone(&t.client)),
        })
    }

    /// The switch on this member's peer traffic and what its connections tell about its
    /// peers.
    pub fn gate(&self) -> &PeerGate {
        &self.gate
    }

    /// TLS for calling other members' https client URLs (its certificate and trusted CA), if
    /// its client URLs are https.
    pub fn client_tls(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.client_tls.clone()
    }

    /// This member's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle to the member's replica.
    pub fn handle(&self) -> RuntimeHandle {
        self.runtime.as_ref().expect("running until shutdown").handle()
    }

    /// Resolves once this member knows it was removed from the cluster (it should stop: the
    /// others no longer answer it as a member).
    pub async fn removed(&self) {
        let handle = self.handle();
        loop {
            if handle.status().removed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops serving clients and peers, makes everything written durable and stops the
    /// replica.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop_clients.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        if let Some(runtime) = self.runtime.take() {
            tokio::task::spawn_blocking(move || runtime.shutdown())
                .await
                .context("replica shutdown task failed")?
                .context("replica stopped with an error")?;
        }
        if let Some(peers) = self.peer_runtime.take() {
            peers.shutdown_background();
        }
        Ok(())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropping a runtime blocks on its tasks, which is not allowed inside another runtime.
        if let Some(peers) = self.peer_runtime.take() {
            peers.shutdown_background();
        }
    }
}

/// Proposes this member's attributes once a leader is known, and again after every failure
/// that may be transient (no leader, a leader change, a timeout, a full queue), until the
/// entry is applied here; pausing `retry` between attempts. A publication is idempotent, so a
/// retry of an entry that did commit changes nothing. Ends early if the replica stops or the
/// state machine refuses the attributes (logged: a retry would be refused the same way).
async fn publish(
    runtime: RuntimeHandle,
    name: String,
    attributes: PublishMemberRequest,
    retry: Duration,
) {
    let what = format!("{name}: its name and client URLs");
    propose_until_applied(runtime, what, Command::PublishMember(attributes), retry).await;
}

/// Proposes an idempotent command of the member's own once a leader is known, and again after
/// every failure that may be transient, until it is applied here (see [`publish`]).
async fn propose_until_applied(
    runtime: RuntimeHandle,
    what: String,
    command: Command,
    retry: Duration,
) {
    let proposal = Proposal::new(command);
    loop {
        let status = runtime.status();
        if status.stopped {
            return;
        }
        if status.leader.is_some() {
            match runtime.propose(proposal.clone()) {
                Err(SubmitError::Stopped) => return,
                Err(SubmitError::Full) => {}
                Ok(rx) => match rx.await {
                    Err(_) => return,
                    Ok(Ok(_)) => {
                        tracing::info!("published {what}");
                        return;
                    }
                    Ok(Err(ClientError::Kv(e))) => {
                        tracing::error!("cannot publish {what}: {e}");
                        return;
                    }
                    Ok(Err(e)) => tracing::debug!("publishing {what}: {e}; retrying"),
                },
            }
        }
        tokio::time::sleep(retry).await;
    }
}

/// The file in the data directory that keeps the cluster id and the member id.
pub const IDS_FILE: &str = "member-ids";

/// Works out who this member is: the ids kept in the data directory; for a new directory, the
/// ids from the flags (a new cluster) or from the running cluster's view (joining one). Writes
/// the ids file for a new directory. Returns the configuration to run with and the membership
/// to bootstrap a new directory with.
async fn identify(
    cfg: &ServeConfig,
    dialer: &PeerDialer,
) -> anyhow::Result<(ServeConfig, Membership)> {
    let mut effective = cfg.clone();
    // Auto TLS's self-signed pairs (`fixtures/`) are made before this and are no data.
    let fresh = std::fs::read_dir(&cfg.data_dir).map_or(true, |d| {
        d.filter_map(Result::ok).all(|e| e.file_name() == std::ffi::OsStr::new("fixtures"))
    });
    let ids_path = cfg.data_dir.join(IDS_FILE);
    let founders = Membership::voters(cfg.members.iter().map(|m| NodeId(m.id)));
    if !fresh {
        match std::fs::read_to_string(&ids_path) {
            Ok(text) => {
                let (cluster_id, member_id) = parse_ids(&text).with_context(|| {
                    format!("{} is damaged; it should hold two hex ids", ids_path.display())
                })?;
                effective.cluster_id = cluster_id;
                effective.member_id = member_id;
            }
            // A directory from before the file existed: the flags' ids are the ones it ran with.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_ids(&effective)?,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", ids_path.display())),
        }
        return Ok((effective, founders));
    }
    if cfg.initial_cluster_state == ClusterState::New {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
        write_ids(&effective)?;
        return Ok((effective, founders));
    }
    let own: Vec<String> = cfg.initial_advertise_peer_urls.iter().map(Url::to_string).collect();
    let others: Vec<String> = cfg
        .members
        .iter()
        .filter(|m| m.peer_urls.iter().map(Url::to_string).collect::<Vec<_>>() != own)
        .filter_map(|m| m.peer_urls.first().map(Url::to_string))
        .collect();
    if others.is_empty() {
        anyhow::bail!(
            "--initial-cluster-state=existing needs --initial-cluster to list the running \
             cluster's members (it lists only this one)"
        );
    }
    let view = crate::peer::join::fetch(dialer, &others, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the running cluster to join it: {e}"))?;
    let initial: Vec<Vec<String>> =
        cfg.members.iter().map(|m| m.peer_urls.iter().map(Url::to_string).collect()).collect();
    let joined = crate::peer::join::check_join(&view, &cfg.initial_cluster_token, &own, &initial)
        .map_err(|e| anyhow::anyhow!("cannot join the running cluster: {e}"))?;
    effective.cluster_id = joined.cluster_id;
    effective.member_id = joined.member_id;
    // The flags computed ids from peer URLs; the running cluster's ids are the real ones.
    for m in &mut effective.members {
        let urls: Vec<String> = m.peer_urls.iter().map(Url::to_string).collect();
        if let Some(v) = joined.members.iter().find(|v| v.peer_urls == urls) {
            m.id = v.id;
        }
    }
    let membership = Membership {
        voters: tenure_raft::quorum::JointConfig::simple(
            joined.members.iter().filter(|m| !m.learner).map(|m| NodeId(m.id)),
        ),
        learners: joined.members.iter().filter(|m| m.learner).map(|m| NodeId(m.id)).collect(),
    };
    tracing::info!(
        "{}: joining cluster {} as member {} ({} members)",
        cfg.name,
        crate::ids::format_id(joined.cluster_id),
        crate::ids::format_id(joined.member_id),
        joined.members.len()
    );
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    write_ids(&effective)?;
    Ok((effective, membership))
}

/// The hosts of `urls`, for the names a self-signed certificate is made for.
fn url_hosts<'a>(urls: impl Iterator<Item = &'a Url>) -> Vec<String> {
    urls.map(|u| u.host.clone()).collect()
}

fn parse_ids(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_whitespace();
    let cluster = u64::from_str_radix(words.next()?, 16).ok()?;
    let member = u64::from_str_radix(words.next()?, 16).ok()?;
    words.next().is_none().then_some((cluster, member))
}

fn write_ids(cfg: &ServeConfig) -> anyhow::Result<()> {
    let path = cfg.data_dir.join(IDS_FILE);
    let tmp = cfg.data_dir.join(format!("{IDS_FILE}.tmp"));
    let text = format!(
        "{} {}\n",
        crate::ids::format_id(cfg.cluster_id),
        crate::ids::format_id(cfg.member_id)
    );
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&cfg.data_dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Bytes of entries in flight to one follower (see `open_replica`).
const INFLIGHT_BYTES_MAX: u64 = 8 << 20;

/// Opens (or bootstraps, with `bootstrap`) the member's storage and replica.
fn open_replica(cfg: &ServeConfig, bootstrap: Membership) -> anyhow::Result<Replica> {
    let mut rc = ReplicaConfig::new(NodeId(cfg.member_id), new_incarnation());
    rc.raft.election_ticks = cfg.election_ticks();
    rc.raft.heartbeat_ticks = 1;
    // Ticks are heartbeat intervals: a request waits at most about one election timeout
    // times five before it times out (etcd waits a fixed 5 s plus the election timeout).
    rc.request_timeout_ticks = u64::from(cfg.election_ticks()) * 5;
    // Entries for a follower that is far behind are read from the log files on the replica
    // thread, as much per turn as its in-flight window frees: 64 MiB at once (the core's
    // default) delayed heartbeats past the election timeout on a loaded machine while a
    // learner caught up on a 1 GiB log (BENCHMARKS, "Membership changes"). 8 MiB still
    // keeps a loopback or LAN link full (one window per round trip).
    rc.raft.inflight_bytes_max = INFLIGHT_BYTES_MAX;
    rc.kv.request_bytes_max = cfg.max_request_bytes;
    rc.kv.txn_ops_max = cfg.max_txn_ops;
    // A log entry holds one request plus its envelope; leave room for both.
    let entry_bytes = u64::try_from(cfg.max_request_bytes).unwrap_or(u64::MAX);
    rc.storage.entry_bytes_max = rc.storage.entry_bytes_max.max(entry_bytes.saturating_add(4096));
    // A new leader extends every lease by the election timeout, as etcd does.
    rc.lease.promotion_extension_ms =
        u64::try_from(cfg.election_timeout.as_millis()).unwrap_or(u64::MAX);
    rc.lease.checkpoint_interval_ms =
        u64::try_from(cfg.lease_checkpoint_interval.as_millis()).unwrap_or(u64::MAX);
    rc.snapshot.entries = cfg.snapshot_count;
    rc.snapshot.catchup_entries = cfg.snapshot_catchup_entries;
    Replica::open(rc, Arc::new(tenure_storage::RealDisk), &cfg.data_dir, bootstrap)
        .with_context(|| format!("cannot open data dir {}", cfg.data_dir.display()))
}

/// 64 random bits naming this run of the member (see `ReplicaConfig::incarnation`): request
/// ids restart with the process, and the incarnation keeps an earlier run's entries and read
/// confirmations from answering this run's requests. std's `RandomState` is seeded from the
/// operating system's random source; the clock and the process id are mixed in as well. Never
/// 0, which entries written before incarnations existed carry.
fn new_incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(since_epoch);
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn cluster_info(cfg: &ServeConfig, client_urls: &BTreeMap<u64, Vec<String>>) -> ClusterInfo {
    let members = cfg
        .members
        .iter()
        .map(|m| {
            let client = if m.id == cfg.member_id {
                cfg.advertise_client_urls.iter().map(Url::to_string).collect()
            } else {
                client_urls.get(&m.id).cloned().unwrap_or_default()
            };
            MemberInfo {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.iter().map(Url::to_string).collect(),
                client_urls: client,
            }
        })
        .collect();
    ClusterInfo { cluster_id: cfg.cluster_id, member_id: cfg.member_id, members }
}
