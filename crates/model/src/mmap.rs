//! Mappings: mm/mmap.c.
//!
//! Models (v5.8): anonymous private mmap() (`do_mmap`/`mmap_region`),
//! munmap() (`__do_munmap`, `__split_vma`, `__vma_adjust` with
//! `vma_adjust_trans_huge`, `unmap_region`), the VMA merge that mprotect() and
//! madvise() attempt (`vma_merge`, for neighbours that become identical), and
//! `exit_mmap`.
//!
//! hugetlbfs mappings (MAP_HUGETLB and a memfd's, `do_mmap_hugetlb`) go
//! through the same paths with their vm_ops (split, open, close) called by
//! name.
//!
//! Shared memory (shmem: MAP_SHARED|MAP_ANONYMOUS and a memfd's) goes through
//! `do_mmap_shmem`.
//!
//! Leaves out: other file mappings and private file mappings, MAP_FIXED,
//! stack guard gaps, `vm_unmapped_area`'s top-down search (DIVERGENCE: regions
//! are placed bottom-up, aligned as asked, one PMD apart so that separate
//! mmaps never merge; thpsim conform places them the same way), accounting
//! (`locked_vm` among it: munmap and exit munlock every VM_LOCKED VMA).

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::mm_types::{vm, MmStruct, Vma};
use crate::mmu_notifier::NotifyEvent;
use crate::types::VirtAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// Protection of a mapping (`PROT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    None,
    Read,
    ReadWrite,
}

impl Prot {
    /// calc_vm_prot_bits().
    pub fn vm_bits(self) -> u64 {
        match self {
            Prot::None => 0,
            Prot::Read => vm::READ,
            Prot::ReadWrite => vm::READ | vm::WRITE,
        }
    }
}

impl<E: Engine> Cpu<E> {
    fn page_align(&self, len: u64) -> u64 {
        let ps = self.k.geo.page_size();
        len.div_ceil(ps) * ps
    }

    /// get_unmapped_area() for the model: the lowest free range of `len` bytes
    /// aligned to `align`, one PMD above the previous mapping.
    fn get_unmapped_area(&self, mm: &MmStruct<E>, len: u64, align: u64) -> Option<VirtAddr> {
        let g = self.k.geo;
        let gap = g.pmd_size();
        let mut cand = g.pud_size().max(align);
        cand = cand.div_ceil(align) * align;
        for v in mm.vma_list() {
            if cand + len + gap <= v.vm_start().0 {
                break;
            }
            cand = (v.vm_end().0 + gap).div_ceil(align) * align;
        }
        (cand + len <= g.task_size()).then_some(VirtAddr(cand))
    }

    fn insert_vma(&self, mm: &MmStruct<E>, vma: Arc<Vma>) {
        let mut vmas = mm.vmas.write().unwrap_or_else(|p| p.into_inner());
        let pos = vmas.partition_point(|v| v.vm_start() < vma.vm_start());
        vmas.insert(pos, vma);
    }

    fn remove_vma_from_list(&self, mm: &MmStruct<E>, vma: &Arc<Vma>) {
        mm.vmas
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|v| !Arc::ptr_eq(v, vma));
        vma.dead.store(true, SeqCst);
    }

    /// Models do_mmap()/mmap_region() for an anonymous private mapping,
    /// mm/mmap.c, v5.8. `align` is the alignment thpsim asks for (PMD-size).
    ///
    /// # Locking
    /// Takes `mmap_lock` for write.
    pub fn do_mmap(
        &self,
        mm: &Arc<MmStruct<E>>,
        len: u64,
        prot: Prot,
        align: u64,
    ) -> Result<VirtAddr, Errno> {
        let _f = self.func("do_mmap");
        if len == 0 {
            return Err(Errno::Einval);
        }
        let len = self.page_align(len);
        let _mmap = mm.mmap_lock.write(self);
        let addr = self
            .get_unmapped_area(mm, len, align.max(self.k.geo.page_size()))
            .ok_or(Errno::Enomem)?;
        let flags = prot.vm_bits() | vm::MAYREAD | vm::MAYWRITE | vm::MAYEXEC;
        let vma = Arc::new(Vma::new(
            self.k.new_vma_id(),
            mm.id,
            addr,
            addr.add_bytes(len),
            addr.0 >> self.k.geo.page_shift,
            flags,
        ));
        self.insert_vma(mm, vma);
        Ok(addr)
    }

    /// Models do_mmap()/mmap_region() of a hugetlbfs file, mm/mmap.c, v5.8:
    /// MAP_HUGETLB (`file` None: an unlinked file is made) or a MAP_SHARED
    /// mapping of a memfd (`file`); ksys_mmap_pgoff() rounds `len` up to the
    /// huge page size in both cases. The region is
    /// placed PUD-aligned when it is at least a PUD long (thpsim's placement
    /// for PMD sharing, which the live runner follows), else PMD-aligned.
    /// hugetlbfs_file_mmap() reserves its pages: ENOMEM if the pool cannot.
    ///
    /// # Locking
    /// Takes `mmap_lock` for write; links the VMA into the file's `i_mmap`
    /// under `i_mmap_rwsem` for write.
    pub fn do_mmap_hugetlb(
        &self,
        mm: &Arc<MmStruct<E>>,
        len: u64,
        prot: Prot,
        shared: bool,
        file: Option<crate::types::FileId>,
    ) -> Result<VirtAddr, Errno> {
        let _f = self.func("do_mmap");
        let hsz = self.huge_page_size();
        if len == 0 {
            return Err(Errno::Einval);
        }
        let len = len.checked_next_multiple_of(hsz).ok_or(Errno::Enomem)?;
        let file = match file {
            Some(f) => f,
            None => self.hugetlb_file_setup(None, len),
        };
        let _mmap = mm.mmap_lock.write(self);
        let g = self.k.geo;
        let align = if len >= g.pud_size() {
            g.pud_size()
        } else {
            g.pmd_size()
        };
        let Some(addr) = self.get_unmapped_area(mm, len, align) else {
            self.get_file(file);
            self.fput(file);
            return Err(Errno::Enomem);
        };
        let mut flags = prot.vm_bits() | vm::MAYREAD | vm::MAYWRITE | vm::MAYEXEC | vm::HUGETLB;
        if shared {
            flags |= vm::SHARED | vm::MAYSHARE;
        }
        let vma = self.file_vma(mm, addr, len, flags, file);
        if let Err(e) = self.hugetlbfs_file_mmap(file, &vma) {
            // unmap_and_free_vma: nothing was mapped yet.
            self.fput(file);
            return Err(e);
        }
        self.vma_link(mm, &vma);
        Ok(addr)
    }

    /// Models do_mmap()/mmap_region() of a MAP_SHARED shmem mapping, mm/mmap.c,
    /// v5.8: of `file` (a memfd; placed PUD-aligned when at least a PUD long,
    /// as thpsim places file mappings), or, `file` None, of a new file of
    /// `len` bytes (MAP_SHARED|MAP_ANONYMOUS: shmem_zero_setup(), placed
    /// PMD-aligned as anonymous mappings are). shmem_mmap() sets the vm_ops
    /// and nothing else: no reservation.
    ///
    /// # Locking
    /// Takes `mmap_lock` for write; links the VMA into the file's `i_mmap`.
    pub fn do_mmap_shmem(
        &self,
        mm: &Arc<MmStruct<E>>,
        len: u64,
        prot: Prot,
        file: Option<crate::types::FileId>,
    ) -> Result<VirtAddr, Errno> {
        let _f = self.func("do_mmap");
        if len == 0 {
            return Err(Errno::Einval);
        }
        let len = self.page_align(len);
        let g = self.k.geo;
        let align = if file.is_some() && len >= g.pud_size() {
            g.pud_size()
        } else {
            g.pmd_size()
        };
        let _mmap = mm.mmap_lock.write(self);
        let addr = self
            .get_unmapped_area(mm, len, align)
            .ok_or(Errno::Enomem)?;
        let file = file.unwrap_or_else(|| self.shmem_file_setup(None, len));
        let flags =
            prot.vm_bits() | vm::MAYREAD | vm::MAYWRITE | vm::MAYEXEC | vm::SHARED | vm::MAYSHARE;
        let vma = self.file_vma(mm, addr, len, flags, file);
        self.vma_link(mm, &vma);
        Ok(addr)
    }

    /// mmap_region()'s new VMA for `[addr, addr + len)` of `file` from its
    /// start (`vma->vm_file = get_file(file)`).
    fn file_vma(
        &self,
        mm: &MmStruct<E>,
        addr: VirtAddr,
        len: u64,
        flags: u64,
        file: crate::types::FileId,
    ) -> Arc<Vma> {
        let vma = Vma::new(
            self.k.new_vma_id(),
            mm.id,
            addr,
            addr.add_bytes(len),
            0,
            flags,
        )
        .with_file(Some(file));
        self.get_file(file);
        Arc::new(vma)
    }

    /// Models vma_link(), mm/mmap.c, v5.8: the VMA joins the mm's list and
    /// its file's `i_mmap` (__vma_link_file()).
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write; takes the file's
    /// `i_mmap_rwsem` for write.
    fn vma_link(&self, mm: &MmStruct<E>, vma: &Arc<Vma>) {
        self.insert_vma(mm, vma.clone());
        self.vma_link_file(vma);
    }

    /// Models remove_vma(), mm/mmap.c, v5.8: after the unmap, a VMA's
    /// vm_ops->close() (hugetlb_vm_op_close()) and the fput() of its file.
    pub fn remove_vma(&self, vma: &Arc<Vma>) {
        if vma.is_hugetlb() {
            self.hugetlb_vm_op_close(vma);
        }
        if let Some(f) = vma.vm_file {
            self.fput(f);
        }
    }

    /// The VMA that covers exactly `[start, end)` of `vma`, split off at
    /// either end as needed: the two `split_vma()` calls that
    /// madvise_behavior(), mprotect_fixup() and mlock_fixup() each make in
    /// v5.8 (`start` first, the part above; then `end`, the part below).
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write.
    pub fn split_vma_to(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<Arc<Vma>, Errno> {
        let mut vma = vma.clone();
        if start != vma.vm_start() {
            vma = self.__split_vma(mm, &vma, start, false)?;
        }
        if end != vma.vm_end() {
            self.__split_vma(mm, &vma, end, true)?;
            // The part below `end` keeps the old object; find it again.
            vma = mm.vma_at(start).expect("split vma");
        }
        Ok(vma)
    }

    /// Models __split_vma(), mm/mmap.c, v5.8: split `vma` at `addr`; the new VMA
    /// is the part below `addr` if `new_below`. Returns the new VMA. A
    /// hugetlb VMA splits only at a huge page boundary
    /// (vm_ops->split() = hugetlb_vm_op_split(): EINVAL); the new VMA
    /// shares the file (get_file(), vm_ops->open()) and the reservation
    /// fields.
    pub fn __split_vma(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        addr: VirtAddr,
        new_below: bool,
    ) -> Result<Arc<Vma>, Errno> {
        let _f = self.func("__split_vma");
        if vma.is_hugetlb() {
            self.hugetlb_vm_op_split(vma, addr)?;
        }
        let ps = self.k.geo.page_shift;
        let (start, end, pgoff) = (vma.vm_start(), vma.vm_end(), vma.vm_pgoff());
        let new = if new_below {
            Vma::new(
                self.k.new_vma_id(),
                mm.id,
                start,
                addr,
                pgoff,
                vma.vm_flags(),
            )
        } else {
            Vma::new(
                self.k.new_vma_id(),
                mm.id,
                addr,
                end,
                pgoff + ((addr.0 - start.0) >> ps),
                vma.vm_flags(),
            )
        };
        let new = Arc::new(new.with_file(vma.vm_file));
        new.set_resv(vma.resv());
        new.set_anon_vma(vma.anon_vma());
        self.anon_vma_clone(&new, vma);
        if let Some(f) = new.vm_file {
            self.get_file(f);
        }
        if new.is_hugetlb() {
            self.hugetlb_vm_op_open(&new);
        }
        if new_below {
            self.__vma_adjust(
                mm,
                vma,
                addr,
                end,
                pgoff + ((addr.0 - start.0) >> ps),
                Some(new.clone()),
            );
        } else {
            self.__vma_adjust(mm, vma, start, addr, pgoff, Some(new.clone()));
        }
        Ok(new)
    }

    /// Models __vma_adjust(), mm/mmap.c, v5.8, for shrinking a VMA and
    /// inserting the split-off part: huge PMDs the new boundary cuts are split
    /// first (vma_adjust_trans_huge()), then the range changes under the
    /// anon_vma lock.
    ///
    /// A file VMA's range changes, and the inserted VMA joins the file's
    /// `i_mmap`, under the file's `i_mmap_rwsem` for write.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write; takes the file's
    /// `i_mmap_rwsem` for write, then the anon_vma lock for write.
    pub fn __vma_adjust(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        pgoff: u64,
        insert: Option<Arc<Vma>>,
    ) {
        let _f = self.func("__vma_adjust");
        if !vma.is_hugetlb() {
            // A hugetlb VMA splits at huge page boundaries only: there is no
            // PMD to split.
            self.thp()
                .vma_adjust_trans_huge(self, mm, vma, start, end, None);
        }
        let file = vma.vm_file.map(|f| self.k.file(f));
        let i_mmap = file.as_ref().map(|f| f.mapping.i_mmap_rwsem.write(self));
        let av = vma.anon_vma();
        if let Some(av) = av {
            self.anon_vma_lock_write(av);
        }
        vma.set_range(start, end, pgoff);
        if let Some(ins) = insert {
            if let Some(f) = &file {
                // __vma_link_file()
                f.mapping
                    .i_mmap
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ins.clone());
            }
            self.insert_vma(mm, ins);
        }
        if let Some(av) = av {
            self.anon_vma_unlock_write(av);
        }
        drop(i_mmap);
    }

    /// Models vma_merge(), mm/mmap.c, v5.8, as used after mprotect()/madvise()
    /// changed a VMA: merge it with a neighbour that now has the same flags,
    /// a compatible anon_vma and a contiguous pgoff.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write; takes the anon_vma lock for write.
    pub fn vma_merge(&self, mm: &MmStruct<E>, vma: &Arc<Vma>) {
        let _f = self.func("vma_merge");
        let ps = self.k.geo.page_shift;
        // is_mergeable_anon_vma(): a missing anon_vma on one side merges only
        // if the neighbour's anon_vma_chain is singular (5.8 refuses a
        // never-faulted neighbour, whose chain is empty, and one whose chain
        // came from fork).
        let anon_ok = |this: &Arc<Vma>, neighbour: &Arc<Vma>| {
            this.anon_vma() == neighbour.anon_vma()
                || ((this.anon_vma().is_none() || neighbour.anon_vma().is_none())
                    && neighbour
                        .chains
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .len()
                        == 1)
        };
        // is_mergeable_vma(): a VMA with vm_ops->close (hugetlb) never merges.
        let mergeable = |a: &Arc<Vma>, b: &Arc<Vma>, neighbour_is_a: bool| {
            a.vm_file.is_none()
                && b.vm_file.is_none()
                && a.vm_end() == b.vm_start()
                && a.vm_flags() == b.vm_flags()
                && a.vm_pgoff() + ((a.vm_end().0 - a.vm_start().0) >> ps) == b.vm_pgoff()
                && if neighbour_is_a {
                    anon_ok(b, a)
                } else {
                    anon_ok(a, b)
                }
        };
        let list = mm.vma_list();
        let Some(i) = list.iter().position(|v| Arc::ptr_eq(v, vma)) else {
            return;
        };
        let mut keep = vma.clone();
        if i > 0 && mergeable(&list[i - 1], vma, true) {
            let prev = list[i - 1].clone();
            self.merge_into(mm, &prev, vma);
            keep = prev;
        }
        if let Some(next) = list.get(i + 1) {
            if mergeable(&keep, next, false) {
                self.merge_into(mm, &keep, next);
            }
        }
    }

    /// `keep` grows over `gone`, which is removed (anon_vma_merge()).
    fn merge_into(&self, mm: &MmStruct<E>, keep: &Arc<Vma>, gone: &Arc<Vma>) {
        let av = keep.anon_vma().or(gone.anon_vma());
        if keep.anon_vma().is_none() && gone.anon_vma().is_some() {
            keep.set_anon_vma(gone.anon_vma());
            self.anon_vma_clone(keep, gone);
        }
        if let Some(av) = av {
            self.anon_vma_lock_write(av);
        }
        let (start, pgoff) = if keep.vm_start() < gone.vm_start() {
            (keep.vm_start(), keep.vm_pgoff())
        } else {
            (gone.vm_start(), gone.vm_pgoff())
        };
        let end = keep.vm_end().max(gone.vm_end());
        keep.set_range(start, end, pgoff);
        self.remove_vma_from_list(mm, gone);
        if let Some(av) = av {
            self.anon_vma_unlock_write(av);
        }
        self.unlink_anon_vmas(gone);
    }

    /// Models __do_munmap(), mm/mmap.c, v5.8.
    ///
    /// # Locking
    /// Takes `mmap_lock` for write.
    pub fn do_munmap(&self, mm: &Arc<MmStruct<E>>, start: VirtAddr, len: u64) -> Result<(), Errno> {
        let _f = self.func("__do_munmap");
        let g = self.k.geo;
        if start.0 & (g.page_size() - 1) != 0
            || start.0 > g.task_size()
            || len > g.task_size() - start.0
        {
            return Err(Errno::Einval);
        }
        let len = self.page_align(len);
        if len == 0 {
            return Err(Errno::Einval);
        }
        let end = start.add_bytes(len);
        let _mmap = mm.mmap_lock.write(self);
        let Some(vma) = mm.find_vma(start) else {
            return Ok(());
        };
        if vma.vm_start() >= end {
            return Ok(());
        }
        if start > vma.vm_start() {
            self.__split_vma(mm, &vma, start, false)?;
        }
        if let Some(last) = mm.find_vma(end) {
            if end > last.vm_start() {
                self.__split_vma(mm, &last, end, true)?;
            }
        }
        // detach_vmas_to_be_unmapped()
        let doomed: Vec<Arc<Vma>> = mm
            .vma_list()
            .into_iter()
            .filter(|v| v.vm_start() >= start && v.vm_end() <= end)
            .collect();
        // Unlock any mlock()ed ranges before detaching vmas. DIVERGENCE: 5.8
        // tests mm->locked_vm first, which the model does not keep (it is
        // non-zero exactly when some VMA is VM_LOCKED).
        for v in &doomed {
            if v.vm_flags() & vm::LOCKED != 0 {
                self.munlock_vma_pages_all(v);
            }
        }
        for v in &doomed {
            self.remove_vma_from_list(mm, v);
        }
        self.unmap_region(mm, &doomed, start, end);
        // remove_vma_list()
        for v in &doomed {
            self.remove_vma(v);
        }
        Ok(())
    }

    /// Models unmap_region(), mm/mmap.c, v5.8: zap the VMAs, free the page
    /// tables of the hole, flush, free the pages.
    pub fn unmap_region(
        &self,
        mm: &MmStruct<E>,
        vmas: &[Arc<Vma>],
        start: VirtAddr,
        end: VirtAddr,
    ) {
        let _f = self.func("unmap_region");
        let mut tlb = self.tlb_gather_mmu(mm.id, false);
        // unmap_vmas(): one notifier range over the whole unmap.
        self.mmu_notifier_start(mm, NotifyEvent::Unmap, start, end);
        for v in vmas {
            self.unmap_page_range(&mut tlb, mm, v, start, end);
        }
        self.mmu_notifier_invalidate_range_end(mm);
        // free_pgtables(): floor and ceiling are the neighbours' boundaries.
        let list = mm.vma_list();
        let floor = list
            .iter()
            .filter(|v| v.vm_end() <= start)
            .map(|v| v.vm_end())
            .max()
            .unwrap_or(VirtAddr(0));
        let ceiling = list
            .iter()
            .filter(|v| v.vm_start() >= end)
            .map(|v| v.vm_start())
            .min()
            .unwrap_or(VirtAddr(self.k.geo.task_size()));
        self.free_pgtables(&mut tlb, mm, vmas, floor, ceiling);
        self.tlb_finish_mmu(tlb);
    }

    /// Models exit_mmap(), mm/mmap.c, v5.8: tear down the whole address space,
    /// after munlocking every VM_LOCKED VMA (munlock_vma_pages_all()).
    pub fn exit_mmap(&self, mm: &Arc<MmStruct<E>>) {
        let _f = self.func("exit_mmap");
        // mm's last user has gone, and its about to be pulled down
        self.mmu_notifier_release(mm);
        let vmas = mm.vma_list();
        // DIVERGENCE: 5.8 tests mm->locked_vm first; the model keeps no
        // locked_vm, which is non-zero exactly when some VMA is VM_LOCKED.
        for v in &vmas {
            if v.vm_flags() & vm::LOCKED != 0 {
                self.munlock_vma_pages_all(v);
            }
        }
        let mut tlb = self.tlb_gather_mmu(mm.id, true);
        // unmap_vmas(tlb, vma, 0, -1)
        self.mmu_notifier_start(mm, NotifyEvent::Unmap, VirtAddr(0), VirtAddr(u64::MAX));
        for v in &vmas {
            self.unmap_page_range(&mut tlb, mm, v, v.vm_start(), v.vm_end());
        }
        self.mmu_notifier_invalidate_range_end(mm);
        // FIRST_USER_ADDRESS, USER_PGTABLES_CEILING
        self.free_pgtables(
            &mut tlb,
            mm,
            &vmas,
            VirtAddr(0),
            VirtAddr(self.k.geo.task_size()),
        );
        self.tlb_finish_mmu(tlb);
        for v in &vmas {
            self.remove_vma_from_list(mm, v);
        }
        // Walk the list again, actually closing and freeing it.
        for v in &vmas {
            self.remove_vma(v);
        }
        mm.exited.store(true, SeqCst);
    }
}
