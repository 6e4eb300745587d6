//! `FlightEncoder`: record batches into Flight messages, the schema exactly as given.
//!
//! arrow-flight's `FlightDataEncoder` rewrites the schema on its way out (union fields lose
//! their nullability and metadata), drops zero-row batches, and over-splits sliced batches
//! (apache/arrow-rs#9388). A cache must hand back what it was given, so the client encodes with
//! arrow-ipc directly: one schema message, then for each batch its dictionaries (when new or
//! replaced) and its record batch, split into messages of about [`TARGET_MESSAGE_BYTES`].

use arrow::datatypes::Schema;
use arrow::error::ArrowError;
use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions};
use arrow::record_batch::RecordBatch;
use arrow_flight::{FlightData, FlightDescriptor};
use futures::{Stream, StreamExt, stream};

/// Record batches larger than this are sent as several messages of about this size, which
/// keeps both ends streaming instead of buffering one giant message.
pub const TARGET_MESSAGE_BYTES: usize = 2 << 20;

/// Encodes one stream: a schema, then batches, keeping dictionary state between them.
pub struct FlightEncoder {
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
    target_message_bytes: usize,
}

impl FlightEncoder {
    /// An encoder that splits record batches into messages of about `target_message_bytes`.
    pub fn new(target_message_bytes: usize) -> Self {
        Self {
            generator: IpcDataGenerator::default(),
            // Replacing a dictionary between batches is legal in an IPC stream; resend it.
            tracker: DictionaryTracker::new(false),
            options: IpcWriteOptions::default(),
            context: IpcWriteContext::default(),
            target_message_bytes: target_message_bytes.max(1),
        }
    }

    /// The schema message, carrying `descriptor` (as the first message of a `do_put` must).
    pub fn encode_schema(
        &mut self,
        schema: &Schema,
        descriptor: Option<FlightDescriptor>,
    ) -> FlightData {
        let encoded = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut self.tracker,
            &self.options,
        );
        let mut data = FlightData::from(encoded);
        data.flight_descriptor = descriptor;
        data
    }

    /// The messages for one batch: dictionaries that are new or changed, then the batch,
    /// split by rows when it is larger than the target. A zero-row batch is kept.
    ///
    /// # Errors
    /// The Arrow error if the batch cannot be encoded.
    pub fn encode_batch(&mut self, batch: &RecordBatch) -> Result<Vec<FlightData>, ArrowError> {
        let mut messages = Vec::new();
        for piece in split_batch(batch, self.target_message_bytes)? {
            let (dictionaries, record_batch) = self.generator.encode(
                &piece,
                &mut self.tracker,
                &self.options,
                &mut self.context,
            )?;
            messages.extend(dictionaries.into_iter().map(FlightData::from));
            messages.push(FlightData::from(record_batch));
        }
        Ok(messages)
    }
}

/// Slices of `batch` of about `target_bytes` each, measured by the bytes the slice itself
/// covers (not the whole buffers a sliced array points into).
fn split_batch(batch: &RecordBatch, target_bytes: usize) -> Result<Vec<RecordBatch>, ArrowError> {
    let rows = batch.num_rows();
    let mut bytes = 0;
    for column in batch.columns() {
        bytes += column.to_data().get_slice_memory_size()?;
    }
    let pieces = bytes.div_ceil(target_bytes).clamp(1, rows.max(1));
    if pieces == 1 {
        return Ok(vec![batch.clone()]);
    }
    let rows_per_piece = rows.div_ceil(pieces);
    Ok((0..rows)
        .step_by(rows_per_piece)
        .map(|start| batch.slice(start, rows_per_piece.min(rows - start)))
        .collect())
}

/// The message stream for `batches`: schema first (carrying `descriptor`, as the first
/// message of a `do_put` must; a `do_get` answer has none), then batches. Encoding happens as
/// the stream is polled, one input batch at a time.
pub fn encode_stream<S, E>(
    schema: &Schema,
    descriptor: Option<FlightDescriptor>,
    batches: S,
) -> impl Stream<Item = Result<FlightData, E>> + Send + 'static
where
    S: Stream<Item = Result<RecordBatch, E>> + Send + 'static,
    E: From<ArrowError> + Send + 'static,
{
    let mut encoder = FlightEncoder::new(TARGET_MESSAGE_BYTES);
    let schema_message = encoder.encode_schema(schema, descriptor);
    let messages = batches.flat_map(move |batch| {
        let encoded = batch.and_then(|batch| Ok(encoder.encode_batch(&batch)?));
        match encoded {
            Ok(messages) => stream::iter(messages.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(err) => stream::iter(vec![Err(err)]),
        }
    });
    stream::once(async move { Ok(schema_message) }).chain(messages)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;

    use super::*;

    fn ids(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(0..n)) as _)])
            .unwrap()
    }

    #[test]
    fn small_and_empty_batches_stay_whole() {
        assert_eq!(split_batch(&ids(10), 1 << 20).unwrap().len(), 1);
        assert_eq!(split_batch(&ids(0), 1 << 20).unwrap().len(), 1);
    }

    #[test]
    fn large_batches_split_by_rows_in_order() {
        let batch = ids(1000); // 8000 bytes
        let pieces = split_batch(&batch, 2000).unwrap();
        assert_eq!(pieces.len(), 4);
        let rows: usize = pieces.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 1000);
        assert_eq!(pieces[1], batch.slice(250, 250));
    }

    #[test]
    fn a_slice_is_measured_by_its_own_rows() {
        // A 10-row slice of a big batch is small, whatever its buffers' size (arrow-rs#9388).
        let slice = ids(1_000_000).slice(10, 10);
        assert_eq!(split_batch(&slice, 1 << 10).unwrap().len(), 1);
    }
}
