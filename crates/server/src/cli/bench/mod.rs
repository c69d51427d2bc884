//! `tenure bench`: a closed-loop load generator for any etcd v3 endpoint, tenure's or etcd's.
//!
//! It speaks etcd's `benchmark` tool's vocabulary. `--clients` tasks each send one request,
//! wait for its answer and send the next (closed loop); they share `--conns` gRPC connections
//! (HTTP/2 multiplexes them), and connection `i` goes to endpoint `i mod endpoints`, so the
//! load spreads over every endpoint given. A run stops after `--total` requests (default
//! 10,000) or after `--duration`; requests in flight at the deadline are waited for.
//!
//! Workloads (subcommands):
//! - `put`: one `Put` per request;
//! - `range`: one single-key `Range` per request, linearizable (`--consistency l`, the default)
//!   or serializable (`s`);
//! - `txn-put`: compare-and-swap. Each client remembers the mod revision it last saw for each
//!   key and sends a `Txn` that puts the key if its mod revision is still that one (or, for a
//!   key it has not seen, if its version is 0: the key is absent), and otherwise reads the key,
//!   which teaches the client the current mod revision for its next try. A failed compare is
//!   not an error: the summary counts `txn_succeeded` and `txn_failed`.
//! - `mixed --read-ratio R`: each request is a `Range` with probability R, else a `Put`.
//! - `watch --watchers N --streams S`: N watchers on the prefix `--prefix`, spread evenly over
//!   S watch streams (stream `j` on connection `j mod conns`), all created (from the current
//!   revision) before the load starts; then `--clients` clients put keys under the prefix as
//!   `put` does. After the last put is answered the watchers are given up to
//!   [`WATCH_DRAIN_MAX`] to receive every event. Each watcher must receive the event of every
//!   acknowledged put, each revision once and in increasing order: the summary's `watch`
//!   object counts what was received, `missed` (acknowledged puts a watcher never got, summed
//!   over watchers) and `disordered` (events at or below a revision the watcher already had);
//!   either nonzero, or a watcher cancelled or its stream failed, is exit code 1.
//!   `--hold D` keeps the watchers idle for D before the puts start (to measure a member's
//!   memory per idle watcher from outside).
//! - `lease-keepalive --leases N --ttl T`: grants N leases of T seconds (spread over the
//!   connections, `--clients` grants at a time) before the clock starts; then each client
//!   renews them round-robin over a `LeaseKeepAlive` stream of its own (request `n` renews
//!   lease `n mod N`), one renewal in flight per stream, as etcd's `benchmark lease-keepalive`
//!   (which sends one at a time, though over a new stream for each). A renewal answered with
//!   a TTL of 0 or less (the lease is gone: expired or revoked) counts as an error
//!   `LeaseExpired`, as does one answered for another lease (`WrongLease`); any is exit code 1.
//!   A stream that fails or times out is dropped and the client's next renewal opens a new
//!   one. After the last answer every lease is revoked, best effort (failures are counted,
//!   not fatal). The grants and the revokes are outside `elapsed_seconds` and the latencies;
//!   stderr gets a line when the renewals start and when they end (for measuring a server
//!   from outside during the renewals only).
//!
//! Keys are `--key-size` bytes (after `--prefix`, for `watch` only): the key's number in `0..--key-space-size`, in decimal,
//! zero-padded (readable in `etcdctl get`), chosen at random or, with `--sequential-keys`, in
//! order of the requests. Values are `--val-size` bytes. Requests carry no tenure session
//! metadata, so tenure and etcd receive exactly the same bytes.
//!
//! With `--user NAME:PASSWORD` (etcd's `benchmark --user`), before the clock starts the bench
//! calls `Auth.Authenticate` once per endpoint (over the first connection to it: etcd's simple
//! tokens may be known to the member that issued them only) and every request on a connection
//! to that endpoint carries the endpoint's token as `token` metadata, set by an interceptor
//! from a value made once (a reference-count increment per request, no allocation). A login
//! that fails is exit code 1 before any load. Tokens are not renewed: a run longer than the
//! token's TTL (`--auth-token-ttl`, 300 s by default; etcd's simple tokens are extended by
//! use, tenure's are not) ends with `Unauthenticated` errors.
//!
//! Latencies of answered requests go into an HDR histogram (microsecond resolution, three
//! significant digits); requests answered with an error are counted by gRPC status code and
//! left out of the latencies and the throughput. A progress bar runs on stderr while the load
//! runs, unless stderr is not a terminal or `--quiet` is given.
//!
//! The summary is human-readable, or with `--json` one JSON object on stdout:
//!
//! ```text
//! {
//!   "workload": "put" | "range" | "txn-put" | "mixed" | "watch" | "lease-keepalive",
//!   "config": {
//!     "endpoints": [string], "clients": int, "conns": int,
//!     "total": int | null, "duration_seconds": float | null,
//!     "key_size": int, "val_size": int, "key_space_size": int, "sequential_keys": bool,
//!     "consistency": "l" | "s" | null,        // range and mixed only
//!     "read_ratio": float | null               // mixed only
//!   },
//!   "elapsed_seconds": float,                  // first request sent to last answer
//!   "ops_count": int,                          // requests answered without error
//!   "errors_count": int,                       // requests answered with an error
//!   "errors": { "<gRPC code>": int, ... },     // e.g. "Unavailable"; "DeadlineExceeded" for
//!                                              // requests past --request-timeout
//!   "counts": { "put" | "range" | "txn_succeeded" | "txn_failed" | "renew": int, ... },
//!   "throughput_ops_per_second": float,        // ops_count / elapsed_seconds
//!   "latency_ms": { "min", "mean", "p50", "p90", "p99", "p99_9", "max": float },
//!   "watch": {                                 // watch only (absent otherwise)
//!     "watchers": int, "streams": int, "prefix": string,
//!     "start_revision": int,                   // the first revision the watchers wait for
//!     "last_revision": int,                    // the last acknowledged put's revision
//!     "events_expected": int,                  // acknowledged puts x watchers
//!     "events_received": int,                  // events received by all watchers
//!     "missed": int, "disordered": int, "failed_watchers": int,
//!     "events_elapsed_seconds": float,         // first put sent to last event received
//!     "events_per_second": float               // events_received / events_elapsed_seconds
//!   },
//!   "lease": {                                 // lease-keepalive only (absent otherwise)
//!     "leases": int, "ttl_seconds": int,       // --leases, --ttl
//!     "granted_ttl_seconds": int,              // the smallest TTL a grant was answered with
//!     "grant_seconds": float,                  // time to grant them all
//!     "expired_renewals": int,                 // renewals answered with TTL <= 0
//!     "revoked": int, "revoke_errors": int     // the revokes after the run
//!   },
//!   "timeline": {                              // with --interval-report D only
//!     "interval_ms": float,                    // D
//!     "start_unix_ms": int,                    // wall clock when the run's clock started
//!     "ops": [int],                            // answered without error, per interval
//!     "errors": [int]                          // answered with an error, per interval
//!   }                                          // (the last interval may be partial)
//! }
//! ```
//!
//! Bad arguments are one line on stderr and exit code 2; an endpoint that cannot be reached,
//! a `watch` run whose watchers did not all receive every event, or a `lease-keepalive` run
//! with a lease that could not be granted or a renewal answered with TTL 0, is exit code 1.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::cli::{Consistency, parse_duration};
use crate::pb::etcdserverpb as pb;
use pb::kv_client::KvClient;

mod lease;
mod watch;
use lease::*;
use watch::*;

/// `tenure bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The workload.
    #[command(subcommand)]
    pub workload: Workload,
    /// Load flags (accepted before or after the workload).
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The workloads.
#[derive(Debug, Clone, Subcommand)]
pub enum Workload {
    /// Put keys.
    Put,
    /// Get single keys.
    Range(RangeArgs),
    /// Compare-and-swap: a Txn that puts a key if its mod revision is the one last seen.
    TxnPut,
    /// Gets and puts, mixed at random.
    Mixed(MixedArgs),
    /// Watchers on a prefix while clients put keys under it: events per second delivered.
    Watch(WatchArgs),
    /// Renew leases round-robin over LeaseKeepAlive streams: renewals per second.
    LeaseKeepalive(LeaseArgs),
}

/// `tenure bench lease-keepalive`.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Leases granted before the run and renewed round-robin.
    #[arg(long, default_value_t = 10_000)]
    pub leases: u64,
    /// Their TTL in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl: u64,
}

/// `tenure bench watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Watchers in all, each on the prefix.
    #[arg(long, default_value_t = 1)]
    pub watchers: u64,
    /// Watch streams the watchers are spread over (evenly).
    #[arg(long, default_value_t = 1)]
    pub streams: u64,
    /// The prefix watched and put under.
    #[arg(long, default_value = "watch/")]
    pub prefix: String,
    /// Keep the watchers idle this long before the puts start (e.g. `10s`).
    #[arg(long, value_parser = parse_duration)]
    pub hold: Option<Duration>,
}

/// `tenure bench range`.
#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// Linearizable (l) or serializable (s).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

/// `tenure bench mixed`.
#[derive(Debug, Clone, Args)]
pub struct MixedArgs {
    /// Fraction of requests that are reads, from 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
    /// Consistency of the reads: linearizable (l) or serializable (s).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
}

/// Flags every workload takes (etcd's `benchmark` names and defaults).
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// gRPC endpoints, comma-separated (`host:port` or `http://host:port`); connections are
    /// spread over them.
    #[arg(long, global = true, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: u64,
    /// gRPC connections the clients share.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: u64,
    /// Requests to send in all [default: 10000 unless --duration is given].
    #[arg(long, global = true)]
    pub total: Option<u64>,
    /// Send requests for this long instead of a fixed total (e.g. `10s`, `1m`).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Key size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub key_size: u64,
    /// Value size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub val_size: u64,
    /// Number of distinct keys.
    #[arg(long, global = true, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use keys in order (request n uses key n mod key-space-size) instead of at random.
    #[arg(long, global = true)]
    pub sequential_keys: bool,
    /// Time allowed to connect to an endpoint.
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Time allowed for one request; a request past it counts as a DeadlineExceeded error.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Print the summary as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// TLS flags (etcdctl's; `https://` endpoints).
    #[command(flatten)]
    pub tls: crate::cli::ClientTlsArgs,
    /// Authenticate as this user (`NAME:PASSWORD`) and send its token with every request.
    #[arg(long, global = true, value_name = "NAME:PASSWORD")]
    pub user: Option<String>,
    /// Count answers per interval of this length (e.g. `100ms`): the JSON summary gets a
    /// `timeline` of throughput over the run.
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub interval_report: Option<Duration>,
}

/// Largest value `--total`, `--clients`, `--conns`, the sizes and the key space may take:
/// limits that keep a typo from allocating the machine away.
const CLIENTS_MAX: u64 = 100_000;
const CONNS_MAX: u64 = 10_000;
const KEY_SIZE_MAX: u64 = 1 << 20;
const WATCHERS_MAX: u64 = 1_000_000;
const LEASES_MAX: u64 = 1_000_000;
/// etcd's largest lease TTL (`MaxLeaseTTL`, 9,000,000,000 s).
const LEASE_TTL_SECONDS_MAX: u64 = 9_000_000_000;

/// How long `watch` waits, after the last put was answered, for every watcher to receive
/// every event.
pub const WATCH_DRAIN_MAX: Duration = Duration::from_secs(60);
const VAL_SIZE_MAX: u64 = 64 << 20;

/// Latencies above this (one hour, in microseconds) are recorded as this.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Why `tenure bench`'s flags do not describe a run. Each message is one line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BenchError {
    /// `--total` and `--duration` together.
    #[error("--total and --duration cannot be used together")]
    TotalAndDuration,
    /// A count flag is zero.
    #[error("--{0} must be greater than 0")]
    Zero(&'static str),
    /// A flag is above its limit.
    #[error("--{flag} must be at most {max}")]
    TooLarge {
        /// The flag.
        flag: &'static str,
        /// Its limit.
        max: u64,
    },
    /// More connections than clients would leave connections idle.
    #[error("--conns ({conns}) must not exceed --clients ({clients})")]
    ConnsAboveClients {
        /// `--conns`.
        conns: u64,
        /// `--clients`.
        clients: u64,
    },
    /// The key space has more keys than `--key-size` digits can number.
    #[error("--key-size {key_size} cannot number {key_space_size} keys (keys are decimal)")]
    KeySpaceTooLarge {
        /// `--key-size`.
        key_size: u64,
        /// `--key-space-size`.
        key_space_size: u64,
    },
    /// More watch streams than watchers would leave streams empty.
    #[error("--streams ({streams}) must not exceed --watchers ({watchers})")]
    StreamsAboveWatchers {
        /// `--streams`.
        streams: u64,
        /// `--watchers`.
        watchers: u64,
    },
    /// An empty `--prefix` has no end to watch up to.
    #[error("--prefix must not be empty or end in 0xff")]
    Prefix,
    /// `--read-ratio` outside [0, 1].
    #[error("--read-ratio must be between 0 and 1, got {0}")]
    ReadRatio(f64),
    /// No endpoints, or one that cannot be dialled.
    #[error("--endpoints: {0}")]
    Endpoint(String),
    /// `--user` without a `:` or with an empty name.
    #[error("--user must be NAME:PASSWORD")]
    User,
}

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this many requests.
    Total(u64),
    /// After this long.
    Duration(Duration),
}

/// What one request does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Put.
    Put,
    /// Single-key range; `true` for serializable.
    Range {
        /// Served locally by the member, without confirming leadership.
        serializable: bool,
    },
    /// One renewal on the client's `LeaseKeepAlive` stream.
    LeaseKeepAlive,
    /// Compare-and-swap put.
    TxnPut,
    /// A range with probability `read_ratio`, else a put.
    Mixed {
        /// Probability of a read.
        read_ratio: f64,
        /// Reads are serializable.
        serializable: bool,
    },
}

/// A validated run.
///
/// Invariants (checked by [`Plan::from_args`]): `endpoints` non-empty, each a dialable URI;
/// `1 <= conns <= clients`; `key_space_size >= 1` and its largest key number fits in
/// `key_size` decimal digits; a `Total` stop is positive, a `Duration` stop non-zero.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workload's name as the summary prints it.
    pub workload: &'static str,
    /// What each request does.
    pub op: Op,
    /// Endpoint URIs (`http://host:port` or `https://host:port`).
    pub endpoints: Vec<String>,
    /// TLS flags for the connections.
    pub tls: crate::cli::ClientTlsArgs,
    /// `--user`: the name and password to authenticate with.
    pub user: Option<Credentials>,
    /// Concurrent clients.
    pub clients: u64,
    /// Shared connections.
    pub conns: u64,
    /// When to stop.
    pub stop: Stop,
    /// Key size in bytes.
    pub key_size: u64,
    /// Value size in bytes.
    pub val_size: u64,
    /// Distinct keys.
    pub key_space_size: u64,
    /// Keys in request order instead of random.
    pub sequential_keys: bool,
    /// Connect timeout.
    pub dial_timeout: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Watchers of the `watch` workload (whose requests are puts under its prefix).
    pub watch: Option<WatchPlan>,
    /// The leases of the `lease-keepalive` workload.
    pub lease: Option<LeasePlan>,
    /// `--interval-report`: answers are counted per interval of this length (non-zero).
    pub interval: Option<Duration>,
}

/// A user name and password (`--user`). Its `Debug` leaves the password out.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    /// The user name (not empty).
    pub name: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("name", &self.name).finish_non_exhaustive()
    }
}

impl std::str::FromStr for Credentials {
    type Err = BenchError;

    /// `NAME:PASSWORD` (split at the first `:`, as etcd's tools do).
    fn from_str(s: &str) -> Result<Credentials, BenchError> {
        match s.split_once(':') {
            Some((name, password)) if !name.is_empty() => {
                Ok(Credentials { name: name.to_string(), password: password.to_string() })
            }
            _ => Err(BenchError::User),
        }
    }
}

/// The leases of a `lease-keepalive` run. Invariant: `1 <= leases <= LEASES_MAX`,
/// `1 <= ttl_seconds <= LEASE_TTL_SECONDS_MAX`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeasePlan {
    /// Leases granted and renewed.
    pub leases: u64,
    /// The TTL asked for each.
    pub ttl_seconds: u64,
}

/// The watchers of a `watch` run. Invariant: `1 <= streams <= watchers`; `prefix` non-empty
/// and its last byte below 0xff (so that its range end is the prefix with that byte + 1).
#[derive(Debug, Clone)]
pub struct WatchPlan {
    /// Watchers in all.
    pub watchers: u64,
    /// Streams they are spread over.
    pub streams: u64,
    /// The prefix watched; every key put starts with it.
    pub prefix: Bytes,
    /// Idle time before the puts.
    pub hold: Option<Duration>,
}

impl WatchPlan {
    /// etcd's range end for the prefix.
    pub fn range_end(&self) -> Bytes {
        let mut end = self.prefix.to_vec();
        *end.last_mut().expect("a non-empty prefix") += 1;
        Bytes::from(end)
    }

    /// How many watchers stream `j` carries (the first `watchers mod streams` carry one more).
    pub fn watchers_on(&self, j: u64) -> u64 {
        self.watchers / self.streams + u64::from(j < self.watchers % self.streams)
    }
}

fn check_positive(flag: &'static str, v: u64, max: u64) -> Result<(), BenchError> {
    if v == 0 {
        return Err(BenchError::Zero(flag));
    }
    if v > max {
        return Err(BenchError::TooLarge { flag, max });
    }
    Ok(())
}

/// Number of decimal digits of `n`.
fn decimal_digits(n: u64) -> u64 {
    n.checked_ilog10().map_or(1, |d| u64::from(d) + 1)
}

impl Plan {
    /// Validates the flags of a `tenure bench` run without connecting anywhere.
    pub fn from_args(workload: &Workload, a: &LoadArgs) -> Result<Plan, BenchError> {
        let stop = match (a.total, a.duration) {
            (Some(_), Some(_)) => return Err(BenchError::TotalAndDuration),
            (Some(0), None) => return Err(BenchError::Zero("total")),
            (Some(n), None) => Stop::Total(n),
            (None, Some(d)) if d.is_zero() => return Err(BenchError::Zero("duration")),
            (None, Some(d)) => Stop::Duration(d),
            (None, None) => Stop::Total(10_000),
        };
        check_positive("clients", a.clients, CLIENTS_MAX)?;
        check_positive("conns", a.conns, CONNS_MAX)?;
        if a.conns > a.clients {
            return Err(BenchError::ConnsAboveClients { conns: a.conns, clients: a.clients });
        }
        check_positive("key-size", a.key_size, KEY_SIZE_MAX)?;
        if a.val_size > VAL_SIZE_MAX {
            return Err(BenchError::TooLarge { flag: "val-size", max: VAL_SIZE_MAX });
        }
        check_positive("key-space-size", a.key_space_size, u64::MAX)?;
        if decimal_digits(a.key_space_size - 1) > a.key_size {
            return Err(BenchError::KeySpaceTooLarge {
                key_size: a.key_size,
                key_space_size: a.key_space_size,
            });
        }
        let endpoints = a
            .endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                crate::cli::client::endpoint_uri_tls(e, &a.tls)
                    .map_err(|err| BenchError::Endpoint(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(BenchError::Endpoint("no endpoint given".to_string()));
        }
        let user = a.user.as_deref().map(str::parse).transpose()?;
        if a.interval_report.is_some_and(|d| d.is_zero()) {
            return Err(BenchError::Zero("interval-report"));
        }
        let mut watch = None;
        let mut lease = None;
        let (name, op) = match workload {
            Workload::Put => ("put", Op::Put),
            Workload::Watch(w) => {
                check_positive("watchers", w.watchers, WATCHERS_MAX)?;
                check_positive("streams", w.streams, WATCHERS_MAX)?;
                if w.streams > w.watchers {
                    return Err(BenchError::StreamsAboveWatchers {
                        streams: w.streams,
                        watchers: w.watchers,
                    });
                }
                if w.prefix.as_bytes().last().is_none_or(|b| *b == 0xff) {
                    return Err(BenchError::Prefix);
                }
                watch = Some(WatchPlan {
                    watchers: w.watchers,
                    streams: w.streams,
                    prefix: Bytes::copy_from_slice(w.prefix.as_bytes()),
                    hold: w.hold,
                });
                ("watch", Op::Put)
            }
            Workload::LeaseKeepalive(l) => {
                check_positive("leases", l.leases, LEASES_MAX)?;
                check_positive("ttl", l.ttl, LEASE_TTL_SECONDS_MAX)?;
                lease = Some(LeasePlan { leases: l.leases, ttl_seconds: l.ttl });
                ("lease-keepalive", Op::LeaseKeepAlive)
            }
            Workload::Range(r) => {
                ("range", Op::Range { serializable: r.consistency == Consistency::Serializable })
            }
            Workload::TxnPut => ("txn-put", Op::TxnPut),
            Workload::Mixed(m) => {
                if !(0.0..=1.0).contains(&m.read_ratio) {
                    return Err(BenchError::ReadRatio(m.read_ratio));
                }
                let serializable = m.consistency == Consistency::Serializable;
                ("mixed", Op::Mixed { read_ratio: m.read_ratio, serializable })
            }
        };
        Ok(Plan {
            workload: name,
            op,
            endpoints,
            tls: a.tls.clone(),
            user,
            clients: a.clients,
            conns: a.conns,
            stop,
            key_size: a.key_size,
            val_size: a.val_size,
            key_space_size: a.key_space_size,
            sequential_keys: a.sequential_keys,
            dial_timeout: a.dial_timeout,
            request_timeout: a.request_timeout,
            watch,
            lease,
            interval: a.interval_report,
        })
    }

    /// Key number `n` as the key's bytes: decimal, zero-padded to `key_size`, after the
    /// watched prefix for `watch`.
    pub fn key(&self, n: u64) -> Bytes {
        debug_assert!(n < self.key_space_size);
        let number = format!("{n:0width$}", width = self.key_size as usize);
        match &self.watch {
            None => Bytes::from(number),
            Some(w) => Bytes::from([&w.prefix[..], number.as_bytes()].concat()),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Latency {
    /// Fastest answer.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Slowest answer.
    pub max: f64,
}

/// The percentiles of a histogram of microseconds, in milliseconds (all zero when empty).
pub fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency { min: 0.0, mean: 0.0, p50: 0.0, p90: 0.0, p99: 0.0, p99_9: 0.0, max: 0.0 };
    }
    let ms = |us: u64| us as f64 / 1000.0;
    // `value_at_quantile` answers the highest value equivalent to the one at that rank
    // (within the histogram's precision), and `max` likewise; both are exact below 2,048 µs.
    Latency {
        min: ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p99_9: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// A new latency histogram: 1 µs to one hour, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// The run's parameters as the JSON summary echoes them.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReportConfig {
    /// Endpoint URIs.
    pub endpoints: Vec<String>,
    /// `--clients`.
    pub clients: u64,
    /// `--conns`.
    pub conns: u64,
    /// `--total`, if the run stopped by count.
    pub total: Option<u64>,
    /// `--duration`, if the run stopped by time.
    pub duration_seconds: Option<f64>,
    /// `--key-size`.
    pub key_size: u64,
    /// `--val-size`.
    pub val_size: u64,
    /// `--key-space-size`.
    pub key_space_size: u64,
    /// `--sequential-keys`.
    pub sequential_keys: bool,
    /// `l` or `s` for workloads that read.
    pub consistency: Option<String>,
    /// `--read-ratio` of `mixed`.
    pub read_ratio: Option<f64>,
}

/// The summary of a run (the JSON schema is in the module doc).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Report {
    /// `put`, `range`, `txn-put` or `mixed`.
    pub workload: String,
    /// The parameters.
    pub config: ReportConfig,
    /// From the first request sent to the last answer.
    pub elapsed_seconds: f64,
    /// Requests answered without error.
    pub ops_count: u64,
    /// Requests answered with an error.
    pub errors_count: u64,
    /// Errors by gRPC status code name.
    pub errors: BTreeMap<String, u64>,
    /// Answered requests by kind (`put`, `range`, `txn_succeeded`, `txn_failed`).
    pub counts: BTreeMap<String, u64>,
    /// `ops_count / elapsed_seconds`.
    pub throughput_ops_per_second: f64,
    /// Latencies of the answered requests.
    pub latency_ms: Latency,
    /// What the watchers of a `watch` run received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchSummary>,
    /// The leases of a `lease-keepalive` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseSummary>,
    /// Answers per interval, with `--interval-report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// Answers per interval of a run with `--interval-report` (the JSON schema is in the module
/// doc).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Timeline {
    /// The interval's length.
    pub interval_ms: f64,
    /// Wall-clock time the run's clock started, in milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// Requests answered without error in each interval, the first starting at
    /// `start_unix_ms`; the last interval may be partial (it ends with the last answer).
    pub ops: Vec<u64>,
    /// Requests answered with an error in each interval.
    pub errors: Vec<u64>,
}

/// Per-interval counts from counters sampled at the end of each interval (cumulative, so
/// non-decreasing): the differences between consecutive samples, the first from 0.
pub fn per_interval(cumulative: &[u64]) -> Vec<u64> {
    let mut previous = 0;
    cumulative
        .iter()
        .map(|&c| {
            let d = c.saturating_sub(previous);
            previous = previous.max(c);
            d
        })
        .collect()
}

/// The leases of a `lease-keepalive` run (the JSON schema is in the module doc).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LeaseSummary {
    /// `--leases`.
    pub leases: u64,
    /// `--ttl`.
    pub ttl_seconds: u64,
    /// The smallest TTL the grants were answered with.
    pub granted_ttl_seconds: i64,
    /// Time to grant every lease.
    pub grant_seconds: f64,
    /// Renewals answered with a TTL of 0 or less.
    pub expired_renewals: u64,
    /// Leases revoked after the run.
    pub revoked: u64,
    /// Revokes that failed (best effort: not an error of the run).
    pub revoke_errors: u64,
}

/// What the watchers of a `watch` run received (the JSON schema is in the module doc).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct WatchSummary {
    /// `--watchers`.
    pub watchers: u64,
    /// `--streams`.
    pub streams: u64,
    /// `--prefix`, as text.
    pub prefix: String,
    /// The first revision every watcher waits for (after their created responses' revisions).
    pub start_revision: i64,
    /// The revision of the last acknowledged put.
    pub last_revision: i64,
    /// Acknowledged puts times watchers.
    pub events_expected: u64,
    /// Events received by all watchers.
    pub events_received: u64,
    /// Acknowledged puts a watcher did not receive, summed over watchers.
    pub missed: u64,
    /// Events at or below a revision their watcher already had.
    pub disordered: u64,
    /// Watchers cancelled, or whose stream failed or ended.
    pub failed_watchers: u64,
    /// From the first put sent to the last event received.
    pub events_elapsed_seconds: f64,
    /// `events_received / events_elapsed_seconds`.
    pub events_per_second: f64,
}

impl WatchSummary {
    /// Whether every watcher received every acknowledged put once, in order.
    pub fn complete(&self) -> bool {
        self.missed == 0 && self.disordered == 0 && self.failed_watchers == 0
    }
}

impl Report {
    /// Puts a run's results together.
    pub fn new(plan: &Plan, elapsed: Duration, tally: &Tally) -> Report {
        let ops_count = tally.latencies.len();
        let errors_count = tally.errors.values().sum();
        let secs = elapsed.as_secs_f64();
        let consistency = match plan.op {
            Op::Range { serializable } | Op::Mixed { serializable, .. } => {
                Some(if serializable { "s" } else { "l" }.to_string())
            }
            Op::Put | Op::TxnPut | Op::LeaseKeepAlive => None,
        };
        let read_ratio = match plan.op {
            Op::Mixed { read_ratio, .. } => Some(read_ratio),
            _ => None,
        };
        Report {
            workload: plan.workload.to_string(),
            config: ReportConfig {
                endpoints: plan.endpoints.clone(),
                clients: plan.clients,
                conns: plan.conns,
                total: match plan.stop {
                    Stop::Total(n) => Some(n),
                    Stop::Duration(_) => None,
                },
                duration_seconds: match plan.stop {
                    Stop::Total(_) => None,
                    Stop::Duration(d) => Some(d.as_secs_f64()),
                },
                key_size: plan.key_size,
                val_size: plan.val_size,
                key_space_size: plan.key_space_size,
                sequential_keys: plan.sequential_keys,
                consistency,
                read_ratio,
            },
            elapsed_seconds: secs,
            ops_count,
            errors_count,
            errors: tally.errors.clone(),
            counts: tally.counts.clone(),
            throughput_ops_per_second: if secs > 0.0 { ops_count as f64 / secs } else { 0.0 },
            latency_ms: latency(&tally.latencies),
            watch: None,
            lease: None,
            timeline: None,
        }
    }

    /// Why the run is exit code 1 although it ran to the end, if it is.
    pub fn failure(&self) -> Option<&'static str> {
        if self.watch.as_ref().is_some_and(|w| !w.complete()) {
            return Some("some watchers did not receive every event");
        }
        if self.errors.contains_key(LEASE_EXPIRED) || self.errors.contains_key(WRONG_LEASE) {
            return Some("some renewals were answered with TTL 0 or for another lease");
        }
        None
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let c = &self.config;
        let l = &self.latency_ms;
        let mut out = format!(
            "{}: {} ops in {:.2} s: {:.1} ops/s ({} clients, {} conns, {} endpoints)\n",
            self.workload,
            self.ops_count,
            self.elapsed_seconds,
            self.throughput_ops_per_second,
            c.clients,
            c.conns,
            c.endpoints.len(),
        );
        out += &format!(
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  \
             (min {:.3}, mean {:.3})\n",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.min, l.mean
        );
        if self.counts.len() > 1 || self.counts.keys().any(|k| k.starts_with("txn")) {
            let counts: Vec<String> = self.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out += &format!("answers: {}\n", counts.join(", "));
        }
        if self.errors.is_empty() {
            out += "errors: none\n";
        } else {
            let errors: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out += &format!("errors: {} ({})\n", self.errors_count, errors.join(", "));
        }
        if let Some(w) = &self.watch {
            out += &format!(
                "watch: {} events to {} watchers on {} streams in {:.2} s: {:.1} events/s\n",
                w.events_received,
                w.watchers,
                w.streams,
                w.events_elapsed_seconds,
                w.events_per_second,
            );
            out += &format!(
                "watch: expected {}, missed {}, disordered {}, failed watchers {} ({})\n",
                w.events_expected,
                w.missed,
                w.disordered,
                w.failed_watchers,
                if w.complete() { "complete" } else { "INCOMPLETE" },
            );
        }
        if let Some(l) = &self.lease {
            out += &format!(
                "leases: {} granted with TTL {} s (asked {}) in {:.2} s; {} renewals expired; \
                 {} revoked, {} revoke errors\n",
                l.leases,
                l.granted_ttl_seconds,
                l.ttl_seconds,
                l.grant_seconds,
                l.expired_renewals,
                l.revoked,
                l.revoke_errors,
            );
        }
        out
    }
}

/// What the clients of a run observed, merged.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latencies of answered requests, in microseconds.
    pub latencies: Histogram<u64>,
    /// Errors by gRPC status code name.
    pub errors: BTreeMap<String, u64>,
    /// Answered requests by kind.
    pub counts: BTreeMap<String, u64>,
    /// The highest revision an answered put was given (0 if none).
    pub last_put_revision: i64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latencies: new_histogram(),
            errors: BTreeMap::new(),
            counts: BTreeMap::new(),
            last_put_revision: 0,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.add(&other.latencies).expect("histograms with the same bounds");
        self.last_put_revision = self.last_put_revision.max(other.last_put_revision);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in other.counts {
            *self.counts.entry(k).or_default() += v;
        }
    }
}

/// SplitMix64: a small, fast generator for key choice (no need for a cryptographic one, and
/// each client seeds its own, so clients do not contend on shared state).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is negligible for key spaces far below 2^64).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// State the clients share: the request counter that hands out request numbers (and, with a
/// total, stops the run) and the count of answers, for the progress bar.
struct Shared {
    plan: Plan,
    value: Bytes,
    issued: AtomicU64,
    answered: AtomicU64,
    /// Answers without error and with one (for `--interval-report`).
    succeeded: AtomicU64,
    failed: AtomicU64,
    deadline: Option<Instant>,
}

impl Shared {
    /// The next request's number, or `None` when the run is over.
    fn claim(&self) -> Option<u64> {
        if let Some(d) = self.deadline
            && Instant::now() >= d
        {
            return None;
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        match self.plan.stop {
            Stop::Total(total) if n >= total => None,
            _ => Some(n),
        }
    }
}

/// One request's outcome: which kind of answer (and a put's revision), or the error's gRPC
/// code.
type Outcome = Result<(&'static str, Option<i64>), tonic::Code>;

/// The gRPC metadata key etcd reads a client's auth token from.
const TOKEN_METADATA: &str = "token";

/// Puts a connection's auth token, if it has one, on every request sent over it. The value
/// is parsed once: each request costs a reference-count increment and a header insert.
#[derive(Debug, Clone, Default)]
struct TokenInterceptor(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert(TOKEN_METADATA, token.clone());
        }
        Ok(request)
    }
}

/// One of the run's connections: a channel whose requests carry the `--user`'s token.
type Conn = InterceptedService<Channel, TokenInterceptor>;

/// One closed-loop client.
async fn client_loop(shared: Arc<Shared>, channel: Conn, seed: u64) -> Tally {
    let plan = &shared.plan;
    let mut kv = KvClient::new(channel);
    let mut rng = SplitMix64(seed);
    let mut tally = Tally::new();
    // txn-put: the mod revision this client last saw for each key (absent: never seen, or
    // seen absent).
    let mut mod_revisions: HashMap<u64, i64> = HashMap::new();
    while let Some(n) = shared.claim() {
        let key_number = if plan.sequential_keys {
            n % plan.key_space_size
        } else {
            rng.below(plan.key_space_size)
        };
        let key = plan.key(key_number);
        let op = match plan.op {
            Op::Mixed { read_ratio, serializable } => {
                if rng.unit() < read_ratio {
                    Op::Range { serializable }
                } else {
                    Op::Put
                }
            }
            op => op,
        };
        let started = Instant::now();
        let request = async {
            match op {
                Op::Put => {
                    let req =
                        pb::PutRequest { key, value: shared.value.clone(), ..Default::default() };
                    let resp = kv.put(req).await?.into_inner();
                    Ok(("put", resp.header.map(|h| h.revision)))
                }
                Op::Range { serializable } => {
                    let req = pb::RangeRequest { key, serializable, ..Default::default() };
                    kv.range(req).await.map(|_| ("range", None))
                }
                Op::TxnPut => {
                    let req = cas_request(key.clone(), shared.value.clone(), {
                        mod_revisions.get(&key_number).copied()
                    });
                    let resp = kv.txn(req).await?.into_inner();
                    match learned_mod_revision(&resp) {
                        Some(rev) => mod_revisions.insert(key_number, rev),
                        None => mod_revisions.remove(&key_number),
                    };
                    Ok((if resp.succeeded { "txn_succeeded" } else { "txn_failed" }, None))
                }
                Op::Mixed { .. } => unreachable!("resolved above"),
                Op::LeaseKeepAlive => unreachable!("lease_client_loop runs lease-keepalive"),
            }
        };
        let outcome: Outcome = match tokio::time::timeout(plan.request_timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(status)) => Err(status.code()),
            Err(_) => Err(tonic::Code::DeadlineExceeded),
        };
        let micros = started.elapsed().as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
        match outcome {
            Ok((kind, revision)) => {
                tally.latencies.saturating_record(micros.max(1));
                tally.last_put_revision = tally.last_put_revision.max(revision.unwrap_or(0));
                *tally.counts.entry(kind.to_string()).or_default() += 1;
                shared.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Err(code) => {
                *tally.errors.entry(format!("{code:?}")).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.answered.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

/// The compare-and-swap `Txn`: put `key` if its mod revision is `seen` (if `None`: if the key
/// is absent), else read it.
pub fn cas_request(key: Bytes, value: Bytes, seen: Option<i64>) -> pb::TxnRequest {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let compare = match seen {
        Some(rev) => pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::ModRevision(rev)),
            range_end: Bytes::new(),
        },
        None => pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Version as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::Version(0)),
            range_end: Bytes::new(),
        },
    };
    let put = pb::PutRequest { key: key.clone(), value, ..Default::default() };
    let get = pb::RangeRequest { key, ..Default::default() };
    pb::TxnRequest {
        compare: vec![compare],
        success: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestPut(put)) }],
        failure: vec![pb::RequestOp { request: Some(pb::request_op::Request::RequestRange(get)) }],
    }
}

/// The key's mod revision after a [`cas_request`]: the Txn's revision if the put happened,
/// else the one the read found (`None` if the key is absent).
pub fn learned_mod_revision(resp: &pb::TxnResponse) -> Option<i64> {
    if resp.succeeded {
        return resp.header.as_ref().map(|h| h.revision);
    }
    match resp.responses.first().and_then(|r| r.response.as_ref()) {
        Some(pb::response_op::Response::ResponseRange(r)) => {
            r.kvs.first().map(|kv| kv.mod_revision)
        }
        _ => None,
    }
}

/// Connects `plan.conns` channels, connection `i` to endpoint `i mod endpoints`; with
/// `--user`, authenticates once per endpoint (over its first connection) and has every
/// connection to it send the token.
async fn connect(plan: &Plan) -> anyhow::Result<Vec<Conn>> {
    let channels = dial(plan).await?;
    let mut tokens = vec![TokenInterceptor::default(); plan.endpoints.len()];
    if let Some(user) = &plan.user {
        for (e, token) in tokens.iter_mut().enumerate() {
            // Connection e goes to endpoint e (there are at least as many connections as
            // endpoints used: with fewer connections, the endpoints past them are unused).
            let Some(channel) = channels.get(e) else { break };
            let uri = &plan.endpoints[e];
            *token = TokenInterceptor(Some(
                authenticate(plan, channel.clone(), user)
                    .await
                    .with_context(|| format!("cannot authenticate as {} at {uri}", user.name))?,
            ));
        }
    }
    Ok(channels
        .into_iter()
        .enumerate()
        .map(|(i, ch)| InterceptedService::new(ch, tokens[i % plan.endpoints.len()].clone()))
        .collect())
}

/// `Auth.Authenticate` as `user` over `channel`: the token, as metadata.
async fn authenticate(
    plan: &Plan,
    channel: Channel,
    user: &Credentials,
) -> anyhow::Result<MetadataValue<Ascii>> {
    let mut auth = pb::auth_client::AuthClient::new(channel);
    let request =
        pb::AuthenticateRequest { name: user.name.clone(), password: user.password.clone() };
    let token = match tokio::time::timeout(plan.request_timeout, auth.authenticate(request)).await {
        Ok(Ok(r)) => r.into_inner().token,
        Ok(Err(status)) => bail!("{}", status.message()),
        Err(_) => bail!("request timeout"),
    };
    MetadataValue::try_from(token.as_str()).map_err(|_| anyhow!("the token is not ASCII"))
}

/// Dials `plan.conns` channels, connection `i` to endpoint `i mod endpoints`.
async fn dial(plan: &Plan) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    let tls = plan.tls.client_config()?;
    for i in 0..plan.conns {
        let uri = &plan.endpoints[(i % plan.endpoints.len() as u64) as usize];
        let connect = crate::tls::connect_channel(uri, tls.clone(), |e| {
            e.connect_timeout(plan.dial_timeout).tcp_nodelay(true)
        });
        let channel = match tokio::time::timeout(plan.dial_timeout, connect).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(e)) => return Err(anyhow!("cannot connect to {uri}: {e}")),
            Err(_) => return Err(anyhow!("cannot connect to {uri}: dial timeout")),
        };
        channels.push(channel);
    }
    Ok(channels)
}

/// Runs the load; `progress` shows a bar on stderr.
pub async fn run(plan: &Plan, progress: bool) -> anyhow::Result<Report> {
    let channels = connect(plan).await?;
    let watchers = match &plan.watch {
        Some(w) => Some(Watchers::start(w, &channels).await?),
        None => None,
    };
    if let (Some(w), Some(hold)) = (&plan.watch, plan.watch.as_ref().and_then(|w| w.hold)) {
        eprintln!("tenure bench: {} watchers created; holding them idle for {hold:?}", w.watchers);
        tokio::time::sleep(hold).await;
    }
    let leases = match plan.lease {
        Some(l) => {
            let granted = grant_leases(plan, l, &channels).await?;
            eprintln!(
                "tenure bench: {} leases granted in {:.2} s; renewing",
                l.leases,
                granted.elapsed.as_secs_f64()
            );
            Some(granted)
        }
        None => None,
    };
    let started = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        value: Bytes::from(vec![b'v'; plan.val_size as usize]),
        issued: AtomicU64::new(0),
        answered: AtomicU64::new(0),
        succeeded: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        deadline: match plan.stop {
            Stop::Duration(d) => Some(started + d),
            Stop::Total(_) => None,
        },
    });
    let bar = progress.then(|| progress_bar(plan));
    let ticker = bar.clone().map(|bar| {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                update_bar(&bar, &shared, started);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    // --interval-report: the counters sampled at the end of each interval.
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    let sampler = plan.interval.map(|every| {
        let (shared, samples) = (shared.clone(), samples.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at((started + every).into(), every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                ticks.tick().await;
                let sample = (
                    shared.succeeded.load(Ordering::Relaxed),
                    shared.failed.load(Ordering::Relaxed),
                );
                samples.lock().expect("samples lock").push(sample);
            }
        })
    });
    // Seeds differ per client and per run, so two runs do not replay the same keys.
    let base_seed = started.elapsed().as_nanos() as u64 ^ u64::from(std::process::id()) << 32;
    let tasks: Vec<_> = (0..plan.clients)
        .map(|i| {
            let channel = channels[(i % plan.conns) as usize].clone();
            let seed = base_seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            match &leases {
                Some(l) => tokio::spawn(lease_client_loop(shared.clone(), channel, l.ids.clone())),
                None => tokio::spawn(client_loop(shared.clone(), channel, seed)),
            }
        })
        .collect();
    let mut tally = Tally::new();
    for t in tasks {
        tally.merge(t.await.context("a client task failed")?);
    }
    let elapsed = started.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    let timeline = match (plan.interval, sampler) {
        (Some(every), Some(sampler)) => {
            sampler.abort();
            let _ = sampler.await;
            let mut samples = std::mem::take(&mut *samples.lock().expect("samples lock"));
            // The last, partial interval: up to the last answer.
            let last =
                (shared.succeeded.load(Ordering::Relaxed), shared.failed.load(Ordering::Relaxed));
            if samples.last() != Some(&last) {
                samples.push(last);
            }
            let ok: Vec<u64> = samples.iter().map(|s| s.0).collect();
            let failed: Vec<u64> = samples.iter().map(|s| s.1).collect();
            Some(Timeline {
                interval_ms: every.as_secs_f64() * 1000.0,
                start_unix_ms: started_unix_ms,
                ops: per_interval(&ok),
                errors: per_interval(&failed),
            })
        }
        _ => None,
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut report = Report::new(plan, elapsed, &tally);
    report.timeline = timeline;
    if let (Some(w), Some(watchers)) = (&plan.watch, watchers) {
        let acked = tally.counts.get("put").copied().unwrap_or(0);
        report.watch = Some(watchers.finish(w, started, acked, tally.last_put_revision).await);
    }
    if let (Some(l), Some(granted)) = (plan.lease, leases) {
        eprintln!("tenure bench: renewals done; revoking the leases");
        let (revoked, revoke_errors) = revoke_leases(plan, &granted.ids, &channels).await;
        report.lease = Some(LeaseSummary {
            leases: l.leases,
            ttl_seconds: l.ttl_seconds,
            granted_ttl_seconds: granted.ttl_min,
            grant_seconds: granted.elapsed.as_secs_f64(),
            expired_renewals: tally.errors.get(LEASE_EXPIRED).copied().unwrap_or(0),
            revoked,
            revoke_errors,
        });
    }
    Ok(report)
}

fn progress_bar(plan: &Plan) -> indicatif::ProgressBar {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let (len, template) = match plan.stop {
        Stop::Total(n) => (n, "{bar:40} {pos}/{len} requests  {msg}"),
        Stop::Duration(d) => (d.as_millis() as u64, "{bar:40} {elapsed}  {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}

fn update_bar(bar: &indicatif::ProgressBar, shared: &Shared, started: Instant) {
    let answered = shared.answered.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    match shared.plan.stop {
        Stop::Total(_) => bar.set_position(answered),
        Stop::Duration(_) => bar.set_position(started.elapsed().as_millis() as u64),
    }
    if secs > 0.0 {
        bar.set_message(format!("{answered} answered, {:.0}/s", answered as f64 / secs));
    }
}

/// `tenure bench`: validates, runs on a multi-threaded runtime, prints the summary.
pub fn main(args: &BenchArgs) -> ExitCode {
    let plan = match Plan::from_args(&args.workload, &args.load) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tenure bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tenure bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let progress = !args.load.quiet && std::io::stderr().is_terminal();
    match runtime.block_on(run(&plan, progress)) {
        Ok(report) => {
            if args.load.json {
                match serde_json::to_string(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => {
                        eprintln!("tenure bench: cannot encode the summary: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.to_text());
            }
            if let Some(why) = report.failure() {
                eprintln!("tenure bench: {why}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tenure bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    pub(super) fn plan(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(["tenure", "bench"].iter().chain(args))
            .map_err(|e| crate::cli::one_line(&e))?;
        let Command::Bench(b) = cli.command else { panic!("not bench") };
        Plan::from_args(&b.workload, &b.load).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_parse_before_or_after_the_workload() {
        let p = plan(&["--clients", "64", "put", "--conns", "4", "--duration", "3s"]).unwrap();
        assert_eq!((p.workload, p.clients, p.conns), ("put", 64, 4));
        assert_eq!(p.stop, Stop::Duration(Duration::from_secs(3)));
        let p = plan(&["range", "--consistency", "s", "--endpoints", "a:1,http://b:2"]).unwrap();
        assert_eq!(p.op, Op::Range { serializable: true });
        assert_eq!(p.endpoints, ["http://a:1", "http://b:2"]);
        assert_eq!(p.stop, Stop::Total(10_000));
        let p = plan(&["mixed", "--read-ratio", "0.9"]).unwrap();
        assert_eq!(p.op, Op::Mixed { read_ratio: 0.9, serializable: false });
        assert_eq!(plan(&["txn-put"]).unwrap().op, Op::TxnPut);
        let p = plan(&["lease-keepalive", "--clients", "64", "--duration", "2s"]).unwrap();
        assert_eq!((p.workload, p.op), ("lease-keepalive", Op::LeaseKeepAlive));
        assert_eq!(p.lease, Some(LeasePlan { leases: 10_000, ttl_seconds: 60 }));
        let p = plan(&["lease-keepalive", "--leases", "5", "--ttl", "7"]).unwrap();
        assert_eq!(p.lease, Some(LeasePlan { leases: 5, ttl_seconds: 7 }));
        assert_eq!(plan(&["put"]).unwrap().lease, None);
    }

    #[test]
    fn user_splits_at_the_first_colon_and_debug_hides_the_password() {
        assert_eq!(plan(&["put"]).unwrap().user, None);
        let user = plan(&["put", "--user", "alice:pa:ss"]).unwrap().user.unwrap();
        assert_eq!((user.name.as_str(), user.password.as_str()), ("alice", "pa:ss"));
        let empty = plan(&["--user", "bob:", "range"]).unwrap().user.unwrap();
        assert_eq!((empty.name.as_str(), empty.password.as_str()), ("bob", ""));
        let shown = format!("{:?}", plan(&["put", "--user", "alice:secret"]).unwrap());
        assert!(shown.contains("alice") && !shown.contains("secret"), "{shown}");
    }

    #[test]
    fn the_token_interceptor_sets_the_token_metadata_only_when_there_is_one() {
        use tonic::service::Interceptor as _;
        let token: MetadataValue<Ascii> = "abc.1".parse().unwrap();
        let r = TokenInterceptor(Some(token)).call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get(TOKEN_METADATA).unwrap(), "abc.1");
        let r = TokenInterceptor(None).call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get(TOKEN_METADATA).is_none());
    }

    #[test]
    fn bad_flags_are_refused_with_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["put", "--total", "5", "--duration", "1s"], "cannot be used together"),
            (&["put", "--total", "0"], "--total must be greater than 0"),
            (&["put", "--clients", "0"], "--clients must be greater than 0"),
            (&["put", "--clients", "2", "--conns", "3"], "must not exceed --clients"),
            (&["put", "--key-size", "2", "--key-space-size", "101"], "cannot number 101 keys"),
            (&["put", "--key-space-size", "0"], "--key-space-size must be greater than 0"),
            (&["mixed", "--read-ratio", "1.5"], "between 0 and 1"),
            (&["put", "--endpoints", "unix://a:1"], "unsupported scheme"),
            (&["put", "--endpoints", ","], "no endpoint given"),
            (&["put", "--duration", "0s"], "--duration must be greater than 0"),
            (&["range", "--consistency", "x"], "invalid value 'x'"),
            (&["watch", "--watchers", "1", "--streams", "2"], "must not exceed --watchers"),
            (&["watch", "--prefix", ""], "--prefix must not be empty"),
            (&["lease-keepalive", "--leases", "0"], "--leases must be greater than 0"),
            (&["lease-keepalive", "--ttl", "0"], "--ttl must be greater than 0"),
            (&["lease-keepalive", "--ttl", "9000000001"], "--ttl must be at most 9000000000"),
            (&["put", "--user", "alice"], "--user must be NAME:PASSWORD"),
            (&["put", "--user", ":pw"], "--user must be NAME:PASSWORD"),
        ];
        for (args, needle) in cases {
            let err = plan(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(!err.contains('\n'), "{args:?}: {err}");
        }
        // The boundary: two digits number exactly 100 keys.
        assert!(plan(&["put", "--key-size", "2", "--key-space-size", "100"]).is_ok());
    }

    #[test]
    fn watch_keys_are_under_the_prefix_and_watchers_spread_evenly_over_streams() {
        let p = plan(&[
            "watch",
            "--watchers",
            "10",
            "--streams",
            "4",
            "--prefix",
            "w/",
            "--key-space-size",
            "9",
        ])
        .unwrap();
        assert_eq!(p.key(7), Bytes::from_static(b"w/00000007"));
        let w = p.watch.expect("a watch plan");
        assert_eq!(w.range_end(), Bytes::from_static(b"w0"));
        let spread: Vec<u64> = (0..4).map(|j| w.watchers_on(j)).collect();
        assert_eq!(spread, [3, 3, 2, 2]);
        assert_eq!(
            plan(&["put", "--key-space-size", "9"]).unwrap().key(7),
            Bytes::from_static(b"00000007")
        );
    }

    #[test]
    fn interval_report_parses_and_is_counted_per_interval() {
        let p = plan(&["put", "--duration", "3s", "--interval-report", "100ms"]).unwrap();
        assert_eq!(p.interval, Some(Duration::from_millis(100)));
        assert_eq!(
            plan(&["--interval-report", "1s", "put"]).unwrap().interval,
            Some(Duration::from_secs(1))
        );
        assert_eq!(plan(&["put"]).unwrap().interval, None);
        let err = plan(&["put", "--interval-report", "0s"]).unwrap_err();
        assert!(err.contains("--interval-report must be greater than 0"), "{err}");
        // Cumulative counts sampled at each interval's end, to counts per interval.
        assert_eq!(per_interval(&[5, 12, 12, 30]), [5, 7, 0, 18]);
        assert_eq!(per_interval(&[]), Vec::<u64>::new());
        // The timeline is in the JSON only when asked for.
        let report = Report::new(&p, Duration::from_secs(3), &Tally::new());
        let json = serde_json::to_value(&report).unwrap();
        assert!(json.get("timeline").is_none(), "{json}");
        let mut report = report;
        report.timeline = Some(Timeline {
            interval_ms: 100.0,
            start_unix_ms: 1_700_000_000_000,
            ops: vec![5, 7],
            errors: vec![0, 1],
        });
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["timeline"]["ops"], serde_json::json!([5, 7]));
        assert_eq!(json["timeline"]["errors"], serde_json::json!([0, 1]));
        assert_eq!(json["timeline"]["interval_ms"], serde_json::json!(100.0));
    }

    #[test]
    fn keys_are_zero_padded_decimal() {
        let p = plan(&["put", "--key-size", "8", "--key-space-size", "1000"]).unwrap();
        assert_eq!(p.key(0), Bytes::from_static(b"00000000"));
        assert_eq!(p.key(999), Bytes::from_static(b"00000999"));
        assert_eq!(decimal_digits(0), 1);
        assert_eq!(decimal_digits(9), 1);
        assert_eq!(decimal_digits(10), 2);
        assert_eq!(decimal_digits(u64::MAX), 20);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 µs once each: every percentile is exact (HDR is exact below 2,048).
        let mut h = new_histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        let l = latency(&h);
        assert_eq!((l.min, l.max), (0.001, 1.0));
        assert_eq!((l.p50, l.p90, l.p99, l.p99_9), (0.5, 0.9, 0.99, 0.999));
        assert!((l.mean - 0.5005).abs() < 1e-9, "{}", l.mean);
        // A long tail: 999 answers at 1 ms and one at 2 s move p99.9 and max only.
        let mut h = new_histogram();
        for _ in 0..999 {
            h.record(1000).unwrap();
        }
        h.record(2_000_000).unwrap();
        let l = latency(&h);
        assert_eq!((l.p50, l.p99, l.p99_9), (1.0, 1.0, 1.0));
        // Above 2,048 µs values are bucketed: within 0.1% (three significant digits).
        assert!((l.max - 2000.0).abs() <= 2.0, "{}", l.max);
        // Nothing answered: zeros, not NaN.
        let l = latency(&new_histogram());
        assert_eq!(
            l,
            Latency { min: 0.0, mean: 0.0, p50: 0.0, p90: 0.0, p99: 0.0, p99_9: 0.0, max: 0.0 }
        );
    }

    #[test]
    fn tallies_merge_and_report_throughput() {
        let p = plan(&["mixed", "--clients", "2", "--read-ratio", "0.5"]).unwrap();
        let mut a = Tally::new();
        a.latencies.record(1000).unwrap();
        a.counts.insert("put".into(), 1);
        a.errors.insert("Unavailable".into(), 2);
        let mut b = Tally::new();
        b.latencies.record(3000).unwrap();
        b.counts.insert("range".into(), 1);
        b.errors.insert("Unavailable".into(), 1);
        a.merge(b);
        let r = Report::new(&p, Duration::from_millis(500), &a);
        assert_eq!((r.ops_count, r.errors_count), (2, 3));
        assert_eq!(r.throughput_ops_per_second, 4.0);
        assert_eq!(r.errors["Unavailable"], 3);
        assert_eq!(r.config.consistency.as_deref(), Some("l"));
        assert_eq!(r.config.read_ratio, Some(0.5));
        let text = r.to_text();
        assert!(text.starts_with("mixed: 2 ops in 0.50 s: 4.0 ops/s (2 clients"), "{text}");
        assert!(text.contains("answers: put 1, range 1"), "{text}");
        assert!(text.contains("errors: 3 (Unavailable 3)"), "{text}");
    }

    #[test]
    fn cas_request_compares_then_puts_or_reads() {
        use pb::compare::{CompareTarget, TargetUnion};
        let k = Bytes::from_static(b"k");
        let v = Bytes::from_static(b"v");
        let fresh = cas_request(k.clone(), v.clone(), None);
        assert_eq!(fresh.compare[0].target, CompareTarget::Version as i32);
        assert_eq!(fresh.compare[0].target_union, Some(TargetUnion::Version(0)));
        let seen = cas_request(k, v, Some(7));
        assert_eq!(seen.compare[0].target, CompareTarget::Mod as i32);
        assert_eq!(seen.compare[0].target_union, Some(TargetUnion::ModRevision(7)));
        assert!(matches!(seen.success[0].request, Some(pb::request_op::Request::RequestPut(_))));
        assert!(matches!(seen.failure[0].request, Some(pb::request_op::Request::RequestRange(_))));
        let won = pb::TxnResponse {
            header: Some(pb::ResponseHeader { revision: 9, ..Default::default() }),
            succeeded: true,
            responses: vec![],
        };
        assert_eq!(learned_mod_revision(&won), Some(9));
        let lost = |kvs| pb::TxnResponse {
            header: Some(pb::ResponseHeader { revision: 12, ..Default::default() }),
            succeeded: false,
            responses: vec![pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponseRange(pb::RangeResponse {
                    kvs,
                    ..Default::default()
                })),
            }],
        };
        let kv = crate::pb::mvccpb::KeyValue { mod_revision: 11, ..Default::default() };
        assert_eq!(learned_mod_revision(&lost(vec![kv])), Some(11));
        assert_eq!(learned_mod_revision(&lost(vec![])), None);
    }

    #[test]
    fn json_summary_round_trips_with_the_documented_fields() {
        let p = plan(&["range", "--total", "3", "--consistency", "s"]).unwrap();
        let mut t = Tally::new();
        t.latencies.record(1500).unwrap();
        t.counts.insert("range".into(), 1);
        let json = serde_json::to_string(&Report::new(&p, Duration::from_secs(1), &t)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in [
            "workload",
            "config",
            "elapsed_seconds",
            "ops_count",
            "errors_count",
            "errors",
            "counts",
            "throughput_ops_per_second",
            "latency_ms",
        ] {
            assert!(v.get(field).is_some(), "missing {field}: {json}");
        }
        for field in ["min", "mean", "p50", "p90", "p99", "p99_9", "max"] {
            assert!(v["latency_ms"][field].is_f64(), "latency_ms.{field}: {json}");
        }
        assert_eq!(v["config"]["total"], 3);
        assert!(v["config"]["duration_seconds"].is_null());
        assert_eq!(v["config"]["consistency"], "s");
        assert_eq!(v["latency_ms"]["p50"], 1.5);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.ops_count, 1);
    }
}
