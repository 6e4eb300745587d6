//! Uploads that must store nothing: malformed, mismatched, aborted, over a limit. In each case
//! the old table under the key stays intact.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, StringArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightData, FlightDescriptor};
use bytes::Bytes;
use flightcache::ServerConfig;
use flightcache::{CacheClient, Error};
use futures::{SinkExt, TryStreamExt};
use tonic::Code;

use crate::common::{TestServer, key, numbered_batches, numbered_schema, put_raw};

/// The Flight messages a well-behaved client sends for `batches` under `name`.
async fn encode(name: &str, batches: Vec<RecordBatch>) -> Vec<FlightData> {
    let schema = batches[0].schema();
    FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(name.to_string())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .try_collect()
        .await
        .unwrap()
}

/// A server holding the table `t` (3 batches), and a client.
async fn server_with_table() -> (TestServer, CacheClient, Vec<RecordBatch>) {
    let (server, client) = TestServer::with_numbered_table("t", 3, 10).await;
    (server, client, numbered_batches(3, 10))
}

async fn assert_table_intact(client: &mut CacheClient, batches: &[RecordBatch]) {
    let (_, got) = client.get_all(&key("t")).await.unwrap();
    assert_eq!(got, batches, "the old table changed");
}

/// Wait (bounded) until the server has counted `errors` failed requests.
async fn wait_for_errors(client: &mut CacheClient, errors: u64) {
    for _ in 0..500 {
        if client.stats().await.unwrap().errors >= errors {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server never reported the failed upload");
}

#[tokio::test]
async fn upload_without_descriptor_is_invalid() {
    let server = TestServer::start().await;
    let mut messages = encode("t", numbered_batches(1, 3)).await;
    messages[0].flight_descriptor = None;
    let status = put_raw(&server, messages).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("descriptor"),
        "{}",
        status.message()
    );
    let status = put_raw(&server, vec![]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "an empty upload");
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn upload_with_empty_key_is_invalid() {
    let server = TestServer::start().await;
    let status = put_raw(&server, encode("", numbered_batches(1, 3)).await).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("empty"), "{}", status.message());
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn upload_without_schema_is_invalid() {
    let server = TestServer::start().await;
    let descriptor_only = FlightData::new().with_descriptor(FlightDescriptor::new_cmd("t"));
    let status = put_raw(&server, vec![descriptor_only]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("schema"), "{}", status.message());
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn malformed_ipc_is_invalid_and_stores_nothing() {
    let (server, mut client, batches) = server_with_table().await;
    let good = encode("t", numbered_batches(2, 10)).await;

    let mut garbage_header = good.clone();
    garbage_header[1].data_header = Bytes::from_static(b"definitely not a flatbuffer");
    let mut truncated_body = good.clone();
    truncated_body[1].data_body = truncated_body[1].data_body.slice(0..8);
    let mut body_without_header = good.clone();
    body_without_header[1].data_header = Bytes::new();
    let mut batch_before_schema = good.clone();
    batch_before_schema.remove(0);
    batch_before_schema[0].flight_descriptor = Some(FlightDescriptor::new_cmd("t"));

    for (case, messages) in [
        ("garbage header", garbage_header),
        ("truncated body", truncated_body),
        ("body without header", body_without_header),
        ("batch before schema", batch_before_schema),
    ] {
        let status = put_raw(&server, messages).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{case}: {}",
            status.message()
        );
        assert!(
            status.message().contains("`t`"),
            "{case}: {}",
            status.message()
        );
        assert_table_intact(&mut client, &batches).await;
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn batches_not_matching_the_schema_are_invalid() {
    let (server, mut client, batches) = server_with_table().await;
    let other =
        RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["a", "b"])) as _)])
            .unwrap();
    let mut mismatched = encode("t", numbered_batches(1, 10)).await;
    let foreign = encode("t", vec![other]).await;
    mismatched.push(foreign[1].clone());
    let status = put_raw(&server, mismatched).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("match the schema"),
        "{}",
        status.message()
    );
    assert_table_intact(&mut client, &batches).await;

    let mut schema_change = encode("t", numbered_batches(1, 10)).await;
    schema_change.extend(foreign);
    let status = put_raw(&server, schema_change).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("schema"), "{}", status.message());
    assert_table_intact(&mut client, &batches).await;
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn failing_input_cancels_the_upload_and_stores_nothing() {
    let (server, mut client, batches) = server_with_table().await;
    let mut input: Vec<flightcache::Result<RecordBatch>> =
        numbered_batches(5, 10).into_iter().map(Ok).collect();
    input.insert(3, Err(Error::Io(std::io::Error::other("the file broke"))));
    let err = client
        .put(&key("t"), numbered_schema(), futures::stream::iter(input))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the file broke"), "{err}");
    wait_for_errors(&mut client, 1).await;
    assert_table_intact(&mut client, &batches).await;
    assert_eq!(client.stats().await.unwrap().puts, 1);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn client_that_disconnects_mid_upload_stores_nothing() {
    let (server, mut client, batches) = server_with_table().await;
    let messages = encode("t", numbered_batches(4, 10)).await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<FlightData>(8);
    let mut flight = server.flight_client().await;
    let call = tokio::spawn(async move {
        let results = flight.inner_mut().do_put(rx).await?;
        results.into_inner().message().await
    });
    for message in messages.into_iter().take(3) {
        tx.send(message).await.unwrap();
    }
    tokio::task::yield_now().await;
    call.abort(); // drops the call: HTTP/2 RST_STREAM, as a killed client would
    assert!(call.await.unwrap_err().is_cancelled());
    wait_for_errors(&mut client, 1).await;
    assert_table_intact(&mut client, &batches).await;
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn message_over_the_size_limit_is_resource_exhausted() {
    let server = TestServer::start_with(ServerConfig {
        max_message_bytes: 1 << 20,
        ..ServerConfig::default()
    })
    .await;
    // 4 MiB in one batch: the encoder sends ~2 MiB messages, over the 1 MiB limit.
    let status = put_raw(&server, encode("big", numbered_batches(1, 400_000)).await).await;
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("--max-message-size"),
        "{}",
        status.message()
    );
    assert!(server.client().await.list("").await.unwrap().is_empty());
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn uploads_over_the_concurrency_limit_are_resource_exhausted() {
    let server = TestServer::start_with(ServerConfig {
        max_concurrent_puts: 1,
        ..ServerConfig::default()
    })
    .await;
    // Hold one upload open: its schema is sent, its end is not.
    let mut messages = encode("slow", numbered_batches(1, 10)).await.into_iter();
    let (mut tx, rx) = futures::channel::mpsc::channel::<FlightData>(8);
    let mut flight = server.flight_client().await;
    let slow = tokio::spawn(async move {
        let results = flight.inner_mut().do_put(rx).await?;
        results.into_inner().message().await
    });
    tx.send(messages.next().unwrap()).await.unwrap();

    let mut client = server.client().await;
    let mut refused = None;
    for _ in 0..500 {
        match client
            .put_batches(&key("fast"), numbered_schema(), numbered_batches(1, 1))
            .await
        {
            Err(Error::Rpc { code, message }) => {
                refused = Some((code, message));
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    let (code, message) = refused.expect("the second upload was never refused");
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("--max-concurrent-puts"), "{message}");

    for message in messages {
        tx.send(message).await.unwrap();
    }
    drop(tx);
    assert!(
        slow.await.unwrap().unwrap().is_some(),
        "the held upload completes"
    );
    let (_, got) = client.get_all(&key("slow")).await.unwrap();
    assert_eq!(got, numbered_batches(1, 10));
    client
        .put_batches(&key("fast"), numbered_schema(), numbered_batches(1, 1))
        .await
        .unwrap();
    server.shutdown_and_wait().await;
}

/// What Arrow's integration client (arrow-rs `flight-test-integration-client`) does with a
/// file of no record batches: it sends the schema, drops its DoPut call as soon as the
/// response's headers arrive, and asks for the table at once. The headers come with the put's
/// first result (here its summary, sent once the table is stored), so the table is always
/// there: 200 times in a row. (The headers used to go out before the upload was read, and
/// 2-5% of such lookups found no table.) Two threads, so the client and the server race as
/// two processes would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_answers_its_headers_with_its_first_result() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    let schema = numbered_schema();
    for n in 0..200 {
        let name = format!("no-batches-{n}");
        let messages = FlightDataEncoderBuilder::new()
            .with_schema(Arc::clone(&schema))
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(name.clone())))
            .build(futures::stream::empty())
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        let answer = flight
            .inner_mut()
            .do_put(futures::stream::iter(messages))
            .await
            .unwrap();
        drop(answer); // as soon as the headers arrived
        let info = flight
            .get_flight_info(FlightDescriptor::new_cmd(name))
            .await
            .unwrap_or_else(|err| panic!("try {n}: {err}"));
        assert_eq!(info.total_records, 0);
    }
    // A client that reads the answer gets the summary first.
    let messages = encode("read", numbered_batches(2, 5)).await;
    let mut answer = flight
        .inner_mut()
        .do_put(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let summary = answer.message().await.unwrap().expect("a first result");
    let summary: serde_json::Value = serde_json::from_slice(&summary.app_metadata).unwrap();
    assert_eq!(summary["rows"], 10);
    assert!(answer.message().await.unwrap().is_none());
    server.shutdown_and_wait().await;
}

/// No headers before the first result: a put whose client has sent nothing yet has no answer
/// at all, so a client cannot take the headers for "stored".
#[tokio::test(start_paused = true)]
async fn a_put_sends_no_headers_before_its_first_result() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<FlightData>(8);
    let call = tokio::spawn(async move {
        let answer = flight.inner_mut().do_put(rx).await?.into_inner();
        Ok::<_, tonic::Status>(answer)
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!call.is_finished(), "headers came before any result");
    for message in encode("late", numbered_batches(1, 3)).await {
        tx.send(message).await.unwrap();
    }
    drop(tx);
    let mut answer = call.await.unwrap().unwrap();
    assert!(answer.message().await.unwrap().is_some(), "the summary");
    server.shutdown_and_wait().await;
}
