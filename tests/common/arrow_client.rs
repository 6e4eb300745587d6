//! A Flight client that does exactly what the Arrow project's cross-implementation integration
//! client does (apache/arrow-rs, `arrow-integration-testing`, `flight_client_scenarios`,
//! default scenario), written here with arrow-flight's generated client:
//!
//! 1. `do_put` under a PATH descriptor: the schema, then each batch (its dictionaries first)
//!    tagged with its index as `app_metadata`, waiting for the server to echo each tag before
//!    sending the next batch; after the last, no further `PutResult` may come.
//! 2. `get_flight_info` on the same descriptor; every endpoint must carry a ticket and at
//!    least one location.
//! 3. For every location of every endpoint: connect to it, `do_get` the ticket, and compare the
//!    schema (metadata included), every batch, and every batch's tag.
//!
//! Every wait is bounded, so that a server that does not answer fails the test instead of
//! hanging it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::buffer::Buffer;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::utils::flight_data_to_arrow_batch;
use arrow_flight::{FlightData, FlightDescriptor, Ticket};
use futures::{SinkExt, StreamExt};
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// How long the client waits for any one answer.
const DEADLINE: Duration = Duration::from_secs(30);

type Client = FlightServiceClient<Channel>;

/// Run the whole scenario for `batches` (of `schema`) under the PATH descriptor `path`,
/// against the server at `url` (`http://HOST:PORT`). Panics on the first difference.
pub async fn run_scenario(url: &str, path: &str, schema: SchemaRef, batches: &[RecordBatch]) {
    let client = connect(url).await;
    let descriptor = FlightDescriptor::new_path(vec![path.to_string()]);
    upload(client.clone(), &schema, descriptor.clone(), batches).await;
    verify(client, descriptor, &schema, batches).await;
}

async fn connect(url: &str) -> Client {
    let channel = Endpoint::new(url.to_string())
        .expect("a valid URL")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    FlightServiceClient::new(channel)
}

/// The next message of `stream`, within the deadline.
async fn next<T>(stream: &mut Streaming<T>, what: &str) -> Option<Result<T, tonic::Status>> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no answer within {DEADLINE:?} while waiting for {what}"))
}

async fn upload(
    mut client: Client,
    schema: &Schema,
    descriptor: FlightDescriptor,
    batches: &[RecordBatch],
) {
    let (mut upload, requests) = futures::channel::mpsc::channel(10);
    let options = IpcWriteOptions::default();
    let mut tracker = DictionaryTracker::new(false);
    let generator = IpcDataGenerator::default();
    let mut context = IpcWriteContext::default();
    let encoded = generator.schema_to_bytes_with_dictionary_tracker(schema, &mut tracker, &options);
    let schema_message = FlightData {
        flight_descriptor: Some(descriptor),
        data_header: encoded.ipc_message.into(),
        ..Default::default()
    };
    upload.send(schema_message).await.unwrap();

    let mut tagged = batches.iter().enumerate();
    let Some((_, first)) = tagged.next() else {
        // No batches: the schema alone, the call not read further.
        drop(upload);
        client
            .do_put(requests)
            .await
            .expect("do_put of a schema alone");
        return;
    };
    // As Arrow's client does: the first batch is queued before the call starts.
    let mut send = async |index: usize, batch: &RecordBatch| {
        let (dictionaries, batch) = generator
            .encode(batch, &mut tracker, &options, &mut context)
            .expect("the batch encodes");
        for dictionary in dictionaries {
            upload.send(FlightData::from(dictionary)).await.unwrap();
        }
        let mut message = FlightData::from(batch);
        message.app_metadata = index.to_string().into_bytes().into();
        upload.send(message).await.unwrap();
    };
    send(0, first).await;
    let mut results = client
        .do_put(requests)
        .await
        .expect("do_put starts")
        .into_inner();
    expect_echo(&mut results, 0).await;
    for (index, batch) in tagged {
        send(index, batch).await;
        expect_echo(&mut results, index).await;
    }
    drop(upload);
    assert!(
        next(&mut results, "the end of the upload").await.is_none(),
        "the server sent a PutResult after the echoes"
    );
}

/// Wait for the `PutResult` that acknowledges batch `index`, and check it echoes its tag.
async fn expect_echo(results: &mut Streaming<arrow_flight::PutResult>, index: usize) {
    let result = next(results, &format!("the echo of batch {index}"))
        .await
        .unwrap_or_else(|| panic!("the upload ended before batch {index} was acknowledged"))
        .unwrap_or_else(|status| panic!("the upload failed at batch {index}: {status}"));
    assert_eq!(
        result.app_metadata,
        index.to_string().into_bytes(),
        "the acknowledgement of batch {index} does not echo its tag"
    );
}

async fn verify(
    mut client: Client,
    descriptor: FlightDescriptor,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) {
    let info = client
        .get_flight_info(descriptor)
        .await
        .expect("get_flight_info")
        .into_inner();
    assert!(!info.endpoint.is_empty(), "no endpoints returned");
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint without a ticket");
        assert!(
            !endpoint.location.is_empty(),
            "an endpoint without a location"
        );
        for location in endpoint.location {
            // As Arrow's Rust client does: tonic knows `http`, not Flight's `grpc+tcp`.
            let url = location.uri.replace("grpc+tcp://", "http://");
            consume(&url, ticket.clone(), schema, batches).await;
        }
    }
}

async fn consume(url: &str, ticket: Ticket, schema: &SchemaRef, batches: &[RecordBatch]) {
    let mut client = connect(url).await;
    let mut stream = client.do_get(ticket).await.expect("do_get").into_inner();
    let first = next(&mut stream, "the schema")
        .await
        .expect("no schema")
        .expect("the schema");
    let message = arrow::ipc::root_as_message(&first.data_header).expect("an IPC message");
    let received = Arc::new(arrow::ipc::convert::fb_to_schema(
        message.header_as_schema().expect("a schema first"),
    ));
    assert_eq!(&received, schema, "the schema (with metadata) differs");

    let mut dictionaries: HashMap<i64, ArrayRef> = HashMap::new();
    for (index, expected) in batches.iter().enumerate() {
        let data = loop {
            let data = next(&mut stream, &format!("batch {index}"))
                .await
                .unwrap_or_else(|| panic!("only {index} of {} batches", batches.len()))
                .expect("a batch");
            let message = arrow::ipc::root_as_message(&data.data_header).expect("an IPC message");
            let Some(dictionary) = message.header_as_dictionary_batch() else {
                break data;
            };
            arrow::ipc::reader::read_dictionary(
                &Buffer::from(data.data_body.as_ref()),
                dictionary,
                &received,
                &mut dictionaries,
                &message.version(),
            )
            .expect("the dictionary decodes");
        };
        assert_eq!(
            data.app_metadata,
            index.to_string().into_bytes(),
            "batch {index} came back without its tag"
        );
        let batch = flight_data_to_arrow_batch(&data, Arc::clone(&received), &dictionaries)
            .expect("the batch decodes");
        assert_eq!(batch.schema(), received);
        assert_eq!(
            batch.num_rows(),
            expected.num_rows(),
            "rows of batch {index}"
        );
        for (i, field) in expected.schema().fields().iter().enumerate() {
            assert_eq!(
                batch.column(i).as_ref(),
                expected.column(i).as_ref(),
                "column `{}` of batch {index}",
                field.name()
            );
        }
    }
    assert!(
        next(&mut stream, "the end of the table").await.is_none(),
        "more batches than the {} expected",
        batches.len()
    );
}
