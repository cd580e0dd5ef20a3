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
//! A hugetlb VMA carries its file (`vm_file`) and its reservation fields
//! (`vm_private_data`, [`VmaResv`]); mm/hugetlb.c's vm_ops are called by
//! name where mm/mmap.c calls them through the pointer.
//!
//! Leaves out: the maple/rb tree (a sorted vector), vm_ops of other files, mm
//! counters (RSS), anon_vma reuse by degree in anon_vma_clone() (DIVERGENCE:
//! a forked VMA always gets a fresh anon_vma), userfaultfd.

use crate::engine::Engine;
use crate::pgtable::{PteFlags, TableBody};
use crate::sync::{LockClass, RwSem, SpinLock};
use crate::types::{AnonVmaId, FileId, MmId, ResvMapId, VirtAddr, VmaId};
use std::collections::HashMap;
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
    /// `vma->vm_file`: the hugetlbfs file a hugetlb VMA maps (fixed at mmap;
    /// a split or a fork copies it).
    pub vm_file: Option<FileId>,
    /// `vma->vm_private_data` of a hugetlb VMA (mm/hugetlb.c): its private
    /// reservation map and the HPAGE_RESV_* flags. Changed under mmap_lock
    /// for write, or under the file's i_mmap_rwsem for write
    /// (HPAGE_RESV_UNMAPPED from unmap_ref_private()), which every reader
    /// holds for read.
    pub resv: Mutex<VmaResv>,
}

/// A hugetlb VMA's `vm_private_data`: a `resv_map` pointer with the
/// HPAGE_RESV_OWNER and HPAGE_RESV_UNMAPPED bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaResv {
    /// The private mapping's reservation map (None for shared mappings,
    /// whose map is the inode's, and for a fork child's private mapping).
    pub map: Option<ResvMapId>,
    /// HPAGE_RESV_OWNER: this VMA made the reservation (the mmap()er).
    pub owner: bool,
    /// HPAGE_RESV_UNMAPPED: the owner unmapped a page from this VMA to keep
    /// its own reservation; later faults here SIGBUS.
    pub unmapped: bool,
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
            vm_file: None,
            resv: Mutex::new(VmaResv::default()),
        }
    }
    /// The VMA mapping `file` (set by mmap, copied by split and fork).
    pub fn with_file(mut self, file: Option<FileId>) -> Self {
        self.vm_file = file;
        self
    }
    /// is_vm_hugetlb_page().
    pub fn is_hugetlb(&self) -> bool {
        self.vm_flags() & vm::HUGETLB != 0
    }
    /// The hugetlb reservation fields (`vm_private_data`).
    pub fn resv(&self) -> VmaResv {
        *self.resv.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Changes the hugetlb reservation fields.
    pub fn set_resv(&self, r: VmaResv) {
        *self.resv.lock().unwrap_or_else(|p| p.into_inner()) = r;
    }
    /// A copy of the VMA for a copy of the machine (`Kernel::snapshot`): its
    /// id and mm, range, pgoff, flags, anon_vma, anon_vma chains and whether
    /// it was unlinked. The caller keeps the sharing: one copy per `VmaId`,
    /// referenced from the mm's list and every anon_vma's list that held the
    /// original ([`VmaCopies`]).
    pub fn snapshot(&self) -> Self {
        Vma {
            id: self.id,
            mm: self.mm,
            vm_start: AtomicU64::new(self.vm_start.load(SeqCst)),
            vm_end: AtomicU64::new(self.vm_end.load(SeqCst)),
            vm_pgoff: AtomicU64::new(self.vm_pgoff.load(SeqCst)),
            vm_flags: AtomicU64::new(self.vm_flags.load(SeqCst)),
            anon_vma: AtomicU64::new(self.anon_vma.load(SeqCst)),
            chains: Mutex::new(
                self.chains
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
            dead: AtomicBool::new(self.dead.load(SeqCst)),
            vm_file: self.vm_file,
            resv: Mutex::new(self.resv()),
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
    /// vma_is_anonymous(): memory without vm_ops; a file VMA (hugetlbfs,
    /// shmem: also MAP_SHARED|MAP_ANONYMOUS memory) has them.
    pub fn is_anonymous(&self) -> bool {
        self.vm_file.is_none()
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

/// The VMA copies of one machine copy, by id: a VMA is shared by its mm's
/// list and the lists of the anon_vmas it is linked to, and the copy shares
/// one copy of it the same way.
#[derive(Default)]
pub struct VmaCopies {
    by_id: HashMap<VmaId, Arc<Vma>>,
}

impl VmaCopies {
    /// The copy of `vma`, made on its first request.
    pub fn get(&mut self, vma: &Vma) -> Arc<Vma> {
        self.by_id
            .entry(vma.id)
            .or_insert_with(|| Arc::new(vma.snapshot()))
            .clone()
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
    /// `mm->notifier_subscriptions` (mmu_notifier.rs), made on the first
    /// registration.
    pub notifiers: crate::mmu_notifier::SubscriptionsSlot<E>,
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
            notifiers: std::sync::OnceLock::new(),
        }
    }

    /// A copy of the mm for a copy of the machine (`Kernel::snapshot`): its
    /// id, the PGD ([`TableBody::snapshot`]), `mmap_lock` and
    /// `page_table_lock` (free at a quiescent point), the VMA list (each VMA
    /// through `vmas`, which keeps it shared with the anon_vmas' lists), and
    /// the exited and MMF_HUGE_ZERO_PAGE marks. The PGD's entries are made
    /// first, then its lock, `mmap_lock`, `page_table_lock`.
    pub fn snapshot(&self, vmas: &mut VmaCopies) -> Self {
        let pgd = self.pgd.snapshot();
        let mmap_lock = self.mmap_lock.snapshot();
        let page_table_lock = self.page_table_lock.snapshot();
        let list: Vec<Arc<Vma>> = self
            .vmas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|v| vmas.get(v))
            .collect();
        MmStruct {
            id: self.id,
            pgd,
            mmap_lock,
            page_table_lock,
            vmas: RwLock::new(list),
            exited: AtomicBool::new(self.exited.load(SeqCst)),
            huge_zero_ref: AtomicBool::new(self.huge_zero_ref.load(SeqCst)),
            notifiers: match self.notifiers.get() {
                Some(n) => std::sync::OnceLock::from(n.snapshot()),
                None => std::sync::OnceLock::new(),
            },
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

    /// A copy of the anon_vma for a copy of the machine (`Kernel::snapshot`):
    /// its id, root and parent, the rwsem (free at a quiescent point), the
    /// refcount, and the VMAs linked to it (each through `vmas`, shared with
    /// the mms' lists).
    pub fn snapshot(&self, vmas: &mut VmaCopies) -> Self {
        let rwsem = self.rwsem.snapshot();
        let list: Vec<Arc<Vma>> = self
            .vmas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|v| vmas.get(v))
            .collect();
        AnonVma {
            id: self.id,
            root: self.root,
            parent: self.parent,
            rwsem,
            refcount: AtomicU64::new(self.refcount.load(SeqCst)),
            vmas: Mutex::new(list),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StdEngine;

    fn vma(id: usize) -> Vma {
        Vma::new(
            VmaId(id),
            MmId(0),
            VirtAddr(0x1000),
            VirtAddr(0x3000),
            7,
            vm::READ | vm::WRITE | vm::MAYWRITE,
        )
    }

    /// A VMA copies every field.
    #[test]
    fn a_vma_copies_every_field() {
        let v = vma(3);
        v.set_anon_vma(Some(AnonVmaId(2)));
        v.chains
            .lock()
            .unwrap()
            .extend([AnonVmaId(1), AnonVmaId(2)]);
        v.dead.store(true, SeqCst);
        let c = v.snapshot();
        assert_eq!((c.id, c.mm), (VmaId(3), MmId(0)));
        assert_eq!(
            (c.vm_start(), c.vm_end()),
            (VirtAddr(0x1000), VirtAddr(0x3000))
        );
        assert_eq!((c.vm_pgoff(), c.vm_flags()), (7, v.vm_flags()));
        assert_eq!(c.anon_vma(), Some(AnonVmaId(2)));
        assert_eq!(*c.chains.lock().unwrap(), vec![AnonVmaId(1), AnonVmaId(2)]);
        assert!(c.dead.load(SeqCst));
        c.set_range(VirtAddr(0), VirtAddr(0x1000), 0);
        assert_eq!(v.vm_start(), VirtAddr(0x1000), "independent");
    }

    /// An mm and an anon_vma copied with one `VmaCopies` share one copy of
    /// each VMA they shared, and none with the original; the mm's PGD,
    /// marks and locks, and the anon_vma's links and refcount are copied.
    #[test]
    fn mms_and_anon_vmas_share_their_vma_copies() {
        let (a, b) = (Arc::new(vma(0)), Arc::new(vma(1)));
        let mm = MmStruct::<StdEngine>::new(MmId(0), 8);
        mm.vmas.write().unwrap().extend([a.clone(), b.clone()]);
        mm.exited.store(true, SeqCst);
        mm.huge_zero_ref.store(true, SeqCst);
        crate::engine::Atomic::store(mm.pgd.raw(4), 0x55);
        let av = AnonVma::<StdEngine>::new(AnonVmaId(1), AnonVmaId(0), Some(AnonVmaId(0)));
        av.vmas.lock().unwrap().push(b.clone());
        av.refcount.store(3, SeqCst);

        let mut copies = VmaCopies::default();
        let mc = mm.snapshot(&mut copies);
        let ac = av.snapshot(&mut copies);
        let list = mc.vma_list();
        let linked = ac.vmas.lock().unwrap().clone();
        assert_eq!(
            list.iter().map(|v| v.id).collect::<Vec<_>>(),
            [VmaId(0), VmaId(1)]
        );
        assert!(
            Arc::ptr_eq(&list[1], &linked[0]),
            "one copy of the shared VMA"
        );
        assert!(!Arc::ptr_eq(&list[1], &b) && !Arc::ptr_eq(&list[0], &a));
        assert_eq!(mc.id, MmId(0));
        assert!(mc.exited.load(SeqCst) && mc.huge_zero_ref.load(SeqCst));
        assert_eq!(mc.pgd.peek(4), 0x55);
        assert!(!mc.mmap_lock.is_locked() && !mc.page_table_lock.is_locked());
        assert_eq!(
            (ac.id, ac.root, ac.parent),
            (AnonVmaId(1), AnonVmaId(0), Some(AnonVmaId(0)))
        );
        assert_eq!(ac.refcount.load(SeqCst), 3);
        assert!(!ac.rwsem.is_locked());
    }
}
