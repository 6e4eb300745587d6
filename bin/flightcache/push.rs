//! `flightcache push`: upload a Parquet, Arrow IPC or CSV file as a table, or append it to one.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use futures::TryStreamExt;

use flightcache::bench::data::arrow_bytes;
use flightcache::formats::TableSource;
use flightcache::protocol::stream::Retention;
use flightcache::{PutOptions, TableKey};

use crate::cli::{PushArgs, format_duration};
use crate::output::{byte_bar, connect, file_stem, summary_line};

/// `flightcache push`: stream a table file into the cache, a batch at a time.
pub async fn push(args: PushArgs) -> anyhow::Result<()> {
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
    let retention = Retention {
        max_rows: args.max_rows,
        max_bytes: args.max_bytes,
        max_age_ms: args
            .max_age
            .map(|age| u64::try_from(age.0.as_millis()).unwrap_or(u64::MAX)),
    };
    let options = PutOptions {
        ttl: args.ttl.map(|ttl| ttl.0),
        append: args.append,
        retention: retention.caps().then_some(retention),
    };
    let summary = client
        .put_with(&key, schema, batches, &options)
        .await
        .with_context(|| format!("pushing `{}` as `{key}`", path.display()))?;
    bar.finish_and_clear();
    let mut line = summary_line("pushed", &key, summary.rows, summary.bytes, start);
    if let Some(first) = summary.first_offset {
        line = format!("{line}; appended as rows {first}..{}", first + summary.rows);
    }
    match options.ttl {
        Some(ttl) => writeln!(
            std::io::stdout(),
            "{line}; expires in {}",
            format_duration(ttl)
        )?,
        None => writeln!(std::io::stdout(), "{line}")?,
    }
    Ok(())
}
