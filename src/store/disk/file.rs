//! One table on disk: an Arrow IPC file, written from the stored messages as they are and
//! read back by mapping it.
//!
//! The file is what the Arrow columnar format calls the file format, so any Arrow library
//! reads it (`pyarrow.ipc.open_file(path).read_all()`): the magic, the table's stored messages
//! (schema, dictionaries, record batches) each framed as an encapsulated IPC message, the
//! end-of-stream marker, then the footer with the schema and the blocks of the dictionaries and
//! record batches. What flightcache knows besides the Arrow data rides in the footer's custom
//! metadata under [`FOOTER_KEY`]: the key, the deadline, every message's `app_metadata`, and a
//! CRC-32 of everything before the footer, so that a torn or corrupt file is found out.
//!
//! Reading back maps the file and slices each message's header and body out of the mapping:
//! nothing is parsed but the headers (small) and nothing is copied; the checksum is checked
//! once, before the table is first served ([`TableFile::verify`]).
//!
//! The messages are written in their stored order and read back in file order, not through
//! the footer's blocks, so a table whose dictionaries change between batches comes back as it
//! was uploaded (the file format itself cannot express a dictionary replaced mid-table: other
//! readers refuse such a file).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::datatypes::SchemaRef;
use arrow::ipc::convert::IpcSchemaEncoder;

use crate::store::upload::try_fb_to_schema;
use arrow::ipc::writer::DictionaryTracker;
use arrow::ipc::{
    Block, FooterBuilder, MessageHeader, MetadataVersion, root_as_footer, root_as_message,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use serde::{Deserialize, Serialize};

use crate::protocol::key::TableKey;
use crate::protocol::stream::Retention;
use crate::store::budget::MemoryBudget;
use crate::store::table::{CachedTable, Segment, StoredMessage, TableCounts};

/// The magic that starts and ends an Arrow IPC file.
const MAGIC: &[u8; 6] = b"ARROW1";
/// The IPC continuation marker that starts an encapsulated message.
const CONTINUATION: [u8; 4] = [0xFF; 4];
/// The footer's custom metadata key under which flightcache keeps its own [`FileMeta`].
pub const FOOTER_KEY: &str = "flightcache";
/// The footer's custom metadata key of the CRC-32 of [`FOOTER_KEY`]'s value (the CRC of the
/// data covers everything before the footer; this one, what flightcache reads from it).
pub const FOOTER_CRC_KEY: &str = "flightcache.crc32";
/// The version of [`FileMeta`] this build writes and reads.
const FORMAT_VERSION: u32 = 1;

/// What flightcache keeps in a table file beside the Arrow data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The table's key.
    pub key: String,
    /// When the key expires; `None`: never. A sidecar file written later (`expire`,
    /// `persist`, a renewal) takes precedence.
    pub expiry: Option<PersistedExpiry>,
    /// Every message's `app_metadata` (base64), in order, the schema's first.
    pub app_metadata: Vec<String>,
    /// Rows in all record batches.
    pub rows: u64,
    /// CRC-32 (IEEE) of the file's bytes before the footer.
    pub crc32: u32,
    /// How many bytes the CRC covers: where the footer starts.
    pub checked_len: u64,
    /// Where this file's rows sit in its key's table (absent in a file of a plain put written
    /// before keys could grow: a table of its own, from row 0).
    #[serde(default, flatten)]
    pub place: SegmentPlace,
}

/// Where a segment's file sits in its key's table: which table (the id of the put or append
/// that created it), the offset of its first row, when it was added, and the key's retention
/// when it was written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPlace {
    /// The id of the table's first segment; `None`: this file's own (it created the table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_id: Option<u64>,
    /// The offset of its first row.
    #[serde(default)]
    pub first_offset: u64,
    /// When it was added, in milliseconds since the Unix epoch (what age retention counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_unix_ms: Option<u64>,
    /// The key's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

impl SegmentPlace {
    /// The place of a put's table, stored now: a table of its own, from row 0.
    pub fn put_now() -> Self {
        Self {
            added_unix_ms: Some(super::unix_ms(std::time::SystemTime::now())),
            ..Self::default()
        }
    }
}

/// A time to live as it is kept on disk: on the wall clock, which survives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedExpiry {
    /// When the key expires, in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    /// The time to live it was given, in milliseconds (a renewal extends it by this).
    pub ttl_ms: u64,
}

/// A writer that counts and checksums what passes through it.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    written: u64,
}

impl<W: Write> Checksummed<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad_to_8(&mut self) -> io::Result<()> {
        let padding = (self.written.next_multiple_of(8) - self.written) as usize;
        self.put(&[0; 8][..padding])
    }
}

/// Write `segment` of `key`, placed as `place` says and expiring as `expiry` says, as an
/// Arrow IPC file to `out`. With `table`, the table it belongs to, the file carries the
/// table's schema (an append's own may differ in metadata), so that a restart serves the key
/// with its first upload's schema even once that upload was trimmed.
///
/// # Errors
/// The writer's errors; `InvalidData` for a stored message whose header does not parse
/// (cannot happen for a validated segment).
pub fn write_table(
    out: impl Write,
    key: &TableKey,
    segment: &Segment,
    table: Option<&CachedTable>,
    expiry: Option<PersistedExpiry>,
    place: SegmentPlace,
) -> io::Result<()> {
    let mut writer = TableFileWriter::new(out)?;
    let (schema, messages) = match (table, segment.messages().split_first()) {
        (Some(table), Some((_, rest))) => (table.schema(), (table.schema_message(), rest)),
        (_, Some((first, rest))) => (segment.schema(), (first, rest)),
        (_, None) => return Err(invalid("a segment without its schema message")),
    };
    writer.push(messages.0)?;
    for message in messages.1 {
        writer.push(message)?;
    }
    writer.finish(key, schema, expiry, place)?;
    Ok(())
}

/// An Arrow IPC file written a message at a time, as a table's messages are stored: the file
/// of an upload can be written while the upload arrives.
pub struct TableFileWriter<W: Write> {
    out: Checksummed<W>,
    dictionaries: Vec<Block>,
    batches: Vec<Block>,
    app_metadata: Vec<String>,
    version: MetadataVersion,
    rows: u64,
    schema_header: Option<Bytes>,
}

impl<W: Write> TableFileWriter<W> {
    /// Start the file: its magic.
    ///
    /// # Errors
    /// The writer's errors.
    pub fn new(out: W) -> io::Result<Self> {
        let mut out = Checksummed {
            inner: out,
            hasher: crc32fast::Hasher::new(),
            written: 0,
        };
        out.put(MAGIC)?;
        out.put(&[0, 0])?;
        Ok(Self {
            out,
            dictionaries: Vec::new(),
            batches: Vec::new(),
            app_metadata: Vec::new(),
            version: MetadataVersion::V5,
            rows: 0,
            schema_header: None,
        })
    }

    /// Write the table's next stored message.
    ///
    /// # Errors
    /// The writer's errors; `InvalidData` for a header that does not parse.
    pub fn push(&mut self, message: &StoredMessage) -> io::Result<()> {
        let out = &mut self.out;
        let offset = out.written;
        let padded_header = message.header.len().next_multiple_of(8);
        out.put(&CONTINUATION)?;
        out.put(&i32::try_from(padded_header).map_err(invalid)?.to_le_bytes())?;
        out.put(&message.header)?;
        out.pad_to_8()?;
        for segment in &message.body {
            out.put(segment)?;
        }
        let body_len = message.body_len();
        out.pad_to_8()?;
        let header = root_as_message(&message.header).map_err(invalid)?;
        let block = Block::new(
            i64::try_from(offset).map_err(invalid)?,
            i32::try_from(8 + padded_header).map_err(invalid)?,
            i64::try_from(body_len).map_err(invalid)?,
        );
        match header.header_type() {
            MessageHeader::DictionaryBatch => self.dictionaries.push(block),
            MessageHeader::RecordBatch => {
                self.batches.push(block);
                let length = header.header_as_record_batch().map_or(0, |b| b.length());
                self.rows += u64::try_from(length).unwrap_or(0);
            }
            // The footer says the version the messages were written in.
            MessageHeader::Schema => {
                self.version = header.version();
                self.schema_header = Some(message.header.clone());
            }
            _ => {}
        }
        self.app_metadata.push(BASE64.encode(&message.app_metadata));
        Ok(())
    }

    /// End the file: the end-of-stream marker, the footer for `key`'s table of `schema`
    /// expiring as `expiry` says, and the closing magic; the writer, flushed.
    ///
    /// # Errors
    /// The writer's errors.
    pub fn finish(
        mut self,
        key: &TableKey,
        schema: &SchemaRef,
        expiry: Option<PersistedExpiry>,
        place: SegmentPlace,
    ) -> io::Result<W> {
        let out = &mut self.out;
        out.put(&CONTINUATION)?;
        out.put(&0_i32.to_le_bytes())?;
        let meta = FileMeta {
            version: FORMAT_VERSION,
            key: key.as_str().to_string(),
            expiry,
            app_metadata: std::mem::take(&mut self.app_metadata),
            rows: self.rows,
            crc32: out.hasher.clone().finalize(),
            checked_len: out.written,
            place,
        };
        let footer = footer(
            schema,
            self.version,
            &self.dictionaries,
            &self.batches,
            &meta,
        )?;
        if let Some(schema_header) = &self.schema_header {
            warn_if_dictionary_ids_differ(key, schema_header, &footer);
        }
        out.put(&footer)?;
        out.put(&i32::try_from(footer.len()).map_err(invalid)?.to_le_bytes())?;
        out.put(MAGIC)?;
        out.inner.flush()?;
        Ok(self.out.inner)
    }
}

/// The footer flatbuffer: the schema, the blocks, and `meta` as custom metadata.
fn footer(
    schema: &SchemaRef,
    version: MetadataVersion,
    dictionaries: &[Block],
    batches: &[Block],
    meta: &FileMeta,
) -> io::Result<Vec<u8>> {
    let mut fbb = FlatBufferBuilder::new();
    let dictionaries = fbb.create_vector(dictionaries);
    let batches = fbb.create_vector(batches);
    let mut tracker = DictionaryTracker::new(false);
    let schema = IpcSchemaEncoder::new()
        .with_dictionary_tracker(&mut tracker)
        .schema_to_fb_offset(&mut fbb, schema);
    let meta = serde_json::to_string(meta).map_err(invalid)?;
    let meta_crc = crc32fast::hash(meta.as_bytes()).to_string();
    let custom = std::collections::HashMap::from([
        (FOOTER_KEY.to_owned(), meta),
        (FOOTER_CRC_KEY.to_owned(), meta_crc),
    ]);
    let custom = arrow::ipc::convert::metadata_to_fb(&mut fbb, &custom);
    let mut builder = FooterBuilder::new(&mut fbb);
    builder.add_version(version);
    builder.add_schema(schema);
    builder.add_dictionaries(dictionaries);
    builder.add_recordBatches(batches);
    builder.add_custom_metadata(custom);
    let root = builder.finish();
    fbb.finish(root, None);
    Ok(fbb.finished_data().to_vec())
}

/// The footer's schema numbers dictionaries as Arrow's Rust writer does; the stored messages
/// keep the uploader's ids. They agree for tables from pyarrow and arrow-rs; where they do not
/// (another writer's own numbering), flightcache still restores the table from its messages,
/// but other readers may refuse the file: say so.
fn warn_if_dictionary_ids_differ(key: &TableKey, schema_header: &[u8], footer: &[u8]) {
    let stored = root_as_message(schema_header)
        .ok()
        .and_then(|message| message.header_as_schema())
        .map(|schema| dictionary_ids(schema.fields()));
    let written = root_as_footer(footer)
        .ok()
        .and_then(|footer| footer.schema())
        .map(|schema| dictionary_ids(schema.fields()));
    if stored != written {
        tracing::warn!(
            key = key.as_str(),
            ?stored,
            ?written,
            "the table's dictionary ids differ from its file footer's: flightcache restores it, \
             but other Arrow readers may refuse its file"
        );
    }
}

/// The dictionary ids of `fields` and their children, depth first.
fn dictionary_ids(
    fields: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<arrow::ipc::Field<'_>>>>,
) -> Vec<i64> {
    let mut ids = Vec::new();
    for field in fields.into_iter().flatten() {
        if let Some(dictionary) = field.dictionary() {
            ids.push(dictionary.id());
        }
        ids.extend(dictionary_ids(field.children()));
    }
    ids
}

fn invalid(err: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.to_string())
}

/// A table file mapped into memory, whose bytes the restored table's messages point into.
#[derive(Debug)]
pub struct TableFile {
    /// Where it was found (moved to quarantine if it turns out corrupt).
    pub path: PathBuf,
    mapped: Bytes,
    meta: FileMeta,
    /// Whether the checksum matched, once checked.
    verified: OnceLock<bool>,
}

impl TableFile {
    /// Whether the file's bytes are the ones written: the CRC of everything before the footer,
    /// computed the first time it is asked (it reads the whole file) and remembered.
    pub fn verify(&self) -> bool {
        *self.verified.get_or_init(|| {
            let checked = &self.mapped[..self.meta.checked_len as usize];
            crc32fast::hash(checked) == self.meta.crc32
        })
    }

    /// What the footer says besides the Arrow data.
    pub fn meta(&self) -> &FileMeta {
        &self.meta
    }

    /// The file's size in bytes.
    pub fn len(&self) -> u64 {
        self.mapped.len() as u64
    }
}

/// Why a file in the data directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BadFile {
    /// It could not be opened or mapped.
    #[error("cannot read it: {0}")]
    Io(#[from] io::Error),
    /// It is not an Arrow IPC file written by flightcache, or not a whole one.
    #[error("{0}")]
    Format(String),
}

fn bad(problem: impl Into<String>) -> BadFile {
    BadFile::Format(problem.into())
}

/// Map the table file at `path` and rebuild its table, its messages pointing into the mapping.
///
/// Only the footer and the schema message are read: each message's place comes from the
/// footer's blocks, so a restart touches a few pages per table however large it is. What the
/// footer says is checked (its own CRC, the blocks inside the data, in order, one per message
/// listed); the data itself is checked by its CRC before it is first served
/// ([`TableFile::verify`]).
///
/// # Errors
/// [`BadFile`] for a file that is truncated, corrupt or not one of flightcache's.
pub fn read_table(
    path: &Path,
    budget: &Arc<MemoryBudget>,
) -> Result<(Segment, Arc<TableFile>), BadFile> {
    let file = std::fs::File::open(path)?;
    #[allow(unsafe_code)]
    // SAFETY: the data directory is the server's own (mode 0700, locked against a second
    // server), and restore maps only regular files (not symlinks); its table files are written
    // once under a temporary name and never modified after they are renamed into place, only
    // unlinked, which leaves a mapping intact.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let mapped = Bytes::from_owner(map);
    let len = mapped.len();
    if len < 8 + 4 + 6 || &mapped[..6] != MAGIC || &mapped[len - 6..] != MAGIC {
        return Err(bad("not an Arrow IPC file (no ARROW1 magic at both ends)"));
    }
    let footer_len = i32::from_le_bytes(mapped[len - 10..len - 6].try_into().expect("4 bytes"));
    let footer_start = usize::try_from(footer_len)
        .ok()
        .and_then(|footer_len| (len - 10).checked_sub(footer_len))
        .filter(|&start| start >= 8)
        .ok_or_else(|| bad("its footer length runs past the start of the file"))?;
    let footer = root_as_footer(&mapped[footer_start..len - 10])
        .map_err(|err| bad(format!("its footer is not valid: {err}")))?;
    let custom = |wanted: &str| {
        footer
            .custom_metadata()
            .into_iter()
            .flatten()
            .find(|entry| entry.key() == Some(wanted))
            .and_then(|entry| entry.value())
    };
    let meta = custom(FOOTER_KEY)
        .ok_or_else(|| bad("its footer has no flightcache metadata: not written by flightcache"))?;
    let meta_crc = custom(FOOTER_CRC_KEY).and_then(|crc| crc.parse::<u32>().ok());
    if meta_crc != Some(crc32fast::hash(meta.as_bytes())) {
        return Err(bad("its flightcache metadata does not match its checksum"));
    }
    let meta: FileMeta = serde_json::from_str(meta)
        .map_err(|err| bad(format!("its flightcache metadata does not parse: {err}")))?;
    if meta.version != FORMAT_VERSION {
        return Err(bad(format!(
            "format version {} is not {FORMAT_VERSION}",
            meta.version
        )));
    }
    if meta.checked_len as usize != footer_start {
        return Err(bad("its checksum does not cover the data up to its footer"));
    }

    // The schema message comes first.
    let frame = &mapped[8..16];
    let schema_len = i32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
    let schema_end = usize::try_from(schema_len)
        .ok()
        .filter(|_| frame[..4] == CONTINUATION)
        .map(|schema_len| 16 + schema_len)
        .filter(|&end| end <= footer_start)
        .ok_or_else(|| bad("it does not start with a schema message"))?;
    let schema_header = mapped.slice(16..schema_end);
    let message = root_as_message(&schema_header)
        .map_err(|err| bad(format!("its schema message is not valid: {err}")))?;
    let fb_schema = message
        .header_as_schema()
        .ok_or_else(|| bad("its first message is not a schema"))?;
    let schema = try_fb_to_schema(fb_schema)
        .map_err(|err| bad(format!("its schema does not decode: {err}")))?;
    if message.bodyLength() != 0 {
        return Err(bad("its schema message has a body"));
    }

    // Then the dictionaries and record batches, in file order (the order they were put in).
    let mut blocks: Vec<(Block, bool)> = Vec::new();
    blocks.extend(
        footer
            .dictionaries()
            .into_iter()
            .flatten()
            .map(|b| (*b, false)),
    );
    blocks.extend(
        footer
            .recordBatches()
            .into_iter()
            .flatten()
            .map(|b| (*b, true)),
    );
    blocks.sort_by_key(|(block, _)| block.offset());
    if blocks.len() + 1 != meta.app_metadata.len() {
        return Err(bad(
            "its footer lists another number of messages than its metadata",
        ));
    }
    let mut app_metadata = meta.app_metadata.iter().map(|tag| {
        BASE64
            .decode(tag)
            .map(Bytes::from)
            .map_err(|err| bad(format!("an app_metadata is not base64: {err}")))
    });
    let mut messages = Vec::with_capacity(blocks.len() + 1);
    messages.push(StoredMessage {
        header: schema_header.clone(),
        app_metadata: app_metadata.next().expect("counted")?,
        body: Vec::new(),
    });
    let mut counts = TableCounts {
        rows: meta.rows,
        bytes: 0,
        batches: 0,
    };
    let mut at = schema_end;
    for (block, is_batch) in blocks {
        let place = |value: i64| usize::try_from(value).ok();
        let (Some(offset), Some(meta_len), Some(body_len)) = (
            place(block.offset()),
            usize::try_from(block.metaDataLength()).ok(),
            place(block.bodyLength()),
        ) else {
            return Err(bad("a block of its footer has a negative offset or length"));
        };
        let header_start = offset + 8;
        let body_start = offset + meta_len;
        let body_end = body_start
            .checked_add(body_len)
            .filter(|&end| offset >= at && offset % 8 == 0 && meta_len > 8 && end <= footer_start)
            .ok_or_else(|| bad(format!("the block at byte {offset} lies outside its data")))?;
        // Its bytes are not read here (that would read the file: a page per message); the CRC
        // checks them before they are first served.
        counts.bytes += body_len as u64;
        counts.batches += u64::from(is_batch);
        messages.push(StoredMessage {
            header: mapped.slice(header_start..body_start),
            app_metadata: app_metadata.next().expect("counted")?,
            body: if body_len == 0 {
                Vec::new()
            } else {
                vec![mapped.slice(body_start..body_end)]
            },
        });
        at = body_end;
    }
    // The headers and bodies stay in the mapping; the list of messages and their app_metadata
    // are on the heap. A budget too small even for that does not lose the table: it is served,
    // and the process's measured memory counts it.
    let listed = messages.len() * std::mem::size_of::<StoredMessage>()
        + messages.iter().map(|m| m.app_metadata.len()).sum::<usize>();
    let charge = budget
        .charge(listed, None)
        .unwrap_or_else(|_| budget.empty_charge(None));
    // Kept for the key, deadline and checksums; the app_metadata lives in the messages now.
    drop(app_metadata);
    let meta = FileMeta {
        app_metadata: Vec::new(),
        ..meta
    };
    let file = Arc::new(TableFile {
        path: path.to_path_buf(),
        mapped,
        meta,
        verified: OnceLock::new(),
    });
    let table = Segment::from_file(
        Arc::new(schema),
        messages,
        charge,
        counts,
        Arc::clone(&file),
    );
    Ok((table, file))
}
