//! Scenarios the core's scripts cannot show, played on real replicas: S7 (a retried request is
//! applied once, by the state machine's session table) and S10 (nothing leaves before it is
//! durable).
//!
//! A [`Stage`] holds three [`Replica`]s, each over a [`SimDisk`] of its own: the consensus
//! core, the log and hard state written through the storage crate, the etcd state machine with
//! its client sessions; the same code the server and the simulator run. The stage is the
//! network and the disk's clock: it polls a replica when it has work, keeps the sync ticket a
//! poll returns until the scenario says the fsync completes, holds the messages sent until the
//! scenario delivers them, and crashes a replica by dropping it and its disk's unsynced writes
//! ([`CrashMode::LoseUnsynced`]). Every line of the trace is something the replicas did (a
//! message they sent, a role change they reported, an entry they applied, an answer they gave,
//! what their status or store holds), with its explanation.
//!
//! Nothing depends on the clock or on unseeded randomness: the disks are seeded, each core
//! seeds its election timer from its id, incarnations are counted, and time is the stage's
//! tick counter; so a scenario replays identically (tested in the parent module).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use tenure_kv::{Command, Proposal, PutRequest, RangeRequest, Response};
use tenure_raft::{Membership, Message, MessageBody, NodeId, Role};
use tenure_replica::{Answer, ClientError, Output, Replica, ReplicaConfig, RequestId};
use tenure_storage::{CrashMode, SimDisk, SyncTicket};

use super::{NodeView, Step, Trace, explain};

/// Milliseconds of log time per tick (the server's default heartbeat interval).
const TICK_MS: u64 = 100;

/// Ticks a node is given to win an election before the scenario gives up (its randomised
/// election timeout is at most twice the configured one).
const ELECTION_TICKS_MAX: u32 = 100;

/// Three real replicas, a network that delivers only when told, and disks that sync only when
/// told; see the module docs.
pub(super) struct Stage {
    id: &'static str,
    title: &'static str,
    summary: String,
    replicas: BTreeMap<u64, Option<Replica>>,
    disks: BTreeMap<u64, SimDisk>,
    /// The sync each replica has in flight (written, not yet durable).
    tickets: BTreeMap<u64, SyncTicket>,
    /// Sent and not yet delivered, in the order sent.
    wire: VecDeque<Message>,
    /// Incarnations handed out so far (every run of a replica gets a new one).
    runs: u64,
    ticks: u64,
    next_request: u64,
    /// What each request is, for the lines that tell its answer.
    requests: BTreeMap<u64, String>,
    /// Each request's answer, once given.
    answers: BTreeMap<u64, Result<Answer, ClientError>>,
    /// The last view of every node (kept for a crashed one, marked down).
    views: BTreeMap<u64, NodeView>,
    note: String,
    command: String,
    command_explanation: String,
    /// Lines printed for the current command.
    printed: usize,
    /// While set, messages are sent and delivered without a line each (a setup phase).
    quiet: bool,
    steps: Vec<Step>,
}

fn members() -> Membership {
    Membership::voters([NodeId(1), NodeId(2), NodeId(3)])
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// `n2` for a node id.
fn n(id: u64) -> String {
    format!("n{id}")
}

impl Stage {
    /// Three fresh replicas, all followers in term 0.
    pub(super) fn new(id: &'static str, title: &'static str, summary: &str) -> Stage {
        let mut stage = Stage {
            id,
            title,
            summary: summary.to_string(),
            replicas: BTreeMap::new(),
            disks: BTreeMap::new(),
            tickets: BTreeMap::new(),
            wire: VecDeque::new(),
            runs: 0,
            ticks: 0,
            next_request: 1,
            requests: BTreeMap::new(),
            answers: BTreeMap::new(),
            views: BTreeMap::new(),
            note: summary.to_string(),
            command: String::new(),
            command_explanation: String::new(),
            printed: 0,
            quiet: false,
            steps: Vec::new(),
        };
        for id in 1..=3 {
            stage.disks.insert(id, SimDisk::new(id));
            stage.open(id);
        }
        stage.begin(
            "cluster 3",
            "Start 3 real replicas (core, log on a simulated disk, etcd state machine), all \
             followers in term 0.",
        );
        stage
    }

    fn open(&mut self, id: u64) {
        self.runs += 1;
        let cfg = ReplicaConfig::new(NodeId(id), self.runs);
        let disk = Arc::new(self.disks[&id].clone());
        let replica = Replica::open(cfg, disk, Path::new("/data"), members())
            .unwrap_or_else(|e| panic!("n{id} cannot open its disk: {e}"));
        self.replicas.insert(id, Some(replica));
        self.refresh(id);
    }

    fn replica(&mut self, id: u64) -> &mut Replica {
        self.replicas
            .get_mut(&id)
            .and_then(Option::as_mut)
            .unwrap_or_else(|| panic!("n{id} is down"))
    }

    fn is_up(&self, id: u64) -> bool {
        self.replicas.get(&id).is_some_and(Option::is_some)
    }

    /// Takes a node's view from its replica (or marks it down).
    fn refresh(&mut self, id: u64) {
        let view = match self.replicas.get(&id).and_then(Option::as_ref) {
            Some(r) => {
                let st = r.node().status();
                NodeView {
                    role: role_name(st.soft.role).to_string(),
                    term: st.soft.term.0,
                    leader: st.soft.leader.map(|l| l.0),
                    last_index: st.last.index.0,
                    applied: st.applied.0,
                    up: true,
                }
            }
            None => NodeView { up: false, ..self.views.get(&id).cloned().unwrap_or_default() },
        };
        self.views.insert(id, view);
    }

    /// Sets what the scenario does from here on (a paragraph).
    pub(super) fn note(&mut self, note: &str) {
        self.note = note.to_string();
    }

    /// Starts a command: the lines that follow are what it produced.
    pub(super) fn begin(&mut self, command: &str, explanation: &str) {
        self.end();
        self.command = command.to_string();
        self.command_explanation = explanation.to_string();
        self.printed = 0;
    }

    /// Closes the current command: one that printed nothing is still a step.
    fn end(&mut self) {
        if !self.command.is_empty() && self.printed == 0 {
            self.push(String::new(), String::new());
        }
    }

    fn push(&mut self, line: String, explanation: String) {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for id in ids {
            self.refresh(id);
        }
        self.steps.push(Step {
            note: self.note.clone(),
            command: self.command.clone(),
            command_explanation: self.command_explanation.clone(),
            line,
            explanation,
            nodes: self.views.clone(),
        });
    }

    /// A trace line with its explanation.
    pub(super) fn line(&mut self, line: String, explanation: String) {
        self.printed += 1;
        self.push(line, explanation);
    }

    /// A trace line in the core's notation, explained by [`explain`].
    fn core_line(&mut self, line: String) {
        let explanation =
            explain(&line).unwrap_or_else(|| panic!("{}: no explanation for {line:?}", self.id));
        self.line(line, explanation);
    }

    /// Turns a replica's output into lines, sends its messages and keeps its answers.
    fn report(&mut self, id: u64, out: Output) {
        for ss in out.changes {
            let leader = ss.leader.map_or_else(|| "none".to_string(), |l| n(l.0));
            self.core_line(format!(
                "{} is {} at term {}, leader {leader}",
                n(id),
                role_name(ss.role),
                ss.term.0
            ));
        }
        for m in out.messages {
            if !self.quiet {
                self.core_line(m.to_string());
            }
            self.wire.push_back(m);
        }
        if !self.quiet && !out.applied.is_empty() {
            let (first, last) = (out.applied[0].id, out.applied[out.applied.len() - 1].id);
            let range = if first == last { first.to_string() } else { format!("{first}..{last}") };
            self.core_line(format!("{} applied {range}", n(id)));
        }
        for c in out.completions {
            let what = self.requests.get(&c.id.0).cloned().unwrap_or_default();
            let (line, explanation) = match &c.result {
                Ok(Answer::Write(Response::Put(p))) => (
                    format!("{} answered request {}: ok, revision {}", n(id), c.id.0, p.revision),
                    format!(
                        "{} has applied {what} and answers its client: the write is at \
                         revision {}.",
                        n(id),
                        p.revision
                    ),
                ),
                Ok(Answer::Read(r)) => {
                    let shown: Vec<String> = r
                        .kvs
                        .iter()
                        .map(|kv| {
                            format!(
                                "{}={}",
                                String::from_utf8_lossy(&kv.key),
                                String::from_utf8_lossy(&kv.value)
                            )
                        })
                        .collect();
                    (
                        format!(
                            "{} answered request {}: [{}] at revision {}",
                            n(id),
                            c.id.0,
                            shown.join(" "),
                            r.revision
                        ),
                        format!("{} answers {what} with what its state machine holds.", n(id)),
                    )
                }
                Ok(other) => (
                    format!("{} answered request {}: {other:?}", n(id), c.id.0),
                    format!("{} answers {what}.", n(id)),
                ),
                Err(e) => (
                    format!("{} answered request {}: error: {e}", n(id), c.id.0),
                    format!("{} answers {what} with an error: {e}.", n(id)),
                ),
            };
            self.answers.insert(c.id.0, c.result);
            self.line(line, explanation);
        }
    }

    /// Runs `id`'s loop until it has nothing to do. A write it must make durable starts an
    /// fsync that stays in flight until [`Stage::sync`] (or [`Stage::settle`]).
    pub(super) fn poll(&mut self, id: u64) {
        if !self.is_up(id) {
            return;
        }
        loop {
            let mut out = Output::default();
            let (worked, ticket) =
                self.replica(id).poll(&mut out).unwrap_or_else(|e| panic!("n{id}: {e}"));
            self.report(id, out);
            if let Some(t) = ticket {
                self.tickets.insert(id, t);
                if !self.quiet {
                    let st = self.replica(id).node().status();
                    let vote = st.vote.map_or_else(|| "none".to_string(), |v| n(v.0));
                    self.line(
                        format!(
                            "{} fsync started: log through {}, term {}, vote {vote}",
                            n(id),
                            st.last,
                            st.soft.term.0
                        ),
                        format!(
                            "{} has written its log and its term and vote; they are durable only \
                             once this fsync completes. Until then, nothing that depends on them \
                             (a vote, an acknowledgement, a leader counting its own copy) may \
                             leave or count (S10).",
                            n(id)
                        ),
                    );
                }
            }
            if !worked {
                return;
            }
        }
    }

    /// Completes `id`'s fsync in flight: what waited for it leaves.
    pub(super) fn sync(&mut self, id: u64) {
        let Some(ticket) = self.tickets.remove(&id) else { return };
        if !self.quiet {
            let persisted = self.replica(id).node().status().last;
            self.line(
                format!("{} fsync done through {persisted}", n(id)),
                format!(
                    "{}'s writes are on disk now: a crash can no longer take them back, so the \
                     messages that waited for them may leave.",
                    n(id)
                ),
            );
        }
        let mut out = Output::default();
        let next = self
            .replica(id)
            .finish_sync(ticket.wait(), &mut out)
            .unwrap_or_else(|e| panic!("n{id}: {e}"));
        if let Some(t) = next {
            self.tickets.insert(id, t);
        }
        self.report(id, out);
        self.poll(id);
    }

    /// Delivers the messages in flight addressed to `to` (every node when `None`), in the
    /// order they were sent, and lets each receiver act on them.
    pub(super) fn deliver(&mut self, to: Option<u64>) {
        let mut receivers = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(m) = self.wire.pop_front() {
            if to.is_some_and(|t| t != m.to.0) {
                kept.push_back(m);
                continue;
            }
            let dest = m.to.0;
            if self.is_up(dest) {
                self.replica(dest).step(m);
                if !receivers.contains(&dest) {
                    receivers.push(dest);
                }
            }
        }
        self.wire = kept;
        for r in receivers {
            self.poll(r);
        }
    }

    /// Drops every message in flight from `from` (it crashed before they left its socket).
    pub(super) fn drop_from(&mut self, from: u64) -> usize {
        let before = self.wire.len();
        self.wire.retain(|m| m.from.0 != from);
        before - self.wire.len()
    }

    /// Delivers, polls and syncs everything until the cluster is quiet.
    pub(super) fn settle(&mut self) {
        for _ in 0..1000 {
            let ids: Vec<u64> = self.tickets.keys().copied().collect();
            for id in ids {
                self.sync(id);
            }
            if self.wire.is_empty() && self.tickets.is_empty() {
                return;
            }
            self.deliver(None);
        }
        panic!("{}: the cluster never settled", self.id);
    }

    /// Moves every running node's clock `count` ticks, settling after each.
    pub(super) fn tick(&mut self, count: u32) {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for _ in 0..count {
            self.tick_only(&ids);
            self.settle();
        }
    }

    /// Moves the clocks of `ids` one tick each, without delivering or syncing anything.
    pub(super) fn tick_only(&mut self, ids: &[u64]) {
        self.ticks += 1;
        let now = self.ticks * TICK_MS;
        for &id in ids {
            if !self.is_up(id) {
                continue;
            }
            let mut out = Output::default();
            self.replica(id).tick(now, &mut out);
            self.report(id, out);
            self.poll(id);
        }
    }

    /// Completes every fsync in flight, then delivers every message in flight once.
    pub(super) fn step_all(&mut self) {
        let ids: Vec<u64> = self.tickets.keys().copied().collect();
        for id in ids {
            self.sync(id);
        }
        self.deliver(None);
    }

    /// Runs every clock, delivering nothing, until a member's election timer fires; returns
    /// that member (its pre-vote requests are in flight).
    pub(super) fn tick_until_pre_candidate(&mut self) -> u64 {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        for _ in 0..ELECTION_TICKS_MAX {
            self.tick_only(&ids);
            let campaigning = self
                .replicas
                .iter()
                .find(|(_, r)| r.as_ref().is_some_and(|r| r.soft_state().role != Role::Follower));
            if let Some((id, _)) = campaigning {
                return *id;
            }
        }
        panic!("{}: no election timer fired", self.id);
    }

    /// Runs the clocks of `ids` (settling after every tick) until one of them leads, and
    /// returns it.
    pub(super) fn elect_among(&mut self, ids: &[u64]) -> u64 {
        for _ in 0..ELECTION_TICKS_MAX {
            if let Some(l) = self.leader().filter(|l| ids.contains(l)) {
                return l;
            }
            self.tick_only(ids);
            self.settle();
        }
        panic!("{}: none of {ids:?} became leader", self.id);
    }

    /// Lets `leader`'s clock run a few heartbeats, so that every follower learns the commit
    /// index and catches up.
    pub(super) fn heartbeats(&mut self) {
        self.tick(3);
    }

    /// Sets whether messages get a line each (off for setup phases).
    pub(super) fn quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Hands `proposal` to `on` as request `what` and lets `on` act on it; returns the
    /// request id.
    pub(super) fn propose(&mut self, on: u64, proposal: &Proposal, what: &str) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(id, what.to_string());
        let mut out = Output::default();
        self.replica(on).propose(RequestId(id), proposal, &mut out);
        self.report(on, out);
        self.poll(on);
        id
    }

    /// A linearizable read of `key` on `on`.
    pub(super) fn read(&mut self, on: u64, key: &str) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(id, format!("the linearizable read of {key}"));
        let mut out = Output::default();
        self.replica(on).read(
            RequestId(id),
            RangeRequest::single(key.to_string()),
            tenure_replica::Consistency::Linearizable,
            &mut out,
        );
        self.report(on, out);
        self.poll(on);
        id
    }

    /// The answer to request `id`, if given.
    pub(super) fn answer(&self, id: u64) -> Option<&Result<Answer, ClientError>> {
        self.answers.get(&id)
    }

    /// The revision a write was answered with.
    pub(super) fn answered_revision(&self, id: u64) -> Option<i64> {
        match self.answer(id)? {
            Ok(Answer::Write(Response::Put(p))) => Some(p.revision),
            _ => None,
        }
    }

    /// Crashes `id`: the replica is gone and its disk keeps only what was synced.
    pub(super) fn crash(&mut self, id: u64) {
        self.replicas.insert(id, None);
        self.tickets.remove(&id);
        self.disks[&id].crash(CrashMode::LoseUnsynced);
        self.wire.retain(|m| m.to.0 != id);
    }

    /// Restarts `id` from what its disk holds; a line tells what came back.
    pub(super) fn restart(&mut self, id: u64) {
        self.open(id);
        let hs = self.replica(id).node().hard_state();
        let last = self.replica(id).node().status().last;
        let vote = hs.vote.map_or_else(|| "none".to_string(), |v| n(v.0));
        self.line(
            format!("{} restarted at term {}: vote {vote}, log through {last}", n(id), hs.term.0),
            format!(
                "{} is back with exactly what it had made durable: term {}, its vote ({vote}) \
                 and its log through {last}. Anything it had written but not synced is gone, \
                 and it had promised nothing about it.",
                n(id),
                hs.term.0
            ),
        );
    }

    /// A line with what `id`'s state machine holds for `key`, and its revision.
    pub(super) fn show_key(&mut self, id: u64, key: &str, explanation: &str) {
        let r = self.replica(id);
        let revision = r.kv().revision();
        let sessions = r.kv().session_count();
        let found = r.kv().range(&RangeRequest::single(key.to_string())).ok();
        let kv = found.as_ref().and_then(|f| f.kvs.first());
        let line = match kv {
            Some(kv) => format!(
                "{} store: {key}={} version={} mod_revision={} revision={revision} sessions={sessions}",
                n(id),
                String::from_utf8_lossy(&kv.value),
                kv.version,
                kv.mod_revision
            ),
            None => {
                format!("{} store: {key} absent, revision={revision} sessions={sessions}", n(id))
            }
        };
        self.line(line, explanation.to_string());
    }

    /// The current leader, if any node leads.
    pub(super) fn leader(&self) -> Option<u64> {
        self.replicas
            .iter()
            .find(|(_, r)| r.as_ref().is_some_and(Replica::is_leader))
            .map(|(id, _)| *id)
    }

    /// `id`'s commit index and last log position, as its core has them.
    pub(super) fn show_status(&mut self, id: u64, explanation: &str) {
        let st = self.replica(id).node().status();
        self.line(
            format!(
                "{} {} term={} commit={} persisted={} last={}",
                n(id),
                role_name(st.soft.role),
                st.soft.term.0,
                st.committed.0,
                st.persisted.0,
                st.last
            ),
            explanation.to_string(),
        );
    }

    /// Whether any message in flight is an append acknowledgement from `from`.
    pub(super) fn ack_in_flight(&self, from: u64) -> bool {
        self.wire
            .iter()
            .any(|m| m.from.0 == from && matches!(m.body, MessageBody::AppendResponse { .. }))
    }

    /// The finished trace.
    pub(super) fn finish(mut self) -> Trace {
        self.end();
        Trace { id: self.id, title: self.title, summary: self.summary, steps: self.steps }
    }

    /// A `Put` as a proposal: with a session (`client_id`, `sequence`) or without.
    pub(super) fn put(key: &str, value: &str, session: Option<(u64, u64)>) -> Proposal {
        let command = Command::Put(PutRequest::new(key.to_string(), value.to_string()));
        match session {
            Some((client, sequence)) => Proposal::with_session(command, client, sequence),
            None => Proposal::new(command),
        }
    }
}
