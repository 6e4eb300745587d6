//! Benchmark results: medians, GB/s and ratios, rendered as a text table, JSON or an SVG chart.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BenchConfig, Samples};
use crate::baseline::json::JsonTimings;

/// One timed operation: its samples and their median.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Operation name, e.g. `flight_get` or `json_put_decode`.
    pub operation: String,
    /// Median of the samples, in seconds.
    pub median_s: f64,
    /// Table bytes moved per second at the median, in GB/s (10^9 bytes).
    pub gbps: f64,
    /// Every sample, in seconds, in round order.
    pub samples_s: Vec<f64>,
}

/// The ratios the benchmark exists to report, all computed from medians of the same run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// JSON put time over Flight put time: how many times faster Flight is.
    pub flight_put_speedup_over_json: f64,
    /// JSON get time over Flight get time.
    pub flight_get_speedup_over_json: f64,
    /// Flight put throughput as a fraction of the raw-socket put.
    pub flight_put_fraction_of_raw: f64,
    /// Flight get throughput as a fraction of the raw-socket get.
    pub flight_get_fraction_of_raw: f64,
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
    /// One entry per operation.
    pub measurements: Vec<Measurement>,
    /// The headline ratios.
    pub ratios: Ratios,
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
    let gbps = if median_s > 0.0 {
        bytes as f64 / median_s / 1e9
    } else {
        0.0
    };
    Measurement {
        operation: operation.to_string(),
        median_s,
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
    rows: u64,
    bytes: u64,
    columns: usize,
    samples: Samples,
) -> BenchReport {
    let mut measurements = vec![
        measurement("flight_put", samples.flight_put, bytes),
        measurement("flight_get", samples.flight_get, bytes),
    ];
    measurements.extend(json_measurements("json_put", &samples.json_put, bytes));
    measurements.extend(json_measurements("json_get", &samples.json_get, bytes));
    measurements.push(measurement("raw_put", samples.raw_put, bytes));
    measurements.push(measurement("raw_get", samples.raw_get, bytes));
    let mut report = BenchReport {
        server: server.to_string(),
        embedded: config.server.is_none(),
        rows,
        columns,
        bytes,
        rounds: config.rounds.max(1),
        measurements,
        ratios: Ratios {
            flight_put_speedup_over_json: 0.0,
            flight_get_speedup_over_json: 0.0,
            flight_put_fraction_of_raw: 0.0,
            flight_get_fraction_of_raw: 0.0,
        },
    };
    let time = |op: &str| report.median_s(op);
    report.ratios = Ratios {
        flight_put_speedup_over_json: ratio(time("json_put"), time("flight_put")),
        flight_get_speedup_over_json: ratio(time("json_get"), time("flight_get")),
        flight_put_fraction_of_raw: ratio(time("raw_put"), time("flight_put")),
        flight_get_fraction_of_raw: ratio(time("raw_get"), time("flight_get")),
    };
    report
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Rows of the text table and chart: operation, label.
const SHOWN: [(&str, &str); 6] = [
    ("flight_put", "flight put"),
    ("flight_get", "flight get"),
    ("json_put", "json put"),
    ("json_get", "json get"),
    ("raw_put", "raw socket put"),
    ("raw_get", "raw socket get"),
];

impl BenchReport {
    /// The measurement named `operation`.
    pub fn measurement(&self, operation: &str) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.operation == operation)
    }

    fn median_s(&self, operation: &str) -> f64 {
        self.measurement(operation).map_or(0.0, |m| m.median_s)
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
        for (op, label) in SHOWN {
            let Some(m) = self.measurement(op) else {
                continue;
            };
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
        let _ = writeln!(
            out,
            "\nflight vs JSON:        put {:.1}x faster, get {:.1}x faster",
            r.flight_put_speedup_over_json, r.flight_get_speedup_over_json
        );
        let _ = writeln!(
            out,
            "flight vs raw socket:  put at {:.0}%, get at {:.0}% of the ceiling",
            100.0 * r.flight_put_fraction_of_raw,
            100.0 * r.flight_get_fraction_of_raw
        );
        out
    }

    /// The GB/s medians as a horizontal bar chart, an SVG document.
    pub fn to_svg(&self) -> String {
        const WIDTH: f64 = 720.0;
        const LABEL: f64 = 130.0;
        const BAR: f64 = 26.0;
        const GAP: f64 = 10.0;
        const TOP: f64 = 50.0;
        let rows: Vec<(&str, f64)> = SHOWN
            .iter()
            .filter_map(|(op, label)| self.measurement(op).map(|m| (*label, m.gbps)))
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
            raw_put: secs(&[50, 50, 50]),
            raw_get: secs(&[80, 80, 80]),
        };
        let report = summarize(&BenchConfig::default(), "x", 10, 1_000_000_000, 1, samples);
        assert!((report.ratios.flight_put_speedup_over_json - 10.0).abs() < 1e-9);
        assert!((report.ratios.flight_get_speedup_over_json - 10.0).abs() < 1e-9);
        assert!((report.ratios.flight_put_fraction_of_raw - 0.25).abs() < 1e-9);
        assert!((report.ratios.flight_get_fraction_of_raw - 0.8).abs() < 1e-9);
        assert!((report.measurement("flight_get").unwrap().gbps - 10.0).abs() < 1e-9);
        assert!(report.to_text().contains("10.0x faster"));
        assert!(report.to_svg().starts_with("<svg"));
    }
}
