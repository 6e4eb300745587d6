//! How flightcache speaks gRPC over HTTP/2, an implementation detail of the server.
//!
//! - [`connection`]: connections accepted within a limit, closed when idle, and what each is
//!   doing (requests and uploads in flight).
//! - [`router`]: every request enters here and is handed to its RPC's one door.
//! - [`grpc`]: which requests are read, message framing, unary requests, responses.
//! - [`receive`]: `DoPut` messages read with their bodies received straight into table memory.
//! - [`replay`]: `DoGet` answered by handing stored bodies to HTTP/2 without a copy.
//! - [`http2`]: HTTP/2 frame and window settings shared by both ends.

pub(crate) mod connection;
pub(crate) mod grpc;
pub(crate) mod http2;
pub(crate) mod receive;
pub(crate) mod replay;
pub(crate) mod router;
