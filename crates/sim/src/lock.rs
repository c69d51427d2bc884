//! The lock workload and its checker: etcd's lock recipe run by simulated clients, and proof
//! that writes guarded by the fencing token never interleave between holders.
//!
//! A lock client grants a 1 s lease, creates `lock/<lease>` with it (a transaction that creates
//! the key only if absent), waits until its key is the oldest under `lock/` (linearizable
//! reads), then, holding the lock, writes `locked` in transactions guarded by "my key still
//! has the create revision I locked with" (the fencing token). Sometimes it stops renewing
//! while it holds the lock, as a paused client does (Jepsen's etcd analysis, etcd issue 11408):
//! its lease expires, the next client takes the lock, and the first one's guarded writes must
//! fail from then on.
//!
//! [`check_lock`]: in revision order, the tokens of the guarded writes that took effect never
//! go back: a holder's writes all come before the next holder's.

use std::collections::BTreeMap;

use tenure_kv::{
    Command, Compare, CompareResult, CompareTarget, DeleteRangeRequest, Event, EventKind,
    LeaseGrantRequest, LeaseRenewRequest, PutRequest, RangeRequest, RequestOp, Response,
    ResponseOp, TxnRequest,
};
use tenure_raft::NodeId;
use tenure_replica::{Answer, Completion, RequestId};

use crate::checkers::Violation;
use crate::outstanding::Outstanding;
use crate::rng::SimRng;
use crate::world::Millis;

/// Request ids of the lock clients start here (between the lease clients' and the scripted
/// ones).
pub(crate) const LOCK_REQUEST_BASE: u64 = 7 << 59;
/// A request not answered within this long is given up.
const PATIENCE_MS: Millis = 500;
/// Lock acquisitions each client attempts in a run.
const LOCKS_PER_CLIENT: i64 = 4;
/// The key the holders write.
pub const GUARDED_KEY: &str = "locked";

/// What a lock client sends next: a command through the log or a linearizable read.
#[derive(Debug)]
pub(crate) enum LockRequest {
    Propose(Command),
    Read(RangeRequest),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Idle,
    Granting,
    Creating,
    Waiting {
        token: i64,
    },
    Holding {
        token: i64,
        writes_left: u64,
        renew: bool,
    },
    Releasing,
}

#[derive(Debug, Default)]
struct LockClient {
    state: State,
    lease: i64,
    started: i64,
    /// Whether the next holding step renews the lease rather than writing.
    renew_next: bool,
}

/// The lock clients of a run.
#[derive(Debug, Default)]
pub(crate) struct LockWorkload {
    clients: Vec<LockClient>,
    requests: Outstanding,
    /// Guarded writes acknowledged as taken effect.
    pub(crate) acknowledged_writes: u64,
}

fn lock_key(lease: i64) -> String {
    format!("lock/{lease:x}")
}

impl LockWorkload {
    pub(crate) fn new(clients: usize) -> LockWorkload {
        LockWorkload {
            clients: (0..clients).map(|_| LockClient::default()).collect(),
            requests: Outstanding::new(LOCK_REQUEST_BASE, clients),
            ..LockWorkload::default()
        }
    }

    /// Client `c`'s next request, if it has one now; none once `stop`.
    pub(crate) fn step(
        &mut self,
        c: usize,
        node: NodeId,
        now: Millis,
        stop: bool,
    ) -> Option<(RequestId, LockRequest)> {
        if stop || self.requests.waiting(c, now, PATIENCE_MS) {
            return None;
        }
        let client = &mut self.clients[c];
        let key = lock_key(client.lease);
        let request = match client.state {
            State::Idle => {
                if client.started >= LOCKS_PER_CLIENT {
                    return None;
                }
                client.started += 1;
                client.lease = 50_000 + (c as i64 + 1) * 100 + client.started;
                client.state = State::Granting;
                LockRequest::Propose(Command::LeaseGrant(LeaseGrantRequest {
                    id: client.lease,
                    ttl: 1,
                }))
            }
            State::Granting => LockRequest::Propose(Command::LeaseGrant(LeaseGrantRequest {
                id: client.lease,
                ttl: 1,
            })),
            State::Creating => {
                let mut put = PutRequest::new(key.clone(), "");
                put.lease = client.lease;
                LockRequest::Propose(Command::Txn(TxnRequest {
                    compare: vec![Compare::new(
                        key.clone(),
                        CompareResult::Equal,
                        CompareTarget::CreateRevision(0),
                    )],
                    success: vec![RequestOp::Put(put)],
                    failure: vec![RequestOp::Range(RangeRequest::single(key))],
                }))
            }
            State::Waiting { .. } => LockRequest::Read(RangeRequest::prefix("lock/")),
            State::Holding { token, writes_left, renew } => {
                client.renew_next = !client.renew_next;
                if renew && client.renew_next {
                    LockRequest::Propose(Command::LeaseRenew(LeaseRenewRequest {
                        id: client.lease,
                    }))
                } else if writes_left == 0 {
                    client.state = State::Releasing;
                    LockRequest::Propose(Command::DeleteRange(DeleteRangeRequest::single(key)))
                } else {
                    let value = format!("{c}:{token}:{writes_left}");
                    LockRequest::Propose(Command::Txn(TxnRequest {
                        compare: vec![Compare::new(
                            key,
                            CompareResult::Equal,
                            CompareTarget::CreateRevision(token),
                        )],
                        success: vec![RequestOp::Put(PutRequest::new(GUARDED_KEY, value))],
                        failure: vec![],
                    }))
                }
            }
            State::Releasing => {
                LockRequest::Propose(Command::DeleteRange(DeleteRangeRequest::single(key)))
            }
        };
        Some((self.requests.send(c, node, now), request))
    }

    pub(crate) fn owns(&self, node: NodeId, req: RequestId) -> bool {
        self.requests.owns(node, req)
    }

    /// A lock client's request completed.
    pub(crate) fn complete(&mut self, node: NodeId, completion: &Completion, rng: &mut SimRng) {
        let Some((c, _)) = self.requests.take(node, completion.id) else { return };
        let client = &mut self.clients[c];
        let Ok(answer) = &completion.result else {
            // Failed or unknown: a grant that may have been applied is abandoned; anything
            // else is retried at the next step.
            if client.state == State::Granting {
                client.state = State::Idle;
            }
            return;
        };
        client.state = match (client.state, answer) {
            (State::Granting, Answer::Write(Response::LeaseGrant(_))) => State::Creating,
            (State::Creating, Answer::Write(Response::Txn(t))) => {
                let token = if t.succeeded {
                    t.revision
                } else {
                    match t.responses.first() {
                        Some(ResponseOp::Range(r)) => {
                            r.kvs.first().map_or(0, |kv| kv.create_revision)
                        }
                        _ => 0,
                    }
                };
                if token == 0 { State::Idle } else { State::Waiting { token } }
            }
            (State::Waiting { token }, Answer::Read(r)) => {
                let oldest = r.kvs.iter().map(|kv| kv.create_revision).min();
                let mine = r.kvs.iter().any(|kv| kv.create_revision == token);
                if !mine {
                    // The key is gone (the lease expired while waiting): start over.
                    State::Idle
                } else if oldest == Some(token) {
                    // A quarter of the holders stop renewing, as a paused client does.
                    let renew = !rng.chance(0.25);
                    State::Holding { token, writes_left: rng.range(1, 6), renew }
                } else {
                    State::Waiting { token }
                }
            }
            (State::Holding { token, writes_left, renew }, Answer::Write(Response::Txn(t))) => {
                if t.succeeded {
                    self.acknowledged_writes += 1;
                    State::Holding { token, writes_left: writes_left - 1, renew }
                } else {
                    // The fencing token no longer holds: the lock was lost.
                    State::Idle
                }
            }
            (s @ State::Holding { .. }, Answer::Write(Response::LeaseRenew(_))) => s,
            (State::Releasing, Answer::Write(Response::DeleteRange(_))) => State::Idle,
            (s, _) => s,
        };
    }
}

/// Checks the guarded writes that took effect, from the committed history of events: their
/// fencing tokens (the holder's lock key create revision, written into the value as
/// `client:token:n`) never decrease in revision order.
pub fn check_lock(events: &BTreeMap<i64, Vec<Event>>) -> Result<(), Violation> {
    let mut last: Option<(i64, i64)> = None;
    for (revision, evs) in events {
        for e in evs {
            if e.kind != EventKind::Put || e.kv.key.as_ref() != GUARDED_KEY.as_bytes() {
                continue;
            }
            let value = String::from_utf8_lossy(&e.kv.value);
            let Some(token) = value.split(':').nth(1).and_then(|t| t.parse::<i64>().ok()) else {
                return Err(Violation {
                    property: "lock: fenced writes",
                    detail: format!("unreadable guarded write {value:?} at revision {revision}"),
                });
            };
            if let Some((at, previous)) = last
                && token < previous
            {
                return Err(Violation {
                    property: "lock: fenced writes",
                    detail: format!(
                        "a write with fencing token {token} at revision {revision} came after \
                         one with token {previous} at revision {at}: two holders' guarded writes \
                         interleaved"
                    ),
                });
            }
            last = Some((*revision, token));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tenure_kv::KeyValue;

    fn put(value: &str) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: Bytes::from_static(GUARDED_KEY.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
                ..KeyValue::default()
            },
            prev_kv: None,
        }
    }

    #[test]
    fn holders_in_token_order_pass() {
        let events = BTreeMap::from([
            (5, vec![put("0:4:2")]),
            (6, vec![put("0:4:1")]),
            (9, vec![put("1:7:1")]),
            (12, vec![put("0:10:3")]),
        ]);
        assert_eq!(check_lock(&events), Ok(()));
    }

    #[test]
    fn an_earlier_holder_writing_after_a_later_one_is_caught() {
        // Holder 4 lost its lease, holder 7 took the lock and wrote, then holder 4 wrote
        // again: what a lock without its fencing token lets happen.
        let events = BTreeMap::from([
            (5, vec![put("0:4:2")]),
            (9, vec![put("1:7:1")]),
            (10, vec![put("0:4:1")]),
        ]);
        let v = check_lock(&events).unwrap_err();
        assert_eq!(v.property, "lock: fenced writes");
        assert!(v.detail.contains("token 4 at revision 10"), "{}", v.detail);
    }

    #[test]
    fn an_unreadable_guarded_write_is_reported() {
        let events = BTreeMap::from([(5, vec![put("garbage")])]);
        assert!(check_lock(&events).is_err());
    }
}
