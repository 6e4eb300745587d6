//! `ServerConfig`: every knob of a server, each with its documented default. `flightcache
//! serve` maps its flags onto it and nothing else.

use std::time::Duration;

use crate::transport::http2::Http2Settings;

/// The port `flightcache serve` listens on by default, the one pyarrow's examples use.
pub const DEFAULT_PORT: u16 = 8815;

/// Largest single Flight message accepted by default: 2 GiB. pyarrow sends a table chunk as
/// one message however large it is, and gRPC's own ceiling is just under 4 GiB; tonic's 4 MiB
/// default would refuse ordinary uploads.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 2 << 30;

/// Largest request message of an RPC other than `do_put` (a ticket, a descriptor, an action)
/// accepted by default: 4 MiB, gRPC's usual default. These are names and small bodies; the
/// limit keeps a client from making the server buffer a large one.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

/// Uploads accepted at once by default; more are refused with ResourceExhausted.
pub const DEFAULT_MAX_CONCURRENT_PUTS: usize = 64;

/// How long the memory of dropped or replaced tables is kept for the next uploads by default:
/// 10 s, jemalloc's default decay.
pub const DEFAULT_KEEP_FREED: Duration = Duration::from_secs(10);

/// Everything that tunes a server. Every limit has a documented default.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest single Flight message accepted or sent, in bytes
    /// ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Largest request message of an RPC other than `do_put`, in bytes
    /// ([`DEFAULT_MAX_REQUEST_BYTES`]).
    pub max_request_bytes: usize,
    /// Uploads accepted at once ([`DEFAULT_MAX_CONCURRENT_PUTS`]).
    pub max_concurrent_puts: usize,
    /// How long the memory of dropped or replaced tables is kept for the next uploads before
    /// it goes back to the system ([`DEFAULT_KEEP_FREED`]; zero gives it back at once).
    /// Filling fresh memory is most of what a large put costs.
    pub keep_freed: Duration,
    /// HTTP/2 frame and window sizes.
    pub http2: Http2Settings,
    /// The location every `FlightEndpoint` names, for clients that connect to it to redeem
    /// the ticket (`grpc+tcp://HOST:PORT`). `None` (the default): the bound address, or
    /// `arrow-flight-reuse-connection://?` for a wildcard bind such as 0.0.0.0 (see
    /// [`crate::protocol::location`]).
    pub advertise: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_concurrent_puts: DEFAULT_MAX_CONCURRENT_PUTS,
            keep_freed: DEFAULT_KEEP_FREED,
            http2: Http2Settings::default(),
            advertise: None,
        }
    }
}
