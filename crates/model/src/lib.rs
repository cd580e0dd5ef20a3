//! thpsim-model: an executable, concurrent model of the Linux 5.8 huge-page
//! memory manager.
//!
//! The model is kernel-shaped: each module mirrors a kernel file and each
//! modelled function keeps its kernel name and names its counterpart in its doc
//! comment (look for `DIVERGENCE:` where it differs). Every modelled kernel
//! function is a method on [`cpu::Cpu`], the CPU that runs it. All shared state
//! goes through the engine ([`engine::Engine`]), so the same code runs on real
//! threads and under the exploration engine.
//!
//! Module map (kernel counterpart in brackets):
//! - [`engine`], [`sync`]: the engine seam and the kernel's locks, with lockdep
//!   and the one home of the lock order [`sync::lock_order`] (mm/rmap.c).
//! - [`types`]: addresses, frame numbers, geometry [arch/x86 pgtable types].
//! - [`page`], [`page_alloc`]: `struct page` and physical memory
//!   [include/linux/mm.h, page-flags.h; mm/page_alloc.c].
//! - [`pgtable`]: page-table entries and tables [include/linux/pgtable.h].
//! - [`mm_types`]: mm_struct, VMAs, anon_vma [include/linux/mm_types.h].
//! - [`mmu`]: TLBs, the hardware walk, user accesses, the fault entry
//!   [arch/x86/mm/fault.c, tlb.c].
//! - [`memory`]: faults, fork's copy, zap [mm/memory.c].
//! - [`huge_memory`]: THP [mm/huge_memory.c].
//! - [`rmap`], [`page_vma_mapped`]: reverse mapping [mm/rmap.c,
//!   mm/page_vma_mapped.c].
//! - [`gup`]: get_user_pages(), pin_user_pages() and GUP-fast [mm/gup.c];
//!   [`dma`]: a DMA device through long-term pins [fs/io_uring.c's fixed
//!   buffers].
//! - [`migrate`]: migration entries [mm/migrate.c].
//! - [`hugetlb`]: the hugetlb pool, reservations, faults, COW, fork and
//!   unmap [mm/hugetlb.c]; [`hugetlbfs`]: its files (MAP_HUGETLB,
//!   memfd_create(MFD_HUGETLB)) [fs/hugetlbfs/inode.c]; [`filemap`]: inodes,
//!   address spaces and the page cache [include/linux/fs.h, mm/filemap.c];
//!   [`shmem`]: shared memory files and the file fault path [mm/shmem.c,
//!   mm/memory.c].
//! - [`swapfile`]: the reuse rule [mm/swapfile.c].
//! - [`mmap`], [`mprotect`], [`madvise`], [`mlock`], [`khugepaged`], [`fork`]:
//!   system calls [mm/mmap.c, mprotect.c, madvise.c, mlock.c, khugepaged.c,
//!   kernel/fork.c].
//! - [`profile`]: the kernel profiles (`kernel 5.8 | 3.16`): the seam
//!   between Linux 5.8's THP design and the pre-4.5 one of Linux 3.16
//!   [profile/v3_16: v3.16's mm/huge_memory.c, memory.c, rmap.c, swap.c].
//! - [`kernel`]: the machine; [`fixes`]: the seed fixes as switches;
//!   [`coverage`]: what an execution reached (for the explorer).
//! - [`check`]: the oracles (invariants, audit, memory oracle), apart from the
//!   code they check.

pub mod check;
pub mod coverage;
pub mod cpu;
pub mod dma;
pub mod engine;
pub mod errno;
pub mod filemap;
pub mod fixes;
pub mod fork;
pub mod frames;
pub mod gup;
pub mod hash;
pub mod hmm;
pub mod huge_memory;
pub mod hugetlb;
pub mod hugetlbfs;
pub mod kernel;
pub mod khugepaged;
pub mod madvise;
pub mod memory;
pub mod migrate;
pub mod mlock;
pub mod mm_types;
pub mod mmap;
pub mod mmu;
pub mod mmu_notifier;
pub mod mprotect;
pub mod page;
pub mod page_alloc;
pub mod page_io;
pub mod page_vma_mapped;
pub mod pgtable;
pub mod profile;
pub mod rmap;
pub mod shmem;
pub mod swap_state;
pub mod swapfile;
pub mod sync;
pub mod task_mmu;
pub mod test_hmm;
#[cfg(test)]
mod testing;
pub mod types;
pub mod vmscan;

pub use cpu::Cpu;
pub use engine::{Engine, ShuttleEngine, StdEngine};
pub use kernel::{Config, Kernel, ThpPolicy};
