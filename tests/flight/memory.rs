//! The memory budget, eviction, times to live and metrics, over real gRPC (the store's own
//! tests cover the same rules without the network, on a paused clock).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Float64Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow_flight::{Action, FlightEndpoint, RenewFlightEndpointRequest};
use bytes::Bytes;
use flightcache::protocol::actions::CacheAction;
use flightcache::{CacheClient, Error, Eviction, PutOptions, ServerConfig};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Code;

use crate::common::{
    TestServer, key, listed_keys, numbered_batches, numbered_schema, quiet, status,
};

const MIB: u64 = 1 << 20;

/// Put a small table under `name` that expires `ttl` after it is stored.
async fn put_with_ttl(client: &mut CacheClient, name: &str, ttl: Duration) {
    let options = PutOptions {
        ttl: Some(ttl),
        ..PutOptions::default()
    };
    client
        .put_with(
            &key(name),
            numbered_schema(),
            futures::stream::iter(numbered_batches(1, 5)).map(Ok),
            &options,
        )
        .await
        .unwrap();
}

fn budget(mib: u64, eviction: Eviction) -> ServerConfig {
    ServerConfig {
        max_memory: Some(mib * MIB),
        eviction,
        ..ServerConfig::default()
    }
}

/// About `mib` MiB of float64 in 1 MiB batches, every value `version`, so a read can tell
/// which upload it got.
fn versioned(version: f64, mib: usize) -> (SchemaRef, Vec<RecordBatch>) {
    let batches: Vec<RecordBatch> = (0..mib)
        .map(|_| {
            let values = Float64Array::from(vec![version; (MIB / 8) as usize]);
            RecordBatch::try_from_iter([("v", Arc::new(values) as _)]).unwrap()
        })
        .collect();
    (batches[0].schema(), batches)
}

async fn put_version(
    client: &mut CacheClient,
    name: &str,
    version: f64,
    mib: usize,
) -> Result<(), Error> {
    let (schema, batches) = versioned(version, mib);
    client
        .put_batches(&key(name), schema, batches)
        .await
        .map(|_| ())
}

/// A field is charged as its bytes arrive, not as it is declared: a message whose metadata
/// field claims 500 MiB and brings 1 KiB costs 1 KiB, evicts nothing, and fails as truncated.
#[tokio::test]
async fn a_declared_field_length_costs_nothing_before_its_bytes_arrive() {
    let server = TestServer::start_with(budget(32, Eviction::Lru)).await;
    let mut client = server.client().await;
    put_version(&mut client, "kept", 1.0, 20).await.unwrap();
    let descriptor = arrow_flight::FlightDescriptor::new_cmd("liar").encode_to_vec();
    let claimed: usize = 500 << 20;
    let mut message = vec![0x0a]; // field 1: the descriptor
    prost::encoding::encode_varint(descriptor.len() as u64, &mut message);
    message.extend_from_slice(&descriptor);
    message.push(0x1a); // field 3: app_metadata, claiming 500 MiB
    prost::encoding::encode_varint(claimed as u64, &mut message);
    let declared = message.len() + claimed;
    message.extend_from_slice(&[7u8; 1024]);
    let mut body = vec![0];
    body.extend_from_slice(&(declared as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let (status, _) = crate::common::raw_grpc_call(
        server.addr(),
        "/arrow.flight.protocol.FlightService/DoPut",
        &[],
        body,
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.evictions, 0);
    assert_eq!(listed_keys(&mut client, "").await, ["kept"]);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn an_upload_that_never_fits_fails_with_resource_exhausted_before_it_ends() {
    let server = TestServer::start_with(budget(32, Eviction::Lru)).await;
    let mut client = server.client().await;
    put_version(&mut client, "endless", 1.0, 2).await.unwrap();
    // An upload that would never end: the budget refuses it while it is still sending.
    let (schema, batches) = versioned(2.0, 1);
    let endless = futures::stream::iter(batches).cycle().map(Ok);
    // Bounded, so that a regression fails instead of uploading forever.
    let err = tokio::time::timeout(
        Duration::from_secs(120),
        client.put(&key("endless"), schema, endless),
    )
    .await
    .expect("refused while it is still sending")
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("--max-memory") && message.contains("32.00 MiB"),
        "{message}"
    );
    let (_, kept) = client.get_all(&key("endless")).await.unwrap();
    let values = kept[0]
        .column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(values.value(0), 1.0, "the old table is untouched");
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.rejected_uploads, 1);
    assert_eq!(stats.memory_uploads, 0);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn noeviction_refuses_a_put_that_does_not_fit_and_keeps_every_table() {
    let server = TestServer::start_with(budget(24, Eviction::NoEviction)).await;
    let mut client = server.client().await;
    put_version(&mut client, "a", 1.0, 8).await.unwrap();
    put_version(&mut client, "b", 1.0, 8).await.unwrap();
    let err = put_version(&mut client, "a", 2.0, 12).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.to_string().contains("noeviction"), "{err}");
    assert_eq!(listed_keys(&mut client, "").await, ["a", "b"]);
    let (_, a) = client.get_all(&key("a")).await.unwrap();
    assert_eq!(
        a.iter().map(RecordBatch::num_rows).sum::<usize>(),
        8 * (MIB / 8) as usize
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn concurrent_uploads_stay_within_the_budget_and_every_read_is_one_whole_version() {
    let budget_bytes = 48 * MIB;
    let server = TestServer::start_with(budget(48, Eviction::Lru)).await;
    let mut uploads = Vec::new();
    for i in 0..8 {
        let url = server.url();
        uploads.push(tokio::spawn(async move {
            let mut client = CacheClient::connect(&url).await.unwrap();
            let mut outcomes = Vec::new();
            for round in 0..3 {
                let version = f64::from(i * 10 + round);
                let name = format!("k{}", i % 4);
                outcomes.push(
                    put_version(&mut client, &name, version, 6)
                        .await
                        .map_err(|e| e.code()),
                );
            }
            outcomes
        }));
    }
    // Meanwhile, the budget holds and every table read is one complete upload.
    let mut client = server.client().await;
    let mut samples = 0;
    while !uploads.iter().all(|u| u.is_finished()) {
        let stats = client.stats().await.unwrap();
        assert!(stats.memory_used <= budget_bytes, "{stats:?}");
        for k in 0..4 {
            match client.get_all(&key(&format!("k{k}"))).await {
                Ok((_, batches)) => {
                    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                    assert_eq!(rows, 6 * (MIB / 8) as usize, "a whole table");
                    let first = batches[0]
                        .column(0)
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .unwrap()
                        .value(0);
                    for batch in &batches {
                        let values = batch
                            .column(0)
                            .as_any()
                            .downcast_ref::<Float64Array>()
                            .unwrap();
                        assert!(
                            values.iter().all(|v| v == Some(first)),
                            "one version, never a mix"
                        );
                    }
                }
                Err(Error::TableNotFound { .. }) => {}
                Err(other) => panic!("a get may only find one whole version or nothing: {other}"),
            }
        }
        samples += 1;
    }
    let mut stored = 0;
    for upload in uploads {
        for outcome in upload.await.unwrap() {
            match outcome {
                Ok(()) => stored += 1,
                Err(code) => assert_eq!(code, Code::ResourceExhausted),
            }
        }
    }
    assert!(stored >= 8, "most uploads fit: {stored} of 24");
    let stats = client.stats().await.unwrap();
    assert!(stats.memory_used <= budget_bytes, "{stats:?}");
    assert!(
        stats.memory_tables >= stats.bytes,
        "tables' memory is counted: {stats:?}"
    );
    assert_eq!(stats.memory_uploads, 0);
    assert!(samples > 0);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_get_started_before_its_table_is_evicted_receives_all_of_it() {
    // 64 MiB tables, larger than the HTTP/2 windows: the get is still sending when its table
    // is evicted, and its memory stays held (and counted) until it ends.
    let server = TestServer::start_with(budget(160, Eviction::Lru)).await;
    let mut client = server.client().await;
    put_version(&mut client, "read", 7.0, 64).await.unwrap();
    let mut reading = client.get(&key("read")).await.unwrap();
    let first = reading.next().await.unwrap().unwrap();
    let mut writer = server.client().await;
    put_version(&mut writer, "b", 1.0, 64).await.unwrap();
    put_version(&mut writer, "c", 1.0, 64).await.unwrap();
    assert!(
        matches!(
            writer.info(&key("read")).await,
            Err(Error::TableNotFound { .. })
        ),
        "evicted"
    );
    assert!(writer.stats().await.unwrap().evictions >= 1);
    let rest: Vec<RecordBatch> = reading.try_collect().await.unwrap();
    let rows = first.num_rows() + rest.iter().map(RecordBatch::num_rows).sum::<usize>();
    assert_eq!(
        rows,
        64 * (MIB / 8) as usize,
        "the whole table, though it was evicted"
    );
    for batch in std::iter::once(&first).chain(&rest) {
        let values = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert!(values.iter().all(|v| v == Some(7.0)));
    }
    server.shutdown_and_wait().await;
}

/// From its deadline on, an expired key is served by no RPC and no action, and is listed by
/// none (on the paused clock: one second after its 10 s time to live).
#[tokio::test(start_paused = true)]
async fn an_expired_key_is_served_by_no_rpc() {
    let server = TestServer::start_with(quiet(ServerConfig::default())).await;
    let mut client = server.client().await;
    put_with_ttl(&mut client, "t", Duration::from_secs(10)).await;
    let mut flight = server.flight_client().await;
    let endpoint = flight
        .get_flight_info(key("t").to_descriptor())
        .await
        .unwrap()
        .endpoint[0]
        .clone();
    tokio::time::advance(Duration::from_secs(11)).await;

    let descriptor = key("t").to_descriptor();
    let not_found = |err: arrow_flight::error::FlightError| status(err).code() == Code::NotFound;
    assert!(not_found(
        flight.do_get(key("t").to_ticket()).await.unwrap_err()
    ));
    assert!(not_found(
        flight
            .get_flight_info(descriptor.clone())
            .await
            .unwrap_err()
    ));
    assert!(not_found(
        flight.get_schema(descriptor.clone()).await.unwrap_err()
    ));
    assert!(not_found(
        flight.poll_flight_info(descriptor).await.unwrap_err()
    ));
    let renew = RenewFlightEndpointRequest {
        endpoint: Some(endpoint),
    };
    let renewed = flight
        .do_action(Action::new("RenewFlightEndpoint", renew.encode_to_vec()))
        .await;
    assert!(not_found(
        renewed.err().expect("renewing an expired key fails")
    ));
    for action in [
        CacheAction::Ttl(key("t")),
        CacheAction::Persist(key("t")),
        CacheAction::Drop(key("t")),
        CacheAction::Expire {
            key: key("t"),
            ttl: Duration::from_secs(5),
        },
    ] {
        let answer = flight.do_action(action.to_action()).await;
        let err = answer
            .err()
            .unwrap_or_else(|| panic!("{action:?} succeeded"));
        assert!(not_found(err), "{action:?}");
    }
    assert!(listed_keys(&mut client, "").await.is_empty());
    server.shutdown_and_wait().await;
}

/// A put with a time to live has a deadline that info, list, `ttl`, `expire` and `persist` show
/// and change (its expiry itself: `an_expired_key_is_served_by_no_rpc`, on the paused clock).
#[tokio::test]
async fn a_ttl_deadline_is_shown_by_info_and_changed_by_expire_and_persist() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let before = SystemTime::now();
    put_with_ttl(&mut client, "t", Duration::from_secs(600)).await;
    let info = client.info(&key("t")).await.unwrap();
    let ttl = info.ttl.expect("a time to live");
    assert!(
        ttl <= Duration::from_secs(600) && ttl > Duration::from_secs(590),
        "{ttl:?}"
    );
    let expires = info.expires_at.expect("expiration_time on the endpoint");
    let from_now = expires.duration_since(before).unwrap();
    assert!(
        from_now >= Duration::from_secs(599) && from_now <= Duration::from_secs(601),
        "{from_now:?}"
    );
    assert!(info.idle.is_some());
    let listed = client.list("").await.unwrap();
    assert!(listed[0].ttl.is_some() && listed[0].expires_at.is_some());

    let ttl = client.ttl(&key("t")).await.unwrap();
    assert!(ttl.ttl_seconds.unwrap() > 590.0);
    let expire = client
        .expire(&key("t"), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(expire.ttl_seconds.unwrap() <= 30.0);
    assert!(client.persist(&key("t")).await.unwrap().had_ttl);
    assert_eq!(client.ttl(&key("t")).await.unwrap().ttl_seconds, None);
    let info = client.info(&key("t")).await.unwrap();
    assert_eq!((info.ttl, info.expires_at), (None, None));
    for missing in [
        client.ttl(&key("missing")).await.unwrap_err(),
        client.persist(&key("missing")).await.unwrap_err(),
        client
            .expire(&key("missing"), Duration::from_secs(1))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(missing, Error::TableNotFound { .. }), "{missing}");
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_bad_ttl_header_is_refused_before_anything_is_stored() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    for bad in ["0", "-5", "soon", "1e40"] {
        flight.add_header("x-flightcache-ttl", bad).unwrap();
        let messages = flightcache::protocol::encode::encode_stream(
            &numbered_schema(),
            Some(key("t").to_descriptor()),
            futures::stream::iter(numbered_batches(1, 3)).map(Ok::<_, flightcache::Error>),
        )
        .map_err(|e| arrow_flight::error::FlightError::ExternalError(Box::new(e)));
        let err = match flight.do_put(messages).await {
            Ok(results) => results.try_collect::<Vec<_>>().await.unwrap_err(),
            Err(err) => err,
        };
        let status = status(err);
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}");
        assert!(
            status.message().contains("x-flightcache-ttl"),
            "{}",
            status.message()
        );
    }
    let mut client = server.client().await;
    assert!(client.list("").await.unwrap().is_empty());
    server.shutdown_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn renew_flight_endpoint_extends_a_key_by_its_ttl() {
    let server = TestServer::start_with(quiet(ServerConfig::default())).await;
    let mut client = server.client().await;
    put_with_ttl(&mut client, "t", Duration::from_secs(100)).await;
    client
        .expire(&key("t"), Duration::from_secs(100))
        .await
        .unwrap();
    let mut flight = server.flight_client().await;
    let info = flight
        .get_flight_info(key("t").to_descriptor())
        .await
        .unwrap();
    let endpoint = info.endpoint[0].clone();
    let before = SystemTime::try_from(endpoint.expiration_time.unwrap()).unwrap();
    tokio::time::advance(Duration::from_secs(50)).await;
    let left = client.ttl(&key("t")).await.unwrap().ttl_seconds.unwrap();
    assert!(left <= 50.0, "half the time to live is gone: {left}");
    let request = RenewFlightEndpointRequest {
        endpoint: Some(endpoint.clone()),
    };
    let results: Vec<Bytes> = flight
        .do_action(Action::new("RenewFlightEndpoint", request.encode_to_vec()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let renewed = FlightEndpoint::decode(&results[0][..]).unwrap();
    assert_eq!(
        (&renewed.ticket, &renewed.location),
        (&endpoint.ticket, &endpoint.location)
    );
    // The endpoint's expiration is wall-clock time, which the paused clock does not move: the
    // renewed one is no earlier than the first, and the time left is whole again.
    let after = SystemTime::try_from(renewed.expiration_time.unwrap()).unwrap();
    assert!(after >= before, "{before:?} -> {after:?}");
    let ttl = client.ttl(&key("t")).await.unwrap().ttl_seconds.unwrap();
    assert!(ttl > 99.0, "the full time to live again: {ttl}");

    let absent = CacheAction::RenewFlightEndpoint {
        key: key("absent"),
        endpoint: FlightEndpoint::new().with_ticket(key("absent").to_ticket()),
    };
    let Err(err) = flight.do_action(absent.to_action()).await else {
        panic!("renewing an absent key succeeded")
    };
    let status = status(err);
    assert_eq!(status.code(), Code::NotFound);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn the_metrics_endpoint_serves_the_stats_in_the_prometheus_format() {
    let server = TestServer::start_with_metrics(budget(64, Eviction::Lru)).await;
    let mut client = server.client().await;
    put_version(&mut client, "a", 1.0, 2).await.unwrap();
    client.get_all(&key("a")).await.unwrap();
    let page = http_get(server.metrics_addr().unwrap(), "/metrics").await;
    let stats = client.stats().await.unwrap();
    for line in [
        "# TYPE flightcache_tables gauge".to_string(),
        "flightcache_tables 1".to_string(),
        format!("flightcache_memory_budget_bytes {}", 64 * MIB),
        format!("flightcache_table_bytes {}", stats.bytes),
        format!(
            "flightcache_memory_held_bytes{{by=\"tables\"}} {}",
            stats.memory_tables
        ),
        "# TYPE flightcache_puts_total counter".to_string(),
        "flightcache_puts_total 1".to_string(),
        "flightcache_gets_total 1".to_string(),
        "flightcache_evictions_total 0".to_string(),
        "flightcache_rejected_uploads_total 0".to_string(),
    ] {
        assert!(
            page.lines().any(|l| l == line),
            "no line `{line}` in:\n{page}"
        );
    }
    server.shutdown_and_wait().await;
}

/// GET `path` from `addr` with hyper's HTTP/1.1 client; the body, after checking the status.
pub(crate) async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()[hyper::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}
