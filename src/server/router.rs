//! `FlightRouter`: the HTTP/2 service every Flight request enters. It reads each request's
//! message off the wire, hands it to its RPC's one door in
//! [`crate::server::service::FlightCacheService`], and writes the door's
//! answer back as gRPC.
//!
//! Why not tonic's generated `FlightServiceServer`: the two RPCs that move tables need their
//! own wire handling (`DoGet` hands stored bodies to h2 without a copy, `DoPut` receives bodies
//! straight into table memory, see [`replay`](crate::transport::replay) and [`receive`](crate::transport::receive)),
//! and with a generated server beside them every RPC would have two ways in, one of which a
//! check could miss. tonic's generated decoding also answers malformed bytes with INTERNAL,
//! which flightcache reserves for its own bugs. So every RPC is read here, in one way, and
//! tonic provides the HTTP/2 server underneath (connections, TLS, limits).

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::BoxFuture;
use prost::Message;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::error::{ClientText, Error, Result};
use crate::protocol::rpc::{FLIGHT_SERVICE, FlightRpc};
use crate::server::call::Call;
use crate::server::service::{FlightCacheService, GetAnswer};
use crate::transport::connection::{RequestInFlight, connection_info};
use crate::transport::grpc;
use crate::transport::receive::MessageReader;
use crate::transport::replay::replay_response;

/// `PutResult`s of one upload buffered for a client that is not reading them yet, before the
/// upload waits for it to read (each is a few bytes: an echo of a batch's app_metadata).
const PUT_RESULTS_BUFFERED: usize = 1024;

/// Routes every request of Flight's `FlightService` to its door.
#[derive(Debug, Clone)]
pub(crate) struct FlightRouter {
    service: FlightCacheService,
}

impl FlightRouter {
    /// Serve `service`'s doors.
    pub fn new(service: FlightCacheService) -> Self {
        Self { service }
    }
}

impl NamedService for FlightRouter {
    const NAME: &'static str = FLIGHT_SERVICE;
}

impl Service<http::Request<Body>> for FlightRouter {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.service.clone();
        Box::pin(async move { Ok(route(service, request).await) })
    }
}

/// Route `request`; the connection counts it in flight until its response is done.
async fn route(service: FlightCacheService, request: http::Request<Body>) -> http::Response<Body> {
    let in_flight = connection_info(request.extensions()).map(|info| info.state.start_request());
    let response = dispatch(service, request).await;
    match in_flight {
        Some(in_flight) => response.map(|body| {
            Body::new(TrackedBody {
                body,
                _in_flight: in_flight,
            })
        }),
        None => response,
    }
}

/// Read `request`, call its RPC's door, and encode the answer.
async fn dispatch(
    service: FlightCacheService,
    request: http::Request<Body>,
) -> http::Response<Body> {
    let (parts, body) = request.into_parts();
    let Some(rpc) = FlightRpc::from_path(parts.uri.path()) else {
        let err = Error::UnknownMethod {
            path: ClientText::new(parts.uri.path().as_bytes()),
        };
        return grpc::status_response(err.into());
    };
    let limit = service.config().max_request_bytes;
    let idle = service.config().request_idle_timeout;
    let call = service.new_call(&parts, grpc::check_request(rpc, &parts.headers));
    match rpc {
        FlightRpc::Handshake => {
            // Its credentials are in its headers; its messages are never read. Dropped before
            // the sign-in waits its turn, so HTTP/2 discards whatever the client sends.
            drop(body);
            grpc::handshake_response(service.handshake(call).await)
        }
        FlightRpc::ListFlights => {
            let call = unary(call, rpc, body, limit, idle).await;
            grpc::messages_or_status(service.list_flights(call).await)
        }
        FlightRpc::GetFlightInfo => {
            let call = unary(call, rpc, body, limit, idle).await;
            answer_one(service.get_flight_info(call).await)
        }
        FlightRpc::PollFlightInfo => {
            let call = unary(call, rpc, body, limit, idle).await;
            answer_one(service.poll_flight_info(call).await)
        }
        FlightRpc::GetSchema => {
            let call = unary(call, rpc, body, limit, idle).await;
            answer_one(service.get_schema(call).await)
        }
        FlightRpc::DoGet => {
            let call = unary(call, rpc, body, limit, idle).await;
            match service.do_get(call).await {
                Ok(GetAnswer::Table(read)) => {
                    replay_response(read.messages, read.headers, read.span)
                }
                Ok(GetAnswer::Sql(messages)) => {
                    grpc::stream_response(messages.map_err(tonic::Status::from))
                }
                Err(status) => grpc::status_response(status),
            }
        }
        FlightRpc::DoPut => {
            let max = service.config().max_message_bytes;
            let min_rate = service.config().min_upload_rate;
            // The messages are read by the door as it goes, only once it admitted the caller.
            let call = call.map_message(|readable| {
                readable.map(|()| MessageReader::new(body, max, idle, min_rate))
            });
            let (results, mut received) = mpsc::channel(PUT_RESULTS_BUFFERED);
            // The upload runs as a task of its own, to its end: it reads the request whether
            // or not the client reads the response yet, and an upload whose stream ended
            // cleanly is stored even if the client stops listening for the answer. (A client
            // that resets the stream ends it: the reader sees the reset.)
            let upload = tokio::spawn(async move { service.do_put(call, results).await });
            // Its headers go with its first result, or with its status, as gRPC's C++, Java
            // and Go servers send a streaming call's: a client that takes the headers as the
            // answer (Arrow's integration client, which then drops the call and looks the
            // table up) cannot overtake the store.
            match received.recv().await {
                Some(first) => grpc::streaming_response(first, received, upload),
                None => answer_empty(grpc::task_outcome(upload).await),
            }
        }
        FlightRpc::DoExchange => {
            drop(body); // never read: the door refuses every exchange
            answer_empty(service.do_exchange(call).await)
        }
        FlightRpc::DoAction => {
            let call = unary(call, rpc, body, limit, idle).await;
            grpc::messages_or_status(service.do_action(call).await)
        }
        FlightRpc::ListActions => {
            let call = unary(call, rpc, body, limit, idle).await;
            grpc::messages_or_status(service.list_actions(call).await)
        }
    }
}

/// `call` carrying the message of its unary request: read unless [`grpc::check_request`]
/// found it unreadable, or the caller is refused: then `body` is dropped unread at once, so
/// HTTP/2 discards what the stranger sends as it arrives, and the door answers
/// UNAUTHENTICATED from the caller alone.
async fn unary<M: Message + Default>(
    call: Call<()>,
    rpc: FlightRpc,
    body: Body,
    limit: usize,
    idle: Duration,
) -> Call<M> {
    let refusal = call.refusal();
    let (call, readable) = call.with_message(Ok(()));
    let message = match (refusal, readable) {
        (Some(refusal), _) => Err(refusal),
        (None, Err(unreadable)) => Err(unreadable),
        (None, Ok(())) => grpc::read_unary(rpc, body, limit, idle).await,
    };
    call.with_message(message).0
}

/// A response body that keeps its request counted in flight on its connection until it is
/// done or dropped.
struct TrackedBody {
    body: Body,
    _in_flight: RequestInFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The response for a door's one message or its error.
fn answer_one<M: Message>(answer: Result<M, tonic::Status>) -> http::Response<Body> {
    grpc::messages_or_status(answer.map(|message| [message]))
}

/// The response for a door that answers no message, only its status.
fn answer_empty(answer: Result<(), tonic::Status>) -> http::Response<Body> {
    grpc::messages_or_status(answer.map(|()| Vec::<arrow_flight::Empty>::new()))
}
