//! `flightcache`: run a cache server, move table files in and out of one, and benchmark it.
//!
//! `main` parses the command line ([`cli`]) and runs one subcommand, each in a file of its own
//! ([`serve`], [`push`], [`get`], [`tables`] for list/info/drop/clear/expire/persist/ttl/stats,
//! [`auth`] for whoami/hash-password/new-token and the client's credentials, [`bench`]);
//! errors are one `error:` line on stderr and exit code 1.

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

mod allocator;
mod auth;
mod bench;
mod cli;
mod get;
mod output;
mod push;
mod serve;
mod sql;
mod tables;
mod tail;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if matches!(cli.command, Command::Serve(_)) {
        builder.on_thread_park(allocator::collect_when_parking);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Push(args) => push::push(args).await,
        Command::Get(args) => get::get(args).await,
        Command::Tail(args) => tail::tail(args).await,
        Command::Sql(args) => sql::sql(args).await,
        Command::List(args) => tables::list(args).await,
        Command::Info(args) => tables::info(args).await,
        Command::Drop(args) => tables::drop_table(args).await,
        Command::Clear(args) => tables::clear(args).await,
        Command::Expire(args) => tables::expire(args).await,
        Command::Persist(args) => tables::persist(args).await,
        Command::Ttl(args) => tables::ttl(args).await,
        Command::Stats(args) => tables::stats(args).await,
        Command::Whoami(args) => auth::whoami(args).await,
        Command::HashPassword => auth::hash_password_command(),
        Command::NewToken => auth::new_token_command(),
        Command::Bench(args) => bench::run_bench(args).await,
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal (not in log files or the journal), and never under NO_COLOR.
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours)
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
