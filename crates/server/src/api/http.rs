//! The HTTP endpoints served on the client port beside gRPC: etcd's `/health` and `/version`,
//! and Prometheus' `/metrics`.

use tenure_kv::RangeRequest;
use tenure_replica::Consistency;

use super::VERSION;
use crate::runtime::RuntimeHandle;

/// A JSON body with its content type.
type JsonReply = (axum::http::StatusCode, [(axum::http::HeaderName, &'static str); 1], String);

fn json(status: axum::http::StatusCode, body: String) -> JsonReply {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body)
}

/// How long `/health` waits for its quorum read, as etcd 3.4 does.
const HEALTH_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// etcd 3.4's `/health`: healthy when no alarm is raised, the member knows a leader and a
/// linearizable read (which needs a quorum to confirm the leader) completes within a second.
pub(super) async fn health(runtime: RuntimeHandle) -> JsonReply {
    let st = runtime.status();
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

/// etcd's `/version`.
pub(super) async fn version() -> JsonReply {
    let body = format!(r#"{{"etcdserver":"{VERSION}","etcdcluster":"3.4.0"}}"#);
    json(axum::http::StatusCode::OK, body)
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
