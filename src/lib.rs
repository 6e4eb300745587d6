//! flightcache: an Apache Arrow Flight key-value table cache.
//!
//! Clients upload an Arrow record-batch stream with `do_put` under a key; any client streams it
//! back with `do_get`. Tables are kept as the validated Arrow IPC messages they arrived as, so a
//! get replays bytes instead of re-encoding them.
//!
//! # Layers
//! Each module imports only the modules listed above it (`python3 ../shared/tools/layers.py
//! src` checks it), so each can be read knowing only those:
//!
//! 1. [`protocol`]: what is on the wire, with no I/O and no other module of the crate:
//!    [`TableKey`] and how tickets and descriptors carry it, the RPCs, the actions and their
//!    JSON answers, rights, `do_put`'s answer, record batches as Flight messages, times to
//!    live, credentials in the authorization header. Its parsers return their own problems.
//! 2. [`error`]: [`Error`], which carries the protocol's problems and the store's (the
//!    budget's refusals, an upload's violations), and its one mapping to gRPC status codes.
//!    Beside it, `clock` (crate-private): the clock that times to live run on, which a test
//!    server lets an admin move forward.
//! 3. `store` (crate-private) and [`auth`], side by side, neither importing the other. The
//!    store is the cache: the key → table map, cached tables, uploads and their validation,
//!    table memory (slabs and their reuse), the memory budget, LRU eviction and expiry. Auth
//!    is who may do what: the users file, sign-in, session tokens, callers' rights.
//! 4. `transport` (crate-private): gRPC over HTTP/2: framing, `do_put` bodies received
//!    straight into table memory, `do_get` bodies sent without a copy, HTTP/2 settings. It
//!    reads requests and writes responses, and imports neither the store nor the server: the
//!    server hands it table memory and tables through its traits.
//! 5. `sql` (crate-private, feature `sql`): Flight SQL's engine, Apache DataFusion over the
//!    store's tables as one caller may read them, scanned in place; signed statement handles;
//!    the metadata SQL tools ask for.
//! 6. [`server`]: [`ServerConfig`], [`serve`], [`EmbeddedServer`], TLS, the metrics page; and
//!    (crate-private) the router that hands each request to its RPC's one door, and the
//!    doors, which authenticate every caller first. Beside it, [`client`]: [`CacheClient`]
//!    and its streams; neither imports the other.
//! 7. [`formats`] (Parquet, Arrow IPC and CSV files as batch streams, a batch at a time) and
//!    [`bench`](mod@bench) (the benchmark behind `flightcache bench`, and its JSON and
//!    raw-socket baselines) use the layers below.
//!
//! # Features
//! - `cli` (default): what the `flightcache` binary needs beside the library (its command
//!   line, progress bars, password prompts, allocator, logging), and `bench`.
//! - `bench`: the benchmark module and the throwaway certificates of `bench --tls`.
//! - `sql` (default): Flight SQL on the same port, run by Apache DataFusion.
//!
//! `cargo build --lib --no-default-features` builds the server, the client and the file
//! formats alone.
#![warn(missing_docs)]

pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod client;
pub(crate) mod clock;
pub mod error;
pub mod formats;
pub mod protocol;
pub mod server;
#[cfg(feature = "sql")]
pub(crate) mod sql;
pub(crate) mod store;
pub(crate) mod transport;

pub use client::{
    CacheClient, ClientConfig, ClientTls, PutOptions, ReadOptions, TableInfo, TableStream,
};
pub use error::{Error, Result};
pub use protocol::key::TableKey;
pub use server::{
    Durability, EmbeddedServer, RestoreReport, Server, ServerConfig, serve, serve_with_metrics,
};
pub use store::Eviction;
pub use transport::http2::Http2Settings;

/// Internals for this crate's own benchmarks (`benches/`), which time the hot paths one by
/// one. Not a public API: anything here may change without notice.
#[doc(hidden)]
pub mod internals {
    pub use crate::store::budget::{MemoryBudget, UploadAccount};
    pub use crate::store::slabs::{SlabPool, SlabWriter};
    pub use crate::store::table::Segment;
    pub use crate::store::upload::TableUpload;
    pub use crate::transport::grpc::frame;
    pub use crate::transport::receive::MessageReader;
}
