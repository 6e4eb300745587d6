//! How flightcache speaks gRPC over HTTP/2, an implementation detail of the server: it reads
//! requests and writes responses; the server's router calls it, never the reverse.
//!
//! - [`connection`]: connections accepted within a limit, closed when idle, and what each is
//!   doing (requests and uploads in flight).
//! - [`grpc`]: which requests are read, message framing, unary requests, responses.
//! - [`receive`]: `DoPut` messages read with their bodies received straight into table memory.
//! - [`replay`]: `DoGet` answered by handing stored bodies to HTTP/2 without a copy.
//! - [`http2`]: HTTP/2 frame and window settings shared by both ends.

pub(crate) mod connection;
pub(crate) mod grpc;
pub(crate) mod http2;
pub(crate) mod receive;
pub(crate) mod replay;

use tokio::task::JoinHandle;

/// Aborts a task when dropped, however the future owning it ends.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
