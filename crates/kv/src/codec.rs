//! The compact binary encoding of proposals, responses and snapshot records.
//!
//! Layout: a format version byte, then fields in declaration order. Unsigned integers are
//! LEB128 varints, signed ones zigzag varints, booleans one byte (0 or 1), byte strings a
//! varint length then the bytes (text, such as a member's name, is a byte string that must be
//! UTF-8), enums a tag byte then their fields, optional values a boolean then the value, lists
//! a varint count then the items. Decoding checks every length against the bytes left, rejects
//! unknown tags, non-canonical booleans, invalid UTF-8, nesting deeper than [`TXN_DEPTH_MAX`]
//! and trailing bytes, so malformed input is an error and never a panic or a huge allocation.

use bytes::Bytes;

use crate::alarm::{AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use crate::api::{
    CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, LeaseCheckpoint, LeaseCheckpointRequest,
    LeaseCheckpointResponse, LeaseExpireRequest, LeaseExpireResponse, LeaseExpiry,
    LeaseGrantRequest, LeaseGrantResponse, LeaseRefreshRequest, LeaseRefreshResponse,
    LeaseRenewRequest, LeaseRenewResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget,
    TxnRequest, TxnResponse,
};
use crate::command::{Command, Proposal, Response, SessionTag};
use crate::error::{DecodeError, Error};
use crate::members::{
    MemberAttributes, MemberError, MemberPeersAction, MemberPeersRequest, MemberPeersResponse,
    PublishMemberRequest, PublishMemberResponse, get_urls, put_urls,
};

/// The encoding version written by this build, first byte of every proposal and outcome.
///
/// Version 2 added member publications (a command, a response and an error); version 3 added
/// alarms (a command, a response and two errors); version 4 added auth (who sent a proposal,
/// the auth command, its response and errors). Older input still decodes (each version is
/// a subset of the next); a build that only knows an older version stops on a newer entry (a
/// non-deterministic error) instead of skipping a command the others apply.
pub const FORMAT_VERSION: u8 = 4;

/// The oldest encoding version this build still reads.
const FORMAT_VERSION_OLDEST: u8 = 1;

/// How deeply transactions may nest (a bound etcd lacks; it keeps decoding's recursion
/// bounded). Deeper transactions are rejected with [`Error::TooManyOps`] before proposing.
pub const TXN_DEPTH_MAX: usize = 32;

/// Appends encoded fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    pub(crate) fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
}

/// Reads encoded fields from a slice; every method fails rather than reading past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The buffer as shared bytes, when the caller has it so: see [`Reader::value`].
    shared: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, shared: None }
    }

    /// A reader over shared bytes: values that are most of them are taken as slices of them
    /// rather than copied (see [`Reader::value`]).
    pub(crate) fn shared(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0, shared: Some(buf) }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && b > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError::InvalidBool(b)),
        }
    }

    fn slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u64()?;
        if len > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        let start = self.pos;
        self.pos += len as usize;
        Ok(&self.buf[start..self.pos])
    }

    /// A byte string, copied out so that stored values do not pin the whole entry buffer.
    pub(crate) fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.slice()?))
    }

    /// A stored value. Over shared bytes, a value that is at least half of them is a slice of
    /// them, not a copy: the store then holds the value in the very allocation that the log's
    /// entry cache holds (one copy in memory instead of two), and the rest of the buffer it
    /// keeps alive is at most as large as the value. Anything smaller is copied, so a small
    /// value never pins a large entry.
    pub(crate) fn value(&mut self) -> Result<Bytes, DecodeError> {
        let s = self.slice()?;
        match self.shared {
            Some(all) if s.len() * 2 >= all.len() && !s.is_empty() => Ok(all.slice_ref(s)),
            _ => Ok(Bytes::copy_from_slice(s)),
        }
    }

    /// A byte string that must be UTF-8.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let s = std::str::from_utf8(self.slice()?).map_err(|_| DecodeError::InvalidUtf8)?;
        Ok(s.to_owned())
    }

    /// A list count, bounded by the bytes left (every item takes at least one byte).
    pub(crate) fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

fn check_version(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ FORMAT_VERSION_OLDEST..=FORMAT_VERSION => Ok(v),
        v => Err(DecodeError::UnsupportedVersion(v)),
    }
}

impl Proposal {
    /// The versioned binary encoding to put in the log.
    pub fn encode(&self) -> Bytes {
        encode_proposal(self)
    }

    /// Decodes [`Proposal::encode`]'s output; any other input is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Proposal, DecodeError> {
        decode_proposal(Reader::new(bytes))
    }

    /// As [`Proposal::decode`], but a put's value that is at least half of `bytes` is a slice
    /// of them instead of a copy. Give it bytes that are their own allocation (a log entry's
    /// payload, not a slice of a larger network or file buffer), or the values kept from it
    /// keep that larger buffer alive.
    pub fn decode_shared(bytes: &Bytes) -> Result<Proposal, DecodeError> {
        decode_proposal(Reader::shared(bytes))
    }
}

fn encode_proposal(p: &Proposal) -> Bytes {
    let mut w = Writer::default();
    w.u8(FORMAT_VERSION);
    match p.session {
        None => w.bool(false),
        Some(tag) => {
            w.bool(true);
            w.u64(tag.client_id);
            w.u64(tag.sequence);
        }
    }
    match &p.auth {
        None => w.bool(false),
        Some(info) => {
            w.bool(true);
            crate::auth::put_auth_info(&mut w, info);
        }
    }
    put_command(&mut w, &p.command);
    Bytes::from(w.buf)
}

fn decode_proposal(mut r: Reader<'_>) -> Result<Proposal, DecodeError> {
    let version = check_version(&mut r)?;
    let session =
        if r.bool()? { Some(SessionTag { client_id: r.u64()?, sequence: r.u64()? }) } else { None };
    let auth =
        if version >= 4 && r.bool()? { Some(crate::auth::get_auth_info(&mut r)?) } else { None };
    let command = get_command(&mut r)?;
    r.finish()?;
    Ok(Proposal { session, auth, command })
}

/// Encodes an apply outcome (as cached by sessions and stored in snapshots).
pub fn encode_outcome(outcome: &Result<Response, Error>) -> Bytes {
    let mut w = Writer::default();
    w.u8(FORMAT_VERSION);
    put_outcome(&mut w, outcome);
    Bytes::from(w.buf)
}

/// Decodes [`encode_outcome`]'s output; any other input is an error, never a panic.
pub fn decode_outcome(bytes: &[u8]) -> Result<Result<Response, Error>, DecodeError> {
    let mut r = Reader::new(bytes);
    check_version(&mut r)?;
    let outcome = get_outcome(&mut r)?;
    r.finish()?;
    Ok(outcome)
}

fn put_command(w: &mut Writer, c: &Command) {
    match c {
        Command::Put(p) => {
            w.u8(1);
            put_put(w, p);
        }
        Command::DeleteRange(d) => {
            w.u8(2);
            put_delete(w, d);
        }
        Command::Txn(t) => {
            w.u8(3);
            put_txn(w, t);
        }
        Command::Compact(c) => {
            w.u8(4);
            w.i64(c.revision);
            w.bool(c.physical);
        }
        Command::LeaseGrant(g) => {
            w.u8(5);
            w.i64(g.id);
            w.i64(g.ttl);
        }
        Command::LeaseRevoke(v) => {
            w.u8(6);
            w.i64(v.id);
        }
        Command::PublishMember(p) => {
            w.u8(7);
            w.u64(p.member_id);
            put_member_attributes(w, &p.attributes);
        }
        Command::Alarm(a) => {
            w.u8(8);
            w.u8(match a.action {
                AlarmAction::Get => 0,
                AlarmAction::Activate => 1,
                AlarmAction::Deactivate => 2,
            });
            w.u64(a.member_id);
            w.u8(a.alarm.map_or(0, alarm_type_tag));
        }
        Command::MemberPeers(p) => {
            w.u8(12);
            match &p.action {
                MemberPeersAction::Seed(list) => {
                    w.u8(1);
                    w.len(list.len());
                    for (id, urls) in list {
                        w.u64(*id);
                        put_urls(w, urls);
                    }
                }
                MemberPeersAction::Update { member_id, peer_urls } => {
                    w.u8(2);
                    w.u64(*member_id);
                    put_urls(w, peer_urls);
                }
            }
        }
        Command::LeaseRenew(v) => {
            w.u8(9);
            w.i64(v.id);
        }
        Command::LeaseCheckpoint(c) => {
            w.u8(10);
            w.len(c.checkpoints.len());
            for cp in &c.checkpoints {
                w.i64(cp.id);
                w.u64(cp.renewed_at);
                w.u64(cp.remaining_ms);
            }
        }
        Command::Auth(a) => {
            w.u8(13);
            crate::auth::put_auth_request(w, a);
        }
        Command::LeaseRefresh(f) => {
            w.u8(14);
            w.len(f.ids.len());
            for id in &f.ids {
                w.i64(*id);
            }
        }
        Command::LeaseExpire(e) => {
            w.u8(11);
            w.len(e.leases.len());
            for l in &e.leases {
                w.i64(l.id);
                w.u64(l.renewed_at);
            }
        }
    }
}

/// etcd's `AlarmType` numbers: `NONE` is 0.
fn alarm_type_tag(t: AlarmType) -> u8 {
    match t {
        AlarmType::NoSpace => 1,
        AlarmType::Corrupt => 2,
    }
}

fn get_alarm_type(r: &mut Reader<'_>) -> Result<Option<AlarmType>, DecodeError> {
    Ok(match r.u8()? {
        0 => None,
        1 => Some(AlarmType::NoSpace),
        2 => Some(AlarmType::Corrupt),
        tag => return Err(DecodeError::InvalidTag { what: "alarm type", tag }),
    })
}

/// One raised alarm: the member id, then the type (never `NONE`).
pub(crate) fn put_alarm_member(w: &mut Writer, m: &AlarmMember) {
    w.u64(m.member_id);
    w.u8(alarm_type_tag(m.alarm));
}

pub(crate) fn get_alarm_member(r: &mut Reader<'_>) -> Result<AlarmMember, DecodeError> {
    let member_id = r.u64()?;
    match get_alarm_type(r)? {
        Some(alarm) => Ok(AlarmMember { member_id, alarm }),
        None => Err(DecodeError::InvalidTag { what: "alarm type", tag: 0 }),
    }
}

/// A member's attributes: the name, then the client URLs as a list of strings.
pub(crate) fn put_member_attributes(w: &mut Writer, a: &MemberAttributes) {
    w.bytes(a.name.as_bytes());
    w.len(a.client_urls.len());
    for url in &a.client_urls {
        w.bytes(url.as_bytes());
    }
}

pub(crate) fn get_member_attributes(r: &mut Reader<'_>) -> Result<MemberAttributes, DecodeError> {
    let name = r.string()?;
    let n = r.count()?;
    let mut client_urls = Vec::with_capacity(n);
    for _ in 0..n {
        client_urls.push(r.string()?);
    }
    Ok(MemberAttributes { name, client_urls })
}

fn get_command(r: &mut Reader<'_>) -> Result<Command, DecodeError> {
    Ok(match r.u8()? {
        1 => Command::Put(get_put(r)?),
        2 => Command::DeleteRange(get_delete(r)?),
        3 => Command::Txn(get_txn(r, 1)?),
        4 => Command::Compact(CompactionRequest { revision: r.i64()?, physical: r.bool()? }),
        5 => Command::LeaseGrant(LeaseGrantRequest { id: r.i64()?, ttl: r.i64()? }),
        6 => Command::LeaseRevoke(LeaseRevokeRequest { id: r.i64()? }),
        7 => Command::PublishMember(PublishMemberRequest {
            member_id: r.u64()?,
            attributes: get_member_attributes(r)?,
        }),
        8 => Command::Alarm(AlarmRequest {
            action: match r.u8()? {
                0 => AlarmAction::Get,
                1 => AlarmAction::Activate,
                2 => AlarmAction::Deactivate,
                tag => return Err(DecodeError::InvalidTag { what: "alarm action", tag }),
            },
            member_id: r.u64()?,
            alarm: get_alarm_type(r)?,
        }),
        9 => Command::LeaseRenew(LeaseRenewRequest { id: r.i64()? }),
        13 => Command::Auth(crate::auth::get_auth_request(r)?),
        12 => Command::MemberPeers(MemberPeersRequest {
            action: match r.u8()? {
                1 => {
                    let n = r.count()?;
                    let mut list = Vec::with_capacity(n);
                    for _ in 0..n {
                        list.push((r.u64()?, get_urls(r)?));
                    }
                    MemberPeersAction::Seed(list)
                }
                2 => MemberPeersAction::Update { member_id: r.u64()?, peer_urls: get_urls(r)? },
                tag => return Err(DecodeError::InvalidTag { what: "member peers action", tag }),
            },
        }),
        10 => {
            let n = r.count()?;
            let mut checkpoints = Vec::with_capacity(n);
            for _ in 0..n {
                checkpoints.push(LeaseCheckpoint {
                    id: r.i64()?,
                    renewed_at: r.u64()?,
                    remaining_ms: r.u64()?,
                });
            }
            Command::LeaseCheckpoint(LeaseCheckpointRequest { checkpoints })
        }
        11 => {
            let n = r.count()?;
            let mut leases = Vec::with_capacity(n);
            for _ in 0..n {
                leases.push(LeaseExpiry { id: r.i64()?, renewed_at: r.u64()? });
            }
            Command::LeaseExpire(LeaseExpireRequest { leases })
        }
        14 => {
            let n = r.count()?;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(r.i64()?);
            }
            Command::LeaseRefresh(LeaseRefreshRequest { ids })
        }
        tag => return Err(DecodeError::InvalidTag { what: "command", tag }),
    })
}

fn put_range(w: &mut Writer, q: &RangeRequest) {
    w.bytes(&q.key);
    w.bytes(&q.range_end);
    w.i64(q.limit);
    w.i64(q.revision);
    w.u8(match q.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    w.u8(match q.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    });
    w.bool(q.keys_only);
    w.bool(q.count_only);
    w.i64(q.min_mod_revision);
    w.i64(q.max_mod_revision);
    w.i64(q.min_create_revision);
    w.i64(q.max_create_revision);
}

fn get_range(r: &mut Reader<'_>) -> Result<RangeRequest, DecodeError> {
    Ok(RangeRequest {
        key: r.bytes()?,
        range_end: r.bytes()?,
        limit: r.i64()?,
        revision: r.i64()?,
        sort_order: match r.u8()? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            2 => SortOrder::Descend,
            tag => {
                return Err(DecodeError::InvalidTag { what: "sort order", tag });
            }
        },
        sort_target: match r.u8()? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            4 => SortTarget::Value,
            tag => {
                return Err(DecodeError::InvalidTag { what: "sort target", tag });
            }
        },
        keys_only: r.bool()?,
        count_only: r.bool()?,
        min_mod_revision: r.i64()?,
        max_mod_revision: r.i64()?,
        min_create_revision: r.i64()?,
        max_create_revision: r.i64()?,
    })
}

fn put_put(w: &mut Writer, p: &PutRequest) {
    w.bytes(&p.key);
    w.bytes(&p.value);
    w.i64(p.lease);
    w.bool(p.prev_kv);
    w.bool(p.ignore_value);
    w.bool(p.ignore_lease);
}

fn get_put(r: &mut Reader<'_>) -> Result<PutRequest, DecodeError> {
    Ok(PutRequest {
        key: r.bytes()?,
        value: r.value()?,
        lease: r.i64()?,
        prev_kv: r.bool()?,
        ignore_value: r.bool()?,
        ignore_lease: r.bool()?,
    })
}

fn put_delete(w: &mut Writer, d: &DeleteRangeRequest) {
    w.bytes(&d.key);
    w.bytes(&d.range_end);
    w.bool(d.prev_kv);
}

fn get_delete(r: &mut Reader<'_>) -> Result<DeleteRangeRequest, DecodeError> {
    Ok(DeleteRangeRequest { key: r.bytes()?, range_end: r.bytes()?, prev_kv: r.bool()? })
}

fn put_compare(w: &mut Writer, c: &Compare) {
    w.bytes(&c.key);
    w.bytes(&c.range_end);
    w.u8(match c.result {
        CompareResult::Equal => 0,
        CompareResult::Greater => 1,
        CompareResult::Less => 2,
        CompareResult::NotEqual => 3,
    });
    match &c.target {
        CompareTarget::Version(v) => {
            w.u8(0);
            w.i64(*v);
        }
        CompareTarget::CreateRevision(v) => {
            w.u8(1);
            w.i64(*v);
        }
        CompareTarget::ModRevision(v) => {
            w.u8(2);
            w.i64(*v);
        }
        CompareTarget::Value(v) => {
            w.u8(3);
            w.bytes(v);
        }
        CompareTarget::Lease(v) => {
            w.u8(4);
            w.i64(*v);
        }
    }
}

fn get_compare(r: &mut Reader<'_>) -> Result<Compare, DecodeError> {
    let key = r.bytes()?;
    let range_end = r.bytes()?;
    let result = match r.u8()? {
        0 => CompareResult::Equal,
        1 => CompareResult::Greater,
        2 => CompareResult::Less,
        3 => CompareResult::NotEqual,
        tag => {
            return Err(DecodeError::InvalidTag { what: "compare result", tag });
        }
    };
    let target = match r.u8()? {
        0 => CompareTarget::Version(r.i64()?),
        1 => CompareTarget::CreateRevision(r.i64()?),
        2 => CompareTarget::ModRevision(r.i64()?),
        3 => CompareTarget::Value(r.bytes()?),
        4 => CompareTarget::Lease(r.i64()?),
        tag => {
            return Err(DecodeError::InvalidTag { what: "compare target", tag });
        }
    };
    Ok(Compare { key, range_end, result, target })
}

fn put_txn(w: &mut Writer, t: &TxnRequest) {
    w.len(t.compare.len());
    for c in &t.compare {
        put_compare(w, c);
    }
    for branch in [&t.success, &t.failure] {
        w.len(branch.len());
        for op in branch {
            match op {
                RequestOp::Range(q) => {
                    w.u8(1);
                    put_range(w, q);
                }
                RequestOp::Put(p) => {
                    w.u8(2);
                    put_put(w, p);
                }
                RequestOp::DeleteRange(d) => {
                    w.u8(3);
                    put_delete(w, d);
                }
                RequestOp::Txn(t) => {
                    w.u8(4);
                    put_txn(w, t);
                }
            }
        }
    }
}

fn get_txn(r: &mut Reader<'_>, depth: usize) -> Result<TxnRequest, DecodeError> {
    if depth > TXN_DEPTH_MAX {
        return Err(DecodeError::TooDeep);
    }
    let n = r.count()?;
    let mut compare = Vec::with_capacity(n);
    for _ in 0..n {
        compare.push(get_compare(r)?);
    }
    let mut branches = [Vec::new(), Vec::new()];
    for branch in &mut branches {
        let n = r.count()?;
        branch.reserve(n);
        for _ in 0..n {
            branch.push(match r.u8()? {
                1 => RequestOp::Range(get_range(r)?),
                2 => RequestOp::Put(get_put(r)?),
                3 => RequestOp::DeleteRange(get_delete(r)?),
                4 => RequestOp::Txn(get_txn(r, depth + 1)?),
                tag => {
                    return Err(DecodeError::InvalidTag { what: "request op", tag });
                }
            });
        }
    }
    let [success, failure] = branches;
    Ok(TxnRequest { compare, success, failure })
}

pub(crate) fn put_kv(w: &mut Writer, kv: &KeyValue) {
    w.bytes(&kv.key);
    w.i64(kv.create_revision);
    w.i64(kv.mod_revision);
    w.i64(kv.version);
    w.bytes(&kv.value);
    w.i64(kv.lease);
}

pub(crate) fn get_kv(r: &mut Reader<'_>) -> Result<KeyValue, DecodeError> {
    Ok(KeyValue {
        key: r.bytes()?,
        create_revision: r.i64()?,
        mod_revision: r.i64()?,
        version: r.i64()?,
        value: r.bytes()?,
        lease: r.i64()?,
    })
}

fn put_kvs(w: &mut Writer, kvs: &[KeyValue]) {
    w.len(kvs.len());
    for kv in kvs {
        put_kv(w, kv);
    }
}

fn get_kvs(r: &mut Reader<'_>) -> Result<Vec<KeyValue>, DecodeError> {
    let n = r.count()?;
    let mut kvs = Vec::with_capacity(n);
    for _ in 0..n {
        kvs.push(get_kv(r)?);
    }
    Ok(kvs)
}

fn put_opt_kv(w: &mut Writer, kv: &Option<KeyValue>) {
    match kv {
        None => w.bool(false),
        Some(kv) => {
            w.bool(true);
            put_kv(w, kv);
        }
    }
}

fn get_opt_kv(r: &mut Reader<'_>) -> Result<Option<KeyValue>, DecodeError> {
    Ok(if r.bool()? { Some(get_kv(r)?) } else { None })
}

fn put_range_response(w: &mut Writer, q: &RangeResponse) {
    w.i64(q.revision);
    put_kvs(w, &q.kvs);
    w.bool(q.more);
    w.i64(q.count);
}

fn get_range_response(r: &mut Reader<'_>) -> Result<RangeResponse, DecodeError> {
    Ok(RangeResponse { revision: r.i64()?, kvs: get_kvs(r)?, more: r.bool()?, count: r.i64()? })
}

fn put_put_response(w: &mut Writer, p: &PutResponse) {
    w.i64(p.revision);
    put_opt_kv(w, &p.prev_kv);
}

fn get_put_response(r: &mut Reader<'_>) -> Result<PutResponse, DecodeError> {
    Ok(PutResponse { revision: r.i64()?, prev_kv: get_opt_kv(r)? })
}

fn put_delete_response(w: &mut Writer, d: &DeleteRangeResponse) {
    w.i64(d.revision);
    w.i64(d.deleted);
    put_kvs(w, &d.prev_kvs);
}

fn get_delete_response(r: &mut Reader<'_>) -> Result<DeleteRangeResponse, DecodeError> {
    Ok(DeleteRangeResponse { revision: r.i64()?, deleted: r.i64()?, prev_kvs: get_kvs(r)? })
}

fn put_txn_response(w: &mut Writer, t: &TxnResponse) {
    w.i64(t.revision);
    w.bool(t.succeeded);
    w.len(t.responses.len());
    for op in &t.responses {
        match op {
            ResponseOp::Range(q) => {
                w.u8(1);
                put_range_response(w, q);
            }
            ResponseOp::Put(p) => {
                w.u8(2);
                put_put_response(w, p);
            }
            ResponseOp::DeleteRange(d) => {
                w.u8(3);
                put_delete_response(w, d);
            }
            ResponseOp::Txn(t) => {
                w.u8(4);
                put_txn_response(w, t);
            }
        }
    }
}

fn get_txn_response(r: &mut Reader<'_>, depth: usize) -> Result<TxnResponse, DecodeError> {
    if depth > TXN_DEPTH_MAX {
        return Err(DecodeError::TooDeep);
    }
    let revision = r.i64()?;
    let succeeded = r.bool()?;
    let n = r.count()?;
    let mut responses = Vec::with_capacity(n);
    for _ in 0..n {
        responses.push(match r.u8()? {
            1 => ResponseOp::Range(get_range_response(r)?),
            2 => ResponseOp::Put(get_put_response(r)?),
            3 => ResponseOp::DeleteRange(get_delete_response(r)?),
            4 => ResponseOp::Txn(get_txn_response(r, depth + 1)?),
            tag => {
                return Err(DecodeError::InvalidTag { what: "response op", tag });
            }
        });
    }
    Ok(TxnResponse { revision, succeeded, responses })
}

pub(crate) fn put_outcome(w: &mut Writer, outcome: &Result<Response, Error>) {
    match outcome {
        Ok(response) => {
            w.u8(0);
            match response {
                Response::Put(p) => {
                    w.u8(1);
                    put_put_response(w, p);
                }
                Response::DeleteRange(d) => {
                    w.u8(2);
                    put_delete_response(w, d);
                }
                Response::Txn(t) => {
                    w.u8(3);
                    put_txn_response(w, t);
                }
                Response::Compact(c) => {
                    w.u8(4);
                    w.i64(c.revision);
                }
                Response::LeaseGrant(g) => {
                    w.u8(5);
                    w.i64(g.revision);
                    w.i64(g.id);
                    w.i64(g.ttl);
                }
                Response::LeaseRevoke(v) => {
                    w.u8(6);
                    w.i64(v.revision);
                }
                Response::PublishMember(p) => {
                    w.u8(7);
                    w.i64(p.revision);
                }
                Response::Alarm(a) => {
                    w.u8(8);
                    w.i64(a.revision);
                    w.len(a.alarms.len());
                    for m in &a.alarms {
                        put_alarm_member(w, m);
                    }
                }
                Response::LeaseRenew(v) => {
                    w.u8(9);
                    w.i64(v.revision);
                    w.i64(v.id);
                    w.i64(v.ttl);
                }
                Response::MemberPeers(p) => {
                    w.u8(12);
                    w.i64(p.revision);
                }
                Response::Auth(a) => {
                    w.u8(13);
                    w.i64(a.revision);
                    w.u64(a.auth_revision);
                }
                Response::LeaseCheckpoint(c) => {
                    w.u8(10);
                    w.i64(c.revision);
                }
                Response::LeaseRefresh(f) => {
                    w.u8(14);
                    w.i64(f.revision);
                }
                Response::LeaseExpire(e) => {
                    w.u8(11);
                    w.i64(e.revision);
                    w.len(e.revoked.len());
                    for id in &e.revoked {
                        w.i64(*id);
                    }
                }
            }
        }
        Err(e) => {
            w.u8(1);
            put_error(w, e);
        }
    }
}

pub(crate) fn get_outcome(r: &mut Reader<'_>) -> Result<Result<Response, Error>, DecodeError> {
    match r.u8()? {
        0 => Ok(Ok(match r.u8()? {
            1 => Response::Put(get_put_response(r)?),
            2 => Response::DeleteRange(get_delete_response(r)?),
            3 => Response::Txn(get_txn_response(r, 1)?),
            4 => Response::Compact(CompactionResponse { revision: r.i64()? }),
            5 => Response::LeaseGrant(LeaseGrantResponse {
                revision: r.i64()?,
                id: r.i64()?,
                ttl: r.i64()?,
            }),
            6 => Response::LeaseRevoke(LeaseRevokeResponse { revision: r.i64()? }),
            7 => Response::PublishMember(PublishMemberResponse { revision: r.i64()? }),
            8 => {
                let revision = r.i64()?;
                let n = r.count()?;
                let mut alarms = Vec::with_capacity(n);
                for _ in 0..n {
                    alarms.push(get_alarm_member(r)?);
                }
                Response::Alarm(AlarmResponse { revision, alarms })
            }
            9 => Response::LeaseRenew(LeaseRenewResponse {
                revision: r.i64()?,
                id: r.i64()?,
                ttl: r.i64()?,
            }),
            10 => Response::LeaseCheckpoint(LeaseCheckpointResponse { revision: r.i64()? }),
            14 => Response::LeaseRefresh(LeaseRefreshResponse { revision: r.i64()? }),
            12 => Response::MemberPeers(MemberPeersResponse { revision: r.i64()? }),
            13 => Response::Auth(crate::auth::AuthResponse {
                revision: r.i64()?,
                auth_revision: r.u64()?,
            }),
            11 => {
                let revision = r.i64()?;
                let n = r.count()?;
                let mut revoked = Vec::with_capacity(n);
                for _ in 0..n {
                    revoked.push(r.i64()?);
                }
                Response::LeaseExpire(LeaseExpireResponse { revision, revoked })
            }
            tag => {
                return Err(DecodeError::InvalidTag { what: "response", tag });
            }
        })),
        1 => Ok(Err(get_error(r)?)),
        tag => Err(DecodeError::InvalidTag { what: "outcome", tag }),
    }
}

fn put_error(w: &mut Writer, e: &Error) {
    let tag = match e {
        Error::Compacted => 1,
        Error::FutureRevision => 2,
        Error::EmptyKey => 3,
        Error::KeyNotFound => 4,
        Error::ValueProvided => 5,
        Error::LeaseProvided => 6,
        Error::TooManyOps => 7,
        Error::DuplicateKey => 8,
        Error::RequestTooLarge => 9,
        Error::LeaseNotFound => 10,
        Error::LeaseExists => 11,
        Error::LeaseTtlTooLarge => 12,
        Error::StaleSequence => 13,
        Error::SessionExpired => 14,
        Error::NoSpace => 18,
        Error::Corrupt => 19,
        Error::Auth(a) => {
            w.u8(20);
            w.u8(crate::auth::auth_error_tag(*a));
            return;
        }
        Error::Decode(d) => {
            w.u8(15);
            put_decode_error(w, d);
            return;
        }
        Error::OutOfOrder { index, applied_index } => {
            w.u8(16);
            w.u64(*index);
            w.u64(*applied_index);
            return;
        }
        Error::InvalidMember(m) => {
            w.u8(17);
            w.u8(match m {
                MemberError::IdZero => 1,
                MemberError::NameTooLong => 2,
                MemberError::TooManyClientUrls => 3,
                MemberError::ClientUrlTooLong => 4,
                MemberError::BadPeerUrls => 5,
                MemberError::NotFound => 6,
                MemberError::IdExists => 7,
                MemberError::IdRemoved => 8,
                MemberError::PeerUrlExists => 9,
                MemberError::SeedTooLarge => 10,
            });
            return;
        }
    };
    w.u8(tag);
}

fn get_error(r: &mut Reader<'_>) -> Result<Error, DecodeError> {
    Ok(match r.u8()? {
        1 => Error::Compacted,
        2 => Error::FutureRevision,
        3 => Error::EmptyKey,
        4 => Error::KeyNotFound,
        5 => Error::ValueProvided,
        6 => Error::LeaseProvided,
        7 => Error::TooManyOps,
        8 => Error::DuplicateKey,
        9 => Error::RequestTooLarge,
        10 => Error::LeaseNotFound,
        11 => Error::LeaseExists,
        12 => Error::LeaseTtlTooLarge,
        13 => Error::StaleSequence,
        14 => Error::SessionExpired,
        15 => Error::Decode(get_decode_error(r)?),
        16 => Error::OutOfOrder { index: r.u64()?, applied_index: r.u64()? },
        17 => Error::InvalidMember(match r.u8()? {
            1 => MemberError::IdZero,
            2 => MemberError::NameTooLong,
            3 => MemberError::TooManyClientUrls,
            4 => MemberError::ClientUrlTooLong,
            5 => MemberError::BadPeerUrls,
            6 => MemberError::NotFound,
            7 => MemberError::IdExists,
            8 => MemberError::IdRemoved,
            9 => MemberError::PeerUrlExists,
            10 => MemberError::SeedTooLarge,
            tag => return Err(DecodeError::InvalidTag { what: "error", tag }),
        }),
        18 => Error::NoSpace,
        19 => Error::Corrupt,
        20 => Error::Auth(crate::auth::auth_error_from_tag(r.u8()?)?),
        tag => return Err(DecodeError::InvalidTag { what: "error", tag }),
    })
}

/// The `what` strings a decoded [`DecodeError::InvalidTag`] may carry; an unknown one is
/// mapped to "value" so that decoding never needs to allocate a `&'static str`.
const TAG_KINDS: [&str; 17] = [
    "value",
    "command",
    "sort order",
    "sort target",
    "compare result",
    "compare target",
    "request op",
    "response op",
    "response",
    "outcome",
    "error",
    "snapshot record",
    "alarm action",
    "alarm type",
    "auth request",
    "auth error",
    "permission type",
];

fn put_decode_error(w: &mut Writer, d: &DecodeError) {
    match d {
        DecodeError::Truncated => w.u8(1),
        DecodeError::VarintOverflow => w.u8(2),
        DecodeError::InvalidTag { what, tag } => {
            w.u8(3);
            let kind = TAG_KINDS.iter().position(|k| k == what).unwrap_or(0);
            w.u8(kind as u8);
            w.u8(*tag);
        }
        DecodeError::InvalidBool(b) => {
            w.u8(4);
            w.u8(*b);
        }
        DecodeError::TrailingBytes(n) => {
            w.u8(5);
            w.u64(*n as u64);
        }
        DecodeError::TooDeep => w.u8(6),
        DecodeError::UnsupportedVersion(v) => {
            w.u8(7);
            w.u8(*v);
        }
        DecodeError::InvalidUtf8 => w.u8(8),
    }
}

fn get_decode_error(r: &mut Reader<'_>) -> Result<DecodeError, DecodeError> {
    Ok(match r.u8()? {
        1 => DecodeError::Truncated,
        2 => DecodeError::VarintOverflow,
        3 => {
            let kind = r.u8()?;
            DecodeError::InvalidTag {
                what: TAG_KINDS.get(usize::from(kind)).copied().unwrap_or("value"),
                tag: r.u8()?,
            }
        }
        4 => DecodeError::InvalidBool(r.u8()?),
        5 => DecodeError::TrailingBytes(usize::try_from(r.u64()?).unwrap_or(usize::MAX)),
        6 => DecodeError::TooDeep,
        7 => DecodeError::UnsupportedVersion(r.u8()?),
        8 => DecodeError::InvalidUtf8,
        tag => {
            return Err(DecodeError::InvalidTag { what: "error", tag });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX / 2, u64::MAX] {
            let mut w = Writer::default();
            w.u64(v);
            let mut r = Reader::new(&w.buf);
            assert_eq!(r.u64(), Ok(v));
            r.finish().unwrap();
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut w = Writer::default();
            w.i64(v);
            assert_eq!(Reader::new(&w.buf).i64(), Ok(v));
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let bytes = [0xffu8; 11];
        assert_eq!(Reader::new(&bytes).u64(), Err(DecodeError::VarintOverflow));
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert_eq!(Reader::new(&ten).u64(), Err(DecodeError::VarintOverflow));
    }

    #[test]
    fn length_beyond_input_is_truncated_not_an_allocation() {
        let mut w = Writer::default();
        w.u64(u64::MAX);
        assert_eq!(Reader::new(&w.buf).bytes(), Err(DecodeError::Truncated));
        assert_eq!(Reader::new(&w.buf).count(), Err(DecodeError::Truncated));
    }

    #[test]
    fn unknown_version_is_rejected() {
        let mut bytes =
            encode_proposal(&Proposal::new(Command::LeaseRevoke(LeaseRevokeRequest { id: 1 })))
                .to_vec();
        bytes[0] = 9;
        assert_eq!(Proposal::decode(&bytes), Err(DecodeError::UnsupportedVersion(9)));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes =
            encode_proposal(&Proposal::new(Command::LeaseRevoke(LeaseRevokeRequest { id: 1 })))
                .to_vec();
        bytes.push(0);
        assert_eq!(Proposal::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn nesting_beyond_the_bound_is_rejected() {
        let mut txn = TxnRequest::default();
        // `txn` starts as one level; wrap it up to exactly the bound.
        for _ in 1..TXN_DEPTH_MAX {
            txn = TxnRequest { success: vec![RequestOp::Txn(txn)], ..Default::default() };
        }
        let ok = encode_proposal(&Proposal::new(Command::Txn(txn.clone())));
        assert!(Proposal::decode(&ok).is_ok());
        let deeper = TxnRequest { success: vec![RequestOp::Txn(txn)], ..Default::default() };
        let bad = encode_proposal(&Proposal::new(Command::Txn(deeper)));
        assert_eq!(Proposal::decode(&bad), Err(DecodeError::TooDeep));
    }
}
