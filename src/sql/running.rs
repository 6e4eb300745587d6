//! The queries running now, by statement handle, so that `CancelFlightInfo` can stop them.
//!
//! Tickets are stateless (see [`handle`](crate::sql::handle)), so a query is found by the
//! signed handle its ticket carries: cancelling a `FlightInfo` stops every run of its
//! statement by the caller it was issued to. A run leaves the registry when its stream ends
//! or is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

/// One run's cancellation: a flag, and a wake-up for its stream.
#[derive(Debug, Default)]
pub(crate) struct Cancel {
    cancelled: AtomicBool,
    wake: Notify,
}

impl Cancel {
    /// Resolves once the run is cancelled (at once if it was already).
    pub async fn cancelled(&self) {
        while !self.cancelled.load(Ordering::Acquire) {
            self.wake.notified().await;
        }
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        // A stored permit: the stream sees it even if it is not waiting at this moment.
        self.wake.notify_one();
    }
}

/// The running queries.
#[derive(Debug, Default)]
pub(crate) struct RunningQueries {
    next_id: AtomicU64,
    by_handle: Mutex<HashMap<Bytes, HashMap<u64, Arc<Cancel>>>>,
}

impl RunningQueries {
    /// Register a run of the statement `handle`; it is forgotten when the registration drops.
    pub fn register(self: &Arc<Self>, handle: Bytes) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Cancel::default());
        self.lock()
            .entry(handle.clone())
            .or_default()
            .insert(id, Arc::clone(&cancel));
        Registration {
            queries: Arc::clone(self),
            handle,
            id,
            cancel,
        }
    }

    /// Cancel every run of `handle`; how many there were.
    pub fn cancel(&self, handle: &Bytes) -> usize {
        let runs = self.lock();
        let Some(runs) = runs.get(handle) else {
            return 0;
        };
        for cancel in runs.values() {
            cancel.cancel();
        }
        runs.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, HashMap<u64, Arc<Cancel>>>> {
        self.by_handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A run in the registry.
#[derive(Debug)]
pub(crate) struct Registration {
    queries: Arc<RunningQueries>,
    handle: Bytes,
    id: u64,
    cancel: Arc<Cancel>,
}

impl Registration {
    /// This run's cancellation.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut runs = self.queries.lock();
        if let Some(ids) = runs.get_mut(&self.handle) {
            ids.remove(&self.id);
            if ids.is_empty() {
                runs.remove(&self.handle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancelled_run_wakes_and_a_finished_one_is_forgotten() {
        let queries = Arc::new(RunningQueries::default());
        let handle = Bytes::from_static(b"statement");
        let run = queries.register(handle.clone());
        assert_eq!(queries.cancel(&handle), 1);
        run.cancel().cancelled().await; // the permit was stored: resolves at once
        drop(run);
        assert_eq!(queries.cancel(&handle), 0);
        assert!(queries.lock().is_empty());
    }
}
