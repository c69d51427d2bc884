//! A quick proof of the most common violation, a stale read: a read (or a successful cas) that
//! saw a value every write of which was overwritten, in real time, before the read was called.
//!
//! A read of `v` needs a *source*: an operation that set the register to `v` and is the last
//! state change before the read. If, for every operation that can set `v`, some acknowledged
//! write or successful cas of another value was called after that operation returned and
//! returned before the read was called, the write sits between them in every linearization, so
//! no source exists. The search would find this too, but only after exploring every order of
//! the operations before the read, which on a register shared by many clients can take longer
//! than any time bound.

use std::collections::HashMap;
use std::time::Instant;

use super::model::{Interner, StateId, Step};
use super::search::KeyOp;

/// Why one operation (indices into the key's operations) could not have seen its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Proof {
    /// The read, or successful cas, that needs a value it cannot have seen.
    pub(super) reader: usize,
    /// For every operation that could have set the value (`None`: the initial, absent state),
    /// what rules it out as the source: an operation that overwrote it before the reader was
    /// called, or `None` if it was called only after the reader returned.
    pub(super) sources: Vec<(Option<usize>, Option<usize>)>,
}

/// An acknowledged operation that sets the register: called at `call`, done by `ret`.
#[derive(Clone, Copy)]
struct Change {
    call: u64,
    ret: u64,
    value: StateId,
    op: usize,
}

/// For a suffix of the changes sorted by call: the one that returns first, and the one that
/// returns first among those setting another value than it.
#[derive(Clone, Copy, Default)]
struct EarliestTwo {
    first: Option<Change>,
    other: Option<Change>,
}

impl EarliestTwo {
    fn with(self, change: Change) -> Self {
        let Some(first) = self.first else {
            return Self { first: Some(change), other: None };
        };
        if change.ret < first.ret {
            let other = if change.value == first.value { self.other } else { Some(first) };
            Self { first: Some(change), other }
        } else if change.value != first.value && self.other.is_none_or(|o| change.ret < o.ret) {
            Self { first: Some(first), other: Some(change) }
        } else {
            self
        }
    }

    /// The change that returns first among those that set something other than `value`.
    fn earliest_not(self, value: StateId) -> Option<Change> {
        match self.first {
            Some(first) if first.value != value => Some(first),
            _ => self.other,
        }
    }
}

/// The first reader, in call order, that no source can explain, or `None`. Keys with appends
/// are not checked (an append can produce any value), and the check stops (with `None`: it only
/// saves the search work) once `deadline` has passed.
pub(super) fn stale_read(ops: &[KeyOp], deadline: Option<Instant>) -> Option<Proof> {
    if ops.iter().any(|op| matches!(op.step, Step::Append { .. })) {
        return None;
    }
    // Only acknowledged changes must happen; one of unknown outcome has `ret == u64::MAX` and
    // can never be wholly between two operations, so it need not be filtered out.
    let mut changes: Vec<Change> = ops
        .iter()
        .enumerate()
        .filter_map(|(op, key_op)| match key_op.step {
            Step::Write { value } | Step::CasSwapped { value, .. } => {
                Some(Change { call: key_op.call, ret: key_op.ret, value, op })
            }
            _ => None,
        })
        .collect();
    changes.sort_by_key(|change| (change.call, change.op));
    // suffix[i] summarizes changes[i..].
    let mut suffix = vec![EarliestTwo::default(); changes.len() + 1];
    for i in (0..changes.len()).rev() {
        suffix[i] = suffix[i + 1].with(changes[i]);
    }
    // The earliest-returning change to another value than `value` among those called after
    // `after` (`None`: all of them).
    let overwriter = |after: Option<u64>, value: StateId| {
        let start = after.map_or(0, |after| changes.partition_point(|change| change.call <= after));
        suffix[start].earliest_not(value)
    };

    let mut sources_of: HashMap<StateId, Vec<usize>> = HashMap::new();
    for (op, key_op) in ops.iter().enumerate() {
        if let Step::Write { value }
        | Step::CasSwapped { value, .. }
        | Step::CasUnknown { value, .. } = key_op.step
        {
            sources_of.entry(value).or_default().push(op);
        }
    }

    let mut readers: Vec<usize> = (0..ops.len())
        .filter(|&op| matches!(ops[op].step, Step::Read { .. } | Step::CasSwapped { .. }))
        .collect();
    readers.sort_by_key(|&op| (ops[op].call, op));
    'readers: for (count, reader) in readers.into_iter().enumerate() {
        if count % 1024 == 1023 && deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return None;
        }
        let value = match ops[reader].step {
            Step::Read { value } | Step::CasSwapped { expected: value, .. } => value,
            _ => unreachable!("readers are reads and successful cas"),
        };
        let read = &ops[reader];
        let mut sources = Vec::new();
        if value == StateId::ABSENT {
            // The initial state is the only source of "absent": nothing deletes.
            match overwriter(None, value) {
                Some(change) if change.ret < read.call => sources.push((None, Some(change.op))),
                _ => continue 'readers,
            }
        }
        // Latest first: the write just before the read is the likeliest source, and one source
        // that is not ruled out ends the reader's check.
        for &source in sources_of.get(&value).map_or(&[][..], Vec::as_slice).iter().rev() {
            if source == reader {
                continue;
            }
            let source_op = &ops[source];
            if source_op.call > read.ret {
                sources.push((Some(source), None));
                continue;
            }
            match overwriter(Some(source_op.ret), value) {
                Some(change) if change.ret < read.call => {
                    sources.push((Some(source), Some(change.op)));
                }
                _ => continue 'readers,
            }
        }
        return Some(Proof { reader, sources });
    }
    None
}

/// On a key with appends, the first reader (in call order) of a value no sequence of the key's
/// operations can produce, or `None`. A value other than absent is produced by a write or a cas
/// (a *base*), or by one or more appends after a base or after the initial state (which an
/// append takes for the empty string); a value that is not a base and cannot be split into a
/// base (or nothing) followed by appended strings has no source at all, so the proof lists
/// none. The check ignores order and how often each append may be used, so it proves only
/// impossible values, never a stale one; it costs the value's length times the appends, where
/// the search would have to try every order of the operations before giving up.
pub(super) fn unproducible_read(ops: &[KeyOp], interner: &Interner) -> Option<Proof> {
    let suffixes: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op.step {
            Step::Append { suffix } => Some(interner.suffix(suffix)),
            _ => None,
        })
        .collect();
    if suffixes.is_empty() {
        return None;
    }
    let mut bases: Vec<&str> = ops
        .iter()
        .filter_map(|op| match op.step {
            Step::Write { value }
            | Step::CasSwapped { value, .. }
            | Step::CasUnknown { value, .. } => interner.value(value),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    bases.dedup();
    let producible = |value: &str| {
        if bases.binary_search(&value).is_ok() {
            return true;
        }
        // start[p]: the value's first p bytes are a base, or nothing; appended[p]: they are
        // that followed by at least one appended string.
        let n = value.len();
        let mut start = vec![false; n + 1];
        start[0] = true;
        for base in &bases {
            if value.starts_with(base) {
                start[base.len()] = true;
            }
        }
        let mut appended = vec![false; n + 1];
        for p in 0..=n {
            if !(start[p] || appended[p]) {
                continue;
            }
            for suffix in &suffixes {
                if value[p..].starts_with(suffix) {
                    appended[p + suffix.len()] = true;
                }
            }
        }
        appended[n]
    };
    let mut readers: Vec<usize> = (0..ops.len())
        .filter(|&op| matches!(ops[op].step, Step::Read { .. } | Step::CasSwapped { .. }))
        .collect();
    readers.sort_by_key(|&op| (ops[op].call, op));
    readers.into_iter().find_map(|reader| {
        let value = match ops[reader].step {
            Step::Read { value } | Step::CasSwapped { expected: value, .. } => value,
            _ => unreachable!("readers are reads and successful cas"),
        };
        let value = interner.value(value)?;
        (!producible(value)).then(|| Proof { reader, sources: Vec::new() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{OpKind, Operation, Status};

    fn change(ret: u64, value: u32, op: usize) -> Change {
        Change { call: 0, ret, value: StateId::for_test(value), op }
    }

    #[test]
    fn earliest_two_keeps_the_earliest_of_another_value() {
        let two = EarliestTwo::default()
            .with(change(50, 1, 0))
            .with(change(30, 1, 1))
            .with(change(40, 2, 2))
            .with(change(35, 2, 3))
            .with(change(20, 2, 4));
        assert_eq!(two.earliest_not(StateId::for_test(1)).map(|c| c.op), Some(4));
        assert_eq!(two.earliest_not(StateId::for_test(2)).map(|c| c.op), Some(1));
        assert_eq!(two.earliest_not(StateId::for_test(3)).map(|c| c.op), Some(4));
    }

    fn key_op(call: u64, ret: u64, step: Step) -> KeyOp {
        KeyOp { history_index: 0, call, ret, step }
    }

    #[test]
    fn read_after_an_overwrite_is_stale_and_a_concurrent_one_is_not() {
        let (one, two) = (StateId::for_test(1), StateId::for_test(2));
        let mut ops = vec![
            key_op(0, 10, Step::Write { value: one }),
            key_op(20, 30, Step::Write { value: two }),
            key_op(25, 40, Step::Read { value: one }),
        ];
        assert!(stale_read(&ops, None).is_none(), "the read overlaps the overwrite");
        ops[2] = key_op(31, 40, Step::Read { value: one });
        let proof = stale_read(&ops, None).expect("the overwrite returned before the read");
        assert_eq!(proof.reader, 2);
        assert_eq!(proof.sources, vec![(Some(0), Some(1))]);
    }

    #[test]
    fn a_write_of_unknown_outcome_never_overwrites() {
        let (one, two) = (StateId::for_test(1), StateId::for_test(2));
        let ops = vec![
            key_op(0, 10, Step::Write { value: one }),
            key_op(20, u64::MAX, Step::Write { value: two }),
            key_op(50, 60, Step::Read { value: one }),
        ];
        assert!(stale_read(&ops, None).is_none());
    }

    fn interned(kinds: &[(OpKind, u64, u64)]) -> (Vec<KeyOp>, Interner) {
        let mut interner = Interner::default();
        let ops = kinds
            .iter()
            .map(|(kind, call, ret)| {
                let op = Operation {
                    client: 0,
                    key: None,
                    kind: kind.clone(),
                    call: *call,
                    ret: Some(*ret),
                    status: Status::Ok,
                };
                key_op(*call, *ret, interner.step_of(&op).expect("kept"))
            })
            .collect();
        (ops, interner)
    }

    fn append(value: &str) -> OpKind {
        OpKind::Append { value: value.to_owned() }
    }

    fn read(value: &str) -> OpKind {
        OpKind::Read { value: Some(value.to_owned()) }
    }

    #[test]
    fn a_value_no_appends_can_build_has_no_source() {
        let write = OpKind::Write { value: "w".to_owned() };
        let (ops, interner) = interned(&[
            (write, 0, 1),
            (append("ab"), 2, 3),
            (append("c"), 4, 5),
            (read("wabc"), 6, 7),
            (read("cab"), 8, 9),
            (read("abab"), 10, 11),
            (read("w#"), 12, 13),
            (read("ca"), 14, 15),
        ]);
        // Every split is checked, not only the greedy one; repetition is not ruled out.
        let proof = unproducible_read(&ops, &interner).expect("'w#' cannot be built");
        assert_eq!(proof, Proof { reader: 6, sources: vec![] });
        let (ops, interner) = interned(&[(append("ab"), 0, 1), (read("ab"), 2, 3)]);
        assert!(unproducible_read(&ops, &interner).is_none());
    }

    #[test]
    fn keys_without_appends_are_left_to_the_stale_read_proof() {
        let (ops, interner) = interned(&[(read("x"), 0, 1)]);
        assert!(unproducible_read(&ops, &interner).is_none());
    }

    #[test]
    fn absent_is_stale_once_anything_was_written() {
        let ops = vec![
            key_op(0, 10, Step::Write { value: StateId::for_test(1) }),
            key_op(20, 30, Step::Read { value: StateId::ABSENT }),
        ];
        let proof = stale_read(&ops, None).expect("nothing deletes");
        assert_eq!(proof.sources, vec![(None, Some(0))]);
    }
}
