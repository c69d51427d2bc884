//! etcd's authentication and role-based access control, as replicated state.
//!
//! The auth state ([`AuthState`]: whether auth is on, users, roles with key permissions, and
//! the key that signs tokens) changes only through the log ([`AuthRequest`], applied by
//! [`crate::Store::apply`]), so every member enforces the same rules at the same point of the
//! log. Passwords arrive already hashed (bcrypt, by the member that took the request) and the
//! token key arrives already drawn: applying stays deterministic.
//!
//! **Where permissions are checked.** A client's write carries an [`AuthInfo`] (the user the
//! member authenticated) in its [`crate::Proposal`], and the store checks the user's
//! permissions when it applies the entry, against the auth state as it is at that entry: a
//! revoke applied before the write refuses it on every member. Reads are checked by the member
//! that serves them against its applied auth state ([`AuthState::check_range`]). Internal
//! proposals (lease expiry, member publications) carry no `AuthInfo` and are not checked.
//!
//! **Permissions** follow etcd: a role grants READ, WRITE or READWRITE on a key, a range
//! `[key, range_end)` or everything from a key (`range_end` `"\0"`); a user may do what the
//! union of its roles' permissions covers; the `root` role may do everything, including
//! managing auth and the cluster. Operations etcd requires of a request:
//! - Range, a compare in a Txn: READ on the range;
//! - Put: WRITE on the key (and READ if it asks for the previous value);
//! - DeleteRange: WRITE on the range (and READ with `prev_kv`);
//! - Txn: all of the above for every compare and every op of both branches;
//! - LeaseRevoke: WRITE on every key attached to the lease;
//! - auth management, compaction, maintenance and cluster changes: the root role.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::api::{RequestOp, TxnRequest};
use crate::codec::{Reader, Writer};
use crate::error::DecodeError;

/// The user whose role makes it the administrator; [`AuthRequest::Enable`] requires it.
pub const ROOT_USER: &str = "root";
/// The role that may do everything.
pub const ROOT_ROLE: &str = "root";

/// Longest user or role name accepted (etcd has no limit; this bounds the state).
pub const NAME_BYTES_MAX: usize = 256;

/// What a permission allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionKind {
    /// Reading keys in the range.
    Read,
    /// Writing keys in the range.
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionKind {
    /// Whether this permission allows `needed` (`Read` or `Write`).
    pub fn allows(self, needed: PermissionKind) -> bool {
        self == PermissionKind::ReadWrite || self == needed
    }

    /// etcd's `authpb.Permission.Type` number.
    pub fn number(self) -> i32 {
        match self {
            PermissionKind::Read => 0,
            PermissionKind::Write => 1,
            PermissionKind::ReadWrite => 2,
        }
    }

    /// The kind for etcd's number, if it is one.
    pub fn from_number(n: i32) -> Option<PermissionKind> {
        match n {
            0 => Some(PermissionKind::Read),
            1 => Some(PermissionKind::Write),
            2 => Some(PermissionKind::ReadWrite),
            _ => None,
        }
    }
}

/// One key permission of a role: `kind` on etcd's range `(key, range_end)` (`range_end`
/// empty: the key alone; `"\0"`: every key from `key` on; otherwise `[key, range_end)`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// First key (permissions order by it, then by range end, as etcd lists them).
    pub key: Bytes,
    /// End of the range, as in a Range request.
    pub range_end: Bytes,
    /// What it allows.
    pub kind: PermissionKind,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The bcrypt hash of the password; `None` for a user added with `no_password`, who can
    /// authenticate only by a client certificate.
    pub password_hash: Option<String>,
    /// The roles granted, by name.
    pub roles: BTreeSet<String>,
    /// The auth revision at which the user was added or its password last changed: tokens
    /// issued before it are no longer valid.
    pub password_revision: u64,
}

/// A role: a set of key permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    /// The permissions, sorted and without duplicates.
    pub permissions: BTreeSet<Permission>,
}

/// Who sent a client's write, as the member that took it authenticated them. Carried in the
/// [`crate::Proposal`]; the store checks the user's permissions when it applies the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    /// The user name; empty when the request carried no credentials.
    pub user: String,
    /// For a token: the [`User::password_revision`] it was issued under (a password change or
    /// a delete and re-add since then makes the request fail with "invalid auth token"). `None`
    /// for a user named by a client certificate's common name.
    pub token_revision: Option<u64>,
}

/// A change to the auth state (etcd's `Auth` service's writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// `AuthEnable`: needs the root user with the root role. `token_key` (drawn at random by
    /// the proposer) signs the tokens issued from now on.
    Enable {
        /// The new token signing key (at least 16 bytes).
        token_key: Bytes,
    },
    /// `AuthDisable`.
    Disable,
    /// `UserAdd`.
    UserAdd {
        /// The name.
        name: String,
        /// The bcrypt hash of the password; `None` for `no_password`.
        password_hash: Option<String>,
    },
    /// `UserDelete`.
    UserDelete {
        /// The name.
        name: String,
    },
    /// `UserChangePassword`.
    UserChangePassword {
        /// The name.
        name: String,
        /// The bcrypt hash of the new password.
        password_hash: String,
    },
    /// `UserGrantRole`.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `UserRevokeRole`.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `RoleAdd`.
    RoleAdd {
        /// The name.
        name: String,
    },
    /// `RoleDelete`: also revokes the role from every user.
    RoleDelete {
        /// The name.
        name: String,
    },
    /// `RoleGrantPermission`: replaces a permission on the same range.
    RoleGrantPermission {
        /// The role.
        role: String,
        /// The permission.
        permission: Permission,
    },
    /// `RoleRevokePermission`: removes the permission on exactly this range.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// Its key.
        key: Bytes,
        /// Its range end.
        range_end: Bytes,
    },
}

/// The answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResponse {
    /// The store revision (unchanged: auth changes are not key changes).
    pub revision: i64,
    /// The auth revision after the change.
    pub auth_revision: u64,
}

/// etcd's auth errors; `Display` strings are etcd's (`rpctypes`), byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    /// `AuthEnable` without a root user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// `AuthEnable` while the root user lacks the root role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// `UserAdd` of an existing name.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// A request with no user while auth is on, or `UserAdd` of an empty name.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// A user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// `RoleAdd` of an existing name.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// A role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// `RoleAdd` of an empty name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// A wrong user or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// The user may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// `UserRevokeRole` of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// `RoleRevokePermission` of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// `Authenticate` while auth is off.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is malformed, expired, or issued before a password change.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// A change that would lock the administrator out (deleting root, revoking root's role)
    /// while auth is on.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A name longer than [`NAME_BYTES_MAX`], or a token key shorter than 16 bytes.
    #[error("etcdserver: invalid auth management")]
    InvalidRequest,
}

impl AuthError {
    /// The gRPC code etcd answers this error with.
    pub fn grpc_code(self) -> crate::GrpcCode {
        use crate::GrpcCode as G;
        match self {
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::InvalidAuthMgmt
            | AuthError::InvalidRequest => G::InvalidArgument,
            AuthError::PermissionDenied => G::PermissionDenied,
            AuthError::InvalidAuthToken => G::Unauthenticated,
            AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist
            | AuthError::UserAlreadyExist
            | AuthError::UserNotFound
            | AuthError::RoleAlreadyExist
            | AuthError::RoleNotFound
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted
            | AuthError::AuthNotEnabled => G::FailedPrecondition,
        }
    }
}

/// The replicated auth state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthState {
    pub(crate) enabled: bool,
    /// Grows by one with every applied change (etcd's auth revision).
    pub(crate) revision: u64,
    pub(crate) token_key: Bytes,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) roles: BTreeMap<String, Role>,
    /// Each user's permissions merged into intervals, rebuilt whenever the state changes (not
    /// per request, as etcd caches them too); derived from `users` and `roles`.
    pub(crate) checkers: BTreeMap<String, std::sync::Arc<Checker>>,
}

impl AuthState {
    /// Whether auth is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: the number of changes applied.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The key that signs tokens (empty until auth was first enabled).
    pub fn token_key(&self) -> &[u8] {
        &self.token_key
    }

    /// A user by name.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = (&str, &User)> {
        self.users.iter().map(|(n, u)| (n.as_str(), u))
    }

    /// A role by name.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every role, by name.
    pub fn roles(&self) -> impl Iterator<Item = (&str, &Role)> {
        self.roles.iter().map(|(n, r)| (n.as_str(), r))
    }

    /// Whether `user` has the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT_ROLE))
    }

    /// The user `info` names, if it may act at all: with auth off, anyone (`Ok(None)`); with
    /// auth on, a user that exists and whose token is still valid.
    pub fn identify<'a>(&'a self, info: &AuthInfo) -> Result<Option<&'a User>, AuthError> {
        if !self.enabled {
            return Ok(None);
        }
        if info.user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let Some(user) = self.users.get(&info.user) else {
            // A token for a deleted user is no longer valid; a certificate's name that is no
            // user may do nothing.
            return Err(match info.token_revision {
                Some(_) => AuthError::InvalidAuthToken,
                None => AuthError::PermissionDenied,
            });
        };
        if let Some(rev) = info.token_revision
            && rev != user.password_revision
        {
            return Err(AuthError::InvalidAuthToken);
        }
        Ok(Some(user))
    }

    /// Whether `info`'s user may administer (auth management, compaction, maintenance,
    /// cluster changes): always with auth off; with it on, only the root role.
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), AuthError> {
        match self.identify(info)? {
            None => Ok(()),
            Some(u) if u.roles.contains(ROOT_ROLE) => Ok(()),
            Some(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// Whether `info`'s user may read etcd's range `(key, range_end)`.
    pub fn check_range(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.check(info, |c| c.need(PermissionKind::Read, key, range_end))
    }

    /// Whether `info`'s user may write etcd's range `(key, range_end)`.
    pub fn check_write_range(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.check(info, |c| c.need(PermissionKind::Write, key, range_end))
    }

    /// Whether `info`'s user may do everything a transaction could do, on either branch.
    pub fn check_txn(&self, info: &AuthInfo, txn: &TxnRequest) -> Result<(), AuthError> {
        self.check(info, |c| c.txn(txn))
    }

    /// Whether `info`'s user may write every key in `keys` (a lease's keys, for a revoke).
    pub fn check_write_keys<'k>(
        &self,
        info: &AuthInfo,
        keys: impl IntoIterator<Item = &'k Bytes>,
    ) -> Result<(), AuthError> {
        self.check(info, |c| {
            for key in keys {
                c.need(PermissionKind::Write, key, b"")?;
            }
            Ok(())
        })
    }

    /// Whether `info`'s user may act at all (authenticated, with any permissions): for lease
    /// grants and keep-alives, which etcd lets any user do.
    pub fn check_authenticated(&self, info: &AuthInfo) -> Result<(), AuthError> {
        self.identify(info).map(|_| ())
    }

    /// Runs `f` against the permissions of `info`'s user, unless auth is off or the user has
    /// the root role.
    pub(crate) fn check(
        &self,
        info: &AuthInfo,
        f: impl FnOnce(&Checker) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        let Some(user) = self.identify(info)? else {
            return Ok(());
        };
        if user.roles.contains(ROOT_ROLE) {
            return Ok(());
        }
        match self.checkers.get(&info.user) {
            Some(c) => f(c),
            None => f(&Checker::for_user(self, user)),
        }
    }

    /// Rebuilds every user's merged permissions (after a change or a restore).
    fn rebuild_checkers(&mut self) {
        let checkers = self
            .users
            .iter()
            .map(|(name, user)| (name.clone(), std::sync::Arc::new(Checker::for_user(self, user))))
            .collect();
        self.checkers = checkers;
    }

    /// Applies a change; `info` is who asked (`None`: internal, unchecked). An error leaves
    /// the state as it was.
    pub(crate) fn apply(
        &mut self,
        info: Option<&AuthInfo>,
        request: AuthRequest,
    ) -> Result<u64, AuthError> {
        if let Some(info) = info {
            self.check_admin(info)?;
        }
        let next = self.revision + 1;
        match request {
            AuthRequest::Enable { token_key } => {
                if token_key.len() < 16 {
                    return Err(AuthError::InvalidRequest);
                }
                if self.enabled {
                    // etcd answers success to enabling twice and changes nothing.
                    return Ok(self.revision);
                }
                let root = self.users.get(ROOT_USER).ok_or(AuthError::RootUserNotExist)?;
                if !root.roles.contains(ROOT_ROLE) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_key = token_key;
            }
            AuthRequest::Disable => {
                if !self.enabled {
                    return Ok(self.revision);
                }
                self.enabled = false;
            }
            AuthRequest::UserAdd { name, password_hash } => {
                check_name(&name, AuthError::UserEmpty)?;
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let user = User { password_hash, roles: BTreeSet::new(), password_revision: next };
                self.users.insert(name, user);
            }
            AuthRequest::UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(&name).ok_or(AuthError::UserNotFound)?;
            }
            AuthRequest::UserChangePassword { name, password_hash } => {
                let user = self.users.get_mut(&name).ok_or(AuthError::UserNotFound)?;
                user.password_hash = Some(password_hash);
                user.password_revision = next;
            }
            AuthRequest::UserGrantRole { user, role } => {
                if !self.users.contains_key(&user) {
                    return Err(AuthError::UserNotFound);
                }
                // etcd grants the root role without it having been added.
                if role != ROOT_ROLE && !self.roles.contains_key(&role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(&user).expect("checked above");
                if !u.roles.insert(role) {
                    // etcd answers success to a grant the user already has.
                    return Ok(self.revision);
                }
            }
            AuthRequest::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(&user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.remove(&role) {
                    return Err(AuthError::RoleNotGranted);
                }
            }
            AuthRequest::RoleAdd { name } => {
                check_name(&name, AuthError::RoleEmpty)?;
                if self.roles.contains_key(&name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name, Role::default());
            }
            AuthRequest::RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(&name).ok_or(AuthError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(&name);
                }
            }
            AuthRequest::RoleGrantPermission { role, permission } => {
                let r = self.roles.get_mut(&role).ok_or(AuthError::RoleNotFound)?;
                r.permissions
                    .retain(|p| p.key != permission.key || p.range_end != permission.range_end);
                r.permissions.insert(permission);
            }
            AuthRequest::RoleRevokePermission { role, key, range_end } => {
                let r = self.roles.get_mut(&role).ok_or(AuthError::RoleNotFound)?;
                let before = r.permissions.len();
                r.permissions.retain(|p| p.key != key || p.range_end != range_end);
                if r.permissions.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
            }
        }
        self.revision = next;
        self.rebuild_checkers();
        Ok(next)
    }
}

fn check_name(name: &str, empty: AuthError) -> Result<(), AuthError> {
    if name.is_empty() {
        return Err(empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(AuthError::InvalidRequest);
    }
    Ok(())
}

/// The end of a half-open key interval: a key, or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum End {
    Key(Vec<u8>),
    Unbounded,
}

/// etcd's `(key, range_end)` as a half-open interval `[start, end)`, or `None` for an empty
/// range (`range_end <= key`, which matches no key).
fn interval(key: &[u8], range_end: &[u8]) -> Option<(Vec<u8>, End)> {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        return Some((key.to_vec(), End::Key(end)));
    }
    if range_end == [0] {
        return Some((key.to_vec(), End::Unbounded));
    }
    if range_end <= key {
        return None;
    }
    Some((key.to_vec(), End::Key(range_end.to_vec())))
}

/// A user's permissions as merged intervals, one list per direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checker {
    read: Vec<(Vec<u8>, End)>,
    write: Vec<(Vec<u8>, End)>,
}

impl Checker {
    fn for_user(state: &AuthState, user: &User) -> Checker {
        let mut read = Vec::new();
        let mut write = Vec::new();
        for role in user.roles.iter().filter_map(|r| state.roles.get(r)) {
            for p in &role.permissions {
                let Some(iv) = interval(&p.key, &p.range_end) else { continue };
                if p.kind.allows(PermissionKind::Read) {
                    read.push(iv.clone());
                }
                if p.kind.allows(PermissionKind::Write) {
                    write.push(iv);
                }
            }
        }
        Checker { read: merge(read), write: merge(write) }
    }

    /// `kind` (`Read` or `Write`) on etcd's range `(key, range_end)`.
    pub(crate) fn need(
        &self,
        kind: PermissionKind,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        let list = if kind == PermissionKind::Read { &self.read } else { &self.write };
        let Some((start, end)) = interval(key, range_end) else {
            // An empty range touches no key.
            return Ok(());
        };
        // The merged intervals are disjoint and sorted: the one that starts at or before
        // `start` last must reach `end`.
        let covering = list.iter().rev().find(|(s, _)| *s <= start);
        match covering {
            Some((_, e)) if *e >= end => Ok(()),
            _ => Err(AuthError::PermissionDenied),
        }
    }

    fn txn(&self, txn: &TxnRequest) -> Result<(), AuthError> {
        for c in &txn.compare {
            self.need(PermissionKind::Read, &c.key, &c.range_end)?;
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(r) => self.need(PermissionKind::Read, &r.key, &r.range_end)?,
                RequestOp::Put(p) => {
                    self.need(PermissionKind::Write, &p.key, b"")?;
                    if p.prev_kv {
                        self.need(PermissionKind::Read, &p.key, b"")?;
                    }
                }
                RequestOp::DeleteRange(d) => {
                    self.need(PermissionKind::Write, &d.key, &d.range_end)?;
                    if d.prev_kv {
                        self.need(PermissionKind::Read, &d.key, &d.range_end)?;
                    }
                }
                RequestOp::Txn(t) => self.txn(t)?,
            }
        }
        Ok(())
    }
}

/// Sorts intervals and merges those that overlap or touch.
fn merge(mut list: Vec<(Vec<u8>, End)>) -> Vec<(Vec<u8>, End)> {
    list.sort();
    let mut out: Vec<(Vec<u8>, End)> = Vec::with_capacity(list.len());
    for (start, end) in list {
        if let Some((_, last_end)) = out.last_mut() {
            let touches = match last_end {
                End::Unbounded => true,
                End::Key(k) => start <= *k,
            };
            if touches {
                if end > *last_end {
                    *last_end = end;
                }
                continue;
            }
        }
        out.push((start, end));
    }
    out
}

// ---- encoding (proposals and snapshots) ----

fn kind_tag(k: PermissionKind) -> u8 {
    k.number() as u8
}

fn get_kind(r: &mut Reader<'_>) -> Result<PermissionKind, DecodeError> {
    let tag = r.u8()?;
    PermissionKind::from_number(i32::from(tag))
        .ok_or(DecodeError::InvalidTag { what: "permission type", tag })
}

fn put_permission(w: &mut Writer, p: &Permission) {
    w.u8(kind_tag(p.kind));
    w.bytes(&p.key);
    w.bytes(&p.range_end);
}

fn get_permission(r: &mut Reader<'_>) -> Result<Permission, DecodeError> {
    Ok(Permission { kind: get_kind(r)?, key: r.bytes()?, range_end: r.bytes()? })
}

fn put_opt_string(w: &mut Writer, s: &Option<String>) {
    match s {
        None => w.bool(false),
        Some(s) => {
            w.bool(true);
            w.bytes(s.as_bytes());
        }
    }
}

fn get_opt_string(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    Ok(if r.bool()? { Some(r.string()?) } else { None })
}

pub(crate) fn put_auth_info(w: &mut Writer, info: &AuthInfo) {
    w.bytes(info.user.as_bytes());
    match info.token_revision {
        None => w.bool(false),
        Some(rev) => {
            w.bool(true);
            w.u64(rev);
        }
    }
}

pub(crate) fn get_auth_info(r: &mut Reader<'_>) -> Result<AuthInfo, DecodeError> {
    Ok(AuthInfo {
        user: r.string()?,
        token_revision: if r.bool()? { Some(r.u64()?) } else { None },
    })
}

pub(crate) fn put_auth_request(w: &mut Writer, a: &AuthRequest) {
    match a {
        AuthRequest::Enable { token_key } => {
            w.u8(1);
            w.bytes(token_key);
        }
        AuthRequest::Disable => w.u8(2),
        AuthRequest::UserAdd { name, password_hash } => {
            w.u8(3);
            w.bytes(name.as_bytes());
            put_opt_string(w, password_hash);
        }
        AuthRequest::UserDelete { name } => {
            w.u8(4);
            w.bytes(name.as_bytes());
        }
        AuthRequest::UserChangePassword { name, password_hash } => {
            w.u8(5);
            w.bytes(name.as_bytes());
            w.bytes(password_hash.as_bytes());
        }
        AuthRequest::UserGrantRole { user, role } => {
            w.u8(6);
            w.bytes(user.as_bytes());
            w.bytes(role.as_bytes());
        }
        AuthRequest::UserRevokeRole { user, role } => {
            w.u8(7);
            w.bytes(user.as_bytes());
            w.bytes(role.as_bytes());
        }
        AuthRequest::RoleAdd { name } => {
            w.u8(8);
            w.bytes(name.as_bytes());
        }
        AuthRequest::RoleDelete { name } => {
            w.u8(9);
            w.bytes(name.as_bytes());
        }
        AuthRequest::RoleGrantPermission { role, permission } => {
            w.u8(10);
            w.bytes(role.as_bytes());
            put_permission(w, permission);
        }
        AuthRequest::RoleRevokePermission { role, key, range_end } => {
            w.u8(11);
            w.bytes(role.as_bytes());
            w.bytes(key);
            w.bytes(range_end);
        }
    }
}

pub(crate) fn get_auth_request(r: &mut Reader<'_>) -> Result<AuthRequest, DecodeError> {
    Ok(match r.u8()? {
        1 => AuthRequest::Enable { token_key: r.bytes()? },
        2 => AuthRequest::Disable,
        3 => AuthRequest::UserAdd { name: r.string()?, password_hash: get_opt_string(r)? },
        4 => AuthRequest::UserDelete { name: r.string()? },
        5 => AuthRequest::UserChangePassword { name: r.string()?, password_hash: r.string()? },
        6 => AuthRequest::UserGrantRole { user: r.string()?, role: r.string()? },
        7 => AuthRequest::UserRevokeRole { user: r.string()?, role: r.string()? },
        8 => AuthRequest::RoleAdd { name: r.string()? },
        9 => AuthRequest::RoleDelete { name: r.string()? },
        10 => {
            AuthRequest::RoleGrantPermission { role: r.string()?, permission: get_permission(r)? }
        }
        11 => AuthRequest::RoleRevokePermission {
            role: r.string()?,
            key: r.bytes()?,
            range_end: r.bytes()?,
        },
        tag => return Err(DecodeError::InvalidTag { what: "auth request", tag }),
    })
}

/// The error numbers of [`AuthError`] in encoded outcomes.
pub(crate) fn auth_error_tag(e: AuthError) -> u8 {
    match e {
        AuthError::RootUserNotExist => 1,
        AuthError::RootRoleNotExist => 2,
        AuthError::UserAlreadyExist => 3,
        AuthError::UserEmpty => 4,
        AuthError::UserNotFound => 5,
        AuthError::RoleAlreadyExist => 6,
        AuthError::RoleNotFound => 7,
        AuthError::RoleEmpty => 8,
        AuthError::AuthFailed => 9,
        AuthError::PermissionDenied => 10,
        AuthError::RoleNotGranted => 11,
        AuthError::PermissionNotGranted => 12,
        AuthError::AuthNotEnabled => 13,
        AuthError::InvalidAuthToken => 14,
        AuthError::InvalidAuthMgmt => 15,
        AuthError::InvalidRequest => 16,
    }
}

pub(crate) fn auth_error_from_tag(tag: u8) -> Result<AuthError, DecodeError> {
    Ok(match tag {
        1 => AuthError::RootUserNotExist,
        2 => AuthError::RootRoleNotExist,
        3 => AuthError::UserAlreadyExist,
        4 => AuthError::UserEmpty,
        5 => AuthError::UserNotFound,
        6 => AuthError::RoleAlreadyExist,
        7 => AuthError::RoleNotFound,
        8 => AuthError::RoleEmpty,
        9 => AuthError::AuthFailed,
        10 => AuthError::PermissionDenied,
        11 => AuthError::RoleNotGranted,
        12 => AuthError::PermissionNotGranted,
        13 => AuthError::AuthNotEnabled,
        14 => AuthError::InvalidAuthToken,
        15 => AuthError::InvalidAuthMgmt,
        16 => AuthError::InvalidRequest,
        tag => return Err(DecodeError::InvalidTag { what: "auth error", tag }),
    })
}

/// The whole state as one snapshot record's body.
pub(crate) fn put_state(w: &mut Writer, s: &AuthState) {
    w.bool(s.enabled);
    w.u64(s.revision);
    w.bytes(&s.token_key);
    w.len(s.users.len());
    for (name, u) in &s.users {
        w.bytes(name.as_bytes());
        put_opt_string(w, &u.password_hash);
        w.u64(u.password_revision);
        w.len(u.roles.len());
        for role in &u.roles {
            w.bytes(role.as_bytes());
        }
    }
    w.len(s.roles.len());
    for (name, role) in &s.roles {
        w.bytes(name.as_bytes());
        w.len(role.permissions.len());
        for p in &role.permissions {
            put_permission(w, p);
        }
    }
}

/// Decodes [`put_state`]'s output, checking that names are sorted, unique and valid and that
/// no user's password revision is ahead of the auth revision.
pub(crate) fn get_state(r: &mut Reader<'_>) -> Result<AuthState, &'static str> {
    let d = |_: DecodeError| "undecodable auth record";
    let enabled = r.bool().map_err(d)?;
    let revision = r.u64().map_err(d)?;
    let token_key = r.bytes().map_err(d)?;
    let mut users = BTreeMap::new();
    for _ in 0..r.count().map_err(d)? {
        let name = r.string().map_err(d)?;
        let password_hash = get_opt_string(r).map_err(d)?;
        let password_revision = r.u64().map_err(d)?;
        if password_revision > revision {
            return Err("user password revision after the auth revision");
        }
        let mut roles = BTreeSet::new();
        for _ in 0..r.count().map_err(d)? {
            roles.insert(r.string().map_err(d)?);
        }
        if check_name(&name, AuthError::UserEmpty).is_err()
            || users.last_key_value().is_some_and(|(last, _): (&String, _)| *last >= name)
        {
            return Err("users out of order or invalid");
        }
        users.insert(name, User { password_hash, roles, password_revision });
    }
    let mut roles = BTreeMap::new();
    for _ in 0..r.count().map_err(d)? {
        let name = r.string().map_err(d)?;
        let mut permissions = BTreeSet::new();
        for _ in 0..r.count().map_err(d)? {
            permissions.insert(get_permission(r).map_err(d)?);
        }
        if check_name(&name, AuthError::RoleEmpty).is_err()
            || roles.last_key_value().is_some_and(|(last, _): (&String, _)| *last >= name)
        {
            return Err("roles out of order or invalid");
        }
        roles.insert(name, Role { permissions });
    }
    if enabled && token_key.len() < 16 {
        return Err("auth enabled without a token key");
    }
    let mut state =
        AuthState { enabled, revision, token_key, users, roles, checkers: BTreeMap::new() };
    state.rebuild_checkers();
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(kind: PermissionKind, key: &str, end: &str) -> Permission {
        Permission {
            kind,
            key: Bytes::copy_from_slice(key.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
        }
    }

    fn admin() -> AuthInfo {
        AuthInfo { user: ROOT_USER.into(), token_revision: None }
    }

    fn as_user(name: &str) -> AuthInfo {
        AuthInfo { user: name.into(), token_revision: None }
    }

    /// root (with the root role) and `alice` with READWRITE on `/a/` and READ on `k`, auth on.
    fn state() -> AuthState {
        let mut s = AuthState::default();
        for req in [
            AuthRequest::UserAdd { name: "root".into(), password_hash: Some("h".into()) },
            AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() },
            AuthRequest::UserAdd { name: "alice".into(), password_hash: Some("h".into()) },
            AuthRequest::RoleAdd { name: "app".into() },
            AuthRequest::RoleGrantPermission {
                role: "app".into(),
                permission: perm(PermissionKind::ReadWrite, "/a/", "/a0"),
            },
            AuthRequest::RoleGrantPermission {
                role: "app".into(),
                permission: perm(PermissionKind::Read, "k", ""),
            },
            AuthRequest::UserGrantRole { user: "alice".into(), role: "app".into() },
            AuthRequest::Enable { token_key: Bytes::from_static(&[7; 32]) },
        ] {
            s.apply(None, req).unwrap();
        }
        s
    }

    #[test]
    fn enable_needs_the_root_user_with_the_root_role() {
        let mut s = AuthState::default();
        let enable = || AuthRequest::Enable { token_key: Bytes::from_static(&[1; 16]) };
        assert_eq!(s.apply(None, enable()), Err(AuthError::RootUserNotExist));
        s.apply(None, AuthRequest::UserAdd { name: "root".into(), password_hash: None }).unwrap();
        assert_eq!(s.apply(None, enable()), Err(AuthError::RootRoleNotExist));
        s.apply(None, AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() })
            .unwrap();
        s.apply(None, enable()).unwrap();
        assert!(s.enabled());
    }

    #[test]
    fn a_failed_change_leaves_the_state_and_revision_as_they_were() {
        let mut s = state();
        let before = s.clone();
        assert_eq!(
            s.apply(Some(&admin()), AuthRequest::RoleAdd { name: "app".into() }),
            Err(AuthError::RoleAlreadyExist)
        );
        assert_eq!(s, before);
    }

    #[test]
    fn management_needs_the_root_role_while_auth_is_on() {
        let mut s = state();
        assert_eq!(
            s.apply(Some(&as_user("alice")), AuthRequest::RoleAdd { name: "x".into() }),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            s.apply(
                Some(&AuthInfo { user: String::new(), token_revision: None }),
                AuthRequest::Disable
            ),
            Err(AuthError::UserEmpty)
        );
        s.apply(Some(&admin()), AuthRequest::RoleAdd { name: "x".into() }).unwrap();
    }

    #[test]
    fn root_cannot_be_locked_out_while_auth_is_on() {
        let mut s = state();
        let a = Some(admin());
        assert_eq!(
            s.apply(a.as_ref(), AuthRequest::UserDelete { name: "root".into() }),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            s.apply(a.as_ref(), AuthRequest::RoleDelete { name: "root".into() }),
            Err(AuthError::InvalidAuthMgmt)
        );
        assert_eq!(
            s.apply(
                a.as_ref(),
                AuthRequest::UserRevokeRole { user: "root".into(), role: "root".into() }
            ),
            Err(AuthError::InvalidAuthMgmt)
        );
    }

    #[test]
    fn permissions_cover_keys_ranges_and_prefixes_as_granted() {
        let s = state();
        let alice = as_user("alice");
        assert_eq!(s.check_range(&alice, b"/a/x", b""), Ok(()));
        assert_eq!(s.check_range(&alice, b"/a/", b"/a0"), Ok(()));
        assert_eq!(s.check_range(&alice, b"/a/b", b"/a/c"), Ok(()));
        assert_eq!(s.check_range(&alice, b"/a/", b"/b"), Err(AuthError::PermissionDenied));
        assert_eq!(s.check_range(&alice, b"/a/", b"\0"), Err(AuthError::PermissionDenied));
        assert_eq!(s.check_range(&alice, b"k", b""), Ok(()));
        assert_eq!(s.check_range(&alice, b"k", b"l"), Err(AuthError::PermissionDenied));
        assert_eq!(s.check_range(&alice, b"/b", b""), Err(AuthError::PermissionDenied));
        // READ on k is not WRITE.
        assert_eq!(
            s.check_write_keys(&alice, [&Bytes::from_static(b"k")]),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(s.check_range(&admin(), b"\0", b"\0"), Ok(()));
        assert_eq!(s.check_range(&as_user("nobody"), b"k", b""), Err(AuthError::PermissionDenied));
    }

    #[test]
    fn adjacent_grants_merge_into_one_range() {
        let mut s = state();
        let a = Some(admin());
        for (k, e) in [("b", "d"), ("d", "f")] {
            s.apply(
                a.as_ref(),
                AuthRequest::RoleGrantPermission {
                    role: "app".into(),
                    permission: perm(PermissionKind::Read, k, e),
                },
            )
            .unwrap();
        }
        assert_eq!(s.check_range(&as_user("alice"), b"b", b"f"), Ok(()));
        assert_eq!(s.check_range(&as_user("alice"), b"b", b"g"), Err(AuthError::PermissionDenied));
    }

    #[test]
    fn tokens_issued_before_a_password_change_are_invalid() {
        let mut s = state();
        let rev = s.user("alice").unwrap().password_revision;
        let token = AuthInfo { user: "alice".into(), token_revision: Some(rev) };
        assert_eq!(s.check_range(&token, b"k", b""), Ok(()));
        s.apply(
            None,
            AuthRequest::UserChangePassword { name: "alice".into(), password_hash: "h2".into() },
        )
        .unwrap();
        assert_eq!(s.check_range(&token, b"k", b""), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn with_auth_off_everything_is_allowed() {
        let mut s = state();
        s.apply(Some(&admin()), AuthRequest::Disable).unwrap();
        assert_eq!(s.check_range(&as_user(""), b"/b", b"\0"), Ok(()));
        assert_eq!(s.check_admin(&as_user("")), Ok(()));
    }

    #[test]
    fn the_state_round_trips_through_its_record() {
        let s = state();
        let mut w = Writer::default();
        put_state(&mut w, &s);
        let mut r = Reader::new(&w.buf);
        assert_eq!(get_state(&mut r).unwrap(), s);
        assert_eq!(r.remaining(), 0);
    }
}
