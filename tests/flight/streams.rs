//! Keys that grow, over real gRPC: appends (`x-flightcache-append`), reads from an offset
//! (`x-flightcache-from`), followers (`x-flightcache-follow`), retention, and how they meet
//! replaces, drops, restarts, rights and Flight SQL. The pyarrow side is in
//! `python/tests/test_streams.py`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, AsArray, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef};
use flightcache::client::ReadOptions;
use flightcache::protocol::stream::{ReadFrom, Retention};
use flightcache::{CacheClient, Durability, Error, PutOptions, ServerConfig, TableStream};
use futures::{StreamExt, TryStreamExt};
use tonic::Code;

use crate::common::{TestServer, key, quiet};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("writer", DataType::Int32, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("row", DataType::Int64, false),
    ]))
}

/// One batch of `rows` rows from `writer`'s append `seq`, rows numbered from `first`.
fn batch(writer: i32, seq: i64, first: i64, rows: usize) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int32Array::from(vec![writer; rows])),
            Arc::new(Int64Array::from(vec![seq; rows])),
            Arc::new(Int64Array::from_iter_values(first..first + rows as i64)),
        ],
    )
    .unwrap()
}

fn appending() -> PutOptions {
    PutOptions {
        append: true,
        ..PutOptions::default()
    }
}

async fn append(
    client: &mut CacheClient,
    name: &str,
    batches: Vec<RecordBatch>,
) -> Result<u64, Error> {
    let schema = batches[0].schema();
    let stream = futures::stream::iter(batches.into_iter().map(Ok));
    let summary = client
        .put_with(&key(name), schema, stream, &appending())
        .await?;
    Ok(summary
        .first_offset
        .expect("an append says its first offset"))
}

/// An append that caps the key at about `rows` rows.
fn capped_at(rows: u64) -> PutOptions {
    PutOptions {
        append: true,
        retention: Some(Retention {
            max_rows: Some(rows),
            ..Retention::default()
        }),
        ..PutOptions::default()
    }
}

/// The table files the data directory `dir` holds, by name.
fn arrow_file_paths(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("tables"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|path| path.extension().is_some_and(|x| x == "arrow"))
        .collect();
    paths.sort();
    paths
}

/// How many table files the data directory `dir` holds.
fn arrow_files(dir: &std::path::Path) -> usize {
    arrow_file_paths(dir).len()
}

/// A server keeping its tables in `dir`.
fn on_disk(dir: &std::path::Path, durability: Durability) -> ServerConfig {
    ServerConfig {
        data_dir: Some(dir.to_path_buf()),
        durability,
        ..quiet(ServerConfig::default())
    }
}

fn follow(from: ReadFrom) -> ReadOptions {
    ReadOptions { from, follow: true }
}

/// Rows of `(writer, seq, row)` from `batches`.
fn triples(batches: &[RecordBatch]) -> Vec<(i32, i64, i64)> {
    let mut out = Vec::new();
    for batch in batches {
        let writer = batch.column(0).as_primitive::<Int32Type>();
        let seq = batch.column(1).as_primitive::<Int64Type>();
        let row = batch.column(2).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            out.push((writer.value(i), seq.value(i), row.value(i)));
        }
    }
    out
}

/// Take batches from `stream` until `rows` rows came.
async fn take_rows(stream: &mut TableStream, rows: usize) -> Vec<RecordBatch> {
    let mut taken = Vec::new();
    let mut count = 0;
    while count < rows {
        let batch = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .expect("the follower got the rows in time")
            .expect("the stream is still open")
            .unwrap();
        count += batch.num_rows();
        taken.push(batch);
    }
    taken
}

const WRITERS: i32 = 8;
const FOLLOWERS: usize = 8;
const APPENDS: i64 = 15;
const BATCHES_PER_APPEND: usize = 3;
const ROWS_PER_BATCH: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_appenders_and_eight_followers_every_follower_sees_every_append_whole_and_in_order() {
    let server = TestServer::start().await;
    let rows_per_append = BATCHES_PER_APPEND * ROWS_PER_BATCH;
    let total = WRITERS as usize * APPENDS as usize * rows_per_append;
    // The followers start before the key exists: they wait for it.
    let mut followers = Vec::new();
    for _ in 0..FOLLOWERS {
        let mut client = server.client().await;
        followers.push(tokio::spawn(async move {
            let mut stream = client
                .read(&key("events"), follow(ReadFrom::Earliest))
                .await
                .unwrap();
            assert_eq!(stream.start_offset(), Some(0));
            let batches = take_rows(&mut stream, total).await;
            // Dropped with the key: the stream then ends cleanly, with nothing more.
            let rest: Vec<_> = stream.try_collect().await.unwrap();
            (triples(&batches), rest.len())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut client = server.client().await;
        writers.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for seq in 0..APPENDS {
                let batches = (0..BATCHES_PER_APPEND)
                    .map(|b| {
                        let first = (b * ROWS_PER_BATCH) as i64;
                        batch(writer, seq, first, ROWS_PER_BATCH)
                    })
                    .collect();
                offsets.push(append(&mut client, "events", batches).await.unwrap());
            }
            offsets
        }));
    }
    let mut first_offsets = Vec::new();
    for writer in writers {
        first_offsets.extend(writer.await.unwrap());
    }
    // Every append took its own run of offsets.
    first_offsets.sort_unstable();
    let expected: Vec<u64> = (0..first_offsets.len() as u64)
        .map(|i| i * rows_per_append as u64)
        .collect();
    assert_eq!(first_offsets, expected);

    let mut client = server.client().await;
    let (_, stored) = client.get_all(&key("events")).await.unwrap();
    let stored = triples(&stored);
    assert_eq!(stored.len(), total);
    client.drop_table(&key("events")).await.unwrap();
    for follower in followers {
        let (seen, after_drop) = follower.await.unwrap();
        assert_eq!(
            seen, stored,
            "a follower saw what the key holds, in its order"
        );
        assert_eq!(after_drop, 0);
    }
    // Each append's rows are together and whole, and each writer's appends are in its order.
    let mut next_seq: HashMap<i32, i64> = HashMap::new();
    for append in stored.chunks(rows_per_append) {
        let (writer, seq, _) = append[0];
        let rows: Vec<i64> = append.iter().map(|t| t.2).collect();
        assert!(append.iter().all(|t| (t.0, t.1) == (writer, seq)), "mixed");
        assert_eq!(rows, (0..rows_per_append as i64).collect::<Vec<_>>());
        let expected = next_seq.entry(writer).or_insert(0);
        assert_eq!(seq, *expected, "writer {writer}'s appends out of order");
        *expected += 1;
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_follower_resumed_from_its_row_count_misses_nothing_and_repeats_nothing() {
    let server = TestServer::start().await;
    let mut producer = server.client().await;
    for seq in 0..5 {
        let first = append(&mut producer, "log", vec![batch(0, seq, seq * 10, 10)]).await;
        assert_eq!(first.unwrap(), seq as u64 * 10);
    }
    let mut client = server.client().await;
    let mut stream = client
        .read(&key("log"), follow(ReadFrom::Earliest))
        .await
        .unwrap();
    let mut seen = triples(&take_rows(&mut stream, 20).await);
    drop(stream); // the follower is killed after 20 rows
    append(&mut producer, "log", vec![batch(0, 5, 50, 10)])
        .await
        .unwrap();
    // It resumes from the rows it has: 20.
    let mut stream = client
        .read(&key("log"), follow(ReadFrom::Offset(seen.len() as u64)))
        .await
        .unwrap();
    assert_eq!(stream.start_offset(), Some(20));
    seen.extend(triples(&take_rows(&mut stream, 40).await));
    let rows: Vec<i64> = seen.iter().map(|t| t.2).collect();
    assert_eq!(rows, (0..60).collect::<Vec<_>>());
    // A start inside a batch gets the rest of that batch.
    let mut stream = client
        .read(&key("log"), follow(ReadFrom::Offset(37)))
        .await
        .unwrap();
    let rows: Vec<i64> = triples(&take_rows(&mut stream, 23).await)
        .iter()
        .map(|t| t.2)
        .collect();
    assert_eq!(rows, (37..60).collect::<Vec<_>>());
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn offsets_answers_and_reads_that_do_not_follow() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    assert_eq!(
        append(&mut client, "k", vec![batch(0, 0, 0, 10)])
            .await
            .unwrap(),
        0,
        "an append creates a missing key"
    );
    assert_eq!(
        append(
            &mut client,
            "k",
            vec![batch(0, 1, 10, 5), batch(0, 1, 15, 5)]
        )
        .await
        .unwrap(),
        10
    );
    let info = client.info(&key("k")).await.unwrap();
    let offsets = info.offsets.unwrap();
    assert_eq!((offsets.earliest_offset, offsets.next_offset), (0, 20));
    assert_eq!(info.rows, 20);

    let read = |from| ReadOptions {
        from,
        follow: false,
    };
    let rows =
        |batches: Vec<RecordBatch>| -> Vec<i64> { triples(&batches).iter().map(|t| t.2).collect() };
    let stream = client
        .read(&key("k"), read(ReadFrom::Offset(12)))
        .await
        .unwrap();
    assert_eq!(stream.start_offset(), Some(12));
    let got: Vec<_> = stream.try_collect().await.unwrap();
    assert_eq!(rows(got), (12..20).collect::<Vec<_>>());
    // Past the end, or `latest`, without following: the schema and no rows.
    for from in [
        ReadFrom::Offset(20),
        ReadFrom::Offset(1000),
        ReadFrom::Latest,
    ] {
        let stream = client.read(&key("k"), read(from)).await.unwrap();
        assert_eq!(stream.schema().fields().len(), 3);
        let got: Vec<_> = stream.try_collect().await.unwrap();
        assert!(got.is_empty(), "{from:?}");
    }
    // A plain put replaces the key: a new table, from row 0.
    let mut plain = server.client().await;
    plain
        .put_batches(&key("k"), schema(), vec![batch(1, 0, 0, 3)])
        .await
        .unwrap();
    let offsets = client.info(&key("k")).await.unwrap().offsets.unwrap();
    assert_eq!((offsets.earliest_offset, offsets.next_offset), (0, 3));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn schema_mismatches_bad_headers_and_trimmed_offsets_are_clear_errors() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    append(&mut client, "k", vec![batch(0, 0, 0, 10)])
        .await
        .unwrap();
    let other = RecordBatch::try_from_iter([
        (
            "writer",
            Arc::new(Int32Array::from(vec![1])) as Arc<dyn Array>,
        ),
        ("seq", Arc::new(Int64Array::from(vec![1])) as _),
        ("row", Arc::new(StringArray::from(vec!["x"])) as _),
    ])
    .unwrap();
    let err = append(&mut client, "k", vec![other]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("column 2: `row` is Utf8 here, Int64 in the key"),
        "{message}"
    );
    assert_eq!(
        client.info(&key("k")).await.unwrap().rows,
        10,
        "nothing added"
    );

    // Retention trims whole appends; an offset before the oldest kept is OUT_OF_RANGE.
    let capped = capped_at(20);
    for seq in 1..5 {
        let batches = futures::stream::iter([Ok(batch(0, seq, seq * 10, 10))]);
        client
            .put_with(&key("k"), schema(), batches, &capped)
            .await
            .unwrap();
    }
    let offsets = client.info(&key("k")).await.unwrap().offsets.unwrap();
    assert_eq!((offsets.earliest_offset, offsets.next_offset), (30, 50));
    for options in [
        ReadOptions {
            from: ReadFrom::Offset(5),
            follow: false,
        },
        follow(ReadFrom::Offset(29)),
    ] {
        let err = client.read(&key("k"), options).await.err().unwrap();
        assert_eq!(err.code(), Code::OutOfRange, "{err}");
        assert!(err.to_string().contains("oldest kept row is 30"), "{err}");
    }
    assert!(client.stats().await.unwrap().trimmed_rows >= 30);
    // The retain action caps it further, at once.
    let offsets = client
        .retain(
            &key("k"),
            Retention {
                max_rows: Some(1),
                ..Retention::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((offsets.earliest_offset, offsets.next_offset), (40, 50));
    let err = client
        .retain(
            &key("k"),
            Retention {
                max_rows: Some(0),
                ..Retention::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = client
        .put_with(
            &key("k"),
            schema(),
            futures::stream::iter([Ok(batch(0, 9, 0, 1))]),
            &PutOptions {
                retention: capped.retention,
                ..PutOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("x-flightcache-append: 1"), "{err}");

    // Headers that say nothing usable.
    let mut flight = server.flight_client().await;
    for (header, value) in [
        ("x-flightcache-from", "-1"),
        ("x-flightcache-from", "first"),
        ("x-flightcache-follow", "yes"),
    ] {
        flight.metadata_mut().clear();
        flight.add_header(header, value).unwrap();
        let err = flight.do_get(key("k").to_ticket()).await.err().unwrap();
        let status = crate::common::status(err);
        assert_eq!(status.code(), Code::InvalidArgument, "{header}: {value}");
        assert!(status.message().contains(header), "{}", status.message());
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn dictionary_columns_change_across_appends_and_read_from_any_offset() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let words = |range: std::ops::Range<i64>, values: &[&str]| {
        let keys: Int32Array = (0..range.end - range.start)
            .map(|i| (i as usize % values.len()) as i32)
            .collect();
        let dictionary = DictionaryArray::<Int32Type>::try_new(
            keys,
            Arc::new(StringArray::from_iter_values(values.iter())),
        )
        .unwrap();
        RecordBatch::try_from_iter([
            (
                "row",
                Arc::new(Int64Array::from_iter_values(range)) as Arc<dyn Array>,
            ),
            ("word", Arc::new(dictionary) as _),
        ])
        .unwrap()
    };
    let appends = [
        vec![words(0..6, &["a", "b"])],
        vec![words(6..10, &["c"]), words(10..14, &["d", "e"])],
        vec![words(14..20, &["f", "g", "h"])],
    ];
    // A follower started before the key exists waits for it (in its own task: the call
    // answers once the key is there).
    let mut follower = server.client().await;
    let stream = tokio::spawn(async move {
        follower
            .read(&key("words"), follow(ReadFrom::Earliest))
            .await
            .map(|stream| (stream, follower))
    });
    for batches in appends.clone() {
        append(&mut client, "words", batches).await.unwrap();
    }
    let (mut stream, _follower) = stream.await.unwrap().unwrap();
    let expected: Vec<(i64, String)> = appends
        .iter()
        .flatten()
        .flat_map(|batch| {
            let rows = batch.column(0).as_primitive::<Int64Type>().clone();
            let column = batch.column(1).as_dictionary::<Int32Type>().clone();
            let values = column.values().as_string::<i32>().clone();
            (0..batch.num_rows())
                .map(move |i| {
                    let key = column.keys().value(i) as usize;
                    (rows.value(i), values.value(key).to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let pairs = |batches: &[RecordBatch]| -> Vec<(i64, String)> {
        let mut out = Vec::new();
        for batch in batches {
            let rows = batch.column(0).as_primitive::<Int64Type>();
            let column = batch.column(1).as_dictionary::<Int32Type>();
            let values = column.values().as_string::<i32>();
            for i in 0..batch.num_rows() {
                let key = column.keys().value(i) as usize;
                out.push((rows.value(i), values.value(key).to_string()));
            }
        }
        out
    };
    let got = take_rows(&mut stream, 20).await;
    assert_eq!(pairs(&got), expected);
    for from in 0..=20_u64 {
        let options = ReadOptions {
            from: ReadFrom::Offset(from),
            follow: false,
        };
        let got: Vec<_> = client
            .read(&key("words"), options)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(pairs(&got), expected[from as usize..], "from {from}");
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_replace_ends_followers_cleanly_and_a_stop_ends_them_unavailable() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    append(&mut client, "k", vec![batch(0, 0, 0, 4)])
        .await
        .unwrap();
    let mut reader = server.client().await;
    let mut stream = reader
        .read(&key("k"), follow(ReadFrom::Earliest))
        .await
        .unwrap();
    take_rows(&mut stream, 4).await;
    client
        .put_batches(&key("k"), schema(), vec![batch(1, 0, 0, 2)])
        .await
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(30), stream.try_collect())
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "the new table is another stream");

    let mut stream = reader
        .read(&key("k"), follow(ReadFrom::Latest))
        .await
        .unwrap();
    let stopping = tokio::spawn(server.shutdown_and_wait());
    let end = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    stopping.await.unwrap();
}

#[tokio::test]
async fn a_follower_that_stops_reading_does_not_grow_the_servers_memory() {
    let server = TestServer::start_with(ServerConfig {
        max_memory: Some(256 << 20),
        ..quiet(ServerConfig::default())
    })
    .await;
    let mut producer = server.client().await;
    let rows = 128 * 1024; // 1 MiB a column of int64
    let capped = capped_at(4 * rows as u64);
    let one = |seq: i64| futures::stream::iter([Ok(batch(0, seq, seq * rows as i64, rows))]);
    producer
        .put_with(&key("k"), schema(), one(0), &capped)
        .await
        .unwrap();
    let mut stalled = server.client().await;
    let _stream = stalled
        .read(&key("k"), follow(ReadFrom::Earliest))
        .await
        .unwrap();
    let mut used = Vec::new();
    for seq in 1..60 {
        producer
            .put_with(&key("k"), schema(), one(seq), &capped)
            .await
            .unwrap();
        used.push(producer.stats().await.unwrap().memory_used);
    }
    // 2.5 MiB an append (three columns); the cap keeps about 4, the stalled follower holds
    // one, its HTTP/2 window a few more. Flat from there, whatever is appended.
    let settled = used[10];
    let peak = *used.iter().max().unwrap();
    assert!(
        peak <= settled + (8 << 20),
        "memory grew with the appends while a follower stalled: {used:?}"
    );
    assert!(peak < 64 << 20, "{used:?}");
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn appends_come_back_after_a_restart_as_segments_of_their_own() {
    for durability in [Durability::Always, Durability::Background] {
        let dir = tempfile::tempdir().unwrap();
        let config = on_disk(dir.path(), durability);
        let server = TestServer::start_with(config.clone()).await;
        let mut client = server.client().await;
        let capped = capped_at(30);
        for seq in 0..6 {
            let batches = futures::stream::iter([Ok(batch(0, seq, seq * 10, 10))]);
            client
                .put_with(&key("k"), schema(), batches, &capped)
                .await
                .unwrap();
        }
        server.shutdown_and_wait().await;
        assert_eq!(
            arrow_files(dir.path()),
            3,
            "one file per kept append ({durability:?})"
        );

        let server = TestServer::start_with(config).await;
        let mut client = server.client().await;
        let info = client.info(&key("k")).await.unwrap();
        let offsets = info.offsets.unwrap();
        assert_eq!(
            (offsets.earliest_offset, offsets.next_offset, info.rows),
            (30, 60, 30),
            "{durability:?}"
        );
        assert_eq!(offsets.retention.unwrap().max_rows, Some(30));
        // It goes on growing from where it was, and trims the files it no longer needs.
        let first = append(&mut client, "k", vec![batch(0, 6, 60, 10)]).await;
        assert_eq!(first.unwrap(), 60);
        let got: Vec<_> = client
            .read(
                &key("k"),
                ReadOptions {
                    from: ReadFrom::Offset(45),
                    follow: false,
                },
            )
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let rows: Vec<i64> = triples(&got).iter().map(|t| t.2).collect();
        assert_eq!(rows, (45..70).collect::<Vec<_>>());
        server.shutdown_and_wait().await;
        assert_eq!(arrow_files(dir.path()), 3, "{durability:?}");
    }
}

#[tokio::test]
async fn flight_sql_reads_a_growing_key_as_one_table() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for seq in 0..4 {
        append(&mut client, "grows", vec![batch(seq as i32, seq, 0, 25)])
            .await
            .unwrap();
    }
    let got: Vec<_> = client
        .query("SELECT count(*) AS n, count(DISTINCT writer) AS w FROM grows")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let n = got[0].column(0).as_primitive::<Int64Type>().value(0);
    let w = got[0].column(1).as_primitive::<Int64Type>().value(0);
    assert_eq!((n, w), (100, 4));
    server.shutdown_and_wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_under_always_are_all_on_disk_once_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = on_disk(dir.path(), Durability::Always);
    let server = TestServer::start_with(config.clone()).await;
    let mut appenders = Vec::new();
    for writer in 0..4 {
        let mut client = server.client().await;
        appenders.push(tokio::spawn(async move {
            for seq in 0..6 {
                append(&mut client, "k", vec![batch(writer, seq, 0, 7)])
                    .await
                    .unwrap();
            }
        }));
    }
    for appender in appenders {
        appender.await.unwrap();
    }
    let mut client = server.client().await;
    let (_, before) = client.get_all(&key("k")).await.unwrap();
    // A kill -9 would lose nothing acknowledged: every append's file is in place once it is
    // answered. (A clean stop here; the crash loops are in tests/cli/persistence.rs.)
    server.shutdown_and_wait().await;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let (_, after) = client.get_all(&key("k")).await.unwrap();
    assert_eq!(triples(&after), triples(&before));
    assert_eq!(
        after.iter().map(RecordBatch::num_rows).sum::<usize>(),
        4 * 6 * 7
    );
    let offsets = client.info(&key("k")).await.unwrap().offsets.unwrap();
    assert_eq!((offsets.earliest_offset, offsets.next_offset), (0, 168));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn an_aborted_append_adds_nothing_and_a_ttl_on_an_append_sets_the_keys() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    append(&mut client, "k", vec![batch(0, 0, 0, 5)])
        .await
        .unwrap();
    // The producer's input fails after one batch: the upload is cancelled, nothing is added.
    let failing = futures::stream::iter([
        Ok(batch(0, 1, 5, 5)),
        Err(Error::Arrow(arrow::error::ArrowError::ComputeError(
            "the producer failed".into(),
        ))),
    ]);
    let err = client
        .put_with(&key("k"), schema(), failing, &appending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the producer failed"), "{err}");
    let info = client.info(&key("k")).await.unwrap();
    assert_eq!((info.rows, info.offsets.unwrap().next_offset), (5, 5));
    assert!(info.ttl.is_none());
    // An append with a time to live gives the key that one; one without keeps it.
    let with_ttl = PutOptions {
        append: true,
        ttl: Some(Duration::from_secs(600)),
        ..PutOptions::default()
    };
    let stream = futures::stream::iter([Ok(batch(0, 2, 5, 5))]);
    client
        .put_with(&key("k"), schema(), stream, &with_ttl)
        .await
        .unwrap();
    append(&mut client, "k", vec![batch(0, 3, 10, 5)])
        .await
        .unwrap();
    let info = client.info(&key("k")).await.unwrap();
    assert_eq!(info.rows, 15);
    let ttl = info.ttl.expect("the append's time to live");
    assert!(ttl > Duration::from_secs(500), "{ttl:?}");
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_key_keeps_its_first_uploads_schema_after_a_restart_that_trimmed_that_upload() {
    let dir = tempfile::tempdir().unwrap();
    let config = on_disk(dir.path(), Durability::Always);
    let server = TestServer::start_with(config.clone()).await;
    let mut client = server.client().await;
    let tagged = |origin: &str, seq: i64| {
        let schema = Arc::new(
            schema()
                .as_ref()
                .clone()
                .with_metadata(HashMap::from([("origin".to_string(), origin.to_string())])),
        );
        batch(0, seq, seq * 10, 10).with_schema(schema).unwrap()
    };
    let capped = capped_at(10);
    for (seq, origin) in [(0, "first"), (1, "later"), (2, "later")] {
        let batch = tagged(origin, seq);
        let schema = batch.schema();
        client
            .put_with(
                &key("k"),
                schema,
                futures::stream::iter([Ok(batch)]),
                &capped,
            )
            .await
            .unwrap();
    }
    server.shutdown_and_wait().await;
    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let info = client.info(&key("k")).await.unwrap();
    assert_eq!(
        info.offsets.unwrap().earliest_offset,
        20,
        "the first upload was trimmed"
    );
    assert_eq!(
        info.schema.metadata().get("origin").map(String::as_str),
        Some("first")
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn appends_of_a_mib_share_huge_pages_unless_a_small_cap_would_keep_trimmed_ones() {
    // 52,429 rows of (int32, int64, int64): 1 MiB and a few bytes an append, just over the
    // heap's share, so that each goes to a slab, and each on its own would take a 2 MiB
    // huge page.
    let rows = 52_429;
    let appends = 16;
    let one = |seq: i64| futures::stream::iter([Ok(batch(0, seq, seq * rows as i64, rows))]);

    let server = TestServer::start_with(quiet(ServerConfig::default())).await;
    let mut producer = server.client().await;
    let mut expected = Vec::new();
    for seq in 0..appends {
        producer
            .put_with(&key("grows"), schema(), one(seq), &appending())
            .await
            .unwrap();
        expected.extend(triples(&[batch(0, seq, seq * rows as i64, rows)]));
    }
    // The data, the huge page being filled and the messages' headers: not 2 MiB an append.
    let stats = producer.stats().await.unwrap();
    assert!(
        stats.memory_tables <= stats.bytes + (4 << 20),
        "appends held {} bytes of memory for {} bytes of data",
        stats.memory_tables,
        stats.bytes
    );
    let (_, batches) = producer.get_all(&key("grows")).await.unwrap();
    assert!(
        triples(&batches) == expected,
        "the appends read back changed"
    );
    server.shutdown_and_wait().await;

    // A key capped to four appends: each append has slabs of its own, so the trimmed ones
    // give their memory back (a shared slab would keep all 16).
    let server = TestServer::start_with(quiet(ServerConfig::default())).await;
    let mut producer = server.client().await;
    let capped = capped_at(4 * rows as u64);
    for seq in 0..appends {
        producer
            .put_with(&key("capped"), schema(), one(seq), &capped)
            .await
            .unwrap();
    }
    let stats = producer.stats().await.unwrap();
    assert!(stats.rows <= 5 * rows as u64, "{stats:?}");
    assert!(
        stats.memory_tables <= 5 * (2 << 20),
        "trimmed appends kept their memory: {stats:?}"
    );
    server.shutdown_and_wait().await;
}

/// The `row` column of what a read of `name` from `from` gets, and in how many batches.
async fn rows_from(client: &mut CacheClient, name: &str, from: u64) -> (Vec<i64>, usize) {
    let options = ReadOptions {
        from: ReadFrom::Offset(from),
        follow: false,
    };
    let got: Vec<RecordBatch> = client
        .read(&key(name), options)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    (triples(&got).iter().map(|t| t.2).collect(), got.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_appends_merge_in_memory_and_come_back_whole_after_trims_and_a_restart() {
    const APPENDS: i64 = 200;
    const ROWS: i64 = 5;
    for durability in [Durability::Always, Durability::Background] {
        let dir = tempfile::tempdir().unwrap();
        let config = on_disk(dir.path(), durability);
        let server = TestServer::start_with(config.clone()).await;
        let mut client = server.client().await;
        append(&mut client, "k", vec![batch(0, 0, 0, ROWS as usize)])
            .await
            .unwrap();
        let mut follower = server.client().await;
        let mut following = follower
            .read(&key("k"), follow(ReadFrom::Earliest))
            .await
            .unwrap();
        for seq in 1..APPENDS {
            append(
                &mut client,
                "k",
                vec![batch(0, seq, seq * ROWS, ROWS as usize)],
            )
            .await
            .unwrap();
        }
        let total = (APPENDS * ROWS) as usize;
        let followed = take_rows(&mut following, total).await;
        let rows: Vec<i64> = triples(&followed).iter().map(|t| t.2).collect();
        assert_eq!(
            rows,
            (0..total as i64).collect::<Vec<_>>(),
            "{durability:?}"
        );

        // Merges run in the background (not under `background` durability, whose files are
        // written behind the appends): wait for them, up to 10 s.
        let mut batches = APPENDS as usize;
        for _ in 0..1000 {
            batches = rows_from(&mut client, "k", 0).await.1;
            if durability == Durability::Background || batches < 64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match durability {
            Durability::Always => assert!(batches < 64, "{batches} batches: not merged"),
            Durability::Background => assert_eq!(batches, APPENDS as usize),
        }
        for from in [0, 3, 5, 333, 999, 1000] {
            let (rows, _) = rows_from(&mut client, "k", from).await;
            assert_eq!(
                rows,
                (from as i64..total as i64).collect::<Vec<_>>(),
                "{durability:?}"
            );
        }
        // A trim takes a merged segment whole (its 190 appends), and their files with it.
        let capped = Retention {
            max_rows: Some(40),
            ..Retention::default()
        };
        let offsets = client.retain(&key("k"), capped).await.unwrap();
        let kept = rows_from(&mut client, "k", offsets.earliest_offset).await.0;
        assert!(
            kept.len() >= 40 && kept.len() < 100,
            "{durability:?}: {}",
            kept.len()
        );
        drop(following);
        server.shutdown_and_wait().await;
        assert_eq!(
            arrow_files(dir.path()),
            kept.len() / ROWS as usize,
            "{durability:?}: a file per kept append"
        );
        let server = TestServer::start_with(config).await;
        let mut client = server.client().await;
        let after = client.info(&key("k")).await.unwrap().offsets.unwrap();
        assert_eq!(
            (after.earliest_offset, after.next_offset),
            (offsets.earliest_offset, total as u64),
            "{durability:?}: the trimmed appends stayed trimmed, the kept ones came back"
        );
        assert_eq!(
            rows_from(&mut client, "k", after.earliest_offset).await.0,
            kept
        );
        server.shutdown_and_wait().await;
    }
}

#[tokio::test]
async fn a_gap_in_a_keys_files_keeps_its_time_to_live_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = on_disk(dir.path(), Durability::Always);
    let server = TestServer::start_with(config.clone()).await;
    let mut client = server.client().await;
    let put = futures::stream::iter([Ok(batch(0, 0, 0, 5))]);
    client
        .put_with(&key("k"), schema(), put, &PutOptions::default())
        .await
        .unwrap();
    for seq in 1..3 {
        append(&mut client, "k", vec![batch(0, seq, seq * 5, 5)])
            .await
            .unwrap();
    }
    // A deadline set later lives in the table's `.ttl` file, not in its data files.
    client
        .expire(&key("k"), Duration::from_secs(600))
        .await
        .unwrap();
    server.shutdown_and_wait().await;
    // The middle append's file is lost: the put's rows before the gap are not served.
    let data = arrow_file_paths(dir.path());
    assert_eq!(data.len(), 3);
    std::fs::remove_file(&data[1]).unwrap();

    let server = TestServer::start_with(config).await;
    let mut client = server.client().await;
    let info = client.info(&key("k")).await.unwrap();
    assert_eq!(info.offsets.unwrap().earliest_offset, 10);
    let ttl = info.ttl.expect("the key's time to live outlived the gap");
    assert!(ttl > Duration::from_secs(500), "{ttl:?}");
    server.shutdown_and_wait().await;
}
