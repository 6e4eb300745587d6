//! `flightcache sql`: a query's result previewed, written to a file, or stored under a key.

use flightcache::bench::data::tables_equal;

use super::{ServeProcess, parquet_file, read_table, sample_batches, temp_path};

#[test]
fn sql_previews_writes_and_stores_a_querys_result() {
    let server = ServeProcess::start();
    let dir = tempfile::tempdir().unwrap();
    let batches = sample_batches(3);
    let input = parquet_file(&dir, "trips.parquet", &batches, 1000);
    server.ok(&["push", input.to_str().unwrap(), "--key", "nyc/trips"]);

    let shown = server.ok(&[
        "sql",
        r#"SELECT id, name FROM "nyc/trips" WHERE id >= 2998"#,
    ]);
    assert!(shown.contains("| 2998 | name-998 |"), "{shown}");
    assert!(shown.contains("| 2999 | name-999 |"), "{shown}");
    assert!(shown.trim_end().ends_with("2 rows"), "{shown}");

    // The whole result to a file, every type of the table exact.
    let output = temp_path(&dir, "all.parquet");
    let wrote = server.ok(&[
        "sql",
        r#"SELECT * FROM "nyc/trips""#,
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(wrote.starts_with("wrote 3000 rows"), "{wrote}");
    assert!(tables_equal(&read_table(&output), &batches));

    // Stored as a key, which plain gets and further queries read.
    let stored = server.ok(&[
        "sql",
        r#"SELECT kind, count(*) AS n FROM "nyc/trips" GROUP BY kind ORDER BY kind"#,
        "--into",
        "trips/by-kind",
    ]);
    assert!(
        stored.starts_with("stored `trips/by-kind`: 3 rows"),
        "{stored}"
    );
    let counted = server.ok(&["sql", r#"SELECT sum(n) AS total FROM "trips/by-kind""#]);
    assert!(counted.contains("| 3000  |"), "{counted}");

    // A statement that does not parse: exit 1, the engine's message with its position.
    let failed = server.run(&["sql", "SELEC 1"]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("Column: 1"),
        "{stderr}"
    );
    server.stop();
}
