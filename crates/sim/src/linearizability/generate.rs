//! Histories that are linearizable by construction, for tests and benchmarks of the checker.
//!
//! Simulated clients each issue one operation at a time. Every operation gets a call time, a
//! linearization point inside its interval and a return time; the operations are then applied
//! to a sequential map of registers in linearization-point order, which fixes what each read
//! saw and whether each cas matched. Any history built this way has a linearization (the
//! linearization-point order), so the checker must accept it; mutating it shows it can reject.

use std::collections::BTreeMap;

use super::{OpKind, Operation, Status};

/// The shape of a generated history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateConfig {
    /// How many clients issue operations concurrently (each one at a time).
    pub client_count: u64,
    /// How many operations the history has.
    pub op_count: usize,
    /// How many keys the operations spread over; 0 means one single register (`key: None`).
    pub key_count: usize,
    /// Per mille of operations whose outcome is unknown (`info`, no return time); half of them
    /// take effect. The same share of writes and appends fail without taking effect.
    pub info_per_mille: u32,
    /// Whether clients also append (otherwise only read, write and cas).
    pub appends: bool,
    /// Written values are drawn from this many distinct values; `None` makes every written
    /// value unique, so that a read names the write it saw.
    pub value_pool: Option<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            client_count: 50,
            op_count: 5_000,
            key_count: 10,
            info_per_mille: 10,
            appends: false,
            value_pool: None,
        }
    }
}

/// SplitMix64: a tiny seeded generator, enough for test histories and free of dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..bound` (the modulo bias is irrelevant here). `bound > 0`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn per_mille(&mut self, chance: u32) -> bool {
        self.below(1000) < u64::from(chance)
    }
}

/// What a client asked for, before the sequential model fills in results.
#[derive(Clone, Copy)]
enum Intent {
    Read,
    Write,
    Cas,
    Append,
}

struct Draft {
    client: u64,
    key: Option<String>,
    intent: Intent,
    call: u64,
    point: u64,
    ret: u64,
}

/// Generates a linearizable history of `config.op_count` operations from `seed`.
///
/// # Panics
/// If `config.client_count` is 0 while `config.op_count` is not.
pub fn linearizable_history(config: &GenerateConfig, seed: u64) -> Vec<Operation> {
    assert!(
        config.client_count > 0 || config.op_count == 0,
        "a history with operations needs clients"
    );
    let mut rng = Rng(seed);
    let mut free_at = vec![0u64; usize::try_from(config.client_count).unwrap_or(usize::MAX)];
    let mut drafts = Vec::with_capacity(config.op_count);
    for _ in 0..config.op_count {
        // The client that is free first issues the next operation; each client is sequential.
        let (client, &free) = free_at
            .iter()
            .enumerate()
            .min_by_key(|&(client, &free)| (free, client))
            .expect("there is a client");
        let call = free + rng.below(5);
        let point = call + 1 + rng.below(20);
        let ret = point + 1 + rng.below(20);
        free_at[client] = ret + 1;
        let key = match config.key_count {
            0 => None,
            count => Some(format!("k{}", rng.below(count as u64))),
        };
        let intent = match rng.below(if config.appends { 4 } else { 3 }) {
            0 => Intent::Read,
            1 => Intent::Write,
            2 => Intent::Cas,
            _ => Intent::Append,
        };
        drafts.push(Draft { client: client as u64, key, intent, call, point, ret });
    }

    // Apply in linearization-point order; ties are simultaneous and either order is valid.
    let mut order: Vec<usize> = (0..drafts.len()).collect();
    order.sort_by_key(|&i| (drafts[i].point, i));
    let mut registers: BTreeMap<Option<String>, Option<String>> = BTreeMap::new();
    let mut history: Vec<Option<Operation>> = vec![None; drafts.len()];
    for i in order {
        let draft = &drafts[i];
        let register = registers.entry(draft.key.clone()).or_default();
        let unknown = rng.per_mille(config.info_per_mille);
        let takes_effect = !unknown || rng.below(2) == 0;
        let fresh_value = match config.value_pool {
            Some(pool) => rng.below(u64::from(pool.max(1))).to_string(),
            None => format!("{}-{i}", draft.client),
        };
        let mut status = if unknown { Status::Info } else { Status::Ok };
        let kind = match draft.intent {
            Intent::Read => OpKind::Read { value: register.clone() },
            Intent::Write => {
                if !unknown && rng.per_mille(config.info_per_mille) {
                    status = Status::Fail;
                } else if takes_effect {
                    *register = Some(fresh_value.clone());
                }
                OpKind::Write { value: fresh_value }
            }
            Intent::Cas => {
                // Half the time expect what is there, so that swaps happen.
                let expected = if rng.below(2) == 0 {
                    register.clone()
                } else {
                    match config.value_pool {
                        Some(pool) => Some(rng.below(u64::from(pool.max(1))).to_string()),
                        None => Some(format!("never-{i}")),
                    }
                };
                let matches = *register == expected;
                if takes_effect && matches {
                    *register = Some(fresh_value.clone());
                }
                if !unknown && !matches {
                    status = Status::Fail;
                }
                OpKind::Cas { expected, value: fresh_value }
            }
            Intent::Append => {
                let suffix = format!("{}.{i};", draft.client);
                if !unknown && rng.per_mille(config.info_per_mille) {
                    status = Status::Fail;
                } else if takes_effect {
                    let mut value = register.take().unwrap_or_default();
                    value.push_str(&suffix);
                    *register = Some(value);
                }
                OpKind::Append { value: suffix }
            }
        };
        history[i] = Some(Operation {
            client: draft.client,
            key: draft.key.clone(),
            kind,
            call: draft.call,
            ret: (status != Status::Info).then_some(draft.ret),
            status,
        });
    }
    history.into_iter().map(|op| op.expect("every draft was applied")).collect()
}
