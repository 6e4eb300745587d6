//! Every RPC: what it answers, and the exact gRPC code of each error.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch};
use arrow_flight::{Action, Criteria, FlightDescriptor, Ticket};
use bytes::Bytes;
use flightcache::protocol::actions::{CacheAction, ClearResult, DropResult, StoreStats};
use flightcache::{Error, ServerConfig};
use futures::{StreamExt, TryStreamExt};
use tonic::Code;

use crate::common::{
    TestServer, key, large_batches, listed_keys, numbered_batches, numbered_schema, status,
};

#[tokio::test]
async fn get_unknown_key_is_not_found_naming_the_key() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    let err = flight
        .do_get(Ticket::new("nope"))
        .await
        .expect_err("do_get fails");
    let status = status(err);
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("`nope`"), "{}", status.message());

    let err = server.client().await.get(&key("nope")).await.err().unwrap();
    assert!(matches!(err, Error::TableNotFound { key } if key.as_str() == "nope"));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn info_and_schema_of_unknown_key_are_not_found() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    let descriptor = FlightDescriptor::new_cmd("missing");
    let err = status(
        flight
            .get_flight_info(descriptor.clone())
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("`missing`"));
    let err = status(flight.get_schema(descriptor).await.unwrap_err());
    assert_eq!(err.code(), Code::NotFound);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn flight_info_describes_the_table_and_its_ticket_works() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let batches = numbered_batches(3, 100);
    let put = client
        .put_batches(&key("t"), numbered_schema(), batches.clone())
        .await
        .unwrap();
    assert_eq!((put.key.as_str(), put.rows, put.batches), ("t", 300, 3));
    assert!(put.bytes > 300 * 8, "bytes {} too small", put.bytes);

    let mut flight = server.flight_client().await;
    let info = flight
        .get_flight_info(FlightDescriptor::new_cmd("t"))
        .await
        .unwrap();
    assert_eq!(info.total_records, 300);
    assert_eq!(info.total_bytes as u64, put.bytes);
    assert_eq!(
        info.clone().try_decode_schema().unwrap(),
        *numbered_schema()
    );
    assert_eq!(info.endpoint.len(), 1);
    let ticket = info.endpoint[0]
        .ticket
        .clone()
        .expect("endpoint has a ticket");
    assert_eq!(&ticket.ticket[..], b"t");
    let got: Vec<_> = flight
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got, batches);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn path_and_cmd_descriptors_name_the_same_table() {
    let (server, _) = TestServer::with_numbered_table("nyc/trips", 1, 5).await;
    let mut flight = server.flight_client().await;
    let by_path = FlightDescriptor::new_path(vec!["nyc".into(), "trips".into()]);
    let info = flight.get_flight_info(by_path.clone()).await.unwrap();
    assert_eq!(info.total_records, 5);
    assert_eq!(info.flight_descriptor, Some(by_path.clone()));
    assert_eq!(
        flight.get_schema(by_path).await.unwrap(),
        *numbered_schema()
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn list_flights_lists_every_key_or_those_with_a_prefix() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for name in ["b/2", "a", "b/1"] {
        client
            .put_batches(&key(name), numbered_schema(), numbered_batches(1, 3))
            .await
            .unwrap();
    }
    assert_eq!(listed_keys(&mut client, "").await, ["a", "b/1", "b/2"]);
    assert_eq!(listed_keys(&mut client, "b/").await, ["b/1", "b/2"]);
    assert!(client.list("zzz").await.unwrap().is_empty());

    let mut flight = server.flight_client().await;
    let infos: Vec<_> = flight
        .list_flights(Bytes::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(infos.len(), 3);
    assert!(infos.iter().all(|i| i.total_records == 3));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn list_flights_with_non_utf8_criteria_is_invalid() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    let criteria = Criteria {
        expression: Bytes::from_static(&[0xff]),
    };
    let err = flight.inner_mut().list_flights(criteria).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn drop_removes_one_table_and_reports_it() {
    let (server, mut client) = TestServer::with_numbered_table("keep", 1, 2).await;
    let put = client
        .put_batches(&key("gone"), numbered_schema(), numbered_batches(2, 2))
        .await
        .unwrap();
    let dropped = client.drop_table(&key("gone")).await.unwrap();
    assert_eq!(
        dropped,
        DropResult {
            key: "gone".into(),
            rows: 4,
            bytes: put.bytes
        }
    );
    assert!(matches!(
        client.get(&key("gone")).await,
        Err(Error::TableNotFound { .. })
    ));
    assert!(client.get(&key("keep")).await.is_ok());

    let err = client.drop_table(&key("gone")).await.unwrap_err();
    assert!(matches!(err, Error::TableNotFound { key } if key.as_str() == "gone"));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn clear_removes_every_table() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for name in ["x", "y"] {
        client
            .put_batches(&key(name), numbered_schema(), numbered_batches(1, 2))
            .await
            .unwrap();
    }
    assert_eq!(client.clear().await.unwrap(), ClearResult { tables: 2 });
    assert!(client.list("").await.unwrap().is_empty());
    assert_eq!(client.clear().await.unwrap(), ClearResult { tables: 0 });
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn stats_count_tables_rows_and_requests() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let a = client
        .put_batches(&key("a"), numbered_schema(), numbered_batches(1, 10))
        .await
        .unwrap();
    let b = client
        .put_batches(&key("b"), numbered_schema(), numbered_batches(2, 10))
        .await
        .unwrap();
    client.get_all(&key("a")).await.unwrap();
    assert!(client.get(&key("missing")).await.is_err());
    let stats = client.stats().await.unwrap();
    assert!(
        stats.memory_tables >= a.bytes + b.bytes,
        "the tables' memory is counted: {stats:?}"
    );
    assert_eq!(stats.memory_used, stats.memory_tables);
    assert_eq!(
        stats,
        StoreStats {
            tables: 2,
            rows: 30,
            bytes: a.bytes + b.bytes,
            puts: 2,
            gets: 1,
            errors: 1,
            freed_bytes: 0,
            memory_budget: 0, // ServerConfig::default() sets no budget
            memory_used: stats.memory_used,
            memory_tables: stats.memory_tables,
            memory_uploads: 0,
            memory_overhead: 0,
            evictions: 0,
            expirations: 0,
            rejected_uploads: 0,
            disk_tables: 0, // no data directory
            disk_bytes: 0,
            disk_queued: 0,
            disk_write_failures: 0,
            trimmed_rows: 0,
            pressure_trims: 0,
        }
    );
    server.shutdown_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn stats_show_freed_table_memory_until_the_reuse_window_gives_it_back() {
    // The paused clock jumps ahead whenever the runtime waits for the network, at most to the
    // pool's next release check (every 500 ms): a long window leaves room for the RPCs.
    let window = std::time::Duration::from_secs(60);
    let server = TestServer::start_with(ServerConfig {
        keep_freed: window,
        ..ServerConfig::default()
    })
    .await;
    let mut client = server.client().await;
    // 8 MiB: large enough to be kept in slabs rather than on the heap.
    let values = Float64Array::from_iter_values((0..1 << 20).map(f64::from));
    let batch = RecordBatch::try_from_iter([("x", Arc::new(values) as ArrayRef)]).unwrap();
    client
        .put_batches(&key("big"), batch.schema(), vec![batch])
        .await
        .unwrap();
    assert_eq!(
        client.stats().await.unwrap().freed_bytes,
        0,
        "nothing freed yet"
    );

    client.drop_table(&key("big")).await.unwrap();
    let freed = client.stats().await.unwrap().freed_bytes;
    assert!(
        freed >= 8 << 20,
        "the dropped table's memory is kept for reuse: {freed}"
    );
    tokio::time::sleep(window + std::time::Duration::from_secs(1)).await;
    assert_eq!(
        client.stats().await.unwrap().freed_bytes,
        0,
        "given back once the window passed"
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn unknown_action_is_invalid_and_lists_the_valid_ones() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    let err = status(
        flight
            .do_action(Action::new("flushall", ""))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("flushall"), "{}", err.message());
    for name in ["drop", "clear", "stats"] {
        assert!(err.message().contains(name), "{}", err.message());
    }
    let err = status(
        flight
            .do_action(Action::new("drop", ""))
            .await
            .err()
            .unwrap(),
    );
    assert_eq!(err.code(), Code::InvalidArgument, "drop without a key");
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn list_actions_names_what_do_action_handles() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    let actions: Vec<_> = flight
        .list_actions()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<_> = actions.iter().map(|a| a.r#type.as_str()).collect();
    assert_eq!(
        names,
        [
            "drop",
            "clear",
            "stats",
            "expire",
            "persist",
            "ttl",
            "retain",
            "whoami",
            "CancelFlightInfo",
            "RenewFlightEndpoint",
            "CreatePreparedStatement",
            "ClosePreparedStatement"
        ]
    );
    assert!(actions.iter().all(|a| !a.description.is_empty()));
    for action in actions {
        let body = match action.r#type.as_str() {
            "drop" | "persist" | "ttl" => Bytes::from_static(b"absent"),
            "expire" => Bytes::from_static(br#"{"key": "absent", "seconds": 5}"#),
            "retain" => Bytes::from_static(br#"{"key": "absent", "max_rows": 5}"#),
            "RenewFlightEndpoint" => {
                CacheAction::RenewFlightEndpoint {
                    key: key("absent"),
                    endpoint: arrow_flight::FlightEndpoint::new()
                        .with_ticket(key("absent").to_ticket()),
                }
                .to_action()
                .body
            }
            "CancelFlightInfo" => {
                CacheAction::CancelFlightInfo(key("absent"))
                    .to_action()
                    .body
            }
            "CreatePreparedStatement" => {
                use arrow_flight::sql::{ActionCreatePreparedStatementRequest, ProstMessageExt};
                use prost::Message;
                ActionCreatePreparedStatementRequest {
                    query: "SELECT 1".into(),
                    transaction_id: None,
                }
                .as_any()
                .encode_to_vec()
                .into()
            }
            "ClosePreparedStatement" => continue, // needs a handle: tests/flight/sql.rs
            _ => Bytes::new(),
        };
        let result = flight
            .do_action(Action::new(action.r#type.clone(), body))
            .await;
        let code = result.err().map(|e| status(e).code());
        assert!(
            code.is_none() || code == Some(Code::NotFound),
            "`{}` is advertised but answered {code:?}",
            action.r#type
        );
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn do_exchange_is_unimplemented_and_named() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    // An open server has nothing to check: its handshake succeeds with an empty token, so
    // clients that always shake hands first keep working.
    let token = flight.handshake(Bytes::from_static(b"hi")).await.unwrap();
    assert!(token.is_empty());
    let err = flight
        .do_exchange(futures::stream::empty())
        .await
        .expect_err("do_exchange fails");
    let err = status(err);
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("do_exchange"));
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn empty_and_non_utf8_tickets_are_invalid() {
    let server = TestServer::start().await;
    let mut flight = server.flight_client().await;
    for ticket in [Bytes::new(), Bytes::from_static(&[0xc3, 0x28])] {
        let err = status(flight.do_get(Ticket { ticket }).await.err().unwrap());
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_get_in_progress_survives_drop_and_replace() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // Larger than the HTTP/2 windows: the server is still sending when the table goes.
    let (schema, batches) = large_batches(64);
    client
        .put_batches(&key("t"), Arc::clone(&schema), batches.clone())
        .await
        .unwrap();
    let mut stream = client.clone().get(&key("t")).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    client.drop_table(&key("t")).await.unwrap();
    client
        .put_batches(&key("t"), schema, large_batches(1).1)
        .await
        .unwrap();
    let mut got = vec![first];
    got.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    assert_eq!(got, batches);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn shutdown_waits_for_a_get_in_flight() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    // Larger than the HTTP/2 windows: the server is still sending when it is asked to stop.
    let (schema, batches) = large_batches(64);
    client
        .put_batches(&key("t"), schema, batches.clone())
        .await
        .unwrap();
    let mut stream = client.get(&key("t")).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    let shutdown = tokio::spawn(server.shutdown_and_wait());
    let mut got = vec![first];
    got.extend(stream.try_collect::<Vec<_>>().await.unwrap());
    assert_eq!(got, batches);
    shutdown.await.unwrap();
}

#[tokio::test]
async fn many_gets_on_one_connection_send_no_empty_data_frames() {
    // h2 (0.4.20 on) closes a connection with ENHANCE_YOUR_CALM after 100 empty, non-final
    // DATA frames from its peer; a get that sent one per message (a schema has no body)
    // broke a client's connection on its 100th get of a table.
    let (server, mut client) = TestServer::with_numbered_table("t", 2, 5).await;
    for _ in 0..150 {
        let (_, batches) = client.get_all(&key("t")).await.unwrap();
        assert_eq!(batches.len(), 2);
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn many_empty_answers_on_one_connection_keep_it_open() {
    // An empty listing is trailers alone, not an empty DATA frame (see above).
    let server = TestServer::start().await;
    let mut client = server.client().await;
    for _ in 0..150 {
        assert!(client.list("").await.unwrap().is_empty());
    }
    server.shutdown_and_wait().await;
}
