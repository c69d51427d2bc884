//! The memoized backtracking search over one key (Wing & Gong 1993; Lowe 2017; Porcupine).
//!
//! The history is a doubly linked list of call and return entries in time order. The search
//! scans from the head: at a call entry it tries to apply that operation to the current state;
//! if that is legal and the resulting (linearized set, state) was never seen, it removes
//! ("lifts") the operation's two entries, pushes it on a stack and restarts from the head. At a
//! return entry the operation returning there was not placed, so the last choice was wrong: pop
//! it, put its entries back and try the next call after it. An empty list is a linearization;
//! reaching a return with an empty stack proves there is none.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

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
    TimedOut,
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

/// Searches for a linearization of `ops`, giving up once `deadline` has passed.
pub(super) fn linearize(
    ops: &[KeyOp],
    interner: &mut Interner,
    deadline: Option<Instant>,
) -> KeyOutcome {
    let mut entries = Entries::new(ops);
    let mut linearized = OpSet::new(ops.len());
    let mut explored: HashSet<Explored, BuildHasherDefault<FxHasher>> = HashSet::default();
    // The operations linearized so far, in order, each with the state before it.
    let mut stack: Vec<(usize, StateId)> = Vec::new();
    let mut state = StateId::ABSENT;
    let mut longest: Vec<usize> = Vec::new();
    let mut longest_state = StateId::ABSENT;

    let mut entry = entries.first();
    let mut steps: u64 = 0;
    while entries.first() != NIL {
        steps += 1;
        if steps.is_multiple_of(STEPS_PER_CLOCK_READ)
            && deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            return KeyOutcome::TimedOut;
        }
        let op = entry / 2;
        if entry % 2 == 0 {
            // A call: try to linearize `op` now.
            if let Some(next_state) = interner.apply(state, ops[op].step) {
                linearized.insert(op);
                let fresh =
                    explored.insert(Explored { linearized: linearized.clone(), state: next_state });
                if fresh {
                    stack.push((op, state));
                    state = next_state;
                    entries.lift(op);
                    entry = entries.first();
                    continue;
                }
                linearized.remove(op);
            }
            entry = entries.next[entry];
        } else {
            // A return whose operation is not linearized: undo the last choice.
            let Some(&(top, before)) = stack.last() else {
                return KeyOutcome::NotLinearizable { longest, state: longest_state };
            };
            // Every dead end is left through here, so the deepest one is recorded here.
            if stack.len() > longest.len() {
                longest = stack.iter().map(|&(op, _)| op).collect();
                longest_state = state;
            }
            stack.pop();
            state = before;
            linearized.remove(top);
            entries.unlift(top);
            entry = entries.next[2 * top];
        }
    }
    KeyOutcome::Linearizable
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
