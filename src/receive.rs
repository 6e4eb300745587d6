//! `DirectPut`: receives `do_put` uploads with each message body written straight from HTTP/2's
//! receive buffers into table memory.
//!
//! tonic's decoder copies every gRPC message into a buffer of its own before prost decodes it,
//! and the upload then copied each body from there into table memory: every uploaded byte was
//! copied twice, and pyarrow's one giant message needed a fresh buffer the size of the table on
//! every put (faulting in fresh memory is most of a large put's cost). [`MessageReader`] parses
//! each message's gRPC prefix and protobuf fields as they arrive instead. When it reaches the
//! body (`data_body`, the last field as Flight implementations write it), it reserves the
//! body's place in the upload's memory and copies the rest of the message there, where the
//! upload then validates it in place. A message whose body is not its last field is buffered
//! whole and decoded by prost, as tonic would.
//!
//! Only uncompressed gRPC `DoPut` requests take this path; every other request goes to the
//! tonic service underneath. The upload itself (limits, validation, storing, error codes) is
//! the same code either way: [`FlightCacheService::receive_put`].

use std::task::{Context, Poll};

use arrow_flight::FlightData;
use bytes::{Buf, Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::grpc;
use crate::service::{FlightCacheService, UploadMessages};
use crate::slab::{BodyFill, SlabWriter};

/// The HTTP/2 path of Flight's `DoPut`.
pub const DO_PUT_PATH: &str = "/arrow.flight.protocol.FlightService/DoPut";
/// The longest protobuf varint.
const MAX_VARINT_BYTES: usize = 10;

/// A service wrapper that receives uncompressed `DoPut` uploads itself, through `service`, and
/// passes every other request to `inner`, the tonic server of the same service.
#[derive(Debug, Clone)]
pub struct DirectPut<S> {
    inner: S,
    service: FlightCacheService,
    max_message_bytes: usize,
}

impl<S> DirectPut<S> {
    /// Receive uploads for `service`, accepting messages of up to `max_message_bytes`, in front
    /// of `inner`.
    pub fn new(inner: S, service: FlightCacheService, max_message_bytes: usize) -> Self {
        Self {
            inner,
            service,
            max_message_bytes,
        }
    }
}

impl<S: NamedService> NamedService for DirectPut<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for DirectPut<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
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
        if request.uri().path() != DO_PUT_PATH || !grpc::is_uncompressed_grpc(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let service = self.service.clone();
        let messages = MessageReader::new(request.into_body(), self.max_message_bytes);
        Box::pin(async move {
            Ok(match service.receive_put(messages).await {
                Ok(result) => {
                    let frames = [
                        Ok::<_, std::convert::Infallible>(Frame::data(grpc::frame(&result))),
                        Ok(Frame::trailers(grpc::ok_trailers())),
                    ];
                    grpc::response(Body::new(StreamBody::new(futures::stream::iter(frames))))
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Reads the Flight messages of one request body, writing each body into the upload's table
/// memory as it arrives (see the [module documentation](self)).
pub struct MessageReader {
    body: Body,
    /// What is left of the last data frame received.
    chunk: Bytes,
    max_message_bytes: usize,
}

impl MessageReader {
    /// Read `body`, refusing messages over `max_message_bytes` as tonic does.
    pub fn new(body: Body, max_message_bytes: usize) -> Self {
        Self {
            body,
            chunk: Bytes::new(),
            max_message_bytes,
        }
    }

    /// The next message; its body in `memory` if given and the body is the last field.
    async fn read_message(
        &mut self,
        mut memory: Option<&mut SlabWriter>,
    ) -> Result<Option<FlightData>, Status> {
        if !self.fill_chunk().await? {
            return Ok(None); // the clean end of the stream, between messages
        }
        let mut prefix = BytesMut::with_capacity(grpc::PREFIX_BYTES);
        self.read_into(&mut prefix, grpc::PREFIX_BYTES).await?;
        let compressed = prefix.get_u8();
        let len = prefix.get_u32() as usize;
        if compressed != 0 {
            return Err(Status::internal(
                "protocol error: received a compressed message, but the request names no grpc-encoding",
            ));
        }
        if len > self.max_message_bytes {
            // tonic's wording, which the service turns into RESOURCE_EXHAUSTED with a hint.
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes",
                self.max_message_bytes
            )));
        }

        // The fields before the body, parsed just enough to find where each one ends.
        let mut fields = BytesMut::new();
        let mut body: Option<BodyFill> = None;
        while fields.len() < len {
            let field_start = fields.len();
            let tag = self.read_varint(&mut fields, len).await?;
            let value_len = match tag & 0b111 {
                0 => {
                    self.read_varint(&mut fields, len).await?;
                    0
                }
                1 => 8,
                5 => 4,
                2 => {
                    let value_len = self.read_varint(&mut fields, len).await?;
                    let value_len = usize::try_from(value_len).unwrap_or(usize::MAX);
                    let is_body = tag >> 3 == u64::from(grpc::DATA_BODY_FIELD);
                    let is_last = value_len == len - fields.len();
                    if is_body
                        && is_last
                        && let Some(memory) = memory.as_deref_mut()
                    {
                        let mut fill = memory.reserve(value_len);
                        self.read_body(&mut fill).await?;
                        body = Some(fill);
                        fields.truncate(field_start);
                        break;
                    }
                    value_len
                }
                wire_type => {
                    return Err(invalid_message(format!("unknown wire type {wire_type}")));
                }
            };
            // `fields` never outgrows the message: every read is checked against `len`.
            if value_len > len - fields.len() {
                return Err(invalid_message("a field runs past the end of the message"));
            }
            self.read_into(&mut fields, value_len).await?;
        }
        let mut message = FlightData::decode(fields.freeze()).map_err(invalid_message)?;
        if let Some(fill) = body {
            message.data_body = fill.finish();
        }
        Ok(Some(message))
    }

    /// Make `chunk` non-empty; false at the end of the body.
    async fn fill_chunk(&mut self) -> Result<bool, Status> {
        while self.chunk.is_empty() {
            match self.body.frame().await {
                None => return Ok(false),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
                // The client reset the stream or the connection broke: the upload is not whole.
                Some(Err(status)) => {
                    return Err(Status::cancelled(format!(
                        "the upload stream broke off: {}",
                        status.message()
                    )));
                }
            }
        }
        Ok(true)
    }

    /// Make `chunk` non-empty inside a message, where the end of the body is an error.
    async fn fill_chunk_in_message(&mut self) -> Result<(), Status> {
        if self.fill_chunk().await? {
            Ok(())
        } else {
            // tonic's wording for a stream that ends inside a message.
            Err(Status::internal("Unexpected EOF decoding stream."))
        }
    }

    /// Append the next `len` bytes of the body to `out`.
    async fn read_into(&mut self, out: &mut BytesMut, mut len: usize) -> Result<(), Status> {
        out.reserve(len); // once: a large field arrives in many chunks
        while len > 0 {
            self.fill_chunk_in_message().await?;
            let take = len.min(self.chunk.len());
            out.extend_from_slice(&self.chunk[..take]);
            self.chunk.advance(take);
            len -= take;
        }
        Ok(())
    }

    /// Write the next `fill.remaining()` bytes of the body into `fill`.
    async fn read_body(&mut self, fill: &mut BodyFill) -> Result<(), Status> {
        while fill.remaining() > 0 {
            self.fill_chunk_in_message().await?;
            let take = fill.remaining().min(self.chunk.len());
            fill.write(&self.chunk[..take]);
            self.chunk.advance(take);
        }
        Ok(())
    }

    /// Append a varint to `out` and return its value; the message ends at `out.len() == len`.
    async fn read_varint(&mut self, out: &mut BytesMut, len: usize) -> Result<u64, Status> {
        let start = out.len();
        loop {
            if out.len() == len || out.len() - start == MAX_VARINT_BYTES {
                return Err(invalid_message("a varint is cut off or too long"));
            }
            self.read_into(out, 1).await?;
            if out[out.len() - 1] < 0x80 {
                let mut bytes = &out[start..];
                return prost::encoding::decode_varint(&mut bytes).map_err(invalid_message);
            }
        }
    }
}

impl UploadMessages for MessageReader {
    fn next_message<'a>(
        &'a mut self,
        memory: Option<&'a mut SlabWriter>,
    ) -> impl Future<Output = Result<Option<FlightData>, Status>> + Send + 'a {
        self.read_message(memory)
    }
}

/// A message that is not a valid `FlightData`: INTERNAL, as tonic reports decode errors.
fn invalid_message(reason: impl std::fmt::Display) -> Status {
    Status::internal(format!("failed to decode a FlightData message: {reason}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::slab::SlabPool;

    /// A request body that arrives in `chunk`-byte data frames.
    fn body_in_chunks(bytes: &[u8], chunk: usize) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Status>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Body::new(StreamBody::new(futures::stream::iter(frames)))
    }

    fn messages() -> Vec<FlightData> {
        vec![
            FlightData {
                flight_descriptor: Some(arrow_flight::FlightDescriptor::new_cmd("key")),
                data_header: Bytes::from_static(b"schema"),
                ..Default::default()
            },
            FlightData {
                data_header: Bytes::from(vec![3u8; 300]),
                app_metadata: Bytes::from_static(b"meta"),
                data_body: Bytes::from((0..5000u32).map(|i| i as u8).collect::<Vec<u8>>()),
                ..Default::default()
            },
            FlightData::default(),
            FlightData {
                data_header: Bytes::from_static(b"h"),
                data_body: Bytes::from(vec![9u8; 2 << 20]),
                ..Default::default()
            },
        ]
    }

    fn framed(messages: &[FlightData]) -> Vec<u8> {
        messages
            .iter()
            .flat_map(|m| grpc::frame(m).to_vec())
            .collect()
    }

    /// Every message of `body`, and whether each one's body was received in table memory.
    async fn read_all(body: Body, max: usize) -> Result<Vec<(FlightData, bool)>, Status> {
        let mut reader = MessageReader::new(body, max);
        let mut memory = SlabWriter::new(Arc::new(SlabPool::default()));
        let mut read = Vec::new();
        while let Some(message) = reader.next_message(Some(&mut memory)).await? {
            let body = message.data_body.clone();
            let in_place = !body.is_empty() && memory.store(body.clone()).as_ptr() == body.as_ptr();
            read.push((message, in_place));
        }
        Ok(read)
    }

    #[tokio::test]
    async fn messages_read_back_exactly_however_the_frames_split_them() {
        let bytes = framed(&messages());
        for chunk in [1, 2, 5, 7, 300, 4096, 1 << 20, bytes.len()] {
            let read = read_all(body_in_chunks(&bytes, chunk), usize::MAX)
                .await
                .unwrap();
            let (read, in_place): (Vec<_>, Vec<_>) = read.into_iter().unzip();
            assert_eq!(read, messages(), "in chunks of {chunk} bytes");
            assert_eq!(
                in_place,
                [false, true, false, true],
                "bodies received in place"
            );
        }
    }

    #[tokio::test]
    async fn a_body_that_is_not_the_last_field_is_still_read() {
        // prost writes fields in field order; write the body first, then the header.
        let mut encoded = Vec::new();
        prost::encoding::bytes::encode(
            grpc::DATA_BODY_FIELD,
            &Bytes::from(vec![4u8; 100]),
            &mut encoded,
        );
        prost::encoding::bytes::encode(2, &Bytes::from_static(b"header"), &mut encoded);
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&encoded);
        let read = read_all(body_in_chunks(&bytes, 3), usize::MAX)
            .await
            .unwrap();
        assert_eq!(read.len(), 1);
        let (message, in_place) = &read[0];
        assert_eq!(message.data_header, Bytes::from_static(b"header"));
        assert_eq!(message.data_body, Bytes::from(vec![4u8; 100]));
        assert!(
            !in_place,
            "buffered whole, then copied as a message from tonic is"
        );
    }

    #[tokio::test]
    async fn broken_streams_are_errors_with_tonics_codes() {
        let bytes = framed(&messages());
        let truncated = read_all(body_in_chunks(&bytes[..bytes.len() - 1], 4096), usize::MAX).await;
        assert_eq!(truncated.unwrap_err().code(), tonic::Code::Internal);

        let too_large = read_all(body_in_chunks(&bytes, 4096), 1 << 20)
            .await
            .unwrap_err();
        assert_eq!(too_large.code(), tonic::Code::OutOfRange);
        assert!(too_large.message().contains("too large"), "{too_large}");

        let mut compressed = bytes.clone();
        compressed[0] = 1;
        let compressed = read_all(body_in_chunks(&compressed, 4096), usize::MAX).await;
        assert_eq!(compressed.unwrap_err().code(), tonic::Code::Internal);

        let garbage = [0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        let garbage = read_all(body_in_chunks(&garbage, 4096), usize::MAX).await;
        assert_eq!(garbage.unwrap_err().code(), tonic::Code::Internal);

        // A field whose length, near 2^64, would wrap around unchecked arithmetic; the next
        // message follows, which such a field must not swallow.
        let mut fields = vec![0x12]; // field 2, length-delimited
        prost::encoding::encode_varint(u64::MAX - 5, &mut fields);
        let mut huge_field = vec![0];
        huge_field.extend_from_slice(&(fields.len() as u32 + 1).to_be_bytes());
        huge_field.extend_from_slice(&fields);
        huge_field.extend_from_slice(&bytes);
        let huge_field = read_all(body_in_chunks(&huge_field, 4096), usize::MAX).await;
        let huge_field = huge_field.unwrap_err();
        assert_eq!(huge_field.code(), tonic::Code::Internal, "{huge_field}");
        assert!(
            huge_field.message().contains("past the end"),
            "{huge_field}"
        );

        let frames = vec![
            Ok(Frame::data(Bytes::copy_from_slice(&bytes[..100]))),
            Err(Status::unknown("connection reset")),
        ];
        let reset = Body::new(StreamBody::new(futures::stream::iter(frames)));
        let reset = read_all(reset, usize::MAX).await.unwrap_err();
        assert_eq!(reset.code(), tonic::Code::Cancelled);
    }
}
