//! The gRPC gateway (JSON over HTTP on the client port) and the health and identity endpoints
//! (issue 16, parts 4 and 5), through plain HTTP/1.1 requests written on a TCP socket, as
//! `curl` sends them.
//!
//! Each gateway scenario runs against an in-process three-member tenure cluster (through a
//! follower, so writes are forwarded) and, where `etcd` is installed, against a fresh etcd 3.4;
//! each step writes a transcript line with the HTTP status, the content type and the JSON
//! body, parsed and compared field by field with only what must differ between two clusters
//! masked (cluster and member ids, raft terms). The transcripts must be equal. Where the two
//! differ on purpose (the message of a JSON syntax error, which is Go's decoder's own prose;
//! cluster size), the line keeps what both must agree on. Without `etcd` the etcd half is
//! skipped with a printed note.

use std::time::{Duration, Instant};

use serde_json::Value;
use tenure_server::pb::etcdserverpb as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;
mod servers;

use servers::{Etcd, PATIENCE, Tenure, Transcript};

// ---- a small HTTP/1.1 client ----------------------------------------------------------------

/// An HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn authority(base: &str) -> &str {
    base.trim_start_matches("http://").trim_end_matches('/')
}

/// Sends `method path` with `body` on a new connection.
async fn send(base: &str, method: &str, path: &str, body: &[u8]) -> TcpStream {
    send_with(base, method, path, body, "").await
}

/// [`send`] with `extra` header lines (each ending in CRLF).
async fn send_with(base: &str, method: &str, path: &str, body: &[u8], extra: &str) -> TcpStream {
    let host = authority(base);
    let mut s = TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("send head");
    // A server may answer before it has read all of a body it refuses.
    let _ = s.write_all(body).await;
    s
}

/// One request; the whole answer (the server closes the connection).
async fn http(base: &str, method: &str, path: &str, body: &[u8]) -> Reply {
    http_with(base, method, path, body, "").await
}

/// [`http`] with `extra` header lines.
async fn http_with(base: &str, method: &str, path: &str, body: &[u8], extra: &str) -> Reply {
    let mut s = send_with(base, method, path, body, extra).await;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(PATIENCE, s.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete answer"));
    let ((status, headers), body) = parse(&raw).unwrap_or_else(|| panic!("bad answer {raw:?}"));
    let reply = Reply { status, headers, body: String::from_utf8(body).expect("UTF-8") };
    if let Err(e) = read {
        // A server that answers without reading the whole body may reset the connection
        // after its answer (etcd's gateway does for an unknown path): the answer counts if
        // it is complete.
        let length = reply.header("content-length").and_then(|l| l.parse::<usize>().ok());
        assert_eq!(length, Some(reply.body.len()), "{method} {path}: {e} after {raw:?}");
    }
    reply
}

async fn post(base: &str, path: &str, body: &str) -> Reply {
    http(base, "POST", path, body.as_bytes()).await
}

/// An answer's status and headers.
type Head = (u16, Vec<(String, String)>);

/// The status, headers and (de-chunked) body received so far, once the head is complete.
fn parse(raw: &[u8]) -> Option<(Head, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if !chunked {
        return Some(((status, headers), rest.to_vec()));
    }
    // The complete chunks received so far.
    let mut body = Vec::new();
    let mut at = 0;
    while let Some(eol) = rest[at..].windows(2).position(|w| w == b"\r\n") {
        let size_text = std::str::from_utf8(&rest[at..at + eol]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("hex chunk size");
        let start = at + eol + 2;
        if size == 0 || rest.len() < start + size + 2 {
            break;
        }
        body.extend_from_slice(&rest[start..start + size]);
        at = start + size + 2;
    }
    Some(((status, headers), body))
}

/// A streaming answer read line by line as it arrives.
struct Lines {
    socket: TcpStream,
    raw: Vec<u8>,
    taken: usize,
}

impl Lines {
    async fn open(base: &str, path: &str, body: &str) -> Lines {
        Lines { socket: send(base, "POST", path, body.as_bytes()).await, raw: Vec::new(), taken: 0 }
    }

    /// The next `n` lines of the body.
    async fn next(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(((status, _), body)) = parse(&self.raw) {
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&self.raw));
                let text = String::from_utf8(body).expect("UTF-8");
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                if text.ends_with('\n') && lines.len() >= self.taken + n {
                    let out = lines[self.taken..self.taken + n].to_vec();
                    self.taken += n;
                    return out;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut buf = [0u8; 4096];
            let read = tokio::time::timeout(left, self.socket.read(&mut buf))
                .await
                .unwrap_or_else(|_| {
                    panic!("{n} more lines did not come: {}", String::from_utf8_lossy(&self.raw))
                })
                .expect("read");
            assert!(read > 0, "the stream ended early: {}", String::from_utf8_lossy(&self.raw));
            self.raw.extend_from_slice(&buf[..read]);
        }
    }
}

// ---- transcripts ----------------------------------------------------------------------------

/// `v` with what two clusters may differ in masked: the ids and terms of response headers.
fn masked(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if k == "header"
                        && let Value::Object(h) = child
                    {
                        for id in ["cluster_id", "member_id", "raft_term"] {
                            if let Some(x) = h.get_mut(id) {
                                *x = Value::String("*".into());
                            }
                        }
                    }
                    walk(child);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// A transcript line: status, content type and the masked JSON body (or the text body).
fn line(what: &str, r: &Reply) -> String {
    let body = if r.header("content-type") == Some("application/json") && !r.body.is_empty() {
        masked(r.json()).to_string()
    } else {
        format!("{:?}", r.body)
    };
    format!("{what} -> {} {} {body}", r.status, r.header("content-type").unwrap_or("-"))
}

/// A line for an error whose message is the JSON decoder's own prose: status, content type
/// and code only.
fn code_line(what: &str, r: &Reply) -> String {
    let v = r.json();
    assert_eq!(v["error"], v["message"], "grpc-gateway repeats the message: {v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "a message: {v}");
    format!("{what} -> {} {} code={}", r.status, r.header("content-type").unwrap_or("-"), v["code"])
}

/// Lines of a stream, each masked.
fn stream_lines(what: &str, lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            format!("{what} => {}", masked(v))
        })
        .collect()
}

/// Runs `scenario` against a fresh tenure cluster (through a follower) and, where installed, a
/// fresh etcd; asserts that the transcripts are equal and returns tenure's.
async fn compare<F, Fut>(test: &str, scenario: F) -> Transcript
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Transcript>,
{
    let tenure = Tenure::start().await;
    let ours = scenario(tenure.url(tenure.follower().await)).await;
    tenure.shutdown().await;
    if let Some(etcd) = Etcd::start(test).await {
        let theirs = scenario(etcd.url.clone()).await;
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "{test}: step {i}: tenure (left) and etcd 3.4 (right) differ");
        }
        assert_eq!(ours.len(), theirs.len(), "{test}: transcripts of different lengths");
    }
    ours
}

fn b64(s: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

// ---- the gateway: KV -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_requests_answer_as_etcds_gateway_does() {
    let t = compare("kv_requests_answer_as_etcds_gateway_does", |base| async move {
        let mut t = Transcript::new();
        let mut step = async |path: &str, body: &str| {
            let r = post(&base, path, body).await;
            t.push(line(&format!("{path} {body}"), &r));
        };
        step("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#).await;
        step("/v3/kv/put", r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#).await;
        step("/v3/kv/put", r#"{"key":"Zm9vMg==","value":"","lease":"0"}"#).await;
        step("/v3/kv/range", r#"{"key":"Zm9v"}"#).await;
        step("/v3/kv/range", r#"{"key":"bm9uZQ=="}"#).await;
        step("/v3/kv/range", r#"{"key":"Zm9v","countOnly":true}"#).await;
        step(
            "/v3/kv/range",
            r#"{"key":"Zm9v","range_end":"Zm9w","limit":"1","sort_order":"DESCEND","sort_target":"KEY"}"#,
        )
        .await;
        step("/v3/kv/range", r#"{"key":"Zm9v","range_end":"Zm9w","keys_only":true,"sortOrder":1}"#)
            .await;
        step("/v3/kv/range", r#"{"key":"Zm9v","serializable":true,"bogus":[1,2]}"#).await;
        step("/v3/kv/range", r#"{"key":"Zm9v","revision":100}"#).await;
        step("/v3/kv/range", "").await;
        step("/v3/kv/range", r#"{"key":null}"#).await;
        step("/v3/kv/range", r#"{"key":"@@@"}"#).await;
        step("/v3/kv/range", r#"{"key":"YQ"}"#).await;
        step("/v3/kv/range", r#"{"key":"Zm9v","sort_order":"BOGUS"}"#).await;
        step("/v3/kv/range", r#"{"key":"Zm9v","limit":1.5}"#).await;
        step("/v3/kv/range", r#"{"key":"Zm9v"} trailing text is ignored"#).await;
        step("/v3beta/kv/range", r#"{"key":"Zm9v"}"#).await;
        step(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],
                "success":[{"request_range":{"key":"Zm9v"}},{"requestPut":{"key":"YQ==","value":"MQ=="}}],
                "failure":[{"request_delete_range":{"key":"Zm9v"}}]}"#,
        )
        .await;
        step(
            "/v3/kv/txn",
            r#"{"compare":[{"key":"YQ==","result":"GREATER","target":"VERSION","version":"5"}],
                "failure":[{"request_txn":{}},{"request_put":{"key":"Yg==","value":"Mg==","prev_kv":true}}]}"#,
        )
        .await;
        step("/v3/kv/txn", r#"{"compare":[{"key":"YQ==","target":"CREATE","create_revision":0}]}"#)
            .await;
        step("/v3/kv/deleterange", r#"{"key":"Zm9v","range_end":"Zm9w","prev_kv":true}"#).await;
        step("/v3/kv/deleterange", r#"{"key":"bm9uZQ=="}"#).await;
        step("/v3/kv/compaction", r#"{"revision":"3"}"#).await;
        step("/v3/kv/compaction", r#"{"revision":3,"physical":true}"#).await;
        step("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#).await;

        // Bodies that are not the message: Go's decoder words its own errors, so only the
        // status and code are compared.
        for body in [r#"{"key":"Zm9v""#, "[1]", r#"{"key":1}"#, "garbage"] {
            let r = post(&base, "/v3/kv/range", body).await;
            t.push(code_line(&format!("/v3/kv/range {body}"), &r));
        }
        t
    })
    .await;
    // What tenure answered, beyond agreeing with etcd.
    assert!(t[3].contains(r#""kvs":[{"create_revision":"2","key":"Zm9v","mod_revision":"3","value":"YmF6","version":"2"}]"#), "{}", t[3]);
    assert!(
        t[10].contains(
            r#"400 application/json {"code":3,"error":"etcdserver: key is not provided""#
        ),
        "{}",
        t[10]
    );
    assert!(t.last().unwrap().ends_with("code=3"), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_as_etcd_refuses_them() {
    compare("oversized_requests_are_refused_as_etcd_refuses_them", |base| async move {
        let mut t = Transcript::new();
        for value_bytes in [1400 * 1024, 1600 * 1024, 3000 * 1024] {
            let body = format!(
                r#"{{"key":"{}","value":"{}"}}"#,
                b64(b"big"),
                b64(&vec![b'x'; value_bytes])
            );
            let r = post(&base, "/v3/kv/put", &body).await;
            t.push(line(&format!("put of {value_bytes} bytes"), &r));
        }
        // Far beyond any request: tenure stops reading at twice the largest request; etcd
        // reads it all and then refuses it. Both say resource exhausted.
        let body =
            format!(r#"{{"key":"{}","value":"{}"}}"#, b64(b"big"), b64(&vec![b'x'; 8 << 20]));
        let r = post(&base, "/v3/kv/put", &body).await;
        t.push(code_line("put of 8 MiB", &r));
        t
    })
    .await;
}

// ---- the gateway: Watch ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_newline_delimited_results_as_etcds_gateway_does() {
    compare("watch_streams_newline_delimited_results_as_etcds_gateway_does", |base| async move {
        let mut t = Transcript::new();
        let mut watch =
            Lines::open(&base, "/v3/watch", r#"{"create_request":{"key":"YQ==","prev_kv":true}}"#)
                .await;
        t.extend(stream_lines("watch a", &watch.next(1).await));
        for v in ["MQ==", "Mg=="] {
            let r = post(&base, "/v3/kv/put", &format!(r#"{{"key":"YQ==","value":"{v}"}}"#)).await;
            t.push(line("put a", &r));
        }
        t.extend(stream_lines("watch a", &watch.next(2).await));
        let r = post(&base, "/v3/kv/deleterange", r#"{"key":"YQ=="}"#).await;
        t.push(line("delete a", &r));
        t.extend(stream_lines("watch a", &watch.next(1).await));
        drop(watch);

        // Two requests in one body: a client-chosen id, then the same id again.
        let mut dup = Lines::open(
            &base,
            "/v3/watch",
            r#"{"create_request":{"key":"YQ==","watch_id":5}}{"create_request":{"key":"Yg==","watch_id":"5"}}"#,
        )
        .await;
        t.extend(stream_lines("duplicate id", &dup.next(2).await));

        // A filter, and a cancel by id: the stream stays open after its requests.
        let mut filtered = Lines::open(
            &base,
            "/v3/watch",
            r#"{"create_request":{"key":"Yw==","filters":["NOPUT"]}}"#,
        )
        .await;
        t.extend(stream_lines("NOPUT", &filtered.next(1).await));
        post(&base, "/v3/kv/put", r#"{"key":"Yw==","value":"MQ=="}"#).await;
        post(&base, "/v3/kv/deleterange", r#"{"key":"Yw=="}"#).await;
        t.extend(stream_lines("NOPUT", &filtered.next(1).await));

        // A start revision that was compacted.
        post(&base, "/v3/kv/compaction", r#"{"revision":"3"}"#).await;
        let mut compacted =
            Lines::open(&base, "/v3/watch", r#"{"create_request":{"key":"YQ==","start_revision":2}}"#)
                .await;
        t.extend(stream_lines("compacted", &compacted.next(2).await));

        // A first request that is not JSON fails the call.
        let r = post(&base, "/v3/watch", "garbage").await;
        t.push(code_line("watch garbage", &r));
        t
    })
    .await;
}

// ---- the gateway: Lease ----------------------------------------------------------------------

/// The `TTL` of a TimeToLive answer, which counts down, as `~` if it is within a few seconds
/// of `granted`.
fn ttl_masked(mut v: Value, granted: i64) -> Value {
    if let Some(ttl) = v.get("TTL").and_then(|t| t.as_str()).and_then(|t| t.parse::<i64>().ok())
        && ttl > granted - 5
        && ttl <= granted
    {
        v["TTL"] = Value::String("~".into());
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_requests_answer_as_etcds_gateway_does() {
    compare("lease_requests_answer_as_etcds_gateway_does", |base| async move {
        let mut t = Transcript::new();
        for (path, body) in [
            ("/v3/lease/grant", r#"{"TTL":60,"ID":1234}"#),
            ("/v3/lease/grant", r#"{"TTL":"60","ID":"1234"}"#),
            ("/v3/kv/put", r#"{"key":"bGVhc2Vk","value":"dg==","lease":1234}"#),
            ("/v3/lease/leases", ""),
            ("/v3/kv/lease/leases", "{}"),
        ] {
            t.push(line(&format!("{path} {body}"), &post(&base, path, body).await));
        }
        for path in ["/v3/lease/timetolive", "/v3/kv/lease/timetolive"] {
            let r = post(&base, path, r#"{"ID":1234,"keys":true}"#).await;
            t.push(format!("{path} -> {} {}", r.status, masked(ttl_masked(r.json(), 60))));
        }
        let mut keepalive =
            Lines::open(&base, "/v3/lease/keepalive", r#"{"ID":1234}{"ID":"1234"}"#).await;
        t.extend(stream_lines("keepalive 1234 twice", &keepalive.next(2).await));
        // A keep-alive stream ends once its requests are answered.
        let r = post(&base, "/v3/lease/keepalive", r#"{"ID":999}"#).await;
        t.push(line("keepalive 999", &r));
        let r = post(&base, "/v3/lease/keepalive", "").await;
        t.push(line("keepalive without requests", &r));
        let r = post(&base, "/v3/lease/keepalive", r#"{"ID":"x"}"#).await;
        t.push(code_line("keepalive of a bad id", &r));
        for (path, body) in [
            ("/v3/lease/revoke", r#"{"ID":1234}"#),
            ("/v3/kv/lease/revoke", r#"{"ID":1234}"#),
            ("/v3/lease/timetolive", r#"{"ID":1234}"#),
            ("/v3/kv/range", r#"{"key":"bGVhc2Vk"}"#),
            ("/v3/lease/grant", r#"{"TTL":9999999999,"ID":5}"#),
        ] {
            t.push(line(&format!("{path} {body}"), &post(&base, path, body).await));
        }
        t
    })
    .await;
}

// ---- the gateway: Auth -----------------------------------------------------------------------

/// `v` with a token masked: simple tokens are random, and tenure's are signed.
fn token_masked(mut v: Value) -> Value {
    if let Some(t) = v.get_mut("token") {
        *t = Value::String("*".into());
    }
    v
}

/// The etcdctl auth flow through the gateway: users, roles and a prefix permission, `auth
/// enable`, requests with no token, a bad token and the user's and root's tokens in the
/// `Authorization` header (as etcd's gateway clients send them), every kind of refusal, then
/// everything undone and `auth disable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_requests_answer_as_etcds_gateway_does() {
    compare("auth_requests_answer_as_etcds_gateway_does", |base| async move {
        let mut t = Transcript::new();
        let prefix = b64(b"/a/");
        let end = b64(b"/a0");
        let setup = [
            ("/v3/auth/user/add", r#"{"name":"root","password":"rootpw"}"#.to_string()),
            ("/v3/auth/role/add", r#"{"name":"root"}"#.into()),
            ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#.into()),
            ("/v3/auth/user/add", r#"{"name":"alice","password":"alicepw"}"#.into()),
            ("/v3/auth/user/add", r#"{"name":"alice","password":"again"}"#.into()),
            ("/v3/auth/role/add", r#"{"name":"app"}"#.into()),
            (
                "/v3/auth/role/grant",
                format!(
                    r#"{{"name":"app","perm":{{"permType":"READWRITE","key":"{prefix}","range_end":"{end}"}}}}"#
                ),
            ),
            (
                "/v3/auth/role/grant",
                format!(r#"{{"name":"app","perm":{{"permType":"READ","key":"{}"}}}}"#, b64(b"k")),
            ),
            ("/v3/auth/user/grant", r#"{"user":"alice","role":"app"}"#.into()),
            ("/v3/auth/user/grant", r#"{"user":"alice","role":"nope"}"#.into()),
            ("/v3/auth/enable", "{}".into()),
        ];
        for (path, body) in setup {
            t.push(line(&format!("{path} {body}"), &post(&base, path, &body).await));
        }
        let as_user = |token: &str| format!("Authorization: {token}\r\n");
        let put = |key: &[u8]| format!(r#"{{"key":"{}","value":"dg=="}}"#, b64(key));
        t.push(line("put without a token", &post(&base, "/v3/kv/put", &put(b"/a/x")).await));
        let r = http_with(&base, "POST", "/v3/kv/put", put(b"/a/x").as_bytes(), &as_user("bad"))
            .await;
        t.push(line("put with a bad token", &r));
        for body in [r#"{"name":"alice","password":"wrong"}"#, r#"{"name":"nobody","password":"x"}"#]
        {
            t.push(line(body, &post(&base, "/v3/auth/authenticate", body).await));
        }
        let login = |name: &'static str, password: &'static str| {
            let base = base.clone();
            async move {
                let body = format!(r#"{{"name":"{name}","password":"{password}"}}"#);
                let r = post(&base, "/v3/auth/authenticate", &body).await;
                let token = r.json()["token"].as_str().expect("a token").to_string();
                (format!("{} {}", r.status, masked(token_masked(r.json()))), token)
            }
        };
        let (answer, alice) = login("alice", "alicepw").await;
        t.push(format!("alice logs in -> {answer}"));
        let (answer, root) = login("root", "rootpw").await;
        t.push(format!("root logs in -> {answer}"));
        let steps: Vec<(&str, &str, String)> = vec![
            ("alice", "/v3/kv/put", put(b"/a/x")),
            ("alice", "/v3/kv/put", put(b"/b")),
            ("alice", "/v3/kv/put", put(b"k")),
            ("alice", "/v3/kv/range", format!(r#"{{"key":"{prefix}","range_end":"{end}"}}"#)),
            ("alice", "/v3/kv/range", format!(r#"{{"key":"{}","range_end":"AA=="}}"#, b64(b"/"))),
            ("alice", "/v3/auth/user/list", "{}".into()),
            ("alice", "/v3/auth/role/add", r#"{"name":"x"}"#.into()),
            ("alice", "/v3/auth/disable", "{}".into()),
            ("root", "/v3/auth/user/list", "{}".into()),
            ("root", "/v3/auth/role/list", "{}".into()),
            ("root", "/v3/auth/user/get", r#"{"name":"alice"}"#.into()),
            ("root", "/v3/auth/user/get", r#"{"name":"nope"}"#.into()),
            ("root", "/v3/auth/role/get", r#"{"role":"app"}"#.into()),
            ("root", "/v3/auth/role/get", r#"{"role":"nope"}"#.into()),
            ("root", "/v3/auth/user/delete", r#"{"name":"root"}"#.into()),
            ("root", "/v3/auth/user/revoke", r#"{"name":"root","role":"root"}"#.into()),
            ("root", "/v3/auth/role/delete", r#"{"role":"root"}"#.into()),
            ("root", "/v3/auth/role/revoke", format!(r#"{{"role":"app","key":"{}"}}"#, b64(b"z"))),
            (
                "root",
                "/v3/auth/role/revoke",
                format!(r#"{{"role":"app","key":"{prefix}","range_end":"{end}"}}"#),
            ),
            ("alice", "/v3/kv/put", put(b"/a/x")),
            ("root", "/v3/auth/user/changepw", r#"{"name":"alice","password":"new"}"#.into()),
            ("alice", "/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64(b"k"))),
            ("root", "/v3/auth/user/revoke", r#"{"name":"alice","role":"app"}"#.into()),
            ("root", "/v3/auth/user/revoke", r#"{"name":"alice","role":"app"}"#.into()),
            ("root", "/v3/auth/user/delete", r#"{"name":"alice"}"#.into()),
            ("root", "/v3/auth/role/delete", r#"{"role":"app"}"#.into()),
            ("root", "/v3/auth/disable", "{}".into()),
            ("nobody", "/v3/kv/range", format!(r#"{{"key":"{}"}}"#, b64(b"/a/x"))),
        ];
        for (who, path, body) in steps {
            let extra = match who {
                "alice" => as_user(&alice),
                "root" => as_user(&root),
                _ => String::new(),
            };
            let r = http_with(&base, "POST", path, body.as_bytes(), &extra).await;
            t.push(line(&format!("{who}: {path} {body}"), &r));
        }
        t
    })
    .await;
}

// ---- the gateway: Lock and Election ----------------------------------------------------------

/// etcd's concurrency services over the gateway: a lock held and released on a lease, an
/// election campaigned, proclaimed, observed, led and resigned, and their errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_and_election_requests_answer_as_etcds_gateway_does() {
    compare("lock_and_election_requests_answer_as_etcds_gateway_does", |base| async move {
        let mut t = Transcript::new();
        t.push(line("grant", &post(&base, "/v3/lease/grant", r#"{"TTL":60,"ID":1000}"#).await));
        let lock =
            post(&base, "/v3/lock/lock", &format!(r#"{{"name":"{}","lease":1000}}"#, b64(b"lk")))
                .await;
        t.push(line("lock", &lock));
        let key = lock.json()["key"].as_str().expect("the lock's key").to_string();
        let held = format!(r#"{{"key":"{}","range_end":"{}"}}"#, b64(b"lk/"), b64(b"lk0"));
        t.push(line("the lock's key", &post(&base, "/v3/kv/range", &held).await));
        let unlock = format!(r#"{{"key":"{key}"}}"#);
        t.push(line("unlock", &post(&base, "/v3/lock/unlock", &unlock).await));
        t.push(line("after unlock", &post(&base, "/v3/kv/range", &held).await));
        let on_missing_lease = format!(r#"{{"name":"{}","lease":999}}"#, b64(b"lk"));
        t.push(line(
            "lock on a missing lease",
            &post(&base, "/v3/lock/lock", &on_missing_lease).await,
        ));

        let name = b64(b"el");
        let campaign = post(
            &base,
            "/v3/election/campaign",
            &format!(r#"{{"name":"{name}","lease":1000,"value":"{}"}}"#, b64(b"v1")),
        )
        .await;
        t.push(line("campaign", &campaign));
        let leader_key = campaign.json()["leader"].to_string();
        let leader = format!(r#"{{"name":"{name}"}}"#);
        t.push(line("leader", &post(&base, "/v3/election/leader", &leader).await));
        let mut observe = Lines::open(&base, "/v3/election/observe", &leader).await;
        t.extend(stream_lines("observe", &observe.next(1).await));
        let proclaim = format!(r#"{{"leader":{leader_key},"value":"{}"}}"#, b64(b"v2"));
        t.push(line("proclaim", &post(&base, "/v3/election/proclaim", &proclaim).await));
        t.extend(stream_lines("observe", &observe.next(1).await));
        t.push(line("leader after proclaim", &post(&base, "/v3/election/leader", &leader).await));
        let stranger = format!(
            r#"{{"leader":{{"name":"{name}","key":"{}","rev":"1","lease":"1000"}},"value":"x"}}"#,
            b64(b"el/nobody")
        );
        t.push(line(
            "proclaim by a stranger",
            &post(&base, "/v3/election/proclaim", &stranger).await,
        ));
        let resign = format!(r#"{{"leader":{leader_key}}}"#);
        t.push(line("resign", &post(&base, "/v3/election/resign", &resign).await));
        t.push(line("leader after resign", &post(&base, "/v3/election/leader", &leader).await));
        t
    })
    .await;
}

// ---- CORS -------------------------------------------------------------------------------------

/// The CORS headers of an answer, as transcript text.
fn cors_line(what: &str, r: &Reply) -> String {
    let h = |name| r.header(name).unwrap_or("-").to_string();
    format!(
        "{what} -> {} origin={} methods={} headers={}",
        r.status,
        h("access-control-allow-origin"),
        h("access-control-allow-methods"),
        h("access-control-allow-headers")
    )
}

/// By default (no `--cors`) etcd allows every origin on its HTTP endpoints: the gateway,
/// `/health` and a preflight `OPTIONS` all carry its three CORS headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_are_etcds() {
    compare("cors_headers_are_etcds", |base| async move {
        let origin = "Origin: http://app.example\r\n";
        let mut t = Transcript::new();
        let range = br#"{"key":"YQ=="}"#;
        let r = http_with(&base, "POST", "/v3/kv/range", range, origin).await;
        t.push(cors_line("range", &r));
        let r = http_with(&base, "OPTIONS", "/v3/kv/range", b"", origin).await;
        t.push(cors_line("preflight", &r));
        assert!(r.body.is_empty(), "a preflight answer has no body: {:?}", r.body);
        let r = http_with(&base, "GET", "/health", b"", "").await;
        t.push(cors_line("health", &r));
        t
    })
    .await;
}

/// With `--cors` naming origins, only those get the headers, their own origin echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_names_only_the_allowed_origins() {
    let tenure = Tenure::start_with(|c| {
        c.cors = tenure_server::api::http::Cors::from_flag(&["http://a.example".to_string()]);
    })
    .await;
    let base = tenure.url(0);
    let range = br#"{"key":"YQ=="}"#;
    let allowed =
        http_with(&base, "POST", "/v3/kv/range", range, "Origin: http://a.example\r\n").await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some("http://a.example"));
    let other =
        http_with(&base, "POST", "/v3/kv/range", range, "Origin: http://b.example\r\n").await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    let none = http_with(&base, "POST", "/v3/kv/range", range, "").await;
    assert_eq!(none.header("access-control-allow-origin"), None);
    tenure.shutdown().await;
}

// ---- the gateway: Cluster and Maintenance ----------------------------------------------------

/// The field names of a JSON object.
fn keys(v: &Value) -> Vec<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_maintenance_answer_as_etcds_gateway_does() {
    let t = compare("cluster_and_maintenance_answer_as_etcds_gateway_does", |base| async move {
        let mut t = Transcript::new();
        // Member lists differ in size (three members here, one there): each member has the
        // same fields, and every id is a decimal string.
        let r = post(&base, "/v3/cluster/member/list", "").await;
        let members = r.json()["members"].as_array().expect("members").clone();
        let fields: std::collections::BTreeSet<Vec<String>> = members
            .iter()
            .inspect(|m| {
                assert!(m["ID"].as_str().is_some_and(|id| id.parse::<u64>().is_ok()), "{m}");
            })
            .map(keys)
            .collect();
        t.push(format!("member list -> {} member fields {fields:?}", r.status));
        // Status: the same fields (values differ: version, sizes, indexes). tenure measures
        // the store's size, which is 0 when it holds nothing (so left out, as a default);
        // etcd's database file is never empty.
        let r = post(&base, "/v3/maintenance/status", "{}").await;
        let mut fields = keys(&r.json());
        fields.retain(|f| f != "dbSize" && f != "dbSizeInUse");
        t.push(format!("status -> {} fields {fields:?}", r.status));
        for (path, body) in [
            ("/v3/maintenance/alarm", "{}"),
            ("/v3/maintenance/alarm", r#"{"action":"ACTIVATE","alarm":"NOSPACE","memberID":"5"}"#),
            ("/v3/maintenance/alarm", r#"{"action":"GET"}"#),
            ("/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
            ("/v3/maintenance/alarm", r#"{"action":2,"alarm":1,"memberID":5}"#),
            ("/v3/maintenance/alarm", r#"{"action":"GET"}"#),
            ("/v3/kv/put", r#"{"key":"YQ==","value":"MQ=="}"#),
            ("/v3/maintenance/alarm", r#"{"action":"NONSENSE"}"#),
        ] {
            let r = post(&base, path, body).await;
            t.push(if path.ends_with("/alarm") && r.status == 200 {
                format!("{path} {body} -> 200 {}", r.json())
            } else {
                line(&format!("{path} {body}"), &r)
            });
        }
        t
    })
    .await;
    assert!(t[0].contains(r#"["ID", "clientURLs", "name", "peerURLs"]"#), "{}", t[0]);
    // As etcd 3.4's: an Alarm answer has no header (an empty list is `{}`).
    assert_eq!(t[2], r#"/v3/maintenance/alarm {} -> 200 {}"#);
}

/// The gateway's answer for `path` is what gRPC answers for the same request: the same
/// response, or the same code and message.
fn same_as_grpc<T: std::fmt::Debug>(path: &str, r: &Reply, grpc: Result<T, tonic::Status>) {
    match grpc {
        Ok(_) => assert_eq!(r.status, 200, "{path}: {r:?}"),
        Err(s) => {
            let v = r.json();
            assert_eq!(v["code"], s.code() as i32, "{path}: {v}");
            assert_eq!(v["message"], s.message(), "{path}: {v}");
            assert_ne!(r.status, 200, "{path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_and_maintenance_routes_reach_the_grpc_services() {
    let tenure = Tenure::start().await;
    let i = tenure.follower().await;
    let base = tenure.url(i);
    let ch = tenure.channel(i).await;
    let mut cluster = pb::cluster_client::ClusterClient::new(ch.clone());
    let mut maintenance = pb::maintenance_client::MaintenanceClient::new(ch.clone());
    let unknown = 0x1234_5678;

    let r = post(&base, "/v3/cluster/member/remove", &format!(r#"{{"ID":"{unknown}"}}"#)).await;
    same_as_grpc(
        "remove",
        &r,
        cluster.member_remove(pb::MemberRemoveRequest { id: unknown }).await,
    );
    let r = post(&base, "/v3/cluster/member/promote", &format!(r#"{{"ID":{unknown}}}"#)).await;
    same_as_grpc(
        "promote",
        &r,
        cluster.member_promote(pb::MemberPromoteRequest { id: unknown }).await,
    );
    let r = post(
        &base,
        "/v3/cluster/member/update",
        &format!(r#"{{"ID":{unknown},"peerURLs":["http://127.0.0.1:1"]}}"#),
    )
    .await;
    let update =
        pb::MemberUpdateRequest { id: unknown, peer_ur_ls: vec!["http://127.0.0.1:1".into()] };
    same_as_grpc("update", &r, cluster.member_update(update).await);
    // An add would change the cluster if it worked; a bad URL is refused either way.
    let r = post(&base, "/v3/cluster/member/add", r#"{"peerURLs":["not a url"]}"#).await;
    let add = pb::MemberAddRequest { peer_ur_ls: vec!["not a url".into()], is_learner: false };
    same_as_grpc("add", &r, cluster.member_add(add).await);

    let r = post(&base, "/v3/maintenance/hash", "").await;
    same_as_grpc("hash", &r, maintenance.hash(pb::HashRequest {}).await);
    let r = post(&base, "/v3/maintenance/hashkv", r#"{"revision":"0"}"#).await;
    let grpc = maintenance.hash_kv(pb::HashKvRequest { revision: 0 }).await;
    if let Ok(g) = &grpc {
        assert_eq!(r.json()["hash"].as_u64(), Some(u64::from(g.get_ref().hash)), "{r:?}");
    }
    same_as_grpc("hashkv", &r, grpc);
    let r = post(&base, "/v3/maintenance/defragment", "").await;
    same_as_grpc("defragment", &r, maintenance.defragment(pb::DefragmentRequest {}).await);

    // Status through the gateway is the member's own status.
    let r = post(&base, "/v3/maintenance/status", "").await;
    let g = maintenance.status(pb::StatusRequest {}).await.expect("status").into_inner();
    let v = r.json();
    assert_eq!(v["version"], tenure_server::api::VERSION);
    assert_eq!(v["leader"], g.leader.to_string());
    assert_eq!(v["header"]["member_id"], tenure.configs[i].member_id.to_string());
    tenure.shutdown().await;
}

// ---- paths and methods that are not served ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_are_refused_as_etcd_refuses_them() {
    compare("unknown_paths_and_methods_are_refused_as_etcd_refuses_them", |base| async move {
        let mut t = Transcript::new();
        for (method, path) in [
            ("GET", "/nothing"),
            ("POST", "/nothing/at/all"),
            ("GET", "/v3alpha/kv/range"),
            ("POST", "/v3/kv/nothing"),
            ("GET", "/v3/kv/range"),
            ("PUT", "/v3/kv/put"),
        ] {
            let r = http(&base, method, path, b"{}").await;
            t.push(line(&format!("{method} {path}"), &r));
            t.push(format!("  nosniff: {:?}", r.header("x-content-type-options")));
        }
        // gRPC for a service the port does not serve is gRPC's Unimplemented.
        let ch = servers::connect(&base).await;
        let mut grpc = tonic::client::Grpc::new(ch);
        grpc.ready().await.expect("ready");
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.Nothing/Call");
        let codec = tonic_prost::ProstCodec::<pb::StatusRequest, pb::StatusResponse>::default();
        let s = grpc
            .unary(tonic::Request::new(pb::StatusRequest {}), path, codec)
            .await
            .expect_err("not served");
        t.push(format!("grpc unknown service -> {:?} {}", s.code(), s.message()));
        t
    })
    .await;
}

// ---- health and identity ---------------------------------------------------------------------

async fn get(base: &str, path: &str) -> Reply {
    http(base, "GET", path, b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_and_readyz_report_etcds_checks() {
    let mut tenure = Tenure::start().await;
    let leader = tenure.leader().await;
    let lone = (leader + 1) % 3;
    let base = tenure.url(lone);

    let r = get(&base, "/livez").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = get(&base, "/livez?verbose").await;
    assert_eq!(r.body, "[+]serializable_read ok\nok\n");
    let r = get(&base, "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = get(&base, "/readyz?verbose=1").await;
    assert_eq!(
        r.body,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
    );
    let r = get(
        &base,
        "/readyz?verbose&exclude=serializable_read&exclude=data_corruption&exclude=nothing",
    )
    .await;
    assert_eq!(r.body, "[+]linearizable_read ok\nok\n");
    for check in ["data_corruption", "serializable_read", "linearizable_read"] {
        let r = get(&base, &format!("/readyz/{check}?verbose")).await;
        assert_eq!((r.status, r.body), (200, format!("[+]{check} ok\nok\n")));
    }
    let r = get(&base, "/livez/serializable_read").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = get(&base, "/livez/linearizable_read").await;
    assert_eq!(r.status, 404, "livez has no such check");
    let r = http(&base, "POST", "/readyz", b"").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));

    // Without its peers the member serves its own store but has no leader: live, not ready.
    for i in (0..3).filter(|i| *i != lone) {
        tenure.stop(i).await;
    }
    let deadline = Instant::now() + PATIENCE;
    let r = loop {
        let r = get(&base, "/readyz").await;
        if r.status == 503 {
            break r;
        }
        assert!(Instant::now() < deadline, "still ready without a quorum: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(r.body.starts_with("[+]data_corruption ok\n[+]serializable_read ok\n[-]linearizable_read failed: etcdserver: "), "{}", r.body);
    assert!(r.body.ends_with("\n\n"), "{:?}", r.body);
    assert_eq!(get(&base, "/readyz/linearizable_read").await.status, 503);
    let r = get(&base, "/readyz?exclude=linearizable_read").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    let r = get(&base, "/livez").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    // And the gateway says why a linearizable read fails.
    let r = post(&base, "/v3/kv/range", r#"{"key":"YQ=="}"#).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        post(&base, "/v3/kv/range", r#"{"key":"YQ==","serializable":true}"#).await.status,
        200
    );
    tenure.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reports_an_etcd_release_that_passes_version_gates_and_tenures_own() {
    let tenure = Tenure::start().await;
    let r = get(&tenure.url(0), "/version").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["etcdserver"], "3.4.31");
    assert_eq!(v["etcdcluster"], "3.4.0");
    assert_eq!(v["tenureVersion"], env!("CARGO_PKG_VERSION"));
    // kube-apiserver uses watch progress requests from etcd 3.4.31 (or 3.5.13): the version
    // must not be a pre-release, which would order before 3.4.31.
    let status = post(&tenure.url(0), "/v3/maintenance/status", "").await.json();
    let version = status["version"].as_str().expect("a version").to_string();
    let (release, build) = version.split_once('+').expect("tenure's version as build metadata");
    assert_eq!(
        (release, build),
        ("3.4.31", format!("tenure.{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert!(!release.contains('-'));
    tenure.shutdown().await;
    if let Some(etcd) = Etcd::start("version_reports_an_etcd_release").await {
        let theirs = get(&etcd.url, "/version").await.json();
        let mut ours = keys(&v);
        ours.retain(|k| k != "tenureVersion");
        assert_eq!(ours, keys(&theirs), "the fields etcd's /version has");
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
}
