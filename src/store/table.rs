//! `CachedTable`: one cached table, kept as the validated Arrow IPC messages it was uploaded as.
//!
//! A table is stored as the Flight messages (schema, dictionary batches, record batches) that
//! its upload carried, after [`TableUpload`](crate::store::upload::TableUpload) has decoded and
//! validated every one of them. `do_get` replays those messages: nothing is re-encoded, so a get
//! costs what the network costs, and what a client sent is what the next client receives
//! (types, metadata and dictionaries included, and each message's `app_metadata`). The one
//! change: a giant uncompressed record batch of flat columns is stored as smaller batches with
//! the same rows, over the same memory ([`resplit`](crate::store::resplit)).

use arrow::datatypes::SchemaRef;
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, SchemaResult};
use bytes::{Bytes, BytesMut};

use std::sync::Arc;

use crate::protocol::key::TableKey;
use crate::store::budget::Charge;
use crate::store::disk::file::TableFile;

/// One stored Flight message: its IPC header, its `app_metadata`, and its body, in one or more
/// segments that follow each other on the wire (a re-split piece is slices of the giant body it
/// came from, with padding between them).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The IPC message flatbuffer.
    pub header: Bytes,
    /// The message's `app_metadata`, as uploaded.
    pub app_metadata: Bytes,
    /// The body, in order.
    pub body: Vec<Bytes>,
}

impl StoredMessage {
    /// The body's length.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// The message as one `FlightData`, its body in one piece (copied if it has several).
    pub fn to_flight_data(&self) -> FlightData {
        let data_body = match self.body.as_slice() {
            [] => Bytes::new(),
            [only] => only.clone(),
            segments => {
                let mut body = BytesMut::with_capacity(self.body_len());
                for segment in segments {
                    body.extend_from_slice(segment);
                }
                body.freeze()
            }
        };
        FlightData {
            flight_descriptor: None,
            data_header: self.header.clone(),
            app_metadata: self.app_metadata.clone(),
            data_body,
        }
    }
}

/// A cached table: its schema, its IPC messages in upload order, and its size.
///
/// Immutable once built; the store shares it as `Arc<CachedTable>` so a reader keeps the table
/// it started with even if the key is replaced meanwhile.
#[derive(Debug)]
pub struct CachedTable {
    schema: SchemaRef,
    schema_ipc: Bytes,
    messages: Vec<StoredMessage>,
    /// The memory budget's charge for the headers and the message list (the bodies' memory
    /// carries charges of its own).
    _metadata: Charge,
    counts: TableCounts,
    /// The file it was mapped from, for a table that came back from disk at startup.
    file: Option<Arc<TableFile>>,
}

/// A table's rows, Arrow bytes and record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableCounts {
    pub rows: u64,
    pub bytes: u64,
    pub batches: u64,
}

impl CachedTable {
    /// Assemble a table from parts that [`TableUpload`](crate::store::upload::TableUpload) validated.
    ///
    /// `schema_header` is the IPC flatbuffer of the schema message among `messages`;
    /// `metadata` charges what the messages hold besides their bodies.
    pub(crate) fn from_validated(
        schema: SchemaRef,
        schema_header: &[u8],
        messages: Vec<StoredMessage>,
        metadata: Charge,
        counts: TableCounts,
    ) -> Self {
        Self {
            schema,
            schema_ipc: encapsulate_ipc_message(schema_header),
            messages,
            _metadata: metadata,
            counts,
            file: None,
        }
    }

    /// Assemble a table mapped from `file`, whose messages point into the mapping
    /// ([`read_table`](crate::store::disk::file::read_table) checked their framing).
    pub(crate) fn from_file(
        schema: SchemaRef,
        schema_header: &[u8],
        messages: Vec<StoredMessage>,
        metadata: Charge,
        counts: TableCounts,
        file: Arc<TableFile>,
    ) -> Self {
        Self {
            file: Some(file),
            ..Self::from_validated(schema, schema_header, messages, metadata, counts)
        }
    }

    /// The file this table is mapped from, if it came back from disk at startup: its bytes are
    /// the page cache's, not table memory, and must be [verified](TableFile::verify) before
    /// they are first served.
    pub fn file(&self) -> Option<&Arc<TableFile>> {
        self.file.as_ref()
    }

    /// The table's Arrow schema, with its metadata.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.counts.rows
    }

    /// Bytes of Arrow data held: the sum of the IPC message bodies (the Arrow buffers, with
    /// the format's padding), the same figure as `FlightInfo.total_bytes`.
    pub fn bytes(&self) -> u64 {
        self.counts.bytes
    }

    /// Number of record batches.
    pub fn batches(&self) -> u64 {
        self.counts.batches
    }

    /// The messages to send for a `do_get`, in upload order: the schema, dictionaries and
    /// record batches. Cloning one clones reference counts, not data.
    pub fn messages(&self) -> &[StoredMessage] {
        &self.messages
    }

    /// The schema as an encapsulated IPC message, as `FlightInfo.schema` and
    /// `SchemaResult.schema` carry it.
    pub fn schema_ipc(&self) -> Bytes {
        self.schema_ipc.clone()
    }

    /// The `FlightInfo` describing this table under `key`, reached through `descriptor`.
    ///
    /// Its one endpoint's ticket is the key, which `do_get` accepts at `location` (see
    /// [`location`](crate::protocol::location)).
    pub fn flight_info(
        &self,
        key: &TableKey,
        descriptor: FlightDescriptor,
        location: &str,
    ) -> FlightInfo {
        let endpoint = FlightEndpoint::new()
            .with_ticket(key.to_ticket())
            .with_location(location);
        FlightInfo {
            schema: self.schema_ipc(),
            flight_descriptor: Some(descriptor),
            endpoint: vec![endpoint],
            total_records: i64::try_from(self.rows()).unwrap_or(i64::MAX),
            total_bytes: i64::try_from(self.bytes()).unwrap_or(i64::MAX),
            ordered: true,
            app_metadata: Bytes::new(),
        }
    }

    /// The answer to `get_schema`.
    pub fn schema_result(&self) -> SchemaResult {
        SchemaResult {
            schema: self.schema_ipc(),
        }
    }
}

/// The IPC continuation marker that starts an encapsulated message.
const IPC_CONTINUATION_MARKER: u32 = 0xFFFF_FFFF;

/// Wrap a flatbuffer `Message` in the IPC encapsulation: continuation marker, padded length,
/// the message, zero padding to a multiple of 8 bytes.
fn encapsulate_ipc_message(header: &[u8]) -> Bytes {
    let padded_len = header.len().next_multiple_of(8);
    let mut out = Vec::with_capacity(8 + padded_len);
    out.extend_from_slice(&IPC_CONTINUATION_MARKER.to_le_bytes());
    out.extend_from_slice(&(padded_len as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.resize(8 + padded_len, 0);
    Bytes::from(out)
}
