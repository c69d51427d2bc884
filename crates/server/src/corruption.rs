//! Integrity checks across members (etcd's corruption checks): a member's key-value history
//! is compared with its peers' through `Maintenance.HashKV`, and a mismatch raises the
//! `CORRUPT` alarm, which refuses every write on every member until an operator clears it.
//!
//! - **At startup** (`--experimental-initial-corrupt-check`): once this member has caught up
//!   with the commit index, it asks every peer for its hash at this member's revision; a peer
//!   at the same compaction revision with another hash means this member's data differs, and
//!   it raises `CORRUPT` for itself (etcd refuses to start instead; an alarm keeps the member
//!   up for an operator to look at while refusing writes everywhere).
//! - **Periodically** (`--experimental-corrupt-check-time`) **and after every compaction**:
//!   the leader hashes its history, asks every peer for its hash at the leader's revision, and
//!   raises `CORRUPT` for each peer at the same compaction revision whose hash differs (etcd's
//!   `checkHashKV`). A peer that has not applied that revision yet is asked again a few times,
//!   then skipped; one that compacted differently is skipped, as in etcd.
//!
//! The hash is [`tenure_kv::Store::hash_kv`], computed on a copy of the store off the replica
//! thread. Peers are reached on the client URLs they published through the log (`MemberList`).
//! Every mismatch is logged with both members, the revision and both hashes.

use std::time::Duration;

use tenure_kv::{AlarmAction, AlarmRequest, AlarmType, Command, HashKv, Proposal};
use tokio::time::Instant;

use crate::ids::format_id;
use crate::pb::etcdserverpb as pb;
use crate::runtime::RuntimeHandle;

/// Which checks run (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CorruptCheck {
    /// Compare with the peers once at startup.
    pub initial: bool,
    /// How often the leader compares every member's hash with its own (also after each
    /// compaction); `None`: never.
    pub interval: Option<Duration>,
}

/// How often the leader looks for a new compaction to check after.
const COMPACTION_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Times a peer that is behind the revision asked for is asked again.
const BEHIND_RETRIES: u32 = 5;

/// One peer's answer, or why there is none.
#[derive(Debug)]
enum PeerHash {
    Answer { member_id: u64, hash: u32, compact_revision: i64, revision: i64 },
    Skipped { member_id: u64, why: String },
}

/// Runs the configured checks for the member behind `runtime` until it stops; peers' https
/// client URLs are dialled with `tls` (the member's own client certificate and trusted CA).
pub async fn run(
    runtime: RuntimeHandle,
    name: String,
    member_id: u64,
    check: CorruptCheck,
    timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) {
    let checker = Checker { runtime, name, member_id, timeout, tls };
    if check.initial {
        checker.initial_check().await;
    }
    let Some(interval) = check.interval else {
        return;
    };
    let mut next = Instant::now() + interval;
    let mut compacted_seen = None;
    loop {
        tokio::time::sleep(COMPACTION_POLL_INTERVAL.min(interval)).await;
        let status = checker.runtime.status();
        if status.stopped {
            return;
        }
        if !status.is_leader {
            compacted_seen = None;
            continue;
        }
        let Some(compacted) = checker.compact_revision().await else {
            return;
        };
        let after_compaction = compacted_seen.is_some_and(|seen| seen != compacted);
        compacted_seen = Some(compacted);
        if after_compaction || Instant::now() >= next {
            next = Instant::now() + interval;
            checker.leader_check().await;
        }
    }
}

struct Checker {
    runtime: RuntimeHandle,
    name: String,
    member_id: u64,
    /// For one peer request.
    timeout: Duration,
    /// For https client URLs.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Checker {
    /// The store's compaction revision (-1 if never), or `None` if the member stopped.
    async fn compact_revision(&self) -> Option<i64> {
        let rx = self.runtime.inspect(|r| r.kv().compact_revision().unwrap_or(-1)).ok()?;
        rx.await.ok()
    }

    /// This member's hash at its current revision (`None` if it stopped).
    async fn own_hash(&self) -> Option<HashKv> {
        let rx = self.runtime.inspect(|r| r.kv().clone()).ok()?;
        let store = rx.await.ok()?;
        tokio::task::spawn_blocking(move || store.hash_kv(0).ok()).await.ok().flatten()
    }

    /// Every other member that published client URLs, with them.
    async fn peers(&self) -> Option<Vec<(u64, Vec<String>)>> {
        let own = self.member_id;
        let rx = self
            .runtime
            .inspect(move |r| {
                r.kv()
                    .members()
                    .filter(|(id, _)| *id != own)
                    .map(|(id, a)| (id, a.client_urls.clone()))
                    .collect::<Vec<_>>()
            })
            .ok()?;
        rx.await.ok()
    }

    /// etcd's `InitialCorruptCheck`, raising `CORRUPT` for this member on a mismatch.
    async fn initial_check(&self) {
        // Catch up first: a member that has not applied what is committed answers for an old
        // revision, which peers may have compacted.
        let deadline = Instant::now() + self.timeout * 20;
        loop {
            let st = self.runtime.status();
            if st.stopped {
                return;
            }
            if st.leader.is_some() && st.applied >= st.committed && st.committed > 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!("{}: initial corruption check skipped: no leader", self.name);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(own) = self.own_hash().await else {
            return;
        };
        let Some(peers) = self.peers().await else {
            return;
        };
        let mut mismatched = Vec::new();
        for (id, urls) in peers {
            match self.peer_hash(id, &urls, own.revision).await {
                PeerHash::Answer { member_id, hash, compact_revision, .. } => {
                    if compact_revision == own.compact_revision && hash != own.hash {
                        tracing::error!(
                            "{}: initial corruption check: member {} has hash {hash:08x} at \
                             revision {} (compact revision {compact_revision}), this member \
                             {}: {:08x}",
                            self.name,
                            format_id(member_id),
                            own.revision,
                            format_id(self.member_id),
                            own.hash
                        );
                        mismatched.push(member_id);
                    }
                }
                PeerHash::Skipped { member_id, why } => tracing::warn!(
                    "{}: initial corruption check: member {} skipped: {why}",
                    self.name,
                    format_id(member_id)
                ),
            }
        }
        if mismatched.is_empty() {
            tracing::info!(
                "{}: initial corruption check passed at revision {} (hash {:08x})",
                self.name,
                own.revision,
                own.hash
            );
        } else {
            self.raise(self.member_id, own.revision).await;
        }
    }

    /// etcd's `checkHashKV` on the leader: raises `CORRUPT` for every peer at the leader's
    /// compaction revision whose hash at the leader's revision differs.
    async fn leader_check(&self) {
        let Some(own) = self.own_hash().await else {
            return;
        };
        let Some(peers) = self.peers().await else {
            return;
        };
        for (id, urls) in peers {
            match self.peer_hash(id, &urls, own.revision).await {
                PeerHash::Answer { member_id, hash, compact_revision, revision } => {
                    if compact_revision != own.compact_revision {
                        tracing::debug!(
                            "{}: member {} compacted at {compact_revision}, this one at {}: \
                             hashes not compared",
                            self.name,
                            format_id(member_id),
                            own.compact_revision
                        );
                    } else if hash != own.hash {
                        tracing::error!(
                            "{}: corruption check: member {} has hash {hash:08x} at revision {} \
                             (its current revision {revision}, compact revision \
                             {compact_revision}); the leader {} has {:08x}",
                            self.name,
                            format_id(member_id),
                            own.revision,
                            format_id(self.member_id),
                            own.hash
                        );
                        self.raise(member_id, own.revision).await;
                    }
                }
                PeerHash::Skipped { member_id, why } => tracing::debug!(
                    "{}: corruption check: member {} skipped: {why}",
                    self.name,
                    format_id(member_id)
                ),
            }
        }
    }

    /// Asks a peer for its hash at `revision` on each of its client URLs in turn; a peer
    /// behind `revision` is asked again a little later.
    async fn peer_hash(&self, member_id: u64, urls: &[String], revision: i64) -> PeerHash {
        let mut why = String::from("no client URL published");
        for url in urls {
            for attempt in 0..=BEHIND_RETRIES {
                // With auth on, HashKV needs the root role: the member mints itself a token.
                let token = crate::api::auth::member_token(&self.runtime.auth());
                match ask_hash_kv(url, revision, self.timeout, self.tls.clone(), token).await {
                    Ok(r) => {
                        return PeerHash::Answer {
                            member_id,
                            hash: r.hash,
                            compact_revision: r.compact_revision,
                            revision: r.header.map_or(0, |h| h.revision),
                        };
                    }
                    Err(status) => {
                        why = format!("{url}: {}", status.message());
                        let behind =
                            status.message() == tenure_kv::Error::FutureRevision.to_string();
                        if !behind || attempt == BEHIND_RETRIES {
                            break;
                        }
                        tokio::time::sleep(self.timeout / 5).await;
                    }
                }
            }
        }
        PeerHash::Skipped { member_id, why }
    }

    /// Raises `CORRUPT` for `member_id` through the log (logged whether or not it commits; the
    /// next check tries again).
    async fn raise(&self, member_id: u64, revision: i64) {
        tracing::error!(
            "{}: raising CORRUPT for member {} (hash mismatch at revision {revision})",
            self.name,
            format_id(member_id)
        );
        let alarm = AlarmRequest {
            action: AlarmAction::Activate,
            member_id,
            alarm: Some(AlarmType::Corrupt),
        };
        if let Ok(rx) = self.runtime.propose(Proposal::new(Command::Alarm(alarm))) {
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("{}: raising CORRUPT failed: {e}", self.name),
                Err(_) => {}
            }
        }
    }
}

/// One `Maintenance.HashKV` call to `url`, within `timeout`.
async fn ask_hash_kv(
    url: &str,
    revision: i64,
    timeout: Duration,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    token: Option<String>,
) -> Result<pb::HashKvResponse, tonic::Status> {
    let configure = |e: tonic::transport::Endpoint| e.connect_timeout(timeout).timeout(timeout);
    let channel = crate::tls::connect_channel(url, tls, configure)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
    let mut client = pb::maintenance_client::MaintenanceClient::new(channel);
    let mut request = tonic::Request::new(pb::HashKvRequest { revision });
    if let Some(token) = token.and_then(|t| t.parse().ok()) {
        request.metadata_mut().insert("token", token);
    }
    Ok(client.hash_kv(request).await?.into_inner())
}
