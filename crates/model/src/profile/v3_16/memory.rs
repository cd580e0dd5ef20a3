//! The v3.16 fault entry and zap branch of a huge PMD (mm/memory.c) and
//! wait_split_huge_page() (include/linux/huge_mm.h).

use super::Cpu316;
use crate::coverage::Mark;
use crate::engine::Engine;
use crate::memory::{MmuGather, VmFault, VmFaultT};
use crate::mm_types::Vma;
use crate::pgtable::{EntryRef, Pmd};
use crate::types::VirtAddr;
use std::sync::Arc;

impl<E: Engine> Cpu316<'_, E> {
    /// Models __handle_mm_fault(), mm/memory.c, v3.16: a none PMD in a THP
    /// VMA takes a huge page; a huge PMD takes the WP fault (or has its
    /// accessed bit set); then the PTE level, shared with 5.8
    /// (handle_pte_fault()).
    ///
    /// DIVERGENCE: on a huge PMD under split, 3.16 returns at once and the
    /// access retries ("Alternative: wait until the split is done, and goto
    /// retry"); the model takes that alternative, waiting as
    /// wait_split_huge_page() does (the anon_vma lock for write, taken and
    /// dropped) before the retry. Without it a faulting CPU would spin for
    /// the whole split, which a bounded search cannot schedule away from.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read; may take the anon_vma lock for
    /// write (the wait), the PMD lock, the PTE lock.
    pub(crate) fn __handle_mm_fault(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("__handle_mm_fault");
        let Some(pmd) = self.pmd_alloc(&vmf.mm, vmf.address) else {
            return VmFaultT::OOM;
        };
        vmf.pmd = Some(pmd);
        let cur = self.pmd_read(pmd);
        if cur.is_none() && self.__transparent_hugepage_enabled(&vmf.vma) {
            let ret = if vmf.vma.is_anonymous() {
                self.do_huge_pmd_anonymous_page(vmf)
            } else {
                VmFaultT::FALLBACK
            };
            if !ret.fallback() {
                return ret;
            }
        } else {
            let orig_pmd = cur;
            vmf.orig_pmd = orig_pmd;
            if orig_pmd.is_trans_huge() {
                // If the pmd is splitting, return and retry the the fault.
                if orig_pmd.is_trans_splitting() {
                    self.mark(Mark::gives_up(
                        "__handle_mm_fault: pmd_trans_splitting, fault retried",
                    ));
                    if let Some(av) = vmf.vma.anon_vma() {
                        self.anon_vma_lock_write(av);
                        self.anon_vma_unlock_write(av);
                    }
                    return VmFaultT::NONE;
                }
                if vmf.flags.write && !orig_pmd.is_write() {
                    let ret = self.do_huge_pmd_wp_page(vmf, orig_pmd);
                    if !ret.fallback() {
                        return ret;
                    }
                } else {
                    self.huge_pmd_set_accessed(vmf, orig_pmd);
                    return VmFaultT::NONE;
                }
            }
        }
        // Use __pte_alloc instead of pte_alloc_map, because we can't run
        // pte_offset_map on the pmd, if an huge pmd could materialize from
        // under us from a different thread.
        if self.pmd_read(pmd).is_none() && !self.__pte_alloc(&vmf.vma, pmd) {
            return VmFaultT::OOM;
        }
        // if an huge pmd materialized from under us just retry later
        if self.pmd_read(pmd).is_trans_huge() {
            return VmFaultT::NONE;
        }
        self.handle_pte_fault(vmf)
    }

    /// Models __pte_alloc(), mm/memory.c, v3.16: populate a none PMD with a
    /// new page table, or wait if a huge PMD under split appeared there.
    /// Returns false on OOM.
    ///
    /// # Locking
    /// Takes the PMD lock; then (not nested) the anon_vma lock to wait.
    pub(super) fn __pte_alloc(&self, vma: &Vma, pmd: EntryRef) -> bool {
        let _f = self.func("__pte_alloc");
        let Some(new) = self.pte_alloc_one() else {
            return false;
        };
        let cpu = self.0;
        let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
        let cur = self.pmd_read(pmd);
        let mut new = Some(new);
        let mut wait = false;
        if cur.is_none() {
            self.set_pmd_at(pmd, Pmd::Table(new.take().expect("new")));
        } else if cur.is_trans_splitting() {
            wait = true;
        }
        drop(ptl);
        if let Some(new) = new {
            self.pte_free(new);
        }
        if wait {
            self.wait_split_huge_page(vma, pmd);
        }
        true
    }

    /// Models wait_split_huge_page(), include/linux/huge_mm.h, v3.16: take
    /// and drop the anon_vma lock for write, which split_huge_page() holds
    /// for the whole split; then the PMD must be split.
    ///
    /// # Locking
    /// Takes the anon_vma lock for write (no page-table lock held).
    pub(crate) fn wait_split_huge_page(&self, vma: &Vma, pmd: EntryRef) {
        let _f = self.func("wait_split_huge_page");
        let Some(av) = vma.anon_vma() else {
            self.bug(
                "wait_split_huge_page(): a huge PMD in a VMA without anon_vma",
                None,
            );
        };
        self.anon_vma_lock_write(av);
        self.anon_vma_unlock_write(av);
        let cur = self.pmd_read(pmd);
        crate::vm_bug_on!(
            self,
            cur.is_trans_splitting() || cur.is_trans_huge(),
            "BUG_ON(pmd_trans_splitting(*____pmd) || pmd_trans_huge(*____pmd))"
        );
    }

    /// Models zap_pmd_range()'s huge PMD branch, mm/memory.c, v3.16: a huge
    /// PMD the range covers in part is split (page and all), a covered one
    /// zapped. Returns true when the PMD was zapped.
    pub(crate) fn zap_pmd_range_huge(
        &self,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
    ) -> bool {
        if next.0 - addr.0 != self.k.geo.pmd_size() {
            self.split_huge_page_pmd(vma, addr, pmd);
            false
        } else {
            self.zap_huge_pmd(tlb, vma, pmd, addr)
        }
    }
}
