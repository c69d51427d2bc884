//! A watcher's position in the event stream, without I/O: [`WatchCursor`] decides which
//! events a watcher delivers, from history pages and from live batches alike, and remembers
//! where it stands, so that a watch continues exactly where it left off whichever member, page
//! or batch the next events come from.
//!
//! The guarantees etcd gives a watch (ordered, unique, atomic, reliable, resumable) come from
//! one rule, kept here: a cursor delivers only revisions at or above [`WatchCursor::next`],
//! each whole, and then moves `next` past everything it was shown complete. A caller feeds it
//! from any mix of sources (a history page read from a copy of the store, a live batch that
//! overlaps what the page held, the history of another member after a reconnect) and never
//! has to deduplicate itself.
//!
//! The cursor does not read the store, fragment responses or send anything: its caller does.
//! The server's watcher (`api/watch.rs`) and the simulator's watchers both run on it, so the
//! simulator's watch checker judges the selection and bookkeeping the server runs.

use bytes::Bytes;

use crate::event::{Event, EventKind, HistoryPage, RevisionEvents};
use crate::mvcc::KeyRange;

/// Which events of a key range a watcher wants: etcd's `WatchCreateRequest` without its
/// stream-level fields (id, progress notifications, fragments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// First key of the range, or the only key.
    pub key: Bytes,
    /// etcd's `range_end`: empty for the single key `key`, `"\0"` for every key `>= key`,
    /// otherwise the exclusive end of `[key, range_end)` (see [`crate::prefix_end`]).
    pub range_end: Bytes,
    /// etcd's `NOPUT` filter: puts are not delivered.
    pub no_put: bool,
    /// etcd's `NODELETE` filter: deletes are not delivered.
    pub no_delete: bool,
    /// Deliver each event's previous key-value (etcd's `prev_kv`); otherwise it is dropped.
    pub prev_kv: bool,
}

impl WatchSpec {
    /// A watch of `key` and `range_end` (etcd's conventions) with no filter and no `prev_kv`.
    pub fn new(key: impl Into<Bytes>, range_end: impl Into<Bytes>) -> WatchSpec {
        WatchSpec {
            key: key.into(),
            range_end: range_end.into(),
            no_put: false,
            no_delete: false,
            prev_kv: false,
        }
    }

    /// Whether `key` lies in the watched range.
    pub fn covers(&self, key: &[u8]) -> bool {
        KeyRange::new(&self.key, &self.range_end).contains(key)
    }

    /// Whether the watcher wants `event`: its key is in the range and its kind not filtered.
    pub fn wants(&self, event: &Event) -> bool {
        let filtered = match event.kind {
            EventKind::Put => self.no_put,
            EventKind::Delete => self.no_delete,
        };
        !filtered && self.covers(&event.kv.key)
    }
}

/// Where one watch stands: what it wants and the first revision it has not yet delivered.
///
/// Feed it history pages ([`WatchCursor::on_history`]) and live batches
/// ([`WatchCursor::on_live`]) in any order and overlap; each returns only what the watcher
/// must send now. To resume a watch elsewhere (another member, a new stream), start a cursor
/// at [`WatchCursor::next`]: etcd's resumable guarantee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchCursor {
    spec: WatchSpec,
    /// The first revision not yet delivered (nor passed over as holding nothing wanted).
    /// Invariant: `>= 1`; it only grows; every revision delivered was below it afterwards.
    next: i64,
}

impl WatchCursor {
    /// A watch that delivers from `start_revision` on. etcd's start revision 0 ("from now") is
    /// the caller's to resolve (to the store's revision + 1); anything below 1 starts at 1.
    pub fn new(spec: WatchSpec, start_revision: i64) -> WatchCursor {
        WatchCursor { spec, next: start_revision.max(1) }
    }

    /// What the watch wants.
    pub fn spec(&self) -> &WatchSpec {
        &self.spec
    }

    /// The first revision not yet delivered: where history must be read from, where a resumed
    /// watch must start, and one above what a progress notification may announce.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// A page of [`Store::history`](crate::Store::history) asked for with `to = through`.
    /// Returns the wanted events of its revisions at or above [`WatchCursor::next`] and moves
    /// `next` past `through`, or only past `page.next - 1` when the page was cut there (the
    /// rest of the range is still to be read).
    pub fn on_history(&mut self, page: &HistoryPage, through: i64) -> Vec<RevisionEvents> {
        let complete_through = page.next.map_or(through, |n| through.min(n - 1));
        self.take(&page.revisions, complete_through)
    }

    /// A live batch: events of revisions just applied, and the store's revision after them
    /// (every revision up to it has been shown, to this cursor or to history before). Returns
    /// the wanted events of its revisions at or above [`WatchCursor::next`] (a batch that
    /// overlaps a history page already read delivers nothing twice) and moves `next` past
    /// `store_revision`.
    ///
    /// The caller must not pass a batch that follows a gap (events it never fed, such as after
    /// the store installed a snapshot): it catches up from history instead, or the events of
    /// the gap are silently skipped.
    pub fn on_live(
        &mut self,
        revisions: &[RevisionEvents],
        store_revision: i64,
    ) -> Vec<RevisionEvents> {
        self.take(revisions, store_revision)
    }

    /// The wanted part of every revision at or above `next` (whole revisions, in order), then
    /// `next` past `through`. A revision below one just taken is ignored, so that even
    /// unordered input cannot make the cursor deliver out of order or twice.
    fn take(&mut self, revisions: &[RevisionEvents], through: i64) -> Vec<RevisionEvents> {
        let mut out = Vec::new();
        for r in revisions {
            if r.revision < self.next {
                continue;
            }
            self.next = r.revision + 1;
            let events: Vec<Event> = r
                .events
                .iter()
                .filter(|e| self.spec.wants(e))
                .map(|e| Event {
                    kind: e.kind,
                    kv: e.kv.clone(),
                    prev_kv: if self.spec.prev_kv { e.prev_kv.clone() } else { None },
                })
                .collect();
            if !events.is_empty() {
                out.push(RevisionEvents { revision: r.revision, events });
            }
        }
        self.next = self.next.max(through.saturating_add(1));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KeyValue;
    use crate::{Command, DeleteRangeRequest, Proposal, PutRequest, RequestOp, Store, TxnRequest};

    fn kv(key: &str, revision: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            mod_revision: revision,
            ..KeyValue::default()
        }
    }

    fn put(key: &str, revision: i64, prev: Option<i64>) -> Event {
        Event { kind: EventKind::Put, kv: kv(key, revision), prev_kv: prev.map(|p| kv(key, p)) }
    }

    fn delete(key: &str, revision: i64, prev: i64) -> Event {
        Event { kind: EventKind::Delete, kv: kv(key, revision), prev_kv: Some(kv(key, prev)) }
    }

    fn rev(revision: i64, events: Vec<Event>) -> RevisionEvents {
        RevisionEvents { revision, events }
    }

    fn revisions(out: &[RevisionEvents]) -> Vec<i64> {
        out.iter().map(|r| r.revision).collect()
    }

    fn everything() -> WatchSpec {
        WatchSpec::new("\0", "\0")
    }

    #[test]
    fn starts_at_its_start_revision_and_moves_past_what_it_was_shown() {
        let mut c = WatchCursor::new(everything(), 3);
        let out =
            c.on_live(&[rev(2, vec![put("a", 2, None)]), rev(3, vec![put("a", 3, Some(2))])], 4);
        assert_eq!(revisions(&out), [3]);
        assert_eq!(c.next(), 5, "revision 4 changed nothing the batch showed, and is passed");
    }

    #[test]
    fn start_revision_zero_or_below_starts_at_one() {
        assert_eq!(WatchCursor::new(everything(), 0).next(), 1);
        assert_eq!(WatchCursor::new(everything(), -5).next(), 1);
    }

    #[test]
    fn a_live_batch_overlapping_history_already_read_delivers_nothing_twice() {
        let mut c = WatchCursor::new(everything(), 2);
        let page = HistoryPage { revisions: vec![rev(2, vec![put("a", 2, None)])], next: None };
        assert_eq!(revisions(&c.on_history(&page, 3)), [2]);
        let live = [rev(3, vec![put("b", 3, None)]), rev(4, vec![put("c", 4, None)])];
        // The page was read from a copy at revision 3, so the live batch that made revision 3
        // is already covered: delivery resumes at 4.
        assert_eq!(revisions(&c.on_live(&live, 4)), [4]);
        assert_eq!(c.next(), 5);
    }

    #[test]
    fn a_cut_page_advances_only_through_the_revision_before_its_next() {
        let mut c = WatchCursor::new(everything(), 2);
        let page = HistoryPage { revisions: vec![rev(2, vec![put("a", 2, None)])], next: Some(5) };
        assert_eq!(revisions(&c.on_history(&page, 9)), [2]);
        assert_eq!(c.next(), 5, "revisions 5..=9 are still to be read");
        let page = HistoryPage { revisions: vec![rev(5, vec![put("a", 5, Some(2))])], next: None };
        assert_eq!(revisions(&c.on_history(&page, 9)), [5]);
        assert_eq!(c.next(), 10);
    }

    #[test]
    fn history_of_a_store_behind_the_cursor_moves_nothing_back() {
        // Resumed on a member that has not applied as far as the watch already got.
        let mut c = WatchCursor::new(everything(), 8);
        let page = HistoryPage { revisions: vec![], next: None };
        assert!(c.on_history(&page, 5).is_empty());
        assert_eq!(c.next(), 8);
        assert!(c.on_live(&[rev(6, vec![put("a", 6, None)])], 6).is_empty());
        assert_eq!(c.next(), 8);
    }

    #[test]
    fn unordered_input_is_never_delivered_out_of_order_or_twice() {
        let mut c = WatchCursor::new(everything(), 1);
        let out = c.on_live(
            &[rev(3, vec![put("a", 3, None)]), rev(2, vec![put("b", 2, None)]), rev(3, vec![])],
            3,
        );
        assert_eq!(revisions(&out), [3]);
    }

    #[test]
    fn filters_and_range_keep_only_wanted_events_and_drop_emptied_revisions() {
        let spec = WatchSpec { no_put: true, ..WatchSpec::new("a", crate::prefix_end(b"a")) };
        let mut c = WatchCursor::new(spec, 1);
        let out = c.on_live(
            &[
                rev(2, vec![put("a1", 2, None), delete("a2", 2, 1), delete("b", 2, 1)]),
                rev(3, vec![put("a1", 3, Some(2))]),
                rev(4, vec![delete("b", 4, 2)]),
            ],
            4,
        );
        assert_eq!(out, [rev(2, vec![Event { prev_kv: None, ..delete("a2", 2, 1) }])]);
        assert_eq!(c.next(), 5);

        let spec = WatchSpec { no_delete: true, ..WatchSpec::new("b", "") };
        let mut c = WatchCursor::new(spec, 1);
        let out =
            c.on_live(&[rev(2, vec![put("b", 2, None), put("bb", 2, None), delete("b", 2, 1)])], 2);
        assert_eq!(out, [rev(2, vec![put("b", 2, None)])]);
    }

    #[test]
    fn prev_kv_is_kept_only_when_asked() {
        let events = [rev(3, vec![put("a", 3, Some(2)), delete("b", 3, 1)])];
        let mut without = WatchCursor::new(everything(), 1);
        let out = without.on_live(&events, 3);
        assert!(out[0].events.iter().all(|e| e.prev_kv.is_none()));
        let mut with = WatchCursor::new(WatchSpec { prev_kv: true, ..everything() }, 1);
        assert_eq!(with.on_live(&events, 3), events);
    }

    #[test]
    fn history_and_live_events_of_a_real_store_deliver_the_same_stream() {
        let mut store = Store::default();
        let mut live = Vec::new();
        let commands = [
            Command::Put(PutRequest::new("a", "1")),
            Command::Put(PutRequest::new("b", "1")),
            Command::Txn(TxnRequest {
                compare: vec![],
                success: vec![
                    RequestOp::Put(PutRequest::new("c", "1")),
                    RequestOp::DeleteRange(DeleteRangeRequest::single("a")),
                ],
                failure: vec![],
            }),
            Command::Put(PutRequest::new("a", "2")),
        ];
        for (i, cmd) in commands.into_iter().enumerate() {
            store.apply(i as u64 + 1, 0, &Proposal::new(cmd).encode()).unwrap();
            live.push((store.take_events(), store.revision()));
        }
        let spec = WatchSpec { prev_kv: true, ..WatchSpec::new("a", "c") };
        // Live from the start.
        let mut from_live = WatchCursor::new(spec.clone(), 2);
        let mut streamed = Vec::new();
        for (batch, revision) in &live {
            streamed.extend(from_live.on_live(batch, *revision));
        }
        // From history one event per page, then the last live batch again (overlapping).
        let mut from_history = WatchCursor::new(spec, 2);
        let mut replayed = Vec::new();
        let upto = store.revision();
        while from_history.next() <= upto {
            let page = store.history(b"a", b"c", from_history.next(), upto, 1).unwrap();
            replayed.extend(from_history.on_history(&page, upto));
        }
        let (batch, revision) = live.last().unwrap();
        replayed.extend(from_history.on_live(batch, *revision));
        assert_eq!(revisions(&streamed), [2, 3, 4, 5]);
        assert_eq!(streamed, replayed);
        assert_eq!(from_live.next(), from_history.next());
    }
}
