//! gRPC's framing over HTTP/2, for the wrappers that answer some calls at the HTTP level
//! ([`ReplayGet`](crate::replay::ReplayGet), [`DirectPut`](crate::receive::DirectPut)) in
//! exactly the bytes tonic would send.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::body::Body;
use tonic::codegen::http;

/// The prefix of every gRPC message: a compression flag and a big-endian length.
pub const PREFIX_BYTES: usize = 5;
/// `FlightData.data_body`'s protobuf field number.
pub const DATA_BODY_FIELD: u32 = 1000;

/// A successful gRPC response with `body`: status 200 and the gRPC content type.
pub fn response(body: Body) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The trailers that end a successful call: `grpc-status: 0`.
pub fn ok_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers
}

/// The prefix of an uncompressed message of `len` bytes.
///
/// # Panics
/// If `len` does not fit gRPC's 32-bit length (callers' messages passed a smaller limit).
pub fn put_prefix(len: usize, out: &mut BytesMut) {
    out.put_u8(0);
    out.put_u32(u32::try_from(len).expect("a gRPC message is under 4 GiB"));
}

/// `message` framed as one uncompressed gRPC message.
pub fn frame(message: &impl Message) -> Bytes {
    let len = message.encoded_len();
    let mut framed = BytesMut::with_capacity(PREFIX_BYTES + len);
    put_prefix(len, &mut framed);
    message
        .encode(&mut framed)
        .expect("the buffer was sized for the message");
    framed.freeze()
}

/// Whether a request is gRPC with uncompressed messages: the only kind the HTTP-level
/// wrappers answer themselves (tonic answers the rest as it always does).
pub fn is_uncompressed_grpc(headers: &http::HeaderMap) -> bool {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let encoding = headers
        .get("grpc-encoding")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("identity");
    // `application/grpc` or `application/grpc+proto`, not gRPC-Web (`application/grpc-web`).
    let is_grpc =
        content_type == "application/grpc" || content_type.starts_with("application/grpc+");
    is_grpc && encoding == "identity"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_message_is_prefix_then_protobuf() {
        let ticket = arrow_flight::Ticket {
            ticket: Bytes::from_static(b"key"),
        };
        let framed = frame(&ticket);
        assert_eq!(framed[0], 0, "uncompressed");
        assert_eq!(&framed[1..5], &(ticket.encoded_len() as u32).to_be_bytes());
        assert_eq!(&framed[5..], ticket.encode_to_vec());
    }

    #[test]
    fn only_uncompressed_grpc_is_recognized() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, http::HeaderValue::from_static(value));
            }
            map
        };
        assert!(is_uncompressed_grpc(&headers(&[(
            "content-type",
            "application/grpc"
        )])));
        assert!(is_uncompressed_grpc(&headers(&[
            ("content-type", "application/grpc+proto"),
            ("grpc-encoding", "identity"),
        ])));
        assert!(!is_uncompressed_grpc(&headers(&[
            ("content-type", "application/grpc"),
            ("grpc-encoding", "gzip"),
        ])));
        assert!(!is_uncompressed_grpc(&headers(&[(
            "content-type",
            "text/plain"
        )])));
        assert!(!is_uncompressed_grpc(&headers(&[(
            "content-type",
            "application/grpc-web"
        )])));
        assert!(!is_uncompressed_grpc(&headers(&[])));
    }
}
