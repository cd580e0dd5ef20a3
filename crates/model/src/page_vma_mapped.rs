//! Finding where a page is mapped in one VMA: mm/page_vma_mapped.c.
//!
//! Models page_vma_mapped_walk(), check_pte() and map_pte() (v5.8): the PMD is
//! first read *without* the page-table lock (`READ_ONCE(*pvmw->pmd)`) and only a
//! huge or migrating PMD is rechecked under the PMD lock; a non-present PMD ends
//! the walk at once. That unlocked read is the window of seed 001. With
//! PVMW_SYNC (TTU_SYNC from split, the fix `rmap-pmd-under-ptl`), a walk over a
//! THP that finds no PMD takes and drops the PMD lock first, so it cannot
//! return while zap_huge_pmd() has cleared the PMD but not yet dropped the
//! mapcount; and PTEs are always looked at under the PTE lock.
//!
//! DIVERGENCE: that PMD lock for PVMW_SYNC is 5.13's (732ed55823fc); 5.8 has
//! PVMW_SYNC only in map_pte(). The model applies it while the fix
//! `rmap-pmd-under-ptl` is in (the default), so split_huge_page() walks as
//! 5.13 does unless the fix is reverted.
//!
//! Leaves out: device-private entries; hugetlb's case of the walk (its PMD
//! slot under its lock) is in hugetlb.rs's `try_to_unmap_one_huge` and
//! `remove_migration_pte_huge`.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::fixes::Fix;
use crate::mm_types::{MmStruct, Vma};
use crate::pgtable::{EntryRef, Pmd, Pte};
use crate::sync::SpinGuard;
use crate::types::{Level, Pfn, VirtAddr};
use std::sync::Arc;

/// PVMW_* flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct PvmwFlags {
    /// PVMW_SYNC: look at PTEs under the lock even if they look unmapped.
    pub sync: bool,
    /// PVMW_MIGRATION: look for migration entries rather than present pages.
    pub migration: bool,
}

/// `struct page_vma_mapped_walk`. While the walk returns true, `ptl` holds the
/// lock of the entry found.
pub struct Pvmw<'a, E: Engine> {
    pub page: Pfn,
    pub vma: Arc<Vma>,
    pub mm: Arc<MmStruct<E>>,
    pub address: VirtAddr,
    pub flags: PvmwFlags,
    pub pmd: Option<EntryRef>,
    pub pte: Option<EntryRef>,
    pub ptl: Option<SpinGuard<'a, E>>,
}

impl<'a, E: Engine> Pvmw<'a, E> {
    pub fn new(
        page: Pfn,
        vma: Arc<Vma>,
        mm: Arc<MmStruct<E>>,
        address: VirtAddr,
        flags: PvmwFlags,
    ) -> Self {
        Pvmw {
            page,
            vma,
            mm,
            address,
            flags,
            pmd: None,
            pte: None,
            ptl: None,
        }
    }

    /// page_vma_mapped_walk_done(): drop the lock.
    pub fn done(&mut self) {
        self.ptl = None;
        self.pte = None;
    }
}

impl<E: Engine> Cpu<E> {
    /// not_found(): ends the walk.
    fn pvmw_not_found(&self, pvmw: &mut Pvmw<'_, E>) -> bool {
        pvmw.done();
        false
    }

    /// Models check_pte(), mm/page_vma_mapped.c, v5.8: does the PTE map the
    /// page (or, with PVMW_MIGRATION, hold its migration entry)?
    fn check_pte(&self, pvmw: &Pvmw<'_, E>) -> bool {
        let Some(pte) = pvmw.pte else {
            return false;
        };
        let pfn = match self.pte_read(pte) {
            Pte::Migration { pfn, .. } if pvmw.flags.migration => pfn,
            Pte::Present { pfn, .. } if !pvmw.flags.migration => pfn,
            _ => return false,
        };
        // pfn_in_hpage(): the PTE maps the page or one of its subpages.
        let head = pvmw.page;
        let nr = if self.page_trans_huge(head) {
            self.k.geo.hpage_pmd_nr()
        } else {
            1
        };
        pfn.0 >= head.0 && pfn.0 < head.0 + nr
    }

    /// Models map_pte(), mm/page_vma_mapped.c, v5.8.
    fn map_pte<'a>(&'a self, pvmw: &mut Pvmw<'a, E>, pmdv: Pmd) -> bool {
        pvmw.pte = self.pte_offset(pmdv, pvmw.address);
        let Some(pte) = pvmw.pte else {
            return false;
        };
        if !pvmw.flags.sync {
            let v = self.pte_read(pte);
            if pvmw.flags.migration {
                if !matches!(v, Pte::Migration { .. } | Pte::Swap(_)) {
                    return false;
                }
            } else if !v.is_present() {
                self.mark(crate::coverage::Mark::reached(
                    "map_pte(): pte not present without the lock, skipped",
                ));
                return false;
            }
        }
        pvmw.ptl = Some(self.pte_lockptr(pte.table).lock(self));
        true
    }

    /// Models page_vma_mapped_walk(), mm/page_vma_mapped.c, v5.8.
    ///
    /// # Locking
    /// Returns true with the PMD lock (a huge PMD) or the PTE lock held in
    /// `pvmw.ptl`; the next call or `done()` drops it.
    pub fn page_vma_mapped_walk<'a>(&'a self, pvmw: &mut Pvmw<'a, E>) -> bool {
        let _f = self.func("page_vma_mapped_walk");
        let geo = self.k.geo;
        // The only possible pmd mapping has been handled on last iteration.
        if pvmw.pmd.is_some() && pvmw.pte.is_none() {
            return self.pvmw_not_found(pvmw);
        }
        let mut resume = pvmw.pte.is_some();
        loop {
            if !resume {
                // restart:
                let Some(pmd) = self.pmd_offset(&pvmw.mm, pvmw.address) else {
                    return false;
                };
                pvmw.pmd = Some(pmd);
                let pmde = self.pmd_read(pmd);
                if pmde.is_trans_huge() || pmde.is_migration() {
                    pvmw.ptl = Some(self.pmd_lockptr(pmd).lock(self));
                    let now = self.pmd_read(pmd);
                    if now.is_trans_huge() {
                        if pvmw.flags.migration {
                            return self.pvmw_not_found(pvmw);
                        }
                        if now.huge_pfn() != Some(pvmw.page) {
                            return self.pvmw_not_found(pvmw);
                        }
                        return true;
                    } else if !now.is_present() {
                        if !pvmw.flags.migration {
                            return self.pvmw_not_found(pvmw);
                        }
                        if let Pmd::Migration { pfn, .. } = now {
                            if pfn != pvmw.page {
                                return self.pvmw_not_found(pvmw);
                            }
                            return true;
                        }
                        return self.pvmw_not_found(pvmw);
                    } else {
                        // THP pmd was split under us: handle on pte level.
                        pvmw.ptl = None;
                    }
                } else if !pmde.is_present() {
                    self.note(|| {
                        format!(
                            "page_vma_mapped_walk(): pmd {} without the lock, skipped",
                            if pmde.is_none() {
                                "none"
                            } else {
                                "not present"
                            }
                        )
                    });
                    // DIVERGENCE: 5.13's (see the module header).
                    if pvmw.flags.sync
                        && self.k.cfg.fixes.applied(Fix::RmapPmdUnderPtl)
                        && self.page_trans_compound(pvmw.page)
                    {
                        // Take and drop the THP pmd lock so that we cannot
                        // return while zap_huge_pmd() has cleared *pmd but not
                        // yet decremented compound_mapcount.
                        drop(self.pmd_lockptr(pmd).lock(self));
                    }
                    return false;
                }
                let pmdv = self.pmd_read(pmd);
                if self.map_pte(pvmw, pmdv) && self.check_pte(pvmw) {
                    return true;
                }
            }
            resume = false;
            // next_pte: seek to next pte only makes sense for THP.
            if !self.page_trans_huge(pvmw.page) {
                return self.pvmw_not_found(pvmw);
            }
            loop {
                pvmw.address = pvmw.address.add_bytes(geo.page_size());
                // The end of the THP: __vma_address(), unclamped, since the
                // THP may start below vm_start (a VMA boundary inside it).
                let vend = self
                    .__vma_address(pvmw.page, &pvmw.vma)
                    .wrapping_add(self.hpage_nr_pages(pvmw.page) * geo.page_size());
                if pvmw.address >= pvmw.vma.vm_end() || pvmw.address.0 >= vend {
                    return self.pvmw_not_found(pvmw);
                }
                // Did we cross page table boundary?
                if pvmw.address.0.is_multiple_of(geo.pmd_size()) {
                    pvmw.ptl = None;
                    pvmw.pte = None;
                    break; // goto restart
                }
                let pte = pvmw.pte.map(|p| EntryRef {
                    table: p.table,
                    index: geo.index(Level::Pte, pvmw.address),
                });
                pvmw.pte = pte;
                let Some(pte) = pte else {
                    break;
                };
                if self.pte_read(pte).is_none() {
                    self.note(|| {
                        "page_vma_mapped_walk(): pte none without the lock, skipped".to_string()
                    });
                    continue;
                }
                if pvmw.ptl.is_none() {
                    pvmw.ptl = Some(self.pte_lockptr(pte.table).lock(self));
                }
                if self.check_pte(pvmw) {
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Pvmw, PvmwFlags};
    use crate::madvise::Advice;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Cpu, Kernel, StdEngine};

    /// A THP PTE-mapped across a VMA boundary (mprotect of its first subpage):
    /// in the second VMA the walk starts at vm_start, inside the THP, and must
    /// end at the THP's end (`__vma_address() + HPAGE_PMD_SIZE`), not a THP's
    /// size past vm_start, which is inside the next, PTE-mapped, THP.
    #[test]
    fn the_walk_ends_at_the_end_of_a_thp_that_starts_below_vm_start() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let cpu = Cpu::new(Kernel::<StdEngine>::new(Config::new(geo)), CpuId(0));
            let (ps, pmd) = (geo.page_size(), geo.pmd_size());
            let mm = cpu.mm_alloc();
            let a = cpu
                .do_mmap(&mm, 2 * pmd, Prot::ReadWrite, pmd)
                .expect("mmap");
            for off in [0, pmd] {
                cpu.user_access(&mm, a.add_bytes(off), Access::Write(1))
                    .expect("write");
            }
            // The first THP is split at vm_start of the second VMA; the second
            // THP is PTE-mapped by MADV_DONTNEED of one of its subpages.
            cpu.do_mprotect(&mm, a, ps, Prot::Read).expect("mprotect");
            cpu.do_madvise(&mm, a.add_bytes(pmd + 2 * ps), ps, Advice::DontNeed)
                .expect("madvise");
            let head = cpu.page_info(&mm, a).pfn.expect("mapped");
            let next = cpu.page_info(&mm, a.add_bytes(pmd)).pfn.expect("mapped");
            assert!(cpu.page_trans_huge(head) && cpu.page_trans_huge(next));
            let vma = mm.vma_at(a.add_bytes(ps)).expect("second vma");
            assert_eq!(vma.vm_start(), a.add_bytes(ps));
            assert!(vma.vm_end() > a.add_bytes(pmd + ps));

            let start = cpu.vma_address(head, &vma);
            assert_eq!(start, a.add_bytes(ps));
            let mut pvmw = Pvmw::new(head, vma, mm.clone(), start, PvmwFlags::default());
            let mut found = Vec::new();
            while cpu.page_vma_mapped_walk(&mut pvmw) {
                found.push(pvmw.address);
            }
            let want: Vec<_> = (1..geo.hpage_pmd_nr())
                .map(|i| a.add_bytes(i * ps))
                .collect();
            assert_eq!(found, want, "every PTE of the THP in this VMA");
            assert_eq!(
                pvmw.address,
                a.add_bytes(pmd),
                "the walk ran past the THP (vma_address(), clamped, as its base)"
            );
        }
    }
}
