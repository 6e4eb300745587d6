//! A read that starts inside a stored record batch: the rest of that batch, encoded again.
//!
//! Offsets are rows, so a read from row N (a download resumed, a follower's `from`) may start in
//! the middle of a stored batch. Every other stored message is replayed as it is; this one is
//! decoded (views of table memory, or its buffers decompressed if it was stored compressed),
//! sliced at N and encoded again as one record batch message with the batch's `app_metadata`.
//! The new message's large buffers are views of what was decoded, not copies: for an
//! uncompressed batch they point into table memory, and only small pieces are new (padding,
//! rebased offsets, shifted validity bitmaps), copied together into a few segments. A view that
//! would keep alive a decompressed buffer more than twice its size is copied instead.
//!
//! What a cut holds beyond table memory is the read's own memory, charged to the memory budget
//! before it is allocated: the batch decompressed before it is decoded, then at most what the
//! encoder may copy before it encodes (the dictionaries it encodes and this cut leaves out
//! included), then resized to what the message holds, and given back when the message has been
//! sent. It makes room by evicting or trimming other tables, never the one read (whose memory
//! the read holds, see [`MakeRoom::EvictingOthers`](crate::store::budget::MakeRoom)); when
//! nothing can be freed the read fails with RESOURCE_EXHAUSTED, naming the batch's first row and
//! the next one's, from which a read needs nothing.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::ArrayData;
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, SchemaRef, UnionMode};
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamEncoder;
use arrow::ipc::{self, MessageHeader};
use bytes::{Bytes, BytesMut};

use crate::store::budget::{Charge, OverBudget, UploadAccount};
use crate::store::decode::{DictionaryMemory, MessageDecoder};
use crate::store::table::StoredMessage;

/// Body buffers shorter than this are copied together into one segment, so that a message of
/// many small buffers is a few segments on the wire; longer ones are sent as views.
const COPY_BELOW: usize = 4096;

/// Why a batch could not be cut.
#[derive(Debug)]
pub(crate) enum CutError {
    /// It could not be decoded or encoded again (a bug: stored batches were validated).
    Arrow(ArrowError),
    /// The budget had no room for what the cut holds.
    OverBudget(OverBudget),
}

impl From<ArrowError> for CutError {
    fn from(err: ArrowError) -> Self {
        CutError::Arrow(err)
    }
}

impl From<OverBudget> for CutError {
    fn from(refusal: OverBudget) -> Self {
        CutError::OverBudget(refusal)
    }
}

/// `message`'s record batch from row `skip` on, as one record batch message keeping its
/// `app_metadata`, its memory charged to `account` (see the module's documentation). Its
/// dictionary columns' indices are kept as they are: they refer to the `dictionaries` sent
/// before it (record batch messages name no dictionary ids; the key's schema does).
///
/// # Errors
/// [`CutError::OverBudget`] if the budget has no room for it; [`CutError::Arrow`] if it cannot
/// be decoded or encoded.
pub(crate) fn rest_of_batch(
    schema: &SchemaRef,
    dictionaries: &[StoredMessage],
    message: &StoredMessage,
    skip: usize,
    account: &Arc<UploadAccount>,
) -> Result<StoredMessage, CutError> {
    // Decoding decompresses what was stored compressed; an uncompressed body is decoded in
    // place.
    let mut dictionary_memory = DictionaryMemory::default();
    for dictionary in dictionaries {
        dictionary_memory.decoding(dictionary);
    }
    let decoded = dictionary_memory.decoding(message);
    let charge = account.budget().charge(decoded, Some(account))?;
    let encoded = {
        let mut decoder = MessageDecoder::new(Arc::clone(schema), None)?;
        for dictionary in dictionaries {
            decoder.decode(dictionary)?;
        }
        let batch = decoder
            .decode(message)?
            .ok_or_else(|| ArrowError::IpcError("not a record batch".into()))?;
        let rest = batch.slice(skip, batch.num_rows() - skip);
        charge.grow(
            rest.columns()
                .iter()
                .map(|column| {
                    // A list's children are sliced by the encoder, which this bound does not
                    // follow: never more than the slice itself holds.
                    let data = column.to_data();
                    let slice = data.get_slice_memory_size().unwrap_or(usize::MAX);
                    encoding_copies(&data).min(slice.saturating_add(64 * buffer_count(&data)))
                })
                .sum(),
        )?;
        StreamEncoder::try_new(schema)?.encode(&rest)?
    };
    // Empty buffers are part of the layout the header describes, but of no bytes.
    let (header, buffers) = last_message(encoded.into_iter().filter(|b| !b.is_empty()))?;
    let mut body = Body::new(&message.body);
    for buffer in buffers {
        body.push(buffer);
    }
    let (segments, held) = body.finish();
    charge.resize(header.len() + held)?;
    let charge = Arc::new(charge);
    Ok(StoredMessage {
        header,
        app_metadata: message.app_metadata.clone(),
        body: segments
            .into_iter()
            .map(|segment| {
                Bytes::from_owner(ChargedSegment {
                    segment,
                    _charge: Arc::clone(&charge),
                })
            })
            .collect(),
    })
}

/// At most what arrow-ipc's writer allocates to encode `data`, a slice: what cannot be a view
/// of its buffers (offsets that do not start at 0, rebased; bitmaps that do not start at a
/// whole byte, shifted; the dictionaries, which it encodes into messages of their own, left
/// out here) and the padding after each buffer.
fn encoding_copies(data: &ArrayData) -> usize {
    let len = data.len();
    let bitmap = len.div_ceil(8);
    let padding = 64 * (data.buffers().len() + 1);
    let own = match data.data_type() {
        DataType::Dictionary(_, _) => {
            let values: usize = data
                .child_data()
                .iter()
                .map(ArrayData::get_array_memory_size)
                .sum();
            return padding + bitmap + values;
        }
        DataType::Boolean => bitmap,
        DataType::Utf8 | DataType::Binary | DataType::List(_) | DataType::Map(_, _) => {
            (len + 1) * 4
        }
        DataType::LargeUtf8 | DataType::LargeBinary | DataType::LargeList(_) => (len + 1) * 8,
        DataType::ListView(_) => len * 8,
        DataType::LargeListView(_) => len * 16,
        DataType::Union(_, UnionMode::Dense) => len * 4,
        _ => 0,
    };
    let children: usize = data.child_data().iter().map(encoding_copies).sum();
    padding + bitmap + own + children
}

/// The buffers of `data` and of its children, a validity bitmap counted for each.
fn buffer_count(data: &ArrayData) -> usize {
    1 + data.buffers().len() + data.child_data().iter().map(buffer_count).sum::<usize>()
}

/// The header and body buffers of the last message of an encoded IPC stream (the record
/// batch: the schema and any dictionaries come before it), given its non-empty buffers.
fn last_message(stream: impl Iterator<Item = Buffer>) -> Result<(Bytes, Vec<Buffer>), ArrowError> {
    let mut stream = StreamBuffers {
        rest: stream.collect::<Vec<_>>().into_iter(),
        current: None,
    };
    let mut last = None;
    while !stream.is_empty() {
        let prefix = concat(stream.take(8)?);
        let marker = u32::from_le_bytes(prefix[..4].try_into().expect("four bytes"));
        let len = i32::from_le_bytes(prefix[4..].try_into().expect("four bytes"));
        let len = usize::try_from(len)
            .ok()
            .filter(|_| marker == 0xFFFF_FFFF)
            .ok_or_else(|| ArrowError::IpcError("an encoded message without its prefix".into()))?;
        let header = concat(stream.take(len)?);
        let parsed = ipc::root_as_message(&header)
            .map_err(|err| ArrowError::IpcError(format!("an encoded header: {err}")))?;
        let body_len = usize::try_from(parsed.bodyLength())
            .map_err(|_| ArrowError::IpcError("an encoded body of negative length".into()))?;
        let is_batch = parsed.header_type() == MessageHeader::RecordBatch;
        let body = stream.take(body_len)?;
        last = Some((is_batch, header, body));
    }
    match last {
        Some((true, header, body)) => Ok((header, body)),
        _ => Err(ArrowError::IpcError(
            "the encoded stream does not end with a record batch".into(),
        )),
    }
}

/// An encoded IPC stream's buffers, taken a given number of bytes at a time.
struct StreamBuffers {
    rest: std::vec::IntoIter<Buffer>,
    /// What is left of the buffer being taken from.
    current: Option<Buffer>,
}

impl StreamBuffers {
    fn is_empty(&self) -> bool {
        self.current.as_ref().is_none_or(Buffer::is_empty) && self.rest.as_slice().is_empty()
    }

    /// The next `len` bytes, as slices of the stream's buffers.
    fn take(&mut self, mut len: usize) -> Result<Vec<Buffer>, ArrowError> {
        let mut taken = Vec::new();
        while len > 0 {
            let current = match self.current.take() {
                Some(current) if !current.is_empty() => current,
                _ => self
                    .rest
                    .next()
                    .ok_or_else(|| ArrowError::IpcError("an encoded message cut short".into()))?,
            };
            let n = len.min(current.len());
            taken.push(current.slice_with_length(0, n));
            self.current = Some(current.slice(n));
            len -= n;
        }
        Ok(taken)
    }
}

fn concat(buffers: Vec<Buffer>) -> Bytes {
    let mut bytes = BytesMut::with_capacity(buffers.iter().map(|b| b.len()).sum());
    for buffer in buffers {
        bytes.extend_from_slice(&buffer);
    }
    bytes.freeze()
}

/// A cut's body as it is assembled: small buffers copied together, large ones kept as views,
/// and the memory those views keep alive beyond the stored body's.
struct Body<'a> {
    stored: &'a [Bytes],
    segments: Vec<Segment>,
    copying: BytesMut,
    /// The allocations the views keep alive that are not table memory (decompressed or
    /// realigned buffers, rebased offsets), by address: their capacities.
    allocations: HashMap<usize, usize>,
    copied: usize,
}

/// One segment of a cut's body.
enum Segment {
    Copied(Bytes),
    View(Buffer),
}

impl AsRef<[u8]> for Segment {
    fn as_ref(&self) -> &[u8] {
        match self {
            Segment::Copied(bytes) => bytes,
            Segment::View(buffer) => buffer,
        }
    }
}

impl<'a> Body<'a> {
    fn new(stored: &'a [Bytes]) -> Self {
        Self {
            stored,
            segments: Vec::new(),
            copying: BytesMut::new(),
            allocations: HashMap::new(),
            copied: 0,
        }
    }

    fn push(&mut self, buffer: Buffer) {
        let start = buffer.as_ptr() as usize;
        let in_table_memory = self.stored.iter().any(|segment| {
            let segment_start = segment.as_ptr() as usize;
            start >= segment_start && start + buffer.len() <= segment_start + segment.len()
        });
        let allocation = buffer.capacity().max(buffer.len());
        // A small buffer is copied; so is a view that would keep alive an allocation more
        // than twice its size (a few rows of a batch decompressed).
        if buffer.len() < COPY_BELOW || (!in_table_memory && buffer.len() * 2 < allocation) {
            self.copying.extend_from_slice(&buffer);
            return;
        }
        self.flush();
        if !in_table_memory {
            self.allocations
                .insert(buffer.data_ptr().as_ptr() as usize, allocation);
        }
        self.segments.push(Segment::View(buffer));
    }

    fn flush(&mut self) {
        if !self.copying.is_empty() {
            // In an allocation of its own size: it is charged as held.
            let copied = Bytes::copy_from_slice(&self.copying);
            self.copying.clear();
            self.copied += copied.len();
            self.segments.push(Segment::Copied(copied));
        }
    }

    /// The segments, and the bytes they hold beyond table memory.
    fn finish(mut self) -> (Vec<Segment>, usize) {
        self.flush();
        let held = self.copied + self.allocations.values().sum::<usize>();
        (self.segments, held)
    }
}

/// A segment of a cut's body with the charge for the memory the cut holds, given back when the
/// last of its segments has been sent.
struct ChargedSegment {
    segment: Segment,
    _charge: Arc<Charge>,
}

impl AsRef<[u8]> for ChargedSegment {
    fn as_ref(&self) -> &[u8] {
        self.segment.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, ListArray, RecordBatch, StringArray};
    use arrow::datatypes::Int64Type;

    use super::*;
    use crate::protocol::encode::FlightEncoder;
    use crate::protocol::key::TableKey;
    use crate::store::budget::{MemoryBudget, RefusalReason, Relieve};
    use crate::store::table::tests::{lz4_messages, segment_of_messages};

    fn key() -> TableKey {
        TableKey::try_new("k").unwrap()
    }

    /// `rows` lists of four numbers, every seventh list null: nested, so stored whole.
    fn lists(rows: usize) -> RecordBatch {
        let lists = (0..rows as i64).map(|row| {
            (row % 7 != 0).then(|| (0..4).map(|i| Some(row * 4 + i)).collect::<Vec<_>>())
        });
        let column = ListArray::from_iter_primitive::<Int64Type, _, _>(lists);
        RecordBatch::try_from_iter([("lists", Arc::new(column) as _)]).unwrap()
    }

    /// The batch `message` carries, decoded with `schema` (its body joined in one piece, as
    /// a client receives it).
    fn decode(schema: &SchemaRef, message: &StoredMessage) -> RecordBatch {
        let joined = StoredMessage {
            body: vec![Bytes::from(message.body.concat())],
            ..message.clone()
        };
        let mut decoder = MessageDecoder::new(Arc::clone(schema), None).unwrap();
        decoder.decode(&joined).unwrap().unwrap()
    }

    /// Whether `inner` lies inside `outer`'s memory.
    fn inside(inner: &[u8], outer: &[u8]) -> bool {
        let (start, outer_start) = (inner.as_ptr() as usize, outer.as_ptr() as usize);
        start >= outer_start && start + inner.len() <= outer_start + outer.len()
    }

    #[test]
    fn the_rest_of_a_batch_is_its_rows_from_the_cut_its_values_views_of_table_memory() {
        let budget = MemoryBudget::new(None);
        let rows = 200_000;
        let batch = lists(rows);
        // As a client sends it: one message (this crate's client would split it in pieces).
        let mut encoder = FlightEncoder::new(usize::MAX);
        let schema = batch.schema();
        let mut messages = vec![encoder.encode_schema(&schema, None)];
        messages.extend(encoder.encode_batch(&batch).unwrap());
        let stored = segment_of_messages(&budget, messages);
        let [_, message] = stored.messages() else {
            panic!("a nested batch is stored whole")
        };
        let body = &message.body[0];
        let table_memory = budget.used();
        let account = UploadAccount::reading(&budget, key(), 0);
        for skip in [1, 8, 100_001, rows - 1] {
            let rest = rest_of_batch(&schema, &[], message, skip, &account).unwrap();
            assert_eq!(
                decode(&schema, &rest),
                batch.slice(skip, rows - skip),
                "from {skip}"
            );
            // The values (8 bytes each, 6.4 MB) are sent from table memory; the cut holds at
            // most the lists' offsets, rebased (4 bytes a row, unless the first is 0), a
            // shifted validity bitmap and padding.
            let largest = rest
                .body
                .iter()
                .max_by_key(|segment| segment.len())
                .unwrap();
            if rows - skip > 1000 {
                assert!(inside(largest, body), "from {skip}: the values are a view");
            }
            let held = budget.used() - table_memory;
            // From row 1 the offsets start at 0 (row 0 is a null list): sent as they are.
            let rebased = if skip == 1 { 0 } else { (rows - skip) * 4 };
            assert!(held >= rebased, "from {skip}: {held} bytes charged");
            assert!(
                held <= (rows - skip) * 5 + 64 * 1024,
                "from {skip}: {held} bytes charged"
            );
            assert_eq!(budget.uploading(), 0, "a read is not an upload");
            drop(rest);
            assert_eq!(budget.used(), table_memory, "given back once sent");
        }
    }

    #[test]
    fn a_rest_whose_last_buffers_are_empty_is_whole() {
        // The strings after row 2 are null: the rest from there has an empty values buffer,
        // last in the body, which the encoder hands on as an empty buffer.
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as _),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), Some(""), None, None])) as _,
            ),
        ])
        .unwrap();
        let budget = MemoryBudget::new(None);
        let stored = segment_of_messages(&budget, {
            let mut encoder = FlightEncoder::new(usize::MAX);
            let mut messages = vec![encoder.encode_schema(&batch.schema(), None)];
            messages.extend(encoder.encode_batch(&batch).unwrap());
            messages
        });
        let account = UploadAccount::reading(&budget, key(), 0);
        for skip in 1..4 {
            let rest =
                rest_of_batch(&batch.schema(), &[], &stored.messages()[1], skip, &account).unwrap();
            assert_eq!(decode(&batch.schema(), &rest), batch.slice(skip, 4 - skip));
        }
    }

    /// A relief that frees nothing and records what it was asked to spare.
    #[derive(Default)]
    struct Asked(std::sync::Mutex<Vec<(Option<TableKey>, bool)>>);

    impl Relieve for Asked {
        fn relieve(&self, protected: Option<&TableKey>, may_trim_protected: bool) -> bool {
            self.0
                .lock()
                .unwrap()
                .push((protected.cloned(), may_trim_protected));
            false
        }

        fn release_unused(&self) -> bool {
            false
        }
    }

    /// `batch` as an upload compressed with LZ4 stores it.
    fn compressed_segment(
        budget: &Arc<MemoryBudget>,
        batch: &RecordBatch,
    ) -> Arc<crate::store::table::Segment> {
        segment_of_messages(budget, lz4_messages(batch))
    }

    #[test]
    fn a_compressed_batch_is_charged_decompressed_and_refused_when_the_budget_has_no_room() {
        let rows = 1 << 20;
        let batch =
            RecordBatch::try_from_iter([("zeros", Arc::new(Int64Array::from(vec![0; rows])) as _)])
                .unwrap();
        let schema = batch.schema();

        let budget = MemoryBudget::new(None);
        let stored = compressed_segment(&budget, &batch);
        let message = &stored.messages()[1];
        assert!(message.body_len() < (64 << 10), "8 MiB of zeros compress");
        assert_eq!(DictionaryMemory::default().decoding(message), rows * 8);
        let table_memory = budget.used();
        let account = UploadAccount::reading(&budget, key(), 0);
        // Most of the batch: its values decompressed are sent as they are, and held.
        let rest = rest_of_batch(&schema, &[], message, 3, &account).unwrap();
        assert_eq!(decode(&schema, &rest), batch.slice(3, rows - 3));
        let held = budget.used() - table_memory;
        assert!(held >= rows * 8, "the decompressed values are held: {held}");
        assert!(held <= rows * 8 + (64 << 10), "only they: {held}");
        drop(rest);
        assert_eq!(budget.used(), table_memory);
        // Its last 1000 rows: copied out of the decompressed values, which are let go.
        let cut_at = rows - 1000;
        let rest = rest_of_batch(&schema, &[], message, cut_at, &account).unwrap();
        assert_eq!(decode(&schema, &rest), batch.slice(cut_at, 1000));
        let held = budget.used() - table_memory;
        assert!((8000..64 << 10).contains(&held), "{held}");
        drop(rest);
        assert_eq!(budget.used(), table_memory);

        // A budget of 1 MiB: the cut is refused before it decompresses, as it could not fit
        // with nothing else cached; so is one of 9 MiB with 2 MiB in use by the table read
        // (`pinned`: no eviction frees it), without asking for room. With 2 MiB of other
        // tables in use instead, it asks for room sparing the key read, and none is made.
        for (limit, pinned, reason, asked) in [
            (1 << 20, 0, RefusalReason::LargerThanBudget, vec![]),
            (9 << 20, 2 << 20, RefusalReason::LargerThanBudget, vec![]),
            (
                9 << 20,
                0,
                RefusalReason::NothingToFree,
                vec![(Some(key()), false)],
            ),
        ] {
            let small = MemoryBudget::new(Some(limit));
            let relief = Arc::new(Asked::default());
            let as_relief: Arc<dyn Relieve> = relief.clone();
            small.set_relief(Arc::downgrade(&as_relief));
            let in_use = (limit > 1 << 20).then(|| small.charge(2 << 20, None).unwrap());
            let account = UploadAccount::reading(&small, key(), pinned);
            let Err(CutError::OverBudget(refusal)) =
                rest_of_batch(&schema, &[], message, 3, &account)
            else {
                panic!("the cut fits in {limit} bytes beside {pinned}")
            };
            assert_eq!(refusal.reason, reason, "{limit} {pinned}");
            assert_eq!(refusal.needed, rows * 8, "{refusal:?}");
            assert_eq!(small.used(), in_use.as_ref().map_or(0, Charge::bytes));
            assert_eq!(*relief.0.lock().unwrap(), asked, "{limit} {pinned}");
        }
        let roomy = MemoryBudget::new(Some(9 << 20));
        let account = UploadAccount::reading(&roomy, key(), 0);
        assert!(rest_of_batch(&schema, &[], message, 3, &account).is_ok());
    }
}
