//! Strangers cost nothing: requests without valid credentials, on every RPC, leave the
//! server's memory as it was however much they send, measured in the resident memory of a real
//! `flightcache serve` process.

use std::time::Duration;

use bytes::Bytes;
use tonic::codegen::http;

use super::{ServeProcess, temp_path};

/// Connections the strangers open, each sending on every RPC at once.
const CONNECTIONS: usize = 4;
/// What each stranger's request sends unless answered first: one and a half times the
/// server's stream window, so that a server that kept it would fill the window.
const SENT_PER_REQUEST: usize = 24 << 20;

/// Each RPC with the credentials a stranger sends on it: a wrong password on the Handshake,
/// an unknown token or none elsewhere.
const STRANGERS: [(&str, Option<&str>); 8] = [
    ("Handshake", Some("Basic YWxpY2U6d3Jvbmc=")), // alice:wrong
    ("DoExchange", Some("Bearer fct_unknown")),
    ("DoPut", Some("Bearer fct_unknown")),
    ("DoGet", None),
    ("DoAction", Some("Bearer fct_unknown")),
    ("GetFlightInfo", None),
    ("ListFlights", Some("Bearer fct_unknown")),
    ("GetSchema", None),
];

/// The resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> u64 {
    flightcache::bench::rss::rss_bytes(pid).expect("VmRSS in /proc/PID/status")
}

/// A server with one user, alice, whose password hash takes 1 MiB to check rather than
/// the 19 MiB of `flightcache hash-password`'s: the memory of the checks a wrong password
/// costs, which the server frees after each, would otherwise blur what is measured.
fn server_with_a_user(dir: &tempfile::TempDir) -> ServeProcess {
    use argon2::PasswordHasher;
    let params = argon2::Params::new(1024, 2, 1, None).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let hash = argon2.hash_password(b"alice-pw").unwrap();
    let users = temp_path(dir, "users.toml");
    std::fs::write(
        &users,
        format!("[users.alice]\npassword = \"{hash}\"\nread = [\"*\"]\n"),
    )
    .unwrap();
    ServeProcess::start_with(&["--users", users.to_str().unwrap()])
}

/// Over each of [`CONNECTIONS`] connections to `addr`, send each of `strangers`' requests
/// with up to `bytes` each; assert each is answered UNAUTHENTICATED.
async fn strangers_send(
    addr: &str,
    strangers: &[(&'static str, Option<&'static str>)],
    bytes: usize,
) {
    let url = format!("http://{addr}");
    let mut requests = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (h2, connection) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .unwrap();
        tokio::spawn(connection);
        for &(rpc, authorization) in strangers {
            let (h2, url) = (h2.clone(), url.clone());
            requests.push(tokio::spawn(async move {
                let code = send_until_answered(h2, &url, rpc, authorization, bytes).await;
                (rpc, code)
            }));
        }
    }
    for request in requests {
        let (rpc, code) = request.await.unwrap();
        assert_eq!(code, tonic::Code::Unauthenticated, "{rpc}");
    }
}

/// Send `rpc` with `authorization` over `h2`, and as many zero bytes as the server takes,
/// up to `bytes`, until it answers; the gRPC status it answers.
async fn send_until_answered(
    mut h2: h2::client::SendRequest<Bytes>,
    url: &str,
    rpc: &str,
    authorization: Option<&str>,
    bytes: usize,
) -> tonic::Code {
    let path = format!("/arrow.flight.protocol.FlightService/{rpc}");
    let mut request = http::Request::post(format!("{url}{path}"))
        .body(())
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("content-type", "application/grpc".parse().unwrap());
    headers.insert("te", "trailers".parse().unwrap());
    if let Some(authorization) = authorization {
        headers.insert("authorization", authorization.parse().unwrap());
    }
    let (response, mut send) = h2.send_request(request, false).unwrap();
    let sending = async move {
        // 64 KiB frames: with the server's largest, 1 MiB, its allocator keeps some of the
        // frames it freed for a while, which would blur what is held.
        let chunk = Bytes::from(vec![0u8; 64 << 10]);
        let mut sent = 0;
        while sent < bytes {
            send.reserve_capacity(chunk.len());
            match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(granted)) if granted > 0 => {
                    let granted = granted.min(bytes - sent);
                    if send.send_data(chunk.slice(..granted), false).is_err() {
                        return; // answered and reset
                    }
                    sent += granted;
                }
                Some(Ok(_)) => {}
                _ => return, // answered and reset
            }
        }
        send.send_data(Bytes::new(), true).ok();
    };
    let answer = async move {
        let (parts, mut body) = response.await.unwrap().into_parts();
        if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
            return status.code(); // trailers-only
        }
        while body.data().await.is_some() {}
        let trailers = body.trailers().await.unwrap().unwrap();
        tonic::Status::from_header_map(&trailers).unwrap().code()
    };
    let ((), code) = tokio::join!(sending, answer);
    code
}

/// Raw HTTP/2 clients send on every RPC with a wrong password, an unknown token or no
/// credentials at all, as fast as the server takes the bytes: every request is answered
/// UNAUTHENTICATED and the server's resident memory stays where it was (a Handshake's or DoExchange's body used to stay buffered while the sign-in queue and
/// the failure delay ran, up to a stream window per request: 190 MiB more here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_sending_on_every_rpc_cost_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_a_user(&dir);
    let pid = server.child.id();
    let addr = server.url.strip_prefix("grpc://").unwrap().to_string();
    // A first round warms the server up (its threads' stacks and allocator heaps); the
    // second is measured.
    strangers_send(&addr, &STRANGERS[1..], 1 << 20).await;
    let before = resident_bytes(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = tokio::spawn({
        let peak = std::sync::Arc::clone(&peak);
        async move {
            loop {
                peak.fetch_max(resident_bytes(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    strangers_send(&addr, &STRANGERS, SENT_PER_REQUEST).await;
    sampler.abort();
    let grown = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!(
        "{CONNECTIONS} connections x {} strangers' requests: resident memory {} MiB before, \
         at most {} MiB more while they sent",
        STRANGERS.len(),
        before >> 20,
        grown >> 20
    );
    // A request kept alive holds up to a stream window, 16 MiB; together they would hold the
    // connections' windows, 32 MiB each.
    assert!(
        grown < 8 << 20,
        "the strangers' requests grew the server by {} MiB",
        grown >> 20
    );
}
