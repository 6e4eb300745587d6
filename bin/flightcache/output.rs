//! What the client subcommands share: connecting, progress bars, and result lines.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::bail;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use flightcache::{CacheClient, TableKey};

use crate::cli::ServerArgs;

/// A client of the server `args` name, with the TLS settings and credentials they give.
pub async fn connect(args: &ServerArgs) -> anyhow::Result<CacheClient> {
    let config = crate::auth::client_config(args)?;
    Ok(CacheClient::connect_with(&args.server, &config).await?)
}

/// A progress bar in bytes on stderr, drawn only when stderr is a terminal.
pub fn byte_bar(total: Option<u64>, verb: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = format!(
        "{verb} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} eta {{eta}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One line for a finished transfer: rows, size, time and speed.
pub fn summary_line(verb: &str, key: &TableKey, rows: u64, bytes: u64, start: Instant) -> String {
    let secs = start.elapsed().as_secs_f64();
    let gbps = bytes as f64 / secs.max(1e-9) / 1e9;
    format!(
        "{verb} `{key}`: {rows} rows, {} in {secs:.2} s ({gbps:.2} GB/s)",
        HumanBytes(bytes)
    )
}

/// The key a file is pushed under by default: its name without the extension.
pub fn file_stem(path: &Path) -> anyhow::Result<String> {
    match path.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if !stem.is_empty() => Ok(stem.to_string()),
        _ => bail!(
            "cannot name a key after `{}`; pass --key NAME",
            path.display()
        ),
    }
}

/// `text` cut to `max` characters, marked with an ellipsis when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
