//! The `lease-keepalive` workload: grants, renewals over keep-alive streams, revokes.

use super::*;

/// The error name of a renewal answered with a TTL of 0 or less: the lease is gone.
pub const LEASE_EXPIRED: &str = "LeaseExpired";
/// The error name of a renewal answered for a lease other than the one renewed.
pub const WRONG_LEASE: &str = "WrongLease";

/// How many grants or revokes are in flight at once, at most (and at most `--clients`).
pub(super) const LEASE_SETUP_CONCURRENCY_MAX: u64 = 256;

/// The leases of a `lease-keepalive` run, granted.
pub(super) struct GrantedLeases {
    /// Their ids, in the order renewals go round.
    pub(super) ids: Arc<[i64]>,
    /// The smallest TTL a grant was answered with.
    pub(super) ttl_min: i64,
    /// Time to grant them all.
    pub(super) elapsed: Duration,
}

/// Grants every lease with server-chosen ids, spread over the connections; a grant refused
/// with `Unavailable` (no leader yet) is tried again until `--request-timeout` runs out, any
/// other failure ends the run.
pub(super) async fn grant_leases(
    plan: &Plan,
    l: LeasePlan,
    channels: &[Conn],
) -> anyhow::Result<GrantedLeases> {
    use pb::lease_client::LeaseClient;
    let started = Instant::now();
    let ttl = i64::try_from(l.ttl_seconds).expect("--ttl is at most 9e9");
    let workers = plan.clients.min(LEASE_SETUP_CONCURRENCY_MAX).min(l.leases);
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let mut client = LeaseClient::new(channels[(w % plan.conns) as usize].clone());
            let next = next.clone();
            let timeout = plan.request_timeout;
            tokio::spawn(async move {
                let mut granted = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < l.leases {
                    let deadline = tokio::time::Instant::now() + timeout;
                    loop {
                        let request = pb::LeaseGrantRequest { ttl, id: 0 };
                        match tokio::time::timeout_at(deadline, client.lease_grant(request)).await {
                            Ok(Ok(r)) if r.get_ref().error.is_empty() => {
                                let r = r.into_inner();
                                granted.push((r.id, r.ttl));
                                break;
                            }
                            Ok(Ok(r)) => bail!("cannot grant a lease: {}", r.get_ref().error),
                            Ok(Err(s)) if s.code() == tonic::Code::Unavailable => {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Ok(Err(s)) => bail!("cannot grant a lease: {}", s.message()),
                            Err(_) => bail!("cannot grant a lease: request timeout"),
                        }
                    }
                }
                Ok(granted)
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut ttl_min = i64::MAX;
    for t in tasks {
        for (id, ttl) in t.await.context("a grant task failed")?? {
            ids.push(id);
            ttl_min = ttl_min.min(ttl);
        }
    }
    assert_eq!(ids.len() as u64, l.leases, "every lease granted once");
    Ok(GrantedLeases { ids: ids.into(), ttl_min, elapsed: started.elapsed() })
}

/// Revokes every lease, best effort: answers how many were revoked and how many failed.
pub(super) async fn revoke_leases(plan: &Plan, ids: &Arc<[i64]>, channels: &[Conn]) -> (u64, u64) {
    use pb::lease_client::LeaseClient;
    let workers = plan.clients.min(LEASE_SETUP_CONCURRENCY_MAX).min(ids.len() as u64);
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let mut client = LeaseClient::new(channels[(w % plan.conns) as usize].clone());
            let (next, ids) = (next.clone(), ids.clone());
            let timeout = plan.request_timeout;
            tokio::spawn(async move {
                let (mut revoked, mut failed) = (0, 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(&id) = ids.get(i) else { break };
                    let request = pb::LeaseRevokeRequest { id };
                    match tokio::time::timeout(timeout, client.lease_revoke(request)).await {
                        Ok(Ok(_)) => revoked += 1,
                        _ => failed += 1,
                    }
                }
                (revoked, failed)
            })
        })
        .collect();
    let (mut revoked, mut failed) = (0, 0);
    for t in tasks {
        let (r, f) = t.await.unwrap_or((0, 0));
        revoked += r;
        failed += f;
    }
    // Leases a panicked task never reached count as failed.
    failed = failed.max(ids.len() as u64 - revoked);
    (revoked, failed)
}

/// A client's `LeaseKeepAlive` stream: requests go in through `requests` (room for one),
/// answers come out of `responses`.
pub(super) struct KeepAliveStream {
    requests: tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
}

/// Renews lease `id` on `stream`, opening one first if there is none, and answers the
/// server's answer. The stream is kept for the next renewal only once this one is answered:
/// after a failure, or if this future is dropped (a timeout), the next renewal opens a new
/// stream, so that a late answer is never taken for the next renewal's.
pub(super) async fn renew(
    client: &mut pb::lease_client::LeaseClient<Conn>,
    stream: &mut Option<KeepAliveStream>,
    id: i64,
) -> Result<pb::LeaseKeepAliveResponse, tonic::Status> {
    let request = pb::LeaseKeepAliveRequest { id };
    let mut s = match stream.take() {
        Some(s) => {
            s.requests
                .send(request)
                .await
                .map_err(|_| tonic::Status::unavailable("the keep-alive stream closed"))?;
            s
        }
        None => {
            // The first request goes in before the call: a server may send the stream's
            // headers only with its first answer (etcd does), and the call waits for them.
            let (requests, rx) = tokio::sync::mpsc::channel(1);
            requests.try_send(request).expect("a new channel has room for one");
            let rx = tokio_stream::wrappers::ReceiverStream::new(rx);
            let responses = client.lease_keep_alive(rx).await?.into_inner();
            KeepAliveStream { requests, responses }
        }
    };
    match s.responses.message().await? {
        Some(r) => {
            *stream = Some(s);
            Ok(r)
        }
        None => Err(tonic::Status::unavailable("the keep-alive stream ended")),
    }
}

/// What a renewal of `id` answered means: a renewal, or an error (see [`LEASE_EXPIRED`] and
/// [`WRONG_LEASE`]).
pub(super) fn renewal_outcome(id: i64, r: &pb::LeaseKeepAliveResponse) -> Result<(), &'static str> {
    if r.id != id {
        Err(WRONG_LEASE)
    } else if r.ttl <= 0 {
        Err(LEASE_EXPIRED)
    } else {
        Ok(())
    }
}

/// One closed-loop `lease-keepalive` client: request `n` renews lease `n mod leases` on the
/// client's own stream, one renewal in flight.
pub(super) async fn lease_client_loop(
    shared: Arc<Shared>,
    channel: Conn,
    ids: Arc<[i64]>,
) -> Tally {
    let plan = &shared.plan;
    let mut client = pb::lease_client::LeaseClient::new(channel);
    let mut stream = None;
    let mut tally = Tally::new();
    while let Some(n) = shared.claim() {
        let id = ids[(n % ids.len() as u64) as usize];
        let started = Instant::now();
        let outcome =
            match tokio::time::timeout(plan.request_timeout, renew(&mut client, &mut stream, id))
                .await
            {
                Ok(Ok(r)) => renewal_outcome(id, &r).map_err(str::to_string),
                Ok(Err(status)) => Err(format!("{:?}", status.code())),
                Err(_) => Err(format!("{:?}", tonic::Code::DeadlineExceeded)),
            };
        let micros = started.elapsed().as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
        match outcome {
            Ok(()) => {
                tally.latencies.saturating_record(micros.max(1));
                *tally.counts.entry("renew".to_string()).or_default() += 1;
                shared.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Err(name) => {
                *tally.errors.entry(name).or_default() += 1;
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.answered.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench::tests::plan;

    #[test]
    fn a_renewal_answered_with_ttl_0_or_for_another_lease_is_an_error_and_exit_code_1() {
        let answer = |id, ttl| pb::LeaseKeepAliveResponse { header: None, id, ttl };
        assert_eq!(renewal_outcome(7, &answer(7, 60)), Ok(()));
        assert_eq!(renewal_outcome(7, &answer(7, 0)), Err(LEASE_EXPIRED));
        assert_eq!(renewal_outcome(7, &answer(7, -1)), Err(LEASE_EXPIRED));
        assert_eq!(renewal_outcome(7, &answer(8, 60)), Err(WRONG_LEASE));

        let p = plan(&["lease-keepalive", "--leases", "2", "--total", "3"]).unwrap();
        let mut t = Tally::new();
        t.latencies.record(1000).unwrap();
        t.counts.insert("renew".into(), 1);
        assert_eq!(Report::new(&p, Duration::from_secs(1), &t).failure(), None);
        // Other errors (a member down, a timeout) are counted, not a failed run, as for the
        // other workloads.
        t.errors.insert("Unavailable".into(), 1);
        assert_eq!(Report::new(&p, Duration::from_secs(1), &t).failure(), None);
        for name in [LEASE_EXPIRED, WRONG_LEASE] {
            let mut bad = t.clone();
            bad.errors.insert(name.into(), 1);
            let r = Report::new(&p, Duration::from_secs(1), &bad);
            assert!(r.failure().is_some_and(|why| why.contains("TTL 0")), "{name}");
            assert!(r.to_text().contains(&format!("{name} 1")), "{}", r.to_text());
        }
    }
}
