//! Defects real etcd clients hit (issue 11), each checked through a real client against an
//! in-process three-member cluster: etcdctl 3.4 where it is installed (the tests that need it
//! print a note and skip otherwise), raw HTTP/2 bytes or the tonic stubs where none is needed.
//!
//! - etcd's Go client 3.4 sends `:authority: http://host:port` on per-endpoint calls
//!   (`endpoint status --cluster`); the server must serve it, not reset the stream.
//! - Alarms are replicated: raised through `Maintenance.Alarm`, listed and disarmed by
//!   `etcdctl alarm`, refusing writes with etcd's messages while raised, reported by
//!   `Status.errors` and `/health`.
//! - `/metrics` has the `process_*` metrics, so `etcdctl check datascale` passes.
//!
//! (`TCP_NODELAY` on accepted client sockets is checked where the sockets are accepted, in
//! `api::incoming`'s unit tests.)

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::cli::ServeConfig;
use tenure_server::cli::dev::{self, Timing};
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;

mod common;

const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };
/// How long anything may take before a test fails (generous: machines are shared).
const PATIENCE: Duration = Duration::from_secs(20);

struct Cluster {
    configs: Vec<ServeConfig>,
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts three members and waits until a write succeeds through member 0.
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> =
            common::free_ports(6).chunks(2).map(|c| (c[0], c[1])).collect();
        let configs = dev::configs(&ports, dir.path(), TIMING).expect("configs");
        let members = dev::start(&configs).await.expect("cluster starts");
        let cluster = Cluster { configs, members, _dir: dir };
        let mut kv = cluster.kv(0).await;
        let deadline = Instant::now() + PATIENCE;
        while kv.put(put("ready", "1")).await.is_err() {
            assert!(Instant::now() < deadline, "the cluster never accepted a write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    fn url(&self, i: usize) -> String {
        self.configs[i].advertise_client_urls[0].to_string()
    }

    fn member_id(&self, i: usize) -> u64 {
        self.configs[i].member_id
    }

    async fn kv(&self, i: usize) -> pb::kv_client::KvClient<tonic::transport::Channel> {
        pb::kv_client::KvClient::connect(self.url(i)).await.expect("connect")
    }

    async fn maintenance(
        &self,
        i: usize,
    ) -> pb::maintenance_client::MaintenanceClient<tonic::transport::Channel> {
        pb::maintenance_client::MaintenanceClient::connect(self.url(i)).await.expect("connect")
    }

    async fn shutdown(self) {
        for m in self.members {
            m.shutdown().await.expect("clean shutdown");
        }
    }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..Default::default()
    }
}

/// The installed etcdctl, or `None` with a note that the test skips its checks.
fn etcdctl(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|d| d.join("etcdctl")).find(|p| p.exists())
    });
    if found.is_none() {
        println!(
            "{test}: etcdctl is not installed (apt-get install etcd-client); skipping its checks"
        );
    }
    found
}

/// Runs etcdctl (API v3) with `args` off the async runtime, killing it after `limit`.
async fn run_etcdctl(bin: &Path, args: &[String], limit: Duration) -> Output {
    let bin = bin.to_path_buf();
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&bin)
            .env("ETCDCTL_API", "3")
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs etcdctl");
        let deadline = Instant::now() + limit;
        while child.try_wait().expect("waits").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().expect("collects etcdctl's output")
    })
    .await
    .expect("etcdctl thread")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `GET path` over HTTP/1.1: (status code, body).
async fn http_get(url: &str, path: &str) -> (u16, String) {
    let authority = url.trim_start_matches("http://").to_string();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&authority).expect("connects");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).expect("reads the reply");
        let code = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
        (code, body)
    })
    .await
    .expect("http thread")
}

// ---- :authority with a scheme ---------------------------------------------------------------

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A `Maintenance/Status` call written byte by byte, as etcd's Go client 3.4 sends it to a
/// single endpoint: with the endpoint URL, scheme included, as `:authority`. Returns every
/// header the server answered on the stream, or the RST_STREAM error code it reset it with.
fn raw_status_call(authority_host: &str, authority: &str) -> Result<Vec<(String, String)>, u32> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/etcdserverpb.Maintenance/Status"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        // Literal without indexing, new name, no Huffman (RFC 7541 §6.2.2); short strings.
        block.push(0x00);
        for s in [name, value] {
            block.push(u8::try_from(s.len()).expect("short"));
            block.extend_from_slice(s.as_bytes());
        }
    }
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    bytes.extend(frame(0x1, 0x4, 1, &block)); // HEADERS, END_HEADERS
    bytes.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0])); // DATA: an empty message, END_STREAM
    let mut s = std::net::TcpStream::connect(authority_host).expect("connects");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(&bytes).unwrap();
    let mut decoder = loona_hpack::Decoder::new();
    let mut headers = Vec::new();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("a frame");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("a payload");
        match (kind, stream) {
            (0x4, 0) if flags & 0x1 == 0 => s.write_all(&frame(0x4, 0x1, 0, &[])).unwrap(),
            (0x3, 1) => return Err(u32::from_be_bytes(payload[..4].try_into().unwrap())),
            (0x1, 1) => {
                assert_eq!(flags & 0x4, 0x4, "the server's headers fit one frame");
                for (n, v) in decoder.decode(&payload).expect("the server's HPACK decodes") {
                    headers.push((
                        String::from_utf8_lossy(&n).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    ));
                }
                if flags & 0x1 != 0 {
                    return Ok(headers);
                }
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_http2_call_with_a_scheme_in_its_authority_is_served() {
    let cluster = Cluster::start().await;
    let url = cluster.url(0);
    let host = url.trim_start_matches("http://").to_string();
    let answered = tokio::task::spawn_blocking(move || {
        (raw_status_call(&host, &url), raw_status_call(&host, &host))
    })
    .await
    .unwrap();
    for headers in [answered.0, answered.1] {
        let headers = headers.unwrap_or_else(|code| panic!("stream reset with code {code}"));
        let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get(":status"), Some("200"), "{headers:?}");
        assert_eq!(get("grpc-status"), Some("0"), "{headers:?}");
    }
    // The checker fails where it should: an authority no rewrite can save is still refused.
    let host = cluster.url(0).trim_start_matches("http://").to_string();
    let refused = tokio::task::spawn_blocking(move || raw_status_call(&host, "a b")).await.unwrap();
    assert_eq!(refused, Err(1), "PROTOCOL_ERROR");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_endpoint_status_works_with_url_endpoints_and_cluster_wide() {
    let Some(bin) = etcdctl("endpoint status") else { return };
    let cluster = Cluster::start().await;
    let args = |extra: &[&str]| {
        let mut a = vec![format!("--endpoints={}", cluster.url(0)), "--command-timeout=10s".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let one = run_etcdctl(&bin, &args(&["endpoint", "status"]), PATIENCE).await;
    assert!(one.status.success(), "{}", text(&one));
    assert!(text(&one).contains(&cluster.url(0)), "{}", text(&one));
    let all = run_etcdctl(&bin, &args(&["endpoint", "status", "--cluster"]), PATIENCE).await;
    assert!(all.status.success(), "{}", text(&all));
    let out = String::from_utf8_lossy(&all.stdout).into_owned();
    assert_eq!(out.lines().count(), 3, "{}", text(&all));
    for i in 0..3 {
        assert!(out.contains(&format!("{:x}", cluster.member_id(i))), "{out}");
    }
    cluster.shutdown().await;
}

// ---- alarms ---------------------------------------------------------------------------------

fn alarm_request(action: pb::alarm_request::AlarmAction, member: u64) -> pb::AlarmRequest {
    pb::AlarmRequest {
        action: action as i32,
        member_id: member,
        alarm: pb::AlarmType::Nospace as i32,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nospace_alarm_refuses_writes_everywhere_until_etcdctl_disarms_it() {
    use pb::alarm_request::AlarmAction;
    let cluster = Cluster::start().await;
    let raiser = cluster.member_id(2);
    // Raised on one member, through the log...
    let raised = cluster
        .maintenance(0)
        .await
        .alarm(alarm_request(AlarmAction::Activate, raiser))
        .await
        .expect("activate")
        .into_inner();
    let expected = pb::AlarmMember { member_id: raiser, alarm: pb::AlarmType::Nospace as i32 };
    assert_eq!(raised.alarms, [expected]);
    // ...listed linearizably on another...
    let listed = cluster
        .maintenance(1)
        .await
        .alarm(pb::AlarmRequest::default())
        .await
        .expect("get")
        .into_inner();
    assert_eq!(listed.alarms, [expected]);
    // ...and refusing writes on a third, with etcd's code and message; reads still work.
    let refused = cluster.kv(2).await.put(put("k", "v")).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(refused.message(), "etcdserver: mvcc: database space exceeded");
    let read = pb::RangeRequest { key: Bytes::from_static(b"ready"), ..Default::default() };
    assert_eq!(cluster.kv(2).await.range(read).await.expect("reads").into_inner().count, 1);
    // Status lists it (on the members that applied it) and /health turns unhealthy.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = cluster.maintenance(1).await.status(pb::StatusRequest {}).await.unwrap();
        let errors = status.into_inner().errors;
        if errors.contains(&format!("memberID:{raiser} alarm:NOSPACE ")) {
            break;
        }
        assert!(Instant::now() < deadline, "Status never listed the alarm: {errors:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(http_get(&cluster.url(0), "/health").await, (503, r#"{"health":"false"}"#.into()));

    if let Some(bin) = etcdctl("alarm") {
        let args = |extra: &[&str]| {
            let mut a =
                vec![format!("--endpoints={}", cluster.url(1)), "--command-timeout=10s".into()];
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let list = run_etcdctl(&bin, &args(&["alarm", "list"]), PATIENCE).await;
        assert!(list.status.success(), "{}", text(&list));
        assert_eq!(
            String::from_utf8_lossy(&list.stdout),
            format!("memberID:{raiser} alarm:NOSPACE \n")
        );
        let put = run_etcdctl(&bin, &args(&["put", "k", "v"]), PATIENCE).await;
        assert!(!put.status.success());
        assert!(text(&put).contains("etcdserver: mvcc: database space exceeded"), "{}", text(&put));
        let disarm = run_etcdctl(&bin, &args(&["alarm", "disarm"]), PATIENCE).await;
        assert!(disarm.status.success(), "{}", text(&disarm));
        assert!(text(&disarm).contains("alarm:NOSPACE"), "{}", text(&disarm));
        let list = run_etcdctl(&bin, &args(&["alarm", "list"]), PATIENCE).await;
        assert_eq!(String::from_utf8_lossy(&list.stdout), "");
    } else {
        let cleared = cluster
            .maintenance(1)
            .await
            .alarm(alarm_request(AlarmAction::Deactivate, raiser))
            .await
            .expect("deactivate")
            .into_inner();
        assert_eq!(cleared.alarms, [expected]);
    }
    // Disarmed: writes succeed again and the member is healthy.
    cluster.kv(2).await.put(put("k", "v")).await.expect("accepted once disarmed");
    let deadline = Instant::now() + PATIENCE;
    while http_get(&cluster.url(0), "/health").await.0 != 200 {
        assert!(Instant::now() < deadline, "/health stayed unhealthy after the disarm");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_request_etcd_does_not_define_is_invalid() {
    let cluster = Cluster::start().await;
    let mut m = cluster.maintenance(0).await;
    let bad_action = pb::AlarmRequest { action: 7, ..Default::default() };
    assert_eq!(m.alarm(bad_action).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let bad_type = pb::AlarmRequest { alarm: 9, ..Default::default() };
    assert_eq!(m.alarm(bad_type).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    cluster.shutdown().await;
}

// ---- process metrics ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_process_metrics_and_etcdctl_check_datascale_passes() {
    let cluster = Cluster::start().await;
    let (code, body) = http_get(&cluster.url(0), "/metrics").await;
    assert_eq!(code, 200);
    let sample = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
    };
    assert!(sample("process_resident_memory_bytes") > 1e6);
    assert!(sample("process_open_fds") >= 3.0);
    assert!(sample("process_start_time_seconds") > 1e9);
    assert!(sample("process_cpu_seconds_total") >= 0.0);
    if let Some(bin) = etcdctl("check datascale") {
        // The smallest load: 10,000 keys of 1 KiB from 50 clients.
        let args = vec![
            format!("--endpoints={}", cluster.url(0)),
            "check".into(),
            "datascale".into(),
            "--load=s".into(),
        ];
        let out = run_etcdctl(&bin, &args, Duration::from_secs(180)).await;
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("PASS"), "{}", text(&out));
    }
    cluster.shutdown().await;
}
