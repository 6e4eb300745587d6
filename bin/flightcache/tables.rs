//! The subcommands that manage the cached tables: `list`, `info`, `drop`, `clear`.

use std::io::Write;

use indicatif::HumanBytes;

use flightcache::TableKey;

use crate::cli::{KeyArgs, ListArgs, ServerArgs};
use crate::output::{connect, truncate};

/// `flightcache list`: one line per table.
pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut client = connect(&args.server).await?;
    let tables = client.list(&args.prefix).await?;
    let mut out = std::io::stdout().lock();
    if tables.is_empty() {
        writeln!(out, "no tables; `flightcache push FILE` adds one")?;
        return Ok(());
    }
    let width = tables
        .iter()
        .map(|t| t.key.as_str().len())
        .max()
        .unwrap_or(3)
        .max(3);
    writeln!(
        out,
        "{:<width$}  {:>12}  {:>10}  {:>7}",
        "KEY", "ROWS", "SIZE", "COLUMNS"
    )?;
    for table in tables {
        writeln!(
            out,
            "{:<width$}  {:>12}  {:>10}  {:>7}",
            table.key.as_str(),
            table.rows,
            HumanBytes(table.bytes).to_string(),
            table.schema.fields().len()
        )?;
    }
    Ok(())
}

/// `flightcache info`: a table's schema, rows and size.
pub async fn info(args: KeyArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let info = client.info(&key).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "key:     {}", info.key)?;
    writeln!(out, "rows:    {}", info.rows)?;
    writeln!(
        out,
        "size:    {} ({} bytes)",
        HumanBytes(info.bytes),
        info.bytes
    )?;
    for location in &info.locations {
        writeln!(out, "at:      {location}")?;
    }
    writeln!(out, "columns: {}", info.schema.fields().len())?;
    for field in info.schema.fields() {
        let null = if field.is_nullable() { "" } else { " not null" };
        writeln!(out, "  {}: {}{null}", field.name(), field.data_type())?;
        for (k, v) in field.metadata() {
            writeln!(out, "    {k} = {v}")?;
        }
    }
    for (k, v) in info.schema.metadata() {
        writeln!(out, "metadata: {k} = {}", truncate(v, 120))?;
    }
    Ok(())
}

/// `flightcache drop`: remove one table.
pub async fn drop_table(args: KeyArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let dropped = client.drop_table(&key).await?;
    let size = HumanBytes(dropped.bytes);
    writeln!(
        std::io::stdout(),
        "dropped `{key}` ({} rows, {size})",
        dropped.rows
    )?;
    Ok(())
}

/// `flightcache clear`: remove every table.
pub async fn clear(args: ServerArgs) -> anyhow::Result<()> {
    let mut client = connect(&args).await?;
    let cleared = client.clear().await?;
    writeln!(std::io::stdout(), "cleared {} tables", cleared.tables)?;
    Ok(())
}
