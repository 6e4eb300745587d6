//! Shared test fixture: a real server on 127.0.0.1:0, real clients, and table builders.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod arrow_client;
pub mod ipc;
pub mod types;

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::FlightClient;
use flightcache::{CacheClient, EmbeddedServer, ServerConfig, TableKey};
use tonic::transport::Channel;

/// A flightcache server for one test.
pub struct TestServer {
    server: EmbeddedServer,
}

impl TestServer {
    /// Start a server with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    /// Start a server with `config`.
    pub async fn start_with(config: ServerConfig) -> Self {
        let server = EmbeddedServer::start(config).await.expect("server starts");
        Self { server }
    }

    /// A server with the default configuration holding `numbered_batches(batches, rows)`
    /// under `name`, and the client that put it there.
    pub async fn with_numbered_table(
        name: &str,
        batches: usize,
        rows: usize,
    ) -> (Self, CacheClient) {
        let server = Self::start().await;
        let mut client = server.client().await;
        client
            .put_batches(
                &key(name),
                numbered_schema(),
                numbered_batches(batches, rows),
            )
            .await
            .expect("the table is put");
        (server, client)
    }

    /// Start a server with `config` on `addr`: started again where an earlier one was.
    pub async fn start_on(addr: std::net::SocketAddr, config: ServerConfig) -> Self {
        let server = EmbeddedServer::start_on(addr, config)
            .await
            .expect("server starts");
        Self { server }
    }

    /// Start a server with `config` that also serves metrics ([`metrics_addr`](Self::metrics_addr)).
    pub async fn start_with_metrics(config: ServerConfig) -> Self {
        let server = EmbeddedServer::start_with_metrics(config)
            .await
            .expect("server starts");
        Self { server }
    }

    /// What came back from the server's data directory at start, if it has one.
    pub fn restored(&self) -> Option<flightcache::RestoreReport> {
        self.server.restored()
    }

    /// Where the server serves metrics, if it was started with them.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.metrics_addr()
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A connected `CacheClient`.
    pub async fn client(&self) -> CacheClient {
        CacheClient::connect(&self.url())
            .await
            .expect("client connects")
    }

    /// A connected plain arrow-flight client, for requests `CacheClient` never sends.
    pub async fn flight_client(&self) -> FlightClient {
        let channel = Channel::from_shared(format!("http://{}", self.server.addr()))
            .unwrap()
            .connect()
            .await
            .expect("channel connects");
        FlightClient::new(channel)
    }

    /// Stop the server and assert that it exited cleanly.
    pub async fn shutdown_and_wait(self) {
        self.server
            .shutdown_and_wait()
            .await
            .expect("server exits cleanly");
    }
}

/// An hour: the idle timeouts of a [`quiet`] server.
pub const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

/// `config` without timers that a paused clock could jump to while real sockets are busy
/// (keep-alive pings, and idle timeouts of an hour or more): in tests on tokio's paused clock,
/// time then passes only when the test advances it or the server waits on purpose.
pub fn quiet(config: ServerConfig) -> ServerConfig {
    ServerConfig {
        keepalive_interval: None,
        idle_connection_timeout: 2 * HOUR,
        request_idle_timeout: HOUR,
        ..config
    }
}

/// A key, for tests.
pub fn key(name: &str) -> TableKey {
    TableKey::try_new(name).unwrap()
}

/// The keys `client` lists under `prefix`, in order.
pub async fn listed_keys(client: &mut flightcache::CacheClient, prefix: &str) -> Vec<String> {
    client
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.key.to_string())
        .collect()
}

/// The gRPC status a Flight call failed with (panics on any other failure).
pub fn status(err: arrow_flight::error::FlightError) -> tonic::Status {
    match err {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

/// Send `messages` as one do_put and return the status the server refused it with (panics if
/// the upload succeeds).
pub async fn put_raw(
    server: &TestServer,
    messages: Vec<arrow_flight::FlightData>,
) -> tonic::Status {
    use futures::TryStreamExt;
    let mut flight = server.flight_client().await;
    let result = match flight
        .do_put(futures::stream::iter(messages.into_iter().map(Ok)))
        .await
    {
        Ok(results) => results.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Err(err) => status(err),
        Ok(()) => panic!("expected the put to be refused, but it succeeded"),
    }
}

/// Schema of [`numbered_batches`].
pub fn numbered_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Utf8, true),
    ]))
}

/// `count` batches of `rows` rows whose `id` runs 0.. across batches, so order is checkable.
pub fn numbered_batches(count: usize, rows: usize) -> Vec<RecordBatch> {
    (0..count)
        .map(|b| {
            let start = (b * rows) as i64;
            let ids: Vec<i64> = (start..start + rows as i64).collect();
            let labels: Vec<Option<String>> = ids
                .iter()
                .map(|i| (i % 3 != 0).then(|| format!("row {i}")))
                .collect();
            RecordBatch::try_new(
                numbered_schema(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(labels)),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// A batch of `rows` rows with every value of `id` equal to `value`.
pub fn constant_batch(value: i64, rows: usize) -> RecordBatch {
    RecordBatch::try_new(
        numbered_schema(),
        vec![
            Arc::new(Int64Array::from(vec![value; rows])),
            Arc::new(StringArray::from(vec![Some("x"); rows])),
        ],
    )
    .unwrap()
}

/// Put `batches` under a fresh key, get them back, and assert schema (with metadata) and
/// batches are identical.
pub async fn roundtrip(batches: Vec<RecordBatch>) {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let schema = batches[0].schema();
    let key = key("roundtrip");
    let summary = client
        .put_batches(&key, Arc::clone(&schema), batches.clone())
        .await
        .expect("put succeeds");
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(summary.rows, rows as u64);
    let (got_schema, got) = client.get_all(&key).await.expect("get succeeds");
    assert_eq!(got_schema, schema, "schema differs after the round trip");
    assert_eq!(got.len(), batches.len(), "batch count differs");
    for (i, (want, got)) in batches.iter().zip(&got).enumerate() {
        assert_eq!(got, want, "batch {i} differs after the round trip");
    }
    assert_eq!(
        client.schema(&key).await.unwrap(),
        schema,
        "get_schema differs"
    );
    assert_eq!(
        client.info(&key).await.unwrap().schema,
        schema,
        "FlightInfo schema differs"
    );
    server.shutdown_and_wait().await;
}

/// Send one raw gRPC request over a fresh HTTP/2 connection to `addr`: `path`, the gRPC
/// headers with `headers` replacing or adding to them, and `body` as the request's bytes.
/// Returns the gRPC status the server answered with, and the messages' bytes before it.
///
/// For requests no Flight client sends: malformed messages, compressed or non-gRPC requests.
pub async fn raw_grpc_call(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&'static str, &'static str)],
    body: Vec<u8>,
) -> (tonic::Status, Vec<u8>) {
    use tonic::codegen::http;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    let request_headers = request.headers_mut();
    request_headers.insert("content-type", "application/grpc".parse().unwrap());
    request_headers.insert("te", "trailers".parse().unwrap());
    for (name, value) in headers {
        request_headers.insert(*name, value.parse().unwrap());
    }
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let (parts, mut body) = response.await.unwrap().into_parts();
    if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
        return (status, Vec::new()); // trailers-only: the status is in the headers
    }
    let mut received = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        body.flow_control().release_capacity(data.len()).unwrap();
        received.extend_from_slice(&data);
    }
    let trailers = body
        .trailers()
        .await
        .unwrap()
        .expect("a gRPC response ends in trailers");
    let status = tonic::Status::from_header_map(&trailers).expect("the trailers carry a status");
    (status, received)
}

/// About `mib` MiB of float64 in 1 MiB batches, batch `i` holding the value `i`. At 64 MiB it
/// is four times the HTTP/2 stream window (16 MiB) and twice the connection window (32 MiB):
/// a get of it is still sending, long after its client has read the first batch.
pub fn large_batches(mib: usize) -> (SchemaRef, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Float64, false)]));
    let batches = (0..mib)
        .map(|i| {
            let values = Float64Array::from(vec![i as f64; 1 << 17]);
            RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(values)]).unwrap()
        })
        .collect();
    (schema, batches)
}
