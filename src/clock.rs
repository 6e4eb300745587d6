//! The clock that times to live are measured on: keys' expiry deadlines and sign-in sessions.
//!
//! It is tokio's clock, which the Rust tests pause and advance, plus a skip that only a server
//! started with `--test-clock` lets an admin move forward (the `advance-clock` action), so
//! that tests in any language, pyarrow's among them, see a key expire without sleeping.
//! Everything else (timeouts, throttles, the reuse of freed memory) runs on tokio's clock alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Tokio's clock plus how far it was moved forward. Clones share the skip.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    skipped_nanos: Arc<AtomicU64>,
}

impl Clock {
    /// The time now: tokio's, plus the skip.
    pub(crate) fn now(&self) -> Instant {
        Instant::now() + self.skipped()
    }

    /// How far the clock was moved forward in all.
    pub(crate) fn skipped(&self) -> Duration {
        Duration::from_nanos(self.skipped_nanos.load(Ordering::Relaxed))
    }

    /// Move the clock forward by `by` (saturating at about 584 years in all).
    pub(crate) fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self
            .skipped_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(old.saturating_add(nanos))
            });
    }

    /// The tokio instant at which this clock reads `at`: what to sleep until to wake at `at`.
    pub(crate) fn tokio_instant(&self, at: Instant) -> Instant {
        at.checked_sub(self.skipped()).unwrap_or_else(Instant::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_with_tokio_and_jumps_when_advanced() {
        let clock = Clock::default();
        let shared = clock.clone();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now() - start, Duration::from_secs(2));
        shared.advance(Duration::from_secs(60));
        assert_eq!(
            clock.now() - start,
            Duration::from_secs(62),
            "clones share the skip"
        );
        assert_eq!(clock.skipped(), Duration::from_secs(60));
        let deadline = clock.now() + Duration::from_secs(5);
        assert_eq!(
            clock.tokio_instant(deadline),
            Instant::now() + Duration::from_secs(5)
        );
    }
}
