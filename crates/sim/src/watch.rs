//! The watch checkers: what the simulated watchers received, held against the committed history
//! of events. Like [`crate::checkers`], each takes plain observations, so each is fed planted
//! bad streams in its own tests.
//!
//! - [`EventReference::on_events`]: the reference is, per revision, the events the first node
//!   to apply that revision produced; every other node (and every later run of the same node)
//!   that applies the revision must produce identical events ("replicas agree on events").
//! - [`check_watch`]: one watcher's stream, against the reference, proves the guarantees
//!   etcd's robustness suite checks (etcd `tests/robustness/validate/watch.go`):
//!   - **ordered**: delivered revisions strictly increase, never below the watch's start;
//!   - **unique**: no revision is delivered twice on one watch;
//!   - **atomic**: a delivered revision carries exactly the wanted events of the reference
//!     revision, all of them, in operation order;
//!   - **reliable**: no wanted reference revision between the watch's start and its last
//!     delivered revision is missing;
//!   - **resumable**: a watch resumed elsewhere from `next` neither repeats a revision nor
//!     skips a wanted one between its last delivered revision and `next`, and a cancellation
//!     for compaction names a compaction that covers where the watch stood;
//!   - **bookmarkable**: a progress notification at revision `p` means every wanted revision
//!     up to `p` was delivered, and every later delivery is above `p`;
//!   - **prev_kv**: equal to the reference's when asked, absent when not;
//!   - **filters**: no event outside the key range or of a filtered kind is delivered.
//!
//! The checker decides which events a watcher wants by itself (not through
//! [`tenure_kv::WatchSpec::wants`]), so that a mistake in the code under test is not repeated
//! in its judge.

use std::collections::{BTreeMap, BTreeSet};

use tenure_kv::{Event, EventKind, RevisionEvents, WatchSpec};
use tenure_raft::NodeId;

use crate::checkers::Violation;

/// What a simulated watcher saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchObservation {
    /// A new watch from `from` on: the first one, or the one a client opens after a
    /// cancellation.
    Start {
        /// The start revision.
        from: i64,
    },
    /// The watch reconnected to `node` and resumes from `next` (its first revision not yet
    /// delivered).
    Resume {
        /// The node resumed on.
        node: NodeId,
        /// The revision it resumes from.
        next: i64,
    },
    /// A delivered revision: its wanted events, as delivered.
    Deliver(RevisionEvents),
    /// A progress notification: every event up to `revision` has been delivered.
    Progress {
        /// The revision announced.
        revision: i64,
    },
    /// The watch was cancelled because its next revision was compacted.
    Cancel {
        /// The compaction revision named in the cancellation.
        compact_revision: i64,
    },
}

/// The committed history of events, collected from what the nodes applied.
#[derive(Default)]
pub struct EventReference {
    /// Per revision, the events the first node to apply it produced.
    revisions: BTreeMap<i64, Vec<Event>>,
    /// Who produced each revision's reference events first.
    first: BTreeMap<i64, NodeId>,
    /// The first disagreement seen, kept so that callers that cannot stop at once (the
    /// world ignores failures from some outputs) still see it at the end.
    violation: Option<Violation>,
}

impl EventReference {
    /// `node` applied entries and produced `revisions`' events. The first node to apply a
    /// revision defines it; every later one must produce the same events.
    pub fn on_events(
        &mut self,
        node: NodeId,
        revisions: &[RevisionEvents],
    ) -> Result<(), Violation> {
        for r in revisions {
            match self.revisions.get(&r.revision) {
                Some(events) if *events != r.events => {
                    let v = Violation {
                        property: "replicas agree on events",
                        detail: format!(
                            "{node} produced {:?} at revision {} where {} produced {:?}",
                            r.events, r.revision, self.first[&r.revision], events
                        ),
                    };
                    self.violation.get_or_insert_with(|| v.clone());
                    return Err(v);
                }
                Some(_) => {}
                None => {
                    self.revisions.insert(r.revision, r.events.clone());
                    self.first.insert(r.revision, node);
                }
            }
        }
        Ok(())
    }

    /// The reference: events per revision.
    pub fn revisions(&self) -> &BTreeMap<i64, Vec<Event>> {
        &self.revisions
    }

    /// The first disagreement seen, if any.
    pub fn check(&self) -> Result<(), Violation> {
        self.violation.clone().map_or(Ok(()), Err)
    }
}

/// Whether `spec` wants `event`: its key in etcd's range, its kind not filtered. Written here
/// again on purpose (see the module doc).
fn wanted(spec: &WatchSpec, event: &Event) -> bool {
    let key = event.kv.key.as_ref();
    let (start, end) = (spec.key.as_ref(), spec.range_end.as_ref());
    let in_range = match end {
        b"" => key == start,
        b"\0" => key >= start,
        _ => key >= start && key < end,
    };
    let filtered = match event.kind {
        EventKind::Put => spec.no_put,
        EventKind::Delete => spec.no_delete,
    };
    in_range && !filtered
}

/// The wanted events of one reference revision (empty if none, or if no such revision).
fn wanted_at(spec: &WatchSpec, reference: &BTreeMap<i64, Vec<Event>>, revision: i64) -> Vec<Event> {
    reference
        .get(&revision)
        .map(|events| events.iter().filter(|e| wanted(spec, e)).cloned().collect())
        .unwrap_or_default()
}

/// The first reference revision in `(after, before)` holding a wanted event.
fn first_wanted_between(
    spec: &WatchSpec,
    reference: &BTreeMap<i64, Vec<Event>>,
    after: i64,
    before: i64,
) -> Option<i64> {
    if before <= after.saturating_add(1) {
        return None;
    }
    reference
        .range(after + 1..before)
        .find(|(_, events)| events.iter().any(|e| wanted(spec, e)))
        .map(|(r, _)| *r)
}

/// Checks one watcher's observations against the reference (see the module doc). `watcher`
/// names it in the violation.
pub fn check_watch(
    watcher: &str,
    spec: &WatchSpec,
    observations: &[WatchObservation],
    reference: &BTreeMap<i64, Vec<Event>>,
) -> Result<(), Violation> {
    let fail = |property: &'static str, detail: String| {
        Err(Violation { property, detail: format!("watcher {watcher}: {detail}") })
    };
    // Order and uniqueness first, over each whole watch, so that a reordered pair is reported
    // as such and not as the gap its first revision leaves behind it.
    let mut seen: BTreeSet<i64> = BTreeSet::new();
    let mut highest: Option<i64> = None;
    for o in observations {
        match o {
            WatchObservation::Start { .. } => {
                seen.clear();
                highest = None;
            }
            WatchObservation::Deliver(r) => {
                if !seen.insert(r.revision) {
                    return fail("unique", format!("revision {} delivered twice", r.revision));
                }
                if let Some(h) = highest
                    && r.revision < h
                {
                    return fail("ordered", format!("revision {} delivered after {h}", r.revision));
                }
                highest = Some(r.revision);
            }
            _ => {}
        }
    }
    // The current watch: its last delivered revision, and the revision through which every
    // wanted event is accounted for (delivered, or announced as such by a progress
    // notification or a resume point), with what accounted for it.
    let mut last: Option<i64> = None;
    let mut covered: i64 = 0;
    let mut covered_by = "start";
    let mut started = false;
    let mut cancelled = false;
    for o in observations {
        match o {
            WatchObservation::Start { from } => {
                if started && !cancelled {
                    return fail(
                        "resumable",
                        format!("a new watch from {from} without a cancellation"),
                    );
                }
                started = true;
                cancelled = false;
                last = None;
                covered = from - 1;
                covered_by = "start";
            }
            _ if !started || cancelled => {
                return fail("ordered", format!("{o:?} outside a watch"));
            }
            WatchObservation::Resume { node, next } => {
                if let Some(l) = last
                    && *next <= l
                {
                    return fail(
                        "resumable",
                        format!(
                            "resumed on {node} from {next}, at or below revision {l} already delivered"
                        ),
                    );
                }
                if let Some(missed) = first_wanted_between(spec, reference, covered, *next) {
                    return fail(
                        "resumable",
                        format!(
                            "resumed on {node} from {next}, skipping revision {missed} (delivered or \
                             announced through {covered})"
                        ),
                    );
                }
                if *next - 1 > covered {
                    covered = *next - 1;
                    covered_by = "resume";
                }
            }
            WatchObservation::Progress { revision } => {
                if let Some(missed) = first_wanted_between(spec, reference, covered, revision + 1) {
                    return fail(
                        "bookmarkable",
                        format!(
                            "progress at {revision}, but revision {missed} was never delivered"
                        ),
                    );
                }
                if *revision > covered {
                    covered = *revision;
                    covered_by = "progress";
                }
            }
            WatchObservation::Cancel { compact_revision } => {
                if *compact_revision <= covered {
                    return fail(
                        "resumable",
                        format!(
                            "cancelled for compaction at {compact_revision}, but the watch stood \
                             past it (through {covered})"
                        ),
                    );
                }
                cancelled = true;
            }
            WatchObservation::Deliver(r) => {
                let rev = r.revision;
                if rev <= covered {
                    let property = match covered_by {
                        "progress" => "bookmarkable",
                        "resume" => "resumable",
                        _ => "ordered",
                    };
                    return fail(
                        property,
                        format!("revision {rev} delivered, at or below {covered} ({covered_by})"),
                    );
                }
                if let Some(missed) = first_wanted_between(spec, reference, covered, rev) {
                    return fail(
                        "reliable",
                        format!("revision {missed} missing before revision {rev}"),
                    );
                }
                if let Some(e) = r.events.iter().find(|e| !wanted(spec, e)) {
                    return fail(
                        "filters",
                        format!(
                            "revision {rev} delivered an unwanted {:?} of {:?}",
                            e.kind, e.kv.key
                        ),
                    );
                }
                let expected = wanted_at(spec, reference, rev);
                let shape = |events: &[Event]| -> Vec<(EventKind, tenure_kv::KeyValue)> {
                    events.iter().map(|e| (e.kind, e.kv.clone())).collect()
                };
                if shape(&r.events) != shape(&expected) {
                    return fail(
                        "atomic",
                        format!(
                            "revision {rev} delivered {:?}, the reference's wanted events are {:?}",
                            shape(&r.events),
                            shape(&expected)
                        ),
                    );
                }
                for (got, want) in r.events.iter().zip(&expected) {
                    let want_prev = if spec.prev_kv { want.prev_kv.clone() } else { None };
                    if got.prev_kv != want_prev {
                        return fail(
                            "prev_kv",
                            format!(
                                "revision {rev} key {:?}: prev_kv {:?}, expected {:?}",
                                got.kv.key, got.prev_kv, want_prev
                            ),
                        );
                    }
                }
                last = Some(rev);
                covered = rev;
                covered_by = "delivery";
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tenure_kv::KeyValue;

    use WatchObservation::{Cancel, Deliver, Progress, Resume, Start};

    fn kv(key: &str, revision: i64, value: &str) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            mod_revision: revision,
            ..KeyValue::default()
        }
    }

    fn put(key: &str, revision: i64, prev: Option<i64>) -> Event {
        Event {
            kind: EventKind::Put,
            kv: kv(key, revision, "v"),
            prev_kv: prev.map(|p| kv(key, p, "v")),
        }
    }

    fn delete(key: &str, revision: i64, prev: i64) -> Event {
        Event {
            kind: EventKind::Delete,
            kv: kv(key, revision, ""),
            prev_kv: Some(kv(key, prev, "v")),
        }
    }

    /// Revisions 2..=6: 2 puts a, 3 puts b and a in one transaction, 4 deletes a, 5 puts c
    /// (outside the "a".."c" range), 6 puts a again.
    fn reference() -> BTreeMap<i64, Vec<Event>> {
        BTreeMap::from([
            (2, vec![put("a", 2, None)]),
            (3, vec![put("b", 3, None), put("a", 3, Some(2))]),
            (4, vec![delete("a", 4, 3)]),
            (5, vec![put("c", 5, None)]),
            (6, vec![put("a", 6, None)]),
        ])
    }

    fn spec() -> WatchSpec {
        WatchSpec { prev_kv: true, ..WatchSpec::new("a", "c") }
    }

    fn at(reference: &BTreeMap<i64, Vec<Event>>, revision: i64) -> WatchObservation {
        Deliver(RevisionEvents { revision, events: reference[&revision].clone() })
    }

    fn good() -> Vec<WatchObservation> {
        let r = reference();
        vec![
            Start { from: 2 },
            at(&r, 2),
            at(&r, 3),
            Progress { revision: 3 },
            Resume { node: NodeId(2), next: 4 },
            at(&r, 4),
            Progress { revision: 5 },
            at(&r, 6),
        ]
    }

    fn property(observations: &[WatchObservation], spec: &WatchSpec) -> &'static str {
        check_watch("w0", spec, observations, &reference()).unwrap_err().property
    }

    #[test]
    fn a_correct_stream_passes() {
        assert_eq!(check_watch("w0", &spec(), &good(), &reference()), Ok(()));
    }

    #[test]
    fn a_duplicated_revision_breaks_unique() {
        let r = reference();
        let mut o = good();
        o.insert(3, at(&r, 2));
        assert_eq!(property(&o, &spec()), "unique");
    }

    #[test]
    fn a_reordered_pair_breaks_ordered() {
        let r = reference();
        let o = vec![Start { from: 2 }, at(&r, 3), at(&r, 2)];
        assert_eq!(property(&o, &spec()), "ordered");
        // Before the watch's start is out of order too.
        let o = vec![Start { from: 3 }, at(&r, 2)];
        assert_eq!(property(&o, &spec()), "ordered");
    }

    #[test]
    fn a_split_revision_breaks_atomic() {
        let r = reference();
        let mut o = good();
        let Deliver(three) = at(&r, 3) else { unreachable!() };
        o[2] = Deliver(RevisionEvents { revision: 3, events: three.events[..1].to_vec() });
        assert_eq!(property(&o, &spec()), "atomic");
        // Its events reordered, or a revision that never happened, also are.
        o[2] = Deliver(RevisionEvents {
            revision: 3,
            events: three.events.iter().rev().cloned().collect(),
        });
        assert_eq!(property(&o, &spec()), "atomic");
        let phantom = vec![
            Start { from: 6 },
            at(&r, 6),
            Deliver(RevisionEvents { revision: 7, events: vec![put("a", 7, Some(6))] }),
        ];
        assert_eq!(property(&phantom, &spec()), "atomic");
    }

    #[test]
    fn a_gap_breaks_reliable() {
        let r = reference();
        let o = vec![Start { from: 2 }, at(&r, 2), at(&r, 4)];
        assert_eq!(property(&o, &spec()), "reliable");
        // A gap right at the start too.
        let o = vec![Start { from: 2 }, at(&r, 3)];
        assert_eq!(property(&o, &spec()), "reliable");
    }

    #[test]
    fn a_resume_that_skips_or_repeats_breaks_resumable() {
        let r = reference();
        let skip = vec![Start { from: 2 }, at(&r, 2), Resume { node: NodeId(3), next: 4 }];
        assert_eq!(property(&skip, &spec()), "resumable");
        let repeat =
            vec![Start { from: 2 }, at(&r, 2), at(&r, 3), Resume { node: NodeId(3), next: 3 }];
        assert_eq!(property(&repeat, &spec()), "resumable");
        // A resume past revisions holding nothing wanted (5: key c) is fine, and a later
        // delivery below the resume point is not.
        let ok = vec![Start { from: 5 }, Resume { node: NodeId(3), next: 6 }, at(&r, 6)];
        assert_eq!(check_watch("w0", &spec(), &ok, &reference()), Ok(()));
        let below = vec![Start { from: 5 }, Resume { node: NodeId(3), next: 6 }, at(&r, 5)];
        assert_eq!(property(&below, &spec()), "resumable");
    }

    #[test]
    fn a_cancellation_for_a_compaction_below_the_watch_breaks_resumable() {
        let r = reference();
        let ok = vec![
            Start { from: 2 },
            at(&r, 2),
            Cancel { compact_revision: 4 },
            Start { from: 5 },
            at(&r, 6),
        ];
        assert_eq!(check_watch("w0", &spec(), &ok, &reference()), Ok(()));
        let bad = vec![Start { from: 2 }, at(&r, 2), at(&r, 3), Cancel { compact_revision: 3 }];
        assert_eq!(property(&bad, &spec()), "resumable");
        // Nothing may follow a cancellation but a new watch.
        let after = vec![Start { from: 2 }, Cancel { compact_revision: 4 }, at(&r, 6)];
        assert_eq!(property(&after, &spec()), "ordered");
    }

    #[test]
    fn a_progress_notification_ahead_of_the_events_breaks_bookmarkable() {
        let r = reference();
        let early = vec![Start { from: 2 }, at(&r, 2), Progress { revision: 3 }];
        assert_eq!(property(&early, &spec()), "bookmarkable");
        let late =
            vec![Start { from: 2 }, at(&r, 2), Progress { revision: 2 }, Progress { revision: 6 }];
        assert_eq!(property(&late, &spec()), "bookmarkable");
        let stale = vec![Start { from: 5 }, Progress { revision: 5 }, at(&r, 5)];
        assert_eq!(property(&stale, &spec()), "bookmarkable");
    }

    #[test]
    fn a_wrong_or_unasked_prev_kv_is_caught() {
        let r = reference();
        let mut wrong = at(&r, 3);
        if let Deliver(d) = &mut wrong {
            d.events[1].prev_kv = Some(kv("a", 2, "other"));
        }
        let o = vec![Start { from: 3 }, wrong];
        assert_eq!(property(&o, &spec()), "prev_kv");
        // Not asked for: it must be absent.
        let no_prev = WatchSpec { prev_kv: false, ..spec() };
        let o = vec![Start { from: 4 }, at(&r, 4)];
        assert_eq!(property(&o, &no_prev), "prev_kv");
        let stripped = Deliver(RevisionEvents {
            revision: 4,
            events: vec![Event { prev_kv: None, ..delete("a", 4, 3) }],
        });
        assert_eq!(check_watch("w0", &no_prev, &[Start { from: 4 }, stripped], &r), Ok(()));
    }

    #[test]
    fn a_filtered_event_delivered_is_caught() {
        let r = reference();
        let no_delete = WatchSpec { no_delete: true, ..spec() };
        let o = vec![Start { from: 4 }, at(&r, 4)];
        assert_eq!(property(&o, &no_delete), "filters");
        // A key outside the range.
        let o = vec![Start { from: 5 }, at(&r, 5)];
        assert_eq!(property(&o, &spec()), "filters");
        // With NODELETE, revision 4 holds nothing wanted: skipping it is no gap.
        let o = vec![Start { from: 2 }, at(&r, 2), at(&r, 3), at(&r, 6)];
        assert_eq!(check_watch("w0", &no_delete, &o, &r), Ok(()));
    }

    #[test]
    fn replicas_producing_different_events_for_a_revision_are_caught() {
        let mut reference = EventReference::default();
        let three = RevisionEvents { revision: 3, events: vec![put("a", 3, Some(2))] };
        reference.on_events(NodeId(1), std::slice::from_ref(&three)).unwrap();
        reference.on_events(NodeId(2), std::slice::from_ref(&three)).unwrap();
        let other = RevisionEvents { revision: 3, events: vec![put("a", 3, None)] };
        let v = reference.on_events(NodeId(3), &[other]).unwrap_err();
        assert_eq!(v.property, "replicas agree on events");
        assert_eq!(reference.check().unwrap_err(), v, "kept for the final checks");
    }
}
