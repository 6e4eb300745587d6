//! `flightcache serve`: run a cache server until ctrl-c or SIGTERM.

use std::io::Write;

use anyhow::Context;
use flightcache::Eviction;
use flightcache::ServerConfig;
use flightcache::auth::users::Users;
use flightcache::server::config::{DEFAULT_MEMORY_SHARE, MemoryLimit, default_max_memory};
use flightcache::server::tls::ServerTls;
use indicatif::HumanBytes;

use crate::allocator;
use crate::cli::ServeArgs;

/// `flightcache serve`: bind, print the bound address as the first line on stdout, serve until
/// ctrl-c or SIGTERM, then finish the calls in flight.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    protected_mode(&args, addr)?;
    #[cfg(unix)]
    raise_open_file_limit(&args);
    let metrics = match args.metrics {
        Some(metrics_addr) => Some(
            tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("serving metrics on {metrics_addr}"))?,
        ),
        None => None,
    };
    // Read once: the default budget and the startup line that explains it.
    let default_memory = args.max_memory.is_none().then(default_max_memory).flatten();
    // Everything is read and checked (users, TLS material) before the line that says the
    // server listens: a script reading that line may rely on it.
    let config = config(&args, default_memory.as_ref())?;
    if let Some(problem) = config
        .tls
        .as_ref()
        .and_then(|tls| tls.validity_problem(std::time::SystemTime::now()))
    {
        tracing::warn!("{problem}");
    }
    if config.test_clock {
        tracing::warn!(
            "--test-clock: admins may move the clock that times to live run on; \
             for test servers only"
        );
    }
    // One write, so that a reader of the first line alone (a script) has all of it at once.
    let scheme = if config.tls.is_some() {
        "grpc+tls"
    } else {
        "grpc"
    };
    let budget = budget_line(&config, default_memory.as_ref());
    // The data directory is locked and its tables served again before the line is printed.
    let server = flightcache::Server::open(config)?;
    let mut startup = format!("listening on {scheme}://{addr}\n{budget}\n");
    if let (Some(restored), Some(dir)) = (server.restored(), &args.data_dir) {
        startup += &restore_line(&restored, dir, args.durability.into());
    }
    if let Some(metrics) = &metrics {
        startup += &format!("metrics on http://{}/metrics\n", metrics.local_addr()?);
    }
    // Ready to stop cleanly before anyone is told where to connect: a SIGTERM right after the
    // startup line ends the server through its shutdown, not by the signal's default action.
    let shutdown = shutdown_signal()?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(startup.as_bytes())?;
    stdout.flush()?;
    drop(stdout);
    let release = tokio::spawn(allocator::release_freed_memory(allocator::RELEASE_INTERVAL));
    let served = server.serve(listener, metrics, shutdown).await;
    release.abort();
    served?;
    tracing::info!("server stopped");
    Ok(())
}

/// Redis's protected mode: a server without users answers only on loopback, unless
/// `--no-auth` says to expose it, or mutual TLS (`--tls-client-ca`) admits only clients
/// holding a certificate from that CA (each with every right).
fn protected_mode(args: &ServeArgs, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    if let Some(metrics) = args.metrics
        && !metrics.ip().is_loopback()
    {
        tracing::warn!(
            %metrics,
            "the metrics page has no authentication: anyone who reaches it sees the cache's \
             counters and memory (no keys or data); serve it on a private interface"
        );
    }
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if args.users.is_none() && !args.no_auth && args.tls_client_ca.is_none() {
        anyhow::bail!(
            "refusing to serve on {addr} without users: anyone who can reach it could read, \
             overwrite and drop every table. Give users with --users FILE (see docs/security.md; \
             `flightcache hash-password` makes password hashes), require \
             client certificates with --tls-client-ca, listen on 127.0.0.1, or pass --no-auth \
             to serve everyone on purpose"
        );
    }
    if args.users.is_some() && args.tls_cert.is_none() {
        tracing::warn!(
            %addr,
            "serving users without TLS: passwords and tokens cross the network in clear text; \
             add --tls-cert and --tls-key"
        );
    }
    Ok(())
}

/// Raise the soft limit on open files towards the hard one, as Redis does for `maxclients`,
/// so that the connection limits, not the file limit, decide how many clients are served;
/// warn if even the hard limit is short of what they need (accepting then fails, and pauses,
/// once the files run out).
#[cfg(unix)]
fn raise_open_file_limit(args: &ServeArgs) {
    use flightcache::server::config::MAX_METRICS_CONNECTIONS;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // Connections, the metrics listener's, and room for listeners, files and the runtime.
    const OTHER_FILES: u64 = 64;
    let metrics = if args.metrics.is_some() {
        MAX_METRICS_CONNECTIONS as u64
    } else {
        0
    };
    let needed = args.max_connections as u64 + metrics + OTHER_FILES;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = needed.max(soft).min(hard);
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_err() {
        tracing::warn!(soft, hard, "could not raise the open-file limit");
    }
    if hard < needed {
        tracing::warn!(
            limit = hard,
            needed,
            "the open-file limit is below what --max-connections and the metrics listener may \
             need: connections past it cannot be accepted until others close. Raise it \
             (ulimit -n, systemd's LimitNOFILE=) or lower --max-connections"
        );
    }
}

/// The server configuration `serve`'s flags ask for: each flag sets one field.
fn config(args: &ServeArgs, default_memory: Option<&MemoryLimit>) -> anyhow::Result<ServerConfig> {
    if args.max_puts_per_caller == 0 {
        anyhow::bail!("--max-puts-per-caller must be at least 1: a caller needs a slot to upload");
    }
    let users = args
        .users
        .as_deref()
        .map(Users::load)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            ServerTls::from_files(cert, key, args.tls_client_ca.as_deref())
                .map_err(anyhow::Error::msg)?,
        ),
        _ => None,
    };
    Ok(ServerConfig {
        max_message_bytes: usize::try_from(args.max_message_size).unwrap_or(usize::MAX),
        max_concurrent_puts: args.max_concurrent_puts,
        max_concurrent_queries: args
            .max_queries
            .unwrap_or_else(flightcache::server::config::default_max_concurrent_queries)
            .max(1),
        query_timeout: args.query_timeout.0,
        max_puts_per_connection: args.max_puts_per_connection,
        max_puts_per_caller: args.max_puts_per_caller,
        min_upload_rate: args.min_upload_rate,
        max_connections: args.max_connections,
        request_idle_timeout: args.request_idle_timeout.0,
        idle_connection_timeout: args.idle_connection_timeout.0,
        shutdown_timeout: args.shutdown_timeout.0,
        keepalive_interval: (!args.keepalive.0.is_zero()).then_some(args.keepalive.0),
        keep_freed: args.keep_freed.0,
        advertise: args.advertise.clone(),
        test_clock: args.test_clock,
        data_dir: args.data_dir.clone(),
        durability: args.durability.into(),
        max_memory: match args.max_memory {
            Some(0) => None,
            Some(bytes) => Some(bytes),
            None => default_memory.map(|limit| limit.budget),
        },
        eviction: args.eviction.into(),
        // The process is only a server: the budget bounds all of its memory.
        count_process_memory: true,
        release_free_memory: Some(allocator::release_free_memory_now),
        users,
        users_file: args.users.clone(),
        token_ttl: args.token_ttl.0,
        tls,
        ..ServerConfig::default()
    })
}

/// The startup line that tells the operator the memory budget and where it comes from
/// (`default_memory` when --max-memory was not given).
fn budget_line(config: &ServerConfig, default_memory: Option<&MemoryLimit>) -> String {
    let eviction = match config.eviction {
        Eviction::Lru => "evicting least recently used tables when full",
        Eviction::NoEviction => "refusing uploads when full (--eviction noeviction)",
    };
    match (config.max_memory, default_memory) {
        (None, _) => "memory budget: none (--max-memory 0); memory is not limited".to_string(),
        (Some(budget), None) => {
            format!(
                "memory budget: {} (--max-memory), {eviction}",
                HumanBytes(budget)
            )
        }
        (Some(budget), Some(limit)) => format!(
            "memory budget: {} ({:.0}% of {}, {}), {eviction}",
            HumanBytes(budget),
            DEFAULT_MEMORY_SHARE * 100.0,
            HumanBytes(limit.available),
            limit.source
        ),
    }
}

/// The startup line that says what came back from the data directory.
fn restore_line(
    restored: &flightcache::RestoreReport,
    dir: &std::path::Path,
    durability: flightcache::Durability,
) -> String {
    let mode = match durability {
        flightcache::Durability::Always => "always",
        flightcache::Durability::Background => "background",
    };
    let mut line = format!(
        "data directory {} (--durability {mode}): {} tables, {} back from disk",
        dir.display(),
        restored.tables,
        HumanBytes(restored.bytes)
    );
    if restored.expired > 0 {
        line += &format!("; {} expired while down, removed", restored.expired);
    }
    if restored.quarantined > 0 {
        line += &format!(
            "; {} unreadable files moved to {}",
            restored.quarantined,
            dir.join("quarantine").display()
        );
    }
    line + "\n"
}

/// A future that completes on ctrl-c or SIGTERM, with both handlers installed now.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await.ok();
        tracing::info!("shutting down: finishing calls in flight");
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use flightcache::Eviction;

    use super::config;
    use crate::cli::{Cli, Command, ServeArgs};

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let cli = Cli::parse_from(["flightcache", "serve"].iter().chain(flags));
        match cli.command {
            Command::Serve(args) => args,
            _ => unreachable!("parsed a serve command"),
        }
    }

    /// Every limit flag reaches the field the server reads, with its value and unit (the
    /// integration tests then hold each field to its behaviour). The old names still work.
    #[test]
    fn every_limit_flag_sets_its_field() {
        let args = serve_args(&[
            "--max-message-size",
            "1KiB",
            "--max-concurrent-puts",
            "3",
            "--max-puts-per-connection",
            "2",
            "--max-puts-per-caller",
            "1",
            "--min-upload-rate",
            "2KiB",
            "--max-connections",
            "5",
            "--request-idle-timeout",
            "7s",
            "--idle-connection-timeout",
            "2m",
            "--shutdown-timeout",
            "5s",
            "--keepalive",
            "0",
            "--keep-freed",
            "500ms",
            "--max-memory",
            "64MiB",
            "--eviction",
            "noeviction",
            "--token-ttl",
            "1h",
            "--test-clock",
        ]);
        let set = config(&args, None).unwrap();
        assert_eq!(set.max_message_bytes, 1024);
        assert_eq!(set.max_concurrent_puts, 3);
        assert_eq!(set.max_puts_per_connection, 2);
        assert_eq!(set.max_puts_per_caller, 1);
        assert_eq!(set.min_upload_rate, 2048);
        assert_eq!(set.max_connections, 5);
        assert_eq!(set.request_idle_timeout, Duration::from_secs(7));
        assert_eq!(set.idle_connection_timeout, Duration::from_secs(120));
        assert_eq!(set.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(set.keepalive_interval, None);
        assert_eq!(set.keep_freed, Duration::from_millis(500));
        assert_eq!(set.max_memory, Some(64 << 20));
        assert_eq!(set.eviction, Eviction::NoEviction);
        assert_eq!(set.token_ttl, Duration::from_secs(3600));
        assert!(set.test_clock);
        assert!(!config(&serve_args(&[]), None).unwrap().test_clock);
        let old_names = serve_args(&["--upload-idle-timeout", "9", "--keep-freed-secs", "3"]);
        let old = config(&old_names, None).unwrap();
        assert_eq!(old.request_idle_timeout, Duration::from_secs(9));
        assert_eq!(old.keep_freed, Duration::from_secs(3));
        // 0 means no budget; a per-caller limit of 0 is refused.
        assert_eq!(
            config(&serve_args(&["--max-memory", "0"]), None)
                .unwrap()
                .max_memory,
            None
        );
        let refused = config(&serve_args(&["--max-puts-per-caller", "0"]), None).unwrap_err();
        assert!(refused.to_string().contains("at least 1"), "{refused}");
    }
}
