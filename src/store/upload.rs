//! `TableUpload`: validates the messages of one `do_put`, one at a time, into a `CachedTable`.
//!
//! Every message is decoded with arrow-ipc's full validation (buffer bounds, offsets, UTF-8,
//! dictionary references) against the upload's schema, so a table that was accepted can always
//! be served. The decoded arrays are dropped again: the table keeps the messages themselves,
//! which `do_get` replays (see [`CachedTable`]), except that a giant record batch is re-split
//! into messages of a streaming size once, here.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::{self, MessageHeader, convert::try_fb_to_schema, reader::RecordBatchDecoder};
use arrow_flight::FlightData;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::protocol::encode::{FlightEncoder, TARGET_MESSAGE_BYTES};
use crate::protocol::key::TableKey;
use crate::store::memory::{SlabPool, SlabWriter};
use crate::store::table::CachedTable;

/// Decoding state of an upload after its schema message arrived.
struct Decoding {
    schema: SchemaRef,
    schema_header: Bytes,
    dictionaries_by_id: HashMap<i64, ArrayRef>,
    /// Re-encodes giant record batches as smaller ones; `None` for schemas with dictionaries,
    /// whose batches are kept as sent (their dictionary messages are interleaved with them).
    resplitter: Option<FlightEncoder>,
}

/// Record batches whose body is larger than this are stored re-split into messages of about
/// [`TARGET_MESSAGE_BYTES`]. pyarrow sends a table chunk as one message however large it is
/// (`pa.table(numpy_arrays)` is one chunk); split once at put time, every later get streams in
/// small messages instead of one giant one that both ends must buffer whole.
pub const RESPLIT_ABOVE_BYTES: usize = 2 * TARGET_MESSAGE_BYTES;

/// An upload in progress. Feed it each Flight message with [`push`](Self::push), then
/// [`finish`](Self::finish) it into a table once the stream ended cleanly.
pub struct TableUpload {
    key: TableKey,
    decoding: Option<Decoding>,
    memory: SlabWriter,
    messages: Vec<FlightData>,
    rows: u64,
    bytes: u64,
    batches: u64,
}

impl TableUpload {
    /// Start an upload for `key`, its table's memory taken from `slabs`.
    pub fn new(key: TableKey, slabs: Arc<SlabPool>) -> Self {
        Self {
            key,
            decoding: None,
            memory: SlabWriter::new(slabs),
            messages: Vec::new(),
            rows: 0,
            bytes: 0,
            batches: 0,
        }
    }

    /// The key being uploaded.
    pub fn key(&self) -> &TableKey {
        &self.key
    }

    /// The table's memory: a body received into memory [`reserve`](SlabWriter::reserve)d here
    /// is kept where it is by the next [`push`](Self::push) instead of being copied.
    pub fn memory(&mut self) -> &mut SlabWriter {
        &mut self.memory
    }

    /// Validate one Flight message and keep it, with its `app_metadata`.
    ///
    /// A message with no IPC header and no body (a descriptor alone, or app_metadata alone as
    /// pyarrow's `write_metadata` sends it) is accepted and not kept: Arrow C++'s readers, and
    /// so pyarrow's `read_all()`, end a stream at such a message, so replaying it would cut the
    /// table short for them (and arrow-flight's decoder refuses its empty header).
    ///
    /// # Errors
    /// [`Error::InvalidUpload`] (InvalidArgument) if the message is not valid Arrow IPC, comes
    /// before the schema, changes the schema, or does not match the schema.
    pub fn push(&mut self, data: FlightData) -> Result<()> {
        if data.data_header.is_empty() {
            if data.data_body.is_empty() {
                return Ok(());
            }
            return Err(self.invalid(UploadProblem::BodyWithoutHeader));
        }
        // A copy, small and owned: the received bytes may share a buffer with the rest of the
        // message.
        let app_metadata = Bytes::copy_from_slice(&data.app_metadata);
        // Keep copies, not the received `Bytes`: those are slices of the transport's receive
        // buffers, and a kept slice pins its whole buffer (measured: 2.8-3.6x the table's size
        // held). The body is copied once, to where the table keeps it (see `SlabWriter`),
        // 64-byte aligned, and decoded there in place; arrow-ipc needs the alignment, as parts
        // of its reader (union type ids and offsets) panic on unaligned buffers. A body that
        // was received straight into this upload's memory (`memory()`) is kept as it is.
        let FlightData {
            data_header,
            data_body,
            ..
        } = data;
        let header = Bytes::copy_from_slice(&data_header);
        drop(data_header);
        let stored = self.memory.store(data_body);
        let body = Buffer::from(stored.clone()); // a zero-copy view for the decoder
        let message =
            ipc::root_as_message(&header).map_err(|e| self.invalid(UploadProblem::BadHeader(e)))?;
        let resplit = match message.header_type() {
            MessageHeader::Schema => self.push_schema(message, &header).map(|()| None)?,
            MessageHeader::DictionaryBatch => {
                self.push_dictionary(message, &body).map(|()| None)?
            }
            MessageHeader::RecordBatch => self.push_record_batch(message, &body)?,
            other => {
                let kind = other.variant_name().unwrap_or("unknown");
                return Err(self.invalid(UploadProblem::UnexpectedMessage { kind }));
            }
        };
        match resplit {
            Some(pieces) => {
                drop((body, stored)); // the giant original, replaced by the pieces
                // The first piece carries the original's app_metadata, the others none.
                let mut app_metadata = Some(app_metadata);
                for piece in pieces {
                    let body = self.memory.copy(&piece.data_body);
                    let app_metadata = app_metadata.take().unwrap_or_default();
                    self.keep(piece.data_header, body, app_metadata);
                }
            }
            None => self.keep(header, stored, app_metadata),
        }
        Ok(())
    }

    fn keep(&mut self, header: Bytes, body: Bytes, app_metadata: Bytes) {
        self.bytes += body.len() as u64;
        self.messages.push(FlightData {
            flight_descriptor: None,
            data_header: header,
            data_body: body,
            app_metadata,
        });
    }

    fn push_schema(&mut self, message: ipc::Message<'_>, header: &Bytes) -> Result<()> {
        if self.decoding.is_some() {
            return Err(self.invalid(UploadProblem::SecondSchema));
        }
        let fb_schema = message
            .header_as_schema()
            .ok_or_else(|| self.invalid(UploadProblem::EmptyHeader { kind: "schema" }))?;
        let schema: Schema =
            try_fb_to_schema(fb_schema).map_err(|e| self.invalid(UploadProblem::BadSchema(e)))?;
        let resplitter = (!schema
            .fields()
            .iter()
            .any(|f| contains_dictionary(f.data_type())))
        .then(|| FlightEncoder::new(TARGET_MESSAGE_BYTES));
        self.decoding = Some(Decoding {
            schema: Arc::new(schema),
            schema_header: header.clone(),
            dictionaries_by_id: HashMap::new(),
            resplitter,
        });
        Ok(())
    }

    fn push_dictionary(&mut self, message: ipc::Message<'_>, body: &Buffer) -> Result<()> {
        let version = message.version();
        let batch = message.header_as_dictionary_batch().ok_or_else(|| {
            self.invalid(UploadProblem::EmptyHeader {
                kind: "dictionary batch",
            })
        })?;
        let Some(decoding) = self.decoding.as_mut() else {
            return Err(self.invalid(UploadProblem::BeforeSchema {
                kind: "dictionary batch",
            }));
        };
        let result = guard_decoder(|| {
            ipc::reader::read_dictionary(
                body,
                batch,
                &decoding.schema,
                &mut decoding.dictionaries_by_id,
                &version,
            )
        });
        result.map_err(|source| self.invalid(UploadProblem::BadDictionary { source }))
    }

    /// Validate a record batch; for a giant one, also the smaller messages to keep instead.
    fn push_record_batch(
        &mut self,
        message: ipc::Message<'_>,
        body: &Buffer,
    ) -> Result<Option<Vec<FlightData>>> {
        let version = message.version();
        let batch = message.header_as_record_batch().ok_or_else(|| {
            self.invalid(UploadProblem::EmptyHeader {
                kind: "record batch",
            })
        })?;
        let Some(decoding) = self.decoding.as_ref() else {
            return Err(self.invalid(UploadProblem::BeforeSchema {
                kind: "record batch",
            }));
        };
        let decoded = guard_decoder(|| {
            RecordBatchDecoder::try_new(
                body,
                batch,
                Arc::clone(&decoding.schema),
                &decoding.dictionaries_by_id,
                &version,
            )
            .and_then(RecordBatchDecoder::read_record_batch)
        })
        .map_err(|source| {
            self.invalid(UploadProblem::BadRecordBatch {
                batch: self.batches,
                source,
            })
        })?;
        self.rows += decoded.num_rows() as u64;
        let resplitter = match self.decoding.as_mut() {
            Some(Decoding {
                resplitter: Some(encoder),
                ..
            }) if body.len() > RESPLIT_ABOVE_BYTES => encoder,
            _ => {
                self.batches += 1;
                return Ok(None);
            }
        };
        let pieces = resplitter
            .encode_batch(&decoded)
            .map_err(|source| Error::Internal {
                context: "re-splitting a giant record batch",
                source: Box::new(source),
            })?;
        self.batches += pieces.len() as u64;
        Ok(Some(pieces))
    }

    /// Finish a cleanly ended upload into the table to publish.
    ///
    /// # Errors
    /// [`Error::InvalidUpload`] (InvalidArgument) if no schema was ever sent.
    pub fn finish(self) -> Result<CachedTable> {
        let Some(decoding) = self.decoding else {
            return Err(Error::InvalidUpload {
                key: self.key,
                problem: Box::new(UploadProblem::NoSchema),
            });
        };
        self.memory.finish();
        Ok(CachedTable::from_validated(
            decoding.schema,
            &decoding.schema_header,
            self.messages,
            self.rows,
            self.bytes,
            self.batches,
        ))
    }

    fn invalid(&self, problem: UploadProblem) -> Error {
        Error::InvalidUpload {
            key: self.key.clone(),
            problem: Box::new(problem),
        }
    }
}

/// Whether a column of this type needs dictionary messages.
fn contains_dictionary(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(..) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::Map(f, _) => contains_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| contains_dictionary(f.data_type())),
        DataType::Union(fields, _) => fields
            .iter()
            .any(|(_, f)| contains_dictionary(f.data_type())),
        DataType::RunEndEncoded(_, values) => contains_dictionary(values.data_type()),
        _ => false,
    }
}

/// Run an arrow-ipc decode on untrusted input. Some malformed inputs make arrow-ipc panic
/// instead of returning an error (apache/arrow-rs#7124); a panic here is a bad upload, not a
/// reason to drop the connection.
fn guard_decoder<T>(decode: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, DecodeFailure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(result) => result.map_err(DecodeFailure::Arrow),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown decoder failure".into());
            Err(DecodeFailure::Panic(what))
        }
    }
}

/// What is wrong with an upload ([`Error::InvalidUpload`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadProblem {
    /// A message has a body but no IPC header.
    #[error("a message has a body but no IPC header")]
    BodyWithoutHeader,
    /// A message header is not an Arrow IPC flatbuffer.
    #[error("a message header is not valid Arrow IPC ({0})")]
    BadHeader(#[source] flatbuffers::InvalidFlatbuffer),
    /// A message of a kind that has no place in a record batch stream (a tensor, say).
    #[error("a `{kind}` message is not part of an Arrow record batch stream")]
    UnexpectedMessage {
        /// The message kind.
        kind: &'static str,
    },
    /// A message whose header names its kind but holds nothing.
    #[error("the {kind} message has an empty header")]
    EmptyHeader {
        /// The message kind.
        kind: &'static str,
    },
    /// A second schema.
    #[error(
        "a second schema arrived mid-stream; a table has one schema, upload it under another key"
    )]
    SecondSchema,
    /// A schema Arrow cannot read.
    #[error("bad schema ({0})")]
    BadSchema(#[source] ArrowError),
    /// A batch before the schema.
    #[error("a {kind} arrived before the schema")]
    BeforeSchema {
        /// The message kind.
        kind: &'static str,
    },
    /// A dictionary batch that does not decode.
    #[error("bad dictionary batch ({source})")]
    BadDictionary {
        /// Why it does not decode.
        source: DecodeFailure,
    },
    /// A record batch that does not decode against the schema.
    #[error("record batch {batch} does not match the schema ({source})")]
    BadRecordBatch {
        /// Its position among the stream's record batches, from 0.
        batch: u64,
        /// Why it does not decode.
        source: DecodeFailure,
    },
    /// The stream ended without a schema.
    #[error("the stream ended before a schema was sent")]
    NoSchema,
}

/// Why arrow-ipc could not decode a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeFailure {
    /// arrow-ipc refused it.
    #[error("{0}")]
    Arrow(ArrowError),
    /// arrow-ipc panicked on it (apache/arrow-rs#7124); the panic's message.
    #[error("malformed IPC data: {0}")]
    Panic(String),
}
