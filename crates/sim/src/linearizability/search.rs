//! The memoized backtracking search over one key (Wing & Gong 1993; Lowe 2017; Porcupine).
//!
//! The history is a doubly linked list of call and return entries in time order. The search
//! scans from the head: at a call entry it tries to apply that operation to the current state;
//! if that is legal and the resulting (linearized set, state) was never seen, it removes
//! ("lifts") the operation's two entries, pushes it on a stack and restarts from the head. At a
//! return entry the operation returning there was not placed, so the last choice was wrong: pop
//! it, put its entries back and try the next call after it. An empty list is a linearization;
//! reaching a return with an empty stack proves there is none.
//!
//! Three rules on top of that keep a register shared by dozens of clients tractable, each
//! argued where it is applied:
//! - an operation that never changes the state (a read, a failed cas) and is legal now is
//!   placed at once, without trying the alternatives (`Search::forced_step`);
//! - a step that leaves a needed value unreachable is refused (`ValueCounts`, *doomed*);
//! - states that no remaining operation can tell apart share one memo entry (`ValueCounts`,
//!   *inert*).

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

use super::Limit;
use super::model::{Interner, StateId, Step};

/// One operation of a key's history, ready for the search.
#[derive(Clone, Debug)]
pub(super) struct KeyOp {
    /// Index of the operation in the checked history.
    pub(super) history_index: usize,
    pub(super) call: u64,
    /// `u64::MAX` for an operation of unknown outcome: it may take effect at any later time.
    pub(super) ret: u64,
    pub(super) step: Step,
}

/// The outcome of the search over one key.
#[derive(Debug)]
pub(super) enum KeyOutcome {
    Linearizable,
    GaveUp(Limit),
    NotLinearizable {
        /// Indices into the key's operations of the longest linearization prefix found, in
        /// order.
        longest: Vec<usize>,
        /// The state after `longest`.
        state: StateId,
    },
}

/// How many search steps pass between two looks at the clock. Reading the clock costs about as
/// much as a few search steps, so it is read rarely; a step is well under a microsecond, so the
/// time bound is still kept to within a millisecond or so.
const STEPS_PER_CLOCK_READ: u64 = 1024;

const NIL: usize = usize::MAX;

/// The call and return entries of a key's operations as a doubly linked list.
///
/// Node `2 * op` is the call of operation `op`, node `2 * op + 1` its return, and node
/// `2 * ops.len()` the head sentinel. A lifted (linearized) operation keeps its own `prev` and
/// `next` so that it can be put back; lifts and unlifts happen in stack order.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Entries {
    fn new(ops: &[KeyOp]) -> Self {
        // Calls sort before returns at the same time: intervals are closed, so such operations
        // are concurrent. The op index breaks the remaining ties, deterministically.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (op, key_op) in ops.iter().enumerate() {
            events.push((key_op.call, 0, op));
            events.push((key_op.ret, 1, op));
        }
        events.sort_unstable();
        let head = 2 * ops.len();
        let mut next = vec![NIL; head + 1];
        let mut prev = vec![NIL; head + 1];
        let mut last = head;
        for (_, is_return, op) in events {
            let node = 2 * op + usize::from(is_return);
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        Self { next, prev }
    }

    fn head(&self) -> usize {
        self.next.len() - 1
    }

    fn first(&self) -> usize {
        self.next[self.head()]
    }

    fn lift(&mut self, op: usize) {
        let (call, ret) = (2 * op, 2 * op + 1);
        // A call is always followed by at least its own return, so `next[call]` is a node.
        self.next[self.prev[call]] = self.next[call];
        self.prev[self.next[call]] = self.prev[call];
        self.next[self.prev[ret]] = self.next[ret];
        if self.next[ret] != NIL {
            self.prev[self.next[ret]] = self.prev[ret];
        }
    }

    fn unlift(&mut self, op: usize) {
        let (call, ret) = (2 * op, 2 * op + 1);
        self.next[self.prev[ret]] = ret;
        if self.next[ret] != NIL {
            self.prev[self.next[ret]] = ret;
        }
        self.next[self.prev[call]] = call;
        self.prev[self.next[call]] = call;
    }
}

/// A set of operations as a bitset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct OpSet(Box<[u64]>);

impl OpSet {
    fn new(op_count: usize) -> Self {
        Self(vec![0; op_count.div_ceil(64)].into_boxed_slice())
    }

    fn insert(&mut self, op: usize) {
        self.0[op / 64] |= 1 << (op % 64);
    }

    fn remove(&mut self, op: usize) {
        self.0[op / 64] &= !(1 << (op % 64));
    }
}

/// A configuration of the search already explored.
#[derive(PartialEq, Eq)]
struct Explored {
    linearized: OpSet,
    state: StateId,
}

impl Hash for Explored {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        for &word in &self.linearized.0 {
            hasher.write_u64(word);
        }
        self.state.hash(hasher);
    }
}

/// A fast multiplicative hash (the rustc "Fx" hash) for the explored set, whose keys are
/// integers made by the checker itself, so hash flooding is not a concern and SipHash would
/// only cost time.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Per-value counts over the operations not yet linearized, which let the search cut doomed
/// branches early and treat indistinguishable states as one.
///
/// Two rules, both from the register's specification:
/// - *doomed*: a configuration is a dead end if an `ok` read of `v` or an `ok` cas expecting
///   `v` is still to be placed, the register does not hold `v`, and no operation left can write
///   `v`. No configuration the search enters is doomed: it checks the first, and refuses a step
///   that moves away from such a `v` or places the last operation that could write it;
/// - *inert*: a value that no remaining operation reads or compares with behaves, for the rest
///   of the search, exactly like any other such value, so the memo stores it as
///   [`StateId::INERT`]. This merges the states left by writes nobody observed, whose order is
///   otherwise searched in every permutation.
///
/// Both need to know every value a remaining operation can produce, which an append breaks (it
/// makes new values), so keys with appends search without them.
struct ValueCounts {
    /// Per value: unplaced ok reads of it and ok cas expecting it; each must still see it.
    needed: Vec<u32>,
    /// Per value: unplaced operations that can set the register to it.
    producers: Vec<u32>,
    /// Per value: unplaced operations whose legality or effect depends on whether the register
    /// holds it.
    mentions: Vec<u32>,
}

impl ValueCounts {
    /// The counts for all of `ops`, or `None` if some operation appends.
    fn new(ops: &[KeyOp], value_count: usize) -> Option<Self> {
        let mut counts = Self {
            needed: vec![0; value_count],
            producers: vec![0; value_count],
            mentions: vec![0; value_count],
        };
        for op in ops {
            if matches!(op.step, Step::Append { .. }) {
                return None;
            }
            counts.adjust(op.step, |count| *count += 1);
        }
        Some(counts)
    }

    fn adjust(&mut self, step: Step, change: impl Fn(&mut u32)) {
        match step {
            Step::Read { value } => {
                change(&mut self.needed[value.index()]);
                change(&mut self.mentions[value.index()]);
            }
            Step::Write { value } => change(&mut self.producers[value.index()]),
            Step::CasSwapped { expected, value } => {
                change(&mut self.needed[expected.index()]);
                change(&mut self.mentions[expected.index()]);
                change(&mut self.producers[value.index()]);
            }
            Step::CasMismatched { expected } => change(&mut self.mentions[expected.index()]),
            Step::CasUnknown { expected, value } => {
                change(&mut self.mentions[expected.index()]);
                change(&mut self.producers[value.index()]);
            }
            Step::Append { .. } => unreachable!("ValueCounts is not built for keys with appends"),
        }
    }

    fn place(&mut self, step: Step) {
        self.adjust(step, |count| *count -= 1);
    }

    fn unplace(&mut self, step: Step) {
        self.adjust(step, |count| *count += 1);
    }

    /// Whether `value` is needed but can no longer be reached: the register does not hold it
    /// and nothing left can write it.
    fn unreachable(&self, value: StateId, state: StateId) -> bool {
        value != state && self.needed[value.index()] > 0 && self.producers[value.index()] == 0
    }

    /// Whether some value is needed but can no longer be reached, in state `state`. Checked
    /// once at the start; afterwards [`ValueCounts::strands`] keeps it false.
    fn stranded(&self, state: StateId) -> bool {
        (0..self.needed.len()).any(|index| {
            self.needed[index] > 0 && self.producers[index] == 0 && index != state.index()
        })
    }

    /// Whether `step`, already counted as placed, taking the register from `state` to
    /// `next_state`, leaves a needed value unreachable: the value it moves away from, or the
    /// value it was the last possible writer of.
    fn strands(&self, step: Step, state: StateId, next_state: StateId) -> bool {
        let produced = match step {
            Step::Write { value }
            | Step::CasSwapped { value, .. }
            | Step::CasUnknown { value, .. } => Some(value),
            Step::Read { .. } | Step::CasMismatched { .. } | Step::Append { .. } => None,
        };
        self.unreachable(state, next_state)
            || produced.is_some_and(|value| self.unreachable(value, next_state))
    }

    fn memo_state(&self, state: StateId) -> StateId {
        if self.mentions[state.index()] == 0 { StateId::INERT } else { state }
    }
}

/// Searches for a linearization of `ops`, giving up once `deadline` has passed.
///
/// `prune_doomed` turns on the *doomed* rule of [`ValueCounts`]. It makes failing searches much
/// shorter but also cuts their prefixes short, so a search meant to explain a known failure
/// turns it off to report the longest linearizable prefix.
pub(super) fn linearize(
    ops: &[KeyOp],
    interner: &mut Interner,
    deadline: Option<Instant>,
    prune_doomed: bool,
    memo_bytes_max: usize,
) -> KeyOutcome {
    let mut search = Search {
        ops,
        prune_doomed,
        entries: Entries::new(ops),
        counts: ValueCounts::new(ops, interner.len()),
        linearized: OpSet::new(ops.len()),
        explored: HashSet::default(),
        stack: Vec::new(),
        state: StateId::ABSENT,
        longest: Vec::new(),
        longest_state: StateId::ABSENT,
    };

    // Per memo entry: the bitset, its box, the state and the hash table's own overhead.
    let memo_len_max = memo_bytes_max / (ops.len().div_ceil(64) * 8 + 40);
    if prune_doomed && search.counts.as_ref().is_some_and(|counts| counts.stranded(StateId::ABSENT))
    {
        return search.not_linearizable();
    }
    // `entry` is where the scan of the current configuration goes on; `fresh` says the
    // configuration was just entered, so a forced step has not been looked for yet.
    let mut entry = search.entries.first();
    let mut fresh = true;
    let mut steps: u64 = 0;
    while search.entries.first() != NIL {
        steps += 1;
        if steps.is_multiple_of(STEPS_PER_CLOCK_READ)
            && deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            return KeyOutcome::GaveUp(Limit::Time);
        }
        if search.explored.len() > memo_len_max {
            return KeyOutcome::GaveUp(Limit::Memory);
        }
        if fresh {
            fresh = false;
            if let Some(op) = search.forced_step(interner) {
                // Placing `op` first loses nothing, so its failure is this configuration's.
                if search.try_place(op, search.state, true) {
                    fresh = true;
                    entry = search.entries.first();
                } else {
                    match search.backtrack() {
                        Some(next) => entry = next,
                        None => return search.not_linearizable(),
                    }
                }
                continue;
            }
        }
        if entry.is_multiple_of(2) {
            // A call: try to linearize its operation now.
            let op = entry / 2;
            if let Some(next_state) = interner.apply(search.state, ops[op].step)
                && search.try_place(op, next_state, false)
            {
                fresh = true;
                entry = search.entries.first();
                continue;
            }
            entry = search.entries.next[entry];
        } else {
            // A return whose operation is not linearized: undo the last choice.
            match search.backtrack() {
                Some(next) => entry = next,
                None => return search.not_linearizable(),
            }
        }
    }
    KeyOutcome::Linearizable
}

/// The state of the search over one key.
struct Search<'a> {
    ops: &'a [KeyOp],
    prune_doomed: bool,
    entries: Entries,
    /// `None` for a key with appends (see [`ValueCounts`]).
    counts: Option<ValueCounts>,
    /// Invariant: exactly the operations on `stack`.
    linearized: OpSet,
    /// Configurations entered before. One that is not on the current path has failed (the
    /// search stops at the first success), so entering it again is pointless.
    explored: HashSet<Explored, BuildHasherDefault<FxHasher>>,
    /// The operations linearized so far, in order: (operation, state before it, whether it was
    /// forced, i.e. placed without alternatives).
    stack: Vec<(usize, StateId, bool)>,
    state: StateId,
    /// The deepest stack seen at a dead end, and the state there.
    longest: Vec<usize>,
    longest_state: StateId,
}

impl Search<'_> {
    /// A pending operation that is legal now and never changes the state ([`Step::keeps_state`]),
    /// if any.
    ///
    /// Such an operation can be linearized right away without losing any linearization (the
    /// argument Lowe 2017 makes for reads): take a linearization of the rest, move the
    /// operation to its front. It is legal there; where it was, it changed nothing, so every
    /// other step sees the same states as before; and no pending operation must precede it,
    /// since it was called before the earliest pending return. (A write of the value already
    /// held does not qualify: at its later place in the linearization it may change the state.)
    fn forced_step(&self, interner: &mut Interner) -> Option<usize> {
        let mut entry = self.entries.first();
        while entry != NIL && entry.is_multiple_of(2) {
            let op = entry / 2;
            let step = self.ops[op].step;
            if step.keeps_state() && interner.apply(self.state, step).is_some() {
                return Some(op);
            }
            entry = self.entries.next[entry];
        }
        None
    }

    /// Linearizes `op` next, moving to `next_state`, unless that configuration was explored
    /// before or strands an operation (see [`ValueCounts`]). Returns whether it did.
    fn try_place(&mut self, op: usize, next_state: StateId, forced: bool) -> bool {
        let step = self.ops[op].step;
        let mut memo_state = next_state;
        if let Some(counts) = &mut self.counts {
            counts.place(step);
            if self.prune_doomed && counts.strands(step, self.state, next_state) {
                counts.unplace(step);
                return false;
            }
            memo_state = counts.memo_state(next_state);
        }
        self.linearized.insert(op);
        let fresh = self
            .explored
            .insert(Explored { linearized: self.linearized.clone(), state: memo_state });
        if !fresh {
            self.linearized.remove(op);
            if let Some(counts) = &mut self.counts {
                counts.unplace(step);
            }
            return false;
        }
        self.stack.push((op, self.state, forced));
        self.state = next_state;
        self.entries.lift(op);
        true
    }

    /// Undoes linearized operations until one that had alternatives: returns the entry where
    /// the scan goes on, or `None` when the stack runs out (no linearization exists).
    fn backtrack(&mut self) -> Option<usize> {
        // Every dead end is left through here, so the deepest one is recorded here.
        if self.stack.len() > self.longest.len() {
            self.longest = self.stack.iter().map(|&(op, _, _)| op).collect();
            self.longest_state = self.state;
        }
        loop {
            let (op, before, forced) = self.stack.pop()?;
            if let Some(counts) = &mut self.counts {
                counts.unplace(self.ops[op].step);
            }
            self.state = before;
            self.linearized.remove(op);
            self.entries.unlift(op);
            if !forced {
                return Some(self.entries.next[2 * op]);
            }
        }
    }

    fn not_linearizable(self) -> KeyOutcome {
        KeyOutcome::NotLinearizable { longest: self.longest, state: self.longest_state }
    }
}

/// The operations that had to come right after the prefix `longest` (those called no later than
/// the earliest return among the rest), in call order, each with whether applying it to `state`
/// is illegal (`true`) or merely leads nowhere (`false`).
pub(super) fn stuck_after(
    ops: &[KeyOp],
    longest: &[usize],
    state: StateId,
    interner: &mut Interner,
) -> Vec<(usize, bool)> {
    let mut placed = vec![false; ops.len()];
    for &op in longest {
        placed[op] = true;
    }
    let earliest_return =
        (0..ops.len()).filter(|&op| !placed[op]).map(|op| ops[op].ret).min().unwrap_or(u64::MAX);
    let mut stuck: Vec<usize> =
        (0..ops.len()).filter(|&op| !placed[op] && ops[op].call <= earliest_return).collect();
    stuck.sort_by_key(|&op| (ops[op].call, op));
    stuck.into_iter().map(|op| (op, interner.apply(state, ops[op].step).is_none())).collect()
}
