//! The peer transport's liveness checks over real loopback sockets: a [`PeerSender`] talks to a
//! fake peer that speaks the wire protocol (reads message frames, writes a keepalive back every
//! heartbeat interval) and can be paused, restarted, or cut off behind a proxy.
//!
//! Times are printed and bounded only generously (ten election timeouts), since the machine is
//! shared: the point is that a dead peer is noticed and replaced at all, not how fast.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tenure_raft::{Message, MessageBody, NodeId, ReadId, Term};
use tenure_server::peer::transport::{PeerSender, PeerTiming};
use tenure_server::peer::wire::FrameCodec;
use tenure_server::runtime::{Metrics, Outbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const CLUSTER: u64 = 0xc1c1;
const SENDER: u64 = 0x5e;
const PEER: u64 = 0x9e;

const TIMING: PeerTiming = PeerTiming {
    heartbeat_interval: Duration::from_millis(50),
    election_timeout: Duration::from_millis(500),
};

/// The bound asserted on every recovery: ten election timeouts.
const BOUND: Duration = Duration::from_millis(5000);

/// How long anything may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A message the fake peer can recognise: a ReadIndex request numbered `seq`.
fn numbered(seq: u64) -> Message {
    Message {
        from: NodeId(SENDER),
        to: NodeId(PEER),
        term: Term(1),
        body: MessageBody::ReadIndex { id: ReadId(seq) },
    }
}

/// What a fake peer received: (connection number, message number).
type Received = mpsc::UnboundedReceiver<(usize, u64)>;

/// A member's peer listener, faked: accepts message connections, reports every message, and
/// writes keepalives back, except on connections it was told to pause (which it keeps open
/// but neither reads nor writes, like a stopped process whose kernel still holds the socket).
struct FakePeer {
    task: tokio::task::JoinHandle<()>,
    accepted: Arc<Mutex<Vec<Instant>>>,
    /// Connections numbered below this are paused.
    paused_below: Arc<AtomicUsize>,
}

impl FakePeer {
    async fn start(port: u16) -> (FakePeer, Received) {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind fake peer");
        let (tx, rx) = mpsc::unbounded_channel();
        let accepted: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let paused_below = Arc::new(AtomicUsize::new(0));
        let (acc, paused) = (Arc::clone(&accepted), Arc::clone(&paused_below));
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) closes every connection.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let n = {
                    let mut a = acc.lock().unwrap();
                    a.push(Instant::now());
                    a.len() - 1
                };
                conns.spawn(serve(stream, n, tx.clone(), Arc::clone(&paused)));
            }
        });
        (FakePeer { task, accepted, paused_below }, rx)
    }

    fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Pauses every connection accepted so far; later ones are served.
    fn pause_existing(&self) {
        self.paused_below.store(self.connections(), Ordering::SeqCst);
    }

    /// Closes the listener and every connection, as a process that exits.
    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve(
    mut stream: TcpStream,
    n: usize,
    tx: mpsc::UnboundedSender<(usize, u64)>,
    paused_below: Arc<AtomicUsize>,
) {
    let codec = FrameCodec::new(CLUSTER, PEER);
    let mut keepalive = BytesMut::new();
    codec.encode_keepalive(&mut keepalive);
    let mut buf = BytesMut::new();
    let mut ticks = tokio::time::interval(TIMING.heartbeat_interval);
    loop {
        if n < paused_below.load(Ordering::SeqCst) {
            // Paused: hold the socket, read and write nothing.
            tokio::time::sleep(PATIENCE).await;
            return;
        }
        while let Some(frame) = codec.decode_frame(&mut buf).expect("valid frames") {
            for m in frame.messages {
                if let MessageBody::ReadIndex { id } = m.body {
                    let _ = tx.send((n, id.0));
                }
            }
        }
        tokio::select! {
            _ = ticks.tick() => {
                if stream.write_all(&keepalive).await.is_err() {
                    return;
                }
            }
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

fn sender_to(port: u16) -> PeerSender {
    let codec = FrameCodec::new(CLUSTER, SENDER);
    let peers = [(PEER, format!("127.0.0.1:{port}"))];
    PeerSender::start(codec, &peers, TIMING, Arc::new(Metrics::new()))
}

/// Waits for a message numbered at least `seq`; returns its connection and number.
async fn receive_at_least(rx: &mut Received, seq: u64) -> (usize, u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((conn, s))) if s >= seq => return (conn, s),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the fake peer stopped"),
            Err(_) => panic!("no message numbered {seq} or later within {PATIENCE:?}"),
        }
    }
}

/// Sends a numbered message every heartbeat interval from a task until dropped, as a leader
/// sends heartbeats; `next` is the number the next message gets.
struct Ticker {
    task: tokio::task::JoinHandle<()>,
    next: Arc<AtomicUsize>,
}

impl Ticker {
    fn start(mut sender: PeerSender, first: u64) -> Ticker {
        let next = Arc::new(AtomicUsize::new(first as usize));
        let n = Arc::clone(&next);
        let task = tokio::spawn(async move {
            loop {
                let seq = n.fetch_add(1, Ordering::SeqCst) as u64;
                sender.send(vec![numbered(seq)]);
                tokio::time::sleep(TIMING.heartbeat_interval).await;
            }
        });
        Ticker { task, next }
    }

    fn next(&self) -> u64 {
        self.next.load(Ordering::SeqCst) as u64
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_declared_dead_and_the_connection_replaced() {
    let port = common::free_port();
    let (peer, mut rx) = FakePeer::start(port).await;
    let ticker = Ticker::start(sender_to(port), 1);
    let (conn, _) = receive_at_least(&mut rx, 1).await;
    assert_eq!((conn, peer.connections()), (0, 1));

    // The peer goes silent but keeps the connection open: only the missing keepalives tell.
    peer.pause_existing();
    let paused_at = Instant::now();
    let deadline = paused_at + PATIENCE;
    while peer.connections() < 2 {
        assert!(Instant::now() < deadline, "the silent connection was never replaced");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let replaced_after = peer.accepted.lock().unwrap()[1] - paused_at;
    // Messages flow on the new connection.
    let (conn, _) = receive_at_least(&mut rx, ticker.next()).await;
    let flowing_after = paused_at.elapsed();
    println!(
        "paused peer: connection replaced after {} ms, messages flowing again after {} ms \
         (election timeout {} ms)",
        replaced_after.as_millis(),
        flowing_after.as_millis(),
        TIMING.election_timeout.as_millis()
    );
    assert!(conn >= 1, "a message arrived on the paused connection");
    assert!(replaced_after < BOUND, "replaced only after {replaced_after:?}");
    assert!(flowing_after < BOUND, "flowing only after {flowing_after:?}");
    drop(ticker);
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_gets_the_next_message() {
    let port = common::free_port();
    let (peer, mut rx) = FakePeer::start(port).await;
    let mut sender = sender_to(port);
    sender.send(vec![numbered(1)]);
    assert_eq!(receive_at_least(&mut rx, 1).await, (0, 1));

    // The process exits (every socket closes) and a new one listens on the same port.
    peer.stop().await;
    tokio::time::sleep(TIMING.election_timeout / 2).await;
    let (peer, mut rx) = FakePeer::start(port).await;
    let restarted_at = Instant::now();

    // One message, sent once: it must not go into the old connection.
    sender.send(vec![numbered(2)]);
    let (_, seq) = receive_at_least(&mut rx, 2).await;
    let took = restarted_at.elapsed();
    println!("restarted peer: the next message arrived {} ms after the restart", took.as_millis());
    assert_eq!(seq, 2);
    assert!(took < BOUND, "the next message took {took:?}");
    peer.stop().await;
}

/// A proxy in front of `target` that, while `cut`, stops carrying bytes either way but keeps
/// every connection open: what a partition looks like to TCP (the bytes wait, as for
/// retransmission, and arrive once it heals). Returns its port.
async fn partition_proxy(target: u16, cut: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else { return };
            let cut = Arc::clone(&cut);
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (in_r, in_w) = inbound.into_split();
                let (out_r, out_w) = outbound.into_split();
                let there = tokio::spawn(pump(in_r, out_w, Arc::clone(&cut)));
                pump(out_r, in_w, cut).await;
                there.abort();
            });
        }
    });
    port
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_again_soon_after_a_partition_heals() {
    let port = common::free_port();
    let (peer, mut rx) = FakePeer::start(port).await;
    let cut = Arc::new(AtomicBool::new(false));
    let via = partition_proxy(port, Arc::clone(&cut)).await;
    let ticker = Ticker::start(sender_to(via), 1);
    receive_at_least(&mut rx, 1).await;

    // Three election timeouts of partition: long enough for the sender to give up on the
    // connection at least once and for TCP to back off, were it retransmitting.
    cut.store(true, Ordering::SeqCst);
    tokio::time::sleep(TIMING.election_timeout * 3).await;
    let connections_during = peer.connections();
    let first_after_heal = ticker.next();
    cut.store(false, Ordering::SeqCst);
    let healed_at = Instant::now();

    let (conn, seq) = receive_at_least(&mut rx, first_after_heal).await;
    let took = healed_at.elapsed();
    println!(
        "healed partition: message {seq} (first sent after the heal: {first_after_heal}) \
         arrived {} ms after the heal on connection {conn}; {connections_during} \
         connections reached the peer",
        took.as_millis()
    );
    assert!(took < BOUND, "messages flowed again only after {took:?}");
    // And keep flowing.
    receive_at_least(&mut rx, seq + 5).await;
    drop(ticker);
    peer.stop().await;
}
