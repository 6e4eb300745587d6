//! Benchmark results: medians, GB/s and ratios, rendered as a text table, JSON or an SVG chart.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rss::ServerMemory;
use super::{BenchConfig, Samples};
use crate::bench::baseline::json::JsonTimings;

/// One timed operation: its samples and their median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Operation name, e.g. `flight_get` or `json_put_decode`.
    pub operation: String,
    /// Median of the samples, in seconds.
    pub median_s: f64,
    /// The fastest sample, in seconds.
    #[serde(default)]
    pub best_s: f64,
    /// Table bytes moved per second at the median, in GB/s (10^9 bytes).
    pub gbps: f64,
    /// Every sample, in seconds, in round order.
    pub samples_s: Vec<f64>,
}

/// The ratios the benchmark exists to report, all computed from medians of the same run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// JSON put time over Flight put time: how many times faster Flight is (absent without
    /// the JSON baseline).
    pub flight_put_speedup_over_json: Option<f64>,
    /// JSON get time over Flight get time.
    pub flight_get_speedup_over_json: Option<f64>,
    /// Flight put throughput (median) as a fraction of the raw-socket put's best round, the
    /// ceiling. Above 1 when Flight beat the best raw round: then that is no ceiling here.
    pub flight_put_fraction_of_raw: f64,
    /// Flight get throughput (median) as a fraction of the raw-socket get's best round.
    pub flight_get_fraction_of_raw: f64,
    /// Aggregate get throughput of the concurrent clients over one client's (absent with one
    /// client).
    pub concurrent_get_scaling: Option<f64>,
    /// Aggregate put throughput of the concurrent clients over one client's.
    pub concurrent_put_scaling: Option<f64>,
    /// Flight put throughput over TLS as a fraction of plaintext (absent without `--tls`).
    #[serde(default)]
    pub tls_put_fraction_of_plaintext: Option<f64>,
    /// Flight get throughput over TLS as a fraction of plaintext.
    #[serde(default)]
    pub tls_get_fraction_of_plaintext: Option<f64>,
    /// The most `tls_put_fraction_of_plaintext` could be on this machine: the plaintext Flight
    /// put's median over the raw TLS socket's best put round, TLS alone with nothing of Flight
    /// around it (absent without `--tls`). Above 1 when the raw TLS socket beat plaintext
    /// Flight: TLS set no limit that run.
    #[serde(default)]
    pub tls_put_fraction_ceiling: Option<f64>,
    /// The most `tls_get_fraction_of_plaintext` could be on this machine, likewise.
    #[serde(default)]
    pub tls_get_fraction_ceiling: Option<f64>,
}

/// The shape of the benchmark table.
#[derive(Debug, Clone, Copy)]
pub(super) struct TableShape {
    pub rows: u64,
    pub columns: usize,
    pub bytes: u64,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The Flight server measured.
    pub server: String,
    /// Whether that server ran inside the benchmark process.
    pub embedded: bool,
    /// Rows in the table.
    pub rows: u64,
    /// Columns in the table.
    pub columns: usize,
    /// Arrow bytes in the table; GB/s figures divide this by time.
    pub bytes: u64,
    /// Timed rounds.
    pub rounds: usize,
    /// Concurrent clients of the `flight_*_clients` measurements (1: none were run).
    pub clients: usize,
    /// One entry per operation. `flight_*_clients` count all clients' bytes.
    pub measurements: Vec<Measurement>,
    /// The headline ratios.
    pub ratios: Ratios,
    /// Server memory around holding the table, where it could be read.
    pub server_memory: Option<ServerMemory>,
}

/// The median of `samples` (the mean of the middle two for an even count); 0 when empty.
pub fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn measurement(
    operation: &str,
    samples: impl IntoIterator<Item = Duration>,
    bytes: u64,
) -> Measurement {
    let samples_s: Vec<f64> = samples.into_iter().map(|d| d.as_secs_f64()).collect();
    let median_s = median(&samples_s);
    let best_s = samples_s.iter().copied().fold(f64::INFINITY, f64::min);
    let best_s = if best_s.is_finite() { best_s } else { 0.0 };
    let gbps = if median_s > 0.0 {
        bytes as f64 / median_s / 1e9
    } else {
        0.0
    };
    Measurement {
        operation: operation.to_string(),
        median_s,
        best_s,
        gbps,
        samples_s,
    }
}

fn json_measurements(prefix: &str, timings: &[JsonTimings], bytes: u64) -> Vec<Measurement> {
    vec![
        measurement(prefix, timings.iter().map(JsonTimings::total), bytes),
        measurement(
            &format!("{prefix}_encode"),
            timings.iter().map(|t| t.encode),
            bytes,
        ),
        measurement(
            &format!("{prefix}_transfer"),
            timings.iter().map(|t| t.transfer),
            bytes,
        ),
        measurement(
            &format!("{prefix}_decode"),
            timings.iter().map(|t| t.decode),
            bytes,
        ),
    ]
}

pub(super) fn summarize(
    config: &BenchConfig,
    server: &str,
    shape: TableShape,
    samples: Samples,
    server_memory: Option<ServerMemory>,
) -> BenchReport {
    let bytes = shape.bytes;
    let clients = config.clients.max(1);
    let mut measurements = vec![
        measurement("flight_put", samples.flight_put, bytes),
        measurement("flight_get", samples.flight_get, bytes),
    ];
    if !samples.json_put.is_empty() {
        measurements.extend(json_measurements("json_put", &samples.json_put, bytes));
        measurements.extend(json_measurements("json_get", &samples.json_get, bytes));
    }
    measurements.push(measurement("raw_put", samples.raw_put, bytes));
    measurements.push(measurement("raw_get", samples.raw_get, bytes));
    if !samples.tls_put.is_empty() {
        measurements.push(measurement("flight_put_tls", samples.tls_put, bytes));
        measurements.push(measurement("flight_get_tls", samples.tls_get, bytes));
        measurements.push(measurement("raw_put_tls", samples.raw_tls_put, bytes));
        measurements.push(measurement("raw_get_tls", samples.raw_tls_get, bytes));
    }
    if !samples.concurrent_get.is_empty() {
        let total = bytes * clients as u64;
        measurements.push(measurement(
            "flight_put_clients",
            samples.concurrent_put,
            total,
        ));
        measurements.push(measurement(
            "flight_get_clients",
            samples.concurrent_get,
            total,
        ));
    }
    let mut report = BenchReport {
        server: server.to_string(),
        embedded: config.server.is_none(),
        rows: shape.rows,
        columns: shape.columns,
        bytes,
        rounds: config.rounds.max(1),
        clients,
        measurements,
        ratios: Ratios {
            flight_put_speedup_over_json: None,
            flight_get_speedup_over_json: None,
            flight_put_fraction_of_raw: 0.0,
            flight_get_fraction_of_raw: 0.0,
            concurrent_get_scaling: None,
            concurrent_put_scaling: None,
            tls_put_fraction_of_plaintext: None,
            tls_get_fraction_of_plaintext: None,
            tls_put_fraction_ceiling: None,
            tls_get_fraction_ceiling: None,
        },
        server_memory,
    };
    let time = |op: &str| report.measurement(op).map(|m| m.median_s);
    let best = |op: &str| report.measurement(op).map(|m| m.best_s);
    let gbps = |op: &str| report.measurement(op).map(|m| m.gbps);
    let flight_put = time("flight_put").unwrap_or(0.0);
    let flight_get = time("flight_get").unwrap_or(0.0);
    report.ratios = Ratios {
        flight_put_speedup_over_json: time("json_put").map(|t| ratio(t, flight_put)),
        flight_get_speedup_over_json: time("json_get").map(|t| ratio(t, flight_get)),
        flight_put_fraction_of_raw: ratio(best("raw_put").unwrap_or(0.0), flight_put),
        flight_get_fraction_of_raw: ratio(best("raw_get").unwrap_or(0.0), flight_get),
        concurrent_get_scaling: gbps("flight_get_clients")
            .map(|g| ratio(g, gbps("flight_get").unwrap_or(0.0))),
        concurrent_put_scaling: gbps("flight_put_clients")
            .map(|g| ratio(g, gbps("flight_put").unwrap_or(0.0))),
        tls_put_fraction_of_plaintext: time("flight_put_tls").map(|t| ratio(flight_put, t)),
        tls_get_fraction_of_plaintext: time("flight_get_tls").map(|t| ratio(flight_get, t)),
        tls_put_fraction_ceiling: best("raw_put_tls").map(|t| ratio(flight_put, t)),
        tls_get_fraction_ceiling: best("raw_get_tls").map(|t| ratio(flight_get, t)),
    };
    report
}

/// Flight's medians against the raw socket's best rounds: shares of the ceiling, or, where
/// Flight was faster, that plainly (the loopback's ceiling is then not one).
fn against_ceiling(put: f64, get: f64) -> String {
    let one = |op: &str, fraction: f64| {
        if fraction > 1.0 {
            format!("{op} beat the raw socket's best round ({fraction:.2}x: no ceiling this run)")
        } else {
            format!("{op} at {:.0}%", 100.0 * fraction)
        }
    };
    let shares = if put > 1.0 || get > 1.0 {
        ""
    } else {
        " of the ceiling"
    };
    format!(
        "{}, {}{shares} (the raw socket's best round)",
        one("put", put),
        one("get", get)
    )
}

/// The most Flight over TLS could reach, as shares of plaintext Flight: where the raw TLS
/// socket was faster than plaintext Flight, TLS set no limit this run.
fn tls_ceiling(put: f64, get: f64) -> String {
    let one = |op: &str, fraction: f64| {
        if fraction > 1.0 {
            format!("{op} without limit (the raw TLS socket beat plaintext flight)")
        } else {
            format!(
                "{op} at {:.0}% of plaintext flight at most",
                100.0 * fraction
            )
        }
    };
    format!(
        "{}, {} (the raw TLS socket's best round)",
        one("put", put),
        one("get", get)
    )
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Rows of the text table and chart, in order: operation, label.
const SHOWN: [(&str, &str); 12] = [
    ("flight_put", "flight put"),
    ("flight_get", "flight get"),
    ("flight_put_tls", "flight put, TLS"),
    ("flight_get_tls", "flight get, TLS"),
    ("flight_put_clients", "flight put xN"),
    ("flight_get_clients", "flight get xN"),
    ("json_put", "json put"),
    ("json_get", "json get"),
    ("raw_put", "raw socket put"),
    ("raw_get", "raw socket get"),
    ("raw_put_tls", "raw TLS put"),
    ("raw_get_tls", "raw TLS get"),
];

impl BenchReport {
    /// The measurement named `operation`.
    pub fn measurement(&self, operation: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.operation == operation)
    }

    fn median_s(&self, operation: &str) -> f64 {
        self.measurement(operation).map_or(0.0, |m| m.median_s)
    }

    fn label(&self, operation: &str) -> String {
        match operation {
            "flight_put_clients" => format!("flight put x{}", self.clients),
            "flight_get_clients" => format!("flight get x{}", self.clients),
            other => SHOWN
                .iter()
                .find(|(op, _)| *op == other)
                .map_or(other.to_string(), |(_, label)| label.to_string()),
        }
    }

    /// The report as a table for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let where_ = if self.embedded {
            "embedded server"
        } else {
            "server"
        };
        let _ = writeln!(
            out,
            "table: {} rows x {} columns, {:.1} MiB of Arrow data; {} rounds; {where_} {}",
            self.rows,
            self.columns,
            self.bytes as f64 / (1 << 20) as f64,
            self.rounds,
            self.server
        );
        let _ = writeln!(
            out,
            "\n{:<16} {:>10} {:>9}",
            "operation", "median s", "GB/s"
        );
        for (op, _) in SHOWN {
            let Some(m) = self.measurement(op) else {
                continue;
            };
            let label = self.label(op);
            let _ = write!(out, "{label:<16} {:>10.4} {:>9.3}", m.median_s, m.gbps);
            if op.starts_with("json") {
                let phase = |p: &str| self.median_s(&format!("{op}_{p}"));
                let _ = write!(
                    out,
                    "   (encode {:.3} s, transfer {:.3} s, decode {:.3} s)",
                    phase("encode"),
                    phase("transfer"),
                    phase("decode")
                );
            }
            out.push('\n');
        }
        let r = &self.ratios;
        out.push('\n');
        if let (Some(put), Some(get)) = (
            r.flight_put_speedup_over_json,
            r.flight_get_speedup_over_json,
        ) {
            let _ = writeln!(
                out,
                "flight vs JSON:        put {put:.1}x faster, get {get:.1}x faster"
            );
        }
        let _ = writeln!(
            out,
            "flight vs raw socket:  {}",
            against_ceiling(r.flight_put_fraction_of_raw, r.flight_get_fraction_of_raw)
        );
        if let (Some(put), Some(get)) = (
            r.tls_put_fraction_of_plaintext,
            r.tls_get_fraction_of_plaintext,
        ) {
            let _ = writeln!(
                out,
                "flight over TLS:       put at {:.0}%, get at {:.0}% of plaintext",
                100.0 * put,
                100.0 * get
            );
        }
        if let (Some(put), Some(get)) = (r.tls_put_fraction_ceiling, r.tls_get_fraction_ceiling) {
            let _ = writeln!(out, "TLS alone allows:      {}", tls_ceiling(put, get));
        }
        if let (Some(put), Some(get)) = (r.concurrent_put_scaling, r.concurrent_get_scaling) {
            let _ = writeln!(
                out,
                "{} clients vs one:     put {put:.2}x, get {get:.2}x the aggregate GB/s",
                self.clients
            );
        }
        if let Some(m) = &self.server_memory {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let whose = if m.server_only {
                "server"
            } else {
                "bench process (embeds the server)"
            };
            let _ = writeln!(
                out,
                "{whose} RSS:  {:.0} MiB before put, {:.0} MiB holding the table ({:.2}x its size above idle), {:.0} MiB after drop",
                mib(m.before_put),
                mib(m.holding),
                (m.holding as f64 - m.before_put as f64) / self.bytes.max(1) as f64,
                mib(m.after_drop)
            );
        }
        out
    }

    /// The GB/s medians as a horizontal bar chart, an SVG document.
    pub fn to_svg(&self) -> String {
        const WIDTH: f64 = 720.0;
        const LABEL: f64 = 130.0;
        const BAR: f64 = 26.0;
        const GAP: f64 = 10.0;
        const TOP: f64 = 50.0;
        let rows: Vec<(String, f64)> = SHOWN
            .iter()
            .filter_map(|(op, _)| self.measurement(op).map(|m| (self.label(op), m.gbps)))
            .collect();
        let max = rows.iter().map(|(_, g)| *g).fold(0.0, f64::max).max(1e-9);
        let scale = (WIDTH - LABEL - 90.0) / max;
        let height = TOP + rows.len() as f64 * (BAR + GAP) + 20.0;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="13">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="10" y="22" font-size="15" font-weight="bold">flightcache bench: GB/s (median of {} rounds, {:.0} MiB table)</text>"#,
            self.rounds,
            self.bytes as f64 / (1 << 20) as f64
        );
        for (i, (label, gbps)) in rows.iter().enumerate() {
            let y = TOP + i as f64 * (BAR + GAP);
            let color = match label.split(' ').next() {
                Some("flight") => "#2a6fdb",
                Some("json") => "#d9822b",
                _ => "#8a8a8a",
            };
            let w = (gbps * scale).max(1.0);
            let _ = writeln!(
                svg,
                r#"<text x="10" y="{:.1}">{label}</text>"#,
                y + BAR * 0.7
            );
            let _ = writeln!(
                svg,
                r#"<rect x="{LABEL}" y="{y:.1}" width="{w:.1}" height="{BAR}" fill="{color}"/>"#
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}">{gbps:.3}</text>"#,
                LABEL + w + 6.0,
                y + BAR * 0.7
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flight_faster_than_the_raw_socket_is_said_plainly() {
        assert_eq!(
            against_ceiling(0.55, 0.8),
            "put at 55%, get at 80% of the ceiling (the raw socket's best round)"
        );
        let beat = against_ceiling(0.5, 1.2);
        assert!(
            beat.contains("get beat the raw socket's best round (1.20x"),
            "{beat}"
        );
        assert!(!beat.contains("120%"), "never a share above 100%: {beat}");
    }

    #[test]
    fn a_tls_ceiling_above_plaintext_is_no_limit() {
        assert_eq!(
            tls_ceiling(0.7, 0.5),
            "put at 70% of plaintext flight at most, get at 50% of plaintext flight at most \
             (the raw TLS socket's best round)"
        );
        let beat = tls_ceiling(1.3, 0.5);
        assert_eq!(
            beat,
            "put without limit (the raw TLS socket beat plaintext flight), get at 50% of \
             plaintext flight at most (the raw TLS socket's best round)"
        );
        assert!(!beat.contains("130%"), "never a share above 100%: {beat}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn ratios_come_from_medians() {
        let secs = |v: &[u64]| {
            v.iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect::<Vec<_>>()
        };
        let json = |ms: u64| JsonTimings {
            encode: Duration::from_millis(ms / 2),
            transfer: Duration::from_millis(ms / 4),
            decode: Duration::from_millis(ms / 4),
        };
        let samples = Samples {
            flight_put: secs(&[100, 200, 300]),
            flight_get: secs(&[100, 100, 100]),
            json_put: vec![json(2000), json(2000), json(2000)],
            json_get: vec![json(1000), json(1000), json(1000)],
            // The ceiling is the raw socket's best round, not its median.
            raw_put: secs(&[60, 50, 70]),
            raw_get: secs(&[90, 80, 85]),
            concurrent_put: secs(&[400, 400, 400]),
            concurrent_get: secs(&[100, 100, 200]),
            tls_put: secs(&[250, 250, 250]),
            tls_get: secs(&[125, 125, 125]),
            // The TLS ceiling is the raw TLS socket's best round too.
            raw_tls_put: secs(&[260, 160, 250]),
            raw_tls_get: secs(&[90, 200, 200]),
        };
        let config = BenchConfig {
            clients: 4,
            ..BenchConfig::default()
        };
        let shape = TableShape {
            rows: 10,
            columns: 1,
            bytes: 1_000_000_000,
        };
        let report = summarize(&config, "x", shape, samples, None);
        assert_eq!(report.ratios.flight_put_speedup_over_json, Some(10.0));
        assert_eq!(report.ratios.flight_get_speedup_over_json, Some(10.0));
        assert_eq!(report.ratios.concurrent_get_scaling, Some(4.0));
        assert_eq!(report.ratios.concurrent_put_scaling, Some(2.0));
        // Flight medians 200 / 100 ms; over TLS 250 / 125 ms.
        assert_eq!(report.ratios.tls_put_fraction_of_plaintext, Some(0.8));
        assert_eq!(report.ratios.tls_get_fraction_of_plaintext, Some(0.8));
        assert!(
            report
                .to_text()
                .contains("flight over TLS:       put at 80%, get at 80%")
        );
        // Plaintext medians 200 / 100 ms over the raw TLS socket's best rounds 160 / 90 ms.
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() < 1e-9;
        assert!(close(report.ratios.tls_put_fraction_ceiling, 1.25));
        assert!(close(report.ratios.tls_get_fraction_ceiling, 100.0 / 90.0));
        assert!(report.to_text().contains("raw TLS get"));
        assert!(report.to_text().contains(
            "TLS alone allows:      put without limit (the raw TLS socket beat plaintext flight), \
             get without limit"
        ));
        assert!(report.to_text().contains("flight get x4"));
        assert!((report.ratios.flight_put_fraction_of_raw - 0.25).abs() < 1e-9);
        assert!((report.ratios.flight_get_fraction_of_raw - 0.8).abs() < 1e-9);
        assert!((report.measurement("flight_get").unwrap().gbps - 10.0).abs() < 1e-9);
        assert!(report.to_text().contains("10.0x faster"));
        assert!(report.to_svg().starts_with("<svg"));
    }
}
