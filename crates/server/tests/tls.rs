//! TLS on the client and peer URLs, end to end against real `tenure serve` processes:
//! certificates made in the test with rcgen (a CA, member certificates for 127.0.0.1 and
//! localhost, client certificates with common names), etcdctl 3.4 over TLS with client
//! certificates, clients and peers without the right certificate refused, a certificate
//! rotated while serving, self-signed (`--auto-tls`) clusters, `/health` over https, and every
//! misconfiguration ending start-up with one line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::{Ca, path};
use common::{Server, free_ports, stderr_for};
use tenure_server::pb::etcdserverpb as pb;
use tenure_server::tls::{ClientTlsOptions, common_name, connect_channel, server_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names and https URLs for `n` members.
struct TlsPlan {
    names: Vec<String>,
    clients: Vec<String>,
    peers: Vec<String>,
}

impl TlsPlan {
    fn new(prefix: &str, n: usize) -> TlsPlan {
        let ports = free_ports(2 * n);
        let url = |p: &u16| format!("https://127.0.0.1:{p}");
        TlsPlan {
            names: (1..=n).map(|i| format!("{prefix}{i}")).collect(),
            clients: ports[..n].iter().map(url).collect(),
            peers: ports[n..].iter().map(url).collect(),
        }
    }

    fn endpoints(&self) -> String {
        self.clients.join(",")
    }

    /// Starts member `i` with its data under `dir` and `extra` flags (its TLS flags).
    fn start(&self, i: usize, dir: &Path, extra: &[&str]) -> Server {
        self.start_logging(i, dir, extra, stderr_for(&self.names[i]))
    }

    /// [`TlsPlan::start`] with the member's log going to `stderr`.
    fn start_logging(&self, i: usize, dir: &Path, extra: &[&str], stderr: Stdio) -> Server {
        let cluster: Vec<String> =
            self.names.iter().zip(&self.peers).map(|(n, p)| format!("{n}={p}")).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(["serve", "--name", &self.names[i]])
            .arg("--data-dir")
            .arg(dir.join(&self.names[i]))
            .args(["--listen-client-urls", &self.clients[i]])
            .args(["--advertise-client-urls", &self.clients[i]])
            .args(["--listen-peer-urls", &self.peers[i]])
            .args(["--initial-advertise-peer-urls", &self.peers[i]])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("runs tenure serve");
        Server::from_child(child)
    }
}

/// The certificates of a TLS cluster: one CA for clients and peers, a certificate per member
/// (CN `member`), a client certificate (CN `root`).
struct Certs {
    ca: Ca,
    members: Vec<(PathBuf, PathBuf)>,
    client: (PathBuf, PathBuf),
}

impl Certs {
    fn new(dir: &Path, members: usize) -> Certs {
        let ca = Ca::new(dir, "test-ca");
        let members =
            (0..members).map(|i| ca.issue(dir, &format!("member{i}"), "member", 100 + i as u64));
        let members = members.collect();
        let client = ca.issue(dir, "client", "root", 7);
        Certs { ca, members, client }
    }

    /// Member `i`'s flags: TLS on both URLs, client certificates required on both, peers'
    /// common name limited to `member`.
    fn flags(&self, i: usize) -> Vec<String> {
        let (cert, key) = &self.members[i];
        let ca = path(&self.ca.file).to_string();
        vec![
            format!("--cert-file={}", path(cert)),
            format!("--key-file={}", path(key)),
            format!("--trusted-ca-file={ca}"),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={}", path(cert)),
            format!("--peer-key-file={}", path(key)),
            format!("--peer-trusted-ca-file={ca}"),
            "--peer-client-cert-auth".into(),
            "--peer-cert-allowed-cn=member".into(),
        ]
    }

    fn client_options(&self) -> ClientTlsOptions {
        ClientTlsOptions {
            ca_file: Some(self.ca.file.clone()),
            cert_file: Some(self.client.0.clone()),
            key_file: Some(self.client.1.clone()),
            skip_verify: false,
        }
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A gRPC channel to `url` with `options`.
async fn channel(
    url: &str,
    options: &ClientTlsOptions,
) -> Result<tonic::transport::Channel, String> {
    let config = options.client_config().map_err(|e| e.to_string())?;
    connect_channel(url, Some(config), |e| {
        e.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(5))
    })
    .await
}

/// `Maintenance.Status` of the member at `url`: (its id, the leader it knows, 0 if none).
async fn status(url: &str, options: &ClientTlsOptions) -> Result<(u64, u64), String> {
    let ch = channel(url, options).await?;
    let r = pb::maintenance_client::MaintenanceClient::new(ch)
        .status(pb::StatusRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok((r.header.map_or(0, |h| h.member_id), r.leader))
}

/// Waits until every member at `urls` names the same leader; returns its position.
async fn agreed_leader(urls: &[&String], options: &ClientTlsOptions, patience: Duration) -> usize {
    let deadline = Instant::now() + patience;
    loop {
        let mut seen = Vec::new();
        for u in urls {
            seen.push(status(u, options).await.ok());
        }
        let leaders: Vec<u64> = seen.iter().flatten().map(|(_, l)| *l).collect();
        let agreed =
            leaders.len() == urls.len() && leaders.iter().all(|l| *l != 0 && *l == leaders[0]);
        if agreed
            && let Some(pos) = seen.iter().position(|s| s.is_some_and(|(id, _)| id == leaders[0]))
        {
            return pos;
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `tenure` with `args`.
fn tenure(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenure")).args(args).output().expect("runs tenure")
}

fn text(out: &Output) -> String {
    format!(
        "status {}; stdout {:?}; stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// One HTTP/1.1 GET over TLS (ALPN `http/1.1`); the response as text.
async fn https_get(url: &str, path_and_query: &str, options: &ClientTlsOptions) -> String {
    let (_, host, authority) = tenure_server::tls::split_url(url).unwrap();
    let mut config = (*options.client_config().unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name(&host).unwrap(), tcp)
        .await
        .unwrap();
    let request =
        format!("GET {path_and_query} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    s.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The server certificate the member at `url` presents to a new connection, and whether the
/// handshake worked.
async fn presented_certificate(url: &str, options: &ClientTlsOptions) -> Result<Vec<u8>, String> {
    let (_, host, authority) = tenure_server::tls::split_url(url).unwrap();
    let config = options.client_config().map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(&authority).await.map_err(|e| e.to_string())?;
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(server_name(&host).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let certs = s.get_ref().1.peer_certificates().ok_or("no certificate")?;
    Ok(certs[0].to_vec())
}

/// etcdctl 3.4 against a three-member cluster with TLS and client certificates on both URLs:
/// put, get and member list with `--cacert --cert --key`; tenure's own client the same way;
/// `/health` over https; a membership change sent to a follower reaches the leader over the
/// leader's https client URL (the member's own certificate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_and_tenure_clients_work_over_tls_against_a_tls_cluster() {
    tenure_server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), 3);
    let plan = TlsPlan::new("tls", 3);
    let servers: Vec<Server> =
        (0..3).map(|i| plan.start(i, dir.path(), &as_strs(&certs.flags(i)))).collect();
    let urls: Vec<&String> = plan.clients.iter().collect();
    let leader = agreed_leader(&urls, &certs.client_options(), Duration::from_secs(30)).await;

    let (ca, cert, key) = (path(&certs.ca.file), path(&certs.client.0), path(&certs.client.1));
    let tls_flags = [format!("--cacert={ca}"), format!("--cert={cert}"), format!("--key={key}")];
    let tls_flags = as_strs(&tls_flags);

    // tenure's client commands.
    let endpoints = format!("--endpoints={}", plan.endpoints());
    let mut args = vec!["put", "greeting", "hello", &endpoints];
    args.extend(&tls_flags);
    let out = tenure(&args);
    assert!(out.status.success(), "tenure put: {}", text(&out));
    let mut args = vec!["get", "greeting", &endpoints];
    args.extend(&tls_flags);
    let out = tenure(&args);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "greeting\nhello\n", "{}", text(&out));
    // Without the client certificate the member refuses the connection.
    let cacert_only = format!("--cacert={ca}");
    let out = tenure(&["get", "greeting", &endpoints, &cacert_only, "--command-timeout=3s"]);
    assert!(!out.status.success(), "a client without a certificate was served: {}", text(&out));

    // A learner added through a follower: the follower forwards to the leader's https URL.
    let follower = (leader + 1) % 3;
    let follower_endpoint = format!("--endpoints={}", plan.clients[follower]);
    let spare = format!("https://127.0.0.1:{}", free_ports(1)[0]);
    let mut args = vec!["member", "add", "spare", "--learner", "--peer-urls", &spare];
    args.push(&follower_endpoint);
    args.extend(&tls_flags);
    let out = tenure(&args);
    assert!(out.status.success(), "member add through a follower: {}", text(&out));

    match common::etcdctl_path() {
        None => eprintln!("note: etcdctl not installed; skipping its part of the TLS test"),
        Some(_) => {
            let run = |args: &[&str]| {
                let mut all = vec![format!("--cacert={ca}"), format!("--cert={cert}")];
                all.push(format!("--key={key}"));
                all.extend(args.iter().map(|s| s.to_string()));
                common::etcdctl(&plan.endpoints(), &as_strs(&all)).expect("etcdctl installed")
            };
            let out = run(&["put", "k", "v"]);
            assert!(out.status.success(), "etcdctl put: {}", text(&out));
            assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
            let out = run(&["get", "k"]);
            assert_eq!(String::from_utf8_lossy(&out.stdout), "k\nv\n", "{}", text(&out));
            let out = run(&["get", "greeting", "--print-value-only"]);
            assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n", "{}", text(&out));
            let out = run(&["member", "list"]);
            let list = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "etcdctl member list: {}", text(&out));
            for (name, client) in plan.names.iter().zip(&plan.clients) {
                assert!(list.contains(name) && list.contains(client.as_str()), "{list}");
            }
            assert!(list.contains("spare") || list.contains(&spare), "{list}");
            // etcdctl without a client certificate is refused.
            let out = common::etcdctl(
                &plan.clients[0],
                &[&format!("--cacert={ca}"), "--dial-timeout=2s", "get", "k"],
            )
            .expect("etcdctl installed");
            assert!(!out.status.success(), "etcdctl without a certificate: {}", text(&out));
            // etcdctl's per-endpoint connections (`endpoint status`, `:authority` with the
            // scheme) work over TLS too.
            let out = run(&["endpoint", "status", "--cluster"]);
            assert!(out.status.success(), "etcdctl endpoint status: {}", text(&out));
        }
    }

    let health = https_get(&plan.clients[leader], "/health", &certs.client_options()).await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""health":"true""#), "{health}");
    drop(servers);
}

/// The peer TLS carries the snapshot stream, and the corruption checks' HashKV calls go to
/// the peers' https client URLs: a follower stopped while the others compact their logs past
/// what it has gets a snapshot over mutual TLS when it comes back, and its initial corruption
/// check, asking every peer over https, passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_reaches_a_lagging_follower_over_peer_tls_and_corruption_checks_use_https() {
    tenure_server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), 3);
    let plan = TlsPlan::new("tlssnap", 3);
    let flags = |i: usize| {
        let mut f = certs.flags(i);
        f.extend(
            ["--snapshot-count=20", "--snapshot-catchup-entries=5"].iter().map(|s| s.to_string()),
        );
        f.push("--experimental-initial-corrupt-check".into());
        f
    };
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(plan.start(i, dir.path(), &as_strs(&flags(i))))).collect();
    let urls: Vec<&String> = plan.clients.iter().collect();
    let options = certs.client_options();
    let leader = agreed_leader(&urls, &options, Duration::from_secs(30)).await;
    let lagging = (leader + 1) % 3;
    servers[lagging].take().expect("running").kill();

    let mut kv =
        pb::kv_client::KvClient::new(channel(&plan.clients[leader], &options).await.unwrap());
    for i in 0..200 {
        let put = pb::PutRequest {
            key: format!("k{i:03}").into_bytes().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        };
        kv.put(put).await.expect("put");
    }
    let log = dir.path().join("lagging.log");
    let stderr = Stdio::from(std::fs::File::create(&log).unwrap());
    servers[lagging] =
        Some(plan.start_logging(lagging, dir.path(), &as_strs(&flags(lagging)), stderr));

    // Every key, read locally on the member that was away.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count = async {
            let ch = channel(&plan.clients[lagging], &options).await?;
            let get = pb::RangeRequest {
                key: b"k".to_vec().into(),
                range_end: b"l".to_vec().into(),
                serializable: true,
                count_only: true,
                ..Default::default()
            };
            let r = pb::kv_client::KvClient::new(ch).range(get).await.map_err(|e| e.to_string())?;
            Ok::<i64, String>(r.into_inner().count)
        }
        .await;
        if count == Ok(200) {
            break;
        }
        assert!(Instant::now() < deadline, "the follower never caught up: {count:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = https_get(&plan.clients[lagging], "/metrics", &options).await;
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
    };
    let received = counter("etcd_network_snapshot_receive_success_total");
    assert_eq!(counter("tenure_snapshots_installed_total"), received, "{metrics}");
    assert!(received.is_some_and(|n| n >= 1.0), "no snapshot received over peer TLS: {received:?}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("initial corruption check") || Instant::now() >= deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains("initial corruption check passed"), "{text}");
    assert!(!text.contains("skipped"), "a peer's hash was not fetched over https: {text}");
}

/// With `--client-cert-auth`, a client without a certificate and one whose certificate
/// another CA signed are refused; the member's own CA's client gets answers.
#[tokio::test]
async fn clients_without_a_certificate_of_the_trusted_ca_are_refused() {
    tenure_server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), 1);
    let other = Ca::new(dir.path(), "other-ca");
    let (other_cert, other_key) = other.issue(dir.path(), "impostor", "root", 9);
    let plan = TlsPlan::new("auth", 1);
    let _server = plan.start(0, dir.path(), &as_strs(&certs.flags(0)));
    let url = &plan.clients[0];
    agreed_leader(&[url], &certs.client_options(), Duration::from_secs(20)).await;

    let no_cert = ClientTlsOptions { ca_file: Some(certs.ca.file.clone()), ..Default::default() };
    assert!(status(url, &no_cert).await.is_err(), "a client without a certificate was served");
    let foreign = ClientTlsOptions {
        cert_file: Some(other_cert),
        key_file: Some(other_key),
        ..no_cert.clone()
    };
    assert!(status(url, &foreign).await.is_err(), "another CA's certificate was accepted");
    // Plain text on the TLS port is no answer either.
    let plain = connect_channel(&url.replace("https://", "http://"), None, |e| {
        e.connect_timeout(Duration::from_secs(2)).timeout(Duration::from_secs(3))
    })
    .await;
    if let Ok(ch) = plain {
        let r =
            pb::maintenance_client::MaintenanceClient::new(ch).status(pb::StatusRequest {}).await;
        assert!(r.is_err(), "plain text was served on an https listener");
    }
    // The listener survived the failed handshakes.
    assert!(status(url, &certs.client_options()).await.is_ok());
}

/// A member whose peer certificate another CA signed, or whose certificate's common name is
/// not `--peer-cert-allowed-cn`, never takes part: the two good members elect a leader and
/// serve writes, and the bad one never learns of a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_ca_or_common_name_cannot_join() {
    tenure_server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::new(dir.path(), 3);
    let plan = TlsPlan::new("peer", 3);
    let _good: Vec<Server> =
        (0..2).map(|i| plan.start(i, dir.path(), &as_strs(&certs.flags(i)))).collect();
    let options = certs.client_options();
    let good_urls = [&plan.clients[0], &plan.clients[1]];
    agreed_leader(&good_urls, &options, Duration::from_secs(30)).await;

    let other = Ca::new(dir.path(), "rogue-ca");
    let (rogue_cert, rogue_key) = other.issue(dir.path(), "rogue", "member", 66);
    let (wrong_cn_cert, wrong_cn_key) = certs.ca.issue(dir.path(), "intruder", "intruder", 67);
    for (what, cert, key) in [
        ("another CA's certificate", &rogue_cert, &rogue_key),
        ("a certificate with another common name", &wrong_cn_cert, &wrong_cn_key),
    ] {
        let data = tempfile::tempdir().unwrap();
        let mut flags = certs.flags(2);
        // Its client side keeps the good certificate, so the test can ask it for its status.
        flags[4] = format!("--peer-cert-file={}", path(cert));
        flags[5] = format!("--peer-key-file={}", path(key));
        let bad = plan.start(2, data.path(), &as_strs(&flags));
        // Writes go on through the two good members meanwhile.
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut kv =
            pb::kv_client::KvClient::new(channel(&plan.clients[0], &options).await.unwrap());
        while Instant::now() < deadline {
            let put = pb::PutRequest {
                key: b"k".to_vec().into(),
                value: what.as_bytes().to_vec().into(),
                ..Default::default()
            };
            kv.put(put).await.unwrap_or_else(|e| panic!("put with {what} around: {e}"));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (_, leader) = status(&plan.clients[2], &options).await.expect("the member answers");
        assert_eq!(leader, 0, "the member with {what} learned of a leader");
        let list = pb::cluster_client::ClusterClient::new(
            channel(&plan.clients[0], &options).await.unwrap(),
        )
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
        assert_eq!(list.members.len(), 3);
        bad.kill();
    }
}

/// The client certificate files replaced while the member serves: new connections get the new
/// certificate within about a second, a connection made before keeps working, and
/// `--tls-min-version TLS1.3` refuses a TLS 1.2 client.
#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_without_a_restart() {
    tenure_server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "rotation-ca");
    let (cert, key) = ca.issue(dir.path(), "server", "server-1", 1);
    let plan = TlsPlan::new("rot", 1);
    let flags = [
        format!("--cert-file={}", path(&cert)),
        format!("--key-file={}", path(&key)),
        format!("--peer-cert-file={}", path(&cert)),
        format!("--peer-key-file={}", path(&key)),
        "--tls-min-version=TLS1.3".to_string(),
    ];
    let _server = plan.start(0, dir.path(), &as_strs(&flags));
    let options = ClientTlsOptions { ca_file: Some(ca.file.clone()), ..Default::default() };
    let url = &plan.clients[0];
    agreed_leader(&[url], &options, Duration::from_secs(20)).await;
    let before = presented_certificate(url, &options).await.unwrap();
    assert_eq!(common_name(&before).as_deref(), Some("server-1"));
    let old_channel = channel(url, &options).await.unwrap();

    // A new pair written beside, then renamed over the old files (as cert-manager does).
    let (new_cert, new_key) = ca.issue(dir.path(), "server-next", "server-2", 2);
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = presented_certificate(url, &options).await.unwrap();
        if common_name(&now).as_deref() == Some("server-2") {
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate is not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = pb::maintenance_client::MaintenanceClient::new(old_channel)
        .status(pb::StatusRequest {})
        .await;
    assert!(r.is_ok(), "a connection made before the rotation broke: {r:?}");

    let tls12 = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(tls12_roots(&ca.file))
        .with_no_client_auth();
    let (_, host, authority) = tenure_server::tls::split_url(url).unwrap();
    let tcp = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let r = tokio_rustls::TlsConnector::from(Arc::new(tls12))
        .connect(server_name(&host).unwrap(), tcp)
        .await;
    assert!(r.is_err(), "a TLS 1.2 client was served with --tls-min-version TLS1.3");
}

fn tls12_roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(tenure_server::tls::read_certificates("CA", ca).unwrap());
    roots
}

/// `--auto-tls --peer-auto-tls`: self-signed pairs made under the data directory; the
/// members talk to each other over TLS, and clients that skip verification are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_tls_cluster_serves_clients_that_skip_verification() {
    tenure_server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let plan = TlsPlan::new("auto", 3);
    let _servers: Vec<Server> =
        (0..3).map(|i| plan.start(i, dir.path(), &["--auto-tls", "--peer-auto-tls"])).collect();
    let options = ClientTlsOptions { skip_verify: true, ..Default::default() };
    let urls: Vec<&String> = plan.clients.iter().collect();
    agreed_leader(&urls, &options, Duration::from_secs(30)).await;
    for name in &plan.names {
        for side in ["client", "peer"] {
            let made = dir.path().join(name).join("fixtures").join(side).join("cert.pem");
            assert!(made.exists(), "{} missing", made.display());
        }
    }
    let endpoints = format!("--endpoints={}", plan.endpoints());
    let out = tenure(&["put", "auto", "tls", &endpoints, "--insecure-skip-tls-verify"]);
    assert!(out.status.success(), "{}", text(&out));
    // Verification on, and no CA that signed these: refused.
    let out = tenure(&["get", "auto", &endpoints, "--command-timeout=3s"]);
    assert!(!out.status.success(), "an unverifiable certificate was accepted: {}", text(&out));
    if common::etcdctl_path().is_some() {
        // etcdctl 3.4 dials in plain text unless told otherwise or given certificates.
        let skip = ["--insecure-transport=false", "--insecure-skip-tls-verify"];
        let out = common::etcdctl(&plan.endpoints(), &[skip[0], skip[1], "get", "auto"])
            .expect("installed");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "auto\ntls\n", "{}", text(&out));
    } else {
        eprintln!("note: etcdctl not installed; checked with tenure's client only");
        let out = tenure(&["get", "auto", &endpoints, "--insecure-skip-tls-verify"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "auto\ntls\n", "{}", text(&out));
    }
}

/// Every TLS misconfiguration ends `tenure serve` at start-up with one line on stderr and a
/// nonzero exit, before the data directory is created.
#[test]
fn tls_misconfigurations_end_start_up_with_one_line() {
    tenure_server::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "conf-ca");
    let (cert, key) = ca.issue(dir.path(), "a", "a", 1);
    let (_, other_key) = ca.issue(dir.path(), "b", "b", 2);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let (cert, key, other_key, garbage, missing) =
        (path(&cert), path(&key), path(&other_key), path(&garbage), path(&missing));
    let cases: Vec<(Vec<String>, bool, &str)> = vec![
        // (flags, whether the URLs are https, a word the message must hold)
        (vec![format!("--cert-file={missing}"), format!("--key-file={key}")], true, "missing.pem"),
        (
            vec![format!("--cert-file={cert}"), format!("--key-file={other_key}")],
            true,
            "does not match",
        ),
        (vec![format!("--cert-file={garbage}"), format!("--key-file={key}")], true, "garbage.pem"),
        (vec![format!("--cert-file={cert}"), format!("--key-file={missing}")], true, "missing.pem"),
        (vec![format!("--cert-file={cert}")], true, "--key-file"),
        (vec![], true, "--cert-file"),
        (vec![format!("--cert-file={cert}"), format!("--key-file={key}")], false, "https"),
        (vec!["--auto-tls".into()], false, "https"),
        (vec!["--tls-min-version=TLS1.1".into(), "--auto-tls".into()], true, "tls-min-version"),
        (vec!["--tls-min-version=SSL3".into(), "--auto-tls".into()], true, "tls-min-version"),
        (vec!["--auto-tls".into(), "--client-cert-auth".into()], true, "--trusted-ca-file"),
        (
            vec![
                format!("--trusted-ca-file={missing}"),
                "--client-cert-auth".into(),
                format!("--cert-file={cert}"),
                format!("--key-file={key}"),
            ],
            true,
            "missing.pem",
        ),
        (
            vec!["--auto-tls".into(), "--peer-auto-tls".into(), "--peer-cert-allowed-cn=x".into()],
            true,
            "--peer-client-cert-auth",
        ),
    ];
    for (i, (flags, https, needle)) in cases.into_iter().enumerate() {
        let ports = free_ports(2);
        let scheme = if https { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", ports[0]);
        let peer = format!("{scheme}://127.0.0.1:{}", ports[1]);
        let data = dir.path().join(format!("data{i}"));
        let mut args = vec![
            "serve".to_string(),
            "--name=m".into(),
            format!("--data-dir={}", path(&data)),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=m={peer}"),
        ];
        // The peer side gets a working pair, so each case tests only its own flags.
        if https && !flags.iter().any(|f| f.starts_with("--peer")) {
            args.push(format!("--peer-cert-file={cert}"));
            args.push(format!("--peer-key-file={key}"));
        }
        args.extend(flags.iter().cloned());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tenure"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("tenure serve {flags:?} did not exit");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{flags:?} started: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.starts_with("tenure serve: "), "{flags:?}: {stderr:?}");
        assert!(last.contains(needle), "{flags:?}: {last:?} does not mention {needle:?}");
        // Only the error line (start-up logs at info level go before it when it got that far).
        assert!(lines.iter().filter(|l| l.starts_with("tenure serve")).count() == 1, "{stderr:?}");
        assert!(
            !data.exists() || std::fs::read_dir(&data).unwrap().next().is_none(),
            "{flags:?} touched the data directory"
        );
    }
}
