//! The seed scenarios (S1-S12) as step-by-step traces with plain-words explanations: what
//! `tenure-sim --scenario s8 --trace` prints and the dashboard's scenario player shows.
//!
//! Each scenario is one of the consensus core's scenario scripts (`crates/raft/tests/
//! scenarios/`, compiled in), run afresh by [`tenure_raft::testkit::run_script`] on the
//! testkit's cluster: real nodes over in-memory logs and a network the script drives by hand.
//! Nothing in a run depends on the clock or on unseeded randomness (each node's election
//! timer is seeded from its id and the network's random source from a fixed seed), so a
//! scenario replays identically every time, and identically to the trace recorded in its
//! script, which the core's own tests check. Every trace line gets an explanation from
//! [`explain`]; a line it does not know is an error, never a blank.
//!
//! Two scenarios are not the core's alone and have no script: S7 (a retried request applied
//! once) is the state machine's client sessions, and S10 (nothing leaves before it is durable)
//! is the replica's write, fsync and send order. They are played on three real replicas over
//! simulated disks ([`stage`], [`plays`]): the replica code the server runs, with a network
//! that delivers and disks that sync only when the scenario says so, and crashes that lose
//! every unsynced write. Their lines are what the replicas did, explained as they happen.

mod plays;
mod stage;

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What a scenario runs.
#[derive(Clone, Copy, Debug)]
pub enum Play {
    /// A core scenario script (`crates/raft/tests/scenarios/`), with the trace it produced
    /// when it was recorded, run on the testkit's cluster.
    Script(&'static str),
    /// A scenario played on real replicas by the stage (S7, S10).
    Replicas(fn() -> Trace),
}

/// One scenario: its id on the command line and in the page, what it shows, and what runs.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The id (`s8`, `s6b`, ...).
    pub id: &'static str,
    /// One line on what it shows.
    pub title: &'static str,
    /// What runs.
    pub play: Play,
}

macro_rules! script {
    ($file:literal) => {
        include_str!(concat!("../../raft/tests/scenarios/", $file))
    };
}

/// Every scenario, in the order of the seed scenarios.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "s1",
        title: "S1: the term is a logical clock",
        play: Play::Script(script!("s1_term_is_a_logical_clock.txt")),
    },
    Scenario {
        id: "s2",
        title: "S2: at most one leader per term",
        play: Play::Script(script!("s2_one_leader_per_term.txt")),
    },
    Scenario {
        id: "s3",
        title: "S3: votes only for an up-to-date log",
        play: Play::Script(script!("s3_vote_only_for_up_to_date_log.txt")),
    },
    Scenario {
        id: "s4",
        title: "S4: a leader crash starts a new term",
        play: Play::Script(script!("s4_term_changes_on_leader_crash.txt")),
    },
    Scenario {
        id: "s5",
        title: "S5: data flows only from the leader",
        play: Play::Script(script!("s5_data_flows_only_from_leader.txt")),
    },
    Scenario {
        id: "s6a",
        title: "S6(a): the leader crashes before replicating",
        play: Play::Script(script!("s6a_leader_crash_before_replicating.txt")),
    },
    Scenario {
        id: "s6b",
        title: "S6(b): the leader crashes after replicating to a minority",
        play: Play::Script(script!("s6b_leader_crash_after_replicating_to_minority.txt")),
    },
    Scenario {
        id: "s6c",
        title: "S6(c): the leader crashes after replicating to all",
        play: Play::Script(script!("s6c_leader_crash_after_replicating_to_all.txt")),
    },
    Scenario {
        id: "s6d",
        title: "S6(d): the leader crashes after commit, before the followers learn it",
        play: Play::Script(script!("s6d_leader_crash_after_commit_before_followers_learn.txt")),
    },
    Scenario {
        id: "s6e",
        title: "S6(e): the leader crashes after commit everywhere",
        play: Play::Script(script!("s6e_leader_crash_after_commit_everywhere.txt")),
    },
    Scenario {
        id: "s7",
        title: "S7: a retried write is applied once (client sessions)",
        play: Play::Replicas(plays::s7),
    },
    Scenario {
        id: "s8",
        title: "S8: a split brain cannot commit twice",
        play: Play::Script(script!("s8_split_brain_cannot_commit_twice.txt")),
    },
    Scenario {
        id: "s9",
        title: "S9: a rejoining node does not disrupt (Pre-Vote)",
        play: Play::Script(script!("s9_rejoining_node_does_not_disrupt.txt")),
    },
    Scenario {
        id: "s9-without-prevote",
        title: "S9 without Pre-Vote: a rejoining node disrupts",
        play: Play::Script(script!("s9_without_prevote_rejoining_node_disrupts.txt")),
    },
    Scenario {
        id: "s10",
        title: "S10: durable before anything depends on it",
        play: Play::Replicas(plays::s10),
    },
    Scenario {
        id: "s11a",
        title: "S11(a): a follower behind the compacted log gets a snapshot",
        play: Play::Script(script!("s11a_follower_behind_compacted_log_gets_snapshot.txt")),
    },
    Scenario {
        id: "s11b",
        title: "S11(b): a follower crashes while installing a snapshot",
        play: Play::Script(script!("s11b_follower_crash_during_snapshot_install.txt")),
    },
    Scenario {
        id: "s11c",
        title: "S11(c): the leader crashes during a snapshot transfer",
        play: Play::Script(script!("s11c_leader_crash_during_snapshot_transfer.txt")),
    },
    Scenario {
        id: "s11d",
        title: "S11(d): the leader changes during a snapshot transfer",
        play: Play::Script(script!("s11d_leader_change_during_snapshot_transfer.txt")),
    },
    Scenario {
        id: "s11e",
        title: "S11(e): a snapshot races newer appends",
        play: Play::Script(script!("s11e_snapshot_races_newer_appends.txt")),
    },
    Scenario {
        id: "s11f",
        title: "S11(f): a divergent follower gets a snapshot and drops its conflicts",
        play: Play::Script(script!(
            "s11f_divergent_follower_gets_snapshot_and_drops_conflicts.txt"
        )),
    },
    Scenario {
        id: "s12",
        title: "S12: reads are linearizable (ReadIndex)",
        play: Play::Script(script!("s12_reads_are_linearizable.txt")),
    },
];

/// The scenario with this id (`s8`), or the only one whose id starts with it (`s6` is
/// ambiguous, `s6b` is not).
pub fn find(id: &str) -> Result<&'static Scenario, String> {
    let id = id.to_ascii_lowercase();
    if let Some(s) = SCENARIOS.iter().find(|s| s.id == id) {
        return Ok(s);
    }
    let matching: Vec<&Scenario> = SCENARIOS.iter().filter(|s| s.id.starts_with(&id)).collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no scenario {id}; known: {}", ids().join(", "))),
        many => Err(format!(
            "{id} is ambiguous: {}",
            many.iter().map(|s| s.id).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Every scenario's id.
pub fn ids() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.id).collect()
}

/// What one node looks like after a step, as far as the trace tells.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// `follower`, `pre-candidate`, `candidate` or `leader`.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Its last log index (as the trace last showed it).
    pub last_index: u64,
    /// The highest index it applied (and so knows committed).
    pub applied: u64,
    /// Whether it is running (not crashed).
    pub up: bool,
}

/// One step of a scenario: a trace line (or a command that printed nothing) and what it
/// means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The script's comments before the command: what the scenario is doing now.
    pub note: String,
    /// The script command that produced the line (`partition 1 2 | 3 4 5`).
    pub command: String,
    /// What the command does, in plain words.
    pub command_explanation: String,
    /// The trace line (empty when the command printed nothing).
    pub line: String,
    /// What the line means, in plain words.
    pub explanation: String,
    /// Every node after this step, by id.
    pub nodes: BTreeMap<u64, NodeView>,
}

/// A scenario's run: its steps in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The scenario's id.
    pub id: &'static str,
    /// What it shows.
    pub title: &'static str,
    /// The script's opening comment: the whole story in a paragraph.
    pub summary: String,
    /// The steps.
    pub steps: Vec<Step>,
}

impl Trace {
    /// The trace as text: the comments and commands of the script, then one line per event
    /// with its explanation after a `|`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {} ({})", self.title, self.id);
        if !self.summary.is_empty() {
            let _ = writeln!(out, "# {}", self.summary);
        }
        let mut command = None;
        let mut note = &self.summary;
        for (i, s) in self.steps.iter().enumerate() {
            if command != Some(&s.command) {
                if &s.note != note {
                    let _ = writeln!(out, "# {}", s.note);
                    note = &s.note;
                }
                let _ = writeln!(out, "> {}    ({})", s.command, s.command_explanation);
                command = Some(&s.command);
            }
            if !s.line.is_empty() {
                let _ = writeln!(out, "{:<4} {:<44} | {}", i + 1, s.line, s.explanation);
            }
        }
        out
    }
}

/// Runs `scenario` afresh and explains every line of its trace.
pub fn run(scenario: &'static Scenario) -> Result<Trace, String> {
    match scenario.play {
        Play::Script(script) => run_script(scenario, script),
        Play::Replicas(play) => std::panic::catch_unwind(play).map_err(|e| {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            format!("{}: the scenario failed: {why}", scenario.id)
        }),
    }
}

/// Runs a core scenario script and explains every line of its trace.
fn run_script(scenario: &'static Scenario, script: &'static str) -> Result<Trace, String> {
    let output = tenure_raft::testkit::run_script(script);
    let mut steps = Vec::new();
    let mut nodes: BTreeMap<u64, NodeView> = BTreeMap::new();
    let mut note: Vec<String> = Vec::new();
    let mut current_note = String::new();
    let mut summary = None;
    let mut lines = output.lines().peekable();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            note.push(comment.trim().to_string());
            continue;
        }
        if lines.next().map(str::trim) != Some("----") {
            return Err(format!("{}: command {line:?} has no output", scenario.id));
        }
        let command = line.to_string();
        let command_explanation = explain_command(&command);
        // A comment tells what the scenario does from here on, until the next comment.
        if !note.is_empty() {
            current_note = note.join(" ");
            note.clear();
        }
        let note_text = current_note.clone();
        if summary.is_none() {
            summary = Some(note_text.clone());
        }
        if let Some(n) = command.strip_prefix("cluster ").and_then(|a| a.split(' ').next()) {
            let n: u64 = n.parse().map_err(|_| format!("bad cluster size in {command:?}"))?;
            nodes = (1..=n)
                .map(|id| {
                    (id, NodeView { role: "follower".into(), up: true, ..NodeView::default() })
                })
                .collect();
        }
        let mut printed = Vec::new();
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            printed.push(l.trim().to_string());
            lines.next();
        }
        let quiet = printed.is_empty() || printed == ["ok"];
        if quiet || command.starts_with("cluster ") {
            steps.push(Step {
                note: note_text,
                command,
                command_explanation,
                line: String::new(),
                explanation: String::new(),
                nodes: nodes.clone(),
            });
            continue;
        }
        for l in printed {
            let explanation =
                explain(&l).ok_or_else(|| format!("{}: no explanation for {l:?}", scenario.id))?;
            follow(&mut nodes, &l);
            steps.push(Step {
                note: note_text.clone(),
                command: command.clone(),
                command_explanation: command_explanation.clone(),
                line: l,
                explanation,
                nodes: nodes.clone(),
            });
        }
    }
    Ok(Trace {
        id: scenario.id,
        title: scenario.title,
        summary: summary.unwrap_or_default(),
        steps,
    })
}

fn node_id(word: &str) -> Option<u64> {
    word.strip_prefix('n')?.parse().ok()
}

/// `3/17` → 17.
fn index_of(position: &str) -> Option<u64> {
    position.split_once('/')?.1.parse().ok()
}

/// Updates the nodes from what a trace line says about them.
fn follow(nodes: &mut BTreeMap<u64, NodeView>, line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(id) = words.first().and_then(|w| node_id(w)) else { return };
    let node = nodes.entry(id).or_insert_with(|| NodeView { up: true, ..NodeView::default() });
    match words.get(1..).unwrap_or_default() {
        ["is", role, "at", "term", term, "leader", leader] => {
            node.role = role.to_string();
            node.term = term.trim_end_matches(',').parse().unwrap_or(node.term);
            node.leader = node_id(leader);
            node.up = true;
        }
        ["appended", position] => node.last_index = index_of(position).unwrap_or(node.last_index),
        ["applied", range] if range.contains('/') => {
            let last = range.rsplit("..").next().unwrap_or(range);
            node.applied = index_of(last).unwrap_or(node.applied);
            node.last_index = node.last_index.max(node.applied);
        }
        ["installed", "snapshot", position] => {
            node.applied = index_of(position).unwrap_or(node.applied);
            node.last_index = node.last_index.max(node.applied);
        }
        ["crashed"] | ["down"] => node.up = false,
        ["restarted", "at", "term", term] => {
            node.up = true;
            node.role = "follower".into();
            node.term = term.parse().unwrap_or(node.term);
            node.leader = None;
        }
        [role, fields @ ..] if fields.first().is_some_and(|f| f.starts_with("term=")) => {
            node.role = role.to_string();
            for f in fields {
                match f.split_once('=') {
                    Some(("term", v)) => node.term = v.parse().unwrap_or(node.term),
                    Some(("leader", v)) => node.leader = node_id(v),
                    Some(("last", v)) => node.last_index = index_of(v).unwrap_or(node.last_index),
                    Some(("applied", v)) => node.applied = v.parse().unwrap_or(node.applied),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// What a script command does, in plain words.
pub fn explain_command(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let arg = |i: usize| words.get(i).copied().unwrap_or("?");
    let filter = || {
        let f: Vec<String> = words[1..]
            .iter()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| match k {
                "from" => format!("from n{v}"),
                "to" => format!("to n{v}"),
                _ => format!("of type {v}"),
            })
            .collect();
        if f.is_empty() {
            "every message in flight".to_string()
        } else {
            format!("messages {}", f.join(" "))
        }
    };
    match words.first().copied().unwrap_or("") {
        "cluster" => {
            let mut s = format!("Start {} nodes, all followers in term 0", arg(1));
            if command.contains("prevote=false") {
                s.push_str(", with Pre-Vote off");
            }
            if command.contains("checkquorum=false") {
                s.push_str(", with Check-Quorum off");
            }
            s + "."
        }
        "campaign" => format!("n{}'s election timer fires: it starts an election.", arg(1)),
        "tick" => format!("n{}'s clock moves {} tick(s).", arg(1), words.get(2).unwrap_or(&"1")),
        "tick-all" => format!("Every clock moves {} tick(s).", words.get(1).unwrap_or(&"1")),
        "elapse-election" => format!("n{}'s clock runs past its election timeout.", arg(1)),
        "propose" => format!("A client asks n{} to write {:?}.", arg(1), arg(2)),
        "read" => format!("A client asks n{} for a linearizable read (id {}).", arg(1), arg(2)),
        "transfer" => format!("n{} is asked to hand leadership to n{}.", arg(1), arg(2)),
        "process" => format!("n{} handles what it has received and sends what follows.", arg(1)),
        "deliver" => format!("The network delivers {}.", filter()),
        "drop" => format!("The network loses {}.", filter()),
        "hold" => format!("The network holds back {} (a slow link).", filter()),
        "duplicate" => format!("The network keeps a late copy of {}.", filter()),
        "release" => "The held-back messages arrive, late.".to_string(),
        "stabilize" => "Let every message arrive and every node act until all is quiet.".into(),
        "run-ticks" => format!("Let time pass: {} ticks, every message delivered.", arg(1)),
        "partition" => {
            let groups: Vec<String> = command["partition".len()..]
                .split('|')
                .map(|g| {
                    let ids: Vec<String> = g.split_whitespace().map(|i| format!("n{i}")).collect();
                    format!("{{{}}}", ids.join(", "))
                })
                .collect();
            format!("The network splits into {}: no message crosses.", groups.join(" and "))
        }
        "isolate" => format!("n{} is cut off from every other node.", arg(1)),
        "heal" => "The network heals: every node reaches every other.".to_string(),
        "crash" => format!("n{} crashes: it loses its memory, keeps its durable log.", arg(1)),
        "restart" => format!("n{} restarts from what it had made durable.", arg(1)),
        "compact" => format!("n{} compacts its log into a snapshot.", arg(1)),
        "status" => "Show every node's term, vote, leader, commit and log.".to_string(),
        "log" => format!("Show n{}'s log.", arg(1)),
        "applied" => format!("Show what n{}'s state machine applied.", arg(1)),
        other => format!("Script command {other}."),
    }
}

/// What one trace line means, in plain words; `None` for a line of a kind this does not know.
pub fn explain(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let first = *words.first()?;
    if let Some(rest) = ["dropped ", "held ", "released ", "duplicated "]
        .iter()
        .find_map(|p| line.strip_prefix(p).map(|r| (p.trim(), r)))
    {
        let (what, message) = rest;
        let inner = explain(message)?;
        return Some(match what {
            "dropped" => format!("Lost on the way: {inner}"),
            "held" => format!("Held back on a slow link: {inner}"),
            "released" => format!("Arrives late: {inner}"),
            _ => format!("The network will deliver this one twice: {inner}"),
        });
    }
    if let Some((from, to)) = first.split_once("->") {
        let (from, to) = (node_id(from)?, node_id(to)?);
        if words.get(1..) == Some(&["snapshot", "transfer", "failed"][..]) {
            return Some(format!(
                "n{from}'s snapshot transfer to n{to} failed; it will send one again later."
            ));
        }
        let term: u64 = words.get(1)?.strip_prefix('@')?.parse().ok()?;
        return explain_message(from, to, term, words.get(2)?, &words[3..], line);
    }
    let id = node_id(first)?;
    let n = format!("n{id}");
    Some(match &words[1..] {
        ["is", "leader", "at", "term", term, ..] => format!(
            "{n} won the election: a majority voted for it, so it leads term {}. It appends an \
             empty entry of its term at once, which commits everything before it (Raft §5.4.2).",
            term.trim_end_matches(',')
        ),
        ["is", "candidate", "at", "term", term, ..] => format!(
            "{n} becomes a candidate: it raises its term to {}, votes for itself and asks the \
             others for their votes (Raft §5.2).",
            term.trim_end_matches(',')
        ),
        ["is", "pre-candidate", "at", "term", term, ..] => format!(
            "{n} becomes a pre-candidate: before raising its term past {} it asks whether it \
             could win (Pre-Vote), so a node that cannot win never disturbs the cluster.",
            term.trim_end_matches(',')
        ),
        ["is", "follower", "at", "term", term, "leader", leader] => match node_id(leader) {
            Some(l) => format!(
                "{n} follows n{l} in term {}: it takes entries only from that leader.",
                term.trim_end_matches(',')
            ),
            None => format!(
                "{n} is a follower in term {} and knows no leader yet (it saw a higher term, \
                 or stepped down).",
                term.trim_end_matches(',')
            ),
        },
        ["appended", position] => format!(
            "{n} leads, so it appends the client's entry to its log at {position} (term/index); \
             it is not committed until a majority holds it."
        ),
        ["forwarded", "to", leader] => format!(
            "{n} is not the leader: it forwards the proposal to {leader}, since only the leader \
             appends to the log (S5)."
        ),
        ["refused:", ..] => format!("{n} refuses the proposal: {}.", words[2..].join(" ")),
        ["applied", range] if range.contains('/') => format!(
            "{n} learned that {range} is committed and applied it to its state machine; it can \
             never be undone."
        ),
        ["applied:", values @ ..] => {
            if values.is_empty() {
                format!("{n}'s state machine has applied no client data.")
            } else {
                format!("{n}'s state machine holds, in order: {}.", values.join(", "))
            }
        }
        ["crashed"] => format!("{n} is down: messages to it are lost."),
        ["down"] => format!("{n} is down."),
        ["restarted", "at", "term", term] => format!(
            "{n} is back in term {term}, the term it made durable: a restart never takes a \
             term or a vote back (S1)."
        ),
        ["compacted", "through", index] => {
            format!("{n} compacted its log: entries through {index} now live only in its snapshot.")
        }
        ["installed", "snapshot", position] => format!(
            "{n} replaced its state with the leader's snapshot through {position}; its log \
             continues after it."
        ),
        ["log:", rest @ ..] => format!("{n}'s log, oldest first: {}.", rest.join(" ")),
        ["read", rid, "safe", "at", "index", index] => format!(
            "Read {rid} on {n} is confirmed: a majority still follows its leader, so once {n} \
             has applied index {index} it answers with data at least that fresh (ReadIndex)."
        ),
        ["read", rid, "dropped"] => {
            format!("Read {rid} on {n} failed (no confirmed leader); the client tries again.")
        }
        [role, fields @ ..] if fields.first().is_some_and(|f| f.starts_with("term=")) => {
            format!("{n} now: {role}, {}.", fields.join(", "))
        }
        _ => return None,
    })
}

fn explain_message(
    from: u64,
    to: u64,
    term: u64,
    kind: &str,
    rest: &[&str],
    line: &str,
) -> Option<String> {
    let (f, t) = (format!("n{from}"), format!("n{to}"));
    let field = |name: &str| {
        rest.iter().find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    Some(match kind {
        "PreVote" => format!(
            "{f} asks {t}: would you vote for me in term {term}? My log ends at {}. No term \
             changes yet.",
            field("last")?
        ),
        "PreVoteResponse" => match rest.first()? {
            &"yes" => format!(
                "{f} would vote for {t}: it hears no leader and {t}'s log is as \
                               up to date as its own."
            ),
            _ => format!(
                "{f} would not vote for {t}: it still hears a leader, or its own log \
                          is more up to date."
            ),
        },
        "Vote" => format!(
            "{f} asks {t} for its vote in term {term}; its log ends at {} (a voter refuses a \
             candidate whose log is behind its own, §5.4.1).",
            field("last")?
        ),
        "VoteResponse" => match rest.first()? {
            &"yes" => format!(
                "{f} votes for {t} in term {term}. The vote is durable before this reply leaves, \
                 so {f} can never vote for anyone else in term {term}."
            ),
            _ => format!(
                "{f} refuses {t} in term {term}: it voted for someone else already, or {t}'s log \
                 is behind its own."
            ),
        },
        "Append" => {
            let entries = line.split_once('[')?.1.split_once(']')?.0;
            let commit = field("commit")?;
            let prev = field("prev")?;
            if entries.is_empty() {
                format!(
                    "{f}, leader of term {term}, tells {t} it holds everything through {prev} \
                     and that entries through index {commit} are committed."
                )
            } else {
                format!(
                    "{f}, leader of term {term}, sends {t} the entries [{entries}] to go after \
                     {prev} (which {t} must hold, §5.3); committed so far: index {commit}."
                )
            }
        }
        "AppendResponse" => match rest.first()? {
            &"ok" => format!(
                "{f} has the leader's log through index {} and has made it durable; a \
                 majority of such answers commits an entry.",
                field("match")?
            ),
            _ => format!(
                "{f} rejects the append: its log does not hold the entry before it. Its hint \
                 ({}) lets {t} go back to where the logs agree in one round trip.",
                field("hint")?
            ),
        },
        "Heartbeat" => format!(
            "{f}, leader of term {term}, reminds {t} it is alive (no election needed) and that \
             index {} is committed{}.",
            field("commit")?,
            match field("read") {
                Some(r) if r != "0" => format!("; it also confirms read round {r}"),
                _ => String::new(),
            }
        ),
        "HeartbeatResponse" => {
            format!("{f} answers {t}'s heartbeat: it still follows {t} in term {term}.")
        }
        "Propose" => format!("{f} forwards client data to the leader {t}."),
        "ReadIndex" => format!("{f} asks the leader {t} for a read index (a safe point to read)."),
        "ReadIndexResponse" => format!(
            "{f} answers {t}: the read is safe once applied through index {}.",
            field("index")?
        ),
        "TimeoutNow" => {
            format!("{f} hands leadership to {t}: campaign now, without waiting for a timeout.")
        }
        "Snapshot" => format!(
            "{f} sends {t} its snapshot through {}: {t} is so far behind that the entries it \
             needs were compacted away (Raft §7).",
            field("last")?
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_every_scenario_is_explained_and_replays_identically() {
        for s in SCENARIOS {
            let first = run(s).unwrap_or_else(|e| panic!("{e}"));
            assert!(first.steps.len() > 5, "{}: {} steps", s.id, first.steps.len());
            assert!(first.steps.iter().all(|st| !st.command_explanation.is_empty()));
            assert_eq!(run(s).unwrap(), first, "{} replays identically", s.id);
            // A script's run is the one recorded in it, line for line.
            if let Play::Script(script) = s.play {
                assert_eq!(tenure_raft::testkit::run_script(script), script, "{}", s.id);
            }
        }
    }

    #[test]
    fn the_explainer_refuses_what_it_does_not_know() {
        assert_eq!(explain("n1 sings"), None);
        assert_eq!(explain("n1->n2 @1 Gossip"), None);
        assert!(explain("n1->n2 @3 VoteResponse yes").unwrap().contains("votes for n2"));
    }

    fn lines(t: &Trace) -> Vec<&str> {
        t.steps.iter().map(|s| s.line.as_str()).filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn s7_a_retry_on_the_new_leader_gets_the_first_answer_and_applies_once() {
        let t = run(find("s7").unwrap()).unwrap();
        let lines = lines(&t);
        // The first attempt was answered (and lost) with the same revision the retry gets.
        let first = lines.iter().position(|l| l.contains("answered request 1: ok, revision 2"));
        let crash = lines.iter().position(|l| l.contains("crashed;"));
        assert!(first.is_some() && first < crash, "{lines:#?}");
        assert!(lines.contains(&"retry answered revision 2, first answer revision 2"));
        // After the retry, x was written once; the late duplicate is refused; the restarted
        // member ends like the leader; without a session the retry applies twice.
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("store: x=1 version=1 mod_revision=2 revision=2 sessions=1"))
        );
        assert!(lines.iter().any(|l| l.ends_with("error: session: stale sequence")));
        let finals: Vec<&&str> =
            lines.iter().filter(|l| l.contains("store: x=2 version=2")).collect();
        assert!(finals.len() >= 3, "{finals:?}");
        assert!(lines.iter().any(|l| l.contains("store: y=1 version=2")), "{lines:#?}");
        // The new leader is not the crashed one.
        let last = &t.steps.last().unwrap().nodes;
        assert_eq!(last.values().filter(|n| n.role == "leader").count(), 1, "{last:?}");
    }

    #[test]
    fn s10_nothing_leaves_before_its_fsync_and_an_acknowledged_write_survives_a_power_cut() {
        let t = run(find("s10").unwrap()).unwrap();
        let lines = lines(&t);
        let position = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?}: {lines:#?}"))
        };
        // A vote reply leaves only after the voter's fsync of that vote.
        let vote = position(" VoteResponse yes");
        let voter = &lines[vote][..2];
        let synced = lines[..vote]
            .iter()
            .rposition(|l| l.starts_with(&format!("{voter} fsync done")))
            .expect("the voter synced before replying");
        let started = lines[..synced]
            .iter()
            .rposition(|l| l.starts_with(&format!("{voter} fsync started")))
            .expect("the voter's fsync started before");
        let candidate = lines[vote].split_once("->").unwrap().1.split(' ').next().unwrap();
        assert!(lines[started].ends_with(&format!("vote {candidate}")), "{}", lines[started]);
        // No acknowledgement before the followers' fsyncs; one durable follower copy does not
        // commit while the leader's own copy is not durable; the answer comes after.
        let in_flight = position("acknowledgements in flight:");
        assert_eq!(lines[in_flight].matches("false").count(), 2, "{}", lines[in_flight]);
        let waiting = position("commit=1 persisted=1 last=1/2");
        let answered = position("answered request 1: ok, revision 2");
        assert!(waiting < answered);
        // After the power cut every member holds the acknowledged write.
        let stores = lines.iter().filter(|l| l.contains("store: k=v version=1")).count();
        assert_eq!(stores, 3, "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("answered request 2: [k=v]")));
    }

    #[test]
    fn s8_shows_the_old_leader_stepping_down_and_the_new_one_committing() {
        let t = run(find("s8").unwrap()).unwrap();
        let last = &t.steps.last().unwrap().nodes;
        assert_eq!(last.values().filter(|n| n.role == "leader").count(), 1, "{last:?}");
        assert!(t.steps.iter().any(|s| s.command.starts_with("partition")));
        assert!(find("s6").is_err(), "s6 is ambiguous");
        assert!(find("s99").is_err());
    }
}
