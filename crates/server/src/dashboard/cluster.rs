//! The members the dashboard does not run itself: every member of the configuration in force
//! that is not in this process (the other machines of a `tenure serve` cluster, members added
//! to a `tenure dev` cluster with `tenure member add`), read over HTTP.
//!
//! The fetcher task does two things, both off the collector's path:
//! - every [`VIEW_INTERVAL`] it asks a running member of this process for the configuration in
//!   force and the member table (one closure run on its replica thread, as `MemberList` does)
//!   and hands it to [`Sources::set_view`]: new members become remote members, removed ones
//!   are dropped;
//! - every [`FETCH_INTERVAL`] it reads each remote member's report from its first published
//!   client URL (`GET /dashboard/v1/member?after=SEQ`, see [`MemberReport`]), over the same
//!   TLS as the member's own calls to other members when the URL is https, and hands it (or
//!   why it failed: the member is then shown unreachable) to [`Sources::set_report`].
//!
//! A channel per URL is kept between reads and dropped after a failed one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tenure_replica::Replica;

use super::state::{ClusterView, Sources, ViewMember};
use crate::runtime::MemberReport;

/// How often remote members are read.
pub const FETCH_INTERVAL: Duration = Duration::from_millis(300);

/// How often the configuration in force is read.
pub const VIEW_INTERVAL: Duration = Duration::from_millis(500);

/// How long one read (connection included) may take before the member counts as unreachable.
const FETCH_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest report accepted (a report with every event a member keeps is about 50 KiB).
const REPORT_BYTES_MAX: usize = 4 << 20;

/// The configuration in force and the member table of `replica`.
pub fn view_of(replica: &Replica) -> ClusterView {
    let membership = replica.membership();
    let attributes: BTreeMap<u64, tenure_kv::MemberAttributes> =
        replica.kv().members().map(|(id, a)| (id, a.clone())).collect();
    membership
        .members()
        .into_iter()
        .map(|id| {
            let published = attributes.get(&id.0);
            let member = ViewMember {
                name: published.map(|a| a.name.clone()).unwrap_or_default(),
                client_urls: published.map(|a| a.client_urls.clone()).unwrap_or_default(),
                learner: membership.learners.contains(&id),
            };
            (id.0, member)
        })
        .collect()
}

/// Asks a running member of this process for the configuration in force.
async fn read_view(sources: &Sources) -> Option<ClusterView> {
    let live = sources.all().into_iter().find_map(|s| s.live)?;
    let rx = live.handle.inspect(view_of).ok()?;
    tokio::time::timeout(FETCH_TIMEOUT, rx).await.ok()?.ok()
}

/// Reads one report from `url` over `channel`.
async fn fetch(
    channel: tonic::transport::Channel,
    url: &str,
    after: u64,
) -> Result<MemberReport, String> {
    use tower::ServiceExt;
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/');
    let request = tonic::codegen::http::Request::builder()
        .method("GET")
        .uri(format!("http://{authority}/dashboard/v1/member?after={after}"))
        .body(tonic::body::Body::empty())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(FETCH_TIMEOUT, channel.oneshot(request))
        .await
        .map_err(|_| format!("no answer from {url} within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let body = axum::body::Body::new(response.into_body());
    let bytes = tokio::time::timeout(FETCH_TIMEOUT, axum::body::to_bytes(body, REPORT_BYTES_MAX))
        .await
        .map_err(|_| format!("{url}: the report did not arrive within {FETCH_TIMEOUT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))?;
    MemberReport::from_json(&v).map_err(|e| format!("{url}: {e}"))
}

/// Connects to `url` (TLS with `tls` for https).
async fn connect(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<tonic::transport::Channel, String> {
    crate::tls::connect_channel(url, tls, |e| {
        e.connect_timeout(FETCH_TIMEOUT).timeout(FETCH_TIMEOUT)
    })
    .await
}

/// The fetcher task: runs until aborted (see the module docs).
pub async fn run(sources: Sources, tls: Option<Arc<rustls::ClientConfig>>) {
    let mut channels: BTreeMap<String, tonic::transport::Channel> = BTreeMap::new();
    let mut ticks = tokio::time::interval(FETCH_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut view_due = Instant::now();
    loop {
        ticks.tick().await;
        if Instant::now() >= view_due {
            if let Some(view) = read_view(&sources).await {
                sources.set_view(view);
            }
            view_due = Instant::now() + VIEW_INTERVAL;
        }
        let mut reads = tokio::task::JoinSet::new();
        for (id, remote) in sources.remotes() {
            let Some(url) = remote.member.client_urls.first().cloned() else {
                let why = "it has not published a client URL yet (not started?)".to_string();
                sources.set_report(id, Err(why));
                continue;
            };
            let cached = channels.get(&url).cloned();
            let tls = tls.clone();
            let after = remote.after;
            reads.spawn(async move {
                let channel = match cached {
                    Some(c) => c,
                    None => match connect(&url, tls).await {
                        Ok(c) => c,
                        Err(e) => return (id, url, None, Err(e)),
                    },
                };
                let report = fetch(channel.clone(), &url, after).await;
                (id, url, Some(channel), report)
            });
        }
        while let Some(done) = reads.join_next().await {
            let Ok((id, url, channel, report)) = done else { continue };
            match (&report, channel) {
                (Ok(_), Some(c)) => {
                    channels.insert(url, c);
                }
                _ => {
                    channels.remove(&url);
                }
            }
            sources.set_report(id, report);
        }
    }
}
