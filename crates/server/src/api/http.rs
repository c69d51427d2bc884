//! The HTTP endpoints served on the client port beside gRPC and the gateway: etcd's
//! `/health`, `/livez`, `/readyz` and `/version`, Prometheus' `/metrics`, tenure's
//! `/dashboard/v1/member` (this member's dashboard report, read by the dashboards of other
//! processes; like `/metrics`, it tells no key or value), and the answer to a path the port does
//! not serve; and etcd's CORS headers on them and on the gateway.
//!
//! `/livez` and `/readyz` are etcd 3.5.11's: a list of named checks, `200 ok` when each
//! passes (with `?verbose`, one `[+]name ok` line per check first), `503` with one
//! `[+]`/`[-]` line per check otherwise; `?exclude=name` (repeatable) skips a check, and
//! `/readyz/<name>` runs one. `/livez` asks whether the process serves at all (a serializable
//! read of its own store), so a probe restarts a member only when restarting can help;
//! `/readyz` whether it should get traffic: no `CORRUPT` alarm, a serializable read and a
//! linearizable read (which needs a leader and a quorum) succeed. (etcd 3.5.14 added a
//! `non_learner` check; tenure has no learners yet.)
//!
//! The version reported ([`ETCD_VERSION`], in `/version` and `Status.version`) is the etcd
//! release whose API and behaviour tenure provides, so that clients that gate features on
//! etcd's version enable them; tenure's own version is reported beside it (see
//! [`super::VERSION`]).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenure_kv::RangeRequest;
use tenure_replica::Consistency;

use super::{ETCD_VERSION, Services, TENURE_VERSION, client_status};
use crate::ServerError;
use crate::runtime::RuntimeHandle;

/// A JSON body with its content type.
type JsonReply = (axum::http::StatusCode, [(axum::http::HeaderName, &'static str); 1], String);

fn json(status: axum::http::StatusCode, body: String) -> JsonReply {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// A plain-text answer as Go's `http.Error` writes one.
pub(super) fn plain_text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut r = (status, body.into()).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// This member's dashboard report (`GET /dashboard/v1/member?after=SEQ`): its status, peers,
/// metrics' totals and its events after `SEQ` (all it keeps without), as
/// [`crate::runtime::MemberReport::to_json`] writes it. A dashboard of another process reads
/// it to show this member.
pub(super) async fn member_report(
    runtime: RuntimeHandle,
    member_id: u64,
    report: Option<std::sync::Arc<(String, crate::peer::transport::PeerGate)>>,
    query: Option<String>,
) -> JsonReply {
    let after = query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (name, isolated, reachable) = match &report {
        Some(r) => (r.0.clone(), r.1.is_isolated(), r.1.reachable()),
        None => (String::new(), false, Default::default()),
    };
    let report =
        crate::runtime::MemberReport::read(&runtime, member_id, name, isolated, reachable, after);
    json(axum::http::StatusCode::OK, report.to_json().to_string())
}

/// How long `/health` waits for its quorum read, as etcd 3.4 does.
const HEALTH_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// etcd 3.4's `/health`: healthy when no alarm is raised, the member knows a leader and a
/// linearizable read (which needs a quorum to confirm the leader) completes within a second.
/// A member whose disk is full is unhealthy, with a reason (it refuses writes).
pub(super) async fn health(runtime: RuntimeHandle) -> JsonReply {
    let st = runtime.status();
    if st.disk_full {
        // etcd 3.5's `reason` field; etcd 3.4's clients read only `health`.
        return json(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"DISK FULL: no space left on this member's disk"}"#
                .to_string(),
        );
    }
    let healthy = st.leader.is_some()
        && !st.stopped
        && no_alarm_raised(&runtime).await
        && quorum_read_succeeds(&runtime).await;
    if healthy {
        json(axum::http::StatusCode::OK, r#"{"health":"true"}"#.to_string())
    } else {
        json(axum::http::StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#.to_string())
    }
}

/// Whether this member has applied no raised alarm (etcd checks its own alarm store too).
async fn no_alarm_raised(runtime: &RuntimeHandle) -> bool {
    let Ok(rx) = runtime.inspect(|replica| replica.kv().alarms().next().is_none()) else {
        return false;
    };
    rx.await.unwrap_or(false)
}

/// A linearizable read of the key `health` (what etcd's check reads), bounded in time.
async fn quorum_read_succeeds(runtime: &RuntimeHandle) -> bool {
    let request = RangeRequest::single("health");
    let Ok(rx) = runtime.read(request, Consistency::Linearizable) else { return false };
    matches!(tokio::time::timeout(HEALTH_READ_TIMEOUT, rx).await, Ok(Ok(Ok(_))))
}

/// One of etcd's `/livez` and `/readyz` checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Check {
    /// No `CORRUPT` alarm is raised.
    DataCorruption,
    /// A read of this member's own store succeeds.
    SerializableRead,
    /// A linearizable read succeeds: the member knows a leader that a quorum confirms.
    LinearizableRead,
}

/// The checks of `/livez`.
pub(super) const LIVEZ: &[Check] = &[Check::SerializableRead];
/// The checks of `/readyz`, in the order etcd registers them.
pub(super) const READYZ: &[Check] =
    &[Check::DataCorruption, Check::SerializableRead, Check::LinearizableRead];

/// How long a read check waits: etcd's request timeout with its default timing (5 s plus two
/// election timeouts), after which etcd's read would fail too.
const READ_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7);

impl Check {
    /// The name etcd gives the check (in paths, `exclude` and the verbose output).
    pub(super) fn name(self) -> &'static str {
        match self {
            Check::DataCorruption => "data_corruption",
            Check::SerializableRead => "serializable_read",
            Check::LinearizableRead => "linearizable_read",
        }
    }

    /// Runs the check: `Err` with etcd's reason when it fails.
    async fn run(self, services: &Services) -> Result<(), String> {
        let runtime = &services.runtime;
        match self {
            Check::DataCorruption => {
                let rx = runtime
                    .inspect(|replica| {
                        replica.kv().alarms().any(|a| a.alarm == tenure_kv::AlarmType::Corrupt)
                    })
                    .map_err(|e| super::submit_status(e).message().to_string())?;
                match rx.await {
                    Ok(false) => Ok(()),
                    Ok(true) => Err("alarm activated: CORRUPT".to_string()),
                    Err(_) => Err(ServerError::Stopped.to_string()),
                }
            }
            Check::SerializableRead | Check::LinearizableRead => {
                let consistency = if self == Check::SerializableRead {
                    Consistency::Serializable
                } else {
                    Consistency::Linearizable
                };
                // etcd reads keys only, at most one.
                let request =
                    RangeRequest { keys_only: true, limit: 1, ..RangeRequest::single("health") };
                let rx = runtime
                    .read(request, consistency)
                    .map_err(|e| super::submit_status(e).message().to_string())?;
                match tokio::time::timeout(READ_CHECK_TIMEOUT, rx).await {
                    Ok(Ok(Ok(_))) => Ok(()),
                    Ok(Ok(Err(e))) => Err(client_status(e).message().to_string()),
                    Ok(Err(_)) => Err(ServerError::Stopped.to_string()),
                    Err(_) => Err(ServerError::Timeout.to_string()),
                }
            }
        }
    }
}

/// Answers `/livez` or `/readyz` (`checks`, less those the query excludes) or one of their
/// sub-paths (`checks` of one, `query` ignored but for `verbose`), as etcd does.
pub(super) async fn run_checks(
    services: Services,
    checks: &[Check],
    query: Option<String>,
    excludable: bool,
) -> Response {
    let params = query_params(query.as_deref().unwrap_or(""));
    let excluded: Vec<&str> = if excludable {
        params
            .iter()
            .filter(|(k, v)| k == "exclude" && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    } else {
        Vec::new()
    };
    let mut report = String::new();
    let mut failed = false;
    for check in checks.iter().filter(|c| !excluded.contains(&c.name())) {
        match check.run(&services).await {
            Ok(()) => report.push_str(&format!("[+]{} ok\n", check.name())),
            Err(reason) => {
                failed = true;
                report.push_str(&format!("[-]{} failed: {reason}\n", check.name()));
            }
        }
    }
    if failed {
        // etcd always gives the reasons of a failure (http.Error adds a newline).
        return plain_text(StatusCode::SERVICE_UNAVAILABLE, report + "\n");
    }
    let verbose = params.iter().any(|(k, _)| k == "verbose");
    let body = if verbose { report + "ok\n" } else { "ok\n".to_string() };
    plain_text(StatusCode::OK, body)
}

/// What is read and dropped of a request body that an answer does not need: Go's HTTP server
/// reads up to 256 KiB of it (see [`super::gateway::discard`]).
pub(super) const UNREAD_BODY_BYTES_MAX: usize = 256 * 1024;

/// What etcd answers a health path asked with another method than `GET`.
pub(super) async fn health_method_not_allowed(body: axum::body::Body) -> Response {
    super::gateway::discard(&mut body.into_data_stream(), UNREAD_BODY_BYTES_MAX).await;
    let mut r = plain_text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET"));
    r
}

/// The `name=value` pairs of a query string, percent-decoded (`verbose` alone is
/// `("verbose", "")`).
fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// etcd's `/version`, with tenure's own version beside it.
pub(super) async fn version() -> JsonReply {
    let body = format!(
        r#"{{"etcdserver":"{ETCD_VERSION}","etcdcluster":"{}","tenureVersion":"{TENURE_VERSION}"}}"#,
        cluster_version()
    );
    json(axum::http::StatusCode::OK, body)
}

/// The cluster version etcd reports: the server's major and minor version, patch 0.
fn cluster_version() -> String {
    let mut parts = ETCD_VERSION.split('.');
    format!("{}.{}.0", parts.next().unwrap_or("3"), parts.next().unwrap_or("4"))
}

/// This member's metrics in OpenMetrics text, which Prometheus scrapes.
pub(super) async fn metrics(
    runtime: RuntimeHandle,
) -> (axum::http::StatusCode, [(axum::http::HeaderName, &'static str); 1], String) {
    let body = runtime.metrics().render();
    (
        axum::http::StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, crate::runtime::metrics::CONTENT_TYPE)],
        body,
    )
}

/// A path the client port does not serve. etcd's client port hands gRPC requests
/// (`content-type: application/grpc...`) to gRPC, which answers an unknown method with
/// `Unimplemented`, and everything else to its HTTP muxes, which answer 404.
pub(super) async fn not_served(request: axum::extract::Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let service = request.uri().path().trim_start_matches('/').split('/').next().unwrap_or("");
        let (parts, ()) = tonic::Status::unimplemented(format!("unknown service {service}"))
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    // Under the gateway's prefixes, grpc-gateway's mux answers; elsewhere Go's.
    let gateway = ["/v3/", "/v3beta/"].iter().any(|p| request.uri().path().starts_with(p));
    let mut body = request.into_body().into_data_stream();
    super::gateway::discard(&mut body, UNREAD_BODY_BYTES_MAX).await;
    let text = if gateway { "Not Found\n" } else { "404 page not found\n" };
    plain_text(StatusCode::NOT_FOUND, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_split_and_decoded() {
        assert_eq!(
            query_params("verbose&exclude=serializable_read&exclude=a%5Fb+c"),
            vec![
                ("verbose".to_string(), String::new()),
                ("exclude".to_string(), "serializable_read".to_string()),
                ("exclude".to_string(), "a_b c".to_string()),
            ]
        );
        assert_eq!(query_params(""), vec![]);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn the_cluster_version_is_the_servers_minor_release() {
        assert_eq!(cluster_version(), format!("{}.0", ETCD_VERSION.rsplit_once('.').unwrap().0));
    }
}

/// Which origins may call the HTTP endpoints from a browser (etcd's `--cors`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// Every origin (etcd's default: no `--cors`, or `*` among them).
    #[default]
    Any,
    /// Only these.
    Origins(std::collections::BTreeSet<String>),
}

impl Cors {
    /// From `--cors`'s list: empty, or naming `*`, allows every origin.
    pub fn from_flag(origins: &[String]) -> Cors {
        let origins: std::collections::BTreeSet<String> =
            origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect();
        if origins.is_empty() || origins.contains("*") { Cors::Any } else { Cors::Origins(origins) }
    }

    /// The `Access-Control-Allow-Origin` to answer a request from `origin` with, if any.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::Origins(allowed) => {
                let origin = origin?;
                allowed.contains(origin.to_str().ok()?).then(|| origin.clone())
            }
        }
    }
}

/// etcd's CORS handling in front of the HTTP endpoints: an allowed origin gets the three
/// `Access-Control-Allow-*` headers etcd sends, and a preflight `OPTIONS` is answered `200`
/// with them and nothing else.
pub(super) async fn with_cors(
    cors: std::sync::Arc<Cors>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allow = cors.allow(request.headers().get(header::ORIGIN));
    let mut response = if request.method() == axum::http::Method::OPTIONS {
        StatusCode::OK.into_response()
    } else {
        next.run(request).await
    };
    if let Some(origin) = allow {
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("accept, content-type, authorization"),
        );
    }
    response
}
