//! `CachedTable`: one cached table, kept as the validated Arrow IPC messages it was uploaded as,
//! in segments: the put's, then one per append ([`Segment`]).
//!
//! A table is stored as the Flight messages (schema, dictionary batches, record batches) that
//! its upload carried, after [`TableUpload`](crate::store::upload::TableUpload) has decoded and
//! validated every one of them. `do_get` replays those messages: nothing is re-encoded, so a get
//! costs what the network costs, and what a client sent is what the next client receives
//! (types, metadata and dictionaries included, and each message's `app_metadata`). The one
//! change: a giant uncompressed record batch of flat columns is stored as smaller batches with
//! the same rows, over the same memory ([`resplit`](crate::store::resplit)).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_flight::{FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, SchemaResult};
use bytes::{Bytes, BytesMut};
use imbl::Vector;
use tokio::time::Instant;

use crate::protocol::key::TableKey;
use crate::protocol::stream::{Offsets, ReadFrom, Retention};
use crate::store::budget::{Charge, MemoryBudget, OverBudget, UploadAccount};
use crate::store::cut::{self, CutError};
use crate::store::disk::file::TableFile;

/// One stored Flight message: its IPC header, its `app_metadata`, and its body, in one or more
/// segments that follow each other on the wire (a re-split piece is slices of the giant body it
/// came from, with padding between them).
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The IPC message flatbuffer.
    pub header: Bytes,
    /// The message's `app_metadata`, as uploaded.
    pub app_metadata: Bytes,
    /// The body, in order.
    pub body: Vec<Bytes>,
}

impl StoredMessage {
    /// The body's length.
    pub fn body_len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// The message as one `FlightData`, its body in one piece (copied if it has several).
    pub fn to_flight_data(&self) -> FlightData {
        let data_body = match self.body.as_slice() {
            [] => Bytes::new(),
            [only] => only.clone(),
            segments => {
                let mut body = BytesMut::with_capacity(self.body_len());
                for segment in segments {
                    body.extend_from_slice(segment);
                }
                body.freeze()
            }
        };
        FlightData {
            flight_descriptor: None,
            data_header: self.header.clone(),
            app_metadata: self.app_metadata.clone(),
            data_body,
        }
    }
}

/// One upload's validated messages: a put's table, or one append to a key. Its first message
/// is the upload's schema; dictionaries and record batches follow in upload order.
///
/// Immutable once built, and shared as `Arc<Segment>`: a reader that holds one keeps it
/// readable (and its memory charged) even once it is trimmed, replaced or dropped.
#[derive(Debug)]
pub struct Segment {
    schema: SchemaRef,
    messages: Vec<StoredMessage>,
    /// The memory budget's charge for the headers and the message list (the bodies' memory
    /// carries charges of its own).
    _metadata: Charge,
    counts: TableCounts,
    /// The file it was mapped from, for a segment that came back from disk at startup.
    file: Option<Arc<TableFile>>,
    /// Whether it may be merged with its neighbours ([`crate::store::merge`]), decided once
    /// when it is made.
    mergeable: bool,
}

/// A table's rows, Arrow bytes and record batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TableCounts {
    pub rows: u64,
    pub bytes: u64,
    pub batches: u64,
}

impl TableCounts {
    fn add(&mut self, other: TableCounts) {
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.batches += other.batches;
    }

    fn remove(&mut self, other: TableCounts) {
        self.rows -= other.rows;
        self.bytes -= other.bytes;
        self.batches -= other.batches;
    }
}

impl Segment {
    /// Assemble a segment from messages that [`TableUpload`](crate::store::upload::TableUpload)
    /// validated, the schema's first; `metadata` charges what they hold besides their bodies.
    pub(crate) fn from_validated(
        schema: SchemaRef,
        messages: Vec<StoredMessage>,
        metadata: Charge,
        counts: TableCounts,
    ) -> Self {
        let mergeable = crate::store::merge::mergeable_messages(&messages, counts);
        Self {
            schema,
            messages,
            _metadata: metadata,
            counts,
            file: None,
            mergeable,
        }
    }

    /// Assemble a segment mapped from `file`, whose messages point into the mapping
    /// ([`read_table`](crate::store::disk::file::read_table) checked their framing).
    pub(crate) fn from_file(
        schema: SchemaRef,
        messages: Vec<StoredMessage>,
        metadata: Charge,
        counts: TableCounts,
        file: Arc<TableFile>,
    ) -> Self {
        Self {
            file: Some(file),
            mergeable: false,
            ..Self::from_validated(schema, messages, metadata, counts)
        }
    }

    /// The file this segment is mapped from, if it came back from disk at startup: its bytes
    /// are the page cache's, not table memory, and must be [verified](TableFile::verify)
    /// before they are first served.
    pub fn file(&self) -> Option<&Arc<TableFile>> {
        self.file.as_ref()
    }

    /// Whether it may be merged with its neighbours: small, in table memory, of rows, and
    /// of plain record batches (see [`crate::store::merge`]).
    pub fn mergeable(&self) -> bool {
        self.mergeable
    }

    /// The upload's Arrow schema, with its metadata.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Its messages in upload order: the schema, dictionaries and record batches. Cloning one
    /// clones reference counts, not data.
    pub fn messages(&self) -> &[StoredMessage] {
        &self.messages
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.counts.rows
    }

    /// Bytes of Arrow data held (the message bodies).
    pub fn bytes(&self) -> u64 {
        self.counts.bytes
    }

    /// Number of record batches.
    pub fn batches(&self) -> u64 {
        self.counts.batches
    }
}

/// A segment in its key's table: the row its rows start at, the put or append that added it,
/// and when.
#[derive(Debug, Clone)]
pub struct PlacedSegment {
    /// The segment.
    pub segment: Arc<Segment>,
    /// The offset of its first row.
    pub first_offset: u64,
    /// The id of the put or append that added it (unique, larger than every earlier one's;
    /// it names the segment's file on disk).
    pub id: u64,
    /// When it was added, on the store's clock (what age retention measures).
    pub added_at: Instant,
    /// For a segment merged from several appends ([`crate::store::merge`]), the ids of all
    /// but the last (`id`): their files on disk are the merged segment's too.
    pub merged_ids: Option<Arc<[u64]>>,
}

impl PlacedSegment {
    /// One past the offset of its last row.
    pub fn end_offset(&self) -> u64 {
        self.first_offset + self.segment.rows()
    }
}

/// A cached table: the schema of the upload that created the key, and the segments it holds,
/// oldest first: the put's, then one per append, less those retention trimmed.
///
/// The store shares it as `Arc<CachedTable>` and never changes one a reader holds (an append
/// changes the store's own copy, or a clone of it): a reader keeps the table it started with,
/// whatever is appended, trimmed, replaced or dropped meanwhile. A clone costs the same
/// whatever the number of segments: they are kept in a persistent vector, whose clones share
/// its nodes, so an append after a new reader copies a few nodes, not the key's list.
#[derive(Debug, Clone)]
pub struct CachedTable {
    schema: SchemaRef,
    schema_ipc: Bytes,
    /// The first upload's schema message, which every read starts with.
    schema_message: StoredMessage,
    /// Boxed in `Arc`s so that a key of a few segments keeps them inline, without a node.
    segments: Vector<Arc<PlacedSegment>>,
    /// One past the last row ever stored.
    next_offset: u64,
    retention: Option<Retention>,
    /// The kept segments' counts, summed.
    counts: TableCounts,
    /// The kept segments mapped from their files, counted.
    mapped: MappedCounts,
}

/// How many of a table's segments are mapped from their files, and their bytes.
#[derive(Debug, Clone, Copy, Default)]
struct MappedCounts {
    segments: u64,
    bytes: u64,
}

impl CachedTable {
    /// A table of one segment, the put's (`id`), added at `now`, whose rows start at 0.
    pub fn new(segment: Arc<Segment>, id: u64, now: Instant) -> Self {
        Self::starting_at(segment, id, now, 0)
    }

    /// A table of one segment, `id`'s, added at `now`, whose rows start at `first_offset`.
    fn starting_at(segment: Arc<Segment>, id: u64, now: Instant, first_offset: u64) -> Self {
        let schema_message = segment.messages.first().cloned().unwrap_or(StoredMessage {
            header: Bytes::new(),
            app_metadata: Bytes::new(),
            body: Vec::new(),
        });
        let mut table = Self {
            schema: Arc::clone(&segment.schema),
            schema_ipc: encapsulate_ipc_message(&schema_message.header),
            schema_message,
            segments: Vector::new(),
            next_offset: first_offset,
            retention: None,
            counts: TableCounts::default(),
            mapped: MappedCounts::default(),
        };
        table.push(segment, id, now);
        table
    }

    /// A table whose segments came back from disk: `(segment, first_offset, id, added_at)`,
    /// contiguous and oldest first (at least one).
    pub(crate) fn restored(
        segments: Vec<(Arc<Segment>, u64, u64, Instant)>,
        retention: Option<Retention>,
    ) -> Option<Self> {
        let mut segments = segments.into_iter();
        let (first, first_offset, id, added_at) = segments.next()?;
        let mut table = Self::starting_at(first, id, added_at, first_offset);
        for (segment, _, id, added_at) in segments {
            table.push(segment, id, added_at);
        }
        table.set_retention(retention);
        Some(table)
    }

    fn push(&mut self, segment: Arc<Segment>, id: u64, now: Instant) -> u64 {
        let first_offset = self.next_offset;
        self.next_offset += segment.rows();
        self.count_in(&segment);
        self.segments.push_back(Arc::new(PlacedSegment {
            segment,
            first_offset,
            id,
            added_at: now,
            merged_ids: None,
        }));
        first_offset
    }

    /// The segments whose ids are `ids` (consecutive, oldest first), if they are all still
    /// there, in that order.
    pub fn run_with_ids(&self, ids: &[u64]) -> Option<Vec<Arc<PlacedSegment>>> {
        let start = self.run_start(ids)?;
        Some(self.run(start, ids.len()).cloned().collect())
    }

    /// The `length` segments from index `start`.
    fn run(&self, start: usize, length: usize) -> impl Iterator<Item = &Arc<PlacedSegment>> {
        (start..start + length).map(|index| &self.segments[index])
    }

    /// Where the segments whose ids are `ids` start, if they are all still there, in order.
    fn run_start(&self, ids: &[u64]) -> Option<usize> {
        let start = self.index_of_id(*ids.first()?)?;
        (start + ids.len() <= self.segments.len()
            && self
                .run(start, ids.len())
                .map(|placed| placed.id)
                .eq(ids.iter().copied()))
        .then_some(start)
    }

    /// Replace the segments whose ids are `ids` (consecutive, oldest first) with `merged`,
    /// which holds their rows: it takes the first's offset and the last's id and age (so age
    /// retention keeps its rows as long as the newest of them). Returns the segments replaced,
    /// or `None`, changing nothing, if they are no longer all there in that order or hold
    /// other rows than `merged` (a trim or a replace got there first).
    pub fn replace_run(
        &mut self,
        ids: &[u64],
        merged: Arc<Segment>,
    ) -> Option<Vec<Arc<PlacedSegment>>> {
        let start = self.run_start(ids)?;
        let run: Vec<_> = self.run(start, ids.len()).cloned().collect();
        let rows: u64 = run.iter().map(|placed| placed.segment.rows()).sum();
        if rows != merged.rows() {
            return None;
        }
        let last = &run[run.len() - 1];
        let mut all_ids: Vec<u64> = Vec::new();
        for placed in &run {
            all_ids.extend(placed.merged_ids.iter().flat_map(|ids| ids.iter().copied()));
            all_ids.push(placed.id);
        }
        all_ids.pop(); // the last's own id is the merged segment's
        let placed = PlacedSegment {
            first_offset: run[0].first_offset,
            id: last.id,
            added_at: last.added_at,
            merged_ids: Some(all_ids.into()),
            segment: merged,
        };
        self.count_in(&placed.segment);
        let mut replaced = self.segments.split_off(start);
        let after = replaced.split_off(ids.len());
        self.segments.push_back(Arc::new(placed));
        self.segments.append(after);
        for old in &replaced {
            self.count_out(&old.segment);
        }
        Some(replaced.into_iter().collect())
    }

    /// Append `segment` (appended by `id`, at `now`): its rows take the next offsets; returns
    /// the first. Readers holding this table see nothing of it.
    ///
    /// # Errors
    /// The first difference, in words, if its schema is not the table's.
    pub fn append(&mut self, segment: Arc<Segment>, id: u64, now: Instant) -> Result<u64, String> {
        if let Some(difference) = schema_difference(&self.schema, &segment.schema) {
            return Err(difference);
        }
        Ok(self.push(segment, id, now))
    }

    /// The table's Arrow schema (its first upload's, with its metadata).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Number of rows kept.
    pub fn rows(&self) -> u64 {
        self.counts.rows
    }

    /// Number of record batches kept.
    #[cfg(any(feature = "sql", test))]
    pub fn batches(&self) -> u64 {
        self.counts.batches
    }

    /// Bytes of Arrow data kept: the sum of the IPC message bodies (the Arrow buffers, with
    /// the format's padding), the same figure as `FlightInfo.total_bytes`.
    pub fn bytes(&self) -> u64 {
        self.counts.bytes
    }

    /// The kept segments, oldest first.
    pub fn segments(&self) -> &Vector<Arc<PlacedSegment>> {
        &self.segments
    }

    /// The offset of the oldest row kept (the next offset when nothing is kept).
    pub fn earliest_offset(&self) -> u64 {
        self.segments
            .front()
            .map_or(self.next_offset, |first| first.first_offset)
    }

    /// The offset the next appended row takes.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Its offsets and retention, as `get_flight_info` gives them.
    pub fn offsets(&self) -> Offsets {
        Offsets {
            earliest_offset: self.earliest_offset(),
            next_offset: self.next_offset,
            retention: self.retention,
        }
    }

    /// How much of it is kept, if it is capped.
    pub fn retention(&self) -> Option<Retention> {
        self.retention
    }

    /// Cap it by `retention` (`None`: keep everything). Trim with [`trim`](Self::trim).
    pub fn set_retention(&mut self, retention: Option<Retention>) {
        self.retention = retention.filter(Retention::caps);
    }

    /// Trim the oldest segments its retention lets go at `now`; returns them.
    ///
    /// A segment goes while what is left still holds `max_rows` rows and `max_bytes` bytes
    /// (as Redis' `MAXLEN ~` keeps at least the cap), or once it is older than `max_age`.
    pub fn trim(&mut self, now: Instant) -> Vec<Arc<PlacedSegment>> {
        let Some(retention) = self.retention else {
            return Vec::new();
        };
        let mut cut = 0;
        let mut left = self.counts;
        for placed in self.segments.iter() {
            let counts = placed.segment.counts;
            let aged = retention
                .max_age()
                .is_some_and(|age| placed.added_at + age <= now);
            let over_rows = retention
                .max_rows
                .is_some_and(|max| left.rows - counts.rows >= max);
            let over_bytes = retention
                .max_bytes
                .is_some_and(|max| left.bytes - counts.bytes >= max);
            let by_size = (retention.max_rows.is_some() || retention.max_bytes.is_some())
                && (retention.max_rows.is_none() || over_rows)
                && (retention.max_bytes.is_none() || over_bytes);
            if !(aged || by_size) {
                break;
            }
            left.remove(counts);
            cut += 1;
        }
        self.cut(cut)
    }

    /// Trim its oldest segment if it has more than one (to make room under memory pressure).
    pub fn trim_oldest(&mut self) -> Option<Arc<PlacedSegment>> {
        (self.segments.len() > 1).then(|| self.cut(1).remove(0))
    }

    fn cut(&mut self, count: usize) -> Vec<Arc<PlacedSegment>> {
        if count == 0 {
            return Vec::new(); // a split would still copy shared nodes
        }
        let kept = self.segments.split_off(count);
        let cut = std::mem::replace(&mut self.segments, kept);
        for placed in &cut {
            self.count_out(&placed.segment);
        }
        cut.into_iter().collect()
    }

    /// When its oldest segment's age runs out, if it is capped by age.
    pub fn age_deadline(&self) -> Option<Instant> {
        let age = self.retention?.max_age()?;
        Some(self.segments.front()?.added_at + age)
    }

    /// The bytes of its segments held in table memory (not those mapped from their files,
    /// which the budget does not charge): what a read of it holds that no eviction frees.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.counts.bytes - self.mapped.bytes).unwrap_or(usize::MAX)
    }

    /// Whether any of its segments is mapped from its file (came back from disk at startup).
    pub fn has_mapped_segments(&self) -> bool {
        self.mapped.segments > 0
    }

    /// The kept segment added by put or append `id`, if it is still there.
    pub fn segment_with_id(&self, id: u64) -> Option<&Arc<PlacedSegment>> {
        self.index_of_id(id).map(|index| &self.segments[index])
    }

    /// The index of the segment added by put or append `id`, if it is still there. Looked for
    /// from the newest, as far back as ids go down to `id` (they grow with each segment): the
    /// segments asked for (a run to merge, an append to write) are among the last added.
    fn index_of_id(&self, id: u64) -> Option<usize> {
        let from_end = self
            .segments
            .iter()
            .rev()
            .take_while(|placed| placed.id >= id)
            .position(|placed| placed.id == id)?;
        Some(self.segments.len() - 1 - from_end)
    }

    fn count_in(&mut self, segment: &Segment) {
        self.counts.add(segment.counts);
        if segment.file.is_some() {
            self.mapped.segments += 1;
            self.mapped.bytes += segment.counts.bytes;
        }
    }

    fn count_out(&mut self, segment: &Segment) {
        self.counts.remove(segment.counts);
        if segment.file.is_some() {
            self.mapped.segments -= 1;
            self.mapped.bytes -= segment.counts.bytes;
        }
    }

    /// The messages a read of `key` from row `from` sends: the schema, then the rows from
    /// `from` on (see [`segment_messages`](Self::segment_messages)), up to the rows stored now.
    ///
    /// # Errors
    /// [`ReadError::Trimmed`] for a row before the oldest kept; those of
    /// [`segment_messages`](Self::segment_messages) for a row inside a batch.
    pub fn messages_from(
        &self,
        from: u64,
        budget: &Arc<MemoryBudget>,
        key: &TableKey,
    ) -> Result<impl Iterator<Item = StoredMessage> + Send + 'static, ReadError> {
        let first = self.segment_at(from)?;
        let head = match first {
            Some(index) => self.segment_messages(index, from, budget, key)?,
            None => Vec::new(),
        };
        let after = first.map_or(self.segments.len(), |index| index + 1);
        Ok(std::iter::once(self.schema_message.clone())
            .chain(head)
            .chain(self.segment_messages_after(after)))
    }

    /// Every message a read of all kept rows sends: the schema, then each kept segment's
    /// messages (reference counts, not copies). The SQL scan reads them.
    #[cfg(feature = "sql")]
    pub fn messages(&self) -> impl Iterator<Item = StoredMessage> + Send + 'static {
        std::iter::once(self.schema_message.clone()).chain(self.segment_messages_after(0))
    }

    /// The messages of segments `first..`, without their schemas. The iterator holds those
    /// segments (a clone of the persistent list), not the table.
    fn segment_messages_after(
        &self,
        first: usize,
    ) -> impl Iterator<Item = StoredMessage> + Send + 'static {
        self.segments.skip(first).into_iter().flat_map(|placed| {
            let segment = Arc::clone(&placed.segment);
            (1..segment.messages.len()).map(move |message| segment.messages[message].clone())
        })
    }

    /// The row a read from `from` starts at.
    ///
    /// # Errors
    /// [`ReadError::Trimmed`] for a row before the oldest kept.
    pub fn start_of(&self, from: ReadFrom) -> Result<u64, ReadError> {
        let earliest = self.earliest_offset();
        match from {
            ReadFrom::Earliest => Ok(earliest),
            ReadFrom::Latest => Ok(self.next_offset),
            ReadFrom::Offset(offset) if offset < earliest => {
                Err(ReadError::Trimmed { offset, earliest })
            }
            ReadFrom::Offset(offset) => Ok(offset),
        }
    }

    /// The first message of every read: the key's schema.
    pub fn schema_message(&self) -> &StoredMessage {
        &self.schema_message
    }

    /// The index of the segment holding row `from`, `None` if `from` is at or past the end.
    ///
    /// # Errors
    /// [`ReadError::Trimmed`] for a row before the oldest kept.
    pub fn segment_at(&self, from: u64) -> Result<Option<usize>, ReadError> {
        let earliest = self.earliest_offset();
        if from < earliest {
            return Err(ReadError::Trimmed {
                offset: from,
                earliest,
            });
        }
        // The first segment that ends past `from`, or starts at it (a segment of no rows
        // ends where it starts).
        let before =
            |placed: &Arc<PlacedSegment>| placed.end_offset() <= from && placed.first_offset < from;
        let index = self
            .segments
            .binary_search_by(|placed| match before(placed) {
                true => std::cmp::Ordering::Less,
                false => std::cmp::Ordering::Greater,
            })
            .unwrap_or_else(|index| index);
        Ok((index < self.segments.len()).then_some(index))
    }

    /// The messages of segment `index` that carry rows `from..` (without its schema): its
    /// dictionary batches before `from` (which put in force the dictionaries at `from`), then
    /// its messages from the record batch holding `from`,
    /// that one cut to start at `from` when `from` falls inside it
    /// ([`cut`](crate::store::cut): the read's own memory, charged to `budget` for `key`). The
    /// rest are the stored messages themselves (reference counts, not copies).
    ///
    /// # Errors
    /// [`ReadError::OverBudget`] if a batch must be cut and the budget has no room for it;
    /// [`ReadError::Decode`] if it cannot be decoded and encoded again (a bug: stored batches
    /// were validated).
    pub fn segment_messages(
        &self,
        index: usize,
        from: u64,
        budget: &Arc<MemoryBudget>,
        key: &TableKey,
    ) -> Result<Vec<StoredMessage>, ReadError> {
        let placed = &self.segments[index];
        let messages = &placed.segment.messages;
        if from <= placed.first_offset {
            return Ok(messages[1..].to_vec());
        }
        let mut row = placed.first_offset;
        let mut dictionaries = Vec::new();
        for (at, message) in messages.iter().enumerate().skip(1) {
            let batch_rows = match record_batch_rows(&message.header) {
                Some(rows) => rows,
                None => {
                    dictionaries.push(message.clone());
                    continue;
                }
            };
            if row + batch_rows <= from {
                row += batch_rows;
                continue;
            }
            let mut out = dictionaries;
            if row < from {
                let account = UploadAccount::reading(budget, key.clone(), self.memory_bytes());
                let skip = (from - row) as usize;
                let rest = cut::rest_of_batch(&self.schema, &out, message, skip, &account)
                    .map_err(|err| match err {
                        CutError::Arrow(err) => ReadError::Decode(err),
                        CutError::OverBudget(refusal) => ReadError::OverBudget {
                            offset: from,
                            batch: row..row + batch_rows,
                            refusal,
                        },
                    })?;
                out.push(rest);
                out.extend_from_slice(&messages[at + 1..]);
            } else {
                out.extend_from_slice(&messages[at..]);
            }
            return Ok(out);
        }
        Ok(dictionaries)
    }

    /// The schema as an encapsulated IPC message, as `FlightInfo.schema` and
    /// `SchemaResult.schema` carry it.
    pub fn schema_ipc(&self) -> Bytes {
        self.schema_ipc.clone()
    }

    /// The `FlightInfo` describing this table under `key`, reached through `descriptor`.
    ///
    /// Its one endpoint's ticket is the key, which `do_get` accepts at `location` (see
    /// [`location`](crate::protocol::location)).
    pub fn flight_info(
        &self,
        key: &TableKey,
        descriptor: FlightDescriptor,
        location: &str,
    ) -> FlightInfo {
        let endpoint = FlightEndpoint::new()
            .with_ticket(key.to_ticket())
            .with_location(location);
        FlightInfo {
            schema: self.schema_ipc(),
            flight_descriptor: Some(descriptor),
            endpoint: vec![endpoint],
            total_records: i64::try_from(self.rows()).unwrap_or(i64::MAX),
            total_bytes: i64::try_from(self.bytes()).unwrap_or(i64::MAX),
            ordered: true,
            app_metadata: Bytes::new(),
        }
    }

    /// The answer to `get_schema`.
    pub fn schema_result(&self) -> SchemaResult {
        SchemaResult {
            schema: self.schema_ipc(),
        }
    }
}

/// Why a read from an offset cannot be served.
#[derive(Debug)]
pub enum ReadError {
    /// The row was trimmed: `earliest` is the oldest kept.
    Trimmed {
        /// The row asked for.
        offset: u64,
        /// The oldest row kept.
        earliest: u64,
    },
    /// The row is inside a stored batch, and the memory budget had no room for the rest of
    /// that batch encoded again.
    OverBudget {
        /// The row asked for.
        offset: u64,
        /// The rows of the batch it is inside.
        batch: std::ops::Range<u64>,
        /// What the budget could not make room for.
        refusal: OverBudget,
    },
    /// A batch cut at the offset could not be decoded or encoded.
    Decode(ArrowError),
}

impl From<ArrowError> for ReadError {
    fn from(err: ArrowError) -> Self {
        ReadError::Decode(err)
    }
}

impl ReadError {
    /// This error as the library's, for a read of `key`.
    pub fn for_read(self, key: &TableKey) -> crate::Error {
        match self {
            ReadError::Trimmed { offset, earliest } => crate::Error::OffsetOutOfRange {
                key: key.clone(),
                offset,
                earliest,
            },
            ReadError::OverBudget {
                offset,
                batch,
                refusal,
            } => crate::Error::ReadOverBudget {
                key: key.clone(),
                offset,
                batch,
                refusal: Box::new(refusal),
            },
            ReadError::Decode(err) => {
                tracing::error!(key = key.as_str(), error = %err, "cannot cut a stored batch");
                crate::Error::Internal {
                    context: "cutting a stored batch at the offset a read starts from",
                    source: Box::new(err),
                }
            }
        }
    }
}

/// The rows of a record batch message, `None` for any other message.
fn record_batch_rows(header: &[u8]) -> Option<u64> {
    let message = arrow::ipc::root_as_message(header).ok()?;
    let batch = message.header_as_record_batch()?;
    u64::try_from(batch.length()).ok()
}

/// The first difference between a key's schema and an append's, in words; `None` if the
/// append may be stored under it (same fields, types, nullability and dictionary ids;
/// metadata may differ: the key keeps its first upload's).
pub fn schema_difference(key: &Schema, append: &Schema) -> Option<String> {
    if key.fields().len() != append.fields().len() {
        return Some(format!(
            "it has {} columns, the key has {}",
            append.fields().len(),
            key.fields().len()
        ));
    }
    for (index, (ours, theirs)) in key.fields().iter().zip(append.fields()).enumerate() {
        if let Some(difference) = field_difference(ours, theirs) {
            return Some(format!("column {index}: {difference}"));
        }
    }
    None
}

fn field_difference(ours: &Field, theirs: &Field) -> Option<String> {
    if ours.name() != theirs.name() {
        return Some(format!(
            "it is named `{}`, the key's is named `{}`",
            theirs.name(),
            ours.name()
        ));
    }
    // Nested fields' names and metadata may differ: the key's schema is what readers see, and
    // they do not change how the data is laid out.
    if !ours.data_type().equals_datatype(theirs.data_type()) {
        return Some(format!(
            "`{}` is {} here, {} in the key",
            ours.name(),
            theirs.data_type(),
            ours.data_type()
        ));
    }
    if ours.is_nullable() != theirs.is_nullable() {
        let says = |nullable: bool| if nullable { "nullable" } else { "not nullable" };
        return Some(format!(
            "`{}` is {} here, {} in the key",
            ours.name(),
            says(theirs.is_nullable()),
            says(ours.is_nullable())
        ));
    }
    dictionary_id_difference(ours, theirs)
}

/// The first dictionary of `theirs` (or of a field nested in it) numbered otherwise than in
/// `ours`: its batches would be read with another dictionary.
fn dictionary_id_difference(ours: &Field, theirs: &Field) -> Option<String> {
    #[allow(deprecated)] // arrow-ipc itself still reads dictionary ids from fields
    let (our_id, their_id) = (ours.dict_id(), theirs.dict_id());
    if our_id != their_id {
        return Some(format!(
            "`{}` uses dictionary id {} here, {} in the key; number dictionaries as the first \
             upload did",
            ours.name(),
            their_id.unwrap_or(-1),
            our_id.unwrap_or(-1)
        ));
    }
    let children = |field: &Field| -> Vec<FieldRef> {
        match field.data_type() {
            DataType::Struct(fields) => fields.iter().cloned().collect(),
            DataType::List(child)
            | DataType::LargeList(child)
            | DataType::ListView(child)
            | DataType::LargeListView(child)
            | DataType::FixedSizeList(child, _)
            | DataType::Map(child, _) => vec![Arc::clone(child)],
            DataType::Union(fields, _) => fields.iter().map(|(_, f)| Arc::clone(f)).collect(),
            DataType::RunEndEncoded(ends, values) => vec![Arc::clone(ends), Arc::clone(values)],
            _ => Vec::new(),
        }
    };
    children(ours)
        .iter()
        .zip(children(theirs).iter())
        .find_map(|(ours, theirs)| dictionary_id_difference(ours, theirs))
}

/// The IPC continuation marker that starts an encapsulated message.
const IPC_CONTINUATION_MARKER: u32 = 0xFFFF_FFFF;

/// Wrap a flatbuffer `Message` in the IPC encapsulation: continuation marker, padded length,
/// the message, zero padding to a multiple of 8 bytes.
pub(crate) fn encapsulate_ipc_message(header: &[u8]) -> Bytes {
    let padded_len = header.len().next_multiple_of(8);
    let mut out = Vec::with_capacity(8 + padded_len);
    out.extend_from_slice(&IPC_CONTINUATION_MARKER.to_le_bytes());
    out.extend_from_slice(&(padded_len as u32).to_le_bytes());
    out.extend_from_slice(header);
    out.resize(8 + padded_len, 0);
    Bytes::from(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use arrow::array::{Array, AsArray, DictionaryArray, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{Int32Type, Int64Type};
    use arrow::ipc::reader::StreamReader;

    use super::*;
    use crate::protocol::encode::{FlightEncoder, TARGET_MESSAGE_BYTES};
    use crate::store::budget::UploadAccount;
    use crate::store::slabs::{SlabPool, SlabWriter};
    use crate::store::upload::TableUpload;

    /// `batches` validated into a segment, as an upload stores them, charged to `budget`.
    pub(crate) fn segment(budget: &Arc<MemoryBudget>, batches: &[RecordBatch]) -> Arc<Segment> {
        let mut encoder = FlightEncoder::new(TARGET_MESSAGE_BYTES);
        let mut messages = vec![encoder.encode_schema(&batches[0].schema(), None)];
        for batch in batches {
            messages.extend(encoder.encode_batch(batch).unwrap());
        }
        segment_of_messages(budget, messages)
    }

    /// `batch` as a client compressing with LZ4 sends it: the schema, the dictionaries, the
    /// record batch.
    pub(crate) fn lz4_messages(batch: &RecordBatch) -> Vec<FlightData> {
        use arrow::ipc::CompressionType;
        use arrow::ipc::writer::{
            DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
        };
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
        let generator = IpcDataGenerator::default();
        let mut tracker = DictionaryTracker::new(false);
        let schema = generator.schema_to_bytes_with_dictionary_tracker(
            &batch.schema(),
            &mut tracker,
            &options,
        );
        let (dictionaries, record_batch) = generator
            .encode(
                batch,
                &mut tracker,
                &options,
                &mut IpcWriteContext::default(),
            )
            .unwrap();
        std::iter::once(schema)
            .chain(dictionaries)
            .chain([record_batch])
            .map(FlightData::from)
            .collect()
    }

    /// Flight `messages` (a schema, then batches) validated into a segment, as an upload
    /// stores them, charged to `budget`.
    pub(crate) fn segment_of_messages(
        budget: &Arc<MemoryBudget>,
        messages: Vec<FlightData>,
    ) -> Arc<Segment> {
        let pool = Arc::new(SlabPool::new(Duration::ZERO, Arc::clone(budget)));
        let memory = SlabWriter::new(pool, UploadAccount::new(budget));
        let mut upload = TableUpload::new(TableKey::try_new("t").unwrap(), memory, usize::MAX);
        for message in messages {
            upload.push(message).unwrap();
        }
        Arc::new(upload.finish().unwrap())
    }

    /// A batch of column `n` holding `range`, and a dictionary column of `words` (one per row,
    /// cycling).
    pub(crate) fn rows(range: std::ops::Range<i64>, words: &[&str]) -> RecordBatch {
        let keys: Vec<i32> = (0..range.end - range.start)
            .map(|i| (i as usize % words.len()) as i32)
            .collect();
        let dictionary = DictionaryArray::<Int32Type>::try_new(
            keys.into(),
            Arc::new(StringArray::from_iter_values(words.iter())),
        )
        .unwrap();
        RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from_iter_values(range)) as _),
            ("word", Arc::new(dictionary) as _),
        ])
        .unwrap()
    }

    fn test_key() -> TableKey {
        TableKey::try_new("k").unwrap()
    }

    /// What a reader of `messages` as an IPC stream gets: the `n` column and the words.
    pub(crate) fn read_back(
        messages: impl Iterator<Item = StoredMessage>,
    ) -> (Vec<i64>, Vec<String>) {
        let mut stream = Vec::new();
        for message in messages {
            stream.extend_from_slice(&encapsulate_ipc_message(&message.header));
            for piece in &message.body {
                stream.extend_from_slice(piece);
            }
        }
        let reader = StreamReader::try_new(std::io::Cursor::new(stream), None).unwrap();
        let (mut numbers, mut words) = (Vec::new(), Vec::new());
        for batch in reader {
            let batch = batch.unwrap();
            numbers.extend(batch.column(0).as_primitive::<Int64Type>().values().iter());
            let column = batch.column(1).as_dictionary::<Int32Type>();
            let values = column.values().as_string::<i32>();
            for key in column.keys().values() {
                words.push(values.value(*key as usize).to_string());
            }
        }
        (numbers, words)
    }

    fn word(n: i64) -> &'static str {
        // Rows 0..10 are from the first upload (a, b), 10..25 the second (c, d, e), 25.. the
        // third (f): each append brings dictionaries of its own.
        match n {
            0..10 => ["a", "b"][(n % 2) as usize],
            10..15 => ["c", "d"][((n - 10) % 2) as usize],
            15..25 => ["d", "e"][((n - 15) % 2) as usize],
            _ => "f",
        }
    }

    fn three_appends(budget: &Arc<MemoryBudget>) -> Arc<CachedTable> {
        let now = Instant::now();
        let mut table = CachedTable::new(segment(budget, &[rows(0..10, &["a", "b"])]), 1, now);
        let second = segment(
            budget,
            &[rows(10..15, &["c", "d"]), rows(15..25, &["d", "e"])],
        );
        assert_eq!(table.append(second, 2, now), Ok(10));
        assert_eq!(
            table.append(segment(budget, &[rows(25..30, &["f"])]), 3, now),
            Ok(25)
        );
        Arc::new(table)
    }

    #[test]
    fn a_read_from_any_offset_gets_exactly_the_rows_from_there_with_their_dictionaries() {
        let budget = MemoryBudget::new(None);
        let table = three_appends(&budget);
        assert_eq!((table.earliest_offset(), table.next_offset()), (0, 30));
        assert_eq!((table.rows(), table.batches()), (30, 4));
        for from in 0..=31 {
            let (numbers, words) =
                read_back(table.messages_from(from, &budget, &test_key()).unwrap());
            let expected: Vec<i64> = (from.min(30) as i64..30).collect();
            assert_eq!(numbers, expected, "from {from}");
            let expected: Vec<_> = expected.iter().map(|&n| word(n).to_string()).collect();
            assert_eq!(words, expected, "from {from}");
        }
    }

    /// The index of the segment holding row `from` in `table`, found by walking its list.
    fn segment_at_by_walking(table: &CachedTable, from: u64) -> Option<usize> {
        table
            .segments()
            .iter()
            .position(|placed| placed.end_offset() > from || placed.first_offset >= from)
    }

    #[test]
    fn a_key_of_hundreds_of_appends_reads_merges_and_trims_as_one_list_and_clones_are_snapshots() {
        // A put of no rows, then 299 appends of 1, 2 or 0 rows (the persistent list is then a
        // tree of several nodes, not one chunk).
        let budget = MemoryBudget::new(None);
        let now = Instant::now();
        let mut table = CachedTable::new(segment(&budget, &[rows(0..0, &["a"])]), 1, now);
        let mut total = 0;
        for i in 1..300 {
            let start = total;
            total += i % 3;
            let append = segment(&budget, &[rows(start..total, &["a"])]);
            table.append(append, i as u64 + 1, now).unwrap();
        }
        assert_eq!(
            (table.next_offset(), table.rows()),
            (total as u64, total as u64)
        );
        for from in 0..=total as u64 + 1 {
            assert_eq!(
                table.segment_at(from).unwrap(),
                segment_at_by_walking(&table, from),
                "row {from}"
            );
        }
        let before = Arc::new(table.clone());

        // Merge appends 201..=264 (ids 202..=265) into one segment of their rows.
        let ids: Vec<u64> = (202..=265).collect();
        let run = table.run_with_ids(&ids).unwrap();
        let (first, end) = (run[0].first_offset, run[63].end_offset());
        let merged = segment(&budget, &[rows(first as i64..end as i64, &["a"])]);
        let replaced = table.replace_run(&ids, merged).unwrap();
        assert_eq!(replaced.iter().map(|p| p.id).collect::<Vec<_>>(), ids);
        assert_eq!(table.segments().len(), 300 - 63);
        let kept: Vec<u64> = table.segments().iter().map(|p| p.id).collect();
        let expected: Vec<u64> = (1..=201).chain(265..=300).collect();
        assert_eq!(kept, expected);
        assert_eq!(table.rows(), total as u64, "the merge kept every row");
        assert!(
            table
                .replace_run(&ids, segment(&budget, &[rows(0..1, &["a"])]))
                .is_none()
        );
        for from in 0..=total as u64 {
            assert_eq!(
                table.segment_at(from).unwrap(),
                segment_at_by_walking(&table, from),
                "row {from} after the merge"
            );
        }

        // Trim to the newest 100 rows, at whole appends.
        table.set_retention(Some(Retention {
            max_rows: Some(100),
            ..Retention::default()
        }));
        let trimmed = table.trim(now);
        let earliest = table.earliest_offset();
        assert_eq!(trimmed.last().unwrap().end_offset(), earliest);
        assert!(
            table.rows() >= 100 && table.rows() - 100 < 3,
            "{}",
            table.rows()
        );
        assert_eq!(table.segment_with_id(300).map(|p| p.id), Some(300));
        assert_eq!(
            table.segment_with_id(265).map(|p| p.id),
            Some(265),
            "the merged one"
        );
        assert!(table.segment_with_id(202).is_none(), "merged into 265's");
        assert!(table.segment_with_id(1).is_none(), "trimmed");

        let table = Arc::new(table);
        for from in [earliest, earliest + 1, total as u64 - 5] {
            let read = read_back(table.messages_from(from, &budget, &test_key()).unwrap()).0;
            assert_eq!(
                read,
                (from as i64..total).collect::<Vec<_>>(),
                "from {from}"
            );
        }
        // The clone taken before the merge and the trim still reads every row as it was.
        let read = read_back(before.messages_from(0, &budget, &test_key()).unwrap()).0;
        assert_eq!(read, (0..total).collect::<Vec<_>>());
        assert_eq!(before.segments().len(), 300);
    }

    #[test]
    fn a_batch_cut_at_the_offset_keeps_its_app_metadata() {
        let budget = MemoryBudget::new(None);
        let mut placed = (*segment(&budget, &[rows(0..10, &["a"])]))
            .messages()
            .to_vec();
        placed.last_mut().unwrap().app_metadata = Bytes::from_static(b"producer's tag");
        let segment = Arc::new(Segment::from_validated(
            Arc::new(rows(0..1, &["a"]).schema().as_ref().clone()),
            placed,
            budget.empty_charge(None),
            TableCounts {
                rows: 10,
                bytes: 0,
                batches: 1,
            },
        ));
        let table = Arc::new(CachedTable::new(segment, 1, Instant::now()));
        let messages: Vec<_> = table
            .messages_from(4, &budget, &test_key())
            .unwrap()
            .collect();
        let last = messages.last().unwrap();
        assert_eq!(&last.app_metadata[..], b"producer's tag");
        assert_eq!(
            read_back(messages.into_iter()).0,
            (4..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_append_of_another_schema_names_the_first_difference() {
        let budget = MemoryBudget::new(None);
        let mut table =
            CachedTable::new(segment(&budget, &[rows(0..3, &["a"])]), 1, Instant::now());
        let other = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(vec![1])) as _),
            ("word", Arc::new(StringArray::from(vec!["x"])) as _),
        ])
        .unwrap();
        let err = table
            .append(segment(&budget, &[other]), 2, Instant::now())
            .unwrap_err();
        assert!(err.starts_with("column 1: `word` is Utf8 here"), "{err}");
        let renamed = RecordBatch::try_from_iter([(
            "m",
            Arc::new(Int64Array::from(vec![1])) as Arc<dyn Array>,
        )])
        .unwrap();
        let err = table
            .append(segment(&budget, &[renamed]), 3, Instant::now())
            .unwrap_err();
        assert_eq!(err, "it has 1 columns, the key has 2");
        assert_eq!(table.next_offset(), 3, "nothing was appended");
    }

    #[test]
    fn retention_trims_whole_appends_oldest_first_and_keeps_the_offsets() {
        let budget = MemoryBudget::new(None);
        let start = Instant::now();
        let mut table = CachedTable::new(segment(&budget, &[rows(0..10, &["a"])]), 1, start);
        for (i, id) in (1..5).zip(2..) {
            let at = start + Duration::from_secs(i as u64 * 10);
            let append = segment(&budget, &[rows(i * 10..i * 10 + 10, &["a"])]);
            table.append(append, id, at).unwrap();
        }
        table.set_retention(Some(Retention {
            max_rows: Some(25),
            ..Retention::default()
        }));
        let trimmed = table.trim(start + Duration::from_secs(40));
        // At least 25 rows stay, as MAXLEN ~ keeps: 30, in three whole appends.
        assert_eq!(trimmed.iter().map(|p| p.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((table.earliest_offset(), table.next_offset()), (20, 50));
        assert_eq!(table.rows(), 30);
        let table = Arc::new(table);
        assert!(matches!(
            table.messages_from(19, &budget, &test_key()),
            Err(ReadError::Trimmed {
                offset: 19,
                earliest: 20
            })
        ));
        assert_eq!(
            read_back(table.messages_from(25, &budget, &test_key()).unwrap()).0,
            (25..50).collect::<Vec<_>>()
        );

        // By bytes: each append of 10 rows holds the same bytes; a cap of two appends' worth
        // keeps at least that.
        let mut table = Arc::unwrap_or_clone(table);
        let per_append = table.segments()[0].segment.bytes();
        table.set_retention(Some(Retention {
            max_bytes: Some(2 * per_append),
            ..Retention::default()
        }));
        let trimmed = table.trim(start + Duration::from_secs(40));
        assert_eq!(trimmed.iter().map(|p| p.id).collect::<Vec<_>>(), [3]);
        assert_eq!(
            (table.earliest_offset(), table.bytes()),
            (30, 2 * per_append)
        );
        table.set_retention(Some(Retention {
            max_age_ms: Some(15_000),
            ..Retention::default()
        }));
        assert_eq!(table.age_deadline(), Some(start + Duration::from_secs(45)));
        let trimmed = table.trim(start + Duration::from_secs(54));
        assert_eq!(trimmed.iter().map(|p| p.id).collect::<Vec<_>>(), [4]);
        assert_eq!(table.earliest_offset(), 40);
        let trimmed = table.trim(start + Duration::from_secs(60));
        assert_eq!(trimmed.len(), 1, "age trims the newest too once it is old");
        assert_eq!(
            (table.earliest_offset(), table.next_offset(), table.rows()),
            (50, 50, 0)
        );
        let table = Arc::new(table);
        assert_eq!(
            read_back(table.messages_from(50, &budget, &test_key()).unwrap()).0,
            Vec::<i64>::new()
        );
    }
}
