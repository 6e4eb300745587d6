//! What flightcache puts on the wire, with no I/O: how keys travel in tickets and descriptors,
//! the location of its endpoints, the RPCs and their paths, the actions and the JSON bodies they answer, what `do_put`
//! answers, and record batches as Flight messages.
//!
//! - [`key`]: [`TableKey`](key::TableKey), from descriptors and tickets and back.
//! - [`location`]: the location every endpoint carries, and `--advertise`.
//! - [`rpc`]: [`FlightRpc`](rpc::FlightRpc), the Flight RPCs and their HTTP/2 paths.
//! - [`actions`]: the `do_action` vocabulary and the JSON each action answers.
//! - [`credentials`]: credentials in the `authorization` header, and what `whoami` answers.
//! - [`put`]: [`PutSummary`](put::PutSummary), what a finished `do_put` answers.
//! - [`ttl`]: times to live: the `do_put` header, and what the TTL actions answer.
//! - [`encode`]: record batches into Flight messages, the schema exactly as given.
//! - [`sql`]: Flight SQL's commands in descriptors, tickets and actions.
//! - [`stream`]: keys that grow: the append, offset and follow headers, and retention.
//! - [`rights`]: [`Right`](rights::Right), what a request needs.
//! - [`text`]: [`ClientText`](text::ClientText), client input quoted as a bounded prefix.
//!
//! It imports no other module of the crate: its parsers return their own problems
//! ([`KeyProblem`](key::KeyProblem), [`InvalidTtl`](ttl::InvalidTtl),
//! [`ActionProblem`](actions::ActionProblem)), which [`Error`](crate::Error) carries.

pub mod actions;
pub mod credentials;
pub mod encode;
pub mod key;
pub mod location;
pub mod put;
pub mod rights;
pub mod rpc;
pub mod sql;
pub mod stream;
pub mod text;
pub mod ttl;

/// Largest single Flight message accepted by default, by the server and the client: 2 GiB.
/// pyarrow sends a table chunk as one message however large it is, and gRPC's own ceiling is
/// just under 4 GiB; tonic's 4 MiB default would refuse ordinary uploads.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 2 << 30;
