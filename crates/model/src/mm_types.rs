//! Address spaces: `mm_struct`, `vm_area_struct`, `anon_vma` and
//! `anon_vma_chain`.
//!
//! Models: include/linux/mm_types.h and include/linux/rmap.h (v5.8). The VMA
//! list of an mm is protected by `mmap_lock` (read to look up, write to change),
//! as in Linux; a VMA's range and pgoff are changed only under `mmap_lock` for
//! write *and* the anon_vma lock, so rmap walkers (which hold only the anon_vma
//! lock) read them safely. The anon_vma interval tree is a list of the VMAs
//! linked to the anon_vma (`anon_vma_chain`s), filtered by pgoff on a walk.
//!
//! Leaves out: the maple/rb tree (a sorted vector), vm_ops and files, mm
//! counters (RSS), anon_vma reuse by degree in anon_vma_clone() (DIVERGENCE:
//! a forked VMA always gets a fresh anon_vma), userfaultfd.

use crate::engine::Engine;
use crate::pgtable::{PteFlags, TableBody};
use crate::sync::{LockClass, RwSem, SpinLock};
use crate::types::{AnonVmaId, MmId, VirtAddr, VmaId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};

/// `vm_flags` bits (include/linux/mm.h, v5.8 values).
pub mod vm {
    pub const READ: u64 = 0x0000_0001;
    pub const WRITE: u64 = 0x0000_0002;
    pub const EXEC: u64 = 0x0000_0004;
    pub const SHARED: u64 = 0x0000_0008;
    pub const MAYREAD: u64 = 0x0000_0010;
    pub const MAYWRITE: u64 = 0x0000_0020;
    pub const MAYEXEC: u64 = 0x0000_0040;
    pub const MAYSHARE: u64 = 0x0000_0080;
    pub const LOCKED: u64 = 0x0000_2000;
    /// Lock the pages covered when they are faulted in (mlock2(MLOCK_ONFAULT)).
    pub const LOCKONFAULT: u64 = 0x0008_0000;
    pub const HUGETLB: u64 = 0x0040_0000;
    pub const HUGEPAGE: u64 = 0x2000_0000;
    pub const NOHUGEPAGE: u64 = 0x4000_0000;
    /// The access bits mprotect() changes.
    pub const ACCESS: u64 = READ | WRITE | EXEC;
}

/// `struct vm_area_struct`.
pub struct Vma {
    pub id: VmaId,
    pub mm: MmId,
    vm_start: AtomicU64,
    vm_end: AtomicU64,
    vm_pgoff: AtomicU64,
    vm_flags: AtomicU64,
    /// `vma->anon_vma`: 0 or the anon_vma's id + 1. Set under
    /// `mm->page_table_lock` by __anon_vma_prepare() with mmap_lock held for read.
    anon_vma: AtomicU64,
    /// The VMA's `anon_vma_chain` list: the anon_vmas it is linked into.
    pub chains: Mutex<Vec<AnonVmaId>>,
    /// The VMA has been unlinked (munmap/exit).
    pub dead: AtomicBool,
}

impl Vma {
    pub fn new(
        id: VmaId,
        mm: MmId,
        start: VirtAddr,
        end: VirtAddr,
        pgoff: u64,
        flags: u64,
    ) -> Self {
        Vma {
            id,
            mm,
            vm_start: AtomicU64::new(start.0),
            vm_end: AtomicU64::new(end.0),
            vm_pgoff: AtomicU64::new(pgoff),
            vm_flags: AtomicU64::new(flags),
            anon_vma: AtomicU64::new(0),
            chains: Mutex::new(Vec::new()),
            dead: AtomicBool::new(false),
        }
    }
    pub fn vm_start(&self) -> VirtAddr {
        VirtAddr(self.vm_start.load(SeqCst))
    }
    pub fn vm_end(&self) -> VirtAddr {
        VirtAddr(self.vm_end.load(SeqCst))
    }
    pub fn vm_pgoff(&self) -> u64 {
        self.vm_pgoff.load(SeqCst)
    }
    pub fn vm_flags(&self) -> u64 {
        self.vm_flags.load(SeqCst)
    }
    pub fn set_vm_flags(&self, f: u64) {
        self.vm_flags.store(f, SeqCst)
    }
    /// Changes the range (callers hold mmap_lock for write and the anon_vma lock).
    pub fn set_range(&self, start: VirtAddr, end: VirtAddr, pgoff: u64) {
        self.vm_start.store(start.0, SeqCst);
        self.vm_end.store(end.0, SeqCst);
        self.vm_pgoff.store(pgoff, SeqCst);
    }
    pub fn anon_vma(&self) -> Option<AnonVmaId> {
        match self.anon_vma.load(SeqCst) {
            0 => None,
            v => Some(AnonVmaId(v as usize - 1)),
        }
    }
    pub fn set_anon_vma(&self, av: Option<AnonVmaId>) {
        self.anon_vma
            .store(av.map_or(0, |a| a.0 as u64 + 1), SeqCst);
    }
    pub fn contains(&self, addr: VirtAddr) -> bool {
        self.vm_start() <= addr && addr < self.vm_end()
    }
    /// vma_is_anonymous(): private or shared anonymous memory without vm_ops.
    /// DIVERGENCE: shared anonymous memory (shmem) is not modelled yet, so every
    /// VMA is anonymous and private.
    pub fn is_anonymous(&self) -> bool {
        true
    }
    /// is_cow_mapping().
    pub fn is_cow_mapping(&self) -> bool {
        self.vm_flags() & (vm::SHARED | vm::MAYWRITE) == vm::MAYWRITE
    }
    /// `vma->vm_page_prot` from vm_get_page_prot(vm_flags) (x86 protection_map):
    /// private writable mappings are PAGE_COPY (read-only: writes break COW).
    pub fn vm_page_prot(&self) -> PteFlags {
        let f = self.vm_flags();
        PteFlags {
            write: f & vm::SHARED != 0 && f & vm::WRITE != 0,
            protnone: f & vm::ACCESS == 0,
            ..PteFlags::default()
        }
    }
    /// linear_page_index().
    pub fn linear_page_index(&self, addr: VirtAddr, page_shift: u32) -> u64 {
        ((addr.0 - self.vm_start().0) >> page_shift) + self.vm_pgoff()
    }
}

/// `struct mm_struct`.
pub struct MmStruct<E: Engine> {
    pub id: MmId,
    /// `mm->pgd`: the top-level table. DIVERGENCE: it is not a frame of
    /// physical memory (the tiny geometry's PGD is wider than its other tables).
    pub pgd: TableBody<E>,
    pub mmap_lock: RwSem<E>,
    /// `mm->page_table_lock`: protects upper-level table allocation and
    /// `vma->anon_vma` assignment.
    pub page_table_lock: SpinLock<E>,
    /// The VMAs sorted by address. Read with mmap_lock held, changed with it held
    /// for write.
    pub vmas: RwLock<Vec<Arc<Vma>>>,
    /// The mm has been torn down (exit_mmap() ran).
    pub exited: AtomicBool,
    /// MMF_HUGE_ZERO_PAGE: the mm holds a reference on the huge zero page.
    pub huge_zero_ref: AtomicBool,
}

impl<E: Engine> MmStruct<E> {
    pub fn new(id: MmId, pgd_entries: usize) -> Self {
        MmStruct {
            id,
            pgd: TableBody::new(pgd_entries),
            mmap_lock: RwSem::new(LockClass::MmapLock),
            page_table_lock: SpinLock::new(LockClass::PageTableLock),
            vmas: RwLock::new(Vec::new()),
            exited: AtomicBool::new(false),
            huge_zero_ref: AtomicBool::new(false),
        }
    }

    /// find_vma(): the first VMA ending above `addr`.
    pub fn find_vma(&self, addr: VirtAddr) -> Option<Arc<Vma>> {
        let vmas = self.vmas.read().unwrap_or_else(|p| p.into_inner());
        vmas.iter().find(|v| v.vm_end() > addr).cloned()
    }

    /// The VMA containing `addr`, if any.
    pub fn vma_at(&self, addr: VirtAddr) -> Option<Arc<Vma>> {
        self.find_vma(addr).filter(|v| v.vm_start() <= addr)
    }

    /// A snapshot of the VMA list.
    pub fn vma_list(&self) -> Vec<Arc<Vma>> {
        self.vmas.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `struct anon_vma`.
pub struct AnonVma<E: Engine> {
    pub id: AnonVmaId,
    /// `anon_vma->root`: the rwsem of the root serialises the whole tree.
    pub root: AnonVmaId,
    pub parent: Option<AnonVmaId>,
    pub rwsem: RwSem<E>,
    /// `anon_vma->refcount`.
    pub refcount: AtomicU64,
    /// `anon_vma->rb_root`: the VMAs linked to it through anon_vma_chains.
    pub vmas: Mutex<Vec<Arc<Vma>>>,
}

impl<E: Engine> AnonVma<E> {
    pub fn new(id: AnonVmaId, root: AnonVmaId, parent: Option<AnonVmaId>) -> Self {
        AnonVma {
            id,
            root,
            parent,
            rwsem: RwSem::new(LockClass::AnonVmaRwsem),
            refcount: AtomicU64::new(1),
            vmas: Mutex::new(Vec::new()),
        }
    }
}
