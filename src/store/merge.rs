//! Merging a key's tiny appends into one segment, in the background.
//!
//! Every append is a segment of its own, with its IPC header, its list of messages and its
//! allocations; a reader gets one message for each. For appends of a few rows that overhead
//! is the table: 5,000 appends of 10 rows took 3.8 MiB of table memory and 16 MiB of the
//! server's memory for 0.8 MiB of data, and a get of them 52 ms against 1.5 ms for the same
//! rows in one batch (benches/RESULTS.md). So once a key's newest [`MERGE_AFTER`] segments
//! are all small, they are merged into one segment of one record batch, off the append's
//! path: offsets do not change (a reader or follower in the middle of them gets the rest of
//! the merged batch), nor does what any reader receives but the batch boundaries.
//!
//! Not merged: segments mapped from their files (they cost no table memory), segments with a
//! message carrying `app_metadata` (each batch's is kept, as uploaded), compressed batches
//! (their size decompressed is not what they are charged), keys whose schema has dictionaries
//! (a batch's dictionaries may come from earlier appends), keys capped by age (a merged
//! segment ages as its newest append), and runs of more than a quarter of a key's row or byte
//! cap (retention trims whole segments). A merge is charged to the budget without evicting
//! anything: it is skipped rather than take another key's memory.

use std::sync::Arc;

use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::ipc::{self, MessageHeader};

use crate::error::Result;
use crate::protocol::encode::{FlightEncoder, TARGET_MESSAGE_BYTES};
use crate::protocol::key::TableKey;
use crate::store::budget::UploadAccount;
use crate::store::decode::MessageDecoder;
use crate::store::slabs::{SlabPool, SlabWriter};
use crate::store::table::{CachedTable, PlacedSegment, Segment, StoredMessage, TableCounts};
use crate::store::upload::TableUpload;

/// A segment of at most this many bytes of Arrow data is small: merged with its neighbours.
pub const SMALL_SEGMENT_BYTES: u64 = 64 << 10;
/// How many small segments in a row, the newest included, are merged.
pub const MERGE_AFTER: usize = 64;

/// Whether `table` may have its small segments merged: its schema has no dictionary.
fn mergeable_schema(schema: &SchemaRef) -> bool {
    !schema
        .flattened_fields()
        .iter()
        .any(|field| matches!(field.data_type(), DataType::Dictionary(..)))
}

/// Whether an upload's `messages` (of `counts`) may be merged with their neighbours: rows
/// in at most [`SMALL_SEGMENT_BYTES`], a schema and uncompressed record batches without
/// `app_metadata`.
pub fn mergeable_messages(messages: &[StoredMessage], counts: TableCounts) -> bool {
    counts.rows > 0
        && counts.bytes <= SMALL_SEGMENT_BYTES
        && messages.iter().all(|message| {
            let Ok(header) = ipc::root_as_message(&message.header) else {
                return false;
            };
            message.app_metadata.is_empty()
                && match header.header_type() {
                    MessageHeader::Schema => true,
                    MessageHeader::RecordBatch => header
                        .header_as_record_batch()
                        .is_some_and(|batch| batch.compression().is_none()),
                    _ => false,
                }
        })
}

/// How far back from the newest segment a run to merge is looked for: appends that arrive
/// faster than merges keep up with are merged in order as far back as this.
const LOOK_BACK: usize = 4 * MERGE_AFTER;

/// The ids of the oldest [`MERGE_AFTER`] segments of the run of mergeable segments that ends
/// with `table`'s newest, if it is that long. (A merged segment still small is merged again
/// with the next ones: a row is copied a few times at most before its segment outgrows
/// [`SMALL_SEGMENT_BYTES`].)
///
/// Retention trims whole segments, so a key capped by rows or bytes merges only runs of at
/// most a quarter of its cap: what it keeps beyond the cap stays under that quarter.
pub fn run_to_merge(table: &CachedTable) -> Option<Vec<u64>> {
    let segments = table.segments();
    let run_length = segments
        .iter()
        .rev()
        .take(LOOK_BACK)
        .take_while(|placed| placed.segment.mergeable())
        .count();
    if run_length < MERGE_AFTER {
        return None;
    }
    let start = segments.len() - run_length;
    let run: Vec<&PlacedSegment> = (start..start + MERGE_AFTER)
        .map(|index| &*segments[index])
        .collect();
    if let Some(retention) = table.retention() {
        let rows: u64 = run.iter().map(|placed| placed.segment.rows()).sum();
        let bytes: u64 = run.iter().map(|placed| placed.segment.bytes()).sum();
        let over = |total: u64, cap: Option<u64>| cap.is_some_and(|cap| total > cap / 4);
        if retention.max_age_ms.is_some()
            || over(rows, retention.max_rows)
            || over(bytes, retention.max_bytes)
        {
            return None;
        }
    }
    mergeable_schema(table.schema()).then(|| run.iter().map(|placed| placed.id).collect())
}

/// One segment of `key` holding the rows of `run` (segments of `table`), in order, in as few
/// record batches as [`TARGET_MESSAGE_BYTES`] allows, validated and charged as an upload is,
/// in table memory from `pool`.
///
/// # Errors
/// An error decoding or encoding (a bug: the segments were validated when stored), or the
/// budget refusing the merged segment's memory.
pub fn merge(
    key: &TableKey,
    table: &CachedTable,
    run: &[Arc<PlacedSegment>],
    pool: &Arc<SlabPool>,
) -> Result<Segment> {
    #[cfg(test)]
    tests::fail_if_asked(key);
    let schema = Arc::clone(table.schema());
    let mut batches = Vec::with_capacity(run.len());
    for placed in run {
        let mut decoder = MessageDecoder::new(Arc::clone(&schema), None)?;
        for message in placed.segment.messages() {
            batches.extend(decoder.decode(message)?);
        }
    }
    let merged = concat_batches(&schema, &batches)?;
    drop(batches);
    let mut encoder = FlightEncoder::new(TARGET_MESSAGE_BYTES);
    let mut messages = vec![encoder.encode_schema(&schema, None)];
    messages.extend(encoder.encode_batch(&merged)?);
    drop(merged);
    // Charged without evicting: a merge is skipped rather than take another key's memory.
    let account = UploadAccount::without_evicting(pool.budget());
    let memory = SlabWriter::new(Arc::clone(pool), account);
    let mut upload = TableUpload::new(key.clone(), memory, usize::MAX);
    for message in messages {
        upload.push(message)?;
    }
    upload.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow::array::{AsArray, Int64Array, RecordBatch};
    use arrow::datatypes::Int64Type;
    use arrow::ipc::reader::StreamReader;

    use super::*;
    use crate::clock::Clock;
    use crate::store::budget::MemoryBudget;
    use crate::store::table::encapsulate_ipc_message;
    use crate::store::table::tests::{rows, segment};
    use crate::store::{Eviction, TableStore};

    fn key() -> TableKey {
        TableKey::try_new("grows").unwrap()
    }

    /// Keys whose merges panic (a fault injected by a test: each test its own key).
    static PANICKING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    /// Panic if a test asked merges of `key` to.
    pub(super) fn fail_if_asked(key: &TableKey) {
        if PANICKING.lock().unwrap().iter().any(|k| k == key.as_str()) {
            panic!("a merge of {key} panics, as a test asked");
        }
    }

    fn store() -> TableStore {
        TableStore::new(
            MemoryBudget::unlimited(),
            Eviction::Lru,
            Duration::from_secs(10),
            Clock::default(),
        )
    }

    fn numbers(range: std::ops::Range<i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from_iter_values(range)) as _)])
            .unwrap()
    }

    /// Append rows `range` to the key as one segment (no tokio runtime here: a merge it
    /// starts runs before this returns).
    fn append(store: &TableStore, batch: RecordBatch) {
        let segment = segment(store.budget(), &[batch]);
        store.append(&key(), segment, None, None, None).unwrap();
    }

    /// The numbers a reader from `from` gets (the schema, then the rows), and how many record
    /// batches carry them.
    fn read_from(store: &TableStore, from: u64) -> (Vec<i64>, usize) {
        read_key_from(store, &key(), from)
    }

    /// The numbers a reader of `key` from `from` gets, and how many record batches carry them.
    fn read_key_from(store: &TableStore, key: &TableKey, from: u64) -> (Vec<i64>, usize) {
        let table = store.peek(key).unwrap().table;
        let mut stream = Vec::new();
        for message in table.messages_from(from, store.budget(), key).unwrap() {
            stream.extend_from_slice(&encapsulate_ipc_message(&message.header));
            for piece in &message.body {
                stream.extend_from_slice(piece);
            }
        }
        let reader = StreamReader::try_new(std::io::Cursor::new(stream), None).unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let numbers = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        (numbers, batches.len())
    }

    #[test]
    fn a_merge_that_panics_leaves_the_appends_as_they_were_and_later_ones_merge() {
        let store = store();
        let panicking = TableKey::try_new("merge-panics").unwrap();
        PANICKING.lock().unwrap().push(panicking.to_string());
        let append_to = |range: std::ops::Range<i64>| {
            let segment = segment(store.budget(), &[numbers(range)]);
            store.append(&panicking, segment, None, None, None).unwrap();
        };
        for i in 0..MERGE_AFTER as i64 {
            append_to(i * 10..i * 10 + 10);
        }
        let table = store.peek(&panicking).unwrap().table;
        assert_eq!(table.segments().len(), MERGE_AFTER, "nothing was merged");
        assert_eq!(table.rows(), 640);
        PANICKING.lock().unwrap().clear();
        append_to(640..650);
        let table = store.peek(&panicking).unwrap().table;
        assert!(
            table.segments().len() <= 2,
            "{} segments",
            table.segments().len()
        );
        assert_eq!((table.rows(), table.next_offset()), (650, 650));
        let (read, _) = read_key_from(&store, &panicking, 0);
        assert_eq!(read, (0..650).collect::<Vec<_>>());
    }

    #[test]
    fn tiny_appends_are_merged_with_their_offsets_and_rows_unchanged() {
        let store = store();
        for i in 0..MERGE_AFTER as i64 - 1 {
            append(&store, numbers(i * 10..i * 10 + 10));
        }
        let segments = |store: &TableStore| store.peek(&key()).unwrap().table.segments().len();
        assert_eq!(
            segments(&store),
            MERGE_AFTER - 1,
            "not merged before there are enough"
        );
        append(&store, numbers(630..640));
        assert_eq!(segments(&store), 1, "the 64 appends are one segment");

        // Another 63: the merged segment, still small, is merged again with them.
        for i in 64..127 {
            append(&store, numbers(i * 10..i * 10 + 10));
        }
        assert_eq!(segments(&store), 1);
        let table = store.peek(&key()).unwrap().table;
        assert_eq!((table.earliest_offset(), table.next_offset()), (0, 1270));
        assert_eq!(table.rows(), 1270);
        let placed = &table.segments()[0];
        assert_eq!(placed.merged_ids.as_ref().map(|ids| ids.len()), Some(126));

        // Every offset reads the same rows as before the merge, in one batch now.
        for from in [0, 1, 9, 10, 639, 640, 1000, 1269, 1270] {
            let (numbers, batches) = read_from(&store, from);
            assert_eq!(
                numbers,
                (from as i64..1270).collect::<Vec<_>>(),
                "from {from}"
            );
            assert!(batches <= 1, "from {from}: {batches} batches");
        }
        // And an append after it lands after it.
        append(&store, numbers(1270..1280));
        assert_eq!(read_from(&store, 1265).0, (1265..1280).collect::<Vec<_>>());
    }

    #[test]
    fn dictionary_keys_and_stores_that_keep_appends_apart_are_not_merged() {
        let store = store();
        for i in 0..MERGE_AFTER as i64 {
            let segment = segment(store.budget(), &[rows(i * 10..i * 10 + 10, &["a", "b"])]);
            store.append(&key(), segment, None, None, None).unwrap();
        }
        assert_eq!(
            store.peek(&key()).unwrap().table.segments().len(),
            MERGE_AFTER
        );

        let store = self::store();
        store.keep_appends_apart();
        for i in 0..MERGE_AFTER as i64 {
            append(&store, numbers(i * 10..i * 10 + 10));
        }
        assert_eq!(
            store.peek(&key()).unwrap().table.segments().len(),
            MERGE_AFTER
        );
    }

    #[test]
    fn keys_capped_below_four_runs_or_by_age_are_not_merged() {
        let store = store();
        let capped = |rows| crate::protocol::stream::Retention {
            max_rows: Some(rows),
            ..Default::default()
        };
        // 64 appends of 10 rows are 640: merged under a cap of 2,560, not under 2,559.
        for (cap, merged) in [(2_559, false), (2_560, true)] {
            let key = TableKey::try_new(format!("capped-{cap}")).unwrap();
            for i in 0..MERGE_AFTER as i64 {
                let segment = segment(store.budget(), &[numbers(i * 10..i * 10 + 10)]);
                store
                    .append(&key, segment, None, Some(capped(cap)), None)
                    .unwrap();
            }
            let segments = store.peek(&key).unwrap().table.segments().len();
            assert_eq!(segments == 1, merged, "cap {cap}: {segments} segments");
        }
        // Capped by age: a merged segment would age as its newest append.
        let aged = crate::protocol::stream::Retention {
            max_age_ms: Some(3_600_000),
            ..Default::default()
        };
        let key = TableKey::try_new("aged").unwrap();
        for i in 0..MERGE_AFTER as i64 {
            let segment = segment(store.budget(), &[numbers(i * 10..i * 10 + 10)]);
            store.append(&key, segment, None, Some(aged), None).unwrap();
        }
        assert_eq!(
            store.peek(&key).unwrap().table.segments().len(),
            MERGE_AFTER
        );
    }

    #[test]
    fn a_merge_that_finds_its_appends_gone_changes_nothing() {
        let store = store();
        store.keep_appends_apart();
        for i in 0..MERGE_AFTER as i64 {
            append(&store, numbers(i * 10..i * 10 + 10));
        }
        let table = store.peek(&key()).unwrap();
        let ids = run_to_merge(&table.table).unwrap();
        // Merged from the run as it was...
        let run = table.table.run_with_ids(&ids).unwrap();
        let merged = Arc::new(merge(&key(), &table.table, &run, &store.slab_pool()).unwrap());
        // ...while a trim took the oldest.
        store.retain(
            &key(),
            Some(crate::protocol::stream::Retention {
                max_rows: Some(600),
                ..Default::default()
            }),
        );
        let mut trimmed = CachedTable::clone(&store.peek(&key()).unwrap().table);
        assert!(
            trimmed.replace_run(&ids, merged).is_none(),
            "a stale run is refused"
        );
        assert_eq!(store.merge_run(&key(), table.id, &ids), None);
        let after = store.peek(&key()).unwrap().table;
        assert!(after.segments().len() > 1, "nothing was merged");
        assert_eq!(
            read_from(&store, after.earliest_offset()).0.len(),
            after.rows() as usize
        );
    }
}
