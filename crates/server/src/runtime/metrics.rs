//! One member's metrics, served as Prometheus (OpenMetrics) text on `/metrics`.
//!
//! Each [`Member`](crate::member::Member) owns its own [`Metrics`] and registry, so the three
//! members of `tenure dev` (one process) each report their own numbers on their own port.
//! Names follow etcd where etcd has the metric (dashboards and alerts written for etcd keep
//! working); the rest are `tenure_*`. Counters get their `_total` suffix from the encoder.
//!
//! The `process_*` metrics every Prometheus client library exports (and `etcdctl check
//! datascale` reads) are read from `/proc/self` at each scrape by [`ProcessCollector`]; they
//! describe the whole process, so the members of `tenure dev` all report the same numbers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::status::NodeStatus;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Running totals the dashboard turns into rates and means between two samples (a histogram
/// keeps its sum and count to itself).
#[derive(Debug, Default)]
struct Totals {
    /// Writes answered (with a result or an error).
    writes_answered: std::sync::atomic::AtomicU64,
    /// Their time from being taken by the replica thread to being answered, in microseconds.
    write_micros: std::sync::atomic::AtomicU64,
    /// Syncs finished.
    fsyncs: std::sync::atomic::AtomicU64,
    /// Their time, in microseconds.
    fsync_micros: std::sync::atomic::AtomicU64,
}

/// A reading of a member's running totals (see [`Metrics::sample`]): the difference of two
/// readings gives a rate and a mean latency over the time between them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSample {
    /// Writes answered so far.
    pub writes_answered: u64,
    /// Their summed latency, in microseconds.
    pub write_micros: u64,
    /// Syncs finished so far.
    pub fsyncs: u64,
    /// Their summed latency, in microseconds.
    pub fsync_micros: u64,
}

/// The metrics of one member. Cheap to update from any thread (atomics inside).
pub struct Metrics {
    /// Totals for the dashboard, kept beside the Prometheus registry.
    totals: Totals,
    registry: Registry,
    term: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    leader_changes: Counter,
    proposals_committed: Counter,
    proposals_failed: Counter,
    apply_lag: Gauge,
    db_total_bytes: Gauge,
    disk_full: Gauge,
    no_space: Counter,
    fsync_seconds: Histogram,
    peer_sent: Counter,
    peer_dropped: Counter,
    snapshots: Counter,
    snapshots_installed: Counter,
    snapshot_send_success: Counter,
    snapshot_send_failures: Counter,
    snapshot_send_seconds: Histogram,
    snapshot_receive_success: Counter,
    snapshot_receive_failures: Counter,
    peer_rtt_seconds: Histogram,
    watchers: Gauge,
    watch_streams: Gauge,
    slow_watchers: Gauge,
    watch_events: Counter,
    leases_granted: Counter,
    leases_revoked: Counter,
    leases_renewed: Counter,
    lease_ttl_seconds: Histogram,
    /// Heartbeat rounds sent and not yet answered: (peer, round) -> when sent.
    heartbeats_in_flight: Mutex<HashMap<(u64, u64), Instant>>,
}

/// Most unanswered heartbeat rounds remembered; past it the oldest are forgotten (a peer that
/// is down never answers).
const HEARTBEATS_IN_FLIGHT_MAX: usize = 4096;

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics in a registry of their own.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let term = Gauge::default();
        let is_leader = Gauge::default();
        let has_leader = Gauge::default();
        let leader_changes = Counter::default();
        let proposals_committed = Counter::default();
        let proposals_failed = Counter::default();
        let apply_lag = Gauge::default();
        // etcd's buckets: 1 ms doubling to about 8 s.
        let fsync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let peer_sent = Counter::default();
        let peer_dropped = Counter::default();
        let snapshots = Counter::default();
        let snapshots_installed = Counter::default();
        let snapshot_send_success = Counter::default();
        let snapshot_send_failures = Counter::default();
        // etcd's buckets for snapshot sends: 0.1 s doubling to about 410 s.
        let snapshot_send_seconds = Histogram::new(exponential_buckets(0.1, 2.0, 13));
        let snapshot_receive_success = Counter::default();
        let snapshot_receive_failures = Counter::default();
        let peer_rtt_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "etcd_network_peer_round_trip_time_seconds",
            "Round trip of a heartbeat to a peer and its answer, over all peers.",
            peer_rtt_seconds.clone(),
        );
        registry.register("etcd_server_term", "The current Raft term.", term.clone());
        let db_total_bytes = Gauge::default();
        registry.register(
            "etcd_mvcc_db_total_size_in_bytes",
            "What the store holds, in bytes (kv::Store::size_bytes; the figure the quota checks).",
            db_total_bytes.clone(),
        );
        let disk_full = Gauge::default();
        registry.register(
            "tenure_disk_full",
            "Whether this member's disk is full (1): its log writes wait for space and writes \
             through it are refused; 0 once it writes again.",
            disk_full.clone(),
        );
        let no_space = Counter::default();
        registry.register(
            "tenure_disk_no_space",
            "Disk operations that found no space (ENOSPC or EDQUOT): log writes, syncs, \
             snapshots taken.",
            no_space.clone(),
        );
        registry.register(
            "etcd_server_is_leader",
            "Whether this member is the leader (1) or not (0).",
            is_leader.clone(),
        );
        registry.register(
            "etcd_server_has_leader",
            "Whether this member knows a leader (1) or not (0).",
            has_leader.clone(),
        );
        registry.register(
            "etcd_server_leader_changes_seen",
            "Leader changes this member has seen.",
            leader_changes.clone(),
        );
        registry.register(
            "etcd_server_proposals_committed",
            "Client writes committed and applied, answered with the state machine's result.",
            proposals_committed.clone(),
        );
        registry.register(
            "etcd_server_proposals_failed",
            "Client writes answered with an error (no leader, leader changed, timeout, ...).",
            proposals_failed.clone(),
        );
        registry.register(
            "tenure_server_apply_lag_entries",
            "Log entries committed but not yet applied (commit index - applied index).",
            apply_lag.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "Latency of the syncs that make the log durable, measured on the sync thread.",
            fsync_seconds.clone(),
        );
        registry.register(
            "tenure_peer_messages_sent",
            "Raft messages written to a peer connection.",
            peer_sent.clone(),
        );
        registry.register(
            "tenure_peer_messages_dropped",
            "Raft messages dropped (peer queue full or peer unreachable); Raft retransmits.",
            peer_dropped.clone(),
        );
        registry.register(
            "tenure_snapshots",
            "Snapshots taken here (written, then the log compacted behind them).",
            snapshots.clone(),
        );
        registry.register(
            "tenure_snapshots_installed",
            "Snapshots received from a leader and installed in place of the state machine.",
            snapshots_installed.clone(),
        );
        registry.register(
            "etcd_network_snapshot_send_success",
            "Snapshot transfers to a follower that completed.",
            snapshot_send_success.clone(),
        );
        registry.register(
            "etcd_network_snapshot_send_failures",
            "Snapshot transfers to a follower given up (after retries, or refused).",
            snapshot_send_failures.clone(),
        );
        registry.register(
            "etcd_network_snapshot_send_total_duration_seconds",
            "Time a completed snapshot transfer took, resumes included.",
            snapshot_send_seconds.clone(),
        );
        registry.register(
            "etcd_network_snapshot_receive_success",
            "Snapshots received from a leader, durable and handed to the replica.",
            snapshot_receive_success.clone(),
        );
        registry.register(
            "etcd_network_snapshot_receive_failures",
            "Snapshot transfers from a leader that failed for good (refused or damaged).",
            snapshot_receive_failures.clone(),
        );
        let watchers = Gauge::default();
        let watch_streams = Gauge::default();
        let slow_watchers = Gauge::default();
        let watch_events = Counter::default();
        registry.register(
            "etcd_debugging_mvcc_watcher_total",
            "Watchers open on this member.",
            watchers.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_watch_stream_total",
            "Watch streams open on this member.",
            watch_streams.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Watchers catching up from the store's history (unsynced, in etcd's words).",
            slow_watchers.clone(),
        );
        registry.register(
            "etcd_debugging_mvcc_events",
            "Events sent to watchers.",
            watch_events.clone(),
        );
        let leases_granted = Counter::default();
        let leases_revoked = Counter::default();
        let leases_renewed = Counter::default();
        // etcd's buckets: 1 s doubling to about 2 hours.
        let lease_ttl_seconds = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "etcd_debugging_lease_granted",
            "Leases granted through this member.",
            leases_granted.clone(),
        );
        registry.register(
            "etcd_debugging_lease_revoked",
            "Leases revoked: by a client through this member, or by expiry as this member \
             applied it.",
            leases_revoked.clone(),
        );
        registry.register(
            "etcd_debugging_lease_renewed",
            "Lease renewals (keep-alives) applied and answered through this member.",
            leases_renewed.clone(),
        );
        registry.register(
            "etcd_debugging_lease_ttl_total",
            "TTLs of the leases granted through this member, in seconds.",
            lease_ttl_seconds.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            term,
            is_leader,
            has_leader,
            leader_changes,
            proposals_committed,
            proposals_failed,
            apply_lag,
            db_total_bytes,
            disk_full,
            no_space,
            fsync_seconds,
            peer_sent,
            peer_dropped,
            snapshots,
            snapshots_installed,
            snapshot_send_success,
            snapshot_send_failures,
            snapshot_send_seconds,
            snapshot_receive_success,
            snapshot_receive_failures,
            peer_rtt_seconds,
            watchers,
            watch_streams,
            slow_watchers,
            watch_events,
            leases_granted,
            leases_revoked,
            leases_renewed,
            lease_ttl_seconds,
            heartbeats_in_flight: Mutex::new(HashMap::new()),
            totals: Totals::default(),
        }
    }

    /// A watch stream opened.
    pub fn watch_stream_opened(&self) {
        self.watch_streams.inc();
    }

    /// A watch stream closed.
    pub fn watch_stream_closed(&self) {
        self.watch_streams.dec();
    }

    /// A watcher was created.
    pub fn watcher_added(&self) {
        self.watchers.inc();
    }

    /// A watcher was cancelled or its stream closed.
    pub fn watcher_removed(&self) {
        self.watchers.dec();
    }

    /// A watcher started (`true`) or finished (`false`) catching up from history.
    pub fn watcher_catching_up(&self, started: bool) {
        if started {
            self.slow_watchers.inc();
        } else {
            self.slow_watchers.dec();
        }
    }

    /// `n` events were sent to watchers.
    pub fn watch_events_sent(&self, n: u64) {
        self.watch_events.inc_by(n);
    }

    /// A lease of `ttl_secs` was granted.
    pub fn lease_granted(&self, ttl_secs: i64) {
        self.leases_granted.inc();
        self.lease_ttl_seconds.observe(ttl_secs as f64);
    }

    /// `n` leases were revoked.
    pub fn lease_revoked(&self, n: u64) {
        self.leases_revoked.inc_by(n);
    }

    /// A lease was renewed.
    pub fn lease_renewed(&self) {
        self.leases_renewed.inc();
    }

    /// A heartbeat of round `round` left for `peer`.
    pub fn heartbeat_sent(&self, peer: u64, round: u64) {
        let mut m = self.heartbeats_in_flight.lock().expect("heartbeat map");
        if m.len() >= HEARTBEATS_IN_FLIGHT_MAX {
            let cutoff = Instant::now() - Duration::from_secs(10);
            m.retain(|_, sent| *sent > cutoff);
            if m.len() >= HEARTBEATS_IN_FLIGHT_MAX {
                m.clear();
            }
        }
        m.entry((peer, round)).or_insert_with(Instant::now);
    }

    /// `peer` answered the heartbeat of round `round`: records the round trip.
    pub fn heartbeat_answered(&self, peer: u64, round: u64) {
        let sent = self.heartbeats_in_flight.lock().expect("heartbeat map").remove(&(peer, round));
        if let Some(sent) = sent {
            self.peer_rtt_seconds.observe(sent.elapsed().as_secs_f64());
        }
    }

    /// Updates the gauges from a freshly published status, counting a leader change when the
    /// leader known differs from `previous`'s, and the leases expired since `previous` as
    /// revoked (etcd counts an expiry as the revoke it proposes).
    pub fn observe_status(&self, previous: &NodeStatus, status: &NodeStatus) {
        let expired = status.leases_expired.saturating_sub(previous.leases_expired);
        if expired > 0 {
            self.leases_revoked.inc_by(expired);
        }
        self.term.set(i64::try_from(status.term).unwrap_or(i64::MAX));
        self.is_leader.set(i64::from(status.is_leader));
        self.has_leader.set(i64::from(status.leader.is_some()));
        let lag = status.committed.saturating_sub(status.applied);
        self.apply_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        self.db_total_bytes.set(i64::try_from(status.db_bytes).unwrap_or(i64::MAX));
        self.disk_full.set(i64::from(status.disk_full));
        let no_space = status.no_space_total.saturating_sub(previous.no_space_total);
        if no_space > 0 {
            self.no_space.inc_by(no_space);
        }
        if status.leader.is_some() && status.leader != previous.leader {
            self.leader_changes.inc();
        }
    }

    /// Counts a write answered with the state machine's result.
    pub fn proposal_committed(&self) {
        self.proposals_committed.inc();
    }

    /// Counts a write answered with an error.
    pub fn proposal_failed(&self) {
        self.proposals_failed.inc();
    }

    /// Records one sync's latency.
    pub fn fsync(&self, took: Duration) {
        self.fsync_seconds.observe(took.as_secs_f64());
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.totals.fsyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.totals.fsync_micros.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records how long a write took from the replica thread taking it to its answer.
    pub fn proposal_answered(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.totals.writes_answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.totals.write_micros.fetch_add(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// The running totals now (for rates and mean latencies between two readings).
    pub fn sample(&self) -> MetricsSample {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        MetricsSample {
            writes_answered: get(&self.totals.writes_answered),
            write_micros: get(&self.totals.write_micros),
            fsyncs: get(&self.totals.fsyncs),
            fsync_micros: get(&self.totals.fsync_micros),
        }
    }

    /// Counts `n` messages written to peer connections.
    pub fn peer_messages_sent(&self, n: u64) {
        self.peer_sent.inc_by(n);
    }

    /// Counts `n` messages dropped on the way to peers.
    pub fn peer_messages_dropped(&self, n: u64) {
        self.peer_dropped.inc_by(n);
    }

    /// Counts a snapshot taken here.
    pub fn snapshot_taken(&self) {
        self.snapshots.inc();
    }

    /// Counts `n` snapshots installed from a leader.
    pub fn snapshots_installed(&self, n: u64) {
        self.snapshots_installed.inc_by(n);
    }

    /// Counts a completed snapshot transfer to a follower that took `took`.
    pub fn snapshot_sent(&self, took: Duration) {
        self.snapshot_send_success.inc();
        self.snapshot_send_seconds.observe(took.as_secs_f64());
    }

    /// Counts a snapshot transfer to a follower given up.
    pub fn snapshot_send_failed(&self) {
        self.snapshot_send_failures.inc();
    }

    /// Counts a snapshot received from a leader.
    pub fn snapshot_received(&self) {
        self.snapshot_receive_success.inc();
    }

    /// Counts a snapshot transfer from a leader that failed for good.
    pub fn snapshot_receive_failed(&self) {
        self.snapshot_receive_failures.inc();
    }

    /// Snapshots taken here so far.
    pub fn snapshot_count(&self) -> u64 {
        self.snapshots.get()
    }

    /// Snapshots installed from a leader so far.
    pub fn snapshots_installed_count(&self) -> u64 {
        self.snapshots_installed.get()
    }

    /// Snapshots received from a leader so far (durable and delivered).
    pub fn snapshots_received_count(&self) -> u64 {
        self.snapshot_receive_success.get()
    }

    /// The registry in OpenMetrics text format (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The standard `process_*` metrics of the Prometheus client libraries, read from `/proc/self`
/// at each scrape, with the Go client's names and meanings (etcd exports them through it).
/// Where `/proc` cannot be read (not Linux), the metrics are left out.
#[derive(Debug)]
pub struct ProcessCollector;

/// What [`ProcessCollector`] reads at one scrape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in bytes.
    pub resident_memory_bytes: i64,
    /// Virtual memory size, in bytes.
    pub virtual_memory_bytes: i64,
    /// Open file descriptors.
    pub open_fds: i64,
    /// The soft limit on open file descriptors (`RLIMIT_NOFILE`); `None` when unlimited.
    pub max_fds: Option<i64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// Clock ticks per second in `/proc` times (`USER_HZ`). The kernel fixes it at 100 for
/// userspace on every architecture Linux supports today; Prometheus' Go `procfs` assumes
/// the same rather than calling `sysconf(_SC_CLK_TCK)`.
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Reads this process's numbers from `/proc`; `None` if any file is missing or not in
    /// the expected format.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
        // proc(5): `pid (comm) state ...`; comm may hold spaces and parentheses, so fields
        // are counted after the last ')'. Field n (1-based, as in proc(5)) is at index n - 3.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
        let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
        let (utime, stime, start_ticks) = (field(14)?, field(15)?, field(22)?);
        let status_kib = |key: &str| -> Option<i64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
        };
        let boot_time: u64 =
            boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        // `Max open files   <soft>   <hard>   files`
        let soft = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
        let max_fds = soft.split_whitespace().next()?.parse().ok();
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / USER_HZ,
            resident_memory_bytes: status_kib("VmRSS:")? * 1024,
            virtual_memory_bytes: status_kib("VmSize:")? * 1024,
            open_fds: i64::try_from(open_fds).unwrap_or(i64::MAX),
            max_fds,
            start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else { return Ok(()) };
        let cpu = ConstCounter::new(p.cpu_seconds);
        let help = "Total user and system CPU time spent in seconds.";
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            help,
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_memory_bytes as f64,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_memory_bytes as f64,
        )?;
        gauge("process_open_fds", "Number of open file descriptors.", p.open_fds as f64)?;
        if let Some(max) = p.max_fds {
            gauge("process_max_fds", "Maximum number of open file descriptors.", max as f64)?;
        }
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use crate::runtime::status::NodeStatus;

    #[test]
    fn a_leader_change_is_counted_once_and_gauges_follow_the_status() {
        let m = Metrics::new();
        let none = NodeStatus::default();
        let led = NodeStatus {
            term: 3,
            leader: Some(1),
            is_leader: true,
            committed: 9,
            applied: 7,
            ..none
        };
        m.observe_status(&none, &led);
        m.observe_status(&led, &led);
        let text = m.render();
        assert!(text.contains("etcd_server_leader_changes_seen_total 1\n"), "{text}");
        assert!(text.contains("etcd_server_term 3\n"), "{text}");
        assert!(text.contains("etcd_server_is_leader 1\n"), "{text}");
        assert!(text.contains("tenure_server_apply_lag_entries 2\n"), "{text}");
        assert!(text.contains("tenure_snapshots_total 0\n"), "{text}");
        m.snapshot_taken();
        m.snapshot_sent(std::time::Duration::from_millis(300));
        let text = m.render();
        assert!(text.contains("tenure_snapshots_total 1\n"), "{text}");
        assert!(text.contains("etcd_network_snapshot_send_success_total 1\n"), "{text}");
        assert!(text.contains("etcd_network_snapshot_send_total_duration_seconds_count 1\n"));
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Losing the leader is not a change seen; the next leader is.
        m.observe_status(&led, &none);
        m.observe_status(&none, &NodeStatus { leader: Some(2), ..none });
        assert!(m.render().contains("etcd_server_leader_changes_seen_total 2\n"));
    }

    #[test]
    fn lease_metrics_carry_etcds_names() {
        let m = Metrics::new();
        m.lease_granted(5);
        m.lease_granted(3600);
        m.lease_revoked(2);
        m.lease_renewed();
        let text = m.render();
        assert!(text.contains("etcd_debugging_lease_granted_total 2\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_revoked_total 2\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_renewed_total 1\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_ttl_total_count 2\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_ttl_total_sum 3605.0\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_ttl_total_bucket{le=\"8.0\"} 1\n"), "{text}");
    }

    #[test]
    fn expired_leases_are_counted_as_revoked_once_each() {
        let m = Metrics::new();
        let start = NodeStatus::default();
        let two = NodeStatus { leases_expired: 2, ..start };
        m.observe_status(&start, &two);
        // A status published again without new expiries adds nothing.
        m.observe_status(&two, &two);
        m.lease_revoked(1);
        let text = m.render();
        assert!(text.contains("etcd_debugging_lease_revoked_total 3\n"), "{text}");
        m.observe_status(&two, &NodeStatus { leases_expired: 5, ..two });
        let text = m.render();
        assert!(text.contains("etcd_debugging_lease_revoked_total 6\n"), "{text}");
        assert!(text.contains("etcd_debugging_lease_granted_total 0\n"), "{text}");
    }

    /// The value of the sample `name` in `text`.
    fn sample(text: &str, name: &str) -> f64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| {
            panic!("no sample {name} in:\n{text}");
        });
        line[name.len()..].trim().parse().expect("a number")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_read_at_each_scrape_with_plausible_values() {
        let text = Metrics::new().render();
        let rss = sample(&text, "process_resident_memory_bytes");
        let vsize = sample(&text, "process_virtual_memory_bytes");
        assert!(rss > 1e6 && rss <= vsize, "rss {rss}, virtual {vsize}");
        let fds = sample(&text, "process_open_fds");
        assert!(fds >= 3.0 && fds <= sample(&text, "process_max_fds"), "{text}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = sample(&text, "process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 86_400.0, "start {start}, now {now}");
        let cpu = sample(&text, "process_cpu_seconds_total");
        assert!(cpu >= 0.0);
        assert!(text.contains("# TYPE process_cpu_seconds counter\n"), "{text}");
        // Read afresh at each scrape: burn some CPU and the counter does not go back.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let later = sample(&Metrics::new().render(), "process_cpu_seconds_total");
        assert!(later >= cpu, "{later} < {cpu}");
    }

    #[test]
    fn a_sample_that_is_missing_fails_the_check() {
        let missing = std::panic::catch_unwind(|| sample("a 1\n", "process_open_fds"));
        assert!(missing.is_err());
    }
}
