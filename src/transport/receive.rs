//! `MessageReader`: reads the messages of a `DoPut` request, each message body written
//! straight from HTTP/2's receive buffers into table memory.
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
//! Every `DoPut` is read this way (the router sends no upload to tonic); the upload itself
//! (limits, validation, storing) is the `do_put` door's.

use std::time::Duration;

use arrow_flight::FlightData;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tokio::time::Instant;
use tonic::body::Body;

use crate::error::{Error, RequestProblem, Result};
use crate::protocol::rpc::FlightRpc;
use crate::transport::grpc;

/// The longest protobuf varint.
const MAX_VARINT_BYTES: usize = 10;
/// Room reserved at once for a field buffered whole; more is reserved only as its bytes come,
/// so that a declared length costs nothing before the bytes arrive.
const FIELD_RESERVE_BYTES: usize = 1 << 20;

/// The memory a `DoPut`'s messages are received into: table memory, which the upload's owner
/// (the server's `do_put`, with the store's memory) hands in. The transport knows it only
/// through this trait, so it never calls into the store.
pub trait UploadMemory {
    /// A body being received.
    type Fill: BodySink + Send;
    /// What a message's buffered fields are charged to.
    type Charge: FieldCharge + Send + Sync + 'static;
    /// Room for a body of `len` bytes, charged as it is written.
    ///
    /// # Errors
    /// If the memory budget has no room for it.
    fn reserve_body(&mut self, len: usize) -> Result<Self::Fill>;
    /// The body, once all of it is written.
    fn finish_body(&mut self, fill: Self::Fill) -> Bytes;
    /// A charge of nothing yet, for a message's buffered fields.
    fn field_charge(&self) -> Self::Charge;
}

/// A body being received into [`UploadMemory`].
pub trait BodySink {
    /// Bytes still to write.
    fn remaining(&self) -> usize;
    /// Append `bytes` (at most [`remaining`](Self::remaining)).
    ///
    /// # Errors
    /// If the memory it grows into does not fit in the budget.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
}

/// The charge for a message's buffered fields.
pub trait FieldCharge {
    /// Bytes charged.
    fn bytes(&self) -> usize;
    /// Grow or shrink the charge to `bytes`.
    ///
    /// # Errors
    /// If growing does not fit in the budget.
    fn resize(&self, bytes: usize) -> Result<()>;
}

/// Reads the Flight messages of one request body, writing each body into the upload's table
/// memory as it arrives (see the module documentation).
pub struct MessageReader {
    body: Body,
    /// What is left of the last data frame received.
    chunk: Bytes,
    max_message_bytes: usize,
    idle_timeout: Duration,
    /// How many bytes the upload must move in each window of the idle timeout.
    progress: Progress,
    /// The memory budget's charge for the fields of the message being read, which are
    /// buffered (all of them but a body received in place), held until the next message.
    buffered: Option<Box<dyn FieldCharge + Send + Sync>>,
}

/// What an upload must move: at least `min_rate` bytes per second, counted over windows of
/// the idle timeout (as Apache's `mod_reqtimeout` counts its `MinRate`), so that a client
/// trickling a few bytes at a time cannot hold an upload slot for ever. Only time the server
/// spends waiting for the client's bytes counts towards a window: time it spends elsewhere
/// (finding a slot, validating, waiting for the client to read an acknowledgement) is not the
/// client's slowness, and bytes that arrived meanwhile are read at once.
#[derive(Debug)]
struct Progress {
    window: Duration,
    /// Bytes each window must bring.
    quota: u64,
    min_rate: u64,
    /// Time spent waiting for bytes in the current window.
    waited: Duration,
    /// Bytes read in the current window.
    received: u64,
}

impl Progress {
    fn new(window: Duration, min_rate: u64) -> Self {
        Self {
            window,
            quota: (min_rate as f64 * window.as_secs_f64()) as u64,
            min_rate,
            waited: Duration::ZERO,
            received: 0,
        }
    }

    /// When the current window ends if waiting starts at `start` and no byte comes, if there
    /// is a minimum.
    fn deadline(&self, start: Instant) -> Option<Instant> {
        (self.quota > 0).then(|| start + self.window.saturating_sub(self.waited))
    }

    /// `bytes` came after waiting `waited`.
    ///
    /// # Errors
    /// [`Error::UploadTooSlow`] if that ended a window short of its quota.
    fn record(&mut self, waited: Duration, bytes: usize) -> Result<()> {
        self.waited += waited;
        self.received += bytes as u64;
        if self.quota == 0 || self.waited < self.window {
            return Ok(());
        }
        if self.received < self.quota {
            return Err(Error::UploadTooSlow {
                received: self.received,
                window: self.window,
                min_rate: self.min_rate,
            });
        }
        self.waited = Duration::ZERO;
        self.received = 0;
        Ok(())
    }
}

impl MessageReader {
    /// Read `body`, refusing messages over `max_message_bytes`, and giving up when no bytes
    /// arrive for `idle_timeout`, or fewer than `min_rate` bytes per second in a window of it
    /// (0: no minimum).
    pub fn new(
        body: Body,
        max_message_bytes: usize,
        idle_timeout: Duration,
        min_rate: u64,
    ) -> Self {
        Self {
            body,
            chunk: Bytes::new(),
            max_message_bytes,
            idle_timeout,
            progress: Progress::new(idle_timeout, min_rate),
            buffered: None,
        }
    }

    /// The next message, or `None` once the client ended the stream cleanly. Its body is
    /// received into `memory` when the body is the message's last field, where the upload
    /// keeps it without a copy. The other fields are buffered, charged to
    /// `memory`'s upload until the next call.
    ///
    /// # Errors
    /// [`Error::UploadCancelled`] (with no key) if the client reset the stream or the
    /// connection broke; [`Error::RequestIdle`] if no bytes came for the idle timeout;
    /// [`Error::MessageTooLarge`] for a message over the limit; [`Error::MalformedRequest`]
    /// for bytes that are not a `FlightData` message; [`Error::OverBudget`] if the memory
    /// budget has no room for the message.
    pub async fn next_message<M: UploadMemory>(
        &mut self,
        memory: &mut M,
    ) -> Result<Option<FlightData>> {
        self.read_message(memory, None::<fn(&FlightData) -> Result<()>>)
            .await
    }

    /// [`next_message`](Self::next_message), with `check` run on the fields that come before
    /// the body (the descriptor among them, as Flight clients write them) before a byte of
    /// the body is received or charged to the budget: the door of `DoPut` checks the caller's
    /// write right there, so a caller without it cannot make the cache evict anything.
    ///
    /// # Errors
    /// As `next_message`, and `check`'s error.
    pub async fn next_message_checked<M: UploadMemory>(
        &mut self,
        memory: &mut M,
        check: impl FnOnce(&FlightData) -> Result<()>,
    ) -> Result<Option<FlightData>> {
        self.read_message(memory, Some(check)).await
    }

    /// The next message, with `check` (if any) run on the fields before its body: without
    /// one, the fields are decoded once, at the end.
    async fn read_message<M: UploadMemory>(
        &mut self,
        memory: &mut M,
        mut check: Option<impl FnOnce(&FlightData) -> Result<()>>,
    ) -> Result<Option<FlightData>> {
        self.buffered = Some(Box::new(memory.field_charge()));
        if !self.fill_chunk().await? {
            return Ok(None); // the clean end of the stream, between messages
        }
        let mut prefix = BytesMut::with_capacity(grpc::PREFIX_BYTES);
        self.read_into(&mut prefix, grpc::PREFIX_BYTES).await?;
        let compressed = prefix.get_u8();
        let len = prefix.get_u32() as usize;
        if compressed != 0 {
            return Err(malformed(RequestProblem::CompressedWithoutEncoding));
        }
        if len > self.max_message_bytes {
            return Err(Error::MessageTooLarge {
                size: len,
                limit: self.max_message_bytes,
            });
        }

        // The fields before the body, parsed just enough to find where each one ends.
        let mut fields = BytesMut::new();
        let mut body: Option<M::Fill> = None;
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
                    if let Some(check) = check.take_if(|_| is_body) {
                        let head = FlightData::decode(&fields[..field_start])
                            .map_err(|e| malformed(RequestProblem::Protobuf(e)))?;
                        check(&head)?;
                    }
                    if is_body && is_last {
                        let mut fill = memory.reserve_body(value_len)?;
                        self.read_body(&mut fill).await?;
                        body = Some(fill);
                        fields.truncate(field_start);
                        break;
                    }
                    value_len
                }
                wire_type => {
                    return Err(malformed(RequestProblem::UnknownWireType { wire_type }));
                }
            };
            // `fields` never outgrows the message: every read is checked against `len`.
            if value_len > len - fields.len() {
                return Err(malformed(RequestProblem::FieldPastEnd));
            }
            self.read_into(&mut fields, value_len).await?;
        }
        let mut message = FlightData::decode(fields.freeze())
            .map_err(|e| malformed(RequestProblem::Protobuf(e)))?;
        if let Some(check) = check {
            check(&message)?; // a message without a body
        }
        if let Some(fill) = body {
            message.data_body = memory.finish_body(fill);
        }
        Ok(Some(message))
    }

    /// Charge the buffered fields for what `out` may hold once `extra` more bytes are added:
    /// its capacity, or, if it must grow, what `BytesMut` grows it to (at least double).
    fn charge_growth(&self, out: &BytesMut, extra: usize) -> Result<()> {
        let Some(charge) = &self.buffered else {
            return Ok(());
        };
        let needed = out.len() + extra;
        let reach = if needed <= out.capacity() {
            out.capacity()
        } else {
            needed.max(out.capacity() * 2)
        };
        if reach > charge.bytes() {
            charge.resize(reach)?;
        }
        Ok(())
    }

    /// Make `chunk` non-empty; false at the end of the body.
    async fn fill_chunk(&mut self) -> Result<bool> {
        let mut idle_deadline = Instant::now() + self.idle_timeout;
        while self.chunk.is_empty() {
            let started = Instant::now();
            let rate_deadline = self.progress.deadline(started).unwrap_or(idle_deadline);
            let deadline = idle_deadline.min(rate_deadline);
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            let waited = started.elapsed();
            let Ok(frame) = frame else {
                if rate_deadline < idle_deadline {
                    // A window ended: too slow if it lacked bytes, else wait on in the next.
                    self.progress.record(waited, 0)?;
                    continue;
                }
                return Err(Error::RequestIdle {
                    rpc: FlightRpc::DoPut,
                    idle: self.idle_timeout,
                });
            };
            match frame {
                None => return Ok(false),
                Some(Ok(frame)) => {
                    idle_deadline = Instant::now() + self.idle_timeout;
                    let data = frame.into_data().unwrap_or_default();
                    self.progress.record(waited, data.len())?;
                    self.chunk = data;
                }
                // The client reset the stream or the connection broke: the upload is not
                // whole. (tonic's own decoder reports a reset as a clean end: hyperium/tonic
                // `Streaming` in the request direction, which would publish a truncated table.)
                Some(Err(_)) => return Err(Error::UploadCancelled { key: None }),
            }
        }
        Ok(true)
    }

    /// Make `chunk` non-empty inside a message, where the end of the body is an error.
    async fn fill_chunk_in_message(&mut self) -> Result<()> {
        if self.fill_chunk().await? {
            Ok(())
        } else {
            Err(malformed(RequestProblem::Truncated))
        }
    }

    /// Append the next `len` bytes of the body to `out`.
    async fn read_into(&mut self, out: &mut BytesMut, mut len: usize) -> Result<()> {
        let first = len.min(FIELD_RESERVE_BYTES);
        self.charge_growth(out, first)?;
        out.reserve(first);
        while len > 0 {
            self.fill_chunk_in_message().await?;
            let take = len.min(self.chunk.len());
            // Charged as the bytes come, not as the field declares: a field that claims a
            // gigabyte and sends a few bytes costs a few bytes.
            self.charge_growth(out, take)?;
            out.extend_from_slice(&self.chunk[..take]);
            self.chunk.advance(take);
            len -= take;
        }
        Ok(())
    }

    /// Write the next `fill.remaining()` bytes of the body into `fill`.
    async fn read_body(&mut self, fill: &mut impl BodySink) -> Result<()> {
        while fill.remaining() > 0 {
            self.fill_chunk_in_message().await?;
            let take = fill.remaining().min(self.chunk.len());
            fill.write(&self.chunk[..take])?;
            self.chunk.advance(take);
        }
        Ok(())
    }

    /// Append a varint to `out` and return its value; the message ends at `out.len() == len`.
    async fn read_varint(&mut self, out: &mut BytesMut, len: usize) -> Result<u64> {
        let start = out.len();
        loop {
            if out.len() == len || out.len() - start == MAX_VARINT_BYTES {
                return Err(malformed(RequestProblem::BadVarint));
            }
            self.read_into(out, 1).await?;
            if out[out.len() - 1] < 0x80 {
                let mut bytes = &out[start..];
                return prost::encoding::decode_varint(&mut bytes)
                    .map_err(|e| malformed(RequestProblem::Protobuf(e)));
            }
        }
    }
}

/// A `DoPut` message that is not a valid `FlightData`.
fn malformed(problem: RequestProblem) -> Error {
    Error::MalformedRequest {
        rpc: FlightRpc::DoPut,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use tonic::{Code, Status};

    use super::*;

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

    /// Memory for one upload, without a limit: each body in a buffer of its own, remembered
    /// so that a test can tell a body received in place from one copied there.
    #[derive(Default)]
    struct TestMemory {
        places: Vec<usize>,
    }

    struct TestFill(Vec<u8>, usize);

    struct TestCharge(std::sync::atomic::AtomicUsize);

    impl UploadMemory for TestMemory {
        type Fill = TestFill;
        type Charge = TestCharge;

        fn reserve_body(&mut self, len: usize) -> Result<TestFill> {
            Ok(TestFill(Vec::with_capacity(len), len))
        }

        fn finish_body(&mut self, fill: TestFill) -> Bytes {
            let body = Bytes::from(fill.0);
            self.places.push(body.as_ptr() as usize);
            body
        }

        fn field_charge(&self) -> TestCharge {
            TestCharge(std::sync::atomic::AtomicUsize::new(0))
        }
    }

    impl BodySink for TestFill {
        fn remaining(&self) -> usize {
            self.1 - self.0.len()
        }

        fn write(&mut self, bytes: &[u8]) -> Result<()> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }

    impl FieldCharge for TestCharge {
        fn bytes(&self) -> usize {
            self.0.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn resize(&self, bytes: usize) -> Result<()> {
            self.0.store(bytes, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }

    fn memory() -> TestMemory {
        TestMemory::default()
    }

    /// Every message of `body`, and whether each one's body was received in its own place.
    async fn read_all(body: Body, max: usize) -> Result<Vec<(FlightData, bool)>> {
        let mut reader = MessageReader::new(body, max, Duration::from_secs(30), 0);
        let mut memory = memory();
        let mut read = Vec::new();
        while let Some(message) = reader.next_message(&mut memory).await? {
            let body = message.data_body.clone();
            let in_place = !body.is_empty() && memory.places.contains(&(body.as_ptr() as usize));
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
        assert!(!in_place, "buffered whole, then copied");
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_sends_nothing_gives_up_after_the_idle_timeout() {
        // The first message, then nothing: a stream that never ends or sends again.
        let first = framed(&messages()[..1]);
        let frames = futures::stream::iter(vec![Ok::<_, Status>(Frame::data(Bytes::from(first)))])
            .chain(futures::stream::pending());
        let body = Body::new(StreamBody::new(frames));
        let idle = Duration::from_secs(30);
        let mut reader = MessageReader::new(body, usize::MAX, idle, 0);
        let mut memory = memory();
        assert!(reader.next_message(&mut memory).await.unwrap().is_some());
        let started = tokio::time::Instant::now();
        let err = reader.next_message(&mut memory).await.unwrap_err();
        assert!(
            matches!(err, Error::RequestIdle { idle: waited, .. } if waited == idle),
            "{err:?}"
        );
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(err.to_string().contains("--request-idle-timeout"), "{err}");
        assert_eq!(started.elapsed(), idle, "gave up exactly at the timeout");
    }

    /// A body that sends `bytes` in chunks of `chunk`, one every `every` of tokio's clock.
    fn body_trickling(bytes: Vec<u8>, chunk: usize, every: Duration) -> Body {
        let chunks: Vec<Bytes> = bytes.chunks(chunk).map(Bytes::copy_from_slice).collect();
        let frames = futures::stream::iter(chunks).then(move |chunk| async move {
            tokio::time::sleep(every).await;
            Ok::<_, Status>(Frame::data(chunk))
        });
        Body::new(StreamBody::new(frames))
    }

    /// One message whose body is `len` bytes.
    fn one_message(len: usize) -> Vec<u8> {
        framed(&[FlightData {
            flight_descriptor: Some(arrow_flight::FlightDescriptor::new_cmd("key")),
            data_header: Bytes::from_static(b"header"),
            data_body: Bytes::from(vec![7u8; len]),
            ..Default::default()
        }])
    }

    /// A client that keeps sending, a little at a time, is cancelled at the end of the first
    /// window of the idle timeout that brought less than the minimum rate: its bytes never
    /// let the idle timeout fire.
    #[tokio::test(start_paused = true)]
    async fn an_upload_under_the_minimum_rate_is_cancelled_at_the_end_of_its_window() {
        let idle = Duration::from_secs(30);
        // 1 KiB every 20 s: 51 bytes/s, under 4 KiB/s.
        let body = body_trickling(one_message(1 << 20), 1024, Duration::from_secs(20));
        let mut reader = MessageReader::new(body, usize::MAX, idle, 4096);
        let started = tokio::time::Instant::now();
        let err = reader.next_message(&mut memory()).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::UploadTooSlow {
                    received: 1024,
                    min_rate: 4096,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), Code::DeadlineExceeded);
        assert!(err.to_string().contains("--min-upload-rate"), "{err}");
        assert_eq!(
            started.elapsed(),
            idle,
            "cancelled as its first window ended"
        );
    }

    /// An upload above the minimum rate is read whole, however long it takes.
    #[tokio::test(start_paused = true)]
    async fn an_upload_above_the_minimum_rate_is_read_whole() {
        let idle = Duration::from_secs(30);
        // 10 KiB every 2 s: 5 KiB/s, for over 100 s.
        let body = body_trickling(one_message(512 << 10), 10 << 10, Duration::from_secs(2));
        let mut reader = MessageReader::new(body, usize::MAX, idle, 4096);
        let started = tokio::time::Instant::now();
        let message = reader.next_message(&mut memory()).await.unwrap().unwrap();
        assert_eq!(message.data_body.len(), 512 << 10);
        assert!(reader.next_message(&mut memory()).await.unwrap().is_none());
        assert!(started.elapsed() > Duration::from_secs(100));
    }

    /// Time the server spends not reading (waiting for an upload slot before the first read,
    /// or for the client to read an acknowledgement) is not counted against the client.
    #[tokio::test(start_paused = true)]
    async fn time_the_server_does_not_read_is_not_the_clients() {
        let idle = Duration::from_secs(2);
        let bytes = framed(&messages());
        let body = body_in_chunks(&bytes, 64);
        let mut reader = MessageReader::new(body, usize::MAX, idle, 4096);
        let mut memory = memory();
        tokio::time::sleep(Duration::from_secs(10)).await; // a slot's wait, and more
        assert!(reader.next_message(&mut memory).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_secs(10)).await; // an acknowledgement unread
        while reader.next_message(&mut memory).await.unwrap().is_some() {}
    }

    /// The problem of a malformed-request error; panics on any other result.
    fn problem(result: Result<Vec<(FlightData, bool)>>) -> RequestProblem {
        match result {
            Err(err @ Error::MalformedRequest { .. }) => {
                assert_eq!(err.code(), Code::InvalidArgument);
                let Error::MalformedRequest { rpc, problem } = err else {
                    unreachable!()
                };
                assert_eq!(rpc, FlightRpc::DoPut);
                problem
            }
            other => panic!("expected a malformed request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn broken_streams_are_client_errors_with_their_codes() {
        let bytes = framed(&messages());
        let truncated = read_all(body_in_chunks(&bytes[..bytes.len() - 1], 4096), usize::MAX).await;
        assert!(matches!(problem(truncated), RequestProblem::Truncated));

        let too_large = read_all(body_in_chunks(&bytes, 4096), 1 << 20)
            .await
            .unwrap_err();
        assert_eq!(too_large.code(), Code::ResourceExhausted);
        assert!(
            matches!(too_large, Error::MessageTooLarge { size, limit: 1_048_576 } if size > 2 << 20),
            "{too_large:?}"
        );
        assert!(
            too_large.to_string().contains("--max-message-size"),
            "{too_large}"
        );

        let mut compressed = bytes.clone();
        compressed[0] = 1;
        let compressed = read_all(body_in_chunks(&compressed, 4096), usize::MAX).await;
        assert!(matches!(
            problem(compressed),
            RequestProblem::CompressedWithoutEncoding
        ));

        let garbage = [0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        let garbage = read_all(body_in_chunks(&garbage, 4096), usize::MAX).await;
        assert!(matches!(problem(garbage), RequestProblem::BadVarint));

        let unknown_wire_type = [0, 0, 0, 0, 2, 0x0f, 0x00];
        let unknown_wire_type =
            read_all(body_in_chunks(&unknown_wire_type, 4096), usize::MAX).await;
        assert!(matches!(
            problem(unknown_wire_type),
            RequestProblem::UnknownWireType { wire_type: 7 }
        ));

        // A field whose length, near 2^64, would wrap around unchecked arithmetic; the next
        // message follows, which such a field must not swallow.
        let mut fields = vec![0x12]; // field 2, length-delimited
        prost::encoding::encode_varint(u64::MAX - 5, &mut fields);
        let mut huge_field = vec![0];
        huge_field.extend_from_slice(&(fields.len() as u32 + 1).to_be_bytes());
        huge_field.extend_from_slice(&fields);
        huge_field.extend_from_slice(&bytes);
        let huge_field = read_all(body_in_chunks(&huge_field, 4096), usize::MAX).await;
        assert!(matches!(problem(huge_field), RequestProblem::FieldPastEnd));

        let frames = vec![
            Ok(Frame::data(Bytes::copy_from_slice(&bytes[..100]))),
            Err(Status::unknown("connection reset")),
        ];
        let reset = Body::new(StreamBody::new(futures::stream::iter(frames)));
        let reset = read_all(reset, usize::MAX).await.unwrap_err();
        assert!(
            matches!(reset, Error::UploadCancelled { key: None }),
            "{reset:?}"
        );
        assert_eq!(reset.code(), Code::Cancelled);
    }
}
