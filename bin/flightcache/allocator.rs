//! The process's memory allocator, and giving its freed memory back to the system.
//!
//! mimalloc reuses freed memory across the large, short-lived buffers of a transfer instead of
//! faulting in fresh pages for each (see benches/RESULTS.md for the measurements). It returns
//! ("purges") freed memory to the system only after a delay (1 s in mimalloc 3), and only when
//! the thread that owns the memory next calls into the allocator. A server's worker threads go
//! idle when the transfers end, so without help the buffers of the last transfer stay resident
//! until the next request: 20-90 MiB over idle after dropping a 1 GiB table.
//! [`release_freed_memory`] collects periodically so that an idle server shrinks back, and
//! [`collect_when_parking`] lets each worker thread hand back its own free pages as it goes idle.
//!
//! `flightcache bench` is the opposite case, a client that receives the same large table
//! again every second or so: [`keep_freed_memory`] makes it keep freed memory for reuse longer
//! than the gap between two transfers, as jemalloc does by default (10 s), instead of faulting
//! the next table into fresh pages.
//!
//! The binary's one module with unsafe code: calls into mimalloc's C API, each with a `SAFETY:`
//! comment.
#![allow(unsafe_code)]

use std::time::Duration;

/// mimalloc as the global allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often [`release_freed_memory`] collects: about mimalloc's purge delay, so memory freed
/// at the end of a transfer is returned within two intervals.
pub const RELEASE_INTERVAL: Duration = Duration::from_secs(1);

/// How long `flightcache bench` keeps freed memory for reuse ([`keep_freed_memory`]).
pub const BENCH_KEEP_FREED: Duration = Duration::from_secs(10);

/// mimalloc 3's `mi_option_purge_delay` (its position in `mi_option_t` of `mimalloc.h`; the
/// constants of libmimalloc-sys follow mimalloc 2's numbering).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory for `delay` before returning it to the system (mimalloc's purge delay,
/// 1 s by default), process-wide, from now on.
pub fn keep_freed_memory(delay: Duration) {
    let millis = std::ffi::c_long::try_from(delay.as_millis()).unwrap_or(std::ffi::c_long::MAX);
    // SAFETY: setting an option has no preconditions; mimalloc reads it on each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, millis) };
}

/// Collect this thread's freed allocator pages, at most every [`PARK_COLLECT_INTERVAL`]: for
/// tokio's `on_thread_park`, so that a worker going idle does not keep the free pages of its
/// last transfer (the periodic [`release_freed_memory`] only collects its own thread's).
pub fn collect_when_parking() {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST
        .get()
        .is_none_or(|last| now.duration_since(last) >= PARK_COLLECT_INTERVAL);
    if due {
        LAST.set(Some(now));
        // SAFETY: mi_collect has no preconditions.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

/// How often a parking worker thread collects at most ([`collect_when_parking`]).
pub const PARK_COLLECT_INTERVAL: Duration = Duration::from_millis(100);

/// Return every free page of the allocator to the system now, as far as this thread can (its
/// own heap and memory other threads abandoned): the memory budget's last resort before it
/// evicts a table.
pub fn release_free_memory_now() {
    // SAFETY: mi_collect has no preconditions; forcing it only makes it thorough.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// mimalloc's current purge delay.
#[cfg(test)]
fn purge_delay() -> Duration {
    // SAFETY: reading an option has no preconditions.
    let millis = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
    Duration::from_millis(u64::try_from(millis).expect("a delay, not 'never'"))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc 3's documented default; a wrong option index reads some other option.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), Duration::from_secs(1));
        }
        keep_freed_memory(BENCH_KEEP_FREED);
        assert_eq!(purge_delay(), BENCH_KEEP_FREED);
    }
}
