//! The v3.16 reverse-map functions of a THP (mm/rmap.c, include/linux/mm.h)
//! and the rmap walk's PMD lookup (page_check_address_pmd(),
//! mm/huge_memory.c; mm_find_pmd(), mm/rmap.c as of 3.13).

use super::Cpu316;
use crate::engine::{Atomic, Engine};
use crate::fixes::Fix;
use crate::mm_types::{MmStruct, Vma};
use crate::page::{anon_mapping, pg};
use crate::pgtable::{EntryRef, Pmd};
use crate::sync::SpinGuard;
use crate::types::{Pfn, VirtAddr};

/// `enum page_check_address_pmd_flag` (mm/huge_memory.c, v3.16).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PmdFlag {
    /// PAGE_CHECK_ADDRESS_PMD_NOTSPLITTING_FLAG: skip a PMD already marked.
    NotSplitting,
    /// PAGE_CHECK_ADDRESS_PMD_SPLITTING_FLAG: the PMD must be marked.
    Splitting,
}

impl<'a, E: Engine> Cpu316<'a, E> {
    /// Models page_mapcount(), include/linux/mm.h, v3.16:
    /// `atomic_read(&page->_mapcount) + 1` of the page itself. A THP's huge
    /// PMDs are counted on its head; a tail's count is its own (0 while the
    /// THP is whole: tail pins, which used it, are not modelled).
    pub(crate) fn page_mapcount(&self, page: Pfn) -> i64 {
        self.page(page).mapcount.load_i64() + 1
    }

    /// Models page_add_new_anon_rmap(), mm/rmap.c, v3.16, for a THP head
    /// (PageTransHuge) or a base page: the first mapping is counted on the
    /// page's own `_mapcount` (`atomic_set(&page->_mapcount, 0)`), then
    /// __page_set_anon_rmap(page, vma, address, 1) and lru_cache_add().
    /// The page is new, this CPU's alone: no scheduling points.
    pub(crate) fn page_add_new_anon_rmap(&self, page: Pfn, vma: &Vma, address: VirtAddr) {
        crate::vm_bug_on!(
            self,
            address < vma.vm_start() || address >= vma.vm_end(),
            "VM_BUG_ON(address < vma->vm_start || address >= vma->vm_end)"
        );
        let p = self.page(page);
        p.__set_flag(pg::SWAPBACKED); // SetPageSwapBacked()
        p.mapcount.init(0);
        let Some(av) = vma.anon_vma() else {
            self.bug("BUG_ON(!anon_vma)", Some(page));
        };
        p.mapping.init(anon_mapping(av));
        p.index
            .init(vma.linear_page_index(address, self.k.geo.page_shift));
        // SetPageActive(); lru_cache_add() (no VM_LOCKED VMA in this profile).
        self.lru_cache_add_active_or_unevictable(page, vma);
    }

    /// Models page_dup_rmap(), include/linux/rmap.h, v3.16:
    /// `atomic_inc(&page->_mapcount)` (a THP head for a huge PMD).
    pub(crate) fn page_dup_rmap(&self, page: Pfn) {
        self.page(page).mapcount.fetch_add(1);
    }

    /// Models page_remove_rmap(), mm/rmap.c, v3.16, of an anonymous page:
    /// `atomic_add_negative(-1, &page->_mapcount)` (memcg and the
    /// NR_ANON_TRANSPARENT_HUGEPAGES statistics are not modelled; no page is
    /// mlocked in this profile).
    pub(crate) fn page_remove_rmap(&self, page: Pfn) {
        let _f = self.func("page_remove_rmap");
        let left = self.page(page).mapcount.add_return(-1);
        self.note(|| {
            format!(
                "atomic_add_negative(-1, &page->_mapcount): page_mapcount {}",
                left + 1
            )
        });
    }

    /// Models mm_find_pmd(), mm/rmap.c, v3.13 (seed 001's pre-fix form): the
    /// PMD slot for `address` if the upper levels are present and the PMD
    /// is `pmd_present()`, tested without the page-table lock.
    pub(super) fn mm_find_pmd(&self, mm: &MmStruct<E>, address: VirtAddr) -> Option<EntryRef> {
        let pmd = self.pmd_offset(mm, address)?;
        let v = self.pmd_read(pmd);
        if !v.is_present() {
            self.note(|| "mm_find_pmd(): pmd_present(pmd) == 0, without the PMD lock".to_string());
            return None;
        }
        Some(pmd)
    }

    /// Models page_check_address_pmd(), mm/huge_memory.c, v3.16: the huge
    /// PMD of `mm` at `address` that maps `page`, returned with its lock
    /// held. With seed 001's fix (`rmap-pmd-under-ptl`, 3.15) every test is
    /// made under the PMD lock; reverted, the PMD is found by 3.13's
    /// mm_find_pmd(), whose pmd_present() test runs unlocked and so misses a
    /// PMD that zap_huge_pmd() has cleared but not yet unaccounted.
    ///
    /// # Locking
    /// Takes the PMD lock; returns it held when it returns the PMD.
    pub(crate) fn page_check_address_pmd(
        &self,
        page: Pfn,
        mm: &MmStruct<E>,
        address: VirtAddr,
        flag: PmdFlag,
    ) -> Option<(EntryRef, SpinGuard<'a, E>)> {
        let _f = self.func("page_check_address_pmd");
        let g = self.k.geo;
        if address.0 & (g.pmd_size() - 1) != 0 {
            return None;
        }
        let fixed = self.k.cfg.fixes.applied(Fix::RmapPmdUnderPtl);
        let pmd = if fixed {
            // pgd_present(), pud_present(), pmd_offset().
            self.pmd_offset(mm, address)?
        } else {
            self.mm_find_pmd(mm, address)?
        };
        let cpu = self.0;
        let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
        let cur = self.pmd_read(pmd);
        let gone = if fixed {
            !cur.is_present()
        } else {
            cur.is_none() // 3.13: `if (pmd_none(*pmd))`
        };
        if gone {
            self.note(|| "page_check_address_pmd(): no PMD under the PMD lock".to_string());
            return None;
        }
        let Pmd::Huge { pfn, .. } = cur else {
            return None;
        };
        if pfn != page {
            return None;
        }
        // split_vma() may create temporary aliased mappings. There is no
        // risk as long as all huge pmd are found and have their splitting
        // bit set before __split_huge_page_refcount runs.
        if flag == PmdFlag::NotSplitting && cur.is_trans_splitting() {
            self.note(|| {
                "page_check_address_pmd(): already pmd_trans_splitting, skipped".to_string()
            });
            return None;
        }
        crate::vm_bug_on!(
            self,
            flag == PmdFlag::Splitting && !cur.is_trans_splitting(),
            "VM_BUG_ON(flag == PAGE_CHECK_ADDRESS_PMD_SPLITTING_FLAG && !pmd_trans_splitting(*pmd))"
        );
        Some((pmd, ptl))
    }
}
