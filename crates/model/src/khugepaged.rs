//! khugepaged: mm/khugepaged.c (v5.8).
//!
//! Models hugepage_madvise() (MADV_HUGEPAGE/MADV_NOHUGEPAGE) and one
//! khugepaged scan of a range of a process (`kernel: khugepaged P A[..]`):
//! for each PMD-aligned huge page of an eligible VMA (hugepage_vma_check()),
//! khugepaged_scan_pmd() counts what the PTEs map against 5.8's limits
//! (max_ptes_none, max_ptes_swap, max_ptes_shared — the last new in 5.8) and
//! refuses pages that are not on the LRU, locked, not anonymous or with
//! references beyond their mappings (pins); then collapse_huge_page(): a new
//! THP on the node most pages are on, swap-in of up to max_ptes_swap swap
//! entries (__collapse_huge_page_swapin()), then under `mmap_lock` for write
//! and the anon_vma lock the PMD is cleared and flushed
//! (pmdp_collapse_flush(), which GUP-fast's interrupts-off walk holds off),
//! the pages are isolated and locked (__collapse_huge_page_isolate()),
//! copied (__collapse_huge_page_copy()) and freed, and the huge PMD is set
//! with the old PTE table deposited.
//!
//! The locks collapse takes: `mmap_lock` (read for the scan, write for the
//! collapse), the anon_vma lock, the PMD lock and the PTE lock of the same
//! range one after the other, never nested (5.8's anon collapse releases the
//! PMD lock before it takes the PTE lock), so they share the page-table lock
//! class without a nesting annotation.
//!
//! Leaves out: the khugepaged thread, its mm_slot list and sleeps (a scan
//! runs when the scenario says), file and shmem collapse (collapse_file(),
//! khugepaged_scan_file(): a shmem VMA is skipped), retract_page_tables(),
//! userfaultfd, memcg charging, and the allocation's defrag (it fails at
//! once when no huge page is free, SCAN_ALLOC_HUGE_PAGE_FAIL).

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::kernel::ThpPolicy;
use crate::memory::{FaultFlags, VmFault};
use crate::mm_types::{vm, MmStruct, Vma};
use crate::page::pg;
use crate::pgtable::{EntryRef, Pmd, Pte, PteFlags};
use crate::types::{Level, Pfn, VirtAddr};
use serde::Serialize;
use std::sync::Arc;

/// The madvise advice hugepage_madvise() handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugepageAdvice {
    Hugepage,
    NoHugepage,
}

/// khugepaged's limits (/sys/kernel/mm/transparent_hugepage/khugepaged/).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KhugepagedLimits {
    /// `khugepaged_max_ptes_none`: PTEs that may be none or the zero page.
    pub max_ptes_none: u64,
    /// `khugepaged_max_ptes_swap`: swap entries a collapse may swap in.
    pub max_ptes_swap: u64,
    /// `khugepaged_max_ptes_shared`: pages mapped more than once (5.8).
    pub max_ptes_shared: u64,
}

impl KhugepagedLimits {
    /// khugepaged_init(), v5.8: HPAGE_PMD_NR − 1, HPAGE_PMD_NR / 8,
    /// HPAGE_PMD_NR / 2.
    pub fn defaults(hpage_pmd_nr: u64) -> Self {
        KhugepagedLimits {
            max_ptes_none: hpage_pmd_nr - 1,
            max_ptes_swap: hpage_pmd_nr / 8,
            max_ptes_shared: hpage_pmd_nr / 2,
        }
    }
}

/// `enum scan_result`, mm/khugepaged.c, v5.8 (the values the model reaches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ScanResult {
    Succeed,
    PmdNull,
    ExceedNonePte,
    ExceedSwapPte,
    ExceedSharedPte,
    PteNonPresent,
    PageRo,
    LackReferencedPage,
    PageNull,
    PageLru,
    PageLock,
    PageAnon,
    PageCount,
    VmaCheck,
    AddressRange,
    AnyProcess,
    AllocHugePageFail,
    SwapCachePage,
    DelPageLru,
    /// SCAN_FAIL: isolation failed after the PMD was cleared.
    Fail,
    /// The swap-in of __collapse_huge_page_swapin() failed.
    SwapinFail,
}

impl ScanResult {
    /// The kernel's name (the tracepoint's `status`).
    pub fn name(self) -> &'static str {
        match self {
            ScanResult::Succeed => "succeeded",
            ScanResult::PmdNull => "pmd_null",
            ScanResult::ExceedNonePte => "exceed_none_pte",
            ScanResult::ExceedSwapPte => "exceed_swap_pte",
            ScanResult::ExceedSharedPte => "exceed_shared_pte",
            ScanResult::PteNonPresent => "pte_non_present",
            ScanResult::PageRo => "no_writable_page",
            ScanResult::LackReferencedPage => "lack_referenced_page",
            ScanResult::PageNull => "page_null",
            ScanResult::PageLru => "page_not_in_lru",
            ScanResult::PageLock => "page_locked",
            ScanResult::PageAnon => "page_not_anon",
            ScanResult::PageCount => "page_count",
            ScanResult::VmaCheck => "vma_check_failed",
            ScanResult::AddressRange => "not_suitable_address_range",
            ScanResult::AnyProcess => "any_process",
            ScanResult::AllocHugePageFail => "alloc_huge_page_failed",
            ScanResult::SwapCachePage => "page_swap_cache",
            ScanResult::DelPageLru => "could_not_delete_page_from_lru",
            ScanResult::Fail => "failed",
            ScanResult::SwapinFail => "swapin_failed",
        }
    }
}

impl<E: Engine> Cpu<E> {
    /// Models hugepage_madvise(), mm/khugepaged.c, v5.8: the new vm_flags.
    pub fn hugepage_madvise(&self, vm_flags: u64, advice: HugepageAdvice) -> u64 {
        match advice {
            HugepageAdvice::Hugepage => (vm_flags & !vm::NOHUGEPAGE) | vm::HUGEPAGE,
            HugepageAdvice::NoHugepage => (vm_flags & !vm::HUGEPAGE) | vm::NOHUGEPAGE,
        }
    }

    /// Models hugepage_vma_check(), mm/khugepaged.c, v5.8, for anonymous
    /// memory: THP `always` or MADV_HUGEPAGE, not MADV_NOHUGEPAGE, an
    /// anon_vma, no vm_ops (a file or shmem VMA), not VM_NO_KHUGEPAGED.
    pub fn hugepage_vma_check(&self, vma: &Vma) -> bool {
        let f = vma.vm_flags();
        let always = self.k.cfg.thp == ThpPolicy::Always;
        if (f & vm::HUGEPAGE == 0 && !always)
            || f & vm::NOHUGEPAGE != 0
            || self.k.cfg.thp == ThpPolicy::Never
        {
            return false;
        }
        // shmem_file(): collapse_file() is not modelled; DIVERGENCE: a shmem
        // VMA is never collapsed.
        if vma.vm_file.is_some() || vma.is_hugetlb() {
            return false;
        }
        if vma.anon_vma().is_none() {
            return false;
        }
        // VM_NO_KHUGEPAGED: VM_SPECIAL (no such VMA in the model) | VM_HUGETLB.
        f & vm::HUGETLB == 0
    }

    /// Models hugepage_vma_revalidate(), mm/khugepaged.c, v5.8: after
    /// `mmap_lock` was dropped, the VMA at `address` must still be eligible
    /// and cover the whole huge page.
    fn hugepage_vma_revalidate(
        &self,
        mm: &MmStruct<E>,
        address: VirtAddr,
    ) -> Result<Arc<Vma>, ScanResult> {
        if mm.exited.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ScanResult::AnyProcess);
        }
        let Some(vma) = mm.vma_at(address) else {
            return Err(ScanResult::VmaCheck);
        };
        let g = self.k.geo;
        let hstart = (vma.vm_start().0 + g.pmd_size() - 1) & !(g.pmd_size() - 1);
        let hend = vma.vm_end().0 & !(g.pmd_size() - 1);
        if address.0 < hstart || address.0 + g.pmd_size() > hend {
            return Err(ScanResult::AddressRange);
        }
        if !self.hugepage_vma_check(&vma) {
            return Err(ScanResult::VmaCheck);
        }
        Ok(vma)
    }

    /// One khugepaged scan over `[start, end)` of `mm`
    /// (khugepaged_scan_mm_slot() limited to the range): each eligible huge
    /// page is scanned and, when it qualifies, collapsed. Returns each huge
    /// page's address and result.
    ///
    /// # Locking
    /// Takes `mmap_lock` for read for each huge page (collapse_huge_page()
    /// drops it and takes it for write).
    pub fn khugepaged_scan_range(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Vec<(VirtAddr, ScanResult)> {
        let _f = self.func("khugepaged_scan_mm_slot");
        let g = self.k.geo;
        let mut out = Vec::new();
        // Every huge page the range overlaps.
        let mut addr = g.pmd_align_down(start);
        while addr < end {
            let mmap = mm.mmap_lock.read(self);
            let r = match self.hugepage_vma_revalidate(mm, addr) {
                Ok(vma) => {
                    // khugepaged_scan_pmd() drops mmap_lock when it collapses.
                    self.khugepaged_scan_pmd(mm, &vma, addr, mmap)
                }
                Err(e) => e,
            };
            self.note(|| format!("khugepaged_scan_pmd({:#x}): {}", addr.0, r.name()));
            out.push((addr, r));
            addr = addr.add_bytes(g.pmd_size());
        }
        out
    }

    /// `pte_none(pteval) || is_zero_pfn(pte_pfn(pteval))`, the test of
    /// khugepaged_scan_pmd() and __collapse_huge_page_isolate() for a PTE
    /// that counts against max_ptes_none.
    fn pte_none_or_zero(&self, pteval: Pte) -> bool {
        pteval.is_none() || pteval.pfn().is_some_and(|p| self.is_zero_pfn(p))
    }

    /// Models is_refcount_suitable(), mm/khugepaged.c, v5.8: the page's
    /// references are its mappings (and the swap cache's): no pin.
    fn is_refcount_suitable(&self, page: Pfn) -> bool {
        let mut expected = self.total_mapcount(page);
        if self.page_swapcache(page) {
            expected += 1 << self.page(page).compound_order();
        }
        self.page_count(page) == expected
    }

    /// Models mm_find_pmd(), mm/rmap.c, v5.8: the PMD at `address` if it
    /// points to a PTE table (not none, not huge).
    fn mm_find_pmd(&self, mm: &MmStruct<E>, address: VirtAddr) -> Option<EntryRef> {
        let pmd = self.pmd_offset(mm, address)?;
        matches!(self.pmd_read(pmd), Pmd::Table(_)).then_some(pmd)
    }

    /// Models khugepaged_scan_pmd(), mm/khugepaged.c, v5.8: whether the huge
    /// page at `address` qualifies, counted under the PTE lock; if it does,
    /// collapse_huge_page() (which takes over `mmap`).
    ///
    /// # Locking
    /// Called with `mmap_lock` for read (`mmap`); takes the PTE lock.
    fn khugepaged_scan_pmd(
        &self,
        mm: &Arc<MmStruct<E>>,
        _vma: &Arc<Vma>,
        address: VirtAddr,
        mmap: crate::sync::RwSemReadGuard<'_, E>,
    ) -> ScanResult {
        let _f = self.func("khugepaged_scan_pmd");
        let g = self.k.geo;
        let limits = self.k.cfg.khugepaged;
        let Some(pmd) = self.mm_find_pmd(mm, address) else {
            return ScanResult::PmdNull;
        };
        let Pmd::Table(t) = self.pmd_read(pmd) else {
            return ScanResult::PmdNull;
        };
        let nr = g.hpage_pmd_nr();
        let mut node_load = vec![0u64; self.k.cfg.nodes as usize];
        let (mut none_or_zero, mut shared, mut unmapped, mut referenced) = (0, 0, 0, 0);
        let mut writable = false;
        let result = {
            let _ptl = self.pte_lockptr(t).lock(self);
            'scan: {
                for i in 0..nr {
                    let a = address.add_bytes(i * g.page_size());
                    let r = EntryRef {
                        table: t,
                        index: g.index(Level::Pte, a),
                    };
                    let pteval = self.pte_read(r);
                    if matches!(pteval, Pte::Swap(_)) {
                        unmapped += 1;
                        if unmapped <= limits.max_ptes_swap {
                            continue;
                        }
                        break 'scan ScanResult::ExceedSwapPte;
                    }
                    if self.pte_none_or_zero(pteval) {
                        none_or_zero += 1;
                        if none_or_zero <= limits.max_ptes_none {
                            continue;
                        }
                        break 'scan ScanResult::ExceedNonePte;
                    }
                    if !pteval.is_present() {
                        break 'scan ScanResult::PteNonPresent;
                    }
                    if pteval.is_write() {
                        writable = true;
                    }
                    let Some(page) = self.vm_normal_page(pteval) else {
                        break 'scan ScanResult::PageNull;
                    };
                    if self.page_mapcount(page) > 1 {
                        shared += 1;
                        if shared > limits.max_ptes_shared {
                            break 'scan ScanResult::ExceedSharedPte;
                        }
                    }
                    let page = self.compound_head(page);
                    node_load[self.page(page).node as usize] += 1;
                    if !self.page(page).test_flag(pg::LRU) {
                        break 'scan ScanResult::PageLru;
                    }
                    if self.page_locked(page) {
                        break 'scan ScanResult::PageLock;
                    }
                    if !self.page_anon(page) {
                        break 'scan ScanResult::PageAnon;
                    }
                    if !self.is_refcount_suitable(page) {
                        break 'scan ScanResult::PageCount;
                    }
                    if pteval.flags().young || self.page(page).test_flag(pg::REFERENCED) {
                        referenced += 1;
                    }
                }
                if !writable {
                    ScanResult::PageRo
                } else if referenced == 0 || (unmapped > 0 && referenced < nr / 2) {
                    ScanResult::LackReferencedPage
                } else {
                    ScanResult::Succeed
                }
            }
        };
        if result != ScanResult::Succeed {
            return result;
        }
        // khugepaged_find_target_node(): the node most pages are on.
        let node = (0..node_load.len())
            .max_by_key(|&n| (node_load[n], std::cmp::Reverse(n)))
            .unwrap_or(0) as u32;
        self.collapse_huge_page(mm, address, node, referenced, unmapped, mmap)
    }

    /// Models collapse_huge_page(), mm/khugepaged.c, v5.8.
    ///
    /// # Locking
    /// Called with `mmap_lock` for read (`mmap`), which it drops to
    /// allocate; retakes it for read to swap in, then takes it for write;
    /// then the anon_vma lock for write, the PMD lock (released), the PTE
    /// lock (released), the PMD lock again. The new page is locked by no one
    /// until the huge PMD maps it.
    fn collapse_huge_page(
        &self,
        mm: &Arc<MmStruct<E>>,
        address: VirtAddr,
        node: u32,
        referenced: u64,
        unmapped: u64,
        mmap: crate::sync::RwSemReadGuard<'_, E>,
    ) -> ScanResult {
        let _f = self.func("collapse_huge_page");
        let g = self.k.geo;
        drop(mmap);
        // khugepaged_alloc_page(): __GFP_THISNODE.
        let Some(new_page) = self.alloc_pages_thisnode(g.hpage_pmd_order(), node) else {
            return ScanResult::AllocHugePageFail;
        };
        let fail = |c: &Self, r: ScanResult| {
            c.put_page(new_page);
            r
        };
        {
            let _r = mm.mmap_lock.read(self);
            let vma = match self.hugepage_vma_revalidate(mm, address) {
                Ok(v) => v,
                Err(e) => return fail(self, e),
            };
            let Some(pmd) = self.mm_find_pmd(mm, address) else {
                return fail(self, ScanResult::PmdNull);
            };
            if unmapped > 0 && !self.__collapse_huge_page_swapin(mm, &vma, address, pmd, referenced)
            {
                return fail(self, ScanResult::SwapinFail);
            }
        }
        let _w = mm.mmap_lock.write(self);
        let vma = match self.hugepage_vma_revalidate(mm, address) {
            Ok(v) => v,
            Err(e) => return fail(self, e),
        };
        let Some(pmd) = self.mm_find_pmd(mm, address) else {
            return fail(self, ScanResult::PmdNull);
        };
        let Some(av) = vma.anon_vma() else {
            return fail(self, ScanResult::VmaCheck);
        };
        self.anon_vma_lock_write(av);
        let haddr_end = address.add_bytes(g.pmd_size());
        self.mmu_notifier_start(
            mm,
            crate::mmu_notifier::NotifyEvent::Clear,
            address,
            haddr_end,
        );
        // pmdp_collapse_flush() under the PMD lock ("probably unnecessary").
        let old_pmd = {
            let _pmd_ptl = self.pmd_lockptr(pmd).lock(self);
            let v = self.pmdp_huge_get_and_clear(pmd);
            self.flush_tlb_range(mm.id, address, haddr_end);
            v
        };
        self.mmu_notifier_invalidate_range_end(mm);
        let Pmd::Table(pte_table) = old_pmd else {
            self.bug(
                "collapse_huge_page(): the PMD no longer points to a PTE table",
                None,
            );
        };
        let mut compound = Vec::new();
        let isolated = {
            let _pte_ptl = self.pte_lockptr(pte_table).lock(self);
            self.__collapse_huge_page_isolate(&vma, address, pte_table, &mut compound)
        };
        if let Err(r) = isolated {
            let _pmd_ptl = self.pmd_lockptr(pmd).lock(self);
            if !self.pmd_read(pmd).is_none() {
                self.bug("BUG_ON(!pmd_none(*pmd))", None);
            }
            self.set_pmd_at(pmd, Pmd::Table(pte_table)); // pmd_populate()
            drop(_pmd_ptl);
            self.anon_vma_unlock_write(av);
            return fail(self, r);
        }
        self.anon_vma_unlock_write(av);
        self.__collapse_huge_page_copy(&vma, address, pte_table, new_page, compound);
        self.page(new_page).__set_flag(pg::UPTODATE); // __SetPageUptodate()
        let mut flags = vma.vm_page_prot();
        flags.dirty = true; // pmd_mkdirty()
        self.maybe_mkwrite(&mut flags, &vma);
        let _pmd_ptl = self.pmd_lockptr(pmd).lock(self);
        if !self.pmd_read(pmd).is_none() {
            self.bug("BUG_ON(!pmd_none(*pmd))", None);
        }
        self.page_add_new_anon_rmap(new_page, &vma, address, true);
        self.lru_cache_add_active_or_unevictable(new_page, &vma);
        self.pgtable_trans_huge_deposit(pmd, pte_table);
        self.set_pmd_at(
            pmd,
            Pmd::Huge {
                pfn: new_page,
                flags: PteFlags {
                    young: false,
                    ..flags
                },
                invalid: false,
            },
        );
        self.mark(crate::coverage::Mark::reached(
            "collapse_huge_page: collapsed",
        ));
        ScanResult::Succeed
    }

    /// Models __collapse_huge_page_swapin(), mm/khugepaged.c, v5.8: fault
    /// in each swap entry of the huge page (do_swap_page(), read fault).
    /// DIVERGENCE: do_swap_page() here waits for a locked page holding
    /// `mmap_lock` (see do_swap_page()), so the VM_FAULT_RETRY path (drop,
    /// retake and revalidate) is not taken.
    ///
    /// # Locking
    /// Called with `mmap_lock` for read.
    fn __collapse_huge_page_swapin(
        &self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        address: VirtAddr,
        pmd: EntryRef,
        _referenced: u64,
    ) -> bool {
        let _f = self.func("__collapse_huge_page_swapin");
        let g = self.k.geo;
        for i in 0..g.hpage_pmd_nr() {
            let a = address.add_bytes(i * g.page_size());
            let pmdv = self.pmd_read(pmd);
            let Some(pte) = self.pte_offset(pmdv, a) else {
                return false;
            };
            let orig = self.pte_read(pte);
            if !matches!(orig, Pte::Swap(_)) {
                continue;
            }
            let mut vmf = VmFault::new(mm.clone(), vma.clone(), a, FaultFlags::default());
            vmf.pmd = Some(pmd);
            vmf.pte = Some(pte);
            vmf.orig_pte = orig;
            let ret = self.do_swap_page(&mut vmf);
            if ret.oom() || ret.sigbus() || ret.sigsegv() {
                return false;
            }
        }
        true
    }

    /// Models __collapse_huge_page_isolate(), mm/khugepaged.c, v5.8: with
    /// the PMD cleared, each page the PTEs map is locked and taken off the
    /// LRU (a THP once, on `compound`); Err(result) if one cannot be, after
    /// putting back those taken.
    ///
    /// # Locking
    /// Called with the PTE lock held; trylocks each page.
    fn __collapse_huge_page_isolate(
        &self,
        _vma: &Arc<Vma>,
        address: VirtAddr,
        pte_table: Pfn,
        compound: &mut Vec<Pfn>,
    ) -> Result<(), ScanResult> {
        let _f = self.func("__collapse_huge_page_isolate");
        let g = self.k.geo;
        let limits = self.k.cfg.khugepaged;
        let (mut none_or_zero, mut shared, mut referenced) = (0, 0, 0);
        let mut writable = false;
        let mut isolated: Vec<Pfn> = Vec::new();
        let result = 'out: {
            for i in 0..g.hpage_pmd_nr() {
                let a = address.add_bytes(i * g.page_size());
                let r = EntryRef {
                    table: pte_table,
                    index: g.index(Level::Pte, a),
                };
                let pteval = self.pte_read(r);
                if self.pte_none_or_zero(pteval) {
                    none_or_zero += 1;
                    if none_or_zero <= limits.max_ptes_none {
                        continue;
                    }
                    break 'out ScanResult::ExceedNonePte;
                }
                if !pteval.is_present() {
                    break 'out ScanResult::PteNonPresent;
                }
                let Some(page) = self.vm_normal_page(pteval) else {
                    break 'out ScanResult::PageNull;
                };
                crate::vm_bug_on_page!(
                    self,
                    !self.page_anon(page),
                    page,
                    "VM_BUG_ON_PAGE(!PageAnon(page), page)"
                );
                if self.page_mapcount(page) > 1 {
                    shared += 1;
                    if shared > limits.max_ptes_shared {
                        break 'out ScanResult::ExceedSharedPte;
                    }
                }
                let head = self.compound_head(page);
                let already = self.page_compound(page) && compound.contains(&head);
                if !already {
                    if !self.trylock_page(head) {
                        break 'out ScanResult::PageLock;
                    }
                    if !self.is_refcount_suitable(head) {
                        self.unlock_page(head);
                        break 'out ScanResult::PageCount;
                    }
                    if !pteval.is_write()
                        && self.page_swapcache(head)
                        && !self.reuse_swap_page(head, None)
                    {
                        self.unlock_page(head);
                        break 'out ScanResult::SwapCachePage;
                    }
                    if !self.isolate_lru_page(head) {
                        self.unlock_page(head);
                        break 'out ScanResult::DelPageLru;
                    }
                    if self.page_compound(head) {
                        compound.push(head);
                    } else {
                        isolated.push(head);
                    }
                }
                if pteval.flags().young || self.page(head).test_flag(pg::REFERENCED) {
                    referenced += 1;
                }
                if pteval.is_write() {
                    writable = true;
                }
            }
            if !writable {
                ScanResult::PageRo
            } else if referenced == 0 {
                // 5.8 leaves `result` at 0 (SCAN_FAIL) here.
                ScanResult::Fail
            } else {
                return Ok(());
            }
        };
        // release_pte_pages()
        for p in isolated.into_iter().chain(compound.drain(..)) {
            self.release_pte_page(p);
        }
        Err(result)
    }

    /// Models release_pte_page(), mm/khugepaged.c, v5.8.
    fn release_pte_page(&self, page: Pfn) {
        self.unlock_page(page);
        self.putback_lru_page(page);
    }

    /// Models __collapse_huge_page_copy(), mm/khugepaged.c, v5.8: each
    /// subpage of the new THP gets its page's bytes (zeros for a none or
    /// zero-page PTE); each old PTE is cleared and its page freed.
    ///
    /// # Locking
    /// Takes the PTE lock for each entry it clears.
    fn __collapse_huge_page_copy(
        &self,
        vma: &Arc<Vma>,
        address: VirtAddr,
        pte_table: Pfn,
        new_page: Pfn,
        compound: Vec<Pfn>,
    ) {
        let _f = self.func("__collapse_huge_page_copy");
        let g = self.k.geo;
        let _ = vma;
        for i in 0..g.hpage_pmd_nr() {
            let a = address.add_bytes(i * g.page_size());
            let r = EntryRef {
                table: pte_table,
                index: g.index(Level::Pte, a),
            };
            let pteval = self.pte_read(r);
            let dst = new_page.add(i);
            match pteval.pfn() {
                None => self.clear_page(dst),
                Some(p) if self.is_zero_pfn(p) => {
                    self.clear_page(dst);
                    let _ptl = self.pte_lockptr(pte_table).lock(self);
                    self.ptep_get_and_clear(r); // pte_clear()
                }
                Some(src) => {
                    self.copy_page(dst, src);
                    let src_compound = self.page_compound(src);
                    if !src_compound {
                        self.release_pte_page(src);
                    }
                    {
                        let _ptl = self.pte_lockptr(pte_table).lock(self);
                        self.ptep_get_and_clear(r); // pte_clear()
                        self.page_remove_rmap(src, false);
                    }
                    self.free_page_and_swap_cache(src);
                }
            }
        }
        for p in compound {
            self.release_pte_page(p);
        }
    }
}
