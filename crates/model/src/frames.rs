//! The bytes of every frame of a machine, in one host allocation.
//!
//! Models the machine's RAM (what `page_address()` of a frame points at): one
//! zero-filled allocation for the whole memory, asked of the host at once,
//! instead of a heap allocation per frame on its first use. On Unix, for all
//! but a small machine, it is an anonymous `MAP_NORESERVE` mapping: the host
//! zero-fills a page when it is first touched and reserves nothing before, so
//! memory never touched costs nothing, however big the machine; a small one
//! (a tiny machine, copied once per explored execution) comes from the heap.
//! The frames' bytes are 64-bit words read and written with relaxed atomics
//! (user accesses, `clear_page()`, `copy_page()`, DMA); whether a frame's
//! bytes were ever handed out is kept in its `struct page`
//! ([`crate::page::Page::bytes_used`]), so that a frame whose bytes are still
//! the host's zeros is neither cleared again nor copied with the machine.
//!
//! Leaves out: asking the host for huge pages (`MADV_HUGEPAGE`). Tried: with
//! the usual `defrag=madvise`, a host short of free 2 MiB blocks compacts
//! memory in the fault, and runs took twice as long as often as not; the
//! host's own THP setting decides instead.

use std::sync::atomic::{AtomicU64, Ordering};

/// The frames' bytes: `frames` × `words_per_frame` words.
pub struct FrameArena {
    ptr: *mut AtomicU64,
    len: usize,
    words_per_frame: usize,
}

// SAFETY: the words are atomics; the arena owns its allocation.
unsafe impl Send for FrameArena {}
// SAFETY: as above: shared access is through atomics only.
unsafe impl Sync for FrameArena {}

impl FrameArena {
    /// Zero-filled bytes for `frames` frames of `page_size` bytes.
    pub fn new(frames: usize, page_size: u64) -> FrameArena {
        let words_per_frame = (page_size / 8) as usize;
        let len = frames
            .checked_mul(words_per_frame)
            .expect("frame arena size overflows");
        let ptr = if len == 0 {
            std::ptr::NonNull::<AtomicU64>::dangling().as_ptr()
        } else {
            host::map_zeroed(len)
        };
        FrameArena {
            ptr,
            len,
            words_per_frame,
        }
    }

    /// The size of a frame in bytes.
    pub fn page_size(&self) -> u64 {
        self.words_per_frame as u64 * 8
    }

    /// The words of frame `idx`.
    #[inline]
    pub fn words(&self, idx: usize) -> &[AtomicU64] {
        let start = idx * self.words_per_frame;
        assert!(
            start + self.words_per_frame <= self.len,
            "frame {idx} out of the arena"
        );
        // SAFETY: in bounds (asserted); the allocation lives as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.add(start), self.words_per_frame) }
    }

    /// Copies frame `idx`'s words from `other` (a copy of the machine).
    pub fn copy_frame_from(&self, other: &FrameArena, idx: usize) {
        for (d, s) in self.words(idx).iter().zip(other.words(idx)) {
            d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

impl Drop for FrameArena {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: made by host::map_zeroed(self.len), not yet released.
            unsafe { host::unmap(self.ptr, self.len) };
        }
    }
}

/// The host's zero-filled memory for `len` words: a small arena (a tiny
/// machine, copied once per explored execution) from the heap, a big one
/// mapped.
#[cfg(unix)]
mod host {
    use super::heap;
    use std::sync::atomic::AtomicU64;

    /// Arenas of at least this many bytes are mapped.
    const MAP_BYTES: usize = 1 << 20;

    pub fn map_zeroed(len: usize) -> *mut AtomicU64 {
        let bytes = len * std::mem::size_of::<AtomicU64>();
        if bytes < MAP_BYTES {
            return heap::alloc(len);
        }
        // SAFETY: a fresh private anonymous mapping; all-zero bytes are valid
        // AtomicU64s.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mapping {bytes} bytes for the frames: {}",
            std::io::Error::last_os_error()
        );
        p as *mut AtomicU64
    }

    /// # Safety
    /// `ptr` and `len` are those of a live `map_zeroed` mapping.
    pub unsafe fn unmap(ptr: *mut AtomicU64, len: usize) {
        let bytes = len * std::mem::size_of::<AtomicU64>();
        if bytes < MAP_BYTES {
            return heap::free(ptr, len);
        }
        libc::munmap(ptr as *mut libc::c_void, bytes);
    }
}

#[cfg(not(unix))]
mod host {
    pub use super::heap::{alloc as map_zeroed, free as unmap};
}

/// Zeroed words from the heap.
mod heap {
    use std::alloc::{alloc_zeroed, dealloc, handle_alloc_error, Layout};
    use std::sync::atomic::AtomicU64;

    fn layout(len: usize) -> Layout {
        Layout::array::<AtomicU64>(len).expect("frame arena size overflows")
    }

    pub fn alloc(len: usize) -> *mut AtomicU64 {
        let layout = layout(len);
        // SAFETY: a non-zero size; all-zero bytes are valid AtomicU64s.
        let p = unsafe { alloc_zeroed(layout) } as *mut AtomicU64;
        if p.is_null() {
            handle_alloc_error(layout);
        }
        p
    }

    /// # Safety
    /// `ptr` and `len` are those of a live `alloc` allocation.
    pub unsafe fn free(ptr: *mut AtomicU64, len: usize) {
        dealloc(ptr as *mut u8, layout(len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_arena_is_mapped_and_reserves_nothing() {
        // 64 GiB of frames: more than this machine may have, never touched.
        let a = FrameArena::new(1 << 24, 4096);
        a.words((1 << 24) - 1)[511].store(1, Ordering::Relaxed);
        assert_eq!(a.words(1 << 23)[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn frames_start_zero_are_disjoint_and_copy() {
        let a = FrameArena::new(4, 64);
        assert!(a.words(3).iter().all(|w| w.load(Ordering::Relaxed) == 0));
        a.words(1)[7].store(5, Ordering::Relaxed);
        assert_eq!(a.words(1).len(), 8);
        assert_eq!(a.words(2)[0].load(Ordering::Relaxed), 0);
        let b = FrameArena::new(4, 64);
        b.copy_frame_from(&a, 1);
        assert_eq!(b.words(1)[7].load(Ordering::Relaxed), 5);
        a.words(1)[7].store(6, Ordering::Relaxed);
        assert_eq!(b.words(1)[7].load(Ordering::Relaxed), 5, "independent");
        let _empty = FrameArena::new(0, 64);
    }

    #[test]
    #[should_panic(expected = "out of the arena")]
    fn a_frame_past_the_end_is_refused() {
        FrameArena::new(2, 64).words(2);
    }
}
