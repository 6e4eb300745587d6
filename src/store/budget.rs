//! `MemoryBudget`: the memory the cache may hold, charged as it is allocated.
//!
//! Every allocation that holds table data takes a [`Charge`] before it is made: slabs and
//! large bodies' own mappings (as they grow), heap bodies, IPC headers, and the request bytes
//! an upload buffers. A charge is given back when its memory is freed, so the budget counts
//! what is held, wherever it is: in a cached table, in an upload in progress, in the pool of
//! freed memory waiting for reuse, or in a table that was evicted or dropped while a `do_get`
//! still streams it.
//!
//! A charge that does not fit makes room first (see [`Relieve`]): the store gives back the
//! freed-memory pool, then evicts the least recently used tables if its policy allows. If that
//! is not enough, or if the upload alone is larger than the budget, the charge is refused with
//! an [`OverBudget`] that names what was needed: the upload fails at once, before it reads more.
//!
//! Uploads charge as their bytes arrive, never for a length a client only declared, so eight
//! concurrent uploads cannot overshoot the budget together, and a client that declares a huge
//! message holds nothing until it sends it.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

pub use crate::error::budget::{OverBudget, RefusalReason};
use crate::protocol::key::TableKey;

/// Frees memory so that a charge can fit; the store implements it.
pub trait Relieve: Send + Sync {
    /// Free some memory held for the cache without evicting the table under `protected` (the
    /// key being uploaded, whose old table must survive a failed upload; the key being read),
    /// nor trimming it unless `may_trim_protected` (an append's own key may lose its oldest
    /// rows as any capped key does; trimming a key being read frees nothing). False once there
    /// is nothing left it may free.
    fn relieve(&self, protected: Option<&TableKey>, may_trim_protected: bool) -> bool;

    /// Free memory held for the cache that holds no table (the pool of freed memory, the
    /// allocator's free pages), evicting nothing. False once there is none.
    fn release_unused(&self) -> bool;
}

/// How a charge that does not fit may make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MakeRoom {
    /// By evicting tables too (table memory: uploads).
    Evicting,
    /// By evicting or trimming tables other than the protected key's, which the charge's
    /// holder reads (a read's own copy of stored rows: freeing that table would free nothing
    /// while it is read).
    EvictingOthers,
    /// Only from memory that holds no table (a query's working memory: a query never
    /// evicts a cached table, which could be the one it reads).
    WithoutEvicting,
}

/// The memory budget of one server: its limit, what is charged against it, and what makes
/// room when a charge does not fit. Shared as `Arc<MemoryBudget>`.
pub struct MemoryBudget {
    /// The limit in bytes; `usize::MAX` when there is none.
    limit: usize,
    used: AtomicUsize,
    /// Memory the process holds that no charge covers, as last measured (see
    /// [`set_overhead`](Self::set_overhead)); counted against the limit with `used`.
    overhead: AtomicUsize,
    /// Bytes charged by uploads in progress (part of `used`).
    uploading: AtomicUsize,
    /// Charges refused.
    refused: AtomicU64,
    relief: OnceLock<Weak<dyn Relieve>>,
    /// Set when the process's memory beyond the charges is measured (see
    /// [`count_process_memory`](Self::count_process_memory)).
    process: OnceLock<ProcessMemory>,
    /// Held while a charge makes room, so that concurrent charges do not each evict for
    /// themselves what one eviction would have made room for.
    making_room: Mutex<()>,
}

impl fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .field("uploading", &self.uploading())
            .finish_non_exhaustive()
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes (`None`: no limit; charges are still counted).
    pub fn new(limit: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.unwrap_or(usize::MAX),
            used: AtomicUsize::new(0),
            overhead: AtomicUsize::new(0),
            uploading: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            relief: OnceLock::new(),
            process: OnceLock::new(),
            making_room: Mutex::new(()),
        })
    }

    /// A budget without a limit, for memory used outside a server (tests, tools).
    pub fn unlimited() -> Arc<Self> {
        Self::new(None)
    }

    /// Make room with `relief` when a charge does not fit. Set once, by the store.
    pub fn set_relief(&self, relief: Weak<dyn Relieve>) {
        self.relief.set(relief).ok();
    }

    /// The limit in bytes, if there is one.
    pub fn limit(&self) -> Option<usize> {
        (self.limit != usize::MAX).then_some(self.limit)
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Memory the process holds beyond the charges, as last measured.
    pub fn overhead(&self) -> usize {
        self.overhead.load(Ordering::Relaxed)
    }

    /// Count `bytes` the process holds beyond the charges against the limit too, beyond the
    /// first [`PROCESS_ALLOWANCE`]: the server itself, HTTP/2 buffers, the allocator's free
    /// memory. Whoever measures the process's resident memory sets it, periodically, to that
    /// minus [`used`](Self::used), so that the budget bounds the whole process to the limit
    /// plus the allowance.
    pub fn set_overhead(&self, bytes: usize) {
        self.overhead.store(bytes, Ordering::Relaxed);
    }

    /// Count the process's resident memory beyond the charges against the limit, from now on
    /// measured by [`measure_overhead`](Self::measure_overhead) (call it periodically), so
    /// that the budget bounds the whole process. `release_free_memory`, if given, makes the
    /// allocator give its free memory back to the system: the budget calls it, at most every
    /// [`RELEASE_FREE_MEMORY_EVERY`], before it evicts a table to make room.
    pub fn count_process_memory(&self, release_free_memory: Option<fn()>) {
        self.process
            .set(ProcessMemory {
                release_free_memory,
                last_release: Mutex::new(None),
            })
            .ok();
        self.measure_overhead();
    }

    /// Measure the process's resident memory and count what the charges do not cover (if
    /// [`count_process_memory`](Self::count_process_memory) was called).
    pub fn measure_overhead(&self) {
        if self.process.get().is_some()
            && let Some(rss) = process_rss()
        {
            self.set_overhead(rss.saturating_sub(self.used()));
        }
    }

    /// Make room until the charges fit the limit again, if the overhead measured since the last
    /// charge grew into it (HTTP/2 buffers under load, the allocator's free memory): without
    /// this, the process would stay above its limit until the next upload. Gives back free
    /// allocator memory first, then relieves (the reuse pool, then tables, as a charge would);
    /// false if it could not get back under the limit.
    pub fn enforce_limit(&self) -> bool {
        if self.used() <= self.limit_for_charges() {
            return true;
        }
        let _making_room = self
            .making_room
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let relief = self.relief.get().and_then(Weak::upgrade);
        while self.used() > self.limit_for_charges() {
            if self.release_free_memory() {
                continue;
            }
            let relieved = relief
                .as_ref()
                .is_some_and(|relief| relief.relieve(None, true));
            if !relieved {
                return false;
            }
        }
        true
    }

    /// Make the allocator give back its free memory, and measure again: whether that lowered
    /// the overhead. At most every [`RELEASE_FREE_MEMORY_EVERY`]: it costs a pass over the
    /// allocator's memory.
    pub fn release_free_memory(&self) -> bool {
        let Some(process) = self.process.get() else {
            return false;
        };
        let Some(release) = process.release_free_memory else {
            return false;
        };
        {
            let mut last = process
                .last_release
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = std::time::Instant::now();
            if last.is_some_and(|last| now.duration_since(last) < RELEASE_FREE_MEMORY_EVERY) {
                return false;
            }
            *last = Some(now);
        }
        let before = self.overhead();
        release();
        self.measure_overhead();
        self.overhead() + (1 << 20) <= before
    }

    /// Bytes charged now by uploads in progress.
    pub fn uploading(&self) -> usize {
        self.uploading.load(Ordering::Relaxed)
    }

    /// Charges refused since the budget was made: each one failed an upload, a query or a
    /// read that had to copy rows.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A charge of nothing, to [`grow`](Charge::grow) later.
    pub fn empty_charge(self: &Arc<Self>, account: Option<&Arc<UploadAccount>>) -> Charge {
        Charge {
            budget: Arc::clone(self),
            account: account.cloned(),
            bytes: AtomicUsize::new(0),
        }
    }

    /// Charge `bytes` for `account`'s upload, making room if they do not fit.
    ///
    /// # Errors
    /// [`OverBudget`] if they do not fit even after making room, or if the upload would then
    /// hold more than the whole budget by itself.
    pub fn charge(
        self: &Arc<Self>,
        bytes: usize,
        account: Option<&Arc<UploadAccount>>,
    ) -> Result<Charge, OverBudget> {
        let charge = self.empty_charge(account);
        charge.grow(bytes)?;
        Ok(charge)
    }

    /// The refusal to give when the system, not the budget, refused `bytes` more for an
    /// upload holding `account`'s: counted among the refused uploads.
    pub fn system_refused(&self, bytes: usize, account: Option<&UploadAccount>) -> OverBudget {
        self.refused.fetch_add(1, Ordering::Relaxed);
        OverBudget {
            limit: self.limit,
            used: self.used() + self.overhead(),
            overhead: self.overhead(),
            needed: bytes,
            upload_bytes: account.map_or(0, UploadAccount::bytes),
            reason: RefusalReason::SystemRefused,
        }
    }

    /// The limit left for charges once the measured overhead beyond
    /// [`PROCESS_ALLOWANCE`] is set aside.
    fn limit_for_charges(&self) -> usize {
        let counted = self.overhead().saturating_sub(PROCESS_ALLOWANCE);
        self.limit.saturating_sub(counted)
    }

    /// Add `bytes` to `used` if they fit under the limit.
    fn try_add(&self, bytes: usize) -> bool {
        let limit = self.limit_for_charges();
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok()
    }

    /// Add `bytes` to `used`, making room for them if need be.
    fn reserve(
        &self,
        bytes: usize,
        account: Option<&UploadAccount>,
        make_room: MakeRoom,
    ) -> Result<(), OverBudget> {
        if self.try_add(bytes) {
            return Ok(());
        }
        let upload_bytes = account.map_or(0, UploadAccount::bytes);
        let pinned = account.map_or(0, |account| account.pinned);
        let refuse = |reason| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(OverBudget {
                limit: self.limit,
                used: self.used() + self.overhead(),
                overhead: self.overhead(),
                needed: bytes,
                upload_bytes,
                reason,
            })
        };
        let protected = account.and_then(UploadAccount::key);
        let _making_room = self
            .making_room
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let relief = self.relief.get().and_then(Weak::upgrade);
        loop {
            if self.try_add(bytes) {
                return Ok(());
            }
            if upload_bytes.saturating_add(pinned).saturating_add(bytes) > self.limit_for_charges()
            {
                // Evicting cannot help: only the process's own memory could shrink.
                if self.release_free_memory() {
                    continue;
                }
                return refuse(RefusalReason::LargerThanBudget);
            }
            let relieved = relief.as_ref().is_some_and(|relief| match make_room {
                MakeRoom::Evicting => relief.relieve(protected, true),
                MakeRoom::EvictingOthers => relief.relieve(protected, false),
                MakeRoom::WithoutEvicting => relief.release_unused(),
            });
            if !relieved {
                return refuse(RefusalReason::NothingToFree);
            }
        }
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The process's own memory the budget does not count: a server at rest (its code, runtime and
/// buffers) takes 15-40 MiB, which a small budget should not have to hold. Measured overhead
/// beyond it counts against the limit, so a process's RSS stays within its budget plus this.
pub const PROCESS_ALLOWANCE: usize = 64 << 20;

/// How often [`MemoryBudget::release_free_memory`] may run at most.
pub const RELEASE_FREE_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// How the process's own memory is measured and given back.
struct ProcessMemory {
    release_free_memory: Option<fn()>,
    last_release: Mutex<Option<std::time::Instant>>,
}

/// This process's resident memory that is its own (`RssAnon` + `RssShmem` of
/// /proc/self/status), where it can be read: not the pages of files it maps (the binary, the
/// tables a data directory serves from disk), which are the page cache's and which the kernel
/// can drop and read again.
fn process_rss() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(status_bytes(&status, "RssAnon")? + status_bytes(&status, "RssShmem").unwrap_or(0))
}

/// A size this process's /proc/self/status gives in KiB (`VmRSS`, `VmSize`), in bytes, where
/// it can be read.
pub(crate) fn own_status_bytes(field: &str) -> Option<usize> {
    status_bytes(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// `field`'s size in `status` (the text of /proc/self/status), in bytes.
fn status_bytes(status: &str, field: &str) -> Option<usize> {
    let line = status.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes charged against a [`MemoryBudget`], given back when the charge is dropped (or
/// [`shrink`](Self::shrink)s). Held by what holds the memory: a slab, a heap body, a table's
/// headers, an upload's buffered request bytes.
pub struct Charge {
    budget: Arc<MemoryBudget>,
    /// The upload whose memory this is, while it counts as an upload's.
    account: Option<Arc<UploadAccount>>,
    bytes: AtomicUsize,
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Charge")
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl Charge {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Charge `more` bytes too, making room if they do not fit (as its upload's account
    /// allows: evicting tables, unless it is one of the store's own).
    ///
    /// # Errors
    /// [`OverBudget`], and the charge is unchanged.
    pub fn grow(&self, more: usize) -> Result<(), OverBudget> {
        let make_room = self
            .account
            .as_ref()
            .map_or(MakeRoom::Evicting, |account| account.make_room);
        self.grow_making_room(more, make_room)
    }

    /// Charge `more` bytes too, making room only as `make_room` allows.
    ///
    /// # Errors
    /// [`OverBudget`], and the charge is unchanged.
    pub fn grow_making_room(&self, more: usize, make_room: MakeRoom) -> Result<(), OverBudget> {
        if more == 0 {
            return Ok(());
        }
        self.budget
            .reserve(more, self.account.as_deref(), make_room)?;
        self.bytes.fetch_add(more, Ordering::AcqRel);
        if let Some(account) = &self.account {
            account.add(more);
        }
        Ok(())
    }

    /// The refusal to give when the system refused `bytes` more for this charge's upload
    /// (see [`MemoryBudget::system_refused`]).
    pub fn system_refused(&self, bytes: usize) -> OverBudget {
        self.budget.system_refused(bytes, self.account.as_deref())
    }

    /// A new charge of `bytes` on the same budget, for the same upload.
    ///
    /// # Errors
    /// [`OverBudget`] if they do not fit.
    pub fn another(&self, bytes: usize) -> Result<Charge, OverBudget> {
        self.budget.charge(bytes, self.account.as_ref())
    }

    /// Grow or shrink the charge to `bytes`.
    ///
    /// # Errors
    /// [`OverBudget`] if growing does not fit; the charge is unchanged.
    pub fn resize(&self, bytes: usize) -> Result<(), OverBudget> {
        let now = self.bytes();
        if bytes > now {
            self.grow(bytes - now)
        } else {
            self.shrink(now - bytes);
            Ok(())
        }
    }

    /// Give back `less` bytes of the charge (at most all of it).
    pub fn shrink(&self, less: usize) {
        let less = less.min(self.bytes());
        if less == 0 {
            return;
        }
        self.bytes.fetch_sub(less, Ordering::AcqRel);
        if let Some(account) = &self.account {
            account.remove(less);
        }
        self.budget.release(less);
    }

    /// The charge counts as `account`'s upload's from now on (reused pool memory).
    pub fn attach_to_upload(&mut self, account: &Arc<UploadAccount>) {
        self.detach_from_upload();
        account.add(self.bytes());
        self.account = Some(Arc::clone(account));
    }

    /// The charge no longer counts as an upload's (its memory went to the freed pool).
    pub fn detach_from_upload(&mut self) {
        if let Some(account) = self.account.take() {
            account.remove(self.bytes());
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let bytes = *self.bytes.get_mut();
        if let Some(account) = &self.account {
            account.remove(bytes);
        }
        self.budget.release(bytes);
    }
}

/// The memory one upload has charged, counted as "uploads in progress" until the upload
/// ends (stored or failed), and the key it writes, whose old table relief must not evict. A
/// read's own copies are charged under an account too ([`reading`](Self::reading)), never
/// counted as an upload's.
pub struct UploadAccount {
    budget: Arc<MemoryBudget>,
    key: OnceLock<TableKey>,
    /// Bytes charged under this account and not yet given back, and whether the upload is
    /// still in progress.
    state: Mutex<(usize, bool)>,
    /// How its charges make room when they do not fit.
    make_room: MakeRoom,
    /// Memory its holder keeps in use that no eviction can free (a read's table), counted
    /// with its charges when deciding whether they could fit at all.
    pinned: usize,
}

impl fmt::Debug for UploadAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadAccount")
            .field("key", &self.key.get())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

impl UploadAccount {
    /// The account of a new upload charging `budget`.
    pub fn new(budget: &Arc<MemoryBudget>) -> Arc<Self> {
        Self::making_room(budget, MakeRoom::Evicting)
    }

    /// The account of an upload that the store makes of its own accord (a merge of appends):
    /// its charges never evict a table, they fail instead.
    pub fn without_evicting(budget: &Arc<MemoryBudget>) -> Arc<Self> {
        Self::making_room(budget, MakeRoom::WithoutEvicting)
    }

    /// The account of a read's own copy of stored rows (the rest of a batch it starts
    /// inside, encoded again): not an upload, so never counted among uploads in progress; its
    /// charges make room by evicting or trimming any table but `key`'s, whose memory (`pinned`
    /// bytes) the read holds, and are refused at once if they could not fit beside it.
    pub fn reading(budget: &Arc<MemoryBudget>, key: TableKey, pinned: usize) -> Arc<Self> {
        Arc::new(Self {
            budget: Arc::clone(budget),
            key: OnceLock::from(key),
            // Not in progress: its charges are never counted among uploads.
            state: Mutex::new((0, false)),
            make_room: MakeRoom::EvictingOthers,
            pinned,
        })
    }

    fn making_room(budget: &Arc<MemoryBudget>, make_room: MakeRoom) -> Arc<Self> {
        Arc::new(Self {
            budget: Arc::clone(budget),
            key: OnceLock::new(),
            state: Mutex::new((0, true)),
            make_room,
            pinned: 0,
        })
    }

    /// The budget the upload charges.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// The upload writes `key`: its current table is not evicted to make room for it.
    pub fn set_key(&self, key: TableKey) {
        self.key.set(key).ok();
    }

    fn key(&self) -> Option<&TableKey> {
        self.key.get()
    }

    /// Bytes the upload holds.
    pub fn bytes(&self) -> usize {
        self.lock().0
    }

    /// The upload ended: what it holds now belongs to its table (or is being freed).
    pub fn end(&self) {
        let mut state = self.lock();
        if std::mem::replace(&mut state.1, false) {
            self.budget.uploading.fetch_sub(state.0, Ordering::AcqRel);
        }
    }

    fn add(&self, bytes: usize) {
        let mut state = self.lock();
        state.0 += bytes;
        if state.1 {
            self.budget.uploading.fetch_add(bytes, Ordering::AcqRel);
        }
    }

    fn remove(&self, bytes: usize) {
        let mut state = self.lock();
        state.0 = state.0.saturating_sub(bytes);
        if state.1 {
            self.budget.uploading.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        // Every change is one field update under the lock; a panicking holder leaves it whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for UploadAccount {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frees `step` bytes of `held` per call, as the store's relief would by evicting.
    struct Freeing {
        held: Mutex<Vec<Charge>>,
    }

    impl Relieve for Freeing {
        fn relieve(&self, _protected: Option<&TableKey>, _may_trim_protected: bool) -> bool {
            self.held.lock().unwrap().pop().is_some()
        }

        fn release_unused(&self) -> bool {
            false
        }
    }

    #[test]
    fn charges_fit_under_the_limit_and_come_back_when_dropped() {
        let budget = MemoryBudget::new(Some(100));
        let a = budget.charge(60, None).unwrap();
        let refused = budget.charge(41, None).unwrap_err();
        assert_eq!(refused.reason, RefusalReason::NothingToFree);
        assert_eq!((refused.limit, refused.used, refused.needed), (100, 60, 41));
        assert_eq!(budget.refused(), 1);
        let b = budget.charge(40, None).unwrap();
        assert_eq!(budget.used(), 100);
        drop(a);
        b.grow(30).unwrap();
        b.shrink(50);
        assert_eq!((b.bytes(), budget.used()), (20, 20));
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn relief_frees_until_the_charge_fits_or_nothing_is_left() {
        let budget = MemoryBudget::new(Some(100));
        let relief = Arc::new(Freeing {
            held: Mutex::new(vec![
                budget.charge(30, None).unwrap(),
                budget.charge(30, None).unwrap(),
                budget.charge(30, None).unwrap(),
            ]),
        });
        let weak = Arc::downgrade(&relief);
        budget.set_relief(weak);
        let fits_after_two = budget.charge(70, None).unwrap();
        assert_eq!(relief.held.lock().unwrap().len(), 1, "freed two of three");
        assert_eq!(budget.used(), 100);
        let err = budget.charge(40, None).unwrap_err();
        assert_eq!(err.reason, RefusalReason::NothingToFree);
        assert!(
            relief.held.lock().unwrap().is_empty(),
            "freed everything first"
        );
        drop(fits_after_two);
    }

    #[test]
    fn a_charge_without_evicting_takes_only_free_room() {
        let budget = MemoryBudget::new(Some(100));
        let relief = Arc::new(Freeing {
            held: Mutex::new(vec![budget.charge(60, None).unwrap()]),
        });
        let weak = Arc::downgrade(&relief);
        budget.set_relief(weak);
        let query = budget.empty_charge(None);
        query
            .grow_making_room(40, MakeRoom::WithoutEvicting)
            .unwrap();
        let err = query
            .grow_making_room(1, MakeRoom::WithoutEvicting)
            .unwrap_err();
        assert_eq!(err.reason, RefusalReason::NothingToFree);
        assert_eq!(relief.held.lock().unwrap().len(), 1, "nothing evicted");
        assert_eq!(query.bytes(), 40);
    }

    /// Overhead that grows after the last charge (HTTP/2 buffers under load) makes room at the
    /// next measurement, not only at the next upload.
    #[test]
    fn overhead_that_grows_into_the_limit_makes_room_at_once() {
        let budget = MemoryBudget::new(Some(PROCESS_ALLOWANCE + 100));
        let held = || budget.charge(40, None).unwrap();
        let relief = Arc::new(Freeing {
            held: Mutex::new(vec![held(), held(), held()]),
        });
        let weak = Arc::downgrade(&relief);
        budget.set_relief(weak);
        assert!(budget.enforce_limit());
        assert_eq!(budget.used(), 120, "within the limit: nothing freed");
        budget.set_overhead(PROCESS_ALLOWANCE + PROCESS_ALLOWANCE + 50);
        assert!(budget.enforce_limit());
        assert_eq!(
            budget.used(),
            40,
            "freed down to the 50 bytes left for charges"
        );
        let pinned = budget.charge(10, None).unwrap(); // say, an upload's
        budget.set_overhead(PROCESS_ALLOWANCE + PROCESS_ALLOWANCE + 95);
        assert!(
            !budget.enforce_limit(),
            "the upload's 10 bytes cannot be freed"
        );
        assert_eq!(budget.used(), 10);
        drop(pinned);
    }

    #[test]
    fn an_upload_larger_than_the_budget_is_refused_without_freeing_anything() {
        let budget = MemoryBudget::new(Some(100));
        let relief = Arc::new(Freeing {
            held: Mutex::new(vec![budget.charge(50, None).unwrap()]),
        });
        let weak = Arc::downgrade(&relief);
        budget.set_relief(weak);
        let account = UploadAccount::new(&budget);
        let first = budget.charge(40, Some(&account)).unwrap();
        assert_eq!(budget.uploading(), 40);
        let err = first.grow(61).unwrap_err();
        assert_eq!(err.reason, RefusalReason::LargerThanBudget);
        assert_eq!(err.upload_bytes, 40);
        assert_eq!(relief.held.lock().unwrap().len(), 1, "nothing evicted");
        assert_eq!(first.bytes(), 40, "unchanged");
    }

    #[test]
    fn measured_overhead_counts_against_the_limit() {
        let budget = MemoryBudget::new(Some(100));
        budget.set_overhead(PROCESS_ALLOWANCE);
        let a = budget.charge(100, None).unwrap();
        a.shrink(100);
        budget.set_overhead(PROCESS_ALLOWANCE + 30);
        a.grow(70).unwrap();
        let err = budget.charge(1, None).unwrap_err();
        assert_eq!(
            err.used,
            70 + PROCESS_ALLOWANCE + 30,
            "charges and overhead"
        );
        budget.set_overhead(0);
        a.grow(30).unwrap();
        let account = UploadAccount::new(&budget);
        budget.set_overhead(PROCESS_ALLOWANCE + 90);
        let err = budget.charge(20, Some(&account)).unwrap_err();
        assert_eq!(
            err.reason,
            RefusalReason::LargerThanBudget,
            "only 10 left for charges"
        );
    }

    #[test]
    fn the_process_overhead_is_measured_and_released_on_demand() {
        static RELEASED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        fn release() {
            RELEASED.fetch_add(1, Ordering::Relaxed);
        }
        let budget = MemoryBudget::new(Some(1 << 40));
        assert!(
            !budget.release_free_memory(),
            "not measured: nothing to release"
        );
        budget.count_process_memory(Some(release));
        assert!(
            budget.overhead() > 0,
            "a running process has resident memory"
        );
        budget.release_free_memory();
        budget.release_free_memory(); // within RELEASE_FREE_MEMORY_EVERY: skipped
        assert_eq!(RELEASED.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_upload_counts_as_uploading_until_it_ends() {
        let budget = MemoryBudget::unlimited();
        let account = UploadAccount::new(&budget);
        let body = budget.charge(1000, Some(&account)).unwrap();
        let mut pooled = budget.charge(24, Some(&account)).unwrap();
        assert_eq!((budget.uploading(), account.bytes()), (1024, 1024));
        pooled.detach_from_upload();
        assert_eq!(budget.uploading(), 1000);
        account.end();
        assert_eq!(budget.uploading(), 0);
        assert_eq!(budget.used(), 1024, "still held, by a table now");
        drop(body);
        assert_eq!((budget.uploading(), budget.used()), (0, 24));
        assert_eq!(budget.limit(), None);
    }
}
