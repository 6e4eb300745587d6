//! Running the service: `ServerConfig`, [`make_server`], [`serve`] and [`EmbeddedServer`].

use std::future::Future;
use std::net::SocketAddr;

use arrow_flight::flight_service_server::FlightServiceServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::abort::AbortWatch;
use crate::error::{Error, Result};
use crate::http2::Http2Settings;
use crate::receive::DirectPut;
use crate::replay::ReplayGet;
use crate::service::FlightCacheService;
use crate::store::TableStore;

/// The port `flightcache serve` listens on by default, the one pyarrow's examples use.
pub const DEFAULT_PORT: u16 = 8815;

/// Largest single Flight message accepted by default: 2 GiB. pyarrow sends a table chunk as
/// one message however large it is, and gRPC's own ceiling is just under 4 GiB; tonic's 4 MiB
/// default would refuse ordinary uploads.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 2 << 30;

/// Uploads accepted at once by default; more are refused with ResourceExhausted.
pub const DEFAULT_MAX_CONCURRENT_PUTS: usize = 64;

/// Everything that tunes a server. Every limit has a documented default.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest single Flight message accepted or sent, in bytes
    /// ([`DEFAULT_MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
    /// Uploads accepted at once ([`DEFAULT_MAX_CONCURRENT_PUTS`]).
    pub max_concurrent_puts: usize,
    /// HTTP/2 frame and window sizes.
    pub http2: Http2Settings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_concurrent_puts: DEFAULT_MAX_CONCURRENT_PUTS,
            http2: Http2Settings::default(),
        }
    }
}

/// The gRPC service for `store`, with the message limits of `config`, its request bodies
/// watched for client aborts (see [`AbortWatch`]), its uploads received straight into table
/// memory (see [`DirectPut`]) and its gets of cached tables served without copying (see
/// [`ReplayGet`]).
pub fn make_server(
    store: TableStore,
    config: &ServerConfig,
) -> AbortWatch<DirectPut<ReplayGet<FlightServiceServer<FlightCacheService>>>> {
    let service = FlightCacheService::new(store.clone(), config.max_concurrent_puts);
    let flight = FlightServiceServer::new(service.clone())
        .max_decoding_message_size(config.max_message_bytes)
        .max_encoding_message_size(config.max_message_bytes);
    AbortWatch::new(DirectPut::new(
        ReplayGet::new(flight, store),
        service,
        config.max_message_bytes,
    ))
}

/// Serve `store` on `listener` until `shutdown` completes, then stop accepting and finish the
/// calls in flight (mini-redis's `server::run`).
///
/// # Errors
/// [`Error::Io`] if the transport fails.
///
/// # Example
/// ```no_run
/// # async fn run() -> flightcache::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8815").await?;
/// let store = flightcache::TableStore::new();
/// let config = flightcache::ServerConfig::default();
/// flightcache::serve(listener, store, config, async {
///     tokio::signal::ctrl_c().await.ok();
/// })
/// .await
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    store: TableStore,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let _release_slabs = AbortOnDrop(tokio::spawn(
        store.slab_pool().release_expired_periodically(),
    ));
    let service = make_server(store, &config);
    Server::builder()
        .max_frame_size(config.http2.max_frame_bytes)
        .initial_stream_window_size(config.http2.stream_window_bytes)
        .initial_connection_window_size(config.http2.connection_window_bytes)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "server transport failed: {e}"
            )))
        })
}

/// Aborts a background task when dropped, however the future owning it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A server running on a task of the current tokio runtime, on 127.0.0.1 and a free port.
///
/// Used by `flightcache bench`, the tests and the benches. Dropping it asks the server to stop;
/// [`shutdown_and_wait`](Self::shutdown_and_wait) also waits and reports how it ended.
#[derive(Debug)]
pub struct EmbeddedServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl EmbeddedServer {
    /// Bind 127.0.0.1:0 and start serving an empty store.
    ///
    /// # Errors
    /// [`Error::Io`] if no port can be bound.
    pub async fn start(config: ServerConfig) -> Result<Self> {
        Self::start_with_store(TableStore::new(), config).await
    }

    /// Bind 127.0.0.1:0 and start serving `store`.
    ///
    /// # Errors
    /// [`Error::Io`] if no port can be bound.
    pub async fn start_with_store(store: TableStore, config: ServerConfig) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        // Read the address before spawning, so a caller can connect at once (no sleeps).
        let addr = listener.local_addr()?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, store, config, async {
            stopped.await.ok();
        }));
        Ok(Self {
            addr,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to, `grpc://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// Stop accepting, finish in-flight calls, and wait for the server to exit.
    ///
    /// # Errors
    /// The server's own error if it failed; [`Error::Io`] if its task panicked.
    pub async fn shutdown_and_wait(mut self) -> Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| {
                Error::Io(std::io::Error::other(format!("server task failed: {e}")))
            })?,
            None => Ok(()),
        }
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
    }
}
