//! End-to-end tests of `tenure bench`: the real binary's exit codes for bad flags and an
//! unreachable endpoint, and short runs (`--total 200`) of each workload against an in-process
//! three-member cluster, whose JSON summaries are parsed back and checked. No test looks at a
//! throughput or latency figure: those are measurements, not pass/fail conditions.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tenure_server::cli::ServeConfig;
use tenure_server::cli::dev::{self, Timing};
use tenure_server::member::Member;
use tenure_server::pb::etcdserverpb as pb;

mod common;

/// Short timeouts so the election takes well under a second.
const TIMING: Timing = Timing { heartbeat_ms: 50, election_ms: 500 };

/// How long anything may take before the test fails (generous: machines are shared).
const PATIENCE: Duration = Duration::from_secs(20);

fn tenure(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenure")).args(args).output().expect("runs tenure")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_bench_flags_fail_with_one_line_and_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["bench", "put", "--clients", "0"], "--clients must be greater than 0"),
        (&["bench", "put", "--total", "10", "--duration", "1s"], "cannot be used together"),
        (&["bench", "mixed", "--read-ratio", "2"], "between 0 and 1"),
        (&["bench", "put", "--key-size", "1", "--key-space-size", "11"], "cannot number"),
        (&["bench", "put", "--total", "many"], "invalid value 'many'"),
        (&["bench", "watch", "--watchers", "2", "--streams", "3"], "must not exceed --watchers"),
        (&["bench", "watch", "--prefix", ""], "--prefix must not be empty"),
        (&["bench", "watch", "--watchers", "0"], "--watchers must be greater than 0"),
        (&["bench", "lease-keepalive", "--leases", "0"], "--leases must be greater than 0"),
        (&["bench", "lease-keepalive", "--ttl", "0"], "--ttl must be greater than 0"),
    ];
    for (args, needle) in cases {
        let o = tenure(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn bench_help_lists_every_workload() {
    let o = tenure(&["bench", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for workload in ["put", "range", "txn-put", "mixed", "watch", "lease-keepalive"] {
        assert!(out.contains(workload), "{workload}: {out}");
    }
}

#[test]
fn unreachable_endpoint_is_exit_code_1() {
    let ep = format!("127.0.0.1:{}", common::free_port());
    let o = tenure(&["bench", "put", "--endpoints", &ep, "--dial-timeout", "300ms"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).starts_with("tenure bench: cannot connect to"), "{}", stderr(&o));
}

/// Waits until one member leads and every member knows it, then writes once through each
/// member so none of them still answers "no leader" when the load starts.
async fn settle(configs: &[ServeConfig], members: &[Member]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let statuses: Vec<_> = members.iter().map(|m| m.handle().status()).collect();
        let leaders: Vec<usize> = (0..statuses.len()).filter(|&i| statuses[i].is_leader).collect();
        if let [l] = leaders[..]
            && statuses.iter().all(|s| s.leader == Some(configs[l].member_id))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no leader elected: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in configs {
        let mut kv = pb::kv_client::KvClient::connect(c.advertise_client_urls[0].to_string())
            .await
            .expect("connect");
        let req = pb::PutRequest {
            key: Bytes::from_static(b"warm-up"),
            value: Bytes::from_static(b"1"),
            ..Default::default()
        };
        loop {
            match kv.put(req.clone()).await {
                Ok(_) => break,
                Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(s) => panic!("warm-up put failed: {s}"),
            }
        }
    }
}

/// Member `i`'s client URL.
fn endpoints_of(configs: &[ServeConfig], i: usize) -> String {
    configs[i].advertise_client_urls[0].to_string()
}

/// Runs `tenure bench ARGS --json --quiet` against `endpoints` and parses its summary.
async fn bench_json(endpoints: &str, args: &[&str]) -> serde_json::Value {
    let mut full: Vec<String> = vec!["bench".into()];
    full.extend(args.iter().map(|s| s.to_string()));
    full.extend(["--endpoints".into(), endpoints.into(), "--json".into(), "--quiet".into()]);
    // The cluster runs on this test's runtime: wait for the child off its worker threads.
    let o = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tenure")).args(&full).output().expect("runs tenure")
    })
    .await
    .expect("joins");
    assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.trim_end().lines().count(), 1, "one JSON line: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// The fields every summary has, with the right types, and the counts adding up.
fn check_summary(v: &serde_json::Value, workload: &str, total: u64) {
    assert_eq!(v["workload"], workload, "{v}");
    assert_eq!(v["config"]["total"], total, "{v}");
    assert_eq!(v["ops_count"], total, "every request answered: {v}");
    assert_eq!(v["errors_count"], 0, "{v}");
    assert!(v["errors"].as_object().is_some_and(|e| e.is_empty()), "{v}");
    let counted: u64 = v["counts"].as_object().unwrap().values().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(counted, total, "{v}");
    assert!(v["elapsed_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["throughput_ops_per_second"].as_f64().unwrap() > 0.0, "{v}");
    let l = &v["latency_ms"];
    let p = |f: &str| l[f].as_f64().unwrap_or_else(|| panic!("latency_ms.{f}: {v}"));
    assert!(p("min") > 0.0, "{v}");
    assert!(p("min") <= p("p50") && p("p50") <= p("p90") && p("p90") <= p("p99"), "{v}");
    assert!(p("p99") <= p("p99_9") && p("p99_9") <= p("max"), "{v}");
    assert!(p("min") <= p("mean") && p("mean") <= p("max"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_runs_of_each_workload_against_a_three_member_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ports: Vec<(u16, u16)> = common::free_ports(6).chunks(2).map(|c| (c[0], c[1])).collect();
    let configs = dev::configs(&ports, dir.path(), TIMING).expect("configs");
    let members = dev::start(&configs).await.expect("cluster starts");
    settle(&configs, &members).await;
    let endpoints = dev::endpoints(&configs);

    // Puts of 50 keys in order, over all three members: afterwards all 50 exist.
    let put = bench_json(
        &endpoints,
        &[
            "put",
            "--total",
            "200",
            "--clients",
            "8",
            "--conns",
            "3",
            "--key-space-size",
            "50",
            "--sequential-keys",
            "--val-size",
            "64",
        ],
    )
    .await;
    check_summary(&put, "put", 200);
    assert_eq!(put["counts"]["put"], 200, "{put}");
    assert_eq!(put["config"]["endpoints"].as_array().unwrap().len(), 3, "{put}");
    assert_eq!(
        (put["config"]["clients"].as_u64(), put["config"]["conns"].as_u64()),
        (Some(8), Some(3))
    );
    assert!(put["config"]["consistency"].is_null(), "{put}");
    let mut kv =
        pb::kv_client::KvClient::connect(endpoints_of(&configs, 0)).await.expect("connect");
    let all = kv
        .range(pb::RangeRequest {
            key: Bytes::from_static(b"00000000"),
            range_end: Bytes::from_static(b"00000050"),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(all.count, 50, "every key of the key space was written");

    for consistency in ["l", "s"] {
        let range = bench_json(
            &endpoints,
            &["range", "--consistency", consistency, "--total", "200", "--clients", "8"],
        )
        .await;
        check_summary(&range, "range", 200);
        assert_eq!(range["counts"]["range"], 200, "{range}");
        assert_eq!(range["config"]["consistency"], consistency, "{range}");
    }

    let txn = bench_json(
        &endpoints,
        &["txn-put", "--total", "200", "--clients", "4", "--key-space-size", "2"],
    )
    .await;
    check_summary(&txn, "txn-put", 200);
    // Four clients on two keys: the first compare of each key by each client may fail, later
    // ones can; at least the first writer of each key succeeds.
    assert!(txn["counts"]["txn_succeeded"].as_u64().unwrap_or(0) >= 2, "{txn}");

    let mixed = bench_json(
        &endpoints,
        &["mixed", "--read-ratio", "0.5", "--total", "200", "--clients", "4"],
    )
    .await;
    check_summary(&mixed, "mixed", 200);
    assert_eq!(mixed["config"]["read_ratio"], 0.5, "{mixed}");

    // Twenty watchers on five streams over three members while eight clients put 200 keys
    // under the prefix: every watcher receives every put, once and in order.
    let watch = bench_json(
        &endpoints,
        &[
            "watch",
            "--watchers",
            "20",
            "--streams",
            "5",
            "--prefix",
            "w/",
            "--total",
            "200",
            "--clients",
            "8",
            "--conns",
            "3",
            "--key-space-size",
            "50",
            "--sequential-keys",
        ],
    )
    .await;
    check_summary(&watch, "watch", 200);
    let w = &watch["watch"];
    assert_eq!((w["watchers"].as_u64(), w["streams"].as_u64()), (Some(20), Some(5)), "{watch}");
    assert_eq!(w["prefix"], "w/", "{watch}");
    assert_eq!(w["events_expected"], 200 * 20, "{watch}");
    assert_eq!(w["events_received"], 200 * 20, "{watch}");
    for counter in ["missed", "disordered", "failed_watchers"] {
        assert_eq!(w[counter], 0, "{counter}: {watch}");
    }
    let (start, last) =
        (w["start_revision"].as_i64().unwrap(), w["last_revision"].as_i64().unwrap());
    assert_eq!(last - start + 1, 200, "one revision per put, none lost: {watch}");
    assert!(w["events_per_second"].as_f64().unwrap() > 0.0, "{watch}");
    let under_prefix = kv
        .range(pb::RangeRequest {
            key: Bytes::from_static(b"w/"),
            range_end: Bytes::from_static(b"w0"),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(under_prefix.count, 50, "the puts went under the prefix");

    // Fifty leases renewed round-robin by eight clients, each on its own stream, through all
    // three members: every renewal answered with a live TTL, then every lease revoked.
    let lease = bench_json(
        &endpoints,
        &[
            "lease-keepalive",
            "--leases",
            "50",
            "--ttl",
            "30",
            "--total",
            "200",
            "--clients",
            "8",
            "--conns",
            "3",
        ],
    )
    .await;
    check_summary(&lease, "lease-keepalive", 200);
    assert_eq!(lease["counts"]["renew"], 200, "{lease}");
    let l = &lease["lease"];
    assert_eq!((l["leases"].as_u64(), l["ttl_seconds"].as_u64()), (Some(50), Some(30)), "{lease}");
    assert_eq!(l["granted_ttl_seconds"], 30, "{lease}");
    assert!(l["grant_seconds"].as_f64().unwrap() > 0.0, "{lease}");
    assert_eq!(l["expired_renewals"], 0, "{lease}");
    assert_eq!(
        (l["revoked"].as_u64(), l["revoke_errors"].as_u64()),
        (Some(50), Some(0)),
        "{lease}"
    );
    let mut leases =
        pb::lease_client::LeaseClient::connect(endpoints_of(&configs, 0)).await.expect("connect");
    // A revoke acknowledged through another member may reach this one a moment later.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left =
            leases.lease_leases(pb::LeaseLeasesRequest {}).await.expect("leases").into_inner();
        if left.leases.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "leases not revoked: {:?}", left.leases);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for m in members {
        m.shutdown().await.expect("clean shutdown");
    }
}
