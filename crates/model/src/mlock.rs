//! mlock() and munlock(): mm/mlock.c.
//!
//! Models (v5.8): the system calls (`do_mlock` with `apply_vma_lock_flags`,
//! `mlock_fixup` and the populate that follows, `__mm_populate()` in gup.rs,
//! which mlocks what it finds through FOLL_MLOCK; munlock), the page side
//! (`mlock_vma_page`, `clear_page_mlock`, `munlock_vma_page`,
//! `__munlock_isolated_page`, `try_to_munlock` through try_to_unmap_one()
//! with TTU_MUNLOCK), `munlock_vma_pages_range` (munlock, munmap and exit of a
//! VM_LOCKED VMA) and the LRU isolation they use (`isolate_lru_page`,
//! `putback_lru_page`).
//!
//! 5.8's THP rules: only a PMD-mapped THP is mlocked (follow_trans_huge_pmd()
//! with FOLL_MLOCK, when this PMD is its only mapping); a PTE-mapped THP never
//! is (follow_page_pte() skips it), and splitting the PMD of an mlocked THP
//! clears PG_mlocked (`clear_page_mlock()` in `__split_huge_pmd()`). A new page
//! faulted into a VM_LOCKED VMA is mlocked at once
//! (`lru_cache_add_active_or_unevictable()`), and the last unmap of a page
//! clears it (page_remove_rmap()). Elsewhere: a COW copy in a VM_LOCKED VMA
//! munlocks the old page (wp_page_copy(), memory.rs); split_huge_page()
//! mlocks the base pages it remaps into a VM_LOCKED VMA
//! (remove_migration_pte(), migrate.rs); mprotect() making a locked private
//! VMA writable populates it (mprotect_fixup()); munmap and exit munlock
//! (mmap.rs); fork clears VM_LOCKED in the child (dup_mmap(), fork.rs).
//!
//! 5.8 is lazy: a page of a VM_LOCKED VMA need not be mlocked (a PTE-mapped
//! THP, a THP shared over fork, a page another VMA's munlock cleared); vmscan
//! mlocks what it meets when it tries to reclaim. The audit checks only the
//! other direction (AUDIT-MLOCK).
//!
//! Leaves out: RLIMIT_MEMLOCK, can_do_mlock() and `mm->locked_vm` accounting
//! (every caller may lock everything), mlock2(MLOCK_ONFAULT) and mlockall(),
//! MAP_LOCKED, the unevictable LRU list and its statistics (PG_mlocked and
//! PG_lru are the state kept), vmscan's lazy mlocking (no reclaim yet), the
//! pagevec batching of munlock (see munlock_vma_pages_range()). No VMA is
//! VM_SPECIAL, hugetlb or DAX, which mlock_fixup() would leave alone.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::gup::FollFlags;
use crate::mm_types::{vm, MmStruct, Vma};
use crate::page::pg;
use crate::rmap::{RmapLock, TtuFlags};
use crate::types::{Pfn, VirtAddr};
use std::sync::Arc;

impl<E: Engine> Cpu<E> {
    /// Models PageMlocked(), include/linux/page-flags.h, v5.8 (PF_NO_TAIL: a
    /// tail reads its head's flag).
    pub fn page_mlocked(&self, page: Pfn) -> bool {
        self.page(self.compound_head(page)).test_flag(pg::MLOCKED)
    }

    /// Models isolate_lru_page(), mm/vmscan.c, v5.8: take the page off the LRU
    /// with a reference; false (-EBUSY) if it is not on it.
    ///
    /// # Locking
    /// Takes `lru_lock`.
    pub fn isolate_lru_page(&self, page: Pfn) -> bool {
        crate::vm_bug_on_page!(
            self,
            self.page_count(page) == 0,
            page,
            "VM_BUG_ON_PAGE(!page_count(page), page)"
        );
        if !self.page(page).test_flag(pg::LRU) {
            return false;
        }
        let _lru = self.k.lru_lock.lock(self);
        if !self.page(page).test_flag(pg::LRU) {
            return false;
        }
        self.get_page(page);
        self.page(page).clear_flag(pg::LRU);
        true
    }

    /// Models putback_lru_page(), mm/vmscan.c, v5.8: back on the LRU (the
    /// unevictable list if it is mlocked, which the model does not keep), and
    /// drop isolate_lru_page()'s reference.
    pub fn putback_lru_page(&self, page: Pfn) {
        self.page(page).set_flag(pg::LRU);
        self.put_page(page);
    }

    /// Models mlock_vma_page(), mm/mlock.c, v5.8: mark the page mlocked (a
    /// base page or a THP head).
    ///
    /// # Locking
    /// Called with the page locked; takes `lru_lock` to move it.
    pub fn mlock_vma_page(&self, page: Pfn) {
        let _f = self.func("mlock_vma_page");
        // Serialize with page migration.
        if !self.page_locked(page) {
            self.bug("BUG_ON(!PageLocked(page))", Some(page));
        }
        crate::vm_bug_on_page!(
            self,
            self.page_tail(page),
            page,
            "VM_BUG_ON_PAGE(PageTail(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            self.page_compound(page) && self.page_double_map(page),
            page,
            "VM_BUG_ON_PAGE(PageCompound(page) && PageDoubleMap(page), page)"
        );
        if !self.page(page).test_set_flag(pg::MLOCKED) && self.isolate_lru_page(page) {
            self.putback_lru_page(page);
        }
    }

    /// Models clear_page_mlock(), mm/mlock.c, v5.8: the page is no longer
    /// mlocked (its last mapping went, or its PMD was split).
    ///
    /// # Locking
    /// Takes `lru_lock` to move the page.
    pub fn clear_page_mlock(&self, page: Pfn) {
        let head = self.compound_head(page);
        if !self.page(head).test_clear_flag(pg::MLOCKED) {
            return;
        }
        self.note(|| format!("clear_page_mlock(): page {} no longer mlocked", head.0));
        if self.isolate_lru_page(head) {
            self.putback_lru_page(head);
        }
    }

    /// Models munlock_vma_page(), mm/mlock.c, v5.8: clear PG_mlocked of a base
    /// page or THP head whose VMA is munlocked or unmapped, unless another
    /// VM_LOCKED VMA maps it (try_to_munlock() mlocks it again). Returns the
    /// page mask (HPAGE_PMD_NR - 1 for a THP it munlocked, else 0).
    ///
    /// # Locking
    /// Called with the page locked; takes `lru_lock`, then the anon_vma lock
    /// for read in try_to_munlock().
    pub fn munlock_vma_page(&self, page: Pfn) -> u64 {
        let _f = self.func("munlock_vma_page");
        // For try_to_munlock() and to serialize with page migration.
        if !self.page_locked(page) {
            self.bug("BUG_ON(!PageLocked(page))", Some(page));
        }
        crate::vm_bug_on_page!(
            self,
            self.page_tail(page),
            page,
            "VM_BUG_ON_PAGE(PageTail(page), page)"
        );
        let lru = self.k.lru_lock.lock(self);
        if !self.page(page).test_clear_flag(pg::MLOCKED) {
            // Potentially, PTE-mapped THP: do not skip the rest PTEs.
            return 0;
        }
        let nr_pages = self.hpage_nr_pages(page);
        // __munlock_isolate_lru_page(page, true)
        if self.page(page).test_flag(pg::LRU) {
            self.get_page(page);
            self.page(page).clear_flag(pg::LRU);
            drop(lru);
            self.__munlock_isolated_page(page);
        }
        nr_pages - 1
    }

    /// Models __munlock_isolated_page(), mm/mlock.c, v5.8: if another mapping
    /// may keep the page mlocked, ask the rmap (try_to_munlock()); then put it
    /// back on the LRU.
    ///
    /// # Locking
    /// Called with the page locked and isolated from the LRU.
    fn __munlock_isolated_page(&self, page: Pfn) {
        // Optimization: if the page was mapped just once, that's our mapping
        // and we don't need to check all the other vmas.
        if self.page_mapcount(page) > 1 {
            self.try_to_munlock(page);
        }
        self.putback_lru_page(page);
    }

    /// Models try_to_munlock(), mm/rmap.c, v5.8: walk the rmap with
    /// TTU_MUNLOCK; a VM_LOCKED VMA that still maps the page mlocks it again.
    ///
    /// # Locking
    /// Called with the page locked and off the LRU; takes the anon_vma lock for
    /// read (page_lock_anon_vma_read()).
    pub fn try_to_munlock(&self, page: Pfn) {
        let _f = self.func("try_to_munlock");
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page) || self.page(page).test_flag(pg::LRU),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page) || PageLRU(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            self.page_compound(page) && self.page_double_map(page),
            page,
            "VM_BUG_ON_PAGE(PageCompound(page) && PageDoubleMap(page), page)"
        );
        let flags = TtuFlags {
            munlock: true,
            ..TtuFlags::default()
        };
        self.rmap_walk_anon(
            page,
            RmapLock::PageLockAnonVmaRead,
            |c, vma, addr| c.try_to_unmap_one(page, vma, addr, flags),
            // page_not_mapped()
            |c| !c.page_mapped(page),
        );
    }

    /// Models munlock_vma_pages_range(), mm/mlock.c, v5.8: clear VM_LOCKED
    /// and munlock every page of `[start, end)` of the VMA (munlock, and
    /// munmap or exit of a VM_LOCKED VMA).
    ///
    /// DIVERGENCE: 5.8 munlocks the base pages of one page table in a pagevec
    /// (__munlock_pagevec_fill(), __munlock_pagevec()), which clears
    /// PG_mlocked of the whole batch under `lru_lock` before it takes each
    /// page's lock (and takes none for a page that was not mlocked); the
    /// model munlocks each base page as a THP head, by munlock_vma_page()
    /// under the page lock. The result per page is the same: PG_mlocked
    /// cleared, and set again only by try_to_munlock() for a page mapped more
    /// than once.
    ///
    /// # Locking
    /// Called with `mmap_lock` held; takes the page-table locks
    /// (follow_page()) and each page's lock.
    pub fn munlock_vma_pages_range(&self, vma: &Arc<Vma>, start: VirtAddr, end: VirtAddr) {
        let _f = self.func("munlock_vma_pages_range");
        vma.set_vm_flags(vma.vm_flags() & !(vm::LOCKED | vm::LOCKONFAULT));
        let ps = self.k.geo.page_size();
        let mut start = start;
        while start < end {
            let mut page_mask = 0;
            // FOLL_DUMP's special treatment of the ZERO_PAGE (an error instead
            // of a reference) suits munlock very well.
            if let Ok(Some(page)) = self.follow_page(vma, start, FollFlags::GET | FollFlags::DUMP) {
                if self.page_tail(page) {
                    crate::vm_bug_on_page!(
                        self,
                        self.page_mlocked(page),
                        page,
                        "VM_BUG_ON_PAGE(PageMlocked(page), page)"
                    );
                    self.put_page(page); // follow_page_mask()
                } else {
                    // A THP head (PageTransHuge()), or a base page.
                    self.lock_page(page);
                    page_mask = self.munlock_vma_page(page);
                    self.unlock_page(page);
                    self.put_page(page); // follow_page_mask()
                }
            }
            start = start.add_bytes((1 + page_mask) * ps);
        }
    }

    /// Models munlock_vma_pages_all(), mm/internal.h, v5.8.
    pub fn munlock_vma_pages_all(&self, vma: &Arc<Vma>) {
        self.munlock_vma_pages_range(vma, vma.vm_start(), vma.vm_end());
    }

    /// Models mlock_fixup(), mm/mlock.c, v5.8: `[start, end)` of `vma` gets
    /// `newflags` (split off and merged back as mprotect_fixup() does); an
    /// munlock munlocks its pages. Returns the VMA that now covers the range.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write.
    fn mlock_fixup(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        newflags: u64,
    ) -> Result<Arc<Vma>, Errno> {
        let _f = self.func("mlock_fixup");
        // Don't set VM_LOCKED or VM_LOCKONFAULT and don't count (a hugetlb
        // VMA is never split or marked; its pages are populated all the same).
        if newflags == vma.vm_flags() || vma.is_hugetlb() {
            return Ok(vma.clone());
        }
        let vma = self.split_vma_to(mm, vma, start, end)?;
        // vm_flags is protected by the mmap_lock held in write mode. It's
        // okay if try_to_unmap_one unmaps a page just after we set VM_LOCKED,
        // populate_vma_page_range will bring it back.
        if newflags & vm::LOCKED != 0 {
            vma.set_vm_flags(newflags);
        } else {
            self.munlock_vma_pages_range(&vma, start, end);
        }
        Ok(vma)
    }

    /// Models apply_vma_lock_flags(), mm/mlock.c, v5.8: `flags` (VM_LOCKED or
    /// nothing) on every VMA of `[start, end)`; -ENOMEM at a hole.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write.
    fn apply_vma_lock_flags(
        &self,
        mm: &MmStruct<E>,
        start: VirtAddr,
        end: VirtAddr,
        flags: u64,
    ) -> Result<(), Errno> {
        let Some(mut vma) = mm.find_vma(start) else {
            return Err(Errno::Enomem);
        };
        if vma.vm_start() > start {
            return Err(Errno::Enomem);
        }
        let mut nstart = start;
        loop {
            let newflags = (vma.vm_flags() & !(vm::LOCKED | vm::LOCKONFAULT)) | flags;
            let tmp = vma.vm_end().min(end);
            let done = self.mlock_fixup(mm, &vma, nstart, tmp, newflags)?;
            self.vma_merge(mm, &done);
            nstart = tmp;
            // The merge may have grown the VMA past tmp (`*prev` in 5.8).
            if let Some(prev) = mm.vma_at(VirtAddr(tmp.0 - 1)) {
                if nstart < prev.vm_end() {
                    nstart = prev.vm_end();
                }
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

    /// Models do_mlock(), mm/mlock.c, v5.8 (`mlock(2)`): VM_LOCKED on the
    /// range, then fault it in and mlock its pages (__mm_populate()).
    ///
    /// # Locking
    /// Takes `mmap_lock` for write, then (populate) for read.
    pub fn do_mlock(&self, mm: &Arc<MmStruct<E>>, start: VirtAddr, len: u64) -> Result<(), Errno> {
        let _f = self.func("do_mlock");
        // can_do_mlock() and the RLIMIT_MEMLOCK check always pass.
        let Some((start, end)) = self.mlock_range(start, len)? else {
            return Ok(());
        };
        {
            let _mmap = mm.mmap_lock.write(self);
            self.apply_vma_lock_flags(mm, start, end, vm::LOCKED)?;
        }
        // __mlock_posix_error_return(): -EFAULT is ENOMEM, -ENOMEM is EAGAIN.
        // DIVERGENCE: the model has no EAGAIN, so an allocation failure is
        // ENOMEM too.
        self.__mm_populate(mm, start, end.0 - start.0, false)
            .map_err(|_| Errno::Enomem)
    }

    /// The range of mlock(2) and munlock(2), mm/mlock.c, v5.8: `len =
    /// PAGE_ALIGN(len + offset_in_page(start))` (wrapping, as in C) from the
    /// page of `start`; then apply_vma_lock_flags()'s checks: -EINVAL if it
    /// wraps past the top, nothing (`None`) if empty.
    fn mlock_range(
        &self,
        start: VirtAddr,
        len: u64,
    ) -> Result<Option<(VirtAddr, VirtAddr)>, Errno> {
        let ps = self.k.geo.page_size();
        let len = len.wrapping_add(start.0 & (ps - 1)).wrapping_add(ps - 1) & !(ps - 1);
        let start = start.0 & !(ps - 1);
        let end = start.wrapping_add(len);
        if end < start {
            return Err(Errno::Einval);
        }
        if end == start {
            return Ok(None);
        }
        Ok(Some((VirtAddr(start), VirtAddr(end))))
    }

    /// Models munlock(2), mm/mlock.c, v5.8.
    ///
    /// # Locking
    /// Takes `mmap_lock` for write.
    pub fn do_munlock(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        len: u64,
    ) -> Result<(), Errno> {
        let _f = self.func("munlock");
        let Some((start, end)) = self.mlock_range(start, len)? else {
            return Ok(());
        };
        let _mmap = mm.mmap_lock.write(self);
        self.apply_vma_lock_flags(mm, start, end, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::audit::audit;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::task_mmu::MapKind;
    use crate::types::Geometry;
    use crate::{StdEngine, ThpPolicy};

    type E = StdEngine;

    /// A machine with one PMD-aligned, PMD-sized read-write region.
    use crate::testing::machine;

    fn page_at(cpu: &Cpu<E>, mm: &MmStruct<E>, a: VirtAddr) -> Pfn {
        cpu.page_info(mm, a).pfn.expect("mapped")
    }

    fn locked(mm: &MmStruct<E>, a: VirtAddr) -> bool {
        mm.vma_at(a).expect("vma").vm_flags() & vm::LOCKED != 0
    }

    /// Nothing the checkers object to: no report, and the audit holds.
    fn clean(cpu: &Cpu<E>) {
        assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
        let a = audit(cpu);
        assert!(a.is_empty(), "{a:?}");
    }

    /// mlock() of an untouched range faults every page in and mlocks it:
    /// base pages, or one PMD-mapped THP whose head is mlocked.
    #[test]
    fn mlock_populates_and_mlocks() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            for thp in [ThpPolicy::Never, ThpPolicy::Always] {
                let (cpu, mm, a) = machine(geo, thp);
                let len = geo.pmd_size();
                assert_eq!(cpu.page_info(&mm, a).kind, MapKind::None);
                cpu.do_mlock(&mm, a, len).expect("mlock");
                assert!(locked(&mm, a));
                for i in 0..geo.hpage_pmd_nr() {
                    let addr = a.add_bytes(i * geo.page_size());
                    let info = cpu.page_info(&mm, addr);
                    let want = match thp {
                        ThpPolicy::Always => MapKind::ThpPmd,
                        _ => MapKind::Base,
                    };
                    assert_eq!(info.kind, want, "{geo:?} {thp:?} page {i}");
                    assert!(cpu.page_is_mlocked(&mm, addr), "{thp:?} page {i}");
                }
                if thp == ThpPolicy::Always {
                    let head = cpu.page_info(&mm, a).head.expect("THP");
                    assert!(cpu.page(head).test_flag(pg::MLOCKED));
                    assert!(!cpu.page(head.add(1)).test_flag(pg::MLOCKED));
                }
                clean(&cpu);
                cpu.mmput(&mm);
                clean(&cpu);
            }
        }
    }

    /// mlock() of pages already mapped mlocks them (follow_page_pte() with
    /// FOLL_MLOCK), and munlock() clears PG_mlocked and VM_LOCKED but keeps
    /// the pages and their contents.
    #[test]
    fn munlock_clears_what_mlock_set() {
        for thp in [ThpPolicy::Never, ThpPolicy::Always] {
            let (cpu, mm, a) = machine(Geometry::TINY, thp);
            let g = cpu.k.geo;
            cpu.user_access(&mm, a.add_bytes(g.page_size()), Access::Write(7))
                .expect("write");
            let p = page_at(&cpu, &mm, a.add_bytes(g.page_size()));
            assert!(!cpu.page_mlocked(p));
            cpu.do_mlock(&mm, a, g.pmd_size()).expect("mlock");
            assert!(cpu.page_mlocked(p), "{thp:?}: a page mapped before mlock()");
            assert_eq!(page_at(&cpu, &mm, a.add_bytes(g.page_size())), p);
            cpu.do_munlock(&mm, a, g.pmd_size()).expect("munlock");
            assert!(!locked(&mm, a));
            for i in 0..g.hpage_pmd_nr() {
                let addr = a.add_bytes(i * g.page_size());
                assert!(!cpu.page_mlocked(page_at(&cpu, &mm, addr)), "page {i}");
            }
            assert_eq!(
                cpu.user_access(&mm, a.add_bytes(g.page_size()), Access::Read),
                Ok(7)
            );
            clean(&cpu);
            // munlock() of a range half locked: only its part is touched.
            cpu.do_mlock(&mm, a, g.pmd_size()).expect("mlock");
            cpu.do_munlock(&mm, a, g.page_size()).expect("munlock");
            assert!(!locked(&mm, a));
            assert!(locked(&mm, a.add_bytes(g.page_size())));
            // The VMA split took the PMD apart: no page is left mlocked in
            // the unlocked first page.
            assert!(!cpu.page_mlocked(page_at(&cpu, &mm, a)));
            if thp == ThpPolicy::Never {
                assert!(cpu.page_mlocked(page_at(&cpu, &mm, a.add_bytes(g.page_size()))));
            }
            clean(&cpu);
            cpu.mmput(&mm);
            clean(&cpu);
        }
    }

    /// 5.8's THP rules: splitting the PMD of an mlocked THP clears PG_mlocked
    /// (__split_huge_pmd()), mlock() of a PTE-mapped THP does not mlock it
    /// (follow_page_pte()), and split_huge_page() mlocks the base pages it
    /// leaves in the VM_LOCKED VMA again (remove_migration_pte()).
    #[test]
    fn only_a_pmd_mapped_thp_is_mlocked() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let (cpu, mm, a) = machine(geo, ThpPolicy::Always);
            let ps = geo.page_size();
            cpu.do_mlock(&mm, a, geo.pmd_size()).expect("mlock");
            let head = cpu.page_info(&mm, a).head.expect("THP");
            assert!(cpu.page_mlocked(head));
            // mprotect() of one subpage splits the VMA, and so the PMD.
            let sub = a.add_bytes(ps);
            cpu.do_mprotect(&mm, sub, ps, Prot::Read).expect("mprotect");
            assert_eq!(cpu.page_info(&mm, a).kind, MapKind::ThpPte);
            assert!(!cpu.page_mlocked(head), "the PMD split clears PG_mlocked");
            clean(&cpu);
            // Both halves are still VM_LOCKED, and mlock() again leaves the
            // PTE-mapped THP alone.
            assert!(locked(&mm, a) && locked(&mm, sub));
            cpu.do_mlock(&mm, a, geo.pmd_size()).expect("mlock");
            assert_eq!(cpu.page_info(&mm, a).kind, MapKind::ThpPte);
            assert!(!cpu.page_mlocked(head));
            assert!(!cpu.page_is_mlocked(&mm, sub));
            clean(&cpu);
            // split_huge_page(): each base page left is mlocked.
            assert_eq!(cpu.split_huge_pages_pid(&mm, a), Ok(true));
            for i in 0..geo.hpage_pmd_nr() {
                let addr = a.add_bytes(i * ps);
                let info = cpu.page_info(&mm, addr);
                assert_eq!(info.kind, MapKind::Base, "page {i}");
                assert!(cpu.page_mlocked(info.pfn.expect("mapped")), "page {i}");
            }
            clean(&cpu);
            cpu.mmput(&mm);
            clean(&cpu);
        }
    }

    /// split_huge_page() of a PMD-mapped mlocked THP: the PMD split clears
    /// PG_mlocked before the head's flags are copied to the tails, and the
    /// remap mlocks every base page again.
    #[test]
    fn split_huge_page_of_an_mlocked_thp_mlocks_its_base_pages() {
        let (cpu, mm, a) = machine(Geometry::TINY, ThpPolicy::Always);
        let g = cpu.k.geo;
        cpu.do_mlock(&mm, a, g.pmd_size()).expect("mlock");
        assert_eq!(cpu.page_info(&mm, a).kind, MapKind::ThpPmd);
        assert_eq!(cpu.split_huge_pages_pid(&mm, a), Ok(true));
        for i in 0..g.hpage_pmd_nr() {
            let info = cpu.page_info(&mm, a.add_bytes(i * g.page_size()));
            assert_eq!(info.kind, MapKind::Base);
            assert!(cpu.page_mlocked(info.pfn.expect("mapped")), "page {i}");
        }
        clean(&cpu);
        cpu.do_munlock(&mm, a, g.pmd_size()).expect("munlock");
        for i in 0..g.hpage_pmd_nr() {
            let p = page_at(&cpu, &mm, a.add_bytes(i * g.page_size()));
            assert!(!cpu.page_mlocked(p), "page {i}");
        }
        clean(&cpu);
    }

    /// fork(): dup_mmap() clears VM_LOCKED in the child. The shared page stays
    /// mlocked while the parent's locked VMA maps it; the child's COW copy is
    /// not mlocked; the parent's exit munlocks the page the child still maps
    /// (munlock_vma_page() -> try_to_munlock() finds no other VM_LOCKED VMA).
    #[test]
    fn fork_does_not_inherit_vm_locked() {
        let (cpu, mm, a) = machine(Geometry::TINY, ThpPolicy::Never);
        let ps = cpu.k.geo.page_size();
        let b = a.add_bytes(ps);
        cpu.do_mlock(&mm, a, 2 * ps).expect("mlock");
        cpu.user_access(&mm, a, Access::Write(1)).expect("write");
        cpu.user_access(&mm, b, Access::Write(2)).expect("write");
        let shared_a = page_at(&cpu, &mm, a);
        let shared_b = page_at(&cpu, &mm, b);
        let child = cpu.dup_mm(&mm).expect("fork");
        assert!(locked(&mm, a));
        assert!(!locked(&child, a), "the child inherited VM_LOCKED");
        assert_eq!(page_at(&cpu, &child, a), shared_a);
        assert!(cpu.page_mlocked(shared_a));
        assert!(
            !cpu.page_is_mlocked(&child, a),
            "not mlocked in the child's view"
        );
        clean(&cpu);
        // The child's write copies into a page that is not mlocked.
        cpu.user_access(&child, a, Access::Write(3)).expect("write");
        let copy = page_at(&cpu, &child, a);
        assert_ne!(copy, shared_a);
        assert!(!cpu.page_mlocked(copy));
        assert!(
            cpu.page_mlocked(shared_a),
            "the parent's page stays mlocked"
        );
        clean(&cpu);
        // The parent exits while the child still maps `b`'s page.
        cpu.mmput(&mm);
        assert_eq!(page_at(&cpu, &child, b), shared_b);
        assert!(!cpu.page_mlocked(shared_b), "exit left a page mlocked");
        assert_eq!(cpu.user_access(&child, b, Access::Read), Ok(2));
        clean(&cpu);
        cpu.mmput(&child);
        clean(&cpu);
    }

    /// munmap() of a locked range munlocks its pages first (__do_munmap()):
    /// a page the child still maps is no longer mlocked. Without the child
    /// the last unmap clears PG_mlocked (page_remove_rmap()) and the page is
    /// freed clean.
    #[test]
    fn munmap_of_a_locked_range_munlocks() {
        for thp in [ThpPolicy::Never, ThpPolicy::Always] {
            let (cpu, mm, a) = machine(Geometry::TINY, thp);
            let g = cpu.k.geo;
            cpu.do_mlock(&mm, a, g.pmd_size()).expect("mlock");
            let p = page_at(&cpu, &mm, a);
            let head = cpu.compound_head(p);
            assert!(cpu.page_mlocked(head));
            let child = cpu.dup_mm(&mm).expect("fork");
            cpu.do_munmap(&mm, a, g.pmd_size()).expect("munmap");
            assert_eq!(cpu.page_info(&mm, a).kind, MapKind::None);
            assert_eq!(page_at(&cpu, &child, a), p);
            assert!(!cpu.page_mlocked(head), "{thp:?}: munmap left it mlocked");
            clean(&cpu);
            cpu.mmput(&child);
            assert!(cpu.k.mem.is_free(head));
            clean(&cpu);
            // Alone: a partial munmap of a locked VMA.
            let mm2 = cpu.mm_alloc();
            let b = cpu
                .do_mmap(&mm2, g.pmd_size(), Prot::ReadWrite, g.pmd_size())
                .expect("mmap");
            cpu.do_mlock(&mm2, b, g.pmd_size()).expect("mlock");
            let q = page_at(&cpu, &mm2, b.add_bytes(g.page_size()));
            cpu.do_munmap(&mm2, b, g.page_size()).expect("munmap");
            assert!(locked(&mm2, b.add_bytes(g.page_size())));
            if thp == ThpPolicy::Never {
                assert!(cpu.page_mlocked(q), "the rest stays mlocked");
            } else {
                assert!(!cpu.page_mlocked(q), "the THP is PTE-mapped now");
            }
            clean(&cpu);
            cpu.mmput(&mm2);
            clean(&cpu);
        }
    }

    /// The errors of mlock(2): -ENOMEM for a hole (apply_vma_lock_flags()),
    /// ENOMEM for PROT_NONE memory (populating it fails with -EFAULT, which
    /// __mlock_posix_error_return() turns into ENOMEM, VM_LOCKED stays set),
    /// -EINVAL for a range that wraps, and nothing for an empty range.
    #[test]
    fn mlock_errors_follow_5_8() {
        let (cpu, mm, a) = machine(Geometry::TINY, ThpPolicy::Never);
        let g = cpu.k.geo;
        let ps = g.page_size();
        cpu.do_munmap(&mm, a.add_bytes(ps), ps).expect("munmap");
        assert_eq!(cpu.do_mlock(&mm, a, 3 * ps), Err(Errno::Enomem));
        // apply_vma_lock_flags() locked the first VMA before it met the hole
        // and do_mlock() returned before populating it.
        assert!(locked(&mm, a));
        assert_eq!(cpu.page_info(&mm, a).kind, MapKind::None);
        assert_eq!(cpu.do_munlock(&mm, a, 3 * ps), Err(Errno::Enomem));
        assert_eq!(cpu.do_mlock(&mm, a.add_bytes(ps), ps), Err(Errno::Enomem));
        let n = cpu.do_mmap(&mm, ps, Prot::None, ps).expect("mmap");
        assert_eq!(cpu.do_mlock(&mm, n, ps), Err(Errno::Enomem));
        assert!(locked(&mm, n));
        assert_eq!(cpu.page_info(&mm, n).kind, MapKind::None);
        assert_eq!(cpu.do_mlock(&mm, a, 0), Ok(()));
        assert_eq!(
            cpu.do_mlock(&mm, VirtAddr(u64::MAX - ps + 1), 2 * ps),
            Err(Errno::Einval)
        );
        // An unaligned start and length cover the pages they touch.
        let c = a.add_bytes(2 * ps);
        cpu.do_mlock(&mm, c.add_bytes(1), ps - 1).expect("mlock");
        assert!(cpu.page_is_mlocked(&mm, c));
        assert!(!locked(&mm, c.add_bytes(ps)));
        cpu.do_mlock(&mm, c.add_bytes(ps - 1), 2).expect("mlock");
        assert!(cpu.page_is_mlocked(&mm, c.add_bytes(ps)));
        clean(&cpu);
    }

    /// mlock() across a VMA it merges with the next one goes on after the
    /// merged VMA (`nstart = prev->vm_end` in apply_vma_lock_flags()).
    #[test]
    fn mlock_across_a_merge() {
        let (cpu, mm, a) = machine(Geometry::TINY, ThpPolicy::Never);
        let ps = cpu.k.geo.page_size();
        for i in 0..4 {
            cpu.user_access(&mm, a.add_bytes(i * ps), Access::Write(1))
                .expect("write");
        }
        cpu.do_mlock(&mm, a.add_bytes(2 * ps), 2 * ps)
            .expect("mlock");
        assert_eq!(mm.vma_list().len(), 2);
        cpu.do_mlock(&mm, a, 4 * ps)
            .expect("mlock across the merge");
        assert_eq!(mm.vma_list().len(), 1, "the VMAs merged back");
        for i in 0..4 {
            assert!(cpu.page_is_mlocked(&mm, a.add_bytes(i * ps)), "page {i}");
        }
        cpu.do_munlock(&mm, a.add_bytes(ps), 2 * ps)
            .expect("munlock");
        assert_eq!(mm.vma_list().len(), 3);
        assert!(cpu.page_is_mlocked(&mm, a));
        assert!(!cpu.page_mlocked(page_at(&cpu, &mm, a.add_bytes(ps))));
        assert!(cpu.page_is_mlocked(&mm, a.add_bytes(3 * ps)));
        clean(&cpu);
    }

    /// A write fault in a VM_LOCKED VMA that copies a page mlocks the copy
    /// and munlocks the old page (wp_page_copy()), and mprotect() making a
    /// locked read-only range writable breaks COW at once (mprotect_fixup()).
    #[test]
    fn cow_in_a_locked_vma() {
        let (cpu, mm, a) = machine(Geometry::TINY, ThpPolicy::Never);
        let ps = cpu.k.geo.page_size();
        let b = a.add_bytes(ps);
        cpu.user_access(&mm, a, Access::Write(1)).expect("write");
        cpu.user_access(&mm, b, Access::Write(2)).expect("write");
        let child = cpu.dup_mm(&mm).expect("fork");
        let shared = page_at(&cpu, &mm, a);
        // mlock() of a writable private VMA faults for write: COW breaks.
        cpu.do_mlock(&mm, a, ps).expect("mlock");
        let own = page_at(&cpu, &mm, a);
        assert_ne!(own, shared);
        assert!(cpu.page_mlocked(own));
        assert!(!cpu.page_mlocked(shared));
        // A read-only locked page shared with the child is mlocked where it
        // is, and made writable it is copied at once.
        cpu.do_mprotect(&mm, b, ps, Prot::Read).expect("mprotect");
        cpu.do_mlock(&mm, b, ps).expect("mlock");
        let shared_b = page_at(&cpu, &mm, b);
        assert_eq!(page_at(&cpu, &child, b), shared_b);
        assert!(cpu.page_mlocked(shared_b));
        clean(&cpu);
        cpu.do_mprotect(&mm, b, ps, Prot::ReadWrite)
            .expect("mprotect");
        let own_b = page_at(&cpu, &mm, b);
        assert_ne!(own_b, shared_b, "mprotect() did not break COW");
        assert!(cpu.page_mlocked(own_b));
        assert!(
            !cpu.page_mlocked(shared_b),
            "the child's page stays mlocked"
        );
        assert_eq!(cpu.user_access(&child, b, Access::Read), Ok(2));
        assert_eq!(cpu.user_access(&mm, b, Access::Read), Ok(2));
        clean(&cpu);
        cpu.mmput(&child);
        cpu.mmput(&mm);
        clean(&cpu);
    }
}
