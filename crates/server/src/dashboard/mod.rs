//! A live dashboard of the cluster in the browser: `tenure dev` serves it (with buttons that
//! kill, restart, pause and isolate members and write keys), `tenure serve --dashboard ADDR`
//! serves a watch-only one of its cluster. Plain HTML, JavaScript and CSS compiled into the
//! binary ([`assets`]); no build step.
//!
//! Every member of the configuration in force is shown: those of this process read in place,
//! the others (the other machines under `tenure serve`, members added to a `tenure dev`
//! cluster) read from their client URLs, where every member answers `GET
//! /dashboard/v1/member` with its report ([`cluster`]); one that cannot be read is shown
//! unreachable.
//!
//! | module | what it holds |
//! |---|---|
//! | [`state`] | the members the page shows and the collector that turns their status, events and metrics into one JSON document (its schema is there) |
//! | [`cluster`] | the fetcher: the configuration in force, and the reports of members in other processes |
//! | [`controls`] | the buttons (`tenure dev` only; refused with 403 elsewhere) |
//! | [`scenarios`] | the scenario player's data: the seed scenarios' traces, explained step by step |
//! | [`assets`] | the page itself |
//!
//! Routes, on a listener of the dashboard's own:
//!
//! | route | what it answers |
//! |---|---|
//! | `GET /` (and `/app.js`, `/style.css`) | the page |
//! | `GET /api/state` | the document now |
//! | `GET /api/events` | server-sent events: a `state` message with the document whenever it changes (at most every 100 ms, at least every second) |
//! | `GET /api/scenarios`, `GET /api/scenarios/{id}` | the scenarios; one scenario's steps |
//! | `POST /api/members/{name}/{action}` | `kill`, `restart`, `pause`, `resume`, `isolate`, `heal` |
//! | `POST /api/leader/{action}` | the same on whichever member leads now |
//! | `POST /api/put` | `{"key": ..., "value": ...}`: a write through the leader |
//!
//! Controls answer `{"ok": "what was done"}` or `{"error": "why not"}` with a 4xx or 5xx
//! status; under `tenure serve` every one is refused with 403.

pub mod assets;
pub mod cluster;
pub mod controls;
pub mod scenarios;
pub mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::controls::{Action, ControlError, DevCluster};
pub use self::state::{ClusterView, Collector, Live, Mode, Remote, Source, Sources, ViewMember};

/// The longest the event stream goes without a `state` message.
const REPUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// A running dashboard: its collector and its HTTP listener, stopped when dropped.
pub struct Dashboard {
    tasks: Vec<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

struct Shared {
    doc: watch::Receiver<Arc<String>>,
    controls: Option<Arc<DevCluster>>,
}

impl Dashboard {
    /// Serves the dashboard of `sources` on `listener`: with `controls` (the members of a
    /// `tenure dev` cluster) the buttons work; without, they are refused.
    pub fn start(
        listener: tokio::net::TcpListener,
        sources: Sources,
        controls: Option<Arc<DevCluster>>,
    ) -> std::io::Result<Dashboard> {
        Dashboard::start_with_tls(listener, sources, controls, None)
    }

    /// [`Dashboard::start`], reading members of other processes over https with `tls` (the
    /// member's own client certificate and trusted CA).
    pub fn start_with_tls(
        listener: tokio::net::TcpListener,
        sources: Sources,
        controls: Option<Arc<DevCluster>>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> std::io::Result<Dashboard> {
        let addr = listener.local_addr()?;
        let fetch = tokio::spawn(cluster::run(sources.clone(), tls));
        let mode = if controls.is_some() { Mode::Dev } else { Mode::Serve };
        let mut collector = Collector::new(sources, mode);
        let (tx, doc) = watch::channel(Arc::new(collector.collect().to_string()));
        let collect = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(state::COLLECT_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = String::new();
            let mut sent = Instant::now();
            loop {
                ticks.tick().await;
                let mut doc = collector.collect();
                // Only a change is news; the clock alone is news once a second.
                let now = doc["now_ms"].take();
                let without_clock = doc.to_string();
                if without_clock == last && sent.elapsed() < REPUBLISH_INTERVAL {
                    continue;
                }
                last = without_clock;
                doc["now_ms"] = now;
                sent = Instant::now();
                if tx.send(Arc::new(doc.to_string())).is_err() {
                    return;
                }
            }
        });
        let router = router(Arc::new(Shared { doc, controls }));
        let serve = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("dashboard listener failed: {e}");
            }
        });
        Ok(Dashboard { tasks: vec![fetch, collect, serve], addr })
    }

    /// Where the dashboard listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves a watch-only dashboard of `member` (started from `cfg`) and the other members of its
/// cluster on `addr` (`tenure serve --dashboard ADDR`).
pub async fn watch_member(
    addr: &str,
    cfg: &crate::cli::ServeConfig,
    member: &crate::member::Member,
) -> anyhow::Result<Dashboard> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for the dashboard on {addr}: {e}"))?;
    let source = Source {
        name: cfg.name.clone(),
        id: cfg.member_id,
        client_url: cfg.advertise_client_urls.first().map(|u| u.to_string()).unwrap_or_default(),
        live: Some(Live { handle: member.handle(), gate: member.gate().clone() }),
    };
    Ok(Dashboard::start_with_tls(listener, Sources::new(vec![source]), None, member.client_tls())?)
}

fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { assets::page(assets::INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/app.js", get(|| async { assets::page(assets::APP_JS, "text/javascript") }))
        .route("/style.css", get(|| async { assets::page(assets::STYLE_CSS, "text/css") }))
        .route("/api/state", get(state_now))
        .route("/api/events", get(events))
        .route("/api/scenarios", get(|| async { json_reply(StatusCode::OK, scenarios::list()) }))
        .route("/api/scenarios/{id}", get(scenario))
        .route("/api/members/{name}/{action}", post(member_control))
        .route("/api/leader/{action}", post(leader_control))
        .route("/api/put", post(put))
        .with_state(shared)
}

fn json_reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn control_reply(result: Result<serde_json::Value, ControlError>) -> Response {
    match result {
        Ok(v) => json_reply(StatusCode::OK, v),
        Err(e) => json_reply(e.status(), serde_json::json!({ "error": e.to_string() })),
    }
}

fn dev(shared: &Shared) -> Result<&Arc<DevCluster>, ControlError> {
    shared.controls.as_ref().ok_or(ControlError::NotDev)
}

async fn state_now(State(shared): State<Arc<Shared>>) -> Response {
    let doc = Arc::clone(&shared.doc.borrow());
    ([(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
}

async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, std::convert::Infallible>>> {
    use tokio_stream::StreamExt;
    // The stream starts with the document as it is now, then follows every change.
    let stream = tokio_stream::wrappers::WatchStream::new(shared.doc.clone())
        .map(|doc| Ok(Event::default().event("state").data(doc.as_str())));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn scenario(Path(id): Path<String>) -> Response {
    match tokio::task::spawn_blocking(move || scenarios::trace(&id)).await {
        Ok(Ok(v)) => json_reply(StatusCode::OK, v),
        Ok(Err(e)) => json_reply(StatusCode::NOT_FOUND, serde_json::json!({ "error": e })),
        Err(e) => json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e.to_string() }),
        ),
    }
}

async fn member_control(
    State(shared): State<Arc<Shared>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let result = async {
        let cluster = dev(&shared)?;
        let action: Action = action.parse()?;
        cluster.act(&name, action).await.map(|done| serde_json::json!({ "ok": done }))
    };
    control_reply(result.await)
}

async fn leader_control(State(shared): State<Arc<Shared>>, Path(action): Path<String>) -> Response {
    let result = async {
        let cluster = dev(&shared)?;
        let action: Action = action.parse()?;
        cluster.act_on_leader(action).await.map(|done| serde_json::json!({ "ok": done }))
    };
    control_reply(result.await)
}

async fn put(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let result = async {
        let cluster = dev(&shared)?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            ControlError::BadRequest(format!("expected {{\"key\", \"value\"}}: {e}"))
        })?;
        let field = |name: &str| {
            v.get(name)
                .and_then(|f| f.as_str())
                .map(str::to_string)
                .ok_or_else(|| ControlError::BadRequest(format!("{name} must be a string")))
        };
        let (key, value) = (field("key")?, field("value")?);
        cluster.put(&key, &value).await
    };
    control_reply(result.await)
}
