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
//! Leaves out: MADV_FREE, MADV_COLD, the other advices. MADV_COLLAPSE is
//! 6.1's: 5.8 rejects it as an unknown advice (EINVAL).

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::khugepaged::HugepageAdvice;
use crate::memory::MmuGather;
use crate::mm_types::{vm, MmStruct, Vma};
use crate::page::pg;
use crate::pgtable::{EntryRef, Pmd};
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
        if matches!(advice, Advice::DontNeed | Advice::Pageout) {
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
        // walk_page_range() with cold_walk_ops: each PMD of the range.
        let mut addr = start;
        while addr < end {
            let next = self.k.geo.pmd_addr_end(addr, end);
            if let Some(pmd) = self.pmd_offset(mm, addr) {
                if !self.pmd_read(pmd).is_none() {
                    self.madvise_cold_or_pageout_pte_range(&mut tlb, vma, pmd, addr, next);
                }
            }
            addr = next;
        }
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
                if self.page_mapcount(page) != 1 {
                    break;
                }
                self.get_page(page);
                if !self.trylock_page(page) {
                    self.put_page(page);
                    break;
                }
                drop(ptl.take());
                if self.split_huge_page_to_list(page).is_err() {
                    self.unlock_page(page);
                    self.put_page(page);
                    ptl = Some(self.pte_lockptr(t).lock(self));
                    break;
                }
                self.unlock_page(page);
                self.put_page(page);
                ptl = Some(self.pte_lockptr(t).lock(self));
                continue; // the same address again, now a base page
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
}
