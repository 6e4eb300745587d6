//! `TableUpload`: validates the messages of one `do_put`, one at a time, into a [`Segment`].
//!
//! Every message is checked as a strict reader would (see [`validate`](super::validate)): its
//! header before arrow-ipc reads the body, then the body by decoding it with arrow-ipc's full
//! validation (buffer bounds, offsets, UTF-8, dictionary references) against the upload's
//! schema, then the values that need a check of their own; so a table that was accepted can
//! always be read back, by pyarrow as by arrow-rs. The decoded arrays are dropped again: the
//! table keeps the messages themselves, which `do_get` replays (see [`Segment`]), except
//! that a giant record batch is kept as streaming-size pieces over its own memory (see
//! [`resplit`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::{self, MessageHeader, convert::fb_to_schema, reader::RecordBatchDecoder};
use arrow_flight::FlightData;
use bytes::Bytes;

pub use crate::error::upload::{DecodeFailure, UploadProblem};
use crate::error::{Error, Result};
use crate::protocol::key::TableKey;
use crate::store::budget::Charge;
use crate::store::quiet_panics;
use crate::store::resplit;
use crate::store::slabs::{OpenSlab, SlabWriter};
use crate::store::table::{Segment, StoredMessage, TableCounts};
use crate::store::validate::{self, BatchLayout, CheckedLayout, LayoutFixes, Violation};

/// Decoding state of an upload after its schema message arrived.
struct Decoding {
    schema: SchemaRef,
    dictionaries_by_id: HashMap<i64, ArrayRef>,
    /// The charge for each dictionary id's values where decoding put them in memory of their
    /// own (a compressed dictionary batch, decompressed; a delta, joined to the values before
    /// it), held while they are in force.
    dictionary_charges: HashMap<i64, Charge>,
    /// The value type of each dictionary id the schema declares.
    dictionary_types: HashMap<i64, DataType>,
    /// Whether any column has values that are checked after decoding (see
    /// [`validate::check_values`]).
    needs_value_checks: bool,
}

/// An upload in progress. Feed it each Flight message with [`push`](Self::push), then
/// [`finish`](Self::finish) it into a table once the stream ended cleanly.
pub struct TableUpload {
    key: TableKey,
    decoding: Option<Decoding>,
    /// Most bytes a message's compressed buffers may decompress to, in all.
    max_decompressed_bytes: usize,
    memory: SlabWriter,
    /// The budget's charge for what the table keeps besides bodies: headers, app_metadata,
    /// and the list of messages.
    metadata: Charge,
    messages: Vec<StoredMessage>,
    rows: u64,
    bytes: u64,
    batches: u64,
}

impl TableUpload {
    /// Start an upload for `key`, its table's memory written by `memory` (and charged to its
    /// upload's account), whose compressed messages may decompress to `max_message_bytes`
    /// each.
    pub fn new(key: TableKey, memory: SlabWriter, max_message_bytes: usize) -> Self {
        let account = memory.account();
        account.set_key(key.clone());
        let metadata = account.budget().empty_charge(Some(account));
        Self {
            key,
            decoding: None,
            max_decompressed_bytes: max_message_bytes,
            memory,
            metadata,
            messages: Vec::new(),
            rows: 0,
            bytes: 0,
            batches: 0,
        }
    }

    /// The upload's schema, once its schema message was pushed.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.decoding.as_ref().map(|decoding| &decoding.schema)
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
    /// before the schema, changes the schema, or does not match the schema;
    /// [`Error::OverBudget`] (ResourceExhausted) if the memory budget has no room for it.
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
        // Keep copies, not the received `Bytes`: those are slices of a buffer that holds the
        // whole message (the receiver's fields, charged only until the next message), and a
        // kept slice pins its whole buffer (measured: 2.8-3.6x the table's size held). The body is copied once, to where the table keeps it (see `SlabWriter`),
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
        let stored = self
            .memory
            .store(data_body)
            .map_err(|e| self.over_budget(e))?;
        let body = if stored.is_empty() {
            // arrow-rs asserts that even an empty buffer is aligned for its values, and an
            // empty `Bytes` points anywhere: a batch of no rows may have no body at all.
            Buffer::from(MutableBuffer::new(0))
        } else {
            Buffer::from(stored.clone()) // a zero-copy view for the decoder
        };
        let message =
            ipc::root_as_message(&header).map_err(|e| self.invalid(UploadProblem::BadHeader(e)))?;
        validate::check_message(&message, body.len())
            .map_err(|violation| self.invalid(UploadProblem::Invalid(violation)))?;
        // The header to keep in place of the received one, where its layout needed fixes.
        let fixed = match message.header_type() {
            MessageHeader::Schema => {
                self.push_schema(message)?;
                None
            }
            MessageHeader::DictionaryBatch => self.push_dictionary(message, &header, &body)?,
            MessageHeader::RecordBatch => {
                let fixed = self.push_record_batch(message, &header, &body)?;
                // Only a fixed header is parsed again (verified once more; it is rare).
                let message = match &fixed {
                    Some(fixed) => ipc::root_as_message(fixed)
                        .map_err(|e| self.invalid(UploadProblem::BadHeader(e)))?,
                    None => message,
                };
                let schema = &self
                    .decoding
                    .as_ref()
                    .expect("a batch follows its schema")
                    .schema;
                let batch = message
                    .header_as_record_batch()
                    .expect("checked by its push");
                let version = message.version();
                if let Some(pieces) = resplit::split(schema, batch, version, &stored, &app_metadata)
                {
                    // Streaming-size pieces over the same memory: see `resplit`.
                    self.batches += pieces.len() as u64;
                    for piece in pieces {
                        self.keep(piece.message, piece.owned_bytes)?;
                    }
                    return Ok(());
                }
                self.batches += 1;
                fixed
            }
            other => {
                let kind = other.variant_name().unwrap_or("unknown");
                return Err(self.invalid(UploadProblem::UnexpectedMessage { kind }));
            }
        };
        self.keep(
            StoredMessage {
                header: fixed.unwrap_or(header),
                app_metadata,
                body: vec![stored],
            },
            0,
        )
    }

    /// Keep `message`, charging what it holds besides the received body: its header,
    /// app_metadata and segment list, and `owned_body_bytes` of body allocated for it (a
    /// re-split piece's rebased offsets).
    fn keep(&mut self, message: StoredMessage, owned_body_bytes: usize) -> Result<()> {
        let held = message.header.len()
            + owned_body_bytes
            + message.app_metadata.len()
            + std::mem::size_of::<StoredMessage>()
            + message.body.len() * std::mem::size_of::<Bytes>();
        self.metadata
            .grow(held)
            .map_err(|refusal| self.over_budget(refusal))?;
        self.bytes += message.body_len() as u64;
        self.messages.push(message);
        Ok(())
    }

    /// The error refusing this upload for want of memory.
    fn over_budget(&self, refusal: crate::store::budget::OverBudget) -> Error {
        Error::OverBudget {
            key: Some(self.key.clone()),
            refusal,
        }
    }

    fn push_schema(&mut self, message: ipc::Message<'_>) -> Result<()> {
        if self.decoding.is_some() {
            return Err(self.invalid(UploadProblem::SecondSchema));
        }
        let fb_schema = message
            .header_as_schema()
            .ok_or_else(|| self.invalid(UploadProblem::EmptyHeader { kind: "schema" }))?;
        let schema: Schema =
            try_fb_to_schema(fb_schema).map_err(|e| self.invalid(UploadProblem::BadSchema(e)))?;
        validate::check_schema(fb_schema, &schema)
            .map_err(|violation| self.invalid(UploadProblem::Invalid(violation)))?;
        let mut dictionary_types = HashMap::new();
        for field in schema.fields() {
            collect_dictionary_types(field, &mut dictionary_types);
        }
        let needs_value_checks = schema
            .fields()
            .iter()
            .any(|f| validate::needs_value_checks(f.data_type()));
        self.decoding = Some(Decoding {
            schema: Arc::new(schema),
            dictionaries_by_id: HashMap::new(),
            dictionary_charges: HashMap::new(),
            dictionary_types,
            needs_value_checks,
        });
        Ok(())
    }

    /// Validate a dictionary batch. Returns the header to keep in its place if some of its
    /// buffer lengths had to be declared otherwise ([`LayoutFixes`]).
    fn push_dictionary(
        &mut self,
        message: ipc::Message<'_>,
        header: &[u8],
        body: &Buffer,
    ) -> Result<Option<Bytes>> {
        let version = message.version();
        let (key, max_decompressed_bytes) = (&self.key, self.max_decompressed_bytes);
        let batch = message.header_as_dictionary_batch().ok_or_else(|| {
            invalid(
                key,
                UploadProblem::EmptyHeader {
                    kind: "dictionary batch",
                },
            )
        })?;
        let Some(decoding) = self.decoding.as_mut() else {
            return Err(invalid(
                key,
                UploadProblem::BeforeSchema {
                    kind: "dictionary batch",
                },
            ));
        };
        // Its record batch of values: arrow-ipc 59 unwraps it (60 reports it missing).
        if batch.data().is_none() {
            return Err(invalid(
                key,
                UploadProblem::EmptyHeader {
                    kind: "dictionary batch's values",
                },
            ));
        }
        let id = batch.id();
        // An id the schema does not declare is refused by the decoder below, before it
        // decodes anything.
        let value_type = decoding.dictionary_types.get(&id).cloned();
        let mut checked = CheckedLayout::default();
        if let (Some(value_type), Some(data)) = (&value_type, batch.data()) {
            checked = BatchLayout::new(data, version, body, max_decompressed_bytes)
                .check([value_type], data.length())
                .map_err(|violation| invalid(key, UploadProblem::Invalid(violation)))?;
        }
        let (kept_header, decoded_header) = fixed_headers(header, &checked.fixes)
            .map_err(|violation| invalid(key, UploadProblem::Invalid(violation)))?;
        // It parses, as `fixed_headers` checked, and holds what the original holds.
        let fixed_batch = decoded_header
            .as_deref()
            .and_then(|h| ipc::root_as_message(h).ok())
            .and_then(|m| m.header_as_dictionary_batch());
        let batch = fixed_batch.unwrap_or(batch);
        // Values decoded in place are the body's memory, already charged. Decoding
        // decompresses compressed ones, and a delta is joined to the values in force in new
        // memory: charged first (at most that), then as much as the values in force hold.
        let over_budget = |refusal| Error::from(refusal).for_key(key);
        let compressed = batch
            .data()
            .is_some_and(|data| data.compression().is_some());
        let delta = batch.isDelta();
        let joined = match decoding.dictionaries_by_id.get(&id) {
            Some(values) if delta => values.get_array_memory_size() + body.len(),
            _ => 0,
        };
        let charge = self
            .metadata
            .another(checked.decompressed_bytes + joined)
            .map_err(over_budget)?;
        let result = guard_decoder(|| {
            ipc::reader::read_dictionary(
                body,
                batch,
                &decoding.schema,
                &mut decoding.dictionaries_by_id,
                &version,
            )
        });
        result.map_err(|source| invalid(key, UploadProblem::BadDictionary { source }))?;
        let in_force = match decoding.dictionaries_by_id.get(&id) {
            Some(values) if compressed || delta => values.get_array_memory_size(),
            _ => 0,
        };
        charge.resize(in_force).map_err(over_budget)?;
        // The charge of the values this replaced goes back with them.
        decoding.dictionary_charges.insert(id, charge);
        if value_type
            .as_ref()
            .is_some_and(validate::needs_value_checks)
            && let Some(values) = decoding.dictionaries_by_id.get(&id)
        {
            validate::check_values(&values.to_data())
                .map_err(|violation| invalid(key, UploadProblem::Invalid(violation)))?;
        }
        Ok(kept_header.map(Bytes::from))
    }

    /// Validate a record batch. Returns the header to keep in its place if some of its buffer
    /// lengths had to be declared otherwise ([`LayoutFixes`]).
    fn push_record_batch(
        &mut self,
        message: ipc::Message<'_>,
        header: &[u8],
        body: &Buffer,
    ) -> Result<Option<Bytes>> {
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
        let columns = decoding.schema.fields().iter().map(|f| f.data_type());
        let checked = BatchLayout::new(batch, version, body, self.max_decompressed_bytes)
            .check(columns, batch.length())
            .map_err(|violation| {
                self.invalid(UploadProblem::BatchLayout {
                    batch: self.batches,
                    violation,
                })
            })?;
        let (kept_header, decoded_header) = fixed_headers(header, &checked.fixes)
            .map_err(|violation| self.invalid(UploadProblem::Invalid(violation)))?;
        // It parses, as `fixed_headers` checked, and holds what the original holds.
        let fixed_batch = decoded_header
            .as_deref()
            .and_then(|h| ipc::root_as_message(h).ok())
            .and_then(|m| m.header_as_record_batch());
        let batch = fixed_batch.unwrap_or(batch);
        // Decoding a compressed batch decompresses it: charged first, until it is checked.
        let _decompressed = self
            .metadata
            .another(checked.decompressed_bytes)
            .map_err(|refusal| self.over_budget(refusal))?;
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
        if decoding.needs_value_checks {
            for column in decoded.columns() {
                validate::check_values(&column.to_data())
                    .map_err(|violation| self.invalid(UploadProblem::Invalid(violation)))?;
            }
        }
        self.rows += decoded.num_rows() as u64;
        Ok(kept_header.map(Bytes::from))
    }

    /// The messages kept so far, in order: what the table will hold, a prefix of it while the
    /// upload goes on.
    pub fn messages(&self) -> &[StoredMessage] {
        &self.messages
    }

    /// Finish a cleanly ended upload into the segment to publish (a table of its own, or an
    /// append).
    ///
    /// # Errors
    /// [`Error::InvalidUpload`] (InvalidArgument) if no schema was ever sent.
    pub fn finish(self) -> Result<Segment> {
        let (segment, memory) = self.into_segment()?;
        memory.finish();
        Ok(segment)
    }

    /// Finish a cleanly ended append into its segment, and the unused end of its last slab,
    /// which the key's next append goes on filling ([`SlabWriter::resume`]).
    ///
    /// # Errors
    /// [`Error::InvalidUpload`] (InvalidArgument) if no schema was ever sent.
    pub fn finish_append(self) -> Result<(Segment, Option<OpenSlab>)> {
        let (segment, memory) = self.into_segment()?;
        Ok((segment, memory.finish_open()))
    }

    fn into_segment(self) -> Result<(Segment, SlabWriter)> {
        let Some(decoding) = self.decoding else {
            return Err(Error::InvalidUpload {
                key: self.key,
                problem: Box::new(UploadProblem::NoSchema),
            });
        };
        // What the upload holds now belongs to its table.
        self.memory.account().end();
        let segment = Segment::from_validated(
            decoding.schema,
            self.messages,
            self.metadata,
            TableCounts {
                rows: self.rows,
                bytes: self.bytes,
                batches: self.batches,
            },
        );
        Ok((segment, self.memory))
    }

    fn invalid(&self, problem: UploadProblem) -> Error {
        invalid(&self.key, problem)
    }
}

/// A batch's header to keep and serve, and the one arrow-ipc decodes, where they are not the
/// received one.
type FixedHeaders = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The headers a batch's `fixes` call for: the one to keep and serve, and the one arrow-ipc
/// decodes (see [`LayoutFixes`]); `None` where `header` itself will do.
///
/// # Errors
/// [`Violation::OverlappingHeader`] if a change to the buffer list would change more.
fn fixed_headers(
    header: &[u8],
    fixes: &LayoutFixes,
) -> std::result::Result<FixedHeaders, Violation> {
    if fixes.is_empty() {
        return Ok((None, None));
    }
    let kept = (!fixes.lengths.is_empty()).then(|| validate::with_lengths(header, &fixes.lengths));
    let decoded = if fixes.v4_run_end_validity.is_empty() {
        kept.clone()
    } else {
        let base = kept.as_deref().unwrap_or(header);
        Some(validate::without_buffers(base, &fixes.v4_run_end_validity))
    };
    for patched in [&kept, &decoded].into_iter().flatten() {
        if !validate::same_but_buffers(header, patched) {
            return Err(Violation::OverlappingHeader);
        }
    }
    Ok((kept, decoded))
}

/// The error refusing the upload for `key`.
fn invalid(key: &TableKey, problem: UploadProblem) -> Error {
    Error::InvalidUpload {
        key: key.clone(),
        problem: Box::new(problem),
    }
}

/// Record the value type of every dictionary in `field`, by the id the schema gives it.
fn collect_dictionary_types(field: &arrow::datatypes::Field, types: &mut HashMap<i64, DataType>) {
    #[allow(deprecated)] // arrow-ipc itself still reads dictionary ids from fields
    if let (DataType::Dictionary(_, values), Some(id)) = (field.data_type(), field.dict_id()) {
        types.insert(id, values.as_ref().clone());
    }
    for child in validate::nested_fields(field.data_type()) {
        collect_dictionary_types(child, types);
    }
}

/// Run an arrow-ipc decode on untrusted input. Some malformed inputs make arrow-ipc panic
/// instead of returning an error (apache/arrow-rs#7124); the header checks of
/// [`validate`](super::validate) keep the known ones from reaching it, and a panic that gets
/// through is a bad upload, not a reason to drop the connection. It is logged as one line:
/// the process's panic hook stays quiet for it (no message, no backtrace, which with
/// `RUST_BACKTRACE=1` cost 35 KB of log and hundreds of MiB of symbols per panic).
fn guard_decoder<T>(decode: impl FnOnce() -> Result<T, ArrowError>) -> Result<T, DecodeFailure> {
    match quiet_panics::catch(decode) {
        Ok(result) => result.map_err(DecodeFailure::Arrow),
        Err(what) => {
            tracing::warn!(panic = %what, "arrow-ipc panicked on an upload; it was refused");
            Err(DecodeFailure::Panic(what))
        }
    }
}

/// A schema flatbuffer decoded, or why it cannot be: arrow-ipc 59's `fb_to_schema` panics on a
/// type it cannot read (arrow 60 has `try_fb_to_schema`; use it once the stack moves there).
pub(crate) fn try_fb_to_schema(fb_schema: ipc::Schema<'_>) -> Result<Schema, ArrowError> {
    quiet_panics::catch(|| fb_to_schema(fb_schema)).map_err(ArrowError::IpcError)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{DictionaryArray, RecordBatch, StringArray};
    use arrow::datatypes::Int32Type;

    use super::*;
    use crate::store::budget::{MemoryBudget, UploadAccount};
    use crate::store::slabs::SlabPool;
    use crate::store::table::tests::lz4_messages;

    /// The values of a compressed dictionary batch are charged decompressed while the upload
    /// decodes against them, and given back with the upload; values that cannot fit are
    /// refused before they are decompressed. (Record batches: test_memory.py.)
    #[test]
    fn decompressed_dictionaries_and_batches_are_charged_while_they_are_held() {
        let values = StringArray::from_iter_values((0..100_000).map(|i| format!("{i:0>40}")));
        let keys = (0..1000).map(|i| i * 100).collect::<Vec<i32>>();
        let column = DictionaryArray::<Int32Type>::try_new(keys.into(), Arc::new(values)).unwrap();
        let batch = RecordBatch::try_from_iter([("d", Arc::new(column) as ArrayRef)]).unwrap();
        let [schema, dictionary, record_batch] =
            <[FlightData; 3]>::try_from(lz4_messages(&batch)).expect("one dictionary");
        // At least the 100,000 values of 40 bytes, decompressed (a buffer the writer left
        // uncompressed is decoded in place).
        let decompressed = 100_000 * 40;

        for limit in [None, Some(2 << 20)] {
            let budget = MemoryBudget::new(limit);
            let pool = Arc::new(SlabPool::new(Duration::ZERO, Arc::clone(&budget)));
            let memory = SlabWriter::new(pool, UploadAccount::new(&budget));
            let mut upload = TableUpload::new(TableKey::try_new("t").unwrap(), memory, usize::MAX);
            upload.push(schema.clone()).unwrap();
            let pushed = upload.push(dictionary.clone());
            if limit.is_some() {
                let err = pushed.unwrap_err();
                assert!(matches!(err, Error::OverBudget { .. }), "{err:?}");
                continue;
            }
            pushed.unwrap();
            let compressed = budget.used();
            assert!(compressed > decompressed, "{compressed} bytes charged");
            upload.push(record_batch.clone()).unwrap();
            let segment = upload.finish().unwrap();
            // What stays is the stored (compressed) messages, the record batch's among them.
            assert!(
                budget.used() < compressed - decompressed + (64 << 10),
                "given back with the upload: {} of {compressed}",
                budget.used()
            );
            drop(segment);
        }
    }

    /// An LZ4 buffer that decompresses to more than it declares is refused before arrow-ipc
    /// decompresses it (to its end, however large).
    #[test]
    fn an_lz4_buffer_that_decompresses_to_more_than_it_declares_is_refused() {
        let zeros = RecordBatch::try_from_iter([(
            "z",
            Arc::new(arrow::array::Int64Array::from(vec![0; 1 << 20])) as ArrayRef,
        )])
        .unwrap();
        let budget = MemoryBudget::new(None);
        let upload = |messages: &[FlightData]| {
            let pool = Arc::new(SlabPool::new(Duration::ZERO, Arc::clone(&budget)));
            let memory = SlabWriter::new(pool, UploadAccount::new(&budget));
            let mut upload = TableUpload::new(TableKey::try_new("t").unwrap(), memory, usize::MAX);
            for message in messages {
                upload.push(message.clone())?;
            }
            upload.finish()
        };
        let mut messages = lz4_messages(&zeros);
        assert!(upload(&messages).is_ok(), "as pyarrow would send it");
        // The values buffer (the first with bytes: no nulls) declares 8 bytes, not 8 MiB.
        let mut body = messages[1].data_body.to_vec();
        assert_eq!(i64::from_le_bytes(body[..8].try_into().unwrap()), 8 << 20);
        body[..8].copy_from_slice(&8i64.to_le_bytes());
        messages[1].data_body = body.into();
        let err = upload(&messages).unwrap_err();
        assert!(
            err.to_string()
                .contains("declares 8 uncompressed bytes but decompresses to more"),
            "{err}"
        );
    }

    #[test]
    fn a_decoder_that_panics_is_a_refused_upload_not_a_crash() {
        let refused =
            guard_decoder(|| -> Result<(), ArrowError> { panic!("offset {} out of range", 7) });
        let err = refused.unwrap_err();
        assert!(
            matches!(&err, DecodeFailure::Panic(message) if message == "offset 7 out of range"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "malformed IPC data: offset 7 out of range");
        let refused = guard_decoder(|| -> Result<(), ArrowError> {
            Err(ArrowError::ParseError("bad flatbuffer".into()))
        });
        assert!(
            matches!(refused, Err(DecodeFailure::Arrow(_))),
            "{refused:?}"
        );
        assert_eq!(guard_decoder(|| Ok(5)).unwrap(), 5);
    }
}
