//! Streaming snapshots of the whole store, with bounded memory both ways.
//!
//! Layout: the magic `TNKVSNAP`, a little-endian `u32` format version, then frames. A frame is
//! a little-endian `u32` payload length, a little-endian `u32` CRC-32C of the length bytes and
//! the payload, then the payload: whole records (a record never spans frames) encoded with the
//! crate's codec. Frames are cut at about [`FRAME_TARGET_BYTES`]; one record larger than that
//! gets a frame of its own, and readers refuse frames above [`SNAPSHOT_FRAME_BYTES_MAX`].
//!
//! Records, in this order: one header (revision, compaction, applied index, log time, lease
//! id counter), the leases by id, every key by key order (a key record then one record per
//! version, oldest first), the sessions by client id, the published member attributes by
//! member id, the raised alarms by member then type, the members' peer URLs by member id,
//! the removed member ids in order, one auth record (whether auth is on, the auth revision,
//! the token key, the users with their password hashes and roles, the roles with their
//! permissions), and an end record with the counts of each kind. A version record holds the mod revision, the sub-revision (the write's position
//! within its revision), the create revision, the version, the lease and the value.
//!
//! A lease record holds the id, the TTL, the index of the grant or last renewal and the
//! checkpointed remaining time (a flag, then milliseconds).
//!
//! Older versions still restore: version 6 (before auth) has no auth record and restores
//! with auth off and no users or roles; version 5 (before membership changes) has no peer-URL or
//! removed-member records and no counts of them, and restores with none; version 4 (before lease renewals and checkpoints) has only
//! the id and TTL in lease records and restores with `renewed_at` 0 and no checkpoint (the
//! full TTL from the restore); version 3 (before sub-revisions) has no sub-revision in
//! version records and restores with every sub-revision 0, so history orders the events of one
//! revision by key (right for DeleteRange and lease revokes, which etcd also applies in key
//! order; a multi-key transaction's events come in key order instead of operation order);
//! version 2 (before alarms) has no alarm records and no alarm count either, and restores with
//! no alarm raised; version 1 (before the member table) has no member records and no member
//! count either, and restores with an empty table.
//! Restoring checks checksums, record order, every invariant of the store, the counts and
//! that nothing follows the end record, so corrupt input is an error, never a panic or a
//! store that answers differently.

use std::io::{Read, Write};

use crate::codec::{self, Reader, Writer};
use crate::config::{Config, ConfigError};
use crate::error::DecodeError;
use crate::members::check_attributes;
use crate::mvcc::{Version, push_version};
use crate::session::Session;
use crate::store::{INITIAL_REVISION, Store};

/// The first bytes of every snapshot.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TNKVSNAP";
/// The snapshot format version this build writes. It also reads version 6 (no auth record),
/// version 5 (no member peer
/// URLs or removed members), version 4 (no lease renewal index or checkpoint), version 3 (no sub-revisions either), version 2 (no alarms either) and
/// version 1 (no member table either).
pub const SNAPSHOT_VERSION: u32 = 7;
/// The oldest snapshot format version this build reads.
const SNAPSHOT_VERSION_OLDEST: u32 = 1;
/// Frames are cut once their payload reaches this size.
pub const FRAME_TARGET_BYTES: usize = 64 * 1024;
/// The largest frame a reader accepts (bounds restore's memory).
pub const SNAPSHOT_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

const TAG_HEADER: u8 = 1;
const TAG_LEASE: u8 = 2;
const TAG_KEY: u8 = 3;
const TAG_VERSION: u8 = 4;
const TAG_SESSION: u8 = 5;
const TAG_END: u8 = 6;
const TAG_MEMBER: u8 = 7;
const TAG_ALARM: u8 = 8;
const TAG_MEMBER_PEERS: u8 = 9;
const TAG_MEMBER_REMOVED: u8 = 10;
const TAG_AUTH: u8 = 11;

/// Why a snapshot could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The underlying reader or writer failed.
    #[error("snapshot I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The input does not start with [`SNAPSHOT_MAGIC`].
    #[error("not a tenure kv snapshot (bad magic)")]
    BadMagic,
    /// The input has a format version this build cannot read.
    #[error("unsupported snapshot version {0}")]
    UnsupportedVersion(u32),
    /// The input ended before the end record.
    #[error("snapshot truncated at byte {offset}")]
    Truncated {
        /// Bytes read before the input ended.
        offset: u64,
    },
    /// A frame's checksum does not match its contents.
    #[error("snapshot frame at byte {offset}: checksum mismatch")]
    Checksum {
        /// Where the frame starts.
        offset: u64,
    },
    /// A frame declares a payload above [`SNAPSHOT_FRAME_BYTES_MAX`].
    #[error("snapshot frame at byte {offset}: {len} bytes is above the limit")]
    FrameTooLarge {
        /// Where the frame starts.
        offset: u64,
        /// The declared payload length.
        len: u64,
    },
    /// A record could not be decoded.
    #[error("snapshot frame at byte {offset}: {source}")]
    Decode {
        /// Where the frame starts.
        offset: u64,
        /// What was wrong.
        source: DecodeError,
    },
    /// The records decode but break an invariant of the store.
    #[error("snapshot frame at byte {offset}: inconsistent: {what}")]
    Invalid {
        /// Where the frame starts.
        offset: u64,
        /// Which rule is broken.
        what: &'static str,
    },
    /// The config given to restore is unusable.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
}

/// Buffers records and writes them out as checksummed frames.
struct FrameWriter<'a, W: Write> {
    out: &'a mut W,
    rec: Writer,
}

impl<W: Write> FrameWriter<'_, W> {
    /// Called after each record: cuts a frame once the buffer is big enough.
    fn end_record(&mut self) -> Result<(), SnapshotError> {
        if self.rec.buf.len() >= FRAME_TARGET_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SnapshotError> {
        if self.rec.buf.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(self.rec.buf.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "snapshot record over 4 GiB")
        })?;
        let len_bytes = len.to_le_bytes();
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &self.rec.buf);
        self.out.write_all(&len_bytes)?;
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&self.rec.buf)?;
        self.rec.buf.clear();
        Ok(())
    }
}

impl Store {
    /// Writes the whole state (revision, compaction, all history, leases, sessions, member
    /// attributes and alarms) to `out`. Memory use beyond the store is one frame (about [`FRAME_TARGET_BYTES`], or one
    /// record if larger). Returns the bytes written.
    pub fn write_snapshot<W: Write>(&self, out: &mut W) -> Result<u64, SnapshotError> {
        let mut counting = CountingWriter { inner: out, bytes: 0 };
        counting.write_all(&SNAPSHOT_MAGIC)?;
        counting.write_all(&SNAPSHOT_VERSION.to_le_bytes())?;
        let mut f = FrameWriter { out: &mut counting, rec: Writer::default() };
        let w = &mut f.rec;
        w.u8(TAG_HEADER);
        w.i64(self.revision);
        match self.compacted {
            None => w.bool(false),
            Some(c) => {
                w.bool(true);
                w.i64(c);
            }
        }
        w.u64(self.applied_index);
        w.u64(self.log_time_ms);
        w.i64(self.leases.last_auto_id);
        f.end_record()?;
        for lease in self.leases.by_id.values() {
            f.rec.u8(TAG_LEASE);
            f.rec.i64(lease.id);
            f.rec.i64(lease.ttl);
            f.rec.u64(lease.renewed_at);
            match lease.remaining_ms {
                None => f.rec.bool(false),
                Some(ms) => {
                    f.rec.bool(true);
                    f.rec.u64(ms);
                }
            }
            f.end_record()?;
        }
        let mut version_count: u64 = 0;
        for (key, history) in &self.index.keys {
            f.rec.u8(TAG_KEY);
            f.rec.bytes(key);
            f.rec.u64(history.len() as u64);
            f.end_record()?;
            for v in history.iter() {
                let w = &mut f.rec;
                w.u8(TAG_VERSION);
                w.i64(v.mod_revision);
                w.u64(u64::from(v.sub_revision));
                w.i64(v.create_revision);
                w.i64(v.version);
                w.i64(v.lease);
                match &v.value {
                    None => w.bool(false),
                    Some(value) => {
                        w.bool(true);
                        w.bytes(value);
                    }
                }
                f.end_record()?;
                version_count += 1;
            }
        }
        for (client, session) in &self.sessions.by_client {
            let w = &mut f.rec;
            w.u8(TAG_SESSION);
            w.u64(*client);
            w.u64(session.last_sequence);
            w.u64(session.last_active_ms);
            codec::put_outcome(w, &session.outcome);
            f.end_record()?;
        }
        for (id, attributes) in &self.members.by_id {
            let w = &mut f.rec;
            w.u8(TAG_MEMBER);
            w.u64(*id);
            codec::put_member_attributes(w, attributes);
            f.end_record()?;
        }
        for alarm in &self.alarms.raised {
            f.rec.u8(TAG_ALARM);
            codec::put_alarm_member(&mut f.rec, alarm);
            f.end_record()?;
        }
        for (id, urls) in &self.members.peers {
            f.rec.u8(TAG_MEMBER_PEERS);
            f.rec.u64(*id);
            crate::members::put_urls(&mut f.rec, urls);
            f.end_record()?;
        }
        for id in &self.members.removed {
            f.rec.u8(TAG_MEMBER_REMOVED);
            f.rec.u64(*id);
            f.end_record()?;
        }
        f.rec.u8(TAG_AUTH);
        crate::auth::put_state(&mut f.rec, &self.auth);
        f.end_record()?;
        let w = &mut f.rec;
        w.u8(TAG_END);
        w.u64(self.leases.by_id.len() as u64);
        w.u64(self.index.keys.len() as u64);
        w.u64(version_count);
        w.u64(self.sessions.by_client.len() as u64);
        w.u64(self.members.by_id.len() as u64);
        w.u64(self.alarms.len() as u64);
        w.u64(self.members.peers.len() as u64);
        w.u64(self.members.removed.len() as u64);
        f.flush()?;
        counting.flush()?;
        Ok(counting.bytes)
    }

    /// Rebuilds a store from [`Store::write_snapshot`]'s output, reading one frame at a time.
    ///
    /// `config` must be the cluster's config (it is not part of the snapshot). Any corruption,
    /// truncation or inconsistency is an error.
    pub fn restore<R: Read>(config: Config, input: &mut R) -> Result<Store, SnapshotError> {
        let mut store = Store::new(config)?;
        let mut head = [0u8; 12];
        read_exact_or_truncated(input, &mut head, 0)?;
        if head[..8] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if !(SNAPSHOT_VERSION_OLDEST..=SNAPSHOT_VERSION).contains(&version) {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let mut restorer = Restorer {
            store: &mut store,
            phase: Phase::Header,
            open: None,
            versions_left: 0,
            version_count: 0,
            lease_last: None,
            client_last: None,
            member_last: None,
            alarm_last: None,
            peers_last: None,
            removed_last: None,
            version,
        };
        let mut offset: u64 = 12;
        let mut frame = Vec::new();
        loop {
            let mut fh = [0u8; 8];
            read_exact_or_truncated(input, &mut fh, offset)?;
            let len_bytes: [u8; 4] = fh[..4].try_into().expect("4 bytes");
            let len = u32::from_le_bytes(len_bytes) as usize;
            let crc = u32::from_le_bytes(fh[4..].try_into().expect("4 bytes"));
            if len > SNAPSHOT_FRAME_BYTES_MAX {
                return Err(SnapshotError::FrameTooLarge { offset, len: len as u64 });
            }
            frame.clear();
            frame.resize(len, 0);
            read_exact_or_truncated(input, &mut frame, offset + 8)?;
            if crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &frame) != crc {
                return Err(SnapshotError::Checksum { offset });
            }
            let mut r = Reader::new(&frame);
            while r.remaining() > 0 {
                restorer.record(&mut r).map_err(|e| e.at(offset))?;
            }
            offset += 8 + len as u64;
            if restorer.phase == Phase::Done {
                break;
            }
        }
        let mut probe = [0u8; 1];
        if input.read(&mut probe)? != 0 {
            return Err(SnapshotError::Invalid { offset, what: "bytes after the end record" });
        }
        store.recount_size_bytes();
        Ok(store)
    }
}

fn read_exact_or_truncated<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), SnapshotError> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SnapshotError::Truncated { offset }
        } else {
            SnapshotError::Io(e)
        }
    })
}

/// Counts the bytes a snapshot takes.
struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    bytes: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Leases,
    Keys,
    Sessions,
    Members,
    Alarms,
    MemberPeers,
    Removed,
    Auth,
    Done,
}

/// A record-level failure, before it learns its frame's offset.
enum RecordError {
    Decode(DecodeError),
    Invalid(&'static str),
}

impl From<DecodeError> for RecordError {
    fn from(e: DecodeError) -> Self {
        RecordError::Decode(e)
    }
}

impl RecordError {
    fn at(self, offset: u64) -> SnapshotError {
        match self {
            RecordError::Decode(source) => SnapshotError::Decode { offset, source },
            RecordError::Invalid(what) => SnapshotError::Invalid { offset, what },
        }
    }
}

fn ensure(ok: bool, what: &'static str) -> Result<(), RecordError> {
    if ok { Ok(()) } else { Err(RecordError::Invalid(what)) }
}

/// Restore's state between records.
struct Restorer<'a> {
    store: &'a mut Store,
    phase: Phase,
    /// The key whose versions are being read, with those read so far; it joins the index
    /// once complete (keys arrive in increasing order).
    open: Option<(bytes::Bytes, Vec<Version>)>,
    /// Versions still expected for the open key.
    versions_left: u64,
    version_count: u64,
    lease_last: Option<i64>,
    client_last: Option<u64>,
    member_last: Option<u64>,
    alarm_last: Option<crate::alarm::AlarmMember>,
    peers_last: Option<u64>,
    removed_last: Option<u64>,
    /// The snapshot's format version (1 has no member records and no member count; 1 and 2
    /// have no alarm records and no alarm count; 1 to 3 have no sub-revisions).
    version: u32,
}

impl Restorer<'_> {
    fn record(&mut self, r: &mut Reader<'_>) -> Result<(), RecordError> {
        let tag = r.u8()?;
        ensure(self.phase != Phase::Done, "record after the end record")?;
        if tag != TAG_VERSION {
            ensure(self.versions_left == 0, "key has fewer versions than announced")?;
            if self.open.is_some() {
                self.finish_key()?;
            }
        }
        match tag {
            TAG_HEADER => {
                ensure(self.phase == Phase::Header, "header out of place")?;
                let s = &mut *self.store;
                s.revision = r.i64()?;
                s.compacted = if r.bool()? { Some(r.i64()?) } else { None };
                s.applied_index = r.u64()?;
                s.log_time_ms = r.u64()?;
                s.leases.last_auto_id = r.i64()?;
                // The store adds one to the revision and to versions; leave room for that.
                ensure(
                    (INITIAL_REVISION..i64::MAX).contains(&s.revision),
                    "revision out of range",
                )?;
                ensure(
                    s.compacted.is_none_or(|c| c >= 0 && c <= s.revision),
                    "compaction revision outside [0, revision]",
                )?;
                ensure(s.leases.last_auto_id >= 0, "negative lease counter")?;
                self.phase = Phase::Leases;
            }
            TAG_LEASE => {
                ensure(self.phase == Phase::Leases, "lease out of place")?;
                let (id, ttl) = (r.i64()?, r.i64()?);
                ensure(id != 0, "lease id 0")?;
                ensure(self.lease_last.is_none_or(|l| l < id), "leases out of order")?;
                self.lease_last = Some(id);
                let (renewed_at, remaining_ms) = if self.version >= 5 {
                    let renewed_at = r.u64()?;
                    (renewed_at, if r.bool()? { Some(r.u64()?) } else { None })
                } else {
                    (0, None)
                };
                ensure(renewed_at <= self.store.applied_index, "lease renewed after the snapshot")?;
                self.store.leases.grant(id, ttl, false, renewed_at);
                if let Some(lease) = self.store.leases.get_mut(id) {
                    lease.remaining_ms = remaining_ms;
                }
            }
            TAG_KEY => {
                ensure(matches!(self.phase, Phase::Leases | Phase::Keys), "key out of place")?;
                self.phase = Phase::Keys;
                let key = r.bytes()?;
                let count = r.u64()?;
                ensure(!key.is_empty(), "empty key")?;
                ensure(count > 0, "key without versions")?;
                let in_order = self.store.index.keys.get_max().is_none_or(|(last, _)| *last < key);
                ensure(in_order, "keys out of order")?;
                self.open = Some((key, Vec::new()));
                self.versions_left = count;
            }
            TAG_VERSION => {
                ensure(self.versions_left > 0, "version without a key")?;
                let mod_revision = r.i64()?;
                let sub_revision = if self.version >= 4 {
                    u32::try_from(r.u64()?)
                        .map_err(|_| RecordError::Invalid("sub-revision out of range"))?
                } else {
                    0
                };
                let v = Version {
                    mod_revision,
                    sub_revision,
                    create_revision: r.i64()?,
                    version: r.i64()?,
                    lease: r.i64()?,
                    value: if r.bool()? { Some(r.bytes()?) } else { None },
                };
                let revision = self.store.revision;
                let (_, history) = self.open.as_mut().expect("versions_left > 0");
                check_version(history.last(), &v, revision)?;
                push_version(history, v);
                self.versions_left -= 1;
                self.version_count += 1;
            }
            TAG_SESSION => {
                ensure(
                    matches!(self.phase, Phase::Leases | Phase::Keys | Phase::Sessions),
                    "session out of place",
                )?;
                self.phase = Phase::Sessions;
                let client = r.u64()?;
                ensure(self.client_last.is_none_or(|c| c < client), "sessions out of order")?;
                self.client_last = Some(client);
                let session = Session {
                    last_sequence: r.u64()?,
                    last_active_ms: r.u64()?,
                    outcome: codec::get_outcome(r)?,
                };
                ensure(
                    session.outcome.as_ref().err().is_none_or(|e| e.is_deterministic()),
                    "session caches a non-deterministic error",
                )?;
                ensure(
                    session.last_active_ms <= self.store.log_time_ms,
                    "session active after the log time",
                )?;
                self.store.sessions.insert(client, session);
            }
            TAG_MEMBER => {
                ensure(self.version >= 2, "member record in a version 1 snapshot")?;
                ensure(
                    matches!(
                        self.phase,
                        Phase::Leases | Phase::Keys | Phase::Sessions | Phase::Members
                    ),
                    "member out of place",
                )?;
                self.phase = Phase::Members;
                let id = r.u64()?;
                ensure(id != 0, "member id 0")?;
                ensure(self.member_last.is_none_or(|m| m < id), "members out of order")?;
                self.member_last = Some(id);
                let attributes = codec::get_member_attributes(r)?;
                ensure(check_attributes(&attributes).is_ok(), "member attributes over a limit")?;
                self.store.members.publish(id, attributes);
            }
            TAG_ALARM => {
                ensure(self.version >= 3, "alarm record in a version 1 or 2 snapshot")?;
                ensure(
                    matches!(
                        self.phase,
                        Phase::Leases
                            | Phase::Keys
                            | Phase::Sessions
                            | Phase::Members
                            | Phase::Alarms
                    ),
                    "alarm out of place",
                )?;
                self.phase = Phase::Alarms;
                let alarm = codec::get_alarm_member(r)?;
                ensure(self.alarm_last.is_none_or(|a| a < alarm), "alarms out of order")?;
                self.alarm_last = Some(alarm);
                self.store.alarms.raised.insert(alarm);
            }
            TAG_MEMBER_PEERS => {
                ensure(self.version >= 6, "peer URL record before version 6")?;
                ensure(
                    !matches!(self.phase, Phase::Header | Phase::Removed | Phase::Auth),
                    "peer URL record out of place",
                )?;
                self.phase = Phase::MemberPeers;
                let id = r.u64()?;
                ensure(id != 0, "member id 0")?;
                ensure(self.peers_last.is_none_or(|m| m < id), "peer URL records out of order")?;
                self.peers_last = Some(id);
                let urls = crate::members::get_urls(r)?;
                ensure(crate::members::check_peer_urls(&urls).is_ok(), "invalid peer URLs")?;
                self.store.members.peers.insert(id, urls);
            }
            TAG_MEMBER_REMOVED => {
                ensure(self.version >= 6, "removed member record before version 6")?;
                ensure(
                    !matches!(self.phase, Phase::Header | Phase::Auth),
                    "removed member record out of place",
                )?;
                self.phase = Phase::Removed;
                let id = r.u64()?;
                ensure(id != 0, "member id 0")?;
                ensure(self.removed_last.is_none_or(|m| m < id), "removed members out of order")?;
                self.removed_last = Some(id);
                let m = &self.store.members;
                ensure(
                    !m.peers.contains_key(&id) && !m.by_id.contains_key(&id),
                    "a removed member has a record",
                )?;
                self.store.members.removed.insert(id);
            }
            TAG_AUTH => {
                ensure(self.version >= 7, "auth record before version 7")?;
                ensure(
                    !matches!(self.phase, Phase::Header | Phase::Auth),
                    "auth record out of place",
                )?;
                self.phase = Phase::Auth;
                let state = crate::auth::get_state(r).map_err(RecordError::Invalid)?;
                self.store.auth = std::sync::Arc::new(state);
            }
            TAG_END => {
                ensure(self.phase != Phase::Header, "end before the header")?;
                ensure(
                    self.version < 7 || self.phase == Phase::Auth,
                    "no auth record before the end",
                )?;
                let s = &*self.store;
                ensure(r.u64()? == s.leases.by_id.len() as u64, "lease count mismatch")?;
                ensure(r.u64()? == s.index.keys.len() as u64, "key count mismatch")?;
                ensure(r.u64()? == self.version_count, "version count mismatch")?;
                ensure(r.u64()? == s.sessions.len() as u64, "session count mismatch")?;
                if self.version >= 2 {
                    ensure(r.u64()? == s.members.len() as u64, "member count mismatch")?;
                }
                if self.version >= 3 {
                    ensure(r.u64()? == s.alarms.len() as u64, "alarm count mismatch")?;
                }
                if self.version >= 6 {
                    ensure(r.u64()? == s.members.peers.len() as u64, "peer URL count mismatch")?;
                    ensure(r.u64()? == s.members.removed.len() as u64, "removed count mismatch")?;
                }
                ensure(r.remaining() == 0, "bytes after the end record")?;
                self.phase = Phase::Done;
            }
            tag => {
                return Err(DecodeError::InvalidTag { what: "snapshot record", tag }.into());
            }
        }
        Ok(())
    }

    /// Checks a key's complete history and attaches its current version to its lease.
    fn finish_key(&mut self) -> Result<(), RecordError> {
        let (key, history) = self.open.take().expect("an open key");
        ensure(
            history.first().is_some_and(|v| v.value.is_some()),
            "history starts with a tombstone",
        )?;
        if history.len() > 1 {
            self.store.index.dirty.insert(key.clone());
        }
        let last = history.last().expect("checked non-empty");
        if last.value.is_some() && last.lease != 0 {
            ensure(self.store.leases.contains(last.lease), "key attached to a missing lease")?;
            self.store.leases.attach(last.lease, &key);
        }
        self.store.index.keys.insert(key, crate::mvcc::History::from_vec(history));
        Ok(())
    }
}

/// The invariants between consecutive versions of one key.
fn check_version(prev: Option<&Version>, v: &Version, revision: i64) -> Result<(), RecordError> {
    ensure(
        v.mod_revision > INITIAL_REVISION && v.mod_revision <= revision,
        "version revision out of range",
    )?;
    ensure(prev.is_none_or(|p| p.mod_revision < v.mod_revision), "versions out of order")?;
    match &v.value {
        None => {
            ensure(
                v.create_revision == 0 && v.version == 0 && v.lease == 0,
                "tombstone with metadata",
            )?;
            ensure(
                prev.is_some_and(|p| p.value.is_some()),
                "tombstone without a live version before it",
            )?;
        }
        Some(_) => {
            ensure((1..i64::MAX).contains(&v.version), "live version out of range")?;
            ensure(
                v.create_revision > INITIAL_REVISION && v.create_revision <= v.mod_revision,
                "create revision out of range",
            )?;
            if let Some(p) = prev
                && p.value.is_some()
            {
                ensure(
                    p.create_revision == v.create_revision
                        && p.version.checked_add(1) == Some(v.version),
                    "version does not follow the previous one",
                )?;
            } else if prev.is_some() {
                ensure(
                    v.version == 1 && v.create_revision == v.mod_revision,
                    "re-creation is not version 1",
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A snapshot whose frames are well formed (right magic, lengths and checksums) holding
    /// exactly `records`, so that only the record checks can reject it.
    fn framed(records: &[Vec<u8>]) -> Vec<u8> {
        framed_as(SNAPSHOT_VERSION, records)
    }

    /// [`framed`] with the format version `version` in the head.
    fn framed_as(version: u32, records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        let mut f = FrameWriter { out: &mut out, rec: Writer::default() };
        for r in records {
            f.rec.buf.extend_from_slice(r);
        }
        f.flush().unwrap();
        out
    }

    fn header(revision: i64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_HEADER);
        w.i64(revision);
        w.bool(false);
        w.u64(0);
        w.u64(0);
        w.i64(0);
        w.buf
    }

    fn lease(id: i64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_LEASE);
        w.i64(id);
        w.i64(10);
        w.u64(0);
        w.bool(false);
        w.buf
    }

    /// A lease record as version 4 wrote it: the id and TTL only.
    fn lease_v4(id: i64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_LEASE);
        w.i64(id);
        w.i64(10);
        w.buf
    }

    fn key(k: &[u8], versions: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_KEY);
        w.bytes(k);
        w.u64(versions);
        w.buf
    }

    fn put_version(mod_revision: i64, create_revision: i64, version: i64, lease: i64) -> Vec<u8> {
        put_version_at(mod_revision, Some(0), create_revision, version, lease)
    }

    /// A version 1 to 3 version record: no sub-revision.
    fn put_version_v3(
        mod_revision: i64,
        create_revision: i64,
        version: i64,
        lease: i64,
    ) -> Vec<u8> {
        put_version_at(mod_revision, None, create_revision, version, lease)
    }

    fn put_version_at(
        mod_revision: i64,
        sub_revision: Option<u64>,
        create_revision: i64,
        version: i64,
        lease: i64,
    ) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_VERSION);
        w.i64(mod_revision);
        if let Some(sub) = sub_revision {
            w.u64(sub);
        }
        w.i64(create_revision);
        w.i64(version);
        w.i64(lease);
        w.bool(true);
        w.bytes(b"value");
        w.buf
    }

    fn end(leases: u64, keys: u64, versions: u64) -> Vec<u8> {
        end_with_members(leases, keys, versions, 0)
    }

    fn end_with_members(leases: u64, keys: u64, versions: u64, members: u64) -> Vec<u8> {
        end_with_alarms(leases, keys, versions, members, 0)
    }

    fn end_with_alarms(
        leases: u64,
        keys: u64,
        versions: u64,
        members: u64,
        alarms: u64,
    ) -> Vec<u8> {
        // The current version's end: an (empty) auth record goes right before it.
        let mut w = Writer::default();
        w.u8(TAG_AUTH);
        crate::auth::put_state(&mut w, &crate::auth::AuthState::default());
        w.buf.extend_from_slice(&end_v5(leases, keys, versions, members, alarms));
        w.u64(0);
        w.u64(0);
        w.buf
    }

    /// A version 3 to 5 end record: no peer URL or removed member counts.
    fn end_v5(leases: u64, keys: u64, versions: u64, members: u64, alarms: u64) -> Vec<u8> {
        let mut w = Writer { buf: end_v2(leases, keys, versions, members) };
        w.u64(alarms);
        w.buf
    }

    /// A version 2 end record: no alarm count.
    fn end_v2(leases: u64, keys: u64, versions: u64, members: u64) -> Vec<u8> {
        let mut w = Writer { buf: end_v1(leases, keys, versions) };
        w.u64(members);
        w.buf
    }

    /// A version 1 end record: no member count.
    fn end_v1(leases: u64, keys: u64, versions: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_END);
        w.u64(leases);
        w.u64(keys);
        w.u64(versions);
        w.u64(0);
        w.buf
    }

    fn member(id: u64, name: &str, urls: &[&str]) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_MEMBER);
        w.u64(id);
        let attributes = crate::MemberAttributes {
            name: name.to_string(),
            client_urls: urls.iter().map(|u| u.to_string()).collect(),
        };
        codec::put_member_attributes(&mut w, &attributes);
        w.buf
    }

    fn alarm(member_id: u64, alarm: crate::AlarmType) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(TAG_ALARM);
        codec::put_alarm_member(&mut w, &crate::AlarmMember { member_id, alarm });
        w.buf
    }

    fn restore(records: &[Vec<u8>]) -> Result<Store, SnapshotError> {
        Store::restore(Config::default(), &mut framed(records).as_slice())
    }

    fn inconsistency(records: &[Vec<u8>]) -> &'static str {
        match restore(records) {
            Err(SnapshotError::Invalid { what, .. }) => what,
            other => panic!("expected an inconsistency, got {other:?}"),
        }
    }

    #[test]
    fn handmade_snapshot_restores() {
        let store = restore(&[
            header(3),
            lease(7),
            key(b"a", 2),
            put_version(2, 2, 1, 0),
            put_version(3, 2, 2, 7),
            end(1, 1, 2),
        ])
        .unwrap();
        assert_eq!(store.revision(), 3);
        assert!(store.lease(7).unwrap().keys.contains(&Bytes::from_static(b"a")));
    }

    #[test]
    fn handmade_snapshot_with_members_restores() {
        let store = restore(&[
            header(1),
            member(1, "n1", &["http://a:2379"]),
            member(7, "n7", &[]),
            end_with_members(0, 0, 0, 2),
        ])
        .unwrap();
        assert_eq!(store.member(1).unwrap().client_urls, ["http://a:2379"]);
        assert_eq!(store.member(7).unwrap().name, "n7");
        assert_eq!(store.member_count(), 2);
    }

    #[test]
    fn bad_member_records_are_inconsistent() {
        let two = |a: Vec<u8>, b: Vec<u8>| [header(1), a, b, end_with_members(0, 0, 0, 2)];
        assert_eq!(
            inconsistency(&two(member(2, "b", &[]), member(1, "a", &[]))),
            "members out of order"
        );
        assert_eq!(
            inconsistency(&two(member(1, "a", &[]), member(1, "a", &[]))),
            "members out of order"
        );
        let records = [header(1), member(0, "z", &[]), end_with_members(0, 0, 0, 1)];
        assert_eq!(inconsistency(&records), "member id 0");
        let long = "n".repeat(crate::MEMBER_NAME_BYTES_MAX + 1);
        let records = [header(1), member(1, &long, &[]), end_with_members(0, 0, 0, 1)];
        assert_eq!(inconsistency(&records), "member attributes over a limit");
        let records = [header(1), member(1, "a", &[]), end_with_members(0, 0, 0, 0)];
        assert_eq!(inconsistency(&records), "member count mismatch");
        let records = [header(1), member(1, "a", &[]), lease(3), end_with_members(1, 0, 0, 1)];
        assert_eq!(inconsistency(&records), "lease out of place");
    }

    #[test]
    fn member_name_that_is_not_utf8_is_a_decode_error() {
        let mut bad = member(1, "ab", &[]);
        // The record is: tag, id, name length, name bytes, URL count.
        bad[3] = 0xff;
        let records = [header(1), bad, end_with_members(0, 0, 0, 1)];
        assert!(matches!(
            restore(&records),
            Err(SnapshotError::Decode { source: DecodeError::InvalidUtf8, .. })
        ));
    }

    #[test]
    fn version_1_snapshot_restores_without_members_and_refuses_member_records() {
        let v1 =
            framed_as(1, &[header(3), key(b"a", 1), put_version_v3(2, 2, 1, 0), end_v1(0, 1, 1)]);
        let store = Store::restore(Config::default(), &mut v1.as_slice()).unwrap();
        assert_eq!((store.revision(), store.member_count()), (3, 0));
        let v1 = framed_as(1, &[header(1), member(1, "a", &[]), end_v1(0, 0, 0)]);
        let err = Store::restore(Config::default(), &mut v1.as_slice()).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Invalid { what: "member record in a version 1 snapshot", .. }
            ),
            "{err:?}"
        );
        let v8 = framed_as(8, &[header(1), end(0, 0, 0)]);
        let err = Store::restore(Config::default(), &mut v8.as_slice()).unwrap_err();
        assert!(matches!(err, SnapshotError::UnsupportedVersion(8)));
    }

    /// The version 6 end record: counts up to the removed members, no auth record before it.
    fn end_v6() -> Vec<u8> {
        let mut w = Writer { buf: end_v5(0, 0, 0, 0, 0) };
        w.u64(0);
        w.u64(0);
        w.buf
    }

    #[test]
    fn version_6_snapshot_restores_with_auth_off_and_refuses_auth_records() {
        let store =
            Store::restore(Config::default(), &mut framed_as(6, &[header(1), end_v6()]).as_slice())
                .unwrap();
        assert!(!store.auth().enabled());
        let mut auth = Writer::default();
        auth.u8(TAG_AUTH);
        crate::auth::put_state(&mut auth, &crate::auth::AuthState::default());
        let v6 = framed_as(6, &[header(1), auth.buf.clone(), end_v6()]);
        let err = Store::restore(Config::default(), &mut v6.as_slice()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Invalid { what: "auth record before version 7", .. }),
            "{err:?}"
        );
        // Version 7 needs exactly one auth record, right before the end.
        let missing = framed(&[header(1), end_v6()]);
        let err = Store::restore(Config::default(), &mut missing.as_slice()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Invalid { what: "no auth record before the end", .. }),
            "{err:?}"
        );
        let twice = framed(&[header(1), auth.buf.clone(), end(0, 0, 0)]);
        let err = Store::restore(Config::default(), &mut twice.as_slice()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Invalid { what: "auth record out of place", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn an_auth_record_that_breaks_an_invariant_is_refused() {
        // Auth on with no token key.
        let mut w = Writer::default();
        w.u8(TAG_AUTH);
        w.bool(true);
        w.u64(1);
        w.bytes(b"");
        w.len(0);
        w.len(0);
        w.buf.extend_from_slice(&end_v6());
        let bad = framed(&[header(1), w.buf]);
        let err = Store::restore(Config::default(), &mut bad.as_slice()).unwrap_err();
        assert!(
            matches!(err, SnapshotError::Invalid { what: "auth enabled without a token key", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn version_4_lease_records_restore_with_the_full_ttl_left() {
        let v4 = framed_as(4, &[header(1), lease_v4(7), end_v5(1, 0, 0, 0, 0)]);
        let store = Store::restore(Config::default(), &mut v4.as_slice()).unwrap();
        let lease = store.lease(7).unwrap();
        assert_eq!((lease.renewed_at, lease.remaining_ms, lease.remaining_ms()), (0, None, 10_000));
    }

    #[test]
    fn a_lease_renewed_after_the_snapshot_index_is_refused() {
        let mut w = Writer::default();
        w.u8(TAG_LEASE);
        w.i64(7);
        w.i64(10);
        w.u64(5);
        w.bool(false);
        assert_eq!(
            inconsistency(&[header(1), w.buf, end(1, 0, 0)]),
            "lease renewed after the snapshot"
        );
    }

    #[test]
    fn handmade_snapshot_with_alarms_restores() {
        use crate::{AlarmMember, AlarmType};
        let store = restore(&[
            header(1),
            member(1, "n1", &[]),
            alarm(1, AlarmType::NoSpace),
            alarm(1, AlarmType::Corrupt),
            alarm(2, AlarmType::NoSpace),
            end_with_alarms(0, 0, 0, 1, 3),
        ])
        .unwrap();
        let raised: Vec<_> = store.alarms().collect();
        assert_eq!(
            raised,
            [
                AlarmMember { member_id: 1, alarm: AlarmType::NoSpace },
                AlarmMember { member_id: 1, alarm: AlarmType::Corrupt },
                AlarmMember { member_id: 2, alarm: AlarmType::NoSpace },
            ]
        );
    }

    #[test]
    fn bad_alarm_records_are_inconsistent() {
        use crate::AlarmType::{Corrupt, NoSpace};
        let two = |a: Vec<u8>, b: Vec<u8>| [header(1), a, b, end_with_alarms(0, 0, 0, 0, 2)];
        assert_eq!(
            inconsistency(&two(alarm(2, NoSpace), alarm(1, NoSpace))),
            "alarms out of order"
        );
        assert_eq!(
            inconsistency(&two(alarm(1, Corrupt), alarm(1, NoSpace))),
            "alarms out of order"
        );
        assert_eq!(
            inconsistency(&two(alarm(1, NoSpace), alarm(1, NoSpace))),
            "alarms out of order"
        );
        let records = [header(1), alarm(1, NoSpace), end_with_alarms(0, 0, 0, 0, 0)];
        assert_eq!(inconsistency(&records), "alarm count mismatch");
        let records =
            [header(1), alarm(1, NoSpace), member(1, "a", &[]), end_with_alarms(0, 0, 0, 1, 1)];
        assert_eq!(inconsistency(&records), "member out of place");
        // An alarm of type NONE (0) is never raised, so never in a snapshot.
        let mut none = alarm(1, NoSpace);
        *none.last_mut().unwrap() = 0;
        let records = [header(1), none, end_with_alarms(0, 0, 0, 0, 1)];
        assert!(matches!(
            restore(&records),
            Err(SnapshotError::Decode { source: DecodeError::InvalidTag { tag: 0, .. }, .. })
        ));
    }

    #[test]
    fn version_2_snapshot_restores_without_alarms_and_refuses_alarm_records() {
        let v2 = framed_as(
            2,
            &[
                header(3),
                key(b"a", 1),
                put_version_v3(2, 2, 1, 0),
                member(1, "a", &[]),
                end_v2(0, 1, 1, 1),
            ],
        );
        let store = Store::restore(Config::default(), &mut v2.as_slice()).unwrap();
        assert_eq!((store.revision(), store.member_count(), store.alarms().count()), (3, 1, 0));
        let v2 =
            framed_as(2, &[header(1), alarm(1, crate::AlarmType::NoSpace), end_v2(0, 0, 0, 0)]);
        let err = Store::restore(Config::default(), &mut v2.as_slice()).unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Invalid { what: "alarm record in a version 1 or 2 snapshot", .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn version_3_snapshot_restores_with_sub_revisions_in_key_order() {
        // Revision 3 deleted "a" and "b" in one command; version 3 did not record in which
        // order, so history gives key order.
        let tombstone = |mod_revision: i64| {
            let mut w = Writer::default();
            w.u8(TAG_VERSION);
            w.i64(mod_revision);
            w.i64(0);
            w.i64(0);
            w.i64(0);
            w.bool(false);
            w.buf
        };
        let records = [
            header(3),
            key(b"a", 2),
            put_version_v3(2, 2, 1, 0),
            tombstone(3),
            key(b"b", 2),
            put_version_v3(2, 2, 1, 0),
            tombstone(3),
            end_v5(0, 2, 4, 0, 0),
        ];
        let store =
            Store::restore(Config::default(), &mut framed_as(3, &records).as_slice()).unwrap();
        let page = store.history(b"a", b"\0", 3, 3, 10).unwrap();
        let keys: Vec<_> = page.revisions[0].events.iter().map(|e| e.kv.key.clone()).collect();
        assert_eq!(keys, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        // Written again, it is a version 4 snapshot that restores to the same store.
        let mut v4 = Vec::new();
        store.write_snapshot(&mut v4).unwrap();
        assert_eq!(v4[8..12], SNAPSHOT_VERSION.to_le_bytes());
        assert_eq!(Store::restore(Config::default(), &mut v4.as_slice()).unwrap(), store);
    }

    #[test]
    fn sub_revision_above_32_bits_is_inconsistent() {
        let records = [
            header(3),
            key(b"a", 1),
            put_version_at(2, Some(u64::from(u32::MAX) + 1), 2, 1, 0),
            end(0, 1, 1),
        ];
        assert_eq!(inconsistency(&records), "sub-revision out of range");
    }

    #[test]
    fn key_without_versions_is_inconsistent() {
        assert_eq!(inconsistency(&[header(3), key(b"a", 0), end(0, 1, 0)]), "key without versions");
    }

    #[test]
    fn keys_out_of_order_are_inconsistent() {
        let records = [
            header(3),
            key(b"b", 1),
            put_version(2, 2, 1, 0),
            key(b"a", 1),
            put_version(3, 3, 1, 0),
            end(0, 2, 2),
        ];
        assert_eq!(inconsistency(&records), "keys out of order");
    }

    #[test]
    fn version_above_the_revision_is_inconsistent() {
        let records = [header(3), key(b"a", 1), put_version(4, 4, 1, 0), end(0, 1, 1)];
        assert_eq!(inconsistency(&records), "version revision out of range");
    }

    #[test]
    fn key_on_a_missing_lease_is_inconsistent() {
        let records = [header(3), key(b"a", 1), put_version(2, 2, 1, 9), end(0, 1, 1)];
        assert_eq!(inconsistency(&records), "key attached to a missing lease");
    }

    #[test]
    fn wrong_counts_are_inconsistent() {
        let records = [header(3), key(b"a", 1), put_version(2, 2, 1, 0), end(0, 1, 5)];
        assert_eq!(inconsistency(&records), "version count mismatch");
    }

    #[test]
    fn version_at_the_integer_limit_is_inconsistent() {
        let records = [header(3), key(b"a", 1), put_version(2, 2, i64::MAX, 0), end(0, 1, 1)];
        assert_eq!(inconsistency(&records), "live version out of range");
        assert_eq!(inconsistency(&[header(i64::MAX), end(0, 0, 0)]), "revision out of range");
    }

    #[test]
    fn missing_header_is_inconsistent() {
        assert_eq!(inconsistency(&[key(b"a", 1)]), "key out of place");
    }

    #[test]
    fn missing_end_record_is_truncated() {
        let records = [header(3)];
        assert!(matches!(restore(&records), Err(SnapshotError::Truncated { .. })));
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut bytes = framed(&[header(3), end(0, 0, 0)]);
        bytes[0] = b'X';
        let err = Store::restore(Config::default(), &mut bytes.as_slice()).unwrap_err();
        assert!(matches!(err, SnapshotError::BadMagic));
    }
}
