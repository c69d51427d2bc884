//! The dashboard's buttons: kill and restart a member, pause and resume it, isolate it from
//! its peers and heal it, the same for whichever member leads, and write a key. Only `tenure
//! dev` has them ([`DevCluster`]): it owns every member in one process, so it can stop and
//! start them. Under `tenure serve` every control is refused with [`ControlError::NotDev`]
//! (HTTP 403), before anything is looked at.
//!
//! What each does to the real member:
//! - **kill**: [`Member::shutdown`]: listeners closed, replica stopped; its data directory
//!   stays, as a crashed process's would (what it synced survives; a shutdown also syncs what
//!   it wrote, which a crash would not).
//! - **restart**: [`Member::start`] again on the same configuration and data directory.
//! - **pause** / **resume**: [`RuntimeHandle::set_paused`]: the replica thread and its clock
//!   stand still, as under SIGSTOP; its sockets stay open.
//! - **isolate** / **heal**: [`PeerGate::set_isolated`]: its peer traffic is cut both ways.
//!
//! [`RuntimeHandle::set_paused`]: crate::runtime::RuntimeHandle::set_paused
//! [`PeerGate::set_isolated`]: crate::peer::transport::PeerGate::set_isolated

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tenure_kv::{Command, Proposal, PutRequest, Response};
use tenure_replica::Answer;

use super::state::{Live, Sources};
use crate::cli::ServeConfig;
use crate::member::Member;

/// How long a write from the dashboard waits for its answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Attempts to start a member again (its ports may take a moment to be free after a kill).
const RESTART_ATTEMPTS: u32 = 10;

/// Why a control was refused or failed; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Controls exist only under `tenure dev`.
    #[error("the controls are available only under `tenure dev`; this dashboard only watches")]
    NotDev,
    /// No member has that name.
    #[error("no member named {0:?}")]
    NoMember(String),
    /// No such control.
    #[error("no control named {0:?} (kill, restart, pause, resume, isolate, heal)")]
    NoAction(String),
    /// The action needs a leader and none is known.
    #[error("no member leads now")]
    NoLeader,
    /// The member is down.
    #[error("{0} is down; restart it first")]
    Down(String),
    /// The member runs already.
    #[error("{0} is running already")]
    Running(String),
    /// The request's body is not what the control takes.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The control was tried and failed.
    #[error("{0}")]
    Failed(String),
}

impl ControlError {
    /// The HTTP status that carries this error.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            ControlError::NotDev => StatusCode::FORBIDDEN,
            ControlError::NoMember(_) | ControlError::NoAction(_) => StatusCode::NOT_FOUND,
            ControlError::NoLeader | ControlError::Down(_) | ControlError::Running(_) => {
                StatusCode::CONFLICT
            }
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// A control applied to one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop the member.
    Kill,
    /// Start a stopped member again.
    Restart,
    /// Hold its replica thread and clock still.
    Pause,
    /// Let a paused member go on.
    Resume,
    /// Cut its peer traffic.
    Isolate,
    /// Restore its peer traffic.
    Heal,
}

impl std::str::FromStr for Action {
    type Err = ControlError;

    fn from_str(s: &str) -> Result<Action, ControlError> {
        Ok(match s {
            "kill" => Action::Kill,
            "restart" => Action::Restart,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "isolate" => Action::Isolate,
            "heal" => Action::Heal,
            other => return Err(ControlError::NoAction(other.to_string())),
        })
    }
}

struct Slot {
    cfg: ServeConfig,
    member: Option<Member>,
}

/// The members of a `tenure dev` cluster, under the dashboard's control.
pub struct DevCluster {
    /// One per member, in the order of `sources`. Held across a kill or restart, so that two
    /// controls on the cluster never interleave.
    slots: tokio::sync::Mutex<Vec<Slot>>,
    client_urls: BTreeMap<u64, Vec<String>>,
    sources: Sources,
}

impl DevCluster {
    /// Takes charge of `members`, started from `configs` (in the same order), and returns the
    /// cluster with the dashboard's view of its members.
    pub fn new(configs: Vec<ServeConfig>, members: Vec<Member>) -> (DevCluster, Sources) {
        assert_eq!(configs.len(), members.len(), "one configuration per member");
        let client_urls = configs
            .iter()
            .map(|c| (c.member_id, c.advertise_client_urls.iter().map(|u| u.to_string()).collect()))
            .collect();
        let sources = Sources::new(
            configs
                .iter()
                .zip(&members)
                .map(|(c, m)| super::state::Source {
                    name: c.name.clone(),
                    id: c.member_id,
                    client_url: c
                        .advertise_client_urls
                        .first()
                        .map(|u| u.to_string())
                        .unwrap_or_default(),
                    live: Some(Live { handle: m.handle(), gate: m.gate().clone() }),
                })
                .collect(),
        );
        let slots = configs
            .into_iter()
            .zip(members)
            .map(|(cfg, m)| Slot { cfg, member: Some(m) })
            .collect();
        let cluster = DevCluster {
            slots: tokio::sync::Mutex::new(slots),
            client_urls,
            sources: sources.clone(),
        };
        (cluster, sources)
    }

    /// The dashboard's view of the members (shared: it follows kills and restarts).
    pub fn sources(&self) -> Sources {
        self.sources.clone()
    }

    /// Applies `action` to the member named `name`; the answer says what was done.
    pub async fn act(&self, name: &str, action: Action) -> Result<String, ControlError> {
        let mut slots = self.slots.lock().await;
        let slot = slots
            .iter_mut()
            .find(|s| s.cfg.name == name)
            .ok_or_else(|| ControlError::NoMember(name.to_string()))?;
        let done = match (action, &slot.member) {
            (Action::Restart, Some(_)) => return Err(ControlError::Running(name.to_string())),
            (Action::Restart, None) => {
                let member = self.start(&slot.cfg).await?;
                let live = Live { handle: member.handle(), gate: member.gate().clone() };
                self.sources.set_live(name, Some(live));
                slot.member = Some(member);
                format!("{name} restarted from its data directory")
            }
            (_, None) => return Err(ControlError::Down(name.to_string())),
            (Action::Kill, Some(_)) => {
                self.sources.set_live(name, None);
                let member = slot.member.take().expect("matched Some");
                member.shutdown().await.map_err(|e| ControlError::Failed(format!("{e:#}")))?;
                format!("{name} was killed (its data directory stays)")
            }
            (Action::Pause, Some(m)) => {
                m.handle().set_paused(true);
                format!("{name} was paused: its clock and replica stand still")
            }
            (Action::Resume, Some(m)) => {
                m.handle().set_paused(false);
                format!("{name} resumed")
            }
            (Action::Isolate, Some(m)) => {
                m.gate().set_isolated(true);
                format!("{name} was isolated from its peers")
            }
            (Action::Heal, Some(m)) => {
                m.gate().set_isolated(false);
                format!("{name} can reach its peers again")
            }
        };
        self.sources.note(name, done.clone());
        Ok(done)
    }

    /// Applies `action` to the member that leads now (the leader of the highest term among
    /// the running members).
    pub async fn act_on_leader(&self, action: Action) -> Result<String, ControlError> {
        let leader = self.leader().ok_or(ControlError::NoLeader)?;
        self.act(&leader, action).await
    }

    /// The running member that leads the highest term, by name.
    pub fn leader(&self) -> Option<String> {
        self.sources
            .all()
            .into_iter()
            .filter_map(|s| {
                let st = s.live.as_ref()?.handle.status();
                (st.is_leader && !st.stopped).then_some((st.term, s.name))
            })
            .max()
            .map(|(_, name)| name)
    }

    /// Writes `value` at `key` through the leader (or any running member: a follower forwards
    /// it), and answers with the revision and the member that took it.
    pub async fn put(&self, key: &str, value: &str) -> Result<Value, ControlError> {
        if key.is_empty() {
            return Err(ControlError::BadRequest("the key is empty".into()));
        }
        let sources = self.sources.all();
        let leader = self.leader();
        let target = sources
            .iter()
            .filter(|s| s.live.is_some())
            .find(|s| Some(&s.name) == leader.as_ref())
            .or_else(|| sources.iter().find(|s| s.live.is_some()))
            .ok_or_else(|| ControlError::Failed("every member is down".into()))?;
        let handle = &target.live.as_ref().expect("filtered").handle;
        let proposal =
            Proposal::new(Command::Put(PutRequest::new(key.to_string(), value.to_string())));
        let rx = handle.propose(proposal).map_err(|e| ControlError::Failed(e.to_string()))?;
        let answer = tokio::time::timeout(WRITE_TIMEOUT, rx)
            .await
            .map_err(|_| {
                ControlError::Failed(format!(
                    "no answer from {} within {WRITE_TIMEOUT:?}",
                    target.name
                ))
            })?
            .map_err(|_| ControlError::Failed(format!("{} stopped", target.name)))?
            .map_err(|e| ControlError::Failed(e.to_string()))?;
        let revision = match answer {
            Answer::Write(Response::Put(r)) => r.revision,
            other => return Err(ControlError::Failed(format!("unexpected answer {other:?}"))),
        };
        self.sources.note(
            &target.name,
            format!("{} wrote {key}={value} at revision {revision}", target.name),
        );
        Ok(json!({"member": target.name, "revision": revision}))
    }

    async fn start(&self, cfg: &ServeConfig) -> Result<Member, ControlError> {
        let mut last = None;
        for _ in 0..RESTART_ATTEMPTS {
            match Member::start(cfg, &self.client_urls).await {
                Ok(m) => return Ok(m),
                Err(e) => last = Some(e),
            }
            // The killed member's listeners close as its tasks finish.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let e = last.map(|e| format!("{e:#}")).unwrap_or_default();
        Err(ControlError::Failed(format!("cannot restart {}: {e}", cfg.name)))
    }

    /// Stops every running member (Ctrl-C in `tenure dev`).
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        let mut slots = self.slots.lock().await;
        for slot in slots.iter_mut() {
            if let Some(m) = slot.member.take() {
                self.sources.set_live(&slot.cfg.name, None);
                m.shutdown().await?;
            }
        }
        Ok(())
    }
}
