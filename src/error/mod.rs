//! The library's error type, and the one mapping from it to a gRPC [`tonic::Status`].
//!
//! It sits just above [`protocol`](crate::protocol), whose names it carries (keys, RPCs,
//! rights), and below everything else: the problems of the store live here too
//! ([`budget`], [`upload`]), so that no module below the server needs to be known to it.

pub mod budget;
pub mod upload;

use std::fmt;
use std::path::PathBuf;

use arrow::error::ArrowError;
use tonic::{Code, Status};

use crate::protocol::rights::Right;
pub use crate::protocol::text::ClientText;
pub use budget::{OverBudget, RefusalReason};
pub use upload::UploadProblem;

use crate::protocol::actions::ActionProblem;
use crate::protocol::credentials::AuthProblem;
use crate::protocol::key::{KeyProblem, TableKey};
use crate::protocol::rpc::FlightRpc;
use crate::protocol::stream::InvalidHeader;
use crate::protocol::ttl::InvalidTtl;

/// What can go wrong in the server, the client or the file readers.
///
/// Variants carry data rather than formatted strings so that callers can match on them;
/// [`From<Error> for Status`](#impl-From<Error>-for-Status) chooses the gRPC code, and
/// [`Error::code`] tells which one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No table is cached under `key`.
    #[error("no table named {}; `flightcache list` shows the cached tables", key.quoted())]
    TableNotFound {
        /// The key that was asked for.
        key: TableKey,
    },

    /// A key (from a descriptor, a ticket, an action body or list criteria) is not usable.
    #[error("invalid table key: {problem}")]
    InvalidKey {
        /// What is wrong with it.
        problem: KeyProblem,
    },

    /// A request's bytes are not the gRPC message its RPC expects.
    #[error("malformed {rpc} request: {problem}; send a well-formed Flight request")]
    MalformedRequest {
        /// The RPC the request was sent to.
        rpc: FlightRpc,
        /// What is wrong with its bytes.
        problem: RequestProblem,
    },

    /// A `do_put` stream did not start with a flight descriptor naming the key.
    #[error(
        "the first do_put message carries no flight descriptor; \
         send FlightDescriptor.for_command(key) (or for_path) with the schema"
    )]
    MissingDescriptor,

    /// An upload was not a valid Arrow IPC stream (bad messages, a schema change, batches that
    /// do not match the schema); nothing was stored.
    #[error("upload for {} rejected, nothing was stored: {problem}", key.quoted())]
    InvalidUpload {
        /// The key the client tried to write.
        key: TableKey,
        /// What was wrong with the stream.
        problem: Box<UploadProblem>,
    },

    /// An append whose schema is not the key's: nothing was stored.
    #[error(
        "cannot append to {}: the upload's schema differs from the key's ({difference}); append \
         batches of the key's schema, or replace the key (a put without x-flightcache-append, \
         an ingest in mode replace)",
        key.quoted()
    )]
    AppendSchemaMismatch {
        /// The key appended to.
        key: TableKey,
        /// The first difference found, in words.
        difference: String,
    },

    /// An append that found its key replaced or dropped each time its file was written.
    #[error(
        "cannot append to {}: it was replaced or dropped again and again while the append was \
         written; nothing was stored, try again",
        key.quoted()
    )]
    AppendRaced {
        /// The key appended to.
        key: TableKey,
    },

    /// A read from an offset before the oldest row the key still keeps.
    #[error(
        "offset {offset} of {} is no longer kept: its oldest kept row is {earliest} (the rows \
         before it were trimmed by its retention or to make room in memory); read from \
         {earliest} or `earliest`",
        key.quoted()
    )]
    OffsetOutOfRange {
        /// The key read.
        key: TableKey,
        /// The offset asked for.
        offset: u64,
        /// The oldest row the key keeps.
        earliest: u64,
    },

    /// A read from a row inside a stored batch, which must encode the rest of that batch
    /// again, and the memory budget had no room for what that holds.
    #[error("{}", read_over_budget_message(key, *offset, batch, refusal))]
    ReadOverBudget {
        /// The key read.
        key: TableKey,
        /// The row asked for.
        offset: u64,
        /// The rows of the stored batch it is inside.
        batch: std::ops::Range<u64>,
        /// What the budget could not make room for.
        refusal: Box<OverBudget>,
    },

    /// The server is stopping: a follower's stream ends.
    #[error(
        "the server is stopping; reconnect and resume from the offset after the rows you have \
         (x-flightcache-from)"
    )]
    Stopping,

    /// A put that caps the key's retention without appending to it.
    #[error(
        "{header} caps a key that grows: send it with x-flightcache-append: 1, or cap the key \
         later with the `retain` action"
    )]
    RetentionWithoutAppend {
        /// The retention header given.
        header: &'static str,
    },

    /// A request header of flightcache's whose value it cannot use.
    #[error("invalid {header} header {given}: give {expected}")]
    InvalidHeader {
        /// The header's name.
        header: &'static str,
        /// What the client gave, cut to a bounded prefix.
        given: ClientText,
        /// What it takes.
        expected: &'static str,
    },

    /// An action that flightcache does not know.
    #[error("unknown action {name}; valid actions: {valid}", valid = crate::protocol::actions::action_names().join(", "))]
    UnknownAction {
        /// The action's name as the client sent it, cut to a bounded prefix.
        name: ClientText,
    },

    /// A request without valid credentials, on a server with users.
    #[error("not authenticated: {problem}")]
    Unauthenticated {
        /// What is missing or wrong.
        problem: AuthProblem,
    },

    /// An authenticated user without the right the request needs.
    #[error(
        "user `{user}` may not {right} {}{}; ask an administrator to grant it in the users file",
        match (key, right) {
            (Some(key), _) => format!("`{key}`"),
            (None, Right::Admin) => "the cache".to_string(),
            (None, _) => "any key".to_string(),
        },
        if patterns.is_empty() { String::new() } else { format!(" (its {right} keys: {patterns})") }
    )]
    PermissionDenied {
        /// The user.
        user: String,
        /// The right it lacks.
        right: Right,
        /// The key it asked about, if any.
        key: Option<TableKey>,
        /// The user's patterns for that right, joined.
        patterns: String,
    },

    /// A time to live that is not a number of seconds over 0 (and at most 100 years).
    #[error(
        "invalid time to live {given}: give a number of seconds over 0, such as \
         `x-flightcache-ttl: 600` on a put or {{\"key\": \"k\", \"seconds\": 600}} for `expire`"
    )]
    InvalidTtl {
        /// What the client gave, cut to a bounded prefix.
        given: ClientText,
    },

    /// An action's body is not what the action takes.
    #[error("the body of action `{action}` is not {expected}")]
    InvalidActionBody {
        /// The action.
        action: &'static str,
        /// What its body must be.
        expected: &'static str,
    },

    /// The client cancelled a request before it was read whole (or its connection broke).
    #[error("the client cancelled its {rpc} request")]
    Cancelled {
        /// The RPC.
        rpc: FlightRpc,
    },

    /// A request that sent nothing for the server's idle timeout; it was cancelled (an upload
    /// stores nothing).
    #[error(
        "the {rpc} request sent nothing for {} s, the server's --request-idle-timeout; it was \
         cancelled and nothing was stored",
        idle.as_secs_f64()
    )]
    RequestIdle {
        /// The RPC.
        rpc: FlightRpc,
        /// How long it was idle.
        idle: std::time::Duration,
    },

    /// An upload that moved fewer bytes in a window of the idle timeout than the server's
    /// minimum rate asks; it was cancelled, so that it does not hold an upload slot.
    #[error(
        "the upload moved {received} bytes in the last {} s (--request-idle-timeout), under the \
         server's minimum of {min_rate} bytes/s (--min-upload-rate); it was cancelled and \
         nothing was stored: send faster, or ask the operator to lower the minimum",
        window.as_secs_f64()
    )]
    UploadTooSlow {
        /// Bytes received in the window.
        received: u64,
        /// The window: the idle timeout.
        window: std::time::Duration,
        /// The minimum rate, in bytes per second.
        min_rate: u64,
    },

    /// The client aborted its upload (or its connection broke); nothing was stored.
    #[error("the upload{} was cancelled by the client; nothing was stored", for_key(key.as_ref()))]
    UploadCancelled {
        /// The key the client tried to write, if its first message arrived.
        key: Option<TableKey>,
    },

    /// A single message is larger than the server accepts.
    #[error(
        "a message of {size} bytes is over the server's limit of {limit} bytes; \
         send smaller batches or raise --max-message-size on the server"
    )]
    MessageTooLarge {
        /// The message's declared size in bytes.
        size: usize,
        /// The server's limit in bytes.
        limit: usize,
    },

    /// Every upload slot is taken.
    #[error(
        "{limit} uploads are already in progress, the server's limit (--max-concurrent-puts); \
         retry later or raise the limit on the server"
    )]
    TooManyUploads {
        /// The configured number of concurrent uploads.
        limit: usize,
    },

    /// The memory budget has no room for an upload, even after making room; nothing was
    /// stored, and the table the upload would have replaced is untouched.
    #[error("{}", over_budget_message(key.as_ref(), refusal))]
    OverBudget {
        /// The key being uploaded, once known.
        key: Option<TableKey>,
        /// What the budget could not make room for.
        refusal: OverBudget,
    },

    /// The caller (a user, or an address on a server without users) runs as many uploads as
    /// one caller may, and none ended within the wait.
    #[error(
        "you already run {limit} uploads, the server's limit per caller \
         (--max-puts-per-caller: a user's, or an address's on a server without users); wait for \
         one to finish"
    )]
    TooManyUploadsFromCaller {
        /// The configured number of uploads per caller.
        limit: usize,
    },

    /// The connection runs as many uploads as one connection may.
    #[error(
        "this connection already runs {limit} uploads, the server's limit per connection \
         (--max-puts-per-connection); wait for one to finish, or upload over another connection"
    )]
    TooManyUploadsOnConnection {
        /// The configured number of uploads per connection.
        limit: usize,
    },

    /// An RPC that flightcache does not offer.
    #[error(
        "{rpc} is not offered by flightcache; use do_put, do_get, get_flight_info, \
         poll_flight_info, get_schema, list_flights or do_action"
    )]
    Unimplemented {
        /// The RPC.
        rpc: FlightRpc,
    },

    /// A SQL statement that cannot be parsed, planned or run: the engine's message, which
    /// names the position in the statement where it has one.
    #[error("SQL: {message}")]
    SqlStatement {
        /// What the engine reported.
        message: String,
    },

    /// A Flight SQL message that does not decode as the type its URL names.
    #[error(transparent)]
    BadSqlMessage(#[from] crate::protocol::sql::BadSqlMessage),

    /// An ingest that would replace a cached table without being asked to.
    #[error(
        "{} is cached already; ingest with mode \"replace\" to replace it, or drop it first",
        key.quoted()
    )]
    TableExists {
        /// Its key.
        key: TableKey,
    },

    /// A Flight SQL ingest flightcache does not do.
    #[error("Flight SQL ingest: {0} is not supported by flightcache")]
    Ingest(#[from] crate::protocol::sql::IngestProblem),

    /// The SQL engine failed on its own (a bug, or a task that died).
    #[error("SQL: internal error: {message}")]
    SqlInternal {
        /// What the engine reported.
        message: String,
    },

    /// A query that needs more memory than the budget can give it.
    #[error(
        "SQL: the query needs more memory than the memory budget has free ({message}); \
         select fewer columns or rows, or raise --max-memory"
    )]
    SqlOutOfMemory {
        /// What the engine reported.
        message: String,
    },

    /// A Flight SQL query refused because as many as the server runs at once are running.
    #[error(
        "SQL: {limit} queries are running, as many as this server runs at once \
         (serve --max-queries); retry when one has finished"
    )]
    TooManyQueries {
        /// The limit.
        limit: usize,
    },

    /// A Flight SQL query cancelled by `CancelFlightInfo` (ABORTED: pyarrow raises
    /// `KeyboardInterrupt` for a CANCELLED status).
    #[error("SQL: the query was cancelled (CancelFlightInfo)")]
    QueryCancelled,

    /// A Flight SQL query that ran longer than the server allows.
    #[error(
        "SQL: the query ran longer than {limit:?} and was cancelled (serve --query-timeout); \
         select less, or ask the operator for a longer limit"
    )]
    QueryTimeout {
        /// The limit.
        limit: std::time::Duration,
    },

    /// A Flight SQL command or feature that flightcache does not offer.
    #[error("Flight SQL: {what} is not supported by flightcache")]
    SqlUnsupported {
        /// The command or feature.
        what: String,
    },

    /// A statement handle or query ticket that this server did not issue to this caller.
    #[error(
        "Flight SQL: the statement handle or ticket is not one this server issued to you; \
         prepare or plan the statement again"
    )]
    SqlHandle,

    /// An `advance-clock` action sent to a server whose clock tests may not move.
    #[error("this server's clock cannot be moved; start a test server with `serve --test-clock`")]
    TestClockOff,

    /// A request to a path that is no Flight RPC.
    #[error("{path} is not a Flight RPC; flightcache serves arrow.flight.protocol.FlightService")]
    UnknownMethod {
        /// The request's path, cut to a bounded prefix.
        path: ClientText,
    },

    /// A request whose messages are compressed with a gRPC encoding flightcache does not read.
    #[error(
        "gRPC message compression ({encoding}) is not supported; send uncompressed gRPC \
         messages (Arrow IPC buffer compression, such as IpcWriteOptions(compression=\"zstd\"), is)"
    )]
    UnsupportedEncoding {
        /// The request's `grpc-encoding`, cut to a bounded prefix.
        encoding: ClientText,
    },

    /// The data directory cannot be used (`serve --data-dir`).
    #[error("data directory {}: {problem}", path.display())]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What is wrong, and what to do.
        problem: String,
    },

    /// A put whose file the data directory's disk had no room for (`--durability always`).
    #[error(
        "the disk of the data directory is full: the upload for {} was not stored; free disk \
         space or drop tables",
        key.quoted()
    )]
    DiskFull {
        /// The key of the put.
        key: TableKey,
    },

    /// A put whose file could not be written (`--durability always`).
    #[error("the upload for {} was not stored: writing its file failed: {source}", key.quoted())]
    DiskWrite {
        /// The key of the put.
        key: TableKey,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },

    /// A table whose file turned out corrupt when it was first read after a restart.
    #[error(
        "the table {} came back from disk corrupt and was moved to the data directory's \
         quarantine; put it again",
        key.quoted()
    )]
    CorruptTable {
        /// Its key.
        key: TableKey,
    },

    /// Our own bug: Arrow failed on data the server had accepted.
    #[error("internal error while {context}: {source}")]
    Internal {
        /// What the server was doing.
        context: &'static str,
        /// The underlying Arrow error.
        #[source]
        source: Box<ArrowError>,
    },

    /// The server's transport failed.
    #[error("the server's transport failed: {source}")]
    Serve {
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },

    /// A background task panicked or was cancelled.
    #[error("the {task} task failed: {source}")]
    TaskFailed {
        /// Which task.
        task: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },

    /// The server could not be reached.
    #[error(
        "cannot reach the flightcache server at {addr}; start one with `flightcache serve` or \
         pass --server"
    )]
    Connect {
        /// The address the client tried.
        addr: String,
        /// Why the connection failed.
        #[source]
        source: ConnectProblem,
    },

    /// The server answered a call with a gRPC error this client does not map to a variant.
    #[error("server error ({code:?}): {message}")]
    Rpc {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },

    /// The server's answer did not follow the protocol.
    #[error("unexpected answer from the server: {problem}")]
    UnexpectedAnswer {
        /// What was wrong with it.
        problem: AnswerProblem,
    },

    /// A file's format cannot be told from its name.
    #[error(
        "cannot tell the format of `{}` from its extension; use .parquet, .arrow, .feather or .csv",
        path.display()
    )]
    UnknownFileFormat {
        /// The file.
        path: PathBuf,
    },

    /// An Arrow error on the client side (encoding, decoding, converting).
    #[error(transparent)]
    Arrow(#[from] ArrowError),

    /// A Parquet file could not be read or written.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),

    /// A file or socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The message of [`Error::OverBudget`]: the budget, what is used, what was needed, and what
/// to do.
fn over_budget_message(key: Option<&TableKey>, refusal: &OverBudget) -> String {
    let budget = HumanBytes(refusal.limit as u64);
    let needed = HumanBytes(refusal.needed as u64);
    match refusal.reason {
        RefusalReason::LargerThanBudget => format!(
            "the upload{} does not fit in the server's memory budget of {budget} (--max-memory) \
             even with nothing else cached: it holds {} and needed {needed} more, beside the \
             {} the server process itself holds; nothing was stored. Upload a smaller table \
             (or smaller batches: a compressed batch is checked decompressed) or raise \
             --max-memory",
            for_key(key),
            HumanBytes(refusal.upload_bytes as u64),
            HumanBytes(refusal.overhead as u64),
        ),
        RefusalReason::NothingToFree => format!(
            "the server's memory budget of {budget} (--max-memory) is full: {} is in use and the \
             upload{} needed {needed} more, and nothing more may be evicted (--eviction \
             noeviction, or what is left is held by uploads in progress, by tables being read, \
             or by the table the upload would replace); nothing was stored. Drop tables, retry \
             later or raise --max-memory",
            HumanBytes(refusal.used as u64),
            for_key(key),
        ),
        RefusalReason::SystemRefused => format!(
            "the system refused the server {needed} of memory for the upload{}, although its \
             memory budget of {budget} (--max-memory) had room: a memory or address-space limit \
             (ulimit -v, prlimit --as) is below the budget; nothing was stored. Lower \
             --max-memory below that limit, or raise the limit",
            for_key(key),
        ),
    }
}

/// The message of [`Error::ReadOverBudget`]: where the read started, the batch's rows, what it
/// needed, and what to do.
fn read_over_budget_message(
    key: &TableKey,
    offset: u64,
    batch: &std::ops::Range<u64>,
    refusal: &OverBudget,
) -> String {
    let budget = HumanBytes(refusal.limit as u64);
    let needed = HumanBytes(refusal.needed as u64);
    let (start, end) = (batch.start, batch.end);
    let head = format!(
        "row {offset} of {} is inside a stored batch (rows {start}..{end}), and sending the \
         rest of it from there needed {needed} more",
        key.quoted()
    );
    match refusal.reason {
        RefusalReason::LargerThanBudget => format!(
            "{head}, more than the server's memory budget of {budget} (--max-memory) holds \
             beside the key's own table. Read from row {start} or {end}, which needs nothing, \
             or raise --max-memory"
        ),
        RefusalReason::NothingToFree | RefusalReason::SystemRefused => format!(
            "{head}, and the server's memory budget of {budget} (--max-memory) has no room \
             for it now ({} in use, nothing more may be evicted). Read from row {start} or \
             {end}, which needs nothing, or retry later",
            HumanBytes(refusal.used as u64),
        ),
    }
}

impl Error {
    /// This error of an upload, naming `key` where it names no key yet: the transport reads
    /// an upload's messages without knowing its key, the upload knows it.
    #[must_use]
    pub fn for_key(self, key: &TableKey) -> Self {
        match self {
            Error::UploadCancelled { key: None } => Error::UploadCancelled {
                key: Some(key.clone()),
            },
            Error::OverBudget { key: None, refusal } => Error::OverBudget {
                key: Some(key.clone()),
                refusal,
            },
            other => other,
        }
    }
}

/// Bytes as a person reads them: `512 B`, `1.50 KiB`, `616.52 MiB`, `17.66 GiB` (binary
/// units, two decimals, as `flightcache` prints them elsewhere).
pub(crate) struct HumanBytes(pub u64);

impl fmt::Display for HumanBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.2} {}", UNITS[unit])
    }
}

impl From<InvalidHeader> for Error {
    fn from(invalid: InvalidHeader) -> Self {
        Error::InvalidHeader {
            header: invalid.header,
            given: invalid.given,
            expected: invalid.expected,
        }
    }
}

impl From<OverBudget> for Error {
    fn from(refusal: OverBudget) -> Self {
        Error::OverBudget { key: None, refusal }
    }
}

fn for_key(key: Option<&TableKey>) -> String {
    key.map(|key| format!(" for {}", key.quoted()))
        .unwrap_or_default()
}

/// What is wrong with a request's bytes ([`Error::MalformedRequest`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestProblem {
    /// The request ended inside a message.
    #[error("the request ended inside a message")]
    Truncated,
    /// A unary request carried no message, or more than one.
    #[error("a unary request must carry exactly one message, it carried {messages}")]
    NotOneMessage {
        /// How many it carried.
        messages: usize,
    },
    /// A message is flagged compressed in a request that names no `grpc-encoding`.
    #[error("a message is flagged compressed, but the request names no grpc-encoding")]
    CompressedWithoutEncoding,
    /// The request is not gRPC (its content type).
    #[error("content type {content_type} is not gRPC; send application/grpc")]
    NotGrpc {
        /// The content type, cut to a bounded prefix.
        content_type: ClientText,
    },
    /// A protobuf varint is cut off or longer than ten bytes.
    #[error("a varint is cut off or too long")]
    BadVarint,
    /// A protobuf field of a wire type that does not exist.
    #[error("a field has the unknown wire type {wire_type}")]
    UnknownWireType {
        /// The wire type.
        wire_type: u64,
    },
    /// A protobuf field longer than what is left of its message.
    #[error("a field runs past the end of its message")]
    FieldPastEnd,
    /// The bytes are not the protobuf message the RPC takes.
    #[error("not a valid protobuf message ({0})")]
    Protobuf(#[from] prost::DecodeError),
}

/// Why a client could not connect ([`Error::Connect`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectProblem {
    /// The URL cannot be used.
    #[error("{0}")]
    BadUrl(&'static str),
    /// The transport failed to connect.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// What was wrong with a server's answer ([`Error::UnexpectedAnswer`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerProblem {
    /// An RPC that must answer something answered nothing.
    #[error("{rpc} answered nothing")]
    Missing {
        /// What was asked.
        rpc: &'static str,
    },
    /// An answer is not the JSON it should be.
    #[error("the {what} answer is not the JSON expected ({source})")]
    NotJson {
        /// Which answer.
        what: String,
        /// Why it could not be read.
        source: serde_json::Error,
    },
    /// A table stream that breaks Flight's rules.
    #[error("{0}")]
    BrokenStream(&'static str),
    /// A `FlightInfo` without a descriptor.
    #[error("a FlightInfo has no descriptor")]
    NoDescriptor,
    /// The Flight client library refused the answer.
    #[error(transparent)]
    Flight(Box<arrow_flight::error::FlightError>),
    /// A baseline server of `flightcache bench` answered out of turn.
    #[error("baseline protocol: {0}")]
    Baseline(&'static str),
    /// The table a benchmark got back is not the one it put.
    #[error("the table Flight returned differs from the one put")]
    TableDiffers,
}

impl From<KeyProblem> for Error {
    fn from(problem: KeyProblem) -> Self {
        Error::InvalidKey { problem }
    }
}

impl From<InvalidTtl> for Error {
    fn from(InvalidTtl { given }: InvalidTtl) -> Self {
        Error::InvalidTtl { given }
    }
}

impl From<ActionProblem> for Error {
    fn from(problem: ActionProblem) -> Self {
        match problem {
            ActionProblem::Unknown { name } => Error::UnknownAction { name },
            ActionProblem::Body { action, expected } => {
                Error::InvalidActionBody { action, expected }
            }
            ActionProblem::Key(problem) => problem.into(),
            ActionProblem::Ttl(problem) => problem.into(),
        }
    }
}

impl Error {
    /// Turn a `Status` received from a peer into the closest [`Error`] variant.
    ///
    /// `key` is the table the call was about, if any: a `NotFound` for it becomes
    /// [`Error::TableNotFound`].
    pub fn from_status(status: Status, key: Option<&TableKey>) -> Self {
        match (status.code(), key) {
            (Code::NotFound, Some(key)) => Error::TableNotFound { key: key.clone() },
            (code, _) => Error::Rpc {
                code,
                message: status.message().to_string(),
            },
        }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::TableNotFound { .. } => Code::NotFound,
            Error::InvalidKey { .. }
            | Error::MalformedRequest { .. }
            | Error::MissingDescriptor
            | Error::InvalidUpload { .. }
            | Error::UnknownAction { .. }
            | Error::InvalidTtl { .. }
            | Error::InvalidActionBody { .. }
            | Error::AppendSchemaMismatch { .. }
            | Error::InvalidHeader { .. }
            | Error::RetentionWithoutAppend { .. } => Code::InvalidArgument,
            Error::OffsetOutOfRange { .. } => Code::OutOfRange,
            Error::AppendRaced { .. } => Code::Aborted,
            Error::Stopping => Code::Unavailable,
            Error::Cancelled { .. } | Error::UploadCancelled { .. } => Code::Cancelled,
            Error::RequestIdle { .. } | Error::UploadTooSlow { .. } => Code::DeadlineExceeded,
            Error::MessageTooLarge { .. }
            | Error::TooManyUploads { .. }
            | Error::OverBudget { .. }
            | Error::ReadOverBudget { .. }
            | Error::TooManyUploadsOnConnection { .. }
            | Error::TooManyUploadsFromCaller { .. } => Code::ResourceExhausted,
            Error::Unimplemented { .. }
            | Error::UnknownMethod { .. }
            | Error::UnsupportedEncoding { .. } => Code::Unimplemented,
            Error::TestClockOff => Code::FailedPrecondition,
            Error::SqlStatement { .. } | Error::SqlHandle | Error::BadSqlMessage(_) => {
                Code::InvalidArgument
            }
            Error::SqlOutOfMemory { .. } | Error::TooManyQueries { .. } => Code::ResourceExhausted,
            Error::QueryTimeout { .. } => Code::DeadlineExceeded,
            // Not CANCELLED: pyarrow turns a CANCELLED status into KeyboardInterrupt.
            Error::QueryCancelled => Code::Aborted,
            Error::SqlInternal { .. } => Code::Internal,
            Error::TableExists { .. } => Code::AlreadyExists,
            Error::Ingest(crate::protocol::sql::IngestProblem::Elsewhere(_)) => {
                Code::InvalidArgument
            }
            Error::Ingest(_) => Code::Unimplemented,
            Error::SqlUnsupported { .. } => Code::Unimplemented,
            Error::DiskFull { .. } => Code::ResourceExhausted,
            Error::CorruptTable { .. } => Code::DataLoss,
            Error::DataDir { .. } | Error::DiskWrite { .. } => Code::Internal,
            Error::Connect { .. } => Code::Unavailable,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::Rpc { code, .. } => *code,
            Error::UnknownFileFormat { .. } => Code::InvalidArgument,
            Error::Internal { .. }
            | Error::Serve { .. }
            | Error::TaskFailed { .. }
            | Error::UnexpectedAnswer { .. }
            | Error::Arrow(_)
            | Error::Parquet(_)
            | Error::Io(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    /// The one place where an [`Error`] becomes a gRPC status. Client mistakes are logged at
    /// debug level, our own faults at error level.
    fn from(err: Error) -> Status {
        let code = err.code();
        match code {
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::error!(error = %err, "request failed")
            }
            _ => tracing::debug!(error = %err, ?code, "request refused"),
        }
        Status::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn bytes_read_as_indicatif_writes_them() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.00 KiB"),
            (1536, "1.50 KiB"),
            (646_469_632, "616.52 MiB"),
            (4 << 30, "4.00 GiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(HumanBytes(bytes).to_string(), text);
            assert_eq!(indicatif::HumanBytes(bytes).to_string(), text);
        }
    }

    use super::*;

    fn key(name: &str) -> TableKey {
        TableKey::try_new(name).unwrap()
    }

    #[test]
    fn a_bad_ttl_header_is_invalid_argument_naming_the_header() {
        use crate::protocol::ttl::{BAD_TTL_HEADERS, TTL_HEADER, parse_ttl_header};
        for bad in BAD_TTL_HEADERS {
            let err = Error::from(parse_ttl_header(bad).unwrap_err());
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
            assert!(err.to_string().contains(TTL_HEADER), "{err}");
        }
    }

    #[test]
    fn unknown_action_lists_the_valid_ones_and_quotes_a_bounded_name() {
        use arrow_flight::Action;

        use crate::protocol::actions::CacheAction;
        let problem = CacheAction::try_from(Action::new("flush", "")).unwrap_err();
        let message = Error::from(problem).to_string();
        assert!(message.contains("`flush`"), "{message}");
        assert!(
            message.contains(
                "drop, clear, stats, expire, persist, ttl, retain, whoami, CancelFlightInfo, \
                 RenewFlightEndpoint"
            ),
            "{message}"
        );
        let unknown = Error::UnknownAction {
            name: ClientText::new(&vec![b'x'; 1 << 20]),
        };
        assert!(unknown.to_string().len() < 300);
    }

    #[test]
    fn error_stays_small() {
        // Results of Error travel through every RPC; keep the enum from growing by accident.
        assert!(
            std::mem::size_of::<Error>() <= 80,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn each_server_error_maps_to_its_grpc_code() {
        let decode_error =
            <arrow_flight::Ticket as prost::Message>::decode(&[0xff][..]).unwrap_err();
        let cases = [
            (Error::TableNotFound { key: key("t") }, Code::NotFound),
            (
                Error::InvalidKey {
                    problem: KeyProblem::Empty,
                },
                Code::InvalidArgument,
            ),
            (
                Error::MalformedRequest {
                    rpc: FlightRpc::DoGet,
                    problem: RequestProblem::Protobuf(decode_error),
                },
                Code::InvalidArgument,
            ),
            (Error::MissingDescriptor, Code::InvalidArgument),
            (
                Error::InvalidUpload {
                    key: key("t"),
                    problem: Box::new(UploadProblem::NoSchema),
                },
                Code::InvalidArgument,
            ),
            (
                Error::UnknownAction {
                    name: ClientText::new(b"nope"),
                },
                Code::InvalidArgument,
            ),
            (
                Error::UploadCancelled {
                    key: Some(key("t")),
                },
                Code::Cancelled,
            ),
            (
                Error::MessageTooLarge { size: 2, limit: 1 },
                Code::ResourceExhausted,
            ),
            (Error::TooManyUploads { limit: 1 }, Code::ResourceExhausted),
            (
                Error::SqlStatement {
                    message: "x".into(),
                },
                Code::InvalidArgument,
            ),
            (Error::SqlHandle, Code::InvalidArgument),
            (Error::TooManyQueries { limit: 1 }, Code::ResourceExhausted),
            (
                Error::SqlOutOfMemory {
                    message: "x".into(),
                },
                Code::ResourceExhausted,
            ),
            (
                Error::QueryTimeout {
                    limit: std::time::Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
            (Error::QueryCancelled, Code::Aborted),
            (Error::TableExists { key: key("t") }, Code::AlreadyExists),
            (
                Error::SqlUnsupported { what: "x".into() },
                Code::Unimplemented,
            ),
            (
                Error::SqlInternal {
                    message: "x".into(),
                },
                Code::Internal,
            ),
            (
                Error::Unimplemented {
                    rpc: FlightRpc::DoExchange,
                },
                Code::Unimplemented,
            ),
            (
                Error::UnsupportedEncoding {
                    encoding: ClientText::new(b"gzip"),
                },
                Code::Unimplemented,
            ),
            (
                Error::Internal {
                    context: "encoding",
                    source: Box::new(ArrowError::ComputeError("x".into())),
                },
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }

    #[test]
    fn not_found_message_names_the_key_and_the_next_step() {
        let status = Status::from(Error::TableNotFound { key: key("trips") });
        assert!(status.message().contains("`trips`"), "{}", status.message());
        assert!(status.message().contains("flightcache list"));
    }

    #[test]
    fn not_found_status_maps_back_to_table_not_found() {
        let err = Error::from_status(Status::not_found("gone"), Some(&key("trips")));
        assert!(matches!(err, Error::TableNotFound { key } if key.as_str() == "trips"));
    }
}
