//! The subcommands that manage the cached tables: `list`, `info`, `drop`, `clear`, `expire`,
//! `persist`, `ttl`, `stats`.

use std::io::Write;
use std::time::Duration;

use indicatif::HumanBytes;

use flightcache::TableKey;

use crate::cli::{ExpireArgs, KeyArgs, ListArgs, ServerArgs, format_duration};
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
        "{:<width$}  {:>12}  {:>10}  {:>7}  {:>8}  {:>10}",
        "KEY", "ROWS", "SIZE", "COLUMNS", "TTL", "LAST USE"
    )?;
    for table in tables {
        writeln!(
            out,
            "{:<width$}  {:>12}  {:>10}  {:>7}  {:>8}  {:>10}",
            table.key.as_str(),
            table.rows,
            HumanBytes(table.bytes).to_string(),
            table.schema.fields().len(),
            ttl_column(table.ttl),
            idle_column(table.idle),
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
    match info.ttl {
        Some(ttl) => writeln!(out, "ttl:     expires in {}", ttl_column(Some(ttl)))?,
        None => writeln!(out, "ttl:     never expires")?,
    }
    writeln!(out, "used:    {}", idle_column(info.idle))?;
    if let Some(offsets) = info.offsets {
        writeln!(
            out,
            "offsets: {}..{} (the oldest row kept, the next row appended)",
            offsets.earliest_offset, offsets.next_offset
        )?;
        if let Some(retention) = offsets.retention {
            writeln!(out, "retains: {}", retention_text(&retention))?;
        }
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

/// A key's retention in words: `10000 rows, 64.00 MiB, 1h`.
fn retention_text(retention: &flightcache::protocol::stream::Retention) -> String {
    let mut parts = Vec::new();
    if let Some(rows) = retention.max_rows {
        parts.push(format!("{rows} rows"));
    }
    if let Some(bytes) = retention.max_bytes {
        parts.push(HumanBytes(bytes).to_string());
    }
    if let Some(age) = retention.max_age() {
        parts.push(crate::cli::format_duration(age));
    }
    format!("about {} (oldest appends trimmed first)", parts.join(", "))
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

/// `flightcache expire`: give a table a time to live.
pub async fn expire(args: ExpireArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let result = client.expire(&key, args.ttl.0).await?;
    let left = result
        .ttl_seconds
        .map_or(args.ttl.0, Duration::from_secs_f64);
    writeln!(
        std::io::stdout(),
        "`{key}` expires in {}",
        ttl_column(Some(left))
    )?;
    Ok(())
}

/// `flightcache persist`: remove a table's time to live.
pub async fn persist(args: KeyArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let result = client.persist(&key).await?;
    let line = match result.had_ttl {
        true => format!("`{key}` no longer expires"),
        false => format!("`{key}` had no time to live; it never expires"),
    };
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// `flightcache ttl`: how long a table has to live.
pub async fn ttl(args: KeyArgs) -> anyhow::Result<()> {
    let key = TableKey::try_new(args.key.as_str())?;
    let mut client = connect(&args.server).await?;
    let result = client.ttl(&key).await?;
    let line = match result.ttl_seconds {
        Some(seconds) => format!(
            "`{key}` expires in {}",
            ttl_column(Some(Duration::from_secs_f64(seconds)))
        ),
        None => format!("`{key}` never expires"),
    };
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// `flightcache stats`: the server's tables, memory and counters.
pub async fn stats(args: ServerArgs) -> anyhow::Result<()> {
    let mut client = connect(&args).await?;
    let stats = client.stats().await?;
    let mut out = std::io::stdout().lock();
    let budget = match stats.memory_budget {
        0 => "none".to_string(),
        bytes => HumanBytes(bytes).to_string(),
    };
    writeln!(out, "tables:           {}", stats.tables)?;
    writeln!(out, "rows:             {}", stats.rows)?;
    writeln!(out, "arrow bytes:      {}", HumanBytes(stats.bytes))?;
    writeln!(out, "memory budget:    {budget}")?;
    writeln!(out, "memory used:      {}", HumanBytes(stats.memory_used))?;
    writeln!(out, "  by tables:      {}", HumanBytes(stats.memory_tables))?;
    writeln!(
        out,
        "  by uploads:     {}",
        HumanBytes(stats.memory_uploads)
    )?;
    writeln!(out, "  kept for reuse: {}", HumanBytes(stats.freed_bytes))?;
    writeln!(
        out,
        "process overhead: {}",
        HumanBytes(stats.memory_overhead)
    )?;
    writeln!(out, "puts:             {}", stats.puts)?;
    writeln!(out, "gets:             {}", stats.gets)?;
    writeln!(out, "errors:           {}", stats.errors)?;
    writeln!(out, "evictions:        {}", stats.evictions)?;
    writeln!(out, "expirations:      {}", stats.expirations)?;
    writeln!(out, "rejected uploads: {}", stats.rejected_uploads)?;
    Ok(())
}

/// A time to live as a column: `-` when there is none.
fn ttl_column(ttl: Option<Duration>) -> String {
    ttl.map_or_else(
        || "-".to_string(),
        |ttl| format_duration(whole_seconds(ttl)),
    )
}

/// Time since last use as a column, in whole seconds: `-` when unknown.
fn idle_column(idle: Option<Duration>) -> String {
    idle.map_or_else(
        || "-".to_string(),
        |idle| format!("{} ago", format_duration(whole_seconds(idle))),
    )
}

/// `duration` rounded up to whole seconds, as people read times to live.
fn whole_seconds(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs_f64().ceil() as u64)
}
