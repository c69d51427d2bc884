//! Client sessions for exactly-once retries (Raft dissertation §6.3).
//!
//! A session remembers, per client, the last sequence number applied and the outcome it
//! produced. A retry of that number gets the cached outcome instead of applying twice; an
//! older number gets [`Error::StaleSequence`]. Sessions expire after
//! [`Config::session_idle_ms_max`](crate::Config::session_idle_ms_max) of log time without a
//! command, and when more than [`Config::sessions_max`](crate::Config::sessions_max) exist the
//! least recently used goes first (ties broken by client id). Both rules depend only on the
//! log, so every replica keeps the same sessions. A command from a client with no session must
//! carry sequence 1; any other number means the session is gone and the client cannot know
//! whether its command applied, so it gets [`Error::SessionExpired`] (the dissertation's
//! "session expired" answer) and must start again under a new client id.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{Response, SessionTag};
use crate::error::Error;

/// One client's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The highest sequence number applied for this client.
    pub(crate) last_sequence: u64,
    /// Log time of the last command from this client (applied or answered from the cache).
    pub(crate) last_active_ms: u64,
    /// The outcome of `last_sequence`; only deterministic outcomes are stored.
    pub(crate) outcome: Result<Response, Error>,
}

/// What the session table says about an incoming command.
pub(crate) enum Check {
    /// Apply it (and then [`Sessions::record`] the outcome).
    Apply,
    /// It already applied: return this outcome again.
    Cached(Result<Response, Error>),
}

/// All sessions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Sessions {
    pub(crate) by_client: BTreeMap<u64, Session>,
    /// `(last_active_ms, client_id)` of every session: the expiry and eviction order.
    /// Invariant: holds exactly one entry per session in `by_client`, with its current time.
    by_activity: BTreeSet<(u64, u64)>,
}

impl Sessions {
    pub(crate) fn len(&self) -> usize {
        self.by_client.len()
    }

    /// Adds a session as found in a snapshot.
    pub(crate) fn insert(&mut self, client_id: u64, session: Session) {
        self.by_activity.insert((session.last_active_ms, client_id));
        if let Some(old) = self.by_client.insert(client_id, session) {
            self.by_activity.remove(&(old.last_active_ms, client_id));
        }
    }

    /// Drops sessions idle for more than `idle_ms_max` at log time `now_ms`.
    pub(crate) fn expire(&mut self, now_ms: u64, idle_ms_max: u64) {
        while let Some(&(active, client)) = self.by_activity.first() {
            if now_ms.saturating_sub(active) <= idle_ms_max {
                break;
            }
            self.by_activity.pop_first();
            self.by_client.remove(&client);
        }
    }

    fn touch(&mut self, client_id: u64, now_ms: u64) {
        let session = self.by_client.get_mut(&client_id).expect("touch of a known session");
        self.by_activity.remove(&(session.last_active_ms, client_id));
        session.last_active_ms = now_ms;
        self.by_activity.insert((now_ms, client_id));
    }

    /// Decides whether the command tagged `tag` applies, is a duplicate, or is refused.
    pub(crate) fn check(&mut self, tag: SessionTag, now_ms: u64) -> Result<Check, Error> {
        let Some(session) = self.by_client.get(&tag.client_id) else {
            return if tag.sequence == 1 { Ok(Check::Apply) } else { Err(Error::SessionExpired) };
        };
        match tag.sequence.cmp(&session.last_sequence) {
            std::cmp::Ordering::Less => Err(Error::StaleSequence),
            std::cmp::Ordering::Equal => {
                let outcome = session.outcome.clone();
                self.touch(tag.client_id, now_ms);
                Ok(Check::Cached(outcome))
            }
            std::cmp::Ordering::Greater => Ok(Check::Apply),
        }
    }

    /// Stores the outcome of an applied command, evicting the least recently used session if
    /// a new one would exceed `sessions_max`.
    pub(crate) fn record(
        &mut self,
        tag: SessionTag,
        now_ms: u64,
        outcome: Result<Response, Error>,
        sessions_max: usize,
    ) {
        if self.by_client.contains_key(&tag.client_id) {
            self.touch(tag.client_id, now_ms);
            let session = self.by_client.get_mut(&tag.client_id).expect("just touched");
            session.last_sequence = tag.sequence;
            session.outcome = outcome;
            return;
        }
        while self.by_client.len() >= sessions_max {
            let (_, client) = self.by_activity.pop_first().expect("sessions_max > 0");
            self.by_client.remove(&client);
        }
        self.insert(
            tag.client_id,
            Session { last_sequence: tag.sequence, last_active_ms: now_ms, outcome },
        );
    }
}
