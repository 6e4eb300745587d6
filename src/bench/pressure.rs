//! The memory-pressure benchmark behind `flightcache bench --pressure`: concurrent uploaders
//! offering several times a server's memory budget, readers checking every table they get,
//! and the server's RSS sampled throughout.
//!
//! One [`run_phase`] drives one server for a fixed time. `flightcache bench --pressure` runs
//! two, each against a fresh server: one with a budget, one without, so that their throughputs
//! compare within one run. Each put stores a table of a random size (log-uniform between
//! [`PressureConfig::min_table_bytes`] and [`PressureConfig::max_table_bytes`]) under a random
//! key of a key space sized to offer [`PressureConfig::offered_factor`] times the budget. Each
//! table's schema metadata names its version and rows, and its values are slices of one shared
//! random column at offsets its version decides, so a reader can tell that it got one whole
//! version, not a mix of two, without the uploaders copying data.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::bench::rss::owned_memory_bytes;
use crate::client::{CacheClient, PutOptions};
use crate::error::{Error, Result};
use crate::protocol::key::TableKey;

/// Rows of one batch of a pressure table: 1 MiB of float64.
const BATCH_ROWS: usize = 1 << 17;
/// How often the server's RSS is sampled: its own memory (anonymous and shared, what its budget
/// counts), not the pages of the files it maps.
const RSS_PERIOD: Duration = Duration::from_millis(100);

/// What a pressure phase does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PressureConfig {
    /// The server's memory budget, which sizes the key space; the server is told it by
    /// whoever starts it.
    pub budget_bytes: u64,
    /// How long the uploaders and readers run.
    pub duration: Duration,
    /// Concurrent uploaders, each on its own connection.
    pub uploaders: usize,
    /// Concurrent readers, each on its own connection.
    pub readers: usize,
    /// Smallest table put.
    pub min_table_bytes: u64,
    /// Largest table put.
    pub max_table_bytes: u64,
    /// The key space holds this many times the budget.
    pub offered_factor: f64,
    /// Seed of the sizes, keys and data.
    pub seed: u64,
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self {
            budget_bytes: 1 << 30,
            duration: Duration::from_secs(25),
            uploaders: 8,
            readers: 2,
            min_table_bytes: 64 << 10,
            max_table_bytes: 256 << 20,
            offered_factor: 4.0,
            seed: 7,
        }
    }
}

impl PressureConfig {
    /// Keys in the key space: enough that the mean table size times the keys is
    /// `offered_factor` times the budget.
    pub fn keys(&self) -> usize {
        let (a, b) = (self.min_table_bytes as f64, self.max_table_bytes as f64);
        let mean = if b > a { (b - a) / (b / a).ln() } else { a };
        ((self.budget_bytes as f64 * self.offered_factor / mean).ceil() as usize).max(1)
    }
}

/// What one phase measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `budget` or `no budget`.
    pub label: String,
    /// The budget the server was given, if any.
    pub budget_bytes: Option<u64>,
    /// Time the uploaders and readers ran.
    pub elapsed: Duration,
    /// Puts stored.
    pub puts: u64,
    /// Arrow bytes of the puts stored.
    pub put_bytes: u64,
    /// Puts refused with RESOURCE_EXHAUSTED.
    pub rejected: u64,
    /// Puts that failed otherwise (each one a defect).
    pub put_errors: u64,
    /// Gets that returned a table.
    pub gets: u64,
    /// Arrow bytes received by gets.
    pub get_bytes: u64,
    /// Gets answered NOT_FOUND (never stored, evicted or expired).
    pub not_found: u64,
    /// Gets that failed otherwise (each one a defect).
    pub get_errors: u64,
    /// Gets that returned something other than one whole version of a table (each one a
    /// defect).
    pub mixed: u64,
    /// The server's evictions during the phase.
    pub evictions: u64,
    /// RSS samples taken.
    pub rss_samples: usize,
    /// Highest RSS sampled.
    pub rss_max: u64,
    /// Median RSS sampled.
    pub rss_median: u64,
    /// Most memory the budget counted (`stats`' `memory_used`), sampled with RSS.
    pub charged_max: u64,
    /// Largest gap between a RSS sample and the memory charged at the same moment: what the
    /// budget does not count (the process itself, HTTP/2 buffers, the allocator's free lists).
    pub uncounted_max: u64,
    /// The check of expiring keys after the load, on the budgeted server.
    pub expiry: Option<ExpiryCheck>,
}

impl PhaseReport {
    /// Stored puts per second.
    pub fn puts_per_second(&self) -> f64 {
        self.puts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// GB/s of Arrow data stored by puts.
    pub fn put_gbps(&self) -> f64 {
        self.put_bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }

    /// GB/s of Arrow data received by gets.
    pub fn get_gbps(&self) -> f64 {
        self.get_bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e9
    }
}

/// Keys put with a short time to live, then watched as they expire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExpiryCheck {
    /// Keys put with the time to live.
    pub keys: usize,
    /// Gets sent after a key's deadline that still returned it (each one a defect).
    pub served_after_deadline: u64,
    /// From the last deadline until `stats` showed every key expired and its memory back.
    pub memory_back_after: Duration,
}

/// Run one phase against the server at `url` (whose process is `server_pid`, for its RSS).
///
/// # Errors
/// [`Error::Connect`] if the server cannot be reached; errors of the `stats` calls. Failed
/// puts and gets are counted, not returned.
pub async fn run_phase(
    url: &str,
    server_pid: Option<u32>,
    label: &str,
    budget: Option<u64>,
    config: &PressureConfig,
) -> Result<PhaseReport> {
    let template = Arc::new(random_column(config.seed));
    let keys = config.keys();
    let mut control = CacheClient::connect(url).await?;
    let evictions_before = control.stats().await?.evictions;
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(sample_rss(
        CacheClient::connect(url).await?,
        server_pid,
        stopped.clone(),
    ));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..config.uploaders {
        let client = CacheClient::connect(url).await?;
        let (template, config) = (Arc::clone(&template), config.clone());
        let seed = config.seed ^ ((i as u64 + 1) * 0x9E37_79B9);
        let stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            upload_until(client, template, config, keys, seed, i as u64, stopped).await
        }));
    }
    for i in 0..config.readers {
        let client = CacheClient::connect(url).await?;
        let template = Arc::clone(&template);
        let seed = config.seed ^ ((i as u64 + 101) * 0x85EB_CA6B);
        let stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            read_until(client, template, keys, seed, stopped).await
        }));
    }
    tokio::time::sleep(config.duration).await;
    stop.send(true).ok();
    let mut report = PhaseReport {
        label: label.to_string(),
        budget_bytes: budget,
        ..PhaseReport::default()
    };
    for task in tasks {
        let counts = task.await.map_err(|source| Error::TaskFailed {
            task: "pressure client",
            source,
        })?;
        counts.add_to(&mut report);
    }
    report.elapsed = start.elapsed();
    let samples = sampler.await.map_err(|source| Error::TaskFailed {
        task: "RSS sampler",
        source,
    })?;
    report.charged_max = samples.iter().map(|s| s.charged).max().unwrap_or(0);
    report.uncounted_max = samples
        .iter()
        .map(|s| s.rss.saturating_sub(s.charged))
        .max()
        .unwrap_or(0);
    let mut rss: Vec<u64> = samples.iter().map(|s| s.rss).collect();
    rss.sort_unstable();
    report.rss_samples = rss.len();
    report.rss_max = rss.last().copied().unwrap_or(0);
    report.rss_median = rss.get(rss.len() / 2).copied().unwrap_or(0);
    report.evictions = control.stats().await?.evictions - evictions_before;
    if budget.is_some() {
        report.expiry = Some(check_expiry(&mut control, &template).await?);
    }
    Ok(report)
}

/// What one uploader or reader counted.
#[derive(Debug, Default)]
struct Counts {
    puts: u64,
    put_bytes: u64,
    rejected: u64,
    put_errors: u64,
    gets: u64,
    get_bytes: u64,
    not_found: u64,
    get_errors: u64,
    mixed: u64,
}

impl Counts {
    fn add_to(&self, report: &mut PhaseReport) {
        report.puts += self.puts;
        report.put_bytes += self.put_bytes;
        report.rejected += self.rejected;
        report.put_errors += self.put_errors;
        report.gets += self.gets;
        report.get_bytes += self.get_bytes;
        report.not_found += self.not_found;
        report.get_errors += self.get_errors;
        report.mixed += self.mixed;
    }
}

/// Put tables of random sizes under random keys until `stopped`.
async fn upload_until(
    mut client: CacheClient,
    template: Arc<Float64Array>,
    config: PressureConfig,
    keys: usize,
    seed: u64,
    uploader: u64,
    stopped: watch::Receiver<bool>,
) -> Counts {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = Counts::default();
    let (min, max) = (config.min_table_bytes as f64, config.max_table_bytes as f64);
    let mut sequence = 0u64;
    while !*stopped.borrow() {
        let bytes = (min.ln() + rng.random::<f64>() * (max / min).ln()).exp() as u64;
        let rows = (bytes / 8).max(1) as usize;
        let key = TableKey::try_new(format!("p{}", rng.random_range(0..keys))).expect("a key");
        // Unique across uploaders: the version names who put it and when.
        let version = (sequence << 8) | uploader;
        sequence += 1;
        let (schema, batches) = versioned_table(&template, version, rows);
        match client.put_batches(&key, schema, batches).await {
            Ok(summary) => {
                counts.puts += 1;
                counts.put_bytes += summary.bytes;
            }
            Err(err) if err.code() == tonic::Code::ResourceExhausted => counts.rejected += 1,
            Err(err) => {
                tracing::warn!(error = %err, "pressure put failed");
                counts.put_errors += 1;
            }
        }
    }
    counts
}

/// Get random keys until `stopped`, checking each table received.
async fn read_until(
    mut client: CacheClient,
    template: Arc<Float64Array>,
    keys: usize,
    seed: u64,
    stopped: watch::Receiver<bool>,
) -> Counts {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = Counts::default();
    while !*stopped.borrow() {
        let key = TableKey::try_new(format!("p{}", rng.random_range(0..keys))).expect("a key");
        let got = async {
            let stream = client.get(&key).await?;
            let schema = stream.schema().clone();
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            Ok::<_, Error>((schema, batches))
        };
        match got.await {
            Ok((schema, batches)) => {
                counts.gets += 1;
                counts.get_bytes += crate::bench::data::arrow_bytes(&batches);
                if !is_one_whole_version(&template, &schema, &batches) {
                    counts.mixed += 1;
                }
            }
            Err(Error::TableNotFound { .. }) => counts.not_found += 1,
            Err(err) => {
                tracing::warn!(error = %err, "pressure get failed");
                counts.get_errors += 1;
            }
        }
    }
    counts
}

/// One sample of the server's memory.
#[derive(Debug, Clone, Copy)]
struct MemorySample {
    /// Its resident set size.
    rss: u64,
    /// What its budget counted, read just before.
    charged: u64,
}

/// The RSS of `pid`, and the memory its budget counts (through `client`), every
/// [`RSS_PERIOD`] until `stopped`.
async fn sample_rss(
    mut client: CacheClient,
    pid: Option<u32>,
    mut stopped: watch::Receiver<bool>,
) -> Vec<MemorySample> {
    let Some(pid) = pid else {
        return Vec::new();
    };
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(RSS_PERIOD);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let charged = client.stats().await.map_or(0, |stats| stats.memory_used);
                if let Some(rss) = owned_memory_bytes(pid) {
                    samples.push(MemorySample { rss, charged });
                }
            }
            _ = stopped.changed() => return samples,
        }
    }
}

/// The time to live of the keys of the expiry check.
const EXPIRY_TTL: Duration = Duration::from_secs(2);

/// Put a few keys with a short time to live on a quiet server, then check that none is served
/// after its deadline and how soon `stats` shows their memory back.
async fn check_expiry(client: &mut CacheClient, template: &Float64Array) -> Result<ExpiryCheck> {
    const KEYS: usize = 5;
    let before = client.stats().await?;
    let options = PutOptions {
        ttl: Some(EXPIRY_TTL),
        ..PutOptions::default()
    };
    let mut last_put = Instant::now();
    let mut keys = Vec::new();
    for i in 0..KEYS {
        let key = TableKey::try_new(format!("expiring-{i}"))?;
        let (schema, batches) = versioned_table(template, 1 << 40 | i as u64, 8 * BATCH_ROWS);
        let stream = futures::stream::iter(batches.into_iter().map(Ok));
        client.put_with(&key, schema, stream, &options).await?;
        last_put = Instant::now();
        keys.push(key);
    }
    // The server's deadline for each key is at the latest EXPIRY_TTL after its put was answered.
    let last_deadline = last_put + EXPIRY_TTL;
    tokio::time::sleep_until(last_deadline.into()).await;
    let mut check = ExpiryCheck {
        keys: KEYS,
        ..ExpiryCheck::default()
    };
    for key in &keys {
        if client.get(key).await.is_ok() {
            check.served_after_deadline += 1;
        }
    }
    loop {
        let stats = client.stats().await?;
        let expired = stats.expirations - before.expirations >= KEYS as u64;
        if expired && stats.memory_tables <= before.memory_tables {
            check.memory_back_after = last_deadline.elapsed();
            return Ok(check);
        }
        if last_deadline.elapsed() > Duration::from_secs(10) {
            check.memory_back_after = last_deadline.elapsed();
            return Ok(check);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The shared random column every pressure table slices: two batches' worth.
fn random_column(seed: u64) -> Float64Array {
    let mut rng = StdRng::seed_from_u64(seed);
    Float64Array::from_iter_values((0..2 * BATCH_ROWS).map(|_| rng.random::<f64>()))
}

/// Where batch `index` of `version` starts in the template.
fn offset(version: u64, index: usize) -> usize {
    (version.wrapping_mul(7919) as usize).wrapping_add(index * 31) % BATCH_ROWS
}

/// A table of `rows` rows: batches of [`BATCH_ROWS`] sliced from `template` (no copy), and
/// its version and rows in the schema metadata.
fn versioned_table(
    template: &Float64Array,
    version: u64,
    rows: usize,
) -> (SchemaRef, Vec<RecordBatch>) {
    let metadata = HashMap::from([
        ("version".to_string(), version.to_string()),
        ("rows".to_string(), rows.to_string()),
    ]);
    let schema = Arc::new(
        Schema::new(vec![Field::new("v", DataType::Float64, false)]).with_metadata(metadata),
    );
    let batches = (0..rows.div_ceil(BATCH_ROWS))
        .map(|index| {
            let len = BATCH_ROWS.min(rows - index * BATCH_ROWS);
            let column = template.slice(offset(version, index), len);
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(column)])
                .expect("the column matches the schema")
        })
        .collect();
    (schema, batches)
}

/// Whether `batches` are exactly the table its schema's metadata names, row for row.
fn is_one_whole_version(template: &Float64Array, schema: &Schema, batches: &[RecordBatch]) -> bool {
    let field = |name: &str| schema.metadata().get(name)?.parse::<u64>().ok();
    let (Some(version), Some(rows)) = (field("version"), field("rows")) else {
        return false;
    };
    let mut row = 0usize;
    for batch in batches {
        let Some(values) = batch.column(0).as_any().downcast_ref::<Float64Array>() else {
            return false;
        };
        if values.is_empty() {
            continue;
        }
        // Check the first and last value of every batch against where its rows must come
        // from (a batch may be re-split; its rows still follow each other).
        for (i, value) in [
            (0, values.value(0)),
            (values.len() - 1, values.value(values.len() - 1)),
        ] {
            let at = row + i;
            let expected = template.value(offset(version, at / BATCH_ROWS) + at % BATCH_ROWS);
            if value.to_bits() != expected.to_bits() {
                return false;
            }
        }
        row += values.len();
    }
    row as u64 == rows
}

/// Both phases of `flightcache bench --pressure`, and how they compare.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PressureReport {
    /// What was run.
    pub config: PressureConfig,
    /// The phase with a budget, then the phase without.
    pub phases: Vec<PhaseReport>,
}

impl PressureReport {
    /// The report as text, with the targets beside the figures.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let gib = |bytes: u64| bytes as f64 / f64::from(1 << 30);
        let mut out = String::new();
        let c = &self.config;
        writeln!(
            out,
            "pressure: {} uploaders, {} readers, {:.0} s per phase, tables {} KiB to {} MiB, \
             {} keys offering {:.0}x the budget of {:.2} GiB",
            c.uploaders,
            c.readers,
            c.duration.as_secs_f64(),
            c.min_table_bytes >> 10,
            c.max_table_bytes >> 20,
            c.keys(),
            c.offered_factor,
            gib(c.budget_bytes)
        )
        .ok();
        for phase in &self.phases {
            writeln!(
                out,
                "\n{}: {} puts ({:.1}/s, {:.2} GB/s), {} rejected, {} put errors; {} gets \
                 ({:.2} GB/s), {} not found, {} get errors, {} not one whole version; {} evictions",
                phase.label,
                phase.puts,
                phase.puts_per_second(),
                phase.put_gbps(),
                phase.rejected,
                phase.put_errors,
                phase.gets,
                phase.get_gbps(),
                phase.not_found,
                phase.get_errors,
                phase.mixed,
                phase.evictions,
            )
            .ok();
            if phase.rss_samples > 0 {
                write!(
                    out,
                    "  server RSS over {} samples: max {:.2} GiB, median {:.2} GiB; charged to the \
                     budget at most {:.2} GiB, RSS above the charge at most {:.0} MiB",
                    phase.rss_samples,
                    gib(phase.rss_max),
                    gib(phase.rss_median),
                    gib(phase.charged_max),
                    phase.uncounted_max as f64 / f64::from(1 << 20),
                )
                .ok();
                match phase.budget_bytes {
                    Some(budget) => {
                        let target = budget as f64 * 1.05 + f64::from(64 << 20);
                        writeln!(
                            out,
                            " (max {:.2}x the budget; target 1.05x + 64 MiB = {:.2} GiB: {})",
                            phase.rss_max as f64 / budget as f64,
                            target / f64::from(1 << 30),
                            if phase.rss_max as f64 <= target {
                                "met"
                            } else {
                                "MISSED"
                            }
                        )
                        .ok();
                    }
                    None => {
                        writeln!(out).ok();
                    }
                }
            }
            if let Some(expiry) = &phase.expiry {
                writeln!(
                    out,
                    "  expiry: {} keys with a {} s ttl, {} served after their deadline, memory \
                     back in stats {:.0} ms after the last deadline (target 100 ms: {})",
                    expiry.keys,
                    EXPIRY_TTL.as_secs(),
                    expiry.served_after_deadline,
                    expiry.memory_back_after.as_secs_f64() * 1000.0,
                    if expiry.memory_back_after <= Duration::from_millis(100)
                        && expiry.served_after_deadline == 0
                    {
                        "met"
                    } else {
                        "MISSED"
                    }
                )
                .ok();
            }
        }
        if let [budgeted, unlimited] = self.phases.as_slice() {
            let ratio = budgeted.put_gbps() / unlimited.put_gbps().max(1e-12);
            writeln!(
                out,
                "\nput throughput under the budget: {:.0}% of the run without one (target 80%: {})",
                ratio * 100.0,
                if ratio >= 0.8 { "met" } else { "MISSED" }
            )
            .ok();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_versioned_table_checks_whole_and_a_mix_does_not() {
        let template = random_column(1);
        let (schema, batches) = versioned_table(&template, 5, 3 * BATCH_ROWS + 10);
        assert_eq!(batches.len(), 4);
        assert!(is_one_whole_version(&template, &schema, &batches));
        let (_, other) = versioned_table(&template, 6, 3 * BATCH_ROWS + 10);
        let mixed = [&batches[..2], &other[2..]].concat();
        assert!(!is_one_whole_version(&template, &schema, &mixed));
        assert!(
            !is_one_whole_version(&template, &schema, &batches[..3]),
            "cut short"
        );
    }

    #[test]
    fn the_key_space_offers_the_asked_multiple_of_the_budget() {
        let config = PressureConfig::default();
        let mean = (256.0 * 1024.0 - 64.0) / (256.0 * 1024.0 / 64.0f64).ln() * 1024.0;
        let offered = config.keys() as f64 * mean;
        let budget = config.budget_bytes as f64;
        assert!(
            (offered / budget - 4.0).abs() < 0.05,
            "{}",
            offered / budget
        );
    }
}
