//! What the memory budget refuses: [`OverBudget`], the problem of [`Error::OverBudget`](super::Error::OverBudget).

/// Why a charge was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The upload alone would hold more than the whole budget.
    LargerThanBudget,
    /// Nothing more could be freed: the eviction policy forbids it, or what is left is held
    /// by uploads in progress, by the upload's own key, or by tables still being read.
    NothingToFree,
    /// The system refused the memory although the budget had room: an address-space or
    /// memory limit below the budget (`prlimit --as`, `ulimit -v`, a full machine).
    SystemRefused,
}

/// A charge the budget could not make room for ([`Error::OverBudget`](super::Error::OverBudget)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// The budget in bytes.
    pub limit: usize,
    /// Bytes in use when the charge was refused: charged, and the measured overhead.
    pub used: usize,
    /// Of `used`, what the process holds beyond the charges, as last measured.
    pub overhead: usize,
    /// Bytes the charge asked for.
    pub needed: usize,
    /// Bytes the upload already held.
    pub upload_bytes: usize,
    /// Why it was refused.
    pub reason: RefusalReason,
}
