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

use crate::encode::{FlightEncoder, TARGET_MESSAGE_BYTES};
use crate::error::{Error, Result};
use crate::key::TableKey;
use crate::slab::{SlabPool, SlabWriter};
use crate::table::CachedTable;

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

    /// Validate one Flight message and keep it.
    ///
    /// A message with neither IPC header nor body (a descriptor or app_metadata alone) is
    /// accepted and not kept.
    ///
    /// # Errors
    /// [`Error::InvalidUpload`] (InvalidArgument) if the message is not valid Arrow IPC, comes
    /// before the schema, changes the schema, or does not match the schema.
    pub fn push(&mut self, data: FlightData) -> Result<()> {
        if data.data_header.is_empty() {
            if data.data_body.is_empty() {
                return Ok(());
            }
            return Err(self.invalid("a message has a body but no IPC header"));
        }
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
        let message = ipc::root_as_message(&header)
            .map_err(|e| self.invalid(format!("a message header is not valid Arrow IPC ({e})")))?;
        let resplit = match message.header_type() {
            MessageHeader::Schema => self.push_schema(message, &header).map(|()| None)?,
            MessageHeader::DictionaryBatch => {
                self.push_dictionary(message, &body).map(|()| None)?
            }
            MessageHeader::RecordBatch => self.push_record_batch(message, &body)?,
            other => {
                let name = other.variant_name().unwrap_or("unknown");
                return Err(self.invalid(format!(
                    "a `{name}` message is not part of an Arrow record batch stream"
                )));
            }
        };
        match resplit {
            Some(pieces) => {
                drop((body, stored)); // the giant original, replaced by the pieces
                for piece in pieces {
                    let body = self.memory.copy(&piece.data_body);
                    self.keep(piece.data_header, body);
                }
            }
            None => self.keep(header, stored),
        }
        Ok(())
    }

    fn keep(&mut self, header: Bytes, body: Bytes) {
        self.bytes += body.len() as u64;
        self.messages.push(FlightData {
            flight_descriptor: None,
            data_header: header,
            data_body: body,
            app_metadata: Bytes::new(),
        });
    }

    fn push_schema(&mut self, message: ipc::Message<'_>, header: &Bytes) -> Result<()> {
        if self.decoding.is_some() {
            return Err(self.invalid(
                "a second schema arrived mid-stream; a table has one schema, upload it under another key",
            ));
        }
        let fb_schema = message
            .header_as_schema()
            .ok_or_else(|| self.invalid("the schema message has no schema"))?;
        let schema: Schema =
            try_fb_to_schema(fb_schema).map_err(|e| self.invalid(format!("bad schema ({e})")))?;
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
        let batch = message
            .header_as_dictionary_batch()
            .ok_or_else(|| self.invalid("the dictionary message has no dictionary batch"))?;
        let Some(decoding) = self.decoding.as_mut() else {
            return Err(self.invalid("a dictionary batch arrived before the schema"));
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
        result.map_err(|e| self.invalid(format!("bad dictionary batch ({e})")))
    }

    /// Validate a record batch; for a giant one, also the smaller messages to keep instead.
    fn push_record_batch(
        &mut self,
        message: ipc::Message<'_>,
        body: &Buffer,
    ) -> Result<Option<Vec<FlightData>>> {
        let version = message.version();
        let batch = message
            .header_as_record_batch()
            .ok_or_else(|| self.invalid("the record batch message has no record batch"))?;
        let Some(decoding) = self.decoding.as_ref() else {
            return Err(self.invalid("a record batch arrived before the schema"));
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
        .map_err(|e| {
            self.invalid(format!(
                "record batch {} does not match the schema ({e})",
                self.batches
            ))
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
            .map_err(|e| Error::Internal {
                context: format!("re-splitting a record batch of `{}`", self.key),
                source: match e {
                    Error::Arrow(e) => e,
                    other => ArrowError::ExternalError(Box::new(other)),
                },
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
                reason: "the stream ended before a schema was sent".into(),
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

    fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidUpload {
            key: self.key.clone(),
            reason: reason.into(),
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
fn guard_decoder<T>(decode: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown decoder failure");
            Err(format!("malformed IPC data: {what}"))
        }
    }
}

/// What a `do_put` answers in its one `PutResult`, as JSON in `app_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PutSummary {
    /// The key the table was stored under.
    pub key: String,
    /// Rows stored.
    pub rows: u64,
    /// Arrow bytes stored.
    pub bytes: u64,
    /// Record batches stored.
    pub batches: u64,
}
