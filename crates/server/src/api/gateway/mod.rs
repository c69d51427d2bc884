//! etcd's gRPC gateway: the v3 API as JSON over HTTP on the client port, for `curl` and
//! languages without gRPC, as etcd 3.4 serves it (under `/v3/` and, deprecated, `/v3beta/`).
//!
//! A request is a `POST` whose body is the request message in protobuf's JSON mapping
//! ([`json`]: base64 `bytes`, 64-bit integers as strings, enums by name, proto field names);
//! the answer is the response message in the same mapping, or grpc-gateway's error body
//! `{"error": message, "message": message, "code": grpc code}` with the HTTP status
//! grpc-gateway gives that code. Each request is served by calling this member's own gRPC
//! service implementation in-process (the same [`Services`] methods a gRPC client reaches),
//! so the gateway has no logic of its own beyond the mapping.
//!
//! The streaming calls (`/v3/watch`, `/v3/lease/keepalive`, `/v3/maintenance/snapshot`)
//! read a body of one or more concatenated JSON requests, as it arrives, and answer with one
//! `{"result": response}` object per line; an error ends the stream with
//! `{"error": {"grpc_code", "http_code", "message", "http_status"}}`. As with etcd, a watch
//! stream stays open after its last request until the client goes away; a keep-alive stream
//! ends after answering its requests.
//!
//! Bodies are bounded: a request whose protobuf encoding exceeds `--max-request-bytes` plus
//! gRPC's allowance is refused as gRPC refuses it ("grpc: received message larger than max"),
//! and a body cannot grow beyond what such a request could take as JSON.

mod auth_messages;
mod concurrency_messages;
pub mod json;
mod messages;

use std::convert::Infallible;
use std::future::Future;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status};

use self::json::{FromJson, JsonError, Object, ToJson};
use super::{GRPC_OVERHEAD_BYTES, Services};
use crate::pb::etcdserverpb::auth_server::Auth as _;
use crate::pb::etcdserverpb::cluster_server::Cluster as _;
use crate::pb::etcdserverpb::kv_server::Kv as _;
use crate::pb::etcdserverpb::lease_server::Lease as _;
use crate::pb::etcdserverpb::maintenance_server::Maintenance as _;
use crate::pb::etcdserverpb::watch_server::Watch as _;
use crate::pb::v3electionpb::election_server::Election as _;
use crate::pb::v3lockpb::lock_server::Lock as _;

/// The prefixes etcd 3.4 serves the gateway under (`/v3beta` is deprecated there).
const PREFIXES: [&str; 2] = ["/v3", "/v3beta"];

/// Responses and requests in flight on one streaming call, each way.
const STREAM_MESSAGES_IN_FLIGHT_MAX: usize = 16;

/// Every gateway route, each under [`PREFIXES`].
pub(super) fn routes(services: &Services) -> axum::Router {
    let s = services;
    let table: Vec<(&str, MethodRouter)> = vec![
        ("/kv/range", unary(s, |s, r| async move { s.range(r).await })),
        ("/kv/put", unary(s, |s, r| async move { s.put(r).await })),
        ("/kv/deleterange", unary(s, |s, r| async move { s.delete_range(r).await })),
        ("/kv/txn", unary(s, |s, r| async move { s.txn(r).await })),
        ("/kv/compaction", unary(s, |s, r| async move { s.compact(r).await })),
        ("/watch", streaming(s, Input::KeptOpen, |s, r| async move { s.watch(r).await })),
        ("/lease/grant", unary(s, |s, r| async move { s.lease_grant(r).await })),
        ("/lease/revoke", unary(s, |s, r| async move { s.lease_revoke(r).await })),
        ("/kv/lease/revoke", unary(s, |s, r| async move { s.lease_revoke(r).await })),
        (
            "/lease/keepalive",
            streaming(s, Input::Closed, |s, r| async move { s.lease_keep_alive(r).await }),
        ),
        ("/lease/timetolive", unary(s, |s, r| async move { s.lease_time_to_live(r).await })),
        ("/kv/lease/timetolive", unary(s, |s, r| async move { s.lease_time_to_live(r).await })),
        ("/lease/leases", unary(s, |s, r| async move { s.lease_leases(r).await })),
        ("/kv/lease/leases", unary(s, |s, r| async move { s.lease_leases(r).await })),
        ("/cluster/member/add", unary(s, |s, r| async move { s.member_add(r).await })),
        ("/cluster/member/remove", unary(s, |s, r| async move { s.member_remove(r).await })),
        ("/cluster/member/update", unary(s, |s, r| async move { s.member_update(r).await })),
        ("/cluster/member/list", unary(s, |s, r| async move { s.member_list(r).await })),
        ("/cluster/member/promote", unary(s, |s, r| async move { s.member_promote(r).await })),
        ("/maintenance/alarm", unary(s, |s, r| async move { s.alarm(r).await })),
        ("/maintenance/status", unary(s, |s, r| async move { s.status(r).await })),
        ("/maintenance/defragment", unary(s, |s, r| async move { s.defragment(r).await })),
        ("/maintenance/hash", unary(s, |s, r| async move { s.hash(r).await })),
        ("/maintenance/hashkv", unary(s, |s, r| async move { s.hash_kv(r).await })),
        ("/maintenance/snapshot", server_streaming(s, |s, r| async move { s.snapshot(r).await })),
        (
            "/maintenance/transfer-leadership",
            unary(s, |s, r| async move { s.move_leader(r).await }),
        ),
        ("/auth/enable", unary(s, |s, r| async move { s.auth_enable(r).await })),
        ("/auth/disable", unary(s, |s, r| async move { s.auth_disable(r).await })),
        ("/auth/status", unary(s, |s, r| async move { s.auth_status(r).await })),
        ("/auth/authenticate", unary(s, |s, r| async move { s.authenticate(r).await })),
        ("/auth/user/add", unary(s, |s, r| async move { s.user_add(r).await })),
        ("/auth/user/get", unary(s, |s, r| async move { s.user_get(r).await })),
        ("/auth/user/list", unary(s, |s, r| async move { s.user_list(r).await })),
        ("/auth/user/delete", unary(s, |s, r| async move { s.user_delete(r).await })),
        ("/auth/user/changepw", unary(s, |s, r| async move { s.user_change_password(r).await })),
        ("/auth/user/grant", unary(s, |s, r| async move { s.user_grant_role(r).await })),
        ("/auth/user/revoke", unary(s, |s, r| async move { s.user_revoke_role(r).await })),
        ("/auth/role/add", unary(s, |s, r| async move { s.role_add(r).await })),
        ("/auth/role/get", unary(s, |s, r| async move { s.role_get(r).await })),
        ("/auth/role/list", unary(s, |s, r| async move { s.role_list(r).await })),
        ("/auth/role/delete", unary(s, |s, r| async move { s.role_delete(r).await })),
        ("/auth/role/grant", unary(s, |s, r| async move { s.role_grant_permission(r).await })),
        ("/auth/role/revoke", unary(s, |s, r| async move { s.role_revoke_permission(r).await })),
        ("/lock/lock", unary(s, |s, r| async move { s.lock(r).await })),
        ("/lock/unlock", unary(s, |s, r| async move { s.unlock(r).await })),
        ("/election/campaign", unary(s, |s, r| async move { s.campaign(r).await })),
        ("/election/proclaim", unary(s, |s, r| async move { s.proclaim(r).await })),
        ("/election/leader", unary(s, |s, r| async move { s.leader(r).await })),
        ("/election/observe", server_streaming(s, |s, r| async move { s.observe(r).await })),
        ("/election/resign", unary(s, |s, r| async move { s.resign(r).await })),
    ];
    let mut router = axum::Router::new();
    for prefix in PREFIXES {
        for (path, route) in &table {
            router = router.route(&format!("{prefix}{path}"), route.clone());
        }
    }
    router
}

/// `request` with the HTTP request's `Authorization` header (etcd's gateway clients send their
/// token there) as the gRPC `authorization` metadata, where [`Services::auth_info`] looks for
/// a token as etcd does.
fn with_token<T>(headers: &axum::http::HeaderMap, mut request: Request<T>) -> Request<T> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION)
        && let Ok(v) = tonic::metadata::MetadataValue::try_from(v.as_bytes())
    {
        request.metadata_mut().insert("authorization", v);
    }
    request
}

/// A `POST` route calling the unary method `call`.
fn unary<Req, Resp, F, Fut>(services: &Services, call: F) -> MethodRouter
where
    Req: FromJson + prost::Message + Default + Send + 'static,
    Resp: ToJson + Send + 'static,
    F: Fn(Services, Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
{
    let services = services.clone();
    axum::routing::post(move |headers: axum::http::HeaderMap, body: Body| {
        let (services, call) = (services.clone(), call.clone());
        async move {
            let mut reader = BodyReader::new(body, &services);
            // As grpc-gateway: the first JSON value is the request, an empty body the empty
            // request, and whatever follows the first value is ignored.
            let request = match reader.next::<Req>().await {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => return error_response(&e.status(Code::InvalidArgument)),
            };
            match call(services, with_token(&headers, Request::new(request))).await {
                Ok(r) => json_response(StatusCode::OK, r.into_inner().to_json()),
                Err(status) => error_response(&status),
            }
        }
    })
    .fallback(method_not_allowed)
}

/// What a client-streaming call's input does after the body's last request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    /// It ends (the client has nothing more to say): a keep-alive stream then ends too.
    Closed,
    /// It stays open until the HTTP client goes away. etcd's Watch ignores the end of its
    /// input, so a watch over the gateway lasts as long as the connection; tenure's Watch
    /// ends with its input, so the gateway keeps the input open to behave the same.
    KeptOpen,
}

/// A `POST` route calling the bidirectional streaming method `call`.
fn streaming<Req, Resp, S, F, Fut>(services: &Services, input: Input, call: F) -> MethodRouter
where
    Req: FromJson + prost::Message + Default + Send + 'static,
    Resp: ToJson + Send + 'static,
    S: tokio_stream::Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    F: Fn(Services, Request<tonic::Streaming<Req>>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<S>, Status>> + Send + 'static,
{
    let services = services.clone();
    axum::routing::post(move |headers: axum::http::HeaderMap, body: Body| {
        let (services, call) = (services.clone(), call.clone());
        async move {
            let mut reader = BodyReader::new(body, &services);
            // The first request is read before the call, and a bad one fails the call, as
            // in grpc-gateway (with code Unknown: it is not a gRPC status there).
            let first = match reader.next::<Req>().await {
                Ok(first) => first,
                Err(e) => return error_response(&e.status(Code::Unknown)),
            };
            let (frames, frames_rx) = mpsc::channel(STREAM_MESSAGES_IN_FLIGHT_MAX);
            let held_open = (input == Input::KeptOpen).then(|| frames.clone());
            if let Some(first) = first {
                tokio::spawn(async move {
                    let mut next = Some(first);
                    while let Some(request) = next {
                        if frames.send(Ok::<_, Infallible>(grpc_frame(&request))).await.is_err() {
                            return;
                        }
                        // A later bad request ends the input, as grpc-gateway closes its
                        // side then.
                        next = reader.next::<Req>().await.ok().flatten();
                    }
                });
            }
            let requests = tonic::Streaming::new_request(
                tonic_prost::ProstDecoder::<Req>::default(),
                Body::from_stream(ReceiverStream::new(frames_rx)),
                None,
                None,
            );
            match call(services, with_token(&headers, Request::new(requests))).await {
                Ok(r) => stream_response(r.into_inner(), held_open),
                Err(status) => error_response(&status),
            }
        }
    })
    .fallback(method_not_allowed)
}

/// A `POST` route calling the server-streaming method `call` with one request.
fn server_streaming<Req, Resp, S, F, Fut>(services: &Services, call: F) -> MethodRouter
where
    Req: FromJson + prost::Message + Default + Send + 'static,
    Resp: ToJson + Send + 'static,
    S: tokio_stream::Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    F: Fn(Services, Request<Req>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<S>, Status>> + Send + 'static,
{
    let services = services.clone();
    axum::routing::post(move |headers: axum::http::HeaderMap, body: Body| {
        let (services, call) = (services.clone(), call.clone());
        async move {
            let mut reader = BodyReader::new(body, &services);
            let request = match reader.next::<Req>().await {
                Ok(r) => r.unwrap_or_default(),
                Err(e) => return error_response(&e.status(Code::InvalidArgument)),
            };
            match call(services, with_token(&headers, Request::new(request))).await {
                Ok(r) => stream_response(r.into_inner(), None),
                Err(status) => error_response(&status),
            }
        }
    })
    .fallback(method_not_allowed)
}

/// A 200 whose body is one `{"result": ...}` line per response of `stream`, ended by an
/// error line if the stream fails. `held_open` (the input's sender, for a watch) is dropped
/// when the stream ends or the client goes away, which ends the call's input.
fn stream_response<Resp, S>(
    mut stream: S,
    held_open: Option<mpsc::Sender<Result<Bytes, Infallible>>>,
) -> Response
where
    Resp: ToJson + Send + 'static,
    S: tokio_stream::Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
{
    let (lines, lines_rx) =
        mpsc::channel::<Result<Bytes, Infallible>>(STREAM_MESSAGES_IN_FLIGHT_MAX);
    tokio::spawn(async move {
        let _held_open = held_open;
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                // The client went away while the stream was idle.
                _ = lines.closed() => return,
            };
            let (line, last) = match next {
                None => return,
                Some(Ok(response)) => {
                    let mut line = String::new();
                    Object::write(&mut line, |o| o.message("result", Some(&response)));
                    (line, false)
                }
                Some(Err(status)) => (stream_error_line(&status), true),
            };
            if lines.send(Ok(Bytes::from(line + "\n"))).await.is_err() || last {
                return;
            }
        }
    });
    let mut response = Body::from_stream(ReceiverStream::new(lines_rx)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("valid"));
    response
}

/// grpc-gateway's last line of a failed stream.
fn stream_error_line(status: &Status) -> String {
    let http = http_status(status.code());
    let mut line = String::new();
    Object::write(&mut line, |o| {
        o.message("error", Some(&StreamError { status, http }));
    });
    line
}

struct StreamError<'a> {
    status: &'a Status,
    http: StatusCode,
}

impl ToJson for StreamError<'_> {
    fn write_fields(&self, o: &mut Object<'_>) {
        o.u32("grpc_code", self.status.code() as u32);
        o.u32("http_code", u32::from(self.http.as_u16()));
        o.string("message", self.status.message());
        o.string("http_status", self.http.canonical_reason().unwrap_or(""));
    }
}

/// One protobuf message framed as gRPC frames it (uncompressed flag, big-endian length).
fn grpc_frame<T: prost::Message>(message: &T) -> Bytes {
    let len = message.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    message.encode(&mut buf).expect("a Vec grows as needed");
    Bytes::from(buf)
}

/// Why a request body could not become a request.
#[derive(Debug)]
enum ReadError {
    /// Not JSON, or JSON that is not the message.
    Json(String),
    /// The request (or the body) is larger than the member accepts.
    TooLarge(String),
    /// The body could not be read (the client went away).
    Body(String),
}

impl ReadError {
    /// The status the gateway answers; `json_code` for a body that is not the message.
    fn status(self, json_code: Code) -> Status {
        match self {
            ReadError::Json(m) => Status::new(json_code, m),
            ReadError::TooLarge(m) => Status::resource_exhausted(m),
            ReadError::Body(m) => Status::new(json_code, m),
        }
    }
}

impl From<JsonError> for ReadError {
    fn from(e: JsonError) -> ReadError {
        ReadError::Json(e.0)
    }
}

/// Reads JSON requests one after another from a request body, as they arrive.
struct BodyReader {
    body: axum::body::BodyDataStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    /// Whether the body has ended.
    done: bool,
    /// The largest protobuf request accepted (what gRPC decodes at most).
    message_bytes_max: usize,
    /// The largest unparsed body held: a request at `message_bytes_max` in JSON (base64 adds a
    /// third, JSON's quoting and field names more) with room to spare.
    buf_bytes_max: usize,
    /// Where the first value in `buf` ends, found by a scan that goes on where it stopped, so
    /// that a body arriving in many pieces is parsed once, not once per piece.
    scan: ValueScan,
}

/// A scan for the end of the first JSON object, array or string in a buffer, byte by byte
/// across calls.
#[derive(Default)]
struct ValueScan {
    /// Bytes scanned.
    scanned: usize,
    /// Objects and arrays open.
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl ValueScan {
    /// The end of the first complete object, array or string in `buf`, if it has arrived. A
    /// bare number or literal at the top level has no end marker: it is parsed once the body
    /// has ended.
    fn end(&mut self, buf: &[u8]) -> Option<usize> {
        while let Some(&b) = buf.get(self.scanned) {
            self.scanned += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Some(self.scanned);
                    }
                }
                continue;
            }
            match b {
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    // A stray closer ends a value too: the parser then reports it.
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Some(self.scanned);
                    }
                }
                b'"' => self.in_string = true,
                _ => {}
            }
        }
        None
    }
}

impl BodyReader {
    fn new(body: Body, services: &Services) -> BodyReader {
        let message_bytes_max = services.request_bytes_max + GRPC_OVERHEAD_BYTES;
        BodyReader {
            body: body.into_data_stream(),
            buf: Vec::new(),
            done: false,
            message_bytes_max,
            buf_bytes_max: message_bytes_max.saturating_mul(2).saturating_add(64 * 1024),
            scan: ValueScan::default(),
        }
    }

    /// The next request, `None` at the end of the body.
    async fn next<T: FromJson + prost::Message>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            let complete = self.scan.end(&self.buf).is_some() || self.done;
            let mut values =
                serde_json::Deserializer::from_slice(&self.buf).into_iter::<serde_json::Value>();
            match values.next().filter(|_| complete) {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    self.scan = ValueScan::default();
                    let request = T::from_json(&value)?;
                    let len = request.encoded_len();
                    if len > self.message_bytes_max {
                        return Err(ReadError::TooLarge(format!(
                            "grpc: received message larger than max ({len} vs. {})",
                            self.message_bytes_max
                        )));
                    }
                    return Ok(Some(request));
                }
                Some(Err(e)) if !e.is_eof() || self.done => {
                    return Err(ReadError::Json(go_json_message(&e)));
                }
                None if self.done => return Ok(None),
                // An incomplete value (or only whitespace so far): read on.
                _ => {}
            }
            match self.body.next().await {
                None => self.done = true,
                Some(Ok(chunk)) => {
                    if self.buf.len() + chunk.len() > self.buf_bytes_max {
                        self.buf = Vec::new();
                        // The client is told once it has sent its body (up to a bound), so
                        // that it reads the answer rather than a reset connection.
                        discard(&mut self.body, self.buf_bytes_max.saturating_mul(4)).await;
                        return Err(ReadError::TooLarge(format!(
                            "grpc: received message larger than max (a request body of more \
                             than {} bytes vs. {} bytes as protobuf)",
                            self.buf_bytes_max, self.message_bytes_max
                        )));
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(ReadError::Body(e.to_string())),
            }
        }
    }
}

/// Reads and drops what is left of a body, up to `bytes_max` bytes: a server that answers
/// before reading the request and closes the connection makes the client's kernel reset it,
/// and the client may then lose the answer (Go's HTTP server likewise reads what is left of a
/// body, up to a bound, after a handler).
pub(super) async fn discard(body: &mut axum::body::BodyDataStream, bytes_max: usize) {
    let mut read = 0usize;
    while read <= bytes_max {
        match body.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}

/// A JSON syntax error in the words Go's decoder uses where they are simple to match
/// ("unexpected EOF"), else serde_json's own description.
fn go_json_message(e: &serde_json::Error) -> String {
    if e.is_eof() { "unexpected EOF".to_string() } else { e.to_string() }
}

/// grpc-gateway's (v1, as in etcd 3.4) HTTP status for a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// grpc-gateway's error body for `status`.
fn error_response(status: &Status) -> Response {
    let mut body = String::new();
    Object::write(&mut body, |o| {
        // The message twice, as grpc-gateway v1 writes it ("error" is its older name).
        o.string("error", status.message());
        o.string("message", status.message());
        o.u32("code", status.code() as u32);
    });
    json_response(http_status(status.code()), body)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What Go's `net/http` answers a gateway path asked with another method than `POST`.
async fn method_not_allowed(body: Body) -> Response {
    discard(&mut body.into_data_stream(), super::http::UNREAD_BODY_BYTES_MAX).await;
    super::http::plain_text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::etcdserverpb as pb;

    #[test]
    fn grpc_codes_map_to_grpc_gateway_v1_statuses() {
        // Those checked against etcd 3.4's gateway: a future revision (OutOfRange), a lease
        // not found, a lease that exists (FailedPrecondition), too large for gRPC.
        assert_eq!(http_status(Code::OutOfRange), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::PRECONDITION_FAILED);
        assert_eq!(http_status(Code::ResourceExhausted), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(http_status(Code::Unknown), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_stream_error_is_grpc_gateways_error_chunk() {
        let line = stream_error_line(&Status::unavailable("etcdserver: no leader"));
        assert_eq!(
            line,
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#
        );
    }

    #[test]
    fn a_value_scan_finds_where_the_first_value_ends_across_pieces() {
        let body = br#" {"a":"}\"]","b":[1,{"c":2}]} {"d":1}"#;
        let mut scan = ValueScan::default();
        let first_end = body.windows(3).position(|w| w == b"]} ").unwrap() + 2;
        // Fed a byte at a time, it finds the end of the first object only once it arrived,
        // whatever braces and quotes its strings hold.
        let end = (1..=body.len()).find_map(|n| scan.end(&body[..n]));
        assert_eq!(end, Some(first_end));
        assert!(serde_json::from_slice::<serde_json::Value>(&body[..first_end]).is_ok());
        assert_eq!(ValueScan::default().end(br#""a \" b" 1"#), Some(8));
        assert_eq!(ValueScan::default().end(b"123 "), None, "a number has no end marker");
        assert_eq!(ValueScan::default().end(b"]"), Some(1), "a stray closer ends a value");
    }

    #[test]
    fn a_grpc_frame_has_the_uncompressed_flag_and_big_endian_length() {
        let f = grpc_frame(&pb::LeaseKeepAliveRequest { id: 1 });
        assert_eq!(&f[..], &[0, 0, 0, 0, 2, 8, 1]);
    }
}
