//! The `tenure` command line: subcommands and flags ([`Cli`]), and the validation of
//! `tenure serve`'s etcd-style flags into a [`ServeConfig`].
//!
//! `serve` takes etcd's core flags with etcd's names, defaults and environment variables
//! (`--name` / `ETCD_NAME`, ...), and checks them with etcd's rules, using etcd's messages
//! where etcd has one. Every check runs before anything touches the data directory; a failed
//! check is one line on stderr and exit code 2.

//!
//! Submodules: [`client`] (the client subcommands), [`lease`] (`tenure lease`, `lock`,
//! `elect`), [`dev`] (`tenure dev`), [`demo`] (`tenure demo`), [`bench`] (`tenure bench`).

pub mod auth;
pub mod bench;
pub mod client;
pub mod demo;
pub mod dev;
pub mod lease;
pub mod member;
pub mod snapshot;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ids;

/// `tenure`: a Raft-replicated key-value store that speaks etcd's v3 API.
#[derive(Debug, Parser)]
#[command(name = "tenure", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a cluster member (takes etcd's flags and ETCD_* environment variables).
    Serve(Box<ServeArgs>),
    /// Run a real three-node cluster on loopback (clients on :2379, :12379, :22379).
    Dev(DevArgs),
    /// Watch a simulated three-node cluster elect a leader, commit, survive a crash.
    Demo(DemoArgs),
    /// Put a key (like `etcdctl put`).
    Put(PutArgs),
    /// Get a key or a range (like `etcdctl get`).
    Get(GetArgs),
    /// Delete a key or a range (like `etcdctl del`).
    Del(DelArgs),
    /// Watch a key or a range and print its events as they happen (like `etcdctl watch`).
    Watch(WatchArgs),
    /// Leases (like `etcdctl lease`).
    Lease {
        /// The lease subcommand.
        #[command(subcommand)]
        command: LeaseCommand,
    },
    /// Hold a named lock while a command runs, or until Ctrl-C (like `etcdctl lock`).
    Lock(LockArgs),
    /// Campaign in an election with a proposal, or observe its leaders (like `etcdctl elect`).
    Elect(ElectArgs),
    /// Cluster membership (like `etcdctl member`).
    Member {
        /// The member subcommand.
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Hand leadership to another member (like `etcdctl move-leader`).
    MoveLeader(MoveLeaderArgs),
    /// Endpoint queries (like `etcdctl endpoint`).
    Endpoint {
        /// The endpoint subcommand.
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Load an etcd v3 endpoint (tenure or etcd) and report throughput and latency (like etcd's
    /// `benchmark`).
    Bench(bench::BenchArgs),
    /// Authentication on or off, and its status (like `etcdctl auth`).
    Auth {
        /// The auth subcommand.
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Users (like `etcdctl user`).
    User {
        /// The user subcommand.
        #[command(subcommand)]
        command: auth::UserCommand,
    },
    /// Roles and their key permissions (like `etcdctl role`).
    Role {
        /// The role subcommand.
        #[command(subcommand)]
        command: auth::RoleCommand,
    },
    /// Backups: save one from a member, check a file, restore a new cluster from one.
    Snapshot {
        /// The snapshot subcommand.
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
}

/// `tenure member ...`. Member ids are hexadecimal, as etcdctl prints them.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the cluster's members.
    List(ClientArgs),
    /// Add a member; prints the flags to start it with (`--initial-cluster-state existing`).
    Add {
        /// The new member's name (for the printed flags; it publishes it when it starts).
        name: String,
        /// Its peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Add it as a learner (it gets the log, does not vote, until promoted).
        #[arg(long)]
        learner: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a member.
    Remove {
        /// The member id (hex).
        #[arg(value_parser = parse_hex_id)]
        id: u64,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a member's peer URLs.
    Update {
        /// The member id (hex).
        #[arg(value_parser = parse_hex_id)]
        id: u64,
        /// Its new peer URLs, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        peer_urls: Vec<String>,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Promote a learner that has caught up to a voter.
    Promote {
        /// The member id (hex).
        #[arg(value_parser = parse_hex_id)]
        id: u64,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A member id in hexadecimal, as etcdctl prints and takes them.
pub fn parse_hex_id(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s, 16).map_err(|e| format!("bad member ID arg ({e}), expecting ID in Hex"))
}

/// `tenure move-leader ID`.
#[derive(Debug, Args)]
pub struct MoveLeaderArgs {
    /// The member to hand leadership to (hex id).
    #[arg(value_parser = parse_hex_id)]
    pub id: u64,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tenure lease ...`. Lease ids are hexadecimal, as etcdctl prints them.
#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Grant a lease of TTL seconds (the server may raise it to its minimum).
    Grant {
        /// Time to live, in seconds.
        ttl: i64,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Revoke a lease, deleting the keys attached to it.
    Revoke {
        /// The lease id.
        #[arg(value_parser = parse_hex_lease)]
        id: i64,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Keep a lease alive, printing each renewal, until it is gone.
    KeepAlive {
        /// The lease id.
        #[arg(value_parser = parse_hex_lease)]
        id: i64,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a lease's granted and remaining TTL.
    #[command(name = "timetolive")]
    Timetolive {
        /// The lease id.
        #[arg(value_parser = parse_hex_lease)]
        id: i64,
        /// Also list the keys attached to it.
        #[arg(long)]
        keys: bool,
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List every lease.
    List {
        /// Connection flags.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `tenure lock NAME [-- command args...]`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name.
    pub name: String,
    /// TTL of the lease the lock is held with, in seconds (kept alive while held).
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
    /// A command to run while holding the lock (after `--`); it gets the lock key and its
    /// fencing token (the key's create revision) in ETCD_LOCK_KEY and ETCD_LOCK_REV.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tenure elect NAME [PROPOSAL]`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name.
    pub name: String,
    /// Campaign with this value and lead until Ctrl-C; without it, print each leader.
    pub proposal: Option<String>,
    /// TTL of the campaign's lease, in seconds (kept alive while campaigning and leading).
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tenure endpoint ...`.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Show the status of each endpoint.
    Status(ClientArgs),
}

/// `tenure dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Keep the members' data here (in `n1`, `n2`, `n3`) instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Committed entries between snapshots (etcd's `--snapshot-count`); a small number shows
    /// compaction and snapshot transfer at work.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Entries kept behind a snapshot for slow followers (etcd's
    /// `--snapshot-catchup-entries`).
    #[arg(long, default_value_t = 5_000)]
    pub snapshot_catchup_entries: u64,
    /// Where the dashboard listens (`host:port`); open it in a browser.
    #[arg(long, value_name = "ADDR", default_value = crate::cli::dev::DASHBOARD_ADDR)]
    pub dashboard: String,
}

/// `tenure demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Pause between steps of the demo, in milliseconds (0 runs it at full speed).
    #[arg(long, default_value_t = 200)]
    pub pace_ms: u64,
}

/// Output formats of the client commands (etcdctl's `-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// etcdctl's default line format.
    Simple,
    /// An ASCII table (member list, endpoint status).
    Table,
}

/// Flags every client command takes (etcdctl's global flags).
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// gRPC endpoints, comma-separated (`host:port` or `http://host:port`).
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Time allowed to connect to an endpoint (e.g. `2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Time allowed for one request (e.g. `5s`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,
    /// Output format.
    #[arg(short = 'w', long, value_enum, default_value = "simple")]
    pub write_out: OutputFormat,
    /// TLS flags (`https://` endpoints; with any of them a `host:port` endpoint uses TLS too).
    #[command(flatten)]
    pub tls: ClientTlsArgs,
    /// `--user` and `--password`: authenticate first and send the token with every request.
    #[command(flatten)]
    pub credentials: crate::cli::auth::Credentials,
}

/// etcdctl's TLS flags, for `https://` endpoints.
#[derive(Debug, Args, Clone, Default)]
pub struct ClientTlsArgs {
    /// Verify certificates of TLS-enabled servers using this CA bundle.
    #[arg(long, env = "ETCDCTL_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Identify this client with this TLS certificate file.
    #[arg(
        long = "cert",
        id = "tls_cert",
        value_name = "CERT",
        env = "ETCDCTL_CERT",
        requires = "tls_key"
    )]
    pub cert: Option<PathBuf>,
    /// Identify this client with this TLS key file.
    #[arg(
        long = "key",
        id = "tls_key",
        value_name = "KEY",
        env = "ETCDCTL_KEY",
        requires = "tls_cert"
    )]
    pub key: Option<PathBuf>,
    /// Skip server certificate verification (do not use in production).
    #[arg(long, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
}

impl ClientTlsArgs {
    /// The settings etcdctl's environment variables give (`ETCDCTL_CACERT`, `ETCDCTL_CERT`,
    /// `ETCDCTL_KEY`, `ETCDCTL_INSECURE_SKIP_TLS_VERIFY`), for commands without the flags.
    pub fn from_env() -> ClientTlsArgs {
        let path = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        ClientTlsArgs {
            cacert: path("ETCDCTL_CACERT"),
            cert: path("ETCDCTL_CERT"),
            key: path("ETCDCTL_KEY"),
            insecure_skip_tls_verify: std::env::var("ETCDCTL_INSECURE_SKIP_TLS_VERIFY")
                .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "True")),
        }
    }

    /// The flags as [`crate::tls::ClientTlsOptions`].
    pub fn options(&self) -> crate::tls::ClientTlsOptions {
        crate::tls::ClientTlsOptions {
            ca_file: self.cacert.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            skip_verify: self.insecure_skip_tls_verify,
        }
    }

    /// The TLS configuration to dial with: `None` when no flag is given (plain `host:port`
    /// and `http://` endpoints; `https://` ones then verify against the system's CAs).
    pub fn client_config(&self) -> anyhow::Result<Option<std::sync::Arc<rustls::ClientConfig>>> {
        let options = self.options();
        if !options.any() {
            return Ok(None);
        }
        Ok(Some(options.client_config()?))
    }
}

/// `tenure put KEY VALUE`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value (may be omitted with --ignore-value).
    pub value: Option<String>,
    /// Lease id to attach, in hexadecimal as etcdctl prints it.
    #[arg(long, value_parser = parse_hex_lease)]
    pub lease: Option<i64>,
    /// Print the previous key-value pair.
    #[arg(long)]
    pub prev_kv: bool,
    /// Keep the current value.
    #[arg(long)]
    pub ignore_value: bool,
    /// Keep the current lease.
    #[arg(long)]
    pub ignore_lease: bool,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Read consistency (etcdctl's `--consistency`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: confirmed with the leader.
    #[value(name = "l")]
    Linearizable,
    /// Serializable: served by the member from its local state.
    #[value(name = "s")]
    Serializable,
}

/// `tenure watch KEY [RANGE_END]`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// End of the range (exclusive).
    pub range_end: Option<String>,
    /// Watch every key with KEY as prefix.
    #[arg(long, conflicts_with = "range_end")]
    pub prefix: bool,
    /// Start from this revision (0: from now on); earlier revisions are replayed.
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Print each event's previous key-value first.
    #[arg(long)]
    pub prev_kv: bool,
    /// Ask for periodic progress notifications (printed as `progress notify: REV`).
    #[arg(long)]
    pub progress_notify: bool,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tenure get KEY [RANGE_END]`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// End of the range (exclusive).
    pub range_end: Option<String>,
    /// Get every key with KEY as prefix.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Get every key >= KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
    /// Read at this revision (0: the latest).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Linearizable (l) or serializable (s).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Maximum number of keys (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Print keys only.
    #[arg(long)]
    pub keys_only: bool,
    /// Print only the number of keys.
    #[arg(long)]
    pub count_only: bool,
    /// Print values only.
    #[arg(long)]
    pub print_value_only: bool,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tenure del KEY [RANGE_END]`.
#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key, or the start of the range.
    pub key: String,
    /// End of the range (exclusive).
    pub range_end: Option<String>,
    /// Delete every key with KEY as prefix.
    #[arg(long, conflicts_with_all = ["from_key", "range_end"])]
    pub prefix: bool,
    /// Delete every key >= KEY.
    #[arg(long, conflicts_with = "range_end")]
    pub from_key: bool,
    /// Print the deleted pairs.
    #[arg(long)]
    pub prev_kv: bool,
    /// Connection flags.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `tenure serve`: etcd's core member flags, with etcd's environment variables and defaults.
///
/// Flags whose absence matters to validation (etcd requires some together) are `Option`s;
/// [`ServeConfig::from_args`] applies the defaults.
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Human-readable name of this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: NAME.etcd].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URLs to listen on for client traffic [default: http://localhost:2379].
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS")]
    pub listen_client_urls: Option<String>,
    /// This member's client URLs to advertise to the cluster [default: http://localhost:2379].
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS")]
    pub advertise_client_urls: Option<String>,
    /// URLs to listen on for peer traffic [default: http://localhost:2380].
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS")]
    pub listen_peer_urls: Option<String>,
    /// This member's peer URLs to advertise to the cluster [default: http://localhost:2380].
    #[arg(long, env = "ETCD_INITIAL_ADVERTISE_PEER_URLS")]
    pub initial_advertise_peer_urls: Option<String>,
    /// Initial cluster configuration, `name=peer-url,...` [default: NAME=INITIAL_ADVERTISE_PEER_URLS].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// `new` to bootstrap a cluster, `existing` to join one.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    pub initial_cluster_state: String,
    /// Token that makes ids unique to this cluster during bootstrap.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Committed entries between snapshots.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Entries kept after a snapshot so slow followers can catch up from the log.
    #[arg(long, env = "ETCD_SNAPSHOT_CATCHUP_ENTRIES", default_value_t = 5_000)]
    pub snapshot_catchup_entries: u64,
    /// Time between heartbeats, in milliseconds (also the Raft tick).
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Election timeout, in milliseconds.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Largest client request accepted, in bytes (etcd's limit; larger requests get "request
    /// is too large", and watch responses larger than it are fragmented when asked).
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Most operations in one transaction (compares, and ops per branch).
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Interval between progress notifications to watchers that asked for them (etcd 3.5's
    /// flag; e.g. `10m`, `500ms`).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_duration
    )]
    pub experimental_watch_progress_notify_interval: Duration,
    /// How often the leader writes the remaining TTL of every lease not renewed within the
    /// interval to the log (etcd 3.4's flag; e.g. `5m`, `30s`), so that a member that restarts
    /// or becomes leader continues each lease from there rather than from its full TTL.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value = "5m",
        value_parser = parse_duration
    )]
    pub experimental_lease_checkpoint_interval: Duration,
    /// Accepted for etcd 3.4's command lines and ignored: tenure always checkpoints leases
    /// (every `--experimental-lease-checkpoint-interval`), whatever this flag says, `=false`
    /// included. Like a Go boolean flag, a value needs `=`.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub experimental_enable_lease_checkpoint: bool,
    /// Client requests this member works on at once at most; more are refused at once with
    /// "too many requests" (tenure's own flag; etcd has none).
    #[arg(long, default_value_t = crate::api::REQUESTS_IN_FLIGHT_MAX)]
    pub max_concurrent_requests: usize,
    /// Origins allowed by CORS on the client port's HTTP endpoints, comma-separated (etcd's
    /// flag; empty or `*` allows every origin, as etcd does).
    #[arg(long, env = "ETCD_CORS", value_delimiter = ',')]
    pub cors: Vec<String>,
    /// Serve a watch-only dashboard of this member's cluster on `host:port` (tenure's own flag).
    #[arg(long, value_name = "ADDR")]
    pub dashboard: Option<String>,
    /// Writes that would take the store past this many bytes are refused with "database space
    /// exceeded" and raise the NOSPACE alarm (etcd's flag: 0 is the default, 2 GiB; a
    /// negative value disables the quota).
    #[arg(
        long,
        env = "ETCD_QUOTA_BACKEND_BYTES",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub quota_backend_bytes: i64,
    /// How clients' tokens are made: `simple` (etcd's default; signed tokens any member can
    /// check). etcd's `jwt` is not supported yet.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Seconds an auth token stays valid after `Authenticate` (etcd's default 300).
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = crate::api::auth::TOKEN_TTL_SECS_DEFAULT)]
    pub auth_token_ttl: u64,
    /// bcrypt cost for hashing passwords (4 to 31; etcd's default 10).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = crate::api::auth::BCRYPT_COST_DEFAULT)]
    pub bcrypt_cost: u32,
    /// `periodic` (keep --auto-compaction-retention of time) or `revision` (keep that many
    /// revisions) [default: periodic].
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE")]
    pub auto_compaction_mode: Option<String>,
    /// What automatic compaction keeps: a duration (`1h`, `30m`) or a bare number of hours in
    /// periodic mode, a number of revisions in revision mode; 0 turns it off [default: 0].
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION")]
    pub auto_compaction_retention: Option<String>,
    /// Before serving, compare this member's key-value hash with its peers' and raise the
    /// CORRUPT alarm on a mismatch (etcd's flag; like a Go boolean flag, a value needs `=`).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub experimental_initial_corrupt_check: bool,
    /// How often the leader compares its key-value hash with every member's (and after every
    /// compaction), raising CORRUPT on a mismatch; 0 turns it off (etcd's flag).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = parse_duration
    )]
    pub experimental_corrupt_check_time: Duration,

    // TLS (etcd's transport security flags): see `crate::tls`.
    /// Path to the client server TLS certificate file (for https client URLs).
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA certificate file (signs client certificates;
    /// also verifies other members' client URLs when this member calls them).
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require client certificates signed by --trusted-ca-file on the client URLs (like a Go
    /// boolean flag, a value needs `=`).
    #[arg(
        long,
        env = "ETCD_CLIENT_CERT_AUTH",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub client_cert_auth: bool,
    /// Client TLS using a self-signed certificate made at start-up (kept in
    /// DATA_DIR/fixtures/client).
    #[arg(
        long,
        env = "ETCD_AUTO_TLS",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub auto_tls: bool,
    /// Path to the peer server TLS certificate file (for https peer URLs; also this member's
    /// client certificate when it dials peers).
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file (signs the other members' peer
    /// certificates).
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Require peer client certificates signed by --peer-trusted-ca-file.
    #[arg(
        long,
        env = "ETCD_PEER_CLIENT_CERT_AUTH",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub peer_client_cert_auth: bool,
    /// The only common name a peer's client certificate may carry (needs
    /// --peer-client-cert-auth).
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// Peer TLS using a self-signed certificate made at start-up (kept in
    /// DATA_DIR/fixtures/peer); peers' certificates are then not verified.
    #[arg(
        long,
        env = "ETCD_PEER_AUTO_TLS",
        num_args = 0..=1,
        require_equals = true,
        default_value_t = false,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub peer_auto_tls: bool,
    /// The lowest TLS version served and dialled: TLS1.2 or TLS1.3 [default: TLS1.2].
    #[arg(long, env = "ETCD_TLS_MIN_VERSION")]
    pub tls_min_version: Option<String>,
}

/// etcd's upper bound on the election timeout.
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 50_000;

/// Whether this member bootstraps a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap the cluster from `--initial-cluster`.
    New,
    /// Join a running cluster (the member was added with `member add`).
    Existing,
}

/// URL schemes tenure serves. etcd also accepts `unix` and `unixs`; tenure does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// Plain TCP.
    Http,
    /// TLS.
    Https,
}

/// A parsed client or peer URL: `scheme://host:port`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Url {
    /// The scheme.
    pub scheme: Scheme,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl Url {
    /// Parses one URL with etcd's rules: scheme `http` or `https`, a `host:port`, no path,
    /// query or user info.
    pub fn parse(s: &str) -> Result<Url, String> {
        let (scheme, rest) =
            s.split_once("://").ok_or_else(|| format!("URL {s:?} has no scheme"))?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(format!("URL scheme must be http or https: {s}")),
        };
        if rest.contains(['/', '?', '#']) {
            return Err(format!("URL must not contain a path: {s}"));
        }
        if rest.contains('@') {
            return Err(format!("URL must not contain user info: {s}"));
        }
        let bad_host_port = || format!("URL address does not have the form \"host:port\": {s}");
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad_host_port)?;
            (host, after.strip_prefix(':').ok_or_else(bad_host_port)?)
        } else {
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad_host_port)?;
            if host.contains(':') {
                return Err(bad_host_port());
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(bad_host_port());
        }
        let port = port.parse::<u16>().map_err(|_| format!("URL has an invalid port: {s}"))?;
        Ok(Url { scheme, host: host.to_string(), port })
    }

    /// `host:port`, bracketing IPv6 addresses, for connecting or binding.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// Its name.
    pub name: String,
    /// Its peer URLs, sorted.
    pub peer_urls: Vec<Url>,
    /// Its id ([`ids::member_id`] of the peer URLs and the cluster token).
    pub id: u64,
}

/// A validated `tenure serve` configuration.
///
/// Invariants (checked by [`ServeConfig::from_args`]): every URL list is non-empty;
/// `members` holds `name`, with `initial_advertise_peer_urls` as its peer URLs; no two
/// members share a peer URL or an id; `member_id` is this member's id in `members` and
/// `cluster_id` is [`ids::cluster_id`] of all member ids; `election_timeout >= 5 *
/// heartbeat_interval > 0` and `election_timeout <= 50 s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// This member's name.
    pub name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where to listen for clients.
    pub listen_client_urls: Vec<Url>,
    /// Client URLs advertised to the cluster.
    pub advertise_client_urls: Vec<Url>,
    /// Where to listen for peers.
    pub listen_peer_urls: Vec<Url>,
    /// Peer URLs advertised to the cluster.
    pub initial_advertise_peer_urls: Vec<Url>,
    /// The initial members, sorted by name.
    pub members: Vec<InitialMember>,
    /// New cluster or joining one.
    pub initial_cluster_state: ClusterState,
    /// The bootstrap token.
    pub initial_cluster_token: String,
    /// Committed entries between snapshots (> 0).
    pub snapshot_count: u64,
    /// Entries kept after a snapshot (> 0).
    pub snapshot_catchup_entries: u64,
    /// Heartbeat interval, also the Raft tick.
    pub heartbeat_interval: Duration,
    /// Election timeout.
    pub election_timeout: Duration,
    /// Largest client request accepted, in bytes (> 0).
    pub max_request_bytes: usize,
    /// Most operations in one transaction (> 0).
    pub max_txn_ops: usize,
    /// Interval between progress notifications to watchers that asked for them (> 0).
    pub watch_progress_notify_interval: Duration,
    /// How often the leader checkpoints the remaining TTL of leases not renewed since (> 0).
    pub lease_checkpoint_interval: Duration,
    /// Client requests in flight at most (> 0).
    pub max_concurrent_requests: usize,
    /// This member's id.
    pub member_id: u64,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The backend quota (`--quota-backend-bytes`).
    pub quota: crate::api::maintenance::Quota,
    /// CORS on the client port's HTTP endpoints (`--cors`).
    pub cors: crate::api::http::Cors,
    /// Authentication: token TTL and bcrypt cost (`--auth-token-ttl`, `--bcrypt-cost`).
    pub auth: crate::api::auth::AuthConfig,
    /// Automatic compaction, if on (`--auto-compaction-mode` and `-retention`).
    pub auto_compaction: Option<crate::compactor::AutoCompaction>,
    /// Integrity checks across members (`--experimental-initial-corrupt-check`,
    /// `--experimental-corrupt-check-time`).
    pub corrupt_check: crate::corruption::CorruptCheck,
    /// TLS on the client URLs: set when a client URL is `https://`.
    pub client_tls: Option<crate::tls::TlsSettings>,
    /// TLS on the peer URLs: set when a peer URL (this member's or another's) is `https://`.
    pub peer_tls: Option<crate::tls::TlsSettings>,
}

/// Why `tenure serve`'s flags are not a usable configuration. Each message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A URL flag held an unusable URL.
    #[error("invalid --{flag}: {reason}")]
    BadUrl {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A URL flag was given but empty.
    #[error("--{0} must not be empty")]
    EmptyUrls(&'static str),
    /// A listen flag was set without its advertise counterpart (etcd's rule).
    #[error("--{needed} is required when --{given} is set explicitly")]
    AdvertiseRequired {
        /// The missing flag.
        needed: &'static str,
        /// The flag that was set.
        given: &'static str,
    },
    /// `--name` is empty.
    #[error("--name must not be empty")]
    EmptyName,
    /// An `--initial-cluster` entry is not `name=url`.
    #[error("invalid --initial-cluster entry {0:?}: want name=peer-url")]
    BadClusterEntry(String),
    /// This member's name is not in `--initial-cluster` (etcd's message).
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    NameNotInCluster(String),
    /// This member's peer URLs differ between the two flags (etcd's message, without DNS).
    #[error(
        "--initial-cluster has {name}={cluster_urls} but missing from \
         --initial-advertise-peer-urls={advertised}"
    )]
    PeerUrlsMismatch {
        /// This member's name.
        name: String,
        /// Its URLs in `--initial-cluster`.
        cluster_urls: String,
        /// `--initial-advertise-peer-urls`.
        advertised: String,
    },
    /// Two members share a peer URL.
    #[error("--initial-cluster gives peer URL {url} to both {first} and {second}")]
    DuplicatePeerUrl {
        /// The URL.
        url: String,
        /// One member.
        first: String,
        /// The other.
        second: String,
    },
    /// Two members hash to the same id.
    #[error("--initial-cluster members {0} and {1} have the same member id")]
    DuplicateMemberId(String, String),
    /// An auth flag has a value tenure cannot use.
    #[error("{0}")]
    Auth(String),
    /// `--initial-cluster-state` is neither `new` nor `existing`.
    #[error("invalid --initial-cluster-state {0:?}: want new or existing")]
    BadClusterState(String),
    /// The heartbeat interval is zero.
    #[error("--heartbeat-interval must be greater than 0")]
    ZeroHeartbeat,
    /// The election timeout is below five heartbeats (etcd's rule and message).
    #[error(
        "--election-timeout[{election_ms}ms] should be at least as 5 times as \
         --heartbeat-interval[{heartbeat_ms}ms]"
    )]
    ElectionTimeoutTooShort {
        /// `--election-timeout`.
        election_ms: u64,
        /// `--heartbeat-interval`.
        heartbeat_ms: u64,
    },
    /// The election timeout is above etcd's limit (etcd's message).
    #[error(
        "--election-timeout[{0}ms] is too long, and should be set less than \
         {ELECTION_TIMEOUT_MS_MAX}ms"
    )]
    ElectionTimeoutTooLong(u64),
    /// A count flag is zero.
    #[error("--{0} must be greater than 0")]
    ZeroCount(&'static str),
    /// `--auto-compaction-mode` or `--auto-compaction-retention` is not usable (etcd's
    /// messages).
    #[error("{0}")]
    AutoCompaction(String),
    /// The TLS flags do not fit the URLs or each other.
    #[error("{0}")]
    Tls(String),
}

/// The TLS flags of one side of a member (clients or peers), by their flag names.
struct TlsFlags<'a> {
    /// `client` or `peer`: the flag names' prefix and the message's subject.
    side: &'static str,
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
    ca: &'a Option<PathBuf>,
    client_cert_auth: bool,
    auto: bool,
    allowed_cn: Option<&'a String>,
}

impl TlsFlags<'_> {
    fn flag(&self, name: &str) -> String {
        match self.side {
            "peer" => format!("--peer-{name}"),
            _ => format!("--{name}"),
        }
    }

    /// The settings for this side, given whether any of its URLs is `https`, with etcd's
    /// rules: an https URL needs a certificate and key (or auto TLS); client certificate
    /// authentication needs the CA that signs client certificates; the allowed CN needs client
    /// certificate authentication. Unlike etcd, which only warns that it ignores them, TLS
    /// flags without an https URL are refused: the likeliest cause is a URL typed `http://`
    /// by mistake, which would otherwise serve in plain text.
    fn settings(
        &self,
        https: bool,
        min_version: crate::tls::TlsMinVersion,
    ) -> Result<Option<crate::tls::TlsSettings>, ConfigError> {
        use crate::tls::{AUTO_TLS_CLIENT_DIR, AUTO_TLS_PEER_DIR, CertSource, TlsSettings};
        let (cert_flag, key_flag) = (self.flag("cert-file"), self.flag("key-file"));
        let source = match (self.cert, self.key) {
            (Some(cert), Some(key)) => {
                Some(CertSource::Files { cert: cert.clone(), key: key.clone() })
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Tls(format!(
                    "{cert_flag} and {key_flag} must be given together"
                )));
            }
            // etcd prefers given files over auto TLS the same way.
            (None, None) if self.auto => Some(CertSource::Auto(PathBuf::from(match self.side {
                "peer" => AUTO_TLS_PEER_DIR,
                _ => AUTO_TLS_CLIENT_DIR,
            }))),
            (None, None) => None,
        };
        let any_flag = source.is_some()
            || self.ca.is_some()
            || self.client_cert_auth
            || self.allowed_cn.is_some();
        if !https {
            if any_flag {
                return Err(ConfigError::Tls(format!(
                    "{side} TLS flags are set but no {side} URL is https:// (use https:// \
                     {side} URLs, or drop the {side} TLS flags)",
                    side = self.side
                )));
            }
            return Ok(None);
        }
        let Some(source) = source else {
            let auto = if self.side == "peer" { "--peer-auto-tls" } else { "--auto-tls" };
            return Err(ConfigError::Tls(format!(
                "TLS key/cert ({cert_flag}, {key_flag}) must be provided for {side} URLs with \
                 the HTTPS scheme (or use {auto})",
                side = self.side
            )));
        };
        if self.client_cert_auth && self.ca.is_none() {
            return Err(ConfigError::Tls(format!(
                "{} needs {} (the CA that signs the certificates it accepts)",
                self.flag("client-cert-auth"),
                self.flag("trusted-ca-file")
            )));
        }
        if self.allowed_cn.is_some() && !self.client_cert_auth {
            return Err(ConfigError::Tls(
                "--peer-cert-allowed-cn needs --peer-client-cert-auth".to_string(),
            ));
        }
        if self.allowed_cn.is_some_and(|cn| cn.is_empty()) {
            return Err(ConfigError::Tls("--peer-cert-allowed-cn must not be empty".to_string()));
        }
        Ok(Some(TlsSettings {
            source,
            trusted_ca_file: self.ca.clone(),
            client_cert_auth: self.client_cert_auth,
            allowed_cn: self.allowed_cn.cloned(),
            min_version,
        }))
    }
}

/// Parses a comma-separated URL list flag.
fn parse_urls(flag: &'static str, value: &str) -> Result<Vec<Url>, ConfigError> {
    let urls = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Url::parse(s).map_err(|reason| ConfigError::BadUrl { flag, reason }))
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(ConfigError::EmptyUrls(flag));
    }
    Ok(urls)
}

fn join_urls(urls: &[Url]) -> String {
    urls.iter().map(Url::to_string).collect::<Vec<_>>().join(",")
}

/// Parses `name=url,name=url,...`; a name may repeat to give a member several URLs.
fn parse_initial_cluster(value: &str) -> Result<BTreeMap<String, Vec<Url>>, ConfigError> {
    let mut members: BTreeMap<String, Vec<Url>> = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .filter(|(n, u)| !n.trim().is_empty() && !u.trim().is_empty())
            .ok_or_else(|| ConfigError::BadClusterEntry(entry.to_string()))?;
        let url = Url::parse(url.trim())
            .map_err(|reason| ConfigError::BadUrl { flag: "initial-cluster", reason })?;
        members.entry(name.trim().to_string()).or_default().push(url);
    }
    if members.is_empty() {
        return Err(ConfigError::EmptyUrls("initial-cluster"));
    }
    Ok(members)
}

impl ServeConfig {
    /// Validates `tenure serve`'s flags (etcd's defaults applied) without touching the disk.
    pub fn from_args(a: &ServeArgs) -> Result<ServeConfig, ConfigError> {
        if a.name.trim().is_empty() {
            return Err(ConfigError::EmptyName);
        }
        let initial_cluster_state = match a.initial_cluster_state.as_str() {
            "new" => ClusterState::New,
            "existing" => ClusterState::Existing,
            other => return Err(ConfigError::BadClusterState(other.to_string())),
        };
        let url_flag = |flag: &'static str, value: &Option<String>, default: &str| {
            parse_urls(flag, value.as_deref().unwrap_or(default))
        };
        let listen_client_urls =
            url_flag("listen-client-urls", &a.listen_client_urls, "http://localhost:2379")?;
        let advertise_client_urls =
            url_flag("advertise-client-urls", &a.advertise_client_urls, "http://localhost:2379")?;
        let listen_peer_urls =
            url_flag("listen-peer-urls", &a.listen_peer_urls, "http://localhost:2380")?;
        let initial_advertise_peer_urls = url_flag(
            "initial-advertise-peer-urls",
            &a.initial_advertise_peer_urls,
            "http://localhost:2380",
        )?;
        if a.listen_client_urls.is_some() && a.advertise_client_urls.is_none() {
            return Err(ConfigError::AdvertiseRequired {
                needed: "advertise-client-urls",
                given: "listen-client-urls",
            });
        }
        if initial_cluster_state == ClusterState::New
            && a.listen_peer_urls.is_some()
            && a.initial_advertise_peer_urls.is_none()
        {
            return Err(ConfigError::AdvertiseRequired {
                needed: "initial-advertise-peer-urls",
                given: "listen-peer-urls",
            });
        }

        let cluster = match &a.initial_cluster {
            Some(v) => parse_initial_cluster(v)?,
            None => BTreeMap::from([(a.name.clone(), initial_advertise_peer_urls.clone())]),
        };
        let own =
            cluster.get(&a.name).ok_or_else(|| ConfigError::NameNotInCluster(a.name.clone()))?;
        let mut own_sorted = own.clone();
        own_sorted.sort();
        own_sorted.dedup();
        let mut advertised = initial_advertise_peer_urls.clone();
        advertised.sort();
        advertised.dedup();
        if own_sorted != advertised {
            return Err(ConfigError::PeerUrlsMismatch {
                name: a.name.clone(),
                cluster_urls: join_urls(own),
                advertised: join_urls(&initial_advertise_peer_urls),
            });
        }

        let mut url_owner: BTreeMap<&Url, &str> = BTreeMap::new();
        let mut id_owner: BTreeMap<u64, &str> = BTreeMap::new();
        let mut members = Vec::new();
        for (name, urls) in &cluster {
            let mut urls = urls.clone();
            urls.sort();
            urls.dedup();
            let strings: Vec<String> = urls.iter().map(Url::to_string).collect();
            let id = ids::member_id(&strings, &a.initial_cluster_token);
            if let Some(first) = id_owner.insert(id, name) {
                return Err(ConfigError::DuplicateMemberId(first.to_string(), name.clone()));
            }
            members.push(InitialMember { name: name.clone(), peer_urls: urls, id });
        }
        for m in &members {
            for u in &m.peer_urls {
                if let Some(first) = url_owner.insert(u, &m.name) {
                    return Err(ConfigError::DuplicatePeerUrl {
                        url: u.to_string(),
                        first: first.to_string(),
                        second: m.name.clone(),
                    });
                }
            }
        }

        if a.heartbeat_interval == 0 {
            return Err(ConfigError::ZeroHeartbeat);
        }
        if a.election_timeout < 5 * a.heartbeat_interval {
            return Err(ConfigError::ElectionTimeoutTooShort {
                election_ms: a.election_timeout,
                heartbeat_ms: a.heartbeat_interval,
            });
        }
        if a.election_timeout > ELECTION_TIMEOUT_MS_MAX {
            return Err(ConfigError::ElectionTimeoutTooLong(a.election_timeout));
        }
        if a.snapshot_count == 0 {
            return Err(ConfigError::ZeroCount("snapshot-count"));
        }
        if a.snapshot_catchup_entries == 0 {
            return Err(ConfigError::ZeroCount("snapshot-catchup-entries"));
        }
        if a.max_request_bytes == 0 {
            return Err(ConfigError::ZeroCount("max-request-bytes"));
        }
        if a.max_txn_ops == 0 {
            return Err(ConfigError::ZeroCount("max-txn-ops"));
        }
        if a.experimental_watch_progress_notify_interval.is_zero() {
            return Err(ConfigError::ZeroCount("experimental-watch-progress-notify-interval"));
        }
        if a.max_concurrent_requests == 0 {
            return Err(ConfigError::ZeroCount("max-concurrent-requests"));
        }
        // etcd reads 0 as its default; tenure refuses it, as it refuses every other zero
        // interval, rather than guess (the replica would read 0 as "no checkpoints").
        if a.experimental_lease_checkpoint_interval.is_zero() {
            return Err(ConfigError::ZeroCount("experimental-lease-checkpoint-interval"));
        }

        let member_id = members
            .iter()
            .find(|m| m.name == a.name)
            .map(|m| m.id)
            .expect("own name checked above");
        let cluster_id = ids::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());
        let min_version = match &a.tls_min_version {
            Some(v) => crate::tls::TlsMinVersion::parse(v)
                .map_err(|e| ConfigError::Tls(format!("invalid --tls-min-version: {e}")))?,
            None => crate::tls::TlsMinVersion::default(),
        };
        let https = |urls: &[Url]| urls.iter().any(|u| u.scheme == Scheme::Https);
        let client_tls = TlsFlags {
            side: "client",
            cert: &a.cert_file,
            key: &a.key_file,
            ca: &a.trusted_ca_file,
            client_cert_auth: a.client_cert_auth,
            auto: a.auto_tls,
            allowed_cn: None,
        }
        .settings(https(&listen_client_urls) || https(&advertise_client_urls), min_version)?;
        let peer_https = https(&listen_peer_urls)
            || https(&initial_advertise_peer_urls)
            || members.iter().any(|m| https(&m.peer_urls));
        let peer_tls = TlsFlags {
            side: "peer",
            cert: &a.peer_cert_file,
            key: &a.peer_key_file,
            ca: &a.peer_trusted_ca_file,
            client_cert_auth: a.peer_client_cert_auth,
            auto: a.peer_auto_tls,
            allowed_cn: a.peer_cert_allowed_cn.as_ref(),
        }
        .settings(peer_https, min_version)?;
        let auto_compaction = crate::compactor::AutoCompaction::from_flags(
            a.auto_compaction_mode.as_deref(),
            a.auto_compaction_retention.as_deref(),
        )
        .map_err(ConfigError::AutoCompaction)?;
        Ok(ServeConfig {
            name: a.name.clone(),
            data_dir: a
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", a.name))),
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            members,
            initial_cluster_state,
            initial_cluster_token: a.initial_cluster_token.clone(),
            snapshot_count: a.snapshot_count,
            snapshot_catchup_entries: a.snapshot_catchup_entries,
            heartbeat_interval: Duration::from_millis(a.heartbeat_interval),
            election_timeout: Duration::from_millis(a.election_timeout),
            max_request_bytes: a.max_request_bytes,
            max_txn_ops: a.max_txn_ops,
            watch_progress_notify_interval: a.experimental_watch_progress_notify_interval,
            lease_checkpoint_interval: a.experimental_lease_checkpoint_interval,
            max_concurrent_requests: a.max_concurrent_requests,
            member_id,
            cluster_id,
            quota: crate::api::maintenance::Quota::from_flag(a.quota_backend_bytes),
            cors: crate::api::http::Cors::from_flag(&a.cors),
            auth: auth_config(a)?,
            auto_compaction,
            corrupt_check: crate::corruption::CorruptCheck {
                initial: a.experimental_initial_corrupt_check,
                interval: (!a.experimental_corrupt_check_time.is_zero())
                    .then_some(a.experimental_corrupt_check_time),
            },
            client_tls,
            peer_tls,
        })
    }

    /// The Raft tick: one heartbeat interval (so `heartbeat_ticks` is 1, as in etcd).
    pub fn tick_interval(&self) -> Duration {
        self.heartbeat_interval
    }

    /// The election timeout in ticks (`election_timeout / heartbeat_interval`, at least 5).
    pub fn election_ticks(&self) -> u32 {
        let ticks = self.election_timeout.as_millis() / self.heartbeat_interval.as_millis();
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        format!(
            "member {} ({}) of cluster {} with {} member(s), data dir {}",
            ids::format_id(self.member_id),
            self.name,
            ids::format_id(self.cluster_id),
            self.members.len(),
            self.data_dir.display()
        )
    }
}

/// `--auth-token`, `--auth-token-ttl` and `--bcrypt-cost`, checked.
fn auth_config(a: &ServeArgs) -> Result<crate::api::auth::AuthConfig, ConfigError> {
    let kind = a.auth_token.split(',').next().unwrap_or_default();
    match kind {
        // etcd's default; empty as etcd reads an unset flag.
        "simple" | "" => {}
        "jwt" => {
            return Err(ConfigError::Auth(
                "--auth-token jwt is not supported by tenure yet; use simple".to_string(),
            ));
        }
        other => {
            return Err(ConfigError::Auth(format!("invalid --auth-token {other:?}: want simple")));
        }
    }
    if !(4..=31).contains(&a.bcrypt_cost) {
        return Err(ConfigError::Auth(format!(
            "invalid --bcrypt-cost {}: want 4 to 31",
            a.bcrypt_cost
        )));
    }
    if a.auth_token_ttl == 0 {
        return Err(ConfigError::Auth("--auth-token-ttl must be at least 1 second".to_string()));
    }
    Ok(crate::api::auth::AuthConfig {
        token_ttl: Duration::from_secs(a.auth_token_ttl),
        bcrypt_cost: a.bcrypt_cost,
    })
}

/// Parses a duration as Go's `time.ParseDuration` does (etcd's flags take those): a sequence
/// of decimal numbers, each with an optional fraction and a unit (`ns`, `us`, `µs`, `ms`,
/// `s`, `m`, `h`), such as `500ms`, `1.5s`, `5m0s` or `1h30m`; and, as before, a bare number
/// of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let invalid = || {
        format!("invalid duration {s:?}: use a number and a unit (ms, s, m, h), e.g. 500ms or 5m0s")
    };
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse::<u64>().map(Duration::from_secs).map_err(|_| invalid());
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let number_end =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += Duration::try_from_secs_f64(value * unit_secs).map_err(|_| invalid())?;
        rest = next;
    }
    Ok(total)
}

/// Parses a lease id written in hexadecimal (as etcdctl prints and takes them).
pub fn parse_hex_lease(s: &str) -> Result<i64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(|v| v as i64)
        .map_err(|_| format!("invalid lease id {s:?}: want hexadecimal"))
}

/// Reduces a clap error to one line (help and version output are not errors and pass
/// through unchanged).
pub fn one_line(err: &clap::Error) -> String {
    err.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_go_parses_them() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2s"), Ok(ms(2_000)));
        assert_eq!(parse_duration("7"), Ok(ms(7_000)), "a bare number is seconds");
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("5m0s"), Ok(ms(300_000)));
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        for bad in ["", "s", "5x", "1.2.3s", "-1s", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tenure").chain(args.iter().copied()))
    }

    fn serve(args: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut full = vec!["serve"];
        full.extend_from_slice(args);
        match parse(&full).expect("flags parse").command {
            Command::Serve(a) => ServeConfig::from_args(&a),
            other => panic!("not serve: {other:?}"),
        }
    }

    const THREE: &[&str] = &[
        "--name",
        "infra1",
        "--initial-advertise-peer-urls",
        "http://10.0.1.11:2380",
        "--listen-peer-urls",
        "http://10.0.1.11:2380",
        "--initial-cluster",
        "infra0=http://10.0.1.10:2380,infra1=http://10.0.1.11:2380,infra2=http://10.0.1.12:2380",
        "--initial-cluster-token",
        "etcd-cluster-1",
    ];

    fn three_with(extra: &[&str]) -> Result<ServeConfig, ConfigError> {
        let mut args = THREE.to_vec();
        args.extend_from_slice(extra);
        serve(&args)
    }

    #[test]
    fn defaults_match_etcds_single_member() {
        let c = serve(&[]).unwrap();
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.etcd"));
        assert_eq!(c.listen_client_urls[0].to_string(), "http://localhost:2379");
        assert_eq!(c.initial_advertise_peer_urls[0].to_string(), "http://localhost:2380");
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!((c.snapshot_count, c.snapshot_catchup_entries), (100_000, 5_000));
        assert_eq!((c.max_request_bytes, c.max_txn_ops), (1536 * 1024, 128), "etcd's defaults");
        assert_eq!(c.max_concurrent_requests, crate::api::REQUESTS_IN_FLIGHT_MAX);
        assert_eq!(c.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(c.election_ticks(), 10);
        assert_eq!(ids::format_id(c.member_id), "8e9e05c52164694d");
        assert_eq!(ids::format_id(c.cluster_id), "cdf818194e3a8c32");
    }

    #[test]
    fn three_member_cluster_validates_with_distinct_stable_ids() {
        let c = three_with(&[]).unwrap();
        assert_eq!(c.members.len(), 3);
        assert_eq!(
            c.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["infra0", "infra1", "infra2"]
        );
        assert_eq!(c.member_id, c.members[1].id);
        let again = three_with(&[]).unwrap();
        assert_eq!((c.member_id, c.cluster_id), (again.member_id, again.cluster_id));
        // Another member of the same cluster computes the same cluster id.
        let other = serve(&[
            "--name",
            "infra0",
            "--initial-advertise-peer-urls",
            "http://10.0.1.10:2380",
            "--initial-cluster",
            THREE[7],
            "--initial-cluster-token",
            "etcd-cluster-1",
        ])
        .unwrap();
        assert_eq!(other.cluster_id, c.cluster_id);
        assert_ne!(other.member_id, c.member_id);
        // A different token is a different cluster.
        let mut args = THREE.to_vec();
        args[9] = "etcd-cluster-2";
        assert_ne!(serve(&args).unwrap().cluster_id, c.cluster_id);
    }

    #[test]
    fn name_must_be_in_initial_cluster() {
        let mut args = THREE.to_vec();
        args[1] = "infra9";
        assert_eq!(
            serve(&args).unwrap_err().to_string(),
            "couldn't find local name \"infra9\" in the initial cluster configuration"
        );
        assert_eq!(serve(&["--name", " "]), Err(ConfigError::EmptyName));
    }

    #[test]
    fn advertised_peer_urls_must_match_own_initial_cluster_entry() {
        let mut args = THREE.to_vec();
        args[3] = "http://10.0.1.99:2380";
        args[5] = "http://10.0.1.99:2380";
        let err = serve(&args).unwrap_err();
        assert!(matches!(err, ConfigError::PeerUrlsMismatch { .. }));
        assert_eq!(
            err.to_string(),
            "--initial-cluster has infra1=http://10.0.1.11:2380 but missing from \
             --initial-advertise-peer-urls=http://10.0.1.99:2380"
        );
        // Order of several URLs does not matter.
        let ok = serve(&[
            "--name",
            "a",
            "--initial-advertise-peer-urls",
            "http://h2:2380,http://h1:2380",
            "--initial-cluster",
            "a=http://h1:2380,a=http://h2:2380",
        ]);
        assert_eq!(ok.unwrap().members[0].peer_urls.len(), 2);
    }

    #[test]
    fn urls_are_checked_with_etcds_rules() {
        let bad =
            |u: &str| serve(&["--listen-client-urls", u, "--advertise-client-urls", "http://a:1"]);
        assert!(
            bad("ftp://a:1").unwrap_err().to_string().contains("URL scheme must be http or https")
        );
        assert!(
            bad("http://a:1/path").unwrap_err().to_string().contains("must not contain a path")
        );
        assert!(bad("http://a").unwrap_err().to_string().contains("host:port"));
        assert!(bad("http://a:99999").unwrap_err().to_string().contains("invalid port"));
        assert!(bad("a:1").unwrap_err().to_string().contains("no scheme"));
        assert_eq!(bad(" , "), Err(ConfigError::EmptyUrls("listen-client-urls")));
        let both = "http://[::1]:2379,https://0.0.0.0:2379";
        let cfg = serve(&[
            "--listen-client-urls",
            both,
            "--advertise-client-urls",
            "http://a:1",
            "--auto-tls",
        ]);
        assert_eq!(cfg.unwrap().listen_client_urls[0].authority(), "[::1]:2379");
        assert!(matches!(
            serve(&["--initial-cluster", "default"]),
            Err(ConfigError::BadClusterEntry(_))
        ));
        assert!(matches!(
            serve(&["--initial-cluster", "default=localhost:2380"]),
            Err(ConfigError::BadUrl { flag: "initial-cluster", .. })
        ));
    }

    #[test]
    fn listen_flags_need_their_advertise_flags() {
        assert_eq!(
            serve(&["--listen-client-urls", "http://0.0.0.0:2379"]).unwrap_err().to_string(),
            "--advertise-client-urls is required when --listen-client-urls is set explicitly"
        );
        assert_eq!(
            serve(&["--listen-peer-urls", "http://0.0.0.0:2380"]).unwrap_err().to_string(),
            "--initial-advertise-peer-urls is required when --listen-peer-urls is set explicitly"
        );
        // Joining an existing cluster does not need the initial advertise flag.
        assert!(
            serve(&[
                "--listen-peer-urls",
                "http://0.0.0.0:2380",
                "--initial-cluster-state",
                "existing"
            ])
            .is_ok()
        );
    }

    #[test]
    fn duplicate_peer_urls_are_refused() {
        let err = serve(&[
            "--initial-cluster",
            "default=http://localhost:2380,other=http://localhost:2380",
        ])
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::DuplicateMemberId(..) | ConfigError::DuplicatePeerUrl { .. }
        ));
        let err = serve(&[
            "--initial-cluster",
            "default=http://localhost:2380,other=http://localhost:2380,other=http://x:1",
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--initial-cluster gives peer URL http://localhost:2380 to both default and other"
        );
    }

    #[test]
    fn cluster_state_must_be_new_or_existing() {
        assert_eq!(
            serve(&["--initial-cluster-state", "old"]).unwrap_err().to_string(),
            "invalid --initial-cluster-state \"old\": want new or existing"
        );
        assert_eq!(
            serve(&["--initial-cluster-state", "existing"]).unwrap().initial_cluster_state,
            ClusterState::Existing
        );
    }

    #[test]
    fn election_timeout_follows_etcds_rules() {
        assert_eq!(
            serve(&["--heartbeat-interval", "100", "--election-timeout", "400"])
                .unwrap_err()
                .to_string(),
            "--election-timeout[400ms] should be at least as 5 times as --heartbeat-interval[100ms]"
        );
        assert_eq!(
            serve(&["--election-timeout", "60000"]).unwrap_err().to_string(),
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
        );
        assert_eq!(serve(&["--heartbeat-interval", "0"]), Err(ConfigError::ZeroHeartbeat));
        let c = serve(&["--heartbeat-interval", "50", "--election-timeout", "250"]).unwrap();
        assert_eq!(c.election_ticks(), 5);
    }

    #[test]
    fn request_limits_are_taken_and_must_be_positive() {
        let c = serve(&["--max-request-bytes", "4096", "--max-txn-ops", "7"]).unwrap();
        assert_eq!((c.max_request_bytes, c.max_txn_ops), (4096, 7));
        let c = serve(&["--experimental-watch-progress-notify-interval", "500ms"]).unwrap();
        assert_eq!(c.watch_progress_notify_interval, Duration::from_millis(500));
        assert_eq!(
            serve(&["--experimental-watch-progress-notify-interval", "0s"]),
            Err(ConfigError::ZeroCount("experimental-watch-progress-notify-interval"))
        );
        let c = serve(&["--max-concurrent-requests", "9"]).unwrap();
        assert_eq!(c.max_concurrent_requests, 9);
        for flag in ["max-request-bytes", "max-txn-ops", "max-concurrent-requests"] {
            let arg = format!("--{flag}");
            assert_eq!(serve(&[&arg, "0"]), Err(ConfigError::ZeroCount(flag)));
        }
    }

    #[test]
    fn lease_checkpoint_flags_take_etcd_3_4s_names() {
        let default = serve(&[]).unwrap();
        assert_eq!(default.lease_checkpoint_interval, Duration::from_secs(300), "etcd's 5m");
        let c = serve(&["--experimental-lease-checkpoint-interval", "1500ms"]).unwrap();
        assert_eq!(c.lease_checkpoint_interval, Duration::from_millis(1500));
        let c = serve(&["--experimental-lease-checkpoint-interval=2m"]).unwrap();
        assert_eq!(c.lease_checkpoint_interval, Duration::from_secs(120));
        assert_eq!(
            serve(&["--experimental-lease-checkpoint-interval", "0s"]),
            Err(ConfigError::ZeroCount("experimental-lease-checkpoint-interval"))
        );
        assert!(parse(&["serve", "--experimental-lease-checkpoint-interval", "5x"]).is_err());

        // The enable flag is accepted as Go parses a boolean flag, and changes nothing.
        for form in [
            "--experimental-enable-lease-checkpoint",
            "--experimental-enable-lease-checkpoint=true",
            "--experimental-enable-lease-checkpoint=false",
        ] {
            assert_eq!(serve(&[form]).unwrap(), default, "{form}");
        }
        assert!(parse(&["serve", "--experimental-enable-lease-checkpoint=maybe"]).is_err());
        // As with Go's flags, a separate word is not the flag's value.
        assert!(parse(&["serve", "--experimental-enable-lease-checkpoint", "false"]).is_err());
    }

    #[test]
    fn counts_must_be_positive() {
        assert_eq!(
            serve(&["--snapshot-count", "0"]),
            Err(ConfigError::ZeroCount("snapshot-count"))
        );
        assert_eq!(
            serve(&["--snapshot-catchup-entries", "0"]),
            Err(ConfigError::ZeroCount("snapshot-catchup-entries"))
        );
    }

    #[test]
    fn client_subcommands_parse_etcdctl_flags() {
        let cli = parse(&[
            "get",
            "foo",
            "--prefix",
            "--rev",
            "7",
            "--consistency",
            "s",
            "--endpoints",
            "a:1,b:2",
        ])
        .unwrap();
        let Command::Get(g) = cli.command else { panic!() };
        assert!(g.prefix);
        assert_eq!((g.rev, g.consistency), (7, Consistency::Serializable));
        assert_eq!(g.client.endpoints, ["a:1", "b:2"]);
        let Command::Put(p) =
            parse(&["put", "k", "v", "--lease", "694d77aa9e38260f"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!(p.lease, Some(0x694d_77aa_9e38_260f));
        let Command::Del(d) = parse(&["del", "k", "--prefix", "--prev-kv"]).unwrap().command else {
            panic!()
        };
        assert!(d.prefix && d.prev_kv);
        assert!(matches!(
            parse(&["member", "list", "-w", "table"]).unwrap().command,
            Command::Member {
                command: MemberCommand::List(ClientArgs { write_out: OutputFormat::Table, .. })
            }
        ));
        assert!(matches!(
            parse(&["endpoint", "status", "--command-timeout", "500ms"]).unwrap().command,
            Command::Endpoint { command: EndpointCommand::Status(ClientArgs { command_timeout, .. }) }
                if command_timeout == Duration::from_millis(500)
        ));
        assert!(parse(&["get", "k", "--consistency", "x"]).is_err());
        assert!(parse(&["get", "k", "z", "--prefix"]).is_err());
    }

    #[test]
    fn clap_errors_become_one_line() {
        let err = parse(&["get"]).unwrap_err();
        let line = one_line(&err);
        assert!(!line.contains('\n'));
        assert!(line.contains("<KEY>"), "{line}");
    }

    #[test]
    fn durations_and_lease_ids_parse() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_hex_lease("ff"), Ok(255));
        assert!(parse_hex_lease("zz").is_err());
    }

    #[test]
    fn tls_flags_are_checked_against_the_urls_and_each_other() {
        let https = [
            "--listen-client-urls",
            "https://127.0.0.1:2379",
            "--advertise-client-urls",
            "https://127.0.0.1:2379",
        ];
        let with = |extra: &[&str]| {
            let mut args = https.to_vec();
            args.extend_from_slice(extra);
            serve(&args)
        };
        let tls_error = |r: Result<ServeConfig, ConfigError>, needle: &str| match r {
            Err(ConfigError::Tls(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected a TLS error about {needle:?}, got {other:?}"),
        };
        tls_error(with(&[]), "--cert-file");
        tls_error(with(&["--cert-file", "c.pem"]), "--key-file");
        tls_error(with(&["--auto-tls", "--client-cert-auth"]), "--trusted-ca-file");
        tls_error(with(&["--auto-tls", "--tls-min-version", "TLS1.1"]), "tls-min-version");
        tls_error(serve(&["--cert-file", "c.pem", "--key-file", "k.pem"]), "https://");
        tls_error(serve(&["--peer-auto-tls"]), "peer");
        tls_error(
            with(&[
                "--auto-tls",
                "--peer-auto-tls",
                "--peer-cert-allowed-cn",
                "m",
                "--listen-peer-urls",
                "https://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "https://127.0.0.1:2380",
            ]),
            "--peer-client-cert-auth",
        );
        // The peer side: another member's https peer URL needs peer TLS here too.
        let cluster = "default=http://localhost:2380,other=https://10.0.0.2:2380";
        tls_error(serve(&["--initial-cluster", cluster]), "--peer-cert-file");

        let cfg = with(&[
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
            "--trusted-ca-file",
            "ca.pem",
            "--client-cert-auth",
            "--tls-min-version",
            "TLS1.3",
        ])
        .unwrap();
        let client = cfg.client_tls.expect("client TLS");
        assert_eq!(
            client.source,
            crate::tls::CertSource::Files { cert: "c.pem".into(), key: "k.pem".into() }
        );
        assert!(client.client_cert_auth);
        assert_eq!(client.min_version, crate::tls::TlsMinVersion::Tls13);
        assert_eq!(cfg.peer_tls, None, "http peer URLs");
        let auto = with(&["--auto-tls"]).unwrap().client_tls.unwrap();
        assert_eq!(auto.source, crate::tls::CertSource::Auto("fixtures/client".into()));
        // Plain URLs and no flags: no TLS, as before.
        assert_eq!(serve(&[]).map(|c| (c.client_tls, c.peer_tls)), Ok((None, None)));
    }
}
