//! What the Flight specification asks of a server beyond moving tables: acknowledgements of
//! uploaded app_metadata, app_metadata replayed with each message, endpoint locations,
//! PollFlightInfo, CancelFlightInfo, and keys of PATH descriptors.

use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch};
use arrow_flight::{
    CancelFlightInfoRequest, CancelStatus, FlightData, FlightDescriptor, FlightInfo, PutResult,
    Ticket,
};
use bytes::Bytes;
use flightcache::ServerConfig;
use flightcache::protocol::encode::FlightEncoder;
use flightcache::protocol::put::PutSummary;
use futures::{SinkExt, StreamExt, TryStreamExt};
use tonic::Code;

use crate::common::{TestServer, key, numbered_batches, numbered_schema, status};

/// How long a test waits for any one answer, so that a regression fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(30);

/// The messages of an upload of `batches` under `descriptor`, each batch in one message.
fn messages(descriptor: FlightDescriptor, batches: &[RecordBatch]) -> Vec<FlightData> {
    let mut encoder = FlightEncoder::new(usize::MAX);
    let mut messages = vec![encoder.encode_schema(&batches[0].schema(), Some(descriptor))];
    for batch in batches {
        messages.extend(encoder.encode_batch(batch).unwrap());
    }
    messages
}

fn tagged(mut message: FlightData, tag: &'static [u8]) -> FlightData {
    message.app_metadata = Bytes::from_static(tag);
    message
}

/// Upload `messages` in one `do_put` and collect every `PutResult`.
async fn put(server: &TestServer, messages: Vec<FlightData>) -> Vec<PutResult> {
    let mut flight = server.flight_client().await;
    let results = flight
        .inner_mut()
        .do_put(futures::stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(DEADLINE, results.try_collect())
        .await
        .expect("the upload is answered")
        .unwrap()
}

/// Every message a `do_get` of `name` answers, raw.
async fn get_messages(server: &TestServer, name: &str) -> Vec<FlightData> {
    let mut flight = server.flight_client().await;
    let stream = flight
        .inner_mut()
        .do_get(Ticket::new(name.to_string()))
        .await
        .unwrap()
        .into_inner();
    stream.try_collect().await.unwrap()
}

#[tokio::test]
async fn each_tagged_message_is_echoed_before_the_next_is_read() {
    let server = TestServer::start().await;
    let batches = numbered_batches(3, 10);
    let mut upload = messages(FlightDescriptor::new_cmd("t"), &batches).into_iter();
    // Room for the schema and the first batch before the call is polled.
    let (mut requests, rx) = futures::channel::mpsc::channel::<FlightData>(2);
    let mut flight = server.flight_client().await;
    let call = flight.inner_mut().do_put(rx);
    requests.send(upload.next().unwrap()).await.unwrap(); // the schema, untagged
    // The answer's headers come with the first echo (as from gRPC's C++ servers), so the
    // first tagged batch goes before the call is awaited, as Arrow's integration client
    // sends it.
    let tag_of = |i: usize| format!("batch {i}");
    let mut first = upload.next().unwrap();
    first.app_metadata = Bytes::from(tag_of(0));
    requests.send(first).await.unwrap();
    let mut results = tokio::time::timeout(DEADLINE, call)
        .await
        .expect("the call starts")
        .unwrap()
        .into_inner();
    for (i, batch) in std::iter::once(None).chain(upload.map(Some)).enumerate() {
        let tag = tag_of(i);
        if let Some(mut message) = batch {
            message.app_metadata = Bytes::from(tag.clone());
            requests.send(message).await.unwrap();
        }
        // The next batch is not sent until this one is acknowledged.
        let echo = tokio::time::timeout(DEADLINE, results.next())
            .await
            .unwrap_or_else(|_| panic!("batch {i} was never acknowledged"))
            .expect("an answer")
            .unwrap();
        assert_eq!(echo.app_metadata, tag.as_bytes());
    }
    drop(requests);
    let rest: Vec<_> = tokio::time::timeout(DEADLINE, results.try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty(), "only echoes when tags were sent: {rest:?}");
    let (_, got) = server.client().await.get_all(&key("t")).await.unwrap();
    assert_eq!(got, batches);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn an_upload_without_tags_is_answered_by_its_summary_alone() {
    let server = TestServer::start().await;
    let batches = numbered_batches(2, 10);
    let results = put(&server, messages(FlightDescriptor::new_cmd("t"), &batches)).await;
    assert_eq!(results.len(), 1);
    let summary = PutSummary::from_app_metadata(&results[0].app_metadata).unwrap();
    let info = server.client().await.info(&key("t")).await.unwrap();
    assert_eq!(
        summary,
        PutSummary {
            key: "t".into(),
            rows: 20,
            bytes: info.bytes,
            batches: 2,
            first_offset: None,
        }
    );
    assert!(summary.bytes > 0);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn acknowledged_batches_are_not_published_before_the_stream_ends() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let old = numbered_batches(1, 5);
    client
        .put_batches(&key("t"), numbered_schema(), old.clone())
        .await
        .unwrap();

    let new = numbered_batches(3, 10);
    let mut upload = messages(FlightDescriptor::new_cmd("t"), &new).into_iter();
    let (mut requests, rx) = futures::channel::mpsc::channel::<FlightData>(4);
    requests.send(upload.next().unwrap()).await.unwrap();
    requests
        .send(tagged(upload.next().unwrap(), b"0"))
        .await
        .unwrap();
    let (echoed, echo) = tokio::sync::oneshot::channel();
    let mut flight = server.flight_client().await;
    let call = tokio::spawn(async move {
        let mut results = flight.inner_mut().do_put(rx).await.unwrap().into_inner();
        echoed.send(results.message().await).unwrap();
        std::future::pending::<()>().await; // holds the call open until aborted
    });
    let echo = tokio::time::timeout(DEADLINE, echo)
        .await
        .expect("batch 0 is acknowledged")
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.app_metadata, Bytes::from_static(b"0"));
    // Acknowledged, not ended: the old table is still the one served.
    let (_, got) = client.get_all(&key("t")).await.unwrap();
    assert_eq!(got, old, "an acknowledged upload was published early");

    // The client goes away without ending the stream: nothing is stored.
    call.abort(); // drops the call: HTTP/2 RST_STREAM, as a killed client would
    assert!(call.await.unwrap_err().is_cancelled());
    drop(requests);
    for _ in 0..500 {
        if client.stats().await.unwrap().errors >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = client.stats().await.unwrap();
    assert_eq!(
        (stats.errors, stats.puts),
        (1, 1),
        "the upload failed, only the first put counts"
    );
    let (_, got) = client.get_all(&key("t")).await.unwrap();
    assert_eq!(got, old);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn every_messages_app_metadata_comes_back_byte_for_byte() {
    let server = TestServer::start().await;
    let batches = numbered_batches(3, 10);
    let mut upload = messages(FlightDescriptor::new_cmd("t"), &batches);
    upload[0] = tagged(upload[0].clone(), b"on the schema");
    upload[1] = tagged(upload[1].clone(), b"\x00\xff binary");
    // upload[2] stays untagged: empty stays empty.
    upload[3] = tagged(upload[3].clone(), b"last");
    // app_metadata alone, between two batches and at the end (pyarrow's write_metadata).
    let alone = |tag| FlightData {
        app_metadata: Bytes::from_static(tag),
        ..Default::default()
    };
    upload.insert(2, alone(b"between"));
    upload.push(alone(b"at the end"));
    let results = put(&server, upload.clone()).await;
    let echoes: Vec<_> = results.iter().map(|r| r.app_metadata.clone()).collect();
    let sent_tags: Vec<_> = upload
        .iter()
        .map(|m| m.app_metadata.clone())
        .filter(|tag| !tag.is_empty())
        .collect();
    assert_eq!(echoes, sent_tags, "one echo per tagged message, in order");

    // Every message of the table comes back with its own app_metadata. Messages of
    // app_metadata alone were acknowledged but are not part of the table: Arrow C++ readers
    // (pyarrow's read_all) end the stream at one.
    let got = get_messages(&server, "t").await;
    let got_tags: Vec<_> = got.iter().map(|m| m.app_metadata.clone()).collect();
    let sent: Vec<_> = upload
        .iter()
        .filter(|m| !m.data_header.is_empty())
        .map(|m| m.app_metadata.clone())
        .collect();
    assert_eq!(got_tags, sent, "every message's app_metadata, in place");
    // The table itself is unchanged by it.
    let (_, table) = server.client().await.get_all(&key("t")).await.unwrap();
    assert_eq!(table, batches);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_resplit_giant_batch_keeps_its_tag_on_the_first_piece() {
    let server = TestServer::start().await;
    let n = 2_000_000; // 16 MB of i64 in one message, re-split into ~2 MiB pieces
    let batch = RecordBatch::try_from_iter([(
        "id",
        std::sync::Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
    )])
    .unwrap();
    let mut upload = messages(
        FlightDescriptor::new_cmd("giant"),
        std::slice::from_ref(&batch),
    );
    upload[1] = tagged(upload[1].clone(), b"giant");
    let results = put(&server, upload).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].app_metadata, Bytes::from_static(b"giant"));

    let got = get_messages(&server, "giant").await;
    assert!(got.len() > 3, "re-split into {} messages", got.len());
    let tags: Vec<_> = got.iter().map(|m| m.app_metadata.clone()).collect();
    assert_eq!(
        tags[1],
        Bytes::from_static(b"giant"),
        "the first piece keeps the tag"
    );
    assert!(
        tags[2..].iter().all(Bytes::is_empty),
        "later pieces carry none"
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn every_endpoint_names_the_server_and_its_ticket_works_there() {
    let (server, _) = TestServer::with_numbered_table("t", 2, 5).await;
    let expected = format!("grpc+tcp://{}", server.addr());
    let mut flight = server.flight_client().await;
    let info = flight
        .get_flight_info(FlightDescriptor::new_cmd("t"))
        .await
        .unwrap();
    let listed: Vec<FlightInfo> = flight
        .list_flights(Bytes::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let polled = flight
        .poll_flight_info(FlightDescriptor::new_cmd("t"))
        .await
        .unwrap()
        .info
        .unwrap();
    for info in [&info, &listed[0], &polled] {
        assert_eq!(info.endpoint.len(), 1);
        let locations: Vec<_> = info.endpoint[0]
            .location
            .iter()
            .map(|l| l.uri.as_str())
            .collect();
        assert_eq!(locations, [expected.as_str()]);
    }
    // Connect to the location, as a client that follows it does, and redeem the ticket.
    let uri = info.endpoint[0].location[0]
        .uri
        .replace("grpc+tcp://", "http://");
    let channel = tonic::transport::Endpoint::new(uri)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut there = arrow_flight::FlightClient::new(channel);
    let got: Vec<RecordBatch> = there
        .do_get(info.endpoint[0].ticket.clone().unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got, numbered_batches(2, 5));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn an_advertised_location_is_what_endpoints_name() {
    let advertised = "grpc+tcp://cache.example.com:8815";
    let server = TestServer::start_with(ServerConfig {
        advertise: Some(advertised.into()),
        ..ServerConfig::default()
    })
    .await;
    let mut client = server.client().await;
    client
        .put_batches(&key("t"), numbered_schema(), numbered_batches(1, 1))
        .await
        .unwrap();
    let info = server
        .flight_client()
        .await
        .get_flight_info(FlightDescriptor::new_cmd("t"))
        .await
        .unwrap();
    assert_eq!(info.endpoint[0].location[0].uri, advertised);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn poll_flight_info_of_a_cached_table_is_complete() {
    let (server, _) = TestServer::with_numbered_table("t", 3, 4).await;
    let mut flight = server.flight_client().await;
    let descriptor = FlightDescriptor::new_path(vec!["t".into()]);
    let poll = flight.poll_flight_info(descriptor.clone()).await.unwrap();
    assert_eq!(poll.progress, Some(1.0));
    assert_eq!(poll.flight_descriptor, None, "nothing left to poll for");
    assert_eq!(poll.expiration_time, None);
    let mut info = poll.info.expect("the table's FlightInfo");
    let mut direct = flight.get_flight_info(descriptor).await.unwrap();
    // Both carry the table's metadata, whose idle time moves on between the calls.
    assert!(!info.app_metadata.is_empty());
    info.app_metadata = Bytes::new();
    direct.app_metadata = Bytes::new();
    assert_eq!(info, direct);
    assert_eq!(info.total_records, 12);

    let err = flight
        .poll_flight_info(FlightDescriptor::new_cmd("missing"))
        .await
        .unwrap_err();
    let status = status(err);
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("`missing`"),
        "{}",
        status.message()
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn cancel_flight_info_of_a_cached_table_is_not_cancellable() {
    let (server, mut client) = TestServer::with_numbered_table("t", 1, 4).await;
    let mut flight = server.flight_client().await;
    let info = flight
        .get_flight_info(FlightDescriptor::new_cmd("t"))
        .await
        .unwrap();
    let result = flight
        .cancel_flight_info(CancelFlightInfoRequest::new(info))
        .await
        .unwrap();
    assert_eq!(result.status(), CancelStatus::NotCancellable);
    // The table is untouched.
    assert_eq!(client.info(&key("t")).await.unwrap().rows, 4);

    let unknown = FlightInfo::new().with_descriptor(FlightDescriptor::new_cmd("missing"));
    let err = flight
        .cancel_flight_info(CancelFlightInfoRequest::new(unknown))
        .await
        .unwrap_err();
    let status = status(err);
    assert_eq!(status.code(), Code::NotFound);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn path_descriptors_with_empty_segments_name_keys_with_empty_parts() {
    let server = TestServer::start().await;
    let batches = numbered_batches(1, 3);
    for (path, name) in [(vec!["", "x"], "/x"), (vec!["a", "", "b"], "a//b")] {
        let path = path.into_iter().map(String::from).collect();
        let results = put(
            &server,
            messages(FlightDescriptor::new_path(path), &batches),
        )
        .await;
        let summary = PutSummary::from_app_metadata(&results[0].app_metadata).unwrap();
        assert_eq!(summary.key, name);
        let (_, got) = server.client().await.get_all(&key(name)).await.unwrap();
        assert_eq!(got, batches, "{name}");
    }
    // A CMD put of `/y` is the table a PATH descriptor ["", "y"] names.
    put(&server, messages(FlightDescriptor::new_cmd("/y"), &batches)).await;
    let info = server
        .flight_client()
        .await
        .get_flight_info(FlightDescriptor::new_path(vec!["".into(), "y".into()]))
        .await
        .unwrap();
    assert_eq!(info.total_records, 3);
    server.shutdown_and_wait().await;
}
