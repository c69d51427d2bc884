//! What the simulated clients did: one [`HistOp`] per operation, with its call and return
//! times, for the linearizability checker.

/// The operation and what it observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A linearizable read; `value` is what was read (`None`: absent).
    Read {
        /// The value read.
        value: Option<String>,
    },
    /// A put.
    Write {
        /// The value written.
        value: String,
    },
    /// Compare-and-swap: put `value` if the key holds `expected`.
    Cas {
        /// The value the key must hold.
        expected: String,
        /// The value to write.
        value: String,
    },
}

impl OpKind {
    /// Whether the operation may change state.
    pub fn is_write(&self) -> bool {
        !matches!(self, OpKind::Read { .. })
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It took effect (for a read: it read `value`).
    Ok,
    /// It certainly did not take effect (for a compare-and-swap: the comparison failed).
    Fail,
    /// Unknown: it may have taken effect at any point after its call.
    Info,
}

/// One client operation, from call to return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistOp {
    /// The client.
    pub client: u64,
    /// The key.
    pub key: String,
    /// What it did.
    pub kind: OpKind,
    /// When the client issued it (simulated milliseconds).
    pub call: u64,
    /// When it returned; `None` for an unknown outcome.
    pub ret: Option<u64>,
    /// How it ended.
    pub status: Status,
}
