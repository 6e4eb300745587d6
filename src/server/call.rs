//! `Call`: one request as its door sees it, whoever read it off the wire.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::codegen::http;

use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::transport::connection::{ConnectionState, connection_info};

/// One request of one RPC: who sent it, and its message, or why the message could not be
/// read.
///
/// The message is a `Result` so that a malformed request still enters its RPC's door, where
/// every per-request rule (tracing, counters, authentication) applies to it too.
#[derive(Debug)]
pub(crate) struct Call<T> {
    /// The peer's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The connection the call came on, when the transport tracks it.
    pub connection: Option<Arc<ConnectionState>>,
    /// The request's headers (gRPC's request metadata).
    pub headers: http::HeaderMap,
    /// Who the credentials say sent it (see `FlightCacheService::call`), judged once, from
    /// the headers and the connection's client certificate; every door but the Handshake's
    /// admits or refuses the call on it.
    pub caller: Result<Caller>,
    /// The request message, decoded, or why it could not be.
    pub message: Result<T>,
}

impl<T> Call<T> {
    /// A call from the HTTP/2 request `parts`, sent by `caller`, carrying `message`.
    pub fn new(parts: &http::request::Parts, caller: Result<Caller>, message: Result<T>) -> Self {
        let info = connection_info(&parts.extensions);
        Self {
            peer: info.map(|info| info.remote),
            connection: info.map(|info| Arc::clone(&info.state)),
            headers: parts.headers.clone(),
            caller,
            message,
        }
    }

    /// This call carrying `message` instead, and the message it carried.
    pub fn with_message<U>(self, message: Result<U>) -> (Call<U>, Result<T>) {
        let call = Call {
            peer: self.peer,
            connection: self.connection,
            headers: self.headers,
            caller: self.caller,
            message,
        };
        (call, self.message)
    }

    /// This call carrying `f` of its message instead.
    pub fn map_message<U>(self, f: impl FnOnce(Result<T>) -> Result<U>) -> Call<U> {
        let (call, message) = self.with_message(Ok(()));
        call.with_message(f(message)).0
    }

    /// The refusal its door will answer, if the caller's credentials are refused: a request
    /// so refused need not be read at all.
    pub fn refusal(&self) -> Option<Error> {
        match &self.caller {
            Err(Error::Unauthenticated { problem }) => {
                Some(Error::Unauthenticated { problem: *problem })
            }
            _ => None,
        }
    }
}
