//! Users, tokens, rights and TLS over real gRPC, through `CacheClient` and a plain
//! arrow-flight client: every door refuses a caller without credentials (UNAUTHENTICATED) or
//! without the right (PERMISSION_DENIED), before it looks the key up.

use std::time::Duration;

use arrow_flight::{Action, FlightDescriptor, Ticket};
use bytes::Bytes;
use flightcache::auth::users::{Users, hash_password, new_token};
use flightcache::bench::certificates::CertificateAuthority;
use flightcache::client::ClientTls;
use flightcache::protocol::credentials::Credentials;
use flightcache::server::tls::ServerTls;
use flightcache::{CacheClient, ClientConfig, Error, ServerConfig};
use futures::{StreamExt, TryStreamExt};
use tonic::Code;

use crate::common::{
    HOUR, TestServer, key, listed_keys, numbered_batches, numbered_schema, quiet, status,
};

/// Users for these tests, and the API token of `ci`.
struct Fixture {
    users: Users,
    ci_token: String,
}

fn fixture() -> Fixture {
    let (ci_token, ci_digest) = new_token();
    let hash = |password: &str| hash_password(password).unwrap();
    let text = format!(
        r#"
        [users.admin]
        password = "{admin}"
        read = ["*"]
        write = ["*"]
        admin = true

        [users.alice]
        password = "{alice}"
        read = ["team-a/*", "shared/*"]
        write = ["team-a/*"]

        [users.reader]
        password = "{reader}"
        read = ["*"]

        [users.ci]
        tokens = ["{ci_digest}"]
        read = ["shared/*"]
        "#,
        admin = hash("admin-pw"),
        alice = hash("alice-pw"),
        reader = hash("reader-pw"),
    );
    Fixture {
        users: Users::parse(&text).unwrap(),
        ci_token,
    }
}

fn config(users: Users) -> ServerConfig {
    ServerConfig {
        users: Some(users),
        ..ServerConfig::default()
    }
}

async fn login(server: &TestServer, user: &str, password: &str) -> Result<CacheClient, Error> {
    let config = ClientConfig {
        credentials: Some(Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }),
        ..ClientConfig::default()
    };
    CacheClient::connect_with(&server.url(), &config).await
}

async fn with_token(server: &TestServer, token: &str) -> CacheClient {
    let config = ClientConfig {
        credentials: Some(Credentials::Bearer(token.into())),
        ..ClientConfig::default()
    };
    CacheClient::connect_with(&server.url(), &config)
        .await
        .unwrap()
}

async fn put(client: &mut CacheClient, name: &str) -> Result<(), Error> {
    client
        .put_batches(&key(name), numbered_schema(), numbered_batches(1, 3))
        .await
        .map(|_| ())
}

fn code<T: std::fmt::Debug>(result: Result<T, Error>) -> Code {
    result.unwrap_err().code()
}

#[tokio::test]
async fn every_rpc_without_credentials_is_unauthenticated() {
    let server = TestServer::start_with(config(fixture().users)).await;
    let mut flight = server.flight_client().await;
    let status = |err| status(err).code();
    let descriptor = FlightDescriptor::new_cmd("t");
    assert_eq!(
        status(
            flight
                .get_flight_info(descriptor.clone())
                .await
                .unwrap_err()
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        status(
            flight
                .poll_flight_info(descriptor.clone())
                .await
                .unwrap_err()
        ),
        Code::Unauthenticated
    );
    assert_eq!(
        status(flight.get_schema(descriptor).await.unwrap_err()),
        Code::Unauthenticated
    );
    assert_eq!(
        status(flight.do_get(Ticket::new("t")).await.unwrap_err()),
        Code::Unauthenticated
    );
    let Err(err) = flight.do_action(Action::new("stats", "")).await else {
        panic!()
    };
    assert_eq!(status(err), Code::Unauthenticated);
    let Err(err) = flight.list_actions().await else {
        panic!()
    };
    assert_eq!(status(err), Code::Unauthenticated);
    let Err(err) = flight.list_flights(Bytes::new()).await else {
        panic!()
    };
    assert_eq!(status(err), Code::Unauthenticated);
    let mut anonymous = server.client().await;
    let err = put(&mut anonymous, "t").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.to_string().contains("authenticate_basic_token"),
        "{err}"
    );
    // A forged bearer token is no better.
    let mut forged = with_token(&server, "fct_not-a-real-token").await;
    let err = forged.list("").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.to_string().contains("bearer token is unknown"), "{err}");
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_password_login_gets_a_bearer_token_and_a_wrong_one_is_refused() {
    let server = TestServer::start_with(config(fixture().users)).await;
    let mut alice = login(&server, "alice", "alice-pw").await.unwrap();
    put(&mut alice, "team-a/t").await.unwrap();
    let (_, batches) = alice.get_all(&key("team-a/t")).await.unwrap();
    assert_eq!(batches.len(), 1);
    let me = alice.whoami().await.unwrap();
    assert_eq!(
        (me.user.as_deref(), me.proof.as_str()),
        (Some("alice"), "password")
    );
    assert_eq!(me.write, ["team-a/*"]);
    assert!(!me.admin);
    for (user, password) in [("alice", "wrong"), ("nobody", "alice-pw"), ("ci", "")] {
        let err = login(&server, user, password).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{user}");
        assert!(
            err.to_string().contains("wrong user name or password"),
            "{err}"
        );
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn rights_limit_each_user_to_its_keys_without_revealing_others() {
    let f = fixture();
    let server = TestServer::start_with(config(f.users)).await;
    let mut admin = login(&server, "admin", "admin-pw").await.unwrap();
    for name in ["team-a/1", "team-b/secret", "shared/s"] {
        put(&mut admin, name).await.unwrap();
    }
    let mut alice = login(&server, "alice", "alice-pw").await.unwrap();
    assert_eq!(
        listed_keys(&mut alice, "").await,
        ["shared/s", "team-a/1"],
        "only what she may read"
    );
    // Outside her patterns: PERMISSION_DENIED whether the key exists or not.
    for name in ["team-b/secret", "team-b/absent"] {
        assert_eq!(
            code(alice.get_all(&key(name)).await),
            Code::PermissionDenied,
            "{name}"
        );
        assert_eq!(
            code(alice.info(&key(name)).await),
            Code::PermissionDenied,
            "{name}"
        );
        assert_eq!(
            code(alice.schema(&key(name)).await),
            Code::PermissionDenied,
            "{name}"
        );
        assert_eq!(
            code(alice.drop_table(&key(name)).await),
            Code::PermissionDenied,
            "{name}"
        );
        assert_eq!(
            code(alice.ttl(&key(name)).await),
            Code::PermissionDenied,
            "{name}"
        );
    }
    // A handcrafted ticket is still a key she may not read.
    let mut raw = alice.clone();
    let Err(err) = raw
        .flight_client()
        .do_get(Ticket::new("team-b/secret"))
        .await
    else {
        panic!()
    };
    let err = status(err);
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("may not read `team-b/secret`"),
        "{err:?}"
    );
    // She reads shared keys but may not write them, nor clear or read stats.
    alice.get_all(&key("shared/s")).await.unwrap();
    let err = put(&mut alice, "shared/s").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.to_string().contains("may not write `shared/s`"),
        "{err}"
    );
    assert_eq!(code(alice.clear().await), Code::PermissionDenied);
    assert_eq!(code(alice.stats().await), Code::PermissionDenied);
    assert_eq!(
        code(alice.expire(&key("shared/s"), Duration::from_secs(5)).await),
        Code::PermissionDenied
    );

    let mut reader = login(&server, "reader", "reader-pw").await.unwrap();
    assert_eq!(reader.list("").await.unwrap().len(), 3);
    assert_eq!(
        code(put(&mut reader, "team-a/x").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(reader.drop_table(&key("team-a/1")).await),
        Code::PermissionDenied
    );
    assert_eq!(code(reader.clear().await), Code::PermissionDenied);

    let mut ci = with_token(&server, &f.ci_token).await;
    assert_eq!(ci.whoami().await.unwrap().proof, "token");
    ci.get_all(&key("shared/s")).await.unwrap();
    assert_eq!(
        code(ci.get_all(&key("team-a/1")).await),
        Code::PermissionDenied
    );

    assert_eq!(admin.clear().await.unwrap().tables, 3);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn an_upload_without_the_write_right_charges_and_evicts_nothing() {
    const MIB: usize = 1 << 20;
    let server = TestServer::start_with(ServerConfig {
        max_memory: Some(32 * MIB as u64),
        ..config(fixture().users)
    })
    .await;
    let mut admin = login(&server, "admin", "admin-pw").await.unwrap();
    let batch = |mib: usize| {
        let values = arrow::array::Float64Array::from(vec![1.0; mib * MIB / 8]);
        arrow::array::RecordBatch::try_from_iter([("v", std::sync::Arc::new(values) as _)]).unwrap()
    };
    let kept = (0..20).map(|_| batch(1)).collect::<Vec<_>>();
    admin
        .put_batches(&key("team-b/kept"), kept[0].schema(), kept)
        .await
        .unwrap();
    // A first message that carries a 24 MiB body under someone else's key: refused before the
    // body is received, so the budget never has to make room for it.
    for (user, password, expected) in [
        ("alice", "alice-pw", "may not write `team-b/x`"),
        ("reader", "reader-pw", "may not write any key"),
    ] {
        let mut caller = login(&server, user, password).await.unwrap();
        let message = arrow_flight::FlightData {
            flight_descriptor: Some(FlightDescriptor::new_cmd("team-b/x")),
            data_header: Bytes::from_static(b"not even a header"),
            data_body: Bytes::from(vec![7u8; 24 * MIB]),
            ..Default::default()
        };
        let result = caller
            .flight_client()
            .do_put(futures::stream::iter([Ok(message)]))
            .await;
        let err = match result {
            Err(err) => err.to_string(),
            Ok(stream) => stream
                .try_collect::<Vec<_>>()
                .await
                .unwrap_err()
                .to_string(),
        };
        assert!(err.contains(expected), "{user}: {err}");
    }
    let stats = admin.stats().await.unwrap();
    assert_eq!(stats.evictions, 0);
    assert_eq!(stats.tables, 1);
    server.shutdown_and_wait().await;
}

/// A stranger's request is refused from its headers, before its body is read: one that
/// declares a 4 MiB message and never sends it is answered UNAUTHENTICATED at once, not after
/// the server waited out its idle timeout (an hour here, on the paused clock) for the body.
#[tokio::test(start_paused = true)]
async fn a_strangers_request_is_refused_before_its_body_is_read() {
    use tonic::codegen::http;
    let server = TestServer::start_with(quiet(config(fixture().users))).await;
    for rpc in ["GetFlightInfo", "DoAction", "DoGet", "DoPut"] {
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let (mut h2, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(connection);
        let path = format!("/arrow.flight.protocol.FlightService/{rpc}");
        let mut request = http::Request::post(format!("http://{}{path}", server.addr()))
            .body(())
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        let start = tokio::time::Instant::now();
        let (response, mut send) = h2.send_request(request, false).unwrap();
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&((4u32 << 20) - 1).to_be_bytes());
        send.send_data(prefix.into(), false).unwrap();
        let (parts, mut body) = response.await.unwrap().into_parts();
        let status = match tonic::Status::from_header_map(&parts.headers) {
            Some(status) => status, // trailers-only
            None => {
                while body.data().await.is_some() {}
                let trailers = body.trailers().await.unwrap().unwrap();
                tonic::Status::from_header_map(&trailers).unwrap()
            }
        };
        assert_eq!(status.code(), Code::Unauthenticated, "{rpc}: {status:?}");
        assert!(
            start.elapsed() < HOUR,
            "{rpc} waited {:?} for a body",
            start.elapsed()
        );
        drop(send);
    }
    server.shutdown_and_wait().await;
}

/// A session token from a password sign-in, taken from the Handshake as pyarrow's
/// `authenticate_basic_token` takes it.
async fn session_token(server: &TestServer, user: &str, password: &str) -> String {
    let mut flight = server.flight_client().await;
    let basic = Credentials::Basic {
        user: user.into(),
        password: password.into(),
    };
    flight
        .add_header("authorization", &basic.to_header())
        .unwrap();
    let payload = flight.handshake(Bytes::new()).await.unwrap();
    String::from_utf8(payload.to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn session_tokens_expire_after_the_token_ttl() {
    let server = TestServer::start_with(ServerConfig {
        token_ttl: Duration::from_secs(600),
        // The clock jumps past the TTL: the connection itself stays open across the jump.
        ..quiet(config(fixture().users))
    })
    .await;
    let token = session_token(&server, "alice", "alice-pw").await;
    let mut alice = with_token(&server, &token).await;
    alice.list("").await.unwrap();
    let debug = format!("{alice:?}");
    assert!(!debug.contains(&token), "the token is kept out of {debug}");
    tokio::time::advance(Duration::from_secs(601)).await;
    let err = alice.list("").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    server.shutdown_and_wait().await;
}

/// `serve --test-clock` lets an admin, and no one else, move the clock that keys' and
/// sessions' times to live run on: what the pyarrow tests use instead of sleeping. On the real
/// clock: nothing here waits.
#[tokio::test]
async fn an_admin_moves_a_test_servers_clock_and_times_to_live_run_out() {
    let server = TestServer::start_with(ServerConfig {
        token_ttl: Duration::from_secs(600),
        test_clock: true,
        ..quiet(config(fixture().users))
    })
    .await;
    let advance = |seconds: f64| {
        let body = format!("{{\"seconds\": {seconds}}}");
        Action::new("advance-clock", body)
    };
    let admin_token = session_token(&server, "admin", "admin-pw").await;
    let mut admin = server.flight_client().await;
    admin
        .add_header("authorization", &format!("Bearer {admin_token}"))
        .unwrap();
    let listed: Vec<_> = admin
        .list_actions()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        listed.iter().any(|a| a.r#type == "advance-clock"),
        "{listed:?}"
    );

    // A key with 10 minutes to live, and a reader's session of 10 minutes.
    let mut writer = with_token(&server, &admin_token).await;
    let options = flightcache::PutOptions {
        ttl: Some(Duration::from_secs(600)),
        ..flightcache::PutOptions::default()
    };
    writer
        .put_with(
            &key("brief"),
            numbered_schema(),
            futures::stream::iter(numbered_batches(1, 5)).map(Ok),
            &options,
        )
        .await
        .unwrap();
    let reader_token = session_token(&server, "reader", "reader-pw").await;
    let mut reader = with_token(&server, &reader_token).await;
    let left = reader
        .ttl(&key("brief"))
        .await
        .unwrap()
        .ttl_seconds
        .unwrap();
    assert!(left > 590.0, "{left}");

    // Only an admin moves the clock.
    let mut reader_flight = server.flight_client().await;
    reader_flight
        .add_header("authorization", &format!("Bearer {reader_token}"))
        .unwrap();
    let refused = reader_flight.do_action(advance(601.0)).await.err().unwrap();
    assert_eq!(status(refused).code(), Code::PermissionDenied);
    assert!(reader.info(&key("brief")).await.is_ok(), "nothing moved");
    for bad in ["0", "-5", "\"soon\""] {
        let body = format!("{{\"seconds\": {bad}}}");
        let err = admin
            .do_action(Action::new("advance-clock", body))
            .await
            .err()
            .unwrap();
        assert_eq!(status(err).code(), Code::InvalidArgument, "{bad}");
    }

    // 5 minutes on: both still live, with 5 minutes less to live.
    let answer: Vec<_> = admin
        .do_action(advance(300.0))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let moved: serde_json::Value = serde_json::from_slice(&answer[0]).unwrap();
    assert_eq!(moved["skipped_seconds"], 300.0);
    let left = reader
        .ttl(&key("brief"))
        .await
        .unwrap()
        .ttl_seconds
        .unwrap();
    assert!((290.0..=300.0).contains(&left), "{left}");

    // Past both deadlines: the key is gone (and swept: stats count it), the sessions over.
    admin
        .do_action(advance(301.0))
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let err = reader.info(&key("brief")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
    let mut writer = with_token(&server, &session_token(&server, "admin", "admin-pw").await).await;
    let err = writer.info(&key("brief")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let stats = writer.stats().await.unwrap();
    assert_eq!(
        (stats.tables, stats.expirations),
        (0, 1),
        "removed as the clock moved"
    );
    server.shutdown_and_wait().await;

    // A server started without --test-clock neither lists nor takes it.
    let server = TestServer::start_with(quiet(ServerConfig::default())).await;
    let mut flight = server.flight_client().await;
    let listed: Vec<_> = flight
        .list_actions()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(
        listed.iter().all(|a| a.r#type != "advance-clock"),
        "{listed:?}"
    );
    let err = flight.do_action(advance(60.0)).await.err().unwrap();
    let err = status(err);
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("--test-clock"), "{}", err.message());
    server.shutdown_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_signed_in_with_a_password_signs_in_again_before_its_session_ends() {
    let server = TestServer::start_with(ServerConfig {
        token_ttl: Duration::from_secs(600),
        ..quiet(config(fixture().users))
    })
    .await;
    let mut alice = login(&server, "alice", "alice-pw").await.unwrap();
    put(&mut alice, "team-a/before").await.unwrap();
    let mut clone = alice.clone();
    // Past the first session's end. An upload cannot be sent twice, so this one succeeds
    // only because the client signed in again before it (the Handshake said when).
    tokio::time::advance(Duration::from_secs(601)).await;
    put(&mut alice, "team-a/after").await.unwrap();
    assert_eq!(
        listed_keys(&mut alice, "team-a/").await,
        ["team-a/after", "team-a/before"]
    );
    // A clone keeps the credentials too, and signs in on its own.
    put(&mut clone, "team-a/clone").await.unwrap();
    // A client given only a token has nothing to sign in with.
    let token = session_token(&server, "alice", "alice-pw").await;
    let mut bearer = with_token(&server, &token).await;
    tokio::time::advance(Duration::from_secs(601)).await;
    assert_eq!(code(bearer.list("").await), Code::Unauthenticated);
    alice.list("").await.unwrap();
    server.shutdown_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn a_client_signed_in_with_a_password_signs_in_again_when_the_server_forgot_its_session() {
    let users = fixture().users;
    let server = TestServer::start_with(quiet(config(users.clone()))).await;
    let addr = server.addr();
    let mut reader = login(&server, "alice", "alice-pw").await.unwrap();
    let mut writer = login(&server, "alice", "alice-pw").await.unwrap();
    put(&mut writer, "team-a/t").await.unwrap();
    let token = session_token(&server, "alice", "alice-pw").await;
    let mut bearer = with_token(&server, &token).await;
    server.shutdown_and_wait().await;

    // Started again on the same port, the server knows none of the old sessions.
    let server = TestServer::start_on(addr, quiet(config(users))).await;
    // The first call after the restart may find the old connection closed (UNAVAILABLE);
    // the channel then connects again.
    let after_restart = async |client: &mut CacheClient| match client.list("").await {
        Err(err) if err.code() == Code::Unavailable => client.list("").await,
        result => result,
    };
    assert_eq!(
        code(after_restart(&mut bearer).await),
        Code::Unauthenticated
    );
    // A read is signed in again and asked once more.
    let tables = after_restart(&mut reader).await.unwrap();
    assert!(tables.is_empty(), "a new, empty cache: {tables:?}");
    // An upload cannot be sent twice: the first is refused, and the next call signs in first.
    let first = match put(&mut writer, "team-a/t").await {
        Err(err) if err.code() == Code::Unavailable => put(&mut writer, "team-a/t").await,
        result => result,
    };
    assert_eq!(code(first), Code::Unauthenticated);
    put(&mut writer, "team-a/t").await.unwrap();
    writer.drop_table(&key("team-a/t")).await.unwrap();
    server.shutdown_and_wait().await;
}

#[tokio::test(start_paused = true)]
async fn failed_logins_are_answered_ever_more_slowly() {
    let server = TestServer::start_with(quiet(config(fixture().users))).await;
    // Forgetting credentials is not a guess: answered at once, however often.
    let mut anonymous = server.client().await;
    for _ in 0..3 {
        let start = tokio::time::Instant::now();
        assert_eq!(
            anonymous.list("").await.unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
    // Wrong passwords for a user name are, and each waits twice as long as the last.
    let mut waits = Vec::new();
    for _ in 0..3 {
        let start = tokio::time::Instant::now();
        assert!(login(&server, "alice", "guess").await.is_err());
        waits.push(start.elapsed());
    }
    for (wait, at_least) in waits.iter().zip([100, 200, 400]) {
        assert!(*wait >= Duration::from_millis(at_least), "{waits:?}");
    }
    // Forged tokens count against the address, on their own.
    let mut forged = with_token(&server, "fct_a-guess").await;
    for at_least in [100, 200] {
        let start = tokio::time::Instant::now();
        let refused = forged.list("").await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(start.elapsed() >= Duration::from_millis(at_least));
    }
    // A sign-in of one's own does not reset the count, or an attacker with an account could
    // guess other passwords at full speed.
    login(&server, "alice", "alice-pw").await.unwrap();
    let start = tokio::time::Instant::now();
    assert!(login(&server, "alice", "guess").await.is_err());
    assert!(start.elapsed() >= Duration::from_millis(800));
    // Guesses sent in parallel are checked no faster than guesses sent in turn: one at a
    // time, each after the last one's delay (0.1, 0.2, 0.4 then 0.8 s).
    let start = tokio::time::Instant::now();
    let guesses = (0..4).map(|_| login(&server, "admin", "guess"));
    let answers = futures::future::join_all(guesses).await;
    assert!(answers.iter().all(Result::is_err));
    assert!(
        start.elapsed() >= Duration::from_millis(100 + 200 + 400 + 800),
        "{:?}",
        start.elapsed()
    );
    // Ten minutes after its last failure a user name and address start afresh.
    tokio::time::advance(Duration::from_secs(610)).await;
    let start = tokio::time::Instant::now();
    assert!(login(&server, "alice", "guess").await.is_err());
    assert!(start.elapsed() <= Duration::from_millis(100));
    server.shutdown_and_wait().await;
}

/// Behind NAT or a proxy, many users share an address: guessers there slow only their own
/// guesses. While twelve clients guess admin's password from 127.0.0.1, every sign-in of
/// alice and reader from 127.0.0.1 with the right password succeeds (each was refused with
/// "too many sign-ins from this address" while the throttle counted by address alone).
#[tokio::test(start_paused = true)]
async fn guessers_from_an_address_do_not_lock_out_its_other_users() {
    let server = TestServer::start_with(quiet(config(fixture().users))).await;
    let guessing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let guessers: Vec<_> = (0..12)
        .map(|n| {
            let (url, guessing) = (server.url(), std::sync::Arc::clone(&guessing));
            tokio::spawn(async move {
                let config = ClientConfig {
                    credentials: Some(Credentials::Basic {
                        user: "admin".into(),
                        password: format!("guess-{n}"),
                    }),
                    ..ClientConfig::default()
                };
                let mut refused = 0;
                while guessing.load(std::sync::atomic::Ordering::Relaxed) {
                    assert!(CacheClient::connect_with(&url, &config).await.is_err());
                    refused += 1;
                    // Those refused at once ("too many sign-ins waiting") try again soon.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                refused
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..4 {
        for (user, password) in [("alice", "alice-pw"), ("reader", "reader-pw")] {
            let start = tokio::time::Instant::now();
            let mut client = login(&server, user, password).await.unwrap();
            assert_eq!(client.whoami().await.unwrap().user.as_deref(), Some(user));
            eprintln!("{user} signed in after {:?}", start.elapsed());
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{:?}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    guessing.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut guesses = 0;
    for guesser in guessers {
        guesses += guesser.await.unwrap();
    }
    assert!(guesses >= 12, "the guessers guessed: {guesses}");
    // And admin's own sign-in waits out the guessers' streak, never locked out for good.
    login(&server, "admin", "admin-pw").await.unwrap();
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_server_without_users_lets_everyone_do_everything() {
    let server = TestServer::start().await;
    let mut client = login(&server, "anyone", "anything").await.unwrap();
    put(&mut client, "t").await.unwrap();
    let me = client.whoami().await.unwrap();
    assert_eq!((me.user, me.proof.as_str(), me.admin), (None, "open", true));
    server.shutdown_and_wait().await;
}

/// A CA, a server certificate for 127.0.0.1, and a TLS server with `client_ca` (mutual TLS).
struct Tls {
    ca: CertificateAuthority,
    server: TestServer,
}

async fn tls_server(mutual: bool, users: Option<Users>) -> Tls {
    let ca = CertificateAuthority::new("test CA").unwrap();
    let cert = ca.issue_server(&["127.0.0.1", "localhost"]).unwrap();
    let tls = ServerTls {
        cert_pem: cert.cert_pem.into_bytes(),
        key_pem: cert.key_pem.into_bytes(),
        client_ca_pem: mutual.then(|| ca.cert_pem().into_bytes()),
    };
    let server = TestServer::start_with(ServerConfig {
        tls: Some(tls),
        users,
        ..ServerConfig::default()
    })
    .await;
    assert!(server.url().starts_with("grpc+tls://"));
    Tls { ca, server }
}

fn tls_client(ca: &CertificateAuthority, identity: Option<(String, String)>) -> ClientConfig {
    ClientConfig {
        tls: ClientTls {
            ca_pem: Some(ca.cert_pem().into_bytes()),
            identity: identity.map(|(c, k)| (c.into_bytes(), k.into_bytes())),
            domain: None,
        },
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn tls_round_trips_with_the_servers_ca_and_refuses_without_it() {
    let Tls { ca, server } = tls_server(false, None).await;
    let mut client = CacheClient::connect_with(&server.url(), &tls_client(&ca, None))
        .await
        .unwrap();
    put(&mut client, "t").await.unwrap();
    let (_, batches) = client.get_all(&key("t")).await.unwrap();
    assert_eq!(batches[0].num_rows(), 3);
    // Another CA's trust does not reach this server; plaintext does not either.
    let stranger = CertificateAuthority::new("other CA").unwrap();
    let untrusted = CacheClient::connect_with(&server.url(), &tls_client(&stranger, None)).await;
    assert!(
        untrusted.is_err(),
        "a server signed by an unknown CA is refused"
    );
    let plain = server.url().replace("grpc+tls://", "grpc://");
    match CacheClient::connect(&plain).await {
        Err(_) => {}
        Ok(mut client) => assert!(client.list("").await.is_err(), "plaintext to a TLS port"),
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_ca_and_it_names_the_user() {
    let Tls { ca, server } = tls_server(true, Some(fixture().users)).await;
    let alice_cert = ca.issue_client("alice").unwrap();
    let mut alice = CacheClient::connect_with(
        &server.url(),
        &tls_client(&ca, Some((alice_cert.cert_pem, alice_cert.key_pem))),
    )
    .await
    .unwrap();
    let me = alice.whoami().await.unwrap();
    assert_eq!(
        (me.user.as_deref(), me.proof.as_str()),
        (Some("alice"), "certificate")
    );
    put(&mut alice, "team-a/t").await.unwrap();
    assert_eq!(
        code(put(&mut alice, "team-b/t").await),
        Code::PermissionDenied
    );

    // No client certificate: the TLS handshake fails, nothing is served.
    let without = match CacheClient::connect_with(&server.url(), &tls_client(&ca, None)).await {
        Err(err) => Err(err),
        Ok(mut client) => client.list("").await.map(|_| ()),
    };
    assert!(without.is_err(), "mutual TLS without a certificate");
    // A certificate from another CA, naming a real user: refused all the same.
    let stranger = CertificateAuthority::new("other CA").unwrap();
    let forged = stranger.issue_client("admin").unwrap();
    let wrong = match CacheClient::connect_with(
        &server.url(),
        &tls_client(&ca, Some((forged.cert_pem, forged.key_pem))),
    )
    .await
    {
        Err(err) => Err(err),
        Ok(mut client) => client.stats().await.map(|_| ()),
    };
    assert!(wrong.is_err(), "a certificate of another CA");
    // A certificate naming no user authenticates no one.
    let nobody = ca.issue_client("nobody").unwrap();
    let mut nobody = CacheClient::connect_with(
        &server.url(),
        &tls_client(&ca, Some((nobody.cert_pem, nobody.key_pem))),
    )
    .await
    .unwrap();
    assert_eq!(code(nobody.list("").await), Code::Unauthenticated);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn list_flights_filters_criteria_and_rights_together() {
    let server = TestServer::start_with(config(fixture().users)).await;
    let mut admin = login(&server, "admin", "admin-pw").await.unwrap();
    // shared/x is hers to read but outside the criteria; team-b/1 inside them but not hers.
    for name in ["team-a/1", "team-a/2", "team-b/1", "shared/x"] {
        put(&mut admin, name).await.unwrap();
    }
    let alice = login(&server, "alice", "alice-pw").await.unwrap();
    let mut flight = alice.clone();
    let infos: Vec<_> = flight
        .flight_client()
        .list_flights(Bytes::from_static(b"team-"))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let keys: Vec<_> = infos
        .iter()
        .map(|info| {
            String::from_utf8_lossy(&info.flight_descriptor.as_ref().unwrap().cmd).into_owned()
        })
        .collect();
    assert_eq!(keys, ["team-a/1", "team-a/2"]);
    server.shutdown_and_wait().await;
}

/// Trickling uploads cannot lock the other writers out: one user's uploads hold at most
/// `--max-puts-per-caller` (16) of the 64 slots, the rest wait a moment and are refused, and
/// another user's puts succeed meanwhile. (8 connections x 8 uploads of one user used to take
/// every slot, and every other writer was refused.)
#[tokio::test]
async fn one_users_uploads_leave_upload_slots_for_the_others() {
    use futures::SinkExt;
    let server = TestServer::start_with(quiet(config(fixture().users))).await;
    let token = session_token(&server, "admin", "admin-pw").await;
    let (mut senders, mut uploads) = (Vec::new(), Vec::new());
    for connection in 0..8 {
        let flight = server.flight_client().await;
        for n in 0..8 {
            let mut upload = flight.inner().clone();
            let name = format!("trickle-{connection}-{n}");
            let schema_message = crate::common::ipc::encode(
                FlightDescriptor::new_cmd(name),
                &numbered_batches(1, 1),
            )
            .swap_remove(0);
            let (mut tx, rx) = futures::channel::mpsc::channel(1);
            tx.send(schema_message).await.unwrap();
            senders.push(tx); // kept open: the upload sends nothing more
            let mut request = tonic::Request::new(rx);
            let bearer = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", bearer);
            uploads.push(tokio::spawn(async move {
                let mut results = upload.do_put(request).await?.into_inner();
                while results.message().await?.is_some() {}
                Ok::<_, tonic::Status>(())
            }));
        }
    }
    // Those past the user's share wait their moment (2 s) and are refused.
    let mut refused = 0;
    for _ in 0..1000 {
        refused = uploads.iter().filter(|u| u.is_finished()).count();
        if refused == 64 - 16 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if refused != 64 - 16 {
        let first = uploads.swap_remove(0).await.unwrap();
        panic!("{refused} uploads ended, one with {first:?}");
    }
    // Another user's puts find slots meanwhile.
    let mut alice = login(&server, "alice", "alice-pw").await.unwrap();
    for n in 0..14 {
        put(&mut alice, &format!("team-a/{n}")).await.unwrap();
    }
    let mut held = Vec::new();
    for upload in uploads {
        if upload.is_finished() {
            let status = upload.await.unwrap().unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status.message().contains("--max-puts-per-caller"),
                "{status:?}"
            );
        } else {
            held.push(upload);
        }
    }
    assert_eq!(held.len(), 16, "the user's share still uploading");
    drop(senders);
    for upload in held {
        upload.await.unwrap().unwrap();
    }
    server.shutdown_and_wait().await;
}

/// Flight SQL goes through the same doors: a statement reads only the keys its caller may
/// read (another key is "not found", as if it did not exist, and is not listed), a ticket or
/// prepared statement is bound to the caller it was issued to, and a caller without
/// credentials gets nothing.
#[tokio::test]
async fn flight_sql_reads_only_what_the_caller_may_read() {
    use arrow_flight::sql::CommandGetTables;
    use arrow_flight::sql::client::FlightSqlServiceClient;

    let server = TestServer::start_with(quiet(config(fixture().users))).await;
    let mut admin = login(&server, "admin", "admin-pw").await.unwrap();
    for name in ["team-a/x", "secret"] {
        admin
            .put_batches(&key(name), numbered_schema(), numbered_batches(1, 10))
            .await
            .unwrap();
    }
    let connect = async |user: Option<(&str, &str)>| {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = FlightSqlServiceClient::new(channel);
        if let Some((user, password)) = user {
            client.set_token(session_token(&server, user, password).await);
        }
        client
    };
    let mut alice = connect(Some(("alice", "alice-pw"))).await;
    let info = alice
        .execute(r#"SELECT count(*) FROM "team-a/x""#.into(), None)
        .await
        .expect("alice reads team-a/*");
    let err = alice
        .execute(r#"SELECT * FROM "secret""#.into(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
    let tables = alice
        .get_tables(CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: None,
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        })
        .await
        .unwrap();
    let ticket = tables.endpoint[0].ticket.clone().unwrap();
    let listed: Vec<_> = alice
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names = listed[0]
        .column(2)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap();
    assert_eq!(names.iter().flatten().collect::<Vec<_>>(), ["team-a/x"]);

    // Alice's ticket is hers: the reader (who may read everything) cannot redeem it.
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut reader = connect(Some(("reader", "reader-pw"))).await;
    let err = reader.do_get(ticket.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("not one this server issued to you"),
        "{err}"
    );
    let counted: Vec<_> = alice
        .do_get(ticket)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(counted[0].num_rows(), 1);

    // No credentials: UNAUTHENTICATED before any statement is looked at.
    let mut stranger = connect(None).await;
    let err = stranger.execute("SELECT 1".into(), None).await.unwrap_err();
    assert!(err.to_string().contains("not authenticated"), "{err}");
    server.shutdown_and_wait().await;
}
