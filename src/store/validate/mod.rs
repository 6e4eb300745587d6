//! Strict validation of uploaded Arrow IPC messages: the checks a conforming Arrow reader
//! makes, so that no table is stored that Arrow C++ (pyarrow) or arrow-rs would refuse to read.
//!
//! arrow-ipc's decoder, with its full validation, covers most of what a reader checks: offsets,
//! UTF-8, dictionary keys, union type ids, view buffers, run ends, declared null counts against
//! bitmaps. This module adds what it does not check, or checks only by panicking:
//!
//! - **Before a body is decoded**, from the header alone ([`check_message`],
//!   [`BatchLayout::check`]): the metadata version (V4 or V5, what Arrow C++ reads), the body
//!   length the header declares, every node (length and null count non-negative, null count
//!   at most the length, top-level lengths equal to the batch's), every buffer a reader reads
//!   (8-byte aligned, within the body; the validity bitmap of an array without nulls is read
//!   by no Arrow C++ reader and is declared empty instead, see [`LayoutFixes`]), exactly as
//!   many nodes and buffers as the schema needs, and the sizes compressed buffers declare. A
//!   body that passes cannot make arrow-ipc read out of bounds, which it answers with a panic.
//! - **In the schema** ([`check_schema`]): little-endian (a table is served as it was
//!   uploaded, so bytes in another order cannot be), union type ids Arrow can represent,
//!   decimal precisions within their width, maps whose entries and keys are not nullable,
//!   metadata whose keys and values are all there, and canonical extension types (`arrow.uuid`
//!   and the others) whose storage and parameters Arrow C++ reads ([`extension`]).
//! - **After decoding** ([`check_values`]): the value-level checks of Arrow C++'s full
//!   validation that arrow-rs leaves out: decimals within their precision, times of day within
//!   a day, `Date64` values in whole days, dense union offsets that never go back. Only the
//!   types that need one are checked ([`needs_value_checks`]); other fixed-width data costs
//!   only its sizes.

mod extension;
mod lz4;

pub use crate::error::upload::Violation;

use std::collections::VecDeque;

use arrow::array::ArrayData;
use arrow::datatypes::{DataType, Field, UnionMode};
use arrow::ipc::{self, MetadataVersion};

/// Check what every message must: a header Arrow C++'s flatbuffer verifier accepts too, a
/// supported metadata version, and a body of the declared length.
///
/// # Errors
/// The first violation found.
pub fn check_message(message: &ipc::Message<'_>, body_len: usize) -> Result<(), Violation> {
    let version = message.version();
    if version != MetadataVersion::V4 && version != MetadataVersion::V5 {
        return Err(Violation::MetadataVersion(version.0));
    }
    check_metadata(message.custom_metadata(), "message")?;
    offsets::check(message)?;
    let declared = message.bodyLength();
    if usize::try_from(declared).ok() != Some(body_len) {
        return Err(Violation::BodyLength {
            declared,
            actual: body_len,
        });
    }
    Ok(())
}

/// Check a schema message: its byte order, and the union type ids of its fields, which arrow-rs
/// would otherwise truncate to `i8`. `schema` is the same schema as arrow-rs read it, whose
/// decimal precisions are checked too.
///
/// # Errors
/// The first violation found.
pub fn check_schema(
    fb_schema: ipc::Schema<'_>,
    schema: &arrow::datatypes::Schema,
) -> Result<(), Violation> {
    if fb_schema.endianness() != ipc::Endianness::Little {
        return Err(Violation::BigEndian);
    }
    check_metadata(fb_schema.custom_metadata(), "schema")?;
    if let Some(fields) = fb_schema.fields() {
        for field in fields.iter() {
            check_fb_field(field)?;
        }
    }
    for field in schema.fields() {
        check_field(field)?;
    }
    Ok(())
}

/// Check that every entry of custom metadata has a key and a value (Arrow C++ refuses one
/// without).
fn check_metadata(
    metadata: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<ipc::KeyValue<'_>>>>,
    place: &'static str,
) -> Result<(), Violation> {
    let complete = metadata.is_none_or(|entries| {
        entries
            .iter()
            .all(|entry| entry.key().is_some() && entry.value().is_some())
    });
    if complete {
        Ok(())
    } else {
        Err(Violation::MetadataEntry { place })
    }
}

/// Check a field as arrow-rs read it: its type and the types nested in it, maps, and
/// canonical extension types, at any depth.
fn check_field(field: &Field) -> Result<(), Violation> {
    check_type(field.name(), field.data_type())?;
    extension::check(field).map_err(|(name, reason)| Violation::ExtensionType {
        field: field.name().clone(),
        name,
        reason,
    })?;
    if let DataType::Map(entries, _) = field.data_type() {
        let sound = !entries.is_nullable()
            && matches!(entries.data_type(), DataType::Struct(kv) if kv.len() == 2 && !kv[0].is_nullable());
        if !sound {
            return Err(Violation::MapLayout {
                field: field.name().clone(),
            });
        }
    }
    nested_fields(field.data_type())
        .into_iter()
        .try_for_each(check_field)
}

/// The fields nested in a type, a dictionary's value type included.
pub fn nested_fields(data_type: &DataType) -> Vec<&Field> {
    match data_type {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::Map(f, _) => vec![f.as_ref()],
        DataType::Struct(fields) => fields.iter().map(|f| f.as_ref()).collect(),
        DataType::Union(fields, _) => fields.iter().map(|(_, f)| f.as_ref()).collect(),
        DataType::RunEndEncoded(run_ends, values) => vec![run_ends.as_ref(), values.as_ref()],
        DataType::Dictionary(_, values) => nested_fields(values),
        _ => Vec::new(),
    }
}

fn check_fb_field(field: ipc::Field<'_>) -> Result<(), Violation> {
    check_metadata(field.custom_metadata(), "field")?;
    if let Some(union) = field.type_as_union() {
        let children = field.children().map_or(0, |c| c.len());
        if let Some(ids) = union.typeIds() {
            let type_ids: Vec<i32> = ids.iter().collect();
            let mut seen = [false; 128];
            let distinct_in_range = type_ids.iter().all(|&id| {
                let Ok(id) = usize::try_from(id) else {
                    return false;
                };
                id < seen.len() && !std::mem::replace(&mut seen[id], true)
            });
            if !distinct_in_range || type_ids.len() != children {
                return Err(Violation::UnionTypeIds {
                    field: field.name().unwrap_or_default().to_string(),
                    type_ids,
                });
            }
        } else if children > 128 {
            return Err(Violation::UnionTypeIds {
                field: field.name().unwrap_or_default().to_string(),
                type_ids: (0..children as i32).collect(),
            });
        }
    }
    if let Some(children) = field.children() {
        for child in children.iter() {
            check_fb_field(child)?;
        }
    }
    Ok(())
}

/// Check a field's own type, and a dictionary's value type: the fields nested in it are
/// checked by [`check_field`] as it walks them, each once.
fn check_type(name: &str, data_type: &DataType) -> Result<(), Violation> {
    use arrow::datatypes::{
        DECIMAL32_MAX_PRECISION, DECIMAL64_MAX_PRECISION, DECIMAL128_MAX_PRECISION,
        DECIMAL256_MAX_PRECISION,
    };
    let max = match data_type {
        DataType::Decimal32(p, _) => Some((*p, DECIMAL32_MAX_PRECISION)),
        DataType::Decimal64(p, _) => Some((*p, DECIMAL64_MAX_PRECISION)),
        DataType::Decimal128(p, _) => Some((*p, DECIMAL128_MAX_PRECISION)),
        DataType::Decimal256(p, _) => Some((*p, DECIMAL256_MAX_PRECISION)),
        _ => None,
    };
    if let Some((precision, max)) = max
        && !(1..=max).contains(&precision)
    {
        return Err(Violation::DecimalPrecision {
            field: name.to_string(),
            data_type: data_type.clone(),
            max,
        });
    }
    if let DataType::FixedSizeBinary(width) | DataType::FixedSizeList(_, width) = data_type
        && *width < 0
    {
        return Err(Violation::NegativeWidth {
            field: name.to_string(),
            data_type: data_type.clone(),
        });
    }
    match data_type {
        DataType::Dictionary(_, values) => check_type(name, values),
        _ => Ok(()),
    }
}

/// The offsets of an IPC header, checked as Arrow C++'s flatbuffer verifier checks them.
///
/// Both verifiers check that every offset stays within the header, but C++'s also refuses an
/// offset of zero (one that points at itself). This walks every offset of the tables an IPC
/// message can hold, from the positions flatbuffers' Rust verifier has already checked.
mod offsets {
    use arrow::ipc;
    use flatbuffers::VOffsetT;

    use super::Violation;

    /// The header's bytes, and the walk over them.
    struct Header<'a>(&'a [u8]);

    /// Check every offset of `message`.
    pub fn check(message: &ipc::Message<'_>) -> Result<(), Violation> {
        let table = message._tab;
        let header = Header(table.buf());
        let at = table.loc();
        header.vector_of_tables(at, ipc::Message::VT_CUSTOM_METADATA, Header::key_value)?;
        let Some(body) = header.table(at, ipc::Message::VT_HEADER)? else {
            return Ok(());
        };
        match message.header_type() {
            ipc::MessageHeader::Schema => header.schema(body),
            ipc::MessageHeader::RecordBatch => header.record_batch(body),
            ipc::MessageHeader::DictionaryBatch => {
                match header.table(body, ipc::DictionaryBatch::VT_DATA)? {
                    Some(batch) => header.record_batch(batch),
                    None => Ok(()),
                }
            }
            _ => Ok(()), // refused later as a message of another kind
        }
    }

    impl Header<'_> {
        fn u32_at(&self, at: usize) -> Option<u32> {
            let bytes = self.0.get(at..at + 4)?;
            Some(u32::from_le_bytes(bytes.try_into().ok()?))
        }

        /// Where the field in `slot` of the table at `table` is, if it is set.
        fn field(&self, table: usize, slot: VOffsetT) -> Option<usize> {
            let soffset = self.u32_at(table)? as i32;
            let vtable = usize::try_from(table as i64 - i64::from(soffset)).ok()?;
            let vtable_len = u16::from_le_bytes(self.0.get(vtable..vtable + 2)?.try_into().ok()?);
            if usize::from(slot) + 2 > usize::from(vtable_len) {
                return None;
            }
            let at = vtable + usize::from(slot);
            let voffset = u16::from_le_bytes(self.0.get(at..at + 2)?.try_into().ok()?);
            (voffset != 0).then_some(table + usize::from(voffset))
        }

        /// Follow the offset stored at `at`.
        fn follow(&self, at: usize) -> Result<usize, Violation> {
            match self.u32_at(at) {
                Some(0) => Err(Violation::ZeroOffset { at }),
                Some(offset) => Ok(at + offset as usize),
                None => Ok(at), // out of the verified range: nothing of ours points here
            }
        }

        /// The table, string or vector the offset in `slot` points at, if the slot is set.
        fn table(&self, table: usize, slot: VOffsetT) -> Result<Option<usize>, Violation> {
            self.field(table, slot)
                .map(|at| self.follow(at))
                .transpose()
        }

        /// Check each table of the vector in `slot`, with `check`.
        fn vector_of_tables(
            &self,
            table: usize,
            slot: VOffsetT,
            check: fn(&Self, usize) -> Result<(), Violation>,
        ) -> Result<(), Violation> {
            let Some(vector) = self.table(table, slot)? else {
                return Ok(());
            };
            let len = self.u32_at(vector).unwrap_or(0) as usize;
            for i in 0..len.min(self.0.len() / 4) {
                check(self, self.follow(vector + 4 + 4 * i)?)?;
            }
            Ok(())
        }

        fn key_value(&self, table: usize) -> Result<(), Violation> {
            self.table(table, ipc::KeyValue::VT_KEY)?;
            self.table(table, ipc::KeyValue::VT_VALUE)?;
            Ok(())
        }

        fn schema(&self, table: usize) -> Result<(), Violation> {
            self.vector_of_tables(table, ipc::Schema::VT_FIELDS, Self::field_table)?;
            self.vector_of_tables(table, ipc::Schema::VT_CUSTOM_METADATA, Self::key_value)?;
            self.table(table, ipc::Schema::VT_FEATURES)?;
            Ok(())
        }

        fn field_table(&self, table: usize) -> Result<(), Violation> {
            self.table(table, ipc::Field::VT_NAME)?;
            if let Some(type_) = self.table(table, ipc::Field::VT_TYPE_)? {
                // The type tables with offsets of their own.
                let type_type = self
                    .field(table, ipc::Field::VT_TYPE_TYPE)
                    .and_then(|at| self.0.get(at).copied())
                    .map(ipc::Type);
                match type_type {
                    Some(ipc::Type::Timestamp) => {
                        self.table(type_, ipc::Timestamp::VT_TIMEZONE)?;
                    }
                    Some(ipc::Type::Union) => {
                        self.table(type_, ipc::Union::VT_TYPEIDS)?;
                    }
                    _ => {}
                }
            }
            if let Some(dictionary) = self.table(table, ipc::Field::VT_DICTIONARY)? {
                self.table(dictionary, ipc::DictionaryEncoding::VT_INDEXTYPE)?;
            }
            self.vector_of_tables(table, ipc::Field::VT_CHILDREN, Self::field_table)?;
            self.vector_of_tables(table, ipc::Field::VT_CUSTOM_METADATA, Self::key_value)
        }

        fn record_batch(&self, table: usize) -> Result<(), Violation> {
            for slot in [
                ipc::RecordBatch::VT_NODES,
                ipc::RecordBatch::VT_BUFFERS,
                ipc::RecordBatch::VT_COMPRESSION,
                ipc::RecordBatch::VT_VARIADICBUFFERCOUNTS,
            ] {
                self.table(table, slot)?;
            }
            Ok(())
        }
    }
}

/// The layout of one record batch (or dictionary batch) header, checked against the fields it
/// must hold before arrow-ipc reads its body.
pub struct BatchLayout<'a> {
    nodes: Option<flatbuffers::Vector<'a, ipc::FieldNode>>,
    buffers: Option<flatbuffers::Vector<'a, ipc::Buffer>>,
    variadic_counts: VecDeque<i64>,
    version: MetadataVersion,
    body: &'a [u8],
    compressed: bool,
    /// Whether its buffers are LZ4 frames (else ZSTD, when compressed).
    lz4: bool,
    /// Uncompressed bytes the compressed buffers declare, so far.
    decompressed_bytes: i64,
    /// Most uncompressed bytes a message's buffers may declare in all.
    max_decompressed_bytes: usize,
    /// Whether LZ4 frames are bounded by what they hold (not again for a stored batch).
    bound_frames: bool,
    next_node: usize,
    next_buffer: usize,
    /// What arrow-rs needs changed in the header to read the batch as Arrow C++ does.
    fixes: LayoutFixes,
}

/// What a batch header needs changed for arrow-rs to read it as Arrow C++ does (usually
/// nothing): see [`LengthFix`] and [`LayoutFixes::v4_run_end_validity`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LayoutFixes {
    /// Buffer lengths to declare instead, in the header that is kept and served.
    pub lengths: Vec<LengthFix>,
    /// Buffers to leave out of the header arrow-rs decodes, not of the one that is kept: in
    /// IPC metadata V4, Arrow C++ writes (and reads) a validity buffer for every type but
    /// null, run-end encoded arrays included, where arrow-rs reads none for them and would
    /// take every later buffer for the one before it.
    pub v4_run_end_validity: Vec<usize>,
}

/// What [`BatchLayout::check`] found of a sound batch.
#[derive(Debug, Default)]
pub struct CheckedLayout {
    /// What the header needs changed.
    pub fixes: LayoutFixes,
    /// The bytes its compressed buffers declare they decompress to (at most the limit given;
    /// 0 when it is not compressed): what decoding it allocates.
    pub decompressed_bytes: usize,
    /// The same, column by column (top-level columns, their children included): what
    /// decoding only some of them allocates.
    pub decompressed_by_column: Vec<usize>,
}

impl LayoutFixes {
    /// Whether the header is fine as it is.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty() && self.v4_run_end_validity.is_empty()
    }
}

/// A buffer length in a batch header that Arrow C++ reads as it is but arrow-rs does not, and
/// the length that means the same to both.
///
/// Arrow C++ writes buffers longer than their array needs, not always by whole values:
/// `pa.nulls(n, type)` shares one zeroed buffer of the largest size any child needs among all
/// of them (12 bytes of union offsets under an `Int64` child). arrow-rs views some typed
/// buffers whole as values of their width and panics on a part value, so such a buffer is
/// declared shorter, to whole values, never below what its array needs.
///
/// A zero-length slice of a list, as Arrow C++ writes it, keeps its first offset (`[5]` over
/// no values); Arrow C++ reads no offsets of an array of no rows, but arrow-rs checks them
/// against the values and refuses the batch (`First offset 5 of List(UInt8) is larger than
/// values length 0`). Likewise Arrow C++ never reads the validity bitmap of an array without
/// nulls, whatever range it declares, where arrow-rs reads it. Declaring such buffers empty
/// drops only bytes no reader looks at, so the table reads the same to both, and to arrow-rs
/// clients too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthFix {
    /// The buffer's position in the header.
    pub buffer: usize,
    /// The offset to declare.
    pub offset: i64,
    /// The length to declare.
    pub length: i64,
}

impl<'a> BatchLayout<'a> {
    /// The layout of `batch`, whose body is `body`, in a message of `version`. Its compressed
    /// buffers may declare `max_decompressed_bytes` in all.
    pub fn new(
        batch: ipc::RecordBatch<'a>,
        version: MetadataVersion,
        body: &'a [u8],
        max_decompressed_bytes: usize,
    ) -> Self {
        Self {
            nodes: batch.nodes(),
            buffers: batch.buffers(),
            variadic_counts: batch
                .variadicBufferCounts()
                .map(|v| v.iter().collect())
                .unwrap_or_default(),
            version,
            body,
            compressed: batch.compression().is_some(),
            lz4: batch
                .compression()
                .is_some_and(|c| c.codec() == ipc::CompressionType::LZ4_FRAME),
            decompressed_bytes: 0,
            max_decompressed_bytes,
            bound_frames: true,
            next_node: 0,
            next_buffer: 0,
            fixes: LayoutFixes::default(),
        }
    }

    /// The layout of `batch`, a batch checked with [`BatchLayout::new`] when it was stored,
    /// to read what its buffers declare again: its LZ4 frames are not bounded a second time.
    pub fn stored(batch: ipc::RecordBatch<'a>, version: MetadataVersion, body: &'a [u8]) -> Self {
        Self {
            bound_frames: false,
            ..Self::new(batch, version, body, usize::MAX)
        }
    }

    /// Check the layout for columns of `fields` and `rows` rows: every node and buffer sound,
    /// and exactly the ones the fields need. Returns what the header needs changed for
    /// arrow-rs to read the batch as Arrow C++ does ([`LayoutFixes`]), usually nothing, and
    /// what decoding it will decompress.
    ///
    /// # Errors
    /// The first violation found.
    pub fn check<'f>(
        mut self,
        fields: impl IntoIterator<Item = &'f DataType>,
        rows: i64,
    ) -> Result<CheckedLayout, Violation> {
        if rows < 0 {
            return Err(Violation::NegativeLength(rows));
        }
        let mut decompressed_by_column = Vec::new();
        for (column, data_type) in fields.into_iter().enumerate() {
            let before = self.decompressed_bytes;
            let length = self.column(data_type)?;
            // Both at most the limit, a usize.
            decompressed_by_column
                .push(usize::try_from(self.decompressed_bytes - before).unwrap_or(usize::MAX));
            if length != rows {
                return Err(Violation::ColumnLength {
                    column,
                    length,
                    rows,
                });
            }
        }
        let counts = [
            ("nodes", self.node_count(), self.next_node),
            ("buffers", self.buffer_count(), self.next_buffer),
            ("variadic buffer counts", self.variadic_counts.len(), 0),
        ];
        for (what, found, expected) in counts {
            if found != expected {
                return Err(Violation::Count {
                    what,
                    found,
                    expected,
                });
            }
        }
        Ok(CheckedLayout {
            fixes: self.fixes,
            // Checked to be at most the limit, a usize.
            decompressed_bytes: usize::try_from(self.decompressed_bytes).unwrap_or(usize::MAX),
            decompressed_by_column,
        })
    }

    /// Check the next column (or child) of `data_type`; its length.
    fn column(&mut self, data_type: &DataType) -> Result<i64, Violation> {
        let (node, length, null_count) = self.node()?;
        // Readers read a validity bitmap only when the array has nulls, and offsets only when
        // it has rows.
        let validity = if null_count > 0 {
            bitmap(length)
        } else {
            UNREAD
        };
        let offsets = |width: i64| if length > 0 { (length + 1) * width } else { 0 };
        let no_bitmap = matches!(data_type, DataType::Union(..) | DataType::RunEndEncoded(..));
        if no_bitmap && null_count != 0 {
            return Err(Violation::NullsWithoutBitmap {
                node,
                data_type: data_type.clone(),
                null_count,
            });
        }
        match data_type {
            DataType::Null => {}
            DataType::Utf8 | DataType::Binary => {
                self.buffers(data_type, length, &[(validity, 1), (offsets(4), 4), (0, 1)])?
            }
            DataType::LargeUtf8 | DataType::LargeBinary => {
                self.buffers(data_type, length, &[(validity, 1), (offsets(8), 8), (0, 1)])?
            }
            DataType::Utf8View | DataType::BinaryView => {
                let count = self.variadic_counts.pop_front().ok_or(Violation::Count {
                    what: "variadic buffer counts",
                    found: 0,
                    expected: 1,
                })?;
                let count = usize::try_from(count).map_err(|_| Violation::Count {
                    what: "view data buffers",
                    found: 0,
                    expected: 0,
                })?;
                self.buffers(data_type, length, &[(validity, 1), (length * 16, 16)])?;
                for _ in 0..count {
                    self.buffer(data_type, length, (0, 1))?;
                }
            }
            DataType::List(child) | DataType::Map(child, _) => {
                self.buffers(data_type, length, &[(validity, 1), (offsets(4), 4)])?;
                self.column(child.data_type())?;
            }
            DataType::LargeList(child) => {
                self.buffers(data_type, length, &[(validity, 1), (offsets(8), 8)])?;
                self.column(child.data_type())?;
            }
            DataType::ListView(child) => {
                self.buffers(
                    data_type,
                    length,
                    &[(validity, 1), (length * 4, 4), (length * 4, 4)],
                )?;
                self.column(child.data_type())?;
            }
            DataType::LargeListView(child) => {
                self.buffers(
                    data_type,
                    length,
                    &[(validity, 1), (length * 8, 8), (length * 8, 8)],
                )?;
                self.column(child.data_type())?;
            }
            DataType::FixedSizeList(child, _) => {
                self.buffers(data_type, length, &[(validity, 1)])?;
                self.column(child.data_type())?;
            }
            DataType::Struct(fields) => {
                self.buffers(data_type, length, &[(validity, 1)])?;
                for field in fields {
                    let child = self.column(field.data_type())?;
                    if child != length {
                        return Err(Violation::ChildLength {
                            parent: length,
                            child,
                        });
                    }
                }
            }
            DataType::Union(fields, mode) => {
                if self.version < MetadataVersion::V5 {
                    self.buffer(data_type, length, (UNREAD, 1))?; // a validity bitmap, unused
                }
                self.buffer(data_type, length, (length, 1))?; // type ids, one byte each
                if *mode == UnionMode::Dense {
                    self.buffer(data_type, length, (length * 4, 4))?;
                }
                for (_, field) in fields.iter() {
                    self.column(field.data_type())?;
                }
            }
            DataType::RunEndEncoded(run_ends, values) => {
                if self.version < MetadataVersion::V5 {
                    self.fixes.v4_run_end_validity.push(self.next_buffer);
                    self.buffer(data_type, length, (UNREAD, 1))?; // a validity bitmap, unused
                }
                self.column(run_ends.data_type())?;
                self.column(values.data_type())?;
            }
            DataType::Dictionary(keys, _) => {
                let width = keys.primitive_width().unwrap_or(1) as i64;
                self.buffers(data_type, length, &[(validity, 1), (length * width, width)])?;
            }
            DataType::Boolean => {
                self.buffers(data_type, length, &[(validity, 1), (bitmap(length), 1)])?
            }
            DataType::FixedSizeBinary(width) => self.buffers(
                data_type,
                length,
                &[(validity, 1), (length * i64::from(*width), 1)],
            )?,
            other => {
                let width = other.primitive_width().unwrap_or(1) as i64;
                self.buffers(data_type, length, &[(validity, 1), (length * width, width)])?
            }
        }
        Ok(length)
    }

    fn node_count(&self) -> usize {
        self.nodes.map_or(0, |nodes| nodes.len())
    }

    fn buffer_count(&self) -> usize {
        self.buffers.map_or(0, |buffers| buffers.len())
    }

    /// The next node: its position, length and null count.
    fn node(&mut self) -> Result<(usize, i64, i64), Violation> {
        let index = self.next_node;
        if index >= self.node_count() {
            return Err(Violation::Count {
                what: "nodes",
                found: self.node_count(),
                expected: index + 1,
            });
        }
        let node = self.nodes.expect("a node count above zero").get(index);
        self.next_node += 1;
        let (length, null_count) = (node.length(), node.null_count());
        // Lengths beyond 2^53 are beyond any body, and keep the size arithmetic exact.
        if !(0..1 << 53).contains(&length) || !(0..=length).contains(&null_count) {
            return Err(Violation::BadNode {
                node: index,
                length,
                null_count,
            });
        }
        Ok((index, length, null_count))
    }

    /// Check the next buffers, each at least the bytes `needed` says (when uncompressed).
    fn buffers(
        &mut self,
        data_type: &DataType,
        rows: i64,
        needed: &[(i64, i64)],
    ) -> Result<(), Violation> {
        needed
            .iter()
            .try_for_each(|&needed| self.buffer(data_type, rows, needed))
    }

    /// Check the next buffer: within the body, 8-byte aligned, and (uncompressed or once
    /// decompressed) at least `needed` bytes of `unit`-byte values (`needed` is 0 where a
    /// buffer's size is not known from the header). A buffer may be longer than needed, by
    /// any number of bytes (Arrow C++ shares one zeroed buffer among the children of
    /// `pa.nulls(n, type)`); see [`LengthFix`] for what is declared instead.
    fn buffer(
        &mut self,
        data_type: &DataType,
        rows: i64,
        (needed, unit): (i64, i64),
    ) -> Result<(), Violation> {
        let index = self.next_buffer;
        if index >= self.buffer_count() {
            return Err(Violation::Count {
                what: "buffers",
                found: self.buffer_count(),
                expected: index + 1,
            });
        }
        let buffer = self.buffers.expect("a buffer count above zero").get(index);
        self.next_buffer += 1;
        let (offset, length) = (buffer.offset(), buffer.length());
        let end = offset.checked_add(length);
        let in_body = offset >= 0
            && length >= 0
            && offset % 8 == 0
            && end.is_some_and(|end| end <= self.body.len() as i64);
        if needed == UNREAD {
            // Arrow C++ never looks at it, whatever it declares; arrow-rs reads (and
            // decompresses) it before it looks at the null count, so it is declared empty.
            if offset != 0 || length != 0 {
                self.fixes.lengths.push(LengthFix {
                    buffer: index,
                    offset: 0,
                    length: 0,
                });
            }
            return Ok(());
        }
        if !in_body {
            return Err(Violation::BadBuffer {
                buffer: index,
                offset,
                length,
                body: self.body.len(),
            });
        }
        if rows == 0 && length != 0 {
            // An array of no rows reads none of its buffers.
            self.fixes.lengths.push(LengthFix {
                buffer: index,
                offset,
                length: 0,
            });
            return Ok(());
        }
        let length = if self.compressed {
            self.compressed_buffer(index, offset as usize, length as usize)?
        } else {
            if length % unit != 0 && length >= needed {
                self.fixes.lengths.push(LengthFix {
                    buffer: index,
                    offset,
                    length: length - length % unit,
                });
                return Ok(());
            }
            length
        };
        // A compressed buffer cannot be declared shorter, its length is inside it; arrow-rs
        // reads the ones Arrow C++ writes longer than needed (the decompressed buffer is its
        // own allocation), and a decoder panic on any other is caught as a refusal.
        if length < needed {
            return Err(Violation::ShortBuffer {
                buffer: index,
                length,
                data_type: data_type.clone(),
                rows,
                needed,
                unit,
            });
        }
        Ok(())
    }

    /// Check a compressed buffer's prefix: the uncompressed length it declares (-1: stored
    /// uncompressed) must be possible and keep the message under its decompression limit.
    /// Returns the buffer's length once decompressed.
    fn compressed_buffer(
        &mut self,
        index: usize,
        offset: usize,
        length: usize,
    ) -> Result<i64, Violation> {
        if length == 0 {
            return Ok(0);
        }
        let Some(prefix) = self.body.get(offset..offset + 8) else {
            return Err(Violation::CompressedSize {
                buffer: index,
                declared: -2,
                over_limit: false,
            });
        };
        let declared = i64::from_le_bytes(prefix.try_into().expect("eight bytes"));
        if declared < -1 {
            return Err(Violation::CompressedSize {
                buffer: index,
                declared,
                over_limit: false,
            });
        }
        self.decompressed_bytes = self.decompressed_bytes.saturating_add(declared.max(0));
        if self.decompressed_bytes > i64::try_from(self.max_decompressed_bytes).unwrap_or(i64::MAX)
        {
            return Err(Violation::CompressedSize {
                buffer: index,
                declared,
                over_limit: true,
            });
        }
        // arrow-ipc decompresses an LZ4 frame to its end before it compares the length with
        // the one declared: a frame that decompresses to more would take the memory first
        // ([`lz4`]).
        if self.lz4
            && self.bound_frames
            && declared >= 0
            && !lz4::frame_fits(&self.body[offset + 8..offset + length], declared as u64)
        {
            return Err(Violation::CompressedOverrun {
                buffer: index,
                declared,
            });
        }
        // -1: the rest of the buffer is stored as it is.
        Ok(if declared == -1 {
            length as i64 - 8
        } else {
            declared
        })
    }
}

/// Where the buffer vector of the batch in an IPC `header` is: the position of its first
/// entry, and its length. `header` holds a verified record batch or dictionary batch.
fn buffer_vector(header: &[u8]) -> Option<(usize, usize)> {
    let message = ipc::root_as_message(header).ok()?;
    let batch = match message.header_type() {
        ipc::MessageHeader::RecordBatch => message.header_as_record_batch(),
        ipc::MessageHeader::DictionaryBatch => message.header_as_dictionary_batch()?.data(),
        _ => None,
    }?;
    let buffers = batch.buffers()?;
    let start = buffers.bytes().as_ptr() as usize - header.as_ptr() as usize;
    Some((start, buffers.len()))
}

/// Whether `patched`, a copy of the verified IPC header `original` whose buffer list was
/// changed, still says all else `original` says. A hostile header may lay its buffer list over
/// other fields (flatbuffers' verifiers allow objects to overlap); a change to the buffers
/// would then change those fields too, after they were checked.
pub fn same_but_buffers(original: &[u8], patched: &[u8]) -> bool {
    let (Ok(a), Ok(b)) = (
        ipc::root_as_message(original),
        ipc::root_as_message(patched),
    ) else {
        return false;
    };
    fn metadata<'a>(m: ipc::Message<'a>) -> Option<Vec<(Option<&'a str>, Option<&'a str>)>> {
        m.custom_metadata()
            .map(|entries| entries.iter().map(|e| (e.key(), e.value())).collect())
    }
    type Dictionary = Option<(i64, bool)>;
    fn batch<'a>(m: ipc::Message<'a>) -> Option<(Dictionary, ipc::RecordBatch<'a>)> {
        match m.header_type() {
            ipc::MessageHeader::RecordBatch => m.header_as_record_batch().map(|b| (None, b)),
            ipc::MessageHeader::DictionaryBatch => m
                .header_as_dictionary_batch()
                .and_then(|d| d.data().map(|b| (Some((d.id(), d.isDelta())), b))),
            _ => None,
        }
    }
    let (Some((dictionary_a, a_batch)), Some((dictionary_b, b_batch))) = (batch(a), batch(b))
    else {
        return false;
    };
    let compression = |b: ipc::RecordBatch<'_>| b.compression().map(|c| (c.codec(), c.method()));
    let counts = |b: ipc::RecordBatch<'_>| {
        b.variadicBufferCounts()
            .map(|v| v.iter().collect::<Vec<_>>())
    };
    a.version() == b.version()
        && a.bodyLength() == b.bodyLength()
        && a.header_type() == b.header_type()
        && metadata(a) == metadata(b)
        && dictionary_a == dictionary_b
        && a_batch.length() == b_batch.length()
        && a_batch.nodes().map(|n| n.bytes()) == b_batch.nodes().map(|n| n.bytes())
        && compression(a_batch) == compression(b_batch)
        && counts(a_batch) == counts(b_batch)
}

/// A copy of the IPC `header` whose batch declares the buffer lengths of `fixes` instead.
/// A Buffer is a 16-byte struct, offset then length, little-endian, inline in its vector.
pub fn with_lengths(header: &[u8], fixes: &[LengthFix]) -> Vec<u8> {
    let mut patched = header.to_vec();
    if let Some((start, _)) = buffer_vector(header) {
        for fix in fixes {
            let at = start + fix.buffer * 16;
            patched[at..at + 8].copy_from_slice(&fix.offset.to_le_bytes());
            patched[at + 8..at + 16].copy_from_slice(&fix.length.to_le_bytes());
        }
    }
    patched
}

/// A copy of the IPC `header` whose batch lists its buffers without those at `dropped`
/// (ascending): the later ones move down, the vector's count shrinks, and the bytes freed at
/// its end are left unused, so every other offset of the flatbuffer still holds.
pub fn without_buffers(header: &[u8], dropped: &[usize]) -> Vec<u8> {
    let mut patched = header.to_vec();
    let Some((start, count)) = buffer_vector(header) else {
        return patched;
    };
    let kept: Vec<[u8; 16]> = (0..count)
        .filter(|i| !dropped.contains(i))
        .map(|i| {
            header[start + i * 16..start + i * 16 + 16]
                .try_into()
                .expect("16 bytes")
        })
        .collect();
    for (i, entry) in kept.iter().enumerate() {
        patched[start + i * 16..start + i * 16 + 16].copy_from_slice(entry);
    }
    patched[start - 4..start].copy_from_slice(&(kept.len() as u32).to_le_bytes());
    patched
}

/// The bytes "needed" of a validity bitmap no reader reads: that of an array without nulls
/// (Arrow C++ skips it whatever it declares), and of a union or run-end encoded array in V4.
const UNREAD: i64 = -1;

/// Bytes of a validity bitmap of `rows` rows.
fn bitmap(rows: i64) -> i64 {
    (rows + 7) / 8
}

/// Whether arrays of `data_type` (or of the types nested in it) need [`check_values`].
pub fn needs_value_checks(data_type: &DataType) -> bool {
    match data_type {
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..)
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Union(_, UnionMode::Dense) => true,
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _)
        | DataType::Map(f, _) => needs_value_checks(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| needs_value_checks(f.data_type())),
        DataType::Union(fields, _) => fields
            .iter()
            .any(|(_, f)| needs_value_checks(f.data_type())),
        DataType::RunEndEncoded(_, values) => needs_value_checks(values.data_type()),
        DataType::Dictionary(_, values) => needs_value_checks(values),
        _ => false,
    }
}

/// Check the values of a decoded array that need a value-level check, at any depth (in lists,
/// structs, unions, dictionaries, runs): see the module documentation.
///
/// # Errors
/// The first violation found.
pub fn check_values(data: &ArrayData) -> Result<(), Violation> {
    use arrow::datatypes::{
        MAX_DECIMAL32_FOR_EACH_PRECISION, MAX_DECIMAL64_FOR_EACH_PRECISION,
        MAX_DECIMAL128_FOR_EACH_PRECISION, MAX_DECIMAL256_FOR_EACH_PRECISION, i256,
    };
    const FITS: &str = "within the column's precision";
    const TIME: &str = "a time of day, from 0 up to one day";
    // Precisions were checked against their widths with the schema, so the tables cover them.
    match *data.data_type() {
        DataType::Decimal32(p, _) => {
            let max = MAX_DECIMAL32_FOR_EACH_PRECISION[usize::from(p)];
            in_range::<i32, _>(data, FITS, |v| (-max..=max).contains(&v), |v| v.into())?;
        }
        DataType::Decimal64(p, _) => {
            let max = MAX_DECIMAL64_FOR_EACH_PRECISION[usize::from(p)];
            in_range::<i64, _>(data, FITS, |v| (-max..=max).contains(&v), |v| v)?;
        }
        DataType::Decimal128(p, _) => {
            let max = MAX_DECIMAL128_FOR_EACH_PRECISION[usize::from(p)];
            in_range::<i128, _>(
                data,
                FITS,
                |v| (-max..=max).contains(&v),
                |v| v.clamp(i64::MIN.into(), i64::MAX.into()) as i64,
            )?;
        }
        DataType::Decimal256(p, _) => {
            let max = MAX_DECIMAL256_FOR_EACH_PRECISION[usize::from(p)];
            let min = i256::ZERO.wrapping_sub(max);
            in_range::<i256, _>(
                data,
                FITS,
                |v| v >= min && v <= max,
                |v| {
                    v.to_i128().map_or(i64::MAX, |v| {
                        v.clamp(i64::MIN.into(), i64::MAX.into()) as i64
                    })
                },
            )?;
        }
        DataType::Date64 => in_range::<i64, _>(
            data,
            "a whole number of days in milliseconds",
            |v| v % 86_400_000 == 0,
            |v| v,
        )?,
        DataType::Time32(unit) => {
            let day = day_in(unit);
            in_range::<i32, _>(
                data,
                TIME,
                |v| (0..day).contains(&i64::from(v)),
                |v| v.into(),
            )?
        }
        DataType::Time64(unit) => {
            let day = day_in(unit);
            in_range::<i64, _>(data, TIME, |v| (0..day).contains(&v), |v| v)?
        }
        DataType::Union(_, UnionMode::Dense) => dense_offsets_go_forward(data)?,
        _ => {}
    }
    data.child_data().iter().try_for_each(check_values)
}

/// One day in `unit`.
fn day_in(unit: arrow::datatypes::TimeUnit) -> i64 {
    use arrow::datatypes::TimeUnit;
    let seconds = 86_400;
    match unit {
        TimeUnit::Second => seconds,
        TimeUnit::Millisecond => seconds * 1_000,
        TimeUnit::Microsecond => seconds * 1_000_000,
        TimeUnit::Nanosecond => seconds * 1_000_000_000,
    }
}

/// Check that every valid value of a primitive array passes `allowed`; `shown` gives the value
/// an error quotes. Without nulls the values are checked in one tight pass.
fn in_range<T: arrow::datatypes::ArrowNativeType, A: Fn(T) -> bool>(
    data: &ArrayData,
    rule: &'static str,
    allowed: A,
    shown: impl Fn(T) -> i64,
) -> Result<(), Violation> {
    let values = &data.buffer::<T>(0)[..data.len()];
    let bad = match data.nulls() {
        None => values.iter().position(|&v| !allowed(v)),
        Some(nulls) => (0..values.len()).find(|&row| nulls.is_valid(row) && !allowed(values[row])),
    };
    match bad {
        None => Ok(()),
        Some(row) => Err(Violation::ValueOutOfRange {
            data_type: data.data_type().clone(),
            value: shown(values[row]),
            row,
            rule,
        }),
    }
}

/// Check that a dense union's offsets into each child never go back, as Arrow C++ requires.
fn dense_offsets_go_forward(data: &ArrayData) -> Result<(), Violation> {
    let type_ids = data.buffer::<i8>(0);
    let offsets = data.buffer::<i32>(1);
    let mut last = [0i32; 128];
    for (row, (&type_id, &offset)) in type_ids.iter().zip(offsets).take(data.len()).enumerate() {
        // The decoder checked that type ids name children, so they are in 0..=127.
        let previous = &mut last[type_id.clamp(0, 127) as usize];
        if offset < *previous {
            return Err(Violation::UnionOffsetBack {
                row,
                offset,
                previous: *previous,
            });
        }
        *previous = offset;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Decimal128Array, Int32Array, ListArray};
    use arrow::buffer::OffsetBuffer;

    use super::*;

    #[test]
    fn decimals_must_fit_their_precision_at_any_depth() {
        let fits = Decimal128Array::from(vec![Some(99_999), None])
            .with_precision_and_scale(5, 2)
            .unwrap();
        assert!(check_values(&fits.to_data()).is_ok());

        let overflows = Decimal128Array::from(vec![Some(100_000), None])
            .with_precision_and_scale(5, 2)
            .unwrap();
        assert!(matches!(
            check_values(&overflows.to_data()),
            Err(Violation::ValueOutOfRange {
                value: 100_000,
                row: 0,
                ..
            })
        ));

        let field = Arc::new(Field::new("item", overflows.data_type().clone(), true));
        let list = ListArray::new(
            field,
            OffsetBuffer::from_lengths([2]),
            Arc::new(overflows),
            None,
        );
        assert!(check_values(&list.to_data()).is_err(), "inside a list");

        // A null slot may hold anything.
        let null_overflow =
            Decimal128Array::new(vec![100_000i128].into(), Some(vec![false].into()))
                .with_precision_and_scale(5, 2)
                .unwrap();
        assert!(check_values(&null_overflow.to_data()).is_ok());
        assert!(check_values(&Int32Array::from(vec![i32::MAX]).to_data()).is_ok());
    }

    #[test]
    fn decimals_of_every_width_are_checked_to_their_last_digit() {
        use arrow::array::{Decimal32Array, Decimal64Array, Decimal256Array};
        use arrow::datatypes::i256;
        let fits = Decimal32Array::from(vec![999_999_999]).with_precision_and_scale(9, 0);
        assert!(check_values(&fits.unwrap().to_data()).is_ok());
        let over = Decimal32Array::from(vec![-1_000]).with_precision_and_scale(3, 0);
        assert!(check_values(&over.unwrap().to_data()).is_err());
        let over = Decimal64Array::from(vec![10_i64.pow(18)]).with_precision_and_scale(18, 0);
        assert!(check_values(&over.unwrap().to_data()).is_err());
        let max = i256::from_i128(10_i128.pow(38)) * i256::from_i128(10_i128.pow(38))
            - i256::from_i128(1);
        let fits =
            Decimal256Array::from(vec![max, i256::ZERO - max]).with_precision_and_scale(76, 0);
        assert!(check_values(&fits.unwrap().to_data()).is_ok());
        let over =
            Decimal256Array::from(vec![max + i256::from_i128(1)]).with_precision_and_scale(76, 0);
        assert!(check_values(&over.unwrap().to_data()).is_err());
    }

    #[test]
    fn times_of_day_and_dates_in_milliseconds_must_be_in_range() {
        use arrow::array::{Date64Array, Time32SecondArray, Time64NanosecondArray};
        let day_ns = 86_400_000_000_000;
        let fits = Time64NanosecondArray::from(vec![0, day_ns - 1]);
        assert!(check_values(&fits.to_data()).is_ok());
        assert!(check_values(&Time64NanosecondArray::from(vec![day_ns]).to_data()).is_err());
        assert!(check_values(&Time32SecondArray::from(vec![-1]).to_data()).is_err());
        let with_null = Time32SecondArray::from(vec![None, Some(86_399)]);
        assert!(check_values(&with_null.to_data()).is_ok());
        assert!(check_values(&Date64Array::from(vec![86_400_000 * 3]).to_data()).is_ok());
        assert!(matches!(
            check_values(&Date64Array::from(vec![0, 1]).to_data()),
            Err(Violation::ValueOutOfRange {
                row: 1,
                value: 1,
                ..
            })
        ));
    }

    #[test]
    fn dense_union_offsets_must_not_go_back() {
        use arrow::array::{ArrayRef, UnionArray};
        use arrow::datatypes::UnionFields;
        let fields = UnionFields::try_new(
            [0, 1],
            [
                Field::new("a", DataType::Int32, true),
                Field::new("b", DataType::Int32, true),
            ],
        )
        .unwrap();
        let union = |offsets: Vec<i32>| {
            let children: Vec<ArrayRef> = vec![
                Arc::new(Int32Array::from(vec![1, 2])),
                Arc::new(Int32Array::from(vec![3])),
            ];
            let type_ids = vec![0i8, 1, 0].into();
            UnionArray::try_new(fields.clone(), type_ids, Some(offsets.into()), children).unwrap()
        };
        assert!(check_values(&union(vec![0, 0, 1]).to_data()).is_ok());
        assert!(matches!(
            check_values(&union(vec![1, 0, 0]).to_data()),
            Err(Violation::UnionOffsetBack { row: 2, .. })
        ));
        assert!(needs_value_checks(union(vec![0, 0, 1]).data_type()));
        assert!(!needs_value_checks(&DataType::Int64));
    }

    #[test]
    fn decimal_precisions_must_fit_their_width() {
        for (data_type, ok) in [
            (DataType::Decimal128(38, 2), true),
            (DataType::Decimal128(0, 0), false),
            (DataType::Decimal128(39, 0), false),
            (DataType::Decimal32(10, 0), false),
            (DataType::Decimal256(76, 0), true),
            (DataType::FixedSizeBinary(-3), false),
            (DataType::FixedSizeBinary(0), true),
        ] {
            assert_eq!(check_type("d", &data_type).is_ok(), ok, "{data_type}");
            // Nested types are checked as check_field walks the nested fields.
            let list = Field::new("l", DataType::new_list(data_type.clone(), true), true);
            assert_eq!(check_field(&list).is_ok(), ok, "list of {data_type}");
            let deeper = Field::new(
                "s",
                DataType::Struct(vec![Field::new("l", list.data_type().clone(), true)].into()),
                true,
            );
            assert_eq!(
                check_field(&deeper).is_ok(),
                ok,
                "struct of a list of {data_type}"
            );
            let dictionary =
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(data_type.clone()));
            assert_eq!(
                check_type("d", &dictionary).is_ok(),
                ok,
                "dictionary of {data_type}"
            );
        }
    }
}
