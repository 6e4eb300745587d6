//! `flightcache sql`: run a query through Flight SQL; preview its result, write it to a file,
//! or store it under a key.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use flightcache::TableKey;

use crate::cli::SqlArgs;
use crate::get::{preview, write_file};
use crate::output::connect;

/// `flightcache sql`: run a query; print a preview, write the result to a file, or store it.
pub async fn sql(args: SqlArgs) -> anyhow::Result<()> {
    let into = args.into.as_deref().map(TableKey::try_new).transpose()?;
    let mut client = connect(&args.server).await?;
    let start = Instant::now();
    let stream = client.query(&args.query).await?;
    if let Some(key) = into {
        // The result streams straight into a put on a second connection: nothing is held
        // here beyond the batch in flight.
        let mut writer = connect(&args.server).await?;
        let schema = Arc::clone(stream.schema());
        let summary = writer
            .put(&key, schema, stream)
            .await
            .with_context(|| format!("storing the result under `{key}`"))?;
        writeln!(
            std::io::stdout(),
            "stored `{key}`: {} rows, {} batches in {:.2} s",
            summary.rows,
            summary.batches,
            start.elapsed().as_secs_f64()
        )?;
        return Ok(());
    }
    let Some(path) = &args.output else {
        return preview(stream, None, args.rows).await;
    };
    let rows = write_file(stream, path, None, "sql")
        .await
        .with_context(|| format!("writing the result to `{}`", path.display()))?;
    writeln!(
        std::io::stdout(),
        "wrote {rows} rows to `{}` in {:.2} s",
        path.display(),
        start.elapsed().as_secs_f64()
    )?;
    Ok(())
}
