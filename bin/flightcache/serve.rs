//! `flightcache serve`: run a cache server until ctrl-c or SIGTERM.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use flightcache::ServerConfig;

use crate::allocator;
use crate::cli::ServeArgs;

/// `flightcache serve`: bind, print the bound address as the first line on stdout, serve until
/// ctrl-c or SIGTERM, then finish the calls in flight.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on grpc://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    let release = tokio::spawn(allocator::release_freed_memory(allocator::RELEASE_INTERVAL));
    let served = flightcache::serve(listener, config(&args), shutdown_signal()).await;
    release.abort();
    served?;
    tracing::info!("server stopped");
    Ok(())
}

/// The server configuration `serve`'s flags ask for: each flag sets one field.
fn config(args: &ServeArgs) -> ServerConfig {
    ServerConfig {
        max_message_bytes: usize::try_from(args.max_message_size).unwrap_or(usize::MAX),
        max_concurrent_puts: args.max_concurrent_puts,
        max_puts_per_connection: args.max_puts_per_connection,
        max_connections: args.max_connections,
        upload_idle_timeout: args.upload_idle_timeout.0,
        idle_connection_timeout: args.idle_connection_timeout.0,
        keepalive_interval: (!args.keepalive.0.is_zero()).then_some(args.keepalive.0),
        keep_freed: Duration::from_secs_f64(args.keep_freed_secs),
        advertise: args.advertise.clone(),
        ..ServerConfig::default()
    }
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing calls in flight");
}
