//! Running a server: [`ServerConfig`], [`serve`], and [`EmbeddedServer`] for tests and
//! benchmarks. The Flight RPCs themselves are the doors of `service`.
//!
//! - [`config`]: [`ServerConfig`], every knob with its default.
//! - `router`: the HTTP/2 service every request enters, handing it to its door (crate-private).
//! - `service`: the one door of each RPC (crate-private).
//! - `call`: one request as a door sees it (crate-private).
//! - `slots`: upload slots shared fairly between callers (crate-private).
//! - `store_io`: the store as the transport sees it: table memory to receive uploads into,
//!   cached tables to replay (crate-private).
//! - `metrics`: `serve --metrics`, the numbers in the Prometheus text format (crate-private).
//! - [`tls`]: TLS and mutual TLS, and the user a client certificate names.

pub(crate) mod call;
pub mod config;
pub(crate) mod metrics;
pub(crate) mod router;
pub(crate) mod service;
pub(crate) mod slots;
pub(crate) mod sql_doors;
pub(crate) mod store_io;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::Server as GrpcServer;

pub use crate::store::disk::{Durability, RestoreReport};
pub use config::ServerConfig;

use std::sync::Arc;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::protocol::location::default_location;
use crate::server::router::FlightRouter;
use crate::store::TableStore;
use crate::store::budget::MemoryBudget;
use crate::store::disk::DataDir;
use crate::transport::AbortOnDrop;
use crate::transport::connection::{ConnectionLimits, incoming};
use service::FlightCacheService;

/// The HTTP/2 service that serves Flight for `service`: every request enters its RPC's door
/// through the router. Opaque on purpose: the transport is an implementation detail.
fn make_server(
    service: FlightCacheService,
) -> impl Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>,
> + NamedService
+ Clone
+ Send
+ 'static {
    FlightRouter::new(service)
}

/// Serve a new, empty cache configured by `config` on `listener` until `shutdown` completes,
/// then stop accepting and finish the calls in flight (mini-redis's `server::run`).
///
/// # Errors
/// [`Error::Serve`] if the transport fails.
///
/// # Example
/// ```no_run
/// # async fn run() -> flightcache::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8815").await?;
/// let config = flightcache::ServerConfig::default();
/// flightcache::serve(listener, config, async {
///     tokio::signal::ctrl_c().await.ok();
/// })
/// .await
/// # }
/// ```
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    serve_with_metrics(listener, None, config, shutdown).await
}

/// [`serve`], and serve the cache's metrics in the Prometheus text format over HTTP on
/// `metrics`, if given (`serve --metrics`).
///
/// # Errors
/// [`Error::Serve`] if the transport fails.
pub async fn serve_with_metrics(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    Server::open(config)?
        .serve(listener, metrics, shutdown)
        .await
}

/// A cache ready to serve: its store made and, with a data directory
/// ([`ServerConfig::data_dir`]), that directory locked and every table in it served again.
/// [`serve`](Self::serve) then answers on a listener.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    store: TableStore,
    disk: Option<Arc<DataDir>>,
}

impl Server {
    /// Make the cache `config` describes, and bring back the tables of its data directory.
    ///
    /// # Errors
    /// [`Error::DataDir`] if the data directory cannot be created, read or locked (another
    /// server uses it).
    pub fn open(config: ServerConfig) -> Result<Self> {
        let limit = config
            .max_memory
            .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX));
        let store = TableStore::new(
            MemoryBudget::new(limit),
            config.eviction,
            config.keep_freed,
            Clock::default(),
        );
        let disk = config
            .data_dir
            .as_deref()
            .map(|dir| DataDir::open(dir, config.durability, &store))
            .transpose()?;
        Ok(Self {
            config,
            store,
            disk,
        })
    }

    /// What came back from the data directory, if there is one.
    pub fn restored(&self) -> Option<RestoreReport> {
        self.disk.as_ref().map(|disk| disk.report())
    }

    /// Serve on `listener` until `shutdown` completes, then stop accepting, finish the calls
    /// in flight and write what the data directory still has queued (mini-redis's
    /// `server::run`); with `metrics`, serve the metrics page there too.
    ///
    /// # Errors
    /// [`Error::Serve`] if the transport fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let disk = self.disk.clone();
        let grace = self.config.shutdown_timeout;
        let served = self.serve_until(listener, metrics, shutdown).await;
        if let Some(disk) = disk {
            // The connections the stop closed may still be dropping their handlers, which
            // hold the data directory and so its lock: wait for them (within the shutdown
            // timeout), so that a server started on the same directory right after this one
            // stops finds it free.
            let waited_until = tokio::time::Instant::now() + grace;
            while Arc::strong_count(&disk) > 1 && tokio::time::Instant::now() < waited_until {
                tokio::time::sleep(DIRECTORY_RELEASE_POLL).await;
            }
            tokio::task::spawn_blocking(move || disk.finish())
                .await
                .map_err(|source| Error::TaskFailed {
                    task: "data directory writer",
                    source,
                })?;
        }
        served
    }

    async fn serve_until(
        self,
        listener: TcpListener,
        metrics: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let Self {
            config,
            store,
            disk,
        } = self;
        let location = match &config.advertise {
            Some(uri) => uri.clone(),
            None => default_location(listener.local_addr()?, config.tls.is_some()),
        };
        let incoming = incoming(
            listener,
            ConnectionLimits {
                listener: "Flight (--max-connections)",
                max_connections: config.max_connections,
                idle_timeout: config.idle_connection_timeout,
            },
        );
        let mut builder = GrpcServer::builder();
        if let Some(tls) = &config.tls {
            builder = builder
                .tls_config(tls.to_config())
                .map_err(|source| Error::Serve { source })?;
        }
        let builder = builder
            .max_frame_size(config.http2.max_frame_bytes)
            .initial_stream_window_size(config.http2.stream_window_bytes)
            .initial_connection_window_size(config.http2.connection_window_bytes)
            .http2_keepalive_interval(config.keepalive_interval)
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .max_concurrent_streams(config::MAX_STREAMS_PER_CONNECTION);
        let service = FlightCacheService::new(config, location, store, disk);
        #[cfg(unix)]
        let _reload_users = service
            .authenticator()
            .filter(|_| service.config().users_file.is_some())
            .map(|auth| AbortOnDrop(tokio::spawn(reload_users_on_sighup(auth))));
        let _release_slabs = AbortOnDrop(tokio::spawn(
            service.store().slab_pool().release_expired_periodically(),
        ));
        let _expire_keys = AbortOnDrop(tokio::spawn(service.store().clone().expire_periodically()));
        let _measure_overhead = service.config().count_process_memory.then(|| {
            let budget = std::sync::Arc::clone(service.store().budget());
            budget.count_process_memory(service.config().release_free_memory);
            AbortOnDrop(tokio::spawn(measure_overhead_periodically(budget)))
        });
        let _metrics = metrics.map(|listener| {
            AbortOnDrop(tokio::spawn(metrics::serve_metrics(
                listener,
                service.store().clone(),
                service.disk().cloned(),
                service.config().idle_connection_timeout,
            )))
        });
        // Once asked to stop, the calls in flight get `shutdown_timeout` to finish; then their
        // connections are closed (a client that stopped reading must not hold a stop).
        let grace = service.config().shutdown_timeout;
        let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
        let store = service.store().clone();
        let asked = {
            let stopping = std::sync::Arc::clone(&stopping);
            async move {
                shutdown.await;
                // Followers would wait for appends for ever: they end now, UNAVAILABLE.
                store.stop_followers();
                stopping.notify_one();
            }
        };
        let mut builder = builder;
        let serving = builder
            .add_service(make_server(service))
            .serve_with_incoming_shutdown(incoming, asked);
        tokio::select! {
            served = serving => served.map_err(|source| Error::Serve { source }),
            () = async {
                stopping.notified().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(
                    ?grace,
                    "calls still in flight after the shutdown timeout: closing their connections"
                );
                Ok(())
            }
        }
    }
}

/// How often a stopping server looks whether its connections let go of the data directory.
const DIRECTORY_RELEASE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Read the users file again on every SIGHUP, until the task running this is aborted.
#[cfg(unix)]
async fn reload_users_on_sighup(auth: std::sync::Arc<crate::auth::Authenticator>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: the users file will not be reloaded");
        return;
    };
    while hangups.recv().await.is_some() {
        match auth.reload() {
            Ok(users) => tracing::info!(users, "users file reloaded"),
            Err(err) => {
                tracing::error!(error = %err, "users file not reloaded; the users in force stay")
            }
        }
    }
}

/// Every [`OVERHEAD_PERIOD`](config::OVERHEAD_PERIOD), set `budget`'s overhead to the process's
/// resident memory that its charges do not cover, and make room if that overhead grew into
/// the limit, until the task running this is aborted.
async fn measure_overhead_periodically(budget: std::sync::Arc<crate::store::budget::MemoryBudget>) {
    let mut ticks = tokio::time::interval(config::OVERHEAD_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        budget.measure_overhead();
        budget.enforce_limit();
    }
}

/// A server running on a task of the current tokio runtime, on 127.0.0.1 and a free port.
///
/// Used by `flightcache bench`, the tests and the benches. Dropping it asks the server to stop;
/// [`shutdown_and_wait`](Self::shutdown_and_wait) also waits and reports how it ended.
#[derive(Debug)]
pub struct EmbeddedServer {
    addr: SocketAddr,
    tls: bool,
    metrics_addr: Option<SocketAddr>,
    restored: Option<RestoreReport>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<()>>>,
}

impl EmbeddedServer {
    /// Bind 127.0.0.1:0 and start serving the cache configured by `config` (empty, or what
    /// its data directory holds).
    ///
    /// # Errors
    /// [`Error::Io`] if no port can be bound; [`Error::DataDir`] if its data directory cannot
    /// be used.
    pub async fn start(config: ServerConfig) -> Result<Self> {
        Self::start_serving(SocketAddr::from(([127, 0, 0, 1], 0)), config, false).await
    }

    /// [`start`](Self::start) on `addr` rather than a free port: a server started again where
    /// clients already connect, say.
    ///
    /// # Errors
    /// [`Error::Io`] if `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr, config: ServerConfig) -> Result<Self> {
        Self::start_serving(addr, config, false).await
    }

    /// [`start`](Self::start), also serving metrics on another free port of 127.0.0.1
    /// ([`metrics_addr`](Self::metrics_addr)).
    ///
    /// # Errors
    /// [`Error::Io`] if no port can be bound.
    pub async fn start_with_metrics(config: ServerConfig) -> Result<Self> {
        Self::start_serving(SocketAddr::from(([127, 0, 0, 1], 0)), config, true).await
    }

    async fn start_serving(
        addr: SocketAddr,
        config: ServerConfig,
        with_metrics: bool,
    ) -> Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        // Read the addresses before spawning, so a caller can connect at once (no sleeps).
        let addr = listener.local_addr()?;
        let metrics = match with_metrics {
            true => Some(TcpListener::bind(("127.0.0.1", 0)).await?),
            false => None,
        };
        let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
        let tls = config.tls.is_some();
        let server = Server::open(config)?;
        let restored = server.restored();
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, metrics, async {
            stopped.await.ok();
        }));
        Ok(Self {
            addr,
            tls,
            metrics_addr,
            restored,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// What came back from the data directory at start, if the server has one.
    pub fn restored(&self) -> Option<RestoreReport> {
        self.restored
    }

    /// Where metrics are served, if the server was started
    /// [`with metrics`](Self::start_with_metrics).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients connect to, `grpc://127.0.0.1:PORT` (`grpc+tls://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stop accepting, finish in-flight calls, and wait for the server to exit.
    ///
    /// # Errors
    /// The server's own error if it failed; [`Error::TaskFailed`] if its task panicked.
    pub async fn shutdown_and_wait(mut self) -> Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            shutdown.send(()).ok();
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|source| Error::TaskFailed {
                task: "server",
                source,
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
