//! mprotect(): mm/mprotect.c.
//!
//! Models (v5.8): `do_mprotect_pkey`, `mprotect_fixup` (split, flags, merge),
//! `change_protection` down to `change_pmd_range` (a huge PMD not wholly
//! covered is split; a covered one goes through change_huge_pmd()) and
//! `change_pte_range`, the TLB flush of the range, and the populate of a
//! private VM_LOCKED VMA that becomes writable.
//!
//! Leaves out: pkeys, NUMA hinting (prot_numa), uffd-wp, dirty accounting
//! (anonymous VMAs never get write permission from mprotect: writes come back
//! through write faults).

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::mm_types::{vm, MmStruct, Vma};
use crate::mmap::Prot;
use crate::mmu_notifier::NotifyEvent;
use crate::pgtable::{EntryRef, Pmd, Pte, PteFlags};
use crate::types::{Level, VirtAddr};
use std::sync::Arc;

impl<E: Engine> Cpu<E> {
    /// Models do_mprotect_pkey(), mm/mprotect.c, v5.8.
    ///
    /// # Locking
    /// Takes `mmap_lock` for write.
    pub fn do_mprotect(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        len: u64,
        prot: Prot,
    ) -> Result<(), Errno> {
        let _f = self.func("do_mprotect_pkey");
        let Some(end) = self.syscall_range(start, len)? else {
            return Ok(());
        };
        let _mmap = mm.mmap_lock.write(self);
        let Some(mut vma) = mm.find_vma(start) else {
            return Err(Errno::Enomem);
        };
        if vma.vm_start() > start {
            return Err(Errno::Enomem);
        }
        let mut nstart = start;
        loop {
            let newflags = prot.vm_bits() | (vma.vm_flags() & !vm::ACCESS);
            // The VM_MAY* bits must allow the new protection.
            if (newflags & !(newflags >> 4)) & vm::ACCESS != 0 {
                return Err(Errno::Eacces);
            }
            let tmp = vma.vm_end().min(end);
            let done = self.mprotect_fixup(mm, &vma, nstart, tmp, newflags)?;
            // The merge comes before the next VMA is looked at, as 5.8's
            // (`vma_merge()` in mprotect_fixup(), then `prev->vm_next`): it
            // may have swallowed that VMA, and then the walk goes on from the
            // end of the merged one (`nstart = prev->vm_end`).
            self.vma_merge(mm, &done);
            nstart = tmp;
            if let Some(prev) = mm.vma_at(VirtAddr(tmp.0 - 1)) {
                nstart = nstart.max(prev.vm_end());
            }
            if nstart >= end {
                return Ok(());
            }
            match mm.find_vma(nstart) {
                Some(v) if v.vm_start() == nstart => vma = v,
                _ => return Err(Errno::Enomem),
            }
        }
    }

    /// Models mprotect_fixup(), mm/mprotect.c, v5.8: returns the VMA that now
    /// covers exactly `[start, end)` with the new flags. A private VM_LOCKED
    /// VMA that becomes writable is populated for write at once
    /// (populate_vma_page_range(): COW is broken now, not at the first write).
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write.
    pub fn mprotect_fixup(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        newflags: u64,
    ) -> Result<Arc<Vma>, Errno> {
        let _f = self.func("mprotect_fixup");
        if newflags == vma.vm_flags() {
            return Ok(vma.clone());
        }
        let vma = self.split_vma_to(mm, vma, start, end)?;
        let oldflags = vma.vm_flags();
        vma.set_vm_flags(newflags);
        if vma.is_hugetlb() {
            // change_protection(): is_vm_hugetlb_page() → hugetlb_change_protection()
            self.hugetlb_change_protection(mm, &vma, start, end);
        } else {
            self.change_protection(mm, &vma, start, end, vma.vm_page_prot());
        }
        // Private VM_LOCKED VMA becoming writable: trigger COW to avoid major
        // fault on access. (5.8 ignores the result.)
        if oldflags & (vm::WRITE | vm::SHARED | vm::LOCKED) == vm::LOCKED
            && newflags & vm::WRITE != 0
        {
            let mm = self.k.mm(vma.mm);
            let _ = self.populate_vma_page_range(&mm, &vma, start, end);
        }
        Ok(vma)
    }

    /// Models change_protection()/change_protection_range(), mm/mprotect.c, v5.8.
    pub fn change_protection(
        &self,
        mm: &MmStruct<E>,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
        newprot: PteFlags,
    ) {
        let _f = self.func("change_protection");
        let g = self.k.geo;
        let mut pages = 0;
        let mut addr = start;
        // change_pmd_range()'s notifier range: from its first populated PMD
        // to the end of its PUD's span, started when that PMD is met.
        let mut range_end: Option<VirtAddr> = None;
        while addr < end {
            let next = g.pmd_addr_end(addr, end);
            if range_end.is_some_and(|e| addr >= e) {
                self.mmu_notifier_invalidate_range_end(mm);
                range_end = None;
            }
            if let Some(pmd) = self.pmd_offset(mm, addr) {
                // change_pmd_range()
                let cur = self.pmd_read(pmd);
                if range_end.is_none() && !cur.is_none() {
                    let pud_end =
                        VirtAddr(((addr.0 & !(g.pud_size() - 1)) + g.pud_size()).min(end.0));
                    self.mmu_notifier_start(mm, NotifyEvent::ProtectionVma, addr, pud_end);
                    range_end = Some(pud_end);
                }
                let mut handled = false;
                if cur.is_swap_pmd() || cur.is_trans_huge() {
                    let nr = self
                        .thp()
                        .change_huge_pmd_range(self, vma, pmd, addr, next, newprot);
                    if nr != 0 {
                        pages += nr;
                        handled = true;
                    }
                }
                if !handled {
                    if let Pmd::Table(t) = self.pmd_read(pmd) {
                        pages += self.change_pte_range(t, addr, next, newprot);
                    }
                }
            }
            addr = next;
        }
        if range_end.is_some() {
            self.mmu_notifier_invalidate_range_end(mm);
        }
        if pages > 0 {
            self.flush_tlb_range(mm.id, start, end);
        }
    }

    /// Models change_pte_range(), mm/mprotect.c, v5.8.
    ///
    /// # Locking
    /// Takes the PTE lock.
    fn change_pte_range(
        &self,
        table: crate::types::Pfn,
        addr: VirtAddr,
        end: VirtAddr,
        newprot: PteFlags,
    ) -> u64 {
        let _f = self.func("change_pte_range");
        let _ptl = self.pte_lockptr(table).lock(self);
        let mut pages = 0;
        let mut a = addr;
        while a < end {
            let r = EntryRef {
                table,
                index: self.k.geo.index(Level::Pte, a),
            };
            match self.pte_read(r) {
                Pte::Present { .. } => {
                    // ptep_modify_prot_start() (x86: ptep_get_and_clear(), so
                    // an accessed or dirty bit the MMU set since the read
                    // above is in the value returned), pte_modify(),
                    // ptep_modify_prot_commit().
                    let Pte::Present { pfn, flags } = self.ptep_get_and_clear(r) else {
                        self.bug(
                            "change_pte_range(): the PTE changed under the PTE lock",
                            None,
                        );
                    };
                    let f = PteFlags {
                        write: newprot.write,
                        protnone: newprot.protnone,
                        ..flags
                    };
                    self.set_pte_at(r, Pte::Present { pfn, flags: f });
                    pages += 1;
                }
                Pte::Migration { pfn, write: true } => {
                    // A protection check is difficult so just be safe and
                    // disable write.
                    self.set_pte_at(r, Pte::Migration { pfn, write: false });
                    pages += 1;
                }
                _ => {}
            }
            a = a.add_bytes(self.k.geo.page_size());
        }
        pages
    }
}

impl<E: Engine> Cpu<E> {
    /// The checks every range system call starts with (mprotect, madvise):
    /// `start` page-aligned, `len` rounded up to pages. `Ok(None)` for an empty
    /// range (nothing to do), `Err(EINVAL)` for an unaligned start.
    pub fn syscall_range(&self, start: VirtAddr, len: u64) -> Result<Option<VirtAddr>, Errno> {
        let ps = self.k.geo.page_size();
        if start.0 & (ps - 1) != 0 {
            return Err(Errno::Einval);
        }
        let end = start.add_bytes(len.div_ceil(ps) * ps);
        Ok((end != start).then_some(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::audit::audit;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Kernel, StdEngine};

    /// An mprotect() across VMAs whose first, once changed, merges with the
    /// next goes on from the end of the merged VMA (5.8's `prev->vm_end`):
    /// one VMA covers the range at the end, with the new protection, and the
    /// way back merges too.
    #[test]
    fn mprotect_walks_on_from_a_merged_vma() {
        let geo = Geometry::TINY;
        let cpu = Cpu::new(Kernel::<StdEngine>::new(Config::new(geo)), CpuId(0));
        let mm = cpu.mm_alloc();
        let ps = geo.page_size();
        let a = cpu.do_mmap(&mm, 6 * ps, Prot::ReadWrite, ps).expect("mmap");
        let at = |n: u64| VirtAddr(a.0 + n * ps);
        // [rw][r][rw]
        cpu.do_mprotect(&mm, at(2), 2 * ps, Prot::Read).expect("r");
        assert_eq!(mm.vma_list().len(), 3);
        cpu.do_mprotect(&mm, a, 6 * ps, Prot::Read).expect("all r");
        let vmas = mm.vma_list();
        assert_eq!(vmas.len(), 1, "one VMA after the merges");
        assert_eq!((vmas[0].vm_start(), vmas[0].vm_end()), (a, at(6)));
        assert_eq!(vmas[0].vm_flags() & vm::WRITE, 0);
        cpu.do_mprotect(&mm, a, 6 * ps, Prot::ReadWrite)
            .expect("all rw");
        let vmas = mm.vma_list();
        assert_eq!(vmas.len(), 1);
        assert_ne!(vmas[0].vm_flags() & vm::WRITE, 0);
        assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
    }
}
