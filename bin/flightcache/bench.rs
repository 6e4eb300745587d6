//! `flightcache bench`: time Flight put and get against JSON over a socket and a raw socket
//! transfer, against a server it starts or one it is given.

use std::io::Write;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use flightcache::bench::{self, BenchConfig};

use crate::allocator;
use crate::cli::BenchArgs;

/// `flightcache bench`: Flight against JSON and a raw socket, or the small-table latency run.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    // Like a long-running client, reuse the memory of the last table received for the next one.
    allocator::keep_freed_memory(allocator::BENCH_KEEP_FREED);
    let local = match (&args.server, args.in_process) {
        (None, false) => Some(LocalServer::spawn().context("starting a local flightcache server")?),
        _ => None,
    };
    let server = local
        .as_ref()
        .map(|l| l.url.clone())
        .or(args.server.clone());
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_style(ProgressStyle::with_template(
        "{spinner} {elapsed:>4} {msg}",
    )?);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut out = std::io::stdout().lock();

    if args.small {
        let url = match &server {
            Some(url) => url.clone(),
            None => bail!("--small needs a server process; drop --in-process"),
        };
        spinner.set_message("small-table latency run");
        let counts = if args.clients > 1 {
            vec![1, args.clients]
        } else {
            vec![1, 16]
        };
        let report = bench::latency::run(&url, args.operations.max(1), &counts).await?;
        spinner.finish_and_clear();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", report.to_text())?;
        }
        return Ok(());
    }

    let config = BenchConfig {
        size_bytes: args.size,
        cols: args.cols,
        file: args.file,
        rounds: args.repeat,
        server_pid: local.as_ref().map(|l| l.child.id()),
        server,
        json: !args.no_json,
        clients: args.clients.max(1),
        ..BenchConfig::default()
    };
    let progress = |step: &str| spinner.set_message(step.to_string());
    let report = bench::run(&config, &progress).await?;
    spinner.finish_and_clear();
    if let Some(path) = &args.plot {
        std::fs::write(path, report.to_svg())
            .with_context(|| format!("writing `{}`", path.display()))?;
    }
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.to_text())?;
    }
    Ok(())
}

/// A `flightcache serve --port 0` child process that the benchmark measures; killed on drop.
struct LocalServer {
    child: std::process::Child,
    url: String,
}

impl LocalServer {
    fn spawn() -> anyhow::Result<Self> {
        use std::io::BufRead;
        let exe = std::env::current_exe().context("finding the flightcache executable")?;
        let mut child = std::process::Command::new(exe)
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("running `flightcache serve`")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("reading the server's output")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let url = match line.trim().strip_prefix("listening on ") {
            Some(url) => url.to_string(),
            None => {
                child.kill().ok();
                bail!("the server did not report its address (it said {line:?})");
            }
        };
        Ok(Self { child, url })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
