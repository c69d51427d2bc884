//! The `tenure-sim` command.
//!
//! - `tenure-sim --seeds 0..1000` runs those seeds of the simulator and ends with one line
//!   `seeds=<n> passed=<n> failed=<n> ops=<n> ...`, which counts the snapshots taken and
//!   installed and the seeds that installed any (`seeds_with_installs=<n>`), and the events
//!   delivered to simulated watchers (`watch_events=<n>`, `seeds_with_watch_events=<n>`), and
//!   the lease clients' leases that expired (`leases_expired=<n>`,
//!   `seeds_with_lease_expiries=<n>`) and renewals the leader answered without the log
//!   (`lease_renewals_without_log=<n>`; those of followers that leaders took without a
//!   heartbeat round, `lease_renewals_without_round=<n>`), and the lock clients' fenced
//!   writes (`lock_writes=<n>`),
//!   the membership operator's completed changes (`member_changes=<n>`,
//!   `seeds_with_member_changes=<n>`, of them `leaders_removed=<n>`, and `members_joined=<n>`
//!   new nodes started, and `told_removed_early=<n>`: nodes `Replica::is_removed` called
//!   removed before their core did, each also a safety failure) and the committed entries whose
//!   quorum was checked
//!   (`quorum_checked=<n>`), and for `--profile auth` the auth checker's member outcomes,
//!   allowed and denied writes and acknowledgements checked (`auth_outcomes=<n>`,
//!   `auth_allowed=<n>`, `auth_denied=<n>`, `auth_acks=<n>`, and
//!   `seeds_with_auth_allowed_and_denied=<n>`). Exit codes: 0 all
//!   passed, 1 a safety failure (a checker or linearizability), 4 a liveness failure, 5 a crash
//!   (a panic or a fatal node error), 3 bad usage. Each failure prints the command that
//!   replays it.
//! - `tenure-sim --seed N --trace` replays one seed and prints its event trace.
//! - `tenure-sim --scenario s8 --trace` runs one seed scenario (`tenure_sim::scenario`) and
//!   prints its trace, one line per event with what it means in plain words;
//!   `--scenario list` lists them. Exit code 3 for an unknown scenario.
//! - `--profile auth` (with either) runs the swarm profile with the auth workload and checker
//!   (`tenure_sim::auth`); `--profile disk-full` the swarm profile with disks that fill up
//!   for a while (issue 18); the default is `--profile swarm`.
//! - `tenure-sim check-history FILE [--timeout SECS]` checks a history file (see
//!   `tenure_sim::history`) and exits 0 if it is linearizable, 1 if not (with an explanation), 2
//!   if the time bound ran out, and 3 on bad input or usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clap::{Parser, Subcommand};
use tenure_sim::history::{line_numbers, parse_history};
use tenure_sim::linearizability::{CheckResult, Limit, MEMO_BYTES_MAX, check, key_name};
use tenure_sim::run::{ProfileKind, SeedResult, run_seed_kind};
use tenure_sim::world::Failure;

/// Exit code when the history is linearizable.
const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code when the history is not linearizable.
const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit code when the check was cut short by its time bound (and for the unwired simulator).
const EXIT_UNKNOWN: u8 = 2;
/// Exit code for bad input: an unreadable or malformed history, or a bad command line.
const EXIT_BAD_INPUT: u8 = 3;
/// Exit code when a seed failed a safety check (same meaning as "not linearizable").
const EXIT_SAFETY: u8 = 1;
/// Exit code when a seed failed its liveness phase.
const EXIT_LIVENESS: u8 = 4;
/// Exit code when a node panicked or stopped with a fatal error.
const EXIT_CRASH: u8 = 5;

#[derive(Parser)]
#[command(name = "tenure-sim", about = "Simulation testing tools for tenure")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run these seeds, e.g. `0..1000` (end exclusive).
    #[arg(long, value_name = "A..B", value_parser = parse_range, conflicts_with = "seed")]
    seeds: Option<(u64, u64)>,
    /// Run (replay) this one seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Print the run's event trace (with --seed or --scenario).
    #[arg(long)]
    trace: bool,
    /// Run one of the seed scenarios S1-S12 (`s8`, `s6b`, ...; `list` lists them).
    #[arg(long, value_name = "ID", conflicts_with_all = ["seed", "seeds"])]
    scenario: Option<String>,
    /// Worker threads for --seeds (default: the machine's cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// The profile every seed runs with: `swarm` (each seed picks its faults and workloads),
    /// `auth` (the same, with the auth workload and its checker) or `disk-full` (the same,
    /// with disks that fill up for a while).
    #[arg(long, value_name = "NAME", value_parser = parse_profile, default_value = "swarm")]
    profile: ProfileKind,
}

fn parse_profile(text: &str) -> Result<ProfileKind, String> {
    match text {
        "swarm" => Ok(ProfileKind::Swarm),
        "auth" => Ok(ProfileKind::Auth),
        "disk-full" => Ok(ProfileKind::DiskFull),
        _ => Err(format!("unknown profile {text} (expected swarm, auth or disk-full)")),
    }
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text.split_once("..").ok_or_else(|| format!("expected A..B, got {text}"))?;
    let a: u64 = a.parse().map_err(|_| format!("not a seed: {a}"))?;
    let b: u64 = b.parse().map_err(|_| format!("not a seed: {b}"))?;
    if b <= a {
        return Err(format!("empty range {text}"));
    }
    Ok((a, b))
}

#[derive(Subcommand)]
enum Command {
    /// Check that a history (one JSON operation per line) is linearizable.
    CheckHistory {
        /// The history file.
        file: PathBuf,
        /// Give up and answer `unknown` after this many seconds.
        #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_timeout)]
        timeout: Duration,
    },
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("not a number: {text}"))?;
    Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("not a number of seconds from 0 to 2^64: {text}"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are not errors; anything else is bad usage.
            let code = if error.use_stderr() { EXIT_BAD_INPUT } else { EXIT_LINEARIZABLE };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Some(Command::CheckHistory { file, timeout }) => {
            ExitCode::from(check_history(&file, timeout))
        }
        None if cli.scenario.is_some() => {
            ExitCode::from(scenario(cli.scenario.as_deref().unwrap_or_default(), cli.trace))
        }
        None => match (cli.seeds, cli.seed) {
            (Some((a, b)), _) => ExitCode::from(run_seeds(a, b, cli.threads, cli.profile)),
            (None, Some(seed)) => ExitCode::from(replay(seed, cli.trace, cli.profile)),
            (None, None) => {
                eprintln!(
                    "usage: tenure-sim --seeds A..B | --seed N [--trace] | --scenario ID \
                     [--trace] | check-history FILE"
                );
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
    }
}

fn exit_code(failure: &Failure) -> u8 {
    match failure {
        Failure::Safety(_) => EXIT_SAFETY,
        Failure::Liveness(_) => EXIT_LIVENESS,
        Failure::Crash(_) => EXIT_CRASH,
    }
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Safety(m) => format!("safety failure: {m}"),
        Failure::Liveness(m) => format!("liveness failure: {m}"),
        Failure::Crash(m) => format!("crash: {m}"),
    }
}

/// Runs a seed scenario: its trace with `trace`, else one line on what it showed.
fn scenario(id: &str, trace: bool) -> u8 {
    use std::io::Write;
    use tenure_sim::scenario;
    let mut out = std::io::stdout().lock();
    if id == "list" {
        for s in scenario::SCENARIOS {
            let _ = writeln!(out, "{:<20} {}", s.id, s.title);
        }
        return EXIT_LINEARIZABLE;
    }
    let run = scenario::find(id).and_then(scenario::run);
    match run {
        Err(e) => {
            eprintln!("tenure-sim: {e}");
            EXIT_BAD_INPUT
        }
        Ok(t) => {
            if trace {
                let _ = out.write_all(t.render().as_bytes());
            } else {
                let _ = writeln!(out, "{}: {} steps; --trace prints them", t.title, t.steps.len());
            }
            EXIT_LINEARIZABLE
        }
    }
}

fn replay(seed: u64, trace: bool, kind: ProfileKind) -> u8 {
    use std::io::Write;
    // Write errors (a closed pipe, as with `| head`) end the output, not the run's verdict.
    let mut out = std::io::stdout().lock();
    let profile = kind.profile(seed);
    let _ = writeln!(out, "seed {seed}: {profile:?}");
    let r = run_seed_kind(seed, kind, trace);
    for line in &r.trace {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    match &r.failure {
        None => {
            let _ = writeln!(
                out,
                "seed {seed} passed: ops={} messages={} snapshots={} installs={} watch_events={} \
                 leases_expired={} churn={:?} auth={:?}",
                r.ops,
                r.messages,
                r.snapshots_taken,
                r.snapshots_installed,
                r.watch_events,
                r.leases_expired,
                r.churn,
                r.auth
            );
            EXIT_LINEARIZABLE
        }
        Some(f) => {
            let _ = writeln!(out, "seed {seed} FAILED: {}", describe(f));
            exit_code(f)
        }
    }
}

fn run_seeds(first: u64, end: u64, threads: Option<usize>, kind: ProfileKind) -> u8 {
    // Panics are caught and reported per seed; keep the default hook from printing them.
    std::panic::set_hook(Box::new(|_| {}));
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicU64::new(first);
    let started = Instant::now();
    let results: Mutex<Vec<SeedResult>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        return;
                    }
                    let r = run_seed_kind(seed, kind, false);
                    if let Some(f) = &r.failure {
                        println!("seed {seed} FAILED: {}", describe(f));
                        let profile = match kind {
                            ProfileKind::Swarm => "",
                            ProfileKind::Auth => " --profile auth",
                            ProfileKind::DiskFull => " --profile disk-full",
                        };
                        println!(
                            "  replay: cargo run --release -p tenure-sim --{profile} --seed {seed} --trace"
                        );
                    }
                    results.lock().expect("results").push(r);
                }
            });
        }
    });
    let results = results.into_inner().expect("results");
    let failed: Vec<&SeedResult> = results.iter().filter(|r| r.failure.is_some()).collect();
    let ops: u64 = results.iter().map(|r| r.ops).sum();
    let messages: u64 = results.iter().map(|r| r.messages).sum();
    let snapshots: u64 = results.iter().map(|r| r.snapshots_taken).sum();
    let installs: u64 = results.iter().map(|r| r.snapshots_installed).sum();
    let seeds_installing = results.iter().filter(|r| r.snapshots_installed > 0).count();
    let watch_events: u64 = results.iter().map(|r| r.watch_events).sum();
    let seeds_watching = results.iter().filter(|r| r.watch_events > 0).count();
    let leases_expired: u64 = results.iter().map(|r| r.leases_expired).sum();
    let seeds_expiring = results.iter().filter(|r| r.leases_expired > 0).count();
    let renewals_without_log: u64 = results.iter().map(|r| r.lease_renewals_without_log).sum();
    let renewals_without_round: u64 = results.iter().map(|r| r.lease_renewals_without_round).sum();
    let lock_writes: u64 = results.iter().map(|r| r.lock_writes).sum();
    let member_changes: u64 = results.iter().map(|r| r.churn.completed()).sum();
    let seeds_changing = results.iter().filter(|r| r.churn.completed() > 0).count();
    let leaders_removed: u64 = results.iter().map(|r| r.churn.leaders_removed).sum();
    let joined: u64 = results.iter().map(|r| r.churn.joined).sum();
    let told_early: u64 = results.iter().map(|r| r.churn.told_removed_early).sum();
    let quorum_checked: u64 = results.iter().map(|r| r.quorum_checked).sum();
    let auth_allowed: u64 = results.iter().map(|r| r.auth.allowed).sum();
    let auth_denied: u64 = results.iter().map(|r| r.auth.denied).sum();
    let auth_outcomes: u64 = results.iter().map(|r| r.auth.outcomes).sum();
    let auth_acks: u64 = results.iter().map(|r| r.auth.acks).sum();
    let seeds_auth_both =
        results.iter().filter(|r| r.auth.allowed > 0 && r.auth.denied > 0).count();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "seeds={} passed={} failed={} ops={ops} messages={messages} snapshots={snapshots} \
         installs={installs} seeds_with_installs={seeds_installing} watch_events={watch_events} \
         seeds_with_watch_events={seeds_watching} leases_expired={leases_expired} \
         seeds_with_lease_expiries={seeds_expiring} \
         lease_renewals_without_log={renewals_without_log} \
         lease_renewals_without_round={renewals_without_round} lock_writes={lock_writes} \
         member_changes={member_changes} seeds_with_member_changes={seeds_changing} \
         leaders_removed={leaders_removed} members_joined={joined} \
         told_removed_early={told_early} \
         quorum_checked={quorum_checked} auth_outcomes={auth_outcomes} \
         auth_allowed={auth_allowed} auth_denied={auth_denied} auth_acks={auth_acks} \
         seeds_with_auth_allowed_and_denied={seeds_auth_both} seconds={seconds:.1} \
         seeds_per_second={:.1}",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        results.len() as f64 / seconds.max(1e-9),
    );
    // The most severe failure decides the exit code.
    let worst =
        failed.iter().filter_map(|r| r.failure.as_ref()).map(exit_code).min_by_key(|c| match *c {
            EXIT_SAFETY => 0,
            EXIT_CRASH => 1,
            _ => 2,
        });
    worst.unwrap_or(EXIT_LINEARIZABLE)
}

fn check_history(file: &PathBuf, timeout: Duration) -> u8 {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: cannot read {}: {error}", file.display());
            return EXIT_BAD_INPUT;
        }
    };
    let history = match parse_history(&text) {
        Ok(history) => history,
        Err(error) => {
            eprintln!("error: {}: {error}", file.display());
            return EXIT_BAD_INPUT;
        }
    };
    match check(&history, timeout) {
        Ok(CheckResult::Linearizable) => {
            println!("linearizable");
            EXIT_LINEARIZABLE
        }
        Ok(CheckResult::NotLinearizable(violation)) => {
            println!("not linearizable");
            // The violation counts operations; the reader of a file wants its line numbers.
            let lines = line_numbers(&text);
            print!("{}", violation.explain(&|index| format!("line {}:", lines[index])));
            EXIT_NOT_LINEARIZABLE
        }
        Ok(CheckResult::Unknown { limit, key, keys_decided, keys_total }) => {
            println!("unknown");
            let bound = match limit {
                Limit::Time => format!("the time bound of {timeout:?}"),
                Limit::Memory => format!("the memory bound of {MEMO_BYTES_MAX} bytes"),
            };
            println!(
                "{bound} ran out while checking key {} ({keys_decided} of {keys_total} keys decided, all linearizable)",
                key_name(key.as_deref())
            );
            EXIT_UNKNOWN
        }
        Err(error) => {
            eprintln!("error: {}: {error}", file.display());
            EXIT_BAD_INPUT
        }
    }
}
