//! The lease, lock and election subcommands: `tenure lease grant|revoke|keep-alive|timetolive|
//! list`, `tenure lock NAME [-- command]` and `tenure elect NAME [PROPOSAL]`, with etcdctl 3.4's
//! output (lease ids as 16 hexadecimal digits). They call the Lease, Lock and Election services,
//! so they work against tenure and etcd alike.
//!
//! `lock` and `elect` hold a lease of their own (`--ttl`, 60 s by default, as etcdctl's session)
//! and keep it alive for as long as they run, renewing every third of its TTL on one keep-alive
//! stream; when they finish (the command exited, Ctrl-C) they release the lock or resign, and
//! revoke the lease. A lock is safe only with its fencing token: the command gets the lock key
//! and its create revision in `ETCD_LOCK_KEY` and `ETCD_LOCK_REV`, and should guard every write
//! to the protected resource with that revision; a holder paused past its TTL has lost the lock
//! without knowing.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;

use crate::cli::client::{Authed, dial, endpoint_uri, log_in, with_retries};
use crate::cli::{ClientArgs, ElectArgs, LeaseCommand, LockArgs};
use crate::pb::etcdserverpb as pb;
use crate::pb::v3electionpb as epb;
use crate::pb::v3lockpb as lpb;
use pb::lease_client::LeaseClient;

/// A lease id as etcdctl prints it.
pub fn format_lease(id: i64) -> String {
    format!("{id:016x}")
}

/// `tenure lease ...`.
pub async fn lease(command: &LeaseCommand) -> anyhow::Result<String> {
    match command {
        LeaseCommand::Grant { ttl, client } => {
            let req = pb::LeaseGrantRequest { ttl: *ttl, id: 0 };
            let r =
                with_retries(
                    client,
                    |ch| async move { LeaseClient::new(ch).lease_grant(req).await },
                )
                .await
                .map_err(|e| anyhow!("failed to grant lease ({e})"))?;
            Ok(format!("lease {} granted with TTL({}s)\n", format_lease(r.id), r.ttl))
        }
        LeaseCommand::Revoke { id, client } => {
            let req = pb::LeaseRevokeRequest { id: *id };
            // etcdctl's wording around the server's error.
            with_retries(client, |ch| async move { LeaseClient::new(ch).lease_revoke(req).await })
                .await
                .map_err(|e| anyhow!("failed to revoke lease ({e})"))?;
            Ok(format!("lease {} revoked\n", format_lease(*id)))
        }
        LeaseCommand::Timetolive { id, keys, client } => {
            let req = pb::LeaseTimeToLiveRequest { id: *id, keys: *keys };
            let r = with_retries(client, |ch| async move {
                LeaseClient::new(ch).lease_time_to_live(req).await
            })
            .await?;
            Ok(format_time_to_live(&r, *keys))
        }
        LeaseCommand::List { client } => {
            let r = with_retries(client, |ch| async move {
                LeaseClient::new(ch).lease_leases(pb::LeaseLeasesRequest {}).await
            })
            .await?;
            let mut out = format!("found {} leases\n", r.leases.len());
            for l in &r.leases {
                out.push_str(&format_lease(l.id));
                out.push('\n');
            }
            Ok(out)
        }
        LeaseCommand::KeepAlive { id, once, client } => keep_alive(*id, *once, client).await,
    }
}

/// etcdctl's `lease timetolive` line.
pub fn format_time_to_live(r: &pb::LeaseTimeToLiveResponse, with_keys: bool) -> String {
    if r.ttl == -1 {
        return format!("lease {} already expired\n", format_lease(r.id));
    }
    let mut out = format!(
        "lease {} granted with TTL({}s), remaining({}s)",
        format_lease(r.id),
        r.granted_ttl,
        r.ttl
    );
    if with_keys {
        let keys: Vec<String> =
            r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        out.push_str(&format!(", attached keys([{}])", keys.join(" ")));
    }
    out.push('\n');
    out
}

/// Connects to the first endpoint that answers, with no deadline on requests: keep-alive
/// streams, Lock and Campaign wait as long as they must.
async fn connect_unbounded(args: &ClientArgs) -> anyhow::Result<Authed> {
    let login = args.credentials.login()?;
    let mut errors = Vec::new();
    for e in &args.endpoints {
        endpoint_uri(e)?;
        match dial(e, &args.tls, args.dial_timeout, |ep| ep).await {
            Ok(ch) => {
                let token =
                    log_in(&ch, login.as_ref()).await.map_err(|s| anyhow!("{}", s.message()))?;
                return Ok(InterceptedService::new(ch, token));
            }
            Err(err) => errors.push(err.to_string()),
        }
    }
    bail!("could not connect to any endpoint: {}", errors.join("; "))
}

/// Renews `id` on one stream every third of `ttl_secs` (but not more often than every 500 ms),
/// for as long as the returned handle lives. The receiver yields each
/// answer's TTL; it ends when the stream does, and a TTL of 0 or less means the lease is gone.
struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    ttls: mpsc::Receiver<Result<i64, tonic::Status>>,
}

impl KeepAlive {
    async fn start(ch: Authed, id: i64, ttl_secs: i64) -> anyhow::Result<KeepAlive> {
        let period = Duration::from_millis(u64::try_from(ttl_secs.max(1)).unwrap_or(1) * 1000 / 3)
            .max(Duration::from_millis(500));
        let (requests_tx, requests) = mpsc::channel(1);
        requests_tx.send(pb::LeaseKeepAliveRequest { id }).await.map_err(|_| anyhow!("closed"))?;
        let mut responses = LeaseClient::new(ch)
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(requests))
            .await
            .map_err(|s| anyhow!("{}", s.message()))?
            .into_inner();
        let (ttls_tx, ttls) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tokio::select! {
                    r = responses.message() => {
                        let item = match r {
                            Ok(Some(r)) => Ok(r.ttl),
                            Ok(None) => return,
                            Err(s) => Err(s),
                        };
                        let end = !matches!(item, Ok(ttl) if ttl > 0);
                        if ttls_tx.send(item).await.is_err() || end {
                            return;
                        }
                    }
                    _ = ticks.tick() => {
                        if requests_tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(KeepAlive { task, ttls })
    }

    /// Resolves when the lease is lost (expired, revoked, or the stream failed), with why.
    async fn lost(&mut self) -> String {
        loop {
            match self.ttls.recv().await {
                Some(Ok(ttl)) if ttl > 0 => continue,
                Some(Ok(_)) => return "expired or revoked".to_string(),
                Some(Err(s)) => return s.message().to_string(),
                None => return "keep-alive stream ended".to_string(),
            }
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `tenure lease keep-alive ID [--once]`: renews every third of the lease's granted TTL and
/// prints each answer, until the lease is gone.
async fn keep_alive(id: i64, once: bool, client: &ClientArgs) -> anyhow::Result<String> {
    let req = pb::LeaseTimeToLiveRequest { id, keys: false };
    let granted =
        with_retries(
            client,
            |ch| async move { LeaseClient::new(ch).lease_time_to_live(req).await },
        )
        .await?
        .granted_ttl;
    let ch = connect_unbounded(client).await?;
    let mut ka = KeepAlive::start(ch, id, granted).await?;
    loop {
        match ka.ttls.recv().await {
            Some(Ok(ttl)) if ttl > 0 => {
                let line = format!("lease {} keepalived with TTL({ttl})\n", format_lease(id));
                if once {
                    return Ok(line);
                }
                print(&line)?;
            }
            Some(Ok(_)) if once => bail!("etcdserver: requested lease not found"),
            Some(Ok(_)) => return Ok(format!("lease {} expired or revoked.\n", format_lease(id))),
            Some(Err(s)) => bail!("{}", s.message()),
            None => bail!("keep-alive stream ended"),
        }
    }
}

/// A lease of `ttl` for a lock or a campaign, kept alive while the handle lives.
async fn session(ch: &Authed, ttl: i64) -> anyhow::Result<(i64, KeepAlive)> {
    let r = LeaseClient::new(ch.clone())
        .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let ka = KeepAlive::start(ch.clone(), r.id, r.ttl).await?;
    Ok((r.id, ka))
}

/// Revokes the session's lease (which deletes the lock or candidate key with it).
async fn end_session(ch: &Authed, lease: i64) {
    let _ = LeaseClient::new(ch.clone()).lease_revoke(pb::LeaseRevokeRequest { id: lease }).await;
}

fn print(s: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|()| out.flush()).context("stdout")
}

/// `tenure lock NAME [-- command args...]`.
pub async fn lock(a: &LockArgs) -> anyhow::Result<String> {
    let ch = connect_unbounded(&a.client).await?;
    let (lease, mut ka) = session(&ch, a.ttl).await?;
    let req = lpb::LockRequest { name: Bytes::from(a.name.clone()), lease };
    let mut locks = lpb::lock_client::LockClient::new(ch.clone());
    let locked = tokio::select! {
        r = locks.lock(req) => r,
        why = ka.lost() => {
            end_session(&ch, lease).await;
            bail!("lease lost while waiting for the lock: {why}");
        }
        _ = tokio::signal::ctrl_c() => {
            end_session(&ch, lease).await;
            return Ok(String::new());
        }
    };
    let key = match locked {
        Ok(r) => r.into_inner().key,
        Err(s) => {
            end_session(&ch, lease).await;
            bail!("{}", s.message());
        }
    };
    // The fencing token: the lock key's create revision.
    let got = pb::kv_client::KvClient::new(ch.clone())
        .range(pb::RangeRequest { key: key.clone(), ..Default::default() })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?
        .into_inner();
    let Some(token) = got.kvs.first().map(|kv| kv.create_revision) else {
        end_session(&ch, lease).await;
        bail!("lock lost on init");
    };
    let key_text = String::from_utf8_lossy(&key).into_owned();
    let outcome = if a.command.is_empty() {
        // As etcdctl: the lock key and its (empty) value, as `get` prints them. With a
        // command, nothing but the command's own output (it gets the key in ETCD_LOCK_KEY).
        let value = got.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        print(&format!("{key_text}\n{}\n", value.unwrap_or_default()))?;
        tokio::select! {
            why = ka.lost() => Err(anyhow!("lock lost: lease {why}")),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    } else {
        let mut cmd = std::process::Command::new(&a.command[0]);
        cmd.args(&a.command[1..])
            .env("ETCD_LOCK_KEY", &key_text)
            .env("ETCD_LOCK_REV", token.to_string());
        let run = tokio::task::spawn_blocking(move || cmd.status());
        tokio::select! {
            status = run => match status.context("command task")? {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(anyhow!("{} {s}", a.command[0])),
                Err(e) => Err(anyhow!("{}: {e}", a.command[0])),
            },
            why = ka.lost() => Err(anyhow!("lock lost while {} ran: lease {why}", a.command[0])),
        }
    };
    let _ = lpb::lock_client::LockClient::new(ch.clone()).unlock(lpb::UnlockRequest { key }).await;
    end_session(&ch, lease).await;
    outcome.map(|()| String::new())
}

/// `tenure elect NAME [PROPOSAL]`.
pub async fn elect(a: &ElectArgs) -> anyhow::Result<String> {
    let ch = connect_unbounded(&a.client).await?;
    let mut election = epb::election_client::ElectionClient::new(ch.clone());
    let name = Bytes::from(a.name.clone());
    let Some(proposal) = &a.proposal else {
        // Observe: print every leader and proclamation until interrupted.
        let mut stream = election
            .observe(epb::LeaderRequest { name })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?
            .into_inner();
        loop {
            tokio::select! {
                r = stream.message() => match r.map_err(|s| anyhow!("{}", s.message()))? {
                    Some(r) => print(&format_leader(r.kv.as_ref()))?,
                    None => bail!("observing ended"),
                },
                _ = tokio::signal::ctrl_c() => return Ok(String::new()),
            }
        }
    };
    let (lease, mut ka) = session(&ch, a.ttl).await?;
    let req =
        epb::CampaignRequest { name: name.clone(), lease, value: Bytes::from(proposal.clone()) };
    let campaigned = tokio::select! {
        r = election.campaign(req) => r,
        why = ka.lost() => {
            end_session(&ch, lease).await;
            bail!("lease lost while campaigning: {why}");
        }
        _ = tokio::signal::ctrl_c() => {
            end_session(&ch, lease).await;
            return Ok(String::new());
        }
    };
    let leader = match campaigned {
        Ok(r) => r.into_inner().leader,
        Err(s) => {
            end_session(&ch, lease).await;
            bail!("{}", s.message());
        }
    };
    let key = leader.as_ref().map(|l| String::from_utf8_lossy(&l.key).into_owned());
    print(&format!("{}\n{proposal}\n", key.unwrap_or_default()))?;
    let outcome = tokio::select! {
        why = ka.lost() => Err(anyhow!("leadership lost: lease {why}")),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    let _ = election.resign(epb::ResignRequest { leader }).await;
    end_session(&ch, lease).await;
    outcome.map(|()| String::new())
}

/// A leader as etcdctl prints a key-value: the key, then the value, one line each.
fn format_leader(kv: Option<&crate::pb::mvccpb::KeyValue>) -> String {
    match kv {
        Some(kv) => format!(
            "{}\n{}\n",
            String::from_utf8_lossy(&kv.key),
            String::from_utf8_lossy(&kv.value)
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_output_is_etcdctls() {
        assert_eq!(format_lease(0x694d_6368_b4ed_c60e), "694d6368b4edc60e");
        assert_eq!(format_lease(5), "0000000000000005");
        let r = pb::LeaseTimeToLiveResponse {
            id: 5,
            ttl: 481,
            granted_ttl: 500,
            keys: vec![Bytes::from("foo"), Bytes::from("bar")],
            ..Default::default()
        };
        assert_eq!(
            format_time_to_live(&r, true),
            "lease 0000000000000005 granted with TTL(500s), remaining(481s), attached keys([foo bar])\n"
        );
        assert_eq!(
            format_time_to_live(&r, false),
            "lease 0000000000000005 granted with TTL(500s), remaining(481s)\n"
        );
        let gone = pb::LeaseTimeToLiveResponse { id: 0x1234, ttl: -1, ..Default::default() };
        assert_eq!(format_time_to_live(&gone, true), "lease 0000000000001234 already expired\n");
    }
}
