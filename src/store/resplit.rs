//! Splitting a giant record batch into streaming-size pieces without copying its data.
//!
//! pyarrow sends a table chunk as one message however large it is (`pa.table(numpy_arrays)` is
//! one chunk), and a get that replays it as one message makes both ends buffer all of it. So a
//! record batch whose body is over [`RESPLIT_ABOVE_BYTES`] is stored as pieces of about
//! [`TARGET_MESSAGE_BYTES`] each, of consecutive rows. Each piece is a new IPC header over
//! slices of the giant body, which stays where it was received: a piece's buffers are ranges
//! of the original ones (rows start at multiples of 64, so validity bitmaps and values slice at
//! whole, 8-byte aligned bytes), plus zero padding between them. Only variable-length offsets
//! are new, rebased to start at zero (4 or 8 bytes a row). The table thus costs its upload
//! once, however it was chunked.
//!
//! Only flat columns slice this way: fixed-width types (numbers, decimals, dates, times,
//! intervals, booleans, fixed-size binary), variable-length strings and binary, and nulls.
//! A batch with nested, dictionary, view, union or run-end encoded columns, or a compressed
//! body, is kept whole.

use arrow::buffer::{BooleanBuffer, Buffer};
use arrow::datatypes::{DataType, Schema};
use arrow::ipc::{self, MetadataVersion};
use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use crate::protocol::encode::TARGET_MESSAGE_BYTES;
use crate::store::table::StoredMessage;

/// Record batches whose body is larger than this are stored as pieces of about
/// [`TARGET_MESSAGE_BYTES`]: split once at put time, every later get streams.
pub const RESPLIT_ABOVE_BYTES: usize = 2 * TARGET_MESSAGE_BYTES;

/// Rows of a piece are a multiple of this: bitmaps slice at whole bytes, and every slice of a
/// fixed-width buffer starts at a multiple of 8 bytes.
const ROW_ALIGNMENT: usize = 64;

/// Zeros to pad buffers to 8-byte offsets.
static PADDING: [u8; 8] = [0; 8];

/// Whether batches of `schema` can be split without copying their data.
pub fn can_split(schema: &Schema) -> bool {
    schema
        .fields()
        .iter()
        .all(|f| flat_buffer_count(f.data_type()).is_some())
}

/// How many buffers a piece holds for a column of `data_type`, for the flat types that split
/// (see the module docs): none for null, validity and values for fixed widths and booleans,
/// validity, offsets and data for variable lengths; `None` for every other type.
pub fn flat_buffer_count(data_type: &DataType) -> Option<usize> {
    match data_type {
        DataType::Null => Some(0),
        DataType::Utf8 | DataType::Binary | DataType::LargeUtf8 | DataType::LargeBinary => Some(3),
        DataType::Boolean | DataType::FixedSizeBinary(_) => Some(2),
        other if other.is_primitive() => Some(2),
        _ => None,
    }
}

/// One piece of a split batch, and the bytes of its body that are its own (rebased offsets)
/// rather than slices of the original body: the upload charges them to the budget.
pub struct SplitPiece {
    /// The piece, as stored.
    pub message: StoredMessage,
    /// Bytes of `message`'s body allocated for this piece.
    pub owned_bytes: usize,
}

/// The pieces of a record batch of `schema` whose validated header is `batch` and body is
/// `body`, or `None` to keep it whole (small, compressed, or not [`can_split`]). The first
/// piece carries `app_metadata`.
pub fn split(
    schema: &Schema,
    batch: ipc::RecordBatch<'_>,
    version: MetadataVersion,
    body: &Bytes,
    app_metadata: &Bytes,
) -> Option<Vec<SplitPiece>> {
    if body.len() <= RESPLIT_ABOVE_BYTES || batch.compression().is_some() || !can_split(schema) {
        return None;
    }
    let rows = usize::try_from(batch.length()).ok()?;
    let nodes: Vec<_> = batch.nodes()?.iter().copied().collect();
    let buffers: Vec<_> = batch.buffers()?.iter().copied().collect();
    let bytes_per_row = (body.len() / rows.max(1)).max(1);
    let rows_per_piece = (TARGET_MESSAGE_BYTES / bytes_per_row)
        .next_multiple_of(ROW_ALIGNMENT)
        .max(ROW_ALIGNMENT);
    let mut pieces = Vec::with_capacity(rows.div_ceil(rows_per_piece));
    for start in (0..rows).step_by(rows_per_piece) {
        let len = rows_per_piece.min(rows - start);
        let mut piece = Piece::default();
        let mut buffer = buffers.iter();
        for (field, node) in schema.fields().iter().zip(&nodes) {
            piece.column(field.data_type(), node, &mut buffer, body, start, len)?;
        }
        let app_metadata = if start == 0 {
            app_metadata.clone()
        } else {
            Bytes::new()
        };
        let owned_bytes = piece.owned_bytes;
        pieces.push(SplitPiece {
            message: piece.finish(version, len, app_metadata),
            owned_bytes,
        });
    }
    Some(pieces)
}

/// One piece being assembled: its nodes, buffers and body segments.
#[derive(Default)]
struct Piece {
    nodes: Vec<ipc::FieldNode>,
    buffers: Vec<ipc::Buffer>,
    segments: Vec<Bytes>,
    body_len: usize,
    /// Bytes of `segments` allocated here (rebased offsets), not sliced from the body.
    owned_bytes: usize,
}

impl Piece {
    /// Add one column's node and buffers for rows `start..start + len`; `None` if a buffer is
    /// missing (the layout was validated, so it is not).
    fn column<'a>(
        &mut self,
        data_type: &DataType,
        node: &ipc::FieldNode,
        buffers: &mut impl Iterator<Item = &'a ipc::Buffer>,
        body: &Bytes,
        start: usize,
        len: usize,
    ) -> Option<()> {
        let whole =
            |b: &ipc::Buffer| body.slice(b.offset() as usize..(b.offset() + b.length()) as usize);
        let bitmap = |b: &Bytes| b.slice(start / 8..(start + len).div_ceil(8).min(b.len()));
        if let DataType::Null = data_type {
            self.nodes.push(ipc::FieldNode::new(len as i64, len as i64));
            return Some(());
        }
        // The validity bitmap, read only when the original column has nulls.
        let validity = whole(buffers.next()?);
        let nulls = if node.null_count() > 0 {
            let slice = bitmap(&validity);
            let valid = BooleanBuffer::new(Buffer::from(slice.clone()), 0, len).count_set_bits();
            self.push(slice);
            len - valid
        } else {
            self.push(Bytes::new());
            0
        };
        self.nodes
            .push(ipc::FieldNode::new(len as i64, nulls as i64));
        let values = whole(buffers.next()?);
        match data_type {
            DataType::Boolean => self.push(bitmap(&values)),
            DataType::Utf8 | DataType::Binary => {
                let data = whole(buffers.next()?);
                self.variable::<4>(&values, &data, start, len)?;
            }
            DataType::LargeUtf8 | DataType::LargeBinary => {
                let data = whole(buffers.next()?);
                self.variable::<8>(&values, &data, start, len)?;
            }
            DataType::FixedSizeBinary(width) => {
                let width = usize::try_from(*width).ok()?;
                self.push(values.slice(start * width..(start + len) * width));
            }
            other => {
                let width = other.primitive_width()?;
                self.push(values.slice(start * width..(start + len) * width));
            }
        }
        Some(())
    }

    /// The offsets (`W` bytes each) of rows `start..start + len`, rebased to 0, and the data
    /// they cover.
    fn variable<const W: usize>(
        &mut self,
        offsets: &Bytes,
        data: &Bytes,
        start: usize,
        len: usize,
    ) -> Option<()> {
        let offset_at = |row: usize| -> Option<i64> {
            let bytes = offsets.get(row * W..(row + 1) * W)?;
            Some(match W {
                4 => i64::from(i32::from_le_bytes(bytes.try_into().ok()?)),
                _ => i64::from_le_bytes(bytes.try_into().ok()?),
            })
        };
        let first = offset_at(start)?;
        let last = offset_at(start + len)?;
        let mut rebased = Vec::with_capacity((len + 1) * W);
        for row in start..=start + len {
            let offset = offset_at(row)? - first;
            match W {
                4 => rebased.extend_from_slice(&i32::try_from(offset).ok()?.to_le_bytes()),
                _ => rebased.extend_from_slice(&offset.to_le_bytes()),
            }
        }
        self.owned_bytes += rebased.capacity();
        self.push(Bytes::from(rebased));
        self.push(data.slice(usize::try_from(first).ok()?..usize::try_from(last).ok()?));
        Some(())
    }

    /// Append a buffer at the next 8-byte aligned offset of the body.
    fn push(&mut self, buffer: Bytes) {
        self.pad();
        self.buffers
            .push(ipc::Buffer::new(self.body_len as i64, buffer.len() as i64));
        self.body_len += buffer.len();
        if !buffer.is_empty() {
            self.segments.push(buffer);
        }
    }

    fn pad(&mut self) {
        let padding = self.body_len.next_multiple_of(8) - self.body_len;
        if padding > 0 {
            self.segments.push(Bytes::from_static(&PADDING[..padding]));
            self.body_len += padding;
        }
    }

    /// The piece as a stored message of `rows` rows.
    fn finish(
        mut self,
        version: MetadataVersion,
        rows: usize,
        app_metadata: Bytes,
    ) -> StoredMessage {
        self.pad();
        let mut fbb = FlatBufferBuilder::new();
        let nodes = fbb.create_vector(&self.nodes);
        let buffers = fbb.create_vector(&self.buffers);
        let mut batch = ipc::RecordBatchBuilder::new(&mut fbb);
        batch.add_length(rows as i64);
        batch.add_nodes(nodes);
        batch.add_buffers(buffers);
        let batch = batch.finish().as_union_value();
        let mut message = ipc::MessageBuilder::new(&mut fbb);
        message.add_version(version);
        message.add_header_type(ipc::MessageHeader::RecordBatch);
        message.add_header(batch);
        message.add_bodyLength(self.body_len as i64);
        let message = message.finish();
        fbb.finish(message, None);
        StoredMessage {
            header: Bytes::copy_from_slice(fbb.finished_data()),
            app_metadata,
            body: self.segments,
        }
    }
}
