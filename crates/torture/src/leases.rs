//! The lease workload: clients that grant a lease, attach a key to it, keep it alive for a
//! while through random members, then let it go; each step recorded for [`check_leases`].
//!
//! A lease's promise, as the client can check it from outside: once a keep-alive sent at `s`
//! is acknowledged with a positive TTL, the lease (and so its key, which nothing else deletes)
//! lives at least until `s + TTL` (the grant likewise from its call). So a read that returns
//! with the key absent before `max(s) + TTL`, over every acknowledged renewal `s` (even one sent
//! after the read: then the lease was alive later than the read, and a deleted lease never
//! comes back), after the key's put was acknowledged, is an anomaly. And once keep-alives stop
//! at `t`, the key must be gone by `t + TTL + LEASE_EXPIRY_SLACK` in a healed cluster: each
//! client lets its last lease go when the workload stops (after the schedule's cooldown) and
//! watches for that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use serde::Serialize;
use tenure_sim::rng::SimRng;

use crate::check::Verdict;
use crate::workload::Recorder;

/// The TTL the lease clients grant, in seconds (above etcd's minimum of 1.5 election
/// timeouts at the suite's default timing).
pub const LEASE_TTL_S: i64 = 3;
/// How long after the TTL a let-go lease's key may still be seen in a healed cluster: the
/// leader's expiry pass, an election timeout of extension on a leader change, and the reads.
pub const LEASE_EXPIRY_SLACK: Duration = Duration::from_secs(5);
/// Keep-alives are sent this often while a lease is kept.
pub const KEEPALIVE_EVERY: Duration = Duration::from_millis(700);

/// One lease's life as the client saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaseRecord {
    /// The lease client.
    pub client: u64,
    /// The key attached to the lease.
    pub key: String,
    /// The lease's id.
    pub lease: i64,
    /// Its TTL, in seconds.
    pub ttl_s: i64,
    /// When the grant was sent (µs since the run began).
    pub granted_call_us: u64,
    /// When the put of the key was acknowledged; `None`: not acknowledged (the lease is not
    /// checked: the key may never have been written).
    pub put_ret_us: Option<u64>,
    /// Keep-alives acknowledged with a positive TTL: (sent, acknowledged), µs.
    pub renewals: Vec<(u64, u64)>,
    /// Linearizable reads of the key: (call, return, present), µs.
    pub reads: Vec<(u64, u64, bool)>,
    /// When the client stopped keeping the lease alive; `None`: it never did (the run ended).
    pub stopped_us: Option<u64>,
    /// Whether the client watched for the key to vanish in the final, healed phase (then it
    /// must have vanished by `stopped_us + TTL + LEASE_EXPIRY_SLACK`).
    pub final_phase: bool,
}

impl LeaseRecord {
    /// The latest time the lease is promised to live until, in µs: the grant's call or the
    /// latest acknowledged renewal's send, plus the TTL.
    pub fn promised_until_us(&self) -> u64 {
        let from = self.renewals.iter().map(|r| r.0).max().unwrap_or(0).max(self.granted_call_us);
        from + self.ttl_s as u64 * 1_000_000
    }
}

/// Runs lease client `id` until `stop`, then lets its last lease go and watches its key vanish.
pub async fn run_lease_client(
    id: u64,
    members: Vec<Client>,
    seed: u64,
    op_timeout: Duration,
    recorder: Arc<Recorder>,
    records: Arc<Mutex<Vec<LeaseRecord>>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SimRng::new(seed ^ id.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x1EA5E);
    let mut members = members;
    let mut cycle = 0u64;
    let pick = |rng: &mut SimRng| rng.range(0, 3) as usize;
    while !stop.load(Ordering::Relaxed) {
        cycle += 1;
        let key = format!("lease/c{id}.{cycle}");
        let m = pick(&mut rng) % members.len();
        let granted_call_us = recorder.now_us();
        let grant = tokio::time::timeout(op_timeout, members[m].lease_grant(LEASE_TTL_S, None));
        let lease = match grant.await {
            Ok(Ok(g)) => g.id(),
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut record = LeaseRecord {
            client: id,
            key: key.clone(),
            lease,
            ttl_s: LEASE_TTL_S,
            granted_call_us,
            ..LeaseRecord::default()
        };
        let m = pick(&mut rng) % members.len();
        let put = members[m].put(key.as_str(), "leased", Some(PutOptions::new().with_lease(lease)));
        if let Ok(Ok(_)) = tokio::time::timeout(op_timeout, put).await {
            record.put_ret_us = Some(recorder.now_us());
        }
        // Keep it alive for 1 to 8 s (past its TTL), reading the key between renewals.
        let keep_until = recorder.now_us() + rng.range(1_000_000, 8_000_001);
        while recorder.now_us() < keep_until && !stop.load(Ordering::Relaxed) {
            let m = pick(&mut rng) % members.len();
            let sent = recorder.now_us();
            if keep_alive_once(&mut members[m], lease, op_timeout).await {
                record.renewals.push((sent, recorder.now_us()));
            }
            let m = pick(&mut rng) % members.len();
            read_key(&mut members[m], &key, op_timeout, &recorder, &mut record).await;
            tokio::time::sleep(KEEPALIVE_EVERY).await;
        }
        let final_phase = stop.load(Ordering::Relaxed);
        record.stopped_us = Some(recorder.now_us());
        record.final_phase = final_phase;
        // Let it go and read until the key is gone: TTL plus the slack, in the final phase (a
        // healed cluster, where that bound holds); a few seconds otherwise, then on to the next
        // lease (its key is looked at again in the final phase).
        let watch_for = if final_phase {
            Duration::from_secs(LEASE_TTL_S as u64) + LEASE_EXPIRY_SLACK
        } else {
            Duration::from_millis(rng.range(0, 4_000))
        };
        let until = recorder.now_us() + watch_for.as_micros() as u64;
        while recorder.now_us() < until {
            let m = pick(&mut rng) % members.len();
            if read_key(&mut members[m], &key, op_timeout, &recorder, &mut record).await
                == Some(false)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        records.lock().unwrap_or_else(|e| e.into_inner()).push(record);
    }
}

/// In the final phase: reads every recorded lease key that was not yet seen gone until it is,
/// for at most `patience`, so that leases let go mid-run are checked for expiry too.
pub async fn final_expiry_reads(
    client: &mut Client,
    records: &Mutex<Vec<LeaseRecord>>,
    op_timeout: Duration,
    recorder: &Recorder,
    patience: Duration,
) {
    let until = recorder.now_us() + patience.as_micros() as u64;
    let mut pending: Vec<usize> = {
        let records = records.lock().unwrap_or_else(|e| e.into_inner());
        (0..records.len())
            .filter(|&i| records[i].put_ret_us.is_some() && !seen_gone(&records[i]))
            .collect()
    };
    while !pending.is_empty() && recorder.now_us() < until {
        let mut still = Vec::new();
        for i in pending {
            let mut record = records.lock().unwrap_or_else(|e| e.into_inner())[i].clone();
            let gone = read_key(client, &record.key.clone(), op_timeout, recorder, &mut record)
                .await
                == Some(false);
            records.lock().unwrap_or_else(|e| e.into_inner())[i] = record;
            if !gone {
                still.push(i);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn seen_gone(record: &LeaseRecord) -> bool {
    record.reads.iter().any(|r| !r.2 && Some(r.0) > record.stopped_us)
}

/// One keep-alive on a fresh stream: whether it was acknowledged with a positive TTL.
async fn keep_alive_once(client: &mut Client, lease: i64, timeout: Duration) -> bool {
    let attempt = async {
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.ok()?;
        keeper.keep_alive().await.ok()?;
        let answer = stream.message().await.ok()??;
        Some(answer.ttl() > 0)
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten().unwrap_or(false)
}

/// A linearizable read of `key`, recorded if answered; returns whether it was present.
async fn read_key(
    client: &mut Client,
    key: &str,
    timeout: Duration,
    recorder: &Recorder,
    record: &mut LeaseRecord,
) -> Option<bool> {
    let call = recorder.now_us();
    let answer = tokio::time::timeout(timeout, client.get(key, None)).await.ok()?.ok()?;
    let present = !answer.kvs().is_empty();
    record.reads.push((call, recorder.now_us(), present));
    Some(present)
}

/// Checks the lease records (see the module doc): no key gone while its lease is promised, and
/// every let-go key gone in the healed final phase within `TTL + LEASE_EXPIRY_SLACK` of the
/// client letting it go (leases let go mid-run: by the end of the final reads).
pub fn check_leases(records: &[LeaseRecord]) -> Verdict {
    const NAME: &str = "leases";
    let mut problems = Vec::new();
    let (mut checked_reads, mut renewals, mut expired) = (0usize, 0usize, 0usize);
    for r in records {
        let Some(put_ret) = r.put_ret_us else { continue };
        renewals += r.renewals.len();
        let promised = r.promised_until_us();
        for &(call, ret, present) in &r.reads {
            if call <= put_ret {
                continue;
            }
            checked_reads += 1;
            if !present && ret < promised {
                problems.push(format!(
                    "{} (lease {:x}) read absent by {:.3} s, its lease was promised until {:.3} s \
                     ({} renewals acknowledged)",
                    r.key,
                    r.lease,
                    ret as f64 / 1e6,
                    promised as f64 / 1e6,
                    r.renewals.len()
                ));
            }
        }
        let Some(stopped) = r.stopped_us else { continue };
        let gone_at = r.reads.iter().filter(|x| !x.2 && x.0 > stopped).map(|x| x.1).min();
        let deadline =
            stopped + (r.ttl_s as u64) * 1_000_000 + LEASE_EXPIRY_SLACK.as_micros() as u64;
        match gone_at {
            Some(at) if r.final_phase && at > deadline => problems.push(format!(
                "{} (lease {:x}) let go at {:.3} s in the healed final phase was still there \
                 until {:.3} s (deadline {:.3} s)",
                r.key,
                r.lease,
                stopped as f64 / 1e6,
                at as f64 / 1e6,
                deadline as f64 / 1e6
            )),
            Some(_) => expired += 1,
            None => problems.push(format!(
                "{} (lease {:x}) let go at {:.3} s never vanished (last read at {:.3} s)",
                r.key,
                r.lease,
                stopped as f64 / 1e6,
                r.reads.last().map_or(0.0, |x| x.1 as f64 / 1e6)
            )),
        }
    }
    if problems.is_empty() {
        Verdict::pass(
            NAME,
            format!(
                "{} leases, {renewals} renewals acknowledged, {checked_reads} reads of a kept key, \
                 {expired} let-go keys vanished in time",
                records.iter().filter(|r| r.put_ret_us.is_some()).count()
            ),
        )
    } else {
        let shown: Vec<String> = problems.iter().take(5).cloned().collect();
        Verdict::fail(NAME, format!("{} problems: {}", problems.len(), shown.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Outcome;

    const S: u64 = 1_000_000;

    fn kept() -> LeaseRecord {
        LeaseRecord {
            client: 1,
            key: "lease/c1.1".into(),
            lease: 7,
            ttl_s: 3,
            granted_call_us: 0,
            put_ret_us: Some(S / 10),
            renewals: vec![(S, S + 1_000), (2 * S, 2 * S + 1_000)],
            reads: vec![(S / 2, S / 2 + 100, true), (4 * S, 4 * S + 100, true)],
            stopped_us: Some(4 * S),
            final_phase: true,
        }
    }

    #[test]
    fn a_kept_lease_that_expires_after_its_ttl_passes() {
        let mut r = kept();
        r.reads.push((6 * S, 6 * S + 100, false));
        let v = check_leases(&[r]);
        assert_eq!(v.outcome, Outcome::Pass, "{v:?}");
    }

    #[test]
    fn a_key_gone_while_its_lease_is_promised_fails() {
        // Renewed at 2 s with TTL 3 s: promised until 5 s, read absent at 4.5 s.
        let mut r = kept();
        r.reads.push((4 * S + S / 2, 4 * S + S / 2 + 100, false));
        let v = check_leases(&[r]);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("promised until 5.000"), "{v:?}");
        // A renewal acknowledged after the absent read: the lease was alive later.
        let mut r = kept();
        r.reads.push((S + S / 2, S + S / 2 + 100, false));
        r.renewals.push((3 * S, 3 * S + 10));
        assert_eq!(check_leases(&[r]).outcome, Outcome::Fail);
    }

    #[test]
    fn a_let_go_key_that_never_vanishes_or_vanishes_late_fails() {
        let never = kept();
        let v = check_leases(&[never]);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("never vanished"), "{v:?}");
        let mut late = kept();
        late.reads.push((20 * S, 20 * S + 100, false));
        let v = check_leases(&[late]);
        assert!(v.outcome == Outcome::Fail && v.detail.contains("still there"), "{v:?}");
    }

    #[test]
    fn an_unacknowledged_put_is_not_checked() {
        let mut r = kept();
        r.put_ret_us = None;
        r.reads.push((S + S / 2, S + S / 2 + 100, false));
        assert_eq!(check_leases(&[r]).outcome, Outcome::Pass);
    }
}
