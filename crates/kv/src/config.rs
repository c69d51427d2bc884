//! Limits of the state machine.
//!
//! Limits are checked while applying, so every replica of a cluster must run with the same
//! `Config`; changing one is a cluster-wide operation, like a format upgrade.

/// Limits, with etcd's defaults where etcd has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest encoded proposal accepted (etcd `--max-request-bytes`, default 1.5 MiB).
    pub request_bytes_max: usize,
    /// Most compares, and most ops per branch, of one transaction (etcd `--max-txn-ops`,
    /// default 128).
    pub txn_ops_max: usize,
    /// Most client sessions kept; beyond it the least recently used one is evicted.
    pub sessions_max: usize,
    /// A session idle for longer than this much log time expires (log time is what the
    /// caller passes to `apply`, e.g. the leader's clock in milliseconds when it proposed).
    pub session_idle_ms_max: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_bytes_max: 1536 * 1024,
            txn_ops_max: 128,
            sessions_max: 10_000,
            session_idle_ms_max: 3_600_000,
        }
    }
}

/// Why a [`Config`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `request_bytes_max` is 0.
    #[error("request_bytes_max must be positive")]
    RequestBytesMaxZero,
    /// `txn_ops_max` is 0.
    #[error("txn_ops_max must be positive")]
    TxnOpsMaxZero,
    /// `sessions_max` is 0.
    #[error("sessions_max must be positive")]
    SessionsMaxZero,
}

impl Config {
    /// Checks that every limit is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.request_bytes_max == 0 {
            return Err(ConfigError::RequestBytesMaxZero);
        }
        if self.txn_ops_max == 0 {
            return Err(ConfigError::TxnOpsMaxZero);
        }
        if self.sessions_max == 0 {
            return Err(ConfigError::SessionsMaxZero);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_zero_limits_are_not() {
        Config::default().validate().unwrap();
        let c = Config { txn_ops_max: 0, ..Config::default() };
        assert_eq!(c.validate(), Err(ConfigError::TxnOpsMaxZero));
    }
}
