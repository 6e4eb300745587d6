//! Table memory: uploaded message bodies are copied straight into large huge-page memory
//! mappings ("slabs"), and a [`SlabPool`] lends the slabs of dropped tables to the next uploads.
//!
//! - **Mappings, not the heap.** A table's memory should go back to the system once it is
//!   dropped, which general-purpose allocators do not do (they keep freed memory: a server held
//!   1.2-2.4 GiB after dropping a 1 GiB table). Slabs are anonymous mappings of [`SLAB_BYTES`]
//!   advised to use transparent huge pages: filling fresh 2 MiB pages costs a quarter of filling
//!   4 KiB ones (1 GiB in 0.105 s against 0.41 s), and few, large mappings stay far below the
//!   kernel's `vm.max_map_count`.
//! - **One copy.** A received body is written into its final place, 64-byte aligned, where the
//!   upload then validates it in place: straight from HTTP/2's buffers as they arrive
//!   ([`SlabWriter::reserve`]), or copied whole ([`SlabWriter::copy`]).
//! - **Reuse for ten seconds.** Filling fresh memory is most of what a large put costs: the
//!   kernel zeroes every page first, and on a VM that reports freed pages to its host (this
//!   project's does), the host must fault them in again, up to 2-3 s per GiB. So a slab freed
//!   by a dropped or replaced table waits in the pool for the next upload, by default 10 s
//!   ([`ServerConfig::keep_freed`](crate::ServerConfig::keep_freed)), before it is unmapped. So does the
//!   mapping of its own that a body over [`OWN_MAPPING_ABOVE_BYTES`] gets, such as pyarrow's
//!   one giant message, kept only until it is re-split and then reused by the next upload of
//!   the same table. Allocators keep freed memory for a while in the same way; ten seconds is
//!   jemalloc's default. A server that keeps replacing tables reuses warm memory, even when a
//!   put of gigabytes comes only every few seconds; an idle one gives it all back. The window
//!   runs on tokio's clock, so tests advance it instead of sleeping.
//!
//! The one module of the crate with unsafe code: it reads and writes raw mappings, and each
//! block says why that is sound.
#![allow(unsafe_code)]

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use arrow::buffer::{Buffer, MutableBuffer};
use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw, UncheckedAdvice};

use crate::store::budget::{Charge, MemoryBudget, OverBudget, UploadAccount};

/// Size of a slab.
pub const SLAB_BYTES: usize = 32 << 20;
/// An upload's bodies stay on the heap until they add up to this: a small table does not get
/// a slab of its own.
pub const MAPPED_MIN_BYTES: usize = 1 << 20;
/// A body larger than this gets a mapping of exactly its size instead of a place in a slab,
/// which could leave up to this much of a slab unused.
pub const OWN_MAPPING_ABOVE_BYTES: usize = SLAB_BYTES / 4;
/// Each body starts at a multiple of this, as Arrow buffers want.
pub const BODY_ALIGNMENT: usize = 64;
/// [`SlabPool::release_expired_periodically`] checks at least this often.
const LONGEST_RELEASE_PERIOD: Duration = Duration::from_millis(500);
/// Unused slab memory at the end of a table is returned from this boundary on (a huge page).
const TRIM_ALIGNMENT: usize = 2 << 20;

/// Slabs (and large bodies' own mappings) freed by dropped tables, kept for a reuse window to
/// be reused by uploads.
///
/// Shared by a server's uploads (the store owns one); call
/// [`release_expired`](Self::release_expired) periodically so that an idle server gives the
/// memory back.
///
/// Every mapping is charged to the pool's [`MemoryBudget`] while it exists, whether a table
/// uses it or it waits here (see the `budget` module).
#[derive(Debug)]
pub struct SlabPool {
    keep_freed: Duration,
    budget: Arc<MemoryBudget>,
    idle: Mutex<Vec<IdleSlab>>,
}

#[derive(Debug)]
struct IdleSlab {
    freed_at: Instant,
    map: MmapRaw,
    /// The pages of `map` that may still be in memory (a trimmed slab's end is not).
    charge: Charge,
}

impl SlabPool {
    /// A pool keeping freed slabs for `keep_freed` (zero: unmap them at once), charging
    /// every mapping to `budget`.
    pub fn new(keep_freed: Duration, budget: Arc<MemoryBudget>) -> Self {
        Self {
            keep_freed,
            budget,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A pool with no memory limit, for tests and tools.
    pub fn unlimited(keep_freed: Duration) -> Self {
        Self::new(keep_freed, MemoryBudget::unlimited())
    }

    /// The budget the pool's memory is charged to.
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    /// Bytes of freed slabs waiting for reuse, as charged.
    pub fn idle_bytes(&self) -> usize {
        self.lock().iter().map(|slab| slab.charge.bytes()).sum()
    }

    /// Unmap every slab waiting for reuse, now (to make room in the budget); returns the bytes
    /// released.
    pub fn release_all(&self) -> usize {
        let released = std::mem::take(&mut *self.lock());
        released.iter().map(|slab| slab.charge.bytes()).sum()
    }

    /// Unmap the slabs that waited longer than the reuse window; returns the bytes released.
    pub fn release_expired(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<IdleSlab> = {
            let mut idle = self.lock();
            let (expired, kept) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|slab| now.duration_since(slab.freed_at) >= self.keep_freed);
            *idle = kept;
            expired
        };
        // Unmapped after the lock is released: unmapping gigabytes takes a while.
        expired.iter().map(|slab| slab.charge.bytes()).sum()
    }

    /// Run [`release_expired`](Self::release_expired) four times per reuse window and at least
    /// every 500 ms, until the task running this is dropped or aborted.
    pub async fn release_expired_periodically(self: Arc<Self>) {
        let period = (self.keep_freed / 4).clamp(Duration::from_millis(10), LONGEST_RELEASE_PERIOD);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.release_expired();
        }
    }

    /// A slab of [`SLAB_BYTES`] to fill for `account`'s upload: the most recently freed one,
    /// still charged for the pages it has in memory, or a fresh one, charged for nothing yet
    /// (its pages are charged as they are filled, see [`SlabWriter::place`]); `None` if
    /// mapping fails.
    fn take_slab(self: &Arc<Self>, account: &Arc<UploadAccount>) -> Option<Slab> {
        if let Some(IdleSlab {
            map, mut charge, ..
        }) = self.take_idle(SLAB_BYTES)
        {
            charge.attach_to_upload(account);
            return Some(self.slab(map, charge));
        }
        let charge = self.budget.empty_charge(Some(account));
        huge_page_map(SLAB_BYTES).map(|map| self.slab(MmapRaw::from(map), charge))
    }

    /// A freed mapping of `len` bytes for one body of `account`'s upload, charged whole (the
    /// body fills it), if one waits in the pool.
    fn take_for_body(
        self: &Arc<Self>,
        len: usize,
        account: &Arc<UploadAccount>,
    ) -> Result<Option<Slab>, OverBudget> {
        let Some(IdleSlab {
            map, mut charge, ..
        }) = self.take_idle(len)
        else {
            return Ok(None);
        };
        charge.attach_to_upload(account);
        charge.resize(len)?; // if that fails, the mapping is unmapped
        Ok(Some(self.slab(map, charge)))
    }

    /// The most recently freed mapping of `len` bytes, if one waits in the pool.
    fn take_idle(&self, len: usize) -> Option<IdleSlab> {
        let mut idle = self.lock();
        let newest_fit = idle.iter().rposition(|slab| slab.map.len() == len);
        newest_fit.map(|i| idle.remove(i)) // `remove` keeps the list oldest first
    }

    /// `map`, charged by `charge`, as a slab that comes back to this pool when dropped.
    fn slab(self: &Arc<Self>, map: MmapRaw, charge: Charge) -> Slab {
        Slab {
            map: Some(map),
            charge: Some(charge),
            pool: Arc::clone(self),
        }
    }

    fn give_back(&self, map: MmapRaw, mut charge: Charge) {
        if self.keep_freed.is_zero() {
            return;
        }
        charge.detach_from_upload();
        self.lock().push(IdleSlab {
            freed_at: Instant::now(),
            map,
            charge,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<IdleSlab>> {
        // The list stays consistent even if a holder panicked: every change to it is a single
        // push, remove or replacement of the whole list.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One slab; it goes back to its pool when the last body in it is dropped.
#[derive(Debug)]
struct Slab {
    map: Option<MmapRaw>,
    /// The budget's charge for the mapping's pages that may be in memory.
    charge: Option<Charge>,
    pool: Arc<SlabPool>,
}

impl Slab {
    fn map(&self) -> &MmapRaw {
        self.map
            .as_ref()
            .expect("a slab has its mapping until dropped")
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        if let (Some(map), Some(charge)) = (self.map.take(), self.charge.take()) {
            self.pool.give_back(map, charge);
        }
    }
}

/// One body within a slab; the slab lives as long as any of its bodies.
struct SlabSlice {
    slab: Arc<Slab>,
    range: Range<usize>,
}

impl AsRef<[u8]> for SlabSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range lies within the mapping (checked when the slice was made), it was
        // written (by a `BodyFill`) before this slice existed and is never written again while
        // the slab lives (see `SlabWriter::place`), and the mapping stays mapped while
        // `self.slab` does.
        unsafe {
            std::slice::from_raw_parts(
                self.slab.map().as_ptr().add(self.range.start),
                self.range.len(),
            )
        }
    }
}

/// Places one table's message bodies in table memory, in order: the heap while the table is
/// small, then slabs from a [`SlabPool`], and a mapping of its own for a large body.
///
/// A body is either copied in whole ([`copy`](Self::copy)), or written in pieces as it arrives
/// into memory [`reserve`](Self::reserve)d for it. Every allocation is charged to the pool's
/// budget, for the writer's upload, before it is made; a charge that does not fit fails the
/// write with `OverBudget`.
#[derive(Debug)]
pub struct SlabWriter {
    pool: Arc<SlabPool>,
    account: Arc<UploadAccount>,
    /// The slab being filled, from the offset up to which it is reserved.
    current: Option<OpenSlab>,
    /// The end of a slab the key's last append left open, filled before any fresh slab is
    /// taken ([`resume`](Self::resume)).
    resumable: Option<OpenSlab>,
    heap_bytes: usize,
    /// Address and length of the last body filled in place, which [`store`](Self::store) keeps
    /// as it is.
    last_filled: Option<(usize, usize)>,
}

impl SlabWriter {
    /// A writer for `account`'s upload, taking its slabs from `pool`.
    pub fn new(pool: Arc<SlabPool>, account: Arc<UploadAccount>) -> Self {
        Self {
            pool,
            account,
            current: None,
            resumable: None,
            heap_bytes: 0,
            last_filled: None,
        }
    }

    /// The upload this writer charges its memory to.
    pub fn account(&self) -> &Arc<UploadAccount> {
        &self.account
    }

    /// A copy of `body` in table memory, starting at a multiple of `BODY_ALIGNMENT` (64 bytes).
    ///
    /// # Errors
    /// [`OverBudget`] if its memory does not fit in the budget.
    pub fn copy(&mut self, body: &[u8]) -> Result<Bytes, OverBudget> {
        let mut fill = self.reserve(body.len())?;
        fill.write(body)?;
        Ok(fill.finish())
    }

    /// `body` in table memory: `body` itself if it is the body last filled here by
    /// [`finish_fill`](Self::finish_fill), otherwise a [`copy`](Self::copy).
    ///
    /// # Errors
    /// [`OverBudget`] if a copy does not fit in the budget.
    pub fn store(&mut self, body: Bytes) -> Result<Bytes, OverBudget> {
        if self.last_filled == Some((body.as_ptr() as usize, body.len())) && !body.is_empty() {
            self.last_filled = None;
            return Ok(body);
        }
        self.copy(&body)
    }

    /// Table memory for a body of `len` bytes, starting at a multiple of `BODY_ALIGNMENT` (64
    /// bytes), to be written in pieces as the body arrives, then finished with
    /// [`finish_fill`](Self::finish_fill).
    ///
    /// Declaring a length costs little before the bytes arrive: a body on the heap (under
    /// `MAPPED_MIN_BYTES`, 1 MiB) or in the current slab (at most 8 MiB of a 32 MiB slab) has
    /// bounded room reserved; a larger one reuses a freed mapping of its size, if one waits in
    /// the pool, and otherwise gets a mapping that grows (and is charged) as the body is
    /// written.
    ///
    /// # Errors
    /// [`OverBudget`] if the room reserved does not fit in the budget.
    pub fn reserve(&mut self, len: usize) -> Result<BodyFill, OverBudget> {
        Ok(BodyFill {
            place: self.place(len)?,
            len,
            written: 0,
        })
    }

    /// The body `fill` holds, now that all of it is written; [`store`](Self::store) keeps it
    /// where it is.
    ///
    /// # Panics
    /// If some of it is not written.
    pub fn finish_fill(&mut self, fill: BodyFill) -> Bytes {
        let body = fill.finish();
        self.last_filled = Some((body.as_ptr() as usize, body.len()));
        body
    }

    fn place(&mut self, len: usize) -> Result<Place, OverBudget> {
        if len == 0 {
            return Ok(Place::Empty);
        }
        if self.current.is_none() && self.heap_bytes + len < MAPPED_MIN_BYTES {
            self.heap_bytes += len;
            return self.heap(len);
        }
        if len > OWN_MAPPING_ABOVE_BYTES {
            // A mapping of its own, rounded up to whole huge pages, so that a body of the same
            // size (such as the next upload of the same table) can reuse it.
            let full = len.next_multiple_of(TRIM_ALIGNMENT);
            if let Some(slab) = self.pool.take_for_body(full, &self.account)? {
                return Ok(Place::Mapped {
                    slab: Arc::new(slab),
                    range: 0..len,
                });
            }
            // A mapping the system refuses (an address-space limit): so would the heap.
            return match GrowingMap::new(full, &self.pool, &self.account) {
                Some(map) => Ok(Place::Growing {
                    map,
                    pool: Arc::clone(&self.pool),
                }),
                None => Err(self.pool.budget().system_refused(full, Some(&self.account))),
            };
        }
        let fits = matches!(&self.current, Some(open) if open.used + len <= SLAB_BYTES);
        if !fits {
            self.current = None; // its unused end is trimmed as it is dropped
            let resumed = self.resumable.take();
            match resumed.filter(|open| open.used + len <= SLAB_BYTES) {
                Some(open) => self.current = Some(open),
                None => match self.pool.take_slab(&self.account) {
                    Some(slab) => {
                        self.current = Some(OpenSlab {
                            slab: Arc::new(slab),
                            used: 0,
                        });
                    }
                    None => {
                        let budget = self.pool.budget();
                        return Err(budget.system_refused(SLAB_BYTES, Some(&self.account)));
                    }
                },
            }
        }
        let OpenSlab { slab, used } = self.current.as_mut().expect("a slab was just ensured");
        // Within the mapping: `fits`, or a fresh slab of SLAB_BYTES and
        // `len <= OWN_MAPPING_ABOVE_BYTES`. No other place covers it: `used` only grows.
        let range = *used..*used + len;
        // The slab's pages are charged as bodies reach them, whole huge pages at a time.
        let charge = slab
            .charge
            .as_ref()
            .expect("a slab has its charge until dropped");
        let reached = range.end.next_multiple_of(TRIM_ALIGNMENT).min(SLAB_BYTES);
        if reached > charge.bytes() {
            charge.resize(reached)?;
        }
        *used = range.end.next_multiple_of(BODY_ALIGNMENT);
        Ok(Place::Mapped {
            slab: Arc::clone(slab),
            range,
        })
    }

    /// A heap body, with room (charged) for at most `MAPPED_MIN_BYTES` until more is written:
    /// the bodies of a table's first `MAPPED_MIN_BYTES`.
    fn heap(&self, len: usize) -> Result<Place, OverBudget> {
        let capacity = len.min(MAPPED_MIN_BYTES).next_multiple_of(BODY_ALIGNMENT);
        let charge = self.pool.budget().charge(capacity, Some(&self.account))?;
        Ok(Place::Heap {
            buffer: MutableBuffer::with_capacity(capacity),
            charge,
        })
    }

    /// Go on filling `open`, the unused end of a slab an earlier upload left (the key's last
    /// append), when this upload needs a slab, before taking a fresh one: appends of a few
    /// MiB each then share huge pages instead of each faulting in one and leaving most of it
    /// unused. Small bodies still go to the heap first, and an upload that needs no slab
    /// hands `open` back from [`finish_open`](Self::finish_open).
    pub fn resume(&mut self, open: OpenSlab) {
        self.resumable = Some(open);
    }

    /// Done with this table: give back the unused end of the last slab.
    pub fn finish(self) {
        // Dropped, the open end is trimmed if the table's bodies use the slab, and a slab
        // they do not use goes back to the pool whole (`OpenSlab::drop`).
        drop(self.current);
    }

    /// Done with this upload, whose key's next append may go on filling the last slab: give
    /// back its unused end beyond the huge page last written, and return it (`None` if full
    /// or if there is none).
    pub fn finish_open(mut self) -> Option<OpenSlab> {
        let open = self.current.take().or_else(|| self.resumable.take())?;
        open.trim();
        (open.used < SLAB_BYTES).then_some(open)
    }
}

/// The unused end of a slab that one writer at a time fills: a [`SlabWriter`]'s current
/// slab, or one kept with a key between its appends ([`SlabWriter::finish_open`],
/// [`SlabWriter::resume`]). The bodies before `used` are readable and never written again;
/// nothing reads or writes what follows `used` but the writer holding this.
#[derive(Debug)]
pub struct OpenSlab {
    slab: Arc<Slab>,
    /// The offset up to which the slab is reserved.
    used: usize,
}

impl OpenSlab {
    /// Bytes of the slab still free.
    pub fn room(&self) -> usize {
        SLAB_BYTES - self.used
    }

    /// Return the pages past the huge page holding `used` to the system (and to the budget):
    /// a reused slab has them all in memory, and a table keeps its last slab however little
    /// it uses. They read as zeros afterwards and are faulted in again if written.
    fn trim(&self) {
        let start = self.used.next_multiple_of(TRIM_ALIGNMENT);
        if start >= SLAB_BYTES {
            return;
        }
        // SAFETY: nothing reads or writes the range after `used`: no slice covers it and the
        // holder of this `OpenSlab`, its only writer, writes nothing while trimming. Its pages
        // read as zeros afterwards, which is fine for memory that is only ever written before
        // it is read.
        let trimmed = unsafe {
            self.slab.map().unchecked_advise_range(
                UncheckedAdvice::DontNeed,
                start,
                SLAB_BYTES - start,
            )
        };
        if trimmed.is_ok()
            && let Some(charge) = &self.slab.charge
        {
            charge.shrink(charge.bytes().saturating_sub(start));
        }
    }
}

impl Drop for OpenSlab {
    /// An open slab given up (a table replaced, an upload that failed) gives back its unused
    /// end if tables still use the slab; a slab no table uses goes back to the pool whole,
    /// its pages kept warm for the next upload.
    fn drop(&mut self) {
        if Arc::strong_count(&self.slab) > 1 {
            self.trim();
        }
    }
}

/// Table memory reserved for one body by [`SlabWriter::reserve`]: [`write`](Self::write) the
/// body into it in order, then [`SlabWriter::finish_fill`] it.
#[derive(Debug)]
pub struct BodyFill {
    place: Place,
    len: usize,
    written: usize,
}

/// Where a reserved body goes.
#[derive(Debug)]
enum Place {
    Empty,
    /// 64-byte aligned; grows as the body is written (a `MutableBuffer` keeps its alignment),
    /// its capacity charged.
    Heap {
        buffer: MutableBuffer,
        charge: Charge,
    },
    /// A range of a slab (or of a mapping of its own) that nothing else reads or writes.
    Mapped {
        slab: Arc<Slab>,
        range: Range<usize>,
    },
    /// A large body's own mapping, growing as the body is written; it becomes a slab of
    /// `pool` when the body is finished.
    Growing {
        map: GrowingMap,
        pool: Arc<SlabPool>,
    },
}

/// An anonymous mapping that grows, by remapping, to a final length known in advance. Its
/// pages are charged as they are written, whole huge pages at a time: mapped pages that were
/// never written take no memory.
#[derive(Debug)]
struct GrowingMap {
    map: MmapRaw,
    charge: Charge,
    full: usize,
}

impl GrowingMap {
    /// A mapping that will grow to `full` bytes; mapped at first up to one slab's size (on
    /// Linux, which can grow a mapping; elsewhere, all of it at once). `None` if mapping
    /// fails.
    fn new(full: usize, pool: &SlabPool, account: &Arc<UploadAccount>) -> Option<Self> {
        let first = if cfg!(target_os = "linux") {
            full.min(SLAB_BYTES)
        } else {
            full
        };
        Some(Self {
            map: MmapRaw::from(huge_page_map(first)?),
            charge: pool.budget().empty_charge(Some(account)),
            full,
        })
    }

    /// Charge the pages that writing up to `len` bytes reaches.
    fn charge_to(&self, len: usize) -> Result<(), OverBudget> {
        let reached = len.next_multiple_of(TRIM_ALIGNMENT).min(self.full);
        if reached > self.charge.bytes() {
            self.charge.resize(reached)?;
        }
        Ok(())
    }

    /// Make room for `len` bytes, doubling the mapping at least; false if it cannot grow.
    fn grow_to(&mut self, len: usize) -> bool {
        if len <= self.map.len() {
            return true;
        }
        let new_len = (self.map.len() * 2)
            .max(len)
            .next_multiple_of(TRIM_ALIGNMENT)
            .min(self.full);
        #[cfg(target_os = "linux")]
        {
            // Doubling, or, if the system refuses that much (an address-space limit), just
            // what `len` needs.
            let exact = len.next_multiple_of(TRIM_ALIGNMENT).min(self.full);
            [new_len, exact].into_iter().any(|new_len| {
                // SAFETY: nothing points into the mapping while it is being filled: the body
                // it holds becomes readable only when the fill is finished, so it may move.
                let grown = unsafe {
                    self.map
                        .remap(new_len, memmap2::RemapOptions::new().may_move(true))
                };
                grown.is_ok()
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = new_len;
            false
        }
    }
}

impl BodyFill {
    /// Bytes still to write.
    pub fn remaining(&self) -> usize {
        self.len - self.written
    }

    /// Bytes of memory held for the body so far: what its place has mapped or allocated.
    pub fn held_bytes(&self) -> usize {
        match &self.place {
            Place::Empty => 0,
            Place::Heap { buffer, .. } => buffer.capacity(),
            Place::Mapped { range, .. } => range.len(),
            Place::Growing { map, .. } => map.map.len(),
        }
    }

    /// Append `bytes` to the body.
    ///
    /// # Errors
    /// [`OverBudget`] if the memory the body grows into does not fit in the budget; the fill
    /// is then unusable.
    ///
    /// # Panics
    /// If that is more than [`remaining`](Self::remaining).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), OverBudget> {
        assert!(
            bytes.len() <= self.remaining(),
            "{} bytes written to a body with {} left",
            bytes.len(),
            self.remaining()
        );
        if let Place::Growing { map, .. } = &mut self.place {
            map.charge_to(self.written + bytes.len())?;
            if !map.grow_to(self.written + bytes.len()) {
                // The system refused more address space: so would the heap.
                return Err(map.charge.system_refused(bytes.len()));
            }
        }
        match &mut self.place {
            Place::Empty => {}
            Place::Heap { buffer, charge } => {
                let needed = buffer.len() + bytes.len();
                if needed > buffer.capacity() {
                    // What `MutableBuffer::reserve` grows to, charged before it allocates.
                    let capacity = needed
                        .next_multiple_of(BODY_ALIGNMENT)
                        .max(buffer.capacity() * 2);
                    charge.resize(capacity)?;
                    buffer.reserve(bytes.len());
                }
                buffer.extend_from_slice(bytes);
            }
            Place::Mapped { slab, range } => {
                // SAFETY: the destination lies within `range` (checked above), which lies within
                // the mapping; nothing else reads or writes `range` before `finish` (see
                // `SlabWriter::place`), and the mapping stays mapped while `slab` does.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        slab.map().as_mut_ptr().add(range.start + self.written),
                        bytes.len(),
                    );
                }
            }
            Place::Growing { map, .. } => {
                // SAFETY: the mapping holds at least `written + bytes.len()` bytes (`grow_to`
                // above), the fill is its only user, and `bytes` cannot overlap it (nothing
                // outside the fill points into it).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        map.map.as_mut_ptr().add(self.written),
                        bytes.len(),
                    );
                }
            }
        }
        self.written += bytes.len();
        Ok(())
    }

    /// The body, now that all of it is written.
    fn finish(self) -> Bytes {
        assert_eq!(self.remaining(), 0, "a body finished before it was written");
        match self.place {
            Place::Empty => Bytes::new(),
            Place::Heap { buffer, charge } => Bytes::from_owner(HeapBody {
                buffer: Buffer::from(buffer),
                _charge: charge,
            }),
            Place::Mapped { slab, range } => Bytes::from_owner(SlabSlice { slab, range }),
            Place::Growing { map, pool } => {
                // Whole huge pages past the body were never written: the mapping is `full`
                // bytes long, the size a body of this length asks the pool for.
                debug_assert_eq!(map.map.len(), map.full);
                let slab = Arc::new(pool.slab(map.map, map.charge));
                Bytes::from_owner(SlabSlice {
                    slab,
                    range: 0..self.len,
                })
            }
        }
    }
}

/// A body on the heap, with its charge.
struct HeapBody {
    buffer: Buffer,
    _charge: Charge,
}

impl AsRef<[u8]> for HeapBody {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_slice()
    }
}

fn huge_page_map(len: usize) -> Option<memmap2::MmapMut> {
    let map = MmapOptions::new().len(len).map_anon().ok()?;
    // Only advice: without transparent huge pages the mapping works with ordinary pages.
    #[cfg(target_os = "linux")]
    map.advise(memmap2::Advice::HugePage).ok();
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize, fill: u8) -> Vec<u8> {
        vec![fill; len]
    }

    fn new_writer(pool: &Arc<SlabPool>) -> SlabWriter {
        SlabWriter::new(Arc::clone(pool), UploadAccount::new(pool.budget()))
    }

    #[test]
    fn copies_keep_their_contents_and_alignment_across_slabs() {
        let pool = Arc::new(SlabPool::unlimited(Duration::from_secs(10)));
        let mut writer = new_writer(&pool);
        let sizes = [0, 700 << 10, 5 << 20, 100, 7 << 20, 3 << 20, 9 << 20, 3];
        let copies: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| writer.copy(&body(len, i as u8)).unwrap())
            .collect();
        writer.finish();
        for (i, (copy, &len)) in copies.iter().zip(&sizes).enumerate() {
            assert_eq!(copy.len(), len);
            assert!(copy.iter().all(|&b| b == i as u8), "copy {i} changed");
            if len > 0 {
                let address = copy.as_ptr() as usize;
                assert_eq!(address % BODY_ALIGNMENT, 0, "copy {i} at {address:#x}");
            }
        }
    }

    #[test]
    fn a_small_table_stays_on_the_heap_and_a_large_body_gets_its_own_mapping() {
        let pool = Arc::new(SlabPool::unlimited(Duration::from_secs(10)));
        let mut writer = new_writer(&pool);
        let small = writer.copy(&body(1000, 1)).unwrap();
        let first_in_slab = writer.copy(&body(MAPPED_MIN_BYTES, 2)).unwrap();
        let second_in_slab = writer.copy(&body(100, 3)).unwrap();
        let large = writer.copy(&body(OWN_MAPPING_ABOVE_BYTES + 1, 4)).unwrap();
        writer.finish();
        let slab_start = first_in_slab.as_ptr() as usize;
        assert_eq!(
            second_in_slab.as_ptr() as usize,
            slab_start + MAPPED_MIN_BYTES,
            "packed right after the previous body"
        );
        let slab = slab_start..slab_start + SLAB_BYTES;
        assert!(!slab.contains(&(small.as_ptr() as usize)));
        assert!(!slab.contains(&(large.as_ptr() as usize)));
        assert_eq!(pool.idle_bytes(), 0, "nothing freed yet");
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slab_is_reused_within_the_window_and_released_after_it() {
        let window = Duration::from_secs(10);
        let pool = Arc::new(SlabPool::unlimited(window));
        let mut writer = new_writer(&pool);
        writer.copy(&body(100, 0)).unwrap(); // on the heap
        let first = writer.copy(&body(2 << 20, 1)).unwrap(); // the start of a slab
        let address = first.as_ptr();
        writer.finish();
        drop(first);
        // Back in the pool, charged for its written 2 MiB: the rest was trimmed.
        assert_eq!(pool.idle_bytes(), 2 << 20, "back in the pool");
        assert_eq!(pool.budget().used(), 2 << 20, "the heap body is freed");
        tokio::time::advance(window - Duration::from_millis(1)).await;
        assert_eq!(pool.release_expired(), 0, "still within the window");

        let mut second = new_writer(&pool);
        second.copy(&body(100, 0)).unwrap();
        let reused = second.copy(&body(3 << 20, 2)).unwrap();
        assert_eq!(reused.as_ptr(), address, "the freed slab was reused");
        assert!(
            reused.iter().all(|&b| b == 2),
            "old contents were overwritten"
        );
        assert_eq!(
            pool.budget().used(),
            4 << 20,
            "reused, charged for the huge pages its bodies reach: 3 MiB written, 4 MiB"
        );
        second.finish();
        drop(reused);

        // The window starts again when the slab is freed again.
        tokio::time::advance(window - Duration::from_millis(1)).await;
        assert_eq!(pool.release_expired(), 0, "freed again just now");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            pool.release_expired(),
            4 << 20,
            "3 MiB written, trimmed at 4"
        );
        assert_eq!(pool.idle_bytes(), 0);
        assert_eq!(pool.budget().used(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_periodic_release_gives_freed_slabs_back_after_the_window() {
        let window = Duration::from_secs(10);
        let pool = Arc::new(SlabPool::unlimited(window));
        let releaser = tokio::spawn(Arc::clone(&pool).release_expired_periodically());
        let mut writer = new_writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0)).unwrap();
        drop(writer.copy(&body(2 << 20, 1)).unwrap());
        writer.finish();
        let written = 3 << 20; // trimmed at the next huge page, 4 MiB
        assert_eq!(pool.idle_bytes(), written + (1 << 20));
        tokio::time::sleep(window - Duration::from_millis(100)).await;
        assert_eq!(
            pool.idle_bytes(),
            written + (1 << 20),
            "kept for the window"
        );
        // The release runs at least every 500 ms.
        tokio::time::sleep(LONGEST_RELEASE_PERIOD + Duration::from_millis(100)).await;
        assert_eq!(pool.idle_bytes(), 0, "given back after it");
        releaser.abort();
    }

    #[test]
    fn a_large_body_reuses_a_freed_mapping_of_its_size() {
        let pool = Arc::new(SlabPool::unlimited(Duration::from_secs(10)));
        let giant = 40 << 20;
        let mut writer = new_writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0)).unwrap();
        let first = writer.copy(&body(giant, 1)).unwrap();
        let address = first.as_ptr();
        drop(first);
        assert_eq!(
            pool.idle_bytes(),
            giant,
            "a whole number of huge pages: no rounding"
        );
        let other_size = writer.copy(&body(giant + (4 << 20), 2)).unwrap();
        assert_ne!(
            other_size.as_ptr(),
            address,
            "only a mapping of the same size is reused"
        );
        let same_size = writer.copy(&body(giant - 100, 3)).unwrap();
        assert_eq!(same_size.as_ptr(), address);
        assert!(same_size.iter().all(|&b| b == 3));
        writer.finish();
    }

    #[test]
    fn a_declared_body_holds_memory_as_it_is_written_not_before() {
        let pool = Arc::new(SlabPool::unlimited(Duration::ZERO));
        let mut writer = new_writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0)).unwrap(); // past the heap
        let declared = 1 << 30;
        let mut fill = writer.reserve(declared).unwrap();
        assert!(
            fill.held_bytes() <= SLAB_BYTES,
            "a 1 GiB declaration holds {} bytes before anything arrives",
            fill.held_bytes()
        );
        let chunk = body(16 << 20, 7);
        fill.write(&chunk).unwrap();
        fill.write(&chunk).unwrap();
        fill.write(&chunk[..1]).unwrap();
        assert!(fill.held_bytes() > (32 << 20));
        assert!(
            fill.held_bytes() <= 2 * ((32 << 20) + TRIM_ALIGNMENT),
            "grows with what arrived: {}",
            fill.held_bytes()
        );
        // Written to the end, it is the body, whatever the moves while it grew.
        let mut left = fill.remaining();
        while left > 0 {
            let n = left.min(chunk.len());
            fill.write(&chunk[..n]).unwrap();
            left -= n;
        }
        let stored = writer.finish_fill(fill);
        assert_eq!(stored.len(), declared);
        assert!(stored[..32 << 20].iter().all(|&b| b == 7));
        assert_eq!(
            writer.store(stored.clone()).unwrap().as_ptr(),
            stored.as_ptr(),
            "kept in place"
        );
        writer.finish();
    }

    #[test]
    fn memory_is_charged_as_bodies_reach_it_and_refused_past_the_budget() {
        let budget = MemoryBudget::new(Some(10 << 20));
        let pool = Arc::new(SlabPool::new(Duration::ZERO, Arc::clone(&budget)));
        let mut writer = new_writer(&pool);
        let mut kept = vec![writer.copy(&body(MAPPED_MIN_BYTES, 0)).unwrap()];
        assert_eq!(
            budget.used(),
            2 << 20,
            "a slab is charged by the huge pages its bodies reach, not whole"
        );
        for i in 1..8 {
            kept.push(writer.copy(&body(1 << 20, i)).unwrap());
        }
        assert_eq!(budget.used(), 8 << 20);
        assert_eq!(budget.uploading(), 8 << 20);
        let refused = writer.copy(&body(3 << 20, 9)).unwrap_err();
        assert_eq!((refused.limit, refused.needed), (10 << 20, 4 << 20));
        assert_eq!(budget.used(), 8 << 20, "a refused charge takes nothing");

        // A large body's own mapping: declaring it costs nothing, writing it is charged.
        let mut fill = writer.reserve(1 << 30).unwrap();
        assert_eq!(budget.used(), 8 << 20);
        fill.write(&body(2 << 20, 1)).unwrap();
        assert_eq!(budget.used(), 10 << 20);
        let refused = fill.write(&body(1 << 20, 1)).unwrap_err();
        assert_eq!(refused.needed, 2 << 20);
        drop(fill);
        assert_eq!(
            budget.used(),
            8 << 20,
            "an abandoned body gives its memory back"
        );
        writer.finish();
        drop(kept);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_append_goes_on_filling_the_slab_the_last_one_left_open() {
        let budget = MemoryBudget::new(Some(64 << 20));
        let pool = Arc::new(SlabPool::new(Duration::ZERO, Arc::clone(&budget)));
        let mut first = new_writer(&pool);
        let mut kept = vec![first.copy(&body(MAPPED_MIN_BYTES, 1)).unwrap()];
        let open = first.finish_open().expect("the slab has room left");
        assert_eq!(open.room(), SLAB_BYTES - MAPPED_MIN_BYTES);
        assert_eq!(budget.used(), 2 << 20, "one huge page reached");

        // Four more appends of 1 MiB, each resuming the slab the one before left open: their
        // bodies follow each other in one slab and fault in 5 MiB, not five huge pages each.
        let mut open = Some(open);
        for i in 2..=5 {
            let mut writer = new_writer(&pool);
            writer.resume(open.take().unwrap());
            kept.push(writer.copy(&body(1 << 20, i)).unwrap());
            open = writer.finish_open();
        }
        for pair in kept.windows(2) {
            assert_eq!(
                pair[0].as_ptr() as usize + pair[0].len(),
                pair[1].as_ptr() as usize
            );
        }
        assert_eq!(budget.used(), 6 << 20, "5 MiB written: three huge pages");
        for (i, copy) in kept.iter().enumerate() {
            assert!(copy.iter().all(|&b| b == i as u8 + 1), "append {i} changed");
        }

        // A tiny append stays on the heap and hands the open end on untouched.
        let mut tiny = new_writer(&pool);
        tiny.resume(open.take().unwrap());
        let small = tiny.copy(&body(100, 7)).unwrap();
        let last = kept.last().unwrap();
        assert_ne!(small.as_ptr() as usize, last.as_ptr() as usize + last.len());
        open = tiny.finish_open();
        assert_eq!(open.as_ref().unwrap().room(), SLAB_BYTES - (5 << 20));
        drop(small);

        // A writer that already fills a slab of its own keeps it.
        let mut busy = new_writer(&pool);
        let own = busy.copy(&body(MAPPED_MIN_BYTES, 9)).unwrap();
        busy.resume(open.take().unwrap());
        let next = busy.copy(&body(100, 9)).unwrap();
        assert_eq!(own.as_ptr() as usize + (1 << 20), next.as_ptr() as usize);
        busy.finish();
        drop((own, next));

        // The bodies keep the slab; once they are gone, so is its memory.
        assert!(budget.used() >= 6 << 20);
        drop(kept);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn without_a_window_freed_slabs_are_unmapped_at_once() {
        let pool = Arc::new(SlabPool::unlimited(Duration::ZERO));
        let mut writer = new_writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0)).unwrap();
        drop(writer.copy(&body(2 << 20, 1)).unwrap());
        writer.finish();
        assert_eq!(pool.idle_bytes(), 0);
    }
}
