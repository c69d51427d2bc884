//! What the dashboard shows, gathered from the members: each member's status, its recent
//! events, a timeline of terms and leaders, and throughput and latency samples; published as
//! one JSON document (the event stream's `state` message, and `GET /api/state`).
//!
//! A [`Collector`] task reads every member every [`COLLECT_INTERVAL`]: the status the replica
//! thread publishes after each turn, the events it recorded since the last read
//! ([`crate::runtime::EventLog`]), its peer gate (isolated, peers reachable) and once a second
//! its metrics' running totals. It never asks the replica thread for anything, so watching
//! costs the members nothing but a few lock acquisitions.
//!
//! # The JSON document (version 1)
//!
//! ```text
//! { "version": 1, "mode": "dev" | "serve", "now_ms": u64,
//!   "leader": name | null,                         (the leader of the highest term known)
//!   "members": [ { "name", "id" (hex), "client_url",
//!                  "state": "up" | "paused" | "down", "isolated": bool,
//!                  "role": "leader" | "follower" | "candidate" | "pre-candidate" | null,
//!                  "term", "vote": name | null, "leader": name | null,
//!                  "last_index", "commit_index", "applied_index", "snapshot_index",
//!                  "first_index": u64,
//!                  "peers": [name], "peers_reachable": [name],
//!                  "applied_per_s": [f64], "write_latency_ms": [f64 | null],
//!                  "fsync_ms": [f64 | null] } ],    (one sample a second, oldest first)
//!   "events": [ { "seq", "at_ms", "member": name, "kind", "text",
//!                 "term"?, "role"?, "candidate"?, "granted"?, "index"? } ],  (newest last)
//!   "timeline": [ { "term", "leader": name | null, "at_ms" } ] }   (in term order)
//! ```
//!
//! `kind` is one of the member events' names (`role`, `vote`, `commit`, `snapshot_taken`,
//! `snapshot_installed`, `members`) or `control` (a dashboard button was used).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tenure_raft::Role;

use crate::ids::format_id;
use crate::peer::transport::PeerGate;
use crate::runtime::metrics::MetricsSample;
use crate::runtime::{EventKind, MemberEvent, RuntimeHandle};

/// How often the collector reads the members and publishes a new document when anything
/// changed.
pub const COLLECT_INTERVAL: Duration = Duration::from_millis(100);

/// Samples kept per sparkline (one a second).
pub const SAMPLES_MAX: usize = 60;

/// Events the document carries, newest last.
pub const EVENTS_MAX: usize = 200;

/// Terms the timeline keeps.
pub const TIMELINE_MAX: usize = 100;

/// The schema version of the document.
pub const VERSION: u64 = 1;

/// A running member as the dashboard reads it.
#[derive(Clone)]
pub struct Live {
    /// Its replica.
    pub handle: RuntimeHandle,
    /// Its peer traffic switch.
    pub gate: PeerGate,
}

/// One member the dashboard shows, running or not.
#[derive(Clone)]
pub struct Source {
    /// Its name.
    pub name: String,
    /// Its member id.
    pub id: u64,
    /// Where its clients connect.
    pub client_url: String,
    /// `None` while it is down.
    pub live: Option<Live>,
}

/// The members the dashboard shows, shared between the collector and the controls (which
/// take a member down and bring it back), with the notes the controls leave for the event
/// list.
#[derive(Clone, Default)]
pub struct Sources {
    inner: Arc<Mutex<SourcesInner>>,
}

#[derive(Default)]
struct SourcesInner {
    members: Vec<Source>,
    /// Control notes not yet taken by the collector: (member, when, text).
    notes: Vec<(String, u64, String)>,
}

impl Sources {
    /// The members `sources`, in display order.
    pub fn new(sources: Vec<Source>) -> Sources {
        Sources { inner: Arc::new(Mutex::new(SourcesInner { members: sources, notes: vec![] })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SourcesInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every member as it is now.
    pub fn all(&self) -> Vec<Source> {
        self.lock().members.clone()
    }

    /// The member named `name`.
    pub fn get(&self, name: &str) -> Option<Source> {
        self.lock().members.iter().find(|s| s.name == name).cloned()
    }

    /// Sets (or clears, when it goes down) the running member named `name`.
    pub fn set_live(&self, name: &str, live: Option<Live>) {
        if let Some(s) = self.lock().members.iter_mut().find(|s| s.name == name) {
            s.live = live;
        }
    }

    /// Leaves a note about `member` for the event list (a control was used).
    pub fn note(&self, member: &str, text: String) {
        self.lock().notes.push((member.to_string(), now_ms(), text));
    }

    fn take_notes(&self) -> Vec<(String, u64, String)> {
        std::mem::take(&mut self.lock().notes)
    }
}

/// Whether the dashboard runs under `tenure dev` (controls allowed) or `tenure serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `tenure dev`: every member is in this process; the controls work.
    Dev,
    /// `tenure serve --dashboard`: one member, watched only.
    Serve,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Dev => "dev",
            Mode::Serve => "serve",
        }
    }
}

/// One sparkline point source: the totals and applied index at the last sample.
#[derive(Clone, Copy, Default)]
struct Sampled {
    metrics: MetricsSample,
    applied: u64,
}

/// What the collector remembers of one member between reads.
#[derive(Default)]
struct Tracked {
    /// The last event sequence number taken from its current run.
    seq: u64,
    /// Which run (`RuntimeHandle`) `seq` belongs to: a restart starts numbering again.
    run: usize,
    last_sample: Option<Sampled>,
    applied_per_s: VecDeque<f64>,
    write_latency_ms: VecDeque<Option<f64>>,
    fsync_ms: VecDeque<Option<f64>>,
}

/// Reads the members and builds the document; see the module docs.
pub struct Collector {
    sources: Sources,
    mode: Mode,
    tracked: BTreeMap<String, Tracked>,
    events: VecDeque<Value>,
    /// Control notes are numbered after the members' events in one sequence of their own.
    note_seq: u64,
    /// Term → (leader, first seen), kept for the last `TIMELINE_MAX` terms.
    timeline: BTreeMap<u64, (Option<String>, u64)>,
    ticks: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    if q.len() == max {
        q.pop_front();
    }
    q.push_back(v);
}

impl Collector {
    /// A collector of `sources`.
    pub fn new(sources: Sources, mode: Mode) -> Collector {
        Collector {
            sources,
            mode,
            tracked: BTreeMap::new(),
            events: VecDeque::new(),
            note_seq: 0,
            timeline: BTreeMap::new(),
            ticks: 0,
        }
    }

    /// Reads every member once and returns the document. Every tenth call (once a second at
    /// [`COLLECT_INTERVAL`]) also takes a throughput and latency sample.
    pub fn collect(&mut self) -> Value {
        let sources = self.sources.all();
        let names: BTreeMap<u64, String> = sources.iter().map(|s| (s.id, s.name.clone())).collect();
        let name_of =
            |id: Option<u64>| id.map(|i| names.get(&i).cloned().unwrap_or_else(|| format_id(i)));
        let sample_now = self.ticks.is_multiple_of(10);
        self.ticks += 1;
        let mut members = Vec::new();
        for s in &sources {
            let tracked = self.tracked.entry(s.name.clone()).or_default();
            let Some(live) = &s.live else {
                tracked.last_sample = None;
                if sample_now {
                    push_bounded(&mut tracked.applied_per_s, 0.0, SAMPLES_MAX);
                    push_bounded(&mut tracked.write_latency_ms, None, SAMPLES_MAX);
                    push_bounded(&mut tracked.fsync_ms, None, SAMPLES_MAX);
                }
                members.push(json!({
                    "name": s.name, "id": format_id(s.id), "client_url": s.client_url,
                    "state": "down", "isolated": false, "role": null, "term": 0,
                    "vote": null, "leader": null, "last_index": 0, "commit_index": 0,
                    "applied_index": 0, "snapshot_index": 0, "first_index": 0,
                    "peers": [], "peers_reachable": [],
                    "applied_per_s": tracked.applied_per_s, "write_latency_ms":
                    tracked.write_latency_ms, "fsync_ms": tracked.fsync_ms,
                }));
                continue;
            };
            let st = live.handle.status();
            // A restart is a new handle with events numbered from 1 again.
            let run = Arc::as_ptr(live.handle.metrics()) as usize;
            if tracked.run != run || live.handle.events().last_seq() < tracked.seq {
                tracked.run = run;
                tracked.seq = 0;
            }
            let fresh = live.handle.events().since(tracked.seq);
            if let Some(e) = fresh.last() {
                tracked.seq = e.seq;
            }
            if sample_now {
                let now = Sampled { metrics: live.handle.metrics().sample(), applied: st.applied };
                if let Some(before) = tracked.last_sample {
                    let (a, b) = (before.metrics, now.metrics);
                    let mean = |micros: u64, count: u64| {
                        (count > 0).then(|| micros as f64 / count as f64 / 1000.0)
                    };
                    let writes = b.writes_answered.saturating_sub(a.writes_answered);
                    let syncs = b.fsyncs.saturating_sub(a.fsyncs);
                    push_bounded(
                        &mut tracked.applied_per_s,
                        now.applied.saturating_sub(before.applied) as f64,
                        SAMPLES_MAX,
                    );
                    push_bounded(
                        &mut tracked.write_latency_ms,
                        mean(b.write_micros.saturating_sub(a.write_micros), writes),
                        SAMPLES_MAX,
                    );
                    push_bounded(
                        &mut tracked.fsync_ms,
                        mean(b.fsync_micros.saturating_sub(a.fsync_micros), syncs),
                        SAMPLES_MAX,
                    );
                }
                tracked.last_sample = Some(now);
            }
            let reachable = live.gate.reachable();
            let isolated = live.gate.is_isolated();
            let peers: Vec<String> = reachable.keys().filter_map(|&i| name_of(Some(i))).collect();
            let peers_reachable: Vec<String> = reachable
                .iter()
                .filter(|(_, up)| **up && !isolated)
                .filter_map(|(&i, _)| name_of(Some(i)))
                .collect();
            let state = if st.stopped {
                "down"
            } else if live.handle.is_paused() {
                "paused"
            } else {
                "up"
            };
            members.push(json!({
                "name": s.name, "id": format_id(s.id), "client_url": s.client_url,
                "state": state, "isolated": isolated,
                "role": st.role.map(role_name), "term": st.term,
                "vote": name_of(st.vote), "leader": name_of(st.leader),
                "last_index": st.last_index, "commit_index": st.committed,
                "applied_index": st.applied, "snapshot_index": st.snapshot_index,
                "first_index": st.first_index,
                "peers": peers, "peers_reachable": peers_reachable,
                "applied_per_s": tracked.applied_per_s,
                "write_latency_ms": tracked.write_latency_ms, "fsync_ms": tracked.fsync_ms,
            }));
            if st.role == Some(Role::Leader) && !st.stopped {
                let entry = self.timeline.entry(st.term).or_insert_with(|| (None, now_ms()));
                entry.0 = Some(s.name.clone());
            } else if st.term > 0 && !st.stopped {
                self.timeline.entry(st.term).or_insert_with(|| (None, now_ms()));
            }
            for e in fresh {
                let v = event_json(&s.name, &e, &name_of);
                push_bounded(&mut self.events, v, EVENTS_MAX);
            }
        }
        for (member, at_ms, text) in self.sources.take_notes() {
            self.note_seq += 1;
            let v = json!({
                "seq": self.note_seq, "at_ms": at_ms, "member": member,
                "kind": "control", "text": text,
            });
            push_bounded(&mut self.events, v, EVENTS_MAX);
        }
        while self.timeline.len() > TIMELINE_MAX {
            self.timeline.pop_first();
        }
        let leader = self.timeline.values().rev().find_map(|(l, _)| l.clone());
        let current_leader = members
            .iter()
            .filter(|m| m["role"] == "leader" && m["state"] == "up")
            .max_by_key(|m| m["term"].as_u64())
            .map(|m| m["name"].clone())
            .or(leader.map(Value::from))
            .unwrap_or(Value::Null);
        let timeline: Vec<Value> = self
            .timeline
            .iter()
            .map(|(term, (leader, at))| json!({"term": term, "leader": leader, "at_ms": at}))
            .collect();
        // Events of all members by time; a member's own stay in their order.
        let mut events: Vec<&Value> = self.events.iter().collect();
        events.sort_by_key(|e| e["at_ms"].as_u64());
        json!({
            "version": VERSION,
            "mode": self.mode.name(),
            "now_ms": now_ms(),
            "leader": current_leader,
            "members": members,
            "events": events,
            "timeline": timeline,
        })
    }
}

/// One member event as the document carries it, with a sentence for people.
fn event_json(
    member: &str,
    e: &MemberEvent,
    name_of: &dyn Fn(Option<u64>) -> Option<String>,
) -> Value {
    let name = |id: u64| name_of(Some(id)).unwrap_or_default();
    let mut v = json!({
        "seq": e.seq, "at_ms": e.at_ms, "member": member, "kind": e.kind.name(),
    });
    let text = match &e.kind {
        EventKind::Role { role, term, leader } => {
            v["role"] = json!(role_name(*role));
            v["term"] = json!(term);
            v["leader"] = json!(leader.map(name));
            match (role, leader) {
                (Role::Leader, _) => format!("{member} became leader of term {term}"),
                (Role::Candidate, _) => format!("{member} started an election for term {term}"),
                (Role::PreCandidate, _) => {
                    format!("{member} asks the others whether it could win (pre-vote, term {term})")
                }
                (Role::Follower, Some(l)) => {
                    format!("{member} follows {} in term {term}", name(*l))
                }
                (Role::Follower, None) => {
                    format!("{member} is a follower in term {term}, no leader known")
                }
            }
        }
        EventKind::Vote { candidate, term, granted } => {
            v["candidate"] = json!(name(*candidate));
            v["term"] = json!(term);
            v["granted"] = json!(granted);
            if *granted {
                format!("{member} voted for {} in term {term}", name(*candidate))
            } else {
                format!("{member} refused its vote to {} in term {term}", name(*candidate))
            }
        }
        EventKind::Commit { from, to } => {
            v["index"] = json!(to);
            if to - from == 1 {
                format!("{member} knows index {to} committed")
            } else {
                format!("{member} knows indexes {}..{to} committed", from + 1)
            }
        }
        EventKind::SnapshotTaken { index } => {
            v["index"] = json!(index);
            format!("{member} took a snapshot through index {index}")
        }
        EventKind::SnapshotInstalled { index } => {
            v["index"] = json!(index);
            format!("{member} installed the leader's snapshot through index {index}")
        }
        EventKind::Members { voters, learners } => {
            let names = |ids: &[u64]| ids.iter().map(|i| name(*i)).collect::<Vec<_>>().join(", ");
            let mut t = format!("{member}: the configuration is now voters {}", names(voters));
            if !learners.is_empty() {
                t.push_str(&format!(", learners {}", names(learners)));
            }
            t
        }
    };
    v["text"] = json!(text);
    v
}
