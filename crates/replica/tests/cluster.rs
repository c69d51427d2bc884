//! Three replicas over fault-injecting in-memory disks and an in-memory network: the replica
//! loop carries the core's output through storage and the state machine in the contract's
//! order, so acknowledged writes survive crashes that lose every unsynced write (S10).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use tenure_kv::{Command, PutRequest, RangeRequest, Response};
use tenure_raft::{LogIndex, LogView};
use tenure_raft::{Membership, Message, MessageBody, NodeId};
use tenure_replica::{
    Answer, ClientError, Completion, Consistency, LeaseConfig, MemberRefusal, MemberRequest,
    Output, Replica, ReplicaConfig, RequestId, SnapshotPolicy,
};
use tenure_storage::SimDisk;

mod common;

use common::{Net, Setup, members, open};

/// A net whose replicas take snapshots by `policy`.
fn with_policy(policy: SnapshotPolicy) -> Net {
    Net::with(Setup { policy, ..Setup::default() })
}

/// A net with the snapshot `policy` and the lease configuration `lease`.
fn with(policy: SnapshotPolicy, lease: LeaseConfig) -> Net {
    Net::with(Setup { policy, lease, ..Setup::default() })
}

#[test]
fn write_on_leader_is_acknowledged_after_commit_and_read_linearizably_everywhere() {
    let mut net = Net::new();
    let leader = net.leader();
    let w = net.put(leader, "k", "v1");
    net.settle();
    assert!(matches!(net.done[&w].result, Ok(Answer::Write(_))));
    for i in 1..=3 {
        let r = net.get(NodeId(i), "k", Consistency::Linearizable);
        net.settle();
        net.tick(1);
        assert_eq!(net.value(r).as_deref(), Some("v1"), "linearizable read on n{i}");
    }
}

#[test]
fn write_on_follower_is_forwarded_and_answered_on_the_follower() {
    let mut net = Net::new();
    let leader = net.leader();
    let follower = NodeId(leader.0 % 3 + 1);
    let w = net.put(follower, "k", "from-follower");
    net.settle();
    assert!(matches!(net.done[&w].result, Ok(Answer::Write(_))), "{:?}", net.done.get(&w));
}

#[test]
fn s10_acknowledged_writes_survive_crash_of_every_node_losing_unsynced_data() {
    let mut net = Net::new();
    let leader = net.leader();
    let mut acked = Vec::new();
    for i in 0..20 {
        let w = net.put(leader, &format!("k{i}"), &format!("v{i}"));
        net.settle();
        if matches!(net.done[&w].result, Ok(Answer::Write(_))) {
            acked.push(i);
        }
    }
    assert_eq!(acked.len(), 20);
    for i in 1..=3 {
        net.crash_and_restart(NodeId(i));
    }
    let leader = net.leader();
    net.tick(2);
    for i in acked {
        let r = net.get(leader, &format!("k{i}"), Consistency::Linearizable);
        net.settle();
        net.tick(1);
        assert_eq!(net.value(r), Some(format!("v{i}")));
    }
}

#[test]
fn vote_and_append_acks_wait_for_sync() {
    // Drive one follower by hand: its append acknowledgement must not leave before the sync
    // that makes the entries durable.
    let disk = SimDisk::new(9);
    let mut r = open(NodeId(2), &disk, &Setup::default());
    let mut out = Output::default();
    let entry = tenure_raft::Entry::new(tenure_raft::Term(1), tenure_raft::LogIndex(1), "x".into());
    r.step(Message {
        from: NodeId(1),
        to: NodeId(2),
        term: tenure_raft::Term(1),
        body: MessageBody::Append {
            prev: tenure_raft::EntryId::default(),
            entries: vec![entry],
            commit: tenure_raft::LogIndex(0),
        },
    });
    let (worked, ticket) = r.poll(&mut out).unwrap();
    assert!(worked);
    assert!(out.messages.is_empty(), "the acknowledgement waits for the sync");
    let ticket = ticket.expect("a sync is needed");
    // Crash before the sync completes: nothing was promised.
    let done = ticket.wait();
    r.finish_sync(done, &mut out).unwrap();
    assert!(matches!(
        out.messages[0].body,
        MessageBody::AppendResponse { result: Ok(tenure_raft::LogIndex(1)) }
    ));
}

#[test]
fn requests_without_a_leader_fail_fast_or_time_out() {
    let mut net = Net::new();
    let r = net.get(NodeId(1), "k", Consistency::Linearizable);
    assert_eq!(net.done[&r].result, Err(ClientError::NoLeader));
    let leader = net.leader();
    // Cut the leader off: its pending write can never commit and times out.
    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|i| *i != leader).collect();
    let w = net.put(leader, "k", "v");
    for o in &others {
        let removed = net.replicas.remove(o).unwrap();
        drop(removed);
    }
    net.tick(60);
    assert_eq!(net.done[&w].result, Err(ClientError::Timeout));
}

#[test]
fn serializable_read_is_served_locally() {
    let mut net = Net::new();
    let leader = net.leader();
    net.put(leader, "k", "v");
    net.settle();
    net.tick(1);
    let follower = NodeId(leader.0 % 3 + 1);
    let r = net.get(follower, "k", Consistency::Serializable);
    assert_eq!(net.value(r).as_deref(), Some("v"));
}

// ----- Snapshots (S11) ------------------------------------------------------------------------

fn small_snapshots() -> SnapshotPolicy {
    SnapshotPolicy { entries: 10, bytes: 0, catchup_entries: 5 }
}

fn put_all(net: &mut Net, on: NodeId, range: std::ops::Range<u32>) {
    for i in range {
        let w = net.put(on, &format!("k{i}"), &format!("v{i}"));
        net.settle();
        assert!(matches!(net.done[&w].result, Ok(Answer::Write(_))), "put k{i}");
    }
}

#[test]
fn s11_follower_behind_the_compacted_log_catches_up_from_a_snapshot() {
    let mut net = with_policy(small_snapshots());
    let leader = net.leader();
    let lagging = NodeId(leader.0 % 3 + 1);
    net.isolated.insert(lagging);
    put_all(&mut net, leader, 0..60);
    let first = net.replicas[&leader].node().log_view().first_index();
    assert!(first > LogIndex(20), "the leader compacted its log (first index {first})");
    assert!(net.replicas[&leader].snapshot_stats().taken >= 5);
    net.isolated.clear();
    net.tick(5);
    let r = &net.replicas[&lagging];
    assert_eq!(r.snapshot_stats().installed, 1, "caught up by exactly one snapshot");
    assert_eq!(r.kv(), net.replicas[&leader].kv(), "same state machine as the leader");
    // And it follows by appends afterwards.
    put_all(&mut net, leader, 60..63);
    net.tick(2);
    assert_eq!(net.replicas[&lagging].kv(), net.replicas[&leader].kv());
    assert_eq!(net.replicas[&lagging].snapshot_stats().installed, 1);
}

#[test]
fn s11_a_follower_within_the_catchup_window_is_served_from_the_log() {
    let policy = SnapshotPolicy { entries: 10, bytes: 0, catchup_entries: 50 };
    let mut net = with_policy(policy);
    let leader = net.leader();
    let lagging = NodeId(leader.0 % 3 + 1);
    net.isolated.insert(lagging);
    put_all(&mut net, leader, 0..30);
    assert!(net.replicas[&leader].snapshot_stats().taken >= 2, "snapshots were taken");
    net.isolated.clear();
    net.tick(5);
    assert_eq!(net.replicas[&lagging].snapshot_stats().installed, 0, "no snapshot needed");
    assert_eq!(net.replicas[&lagging].kv(), net.replicas[&leader].kv());
}

#[test]
fn s11_restart_from_snapshot_plus_log_tail() {
    let mut net = with_policy(small_snapshots());
    let leader = net.leader();
    put_all(&mut net, leader, 0..37);
    net.tick(2);
    let before: Vec<_> = net.replicas.values().map(|r| r.kv().clone()).collect();
    for i in 1..=3 {
        net.crash_and_restart(NodeId(i));
        let r = &net.replicas[&NodeId(i)];
        assert!(r.snapshot_stats().index >= 30, "restarted from the snapshot");
        assert!(r.node().log_view().first_index() > LogIndex(1), "log stays compacted");
    }
    let leader = net.leader();
    net.tick(3);
    for (i, r) in net.replicas.values().enumerate() {
        assert_eq!(r.kv().key_count(), before[i].key_count());
    }
    let g = net.get(leader, "k36", Consistency::Linearizable);
    net.settle();
    net.tick(1);
    assert_eq!(net.value(g).as_deref(), Some("v36"));
}

#[test]
fn s11_crash_after_receiving_a_snapshot_before_installing_it() {
    let mut net = with_policy(small_snapshots());
    let leader = net.leader();
    let lagging = NodeId(leader.0 % 3 + 1);
    net.isolated.insert(lagging);
    put_all(&mut net, leader, 0..40);
    // The data arrives and is durable, but the node crashes before stepping the message.
    let msg = Message {
        from: leader,
        to: lagging,
        term: net.replicas[&leader].node().term(),
        body: MessageBody::Heartbeat { commit: LogIndex(0), read_round: 0 },
    };
    net.replicas[&leader].copy_snapshot_to(&net.replicas[&lagging], &msg).expect("copy");
    net.crash_and_restart(lagging);
    let r = &net.replicas[&lagging];
    assert!(r.snapshot_stats().index >= 30, "restart installs the received snapshot");
    net.isolated.clear();
    net.tick(5);
    assert_eq!(net.replicas[&lagging].kv(), net.replicas[&leader].kv());
}

#[test]
fn a_snapshot_message_without_its_data_is_dropped_not_fatal() {
    let mut net = with_policy(small_snapshots());
    let leader = net.leader();
    put_all(&mut net, leader, 0..5);
    let follower = NodeId(leader.0 % 3 + 1);
    let meta = tenure_raft::SnapshotMeta {
        last_included: tenure_raft::EntryId::new(tenure_raft::Term(1), LogIndex(500)),
        membership: members(),
    };
    let term = net.replicas[&leader].node().term();
    let bogus = Message { from: leader, to: follower, term, body: MessageBody::Snapshot { meta } };
    net.replicas.get_mut(&follower).unwrap().step(bogus);
    net.settle();
    net.tick(2);
    put_all(&mut net, leader, 5..8);
    assert_eq!(net.replicas[&follower].kv(), net.replicas[&leader].kv());
    assert_eq!(net.replicas[&follower].snapshot_stats().installed, 0);
}

/// Request ids restart with the process, so an entry a replica's previous run proposed (here a
/// forwarded put that reaches the leader only after the proposer restarted) carries the same
/// request id as a request of the new run. The incarnation in the entry keeps it from
/// answering that request: the new request is answered by its own entry, with its own
/// revision.
#[test]
fn an_entry_proposed_by_a_previous_run_never_answers_a_request_of_this_run() {
    let mut net = Net::new();
    let leader = net.leader();
    let f = if leader == NodeId(1) { NodeId(2) } else { NodeId(1) };
    net.tick(2);
    // The previous run forwards a put as request 7; its Propose message is held back.
    net.next_request = 7;
    net.put(f, "old", "x");
    let mut out = Output::default();
    net.replicas.get_mut(&f).unwrap().run_until_idle(&mut out).expect("loop");
    let held: Vec<Message> = out.messages;
    assert!(
        held.iter().any(|m| matches!(m.body, MessageBody::Propose { .. })),
        "the follower forwards the put"
    );
    net.crash_and_restart(f);
    net.tick(3);
    // The new run's first request gets the same id.
    net.next_request = 7;
    let new = net.put(f, "new", "y");
    // The old proposal reaches the leader first, so its entry is applied first on `f`.
    for m in held.into_iter().rev() {
        net.wire.push_front(m);
    }
    net.settle();
    net.tick(2);
    let answered = match &net.done[&new].result {
        Ok(Answer::Write(Response::Put(r))) => r.revision,
        other => panic!("the new put is not answered as a put: {other:?}"),
    };
    let read = net.get(leader, "new", Consistency::Serializable);
    let written = match &net.done[&read].result {
        Ok(Answer::Read(r)) => r.kvs.first().expect("the new put was applied").mod_revision,
        other => panic!("not a read answer: {other:?}"),
    };
    let old_read = net.get(leader, "old", Consistency::Serializable);
    assert!(
        matches!(&net.done[&old_read].result, Ok(Answer::Read(r)) if r.kvs.len() == 1),
        "the old run's put was committed too"
    );
    assert_eq!(answered, written, "the new request is answered with its own entry's revision");
}

// ----- Leases (issue 13) ----------------------------------------------------------------------
// One tick is 10 ms here; the default promotion extension is 1,000 ms (100 ticks).

/// Grants lease `id` with `ttl_s` seconds on `on` and attaches key `key` to it.
fn grant_with_key(net: &mut Net, on: NodeId, id: i64, ttl_s: i64, key: &str) {
    let g = net.exec(on, Command::LeaseGrant(tenure_kv::LeaseGrantRequest { id, ttl: ttl_s }));
    net.settle();
    assert!(matches!(net.done[&g].result, Ok(Answer::Write(_))), "{:?}", net.done.get(&g));
    let mut put = PutRequest::new(key.to_string(), "v".to_string());
    put.lease = id;
    let w = net.exec(on, Command::Put(put));
    net.settle();
    assert!(matches!(net.done[&w].result, Ok(Answer::Write(_))), "{:?}", net.done.get(&w));
}

/// Whether every running replica still holds `key` (they must agree).
fn held_everywhere(net: &Net, key: &str) -> bool {
    let held: BTreeSet<bool> = net
        .replicas
        .values()
        .map(|r| !r.kv().range(&RangeRequest::single(key.to_string())).unwrap().kvs.is_empty())
        .collect();
    assert_eq!(held.len(), 1, "replicas disagree about {key}");
    held.contains(&true)
}

/// Ticks until `key` is gone everywhere; returns the ticks it took (panics after `max`).
fn ticks_until_gone(net: &mut Net, key: &str, max: u32) -> u32 {
    for t in 0..max {
        if !held_everywhere(net, key) {
            return t;
        }
        net.tick(1);
    }
    panic!("{key} still held after {max} ticks");
}

#[test]
fn a_lease_not_renewed_expires_by_the_leaders_clock_and_every_replica_deletes_its_keys_at_one_revision()
 {
    let mut net = Net::new();
    let leader = net.leader();
    net.tick(120); // past the promotion extension
    grant_with_key(&mut net, leader, 1, 1, "k");
    let remaining = net.replicas[&leader].lease_remaining_ms(1).unwrap();
    assert!((900..=1000).contains(&remaining), "{remaining}");
    net.tick(90);
    assert!(held_everywhere(&net, "k"), "not before its TTL");
    let t = ticks_until_gone(&mut net, "k", 30);
    assert!(t <= 15, "expired {t} ticks after 900 ms of a 1,000 ms TTL");
    let revisions: BTreeSet<i64> = net.replicas.values().map(|r| r.kv().revision()).collect();
    assert_eq!(revisions.len(), 1, "one revision everywhere: {revisions:?}");
    assert!(net.replicas.values().all(|r| r.kv().lease(1).is_none()));
    assert_eq!(net.replicas[&leader].leases_expired(), 1);
    assert_eq!(net.replicas[&leader].lease_remaining_ms(1), None);
}

#[test]
fn renewals_through_a_follower_keep_a_lease_alive_past_its_ttl() {
    let mut net = Net::new();
    let leader = net.leader();
    net.tick(120);
    let follower = NodeId(leader.0 % 3 + 1);
    grant_with_key(&mut net, follower, 1, 1, "k");
    for _ in 0..10 {
        net.tick(40);
        let r = net.exec(follower, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id: 1 }));
        net.settle();
        match &net.done[&r].result {
            Ok(Answer::Write(Response::LeaseRenew(r))) => assert_eq!(r.ttl, 1),
            other => panic!("renewal failed: {other:?}"),
        }
        assert!(held_everywhere(&net, "k"));
    }
    let t = ticks_until_gone(&mut net, "k", 130);
    assert!(t >= 95, "expired {t} ticks after the last renewal of a 1,000 ms lease");
}

#[test]
fn etcd_13508_a_leader_change_neither_resets_the_remaining_ttl_nor_expires_before_it() {
    // etcd issue 13508: a new leader restarted every lease's TTL, so leases never expired
    // while leaders kept changing. Here the followers track the deadline from when they
    // applied the grant; the new leader adds only the election-timeout extension.
    let mut net = Net::new();
    let old = net.leader();
    net.tick(120);
    grant_with_key(&mut net, old, 1, 3, "k");
    net.tick(150);
    net.replicas.remove(&old);
    let new = net.leader();
    assert_ne!(new, old);
    net.tick(1);
    let remaining = net.replicas[&new].lease_remaining_ms(1).unwrap();
    // 3,000 - ~1,500 elapsed + 1,000 extension.
    assert!((2_300..=2_600).contains(&remaining), "remaining {remaining} ms on the new leader");
    let t = ticks_until_gone(&mut net, "k", 400);
    assert!((200..=280).contains(&t), "expired {t} ticks after the change");
}

/// Renews lease `id` on `on`; returns the answer's TTL and whether it named a log entry.
fn renew(net: &mut Net, on: NodeId, id: i64) -> (i64, bool) {
    let r = net.exec(on, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id }));
    net.settle();
    match &net.done[&r] {
        Completion { result: Ok(Answer::Write(Response::LeaseRenew(a))), entry, .. } => {
            (a.ttl, entry.is_some())
        }
        other => panic!("renewal failed: {other:?}"),
    }
}

#[test]
fn dissertation_6_4_the_leader_renews_a_renewed_lease_after_a_heartbeat_round_without_the_log() {
    let mut net = Net::new();
    let leader = net.leader();
    net.tick(120);
    grant_with_key(&mut net, leader, 1, 1, "k");
    // Only the log knows a granted lease's deadline exactly, so the first renewal is an
    // entry; after it, the leader may renew without one.
    assert_eq!(renew(&mut net, leader, 1), (1, true));
    let last = net.replicas[&leader].node().log_view().last_index();
    assert_eq!(renew(&mut net, leader, 1), (1, false));
    assert_eq!(net.replicas[&leader].node().log_view().last_index(), last, "no entry");
    assert_eq!(net.replicas[&leader].leases_renewed_locally(), 1);
    // The next tick records it (a LeaseRefresh entry), and the followers' deadlines follow.
    net.tick(30);
    assert!(net.replicas[&leader].node().log_view().last_index() > last, "recorded");
    for r in net.replicas.values() {
        let left = r.lease_remaining_ms(1).unwrap();
        assert!((650..=1000).contains(&left), "{left} ms left on n{}", r.id().0);
    }
    // Renewed on the leader alone, the lease outlives its TTL many times over, and expires
    // once the renewals stop, as after a renewal through the log.
    renew_without_the_log_then_let_go(&mut net, leader);
}

/// Renews lease 1 (TTL 1 s, key `k`) through `on` ten times, 400 ms apart, each answered
/// without an entry, then stops: the key stays until then and is gone a TTL later.
fn renew_without_the_log_then_let_go(net: &mut Net, on: NodeId) {
    for _ in 0..10 {
        net.tick(40);
        assert_eq!(renew(net, on, 1), (1, false));
        assert!(held_everywhere(net, "k"));
    }
    let t = ticks_until_gone(net, "k", 130);
    assert!(t >= 95, "expired {t} ticks after the last renewal of a 1,000 ms lease");
}

#[test]
fn a_checkpointed_lease_and_a_lease_past_its_deadline_are_renewed_through_the_log() {
    let lease = LeaseConfig { checkpoint_interval_ms: 1_000, ..LeaseConfig::default() };
    let mut net = with(SnapshotPolicy::default(), lease);
    let leader = net.leader();
    net.tick(120);
    grant_with_key(&mut net, leader, 1, 30, "k");
    assert_eq!(renew(&mut net, leader, 1), (30, true));
    net.tick(300);
    assert!(net.replicas[&leader].kv().lease(1).unwrap().remaining_ms.is_some(), "checkpointed");
    // The log now knows the time left: a renewal must reach it, or a new leader would use
    // the checkpoint and cut the renewal short.
    assert_eq!(renew(&mut net, leader, 1), (30, true));
    assert_eq!(renew(&mut net, leader, 1), (30, false));
    // A lease unknown here is "not found", as through the log.
    let r = net.exec(leader, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id: 2 }));
    net.settle();
    assert_eq!(net.done[&r].result, Err(ClientError::Kv(tenure_kv::Error::LeaseNotFound)));
}

#[test]
fn a_new_leader_gives_a_lease_renewed_without_the_log_its_whole_ttl_from_its_promotion() {
    // etcd's lessor does the same at promotion (`Promote`): the old leader may have renewed
    // the lease just before it was replaced, and no entry says so.
    let mut net = Net::new();
    let old = net.leader();
    net.tick(120);
    grant_with_key(&mut net, old, 1, 3, "k");
    assert_eq!(renew(&mut net, old, 1), (3, true));
    net.tick(150);
    // Renewed without the log, and the old leader gone before its next tick records it.
    assert_eq!(renew(&mut net, old, 1), (3, false));
    net.replicas.remove(&old);
    let new = net.leader();
    net.tick(1);
    let left = net.replicas[&new].lease_remaining_ms(1).unwrap();
    // Its own copy said about 3,000 - 1,500 ms; it gives 3,000 ms from its promotion plus the
    // 1,000 ms extension.
    assert!(left >= 3_000, "{left} ms left on the new leader: the renewal could be cut short");
    assert!(left <= 4_000, "{left}");
    let t = ticks_until_gone(&mut net, "k", 500);
    assert!(t >= 290, "expired {t} ticks after the promotion");
}

#[test]
fn a_follower_forwards_a_renewal_to_the_leader_which_renews_it_without_the_log() {
    let mut net = Net::new();
    let leader = net.leader();
    net.tick(120);
    let follower = NodeId(leader.0 % 3 + 1);
    grant_with_key(&mut net, leader, 1, 1, "k");
    // The first renewal of a granted lease is an entry, wherever it is sent.
    assert_eq!(renew(&mut net, follower, 1), (1, true));
    let last = net.replicas[&leader].node().log_view().last_index();
    assert_eq!(renew(&mut net, follower, 1), (1, false));
    assert_eq!(net.replicas[&leader].node().log_view().last_index(), last, "no entry");
    assert_eq!(net.replicas[&leader].leases_renewed_locally(), 1, "renewed by the leader");
    assert_eq!(net.replicas[&follower].leases_renewed_locally(), 0);
    // Kept alive through the follower alone, then let go.
    renew_without_the_log_then_let_go(&mut net, follower);
    // A lease that is gone is "not found", as through the log.
    let r = net.exec(follower, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id: 1 }));
    net.settle();
    assert_eq!(net.done[&r].result, Err(ClientError::Kv(tenure_kv::Error::LeaseNotFound)));
}

/// Elects a leader, grants lease 1 (`ttl` seconds, key `k`) and renews it once through a
/// follower of the `voters` (an entry: the first renewal of a granted lease goes through the
/// log). Returns the leader and that follower.
fn granted_and_renewed_through_a_follower(
    net: &mut Net,
    voters: u64,
    ttl: i64,
) -> (NodeId, NodeId) {
    let leader = net.leader();
    net.tick(120);
    let follower = NodeId(leader.0 % voters + 1);
    grant_with_key(net, leader, 1, ttl, "k");
    assert_eq!(renew(net, follower, 1), (ttl, true));
    (leader, follower)
}

#[test]
fn a_forwarded_renewal_needs_no_heartbeat_round_in_three_voters() {
    // The follower's message, written in the leader's term, and the leader are a quorum of
    // three voters: the confirmation a heartbeat round would give (raft's `quorum_with`).
    let mut net = Net::new();
    let (leader, follower) = granted_and_renewed_through_a_follower(&mut net, 3, 1);
    net.drop_heartbeats = true;
    let last = net.replicas[&leader].node().log_view().last_index();
    assert_eq!(renew(&mut net, follower, 1), (1, false), "answered with no heartbeat delivered");
    assert_eq!(net.replicas[&leader].node().log_view().last_index(), last, "no entry");
    assert_eq!(net.replicas[&leader].renewals_without_round(), 1);
    // The leader's own client still needs a round: without heartbeats it waits.
    let r = net.exec(leader, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id: 1 }));
    net.settle();
    assert!(!net.done.contains_key(&r), "the leader alone is no quorum");
    net.drop_heartbeats = false;
    net.tick(2);
    net.settle();
    assert!(matches!(&net.done[&r].result, Ok(Answer::Write(Response::LeaseRenew(_)))));
    assert_eq!(net.replicas[&leader].renewals_without_round(), 1);
    // Kept alive through the follower alone, without rounds, then let go.
    net.drop_heartbeats = true;
    for _ in 0..5 {
        assert_eq!(renew(&mut net, follower, 1), (1, false));
    }
    net.drop_heartbeats = false;
    renew_without_the_log_then_let_go(&mut net, follower);
    assert!(net.replicas[&leader].renewals_without_round() >= 16);
}

#[test]
fn a_leader_cut_off_with_one_follower_of_five_never_answers_its_renewals_without_a_round() {
    // Two of five voters are no quorum: the other three may have elected a leader that will
    // expire the lease, so the follower's message is no proof of leadership.
    let mut net = Net::with(Setup { voters: Some(5), ..Setup::default() });
    let (leader, follower) = granted_and_renewed_through_a_follower(&mut net, 5, 5);
    assert_eq!(renew(&mut net, follower, 1), (5, false), "after a heartbeat round");
    assert_eq!(net.replicas[&leader].renewals_without_round(), 0);
    net.side = [leader, follower].into();
    let r = net.exec(follower, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id: 1 }));
    net.settle();
    assert!(!net.done.contains_key(&r), "answered by a leader cut off with one of five");
    assert_eq!(net.replicas[&leader].renewals_without_round(), 0);
}

#[test]
fn a_forwarded_renewal_whose_messages_are_lost_goes_through_the_log_after_an_election_timeout() {
    let mut net = Net::new();
    let (leader, follower) = granted_and_renewed_through_a_follower(&mut net, 3, 5);
    net.drop_app = true;
    let r = net.exec(follower, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id: 1 }));
    net.settle();
    assert!(!net.done.contains_key(&r), "waits for the leader's answer");
    net.tick(9);
    assert!(!net.done.contains_key(&r), "still within the election timeout");
    net.tick(3);
    net.settle();
    match &net.done[&r] {
        Completion { result: Ok(Answer::Write(Response::LeaseRenew(a))), entry, .. } => {
            assert_eq!(a.ttl, 5);
            assert!(entry.is_some(), "renewed through the log");
        }
        other => panic!("renewal failed: {other:?}"),
    }
    assert_eq!(net.replicas[&leader].leases_renewed_locally(), 0);
}

#[test]
fn a_cluster_restarted_continues_from_the_checkpointed_remaining_time() {
    let lease = LeaseConfig { checkpoint_interval_ms: 1_000, ..LeaseConfig::default() };
    let mut net = with(SnapshotPolicy::default(), lease);
    let leader = net.leader();
    net.tick(120);
    grant_with_key(&mut net, leader, 1, 5, "k");
    net.tick(320);
    let checkpointed = net.replicas[&leader].kv().lease(1).unwrap().remaining_ms;
    let checkpointed = checkpointed.expect("a checkpoint after three intervals");
    assert!((1_500..=3_100).contains(&checkpointed), "{checkpointed}");
    for i in 1..=3 {
        net.crash_and_restart(NodeId(i));
    }
    // The restarted replicas hold the key again once they have re-applied the log.
    let mut replayed = 0;
    while !held_everywhere(&net, "k") {
        replayed += 1;
        assert!(replayed < 100, "the restarted cluster did not re-apply the log");
        net.tick(1);
    }
    // From the full TTL it would be 5,000 ms plus the extension; from the checkpoint about
    // 2,000 ms plus the extension (the rest of a 5 s lease granted 3.2 s before the crash).
    let t = ticks_until_gone(&mut net, "k", 800) + replayed;
    assert!(t <= 400, "expired {t} ticks after the restart; the checkpoint was not used");
    assert!(t >= 150, "expired {t} ticks after the restart: sooner than the time it had left");
}

#[test]
fn a_snapshot_carries_leases_and_their_checkpoints_to_a_follower_that_was_behind() {
    let lease = LeaseConfig { checkpoint_interval_ms: 500, ..LeaseConfig::default() };
    let mut net = with(small_snapshots(), lease);
    let leader = net.leader();
    net.tick(120);
    let behind = NodeId(leader.0 % 3 + 1);
    net.isolated.insert(behind);
    grant_with_key(&mut net, leader, 1, 4, "k");
    put_all(&mut net, leader, 0..30);
    net.tick(100);
    net.isolated.remove(&behind);
    net.tick(20);
    let r = &net.replicas[&behind];
    assert!(r.snapshot_stats().installed >= 1, "caught up by snapshot");
    assert!(r.kv().lease(1).is_some());
    let remaining = r.lease_remaining_ms(1).unwrap();
    assert!(remaining < 4_000, "{remaining}: measured from the checkpoint, not the full TTL");
    let t = ticks_until_gone(&mut net, "k", 400);
    assert!(t <= 300, "{t}");
}

/// etcd issue 13690: a keep-alive sent right after a grant was acknowledged could reach a
/// member that had not applied the grant yet and be answered "lease not found". Here a
/// renewal is a log entry: it is ordered after the grant it follows wherever it is sent.
#[test]
fn etcd_13690_a_renewal_sent_to_a_follower_right_after_the_grant_is_acknowledged_finds_the_lease() {
    let mut net = Net::new();
    let leader = net.leader();
    net.tick(5);
    let follower = NodeId(leader.0 % 3 + 1);
    let g = net.exec(leader, Command::LeaseGrant(tenure_kv::LeaseGrantRequest { id: 9, ttl: 5 }));
    // Run the cluster one round at a time, only until the leader has answered the grant.
    for _ in 0..50 {
        for r in net.replicas.values_mut() {
            let mut out = Output::default();
            r.run_until_idle(&mut out).expect("replica loop");
            net.wire.extend(out.messages);
            for c in out.completions {
                net.done.insert(c.id, c);
            }
        }
        if net.done.contains_key(&g) {
            break;
        }
        let round: Vec<Message> = net.wire.drain(..).collect();
        for m in round {
            net.deliver(m);
        }
    }
    assert!(matches!(net.done[&g].result, Ok(Answer::Write(_))), "{:?}", net.done.get(&g));
    assert!(
        net.replicas[&follower].kv().lease(9).is_none(),
        "the follower has not applied the grant yet (the race is set up)"
    );
    let r = net.exec(follower, Command::LeaseRenew(tenure_kv::LeaseRenewRequest { id: 9 }));
    net.settle();
    match &net.done[&r].result {
        Ok(Answer::Write(Response::LeaseRenew(resp))) => assert_eq!((resp.id, resp.ttl), (9, 5)),
        other => panic!("the renewal did not find the lease: {other:?}"),
    }
}

#[test]
fn a_read_barrier_on_a_follower_completes_once_it_has_applied_the_acknowledged_write() {
    let mut net = Net::new();
    let leader = net.leader();
    let follower = NodeId(leader.0 % 3 + 1);
    let w = net.put(leader, "k", "v");
    net.settle();
    let Ok(Answer::Write(Response::Put(put))) = &net.done[&w].result else {
        panic!("{:?}", net.done.get(&w))
    };
    let revision = put.revision;
    let id = RequestId(net.next_request);
    net.next_request += 1;
    let mut out = Output::default();
    net.replicas.get_mut(&follower).unwrap().read_barrier(id, &mut out);
    net.absorb(out);
    net.settle();
    net.tick(1);
    match &net.done[&id].result {
        Ok(Answer::Read(r)) => {
            assert!(r.kvs.is_empty(), "a barrier reads nothing");
            assert!(r.revision >= revision, "confirmed at or after the write");
        }
        other => panic!("{other:?}"),
    }
    // What the caller reads after the barrier holds the write.
    let view = net.replicas[&follower].kv().read_view();
    assert_eq!(view.range(&RangeRequest::single("k")).unwrap().kvs.len(), 1);
}

// ----- Membership changes (dissertation chapter 4; etcd's Cluster API) ------------------------

impl Net {
    fn change_members(&mut self, on: NodeId, request: MemberRequest) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let mut out = Output::default();
        self.replicas.get_mut(&on).unwrap().change_members(id, request, &mut out);
        self.absorb(out);
        id
    }

    /// Starts a member with an empty disk, as `--initial-cluster-state existing` does: its
    /// configuration is the cluster's current one, which names it (the server fetches it from
    /// a member before it starts).
    fn join(&mut self, id: NodeId, current: Membership) {
        let disk = SimDisk::new(id.0);
        let mut cfg = ReplicaConfig::new(id, 100 + id.0);
        cfg.snapshot = self.setup.policy.clone();
        let r = Replica::open(cfg, Arc::new(disk.clone()), Path::new("/data"), current).unwrap();
        self.replicas.insert(id, r);
        self.disks.insert(id, disk);
    }

    fn membership_answer(&self, id: RequestId) -> Membership {
        match &self.done.get(&id).expect("completed").result {
            Ok(Answer::Membership(m)) => m.clone(),
            other => panic!("not a membership answer: {other:?}"),
        }
    }

    fn refusal(&self, id: RequestId) -> MemberRefusal {
        match &self.done.get(&id).expect("completed").result {
            Err(ClientError::Member(r)) => r.clone(),
            other => panic!("not a refusal: {other:?}"),
        }
    }
}

fn add(member_id: u64, url: &str, learner: bool) -> MemberRequest {
    MemberRequest::Add { member_id, peer_urls: vec![url.to_string()], learner }
}

#[test]
fn s4_2_learner_added_catches_up_is_promoted_and_the_member_table_follows_the_configuration() {
    let mut net = with_policy(small_snapshots());
    let leader = net.leader();
    put_all(&mut net, leader, 0..40);
    let a = net.change_members(leader, add(4, "http://n4:2380", true));
    net.settle();
    net.tick(2);
    let m = net.membership_answer(a);
    assert!(m.learners.contains(&NodeId(4)) && !m.is_voter(NodeId(4)));
    // Every member's table has the new member's peer URLs once it applied the change.
    for r in net.replicas.values() {
        assert_eq!(r.kv().member_peer_urls(4), Some(&["http://n4:2380".to_string()][..]));
    }
    // A second learner is refused while one is there (etcd's default limit of one).
    let second = net.change_members(leader, add(5, "http://n5:2380", true));
    assert_eq!(net.refusal(second), MemberRefusal::TooManyLearners);
    // Its peer URLs or its id cannot be reused.
    let dup_url = net.change_members(leader, add(6, "http://n4:2380", false));
    assert_eq!(net.refusal(dup_url), MemberRefusal::Table(tenure_kv::MemberError::PeerUrlExists));
    let dup_id = net.change_members(leader, add(4, "http://x:2380", false));
    assert_eq!(net.refusal(dup_id), MemberRefusal::Exists);
    // The learner starts empty, is sent a snapshot and the log, and catches up.
    net.join(NodeId(4), m);
    net.tick(10);
    put_all(&mut net, leader, 40..45);
    net.tick(3);
    let r = net.get(NodeId(4), "k44", Consistency::Serializable);
    assert_eq!(net.value(r).as_deref(), Some("v44"), "the learner has the data");
    // A caught-up learner is promoted; the request completes once the joint configuration is
    // left (the core leaves it by itself).
    let p = net.change_members(leader, MemberRequest::Promote { member_id: 4 });
    net.tick(5);
    let m = net.membership_answer(p);
    assert!(m.is_voter(NodeId(4)) && !m.voters.is_joint() && m.learners.is_empty());
    // Promoting a voter is refused with etcd's reason.
    let again = net.change_members(leader, MemberRequest::Promote { member_id: 4 });
    assert_eq!(net.refusal(again), MemberRefusal::NotLearner);
    // Writes keep committing with four voters.
    let w = net.put(leader, "after", "promote");
    net.settle();
    net.tick(1);
    assert!(matches!(net.done[&w].result, Ok(Answer::Write(_))));
}

#[test]
fn s4_2_2_a_removed_leader_steps_down_its_id_is_retired_and_the_rest_elect_a_new_leader() {
    let mut net = Net::new();
    let leader = net.leader();
    let r = net.change_members(leader, MemberRequest::Remove { member_id: leader.0 });
    net.tick(5);
    let m = net.membership_answer(r);
    assert!(!m.contains(leader) && m.voters.incoming.voters().len() == 2);
    assert!(net.replicas[&leader].is_removed(), "the removed leader knows it");
    for r in net.replicas.values() {
        assert!(r.kv().is_member_removed(leader.0));
    }
    // The removed node stops; the two others elect a leader among themselves and commit.
    net.replicas.remove(&leader);
    let new_leader = net.leader();
    assert_ne!(new_leader, leader);
    let w = net.put(new_leader, "k", "v");
    net.settle();
    net.tick(1);
    assert!(matches!(net.done[&w].result, Ok(Answer::Write(_))));
    // The retired id can never come back.
    let back = net.change_members(new_leader, add(leader.0, "http://new:2380", false));
    assert_eq!(net.refusal(back), MemberRefusal::Table(tenure_kv::MemberError::IdRemoved));
}

#[test]
fn membership_changes_are_refused_on_a_follower_and_when_they_would_lose_quorum() {
    let mut net = Net::new();
    let leader = net.leader();
    let follower = NodeId(leader.0 % 3 + 1);
    let f = net.change_members(follower, MemberRequest::Remove { member_id: leader.0 });
    assert!(matches!(net.done[&f].result, Err(ClientError::NotLeader { leader_hint: Some(_) })));
    // With one follower cut off, removing the other would leave one active voter of two.
    let other = NodeId(6 - leader.0 - follower.0);
    net.isolated.insert(other);
    net.tick(25);
    let leader = net.leader();
    assert!(leader != other);
    let r = net.change_members(leader, MemberRequest::Remove { member_id: follower.0 });
    assert_eq!(net.refusal(r), MemberRefusal::Unhealthy);
    // Adding a voter that has not started would leave 2 active of 4 (a quorum is 3).
    let a = net.change_members(leader, add(9, "http://n9:2380", false));
    assert_eq!(net.refusal(a), MemberRefusal::NotEnoughStarted);
    let unknown = net.change_members(leader, MemberRequest::Remove { member_id: 77 });
    assert_eq!(net.refusal(unknown), MemberRefusal::NotFound);
}

#[test]
fn a_restarted_member_keeps_the_changed_configuration_and_member_table() {
    let mut net = Net::new();
    let leader = net.leader();
    let a = net.change_members(leader, add(4, "http://n4:2380", true));
    net.tick(3);
    net.membership_answer(a);
    let follower = NodeId(leader.0 % 3 + 1);
    net.crash_and_restart(follower);
    let r = &net.replicas[&follower];
    assert!(r.membership().learners.contains(&NodeId(4)), "{:?}", r.membership());
    net.tick(3);
    let r = &net.replicas[&follower];
    assert_eq!(r.kv().member_peer_urls(4), Some(&["http://n4:2380".to_string()][..]));
}

#[test]
fn s3_10_leadership_moves_to_a_member_that_joined_and_was_promoted_and_everyone_keeps_it() {
    let mut net = Net::new();
    let leader = net.leader();
    let a = net.change_members(leader, add(4, "http://n4:2380", true));
    net.tick(3);
    let m = net.membership_answer(a);
    net.join(NodeId(4), m);
    net.tick(10);
    let p = net.change_members(leader, MemberRequest::Promote { member_id: 4 });
    net.tick(5);
    assert!(net.membership_answer(p).is_voter(NodeId(4)));
    net.replicas.get_mut(&leader).unwrap().transfer_leadership(NodeId(4)).unwrap();
    net.tick(10);
    assert!(net.replicas[&NodeId(4)].is_leader(), "the transfer completed");
    for (id, r) in &net.replicas {
        assert!(r.membership().is_voter(NodeId(4)), "n{id} dropped n4: {:?}", r.membership());
        assert!(!r.is_removed(), "{id} takes itself for removed");
    }
}
