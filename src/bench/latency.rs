//! The small-table latency run (`flightcache bench --small`): many puts and gets of a small
//! table, one at a time per client, for latency percentiles and operations per second.

use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::data::{arrow_bytes, random_table};
use crate::client::CacheClient;
use crate::error::Result;
use crate::protocol::key::TableKey;

/// Rows of the small table.
pub const SMALL_ROWS: u64 = 1000;
/// Columns of the small table.
pub const SMALL_COLS: usize = 8;
/// Operations each client runs per measurement by default.
pub const DEFAULT_SMALL_OPERATIONS: usize = 2000;

/// One operation measured with some number of concurrent clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyMeasurement {
    /// `put` or `get`.
    pub operation: String,
    /// Concurrent clients, each on its own connection.
    pub clients: usize,
    /// Operations completed by all clients together per second.
    pub ops_per_s: f64,
    /// Median latency of one operation, in microseconds.
    pub median_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
}

/// Everything the latency run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// The Flight server measured.
    pub server: String,
    /// Rows of the small table.
    pub rows: u64,
    /// Columns of the small table.
    pub columns: usize,
    /// Arrow bytes of the small table.
    pub bytes: u64,
    /// Operations per client per measurement.
    pub operations: usize,
    /// One entry per operation and client count.
    pub measurements: Vec<LatencyMeasurement>,
}

/// The `q` quantile (0..=1) of sorted `samples`, nearest-rank.
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Run `operations` puts and then `operations` gets per client for each count in
/// `client_counts`, against the server at `url`.
///
/// # Errors
/// [`Error::Connect`](crate::Error::Connect) if the server cannot be reached; any RPC error.
pub async fn run(url: &str, operations: usize, client_counts: &[usize]) -> Result<LatencyReport> {
    let (schema, batches) = random_table(SMALL_ROWS * 8 * SMALL_COLS as u64, SMALL_COLS, 11);
    let batches = Arc::new(batches);
    let mut measurements = Vec::new();
    for &clients in client_counts {
        for operation in ["put", "get"] {
            let mut tasks = Vec::new();
            let start = Instant::now();
            for c in 0..clients {
                let mut client = CacheClient::connect(url).await?;
                let key = TableKey::try_new(format!("small-{c}"))?;
                client
                    .put_batches(&key, Arc::clone(&schema), batches.to_vec())
                    .await?;
                let (schema, batches) = (Arc::clone(&schema), Arc::clone(&batches));
                let operation = operation.to_string();
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(operations);
                    for _ in 0..operations {
                        let t = Instant::now();
                        if operation == "put" {
                            client
                                .put_batches(&key, Arc::clone(&schema), batches.to_vec())
                                .await?;
                        } else {
                            let _: Vec<RecordBatch> = client.get(&key).await?.try_collect().await?;
                        }
                        latencies.push(t.elapsed());
                    }
                    Ok::<_, crate::Error>(latencies)
                }));
            }
            let mut latencies = Vec::new();
            for task in tasks {
                latencies.extend(task.await.map_err(|source| crate::Error::TaskFailed {
                    task: "latency client",
                    source,
                })??);
            }
            let elapsed = start.elapsed().as_secs_f64();
            latencies.sort();
            measurements.push(LatencyMeasurement {
                operation: operation.to_string(),
                clients,
                ops_per_s: latencies.len() as f64 / elapsed,
                median_us: quantile(&latencies, 0.5).as_secs_f64() * 1e6,
                p99_us: quantile(&latencies, 0.99).as_secs_f64() * 1e6,
            });
        }
    }
    for c in 0..client_counts.iter().copied().max().unwrap_or(0) {
        CacheClient::connect(url)
            .await?
            .drop_table(&TableKey::try_new(format!("small-{c}"))?)
            .await?;
    }
    Ok(LatencyReport {
        server: url.to_string(),
        rows: SMALL_ROWS,
        columns: SMALL_COLS,
        bytes: arrow_bytes(&batches),
        operations,
        measurements,
    })
}

impl LatencyReport {
    /// The report as a table for a person.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "small table: {} rows x {} columns ({} bytes); {} operations per client; server {}\n\n",
            self.rows, self.columns, self.bytes, self.operations, self.server
        );
        out.push_str(&format!(
            "{:<10} {:>8} {:>12} {:>12} {:>12}\n",
            "operation", "clients", "ops/s", "median us", "p99 us"
        ));
        for m in &self.measurements {
            out.push_str(&format!(
                "{:<10} {:>8} {:>12.0} {:>12.1} {:>12.1}\n",
                m.operation, m.clients, m.ops_per_s, m.median_us, m.p99_us
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile(&samples, 0.5), Duration::from_micros(50));
        assert_eq!(quantile(&samples, 0.99), Duration::from_micros(99));
        assert_eq!(quantile(&samples, 1.0), Duration::from_micros(100));
        assert_eq!(quantile::<Duration>(&[], 0.5), Duration::ZERO);
    }
}
