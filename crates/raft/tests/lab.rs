//! The classic test list of the MIT 6.5840 Raft lab (names and intent from the course's
//! `raft_test.go`), rewritten for a deterministic core: time is ticks, the network is the test
//! kit's queue (optionally lossy and reordering), a crash drops a node's memory. The kit checks
//! on every step that no term has two leaders and that no two nodes apply different entries at
//! one index.

use std::collections::BTreeSet;

use tenure_raft::testkit::Cluster;
use tenure_raft::{LogIndex, NodeId, Proposed, Role};

/// Election timeout in ticks (`Config::new` default) and a generous bound for an election.
const ELECTION_TICKS: u32 = 10;
const ELECTION_BOUND: u32 = 20 * ELECTION_TICKS;

fn cluster(n: u64) -> Cluster {
    Cluster::new(n, |_| {})
}

fn connected(c: &Cluster, down: &BTreeSet<u64>) -> Vec<NodeId> {
    c.ids().into_iter().filter(|id| !down.contains(&id.0) && c.is_up(*id)).collect()
}

/// The one leader among `among`, after ticking until there is one.
fn check_one_leader(c: &mut Cluster, among: &[NodeId]) -> NodeId {
    for _ in 0..ELECTION_BOUND {
        let max_term = among.iter().map(|id| c.node(*id).term()).max().unwrap();
        let leaders: Vec<NodeId> = among
            .iter()
            .copied()
            .filter(|id| c.node(*id).role() == Role::Leader && c.node(*id).term() == max_term)
            .collect();
        assert!(leaders.len() <= 1, "two leaders in term {max_term}: {leaders:?}");
        if let [l] = leaders.as_slice() {
            return *l;
        }
        c.run_ticks(1);
    }
    panic!("no leader among {among:?}");
}

fn check_no_leader(c: &Cluster, among: &[NodeId]) {
    for id in among {
        assert_ne!(c.node(*id).role(), Role::Leader, "{id} leads without a quorum");
    }
}

/// How many running nodes applied `data` (and at which index the first one did).
fn n_committed(c: &Cluster, data: &str) -> usize {
    c.ids()
        .iter()
        .filter(|id| c.is_up(**id) && c.applied_data(**id).iter().any(|d| d == data))
        .count()
}

/// Like the lab's `one()`: submit `data` to whoever leads, until at least `expected` nodes
/// apply it, retrying across leader changes. Panics if it takes too long.
fn one(c: &mut Cluster, data: &str, expected: usize) -> LogIndex {
    for _attempt in 0..20 {
        let leader =
            c.ids().into_iter().find(|id| c.is_up(*id) && c.node(*id).role() == Role::Leader);
        let mut index = None;
        if let Some(Ok(Proposed::Appended(id))) = leader.map(|l| c.propose(l, data)) {
            index = Some(id.index);
        }
        for _ in 0..(2 * ELECTION_TICKS) {
            c.run_ticks(1);
            if n_committed(c, data) >= expected {
                return index.unwrap_or(LogIndex(0));
            }
        }
    }
    panic!("{data:?} never reached {expected} nodes");
}

#[test]
fn initial_election() {
    let mut c = cluster(3);
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all);
    let term = c.node(leader).term();
    assert!(term.0 >= 1);
    // With no failures, the leader and term stay put for two election timeouts.
    c.run_ticks(2 * ELECTION_TICKS);
    assert_eq!(check_one_leader(&mut c, &all), leader);
    assert_eq!(c.node(leader).term(), term, "term changed without failures");
}

#[test]
fn re_election() {
    let mut c = cluster(3);
    let all = c.ids();
    let l1 = check_one_leader(&mut c, &all);
    // The leader is cut off: a new one is elected among the others.
    c.isolate(l1);
    let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != l1).collect();
    let l2 = check_one_leader(&mut c, &rest);
    // The old leader rejoins; a leader still exists.
    c.heal();
    check_one_leader(&mut c, &all);
    // No quorum: two of three cut off; the remaining node must not become leader.
    let l3 = check_one_leader(&mut c, &all);
    let others: Vec<NodeId> = all.iter().copied().filter(|id| *id != l3).collect();
    c.partition(&[&[l3.0], &[others[0].0], &[others[1].0]]);
    c.run_ticks(ELECTION_BOUND);
    check_no_leader(&c, &all);
    // A quorum returns: a leader emerges.
    c.partition(&[&[l3.0, others[0].0], &[others[1].0]]);
    check_one_leader(&mut c, &[l3, others[0]]);
    c.heal();
    check_one_leader(&mut c, &all);
    let _ = l2;
}

#[test]
fn many_elections() {
    let mut c = cluster(7);
    let all = c.ids();
    check_one_leader(&mut c, &all);
    let mut seed = 12345u64;
    for _ in 0..10 {
        // Cut three random nodes off; the other four must keep or elect a leader.
        let mut cut = BTreeSet::new();
        while cut.len() < 3 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            cut.insert((seed >> 33) % 7 + 1);
        }
        let inside: Vec<u64> = (1..=7).filter(|i| !cut.contains(i)).collect();
        let cut_v: Vec<u64> = cut.iter().copied().collect();
        let mut groups: Vec<Vec<u64>> = vec![inside.clone()];
        groups.extend(cut_v.iter().map(|i| vec![*i]));
        let refs: Vec<&[u64]> = groups.iter().map(|g| g.as_slice()).collect();
        c.partition(&refs);
        let inside_ids: Vec<NodeId> = inside.iter().map(|i| NodeId(*i)).collect();
        check_one_leader(&mut c, &inside_ids);
        c.heal();
    }
    check_one_leader(&mut c, &all);
}

#[test]
fn basic_agree() {
    let mut c = cluster(3);
    let all = c.ids();
    check_one_leader(&mut c, &all);
    for i in 1..=3 {
        assert_eq!(n_committed(&c, &format!("cmd{i}")), 0, "committed before proposed");
        let index = one(&mut c, &format!("cmd{i}"), 3);
        // Index 1 is the leader's no-op.
        assert_eq!(index, LogIndex(i + 1), "wrong index");
    }
}

#[test]
fn rpc_bytes_each_entry_sent_once_per_follower() {
    let mut c = cluster(3);
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all);
    c.stabilize();
    let payload = "x".repeat(5000);
    let mut sent_bytes = 0u64;
    for i in 0..10 {
        let data = format!("{i}{payload}");
        c.propose(leader, &data).unwrap();
        c.process(leader);
        sent_bytes += c
            .in_flight()
            .iter()
            .map(|m| match &m.body {
                tenure_raft::MessageBody::Append { entries, .. } => {
                    entries.iter().map(|e| e.data.len() as u64).sum::<u64>()
                }
                _ => 0,
            })
            .sum::<u64>();
        c.stabilize();
    }
    let expected = 2 * 10 * 5001;
    assert_eq!(sent_bytes, expected, "every entry is sent exactly once to each follower");
}

#[test]
fn follower_failure() {
    let mut c = cluster(3);
    let all = c.ids();
    one(&mut c, "101", 3);
    let leader = check_one_leader(&mut c, &all);
    let f1 = all.iter().copied().find(|id| *id != leader).unwrap();
    c.isolate(f1);
    // The leader and one follower still commit.
    one(&mut c, "102", 2);
    one(&mut c, "103", 2);
    // Both followers gone: nothing commits.
    let leader = check_one_leader(&mut c, &[leader]);
    let f2 = all.iter().copied().find(|id| *id != leader && *id != f1).unwrap();
    c.partition(&[&[leader.0], &[f1.0], &[f2.0]]);
    let r = c.propose(leader, "104");
    assert!(r.is_ok());
    c.run_ticks(2 * ELECTION_TICKS);
    assert_eq!(n_committed(&c, "104"), 0, "committed without a majority");
}

#[test]
fn leader_failure() {
    let mut c = cluster(3);
    let all = c.ids();
    one(&mut c, "101", 3);
    let l1 = check_one_leader(&mut c, &all);
    c.isolate(l1);
    one(&mut c, "102", 2);
    let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != l1).collect();
    let l2 = check_one_leader(&mut c, &rest);
    c.partition(&[&[l1.0], &[l2.0], &[rest.iter().find(|id| **id != l2).unwrap().0]]);
    for id in all.iter() {
        if c.node(*id).role() == Role::Leader {
            let _ = c.propose(*id, "104");
        }
    }
    c.run_ticks(2 * ELECTION_TICKS);
    assert_eq!(n_committed(&c, "104"), 0);
}

#[test]
fn fail_agree_follower_rejoins_and_catches_up() {
    let mut c = cluster(3);
    let all = c.ids();
    one(&mut c, "101", 3);
    let leader = check_one_leader(&mut c, &all);
    let f = all.iter().copied().find(|id| *id != leader).unwrap();
    c.isolate(f);
    for v in ["102", "103", "104", "105"] {
        one(&mut c, v, 2);
    }
    c.heal();
    one(&mut c, "106", 3);
    one(&mut c, "107", 3);
    assert_eq!(c.applied_data(f), vec!["101", "102", "103", "104", "105", "106", "107"]);
}

#[test]
fn fail_no_agree_without_majority() {
    let mut c = cluster(5);
    let all = c.ids();
    one(&mut c, "10", 5);
    let leader = check_one_leader(&mut c, &all);
    let others: Vec<u64> = all.iter().map(|i| i.0).filter(|i| *i != leader.0).collect();
    // Three of five followers gone.
    c.partition(&[&[leader.0, others[0]], &[others[1]], &[others[2]], &[others[3]]]);
    let Ok(Proposed::Appended(id)) = c.propose(leader, "20") else { panic!("leader refused") };
    assert_eq!(id.index, LogIndex(3));
    c.run_ticks(2 * ELECTION_TICKS);
    assert_eq!(n_committed(&c, "20"), 0);
    c.heal();
    // The uncommitted entry may survive or not; new commands agree everywhere.
    one(&mut c, "30", 5);
    one(&mut c, "1000", 5);
}

#[test]
fn concurrent_starts_all_commit() {
    let mut c = cluster(3);
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all);
    c.stabilize();
    let term = c.node(leader).term();
    let mut indexes = BTreeSet::new();
    for i in 0..5 {
        match c.propose(leader, &format!("c{i}")).unwrap() {
            Proposed::Appended(id) => {
                assert_eq!(id.term, term);
                indexes.insert(id.index);
            }
            Proposed::Forwarded { .. } => unreachable!(),
        }
    }
    assert_eq!(indexes.len(), 5, "each proposal gets its own index");
    c.stabilize();
    for id in all {
        assert_eq!(c.applied_data(id), vec!["c0", "c1", "c2", "c3", "c4"]);
    }
}

#[test]
fn rejoin_of_partitioned_leader() {
    let mut c = cluster(3);
    let all = c.ids();
    one(&mut c, "101", 3);
    let l1 = check_one_leader(&mut c, &all);
    c.isolate(l1);
    // The old leader takes proposals it can never commit.
    for v in ["102", "103", "104"] {
        let _ = c.propose(l1, v);
    }
    c.stabilize();
    one(&mut c, "103b", 2);
    let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != l1).collect();
    let l2 = check_one_leader(&mut c, &rest);
    c.isolate(l2);
    // The old leader returns (without l2).
    c.partition(&[&[l1.0, rest.iter().find(|id| **id != l2).unwrap().0], &[l2.0]]);
    one(&mut c, "104b", 2);
    c.heal();
    one(&mut c, "105", 3);
    for id in all {
        let data = c.applied_data(id);
        assert!(!data.contains(&"102".to_string()), "{id} applied an uncommitted entry");
    }
}

#[test]
fn backup_over_many_conflicting_entries() {
    let mut c = cluster(5);
    let all = c.ids();
    one(&mut c, "start", 5);
    let l1 = check_one_leader(&mut c, &all);
    let o: Vec<u64> = all.iter().map(|i| i.0).filter(|i| *i != l1.0).collect();
    // Leader and one follower cut off; they append 50 entries that cannot commit.
    c.partition(&[&[l1.0, o[0]], &[o[1], o[2], o[3]]]);
    for i in 0..50 {
        let _ = c.propose(l1, &format!("lost{i}"));
    }
    c.stabilize();
    // The other three elect a leader and commit 50 entries.
    let majority = [NodeId(o[1]), NodeId(o[2]), NodeId(o[3])];
    let l2 = check_one_leader(&mut c, &majority);
    for i in 0..50 {
        c.propose(l2, &format!("a{i}")).unwrap();
    }
    c.run_ticks(3);
    assert_eq!(n_committed(&c, "a49"), 3);
    // Now one of the majority is cut off too; the remaining two cannot commit 50 more.
    let cut = majority.iter().copied().find(|id| *id != l2).unwrap();
    let pair: Vec<u64> = majority.iter().map(|i| i.0).filter(|i| *i != cut.0).collect();
    c.partition(&[&[l1.0, o[0]], &pair, &[cut.0]]);
    for i in 0..50 {
        let _ = c.propose(l2, &format!("b{i}"));
    }
    c.stabilize();
    // The original leader's side returns with the cut-off node: 3 of 5, a majority whose logs
    // diverge by 50 entries from the new leader's.
    c.partition(&[&[l1.0, o[0], cut.0], &pair]);
    let before = c.delivered_count;
    for i in 0..50 {
        one(&mut c, &format!("c{i}"), 3);
    }
    let used = c.delivered_count - before;
    c.heal();
    one(&mut c, "last", 5);
    // Messages, not entries, bound the repair: far fewer than one round trip per entry.
    assert!(used < 50 * 60, "repair took {used} messages");
    c.check_logs_agree();
}

#[test]
fn count_messages_for_election_and_when_idle() {
    let mut c = cluster(3);
    let all = c.ids();
    let leader = check_one_leader(&mut c, &all);
    c.stabilize();
    // Pre-vote, vote, the no-op and its commit: a handful of messages per follower.
    let elect = c.delivered_count;
    assert!(elect <= 30, "election used {elect} messages");
    // Idle: a heartbeat and its answer per follower per heartbeat interval, nothing more.
    let before = c.delivered_count;
    c.run_ticks(10 * ELECTION_TICKS);
    let idle = c.delivered_count - before;
    assert_eq!(c.node(leader).role(), Role::Leader);
    let per_tick = idle as f64 / f64::from(10 * ELECTION_TICKS);
    assert!(per_tick <= 4.0, "idle cluster sends {per_tick} messages per tick");
    // Ten entries with one proposal at a time: at most a few messages each.
    let before = c.delivered_count;
    for i in 0..10 {
        c.propose(leader, &format!("{i}")).unwrap();
        c.stabilize();
    }
    let per_entry = (c.delivered_count - before) / 10;
    assert!(per_entry <= 8, "{per_entry} messages per entry");
}

#[test]
fn persist_restart_all_restart_leader_restart_follower() {
    let mut c = cluster(3);
    let all = c.ids();
    one(&mut c, "11", 3);
    for id in all.clone() {
        c.crash(id);
    }
    for id in all.clone() {
        c.restart(id);
    }
    one(&mut c, "12", 3);
    let l = check_one_leader(&mut c, &all);
    c.crash(l);
    c.restart(l);
    one(&mut c, "13", 3);
    let l = check_one_leader(&mut c, &all);
    c.crash(l);
    one(&mut c, "14", 2);
    c.restart(l);
    one(&mut c, "15", 3);
    let f = all.iter().copied().find(|id| *id != check_one_leader(&mut c, &all)).unwrap();
    c.crash(f);
    one(&mut c, "16", 2);
    c.restart(f);
    one(&mut c, "17", 3);
    for id in all {
        assert_eq!(c.applied_data(id), vec!["11", "12", "13", "14", "15", "16", "17"]);
    }
}

#[test]
fn persist_repeated_crashes_of_majorities_and_leader() {
    let mut c = cluster(5);
    let all = c.ids();
    let mut index = 1;
    one(&mut c, "start", 5);
    for iter in 0..5u64 {
        let l = check_one_leader(&mut c, &all);
        let (a, b) = (NodeId((l.0 + iter) % 5 + 1), NodeId((l.0 + iter + 1) % 5 + 1));
        c.crash(l);
        if a != l {
            c.crash(a);
        }
        one(&mut c, &format!("v{index}"), if a != l { 3 } else { 4 });
        index += 1;
        c.restart(l);
        if a != l {
            c.restart(a);
        }
        c.crash(b);
        one(&mut c, &format!("v{index}"), 4);
        index += 1;
        c.restart(b);
    }
    one(&mut c, "end", 5);
    c.check_logs_agree();
}

#[test]
fn persist_partitioned_leader_and_follower_crash() {
    let mut c = cluster(3);
    let all = c.ids();
    one(&mut c, "101", 3);
    let l = check_one_leader(&mut c, &all);
    let f = NodeId(l.0 % 3 + 1);
    c.isolate(NodeId((l.0 + 1) % 3 + 1));
    one(&mut c, "102", 2);
    c.crash(l);
    c.crash(f);
    c.heal();
    c.restart(f);
    one(&mut c, "103", 2);
    c.restart(l);
    one(&mut c, "104", 3);
}

/// Figure 8 of the Raft paper: a leader proposes, then crashes at random moments; nodes
/// restart when fewer than a majority run. The kit asserts on every apply that no index ever
/// holds two different entries (which would happen if an old-term entry were committed by
/// counting replicas).
fn figure_8(unreliable: bool, seed: u64) {
    let mut c = cluster(5);
    if unreliable {
        c.set_unreliable(0.1, true, seed);
    }
    let all = c.ids();
    let mut rng = seed.max(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    one(&mut c, "init", 1);
    let mut up: BTreeSet<u64> = (1..=5).collect();
    for i in 0..200 {
        // Give the cluster a chance to elect someone, so most iterations propose.
        for _ in 0..(3 * ELECTION_TICKS) {
            if !c.leaders().is_empty() {
                break;
            }
            c.run_ticks(1);
        }
        if let Some(l) = c.leaders().first().copied() {
            let _ = c.propose(l, &format!("f{i}"));
        }
        let wait =
            if next() % 1000 < 100 { next() % (2 * ELECTION_TICKS as u64) } else { next() % 3 };
        c.run_ticks(wait as u32);
        let leader = c.leaders().first().copied();
        if let Some(l) = leader.filter(|_| next() % 2 == 0 || up.len() == 5) {
            c.crash(l);
            up.remove(&l.0);
        }
        if up.len() < 3 {
            let down: Vec<u64> = (1..=5).filter(|i| !up.contains(i)).collect();
            let s = down[(next() % down.len() as u64) as usize];
            c.restart(NodeId(s));
            up.insert(s);
        }
    }
    for id in all {
        if !c.is_up(id) {
            c.restart(id);
        }
    }
    c.set_unreliable(0.0, false, seed);
    one(&mut c, "final", 5);
    c.check_logs_agree();
    let applied = c.applied(NodeId(1)).len();
    eprintln!("figure 8 seed {seed}: {applied} entries applied, {} messages", c.delivered_count);
    assert!(applied > 50, "the run made too little progress to test anything: {applied}");
}

#[test]
fn figure_8_crashes_never_commit_an_old_term_entry_by_counting() {
    for seed in 1..=4 {
        figure_8(false, seed);
    }
}

#[test]
fn figure_8_unreliable_network() {
    for seed in 1..=4 {
        figure_8(true, seed);
    }
}

#[test]
fn unreliable_agree() {
    let mut c = cluster(5);
    c.set_unreliable(0.1, true, 7);
    for iter in 1..50 {
        for j in 0..4 {
            if let Some(l) = c.leaders().first().copied() {
                let _ = c.propose(l, &format!("{}", 100 * iter + j));
            }
        }
        one(&mut c, &format!("{iter}"), 1);
    }
    c.set_unreliable(0.0, false, 7);
    one(&mut c, "100", 5);
}

/// Clients propose while nodes are randomly cut off, crashed and restarted; every value that
/// any node applied must be in the final log of every node.
fn churn(unreliable: bool, seed: u64) {
    let mut c = cluster(5);
    if unreliable {
        c.set_unreliable(0.1, true, seed);
    }
    let all = c.ids();
    let mut rng = seed;
    let mut next = move || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        rng >> 33
    };
    let mut value = 0;
    let mut down = BTreeSet::new();
    for _ in 0..40 {
        for _ in 0..3 {
            for id in connected(&c, &BTreeSet::new()) {
                if c.node(id).role() == Role::Leader {
                    value += 1;
                    let _ = c.propose(id, &format!("v{value}"));
                }
            }
        }
        c.run_ticks((next() % 7) as u32);
        let victim = next() % 5 + 1;
        match next() % 4 {
            0 => c.isolate(NodeId(victim)),
            1 => c.heal(),
            2 if down.len() < 2 => {
                c.crash(NodeId(victim));
                down.insert(victim);
            }
            _ => {
                if let Some(&d) = down.iter().next() {
                    c.restart(NodeId(d));
                    down.remove(&d);
                }
            }
        }
    }
    c.heal();
    for d in down {
        c.restart(NodeId(d));
    }
    c.set_unreliable(0.0, false, seed);
    one(&mut c, "final", 5);
    let committed: BTreeSet<String> =
        all.iter().flat_map(|id| c.applied_data(*id)).filter(|d| d != "final").collect();
    eprintln!("churn seed {seed}: {} values committed of {value} proposed", committed.len());
    assert!(committed.len() > 10, "too little progress to test anything");
    for id in &all {
        let mine: BTreeSet<String> = c.applied_data(*id).into_iter().collect();
        for v in &committed {
            assert!(mine.contains(v), "{id} lost committed value {v}");
        }
    }
    c.check_logs_agree();
}

#[test]
fn reliable_churn() {
    for seed in 1..=3 {
        churn(false, seed);
    }
}

#[test]
fn unreliable_churn() {
    for seed in 1..=3 {
        churn(true, seed);
    }
}

// ----- 3D: log compaction and InstallSnapshot (Raft §7) --------------------------------------

/// Like the lab's service snapshotting every `SnapshotInterval` entries: each running node
/// compacts its log through what it applied once `every` entries accumulated past its last
/// snapshot.
fn compact_all(c: &mut Cluster, every: u64) {
    for id in c.ids() {
        if !c.is_up(id) {
            continue;
        }
        let s = c.node(id).status();
        if s.applied.0 >= s.first_index.0 - 1 + every {
            c.compact(id, s.applied);
        }
    }
}

/// Snapshot installs seen in the trace since the last call.
fn installs(c: &mut Cluster) -> usize {
    c.take_trace().iter().filter(|l| l.contains("installed snapshot")).count()
}

/// Every node applied the same values in the same order (a follower restored from a snapshot
/// holds the snapshot's data followed by what it applied since).
fn check_applied_converge(c: &Cluster, n: usize) {
    let all = c.ids();
    let first = c.applied_data(all[0]);
    assert!(first.len() >= n, "only {} values applied", first.len());
    for id in &all[1..] {
        assert_eq!(c.applied_data(*id), first, "{id} applied something else than {}", all[0]);
    }
    c.check_logs_agree();
}

#[test]
fn snapshot_basic() {
    // Every node compacts every 10 entries while a client commits 100 values; all converge,
    // and the logs really were compacted.
    let mut c = cluster(3);
    let all = c.ids();
    check_one_leader(&mut c, &all);
    for i in 0..100 {
        one(&mut c, &format!("v{i}"), 3);
        compact_all(&mut c, 10);
    }
    check_applied_converge(&c, 100);
    for id in &all {
        assert!(c.node(*id).status().first_index.0 > 90, "{id} did not compact");
    }
}

/// The lab's `snapcommon`: in each round a follower is disconnected (or crashed) while the
/// others commit and compact past it, so on reconnection only a snapshot can bring it back.
fn snapshot_install(disconnect: bool, crash: bool, unreliable: bool, seed: u64) {
    let mut c = cluster(3);
    c.tracing = true;
    if unreliable {
        c.set_unreliable(0.1, true, seed);
    }
    let all = c.ids();
    let mut leader = check_one_leader(&mut c, &all);
    let mut installed = 0;
    let mut value = 0;
    for round in 0..8 {
        let victim = if round % 3 == 0 { leader } else { NodeId((leader.0 + round) % 3 + 1) };
        if disconnect {
            c.isolate(victim);
        }
        if crash {
            c.crash(victim);
        }
        let rest: Vec<NodeId> = all.iter().copied().filter(|id| *id != victim).collect();
        check_one_leader(&mut c, &rest);
        // Enough entries for everyone left to compact past the victim's log.
        for _ in 0..12 {
            value += 1;
            one(&mut c, &format!("v{value}"), 2);
            compact_all(&mut c, 5);
        }
        if disconnect {
            c.heal();
        }
        if crash {
            c.restart(victim);
        }
        value += 1;
        one(&mut c, &format!("v{value}"), 3);
        installed += installs(&mut c);
        compact_all(&mut c, 5);
        leader = check_one_leader(&mut c, &all);
    }
    c.set_unreliable(0.0, false, seed);
    c.heal();
    one(&mut c, "final", 3);
    check_applied_converge(&c, value as usize);
    eprintln!("snapshot_install seed {seed}: {installed} installs, {value} values");
    assert!(installed >= 4, "only {installed} snapshots installed: nothing was tested");
}

#[test]
fn snapshot_install_disconnected_follower() {
    snapshot_install(true, false, false, 1);
}

#[test]
fn snapshot_install_unreliable() {
    for seed in 1..=2 {
        snapshot_install(true, false, true, seed);
    }
}

#[test]
fn snapshot_install_crash() {
    snapshot_install(false, true, false, 1);
}

#[test]
fn snapshot_install_unreliable_crash() {
    for seed in 1..=2 {
        snapshot_install(true, true, true, seed);
    }
}

/// The lab's "snapshot all crash", roughened: nodes crash and restart at random (never more
/// than one down, so a majority can always progress), everyone compacts often; restarted nodes
/// rebuild their state machine from their snapshot plus their log.
fn random_crashes_with_compaction(unreliable: bool, seed: u64) {
    let mut c = cluster(3);
    c.tracing = true;
    if unreliable {
        c.set_unreliable(0.1, true, seed);
    }
    let mut rng = seed;
    let mut next = move || {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        rng >> 33
    };
    let mut down: Option<NodeId> = None;
    let mut installed = 0;
    for i in 0..60 {
        let expected = if down.is_some() { 2 } else { 3 };
        one(&mut c, &format!("v{i}"), expected);
        installed += installs(&mut c);
        compact_all(&mut c, 1 + next() % 7);
        match (next() % 3, down) {
            (0, None) => {
                let victim = NodeId(next() % 3 + 1);
                c.crash(victim);
                down = Some(victim);
            }
            (1, Some(d)) => {
                c.restart(d);
                down = None;
            }
            _ => {}
        }
    }
    if let Some(d) = down {
        c.restart(d);
    }
    c.set_unreliable(0.0, false, seed);
    one(&mut c, "final", 3);
    installed += installs(&mut c);
    eprintln!("random crashes seed {seed}: {installed} installs");
    check_applied_converge(&c, 60);
}

#[test]
fn snapshot_all_crash_with_random_crashes_and_compaction() {
    for seed in 1..=3 {
        random_crashes_with_compaction(false, seed);
    }
}

#[test]
fn snapshot_all_crash_unreliable() {
    for seed in 1..=3 {
        random_crashes_with_compaction(true, seed);
    }
}
