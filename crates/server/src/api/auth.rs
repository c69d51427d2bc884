//! `etcdserverpb.Auth`, and who sent a request: tokens, logins and the checks every service
//! runs.
//!
//! **State.** Users, roles and whether auth is on are replicated state ([`tenure_kv::auth`]):
//! every change here is a proposal, applied by every member at the same point of the log.
//! Passwords are hashed with bcrypt (etcd's `--bcrypt-cost`) by the member that takes the
//! request, before proposing, so the log holds hashes and applying stays deterministic.
//!
//! **Tokens** (etcd's `simple` token provider, by its observable behaviour): `Authenticate`
//! checks the password against this member's applied state after a linearizable barrier and
//! answers a token that any member can check without a round trip or shared memory: the user,
//! the user's password revision and an expiry, signed with HMAC-SHA256 under a key drawn when
//! auth was enabled and replicated with the auth state. A token is refused ("invalid auth
//! token") once it has expired (`--auth-token-ttl`, etcd's default 300 s), once the user's
//! password changed or the user was deleted, and once auth was disabled and enabled again (a
//! new key). Clients re-authenticate on that error, as etcd's clients do.
//!
//! **Who sends a request** ([`Services::auth_info`]): the user of a valid `token` in the
//! request's metadata; else, with `--client-cert-auth`, the common name of the client's
//! verified certificate (etcd's rule); else nobody (an empty user, refused with "user name is
//! empty" while auth is on). Writes carry it in their proposal and are checked when they apply
//! (against the auth state at their entry); reads are checked by the member that serves them,
//! after the read, against the state it has applied by then; watches when they are created and
//! again whenever the auth state changes (a watcher whose range is no longer readable is
//! cancelled with "permission denied" before any later event reaches it); admin-only services
//! (maintenance, cluster changes, auth management) need the root role.
//!
//! **Failed logins** are logged with the user name, never the password, and rate-limited per
//! user: after [`LOGIN_FAILURES_FREE`] failures in a row, further attempts for that user are
//! refused without checking the password until a lockout passes that doubles with every
//! failure (from 1 s up to [`LOGIN_LOCKOUT_MAX`]); a success clears it. At most
//! [`BCRYPT_VERIFIES_MAX`] password checks run at once, so a flood of logins cannot starve the
//! member of CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenure_kv::{
    AuthError, AuthInfo, AuthRequest, AuthState, Command, Permission, PermissionKind, Response,
};
use tenure_replica::Answer;
use tonic::{Request, Status};

use super::{Services, client_status, submit_status, unexpected};
use crate::ServerError;
use crate::pb::authpb;
use crate::pb::etcdserverpb as pb;

/// etcd's default `--auth-token-ttl`, in seconds.
pub const TOKEN_TTL_SECS_DEFAULT: u64 = 300;
/// etcd's default `--bcrypt-cost` (bcrypt's own default).
pub const BCRYPT_COST_DEFAULT: u32 = 10;
/// Failed logins for one user before attempts are refused for a while.
pub const LOGIN_FAILURES_FREE: u32 = 3;
/// The longest a user's logins are refused after failures.
pub const LOGIN_LOCKOUT_MAX: Duration = Duration::from_secs(60);
/// Password checks (bcrypt) running at once at most on one member.
pub const BCRYPT_VERIFIES_MAX: usize = 2;

/// The metadata key etcd's clients put the token in.
const TOKEN_METADATA: &str = "token";
/// Where etcd's JSON gateway puts the token (from the HTTP `Authorization` header).
const GATEWAY_TOKEN_METADATA: &str = "authorization";
/// What the HMAC of a token covers first, so a token can never be confused with another MAC
/// made with the same key.
const TOKEN_DOMAIN: &[u8] = b"tenure-auth-token-v1";

/// How this member authenticates (etcd's `--auth-token`, `--auth-token-ttl`, `--bcrypt-cost`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// How long a token stays valid after `Authenticate`.
    pub token_ttl: Duration,
    /// bcrypt's cost for new passwords (4..=31).
    pub bcrypt_cost: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token_ttl: Duration::from_secs(TOKEN_TTL_SECS_DEFAULT),
            bcrypt_cost: BCRYPT_COST_DEFAULT,
        }
    }
}

/// Failed logins of one user.
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Tokens this member saw used, by their MAC: until when each stays valid. etcd's simple
/// tokens live `--auth-token-ttl` from their last use on a member, not from their issue; a
/// token carries its first expiry, signed, and each use here pushes it back.
#[derive(Default)]
struct TokenUses {
    deadlines: Mutex<HashMap<Box<str>, u64>>,
}

/// Tokens remembered at most; beyond it the expired ones are dropped first.
const TOKEN_USES_MAX: usize = 100_000;

impl TokenUses {
    /// Whether a token whose MAC is `tag`, first valid until `expiry_ms`, is still valid at
    /// `now_ms`; if it is, its validity now runs until `now_ms + ttl_ms`.
    fn used(&self, tag: &str, expiry_ms: u64, now_ms: u64, ttl_ms: u64) -> bool {
        let mut deadlines = self.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = deadlines.get(tag).copied().unwrap_or(0).max(expiry_ms);
        if now_ms >= deadline {
            deadlines.remove(tag);
            return false;
        }
        if deadlines.len() >= TOKEN_USES_MAX && !deadlines.contains_key(tag) {
            deadlines.retain(|_, d| *d > now_ms);
            if deadlines.len() >= TOKEN_USES_MAX {
                // Still full of live tokens: this one keeps its signed expiry only.
                return true;
            }
        }
        deadlines.insert(tag.into(), now_ms.saturating_add(ttl_ms).max(deadline));
        true
    }
}

/// The member's authentication machinery: configuration, login rate limits, bcrypt slots,
/// and the tokens' extensions on use.
pub struct Authenticator {
    config: AuthConfig,
    failures: Mutex<HashMap<String, Failures>>,
    bcrypt_slots: tokio::sync::Semaphore,
    token_uses: TokenUses,
}

impl Authenticator {
    /// An authenticator with `config`.
    pub fn new(config: AuthConfig) -> Authenticator {
        Authenticator {
            config,
            failures: Mutex::new(HashMap::new()),
            bcrypt_slots: tokio::sync::Semaphore::new(BCRYPT_VERIFIES_MAX),
            token_uses: TokenUses::default(),
        }
    }

    /// The user and password revision `token` names, if `key` signed it and it is still
    /// valid here: within `--auth-token-ttl` of its issue or of its last use on this member.
    fn check_token(
        &self,
        key: &[u8],
        token: &str,
        now_ms: u64,
    ) -> Result<(String, u64), AuthError> {
        let signed = verify_signature(key, token)?;
        let ttl_ms = u64::try_from(self.config.token_ttl.as_millis()).unwrap_or(u64::MAX);
        if !self.token_uses.used(signed.tag, signed.expiry_ms, now_ms, ttl_ms) {
            return Err(AuthError::InvalidAuthToken);
        }
        Ok((signed.user, signed.password_revision))
    }

    /// The lockout left for `user`, if its logins are refused now.
    fn locked_out(&self, user: &str, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = failures.get(user)?;
        if f.count < LOGIN_FAILURES_FREE {
            return None;
        }
        let lockout = lockout_after(f.count);
        let until = f.last + lockout;
        (now < until).then(|| until - now)
    }

    fn record_failure(&self, user: &str, now: Instant) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Bound the table: a flood of made-up names must not grow it without end.
        if failures.len() >= 100_000 && !failures.contains_key(user) {
            failures.retain(|_, f| now.duration_since(f.last) < LOGIN_LOCKOUT_MAX);
        }
        let f = failures.entry(user.to_string()).or_insert(Failures { count: 0, last: now });
        f.count = f.count.saturating_add(1);
        f.last = now;
        f.count
    }

    fn clear_failures(&self, user: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(user);
    }

    /// Hashes `password` with bcrypt at the configured cost, off the async workers.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.config.bcrypt_cost;
        let _slot = self.bcrypt_slots.acquire().await.map_err(|_| ServerError::Stopped)?;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|_| Status::internal("tenure: password hashing failed"))?
            .map_err(|e| Status::internal(format!("tenure: password hashing failed: {e}")))
    }

    /// Whether `password` matches `hash`, off the async workers.
    async fn verify(&self, password: String, hash: String) -> Result<bool, Status> {
        let _slot = self.bcrypt_slots.acquire().await.map_err(|_| ServerError::Stopped)?;
        Ok(tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false))
    }
}

/// How long a user's logins are refused after `count` failures in a row (from
/// [`LOGIN_FAILURES_FREE`] on): 1 s, doubling, at most [`LOGIN_LOCKOUT_MAX`].
fn lockout_after(count: u32) -> Duration {
    let doublings = count.saturating_sub(LOGIN_FAILURES_FREE).min(10);
    Duration::from_secs(1u64 << doublings).min(LOGIN_LOCKOUT_MAX)
}

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn mac(key: &[u8], user: &str, password_revision: u64, expiry_ms: u64) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any size");
    m.update(TOKEN_DOMAIN);
    m.update(&(user.len() as u64).to_be_bytes());
    m.update(user.as_bytes());
    m.update(&password_revision.to_be_bytes());
    m.update(&expiry_ms.to_be_bytes());
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// A token for `user` (at its `password_revision`) valid until `expiry_ms` (Unix time),
/// signed with `key`: `hex(user).revision.expiry.hex(mac)`.
pub fn issue_token(key: &[u8], user: &str, password_revision: u64, expiry_ms: u64) -> String {
    let tag = mac(key, user, password_revision, expiry_ms).finalize().into_bytes();
    format!("{}.{password_revision}.{expiry_ms}.{}", hex(user.as_bytes()), hex(&tag))
}

/// The user and password revision a token names, if `key` signed it and it has not expired
/// at `now_ms` (its signed expiry; a member also extends it on use). Whether the user still
/// exists with that revision is the auth state's check.
pub fn verify_token(key: &[u8], token: &str, now_ms: u64) -> Result<(String, u64), AuthError> {
    let signed = verify_signature(key, token)?;
    if now_ms >= signed.expiry_ms {
        return Err(AuthError::InvalidAuthToken);
    }
    Ok((signed.user, signed.password_revision))
}

/// What a token signed with the right key says.
struct Signed<'a> {
    user: String,
    password_revision: u64,
    expiry_ms: u64,
    /// The MAC, as the token spells it: the token's identity.
    tag: &'a str,
}

/// A token's fields, if `key` signed it (expired or not).
fn verify_signature<'a>(key: &[u8], token: &'a str) -> Result<Signed<'a>, AuthError> {
    let invalid = AuthError::InvalidAuthToken;
    let mut parts = token.split('.');
    let (Some(user), Some(rev), Some(expiry), Some(tag_text), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid);
    };
    let user = unhex(user).and_then(|u| String::from_utf8(u).ok()).ok_or(invalid)?;
    let rev: u64 = rev.parse().map_err(|_| invalid)?;
    let expiry: u64 = expiry.parse().map_err(|_| invalid)?;
    let tag = unhex(tag_text).ok_or(invalid)?;
    if key.is_empty() {
        return Err(invalid);
    }
    mac(key, &user, rev, expiry).verify_slice(&tag).map_err(|_| invalid)?;
    Ok(Signed { user, password_revision: rev, expiry_ms: expiry, tag: tag_text })
}

/// The token `request` carries, to send on with a call this member forwards to the leader.
pub(crate) fn forwarded_token<T>(
    request: &Request<T>,
) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    let md = request.metadata();
    md.get(TOKEN_METADATA).or_else(|| md.get(GATEWAY_TOKEN_METADATA)).cloned()
}

/// `message` as a request to another member, with the client's token if it had one.
pub(crate) fn forward<T>(
    message: T,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(TOKEN_METADATA, token);
    }
    request
}

/// A short-lived token for the root user, minted by this member itself (it holds the key), for
/// the calls members make to each other's client URLs that need the root role (the integrity
/// checks' `HashKV`); `None` while auth is off.
pub fn member_token(state: &AuthState) -> Option<String> {
    if !state.enabled() {
        return None;
    }
    let root = state.user(tenure_kv::auth::ROOT_USER)?;
    let expiry = now_unix_ms().saturating_add(60_000);
    Some(issue_token(state.token_key(), tenure_kv::auth::ROOT_USER, root.password_revision, expiry))
}

/// An auth error as etcd answers it.
pub(crate) fn auth_status(e: AuthError) -> Status {
    ServerError::Kv(tenure_kv::Error::Auth(e)).into()
}

/// 32 random bytes from the operating system, for a new token key.
fn random_key() -> Result<Bytes, Status> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| Status::internal(format!("tenure: no randomness for a token key: {e}")))?;
    Ok(Bytes::copy_from_slice(&key))
}

impl Services {
    /// Who sent `request` (see the module docs). With auth off, an empty user: the proposal
    /// still carries it, so a write that applies after auth was enabled is refused.
    pub(crate) fn auth_info<T>(&self, request: &Request<T>) -> Result<AuthInfo, Status> {
        let state = self.runtime.auth();
        // etcd reads `token`, and `authorization` (what its JSON gateway passes on).
        let md = request.metadata();
        if let Some(token) = md.get(TOKEN_METADATA).or_else(|| md.get(GATEWAY_TOKEN_METADATA)) {
            if !state.enabled() {
                return Ok(AuthInfo { user: String::new(), token_revision: None });
            }
            let token = token.to_str().map_err(|_| auth_status(AuthError::InvalidAuthToken))?;
            let (user, rev) = self
                .auth
                .check_token(state.token_key(), token, now_unix_ms())
                .map_err(auth_status)?;
            return Ok(AuthInfo { user, token_revision: Some(rev) });
        }
        if let Some(cn) = crate::tls::client_common_name(request) {
            return Ok(AuthInfo { user: cn, token_revision: None });
        }
        Ok(AuthInfo { user: String::new(), token_revision: None })
    }

    /// Whether `info` may read etcd's range `(key, range_end)` on this member now.
    pub(crate) fn check_read(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), Status> {
        self.runtime.auth().check_range(info, key, range_end).map_err(auth_status)
    }

    /// For the Lock and Election services, which run etcd's client recipes inside the member
    /// (their own proposals are not checked when they apply): whether the sender of `request`
    /// may read, and with `write` also write, every key under `prefix`, as the recipe will.
    pub(crate) fn check_recipe<T>(
        &self,
        request: &Request<T>,
        prefix: &[u8],
        write: bool,
    ) -> Result<(), Status> {
        let info = self.auth_info(request)?;
        let state = self.runtime.auth();
        let end = tenure_kv::api::prefix_end(prefix);
        state.check_range(&info, prefix, &end).map_err(auth_status)?;
        if write {
            state.check_write_range(&info, prefix, &end).map_err(auth_status)?;
        }
        Ok(())
    }

    /// Whether the sender of `request` may administer (the root role, or auth off).
    pub(crate) fn check_admin<T>(&self, request: &Request<T>) -> Result<AuthInfo, Status> {
        let info = self.auth_info(request)?;
        self.runtime.auth().check_admin(&info).map_err(auth_status)?;
        Ok(info)
    }

    /// Whether the sender of `request` is a valid user (or auth is off).
    pub(crate) fn check_authenticated<T>(&self, request: &Request<T>) -> Result<AuthInfo, Status> {
        let info = self.auth_info(request)?;
        self.runtime.auth().check_authenticated(&info).map_err(auth_status)?;
        Ok(info)
    }

    /// Proposes an auth change as `info` and waits for it to apply.
    async fn propose_auth(&self, info: AuthInfo, request: AuthRequest) -> Result<i64, Status> {
        let _permit = self.admit()?;
        let proposal = tenure_kv::Proposal::new(Command::Auth(request)).with_auth(info);
        let rx = self.runtime.propose(proposal).map_err(submit_status)?;
        match rx.await {
            Ok(Ok(Answer::Write(Response::Auth(r)))) => Ok(r.revision),
            Ok(Ok(_)) => Err(unexpected("an auth change")),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }

    /// The auth state after a linearizable barrier: everything committed before the call.
    async fn fresh_auth(&self) -> Result<Arc<AuthState>, Status> {
        let _permit = self.admit()?;
        let rx = self.runtime.barrier().map_err(submit_status)?;
        match rx.await {
            Ok(Ok(_)) => Ok(self.runtime.auth()),
            Ok(Err(e)) => Err(client_status(e)),
            Err(_) => Err(ServerError::Stopped.into()),
        }
    }

    /// The auth state after a barrier, for a reader that must administer.
    async fn admin_view<T>(&self, request: &Request<T>) -> Result<Arc<AuthState>, Status> {
        let info = self.auth_info(request)?;
        let state = self.fresh_auth().await?;
        state.check_admin(&info).map_err(auth_status)?;
        Ok(state)
    }

    fn auth_header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.ctx().header(revision))
    }

    fn revision_now(&self) -> i64 {
        self.runtime.status().revision
    }

    async fn change<T>(&self, request: &Request<T>, change: AuthRequest) -> Result<i64, Status> {
        let info = self.auth_info(request)?;
        self.propose_auth(info, change).await
    }

    /// The bcrypt hash for a user add or password change: the client's own hash (etcd 3.5's
    /// `hashedPassword`) if it sent one, else the password hashed here.
    async fn password_hash(&self, password: String, hashed: String) -> Result<String, Status> {
        if !hashed.is_empty() {
            if hashed.parse::<bcrypt::HashParts>().is_err() {
                return Err(Status::invalid_argument(
                    "tenure: hashedPassword is not a bcrypt hash",
                ));
            }
            return Ok(hashed);
        }
        self.auth.hash(password).await
    }
}

fn permission_from_pb(p: authpb::Permission) -> Result<Permission, Status> {
    let kind = PermissionKind::from_number(p.perm_type)
        .ok_or_else(|| Status::invalid_argument("tenure: unknown permission type"))?;
    Ok(Permission { kind, key: p.key, range_end: p.range_end })
}

fn permission_to_pb(p: &Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: p.kind.number(),
        key: p.key.clone(),
        range_end: p.range_end.clone(),
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Services {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<tonic::Response<pb::AuthEnableResponse>, Status> {
        let rev = self.change(&request, AuthRequest::Enable { token_key: random_key()? }).await?;
        tracing::info!("auth enabled");
        Ok(tonic::Response::new(pb::AuthEnableResponse { header: self.auth_header(rev) }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<tonic::Response<pb::AuthDisableResponse>, Status> {
        let rev = self.change(&request, AuthRequest::Disable).await?;
        tracing::info!("auth disabled");
        Ok(tonic::Response::new(pb::AuthDisableResponse { header: self.auth_header(rev) }))
    }

    async fn auth_status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<tonic::Response<pb::AuthStatusResponse>, Status> {
        let state = self.fresh_auth().await?;
        Ok(tonic::Response::new(pb::AuthStatusResponse {
            header: self.auth_header(self.revision_now()),
            enabled: state.enabled(),
            auth_revision: state.revision(),
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<tonic::Response<pb::AuthenticateResponse>, Status> {
        let _permit = self.admit()?;
        let pb::AuthenticateRequest { name, password } = request.into_inner();
        let state = self.fresh_auth().await?;
        if !state.enabled() {
            return Err(auth_status(AuthError::AuthNotEnabled));
        }
        let started = Instant::now();
        if let Some(left) = self.auth.locked_out(&name, started) {
            tracing::warn!(
                "login refused for user {name:?}: too many failed attempts ({} s left)",
                left.as_secs_f64().ceil()
            );
            return Err(auth_status(AuthError::AuthFailed));
        }
        let user = state.user(&name);
        let ok = match user.and_then(|u| u.password_hash.clone()) {
            Some(hash) => self.auth.verify(password, hash).await?,
            None => false,
        };
        let (Some(user), true) = (user, ok) else {
            let count = self.auth.record_failure(&name, Instant::now());
            tracing::warn!("authentication failed for user {name:?} ({count} in a row)");
            return Err(auth_status(AuthError::AuthFailed));
        };
        self.auth.clear_failures(&name);
        let expiry = now_unix_ms().saturating_add(self.auth.config.token_ttl.as_millis() as u64);
        let token = issue_token(state.token_key(), &name, user.password_revision, expiry);
        Ok(tonic::Response::new(pb::AuthenticateResponse {
            header: self.auth_header(self.revision_now()),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<tonic::Response<pb::AuthUserAddResponse>, Status> {
        let info = self.auth_info(&request)?;
        let r = request.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        // Check before hashing, so that refused requests cost no bcrypt.
        self.runtime.auth().check_admin(&info).map_err(auth_status)?;
        if r.name.is_empty() {
            return Err(auth_status(AuthError::UserEmpty));
        }
        let password_hash = if no_password {
            None
        } else {
            Some(self.password_hash(r.password, r.hashed_password).await?)
        };
        let rev =
            self.propose_auth(info, AuthRequest::UserAdd { name: r.name, password_hash }).await?;
        Ok(tonic::Response::new(pb::AuthUserAddResponse { header: self.auth_header(rev) }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<tonic::Response<pb::AuthUserGetResponse>, Status> {
        let state = self.admin_view(&request).await?;
        let user =
            state.user(&request.get_ref().name).ok_or(auth_status(AuthError::UserNotFound))?;
        Ok(tonic::Response::new(pb::AuthUserGetResponse {
            header: self.auth_header(self.revision_now()),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<tonic::Response<pb::AuthUserListResponse>, Status> {
        let state = self.admin_view(&request).await?;
        Ok(tonic::Response::new(pb::AuthUserListResponse {
            header: self.auth_header(self.revision_now()),
            users: state.users().map(|(n, _)| n.to_string()).collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<tonic::Response<pb::AuthUserDeleteResponse>, Status> {
        let name = request.get_ref().name.clone();
        let rev = self.change(&request, AuthRequest::UserDelete { name }).await?;
        Ok(tonic::Response::new(pb::AuthUserDeleteResponse { header: self.auth_header(rev) }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<tonic::Response<pb::AuthUserChangePasswordResponse>, Status> {
        let info = self.auth_info(&request)?;
        self.runtime.auth().check_admin(&info).map_err(auth_status)?;
        let r = request.into_inner();
        let password_hash = self.password_hash(r.password, r.hashed_password).await?;
        let rev = self
            .propose_auth(info, AuthRequest::UserChangePassword { name: r.name, password_hash })
            .await?;
        Ok(tonic::Response::new(pb::AuthUserChangePasswordResponse {
            header: self.auth_header(rev),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<tonic::Response<pb::AuthUserGrantRoleResponse>, Status> {
        let r = request.get_ref().clone();
        let rev = self
            .change(&request, AuthRequest::UserGrantRole { user: r.user, role: r.role })
            .await?;
        Ok(tonic::Response::new(pb::AuthUserGrantRoleResponse { header: self.auth_header(rev) }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<tonic::Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let r = request.get_ref().clone();
        let rev = self
            .change(&request, AuthRequest::UserRevokeRole { user: r.name, role: r.role })
            .await?;
        Ok(tonic::Response::new(pb::AuthUserRevokeRoleResponse { header: self.auth_header(rev) }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<tonic::Response<pb::AuthRoleAddResponse>, Status> {
        let name = request.get_ref().name.clone();
        let rev = self.change(&request, AuthRequest::RoleAdd { name }).await?;
        Ok(tonic::Response::new(pb::AuthRoleAddResponse { header: self.auth_header(rev) }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<tonic::Response<pb::AuthRoleGetResponse>, Status> {
        let state = self.admin_view(&request).await?;
        let role =
            state.role(&request.get_ref().role).ok_or(auth_status(AuthError::RoleNotFound))?;
        let perm = role.permissions.iter().map(permission_to_pb).collect();
        Ok(tonic::Response::new(pb::AuthRoleGetResponse {
            header: self.auth_header(self.revision_now()),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<tonic::Response<pb::AuthRoleListResponse>, Status> {
        let state = self.admin_view(&request).await?;
        Ok(tonic::Response::new(pb::AuthRoleListResponse {
            header: self.auth_header(self.revision_now()),
            roles: state.roles().map(|(n, _)| n.to_string()).collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<tonic::Response<pb::AuthRoleDeleteResponse>, Status> {
        let name = request.get_ref().role.clone();
        let rev = self.change(&request, AuthRequest::RoleDelete { name }).await?;
        Ok(tonic::Response::new(pb::AuthRoleDeleteResponse { header: self.auth_header(rev) }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<tonic::Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let r = request.get_ref().clone();
        let perm = r.perm.ok_or_else(|| Status::invalid_argument("tenure: no permission given"))?;
        let permission = permission_from_pb(perm)?;
        let rev = self
            .change(&request, AuthRequest::RoleGrantPermission { role: r.name, permission })
            .await?;
        Ok(tonic::Response::new(pb::AuthRoleGrantPermissionResponse {
            header: self.auth_header(rev),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<tonic::Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let r = request.get_ref().clone();
        let change =
            AuthRequest::RoleRevokePermission { role: r.role, key: r.key, range_end: r.range_end };
        let rev = self.change(&request, change).await?;
        Ok(tonic::Response::new(pb::AuthRoleRevokePermissionResponse {
            header: self.auth_header(rev),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_its_ttl_from_its_last_use() {
        let uses = TokenUses::default();
        // First valid until 1,000; each use pushes its end to the use plus the TTL (500).
        assert!(uses.used("t", 1_000, 900, 500));
        assert!(uses.used("t", 1_000, 1_300, 500), "extended to 1,400 by the use at 900");
        assert!(uses.used("t", 1_000, 1_799, 500));
        assert!(!uses.used("t", 1_000, 2_299, 500), "idle for a whole TTL");
        assert!(!uses.used("t", 1_000, 2_300, 500), "and it stays expired");
        // Never used: its signed expiry alone.
        assert!(!uses.used("u", 1_000, 1_000, 500));
    }

    const KEY: &[u8] = &[5; 32];

    #[test]
    fn a_token_verifies_under_its_key_until_it_expires() {
        let t = issue_token(KEY, "alice.b", 7, 10_000);
        assert_eq!(verify_token(KEY, &t, 9_999), Ok(("alice.b".to_string(), 7)));
        assert_eq!(verify_token(KEY, &t, 10_000), Err(AuthError::InvalidAuthToken));
        assert_eq!(verify_token(&[6; 32], &t, 0), Err(AuthError::InvalidAuthToken));
        assert_eq!(verify_token(b"", &t, 0), Err(AuthError::InvalidAuthToken));
    }

    #[test]
    fn a_tampered_or_malformed_token_is_invalid() {
        let t = issue_token(KEY, "alice", 7, 10_000);
        // Another user, revision or expiry under the same tag.
        let forged = t.replacen(&hex(b"alice"), &hex(b"root"), 1);
        assert_eq!(verify_token(KEY, &forged, 0), Err(AuthError::InvalidAuthToken));
        let later = t.replacen(".10000.", ".99999.", 1);
        assert_eq!(verify_token(KEY, &later, 0), Err(AuthError::InvalidAuthToken));
        for bad in ["", "a.b", "zz.1.2.00", "61.x.2.00", "61.1.2.0", "61.1.2.00.00", "\u{e9}.1.1.1"]
        {
            assert_eq!(verify_token(KEY, bad, 0), Err(AuthError::InvalidAuthToken), "{bad:?}");
        }
    }

    #[test]
    fn a_member_token_names_root_at_its_password_revision_and_only_with_auth_on() {
        let mut store = tenure_kv::Store::default();
        let mut index = 0;
        let mut apply = |store: &mut tenure_kv::Store, req: AuthRequest| {
            index += 1;
            let entry = tenure_kv::Proposal::new(Command::Auth(req)).encode();
            store.apply(index, 0, &entry).unwrap();
        };
        apply(&mut store, AuthRequest::UserAdd { name: "root".into(), password_hash: None });
        apply(&mut store, AuthRequest::UserGrantRole { user: "root".into(), role: "root".into() });
        assert_eq!(member_token(store.auth()), None);
        apply(&mut store, AuthRequest::Enable { token_key: Bytes::from_static(&[3; 32]) });
        let token = member_token(store.auth()).unwrap();
        let rev = store.auth().user("root").unwrap().password_revision;
        assert_eq!(verify_token(&[3; 32], &token, now_unix_ms()), Ok(("root".to_string(), rev)));
    }

    #[test]
    fn lockouts_start_after_the_free_failures_and_double_up_to_the_cap() {
        let a = Authenticator::new(AuthConfig::default());
        let t0 = Instant::now();
        for _ in 0..LOGIN_FAILURES_FREE - 1 {
            a.record_failure("u", t0);
        }
        assert_eq!(a.locked_out("u", t0), None);
        a.record_failure("u", t0);
        assert_eq!(a.locked_out("u", t0), Some(Duration::from_secs(1)));
        assert_eq!(a.locked_out("u", t0 + Duration::from_secs(1)), None);
        a.record_failure("u", t0);
        assert_eq!(a.locked_out("u", t0), Some(Duration::from_secs(2)));
        assert_eq!(a.locked_out("other", t0), None);
        a.clear_failures("u");
        assert_eq!(a.locked_out("u", t0), None);
        assert_eq!(lockout_after(100), LOGIN_LOCKOUT_MAX);
    }
}
