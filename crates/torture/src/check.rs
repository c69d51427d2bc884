//! The checks of a run. Each takes plain observations (the recorded history, the watchers'
//! logs, the members' hashes), so that each is shown able to fail on a planted bad input in
//! its own tests.
//!
//! | checker | what must hold |
//! |---|---|
//! | [`linearizable`] | the register history has a linearization (the project's checker) |
//! | [`watches`] | each member's watch from revision 1 is ordered, unique, atomic, reliable and resumable against the events all watchers agree on, and complete: it reached the final revision, and no revision in `2..=final` is missing (every revision of the register workload has an event) |
//! | [`acknowledged_writes`] | every write or cas acknowledged with revision `r` is the event at `r`: no acknowledged write is lost or replaced |
//! | [`convergence`] | every member has the same `HashKV` at the final revision |
//! | [`no_crashes`] | no member exited on its own |

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tenure_kv::{Event, EventKind, RevisionEvents, WatchSpec};
use tenure_sim::linearizability::{self, CheckResult};
use tenure_sim::watch::{EventReference, WatchObservation, check_watch};

use crate::watchers::{WatchLog, node_of};
use crate::workload::OpRecord;

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The property holds.
    Pass,
    /// The property is broken: an anomaly.
    Fail,
    /// The checker could not decide (it ran out of time or memory).
    Unknown,
}

/// One checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Which checker.
    pub checker: &'static str,
    /// How it ended.
    pub outcome: Outcome,
    /// What it found (or what it checked, when it passed).
    pub detail: String,
}

impl Verdict {
    pub(crate) fn pass(checker: &'static str, detail: String) -> Verdict {
        Verdict { checker, outcome: Outcome::Pass, detail }
    }

    pub(crate) fn fail(checker: &'static str, detail: String) -> Verdict {
        Verdict { checker, outcome: Outcome::Fail, detail }
    }
}

/// Checks the register history with `tenure_sim::linearizability::check`, for at most
/// `timeout`.
pub fn linearizable(history: &[OpRecord], timeout: Duration) -> Verdict {
    const NAME: &str = "linearizable";
    let ops: Vec<_> = history.iter().map(OpRecord::to_operation).collect();
    match linearizability::check(&ops, timeout) {
        Ok(CheckResult::Linearizable) => {
            Verdict::pass(NAME, format!("{} operations linearizable", ops.len()))
        }
        Ok(CheckResult::NotLinearizable(v)) => {
            let name = |i: usize| {
                let o = &history[i];
                format!("#{i} (client {} via n{})", o.client, o.member + 1)
            };
            Verdict::fail(NAME, v.explain(&name))
        }
        Ok(CheckResult::Unknown { limit, key, keys_decided, keys_total }) => Verdict {
            checker: NAME,
            outcome: Outcome::Unknown,
            detail: format!(
                "gave up ({limit:?}) on key {key:?} after deciding {keys_decided} of {keys_total} keys"
            ),
        },
        Err(e) => Verdict::fail(NAME, format!("malformed history: {e}")),
    }
}

/// Every key, as the watchers watch it (etcd's "all keys": `\0` to `\0`).
fn all_keys() -> WatchSpec {
    WatchSpec::new(&b"\0"[..], &b"\0"[..])
}

/// Checks each member's watch (see the module doc) and returns, with the verdict, the events
/// per revision they agreed on: the reference the other checks use.
pub fn watches(logs: &[WatchLog], final_revision: i64) -> (Verdict, BTreeMap<i64, Vec<Event>>) {
    const NAME: &str = "watch";
    let mut reference = EventReference::default();
    let mut problems = Vec::new();
    for (member, log) in logs.iter().enumerate() {
        let delivered: Vec<RevisionEvents> = log
            .observations
            .iter()
            .filter_map(|o| match o {
                WatchObservation::Deliver(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        if let Err(v) = reference.on_events(node_of(member), &delivered) {
            problems.push(v.to_string());
        }
    }
    let reference = reference.revisions().clone();
    let spec = all_keys();
    for (member, log) in logs.iter().enumerate() {
        let name = format!("n{}", member + 1);
        if let Err(v) = check_watch(&name, &spec, &log.observations, &reference) {
            problems.push(v.to_string());
        }
        if log.last != Some(final_revision) {
            problems.push(format!(
                "complete: watcher {name} reached revision {:?}, the final revision is \
                 {final_revision}{}",
                log.last,
                log.last_error.as_ref().map_or(String::new(), |e| format!(" (last error: {e})"))
            ));
        }
    }
    if let Some(missing) = (2..=final_revision).find(|r| !reference.contains_key(r)) {
        problems.push(format!("complete: no watcher delivered revision {missing}"));
    }
    if let Some((&beyond, _)) = reference.range(final_revision + 1..).next() {
        problems.push(format!("complete: revision {beyond} delivered past the final revision"));
    }
    let verdict = if problems.is_empty() {
        let resumes: usize = logs.iter().map(|l| l.resumes).sum();
        Verdict::pass(
            NAME,
            format!(
                "{} watchers delivered revisions 2..={final_revision} ({} revisions), {resumes} \
                 resumes",
                logs.len(),
                reference.len()
            ),
        )
    } else {
        Verdict::fail(NAME, problems.join("; "))
    };
    (verdict, reference)
}

/// Checks that every acknowledged write is the event at the revision it was acknowledged with.
pub fn acknowledged_writes(history: &[OpRecord], reference: &BTreeMap<i64, Vec<Event>>) -> Verdict {
    const NAME: &str = "acknowledged writes";
    let mut problems = Vec::new();
    let mut count = 0;
    for op in history {
        let Some((value, revision)) = op.acknowledged_write() else { continue };
        count += 1;
        let found = reference.get(&revision);
        let matches = found.is_some_and(|events| {
            events.len() == 1
                && events[0].kind == EventKind::Put
                && events[0].kv.key.as_ref() == op.key.as_bytes()
                && events[0].kv.value.as_ref() == value.as_bytes()
        });
        if !matches {
            let found = found.map_or("nothing".to_string(), |events| {
                events
                    .iter()
                    .map(|e| {
                        format!(
                            "{:?} {}={}",
                            e.kind,
                            String::from_utf8_lossy(&e.kv.key),
                            String::from_utf8_lossy(&e.kv.value)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            problems.push(format!(
                "client {} was told {}={value} is revision {revision} (via n{}), the history has \
                 {found} there",
                op.client,
                op.key,
                op.member + 1
            ));
        }
    }
    if problems.is_empty() {
        Verdict::pass(NAME, format!("{count} acknowledged writes found at their revisions"))
    } else {
        let shown: Vec<String> = problems.iter().take(5).cloned().collect();
        Verdict::fail(
            NAME,
            format!("{} of {count} lost or replaced: {}", problems.len(), shown.join("; ")),
        )
    }
}

/// One member's `HashKV` answer at the final revision (`None`: it gave none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberHash {
    /// The member's name.
    pub member: String,
    /// Its hash and compaction revision, if it answered.
    pub hash: Option<(u32, i64)>,
    /// The error, if it did not.
    pub error: Option<String>,
}

/// Checks that every member answered `HashKV` at `revision` with the same hash.
pub fn convergence(hashes: &[MemberHash], revision: i64) -> Verdict {
    const NAME: &str = "convergence";
    let shown = || {
        hashes
            .iter()
            .map(|h| match (&h.hash, &h.error) {
                (Some((hash, compact)), _) => {
                    format!("{} {hash:#010x} (compact {compact})", h.member)
                }
                (None, e) => format!("{} no answer ({})", h.member, e.as_deref().unwrap_or("?")),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let first = hashes.first().and_then(|h| h.hash);
    if first.is_some() && hashes.iter().all(|h| h.hash == first) {
        Verdict::pass(NAME, format!("HashKV at revision {revision}: {}", shown()))
    } else {
        Verdict::fail(NAME, format!("HashKV at revision {revision} differs: {}", shown()))
    }
}

/// Checks that no member exited without the suite killing it (`exits`: member and how).
pub fn no_crashes(exits: &[String]) -> Verdict {
    const NAME: &str = "no crashes";
    if exits.is_empty() {
        Verdict::pass(NAME, "every member ran until the suite stopped it".to_string())
    } else {
        Verdict::fail(NAME, exits.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tenure_kv::KeyValue;
    use tenure_sim::linearizability::{OpKind, Status};

    use super::*;

    fn op(client: u64, key: &str, kind: OpKind, call: u64, ret: u64, status: Status) -> OpRecord {
        OpRecord {
            client,
            member: 0,
            key: key.to_string(),
            kind,
            call_us: call,
            ret_us: ret,
            status,
            revision: None,
        }
    }

    fn write(client: u64, value: &str, call: u64, ret: u64, revision: i64) -> OpRecord {
        OpRecord {
            revision: Some(revision),
            ..op(client, "k0", OpKind::Write { value: value.into() }, call, ret, Status::Ok)
        }
    }

    fn read(client: u64, value: Option<&str>, call: u64, ret: u64) -> OpRecord {
        op(client, "k0", OpKind::Read { value: value.map(Into::into) }, call, ret, Status::Ok)
    }

    fn put(revision: i64, key: &str, value: &str) -> RevisionEvents {
        RevisionEvents {
            revision,
            events: vec![Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                    create_revision: 2,
                    mod_revision: revision,
                    version: revision - 1,
                    value: Bytes::copy_from_slice(value.as_bytes()),
                    lease: 0,
                },
                prev_kv: None,
            }],
        }
    }

    fn log(delivered: &[RevisionEvents]) -> WatchLog {
        let mut observations = vec![WatchObservation::Start { from: 1 }];
        observations.extend(delivered.iter().cloned().map(WatchObservation::Deliver));
        WatchLog {
            observations,
            last: delivered.iter().map(|r| r.revision).max(),
            resumes: 0,
            last_error: None,
        }
    }

    #[test]
    fn linearizable_passes_a_good_history_and_fails_a_stale_read() {
        let good = vec![write(1, "a", 0, 10, 2), read(2, Some("a"), 20, 30)];
        assert_eq!(linearizable(&good, Duration::from_secs(5)).outcome, Outcome::Pass);
        // The read starts after the second write returned, yet sees the first.
        let stale =
            vec![write(1, "a", 0, 10, 2), write(1, "b", 20, 30, 3), read(2, Some("a"), 40, 50)];
        let v = linearizable(&stale, Duration::from_secs(5));
        assert_eq!(v.outcome, Outcome::Fail, "{v:?}");
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_after_its_timeout() {
        let mut lost = op(1, "k0", OpKind::Write { value: "a".into() }, 0, 10, Status::Info);
        lost.revision = None;
        let history = vec![lost, read(2, Some("a"), 100, 110)];
        assert_eq!(linearizable(&history, Duration::from_secs(5)).outcome, Outcome::Pass);
    }

    #[test]
    fn watches_pass_agreeing_complete_streams() {
        let revs = [put(2, "k0", "a"), put(3, "k1", "b"), put(4, "k0", "c")];
        let (v, reference) = watches(&[log(&revs), log(&revs)], 4);
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
        assert_eq!(reference.len(), 3);
    }

    #[test]
    fn watches_fail_a_duplicate_a_reordering_a_gap_and_a_disagreement() {
        let good = [put(2, "k0", "a"), put(3, "k1", "b"), put(4, "k0", "c")];
        let cases: [(&str, Vec<RevisionEvents>); 4] = [
            ("unique", vec![good[0].clone(), good[1].clone(), good[1].clone(), good[2].clone()]),
            ("ordered", vec![good[0].clone(), good[2].clone(), good[1].clone()]),
            ("reliable", vec![good[0].clone(), good[2].clone()]),
            ("replicas agree", vec![good[0].clone(), put(3, "k1", "X"), good[2].clone()]),
        ];
        for (property, bad) in cases {
            let (v, _) = watches(&[log(&good), log(&bad)], 4);
            assert_eq!(v.outcome, Outcome::Fail, "{property}: {v:?}");
            assert!(v.detail.contains(property), "{property}: {}", v.detail);
        }
    }

    #[test]
    fn watches_fail_when_a_watcher_stops_short_or_every_watcher_misses_a_revision() {
        let good = [put(2, "k0", "a"), put(3, "k1", "b"), put(4, "k0", "c")];
        let (v, _) = watches(&[log(&good), log(&good[..2])], 4);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("watcher n2 reached"), "{v:?}");
        let gap = [good[0].clone(), good[2].clone()];
        let (v, _) = watches(&[log(&gap), log(&gap)], 4);
        assert!(v.detail.contains("no watcher delivered revision 3"), "{v:?}");
    }

    #[test]
    fn acknowledged_writes_fail_a_lost_and_a_replaced_write() {
        let reference: BTreeMap<i64, Vec<Event>> = [put(2, "k0", "a"), put(3, "k0", "b")]
            .into_iter()
            .map(|r| (r.revision, r.events))
            .collect();
        let good = vec![write(1, "a", 0, 10, 2), write(2, "b", 0, 10, 3)];
        assert_eq!(acknowledged_writes(&good, &reference).outcome, Outcome::Pass);
        let lost = vec![write(1, "a", 0, 10, 2), write(2, "z", 0, 10, 4)];
        let v = acknowledged_writes(&lost, &reference);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("has nothing there"), "{v:?}");
        let replaced = vec![write(2, "z", 0, 10, 3)];
        let v = acknowledged_writes(&replaced, &reference);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("k0=b"), "{v:?}");
    }

    #[test]
    fn convergence_fails_on_a_different_hash_or_a_silent_member() {
        let h = |member: &str, hash: Option<(u32, i64)>| MemberHash {
            member: member.into(),
            hash,
            error: hash.is_none().then(|| "timeout".to_string()),
        };
        let same = [h("n1", Some((7, 0))), h("n2", Some((7, 0)))];
        assert_eq!(convergence(&same, 9).outcome, Outcome::Pass);
        let differ = [h("n1", Some((7, 0))), h("n2", Some((8, 0)))];
        assert_eq!(convergence(&differ, 9).outcome, Outcome::Fail);
        let silent = [h("n1", Some((7, 0))), h("n2", None)];
        assert_eq!(convergence(&silent, 9).outcome, Outcome::Fail);
    }

    #[test]
    fn no_crashes_fails_on_an_exit() {
        assert_eq!(no_crashes(&[]).outcome, Outcome::Pass);
        assert_eq!(no_crashes(&["n2 exited: signal 6".into()]).outcome, Outcome::Fail);
    }
}
