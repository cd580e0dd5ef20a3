//! The v3.16 THP functions of mm/huge_memory.c (and mprotect's huge PMD
//! branch, mm/mprotect.c).

use super::rmap::PmdFlag;
use super::Cpu316;
use crate::coverage::Mark;
use crate::engine::{Atomic, Engine};
use crate::errno::Errno;
use crate::fixes::Fix;
use crate::memory::{MmuGather, VmFault, VmFaultT};
use crate::mm_types::{MmStruct, Vma};
use crate::mmu_notifier::NotifyEvent;
use crate::page::pg;
use crate::pgtable::{EntryRef, Pmd, Pte, PteFlags};
use crate::sync::SpinGuard;
use crate::types::{AnonVmaId, Pfn, VirtAddr};
use std::sync::Arc;

/// `__pmd_trans_huge_lock()`'s result (mm/huge_memory.c, v3.16).
pub(super) enum TransHugeLock<'a, E: Engine> {
    /// 1: a stable huge PMD, its lock held.
    Stable(SpinGuard<'a, E>),
    /// -1: it was under split; the split has been waited for.
    WasSplitting,
    /// 0: not a huge PMD.
    NotHuge,
}

/// The page flags __split_huge_page_refcount() copies from head to tail
/// (PG_referenced, PG_swapbacked, PG_mlocked, PG_uptodate, PG_active,
/// PG_unevictable), v3.16; PG_dirty is set on every tail.
const SPLIT_COPY_V3_16: u64 =
    pg::REFERENCED | pg::SWAPBACKED | pg::MLOCKED | pg::UPTODATE | pg::ACTIVE;

impl<'a, E: Engine> Cpu316<'a, E> {
    // ---------------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------------

    /// Models do_huge_pmd_anonymous_page(), mm/huge_memory.c, v3.16: the huge
    /// zero page for a read (use_zero_page), else a new THP.
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub(super) fn do_huge_pmd_anonymous_page(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("do_huge_pmd_anonymous_page");
        let vma = vmf.vma.clone();
        let g = self.k.geo;
        let haddr = g.pmd_align_down(vmf.address);
        let pmd = vmf.pmd.expect("pmd");
        if haddr < vma.vm_start() || haddr.0 + g.pmd_size() > vma.vm_end().0 {
            return VmFaultT::FALLBACK;
        }
        if !self.anon_vma_prepare(&vmf.mm, &vma) {
            return VmFaultT::OOM;
        }
        if !vmf.flags.write && self.k.cfg.use_zero_page {
            let Some(pgtable) = self.pte_alloc_one() else {
                return VmFaultT::OOM;
            };
            let Some(zero_page) = self.mm_get_huge_zero_page(&vmf.mm) else {
                self.pte_free(pgtable);
                return VmFaultT::FALLBACK; // THP_FAULT_FALLBACK
            };
            let cpu = self.0;
            let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
            let set = self.pmd_read(pmd).is_none();
            if set {
                self.set_huge_zero_page(pgtable, &vma, pmd, zero_page);
            }
            drop(ptl);
            if !set {
                self.pte_free(pgtable);
            }
            return VmFaultT::NONE;
        }
        let node = self.numa_node_for(&vma, haddr);
        let Some(page) = self.alloc_pages(g.hpage_pmd_order(), node, false) else {
            return VmFaultT::FALLBACK; // THP_FAULT_FALLBACK
        };
        self.__do_huge_pmd_anonymous_page(vmf, haddr, pmd, page)
    }

    /// Models __do_huge_pmd_anonymous_page(), mm/huge_memory.c, v3.16.
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub(super) fn __do_huge_pmd_anonymous_page(
        &self,
        vmf: &mut VmFault<E>,
        haddr: VirtAddr,
        pmd: EntryRef,
        page: Pfn,
    ) -> VmFaultT {
        let _f = self.func("__do_huge_pmd_anonymous_page");
        let vma = vmf.vma.clone();
        crate::vm_bug_on_page!(
            self,
            !self.page_compound(page),
            page,
            "VM_BUG_ON_PAGE(!PageCompound(page), page)"
        );
        let Some(pgtable) = self.pte_alloc_one() else {
            self.put_page(page);
            return VmFaultT::OOM;
        };
        self.clear_huge_page(page);
        self.page(page).__set_flag(pg::UPTODATE); // __SetPageUptodate()
        let cpu = self.0;
        let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
        if !self.pmd_read(pmd).is_none() {
            drop(ptl);
            self.put_page(page);
            self.pte_free(pgtable);
            return VmFaultT::NONE;
        }
        let mut flags = vma.vm_page_prot();
        flags.dirty = true; // pmd_mkdirty()
        self.maybe_mkwrite(&mut flags, &vma); // maybe_pmd_mkwrite()
        self.page_add_new_anon_rmap(page, &vma, haddr);
        self.pgtable_trans_huge_deposit(pmd, pgtable);
        self.set_pmd_at(
            pmd,
            Pmd::Huge {
                pfn: page,
                flags,
                invalid: false,
            },
        );
        drop(ptl);
        VmFaultT::NONE
    }

    /// Models do_huge_pmd_wp_page(), mm/huge_memory.c, v3.16: reuse the THP
    /// if its head's mapcount is 1 (the era's rule: only huge PMDs map a
    /// THP, and a reference held elsewhere does not prevent the reuse);
    /// otherwise copy it whole into a new THP (or the huge zero page's
    /// range into a cleared one). Without a THP to copy into, the 4 KiB
    /// fallback copies every subpage (do_huge_pmd_wp_page_fallback()); a
    /// huge zero page is split instead.
    ///
    /// # Locking
    /// Takes the PMD lock (twice: to decide, then to install the copy).
    pub(super) fn do_huge_pmd_wp_page(&self, vmf: &mut VmFault<E>, orig_pmd: Pmd) -> VmFaultT {
        let _f = self.func("do_huge_pmd_wp_page");
        let vma = vmf.vma.clone();
        let pmd = vmf.pmd.expect("pmd");
        let g = self.k.geo;
        let cpu = self.0;
        let lock = cpu.pmd_lockptr(pmd);
        crate::vm_bug_on!(self, vma.anon_vma().is_none(), "VM_BUG_ON(!vma->anon_vma)");
        let haddr = g.pmd_align_down(vmf.address);
        let old = orig_pmd.huge_pfn().expect("huge pmd");
        let mut page = None;
        if !self.is_huge_zero_page(old) {
            let ptl = lock.lock(cpu);
            if self.pmd_read(pmd) != orig_pmd {
                self.mark(Mark::gives_up(
                    "do_huge_pmd_wp_page: pmd changed, fault retried",
                ));
                return VmFaultT::NONE;
            }
            crate::vm_bug_on_page!(
                self,
                !self.page_compound(old) || !self.page_head(old),
                old,
                "VM_BUG_ON_PAGE(!PageCompound(page) || !PageHead(page), page)"
            );
            let mapcount = self.page_mapcount(old);
            self.note(|| format!("do_huge_pmd_wp_page(): page_mapcount(page) == {mapcount}"));
            if mapcount == 1 {
                self.mark(Mark::reached("do_huge_pmd_wp_page: THP reused"));
                let entry = orig_pmd.with_flags(|f| {
                    f.young = true; // pmd_mkyoung()
                    f.dirty = true; // pmd_mkdirty()
                    self.maybe_mkwrite(f, &vma); // maybe_pmd_mkwrite()
                });
                self.pmdp_set_access_flags(haddr, pmd, entry, true);
                drop(ptl);
                return VmFaultT::WRITE;
            }
            self.get_page(old); // get_user_huge_page()
            drop(ptl);
            page = Some(old);
        }
        // alloc:
        let new_page = if self.__transparent_hugepage_enabled(&vma) {
            let node = self.numa_node_for(&vma, haddr);
            self.alloc_pages(g.hpage_pmd_order(), node, false)
        } else {
            None
        };
        let Some(new_page) = new_page else {
            // THP_FAULT_FALLBACK
            return match page {
                None => {
                    self.mark(Mark::reached("do_huge_pmd_wp_page: huge zero page split"));
                    self.split_huge_page_pmd(&vma, vmf.address, pmd);
                    VmFaultT::FALLBACK
                }
                Some(page) => {
                    let ret = self.do_huge_pmd_wp_page_fallback(vmf, orig_pmd, page, haddr);
                    let ret = if ret.oom() {
                        self.split_huge_page(page);
                        VmFaultT::FALLBACK
                    } else {
                        ret
                    };
                    self.put_page(page); // put_user_huge_page()
                    ret
                }
            };
        };
        self.mark(Mark::reached("do_huge_pmd_wp_page: THP copied"));
        match page {
            None => {
                self.clear_huge_page(new_page);
            }
            Some(page) => {
                self.note(|| "copy_user_huge_page()".to_string());
                self.copy_user_huge_page(new_page, page);
            }
        }
        self.page(new_page).__set_flag(pg::UPTODATE); // __SetPageUptodate()
        self.mmu_notifier_start(
            &vmf.mm,
            NotifyEvent::Clear,
            haddr,
            haddr.add_bytes(g.pmd_size()),
        );
        let ptl = lock.lock(cpu);
        if let Some(page) = page {
            self.put_page(page); // put_user_huge_page()
        }
        let ret = if self.pmd_read(pmd) != orig_pmd {
            drop(ptl);
            self.put_page(new_page);
            VmFaultT::NONE
        } else {
            let mut flags = vma.vm_page_prot();
            flags.dirty = true; // pmd_mkdirty()
            self.maybe_mkwrite(&mut flags, &vma); // maybe_pmd_mkwrite()
                                                  // pmdp_clear_flush()
            self.pmdp_huge_get_and_clear(pmd);
            self.flush_tlb_range(vma.mm, haddr, haddr.add_bytes(g.pmd_size()));
            self.page_add_new_anon_rmap(new_page, &vma, haddr);
            self.set_pmd_at(
                pmd,
                Pmd::Huge {
                    pfn: new_page,
                    flags,
                    invalid: false,
                },
            );
            if let Some(page) = page {
                crate::vm_bug_on_page!(
                    self,
                    !self.page_head(page),
                    page,
                    "VM_BUG_ON_PAGE(!PageHead(page), page)"
                );
                self.page_remove_rmap(page);
                self.put_page(page);
            }
            drop(ptl);
            VmFaultT::WRITE
        };
        self.mmu_notifier_invalidate_range_end(&vmf.mm);
        ret
    }

    /// Models do_huge_pmd_wp_page_fallback(), mm/huge_memory.c, v3.16: copy
    /// every subpage of the THP into a new 4 KiB page and map them by a PTE
    /// table in place of the huge PMD (the THP loses this mapping).
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub(super) fn do_huge_pmd_wp_page_fallback(
        &self,
        vmf: &mut VmFault<E>,
        orig_pmd: Pmd,
        page: Pfn,
        haddr: VirtAddr,
    ) -> VmFaultT {
        let _f = self.func("do_huge_pmd_wp_page_fallback");
        let vma = vmf.vma.clone();
        let pmd = vmf.pmd.expect("pmd");
        let g = self.k.geo;
        let nr = g.hpage_pmd_nr();
        let node = self.page(page).node;
        let mut pages = Vec::with_capacity(nr as usize);
        for _ in 0..nr {
            let Some(p) = self.alloc_pages(0, node, false) else {
                for p in pages {
                    self.put_page(p);
                }
                return VmFaultT::OOM;
            };
            pages.push(p);
        }
        for (i, &p) in pages.iter().enumerate() {
            self.copy_page(p, page.add(i as u64)); // copy_user_highpage()
            self.page(p).__set_flag(pg::UPTODATE);
        }
        self.mmu_notifier_start(
            &vmf.mm,
            NotifyEvent::Clear,
            haddr,
            haddr.add_bytes(g.pmd_size()),
        );
        let cpu = self.0;
        let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
        if self.pmd_read(pmd) != orig_pmd {
            drop(ptl);
            self.mmu_notifier_invalidate_range_end(&vmf.mm);
            for p in pages {
                self.put_page(p);
            }
            return VmFaultT::NONE;
        }
        crate::vm_bug_on_page!(
            self,
            !self.page_head(page),
            page,
            "VM_BUG_ON_PAGE(!PageHead(page), page)"
        );
        // pmdp_clear_flush(): leave pmd empty until pte is filled
        self.pmdp_huge_get_and_clear(pmd);
        self.flush_tlb_range(vma.mm, haddr, haddr.add_bytes(g.pmd_size()));
        let pgtable = self.pgtable_trans_huge_withdraw(pmd);
        for (i, &p) in pages.iter().enumerate() {
            let addr = haddr.add_bytes(i as u64 * g.page_size());
            let mut flags = vma.vm_page_prot();
            flags.dirty = true; // pte_mkdirty()
            self.maybe_mkwrite(&mut flags, &vma);
            self.page_add_new_anon_rmap(p, &vma, addr);
            // The withdrawn table is reached by no other CPU until
            // pmd_populate() below.
            let slot = self.table(pgtable).raw(i);
            crate::vm_bug_on!(
                self,
                !Pte::decode(slot.peek()).is_none(),
                "VM_BUG_ON(!pte_none(*pte))"
            );
            slot.init(Pte::Present { pfn: p, flags }.encode()); // set_pte_at()
        }
        self.set_pmd_at(pmd, Pmd::Table(pgtable)); // pmd_populate()
        self.page_remove_rmap(page);
        drop(ptl);
        self.mmu_notifier_invalidate_range_end(&vmf.mm);
        self.mark(Mark::reached("do_huge_pmd_wp_page_fallback: 4 KiB copies"));
        self.put_page(page);
        VmFaultT::WRITE
    }

    // ---------------------------------------------------------------------
    // fork, zap, mprotect
    // ---------------------------------------------------------------------

    /// Models copy_huge_pmd(), mm/huge_memory.c, v3.16. `Ok(true)`: copied;
    /// `Ok(false)`: -EAGAIN (not huge any more, or it was under split and the
    /// split has been waited for): copy the PTEs; `Err`: -ENOMEM.
    ///
    /// # Locking
    /// Takes the child's PMD lock, then the parent's nested; waits for a
    /// split with neither held.
    pub(crate) fn copy_huge_pmd(
        &self,
        dst: &MmStruct<E>,
        _src: &MmStruct<E>,
        dst_pmd: EntryRef,
        src_pmd: EntryRef,
        _addr: VirtAddr,
        vma: &Vma,
    ) -> Result<bool, Errno> {
        let _f = self.func("copy_huge_pmd");
        let Some(pgtable) = self.pte_alloc_one() else {
            return Err(Errno::Enomem);
        };
        let cpu = self.0;
        let dst_ptl = cpu.pmd_lockptr(dst_pmd).lock(cpu);
        let src_ptl = cpu.pmd_lockptr(src_pmd).lock_nested(cpu);
        let pmd = self.pmd_read(src_pmd);
        let Pmd::Huge { pfn: src_page, .. } = pmd else {
            drop(src_ptl);
            drop(dst_ptl);
            self.pte_free(pgtable);
            return Ok(false);
        };
        // When page table lock is held, the huge zero pmd should not be under
        // splitting since we don't split the page itself, only pmd to a page
        // table.
        if self.is_huge_zero_page(src_page) {
            let zero = self
                .mm_get_huge_zero_page(dst)
                .expect("huge zero page exists");
            crate::vm_bug_on!(
                self,
                !self.pmd_read(dst_pmd).is_none(),
                "BUG_ON(!set) /* unexpected !pmd_none(dst_pmd) */"
            );
            self.set_huge_zero_page(pgtable, vma, dst_pmd, zero);
            return Ok(true);
        }
        if pmd.is_trans_splitting() {
            // split huge page running from under us
            drop(src_ptl);
            drop(dst_ptl);
            self.pte_free(pgtable);
            self.wait_split_huge_page(vma, src_pmd); // src_vma
            return Ok(false);
        }
        crate::vm_bug_on_page!(
            self,
            !self.page_head(src_page),
            src_page,
            "VM_BUG_ON_PAGE(!PageHead(src_page), src_page)"
        );
        self.get_page(src_page);
        self.page_dup_rmap(src_page);
        self.pmdp_set_wrprotect(src_pmd);
        // pmd_mkold(pmd_wrprotect(pmd))
        let child = pmd.with_flags(|f| {
            f.write = false;
            f.young = false;
        });
        self.pgtable_trans_huge_deposit(dst_pmd, pgtable);
        self.set_pmd_at(dst_pmd, child);
        drop(src_ptl);
        drop(dst_ptl);
        Ok(true)
    }

    /// Models __pmd_trans_huge_lock(), mm/huge_memory.c, v3.16.
    ///
    /// # Locking
    /// Takes the PMD lock; returns it held for a stable huge PMD. For one
    /// under split it drops it and waits (the anon_vma lock for write).
    pub(super) fn __pmd_trans_huge_lock(&self, pmd: EntryRef, vma: &Vma) -> TransHugeLock<'a, E> {
        let cpu = self.0;
        let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
        let cur = self.pmd_read(pmd);
        if !cur.is_trans_huge() {
            return TransHugeLock::NotHuge;
        }
        if cur.is_trans_splitting() {
            drop(ptl);
            self.wait_split_huge_page(vma, pmd);
            return TransHugeLock::WasSplitting;
        }
        TransHugeLock::Stable(ptl)
    }

    /// Models zap_huge_pmd(), mm/huge_memory.c, v3.16, with its
    /// `VM_BUG_ON_PAGE(!PageHead(page), page)` after the rmap removal (seed
    /// 001's second BUG). Returns whether a huge PMD was zapped.
    ///
    /// # Locking
    /// Takes the PMD lock (or waits for a split, see __pmd_trans_huge_lock()).
    pub(crate) fn zap_huge_pmd(
        &self,
        tlb: &mut MmuGather,
        vma: &Vma,
        pmd: EntryRef,
        addr: VirtAddr,
    ) -> bool {
        let _f = self.func("zap_huge_pmd");
        let TransHugeLock::Stable(ptl) = self.__pmd_trans_huge_lock(pmd, vma) else {
            return false;
        };
        let orig = self.pmdp_huge_get_and_clear(pmd); // pmdp_get_and_clear()
        self.note(|| "pmdp_get_and_clear()".to_string());
        self.tlb_remove_tlb_entry(tlb, addr, self.k.geo.pmd_size()); // tlb_remove_pmd_tlb_entry()
        let pgtable = self.pgtable_trans_huge_withdraw(pmd);
        let Pmd::Huge { pfn: page, .. } = orig else {
            self.bug(
                "zap_huge_pmd(): the huge PMD changed under the PMD lock",
                None,
            );
        };
        if self.is_huge_zero_page(page) {
            drop(ptl);
            // put_huge_zero_page(): the model never frees the huge zero page.
        } else {
            self.page_remove_rmap(page);
            crate::vm_bug_on_page!(
                self,
                self.page_mapcount(page) < 0,
                page,
                "VM_BUG_ON_PAGE(page_mapcount(page) < 0, page)"
            );
            crate::vm_bug_on_page!(
                self,
                !self.page_head(page),
                page,
                "VM_BUG_ON_PAGE(!PageHead(page), page)"
            );
            drop(ptl);
            self.tlb_remove_page(tlb, page);
        }
        self.pte_free(pgtable);
        true
    }

    /// Models change_huge_pmd(), mm/huge_memory.c, v3.16 (without NUMA
    /// hinting): HPAGE_PMD_NR if the huge PMD took the new protection, 0 if
    /// it is not huge (or was under split).
    ///
    /// # Locking
    /// Takes the PMD lock (or waits for a split).
    pub(super) fn change_huge_pmd(&self, vma: &Vma, pmd: EntryRef, newprot: PteFlags) -> u64 {
        let _f = self.func("change_huge_pmd");
        let TransHugeLock::Stable(ptl) = self.__pmd_trans_huge_lock(pmd, vma) else {
            return 0;
        };
        let entry = self.pmdp_huge_get_and_clear(pmd); // pmdp_get_and_clear()
                                                       // pmd_modify(): keep pfn, dirty, young, special; take the protection.
        let entry = entry.with_flags(|f| {
            f.write = newprot.write;
            f.protnone = newprot.protnone;
        });
        self.set_pmd_at(pmd, entry);
        crate::vm_bug_on!(self, entry.is_write(), "BUG_ON(pmd_write(entry))");
        drop(ptl);
        self.k.geo.hpage_pmd_nr()
    }

    /// Models change_pmd_range()'s huge PMD branch, mm/mprotect.c, v3.16: a
    /// huge PMD the range covers in part is split (page and all).
    pub(crate) fn change_pmd_range_huge(
        &self,
        vma: &Vma,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
        newprot: PteFlags,
    ) -> u64 {
        if next.0 - addr.0 != self.k.geo.pmd_size() {
            self.split_huge_page_pmd(vma, addr, pmd);
            0
        } else {
            self.change_huge_pmd(vma, pmd, newprot)
        }
    }

    // ---------------------------------------------------------------------
    // Splitting the page
    // ---------------------------------------------------------------------

    /// Models pmdp_splitting_flush(), arch/x86/mm/pgtable.c, v3.16: set
    /// _PAGE_SPLITTING (`test_and_set_bit()`, one atomic operation, so the
    /// MMU's accessed and dirty bits are kept) and, if it was clear, flush
    /// the range ("only to serialize against gup-fast").
    ///
    /// # Locking
    /// Called with the PMD lock held.
    pub(super) fn pmdp_splitting_flush(&self, vma: &Vma, address: VirtAddr, pmd: EntryRef) {
        let g = self.k.geo;
        crate::vm_bug_on!(
            self,
            address.0 & (g.pmd_size() - 1) != 0,
            "VM_BUG_ON(address & ~HPAGE_PMD_MASK)"
        );
        let old = self
            .table(pmd.table)
            .raw(pmd.index)
            .fetch_or(crate::pgtable::SPLITTING);
        self.note(|| "pmdp_splitting_flush(): pmd_trans_splitting".to_string());
        if old & crate::pgtable::SPLITTING == 0 {
            self.flush_tlb_range(vma.mm, address, address.add_bytes(g.pmd_size()));
        }
    }

    /// Models __split_huge_page_splitting(), mm/huge_memory.c, v3.16: mark
    /// the huge PMD of `vma` that maps `page` as splitting. Returns 1 if it
    /// did (the PMD counts towards the mapcount the split expects).
    ///
    /// # Locking
    /// Takes the PMD lock (page_check_address_pmd()).
    pub(super) fn __split_huge_page_splitting(
        &self,
        page: Pfn,
        vma: &Vma,
        address: VirtAddr,
    ) -> i64 {
        let _f = self.func("__split_huge_page_splitting");
        let mm = self.k.mm(vma.mm);
        let g = self.k.geo;
        self.mmu_notifier_start(
            &mm,
            NotifyEvent::Clear,
            address,
            address.add_bytes(g.pmd_size()),
        );
        let mut ret = 0;
        if let Some((pmd, ptl)) =
            self.page_check_address_pmd(page, &mm, address, PmdFlag::NotSplitting)
        {
            // We can't temporarily set the pmd to null in order to split it,
            // the pmd must remain marked huge at all times or the VM won't
            // take the pmd_trans_huge paths and it won't wait on the
            // anon_vma->root->rwsem to serialize against split_huge_page*.
            self.pmdp_splitting_flush(vma, address, pmd);
            ret = 1;
            drop(ptl);
        }
        self.mmu_notifier_invalidate_range_end(&mm);
        ret
    }

    /// Models __split_huge_page_refcount(), mm/huge_memory.c, v3.16: turn the
    /// compound page into HPAGE_PMD_NR base pages. Each tail takes the head's
    /// mapcount (the huge PMDs, all marked splitting, will each become a PTE
    /// mapping every subpage) and as many references plus one, which the
    /// final put_page() drops.
    ///
    /// A tail's pins (its `_mapcount` while the THP is whole, get_page_foll())
    /// become references of its own; the head keeps the rest.
    ///
    /// # Locking
    /// Takes `lru_lock` (zone->lru_lock), then the head's compound_lock,
    /// which put_page() of a tail takes to drop a tail pin.
    pub(super) fn __split_huge_page_refcount(&self, page: Pfn) {
        let _f = self.func("__split_huge_page_refcount");
        let nr = self.k.geo.hpage_pmd_nr();
        let cpu = self.0;
        let lru = self.k.lru_lock.lock(cpu);
        let compound = self.page(page).compound_lock().lock(cpu); // compound_lock(page)
        let mut tail_count = 0i64;
        for i in (1..nr).rev() {
            let tail = page.add(i);
            let pt = self.page(tail);
            // tail_page->_mapcount cannot change
            let tail_mapcount = self.page_mapcount(tail);
            crate::vm_bug_on_page!(
                self,
                tail_mapcount < 0,
                tail,
                "BUG_ON(page_mapcount(page_tail) < 0)"
            );
            tail_count += tail_mapcount;
            crate::vm_bug_on_page!(self, tail_count < 0, tail, "BUG_ON(tail_count < 0)");
            crate::vm_bug_on_page!(
                self,
                pt.refcount.load_i64() != 0,
                tail,
                "BUG_ON(atomic_read(&page_tail->_count) != 0)"
            );
            let head_mapcount = self.page_mapcount(page);
            pt.refcount
                .fetch_add((head_mapcount + tail_mapcount + 1) as u64);
            // after clearing PageTail the gup refcount can be released
            let hf = self.page(page).flags.load();
            pt.flags.store(hf & SPLIT_COPY_V3_16 | pg::DIRTY);
            // clear PageTail before overwriting first_page
            pt.set_compound_head(None);
            // The mapcount is only accounted in the head page and it has to
            // be transferred to all tail pages.
            pt.mapcount.store(self.page(page).mapcount.load());
            crate::vm_bug_on_page!(
                self,
                pt.mapping.load() != 0,
                tail,
                "BUG_ON(page_tail->mapping)"
            );
            pt.mapping.store(self.page(page).mapping.load());
            pt.index.store(self.page(page).index.load() + i);
            crate::vm_bug_on_page!(
                self,
                !self.page_anon(tail),
                tail,
                "BUG_ON(!PageAnon(page_tail))"
            );
            // lru_add_page_tail(): the head is on the LRU, so the tail joins it.
            pt.set_flag(pg::LRU);
        }
        self.note(|| "tails: _mapcount = head's, _count = mapcount + 1".to_string());
        let left = self.page(page).refcount.add_return(-tail_count);
        crate::vm_bug_on_page!(
            self,
            left <= 0,
            page,
            "BUG_ON(atomic_read(&page->_count) <= 0)"
        );
        // ClearPageCompound()
        self.page(page).clear_flag(pg::HEAD);
        self.page(page).set_compound_order(0);
        self.note(|| "ClearPageCompound(page)".to_string());
        drop(compound);
        drop(lru);
        for i in 1..nr {
            let tail = page.add(i);
            crate::vm_bug_on_page!(
                self,
                self.page_count(tail) <= 0,
                tail,
                "BUG_ON(page_count(page_tail) <= 0)"
            );
            // Tail pages may be freed if there wasn't any mapping.
            self.put_page(tail);
        }
        // Only the head page (now become a regular page) is required to be
        // pinned by the caller.
        crate::vm_bug_on_page!(
            self,
            self.page_count(page) <= 0,
            page,
            "BUG_ON(page_count(page) <= 0)"
        );
    }

    /// Models __split_huge_page_map(), mm/huge_memory.c, v3.16: replace the
    /// splitting huge PMD of `vma` that maps `page` by its deposited page
    /// table, filled with a PTE for each subpage (the mapcounts are already
    /// transferred). Returns 1 if it did.
    ///
    /// # Locking
    /// Takes the PMD lock (page_check_address_pmd()).
    pub(super) fn __split_huge_page_map(&self, page: Pfn, vma: &Vma, address: VirtAddr) -> i64 {
        let _f = self.func("__split_huge_page_map");
        let mm = self.k.mm(vma.mm);
        let g = self.k.geo;
        let Some((pmd, ptl)) = self.page_check_address_pmd(page, &mm, address, PmdFlag::Splitting)
        else {
            return 0;
        };
        let cur = self.pmd_read(pmd);
        let huge = cur.flags();
        let pgtable = self.pgtable_trans_huge_withdraw(pmd);
        let prot = vma.vm_page_prot();
        for i in 0..g.hpage_pmd_nr() {
            let sub = page.add(i);
            crate::vm_bug_on_page!(
                self,
                self.page_compound(sub),
                sub,
                "BUG_ON(PageCompound(page+i))"
            );
            let mut flags = prot;
            flags.dirty = true; // pte_mkdirty()
            self.maybe_mkwrite(&mut flags, vma);
            if !huge.write {
                flags.write = false; // pte_wrprotect()
            } else {
                crate::vm_bug_on_page!(
                    self,
                    self.page_mapcount(page) != 1,
                    page,
                    "BUG_ON(page_mapcount(page) != 1)"
                );
            }
            flags.young = huge.young; // pte_mkold() unless pmd_young()
                                      // The withdrawn table is reached by no other CPU until
                                      // pmd_populate() below.
            let slot = self.table(pgtable).raw(i as usize);
            crate::vm_bug_on_page!(
                self,
                !Pte::decode(slot.peek()).is_none(),
                sub,
                "BUG_ON(!pte_none(*pte))"
            );
            slot.init(Pte::Present { pfn: sub, flags }.encode()); // set_pte_at()
        }
        // Mark the pmd not present and flush the TLB before writing the
        // non-huge version (AMD Erratum 383).
        self.pmdp_invalidate(vma, address, pmd);
        self.set_pmd_at(pmd, Pmd::Table(pgtable)); // pmd_populate()
        self.note(|| "pmd_populate(): the PMD maps a PTE table".to_string());
        drop(ptl);
        1
    }

    /// The VMAs of `av` whose range holds page offset `pgoff`
    /// (`anon_vma_interval_tree_foreach(avc, &anon_vma->rb_root, pgoff,
    /// pgoff)`), read under the anon_vma lock the caller holds.
    pub(super) fn anon_vma_interval_tree(&self, av: AnonVmaId, pgoff: u64) -> Vec<Arc<Vma>> {
        let ps = self.k.geo.page_shift;
        self.k
            .anon_vma(av)
            .vmas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|v| {
                let start = v.vm_pgoff();
                let end = start + ((v.vm_end().0 - v.vm_start().0) >> ps);
                start <= pgoff && pgoff < end
            })
            .cloned()
            .collect()
    }

    /// Models __split_huge_page(), mm/huge_memory.c, v3.16: called with the
    /// anon_vma lock held (for write with seed 002's fix). Marks every huge
    /// PMD that maps the page splitting and counts them, BUG()s if that
    /// count is not page_mapcount() (seed 001's first BUG; seed 002's
    /// "mapcount 0 page_mapcount 3"), splits the refcounts, maps the
    /// subpages by PTEs and BUG()s if that walk found another number.
    pub(super) fn __split_huge_page(&self, page: Pfn, av: AnonVmaId) {
        let _f = self.func("__split_huge_page");
        crate::vm_bug_on_page!(self, !self.page_head(page), page, "BUG_ON(!PageHead(page))");
        crate::vm_bug_on_page!(self, self.page_tail(page), page, "BUG_ON(PageTail(page))");
        let pgoff = self.page(page).index.load();
        let mut mapcount = 0;
        for vma in self.anon_vma_interval_tree(av, pgoff) {
            let addr = self.vma_address(page, &vma);
            mapcount += self.__split_huge_page_splitting(page, &vma, addr);
        }
        let page_mapcount = self.page_mapcount(page);
        self.note(|| {
            format!("__split_huge_page(): mapcount {mapcount}, page_mapcount {page_mapcount}")
        });
        if mapcount != page_mapcount {
            self.bug(
                &format!("kernel BUG at mm/huge_memory.c (__split_huge_page): mapcount {mapcount} page_mapcount {page_mapcount}"),
                Some(page),
            );
        }
        self.__split_huge_page_refcount(page);
        let mut mapcount2 = 0;
        for vma in self.anon_vma_interval_tree(av, pgoff) {
            let addr = self.vma_address(page, &vma);
            mapcount2 += self.__split_huge_page_map(page, &vma, addr);
        }
        if mapcount != mapcount2 {
            let pm = self.page_mapcount(page);
            self.bug(
                &format!("kernel BUG at mm/huge_memory.c (__split_huge_page): mapcount {mapcount} mapcount2 {mapcount2} page_mapcount {pm}"),
                Some(page),
            );
        }
    }

    /// Models split_huge_page_to_list(), mm/huge_memory.c, v3.16 (list NULL:
    /// split_huge_page()), with seed 002's fix: a reference on the page's
    /// anon_vma and its lock for write, which serialises parallel splits.
    /// Reverting `split-anon-vma-write` restores 3.8-rc1's
    /// page_lock_anon_vma_read(): two splitters of one THP run together.
    /// Returns whether the page was not split (1: no anon_vma, it is no
    /// longer mapped).
    ///
    /// # Locking
    /// Takes the anon_vma lock (for write, or for read reverted), then PMD
    /// locks and `lru_lock`.
    pub(crate) fn split_huge_page(&self, page: Pfn) -> bool {
        let _f = self.func("split_huge_page_to_list");
        crate::vm_bug_on_page!(
            self,
            self.is_huge_zero_page(page),
            page,
            "BUG_ON(is_huge_zero_page(page))"
        );
        crate::vm_bug_on_page!(self, !self.page_anon(page), page, "BUG_ON(!PageAnon(page))");
        let fix = self.k.cfg.fixes.applied(Fix::SplitAnonVmaWrite);
        let av = if fix {
            let av = self.page_get_anon_vma(page);
            if let Some(av) = av {
                self.anon_vma_lock_write(av);
            }
            av
        } else {
            // 3.8-rc1: page_lock_anon_vma_read(page).
            self.note(|| "page_lock_anon_vma_read(): the anon_vma lock for read".to_string());
            self.page_lock_anon_vma_read(page)
        };
        let Some(av) = av else {
            self.mark(Mark::gives_up("split_huge_page: no anon_vma, not mapped"));
            return true;
        };
        if self.page_compound(page) {
            crate::vm_bug_on_page!(
                self,
                !self.page(page).test_flag(pg::SWAPBACKED),
                page,
                "BUG_ON(!PageSwapBacked(page))"
            );
            self.__split_huge_page(page, av);
            self.mark(Mark::reached("split_huge_page: THP split"));
            crate::vm_bug_on_page!(
                self,
                self.page_compound(page),
                page,
                "BUG_ON(PageCompound(page))"
            );
        } else {
            self.mark(Mark::gives_up("split_huge_page: already split"));
        }
        if fix {
            self.anon_vma_unlock_write(av);
            self.put_anon_vma(av);
        } else {
            self.anon_vma_unlock_read(av); // page_unlock_anon_vma_read()
        }
        false
    }

    /// Models __split_huge_page_pmd(), mm/huge_memory.c, v3.16: split the THP
    /// a huge PMD maps (the huge zero page: the PMD only), again if a racing
    /// COW put another THP there before the split took the anon_vma lock.
    ///
    /// # Locking
    /// Takes the PMD lock, then (not nested) split_huge_page()'s locks.
    pub(super) fn __split_huge_page_pmd(&self, vma: &Vma, address: VirtAddr, pmd: EntryRef) {
        let _f = self.func("__split_huge_page_pmd");
        let g = self.k.geo;
        let haddr = g.pmd_align_down(address);
        crate::vm_bug_on!(
            self,
            vma.vm_start() > haddr || vma.vm_end().0 < haddr.0 + g.pmd_size(),
            "BUG_ON(vma->vm_start > haddr || vma->vm_end < haddr + HPAGE_PMD_SIZE)"
        );
        let mm = self.k.mm(vma.mm);
        let cpu = self.0;
        loop {
            self.mmu_notifier_start(
                &mm,
                NotifyEvent::Clear,
                haddr,
                haddr.add_bytes(g.pmd_size()),
            );
            let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
            let Pmd::Huge { pfn: page, .. } = self.pmd_read(pmd) else {
                drop(ptl);
                self.mmu_notifier_invalidate_range_end(&mm);
                return;
            };
            if self.is_huge_zero_page(page) {
                self.__split_huge_zero_page_pmd(vma, haddr, pmd);
                drop(ptl);
                self.mmu_notifier_invalidate_range_end(&mm);
                return;
            }
            crate::vm_bug_on_page!(
                self,
                self.page_count(page) == 0,
                page,
                "VM_BUG_ON_PAGE(!page_count(page), page)"
            );
            self.get_page(page);
            drop(ptl);
            self.mmu_notifier_invalidate_range_end(&mm);
            self.split_huge_page(page);
            self.put_page(page);
            // We don't always have down_write of mmap_sem here: a racing
            // do_huge_pmd_wp_page() might have copied-on-write to another
            // huge page before our split_huge_page() got the anon_vma lock.
            let cur = self.pmd_read(pmd);
            if !cur.is_trans_huge() {
                return;
            }
            if cur.is_trans_splitting() {
                // DIVERGENCE: another split_huge_page() of this THP is still
                // mapping its PMDs (only 3.8-rc1's read lock lets two run at
                // once: `--revert split-anon-vma-write`); 3.16 goes round
                // `again` until that split is done, the model waits for it
                // (the anon_vma lock for write, taken and dropped) rather
                // than spin, which a search could schedule forever.
                if let Some(av) = vma.anon_vma() {
                    self.anon_vma_lock_write(av);
                    self.anon_vma_unlock_write(av);
                }
            }
        }
    }

    /// Models split_huge_page_pmd(), include/linux/huge_mm.h, v3.16.
    pub(crate) fn split_huge_page_pmd(&self, vma: &Vma, address: VirtAddr, pmd: EntryRef) {
        if self.pmd_read(pmd).is_trans_huge() {
            self.__split_huge_page_pmd(vma, address, pmd);
        }
    }

    /// Models split_huge_page_address() and split_huge_page_pmd_mm(),
    /// mm/huge_memory.c, v3.16. The caller holds `mmap_lock` for write, so a
    /// huge PMD cannot materialize from under us.
    pub(super) fn split_huge_page_address(&self, mm: &MmStruct<E>, address: VirtAddr) {
        crate::vm_bug_on!(
            self,
            address.0 & (self.k.geo.pmd_size() - 1) == 0,
            "VM_BUG_ON(!(address & ~HPAGE_PMD_MASK))"
        );
        let Some(pmd) = self.pmd_offset(mm, address) else {
            return;
        };
        if !self.pmd_read(pmd).is_present() {
            return;
        }
        // split_huge_page_pmd_mm(): find_vma(), then split_huge_page_pmd().
        let Some(vma) = mm.find_vma(address) else {
            self.bug("BUG_ON(vma == NULL)", None);
        };
        self.split_huge_page_pmd(&vma, address, pmd);
    }

    /// Models vma_adjust_trans_huge() and __vma_adjust_trans_huge(),
    /// mm/huge_memory.c, v3.16: a new VMA bound that cuts a huge page splits
    /// the page (split_huge_page_address()).
    pub(crate) fn vma_adjust_trans_huge(
        &self,
        mm: &MmStruct<E>,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
        next: Option<(&Vma, VirtAddr)>,
    ) {
        if vma.anon_vma().is_none() || !vma.is_anonymous() {
            return;
        }
        let _f = self.func("__vma_adjust_trans_huge");
        let g = self.k.geo;
        let cuts = |v: &Vma, a: VirtAddr| {
            let h = g.pmd_align_down(a);
            a.0 & (g.pmd_size() - 1) != 0 && h >= v.vm_start() && h.0 + g.pmd_size() <= v.vm_end().0
        };
        if cuts(vma, start) {
            self.split_huge_page_address(mm, start);
        }
        if cuts(vma, end) {
            self.split_huge_page_address(mm, end);
        }
        if let Some((next, nstart)) = next {
            if cuts(next, nstart) {
                self.split_huge_page_address(mm, nstart);
            }
        }
    }

    /// `kernel: split-huge-page P A[off]` under `kernel 3.16`: split the THP
    /// a huge PMD maps at `addr`, as 3.16's own callers do
    /// (split_huge_page_pmd_mm() under `mmap_lock` for read, as
    /// MADV_DONTNEED splits). Returns false when no THP is mapped there (a
    /// huge zero page included: it is no THP, and nothing is split).
    ///
    /// DIVERGENCE: 3.16 has no interface to split a THP on request (the
    /// debugfs `split_huge_pages` of 5.13+ is what `kernel:
    /// split-huge-page` means under 5.8).
    ///
    /// # Locking
    /// Takes `mmap_lock` for read, then split_huge_page()'s locks.
    pub(crate) fn split_huge_page_at(&self, mm: &Arc<MmStruct<E>>, addr: VirtAddr) -> bool {
        let _f = self.func("split_huge_page_pmd_mm");
        let cpu = self.0;
        let _mmap = mm.mmap_lock.read(cpu);
        let no_thp = Mark::gives_up("split_huge_page_pmd_mm: no THP mapped there");
        let (Some(vma), Some(pmd)) = (mm.vma_at(addr), self.pmd_offset(mm, addr)) else {
            self.mark(no_thp);
            return false;
        };
        match self.pmd_read(pmd) {
            Pmd::Huge { pfn, .. } if !self.is_huge_zero_page(pfn) => {
                self.split_huge_page_pmd(&vma, addr, pmd);
                true
            }
            _ => {
                self.mark(no_thp);
                false
            }
        }
    }
}
