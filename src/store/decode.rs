//! A cached table's stored IPC messages as record batches whose buffers point into table
//! memory: the scan of a SQL query reads what a get replays, in place.
//!
//! A stored message whose body is one piece (as uploaded, or mapped from its file) is decoded
//! by arrow-ipc's own reader over a zero-copy view of that piece. A piece of a split giant
//! batch ([`resplit`](crate::store::resplit)) has its body in several segments (slices of the
//! giant body, rebased offsets, padding); arrow-ipc reads only contiguous bodies, so those
//! pieces, whose columns are all flat and uncompressed, are assembled here from their
//! segments, each buffer a view of the segment that holds it. Either way no column value is
//! copied, and only the projected columns are decoded.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayData, ArrayRef, RecordBatch, RecordBatchOptions, make_array, new_null_array,
};
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::{self, MessageHeader, reader::RecordBatchDecoder};
use bytes::Bytes;

use crate::store::resplit::flat_buffer_count;
use crate::store::table::StoredMessage;
use crate::store::validate::BatchLayout;

/// Decodes a table's messages in order, keeping the dictionaries seen so far.
pub(crate) struct MessageDecoder {
    schema: SchemaRef,
    /// The projected columns' indices, or `None` for every column.
    projection: Option<Vec<usize>>,
    /// The schema of the decoded batches: `schema` projected.
    projected: SchemaRef,
    dictionaries: HashMap<i64, ArrayRef>,
}

impl MessageDecoder {
    /// A decoder of batches of `schema`, keeping only the columns in `projection`.
    ///
    /// # Errors
    /// [`ArrowError::SchemaError`] for a projection of columns `schema` does not have.
    pub fn new(schema: SchemaRef, projection: Option<Vec<usize>>) -> Result<Self, ArrowError> {
        let projected = match &projection {
            Some(columns) => Arc::new(schema.project(columns)?),
            None => Arc::clone(&schema),
        };
        Ok(Self {
            schema,
            projection,
            projected,
            dictionaries: HashMap::new(),
        })
    }

    /// Take in `message`: a dictionary batch is kept for the record batches after it, a
    /// record batch is returned decoded, the schema message is skipped.
    ///
    /// # Errors
    /// What arrow-ipc reports; the messages were validated when they were stored, so only a
    /// bug reaches this.
    pub fn decode(&mut self, message: &StoredMessage) -> Result<Option<RecordBatch>, ArrowError> {
        let header = ipc::root_as_message(&message.header)
            .map_err(|e| ArrowError::IpcError(format!("a stored header does not parse: {e}")))?;
        match header.header_type() {
            MessageHeader::DictionaryBatch => {
                let batch = header.header_as_dictionary_batch().ok_or_else(|| {
                    ArrowError::IpcError("an empty dictionary batch header".into())
                })?;
                ipc::reader::read_dictionary(
                    &contiguous_body(message)?,
                    batch,
                    &self.schema,
                    &mut self.dictionaries,
                    &header.version(),
                )?;
                Ok(None)
            }
            MessageHeader::RecordBatch => {
                let batch = header
                    .header_as_record_batch()
                    .ok_or_else(|| ArrowError::IpcError("an empty record batch header".into()))?;
                if message.body.len() > 1 {
                    return self.assemble(batch, message).map(Some);
                }
                RecordBatchDecoder::try_new(
                    &contiguous_body(message)?,
                    batch,
                    Arc::clone(&self.schema),
                    &self.dictionaries,
                    &header.version(),
                )?
                .with_projection(self.projection.as_deref())
                .read_record_batch()
                .map(Some)
            }
            _ => Ok(None),
        }
    }

    /// A split piece (flat, uncompressed columns) from its body segments.
    fn assemble(
        &self,
        batch: ipc::RecordBatch<'_>,
        message: &StoredMessage,
    ) -> Result<RecordBatch, ArrowError> {
        let rows = usize::try_from(batch.length())
            .map_err(|_| ArrowError::IpcError("a negative row count".into()))?;
        let nodes = batch
            .nodes()
            .ok_or_else(|| ArrowError::IpcError("a record batch without field nodes".into()))?;
        let buffers = batch
            .buffers()
            .ok_or_else(|| ArrowError::IpcError("a record batch without buffers".into()))?;
        let body = SegmentedBody::new(&message.body);
        let mut next_buffer = buffers.iter();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.schema.fields().len()];
        for (index, (field, node)) in self.schema.fields().iter().zip(nodes.iter()).enumerate() {
            let data_type = field.data_type();
            let len = usize::try_from(node.length())
                .map_err(|_| ArrowError::IpcError("a negative column length".into()))?;
            let buffer_count = flat_buffer_count(data_type).ok_or_else(|| {
                ArrowError::IpcError(format!("a split piece with a {data_type} column"))
            })?;
            let wanted = self.projection.as_ref().is_none_or(|p| p.contains(&index));
            let mut column_buffers = Vec::with_capacity(buffer_count);
            for _ in 0..buffer_count {
                let described = next_buffer
                    .next()
                    .ok_or_else(|| ArrowError::IpcError("a column without its buffers".into()))?;
                if wanted {
                    column_buffers.push(body.buffer(described.offset(), described.length())?);
                }
            }
            if !wanted {
                continue;
            }
            if let DataType::Null = data_type {
                columns[index] = Some(new_null_array(data_type, len));
                continue;
            }
            let mut parts = column_buffers.into_iter();
            let validity = parts.next().filter(|_| node.null_count() > 0);
            // Slices of a body that was only 8-byte aligned (pyarrow's IPC alignment) are
            // realigned where the type needs more (decimals: 16); the rest stay views.
            let data = ArrayData::builder(data_type.clone())
                .len(len)
                .null_bit_buffer(validity)
                .buffers(parts.collect())
                .align_buffers(true)
                .build()?;
            columns[index] = Some(make_array(data));
        }
        let arrays = match &self.projection {
            Some(projection) => projection.iter().map(|&i| columns[i].clone()).collect(),
            None => columns.into_iter().collect::<Option<Vec<_>>>(),
        }
        .ok_or_else(|| ArrowError::IpcError("a column missing from a split piece".into()))?;
        RecordBatch::try_new_with_options(
            Arc::clone(&self.projected),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }
}

/// What a decoder's dictionaries hold beyond table memory, followed message by message: a
/// dictionary decoded in place (uncompressed, not a delta) holds nothing of its own, one
/// decompressed holds its values, and a delta joins the values in force and its own in new
/// memory (as arrow-ipc's reader does). A decoder of every column starts from
/// `DictionaryMemory::default()`, one of some columns from [`DictionaryMemory::projected`].
#[derive(Debug, Default)]
pub(crate) struct DictionaryMemory {
    /// Each id's values in force: their bytes, and whether they are in memory of their own.
    values: HashMap<i64, (usize, bool)>,
    /// The columns decoded, when not all (with the schema they are columns of): arrow-ipc
    /// decompresses only their buffers of a record batch, and every dictionary.
    projection: Option<(SchemaRef, Vec<usize>)>,
}

impl DictionaryMemory {
    /// The memory of a decoder of the columns `projection` of `schema` (`None`: all).
    #[cfg(feature = "sql")]
    pub fn projected(schema: SchemaRef, projection: Option<Vec<usize>>) -> Self {
        Self {
            values: HashMap::new(),
            projection: projection.map(|columns| (schema, columns)),
        }
    }

    /// Take in `message` (a dictionary batch changes the values in force); the bytes a
    /// decoder then holds beyond table memory: the dictionaries' in force, and what decoding
    /// `message` decompresses if it is a record batch.
    pub fn decoding(&mut self, message: &StoredMessage) -> usize {
        let Ok(header) = ipc::root_as_message(&message.header) else {
            return self.held();
        };
        let decompressed = self.decompressed_in(&header, message);
        let Some(dictionary) = header.header_as_dictionary_batch() else {
            return self.held().saturating_add(decompressed);
        };
        let bytes = if decompressed > 0 {
            decompressed
        } else {
            message.body_len()
        };
        let values = self.values.entry(dictionary.id()).or_default();
        *values = if dictionary.isDelta() {
            (values.0.saturating_add(bytes), true)
        } else {
            (bytes, decompressed > 0)
        };
        self.held()
    }

    /// The bytes the dictionaries in force hold beyond table memory.
    fn held(&self) -> usize {
        self.values
            .values()
            .filter(|(_, own)| *own)
            .fold(0, |sum, (bytes, _)| sum.saturating_add(*bytes))
    }

    /// The bytes decoding `message`, whose header is `header`, allocates to decompress it:
    /// the uncompressed lengths its compressed buffers declare (of a record batch, those of
    /// the projected columns); 0 for an uncompressed message, decoded in place.
    fn decompressed_in(&self, header: &ipc::Message<'_>, message: &StoredMessage) -> usize {
        let (batch, projection) = match header.header_type() {
            MessageHeader::RecordBatch => (header.header_as_record_batch(), &self.projection),
            MessageHeader::DictionaryBatch => (
                header
                    .header_as_dictionary_batch()
                    .and_then(|dictionary| dictionary.data()),
                &None,
            ),
            _ => (None, &None),
        };
        // Compressed bodies are stored in one piece (only uncompressed batches are re-split).
        let (Some(batch), [body]) = (batch, message.body.as_slice()) else {
            return 0;
        };
        if let (Some(_), Some((schema, columns))) = (batch.compression(), projection) {
            let layout = BatchLayout::stored(batch, header.version(), body).check(
                schema.fields().iter().map(|f| f.data_type()),
                batch.length(),
            );
            // It was checked when it was stored; were it not sound, every column is counted.
            if let Ok(layout) = layout {
                return columns
                    .iter()
                    .filter_map(|&column| layout.decompressed_by_column.get(column))
                    .fold(0, |sum, bytes| sum.saturating_add(*bytes));
            }
        }
        declared_decompressed_bytes(batch, body)
    }
}

/// The uncompressed lengths the compressed buffers of `batch`, whose body is `body`, declare
/// in their prefixes (-1: stored uncompressed, decoded in place); 0 if it is not compressed.
fn declared_decompressed_bytes(batch: ipc::RecordBatch<'_>, body: &[u8]) -> usize {
    let (Some(_), Some(buffers)) = (batch.compression(), batch.buffers()) else {
        return 0;
    };
    buffers
        .iter()
        .filter_map(|buffer| {
            // An empty buffer has no length prefix.
            if buffer.length() < 8 {
                return None;
            }
            let start = usize::try_from(buffer.offset()).ok()?;
            let prefix = body.get(start..start.checked_add(8)?)?;
            let declared = i64::from_le_bytes(prefix.try_into().ok()?);
            usize::try_from(declared).ok()
        })
        .fold(0, usize::saturating_add)
}

/// A one-piece body as an arrow buffer, without a copy.
fn contiguous_body(message: &StoredMessage) -> Result<Buffer, ArrowError> {
    match message.body.as_slice() {
        // arrow-rs asserts that even an empty buffer is aligned for its values.
        [] => Ok(Buffer::from(MutableBuffer::new(0))),
        [only] => Ok(Buffer::from(only.clone())),
        _ => Err(ArrowError::IpcError(
            "a dictionary batch stored in pieces".into(),
        )),
    }
}

/// A body in segments that follow each other, each buffer inside one of them.
struct SegmentedBody<'a> {
    segments: &'a [Bytes],
    /// Where each segment starts in the body.
    starts: Vec<usize>,
}

impl<'a> SegmentedBody<'a> {
    fn new(segments: &'a [Bytes]) -> Self {
        let mut starts = Vec::with_capacity(segments.len());
        let mut at = 0;
        for segment in segments {
            starts.push(at);
            at += segment.len();
        }
        Self { segments, starts }
    }

    /// The buffer at `offset` of `length` bytes, a view of the segment that holds it.
    fn buffer(&self, offset: i64, length: i64) -> Result<Buffer, ArrowError> {
        let (Ok(offset), Ok(length)) = (usize::try_from(offset), usize::try_from(length)) else {
            return Err(ArrowError::IpcError(
                "a negative buffer offset or length".into(),
            ));
        };
        if length == 0 {
            return Ok(Buffer::from(MutableBuffer::new(0)));
        }
        let Some(segment) = self
            .starts
            .partition_point(|&start| start <= offset)
            .checked_sub(1)
        else {
            return Err(ArrowError::IpcError("a buffer outside the body".into()));
        };
        let start = offset - self.starts[segment];
        let bytes = &self.segments[segment];
        if start + length > bytes.len() {
            return Err(ArrowError::IpcError(
                "a buffer that spans two body segments".into(),
            ));
        }
        Ok(Buffer::from(bytes.slice(start..start + length)))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, RecordBatch, StringArray};
    use arrow::array::{Int8Array, Int64Array};
    use arrow::datatypes::Int32Type;
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::{
        DictionaryHandling, DictionaryTracker, EncodedData, IpcDataGenerator, IpcWriteContext,
        IpcWriteOptions,
    };
    use arrow::util::bit_util;

    use super::*;

    /// The dictionary messages `batches` are sent with under `options`, as stored.
    fn dictionary_messages(
        batches: &[RecordBatch],
        options: &IpcWriteOptions,
    ) -> Vec<StoredMessage> {
        let generator = IpcDataGenerator::default();
        let mut tracker = DictionaryTracker::new(false);
        generator.schema_to_bytes_with_dictionary_tracker(
            &batches[0].schema(),
            &mut tracker,
            options,
        );
        let mut context = IpcWriteContext::default();
        let mut messages = Vec::new();
        for batch in batches {
            let (dictionaries, _) = generator
                .encode(batch, &mut tracker, options, &mut context)
                .unwrap();
            messages.extend(dictionaries.into_iter().map(stored));
        }
        messages
    }

    /// The record batch message `batch` is sent as under `options`, as stored.
    fn batch_message(batch: &RecordBatch, options: &IpcWriteOptions) -> StoredMessage {
        let mut tracker = DictionaryTracker::new(false);
        let mut context = IpcWriteContext::default();
        let (_, encoded) = IpcDataGenerator::default()
            .encode(batch, &mut tracker, options, &mut context)
            .unwrap();
        stored(encoded)
    }

    fn stored(encoded: EncodedData) -> StoredMessage {
        StoredMessage {
            header: encoded.ipc_message.into(),
            app_metadata: Bytes::new(),
            body: vec![encoded.arrow_data.into()],
        }
    }

    fn lz4() -> IpcWriteOptions {
        IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap()
    }

    fn words(words: &[&str]) -> RecordBatch {
        let keys: Vec<i32> = (0..words.len() as i32).collect();
        let values = StringArray::from_iter_values(words.iter().map(|w| w.repeat(1000)));
        let column = DictionaryArray::<Int32Type>::try_new(keys.into(), Arc::new(values)).unwrap();
        RecordBatch::try_from_iter([("w", Arc::new(column) as ArrayRef)]).unwrap()
    }

    #[test]
    fn dictionaries_hold_memory_of_their_own_when_decompressed_or_joined() {
        let batches = [words(&["a", "b"]), words(&["a", "b", "c"])];
        // Resent whole and uncompressed: decoded in place, nothing of their own.
        let plain = dictionary_messages(&batches, &IpcWriteOptions::default());
        let mut memory = DictionaryMemory::default();
        assert!(plain.iter().all(|message| memory.decoding(message) == 0));
        // A delta is joined to the values in force, in new memory: both counted.
        let deltas = IpcWriteOptions::default().with_dictionary_handling(DictionaryHandling::Delta);
        let messages = dictionary_messages(&batches, &deltas);
        assert_eq!(messages.len(), 2, "the whole dictionary, then a delta");
        let mut memory = DictionaryMemory::default();
        assert_eq!(memory.decoding(&messages[0]), 0);
        let joined = messages[0].body_len() + messages[1].body_len();
        assert_eq!(memory.decoding(&messages[1]), joined);
        // Compressed: decompressed, each replacing the one before it.
        let messages = dictionary_messages(&batches, &lz4());
        let mut memory = DictionaryMemory::default();
        // Two values of 1,000 bytes and their offsets, then three in their place.
        let first = memory.decoding(&messages[0]);
        assert!((2000..2100).contains(&first), "{first}");
        let second = memory.decoding(&messages[1]);
        assert!((3000..3100).contains(&second), "{second}");
    }

    #[test]
    #[cfg(feature = "sql")]
    fn a_decoder_of_some_columns_counts_only_theirs_decompressed() {
        let rows = 100_000;
        let some_null = |i: usize| (!i.is_multiple_of(10)).then_some(0);
        let batch = RecordBatch::try_from_iter([
            (
                "wide",
                Arc::new((0..rows).map(some_null).collect::<Int64Array>()) as ArrayRef,
            ),
            (
                "narrow",
                Arc::new(
                    (0..rows)
                        .map(|i| some_null(i).map(|v| v as i8))
                        .collect::<Int8Array>(),
                ),
            ),
        ])
        .unwrap();
        let message = batch_message(&batch, &lz4());
        let validity = bit_util::ceil(rows, 8);
        let (wide, narrow) = (validity + rows * 8, validity + rows);
        assert_eq!(
            DictionaryMemory::default().decoding(&message),
            wide + narrow
        );
        let schema = batch.schema();
        let cases = [
            (None, wide + narrow),
            (Some(vec![1]), narrow),
            (Some(vec![0]), wide),
            (Some(vec![1, 0]), wide + narrow),
            (Some(vec![]), 0),
        ];
        for (projection, bytes) in cases {
            let mut memory = DictionaryMemory::projected(Arc::clone(&schema), projection.clone());
            assert_eq!(memory.decoding(&message), bytes, "{projection:?}");
        }
        // Uncompressed, every column is decoded in place.
        let plain = batch_message(&batch, &IpcWriteOptions::default());
        let mut memory = DictionaryMemory::projected(schema, Some(vec![0]));
        assert_eq!(memory.decoding(&plain), 0);
    }
}
