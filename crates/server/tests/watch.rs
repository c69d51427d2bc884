//! Watch conformance (issue 12): one behaviour per test, driven through the generated tonic
//! client against an in-process three-member cluster and, where `etcd` is installed, the same
//! request sequence against one real etcd 3.4 started by the test on free ports in a temp dir.
//!
//! Both servers start empty (revision 1) and take the same writes in the same order through
//! one connection, so revisions line up; a transcript of watch responses from each is compared
//! field by field after [`normalise`] blanks what legitimately differs (cluster and member
//! ids, raft term). Where etcd 3.4 is known to answer differently on purpose (its progress
//! response does not wait for events in flight, etcd issue 15220), the test compares what both
//! must agree on and checks tenure's stronger rule on tenure alone. Without `etcd` the etcd
//! half is skipped with a printed note.
//!
//! "Nothing more arrives" is checked by waiting [`QUIET`] for a response: such a check can miss
//! a late bug but never fails a correct server.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::cli::dev::Timing;
use tenure_server::pb::etcdserverpb as pb;
use tenure_server::pb::mvccpb;
use tokio::sync::mpsc;
use tonic::transport::Channel;

mod common;
mod servers;

use servers::{Etcd, Tenure, connect};

const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };
/// How long anything may take before a test fails (generous: machines are shared).
const PATIENCE: Duration = Duration::from_secs(20);
/// How long a test waits to see that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);
/// Largest response the test client decodes (a whole unfragmented large response).
const DECODE_BYTES_MAX: usize = 64 * 1024 * 1024;

type Transcript = Vec<pb::WatchResponse>;

// ---------------------------------------------------------------------------------------------
// The servers: `servers::Tenure` with this file's faster timing (the tests wait for leaders
// often), and `servers::Etcd`.

/// A fresh three-member tenure cluster with [`TIMING`].
async fn tenure() -> Tenure {
    Tenure::start_timed(TIMING, |_| {}).await
}

/// Runs `scenario` against a fresh tenure cluster (watching and writing through a follower)
/// and, where installed, a fresh etcd, asserts that the normalised transcripts are equal, and
/// returns tenure's.
async fn compare<F, Fut>(test: &str, scenario: F) -> Transcript
where
    F: Fn(Channel) -> Fut,
    Fut: Future<Output = Transcript>,
{
    let tenure = tenure().await;
    let ours = scenario(tenure.channel(tenure.follower().await).await).await;
    tenure.shutdown().await;
    if let Some(etcd) = Etcd::start(test).await {
        let theirs = scenario(connect(&etcd.url).await).await;
        assert_eq!(
            normalise(ours.clone()),
            normalise(theirs),
            "{test}: tenure (left) and etcd 3.4 (right) answer differently"
        );
    }
    ours
}

/// Blanks what legitimately differs between two servers: ids and term.
fn normalise(mut t: Transcript) -> Transcript {
    for r in &mut t {
        if let Some(h) = &mut r.header {
            h.cluster_id = 0;
            h.member_id = 0;
            h.raft_term = 0;
        }
    }
    t
}

/// The responses of each watcher in the order it got them, watchers by id (the order between
/// watchers of one stream is not specified).
fn by_watcher(mut t: Transcript) -> Transcript {
    t.sort_by_key(|r| r.watch_id);
    t
}

// ---------------------------------------------------------------------------------------------
// Clients.

/// One watch stream.
struct Stream {
    tx: mpsc::UnboundedSender<pb::WatchRequest>,
    rx: Responses,
}

/// etcd (grpc-go) sends a stream's response headers with its first response, so the call is
/// awaited on a task of its own until the test first reads.
enum Responses {
    Pending(tokio::task::JoinHandle<Result<tonic::Streaming<pb::WatchResponse>, tonic::Status>>),
    Open(Box<tonic::Streaming<pb::WatchResponse>>),
}

fn watch_client(ch: &Channel) -> pb::watch_client::WatchClient<Channel> {
    pb::watch_client::WatchClient::new(ch.clone()).max_decoding_message_size(DECODE_BYTES_MAX)
}

impl Stream {
    async fn open(ch: &Channel) -> Stream {
        Stream::open_with(ch, false)
    }

    fn open_with(ch: &Channel, require_leader: bool) -> Stream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut request =
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        if require_leader {
            request.metadata_mut().insert("hasleader", "true".parse().unwrap());
        }
        let mut client = watch_client(ch);
        let call = tokio::spawn(async move { Ok(client.watch(request).await?.into_inner()) });
        Stream { tx, rx: Responses::Pending(call) }
    }

    /// Opens a stream and waits for the server's response headers (tenure sends them at once).
    async fn try_open(ch: &Channel, require_leader: bool) -> Result<Stream, tonic::Status> {
        let mut s = Stream::open_with(ch, require_leader);
        s.responses().await?;
        Ok(s)
    }

    async fn responses(
        &mut self,
    ) -> Result<&mut tonic::Streaming<pb::WatchResponse>, tonic::Status> {
        if let Responses::Pending(call) = &mut self.rx {
            let opened = tokio::time::timeout(PATIENCE, call)
                .await
                .expect("the watch call answered")
                .expect("the call's task")?;
            self.rx = Responses::Open(Box::new(opened));
        }
        match &mut self.rx {
            Responses::Open(rx) => Ok(rx),
            Responses::Pending(_) => unreachable!("opened above"),
        }
    }

    fn send(&self, r: pb::watch_request::RequestUnion) {
        self.tx.send(pb::WatchRequest { request_union: Some(r) }).expect("stream open");
    }

    fn create(&self, c: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c));
    }

    fn cancel(&self, watch_id: i64) {
        let c = pb::WatchCancelRequest { watch_id };
        self.send(pb::watch_request::RequestUnion::CancelRequest(c));
    }

    fn progress(&self) {
        self.send(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {}));
    }

    async fn next(&mut self) -> pb::WatchResponse {
        let rx = self.responses().await.expect("watch stream opens");
        match tokio::time::timeout(PATIENCE, rx.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Err(s)) => panic!("the stream failed: {s}"),
            Err(_) => panic!("no response within {PATIENCE:?}"),
        }
    }

    /// Creates a watcher and returns the created response.
    async fn created(&mut self, c: pb::WatchCreateRequest) -> pb::WatchResponse {
        self.create(c);
        let r = self.next().await;
        assert!(r.created, "{r:?}");
        r
    }

    /// Responses until they hold `n` events between them.
    async fn events(&mut self, n: usize) -> Transcript {
        let mut t = Vec::new();
        let mut seen = 0;
        while seen < n {
            let r = self.next().await;
            seen += r.events.len();
            t.push(r);
        }
        t
    }

    /// Whatever arrives within [`QUIET`].
    async fn quiet(&mut self) -> Transcript {
        let mut t = Vec::new();
        let deadline = tokio::time::Instant::now() + QUIET;
        if let Responses::Pending(call) = &mut self.rx {
            // No headers yet from etcd means no response yet.
            match tokio::time::timeout_at(deadline, call).await {
                Ok(opened) => {
                    self.rx =
                        Responses::Open(Box::new(opened.expect("the call's task").expect("opens")))
                }
                Err(_) => return t,
            }
        }
        let rx = self.responses().await.expect("watch stream opens");
        while let Ok(r) = tokio::time::timeout_at(deadline, rx.message()).await {
            match r {
                Ok(Some(r)) => t.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        t
    }
}

fn watch(key: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest { key: b(key), ..Default::default() }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// KV writes through one connection; each returns the revision it made.
struct Writer(pb::kv_client::KvClient<Channel>);

impl Writer {
    fn new(ch: &Channel) -> Writer {
        Writer(pb::kv_client::KvClient::new(ch.clone()))
    }

    async fn put(&mut self, key: &str, value: &str) -> i64 {
        let r = pb::PutRequest { key: b(key), value: b(value), ..Default::default() };
        self.0.put(r).await.expect("put").into_inner().header.expect("header").revision
    }

    async fn delete(&mut self, key: &str) -> i64 {
        let r = pb::DeleteRangeRequest { key: b(key), ..Default::default() };
        self.0.delete_range(r).await.expect("delete").into_inner().header.expect("header").revision
    }

    async fn txn(&mut self, ops: Vec<pb::request_op::Request>) -> i64 {
        let t = pb::TxnRequest {
            success: ops.into_iter().map(|r| pb::RequestOp { request: Some(r) }).collect(),
            ..Default::default()
        };
        self.0.txn(t).await.expect("txn").into_inner().header.expect("header").revision
    }

    async fn compact(&mut self, revision: i64) {
        let c = pb::CompactionRequest { revision, physical: true };
        self.0.compact(c).await.expect("compact");
    }
}

fn put_op(key: &str, value: &str) -> pb::request_op::Request {
    pb::request_op::Request::RequestPut(pb::PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    })
}

fn delete_op(key: &str) -> pb::request_op::Request {
    pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
        key: b(key),
        ..Default::default()
    })
}

/// Every event of a transcript, in order.
fn events(t: &[pb::WatchResponse]) -> Vec<mvccpb::Event> {
    t.iter().flat_map(|r| r.events.clone()).collect()
}

/// (type, key, value) of each event, for short assertions.
fn summary(t: &[pb::WatchResponse]) -> Vec<(&'static str, String, String)> {
    events(t)
        .iter()
        .map(|e| {
            let kv = e.kv.clone().unwrap_or_default();
            let kind = if e.r#type == mvccpb::event::EventType::Put as i32 { "put" } else { "del" };
            let s = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
            (kind, s(&kv.key), s(&kv.value))
        })
        .collect()
}

fn ev(kind: &'static str, key: &str, value: &str) -> (&'static str, String, String) {
    (kind, key.to_string(), value.to_string())
}

fn revision(r: &pb::WatchResponse) -> i64 {
    r.header.as_ref().expect("header").revision
}

// ---------------------------------------------------------------------------------------------
// Creating a watcher.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_answered_with_the_server_chosen_id_created_and_the_current_revision() {
    let t = compare("create", |ch| async move {
        let mut w = Writer::new(&ch);
        w.put("a", "1").await;
        let rev = w.put("b", "2").await;
        let mut s = Stream::open(&ch).await;
        let first = s.created(watch("a")).await;
        let second = s.created(watch("b")).await;
        assert_eq!(revision(&first), rev, "the revision of the last write before the create");
        vec![first, second]
    })
    .await;
    assert_eq!((t[0].watch_id, t[1].watch_id), (0, 1));
    assert!(t.iter().all(|r| !r.canceled && r.events.is_empty() && r.cancel_reason.is_empty()));
    assert_eq!(revision(&t[0]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_modify_and_delete_events_carry_etcds_kv_fields() {
    let t = compare("events", |ch| async move {
        let mut s = Stream::open(&ch).await;
        let mut t = vec![s.created(watch("k")).await];
        let mut w = Writer::new(&ch);
        w.put("k", "v1").await;
        w.put("k", "v2").await;
        w.delete("k").await;
        t.extend(s.events(3).await);
        t
    })
    .await;
    let e = events(&t);
    let kv = |i: usize| e[i].kv.clone().expect("kv");
    assert_eq!(summary(&t), [ev("put", "k", "v1"), ev("put", "k", "v2"), ev("del", "k", "")]);
    // A create: create_revision == mod_revision, version 1.
    assert_eq!((kv(0).create_revision, kv(0).mod_revision, kv(0).version), (2, 2, 1));
    // A modification keeps create_revision and counts the version up.
    assert_eq!((kv(1).create_revision, kv(1).mod_revision, kv(1).version), (2, 3, 2));
    // A delete's kv holds the key and the delete's revision only.
    assert_eq!(kv(2), mvccpb::KeyValue { key: b("k"), mod_revision: 4, ..Default::default() });
    assert!(e.iter().all(|e| e.prev_kv.is_none()), "prev_kv was not asked for");
    // Each event went out in a response with the revision of its write.
    let revisions: Vec<i64> = t[1..].iter().map(revision).collect();
    assert_eq!(revisions, [2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prev_kv_is_sent_only_to_watchers_that_asked_for_it() {
    let t = compare("prev_kv", |ch| async move {
        let mut s = Stream::open(&ch).await;
        let with = pb::WatchCreateRequest { prev_kv: true, ..watch("k") };
        let mut t = vec![s.created(with).await, s.created(watch("k")).await];
        let mut w = Writer::new(&ch);
        w.put("k", "v1").await;
        w.put("k", "v2").await;
        w.delete("k").await;
        t.extend(s.events(6).await);
        by_watcher(t)
    })
    .await;
    let of = |id: i64| -> Vec<mvccpb::Event> {
        events(&t.iter().filter(|r| r.watch_id == id).cloned().collect::<Vec<_>>())
    };
    let prev: Vec<Option<Bytes>> =
        of(0).iter().map(|e| e.prev_kv.as_ref().map(|p| p.value.clone())).collect();
    assert_eq!(prev, [None, Some(b("v1")), Some(b("v2"))], "no prev_kv for a create");
    let p = of(0)[2].prev_kv.clone().expect("prev");
    assert_eq!((p.create_revision, p.mod_revision, p.version), (2, 3, 2), "the whole previous kv");
    assert!(of(1).iter().all(|e| e.prev_kv.is_none()));
    assert_eq!(of(1).len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Filters and ranges.

async fn filtered(ch: Channel, filter: pb::watch_create_request::FilterType) -> Transcript {
    let mut s = Stream::open(&ch).await;
    let c = pb::WatchCreateRequest { filters: vec![filter as i32], ..watch("k") };
    let mut t = vec![s.created(c).await];
    let mut w = Writer::new(&ch);
    w.put("k", "1").await;
    w.delete("k").await;
    w.put("k", "2").await;
    w.delete("k").await;
    t.extend(s.events(2).await);
    t.extend(s.quiet().await);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noput_filter_drops_puts_and_keeps_deletes() {
    use pb::watch_create_request::FilterType;
    let t = compare("noput", |ch| filtered(ch, FilterType::Noput)).await;
    assert_eq!(summary(&t), [ev("del", "k", ""), ev("del", "k", "")]);
    assert_eq!(t.len(), 3, "no empty response for a filtered revision: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodelete_filter_drops_deletes_and_keeps_puts() {
    use pb::watch_create_request::FilterType;
    let t = compare("nodelete", |ch| filtered(ch, FilterType::Nodelete)).await;
    assert_eq!(summary(&t), [ev("put", "k", "1"), ev("put", "k", "2")]);
    assert_eq!(t.len(), 3, "no empty response for a filtered revision: {t:?}");
}

/// Watches `c`, puts each of `keys` (value = key) and returns what arrived by the time the
/// last one (which must be watched) did, plus anything in the quiet period after it.
async fn watch_range(ch: Channel, c: pb::WatchCreateRequest, keys: &[&str]) -> Transcript {
    let mut s = Stream::open(&ch).await;
    let mut t = vec![s.created(c).await];
    let mut w = Writer::new(&ch);
    for k in keys {
        w.put(k, k).await;
    }
    let last = keys.last().expect("a key");
    loop {
        let r = s.next().await;
        let done = r.events.iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.key == b(last)));
        t.push(r);
        if done {
            break;
        }
    }
    t.extend(s.quiet().await);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_range_selects_the_keys_under_the_prefix() {
    let c = pb::WatchCreateRequest { range_end: b("q"), ..watch("p") };
    let t = compare("prefix", |ch| watch_range(ch, c.clone(), &["p1", "o", "q", "p", "pz"])).await;
    let keys: Vec<String> = summary(&t).into_iter().map(|e| e.1).collect();
    assert_eq!(keys, ["p1", "p", "pz"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_end_of_nul_selects_every_key_from_the_key_on() {
    let c = pb::WatchCreateRequest { range_end: b("\0"), ..watch("m") };
    let t = compare("from_key", |ch| watch_range(ch, c.clone(), &["a", "m", "l", "zz"])).await;
    let keys: Vec<String> = summary(&t).into_iter().map(|e| e.1).collect();
    assert_eq!(keys, ["m", "zz"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_key_with_range_end_nul_watches_every_key() {
    let c = pb::WatchCreateRequest { key: Bytes::new(), range_end: b("\0"), ..Default::default() };
    let t = compare("all_keys", |ch| watch_range(ch, c.clone(), &["\0", "a", "zz"])).await;
    let keys: Vec<String> = summary(&t).into_iter().map(|e| e.1).collect();
    assert_eq!(keys, ["\0", "a", "zz"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_key_alone_watches_the_key_nul() {
    let c = pb::WatchCreateRequest::default();
    let t = compare("empty_key", |ch| watch_range(ch, c.clone(), &["a", "\0"])).await;
    let keys: Vec<String> = summary(&t).into_iter().map(|e| e.1).collect();
    assert_eq!(keys, ["\0"]);
}

// ---------------------------------------------------------------------------------------------
// Start revisions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_revision_zero_starts_after_the_current_revision() {
    // Repeated: a create right after a write was answered must not race with the member's
    // view of its own revision.
    let t = compare("start_now", |ch| async move {
        let mut w = Writer::new(&ch);
        let mut s = Stream::open(&ch).await;
        let mut t = Vec::new();
        for i in 0..10 {
            let key = format!("k{i}");
            w.put(&key, "before").await;
            t.push(s.created(watch(&key)).await);
            w.put(&key, "after").await;
            t.extend(s.events(1).await);
        }
        t.extend(s.quiet().await);
        t
    })
    .await;
    let want: Vec<_> = (0..10).map(|i| ev("put", &format!("k{i}"), "after")).collect();
    assert_eq!(summary(&t), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_revision_in_the_past_replays_every_event_from_it_in_order() {
    let t = compare("start_past", |ch| async move {
        let mut w = Writer::new(&ch);
        w.put("h/a", "1").await; // 2
        w.put("h/b", "1").await; // 3
        w.put("other", "1").await; // 4
        w.put("h/a", "2").await; // 5
        w.delete("h/b").await; // 6
        w.txn(vec![put_op("h/c", "1"), put_op("h/a", "3")]).await; // 7
        let mut s = Stream::open(&ch).await;
        let c = pb::WatchCreateRequest { range_end: b("h0"), start_revision: 3, ..watch("h/") };
        let mut t = vec![s.created(c).await];
        t.extend(s.events(5).await);
        t.extend(s.quiet().await);
        t
    })
    .await;
    assert_eq!(
        summary(&t),
        [
            ev("put", "h/b", "1"),
            ev("put", "h/a", "2"),
            ev("del", "h/b", ""),
            ev("put", "h/c", "1"),
            ev("put", "h/a", "3")
        ]
    );
    let mods: Vec<i64> = events(&t).iter().map(|e| e.kv.as_ref().unwrap().mod_revision).collect();
    assert_eq!(mods, [3, 5, 6, 7, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_revision_in_the_future_sends_nothing_before_it() {
    let t = compare("start_future", |ch| async move {
        let mut w = Writer::new(&ch);
        let now = w.put("k", "1").await;
        let mut s = Stream::open(&ch).await;
        let c = pb::WatchCreateRequest { start_revision: now + 3, ..watch("k") };
        let mut t = vec![s.created(c).await];
        for v in ["2", "3", "4", "5"] {
            w.put("k", v).await;
        }
        t.extend(s.events(2).await);
        t.extend(s.quiet().await);
        t
    })
    .await;
    assert_eq!(summary(&t), [ev("put", "k", "4"), ev("put", "k", "5")]);
    assert_eq!(revision(&t[0]), 2, "created with the current revision, not the start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_txn_arrives_as_one_response_with_its_events_in_operation_order() {
    let t = compare("txn", |ch| async move {
        let mut w = Writer::new(&ch);
        w.put("t/z", "0").await;
        let mut s = Stream::open(&ch).await;
        let c = pb::WatchCreateRequest { range_end: b("t0"), prev_kv: true, ..watch("t/") };
        let mut t = vec![s.created(c).await];
        w.txn(vec![put_op("t/c", "1"), put_op("t/a", "1"), delete_op("t/z"), put_op("t/b", "1")])
            .await;
        t.extend(s.events(4).await);
        t
    })
    .await;
    assert_eq!(t.len(), 2, "one response: {t:?}");
    assert_eq!(
        summary(&t),
        [ev("put", "t/c", "1"), ev("put", "t/a", "1"), ev("del", "t/z", ""), ev("put", "t/b", "1")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_start_revision_cancels_the_watcher_with_the_compact_revision() {
    let t = compare("compacted", |ch| async move {
        let mut w = Writer::new(&ch);
        for v in ["1", "2", "3", "4", "5"] {
            w.put("k", v).await;
        }
        w.compact(4).await;
        let mut s = Stream::open(&ch).await;
        let c = pb::WatchCreateRequest { start_revision: 2, ..watch("k") };
        let mut t = vec![s.created(c).await];
        t.push(s.next().await);
        // The watcher is gone: a later put is not sent, and it holds back no progress response.
        w.put("k", "6").await;
        t.extend(s.quiet().await);
        s.progress();
        t.push(s.next().await);
        t
    })
    .await;
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(t[1].canceled && t[1].compact_revision == 4 && t[1].watch_id == 0, "{:?}", t[1]);
    assert!(t[1].events.is_empty() && t[1].cancel_reason.is_empty());
    assert_eq!(revision(&t[1]), 0, "etcd's compaction response carries no revision");
    assert_eq!((t[2].watch_id, revision(&t[2])), (-1, 7));
}

// ---------------------------------------------------------------------------------------------
// Refused creates.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_client_chosen_watch_id_is_refused_as_etcd_refuses_it() {
    let t = compare("duplicate", |ch| async move {
        let mut s = Stream::open(&ch).await;
        let c = pb::WatchCreateRequest { watch_id: 7, ..watch("k") };
        let first = s.created(c.clone()).await;
        s.create(c);
        let second = s.next().await;
        // The first watcher still works.
        Writer::new(&ch).put("k", "1").await;
        let mut t = vec![first, second];
        t.extend(s.events(1).await);
        t
    })
    .await;
    assert_eq!((t[0].watch_id, t[0].canceled), (7, false));
    assert_eq!((t[1].watch_id, t[1].created, t[1].canceled), (-1, true, true));
    assert_eq!(t[1].cancel_reason, "mvcc: duplicate watch ID provided on the WatchStream");
    assert_eq!(t[2].watch_id, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_range_is_refused_as_etcd_refuses_it() {
    let t = compare("empty_range", |ch| async move {
        let mut s = Stream::open(&ch).await;
        s.create(pb::WatchCreateRequest { range_end: b("a"), ..watch("b") });
        let below = s.next().await;
        s.create(pb::WatchCreateRequest { range_end: b("b"), ..watch("b") });
        let equal = s.next().await;
        // Refusals take no id: the next watcher gets 0.
        let next = s.created(watch("c")).await;
        vec![below, equal, next]
    })
    .await;
    for r in &t[..2] {
        assert_eq!((r.watch_id, r.created, r.canceled), (-1, true, true), "{r:?}");
        assert_eq!(r.cancel_reason, "mvcc: watcher range is empty");
    }
    assert_eq!(t[2].watch_id, 0);
}

// ---------------------------------------------------------------------------------------------
// Cancel.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_is_answered_and_no_event_follows() {
    let t = compare("cancel", |ch| async move {
        let mut s = Stream::open(&ch).await;
        let mut t = vec![s.created(watch("k")).await];
        let mut w = Writer::new(&ch);
        w.put("k", "1").await;
        t.extend(s.events(1).await);
        s.cancel(0);
        t.push(s.next().await);
        w.put("k", "2").await;
        t.extend(s.quiet().await);
        t
    })
    .await;
    assert_eq!(t.len(), 3, "{t:?}");
    assert_eq!((t[2].watch_id, t[2].canceled, t[2].created), (0, true, false));
    assert_eq!(revision(&t[2]), 2);
    assert!(t[2].cancel_reason.is_empty() && t[2].compact_revision == 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_an_unknown_id_is_not_answered() {
    let t = compare("cancel_unknown", |ch| async move {
        let mut s = Stream::open(&ch).await;
        s.cancel(42);
        let mut t = s.quiet().await;
        // The stream still serves.
        t.push(s.created(watch("k")).await);
        t
    })
    .await;
    assert_eq!(t.len(), 1, "only the create was answered: {t:?}");
}

// ---------------------------------------------------------------------------------------------
// Several watchers and streams.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_watchers_share_one_stream_each_with_its_own_events() {
    let t = compare("watchers", |ch| async move {
        let mut s = Stream::open(&ch).await;
        let prefix = pb::WatchCreateRequest { range_end: b("c"), ..watch("a") };
        let mut t =
            vec![s.created(watch("a")).await, s.created(watch("b")).await, s.created(prefix).await];
        let mut w = Writer::new(&ch);
        w.put("a", "1").await;
        w.put("b", "1").await;
        t.extend(s.events(4).await);
        t.extend(s.quiet().await);
        by_watcher(t)
    })
    .await;
    let of = |id: i64| summary(&t.iter().filter(|r| r.watch_id == id).cloned().collect::<Vec<_>>());
    assert_eq!(of(0), [ev("put", "a", "1")]);
    assert_eq!(of(1), [ev("put", "b", "1")]);
    assert_eq!(of(2), [ev("put", "a", "1"), ev("put", "b", "1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_streams_share_one_connection_each_with_its_own_ids() {
    let t = compare("streams", |ch| async move {
        let mut s1 = Stream::open(&ch).await;
        let mut s2 = Stream::open(&ch).await;
        let mut t = vec![s1.created(watch("a")).await, s2.created(watch("a")).await];
        Writer::new(&ch).put("a", "1").await;
        t.extend(s1.events(1).await);
        t.extend(s2.events(1).await);
        s1.cancel(0);
        t.push(s1.next().await);
        Writer::new(&ch).put("a", "2").await;
        t.extend(s2.events(1).await);
        t
    })
    .await;
    assert_eq!((t[0].watch_id, t[1].watch_id), (0, 0), "ids are per stream");
    assert_eq!(
        summary(&t[5..]),
        [ev("put", "a", "2")],
        "the other stream's cancel stops only its own"
    );
}

// ---------------------------------------------------------------------------------------------
// Progress.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_request_is_answered_with_id_minus_one_and_the_current_revision() {
    let t = compare("progress", |ch| async move {
        let mut s = Stream::open(&ch).await;
        let mut t = vec![s.created(watch("k")).await];
        let mut w = Writer::new(&ch);
        w.put("k", "1").await;
        w.put("other", "1").await;
        t.extend(s.events(1).await);
        s.progress();
        t.push(s.next().await);
        t
    })
    .await;
    let p = t.last().unwrap();
    assert_eq!((p.watch_id, revision(p)), (-1, 3), "{p:?}");
    assert!(p.events.is_empty() && !p.created && !p.canceled);
}

/// etcd 3.4 answers a progress request at once, possibly before events of earlier revisions
/// (etcd issue 15220); tenure answers once the stream's watchers have sent everything up to the
/// revision it names. Tenure only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_response_follows_every_event_up_to_its_revision() {
    let tenure = tenure().await;
    let ch = tenure.channel(tenure.follower().await).await;
    let mut s = Stream::open(&ch).await;
    s.created(pb::WatchCreateRequest { range_end: b("\0"), ..watch("a") }).await;
    s.created(watch("k")).await;
    let mut w = Writer::new(&ch);
    let mut last = 0;
    for i in 0..50 {
        last = w.put(&format!("a{i}"), "v").await;
    }
    s.progress();
    let mut seen = Vec::new();
    loop {
        let r = s.next().await;
        if r.watch_id == -1 {
            assert!(revision(&r) >= last, "{r:?}");
            break;
        }
        seen.extend(events(&[r]).into_iter().map(|e| e.kv.unwrap().mod_revision));
    }
    let want: Vec<i64> = (2..=last).collect();
    assert_eq!(seen, want, "every event up to the progress revision came before it");
    tenure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_watchers_alone_get_an_empty_response_after_a_quiet_interval() {
    // etcd 3.5's --experimental-watch-progress-notify-interval; a single etcd here would take
    // 10 minutes, so there is no etcd half.
    let interval = Duration::from_millis(300);
    let tenure = Tenure::start_timed(TIMING, |c| c.watch_progress_notify_interval = interval).await;
    let ch = tenure.channel(tenure.follower().await).await;
    let mut s = Stream::open(&ch).await;
    let notified = s.created(pb::WatchCreateRequest { progress_notify: true, ..watch("p") }).await;
    let quiet = s.created(watch("q")).await;
    let mut w = Writer::new(&ch);
    let put = w.put("p", "v").await;
    let event = s.next().await;
    assert_eq!(event.watch_id, notified.watch_id);
    assert_eq!(events(&[event]).len(), 1);
    let started = Instant::now();
    let progress = s.next().await;
    assert_eq!(progress.watch_id, notified.watch_id, "only the watcher that asked: {progress:?}");
    assert!(progress.events.is_empty() && !progress.canceled && !progress.created);
    assert!(revision(&progress) >= put, "{progress:?} after the put at {put}");
    assert!(progress.watch_id != quiet.watch_id);
    eprintln!("progress notification {:?} after the last event", started.elapsed());
    tenure.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Fragments.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_splits_a_response_over_the_request_limit_into_parts_that_reassemble() {
    // tenure has no --max-request-bytes flag yet, so the default limit is passed: etcd
    // fragments at --max-request-bytes (1.5 MiB) plus gRPC's 512 KiB allowance, and a txn of
    // ten 140 KiB values (under 1.5 MiB) makes events of about 2.8 MiB with their prev_kvs.
    let value = "x".repeat(140 * 1024);
    let t = compare("fragment", |ch| {
        let value = value.clone();
        async move {
            let mut w = Writer::new(&ch);
            let keys: Vec<String> = (0..10).map(|i| format!("f/{i}")).collect();
            for k in &keys {
                w.put(k, &value).await;
            }
            let mut fragmented = Stream::open(&ch).await;
            let mut whole = Stream::open(&ch).await;
            let c = pb::WatchCreateRequest { range_end: b("f0"), prev_kv: true, ..watch("f/") };
            let fc = pb::WatchCreateRequest { fragment: true, ..c.clone() };
            let mut t = vec![fragmented.created(fc).await];
            whole.created(c).await;
            w.txn(keys.iter().map(|k| put_op(k, &value)).collect()).await;
            let parts = fragmented.events(10).await;
            let one = whole.events(10).await;
            assert_eq!(one.len(), 1, "without fragment: one response");
            assert!(!one[0].fragment);
            // (Compared by digest: the values are large.)
            let digest = |t: &[pb::WatchResponse]| -> Vec<(Bytes, i64, usize, Option<i64>)> {
                events(t)
                    .into_iter()
                    .map(|e| {
                        let kv = e.kv.unwrap_or_default();
                        let prev = e.prev_kv.map(|p| p.mod_revision);
                        (kv.key, kv.mod_revision, kv.value.len(), prev)
                    })
                    .collect()
            };
            assert_eq!(digest(&parts), digest(&one), "the fragments reassemble to the same events");
            assert_eq!(events(&parts), events(&one));
            t.extend(parts);
            // Values shortened to their lengths, so that a difference prints readably.
            for e in t.iter_mut().flat_map(|r| r.events.iter_mut()) {
                for kv in e.kv.iter_mut().chain(e.prev_kv.iter_mut()) {
                    kv.value = Bytes::from(format!("{} bytes", kv.value.len()));
                }
            }
            t
        }
    })
    .await;
    let parts = &t[1..];
    assert!(parts.len() >= 2, "{} parts", parts.len());
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.fragment, i + 1 < parts.len(), "all but the last are marked");
    }
}

// ---------------------------------------------------------------------------------------------
// Leadership.

/// etcd refuses a `hasleader=true` stream on a member without a leader. A single etcd always
/// has one, so this is tenure only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hasleader_watch_is_closed_and_refused_with_no_leader_on_a_member_without_one() {
    let mut tenure = tenure().await;
    let ch = tenure.channel(0).await;
    // With a leader, such a stream opens and serves.
    let mut s = Stream::try_open(&ch, true).await.expect("opens with a leader");
    s.created(watch("k")).await;
    tenure.stop(1).await;
    tenure.stop(2).await;
    let deadline = Instant::now() + PATIENCE;
    let handle = tenure.members[0].as_ref().unwrap().handle();
    while handle.status().leader.is_some() {
        assert!(Instant::now() < deadline, "member 0 still has a leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream opened with a leader is closed with etcd's error.
    let rx = s.responses().await.expect("open");
    let closed = tokio::time::timeout(PATIENCE, rx.message()).await.expect("closed in time");
    let closed = closed.expect_err("an error, not a response or a clean end");
    assert_eq!(
        (closed.code(), closed.message()),
        (tonic::Code::Unavailable, "etcdserver: no leader")
    );
    let refused = Stream::try_open(&ch, true).await.err().expect("refused");
    assert_eq!(refused.code(), tonic::Code::Unavailable);
    assert_eq!(refused.message(), "etcdserver: no leader");
    // Without the metadata the stream opens.
    let mut plain = Stream::open(&ch).await;
    plain.created(watch("k")).await;
    tenure.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_a_follower_sees_every_put_through_other_members_once_in_order() {
    const PUTS: usize = 500;
    const WRITERS: usize = 10;
    let tenure = tenure().await;
    let leader = tenure.leader().await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut s = Stream::open(&tenure.channel(follower).await).await;
    s.created(pb::WatchCreateRequest { range_end: b("load0"), ..watch("load/") }).await;
    let targets = [tenure.channel(leader).await, tenure.channel(other).await];
    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let mut w = Writer::new(&targets[i % 2]);
        writers.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for j in (i..PUTS).step_by(WRITERS) {
                let key = format!("load/{j:03}");
                made.push((w.put(&key, &j.to_string()).await, key));
            }
            made
        }));
    }
    let mut made = Vec::new();
    for w in writers {
        made.extend(w.await.expect("writer"));
    }
    made.sort();
    let mut seen = Vec::new();
    while seen.len() < PUTS {
        let r = s.next().await;
        for e in r.events {
            let kv = e.kv.expect("kv");
            assert_eq!(kv.mod_revision, kv.create_revision, "each key is put once");
            assert!(r.header.as_ref().unwrap().revision >= kv.mod_revision);
            seen.push((kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned()));
        }
    }
    assert_eq!(seen, made, "every put once, in revision order");
    assert!(s.quiet().await.is_empty(), "nothing more");
    tenure.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// The comparison itself.

#[test]
fn normalise_blanks_ids_and_term_but_a_different_revision_or_field_still_differs() {
    let r = |cluster_id, revision, canceled| pb::WatchResponse {
        header: Some(pb::ResponseHeader {
            cluster_id,
            member_id: cluster_id,
            revision,
            raft_term: 2,
        }),
        canceled,
        ..Default::default()
    };
    assert_eq!(normalise(vec![r(1, 5, false)]), normalise(vec![r(9, 5, false)]));
    assert_ne!(normalise(vec![r(1, 5, false)]), normalise(vec![r(1, 6, false)]));
    assert_ne!(normalise(vec![r(1, 5, false)]), normalise(vec![r(1, 5, true)]));
}
