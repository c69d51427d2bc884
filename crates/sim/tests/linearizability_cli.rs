//! The `tenure-sim check-history` command, run as a binary on the files in `testdata/`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
}

fn tenure_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tenure-sim")).args(args).output().expect("the binary runs")
}

fn check_history(name: &str) -> (Option<i32>, String, String) {
    let path = testdata(name);
    let output = tenure_sim(&["check-history", path.to_str().expect("utf-8 path")]);
    (
        output.status.code(),
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

#[test]
fn linearizable_history_exits_0() {
    let (code, stdout, _) = check_history("linearizable.jsonl");
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "linearizable\n");
}

#[test]
fn violating_history_exits_1_and_explains_the_failing_key() {
    let (code, stdout, _) = check_history("not_linearizable.jsonl");
    assert_eq!(code, Some(1), "{stdout}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("not linearizable"));
    assert_eq!(lines.next(), Some("key \"x\" (5 operations checked)"));
    assert!(stdout.contains("register after the prefix: \"2\""), "{stdout}");
    assert!(
        stdout.contains("line 5: client 2 read \"1\" ok [80, 90]: the register held \"2\""),
        "{stdout}"
    );
}

#[test]
fn unknown_op_exits_3_naming_the_line() {
    let (code, stdout, stderr) = check_history("bad_unknown_op.jsonl");
    assert_eq!(code, Some(3));
    assert_eq!(stdout, "");
    assert!(stderr.contains("line 3: unknown op \"increment\""), "{stderr}");
}

#[test]
fn missing_field_exits_3_naming_the_line() {
    let (code, _, stderr) = check_history("bad_missing_field.jsonl");
    assert_eq!(code, Some(3));
    assert!(stderr.contains("line 3: missing field `call`"), "{stderr}");
}

#[test]
fn unparsable_json_exits_3_naming_the_line() {
    let (code, _, stderr) = check_history("bad_json.jsonl");
    assert_eq!(code, Some(3));
    assert!(stderr.contains("line 2: invalid JSON"), "{stderr}");
}

#[test]
fn missing_file_exits_3() {
    let (code, _, stderr) = check_history("no_such_file.jsonl");
    assert_eq!(code, Some(3));
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn bad_timeout_exits_3() {
    let path = testdata("linearizable.jsonl");
    let output =
        tenure_sim(&["check-history", path.to_str().expect("utf-8 path"), "--timeout", "soon"]);
    assert_eq!(output.status.code(), Some(3));
}

#[test]
fn explicit_timeout_is_accepted() {
    let path = testdata("linearizable.jsonl");
    let output =
        tenure_sim(&["check-history", path.to_str().expect("utf-8 path"), "--timeout", "0.5"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn no_arguments_print_usage_and_exit_3() {
    let output = tenure_sim(&[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    assert!(stderr.contains("usage: tenure-sim --seeds A..B"));
}

#[test]
fn time_bound_running_out_exits_2() {
    use tenure_sim::history::format_operation;
    use tenure_sim::linearizability::generate::{GenerateConfig, linearizable_history};

    let config = GenerateConfig {
        client_count: 20,
        op_count: 2_000,
        key_count: 0,
        ..GenerateConfig::default()
    };
    let text: String =
        linearizable_history(&config, 3).iter().map(|op| format_operation(op) + "\n").collect();
    let path =
        std::env::temp_dir().join(format!("tenure-sim-unknown-{}.jsonl", std::process::id()));
    std::fs::write(&path, text).expect("temp file written");
    let output =
        tenure_sim(&["check-history", path.to_str().expect("utf-8 path"), "--timeout", "0"]);
    std::fs::remove_file(&path).expect("temp file removed");
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    assert!(stdout.starts_with("unknown\n"), "{stdout}");
}
