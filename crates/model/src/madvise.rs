//! madvise(): mm/madvise.c.
//!
//! Models (v5.8): `do_madvise` over the VMAs of a range, MADV_DONTNEED
//! (`madvise_dontneed_single_vma` → zap_page_range()), MADV_HUGEPAGE and
//! MADV_NOHUGEPAGE (`madvise_behavior`: hugepage_madvise(), split the VMA at
//! the range's ends — which splits huge PMDs there — and merge).
//!
//! MADV_PAGEOUT (`madvise_pageout` → madvise_cold_or_pageout_pte_range():
//! the pages mapped by this process alone, their accessed bits cleared,
//! isolated and reclaimed through reclaim_pages(), vmscan.rs; a THP only
//! partly in the range, or mapped by PTEs, is split first).
//!
//! MADV_FREE (`madvise_free_single_vma` → madvise_free_pte_range() and
//! madvise_free_huge_pmd(): swap entries are freed, the pages mapped by
//! this process alone are cleaned, their PTEs made old and clean, and they
//! become lazily freed, mark_page_lazyfree(): reclaim discards them unless
//! they are written first).
//!
//! Leaves out: MADV_COLD, the other advices. MADV_COLLAPSE is 6.1's: 5.8
//! rejects it as an unknown advice (EINVAL).

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::khugepaged::HugepageAdvice;
use crate::memory::MmuGather;
use crate::mm_types::{vm, MmStruct, Vma};
use crate::page::pg;
use crate::pgtable::{EntryRef, Pmd, Pte};
use crate::types::{Level, Pfn, VirtAddr};
use std::sync::Arc;

/// The advice values the model implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    DontNeed,
    Hugepage,
    NoHugepage,
    /// MADV_PAGEOUT (5.4).
    Pageout,
    /// MADV_FREE (4.5).
    Free,
}

impl<E: Engine> Cpu<E> {
    /// Models do_madvise(), mm/madvise.c, v5.8.
    ///
    /// # Locking
    /// Takes `mmap_lock`: for read (MADV_DONTNEED, MADV_PAGEOUT) or write
    /// (the others).
    pub fn do_madvise(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        len: u64,
        advice: Advice,
    ) -> Result<(), Errno> {
        let _f = self.func("do_madvise");
        let Some(end) = self.syscall_range(start, len)? else {
            return Ok(());
        };
        let (_r, _w);
        if matches!(advice, Advice::DontNeed | Advice::Pageout | Advice::Free) {
            _r = Some(mm.mmap_lock.read(self));
            _w = None;
        } else {
            _w = Some(mm.mmap_lock.write(self));
            _r = None;
        }
        let mut unmapped_error = Ok(());
        let mut start = start;
        loop {
            let Some(vma) = mm.find_vma(start) else {
                return Err(Errno::Enomem);
            };
            if start < vma.vm_start() {
                unmapped_error = Err(Errno::Enomem);
                start = vma.vm_start();
                if start >= end {
                    return unmapped_error;
                }
            }
            let tmp = vma.vm_end().min(end);
            self.madvise_vma(mm, &vma, start, tmp, advice)?;
            start = tmp;
            if start >= end {
                return unmapped_error;
            }
        }
    }

    /// Models madvise_vma(), mm/madvise.c, v5.8.
    fn madvise_vma(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        advice: Advice,
    ) -> Result<(), Errno> {
        match advice {
            Advice::DontNeed => {
                // madvise_dontneed_single_vma(), after can_madv_lru_vma().
                if vma.vm_flags() & (vm::LOCKED | vm::HUGETLB) != 0 {
                    return Err(Errno::Einval);
                }
                self.zap_page_range(mm, vma, start, end);
                Ok(())
            }
            Advice::Pageout => self.madvise_pageout(mm, vma, start, end),
            Advice::Free => {
                // madvise_dontneed_free(): can_madv_lru_vma().
                if vma.vm_flags() & (vm::LOCKED | vm::HUGETLB) != 0 {
                    return Err(Errno::Einval);
                }
                self.madvise_free_single_vma(mm, vma, start, end)
            }
            Advice::Hugepage | Advice::NoHugepage => {
                let a = if advice == Advice::Hugepage {
                    HugepageAdvice::Hugepage
                } else {
                    HugepageAdvice::NoHugepage
                };
                self.madvise_behavior(mm, vma, start, end, a)
            }
        }
    }

    /// Models madvise_behavior(), mm/madvise.c, v5.8, for MADV_(NO)HUGEPAGE.
    fn madvise_behavior(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        advice: HugepageAdvice,
    ) -> Result<(), Errno> {
        let _f = self.func("madvise_behavior");
        let new_flags = self.hugepage_madvise(vma.vm_flags(), advice);
        if new_flags == vma.vm_flags() {
            return Ok(());
        }
        // A split a VMA refuses (hugetlb, not at a huge page boundary) is
        // EINVAL (out_convert_errno).
        let vma = self.split_vma_to(mm, vma, start, end)?;
        vma.set_vm_flags(new_flags);
        self.vma_merge(mm, &vma);
        Ok(())
    }

    /// Models madvise_pageout() and madvise_pageout_page_range(),
    /// mm/madvise.c, v5.8: reclaim the range's pages now. EINVAL for a
    /// VM_LOCKED or hugetlb VMA (can_madv_lru_vma()); can_do_pageout() holds
    /// for anonymous memory and, for a root caller, for shmem.
    fn madvise_pageout(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(), Errno> {
        let _f = self.func("madvise_pageout");
        if vma.vm_flags() & (vm::LOCKED | vm::HUGETLB) != 0 {
            return Err(Errno::Einval);
        }
        let mut tlb = self.tlb_gather_mmu(mm.id, false);
        // walk_page_range() with cold_walk_ops.
        self.walk_pmd_range(mm, start, end, |c, pmd, addr, next| {
            c.madvise_cold_or_pageout_pte_range(&mut tlb, vma, pmd, addr, next)
        });
        self.tlb_finish_mmu(tlb);
        Ok(())
    }

    /// Models madvise_cold_or_pageout_pte_range(), mm/madvise.c, v5.8, for
    /// MADV_PAGEOUT: a THP mapped by this PMD alone and wholly in the range
    /// is reclaimed whole, one partly in it is split first; each page a PTE
    /// maps, mapped by this process alone, has its accessed bit cleared and
    /// is isolated; then reclaim_pages().
    ///
    /// # Locking
    /// Takes the PMD lock or the PTE lock; drops it (and takes the page
    /// lock) to split a THP; reclaims with no page-table lock held.
    fn madvise_cold_or_pageout_pte_range(
        &self,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        end: VirtAddr,
    ) {
        let _f = self.func("madvise_cold_or_pageout_pte_range");
        let g = self.k.geo;
        let mut list: Vec<Pfn> = Vec::new();
        let cur = self.pmd_read(pmd);
        if cur.is_trans_huge() {
            let next = g.pmd_addr_end(addr, end);
            let Some(ptl) = self.__pmd_trans_huge_lock(pmd) else {
                return;
            };
            let orig = self.pmd_read(pmd);
            let Pmd::Huge {
                pfn: page, flags, ..
            } = orig
            else {
                return; // a migration entry
            };
            if self.is_huge_zero_page(page) || self.page_mapcount(page) != 1 {
                return;
            }
            if next.0 - addr.0 != g.pmd_size() {
                self.get_page(page);
                drop(ptl);
                self.lock_page(page);
                let err = self.split_huge_page_to_list(page);
                self.unlock_page(page);
                self.put_page(page);
                if err.is_err() {
                    return;
                }
                // goto regular_page
            } else {
                if flags.young {
                    let haddr = g.pmd_align_down(addr);
                    self.pmdp_invalidate(vma, haddr, pmd);
                    let old = Pmd::Huge {
                        pfn: page,
                        flags: crate::pgtable::PteFlags {
                            young: false,
                            ..flags
                        },
                        invalid: false,
                    };
                    self.set_pmd_at(pmd, old); // pmd_mkold()
                    self.tlb_remove_tlb_entry(tlb, haddr, g.pmd_size());
                }
                self.page(page).clear_flag(pg::REFERENCED);
                if self.isolate_lru_page(page) {
                    list.push(page);
                }
                drop(ptl);
                self.reclaim_pages(list);
                return;
            }
        } else if self.pmd_trans_unstable(pmd) {
            return;
        }
        // regular_page:
        let Pmd::Table(t) = self.pmd_read(pmd) else {
            return;
        };
        let ps = g.page_size();
        let mut ptl = Some(self.pte_lockptr(t).lock(self));
        let mut a = addr;
        while a < end {
            let r = EntryRef {
                table: t,
                index: g.index(Level::Pte, a),
            };
            let ptent = self.pte_read(r);
            let Some(page) = ptent
                .is_present()
                .then(|| self.vm_normal_page(ptent))
                .flatten()
            else {
                a = a.add_bytes(ps);
                continue;
            };
            if self.page_trans_compound(page) {
                if self.split_pte_mapped_thp(page, t, &mut ptl) {
                    continue; // the same address again, now a base page
                }
                break;
            }
            if self.page_mapcount(page) != 1 {
                a = a.add_bytes(ps);
                continue;
            }
            if ptent.flags().young {
                self.ptep_get_and_clear(r); // ptep_get_and_clear_full()
                self.set_pte_at(r, ptent.with_flags(|f| f.young = false)); // pte_mkold()
                self.tlb_remove_tlb_entry(tlb, a, ps);
            }
            self.page(page).clear_flag(pg::REFERENCED);
            if self.isolate_lru_page(page) {
                list.push(page);
            }
            a = a.add_bytes(ps);
        }
        drop(ptl);
        self.reclaim_pages(list);
    }

    /// Models madvise_free_single_vma(), mm/madvise.c, v5.8: EINVAL for a
    /// VMA that is not anonymous (shmem); else the range's pages become
    /// lazily freed (madvise_free_pte_range() for each PMD).
    ///
    /// # Locking
    /// Called with `mmap_lock` for read.
    fn madvise_free_single_vma(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<(), Errno> {
        let _f = self.func("madvise_free_single_vma");
        if !vma.is_anonymous() {
            return Err(Errno::Einval);
        }
        let start = start.max(vma.vm_start());
        let end = end.min(vma.vm_end());
        if start >= end {
            return Ok(());
        }
        let mut tlb = self.tlb_gather_mmu(mm.id, false);
        self.mmu_notifier_start(mm, crate::mmu_notifier::NotifyEvent::Clear, start, end);
        // walk_page_range() with madvise_free_walk_ops.
        self.walk_pmd_range(mm, start, end, |c, pmd, addr, next| {
            c.madvise_free_pte_range(&mut tlb, vma, pmd, addr, next)
        });
        self.mmu_notifier_invalidate_range_end(mm);
        self.tlb_finish_mmu(tlb);
        Ok(())
    }

    /// Models madvise_free_huge_pmd(), mm/huge_memory.c, v5.8: a THP this
    /// PMD alone maps, wholly in the range, is cleaned and lazily freed
    /// (true); one partly in it is split (false: the caller goes on with
    /// its PTEs).
    ///
    /// # Locking
    /// Takes the PMD lock and a trylock of the page; drops the PMD lock to
    /// split.
    fn madvise_free_huge_pmd(
        &self,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
    ) -> bool {
        let _f = self.func("madvise_free_huge_pmd");
        let g = self.k.geo;
        let Some(ptl) = self.__pmd_trans_huge_lock(pmd) else {
            return false;
        };
        let Pmd::Huge {
            pfn: page, flags, ..
        } = self.pmd_read(pmd)
        else {
            return false; // a migration entry
        };
        if self.is_huge_zero_page(page) || self.page_mapcount(page) != 1 {
            return false;
        }
        if !self.trylock_page(page) {
            return false;
        }
        // If user want to discard part-pages of THP, split it so MADV_FREE
        // will deactivate only them.
        if next.0 - addr.0 != g.pmd_size() {
            self.get_page(page);
            drop(ptl);
            let _ = self.split_huge_page_to_list(page);
            self.unlock_page(page);
            self.put_page(page);
            return false;
        }
        self.page(page).clear_flag(pg::DIRTY);
        self.unlock_page(page);
        if flags.young || flags.dirty {
            let haddr = g.pmd_align_down(addr);
            self.pmdp_invalidate(vma, haddr, pmd);
            let clean = Pmd::Huge {
                pfn: page,
                flags: crate::pgtable::PteFlags {
                    young: false,
                    dirty: false,
                    ..flags
                },
                invalid: false,
            };
            self.set_pmd_at(pmd, clean); // pmd_mkold(), pmd_mkclean()
            self.tlb_remove_tlb_entry(tlb, haddr, g.pmd_size());
        }
        self.mark_page_lazyfree(page);
        drop(ptl);
        true
    }

    /// Models madvise_free_pte_range(), mm/madvise.c, v5.8.
    ///
    /// # Locking
    /// Takes the PTE lock; drops it (and takes the page lock) to split a
    /// THP; trylocks a swap-cache or dirty page to clean it.
    fn madvise_free_pte_range(
        &self,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        end: VirtAddr,
    ) {
        let _f = self.func("madvise_free_pte_range");
        let g = self.k.geo;
        let next = g.pmd_addr_end(addr, end);
        if self.pmd_read(pmd).is_trans_huge()
            && self.madvise_free_huge_pmd(tlb, vma, pmd, addr, next)
        {
            return;
        }
        if self.pmd_trans_unstable(pmd) {
            return;
        }
        let Pmd::Table(t) = self.pmd_read(pmd) else {
            return;
        };
        let ps = g.page_size();
        let mut ptl = Some(self.pte_lockptr(t).lock(self));
        let mut a = addr;
        while a < end {
            let r = EntryRef {
                table: t,
                index: g.index(Level::Pte, a),
            };
            let ptent = self.pte_read(r);
            match ptent {
                Pte::None | Pte::Migration { .. } => {
                    a = a.add_bytes(ps);
                    continue;
                }
                Pte::Swap(entry) => {
                    // Only the swap entry of a page the process alone had.
                    self.free_swap_and_cache(entry);
                    self.ptep_get_and_clear(r); // pte_clear_not_present_full()
                    a = a.add_bytes(ps);
                    continue;
                }
                Pte::Present { .. } => {}
            }
            let Some(page) = self.vm_normal_page(ptent) else {
                a = a.add_bytes(ps);
                continue;
            };
            // If pmd isn't transhuge but the page is THP and is owned by
            // only this process, split it and deactivate all pages.
            if self.page_trans_compound(page) {
                if self.split_pte_mapped_thp(page, t, &mut ptl) {
                    continue; // the same address again, now a base page
                }
                break;
            }
            if self.page_swapcache(page) || self.page(page).test_flag(pg::DIRTY) {
                if self.page_mapcount(page) != 1 {
                    a = a.add_bytes(ps);
                    continue;
                }
                if !self.trylock_page(page) {
                    a = a.add_bytes(ps);
                    continue;
                }
                if self.page_swapcache(page) && !self.try_to_free_swap(page) {
                    self.unlock_page(page);
                    a = a.add_bytes(ps);
                    continue;
                }
                self.page(page).clear_flag(pg::DIRTY);
                self.unlock_page(page);
            }
            let f = ptent.flags();
            if f.young || f.dirty {
                self.ptep_get_and_clear(r); // ptep_get_and_clear_full()
                self.set_pte_at(
                    r,
                    ptent.with_flags(|f| {
                        f.young = false; // pte_mkold()
                        f.dirty = false; // pte_mkclean()
                    }),
                );
                self.tlb_remove_tlb_entry(tlb, a, ps);
            }
            self.mark_page_lazyfree(page);
            a = a.add_bytes(ps);
        }
        drop(ptl);
    }

    /// What madvise_cold_or_pageout_pte_range() and madvise_free_pte_range()
    /// (mm/madvise.c, v5.8) do on meeting a PTE-mapped THP: split it if
    /// this process alone maps it. Returns whether it was split (the walk
    /// looks at the address again); false ends the walk.
    ///
    /// # Locking
    /// Called with the PTE lock (`ptl`); drops it around the split (with
    /// the page lock, trylocked, held) and holds it again on return.
    fn split_pte_mapped_thp<'a>(
        &'a self,
        page: Pfn,
        pte_table: Pfn,
        ptl: &mut Option<crate::sync::SpinGuard<'a, E>>,
    ) -> bool {
        if self.page_mapcount(page) != 1 {
            return false;
        }
        self.get_page(page);
        if !self.trylock_page(page) {
            self.put_page(page);
            return false;
        }
        drop(ptl.take());
        let split = self.split_huge_page_to_list(page).is_ok();
        self.unlock_page(page);
        self.put_page(page);
        *ptl = Some(self.pte_lockptr(pte_table).lock(self));
        split
    }

    /// Models walk_page_range() down to its `pmd_entry` callback
    /// (walk_pmd_range(), mm/pagewalk.c, v5.8): `pmd_entry(cpu, pmd, addr,
    /// next)` for each present PMD of `[start, end)`, in order; holes
    /// (missing upper levels, none PMDs) are skipped, as walks without a
    /// `pte_hole` callback skip them.
    fn walk_pmd_range(
        &self,
        mm: &MmStruct<E>,
        start: VirtAddr,
        end: VirtAddr,
        mut pmd_entry: impl FnMut(&Self, EntryRef, VirtAddr, VirtAddr),
    ) {
        let mut addr = start;
        while addr < end {
            let next = self.k.geo.pmd_addr_end(addr, end);
            if let Some(pmd) = self.pmd_offset(mm, addr) {
                if !self.pmd_read(pmd).is_none() {
                    pmd_entry(self, pmd, addr, next);
                }
            }
            addr = next;
        }
    }
}
