//! `ReplayGet`: answers `do_get` for a cached table by handing its stored message bodies to
//! HTTP/2 as they are.
//!
//! tonic encodes every response message into its own buffer, so a 1 GiB get copied 1 GiB of
//! stored bodies once more before the kernel copied it into the socket (17% of the server's CPU
//! during gets). A cached table already holds each message as an IPC header and a body, so this
//! wrapper writes the gRPC framing and the message's small protobuf fields into a short buffer
//! and passes the body after it, untouched: h2 writes both straight to the socket.
//!
//! Only a well-formed, uncompressed `DoGet` of a key in the store takes this path. Everything
//! else, including every error (an unknown key, a bad ticket), goes to the tonic service
//! underneath, which answers exactly as it always has.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_flight::{FlightData, Ticket};
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::grpc;
use crate::key::TableKey;
use crate::store::TableStore;
use crate::table::CachedTable;

/// The HTTP/2 path of Flight's `DoGet`.
pub const DO_GET_PATH: &str = "/arrow.flight.protocol.FlightService/DoGet";

/// A service wrapper that serves `DoGet` of cached tables itself and passes every other
/// request, and every get it cannot serve, to `inner`.
#[derive(Debug, Clone)]
pub struct ReplayGet<S> {
    inner: S,
    store: TableStore,
}

impl<S> ReplayGet<S> {
    /// Serve gets of `store`'s tables in front of `inner`, the Flight service over the same store.
    pub fn new(inner: S, store: TableStore) -> Self {
        Self { inner, store }
    }
}

impl<S: NamedService> NamedService for ReplayGet<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for ReplayGet<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != DO_GET_PATH {
            return Box::pin(self.inner.call(request));
        }
        // The clone is ready only if polled; keep the polled one for this call (tower's
        // clone-and-swap idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let store = self.store.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let request_bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                // Let tonic answer a broken request as it would.
                Err(_) => Bytes::new(),
            };
            if let Some((key, table)) = cached_table(&store, &request_bytes) {
                tracing::debug!(key = key.as_str(), "do_get replayed");
                store.record_get();
                return Ok(replay_response(table));
            }
            let request = http::Request::from_parts(parts, Body::new(Full::new(request_bytes)));
            inner.call(request).await
        })
    }
}

/// The key and table a `DoGet` request body asks for, if the body is one uncompressed `Ticket`
/// naming a cached table.
fn cached_table(store: &TableStore, request: &[u8]) -> Option<(TableKey, Arc<CachedTable>)> {
    let (&[compressed], rest) = request.split_first_chunk::<1>()?;
    let (length, message) = rest.split_first_chunk::<4>()?;
    if compressed != 0 || u32::from_be_bytes(*length) as usize != message.len() {
        return None;
    }
    let ticket = Ticket::decode(message).ok()?;
    let key = TableKey::try_from_ticket(&ticket).ok()?;
    let table = store.get(&key)?;
    Some((key, table))
}

/// A successful gRPC response streaming `table`'s messages.
fn replay_response(table: Arc<CachedTable>) -> http::Response<Body> {
    grpc::response(Body::new(ReplayBody {
        table,
        next: 0,
        pending_body: None,
        ended: false,
    }))
}

/// The response body: for each message its framing and fields, then its body; then the
/// `grpc-status: 0` trailers.
struct ReplayBody {
    table: Arc<CachedTable>,
    next: usize,
    pending_body: Option<Bytes>,
    ended: bool,
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

    #[test]
    fn only_a_plain_ticket_for_a_cached_key_is_replayed() {
        let store = TableStore::new();
        let ticket = |key: &str| {
            tonic_framing(&Ticket {
                ticket: Bytes::from(key.to_owned()),
            })
        };
        assert!(cached_table(&store, &ticket("missing")).is_none());
        assert!(cached_table(&store, b"").is_none());
        assert!(cached_table(&store, &[0, 0, 0, 0, 9, 1]).is_none(), "short");
        let mut compressed = ticket("missing");
        compressed[0] = 1;
        assert!(cached_table(&store, &compressed).is_none());
    }
}
