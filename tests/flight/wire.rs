//! Requests no Flight client sends, as raw HTTP/2: malformed messages, compressed or non-gRPC
//! requests, unknown methods. Each is answered with the right code, none reaches a table, and
//! each is counted as a failed request by its RPC's door.

use arrow_flight::{Action, Criteria, Empty, FlightDescriptor, Ticket};
use prost::Message;
use tonic::Code;

use crate::common::{TestServer, raw_grpc_call};

const SERVICE: &str = "/arrow.flight.protocol.FlightService";

/// `message` framed as one uncompressed gRPC message.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Bytes that no protobuf message decodes from: a field tag whose varint never ends.
const GARBAGE: &[u8] = &[0xff, 0xff, 0xff];

#[tokio::test]
async fn garbage_protobuf_is_invalid_argument_for_every_rpc_that_reads_a_message() {
    let server = TestServer::start().await;
    let rpcs = [
        "ListFlights",
        "GetFlightInfo",
        "PollFlightInfo",
        "GetSchema",
        "DoGet",
        "DoPut",
        "DoAction",
        "ListActions",
    ];
    for rpc in rpcs {
        let (status, _) = raw_grpc_call(
            server.addr(),
            &format!("{SERVICE}/{rpc}"),
            &[],
            framed(GARBAGE),
        )
        .await;
        assert_eq!(status.code(), Code::InvalidArgument, "{rpc}: {status:?}");
        assert!(
            status.message().contains("malformed"),
            "{rpc}: {}",
            status.message()
        );
    }
    // Every one entered its door, which counted it.
    let stats = server.client().await.stats().await.unwrap();
    assert_eq!(stats.errors, rpcs.len() as u64);
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn well_formed_raw_requests_are_answered_like_a_clients() {
    let (server, _) = TestServer::with_numbered_table("t", 1, 3).await;
    let calls = [
        (
            "GetFlightInfo",
            FlightDescriptor::new_cmd("t").encode_to_vec(),
        ),
        ("GetSchema", FlightDescriptor::new_cmd("t").encode_to_vec()),
        ("DoGet", Ticket::new("t").encode_to_vec()),
        ("ListFlights", Criteria::default().encode_to_vec()),
        ("DoAction", Action::new("stats", "").encode_to_vec()),
        ("ListActions", Empty {}.encode_to_vec()),
    ];
    for (rpc, message) in calls {
        let (status, received) = raw_grpc_call(
            server.addr(),
            &format!("{SERVICE}/{rpc}"),
            &[],
            framed(&message),
        )
        .await;
        assert_eq!(status.code(), Code::Ok, "{rpc}: {status:?}");
        assert!(!received.is_empty(), "{rpc} answered no message");
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_unary_request_must_carry_exactly_one_message() {
    let server = TestServer::start().await;
    let ticket = framed(&Ticket::new("t").encode_to_vec());
    for (case, body) in [
        ("none", Vec::new()),
        ("two", [ticket.clone(), ticket.clone()].concat()),
        ("cut off", ticket[..ticket.len() - 1].to_vec()),
    ] {
        let (status, _) =
            raw_grpc_call(server.addr(), &format!("{SERVICE}/DoGet"), &[], body).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn an_over_large_request_message_is_resource_exhausted() {
    let server = TestServer::start().await;
    // A 5 MiB action name, over the 4 MiB limit of a request other than do_put.
    let action = Action::new("x".repeat(5 << 20), "").encode_to_vec();
    let (status, _) = raw_grpc_call(
        server.addr(),
        &format!("{SERVICE}/DoAction"),
        &[],
        framed(&action),
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("4194304"), "{}", status.message());
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn compressed_requests_are_unimplemented_and_say_what_is_supported() {
    let server = TestServer::start().await;
    for rpc in ["DoGet", "DoPut", "GetFlightInfo"] {
        let (status, _) = raw_grpc_call(
            server.addr(),
            &format!("{SERVICE}/{rpc}"),
            &[("grpc-encoding", "gzip")],
            framed(&Ticket::new("t").encode_to_vec()),
        )
        .await;
        assert_eq!(status.code(), Code::Unimplemented, "{rpc}: {status:?}");
        assert!(status.message().contains("`gzip`"), "{}", status.message());
        assert!(
            status.message().contains("IpcWriteOptions"),
            "{}",
            status.message()
        );
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn non_grpc_requests_are_invalid_argument() {
    let server = TestServer::start().await;
    let (status, _) = raw_grpc_call(
        server.addr(),
        &format!("{SERVICE}/DoGet"),
        &[("content-type", "application/grpc-web")],
        framed(&Ticket::new("t").encode_to_vec()),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("application/grpc-web"),
        "{}",
        status.message()
    );
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn unknown_methods_are_unimplemented_and_named() {
    let server = TestServer::start().await;
    let (status, _) = raw_grpc_call(
        server.addr(),
        &format!("{SERVICE}/DoMagic"),
        &[],
        framed(b""),
    )
    .await;
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("DoMagic"), "{}", status.message());
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn names_that_are_not_utf8_are_invalid_argument() {
    let server = TestServer::start().await;
    // Action.type (field 1) and FlightDescriptor.path (field 3) are protobuf strings.
    let action = [&[0x0a, 2][..], &[0xff, 0xfe]].concat();
    let path_descriptor = [&[0x08, 1, 0x1a, 2][..], &[0xff, 0xfe]].concat();
    for (rpc, message) in [
        ("DoAction", action),
        ("GetFlightInfo", path_descriptor.clone()),
        ("GetSchema", path_descriptor),
    ] {
        let (status, _) = raw_grpc_call(
            server.addr(),
            &format!("{SERVICE}/{rpc}"),
            &[],
            framed(&message),
        )
        .await;
        assert_eq!(status.code(), Code::InvalidArgument, "{rpc}: {status:?}");
    }
    server.shutdown_and_wait().await;
}

#[tokio::test]
async fn a_huge_unknown_action_name_is_quoted_only_in_part() {
    let server = TestServer::start().await;
    let action = Action::new("x".repeat(1 << 20), "").encode_to_vec();
    let (status, _) = raw_grpc_call(
        server.addr(),
        &format!("{SERVICE}/DoAction"),
        &[],
        framed(&action),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().len() < 1000,
        "{} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("1048576 bytes, cut"),
        "{}",
        status.message()
    );
    server.shutdown_and_wait().await;
}
