//! The library's error type, and the one mapping from it to a gRPC [`tonic::Status`].

use arrow::error::ArrowError;
use tonic::{Code, Status};

use crate::key::TableKey;

/// What can go wrong in the server, the client or the file readers.
///
/// Variants carry data rather than formatted strings so that callers can match on them;
/// [`From<Error> for Status`](#impl-From<Error>-for-Status) chooses the gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No table is cached under `key`.
    #[error("no table named `{key}`; `flightcache list` shows the cached tables")]
    TableNotFound {
        /// The key that was asked for.
        key: TableKey,
    },

    /// A key (from a descriptor, a ticket or an action body) is not usable.
    #[error("invalid table key: {reason}")]
    InvalidKey {
        /// Why the key was refused, for a person.
        reason: String,
    },

    /// A `do_put` stream did not start with a flight descriptor naming the key.
    #[error(
        "the first do_put message carries no flight descriptor; \
         send FlightDescriptor.for_command(key) (or for_path) with the schema"
    )]
    MissingDescriptor,

    /// An upload was not a valid Arrow IPC stream (bad messages, a schema change, batches that
    /// do not match the schema); nothing was stored.
    #[error("upload for `{key}` rejected, nothing was stored: {reason}")]
    InvalidUpload {
        /// The key the client tried to write.
        key: TableKey,
        /// What was wrong with the stream, for a person.
        reason: String,
    },

    /// The client aborted its upload; nothing was stored.
    #[error("upload for `{key}` was cancelled by the client; nothing was stored")]
    UploadCancelled {
        /// The key the client tried to write.
        key: TableKey,
    },

    /// An action body or name was not understood.
    #[error("{0}")]
    InvalidAction(String),

    /// A configured server limit was hit.
    #[error("server limit reached: {limit}; retry later or raise the limit on the server")]
    LimitReached {
        /// Which limit, with its value, for a person.
        limit: String,
    },

    /// An RPC that flightcache does not offer.
    #[error(
        "{rpc} is not offered by flightcache; use do_put, do_get, get_flight_info, get_schema, list_flights or do_action"
    )]
    Unimplemented {
        /// The RPC's name, as in the Flight protocol.
        rpc: &'static str,
    },

    /// Our own bug: something we accepted could not be served.
    #[error("internal error while {context}: {source}")]
    Internal {
        /// What the server was doing.
        context: String,
        /// The underlying Arrow error.
        #[source]
        source: ArrowError,
    },

    /// The server could not be reached.
    #[error(
        "cannot reach the flightcache server at {addr}: {reason}; start one with `flightcache serve` or pass --server"
    )]
    Connect {
        /// The address the client tried.
        addr: String,
        /// Why the connection failed.
        reason: String,
    },

    /// The server answered a call with a gRPC error this client does not map to a variant.
    #[error("server error ({code:?}): {message}")]
    Rpc {
        /// The gRPC status code.
        code: Code,
        /// The server's message.
        message: String,
    },

    /// The server's answer did not follow the protocol (for example, unparseable metadata).
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),

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

impl Error {
    /// Turn a `Status` received from a peer into the closest [`Error`] variant.
    ///
    /// `key` is the table the call was about, if any: a `NotFound` for it becomes
    /// [`Error::TableNotFound`].
    pub fn from_status(status: Status, key: Option<&TableKey>) -> Self {
        match (status.code(), key) {
            (Code::NotFound, Some(key)) => Error::TableNotFound { key: key.clone() },
            (Code::Unavailable, _) if status.message().contains("transport") => Error::Rpc {
                code: Code::Unavailable,
                message: format!("{}; is the server still running?", status.message()),
            },
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
            | Error::MissingDescriptor
            | Error::InvalidUpload { .. }
            | Error::InvalidAction(_) => Code::InvalidArgument,
            Error::UploadCancelled { .. } => Code::Cancelled,
            Error::LimitReached { .. } => Code::ResourceExhausted,
            Error::Connect { .. } => Code::Unavailable,
            Error::Unimplemented { .. } => Code::Unimplemented,
            Error::Rpc { code, .. } => *code,
            Error::Internal { .. }
            | Error::Protocol(_)
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
    use super::*;

    fn key(name: &str) -> TableKey {
        TableKey::try_new(name).unwrap()
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
    fn each_error_maps_to_its_grpc_code() {
        let cases = [
            (Error::TableNotFound { key: key("t") }, Code::NotFound),
            (
                Error::InvalidKey {
                    reason: "empty".into(),
                },
                Code::InvalidArgument,
            ),
            (Error::MissingDescriptor, Code::InvalidArgument),
            (
                Error::InvalidUpload {
                    key: key("t"),
                    reason: "bad".into(),
                },
                Code::InvalidArgument,
            ),
            (Error::UploadCancelled { key: key("t") }, Code::Cancelled),
            (Error::InvalidAction("nope".into()), Code::InvalidArgument),
            (
                Error::LimitReached { limit: "x".into() },
                Code::ResourceExhausted,
            ),
            (
                Error::Unimplemented { rpc: "handshake" },
                Code::Unimplemented,
            ),
            (
                Error::Internal {
                    context: "encoding".into(),
                    source: ArrowError::ComputeError("x".into()),
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
