//! A deterministic in-memory cluster for tests, and a runner for scenario scripts.
//!
//! [`Cluster`] holds nodes over [`MemLog`]s and a network of queued messages that tests
//! deliver, drop, cut and reorder explicitly; a crash drops a node's memory and restarts it
//! from its durable log. Safety checks (one leader per term, identical applied entries) run on
//! every step, so any test that drives a cluster also checks Raft's safety properties.
//!
//! [`run_script`] drives a cluster from a text script (`campaign 1`, `propose 1 x`,
//! `stabilize`, `partition 1 | 2 3`, ...) and returns the trace, for golden-file tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;

use crate::config::Config;
use crate::error::ProposeError;
use crate::log_view::{LogView, MemLog};
use crate::membership::Membership;
use crate::message::{Message, MessageBody, ReadId};
use crate::node::{Node, Proposed, SnapshotStatus};
use crate::ready::ReadState;
use crate::rng::Rng;
use crate::types::{Entry, EntryId, EntryKind, LogIndex, NodeId, Role, Term};

/// An in-memory cluster with a controllable network.
pub struct Cluster {
    configs: BTreeMap<NodeId, Config>,
    nodes: BTreeMap<NodeId, Node<MemLog>>,
    /// Durable logs of crashed nodes, kept for their restart.
    crashed: BTreeMap<NodeId, MemLog>,
    /// Messages sent and not yet delivered, in send order.
    network: VecDeque<Message>,
    /// Messages held back by the script's `hold` (a slow link), until `release`.
    held: VecDeque<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Applied normal entries per node, in order (what each state machine saw).
    applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Each node's durable snapshot: the normal entries applied through its log's compaction
    /// point (the "state machine data" of a snapshot in this harness). Survives crashes.
    snapshot_data: BTreeMap<NodeId, Vec<Entry>>,
    /// Every snapshot any node took, by its last included entry. By state machine safety a
    /// snapshot at one entry holds the same data on every node (checked when one is added), so
    /// a `Snapshot` message's data is looked up here when it is delivered, however late,
    /// reordered or duplicated the message is.
    snapshots: BTreeMap<EntryId, Vec<Entry>>,
    /// Snapshots whose data a node received (staged), waiting for its core to ask for the
    /// install. Lost on a crash.
    staged: BTreeMap<NodeId, BTreeSet<EntryId>>,
    /// Reads answered per node.
    reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Reads dropped per node.
    dropped_reads: BTreeMap<NodeId, Vec<ReadId>>,
    /// The leader seen in each term (checked: at most one, S2).
    leaders: BTreeMap<Term, NodeId>,
    /// The entry applied at each index by any node (checked: identical everywhere).
    applied_at: BTreeMap<LogIndex, Entry>,
    /// Fraction of messages lost in `deliver_all` (0.0 = reliable), and whether delivery order
    /// is shuffled.
    loss: f64,
    reorder: bool,
    rng: Rng,
    /// Messages delivered, for message-count budgets.
    pub delivered_count: u64,
    /// Trace lines, when `tracing` is on.
    trace: Vec<String>,
    /// Whether to record trace lines.
    pub tracing: bool,
}

impl Cluster {
    /// A cluster of nodes `1..=n`, each configured by `configure` (after `Config::new`).
    pub fn new(n: u64, configure: impl Fn(&mut Config)) -> Cluster {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        Cluster::with_ids(&ids, configure)
    }

    /// A cluster of the given voters.
    pub fn with_ids(ids: &[NodeId], configure: impl Fn(&mut Config)) -> Cluster {
        let membership = Membership::voters(ids.iter().copied());
        let mut c = Cluster {
            configs: BTreeMap::new(),
            nodes: BTreeMap::new(),
            crashed: BTreeMap::new(),
            network: VecDeque::new(),
            held: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            snapshot_data: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            staged: BTreeMap::new(),
            reads: BTreeMap::new(),
            dropped_reads: BTreeMap::new(),
            leaders: BTreeMap::new(),
            applied_at: BTreeMap::new(),
            loss: 0.0,
            reorder: false,
            rng: Rng::new(42),
            delivered_count: 0,
            trace: Vec::new(),
            tracing: false,
        };
        for &id in ids {
            let mut cfg = Config::new(id);
            configure(&mut cfg);
            let node =
                Node::new(cfg.clone(), MemLog::new(membership.clone())).expect("valid config");
            c.configs.insert(id, cfg);
            c.nodes.insert(id, node);
            c.applied.insert(id, Vec::new());
        }
        c
    }

    /// Starts a new, empty node `id` that is not yet a member, as a server started to join a
    /// running cluster would be: it starts from `membership` (the configuration it is told
    /// it joins) and learns the real history from the leader's log or snapshot.
    pub fn add_node(
        &mut self,
        id: NodeId,
        membership: Membership,
        configure: impl Fn(&mut Config),
    ) {
        assert!(!self.configs.contains_key(&id), "{id} exists already");
        let mut cfg = Config::new(id);
        configure(&mut cfg);
        let node = Node::new(cfg.clone(), MemLog::new(membership)).expect("valid config");
        self.configs.insert(id, cfg);
        self.nodes.insert(id, node);
        self.applied.insert(id, Vec::new());
        self.note(format!("{id} started"));
    }

    /// Proposes a configuration change on node `id` (see [`Node::propose_conf_change`]).
    pub fn propose_conf_change(
        &mut self,
        id: NodeId,
        changes: &[crate::membership::ConfChange],
    ) -> Result<EntryId, crate::error::ConfChangeError> {
        let node = self.nodes.get_mut(&id).unwrap_or_else(|| panic!("{id} is down"));
        node.propose_conf_change(changes, Bytes::new())
    }

    /// The ids of every node, up or down.
    pub fn ids(&self) -> Vec<NodeId> {
        self.configs.keys().copied().collect()
    }

    /// A running node.
    ///
    /// # Panics
    /// If the node is crashed.
    pub fn node(&self, id: NodeId) -> &Node<MemLog> {
        self.nodes.get(&id).unwrap_or_else(|| panic!("{id} is down"))
    }

    /// A running node, mutably.
    pub fn node_mut(&mut self, id: NodeId) -> &mut Node<MemLog> {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("{id} is down"))
    }

    /// Whether a node is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes.contains_key(&id)
    }

    /// Normal entries a node's state machine applied, in order.
    pub fn applied(&self, id: NodeId) -> &[Entry] {
        &self.applied[&id]
    }

    /// The payloads a node applied, as strings.
    pub fn applied_data(&self, id: NodeId) -> Vec<String> {
        self.applied[&id].iter().map(|e| String::from_utf8_lossy(&e.data).into_owned()).collect()
    }

    /// Reads answered on a node.
    pub fn reads(&self, id: NodeId) -> &[ReadState] {
        self.reads.get(&id).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Reads dropped on a node.
    pub fn dropped_reads(&self, id: NodeId) -> &[ReadId] {
        self.dropped_reads.get(&id).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// Messages waiting in the network.
    pub fn in_flight(&self) -> &VecDeque<Message> {
        &self.network
    }

    /// Makes the network lose a fraction of messages and deliver in shuffled order.
    pub fn set_unreliable(&mut self, loss: f64, reorder: bool, seed: u64) {
        self.loss = loss;
        self.reorder = reorder;
        self.rng = Rng::new(seed);
    }

    /// Takes the trace recorded so far.
    pub fn take_trace(&mut self) -> Vec<String> {
        std::mem::take(&mut self.trace)
    }

    fn note(&mut self, line: String) {
        if self.tracing {
            self.trace.push(line);
        }
    }

    // ----- Driving nodes ----------------------------------------------------------------------

    /// Handles one `Ready` of a node synchronously: persist, acknowledge, queue messages, apply.
    /// Returns whether there was anything to do.
    pub fn process(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        if !node.has_ready() {
            return false;
        }
        let rd = node.ready();
        if let Some(meta) = &rd.snapshot {
            // Install before anything else in the Ready (the contract's step 2).
            let staged = self.staged.entry(id).or_default();
            assert!(
                staged.contains(&meta.last_included),
                "{id} installs snapshot {} whose data it never received",
                meta.last_included
            );
            // Older staged snapshots are superseded by this one.
            staged.retain(|s| s.index > meta.last_included.index);
            let data = self.snapshots[&meta.last_included].clone();
            node.log_view_mut().reset_to_snapshot(meta.last_included, meta.membership.clone());
            self.applied.insert(id, data.clone());
            self.snapshot_data.insert(id, data);
            if self.tracing {
                self.trace.push(format!("{id} installed snapshot {}", meta.last_included));
            }
        }
        let node = self.nodes.get_mut(&id).expect("running");
        if let Some(m) = &rd.membership {
            node.log_view_mut().set_membership(m.clone());
        }
        if let Some(hs) = rd.hard_state {
            node.log_view_mut().set_hard_state(hs);
        }
        node.log_view_mut().append(&rd.entries);
        node.on_persisted(rd.number);
        if let Some(last) = rd.committed_entries.last() {
            node.on_applied(last.index());
        }
        if let Some(ss) = rd.soft_state {
            let leader = ss.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
            self.note(format!("{id} is {} at term {}, leader {leader}", ss.role, ss.term));
            if let Some(prev) =
                (ss.role == Role::Leader).then(|| self.leaders.insert(ss.term, id)).flatten()
            {
                assert_eq!(prev, id, "S2 violated: two leaders in term {}", ss.term);
            }
        }
        for e in &rd.committed_entries {
            match self.applied_at.get(&e.index()) {
                Some(seen) => assert_eq!(
                    seen, e,
                    "state machine safety violated: {id} applied {:?} where another node applied {:?}",
                    e, seen
                ),
                None => {
                    self.applied_at.insert(e.index(), e.clone());
                }
            }
            if e.kind == EntryKind::Normal {
                self.applied.get_mut(&id).expect("node").push(e.clone());
            }
        }
        if !rd.committed_entries.is_empty() && self.tracing {
            let first = rd.committed_entries[0].id;
            let last = rd.committed_entries[rd.committed_entries.len() - 1].id;
            let range = if first == last { format!("{first}") } else { format!("{first}..{last}") };
            self.note(format!("{id} applied {range}"));
        }
        for r in &rd.read_states {
            self.note(format!("{id} read {} safe at index {}", r.id.0, r.index));
        }
        for r in &rd.dropped_reads {
            self.note(format!("{id} read {} dropped", r.0));
        }
        self.reads.entry(id).or_default().extend(rd.read_states);
        self.dropped_reads.entry(id).or_default().extend(rd.dropped_reads);
        for m in &rd.messages {
            if let MessageBody::Snapshot { meta } = &m.body {
                assert!(
                    self.snapshots.contains_key(&meta.last_included),
                    "{id} sends snapshot {} it does not have",
                    meta.last_included
                );
            }
        }
        self.network.extend(rd.messages);
        self.network.extend(rd.persisted_messages);
        true
    }

    /// Processes every node once. Returns whether any had work.
    pub fn process_all(&mut self) -> bool {
        let mut any = false;
        for id in self.ids() {
            any |= self.process(id);
        }
        any
    }

    /// Delivers (or drops) every message now in the network. Returns how many were delivered.
    pub fn deliver_all(&mut self) -> usize {
        let mut batch: Vec<Message> = self.network.drain(..).collect();
        if self.reorder {
            for i in (1..batch.len()).rev() {
                let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
                batch.swap(i, j);
            }
        }
        let mut n = 0;
        for m in batch {
            if self.loss > 0.0 && (self.rng.next_u64() % 10_000) < (self.loss * 10_000.0) as u64 {
                self.lost(&m);
                continue;
            }
            n += usize::from(self.deliver(m));
        }
        n
    }

    /// Delivers one message unless its link is cut or its receiver is down. A snapshot's data
    /// is staged at the receiver before its message is stepped, and the transfer's outcome is
    /// reported to the sender, as a real transport does.
    pub fn deliver(&mut self, m: Message) -> bool {
        if self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to) {
            self.lost(&m);
            return false;
        }
        let (from, to) = (m.from, m.to);
        let snapshot = matches!(m.body, MessageBody::Snapshot { .. });
        if let MessageBody::Snapshot { meta } = &m.body {
            self.staged.entry(to).or_default().insert(meta.last_included);
        }
        let line = format!("{m:?}");
        let result = self.nodes.get_mut(&to).expect("checked").step(m);
        self.delivered_count += 1;
        self.note(line);
        match result {
            Ok(()) => {}
            // A removed (or not yet added) node's vote request: refused, as a peer would be.
            Err(e @ crate::error::StepError::VoteFromNonVoter { .. }) => {
                self.note(format!("{to} refused: {e}"))
            }
            Err(e) => panic!("well-formed message refused: {e}"),
        }
        if snapshot && let Some(sender) = self.nodes.get_mut(&from) {
            sender.report_snapshot(to, SnapshotStatus::Delivered);
        }
        true
    }

    /// A message that will never arrive: a snapshot's sender learns that its transfer failed.
    fn lost(&mut self, m: &Message) {
        if let MessageBody::Snapshot { .. } = m.body {
            if let Some(sender) = self.nodes.get_mut(&m.from) {
                sender.report_snapshot(m.to, SnapshotStatus::Failed);
            }
            self.note(format!("{}->{} snapshot transfer failed", m.from, m.to));
        }
    }

    /// Drops every message in the network matching `pred`. Returns how many.
    pub fn drop_where(&mut self, pred: impl Fn(&Message) -> bool) -> usize {
        let (dropped, kept): (Vec<Message>, Vec<Message>) =
            self.network.drain(..).partition(|m| pred(m));
        self.network = kept.into();
        for m in &dropped {
            self.lost(m);
        }
        dropped.len()
    }

    /// Takes every message in the network matching `pred` out of it, without loss (a slow
    /// link): the test delivers them later with [`Cluster::deliver`], or drops them.
    pub fn hold_where(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (held, kept): (Vec<Message>, Vec<Message>) =
            self.network.drain(..).partition(|m| pred(m));
        self.network = kept.into();
        held
    }

    /// Compacts a node's log through `index` (at most its applied index), keeping the state
    /// machine's data at that point as the node's snapshot (Raft §7).
    ///
    /// # Panics
    /// If `index` is past what the node applied.
    pub fn compact(&mut self, id: NodeId, index: LogIndex) {
        let node = self.nodes.get_mut(&id).unwrap_or_else(|| panic!("{id} is down"));
        let applied = node.status().applied;
        assert!(index <= applied, "{id} cannot compact to {index}: applied only {applied}");
        if index < node.log_view().first_index() {
            return;
        }
        let membership = node.membership_at(index).clone();
        node.log_view_mut().compact_with_membership(index, membership);
        let snap = node.log_view().snapshot().expect("compacted").last_included;
        let data: Vec<Entry> =
            self.applied[&id].iter().filter(|e| e.index() <= index).cloned().collect();
        match self.snapshots.get(&snap) {
            Some(seen) => assert_eq!(
                seen, &data,
                "state machine safety violated: {id}'s snapshot at {snap} differs from another node's"
            ),
            None => {
                self.snapshots.insert(snap, data.clone());
            }
        }
        self.snapshot_data.insert(id, data);
        self.note(format!("{id} compacted through {index}"));
    }

    /// Processes and delivers until nothing is left to do.
    ///
    /// # Panics
    /// If the cluster does not settle within a generous bound (a livelock).
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let worked = self.process_all();
            let moved = self.deliver_all() > 0;
            if !worked && !moved && self.network.is_empty() {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    /// Ticks one node once.
    pub fn tick(&mut self, id: NodeId) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.tick();
        }
    }

    /// Ticks every running node `n` times, stabilizing after each tick.
    pub fn run_ticks(&mut self, n: u32) {
        for _ in 0..n {
            for id in self.ids() {
                self.tick(id);
            }
            self.stabilize();
        }
    }

    /// Ticks until some node is leader of the highest term seen, or panics after `max` ticks.
    pub fn run_until_leader(&mut self, max: u32) -> NodeId {
        for _ in 0..max {
            if let Some(l) = self.leader() {
                return l;
            }
            self.run_ticks(1);
        }
        self.leader().unwrap_or_else(|| panic!("no leader after {max} ticks"))
    }

    /// Starts an election on `id` and stabilizes.
    pub fn campaign(&mut self, id: NodeId) {
        self.node_mut(id).campaign();
        self.stabilize();
    }

    /// Proposes on `id` (without stabilizing).
    pub fn propose(&mut self, id: NodeId, data: &str) -> Result<Proposed, ProposeError> {
        self.node_mut(id).propose(Bytes::copy_from_slice(data.as_bytes()))
    }

    /// The running leader with the highest term whose majority could follow it, if any.
    /// A deposed leader that has not heard of the newer term yet is not counted.
    pub fn leader(&self) -> Option<NodeId> {
        let max_term = self.nodes.values().map(|n| n.term()).max()?;
        self.nodes
            .values()
            .find(|n| n.role() == Role::Leader && n.term() == max_term)
            .map(|n| n.id())
    }

    /// Every running node that believes it is leader.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.role() == Role::Leader).map(|n| n.id()).collect()
    }

    // ----- Faults -------------------------------------------------------------------------------

    /// Cuts every link between the groups (each node talks only within its group).
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &x in a.iter() {
                    for &y in b.iter() {
                        self.cut.insert((NodeId(x), NodeId(y)));
                    }
                }
            }
        }
    }

    /// Cuts one node off from everyone.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Cuts one direction of one link.
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Crashes a node: its memory (including entries not yet handed out for persistence) is
    /// lost, messages to it are dropped; its durable log survives.
    pub fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            self.staged.remove(&id);
            self.note(format!("{id} crashed"));
            self.crashed.insert(id, node.log_view().clone());
        }
    }

    /// Restarts a crashed node from its durable log. Its state machine is rebuilt by
    /// re-applying committed entries from the start.
    pub fn restart(&mut self, id: NodeId) {
        let log = self.crashed.remove(&id).unwrap_or_else(|| panic!("{id} is not crashed"));
        let cfg = self.configs[&id].clone();
        let node = Node::new(cfg, log).expect("restart");
        self.note(format!("{id} restarted at term {}", node.term()));
        // The state machine restarts from the node's snapshot, then re-applies the log.
        self.applied.insert(id, self.snapshot_data.get(&id).cloned().unwrap_or_default());
        self.nodes.insert(id, node);
    }

    /// The one-line state of a node: `n1 leader term=2 leader=n1 commit=5 last=2/5 applied=5`.
    pub fn describe(&self, id: NodeId) -> String {
        match self.nodes.get(&id) {
            None => format!("{id} down"),
            Some(n) => {
                let s = n.status();
                let leader = s.soft.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
                let vote = s.vote.map(|l| l.to_string()).unwrap_or_else(|| "none".into());
                let mut line = format!(
                    "{id} {} term={} vote={vote} leader={leader} commit={} last={} applied={}",
                    s.soft.role, s.soft.term, s.committed, s.last, s.applied
                );
                if s.first_index > LogIndex(1) {
                    // Only once compacted, so traces from before snapshots stay unchanged.
                    let _ = write!(line, " first={}", s.first_index);
                }
                line
            }
        }
    }

    /// Asserts that every running node's log agrees on every index both hold up to the
    /// smaller commit index, and that committed prefixes match (Log Matching, §5.3).
    pub fn check_logs_agree(&self) {
        let nodes: Vec<&Node<MemLog>> = self.nodes.values().collect();
        for a in &nodes {
            for b in &nodes {
                let upto = a.committed().min(b.committed());
                for i in 1..=upto.0 {
                    let i = LogIndex(i);
                    if let (Some(ta), Some(tb)) = (a.entry_term(i), b.entry_term(i)) {
                        assert_eq!(
                            ta,
                            tb,
                            "{} and {} disagree at committed index {i}",
                            a.id(),
                            b.id()
                        );
                    }
                }
            }
        }
    }
}

// ----- Scenario scripts ---------------------------------------------------------------------

/// Runs a scenario script and returns its output: each command followed by `----` and the
/// trace it produced, in the same layout as the input, so the output can be compared with (or
/// written over) the script file.
///
/// Commands (ids are plain numbers):
/// - `cluster N [prevote=false] [checkquorum=false] [lease=D] [forward=false]`: start N nodes
/// - `campaign ID`, `tick ID [COUNT]`, `tick-all [COUNT]`, `elapse-election ID`
/// - `propose ID DATA`, `read ID READID`, `transfer FROM TO`
/// - `process ID`, `deliver [from=ID] [to=ID] [type=NAME]`, `drop [...]`, `stabilize`
///   (`type` is the message kind as traced: `Append`, `Snapshot`, `HeartbeatResponse`, ...)
/// - `hold [from=ID] [to=ID] [type=NAME]`: set matching messages aside (a slow link);
///   `release` puts them back at the back of the network
/// - `duplicate [from=ID] [to=ID] [type=NAME]`: hold a second copy of matching messages, which
///   arrives late, on `release`
/// - `run-ticks COUNT`: tick everyone and stabilize, COUNT times; prints role changes only
/// - `partition 1 2 | 3`, `isolate ID`, `heal`, `crash ID`, `restart ID`
/// - `compact ID [INDEX]`: compact through INDEX (default: the node's applied index)
/// - `status` (with `first=` once a log is compacted), `log ID` (with `snapshot=` once
///   compacted), `applied ID`
///
/// Lines starting with `#` are comments and are copied through.
pub fn run_script(script: &str) -> String {
    let mut out = String::new();
    let mut cluster: Option<Cluster> = None;
    let mut lines = script.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Skip the expected output that follows a command in the file.
        if lines.peek().map(|l| l.trim()) == Some("----") {
            lines.next();
            while let Some(l) = lines.peek() {
                if l.trim().is_empty() {
                    break;
                }
                lines.next();
            }
        }
        // And the blank line that separates blocks.
        if lines.peek().is_some_and(|l| l.trim().is_empty()) {
            lines.next();
        }
        out.push_str(trimmed);
        out.push_str("\n----\n");
        let result = run_command(&mut cluster, trimmed);
        if result.is_empty() {
            out.push_str("ok\n");
        } else {
            for l in result {
                out.push_str(&l);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

fn parse_id(s: &str) -> NodeId {
    NodeId(s.trim_start_matches('n').parse().unwrap_or_else(|_| panic!("bad node id {s:?}")))
}

fn kv_args<'a>(args: &[&'a str]) -> BTreeMap<&'a str, &'a str> {
    args.iter().filter_map(|a| a.split_once('=')).collect()
}

fn run_command(cluster: &mut Option<Cluster>, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (cmd, args) = (words[0], &words[1..]);
    if cmd == "cluster" {
        let n: u64 = args[0].parse().expect("cluster size");
        let opts = kv_args(args);
        let prevote = opts.get("prevote") != Some(&"false");
        let checkquorum = opts.get("checkquorum") != Some(&"false");
        let forward = opts.get("forward") != Some(&"false");
        let lease: Option<u32> = opts.get("lease").map(|d| d.parse().expect("lease drift"));
        let mut c = Cluster::new(n, |cfg| {
            cfg.pre_vote = prevote;
            cfg.check_quorum = checkquorum;
            cfg.forward_proposals = forward;
            cfg.commit_broadcast = true;
            if let Some(d) = lease {
                cfg.read_mode = crate::config::ReadMode::Lease { clock_drift_ticks: d };
            }
        });
        c.tracing = true;
        *cluster = Some(c);
        return vec![format!("{n} nodes")];
    }
    let c = cluster.as_mut().expect("script must start with `cluster`");
    let opts = kv_args(args);
    let filter = |m: &Message| {
        opts.get("from").is_none_or(|f| m.from == parse_id(f))
            && opts.get("to").is_none_or(|t| m.to == parse_id(t))
            && opts.get("type").is_none_or(|t| m.body.kind() == *t)
    };
    let mut extra = Vec::new();
    match cmd {
        "campaign" => c.node_mut(parse_id(args[0])).campaign(),
        "tick" => {
            let count: u32 = args.get(1).map_or(1, |n| n.parse().expect("count"));
            for _ in 0..count {
                c.tick(parse_id(args[0]));
            }
        }
        "tick-all" => {
            let count: u32 = args.first().map_or(1, |n| n.parse().expect("count"));
            for _ in 0..count {
                for id in c.ids() {
                    c.tick(id);
                }
            }
        }
        "elapse-election" => {
            // Ticks one node past the longest possible election timeout.
            let id = parse_id(args[0]);
            let ticks = 2 * c.configs[&id].election_ticks;
            for _ in 0..ticks {
                c.tick(id);
            }
        }
        "propose" => {
            let id = parse_id(args[0]);
            match c.propose(id, args[1]) {
                Ok(Proposed::Appended(eid)) => extra.push(format!("{id} appended {eid}")),
                Ok(Proposed::Forwarded { to }) => extra.push(format!("{id} forwarded to {to}")),
                Err(e) => extra.push(format!("{id} refused: {e}")),
            }
        }
        "read" => {
            let id = parse_id(args[0]);
            let rid: u64 = args[1].parse().expect("read id");
            if let Err(e) = c.node_mut(id).read_index(ReadId(rid)) {
                extra.push(format!("{id} read {rid} refused: {e}"));
            }
        }
        "transfer" => {
            let (from, to) = (parse_id(args[0]), parse_id(args[1]));
            if let Err(e) = c.node_mut(from).transfer_leadership(to) {
                extra.push(format!("{from} transfer refused: {e}"));
            }
        }
        "process" => {
            c.process(parse_id(args[0]));
        }
        "deliver" => {
            let mut keep = VecDeque::new();
            let msgs: Vec<Message> = c.network.drain(..).collect();
            for m in msgs {
                if filter(&m) {
                    c.deliver(m);
                } else {
                    keep.push_back(m);
                }
            }
            keep.extend(c.network.drain(..));
            c.network = keep;
        }
        "hold" => {
            // A slow link: matching messages wait aside until `release`, while the rest of the
            // network goes on (cuts and crashes still apply when they are finally delivered).
            let msgs: Vec<Message> = c.network.drain(..).collect();
            for m in msgs {
                if filter(&m) {
                    extra.push(format!("held {m:?}"));
                    c.held.push_back(m);
                } else {
                    c.network.push_back(m);
                }
            }
        }
        "release" => {
            for m in &c.held {
                extra.push(format!("released {m:?}"));
            }
            let held: Vec<Message> = c.held.drain(..).collect();
            c.network.extend(held);
        }
        "duplicate" => {
            // A network that delivers some messages twice: the copies arrive late, on `release`.
            let copies: Vec<Message> = c.network.iter().filter(|m| filter(m)).cloned().collect();
            extra.extend(copies.iter().map(|m| format!("duplicated {m:?} (copy held)")));
            c.held.extend(copies);
        }
        "drop" => {
            let dropped: Vec<String> =
                c.network.iter().filter(|m| filter(m)).map(|m| format!("dropped {m:?}")).collect();
            c.drop_where(filter);
            extra.extend(dropped);
        }
        "stabilize" => c.stabilize(),
        "run-ticks" => {
            // Ticks every node and stabilizes, COUNT times; only role changes, applies and
            // crashes are printed (not every heartbeat).
            let count: u32 = args.first().map_or(1, |n| n.parse().expect("count"));
            c.run_ticks(count);
            let trace = c.take_trace();
            extra.extend(trace.into_iter().filter(|l| !l.contains("->")));
        }
        "partition" => {
            let text = args.join(" ");
            let groups: Vec<Vec<u64>> = text
                .split('|')
                .map(|g| g.split_whitespace().map(|s| parse_id(s).0).collect())
                .collect();
            let refs: Vec<&[u64]> = groups.iter().map(|g| g.as_slice()).collect();
            c.partition(&refs);
        }
        "compact" => {
            let id = parse_id(args[0]);
            let index = match args.get(1) {
                Some(i) => LogIndex(i.parse().expect("index")),
                None => c.node(id).status().applied,
            };
            c.compact(id, index);
        }
        "isolate" => c.isolate(parse_id(args[0])),
        "heal" => c.heal(),
        "crash" => c.crash(parse_id(args[0])),
        "restart" => c.restart(parse_id(args[0])),
        "status" => {
            for id in c.ids() {
                extra.push(c.describe(id));
            }
        }
        "log" => {
            let id = parse_id(args[0]);
            let n = c.node(id);
            let mut s = format!("{id} log:");
            if let Some(meta) = n.log_view().snapshot() {
                let _ = write!(s, " snapshot={}", meta.last_included);
            }
            for i in n.log_view().all_entries() {
                let _ = write!(s, " {i:?}");
            }
            extra.push(s);
        }
        "applied" => {
            let id = parse_id(args[0]);
            extra.push(format!("{id} applied: {}", c.applied_data(id).join(" ")));
        }
        other => panic!("unknown command {other:?}"),
    }
    let mut lines = c.take_trace();
    lines.extend(extra);
    if !matches!(cmd, "status" | "log" | "applied") {
        c.check_logs_agree();
    }
    lines
}
