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

/// How long a request may send nothing before it is cancelled by default: 30 s. An upload
/// holds an upload slot and memory while it waits, so a silent client must not keep them.
pub const DEFAULT_UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may have no request in flight before it is closed by default: 5
/// minutes. Clients reconnect by themselves when they next need the server.
pub const DEFAULT_IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(300);

/// Connections served at once by default; more are closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Uploads one connection may run at once by default, so that one client cannot take every
/// upload slot ([`DEFAULT_MAX_CONCURRENT_PUTS`]) over one connection.
pub const DEFAULT_MAX_PUTS_PER_CONNECTION: usize = 8;

/// How often the server pings a connection's peer over HTTP/2 by default, to find peers that
/// are gone without closing their connection: every 60 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// How long the server waits for a ping's answer before it closes the connection, by default.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// Uploads one connection may run at once ([`DEFAULT_MAX_PUTS_PER_CONNECTION`]).
    pub max_puts_per_connection: usize,
    /// Connections served at once ([`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// How long a request (an upload above all) may send nothing, or leave its
    /// acknowledgements unread, before it is cancelled ([`DEFAULT_UPLOAD_IDLE_TIMEOUT`]).
    pub upload_idle_timeout: Duration,
    /// How long a connection may have no request in flight before it is closed
    /// ([`DEFAULT_IDLE_CONNECTION_TIMEOUT`]).
    pub idle_connection_timeout: Duration,
    /// How often an HTTP/2 ping checks that a connection's peer is alive
    /// ([`DEFAULT_KEEPALIVE_INTERVAL`]); `None`: never.
    pub keepalive_interval: Option<Duration>,
    /// How long a ping may go unanswered before the connection is closed
    /// ([`DEFAULT_KEEPALIVE_TIMEOUT`]).
    pub keepalive_timeout: Duration,
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
            max_puts_per_connection: DEFAULT_MAX_PUTS_PER_CONNECTION,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            upload_idle_timeout: DEFAULT_UPLOAD_IDLE_TIMEOUT,
            idle_connection_timeout: DEFAULT_IDLE_CONNECTION_TIMEOUT,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            keep_freed: DEFAULT_KEEP_FREED,
            http2: Http2Settings::default(),
            advertise: None,
        }
    }
}
