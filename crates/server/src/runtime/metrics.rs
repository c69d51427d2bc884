//! One member's metrics, served as Prometheus (OpenMetrics) text on `/metrics`.
//!
//! Each [`Member`](crate::member::Member) owns its own [`Metrics`] and registry, so the three
//! members of `tenure dev` (one process) each report their own numbers on their own port.
//! Names follow etcd where etcd has the metric (dashboards and alerts written for etcd keep
//! working); the rest are `tenure_*`. Counters get their `_total` suffix from the encoder.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::status::NodeStatus;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of one member. Cheap to update from any thread (atomics inside).
pub struct Metrics {
    registry: Registry,
    term: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    leader_changes: Counter,
    proposals_committed: Counter,
    proposals_failed: Counter,
    apply_lag: Gauge,
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
            "Raft messages queued for a peer connection.",
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
        Metrics {
            registry,
            term,
            is_leader,
            has_leader,
            leader_changes,
            proposals_committed,
            proposals_failed,
            apply_lag,
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
            heartbeats_in_flight: Mutex::new(HashMap::new()),
        }
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
    /// leader known differs from `previous`'s.
    pub fn observe_status(&self, previous: &NodeStatus, status: &NodeStatus) {
        self.term.set(i64::try_from(status.term).unwrap_or(i64::MAX));
        self.is_leader.set(i64::from(status.is_leader));
        self.has_leader.set(i64::from(status.leader.is_some()));
        let lag = status.committed.saturating_sub(status.applied);
        self.apply_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
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
    }

    /// Counts `n` messages handed to peer connections.
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
}
