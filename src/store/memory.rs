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
#[derive(Debug)]
pub struct SlabPool {
    reuse_window: Duration,
    idle: Mutex<Vec<IdleSlab>>,
}

#[derive(Debug)]
struct IdleSlab {
    freed_at: Instant,
    map: MmapRaw,
}

impl SlabPool {
    /// A pool keeping freed slabs for `reuse_window` (zero: unmap them at once).
    pub fn new(reuse_window: Duration) -> Self {
        Self {
            reuse_window,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Bytes of freed slabs waiting for reuse.
    pub fn idle_bytes(&self) -> usize {
        self.lock().iter().map(|slab| slab.map.len()).sum()
    }

    /// Unmap the slabs that waited longer than the reuse window; returns the bytes released.
    pub fn release_expired(&self) -> usize {
        let now = Instant::now();
        let expired: Vec<IdleSlab> = {
            let mut idle = self.lock();
            let (expired, kept) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|slab| now.duration_since(slab.freed_at) >= self.reuse_window);
            *idle = kept;
            expired
        };
        // Unmapped after the lock is released: unmapping gigabytes takes a while.
        expired.iter().map(|slab| slab.map.len()).sum()
    }

    /// Run [`release_expired`](Self::release_expired) four times per reuse window and at least
    /// every 500 ms, until the task running this is dropped or aborted.
    pub async fn release_expired_periodically(self: Arc<Self>) {
        let period =
            (self.reuse_window / 4).clamp(Duration::from_millis(10), LONGEST_RELEASE_PERIOD);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.release_expired();
        }
    }

    /// A mapping of `len` bytes to fill: the most recently freed one of that size, or a fresh
    /// one; `None` if mapping fails.
    fn take(self: &Arc<Self>, len: usize) -> Option<Slab> {
        let map = match self.take_idle(len) {
            Some(map) => map,
            None => MmapRaw::from(huge_page_map(len)?),
        };
        Some(self.slab(map))
    }

    /// The most recently freed mapping of `len` bytes, if one waits in the pool.
    fn take_idle(&self, len: usize) -> Option<MmapRaw> {
        let mut idle = self.lock();
        let newest_fit = idle.iter().rposition(|slab| slab.map.len() == len);
        newest_fit.map(|i| idle.remove(i).map) // `remove` keeps the list oldest first
    }

    /// `map` as a slab that comes back to this pool when dropped.
    fn slab(self: &Arc<Self>, map: MmapRaw) -> Slab {
        Slab {
            map: Some(map),
            pool: Arc::clone(self),
        }
    }

    fn give_back(&self, map: MmapRaw) {
        if self.reuse_window.is_zero() {
            return;
        }
        self.lock().push(IdleSlab {
            freed_at: Instant::now(),
            map,
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
        if let Some(map) = self.map.take() {
            self.pool.give_back(map);
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
/// into memory [`reserve`](Self::reserve)d for it.
#[derive(Debug)]
pub struct SlabWriter {
    pool: Arc<SlabPool>,
    /// The slab being filled, and the offset up to which it is reserved.
    current: Option<(Arc<Slab>, usize)>,
    heap_bytes: usize,
    /// Address and length of the last body filled in place, which [`store`](Self::store) keeps
    /// as it is.
    last_filled: Option<(usize, usize)>,
}

impl SlabWriter {
    /// A writer taking its slabs from `pool`.
    pub fn new(pool: Arc<SlabPool>) -> Self {
        Self {
            pool,
            current: None,
            heap_bytes: 0,
            last_filled: None,
        }
    }

    /// A copy of `body` in table memory, starting at a multiple of `BODY_ALIGNMENT` (64 bytes).
    pub fn copy(&mut self, body: &[u8]) -> Bytes {
        let mut fill = self.reserve(body.len());
        fill.write(body);
        fill.finish()
    }

    /// `body` in table memory: `body` itself if it is the body last filled here by
    /// [`finish_fill`](Self::finish_fill), otherwise a [`copy`](Self::copy).
    pub fn store(&mut self, body: Bytes) -> Bytes {
        if self.last_filled == Some((body.as_ptr() as usize, body.len())) && !body.is_empty() {
            self.last_filled = None;
            return body;
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
    /// the pool, and otherwise gets a mapping that grows as the body is written.
    pub fn reserve(&mut self, len: usize) -> BodyFill {
        BodyFill {
            place: self.place(len),
            len,
            written: 0,
        }
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

    fn place(&mut self, len: usize) -> Place {
        if len == 0 {
            return Place::Empty;
        }
        if self.current.is_none() && self.heap_bytes + len < MAPPED_MIN_BYTES {
            self.heap_bytes += len;
            return Place::heap(len);
        }
        if len > OWN_MAPPING_ABOVE_BYTES {
            // A mapping of its own, rounded up to whole huge pages, so that a body of the same
            // size (such as the next upload of the same table) can reuse it.
            let full = len.next_multiple_of(TRIM_ALIGNMENT);
            if let Some(map) = self.pool.take_idle(full) {
                return Place::Mapped {
                    slab: Arc::new(self.pool.slab(map)),
                    range: 0..len,
                };
            }
            return match GrowingMap::new(full) {
                Some(map) => Place::Growing {
                    map,
                    pool: Arc::clone(&self.pool),
                },
                None => Place::heap(len),
            };
        }
        let fits = matches!(&self.current, Some((_, used)) if used + len <= SLAB_BYTES);
        if !fits {
            self.trim_current();
            match self.pool.take(SLAB_BYTES) {
                Some(slab) => self.current = Some((Arc::new(slab), 0)),
                None => {
                    self.current = None;
                    return Place::heap(len);
                }
            }
        }
        let (slab, used) = self.current.as_mut().expect("a slab was just ensured");
        // Within the mapping: `fits`, or a fresh slab of SLAB_BYTES and
        // `len <= OWN_MAPPING_ABOVE_BYTES`. No other place covers it: `used` only grows.
        let range = *used..*used + len;
        *used = range.end.next_multiple_of(BODY_ALIGNMENT);
        Place::Mapped {
            slab: Arc::clone(slab),
            range,
        }
    }

    /// Done with this table: give back the unused end of the last slab.
    pub fn finish(mut self) {
        self.trim_current();
    }

    /// Return the pages past the written part of the current slab to the system: a reused
    /// slab has them all in memory, and a table keeps its last slab however little it uses.
    fn trim_current(&mut self) {
        let Some((slab, used)) = self.current.take() else {
            return;
        };
        let start = used.next_multiple_of(TRIM_ALIGNMENT);
        if start < SLAB_BYTES {
            // SAFETY: nothing reads or writes the range after `used`: no slice covers it and
            // this writer, its only writer, is done with the slab. Its pages read as zeros
            // afterwards, which is fine for memory that is only ever written before it is read.
            unsafe {
                slab.map()
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, start, SLAB_BYTES - start)
                    .ok();
            }
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
    /// 64-byte aligned; grows as the body is written (a `MutableBuffer` keeps its alignment).
    Heap(MutableBuffer),
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

impl Place {
    /// A heap body, with room for at most `MAPPED_MIN_BYTES` until more is written: a body
    /// lands here when mapping fails, whatever its declared length.
    fn heap(len: usize) -> Self {
        Place::Heap(MutableBuffer::with_capacity(len.min(MAPPED_MIN_BYTES)))
    }
}

/// An anonymous mapping that grows, by remapping, to a final length known in advance.
#[derive(Debug)]
struct GrowingMap {
    map: MmapRaw,
    full: usize,
}

impl GrowingMap {
    /// A mapping that will grow to `full` bytes; mapped at first up to one slab's size (on
    /// Linux, which can grow a mapping; elsewhere, all of it at once).
    fn new(full: usize) -> Option<Self> {
        let first = if cfg!(target_os = "linux") {
            full.min(SLAB_BYTES)
        } else {
            full
        };
        Some(Self {
            map: MmapRaw::from(huge_page_map(first)?),
            full,
        })
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
            // SAFETY: nothing points into the mapping while it is being filled: the body it
            // holds becomes readable only when the fill is finished, so the mapping may move.
            let grown = unsafe {
                self.map
                    .remap(new_len, memmap2::RemapOptions::new().may_move(true))
            };
            grown.is_ok()
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
            Place::Heap(buffer) => buffer.capacity(),
            Place::Mapped { range, .. } => range.len(),
            Place::Growing { map, .. } => map.map.len(),
        }
    }

    /// Append `bytes` to the body.
    ///
    /// # Panics
    /// If that is more than [`remaining`](Self::remaining).
    pub fn write(&mut self, bytes: &[u8]) {
        assert!(
            bytes.len() <= self.remaining(),
            "{} bytes written to a body with {} left",
            bytes.len(),
            self.remaining()
        );
        if let Place::Growing { map, .. } = &mut self.place
            && !map.grow_to(self.written + bytes.len())
        {
            self.move_to_heap();
        }
        match &mut self.place {
            Place::Empty => {}
            Place::Heap(buffer) => buffer.extend_from_slice(bytes),
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
    }

    /// Continue on the heap, with what was written so far, when a mapping cannot grow.
    fn move_to_heap(&mut self) {
        let mut heap = MutableBuffer::with_capacity(self.len.min(self.written + MAPPED_MIN_BYTES));
        if let Place::Growing { map, .. } = &self.place {
            // SAFETY: the first `written` bytes of the mapping were written by this fill, and
            // nothing else writes the mapping.
            let written = unsafe { std::slice::from_raw_parts(map.map.as_ptr(), self.written) };
            heap.extend_from_slice(written);
        }
        self.place = Place::Heap(heap);
    }

    /// The body, now that all of it is written.
    fn finish(self) -> Bytes {
        assert_eq!(self.remaining(), 0, "a body finished before it was written");
        match self.place {
            Place::Empty => Bytes::new(),
            Place::Heap(buffer) => Bytes::from_owner(Buffer::from(buffer)),
            Place::Mapped { slab, range } => Bytes::from_owner(SlabSlice { slab, range }),
            Place::Growing { map, pool } => {
                // Whole huge pages past the body were never written: the mapping is `full`
                // bytes long, the size a body of this length asks the pool for.
                debug_assert_eq!(map.map.len(), map.full);
                let slab = Arc::new(pool.slab(map.map));
                Bytes::from_owner(SlabSlice {
                    slab,
                    range: 0..self.len,
                })
            }
        }
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

    fn writer(pool: &Arc<SlabPool>) -> SlabWriter {
        SlabWriter::new(Arc::clone(pool))
    }

    #[test]
    fn copies_keep_their_contents_and_alignment_across_slabs() {
        let pool = Arc::new(SlabPool::new(Duration::from_secs(10)));
        let mut writer = writer(&pool);
        let sizes = [0, 700 << 10, 5 << 20, 100, 7 << 20, 3 << 20, 9 << 20, 3];
        let copies: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| writer.copy(&body(len, i as u8)))
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
        let pool = Arc::new(SlabPool::new(Duration::from_secs(10)));
        let mut writer = writer(&pool);
        let small = writer.copy(&body(1000, 1));
        let first_in_slab = writer.copy(&body(MAPPED_MIN_BYTES, 2));
        let second_in_slab = writer.copy(&body(100, 3));
        let large = writer.copy(&body(OWN_MAPPING_ABOVE_BYTES + 1, 4));
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
        let pool = Arc::new(SlabPool::new(window));
        let mut writer = writer(&pool);
        writer.copy(&body(100, 0)); // on the heap
        let first = writer.copy(&body(2 << 20, 1)); // the start of a slab
        let address = first.as_ptr();
        writer.finish();
        drop(first);
        assert_eq!(pool.idle_bytes(), SLAB_BYTES, "back in the pool");
        tokio::time::advance(window - Duration::from_millis(1)).await;
        assert_eq!(pool.release_expired(), 0, "still within the window");

        let mut writer = SlabWriter::new(Arc::clone(&pool));
        writer.copy(&body(100, 0));
        let reused = writer.copy(&body(3 << 20, 2));
        assert_eq!(reused.as_ptr(), address, "the freed slab was reused");
        assert!(
            reused.iter().all(|&b| b == 2),
            "old contents were overwritten"
        );
        writer.finish();
        drop(reused);

        // The window starts again when the slab is freed again.
        tokio::time::advance(window - Duration::from_millis(1)).await;
        assert_eq!(pool.release_expired(), 0, "freed again just now");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(pool.release_expired(), SLAB_BYTES);
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_periodic_release_gives_freed_slabs_back_after_the_window() {
        let window = Duration::from_secs(10);
        let pool = Arc::new(SlabPool::new(window));
        let releaser = tokio::spawn(Arc::clone(&pool).release_expired_periodically());
        let mut writer = writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0));
        drop(writer.copy(&body(2 << 20, 1)));
        writer.finish();
        assert_eq!(pool.idle_bytes(), SLAB_BYTES);
        tokio::time::sleep(window - Duration::from_millis(100)).await;
        assert_eq!(pool.idle_bytes(), SLAB_BYTES, "kept for the window");
        // The release runs at least every 500 ms.
        tokio::time::sleep(LONGEST_RELEASE_PERIOD + Duration::from_millis(100)).await;
        assert_eq!(pool.idle_bytes(), 0, "given back after it");
        releaser.abort();
    }

    #[test]
    fn a_large_body_reuses_a_freed_mapping_of_its_size() {
        let pool = Arc::new(SlabPool::new(Duration::from_secs(10)));
        let giant = 40 << 20;
        let mut writer = writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0));
        let first = writer.copy(&body(giant, 1));
        let address = first.as_ptr();
        drop(first);
        assert_eq!(
            pool.idle_bytes(),
            giant,
            "a whole number of huge pages: no rounding"
        );
        let other_size = writer.copy(&body(giant + (4 << 20), 2));
        assert_ne!(
            other_size.as_ptr(),
            address,
            "only a mapping of the same size is reused"
        );
        let same_size = writer.copy(&body(giant - 100, 3));
        assert_eq!(same_size.as_ptr(), address);
        assert!(same_size.iter().all(|&b| b == 3));
        writer.finish();
    }

    #[test]
    fn a_declared_body_holds_memory_as_it_is_written_not_before() {
        let pool = Arc::new(SlabPool::new(Duration::ZERO));
        let mut writer = writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0)); // past the heap
        let declared = 1 << 30;
        let mut fill = writer.reserve(declared);
        assert!(
            fill.held_bytes() <= SLAB_BYTES,
            "a 1 GiB declaration holds {} bytes before anything arrives",
            fill.held_bytes()
        );
        let chunk = body(16 << 20, 7);
        fill.write(&chunk);
        fill.write(&chunk);
        fill.write(&chunk[..1]);
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
            fill.write(&chunk[..n]);
            left -= n;
        }
        let stored = writer.finish_fill(fill);
        assert_eq!(stored.len(), declared);
        assert!(stored[..32 << 20].iter().all(|&b| b == 7));
        assert_eq!(
            writer.store(stored.clone()).as_ptr(),
            stored.as_ptr(),
            "kept in place"
        );
        writer.finish();
    }

    #[test]
    fn without_a_window_freed_slabs_are_unmapped_at_once() {
        let pool = Arc::new(SlabPool::new(Duration::ZERO));
        let mut writer = writer(&pool);
        writer.copy(&body(MAPPED_MIN_BYTES, 0));
        drop(writer.copy(&body(2 << 20, 1)));
        writer.finish();
        assert_eq!(pool.idle_bytes(), 0);
    }
}
