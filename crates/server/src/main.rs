//! The `tenure` binary: parses the command line and hands off to the library
//! (see `tenure_server`'s module map).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use tenure_server::cli::{Cli, Command, EndpointCommand, MemberCommand, ServeConfig, one_line};
use tenure_server::{client, demo};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!("{}", one_line(&e));
                return ExitCode::from(2);
            }
        },
    };
    match cli.command {
        Command::Serve(args) => match ServeConfig::from_args(&args) {
            Err(e) => {
                eprintln!("tenure serve: {e}");
                ExitCode::from(2)
            }
            Ok(cfg) => {
                eprintln!(
                    "tenure serve: configuration valid ({}); not yet wired to the replica runtime",
                    cfg.summary()
                );
                ExitCode::from(2)
            }
        },
        Command::Dev(args) => {
            let mut out = std::io::stdout().lock();
            match demo::run(&mut out, Duration::from_millis(args.pace_ms)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tenure dev: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        command => run_client(command),
    }
}

/// Runs a client subcommand on a small runtime; errors print as etcdctl prints them.
fn run_client(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &command {
            Command::Put(a) => client::put(a).await,
            Command::Get(a) => client::get(a).await,
            Command::Del(a) => client::del(a).await,
            Command::Member { command: MemberCommand::List(a) } => client::member_list(a).await,
            Command::Endpoint { command: EndpointCommand::Status(a) } => {
                client::endpoint_status(a).await
            }
            Command::Serve(_) | Command::Dev(_) => unreachable!("handled by main"),
        }
    });
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
