//! The data directory (`serve --data-dir`): every table on disk as well as in memory, so that a
//! restart loses nothing acknowledged.
//!
//! Each table is one Arrow IPC file ([`file`]), named by a digest of its key and the id of the
//! put that stored it: `tables/<sha256(key)>-<id>.arrow`. No key, whatever its bytes, can name
//! a path outside the directory or another key's file. A later `expire`, `persist` or renewal
//! writes the key's new deadline beside it (`<sha256(key)>-<id>.ttl`, JSON). Every file is
//! written under `tmp/`, synced, then renamed into `tables/`, and the directory is synced: a
//! file in `tables/` is whole or absent, never torn. A put's file replaces the key's older
//! ones once it is in place; a drop, clear, expiry or eviction removes the key's files.
//!
//! Two durability modes ([`Durability`]): `always` acknowledges a put once its file is in
//! place and synced (a crash or a power cut loses no acknowledged put); `background`, the
//! default, acknowledges it at once and writes its file behind it (a crash or a power cut
//! loses the puts whose files were still queued: the key comes back as its last written
//! version). A key is on disk at its current version or not at all: a file that cannot be
//! written (a full disk) fails the put in `always`; in `background` the table stays in memory
//! only, its older files removed, counted in `stats`.
//!
//! At startup ([`DataDir::open`]) the directory is locked (a second server refuses to start,
//! naming the first's PID), and every table file is mapped and served from the mapping: the
//! page cache holds it, nothing is copied into table memory, so the first get is answered
//! as soon as the headers are read. Keys whose deadline passed while the server was down are
//! removed. A file that is truncated, corrupt or not flightcache's is moved to `quarantine/`
//! with one warning; its checksum is checked before it is first served, and by a background
//! pass over every restored table.

pub mod direct;
pub mod file;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::protocol::actions::StoreStats;
use crate::protocol::key::TableKey;
use crate::protocol::stream::Retention;
use crate::store::table::schema_difference;
use crate::store::table::{CachedTable, Segment, StoredMessage};
use crate::store::{AppendAt, AppendRefused, Appended, Expiry, OnRemove, StoredTable, TableStore};
use file::{PersistedExpiry, SegmentPlace};

/// When a put is acknowledged, against when its file is on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Once its file is written, synced and in place (Redis' `appendfsync always`): a crash
    /// or a power cut loses no acknowledged put; a put is as fast as the disk.
    Always,
    /// At once; the file is written and synced behind it, in put order: a put is as fast as
    /// in memory; a crash (kill -9) or a power cut loses the puts whose files were still
    /// queued, and a power cut also the drops of the last moment (the directory is synced
    /// behind them too).
    #[default]
    Background,
}

/// What came back from disk at startup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Tables served again.
    pub tables: u64,
    /// Their Arrow bytes.
    pub bytes: u64,
    /// Keys whose deadline passed while the server was down: removed.
    pub expired: u64,
    /// Files moved to `quarantine/`.
    pub quarantined: u64,
}

/// The data directory's counters, for `stats` and the metrics page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Tables whose file is in place.
    pub tables: u64,
    /// The size of those files.
    pub bytes: u64,
    /// Files still to be written (`background`): tables, and new deadlines.
    pub queued: u64,
    /// Files that could not be written since the server started: those tables are in memory
    /// only (`background`), or their puts failed (`always`).
    pub write_failures: u64,
}

/// A key's files: by put id, the data file's size (`None`: only a `.ttl` file so far).
type Versions = BTreeMap<u64, Option<u64>>;

/// Work for the background writer.
enum Job {
    /// Write the file of `key`'s put `id`, unless it was replaced or removed meanwhile.
    Table { key: TableKey, id: u64 },
    /// Write `key`'s current deadline beside its file.
    Expiry { key: TableKey },
}

/// What the writer of a [`FileInProgress`] is sent.
enum Piece {
    /// The table's next stored message.
    Message(StoredMessage),
    /// The upload ended cleanly: write the footer and sync.
    End {
        key: TableKey,
        schema: arrow::datatypes::SchemaRef,
        expiry: Option<PersistedExpiry>,
    },
}

/// A table's file being written under `tmp/` while its upload arrives (`--durability always`).
/// Dropped unfinished (the upload failed), its file is removed.
#[derive(Debug)]
pub struct FileInProgress {
    key: TableKey,
    temp: PathBuf,
    pieces: tokio::sync::mpsc::Sender<Piece>,
    writing: tokio::task::JoinHandle<io::Result<()>>,
    /// How many of the upload's messages were sent.
    sent: usize,
    /// Whether its file was finished and handed on.
    finished: bool,
}

impl Drop for FileInProgress {
    fn drop(&mut self) {
        if !self.finished {
            // The writer may still hold it open; its writes go nowhere once it is unlinked.
            fs::remove_file(&self.temp).ok();
        }
    }
}

impl FileInProgress {
    /// Write the messages of `kept` not written yet (`kept` is what the upload has kept so
    /// far); waits while the disk is behind.
    ///
    /// # Errors
    /// [`Error::DiskFull`] or [`Error::DiskWrite`] if the file cannot be written.
    pub async fn write(&mut self, kept: &[StoredMessage], dir: &DataDir) -> Result<()> {
        for message in &kept[self.sent..] {
            if self
                .pieces
                .send(Piece::Message(message.clone()))
                .await
                .is_err()
            {
                return Err(self.failure(dir).await);
            }
        }
        self.sent = kept.len();
        Ok(())
    }

    /// The error the writer stopped with.
    async fn failure(&mut self, dir: &DataDir) -> Error {
        let err = match (&mut self.writing).await {
            Ok(Err(err)) => err,
            Ok(Ok(())) => io::Error::other("the file was finished early"),
            Err(join) => io::Error::other(join.to_string()),
        };
        dir.write_failed(&self.key, &err)
    }

    /// Finish the file of the table of `schema`: footer, sync; its temporary path.
    async fn finish(
        mut self,
        schema: &arrow::datatypes::SchemaRef,
        expiry: Option<PersistedExpiry>,
    ) -> Result<PathBuf> {
        let end = Piece::End {
            key: self.key.clone(),
            schema: Arc::clone(schema),
            expiry,
        };
        let sent = self.pieces.send(end).await.is_ok();
        let written = (&mut self.writing).await;
        match (sent, written) {
            (true, Ok(Ok(()))) => {
                self.finished = true;
                Ok(self.temp.clone())
            }
            (_, Ok(Err(err))) => Err(io_failure(&self.key, &err)),
            (_, Ok(Ok(()))) => Err(io_failure(
                &self.key,
                &io::Error::other("the file was not finished"),
            )),
            (_, Err(join)) => Err(Error::TaskFailed {
                task: "data directory write",
                source: join,
            }),
        }
    }
}

/// The error of a put whose file could not be written.
fn io_failure(key: &TableKey, err: &io::Error) -> Error {
    if is_disk_full(err) {
        Error::DiskFull { key: key.clone() }
    } else {
        Error::DiskWrite {
            key: key.clone(),
            source: io::Error::new(err.kind(), err.to_string()),
        }
    }
}

/// An open, locked data directory, and the writer that keeps it up to date.
#[derive(Debug)]
pub struct DataDir {
    tables: PathBuf,
    tmp: PathBuf,
    quarantine: PathBuf,
    durability: Durability,
    store: TableStore,
    /// Files in `tables/`, by key digest. Held while a file is renamed into place or removed,
    /// and across the check that its put is still the key's current one.
    files: Mutex<HashMap<String, Versions>>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    queued: AtomicU64,
    write_failures: AtomicU64,
    next_temp: AtomicU64,
    report: RestoreReport,
    /// Turns of `always` appends, by a stripe of their key: one at a time per key.
    append_turns: [tokio::sync::Mutex<()>; APPEND_STRIPES],
    /// Held (with an exclusive lock) while the server runs.
    _lock: File,
}

/// How many times an `always` append is written again for a key that keeps moving under it
/// (replaced again and again while its file is written) before it gives up.
const MAX_APPEND_TRIES: u32 = 8;

/// How many stripes of keys `always` appends take turns by.
const APPEND_STRIPES: usize = 64;

/// The stripe of `key` among [`APPEND_STRIPES`].
fn stripe_of(key: &TableKey) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % APPEND_STRIPES as u64) as usize
}

impl DataDir {
    /// Open (creating it if need be, readable by this user only) and lock the data directory
    /// at `root`, serve every table it holds from `store`, and start writing new puts to it.
    ///
    /// # Errors
    /// [`Error::DataDir`] if it cannot be created, read or locked, or another server holds it.
    pub fn open(root: &Path, durability: Durability, store: &TableStore) -> Result<Arc<Self>> {
        let problem = |problem: String| Error::DataDir {
            path: root.to_path_buf(),
            problem,
        };
        let io_problem = |what: &str, err: io::Error| problem(format!("{what}: {err}"));
        create_private_dir(root).map_err(|err| io_problem("cannot create it", err))?;
        warn_if_shared(root);
        let lock = lock(root)?;
        let tables = root.join("tables");
        let tmp = root.join("tmp");
        let quarantine = root.join("quarantine");
        for dir in [&tables, &tmp, &quarantine] {
            create_private_dir(dir).map_err(|err| io_problem("cannot create its folders", err))?;
        }
        // Files a crash left half written.
        for entry in fs::read_dir(&tmp).map_err(|err| io_problem("cannot read tmp/", err))? {
            let entry = entry.map_err(|err| io_problem("cannot read tmp/", err))?;
            fs::remove_file(entry.path()).ok();
        }
        let mut dir = Self {
            tables,
            tmp,
            quarantine,
            durability,
            store: store.clone(),
            files: Mutex::default(),
            jobs: Mutex::default(),
            writer: Mutex::default(),
            queued: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            next_temp: AtomicU64::new(0),
            report: RestoreReport::default(),
            append_turns: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            _lock: lock,
        };
        dir.report = dir
            .restore()
            .map_err(|err| io_problem("cannot read tables/", err))?;
        let dir = Arc::new(dir);
        let weak: std::sync::Weak<dyn OnRemove> = Arc::downgrade(&dir) as _;
        store.set_on_remove(weak);
        if durability == Durability::Background {
            store.keep_appends_apart();
        }
        let (jobs, queue) = mpsc::channel();
        *dir.jobs.lock().unwrap_or_else(PoisonError::into_inner) = Some(jobs);
        // The writer holds the directory weakly: dropping the last `Arc` (a server that never
        // served) drops the queue's sender, which ends the writer.
        let writer = Arc::downgrade(&dir);
        let handle = std::thread::Builder::new()
            .name("flightcache-disk".into())
            .spawn(move || write_behind(&writer, &queue))
            .map_err(|err| io_problem("cannot start its writer", err))?;
        *dir.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        if dir.report.tables > 0 {
            let verifier = Arc::downgrade(&dir);
            std::thread::Builder::new()
                .name("flightcache-verify".into())
                .spawn(move || verify_restored(&verifier))
                .map_err(|err| io_problem("cannot start its checker", err))?;
        }
        Ok(dir)
    }

    /// What came back from disk when it was opened.
    pub fn report(&self) -> RestoreReport {
        self.report
    }

    /// Under [`Durability::Always`], start writing `key`'s next table's file while its upload
    /// arrives, so that the put is answered about when its last byte is on disk rather than
    /// after a second pass; `None` under [`Durability::Background`].
    pub fn stream_file(self: &Arc<Self>, key: &TableKey) -> Option<FileInProgress> {
        if self.durability != Durability::Always {
            return None;
        }
        let temp = self.temp_path();
        // Created here, so that an upload that fails at once finds it to remove.
        let created = direct::create(&temp);
        let (pieces, mut arriving) = tokio::sync::mpsc::channel::<Piece>(16);
        let path = temp.clone();
        let writing = tokio::task::spawn_blocking(move || {
            let written = (|| {
                let mut writer = file::TableFileWriter::new(created?)?;
                while let Some(piece) = arriving.blocking_recv() {
                    match piece {
                        Piece::Message(message) => writer.push(&message)?,
                        Piece::End {
                            key,
                            schema,
                            expiry,
                        } => {
                            writer
                                .finish(&key, &schema, expiry, SegmentPlace::put_now())?
                                .finish()?;
                            return Ok(());
                        }
                    }
                }
                Err(io::Error::other("the upload ended without a table"))
            })();
            if written.is_err() {
                fs::remove_file(&path).ok();
            }
            written
        });
        Some(FileInProgress {
            key: key.clone(),
            temp,
            pieces,
            writing,
            sent: 0,
            finished: false,
        })
    }

    /// Store `table` under `key` with `expiry`, in memory and on disk as [`Durability`] says;
    /// returns the table it replaced. Under [`Durability::Always`], `file` is its file written
    /// while it arrived ([`stream_file`](Self::stream_file)), if it was.
    ///
    /// # Errors
    /// Under [`Durability::Always`], [`Error::DiskFull`] or [`Error::DiskWrite`] if its file
    /// could not be written: then nothing was stored and the key's old table stays.
    pub async fn publish(
        self: &Arc<Self>,
        key: TableKey,
        table: Arc<Segment>,
        expiry: Option<Expiry>,
        file: Option<FileInProgress>,
    ) -> Result<Option<Arc<CachedTable>>> {
        if let (Durability::Always, Some(file)) = (self.durability, file) {
            let persisted = expiry.map(|expiry| self.persisted(expiry));
            let temp = file
                .finish(table.schema(), persisted)
                .await
                .inspect_err(|_| {
                    self.write_failures.fetch_add(1, Ordering::Relaxed);
                })?;
            let dir = Arc::clone(self);
            return tokio::task::spawn_blocking(move || dir.commit_now(key, table, expiry, &temp))
                .await
                .map_err(|source| Error::TaskFailed {
                    task: "data directory write",
                    source,
                })?;
        }
        match self.durability {
            Durability::Background => {
                let (old, id) = self.store.insert_with_expiry(key.clone(), table, expiry);
                self.enqueue(Job::Table { key, id });
                Ok(old)
            }
            Durability::Always => {
                let dir = Arc::clone(self);
                let persisted = expiry.map(|expiry| self.persisted(expiry));
                let written = tokio::task::spawn_blocking(move || {
                    let place = SegmentPlace::put_now();
                    let temp = dir.write_temp(&key, &table, None, persisted, place);
                    (dir, key, table, temp)
                })
                .await
                .map_err(|err| Error::TaskFailed {
                    task: "data directory write",
                    source: err,
                })?;
                let (dir, key, table, temp) = written;
                let temp = temp.map_err(|err| dir.write_failed(&key, &err))?;
                tokio::task::spawn_blocking(move || dir.commit_now(key, table, expiry, &temp))
                    .await
                    .map_err(|err| Error::TaskFailed {
                        task: "data directory write",
                        source: err,
                    })?
            }
        }
    }

    /// Write `key`'s current deadline beside its file (after `expire`, `persist` or a
    /// renewal): at once under `always`, behind the answer under `background`.
    pub fn expiry_changed(&self, key: &TableKey) {
        match self.durability {
            Durability::Background => self.enqueue(Job::Expiry { key: key.clone() }),
            Durability::Always => {
                if let Err(err) = self.write_expiry(key) {
                    tracing::warn!(key = key.as_str(), error = %err, "cannot write a deadline to the data directory");
                }
            }
        }
    }

    /// Check a table that came back from disk before it is first served (its checksum, once);
    /// a corrupt one is moved to quarantine and removed.
    ///
    /// # Errors
    /// [`Error::CorruptTable`] for a corrupt one.
    pub async fn check(self: &Arc<Self>, key: &TableKey, stored: &StoredTable) -> Result<()> {
        if !stored.table.has_mapped_segments() {
            return Ok(());
        }
        let table = Arc::clone(&stored.table);
        let corrupt = tokio::task::spawn_blocking(move || first_corrupt_segment(&table))
            .await
            .map_err(|source| Error::TaskFailed {
                task: "table file check",
                source,
            })?;
        let Some(id) = corrupt else {
            return Ok(());
        };
        self.quarantine_version(key, stored.id, id, "its checksum does not match");
        Err(Error::CorruptTable { key: key.clone() })
    }

    /// Fill in the data directory's part of `stats`.
    pub fn add_to(&self, stats: &mut StoreStats) {
        let disk = self.stats();
        stats.disk_tables = disk.tables;
        stats.disk_bytes = disk.bytes;
        stats.disk_queued = disk.queued;
        stats.disk_write_failures = disk.write_failures;
    }

    /// The counters for `stats`.
    pub fn stats(&self) -> DiskStats {
        let files = self.lock_files();
        let (mut tables, mut bytes) = (0, 0);
        for versions in files.values() {
            let mut sizes = versions.values().flatten().peekable();
            tables += u64::from(sizes.peek().is_some());
            bytes += sizes.sum::<u64>();
        }
        DiskStats {
            tables,
            bytes,
            queued: self.queued.load(Ordering::Relaxed),
            write_failures: self.write_failures.load(Ordering::Relaxed),
        }
    }

    /// Write every queued file, then stop the writer: what a clean stop does before the
    /// process exits, so that it loses nothing in either mode.
    pub fn finish(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            writer.join().ok();
        }
    }

    fn enqueue(&self, job: Job) {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            // A put that finished after the clean stop began: it is not written.
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.write_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "a put finished after the server began to stop: its file is not written"
            );
        }
    }

    fn run_job(&self, job: Job) {
        match job {
            Job::Table { key, id } => self.write_queued(&key, id),
            Job::Expiry { key } => {
                if let Err(err) = self.write_expiry(&key) {
                    tracing::warn!(key = key.as_str(), error = %err, "cannot write a deadline to the data directory");
                }
            }
        }
        self.queued.fetch_sub(1, Ordering::Relaxed);
    }

    /// Write the file of `key`'s put `id` if it is still the key's table, and put it in place
    /// unless it was replaced or removed while it was written.
    fn write_queued(&self, key: &TableKey, id: u64) {
        if let Err(err) = self.write_segment(key, id) {
            self.write_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                key = key.as_str(),
                error = %err,
                "cannot write a table to the data directory: it is kept in memory only"
            );
        }
    }

    /// Write the file of segment `id` of `key`'s table (its put's or an append's), synced and
    /// in place, unless it was replaced, trimmed or removed meanwhile; then remove the files
    /// of the key's older tables.
    ///
    /// # Errors
    /// The file system's: the segment is then in memory only, and the key's files that
    /// would serve an older version are removed.
    fn write_segment(&self, key: &TableKey, id: u64) -> io::Result<()> {
        let still_there = |stored: &StoredTable| stored.table.segment_with_id(id).is_some();
        let Some(stored) = self.store.peek(key).filter(still_there) else {
            return Ok(()); // replaced, trimmed or removed: nothing of it is due
        };
        let table_id = stored.id;
        let persisted = stored.expiry.map(|expiry| self.persisted(expiry));
        let placed = Arc::clone(stored.table.segment_with_id(id).expect("checked above"));
        let place = SegmentPlace {
            table_id: (table_id != id).then_some(table_id),
            first_offset: placed.first_offset,
            added_unix_ms: Some(unix_ms(
                SystemTime::now() - self.store.clock().now().duration_since(placed.added_at),
            )),
            retention: stored.table.retention(),
        };
        let written = self.write_temp(key, &placed.segment, Some(&stored.table), persisted, place);
        drop((stored, placed));
        let mut files = self.lock_files();
        if self
            .store
            .peek(key)
            .is_none_or(|stored| stored.id != table_id || !still_there(&stored))
        {
            if let Ok(temp) = written {
                fs::remove_file(temp).ok();
            }
            return Ok(());
        }
        let placed = written.and_then(|temp| {
            self.rename_into_place(key, id, &temp).inspect_err(|_| {
                fs::remove_file(&temp).ok();
            })
        });
        let result = match placed {
            Ok(size) => {
                self.forget_older(&mut files, key, table_id, id, Some(size));
                Ok(())
            }
            Err(err) => {
                self.forget_older(&mut files, key, table_id, id, None);
                Err(err)
            }
        };
        drop(files);
        self.sync_dir();
        result
    }

    /// Append `segment` to `key`'s table as [`TableStore::append`] does, with its own file:
    /// under `always` the file is written, synced and in place for the offset it will take
    /// before the append is stored and acknowledged (appends to one key take turns, so that
    /// an acknowledged append's earlier rows are on disk too); under `background` it is
    /// stored at once and its file written behind it.
    ///
    /// # Errors
    /// [`AppendRefused`] as the store refuses; under `always` a file that cannot be written
    /// is [`Error::DiskFull`] or [`Error::DiskWrite`], and nothing is stored.
    pub async fn append(
        self: &Arc<Self>,
        key: &TableKey,
        segment: Arc<Segment>,
        ttl: Option<Duration>,
        retention: Option<Retention>,
    ) -> Result<Result<Appended, AppendRefused>> {
        let appended = match self.durability {
            Durability::Background => {
                let appended = match self.store.append(key, segment, ttl, retention, None) {
                    Ok(appended) => appended,
                    Err(refused) => return Ok(Err(refused)),
                };
                self.enqueue(Job::Table {
                    key: key.clone(),
                    id: appended.id,
                });
                appended
            }
            Durability::Always => {
                let _turn = self.append_turns[stripe_of(key)].lock().await;
                // The key moves under an append only if it is replaced, dropped or expires
                // while the append's file is written: try again for where it is then.
                let mut tries = 0;
                let appended = loop {
                    tries += 1;
                    match self.append_durably(key, &segment, ttl, retention).await? {
                        Err(AppendRefused::Moved) if tries < MAX_APPEND_TRIES => continue,
                        other => break other,
                    }
                };
                match appended {
                    Ok(appended) => appended,
                    Err(refused) => return Ok(Err(refused)),
                }
            }
        };
        if ttl.is_some() || retention.is_some() {
            // A sidecar written earlier must not bring back the old deadline or retention.
            self.expiry_changed(key);
        }
        Ok(Ok(appended))
    }

    /// One try of an `always` append: its file written for where the key stands now and put
    /// in place, then the append stored there; [`AppendRefused::Moved`] (its file removed)
    /// if the key moved meanwhile (replaced, dropped, expired).
    async fn append_durably(
        self: &Arc<Self>,
        key: &TableKey,
        segment: &Arc<Segment>,
        ttl: Option<Duration>,
        retention: Option<Retention>,
    ) -> Result<Result<Appended, AppendRefused>> {
        let stored = self.store.peek(key);
        if let Some(stored) = &stored
            && let Some(difference) = schema_difference(stored.table.schema(), segment.schema())
        {
            return Ok(Err(AppendRefused::SchemaDiffers(difference)));
        }
        let table_id = stored.as_ref().map(|stored| stored.id);
        let first_offset = stored
            .as_ref()
            .map_or(0, |stored| stored.table.next_offset());
        let expiry = match ttl {
            Some(ttl) => Expiry::after(self.store.clock().now(), ttl),
            None => stored.as_ref().and_then(|stored| stored.expiry),
        };
        let place = SegmentPlace {
            table_id,
            first_offset,
            added_unix_ms: Some(unix_ms(SystemTime::now())),
            retention: retention.or(stored.as_ref().and_then(|stored| stored.table.retention())),
        };
        let table = stored.map(|stored| stored.table);
        let id = self.store.reserve_id();
        let persisted = expiry.map(|expiry| self.persisted(expiry));
        let (dir, owned, written) = (Arc::clone(self), key.clone(), Arc::clone(segment));
        let expected = table_id.map(|table_id| (table_id, first_offset));
        let placed = tokio::task::spawn_blocking(move || {
            let temp = dir.write_temp(&owned, &written, table.as_deref(), persisted, place)?;
            let mut files = dir.lock_files();
            // In place only while the key is where the file says (checked under `files`, as
            // a put's file is placed): a put that replaced the key meanwhile has a table id
            // below this file's, and a restart must not prefer this unacknowledged file to it.
            let now = dir
                .store
                .peek(&owned)
                .map(|stored| (stored.id, stored.table.next_offset()));
            if now != expected {
                fs::remove_file(&temp).ok();
                return Ok(false);
            }
            let size = dir.rename_into_place(&owned, id, &temp).inspect_err(|_| {
                fs::remove_file(&temp).ok();
            })?;
            // Recorded; an append that makes the key takes the files of a table that
            // expired unswept with it.
            dir.forget_older(&mut files, &owned, table_id.unwrap_or(id), id, Some(size));
            drop(files);
            dir.sync_dir();
            Ok::<_, io::Error>(true)
        })
        .await
        .map_err(|source| Error::TaskFailed {
            task: "data directory write",
            source,
        })?;
        if !placed.map_err(|err| self.write_failed(key, &err))? {
            return Ok(Err(AppendRefused::Moved));
        }
        let at = AppendAt {
            id,
            table_id,
            first_offset,
        };
        let appended = self
            .store
            .append(key, Arc::clone(segment), ttl, retention, Some(at));
        if appended.is_err() {
            // Moved after all: its file goes.
            let digest = key_digest(key);
            let mut files = self.lock_files();
            self.remove_files(&digest, id);
            if let Some(versions) = files.get_mut(&digest) {
                versions.remove(&id);
                if versions.is_empty() {
                    files.remove(&digest);
                }
            }
            drop(files);
            self.sync_dir();
        }
        Ok(appended)
    }

    fn commit_now(
        &self,
        key: TableKey,
        table: Arc<Segment>,
        expiry: Option<Expiry>,
        temp: &Path,
    ) -> Result<Option<Arc<CachedTable>>> {
        let old = {
            let mut files = self.lock_files();
            // The file is in place before the table is published: if the rename fails, the
            // key keeps its old table, in memory and on disk.
            let id = self.store.reserve_id();
            let size = self.rename_into_place(&key, id, temp).map_err(|err| {
                fs::remove_file(temp).ok();
                self.write_failed(&key, &err)
            })?;
            let old = self.store.insert_at(key.clone(), table, expiry, id);
            self.forget_older(&mut files, &key, id, id, Some(size));
            old
        };
        self.sync_dir();
        Ok(old)
    }

    /// Count and classify a failed write of `key`'s file.
    fn write_failed(&self, key: &TableKey, err: &io::Error) -> Error {
        self.write_failures.fetch_add(1, Ordering::Relaxed);
        io_failure(key, err)
    }

    /// Write `segment`'s file under `tmp/` (with `table`'s schema, for an append), synced.
    fn write_temp(
        &self,
        key: &TableKey,
        segment: &Segment,
        table: Option<&CachedTable>,
        expiry: Option<PersistedExpiry>,
        place: SegmentPlace,
    ) -> io::Result<PathBuf> {
        let temp = self.temp_path();
        let written = (|| {
            let mut out = direct::create(&temp)?;
            file::write_table(&mut out, key, segment, table, expiry, place)?;
            out.finish()
        })();
        match written {
            Ok(()) => Ok(temp),
            Err(err) => {
                fs::remove_file(&temp).ok();
                Err(err)
            }
        }
    }

    /// Rename the written file `temp` into place as `key`'s put `id`; its size. The caller
    /// holds `files`, then [forgets](Self::forget_older) the key's older files and syncs the
    /// directory.
    fn rename_into_place(&self, key: &TableKey, id: u64, temp: &Path) -> io::Result<u64> {
        let size = fs::metadata(temp)?.len();
        let name = format!("{}-{id:020}.arrow", key_digest(key));
        fs::rename(temp, self.tables.join(name))?;
        Ok(size)
    }

    /// Record the file of segment `id` of `key`'s table `table_id` (of `size`, if it was
    /// written), and remove the files of the key's older tables. A segment that could not be
    /// written takes the key's other files with it: a key is on disk whole or not at all.
    fn forget_older(
        &self,
        files: &mut MutexGuard<'_, HashMap<String, Versions>>,
        key: &TableKey,
        table_id: u64,
        id: u64,
        size: Option<u64>,
    ) {
        let digest = key_digest(key);
        let versions = files.entry(digest.clone()).or_default();
        let gone: Vec<u64> = match size {
            Some(_) => versions.range(..table_id).map(|(&v, _)| v).collect(),
            None => versions.keys().copied().collect(),
        };
        for version in gone {
            self.remove_files(&digest, version);
            versions.remove(&version);
        }
        if let Some(size) = size {
            versions.insert(id, Some(size));
        }
        if versions.is_empty() {
            files.remove(&digest);
        }
    }

    /// Write `key`'s current deadline beside its current put's file. Read and written under
    /// `files`, so that of two changes at once the later one's deadline is the one on disk.
    fn write_expiry(&self, key: &TableKey) -> io::Result<()> {
        let mut files = self.lock_files();
        let Some(stored) = self.store.peek(key) else {
            // Gone from memory: dropped (its files went with it), or expired before its
            // deadline could be written (a loaded machine), whose files would otherwise come
            // back after a restart, deadline and all forgotten, until the sweeper removed them.
            // Under the files' lock no put of the key can be between its file and its table.
            let digest = key_digest(key);
            if let Some(versions) = files.remove(&digest) {
                for &version in versions.keys() {
                    self.remove_files(&digest, version);
                }
                drop(files);
                self.sync_dir();
            }
            return Ok(());
        };
        let sidecar = Sidecar {
            expiry: stored.expiry.map(|expiry| self.persisted(expiry)),
            retention: stored.table.retention(),
        };
        let temp = self.temp_path();
        let written = (|| -> io::Result<()> {
            let mut out = create_private_file(&temp)?;
            out.write_all(&serde_json::to_vec(&sidecar).map_err(io::Error::other)?)?;
            out.sync_all()?;
            let digest = key_digest(key);
            fs::rename(
                &temp,
                self.tables.join(format!("{digest}-{:020}.ttl", stored.id)),
            )?;
            files
                .entry(digest)
                .or_default()
                .entry(stored.id)
                .or_insert(None);
            Ok(())
        })();
        if written.is_err() {
            fs::remove_file(&temp).ok();
        }
        drop(files);
        written?;
        self.sync_dir();
        Ok(())
    }

    /// Move the file of segment `id` of `key`'s table `table_id` to quarantine and stop
    /// serving the table.
    fn quarantine_version(&self, key: &TableKey, table_id: u64, id: u64, why: &str) {
        let digest = key_digest(key);
        let name = format!("{digest}-{id:020}.arrow");
        {
            let mut files = self.lock_files();
            let moved = fs::rename(self.tables.join(&name), self.quarantine.join(&name));
            self.remove_files(&digest, id);
            if let Some(versions) = files.get_mut(&digest) {
                versions.remove(&id);
            }
            tracing::warn!(
                key = key.as_str(),
                file = %self.tables.join(&name).display(),
                moved = moved.is_ok(),
                "a table file is corrupt ({why}): moved to quarantine, not served"
            );
        }
        self.store.remove_version(key, table_id);
    }

    /// Remove the data and deadline files of `digest`'s put `id`, if there are any.
    fn remove_files(&self, digest: &str, id: u64) {
        for extension in ["arrow", "ttl"] {
            self.remove_file(digest, id, extension);
        }
    }

    /// Remove the `extension` file of version `id` of the key of `digest`, if it is there.
    fn remove_file(&self, digest: &str, id: u64, extension: &str) {
        let path = self.tables.join(format!("{digest}-{id:020}.{extension}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "cannot remove a file of the data directory")
            }
        }
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("{}-{n}.tmp", std::process::id()))
    }

    /// Make the renames and removals in `tables/` durable.
    fn sync_dir(&self) {
        if let Err(err) = File::open(&self.tables).and_then(|dir| dir.sync_all()) {
            tracing::warn!(error = %err, "cannot sync the data directory");
        }
    }

    /// `expiry` on the wall clock, as it survives a restart.
    fn persisted(&self, expiry: Expiry) -> PersistedExpiry {
        let left = expiry.remaining(self.store.clock().now());
        PersistedExpiry {
            deadline_unix_ms: unix_ms(SystemTime::now() + left),
            ttl_ms: u64::try_from(expiry.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn lock_files(&self) -> MutexGuard<'_, HashMap<String, Versions>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serve every table in `tables/`: for each key, its newest file, if it reads back (never
    /// an older one: a key comes back at its last written version or not at all); older files
    /// and leftovers go, bad ones and anything that is not a regular file to quarantine.
    fn restore(&self) -> io::Result<RestoreReport> {
        let mut report = RestoreReport::default();
        let mut found: HashMap<String, BTreeMap<u64, (bool, bool)>> = HashMap::new();
        for entry in fs::read_dir(&self.tables)? {
            let entry = entry?;
            let name = entry.file_name();
            let regular = entry.file_type().is_ok_and(|kind| kind.is_file());
            let parsed = name.to_str().and_then(parse_file_name).filter(|_| regular);
            match parsed {
                Some((digest, id, is_data)) => {
                    let files = found.entry(digest).or_default().entry(id).or_default();
                    if is_data {
                        files.0 = true;
                    } else {
                        files.1 = true;
                    }
                }
                None => {
                    let why = if regular {
                        "its name is not one flightcache gives"
                    } else {
                        "it is not a regular file"
                    };
                    self.move_aside(&entry.path(), why);
                    report.quarantined += 1;
                }
            }
        }
        let now = unix_ms(SystemTime::now());
        let mut max_id = 0;
        for (digest, versions) in found {
            max_id = max_id.max(versions.keys().copied().max().unwrap_or(0));
            // Every data file that reads back, with the table it belongs to.
            let mut readable = Vec::new();
            let mut unreadable = None;
            for (&id, &(has_data, _)) in &versions {
                if !has_data {
                    continue;
                }
                let path = self.tables.join(format!("{digest}-{id:020}.arrow"));
                match file::read_table(&path, self.store.budget()) {
                    Ok((segment, file)) if key_digest_str(&file.meta().key) == digest => {
                        let table_id = file.meta().place.table_id.unwrap_or(id);
                        readable.push((id, table_id, segment, file));
                    }
                    Ok(_) => {
                        self.move_aside(&path, "its key does not match its name");
                        self.remove_files(&digest, id);
                        report.quarantined += 1;
                        unreadable = Some(id);
                    }
                    Err(err) => {
                        self.move_aside(&path, &err.to_string());
                        self.remove_files(&digest, id);
                        report.quarantined += 1;
                        unreadable = Some(id);
                    }
                }
            }
            // The newest table's segments are served; older tables' files were superseded. A
            // file newer than that table that does not read back may have superseded it: the
            // key is then not served at all, rather than as an older version.
            let newest = readable.iter().map(|(_, table_id, ..)| *table_id).max();
            // Newer than every readable file of that table, it may be a newer put's; older, it
            // was one of its appends (the rows before it are not served, see below) or an
            // older table's.
            let newest_file = readable
                .iter()
                .filter(|(_, table_id, ..)| Some(*table_id) == newest)
                .map(|(id, ..)| *id)
                .max();
            let newest = newest.filter(|_| unreadable.is_none_or(|bad| Some(bad) < newest_file));
            let mut segments = Vec::new();
            for (id, table_id, segment, file) in readable {
                if Some(table_id) == newest {
                    segments.push((id, segment, file));
                } else {
                    self.remove_files(&digest, id);
                }
            }
            for &id in versions.keys() {
                let kept = segments.iter().any(|(segment_id, ..)| *segment_id == id);
                if !kept && Some(id) != newest {
                    self.remove_files(&digest, id);
                }
            }
            let Some(table_id) = newest else {
                continue;
            };
            let segments = self.contiguous_tail(&digest, segments);
            let Some((_, _, newest_file)) = segments.last() else {
                continue;
            };
            let newest_meta = newest_file.meta().clone();
            let newest_path = newest_file.path.clone();
            let sidecar = read_sidecar(&self.tables.join(format!("{digest}-{table_id:020}.ttl")));
            let (expiry, retention) = match sidecar {
                Some(sidecar) => (sidecar.expiry, sidecar.retention),
                None => (newest_meta.expiry, newest_meta.place.retention),
            };
            let remove_all = |dir: &Self, segments: &[(u64, Segment, Arc<file::TableFile>)]| {
                for (id, ..) in segments {
                    dir.remove_files(&digest, *id);
                }
                dir.remove_files(&digest, table_id);
            };
            if expiry.is_some_and(|expiry| expiry.deadline_unix_ms <= now) {
                remove_all(self, &segments);
                report.expired += 1;
                continue;
            }
            let Ok(key) = TableKey::try_new(newest_meta.key.as_str()) else {
                self.move_aside(&newest_path, "its key is not a valid key");
                remove_all(self, &segments);
                report.quarantined += 1;
                continue;
            };
            let expiry = expiry.and_then(|expiry| {
                let left = Duration::from_millis(expiry.deadline_unix_ms.saturating_sub(now));
                let ttl = Duration::from_millis(expiry.ttl_ms);
                Expiry::after(self.store.clock().now(), left).map(|at| Expiry { ttl, ..at })
            });
            let clock_now = self.store.clock().now();
            let mut files = self.lock_files();
            let versions = files.entry(digest.clone()).or_default();
            // The table's own id names its `.ttl`, if it has one (a missing file is no
            // matter to `remove_files`).
            versions.entry(table_id).or_insert(None);
            let placed: Vec<_> = segments
                .into_iter()
                .map(|(id, segment, file)| {
                    versions.insert(id, Some(file.len()));
                    let place = file.meta().place;
                    // Its age goes on from when it was added, not from the restart.
                    let age = place.added_unix_ms.map_or(Duration::ZERO, |added| {
                        Duration::from_millis(now.saturating_sub(added))
                    });
                    let added_at = clock_now.checked_sub(age).unwrap_or(clock_now);
                    (Arc::new(segment), place.first_offset, id, added_at)
                })
                .collect();
            drop(files);
            let Some(table) = CachedTable::restored(placed, retention) else {
                continue;
            };
            report.tables += 1;
            report.bytes += table.bytes();
            self.store.restore(key, table, expiry, table_id);
        }
        self.store.ids_after(max_id);
        Ok(report)
    }

    /// The segments of one table (`(id, segment, file)`, any order) that can be served: ordered
    /// by offset, then id (as they were stored: segments of no rows share an offset), and only
    /// the run after the last gap (a segment whose file was never written, under `background`,
    /// or could not be), whose offsets then start later, as if trimmed. The files before a gap
    /// are removed.
    #[allow(clippy::type_complexity)]
    fn contiguous_tail(
        &self,
        digest: &str,
        mut segments: Vec<(u64, Segment, Arc<file::TableFile>)>,
    ) -> Vec<(u64, Segment, Arc<file::TableFile>)> {
        segments.sort_by_key(|(id, _, file)| (file.meta().place.first_offset, *id));
        let mut start = 0;
        for at in 1..segments.len() {
            let (_, before, before_file) = &segments[at - 1];
            let expected = before_file.meta().place.first_offset + before.rows();
            if segments[at].2.meta().place.first_offset != expected {
                start = at;
            }
        }
        if start > 0 {
            tracing::warn!(
                key = segments[start].2.meta().key.as_str(),
                first_kept = segments[start].2.meta().place.first_offset,
                "a table in the data directory misses the file of an append: its rows before \
                 the gap are not served"
            );
        }
        // Their data files only: the table's `.ttl`, named by its put's id, is the table's,
        // which keeps its later segments.
        for (id, ..) in segments.drain(..start) {
            self.remove_file(digest, id, "arrow");
        }
        segments
    }

    /// Move a file found in `tables/` to quarantine, with one warning.
    fn move_aside(&self, path: &Path, why: &str) {
        let Some(name) = path.file_name() else {
            return;
        };
        let moved = fs::rename(path, self.quarantine.join(name));
        tracing::warn!(
            file = %path.display(),
            moved = moved.is_ok(),
            "a file in the data directory cannot be served ({why}): moved to quarantine/"
        );
    }
}

impl OnRemove for DataDir {
    /// Segments retention trimmed: their data files go (the table's own id also names its
    /// `.ttl`, which stays).
    fn trimmed(&self, key: &TableKey, table_id: u64, ids: &[u64]) {
        let digest = key_digest(key);
        let mut files = self.lock_files();
        let Some(versions) = files.get_mut(&digest) else {
            return;
        };
        for id in ids {
            if versions.get(id).is_some_and(Option::is_some) {
                self.remove_file(&digest, *id, "arrow");
                if *id == table_id {
                    versions.insert(*id, None);
                } else {
                    versions.remove(id);
                }
            }
        }
    }

    /// A dropped, cleared, expired or evicted table: its files go (and any older ones).
    fn removed(&self, key: &TableKey, id: u64) {
        let digest = key_digest(key);
        {
            let mut files = self.lock_files();
            let Some(versions) = files.get_mut(&digest) else {
                return;
            };
            let gone: Vec<u64> = versions.range(..=id).map(|(&v, _)| v).collect();
            for version in gone {
                self.remove_files(&digest, version);
                versions.remove(&version);
            }
            if versions.is_empty() {
                files.remove(&digest);
            }
        }
        if self.durability == Durability::Always {
            self.sync_dir();
        }
    }
}

/// The background writer: run each queued job, in order, until the queue closes (the clean
/// stop, or the directory dropped).
fn write_behind(dir: &std::sync::Weak<DataDir>, queue: &mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        let Some(dir) = dir.upgrade() else {
            return;
        };
        dir.run_job(job);
    }
}

/// Check every restored table's checksum in the background, quarantining corrupt ones, until
/// done or the data directory is gone.
fn verify_restored(dir: &std::sync::Weak<DataDir>) {
    let Some(keys) = dir.upgrade().map(|dir| dir.store.list("")) else {
        return;
    };
    for (key, stored) in keys {
        let Some(dir) = dir.upgrade() else {
            return;
        };
        if let Some(id) = first_corrupt_segment(&stored.table) {
            dir.quarantine_version(&key, stored.id, id, "its checksum does not match");
        }
    }
}

/// The id of the first segment of `table` mapped from a file whose checksum does not match
/// (each file is read once: [`TableFile::verify`](file::TableFile::verify) remembers).
fn first_corrupt_segment(table: &CachedTable) -> Option<u64> {
    table
        .segments()
        .iter()
        .find(|placed| placed.segment.file().is_some_and(|file| !file.verify()))
        .map(|placed| placed.id)
}

/// A key's new deadline, written beside its file.
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    expiry: Option<PersistedExpiry>,
    /// The key's retention (absent in sidecars written before keys could grow: uncapped).
    #[serde(default)]
    retention: Option<Retention>,
}

/// Whether table `id` of the key of `digest` has a `.ttl` file in `tables`.
fn read_sidecar(path: &Path) -> Option<Sidecar> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// The name part of `key`'s files: its SHA-256 in hex.
pub fn key_digest(key: &TableKey) -> String {
    key_digest_str(key.as_str())
}

fn key_digest_str(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `<64 hex digits>-<20 digits>.arrow|.ttl`: the digest, the id, and whether it is a data file.
fn parse_file_name(name: &str) -> Option<(String, u64, bool)> {
    let (stem, is_data) = match name.strip_suffix(".arrow") {
        Some(stem) => (stem, true),
        None => (name.strip_suffix(".ttl")?, false),
    };
    let (digest, id) = stem.split_once('-')?;
    let valid = digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let id = (valid && id.len() == 20)
        .then(|| id.parse().ok())
        .flatten()?;
    Some((digest.to_string(), id, is_data))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || err.raw_os_error() == Some(27) // EFBIG: over the file size limit
}

/// Lock `root` for this process: `root/LOCK` holds an exclusive lock and this process's PID.
fn lock(root: &Path) -> Result<File> {
    let path = root.join("LOCK");
    let problem = |problem: String| Error::DataDir {
        path: root.to_path_buf(),
        problem,
    };
    let mut file = open_private(&path, false)
        .map_err(|err| problem(format!("cannot open {}: {err}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            file.read_to_string(&mut pid).ok();
            return Err(problem(format!(
                "another flightcache server (PID {}) is using it; stop that server, or give this \
                 one another --data-dir",
                pid.trim()
            )));
        }
        Err(fs::TryLockError::Error(err)) => {
            return Err(problem(format!("cannot lock {}: {err}", path.display())));
        }
    }
    file.set_len(0)
        .and_then(|()| {
            use std::io::Seek as _;
            file.seek(io::SeekFrom::Start(0))?;
            write!(file, "{}", std::process::id())?;
            file.sync_all()
        })
        .map_err(|err| problem(format!("cannot write {}: {err}", path.display())))?;
    Ok(file)
}

/// Create `path` (and its parents) readable by this user only, if it does not exist; an
/// existing directory keeps its permissions. Syncs the new entry into its parent.
fn create_private_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Warn if others than this user may read or enter `path`.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                dir = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "other users may read the data directory's tables; chmod 700 it"
            );
        }
    }
}

fn create_private_file(path: &Path) -> io::Result<File> {
    open_private(path, true)
}

fn open_private(path: &Path, truncate: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::Eviction;
    use crate::store::budget::MemoryBudget;
    use crate::store::table::tests::{rows, segment};

    /// An expiry whose deadline passed before its `.ttl` file could be written (a loaded
    /// machine): the key's file must not come back after a restart without its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_key_that_expired_before_its_deadline_was_written_does_not_come_back() {
        let root = tempfile::tempdir().unwrap();
        let key = TableKey::try_new("brief").unwrap();
        {
            let clock = Clock::default();
            let budget = MemoryBudget::new(None);
            let store = TableStore::new(budget, Eviction::Lru, Duration::ZERO, clock.clone());
            let dir = DataDir::open(root.path(), Durability::Always, &store).unwrap();
            let table = segment(store.budget(), &[rows(0..10, &["a"])]);
            dir.publish(key.clone(), table, None, None).await.unwrap();
            store.expire(&key, Duration::from_millis(50)).unwrap();
            // The store's clock passes the deadline; its sweeper, on tokio's, has not run.
            clock.advance(Duration::from_millis(100));
            dir.expiry_changed(&key);
        }
        let store = TableStore::new(
            MemoryBudget::new(None),
            Eviction::Lru,
            Duration::ZERO,
            Clock::default(),
        );
        let dir = DataDir::open(root.path(), Durability::Always, &store).unwrap();
        assert_eq!(dir.report().tables, 0, "{:?}", dir.report());
        assert!(store.peek(&key).is_none());
    }

    #[test]
    fn file_names_come_from_digests_and_parse_back() {
        for key in [
            "a",
            "../../etc/passwd",
            "/abs",
            "a/b/../c",
            "\u{1F600}",
            &"k".repeat(4096),
        ] {
            let digest = key_digest(&TableKey::try_new(key).unwrap());
            assert_eq!(digest.len(), 64);
            assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
            let name = format!("{digest}-{:020}.arrow", 42);
            assert_eq!(parse_file_name(&name), Some((digest.clone(), 42, true)));
        }
        assert_ne!(
            key_digest(&TableKey::try_new("a").unwrap()),
            key_digest(&TableKey::try_new("b").unwrap())
        );
        for foreign in [
            "x.arrow",
            "LOCK",
            "a-1.arrow",
            &format!("{}-1.arrow", "0".repeat(64)),
        ] {
            assert_eq!(parse_file_name(foreign), None, "{foreign}");
        }
    }
}
