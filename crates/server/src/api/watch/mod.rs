//! `etcdserverpb.Watch`: event streams, as etcd 3.4 serves them.
//!
//! One gRPC stream carries any number of watchers, and one task serves each stream: it reads
//! the client's requests (create, cancel, progress), follows the member's feed of applied
//! events, and writes every response into the stream's bounded queue, which gRPC drains toward
//! the client. Watchers of a stream that want the same events from the same revision (the same
//! range, filters and `prev_kv`: etcd's many watchers of one prefix) form a **group** with one
//! cursor: a live batch is selected and converted to protobuf once per group, and each
//! watcher's response shares the events' keys and values.
//!
//! ```text
//!  replica thread ──Published (per turn)──> broadcast feed (WATCH_FEED_MAX batches)
//!                                                   │ (one receiver per stream)
//!  stream task:  batch ─> per live group: cursor ─> protobuf once ─> a response per watcher
//!                create ─> start above what the feed still brings: join a live group
//!                          otherwise: a catch-up task for a new group
//!  catch-up task: copy of the store (O(1), through `inspect`) ─> history pages from the
//!                group's next revision up to the copy's ─> pages back to the stream task
//!                ─> cursor back: brought up to the stream's position from the batches the
//!                stream retained, then live
//! ```
//!
//! **Catching up never holds the replica thread**: the copy of the store shares its persistent
//! index, and the history is read from it on a catch-up task, a page (about
//! [`HISTORY_PAGE_EVENTS`] events, whole revisions) at a time, each page sent before the next is
//! read. **Memory is bounded**: per member, the feed keeps at most `WATCH_FEED_MAX` batches; per
//! stream, at most [`STREAM_RESPONSES_MAX`] responses wait for the client, at most
//! [`CATCH_UP_REPORTS_MAX`] history pages wait for the stream task, and the stream keeps the
//! last [`RETAINED_BATCHES_MAX`] batches it followed (the feed's own, shared). A stream that
//! falls behind the feed (a slow client) is told it lagged; it subscribes again and its groups
//! catch up from the store's history, from their next revision; if that revision was compacted
//! meanwhile they are cancelled with `compact_revision`, as etcd does. A snapshot installed
//! from the leader replaces the store without events: the feed says `Reset`, and every group
//! catches up from the new store the same way. So a watcher sees every revision after its
//! start exactly once, in order, all events of a revision in one response. Everything a
//! watcher is sent goes out through its stream's task, so nothing follows its cancellation.
//!
//! **Which events a watcher sends, and where it stands, is decided by kv's
//! [`WatchCursor`]**, not here: the range and filters, `prev_kv`, skipping what a history page
//! or an earlier batch already covered, and the group's next revision (the revision its
//! history is read from after a lag or a reset, and, one below, the revision it has processed
//! for progress). The simulator's watchers run on the same cursor and its watch checker judges
//! what they deliver (ordered, unique, atomic, reliable, resumable, bookmarkable, `prev_kv`,
//! filters) across crashes, partitions, snapshot installs and compactions, so that checker
//! exercises the selection and bookkeeping the server runs. This module keeps the I/O around
//! it: the feed, copies of the store, history pages on a blocking thread, the conversion to
//! protobuf, fragments, progress, cancellation and metrics.
//!
//! etcd's rules kept here: watch ids are chosen by the server from 0 up unless the client picks
//! one ("mvcc: duplicate watch ID provided on the WatchStream" for one in use, answered as a
//! created-and-cancelled response with id -1); a create is answered with `created` and the
//! current revision; a start revision of 0 means the next revision; a cancel of an unknown id
//! is not answered; a progress request is answered (watch id -1) with the current revision once
//! every watcher of the stream has taken everything up to it; `progress_notify` watchers get an
//! empty response after an interval without events (none while their start revision is ahead
//! of the store, as etcd since its issue 20221); `fragment` splits a response of two events
//! or more that reaches the request size limit plus gRPC's overhead allowance (2 MiB by
//! default), cut where etcd cuts; a stream opened with `hasleader=true` metadata is refused, or
//! closed, with "etcdserver: no leader" while the member has no leader. A create, cancel or
//! progress request reads the current revision on the replica thread, as etcd reads its store;
//! a compaction cancel carries header revision 0, as etcd's does.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tenure_kv::{Event, EventKind, HistoryError, RevisionEvents, Store, WatchCursor, WatchSpec};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tonic::{Request, Status, Streaming};

mod wire;

use wire::EncodedEvents;
pub use wire::{Frame, WatchServer};

use super::Services;
use super::convert::key_value_to_pb;
use crate::ServerError;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use crate::runtime::Published;

/// Responses queued per stream toward the client at most; a stream whose client reads slower
/// than events arrive waits here, then lags the feed and its watchers catch up from history.
pub const STREAM_RESPONSES_MAX: usize = 128;

/// Events read from the store's history per page while a watcher catches up.
pub const HISTORY_PAGE_EVENTS: usize = 1000;

/// etcd's default interval between progress notifications (10 minutes).
pub const PROGRESS_NOTIFY_INTERVAL_DEFAULT: Duration = Duration::from_secs(600);

/// etcd's answer to a client-chosen watch id already in use on the stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's answer to a range that selects no key.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
/// The cancel reason of a watch the user may not (or no longer) read: etcd's, which is the
/// text of its gRPC status.
const PERMISSION_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// The watch id etcd puts on responses that belong to no watcher (progress, refused creates).
const NO_WATCH_ID: i64 = -1;

/// How watch streams behave; set from the member's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    /// Interval between progress notifications for watchers that asked for them.
    pub progress_notify_interval: Duration,
    /// How often a `hasleader=true` stream checks that the member has a leader (etcd checks
    /// once per election timeout).
    pub leader_check_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            progress_notify_interval: PROGRESS_NOTIFY_INTERVAL_DEFAULT,
            leader_check_interval: Duration::from_secs(1),
        }
    }
}

type Outgoing = mpsc::Sender<Result<Frame, Status>>;

/// The response stream handed to gRPC.
pub type ResponseStream = Pin<
    Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<Frame, Status>> + Send + 'static>,
>;

/// The Watch service as the generated trait has it, for callers inside the server that want
/// whole `WatchResponse`s (the JSON gateway); gRPC clients are served by [`WatchServer`],
/// which sends the same responses without decoding them again.
#[tonic::async_trait]
impl pb::watch_server::Watch for Services {
    type WatchStream = Pin<
        Box<
            dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::WatchResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        use tokio_stream::StreamExt as _;
        let frames = open(self, request).await?.into_inner();
        let responses = frames.map(|frame| frame.map(Frame::into_response));
        Ok(tonic::Response::new(Box::pin(responses)))
    }
}

/// Opens a watch stream: `etcdserverpb.Watch/Watch` (served by [`WatchServer`]).
async fn open(
    services: &Services,
    request: Request<Streaming<pb::WatchRequest>>,
) -> Result<tonic::Response<ResponseStream>, Status> {
    // clientv3's WithRequireLeader.
    let require_leader =
        request.metadata().get("hasleader").and_then(|v| v.to_str().ok()) == Some("true");
    if require_leader && services.runtime.status().leader.is_none() {
        return Err(ServerError::NoLeader.into());
    }
    // Who opened the stream: every watcher of it is checked as this user, at its creation
    // and again whenever the auth state changes.
    let auth = services.auth_info(&request)?;
    let (tx, rx) = mpsc::channel(STREAM_RESPONSES_MAX);
    let (reports_tx, reports) = mpsc::channel(CATCH_UP_REPORTS_MAX);
    services.runtime.metrics().watch_stream_opened();
    let stream = StreamState {
        services: services.clone(),
        tx,
        // Subscribed before any create reads the store's revision (see `fed_through`).
        feed: services.runtime.subscribe(),
        epoch: 0,
        fed_through: None,
        retained: VecDeque::new(),
        retained_after: None,
        groups: BTreeMap::new(),
        next_group: 0,
        last_joined: None,
        merge_pending: false,
        index: BTreeMap::new(),
        reports_tx,
        reports,
        progress_pending: VecDeque::new(),
        notify_count: 0,
        next_id: 0,
        require_leader,
        auth,
        auth_seen: services.runtime.auth(),
    };
    tokio::spawn(stream.run(request.into_inner()));
    let out = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(tonic::Response::new(Box::pin(out)))
}

/// Reports from catch-up tasks queued toward their stream at most (each holds at most a history
/// page's events).
const CATCH_UP_REPORTS_MAX: usize = 8;

/// Events a stream takes from the feed for one response per watcher at most (it stops
/// taking batches once it reached this many; a batch is never split).
const COALESCED_EVENTS_MAX: usize = HISTORY_PAGE_EVENTS;

/// Live batches a stream keeps after following them, so that a group whose catch-up from
/// history ended behind the stream's position can be brought up to it without another
/// catch-up. They are the feed's own batches (shared `Arc`s): a stream near the feed's head
/// keeps nothing the feed does not keep too.
const RETAINED_BATCHES_MAX: usize = crate::runtime::WATCH_FEED_MAX;

/// What a watcher was asked for beyond the events it wants (those are its group's cursor's
/// [`WatchSpec`]): the stream-level fields of etcd's `WatchCreateRequest`.
#[derive(Clone, Copy, Debug)]
struct StreamFields {
    id: i64,
    progress_notify: bool,
    fragment: bool,
}

/// One watcher of a group.
struct Member {
    fields: StreamFields,
    /// Nothing was sent to this watcher since the last progress tick (etcd's rule for periodic
    /// progress notifications: a watcher that received events in an interval gets none).
    quiet: bool,
}

/// Watchers of one stream that want the same events from the same revision on: they share one
/// [`WatchCursor`], so the events of a batch are selected and converted to protobuf once for
/// all of them (etcd's watchers on one key range, the common case, differ only in their ids).
struct Group {
    /// The group's position; `None` while a catch-up task holds it.
    cursor: Option<WatchCursor>,
    /// Invariant: never empty (a group whose last member is cancelled is removed).
    members: Vec<Member>,
    /// The store revision through which every member has taken every event (sent or
    /// filtered), queued toward the client: the cursor's next revision - 1 once its responses
    /// were queued.
    processed: i64,
    /// The store revision the group was last shown (a copy's at catch-up, a live batch's after
    /// it). Below `processed` only while the start revision is in the future.
    observed: i64,
    /// The task catching the group up from history, while it runs.
    catching_up: Option<CatchUpTask>,
    /// The key range its watchers read (for permission checks).
    key: Bytes,
    range_end: Bytes,
}

/// A running catch-up; aborted when dropped.
struct CatchUpTask {
    task: JoinHandle<()>,
    counted: CatchingUp,
}

impl Drop for CatchUpTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a catch-up task tells its stream, in order.
enum Report {
    /// The wanted events of a history page (possibly none), through revision `through`.
    Events { group: u64, through: i64, events: Vec<mvccpb::Event> },
    /// The group's next revision was compacted: its watchers are cancelled.
    Compacted { group: u64, compact_revision: i64 },
    /// History was read through `observed`, a copy's revision; the cursor is handed back.
    Done { group: u64, epoch: u64, cursor: WatchCursor, observed: i64 },
    /// The replica stopped; the group stays as it is until the stream ends.
    Stopped { group: u64 },
}

/// One watch stream: its watchers in groups, and the task that serves them all.
///
/// One task per stream, not per watcher: the stream follows the feed once and hands each live
/// batch to each group's cursor; a group catching up from history does so on a task of its own
/// whose pages come back here to be sent, so everything a watcher is sent goes through this
/// task, in order, and nothing is sent to a watcher after it was cancelled.
struct StreamState {
    services: Services,
    tx: Outgoing,
    feed: broadcast::Receiver<Arc<Published>>,
    /// Counts the feed subscriptions this stream made (a lag or a reset makes a new one); a
    /// catch-up's copy of the store, taken after its task started, is covered by `retained`
    /// and the feed only if no new subscription was made meanwhile.
    epoch: u64,
    /// Every revision above this is still to come from `feed` (so a watcher starting above it
    /// can join the live groups at once). Set from a revision read on the replica thread after
    /// the subscription, or a batch's revision once followed; `None` after a new subscription
    /// until one of those.
    fed_through: Option<i64>,
    /// The live batches followed since the subscription, the last [`RETAINED_BATCHES_MAX`].
    retained: VecDeque<Arc<Published>>,
    /// `None` while `retained` holds every batch since the subscription; otherwise the revision
    /// of the last batch dropped from it (everything above it is retained or still to come).
    retained_after: Option<i64>,
    groups: BTreeMap<u64, Group>,
    next_group: u64,
    /// The group the last watcher joined (where an identical new watcher most likely fits).
    last_joined: Option<u64>,
    /// Live groups may have equal cursors and could merge.
    merge_pending: bool,
    /// Watch id -> its group.
    index: BTreeMap<i64, u64>,
    reports_tx: mpsc::Sender<Report>,
    reports: mpsc::Receiver<Report>,
    /// Revisions of progress requests not answered yet (nondecreasing).
    progress_pending: VecDeque<i64>,
    /// Watchers that asked for progress notifications.
    notify_count: usize,
    /// The next id the server picks (etcd: from 0, skipping ids in use).
    next_id: i64,
    require_leader: bool,
    /// Who opened the stream.
    auth: tenure_kv::AuthInfo,
    /// The auth state the watchers were last checked against.
    auth_seen: Arc<tenure_kv::AuthState>,
}

impl StreamState {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        let mut leader_check = tokio::time::interval(self.services.watch.leader_check_interval);
        leader_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let interval = self.services.watch.progress_notify_interval;
        let mut notify = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        notify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(r)) => self.handle(r).await,
                    Ok(None) | Err(_) => Err(()),
                },
                item = self.feed.recv() => self.on_feed(item).await,
                Some(report) = self.reports.recv() => self.on_report(report).await,
                _ = notify.tick(), if self.notify_count > 0 => self.notify_progress().await,
                _ = leader_check.tick(), if self.require_leader => {
                    if self.services.runtime.status().leader.is_none() {
                        let _ = self.tx.send(Err(ServerError::NoLeader.into())).await;
                        Err(())
                    } else {
                        Ok(())
                    }
                }
                _ = self.tx.closed() => Err(()),
            };
            if step.is_err() || self.answer_progress().await.is_err() {
                break;
            }
        }
        // Drop aborts the catch-ups and closes the stream in the metrics.
    }

    /// Handles one request; `Err` once the client is gone.
    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), ()> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => {
                let target = current_revision(&self.services).await;
                self.progress_pending.push_back(target);
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), ()> {
        self.tx.send(Ok(Frame::from(response))).await.map_err(|_| ())
    }

    /// A header with the store's current revision (see [`current_revision`]).
    async fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.services.ctx().header(current_revision(&self.services).await))
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) -> Result<(), ()> {
        let spec = watch_spec(&c);
        let refuse = |reason: &str| pb::WatchResponse {
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        let empty = !spec.range_end.is_empty()
            && spec.range_end.as_ref() != b"\0"
            && spec.range_end <= spec.key;
        if empty {
            let r = pb::WatchResponse { header: self.header().await, ..refuse(EMPTY_RANGE) };
            return self.send(r).await;
        }
        self.enforce_auth().await?;
        if self.auth_seen.check_range(&self.auth, &spec.key, &spec.range_end).is_err() {
            let r = pb::WatchResponse { header: self.header().await, ..refuse(PERMISSION_DENIED) };
            return self.send(r).await;
        }
        let id = if c.watch_id != 0 {
            if self.index.contains_key(&c.watch_id) {
                let r = pb::WatchResponse { header: self.header().await, ..refuse(DUPLICATE_ID) };
                return self.send(r).await;
            }
            c.watch_id
        } else {
            while self.index.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let fields = StreamFields { id, progress_notify: c.progress_notify, fragment: c.fragment };
        // Read after the feed subscription: every revision above it is still to come from
        // the feed.
        let exact = exact_revision(&self.services).await;
        let current = match exact {
            Some(r) => {
                self.fed_through = Some(self.fed_through.map_or(r, |f| f.max(r)));
                r
            }
            None => self.services.runtime.status().revision,
        };
        let start = if c.start_revision > 0 { c.start_revision } else { current + 1 };
        let created = pb::WatchResponse {
            header: Some(self.services.ctx().header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        // The created response goes first: the watcher takes events only after it was queued.
        self.send(created).await?;
        self.services.runtime.metrics().watcher_added();
        if fields.progress_notify {
            self.notify_count += 1;
        }
        // etcd counts the created response as a send for progress notifications.
        let member = Member { fields, quiet: false };
        let cursor = WatchCursor::new(spec, start);
        let live = self.fed_through.is_some_and(|f| cursor.next() > f);
        if live {
            // Whatever the feed still brings is at or above the start: join the live groups.
            if let Some(token) = self.last_joined
                && let Some(g) = self.groups.get_mut(&token)
                && g.cursor.as_ref() == Some(&cursor)
            {
                g.members.push(member);
                self.index.insert(id, token);
                return Ok(());
            }
            let token = self.add_group(cursor, member, current);
            self.last_joined = Some(token);
            self.merge_pending = true;
        } else {
            let token = self.add_group(cursor, member, current);
            self.catch_up(token);
        }
        Ok(())
    }

    fn add_group(&mut self, cursor: WatchCursor, member: Member, observed: i64) -> u64 {
        let token = self.next_group;
        self.next_group += 1;
        self.index.insert(member.fields.id, token);
        let group = Group {
            key: cursor.spec().key.clone(),
            range_end: cursor.spec().range_end.clone(),
            processed: cursor.next() - 1,
            cursor: Some(cursor),
            members: vec![member],
            observed,
            catching_up: None,
        };
        self.groups.insert(token, group);
        token
    }

    /// Starts a task that catches group `token` up from a fresh copy of the store's history.
    fn catch_up(&mut self, token: u64) {
        let Some(group) = self.groups.get_mut(&token) else { return };
        let Some(cursor) = group.cursor.take() else { return };
        let counted =
            CatchingUp::new(Arc::clone(self.services.runtime.metrics()), group.members.len());
        let task = tokio::spawn(catch_up(
            self.services.clone(),
            cursor,
            token,
            self.epoch,
            self.reports_tx.clone(),
        ));
        group.catching_up = Some(CatchUpTask { task, counted });
        if self.last_joined == Some(token) {
            self.last_joined = None;
        }
    }

    /// If the auth state changed since the watchers were last checked, cancels every watcher
    /// whose range the stream's user may no longer read (with etcd's "permission denied"),
    /// before anything more is delivered: the feed publishes a turn's auth state before its
    /// events, so no event applied after a revoke reaches a watcher it revoked.
    async fn enforce_auth(&mut self) -> Result<(), ()> {
        let state = self.services.runtime.auth();
        if Arc::ptr_eq(&state, &self.auth_seen) {
            return Ok(());
        }
        self.auth_seen = state;
        let denied: Vec<u64> = self
            .groups
            .iter()
            .filter(|(_, g)| self.auth_seen.check_range(&self.auth, &g.key, &g.range_end).is_err())
            .map(|(t, _)| *t)
            .collect();
        for token in denied {
            let Some(g) = self.groups.remove(&token) else { continue };
            if self.last_joined == Some(token) {
                self.last_joined = None;
            }
            for m in &g.members {
                self.index.remove(&m.fields.id);
                if m.fields.progress_notify {
                    self.notify_count -= 1;
                }
                self.services.runtime.metrics().watcher_removed();
                let r = pb::WatchResponse {
                    header: self.header().await,
                    watch_id: m.fields.id,
                    canceled: true,
                    cancel_reason: PERMISSION_DENIED.to_string(),
                    ..Default::default()
                };
                self.send(r).await?;
            }
        }
        Ok(())
    }

    async fn cancel(&mut self, id: i64) -> Result<(), ()> {
        let Some(token) = self.index.remove(&id) else { return Ok(()) };
        self.remove_member(token, id);
        let r = pb::WatchResponse {
            header: self.header().await,
            watch_id: id,
            canceled: true,
            ..Default::default()
        };
        self.send(r).await
    }

    /// Takes watcher `id` out of group `token` (the index entry is the caller's), and the
    /// group out of the stream if it was the last.
    fn remove_member(&mut self, token: u64, id: i64) {
        let Some(group) = self.groups.get_mut(&token) else { return };
        let Some(i) = group.members.iter().position(|m| m.fields.id == id) else { return };
        let member = group.members.remove(i);
        if member.fields.progress_notify {
            self.notify_count -= 1;
        }
        if let Some(c) = &mut group.catching_up {
            c.counted.release(1);
        }
        self.services.runtime.metrics().watcher_removed();
        if group.members.is_empty() {
            self.groups.remove(&token);
        }
    }

    /// Answers the progress requests whose revision every watcher has processed, in order:
    /// such an answer's revision bounds every event sent before it.
    async fn answer_progress(&mut self) -> Result<(), ()> {
        while let Some(&target) = self.progress_pending.front() {
            if self.groups.values().any(|g| g.processed < target) {
                return Ok(());
            }
            self.progress_pending.pop_front();
            let r = pb::WatchResponse {
                header: Some(self.services.ctx().header(target)),
                watch_id: NO_WATCH_ID,
                ..Default::default()
            };
            self.send(r).await?;
        }
        Ok(())
    }

    /// A new subscription to the feed, after a lag (batches lost) or a reset (a store
    /// replaced): every live group catches up from a fresh copy, and catch-ups that started
    /// before it will read again.
    fn resubscribe(&mut self) {
        self.feed = self.feed.resubscribe();
        self.epoch += 1;
        self.fed_through = None;
        self.retained.clear();
        self.retained_after = None;
        self.last_joined = None;
        let live: Vec<u64> =
            self.groups.iter().filter(|(_, g)| g.cursor.is_some()).map(|(t, _)| *t).collect();
        for token in live {
            self.catch_up(token);
        }
    }

    /// Follows the feed: `item` and the batches already waiting behind it (up to about
    /// [`COALESCED_EVENTS_MAX`] events), each group's selection from all of them in one
    /// response per watcher. A stream that fell behind thus catches up in fewer, larger
    /// responses, as a history page would give it; a revision is never split.
    async fn on_feed(
        &mut self,
        item: Result<Arc<Published>, broadcast::error::RecvError>,
    ) -> Result<(), ()> {
        let first = match item {
            Ok(p) => p,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(
                    "watch stream lagged {missed} batches behind the feed; catching up"
                );
                self.resubscribe();
                return Ok(());
            }
            Err(broadcast::error::RecvError::Closed) => return Err(()),
        };
        // A reset or a lag behind the batches taken: those batches are followed first (they
        // are contiguous), then the stream subscribes again.
        let mut broken = matches!(*first, Published::Reset);
        let mut batches = Vec::new();
        let mut events_count = 0;
        let mut next = Some(first);
        while let Some(published) = next.take() {
            if let Published::Events { revisions, .. } = &*published {
                events_count += revisions.iter().map(|r| r.events.len()).sum::<usize>();
                batches.push(published);
            }
            if broken || events_count >= COALESCED_EVENTS_MAX {
                break;
            }
            match self.feed.try_recv() {
                Ok(p) => {
                    broken = matches!(*p, Published::Reset);
                    next = Some(p);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => broken = true,
                Err(_) => {}
            }
        }
        // Read after every batch was taken: at least as new as the last batch's turn.
        self.enforce_auth().await?;
        if let Some(last) = batches.last()
            && let Published::Events { revision, .. } = &**last
        {
            let revision = *revision;
            self.fed_through = Some(self.fed_through.map_or(revision, |f| f.max(revision)));
            for group in self.groups.values_mut() {
                let Some(cursor) = &mut group.cursor else { continue };
                let mut wanted = Vec::new();
                for batch in &batches {
                    if let Published::Events { revisions, revision } = &**batch {
                        wanted.extend(cursor.on_live(revisions, *revision));
                    }
                }
                group.observed = group.observed.max(revision);
                let through = cursor.next() - 1;
                let events = to_pb(wanted);
                deliver(&self.tx, &self.services, &mut group.members, through, events).await?;
                group.processed = group.processed.max(through);
            }
        }
        for batch in batches {
            self.retained.push_back(batch);
            if self.retained.len() > RETAINED_BATCHES_MAX
                && let Some(old) = self.retained.pop_front()
                && let Published::Events { revision, .. } = &*old
            {
                self.retained_after = Some(*revision);
            }
        }
        if broken {
            tracing::debug!("watch stream lagged behind the feed or the store was reset");
            self.resubscribe();
        } else if self.merge_pending {
            self.merge_groups();
        }
        Ok(())
    }

    /// Merges live groups whose cursors are equal (same events wanted, same next revision),
    /// which they become once a batch moved them all past it.
    fn merge_groups(&mut self) {
        let mut live: Vec<(u64, &WatchCursor)> =
            self.groups.iter().filter_map(|(t, g)| g.cursor.as_ref().map(|c| (*t, c))).collect();
        let key = |c: &WatchCursor| {
            let s = c.spec();
            (s.key.clone(), s.range_end.clone(), s.no_put, s.no_delete, s.prev_kv, c.next())
        };
        live.sort_by_key(|(_, c)| key(c));
        let mut merges = Vec::new();
        let mut still_apart = false;
        for pair in live.windows(2) {
            let ((into, a), (from, b)) = (pair[0], pair[1]);
            if a == b {
                merges.push((into, from));
            } else if a.spec() == b.spec() {
                still_apart = true;
            }
        }
        // A chain a = b = c merges c into b, then b (with c) into a: apply from the back.
        for (into, from) in merges.into_iter().rev() {
            let Some(from_group) = self.groups.remove(&from) else { continue };
            for m in &from_group.members {
                self.index.insert(m.fields.id, into);
            }
            if let Some(g) = self.groups.get_mut(&into) {
                g.observed = g.observed.max(from_group.observed);
                g.processed = g.processed.max(from_group.processed);
                g.members.extend(from_group.members);
            }
            if self.last_joined == Some(from) {
                self.last_joined = Some(into);
            }
        }
        self.merge_pending = still_apart;
    }

    async fn on_report(&mut self, report: Report) -> Result<(), ()> {
        match report {
            Report::Events { group, through, events } => {
                self.enforce_auth().await?;
                let Some(g) = self.groups.get_mut(&group) else { return Ok(()) };
                deliver(&self.tx, &self.services, &mut g.members, through, events).await?;
                g.processed = g.processed.max(through);
            }
            Report::Compacted { group, compact_revision } => {
                let Some(g) = self.groups.remove(&group) else { return Ok(()) };
                for m in &g.members {
                    self.index.remove(&m.fields.id);
                    if m.fields.progress_notify {
                        self.notify_count -= 1;
                    }
                    self.services.runtime.metrics().watcher_removed();
                    // etcd's compaction response carries no revision (its header says 0).
                    let r = pb::WatchResponse {
                        header: Some(self.services.ctx().header(0)),
                        watch_id: m.fields.id,
                        canceled: true,
                        compact_revision,
                        ..Default::default()
                    };
                    self.send(r).await?;
                }
            }
            Report::Done { group, epoch, mut cursor, observed } => {
                let Some(g) = self.groups.get_mut(&group) else { return Ok(()) };
                g.observed = g.observed.max(observed);
                g.processed = g.processed.max(cursor.next() - 1);
                // The copy was taken after the catch-up started: if the subscription is the
                // same and the retained batches reach back to the copy, they and the feed hold
                // every revision after it.
                let covered = epoch == self.epoch
                    && self.retained_after.is_none_or(|after| cursor.next() > after);
                if !covered {
                    g.cursor = Some(cursor);
                    g.catching_up = None;
                    self.catch_up(group);
                    return Ok(());
                }
                for batch in &self.retained {
                    let Published::Events { revisions, revision } = &**batch else { continue };
                    if *revision < cursor.next() {
                        continue;
                    }
                    g.observed = g.observed.max(*revision);
                    let wanted = cursor.on_live(revisions, *revision);
                    let through = cursor.next() - 1;
                    deliver(&self.tx, &self.services, &mut g.members, through, to_pb(wanted))
                        .await?;
                    g.processed = g.processed.max(through);
                }
                g.cursor = Some(cursor);
                g.catching_up = None;
                self.merge_pending = true;
            }
            Report::Stopped { group } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.catching_up = None;
                }
            }
        }
        Ok(())
    }

    /// etcd's periodic progress notification: an empty response with the revision processed,
    /// to each live watcher that asked for them and was sent nothing since the last tick.
    async fn notify_progress(&mut self) -> Result<(), ()> {
        for group in self.groups.values_mut() {
            if group.cursor.is_none() {
                continue;
            }
            // A watcher whose start revision the store has not reached yet has processed up
            // to a revision that does not exist: it gets no notification until the store
            // reaches it (etcd issue 20221; a header never names a revision ahead of the
            // store).
            let due = group.processed <= group.observed;
            for m in group.members.iter_mut().filter(|m| m.fields.progress_notify) {
                if m.quiet && due {
                    let r = pb::WatchResponse {
                        header: Some(self.services.ctx().header(group.processed)),
                        watch_id: m.fields.id,
                        ..Default::default()
                    };
                    self.tx.send(Ok(Frame::from(r))).await.map_err(|_| ())?;
                }
                m.quiet = true;
            }
        }
        Ok(())
    }
}

/// Sends `events`, what a group's cursor just selected through revision `through`, to each of
/// the group's watchers (all of it in one response, or in fragments if the watcher asked and
/// it is too large). The events are encoded to protobuf once for the group; each watcher's
/// response is its own head followed by those bytes.
async fn deliver(
    tx: &Outgoing,
    services: &Services,
    members: &mut [Member],
    through: i64,
    events: Vec<mvccpb::Event>,
) -> Result<(), ()> {
    if events.is_empty() || members.is_empty() {
        return Ok(());
    }
    let count = events.len() as u64;
    let header = Some(services.ctx().header(through));
    let encoded = EncodedEvents::encode(&events);
    // etcd's watch server fragments at --max-request-bytes plus gRPC's overhead allowance, and
    // only a response of two events or more (`sendFragments`).
    let limit = services.request_bytes_max + super::GRPC_OVERHEAD_BYTES;
    for m in members.iter_mut() {
        let head = pb::WatchResponse { header, watch_id: m.fields.id, ..Default::default() };
        let fragmented = events.len() >= 2 && head.encoded_len() + encoded.len() >= limit;
        if m.fields.fragment && fragmented {
            let response = pb::WatchResponse { events: events.clone(), ..head };
            for part in fragments(response, limit) {
                tx.send(Ok(Frame::from(part))).await.map_err(|_| ())?;
            }
        } else {
            let frame = Frame { head, events: encoded.clone() };
            tx.send(Ok(frame)).await.map_err(|_| ())?;
        }
        m.quiet = false;
    }
    services.runtime.metrics().watch_events_sent(count * members.len() as u64);
    Ok(())
}

/// Catches a group's cursor up from a copy of the store taken now: reads its history a page
/// at a time, through the copy's revision, and reports each page's events to the stream,
/// then hands the cursor back.
async fn catch_up(
    services: Services,
    mut cursor: WatchCursor,
    group: u64,
    epoch: u64,
    reports: mpsc::Sender<Report>,
) {
    let Some(store) = store_copy(&services).await else {
        let _ = reports.send(Report::Stopped { group }).await;
        return;
    };
    let upto = store.revision();
    while cursor.next() <= upto {
        let report = match history_page(&store, &mut cursor, upto).await {
            None => Report::Stopped { group },
            Some(Ok(wanted)) => {
                Report::Events { group, through: cursor.next() - 1, events: to_pb(wanted) }
            }
            Some(Err(HistoryError::Compacted { compact_revision })) => {
                Report::Compacted { group, compact_revision }
            }
        };
        let more = matches!(report, Report::Events { .. });
        if reports.send(report).await.is_err() || !more {
            return;
        }
    }
    let _ = reports.send(Report::Done { group, epoch, cursor, observed: upto }).await;
}

/// The events a create request asks for, as its watcher's cursor takes them. etcd: an empty key
/// watches "\0"; a range end of "\0" watches every key from `key`.
fn watch_spec(c: &pb::WatchCreateRequest) -> WatchSpec {
    use pb::watch_create_request::FilterType;
    let key = if c.key.is_empty() { Bytes::from_static(b"\0") } else { c.key.clone() };
    WatchSpec {
        key,
        range_end: c.range_end.clone(),
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        prev_kv: c.prev_kv,
    }
}

/// The store's revision now, read on the replica thread. The member's published status lags:
/// it is updated after a turn's answers went out, so a client that has seen its write answered
/// could read an older revision there, and a watcher created with start revision 0 would then
/// send that write, which etcd (whose create reads the store) never does. Falls back to the
/// status when the replica thread cannot take the request (stopping, or its lane is full).
async fn current_revision(services: &Services) -> i64 {
    match exact_revision(services).await {
        Some(revision) => revision,
        None => services.runtime.status().revision,
    }
}

/// The store's revision read on the replica thread, if it took the request.
async fn exact_revision(services: &Services) -> Option<i64> {
    services.runtime.inspect(|replica| replica.kv().revision()).ok()?.await.ok()
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // Dropping a group aborts its catch-up.
        for (_, g) in std::mem::take(&mut self.groups) {
            for _ in &g.members {
                self.services.runtime.metrics().watcher_removed();
            }
        }
        self.services.runtime.metrics().watch_stream_closed();
    }
}

/// Counts watchers as catching up (etcd's "slow" watchers) for as long as it lives, even if
/// their catch-up is aborted meanwhile.
struct CatchingUp {
    metrics: Arc<crate::runtime::Metrics>,
    count: usize,
}

impl CatchingUp {
    fn new(metrics: Arc<crate::runtime::Metrics>, count: usize) -> CatchingUp {
        for _ in 0..count {
            metrics.watcher_catching_up(true);
        }
        CatchingUp { metrics, count }
    }

    /// `n` of the watchers are no longer counted (they were cancelled).
    fn release(&mut self, n: usize) {
        let n = n.min(self.count);
        self.count -= n;
        for _ in 0..n {
            self.metrics.watcher_catching_up(false);
        }
    }
}

impl Drop for CatchingUp {
    fn drop(&mut self) {
        self.release(self.count);
    }
}

/// A cursor's selection as etcd's events.
fn to_pb(wanted: Vec<RevisionEvents>) -> Vec<mvccpb::Event> {
    wanted.into_iter().flat_map(|r| r.events).map(event_to_pb).collect()
}

/// An O(1) copy of the member's store, taken on the replica thread (`None` if it stopped).
pub(super) async fn store_copy(services: &Services) -> Option<Store> {
    services.runtime.inspect(|replica| replica.kv().clone()).ok()?.await.ok()
}

/// The next page of history for `cursor` from `store`, through revision `upto`, read on a
/// blocking thread (a page walks every key of the watched range); the cursor moves past the
/// page's last complete revision (`upto`, or the one before where the next page starts) and
/// the events it wants are returned. `None` if the blocking task could not run.
pub(super) async fn history_page(
    store: &Store,
    cursor: &mut WatchCursor,
    upto: i64,
) -> Option<Result<Vec<RevisionEvents>, HistoryError>> {
    let spec = cursor.spec();
    let (key, end, from) = (spec.key.clone(), spec.range_end.clone(), cursor.next());
    let store = store.clone();
    let page = tokio::task::spawn_blocking(move || {
        store.history(&key, &end, from, upto, HISTORY_PAGE_EVENTS)
    })
    .await
    .ok()?;
    Some(page.map(|page| cursor.on_history(&page, upto)))
}

/// An event as etcd's `mvccpb.Event`. It has a `prev_kv` only if the watcher asked for one:
/// the cursor drops it otherwise.
fn event_to_pb(e: Event) -> mvccpb::Event {
    let kind = match e.kind {
        EventKind::Put => mvccpb::event::EventType::Put,
        EventKind::Delete => mvccpb::event::EventType::Delete,
    };
    mvccpb::Event {
        r#type: kind as i32,
        kv: Some(key_value_to_pb(e.kv)),
        prev_kv: e.prev_kv.map(key_value_to_pb),
    }
}

/// Splits `response` into responses under `limit` encoded bytes (at least one event each), all
/// marked `fragment` but the last, cut where etcd's `sendFragments` cuts: a part takes events
/// while it stays below the limit, its size counted with the `fragment` flag set.
fn fragments(response: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    let pb::WatchResponse { header, watch_id, events, .. } = response;
    let empty = pb::WatchResponse { header, watch_id, fragment: true, ..Default::default() };
    let base = empty.encoded_len();
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut size = base;
    for e in events {
        // Each repeated field costs its length plus a tag and a length prefix.
        let len = e.encoded_len() + 1 + prost::length_delimiter_len(e.encoded_len());
        if !current.is_empty() && size + len >= limit {
            parts.push(std::mem::take(&mut current));
            size = base;
        }
        size += len;
        current.push(e);
    }
    parts.push(current);
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, events)| pb::WatchResponse {
            header,
            watch_id,
            events,
            fragment: i + 1 < n,
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_event(key: &str, value_bytes: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from(vec![b'x'; value_bytes]),
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn a_large_response_is_cut_into_fragments_under_the_limit_all_but_the_last_marked() {
        let events: Vec<mvccpb::Event> =
            (0..10).map(|i| put_event(&format!("k{i}"), 300)).collect();
        let response =
            pb::WatchResponse { watch_id: 3, events: events.clone(), ..Default::default() };
        let parts = fragments(response, 1000);
        assert!(parts.len() >= 4, "{} parts", parts.len());
        for (i, p) in parts.iter().enumerate() {
            assert!(p.encoded_len() < 1000, "part {i} is {} bytes", p.encoded_len());
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert_eq!(p.watch_id, 3);
        }
        let joined: Vec<mvccpb::Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events, "nothing lost, nothing reordered");
    }

    #[test]
    fn a_part_that_would_reach_the_limit_exactly_is_cut_before_it_as_etcd_cuts() {
        let events = vec![put_event("a", 100), put_event("b", 100)];
        let whole = pb::WatchResponse {
            watch_id: 1,
            fragment: true,
            events: events.clone(),
            ..Default::default()
        };
        let response = pb::WatchResponse { watch_id: 1, events, ..Default::default() };
        assert_eq!(fragments(response.clone(), whole.encoded_len() + 1).len(), 1);
        assert_eq!(fragments(response, whole.encoded_len()).len(), 2);
    }

    #[test]
    fn an_event_larger_than_the_limit_travels_alone() {
        let response =
            pb::WatchResponse { events: vec![put_event("big", 5000)], ..Default::default() };
        let parts = fragments(response, 1000);
        assert_eq!(parts.len(), 1);
        assert!(!parts[0].fragment);
    }

    #[test]
    fn ranges_follow_etcds_key_and_range_end_conventions() {
        let spec = |key: &'static str, end: &'static str| {
            watch_spec(&pb::WatchCreateRequest {
                key: Bytes::from_static(key.as_bytes()),
                range_end: Bytes::from_static(end.as_bytes()),
                ..Default::default()
            })
        };
        assert!(spec("a", "").covers(b"a") && !spec("a", "").covers(b"ab"));
        assert!(spec("a", "b").covers(b"ab") && !spec("a", "b").covers(b"b"));
        assert!(spec("m", "\0").covers(b"zzz") && !spec("m", "\0").covers(b"a"));
        assert!(spec("", "\0").covers(b"\0") && spec("", "\0").covers(b"a"), "every key");
        assert!(spec("", "").covers(b"\0") && !spec("", "").covers(b"a"), "only the key \"\\0\"");
    }

    #[test]
    fn a_create_request_becomes_its_cursors_filters_and_prev_kv() {
        use pb::watch_create_request::FilterType;
        let c = pb::WatchCreateRequest {
            key: Bytes::from_static(b"k"),
            filters: vec![FilterType::Nodelete as i32],
            prev_kv: true,
            ..Default::default()
        };
        let spec = watch_spec(&c);
        assert!(!spec.no_put && spec.no_delete && spec.prev_kv);
        let c = pb::WatchCreateRequest { filters: vec![FilterType::Noput as i32], ..c };
        let spec = watch_spec(&c);
        assert!(spec.no_put && !spec.no_delete);
    }
}
