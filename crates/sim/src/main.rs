//! The `tenure-sim` command.
//!
//! `tenure-sim check-history FILE [--timeout SECS]` checks a history file (see
//! `tenure_sim::history`) and exits 0 if it is linearizable, 1 if not (with an explanation), 2
//! if the time bound ran out, and 3 on bad input or usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tenure_sim::history::{line_numbers, parse_history};
use tenure_sim::linearizability::{CheckResult, Limit, MEMO_BYTES_MAX, check, key_name};

/// Exit code when the history is linearizable.
const EXIT_LINEARIZABLE: u8 = 0;
/// Exit code when the history is not linearizable.
const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit code when the check was cut short by its time bound (and for the unwired simulator).
const EXIT_UNKNOWN: u8 = 2;
/// Exit code for bad input: an unreadable or malformed history, or a bad command line.
const EXIT_BAD_INPUT: u8 = 3;

#[derive(Parser)]
#[command(name = "tenure-sim", about = "Simulation testing tools for tenure")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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
        None => {
            eprintln!("simulator not yet wired; use check-history");
            ExitCode::from(EXIT_UNKNOWN)
        }
    }
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
