//! The client subcommands (`tenure put/get/del/member list/endpoint status`): real gRPC calls
//! with the generated etcd stubs, so they work against tenure and against etcd alike, and
//! output in etcdctl's formats.
//!
//! `put`, `get` and `del` try the endpoints in turn: an endpoint that cannot be reached, or an
//! answer of `Unavailable` (etcd's "leader changed", "no leader", "request timed out"), sends
//! the request to the next endpoint, round after round, until the command timeout. Writes
//! carry tenure's session metadata (`x-tenure-client-id`, random per invocation, and
//! `x-tenure-sequence: 1`), so a retry of a write that did apply gets the first answer
//! instead of applying twice. etcd ignores the metadata.
//!
//! Output follows etcdctl 3.4's `simple` and `table` printers, with one deviation:
//! `get --count-only` prints the count (etcdctl's simple printer prints nothing).

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::api::convert::{delete_range_request_to_pb, put_request_to_pb, range_request_to_pb};
use crate::cli::{ClientArgs, Consistency, DelArgs, GetArgs, OutputFormat, PutArgs, WatchArgs};
use crate::ids::format_id;
use crate::pb::etcdserverpb as pb;
use pb::cluster_client::ClusterClient;
use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;

/// The URI to dial for an endpoint given as `host:port`, `http://host:port` or
/// `https://host:port`.
pub fn endpoint_uri(endpoint: &str) -> anyhow::Result<String> {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        Ok(endpoint.to_string())
    } else if endpoint.contains("://") {
        bail!(
            "{endpoint}: unsupported scheme (use host:port, http://host:port or https://host:port)"
        )
    } else {
        Ok(format!("http://{endpoint}"))
    }
}

/// The URI to dial for `endpoint` with the TLS flags `tls`: a `host:port` endpoint uses TLS
/// when any TLS flag is given (as etcdctl does).
pub fn endpoint_uri_tls(endpoint: &str, tls: &crate::cli::ClientTlsArgs) -> anyhow::Result<String> {
    let uri = endpoint_uri(endpoint)?;
    if tls.options().any() && !endpoint.contains("://") {
        return Ok(format!("https://{endpoint}"));
    }
    Ok(uri)
}

/// Connects to `endpoint` with the TLS flags `tls`, within `dial_timeout`; `configure` sets
/// the endpoint's other options (timeouts).
pub(crate) async fn dial(
    endpoint: &str,
    tls: &crate::cli::ClientTlsArgs,
    dial_timeout: Duration,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> anyhow::Result<Channel> {
    let uri = endpoint_uri_tls(endpoint, tls)?;
    let config = tls.client_config()?;
    let connect =
        crate::tls::connect_channel(&uri, config, |e| configure(e.connect_timeout(dial_timeout)));
    match tokio::time::timeout(dial_timeout, connect).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(anyhow!("{endpoint}: {e}")),
        Err(_) => Err(anyhow!("{endpoint}: context deadline exceeded")),
    }
}

/// Connects to one endpoint within the dial timeout.
pub(crate) async fn connect_one(endpoint: &str, args: &ClientArgs) -> anyhow::Result<Channel> {
    let timeout = args.command_timeout;
    dial(endpoint, &args.tls, args.dial_timeout, |e| e.timeout(timeout)).await
}

/// A channel whose every request (streams included) carries the token of `--user`, if given.
pub(crate) type Authed = InterceptedService<Channel, TokenInterceptor>;

/// Puts the token, if any, in each request's `token` metadata (where etcd looks for it).
#[derive(Clone, Default)]
pub(crate) struct TokenInterceptor(Option<AsciiMetadataValue>);

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            r.metadata_mut().insert("token", token.clone());
        }
        Ok(r)
    }
}

/// Logs in on `channel` as `login` (name and password), if given: the interceptor that sends
/// the token. etcd and tenure accept a token on every member, so one login serves them all.
pub(crate) async fn log_in(
    channel: &Channel,
    login: Option<&(String, String)>,
) -> Result<TokenInterceptor, tonic::Status> {
    let Some((name, password)) = login else { return Ok(TokenInterceptor::default()) };
    let request = pb::AuthenticateRequest { name: name.clone(), password: password.clone() };
    let token = pb::auth_client::AuthClient::new(channel.clone())
        .authenticate(request)
        .await?
        .into_inner()
        .token;
    let token =
        token.parse().map_err(|_| tonic::Status::internal("the server's token is not ASCII"))?;
    Ok(TokenInterceptor(Some(token)))
}

/// Connects to `endpoint` and logs in there with `--user`, if given.
pub(crate) async fn connect_authed(endpoint: &str, args: &ClientArgs) -> anyhow::Result<Authed> {
    let channel = connect_one(endpoint, args).await?;
    let login = args.credentials.login()?;
    let token = call(args.command_timeout, async {
        log_in(&channel, login.as_ref()).await.map(tonic::Response::new)
    })
    .await?;
    Ok(InterceptedService::new(channel, token))
}

/// Connects (and logs in) to the first endpoint that answers.
async fn connect_any(args: &ClientArgs) -> anyhow::Result<Authed> {
    let mut errors = Vec::new();
    for e in &args.endpoints {
        match connect_authed(e, args).await {
            Ok(ch) => return Ok(ch),
            Err(err) => errors.push(err.to_string()),
        }
    }
    bail!("could not connect to any endpoint: {}", errors.join("; "))
}

/// Pause between rounds over every endpoint, so a cluster between leaders is not hammered.
const RETRY_ROUND_PAUSE: Duration = Duration::from_millis(100);

/// Whether a failed request may go to the next endpoint: etcd answers `Unavailable` when the
/// cluster is between leaders or the request timed out, and tonic when the endpoint is gone.
fn retryable(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
}

/// A client id for one invocation's writes: random (std's per-process random hash keys,
/// mixed with the time and process id), never 0.
fn random_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// `req` with tenure's session metadata: the write is sequence 1 of client `client_id`.
fn with_session<T>(req: T, client_id: u64) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    let id = tonic::metadata::MetadataValue::from(client_id);
    r.metadata_mut().insert("x-tenure-client-id", id);
    r.metadata_mut().insert("x-tenure-sequence", tonic::metadata::MetadataValue::from(1u64));
    r
}

/// Sends a request built by `attempt` to each endpoint in turn (from the first, round after
/// round) until one answers with something other than a retryable error, all within the
/// command timeout. Returns the answer, or the last error (etcd's exact message). A round in
/// which no endpoint can be reached ends the retries: nobody is there to answer. With
/// `--user`, the first endpoint that answers is asked for a token first, and every request
/// carries it.
pub(crate) async fn with_retries<T, F, Fut>(args: &ClientArgs, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut(Authed) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    // A malformed endpoint is the user's mistake, not worth retrying.
    for ep in &args.endpoints {
        endpoint_uri(ep)?;
    }
    let login = args.credentials.login()?;
    let mut token: Option<TokenInterceptor> = None;
    let deadline = tokio::time::Instant::now() + args.command_timeout;
    let mut last: Option<anyhow::Error> = None;
    loop {
        let mut unreachable = Vec::new();
        for ep in &args.endpoints {
            if tokio::time::Instant::now() >= deadline {
                return Err(last.unwrap_or_else(|| anyhow!("context deadline exceeded")));
            }
            let channel = match tokio::time::timeout_at(deadline, connect_one(ep, args)).await {
                Ok(Ok(ch)) => ch,
                Ok(Err(e)) => {
                    unreachable.push(e.to_string());
                    continue;
                }
                Err(_) => return Err(anyhow!("context deadline exceeded")),
            };
            let interceptor = match &token {
                Some(t) => t.clone(),
                None => match tokio::time::timeout_at(deadline, log_in(&channel, login.as_ref()))
                    .await
                {
                    Ok(Ok(t)) => token.insert(t).clone(),
                    Ok(Err(status)) if retryable(&status) => {
                        last = Some(anyhow!("{}", status.message()));
                        continue;
                    }
                    Ok(Err(status)) => return Err(anyhow!("{}", status.message())),
                    Err(_) => return Err(anyhow!("context deadline exceeded")),
                },
            };
            let channel = InterceptedService::new(channel, interceptor);
            match tokio::time::timeout_at(deadline, attempt(channel)).await {
                Ok(Ok(r)) => return Ok(r.into_inner()),
                Ok(Err(status)) if retryable(&status) => {
                    last = Some(anyhow!("{}", status.message()));
                }
                Ok(Err(status)) => return Err(anyhow!("{}", status.message())),
                Err(_) => return Err(anyhow!("context deadline exceeded")),
            }
        }
        if unreachable.len() == args.endpoints.len() {
            bail!("could not connect to any endpoint: {}", unreachable.join("; "));
        }
        tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + RETRY_ROUND_PAUSE))
            .await;
    }
}

/// Runs a request with the command timeout, turning a gRPC status into its message (which is
/// etcd's exact error string).
async fn call<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(anyhow!("{}", status.message())),
        Err(_) => Err(anyhow!("context deadline exceeded")),
    }
}

/// `tenure put`.
pub async fn put(a: &PutArgs) -> anyhow::Result<String> {
    let value = match (&a.value, a.ignore_value) {
        (Some(v), _) => Bytes::copy_from_slice(v.as_bytes()),
        (None, true) => Bytes::new(),
        (None, false) => bail!("put command needs 1 argument and input from stdin or 2 arguments"),
    };
    let req = tenure_kv::PutRequest {
        key: Bytes::copy_from_slice(a.key.as_bytes()),
        value,
        lease: a.lease.unwrap_or(tenure_kv::NO_LEASE),
        prev_kv: a.prev_kv,
        ignore_value: a.ignore_value,
        ignore_lease: a.ignore_lease,
    };
    let req = put_request_to_pb(&req);
    let client_id = random_client_id();
    let resp = with_retries(&a.client, |ch| {
        let req = with_session(req.clone(), client_id);
        async move { KvClient::new(ch).put(req).await }
    })
    .await?;
    let mut out = String::from("OK\n");
    if let Some(prev) = &resp.prev_kv {
        print_kv(&mut out, prev, false);
    }
    Ok(out)
}

/// The range request `get`/`del` flags describe.
fn key_range(
    key: &str,
    range_end: &Option<String>,
    prefix: bool,
    from_key: bool,
) -> tenure_kv::RangeRequest {
    let key = Bytes::copy_from_slice(key.as_bytes());
    if prefix {
        tenure_kv::RangeRequest::prefix(key)
    } else if from_key {
        // etcdctl: an empty key with --from-key means every key.
        let key = if key.is_empty() { Bytes::from_static(b"\0") } else { key };
        tenure_kv::RangeRequest::from_key(key)
    } else if let Some(end) = range_end {
        tenure_kv::RangeRequest::span(key, Bytes::copy_from_slice(end.as_bytes()))
    } else {
        tenure_kv::RangeRequest::single(key)
    }
}

/// The `RangeRequest` that `tenure get`'s flags describe.
pub fn get_request(a: &GetArgs) -> pb::RangeRequest {
    let mut r = key_range(&a.key, &a.range_end, a.prefix, a.from_key);
    r.revision = a.rev;
    r.limit = a.limit;
    r.keys_only = a.keys_only;
    r.count_only = a.count_only;
    range_request_to_pb(&r, a.consistency == Consistency::Serializable)
}

/// etcdctl's `printKV`: the key (unless values only), then the value.
fn print_kv(out: &mut String, kv: &crate::pb::mvccpb::KeyValue, value_only: bool) {
    if !value_only {
        out.push_str(&String::from_utf8_lossy(&kv.key));
        out.push('\n');
    }
    out.push_str(&String::from_utf8_lossy(&kv.value));
    out.push('\n');
}

/// Formats a range response as `tenure get` prints it.
pub fn format_get(resp: &pb::RangeResponse, a: &GetArgs) -> String {
    let mut out = String::new();
    if a.count_only {
        let _ = writeln!(out, "{}", resp.count);
        return out;
    }
    for kv in &resp.kvs {
        print_kv(&mut out, kv, a.print_value_only);
    }
    out
}

/// `tenure get`.
pub async fn get(a: &GetArgs) -> anyhow::Result<String> {
    let req = get_request(a);
    let resp = with_retries(&a.client, |ch| {
        let req = req.clone();
        async move { KvClient::new(ch).range(req).await }
    })
    .await?;
    Ok(format_get(&resp, a))
}

/// The create request `tenure watch`'s flags describe.
pub fn watch_request(a: &WatchArgs) -> pb::WatchRequest {
    let range_end = if a.prefix {
        tenure_kv::RangeRequest::prefix(Bytes::copy_from_slice(a.key.as_bytes())).range_end
    } else {
        a.range_end.as_ref().map_or_else(Bytes::new, |e| Bytes::copy_from_slice(e.as_bytes()))
    };
    let create = pb::WatchCreateRequest {
        key: Bytes::copy_from_slice(a.key.as_bytes()),
        range_end,
        start_revision: a.rev,
        progress_notify: a.progress_notify,
        prev_kv: a.prev_kv,
        ..Default::default()
    };
    pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) }
}

/// Formats one watch response as etcdctl prints it: for each event its type, the previous
/// key-value if there is one, then the key-value; an empty response (a progress
/// notification) as `progress notify: REV`.
pub fn format_watch_response(r: &pb::WatchResponse, out: &mut String) {
    if r.created {
        return;
    }
    if r.events.is_empty() && !r.canceled {
        let revision = r.header.map_or(0, |h| h.revision);
        let _ = writeln!(out, "progress notify: {revision}");
        return;
    }
    for e in &r.events {
        let kind = if e.r#type == crate::pb::mvccpb::event::EventType::Delete as i32 {
            "DELETE"
        } else {
            "PUT"
        };
        let _ = writeln!(out, "{kind}");
        if let Some(prev) = &e.prev_kv {
            print_kv(out, prev, false);
        }
        if let Some(kv) = &e.kv {
            print_kv(out, kv, false);
        }
    }
}

/// `tenure watch`: prints events until the watch is cancelled by the server (then an error) or
/// the stream ends.
pub async fn watch(a: &WatchArgs) -> anyhow::Result<String> {
    use std::io::Write as _;
    let create = watch_request(a);
    let mut stream = with_retries(&a.client, |ch| {
        // The request stream stays open: closing it would end the watch.
        let requests = tokio_stream::StreamExt::chain(
            tokio_stream::once(create.clone()),
            tokio_stream::pending(),
        );
        async move { pb::watch_client::WatchClient::new(ch).watch(requests).await }
    })
    .await?;
    let stdout = std::io::stdout();
    while let Some(r) = stream.message().await.map_err(|s| anyhow!("{}", s.message()))? {
        if r.canceled {
            let reason = if r.compact_revision > 0 {
                format!(
                    "etcdserver: mvcc: required revision has been compacted (compact revision {})",
                    r.compact_revision
                )
            } else {
                r.cancel_reason.clone()
            };
            bail!("watch was canceled ({reason})");
        }
        let mut out = String::new();
        format_watch_response(&r, &mut out);
        let mut lock = stdout.lock();
        lock.write_all(out.as_bytes()).and_then(|()| lock.flush()).context("stdout")?;
    }
    Ok(String::new())
}

/// `tenure del`.
pub async fn del(a: &DelArgs) -> anyhow::Result<String> {
    let r = key_range(&a.key, &a.range_end, a.prefix, a.from_key);
    let req =
        tenure_kv::DeleteRangeRequest { key: r.key, range_end: r.range_end, prev_kv: a.prev_kv };
    let req = delete_range_request_to_pb(&req);
    let client_id = random_client_id();
    let resp = with_retries(&a.client, |ch| {
        let req = with_session(req.clone(), client_id);
        async move { KvClient::new(ch).delete_range(req).await }
    })
    .await?;
    let mut out = format!("{}\n", resp.deleted);
    for prev in &resp.prev_kvs {
        print_kv(&mut out, prev, false);
    }
    Ok(out)
}

/// Formats members as `etcdctl member list` does.
pub fn format_members(members: &[pb::Member], format: OutputFormat) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                format_id(m.id),
                if m.name.is_empty() { "unstarted" } else { "started" }.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect();
    match format {
        OutputFormat::Simple => rows.iter().map(|r| format!("{}\n", r.join(", "))).collect(),
        OutputFormat::Table => {
            table(&["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"], &rows)
        }
    }
}

/// `tenure member list`.
pub async fn member_list(a: &ClientArgs) -> anyhow::Result<String> {
    let mut c = ClusterClient::new(connect_any(a).await?);
    let resp =
        call(a.command_timeout, c.member_list(pb::MemberListRequest { linearizable: false }))
            .await?;
    Ok(format_members(&resp.members, a.write_out))
}

/// One row of `endpoint status`.
pub fn status_row(endpoint: &str, s: &pb::StatusResponse) -> Vec<String> {
    let member = s.header.as_ref().map_or(0, |h| h.member_id);
    vec![
        endpoint.to_string(),
        format_id(member),
        s.version.clone(),
        humanize_bytes(s.db_size.max(0) as u64),
        (s.leader == member).to_string(),
        s.is_learner.to_string(),
        s.raft_term.to_string(),
        s.raft_index.to_string(),
        s.raft_applied_index.to_string(),
        s.errors.join(", "),
    ]
}

/// Formats `endpoint status` rows.
pub fn format_status(rows: &[Vec<String>], format: OutputFormat) -> String {
    match format {
        OutputFormat::Simple => rows.iter().map(|r| format!("{}\n", r.join(", "))).collect(),
        OutputFormat::Table => table(
            &[
                "ENDPOINT",
                "ID",
                "VERSION",
                "DB SIZE",
                "IS LEADER",
                "IS LEARNER",
                "RAFT TERM",
                "RAFT INDEX",
                "RAFT APPLIED INDEX",
                "ERRORS",
            ],
            rows,
        ),
    }
}

/// `tenure endpoint status`: one Status call per endpoint. Failures are reported on stderr
/// (as etcdctl does) and make the command fail after printing the endpoints that answered.
pub async fn endpoint_status(a: &ClientArgs) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for ep in &a.endpoints {
        let result = async {
            let mut m = MaintenanceClient::new(connect_authed(ep, a).await?);
            call(a.command_timeout, m.status(pb::StatusRequest {})).await
        }
        .await;
        match result {
            Ok(s) => rows.push(status_row(ep, &s)),
            Err(e) => {
                eprintln!("Failed to get the status of endpoint {ep} ({e})");
                failed.push(ep.clone());
            }
        }
    }
    let out = format_status(&rows, a.write_out);
    if !failed.is_empty() {
        print!("{out}");
        bail!("unhealthy endpoint(s): {}", failed.join(", "));
    }
    Ok(out)
}

/// go-humanize's `Bytes` (SI units), as etcdctl prints database sizes: `20 kB`, `1.2 MB`.
pub fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let mut e = 0usize;
    let mut scale = 1f64;
    while e + 1 < UNITS.len() && (n as f64) >= scale * 1000.0 {
        scale *= 1000.0;
        e += 1;
    }
    let val = ((n as f64) / scale * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 { format!("{val:.1} {}", UNITS[e]) } else { format!("{val:.0} {}", UNITS[e]) }
}

/// An ASCII table like etcdctl's (olekukonko/tablewriter): centered headers, right-aligned
/// cells.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let rule: String =
        widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let pad = w - h.len();
        let left = pad / 2;
        let _ = write!(out, "| {}{}{} ", " ".repeat(left), h, " ".repeat(pad - left));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for r in rows {
        for (i, w) in widths.iter().enumerate() {
            let cell = r.get(i).map_or("", String::as_str);
            let _ = write!(out, "| {cell:>w$} ");
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn get_args(args: &[&str]) -> GetArgs {
        let cli = Cli::try_parse_from(["tenure", "get"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Get(g) => g,
            _ => unreachable!(),
        }
    }

    #[test]
    fn get_flags_become_etcdctls_range_requests() {
        let r = get_request(&get_args(&["foo", "--prefix", "--rev", "4", "--consistency", "s"]));
        assert_eq!(
            (&r.key[..], &r.range_end[..], r.revision, r.serializable),
            (&b"foo"[..], &b"fop"[..], 4, true)
        );
        let r = get_request(&get_args(&["", "--prefix"]));
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"\0"[..], &b"\0"[..]));
        let r = get_request(&get_args(&["a", "--from-key"]));
        assert_eq!((&r.key[..], &r.range_end[..]), (&b"a"[..], &b"\0"[..]));
        let r = get_request(&get_args(&["a", "c", "--limit", "2"]));
        assert_eq!((&r.range_end[..], r.limit, r.serializable), (&b"c"[..], 2, false));
    }

    #[test]
    fn get_prints_like_etcdctl() {
        let kv = |k: &str, v: &str| crate::pb::mvccpb::KeyValue {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        };
        let resp = pb::RangeResponse {
            kvs: vec![kv("a", "1"), kv("b", "2")],
            count: 2,
            ..Default::default()
        };
        assert_eq!(format_get(&resp, &get_args(&["a"])), "a\n1\nb\n2\n");
        assert_eq!(format_get(&resp, &get_args(&["a", "--print-value-only"])), "1\n2\n");
        assert_eq!(format_get(&resp, &get_args(&["a", "--count-only"])), "2\n");
    }

    #[test]
    fn member_list_matches_etcdctl_formats() {
        let m = pb::Member {
            id: 0x8e9e_05c5_2164_694d,
            name: "default".into(),
            peer_ur_ls: vec!["http://localhost:2380".into()],
            client_ur_ls: vec!["http://localhost:2379".into()],
            is_learner: false,
        };
        let unstarted = pb::Member { id: 0xa, name: String::new(), ..m.clone() };
        assert_eq!(
            format_members(&[m.clone(), unstarted], OutputFormat::Simple),
            "8e9e05c52164694d, started, default, http://localhost:2380, http://localhost:2379, false\n\
             a, unstarted, , http://localhost:2380, http://localhost:2379, false\n"
        );
        let expected = "\
+------------------+---------+---------+-----------------------+-----------------------+------------+
|        ID        | STATUS  |  NAME   |      PEER ADDRS       |     CLIENT ADDRS      | IS LEARNER |
+------------------+---------+---------+-----------------------+-----------------------+------------+
| 8e9e05c52164694d | started | default | http://localhost:2380 | http://localhost:2379 |      false |
+------------------+---------+---------+-----------------------+-----------------------+------------+
";
        assert_eq!(format_members(&[m], OutputFormat::Table), expected);
    }

    #[test]
    fn endpoint_status_row_marks_the_leader() {
        let s = pb::StatusResponse {
            header: Some(pb::ResponseHeader { member_id: 0xabc, ..Default::default() }),
            version: "3.4.23".into(),
            db_size: 20480,
            leader: 0xabc,
            raft_term: 2,
            raft_index: 4,
            raft_applied_index: 4,
            ..Default::default()
        };
        assert_eq!(
            format_status(&[status_row("127.0.0.1:2379", &s)], OutputFormat::Simple),
            "127.0.0.1:2379, abc, 3.4.23, 20 kB, true, false, 2, 4, 4, \n"
        );
    }

    #[test]
    fn bytes_humanize_like_go_humanize() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(82), "82 B");
        assert_eq!(humanize_bytes(1000), "1.0 kB");
        assert_eq!(humanize_bytes(20480), "20 kB");
        assert_eq!(humanize_bytes(1_234_567), "1.2 MB");
        assert_eq!(humanize_bytes(u64::MAX), "18 EB");
    }

    #[test]
    fn endpoints_take_http_https_or_host_port() {
        assert_eq!(endpoint_uri("127.0.0.1:2379").unwrap(), "http://127.0.0.1:2379");
        assert_eq!(endpoint_uri("http://h:1").unwrap(), "http://h:1");
        assert_eq!(endpoint_uri("https://h:1").unwrap(), "https://h:1");
        let tls =
            crate::cli::ClientTlsArgs { insecure_skip_tls_verify: true, ..Default::default() };
        assert_eq!(endpoint_uri_tls("h:1", &tls).unwrap(), "https://h:1");
        assert_eq!(endpoint_uri_tls("http://h:1", &tls).unwrap(), "http://h:1");
        assert_eq!(endpoint_uri_tls("h:1", &Default::default()).unwrap(), "http://h:1");
        assert!(endpoint_uri("unix://x").is_err());
    }

    #[test]
    fn watch_output_is_etcdctls() {
        use crate::pb::mvccpb::{Event, KeyValue, event::EventType};
        let kv = |k: &str, v: &str| KeyValue {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        };
        let r = pb::WatchResponse {
            events: vec![
                Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv("a", "2")),
                    prev_kv: Some(kv("a", "1")),
                },
                Event { r#type: EventType::Delete as i32, kv: Some(kv("b", "")), prev_kv: None },
            ],
            ..Default::default()
        };
        let mut out = String::new();
        format_watch_response(&r, &mut out);
        assert_eq!(out, "PUT\na\n1\na\n2\nDELETE\nb\n\n");
        let progress = pb::WatchResponse {
            header: Some(pb::ResponseHeader { revision: 7, ..Default::default() }),
            ..Default::default()
        };
        let mut out = String::new();
        format_watch_response(&progress, &mut out);
        assert_eq!(out, "progress notify: 7\n");
    }
}
