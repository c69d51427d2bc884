//! `tenure dev`: a three-node cluster in one process, narrated as a live log.
//!
//! It runs the real consensus core ([`tenure_raft::testkit::Cluster`]: real nodes over
//! in-memory logs and a simulated network) through an election, a few commits, the crash of
//! the leader, a re-election, more commits and the old leader's return, printing one line per
//! leader change and per commit. The run is deterministic (seeded) and takes a couple of
//! seconds; short sleeps only pace the output so it reads like a log.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use tenure_raft::testkit::Cluster;
use tenure_raft::{LogIndex, NodeId, Role, Term};

/// Ticks allowed for an election before the demo gives up (it never needs more than a few
/// dozen; the bound only turns a bug into an error instead of a hang).
const ELECTION_TICKS_MAX: u32 = 500;

/// Narrates a cluster: remembers what it has already printed.
struct Narrator<'a> {
    cluster: Cluster,
    out: &'a mut dyn Write,
    start: Instant,
    pace: Duration,
    /// Leader and term last printed.
    leader: Option<(NodeId, Term)>,
    /// Highest index whose commit was printed.
    committed: LogIndex,
}

impl Narrator<'_> {
    fn say(&mut self, line: &str) -> std::io::Result<()> {
        let t = self.start.elapsed();
        writeln!(self.out, "[{:>2}.{:03}s] {line}", t.as_secs(), t.subsec_millis())?;
        self.out.flush()
    }

    fn pause(&self) {
        if !self.pace.is_zero() {
            std::thread::sleep(self.pace);
        }
    }

    /// Prints a line for a new leader and for each newly committed entry.
    fn report(&mut self) -> std::io::Result<()> {
        if let Some(l) = self.cluster.leader() {
            let term = self.cluster.node(l).term();
            if self.leader != Some((l, term)) {
                self.leader = Some((l, term));
                self.say(&format!("{l} elected leader for term {term}"))?;
                self.pause();
            }
        }
        // Commits as the leader's state machine applied them, each with the nodes holding it.
        let Some((leader, _)) = self.leader else { return Ok(()) };
        if !self.cluster.is_up(leader) {
            return Ok(());
        }
        let fresh: Vec<_> = self
            .cluster
            .applied(leader)
            .iter()
            .filter(|e| e.index() > self.committed)
            .cloned()
            .collect();
        for e in fresh {
            let holders: Vec<String> = self
                .cluster
                .ids()
                .into_iter()
                .filter(|&id| {
                    self.cluster.is_up(id) && self.cluster.node(id).last_index() >= e.index()
                })
                .map(|id| id.to_string())
                .collect();
            self.committed = e.index();
            let data = String::from_utf8_lossy(&e.data).into_owned();
            self.say(&format!("committed {} {data:?} (stored on {})", e.id, holders.join(", ")))?;
            self.pause();
        }
        Ok(())
    }

    /// Ticks (paced) until a leader of a term newer than `after` is up.
    fn elect(&mut self, after: Term) -> std::io::Result<NodeId> {
        for _ in 0..ELECTION_TICKS_MAX {
            if let Some(l) = self.cluster.leader()
                && self.cluster.node(l).term() > after
            {
                self.report()?;
                return Ok(l);
            }
            self.cluster.run_ticks(1);
            if !self.pace.is_zero() {
                std::thread::sleep(self.pace / 8);
            }
        }
        Err(std::io::Error::other("no leader elected"))
    }

    fn propose(&mut self, leader: NodeId, data: &str) -> std::io::Result<()> {
        self.cluster
            .propose(leader, data)
            .map_err(|e| std::io::Error::other(format!("proposal refused: {e}")))?;
        self.cluster.stabilize();
        self.report()
    }
}

/// Runs the demo, writing the narration to `out`. `pace` is the pause after each printed
/// event (zero for tests).
pub fn run(out: &mut dyn Write, pace: Duration) -> std::io::Result<()> {
    let mut n = Narrator {
        cluster: Cluster::new(3, |_| {}),
        out,
        start: Instant::now(),
        pace,
        leader: None,
        committed: LogIndex(0),
    };
    n.say("starting a 3-node cluster in this process: n1, n2, n3 (all followers, term 0)")?;
    n.pause();
    let first = n.elect(Term(0))?;
    for cmd in ["put greeting=hello", "put color=blue", "put count=1"] {
        n.propose(first, cmd)?;
    }

    let old_term = n.cluster.node(first).term();
    n.say(&format!("crashing leader {first}: its memory is lost, its durable log survives"))?;
    n.cluster.crash(first);
    n.pause();
    let second = n.elect(old_term)?;
    for cmd in ["put count=2", "put color=green"] {
        n.propose(second, cmd)?;
    }

    n.say(&format!("restarting {first}: it rejoins as a follower and catches up"))?;
    n.cluster.restart(first);
    n.pause();
    n.cluster.run_ticks(5);
    n.report()?;

    let applied: BTreeMap<NodeId, Vec<String>> =
        n.cluster.ids().into_iter().map(|id| (id, n.cluster.applied_data(id))).collect();
    for id in n.cluster.ids() {
        let d = n.cluster.describe(id);
        n.say(&d)?;
    }
    let reference = &applied[&second];
    if applied.values().any(|a| a != reference) || reference.len() != 5 {
        return Err(std::io::Error::other(format!("state machines disagree: {applied:?}")));
    }
    let role = n.cluster.node(first).role();
    debug_assert_eq!(role, Role::Follower);
    n.say(&format!(
        "all 3 nodes applied the same {} entries; every entry committed before the crash survived",
        reference.len()
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_elects_commits_survives_a_leader_crash_and_agrees() {
        let mut out = Vec::new();
        run(&mut out, Duration::ZERO).expect("demo runs");
        let text = String::from_utf8(out).unwrap();
        let elections = text.lines().filter(|l| l.contains("elected leader")).count();
        assert!(elections >= 2, "{text}");
        assert_eq!(text.lines().filter(|l| l.contains("] committed ")).count(), 5, "{text}");
        assert!(text.contains("crashing leader"));
        assert!(text.lines().last().unwrap().contains("all 3 nodes applied the same 5 entries"));
    }
}
