//! The snapshot stream between two endpoints on loopback, with a fault proxy between them:
//! transfers complete and arrive intact; a dropped connection resumes from the last
//! acknowledged chunk; damaged bytes are caught by the checksums and sent again; a refusal, a
//! receiver that lost its partial file, or an unreachable receiver end the transfer `Failed`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tenure_raft::{
    EntryId, LogIndex, Membership, Message, MessageBody, NodeId, SnapshotMeta, SnapshotStatus, Term,
};
use tenure_server::peer::snapshot_stream::{
    Partials, ReceiveOutcome, SnapshotSink, StreamCodec, StreamFrame, receive_snapshot,
    send_snapshot,
};
use tenure_storage::{Disk, RealDisk, SnapshotReader, SnapshotWriter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;

const CLUSTER: u64 = 0xc1;
const LEADER: u64 = 0x11;
const FOLLOWER: u64 = 0x22;
const CHUNK_BYTES: usize = 64 * 1024;

fn disk() -> Arc<dyn Disk> {
    Arc::new(RealDisk)
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        last_included: EntryId::new(Term(3), LogIndex(500)),
        membership: Membership::voters([NodeId(LEADER), NodeId(FOLLOWER)]),
    }
}

/// Chunk `i` of the test snapshot: distinct, incompressible-looking bytes.
fn chunk(i: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..CHUNK_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes a snapshot of `chunks` chunks into `dir` (the leader's data directory).
fn write_snapshot(dir: &Path, chunks: usize) {
    let mut w = SnapshotWriter::create(disk(), dir, meta()).expect("create");
    for i in 0..chunks {
        w.write_chunk(&chunk(i)).expect("write");
    }
    w.finish().expect("finish");
}

fn open_snapshot(dir: &Path) -> SnapshotReader {
    SnapshotReader::open_latest(&RealDisk, dir).expect("open").expect("a snapshot")
}

/// Reads back every chunk of the snapshot in `dir`, checked.
fn read_all(dir: &Path) -> Vec<Vec<u8>> {
    let mut r = open_snapshot(dir);
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk().expect("chunk") {
        out.push(c.to_vec());
    }
    out
}

fn snapshot_message() -> Message {
    Message {
        from: NodeId(LEADER),
        to: NodeId(FOLLOWER),
        term: Term(3),
        body: MessageBody::Snapshot { meta: meta() },
    }
}

/// The follower's side: a data directory and the messages delivered.
struct TestSink {
    dir: PathBuf,
    delivered: Mutex<Vec<Message>>,
    refuse: Option<String>,
}

impl SnapshotSink for TestSink {
    async fn writer(&self, meta: SnapshotMeta) -> Result<SnapshotWriter, String> {
        if let Some(r) = &self.refuse {
            return Err(r.clone());
        }
        SnapshotWriter::create(disk(), &self.dir, meta).map_err(|e| e.to_string())
    }

    async fn deliver(&self, msg: Message) -> Result<(), String> {
        self.delivered.lock().unwrap().push(msg);
        Ok(())
    }
}

/// What the proxy does to the first connection it carries (later ones pass untouched).
#[derive(Clone, Copy)]
enum Fault {
    None,
    /// Close both sides once this many bytes went from sender to receiver.
    CutAfter(usize),
    /// Flip one bit of the byte at this offset of the sender's stream.
    FlipAt(usize),
}

/// A TCP proxy to `target` that applies `fault` to its first connection. Returns its address.
async fn proxy(target: String, fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let Ok((inbound, _)) = listener.accept().await else { return };
            let fault = if first { fault } else { Fault::None };
            first = false;
            let Ok(outbound) = TcpStream::connect(&target).await else { continue };
            tokio::spawn(pump(inbound, outbound, fault));
        }
    });
    addr
}

async fn pump(inbound: TcpStream, outbound: TcpStream, fault: Fault) {
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = outbound.into_split();
    // Receiver to sender: untouched.
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
    });
    let mut seen = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match in_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &mut buf[..n];
        match fault {
            Fault::CutAfter(limit) if seen + n >= limit => {
                let keep = limit - seen;
                let _ = out_w.write_all(&data[..keep]).await;
                break;
            }
            Fault::FlipAt(at) if (seen..seen + n).contains(&at) => data[at - seen] ^= 0x10,
            _ => {}
        }
        seen += n;
        if out_w.write_all(data).await.is_err() {
            break;
        }
    }
    back.abort();
}

/// A receiver that serves every inbound connection with `sink`, sharing `partials`; returns
/// its address and the outcomes of the connections it served.
async fn receiver(
    sink: Arc<TestSink>,
    partials: Partials,
) -> (String, Arc<Mutex<Vec<ReceiveOutcome>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&outcomes);
    let codec = StreamCodec { cluster_id: CLUSTER, member_id: FOLLOWER };
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (sink, partials, seen) = (Arc::clone(&sink), partials.clone(), Arc::clone(&seen));
            tokio::spawn(async move {
                let outcome =
                    receive_snapshot(stream, BytesMut::new(), codec, &*sink, &partials).await;
                seen.lock().unwrap().push(outcome);
            });
        }
    });
    (addr, outcomes)
}

struct Setup {
    leader_dir: tempfile::TempDir,
    follower_dir: tempfile::TempDir,
    sink: Arc<TestSink>,
    partials: Partials,
}

fn setup(chunks: usize, refuse: Option<&str>) -> Setup {
    let leader_dir = tempfile::tempdir().expect("dir");
    let follower_dir = tempfile::tempdir().expect("dir");
    write_snapshot(leader_dir.path(), chunks);
    let sink = Arc::new(TestSink {
        dir: follower_dir.path().to_path_buf(),
        delivered: Mutex::new(Vec::new()),
        refuse: refuse.map(str::to_string),
    });
    Setup { leader_dir, follower_dir, sink, partials: Partials::default() }
}

async fn send(s: &Setup, addr: String) -> tenure_server::peer::snapshot_stream::SendOutcome {
    let codec = StreamCodec { cluster_id: CLUSTER, member_id: LEADER };
    send_snapshot(codec, 0, addr, snapshot_message(), open_snapshot(s.leader_dir.path())).await
}

/// Files in `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .expect("list")
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(suffix))
        .count()
}

#[tokio::test]
async fn a_transfer_arrives_whole_and_its_message_is_delivered() {
    let s = setup(40, None);
    let (addr, outcomes) = receiver(Arc::clone(&s.sink), s.partials.clone()).await;
    let out = send(&s, addr).await;
    assert_eq!(out.status, SnapshotStatus::Delivered, "{out:?}");
    assert_eq!((out.chunks, out.attempts, out.resumed_at), (40, 1, None));
    assert_eq!(read_all(s.follower_dir.path()), read_all(s.leader_dir.path()));
    assert_eq!(*s.sink.delivered.lock().unwrap(), vec![snapshot_message()]);
    assert!(matches!(outcomes.lock().unwrap()[..], [ReceiveOutcome::Installed(_)]));
    assert_eq!(files_ending(s.follower_dir.path(), ".tmp"), 0, "no staging file is left");
}

#[tokio::test]
async fn a_dropped_connection_resumes_from_the_last_acknowledged_chunk() {
    let s = setup(40, None);
    let (addr, outcomes) = receiver(Arc::clone(&s.sink), s.partials.clone()).await;
    // Cut the first connection about half way through the data.
    let via = proxy(addr, Fault::CutAfter(20 * CHUNK_BYTES)).await;
    let out = send(&s, via).await;
    assert_eq!(out.status, SnapshotStatus::Delivered, "{out:?}");
    assert!(out.attempts >= 2, "{out:?}");
    let resumed = out.resumed_at.expect("the second attempt resumed");
    assert!(resumed >= 10, "resumed at chunk {resumed}, not from the start");
    assert_eq!(read_all(s.follower_dir.path()), read_all(s.leader_dir.path()));
    let outcomes = outcomes.lock().unwrap();
    assert!(matches!(outcomes[0], ReceiveOutcome::Interrupted(_)), "{outcomes:?}");
    assert!(matches!(outcomes.last(), Some(ReceiveOutcome::Installed(_))), "{outcomes:?}");
    assert_eq!(s.sink.delivered.lock().unwrap().len(), 1, "delivered once");
    assert!(s.partials.is_empty());
}

#[tokio::test]
async fn damaged_bytes_fail_the_checksum_and_are_sent_again() {
    let s = setup(20, None);
    let (addr, outcomes) = receiver(Arc::clone(&s.sink), s.partials.clone()).await;
    let via = proxy(addr, Fault::FlipAt(7 * CHUNK_BYTES + 1234)).await;
    let out = send(&s, via).await;
    assert_eq!(out.status, SnapshotStatus::Delivered, "{out:?}");
    assert!(out.attempts >= 2 && out.resumed_at.is_some(), "{out:?}");
    assert_eq!(read_all(s.follower_dir.path()), read_all(s.leader_dir.path()));
    let outcomes = outcomes.lock().unwrap();
    match &outcomes[0] {
        ReceiveOutcome::Interrupted(e) => assert!(e.contains("checksum"), "{e}"),
        other => panic!("the damaged connection ended {other:?}"),
    }
}

#[tokio::test]
async fn a_refusal_ends_the_transfer_failed_at_once() {
    let s = setup(4, Some("disk full"));
    let (addr, _) = receiver(Arc::clone(&s.sink), s.partials.clone()).await;
    let out = send(&s, addr).await;
    assert_eq!(out.status, SnapshotStatus::Failed);
    assert_eq!(out.attempts, 1, "a refusal is not retried");
    assert!(out.error.as_deref().unwrap().contains("disk full"), "{out:?}");
    assert!(s.sink.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_receiver_that_lost_its_partial_file_makes_the_transfer_fail() {
    let s = setup(40, None);
    // The receiver forgets every partial transfer (as after a restart): a fresh Partials per
    // connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    let sink = Arc::clone(&s.sink);
    tokio::spawn(async move {
        let codec = StreamCodec { cluster_id: CLUSTER, member_id: FOLLOWER };
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let forgetful = Partials::default();
            let _ = receive_snapshot(stream, BytesMut::new(), codec, &*sink, &forgetful).await;
        }
    });
    let via = proxy(addr, Fault::CutAfter(20 * CHUNK_BYTES)).await;
    let out = send(&s, via).await;
    assert_eq!(out.status, SnapshotStatus::Failed, "{out:?}");
    assert!(out.error.as_deref().unwrap().contains("acknowledged"), "{out:?}");
    assert!(s.sink.delivered.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_receiver_fails_after_bounded_attempts() {
    let s = setup(2, None);
    // A port handed to this test alone that nobody binds: nothing listens there.
    let addr = format!("127.0.0.1:{}", common::free_port());
    let out = send(&s, addr).await;
    assert_eq!(out.status, SnapshotStatus::Failed);
    assert_eq!(out.attempts, tenure_server::peer::snapshot_stream::ATTEMPTS_MAX);
}

#[tokio::test]
async fn a_snapshot_from_another_cluster_is_refused() {
    let s = setup(2, None);
    let (addr, outcomes) = receiver(Arc::clone(&s.sink), s.partials.clone()).await;
    let codec = StreamCodec { cluster_id: 0xbad, member_id: LEADER };
    let out =
        send_snapshot(codec, 0, addr, snapshot_message(), open_snapshot(s.leader_dir.path())).await;
    assert_eq!(out.status, SnapshotStatus::Failed);
    assert!(s.sink.delivered.lock().unwrap().is_empty());
    let outcomes = outcomes.lock().unwrap();
    match &outcomes[0] {
        ReceiveOutcome::Failed(e) => assert!(e.contains("cluster"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_frame_round_trips_and_damage_is_named() {
    let codec = StreamCodec { cluster_id: CLUSTER, member_id: LEADER };
    let frames = vec![
        StreamFrame::Offer(snapshot_message()),
        StreamFrame::Chunk { index: 7, data: bytes::Bytes::from_static(b"data") },
        StreamFrame::Done { chunks: 8, data_crc: 0xdead_beef },
        StreamFrame::Resume { next: 3 },
        StreamFrame::Ack { written: 4 },
        StreamFrame::Installed,
        StreamFrame::Refused("no room".into()),
    ];
    let mut buf = BytesMut::new();
    for f in &frames {
        codec.encode(9, f, &mut buf);
    }
    let peer = StreamCodec { cluster_id: CLUSTER, member_id: FOLLOWER };
    for f in &frames {
        let d = peer.decode(&mut buf).expect("decodes").expect("whole");
        assert_eq!((d.group_id, d.from_member, &d.frame), (9, LEADER, f));
    }
    assert!(buf.is_empty());

    let mut one = BytesMut::new();
    codec.encode(0, &StreamFrame::Ack { written: 1 }, &mut one);
    let mut half = BytesMut::from(&one[..20]);
    assert_eq!(peer.decode(&mut half), Ok(None), "a partial frame waits for more");
    let mut damaged = one.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let e = peer.decode(&mut damaged).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    let other = StreamCodec { cluster_id: 0xbad, member_id: FOLLOWER };
    let e = other.decode(&mut one.clone()).unwrap_err();
    assert!(e.to_string().contains("cluster"), "{e}");
    let mut not_ours = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
    assert!(peer.decode(&mut not_ours).unwrap_err().to_string().contains("magic"));
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let peer = StreamCodec { cluster_id: CLUSTER, member_id: FOLLOWER };
        let mut with_magic = BytesMut::from(&b"TNRS"[..]);
        with_magic.extend_from_slice(&bytes);
        let _ = peer.decode(&mut with_magic);
        let _ = peer.decode(&mut BytesMut::from(&bytes[..]));
    }
}

#[tokio::test]
async fn an_abandoned_partial_transfer_is_removed_once_idle_too_long() {
    let s = setup(4, None);
    let partials = Partials::with_idle_max(std::time::Duration::from_millis(50));
    let (addr, _) = receiver(Arc::clone(&s.sink), partials.clone()).await;
    // A sender that goes away for good after two chunks.
    let codec = StreamCodec { cluster_id: CLUSTER, member_id: LEADER };
    let mut conn = TcpStream::connect(&addr).await.expect("connect");
    let mut out = BytesMut::new();
    codec.encode(0, &StreamFrame::Offer(snapshot_message()), &mut out);
    for i in 0..2u64 {
        let data = bytes::Bytes::from(chunk(i as usize));
        codec.encode(0, &StreamFrame::Chunk { index: i, data }, &mut out);
    }
    conn.write_all(&out).await.expect("write");
    let mut buf = BytesMut::new();
    loop {
        match codec.decode(&mut buf).expect("frame") {
            Some(f) if f.frame == StreamFrame::Ack { written: 2 } => break,
            Some(_) => continue,
            None => assert!(conn.read_buf(&mut buf).await.expect("read") > 0, "closed early"),
        }
    }
    drop(conn);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while partials.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the partial transfer was not kept");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(files_ending(s.follower_dir.path(), ".tmp"), 1, "its staging file waits");

    // Past the idle limit, the next offer (from another leader) clears it away.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let other = StreamCodec { cluster_id: CLUSTER, member_id: 0x33 };
    let msg = Message { from: NodeId(0x33), ..snapshot_message() };
    let out = send_snapshot(other, 0, addr, msg, open_snapshot(s.leader_dir.path())).await;
    assert_eq!(out.status, SnapshotStatus::Delivered, "{out:?}");
    assert!(partials.is_empty());
    assert_eq!(files_ending(s.follower_dir.path(), ".tmp"), 0, "the abandoned file is gone");
    assert_eq!(read_all(s.follower_dir.path()), read_all(s.leader_dir.path()));
}

#[tokio::test]
async fn a_done_whose_checksum_does_not_match_the_data_is_refused() {
    let s = setup(2, None);
    let (addr, outcomes) = receiver(Arc::clone(&s.sink), s.partials.clone()).await;
    let codec = StreamCodec { cluster_id: CLUSTER, member_id: LEADER };
    let mut conn = TcpStream::connect(&addr).await.expect("connect");
    let mut out = BytesMut::new();
    codec.encode(0, &StreamFrame::Offer(snapshot_message()), &mut out);
    let data = bytes::Bytes::from(chunk(0));
    codec.encode(0, &StreamFrame::Chunk { index: 0, data: data.clone() }, &mut out);
    // Every frame is intact, but the sender claims other data than it sent.
    let wrong = crc32c::crc32c(&data) ^ 1;
    codec.encode(0, &StreamFrame::Done { chunks: 1, data_crc: wrong }, &mut out);
    conn.write_all(&out).await.expect("write");
    let mut buf = BytesMut::new();
    let reason = loop {
        match codec.decode(&mut buf).expect("frame") {
            Some(f) => match f.frame {
                StreamFrame::Refused(r) => break r,
                StreamFrame::Installed => panic!("installed a snapshot whose checksum is wrong"),
                _ => continue,
            },
            None => assert!(conn.read_buf(&mut buf).await.expect("read") > 0, "closed early"),
        }
    };
    assert!(reason.contains("does not check out"), "{reason}");
    assert!(s.sink.delivered.lock().unwrap().is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while outcomes.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the receiver never finished");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(matches!(outcomes.lock().unwrap()[0], ReceiveOutcome::Failed(_)));
    assert_eq!(files_ending(s.follower_dir.path(), ".tmp"), 0, "the staging file is removed");
    assert_eq!(files_ending(s.follower_dir.path(), ".snap"), 0, "nothing was sealed");
}
