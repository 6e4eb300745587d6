//! The cache: the key → table map ([`TableStore`]), the tables it holds, how an upload becomes a
//! table, and the memory tables live in. Nothing here is async and no map guard ever leaves a
//! method.
//!
//! - [`table`]: [`table::CachedTable`], one table as its validated IPC messages.
//! - [`upload`]: [`upload::TableUpload`], a `do_put` validated message by message.
//! - [`validate`]: what a strict Arrow reader checks, checked before a table is stored.
//! - [`resplit`]: a giant record batch as streaming-size pieces over its own memory.
//! - [`memory`]: table memory: bodies copied once into huge-page slabs, reused once freed.

pub mod memory;
pub mod resplit;
pub mod table;
pub mod upload;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

use crate::protocol::actions::StoreStats;
use crate::protocol::key::TableKey;
use memory::SlabPool;
use table::CachedTable;

/// The cache: tables by key, the pool of table memory, and request counters. Clone it freely;
/// clones share state (a cheap handle over `Arc`, as mini-redis's `Db`).
///
/// Callers get an `Arc<CachedTable>` they can hold across `.await` without blocking writers:
/// holding a dashmap guard across `.await` can deadlock (xacrimon/dashmap#79).
#[derive(Debug, Clone)]
pub struct TableStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tables: DashMap<TableKey, Arc<CachedTable>>,
    slabs: Arc<SlabPool>,
    puts: AtomicU64,
    gets: AtomicU64,
    errors: AtomicU64,
}

impl TableStore {
    /// An empty store that keeps the memory of dropped or replaced tables for `reuse_window`
    /// for the next uploads, then gives it back (zero: at once).
    pub fn new(reuse_window: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                tables: DashMap::new(),
                slabs: Arc::new(SlabPool::new(reuse_window)),
                puts: AtomicU64::new(0),
                gets: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        }
    }

    /// The pool that uploads take table memory from and dropped tables give it back to.
    /// Whoever serves the store runs its
    /// [`release_expired_periodically`](SlabPool::release_expired_periodically).
    pub fn slab_pool(&self) -> Arc<SlabPool> {
        Arc::clone(&self.shared.slabs)
    }

    /// The table under `key`, if any.
    pub fn get(&self, key: &TableKey) -> Option<Arc<CachedTable>> {
        self.shared
            .tables
            .get(key)
            .map(|entry| Arc::clone(entry.value()))
    }

    /// Publish `table` under `key` in one step, replacing any table there; returns the old one.
    ///
    /// A reader that already holds the old table keeps it; every later reader sees the new one.
    pub fn insert(&self, key: TableKey, table: Arc<CachedTable>) -> Option<Arc<CachedTable>> {
        self.shared.puts.fetch_add(1, Ordering::Relaxed);
        self.shared.tables.insert(key, table)
    }

    /// Remove the table under `key`; returns it if there was one.
    pub fn remove(&self, key: &TableKey) -> Option<Arc<CachedTable>> {
        self.shared.tables.remove(key).map(|(_, table)| table)
    }

    /// Remove every table; returns how many there were.
    pub fn clear(&self) -> u64 {
        // Keep the removed tables until the map's locks are released: freeing a large table
        // unmaps its memory, which should not block readers of the same shard.
        let mut removed = Vec::new();
        self.shared.tables.retain(|_, table| {
            removed.push(Arc::clone(table));
            false
        });
        removed.len() as u64
    }

    /// The tables whose key starts with `prefix`, sorted by key.
    pub fn list(&self, prefix: &str) -> Vec<(TableKey, Arc<CachedTable>)> {
        let mut tables: Vec<_> = self
            .shared
            .tables
            .iter()
            .filter(|entry| entry.key().as_str().starts_with(prefix))
            .map(|entry| (entry.key().clone(), Arc::clone(entry.value())))
            .collect();
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        tables
    }

    /// Count a get.
    pub fn record_get(&self) {
        self.shared.gets.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a failed request.
    pub fn record_error(&self) {
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The current contents and counters.
    pub fn stats(&self) -> StoreStats {
        let (mut tables, mut rows, mut bytes) = (0, 0, 0);
        for entry in self.shared.tables.iter() {
            tables += 1;
            rows += entry.rows();
            bytes += entry.bytes();
        }
        StoreStats {
            tables,
            rows,
            bytes,
            puts: self.shared.puts.load(Ordering::Relaxed),
            gets: self.shared.gets.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            freed_bytes: self.shared.slabs.idle_bytes() as u64,
        }
    }
}
