//! The requests a group of simulated clients has in flight, one at most per client: the lease
//! and lock workloads share this bookkeeping.

use std::collections::BTreeMap;

use tenure_raft::NodeId;
use tenure_replica::RequestId;

use crate::world::Millis;

/// Requests in flight, by where they went and by client.
#[derive(Debug, Default)]
pub(crate) struct Outstanding {
    /// Request ids are `base` plus a counter, apart from every other workload's.
    base: u64,
    next: u64,
    by_target: BTreeMap<(NodeId, RequestId), usize>,
    /// Per client: where its request went and when.
    sent: Vec<Option<(NodeId, RequestId, Millis)>>,
}

impl Outstanding {
    pub(crate) fn new(base: u64, clients: usize) -> Outstanding {
        Outstanding { base, sent: vec![None; clients], ..Outstanding::default() }
    }

    /// Whether client `c` still waits for its request, sent less than `patience_ms` ago; an
    /// older one is given up (its effect stays unknown) and the client may send again.
    pub(crate) fn waiting(&mut self, c: usize, now: Millis, patience_ms: Millis) -> bool {
        let Some((node, req, at)) = self.sent[c] else { return false };
        if now < at + patience_ms {
            return true;
        }
        self.by_target.remove(&(node, req));
        self.sent[c] = None;
        false
    }

    /// Records client `c`'s new request to `node` and returns its id.
    pub(crate) fn send(&mut self, c: usize, node: NodeId, now: Millis) -> RequestId {
        self.next += 1;
        let req = RequestId(self.base + self.next);
        self.sent[c] = Some((node, req, now));
        self.by_target.insert((node, req), c);
        req
    }

    /// Whether `req` on `node` is one of these clients' requests in flight.
    pub(crate) fn owns(&self, node: NodeId, req: RequestId) -> bool {
        self.by_target.contains_key(&(node, req))
    }

    /// Takes a completed request: which client sent it and when.
    pub(crate) fn take(&mut self, node: NodeId, req: RequestId) -> Option<(usize, Millis)> {
        let c = self.by_target.remove(&(node, req))?;
        let (_, _, at) = self.sent[c].take()?;
        Some((c, at))
    }
}
