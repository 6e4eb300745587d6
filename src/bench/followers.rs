//! `flightcache bench --followers N`: how soon an append reaches the followers of a key.
//!
//! One producer appends batches of 1,000 rows (a `seq` column and a payload column) to a key,
//! one every interval, while N followers read it (`x-flightcache-follow`) with this crate's
//! client, each on its own connection. The latency of an append to a follower is from the
//! producer's receipt of its acknowledgement to the follower's receipt of its batch, over
//! every (append, follower) pair; producer and followers share one clock (one process).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;
use serde::Serialize;

use crate::bench::latency::quantile;
use crate::error::{Error, Result};
use crate::protocol::key::TableKey;
use crate::protocol::stream::ReadFrom;
use crate::{CacheClient, PutOptions, ReadOptions};

/// The default number of appends a `--followers` run makes.
pub const DEFAULT_APPENDS: usize = 300;

/// What a `--followers` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FollowersReport {
    /// Followers reading.
    pub followers: usize,
    /// Appends made.
    pub appends: usize,
    /// Rows an append.
    pub rows: usize,
    /// The median latency from an append's acknowledgement to a follower's receipt, in
    /// microseconds (negative: the follower had it before the producer heard back).
    pub p50_us: f64,
    /// The 99th percentile.
    pub p99_us: f64,
    /// The largest.
    pub max_us: f64,
    /// Arrow bytes delivered to all followers together per second, from the first append to
    /// the last follower's last batch (meaningful with no interval between appends).
    pub aggregate_mib_per_s: f64,
}

impl FollowersReport {
    /// The report as a line for people.
    pub fn to_text(&self) -> String {
        format!(
            "{} appends of {} rows to {} followers: latency p50 {:.0} us, p99 {:.0} us, max {:.0} us\n",
            self.appends, self.rows, self.followers, self.p50_us, self.p99_us, self.max_us
        ) + &format!(
            "delivered {:.0} MiB/s to the followers together\n",
            self.aggregate_mib_per_s
        )
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

fn batch(seq: i64, rows: usize) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(vec![seq; rows])),
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
        ],
    )?)
}

/// Append `appends` batches of `rows` rows to a fresh key of the server at `url`, one every
/// `interval`, while `followers` followers read it; the key is dropped at the end.
///
/// # Errors
/// A connection, append or read that failed.
pub async fn run(
    url: &str,
    followers: usize,
    appends: usize,
    rows: usize,
    interval: Duration,
) -> Result<FollowersReport> {
    // At least one of each: the percentiles need a latency.
    let (followers, appends, rows) = (followers.max(1), appends.max(1), rows.max(1));
    let key = TableKey::try_new(format!("bench/followers-{}", std::process::id()))?;
    let append = PutOptions {
        append: true,
        ..PutOptions::default()
    };
    let mut producer = CacheClient::connect(url).await?;
    let one = |seq| batch(seq, rows).map(|b| futures::stream::iter([Ok(b)]));
    producer.put_with(&key, schema(), one(-1)?, &append).await?;
    let start = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..followers {
        let mut client = CacheClient::connect(url).await?;
        let key = key.clone();
        let options = ReadOptions {
            from: ReadFrom::Latest,
            follow: true,
        };
        let mut stream = client.read(&key, options).await?;
        readers.push(tokio::spawn(async move {
            let mut received = vec![None; appends];
            let mut seen = 0;
            while seen < appends {
                let Some(batch) = stream.next().await.transpose()? else {
                    break;
                };
                let at = start.elapsed();
                let seq = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .map_or(-1, |seqs| seqs.value(0));
                if let Some(slot) = usize::try_from(seq).ok().and_then(|s| received.get_mut(s)) {
                    *slot = Some(at);
                    seen += 1;
                }
            }
            drop(client);
            Ok::<_, Error>(received)
        }));
    }
    let mut acknowledged = Vec::with_capacity(appends);
    for seq in 0..appends {
        producer
            .put_with(&key, schema(), one(seq as i64)?, &append)
            .await?;
        acknowledged.push(start.elapsed());
        tokio::time::sleep(interval).await;
    }
    let first_append = acknowledged.first().copied().unwrap_or_default();
    let batch_bytes = batch(0, rows)?.get_array_memory_size() as f64;
    let mut last_receipt = Duration::ZERO;
    let mut latencies = Vec::with_capacity(appends * followers);
    for reader in readers {
        let received = reader.await.map_err(|source| Error::TaskFailed {
            task: "bench follower",
            source,
        })??;
        for (at, acked) in received.into_iter().zip(&acknowledged) {
            let at = at.ok_or_else(|| Error::UnexpectedAnswer {
                problem: crate::error::AnswerProblem::Missing {
                    rpc: "do_get of a follower (every append)",
                },
            })?;
            last_receipt = last_receipt.max(at);
            latencies.push((at.as_secs_f64() - acked.as_secs_f64()) * 1e6);
        }
    }
    producer.drop_table(&key).await?;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| quantile(&latencies, q);
    // From the first append's acknowledgement: it was sent a round trip before.
    let seconds = last_receipt
        .saturating_sub(first_append)
        .as_secs_f64()
        .max(1e-9);
    let delivered = (followers * appends) as f64 * batch_bytes;
    Ok(FollowersReport {
        followers,
        appends,
        rows,
        p50_us: at(0.5),
        p99_us: at(0.99),
        max_us: at(1.0),
        aggregate_mib_per_s: delivered / f64::from(1 << 20) / seconds,
    })
}
