//! The sequential specification of one register: read, write, compare-and-swap, append.
//!
//! Values are interned so that a register state is a small integer: the search copies and
//! hashes states millions of times, and appends would otherwise make every state a string.

use std::collections::HashMap;

use super::{OpKind, Operation, Status};

/// An interned register value. Invariant: `StateId::ABSENT` is the absent key; every other id
/// indexes `Interner::values`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct StateId(u32);

impl StateId {
    /// The key does not exist (the initial state of every register).
    pub(super) const ABSENT: StateId = StateId(0);

    /// Never a value: the name the search's memo uses for any state that no remaining
    /// operation can tell apart from another such state.
    pub(super) const INERT: StateId = StateId(u32::MAX);

    /// An id made up by a test, standing for no interned value.
    #[cfg(test)]
    pub(super) fn for_test(id: u32) -> Self {
        StateId(id)
    }

    /// A position in per-value tables: `0..Interner::len()`.
    pub(super) fn index(self) -> usize {
        self.0 as usize
    }
}

/// What one operation does to the register, with its values interned.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    /// An `ok` read: legal only if the register holds `value`.
    Read { value: StateId },
    /// A write (ok or of unknown outcome): always legal.
    Write { value: StateId },
    /// An `ok` cas: legal only if the register holds `expected`; then it holds `value`.
    CasSwapped { expected: StateId, value: StateId },
    /// A `fail` cas: legal only if the register does not hold `expected`; writes nothing.
    CasMismatched { expected: StateId },
    /// A cas of unknown outcome: always legal; swaps if the register holds `expected`.
    CasUnknown { expected: StateId, value: StateId },
    /// An append (ok or of unknown outcome): always legal. `suffix` indexes
    /// `Interner::suffixes`.
    Append { suffix: u32 },
}

impl Step {
    /// Whether the step leaves the state as it is wherever it is legal (a read, a cas that
    /// found a mismatch, a successful cas of a value onto itself).
    pub(super) fn keeps_state(self) -> bool {
        match self {
            Step::Read { .. } | Step::CasMismatched { .. } => true,
            Step::CasSwapped { expected, value } => expected == value,
            Step::Write { .. } | Step::CasUnknown { .. } | Step::Append { .. } => false,
        }
    }
}

/// The values of one key's history, and the memoized results of appends.
#[derive(Debug)]
pub(super) struct Interner {
    /// `values[0]` is `None` (absent); invariant: every other entry is `Some` and distinct.
    values: Vec<Option<String>>,
    ids: HashMap<String, StateId>,
    suffixes: Vec<String>,
    /// (state, suffix) -> state after the append; an append builds a new string, so each
    /// distinct pair is built once.
    appended: HashMap<(StateId, u32), StateId>,
}

impl Default for Interner {
    fn default() -> Self {
        Self {
            values: vec![None],
            ids: HashMap::new(),
            suffixes: Vec::new(),
            appended: HashMap::new(),
        }
    }
}

impl Interner {
    fn intern(&mut self, value: &str) -> StateId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = StateId(u32::try_from(self.values.len()).expect("fewer than 2^32 values"));
        self.values.push(Some(value.to_owned()));
        self.ids.insert(value.to_owned(), id);
        id
    }

    fn intern_optional(&mut self, value: Option<&str>) -> StateId {
        value.map_or(StateId::ABSENT, |value| self.intern(value))
    }

    /// How many distinct values (counting absent) are interned so far.
    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    /// The value an id stands for (`None`: absent).
    pub(super) fn value(&self, id: StateId) -> Option<&str> {
        self.values[id.0 as usize].as_deref()
    }

    /// The string append `suffix` (of [`Step::Append`]) adds.
    pub(super) fn suffix(&self, suffix: u32) -> &str {
        &self.suffixes[suffix as usize]
    }

    /// The step an operation contributes to the search, or `None` if it carries no
    /// information: a failed write or append (it did not happen) and a read whose outcome is
    /// unknown or failed (it saw nothing).
    pub(super) fn step_of(&mut self, op: &Operation) -> Option<Step> {
        match (&op.kind, op.status) {
            (OpKind::Read { value }, Status::Ok) => {
                Some(Step::Read { value: self.intern_optional(value.as_deref()) })
            }
            (OpKind::Read { .. }, Status::Fail | Status::Info) => None,
            (OpKind::Write { value }, Status::Ok | Status::Info) => {
                Some(Step::Write { value: self.intern(value) })
            }
            (OpKind::Cas { expected, value }, status) => {
                let expected = self.intern_optional(expected.as_deref());
                let value = self.intern(value);
                Some(match status {
                    Status::Ok => Step::CasSwapped { expected, value },
                    Status::Fail => Step::CasMismatched { expected },
                    Status::Info => Step::CasUnknown { expected, value },
                })
            }
            (OpKind::Append { value }, Status::Ok | Status::Info) => {
                let suffix = u32::try_from(self.suffixes.len()).expect("fewer than 2^32 appends");
                self.suffixes.push(value.clone());
                Some(Step::Append { suffix })
            }
            (OpKind::Write { .. } | OpKind::Append { .. }, Status::Fail) => None,
        }
    }

    /// Applies `step` to a register holding `state`: the new state, or `None` if the step is
    /// not legal there.
    pub(super) fn apply(&mut self, state: StateId, step: Step) -> Option<StateId> {
        match step {
            Step::Read { value } => (state == value).then_some(state),
            Step::Write { value } => Some(value),
            Step::CasSwapped { expected, value } => (state == expected).then_some(value),
            Step::CasMismatched { expected } => (state != expected).then_some(state),
            Step::CasUnknown { expected, value } => {
                Some(if state == expected { value } else { state })
            }
            Step::Append { suffix } => Some(self.append(state, suffix)),
        }
    }

    fn append(&mut self, state: StateId, suffix: u32) -> StateId {
        if let Some(&id) = self.appended.get(&(state, suffix)) {
            return id;
        }
        let mut value = self.value(state).unwrap_or("").to_owned();
        value.push_str(&self.suffixes[suffix as usize]);
        let id = self.intern(&value);
        self.appended.insert((state, suffix), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, status: Status) -> Operation {
        Operation { client: 0, key: None, kind, call: 0, ret: Some(1), status }
    }

    #[test]
    fn append_to_absent_starts_from_empty_string() {
        let mut interner = Interner::default();
        let a = interner
            .step_of(&op(OpKind::Append { value: "a".to_owned() }, Status::Ok))
            .expect("ok append is kept");
        let after = interner.apply(StateId::ABSENT, a).expect("append is legal");
        assert_eq!(interner.value(after), Some("a"));
        let again = interner.apply(after, a).expect("append is legal");
        assert_eq!(interner.value(again), Some("aa"));
    }

    #[test]
    fn absent_and_empty_string_are_different_values() {
        let mut interner = Interner::default();
        let read_empty = interner
            .step_of(&op(OpKind::Read { value: Some(String::new()) }, Status::Ok))
            .expect("ok read is kept");
        assert_eq!(interner.apply(StateId::ABSENT, read_empty), None);
    }

    #[test]
    fn failed_cas_is_legal_only_on_a_mismatch() {
        let mut interner = Interner::default();
        let cas = interner
            .step_of(&op(
                OpKind::Cas { expected: Some("1".to_owned()), value: "2".to_owned() },
                Status::Fail,
            ))
            .expect("failed cas is kept");
        let one = interner.intern("1");
        assert_eq!(interner.apply(one, cas), None);
        assert_eq!(interner.apply(StateId::ABSENT, cas), Some(StateId::ABSENT));
    }

    #[test]
    fn dropped_operations_carry_no_step() {
        let mut interner = Interner::default();
        let write = OpKind::Write { value: "1".to_owned() };
        assert!(interner.step_of(&op(write, Status::Fail)).is_none());
        let read = OpKind::Read { value: None };
        assert!(interner.step_of(&op(read.clone(), Status::Info)).is_none());
        assert!(interner.step_of(&op(read, Status::Fail)).is_none());
    }
}
