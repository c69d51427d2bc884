//! The linearizability checker on known-linearizable and known-violating histories: small
//! hand-written ones, generated ones (linearizable by construction, then broken on purpose), and
//! one of realistic size.

use std::time::Duration;

use proptest::prelude::*;
use tenure_sim::linearizability::generate::{GenerateConfig, linearizable_history};
use tenure_sim::linearizability::{
    CheckResult, HistoryError, Limit, OpKind, Operation, Status, StuckReason, Violation, check,
};

const TIMEOUT: Duration = Duration::from_secs(60);

fn op(client: u64, kind: OpKind, call: u64, ret: u64) -> Operation {
    Operation { client, key: None, kind, call, ret: Some(ret), status: Status::Ok }
}

fn read(client: u64, value: Option<&str>, call: u64, ret: u64) -> Operation {
    op(client, OpKind::Read { value: value.map(str::to_owned) }, call, ret)
}

fn write(client: u64, value: &str, call: u64, ret: u64) -> Operation {
    op(client, OpKind::Write { value: value.to_owned() }, call, ret)
}

fn cas(client: u64, expected: Option<&str>, value: &str, call: u64, ret: u64) -> Operation {
    op(
        client,
        OpKind::Cas { expected: expected.map(str::to_owned), value: value.to_owned() },
        call,
        ret,
    )
}

fn append(client: u64, value: &str, call: u64, ret: u64) -> Operation {
    op(client, OpKind::Append { value: value.to_owned() }, call, ret)
}

fn failed(op: Operation) -> Operation {
    Operation { status: Status::Fail, ..op }
}

/// The operation with an unknown outcome and no return time.
fn unknown(op: Operation) -> Operation {
    Operation { status: Status::Info, ret: None, ..op }
}

fn on(key: &str, op: Operation) -> Operation {
    Operation { key: Some(key.to_owned()), ..op }
}

fn verdict(history: &[Operation]) -> CheckResult {
    check(history, TIMEOUT).expect("well-formed history")
}

fn assert_linearizable(history: &[Operation]) {
    match verdict(history) {
        CheckResult::Linearizable => {}
        other => panic!("expected linearizable, got {other:?}"),
    }
}

fn violation(history: &[Operation]) -> Violation {
    match verdict(history) {
        CheckResult::NotLinearizable(violation) => *violation,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_write_then_read_is_linearizable() {
    assert_linearizable(&[read(0, None, 0, 1), write(0, "1", 2, 3), read(1, Some("1"), 4, 5)]);
}

#[test]
fn stale_read_after_a_completed_write_is_a_violation() {
    let history = [write(0, "1", 0, 10), write(0, "2", 20, 30), read(1, Some("1"), 40, 50)];
    let violation = violation(&history);
    assert_eq!(violation.key, None);
    assert_eq!(violation.linearized, vec![0, 1]);
    assert_eq!(violation.state.as_deref(), Some("2"));
    assert_eq!(violation.stuck.len(), 1);
    assert_eq!(violation.stuck[0].index, 2);
    assert_eq!(violation.stuck[0].reason, StuckReason::Illegal { held: Some("2".to_owned()) });
    let text = violation.to_string();
    assert!(text.contains("#2 client 1 read \"1\" ok [40, 50]: the register held \"2\""));
    let stale = violation.stale_read.as_ref().expect("found before the search");
    assert_eq!(stale.read.0, 2);
    assert_eq!(stale.sources.len(), 1);
    assert_eq!(stale.sources[0].source.as_ref().map(|(index, _)| *index), Some(0));
    assert_eq!(stale.sources[0].overwritten_by.as_ref().map(|(index, _)| *index), Some(1));
    assert!(text.contains(
        "#0 client 0 write \"1\" ok [0, 10] was overwritten by #1 client 0 write \"2\" ok [20, 30] before the read was called"
    ));
}

#[test]
fn read_concurrent_with_a_write_may_see_either_value() {
    assert_linearizable(&[
        write(0, "1", 0, 10),
        write(0, "2", 20, 40),
        read(1, Some("1"), 25, 30),
        read(2, Some("2"), 26, 35),
    ]);
}

#[test]
fn reads_may_not_see_a_concurrent_write_go_back_and_forth() {
    // Once one read saw "2", a later read cannot see "1" again.
    let history = [
        write(0, "1", 0, 10),
        write(0, "2", 20, 100),
        read(1, Some("2"), 30, 40),
        read(2, Some("1"), 50, 60),
    ];
    violation(&history);
}

#[test]
fn concurrent_writes_seen_in_both_orders_are_a_violation() {
    // Two clients both observe the register settle, in opposite orders.
    let history = [
        write(0, "a", 0, 50),
        write(1, "b", 0, 50),
        read(2, Some("a"), 60, 70),
        read(3, Some("b"), 80, 90),
        read(2, Some("a"), 100, 110),
    ];
    // No single write overwrites "a" between its write and the last read, so only the
    // search can tell.
    let violation = violation(&history);
    assert_eq!(violation.stale_read, None);
}

#[test]
fn concurrent_writes_seen_in_either_single_order_are_linearizable() {
    assert_linearizable(&[
        write(0, "a", 0, 50),
        write(1, "b", 0, 50),
        read(2, Some("a"), 10, 20),
        read(3, Some("b"), 30, 40),
        read(2, Some("b"), 60, 70),
    ]);
    assert_linearizable(&[
        write(0, "a", 0, 50),
        write(1, "b", 0, 50),
        read(2, Some("b"), 10, 20),
        read(3, Some("a"), 30, 40),
        read(2, Some("a"), 60, 70),
    ]);
}

#[test]
fn lost_write_is_a_violation() {
    // The write of "2" was acknowledged but a later read still sees "1".
    let history = [
        write(0, "1", 0, 10),
        write(1, "2", 20, 30),
        read(2, Some("2"), 35, 38),
        write(0, "3", 40, 50),
        read(2, Some("1"), 60, 70),
    ];
    violation(&history);
}

#[test]
fn read_of_a_value_never_written_is_a_violation() {
    let history = [write(0, "1", 0, 10), read(1, Some("7"), 5, 20)];
    let violation = violation(&history);
    assert_eq!(violation.linearized, vec![0]);
    assert!(matches!(
        violation.stuck.as_slice(),
        [stuck] if stuck.index == 1
    ));
}

#[test]
fn read_of_absent_after_a_write_is_a_violation() {
    violation(&[write(0, "1", 0, 10), read(1, None, 20, 30)]);
}

#[test]
fn cas_that_succeeded_on_a_mismatched_value_is_a_violation() {
    let history = [write(0, "1", 0, 10), cas(1, Some("2"), "3", 20, 30)];
    let violation = violation(&history);
    assert_eq!(violation.stuck[0].reason, StuckReason::Illegal { held: Some("1".to_owned()) });
    assert!(violation.to_string().contains("the swap succeeded, but the register held \"1\""));
}

#[test]
fn cas_that_failed_on_a_matching_value_is_a_violation() {
    let history = [write(0, "1", 0, 10), failed(cas(1, Some("1"), "3", 20, 30))];
    let violation = violation(&history);
    assert!(violation.to_string().contains("the comparison failed"));
}

#[test]
fn cas_chain_is_linearizable() {
    assert_linearizable(&[
        cas(0, None, "1", 0, 10),
        cas(1, Some("1"), "2", 5, 20),
        failed(cas(2, Some("1"), "9", 25, 30)),
        read(0, Some("2"), 31, 40),
    ]);
}

#[test]
fn two_cas_from_the_same_value_cannot_both_succeed() {
    violation(&[
        write(0, "0", 0, 5),
        cas(1, Some("0"), "1", 10, 20),
        cas(2, Some("0"), "2", 10, 20),
    ]);
}

#[test]
fn failed_write_is_dropped() {
    assert_linearizable(&[
        write(0, "1", 0, 10),
        failed(write(1, "2", 20, 30)),
        read(2, Some("1"), 40, 50),
    ]);
    violation(&[write(0, "1", 0, 10), failed(write(1, "2", 20, 30)), read(2, Some("2"), 40, 50)]);
}

#[test]
fn unknown_write_that_took_effect_late_is_linearizable() {
    // The client gave up on "2", but it landed after a later write.
    assert_linearizable(&[
        write(0, "1", 0, 10),
        unknown(write(1, "2", 20, 0)),
        write(0, "3", 100, 110),
        read(2, Some("3"), 120, 130),
        read(2, Some("2"), 140, 150),
    ]);
}

#[test]
fn unknown_write_that_never_took_effect_is_linearizable() {
    assert_linearizable(&[
        write(0, "1", 0, 10),
        unknown(write(1, "2", 20, 0)),
        read(2, Some("1"), 120, 130),
        read(2, Some("1"), 140, 150),
    ]);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call() {
    violation(&[read(0, Some("2"), 0, 10), unknown(write(1, "2", 20, 0))]);
}

#[test]
fn unknown_write_takes_effect_at_most_once() {
    // "2" seen, then overwritten by "3", then "2" again: one unknown write cannot explain both.
    violation(&[
        unknown(write(1, "2", 0, 0)),
        read(0, Some("2"), 10, 20),
        write(0, "3", 30, 40),
        read(0, Some("2"), 50, 60),
    ]);
}

#[test]
fn unknown_write_keeps_its_return_time_only_as_a_hint() {
    // Even with a recorded return, an unknown outcome may land later.
    let mut late = write(1, "2", 20, 30);
    late.status = Status::Info;
    assert_linearizable(&[
        write(0, "1", 0, 10),
        late,
        read(2, Some("1"), 40, 50),
        read(2, Some("2"), 60, 70),
    ]);
}

#[test]
fn unknown_and_failed_reads_carry_no_information() {
    let mut bogus_unknown = read(1, Some("never"), 20, 30);
    bogus_unknown.status = Status::Info;
    assert_linearizable(&[
        write(0, "1", 0, 10),
        bogus_unknown,
        failed(read(2, Some("never"), 20, 30)),
    ]);
}

#[test]
fn unknown_cas_may_or_may_not_have_swapped() {
    assert_linearizable(&[
        write(0, "1", 0, 10),
        unknown(cas(1, Some("1"), "2", 20, 0)),
        read(2, Some("1"), 30, 40),
        read(2, Some("2"), 50, 60),
    ]);
    // But it cannot swap from a value the register never held.
    violation(&[
        write(0, "1", 0, 10),
        unknown(cas(1, Some("5"), "2", 20, 0)),
        read(2, Some("2"), 50, 60),
    ]);
}

#[test]
fn appends_accumulate_in_some_order() {
    assert_linearizable(&[
        append(0, "a", 0, 10),
        append(1, "b", 5, 15),
        read(2, Some("ba"), 20, 30),
    ]);
    assert_linearizable(&[
        append(0, "a", 0, 10),
        append(1, "b", 5, 15),
        read(2, Some("ab"), 20, 30),
    ]);
}

#[test]
fn appends_in_real_time_order_cannot_be_reordered() {
    let violation =
        violation(&[append(0, "a", 0, 10), append(1, "b", 20, 30), read(2, Some("ba"), 40, 50)]);
    assert_eq!(violation.state.as_deref(), Some("ab"));
}

#[test]
fn append_after_write_and_lost_append() {
    assert_linearizable(&[
        write(0, "x", 0, 10),
        append(1, "y", 20, 30),
        unknown(append(2, "z", 25, 0)),
        read(0, Some("xy"), 40, 50),
        read(0, Some("xyz"), 60, 70),
    ]);
    // An acknowledged append must show up.
    violation(&[write(0, "x", 0, 10), append(1, "y", 20, 30), read(0, Some("x"), 40, 50)]);
}

#[test]
fn keys_are_independent() {
    assert_linearizable(&[
        on("x", write(0, "1", 0, 10)),
        on("y", write(1, "2", 0, 10)),
        on("x", read(2, Some("1"), 20, 30)),
        on("y", read(2, Some("2"), 20, 30)),
        read(3, None, 20, 30),
    ]);
}

#[test]
fn the_smallest_failing_key_is_reported() {
    let history = [
        on("big", write(0, "1", 0, 10)),
        on("big", write(0, "2", 20, 30)),
        on("big", read(1, Some("1"), 40, 50)),
        on("big", read(1, Some("2"), 60, 70)),
        on("small", write(0, "1", 0, 10)),
        on("small", read(1, Some("0"), 20, 30)),
        on("fine", write(0, "1", 0, 10)),
    ];
    let violation = violation(&history);
    assert_eq!(violation.key.as_deref(), Some("small"));
    assert_eq!(violation.key_op_count, 2);
    assert!(violation.to_string().starts_with("key \"small\" (2 operations checked)"));
}

#[test]
fn malformed_histories_are_errors_not_panics() {
    let mut no_return = write(0, "1", 0, 10);
    no_return.ret = None;
    assert_eq!(
        check(&[read(0, None, 0, 1), no_return], TIMEOUT),
        Err(HistoryError::MissingReturn { index: 1, status: Status::Ok })
    );
    assert_eq!(
        check(&[write(0, "1", 10, 5)], TIMEOUT),
        Err(HistoryError::ReturnBeforeCall { index: 0, call: 10, ret: 5 })
    );
}

#[test]
fn a_hard_history_answers_unknown_when_time_runs_out() {
    // A zero time bound ends the search at its first look at the clock; a history big enough to
    // need more steps than that is then unknown, never a wrong verdict.
    let config = GenerateConfig {
        client_count: 20,
        op_count: 2_000,
        key_count: 0,
        ..GenerateConfig::default()
    };
    let history = linearizable_history(&config, 7);
    match check(&history, Duration::ZERO).expect("well-formed") {
        CheckResult::Unknown { limit, key, keys_total, .. } => {
            assert_eq!(limit, Limit::Time);
            assert_eq!(key, None);
            assert_eq!(keys_total, 1);
        }
        other => panic!("expected unknown, got {other:?}"),
    }
}

#[test]
fn realistic_history_of_many_clients_is_decided() {
    // The benchmark runs 5,000 operations; this keeps the test suite quick.
    let config = GenerateConfig {
        client_count: 50,
        op_count: 1_500,
        key_count: 10,
        info_per_mille: 10,
        appends: false,
        value_pool: None,
    };
    let history = linearizable_history(&config, 1);
    assert_linearizable(&history);
}

#[test]
fn stale_read_in_a_busy_register_is_proven_without_a_full_search() {
    // 30 clients on one register: exploring every order before the late read would take far
    // longer than the time bound; the quick proof names the overwriting write instead.
    let config = GenerateConfig {
        client_count: 30,
        op_count: 1_500,
        key_count: 0,
        info_per_mille: 0,
        appends: false,
        value_pool: None,
    };
    let mut history = linearizable_history(&config, 5);
    let last_read =
        history.iter().rposition(|op| matches!(op.kind, OpKind::Read { .. })).expect("some read");
    let first_value = history
        .iter()
        .find_map(|op| match &op.kind {
            OpKind::Write { value } => Some(value.clone()),
            _ => None,
        })
        .expect("some write");
    history[last_read].kind = OpKind::Read { value: Some(first_value) };
    let violation = violation(&history);
    let stale = violation.stale_read.expect("proven before the search");
    assert_eq!(stale.read.0, last_read);
    assert!(stale.sources.iter().all(|source| source.overwritten_by.is_some()));
}

/// Makes the `nth` ok read (modulo their count) see a value no write produces; returns its
/// index, or `None` if the history has no ok read.
fn corrupt_one_read(history: &mut [Operation], nth: usize) -> Option<usize> {
    let reads: Vec<usize> = history
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.kind, OpKind::Read { .. }) && op.status == Status::Ok)
        .map(|(index, _)| index)
        .collect();
    let &index = reads.get(nth % reads.len().max(1))?;
    history[index].kind = OpKind::Read {
        // '#' appears in no generated value, so no write or append can produce this.
        value: Some("#corrupt".to_owned()),
    };
    Some(index)
}

fn arb_config() -> impl Strategy<Value = GenerateConfig> {
    (1..8u64, 1..120usize, 0..4usize, 0..100u32, any::<bool>(), proptest::option::of(1..4u32))
        .prop_map(|(client_count, op_count, key_count, info_per_mille, appends, value_pool)| {
            GenerateConfig {
                client_count,
                op_count,
                key_count,
                info_per_mille,
                appends,
                value_pool,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn generated_histories_are_linearizable(config in arb_config(), seed in any::<u64>()) {
        let history = linearizable_history(&config, seed);
        prop_assert_eq!(verdict(&history), CheckResult::Linearizable);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(
        config in arb_config(),
        seed in any::<u64>(),
        nth in any::<usize>(),
    ) {
        let mut history = linearizable_history(&config, seed);
        let corrupted = corrupt_one_read(&mut history, nth);
        prop_assume!(corrupted.is_some());
        let corrupted = corrupted.expect("assumed");
        match verdict(&history) {
            CheckResult::NotLinearizable(violation) => {
                // Only the corrupted key is broken, so it is the one reported.
                prop_assert_eq!(violation.key, history[corrupted].key.clone());
            }
            other => prop_assert!(false, "expected a violation, got {:?}", other),
        }
    }
}

/// A naive oracle: tries every order of the operations (and every subset of the ones of unknown
/// outcome), respecting real time. Exponential; only for histories of a handful of operations.
fn oracle_linearizable(history: &[Operation]) -> bool {
    // Drop what carries no information, as the checker's specification says.
    let ops: Vec<&Operation> = history
        .iter()
        .filter(|op| match (&op.kind, op.status) {
            (OpKind::Read { .. }, Status::Ok) => true,
            (OpKind::Read { .. }, _) => false,
            (OpKind::Write { .. } | OpKind::Append { .. }, Status::Fail) => false,
            _ => true,
        })
        .collect();
    let ret = |op: &Operation| match op.status {
        Status::Info => u64::MAX,
        _ => op.ret.expect("ok and fail ops return"),
    };
    fn step(
        state: &std::collections::BTreeMap<Option<String>, String>,
        op: &Operation,
    ) -> Option<std::collections::BTreeMap<Option<String>, String>> {
        let held = state.get(&op.key);
        let mut next = state.clone();
        match (&op.kind, op.status) {
            (OpKind::Read { value }, _) => (held == value.as_ref()).then_some(next),
            (OpKind::Write { value }, _) => {
                next.insert(op.key.clone(), value.clone());
                Some(next)
            }
            (OpKind::Cas { expected, value }, status) => {
                let matches = held == expected.as_ref();
                match status {
                    Status::Ok if !matches => None,
                    Status::Fail if matches => None,
                    Status::Fail => Some(next),
                    Status::Ok | Status::Info => {
                        if matches {
                            next.insert(op.key.clone(), value.clone());
                        }
                        Some(next)
                    }
                }
            }
            (OpKind::Append { value }, _) => {
                let mut appended = held.cloned().unwrap_or_default();
                appended.push_str(value);
                next.insert(op.key.clone(), appended);
                Some(next)
            }
        }
    }
    fn search(
        ops: &[&Operation],
        ret: &dyn Fn(&Operation) -> u64,
        placed: &mut Vec<bool>,
        state: &std::collections::BTreeMap<Option<String>, String>,
    ) -> bool {
        // Done when only operations of unknown outcome are left: they never took effect.
        if (0..ops.len()).all(|i| placed[i] || ops[i].status == Status::Info) {
            return true;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            // Some unplaced operation returned before this one was called: it must go first.
            if (0..ops.len()).any(|j| !placed[j] && j != i && ret(ops[j]) < ops[i].call) {
                continue;
            }
            if let Some(next) = step(state, ops[i]) {
                placed[i] = true;
                let found = search(ops, ret, placed, &next);
                placed[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    let mut placed = vec![false; ops.len()];
    search(&ops, &ret, &mut placed, &std::collections::BTreeMap::new())
}

fn arb_small_history() -> impl Strategy<Value = Vec<Operation>> {
    let value = prop_oneof![Just("0".to_owned()), Just("1".to_owned())];
    let kind = prop_oneof![
        proptest::option::of(prop_oneof![
            Just("0".to_owned()),
            Just("1".to_owned()),
            Just("01".to_owned()),
            Just("1".to_owned())
        ])
        .prop_map(|value| OpKind::Read { value }),
        value.clone().prop_map(|value| OpKind::Write { value }),
        (proptest::option::of(value.clone()), value.clone())
            .prop_map(|(expected, value)| OpKind::Cas { expected, value }),
        value.prop_map(|value| OpKind::Append { value }),
    ];
    let status = prop_oneof![
        6 => Just(Status::Ok),
        1 => Just(Status::Fail),
        2 => Just(Status::Info),
    ];
    let op =
        (0..3u64, proptest::option::of(Just("k".to_owned())), kind, 0..20u64, 0..10u64, status)
            .prop_map(|(client, key, kind, call, length, status)| Operation {
                client,
                key,
                kind,
                call,
                ret: if status == Status::Info && length > 6 { None } else { Some(call + length) },
                status,
            });
    proptest::collection::vec(op, 0..9)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn checker_agrees_with_a_brute_force_oracle(history in arb_small_history()) {
        let expected = oracle_linearizable(&history);
        let result = verdict(&history);
        prop_assert_eq!(
            matches!(result, CheckResult::Linearizable),
            expected,
            "checker said {:?}",
            result
        );
    }
}
