//! Safety checkers that watch the world as it runs. Each takes observations (plain values, not
//! the world), so each can be fed known-bad input in its own test.
//!
//! - [`Checkers::on_leader`]: at most one leader per term (S2, Raft §5.2 Election Safety), and
//!   a new leader holds every entry committed so far (Leader Completeness, §5.4).
//! - [`Checkers::on_leader_log`]: a leader never overwrites or deletes its entries
//!   (Leader Append-Only, §5.3).
//! - [`Checkers::on_logs`]: two logs holding an entry with the same index and term agree on
//!   every entry up to it (Log Matching, §5.3).
//! - [`Checkers::on_apply`]: no two nodes apply different entries at one index (State Machine
//!   Safety, §5.4.3), and a node applies only what it knows committed.
//! - [`Checkers::on_acknowledged`] / [`Checkers::check_final`]: nothing acknowledged to a
//!   client is ever lost, across crashes (an entry compacted into a snapshot is not lost: the
//!   snapshot checker vouches for it).
//! - [`Checkers::on_snapshot`]: every snapshot taken, installed or restarted from covers only
//!   committed entries (its last entry is one some node applied, at or below the highest commit
//!   index a leader reached), and the state it holds is the state every other node had after
//!   applying the same prefix (Raft §7: a snapshot is the state machine at a committed index).
//! - [`check_answer_source`]: a client's write is answered from its own entry: the entry the
//!   answer names carries the client's session tag (client id and sequence number). An entry
//!   proposed by an earlier run of the same node under a request id the new run reuses must
//!   never answer (see `ReplicaConfig::incarnation`).
//! - [`Checkers::check_final_states`]: at the end, nodes that applied the same prefix hold the
//!   same whole state (sessions and leases too, not only keys), and it is the state of any
//!   snapshot taken at that index, however each node got there (applying, installing,
//!   restarting).

use std::collections::BTreeMap;

use tenure_raft::{EntryId, LogIndex, NodeId, Term};

/// A broken safety property, with what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which property.
    pub property: &'static str,
    /// What was observed.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// What checkers need to know of an entry: its id and a digest of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySeen {
    /// Term and index.
    pub id: EntryId,
    /// A digest of kind and payload.
    pub digest: u64,
}

/// A digest of an entry's kind and payload (FNV-1a; collisions are irrelevant at this scale).
pub fn digest(kind: u8, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(kind);
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A digest of a state machine's whole state, from its snapshot encoding: two stores that
/// applied the same entries write identical snapshots.
pub fn state_digest(store: &tenure_kv::Store) -> u64 {
    let mut bytes = Vec::new();
    store.write_snapshot(&mut bytes).expect("writing to memory cannot fail");
    digest(0, &bytes)
}

/// All the online checkers of one run.
#[derive(Default)]
pub struct Checkers {
    leaders: BTreeMap<Term, NodeId>,
    /// What each index was applied as, by whichever node applied it first.
    applied: BTreeMap<LogIndex, EntrySeen>,
    /// Each leader's log as last seen, per term: index -> term.
    leader_logs: BTreeMap<Term, (NodeId, BTreeMap<LogIndex, Term>)>,
    /// Entries whose application was acknowledged to a client.
    acknowledged: BTreeMap<LogIndex, EntrySeen>,
    /// The term in which each index was first committed (by that term's leader).
    commit_terms: BTreeMap<LogIndex, Term>,
    /// The highest commit index any leader reached.
    commit_max: LogIndex,
    /// The state machine's digest at each snapshot point seen, with who showed it first.
    snapshot_states: BTreeMap<LogIndex, (EntryId, u64, NodeId, SnapshotEvent)>,
}

/// How a node came to hold a snapshot, for [`Checkers::on_snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotEvent {
    /// It wrote one of its own state (a snapshot job was handed out).
    Taken,
    /// It installed one received from a leader.
    Installed,
    /// It restarted from one (its own, or one received just before a crash).
    Restored,
}

impl std::fmt::Display for SnapshotEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotEvent::Taken => "took",
            SnapshotEvent::Installed => "installed",
            SnapshotEvent::Restored => "restarted from",
        })
    }
}

impl Checkers {
    /// A node became leader of `term`; `log_term_at` answers the term of its log at an index.
    pub fn on_leader(
        &mut self,
        node: NodeId,
        term: Term,
        log_term_at: impl Fn(LogIndex) -> Option<Term>,
        first_index: LogIndex,
    ) -> Result<(), Violation> {
        if let Some(prev) = self.leaders.insert(term, node)
            && prev != node
        {
            return Err(Violation {
                property: "election safety (one leader per term)",
                detail: format!("{prev} and {node} both led term {term}"),
            });
        }
        for (index, seen) in &self.applied {
            // Leader Completeness (§5.4) speaks of entries committed in earlier terms: a
            // candidate cut off in an old term may still win it after a newer term committed.
            let commit_term = self.commit_terms.get(index).copied().unwrap_or(seen.id.term);
            if *index < first_index || commit_term >= term {
                continue;
            }
            if log_term_at(*index) != Some(seen.id.term) {
                return Err(Violation {
                    property: "leader completeness",
                    detail: format!(
                        "{node} leads term {term} without committed entry {} (has {:?})",
                        seen.id,
                        log_term_at(*index)
                    ),
                });
            }
        }
        Ok(())
    }

    /// The current leader's log (`(index, term)` pairs, ascending) as it stands now.
    pub fn on_leader_log(
        &mut self,
        node: NodeId,
        term: Term,
        log: &[(LogIndex, Term)],
    ) -> Result<(), Violation> {
        let (owner, seen) = self.leader_logs.entry(term).or_insert_with(|| (node, BTreeMap::new()));
        if *owner != node {
            return Ok(()); // Reported by the election check.
        }
        let now: BTreeMap<LogIndex, Term> = log.iter().copied().collect();
        let first = log.first().map(|(i, _)| *i).unwrap_or(LogIndex(u64::MAX));
        for (index, t) in seen.iter() {
            if *index < first {
                continue; // Compacted, not deleted.
            }
            if now.get(index) != Some(t) {
                return Err(Violation {
                    property: "leader append-only",
                    detail: format!(
                        "{node} (leader of term {term}) had {t}/{index}, now has {:?}",
                        now.get(index)
                    ),
                });
            }
        }
        seen.extend(now);
        Ok(())
    }

    /// Several nodes' logs (`(index, term)` pairs each): Log Matching.
    pub fn on_logs(&self, logs: &[(NodeId, Vec<(LogIndex, Term)>)]) -> Result<(), Violation> {
        for (i, (a, la)) in logs.iter().enumerate() {
            for (b, lb) in &logs[i + 1..] {
                let mb: BTreeMap<LogIndex, Term> = lb.iter().copied().collect();
                // The highest index where both hold the same term...
                let common =
                    la.iter().rev().find(|(idx, t)| mb.get(idx) == Some(t)).map(|(i, _)| *i);
                let Some(common) = common else { continue };
                // ...must be preceded by identical entries wherever both still hold them.
                for (idx, t) in la.iter().filter(|(idx, _)| *idx <= common) {
                    if let Some(tb) = mb.get(idx)
                        && tb != t
                    {
                        return Err(Violation {
                            property: "log matching",
                            detail: format!(
                                "{a} and {b} share an entry at {common} but differ at {idx} ({t} vs {tb})"
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The leader of `term` has commit index `committed`: indexes not seen committed before
    /// were committed in `term`.
    pub fn on_leader_commit(&mut self, term: Term, committed: LogIndex) {
        self.commit_max = self.commit_max.max(committed);
        let from = self.commit_terms.keys().next_back().map_or(1, |i| i.0 + 1);
        for i in from..=committed.0 {
            self.commit_terms.insert(LogIndex(i), term);
        }
    }

    /// A node applied an entry; it knew the commit index `committed` at the time.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        entry: EntrySeen,
        committed: LogIndex,
    ) -> Result<(), Violation> {
        if entry.id.index > committed {
            return Err(Violation {
                property: "applied never passes committed",
                detail: format!("{node} applied {} with commit index {committed}", entry.id),
            });
        }
        match self.applied.get(&entry.id.index) {
            Some(prev) if *prev != entry => Err(Violation {
                property: "state machine safety",
                detail: format!(
                    "{node} applied {} (digest {:x}) where another node applied {} (digest {:x})",
                    entry.id, entry.digest, prev.id, prev.digest
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.applied.insert(entry.id.index, entry);
                Ok(())
            }
        }
    }

    /// A client was told its write succeeded; the write is the entry `entry`.
    pub fn on_acknowledged(&mut self, entry: EntrySeen) {
        self.acknowledged.insert(entry.id.index, entry);
    }

    /// At the end: every acknowledged entry is in every node's final log (`(index, term)`),
    /// unless compacted away.
    pub fn check_final(&self, logs: &[(NodeId, Vec<(LogIndex, Term)>)]) -> Result<(), Violation> {
        for (node, log) in logs {
            let m: BTreeMap<LogIndex, Term> = log.iter().copied().collect();
            let first = log.first().map(|(i, _)| *i).unwrap_or(LogIndex(1));
            for (index, seen) in &self.acknowledged {
                if *index >= first && m.get(index) != Some(&seen.id.term) {
                    return Err(Violation {
                        property: "durability (nothing acknowledged is lost)",
                        detail: format!(
                            "{node} lost acknowledged entry {} (has {:?})",
                            seen.id,
                            m.get(index)
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// `node` holds a snapshot through `last` (taken, installed or restarted from) whose state
    /// machine has digest `state` (see [`state_digest`]; `None` when the node's state already
    /// moved past the snapshot). The snapshot must cover only committed entries: `last` is at
    /// or below the highest commit index a leader reached and is the entry applied at that
    /// index. Its state must equal every other state seen at the same index: the node that
    /// took it had applied the committed prefix through `last`, and every install and restart
    /// must reproduce that state.
    pub fn on_snapshot(
        &mut self,
        node: NodeId,
        event: SnapshotEvent,
        last: EntryId,
        state: Option<u64>,
    ) -> Result<(), Violation> {
        if last.index.0 == 0 {
            return Ok(());
        }
        if last.index > self.commit_max {
            return Err(Violation {
                property: "snapshots hold only committed entries",
                detail: format!(
                    "{node} {event} snapshot {last}, past the highest commit index {}",
                    self.commit_max
                ),
            });
        }
        match self.applied.get(&last.index) {
            Some(seen) if seen.id == last => {}
            other => {
                return Err(Violation {
                    property: "snapshots hold only committed entries",
                    detail: format!(
                        "{node} {event} snapshot {last}, but the committed entry at {} is {:?}",
                        last.index,
                        other.map(|e| e.id)
                    ),
                });
            }
        }
        let Some(state) = state else { return Ok(()) };
        match self.snapshot_states.get(&last.index) {
            Some((_, digest, first, how)) if *digest != state => Err(Violation {
                property: "snapshot state equals the applied committed prefix",
                detail: format!(
                    "{node} {event} snapshot {last} with state digest {state:x}, but {first} \
                     {how} one at the same index with digest {digest:x}"
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.snapshot_states.insert(last.index, (last, state, node, event));
                Ok(())
            }
        }
    }

    /// At the end: each running node's applied index and whole-state digest (see
    /// [`state_digest`]). Nodes at the same applied index must hold the same state, and it
    /// must be the state of a snapshot seen at that index, if any: the state machine is a
    /// function of the applied prefix alone.
    pub fn check_final_states(&self, states: &[(NodeId, LogIndex, u64)]) -> Result<(), Violation> {
        let mut by_applied: BTreeMap<LogIndex, (NodeId, u64)> = BTreeMap::new();
        for (id, applied, state) in states {
            let (other, expected) = *by_applied.entry(*applied).or_insert((*id, *state));
            if expected != *state {
                return Err(Violation {
                    property: "state machines converge",
                    detail: format!(
                        "{other} and {id} applied through {applied} but hold different states \
                         ({expected:x} vs {state:x})"
                    ),
                });
            }
            if let Some((last, snapshot, first, how)) = self.snapshot_states.get(applied)
                && snapshot != state
            {
                return Err(Violation {
                    property: "state machines converge",
                    detail: format!(
                        "{id} applied through {applied} and holds state {state:x}, but {first} \
                         {how} snapshot {last} with state {snapshot:x}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Snapshots seen so far, by distinct last index (for tests and summaries).
    pub fn snapshot_count(&self) -> usize {
        self.snapshot_states.len()
    }

    /// Entries applied so far (for tests and summaries).
    pub fn applied_count(&self) -> usize {
        self.applied.len()
    }
}

/// Checks that the entry `data` a write was answered from is that write's own: its proposal
/// carries the session `(client_id, sequence)` the client sent. `entry` names the entry in the
/// message.
pub fn check_answer_source(
    entry: EntryId,
    data: &[u8],
    client_id: u64,
    sequence: u64,
) -> Result<(), Violation> {
    const PROPERTY: &str = "answers come from the request's own entry";
    let session = tenure_replica::Envelope::decode(data)
        .and_then(|(_, proposal)| tenure_kv::Proposal::decode(proposal).ok())
        .and_then(|p| p.session);
    match session {
        Some(tag) if tag.client_id == client_id && tag.sequence == sequence => Ok(()),
        other => Err(Violation {
            property: PROPERTY,
            detail: format!(
                "client {client_id} sequence {sequence} was answered from entry {entry}, which \
                 carries {other:?}"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_entry(origin: u64, request: u64, client_id: u64, sequence: u64) -> bytes::Bytes {
        let cmd = tenure_kv::Command::Put(tenure_kv::PutRequest::new("k", "v"));
        let proposal = tenure_kv::Proposal::with_session(cmd, client_id, sequence);
        let env = tenure_replica::Envelope { log_time_ms: 0, origin, incarnation: 1, request };
        env.encode(&proposal.encode())
    }

    #[test]
    fn an_answer_from_another_requests_entry_is_caught() {
        let at = EntryId::new(Term(2), LogIndex(9));
        // Same origin and request id (an earlier run's), another client's command.
        let v = check_answer_source(at, &put_entry(1, 3, 77, 4), 78, 1).unwrap_err();
        assert_eq!(v.property, "answers come from the request's own entry");
        // Same client, an older sequence number: not this request's entry either.
        assert!(check_answer_source(at, &put_entry(1, 3, 77, 3), 77, 4).is_err());
        assert!(check_answer_source(at, b"not an entry", 77, 4).is_err());
        assert!(check_answer_source(at, &put_entry(1, 3, 77, 4), 77, 4).is_ok());
    }

    fn e(term: u64, index: u64, digest: u64) -> EntrySeen {
        EntrySeen { id: EntryId::new(Term(term), LogIndex(index)), digest }
    }

    fn log(pairs: &[(u64, u64)]) -> Vec<(LogIndex, Term)> {
        pairs.iter().map(|(i, t)| (LogIndex(*i), Term(*t))).collect()
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut c = Checkers::default();
        assert!(c.on_leader(NodeId(1), Term(2), |_| None, LogIndex(1)).is_ok());
        assert!(
            c.on_leader(NodeId(1), Term(2), |_| None, LogIndex(1)).is_ok(),
            "same leader again"
        );
        let v = c.on_leader(NodeId(2), Term(2), |_| None, LogIndex(1)).unwrap_err();
        assert_eq!(v.property, "election safety (one leader per term)");
    }

    #[test]
    fn leader_missing_a_committed_entry_is_caught() {
        let mut c = Checkers::default();
        c.on_leader_commit(Term(1), LogIndex(1));
        c.on_apply(NodeId(1), e(1, 1, 7), LogIndex(1)).unwrap();
        let v = c.on_leader(NodeId(2), Term(3), |_| None, LogIndex(1)).unwrap_err();
        assert_eq!(v.property, "leader completeness");
        assert!(c.on_leader(NodeId(3), Term(4), |_| Some(Term(1)), LogIndex(1)).is_ok());
    }

    #[test]
    fn stale_leader_of_an_older_term_need_not_hold_newer_commits() {
        let mut c = Checkers::default();
        c.on_leader_commit(Term(2), LogIndex(1));
        c.on_apply(NodeId(1), e(2, 1, 7), LogIndex(1)).unwrap();
        // A node wins term 1 late (its votes were granted before term 2 began).
        assert!(c.on_leader(NodeId(3), Term(1), |_| None, LogIndex(1)).is_ok());
    }

    #[test]
    fn leader_overwriting_its_entry_is_caught() {
        let mut c = Checkers::default();
        c.on_leader_log(NodeId(1), Term(2), &log(&[(1, 1), (2, 2)])).unwrap();
        c.on_leader_log(NodeId(1), Term(2), &log(&[(1, 1), (2, 2), (3, 2)])).unwrap();
        let v = c.on_leader_log(NodeId(1), Term(2), &log(&[(1, 1), (2, 2)])).unwrap_err();
        assert_eq!(v.property, "leader append-only");
    }

    #[test]
    fn diverging_prefixes_under_a_shared_entry_are_caught() {
        let c = Checkers::default();
        let good =
            [(NodeId(1), log(&[(1, 1), (2, 2)])), (NodeId(2), log(&[(1, 1), (2, 2), (3, 3)]))];
        assert!(c.on_logs(&good).is_ok());
        let bad = [(NodeId(1), log(&[(1, 1), (2, 2)])), (NodeId(2), log(&[(1, 2), (2, 2)]))];
        assert_eq!(c.on_logs(&bad).unwrap_err().property, "log matching");
    }

    #[test]
    fn different_entries_applied_at_one_index_are_caught() {
        let mut c = Checkers::default();
        c.on_apply(NodeId(1), e(1, 5, 1), LogIndex(5)).unwrap();
        c.on_apply(NodeId(2), e(1, 5, 1), LogIndex(9)).unwrap();
        let v = c.on_apply(NodeId(3), e(2, 5, 1), LogIndex(5)).unwrap_err();
        assert_eq!(v.property, "state machine safety");
    }

    #[test]
    fn applying_past_the_commit_index_is_caught() {
        let mut c = Checkers::default();
        let v = c.on_apply(NodeId(1), e(1, 5, 1), LogIndex(4)).unwrap_err();
        assert_eq!(v.property, "applied never passes committed");
    }

    fn snapshot_setup() -> Checkers {
        let mut c = Checkers::default();
        c.on_leader_commit(Term(2), LogIndex(5));
        for i in 1..=5 {
            c.on_apply(NodeId(1), e(2, i, i), LogIndex(5)).unwrap();
        }
        c
    }

    #[test]
    fn snapshot_past_the_commit_index_is_caught() {
        let mut c = snapshot_setup();
        let at = |t, i| EntryId::new(Term(t), LogIndex(i));
        assert!(c.on_snapshot(NodeId(1), SnapshotEvent::Taken, at(2, 5), Some(1)).is_ok());
        // Node 2 applied 2/6 believing it committed, but no leader ever reached 6: the
        // applied-entry check alone would pass this snapshot.
        c.on_apply(NodeId(2), e(2, 6, 6), LogIndex(6)).unwrap();
        let v = c.on_snapshot(NodeId(2), SnapshotEvent::Taken, at(2, 6), Some(1)).unwrap_err();
        assert_eq!(v.property, "snapshots hold only committed entries");
        assert!(v.detail.contains("past the highest commit index 5"), "{}", v.detail);
    }

    #[test]
    fn snapshot_of_an_entry_other_than_the_committed_one_is_caught() {
        let mut c = snapshot_setup();
        let v = c
            .on_snapshot(
                NodeId(2),
                SnapshotEvent::Installed,
                EntryId::new(Term(1), LogIndex(4)),
                Some(1),
            )
            .unwrap_err();
        assert_eq!(v.property, "snapshots hold only committed entries");
    }

    #[test]
    fn snapshot_state_differing_from_the_applied_prefix_is_caught() {
        let mut c = snapshot_setup();
        let at = EntryId::new(Term(2), LogIndex(4));
        c.on_snapshot(NodeId(1), SnapshotEvent::Taken, at, Some(0xaa)).unwrap();
        assert!(c.on_snapshot(NodeId(3), SnapshotEvent::Restored, at, Some(0xaa)).is_ok());
        let v = c.on_snapshot(NodeId(2), SnapshotEvent::Installed, at, Some(0xbb)).unwrap_err();
        assert_eq!(v.property, "snapshot state equals the applied committed prefix");
    }

    #[test]
    fn final_states_differing_at_one_applied_index_are_caught() {
        let c = Checkers::default();
        let ok = [(NodeId(1), LogIndex(5), 0xaa), (NodeId(2), LogIndex(5), 0xaa)];
        assert!(c.check_final_states(&ok).is_ok());
        // Different applied indexes may hold different states.
        assert!(
            c.check_final_states(&[(NodeId(1), LogIndex(5), 0xaa), (NodeId(2), LogIndex(6), 0xbb)])
                .is_ok()
        );
        let bad = [(NodeId(1), LogIndex(5), 0xaa), (NodeId(3), LogIndex(5), 0xbb)];
        assert_eq!(c.check_final_states(&bad).unwrap_err().property, "state machines converge");
    }

    #[test]
    fn final_state_differing_from_a_snapshot_at_its_index_is_caught() {
        let mut c = snapshot_setup();
        c.on_snapshot(
            NodeId(1),
            SnapshotEvent::Taken,
            EntryId::new(Term(2), LogIndex(4)),
            Some(0xaa),
        )
        .unwrap();
        assert!(c.check_final_states(&[(NodeId(2), LogIndex(4), 0xaa)]).is_ok());
        let v = c.check_final_states(&[(NodeId(2), LogIndex(4), 0xbb)]).unwrap_err();
        assert_eq!(v.property, "state machines converge");
    }

    #[test]
    fn state_digest_tells_different_stores_apart() {
        let a = tenure_kv::Store::default();
        let mut b = a.clone();
        assert_eq!(state_digest(&a), state_digest(&b));
        let put = tenure_kv::Command::Put(tenure_kv::PutRequest::new("k", "v"));
        b.apply(1, 0, &tenure_kv::Proposal::new(put).encode()).unwrap();
        assert_ne!(state_digest(&a), state_digest(&b));
    }

    #[test]
    fn compacted_acknowledged_entries_are_not_lost_but_held_ones_must_match() {
        let mut c = Checkers::default();
        c.on_acknowledged(e(2, 3, 9));
        // Compacted through 5: the entry lives in the snapshot.
        assert!(c.check_final(&[(NodeId(1), log(&[(6, 2), (7, 2)]))]).is_ok());
        let v = c.check_final(&[(NodeId(1), log(&[(3, 1), (4, 2)]))]).unwrap_err();
        assert_eq!(v.property, "durability (nothing acknowledged is lost)");
    }

    #[test]
    fn log_matching_looks_only_at_indexes_both_logs_hold() {
        let c = Checkers::default();
        // One log compacted through 4: no disagreement where only one holds entries.
        let ok = [
            (NodeId(1), log(&[(1, 1), (2, 1), (5, 2), (6, 3)])),
            (NodeId(2), log(&[(5, 2), (6, 3)])),
        ];
        assert!(c.on_logs(&ok).is_ok());
        let bad = [
            (NodeId(1), log(&[(4, 1), (5, 2), (6, 3)])),
            (NodeId(2), log(&[(4, 2), (5, 2), (6, 3)])),
        ];
        assert_eq!(c.on_logs(&bad).unwrap_err().property, "log matching");
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        let mut c = Checkers::default();
        c.on_acknowledged(e(2, 3, 9));
        assert!(c.check_final(&[(NodeId(1), log(&[(1, 1), (2, 2), (3, 2)]))]).is_ok());
        let v = c.check_final(&[(NodeId(2), log(&[(1, 1), (2, 2)]))]).unwrap_err();
        assert_eq!(v.property, "durability (nothing acknowledged is lost)");
    }
}
