//! `flightcache tail`: follow a key as it grows, printing its rows as they are appended, or
//! writing them to a live Arrow IPC stream file.

use std::io::Write;

use anyhow::Context;
use arrow::ipc::writer::StreamWriter;
use arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;

use flightcache::{ReadOptions, TableKey};

use crate::cli::TailArgs;
use crate::output::connect;

/// `flightcache tail`: stream `args.key`'s rows from `args.from` on, as they arrive, until the
/// key is dropped or replaced, `--count` rows came, or ctrl-c.
pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let options = ReadOptions {
        from: args.from,
        follow: true,
    };
    let mut stream = client.read(&key, options).await?;
    let start = stream.start_offset().unwrap_or(0);
    let schema = stream.schema().clone();
    let mut file = match &args.output {
        Some(path) => {
            let out = std::fs::File::create(path)
                .with_context(|| format!("creating `{}`", path.display()))?;
            Some(StreamWriter::try_new(
                std::io::BufWriter::new(out),
                &schema,
            )?)
        }
        None => None,
    };
    if file.is_some() {
        eprintln!("following `{key}` from row {start}");
    }
    let mut rows = 0;
    let limit = args.count.unwrap_or(u64::MAX);
    while rows < limit {
        let Some(batch) = stream.next().await.transpose()? else {
            break; // dropped or replaced: its stream ended
        };
        let take = (batch.num_rows() as u64).min(limit - rows) as usize;
        let batch = batch.slice(0, take);
        match &mut file {
            Some(writer) => {
                writer.write(&batch)?;
                writer.flush()?;
            }
            None if take > 0 => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "rows {}..{}", start + rows, start + rows + take as u64)?;
                writeln!(out, "{}", pretty_format_batches(&[batch])?)?;
                out.flush()?;
            }
            None => {}
        }
        rows += take as u64;
    }
    if let Some(writer) = file {
        writer.into_inner()?.flush()?;
        eprintln!("wrote rows {start}..{} of `{key}`", start + rows);
    }
    Ok(())
}
