//! One watch of every key from revision 1 on each member, kept through the member's kills and
//! pauses: when the stream breaks, the watcher opens a new one on the same member from the
//! revision after the last it received, and records that as a resume.
//!
//! What each watcher saw is kept as the simulator's [`WatchObservation`]s, so that its watch
//! checker ([`tenure_sim::watch::check_watch`]) judges the real streams as it judges simulated
//! ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, WatchOptions};
use tenure_kv::{Event, EventKind, KeyValue, RevisionEvents};
use tenure_raft::NodeId;
use tenure_sim::watch::WatchObservation;

use crate::cluster::connect;

/// What one member's watcher saw.
#[derive(Clone, Debug, Default)]
pub struct WatchLog {
    /// Its observations, in order: a start from 1, deliveries, resumes.
    pub observations: Vec<WatchObservation>,
    /// The last revision delivered.
    pub last: Option<i64>,
    /// How many times the stream broke and was opened again.
    pub resumes: usize,
    /// The last error seen, for the report.
    pub last_error: Option<String>,
}

/// The node id a member's watcher names in its resumes (member `i` is `NodeId(i + 1)`).
pub fn node_of(member: usize) -> NodeId {
    NodeId(member as u64 + 1)
}

/// Watches every key on `url` (member `member`) from revision 1 for ever, into `log`. The
/// caller aborts the task once it has what it needs.
pub async fn watch_member(member: usize, url: String, log: Arc<Mutex<WatchLog>>) {
    let lock = || log.lock().unwrap_or_else(|e| e.into_inner());
    lock().observations.push(WatchObservation::Start { from: 1 });
    let mut first = true;
    loop {
        let next = lock().last.map_or(1, |l| l + 1);
        let opened = async {
            let mut client = connect(&url, Duration::from_secs(1), None).await?;
            let options = WatchOptions::new().with_all_keys().with_start_revision(next);
            client.watch("", Some(options)).await
        };
        let mut stream = match tokio::time::timeout(Duration::from_secs(2), opened).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                lock().last_error = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !first {
            let mut l = lock();
            l.resumes += 1;
            l.observations.push(WatchObservation::Resume { node: node_of(member), next });
        }
        first = false;
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        let mut l = lock();
                        l.observations.push(WatchObservation::Cancel {
                            compact_revision: resp.compact_revision(),
                        });
                        l.last_error = Some(format!("canceled: {}", resp.cancel_reason()));
                        return;
                    }
                    let revisions = group_by_revision(resp.events());
                    if !revisions.is_empty() {
                        let mut l = lock();
                        for r in revisions {
                            l.last = Some(l.last.map_or(r.revision, |x| x.max(r.revision)));
                            l.observations.push(WatchObservation::Deliver(r));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    lock().last_error = Some(e.to_string());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events of one response, grouped into revisions (a revision's events are adjacent).
pub fn group_by_revision(events: &[etcd_client::Event]) -> Vec<RevisionEvents> {
    let mut out: Vec<RevisionEvents> = Vec::new();
    for e in events {
        let Some(kv) = e.kv() else { continue };
        let event = Event {
            kind: match e.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => EventKind::Delete,
            },
            kv: KeyValue {
                key: Bytes::copy_from_slice(kv.key()),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
                version: kv.version(),
                value: Bytes::copy_from_slice(kv.value()),
                lease: kv.lease(),
            },
            prev_kv: None,
        };
        match out.last_mut() {
            Some(last) if last.revision == kv.mod_revision() => last.events.push(event),
            _ => out.push(RevisionEvents { revision: kv.mod_revision(), events: vec![event] }),
        }
    }
    out
}
