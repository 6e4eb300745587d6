//! `flightcache`: run a cache server, move table files in and out of one, and benchmark it.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use clap::{Args, Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use flightcache::bench::{self, BenchConfig, data::arrow_bytes};
use flightcache::client::DEFAULT_SERVER_URL;
use flightcache::files::{TableSink, TableSource};
use flightcache::server::{DEFAULT_MAX_CONCURRENT_PUTS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_PORT};
use flightcache::{CacheClient, ServerConfig, TableKey, TableStore};

mod allocator;

/// An Apache Arrow Flight table cache: push tables in, stream them out, no serialization step.
///
/// Start a server with `flightcache serve`, then `push` Parquet, Arrow IPC or CSV files into it
/// and `get` them back from any Flight client (this one, or pyarrow.flight).
#[derive(Debug, Parser)]
#[command(version, about, long_about, propagate_version = true)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a cache server until ctrl-c or SIGTERM.
    ///
    /// Prints `listening on grpc://HOST:PORT` as its first line on stdout.
    Serve(ServeArgs),
    /// Upload a Parquet, Arrow IPC (.arrow, .feather) or CSV file as a table.
    Push(PushArgs),
    /// Download a table into a file (by extension), or preview its first rows.
    Get(GetArgs),
    /// List the cached tables.
    List(ListArgs),
    /// Show a table's schema, rows and size.
    Info(KeyArgs),
    /// Remove a table.
    Drop(KeyArgs),
    /// Remove every table.
    Clear(ServerArgs),
    /// Time Flight put and get against JSON over a socket and a raw socket transfer.
    ///
    /// Without --server it starts its own server on 127.0.0.1 (real TCP loopback).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The server to talk to.
    #[arg(long, env = "FLIGHTCACHE_SERVER", default_value = DEFAULT_SERVER_URL, value_name = "URL")]
    server: String,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on; 0.0.0.0 listens on every interface.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Largest single Flight message accepted, in bytes (suffixes: KiB, MiB, GiB). pyarrow
    /// sends a whole table chunk as one message, so keep it above your largest chunk.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_MESSAGE_BYTES as u64)]
    max_message_size: u64,
    /// Uploads accepted at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT_PUTS)]
    max_concurrent_puts: usize,
    /// Keep the memory of dropped or replaced tables this long for the next uploads, then give
    /// it back to the system. Filling fresh memory is most of what a large put costs (on a VM
    /// up to 2-3 s per GiB); 0 gives memory back at once.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds,
          default_value_t = flightcache::slab::DEFAULT_REUSE_WINDOW.as_secs_f64())]
    keep_freed_secs: f64,
}

#[derive(Debug, Args)]
struct PushArgs {
    /// The file to upload: .parquet, .arrow, .feather or .csv.
    file: PathBuf,
    /// The key to store it under [default: the file name without its extension].
    #[arg(long)]
    key: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// The table's key.
    key: String,
    /// Write the table here: .parquet, .arrow, .feather or .csv. Without it, print a preview.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Rows shown in the preview.
    #[arg(long, default_value_t = 10, value_name = "N")]
    rows: usize,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only list keys that start with this.
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
struct KeyArgs {
    /// The table's key.
    key: String,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Arrow size of the random float64 table (suffixes: KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "128MiB")]
    size: u64,
    /// Number of float64 columns of the random table.
    #[arg(long, default_value_t = bench::DEFAULT_BENCH_COLS)]
    cols: usize,
    /// Benchmark this file's table instead of random data.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// Timed rounds; medians are reported.
    #[arg(long, default_value_t = bench::DEFAULT_BENCH_ROUNDS)]
    repeat: usize,
    /// Measure this server instead of starting one.
    #[arg(long, value_name = "URL", conflicts_with = "in_process")]
    server: Option<String>,
    /// Run the server inside the benchmark process instead of as a child `flightcache serve`
    /// (whose memory the report then shows on its own).
    #[arg(long)]
    in_process: bool,
    /// Skip the JSON baseline, which takes most of the run's time.
    #[arg(long)]
    no_json: bool,
    /// Also measure this many clients putting and getting at once, each on its own connection
    /// and key.
    #[arg(long, default_value_t = 1, value_name = "N")]
    clients: usize,
    /// Run the small-table latency benchmark instead: 1,000 rows x 8 columns, put and get one at
    /// a time, with 1 and 16 clients (or --clients), reporting median and p99 latency and ops/s.
    #[arg(long)]
    small: bool,
    /// Operations per client in the --small run.
    #[arg(long, default_value_t = bench::latency::DEFAULT_SMALL_OPERATIONS, value_name = "N")]
    operations: usize,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write a bar chart of the results to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

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
        Command::Serve(args) => serve(args).await,
        Command::Push(args) => push(args).await,
        Command::Get(args) => get(args).await,
        Command::List(args) => list(args).await,
        Command::Info(args) => info(args).await,
        Command::Drop(args) => drop_table(args).await,
        Command::Clear(args) => clear(args).await,
        Command::Bench(args) => run_bench(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on grpc://{addr}")?;
    stdout.flush()?;
    drop(stdout);
    let config = ServerConfig {
        max_message_bytes: usize::try_from(args.max_message_size).unwrap_or(usize::MAX),
        max_concurrent_puts: args.max_concurrent_puts,
        ..ServerConfig::default()
    };
    let release = tokio::spawn(allocator::release_freed_memory(allocator::RELEASE_INTERVAL));
    let store = TableStore::with_reuse_window(Duration::from_secs_f64(args.keep_freed_secs));
    let served = flightcache::serve(listener, store, config, shutdown_signal()).await;
    release.abort();
    served?;
    tracing::info!("server stopped");
    Ok(())
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

async fn push(args: PushArgs) -> anyhow::Result<()> {
    let path = &args.file;
    let key = match &args.key {
        Some(key) => TableKey::try_new(key.as_str())?,
        None => TableKey::try_new(file_stem(path)?)?,
    };
    let source =
        TableSource::open(path).with_context(|| format!("reading `{}`", path.display()))?;
    let mut client = connect(&args.server).await?;
    let bar = byte_bar(source.bytes_hint(), "push");
    let schema = Arc::clone(source.schema());
    let counter = bar.clone();
    let total_rows = source.rows();
    let batches = source.into_stream().inspect_ok(move |batch| {
        let bytes = arrow_bytes(std::slice::from_ref(batch));
        // The file's own size is only a hint; with an exact row count, the first batch's bytes
        // per row give a better total.
        if let (0, Some(rows)) = (counter.position(), total_rows)
            && batch.num_rows() > 0
        {
            counter.set_length(rows * bytes / batch.num_rows() as u64);
        }
        counter.inc(bytes);
    });
    let start = Instant::now();
    let summary = client
        .put(&key, schema, batches)
        .await
        .with_context(|| format!("pushing `{}` as `{key}`", path.display()))?;
    bar.finish_and_clear();
    let line = summary_line("pushed", &key, summary.rows, summary.bytes, start);
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

async fn get(args: GetArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let info = client.info(&key).await?;
    let start = Instant::now();
    let stream = client.get(&key).await?;
    let Some(path) = &args.output else {
        return preview(stream, info.rows, args.rows).await;
    };
    let bar = byte_bar(Some(info.bytes), "get");
    let schema = Arc::clone(stream.schema());
    let mut rows = 0;
    TableSink::write_stream(path, &schema, stream, |batch| {
        rows += batch.num_rows() as u64;
        bar.inc(arrow_bytes(std::slice::from_ref(batch)));
    })
    .await
    .with_context(|| format!("writing `{key}` to `{}`", path.display()))?;
    bar.finish_and_clear();
    let line = summary_line("wrote", &key, rows, info.bytes, start);
    writeln!(std::io::stdout(), "{line} to `{}`", path.display())?;
    Ok(())
}

/// Print the first `limit` rows of a table, then stop reading it.
async fn preview(
    mut stream: flightcache::TableStream,
    total_rows: u64,
    limit: usize,
) -> anyhow::Result<()> {
    let schema = Arc::clone(stream.schema());
    let mut shown: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    while rows < limit {
        let Some(batch) = stream.next().await.transpose()? else {
            break;
        };
        let take = batch.num_rows().min(limit - rows);
        rows += take;
        shown.push(batch.slice(0, take));
    }
    drop(stream); // cancels the rest of the download
    let mut out = std::io::stdout().lock();
    if shown.is_empty() {
        let fields: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        writeln!(out, "(no rows) columns: {}", fields.join(", "))?;
    } else {
        writeln!(
            out,
            "{}",
            arrow::util::pretty::pretty_format_batches(&shown)?
        )?;
    }
    writeln!(out, "{rows} of {total_rows} rows shown")?;
    Ok(())
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.server).await?;
    let tables = client.list(&args.prefix).await?;
    let mut out = std::io::stdout().lock();
    if tables.is_empty() {
        writeln!(out, "no tables; `flightcache push FILE` adds one")?;
        return Ok(());
    }
    let width = tables
        .iter()
        .map(|t| t.key.as_str().len())
        .max()
        .unwrap_or(3)
        .max(3);
    writeln!(
        out,
        "{:<width$}  {:>12}  {:>10}  {:>7}",
        "KEY", "ROWS", "SIZE", "COLUMNS"
    )?;
    for table in tables {
        writeln!(
            out,
            "{:<width$}  {:>12}  {:>10}  {:>7}",
            table.key.as_str(),
            table.rows,
            HumanBytes(table.bytes).to_string(),
            table.schema.fields().len()
        )?;
    }
    Ok(())
}

async fn info(args: KeyArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let info = client.info(&key).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "key:     {}", info.key)?;
    writeln!(out, "rows:    {}", info.rows)?;
    writeln!(
        out,
        "size:    {} ({} bytes)",
        HumanBytes(info.bytes),
        info.bytes
    )?;
    writeln!(out, "columns: {}", info.schema.fields().len())?;
    for field in info.schema.fields() {
        let null = if field.is_nullable() { "" } else { " not null" };
        writeln!(out, "  {}: {}{null}", field.name(), field.data_type())?;
        for (k, v) in field.metadata() {
            writeln!(out, "    {k} = {v}")?;
        }
    }
    for (k, v) in info.schema.metadata() {
        writeln!(out, "metadata: {k} = {}", truncate(v, 120))?;
    }
    Ok(())
}

async fn drop_table(args: KeyArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let dropped = client.drop_table(&key).await?;
    let size = HumanBytes(dropped.bytes);
    writeln!(
        std::io::stdout(),
        "dropped `{key}` ({} rows, {size})",
        dropped.rows
    )?;
    Ok(())
}

async fn clear(args: ServerArgs) -> anyhow::Result<()> {
    let mut client = connect(&args).await?;
    let cleared = client.clear().await?;
    writeln!(std::io::stdout(), "cleared {} tables", cleared.tables)?;
    Ok(())
}

async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    // Like a long-running client, reuse the memory of the last table received for the next one.
    allocator::keep_freed_memory(allocator::BENCH_KEEP_FREED);
    let local = match (&args.server, args.in_process) {
        (None, false) => Some(LocalServer::spawn().context("starting a local flightcache server")?),
        _ => None,
    };
    let server = local
        .as_ref()
        .map(|l| l.url.clone())
        .or(args.server.clone());
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(ProgressStyle::with_template(
        "{spinner} {elapsed:>4} {msg}",
    )?);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut out = std::io::stdout().lock();

    if args.small {
        let url = match &server {
            Some(url) => url.clone(),
            None => bail!("--small needs a server process; drop --in-process"),
        };
        spinner.set_message("small-table latency run");
        let counts = if args.clients > 1 {
            vec![1, args.clients]
        } else {
            vec![1, 16]
        };
        let report = bench::latency::run(&url, args.operations.max(1), &counts).await?;
        spinner.finish_and_clear();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", report.to_text())?;
        }
        return Ok(());
    }

    let config = BenchConfig {
        size_bytes: args.size,
        cols: args.cols,
        file: args.file,
        rounds: args.repeat,
        server_pid: local.as_ref().map(|l| l.child.id()),
        server,
        json: !args.no_json,
        clients: args.clients.max(1),
        ..BenchConfig::default()
    };
    let progress = |step: &str| spinner.set_message(step.to_string());
    let report = bench::run(&config, &progress).await?;
    spinner.finish_and_clear();
    if let Some(path) = &args.plot {
        std::fs::write(path, report.to_svg())
            .with_context(|| format!("writing `{}`", path.display()))?;
    }
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}

/// A `flightcache serve --port 0` child process that the benchmark measures; killed on drop.
struct LocalServer {
    child: std::process::Child,
    url: String,
}

impl LocalServer {
    fn spawn() -> anyhow::Result<Self> {
        use std::io::BufRead;
        let exe = std::env::current_exe().context("finding the flightcache executable")?;
        let mut child = std::process::Command::new(exe)
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running `flightcache serve`")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("reading the server's output")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let url = match line.trim().strip_prefix("listening on ") {
            Some(url) => url.to_string(),
            None => {
                child.kill().ok();
                bail!("the server did not report its address (it said {line:?})");
            }
        };
        Ok(Self { child, url })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

async fn connect(args: &ServerArgs) -> anyhow::Result<CacheClient> {
    Ok(CacheClient::connect(&args.server).await?)
}

/// A progress bar in bytes on stderr, drawn only when stderr is a terminal.
fn byte_bar(total: Option<u64>, verb: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = format!(
        "{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} eta {{eta}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn summary_line(verb: &str, key: &TableKey, rows: u64, bytes: u64, start: Instant) -> String {
    let secs = start.elapsed().as_secs_f64();
    let gbps = bytes as f64 / secs.max(1e-9) / 1e9;
    format!(
        "{verb} `{key}`: {rows} rows, {} in {secs:.2} s ({gbps:.2} GB/s)",
        HumanBytes(bytes)
    )
}

fn file_stem(path: &Path) -> anyhow::Result<String> {
    match path.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if !stem.is_empty() => Ok(stem.to_string()),
        _ => bail!(
            "cannot name a key after `{}`; pass --key NAME",
            path.display()
        ),
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// Parse `1048576`, `512KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000, K/M/G as
/// powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; try 1048576, 64MiB or 1GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => return Err(format!("unknown size unit `{other}`; use KiB, MiB or GiB")),
    };
    Ok((number * scale as f64) as u64)
}

/// Parse a non-negative number of seconds such as `10` or `0.5`.
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=1e9).contains(&seconds) => Ok(seconds),
        _ => Err(format!(
            "`{text}` is not a number of seconds; try 10 or 0.5"
        )),
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5 GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn seconds_parse_as_non_negative_numbers() {
        assert_eq!(parse_seconds("10"), Ok(10.0));
        assert_eq!(parse_seconds("0.5"), Ok(0.5));
        assert_eq!(parse_seconds("0"), Ok(0.0));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("ten").is_err());
        assert!(parse_seconds("inf").is_err());
    }
}
