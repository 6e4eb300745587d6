//! The response to a `DoGet`: a cached table's stored message bodies handed to HTTP/2 as they
//! are.
//!
//! tonic encodes every response message into its own buffer, so a 1 GiB get copied 1 GiB of
//! stored bodies once more before the kernel copied it into the socket (17% of the server's CPU
//! during gets). A cached table already holds each message as an IPC header and a body, so
//! [`replay_response`] writes the gRPC framing and the message's small protobuf fields into a
//! short buffer and passes the body after it, untouched: h2 writes both straight to the socket.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow_flight::FlightData;
use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::body::Body;
use tonic::codegen::http;
use tracing::Span;

use crate::store::table::CachedTable;
use crate::transport::grpc;

/// A successful gRPC response streaming `table`'s messages. `span` is the get's span (its
/// door's); the end of the stream is logged in it.
pub fn replay_response(table: Arc<CachedTable>, span: Span) -> http::Response<Body> {
    grpc::response(Body::new(ReplayBody {
        table,
        next: 0,
        pending_body: None,
        ended: false,
        span,
        started: Instant::now(),
    }))
}

/// The response body: for each message its framing and fields, then its body; then the
/// `grpc-status: 0` trailers.
struct ReplayBody {
    table: Arc<CachedTable>,
    next: usize,
    pending_body: Option<Bytes>,
    ended: bool,
    span: Span,
    started: Instant,
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(body) = self.pending_body.take() {
            return Poll::Ready(Some(Ok(Frame::data(body))));
        }
        if let Some(message) = self.table.flight_messages().get(self.next) {
            let (head, body) = frame_message(message);
            self.next += 1;
            self.pending_body = (!body.is_empty()).then_some(body);
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        self.ended = true;
        tracing::debug!(
            parent: &self.span,
            bytes = self.table.bytes(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "table sent"
        );
        Poll::Ready(Some(Ok(Frame::trailers(grpc::ok_trailers()))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending_body.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// One message as gRPC frames it: the prefix and every protobuf field but the body, then the
/// body itself (a reference, not a copy), together the bytes prost would encode.
fn frame_message(message: &FlightData) -> (Bytes, Bytes) {
    let body = message.data_body.clone();
    let fields = FlightData {
        data_body: Bytes::new(),
        ..message.clone()
    };
    let body_field_head = if body.is_empty() {
        0
    } else {
        key_len(grpc::DATA_BODY_FIELD) + encoded_len_varint(body.len() as u64)
    };
    let fields_len = fields.encoded_len();
    let message_len = fields_len + body_field_head + body.len();
    let mut head = BytesMut::with_capacity(grpc::PREFIX_BYTES + fields_len + body_field_head);
    // Stored messages passed the server's message size limit on the way in, below 4 GiB.
    grpc::put_prefix(message_len, &mut head);
    fields
        .encode(&mut head)
        .expect("the buffer was sized for the message");
    if !body.is_empty() {
        encode_key(grpc::DATA_BODY_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(body.len() as u64, &mut head);
    }
    (head.freeze(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gRPC's framing of `message` as tonic encodes it.
    fn tonic_framing(message: &impl Message) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        framed
    }

    #[test]
    fn framing_is_byte_for_byte_what_tonic_sends() {
        let messages = [
            FlightData {
                data_header: Bytes::from_static(b"header"),
                data_body: Bytes::from(vec![7u8; 300]),
                ..Default::default()
            },
            FlightData {
                data_header: Bytes::from_static(b"schema, no body"),
                ..Default::default()
            },
            FlightData {
                data_header: Bytes::from(vec![1u8; 200]),
                app_metadata: Bytes::from_static(b"meta"),
                data_body: Bytes::from(vec![9u8; 1 << 20]),
                ..Default::default()
            },
        ];
        for message in &messages {
            let (head, body) = frame_message(message);
            assert_eq!(
                body.as_ptr(),
                message.data_body.as_ptr(),
                "the body is not copied"
            );
            assert_eq!([&head[..], &body[..]].concat(), tonic_framing(message));
        }
    }
}
