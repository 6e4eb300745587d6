//! Limits that keep one client from holding the server hostage: silent uploads time out and
//! give their slot back, idle and dead connections are closed, connections and uploads per
//! connection are bounded. Time runs on tokio's paused clock: it jumps ahead whenever the
//! runtime waits, at most to the server's next timer (its freed-memory check, every 500 ms),
//! so the timeouts here are long against the few waits a request takes.

use std::time::Duration;

use arrow_flight::FlightData;
use flightcache::{Error, ServerConfig};
use futures::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::Code;

use crate::common::ipc::encode;
use crate::common::{TestServer, key, numbered_batches, numbered_schema};

/// Start an upload of `name` over a connection of its own and send only its schema; the
/// sender (to send the rest, or drop to end it) and the call's outcome.
async fn stalled_upload(
    server: &TestServer,
    name: &str,
) -> (
    futures::channel::mpsc::Sender<FlightData>,
    tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    let mut messages = encode(
        arrow_flight::FlightDescriptor::new_cmd(name.to_string()),
        &numbered_batches(1, 10),
    )
    .into_iter();
    let (mut tx, rx) = futures::channel::mpsc::channel::<FlightData>(8);
    let mut flight = server.flight_client().await;
    let call = tokio::spawn(async move {
        let mut results = flight.inner_mut().do_put(rx).await?.into_inner();
        while results.message().await?.is_some() {}
        Ok(())
    });
    tx.send(messages.next().unwrap()).await.unwrap();
    (tx, call)
}

/// Whether the server closes a connection on which `client` sits; waits at most `patience`
/// of (paused) time, and returns how long the server took.
async fn closed_within(mut socket: TcpStream, patience: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + patience, socket.read(&mut buffer)).await {
            Err(_) => return None,                                    // still open
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()), // closed
            Ok(Ok(_)) => continue,                                    // settings, pings: read on
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_upload_times_out_and_gives_its_slot_back() {
    let server = TestServer::start_with(ServerConfig {
        max_concurrent_puts: 1,
        request_idle_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    })
    .await;
    let started = Instant::now();
    let (_keep_open, stalled) = stalled_upload(&server, "stalled").await;

    // Once the stalled upload holds the one slot, another writer is refused. (Until its
    // request reaches the server, the other gets the slot: try again, a bounded number of
    // times.)
    let mut client = server.client().await;
    let mut refused = None;
    for _ in 0..100 {
        match client
            .put_batches(&key("other"), numbered_schema(), numbered_batches(1, 1))
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
    let refused = refused.expect("the stalled upload never held the slot");
    assert_eq!(refused.0, Code::ResourceExhausted, "{}", refused.1);

    // Silent for the timeout, the stalled upload is cancelled and stores nothing. (Bounded:
    // without a timeout, this would wait forever.)
    let status = tokio::time::timeout(Duration::from_secs(3600), stalled)
        .await
        .expect("the stalled upload was never cancelled")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--request-idle-timeout"),
        "{status:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(30));
    // Its slot is free again.
    client
        .put_batches(&key("other"), numbered_schema(), numbered_batches(1, 1))
        .await
        .unwrap();
    let names: Vec<_> = client
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert_eq!(names, [key("other")]);
    server.shutdown_and_wait().await;
}

/// The idle timeout alone (no minimum rate: `--min-upload-rate 0`).
#[tokio::test(start_paused = true)]
async fn an_upload_that_keeps_sending_is_not_timed_out() {
    let server = TestServer::start_with(ServerConfig {
        request_idle_timeout: Duration::from_secs(30),
        min_upload_rate: 0,
        ..ServerConfig::default()
    })
    .await;
    let (mut upload, call) = stalled_upload(&server, "slow").await;
    let more = encode(
        arrow_flight::FlightDescriptor::new_cmd("slow"),
        &numbered_batches(1, 10),
    );
    // A batch every 20 s, for a minute: never 30 s of silence.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        upload.send(more[1].clone()).await.unwrap();
    }
    drop(upload);
    call.await.unwrap().unwrap();
    let table = server.client().await.info(&key("slow")).await.unwrap();
    assert_eq!(table.rows, 30);
    server.shutdown_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_and_a_busy_one_is_not() {
    let server = TestServer::start_with(ServerConfig {
        idle_connection_timeout: Duration::from_secs(60),
        request_idle_timeout: Duration::from_secs(600),
        keepalive_interval: None,
        ..ServerConfig::default()
    })
    .await;
    // A connection that never sends a byte is idle from the start.
    let idle = TcpStream::connect(server.addr()).await.unwrap();
    let closed = closed_within(idle, Duration::from_secs(600)).await;
    let closed = closed.expect("the idle connection is closed");
    assert!(closed >= Duration::from_secs(60), "{closed:?}");

    // A connection with an upload in flight stays open past the timeout, and the upload
    // completes.
    let (upload, call) = stalled_upload(&server, "long").await;
    tokio::time::sleep(Duration::from_secs(180)).await;
    drop(upload);
    call.await.unwrap().unwrap();
    assert!(server.client().await.info(&key("long")).await.is_ok());
    server.shutdown_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let server = TestServer::start_with(ServerConfig {
        idle_connection_timeout: Duration::from_secs(3600),
        keepalive_interval: Some(Duration::from_secs(10)),
        keepalive_timeout: Duration::from_secs(5),
        ..ServerConfig::default()
    })
    .await;
    // An HTTP/2 peer that says hello, then never reads or answers again.
    let mut peer = TcpStream::connect(server.addr()).await.unwrap();
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    peer.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap(); // an empty SETTINGS frame
    let closed = closed_within(peer, Duration::from_secs(600)).await;
    let closed = closed.expect("the silent peer is dropped");
    assert!(
        (Duration::from_secs(10)..Duration::from_secs(60)).contains(&closed),
        "dropped by the pings (every 10 s, 5 s to answer), long before the idle timeout, and \
         not before the first ping: {closed:?}"
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let server = TestServer::start_with(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    })
    .await;
    let first = TcpStream::connect(server.addr()).await.unwrap();
    let second = TcpStream::connect(server.addr()).await.unwrap();
    // The third is accepted and closed: its first read ends.
    let mut third = TcpStream::connect(server.addr()).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), third.read(&mut buffer))
        .await
        .expect("the connection over the limit is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Once one closes, a client gets in.
    drop((first, second));
    let mut client = server.client().await;
    for _ in 0..500 {
        if client.stats().await.is_ok() {
            break;
        }
        // Not yet: the server has not seen the first two go. Wait for it, bounded.
        tokio::time::sleep(Duration::from_millis(10)).await;
        client = server.client().await;
    }
    client
        .put_batches(&key("t"), numbered_schema(), numbered_batches(1, 1))
        .await
        .unwrap();
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn one_connection_cannot_take_every_upload_slot() {
    let server = TestServer::start_with(ServerConfig {
        max_puts_per_connection: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut flight = server.flight_client().await;
    let mut same_connection = arrow_flight::FlightClient::new_from_inner(flight.inner().clone());
    let (mut tx, rx) = futures::channel::mpsc::channel::<FlightData>(8);
    let mut messages = encode(
        arrow_flight::FlightDescriptor::new_cmd("held"),
        &numbered_batches(1, 10),
    )
    .into_iter();
    let held = tokio::spawn(async move {
        let mut results = flight.inner_mut().do_put(rx).await?.into_inner();
        while results.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    });
    tx.send(messages.next().unwrap()).await.unwrap();

    let second = encode(
        arrow_flight::FlightDescriptor::new_cmd("second"),
        &numbered_batches(1, 1),
    );
    let mut refused = None;
    for _ in 0..500 {
        let result = async {
            let mut results = same_connection
                .inner_mut()
                .do_put(futures::stream::iter(second.clone()))
                .await?
                .into_inner();
            while results.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        }
        .await;
        match result {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await, // not yet started
        }
    }
    let refused = refused.expect("a second upload on the connection is refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-puts-per-connection"),
        "{refused:?}"
    );

    // Another connection uploads meanwhile.
    server
        .client()
        .await
        .put_batches(&key("elsewhere"), numbered_schema(), numbered_batches(1, 1))
        .await
        .unwrap();
    for message in messages {
        tx.send(message).await.unwrap();
    }
    drop(tx);
    held.await.unwrap().unwrap();
    server.shutdown_and_wait().await;
}

/// The metrics listener is guarded as the Flight port is: connections beyond its limit (64)
/// are closed at once, silent ones once their request headers are 10 s late, idle ones after
/// the idle connection timeout, and Flight answers throughout. (It kept every connection, idle or not, for ever: 1,500 of them under a file
/// limit of 256 made Flight calls time out.)
#[tokio::test(start_paused = true)]
async fn metrics_connections_are_limited_and_closed_when_idle() {
    let server = TestServer::start_with_metrics(ServerConfig {
        idle_connection_timeout: Duration::from_secs(60),
        keepalive_interval: None,
        ..ServerConfig::default()
    })
    .await;
    let metrics = server.metrics_addr().unwrap();
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(metrics).await.unwrap());
    }
    // Accepted in turn: once the 64 are, the next is closed at once.
    let mut over = None;
    for _ in 0..100 {
        let extra = TcpStream::connect(metrics).await.unwrap();
        if let Some(closed) = closed_within(extra, Duration::from_secs(1)).await {
            over = Some(closed);
            break;
        }
    }
    assert!(over.is_some(), "a connection over the limit is closed");
    let mut flight = server.client().await;
    flight.stats().await.unwrap();
    // Silent, the 64 are closed when their headers are late (10 s), and scrapes work again.
    let closed = futures::future::join_all(
        idle.into_iter()
            .map(|socket| closed_within(socket, Duration::from_secs(600))),
    )
    .await;
    for closed in closed {
        let closed = closed.expect("a silent metrics connection is closed");
        assert!(closed >= Duration::from_secs(10), "{closed:?}");
    }
    let page = crate::memory::http_get(metrics, "/metrics").await;
    assert!(page.contains("flightcache_tables"), "{page}");
    // A scraper's connection kept alive after its scrape is closed once idle.
    let mut scraper = TcpStream::connect(metrics).await.unwrap();
    scraper
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0u8; 1 << 16];
    let read = scraper.read(&mut response).await.unwrap();
    assert!(response[..read].starts_with(b"HTTP/1.1 200"), "{read}");
    let closed = closed_within(scraper, Duration::from_secs(600)).await;
    assert!(closed.is_some(), "an idle scraper's connection is closed");
    flight.stats().await.unwrap();
    server.shutdown_and_wait().await;
}

/// A connection may open at most 256 requests at once (HTTP/2's
/// `SETTINGS_MAX_CONCURRENT_STREAMS`): tonic's default set no limit, so one connection could
/// hold any number of requests waiting out their failure delays.
#[tokio::test]
async fn a_connection_may_open_256_requests_at_once() {
    let server = TestServer::start().await;
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let (h2, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = tonic::codegen::http::Request::post(format!(
        "http://{}/arrow.flight.protocol.FlightService/ListActions",
        server.addr()
    ))
    .header("content-type", "application/grpc")
    .body(())
    .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    send.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    response.await.unwrap(); // the server's settings came before its answer
    assert_eq!(h2.current_max_send_streams(), 256);
    server.shutdown_and_wait().await;
}

/// A stop waits `shutdown_timeout` for the calls in flight, then closes their connections: a
/// client that stopped reading a get cannot hold the server (tokio's paused clock moves the
/// time).
#[tokio::test(start_paused = true)]
async fn a_stop_closes_calls_still_in_flight_after_the_shutdown_timeout() {
    use futures::TryStreamExt;
    let config = ServerConfig {
        shutdown_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let (schema, batches) = crate::common::large_batches(64);
    let mut client = server.client().await;
    client
        .put_batches(&key("big"), schema, batches)
        .await
        .unwrap();
    let mut flight = server.flight_client().await;
    let mut stalled = flight.do_get(key("big").to_ticket()).await.unwrap();
    stalled.try_next().await.unwrap().expect("a first batch");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(300), server.shutdown_and_wait())
        .await
        .expect("the server stopped despite the stalled reader");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(60),
        "stopped after {waited:?}"
    );
    drop(stalled);
}
