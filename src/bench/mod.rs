//! The throughput benchmark behind `flightcache bench`: Flight put and get of one table against
//! the JSON-over-socket baseline and the raw-socket ceiling, in one process, on one dataset.
//!
//! - [`data`]: random tables, Arrow byte counts, table equality.
//! - [`report`]: medians, GB/s, ratios, and the text, JSON and SVG renderings.
//! - [`latency`]: the small-table latency run (`--small`).
//! - [`rss`]: server RSS from `/proc`.
//! - [`pressure`]: the memory-pressure run (`--pressure`): uploads offering 4x a budget.
//! - [`baseline`]: the JSON-over-TCP and raw-socket transfers Flight is compared with.
//! - [`certificates`]: a CA and certificates made on the spot, for `--tls` and the tests.

pub mod baseline;
pub mod certificates;
pub mod data;
pub mod followers;
pub mod latency;
pub mod pressure;
pub mod report;
pub mod rss;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;

use crate::client::{CacheClient, ClientConfig};
use crate::error::{AnswerProblem, Error, Result};
use crate::formats::TableSource;
use crate::protocol::key::TableKey;
use crate::server::{EmbeddedServer, ServerConfig};
use baseline::{json, raw};

pub use report::{BenchReport, Measurement, Ratios};

/// Default table size: 128 MiB of Arrow data keeps the default run near one minute on two
/// cores (the JSON baseline dominates it).
pub const DEFAULT_BENCH_BYTES: u64 = 128 << 20;
/// Default number of float64 columns.
pub const DEFAULT_BENCH_COLS: usize = 64;
/// Default number of timed rounds; medians are taken over them.
pub const DEFAULT_BENCH_ROUNDS: usize = 5;
/// The key the benchmark table is stored under (`-N` suffixes for concurrent clients).
pub const BENCH_KEY: &str = "flightcache-bench";

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Arrow bytes of the random table.
    pub size_bytes: u64,
    /// float64 columns of the random table.
    pub cols: usize,
    /// Use this Parquet (or IPC, CSV) file's table instead of random data.
    pub file: Option<PathBuf>,
    /// Timed rounds.
    pub rounds: usize,
    /// Measure this server instead of one embedded in this process.
    pub server: Option<String>,
    /// The process id of that server, when it runs on this machine, to report its memory.
    pub server_pid: Option<u32>,
    /// Seed of the random data.
    pub seed: u64,
    /// Run the JSON baseline (slow: most of the run's time).
    pub json: bool,
    /// Also measure this many clients putting and getting concurrently (when above 1).
    pub clients: usize,
    /// Also measure Flight put and get against this TLS server, round by round beside the
    /// plaintext ones, and the same bytes over a raw TLS socket (what TLS alone allows).
    pub tls: Option<TlsTarget>,
}

/// A TLS server for `bench --tls`: its `grpc+tls://` URL and the CA that signed it (PEM).
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// The server's URL.
    pub url: String,
    /// The CA certificate to trust.
    pub ca_pem: Vec<u8>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            size_bytes: DEFAULT_BENCH_BYTES,
            cols: DEFAULT_BENCH_COLS,
            file: None,
            rounds: DEFAULT_BENCH_ROUNDS,
            server: None,
            server_pid: None,
            seed: 42,
            json: true,
            clients: 1,
            tls: None,
        }
    }
}

/// Where the benchmark is: called with a short description before each step.
pub trait Progress {
    /// A step is starting.
    fn step(&self, message: &str);
}

impl<F: Fn(&str)> Progress for F {
    fn step(&self, message: &str) {
        self(message)
    }
}

/// Samples of each timed operation.
#[derive(Debug, Default)]
struct Samples {
    flight_put: Vec<Duration>,
    flight_get: Vec<Duration>,
    json_put: Vec<json::JsonTimings>,
    json_get: Vec<json::JsonTimings>,
    raw_put: Vec<Duration>,
    raw_get: Vec<Duration>,
    concurrent_put: Vec<Duration>,
    concurrent_get: Vec<Duration>,
    tls_put: Vec<Duration>,
    tls_get: Vec<Duration>,
    raw_tls_put: Vec<Duration>,
    raw_tls_get: Vec<Duration>,
}

/// The `--tls` transfers: a Flight client of the TLS server, and the raw TLS socket (its
/// server runs as long as this lives).
struct TlsClients {
    flight: CacheClient,
    raw: raw::RawTlsClient,
    _raw_server: baseline::SocketServer,
}

impl TlsClients {
    /// Connect to `target`, and start a raw TLS socket.
    async fn connect(target: &TlsTarget) -> Result<Self> {
        let client_config = ClientConfig {
            tls: crate::client::ClientTls {
                ca_pem: Some(target.ca_pem.clone()),
                ..Default::default()
            },
            ..ClientConfig::default()
        };
        let (raw_server, raw_ca_pem) = raw::start_tls_server().await?;
        Ok(Self {
            flight: CacheClient::connect_with(&target.url, &client_config).await?,
            raw: raw::RawClient::connect_tls(raw_server.addr(), raw_ca_pem.as_bytes()).await?,
            _raw_server: raw_server,
        })
    }
}

/// The benchmark's table, shared by every transfer.
struct Table {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
}

impl Table {
    async fn put(&self, client: &mut CacheClient, key: &TableKey) -> Result<Duration> {
        let start = Instant::now();
        let batches = self.batches.as_ref().clone();
        client
            .put_batches(key, Arc::clone(&self.schema), batches)
            .await?;
        Ok(start.elapsed())
    }
}

/// Longest wait for a server to give back the memory of dropped tables; `serve` keeps it
/// for [`DEFAULT_KEEP_FREED`](crate::server::config::DEFAULT_KEEP_FREED) unless told
/// otherwise.
const MAX_WAIT_FOR_FREED_MEMORY: Duration = Duration::from_secs(60);

/// The settled RSS of the server at `server_pid` (if known) once it reports no freed table
/// memory kept for reuse (see [`StoreStats::freed_bytes`](crate::protocol::actions::StoreStats::freed_bytes)),
/// waiting for that at most [`MAX_WAIT_FOR_FREED_MEMORY`].
async fn settled_server_rss(
    client: &mut CacheClient,
    server_pid: Option<u32>,
) -> Result<Option<u64>> {
    let Some(pid) = server_pid else {
        return Ok(None);
    };
    let deadline = Instant::now() + MAX_WAIT_FOR_FREED_MEMORY;
    while client.stats().await?.freed_bytes > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(rss::settled_rss_bytes(pid).await)
}

async fn timed_get(
    client: &mut CacheClient,
    key: &TableKey,
) -> Result<(Duration, Vec<RecordBatch>)> {
    let start = Instant::now();
    let batches = client.get(key).await?.try_collect().await?;
    Ok((start.elapsed(), batches))
}

/// Run the benchmark.
///
/// # Errors
/// [`Error::Connect`] if `--server` cannot be reached; [`Error::UnexpectedAnswer`] if a Flight
/// get does not return the table that was put; any I/O or Arrow error on the way.
pub async fn run(config: &BenchConfig, progress: &dyn Progress) -> Result<BenchReport> {
    progress.step("preparing data");
    let (schema, batches) = load_table(config).await?;
    let bytes = data::arrow_bytes(&batches);
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let table = Table {
        schema,
        batches: Arc::new(batches),
    };

    let embedded = match &config.server {
        Some(_) => None,
        None => {
            // The budget `flightcache serve` would have on this machine.
            let config = ServerConfig {
                max_memory: crate::server::config::default_max_memory().map(|limit| limit.budget),
                ..ServerConfig::default()
            };
            Some(EmbeddedServer::start(config).await?)
        }
    };
    let url = match (&config.server, &embedded) {
        (Some(url), _) => url.clone(),
        (_, Some(server)) => server.url(),
        (None, None) => unreachable!("an embedded server is started when no URL is given"),
    };
    let server_pid = match embedded {
        Some(_) => Some(std::process::id()),
        None => config.server_pid,
    };
    let mut flight = CacheClient::connect_with(&url, &ClientConfig::default()).await?;
    // All three memory readings are taken with this connection open, and once a running
    // server has given back memory that earlier uploads left it.
    let rss_before_put = settled_server_rss(&mut flight, server_pid).await?;
    let json_server = if config.json {
        Some(json::start_server().await?)
    } else {
        None
    };
    let mut json_client = match &json_server {
        Some(server) => Some(json::JsonClient::connect(server.addr()).await?),
        None => None,
    };
    let mut tls = match &config.tls {
        Some(target) => Some(TlsClients::connect(target).await?),
        None => None,
    };
    let raw_server = raw::start_server().await?;
    let mut raw_client = raw::RawClient::connect(raw_server.addr()).await?;
    let key = TableKey::try_new(BENCH_KEY)?;

    // One untimed round of the fast transfers: first touches of fresh memory and connections
    // otherwise dominate round 1. Its get is the first one, the one compared with the table.
    progress.step("warming up");
    table.put(&mut flight, &key).await?;
    let (_, got) = timed_get(&mut flight, &key).await?;
    if !data::tables_equal(&table.batches, &got) {
        return Err(Error::UnexpectedAnswer {
            problem: AnswerProblem::TableDiffers,
        });
    }
    drop(got);
    raw_client.put(bytes as usize).await?;
    raw_client.get(bytes as usize).await?;
    if let Some(tls) = tls.as_mut() {
        table.put(&mut tls.flight, &key).await?;
        let (_, got) = timed_get(&mut tls.flight, &key).await?;
        if !data::tables_equal(&table.batches, &got) {
            return Err(Error::UnexpectedAnswer {
                problem: AnswerProblem::TableDiffers,
            });
        }
        tls.raw.put(bytes as usize).await?;
        tls.raw.get(bytes as usize).await?;
    }

    // Flight and the raw-socket ceiling alternate round by round. The JSON baseline runs in a
    // block of its own afterwards: its gigabytes of text and parsed values, freed only after the
    // allocator's delay, would otherwise land on the next Flight round's memory.
    let mut samples = Samples::default();
    let rounds = config.rounds.max(1);
    for round in 1..=rounds {
        let step = |what: &str| progress.step(&format!("round {round}/{rounds}: {what}"));
        step("flight put");
        samples.flight_put.push(table.put(&mut flight, &key).await?);
        step("flight get");
        samples
            .flight_get
            .push(timed_get(&mut flight, &key).await?.0);
        step("raw socket put");
        samples.raw_put.push(raw_client.put(bytes as usize).await?);
        step("raw socket get");
        samples.raw_get.push(raw_client.get(bytes as usize).await?);
        if let Some(tls) = tls.as_mut() {
            step("flight put over TLS");
            samples
                .tls_put
                .push(table.put(&mut tls.flight, &key).await?);
            step("flight get over TLS");
            samples
                .tls_get
                .push(timed_get(&mut tls.flight, &key).await?.0);
            step("raw TLS socket put");
            samples.raw_tls_put.push(tls.raw.put(bytes as usize).await?);
            step("raw TLS socket get");
            samples.raw_tls_get.push(tls.raw.get(bytes as usize).await?);
        }
    }
    if let Some(mut tls) = tls {
        tls.flight.drop_table(&key).await?;
    }
    // Both readings wait until the server gave back the memory it keeps for reuse: the slabs
    // of the tables the rounds replaced, then those of the dropped table.
    progress.step("measuring server memory: holding the table");
    let rss_holding = settled_server_rss(&mut flight, server_pid).await?;
    flight.drop_table(&key).await?;
    // A server in another process is measured after the JSON block, which gives it the time to
    // return the dropped table's memory; one in this process before, as the block's own memory
    // would count.
    let server_in_this_process = server_pid == Some(std::process::id());
    let mut rss_after_drop = None;
    if server_in_this_process {
        progress.step("measuring server memory: after the drop");
        rss_after_drop = settled_server_rss(&mut flight, server_pid).await?;
    }
    if let Some(json_client) = json_client.as_mut() {
        for round in 1..=rounds {
            let step = |what: &str| progress.step(&format!("round {round}/{rounds}: {what}"));
            step("json put");
            samples
                .json_put
                .push(json_client.put(Arc::clone(&table.batches)).await?);
            step("json get");
            let (_, timings) = json_client.get().await?;
            samples.json_get.push(timings);
        }
    }
    if !server_in_this_process {
        progress.step("measuring server memory: after the drop");
        rss_after_drop = settled_server_rss(&mut flight, server_pid).await?;
    }

    if config.clients > 1 {
        measure_concurrent(&table, &url, config.clients, rounds, progress, &mut samples).await?;
    }
    if let Some(server) = embedded {
        server.shutdown_and_wait().await?;
    }
    let memory = match (rss_before_put, rss_holding, rss_after_drop) {
        (Some(before_put), Some(holding), Some(after_drop)) => Some(rss::ServerMemory {
            server_only: config.server.is_some(),
            before_put,
            holding,
            after_drop,
        }),
        _ => None,
    };
    let shape = report::TableShape {
        rows,
        columns: table.schema.fields().len(),
        bytes,
    };
    Ok(report::summarize(config, &url, shape, samples, memory))
}

/// `clients` clients, each on its own connection and key, put and then get at the same time;
/// each sample is the time until the last one finished.
async fn measure_concurrent(
    table: &Table,
    url: &str,
    clients: usize,
    rounds: usize,
    progress: &dyn Progress,
    samples: &mut Samples,
) -> Result<()> {
    let mut connections = Vec::new();
    for i in 0..clients {
        let client = CacheClient::connect(url).await?;
        connections.push((client, TableKey::try_new(format!("{BENCH_KEY}-{i}"))?));
    }
    // Round 0 is the untimed warm-up, as for one client: new connections and first touches
    // of fresh memory would otherwise dominate the first timed round.
    for round in 0..=rounds {
        progress.step(&format!("round {round}/{rounds}: {clients} clients put"));
        let start = Instant::now();
        let puts = connections.iter().map(|(client, key)| {
            let (mut client, key) = (client.clone(), key.clone());
            let (schema, batches) = (Arc::clone(&table.schema), table.batches.as_ref().clone());
            tokio::spawn(async move { client.put_batches(&key, schema, batches).await })
        });
        for put in puts.collect::<Vec<_>>() {
            put.await.map_err(task_failed)??;
        }
        let put_time = start.elapsed();

        progress.step(&format!("round {round}/{rounds}: {clients} clients get"));
        let start = Instant::now();
        let gets = connections.iter().map(|(client, key)| {
            let (mut client, key) = (client.clone(), key.clone());
            tokio::spawn(async move { timed_get(&mut client, &key).await.map(|(_, b)| b.len()) })
        });
        for get in gets.collect::<Vec<_>>() {
            get.await.map_err(task_failed)??;
        }
        if round > 0 {
            samples.concurrent_put.push(put_time);
            samples.concurrent_get.push(start.elapsed());
        }
    }
    for (client, key) in &mut connections {
        client.drop_table(key).await?;
    }
    Ok(())
}

fn task_failed(source: tokio::task::JoinError) -> Error {
    Error::TaskFailed {
        task: "benchmark client",
        source,
    }
}

/// The table to benchmark with: a file's, or random float64 columns.
async fn load_table(config: &BenchConfig) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    match &config.file {
        Some(path) => {
            let source = TableSource::open(path)?;
            let schema = Arc::clone(source.schema());
            let batches = source.into_stream().try_collect().await?;
            Ok((schema, batches))
        }
        None => {
            let (size, cols, seed) = (config.size_bytes, config.cols, config.seed);
            tokio::task::spawn_blocking(move || Ok(data::random_table(size, cols, seed)))
                .await
                .map_err(task_failed)?
        }
    }
}
