//! `etcdserverpb.Watch`: event streams, as etcd 3.4 serves them.
//!
//! One gRPC stream carries any number of watchers. A task per stream reads the client's
//! requests (create, cancel, progress); a task per watcher produces its responses; both write
//! into the stream's bounded queue of responses, which gRPC drains toward the client.
//!
//! ```text
//!  replica thread ──Published (per turn)──> broadcast feed (WATCH_FEED_MAX batches)
//!                                                   │
//!  watcher task:  subscribe ─> copy of the store (O(1), through `inspect`) ─> history pages
//!                 from its next revision up to the copy's revision ─> then the feed, skipping
//!                 what the copy held ─> filter ─> responses ─> stream queue ─> client
//! ```
//!
//! **Catching up never holds the replica thread**: the copy of the store shares its persistent
//! index, and the history is read from it on the watcher's task, a page (about
//! [`HISTORY_PAGE_EVENTS`] events, whole revisions) at a time, each page sent before the next is
//! read. **Memory is bounded**: per member, the feed keeps at most `WATCH_FEED_MAX` batches; per
//! stream, at most [`STREAM_RESPONSES_MAX`] responses wait for the client. A watcher that falls
//! behind the feed (a slow client, a long catch-up) is told it lagged and catches up again from
//! the store's history, from its next revision; if that revision was compacted meanwhile it is
//! cancelled with `compact_revision`, as etcd does. A snapshot installed from the leader replaces
//! the store without events: the feed says `Reset`, and every watcher catches up from the new
//! store the same way. So a watcher sees every revision after its start exactly once, in order,
//! all events of a revision in one response.
//!
//! **Which events a watcher sends, and where it stands, is decided by kv's
//! [`WatchCursor`]**, not here: the range and filters, `prev_kv`, skipping what a history page
//! or an earlier batch already covered, and the watcher's next revision (the revision its
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

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use tenure_kv::{Event, EventKind, HistoryError, RevisionEvents, Store, WatchCursor, WatchSpec};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tonic::{Request, Status, Streaming};

use super::Services;
use super::convert::key_value_to_pb;
use crate::ServerError;
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use crate::runtime::Published;

/// Responses queued per stream toward the client at most; a watcher whose client reads slower
/// than events arrive waits here, then lags the feed and catches up from history.
pub const STREAM_RESPONSES_MAX: usize = 128;

/// Events read from the store's history per page while a watcher catches up.
pub const HISTORY_PAGE_EVENTS: usize = 1000;

/// etcd's default interval between progress notifications (10 minutes).
pub const PROGRESS_NOTIFY_INTERVAL_DEFAULT: Duration = Duration::from_secs(600);

/// etcd's answer to a client-chosen watch id already in use on the stream.
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// etcd's answer to a range that selects no key.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

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

type Outgoing = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// The response stream handed to gRPC.
pub type ResponseStream = Pin<
    Box<
        dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::WatchResponse, Status>>
            + Send
            + 'static,
    >,
>;

#[tonic::async_trait]
impl pb::watch_server::Watch for Services {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        // clientv3's WithRequireLeader.
        let require_leader =
            request.metadata().get("hasleader").and_then(|v| v.to_str().ok()) == Some("true");
        if require_leader && self.runtime.status().leader.is_none() {
            return Err(ServerError::NoLeader.into());
        }
        let (tx, rx) = mpsc::channel(STREAM_RESPONSES_MAX);
        self.runtime.metrics().watch_stream_opened();
        let stream = StreamState {
            services: self.clone(),
            tx,
            watchers: BTreeMap::new(),
            next_id: 0,
            require_leader,
        };
        tokio::spawn(stream.run(request.into_inner()));
        let out = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

/// What a watcher was asked for beyond the events it wants (those are its cursor's
/// [`WatchSpec`]): the stream-level fields of etcd's `WatchCreateRequest`.
#[derive(Clone, Copy, Debug)]
struct StreamFields {
    id: i64,
    progress_notify: bool,
    fragment: bool,
}

/// A running watcher, as its stream sees it.
struct WatcherHandle {
    task: JoinHandle<()>,
    /// The store revision through which the watcher has taken every event (sent or filtered):
    /// its cursor's next revision - 1, published once what it took was queued toward the client.
    processed: Arc<AtomicI64>,
}

struct StreamState {
    services: Services,
    tx: Outgoing,
    watchers: BTreeMap<i64, WatcherHandle>,
    /// The next id the server picks (etcd: from 0, skipping ids in use).
    next_id: i64,
    require_leader: bool,
}

impl StreamState {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        let mut leader_check = tokio::time::interval(self.services.watch.leader_check_interval);
        leader_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                request = requests.message() => match request {
                    Ok(Some(r)) => {
                        if self.handle(r).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
                _ = leader_check.tick(), if self.require_leader => {
                    if self.services.runtime.status().leader.is_none() {
                        let _ = self.tx.send(Err(ServerError::NoLeader.into())).await;
                        break;
                    }
                }
                _ = self.tx.closed() => break,
            }
        }
        // Drop aborts the watchers and closes the stream in the metrics.
    }

    /// Handles one request; `Err` once the client is gone.
    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), ()> {
        use pb::watch_request::RequestUnion;
        match request.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
            Some(RequestUnion::ProgressRequest(_)) => {
                self.progress().await;
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> Result<(), ()> {
        self.tx.send(Ok(response)).await.map_err(|_| ())
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
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                let r = pb::WatchResponse { header: self.header().await, ..refuse(DUPLICATE_ID) };
                return self.send(r).await;
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let stream = StreamFields { id, progress_notify: c.progress_notify, fragment: c.fragment };
        // Subscribe before reading the revision: nothing applied after it can be missed.
        let feed = self.services.runtime.subscribe();
        let current = current_revision(&self.services).await;
        let start = if c.start_revision > 0 { c.start_revision } else { current + 1 };
        let created = pb::WatchResponse {
            header: Some(self.services.ctx().header(current)),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        // The created response goes first: the watcher starts only after it was queued.
        self.send(created).await?;
        let cursor = WatchCursor::new(spec, start);
        let processed = Arc::new(AtomicI64::new(cursor.next() - 1));
        let watcher = Watcher {
            stream,
            cursor,
            services: self.services.clone(),
            tx: self.tx.clone(),
            feed,
            processed: Arc::clone(&processed),
            observed: current,
            last_sent: Instant::now(),
        };
        let task = tokio::spawn(watcher.run());
        self.services.runtime.metrics().watcher_added();
        self.watchers.insert(id, WatcherHandle { task, processed });
        Ok(())
    }

    async fn cancel(&mut self, id: i64) -> Result<(), ()> {
        let Some(w) = self.watchers.remove(&id) else { return Ok(()) };
        w.task.abort();
        self.services.runtime.metrics().watcher_removed();
        let r = pb::WatchResponse {
            header: self.header().await,
            watch_id: id,
            canceled: true,
            ..Default::default()
        };
        self.send(r).await
    }

    /// Answers a progress request once every watcher has taken everything up to the current
    /// revision, so that the answer's revision bounds every event sent before it.
    async fn progress(&self) {
        let target = current_revision(&self.services).await;
        let watchers: Vec<Arc<AtomicI64>> =
            self.watchers.values().map(|w| Arc::clone(&w.processed)).collect();
        let tx = self.tx.clone();
        let services = self.services.clone();
        tokio::spawn(async move {
            while watchers.iter().any(|p| p.load(Ordering::Acquire) < target) {
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let r = pb::WatchResponse {
                header: Some(services.ctx().header(target)),
                watch_id: NO_WATCH_ID,
                ..Default::default()
            };
            let _ = tx.send(Ok(r)).await;
        });
    }
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
    let asked = services.runtime.inspect(|replica| replica.kv().revision());
    match asked {
        Ok(rx) => match rx.await {
            Ok(revision) => revision,
            Err(_) => services.runtime.status().revision,
        },
        Err(_) => services.runtime.status().revision,
    }
}

impl Drop for StreamState {
    fn drop(&mut self) {
        for (_, w) in std::mem::take(&mut self.watchers) {
            w.task.abort();
            self.services.runtime.metrics().watcher_removed();
        }
        self.services.runtime.metrics().watch_stream_closed();
    }
}

/// One watcher's task.
struct Watcher {
    stream: StreamFields,
    /// Which events to send and the first revision not yet taken. Invariant: every wanted
    /// event of a revision below `cursor.next()` was handed to [`Watcher::send_events`] exactly
    /// once, in order; the cursor moves before the send, so `processed` trails it until then.
    cursor: WatchCursor,
    services: Services,
    tx: Outgoing,
    feed: broadcast::Receiver<Arc<Published>>,
    /// Shared with the stream ([`WatcherHandle::processed`]); `i64::MAX` once cancelled.
    processed: Arc<AtomicI64>,
    /// The store revision the watcher was last shown (a copy's at catch-up, a live batch's
    /// after it). Below `processed` only while the start revision is in the future.
    observed: i64,
    last_sent: Instant,
}

/// Counts a watcher as catching up (etcd's "slow" watchers) for as long as it lives, even if
/// the watcher's task is aborted meanwhile.
struct CatchingUp(Arc<crate::runtime::Metrics>);

impl CatchingUp {
    fn new(metrics: Arc<crate::runtime::Metrics>) -> CatchingUp {
        metrics.watcher_catching_up(true);
        CatchingUp(metrics)
    }
}

impl Drop for CatchingUp {
    fn drop(&mut self) {
        self.0.watcher_catching_up(false);
    }
}

/// Why a watcher stops.
enum Stop {
    /// The client is gone or the stream ended.
    Gone,
    /// The start revision was compacted; the watcher was cancelled.
    Compacted,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            if self.catch_up().await.is_err() {
                return;
            }
            match self.follow().await {
                Ok(()) => {}
                Err(Stop::Gone | Stop::Compacted) => return,
            }
        }
    }

    /// Sends every wanted event from the cursor's next revision through the revision of a
    /// fresh copy of the store, from its history, a page at a time.
    async fn catch_up(&mut self) -> Result<(), Stop> {
        let _counted = CatchingUp::new(Arc::clone(self.services.runtime.metrics()));
        self.catch_up_from_history().await
    }

    async fn catch_up_from_history(&mut self) -> Result<(), Stop> {
        // A fresh subscription first: whatever the copy misses, the feed holds.
        self.feed = self.feed.resubscribe();
        let store = store_copy(&self.services).await.ok_or(Stop::Gone)?;
        let upto = store.revision();
        self.observed = self.observed.max(upto);
        while self.cursor.next() <= upto {
            match history_page(&store, &mut self.cursor, upto).await.ok_or(Stop::Gone)? {
                Ok(wanted) => self.send_events(wanted).await?,
                Err(HistoryError::Compacted { compact_revision }) => {
                    // etcd's compaction response carries no revision (its header says 0).
                    let r = pb::WatchResponse {
                        header: Some(self.services.ctx().header(0)),
                        watch_id: self.stream.id,
                        canceled: true,
                        compact_revision,
                        ..Default::default()
                    };
                    let _ = self.tx.send(Ok(r)).await;
                    // A cancelled watcher holds back no progress response.
                    self.processed.store(i64::MAX, Ordering::Release);
                    return Err(Stop::Compacted);
                }
            }
        }
        // A start revision above the copy's read nothing: it was processed up to below it.
        self.publish_processed();
        Ok(())
    }

    /// Follows the feed until it lags or is reset (`Ok`: catch up again) or the client goes.
    async fn follow(&mut self) -> Result<(), Stop> {
        let interval = self.services.watch.progress_notify_interval;
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                item = self.feed.recv() => match item {
                    Ok(published) => match &*published {
                        Published::Events { revisions, revision } => {
                            self.observed = self.observed.max(*revision);
                            // What the copy read at catch-up already held is skipped here.
                            let wanted = self.cursor.on_live(revisions, *revision);
                            self.send_events(wanted).await?;
                        }
                        Published::Reset => return Ok(()),
                    },
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            watch_id = self.stream.id,
                            "watcher lagged {missed} batches behind the feed; catching up"
                        );
                        return Ok(());
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(Stop::Gone),
                },
                _ = progress.tick(), if self.stream.progress_notify => {
                    let revision = self.processed.load(Ordering::Acquire);
                    // A watcher whose start revision the store has not reached yet has
                    // processed up to a revision that does not exist: it gets no notification
                    // until the store reaches it (etcd issue 20221; a header never names a
                    // revision ahead of the store).
                    if self.last_sent.elapsed() >= interval && revision <= self.observed {
                        let r = pb::WatchResponse {
                            header: Some(self.services.ctx().header(revision)),
                            watch_id: self.stream.id,
                            ..Default::default()
                        };
                        self.send(r).await?;
                    }
                }
                _ = self.tx.closed() => return Err(Stop::Gone),
            }
        }
    }

    /// Sends `wanted`, what the cursor just selected (all of it in one response, or in
    /// fragments if asked and too large), then publishes the revision the cursor has passed as
    /// processed.
    async fn send_events(&mut self, wanted: Vec<RevisionEvents>) -> Result<(), Stop> {
        // Every revision below the cursor's next was shown to it: the page's last complete
        // revision, or the store's revision after a live batch, as the header says.
        let through = self.cursor.next() - 1;
        let events: Vec<mvccpb::Event> =
            wanted.into_iter().flat_map(|r| r.events).map(event_to_pb).collect();
        if !events.is_empty() {
            let count = events.len() as u64;
            let header = Some(self.services.ctx().header(through));
            let response = pb::WatchResponse {
                header,
                watch_id: self.stream.id,
                events,
                ..Default::default()
            };
            // etcd's watch server fragments at --max-request-bytes plus gRPC's overhead
            // allowance, and only a response of two events or more (`sendFragments`).
            let limit = self.services.request_bytes_max + super::GRPC_OVERHEAD_BYTES;
            let fragmented = response.events.len() >= 2 && response.encoded_len() >= limit;
            if self.stream.fragment && fragmented {
                for part in fragments(response, limit) {
                    self.send(part).await?;
                }
            } else {
                self.send(response).await?;
            }
            self.services.runtime.metrics().watch_events_sent(count);
        }
        self.publish_processed();
        Ok(())
    }

    /// Tells the stream that every revision below the cursor's next was taken (and what it
    /// wanted queued toward the client), for progress requests and notifications.
    fn publish_processed(&self) {
        self.processed.fetch_max(self.cursor.next() - 1, Ordering::AcqRel);
    }

    async fn send(&mut self, r: pb::WatchResponse) -> Result<(), Stop> {
        self.tx.send(Ok(r)).await.map_err(|_| Stop::Gone)?;
        self.last_sent = Instant::now();
        Ok(())
    }
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
