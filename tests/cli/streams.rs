//! `flightcache push --append` and `flightcache tail`: a key that grows, followed from the
//! command line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;

use super::{BIN, ServeProcess, parquet_file, sample_batches};

#[test]
fn push_append_grows_a_key_and_tail_prints_or_streams_its_rows() {
    let server = ServeProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let batches = sample_batches(1); // 1000 rows
    let input = parquet_file(&dir, "part.parquet", &batches, 1000);
    let input = input.to_str().unwrap();

    let first = server.ok(&["push", input, "--key", "events", "--append"]);
    assert!(first.contains("appended as rows 0..1000"), "{first}");
    // A tail from the start, written to a live IPC stream, started before the next appends.
    let stream_file = dir.path().join("tail.arrow");
    let mut tail = Command::new(BIN)
        .args([
            "tail", "events", "--from", "earliest", "--count", "2500", "-o",
        ])
        .arg(&stream_file)
        .env("FLIGHTCACHE_SERVER", &server.url)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(tail.stderr.as_mut().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said.trim(), "following `events` from row 0");
    let second = server.ok(&[
        "push",
        input,
        "--key",
        "events",
        "--append",
        "--max-rows",
        "1500",
    ]);
    assert!(second.contains("appended as rows 1000..2000"), "{second}");
    server.ok(&["push", input, "--key", "events", "--append"]);
    assert!(tail.wait().unwrap().success());
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::fs::File::open(&stream_file).unwrap(), None)
            .unwrap();
    let ids: Vec<i64> = reader
        .flat_map(|batch| {
            let batch = batch.unwrap();
            let column = batch
                .column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>();
            column.values().to_vec()
        })
        .collect();
    let expected: Vec<i64> = (0..3).flat_map(|_| 0..1000).take(2500).collect();
    assert_eq!(ids, expected, "every row, in order, once");

    // The cap kept the last two appends; info shows where the key stands.
    let info = server.ok(&["info", "events"]);
    assert!(info.contains("offsets: 1000..3000"), "{info}");
    assert!(info.contains("retains: about 1500 rows"), "{info}");
    // Printed: a tail from row 2995 shows the last five rows, then stops at --count.
    let shown = server.ok(&["tail", "events", "--from", "2995", "--count", "5"]);
    assert!(shown.starts_with("rows 2995..3000"), "{shown}");
    assert!(shown.contains("| 999 "), "{shown}");
    // Behind retention: a clear error naming the oldest row kept.
    let failed = server.run(&["tail", "events", "--from", "10", "--count", "1"]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("oldest kept row is 1000"), "{stderr}");
    // --max-rows without --append is a usage error.
    let usage = server.run(&["push", input, "--key", "events", "--max-rows", "5"]);
    assert_eq!(usage.status.code(), Some(2));
    server.stop();
}

#[test]
fn bench_followers_reports_append_latency_percentiles() {
    let server = ServeProcess::start();
    let out = server.ok(&[
        "bench",
        "--server",
        &server.url,
        "--followers",
        "3",
        "--appends",
        "20",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["followers"], 3);
    assert_eq!(report["appends"], 20);
    // Each append is --append-rows rows (1,000 by default), and every figure is a number.
    assert_eq!(report["rows"], 1000);
    for figure in ["p50_us", "p99_us", "max_us", "aggregate_mib_per_s"] {
        assert!(
            report[figure].as_f64().is_some_and(f64::is_finite),
            "{report}"
        );
    }
    // The run drops its key: the server is left as it was found.
    let listed = server.ok(&["list"]);
    assert!(listed.lines().count() <= 1, "{listed}");
    server.stop();
}
