//! Runs a scenario script file and prints its trace: `cargo run -p tenure-raft --example
//! script -- FILE`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: script FILE");
    let text = std::fs::read_to_string(&path).expect("read script");
    print!("{}", tenure_raft::testkit::run_script(&text));
}
