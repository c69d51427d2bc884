//! Scenario scripts: each file in `tests/scenarios/` is a script of commands with the trace
//! they must produce. Run with `REWRITE=1` to regenerate after reviewing the diff.

use std::path::Path;

fn check(name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(name);
    tenure_raft::testkit::check_script_file(&path);
}

#[test]
fn s5_data_flows_only_from_leader() {
    check("s5_data_flows_only_from_leader.txt");
}
