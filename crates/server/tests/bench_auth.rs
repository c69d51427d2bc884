//! `tenure bench --user NAME:PASSWORD` against a cluster with auth on: the bench authenticates
//! (once per endpoint) and every request carries the token, so the user's puts succeed on every
//! member; a wrong password ends the run before any load with exit code 1 and one line; a user
//! without write permission gets `PermissionDenied` for each put (the token names that user);
//! no `--user` gets the server's refusal. Against three `tenure serve` processes, and against
//! a one-member etcd 3.4 where Debian's etcd is installed (skipped otherwise).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Plan, Server, etcdctl, free_ports};
use tenure_server::pb::authpb;
use tenure_server::pb::etcdserverpb as pb;

fn bench(endpoints: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenure"))
        .args(["bench", "put", "--endpoints", endpoints, "--clients", "6", "--conns", "3"])
        .args(["--total", "120", "--key-space-size", "50", "--json", "--quiet"])
        .args(extra)
        .output()
        .expect("runs tenure bench")
}

fn summary(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("{e}: stdout {:?}, stderr {:?}", o.stdout, String::from_utf8_lossy(&o.stderr))
    })
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// root (root role), `writer` (READWRITE on every key of the bench's decimal keys: `0` to
/// `:`) and `reader` (READ on the same range), then auth on; through `url`.
async fn set_up_users(url: &str) {
    let channel =
        tonic::transport::Endpoint::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut auth = pb::auth_client::AuthClient::new(channel);
    for (name, pw) in [("root", "rootpw"), ("writer", "writerpw"), ("reader", "readerpw")] {
        auth.user_add(pb::AuthUserAddRequest {
            name: name.into(),
            password: pw.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for (role, perm_type) in [("bench-rw", 2), ("bench-r", 0)] {
        auth.role_add(pb::AuthRoleAddRequest { name: role.into() }).await.unwrap();
        auth.role_grant_permission(pb::AuthRoleGrantPermissionRequest {
            name: role.into(),
            perm: Some(authpb::Permission { perm_type, key: "0".into(), range_end: ":".into() }),
        })
        .await
        .unwrap();
    }
    for (user, role) in [("root", "root"), ("writer", "bench-rw"), ("reader", "bench-r")] {
        auth.user_grant_role(pb::AuthUserGrantRoleRequest { user: user.into(), role: role.into() })
            .await
            .unwrap();
    }
    auth.auth_enable(pb::AuthEnableRequest {}).await.unwrap();
}

/// The checks, against a cluster whose client URLs are `endpoints` (comma-separated).
fn check_bench_as_users(endpoints: &str, system: &str) {
    // The writer: every put answered, on every member.
    let o = bench(endpoints, &["--user", "writer:writerpw"]);
    assert_eq!(o.status.code(), Some(0), "{system}: {}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["ops_count"], 120, "{system}: {s}");
    assert_eq!(s["errors_count"], 0, "{system}: {s}");
    assert_eq!(s["counts"]["put"], 120, "{system}: {s}");

    // A wrong password: no load, one line, exit code 1.
    let o = bench(endpoints, &["--user", "writer:nope"]);
    assert_eq!(o.status.code(), Some(1), "{system}: {}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{system}: one line, got {err:?}");
    assert!(err.contains("cannot authenticate as writer at http://"), "{system}: {err}");
    assert!(err.contains("authentication failed, invalid user ID or password"), "{system}: {err}");
    assert!(o.stdout.is_empty(), "{system}: no summary without a login");

    // A user who may only read: the token names that user, so each put is refused as
    // unpermitted (not as unauthenticated).
    let o = bench(endpoints, &["--user", "reader:readerpw"]);
    let s = summary(&o);
    assert_eq!(s["ops_count"], 0, "{system}: {s}");
    assert_eq!(s["errors"]["PermissionDenied"], 120, "{system}: {s}");

    // No user: no token, and the server refuses every put.
    let o = bench(endpoints, &[]);
    let s = summary(&o);
    assert_eq!(s["ops_count"], 0, "{system}: {s}");
    assert_eq!(s["errors_count"], 120, "{system}: {s}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_authenticates_against_tenure_with_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::new("bench-auth-");
    let _servers: Vec<Server> =
        (0..3).map(|i| plan.start_with(i, dir.path(), &["--bcrypt-cost", "4"])).collect();
    common::agreed_leader(&plan, &[0, 1, 2], Duration::from_secs(20)).await;
    set_up_users(&plan.clients[0]).await;
    check_bench_as_users(&plan.clients.join(","), "tenure");
}

/// A one-member etcd 3.4 in `dir`, if Debian's etcd is installed.
fn start_etcd(dir: &Path) -> Option<(Server, String)> {
    let etcd = Path::new("/usr/bin/etcd");
    if !etcd.exists() || common::etcdctl_path().is_none() {
        return None;
    }
    let ports = free_ports(2);
    let client = format!("http://127.0.0.1:{}", ports[0]);
    let peer = format!("http://127.0.0.1:{}", ports[1]);
    let child = Command::new(etcd)
        .args(["--name", "e", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("e={peer}"), "--bcrypt-cost", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server::from_child(child);
    for _ in 0..100 {
        if etcdctl(&client, &["endpoint", "health"]).is_some_and(|o| o.status.success()) {
            return Some((server, client));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_authenticates_against_etcd_with_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_etcd, url)) = start_etcd(dir.path()) else {
        eprintln!("skipped: etcd 3.4 is not installed (apt-get install etcd-server etcd-client)");
        return;
    };
    set_up_users(&url).await;
    // Three connections to the one member: one login, its token on all three.
    check_bench_as_users(&url, "etcd");
}
