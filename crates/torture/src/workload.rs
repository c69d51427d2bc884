//! The register workload: clients that read, write and compare-and-swap a few keys through the
//! etcd gRPC API, each operation recorded with when it was called, when it returned and how it
//! ended.
//!
//! Every written value is unique (`c{client}.{seq}`), so a read names the write it saw. A
//! client picks the member to ask, the key and the operation from its own seeded generator. A
//! compare-and-swap expects the value the client last saw for the key (`None`: absent, which
//! compares `create_revision == 0`, etcd's test for a missing key).
//!
//! Outcomes, as the linearizability checker expects them: an answer is `Ok` (a cas whose
//! comparison failed is `Fail`: nothing was written); any error or timeout is `Info`, since the
//! request may still take effect later (a write proposed by a member that was then cut off can
//! commit after the client gave up). An `Info` read says nothing and is dropped by the checker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use tenure_sim::linearizability::{OpKind, Operation, Status};
use tenure_sim::rng::SimRng;

/// One recorded operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpRecord {
    /// The client that issued it.
    pub client: u64,
    /// The member it was sent to.
    pub member: usize,
    /// The key.
    pub key: String,
    /// What was asked and, for a read, what was seen.
    pub kind: OpKind,
    /// When it was sent, in microseconds since the run began.
    pub call_us: u64,
    /// When the answer (or the error, or the timeout) came, in microseconds.
    pub ret_us: u64,
    /// How it ended.
    pub status: Status,
    /// For an acknowledged write or successful cas: the revision it created.
    pub revision: Option<i64>,
}

impl OpRecord {
    /// The operation as the linearizability checker takes it.
    pub fn to_operation(&self) -> Operation {
        Operation {
            client: self.client,
            key: Some(self.key.clone()),
            kind: self.kind.clone(),
            call: self.call_us,
            ret: Some(self.ret_us),
            status: self.status,
        }
    }

    /// The record as one JSON object (for `--history`).
    pub fn to_json(&self) -> serde_json::Value {
        let (op, value, expected) = match &self.kind {
            OpKind::Read { value } => ("read", value.clone(), None),
            OpKind::Write { value } => ("write", Some(value.clone()), None),
            OpKind::Cas { expected, value } => ("cas", Some(value.clone()), Some(expected.clone())),
            OpKind::Append { value } => ("append", Some(value.clone()), None),
        };
        serde_json::json!({
            "client": self.client,
            "member": format!("n{}", self.member + 1),
            "key": self.key,
            "op": op,
            "value": value,
            "expected": expected,
            "call_us": self.call_us,
            "ret_us": self.ret_us,
            "status": self.status.to_string(),
            "revision": self.revision,
        })
    }

    /// Whether the operation was decided (answered `Ok` or `Fail`), as availability counts.
    pub fn completed(&self) -> bool {
        matches!(self.status, Status::Ok | Status::Fail)
    }

    /// Whether it is a write or cas that the store acknowledged as applied.
    pub fn acknowledged_write(&self) -> Option<(&str, i64)> {
        match (&self.kind, self.status, self.revision) {
            (OpKind::Write { value } | OpKind::Cas { value, .. }, Status::Ok, Some(rev)) => {
                Some((value.as_str(), rev))
            }
            _ => None,
        }
    }
}

/// The history of a run, shared by its clients; times are measured from [`Recorder::start`].
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<OpRecord>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()) }
    }

    /// When the clock started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Microseconds since the clock started.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Records one operation.
    pub fn push(&self, op: OpRecord) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Everything recorded so far, in the order the operations returned.
    pub fn ops(&self) -> Vec<OpRecord> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// The shape of the workload.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// Concurrent clients.
    pub client_count: usize,
    /// Keys (`k0`, `k1`...).
    pub key_count: usize,
    /// How long one operation may take before it counts as indeterminate.
    pub op_timeout: Duration,
    /// The seed each client's generator derives from.
    pub seed: u64,
    /// Read with etcd's serializable reads (served from the asked member's own state, no
    /// ReadIndex) instead of linearizable ones. Not linearizable by design: a planted bug on
    /// the client side, which the suite must find (a member cut off serves stale values).
    pub serializable_reads: bool,
}

/// The name of key `i`.
pub fn key_name(i: usize) -> String {
    format!("k{i}")
}

/// Runs client `id` against `members` (one connected client per member, in member order) until
/// `stop` is set, recording into `recorder`.
pub async fn run_client(
    id: u64,
    members: Vec<Client>,
    config: WorkloadConfig,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SimRng::new(config.seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
    let mut last_seen: Vec<Option<String>> = vec![None; config.key_count];
    let mut seq = 0u64;
    let mut members = members;
    // Like an etcd client with several endpoints, a client that got no answer from a member
    // turns to the others for a while; otherwise every client would spend most of a fault
    // waiting on the one member that cannot answer, and the rate measured would be the
    // timeout's, not the cluster's.
    let mut avoid_until_us: Vec<u64> = vec![0; members.len()];
    while !stop.load(Ordering::Relaxed) {
        let now_us = recorder.now_us();
        let usable: Vec<usize> =
            (0..members.len()).filter(|&m| avoid_until_us[m] <= now_us).collect();
        let member = if usable.is_empty() {
            rng.range(0, members.len() as u64) as usize
        } else {
            usable[rng.range(0, usable.len() as u64) as usize]
        };
        let k = rng.range(0, config.key_count as u64) as usize;
        let key = key_name(k);
        let roll = rng.range(0, 100);
        let client = &mut members[member];
        let call_us = recorder.now_us();
        let (kind, status, revision) = if roll < 40 {
            let options = config.serializable_reads.then(|| GetOptions::new().with_serializable());
            let read =
                tokio::time::timeout(config.op_timeout, client.get(key.as_str(), options)).await;
            match read {
                Ok(Ok(r)) => {
                    let value =
                        r.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into());
                    last_seen[k] = value.clone();
                    (OpKind::Read { value }, Status::Ok, None)
                }
                _ => (OpKind::Read { value: None }, Status::Info, None),
            }
        } else {
            seq += 1;
            let value = format!("c{id}.{seq}");
            if roll < 70 {
                let put = client.put(key.as_str(), value.as_str(), None);
                let kind = OpKind::Write { value: value.clone() };
                match tokio::time::timeout(config.op_timeout, put).await {
                    Ok(Ok(r)) => {
                        last_seen[k] = Some(value);
                        (kind, Status::Ok, r.header().map(|h| h.revision()))
                    }
                    _ => (kind, Status::Info, None),
                }
            } else {
                let expected = last_seen[k].clone();
                let compare = match &expected {
                    Some(v) => Compare::value(key.as_str(), CompareOp::Equal, v.as_str()),
                    None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                };
                let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                    key.as_str(),
                    value.as_str(),
                    None,
                )]);
                let kind = OpKind::Cas { expected, value: value.clone() };
                match tokio::time::timeout(config.op_timeout, client.txn(txn)).await {
                    Ok(Ok(r)) if r.succeeded() => {
                        last_seen[k] = Some(value);
                        (kind, Status::Ok, r.header().map(|h| h.revision()))
                    }
                    Ok(Ok(_)) => {
                        // The comparison failed: the value is not what this client last saw,
                        // which a read will tell it.
                        last_seen[k] = None;
                        (kind, Status::Fail, None)
                    }
                    _ => (kind, Status::Info, None),
                }
            }
        };
        let ret_us = recorder.now_us();
        recorder.push(OpRecord {
            client: id,
            member,
            key,
            kind,
            call_us,
            ret_us,
            status,
            revision,
        });
        if status == Status::Info {
            avoid_until_us[member] = ret_us + AVOID_US;
            // A member that does not answer is probably down: back off a little so that a
            // client does not spin on refused connections.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Linearizable reads of every key from member `member`, recorded as client
/// `FINAL_READ_CLIENT + member`: the values the cluster ended with.
pub async fn final_reads(
    member: usize,
    client: &mut Client,
    config: &WorkloadConfig,
    recorder: &Recorder,
) {
    for k in 0..config.key_count {
        let key = key_name(k);
        let call_us = recorder.now_us();
        let read =
            tokio::time::timeout(config.op_timeout * 4, client.get(key.as_str(), None)).await;
        let (value, status) = match read {
            Ok(Ok(r)) => (
                r.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                Status::Ok,
            ),
            _ => (None, Status::Info),
        };
        recorder.push(OpRecord {
            client: FINAL_READ_CLIENT + member as u64,
            member,
            key,
            kind: OpKind::Read { value },
            call_us,
            ret_us: recorder.now_us(),
            status,
            revision: None,
        });
    }
}

/// How long a client leaves a member alone after it got no answer from it, in microseconds.
pub const AVOID_US: u64 = 2_000_000;

/// Client ids from here on are the final reads (see [`final_reads`]).
pub const FINAL_READ_CLIENT: u64 = 10_000;

/// The key the heal probes write (see [`probe`]).
pub const PROBE_KEY: &str = "probe";
/// Probe client ids start here (`PROBE_CLIENT + fault * 8 + member`).
pub const PROBE_CLIENT: u64 = 20_000;
/// How long a probe keeps trying.
pub const PROBE_PATIENCE: Duration = Duration::from_secs(5);

/// After the heal of fault `fault` at `heal_us`: writes through `member` until a write is
/// acknowledged (each attempt bounded by `attempt_timeout`, for at most [`PROBE_PATIENCE`]),
/// recording every attempt into the history. Returns the microseconds from the heal to the
/// acknowledgement. Unlike the clients, a probe starts at the heal with nothing in flight, so
/// it measures when the member serves writes again, not when a client's earlier request gave
/// up.
pub async fn probe(
    fault: usize,
    member: usize,
    mut client: Client,
    heal_us: u64,
    recorder: Arc<Recorder>,
    attempt_timeout: Duration,
) -> Option<u64> {
    let id = PROBE_CLIENT + fault as u64 * 8 + member as u64;
    let give_up_us = heal_us + PROBE_PATIENCE.as_micros() as u64;
    for attempt in 0.. {
        let call_us = recorder.now_us();
        if call_us >= give_up_us {
            return None;
        }
        let value = format!("p{fault}.{member}.{attempt}");
        let put = client.put(PROBE_KEY, value.as_str(), None);
        let (status, revision) = match tokio::time::timeout(attempt_timeout, put).await {
            Ok(Ok(r)) => (Status::Ok, r.header().map(|h| h.revision())),
            _ => (Status::Info, None),
        };
        let ret_us = recorder.now_us();
        recorder.push(OpRecord {
            client: id,
            member,
            key: PROBE_KEY.to_string(),
            kind: OpKind::Write { value },
            call_us,
            ret_us,
            status,
            revision,
        });
        if status == Status::Ok {
            return Some(ret_us.saturating_sub(heal_us));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
