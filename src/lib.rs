//! flightcache: an Apache Arrow Flight key-value table cache.
//!
//! Clients upload an Arrow record-batch stream with `do_put` under a key; any client streams it
//! back with `do_get`. Tables are kept as the validated Arrow IPC messages they arrived as, so a
//! get replays bytes instead of re-encoding them.
//!
//! # Layout
//! - [`key`]: [`TableKey`], and how descriptors and tickets name a table.
//! - [`upload`]: [`TableUpload`](upload::TableUpload) validates a `do_put` into a table.
//! - [`slab`]: table memory: bodies copied once into huge-page slabs, reused for 10 s once
//!   freed.
//! - [`table`]: [`CachedTable`], the stored messages, and its `FlightInfo`.
//! - [`store`]: [`TableStore`], the shared key → table map and counters.
//! - [`actions`]: the `do_action` vocabulary (`drop`, `clear`, `stats`).
//! - [`abort`]: telling a client's aborted upload from a finished one.
//! - [`service`]: [`FlightCacheService`], the Flight RPCs.
//! - [`replay`]: serving `do_get` of a cached table without copying its bodies.
//! - [`receive`]: receiving `do_put` bodies straight into table memory.
//! - [`grpc`]: gRPC's framing, for the two above.
//! - [`server`]: [`ServerConfig`], [`serve`], [`EmbeddedServer`].
//! - [`http2`]: HTTP/2 frame and window settings shared by both ends.
//! - [`client`]: [`CacheClient`], a typed client.
//! - [`encode`]: record batches into Flight messages, the schema exactly as given.
//! - [`files`]: Parquet, Arrow IPC and CSV files as batch streams, read and written a batch at a
//!   time.
//! - [`baseline`]: the JSON-over-TCP and raw-socket baselines `flightcache bench` compares with.
//! - [`bench`](mod@bench): benchmark runs, medians, GB/s and ratios.
//! - [`error`]: [`Error`], and its mapping to gRPC status codes.
#![warn(missing_docs)]

pub mod abort;
pub mod actions;
pub mod baseline;
pub mod bench;
pub mod client;
pub mod encode;
pub mod error;
pub mod files;
pub mod grpc;
pub mod http2;
pub mod key;
pub mod receive;
pub mod replay;
pub mod server;
pub mod service;
pub mod slab;
pub mod store;
pub mod table;
pub mod upload;

pub use client::{CacheClient, ClientConfig, TableInfo, TableStream};
pub use error::{Error, Result};
pub use key::TableKey;
pub use server::{EmbeddedServer, ServerConfig, serve};
pub use service::FlightCacheService;
pub use store::{StoreStats, TableStore};
pub use table::CachedTable;
