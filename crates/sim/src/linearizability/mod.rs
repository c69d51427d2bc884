//! A linearizability checker for histories of a replicated key-value store.
//!
//! The search is the one of Wing & Gong (1993) as refined by Lowe (2017) and by Horn & Kroening
//! ("Faster linearizability checking via P-compositionality", 2015), which Porcupine implements:
//! walk the history in call/return order, try to linearize a pending operation, backtrack when a
//! return is reached with its operation still unplaced, and remember every (set of linearized
//! operations, register state) pair already explored so that no configuration is searched twice.
//!
//! Linearizability is *local* (Herlihy & Wing 1990, Theorem 1): a history over many registers is
//! linearizable if and only if the sub-history of every register is. [`check`] therefore splits
//! the history per key and checks each key on its own, smallest first, which keeps the search
//! space of a realistic history (thousands of operations, tens of clients) small. Within a key,
//! a quick proof catches stale reads before any search, and the search places reads eagerly and
//! cuts branches that strand a value some read still needs (see `search`), so that even one
//! register shared by fifty clients is decided in milliseconds.
//!
//! Module map:
//! - this file: the history types ([`Operation`], [`OpKind`], [`Status`]), the verdict
//!   ([`CheckResult`], [`Violation`]) and [`check`];
//! - `model`: the sequential specification of one register (read, write, cas, append) over
//!   interned values;
//! - `overwritten`: a quick proof of a stale read, tried before the search;
//! - `search`: the memoized backtracking search over one key;
//! - [`generate`]: a seeded generator of histories that are linearizable by construction, for
//!   tests and benchmarks.
//!
//! The checker never runs unbounded: it reads the clock every thousand search steps and answers
//! [`CheckResult::Unknown`] once the time bound has passed, or once the memo of explored
//! configurations of one key would outgrow [`MEMO_BYTES_MAX`].

pub mod generate;
mod model;
mod overwritten;
mod search;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use model::{Interner, StateId};
use search::{KeyOp, KeyOutcome};

/// One client operation as observed from outside the store: what was asked, what came back and
/// when.
///
/// `call` and `ret` are instants on one clock shared by all clients (any unit). Intervals are
/// closed: an operation that returns at `t` is concurrent with one called at `t`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued the operation; used only in explanations.
    pub client: u64,
    /// The key the operation touches; `None` for a history over one single register.
    pub key: Option<String>,
    /// What the operation did and, for reads, what it saw.
    pub kind: OpKind,
    /// When the client sent the request.
    pub call: u64,
    /// When the client received the response. Required for [`Status::Ok`] and [`Status::Fail`];
    /// ignored for [`Status::Info`], whose effect may land at any time after `call`.
    pub ret: Option<u64>,
    /// How the operation ended.
    pub status: Status,
}

/// The operations of the register model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Read the register; `value` is what was read, `None` if the key was absent.
    Read {
        /// The value observed.
        value: Option<String>,
    },
    /// Overwrite the register.
    Write {
        /// The value written.
        value: String,
    },
    /// Compare-and-swap: if the register holds `expected` (`None`: the key is absent), set it to
    /// `value`. With [`Status::Ok`] the swap happened; with [`Status::Fail`] the comparison did
    /// not match and nothing was written.
    Cas {
        /// The value the register had to hold for the swap.
        expected: Option<String>,
        /// The value written when the comparison matched.
        value: String,
    },
    /// Append `value` to the current value (an absent key counts as the empty string).
    Append {
        /// The suffix appended.
        value: String,
    },
}

/// How an operation ended, in Jepsen's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The operation took effect, once, between `call` and `ret`.
    Ok,
    /// For a cas: the comparison did not match, and nothing was written. For any other
    /// operation: it certainly did not take effect, so the checker drops it.
    Fail,
    /// The outcome is unknown (a timeout, a lost connection): the operation may have taken
    /// effect at any point after `call`, even after the client gave up, or never. A read with
    /// this status says nothing and is dropped.
    Info,
}

/// The verdict of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key's history has a linearization.
    Linearizable,
    /// Some key's history has none; the violation describes the smallest such key.
    NotLinearizable(Box<Violation>),
    /// The time bound ran out before every key was decided, and no key was found to be
    /// non-linearizable in the time given.
    Unknown {
        /// Which bound stopped the search.
        limit: Limit,
        /// The key whose search was cut short.
        key: Option<String>,
        /// How many keys had been decided (all linearizable) when time ran out.
        keys_decided: usize,
        /// How many keys the history has.
        keys_total: usize,
    },
}

/// The bound that cut a search short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The time given to [`check`] ran out.
    Time,
    /// The memo of one key's search reached [`MEMO_BYTES_MAX`].
    Memory,
}

/// How large the memo of explored configurations of one key may grow (approximately, in
/// bytes) before the search gives up with [`Limit::Memory`]. A hard history exhausts memory
/// long before it exhausts a time bound of a minute.
pub const MEMO_BYTES_MAX: usize = 1 << 30;

/// How long, at most, the second search that looks for a better explanation of a violation may
/// take (see `check_key`); past it the first search's explanation is reported.
const EXPLAIN_TIME_MAX: Duration = Duration::from_secs(2);

/// The memory bound of that second search, smaller than [`MEMO_BYTES_MAX`]: it only improves
/// an explanation.
const EXPLAIN_MEMO_BYTES_MAX: usize = 64 << 20;

/// Why one key's history is not linearizable, as far as the search can tell.
///
/// The search reports the longest prefix it managed to linearize, the register value after that
/// prefix, and the operations that had to come next (every operation called before the earliest
/// pending return) together with why none of them could be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The failing key. When several keys fail, the one with the fewest operations (then the
    /// smallest name) is reported.
    pub key: Option<String>,
    /// How many operations of this key took part in the search (after dropping failed writes
    /// and reads with unknown outcome).
    pub key_op_count: usize,
    /// Indices into the checked history of the longest linearizable prefix found, in
    /// linearization order.
    pub linearized: Vec<usize>,
    /// The register value after that prefix (`None`: absent).
    pub state: Option<String>,
    /// The last few operations of that prefix (at most [`Violation::CONTEXT_OPS`]), with their
    /// indices, for the explanation.
    pub context: Vec<(usize, Operation)>,
    /// The operations that had to be linearized next, none of which could be. Empty when only
    /// the quick proof in `stale_read` found the violation and the search for a longest prefix
    /// ran out of its (small) budget.
    pub stuck: Vec<StuckOp>,
    /// A read that cannot have seen its value, if the quick check before the search found one.
    pub stale_read: Option<StaleRead>,
}

/// A read (or successful cas) that saw a value which every operation that could have written
/// it had, in real time, been overwritten before the read was called.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleRead {
    /// The read's index in the checked history, and the read.
    pub read: (usize, Operation),
    /// Each possible source of the value read, and what rules it out. Empty if no operation
    /// writes the value or, on a key with appends, no writes and appends can build it.
    pub sources: Vec<RuledOutSource>,
}

/// A possible source of a value read, ruled out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuledOutSource {
    /// The operation that could have set the value (with its index), or `None` for the initial
    /// absent state.
    pub source: Option<(usize, Operation)>,
    /// The acknowledged operation called after `source` returned and returned before the read
    /// was called, which set another value; `None` if `source` was called only after the read
    /// returned.
    pub overwritten_by: Option<(usize, Operation)>,
}

impl Violation {
    /// How many operations of the linearized prefix an explanation shows.
    pub const CONTEXT_OPS: usize = 8;
}

/// An operation that could not be placed after the longest linearizable prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckOp {
    /// Its index in the checked history.
    pub index: usize,
    /// The operation itself.
    pub op: Operation,
    /// Why it could not go next.
    pub reason: StuckReason,
}

/// Why a pending operation could not be linearized next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StuckReason {
    /// Applying it to the register is impossible: a read saw another value, a successful cas
    /// expected another value, or a failed cas found exactly the value it expected.
    Illegal {
        /// What the register held at that point (`None`: absent).
        held: Option<String>,
    },
    /// It can be applied, but every continuation after it fails.
    DeadEnd,
}

/// A history that cannot be checked because it is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// An operation with status `ok` or `fail` has no return time.
    #[error("operation {index} has status {status:?} but no return time")]
    MissingReturn {
        /// Index of the operation in the history.
        index: usize,
        /// Its status.
        status: Status,
    },
    /// An operation returned before it was called.
    #[error("operation {index} returns at {ret}, before its call at {call}")]
    ReturnBeforeCall {
        /// Index of the operation in the history.
        index: usize,
        /// Its call time.
        call: u64,
        /// Its return time.
        ret: u64,
    },
}

/// Checks whether `history` is linearizable with respect to a map of independent registers.
///
/// Each key is checked on its own, smallest history first; the first key found not linearizable
/// is reported. Search stops and the answer is [`CheckResult::Unknown`] once `timeout` has
/// passed (measured from the call).
///
/// # Errors
/// [`HistoryError`] if an `ok`/`fail` operation lacks a return time or returns before its call.
pub fn check(history: &[Operation], timeout: Duration) -> Result<CheckResult, HistoryError> {
    let deadline = Instant::now().checked_add(timeout);
    validate(history)?;

    // BTreeMap: the order keys are checked in (and so which violation is reported) must not
    // depend on hashing.
    let mut partitions: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        partitions.entry(op.key.as_deref()).or_default().push(index);
    }
    let mut order: Vec<(Option<&str>, Vec<usize>)> = partitions.into_iter().collect();
    // Smallest first: a violation in a small key is found sooner and explained more briefly.
    // The sort is stable, so ties stay in key order.
    order.sort_by_key(|(_, indices)| indices.len());

    let keys_total = order.len();
    for (keys_decided, (key, indices)) in order.into_iter().enumerate() {
        match check_key(history, &indices, deadline) {
            KeyVerdict::Linearizable => {}
            KeyVerdict::GaveUp(limit) => {
                return Ok(CheckResult::Unknown {
                    limit,
                    key: key.map(str::to_owned),
                    keys_decided,
                    keys_total,
                });
            }
            KeyVerdict::Violation(violation) => {
                return Ok(CheckResult::NotLinearizable(violation));
            }
        }
    }
    Ok(CheckResult::Linearizable)
}

fn validate(history: &[Operation]) -> Result<(), HistoryError> {
    for (index, op) in history.iter().enumerate() {
        match (op.status, op.ret) {
            (Status::Ok | Status::Fail, None) => {
                return Err(HistoryError::MissingReturn { index, status: op.status });
            }
            (_, Some(ret)) if ret < op.call => {
                return Err(HistoryError::ReturnBeforeCall { index, call: op.call, ret });
            }
            _ => {}
        }
    }
    Ok(())
}

enum KeyVerdict {
    Linearizable,
    GaveUp(Limit),
    Violation(Box<Violation>),
}

/// Checks the operations `indices` of `history`, which all touch one key.
fn check_key(history: &[Operation], indices: &[usize], deadline: Option<Instant>) -> KeyVerdict {
    let mut interner = Interner::default();
    let mut ops = Vec::with_capacity(indices.len());
    for &index in indices {
        let op = &history[index];
        if let Some(step) = interner.step_of(op) {
            let ret = match op.status {
                // An unknown outcome may take effect after the client stopped waiting.
                Status::Info => u64::MAX,
                Status::Ok | Status::Fail => op.ret.expect("validated: ok/fail ops have a return"),
            };
            ops.push(KeyOp { history_index: index, call: op.call, ret, step });
        }
    }
    let key_op_count = ops.len();
    let indexed = |op: usize| {
        let index = ops[op].history_index;
        (index, history[index].clone())
    };
    let proof = overwritten::stale_read(&ops, deadline)
        .or_else(|| overwritten::unproducible_read(&ops, &interner));
    let stale_read = proof.map(|proof| StaleRead {
        read: indexed(proof.reader),
        sources: proof
            .sources
            .iter()
            .map(|&(source, overwriter)| RuledOutSource {
                source: source.map(indexed),
                overwritten_by: overwriter.map(indexed),
            })
            .collect(),
    });
    let failure = if stale_read.is_some() {
        (Vec::new(), StateId::ABSENT)
    } else {
        match search::linearize(&ops, &mut interner, deadline, true, MEMO_BYTES_MAX) {
            KeyOutcome::Linearizable => return KeyVerdict::Linearizable,
            KeyOutcome::GaveUp(limit) => return KeyVerdict::GaveUp(limit),
            KeyOutcome::NotLinearizable { longest, state } => (longest, state),
        }
    };
    // The fast search proves the violation but may stop its prefixes early; search again
    // without the pruning for the longest prefix, if time allows, to explain it.
    let explain_deadline = Instant::now().checked_add(EXPLAIN_TIME_MAX);
    let explain_deadline = match (deadline, explain_deadline) {
        (Some(deadline), Some(explain)) => Some(deadline.min(explain)),
        (deadline, explain) => deadline.or(explain),
    };
    let explained =
        search::linearize(&ops, &mut interner, explain_deadline, false, EXPLAIN_MEMO_BYTES_MAX);
    let (longest, state, stuck) = match explained {
        KeyOutcome::NotLinearizable { longest, state } => (longest, state, true),
        // The quick proof alone explains it better than the operations that could start.
        KeyOutcome::GaveUp(_) if stale_read.is_some() => (Vec::new(), StateId::ABSENT, false),
        KeyOutcome::GaveUp(_) => (failure.0, failure.1, true),
        KeyOutcome::Linearizable => {
            panic!("checker contradicts itself: a violation was proven, then a linearization found")
        }
    };
    let linearized: Vec<usize> = longest.iter().map(|&i| ops[i].history_index).collect();
    let context = linearized[linearized.len().saturating_sub(Violation::CONTEXT_OPS)..]
        .iter()
        .map(|&index| (index, history[index].clone()))
        .collect();
    let stuck =
        if stuck { search::stuck_after(&ops, &longest, state, &mut interner) } else { vec![] };
    let stuck = stuck
        .into_iter()
        .map(|(i, illegal)| {
            let index = ops[i].history_index;
            StuckOp {
                index,
                op: history[index].clone(),
                reason: if illegal {
                    StuckReason::Illegal { held: interner.value(state).map(str::to_owned) }
                } else {
                    StuckReason::DeadEnd
                },
            }
        })
        .collect();
    KeyVerdict::Violation(Box::new(Violation {
        key: indices.first().and_then(|&i| history[i].key.clone()),
        key_op_count,
        linearized,
        state: interner.value(state).map(str::to_owned),
        context,
        stuck,
        stale_read,
    }))
}

/// Writes a key the way explanations show it.
pub fn key_name(key: Option<&str>) -> String {
    match key {
        Some(key) => format!("{key:?}"),
        None => "(single register)".to_owned(),
    }
}

fn value_name(value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{value:?}"),
        None => "absent".to_owned(),
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Info => "info",
        })
    }
}

/// Compact notation: `client 3 cas "1"->"4" ok [1200, 1350]`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} ", self.client)?;
        match &self.kind {
            OpKind::Read { value } => write!(f, "read {}", value_name(value.as_deref()))?,
            OpKind::Write { value } => write!(f, "write {value:?}")?,
            OpKind::Cas { expected, value } => {
                write!(f, "cas {}->{value:?}", value_name(expected.as_deref()))?;
            }
            OpKind::Append { value } => write!(f, "append {value:?}")?,
        }
        write!(f, " {} [{}, ", self.status, self.call)?;
        match self.ret {
            Some(ret) => write!(f, "{ret}]"),
            None => f.write_str("-]"),
        }
    }
}

impl Violation {
    /// Explains the violation in several lines: the key, the tail of the longest linearizable
    /// prefix, the register value after it, and each operation that could not be placed with
    /// the reason. `name_op` turns a history index into how the reader knows that operation
    /// (`Display` uses `#index`; the command uses the file's line number).
    pub fn explain(&self, name_op: &dyn Fn(usize) -> String) -> String {
        let mut text = String::new();
        self.write_explanation(&mut text, name_op).expect("writing to a String cannot fail");
        text
    }

    fn write_explanation(
        &self,
        f: &mut dyn fmt::Write,
        name_op: &dyn Fn(usize) -> String,
    ) -> fmt::Result {
        writeln!(
            f,
            "key {} ({} operations checked)",
            key_name(self.key.as_deref()),
            self.key_op_count
        )?;
        if self.stuck.is_empty() {
            // Only the quick proof found the violation; the search for a prefix gave up.
            return self.write_stale_read(f, name_op);
        }
        let hidden = self.linearized.len() - self.context.len();
        writeln!(
            f,
            "longest linearizable prefix: {} operations{}",
            self.linearized.len(),
            if hidden > 0 {
                format!(", the last {} shown", self.context.len())
            } else {
                String::new()
            }
        )?;
        for (index, op) in &self.context {
            writeln!(f, "  {} {op}", name_op(*index))?;
        }
        writeln!(f, "register after the prefix: {}", value_name(self.state.as_deref()))?;
        writeln!(f, "none of these could be linearized next:")?;
        let mut info_dead_ends = 0usize;
        for stuck in &self.stuck {
            if stuck.op.status == Status::Info && stuck.reason == StuckReason::DeadEnd {
                // Unknown-outcome writes can go anywhere; listing each adds only noise.
                info_dead_ends += 1;
                continue;
            }
            write!(f, "  {} {}: ", name_op(stuck.index), stuck.op)?;
            match &stuck.reason {
                StuckReason::DeadEnd => writeln!(f, "possible here, but every continuation fails")?,
                StuckReason::Illegal { held } => {
                    let held = value_name(held.as_deref());
                    match (&stuck.op.kind, stuck.op.status) {
                        (OpKind::Read { .. }, _) => writeln!(f, "the register held {held}")?,
                        (OpKind::Cas { .. }, Status::Fail) => writeln!(
                            f,
                            "the comparison failed, but the register held the expected {held}"
                        )?,
                        (OpKind::Cas { .. }, _) => {
                            writeln!(f, "the swap succeeded, but the register held {held}")?
                        }
                        _ => writeln!(f, "impossible with the register holding {held}")?,
                    }
                }
            }
        }
        if info_dead_ends > 0 {
            writeln!(
                f,
                "  (and {info_dead_ends} operations of unknown outcome, which fit but do not help)"
            )?;
        }
        self.write_stale_read(f, name_op)
    }

    fn write_stale_read(
        &self,
        f: &mut dyn fmt::Write,
        name_op: &dyn Fn(usize) -> String,
    ) -> fmt::Result {
        if let Some(stale) = &self.stale_read {
            let (index, read) = &stale.read;
            writeln!(f, "{} {read} cannot have seen its value:", name_op(*index))?;
            if stale.sources.is_empty() {
                writeln!(f, "  no operation writes it, and no appends can build it")?;
            }
            for ruled_out in &stale.sources {
                let source = match &ruled_out.source {
                    Some((index, op)) => format!("{} {op}", name_op(*index)),
                    None => "the initial absent state".to_owned(),
                };
                match &ruled_out.overwritten_by {
                    Some((index, op)) => writeln!(
                        f,
                        "  {source} was overwritten by {} {op} before the read was called",
                        name_op(*index)
                    )?,
                    None => writeln!(f, "  {source} was called after the read returned")?,
                }
            }
        }
        Ok(())
    }
}

/// The explanation of [`Violation::explain`], naming operations `#index`.
impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_explanation(f, &|index| format!("#{index}"))
    }
}
