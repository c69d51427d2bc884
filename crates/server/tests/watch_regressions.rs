//! Regression tests named after etcd's watch bugs (issue 12): each reproduces the scenario of
//! one etcd issue against an in-process three-member tenure cluster and asserts what tenure
//! must do instead, exactly: which events, once each, in order, with which revisions.
//!
//! The members talk to each other through a fault proxy (`common::isolate`), so a test can cut
//! one member off and heal it, which with a small `--snapshot-count` makes that member catch up
//! by installing the leader's snapshot: the path most of etcd's watch bugs were on.
//!
//! Where a write may have been retried (a partition, a leader change), the expected events are
//! not the acknowledged writes but the committed history read back by a fresh watcher on
//! another member, and every acknowledged write is checked to be in it.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::isolate::{self, Isolation};
use tenure_server::cli::dev::{self, Timing};
use tenure_server::cli::{ServeConfig, Url};
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;
use tenure_server::pb::mvccpb;
use tokio::sync::mpsc;
use tonic::transport::Channel;

const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };
/// How long anything may take before a test fails (generous: machines are shared).
const PATIENCE: Duration = Duration::from_secs(20);
/// How long a test waits to see that nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// The cluster.

/// Three in-process members, each behind a fault proxy on the peer URL the others know.
struct Cluster {
    configs: Vec<ServeConfig>,
    members: Vec<Option<Member>>,
    isolation: Isolation,
    proxies: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        Cluster::start_with(|_| {}).await
    }

    /// A cluster whose members' configurations `adjust` changed first.
    async fn start_with(adjust: impl Fn(&mut ServeConfig)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = common::free_ports(9);
        // (client, proxy) per member; the member really listens for peers on a third port.
        let advertised: Vec<(u16, u16)> = ports.chunks(3).map(|p| (p[0], p[1])).collect();
        let real: Vec<u16> = ports.chunks(3).map(|p| p[2]).collect();
        let mut configs = dev::configs(&advertised, dir.path(), TIMING).expect("configs");
        let isolation = Isolation::default();
        let mut proxies = Vec::new();
        for (i, c) in configs.iter_mut().enumerate() {
            let listen = format!("http://127.0.0.1:{}", real[i]);
            c.listen_peer_urls = vec![Url::parse(&listen).expect("url")];
            adjust(c);
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", advertised[i].1))
                .await
                .expect("bind proxy");
            let target = format!("127.0.0.1:{}", real[i]);
            proxies.push(isolate::spawn(listener, target, c.member_id, isolation.clone()));
        }
        let members = dev::start(&configs).await.expect("cluster starts");
        let cluster = Cluster {
            configs,
            members: members.into_iter().map(Some).collect(),
            isolation,
            proxies,
            _dir: dir,
        };
        cluster.leader().await;
        cluster
    }

    /// Waits until one running member leads and every running member knows it.
    async fn leader(&self) -> usize {
        common::wait_for_leader(&self.members, &self.configs, PATIENCE).await
    }

    fn member(&self, i: usize) -> &Member {
        self.members[i].as_ref().expect("running")
    }

    async fn channel(&self, i: usize) -> Channel {
        let url = self.configs[i].advertise_client_urls[0].to_string();
        Channel::from_shared(url).unwrap().connect().await.expect("connect")
    }

    fn isolate(&self, i: usize) {
        self.isolation.isolate(self.configs[i].member_id);
    }

    fn heal(&self) {
        self.isolation.heal();
    }

    async fn stop(&mut self, i: usize) {
        let m = self.members[i].take().expect("running");
        m.shutdown().await.expect("clean shutdown");
    }

    /// Starts member `i` again on its data directory.
    async fn restart(&mut self, i: usize) {
        let urls: BTreeMap<u64, Vec<String>> = self
            .configs
            .iter()
            .map(|c| (c.member_id, c.advertise_client_urls.iter().map(|u| u.to_string()).collect()))
            .collect();
        let m = Member::start(&self.configs[i], &urls).await.expect("member restarts");
        self.members[i] = Some(m);
    }

    /// Waits until member `i` has installed at least one snapshot from the leader.
    async fn installed_snapshot(&self, i: usize) {
        let deadline = Instant::now() + PATIENCE;
        while self.member(i).handle().metrics().snapshots_installed_count() == 0 {
            assert!(Instant::now() < deadline, "member {i} never installed a snapshot");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until member `i` has applied revision `revision`.
    async fn applied(&self, i: usize, revision: i64) {
        let deadline = Instant::now() + PATIENCE;
        while self.member(i).handle().status().revision < revision {
            assert!(Instant::now() < deadline, "member {i} never reached revision {revision}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until member `i` has applied everything member `leader` has committed (a
    /// compaction moves no revision, so [`Cluster::applied`] cannot tell).
    async fn caught_up(&self, i: usize, leader: usize) {
        let target = self.member(leader).handle().status().committed;
        let deadline = Instant::now() + PATIENCE;
        while self.member(i).handle().status().applied < target {
            assert!(Instant::now() < deadline, "member {i} never applied index {target}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn shutdown(mut self) {
        for i in 0..3 {
            if self.members[i].is_some() {
                self.stop(i).await;
            }
        }
        for p in self.proxies {
            p.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients.

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A watcher on every key under `prefix`, from `start_revision` (0: from now).
fn prefix_watch(prefix: &str, start_revision: i64) -> pb::WatchCreateRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    pb::WatchCreateRequest {
        key: b(prefix),
        range_end: Bytes::from(end),
        start_revision,
        ..Default::default()
    }
}

/// One watch stream.
struct Stream {
    tx: mpsc::UnboundedSender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl Stream {
    async fn open(ch: &Channel) -> Stream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut client = pb::watch_client::WatchClient::new(ch.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        let rx = client
            .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .expect("the watch stream opens")
            .into_inner();
        Stream { tx, rx }
    }

    fn send(&self, r: pb::watch_request::RequestUnion) {
        self.tx.send(pb::WatchRequest { request_union: Some(r) }).expect("stream open");
    }

    fn create(&self, c: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c));
    }

    fn progress(&self) {
        self.send(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {}));
    }

    /// Creates a watcher and returns its created response.
    async fn created(&mut self, c: pb::WatchCreateRequest) -> pb::WatchResponse {
        self.create(c);
        let r = self.next().await;
        assert!(r.created && !r.canceled, "{r:?}");
        r
    }

    async fn next(&mut self) -> pb::WatchResponse {
        match tokio::time::timeout(PATIENCE, self.rx.message()).await {
            Ok(Ok(Some(r))) => r,
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Err(s)) => panic!("the stream failed: {s}"),
            Err(_) => panic!("no response within {PATIENCE:?}"),
        }
    }

    /// Whatever arrives within `wait`.
    async fn within(&mut self, wait: Duration) -> Vec<pb::WatchResponse> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut t = Vec::new();
        while let Ok(r) = tokio::time::timeout_at(deadline, self.rx.message()).await {
            match r {
                Ok(Some(r)) => t.push(r),
                Ok(None) | Err(_) => break,
            }
        }
        t
    }

    /// Responses until one holds an event at `revision` or later; all of them.
    async fn through(&mut self, revision: i64) -> Vec<pb::WatchResponse> {
        let mut t: Vec<pb::WatchResponse> = Vec::new();
        while t.last().and_then(|r| r.events.last()).is_none_or(|e| mod_revision(e) < revision) {
            let r = self.next().await;
            assert!(!r.canceled, "cancelled before revision {revision}: {r:?}");
            t.push(r);
        }
        t
    }
}

fn mod_revision(e: &mvccpb::Event) -> i64 {
    e.kv.as_ref().expect("kv").mod_revision
}

fn header_revision(r: &pb::WatchResponse) -> i64 {
    r.header.as_ref().expect("header").revision
}

/// (revision, kind, key) of one event.
type Seen = (i64, &'static str, String);

fn seen(t: &[pb::WatchResponse]) -> Vec<Seen> {
    t.iter()
        .flat_map(|r| &r.events)
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            let kind = if e.r#type == mvccpb::event::EventType::Put as i32 { "put" } else { "del" };
            (kv.mod_revision, kind, String::from_utf8_lossy(&kv.key).into_owned())
        })
        .collect()
}

/// Asserts that revisions strictly increase from event to event: ordered, no duplicate
/// (every event in these tests is the only event of its revision).
fn assert_ordered_once(events: &[Seen]) {
    for w in events.windows(2) {
        assert!(w[0].0 < w[1].0, "revision {} after {}: {events:?}", w[1].0, w[0].0);
    }
}

/// Asserts that every watch response's header revision is at or past its events and never
/// below an earlier response's (no response "from the past").
fn assert_headers_move_forward(t: &[pb::WatchResponse]) {
    let mut last = 0;
    for r in t {
        let h = header_revision(r);
        assert!(h >= last, "header revision {h} after {last}: {r:?}");
        for e in &r.events {
            assert!(mod_revision(e) <= h, "event after its header: {r:?}");
        }
        last = h;
    }
}

/// The revision a member's store is at (a serializable range's header).
async fn current_revision(ch: &Channel) -> i64 {
    let r = pb::RangeRequest { key: b("any"), serializable: true, ..Default::default() };
    let mut kv = pb::kv_client::KvClient::new(ch.clone());
    kv.range(r).await.expect("range").into_inner().header.expect("header").revision
}

/// KV writes through one connection.
struct Writer(pb::kv_client::KvClient<Channel>);

impl Writer {
    fn new(ch: &Channel) -> Writer {
        Writer(pb::kv_client::KvClient::new(ch.clone()))
    }

    /// Puts, retrying while the member answers `Unavailable`; returns the revision.
    async fn put(&mut self, key: &str, value: &str) -> i64 {
        let r = pb::PutRequest { key: b(key), value: b(value), ..Default::default() };
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.0.put(r.clone()).await {
                Ok(r) => return r.into_inner().header.expect("header").revision,
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => panic!("put {key} failed: {s}"),
            }
        }
    }

    async fn delete(&mut self, key: &str) -> i64 {
        let r = pb::DeleteRangeRequest { key: b(key), ..Default::default() };
        self.0.delete_range(r).await.expect("delete").into_inner().header.expect("header").revision
    }

    async fn compact(&mut self, revision: i64) {
        let c = pb::CompactionRequest { revision, physical: true };
        self.0.compact(c).await.expect("compact");
    }
}

/// Puts `count` keys `{prefix}{n:05}` (n from `first`) through `ch` from `writers` concurrent
/// clients, each value `value_bytes` long; returns (revision, key) of each, by revision.
async fn put_many(
    ch: &Channel,
    prefix: &str,
    first: usize,
    count: usize,
    writers: usize,
    value_bytes: usize,
) -> Vec<(i64, String)> {
    let value = "v".repeat(value_bytes);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut writer = Writer::new(ch);
        let (prefix, value) = (prefix.to_string(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            for n in (first + w..first + count).step_by(writers) {
                let key = format!("{prefix}{n:05}");
                made.push((writer.put(&key, &value).await, key));
            }
            made
        }));
    }
    let mut made = Vec::new();
    for t in tasks {
        made.extend(t.await.expect("writer"));
    }
    made.sort();
    made
}

/// The committed history under `prefix` from `from` through `through`, read by a fresh watcher
/// on member `i`.
async fn history(cluster: &Cluster, i: usize, prefix: &str, from: i64, through: i64) -> Vec<Seen> {
    let mut s = Stream::open(&cluster.channel(i).await).await;
    s.created(prefix_watch(prefix, from)).await;
    let t = s.through(through).await;
    seen(&t)
}

/// Asserts that each acknowledged put (revision, key) is among `events`.
fn assert_contains_puts(events: &[Seen], puts: &[(i64, String)]) {
    for (revision, key) in puts {
        assert!(
            events.iter().any(|(r, kind, k)| r == revision && *kind == "put" && k == key),
            "the acknowledged put of {key} at {revision} is missing"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The issues.

/// etcd 15220: a progress response (RequestProgress) was sent with the store's current revision
/// while a watcher of the stream was still catching up (unsynced), so it claimed a revision
/// whose earlier events the client had not received yet (bookmarkable broken; fixed in etcd by
/// answering only once every watcher of the stream is synced).
///
/// tenure must answer a progress request only once every watcher of the stream has sent every
/// event up to the revision it names: here a watcher replaying 3,000 revisions from history
/// while 300 more are written, and a second, live watcher on the same stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_15220_progress_response_never_runs_ahead_of_a_catching_up_watchers_events() {
    let cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let to_leader = cluster.channel(leader).await;
    let before = put_many(&to_leader, "p/", 0, 3000, 16, 200).await;
    cluster.applied(follower, before.last().unwrap().0).await;
    let ch = cluster.channel(follower).await;
    let mut s = Stream::open(&ch).await;
    s.created(pb::WatchCreateRequest { key: b("live"), ..Default::default() }).await;
    // The catching-up watcher and the progress request go out together.
    s.create(prefix_watch("p/", 2));
    s.progress();
    let during = tokio::spawn({
        let ch = to_leader.clone();
        async move { put_many(&ch, "p/", 3000, 300, 4, 200).await }
    });
    let mut before_progress = Vec::new();
    let progress = loop {
        let r = s.next().await;
        if r.watch_id == -1 {
            break r;
        }
        if !r.created {
            before_progress.push(r);
        }
    };
    let during = during.await.expect("writer");
    let bookmark = header_revision(&progress);
    let first_seen = seen(&before_progress);
    assert!(bookmark >= before.last().unwrap().0, "the progress revision is current: {bookmark}");
    // Every revision up to the bookmark came before it (all revisions here are puts on p/).
    let want: Vec<i64> = (2..=bookmark).collect();
    assert_eq!(
        first_seen.iter().map(|e| e.0).collect::<Vec<_>>(),
        want,
        "the progress response at {bookmark} came before events it covers"
    );
    let last = during.last().unwrap().0;
    let rest = s.through(last).await;
    let after_seen = seen(&rest);
    assert!(
        after_seen.iter().all(|e| e.0 > bookmark),
        "an event at or below the bookmark after it"
    );
    let all: Vec<Seen> = first_seen.into_iter().chain(after_seen).collect();
    assert_ordered_once(&all);
    let written: Vec<(i64, String)> = before.into_iter().chain(during).collect();
    assert_eq!(
        all.iter().map(|(r, _, k)| (*r, k.clone())).collect::<Vec<_>>(),
        written,
        "every put once, in order"
    );
    assert_headers_move_forward(&before_progress);
    assert_headers_move_forward(&rest);
    assert!(s.within(QUIET).await.is_empty(), "nothing more");
    cluster.shutdown().await;
}

/// etcd 15271: a member cut off from the cluster reconnected and installed the leader's
/// snapshot; restoring moved its watchers back to catch up from a revision they had already
/// passed, and they sent responses "from the past" (old revisions again).
///
/// tenure must, on the member that installs a snapshot, go on from each watcher's next
/// revision: every committed event once, in order, response revisions never going back; and a
/// watcher opened afterwards from the beginning must read the same history from the installed
/// store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_15271_a_member_installing_a_snapshot_never_sends_a_watch_response_from_the_past() {
    let cluster = Cluster::start_with(|c| {
        c.snapshot_count = 20;
        c.snapshot_catchup_entries = 5;
    })
    .await;
    let leader = cluster.leader().await;
    let watched = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let mut s = Stream::open(&cluster.channel(watched).await).await;
    let created = s.created(prefix_watch("s/", 0)).await;
    let start = header_revision(&created) + 1;
    let to_leader = cluster.channel(leader).await;
    let mut acked = put_many(&to_leader, "s/", 0, 30, 1, 10).await;
    let mut t = s.through(acked.last().unwrap().0).await;

    cluster.isolate(watched);
    acked.extend(put_many(&to_leader, "s/", 30, 150, 4, 10).await);
    cluster.heal();
    cluster.installed_snapshot(watched).await;
    let leader = cluster.leader().await;
    let to_leader = cluster.channel(leader).await;
    acked.extend(put_many(&to_leader, "s/", 180, 30, 1, 10).await);
    let last = acked.last().unwrap().0;
    t.extend(s.through(last).await);

    let events = seen(&t);
    assert_ordered_once(&events);
    assert_headers_move_forward(&t);
    let reference = history(&cluster, other, "s/", start, last).await;
    assert_eq!(events, reference, "the watcher on the restored member saw the committed history");
    assert_contains_puts(&events, &acked);
    // A watcher opened after the install reads the same history from the installed store.
    assert_eq!(history(&cluster, watched, "s/", start, last).await, reference);
    assert!(s.within(QUIET).await.is_empty(), "nothing more");
    cluster.shutdown().await;
}

/// etcd 17247: the robustness suite found an event delivered twice to one watch on a
/// three-member cluster when a member crashed right after saving a snapshot
/// (`raftAfterSaveSnap` panic) or was replaced, and its watchers resumed.
///
/// tenure must let a client resume anywhere without a duplicate: a watcher on a member that
/// takes snapshots every 20 entries is followed to revision k; the member is stopped; the
/// client resumes from k + 1 on another member; the member restarts from its snapshot and log;
/// the client resumes from its last revision + 1 on it again. The three segments together are
/// the committed history, each revision once, and the restarted member replays it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_17247_resuming_across_a_member_restart_after_its_snapshots_never_duplicates() {
    let mut cluster = Cluster::start_with(|c| {
        c.snapshot_count = 20;
        c.snapshot_catchup_entries = 5;
    })
    .await;
    let leader = cluster.leader().await;
    let watched = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let to_leader = cluster.channel(leader).await;
    let mut s = Stream::open(&cluster.channel(watched).await).await;
    let start = header_revision(&s.created(prefix_watch("d/", 0)).await) + 1;
    let mut acked = put_many(&to_leader, "d/", 0, 60, 4, 10).await;
    let mut t = s.through(acked.last().unwrap().0).await;
    assert!(
        cluster.member(watched).handle().metrics().snapshot_count() >= 1,
        "the watched member saved snapshots"
    );
    // More writes while the client is still on it, then the member stops mid-stream.
    let more = tokio::spawn({
        let ch = to_leader.clone();
        async move { put_many(&ch, "d/", 60, 60, 4, 10).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    t.extend(s.within(Duration::from_millis(20)).await);
    drop(s);
    cluster.stop(watched).await;
    acked.extend(more.await.expect("writer"));

    // Resume on another member from the last revision received + 1.
    let resume = |t: &[pb::WatchResponse]| seen(t).last().map_or(start, |e| e.0 + 1);
    let mut s = Stream::open(&cluster.channel(other).await).await;
    s.created(prefix_watch("d/", resume(&t))).await;
    acked.extend(put_many(&to_leader, "d/", 120, 60, 4, 10).await);
    t.extend(s.within(Duration::from_millis(100)).await);
    drop(s);

    cluster.restart(watched).await;
    let leader = cluster.leader().await;
    let to_leader = cluster.channel(leader).await;
    acked.extend(put_many(&to_leader, "d/", 180, 60, 4, 10).await);
    let last = acked.last().unwrap().0;
    cluster.applied(watched, last).await;
    let mut s = Stream::open(&cluster.channel(watched).await).await;
    s.created(prefix_watch("d/", resume(&t))).await;
    t.extend(s.through(last).await);

    let events = seen(&t);
    assert_ordered_once(&events);
    let reference = history(&cluster, other, "d/", start, last).await;
    assert_eq!(events, reference, "the resumed segments are the committed history, once");
    assert_contains_puts(&events, &acked);
    assert_eq!(history(&cluster, watched, "d/", start, last).await, reference);
    cluster.shutdown().await;
}

/// etcd 17529: a watcher that had fallen behind (unsynced: its channel was full) when a
/// compaction passed its next revision could not be sent its compaction response, yet its
/// revision moved on: it silently lost the events in between and went on as if nothing had
/// happened (fixed in etcd by never skipping a compacted watcher).
///
/// A tenure watcher falls behind in two ways, a full stream queue (it lags the member's feed of
/// 1,024 batches) or a snapshot installed under it, and both catch up from the store's history
/// through the same code. The first needs over 1,024 fsync-bound batches (about ten seconds on
/// a shared disk), so this test takes the second: the watcher's member is cut off, the others
/// write and compact past everything it has, and it comes back by installing their snapshot,
/// while its client reads nothing. tenure must then deliver an unbroken run of events from the
/// start revision and a cancellation with the compact revision, never an event after a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_17529_a_watcher_behind_a_compaction_is_cancelled_never_skipped_forward() {
    let cluster = Cluster::start_with(|c| {
        c.snapshot_count = 20;
        c.snapshot_catchup_entries = 5;
    })
    .await;
    let leader = cluster.leader().await;
    let watched = (leader + 1) % 3;
    let mut s = Stream::open(&cluster.channel(watched).await).await;
    let start = header_revision(&s.created(prefix_watch("c/", 0)).await) + 1;
    let to_leader = cluster.channel(leader).await;
    let before = put_many(&to_leader, "c/", 0, 30, 2, 10).await;
    cluster.applied(watched, before.last().unwrap().0).await;

    cluster.isolate(watched);
    let after = put_many(&to_leader, "c/", 30, 150, 4, 10).await;
    let compacted = after.last().unwrap().0;
    Writer::new(&to_leader).compact(compacted).await;
    // Writes elsewhere, so that the leader's newest snapshot holds the compaction.
    put_many(&to_leader, "x/", 0, 40, 4, 10).await;
    cluster.heal();
    cluster.installed_snapshot(watched).await;
    let leader = cluster.leader().await;
    cluster.caught_up(watched, leader).await;

    let mut t = Vec::new();
    let cancel = loop {
        let r = s.next().await;
        if r.canceled {
            break r;
        }
        t.push(r);
    };
    assert_eq!(cancel.compact_revision, compacted, "{cancel:?}");
    assert!(cancel.events.is_empty());
    let events = seen(&t);
    let delivered: Vec<i64> = events.iter().map(|e| e.0).collect();
    let want: Vec<i64> = (start..start + delivered.len() as i64).collect();
    assert_eq!(delivered, want, "an unbroken run from the start revision");
    let puts: Vec<(i64, String)> = events.iter().map(|(r, _, k)| (*r, k.clone())).collect();
    assert_eq!(puts, before, "the puts it had before it was cut off, in order");
    assert!(s.within(QUIET).await.is_empty(), "nothing after the cancellation");
    cluster.shutdown().await;
}

/// etcd 18089: compacting at a revision that was a delete removed that tombstone, so a watch
/// from the compaction revision got the later put without the delete before it (etcd 3.4.23
/// answers `watch k1 --rev 5` with `PUT k1 v6` alone).
///
/// tenure must never deliver the later events without the delete: a start revision at or
/// below the compaction revision is cancelled with `compact_revision`, one above it gets every
/// later event, and a watcher that was live through the compaction received all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_18089_a_watch_from_a_compacted_delete_never_gets_the_later_put_without_it() {
    let cluster = Cluster::start().await;
    let follower = (cluster.leader().await + 1) % 3;
    let ch = cluster.channel(follower).await;
    let mut live = Stream::open(&ch).await;
    live.created(pb::WatchCreateRequest { key: b("k1"), ..Default::default() }).await;
    let mut w = Writer::new(&ch);
    let r2 = w.put("k1", "v2").await;
    w.put("k1", "v3").await;
    w.put("k1", "v4").await;
    let r5 = w.delete("k1").await;
    let r6 = w.put("k1", "v6").await;
    assert_eq!((r2, r5, r6), (2, 5, 6));
    w.compact(r5).await;

    let from = |start_revision| pb::WatchCreateRequest {
        key: b("k1"),
        start_revision,
        ..Default::default()
    };
    for start in [r5 - 1, r5] {
        let mut s = Stream::open(&ch).await;
        s.created(from(start)).await;
        let r = s.next().await;
        assert!(r.canceled && r.events.is_empty(), "watch from {start}: {r:?}");
        assert_eq!(r.compact_revision, r5, "watch from {start}");
        assert!(s.within(QUIET).await.is_empty(), "nothing after the cancellation");
    }
    let mut s = Stream::open(&ch).await;
    s.created(from(r6)).await;
    let t = s.through(r6).await;
    assert_eq!(seen(&t), [(6, "put", "k1".to_string())]);
    let t = live.through(r6).await;
    let k = || "k1".to_string();
    assert_eq!(
        seen(&t),
        [(2, "put", k()), (3, "put", k()), (4, "put", k()), (5, "del", k()), (6, "put", k())],
        "the live watcher got the delete"
    );
    cluster.shutdown().await;
}

/// etcd 19179: a watch opened at the revision of a compaction request (while the compaction
/// ran, and across a crash in the middle of it and the restart that resumes it) missed the
/// delete at that revision.
///
/// tenure must, for a watch created concurrently with the compaction at a delete's revision,
/// either deliver the delete and what follows or cancel the watch with that compact revision,
/// nothing in between; and a member restarted after the compaction (which it replays or
/// restores from a snapshot) answers the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_19179_a_watch_opened_at_a_compaction_revision_gets_the_delete_or_is_cancelled() {
    let mut cluster = Cluster::start_with(|c| c.snapshot_count = 7).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let ch = cluster.channel(follower).await;
    let mut w = Writer::new(&cluster.channel(leader).await);
    let mut outcomes = (0, 0);
    let mut last_compacted = (String::new(), 0, 0);
    for i in 0..12 {
        let key = format!("r/{i:02}");
        w.put(&key, "1").await;
        let deleted = w.delete(&key).await;
        let put = w.put(&key, "2").await;
        let mut s = Stream::open(&ch).await;
        let mut compactor = Writer::new(&cluster.channel(leader).await);
        let compaction = tokio::spawn(async move { compactor.compact(deleted).await });
        s.create(pb::WatchCreateRequest {
            key: b(&key),
            start_revision: deleted,
            ..Default::default()
        });
        assert!(s.next().await.created);
        compaction.await.expect("compaction");
        let r = s.next().await;
        if r.canceled {
            assert_eq!((r.compact_revision, r.events.len()), (deleted, 0), "{r:?}");
            outcomes.0 += 1;
        } else {
            let mut t = vec![r];
            if seen(&t).len() < 2 {
                t.extend(s.through(put).await);
            }
            assert_eq!(seen(&t), [(deleted, "del", key.clone()), (put, "put", key.clone())]);
            outcomes.1 += 1;
        }
        assert!(s.within(Duration::from_millis(50)).await.is_empty(), "nothing more");
        last_compacted = (key, deleted, put);
    }
    eprintln!("cancelled {} times, delivered the delete {} times", outcomes.0, outcomes.1);

    // The follower restarts after the last compaction and answers as before.
    let (key, deleted, put) = last_compacted;
    cluster.stop(follower).await;
    cluster.restart(follower).await;
    let leader = cluster.leader().await;
    cluster.caught_up(follower, leader).await;
    let ch = cluster.channel(follower).await;
    let mut s = Stream::open(&ch).await;
    s.created(pb::WatchCreateRequest {
        key: b(&key),
        start_revision: deleted,
        ..Default::default()
    })
    .await;
    let r = s.next().await;
    assert!(r.canceled && r.compact_revision == deleted && r.events.is_empty(), "{r:?}");
    let mut s = Stream::open(&ch).await;
    s.created(pb::WatchCreateRequest { key: b(&key), start_revision: put, ..Default::default() })
        .await;
    assert_eq!(seen(&s.through(put).await), [(put, "put", key.clone())]);
    cluster.shutdown().await;
}

/// etcd 20221: a watcher with a start revision in the future, on a member that then restored a
/// snapshot, had its revision lowered to the member's current one: it was sent events from
/// before its start revision, and progress notifications for revisions it never asked about
/// (fixed in etcd by keeping a future watcher's revision through a restore and sending it no
/// progress notification until the store reaches its start).
///
/// tenure must send such a watcher nothing below its start revision, before and after its
/// member installs a snapshot, and no progress notification naming a revision the store has not
/// reached; each notification still bounds the events before it and after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_20221_a_future_start_watcher_gets_nothing_below_its_start_through_a_snapshot_install()
{
    let interval = Duration::from_millis(100);
    let cluster = Cluster::start_with(|c| {
        c.snapshot_count = 20;
        c.snapshot_catchup_entries = 5;
        c.watch_progress_notify_interval = interval;
    })
    .await;
    let leader = cluster.leader().await;
    let watched = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let ch = cluster.channel(watched).await;
    let now = current_revision(&ch).await;
    let start = now + 100;
    let mut s = Stream::open(&ch).await;
    s.created(pb::WatchCreateRequest { progress_notify: true, ..prefix_watch("f/", start) }).await;
    // Nothing is written for a while: no notification may name a revision past `now`.
    for r in s.within(5 * interval).await {
        assert!(r.events.is_empty(), "{r:?}");
        assert!(header_revision(&r) <= now, "a notification from the future: {r:?} at {now}");
    }

    cluster.isolate(watched);
    let to_leader = cluster.channel(leader).await;
    let mut acked = put_many(&to_leader, "f/", 0, 150, 4, 10).await;
    cluster.heal();
    cluster.installed_snapshot(watched).await;
    let leader = cluster.leader().await;
    acked.extend(put_many(&cluster.channel(leader).await, "f/", 150, 30, 2, 10).await);
    let last = acked.last().unwrap().0;
    let t = s.through(last).await;

    let events = seen(&t);
    assert_ordered_once(&events);
    let reference = history(&cluster, other, "f/", now + 1, last).await;
    let want: Vec<Seen> = reference.iter().filter(|e| e.0 >= start).cloned().collect();
    assert_eq!(events, want, "exactly the events from the start revision on");
    assert_contains_puts(&reference, &acked);
    // Each notification bounds what came before it and after it.
    let mut sent = 0;
    for (i, r) in t.iter().enumerate() {
        if r.events.is_empty() {
            let at = header_revision(r);
            assert!(at >= sent, "a notification at {at} after an event at {sent}");
            assert!(at <= last, "a notification from the future: {at} > {last}");
            let later = seen(&t[i + 1..]);
            assert!(later.iter().all(|e| e.0 > at), "an event at or below a notification");
        } else {
            sent = mod_revision(r.events.last().unwrap());
        }
    }
    cluster.shutdown().await;
}
