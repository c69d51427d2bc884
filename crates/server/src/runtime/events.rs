//! What a member's replica thread saw happen, for people to watch (the dashboard): role and
//! leader changes, the votes it cast, commits, snapshots and membership changes. A leaf
//! module, like `status`.
//!
//! The replica thread records an event only from what a loop turn produced already (the
//! core's soft-state changes, the messages it sends, the status it publishes), so recording
//! costs a lock and a push per event and never changes what the replica does. The log keeps
//! the last [`EVENT_LOG_MAX`] events; a reader remembers the sequence number of the last one
//! it took and asks for those after it.
//!
//! A [`MemberReport`] is one member's status and recent events as another process reads them:
//! every member answers `GET /dashboard/v1/member` on its client port with one (see
//! `api::http`), which is how a dashboard shows members that run elsewhere (`tenure serve
//! --dashboard`, members added to a `tenure dev` cluster).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::metrics::MetricsSample;
use super::status::NodeStatus;

/// Events a member keeps; older ones are dropped (a reader further behind misses them and
/// is told so by the gap in sequence numbers).
pub const EVENT_LOG_MAX: usize = 256;

/// Something one member saw happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEvent {
    /// Numbers this member's events from 1, in the order they happened.
    pub seq: u64,
    /// When it was recorded: milliseconds since the Unix epoch (wall clock, for display only).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The node's role, term or known leader changed (an election started, was won or lost;
    /// a leader was learned of or stepped down).
    Role {
        /// The new role.
        role: tenure_raft::Role,
        /// The term.
        term: u64,
        /// The leader known in that term.
        leader: Option<u64>,
    },
    /// This node answered a candidate's vote request (sent once the vote is durable, S2).
    Vote {
        /// The candidate.
        candidate: u64,
        /// The candidate's term.
        term: u64,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// The commit index moved forward (one event per loop turn, however many entries).
    Commit {
        /// The commit index before.
        from: u64,
        /// The commit index now.
        to: u64,
    },
    /// This node wrote a snapshot of its own state; the log before it can be compacted.
    SnapshotTaken {
        /// The snapshot's last index.
        index: u64,
    },
    /// This node installed a snapshot from the leader (it was behind the leader's log).
    SnapshotInstalled {
        /// The snapshot's last index.
        index: u64,
    },
    /// The configuration in force changed (a membership change was appended or applied).
    Members {
        /// The voters, by id.
        voters: Vec<u64>,
        /// The learners, by id.
        learners: Vec<u64>,
    },
}

impl EventKind {
    /// A short name for the kind, as the dashboard's JSON carries it.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Role { .. } => "role",
            EventKind::Vote { .. } => "vote",
            EventKind::Commit { .. } => "commit",
            EventKind::SnapshotTaken { .. } => "snapshot_taken",
            EventKind::SnapshotInstalled { .. } => "snapshot_installed",
            EventKind::Members { .. } => "members",
        }
    }
}

fn role_name(role: tenure_raft::Role) -> &'static str {
    match role {
        tenure_raft::Role::Follower => "follower",
        tenure_raft::Role::PreCandidate => "pre-candidate",
        tenure_raft::Role::Candidate => "candidate",
        tenure_raft::Role::Leader => "leader",
    }
}

fn role_of(name: &str) -> Option<tenure_raft::Role> {
    Some(match name {
        "follower" => tenure_raft::Role::Follower,
        "pre-candidate" => tenure_raft::Role::PreCandidate,
        "candidate" => tenure_raft::Role::Candidate,
        "leader" => tenure_raft::Role::Leader,
        _ => return None,
    })
}

/// Why a report could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a member report: {0}")]
pub struct ReportError(String);

fn field_u64(v: &Value, name: &str) -> Result<u64, ReportError> {
    v[name].as_u64().ok_or_else(|| ReportError(format!("{name} is not a number")))
}

fn field_id(v: &Value, name: &str) -> Result<Option<u64>, ReportError> {
    match &v[name] {
        Value::Null => Ok(None),
        other => other
            .as_u64()
            .map(Some)
            .ok_or_else(|| ReportError(format!("{name} is neither an id nor null"))),
    }
}

impl MemberEvent {
    /// The event as a report carries it: `{"seq", "at_ms", "kind", ...the kind's fields}`,
    /// member ids as numbers.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "seq": self.seq, "at_ms": self.at_ms, "kind": self.kind.name() });
        match &self.kind {
            EventKind::Role { role, term, leader } => {
                v["role"] = json!(role_name(*role));
                v["term"] = json!(term);
                v["leader"] = json!(leader);
            }
            EventKind::Vote { candidate, term, granted } => {
                v["candidate"] = json!(candidate);
                v["term"] = json!(term);
                v["granted"] = json!(granted);
            }
            EventKind::Commit { from, to } => {
                v["from"] = json!(from);
                v["to"] = json!(to);
            }
            EventKind::SnapshotTaken { index } | EventKind::SnapshotInstalled { index } => {
                v["index"] = json!(index);
            }
            EventKind::Members { voters, learners } => {
                v["voters"] = json!(voters);
                v["learners"] = json!(learners);
            }
        }
        v
    }

    /// Reads an event written by [`MemberEvent::to_json`].
    pub fn from_json(v: &Value) -> Result<MemberEvent, ReportError> {
        let ids = |name: &str| -> Result<Vec<u64>, ReportError> {
            v[name]
                .as_array()
                .ok_or_else(|| ReportError(format!("{name} is not a list")))?
                .iter()
                .map(|i| i.as_u64().ok_or_else(|| ReportError(format!("a bad id in {name}"))))
                .collect()
        };
        let kind = match v["kind"].as_str().unwrap_or_default() {
            "role" => EventKind::Role {
                role: v["role"]
                    .as_str()
                    .and_then(role_of)
                    .ok_or_else(|| ReportError("a bad role".into()))?,
                term: field_u64(v, "term")?,
                leader: field_id(v, "leader")?,
            },
            "vote" => EventKind::Vote {
                candidate: field_u64(v, "candidate")?,
                term: field_u64(v, "term")?,
                granted: v["granted"]
                    .as_bool()
                    .ok_or_else(|| ReportError("granted is not a boolean".into()))?,
            },
            "commit" => {
                let (from, to) = (field_u64(v, "from")?, field_u64(v, "to")?);
                // The commit index only moves forward; a report that says otherwise is bad.
                if to <= from {
                    return Err(ReportError(format!("a commit from {from} to {to}")));
                }
                EventKind::Commit { from, to }
            }
            "snapshot_taken" => EventKind::SnapshotTaken { index: field_u64(v, "index")? },
            "snapshot_installed" => EventKind::SnapshotInstalled { index: field_u64(v, "index")? },
            "members" => EventKind::Members { voters: ids("voters")?, learners: ids("learners")? },
            other => return Err(ReportError(format!("unknown event kind {other:?}"))),
        };
        Ok(MemberEvent { seq: field_u64(v, "seq")?, at_ms: field_u64(v, "at_ms")?, kind })
    }
}

/// One member as a dashboard reads it at one moment: what its replica thread published, its
/// peer switch, its metrics' running totals and its events after a sequence number. The same
/// for a member in this process and one read over HTTP ([`MemberReport::to_json`] /
/// [`MemberReport::from_json`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberReport {
    /// The member's id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Which run of the member this is: a restart starts its events from 1 again, and a reader
    /// that sees a new run starts over.
    pub run: u64,
    /// What its replica thread published last.
    pub status: NodeStatus,
    /// Whether its replica thread is held still (`tenure dev`'s pause).
    pub paused: bool,
    /// Whether its peer traffic is cut (`tenure dev`'s isolate).
    pub isolated: bool,
    /// Each peer it dials, by id, and whether it is reachable now.
    pub reachable: BTreeMap<u64, bool>,
    /// Its metrics' running totals.
    pub metrics: MetricsSample,
    /// Its events after the sequence number asked for, oldest first.
    pub events: Vec<MemberEvent>,
}

/// The version of a report's JSON.
pub const REPORT_VERSION: u64 = 1;

impl MemberReport {
    /// Reads the member behind `handle` now (id `id`, named `name`, with what its peer switch
    /// tells: `isolated`, `reachable`), with its events after `after`. Takes a few locks; never
    /// asks the replica thread for anything.
    pub fn read(
        handle: &super::RuntimeHandle,
        id: u64,
        name: String,
        isolated: bool,
        reachable: BTreeMap<u64, bool>,
        after: u64,
    ) -> MemberReport {
        let events = handle.events();
        MemberReport {
            id,
            name,
            run: events.run(),
            status: handle.status(),
            paused: handle.is_paused(),
            isolated,
            reachable,
            metrics: handle.metrics().sample(),
            events: events.since(after),
        }
    }

    /// The report as JSON (what `GET /dashboard/v1/member` answers):
    ///
    /// ```text
    /// { "version": 1, "id": u64, "name", "run": u64, "paused", "isolated",
    ///   "role": "leader" | "follower" | "candidate" | "pre-candidate" | null,
    ///   "term", "vote": id | null, "leader": id | null, "last_index", "commit_index",
    ///   "applied_index", "snapshot_index", "first_index", "stopped", "removed",
    ///   "reachable": [[id, bool]], "writes_answered", "write_micros", "fsyncs",
    ///   "fsync_micros", "events": [event] }
    /// ```
    pub fn to_json(&self) -> Value {
        let st = &self.status;
        json!({
            "version": REPORT_VERSION, "id": self.id, "name": self.name, "run": self.run,
            "paused": self.paused, "isolated": self.isolated,
            "role": st.role.map(role_name), "term": st.term, "vote": st.vote,
            "leader": st.leader, "last_index": st.last_index, "commit_index": st.committed,
            "applied_index": st.applied, "snapshot_index": st.snapshot_index,
            "first_index": st.first_index, "stopped": st.stopped, "removed": st.removed,
            "reachable": self.reachable.iter().collect::<Vec<_>>(),
            "writes_answered": self.metrics.writes_answered,
            "write_micros": self.metrics.write_micros, "fsyncs": self.metrics.fsyncs,
            "fsync_micros": self.metrics.fsync_micros,
            "events": self.events.iter().map(MemberEvent::to_json).collect::<Vec<_>>(),
        })
    }

    /// Reads a report written by [`MemberReport::to_json`]; a report of another version or
    /// shape is an error.
    pub fn from_json(v: &Value) -> Result<MemberReport, ReportError> {
        if v["version"].as_u64() != Some(REPORT_VERSION) {
            return Err(ReportError(format!("version {} is not {REPORT_VERSION}", v["version"])));
        }
        let flag = |name: &str| {
            v[name].as_bool().ok_or_else(|| ReportError(format!("{name} is not a boolean")))
        };
        let role = match &v["role"] {
            Value::Null => None,
            r => {
                Some(r.as_str().and_then(role_of).ok_or_else(|| ReportError("a bad role".into()))?)
            }
        };
        let leader = field_id(v, "leader")?;
        let status = NodeStatus {
            role,
            term: field_u64(v, "term")?,
            vote: field_id(v, "vote")?,
            leader,
            is_leader: role == Some(tenure_raft::Role::Leader),
            last_index: field_u64(v, "last_index")?,
            committed: field_u64(v, "commit_index")?,
            applied: field_u64(v, "applied_index")?,
            snapshot_index: field_u64(v, "snapshot_index")?,
            first_index: field_u64(v, "first_index")?,
            stopped: flag("stopped")?,
            removed: flag("removed")?,
            ..NodeStatus::default()
        };
        let reachable = v["reachable"]
            .as_array()
            .ok_or_else(|| ReportError("reachable is not a list".into()))?
            .iter()
            .map(|p| match (p[0].as_u64(), p[1].as_bool()) {
                (Some(id), Some(up)) => Ok((id, up)),
                _ => Err(ReportError("a bad reachable entry".into())),
            })
            .collect::<Result<_, _>>()?;
        let events = v["events"]
            .as_array()
            .ok_or_else(|| ReportError("events is not a list".into()))?
            .iter()
            .map(MemberEvent::from_json)
            .collect::<Result<_, _>>()?;
        Ok(MemberReport {
            id: field_u64(v, "id")?,
            name: v["name"].as_str().ok_or_else(|| ReportError("no name".into()))?.to_string(),
            run: field_u64(v, "run")?,
            status,
            paused: flag("paused")?,
            isolated: flag("isolated")?,
            reachable,
            metrics: MetricsSample {
                writes_answered: field_u64(v, "writes_answered")?,
                write_micros: field_u64(v, "write_micros")?,
                fsyncs: field_u64(v, "fsyncs")?,
                fsync_micros: field_u64(v, "fsync_micros")?,
            },
            events,
        })
    }
}

/// A member's recent events: written by its replica thread, read by anyone holding a clone.
#[derive(Clone, Debug)]
pub struct EventLog {
    inner: Arc<Mutex<Ring>>,
}

impl Default for EventLog {
    fn default() -> EventLog {
        // Unique across processes (the pid), restarts (the time) and members of one process
        // (the counter); for display only, so no randomness is needed.
        static CREATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let count = CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = (u64::from(std::process::id()) << 40) ^ nanos ^ count.rotate_left(20);
        EventLog { inner: Arc::new(Mutex::new(Ring { run: run.max(1), ..Ring::default() })) }
    }
}

#[derive(Debug, Default)]
struct Ring {
    /// Invariant: at most `EVENT_LOG_MAX` events, `seq` increasing by one from front to back.
    events: VecDeque<MemberEvent>,
    /// The sequence number of the last event recorded (0: none yet).
    last_seq: u64,
    /// See [`EventLog::run`].
    run: u64,
}

impl EventLog {
    /// Records `kind` now.
    pub fn record(&self, kind: EventKind) {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.last_seq += 1;
        let seq = ring.last_seq;
        if ring.events.len() == EVENT_LOG_MAX {
            ring.events.pop_front();
        }
        ring.events.push_back(MemberEvent { seq, at_ms, kind });
    }

    /// The sequence number of the last event recorded (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).last_seq
    }

    /// Which run of the member this log belongs to: a number drawn when the log was created
    /// (a restart creates a new log), the same for every clone.
    pub fn run(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).run
    }

    /// The events kept whose sequence number is above `after`, oldest first.
    pub fn since(&self, after: u64) -> Vec<MemberEvent> {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.events.iter().filter(|e| e.seq > after).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_what_it_wrote_and_refuses_a_bad_one() {
        let kinds = [
            EventKind::Role { role: tenure_raft::Role::PreCandidate, term: 2, leader: None },
            EventKind::Role { role: tenure_raft::Role::Follower, term: 2, leader: Some(7) },
            EventKind::Vote { candidate: 3, term: 2, granted: false },
            EventKind::Commit { from: 1, to: 4 },
            EventKind::SnapshotTaken { index: 9 },
            EventKind::SnapshotInstalled { index: 10 },
            EventKind::Members { voters: vec![1, 2], learners: vec![u64::MAX] },
        ];
        let report = MemberReport {
            id: u64::MAX - 1,
            name: "infra1".into(),
            run: 77,
            status: NodeStatus {
                role: Some(tenure_raft::Role::Leader),
                term: 5,
                vote: Some(1),
                leader: Some(1),
                is_leader: true,
                last_index: 12,
                committed: 11,
                applied: 10,
                snapshot_index: 9,
                first_index: 3,
                stopped: false,
                removed: true,
                ..NodeStatus::default()
            },
            paused: true,
            isolated: false,
            reachable: [(2, true), (3, false)].into_iter().collect(),
            metrics: MetricsSample {
                writes_answered: 1,
                write_micros: 2,
                fsyncs: 3,
                fsync_micros: 4,
            },
            events: kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| MemberEvent { seq: i as u64 + 1, at_ms: 100 + i as u64, kind })
                .collect(),
        };
        let json = report.to_json();
        assert_eq!(MemberReport::from_json(&json), Ok(report.clone()));
        // Through text too, as it travels.
        let text: Value = serde_json::from_str(&json.to_string()).unwrap();
        assert_eq!(MemberReport::from_json(&text), Ok(report));
        for (field, bad) in [
            ("version", json!(2)),
            ("role", json!("king")),
            ("term", json!("5")),
            ("reachable", json!([[2, "yes"]])),
            ("events", json!([{"seq": 1, "at_ms": 1, "kind": "gossip"}])),
            ("events", json!([{"seq": 1, "at_ms": 1, "kind": "commit", "from": 5, "to": 4}])),
        ] {
            let mut v = json.clone();
            v[field] = bad;
            assert!(MemberReport::from_json(&v).is_err(), "a bad {field} was accepted");
        }
    }

    #[test]
    fn the_log_keeps_the_newest_events_numbered_in_order() {
        let log = EventLog::default();
        assert!(log.since(0).is_empty());
        for i in 0..(EVENT_LOG_MAX as u64 + 10) {
            log.record(EventKind::Commit { from: i, to: i + 1 });
        }
        let all = log.since(0);
        assert_eq!(all.len(), EVENT_LOG_MAX);
        assert_eq!(all.first().unwrap().seq, 11, "the 10 oldest were dropped");
        assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        let tail = log.since(all.last().unwrap().seq - 2);
        assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![265, 266]);
    }
}
