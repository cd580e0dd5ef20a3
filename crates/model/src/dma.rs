//! A DMA device through long-term pins, as the fixed buffers of fs/io_uring.c
//! (v5.8) give one: the driver pins a user buffer once and the device then
//! reads and writes the pinned frames directly, by frame, with no page table,
//! no TLB and no fault (RDMA memory regions, VFIO and io_uring all work so).
//!
//! Models io_sqe_buffer_register() for one buffer (pin_user_pages() of the
//! whole range under `mmap_lock` for read, all or nothing: a partial pin is
//! released and fails with -EFAULT) and io_sqe_buffer_unregister() (one
//! unpin_user_page() per page). The scenario's variants: `write` pins with
//! FOLL_WRITE|FOLL_LONGTERM (io_uring's flags), without it FOLL_LONGTERM
//! alone (a read-only long-term pin, as the gup_test driver's
//! PIN_LONGTERM_TEST_START takes); `fast` pins with pin_user_pages_fast()
//! (the lockless walk first) instead.
//!
//! Each device access of a page is one step of the device: a scheduling
//! point on the frame's bytes, then the access.
//!
//! Leaves out: accounting against RLIMIT_MEMLOCK, the file-backed VMA
//! refusal (-EOPNOTSUPP: every VMA is anonymous here), bvec merging.

use crate::cpu::Cpu;
use crate::engine::footprint::Obj;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::gup::FollFlags;
use crate::mm_types::MmStruct;
use crate::page::{fill_bytes, read_byte};
use crate::types::{Pfn, VirtAddr};
use std::sync::Arc;

/// A registered buffer (`struct io_mapped_ubuf`): a pin of a user range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaBuffer {
    /// `imu->ubuf`: the user address the buffer starts at.
    pub ubuf: VirtAddr,
    /// `imu->len`: the buffer's length in bytes.
    pub len_bytes: u64,
    /// The pinned pages, one per base page the range touches, from the page
    /// of `ubuf` on (`imu->bvec[].bv_page`).
    pub pages: Vec<Pfn>,
    /// The flags it was pinned with (FOLL_PIN|FOLL_LONGTERM, with FOLL_WRITE
    /// for a write pin).
    pub flags: FollFlags,
}

impl DmaBuffer {
    /// The frame holding byte `off_bytes` of the buffer, and the byte's offset
    /// in that frame.
    pub fn frame_at(&self, off_bytes: u64, page_size: u64) -> (Pfn, u64) {
        let x = (self.ubuf.0 & (page_size - 1)) + off_bytes;
        (self.pages[(x / page_size) as usize], x % page_size)
    }

    /// Whether the pin promises coherence with the process (FOLL_WRITE).
    pub fn writable(&self) -> bool {
        self.flags.contains(FollFlags::WRITE)
    }
}

impl<E: Engine> Cpu<E> {
    /// Models io_sqe_buffer_register(), fs/io_uring.c, v5.8, for one buffer
    /// of `len_bytes` at `ubuf` in `mm` (the current process): pin every page
    /// of it, or none.
    ///
    /// # Locking
    /// Takes `mmap_lock` for read around pin_user_pages(); the fast variant
    /// takes it only if it falls back to the slow path.
    pub fn dma_buffer_register(
        &self,
        mm: &Arc<MmStruct<E>>,
        ubuf: VirtAddr,
        len_bytes: u64,
        write: bool,
        fast: bool,
    ) -> Result<DmaBuffer, Errno> {
        let _f = self.func("io_sqe_buffer_register");
        let g = self.k.geo;
        if len_bytes == 0 {
            return Err(Errno::Efault);
        }
        let start = ubuf.0 >> g.page_shift;
        let end = (ubuf.0 + len_bytes).div_ceil(g.page_size());
        let nr_pages = end - start;
        let mut flags = FollFlags::LONGTERM;
        if write {
            flags |= FollFlags::WRITE;
        }
        let mut pages = Vec::with_capacity(nr_pages as usize);
        let pret = if fast {
            self.pin_user_pages_fast(mm, ubuf, nr_pages, flags, &mut pages)
        } else {
            let _mmap = mm.mmap_lock.read(self);
            self.thp()
                .pin_user_pages(self, mm, ubuf, nr_pages, flags, &mut pages)
        };
        let ret = match pret {
            Ok(n) if n == nr_pages => Ok(()),
            Ok(_) => Err(Errno::Efault),
            Err(e) => Err(e),
        };
        if let Err(e) = ret {
            // If we did a partial map, release any pages we did get.
            self.note(|| {
                format!(
                    "io_sqe_buffer_register(): {} of {nr_pages} pages pinned: {e}",
                    pages.len()
                )
            });
            self.thp().unpin_user_pages(self, &pages);
            return Err(e);
        }
        Ok(DmaBuffer {
            ubuf,
            len_bytes,
            pages,
            flags: flags | FollFlags::PIN,
        })
    }

    /// Models io_sqe_buffer_unregister(), fs/io_uring.c, v5.8, for one
    /// buffer: every page unpinned (the last reference frees it).
    pub fn dma_buffer_unregister(&self, buf: DmaBuffer) {
        let _f = self.func("io_sqe_buffer_unregister");
        self.thp().unpin_user_pages(self, &buf.pages);
    }

    /// The device writes `value` to bytes `[off, off + len)` of `frame`: one
    /// device step, which no page table or TLB sees.
    pub fn dma_write(&self, frame: Pfn, off: u64, len: u64, value: u8) {
        E::schedule_point_on(Obj::Frame(frame.0), true);
        let _f = self.func("dma_write");
        self.note(|| {
            format!(
                "device: DMA write of frame {} [{off:#x}, {:#x})",
                frame.0,
                off + len
            )
        });
        let words = self.k.mem.words(frame);
        self.touch_data(frame);
        fill_bytes(words, off, off + len, value);
    }

    /// The device reads bytes `[off, off + len)` of `frame`: one device step.
    pub fn dma_read(&self, frame: Pfn, off: u64, len: u64) -> Vec<u8> {
        E::schedule_point_on(Obj::Frame(frame.0), false);
        let _f = self.func("dma_read");
        self.note(|| {
            format!(
                "device: DMA read of frame {} [{off:#x}, {:#x})",
                frame.0,
                off + len
            )
        });
        let words = self.k.mem.words(frame);
        (off..off + len).map(|o| read_byte(words, o)).collect()
    }
}
