//! `Call`: one request as its door sees it, whoever read it off the wire.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::codegen::http;

use crate::error::Result;
use crate::server::tls::certificate_user;
use crate::transport::connection::{ConnectionState, client_certificates, connection_info};

/// One request of one RPC: who sent it, and its message, or why the message could not be
/// read.
///
/// The message is a `Result` so that a malformed request still enters its RPC's door, where
/// every per-request rule (tracing, counters, and later authentication) applies to it too.
#[derive(Debug)]
pub(crate) struct Call<T> {
    /// The peer's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The connection the call came on, when the transport tracks it.
    pub connection: Option<Arc<ConnectionState>>,
    /// The request's headers (gRPC's request metadata).
    pub headers: http::HeaderMap,
    /// The user the client's TLS certificate names (its subject's common name), if the
    /// connection is mutual TLS.
    pub certificate_user: Option<String>,
    /// The request message, decoded, or why it could not be.
    pub message: Result<T>,
}

impl<T> Call<T> {
    /// A call from the HTTP/2 request `parts`, carrying `message`.
    pub fn new(parts: &http::request::Parts, message: Result<T>) -> Self {
        let info = connection_info(&parts.extensions);
        Self {
            peer: info.map(|info| info.remote),
            connection: info.map(|info| Arc::clone(&info.state)),
            headers: parts.headers.clone(),
            certificate_user: client_certificates(&parts.extensions)
                .and_then(|chain| certificate_user(&chain)),
            message,
        }
    }
}
