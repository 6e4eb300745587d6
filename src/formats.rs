//! Table files (Parquet, Arrow IPC, CSV) as streams of record batches, read and written one
//! batch at a time on blocking threads, so memory stays bounded by a few batches however large
//! the file is.

use std::fs::File;
use std::io::{BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchReader};
use futures::{Stream, StreamExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// Rows CSV schema inference looks at.
const CSV_INFER_ROWS: usize = 1000;
/// Rows per batch read from CSV.
const CSV_BATCH_ROWS: usize = 65_536;
/// Target size of a batch read from Parquet; rows per batch follow from the file's row width.
const PARQUET_BATCH_TARGET_BYTES: usize = 2 << 20;
/// A Parquet row group is written out once the writer buffers this much, so memory while
/// writing stays bounded whatever the row width (Parquet's default of 1M rows is 512 MiB at 64
/// float64 columns).
const PARQUET_ROW_GROUP_BYTES: usize = 64 << 20;
/// Largest dictionary a Parquet column chunk builds before falling back to plain encoding.
/// Low-cardinality columns still get dictionaries; high-cardinality ones (random floats) give
/// up early instead of hashing a whole row group, and 64 columns' dictionaries stay small.
const PARQUET_DICTIONARY_PAGE_BYTES: usize = 256 << 10;
/// Batches buffered between a file thread and the network: enough to keep both busy.
const PIPELINE_BATCHES: usize = 4;

/// A file format flightcache reads and writes, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `.parquet`, `.pq`
    Parquet,
    /// `.arrow`, `.feather`, `.ipc` (IPC file format; IPC streams are read too), `.arrows`
    ArrowIpc,
    /// `.csv`, with a header row
    Csv,
}

impl FileFormat {
    /// The format a path's extension names.
    ///
    /// # Errors
    /// [`Error::UnknownFileFormat`] for an unknown or missing extension.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "parquet" | "pq" => Ok(FileFormat::Parquet),
            "arrow" | "feather" | "ipc" | "arrows" => Ok(FileFormat::ArrowIpc),
            "csv" => Ok(FileFormat::Csv),
            _ => Err(Error::UnknownFileFormat {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// A table file opened for reading: its schema, what is known of its size, and its batches.
pub struct TableSource {
    schema: SchemaRef,
    rows: Option<u64>,
    bytes_hint: Option<u64>,
    reader: Box<dyn RecordBatchReader + Send>,
}

impl TableSource {
    /// Open `path`, choosing the reader by extension.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened; [`Error::Parquet`] or [`Error::Arrow`] if
    /// its contents cannot be read.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)?;
        match FileFormat::from_path(path)? {
            FileFormat::Parquet => Self::open_parquet(file),
            FileFormat::ArrowIpc => Self::open_ipc(file),
            FileFormat::Csv => Self::open_csv(file),
        }
    }

    fn open_parquet(file: File) -> Result<Self> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
        let metadata = builder.metadata();
        let rows = metadata.file_metadata().num_rows().max(0) as u64;
        let bytes: i64 = metadata
            .row_groups()
            .iter()
            .map(|rg| rg.total_byte_size())
            .sum();
        let bytes = bytes.max(0) as u64;
        let row_bytes = (bytes / rows.max(1)).max(1) as usize;
        let batch_rows = (PARQUET_BATCH_TARGET_BYTES / row_bytes).clamp(1024, 1 << 20);
        let reader = builder.with_batch_size(batch_rows).build()?;
        Ok(Self {
            schema: reader.schema(),
            rows: Some(rows),
            bytes_hint: Some(bytes),
            reader: Box::new(reader),
        })
    }

    fn open_ipc(mut file: File) -> Result<Self> {
        let bytes_hint = file.metadata().ok().map(|m| m.len());
        let reader: Box<dyn RecordBatchReader + Send> =
            match arrow::ipc::reader::FileReader::try_new(file.try_clone()?, None) {
                Ok(reader) => Box::new(reader),
                Err(_) => {
                    // Not the IPC file format: read it as an IPC stream.
                    file.rewind()?;
                    Box::new(arrow::ipc::reader::StreamReader::try_new(
                        std::io::BufReader::new(file),
                        None,
                    )?)
                }
            };
        Ok(Self {
            schema: reader.schema(),
            rows: None,
            bytes_hint,
            reader,
        })
    }

    fn open_csv(mut file: File) -> Result<Self> {
        let bytes_hint = file.metadata().ok().map(|m| m.len());
        let format = arrow::csv::reader::Format::default().with_header(true);
        let (schema, _) = format.infer_schema(&mut file, Some(CSV_INFER_ROWS))?;
        file.rewind()?;
        let schema = Arc::new(schema);
        let reader = arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
            .with_format(format)
            .with_batch_size(CSV_BATCH_ROWS)
            .build(file)?;
        Ok(Self {
            schema,
            rows: None,
            bytes_hint,
            reader: Box::new(reader),
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The number of rows, where the format records it (Parquet).
    pub fn rows(&self) -> Option<u64> {
        self.rows
    }

    /// Roughly how many Arrow bytes the table has (Parquet's uncompressed size, or the file
    /// size), for progress bars.
    pub fn bytes_hint(&self) -> Option<u64> {
        self.bytes_hint
    }

    /// The batches as an async stream, decoded on a blocking thread a few batches ahead.
    ///
    /// Must be called within a tokio runtime.
    pub fn into_stream(self) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel(PIPELINE_BATCHES);
        let reader = self.reader;
        tokio::task::spawn_blocking(move || {
            for batch in reader {
                let failed = batch.is_err();
                if tx.blocking_send(batch.map_err(Error::from)).is_err() || failed {
                    break;
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
    }
}

/// A table file being written, a batch at a time.
///
/// It is written to a temporary file beside its path and renamed into place by
/// [`finish`](Self::finish): a failed or interrupted write leaves no half-written file, and an
/// existing file at the path stays as it was.
pub struct TableSink {
    writer: SinkWriter,
    path: PathBuf,
}

/// The file being written: a temporary file beside the final path, buffered.
type PendingFile = BufWriter<NamedTempFile>;

enum SinkWriter {
    Parquet(ArrowWriter<PendingFile>),
    Ipc(arrow::ipc::writer::FileWriter<PendingFile>),
    Csv(arrow::csv::Writer<PendingFile>),
}

impl TableSink {
    /// Start writing `path` for a table of `schema`, choosing the writer by extension.
    ///
    /// # Errors
    /// [`Error::Io`] if no file can be created beside `path`; [`Error::Parquet`] or
    /// [`Error::Arrow`] if the format cannot hold the schema.
    pub fn create(path: &Path, schema: &SchemaRef) -> Result<Self> {
        let format = FileFormat::from_path(path)?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut temp = tempfile::Builder::new();
        temp.prefix(".flightcache-").suffix(".partial");
        // A temporary file is private (0600) by default; the result should get the usual
        // permissions of a new file (0644 less the umask).
        #[cfg(unix)]
        temp.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let file = BufWriter::with_capacity(1 << 20, temp.tempfile_in(dir)?);
        let writer = match format {
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_dictionary_page_size_limit(PARQUET_DICTIONARY_PAGE_BYTES)
                    .build();
                SinkWriter::Parquet(ArrowWriter::try_new(file, Arc::clone(schema), Some(props))?)
            }
            FileFormat::ArrowIpc => {
                SinkWriter::Ipc(arrow::ipc::writer::FileWriter::try_new(file, schema)?)
            }
            FileFormat::Csv => SinkWriter::Csv(arrow::csv::Writer::new(file)),
        };
        Ok(Self {
            writer,
            path: path.to_path_buf(),
        })
    }

    /// Append one batch.
    ///
    /// # Errors
    /// [`Error::Parquet`], [`Error::Arrow`] or [`Error::Io`] if it cannot be written.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &mut self.writer {
            SinkWriter::Parquet(w) => {
                w.write(batch)?;
                if w.in_progress_size() >= PARQUET_ROW_GROUP_BYTES {
                    w.flush()?;
                }
            }
            SinkWriter::Ipc(w) => w.write(batch)?,
            SinkWriter::Csv(w) => w.write(batch)?,
        }
        Ok(())
    }

    /// Write the footer, flush, and move the file into place.
    ///
    /// # Errors
    /// As [`write`](Self::write); [`Error::Io`] if the file cannot be renamed to its path.
    pub fn finish(self) -> Result<()> {
        let file = match self.writer {
            SinkWriter::Parquet(w) => w.into_inner()?,
            SinkWriter::Ipc(mut w) => {
                w.finish()?;
                w.into_inner()?
            }
            SinkWriter::Csv(w) => w.into_inner(),
        };
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Write every batch of `batches` to `path` on a blocking thread, a few batches behind the
    /// stream, and finish the file. `on_batch` is called for each batch as it is received.
    ///
    /// # Errors
    /// The first error of the stream or of the writer; nothing is written to `path` then.
    pub async fn write_stream<S>(
        path: &Path,
        schema: &SchemaRef,
        mut batches: S,
        mut on_batch: impl FnMut(&RecordBatch),
    ) -> Result<()>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin,
    {
        let mut sink = Self::create(path, schema)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<RecordBatch>(PIPELINE_BATCHES);
        let writer = tokio::task::spawn_blocking(move || -> Result<()> {
            while let Some(batch) = rx.blocking_recv() {
                sink.write(&batch)?;
            }
            sink.finish()
        });
        let mut stream_result = Ok(());
        while let Some(batch) = batches.next().await {
            match batch {
                Ok(batch) => {
                    on_batch(&batch);
                    if tx.send(batch).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    stream_result = Err(e);
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|source| Error::TaskFailed {
            task: "file writer",
            source,
        })?;
        stream_result.and(written)
    }
}
