//! Followers: reads that stay open as a key grows (`x-flightcache-follow: 1`).
//!
//! A follower is a cursor into the key's stored segments, not a buffer: it holds the one
//! segment it is sending (reference counts, not copies) and the offset of the next row it
//! owes. When it has sent everything the key holds it waits for the key to change (the store
//! wakes the key's watchers on every append, replace, drop and expiry), then looks the key up
//! again. So a follower that stops reading costs the segment it holds and the HTTP/2 window
//! (whose flow control pulls the next message only when the client has room for it), however
//! much is appended meanwhile; and a follower that falls behind retention is told so
//! (OUT_OF_RANGE, with the oldest offset kept), never skipped silently past the rows it lost.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::protocol::key::TableKey;
use crate::protocol::stream::ReadFrom;
use crate::store::table::StoredMessage;
use crate::store::{Shared, StoredTable, TableStore};

/// A registration to be woken when a key changes; unregistered when dropped.
#[derive(Debug)]
struct Watch {
    shared: Arc<Shared>,
    key: TableKey,
    notify: Arc<Notify>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Under the map's lock no other follower can take a new reference meanwhile: two
        // references are the map's and this one.
        self.shared
            .watchers
            .remove_if(&self.key, |_, notify| Arc::strong_count(notify) <= 2);
    }
}

/// A follower of one key: [`start`](Self::start) it, then take its messages with
/// [`next`](Self::next) until it ends.
#[derive(Debug)]
pub struct Follower {
    store: TableStore,
    key: TableKey,
    watch: Watch,
    from: ReadFrom,
    /// The id of the table followed, once found: another id is another table (the key was
    /// replaced), and its followers end.
    table_id: Option<u64>,
    /// The offset of the next row to send.
    next: u64,
    /// The id of the last segment sent (a segment of no rows moves `next` on by none).
    sent: Option<u64>,
    /// The rest of the segment being sent.
    pending: std::vec::IntoIter<StoredMessage>,
}

impl Follower {
    /// A follower of `key` from `from`, not yet started.
    pub fn new(store: &TableStore, key: TableKey, from: ReadFrom) -> Self {
        let notify = Arc::clone(
            store
                .shared
                .watchers
                .entry(key.clone())
                .or_insert_with(|| Arc::new(Notify::new()))
                .value(),
        );
        let watch = Watch {
            shared: Arc::clone(&store.shared),
            key: key.clone(),
            notify,
        };
        Self {
            store: store.clone(),
            key,
            watch,
            from,
            table_id: None,
            next: 0,
            sent: None,
            pending: Vec::new().into_iter(),
        }
    }

    /// Wait until the key exists (at once if it does), then fix where the follower starts:
    /// the table it follows and its first offset, which this returns. The first message will
    /// be the key's schema.
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] for a start before the oldest row kept;
    /// [`Error::Stopping`] once the server stops.
    pub async fn start(&mut self) -> Result<(u64, StoredTable)> {
        // A key that did not exist when the follower came starts at its first row, whatever
        // the follower asked for: every row of it arrived after the follower.
        let mut waited = false;
        loop {
            let notify = Arc::clone(&self.watch.notify);
            let changed = notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            self.check_stopping()?;
            if let Some(stored) = self.store.read(&self.key) {
                let table = &stored.table;
                let asked = match (self.from, waited) {
                    (ReadFrom::Latest, true) => ReadFrom::Earliest,
                    (asked, _) => asked,
                };
                let from = table
                    .start_of(asked)
                    .map_err(|err| err.for_read(&self.key))?;
                self.table_id = Some(stored.id);
                self.next = from;
                self.pending = vec![table.schema_message().clone()].into_iter();
                return Ok((from, stored));
            }
            waited = true;
            changed.await;
        }
    }

    /// The next message to send: waits while the follower has sent every row the key holds.
    /// `None` once the key is dropped, replaced or expired (the stream ends cleanly).
    ///
    /// # Errors
    /// [`Error::OffsetOutOfRange`] once retention trimmed rows this follower has not sent;
    /// [`Error::Stopping`] once the server stops.
    pub async fn next(&mut self) -> Option<Result<StoredMessage>> {
        loop {
            if let Some(message) = self.pending.next() {
                return Some(Ok(message));
            }
            let notify = Arc::clone(&self.watch.notify);
            let changed = notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Err(err) = self.check_stopping() {
                return Some(Err(err));
            }
            let stored = self.store.peek(&self.key)?;
            if Some(stored.id) != self.table_id {
                return None;
            }
            let table = stored.table;
            let segments = table.segments();
            let unsent = match table.segment_at(self.next) {
                Ok(found) => found.and_then(|mut index| {
                    while segments
                        .get(index)
                        .is_some_and(|placed| self.sent.is_some_and(|sent| placed.id <= sent))
                    {
                        index += 1;
                    }
                    (index < segments.len()).then_some(index)
                }),
                Err(err) => return Some(Err(err.for_read(&self.key))),
            };
            let Some(index) = unsent else {
                drop(table);
                changed.await;
                continue;
            };
            match table.segment_messages(index, self.next, self.store.budget(), &self.key) {
                Ok(messages) => {
                    self.next = segments[index].end_offset();
                    self.sent = Some(segments[index].id);
                    self.pending = messages.into_iter();
                }
                Err(err) => return Some(Err(err.for_read(&self.key))),
            }
        }
    }

    fn check_stopping(&self) -> Result<()> {
        if self.store.shared.stopping.load(Ordering::Acquire) {
            return Err(Error::Stopping);
        }
        Ok(())
    }
}

impl TableStore {
    /// End every follower: the server is stopping. They end with UNAVAILABLE (their clients
    /// resume elsewhere or later from the rows they have), not as if their keys were dropped.
    pub fn stop_followers(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        for watcher in self.shared.watchers.iter() {
            watcher.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::protocol::stream::Retention;
    use crate::store::budget::MemoryBudget;
    use crate::store::table::tests::{read_back, rows, segment};
    use crate::store::{Eviction, TableStore};

    const MIB: usize = 1 << 20;

    fn key(name: &str) -> TableKey {
        TableKey::try_new(name).unwrap()
    }

    fn store(budget_mib: Option<usize>) -> TableStore {
        TableStore::new(
            MemoryBudget::new(budget_mib.map(|mib| mib * MIB)),
            Eviction::Lru,
            Duration::ZERO,
            Clock::default(),
        )
    }

    /// Append rows `range` to `name` as one segment.
    fn append(store: &TableStore, name: &str, range: std::ops::Range<i64>) -> u64 {
        let segment = segment(store.budget(), &[rows(range, &["w"])]);
        store
            .append(&key(name), segment, None, None, None)
            .unwrap()
            .first_offset
    }

    /// The messages `follower` sends until it would wait (or ends).
    async fn take_ready(follower: &mut Follower) -> Vec<StoredMessage> {
        let mut taken = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(1), follower.next()).await;
            match next {
                Ok(Some(message)) => taken.push(message.unwrap()),
                Ok(None) | Err(_) => return taken,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_gets_every_append_once_in_order_and_ends_when_the_key_is_dropped() {
        let store = store(None);
        let mut follower = Follower::new(&store, key("k"), ReadFrom::Earliest);
        let starting = tokio::spawn(async move {
            let start = follower.start().await.map(|(start, _)| start);
            (follower, start)
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!starting.is_finished(), "it waits for the key to exist");
        assert_eq!(append(&store, "k", 0..10), 0);
        let (mut follower, start) = starting.await.unwrap();
        assert_eq!(start.unwrap(), 0);
        let mut sent = take_ready(&mut follower).await;
        for range in [10..15, 15..40, 40..41] {
            assert_eq!(append(&store, "k", range.clone()), range.start as u64);
            sent.extend(take_ready(&mut follower).await);
        }
        assert_eq!(read_back(sent.into_iter()).0, (0..41).collect::<Vec<_>>());

        // Resumed from the rows it has: nothing missed, nothing repeated.
        let mut resumed = Follower::new(&store, key("k"), ReadFrom::Offset(12));
        resumed.start().await.unwrap();
        let mut sent = take_ready(&mut resumed).await;
        append(&store, "k", 41..50);
        sent.extend(take_ready(&mut resumed).await);
        assert_eq!(read_back(sent.into_iter()).0, (12..50).collect::<Vec<_>>());

        store.remove(&key("k"));
        assert!(follower.next().await.is_none(), "ends cleanly once dropped");
        assert!(store.shared.watchers.len() == 1);
        drop((follower, resumed));
        assert!(
            store.shared.watchers.is_empty(),
            "no watcher is left behind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_from_latest_gets_only_new_rows_and_a_replace_ends_it() {
        let store = store(None);
        append(&store, "k", 0..10);
        // From `latest` on a key that does not exist yet: from its first row.
        let mut early = Follower::new(&store, key("new"), ReadFrom::Latest);
        let starting = tokio::spawn(async move {
            let start = early.start().await.unwrap().0;
            (early, start)
        });
        tokio::task::yield_now().await;
        append(&store, "new", 0..4);
        let (mut early, start) = starting.await.unwrap();
        assert_eq!(start, 0);
        assert_eq!(
            read_back(take_ready(&mut early).await.into_iter()).0,
            [0, 1, 2, 3]
        );

        let mut follower = Follower::new(&store, key("k"), ReadFrom::Latest);
        assert_eq!(follower.start().await.unwrap().0, 10);
        let mut sent = take_ready(&mut follower).await;
        append(&store, "k", 10..12);
        sent.extend(take_ready(&mut follower).await);
        assert_eq!(read_back(sent.into_iter()).0, [10, 11]);
        store.insert(
            key("k"),
            segment(store.budget(), &[rows(0..3, &["x"])]),
            None,
        );
        assert!(
            follower.next().await.is_none(),
            "the replaced table's stream ends"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_follower_holds_one_append_and_then_learns_what_it_lost() {
        let store = store(Some(64));
        let segment_rows = 128 * 1024; // 1 MiB of int64 per append, and its dictionary keys
        let capped = Retention {
            max_rows: Some(2 * segment_rows as u64),
            ..Retention::default()
        };
        let first = segment(store.budget(), &[rows(0..segment_rows as i64, &["w"])]);
        store
            .append(&key("k"), first, None, Some(capped), None)
            .unwrap();
        let mut follower = Follower::new(&store, key("k"), ReadFrom::Earliest);
        follower.start().await.unwrap();
        // The schema and the first message of the first append; then it stops reading, holding
        // the rest of that append.
        follower.next().await.unwrap().unwrap();
        follower.next().await.unwrap().unwrap();
        let held = store.stats().memory_used;
        for i in 1..40_i64 {
            let range = i * segment_rows as i64..(i + 1) * segment_rows as i64;
            append(&store, "k", range);
            // Flat however many are appended: the two appends the cap keeps and the one the
            // stalled follower holds.
            let used = store.stats().memory_used;
            assert!(
                used <= 3 * held + MIB as u64,
                "append {i}: {used} bytes held, {held} with one append"
            );
        }
        let stats = store.stats();
        assert_eq!(stats.evictions, 0);
        assert_eq!(
            stats.trimmed_rows,
            38 * segment_rows as u64,
            "two appends are kept"
        );
        // It sends the append it holds, then is told where the key starts now.
        let mut rest = Vec::new();
        let err = loop {
            match follower.next().await.unwrap() {
                Ok(message) => rest.push(message),
                Err(err) => break err,
            }
        };
        assert!(
            rest.iter().any(|message| !message.body.is_empty()),
            "it sends the rest of the append it holds before the error"
        );
        match err {
            Error::OffsetOutOfRange {
                offset, earliest, ..
            } => {
                assert_eq!(offset, segment_rows as u64);
                assert_eq!(earliest, 38 * segment_rows as u64);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_pressure_trims_capped_keys_before_it_evicts_any() {
        let store = store(Some(24));
        let segment_rows = 128 * 1024_i64;
        store.insert(
            key("plain"),
            segment(store.budget(), &[rows(0..segment_rows, &["w"])]),
            None,
        );
        let capped = Retention {
            max_rows: Some(u64::MAX),
            ..Retention::default()
        };
        for i in 0..30 {
            let range = i * segment_rows..(i + 1) * segment_rows;
            let append = segment(store.budget(), &[rows(range, &["w"])]);
            let retention = (i == 0).then_some(capped);
            store
                .append(&key("growing"), append, None, retention, None)
                .unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.evictions, 0, "{stats:?}");
        assert!(stats.pressure_trims > 0, "{stats:?}");
        assert!(store.peek(&key("plain")).is_some());
        let growing = store.peek(&key("growing")).unwrap().table;
        assert_eq!(growing.next_offset(), 30 * segment_rows as u64);
        assert!(growing.earliest_offset() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_trims_appends_as_their_age_runs_out() {
        let store = store(None);
        let sweep = tokio::spawn(store.clone().expire_periodically());
        let aged = Retention {
            max_age_ms: Some(60_000),
            ..Retention::default()
        };
        let first = segment(store.budget(), &[rows(0..10, &["w"])]);
        store
            .append(&key("k"), first, None, Some(aged), None)
            .unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        append(&store, "k", 10..20);
        tokio::time::sleep(Duration::from_secs(30)).await;
        tokio::task::yield_now().await;
        let table = store.peek(&key("k")).unwrap().table;
        assert_eq!((table.earliest_offset(), table.next_offset()), (10, 20));
        tokio::time::sleep(Duration::from_secs(30)).await;
        tokio::task::yield_now().await;
        let table = store.peek(&key("k")).unwrap().table;
        assert_eq!((table.earliest_offset(), table.rows()), (20, 0));
        assert_eq!(store.stats().trimmed_rows, 20);
        sweep.abort();
    }
}
