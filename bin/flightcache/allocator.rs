//! The process's memory allocator, and giving its freed memory back to the system.
//!
//! mimalloc reuses freed memory across the large, short-lived buffers of a transfer instead of
//! faulting in fresh pages for each (see benches/RESULTS.md for the measurements). It returns
//! ("purges") freed memory to the system only after a delay (1 s in mimalloc 3), and only when
//! the thread that owns the memory next calls into the allocator. A server's worker threads go
//! idle when the transfers end, so without help the buffers of the last transfer stay resident
//! until the next request: 20-90 MiB over idle after dropping a 1 GiB table.
//! [`release_freed_memory`] collects periodically so that an idle server shrinks back.

use std::time::Duration;

/// mimalloc as the global allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often [`release_freed_memory`] collects: about mimalloc's purge delay, so memory freed
/// at the end of a transfer is returned within two intervals.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// Every `interval`, free this thread's unused allocator pages and return to the system all
/// freed memory whose purge delay has passed (process-wide). Runs until its task is aborted.
///
/// The collection is the one mimalloc runs itself while a thread allocates (not a forced
/// one), so it costs nothing extra during transfers; it matters when every thread is idle.
pub async fn release_freed_memory(interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // SAFETY: mi_collect has no preconditions; it may be called from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}
