//! The command line: clap's types for every subcommand and its flags, and the parsers of
//! sizes and durations.

use std::path::PathBuf;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use flightcache::bench;
use flightcache::client::DEFAULT_SERVER_URL;
use flightcache::protocol::stream::ReadFrom;
use flightcache::{Durability, Eviction};

use flightcache::server::config::{
    DEFAULT_IDLE_CONNECTION_TIMEOUT, DEFAULT_KEEP_FREED, DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_MAX_CONCURRENT_PUTS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PUTS_PER_CALLER, DEFAULT_MAX_PUTS_PER_CONNECTION, DEFAULT_MIN_UPLOAD_RATE,
    DEFAULT_PORT, DEFAULT_QUERY_TIMEOUT, DEFAULT_REQUEST_IDLE_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TOKEN_TTL,
};

/// An Apache Arrow Flight table cache: push tables in, stream them out, no serialization step.
///
/// Start a server with `flightcache serve`, then `push` Parquet, Arrow IPC or CSV files into it
/// and `get` them back from any Flight client (this one, or pyarrow.flight).
#[derive(Debug, Parser)]
#[command(version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a cache server until ctrl-c or SIGTERM.
    ///
    /// Prints `listening on grpc://HOST:PORT` as its first line on stdout.
    Serve(ServeArgs),
    /// Upload a Parquet, Arrow IPC (.arrow, .feather) or CSV file as a table.
    Push(PushArgs),
    /// Download a table into a file (by extension), or preview its first rows.
    Get(GetArgs),
    /// Print a table's rows as they are appended (or write them to a live Arrow IPC stream).
    Tail(TailArgs),
    /// Run a SQL query over the cached tables (Flight SQL) and print or save its result.
    Sql(SqlArgs),
    /// List the cached tables.
    List(ListArgs),
    /// Show a table's schema, rows and size.
    Info(KeyArgs),
    /// Remove a table.
    Drop(KeyArgs),
    /// Remove every table.
    Clear(ServerArgs),
    /// Make a table expire after DURATION from now (replacing any time to live it had).
    Expire(ExpireArgs),
    /// Make a table never expire.
    Persist(KeyArgs),
    /// Show how long a table has to live.
    Ttl(KeyArgs),
    /// Show the server's tables, memory and counters.
    Stats(ServerArgs),
    /// Show who the server takes you for, and what you may do.
    Whoami(ServerArgs),
    /// Hash a password for the users file (read from FLIGHTCACHE_PASSWORD, or prompted).
    HashPassword,
    /// Make a new random API token, and print the line for the users file.
    NewToken,
    /// Time Flight put and get against JSON over a socket and a raw socket transfer.
    ///
    /// Without --server it starts its own server on 127.0.0.1 (real TCP loopback).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server to talk to (grpc://HOST:PORT, or grpc+tls://HOST:PORT for TLS).
    #[arg(long, env = "FLIGHTCACHE_SERVER", default_value = DEFAULT_SERVER_URL, value_name = "URL")]
    pub server: String,
    /// Authenticate with this API token (from the users file's owner). Prefer the
    /// FLIGHTCACHE_TOKEN variable: a flag's value shows in `ps` and in shell history.
    #[arg(
        long,
        env = "FLIGHTCACHE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        conflicts_with = "user"
    )]
    pub token: Option<String>,
    /// Authenticate as this user; the password comes from FLIGHTCACHE_PASSWORD, or is
    /// prompted for (never from the command line).
    #[arg(long, env = "FLIGHTCACHE_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// The CA certificate (PEM) that signed a grpc+tls:// server's certificate.
    #[arg(long, env = "FLIGHTCACHE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM), for a server that requires client certificates.
    #[arg(
        long,
        env = "FLIGHTCACHE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// This client's private key (PEM), with --tls-cert.
    #[arg(
        long,
        env = "FLIGHTCACHE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; 0.0.0.0 listens on every interface.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Largest single Flight message accepted, in bytes (suffixes: KiB, MiB, GiB). pyarrow
    /// sends a whole table chunk as one message, so keep it above your largest chunk.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MAX_MESSAGE_BYTES as u64)]
    pub max_message_size: u64,
    /// Uploads accepted at once; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONCURRENT_PUTS)]
    pub max_concurrent_puts: usize,
    /// Flight SQL queries run at once (default: one per core); more are refused with
    /// RESOURCE_EXHAUSTED. Queries share the server's cores with gets and puts.
    #[arg(long, value_name = "N")]
    pub max_queries: Option<usize>,
    /// How long a Flight SQL query may run before it is cancelled (DEADLINE_EXCEEDED).
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(DEFAULT_QUERY_TIMEOUT))]
    pub query_timeout: HumanDuration,
    /// Uploads one connection may run at once, so that one client cannot take every upload
    /// slot; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PUTS_PER_CONNECTION)]
    pub max_puts_per_connection: usize,
    /// Uploads one caller may run at once (a user; an address on a server without users), so
    /// that one caller cannot take every upload slot while others wait. A put that finds no
    /// slot waits 2 s for one, then is refused with RESOURCE_EXHAUSTED.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_PUTS_PER_CALLER)]
    pub max_puts_per_caller: usize,
    /// The least an upload must move, in bytes per second (suffixes: KiB, MiB), counted over
    /// each window of --request-idle-timeout: a slower upload is cancelled (DEADLINE_EXCEEDED)
    /// so that trickling clients cannot hold the upload slots. 0: no minimum.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value_t = DEFAULT_MIN_UPLOAD_RATE)]
    pub min_upload_rate: u64,
    /// Connections served at once; more are closed as soon as they are accepted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Cancel an upload (or any request) that sends nothing, or leaves its acknowledgements
    /// unread, for this long; it stores nothing and frees its slot (DEADLINE_EXCEEDED).
    #[arg(long, alias = "upload-idle-timeout", value_name = "DURATION",
          default_value_t = HumanDuration(DEFAULT_REQUEST_IDLE_TIMEOUT))]
    pub request_idle_timeout: HumanDuration,
    /// On SIGTERM or ctrl-c, wait this long for the calls in flight to finish, then close
    /// their connections (queued table files are written either way).
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(DEFAULT_SHUTDOWN_TIMEOUT))]
    pub shutdown_timeout: HumanDuration,
    /// Close a connection that has had no request in flight for this long (clients
    /// reconnect by themselves).
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(DEFAULT_IDLE_CONNECTION_TIMEOUT))]
    pub idle_connection_timeout: HumanDuration,
    /// Ping every connection's peer over HTTP/2 this often, and close the connection if a
    /// ping goes unanswered for 20 s: finds peers that vanished without closing. 0: never.
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(DEFAULT_KEEPALIVE_INTERVAL))]
    pub keepalive: HumanDuration,
    /// Keep the memory of dropped or replaced tables this long for the next uploads, then give
    /// it back to the system. Filling fresh memory is most of what a large put costs (on a VM
    /// up to 2-3 s per GiB); 0 gives memory back at once.
    #[arg(long, alias = "keep-freed-secs", value_name = "DURATION",
          default_value_t = HumanDuration(DEFAULT_KEEP_FREED))]
    pub keep_freed: HumanDuration,
    /// The location every endpoint names, where clients that follow locations fetch a table
    /// (grpc+tcp://HOST:PORT) [default: the bound address; with a wildcard --host such as
    /// 0.0.0.0, arrow-flight-reuse-connection://?, Flight's "the connection you are on"].
    #[arg(long, value_name = "URI", value_parser = parse_location)]
    pub advertise: Option<String>,
    /// For test servers only: let an admin move forward the clock that keys' and sessions'
    /// times to live run on (the `advance-clock` action), so that tests in any language see
    /// them run out without waiting. Never on a server that holds real data.
    #[arg(long)]
    pub test_clock: bool,
    /// The memory budget for everything held for tables: cached tables, uploads in progress,
    /// freed memory kept for reuse (suffixes: KiB, MiB, GiB); 0: no budget. An upload that
    /// does not fit evicts tables (see --eviction) or fails with RESOURCE_EXHAUSTED.
    /// [default: 75% of the memory the process may use: its cgroup's limit if one is set,
    /// else the total memory; printed on startup]
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// What an upload that does not fit in the memory budget does.
    #[arg(long, value_enum, default_value_t = EvictionPolicy::Lru)]
    pub eviction: EvictionPolicy,
    /// Keep every table on disk in this directory too, as an Arrow IPC file (readable by
    /// pyarrow.ipc.open_file), so that a restart serves them again. Created if need be,
    /// readable by this user only; one server per directory. [default: memory only]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: when a put is acknowledged against when its file is on disk.
    #[arg(long, value_enum, default_value_t = DurabilityMode::Background, requires = "data_dir")]
    pub durability: DurabilityMode,
    /// Serve metrics in the Prometheus text format over HTTP on this address (such as
    /// 127.0.0.1:9815).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,
    /// The users who may connect and what each may do (a TOML file; see docs/security.md).
    /// Without it, every caller may do everything, so serve only listens on
    /// loopback unless --no-auth says otherwise. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub users: Option<PathBuf>,
    /// How long a session token from the Handshake (a user name and password) is valid.
    #[arg(long, value_name = "DURATION", default_value_t = HumanDuration(DEFAULT_TOKEN_TTL))]
    pub token_ttl: HumanDuration,
    /// Serve without users on a non-loopback address: anyone who can reach the port can read,
    /// overwrite and drop every table. Only for a network you trust entirely.
    #[arg(long, conflicts_with = "users")]
    pub no_auth: bool,
    /// Serve TLS (grpc+tls://) with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS. A certificate whose
    /// subject's common name is a user's name authenticates as that user; without --users,
    /// every client holding a certificate from this CA may do everything.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// `--durability`'s choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityMode {
    /// Acknowledge a put once its file is written and synced (like Redis' appendfsync
    /// always): a crash or power cut loses no acknowledged put; puts go at the disk's speed. A
    /// full disk fails the put with RESOURCE_EXHAUSTED.
    Always,
    /// Acknowledge a put at once and write its file behind it: puts go at memory speed; kill
    /// -9 loses no file already written, a power cut the last moment's puts. A full disk
    /// leaves the table in memory only, with a warning.
    Background,
}

impl From<DurabilityMode> for Durability {
    fn from(mode: DurabilityMode) -> Self {
        match mode {
            DurabilityMode::Always => Durability::Always,
            DurabilityMode::Background => Durability::Background,
        }
    }
}

/// `--eviction`'s choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvictionPolicy {
    /// Evict the least recently used tables (by last get or put) until the upload fits.
    Lru,
    /// Evict nothing: the upload fails with RESOURCE_EXHAUSTED and the cache is unchanged.
    Noeviction,
}

impl From<EvictionPolicy> for Eviction {
    fn from(policy: EvictionPolicy) -> Self {
        match policy {
            EvictionPolicy::Lru => Eviction::Lru,
            EvictionPolicy::Noeviction => Eviction::NoEviction,
        }
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The file to upload: .parquet, .arrow, .feather or .csv.
    pub file: PathBuf,
    /// The key to store it under [default: the file name without its extension].
    #[arg(long)]
    pub key: Option<String>,
    /// Expire the table this long after it is stored (30s, 10m, 2h, 1d) [default: never;
    /// with --append, the key keeps its own].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<HumanDuration>,
    /// Append the file's rows to the key's table (creating it if absent) instead of replacing
    /// it; they take the next offsets.
    #[arg(long)]
    pub append: bool,
    /// With --append: keep about this many rows of the key, trimming its oldest appends.
    #[arg(long, value_name = "N", requires = "append")]
    pub max_rows: Option<u64>,
    /// With --append: keep about this many bytes of the key (suffixes: KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "append")]
    pub max_bytes: Option<u64>,
    /// With --append: trim the key's appends older than this (30s, 10m, 2h, 1d).
    #[arg(long, value_name = "DURATION", requires = "append")]
    pub max_age: Option<HumanDuration>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Offsets are row numbers: 0 is the first row stored under the key. Resume a \
broken tail with --from set to the offset after the last row you have."
)]
pub struct TailArgs {
    /// The table's key (it need not exist yet: tail waits for it).
    pub key: String,
    /// Where to start: a row number, `earliest` (the oldest row kept) or `latest` (only rows
    /// appended from now on).
    #[arg(long, value_name = "N|earliest|latest", default_value = "latest")]
    pub from: ReadFrom,
    /// Write the rows to this Arrow IPC stream file as they arrive (flushed after each batch)
    /// instead of printing them.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Stop after this many rows [default: follow until the key is dropped or replaced, or
    /// ctrl-c].
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// The table's key.
    pub key: String,
    /// How long from now it expires (30s, 10m, 2h, 1d).
    pub ttl: HumanDuration,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The table's key.
    pub key: String,
    /// Write the table here: .parquet, .arrow, .feather or .csv. Without it, print a preview.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Rows shown in the preview.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub rows: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Every key is a table; quote keys with capitals, `/` or other \
characters: flightcache sql 'SELECT count(*) FROM \"nyc/trips\"'. The statement runs on the \
server (Apache DataFusion's SQL) over the tables you may read; see docs/sql.md."
)]
pub struct SqlArgs {
    /// The query: SELECT, WITH, VALUES or EXPLAIN.
    pub query: String,
    /// Write the result here: .parquet, .arrow, .feather or .csv. Without it (and without
    /// --into), print a preview.
    #[arg(short, long, value_name = "FILE", conflicts_with = "into")]
    pub output: Option<PathBuf>,
    /// Store the result in the cache under this key (replacing what it holds), as a put would.
    #[arg(long, value_name = "KEY")]
    pub into: Option<String>,
    /// Rows shown in the preview.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub rows: usize,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only list keys that start with this.
    #[arg(default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The table's key.
    pub key: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Arrow size of the random float64 table (suffixes: KiB, MiB, GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "128MiB")]
    pub size: u64,
    /// Number of float64 columns of the random table.
    #[arg(long, default_value_t = bench::DEFAULT_BENCH_COLS)]
    pub cols: usize,
    /// Benchmark this file's table instead of random data.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Timed rounds; medians are reported.
    #[arg(long, default_value_t = bench::DEFAULT_BENCH_ROUNDS)]
    pub repeat: usize,
    /// Measure this server instead of starting one.
    #[arg(long, value_name = "URL", conflicts_with = "in_process")]
    pub server: Option<String>,
    /// Run the server inside the benchmark process instead of as a child `flightcache serve`
    /// (whose memory the report then shows on its own).
    #[arg(long)]
    pub in_process: bool,
    /// Skip the JSON baseline, which takes most of the run's time.
    #[arg(long)]
    pub no_json: bool,
    /// Also measure this many clients putting and getting at once, each on its own connection
    /// and key.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub clients: usize,
    /// Run the small-table latency benchmark instead: 1,000 rows x 8 columns, put and get one at
    /// a time, with 1 and 16 clients (or --clients), reporting median and p99 latency and ops/s.
    #[arg(long)]
    pub small: bool,
    /// Run the memory-pressure benchmark instead: 8 uploaders offering 4x a server's memory
    /// budget (tables of 64 KiB to 256 MiB) with readers checking every table they get, first
    /// against a server with --budget, then against one without; reports puts/s, GB/s,
    /// evictions, rejections and the server's RSS (sampled every 100 ms) against the budget.
    #[arg(long, conflicts_with_all = ["small", "server", "in_process"])]
    pub pressure: bool,
    /// The memory budget of the --pressure run's server.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1GiB")]
    pub budget: u64,
    /// How long each phase of the --pressure run lasts.
    #[arg(long, value_name = "DURATION", default_value = "25s")]
    pub duration: HumanDuration,
    /// Also measure Flight over TLS: a second local server with a certificate made for the
    /// run, its put and get timed beside the plaintext ones, round by round, and the same
    /// bytes over a raw TLS socket (TLS alone: the most Flight over TLS could reach here).
    #[arg(long, conflicts_with_all = ["server", "in_process", "small", "pressure"])]
    pub tls: bool,
    /// Run the --pressure run's budgeted server inside this cgroup v1 memory cgroup (a
    /// directory such as /sys/fs/cgroup/memory/flightcache; needs root; see
    /// benches/scripts/pressure_cgroup.sh).
    #[arg(long, value_name = "DIR", requires = "pressure")]
    pub cgroup: Option<PathBuf>,
    /// Time how soon appends reach N followers of a key (this crate's client, one connection
    /// each): --appends batches of 1,000 rows, one every 10 ms; latency percentiles from each
    /// append's acknowledgement to each follower's receipt.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with_all = ["small", "pressure", "tls", "in_process"])]
    pub followers: Option<u32>,
    /// Appends in the --followers run.
    #[arg(long, default_value_t = bench::followers::DEFAULT_APPENDS, value_name = "N")]
    pub appends: usize,
    /// Rows an append in the --followers run (16 bytes a row: an int64 and a float64).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub append_rows: usize,
    /// Milliseconds between appends in the --followers run (0: as fast as they go, to measure
    /// what the followers receive together).
    #[arg(long, default_value_t = 10, value_name = "MS")]
    pub interval_ms: u64,
    /// Operations per client in the --small run.
    #[arg(long, default_value_t = bench::latency::DEFAULT_SMALL_OPERATIONS, value_name = "N")]
    pub operations: usize,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write a bar chart of the results to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Parse `1048576`, `512KiB`, `64MiB`, `1GiB` (also KB/MB/GB as powers of 1000, K/M/G as
/// powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
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

/// Parse a Flight location to advertise, such as `grpc+tcp://cache.example.com:8815`.
pub fn parse_location(text: &str) -> Result<String, String> {
    flightcache::protocol::location::check_location(text).map(|()| text.to_string())
}

/// Parse a duration: a number of seconds (`30`, `0.5`) or a number with a unit (`500ms`,
/// `30s`, `10m`, `2h`, `1d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; try 30s, 10m or 2h"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}`; use ms, s, m, h or d"
            ));
        }
    };
    let seconds = number * seconds_per_unit;
    if !seconds.is_finite() || seconds > 1e12 {
        return Err(format!("`{text}` is too long a duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A duration on the command line: parsed by [`parse_duration`], shown by
/// [`format_duration`] (in `--help`'s defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl std::str::FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text).map(HumanDuration)
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

/// A duration as [`parse_duration`] reads it back, for defaults in `--help`.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds > 0 && seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds > 0 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{}s", duration.as_secs_f64())
    }
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
    fn durations_parse_with_units_and_read_back() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1").is_err());
        for d in [
            Duration::from_secs(30),
            Duration::from_secs(300),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    /// Bare numbers are seconds, so `--keep-freed-secs 10` (the old flag, now an alias of
    /// `--keep-freed`) means what it meant.
    #[test]
    fn bare_numbers_are_seconds_and_nothing_negative_or_infinite_parses() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("inf").is_err());
    }
}
