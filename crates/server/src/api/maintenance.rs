//! `etcdserverpb.Maintenance`: Status, Alarm, Snapshot, Hash, HashKV and Defragment; and the
//! backend quota ([`Quota`]) that every write checks before it is proposed. `MoveLeader`
//! answers `Unimplemented`.
//!
//! Alarms live in the replicated state machine ([`tenure_kv::alarm`]): every `Alarm` request,
//! `GET` included, goes through the log as etcd's does, so a listing is linearizable and an
//! alarm raised on one member refuses writes on all of them.
//!
//! Snapshot, Hash and HashKV read an O(1) copy of the store taken on the replica thread and do
//! their O(state) work on a blocking thread, so the replica never waits for them. A snapshot
//! stream is a backup file as it will be saved ([`BACKUP_MAGIC`] and the length of what
//! follows, the kv crate's snapshot encoding of that copy, zeros up to a multiple of
//! [`BACKUP_ALIGN_BYTES`]) followed, as etcd's stream is, by the SHA-256 of everything before
//! it. `etcdctl snapshot save` writes the stream to a file as it comes and accepts it only if
//! the file is a multiple of 512 bytes plus the 32-byte trailer, as bbolt files are; `tenure
//! snapshot status` and `restore` check the trailer, the header, the encoding and the padding.
//!
//! Sizes: `Status.dbSize` and `dbSizeInUse` are [`tenure_kv::Store::size_bytes`], what the
//! store holds, kept as it changes. The store is in memory and compaction returns what it
//! drops at once, so both figures are the same and `Defragment` has nothing left to reclaim: it
//! answers success without touching anything, and never holds up traffic.

use std::io::Write;
use std::pin::Pin;

use sha2::Digest;
use tenure_kv::{AlarmAction, AlarmRequest, AlarmType, Command, Proposal, RequestOp, Response};
use tonic::{Request, Status};

use super::convert::{alarm_request_from_pb, alarm_response_to_pb, alarm_status_error};
use super::{Services, VERSION, submit_status, unexpected};
use crate::ServerError;
use crate::pb::etcdserverpb as pb;

/// etcd's default `--quota-backend-bytes`: 2 GiB.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 << 30;

/// etcd's estimate of what storing a key's metadata costs (`kvOverhead`), added to the key and
/// value of each put when a write is checked against the quota.
const KV_OVERHEAD_BYTES: u64 = 256;

/// etcd's estimate of what storing a lease costs (`leaseOverhead`).
const LEASE_OVERHEAD_BYTES: u64 = 64;

/// The first bytes of a backup (a `Maintenance.Snapshot` stream and the file saved from it).
pub const BACKUP_MAGIC: [u8; 8] = *b"TNBACKUP";

/// Bytes before the store's encoding in a backup: [`BACKUP_MAGIC`], then the encoding's length
/// as a little-endian `u64`.
pub const BACKUP_HEADER_BYTES: usize = 16;

/// A backup's data (header, encoding, zero padding) is a multiple of this many bytes:
/// `etcdctl snapshot save` looks for the SHA-256 trailer after a multiple of 512 bytes.
pub const BACKUP_ALIGN_BYTES: u64 = 512;

/// Zero bytes after an encoding of `encoded_bytes` to align a backup's data.
pub fn backup_padding_bytes(encoded_bytes: u64) -> u64 {
    let data = BACKUP_HEADER_BYTES as u64 + encoded_bytes;
    (BACKUP_ALIGN_BYTES - data % BACKUP_ALIGN_BYTES) % BACKUP_ALIGN_BYTES
}

/// Snapshot data per `SnapshotResponse` (etcd sends 32 KiB messages).
pub const SNAPSHOT_CHUNK_BYTES: usize = 32 * 1024;

/// Snapshot messages encoded ahead of a slow client, at most (bounds the memory a snapshot
/// stream holds to a few chunks, whatever the store's size).
const SNAPSHOT_CHUNKS_AHEAD: usize = 4;

/// The backend quota (etcd's `--quota-backend-bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Writes that would take the store to this many bytes or more are refused; `None`: no
    /// quota.
    pub bytes_max: Option<u64>,
}

impl Default for Quota {
    fn default() -> Quota {
        Quota { bytes_max: Some(QUOTA_BACKEND_BYTES_DEFAULT) }
    }
}

impl Quota {
    /// etcd's reading of the flag: 0 is the default (2 GiB), a negative value disables the
    /// quota, anything else is the limit in bytes.
    pub fn from_flag(bytes: i64) -> Quota {
        match u64::try_from(bytes) {
            Err(_) => Quota { bytes_max: None },
            Ok(0) => Quota::default(),
            Ok(n) => Quota { bytes_max: Some(n) },
        }
    }

    /// Whether a store holding `used` bytes has room for a write costing `cost` (etcd's
    /// `backendQuota.Available`: strictly below the quota).
    pub fn has_room(&self, used: u64, cost: u64) -> bool {
        self.bytes_max.is_none_or(|max| used.saturating_add(cost) < max)
    }
}

/// What a command may add to the store, as etcd's quota estimates it (`backendQuota.Cost`), or
/// `None` for a command the quota does not check (deletes, compactions, renewals, alarms...).
pub fn quota_cost(command: &Command) -> Option<u64> {
    match command {
        Command::Put(p) => Some(put_cost(p)),
        Command::Txn(t) => Some(txn_cost(t)),
        Command::LeaseGrant(_) => Some(LEASE_OVERHEAD_BYTES),
        _ => None,
    }
}

fn put_cost(p: &tenure_kv::PutRequest) -> u64 {
    KV_OVERHEAD_BYTES + (p.key.len() + p.value.len()) as u64
}

/// The costlier branch, as etcd counts a transaction (its branches are not known before it
/// runs).
fn txn_cost(t: &tenure_kv::TxnRequest) -> u64 {
    let branch = |ops: &[RequestOp]| -> u64 {
        ops.iter()
            .map(|op| match op {
                RequestOp::Put(p) => put_cost(p),
                RequestOp::Txn(nested) => txn_cost(nested),
                RequestOp::Range(_) | RequestOp::DeleteRange(_) => 0,
            })
            .sum()
    };
    branch(&t.success).max(branch(&t.failure))
}

type SnapshotChunks = Pin<
    Box<
        dyn tonic::codegen::tokio_stream::Stream<Item = Result<pb::SnapshotResponse, Status>>
            + Send
            + 'static,
    >,
>;

impl Services {
    /// The alarms this member has applied (not a linearizable read: Status reports this
    /// member's view, as etcd's does).
    async fn applied_alarms(&self) -> Result<Vec<tenure_kv::AlarmMember>, Status> {
        let rx = self
            .runtime
            .inspect(|replica| replica.kv().alarms().collect::<Vec<_>>())
            .map_err(submit_status)?;
        rx.await.map_err(|_| ServerError::Stopped.into())
    }

    /// etcd's quota check before a write is proposed: a command that grows the store and does
    /// not fit under the quota raises this member's `NOSPACE` alarm (through the log, so every
    /// member refuses growth from then on) and is refused with "database space exceeded".
    pub(super) async fn check_quota(&self, command: &Command) -> Result<(), Status> {
        let Some(cost) = quota_cost(command) else {
            return Ok(());
        };
        let used = self.runtime.status().db_bytes;
        if self.quota.has_room(used, cost) {
            return Ok(());
        }
        tracing::warn!(
            "member {}: the store holds {used} bytes; a write of {cost} more would pass the \
             quota of {:?} bytes: raising NOSPACE",
            crate::ids::format_id(self.cluster.member_id),
            self.quota.bytes_max
        );
        let alarm = AlarmRequest {
            action: AlarmAction::Activate,
            member_id: self.cluster.member_id,
            alarm: Some(AlarmType::NoSpace),
        };
        // As etcd's quotaAlarmer: the write is refused whether or not raising the alarm worked.
        if let Ok(rx) = self.runtime.propose(Proposal::new(Command::Alarm(alarm))) {
            let _ = rx.await;
        }
        Err(ServerError::NoSpace.into())
    }

    /// An O(1) copy of this member's store, taken on the replica thread.
    async fn store_copy(&self) -> Result<tenure_kv::Store, Status> {
        super::watch::store_copy(self).await.ok_or_else(|| ServerError::Stopped.into())
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Services {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<tonic::Response<pb::AlarmResponse>, Status> {
        let alarm = alarm_request_from_pb(request.get_ref()).map_err(ServerError::from)?;
        match self.write(&request, Command::Alarm(alarm)).await? {
            Response::Alarm(r) => Ok(tonic::Response::new(alarm_response_to_pb(r))),
            _ => Err(unexpected("Alarm")),
        }
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
        let st = self.runtime.status();
        if st.stopped {
            return Err(ServerError::Stopped.into());
        }
        // As etcd: no leader, then every raised alarm this member has applied.
        let mut errors = Vec::new();
        if st.leader.is_none() {
            errors.push(ServerError::NoLeader.to_string());
        }
        errors.extend(self.applied_alarms().await?.into_iter().map(alarm_status_error));
        // What the store holds (see the module docs): compaction frees at once, so the size
        // and the size in use are one figure.
        let db_size = i64::try_from(st.db_bytes).unwrap_or(i64::MAX);
        Ok(tonic::Response::new(pb::StatusResponse {
            header: Some(self.ctx().header(st.revision)),
            version: VERSION.to_string(),
            db_size,
            leader: st.leader.unwrap_or(0),
            raft_index: st.committed,
            raft_term: st.term,
            raft_applied_index: st.applied,
            errors,
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }

    /// Nothing to reclaim (see the module docs): compaction already returned what it dropped.
    /// Answers once this member is up, as etcd's does when its defragmentation is done.
    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<tonic::Response<pb::DefragmentResponse>, Status> {
        self.check_admin(&request)?;
        let st = self.runtime.status();
        if st.stopped {
            return Err(ServerError::Stopped.into());
        }
        Ok(tonic::Response::new(pb::DefragmentResponse {
            header: Some(self.ctx().header(st.revision)),
        }))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<tonic::Response<pb::HashResponse>, Status> {
        self.check_admin(&request)?;
        let _permit = self.admit()?;
        let store = self.store_copy().await?;
        let revision = store.revision();
        let hash = tokio::task::spawn_blocking(move || store.hash())
            .await
            .map_err(|_| ServerError::Stopped)?;
        Ok(tonic::Response::new(pb::HashResponse {
            header: Some(self.ctx().header(revision)),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<tonic::Response<pb::HashKvResponse>, Status> {
        self.check_admin(&request)?;
        let _permit = self.admit()?;
        let revision = request.get_ref().revision;
        let store = self.store_copy().await?;
        let h = tokio::task::spawn_blocking(move || store.hash_kv(revision))
            .await
            .map_err(|_| ServerError::Stopped)?
            .map_err(ServerError::Kv)?;
        Ok(tonic::Response::new(pb::HashKvResponse {
            header: Some(self.ctx().header(h.current_revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotChunks;

    /// Streams a consistent copy of the store as a backup (see the module docs): the header,
    /// the kv snapshot encoding of an O(1) copy taken now and the padding, in
    /// [`SNAPSHOT_CHUNK_BYTES`] messages, then one message with the SHA-256 of all of it
    /// (etcd's trailer). `remaining_bytes` counts the data still to come, as etcd's does:
    /// the copy is encoded once to measure it and once to send it, both on a blocking thread.
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<Self::SnapshotStream>, Status> {
        self.check_admin(&request)?;
        let store = self.store_copy().await?;
        let header = self.ctx().header(store.revision());
        let member = crate::ids::format_id(self.cluster.member_id);
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut sizer = CountingSink(0);
            let encoded = match store.write_snapshot(&mut sizer) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!("snapshot: {e}"))));
                    return;
                }
            };
            let padding = backup_padding_bytes(encoded);
            let total = BACKUP_HEADER_BYTES as u64 + encoded + padding;
            let mut out = ChunkSender {
                tx,
                header,
                buf: Vec::with_capacity(SNAPSHOT_CHUNK_BYTES),
                sha: sha2::Sha256::new(),
                remaining: total,
            };
            let sent = out
                .write_all(&BACKUP_MAGIC)
                .and_then(|()| out.write_all(&encoded.to_le_bytes()))
                .map_err(tenure_kv::SnapshotError::Io)
                .and_then(|()| store.write_snapshot(&mut out))
                .and_then(|_| {
                    let zeros = vec![0u8; usize::try_from(padding).expect("below 512")];
                    out.write_all(&zeros)?;
                    Ok(out.finish()?)
                });
            match sent {
                Ok(()) => tracing::info!(
                    "member {member}: sent a snapshot of revision {} ({total} bytes)",
                    store.revision()
                ),
                // The client went away: nothing to tell it.
                Err(tenure_kv::SnapshotError::Io(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    tracing::info!("member {member}: snapshot stream closed by the client");
                }
                Err(e) => {
                    let _ = out.tx.blocking_send(Err(Status::internal(format!("snapshot: {e}"))));
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<tonic::Response<pb::MoveLeaderResponse>, Status> {
        self.check_admin(&request)?;
        self.move_leader_on_leader(request.into_inner().target_id).await
    }
}

/// Counts what is written and keeps nothing.
struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Cuts what the snapshot encoder writes into messages and hands them to the stream, hashing
/// as it goes. A closed stream (the client left) is a `BrokenPipe` error, which stops the
/// encoder.
struct ChunkSender {
    tx: tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
    header: pb::ResponseHeader,
    buf: Vec<u8>,
    sha: sha2::Sha256,
    /// Data bytes not yet handed to the stream.
    remaining: u64,
}

impl ChunkSender {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.sha.update(&self.buf);
        self.remaining = self.remaining.saturating_sub(self.buf.len() as u64);
        let blob = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK_BYTES));
        self.send(blob)
    }

    fn send(&self, blob: Vec<u8>) -> std::io::Result<()> {
        let message = pb::SnapshotResponse {
            header: Some(self.header),
            remaining_bytes: self.remaining,
            blob: blob.into(),
        };
        self.tx
            .blocking_send(Ok(message))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }

    /// Sends what is left, then the SHA-256 trailer.
    fn finish(&mut self) -> std::io::Result<()> {
        self.send_buf()?;
        let digest = std::mem::take(&mut self.sha).finalize();
        self.send(digest.to_vec())
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = SNAPSHOT_CHUNK_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK_BYTES {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenure_kv::{PutRequest, TxnRequest};

    #[test]
    fn quota_flag_reads_as_etcd_reads_it() {
        assert_eq!(Quota::from_flag(0), Quota::default());
        assert_eq!(Quota::from_flag(0).bytes_max, Some(2 << 30));
        assert_eq!(Quota::from_flag(-1).bytes_max, None);
        assert_eq!(Quota::from_flag(4096).bytes_max, Some(4096));
        let q = Quota::from_flag(1000);
        assert!(q.has_room(500, 499));
        assert!(!q.has_room(500, 500), "the quota is a strict bound, as etcd's");
        assert!(Quota::from_flag(-1).has_room(u64::MAX, u64::MAX));
    }

    #[test]
    fn costs_follow_etcds_estimates() {
        let put = PutRequest::new("key", "value");
        assert_eq!(quota_cost(&Command::Put(put.clone())), Some(256 + 8));
        let txn = TxnRequest {
            compare: Vec::new(),
            success: vec![RequestOp::Put(put.clone()), RequestOp::Put(put.clone())],
            failure: vec![RequestOp::Put(put)],
        };
        assert_eq!(quota_cost(&Command::Txn(txn)), Some(2 * (256 + 8)));
        let grant = tenure_kv::LeaseGrantRequest { id: 1, ttl: 10 };
        assert_eq!(quota_cost(&Command::LeaseGrant(grant)), Some(64));
        let del = tenure_kv::DeleteRangeRequest::single("key");
        assert_eq!(quota_cost(&Command::DeleteRange(del)), None);
    }
}
