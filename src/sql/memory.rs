//! Query memory inside the memory budget: DataFusion's memory pool, charged to the same
//! [`MemoryBudget`] as table memory.
//!
//! Operators that hold memory (hash tables of aggregates and joins, sorts) reserve it through
//! this pool from what the budget has free: a query never evicts a cached table (it could be
//! the one the query reads, whose memory eviction would not free). A reservation that does
//! not fit fails the query with RESOURCE_EXHAUSTED, never the process. Nothing spills to
//! disk. A reservation
//! DataFusion makes unconditionally (`grow`) and the budget refuses is left uncharged but
//! counted: the server's measurement of its own memory then covers it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};

use crate::store::budget::{Charge, MakeRoom, MemoryBudget};

/// DataFusion's memory pool over the cache's budget.
pub(crate) struct BudgetPool {
    budget: Arc<MemoryBudget>,
    /// What the running queries hold, charged.
    charged: Charge,
    /// What DataFusion took without asking and the budget had no room for.
    uncharged: AtomicUsize,
}

impl BudgetPool {
    /// A pool charging `budget`.
    pub fn new(budget: &Arc<MemoryBudget>) -> Self {
        Self {
            budget: Arc::clone(budget),
            charged: budget.empty_charge(None),
            uncharged: AtomicUsize::new(0),
        }
    }
}

impl fmt::Debug for BudgetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BudgetPool")
            .field("charged", &self.charged.bytes())
            .field("uncharged", &self.uncharged.load(Ordering::Relaxed))
            .finish()
    }
}

impl fmt::Display for BudgetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the memory budget ({} bytes held by queries)",
            self.reserved()
        )
    }
}

impl MemoryPool for BudgetPool {
    fn name(&self) -> &str {
        "flightcache memory budget"
    }

    fn grow(&self, _reservation: &MemoryReservation, additional: usize) {
        if self
            .charged
            .grow_making_room(additional, MakeRoom::WithoutEvicting)
            .is_err()
        {
            self.uncharged.fetch_add(additional, Ordering::AcqRel);
        }
    }

    fn shrink(&self, _reservation: &MemoryReservation, shrink: usize) {
        // What was never charged is given back first.
        let mut from_uncharged = 0;
        let _ = self
            .uncharged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                from_uncharged = held.min(shrink);
                Some(held - from_uncharged)
            });
        self.charged.shrink(shrink - from_uncharged);
    }

    fn try_grow(&self, _reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.charged
            .grow_making_room(additional, MakeRoom::WithoutEvicting)
            .map_err(|refusal| {
                DataFusionError::ResourcesExhausted(format!(
                    "it needed {additional} bytes more with {} of the budget's {} bytes in use",
                    refusal.used, refusal.limit
                ))
            })
    }

    fn reserved(&self) -> usize {
        self.charged.bytes() + self.uncharged.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        match self.budget.limit() {
            Some(limit) => MemoryLimit::Finite(limit),
            None => MemoryLimit::Infinite,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[test]
    fn reservations_are_charged_to_the_budget_and_refused_past_it() {
        let budget = MemoryBudget::new(Some(1 << 20));
        let pool: Arc<dyn MemoryPool> = Arc::new(BudgetPool::new(&budget));
        let reservation = MemoryConsumer::new("test").register(&pool);
        reservation.try_grow(600 << 10).unwrap();
        assert_eq!(budget.used(), 600 << 10);
        let refused = reservation.try_grow(600 << 10).unwrap_err();
        assert!(
            matches!(refused, DataFusionError::ResourcesExhausted(_)),
            "{refused}"
        );
        assert_eq!(budget.used(), 600 << 10, "a refusal charges nothing");
        drop(reservation);
        assert_eq!(budget.used(), 0, "a query that ends gives its memory back");
    }

    #[test]
    fn memory_taken_without_asking_is_counted_and_given_back() {
        let budget = MemoryBudget::new(Some(1 << 20));
        let pool: Arc<dyn MemoryPool> = Arc::new(BudgetPool::new(&budget));
        let reservation = MemoryConsumer::new("test").register(&pool);
        reservation.grow(2 << 20);
        assert_eq!(pool.reserved(), 2 << 20);
        reservation.shrink(2 << 20);
        assert_eq!(pool.reserved(), 0);
        assert_eq!(budget.used(), 0);
    }
}
