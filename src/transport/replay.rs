//! The response to a `DoGet`: a cached table's stored message bodies handed to HTTP/2 as they
//! are, for a get that ends or a follower that waits for appends.
//!
//! tonic encodes every response message into its own buffer, so a 1 GiB get copied 1 GiB of
//! stored bodies once more before the kernel copied it into the socket (17% of the server's CPU
//! during gets). A cached table already holds each message as an IPC header and a body, so
//! [`replay_response`] writes the gRPC framing and the message's small protobuf fields into a
//! short buffer and passes the body after it, untouched: h2 writes both straight to the socket.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use arrow_flight::FlightData;
use bytes::{Bytes, BytesMut};
use futures::Stream;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;
use tracing::Span;

use crate::transport::grpc;

/// One stored message to send: an IPC header, its `app_metadata` and a body in segments. The
/// server hands a cached table's messages in as these, so that the transport never imports
/// the store.
#[derive(Debug, Clone)]
pub struct ReplayMessage {
    /// The IPC message flatbuffer.
    pub header: Bytes,
    /// The message's `app_metadata`, as uploaded.
    pub app_metadata: Bytes,
    /// The body, in order.
    pub body: Vec<Bytes>,
}

/// The messages a get replays, pulled one at a time as HTTP/2's flow control lets the
/// response go on: ready at once for a stored table, pending while a follower waits for
/// the next append; an error ends the call with its status.
pub type ReplayMessages = Pin<Box<dyn Stream<Item = Result<ReplayMessage, Status>> + Send>>;

/// A successful gRPC response streaming `messages`, with `headers` beside the usual ones.
/// `span` is the get's span (its door's); the end of the stream is logged in it.
pub fn replay_response(
    messages: ReplayMessages,
    headers: http::HeaderMap,
    span: Span,
) -> http::Response<Body> {
    let mut response = grpc::response(Body::new(ReplayBody {
        messages,
        in_body: None,
        ended: false,
        sent: 0,
        span,
        started: Instant::now(),
    }));
    response.headers_mut().extend(headers);
    response
}

/// The response body: for each message its framing and fields, then its body; then the
/// trailers (`grpc-status: 0`, or the error the messages ended with).
struct ReplayBody {
    messages: ReplayMessages,
    /// The rest of the body of the message being sent.
    in_body: Option<std::vec::IntoIter<Bytes>>,
    ended: bool,
    /// Body bytes sent, for the log.
    sent: u64,
    span: Span,
    started: Instant,
}

impl HttpBody for ReplayBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        while let Some(body) = &mut self.in_body {
            let Some(bytes) = body.next() else {
                self.in_body = None;
                break;
            };
            // Never an empty DATA frame: h2 clients close a connection with ENHANCE_YOUR_CALM
            // after 100 of them (a schema message has an empty body).
            if !bytes.is_empty() {
                self.sent += bytes.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let status = match self.messages.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(message))) => {
                let head = frame_head(&message);
                self.in_body = Some(message.body.into_iter());
                return Poll::Ready(Some(Ok(Frame::data(head))));
            }
            Poll::Ready(Some(Err(status))) => Some(status),
            Poll::Ready(None) => None,
        };
        self.ended = true;
        tracing::debug!(
            parent: &self.span,
            bytes = self.sent,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            error = status.as_ref().map(|status| status.message().to_string()),
            "table sent"
        );
        Poll::Ready(Some(Ok(Frame::trailers(grpc::trailers(status)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.in_body.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// The start of one message as gRPC frames it: the prefix and every protobuf field but the
/// body, then the body field's key and length; the body's segments follow it as they are (a
/// reference, not a copy). Together, the bytes prost would encode.
fn frame_head(message: &ReplayMessage) -> Bytes {
    let body_len = message.body.iter().map(Bytes::len).sum::<usize>();
    let fields = FlightData {
        flight_descriptor: None,
        data_header: message.header.clone(),
        app_metadata: message.app_metadata.clone(),
        data_body: Bytes::new(),
    };
    let body_field_head = if body_len == 0 {
        0
    } else {
        key_len(grpc::DATA_BODY_FIELD) + encoded_len_varint(body_len as u64)
    };
    let fields_len = fields.encoded_len();
    let message_len = fields_len + body_field_head + body_len;
    let mut head = BytesMut::with_capacity(grpc::PREFIX_BYTES + fields_len + body_field_head);
    // Stored messages passed the server's message size limit on the way in, below 4 GiB.
    grpc::put_prefix(message_len, &mut head);
    fields
        .encode(&mut head)
        .expect("the buffer was sized for the message");
    if body_len > 0 {
        encode_key(grpc::DATA_BODY_FIELD, WireType::LengthDelimited, &mut head);
        encode_varint(body_len as u64, &mut head);
    }
    head.freeze()
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
        let messages: [(&[u8], &[u8], Vec<Bytes>); 4] = [
            (b"header", b"", vec![Bytes::from(vec![7u8; 300])]),
            (b"schema, no body", b"", vec![]),
            (b"header", b"meta", vec![Bytes::from(vec![9u8; 1 << 20])]),
            // A re-split piece: slices and padding, one body on the wire.
            (
                b"piece",
                b"tag",
                vec![
                    Bytes::from(vec![1u8; 13]),
                    Bytes::from_static(&[0; 3]),
                    Bytes::from(vec![2u8; 40]),
                ],
            ),
        ];
        for (header, app_metadata, body) in messages {
            let (header, app_metadata) = (Bytes::from(header), Bytes::from(app_metadata));
            let head = frame_head(&ReplayMessage {
                header: header.clone(),
                app_metadata: app_metadata.clone(),
                body: body.clone(),
            });
            let mut wire = head.to_vec();
            for segment in &body {
                wire.extend_from_slice(segment);
            }
            let whole = FlightData {
                data_header: header,
                app_metadata,
                data_body: body.concat().into(),
                ..Default::default()
            };
            assert_eq!(wire, tonic_framing(&whole));
        }
    }
}
