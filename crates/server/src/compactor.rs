//! Automatic compaction (etcd's `--auto-compaction-mode` and `--auto-compaction-retention`).
//!
//! Only the leader compacts, through the log like any client's `Compact`, so every member drops
//! the same history at the same revision; a member that loses leadership stops and the new
//! leader starts from its own observations.
//!
//! - **periodic** (etcd's `compactor.Periodic`): keeps at least the retention's worth of
//!   history. The revision is sampled every tenth of the retention (at most every 6 minutes)
//!   and, every retention (at most every hour), the history is compacted at the revision
//!   sampled one retention ago.
//! - **revision** (etcd's `compactor.Revision`): keeps the last N revisions. Every check
//!   interval (etcd's 5 minutes) the history is compacted at `current revision - N` if that is
//!   past the last compaction.

use std::collections::VecDeque;
use std::time::Duration;

use tenure_kv::{Command, CompactionRequest, Proposal};
use tokio::time::Instant;

use crate::runtime::RuntimeHandle;

/// etcd's revision compactor checks every 5 minutes.
pub const REVISION_CHECK_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// What automatic compaction keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep at least this much time of history (> 0).
    Periodic(Duration),
    /// Keep the last `keep` revisions (> 0), checking every `check_interval`.
    Revision {
        /// Revisions kept.
        keep: i64,
        /// How often the revision is checked ([`REVISION_CHECK_INTERVAL`] unless a test
        /// shortens it).
        check_interval: Duration,
    },
}

impl AutoCompaction {
    /// Reads the flags as etcd does: mode `periodic` (the default) or `revision`; in periodic
    /// mode the retention is a bare number of hours or a duration (`30m`, `1h30m`), in
    /// revision mode a number of revisions; 0 or no retention turns compaction off (`None`).
    /// Errors carry etcd's messages.
    pub fn from_flags(
        mode: Option<&str>,
        retention: Option<&str>,
    ) -> Result<Option<AutoCompaction>, String> {
        let mode = mode.unwrap_or("periodic");
        let retention = retention.unwrap_or("0").trim();
        let hours = retention.parse::<i64>();
        match mode {
            "periodic" => {
                let period = match hours {
                    Ok(h) if h >= 0 => Duration::from_secs(
                        u64::try_from(h).expect("not negative").saturating_mul(3600),
                    ),
                    Ok(_) => return Err(invalid_retention(retention)),
                    Err(_) => crate::cli::parse_duration(retention)
                        .map_err(|_| invalid_retention(retention))?,
                };
                Ok((!period.is_zero()).then_some(AutoCompaction::Periodic(period)))
            }
            "revision" => match hours {
                Ok(0) => Ok(None),
                Ok(keep) if keep > 0 => Ok(Some(AutoCompaction::Revision {
                    keep,
                    check_interval: REVISION_CHECK_INTERVAL,
                })),
                _ => Err(invalid_retention(retention)),
            },
            other => Err(format!("unknown auto-compaction-mode {other:?}")),
        }
    }
}

fn invalid_retention(retention: &str) -> String {
    format!("invalid auto-compaction-retention {retention:?}")
}

/// Runs automatic compaction for the member behind `runtime` until it stops.
pub async fn run(runtime: RuntimeHandle, name: String, mode: AutoCompaction) {
    match mode {
        AutoCompaction::Periodic(period) => periodic(runtime, name, period).await,
        AutoCompaction::Revision { keep, check_interval } => {
            revision(runtime, name, keep, check_interval).await;
        }
    }
}

/// etcd's periodic compactor: the sample interval is a tenth of `min(period, 1h)`.
async fn periodic(runtime: RuntimeHandle, name: String, period: Duration) {
    let compact_interval = period.min(Duration::from_secs(3600));
    let sample_interval = (compact_interval / 10).max(Duration::from_millis(1));
    // (when, revision) samples, oldest first, covering at most one period.
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut next_compaction = Instant::now() + compact_interval;
    let mut last_compacted = 0;
    loop {
        let status = runtime.status();
        if status.stopped {
            return;
        }
        if !status.is_leader {
            // Start over on becoming leader: this member's samples are its own.
            samples.clear();
            next_compaction = Instant::now() + compact_interval;
        } else {
            let now = Instant::now();
            samples.push_back((now, status.revision));
            // The newest sample at least one period old is where to compact; older ones are
            // no longer needed.
            while samples.len() > 1 && now.duration_since(samples[1].0) >= period {
                samples.pop_front();
            }
            if now >= next_compaction {
                next_compaction = now + compact_interval;
                if let Some(&(at, revision)) = samples.front()
                    && now.duration_since(at) >= period
                    && revision > last_compacted
                    && compact(&runtime, &name, revision).await
                {
                    last_compacted = revision;
                }
            }
        }
        tokio::time::sleep(sample_interval).await;
    }
}

/// etcd's revision compactor.
async fn revision(runtime: RuntimeHandle, name: String, keep: i64, interval: Duration) {
    let mut last_compacted = 0;
    loop {
        tokio::time::sleep(interval).await;
        let status = runtime.status();
        if status.stopped {
            return;
        }
        let target = status.revision - keep;
        if status.is_leader
            && target > last_compacted
            && target > 0
            && compact(&runtime, &name, target).await
        {
            last_compacted = target;
        }
    }
}

/// Proposes a compaction at `revision`; whether it was applied (or had been already).
async fn compact(runtime: &RuntimeHandle, name: &str, revision: i64) -> bool {
    let proposal = Proposal::new(Command::Compact(CompactionRequest { revision, physical: false }));
    let Ok(rx) = runtime.propose(proposal) else {
        return false;
    };
    match rx.await {
        Ok(Ok(_)) => {
            tracing::info!("{name}: auto-compaction compacted the history at revision {revision}");
            true
        }
        Ok(Err(tenure_replica::ClientError::Kv(tenure_kv::Error::Compacted))) => true,
        Ok(Err(e)) => {
            tracing::warn!("{name}: auto-compaction at revision {revision} failed: {e}");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_as_etcd_reads_them() {
        let p = |m: Option<&str>, r: Option<&str>| AutoCompaction::from_flags(m, r);
        assert_eq!(p(None, None), Ok(None));
        assert_eq!(p(None, Some("0")), Ok(None));
        assert_eq!(
            p(None, Some("1")),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(3600))))
        );
        assert_eq!(
            p(Some("periodic"), Some("30m")),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(1800))))
        );
        assert_eq!(
            p(Some("revision"), Some("1000")),
            Ok(Some(AutoCompaction::Revision {
                keep: 1000,
                check_interval: REVISION_CHECK_INTERVAL
            }))
        );
        assert_eq!(p(Some("revision"), Some("0")), Ok(None));
        assert!(p(Some("revision"), Some("1h")).is_err());
        assert!(p(Some("periodic"), Some("-1")).is_err());
        assert!(p(Some("periodic"), Some("soon")).is_err());
        assert_eq!(
            p(Some("hourly"), Some("1")),
            Err("unknown auto-compaction-mode \"hourly\"".into())
        );
    }
}
