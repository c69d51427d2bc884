//! A fault proxy that isolates members from each other: every member's peer URL (the one the
//! cluster knows it by) is a proxy that forwards to the member's real peer listener, and a
//! connection to or from an isolated member is closed as soon as it carries a byte (the
//! dialler reconnects and is closed again until the isolation ends). Raft messages and
//! heartbeats flow every heartbeat interval, so a partition takes effect within one.
//!
//! The proxy learns who dialled from the connection's opening frame header; a connection that
//! opens with something else (a snapshot transfer) is closed only if its target is isolated.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tenure_server::peer::wire::{FrameHeader, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The ids of the members cut off from every other member.
#[derive(Clone, Default)]
pub struct Isolation(Arc<Mutex<BTreeSet<u64>>>);

impl Isolation {
    /// Cuts member `id` off from the others, both ways.
    pub fn isolate(&self, id: u64) {
        self.0.lock().unwrap().insert(id);
    }

    /// Ends every isolation.
    pub fn heal(&self) {
        self.0.lock().unwrap().clear();
    }

    /// Whether a link from `from` (0: unknown) to `to` is cut.
    fn cut(&self, from: u64, to: u64) -> bool {
        let isolated = self.0.lock().unwrap();
        isolated.contains(&from) || isolated.contains(&to)
    }
}

/// Starts a proxy for member `to` on `listener`, forwarding to `target` ("host:port").
pub fn spawn(
    listener: TcpListener,
    target: String,
    to: u64,
    isolation: Isolation,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pipes = tokio::task::JoinSet::new();
        loop {
            while pipes.try_join_next().is_some() {}
            if let Ok((inbound, _)) = listener.accept().await {
                pipes.spawn(pipe(inbound, target.clone(), to, isolation.clone()));
            }
        }
    })
}

/// Copies one connection both ways until either side closes or the link is cut.
async fn pipe(inbound: TcpStream, target: String, to: u64, isolation: Isolation) {
    let (mut in_r, mut in_w) = inbound.into_split();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let from = loop {
        let n = match in_r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        head.extend_from_slice(&buf[..n]);
        match FrameHeader::parse(&head) {
            Ok(h) => break h.from_member,
            Err(WireError::Truncated { .. }) => continue,
            Err(_) => break 0,
        }
    };
    if isolation.cut(from, to) {
        return;
    }
    let Ok(outbound) = TcpStream::connect(&target).await else { return };
    let (mut out_r, mut out_w) = outbound.into_split();
    if out_w.write_all(&head).await.is_err() {
        return;
    }
    let back_isolation = isolation.clone();
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match out_r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if back_isolation.cut(from, to) || in_w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    loop {
        let n = match in_r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if isolation.cut(from, to) || out_w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    back.abort();
}
