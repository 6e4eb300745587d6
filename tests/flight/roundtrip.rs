//! Tables come back exactly as they were put: schema and metadata, types, nulls, row order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, Int64Array, RecordBatch};
use arrow::datatypes::{Int32Type, Schema};

use crate::common::types::{every_type_batch, every_type_columns};
use crate::common::{TestServer, key, numbered_batches, roundtrip};

#[tokio::test]
async fn many_batches_come_back_in_order() {
    roundtrip(numbered_batches(50, 1000)).await;
}

#[tokio::test]
async fn every_arrow_type_round_trips_in_one_batch() {
    roundtrip(vec![every_type_batch()]).await;
}

#[tokio::test]
async fn every_arrow_type_round_trips_as_its_own_table() {
    // One table per type, so a failure names the type.
    for (name, array) in every_type_columns() {
        let batch = RecordBatch::try_from_iter([(name, array)]).unwrap();
        let server = TestServer::start().await;
        let mut client = server.client().await;
        let key = key(name);
        client
            .put_batches(&key, batch.schema(), vec![batch.clone()])
            .await
            .unwrap_or_else(|e| panic!("put of `{name}` failed: {e}"));
        let (_, got) = client.get_all(&key).await.unwrap();
        assert_eq!(got, vec![batch], "`{name}` changed in the round trip");
        server.shutdown_and_wait().await;
    }
}

#[tokio::test]
async fn sliced_batches_round_trip() {
    let batch = every_type_batch();
    roundtrip(vec![
        batch.slice(1, 2),
        batch.slice(0, 1),
        batch.slice(3, 1),
    ])
    .await;
}

#[tokio::test]
async fn dictionaries_may_change_between_batches() {
    let first: DictionaryArray<Int32Type> = vec![Some("a"), Some("b"), None].into_iter().collect();
    let second: DictionaryArray<Int32Type> = vec![Some("z"), None, Some("y")].into_iter().collect();
    let batches = [first, second]
        .into_iter()
        .map(|d| RecordBatch::try_from_iter([("d", Arc::new(d) as ArrayRef)]).unwrap())
        .collect();
    roundtrip(batches).await;
}

#[tokio::test]
async fn empty_table_keeps_its_schema_and_metadata() {
    let schema = Arc::new(
        every_type_batch()
            .schema()
            .as_ref()
            .clone()
            .with_metadata(HashMap::from([("k".to_string(), "v".to_string())])),
    );
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let key = key("empty");
    let summary = client
        .put_batches(&key, Arc::clone(&schema), vec![])
        .await
        .unwrap();
    assert_eq!((summary.rows, summary.batches), (0, 0));
    let (got_schema, got) = client.get_all(&key).await.unwrap();
    assert_eq!(got_schema, schema);
    assert!(got.is_empty());
    let info = client.info(&key).await.unwrap();
    assert_eq!((info.rows, info.schema), (0, schema));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn zero_row_batches_are_kept() {
    let batch = numbered_batches(1, 5).remove(0);
    roundtrip(vec![
        batch.slice(0, 0),
        batch,
        numbered_batches(1, 0).remove(0),
    ])
    .await;
}

#[tokio::test]
async fn batches_larger_than_a_flight_message_come_back_equal() {
    // The client encoder splits batches above 2 MiB into several messages; values must survive.
    let ids: Vec<i64> = (0..1_000_000).collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
            "id",
            arrow::datatypes::DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(ids))],
    )
    .unwrap();
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let key = key("big");
    client
        .put_batches(&key, batch.schema(), vec![batch.clone()])
        .await
        .unwrap();
    let (_, got) = client.get_all(&key).await.unwrap();
    let got = arrow::compute::concat_batches(&batch.schema(), &got).unwrap();
    assert_eq!(got, batch);
    server.shutdown_and_wait().await;
}

/// Upload `batch` as one single message, as pyarrow does with a one-chunk table.
async fn put_as_one_message(server: &TestServer, name: &str, batch: &RecordBatch) {
    use flightcache::protocol::encode::FlightEncoder;
    use futures::TryStreamExt;
    let mut encoder = FlightEncoder::new(usize::MAX);
    let key = key(name);
    let mut messages = vec![encoder.encode_schema(&batch.schema(), Some(key.to_descriptor()))];
    messages.extend(encoder.encode_batch(batch).unwrap());
    assert_eq!(
        messages.len(),
        2 + usize::from(
            batch
                .schema()
                .fields()
                .iter()
                .any(|f| { matches!(f.data_type(), arrow::datatypes::DataType::Dictionary(..)) })
        )
    );
    let mut flight = server.flight_client().await;
    let results: Vec<_> = flight
        .do_put(futures::stream::iter(messages.into_iter().map(Ok)))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(results.len(), 1);
}

#[tokio::test]
async fn giant_batches_are_resplit_once_and_come_back_equal() {
    let n = 1_500_000; // 12 MB of i64 plus strings: far above the 4 MiB re-split threshold
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
        (
            "label",
            Arc::new(arrow::array::StringArray::from_iter(
                (0..n).map(|i| (i % 3 != 0).then(|| format!("row {i}"))),
            )) as ArrayRef,
        ),
    ])
    .unwrap();
    let server = TestServer::start().await;
    put_as_one_message(&server, "giant", &batch).await;
    // On the wire: streaming-size messages, none over the re-split threshold (4 MiB).
    use futures::TryStreamExt;
    let messages: Vec<arrow_flight::FlightData> = server
        .flight_client()
        .await
        .inner_mut()
        .do_get(arrow_flight::Ticket::new("giant"))
        .await
        .unwrap()
        .into_inner()
        .try_collect()
        .await
        .unwrap();
    let largest = messages.iter().map(|m| m.data_body.len()).max().unwrap();
    assert!(largest <= 4 << 20, "a piece of {largest} bytes");
    let mut client = server.client().await;
    let (schema, got) = client.get_all(&key("giant")).await.unwrap();
    assert_eq!(schema, batch.schema());
    assert!(got.len() > 4, "stored as {} batches", got.len());
    let whole = arrow::compute::concat_batches(&schema, &got).unwrap();
    assert_eq!(whole, batch);
    assert_eq!(client.info(&key("giant")).await.unwrap().rows, n as u64);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn giant_batches_with_dictionaries_are_kept_whole() {
    let n = 2_000_000;
    let dict: DictionaryArray<Int32Type> = (0..n).map(|i| ["a", "b"][i % 2]).collect();
    let batch = RecordBatch::try_from_iter([("d", Arc::new(dict) as ArrayRef)]).unwrap();
    let server = TestServer::start().await;
    put_as_one_message(&server, "giant-dict", &batch).await;
    let (_, got) = server
        .client()
        .await
        .get_all(&key("giant-dict"))
        .await
        .unwrap();
    assert_eq!(got, vec![batch]);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn every_flat_type_round_trips_through_a_resplit_giant_batch() {
    use arrow::datatypes::DataType;
    // The columns a giant batch is split under without copying: fixed-width, boolean,
    // fixed-size binary, (large) strings and binary, nulls. 200,001 rows (not a multiple of
    // the pieces' 64-row alignment), from a slice, with nulls everywhere the type allows.
    let flat = |t: &DataType| {
        t.is_primitive()
            || matches!(
                t,
                DataType::Null
                    | DataType::Boolean
                    | DataType::FixedSizeBinary(_)
                    | DataType::Utf8
                    | DataType::Binary
                    | DataType::LargeUtf8
                    | DataType::LargeBinary
            )
    };
    let columns: Vec<(&str, ArrayRef)> = every_type_columns()
        .into_iter()
        .filter(|(_, array)| flat(array.data_type()))
        .map(|(name, array)| {
            let copies = vec![array.as_ref(); 50_001];
            let long = arrow::compute::concat(&copies).unwrap();
            (name, long.slice(3, 200_001))
        })
        .collect();
    assert!(columns.len() > 30, "{} flat columns", columns.len());
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let server = TestServer::start().await;
    put_as_one_message(&server, "flat", &batch).await;
    let (schema, got) = server.client().await.get_all(&key("flat")).await.unwrap();
    assert_eq!(schema, batch.schema());
    assert!(got.len() > 4, "stored as {} pieces", got.len());
    assert!(got[..got.len() - 1].iter().all(|b| b.num_rows() % 64 == 0));
    let whole = arrow::compute::concat_batches(&schema, &got).unwrap();
    assert_eq!(whole, batch);
    server.shutdown_and_wait().await;
}
