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
    if args.pressure {
        return pressure(&args).await;
    }
    let local = match (&args.server, args.in_process) {
        (None, false) => {
            Some(LocalServer::spawn(&[]).context("starting a local flightcache server")?)
        }
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

    if let Some(followers) = args.followers {
        let url = match &server {
            Some(url) => url.clone(),
            None => bail!("--followers needs a server process; drop --in-process"),
        };
        let followers = followers as usize;
        spinner.set_message(format!("{followers} followers"));
        let interval = std::time::Duration::from_millis(args.interval_ms);
        let report =
            bench::followers::run(&url, followers, args.appends, args.append_rows, interval)
                .await?;
        spinner.finish_and_clear();
        return print_report(&mut out, args.json, &report, || report.to_text());
    }

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
        return print_report(&mut out, args.json, &report, || report.to_text());
    }

    // `--tls`: a second local server, serving TLS with a certificate made for this run.
    let tls_server = args.tls.then(TlsServer::spawn).transpose()?;
    let config = BenchConfig {
        size_bytes: args.size,
        cols: args.cols,
        file: args.file,
        rounds: args.repeat,
        server_pid: local.as_ref().map(|l| l.child.id()),
        server,
        json: !args.no_json,
        clients: args.clients.max(1),
        tls: tls_server.as_ref().map(|tls| bench::TlsTarget {
            url: tls.server.url.clone(),
            ca_pem: tls.ca_pem.clone(),
        }),
        ..BenchConfig::default()
    };
    let progress = |step: &str| spinner.set_message(step.to_string());
    let report = bench::run(&config, &progress).await?;
    spinner.finish_and_clear();
    if let Some(path) = &args.plot {
        std::fs::write(path, report.to_svg())
            .with_context(|| format!("writing `{}`", path.display()))?;
    }
    print_report(&mut out, args.json, &report, || report.to_text())
}

/// `flightcache bench --pressure`: the budgeted phase (in `--cgroup`, if given), then the
/// phase without a budget, each against a fresh server.
async fn pressure(args: &BenchArgs) -> anyhow::Result<()> {
    use flightcache::bench::pressure::{PressureConfig, PressureReport, run_phase};
    let config = PressureConfig {
        budget_bytes: args.budget,
        duration: args.duration.0,
        ..PressureConfig::default()
    };
    let budget = args.budget.to_string();
    let mut phases = Vec::new();
    for (label, max_memory) in [("budget", budget.as_str()), ("no budget", "0")] {
        eprintln!(
            "pressure phase `{label}`: {} s",
            config.duration.as_secs_f64()
        );
        let mut server = LocalServer::spawn(&["--max-memory", max_memory])
            .context("starting a local flightcache server")?;
        if let (Some(cgroup), "budget") = (&args.cgroup, label) {
            let procs = cgroup.join("cgroup.procs");
            std::fs::write(&procs, server.child.id().to_string())
                .with_context(|| format!("moving the server into `{}`", procs.display()))?;
        }
        let budget = (max_memory != "0").then_some(args.budget);
        let mut report = run_phase(&server.url, Some(server.child.id()), label, budget, &config)
            .await
            .with_context(|| format!("pressure phase `{label}`"))?;
        report.label = format!("{label} ({})", server.alive_or_exit_status());
        phases.push(report);
    }
    let report = PressureReport { config, phases };
    let mut out = std::io::stdout().lock();
    print_report(&mut out, args.json, &report, || report.to_text())
}

/// Write `report` to `out`: as JSON with `--json`, else as its `text()`.
fn print_report(
    out: &mut impl Write,
    json: bool,
    report: &impl serde::Serialize,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", text())?;
    }
    Ok(())
}

/// A local server serving TLS with a certificate signed by a CA made for the run.
struct TlsServer {
    server: LocalServer,
    ca_pem: Vec<u8>,
    /// Where the server's certificate and key are, until the run ends.
    _files: tempfile::TempDir,
}

impl TlsServer {
    /// Make a CA and a certificate for 127.0.0.1 in a directory of their own, and start a
    /// server with them.
    fn spawn() -> anyhow::Result<Self> {
        use flightcache::bench::certificates::CertificateAuthority;
        let files = tempfile::tempdir().context("making a directory for the certificates")?;
        let dir = files.path();
        let ca = CertificateAuthority::new("flightcache bench CA")?;
        let server = ca.issue_server(&["127.0.0.1", "localhost"])?;
        let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
        std::fs::write(&cert, &server.cert_pem)?;
        std::fs::write(&key, &server.key_pem)?;
        let server = LocalServer::spawn(&[
            "--tls-cert",
            &cert.to_string_lossy(),
            "--tls-key",
            &key.to_string_lossy(),
        ])
        .context("starting a local TLS flightcache server")?;
        Ok(Self {
            server,
            ca_pem: ca.cert_pem().into_bytes(),
            _files: files,
        })
    }
}

/// A `flightcache serve --port 0` child process that the benchmark measures; killed on drop.
struct LocalServer {
    child: std::process::Child,
    url: String,
}

impl LocalServer {
    /// Start `flightcache serve` on a free port of 127.0.0.1, with `extra` flags.
    fn spawn(extra: &[&str]) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let exe = std::env::current_exe().context("finding the flightcache executable")?;
        let mut child = std::process::Command::new(exe)
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(extra)
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

    /// `server alive`, or how the server ended (killed by the kernel's OOM killer, say).
    fn alive_or_exit_status(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "server alive at the end".to_string(),
            Ok(Some(status)) => format!("SERVER DIED: {status}"),
            Err(err) => format!("server status unknown: {err}"),
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
