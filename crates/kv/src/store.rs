//! The state machine: applies committed entries and answers reads.

use std::cmp::Ordering;

use std::sync::Arc;

use crate::alarm::{AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType, Alarms};
use crate::api::{
    CompactionRequest, CompactionResponse, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, DeleteRangeResponse, KeyValue, LeaseCheckpointRequest,
    LeaseCheckpointResponse, LeaseExpireRequest, LeaseExpireResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRefreshRequest, LeaseRefreshResponse, LeaseRenewRequest,
    LeaseRenewResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, TxnRequest,
    TxnResponse,
};
use crate::auth::{AuthInfo, AuthRequest, AuthResponse, AuthState, PermissionKind};
use crate::command::{Command, Proposal, Response};
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::event::{Event, EventBuffer, EventKind, HistoryError, HistoryPage, RevisionEvents};
use crate::lease::{self, Lease, LeaseChange, Leases};
use crate::members::{
    MemberAttributes, MemberChange, MemberError, MemberPeersRequest, MemberPeersResponse, Members,
    PublishMemberRequest, PublishMemberResponse,
};
use crate::mvcc::{Index, KeyRange, tombstone_kv};
use crate::session::{Check, Sessions};
use crate::validate::{check_range, validate_command};

/// The revision of a store that has applied no write (etcd starts at 1 too, so the first
/// write is revision 2).
pub const INITIAL_REVISION: i64 = 1;

/// The replicated key-value state machine.
///
/// Feed it committed entries in log order with [`Store::apply`]; read it with
/// [`Store::range`]. Two stores that applied the same entries are equal (`==`), answer every
/// read identically and write identical snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub(crate) config: Config,
    pub(crate) index: Index,
    /// The current revision. Invariant: `>= INITIAL_REVISION` and `>=` every stored
    /// `mod_revision`; it grows by one per command that changes a key.
    pub(crate) revision: i64,
    /// The last compaction's revision. Invariant: `<= revision`.
    pub(crate) compacted: Option<i64>,
    pub(crate) leases: Leases,
    pub(crate) sessions: Sessions,
    /// Published member attributes (not keys: they never move the revision).
    pub(crate) members: Members,
    /// Raised alarms (not keys either: they never move the revision).
    pub(crate) alarms: Alarms,
    /// Users, roles and whether auth is on (not keys: they never move the revision). Shared
    /// so that the server can hold the current state without copying it.
    pub(crate) auth: Arc<AuthState>,
    /// Index of the last entry passed to `apply` (0 before the first).
    pub(crate) applied_index: u64,
    /// Highest log time seen; log time never goes back even if an entry carries a lower one.
    pub(crate) log_time_ms: u64,
    /// Events of the entries applied since the last [`Store::take_events`]. Not part of the
    /// state: ignored by `==`, not copied by `clone`, not in snapshots.
    pub(crate) events: EventBuffer,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(Config::default()).expect("the default config is valid")
    }
}

impl Store {
    /// An empty store at revision [`INITIAL_REVISION`].
    pub fn new(config: Config) -> Result<Store, ConfigError> {
        config.validate()?;
        Ok(Store {
            config,
            index: Index::default(),
            revision: INITIAL_REVISION,
            compacted: None,
            leases: Leases::default(),
            sessions: Sessions::default(),
            members: Members::default(),
            alarms: Alarms::default(),
            auth: Arc::new(AuthState::default()),
            applied_index: 0,
            log_time_ms: 0,
            events: EventBuffer::default(),
        })
    }

    /// The store's limits.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision of the last compaction, if any.
    pub fn compact_revision(&self) -> Option<i64> {
        self.compacted
    }

    /// Index of the last applied entry (0 if none).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// The highest log time applied.
    pub fn log_time_ms(&self) -> u64 {
        self.log_time_ms
    }

    /// Number of keys with stored history (live keys plus deleted ones not yet compacted).
    pub fn key_count(&self) -> usize {
        self.index.key_count()
    }

    /// A granted lease.
    pub fn lease(&self, id: i64) -> Option<&Lease> {
        self.leases.get(id)
    }

    /// All granted leases, by id.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.by_id.values()
    }

    /// Number of client sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The attributes `member_id` last published, if it has published any.
    pub fn member(&self, member_id: u64) -> Option<&MemberAttributes> {
        self.members.get(member_id)
    }

    /// Every published member's attributes, by member id.
    pub fn members(&self) -> impl Iterator<Item = (u64, &MemberAttributes)> {
        self.members.by_id.iter().map(|(id, a)| (*id, a))
    }

    /// Number of members that have published attributes.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// `member_id`'s peer URLs, if the table has them (see [`crate::members`]).
    pub fn member_peer_urls(&self, member_id: u64) -> Option<&[String]> {
        self.members.peers.get(&member_id).map(Vec::as_slice)
    }

    /// Every member's peer URLs that the table has, by member id.
    pub fn member_peers(&self) -> impl Iterator<Item = (u64, &[String])> {
        self.members.peers.iter().map(|(id, urls)| (*id, urls.as_slice()))
    }

    /// Whether `member_id` was removed from the cluster (it can never come back).
    pub fn is_member_removed(&self, member_id: u64) -> bool {
        self.members.removed.contains(&member_id)
    }

    /// The removed members' ids.
    pub fn removed_members(&self) -> impl Iterator<Item = u64> + '_ {
        self.members.removed.iter().copied()
    }

    /// Checks what a configuration change would do to the member table before it is proposed:
    /// an added member's id must be new and never removed, its peer URLs valid and not another
    /// member's; no change may name a removed id. (Whether the change suits the Raft
    /// configuration is the core's to check.)
    pub fn check_member_change(&self, change: &MemberChange) -> Result<(), MemberError> {
        crate::members::check_change(&self.members, change)
    }

    /// Applies the member-table part of a Raft configuration entry at `index`: `context` is a
    /// [`MemberChange::encode`]. The configuration itself took effect when the entry was
    /// appended, so the table follows it whatever it holds; undecodable bytes change nothing
    /// but still count as applied (every replica sees the same bytes), and answer an error.
    /// Like [`Store::apply`], `index` must grow; a lower one is a non-deterministic error.
    pub fn apply_member_change(
        &mut self,
        index: u64,
        log_time_ms: u64,
        context: &[u8],
    ) -> Result<MemberChange, Error> {
        self.check_index(index)?;
        self.advance(index, log_time_ms);
        let change = MemberChange::decode(context).map_err(Error::Decode)?;
        self.members.apply_change(change.clone());
        Ok(change)
    }

    /// Empties the member table, for a store restored from a backup into a new cluster
    /// (`tenure snapshot restore`): the old cluster's members are not the new one's, and the
    /// new members publish themselves when they start (etcd's restore drops the old members
    /// too).
    pub fn forget_members(&mut self) {
        self.members = Members::default();
    }

    /// The raised alarms, sorted by member then type.
    pub fn alarms(&self) -> impl Iterator<Item = AlarmMember> + '_ {
        self.alarms.raised.iter().copied()
    }

    /// The auth state as of the last applied entry. The `Arc` changes (and only then) when an
    /// entry changes it, so a reader can tell a change by pointer.
    pub fn auth(&self) -> &Arc<AuthState> {
        &self.auth
    }

    /// The checks that need no state (empty keys, flags, txn size and duplicate keys), for the
    /// server to run before proposing, as etcd does. `apply` repeats them.
    pub fn validate(&self, command: &Command) -> Result<(), Error> {
        validate_command(command, &self.config)
    }

    /// Applies the committed entry at `index`, stamped with `log_time_ms` by its proposer.
    ///
    /// `index` must grow from call to call (gaps are fine: the replica skips entries that are
    /// not for the state machine). A deterministic error is the entry's answer: the entry
    /// counts as applied (the applied index and log time advance) and the keys, leases and
    /// sessions are as before. A non-deterministic error leaves the store untouched and means
    /// this replica must stop.
    pub fn apply(&mut self, index: u64, log_time_ms: u64, entry: &[u8]) -> Result<Response, Error> {
        self.apply_with(index, log_time_ms, entry.len(), || Proposal::decode(entry))
    }

    /// As [`Store::apply`], but a put's value that is at least half of `entry` is kept as a
    /// slice of it rather than a copy, so the value and the log's cached entry share one
    /// allocation. `entry` should be its own allocation (as the log's entries are), not a
    /// slice of a larger buffer, which the kept values would keep alive.
    pub fn apply_shared(
        &mut self,
        index: u64,
        log_time_ms: u64,
        entry: &bytes::Bytes,
    ) -> Result<Response, Error> {
        self.apply_with(index, log_time_ms, entry.len(), || Proposal::decode_shared(entry))
    }

    fn apply_with(
        &mut self,
        index: u64,
        log_time_ms: u64,
        len: usize,
        decode: impl FnOnce() -> Result<Proposal, crate::error::DecodeError>,
    ) -> Result<Response, Error> {
        self.check_index(index)?;
        let decoded = if len > self.config.request_bytes_max {
            Err(Error::RequestTooLarge)
        } else {
            decode().map_err(Error::from)
        };
        if let Err(e) = &decoded
            && !e.is_deterministic()
        {
            return Err(e.clone());
        }
        self.advance(index, log_time_ms);
        self.apply_decoded(decoded?)
    }

    /// A read at the current revision (or `request.revision`) that does not go through the
    /// log. For a linearizable read, call it once the store has applied up to the read index
    /// (dissertation §6.4); for a serializable one, call it at any time.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Error> {
        check_range(request)?;
        range_at(&self.index, self.compacted, request, self.revision)
    }

    /// The events of every entry applied since the last call, one [`RevisionEvents`] per
    /// revision that changed keys, in revision order (revisions that changed no key, such as
    /// a lease grant or a compaction, yield none).
    ///
    /// Events pile up until taken: whoever applies entries must call this regularly (the
    /// replica does after every entry). A clone of the store starts with none.
    pub fn take_events(&mut self) -> Vec<RevisionEvents> {
        std::mem::take(&mut self.events.revisions)
    }

    /// A read-only view of the store as it is now, for reads served off the thread that
    /// applies: O(1) to take (the index is a persistent map; the view shares its nodes and a
    /// later write copies only the nodes on its path), and it answers every
    /// [`Store::range`] exactly as the store would at this point.
    pub fn read_view(&self) -> ReadView {
        ReadView {
            index: self.index.clone(),
            compacted: self.compacted,
            revision: self.revision,
            applied_index: self.applied_index,
        }
    }

    /// What the entries applied since the last call did to leases' deadlines, in order: the
    /// replica measures each lease's deadline on its own clock from the moment it applies the
    /// entry that set it. Like events, changes pile up until taken (a clone starts with none).
    pub fn take_lease_changes(&mut self) -> Vec<LeaseChange> {
        std::mem::take(&mut self.events.lease_changes)
    }

    /// History for a watcher catching up: the events with `from <= revision <= to` on keys
    /// in etcd's range `(key, range_end)` (`range_end` empty: the single key; `"\0"`: every key
    /// `>= key`; otherwise `[key, range_end)`), in revision then operation order, the same
    /// events [`Store::take_events`] handed out for those revisions.
    ///
    /// A page holds at most about `max_events` events: a revision is never cut, and at least
    /// one revision is returned if there is any, so a page exceeds `max_events` only when its
    /// one revision does. [`HistoryPage::next`] says where to continue.
    ///
    /// `from <= compact_revision` is [`HistoryError::Compacted`] (etcd cancels the watch with
    /// that `compact_revision`); any `from` above it gets every event. Reads only the
    /// persistent index, so it is safe to call on a clone of the store on another thread while
    /// the original applies on. Cost: one pass over the keys of the range per page (see the
    /// index's `history`), independent of the replica thread.
    pub fn history(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        to: i64,
        max_events: usize,
    ) -> Result<HistoryPage, HistoryError> {
        if let Some(compact_revision) = self.compacted
            && from <= compact_revision
        {
            return Err(HistoryError::Compacted { compact_revision });
        }
        let range = KeyRange::new(
            &bytes::Bytes::copy_from_slice(key),
            &bytes::Bytes::copy_from_slice(range_end),
        );
        let (revisions, next) = self.index.history(&range, from, to, max_events);
        Ok(HistoryPage { revisions, next })
    }

    fn check_index(&self, index: u64) -> Result<(), Error> {
        if index <= self.applied_index {
            return Err(Error::OutOfOrder { index, applied_index: self.applied_index });
        }
        Ok(())
    }

    fn advance(&mut self, index: u64, log_time_ms: u64) {
        self.applied_index = index;
        self.log_time_ms = self.log_time_ms.max(log_time_ms);
        self.sessions.expire(self.log_time_ms, self.config.session_idle_ms_max);
    }

    fn apply_decoded(&mut self, proposal: Proposal) -> Result<Response, Error> {
        let Proposal { session, auth, command } = proposal;
        let Some(tag) = session else {
            return self.execute(auth.as_ref(), command);
        };
        match self.sessions.check(tag, self.log_time_ms)? {
            Check::Cached(outcome) => outcome,
            Check::Apply => {
                let outcome = self.execute(auth.as_ref(), command);
                if outcome.as_ref().err().is_none_or(Error::is_deterministic) {
                    self.sessions.record(
                        tag,
                        self.log_time_ms,
                        outcome.clone(),
                        self.config.sessions_max,
                    );
                }
                outcome
            }
        }
    }

    fn execute(&mut self, auth: Option<&AuthInfo>, command: Command) -> Result<Response, Error> {
        validate_command(&command, &self.config)?;
        if let Some(info) = auth {
            self.authorize(info, &command)?;
        }
        if let Command::Auth(a) = command {
            return self.apply_auth(auth, a);
        }
        self.check_alarms(&command)?;
        match command {
            Command::Put(p) => self.put(p).map(Response::Put),
            Command::DeleteRange(d) => Ok(Response::DeleteRange(self.delete_range(&d))),
            Command::Txn(t) => self.txn(t).map(Response::Txn),
            Command::Compact(c) => self.compact(&c).map(Response::Compact),
            Command::LeaseGrant(g) => self.lease_grant(&g).map(Response::LeaseGrant),
            Command::LeaseRevoke(r) => self.lease_revoke(&r).map(Response::LeaseRevoke),
            Command::PublishMember(p) => self.publish_member(p).map(Response::PublishMember),
            Command::MemberPeers(p) => self.apply_member_peers(p).map(Response::MemberPeers),
            Command::Alarm(a) => Ok(Response::Alarm(self.alarm(&a))),
            Command::LeaseRenew(r) => self.lease_renew(&r).map(Response::LeaseRenew),
            Command::LeaseCheckpoint(c) => Ok(Response::LeaseCheckpoint(self.lease_checkpoint(&c))),
            Command::LeaseRefresh(f) => Ok(Response::LeaseRefresh(self.lease_refresh(&f))),
            Command::LeaseExpire(e) => Ok(Response::LeaseExpire(self.lease_expire(&e))),
            Command::Auth(_) => unreachable!("applied above"),
        }
    }

    /// Whether the client `info` names may run `command` under the auth state as it is at
    /// this entry (see [`crate::auth`] for the rules; auth changes check themselves).
    fn authorize(&self, info: &AuthInfo, command: &Command) -> Result<(), Error> {
        let auth = &self.auth;
        let result = match command {
            Command::Put(p) => auth.check(info, |c| {
                c.need(PermissionKind::Write, &p.key, b"")?;
                if p.prev_kv { c.need(PermissionKind::Read, &p.key, b"") } else { Ok(()) }
            }),
            Command::DeleteRange(d) => auth.check(info, |c| {
                c.need(PermissionKind::Write, &d.key, &d.range_end)?;
                if d.prev_kv { c.need(PermissionKind::Read, &d.key, &d.range_end) } else { Ok(()) }
            }),
            Command::Txn(t) => auth.check_txn(info, t),
            Command::LeaseRevoke(r) => match self.leases.get(r.id) {
                Some(lease) => auth.check_write_keys(info, lease.keys.iter()),
                // The revoke answers "lease not found" to any user.
                None => auth.check_authenticated(info),
            },
            Command::Compact(_) | Command::LeaseGrant(_) | Command::LeaseRenew(_) => {
                auth.check_authenticated(info)
            }
            Command::Alarm(a) if a.action == AlarmAction::Get => auth.check_authenticated(info),
            Command::Alarm(_)
            | Command::PublishMember(_)
            | Command::MemberPeers(_)
            | Command::LeaseCheckpoint(_)
            | Command::LeaseRefresh(_)
            | Command::LeaseExpire(_) => auth.check_admin(info),
            Command::Auth(_) => Ok(()),
        };
        result.map_err(Error::Auth)
    }

    fn apply_auth(
        &mut self,
        info: Option<&AuthInfo>,
        request: AuthRequest,
    ) -> Result<Response, Error> {
        // Applied on a copy, so that a refused change leaves the shared state untouched.
        let mut next = (*self.auth).clone();
        let auth_revision = next.apply(info, request)?;
        if next != *self.auth {
            self.auth = Arc::new(next);
        }
        Ok(Response::Auth(AuthResponse { revision: self.revision, auth_revision }))
    }

    /// etcd's alarm appliers: while a `CORRUPT` alarm is raised every write fails (etcd
    /// `applierV3Corrupt`; read-only transactions are reads, which etcd serves without the
    /// applier); while a `NOSPACE` alarm is raised, the writes that can grow the store fail
    /// (etcd `applierV3Capped`: puts, transactions that put, lease grants). etcd counts only
    /// the puts at a transaction's top level; tenure counts nested ones too.
    fn check_alarms(&self, command: &Command) -> Result<(), Error> {
        if self.alarms.len() == 0 {
            return Ok(());
        }
        if self.alarms.any(AlarmType::Corrupt) {
            let writes = match command {
                Command::Put(_)
                | Command::DeleteRange(_)
                | Command::Compact(_)
                | Command::LeaseGrant(_)
                | Command::LeaseRevoke(_)
                | Command::LeaseExpire(_) => true,
                Command::Txn(t) => !t.is_read_only(),
                Command::PublishMember(_)
                | Command::MemberPeers(_)
                | Command::Alarm(_)
                | Command::LeaseRenew(_)
                | Command::LeaseCheckpoint(_)
                | Command::LeaseRefresh(_)
                | Command::Auth(_) => false,
            };
            if writes {
                return Err(Error::Corrupt);
            }
        }
        if self.alarms.any(AlarmType::NoSpace) {
            let grows = match command {
                Command::Put(_) | Command::LeaseGrant(_) => true,
                Command::Txn(t) => t.has_put(),
                _ => false,
            };
            if grows {
                return Err(Error::NoSpace);
            }
        }
        Ok(())
    }

    fn write(&mut self) -> WriteTxn<'_> {
        WriteTxn {
            begin: self.revision,
            changed: false,
            events: Vec::new(),
            buffer: &mut self.events,
            index: &mut self.index,
            leases: &mut self.leases,
            compacted: self.compacted,
            revision: &mut self.revision,
        }
    }

    fn put(&mut self, p: PutRequest) -> Result<PutResponse, Error> {
        check_put_state(&self.index, &self.leases, &p)?;
        let mut w = self.write();
        let mut resp = w.put(p);
        resp.revision = w.finish();
        Ok(resp)
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut w = self.write();
        let mut resp = w.delete_range(d);
        resp.revision = w.finish();
        resp
    }

    fn txn(&mut self, t: TxnRequest) -> Result<TxnResponse, Error> {
        // etcd `compareToPath`: every compare, nested ones too, sees the state before the
        // transaction; the path records which branch each transaction takes.
        let mut path = Vec::new();
        self.compare_path(&t, &mut path);
        self.check_path(&t, &path, &mut 0)?;
        let mut w = self.write();
        let mut resp = w.txn(t, &path, &mut 0);
        resp.revision = w.finish();
        Ok(resp)
    }

    fn compare_path(&self, t: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = t.compare.iter().all(|c| self.compare(c));
        path.push(succeeded);
        for op in if succeeded { &t.success } else { &t.failure } {
            if let RequestOp::Txn(nested) = op {
                self.compare_path(nested, path);
            }
        }
    }

    /// etcd `applyCompare`: every key of the range must satisfy the compare; an empty range
    /// compares as one all-zero key, except that a value compare on it is false.
    fn compare(&self, c: &Compare) -> bool {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut any = false;
        for kv in self.index.range_at(&range, self.revision) {
            any = true;
            if !compare_kv(c, &kv) {
                return false;
            }
        }
        if any {
            return true;
        }
        !matches!(c.target, CompareTarget::Value(_)) && compare_kv(c, &KeyValue::default())
    }

    /// etcd `checkRequests`: the state-dependent errors of the ops on the taken path, found
    /// before anything is written so that a failing transaction changes nothing.
    fn check_path(&self, t: &TxnRequest, path: &[bool], cursor: &mut usize) -> Result<(), Error> {
        let succeeded = path[*cursor];
        *cursor += 1;
        for op in if succeeded { &t.success } else { &t.failure } {
            match op {
                RequestOp::Range(r) => {
                    if r.revision > self.revision {
                        return Err(Error::FutureRevision);
                    }
                    if r.revision > 0
                        && let Some(c) = self.compacted
                        && r.revision < c
                    {
                        return Err(Error::Compacted);
                    }
                }
                RequestOp::Put(p) => check_put_state(&self.index, &self.leases, p)?,
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(nested) => self.check_path(nested, path, cursor)?,
            }
        }
        Ok(())
    }

    fn compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, Error> {
        // etcd's compactMainRev starts at -1, so compacting at 0 once is accepted.
        if c.revision <= self.compacted.unwrap_or(-1) {
            return Err(Error::Compacted);
        }
        if c.revision > self.revision {
            return Err(Error::FutureRevision);
        }
        self.index.compact(c.revision);
        self.compacted = Some(c.revision);
        Ok(CompactionResponse { revision: self.revision })
    }

    fn lease_grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse, Error> {
        let auto = g.id == 0;
        let id = if auto { self.leases.next_auto_id() } else { g.id };
        if self.leases.contains(id) {
            return Err(Error::LeaseExists);
        }
        self.leases.grant(id, g.ttl, auto, self.applied_index);
        let remaining_ms = lease::ttl_ms(g.ttl);
        if let Some(lease) = self.leases.get_mut(id) {
            lease.remaining_ms = Some(remaining_ms);
        }
        self.events.lease_changes.push(LeaseChange::Reset { id, remaining_ms });
        Ok(LeaseGrantResponse { revision: self.revision, id, ttl: g.ttl })
    }

    fn lease_revoke(&mut self, r: &LeaseRevokeRequest) -> Result<LeaseRevokeResponse, Error> {
        if !self.leases.contains(r.id) {
            return Err(Error::LeaseNotFound);
        }
        Ok(LeaseRevokeResponse { revision: self.revoke(r.id) })
    }

    /// Deletes a lease's keys in one revision (none if it has no keys) and the lease.
    fn revoke(&mut self, id: i64) -> i64 {
        let keys: Vec<_> =
            self.leases.get(id).map(|l| l.keys.iter().cloned().collect()).unwrap_or_default();
        let mut w = self.write();
        for key in &keys {
            w.delete_key(key);
        }
        let revision = w.finish();
        self.leases.remove(id);
        self.events.lease_changes.push(LeaseChange::Ended { id });
        revision
    }

    /// The answer a [`Command::LeaseRenew`] from `auth` would get if it were applied now,
    /// without applying it: for a leader that renews without the log (see
    /// [`crate::Lease::remaining_ms`]) and must refuse what the entry would refuse.
    pub fn renew_check(
        &self,
        r: &LeaseRenewRequest,
        auth: Option<&AuthInfo>,
    ) -> Result<LeaseRenewResponse, Error> {
        let command = Command::LeaseRenew(*r);
        if let Some(info) = auth {
            self.authorize(info, &command)?;
        }
        self.check_alarms(&command)?;
        let lease = self.leases.get(r.id).ok_or(Error::LeaseNotFound)?;
        Ok(LeaseRenewResponse { revision: self.revision, id: lease.id, ttl: lease.ttl })
    }

    /// A renewal restarts the lease's TTL from this entry and forgets any checkpoint.
    fn lease_renew(&mut self, r: &LeaseRenewRequest) -> Result<LeaseRenewResponse, Error> {
        let index = self.applied_index;
        let lease = self.leases.get_mut(r.id).ok_or(Error::LeaseNotFound)?;
        lease.renewed_at = index;
        lease.remaining_ms = None;
        let (id, ttl) = (lease.id, lease.ttl);
        self.events.lease_changes.push(LeaseChange::Reset { id, remaining_ms: lease::ttl_ms(ttl) });
        Ok(LeaseRenewResponse { revision: self.revision, id, ttl })
    }

    /// Each lease still present restarts its TTL from this entry, as a renewal does.
    fn lease_refresh(&mut self, f: &LeaseRefreshRequest) -> LeaseRefreshResponse {
        let index = self.applied_index;
        for &id in &f.ids {
            if let Some(lease) = self.leases.get_mut(id) {
                lease.renewed_at = index;
                lease.remaining_ms = None;
                let remaining_ms = lease::ttl_ms(lease.ttl);
                self.events.lease_changes.push(LeaseChange::Reset { id, remaining_ms });
            }
        }
        LeaseRefreshResponse { revision: self.revision }
    }

    /// Checkpoints of leases renewed since the leader measured them are skipped.
    fn lease_checkpoint(&mut self, c: &LeaseCheckpointRequest) -> LeaseCheckpointResponse {
        for cp in &c.checkpoints {
            if let Some(lease) = self.leases.get_mut(cp.id)
                && lease.renewed_at == cp.renewed_at
            {
                lease.remaining_ms = Some(cp.remaining_ms);
                let change = LeaseChange::Reset { id: cp.id, remaining_ms: cp.remaining_ms };
                self.events.lease_changes.push(change);
            }
        }
        LeaseCheckpointResponse { revision: self.revision }
    }

    /// Leases renewed since the leader measured them, or already gone, are skipped.
    fn lease_expire(&mut self, e: &LeaseExpireRequest) -> LeaseExpireResponse {
        let mut revoked = Vec::new();
        for l in &e.leases {
            if self.leases.get(l.id).is_some_and(|lease| lease.renewed_at == l.renewed_at) {
                self.revoke(l.id);
                revoked.push(l.id);
            }
        }
        LeaseExpireResponse { revision: self.revision, revoked }
    }

    /// Validated by `execute`. Last write wins; the revision stays where it is (etcd's member
    /// attributes are not keys either).
    /// A removed member cannot publish (etcd ignores a removed member's attributes).
    fn publish_member(&mut self, p: PublishMemberRequest) -> Result<PublishMemberResponse, Error> {
        if self.members.removed.contains(&p.member_id) {
            return Err(Error::InvalidMember(MemberError::IdRemoved));
        }
        self.members.publish(p.member_id, p.attributes);
        Ok(PublishMemberResponse { revision: self.revision })
    }

    fn apply_member_peers(&mut self, p: MemberPeersRequest) -> Result<MemberPeersResponse, Error> {
        self.members.apply_peers(p).map_err(Error::InvalidMember)?;
        Ok(MemberPeersResponse { revision: self.revision })
    }

    fn alarm(&mut self, a: &AlarmRequest) -> AlarmResponse {
        AlarmResponse { revision: self.revision, alarms: self.alarms.apply(a) }
    }
}

/// The store at one applied index, for reads only (see [`Store::read_view`]).
#[derive(Debug, Clone)]
pub struct ReadView {
    index: Index,
    compacted: Option<i64>,
    revision: i64,
    applied_index: u64,
}

impl ReadView {
    /// The same answer [`Store::range`] gave when the view was taken.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Error> {
        check_range(request)?;
        range_at(&self.index, self.compacted, request, self.revision)
    }

    /// The store's revision when the view was taken.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The index of the last entry applied when the view was taken.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

/// etcd `checkPut`: the errors of a put that depend on the state.
fn check_put_state(index: &Index, leases: &Leases, p: &PutRequest) -> Result<(), Error> {
    if (p.ignore_value || p.ignore_lease) && index.latest(&p.key).is_none() {
        return Err(Error::KeyNotFound);
    }
    if !p.ignore_lease && p.lease != 0 && !leases.contains(p.lease) {
        return Err(Error::LeaseNotFound);
    }
    Ok(())
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
        CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// etcd's `Range` (apply layer plus `rangeKeys`) at a store whose current revision is
/// `current`.
pub(crate) fn range_at(
    index: &Index,
    compacted: Option<i64>,
    req: &RangeRequest,
    current: i64,
) -> Result<RangeResponse, Error> {
    if req.revision > current {
        return Err(Error::FutureRevision);
    }
    let revision = if req.revision <= 0 { current } else { req.revision };
    if let Some(c) = compacted
        && revision < c
    {
        return Err(Error::Compacted);
    }
    let range = KeyRange::new(&req.key, &req.range_end);
    if req.count_only {
        return Ok(RangeResponse {
            revision: current,
            kvs: Vec::new(),
            more: false,
            count: index.count_at(&range, revision) as i64,
        });
    }
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Sorting or filtering needs every key first; otherwise fetch one beyond the limit so
    // that `more` can be told (as etcd does).
    let fetch = if req.sort_order != SortOrder::None || filtered || req.limit <= 0 {
        usize::MAX
    } else {
        usize::try_from(req.limit).unwrap_or(usize::MAX).saturating_add(1)
    };
    let mut kvs: Vec<KeyValue> = index.range_at(&range, revision).take(fetch).collect();
    let count = if kvs.len() < fetch { kvs.len() } else { index.count_at(&range, revision) };
    if filtered {
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
    }
    sort(&mut kvs, req.sort_order, req.sort_target);
    let mut more = false;
    if req.limit > 0 && kvs.len() as u64 > req.limit as u64 {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = bytes::Bytes::new();
        }
    }
    Ok(RangeResponse { revision: current, kvs, more, count: count as i64 })
}

/// etcd's sort rules: results come in key order; a non-key target with no order sorts
/// ascending; key order ascending is left as is. Sorting is stable (keys in key order among
/// equals), which etcd's `sort.Sort` does not promise.
fn sort(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    let key = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| key(b, a)),
        _ => kvs.sort_by(key),
    }
}

/// The writes of one command: all at revision `begin + 1`, which becomes the store's revision
/// only if something changed (etcd `storeTxnWrite.End`).
struct WriteTxn<'a> {
    begin: i64,
    changed: bool,
    /// The events of this command so far, in operation order; an event's position is its
    /// version's sub-revision. Invariant: non-empty iff `changed`.
    events: Vec<Event>,
    /// Where the events go once the command is done.
    buffer: &'a mut EventBuffer,
    index: &'a mut Index,
    leases: &'a mut Leases,
    compacted: Option<i64>,
    revision: &'a mut i64,
}

impl WriteTxn<'_> {
    fn write_revision(&self) -> i64 {
        self.begin + 1
    }

    /// Reads inside a transaction see its earlier writes.
    fn read_revision(&self) -> i64 {
        if self.changed { self.begin + 1 } else { self.begin }
    }

    /// The sub-revision of the next write.
    fn sub_revision(&self) -> u32 {
        u32::try_from(self.events.len()).expect("fewer than 2^32 writes in one command")
    }

    fn finish(self) -> i64 {
        assert_eq!(self.changed, !self.events.is_empty(), "a change without an event");
        if self.changed {
            *self.revision = self.begin + 1;
            self.buffer
                .revisions
                .push(RevisionEvents { revision: self.begin + 1, events: self.events });
        }
        *self.revision
    }

    /// Callers have run `check_put_state`.
    fn put(&mut self, p: PutRequest) -> PutResponse {
        let PutRequest { key, value, lease, prev_kv, ignore_value, ignore_lease } = p;
        // Lease bookkeeping needs the key after it moved into the index; copy the handle only
        // when some lease exists (cloning a `Bytes` makes it shared).
        let lease_key = self.leases.any().then(|| key.clone());
        let rev = self.write_revision();
        let sub = self.sub_revision();
        let replaced = self.index.put(
            key,
            (!ignore_value).then_some(value),
            (!ignore_lease).then_some(lease),
            rev,
            sub,
        );
        if let Some(key) = lease_key {
            self.leases.detach(replaced.prev_lease, &key);
            self.leases.attach(replaced.lease, &key);
        }
        self.changed = true;
        let response_prev = if prev_kv { replaced.prev.clone() } else { None };
        self.events.push(Event { kind: EventKind::Put, kv: replaced.kv, prev_kv: replaced.prev });
        PutResponse { revision: rev, prev_kv: response_prev }
    }

    /// Deletes `key` if it exists; returns the deleted pair, which its event holds.
    fn delete_key(&mut self, key: &[u8]) -> Option<&KeyValue> {
        let rev = self.write_revision();
        let prev = self.index.delete(key, rev, self.sub_revision())?;
        self.leases.detach(prev.lease, key);
        self.changed = true;
        let kv = tombstone_kv(&prev.key, rev);
        self.events.push(Event { kind: EventKind::Delete, kv, prev_kv: Some(prev) });
        self.events.last().and_then(|e| e.prev_kv.as_ref())
    }

    fn delete_range(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let keys = self.index.live_keys(&KeyRange::new(&d.key, &d.range_end));
        let mut prev_kvs = Vec::new();
        for key in &keys {
            let prev = self.delete_key(key).expect("live key");
            if d.prev_kv {
                prev_kvs.push(prev.clone());
            }
        }
        DeleteRangeResponse {
            // As etcd's: the new revision once this transaction wrote, the old one before.
            revision: self.read_revision(),
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    fn txn(&mut self, t: TxnRequest, path: &[bool], cursor: &mut usize) -> TxnResponse {
        let succeeded = path[*cursor];
        *cursor += 1;
        let ops = if succeeded { t.success } else { t.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(
                    range_at(self.index, self.compacted, &r, self.read_revision())
                        .expect("range revision checked before the transaction"),
                ),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(&d)),
                RequestOp::Txn(nested) => ResponseOp::Txn(self.txn(nested, path, cursor)),
            });
        }
        TxnResponse { revision: 0, succeeded, responses }
    }
}
