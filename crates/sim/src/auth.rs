//! The auth workload and its checker (issue 17): auth changes interleaved with writes under
//! the seed's faults, and proof that every member enforces the same permissions at each point
//! of the log.
//!
//! **Workload.** An administrator (as `root`) adds `root` with the root role, a user `u`,
//! roles `r0` and `r1` (`r0` with READWRITE on `[a/a, a/b)`, granted to `u`) and enables auth,
//! then keeps changing things: grants and revokes permissions on keys, ranges and prefixes,
//! grants and revokes the roles of `u`, changes `u`'s password (which invalidates tokens
//! issued before it), and now and then disables auth and enables it again. User clients send
//! puts, range deletes and transactions (compares and both branches checked) on keys under
//! `a/`, as `u` with a token (a [`AuthInfo::token_revision`] learned from the member it
//! talks to, kept until it is refused), as `u` named by a certificate (no token), as `root`,
//! as no one and as a user that does not exist. Every write's values are unique.
//!
//! **Observation.** The world keeps, per member, a copy of its store as of the last output it
//! took (copies are O(1)). When the member applies entries, the copy applies the same entry
//! bytes through the same code, one at a time, which gives the member's outcome of each entry
//! and its auth state after each; the copy must then equal the member's store, or the
//! replay was not the member's (a safety failure). A member that installed a snapshot or
//! restarted is observed again from its next output.
//!
//! **[`AuthChecker`]** checks that (a) every member that applied an auth-carrying entry got
//! the same outcome for it (allowed, or denied with the same error), (b) that outcome is what
//! an independent model of etcd's rules says for the auth state at that point of the log (the
//! model replays the committed auth changes in log order and checks permissions key by key
//! over every key that matters, as `crates/kv/tests/auth.rs`'s property test does), and the
//! model's users and roles equal each member's auth state wherever one was seen, (c) every
//! member's auth state is equal at equal applied index, (d) no write acknowledged to a client
//! took effect outside the sender's permissions at its entry, and no write acknowledged as
//! denied changed a key (its values appear in no member's events; its entry changed no key on
//! any member that was observed applying it). It cannot pass vacuously: it fails if
//! auth-carrying entries were committed and no member's outcome was observed, and it counts
//! what it checked (allowed and denied writes) for the runs' summaries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use tenure_kv::{
    AuthError, AuthInfo, AuthRequest, AuthState, Command, Compare, CompareResult, CompareTarget,
    DeleteRangeRequest, Error, Permission, PermissionKind, Proposal, PutRequest, RangeRequest,
    RequestOp, Response, RevisionEvents, TxnRequest,
};
use tenure_raft::{LogIndex, NodeId};
use tenure_replica::{Answer, ClientError, Completion, RequestId};

use crate::checkers::Violation;
use crate::outstanding::Outstanding;
use crate::rng::SimRng;
use crate::world::Millis;

/// Request ids of the auth workload start here (below the watch workload's).
pub(crate) const AUTH_REQUEST_BASE: u64 = 3 << 59;
/// A request not answered within this long is given up.
const PATIENCE_MS: Millis = 500;
/// The keys the workload writes and grants on (all under [`AUTH_PREFIX`]).
const KEYS: [&str; 5] = ["a/a", "a/ab", "a/b", "a/ba", "a/c"];
/// Range ends of permissions: a key alone, every key from the key on, ranges, the prefix.
const PERMISSION_ENDS: [&str; 6] = ["", "\0", "a/b", "a/bb", "a/c", "a0"];
/// Range ends of deletes: never past the prefix, so that no other workload's key goes.
const DELETE_ENDS: [&str; 5] = ["", "a/b", "a/bb", "a/c", "a0"];
/// Every key the auth workload writes starts with this.
pub const AUTH_PREFIX: &str = "a/";
/// With this many auth-carrying entries committed, a run in which no member's outcome was
/// observed means the observation is broken.
const OBSERVED_ENTRIES_MIN: usize = 8;
/// The user whose permissions change.
const USER: &str = "u";
const ROLES: [&str; 2] = ["r0", "r1"];

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn root() -> AuthInfo {
    AuthInfo { user: tenure_kv::auth::ROOT_USER.into(), token_revision: None }
}

/// The administrator's first steps, in order.
fn setup(token_key: Bytes) -> Vec<AuthRequest> {
    vec![
        AuthRequest::UserAdd { name: "root".into(), password_hash: Some("$2b$root".into()) },
        AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() },
        AuthRequest::UserAdd { name: USER.into(), password_hash: Some("$2b$u0".into()) },
        AuthRequest::RoleAdd { name: ROLES[0].into() },
        AuthRequest::RoleAdd { name: ROLES[1].into() },
        AuthRequest::RoleGrantPermission {
            role: ROLES[0].into(),
            permission: Permission {
                kind: PermissionKind::ReadWrite,
                key: b("a/a"),
                range_end: b("a/b"),
            },
        },
        AuthRequest::UserGrantRole { user: USER.into(), role: ROLES[0].into() },
        AuthRequest::Enable { token_key },
    ]
}

/// One request of the workload in flight: what was proposed, so that its acknowledgement can
/// be checked against the entry that answered it.
#[derive(Debug)]
struct Sent {
    proposal: Proposal,
}

/// The auth clients of a run: client 0 administers, the others write.
#[derive(Debug)]
pub(crate) struct AuthWorkload {
    requests: Outstanding,
    in_flight: BTreeMap<(NodeId, RequestId), Sent>,
    setup: Vec<AuthRequest>,
    /// The administrator's next setup step (past the end: setup done).
    setup_step: usize,
    /// Permissions the administrator believes granted (from acknowledged grants), to revoke.
    granted: Vec<(usize, usize, usize)>,
    /// Per user client: the token it holds (the password revision it was issued under).
    tokens: Vec<Option<u64>>,
    /// Whether the administrator disabled auth last.
    disabled: bool,
    writes: u64,
    passwords: u64,
}

/// What the world proposes for the auth workload.
pub(crate) struct AuthSend {
    pub(crate) id: RequestId,
    pub(crate) proposal: Proposal,
}

impl AuthWorkload {
    /// `writers` user clients and one administrator.
    pub(crate) fn new(writers: usize, seed: u64) -> AuthWorkload {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        AuthWorkload {
            requests: Outstanding::new(AUTH_REQUEST_BASE, writers + 1),
            in_flight: BTreeMap::new(),
            setup: setup(Bytes::copy_from_slice(&key)),
            setup_step: 0,
            granted: Vec::new(),
            tokens: vec![None; writers + 1],
            disabled: false,
            writes: 0,
            passwords: 0,
        }
    }

    /// Number of clients (the administrator is client 0).
    pub(crate) fn clients(&self) -> usize {
        self.tokens.len()
    }

    /// Whether `req` on `node` is one of this workload's requests in flight.
    pub(crate) fn owns(&self, node: NodeId, req: RequestId) -> bool {
        self.requests.owns(node, req)
    }

    /// Client `c`'s next request to `node`, whose auth state is `state`; none once `stop`.
    pub(crate) fn step(
        &mut self,
        c: usize,
        node: NodeId,
        state: &AuthState,
        now: Millis,
        stop: bool,
        rng: &mut SimRng,
    ) -> Option<AuthSend> {
        if stop {
            return None;
        }
        if self.requests.waiting(c, now, PATIENCE_MS) {
            return None;
        }
        // A request given up stays unknown; forget what it was.
        self.in_flight.retain(|k, _| self.requests.owns(k.0, k.1));
        let proposal = if c == 0 { self.admin_step(rng) } else { self.user_step(c, state, rng) };
        let id = self.requests.send(c, node, now);
        self.in_flight.insert((node, id), Sent { proposal: proposal.clone() });
        Some(AuthSend { id, proposal })
    }

    fn admin_step(&mut self, rng: &mut SimRng) -> Proposal {
        let request = if let Some(step) = self.setup.get(self.setup_step) {
            step.clone()
        } else if self.disabled {
            self.setup.last().expect("enable").clone()
        } else {
            let role = rng.range(0, 2) as usize;
            let p = rng.range(0, 100);
            if p < 30 {
                let kind = rng.pick(&[
                    PermissionKind::Read,
                    PermissionKind::Write,
                    PermissionKind::ReadWrite,
                    PermissionKind::ReadWrite,
                ]);
                let key = rng.range(0, KEYS.len() as u64) as usize;
                let end = rng.range(0, PERMISSION_ENDS.len() as u64) as usize;
                AuthRequest::RoleGrantPermission {
                    role: ROLES[role].into(),
                    permission: Permission {
                        kind,
                        key: b(KEYS[key]),
                        range_end: b(PERMISSION_ENDS[end]),
                    },
                }
            } else if p < 50 {
                // Mostly a permission granted before; sometimes one that may not be.
                let (role, key, end) = if !self.granted.is_empty() && rng.chance(0.8) {
                    let i = rng.range(0, self.granted.len() as u64) as usize;
                    self.granted[i]
                } else {
                    (
                        role,
                        rng.range(0, KEYS.len() as u64) as usize,
                        rng.range(0, PERMISSION_ENDS.len() as u64) as usize,
                    )
                };
                AuthRequest::RoleRevokePermission {
                    role: ROLES[role].into(),
                    key: b(KEYS[key]),
                    range_end: b(PERMISSION_ENDS[end]),
                }
            } else if p < 67 {
                AuthRequest::UserGrantRole { user: USER.into(), role: ROLES[role].into() }
            } else if p < 82 {
                AuthRequest::UserRevokeRole { user: USER.into(), role: ROLES[role].into() }
            } else if p < 96 {
                self.passwords += 1;
                AuthRequest::UserChangePassword {
                    name: USER.into(),
                    password_hash: format!("$2b$u{}", self.passwords),
                }
            } else {
                AuthRequest::Disable
            }
        };
        Proposal::new(Command::Auth(request)).with_auth(root())
    }

    fn user_step(&mut self, c: usize, state: &AuthState, rng: &mut SimRng) -> Proposal {
        // Authenticate (read the member's state) when the client holds no token.
        if self.tokens[c].is_none() {
            self.tokens[c] = state.user(USER).map(|u| u.password_revision);
        }
        let who = rng.range(0, 100);
        let info = if who < 70 {
            AuthInfo { user: USER.into(), token_revision: self.tokens[c] }
        } else if who < 82 {
            AuthInfo { user: USER.into(), token_revision: None }
        } else if who < 92 {
            root()
        } else if who < 96 {
            AuthInfo { user: String::new(), token_revision: None }
        } else {
            AuthInfo { user: "mallory".into(), token_revision: Some(1) }
        };
        self.writes += 1;
        let tag = format!("{c}.{}", self.writes);
        // Most of the time, keys the member says the user's roles cover (so that writes are
        // allowed often enough); otherwise any key.
        let covered: Vec<&str> = KEYS
            .iter()
            .copied()
            .filter(|k| {
                let roles = state.user(USER).map(|u| u.roles.clone()).unwrap_or_default();
                roles.iter().filter_map(|r| state.role(r)).any(|role| {
                    role.permissions.iter().any(|p| {
                        in_range(k.as_bytes(), &p.key, &p.range_end)
                            && p.kind.allows(PermissionKind::Write)
                    })
                })
            })
            .collect();
        let favor = !covered.is_empty() && rng.chance(0.6);
        let key = |rng: &mut SimRng| {
            if favor {
                covered[rng.range(0, covered.len() as u64) as usize]
            } else {
                KEYS[rng.range(0, KEYS.len() as u64) as usize]
            }
        };
        let put = |rng: &mut SimRng, n: usize| {
            let mut p = PutRequest::new(b(key(rng)), b(&format!("{tag}.{n}")));
            p.prev_kv = rng.chance(0.2);
            p
        };
        let delete = |rng: &mut SimRng| {
            let end = DELETE_ENDS[rng.range(0, DELETE_ENDS.len() as u64) as usize];
            DeleteRangeRequest { key: b(key(rng)), range_end: b(end), prev_kv: rng.chance(0.2) }
        };
        let p = rng.range(0, 100);
        let command = if p < 40 {
            Command::Put(put(rng, 0))
        } else if p < 55 {
            Command::DeleteRange(delete(rng))
        } else {
            let ops = |rng: &mut SimRng, count: u64, base: usize| -> Vec<RequestOp> {
                (0..count)
                    .map(|i| match rng.range(0, 3) {
                        0 => RequestOp::Put(put(rng, base + i as usize)),
                        1 => RequestOp::DeleteRange(delete(rng)),
                        _ => RequestOp::Range(RangeRequest::single(b(key(rng)))),
                    })
                    .collect()
            };
            let compare = if rng.chance(0.7) {
                vec![Compare::new(b(key(rng)), CompareResult::Greater, CompareTarget::Version(0))]
            } else {
                vec![]
            };
            let (s, f) = (rng.range(0, 3), rng.range(0, 3));
            let success = ops(rng, s, 1);
            let failure = ops(rng, f, 10);
            Command::Txn(TxnRequest { compare, success, failure })
        };
        Proposal::new(command).with_auth(info)
    }

    /// Takes a completion of one of this workload's requests; returns what to hand the
    /// checker: the entry's index, the proposal and the answer, if it was applied.
    pub(crate) fn complete(
        &mut self,
        node: NodeId,
        completion: &Completion,
    ) -> Option<(LogIndex, Proposal, Result<Response, Error>)> {
        let (c, _) = self.requests.take(node, completion.id)?;
        let sent = self.in_flight.remove(&(node, completion.id))?;
        let result = match &completion.result {
            Ok(Answer::Write(r)) => Ok(r.clone()),
            Err(ClientError::Kv(e)) => Err(e.clone()),
            // Not applied (no leader, timed out, ...): its effect is unknown.
            _ => return None,
        };
        let index = completion.entry?.index;
        if c == 0 {
            self.admin_answer(&sent.proposal, &result);
        } else if matches!(result, Err(Error::Auth(AuthError::InvalidAuthToken))) {
            self.tokens[c] = None;
        }
        Some((index, sent.proposal, result))
    }

    fn admin_answer(&mut self, proposal: &Proposal, result: &Result<Response, Error>) {
        let Command::Auth(request) = &proposal.command else { return };
        let done = match result {
            Ok(_) => true,
            // A retried setup step whose first attempt applied.
            Err(Error::Auth(AuthError::UserAlreadyExist | AuthError::RoleAlreadyExist)) => true,
            Err(_) => false,
        };
        if self.setup.get(self.setup_step) == Some(request) && done {
            self.setup_step += 1;
        }
        if !done {
            return;
        }
        let position = |key: &Bytes, end: &Bytes| {
            let k = KEYS.iter().position(|k| k.as_bytes() == key.as_ref())?;
            let e = PERMISSION_ENDS.iter().position(|e| e.as_bytes() == end.as_ref())?;
            Some((k, e))
        };
        match request {
            AuthRequest::RoleGrantPermission { role, permission } => {
                let r = ROLES.iter().position(|n| n == role).unwrap_or(0);
                if let Some((k, e)) = position(&permission.key, &permission.range_end) {
                    self.granted.retain(|g| *g != (r, k, e));
                    self.granted.push((r, k, e));
                }
            }
            AuthRequest::RoleRevokePermission { role, key, range_end } => {
                let r = ROLES.iter().position(|n| n == role).unwrap_or(0);
                if let Some((k, e)) = position(key, range_end) {
                    self.granted.retain(|g| *g != (r, k, e));
                }
            }
            AuthRequest::Disable => self.disabled = true,
            AuthRequest::Enable { .. } => self.disabled = false,
            _ => {}
        }
    }
}

// ----- The model ---------------------------------------------------------------------------------

/// A permission or what a request needs: a kind on etcd's range `(key, range end)`.
type Need = (PermissionKind, Vec<u8>, Vec<u8>);

/// A user, as the model keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ModelUser {
    roles: BTreeSet<String>,
    password_revision: u64,
}

/// etcd's auth rules, kept naively: permissions as a list per role, checked key by key.
#[derive(Clone, Debug, Default)]
pub struct AuthModel {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, ModelUser>,
    /// Per role: (kind, key, range end), at most one per (key, range end).
    roles: BTreeMap<String, Vec<Need>>,
}

/// The model's verdict on an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// An auth change: the auth revision after it, or its error.
    Change(Result<u64, AuthError>),
    /// A write: allowed (and whether by a user's permissions, not root or auth being off), or
    /// denied with this error.
    Write(Result<bool, AuthError>),
    /// Nothing the model decides (a command the workload never sends).
    Unmodeled,
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// What a command needs: (kind, key, range end) for every key range it reads or writes.
fn needs(command: &Command) -> Option<Vec<Need>> {
    let mut out = Vec::new();
    fn op(out: &mut Vec<Need>, o: &RequestOp) {
        match o {
            RequestOp::Range(r) => {
                out.push((PermissionKind::Read, r.key.to_vec(), r.range_end.to_vec()))
            }
            RequestOp::Put(p) => put(out, p),
            RequestOp::DeleteRange(d) => delete(out, d),
            RequestOp::Txn(t) => txn(out, t),
        }
    }
    fn put(out: &mut Vec<Need>, p: &PutRequest) {
        out.push((PermissionKind::Write, p.key.to_vec(), vec![]));
        if p.prev_kv {
            out.push((PermissionKind::Read, p.key.to_vec(), vec![]));
        }
    }
    fn delete(out: &mut Vec<Need>, d: &DeleteRangeRequest) {
        out.push((PermissionKind::Write, d.key.to_vec(), d.range_end.to_vec()));
        if d.prev_kv {
            out.push((PermissionKind::Read, d.key.to_vec(), d.range_end.to_vec()));
        }
    }
    fn txn(out: &mut Vec<Need>, t: &TxnRequest) {
        for c in &t.compare {
            out.push((PermissionKind::Read, c.key.to_vec(), c.range_end.to_vec()));
        }
        for o in t.success.iter().chain(&t.failure) {
            op(out, o);
        }
    }
    match command {
        Command::Put(p) => put(&mut out, p),
        Command::DeleteRange(d) => delete(&mut out, d),
        Command::Txn(t) => txn(&mut out, t),
        _ => return None,
    }
    Some(out)
}

impl AuthModel {
    fn identify(&self, info: &AuthInfo) -> Result<Option<&ModelUser>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        if info.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let Some(user) = self.users.get(&info.user) else {
            return Err(if info.token_revision.is_some() {
                AuthError::InvalidAuthToken
            } else {
                AuthError::PermissionDenied
            });
        };
        match info.token_revision {
            Some(rev) if rev != user.password_revision => Err(AuthError::InvalidAuthToken),
            _ => Ok(Some(user)),
        }
    }

    fn is_root(user: &ModelUser) -> bool {
        user.roles.contains("root")
    }

    /// Every key that can matter: each bound of a permission or a request, and each followed
    /// by a zero byte (a gap in a user's permissions always begins at one of these).
    fn universe(&self, wanted: &[Need]) -> BTreeSet<Vec<u8>> {
        let mut bounds: Vec<&[u8]> = Vec::new();
        for perms in self.roles.values() {
            for (_, k, e) in perms {
                bounds.push(k);
                bounds.push(e);
            }
        }
        for (_, k, e) in wanted {
            bounds.push(k);
            bounds.push(e);
        }
        let mut u = BTreeSet::new();
        for k in bounds.into_iter().filter(|k| !k.is_empty() && *k != [0]) {
            u.insert(k.to_vec());
            let mut z = k.to_vec();
            z.push(0);
            u.insert(z);
        }
        u
    }

    /// The verdict on a write `command` sent by `info`.
    fn write(&self, info: &AuthInfo, command: &Command) -> Verdict {
        let Some(wanted) = needs(command) else { return Verdict::Unmodeled };
        let user = match self.identify(info) {
            Err(e) => return Verdict::Write(Err(e)),
            Ok(None) => return Verdict::Write(Ok(false)),
            Ok(Some(u)) if Self::is_root(u) => return Verdict::Write(Ok(false)),
            Ok(Some(u)) => u,
        };
        let universe = self.universe(&wanted);
        let allowed = wanted.iter().all(|(need, key, end)| {
            universe.iter().filter(|k| in_range(k, key, end)).all(|k| {
                user.roles
                    .iter()
                    .filter_map(|r| self.roles.get(r))
                    .flatten()
                    .any(|(kind, pk, pe)| kind.allows(*need) && in_range(k, pk, pe))
            })
        });
        Verdict::Write(if allowed { Ok(true) } else { Err(AuthError::PermissionDenied) })
    }

    /// Applies an auth change sent by `info` (`None`: unchecked).
    fn change(&mut self, info: Option<&AuthInfo>, request: &AuthRequest) -> Verdict {
        if let Some(info) = info {
            match self.identify(info) {
                Err(e) => return Verdict::Change(Err(e)),
                Ok(Some(u)) if !Self::is_root(u) => {
                    return Verdict::Change(Err(AuthError::PermissionDenied));
                }
                Ok(_) => {}
            }
        }
        let next = self.revision + 1;
        let unchanged = Verdict::Change(Ok(self.revision));
        match request {
            AuthRequest::Enable { token_key } => {
                if token_key.len() < 16 {
                    return Verdict::Change(Err(AuthError::InvalidRequest));
                }
                if self.enabled {
                    return unchanged;
                }
                match self.users.get("root") {
                    None => return Verdict::Change(Err(AuthError::RootUserNotExist)),
                    Some(r) if !Self::is_root(r) => {
                        return Verdict::Change(Err(AuthError::RootRoleNotExist));
                    }
                    Some(_) => self.enabled = true,
                }
            }
            AuthRequest::Disable => {
                if !self.enabled {
                    return unchanged;
                }
                self.enabled = false;
            }
            AuthRequest::UserAdd { name, .. } => {
                if name.is_empty() {
                    return Verdict::Change(Err(AuthError::UserEmpty));
                }
                if self.users.contains_key(name) {
                    return Verdict::Change(Err(AuthError::UserAlreadyExist));
                }
                let user = ModelUser { roles: BTreeSet::new(), password_revision: next };
                self.users.insert(name.clone(), user);
            }
            AuthRequest::UserChangePassword { name, .. } => match self.users.get_mut(name) {
                None => return Verdict::Change(Err(AuthError::UserNotFound)),
                Some(u) => u.password_revision = next,
            },
            AuthRequest::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Verdict::Change(Err(AuthError::UserNotFound));
                }
                if role != "root" && !self.roles.contains_key(role) {
                    return Verdict::Change(Err(AuthError::RoleNotFound));
                }
                if !self.users.get_mut(user).expect("exists").roles.insert(role.clone()) {
                    return unchanged;
                }
            }
            AuthRequest::UserRevokeRole { user, role } => {
                if self.enabled && user == "root" && role == "root" {
                    return Verdict::Change(Err(AuthError::InvalidAuthMgmt));
                }
                let Some(u) = self.users.get_mut(user) else {
                    return Verdict::Change(Err(AuthError::UserNotFound));
                };
                if !u.roles.remove(role) {
                    return Verdict::Change(Err(AuthError::RoleNotGranted));
                }
            }
            AuthRequest::RoleAdd { name } => {
                if name.is_empty() {
                    return Verdict::Change(Err(AuthError::RoleEmpty));
                }
                if self.roles.contains_key(name) {
                    return Verdict::Change(Err(AuthError::RoleAlreadyExist));
                }
                self.roles.insert(name.clone(), Vec::new());
            }
            AuthRequest::RoleGrantPermission { role, permission: p } => {
                let Some(perms) = self.roles.get_mut(role) else {
                    return Verdict::Change(Err(AuthError::RoleNotFound));
                };
                perms.retain(|(_, k, e)| *k != p.key.as_ref() || *e != p.range_end.as_ref());
                perms.push((p.kind, p.key.to_vec(), p.range_end.to_vec()));
            }
            AuthRequest::RoleRevokePermission { role, key, range_end } => {
                let Some(perms) = self.roles.get_mut(role) else {
                    return Verdict::Change(Err(AuthError::RoleNotFound));
                };
                let before = perms.len();
                perms.retain(|(_, k, e)| *k != key.as_ref() || *e != range_end.as_ref());
                if perms.len() == before {
                    return Verdict::Change(Err(AuthError::PermissionNotGranted));
                }
            }
            AuthRequest::UserDelete { .. } | AuthRequest::RoleDelete { .. } => {
                return Verdict::Unmodeled;
            }
        }
        self.revision = next;
        Verdict::Change(Ok(next))
    }

    /// The verdict on `proposal`, applying it if it changes auth.
    pub fn apply(&mut self, proposal: &Proposal) -> Verdict {
        if proposal.session.is_some() {
            // A retry would get its first outcome again; the workload sends none.
            return Verdict::Unmodeled;
        }
        match (&proposal.command, &proposal.auth) {
            (Command::Auth(request), info) => self.change(info.as_ref(), request),
            (command, Some(info)) => self.write(info, command),
            (_, None) => Verdict::Unmodeled,
        }
    }

    /// Where the model and a member's auth state differ, if they do (the token key and
    /// password hashes are not modeled).
    fn differs_from(&self, s: &AuthState) -> Option<String> {
        if s.enabled() != self.enabled || s.revision() != self.revision {
            return Some(format!(
                "enabled {} revision {} (model: {} {})",
                s.enabled(),
                s.revision(),
                self.enabled,
                self.revision
            ));
        }
        let users: BTreeMap<String, ModelUser> = s
            .users()
            .map(|(n, u)| {
                let user =
                    ModelUser { roles: u.roles.clone(), password_revision: u.password_revision };
                (n.to_string(), user)
            })
            .collect();
        if users != self.users {
            return Some(format!("users {users:?} (model: {:?})", self.users));
        }
        let roles: BTreeMap<String, BTreeSet<Need>> = s
            .roles()
            .map(|(n, r)| {
                let perms = r
                    .permissions
                    .iter()
                    .map(|p| (p.kind, p.key.to_vec(), p.range_end.to_vec()))
                    .collect();
                (n.to_string(), perms)
            })
            .collect();
        let model: BTreeMap<String, BTreeSet<Need>> =
            self.roles.iter().map(|(n, p)| (n.clone(), p.iter().cloned().collect())).collect();
        (roles != model).then(|| format!("roles {roles:?} (model: {model:?})"))
    }
}

// ----- The checker -------------------------------------------------------------------------------

/// A member's outcome of one auth-carrying entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The member.
    pub node: NodeId,
    /// What applying the entry answered.
    pub outcome: Result<Response, Error>,
    /// Whether applying it changed a key (moved the revision or made events).
    pub changed: bool,
}

/// A write or change acknowledged to a client: the entry that answered it and the answer.
#[derive(Clone, Debug)]
struct Ack {
    node: NodeId,
    index: LogIndex,
    proposal: Proposal,
    result: Result<Response, Error>,
}

/// What the auth checker checked in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuthCounts {
    /// Auth-carrying entries committed (seen applied by any member).
    pub entries: u64,
    /// Member outcomes observed (an entry counts once per member that was observed).
    pub outcomes: u64,
    /// Writes whose outcome was checked and which a user's permissions allowed (not root, not
    /// with auth off).
    pub allowed: u64,
    /// Writes whose outcome was checked and which were denied.
    pub denied: u64,
    /// Auth changes whose outcome was checked.
    pub changes: u64,
    /// Acknowledgements checked.
    pub acks: u64,
}

/// The auth checker (see the module's documentation).
#[derive(Debug, Default)]
pub struct AuthChecker {
    /// Every index some member was seen applying.
    indexes: BTreeSet<LogIndex>,
    /// The auth-carrying entries, by index.
    proposals: BTreeMap<LogIndex, Proposal>,
    /// The first member outcome observed for each index.
    outcomes: BTreeMap<LogIndex, Observed>,
    /// The first auth state observed at each applied index, with the member that showed it.
    states: BTreeMap<LogIndex, (NodeId, Arc<AuthState>)>,
    acks: Vec<Ack>,
    /// Every value written under the prefix that any member's events showed.
    values_written: BTreeSet<Bytes>,
    counts: AuthCounts,
}

fn violation(property: &'static str, detail: String) -> Violation {
    Violation { property, detail }
}

/// Whether an entry is one the checker follows: an auth change, or a command with a sender.
pub fn carries_auth(p: &Proposal) -> bool {
    p.auth.is_some() || matches!(p.command, Command::Auth(_))
}

impl AuthChecker {
    /// A member applied the entry at `index`; `proposal` is its content if it is one the
    /// checker follows.
    pub fn on_applied(&mut self, index: LogIndex, proposal: Option<Proposal>) {
        self.indexes.insert(index);
        if let Some(p) = proposal {
            self.proposals.entry(index).or_insert(p);
        }
    }

    /// `node`'s outcome of the auth-carrying entry at `index`: the same on every member, and a
    /// refused entry changes no key.
    pub fn on_outcome(&mut self, index: LogIndex, seen: Observed) -> Result<(), Violation> {
        self.counts.outcomes += 1;
        if seen.outcome.is_err() && seen.changed {
            return Err(violation(
                "a refused write changes no key",
                format!("{} applied {index} as {:?} and changed keys", seen.node, seen.outcome),
            ));
        }
        match self.outcomes.get(&index) {
            None => {
                self.outcomes.insert(index, seen);
                Ok(())
            }
            Some(first) if first.outcome == seen.outcome && first.changed == seen.changed => Ok(()),
            Some(first) => Err(violation(
                "every member gets the same outcome for an auth-carrying entry",
                format!(
                    "at {index}: {} got {:?} (changed keys: {}), {} got {:?} (changed keys: {})",
                    first.node, first.outcome, first.changed, seen.node, seen.outcome, seen.changed
                ),
            )),
        }
    }

    /// `node`'s auth state with `index` applied: equal on every member at equal index.
    pub fn on_state(
        &mut self,
        node: NodeId,
        index: LogIndex,
        state: &Arc<AuthState>,
    ) -> Result<(), Violation> {
        match self.states.get(&index) {
            None => {
                self.states.insert(index, (node, state.clone()));
                Ok(())
            }
            Some((_, first)) if Arc::ptr_eq(first, state) || **first == **state => Ok(()),
            Some((first_node, first)) => Err(violation(
                "every member has the same auth state at the same applied index",
                format!("at {index}: {first_node} has {first:?}, {node} has {state:?}"),
            )),
        }
    }

    /// Events a member applied: the values written under the prefix are remembered.
    pub fn on_events(&mut self, events: &[RevisionEvents]) {
        for r in events {
            for e in &r.events {
                if e.kv.key.starts_with(AUTH_PREFIX.as_bytes()) && !e.kv.value.is_empty() {
                    self.values_written.insert(e.kv.value.clone());
                }
            }
        }
    }

    /// The first member outcome observed at each index.
    pub fn outcomes(&self) -> &BTreeMap<LogIndex, Observed> {
        &self.outcomes
    }

    /// A client was told `result` for `proposal`, answered by the entry at `index` on `node`.
    pub fn on_ack(
        &mut self,
        node: NodeId,
        index: LogIndex,
        proposal: Proposal,
        result: Result<Response, Error>,
    ) {
        self.acks.push(Ack { node, index, proposal, result });
    }

    /// The end of the run: replays the log through the model and checks every outcome,
    /// state and acknowledgement against it. Fails if nothing was observed.
    pub fn check(&mut self) -> Result<AuthCounts, Violation> {
        self.counts.entries = self.proposals.len() as u64;
        if let (Some(first), Some(last)) = (self.indexes.first(), self.indexes.last())
            && (last.0 - first.0 + 1) as usize != self.indexes.len()
        {
            let gap = (first.0..=last.0).find(|i| !self.indexes.contains(&LogIndex(*i)));
            return Err(violation(
                "the auth checker sees every committed entry",
                format!("no member was seen applying index {gap:?} (of {first}..={last})"),
            ));
        }
        if self.indexes.first().is_some_and(|f| f.0 > 1) {
            return Err(violation(
                "the auth checker sees every committed entry",
                format!("the first index seen applied is {:?}", self.indexes.first()),
            ));
        }
        // A handful of entries may all have been applied where no one looked (a member just
        // restarted, the others installed snapshots past them); many cannot.
        if self.proposals.len() >= OBSERVED_ENTRIES_MIN && self.outcomes.is_empty() {
            return Err(violation(
                "the auth checker observes outcomes",
                format!(
                    "{} auth-carrying entries, no member outcome observed",
                    self.proposals.len()
                ),
            ));
        }
        let mut model = AuthModel::default();
        let mut verdicts: BTreeMap<LogIndex, Verdict> = BTreeMap::new();
        let points: BTreeSet<LogIndex> =
            self.proposals.keys().chain(self.states.keys()).copied().collect();
        for index in points {
            if let Some(p) = self.proposals.get(&index) {
                let verdict = model.apply(p);
                if let Some(seen) = self.outcomes.get(&index) {
                    compare(&mut self.counts, index, p, &verdict, seen)?;
                }
                verdicts.insert(index, verdict);
            }
            if let Some((node, state)) = self.states.get(&index)
                && let Some(diff) = model.differs_from(state)
            {
                return Err(violation(
                    "a member's auth state is the model's at each applied index",
                    format!("{node} at {index}: {diff}"),
                ));
            }
        }
        for ack in &self.acks {
            self.counts.acks += 1;
            let at = self.proposals.get(&ack.index);
            if at != Some(&ack.proposal) {
                return Err(violation(
                    "an acknowledgement answers its own entry",
                    format!(
                        "{} answered {:?} from {}, which holds {at:?}",
                        ack.node, ack.proposal, ack.index
                    ),
                ));
            }
            if let Some(seen) = self.outcomes.get(&ack.index)
                && seen.outcome != ack.result
            {
                return Err(violation(
                    "a client is told the outcome its entry had on the members",
                    format!(
                        "{} told the client {:?} for {}; {} applied it as {:?}",
                        ack.node, ack.result, ack.index, seen.node, seen.outcome
                    ),
                ));
            }
            let verdict = &verdicts[&ack.index];
            let agrees = match (verdict, &ack.result) {
                (Verdict::Unmodeled, _) => true,
                (Verdict::Write(Ok(_)), Ok(_)) => true,
                (Verdict::Write(Err(e)), Err(Error::Auth(got))) => e == got,
                (Verdict::Change(Ok(rev)), Ok(Response::Auth(r))) => r.auth_revision == *rev,
                (Verdict::Change(Err(e)), Err(Error::Auth(got))) => e == got,
                _ => false,
            };
            if !agrees {
                return Err(violation(
                    "an acknowledged request was allowed or denied as its sender's permissions at its entry say",
                    format!(
                        "{} told the client {:?} for {:?} at {}; the model says {verdict:?}",
                        ack.node, ack.result, ack.proposal, ack.index
                    ),
                ));
            }
            if ack.result.is_err()
                && let Some(value) = values_of(&ack.proposal.command)
                    .into_iter()
                    .find(|v| self.values_written.contains(v))
            {
                return Err(violation(
                    "a refused write changes no key",
                    format!(
                        "{} refused {:?} at {} ({:?}), yet a member wrote its value {value:?}",
                        ack.node, ack.proposal, ack.index, ack.result
                    ),
                ));
            }
        }
        Ok(self.counts)
    }
}

/// Compares a member's outcome with the model's verdict, counting what was checked.
fn compare(
    counts: &mut AuthCounts,
    index: LogIndex,
    proposal: &Proposal,
    verdict: &Verdict,
    seen: &Observed,
) -> Result<(), Violation> {
    let agrees = match (verdict, &seen.outcome) {
        (Verdict::Unmodeled, _) => true,
        (Verdict::Write(Ok(by_permission)), Ok(_)) => {
            if *by_permission {
                counts.allowed += 1;
            }
            true
        }
        (Verdict::Write(Err(e)), Err(Error::Auth(got))) => {
            counts.denied += 1;
            e == got
        }
        (Verdict::Change(Ok(rev)), Ok(Response::Auth(r))) => {
            counts.changes += 1;
            r.auth_revision == *rev
        }
        (Verdict::Change(Err(e)), Err(Error::Auth(got))) => {
            counts.changes += 1;
            e == got
        }
        _ => false,
    };
    if agrees {
        Ok(())
    } else {
        Err(violation(
            "each member's outcome is what the auth rules say at that point of the log",
            format!(
                "{} applied {index} ({proposal:?}) as {:?}; the model says {verdict:?}",
                seen.node, seen.outcome
            ),
        ))
    }
}

/// The values a write command puts (each unique to its request in the workload).
fn values_of(command: &Command) -> Vec<Bytes> {
    fn ops(out: &mut Vec<Bytes>, o: &[RequestOp]) {
        for o in o {
            match o {
                RequestOp::Put(p) => out.push(p.value.clone()),
                RequestOp::Txn(t) => {
                    ops(out, &t.success);
                    ops(out, &t.failure);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match command {
        Command::Put(p) => out.push(p.value.clone()),
        Command::Txn(t) => {
            ops(&mut out, &t.success);
            ops(&mut out, &t.failure);
        }
        _ => {}
    }
    out
}
