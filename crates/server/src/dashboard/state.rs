//! What the dashboard shows, gathered from the members: each member's status, its recent
//! events, a timeline of terms and leaders, and throughput and latency samples; published as
//! one JSON document (the event stream's `state` message, and `GET /api/state`).
//!
//! A [`Collector`] task reads every member every [`COLLECT_INTERVAL`], each as a
//! [`MemberReport`]: the status the replica thread publishes after each turn, the events it
//! recorded since the last read ([`crate::runtime::EventLog`]), its peer gate (isolated, peers
//! reachable) and once a second its metrics' running totals. A member of this process is read
//! in place ([`MemberReport::read`]: a few locks, never a request to the replica thread); a
//! member of another process is read by the fetcher ([`super::cluster`]) from its client URL
//! (`GET /dashboard/v1/member`), which keeps the newest report and the events not yet taken.
//!
//! Which members there are comes from the configuration in force ([`ClusterView`]), which the
//! fetcher asks a running member of this process for: members added later (`tenure member
//! add`) appear once they are in it, with their learner flag, and are read remotely; members
//! removed from it disappear (a member of this process that was removed stays, shown as
//! `removed`, until it stops).
//!
//! # The JSON document (version 2)
//!
//! ```text
//! { "version": 2, "mode": "dev" | "serve", "now_ms": u64,
//!   "leader": name | null,                         (the leader of the highest term known)
//!   "members": [ { "name", "id" (hex), "client_url",
//!                  "local": bool,                   (in this process: the controls apply)
//!                  "learner": bool,                 (per the configuration in force)
//!                  "state": "up" | "paused" | "down" | "unreachable" | "removed",
//!                  "isolated": bool,
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
//!
//! `down` is a member of this process that was killed; `unreachable` one of another process
//! whose report could not be read (down, cut off, or not started yet); its fields are then
//! zero and its role `null`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tenure_raft::Role;

use crate::ids::format_id;
use crate::peer::transport::PeerGate;
use crate::runtime::metrics::MetricsSample;
use crate::runtime::{EventKind, MemberEvent, MemberReport, RuntimeHandle};

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
pub const VERSION: u64 = 2;

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

/// A member of the configuration in force, as a running member's replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ViewMember {
    /// Its name (empty until it published one).
    pub name: String,
    /// Its client URLs (empty until it published them).
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    pub learner: bool,
}

/// The configuration in force with the member table's names and client URLs, by member id.
pub type ClusterView = BTreeMap<u64, ViewMember>;

/// A member that runs in another process, read from its client URL.
#[derive(Clone, Debug, Default)]
pub struct Remote {
    /// What the configuration and member table say of it.
    pub member: ViewMember,
    /// The newest report read (its events moved to `events`), or why the last read failed.
    pub report: Option<Result<MemberReport, String>>,
    /// Events read and not yet taken by the collector, oldest first.
    pub events: Vec<MemberEvent>,
    /// The run (see [`crate::runtime::EventLog::run`]) of the newest report.
    pub run: u64,
    /// The sequence number of the last event read of that run: the next read asks for the
    /// events after it.
    pub after: u64,
}

#[derive(Default)]
struct SourcesInner {
    members: Vec<Source>,
    /// Control notes not yet taken by the collector: (member, when, text).
    notes: Vec<(String, u64, String)>,
    /// Members of the configuration that are not in `members`, by id.
    remote: BTreeMap<u64, Remote>,
    /// The configuration in force, once read.
    view: Option<ClusterView>,
}

impl Sources {
    /// The members `sources`, in display order.
    pub fn new(sources: Vec<Source>) -> Sources {
        Sources {
            inner: Arc::new(Mutex::new(SourcesInner {
                members: sources,
                ..SourcesInner::default()
            })),
        }
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

    /// Sets the configuration in force: members of it not in this process become remote
    /// members (kept if known already), remote members no longer in it are dropped.
    pub fn set_view(&self, view: ClusterView) {
        let mut inner = self.lock();
        let local: Vec<u64> = inner.members.iter().map(|s| s.id).collect();
        inner.remote.retain(|id, _| view.contains_key(id) && !local.contains(id));
        for (id, m) in &view {
            if !local.contains(id) {
                inner.remote.entry(*id).or_default().member = m.clone();
            }
        }
        inner.view = Some(view);
    }

    /// The configuration in force as last set, if any.
    pub fn view(&self) -> Option<ClusterView> {
        self.lock().view.clone()
    }

    /// The remote members now, by id (with their newest report).
    pub fn remotes(&self) -> BTreeMap<u64, Remote> {
        self.lock().remote.clone()
    }

    /// Records a read of remote member `id` (asked for its events after
    /// [`Remote::after`]): a report, whose events are kept for the collector, or why the read
    /// failed. A report of a new run (the member restarted) starts over: its events are read
    /// again from the first.
    pub fn set_report(&self, id: u64, report: Result<MemberReport, String>) {
        let mut inner = self.lock();
        let Some(remote) = inner.remote.get_mut(&id) else { return };
        match report {
            Ok(mut r) => {
                if remote.run != r.run {
                    // Read after a sequence number of the old run: the first events of this
                    // run may be missing, so they are all read again next time.
                    if remote.after != 0 {
                        r.events.clear();
                    }
                    remote.run = r.run;
                    remote.after = 0;
                }
                if let Some(e) = r.events.last() {
                    remote.after = remote.after.max(e.seq);
                }
                remote.events.append(&mut r.events);
                let max = crate::runtime::events::EVENT_LOG_MAX;
                if remote.events.len() > max {
                    let extra = remote.events.len() - max;
                    remote.events.drain(..extra);
                }
                remote.report = Some(Ok(r));
            }
            Err(e) => remote.report = Some(Err(e)),
        }
    }

    /// The events of remote member `id` not yet taken.
    fn take_remote_events(&self, id: u64) -> Vec<MemberEvent> {
        self.lock().remote.get_mut(&id).map(|r| std::mem::take(&mut r.events)).unwrap_or_default()
    }
}

/// Whether the dashboard runs under `tenure dev` (controls allowed) or `tenure serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `tenure dev`: its three members are in this process and the controls work on them
    /// (members added later are read remotely, without controls).
    Dev,
    /// `tenure serve --dashboard`: its member in this process, the others read remotely;
    /// watched only.
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
    /// The last event sequence number taken from its current run (members of this process;
    /// the fetcher keeps it for the others).
    seq: u64,
    /// Which run ([`crate::runtime::EventLog::run`]) `seq` belongs to: a restart starts
    /// numbering again.
    run: u64,
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
        let remotes = self.sources.remotes();
        let view = self.sources.view();
        let mut names: BTreeMap<u64, String> = BTreeMap::new();
        for (id, m) in view.iter().flatten() {
            if !m.name.is_empty() {
                names.insert(*id, m.name.clone());
            }
        }
        for s in &sources {
            names.insert(s.id, s.name.clone());
        }
        let name_of =
            |id: Option<u64>| id.map(|i| names.get(&i).cloned().unwrap_or_else(|| format_id(i)));
        let learner = |id: u64| view.as_ref().and_then(|v| v.get(&id)).is_some_and(|m| m.learner);
        let sample_now = self.ticks.is_multiple_of(10);
        self.ticks += 1;

        // Every member as one reading: in this process read in place, elsewhere the newest
        // report the fetcher read.
        let mut readings: Vec<Reading> = Vec::new();
        for s in &sources {
            let tracked = self.tracked.entry(s.name.clone()).or_default();
            let report = s.live.as_ref().map(|live| {
                let run = live.handle.events().run();
                if tracked.run != run || live.handle.events().last_seq() < tracked.seq {
                    tracked.run = run;
                    tracked.seq = 0;
                }
                let r = MemberReport::read(
                    &live.handle,
                    s.id,
                    s.name.clone(),
                    live.gate.is_isolated(),
                    live.gate.reachable(),
                    tracked.seq,
                );
                if let Some(e) = r.events.last() {
                    tracked.seq = e.seq;
                }
                r
            });
            let state = match &report {
                None => "down",
                Some(r) if r.status.removed => "removed",
                Some(r) if r.status.stopped => "down",
                Some(r) if r.paused => "paused",
                Some(_) => "up",
            };
            readings.push(Reading {
                name: s.name.clone(),
                id: s.id,
                client_url: s.client_url.clone(),
                local: true,
                learner: learner(s.id),
                state,
                report,
            });
        }
        for (id, remote) in &remotes {
            let events = self.sources.take_remote_events(*id);
            let report = match &remote.report {
                Some(Ok(r)) => Some(MemberReport { events, ..r.clone() }),
                _ => None,
            };
            let state = match &report {
                None => "unreachable",
                Some(r) if r.status.removed => "removed",
                Some(r) if r.status.stopped => "down",
                Some(r) if r.paused => "paused",
                Some(_) => "up",
            };
            let name = if remote.member.name.is_empty() {
                report.as_ref().map(|r| r.name.clone()).filter(|n| !n.is_empty())
            } else {
                Some(remote.member.name.clone())
            };
            readings.push(Reading {
                name: name.unwrap_or_else(|| format_id(*id)),
                id: *id,
                client_url: remote.member.client_urls.first().cloned().unwrap_or_default(),
                local: false,
                learner: remote.member.learner,
                state,
                report,
            });
        }

        let mut members = Vec::new();
        for reading in readings {
            let tracked = self.tracked.entry(reading.name.clone()).or_default();
            let Some(report) = reading.report.filter(|_| reading.state != "down") else {
                tracked.last_sample = None;
                if sample_now {
                    push_bounded(&mut tracked.applied_per_s, 0.0, SAMPLES_MAX);
                    push_bounded(&mut tracked.write_latency_ms, None, SAMPLES_MAX);
                    push_bounded(&mut tracked.fsync_ms, None, SAMPLES_MAX);
                }
                members.push(json!({
                    "name": reading.name, "id": format_id(reading.id),
                    "client_url": reading.client_url, "local": reading.local,
                    "learner": reading.learner,
                    "state": reading.state, "isolated": false, "role": null, "term": 0,
                    "vote": null, "leader": null, "last_index": 0, "commit_index": 0,
                    "applied_index": 0, "snapshot_index": 0, "first_index": 0,
                    "peers": [], "peers_reachable": [],
                    "applied_per_s": tracked.applied_per_s, "write_latency_ms":
                    tracked.write_latency_ms, "fsync_ms": tracked.fsync_ms,
                }));
                continue;
            };
            let st = report.status;
            if sample_now {
                let now = Sampled { metrics: report.metrics, applied: st.applied };
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
            let isolated = report.isolated;
            let peers: Vec<String> =
                report.reachable.keys().filter_map(|&i| name_of(Some(i))).collect();
            let peers_reachable: Vec<String> = report
                .reachable
                .iter()
                .filter(|(_, up)| **up && !isolated)
                .filter_map(|(&i, _)| name_of(Some(i)))
                .collect();
            members.push(json!({
                "name": reading.name, "id": format_id(reading.id),
                "client_url": reading.client_url, "local": reading.local,
                "learner": reading.learner,
                "state": reading.state, "isolated": isolated,
                "role": st.role.map(role_name), "term": st.term,
                "vote": name_of(st.vote), "leader": name_of(st.leader),
                "last_index": st.last_index, "commit_index": st.committed,
                "applied_index": st.applied, "snapshot_index": st.snapshot_index,
                "first_index": st.first_index,
                "peers": peers, "peers_reachable": peers_reachable,
                "applied_per_s": tracked.applied_per_s,
                "write_latency_ms": tracked.write_latency_ms, "fsync_ms": tracked.fsync_ms,
            }));
            let running = reading.state == "up" || reading.state == "paused";
            if st.role == Some(Role::Leader) && running {
                let entry = self.timeline.entry(st.term).or_insert_with(|| (None, now_ms()));
                entry.0 = Some(reading.name.clone());
            } else if st.term > 0 && running {
                self.timeline.entry(st.term).or_insert_with(|| (None, now_ms()));
            }
            for e in &report.events {
                let v = event_json(&reading.name, e, &name_of);
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

/// One member as the collector read it this round.
struct Reading {
    name: String,
    id: u64,
    client_url: String,
    /// In this process.
    local: bool,
    learner: bool,
    /// The document's `state`.
    state: &'static str,
    /// `None` when it could not be read (down, unreachable).
    report: Option<MemberReport>,
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
            if to.saturating_sub(*from) == 1 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::NodeStatus;

    fn report(
        id: u64,
        name: &str,
        run: u64,
        role: Role,
        events: &[(u64, EventKind)],
    ) -> MemberReport {
        MemberReport {
            id,
            name: name.to_string(),
            run,
            status: NodeStatus {
                role: Some(role),
                term: 3,
                vote: Some(1),
                leader: Some(1),
                is_leader: role == Role::Leader,
                last_index: 9,
                committed: 8,
                applied: 7,
                snapshot_index: 2,
                first_index: 3,
                ..NodeStatus::default()
            },
            reachable: [(1, true), (3, false)].into_iter().collect(),
            events: events
                .iter()
                .map(|(seq, kind)| MemberEvent { seq: *seq, at_ms: 1000 + seq, kind: kind.clone() })
                .collect(),
            ..MemberReport::default()
        }
    }

    fn view() -> ClusterView {
        let member = |name: &str, learner: bool| ViewMember {
            name: name.to_string(),
            client_urls: vec![format!("http://{name}:2379")],
            learner,
        };
        [(1, member("a", false)), (2, member("b", false)), (3, member("c", true))]
            .into_iter()
            .collect()
    }

    fn member<'d>(doc: &'d Value, name: &str) -> &'d Value {
        doc["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("no member {name} in {doc:#}"))
    }

    fn texts(doc: &Value) -> Vec<String> {
        doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["text"].as_str().unwrap().into())
            .collect()
    }

    #[test]
    fn remote_reports_merge_into_the_document_and_unreadable_members_show_unreachable() {
        let sources = Sources::new(vec![]);
        sources.set_view(view());
        let vote = EventKind::Vote { candidate: 1, term: 3, granted: true };
        sources.set_report(2, Ok(report(2, "b", 7, Role::Follower, &[(1, vote.clone())])));
        sources.set_report(3, Err("connection refused".into()));
        let mut c = Collector::new(sources.clone(), Mode::Serve);
        let doc = c.collect();
        assert_eq!(doc["version"], VERSION);
        assert_eq!(doc["members"].as_array().unwrap().len(), 3, "{doc:#}");
        let b = member(&doc, "b");
        assert_eq!(b["state"], "up");
        assert_eq!(b["local"], false);
        assert_eq!(b["learner"], false);
        assert_eq!(b["role"], "follower");
        assert_eq!((b["term"].as_u64(), b["commit_index"].as_u64()), (Some(3), Some(8)));
        assert_eq!(b["leader"], "a", "ids are named from the member table");
        assert_eq!(b["peers"], json!(["a", "c"]));
        assert_eq!(b["peers_reachable"], json!(["a"]));
        let c3 = member(&doc, "c");
        assert_eq!(
            (c3["state"].as_str(), c3["learner"].as_bool()),
            (Some("unreachable"), Some(true))
        );
        assert!(c3["role"].is_null());
        // "a" is in the configuration but never read: unreachable too.
        assert_eq!(member(&doc, "a")["state"], "unreachable");
        assert_eq!(texts(&doc), vec!["b voted for a in term 3".to_string()]);

        // The same run again: only the new events are added; a collect without a new report
        // adds nothing.
        assert_eq!(sources.remotes()[&2].after, 1, "the next read asks after event 1");
        let commit = EventKind::Commit { from: 7, to: 8 };
        sources.set_report(2, Ok(report(2, "b", 7, Role::Follower, &[(2, commit)])));
        let doc = c.collect();
        let doc2 = c.collect();
        assert_eq!(texts(&doc).len(), 2, "{:?}", texts(&doc));
        assert_eq!(texts(&doc), texts(&doc2));
        // A new run (the member restarted) is read again from its first event: events of it
        // read after an old run's number are dropped.
        let role = EventKind::Role { role: Role::Leader, term: 4, leader: Some(2) };
        sources.set_report(2, Ok(report(2, "b", 8, Role::Leader, &[(3, role.clone())])));
        assert_eq!(sources.remotes()[&2].after, 0);
        assert_eq!(texts(&c.collect()).len(), 2);
        sources.set_report(2, Ok(report(2, "b", 8, Role::Leader, &[(1, role)])));
        let doc = c.collect();
        assert!(texts(&doc).iter().any(|t| t == "b became leader of term 4"), "{doc:#}");
        assert_eq!(doc["leader"], "b");

        // Removed from the configuration: gone from the document.
        let mut smaller = view();
        smaller.remove(&3);
        sources.set_view(smaller);
        let doc = c.collect();
        let names: Vec<&str> = doc["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
    }
}
