//! A cached table as a DataFusion table: [`CachedTableProvider`] plans a [`TableScanExec`],
//! which streams the table's stored batches decoded in place ([`MessageDecoder`]).
//!
//! The provider holds the table it was planned over (an `Arc<CachedTable>`): a key replaced or
//! dropped while a query reads it stays readable to that query, and its memory stays charged to
//! the budget until the query lets it go. Projection and `LIMIT` are pushed into the scan
//! (only the projected columns are decoded; the scan stops once it has the rows); filters are
//! left to DataFusion, which evaluates them on the batches as they stream. A batch stored
//! compressed has its projected columns decompressed as it is scanned, into memory charged to
//! the budget first as a read's is: a batch that does not fit fails the query, never the
//! budget.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, MutableArrayData, RecordBatch, RecordBatchOptions,
    make_array,
};
use arrow::datatypes::{BinaryViewType, ByteViewType, DataType, SchemaRef, StringViewType};
use arrow::error::ArrowError;
use arrow_select::dictionary::garbage_collect_any_dictionary;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

use crate::error::HumanBytes;
use crate::protocol::key::TableKey;
use crate::store::budget::{Charge, MemoryBudget, UploadAccount};
use crate::store::decode::{DictionaryMemory, MessageDecoder};
use crate::store::table::{CachedTable, StoredMessage};

/// Rows of a scanned batch handed on at once: about [`SLICE_BYTES`] of it, at least 1024 rows.
fn rows_per_slice(batch: &RecordBatch) -> usize {
    let bytes = data_bytes(batch).max(1);
    let rows = batch.num_rows();
    (SLICE_BYTES.saturating_mul(rows) / bytes).max(1024)
}

/// The bytes of `batch`'s values. Not `get_array_memory_size`, which counts each buffer at the
/// size of the allocation behind it: for a batch decoded in place, the whole message body,
/// once for every buffer.
fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|column| {
            let size = |data: ArrayData| {
                data.get_slice_memory_size()
                    .unwrap_or_else(|_| data.get_array_memory_size())
            };
            match column.data_type() {
                // A view column's slice size counts its views, not the strings they point to.
                DataType::Utf8View => size(column.to_data())
                    .saturating_add(column.as_string_view().total_buffer_bytes_used()),
                DataType::BinaryView => size(column.to_data())
                    .saturating_add(column.as_binary_view().total_buffer_bytes_used()),
                // A dictionary column's slice size counts its whole dictionary; at most one
                // value a row is used.
                DataType::Dictionary(..) => {
                    let dictionary = column.as_any_dictionary();
                    let values = dictionary.values();
                    let used = column.len().min(values.len()) as f64 / values.len().max(1) as f64;
                    size(dictionary.keys().to_data())
                        .saturating_add((size(values.to_data()) as f64 * used) as usize)
                }
                _ => size(column.to_data()),
            }
        })
        .fold(0, usize::saturating_add)
}

/// Whether `column` is a dictionary column with more values than rows, of more than
/// [`SMALL_DICTIONARY_BYTES`]: batches that share a large dictionary (pyarrow writes one for
/// a whole table) are each handed on with only the values they use, since DataFusion counts
/// a batch's whole dictionary for each batch an operator holds.
fn oversized_dictionary(column: &ArrayRef) -> bool {
    matches!(column.data_type(), DataType::Dictionary(..)) && {
        let values = column.as_any_dictionary().values();
        values.len() > column.len() && values.get_array_memory_size() > SMALL_DICTIONARY_BYTES
    }
}

/// A dictionary of at most this many bytes is handed on whole with every batch.
const SMALL_DICTIONARY_BYTES: usize = 64 << 10;

/// A copy of `column` (a slice of `rows` rows) in buffers of its own size. A view column's
/// copy keeps only the strings its views point to, and an oversized dictionary column's only
/// the values its keys use (a plain copy would keep whole data buffers and dictionaries: for
/// a column decoded in place, views of the whole message body). A small dictionary is kept
/// as it is, shared by every copy (one dictionary for the answer to send).
fn copy_of(column: &ArrayRef, rows: usize) -> std::result::Result<ArrayRef, ArrowError> {
    let plain_copy = |column: &ArrayRef| {
        let data = column.to_data();
        let mut copy = MutableArrayData::new(vec![&data], false, rows);
        copy.try_extend(0, 0, rows)?;
        Ok::<_, ArrowError>(make_array(copy.freeze()))
    };
    Ok(match column.data_type() {
        DataType::Utf8View => compacted_views::<StringViewType>(column, plain_copy)?,
        DataType::BinaryView => compacted_views::<BinaryViewType>(column, plain_copy)?,
        DataType::Dictionary(keys, _) => {
            let values = column.as_any_dictionary().values().len();
            // arrow-rs copies a dictionary column only if its keys can index every value.
            if !oversized_dictionary(column) && indexes(keys, values) {
                return plain_copy(column);
            }
            let used = garbage_collect_any_dictionary(column.as_any_dictionary())?;
            match used.as_any_dictionary().values().len() < values {
                true => used,                // new keys and values
                false => plain_copy(&used)?, // every value used: all indexed by keys
            }
        }
        _ => plain_copy(column)?,
    })
}

/// A view column's copy holding only the strings its views point to. `gc` makes new views and
/// data buffers, but keeps the nulls it is given, and the views when no string is long: such
/// a column is copied first.
fn compacted_views<T: ByteViewType>(
    column: &ArrayRef,
    plain_copy: impl Fn(&ArrayRef) -> std::result::Result<ArrayRef, ArrowError>,
) -> std::result::Result<ArrayRef, ArrowError> {
    let views = column.as_byte_view::<T>();
    if views.nulls().is_none() && views.total_buffer_bytes_used() > 0 {
        return Ok(Arc::new(views.gc()));
    }
    Ok(Arc::new(plain_copy(column)?.as_byte_view::<T>().gc()))
}

/// Whether keys of type `keys` can index `values` values, as arrow-rs counts when it copies a
/// dictionary column (up to the key type's largest value).
fn indexes(keys: &DataType, values: usize) -> bool {
    let most = match keys {
        DataType::Int8 => i8::MAX as u64,
        DataType::Int16 => i16::MAX as u64,
        DataType::Int32 => i32::MAX as u64,
        DataType::UInt8 => u8::MAX as u64,
        DataType::UInt16 => u16::MAX as u64,
        DataType::UInt32 => u32::MAX as u64,
        _ => u64::MAX,
    };
    values as u64 <= most
}

/// How much of a stored batch the scan hands on at once.
const SLICE_BYTES: usize = 4 << 20;

/// A decoded batch handed on a slice at a time.
///
/// A batch of more than one slice is handed on as copies of its slices, made one at a time,
/// each its own size. Views would be sized by DataFusion at the whole buffers they view: the
/// whole message body for a batch decoded in place (a giant batch with nested, view or
/// dictionary columns is stored as it came), the whole decompressed batch for a compressed
/// one, and the whole dictionary for a dictionary column. So an operator that holds slices (a
/// repartition does) would reserve the whole batch for each, and refuse a query the budget has
/// room for: `SELECT sum(k)` over one 76 MiB batch with a list column, under a budget with
/// 180 MiB free. A decompressed batch goes once its last slice is made. A batch of one slice is
/// handed on as it is, but for its dictionary columns whose dictionary is larger than the
/// batch ([`oversized_dictionary`]), copied with only the values it uses.
struct Slicing {
    batch: RecordBatch,
    /// The first row not yet handed on.
    offset: usize,
    /// Rows handed on at once.
    step: usize,
    /// Whether slices are copied.
    copy: bool,
}

impl Slicing {
    fn new(batch: RecordBatch) -> Self {
        let step = rows_per_slice(&batch);
        Self {
            copy: step < batch.num_rows(),
            batch,
            offset: 0,
            step,
        }
    }

    /// The next slice, of at most `most` rows.
    ///
    /// # Errors
    /// What arrow reports copying it (a bug: the batch was decoded sound).
    fn next_piece(&mut self, most: usize) -> Result<RecordBatch> {
        let rows = self.step.min(self.batch.num_rows() - self.offset).min(most);
        let piece = self.batch.slice(self.offset, rows);
        self.offset += rows;
        let copied = |column: &ArrayRef| self.copy || oversized_dictionary(column);
        if !piece.columns().iter().any(copied) {
            return Ok(piece);
        }
        let columns = piece
            .columns()
            .iter()
            .map(|column| match copied(column) {
                true => copy_of(column, rows),
                false => Ok(Arc::clone(column)),
            })
            .collect::<std::result::Result<_, ArrowError>>();
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        columns
            .and_then(|columns| {
                RecordBatch::try_new_with_options(piece.schema(), columns, &options)
            })
            .map_err(|err| DataFusionError::ArrowError(Box::new(err), None))
    }
}

/// The memory a scan's decoding holds, charged to the budget: what the dictionaries in force
/// and the projected columns of the batch being handed out took to decompress (nothing for
/// uncompressed messages, decoded in place). Charged as a read's copy is
/// ([`UploadAccount::reading`]): it may evict or trim other tables, never the one scanned.
struct DecodedMemory {
    key: TableKey,
    charge: Charge,
    dictionaries: DictionaryMemory,
}

impl DecodedMemory {
    /// The memory a scan of `projection` of `table` (`None`: every column) holds.
    fn new(
        key: TableKey,
        budget: &Arc<MemoryBudget>,
        table: &CachedTable,
        projection: Option<Vec<usize>>,
    ) -> Self {
        let account = UploadAccount::reading(budget, key.clone(), table.memory_bytes());
        Self {
            key,
            charge: budget.empty_charge(Some(&account)),
            dictionaries: DictionaryMemory::projected(Arc::clone(table.schema()), projection),
        }
    }

    /// Charge what decoding `message` will hold with the dictionaries in force, in place of
    /// what the batch handed out before it held.
    ///
    /// # Errors
    /// DataFusion's `ResourcesExhausted` when the budget has no room.
    fn reserve_for(&mut self, message: &StoredMessage) -> Result<()> {
        let wanted = self.dictionaries.decoding(message);
        self.charge.resize(wanted).map_err(|refusal| {
            DataFusionError::ResourcesExhausted(format!(
                "decompressing a stored batch of {} takes {} more; {} of the budget's {} is in \
                 use",
                self.key.quoted(),
                HumanBytes(refusal.needed as u64),
                HumanBytes(refusal.used as u64),
                HumanBytes(refusal.limit as u64),
            ))
        })
    }
}

/// One cached table, as the version of it that was current when the query was planned.
#[derive(Debug)]
pub(crate) struct CachedTableProvider {
    key: TableKey,
    table: Arc<CachedTable>,
    /// The budget a scan charges what it decompresses to.
    budget: Arc<MemoryBudget>,
}

impl CachedTableProvider {
    /// The table `table` under `key` as DataFusion sees it; its scans charge `budget`.
    pub fn new(key: TableKey, table: Arc<CachedTable>, budget: Arc<MemoryBudget>) -> Self {
        Self { key, table, budget }
    }
}

#[async_trait]
impl TableProvider for CachedTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(self.table.schema())
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TableScanExec::new(
            self.key.clone(),
            Arc::clone(&self.table),
            Arc::clone(&self.budget),
            projection.cloned(),
            limit,
        )?))
    }
}

/// The scan of one cached table: its record batches in stored order, in one partition.
///
/// One partition keeps a plain `SELECT *` streaming the rows in the order they were put, as a
/// get does; DataFusion spreads the batches over the cores itself where an operator gains
/// from it (aggregates, joins).
#[derive(Debug)]
pub(crate) struct TableScanExec {
    key: TableKey,
    table: Arc<CachedTable>,
    budget: Arc<MemoryBudget>,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
}

impl TableScanExec {
    fn new(
        key: TableKey,
        table: Arc<CachedTable>,
        budget: Arc<MemoryBudget>,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Self> {
        let schema = match &projection {
            Some(columns) => Arc::new(table.schema().project(columns)?),
            None => Arc::clone(table.schema()),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            key,
            table,
            budget,
            projection,
            limit,
            properties: Arc::new(properties),
        })
    }
}

impl DisplayAs for TableScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TableScanExec: rows={}, batches={}",
            self.table.rows(),
            self.table.batches()
        )?;
        if let Some(projection) = &self.projection {
            write!(f, ", projection={projection:?}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TableScanExec {
    fn name(&self) -> &str {
        "TableScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "a table scan has no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "a table scan has one partition, not {partition}"
            )));
        }
        let table = Arc::clone(&self.table);
        let mut decoder = MessageDecoder::new(Arc::clone(table.schema()), self.projection.clone())
            .map_err(|err| DataFusionError::ArrowError(Box::new(err), None))?;
        let mut left = self.limit.unwrap_or(usize::MAX);
        // Every kept segment's messages in order (a reference count each, not a copy).
        let mut messages = table.messages();
        // The rest of a large stored batch, handed out in slices, so that each step of the
        // query and of the answer's encoding works on a bounded piece.
        let mut pending: Option<Slicing> = None;
        // What decoding allocates, charged before it is decoded.
        let mut decoded = DecodedMemory::new(
            self.key.clone(),
            &self.budget,
            &table,
            self.projection.clone(),
        );
        let batches = std::iter::from_fn(move || {
            while left > 0 {
                if let Some(mut slicing) = pending.take() {
                    let piece = slicing.next_piece(left);
                    left -= piece.as_ref().map_or(left, RecordBatch::num_rows);
                    if slicing.offset < slicing.batch.num_rows() {
                        pending = Some(slicing);
                    }
                    return Some(piece);
                }
                let message = messages.next()?;
                if let Err(err) = decoded.reserve_for(&message) {
                    left = 0;
                    return Some(Err(err));
                }
                match decoder.decode(&message) {
                    Ok(Some(batch)) if batch.num_rows() == 0 => {}
                    Ok(Some(batch)) => pending = Some(Slicing::new(batch)),
                    Ok(None) => {}
                    Err(err) => {
                        left = 0;
                        return Some(Err(DataFusionError::ArrowError(Box::new(err), None)));
                    }
                }
            }
            None
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            futures::stream::iter(batches),
        )))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Int8Array, StringArray, StringViewArray};
    use arrow::buffer::Buffer;

    use super::*;

    /// `array` with its buffers inside one allocation of `extra` more bytes, as a column
    /// decoded in place views the whole message body.
    fn inside_a_larger_allocation(array: &ArrayRef, extra: usize) -> ArrayRef {
        fn moved(data: &ArrayData, extra: usize) -> ArrayData {
            let buffers = data
                .buffers()
                .iter()
                .map(|buffer| {
                    let mut body = vec![0u8; buffer.len() + extra];
                    body[..buffer.len()].copy_from_slice(buffer.as_slice());
                    Buffer::from_vec(body).slice_with_length(0, buffer.len())
                })
                .collect();
            let children = data
                .child_data()
                .iter()
                .map(|child| moved(child, extra))
                .collect();
            data.clone()
                .into_builder()
                .buffers(buffers)
                .child_data(children)
                .build()
                .unwrap()
        }
        make_array(moved(&array.to_data(), extra))
    }

    #[test]
    fn copies_of_view_and_dictionary_slices_hold_their_own_size_and_the_same_values() {
        let big = 1 << 20;
        let short = Arc::new(StringViewArray::from_iter(
            (0..1000).map(|i| (i % 3 != 0).then(|| format!("{i}"))),
        )) as ArrayRef;
        let long = Arc::new(StringViewArray::from_iter_values(
            (0..1000).map(|i| format!("{i:060}")),
        )) as ArrayRef;
        // More values than Int8 keys can index (the last 100 unused), as Arrow C++ allows.
        let values = StringArray::from_iter_values((0..228).map(|i| format!("{i:0>500}")));
        let keys = Int8Array::from_iter((0..1000).map(|i| (i % 7 != 0).then_some((i % 128) as i8)));
        let dictionary =
            Arc::new(DictionaryArray::try_new(keys, Arc::new(values)).unwrap()) as ArrayRef;
        for column in [short, long, dictionary] {
            let column = inside_a_larger_allocation(&column, big);
            let slice = column.slice(100, 300);
            assert!(
                slice.get_array_memory_size() > big,
                "{}",
                column.data_type()
            );
            let copy = copy_of(&slice, 300).unwrap();
            assert_eq!(copy.data_type(), column.data_type());
            assert_eq!(copy.to_data(), slice.to_data(), "{}", column.data_type());
            assert!(
                copy.get_array_memory_size() < big / 4,
                "{}: {} bytes",
                column.data_type(),
                copy.get_array_memory_size()
            );
        }
    }
}
