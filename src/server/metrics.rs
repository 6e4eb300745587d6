//! `serve --metrics`: the cache's numbers in the Prometheus text format, over HTTP.
//!
//! Every scrape reads the store's [`stats`](crate::store::TableStore::stats) and renders them
//! with `metrics-exporter-prometheus`, so the page is never staler than the request. Any path
//! answers (Prometheus asks for `/metrics`); the numbers are those of the `stats` action.
//!
//! The listener is guarded as the Flight port is (see [`crate::transport::connection`]): at
//! most [`MAX_METRICS_CONNECTIONS`] connections at once (a scraper needs one; more are closed
//! as soon as they are accepted), each closed once idle for the server's idle connection
//! timeout, and a request's headers must arrive within [`HEADER_READ_TIMEOUT`].

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio::net::TcpListener;

use crate::server::config::MAX_METRICS_CONNECTIONS;
use crate::store::TableStore;
use crate::store::disk::DataDir;
use crate::transport::connection::{ConnectionLimits, incoming};
use tonic::transport::server::Connected;

/// How long a metrics request's headers may take to arrive.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the Prometheus text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serve `store`'s metrics on `listener` until the task running this is dropped, closing
/// connections idle for `idle_timeout`.
pub async fn serve_metrics(
    listener: TcpListener,
    store: TableStore,
    disk: Option<std::sync::Arc<DataDir>>,
    idle_timeout: Duration,
) {
    let recorder = std::sync::Arc::new(PrometheusBuilder::new().build_recorder());
    metrics::with_local_recorder(recorder.as_ref(), describe);
    let limits = ConnectionLimits {
        listener: "metrics",
        max_connections: MAX_METRICS_CONNECTIONS,
        idle_timeout,
    };
    let mut connections = std::pin::pin!(incoming(listener, limits));
    while let Some(accepted) = connections.next().await {
        // Accepting failed (out of file descriptors, say): `incoming` paused already.
        let Ok(connection) = accepted else { continue };
        let state = connection.connect_info().state;
        let (store, disk) = (store.clone(), disk.clone());
        let recorder = std::sync::Arc::clone(&recorder);
        tokio::spawn(async move {
            let page = service_fn(move |_: Request<Incoming>| {
                // In flight while the page is made: the connection is idle between scrapes.
                let _in_flight = state.start_request();
                let body = render(&store, disk.as_deref(), &recorder);
                async move {
                    let response = Response::builder()
                        .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
                        .body(Full::new(Bytes::from(body)))
                        .expect("a static header is valid");
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(connection), page);
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "metrics connection ended");
            }
        });
    }
}

/// The metrics page for `store` now.
fn render(store: &TableStore, disk: Option<&DataDir>, recorder: &PrometheusRecorder) -> String {
    let mut stats = store.stats();
    if let Some(disk) = disk {
        disk.add_to(&mut stats);
    }
    metrics::with_local_recorder(recorder, || {
        metrics::gauge!("flightcache_tables").set(stats.tables as f64);
        metrics::gauge!("flightcache_rows").set(stats.rows as f64);
        metrics::gauge!("flightcache_table_bytes").set(stats.bytes as f64);
        metrics::gauge!("flightcache_memory_budget_bytes").set(stats.memory_budget as f64);
        metrics::gauge!("flightcache_memory_used_bytes").set(stats.memory_used as f64);
        for (held_by, bytes) in [
            ("tables", stats.memory_tables),
            ("uploads", stats.memory_uploads),
            ("freed_pool", stats.freed_bytes),
            ("process_overhead", stats.memory_overhead),
        ] {
            metrics::gauge!("flightcache_memory_held_bytes", "by" => held_by).set(bytes as f64);
        }
        metrics::counter!("flightcache_puts_total").absolute(stats.puts);
        metrics::counter!("flightcache_gets_total").absolute(stats.gets);
        metrics::counter!("flightcache_errors_total").absolute(stats.errors);
        metrics::counter!("flightcache_evictions_total").absolute(stats.evictions);
        metrics::counter!("flightcache_expirations_total").absolute(stats.expirations);
        metrics::counter!("flightcache_rejected_uploads_total").absolute(stats.rejected_uploads);
        metrics::counter!("flightcache_trimmed_rows_total").absolute(stats.trimmed_rows);
        metrics::counter!("flightcache_pressure_trims_total").absolute(stats.pressure_trims);
        if disk.is_some() {
            metrics::gauge!("flightcache_disk_tables").set(stats.disk_tables as f64);
            metrics::gauge!("flightcache_disk_bytes").set(stats.disk_bytes as f64);
            metrics::gauge!("flightcache_disk_queued_tables").set(stats.disk_queued as f64);
            metrics::counter!("flightcache_disk_write_failures_total")
                .absolute(stats.disk_write_failures);
        }
    });
    recorder.handle().render()
}

/// The help text of every metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("flightcache_tables", "Tables cached now.");
    describe_gauge!("flightcache_rows", "Rows in all cached tables.");
    describe_gauge!(
        "flightcache_table_bytes",
        "Arrow bytes held by all cached tables."
    );
    describe_gauge!(
        "flightcache_memory_budget_bytes",
        "The memory budget (serve --max-memory); 0 when there is none."
    );
    describe_gauge!(
        "flightcache_memory_used_bytes",
        "Memory charged to the budget: tables, uploads in progress, freed memory kept for reuse."
    );
    describe_gauge!(
        "flightcache_memory_held_bytes",
        "Memory charged to the budget, by what holds it."
    );
    describe_counter!("flightcache_puts_total", "Completed puts.");
    describe_counter!("flightcache_gets_total", "Gets started.");
    describe_counter!("flightcache_errors_total", "Failed requests.");
    describe_counter!(
        "flightcache_evictions_total",
        "Tables evicted to make room in the memory budget."
    );
    describe_counter!(
        "flightcache_expirations_total",
        "Keys removed when their time to live ran out."
    );
    describe_counter!(
        "flightcache_rejected_uploads_total",
        "Uploads (and queries or reads needing memory) refused because the memory budget had no room."
    );
    describe_counter!(
        "flightcache_trimmed_rows_total",
        "Rows retention trimmed from keys that grow."
    );
    describe_counter!(
        "flightcache_pressure_trims_total",
        "Segments of capped keys trimmed to make room in the memory budget before any key was evicted."
    );
    describe_gauge!(
        "flightcache_disk_tables",
        "Tables whose file is in the data directory (serve --data-dir)."
    );
    describe_gauge!("flightcache_disk_bytes", "The size of those files.");
    describe_gauge!(
        "flightcache_disk_queued_tables",
        "Tables whose file is still to be written (--durability background)."
    );
    describe_counter!(
        "flightcache_disk_write_failures_total",
        "Table files that could not be written: those tables are in memory only, or their puts failed."
    );
}
