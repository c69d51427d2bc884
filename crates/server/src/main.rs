//! The `tenure` binary: parses the command line and hands off to the library
//! (see `tenure_server`'s module map).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::error::ErrorKind;
use tenure_server::cli::{Cli, Command, DevArgs, EndpointCommand, ServeConfig, one_line};
use tenure_server::cli::{bench, client, demo, dev, lease, member};
use tenure_server::member::Member;

/// mimalloc rather than glibc's malloc (see the dependency's note in Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            Ok(cfg) => serve(cfg, args.dashboard.clone()),
        },
        Command::Dev(args) => run_dev(args),
        Command::Bench(args) => bench::main(&args),
        Command::Demo(args) => {
            let mut out = std::io::stdout().lock();
            match demo::run(&mut out, Duration::from_millis(args.pace_ms)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tenure demo: {e}");
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
            Command::Watch(a) => client::watch(a).await,
            Command::Lease { command } => lease::lease(command).await,
            Command::Lock(a) => lease::lock(a).await,
            Command::Elect(a) => lease::elect(a).await,
            Command::Member { command } => member::member(command).await,
            Command::MoveLeader(a) => member::move_leader(a).await,
            Command::Endpoint { command: EndpointCommand::Status(a) } => {
                client::endpoint_status(a).await
            }
            Command::Snapshot { command } => tenure_server::cli::snapshot::run(command).await,
            Command::Auth { command } => tenure_server::cli::auth::auth(command).await,
            Command::User { command } => tenure_server::cli::auth::user(command).await,
            Command::Role { command } => tenure_server::cli::auth::role(command).await,
            Command::Serve(_) | Command::Dev(_) | Command::Demo(_) | Command::Bench(_) => {
                unreachable!("handled by main")
            }
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

/// Logs go to stderr, one readable line each; `RUST_LOG` overrides the level.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The server's tokio runtime: the replica runs on its own threads, so two workers serve
/// gRPC and the peer transport.
fn server_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled, so a signal that arrives while the member is still starting is
/// kept and acted on once it has started, rather than killing the process half-way.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn serve(cfg: ServeConfig, dashboard: Option<String>) -> ExitCode {
    init_logs();
    let runtime = match server_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tenure serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        tracing::info!("starting {}", cfg.summary());
        let stop = shutdown_signal();
        let member = Member::start(&cfg, &Default::default()).await?;
        let urls: Vec<String> = cfg.advertise_client_urls.iter().map(|u| u.to_string()).collect();
        tracing::info!("{} serving clients on {}", cfg.name, urls.join(","));
        let replica = member.handle();
        let _dashboard = match dashboard {
            None => None,
            Some(addr) => {
                let d = tenure_server::dashboard::watch_member(&addr, &cfg, &member).await?;
                tracing::info!("{} dashboard on http://{}", cfg.name, d.addr());
                Some(d)
            }
        };
        tokio::select! {
            _ = stop => {}
            // The replica stopped by itself: its storage or state machine failed (logged).
            _ = replica.exited() => {
                member.shutdown().await?;
                anyhow::bail!("the replica stopped; see the log above");
            }
            // Removed from the cluster: the others no longer answer it as a member (etcd
            // stops the same way).
            _ = member.removed() => {
                tracing::warn!("{} has been permanently removed from the cluster; stopping", cfg.name);
                // Answers in flight (the removal's own, when a follower forwarded it here)
                // get a moment to leave.
                tokio::time::sleep(cfg.election_timeout.max(Duration::from_secs(1))).await;
                member.shutdown().await?;
                return Ok(());
            }
        }
        tracing::info!("{} shutting down", cfg.name);
        member.shutdown().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenure serve: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_dev(args: DevArgs) -> ExitCode {
    if args.snapshot_count == 0 || args.snapshot_catchup_entries == 0 {
        eprintln!("tenure dev: --snapshot-count and --snapshot-catchup-entries must be positive");
        return ExitCode::from(2);
    }
    init_logs();
    let runtime = match server_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tenure dev: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The signal handlers are installed inside the runtime, before the cluster starts.
    let result = runtime.block_on(async { dev::run(args, shutdown_signal()).await });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tenure dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}
