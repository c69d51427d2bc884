//! The client API of one member: the etcd v3 gRPC services, one module each, and the HTTP
//! endpoints on the same port.
//!
//! | module | what it serves |
//! |---|---|
//! | [`kv`] | `etcdserverpb.KV`: Range, Put, DeleteRange, Txn, Compact |
//! | [`lease`] | `etcdserverpb.Lease`: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases |
//! | [`lock`] | `v3lockpb.Lock`: Lock, Unlock |
//! | [`election`] | `v3electionpb.Election`: Campaign, Proclaim, Leader, Observe, Resign |
//! | [`concurrency`] | what Lock and Election share: etcd's concurrency recipes (sessions, waiting for deletes, key layout) run inside the member |
//! | [`auth`] | `etcdserverpb.Auth` (users, roles, tokens), and who sent a request: the checks every service runs |
//! | [`cluster`] | `etcdserverpb.Cluster`: MemberList |
//! | [`maintenance`] | `etcdserverpb.Maintenance`: Status, Alarm, Snapshot, Hash, HashKV, Defragment; the backend quota |
//! | [`http`] | `/health`, `/livez`, `/readyz`, `/version`, `/metrics`; 404 for paths not served |
//! | [`gateway`] | etcd's gRPC gateway: the services above as JSON over HTTP (`/v3/kv/range`, ...) |
//! | [`incoming`] | accepted client connections: `TCP_NODELAY`, and an `:authority` with a scheme made acceptable |
//! | [`convert`] | protobuf ⇄ [`tenure_kv`] requests and responses; [`convert::HeaderContext`] |
//! | [`error`] | [`ServerError`] and its mapping to `tonic::Status` with etcd's exact codes and messages |
//!
//! This file holds [`Services`] (what every service shares: the runtime handle, the cluster's
//! identity, the request size limit) and the router that puts them on one port. A new service
//! is one new file here and one line in [`Services::router`].
//!
//! Writes (`Put`, `DeleteRange`, `Txn`, `Compact`) become a [`Proposal`] and wait for the
//! replica to apply it; a follower forwards the proposal to the leader and answers once it
//! has applied the entry itself. `Range` is linearizable (ReadIndex) unless the request sets
//! `serializable`, which reads this member's state at once. A proposal carries a session tag
//! (exactly-once retries) only when tenure's own client sends `x-tenure-client-id` and
//! `x-tenure-sequence` metadata; etcd clients get etcd's at-least-once behaviour.

pub mod auth;
pub mod cluster;
pub mod concurrency;
pub mod convert;
pub mod election;
pub mod error;
pub mod gateway;
pub mod http;
pub mod incoming;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod watch;

use tenure_kv::{Command, Proposal, Response};
use tenure_replica::{Answer, ClientError};
use tonic::{Request, Status};

use self::convert::HeaderContext;
use self::error::ServerError;
use crate::pb::etcdserverpb as pb;
use crate::runtime::{RuntimeHandle, SubmitError};

/// The etcd release whose API and behaviour tenure serves, as `/version` reports it. 3.4.31 is
/// the first 3.4 release whose watch progress responses come only after the events before
/// them (etcd issue 15220), as tenure's do, so clients that gate progress requests on the
/// version (kube-apiserver wants 3.4.31 or 3.5.13) use them.
pub const ETCD_VERSION: &str = "3.4.31";

/// tenure's own version, reported beside [`ETCD_VERSION`].
pub const TENURE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version `Maintenance/Status` reports: [`ETCD_VERSION`] with tenure's version as semver
/// build metadata, which orders equal to the plain version (a `-tenure` pre-release suffix
/// would order before 3.4.31 and fail version gates).
pub const VERSION: &str = concat!("3.4.31+tenure.", env!("CARGO_PKG_VERSION"));

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
    /// Permits for client requests in flight on this member (see [`REQUESTS_IN_FLIGHT_MAX`]).
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
    /// How watch streams behave.
    watch: watch::WatchConfig,
    /// The shortest lease TTL granted, in seconds (see [`lease::lease_ttl_min_secs`]).
    lease_ttl_min_secs: i64,
    /// The backend quota (see [`maintenance::Quota`]).
    quota: maintenance::Quota,
    /// Tokens, logins and password hashing (see [`auth`]).
    auth: std::sync::Arc<auth::Authenticator>,
    /// CORS on the HTTP endpoints (`--cors`).
    cors: std::sync::Arc<http::Cors>,
    /// TLS for calls to other members' client URLs (forwarding to the leader), when the
    /// client URLs are https: this member's certificate and trusted CA.
    client_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// This member's name and peer switch, for its dashboard report
    /// (`GET /dashboard/v1/member`, see [`crate::runtime::MemberReport`]).
    report: Option<std::sync::Arc<(String, crate::peer::transport::PeerGate)>>,
}

/// Client requests (reads and writes) a member works on at once at most. Beyond it a request
/// is refused at once with etcd's "too many requests" instead of queueing: under a flood,
/// clients hear that they must back off within a round trip, rather than waiting until their
/// deadline behind thousands of others, and the work queued on the member stays bounded.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;

/// What gRPC may receive beyond the largest request, as etcd allows (`grpcOverheadBytes`);
/// bigger messages are refused by gRPC itself before they are decoded.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl Services {
    /// Services for the member `cluster.member_id`, refusing writes whose encoding exceeds
    /// `request_bytes_max` with etcd's "request is too large".
    pub fn new(runtime: RuntimeHandle, cluster: ClusterInfo, request_bytes_max: usize) -> Services {
        Services {
            runtime,
            cluster: std::sync::Arc::new(cluster),
            request_bytes_max,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
            watch: watch::WatchConfig::default(),
            lease_ttl_min_secs: lease::lease_ttl_min_secs(100, 10),
            quota: maintenance::Quota::default(),
            auth: std::sync::Arc::new(auth::Authenticator::new(auth::AuthConfig::default())),
            cors: std::sync::Arc::new(http::Cors::default()),
            client_tls: None,
            report: None,
        }
    }

    /// The same services answering `GET /dashboard/v1/member` with this member's report
    /// under `name`, with what `gate` tells of its peers (without, the report has no name and
    /// no peers).
    pub fn with_report(mut self, name: String, gate: crate::peer::transport::PeerGate) -> Services {
        self.report = Some(std::sync::Arc::new((name, gate)));
        self
    }

    /// The same services calling other members' client URLs with `tls` (see
    /// [`crate::tls::MemberTls`]); `None` dials them in plain text.
    pub fn with_client_tls(
        mut self,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Services {
        self.client_tls = tls;
        self
    }

    /// The same services authenticating as `config` says (token TTL, bcrypt cost).
    /// The same services with `cors` on the HTTP endpoints (etcd's `--cors`).
    pub fn with_cors(mut self, cors: http::Cors) -> Services {
        self.cors = std::sync::Arc::new(cors);
        self
    }

    /// The same services with `config` for authentication.
    pub fn with_auth_config(mut self, config: auth::AuthConfig) -> Services {
        self.auth = std::sync::Arc::new(auth::Authenticator::new(config));
        self
    }

    /// The same services refusing writes that would grow the store past `quota` (etcd's
    /// `--quota-backend-bytes`), raising the `NOSPACE` alarm when one is refused.
    pub fn with_quota(mut self, quota: maintenance::Quota) -> Services {
        self.quota = quota;
        self
    }

    /// The same services admitting at most `n` client requests at once (at least 1).
    pub fn with_requests_in_flight_max(mut self, n: usize) -> Services {
        self.in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(n.max(1)));
        self
    }

    /// The same services with watch streams configured by `watch`.
    pub fn with_watch_config(mut self, watch: watch::WatchConfig) -> Services {
        self.watch = watch;
        self
    }

    /// The same services granting leases of at least `secs` seconds (etcd's default, 2 s, is
    /// [`lease::lease_ttl_min_secs`] of its default timing).
    pub fn with_lease_ttl_min_secs(mut self, secs: i64) -> Services {
        self.lease_ttl_min_secs = secs;
        self
    }

    /// A permit for one client request, or etcd's "too many requests" when
    /// [`REQUESTS_IN_FLIGHT_MAX`] are in flight already.
    pub(super) fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        std::sync::Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| ServerError::TooManyRequests.into())
    }

    /// A router serving every gRPC service and, on the same port over HTTP/1.1 or HTTP/2,
    /// etcd's `/health` and `/version` endpoints.
    pub fn router(self) -> tonic::transport::server::Router {
        let decode_max = self.request_bytes_max + GRPC_OVERHEAD_BYTES;
        let runtime = self.runtime.clone();
        let metrics_runtime = self.runtime.clone();
        let gateway = gateway::routes(&self);
        let health_checks = http_health_checks(&self);
        let cors = std::sync::Arc::clone(&self.cors);
        let report_runtime = self.runtime.clone();
        let report_member = (self.cluster.member_id, self.report.clone());
        let grpc = tonic::service::Routes::new(
            pb::kv_server::KvServer::new(self.clone()).max_decoding_message_size(decode_max),
        )
        .add_service(pb::cluster_server::ClusterServer::new(self.clone()))
        .add_service(watch::WatchServer::new(self.clone()))
        .add_service(pb::lease_server::LeaseServer::new(self.clone()))
        .add_service(pb::auth_server::AuthServer::new(self.clone()))
        .add_service(crate::pb::v3lockpb::lock_server::LockServer::new(self.clone()))
        .add_service(crate::pb::v3electionpb::election_server::ElectionServer::new(self.clone()))
        .add_service(pb::maintenance_server::MaintenanceServer::new(self));
        let http = axum::Router::new()
            .route("/health", axum::routing::get(move || http::health(runtime.clone())))
            .route("/version", axum::routing::get(http::version))
            .route(
                "/dashboard/v1/member",
                axum::routing::get(move |query: axum::extract::RawQuery| {
                    let (id, report) = report_member.clone();
                    http::member_report(report_runtime.clone(), id, report, query.0)
                }),
            )
            .route("/metrics", axum::routing::get(move || http::metrics(metrics_runtime.clone())))
            .merge(health_checks)
            .merge(gateway)
            .layer(axum::middleware::from_fn(move |request, next| {
                http::with_cors(std::sync::Arc::clone(&cors), request, next)
            }));
        // Without this fallback, tonic's answers every unknown path with a gRPC Unimplemented
        // in an HTTP 200, whatever the request.
        let routes = tonic::service::Routes::from(
            grpc.into_axum_router().merge(http).fallback(http::not_served),
        );
        tonic::transport::Server::builder().accept_http1(true).add_routes(routes)
    }

    pub(super) fn ctx(&self) -> HeaderContext {
        HeaderContext {
            cluster_id: self.cluster.cluster_id,
            member_id: self.cluster.member_id,
            raft_term: self.runtime.status().term,
        }
    }

    pub(super) async fn write<T: prost::Message>(
        &self,
        request: &Request<T>,
        command: Command,
    ) -> Result<Response, Status> {
        // etcd measures the marshalled request against --max-request-bytes before proposing.
        if request.get_ref().encoded_len() > self.request_bytes_max {
            return Err(ServerError::RequestTooLarge.into());
        }
        let _permit = self.admit()?;
        // Who sent it goes with the proposal: the store checks permissions when it applies.
        let info = self.auth_info(request)?;
        self.check_quota(&command).await?;
        let proposal = match session(request)? {
            Some((client_id, sequence)) => Proposal::with_session(command, client_id, sequence),
            None => Proposal::new(command),
        }
        .with_auth(info);
        let rx = self.runtime.propose(proposal).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(Answer::Write(r))) => Ok(r),
            Ok(Ok(_)) => Err(Status::internal("tenure: a write answered as a read")),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }
}

/// etcd's `/livez` and `/readyz`, and a sub-path for each of their checks.
fn http_health_checks(services: &Services) -> axum::Router {
    let mut router = axum::Router::new();
    for (path, checks) in [("/livez", http::LIVEZ), ("/readyz", http::READYZ)] {
        let s = services.clone();
        let all = axum::routing::get(move |q: axum::extract::RawQuery| {
            http::run_checks(s.clone(), checks, q.0, true)
        });
        router = router.route(path, all.fallback(http::health_method_not_allowed));
        for check in checks {
            let s = services.clone();
            let one = axum::routing::get(move |q: axum::extract::RawQuery| {
                http::run_checks(s.clone(), std::slice::from_ref(check), q.0, false)
            });
            let sub = format!("{path}/{}", check.name());
            router = router.route(&sub, one.fallback(http::health_method_not_allowed));
        }
    }
    router
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

pub(super) fn submit_status(e: SubmitError) -> Status {
    match e {
        SubmitError::Full => ServerError::TooManyRequests.into(),
        SubmitError::Stopped => ServerError::Stopped.into(),
    }
}

/// A request that failed without a state-machine answer, as etcd reports it.
pub(super) fn client_status(e: ClientError) -> Status {
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
        ClientError::Member(r) => ServerError::from(r),
        ClientError::DiskFull => ServerError::DiskFull,
    };
    err.into()
}

pub(super) fn unexpected(what: &str) -> Status {
    Status::internal(format!("tenure: unexpected response to {what}"))
}
