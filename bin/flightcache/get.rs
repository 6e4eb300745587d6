//! `flightcache get`: download a table into a file (by extension), or preview its first rows.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

use flightcache::TableKey;
use flightcache::bench::data::arrow_bytes;
use flightcache::formats::TableSink;

use crate::cli::GetArgs;
use crate::output::{byte_bar, connect, summary_line};

/// `flightcache get`: download a table into a file, or preview its first rows.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let info = client.info(&key).await?;
    let start = Instant::now();
    let stream = client.get(&key).await?;
    let Some(path) = &args.output else {
        return preview(stream, Some(info.rows), args.rows).await;
    };
    let rows = write_file(stream, path, Some(info.bytes), "get")
        .await
        .with_context(|| format!("writing `{key}` to `{}`", path.display()))?;
    let line = summary_line("wrote", &key, rows, info.bytes, start);
    writeln!(std::io::stdout(), "{line} to `{}`", path.display())?;
    Ok(())
}

/// Write `stream` to the file at `path` (its format by extension), a batch at a time, with a
/// progress bar of `total_bytes` (when known) named `verb`; the rows written.
pub async fn write_file(
    stream: flightcache::TableStream,
    path: &std::path::Path,
    total_bytes: Option<u64>,
    verb: &str,
) -> flightcache::Result<u64> {
    let bar = byte_bar(total_bytes, verb);
    let schema = Arc::clone(stream.schema());
    let mut rows = 0;
    TableSink::write_stream(path, &schema, stream, |batch| {
        rows += batch.num_rows() as u64;
        bar.inc(arrow_bytes(std::slice::from_ref(batch)));
    })
    .await?;
    bar.finish_and_clear();
    Ok(rows)
}

/// Print the first `limit` rows of a table (of `total_rows`, when known), then stop reading it.
pub async fn preview(
    mut stream: flightcache::TableStream,
    total_rows: Option<u64>,
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
    match total_rows {
        Some(total) => writeln!(out, "{rows} of {total} rows shown")?,
        None if rows < limit => writeln!(out, "{rows} rows")?,
        None => writeln!(
            out,
            "first {rows} rows shown (--rows N for more, -o FILE for all)"
        )?,
    }
    Ok(())
}
