//! gRPC over HTTP/2, as far as flightcache speaks it itself: which requests it reads, message
//! framing, reading a unary request, and the responses (messages, then `grpc-status`
//! trailers; or an error status alone), in exactly the bytes tonic would send.

use std::convert::Infallible;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http;

use crate::error::{ClientText, Error, RequestProblem, Result};
use crate::protocol::credentials::{AUTHORIZATION, Credentials, SessionToken, TOKEN_TTL_HEADER};
use crate::protocol::rpc::FlightRpc;

/// The prefix of every gRPC message: a compression flag and a big-endian length.
pub const PREFIX_BYTES: usize = 5;
/// `FlightData.data_body`'s protobuf field number.
pub const DATA_BODY_FIELD: u32 = 1000;

/// Check that a request is one flightcache reads: gRPC (not gRPC-Web, which needs a proxy),
/// with uncompressed messages.
///
/// # Errors
/// [`Error::MalformedRequest`] for another content type; [`Error::UnsupportedEncoding`] for
/// compressed messages.
pub fn check_request(rpc: FlightRpc, headers: &http::HeaderMap) -> Result<()> {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(http::HeaderValue::as_bytes)
        .unwrap_or(b"");
    // `application/grpc` or `application/grpc+proto`, not `application/grpc-web`.
    let is_grpc =
        content_type == b"application/grpc" || content_type.starts_with(b"application/grpc+");
    if !is_grpc {
        return Err(Error::MalformedRequest {
            rpc,
            problem: RequestProblem::NotGrpc {
                content_type: ClientText::new(content_type),
            },
        });
    }
    match headers
        .get("grpc-encoding")
        .map(http::HeaderValue::as_bytes)
    {
        None | Some(b"identity") => Ok(()),
        Some(encoding) => Err(Error::UnsupportedEncoding {
            encoding: ClientText::new(encoding),
        }),
    }
}

/// Read the one message of a unary request, refusing one over `limit` bytes before buffering
/// it, and giving up when nothing arrives for `idle_timeout`.
///
/// # Errors
/// [`Error::MessageTooLarge`] over the limit; [`Error::MalformedRequest`] unless the body is
/// exactly one uncompressed message that decodes as `M`; [`Error::Cancelled`] if the client
/// reset the request; [`Error::RequestIdle`] if it went silent.
pub async fn read_unary<M: Message + Default>(
    rpc: FlightRpc,
    mut body: Body,
    limit: usize,
    idle_timeout: Duration,
) -> Result<M> {
    let malformed = |problem| Error::MalformedRequest { rpc, problem };
    let mut received = BytesMut::new();
    loop {
        let next = tokio::time::timeout(idle_timeout, body.frame())
            .await
            .map_err(|_| Error::RequestIdle {
                rpc,
                idle: idle_timeout,
            })?;
        let Some(frame) = next else {
            break;
        };
        let frame = frame.map_err(|_| Error::Cancelled { rpc })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers end the body
        };
        received.extend_from_slice(&data);
        if received.len() >= PREFIX_BYTES {
            let declared = declared_len(&received);
            if declared > limit {
                return Err(Error::MessageTooLarge {
                    size: declared,
                    limit,
                });
            }
            if received.len() > PREFIX_BYTES + declared {
                // A second message; stop reading it.
                return Err(malformed(RequestProblem::NotOneMessage { messages: 2 }));
            }
        }
    }
    if received.is_empty() {
        return Err(malformed(RequestProblem::NotOneMessage { messages: 0 }));
    }
    if received.len() < PREFIX_BYTES || received.len() < PREFIX_BYTES + declared_len(&received) {
        return Err(malformed(RequestProblem::Truncated));
    }
    if received[0] != 0 {
        return Err(malformed(RequestProblem::CompressedWithoutEncoding));
    }
    received.advance(PREFIX_BYTES);
    M::decode(received.freeze()).map_err(|e| malformed(RequestProblem::Protobuf(e)))
}

/// The length a message prefix at the start of `bytes` declares.
fn declared_len(bytes: &[u8]) -> usize {
    u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize
}

/// A successful gRPC response with `body`: status 200 and the gRPC content type.
pub fn response(body: Body) -> http::Response<Body> {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A successful response carrying `messages`, then the `grpc-status: 0` trailers.
pub fn messages_response<M: Message>(
    messages: impl IntoIterator<Item = M>,
) -> http::Response<Body> {
    let mut framed = BytesMut::new();
    for message in messages {
        put_message(&message, &mut framed);
    }
    // No empty DATA frame for an answer of no messages: h2 clients count those as abuse.
    let data = (!framed.is_empty()).then(|| Ok::<_, Infallible>(Frame::data(framed.freeze())));
    let frames = data.into_iter().chain([Ok(Frame::trailers(ok_trailers()))]);
    response(Body::new(StreamBody::new(futures::stream::iter(frames))))
}

/// The response for a door's answer: its messages, or its error status.
pub fn messages_or_status<M: Message>(
    answer: Result<impl IntoIterator<Item = M>, Status>,
) -> http::Response<Body> {
    match answer {
        Ok(messages) => messages_response(messages),
        Err(status) => status_response(status),
    }
}

/// A successful response streaming `first`, then the messages `received` as they come, then
/// the status `outcome` ends with, in the trailers (an error after some messages, or OK).
pub fn streaming_response<M: Message + 'static>(
    first: M,
    received: mpsc::Receiver<M>,
    outcome: JoinHandle<Result<(), Status>>,
) -> http::Response<Body> {
    let first = futures::stream::once(async move { Ok(Frame::data(frame(&first))) });
    let rest = futures::stream::unfold(
        (received, Some(outcome)),
        |(mut received, outcome)| async move {
            if let Some(message) = received.recv().await {
                return Some((Ok(Frame::data(frame(&message))), (received, outcome)));
            }
            // Every sender is gone: the door has returned.
            let status = task_outcome(outcome?).await.err();
            let trailers = Frame::trailers(trailers(status));
            Some((Ok::<_, Infallible>(trailers), (received, None)))
        },
    );
    response(Body::new(StreamBody::new(first.chain(rest))))
}

/// A streaming response of `messages`, each framed as it comes (pulled only as the client
/// reads: HTTP/2's flow control paces the producer), ended by the trailers of the first error
/// or `grpc-status: 0`.
pub fn stream_response<M, S>(messages: S) -> http::Response<Body>
where
    M: Message + 'static,
    S: futures::Stream<Item = Result<M, Status>> + Send + 'static,
{
    let frames = futures::stream::unfold(Some(Box::pin(messages)), |messages| async move {
        let mut messages = messages?;
        match messages.next().await {
            Some(Ok(message)) => Some((Ok(Frame::data(frame(&message))), Some(messages))),
            Some(Err(status)) => Some((Ok(Frame::trailers(trailers(Some(status)))), None)),
            None => Some((Ok::<_, Infallible>(Frame::trailers(ok_trailers())), None)),
        }
    });
    response(Body::new(StreamBody::new(frames)))
}

/// What the task running a streaming door ended with.
pub async fn task_outcome(task: JoinHandle<Result<(), Status>>) -> Result<(), Status> {
    match task.await {
        Ok(outcome) => outcome,
        Err(source) => Err(Status::from(Error::TaskFailed {
            task: "do_put",
            source,
        })),
    }
}

/// The trailers that end a call: `grpc-status: 0`, or `status`'s code and message.
pub fn trailers(status: Option<Status>) -> http::HeaderMap {
    let Some(status) = status else {
        return ok_trailers();
    };
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // A message no header can carry: keep the code.
        trailers.clear();
        Status::new(status.code(), "")
            .add_header(&mut trailers)
            .ok();
    }
    trailers
}

/// The response for a call that failed: the status alone ("trailers-only").
pub fn status_response(status: Status) -> http::Response<Body> {
    status.into_http()
}

/// The response to a Handshake: one `HandshakeResponse` whose payload is the session token
/// (empty when the server is open), the same token in the `authorization: Bearer TOKEN`
/// header, where pyarrow's `authenticate_basic_token` reads it, and its lifetime in seconds in
/// the `x-flightcache-token-ttl` header.
pub fn handshake_response(answer: Result<Option<SessionToken>, Status>) -> http::Response<Body> {
    match answer {
        Ok(session) => {
            let payload = session
                .as_ref()
                .map(|s| Bytes::from(s.token.clone()))
                .unwrap_or_default();
            let mut response = messages_response(vec![arrow_flight::HandshakeResponse {
                protocol_version: 0,
                payload,
            }]);
            if let Some(session) = session {
                let headers = response.headers_mut();
                let bearer = Credentials::Bearer(session.token).to_header();
                if let Ok(value) = http::HeaderValue::from_str(&bearer) {
                    headers.insert(AUTHORIZATION, value);
                }
                headers.insert(TOKEN_TTL_HEADER, session.ttl.as_secs().into());
            }
            response
        }
        Err(status) => status_response(status),
    }
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

/// Append `message`, framed as one uncompressed gRPC message, to `out`.
fn put_message(message: &impl Message, out: &mut BytesMut) {
    let len = message.encoded_len();
    out.reserve(PREFIX_BYTES + len);
    put_prefix(len, out);
    message
        .encode(out)
        .expect("the buffer was sized for the message");
}

/// `message` framed as one uncompressed gRPC message.
pub fn frame(message: &impl Message) -> Bytes {
    let mut framed = BytesMut::new();
    put_message(message, &mut framed);
    framed.freeze()
}

#[cfg(test)]
mod tests {
    use arrow_flight::Ticket;

    use super::*;

    #[test]
    fn a_framed_message_is_prefix_then_protobuf() {
        let ticket = Ticket {
            ticket: Bytes::from_static(b"key"),
        };
        let framed = frame(&ticket);
        assert_eq!(framed[0], 0, "uncompressed");
        assert_eq!(&framed[1..5], &(ticket.encoded_len() as u32).to_be_bytes());
        assert_eq!(&framed[5..], ticket.encode_to_vec());
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_uncompressed_grpc_is_read() {
        let check = |pairs| check_request(FlightRpc::DoGet, &headers(pairs));
        assert!(check(&[("content-type", "application/grpc")]).is_ok());
        assert!(
            check(&[
                ("content-type", "application/grpc+proto"),
                ("grpc-encoding", "identity"),
            ])
            .is_ok()
        );
        assert!(matches!(
            check(&[
                ("content-type", "application/grpc"),
                ("grpc-encoding", "gzip")
            ]),
            Err(Error::UnsupportedEncoding { .. })
        ));
        for not_grpc in [
            &[("content-type", "text/plain")][..],
            &[("content-type", "application/grpc-web")][..],
            &[][..],
        ] {
            assert!(
                matches!(check(not_grpc), Err(Error::MalformedRequest { .. })),
                "{not_grpc:?}"
            );
        }
    }

    /// A request body that arrives in `chunk`-byte data frames.
    fn body_in_chunks(bytes: &[u8], chunk: usize) -> Body {
        let frames: Vec<Result<Frame<Bytes>, Status>> = bytes
            .chunks(chunk.max(1))
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        Body::new(StreamBody::new(futures::stream::iter(frames)))
    }

    async fn read(bytes: &[u8], chunk: usize, limit: usize) -> Result<Ticket> {
        let idle = Duration::from_secs(30);
        read_unary(FlightRpc::DoGet, body_in_chunks(bytes, chunk), limit, idle).await
    }

    fn problem(result: Result<Ticket>) -> RequestProblem {
        match result {
            Err(Error::MalformedRequest { problem, .. }) => problem,
            other => panic!("expected a malformed request, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_unary_request_is_read_however_its_frames_split_it() {
        let ticket = Ticket::new("données");
        let framed = frame(&ticket);
        for chunk in [1, 2, 5, 6, framed.len()] {
            assert_eq!(read(&framed, chunk, 1 << 20).await.unwrap(), ticket);
        }
    }

    #[tokio::test]
    async fn malformed_unary_requests_are_refused_with_their_problem() {
        let framed = frame(&Ticket::new("key"));
        assert!(matches!(
            problem(read(b"", 1, 1 << 20).await),
            RequestProblem::NotOneMessage { messages: 0 }
        ));
        assert!(matches!(
            problem(read(&framed[..framed.len() - 1], 3, 1 << 20).await),
            RequestProblem::Truncated
        ));
        assert!(matches!(
            problem(read(&framed[..3], 3, 1 << 20).await),
            RequestProblem::Truncated
        ));
        let twice = [&framed[..], &framed[..]].concat();
        assert!(matches!(
            problem(read(&twice, 4, 1 << 20).await),
            RequestProblem::NotOneMessage { .. }
        ));
        let mut compressed = framed.to_vec();
        compressed[0] = 1;
        assert!(matches!(
            problem(read(&compressed, 4, 1 << 20).await),
            RequestProblem::CompressedWithoutEncoding
        ));
        let garbage = [0, 0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            problem(read(&garbage, 4, 1 << 20).await),
            RequestProblem::Protobuf(_)
        ));
    }

    #[tokio::test]
    async fn an_over_large_unary_request_is_refused_from_its_prefix() {
        // Only the prefix arrives: the declared size alone is refused, nothing is buffered.
        let prefix = [0, 0x7f, 0xff, 0xff, 0xff];
        let err = read(&prefix, 5, 1 << 20).await.unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { size, limit } if size == 0x7fff_ffff && limit == 1 << 20),
            "{err:?}"
        );
    }
}
