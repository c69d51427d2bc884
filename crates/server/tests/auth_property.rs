//! A property test of etcd's authorization on a running three-member cluster (issue 17): no
//! sequence of permission grants and revokes, role grants and revokes, and requests lets a user
//! read or write outside its roles, through a Range, a Put, either branch of a Txn, or a watch
//! created before a permission was revoked.
//!
//! Each case runs a random sequence of steps against one cluster (started once; every case has
//! its own user, role and key prefix) and a model of etcd's rules. Auth changes go through
//! member 0 as root; the user's requests go to any member, after a linearizable read there by
//! root, so that the member has applied every change before them. Every request's outcome must
//! be the model's. Watches are the subtle part: a member hands events to a watch stream some
//! time after applying them, and checks the stream's permissions against the auth state it has
//! then (never older than the events). So an event may reach a user who could read its key at
//! some point from the put on, and a watcher whose range was revoked is cancelled, with etcd's
//! reason, before it gets any event it could not read. The checks:
//! - creation is refused exactly when the user cannot read the watched range;
//! - the events a watcher gets are, in order, the first of the puts in its range after it was
//!   created, each one that the user could read at some point from the put on;
//! - a watcher that was not cancelled gets every such put;
//! - a watcher that was cancelled lost its permission at some point after it was created.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tenure_server::cli::ServeConfig;
use tenure_server::cli::dev::{self, Timing};
use tenure_server::member::Member;
use tenure_server::pb::authpb;
use tenure_server::pb::etcdserverpb as pb;
use tokio_stream::StreamExt as _;
use tonic::Request;
use tonic::transport::Channel;

const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };
const CASES: u32 = 48;
const KEYS: usize = 2;
const PERMISSION_DENIED: &str = "etcdserver: permission denied";
const WATCH_DENIED: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

/// What a permission covers: one of the case's keys, or the case's whole prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Key(usize),
    Prefix,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    ReadWrite,
}

impl Kind {
    fn reads(self) -> bool {
        self != Kind::Write
    }

    fn writes(self) -> bool {
        self != Kind::Read
    }

    fn pb(self) -> i32 {
        match self {
            Kind::Read => authpb::permission::Type::Read as i32,
            Kind::Write => authpb::permission::Type::Write as i32,
            Kind::ReadWrite => authpb::permission::Type::Readwrite as i32,
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Grant(Target, Kind),
    Revoke(Target),
    GrantRole,
    RevokeRole,
    RootPut(usize),
    UserPut(usize, usize),
    UserGet(Target, usize),
    /// If key `.0` exists, put key `.1`, else put key `.2`; on member `.3`.
    UserTxn(usize, usize, usize, usize),
    Watch(Target, usize),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![3 => (0..KEYS).prop_map(Target::Key), 1 => Just(Target::Prefix)]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Read), Just(Kind::Write), Just(Kind::ReadWrite)]
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0..KEYS;
    let member = 0..3usize;
    prop_oneof![
        3 => (target(), kind()).prop_map(|(t, k)| Step::Grant(t, k)),
        2 => target().prop_map(Step::Revoke),
        1 => Just(Step::GrantRole),
        1 => Just(Step::RevokeRole),
        6 => key.clone().prop_map(Step::RootPut),
        2 => (key.clone(), member.clone()).prop_map(|(k, m)| Step::UserPut(k, m)),
        2 => (target(), member.clone()).prop_map(|(t, m)| Step::UserGet(t, m)),
        1 => (key.clone(), key.clone(), key, member.clone())
            .prop_map(|(a, b, c, m)| Step::UserTxn(a, b, c, m)),
        3 => (target(), member).prop_map(|(t, m)| Step::Watch(t, m)),
    ]
}

/// etcd's rules for one user with one role, kept naively: the role's permissions by target
/// (a grant on a target the role has replaces its type), whether the user has the role.
#[derive(Clone, Debug, Default)]
struct Model {
    perms: Vec<(Target, Kind)>,
    has_role: bool,
    exists: [bool; KEYS],
}

impl Model {
    fn kind_on(&self, t: Target) -> Option<Kind> {
        self.perms.iter().find(|(p, _)| *p == t).map(|(_, k)| *k)
    }

    /// Whether the user may do `op` (read or write) on all of `t`.
    fn allows(&self, t: Target, op: fn(Kind) -> bool) -> bool {
        if !self.has_role {
            return false;
        }
        let by = |p: Target| self.kind_on(p).is_some_and(op);
        match t {
            Target::Prefix => by(Target::Prefix),
            Target::Key(_) => by(t) || by(Target::Prefix),
        }
    }

    fn reads(&self, t: Target) -> bool {
        self.allows(t, Kind::reads)
    }

    fn writes(&self, key: usize) -> bool {
        self.allows(Target::Key(key), Kind::writes)
    }
}

fn covers(watched: Target, key: usize) -> bool {
    watched == Target::Prefix || watched == Target::Key(key)
}

/// The case's names: user, role, and keys under a prefix of their own.
struct Names {
    user: String,
    role: String,
    prefix: String,
}

impl Names {
    fn key(&self, i: usize) -> Vec<u8> {
        format!("{}k{i}", self.prefix).into_bytes()
    }

    /// `(key, range_end)` of a target.
    fn range(&self, t: Target) -> (Vec<u8>, Vec<u8>) {
        match t {
            Target::Key(i) => (self.key(i), Vec::new()),
            Target::Prefix => {
                let mut end = self.prefix.clone().into_bytes();
                *end.last_mut().expect("non-empty") += 1;
                (self.prefix.clone().into_bytes(), end)
            }
        }
    }

    fn key_index(&self, key: &[u8]) -> usize {
        let s = std::str::from_utf8(key).expect("utf-8 key");
        s.strip_prefix(&self.prefix)
            .and_then(|k| k.strip_prefix('k'))
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("a key outside the case: {s}"))
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert("token", token.parse().expect("ascii token"));
    r
}

struct Cluster {
    channels: Vec<Channel>,
    root: String,
    _members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> =
            common::free_ports(6).chunks(2).map(|c| (c[0], c[1])).collect();
        let mut configs: Vec<ServeConfig> =
            dev::configs(&ports, dir.path(), TIMING).expect("configs");
        for c in &mut configs {
            c.auth.bcrypt_cost = 4;
        }
        let members: Vec<Member> = dev::start(&configs).await.expect("cluster starts");
        let mut channels = Vec::new();
        for c in &configs {
            let url = c.advertise_client_urls[0].to_string();
            let endpoint = tonic::transport::Endpoint::from_shared(url).expect("url");
            channels.push(endpoint.connect().await.expect("connects"));
        }
        // A leader, then root with the root role, and auth on.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !members.iter().any(|m| m.handle().status().is_leader) {
            assert!(std::time::Instant::now() < deadline, "no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut auth = pb::auth_client::AuthClient::new(channels[0].clone());
        auth.user_add(pb::AuthUserAddRequest {
            name: "root".into(),
            password: "rootpw".into(),
            ..Default::default()
        })
        .await
        .expect("root added");
        auth.user_grant_role(pb::AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        })
        .await
        .expect("root role granted");
        auth.auth_enable(pb::AuthEnableRequest {}).await.expect("auth enabled");
        let root = auth
            .authenticate(pb::AuthenticateRequest {
                name: "root".into(),
                password: "rootpw".into(),
            })
            .await
            .expect("root logs in")
            .into_inner()
            .token;
        Cluster { channels, root, _members: members, _dir: dir }
    }

    fn auth(&self) -> pb::auth_client::AuthClient<Channel> {
        pb::auth_client::AuthClient::new(self.channels[0].clone())
    }

    fn kv(&self, member: usize) -> pb::kv_client::KvClient<Channel> {
        pb::kv_client::KvClient::new(self.channels[member].clone())
    }

    /// A linearizable read by root on `member`: once it returns, the member has applied
    /// everything committed before it, auth changes included.
    async fn barrier(&self, member: usize) {
        let get = pb::RangeRequest { key: b"barrier".to_vec().into(), ..Default::default() };
        self.kv(member).range(with_token(get, &self.root)).await.expect("root reads");
    }
}

/// One watch the user created: its target, the step it was created at, and its stream.
struct Watcher {
    target: Target,
    created_at: usize,
    responses: tonic::Streaming<pb::WatchResponse>,
    _requests: tokio::sync::mpsc::Sender<pb::WatchRequest>,
}

/// What happened in a case, for the final watch checks.
#[derive(Default)]
struct Record {
    /// The model after each step (index: step).
    models: Vec<Model>,
    /// Every put that took effect: (step, key).
    puts: Vec<(usize, usize)>,
}

impl Record {
    /// Whether the user could read `key` (or all of `t`) at some step from `from` on.
    fn readable_from(&self, from: usize, t: Target) -> bool {
        self.models[from..].iter().any(|m| m.reads(t))
    }
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if ok { Ok(()) } else { Err(TestCaseError::fail(what())) }
}

/// What the cases exercised, summed: so that the test shows it reached the cases that matter.
#[derive(Debug, Default)]
struct Stats {
    allowed: u64,
    denied: u64,
    watchers: u64,
    watches_refused: u64,
    watches_cancelled: u64,
    events: u64,
}

static STATS: std::sync::Mutex<Stats> = std::sync::Mutex::new(Stats {
    allowed: 0,
    denied: 0,
    watchers: 0,
    watches_refused: 0,
    watches_cancelled: 0,
    events: 0,
});

fn stats() -> std::sync::MutexGuard<'static, Stats> {
    STATS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of a user request against the model: allowed and succeeded, or denied with
/// etcd's error.
fn expect_allowed<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    allowed: bool,
    what: &str,
) -> Result<(), TestCaseError> {
    if allowed {
        stats().allowed += 1;
    } else {
        stats().denied += 1;
    }
    match (result, allowed) {
        (Ok(_), true) => Ok(()),
        (Err(e), false)
            if e.code() == tonic::Code::PermissionDenied && e.message() == PERMISSION_DENIED =>
        {
            Ok(())
        }
        (r, allowed) => Err(TestCaseError::fail(format!(
            "{what}: the model says allowed={allowed}, the cluster answered {r:?}"
        ))),
    }
}

async fn run_case(
    c: &Cluster,
    case: u64,
    initial: &[(Target, Kind)],
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let names =
        Names { user: format!("u{case}"), role: format!("r{case}"), prefix: format!("/p{case}/") };
    let mut auth = c.auth();
    auth.user_add(with_token(
        pb::AuthUserAddRequest {
            name: names.user.clone(),
            password: "pw".into(),
            ..Default::default()
        },
        &c.root,
    ))
    .await
    .expect("user added");
    auth.role_add(with_token(pb::AuthRoleAddRequest { name: names.role.clone() }, &c.root))
        .await
        .expect("role added");
    let token = auth
        .authenticate(pb::AuthenticateRequest { name: names.user.clone(), password: "pw".into() })
        .await
        .expect("user logs in")
        .into_inner()
        .token;

    // The user starts with the role, which starts with `initial`'s permissions.
    let mut model = Model { has_role: true, ..Model::default() };
    auth.user_grant_role(with_token(
        pb::AuthUserGrantRoleRequest { user: names.user.clone(), role: names.role.clone() },
        &c.root,
    ))
    .await
    .expect("role granted");
    for &(t, k) in initial {
        let (key, range_end) = names.range(t);
        let perm =
            authpb::Permission { perm_type: k.pb(), key: key.into(), range_end: range_end.into() };
        auth.role_grant_permission(with_token(
            pb::AuthRoleGrantPermissionRequest { name: names.role.clone(), perm: Some(perm) },
            &c.root,
        ))
        .await
        .expect("permission granted");
        model.perms.retain(|(p, _)| *p != t);
        model.perms.push((t, k));
    }
    let mut record = Record::default();
    let mut watchers: Vec<Watcher> = Vec::new();
    for (at, step) in steps.iter().enumerate() {
        let what = format!("step {at} {step:?}");
        match *step {
            Step::Grant(t, k) => {
                let (key, range_end) = names.range(t);
                let perm = authpb::Permission {
                    perm_type: k.pb(),
                    key: key.into(),
                    range_end: range_end.into(),
                };
                auth.role_grant_permission(with_token(
                    pb::AuthRoleGrantPermissionRequest {
                        name: names.role.clone(),
                        perm: Some(perm),
                    },
                    &c.root,
                ))
                .await
                .map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))?;
                model.perms.retain(|(p, _)| *p != t);
                model.perms.push((t, k));
            }
            Step::Revoke(t) => {
                let (key, range_end) = names.range(t);
                let r = auth
                    .role_revoke_permission(with_token(
                        pb::AuthRoleRevokePermissionRequest {
                            role: names.role.clone(),
                            key: key.into(),
                            range_end: range_end.into(),
                        },
                        &c.root,
                    ))
                    .await;
                let granted = model.kind_on(t).is_some();
                match r {
                    Ok(_) if granted => model.perms.retain(|(p, _)| *p != t),
                    Err(e)
                        if !granted
                            && e.message()
                                == "etcdserver: permission is not granted to the role" => {}
                    r => {
                        return Err(TestCaseError::fail(format!(
                            "{what}: granted={granted}, answered {r:?}"
                        )));
                    }
                }
            }
            Step::GrantRole => {
                auth.user_grant_role(with_token(
                    pb::AuthUserGrantRoleRequest {
                        user: names.user.clone(),
                        role: names.role.clone(),
                    },
                    &c.root,
                ))
                .await
                .map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))?;
                model.has_role = true;
            }
            Step::RevokeRole => {
                let r = auth
                    .user_revoke_role(with_token(
                        pb::AuthUserRevokeRoleRequest {
                            name: names.user.clone(),
                            role: names.role.clone(),
                        },
                        &c.root,
                    ))
                    .await;
                match r {
                    Ok(_) if model.has_role => model.has_role = false,
                    Err(e)
                        if !model.has_role
                            && e.message() == "etcdserver: role is not granted to the user" => {}
                    r => {
                        return Err(TestCaseError::fail(format!(
                            "{what}: has_role={}, answered {r:?}",
                            model.has_role
                        )));
                    }
                }
            }
            Step::RootPut(k) => {
                let put = pb::PutRequest {
                    key: names.key(k).into(),
                    value: format!("s{at}").into_bytes().into(),
                    ..Default::default()
                };
                c.kv(0).put(with_token(put, &c.root)).await.expect("root writes");
                model.exists[k] = true;
                record.puts.push((at, k));
            }
            Step::UserPut(k, m) => {
                c.barrier(m).await;
                let put = pb::PutRequest {
                    key: names.key(k).into(),
                    value: format!("s{at}").into_bytes().into(),
                    ..Default::default()
                };
                let allowed = model.writes(k);
                expect_allowed(c.kv(m).put(with_token(put, &token)).await, allowed, &what)?;
                if allowed {
                    model.exists[k] = true;
                    record.puts.push((at, k));
                }
            }
            Step::UserGet(t, m) => {
                c.barrier(m).await;
                let (key, range_end) = names.range(t);
                let get = pb::RangeRequest {
                    key: key.into(),
                    range_end: range_end.into(),
                    ..Default::default()
                };
                expect_allowed(
                    c.kv(m).range(with_token(get, &token)).await,
                    model.reads(t),
                    &what,
                )?;
            }
            Step::UserTxn(a, b, f, m) => {
                c.barrier(m).await;
                let put = |k: usize| pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: names.key(k).into(),
                        value: format!("s{at}").into_bytes().into(),
                        ..Default::default()
                    })),
                };
                let txn = pb::TxnRequest {
                    compare: vec![pb::Compare {
                        result: pb::compare::CompareResult::Greater as i32,
                        target: pb::compare::CompareTarget::Version as i32,
                        key: names.key(a).into(),
                        target_union: Some(pb::compare::TargetUnion::Version(0)),
                        ..Default::default()
                    }],
                    success: vec![put(b)],
                    failure: vec![put(f)],
                };
                // Every compare's key must be readable and every branch's keys writable.
                let allowed = model.reads(Target::Key(a)) && model.writes(b) && model.writes(f);
                expect_allowed(c.kv(m).txn(with_token(txn, &token)).await, allowed, &what)?;
                if allowed {
                    let k = if model.exists[a] { b } else { f };
                    model.exists[k] = true;
                    record.puts.push((at, k));
                }
            }
            Step::Watch(t, m) => {
                c.barrier(m).await;
                let (key, range_end) = names.range(t);
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                let create = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                        pb::WatchCreateRequest {
                            key: key.into(),
                            range_end: range_end.into(),
                            ..Default::default()
                        },
                    )),
                };
                tx.send(create).await.expect("stream open");
                let mut client = pb::watch_client::WatchClient::new(c.channels[m].clone());
                let mut responses = client
                    .watch(with_token(tokio_stream::wrappers::ReceiverStream::new(rx), &token))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))?
                    .into_inner();
                let created = responses
                    .next()
                    .await
                    .expect("a response")
                    .map_err(|e| TestCaseError::fail(format!("{what}: {e:?}")))?;
                check(created.created, || format!("{what}: {created:?}"))?;
                if model.reads(t) {
                    check(!created.canceled, || format!("{what}: refused: {created:?}"))?;
                    stats().watchers += 1;
                    watchers.push(Watcher { target: t, created_at: at, responses, _requests: tx });
                } else {
                    stats().watches_refused += 1;
                    check(created.canceled && created.cancel_reason == WATCH_DENIED, || {
                        format!("{what}: the user cannot read it, yet: {created:?}")
                    })?;
                }
            }
        }
        record.models.push(model.clone());
    }

    // Let every member apply everything, then take what each watcher got.
    for m in 0..3 {
        c.barrier(m).await;
    }
    for (w, watcher) in watchers.iter_mut().enumerate() {
        let mut got: Vec<usize> = Vec::new();
        let mut cancelled = false;
        while let Ok(Some(r)) =
            tokio::time::timeout(Duration::from_millis(300), watcher.responses.next()).await
        {
            let r = r.map_err(|e| TestCaseError::fail(format!("watch {w}: {e:?}")))?;
            check(!cancelled, || format!("watch {w}: a response after its cancellation: {r:?}"))?;
            for e in &r.events {
                let kv = e.kv.as_ref().expect("an event's kv");
                let value = std::str::from_utf8(&kv.value).expect("utf-8");
                let step: usize =
                    value.strip_prefix('s').and_then(|s| s.parse().ok()).expect("s<n>");
                let key = names.key_index(&kv.key);
                check(covers(watcher.target, key), || format!("watch {w}: key {key} outside it"))?;
                got.push(step);
            }
            if r.canceled {
                check(r.cancel_reason == WATCH_DENIED, || format!("watch {w}: {r:?}"))?;
                cancelled = true;
            }
        }
        stats().events += got.len() as u64;
        stats().watches_cancelled += u64::from(cancelled);
        let expected: Vec<usize> = record
            .puts
            .iter()
            .filter(|(at, k)| *at > watcher.created_at && covers(watcher.target, *k))
            .map(|(at, _)| *at)
            .collect();
        let why = || {
            format!(
                "watch {w} on {:?} created at step {}: got puts of steps {got:?}, the puts in its \
                 range after it are {expected:?}, cancelled={cancelled}",
                watcher.target, watcher.created_at
            )
        };
        check(expected.starts_with(&got), why)?;
        for &s in &got {
            check(record.readable_from(s, watcher.target), || {
                format!("{}: the user could never read the put of step {s} again", why())
            })?;
        }
        if cancelled {
            let lost = record.models[watcher.created_at..].iter().any(|m| !m.reads(watcher.target));
            check(lost, || format!("{}: cancelled, yet it never lost its permission", why()))?;
        } else {
            check(got == expected, || format!("{}: not cancelled, yet missed puts", why()))?;
        }
    }
    Ok(())
}

#[test]
fn no_sequence_of_auth_changes_lets_a_user_read_or_write_outside_its_roles() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cluster = rt.block_on(Cluster::start());
    let cases = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config { cases: CASES, ..Config::default() });
    let initial = proptest::collection::vec((target(), kind()), 0..4);
    let steps = proptest::collection::vec(step(), 1..24);
    let result = runner.run(&(initial, steps), |(initial, steps)| {
        let case = cases.fetch_add(1, Ordering::Relaxed);
        rt.block_on(run_case(&cluster, case, &initial, &steps))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let stats = stats();
    println!("{} cases: {stats:?}", cases.load(Ordering::Relaxed));
    assert!(
        stats.allowed > 0
            && stats.denied > 0
            && stats.watchers > 0
            && stats.watches_refused > 0
            && stats.watches_cancelled > 0
            && stats.events > 0,
        "the cases never reached a part of the rules: {stats:?}"
    );
}
