//! Change events for watchers: what each applied entry changed, and the history of changes
//! kept in the multi-version index, as etcd's `mvccpb.Event`.
//!
//! The store produces events in two ways that agree exactly:
//!
//! - **live**, while applying: [`Store::take_events`](crate::Store::take_events) hands out the
//!   events of the entries applied since the last call, so the server can feed watchers that
//!   are caught up without reading the index again;
//! - **from history**: [`Store::history`](crate::Store::history) rebuilds the events of past
//!   revisions from the index, for a watcher that starts in the past or fell behind. It reads
//!   only the persistent index, so it can run on a clone of the store on another thread.
//!
//! Within one revision, events come in the order of the operations that made them: each
//! version in the index carries its position within its revision (etcd's sub-revision). etcd
//! refuses a transaction that writes one key twice (`duplicate key given in txn request`), so a
//! revision holds at most one event per key.

use crate::api::KeyValue;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A put: the key was created or modified (`create_revision == mod_revision` on a create).
    Put,
    /// A deletion, by DeleteRange, a transaction or a lease revoke.
    Delete,
}

/// One change, as etcd's `mvccpb.Event`.
///
/// For a put, `kv` is the new version. For a delete, `kv` has the key and `mod_revision` set
/// to the delete's revision, every other field zero or empty (as etcd). `prev_kv` is the
/// version before the change (`None` if the key did not exist); it is always filled, and the
/// server drops it when the watcher did not ask for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change (see the type's doc for a delete).
    pub kv: KeyValue,
    /// The key before the change, if it existed.
    pub prev_kv: Option<KeyValue>,
}

/// All events of one revision, in the order of the operations that made them: a
/// transaction's puts and deletes in request order (nested transactions where they stand); a
/// DeleteRange's or a lease revoke's keys in key order, as etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionEvents {
    /// The revision the events happened at.
    pub revision: i64,
    /// The events; never empty.
    pub events: Vec<Event>,
}

/// One page of history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Revisions with events in the asked range, in revision order, each complete.
    pub revisions: Vec<RevisionEvents>,
    /// Where to continue if the page was cut by `max_events` (never inside a revision): the
    /// first revision with an event left out. `None` when the page holds every event asked for.
    pub next: Option<i64>,
}

/// Why history cannot be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The start revision is at or below the last compaction, whose removed versions the
    /// history would need. The watcher must be cancelled with this `compact_revision`.
    #[error("mvcc: required revision has been compacted")]
    Compacted {
        /// The store's compaction revision.
        compact_revision: i64,
    },
}

/// Events applied and not yet taken. Output, not state: equality ignores it (two stores that
/// applied the same entries are equal whether or not their events were taken) and a clone
/// starts empty (clones are made to read or snapshot, and must not copy pending output).
#[derive(Debug, Default)]
pub(crate) struct EventBuffer {
    pub(crate) revisions: Vec<RevisionEvents>,
    /// Lease deadline changes since the last `Store::take_lease_changes`.
    pub(crate) lease_changes: Vec<crate::lease::LeaseChange>,
}

impl Clone for EventBuffer {
    fn clone(&self) -> Self {
        EventBuffer::default()
    }
}

impl PartialEq for EventBuffer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EventBuffer {}
