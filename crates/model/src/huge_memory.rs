//! Transparent huge pages: mm/huge_memory.c.
//!
//! Models (v5.8): eligibility (`__transparent_hugepage_enabled`,
//! `transhuge_vma_suitable`), the huge zero page (`mm_get_huge_zero_page`,
//! `set_huge_zero_page`), THP faults (`do_huge_pmd_anonymous_page`,
//! `__do_huge_pmd_anonymous_page`, `huge_pmd_set_accessed`,
//! `do_huge_pmd_wp_page` with 5.8's rule: reuse when page_trans_huge_mapcount()
//! is 1, else split this PMD and let the PTE fault copy 4 KiB), fork
//! (`copy_huge_pmd`), unmap (`zap_huge_pmd`, `zap_deposited_table`), mprotect
//! (`change_huge_pmd`), PMD splitting (`__split_huge_pmd`,
//! `__split_huge_pmd_locked`, `__split_huge_zero_page_pmd`,
//! `split_huge_pmd_address`, `vma_adjust_trans_huge`), the mapcount functions
//! (`total_mapcount`, `page_trans_huge_mapcount`), page splitting
//! (`can_split_huge_page`, `unmap_page`, `remap_page`,
//! `__split_huge_page_tail`, `__split_huge_page`, `split_huge_page_to_list`),
//! the deferred split queue (`deferred_split_huge_page`, `deferred_split_scan`,
//! `free_transhuge_page`) and the debugfs interface `split_huge_pages_pid`
//! (5.13's per-address form, which the scenario language uses), and PMD-level
//! THP migration (`set_pmd_migration_entry`, `remove_migration_pmd`).
//!
//! Leaves out: file and shmem THP, DAX, the huge zero page shrinker, NUMA
//! hinting, userfaultfd, memcg, defrag (allocation never stalls).

use crate::coverage::Mark;
use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::fixes::Fix;
use crate::gup::FollFlags;
use crate::kernel::ThpPolicy;
use crate::memory::{MmuGather, VmFault, VmFaultT};
use crate::mm_types::{vm, MmStruct, Vma};
use crate::page::pg;
use crate::pgtable::{EntryRef, Pmd, Pte, PteFlags};
use crate::rmap::TtuFlags;
use crate::sync::SpinGuard;
use crate::types::{Level, Pfn, VirtAddr};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// Why split_huge_page() failed (-EBUSY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ebusy;

impl<E: Engine> Cpu<E> {
    // ---------------------------------------------------------------------
    // Eligibility and the huge zero page
    // ---------------------------------------------------------------------

    /// Models __transparent_hugepage_enabled(), include/linux/huge_mm.h, v5.8.
    pub fn __transparent_hugepage_enabled(&self, vma: &Vma) -> bool {
        let f = vma.vm_flags();
        if f & vm::NOHUGEPAGE != 0 {
            return false;
        }
        // vma_is_shmem(): shmem_huge_enabled(), `never` (the default
        // shmem_enabled).
        if !vma.is_anonymous() {
            return false;
        }
        match self.k.cfg.thp {
            ThpPolicy::Always => true,
            ThpPolicy::Madvise => f & vm::HUGEPAGE != 0,
            ThpPolicy::Never => false,
        }
    }

    /// Models transhuge_vma_suitable(), include/linux/huge_mm.h, v5.8.
    pub fn transhuge_vma_suitable(&self, vma: &Vma, haddr: VirtAddr) -> bool {
        let g = self.k.geo;
        if !((vma.vm_start().0 >> g.page_shift) - vma.vm_pgoff()).is_multiple_of(g.hpage_pmd_nr()) {
            return false;
        }
        haddr >= vma.vm_start() && haddr.0 + g.pmd_size() <= vma.vm_end().0
    }

    /// Models mm_get_huge_zero_page()/get_huge_zero_page(), mm/huge_memory.c,
    /// v5.8: the huge zero page, allocated on first use.
    pub fn mm_get_huge_zero_page(&self, mm: &MmStruct<E>) -> Option<Pfn> {
        if let Some(p) = self.k.huge_zero_pfn() {
            mm.huge_zero_ref.store(true, SeqCst);
            return Some(p);
        }
        let page = self.alloc_pages(self.k.geo.hpage_pmd_order(), 0, true)?;
        self.page(page).set_flag(pg::RESERVED);
        let winner = match self.k.install_huge_zero(page) {
            Ok(()) => page,
            Err(other) => {
                self.page(page).clear_flag(pg::RESERVED);
                self.put_page(page);
                other
            }
        };
        mm.huge_zero_ref.store(true, SeqCst);
        Some(winner)
    }

    /// Models set_huge_zero_page(), mm/huge_memory.c, v5.8 (PMD lock held).
    /// The same in v3.16 (`profile::v3_16` uses it too).
    pub(crate) fn set_huge_zero_page(
        &self,
        pgtable: Pfn,
        vma: &Vma,
        pmd: EntryRef,
        zero_page: Pfn,
    ) {
        let flags = PteFlags {
            special: true,
            protnone: vma.vm_page_prot().protnone,
            ..PteFlags::default()
        };
        self.pgtable_trans_huge_deposit(pmd, pgtable);
        self.set_pmd_at(
            pmd,
            Pmd::Huge {
                pfn: zero_page,
                flags,
                invalid: false,
            },
        );
    }

    // ---------------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------------

    /// Models do_huge_pmd_anonymous_page(), mm/huge_memory.c, v5.8.
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub fn do_huge_pmd_anonymous_page(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("do_huge_pmd_anonymous_page");
        let vma = vmf.vma.clone();
        let haddr = self.k.geo.pmd_align_down(vmf.address);
        let pmd = vmf.pmd.expect("pmd");
        if !self.transhuge_vma_suitable(&vma, haddr) {
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
                return VmFaultT::FALLBACK;
            };
            let ptl = self.pmd_lockptr(pmd).lock(self);
            let set = if self.pmd_read(pmd).is_none() {
                self.set_huge_zero_page(pgtable, &vma, pmd, zero_page);
                true
            } else {
                false
            };
            drop(ptl);
            if !set {
                self.pte_free(pgtable);
            }
            return VmFaultT::NONE;
        }
        let node = self.numa_node_for(&vma, haddr);
        let Some(page) = self.alloc_pages(self.k.geo.hpage_pmd_order(), node, false) else {
            // THP_FAULT_FALLBACK
            return VmFaultT::FALLBACK;
        };
        self.__do_huge_pmd_anonymous_page(vmf, page)
    }

    /// Models __do_huge_pmd_anonymous_page(), mm/huge_memory.c, v5.8.
    ///
    /// # Locking
    /// Takes the PMD lock.
    fn __do_huge_pmd_anonymous_page(&self, vmf: &mut VmFault<E>, page: Pfn) -> VmFaultT {
        let _f = self.func("__do_huge_pmd_anonymous_page");
        let vma = vmf.vma.clone();
        let haddr = self.k.geo.pmd_align_down(vmf.address);
        let pmd = vmf.pmd.expect("pmd");
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
        let ptl = self.pmd_lockptr(pmd).lock(self);
        if !self.pmd_read(pmd).is_none() {
            drop(ptl);
            self.pte_free(pgtable);
            self.put_page(page);
            return VmFaultT::NONE;
        }
        let mut flags = vma.vm_page_prot();
        flags.dirty = true;
        flags.young = true;
        self.maybe_mkwrite(&mut flags, &vma);
        self.page_add_new_anon_rmap(page, &vma, haddr, true);
        self.lru_cache_add_active_or_unevictable(page, &vma);
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

    /// Models huge_pmd_set_accessed(), mm/huge_memory.c, v5.8.
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub fn huge_pmd_set_accessed(&self, vmf: &mut VmFault<E>, orig_pmd: Pmd) {
        let pmd = vmf.pmd.expect("pmd");
        let _ptl = self.pmd_lockptr(pmd).lock(self);
        if self.pmd_read(pmd) != orig_pmd {
            return;
        }
        let write = vmf.flags.write;
        let entry = orig_pmd.with_flags(|f| {
            f.young = true; // pmd_mkyoung()
            if write {
                f.dirty = true; // pmd_mkdirty()
            }
        });
        let haddr = self.k.geo.pmd_align_down(vmf.address);
        // update_mmu_cache_pmd() if it changed: a no-op on x86.
        self.pmdp_set_access_flags(haddr, pmd, entry, write);
    }

    /// Models do_huge_pmd_wp_page(), mm/huge_memory.c, v5.8: reuse the THP if
    /// nobody else maps it or a part of it; otherwise (and for the huge zero
    /// page) split this PMD and fall back to the PTE fault, which copies 4 KiB.
    ///
    /// # Locking
    /// Takes the PMD lock and the page lock (trylock under the PMD lock, else
    /// drop it, sleep on the page lock, retake it).
    pub fn do_huge_pmd_wp_page(&self, vmf: &mut VmFault<E>, orig_pmd: Pmd) -> VmFaultT {
        let _f = self.func("do_huge_pmd_wp_page");
        let vma = vmf.vma.clone();
        let pmd = vmf.pmd.expect("pmd");
        crate::vm_bug_on!(
            self,
            vma.anon_vma().is_none(),
            "VM_BUG_ON_VMA(!vma->anon_vma, vma)"
        );
        let page = orig_pmd.huge_pfn().expect("huge pmd");
        if !self.is_huge_zero_page(page) {
            let lock = self.pmd_lockptr(pmd);
            let mut ptl = lock.lock(self);
            if self.pmd_read(pmd) != orig_pmd {
                self.mark(Mark::gives_up(
                    "do_huge_pmd_wp_page: pmd changed, fault retried",
                ));
                return VmFaultT::NONE;
            }
            crate::vm_bug_on_page!(
                self,
                !self.page_compound(page) || !self.page_head(page),
                page,
                "VM_BUG_ON_PAGE(!PageCompound(page) || !PageHead(page), page)"
            );
            // Lock page for reuse_swap_page()
            if !self.trylock_page(page) {
                self.get_page(page);
                drop(ptl);
                self.lock_page(page);
                ptl = lock.lock(self);
                if self.pmd_read(pmd) != orig_pmd {
                    drop(ptl);
                    self.unlock_page(page);
                    self.put_page(page);
                    self.mark(Mark::gives_up(
                        "do_huge_pmd_wp_page: pmd changed while waiting for the page lock",
                    ));
                    return VmFaultT::NONE;
                }
                self.put_page(page);
            }
            // We can only reuse the page if nobody else maps the huge page or
            // its part.
            let reuse = if self.k.cfg.fixes.applied(Fix::ThpWpAccurateMapcount) {
                self.reuse_swap_page(page, None)
            } else {
                // Before 6d0a07edd17c: `page_mapcount(page) == 1 && page_count(page) == 1`:
                // every mapping holds a reference, so a count of 1 means the
                // PMD is the only mapping, but a pin counts too.
                let mapcount = self.page_mapcount(page);
                let count = self.page_count(page);
                self.note(|| {
                    format!("do_huge_pmd_wp_page(): page_mapcount() == {mapcount}, page_count() == {count} (the rule before 6d0a07edd17c)")
                });
                mapcount == 1 && count == 1
            };
            if reuse {
                self.mark(Mark::reached("do_huge_pmd_wp_page: THP reused"));
                let entry = orig_pmd.with_flags(|f| {
                    f.young = true; // pmd_mkyoung()
                    f.dirty = true; // pmd_mkdirty()
                    self.maybe_mkwrite(f, &vma); // maybe_pmd_mkwrite()
                });
                // No TLB flush on x86 (pmdp_set_access_flags()): another CPU's
                // read-only translation takes a spurious fault. update_mmu_cache_pmd()
                // if it changed: a no-op on x86.
                let haddr = self.k.geo.pmd_align_down(vmf.address);
                self.pmdp_set_access_flags(haddr, pmd, entry, true);
                self.unlock_page(page);
                drop(ptl);
                return VmFaultT::WRITE;
            }
            self.unlock_page(page);
            drop(ptl);
        }
        // fallback:
        self.mark(Mark::reached("do_huge_pmd_wp_page: fallback, PMD split"));
        self.__split_huge_pmd(&vma, pmd, vmf.address, false, None);
        VmFaultT::FALLBACK
    }

    // ---------------------------------------------------------------------
    // fork and unmap
    // ---------------------------------------------------------------------

    /// Models copy_huge_pmd(), mm/huge_memory.c, v5.8. `Ok(true)`: copied
    /// (ret 0); `Ok(false)`: -EAGAIN, the PMD is no longer huge; `Err`: -ENOMEM.
    ///
    /// # Locking
    /// Takes the child's PMD lock, then the parent's nested.
    pub fn copy_huge_pmd(
        &self,
        _dst: &MmStruct<E>,
        src: &MmStruct<E>,
        dst_pmd: EntryRef,
        src_pmd: EntryRef,
        addr: VirtAddr,
        vma: &Vma,
    ) -> Result<bool, crate::errno::Errno> {
        let _f = self.func("copy_huge_pmd");
        if !vma.is_anonymous() {
            return Ok(true);
        }
        let Some(pgtable) = self.pte_alloc_one() else {
            return Err(crate::errno::Errno::Enomem);
        };
        let _dst_ptl = self.pmd_lockptr(dst_pmd).lock(self);
        let _src_ptl = self.pmd_lockptr(src_pmd).lock_nested(self);
        let pmd = self.pmd_read(src_pmd);
        if let Pmd::Migration { pfn, write } = pmd {
            let entry = Pmd::Migration { pfn, write: false };
            if write {
                self.set_pmd_at(src_pmd, entry);
            }
            self.pgtable_trans_huge_deposit(dst_pmd, pgtable);
            self.set_pmd_at(dst_pmd, entry);
            return Ok(true);
        }
        let Pmd::Huge { pfn: src_page, .. } = pmd else {
            drop(_src_ptl);
            drop(_dst_ptl);
            self.pte_free(pgtable);
            return Ok(false);
        };
        if self.is_huge_zero_page(src_page) {
            let zero = self
                .mm_get_huge_zero_page(_dst)
                .expect("huge zero page exists");
            self.set_huge_zero_page(pgtable, vma, dst_pmd, zero);
            return Ok(true);
        }
        crate::vm_bug_on_page!(
            self,
            !self.page_head(src_page),
            src_page,
            "VM_BUG_ON_PAGE(!PageHead(src_page), src_page)"
        );
        self.get_page(src_page);
        self.page_dup_rmap(src_page, true);
        self.pgtable_trans_huge_deposit(dst_pmd, pgtable);
        // dup_mmap() flushes the parent's TLB at the end.
        let _ = src;
        self.pmdp_set_wrprotect(src_pmd);
        // pmd_mkold(pmd_wrprotect(pmd))
        let child = pmd.with_flags(|f| {
            f.write = false;
            f.young = false;
        });
        self.set_pmd_at(dst_pmd, child);
        let _ = addr;
        Ok(true)
    }

    /// Models __pmd_trans_huge_lock(), mm/huge_memory.c, v5.8: the PMD lock if
    /// the PMD is (still) huge or a migration entry.
    ///
    /// # Locking
    /// Takes the PMD lock; returns it held.
    pub fn __pmd_trans_huge_lock(&self, pmd: EntryRef) -> Option<SpinGuard<'_, E>> {
        let ptl = self.pmd_lockptr(pmd).lock(self);
        let cur = self.pmd_read(pmd);
        if cur.is_swap_pmd() || cur.is_trans_huge() {
            Some(ptl)
        } else {
            None
        }
    }

    /// Models zap_deposited_table(), mm/huge_memory.c, v5.8.
    fn zap_deposited_table(&self, pmd: EntryRef) {
        let pgtable = self.pgtable_trans_huge_withdraw(pmd);
        self.pte_free(pgtable);
    }

    /// Models zap_huge_pmd(), mm/huge_memory.c, v5.8. Returns whether a huge
    /// PMD was zapped.
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub fn zap_huge_pmd(
        &self,
        tlb: &mut MmuGather,
        vma: &Vma,
        pmd: EntryRef,
        addr: VirtAddr,
    ) -> bool {
        let _f = self.func("zap_huge_pmd");
        let _ = vma;
        let Some(ptl) = self.__pmd_trans_huge_lock(pmd) else {
            return false;
        };
        let orig = self.pmdp_huge_get_and_clear(pmd);
        self.note(|| "pmdp_huge_get_and_clear()".to_string());
        self.tlb_remove_tlb_entry(tlb, addr, self.k.geo.pmd_size());
        match orig {
            Pmd::Huge { pfn, .. } if self.is_huge_zero_page(pfn) => {
                self.zap_deposited_table(pmd);
                drop(ptl);
                // tlb_remove_page_size(): release_pages() skips the huge zero page.
            }
            Pmd::Huge { pfn: page, .. } => {
                self.page_remove_rmap(page, true);
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
                if !self.page_anon(page) {
                    self.unmodelled("zap_huge_pmd(): a file THP", Some(page));
                }
                self.zap_deposited_table(pmd);
                drop(ptl);
                self.tlb_remove_page(tlb, page);
            }
            Pmd::Migration { pfn: page, .. } => {
                // Not present: thp_migration_supported() (x86_64 has
                // CONFIG_ARCH_ENABLE_THP_MIGRATION), so no
                // WARN_ONCE(1, "Non present huge pmd without pmd migration
                // enabled!") branch; page = pfn_to_page(swp_offset(entry)),
                // flush_needed = 0.
                if self.page_anon(page) {
                    self.zap_deposited_table(pmd);
                } else {
                    self.unmodelled("zap_huge_pmd(): a file THP", Some(page));
                }
                drop(ptl);
            }
            Pmd::None | Pmd::Table(_) => {
                // __pmd_trans_huge_lock() returned the lock for a huge or
                // migration PMD, and nobody changes it under the lock. 5.8
                // would take a page table for pmd_present() and use
                // pmd_page() of it; a none PMD fails its VM_BUG_ON.
                if orig.is_none() {
                    self.bug("VM_BUG_ON(!is_pmd_migration_entry(orig_pmd))", None);
                }
                self.unmodelled(
                    "zap_huge_pmd(): the huge PMD became a page table under the PMD lock",
                    None,
                );
            }
        }
        true
    }

    /// Models change_huge_pmd(), mm/huge_memory.c, v5.8, for mprotect(): returns
    /// 0 if the PMD is no longer huge, 1 if unchanged, HPAGE_PMD_NR if changed.
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub fn change_huge_pmd(
        &self,
        vma: &Vma,
        pmd: EntryRef,
        addr: VirtAddr,
        newprot: PteFlags,
    ) -> u64 {
        let _f = self.func("change_huge_pmd");
        let Some(_ptl) = self.__pmd_trans_huge_lock(pmd) else {
            return 0;
        };
        if let Pmd::Migration { pfn, write: true } = self.pmd_read(pmd) {
            self.set_pmd_at(pmd, Pmd::Migration { pfn, write: false });
            return 1;
        }
        if self.pmd_read(pmd).is_migration() {
            return 1;
        }
        let entry = self.pmdp_invalidate(vma, addr, pmd);
        // pmd_modify(): keep pfn, dirty, young, special; take the protection.
        let entry = match entry {
            Pmd::Huge { pfn, flags, .. } => Pmd::Huge {
                pfn,
                flags: PteFlags {
                    write: newprot.write,
                    protnone: newprot.protnone,
                    ..flags
                },
                invalid: false,
            },
            other => other,
        };
        self.set_pmd_at(pmd, entry);
        crate::vm_bug_on!(
            self,
            vma.is_anonymous() && entry.is_write(),
            "BUG_ON(vma_is_anonymous(vma) && !preserve_write && pmd_write(entry))"
        );
        self.k.geo.hpage_pmd_nr()
    }

    /// Models pmdp_invalidate(), mm/pgtable-generic.c, v5.8: mark the huge PMD
    /// not present (it stays pmd_trans_huge) and flush the TLB for its range.
    pub fn pmdp_invalidate(&self, vma: &Vma, addr: VirtAddr, pmd: EntryRef) -> Pmd {
        let slot = self.table(pmd.table).raw(pmd.index);
        let old = Pmd::decode(slot.load());
        let new = match old {
            Pmd::Huge { pfn, flags, .. } => Pmd::Huge {
                pfn,
                flags,
                invalid: true,
            },
            other => other,
        };
        let old = Pmd::decode(slot.swap(new.encode()));
        let haddr = self.k.geo.pmd_align_down(addr);
        self.flush_tlb_range(vma.mm, haddr, haddr.add_bytes(self.k.geo.pmd_size()));
        old
    }

    /// Models set_pmd_migration_entry(), mm/huge_memory.c, v5.8: replace the
    /// huge PMD that maps `page` (a THP head) by a migration entry, moving
    /// its dirty bit to the page and dropping its mapping and reference.
    ///
    /// # Locking
    /// Called with the PMD lock held (page_vma_mapped_walk()).
    pub fn set_pmd_migration_entry(&self, vma: &Vma, address: VirtAddr, pmd: EntryRef, page: Pfn) {
        let _f = self.func("set_pmd_migration_entry");
        let pmdval = self.pmdp_invalidate(vma, address, pmd);
        let Pmd::Huge { flags, .. } = pmdval else {
            self.bug("set_pmd_migration_entry(): the PMD is not huge", Some(page));
        };
        if flags.dirty {
            self.page(page).set_flag(pg::DIRTY); // set_page_dirty()
        }
        self.set_pmd_at(
            pmd,
            Pmd::Migration {
                pfn: page,
                write: flags.write,
            },
        );
        self.page_remove_rmap(page, true);
        self.put_page(page);
    }

    /// Models remove_migration_pmd(), mm/huge_memory.c, v5.8: map the new
    /// THP `new` by a huge PMD where the migration entry is (old, and
    /// writable if the entry was), mlocked again in a VM_LOCKED VMA.
    ///
    /// # Locking
    /// Called with the PMD lock held (page_vma_mapped_walk()).
    pub fn remove_migration_pmd(&self, vma: &Vma, address: VirtAddr, pmd: EntryRef, new: Pfn) {
        let _f = self.func("remove_migration_pmd");
        let mmun_start = self.k.geo.pmd_align_down(address);
        let Pmd::Migration { write, .. } = self.pmd_read(pmd) else {
            self.bug(
                "remove_migration_pmd(): not a PMD migration entry",
                Some(new),
            );
        };
        self.get_page(new);
        let mut flags = vma.vm_page_prot();
        flags.young = false; // pmd_mkold()
        if write {
            self.maybe_mkwrite(&mut flags, vma); // maybe_pmd_mkwrite()
        }
        self.page_add_anon_rmap(new, vma, mmun_start, true);
        self.set_pmd_at(
            pmd,
            Pmd::Huge {
                pfn: new,
                flags,
                invalid: false,
            },
        );
        if vma.vm_flags() & vm::LOCKED != 0 && !self.page_double_map(new) {
            self.mlock_vma_page(new);
        }
    }

    // ---------------------------------------------------------------------
    // Splitting a PMD
    // ---------------------------------------------------------------------

    /// Models __split_huge_zero_page_pmd(), mm/huge_memory.c, v5.8. The same
    /// in v3.16 (pmdp_clear_flush() there is pmdp_huge_clear_flush() here).
    pub(crate) fn __split_huge_zero_page_pmd(&self, vma: &Vma, haddr: VirtAddr, pmd: EntryRef) {
        let _f = self.func("__split_huge_zero_page_pmd");
        let g = self.k.geo;
        // pmdp_huge_clear_flush()
        self.pmdp_huge_get_and_clear(pmd);
        self.flush_tlb_range(vma.mm, haddr, haddr.add_bytes(g.pmd_size()));
        let pgtable = self.pgtable_trans_huge_withdraw(pmd);
        let prot = vma.vm_page_prot();
        for i in 0..g.hpage_pmd_nr() {
            let r = EntryRef {
                table: pgtable,
                index: i as usize,
            };
            crate::vm_bug_on!(
                self,
                !self.pte_read(r).is_none(),
                "VM_BUG_ON(!pte_none(*pte))"
            );
            let flags = PteFlags {
                special: true,
                protnone: prot.protnone,
                ..PteFlags::default()
            };
            self.set_pte_at(
                r,
                Pte::Present {
                    pfn: self.k.zero_pfn,
                    flags,
                },
            );
        }
        self.set_pmd_at(pmd, Pmd::Table(pgtable)); // pmd_populate()
    }

    /// Models __split_huge_pmd_locked(), mm/huge_memory.c, v5.8: replace a huge
    /// PMD by a PTE table mapping the same subpages (or migration entries when
    /// `freeze`), moving the mapcount from the compound mapcount to the
    /// subpages, with PageDoubleMap while other PMD mappings remain.
    ///
    /// # Locking
    /// Called with the PMD lock held.
    pub fn __split_huge_pmd_locked(&self, vma: &Vma, pmd: EntryRef, haddr: VirtAddr, freeze: bool) {
        let _f = self.func("__split_huge_pmd_locked");
        let g = self.k.geo;
        let nr = g.hpage_pmd_nr();
        crate::vm_bug_on!(
            self,
            haddr.0 & (g.pmd_size() - 1) != 0,
            "VM_BUG_ON(haddr & ~HPAGE_PMD_MASK)"
        );
        crate::vm_bug_on!(
            self,
            vma.vm_start() > haddr,
            "VM_BUG_ON_VMA(vma->vm_start > haddr, vma)"
        );
        crate::vm_bug_on!(
            self,
            vma.vm_end().0 < haddr.0 + g.pmd_size(),
            "VM_BUG_ON_VMA(vma->vm_end < haddr + HPAGE_PMD_SIZE, vma)"
        );
        let cur = self.pmd_read(pmd);
        crate::vm_bug_on!(self, !cur.is_migration() && !cur.is_trans_huge(), "VM_BUG_ON(!is_pmd_migration_entry(*pmd) && !pmd_trans_huge(*pmd) && !pmd_devmap(*pmd))");
        if let Pmd::Huge { pfn, .. } = cur {
            if self.is_huge_zero_page(pfn) {
                return self.__split_huge_zero_page_pmd(vma, haddr, pmd);
            }
        }
        let old_pmd = self.pmdp_invalidate(vma, haddr, pmd);
        self.note(|| "pmdp_invalidate()".to_string());
        let (page, write, young, pmd_migration) = match old_pmd {
            Pmd::Migration { pfn, write } => (pfn, write, false, true),
            Pmd::Huge { pfn, flags, .. } => {
                if flags.dirty {
                    self.page(pfn).set_flag(pg::DIRTY);
                }
                (pfn, flags.write, flags.young, false)
            }
            _ => self.bug(
                "__split_huge_pmd_locked(): pmd changed under the PMD lock",
                None,
            ),
        };
        crate::vm_bug_on_page!(
            self,
            self.page_count(page) == 0,
            page,
            "VM_BUG_ON_PAGE(!page_count(page), page)"
        );
        self.page_ref_add(page, nr as i64 - 1);
        let pgtable = self.pgtable_trans_huge_withdraw(pmd);
        let prot = vma.vm_page_prot();
        for i in 0..nr {
            let entry = if freeze || pmd_migration {
                Pte::Migration {
                    pfn: page.add(i),
                    write,
                }
            } else {
                let mut flags = prot;
                self.maybe_mkwrite(&mut flags, vma);
                if !write {
                    flags.write = false;
                }
                flags.young = young;
                Pte::Present {
                    pfn: page.add(i),
                    flags,
                }
            };
            // The withdrawn table is reached by no other CPU until
            // pmd_populate() below: its entries are read and written without
            // scheduling points.
            let slot = self.table(pgtable).raw(i as usize);
            if !Pte::decode(slot.peek()).is_none() {
                self.bug("BUG_ON(!pte_none(*pte))", Some(page));
            }
            slot.init(entry.encode()); // set_pte_at()
            if !pmd_migration {
                self.page(page.add(i)).mapcount.fetch_add(1);
            }
        }
        self.note(|| "subpage _mapcount += 1".to_string());
        if !pmd_migration {
            // Set PG_double_map before dropping compound_mapcount to avoid
            // false-negative page_mapped().
            if self.compound_mapcount(page) > 1 && !self.page(page).test_set_flag(pg::DOUBLE_MAP) {
                self.note(|| "SetPageDoubleMap()".to_string());
                for i in 0..nr {
                    self.page(page.add(i)).mapcount.fetch_add(1);
                }
            }
            if self.page(page).compound_mapcount.add_return(-1) < 0 {
                // Last compound_mapcount is gone.
                if self.page(page).test_clear_flag(pg::DOUBLE_MAP) {
                    // No need in mapcount reference anymore.
                    for i in 0..nr {
                        self.page(page.add(i)).mapcount.fetch_sub(1);
                    }
                }
            }
            self.note(|| "compound_mapcount -= 1".to_string());
        }
        self.set_pmd_at(pmd, Pmd::Table(pgtable)); // pmd_populate()
        if freeze {
            for i in 0..nr {
                self.page_remove_rmap(page.add(i), false);
                self.put_page(page.add(i));
            }
        }
    }

    /// Models __split_huge_pmd(), mm/huge_memory.c, v5.8, with seed 000's fix:
    /// the THP is locked around __split_huge_pmd_locked() so a concurrent WP
    /// fault, which reads the mapcounts under the page lock, never sees them
    /// half transferred. Reverting `split-pmd-page-lock` removes the page lock.
    /// Splitting a huge PMD clears PG_mlocked of its THP (clear_page_mlock():
    /// 5.8 never leaves a PTE-mapped THP mlocked).
    ///
    /// # Locking
    /// Takes the PMD lock; with the fix also the page lock (trylock under the
    /// PMD lock, else drop it, sleep on the page lock and retake it). A caller
    /// passing `page` holds that page's lock already. clear_page_mlock() takes
    /// `lru_lock` under the PMD lock.
    pub fn __split_huge_pmd(
        &self,
        vma: &Vma,
        pmd: EntryRef,
        address: VirtAddr,
        freeze: bool,
        page: Option<Pfn>,
    ) {
        let _f = self.func("__split_huge_pmd");
        let fix = self.k.cfg.fixes.applied(Fix::SplitPmdPageLock);
        let haddr = self.k.geo.pmd_align_down(address);
        let mm = self.k.mm(vma.mm);
        self.mmu_notifier_start(
            &mm,
            crate::mmu_notifier::NotifyEvent::Clear,
            haddr,
            haddr.add_bytes(self.k.geo.pmd_size()),
        );
        let lock = self.pmd_lockptr(pmd);
        let mut ptl = lock.lock(self);
        crate::vm_bug_on!(self, freeze && page.is_none(), "VM_BUG_ON(freeze && !page)");
        let mut page = page;
        let mut was_locked = false;
        'out: {
            if let Some(p) = page {
                if fix {
                    crate::vm_warn_on!(
                        self,
                        !self.page_locked(p),
                        Some(p),
                        "VM_WARN_ON_ONCE(!PageLocked(page))"
                    );
                    was_locked = true;
                }
                if self.pmd_read(pmd).huge_pfn() != Some(p) {
                    self.mark(Mark::reached(
                        "__split_huge_pmd: pmd no longer maps the page",
                    ));
                    break 'out;
                }
            }
            loop {
                // repeat:
                let cur = self.pmd_read(pmd);
                if cur.is_trans_huge() {
                    if fix && page.is_none() {
                        let p = cur.huge_pfn().expect("huge");
                        page = Some(p);
                        if !self.trylock_page(p) {
                            self.get_page(p);
                            drop(ptl);
                            self.lock_page(p);
                            ptl = lock.lock(self);
                            if self.pmd_read(pmd) != cur {
                                self.unlock_page(p);
                                self.put_page(p);
                                page = None;
                                continue;
                            }
                            self.put_page(p);
                        }
                    }
                    let p = page.unwrap_or_else(|| cur.huge_pfn().expect("huge"));
                    if self.page_mlocked(p) {
                        self.clear_page_mlock(p);
                    }
                } else if !cur.is_migration() {
                    self.mark(Mark::reached("__split_huge_pmd: pmd no longer huge"));
                    break 'out;
                }
                break;
            }
            self.__split_huge_pmd_locked(vma, pmd, haddr, freeze);
        }
        drop(ptl);
        if fix && !was_locked {
            if let Some(p) = page {
                self.unlock_page(p);
            }
        }
        // mmu_notifier_invalidate_range_only_end()
        self.mmu_notifier_invalidate_range_end(&mm);
    }

    /// Models split_huge_pmd(): split only if the PMD is huge or migrating.
    pub fn split_huge_pmd(&self, vma: &Vma, pmd: EntryRef, address: VirtAddr) {
        let cur = self.pmd_read(pmd);
        if cur.is_swap_pmd() || cur.is_trans_huge() {
            self.__split_huge_pmd(vma, pmd, address, false, None);
        }
    }

    /// Models split_huge_pmd_address(), mm/huge_memory.c, v5.8.
    pub fn split_huge_pmd_address(
        &self,
        mm: &MmStruct<E>,
        vma: &Vma,
        address: VirtAddr,
        freeze: bool,
        page: Option<Pfn>,
    ) {
        let Some(pmd) = self.pmd_offset(mm, address) else {
            return;
        };
        self.__split_huge_pmd(vma, pmd, address, freeze, page);
    }

    /// Models vma_adjust_trans_huge(), mm/huge_memory.c, v5.8: before a VMA's
    /// boundaries move to `start`/`end` (or `next` starts at `nstart`), split the
    /// huge PMDs the new boundaries would cut.
    pub fn vma_adjust_trans_huge(
        &self,
        mm: &MmStruct<E>,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
        next: Option<(&Vma, VirtAddr)>,
    ) {
        if vma.anon_vma().is_none() {
            return;
        }
        let _f = self.func("vma_adjust_trans_huge");
        let g = self.k.geo;
        let cuts = |v: &Vma, a: VirtAddr| {
            let h = g.pmd_align_down(a);
            a.0 & (g.pmd_size() - 1) != 0 && h >= v.vm_start() && h.0 + g.pmd_size() <= v.vm_end().0
        };
        if cuts(vma, start) {
            self.split_huge_pmd_address(mm, vma, start, false, None);
        }
        if cuts(vma, end) {
            self.split_huge_pmd_address(mm, vma, end, false, None);
        }
        if let Some((next, nstart)) = next {
            if cuts(next, nstart) {
                self.split_huge_pmd_address(mm, next, nstart, false, None);
            }
        }
    }

    // ---------------------------------------------------------------------
    // Mapcounts
    // ---------------------------------------------------------------------

    /// Models total_mapcount(), mm/huge_memory.c, v5.8.
    pub fn total_mapcount(&self, page: Pfn) -> i64 {
        crate::vm_bug_on_page!(
            self,
            self.page_tail(page),
            page,
            "VM_BUG_ON_PAGE(PageTail(page), page)"
        );
        if !self.page_compound(page) {
            return self.page(page).mapcount.load_i64() + 1;
        }
        let compound = self.compound_mapcount(page);
        if self.page_huge(page) {
            return compound;
        }
        let nr = self.k.geo.hpage_pmd_nr();
        let mut ret = compound;
        for i in 0..nr {
            ret += self.page(page.add(i)).mapcount.load_i64() + 1;
        }
        if self.page_double_map(page) {
            ret -= nr as i64;
        }
        ret
    }

    /// Models page_trans_huge_mapcount(), mm/huge_memory.c, v5.8: the highest
    /// mapcount of any subpage (what decides COW reuse), and the total.
    pub fn page_trans_huge_mapcount(&self, page: Pfn, total_mapcount: Option<&mut i64>) -> i64 {
        let _f = self.func("page_trans_huge_mapcount");
        if !self.page_trans_compound(page) {
            let mapcount = self.page(page).mapcount.load_i64() + 1;
            if let Some(t) = total_mapcount {
                *t = mapcount;
            }
            return mapcount;
        }
        let head = self.compound_head(page);
        let nr = self.k.geo.hpage_pmd_nr();
        let mut ret = 0;
        let mut total = 0;
        for i in 0..nr {
            let mapcount = self.page(head.add(i)).mapcount.load_i64() + 1;
            ret = ret.max(mapcount);
            total += mapcount;
        }
        if self.page_double_map(head) {
            ret -= 1;
            total -= nr as i64;
        }
        let mapcount = self.compound_mapcount(head);
        ret += mapcount;
        total += mapcount;
        if let Some(t) = total_mapcount {
            *t = total;
        }
        ret
    }

    // ---------------------------------------------------------------------
    // Splitting a page
    // ---------------------------------------------------------------------

    /// Models can_split_huge_page(), mm/huge_memory.c, v5.8 (racy check): only
    /// the mappings and the caller hold references (no pins).
    pub fn can_split_huge_page(&self, page: Pfn, extra_pins: Option<&mut i64>) -> bool {
        let extra = if self.page_swapcache(page) {
            self.k.geo.hpage_pmd_nr() as i64
        } else {
            0
        };
        if let Some(e) = extra_pins {
            *e = extra;
        }
        self.total_mapcount(page) == self.page_count(page) - extra - 1
    }

    /// Models unmap_page(), mm/huge_memory.c, v5.8 (+TTU_SYNC with the fix
    /// `rmap-pmd-under-ptl`).
    fn unmap_page(&self, page: Pfn) {
        let _f = self.func("unmap_page");
        crate::vm_bug_on_page!(
            self,
            !self.page_head(page),
            page,
            "VM_BUG_ON_PAGE(!PageHead(page), page)"
        );
        // DIVERGENCE: TTU_SYNC is 5.13's (732ed55823fc); the model applies it
        // while the fix `rmap-pmd-under-ptl` is in (the default), so 5.8's
        // unlocked PMD check is what reverting that fix restores.
        let flags = TtuFlags {
            ignore_mlock: true,
            ignore_access: true,
            rmap_locked: true,
            split_huge_pmd: true,
            split_freeze: self.page_anon(page),
            sync: true,
            migration: false,
            munlock: false,
        };
        let unmap_success = self.try_to_unmap(page, flags);
        crate::vm_bug_on_page!(
            self,
            !unmap_success,
            page,
            "VM_BUG_ON_PAGE(!unmap_success, page)"
        );
    }

    /// Models remap_page(), mm/huge_memory.c, v5.8.
    fn remap_page(&self, page: Pfn) {
        let _f = self.func("remap_page");
        if self.page_trans_huge(page) {
            self.remove_migration_ptes(page, page, true);
        } else {
            for i in 0..self.k.geo.hpage_pmd_nr() {
                self.remove_migration_ptes(page.add(i), page.add(i), true);
            }
        }
    }

    /// Models __split_huge_page_tail() with lru_add_page_tail(),
    /// mm/huge_memory.c and mm/swap.c, v5.8: with a `list` (reclaim's) and
    /// the head isolated, the tail joins the list with a reference of its
    /// own; without one it goes on the LRU.
    fn __split_huge_page_tail(&self, head: Pfn, tail: u64, list: Option<&mut VecDeque<Pfn>>) {
        let page_tail = head.add(tail);
        let pt = self.page(page_tail);
        crate::vm_bug_on_page!(
            self,
            pt.mapcount.load_i64() != -1,
            page_tail,
            "VM_BUG_ON_PAGE(atomic_read(&page_tail->_mapcount) != -1, page_tail)"
        );
        let hf = self.page(head).flags.load();
        pt.flags.store(hf & pg::SPLIT_COPY);
        if self.page_locked(head) {
            self.inherit_page_lock(page_tail);
        }
        pt.mapping.store(self.page(head).mapping.load());
        pt.index.store(self.page(head).index.load() + tail);
        pt.set_compound_head(None); // clear_compound_head()
        let extra = if !self.page_anon(head) || self.page_swapcache(head) {
            1
        } else {
            0
        };
        self.page_ref_unfreeze(page_tail, 1 + extra);
        // lru_add_page_tail()
        let head_lru = self.page(head).test_flag(pg::LRU);
        match list {
            Some(list) if !head_lru => {
                // Page reclaim is reclaiming a huge page.
                self.get_page(page_tail);
                list.push_back(page_tail);
            }
            Some(_) => {}
            None => pt.set_flag(pg::LRU),
        }
    }

    /// Models __split_huge_page(), mm/huge_memory.c, v5.8: called with the head
    /// frozen and `lru_lock` held (passed in, released here).
    fn __split_huge_page(
        &self,
        page: Pfn,
        lru: SpinGuard<'_, E>,
        mut list: Option<&mut VecDeque<Pfn>>,
    ) {
        let _f = self.func("__split_huge_page");
        let head = self.compound_head(page);
        let nr = self.k.geo.hpage_pmd_nr();
        // A THP in the swap cache: its slots are its tails' from now on.
        let swap_cache = self.page_swapcache(head).then(|| {
            let si = self.swap_info();
            (si, si.i_pages_lock.lock(self))
        });
        let offset = self.page(head).private.load(SeqCst);
        for i in (1..nr).rev() {
            self.__split_huge_page_tail(head, i, list.as_deref_mut());
            if let Some((si, _)) = &swap_cache {
                // __xa_store(&swap_cache->i_pages, offset + i, head + i, 0)
                si.state().cache.insert(offset + i, head.add(i));
            }
        }
        // ClearPageCompound()
        self.page(head).clear_flag(pg::HEAD | pg::DOUBLE_MAP);
        self.page(head).set_compound_order(0);
        self.page(head).compound_mapcount.store_i64(-1);
        if let Some((si, x)) = swap_cache {
            // Additional pin to swap cache.
            self.page_ref_add(head, 2);
            drop(x);
            si.cache_changed();
        } else {
            self.page_ref_add(head, 1);
        }
        drop(lru);
        self.remap_page(head);
        for i in 0..nr {
            let sub = head.add(i);
            if sub == page {
                continue;
            }
            self.unlock_page(sub);
            self.put_page(sub);
        }
    }

    /// Models split_huge_page_to_list(), mm/huge_memory.c, v5.8 (with seed 002's
    /// anon_vma write lock; reverting `split-anon-vma-write` takes it for
    /// read). The caller holds a reference on the page and its page lock.
    ///
    /// # Locking
    /// Takes the anon_vma lock for write, then (inside unmap) PMD and PTE locks,
    /// then `lru_lock` and `split_queue_lock`.
    pub fn split_huge_page_to_list(&self, page: Pfn) -> Result<(), Ebusy> {
        self.split_huge_page_to_list_of(page, None)
    }

    /// [`Cpu::split_huge_page_to_list`] with reclaim's `list`: the tails of
    /// an isolated THP join it.
    pub fn split_huge_page_to_list_into(
        &self,
        page: Pfn,
        list: &mut VecDeque<Pfn>,
    ) -> Result<(), Ebusy> {
        self.split_huge_page_to_list_of(page, Some(list))
    }

    fn split_huge_page_to_list_of(
        &self,
        page: Pfn,
        list: Option<&mut VecDeque<Pfn>>,
    ) -> Result<(), Ebusy> {
        let _f = self.func("split_huge_page_to_list");
        let head = self.compound_head(page);
        crate::vm_bug_on_page!(
            self,
            self.is_huge_zero_page(head),
            head,
            "VM_BUG_ON_PAGE(is_huge_zero_page(head), head)"
        );
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(head),
            head,
            "VM_BUG_ON_PAGE(!PageLocked(head), head)"
        );
        crate::vm_bug_on_page!(
            self,
            !self.page_compound(head),
            head,
            "VM_BUG_ON_PAGE(!PageCompound(head), head)"
        );
        if self.page(head).test_flag(pg::WRITEBACK) {
            self.mark(Mark::gives_up(
                "split_huge_page_to_list: EBUSY: PageWriteback",
            ));
            return Err(Ebusy);
        }
        // The caller does not necessarily hold an mmap_lock that would prevent
        // the anon_vma disappearing so we first we take a reference to it and
        // then lock the anon_vma for write.
        let Some(anon_vma) = self.page_get_anon_vma(head) else {
            self.mark(Mark::gives_up(
                "split_huge_page_to_list: EBUSY: no anon_vma",
            ));
            return Err(Ebusy);
        };
        // Seed 002's fix (062f1af2170a): the write lock serialises parallel
        // splits. Reverted, 3.8-rc1's read lock; in 5.8 the page lock, which
        // every caller holds, still serialises two splitters of one THP.
        let anon_vma_write = self.k.cfg.fixes.applied(Fix::SplitAnonVmaWrite);
        if anon_vma_write {
            self.anon_vma_lock_write(anon_vma);
        } else {
            self.anon_vma_lock_read(anon_vma);
        }
        let mut extra_pins = 0;
        let ret = 'out_unlock: {
            if !self.can_split_huge_page(head, Some(&mut extra_pins)) {
                self.mark(Mark::gives_up(
                    "split_huge_page_to_list: EBUSY: can_split_huge_page() (pinned or busy)",
                ));
                break 'out_unlock Err(Ebusy);
            }
            self.mark(Mark::reached("split_huge_page_to_list: unmap_page reached"));
            self.unmap_page(head);
            crate::vm_bug_on_page!(
                self,
                self.compound_mapcount(head) != 0,
                head,
                "VM_BUG_ON_PAGE(compound_mapcount(head), head)"
            );
            let lru = self.k.lru_lock.lock(self);
            let ds = &self.k.deferred_split;
            let sq = ds.split_queue_lock.lock(self);
            let count = self.page_count(head);
            let mapcount = self.total_mapcount(head);
            self.note(|| format!("total_mapcount(head) == {mapcount}"));
            if mapcount == 0 && self.page_ref_freeze(head, 1 + extra_pins) {
                if self.page(head).on_deferred_list.swap(false, SeqCst) {
                    ds.queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .retain(|p| *p != head);
                }
                drop(sq);
                let swap = self
                    .page_swapcache(head)
                    .then(|| self.page(head).private.load(SeqCst));
                self.__split_huge_page(page, lru, list);
                if let Some(off) = swap {
                    self.split_swap_cluster(crate::pgtable::SwapEntry(off));
                }
                self.mark(Mark::reached("split_huge_page_to_list: split"));
                Ok(())
            } else {
                if mapcount != 0 {
                    self.bug(&format!("total_mapcount: {mapcount}, page_count(): {count}; dump_page: total_mapcount(head) > 0"), Some(head));
                }
                drop(sq);
                drop(lru);
                self.mark(Mark::gives_up(
                    "split_huge_page_to_list: EBUSY: page_ref_freeze() failed",
                ));
                self.remap_page(head);
                Err(Ebusy)
            }
        };
        if anon_vma_write {
            self.anon_vma_unlock_write(anon_vma);
        } else {
            self.anon_vma_unlock_read(anon_vma);
        }
        self.put_anon_vma(anon_vma);
        ret
    }

    // ---------------------------------------------------------------------
    // Deferred split
    // ---------------------------------------------------------------------

    /// Models deferred_split_huge_page(), mm/huge_memory.c, v5.8.
    ///
    /// # Locking
    /// Takes `split_queue_lock`.
    pub fn deferred_split_huge_page(&self, page: Pfn) {
        let _f = self.func("deferred_split_huge_page");
        crate::vm_bug_on_page!(
            self,
            !self.page_trans_huge(page),
            page,
            "VM_BUG_ON_PAGE(!PageTransHuge(page), page)"
        );
        if self.page(page).test_flag(pg::SWAPCACHE) {
            return;
        }
        let ds = &self.k.deferred_split;
        let _sq = ds.split_queue_lock.lock(self);
        if !self.page(page).on_deferred_list.swap(true, SeqCst) {
            ds.queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(page);
        }
    }

    /// Models free_transhuge_page(), mm/huge_memory.c, v5.8: the THP destructor.
    ///
    /// # Locking
    /// Takes `split_queue_lock`.
    pub fn free_transhuge_page(&self, page: Pfn) {
        let _f = self.func("free_transhuge_page");
        {
            let ds = &self.k.deferred_split;
            let _sq = ds.split_queue_lock.lock(self);
            if self.page(page).on_deferred_list.swap(false, SeqCst) {
                ds.queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|p| *p != page);
            }
        }
        let order = self.page(page).compound_order();
        // free_tail_pages_check() on each tail; then __free_pages_ok().
        self.free_unref_page(page, order);
    }

    /// Models deferred_split_scan(), mm/huge_memory.c, v5.8: the shrinker splits
    /// up to `nr_to_scan` queued THPs. Returns how many it split.
    ///
    /// # Locking
    /// Takes `split_queue_lock`, then each page's lock (trylock).
    pub fn deferred_split_scan(&self, nr_to_scan: usize) -> usize {
        let _f = self.func("deferred_split_scan");
        let ds = &self.k.deferred_split;
        let mut list = Vec::new();
        {
            let _sq = ds.split_queue_lock.lock(self);
            let mut q = ds.queue.lock().unwrap_or_else(|p| p.into_inner());
            let mut left = nr_to_scan;
            while left > 0 {
                let Some(page) = q.pop_front() else { break };
                let page = self.compound_head(page);
                if self.get_page_unless_zero(page) {
                    list.push(page);
                } else {
                    // We lost race with put_compound_page().
                    self.mark(Mark::reached(
                        "deferred_split_scan: lost race with put_compound_page()",
                    ));
                    self.page(page).on_deferred_list.store(false, SeqCst);
                }
                left -= 1;
            }
        }
        if list.is_empty() {
            self.mark(Mark::gives_up("deferred_split_scan: nothing queued"));
        }
        let mut split = 0;
        for &page in &list {
            if self.trylock_page(page) {
                if self.split_huge_page_to_list(page).is_ok() {
                    split += 1;
                }
                self.unlock_page(page);
            } else {
                self.mark(Mark::gives_up("deferred_split_scan: trylock_page() failed"));
            }
        }
        // list_splice_tail(): pages not split go back on the queue. Only the
        // splitter and the destructor take a page off, both under the lock.
        {
            let _sq = ds.split_queue_lock.lock(self);
            let mut q = ds.queue.lock().unwrap_or_else(|p| p.into_inner());
            for &page in &list {
                if self.page(page).on_deferred_list.load(SeqCst) && self.page_trans_huge(page) {
                    q.push_back(page);
                }
            }
        }
        for page in list {
            self.put_page(page);
        }
        split
    }

    /// Models split_huge_pages_pid() for one address, mm/huge_memory.c (the
    /// debugfs `split_huge_pages` interface of 5.13+, which 5.8 lacks): split the
    /// THP mapped at `addr` in `mm`. `Ok(false)` when no THP is mapped there;
    /// `Err(Ebusy)` when the split failed (pinned, or the page lock was busy).
    ///
    /// # Locking
    /// Takes `mmap_lock` for read, then the page lock (trylock).
    pub fn split_huge_pages_pid(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
    ) -> Result<bool, Ebusy> {
        let _f = self.func("split_huge_pages_pid");
        let _mmap = mm.mmap_lock.read(self);
        let no_thp = Mark::gives_up("split_huge_pages_pid: no THP mapped there");
        let Some(vma) = mm.vma_at(addr) else {
            self.mark(no_thp);
            return Ok(false);
        };
        // FOLL_DUMP to ignore special (like zero) pages.
        let Ok(Some(page)) = self.follow_page(&vma, addr, FollFlags::GET | FollFlags::DUMP) else {
            self.mark(no_thp);
            return Ok(false);
        };
        let head = self.compound_head(page);
        let result = if !self.page_trans_huge(head) {
            self.mark(no_thp);
            Ok(false)
        } else if !self.can_split_huge_page(head, None) || !self.trylock_page(page) {
            self.mark(Mark::gives_up(
                "split_huge_pages_pid: EBUSY: extra references or page lock busy",
            ));
            Err(Ebusy)
        } else {
            let r = self.split_huge_page_to_list(page).map(|()| true);
            self.unlock_page(page);
            r
        };
        self.put_page(page);
        result
    }

    /// Models follow_trans_huge_pmd(), mm/huge_memory.c, v5.8: the subpage a
    /// huge PMD maps at `addr`, with the reference `flags` ask for
    /// (try_grab_page() on the head). `cur` is the PMD as read under the lock.
    /// With FOLL_MLOCK in a VM_LOCKED VMA it mlocks the THP if this PMD is
    /// its only mapping (mlock_vma_page()).
    ///
    /// # Locking
    /// Called with the PMD lock held; trylocks the page to mlock it.
    pub fn follow_trans_huge_pmd(
        &self,
        vma: &Vma,
        addr: VirtAddr,
        pmd: EntryRef,
        cur: Pmd,
        flags: FollFlags,
    ) -> Result<Option<Pfn>, crate::errno::Errno> {
        let _f = self.func("follow_trans_huge_pmd");
        crate::vm_bug_on!(
            self,
            !self.pmd_lockptr(pmd).is_locked(),
            "assert_spin_locked(pmd_lockptr(mm, pmd))"
        );
        let Pmd::Huge {
            pfn: page,
            flags: pf,
            ..
        } = cur
        else {
            return Ok(None);
        };
        // can_follow_write_pmd()
        if flags.contains(FollFlags::WRITE)
            && !(pf.write || (flags.contains(FollFlags::COW) && pf.dirty))
        {
            self.note(|| "follow_trans_huge_pmd(): not writable: fault for write".to_string());
            return Ok(None);
        }
        // Avoid dumping huge zero page.
        if flags.contains(FollFlags::DUMP) && self.is_huge_zero_page(page) {
            return Err(crate::errno::Errno::Efault);
        }
        // Full NUMA hinting faults to serialise migration in fault paths.
        if flags.contains(FollFlags::NUMA) && pf.protnone {
            return Ok(None);
        }
        crate::vm_bug_on_page!(
            self,
            !self.page_head(page),
            page,
            "VM_BUG_ON_PAGE(!PageHead(page) && !is_zone_device_page(page), page)"
        );
        if !self.try_grab_page(page, flags) {
            return Err(crate::errno::Errno::Enomem);
        }
        if flags.contains(FollFlags::TOUCH) {
            // touch_pmd()
            let write = flags.contains(FollFlags::WRITE);
            let entry = cur.with_flags(|f| {
                f.young = true;
                if write {
                    f.dirty = true;
                }
            });
            self.pmdp_set_access_flags(self.k.geo.pmd_align_down(addr), pmd, entry, write);
        }
        if flags.contains(FollFlags::MLOCK) && vma.vm_flags() & vm::LOCKED != 0 {
            // We don't mlock() pte-mapped THPs: in most cases the pmd is the
            // only mapping of the page, as mlock breaks COW first; a THP
            // shared over fork (a read-only mapping) is not mlocked.
            // (the goto skip_mlock cases, in 5.8's order)
            let skip = (self.page_anon(page) && self.compound_mapcount(page) != 1)
                || self.page_double_map(page)
                || self.page(page).mapping.load() == 0
                || !self.trylock_page(page);
            if !skip {
                if self.page(page).mapping.load() != 0 && !self.page_double_map(page) {
                    self.mlock_vma_page(page);
                }
                self.unlock_page(page);
            }
        }
        let sub = self.k.geo.index(Level::Pte, addr) as u64;
        crate::vm_bug_on_page!(
            self,
            !self.page_compound(page.add(sub)),
            page.add(sub),
            "VM_BUG_ON_PAGE(!PageCompound(page) && !is_zone_device_page(page), page)"
        );
        Ok(Some(page.add(sub)))
    }
}
