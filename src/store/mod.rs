//! The cache: the key → table map ([`TableStore`]) with its LRU order and expiry deadlines, the
//! tables it holds, how an upload becomes a table, and the memory tables live in. Nothing here
//! is async but the expiry sweep, and no map guard ever leaves a method.
//!
//! - [`table`]: [`table::CachedTable`], one key's table: the segments its put and appends
//!   stored, as their validated IPC messages.
//! - [`follow`]: [`follow::Follower`], a reader that follows a key as it grows.
//! - [`decode`]: stored messages decoded into record batches in place.
//! - [`upload`]: [`upload::TableUpload`], a `do_put` validated message by message.
//! - [`validate`]: what a strict Arrow reader checks, checked before a table is stored.
//! - [`resplit`]: a giant record batch as streaming-size pieces over its own memory.
//! - [`slabs`]: table memory: bodies copied once into huge-page slabs, reused once freed.
//! - [`budget`]: the memory budget every allocation of table memory is charged to.

pub mod budget;
pub(crate) mod cut;
pub(crate) mod decode;
pub mod disk;
pub mod follow;
pub(crate) mod merge;
mod quiet_panics;
pub mod resplit;
pub mod slabs;
pub mod table;
pub mod upload;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::protocol::actions::StoreStats;
use crate::protocol::key::TableKey;
use crate::protocol::stream::{Offsets, Retention};
use budget::{MemoryBudget, Relieve};
use slabs::{OpenSlab, SLAB_BYTES, SlabPool};
use table::{CachedTable, Segment};

/// A key capped by retention shares a slab between its appends only once it holds this much
/// (four slabs): then the slab its oldest appends are trimmed from keeps at most a quarter
/// of the key's memory unfreed (see [`TableStore::keep_open_slab`]).
pub const SHARED_SLAB_MIN_RETAINED_BYTES: u64 = 4 * SLAB_BYTES as u64;

/// Whether `table`'s appends share slabs: it is uncapped, or holds at least
/// [`SHARED_SLAB_MIN_RETAINED_BYTES`].
fn shares_slabs(table: &CachedTable) -> bool {
    table.retention().is_none() || table.bytes() >= SHARED_SLAB_MIN_RETAINED_BYTES
}

/// What the cache does when an upload needs memory the budget does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eviction {
    /// Evict the least recently used tables (by their last get or put) until it fits.
    #[default]
    Lru,
    /// Evict nothing: the upload fails with RESOURCE_EXHAUSTED.
    NoEviction,
}

/// A key's time to live: it expires at `deadline`, `ttl` after it was set (or renewed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// When the key expires, on tokio's clock.
    pub deadline: Instant,
    /// The time to live it was given, by which a renewal extends it.
    pub ttl: Duration,
}

impl Expiry {
    /// Expiry `ttl` from `now`; `None` if that is past what the clock can represent.
    pub fn after(now: Instant, ttl: Duration) -> Option<Self> {
        Some(Self {
            deadline: now.checked_add(ttl)?,
            ttl,
        })
    }

    /// Time left at `now` (zero once expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }
}

/// A cached table as the store holds it: the table, and when it was last used and expires.
#[derive(Debug, Clone)]
pub struct StoredTable {
    /// The table. Holding it keeps it readable, even once it is replaced, evicted or dropped.
    pub table: Arc<CachedTable>,
    /// When it was last read by a get or written by a put.
    pub last_used: Instant,
    /// Its time to live, if it has one.
    pub expiry: Option<Expiry>,
    /// Unique to the put that created it, and larger than every earlier put's: a key
    /// replaced (or dropped and put again) has a new id, a key appended to keeps its id.
    pub id: u64,
}

/// What an [`append`](TableStore::append) stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The offset its first row took.
    pub first_offset: u64,
    /// The id of the table it went to (its own, if it made the key).
    pub table_id: u64,
    /// The append's own id (its segment's, which names its file on disk).
    pub id: u64,
}

/// Why an [`append`](TableStore::append) stored nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendRefused {
    /// Its schema is not the key's: the first difference, in words.
    SchemaDiffers(String),
    /// The key was replaced, dropped or appended to since the append's file was written for
    /// its place ([`AppendAt`]): write it again for the new place.
    Moved,
}

/// Where an append whose file was written before it is stored must go: its id, and the key's
/// table id and next offset it was written for (`table_id: None`: it creates the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAt {
    /// The append's id, from [`reserve_id`](TableStore::reserve_id).
    pub id: u64,
    /// The key's table, or `None` for a key the append creates.
    pub table_id: Option<u64>,
    /// The offset its first row takes (0 for a key it creates).
    pub first_offset: u64,
}

/// Told of every table the store removes: dropped, cleared, expired or evicted (a replaced
/// table is not: whoever replaces it knows), and of every segment retention trims. The data
/// directory removes their files.
pub trait OnRemove: Send + Sync {
    /// The table of `key` whose segments' ids are at most `last_id` was removed.
    fn removed(&self, key: &TableKey, last_id: u64);
    /// Segments `ids` of `key`'s table `table_id` were trimmed.
    fn trimmed(&self, key: &TableKey, table_id: u64, ids: &[u64]);
}

/// The cache: tables by key, their LRU order and expiry deadlines, the memory budget and pool
/// of table memory, and request counters. Clone it freely; clones share state (a cheap handle
/// over `Arc`, as mini-redis's `Db`).
///
/// Callers get an `Arc<CachedTable>` they can hold across `.await` without blocking writers:
/// holding a dashmap guard across `.await` can deadlock (xacrimon/dashmap#79).
///
/// An expired key is gone for every method from its deadline on, whether or not the sweep
/// ([`expire_periodically`](Self::expire_periodically)) has removed it yet.
#[derive(Debug, Clone)]
pub struct TableStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tables: DashMap<TableKey, Entry>,
    /// The LRU order and the deadlines. Every change to `tables` is made while holding it
    /// (taken before any map guard), so the two always agree; lookups need only the map.
    index: Mutex<Index>,
    slabs: Arc<SlabPool>,
    budget: Arc<MemoryBudget>,
    eviction: Eviction,
    /// What deadlines are measured on.
    clock: Clock,
    /// Wakes the expiry sweep when a deadline earlier than the ones it waits for is set.
    deadline_set: Notify,
    /// Told of removals, once set.
    on_remove: std::sync::OnceLock<std::sync::Weak<dyn OnRemove>>,
    /// Woken at every change to a key that followers wait on, by key.
    watchers: DashMap<TableKey, Arc<Notify>>,
    /// Set once the server stops: followers end.
    stopping: std::sync::atomic::AtomicBool,
    /// Cleared when appends must stay one segment each ([`TableStore::keep_appends_apart`]).
    merge_appends: std::sync::atomic::AtomicBool,
    /// Segments trimmed under memory pressure, and rows trimmed by retention in all.
    pressure_trims: AtomicU64,
    trimmed_rows: AtomicU64,
    puts: AtomicU64,
    gets: AtomicU64,
    errors: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// One key's table and its places in the indexes.
#[derive(Debug)]
struct Entry {
    table: Arc<CachedTable>,
    /// Unique to the put that created it: names the entry in `Index::deadlines` and
    /// `Index::trims`.
    id: u64,
    /// The id of its latest put or append (its newest segment's, or a trimmed one's).
    last_id: u64,
    /// When its oldest segment ages out, if its retention caps its age (its place in
    /// `Index::trims`).
    trim_at: Option<Instant>,
    /// Its place in `Index::lru`: the sequence number of its last use. A table that holds no
    /// table memory (one mapped from its file) is not in the LRU order: evicting it would
    /// free nothing.
    used_seq: u64,
    evictable: bool,
    last_used: Instant,
    expiry: Option<Expiry>,
    /// The unused end of the slab its last append filled, which its next append goes on
    /// filling (see [`TableStore::keep_open_slab`]).
    open_slab: Option<OpenSlab>,
    /// Whether a merge of its tiny appends is under way ([`merge`]).
    merging: bool,
}

impl Entry {
    fn is_expired(&self, now: Instant) -> bool {
        self.expiry.is_some_and(|expiry| expiry.deadline <= now)
    }

    fn stored(&self) -> StoredTable {
        StoredTable {
            table: Arc::clone(&self.table),
            last_used: self.last_used,
            expiry: self.expiry,
            id: self.id,
        }
    }
}

#[derive(Debug, Default)]
struct Index {
    /// Keys by last use, least recent first.
    lru: BTreeMap<u64, TableKey>,
    /// Keys with a time to live, by deadline (and entry id, to keep equal deadlines apart).
    deadlines: BTreeMap<(Instant, u64), TableKey>,
    /// Keys capped by age, by when their oldest segment ages out (and entry id).
    trims: BTreeMap<(Instant, u64), TableKey>,
    /// Keys with a retention, which memory pressure trims before it evicts whole keys.
    capped: std::collections::BTreeSet<TableKey>,
    next_seq: u64,
}

impl Index {
    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Forget `entry` (of `key`'s) in every index.
    fn forget(&mut self, key: &TableKey, entry: &Entry) {
        self.lru.remove(&entry.used_seq);
        if let Some(expiry) = entry.expiry {
            self.deadlines.remove(&(expiry.deadline, entry.id));
        }
        if let Some(at) = entry.trim_at {
            self.trims.remove(&(at, entry.id));
        }
        if entry.table.retention().is_some() {
            self.capped.remove(key);
        }
    }

    /// Give `entry` (of `key`'s) the time to live `expiry` (or none), in the deadline order too.
    fn set_expiry(&mut self, key: &TableKey, entry: &mut Entry, expiry: Option<Expiry>) {
        if let Some(old) = entry.expiry {
            self.deadlines.remove(&(old.deadline, entry.id));
        }
        if let Some(expiry) = expiry {
            self.deadlines
                .insert((expiry.deadline, entry.id), key.clone());
        }
        entry.expiry = expiry;
    }

    /// Make `entry` (of `key`'s) the most recently used, if it is in the LRU order.
    fn touch(&mut self, key: &TableKey, entry: &mut Entry) {
        if entry.evictable {
            self.lru.remove(&entry.used_seq);
            entry.used_seq = self.next_seq();
            self.lru.insert(entry.used_seq, key.clone());
        }
    }

    /// Place `entry` (of `key`'s, whose table just changed) in the retention indexes again.
    fn replace_retention(&mut self, key: &TableKey, entry: &mut Entry) {
        if let Some(at) = entry.trim_at.take() {
            self.trims.remove(&(at, entry.id));
        }
        entry.trim_at = entry.table.age_deadline();
        if let Some(at) = entry.trim_at {
            self.trims.insert((at, entry.id), key.clone());
        }
        if entry.table.retention().is_some() {
            self.capped.insert(key.clone());
        } else {
            self.capped.remove(key);
        }
    }

    /// The earliest moment the sweep has work: a key expires or a segment ages out.
    fn earliest_deadline(&self) -> Option<Instant> {
        let expiry = self.deadlines.keys().next().map(|(deadline, _)| *deadline);
        let trim = self.trims.keys().next().map(|(at, _)| *at);
        match (expiry, trim) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl TableStore {
    /// An empty store holding at most `budget`'s memory, making room by `eviction`, and keeping
    /// the memory of dropped or replaced tables for `keep_freed` for the next uploads before
    /// it gives it back (zero: at once).
    /// Deadlines are measured on `clock`.
    pub fn new(
        budget: Arc<MemoryBudget>,
        eviction: Eviction,
        keep_freed: Duration,
        clock: Clock,
    ) -> Self {
        let shared = Arc::new(Shared {
            tables: DashMap::new(),
            index: Mutex::new(Index::default()),
            slabs: Arc::new(SlabPool::new(keep_freed, Arc::clone(&budget))),
            budget,
            eviction,
            clock,
            deadline_set: Notify::new(),
            on_remove: std::sync::OnceLock::new(),
            watchers: DashMap::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            merge_appends: std::sync::atomic::AtomicBool::new(true),
            pressure_trims: AtomicU64::new(0),
            trimmed_rows: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
        });
        let relief: std::sync::Weak<dyn Relieve> = Arc::downgrade(&shared) as _;
        shared.budget.set_relief(relief);
        Self { shared }
    }

    /// The pool that uploads take table memory from and dropped tables give it back to.
    /// Whoever serves the store runs its
    /// [`release_expired_periodically`](SlabPool::release_expired_periodically).
    pub fn slab_pool(&self) -> Arc<SlabPool> {
        Arc::clone(&self.shared.slabs)
    }

    /// The clock its deadlines are measured on.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Wake the expiry sweep, to look at the deadlines again: after the clock was advanced.
    pub fn wake_sweep(&self) {
        self.shared.deadline_set.notify_one();
    }

    /// The memory budget.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.shared.budget
    }

    /// The table under `key`, unless there is none or it expired, without making it the most
    /// recently used (an info, a schema, a TTL: a look, not a use).
    pub fn peek(&self, key: &TableKey) -> Option<StoredTable> {
        let now = self.shared.clock.now();
        let entry = self.shared.tables.get(key)?;
        (!entry.is_expired(now)).then(|| entry.stored())
    }

    /// The table under `key` for a get to stream: like [`peek`](Self::peek), and it becomes the
    /// most recently used table.
    pub fn read(&self, key: &TableKey) -> Option<StoredTable> {
        let now = self.shared.clock.now();
        // The index before the entry, as every writer locks them.
        let mut index = self.shared.lock_index();
        let mut entry = self.shared.tables.get_mut(key)?;
        if entry.is_expired(now) {
            return None;
        }
        entry.last_used = now;
        index.touch(key, &mut entry);
        Some(entry.stored())
    }

    /// Publish `segment` as the table under `key` in one step, replacing any table there (and
    /// its time to live and retention) with it, expiring after `ttl` if given; returns the old
    /// table.
    ///
    /// A reader that already holds the old table keeps it; every later reader sees the new one.
    #[cfg(test)]
    pub fn insert(
        &self,
        key: TableKey,
        segment: Arc<Segment>,
        ttl: Option<Duration>,
    ) -> Option<Arc<CachedTable>> {
        let expiry = ttl.and_then(|ttl| Expiry::after(self.shared.clock.now(), ttl));
        self.insert_with_expiry(key, segment, expiry).0
    }

    /// [`insert`](Self::insert) with the expiry given; also returns the put's
    /// [`id`](StoredTable::id).
    pub fn insert_with_expiry(
        &self,
        key: TableKey,
        segment: Arc<Segment>,
        expiry: Option<Expiry>,
    ) -> (Option<Arc<CachedTable>>, u64) {
        self.shared.puts.fetch_add(1, Ordering::Relaxed);
        let mut index = self.shared.lock_index();
        let id = index.next_seq();
        let table = CachedTable::new(segment, id, self.shared.clock.now());
        let old = self.insert_entry(&mut index, key, table, expiry, id, true);
        drop(index);
        (self.displaced_table(old), id)
    }

    /// An id for a put or append to come, larger than every earlier one's: for one whose file
    /// must be named before it is published ([`insert_at`](Self::insert_at),
    /// [`append`](Self::append)).
    pub fn reserve_id(&self) -> u64 {
        self.shared.lock_index().next_seq()
    }

    /// [`insert_with_expiry`](Self::insert_with_expiry) as put `id`, from
    /// [`reserve_id`](Self::reserve_id).
    pub fn insert_at(
        &self,
        key: TableKey,
        segment: Arc<Segment>,
        expiry: Option<Expiry>,
        id: u64,
    ) -> Option<Arc<CachedTable>> {
        self.shared.puts.fetch_add(1, Ordering::Relaxed);
        let mut index = self.shared.lock_index();
        let table = CachedTable::new(segment, id, self.shared.clock.now());
        let old = self.insert_entry(&mut index, key, table, expiry, id, true);
        drop(index);
        self.displaced_table(old)
    }

    /// Append `segment` to the table under `key` in one step, or make it the key's table if
    /// there is none: readers see all of its rows or none. A time to live given replaces the
    /// key's; without one the key keeps its own. A `retention` given replaces the key's; the
    /// key is then trimmed to it. `at`, for an append whose file was written first, names its
    /// id and the place it was written for; it is stored only there.
    ///
    /// # Errors
    /// [`AppendRefused`] if `segment`'s schema is not the key's, or the key is no longer where
    /// `at` expected it: nothing is stored.
    pub fn append(
        &self,
        key: &TableKey,
        segment: Arc<Segment>,
        ttl: Option<Duration>,
        retention: Option<Retention>,
        at: Option<AppendAt>,
    ) -> Result<Appended, AppendRefused> {
        let now = self.shared.clock.now();
        let expiry = ttl.and_then(|ttl| Expiry::after(now, ttl));
        let mut index = self.shared.lock_index();
        let live = self
            .shared
            .tables
            .get(key)
            .filter(|entry| !entry.is_expired(now))
            .map(|entry| (entry.id, entry.table.next_offset()));
        if let Some(at) = at {
            let expected = at.table_id.map(|table_id| (table_id, at.first_offset));
            if live != expected {
                return Err(AppendRefused::Moved);
            }
        }
        let id = at.map_or_else(|| index.next_seq(), |at| at.id);
        self.shared.puts.fetch_add(1, Ordering::Relaxed);
        if live.is_none() {
            let mut table = CachedTable::new(segment, id, now);
            table.set_retention(retention);
            let old = self.insert_entry(&mut index, key.clone(), table, expiry, id, true);
            drop(index);
            self.displaced_table(old);
            return Ok(Appended {
                first_offset: 0,
                table_id: id,
                id,
            });
        }
        let Some(mut entry) = self.shared.tables.get_mut(key) else {
            unreachable!("the index lock is held: the key is still there");
        };
        // The store's own copy is changed in place unless a reader holds it: then a clone,
        // whose persistent list of segments shares all but the nodes the append changes.
        let table = Arc::make_mut(&mut entry.table);
        let first_offset = table
            .append(segment, id, now)
            .map_err(AppendRefused::SchemaDiffers)?;
        if retention.is_some() {
            table.set_retention(retention);
        }
        let trimmed = table.trim(now);
        entry.last_id = id;
        entry.last_used = now;
        // A key restored from disk holds table memory once it is appended to: it can be
        // evicted from now on.
        entry.evictable = true;
        index.touch(key, &mut entry);
        if expiry.is_some() {
            index.set_expiry(key, &mut entry, expiry);
        }
        index.replace_retention(key, &mut entry);
        let may_merge = self.shared.merge_appends.load(Ordering::Relaxed) && !entry.merging;
        let merge = may_merge
            .then(|| merge::run_to_merge(&entry.table))
            .flatten();
        entry.merging |= merge.is_some();
        let (table_id, trim_at) = (entry.id, entry.trim_at);
        drop(entry);
        self.shared
            .wake_sweep_for(&index, expiry.map(|e| e.deadline));
        self.shared.wake_sweep_for(&index, trim_at);
        drop(index);
        self.shared.trimmed(key, table_id, &trimmed);
        self.shared.changed(key);
        drop(trimmed); // their memory goes back outside the locks
        if let Some(ids) = merge {
            self.merge_later(key.clone(), table_id, ids);
        }
        Ok(Appended {
            first_offset,
            table_id,
            id,
        })
    }

    /// The unused end of the slab that `key`'s last append filled, for its next append to go
    /// on filling ([`SlabWriter::resume`](crate::store::slabs::SlabWriter::resume)); one
    /// append at a time has it.
    pub fn take_open_slab(&self, key: &TableKey) -> Option<OpenSlab> {
        // A map guard alone, never held while the index is locked: as `read` takes them.
        self.shared.tables.get_mut(key)?.open_slab.take()
    }

    /// Keep `open`, the unused end of the last slab of an append to `key` just stored, for
    /// the key's next append: appends of a few MiB then share huge pages, each faulting in
    /// only what it fills, instead of each taking a 2 MiB page and using half of it. Not kept
    /// for a key that is gone, nor for one capped by retention to less than
    /// [`SHARED_SLAB_MIN_RETAINED_BYTES`]: a slab is freed only with its last append, so
    /// such a key's trimmed appends would keep their memory.
    /// `table_id` is the table the append went to: a table that replaced it meanwhile does
    /// not take it.
    pub fn keep_open_slab(&self, key: &TableKey, table_id: u64, open: OpenSlab) {
        let given_up = {
            let Some(mut entry) = self.shared.tables.get_mut(key) else {
                return;
            };
            if entry.id != table_id {
                return;
            }
            if !shares_slabs(&entry.table) {
                return;
            }
            entry.open_slab.replace(open)
        };
        // Trimmed (a system call) once the map guard is released.
        drop(given_up);
    }

    /// Merge the segments `ids` of `key`'s table `table_id` on a blocking thread (see
    /// [`merge`]); without a tokio runtime, now.
    fn merge_later(&self, key: TableKey, table_id: u64, ids: Vec<u64>) {
        let store = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || store.merge_runs(&key, table_id, ids));
            }
            Err(_) => store.merge_runs(&key, table_id, ids),
        }
    }

    /// Merge the segments `ids` of `key`'s table `table_id`, then each run of small segments
    /// that appends made ready meanwhile (one merge of a key at a time: appends that find one
    /// under way start none).
    pub(crate) fn merge_runs(&self, key: &TableKey, table_id: u64, mut ids: Vec<u64>) {
        while let Some(next) = self.merge_run(key, table_id, &ids) {
            ids = next;
        }
    }

    /// Merge the segments `ids` of `key`'s table `table_id` into one, if they are still
    /// there, and put it in their place; the next run to merge, if there is one already.
    /// The merged copy is charged without evicting (a merge never takes another key's
    /// memory); while the budget plainly lacks the room for it, no merge is attempted.
    pub(crate) fn merge_run(&self, key: &TableKey, table_id: u64, ids: &[u64]) -> Option<Vec<u64>> {
        let merged = self
            .peek(key)
            .filter(|stored| stored.id == table_id)
            .and_then(|stored| {
                let run = stored.table.run_with_ids(ids)?;
                let bytes: u64 = run.iter().map(|placed| placed.segment.bytes()).sum();
                let room = self
                    .shared
                    .budget
                    .limit()
                    .map(|limit| limit.saturating_sub(self.shared.budget.used()) as u64);
                if room.is_some_and(|room| room < 2 * bytes + (1 << 20)) {
                    return None;
                }
                // A panic (a bug) fails this merge alone, logged in one line: the appends
                // stay as they are, and the key's next appends try again (a run that always
                // panics leaves the window of runs tried after `LOOK_BACK` more appends).
                let merged = quiet_panics::catch(|| {
                    merge::merge(key, &stored.table, &run, &self.shared.slabs)
                });
                match merged {
                    Ok(Ok(segment)) => Some(Arc::new(segment)),
                    // No room without evicting: the next append tries again.
                    Ok(Err(crate::Error::OverBudget { .. })) => None,
                    Ok(Err(err)) => {
                        tracing::warn!(key = %key, error = %err, "cannot merge a key's appends");
                        None
                    }
                    Err(panic) => {
                        tracing::error!(
                            key = %key,
                            panic = %panic,
                            "merging a key's appends panicked"
                        );
                        None
                    }
                }
            });
        let (replaced, next) = {
            let mut index = self.shared.lock_index();
            let mut entry = self.shared.tables.get_mut(key)?;
            if entry.id != table_id {
                return None; // another table, with its own merges
            }
            entry.merging = false;
            let merged = merged?;
            let replaced = Arc::make_mut(&mut entry.table).replace_run(ids, merged);
            if replaced.is_some() {
                // The merged segment ages as the newest of its appends.
                index.replace_retention(key, &mut entry);
            }
            let next = replaced
                .as_ref()
                .and_then(|_| merge::run_to_merge(&entry.table));
            entry.merging = next.is_some();
            (replaced, next)
        };
        // Their memory goes back outside the locks.
        drop(replaced);
        next
    }

    /// Cap `key`'s table by `retention` (`None`: uncapped) and trim it at once; its offsets
    /// after, or `None` if there is no such key.
    pub fn retain(&self, key: &TableKey, retention: Option<Retention>) -> Option<Offsets> {
        let now = self.shared.clock.now();
        let mut index = self.shared.lock_index();
        let mut entry = self.shared.tables.get_mut(key)?;
        if entry.is_expired(now) {
            return None;
        }
        let table = Arc::make_mut(&mut entry.table);
        table.set_retention(retention);
        let trimmed = table.trim(now);
        let offsets = table.offsets();
        let given_up = match shares_slabs(table) {
            true => None,
            false => entry.open_slab.take(),
        };
        index.replace_retention(key, &mut entry);
        let (table_id, trim_at) = (entry.id, entry.trim_at);
        drop(entry);
        self.shared.wake_sweep_for(&index, trim_at);
        drop(index);
        self.shared.trimmed(key, table_id, &trimmed);
        drop((trimmed, given_up));
        Some(offsets)
    }

    /// Serve `table` under `key` as put `id`'s, as it came back from disk at startup: mapped
    /// from its files, so it is never evicted (nothing would be freed). Later ids are larger
    /// than every id its segments have.
    pub fn restore(&self, key: TableKey, table: CachedTable, expiry: Option<Expiry>, id: u64) {
        let mut index = self.shared.lock_index();
        let last = table.segments().last().map_or(id, |placed| placed.id);
        index.next_seq = index.next_seq.max(last);
        let old = self.insert_entry(&mut index, key, table, expiry, id, false);
        drop(index);
        self.displaced_table(old);
    }

    /// Make later ids larger than `id` (ids of files found on disk).
    pub fn ids_after(&self, id: u64) {
        let mut index = self.shared.lock_index();
        index.next_seq = index.next_seq.max(id);
    }

    /// Make `table` the entry of `key` under the index lock held, as put `id`'s; the entry
    /// it took the place of, for the caller to let go once the lock is released
    /// ([`displaced_table`](Self::displaced_table)).
    #[must_use = "the displaced entry is to be freed once the index lock is released"]
    fn insert_entry(
        &self,
        index: &mut MutexGuard<'_, Index>,
        key: TableKey,
        table: CachedTable,
        expiry: Option<Expiry>,
        id: u64,
        evictable: bool,
    ) -> Option<Entry> {
        let now = self.shared.clock.now();
        // The old entry leaves the indexes before the new one enters them.
        if let Some(old) = self.shared.tables.get(&key) {
            index.forget(&key, &old);
        }
        let used_seq = index.next_seq();
        if evictable {
            index.lru.insert(used_seq, key.clone());
        }
        if let Some(expiry) = expiry {
            index.deadlines.insert((expiry.deadline, id), key.clone());
        }
        let last_id = table.segments().last().map_or(id, |placed| placed.id);
        let mut entry = Entry {
            table: Arc::new(table),
            id,
            last_id,
            trim_at: None,
            used_seq,
            evictable,
            last_used: now,
            expiry,
            open_slab: None,
            merging: false,
        };
        index.replace_retention(&key, &mut entry);
        let trim_at = entry.trim_at;
        let old = self.shared.tables.insert(key.clone(), entry);
        self.shared
            .wake_sweep_for(index, expiry.map(|expiry| expiry.deadline));
        self.shared.wake_sweep_for(index, trim_at);
        self.shared.changed(&key);
        old
    }

    /// The table an entry that a put took the place of held, if it was still live (one
    /// that had expired is counted as expired). Called once the index is unlocked: what the
    /// entry held besides (the unused end of its last slab, an expired table) is freed here.
    fn displaced_table(&self, old: Option<Entry>) -> Option<Arc<CachedTable>> {
        let old = old?;
        if old.is_expired(self.shared.clock.now()) {
            self.shared.expirations.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(old.table)
    }

    /// Never merge a key's tiny appends ([`merge`]): a data directory whose files are written
    /// behind the appends, one for each, needs each append's segment until it is written.
    pub fn keep_appends_apart(&self) {
        self.shared.merge_appends.store(false, Ordering::Relaxed);
    }

    /// Tell `on_remove` of every table removed from now on.
    pub fn set_on_remove(&self, on_remove: std::sync::Weak<dyn OnRemove>) {
        self.shared.on_remove.set(on_remove).ok();
    }

    /// Remove the table under `key` if it is still put `id`'s (a corrupt file found out).
    pub fn remove_version(&self, key: &TableKey, id: u64) -> bool {
        let removed = {
            let mut index = self.shared.lock_index();
            let Some((_, entry)) = self.shared.tables.remove_if(key, |_, e| e.id == id) else {
                return false;
            };
            index.forget(key, &entry);
            entry
        };
        self.shared.removed(key, &removed);
        true
    }

    /// Remove the table under `key`; returns it unless there was none (or it had expired).
    pub fn remove(&self, key: &TableKey) -> Option<Arc<CachedTable>> {
        let now = self.shared.clock.now();
        let removed = {
            let mut index = self.shared.lock_index();
            let (_, entry) = self.shared.tables.remove(key)?;
            index.forget(key, &entry);
            entry
        };
        self.shared.removed(key, &removed);
        if removed.is_expired(now) {
            self.shared.expirations.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(removed.table)
    }

    /// Remove every table; returns how many there were (expired ones not counted).
    pub fn clear(&self) -> u64 {
        let now = self.shared.clock.now();
        // Keep the removed tables until the locks are released: freeing a large table unmaps
        // its memory, which should not block readers of the same shard.
        let mut removed = Vec::new();
        {
            let mut index = self.shared.lock_index();
            // No key comes or goes meanwhile: every change to the map holds the index.
            let keys: Vec<TableKey> = self.shared.tables.iter().map(|e| e.key().clone()).collect();
            removed.extend(keys.iter().filter_map(|key| self.shared.tables.remove(key)));
            *index = Index {
                next_seq: index.next_seq,
                ..Index::default()
            };
        }
        for (key, entry) in &removed {
            self.shared.removed(key, entry);
        }
        for watcher in self.shared.watchers.iter() {
            watcher.notify_waiters();
        }
        let expired = removed.iter().filter(|(_, e)| e.is_expired(now)).count() as u64;
        self.shared
            .expirations
            .fetch_add(expired, Ordering::Relaxed);
        removed.len() as u64 - expired
    }

    /// The tables whose key starts with `prefix`, sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<(TableKey, StoredTable)> {
        let now = self.shared.clock.now();
        let mut tables: Vec<_> = self
            .shared
            .tables
            .iter()
            .filter(|entry| entry.key().as_str().starts_with(prefix) && !entry.is_expired(now))
            .map(|entry| (entry.key().clone(), entry.stored()))
            .collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        tables
    }

    /// Give `key` a time to live of `ttl` from now (replacing any it had); the new expiry, or
    /// `None` if there is no such key.
    pub fn expire(&self, key: &TableKey, ttl: Duration) -> Option<Expiry> {
        let now = self.shared.clock.now();
        let expiry = Expiry::after(now, ttl);
        self.shared.update_expiry(key, now, |_| expiry)?;
        expiry
    }

    /// Extend `key`'s time to live by the one it was given, from now (Flight's
    /// `RenewFlightEndpoint`): its new expiry, `Some(None)` for a key that never expires, or
    /// `None` if there is no such key.
    pub fn renew(&self, key: &TableKey) -> Option<Option<Expiry>> {
        let now = self.shared.clock.now();
        self.shared.update_expiry(key, now, |old| {
            old.and_then(|old| Expiry::after(now, old.ttl))
        })
    }

    /// Remove `key`'s time to live: whether it had one, or `None` if there is no such key.
    pub fn persist(&self, key: &TableKey) -> Option<bool> {
        let mut had = false;
        self.shared
            .update_expiry(key, self.shared.clock.now(), |old| {
                had = old.is_some();
                None
            })?;
        Some(had)
    }

    /// Remove every key whose deadline has passed, and trim the segments whose age retention
    /// ran out; returns how many keys were removed.
    pub fn sweep_expired(&self) -> usize {
        let now = self.shared.clock.now();
        let mut expired = Vec::new();
        let mut aged = Vec::new();
        {
            let mut index = self.shared.lock_index();
            while let Some(entry) = index.deadlines.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, id), key) = entry.remove_entry();
                if let Some((_, removed)) = self.shared.tables.remove_if(&key, |_, e| e.id == id) {
                    index.forget(&key, &removed);
                    expired.push((key, removed));
                }
            }
            while let Some(entry) = index.trims.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let ((_, id), key) = entry.remove_entry();
                let Some(mut entry) = self.shared.tables.get_mut(&key).filter(|e| e.id == id)
                else {
                    continue;
                };
                entry.trim_at = None;
                let segments = Arc::make_mut(&mut entry.table).trim(now);
                index.replace_retention(&key, &mut entry);
                drop(entry);
                aged.push((key, id, segments));
            }
        }
        for (key, table_id, segments) in &aged {
            self.shared.trimmed(key, *table_id, segments);
        }
        drop(aged); // their memory goes back outside the locks
        for (key, entry) in &expired {
            self.shared.removed(key, entry);
        }
        self.shared
            .expirations
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        expired.len()
    }

    /// Remove each key as its deadline passes, until the task running this is dropped or
    /// aborted: sleeps until the earliest deadline (or until an earlier one is set), so memory
    /// goes back to the budget as soon as a key expires.
    pub async fn expire_periodically(self) {
        loop {
            // Registered before the deadline is read, so a deadline set in between wakes it.
            let deadline_set = self.shared.deadline_set.notified();
            tokio::pin!(deadline_set);
            deadline_set.as_mut().enable();
            let earliest = self.shared.lock_index().earliest_deadline();
            match earliest {
                Some(deadline) if deadline <= self.shared.clock.now() => {
                    self.sweep_expired();
                }
                Some(deadline) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(self.shared.clock.tokio_instant(deadline)) => {
                            self.sweep_expired();
                        }
                        () = &mut deadline_set => {}
                    }
                }
                None => deadline_set.await,
            }
        }
    }

    /// Count a get.
    pub fn record_get(&self) {
        self.shared.gets.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a failed request.
    pub fn record_error(&self) {
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The current contents, memory and counters.
    pub fn stats(&self) -> StoreStats {
        let now = self.shared.clock.now();
        let (mut tables, mut rows, mut bytes) = (0, 0, 0);
        for entry in self.shared.tables.iter() {
            if entry.is_expired(now) {
                continue;
            }
            tables += 1;
            rows += entry.table.rows();
            bytes += entry.table.bytes();
        }
        let budget = &self.shared.budget;
        let used = budget.used() as u64;
        let uploads = budget.uploading() as u64;
        let pool = self.shared.slabs.idle_bytes() as u64;
        StoreStats {
            tables,
            rows,
            bytes,
            puts: self.shared.puts.load(Ordering::Relaxed),
            gets: self.shared.gets.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            freed_bytes: pool,
            memory_budget: budget.limit().map_or(0, |limit| limit as u64),
            memory_used: used,
            memory_tables: used.saturating_sub(uploads).saturating_sub(pool),
            memory_uploads: uploads,
            memory_overhead: budget.overhead() as u64,
            evictions: self.shared.evictions.load(Ordering::Relaxed),
            expirations: self.shared.expirations.load(Ordering::Relaxed),
            rejected_uploads: budget.refused(),
            disk_tables: 0,
            disk_bytes: 0,
            disk_queued: 0,
            disk_write_failures: 0,
            trimmed_rows: self.shared.trimmed_rows.load(Ordering::Relaxed),
            pressure_trims: self.shared.pressure_trims.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    /// Tell whoever listens that `entry` of `key` was removed.
    fn removed(&self, key: &TableKey, entry: &Entry) {
        if let Some(on_remove) = self.on_remove.get().and_then(std::sync::Weak::upgrade) {
            on_remove.removed(key, entry.last_id);
        }
        self.changed(key);
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        // The index is changed together with the map under this lock, never across a call that
        // can panic between the two.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the expiry of `key`'s live entry by `update(old)`; the new one, or `None` if
    /// there is no such key.
    fn update_expiry(
        &self,
        key: &TableKey,
        now: Instant,
        update: impl FnOnce(Option<Expiry>) -> Option<Expiry>,
    ) -> Option<Option<Expiry>> {
        let mut index = self.lock_index();
        let mut entry = self.tables.get_mut(key)?;
        if entry.is_expired(now) {
            return None; // the sweep removes it
        }
        let expiry = update(entry.expiry);
        index.set_expiry(key, &mut entry, expiry);
        drop(entry);
        self.wake_sweep_for(&index, expiry.map(|expiry| expiry.deadline));
        Some(expiry)
    }

    /// Wake the sweep if `deadline` is now the earliest it has.
    fn wake_sweep_for(&self, index: &Index, deadline: Option<Instant>) {
        if let Some(deadline) = deadline
            && index.earliest_deadline() == Some(deadline)
        {
            self.deadline_set.notify_one();
        }
    }

    /// Wake whoever follows `key`: its table changed, was replaced or is gone.
    fn changed(&self, key: &TableKey) {
        if let Some(watcher) = self.watchers.get(key) {
            watcher.notify_waiters();
        }
    }

    /// Count the segments of `key`'s table `table_id` retention trimmed, and tell the data
    /// directory (never with the index locked: it takes its own lock, which it holds while it
    /// calls the store).
    fn trimmed(&self, key: &TableKey, table_id: u64, trimmed: &[Arc<table::PlacedSegment>]) {
        if trimmed.is_empty() {
            return;
        }
        let rows: u64 = trimmed.iter().map(|placed| placed.segment.rows()).sum();
        self.trimmed_rows.fetch_add(rows, Ordering::Relaxed);
        // A merged segment's files are those of every append merged into it.
        let ids: Vec<u64> = trimmed
            .iter()
            .flat_map(|placed| {
                let merged = placed.merged_ids.iter().flat_map(|ids| ids.iter().copied());
                merged.chain([placed.id])
            })
            .collect();
        if let Some(on_remove) = self.on_remove.get().and_then(std::sync::Weak::upgrade) {
            on_remove.trimmed(key, table_id, &ids);
        }
    }

    /// Remove the least recently used table other than `protected`'s; false if there is none.
    fn evict_one(&self, protected: Option<&TableKey>) -> bool {
        let victim = {
            let mut index = self.lock_index();
            let Some((&seq, key)) = index.lru.iter().find(|(_, key)| Some(*key) != protected)
            else {
                return false;
            };
            let key = key.clone();
            index.lru.remove(&seq);
            let Some((_, entry)) = self.tables.remove(&key) else {
                return true; // cannot happen: the index and the map agree
            };
            index.forget(&key, &entry);
            tracing::debug!(key = key.as_str(), bytes = entry.table.bytes(), "evicted");
            (key, entry)
        };
        let (key, victim) = victim;
        self.removed(&key, &victim);
        let counter = if victim.is_expired(self.clock.now()) {
            &self.expirations
        } else {
            &self.evictions
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // Dropped here, outside the lock: its memory goes to the pool (or is unmapped), or, if
        // a get still streams it, when that get ends.
        drop(victim);
        true
    }

    /// Trim the oldest segment among the capped keys' but `spared`'s (the one added longest
    /// ago) that holds table memory (not one mapped from its file: trimming it would free
    /// nothing), keeping each key's newest; false if there is none.
    fn trim_one_capped(&self, spared: Option<&TableKey>) -> bool {
        let (key, table_id, placed) = {
            let mut index = self.lock_index();
            let oldest = index
                .capped
                .iter()
                .filter(|key| Some(*key) != spared)
                .filter_map(|key| {
                    let entry = self.tables.get(key)?;
                    let segments = entry.table.segments();
                    let frees = segments.len() > 1 && segments[0].segment.file().is_none();
                    frees.then(|| (segments[0].added_at, key.clone()))
                })
                .min();
            let Some((_, key)) = oldest else {
                return false;
            };
            let Some(mut entry) = self.tables.get_mut(&key) else {
                return false;
            };
            let Some(placed) = Arc::make_mut(&mut entry.table).trim_oldest() else {
                return false;
            };
            index.replace_retention(&key, &mut entry);
            let table_id = entry.id;
            drop(entry);
            (key, table_id, placed)
        };
        tracing::debug!(
            key = key.as_str(),
            rows = placed.segment.rows(),
            "trimmed under memory pressure"
        );
        self.trimmed(&key, table_id, std::slice::from_ref(&placed));
        self.pressure_trims.fetch_add(1, Ordering::Relaxed);
        drop(placed);
        true
    }
}

impl Relieve for Shared {
    /// Give back the pool of freed memory first (it holds no table), then the allocator's
    /// free memory (when the process's memory is counted), then, if the policy allows, trim
    /// the oldest segment of a key capped by retention (it was going to go), then evict the
    /// least recently used table.
    fn relieve(&self, protected: Option<&TableKey>, may_trim_protected: bool) -> bool {
        if self.slabs.release_all() > 0 {
            return true;
        }
        if self.budget.release_free_memory() {
            return true;
        }
        match self.eviction {
            Eviction::Lru => {
                let spared = protected.filter(|_| !may_trim_protected);
                self.trim_one_capped(spared) || self.evict_one(protected)
            }
            Eviction::NoEviction => false,
        }
    }

    fn release_unused(&self) -> bool {
        self.slabs.release_all() > 0 || self.budget.release_free_memory()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, RecordBatch};

    use super::*;
    use crate::protocol::encode::{FlightEncoder, TARGET_MESSAGE_BYTES};
    use crate::store::budget::UploadAccount;
    use crate::store::slabs::SlabWriter;
    use crate::store::upload::TableUpload;

    const MIB: usize = 1 << 20;

    fn key(name: &str) -> TableKey {
        TableKey::try_new(name).unwrap()
    }

    /// Upload a table of about `mib` MiB of float64 into `store`'s memory, as a put would;
    /// the error if the budget refuses it.
    fn upload(store: &TableStore, name: &str, mib: usize) -> crate::Result<Arc<Segment>> {
        let rows = mib * MIB / 8;
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))) as _,
        )])
        .unwrap();
        let mut encoder = FlightEncoder::new(TARGET_MESSAGE_BYTES);
        let mut messages = vec![encoder.encode_schema(&batch.schema(), None)];
        messages.extend(encoder.encode_batch(&batch).unwrap());
        let account = UploadAccount::new(store.budget());
        let memory = SlabWriter::new(store.slab_pool(), account);
        let mut upload = TableUpload::new(key(name), memory, usize::MAX);
        for message in messages {
            upload.push(message)?;
        }
        Ok(Arc::new(upload.finish()?))
    }

    fn put(store: &TableStore, name: &str, mib: usize, ttl: Option<Duration>) {
        let table = upload(store, name, mib).unwrap();
        store.insert(key(name), table, ttl);
    }

    fn keys(store: &TableStore) -> Vec<String> {
        store
            .list("")
            .into_iter()
            .map(|(key, _)| key.to_string())
            .collect()
    }

    fn store_with(budget_mib: usize, eviction: Eviction) -> TableStore {
        TableStore::new(
            MemoryBudget::new(Some(budget_mib * MIB)),
            eviction,
            Duration::from_secs(10),
            Clock::default(),
        )
    }

    #[test]
    fn a_resplit_giant_batch_is_charged_for_its_rebased_offsets() {
        let store = store_with(1024, Eviction::NoEviction);
        let rows = 2_000_000;
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(arrow::array::StringArray::from_iter_values(
                (0..rows).map(|i| format!("{:08}", i % 100_000_000)),
            )) as _,
        )])
        .unwrap();
        let mut encoder = FlightEncoder::new(usize::MAX); // one giant message, as pyarrow sends
        let mut messages = vec![encoder.encode_schema(&batch.schema(), None)];
        messages.extend(encoder.encode_batch(&batch).unwrap());
        assert_eq!(messages.len(), 2);
        let received = messages[1].data_body.len();
        let account = UploadAccount::new(store.budget());
        let memory = SlabWriter::new(store.slab_pool(), account);
        let mut upload = TableUpload::new(key("s"), memory, usize::MAX);
        for message in messages {
            upload.push(message).unwrap();
        }
        let table = upload.finish().unwrap();
        assert!(table.batches() > 1, "re-split");
        // The body once, plus 4 bytes of rebased offset per row (and one per piece).
        assert!(
            store.budget().used() >= received + rows * 4,
            "charged {} for a body of {received} and {} bytes of offsets",
            store.budget().used(),
            rows * 4
        );
    }

    #[test]
    fn a_full_budget_evicts_the_least_recently_used_tables_first() {
        let store = store_with(40, Eviction::Lru);
        put(&store, "a", 10, None);
        put(&store, "b", 10, None);
        put(&store, "c", 10, None);
        assert!(
            store.read(&key("a")).is_some(),
            "a is now the most recently used"
        );
        put(&store, "d", 10, None);
        assert_eq!(
            keys(&store),
            ["a", "c", "d"],
            "b was the least recently used"
        );
        put(&store, "e", 10, None);
        assert_eq!(keys(&store), ["a", "d", "e"]);
        let stats = store.stats();
        assert_eq!(stats.evictions, 2);
        assert!(stats.memory_used <= 40 * MIB as u64, "{stats:?}");
        assert!(stats.memory_tables >= stats.bytes, "{stats:?}");
    }

    #[test]
    fn noeviction_refuses_what_does_not_fit_and_keeps_every_table() {
        let store = store_with(40, Eviction::NoEviction);
        put(&store, "a", 10, None);
        put(&store, "b", 10, None);
        put(&store, "c", 10, None);
        let err = upload(&store, "a", 12).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        let message = err.to_string();
        assert!(
            message.contains("--max-memory") && message.contains("`a`"),
            "{message}"
        );
        assert_eq!(keys(&store), ["a", "b", "c"]);
        assert_eq!(
            store.peek(&key("a")).unwrap().table.rows(),
            (10 * MIB / 8) as u64
        );
        let stats = store.stats();
        assert_eq!((stats.evictions, stats.rejected_uploads), (0, 1));
        assert_eq!(
            stats.memory_uploads, 0,
            "the refused upload's memory is back"
        );
    }

    #[test]
    fn an_upload_larger_than_the_budget_fails_and_the_old_table_under_its_key_survives() {
        let reason = |err: &crate::Error| match err {
            crate::Error::OverBudget { refusal, .. } => refusal.reason,
            other => panic!("{other:?}"),
        };
        let store = store_with(40, Eviction::Lru);
        let err = upload(&store, "alone", 48).unwrap_err();
        assert_eq!(reason(&err), budget::RefusalReason::LargerThanBudget);
        assert!(
            err.to_string().contains("even with nothing else cached"),
            "{err}"
        );

        put(&store, "t", 4, None);
        put(&store, "other", 4, None);
        let err = upload(&store, "t", 48).unwrap_err();
        assert_eq!(reason(&err), budget::RefusalReason::NothingToFree);
        assert!(
            err.to_string()
                .contains("the table the upload would replace"),
            "{err}"
        );
        assert_eq!(
            keys(&store),
            ["t"],
            "others were evicted for it, never its own old table"
        );
        assert_eq!(
            store.peek(&key("t")).unwrap().table.rows(),
            (4 * MIB / 8) as u64
        );
        assert_eq!(store.stats().memory_uploads, 0);
    }

    #[test]
    fn a_table_evicted_while_read_stays_whole_and_charged_until_the_reader_lets_go() {
        let store = store_with(40, Eviction::Lru);
        put(&store, "a", 16, None);
        let reader = store.read(&key("a")).unwrap().table;
        put(&store, "b", 16, None);
        put(&store, "c", 16, None); // evicts a, then b: a's memory is still held
        assert_eq!(keys(&store), ["c"]);
        let stats = store.stats();
        assert_eq!(stats.evictions, 2);
        assert!(stats.memory_tables >= 32 * MIB as u64, "a and c: {stats:?}");
        assert_eq!(
            reader.rows(),
            (16 * MIB / 8) as u64,
            "the reader's table is whole"
        );
        let bodies: usize = reader
            .segments()
            .iter()
            .flat_map(|placed| placed.segment.messages())
            .map(|m| m.body_len())
            .sum();
        assert_eq!(bodies as u64, reader.bytes());
        drop(reader);
        assert!(
            store.stats().memory_tables < 20 * MIB as u64,
            "freed with its last reader"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_key_is_gone_from_its_deadline_and_swept_at_once() {
        let store = store_with(100, Eviction::Lru);
        let sweep = tokio::spawn(store.clone().expire_periodically());
        let ttl = Duration::from_secs(10);
        put(&store, "short", 4, Some(ttl));
        put(&store, "kept", 4, None);
        tokio::time::sleep(ttl - Duration::from_millis(1)).await;
        assert!(store.peek(&key("short")).is_some());
        let left = store.peek(&key("short")).unwrap().expiry.unwrap();
        assert_eq!(left.remaining(Instant::now()), Duration::from_millis(1));
        let used_before = store.stats().memory_tables;

        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            store.peek(&key("short")).is_none(),
            "not served at its deadline"
        );
        assert!(store.read(&key("short")).is_none());
        assert!(store.expire(&key("short"), ttl).is_none());
        assert_eq!(keys(&store), ["kept"]);
        tokio::task::yield_now().await; // the sweep runs at the deadline
        let stats = store.stats();
        assert_eq!(stats.expirations, 1);
        assert!(
            stats.memory_tables < used_before,
            "its memory is back: {stats:?}"
        );
        assert!(store.remove(&key("short")).is_none());
        sweep.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_wakes_for_an_earlier_deadline_set_while_it_sleeps() {
        let store = store_with(100, Eviction::Lru);
        let sweep = tokio::spawn(store.clone().expire_periodically());
        put(&store, "late", 1, Some(Duration::from_secs(3600)));
        tokio::task::yield_now().await; // the sweep now sleeps until the late deadline
        put(&store, "early", 1, None);
        store.expire(&key("early"), Duration::from_secs(5)).unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        tokio::task::yield_now().await;
        assert_eq!(store.stats().expirations, 1, "swept at 5 s, not at 3600 s");
        assert_eq!(keys(&store), ["late"]);
        sweep.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn persist_renew_and_expire_change_a_keys_deadline() {
        let store = store_with(100, Eviction::Lru);
        put(&store, "k", 1, Some(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(50)).await;
        let renewed = store.renew(&key("k")).unwrap().unwrap();
        assert_eq!(renewed.remaining(Instant::now()), Duration::from_secs(60));
        assert_eq!(store.persist(&key("k")), Some(true));
        assert_eq!(store.persist(&key("k")), Some(false));
        assert_eq!(store.renew(&key("k")), Some(None), "nothing to renew");
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(store.sweep_expired(), 0);
        assert!(store.peek(&key("k")).is_some(), "persisted keys stay");
        store.expire(&key("k"), Duration::from_secs(1)).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.sweep_expired(), 1);
        assert_eq!(store.persist(&key("k")), None);
        // A put replaces the key's time to live with its own, or none.
        put(&store, "k", 1, Some(Duration::from_secs(5)));
        put(&store, "k", 1, None);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(store.sweep_expired(), 0);
        assert!(store.peek(&key("k")).unwrap().expiry.is_none());
    }
}
