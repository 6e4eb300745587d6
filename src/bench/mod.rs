//! The throughput benchmark behind `flightcache bench`: Flight put and get of one table against
//! the JSON-over-socket baseline and the raw-socket ceiling, in one process, on one dataset.
//!
//! - [`data`]: random tables, Arrow byte counts, table equality.
//! - [`report`]: medians, GB/s, ratios, and the text, JSON and SVG renderings.

pub mod data;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;

use crate::baseline::{json, raw};
use crate::client::{CacheClient, ClientConfig};
use crate::error::{Error, Result};
use crate::files::TableSource;
use crate::key::TableKey;
use crate::server::{EmbeddedServer, ServerConfig};

pub use report::{BenchReport, Measurement, Ratios};

/// Default table size: 128 MiB of Arrow data keeps the default run near one minute on two
/// cores (the JSON baseline dominates it).
pub const DEFAULT_BENCH_BYTES: u64 = 128 << 20;
/// Default number of float64 columns.
pub const DEFAULT_BENCH_COLS: usize = 64;
/// Default number of timed rounds; medians are taken over them.
pub const DEFAULT_BENCH_ROUNDS: usize = 5;
/// The key the benchmark table is stored under.
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
    /// Measure this server instead of an embedded one.
    pub server: Option<String>,
    /// Seed of the random data.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            size_bytes: DEFAULT_BENCH_BYTES,
            cols: DEFAULT_BENCH_COLS,
            file: None,
            rounds: DEFAULT_BENCH_ROUNDS,
            server: None,
            seed: 42,
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

/// Samples of each timed operation, in seconds.
#[derive(Debug, Default)]
struct Samples {
    flight_put: Vec<Duration>,
    flight_get: Vec<Duration>,
    json_put: Vec<json::JsonTimings>,
    json_get: Vec<json::JsonTimings>,
    raw_put: Vec<Duration>,
    raw_get: Vec<Duration>,
}

/// Run the benchmark.
///
/// # Errors
/// [`Error::Connect`] if `--server` cannot be reached; [`Error::Protocol`] if a Flight get does
/// not return the table that was put; any I/O or Arrow error on the way.
pub async fn run(config: &BenchConfig, progress: &dyn Progress) -> Result<BenchReport> {
    progress.step("preparing data");
    let (schema, batches) = load_table(config).await?;
    let bytes = data::arrow_bytes(&batches);
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();

    let embedded = match &config.server {
        Some(_) => None,
        None => Some(EmbeddedServer::start(ServerConfig::default()).await?),
    };
    let url = match (&config.server, &embedded) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url(),
        (None, None) => unreachable!("an embedded server is started when no URL is given"),
    };
    let mut flight = CacheClient::connect_with(&url, &ClientConfig::default()).await?;
    let json_server = json::start_server().await?;
    let mut json_client = json::JsonClient::connect(json_server.addr()).await?;
    let raw_server = raw::start_server().await?;
    let mut raw_client = raw::RawClient::connect(raw_server.addr()).await?;

    let key = TableKey::try_new(BENCH_KEY)?;
    let shared = Arc::new(batches);
    let mut samples = Samples::default();
    let rounds = config.rounds.max(1);
    for round in 1..=rounds {
        let step = |what: &str| progress.step(&format!("round {round}/{rounds}: {what}"));

        step("flight put");
        let start = Instant::now();
        flight
            .put_batches(&key, Arc::clone(&schema), shared.as_ref().clone())
            .await?;
        samples.flight_put.push(start.elapsed());

        step("flight get");
        let start = Instant::now();
        let got: Vec<RecordBatch> = flight.get(&key).await?.try_collect().await?;
        samples.flight_get.push(start.elapsed());
        if round == 1 && !data::tables_equal(&shared, &got) {
            return Err(Error::Protocol(
                "the table Flight returned differs from the one put".into(),
            ));
        }
        drop(got);

        step("json put");
        samples
            .json_put
            .push(json_client.put(Arc::clone(&shared)).await?);
        step("json get");
        let (_, timings) = json_client.get().await?;
        samples.json_get.push(timings);

        step("raw socket put");
        samples.raw_put.push(raw_client.put(bytes as usize).await?);
        step("raw socket get");
        samples.raw_get.push(raw_client.get(bytes as usize).await?);
    }
    if embedded.is_none() {
        // Leave a measured server as it was found.
        flight.drop_table(&key).await?;
    }
    if let Some(server) = embedded {
        server.shutdown_and_wait().await?;
    }
    Ok(report::summarize(
        config,
        &url,
        rows,
        bytes,
        schema.fields().len(),
        samples,
    ))
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
                .map_err(|e| Error::Io(std::io::Error::other(format!("data task failed: {e}"))))?
        }
    }
}
