//! Faults, fork's page-table copy and unmapping: mm/memory.c.
//!
//! Models (v5.8): the page-table allocation helpers (`__pud_alloc`,
//! `__pmd_alloc`, `__pte_alloc`) and lock helpers of include/linux/mm.h
//! (`pmd_lock`, `pte_lockptr`), `handle_mm_fault`, `__handle_mm_fault`,
//! `handle_pte_fault`, `do_anonymous_page`, `do_wp_page`, `wp_page_reuse`,
//! `wp_page_copy`, `vm_normal_page`, the migration-entry wait of
//! `do_swap_page`, `copy_page_range` down to `copy_one_pte`, and the zap path
//! (`unmap_vmas`, `unmap_page_range`, `zap_pmd_range`, `zap_pte_range`,
//! `zap_page_range`, `free_pgtables`) with the mmu_gather batching of
//! mm/mmu_gather.c: pages are freed only after the TLB flush.
//!
//! File faults (shmem) are in shmem.rs (`do_fault()`), hugetlb faults in
//! hugetlb.rs.
//!
//! Leaves out: swap-in (a later issue),
//! userfaultfd, NUMA hinting faults, mmu notifiers (no secondary MMU yet), RSS
//! counters, `VM_FAULT_RETRY`.

use crate::coverage::Mark;
use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::mm_types::{vm, MmStruct, Vma};
use crate::mmu_notifier::NotifyEvent;
use crate::page::pg;
use crate::pgtable::{EntryRef, Pmd, Pte, PteFlags, TableBody, Upper};
use crate::sync::SpinLock;
use crate::types::{Level, MmId, Pfn, VirtAddr};
use std::sync::Arc;

/// `vm_fault_t`: the result bits of a fault handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmFaultT(u32);

impl VmFaultT {
    pub const NONE: VmFaultT = VmFaultT(0);
    pub const OOM: VmFaultT = VmFaultT(0x1);
    pub const SIGBUS: VmFaultT = VmFaultT(0x2);
    /// VM_FAULT_MAJOR: the page was read from the swap device.
    pub const MAJOR: VmFaultT = VmFaultT(0x4);
    pub const WRITE: VmFaultT = VmFaultT(0x8);
    pub const SIGSEGV: VmFaultT = VmFaultT(0x40);
    pub const FALLBACK: VmFaultT = VmFaultT(0x800);
    /// VM_FAULT_NOPAGE: the fault installed nothing (another CPU did).
    pub const NOPAGE: VmFaultT = VmFaultT(0x100);

    /// VM_FAULT_WRITE: the fault broke COW (or reused the page) for a write.
    pub fn write(self) -> bool {
        self.0 & Self::WRITE.0 != 0
    }
    pub fn fallback(self) -> bool {
        self.0 & Self::FALLBACK.0 != 0
    }
    pub fn oom(self) -> bool {
        self.0 & Self::OOM.0 != 0
    }
    pub fn sigbus(self) -> bool {
        self.0 & Self::SIGBUS.0 != 0
    }
    pub fn sigsegv(self) -> bool {
        self.0 & Self::SIGSEGV.0 != 0
    }
}

/// The fault flags the model uses (`FAULT_FLAG_WRITE`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultFlags {
    pub write: bool,
}

/// `struct vm_fault`.
pub struct VmFault<E: Engine> {
    pub mm: Arc<MmStruct<E>>,
    pub vma: Arc<Vma>,
    pub address: VirtAddr,
    pub flags: FaultFlags,
    pub pmd: Option<EntryRef>,
    pub orig_pmd: Pmd,
    pub pte: Option<EntryRef>,
    pub orig_pte: Pte,
}

impl<E: Engine> VmFault<E> {
    pub fn new(mm: Arc<MmStruct<E>>, vma: Arc<Vma>, address: VirtAddr, flags: FaultFlags) -> Self {
        VmFault {
            mm,
            vma,
            address,
            flags,
            pmd: None,
            orig_pmd: Pmd::None,
            pte: None,
            orig_pte: Pte::None,
        }
    }
}

/// `struct mmu_gather` (mm/mmu_gather.c): the range whose translations must be
/// flushed and the pages (and page tables) to free once they are.
pub struct MmuGather {
    pub mm: MmId,
    pub fullmm: bool,
    start: u64,
    end: u64,
    pages: Vec<Pfn>,
    tables: Vec<Pfn>,
}

impl<E: Engine> Cpu<E> {
    // ---------------------------------------------------------------------
    // Page-table access (include/linux/pgtable.h, include/linux/mm.h)
    // ---------------------------------------------------------------------

    /// The table held in a frame.
    pub fn table(&self, pfn: Pfn) -> &TableBody<E> {
        let g = self.k.geo;
        let entries = 1usize << g.pte_bits.max(g.pmd_bits).max(g.pud_bits);
        self.page(pfn).table_body(entries)
    }

    /// Reads a PMD (`READ_ONCE(*pmd)`).
    pub fn pmd_read(&self, r: EntryRef) -> Pmd {
        Pmd::decode(self.table(r.table).raw(r.index).load())
    }
    /// Models set_pmd_at().
    pub fn set_pmd_at(&self, r: EntryRef, v: Pmd) {
        self.table(r.table).raw(r.index).store(v.encode());
    }
    /// Models pmdp_huge_get_and_clear(): atomically clears and returns the PMD.
    pub fn pmdp_huge_get_and_clear(&self, r: EntryRef) -> Pmd {
        Pmd::decode(self.table(r.table).raw(r.index).swap(Pmd::None.encode()))
    }
    /// Reads a PTE.
    pub fn pte_read(&self, r: EntryRef) -> Pte {
        Pte::decode(self.table(r.table).raw(r.index).load())
    }
    /// Models set_pte_at().
    pub fn set_pte_at(&self, r: EntryRef, v: Pte) {
        self.table(r.table).raw(r.index).store(v.encode());
    }
    /// Models ptep_get_and_clear().
    pub fn ptep_get_and_clear(&self, r: EntryRef) -> Pte {
        Pte::decode(self.table(r.table).raw(r.index).swap(Pte::None.encode()))
    }

    /// pgd_offset() + pud_offset() + pmd_offset() without allocating: the PMD
    /// slot for `addr`, if the upper levels are present.
    pub fn pmd_offset(&self, mm: &MmStruct<E>, addr: VirtAddr) -> Option<EntryRef> {
        let g = self.k.geo;
        let Upper::Table(pud_t) = Upper::decode(mm.pgd.raw(g.index(Level::Pgd, addr)).load())
        else {
            return None;
        };
        let Upper::Table(pmd_t) =
            Upper::decode(self.table(pud_t).raw(g.index(Level::Pud, addr)).load())
        else {
            return None;
        };
        Some(EntryRef {
            table: pmd_t,
            index: g.index(Level::Pmd, addr),
        })
    }

    /// pte_offset_map(): the PTE slot for `addr` under a PMD that points to a table.
    pub fn pte_offset(&self, pmd: Pmd, addr: VirtAddr) -> Option<EntryRef> {
        match pmd {
            Pmd::Table(t) => Some(EntryRef {
                table: t,
                index: self.k.geo.index(Level::Pte, addr),
            }),
            _ => None,
        }
    }

    /// Models pte_alloc_one()/pmd_alloc_one(): a zeroed frame for a page table.
    pub fn pte_alloc_one(&self) -> Option<Pfn> {
        let pfn = self.alloc_pages(0, 0, false)?;
        self.page(pfn).__set_flag(pg::TABLE); // pgtable_pte_page_ctor(): __SetPageTable()
                                              // The frame, no other CPU's yet, is cleared (an entry never made is
                                              // already none).
        let t = self.table(pfn);
        for i in 0..t.len() {
            if let Some(e) = t.made(i) {
                e.init(0);
            }
        }
        Some(pfn)
    }

    /// Models pte_free(): frees a page-table frame.
    pub fn pte_free(&self, pfn: Pfn) {
        let t = self.table(pfn);
        // A model check, read as a checker reads (no scheduling point).
        let busy = (0..t.len()).any(|i| t.peek(i) != 0);
        crate::vm_bug_on_page!(
            self,
            busy,
            pfn,
            "BUG_ON(!pte_none(*pte)) freeing a page table that maps pages"
        );
        self.page(pfn).clear_flag(pg::TABLE);
        self.put_page(pfn);
    }

    /// Models __pud_alloc()/__pmd_alloc() and pmd_alloc(), mm/memory.c, v5.8.
    ///
    /// # Locking
    /// Takes `mm->page_table_lock` to populate an upper level.
    pub fn pmd_alloc(&self, mm: &MmStruct<E>, addr: VirtAddr) -> Option<EntryRef> {
        let g = self.k.geo;
        let pgd_slot = mm.pgd.raw(g.index(Level::Pgd, addr));
        let pud_t = self.upper_alloc(mm, pgd_slot)?;
        let pud_slot = self.table(pud_t).raw(g.index(Level::Pud, addr));
        let pmd_t = self.upper_alloc(mm, pud_slot)?;
        Some(EntryRef {
            table: pmd_t,
            index: g.index(Level::Pmd, addr),
        })
    }

    pub(crate) fn upper_alloc(&self, mm: &MmStruct<E>, slot: &E::Atomic) -> Option<Pfn> {
        if let Upper::Table(t) = Upper::decode(slot.load()) {
            return Some(t);
        }
        let _f = self.func("__pmd_alloc");
        let new = self.pte_alloc_one()?;
        let _ptl = mm.page_table_lock.lock(self);
        match Upper::decode(slot.load()) {
            Upper::Table(t) => {
                drop(_ptl);
                self.pte_free(new);
                Some(t)
            }
            Upper::None => {
                slot.store(Upper::Table(new).encode());
                Some(new)
            }
        }
    }

    /// Models pmd_lockptr(): the split PMD lock of the PMD table.
    pub fn pmd_lockptr(&self, pmd: EntryRef) -> &SpinLock<E> {
        &self.table(pmd.table).ptl
    }

    /// Models pte_lockptr(): the split PTE lock of the PTE table.
    pub fn pte_lockptr(&self, pte_table: Pfn) -> &SpinLock<E> {
        &self.table(pte_table).ptl
    }

    /// Models __pte_alloc() (pte_alloc()), mm/memory.c, v5.8. Returns false on OOM.
    ///
    /// # Locking
    /// Takes the PMD lock to populate the PMD.
    pub fn pte_alloc(&self, pmd: EntryRef) -> bool {
        if !self.pmd_read(pmd).is_none() {
            return true;
        }
        let _f = self.func("__pte_alloc");
        let Some(new) = self.pte_alloc_one() else {
            return false;
        };
        let ptl = self.pmd_lockptr(pmd).lock(self);
        let populated = if self.pmd_read(pmd).is_none() {
            self.set_pmd_at(pmd, Pmd::Table(new)); // pmd_populate()
            true
        } else {
            false
        };
        drop(ptl);
        if !populated {
            self.pte_free(new);
        }
        true
    }

    /// Models pmd_trans_unstable() (pmd_none_or_trans_huge_or_clear_bad()).
    pub fn pmd_trans_unstable(&self, pmd: EntryRef) -> bool {
        let v = self.pmd_read(pmd);
        v.is_none() || v.is_trans_huge() || !v.is_present()
    }

    /// Models pgtable_trans_huge_deposit(), mm/pgtable-generic.c, v5.8.
    pub fn pgtable_trans_huge_deposit(&self, pmd: EntryRef, pgtable: Pfn) {
        vm_assert_locked(self, self.pmd_lockptr(pmd));
        self.table(pmd.table)
            .deposited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pgtable);
    }

    /// Models pgtable_trans_huge_withdraw(), mm/pgtable-generic.c, v5.8.
    pub fn pgtable_trans_huge_withdraw(&self, pmd: EntryRef) -> Pfn {
        vm_assert_locked(self, self.pmd_lockptr(pmd));
        let t = self
            .table(pmd.table)
            .deposited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        match t {
            Some(t) => t,
            None => self.bug(
                "pgtable_trans_huge_withdraw(): no deposited page table",
                None,
            ),
        }
    }

    /// Models vm_normal_page(), mm/memory.c, v5.8: the page a present PTE maps,
    /// or None for the zero page (a special mapping).
    pub fn vm_normal_page(&self, pte: Pte) -> Option<Pfn> {
        match pte {
            Pte::Present { pfn, flags } if !flags.special && !self.is_zero_pfn(pfn) => Some(pfn),
            _ => None,
        }
    }

    /// maybe_mkwrite(): write permission if the VMA allows writes.
    pub fn maybe_mkwrite(&self, flags: &mut PteFlags, vma: &Vma) {
        if vma.vm_flags() & vm::WRITE != 0 {
            flags.write = true;
        }
    }

    // ---------------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------------

    /// Models handle_mm_fault(), mm/memory.c, v5.8.
    pub fn handle_mm_fault(&self, vmf: &VmFault<E>) -> VmFaultT {
        let _f = self.func("handle_mm_fault");
        if vmf.vma.is_hugetlb() {
            return self.hugetlb_fault(&vmf.mm, &vmf.vma, vmf.address, vmf.flags);
        }
        let mut vmf = VmFault {
            mm: vmf.mm.clone(),
            vma: vmf.vma.clone(),
            address: vmf.address,
            flags: vmf.flags,
            pmd: None,
            orig_pmd: Pmd::None,
            pte: None,
            orig_pte: Pte::None,
        };
        self.thp().__handle_mm_fault(self, &mut vmf)
    }

    /// Models __handle_mm_fault(), mm/memory.c, v5.8.
    pub fn __handle_mm_fault(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("__handle_mm_fault");
        let Some(pmd) = self.pmd_alloc(&vmf.mm, vmf.address) else {
            return VmFaultT::OOM;
        };
        vmf.pmd = Some(pmd);
        let cur = self.pmd_read(pmd);
        if cur.is_none() && self.__transparent_hugepage_enabled(&vmf.vma) {
            // create_huge_pmd()
            let ret = self.do_huge_pmd_anonymous_page(vmf);
            if !ret.fallback() {
                return ret;
            }
        } else {
            let orig_pmd = cur;
            vmf.orig_pmd = orig_pmd;
            if orig_pmd.is_swap_pmd() {
                self.pmd_migration_entry_wait(&vmf.mm, pmd);
                return VmFaultT::NONE;
            }
            if orig_pmd.is_trans_huge() {
                if vmf.flags.write && !orig_pmd.is_write() {
                    // wp_huge_pmd()
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
        self.handle_pte_fault(vmf)
    }

    /// Models handle_pte_fault(), mm/memory.c, v5.8.
    ///
    /// # Locking
    /// Takes the PTE lock.
    pub fn handle_pte_fault(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("handle_pte_fault");
        let pmd = vmf.pmd.expect("handle_pte_fault needs a pmd");
        let pmdval = self.pmd_read(pmd);
        if pmdval.is_none() {
            vmf.pte = None;
        } else {
            // pmd_devmap_trans_unstable(): a huge or migrating PMD appeared.
            if self.pmd_trans_unstable(pmd) {
                return VmFaultT::NONE;
            }
            let pte = self.pte_offset(pmdval, vmf.address);
            vmf.pte = pte;
            vmf.orig_pte = pte.map_or(Pte::None, |p| self.pte_read(p));
            if vmf.orig_pte.is_none() {
                vmf.pte = None;
            }
        }
        let Some(pte) = vmf.pte else {
            if vmf.vma.is_anonymous() {
                return self.do_anonymous_page(vmf);
            }
            let r = self.do_fault(vmf);
            // VM_FAULT_NOPAGE: someone else mapped it; the access retries.
            return if r == VmFaultT::NOPAGE {
                VmFaultT::NONE
            } else {
                r
            };
        };
        let entry = vmf.orig_pte;
        if !entry.is_present() {
            return self.do_swap_page(vmf);
        }
        let ptl = self.pte_lockptr(pte.table).lock(self);
        if self.pte_read(pte) != entry {
            return VmFaultT::NONE;
        }
        if vmf.flags.write && !entry.is_write() {
            return self.do_wp_page(vmf, ptl);
        }
        let write = vmf.flags.write;
        let entry = entry.with_flags(|f| {
            if write {
                f.dirty = true; // pte_mkdirty()
            }
            f.young = true; // pte_mkyoung()
        });
        // update_mmu_cache() when it changed, else on a write
        // flush_tlb_fix_spurious_fault(): both are no-ops on x86.
        self.ptep_set_access_flags(pte, entry, write);
        drop(ptl);
        VmFaultT::NONE
    }

    /// Models do_anonymous_page(), mm/memory.c, v5.8.
    ///
    /// # Locking
    /// Takes the PTE lock (pte_offset_map_lock()).
    pub fn do_anonymous_page(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("do_anonymous_page");
        let vma = vmf.vma.clone();
        if vma.vm_flags() & vm::SHARED != 0 {
            return VmFaultT::SIGBUS;
        }
        let pmd = vmf.pmd.expect("pmd");
        if !self.pte_alloc(pmd) {
            return VmFaultT::OOM;
        }
        if self.pmd_trans_unstable(pmd) {
            return VmFaultT::NONE;
        }
        if !vmf.flags.write {
            // Use the zero page for reads.
            let entry = Pte::Present {
                pfn: self.k.zero_pfn,
                flags: PteFlags {
                    special: true,
                    protnone: vma.vm_page_prot().protnone,
                    ..PteFlags::default()
                },
            };
            let Some(pte) = self.pte_offset(self.pmd_read(pmd), vmf.address) else {
                return VmFaultT::NONE;
            };
            let _ptl = self.pte_lockptr(pte.table).lock(self);
            if !self.pte_read(pte).is_none() {
                return VmFaultT::NONE;
            }
            self.set_pte_at(pte, entry);
            return VmFaultT::NONE;
        }
        if !self.anon_vma_prepare(&vmf.mm, &vma) {
            return VmFaultT::OOM;
        }
        let node = self.numa_node_for(&vma, vmf.address);
        let Some(page) = self.alloc_pages(0, node, true) else {
            return VmFaultT::OOM;
        };
        self.page(page).__set_flag(pg::UPTODATE); // __SetPageUptodate()
        let mut flags = vma.vm_page_prot();
        flags.young = true;
        if vma.vm_flags() & vm::WRITE != 0 {
            flags.write = true;
            flags.dirty = true;
        }
        let entry = Pte::Present { pfn: page, flags };
        let Some(pte) = self.pte_offset(self.pmd_read(pmd), vmf.address) else {
            self.put_page(page);
            return VmFaultT::NONE;
        };
        let ptl = self.pte_lockptr(pte.table).lock(self);
        if !self.pte_read(pte).is_none() {
            drop(ptl);
            self.put_page(page);
            return VmFaultT::NONE;
        }
        self.page_add_new_anon_rmap(page, &vma, vmf.address, false);
        self.lru_cache_add_active_or_unevictable(page, &vma);
        self.set_pte_at(pte, entry);
        drop(ptl);
        VmFaultT::NONE
    }

    /// The node a new page of this VMA comes from (alloc_page_vma()'s policy).
    /// DIVERGENCE: no mempolicy; the local node (0).
    pub fn numa_node_for(&self, _vma: &Vma, _addr: VirtAddr) -> u32 {
        0
    }

    /// Models lru_cache_add_active_or_unevictable(), mm/swap.c, v5.8: a new
    /// page joins the LRU, active, or mlocked at once in a VM_LOCKED VMA (the
    /// unevictable list is not modelled).
    ///
    /// The page is new, not yet mapped or on the LRU: no other CPU can reach
    /// it, so its flags change without a scheduling point until PG_lru is
    /// set (5.8's SetPageActive()/TestSetPageMlocked() are atomic, but
    /// nothing can race with them here).
    pub fn lru_cache_add_active_or_unevictable(&self, pfn: Pfn, vma: &Vma) {
        let page = self.page(pfn);
        crate::vm_bug_on_page!(
            self,
            page.test_flag_peek(pg::LRU),
            pfn,
            "VM_BUG_ON_PAGE(PageLRU(page), page)"
        );
        if vma.vm_flags() & vm::LOCKED == 0 {
            page.__set_flag(pg::ACTIVE);
        } else if !page.test_flag_peek(pg::MLOCKED) {
            page.__set_flag(pg::MLOCKED);
            self.note(|| format!("page {} mlocked as it is faulted in", pfn.0));
        }
        // lru_cache_add()
        self.page(pfn).set_flag(pg::LRU);
    }

    /// Models do_swap_page(), mm/memory.c, v5.8: a migration entry makes the
    /// fault wait for the migration to end (migration_entry_wait()) and
    /// retry; a swap entry is swapped in as a 4 KiB page through the swap
    /// cache (lookup_swap_cache(), else swapin_readahead()), mapped under the
    /// PTE lock if the PTE did not change meanwhile (pte_same()), writable at
    /// once if reuse_swap_page() allows; the slot loses the PTE's reference
    /// (swap_free()), and the swap cache lets go of a page whose slot no one
    /// needs when the device is half full or the page is mlocked.
    ///
    /// DIVERGENCE: a page whose lock is taken waits for it holding
    /// `mmap_lock` (lock_page()); 5.8's lock_page_or_retry() drops
    /// `mmap_lock`, waits, and retries the whole fault (VM_FAULT_RETRY),
    /// which ends in the same state.
    ///
    /// # Locking
    /// Called with `mmap_lock` for read; takes the page lock, then the PTE
    /// lock (passed to do_wp_page() for a write the reuse did not settle).
    pub fn do_swap_page(&self, vmf: &mut VmFault<E>) -> VmFaultT {
        let _f = self.func("do_swap_page");
        let entry = match vmf.orig_pte {
            Pte::Migration { .. } => {
                let pmd = vmf.pmd.expect("pmd");
                self.migration_entry_wait(pmd, vmf.address);
                return VmFaultT::NONE;
            }
            Pte::Swap(e) => e,
            // Not reached: handle_pte_fault() calls this for a non-present,
            // non-none PTE only.
            Pte::None | Pte::Present { .. } => {
                self.unmodelled("do_swap_page(): called for a none or present PTE", None)
            }
        };
        let pte = vmf.pte.expect("do_swap_page needs its pte");
        let vma = vmf.vma.clone();
        let mut ret = VmFaultT::NONE;
        let mut page = self.lookup_swap_cache(entry);
        if page.is_none() {
            // Not SWP_SYNCHRONOUS_IO (swapfile.rs): read through the cache.
            page = self.swapin_readahead(entry, &vma, vmf.address);
            let Some(_) = page else {
                // Back out if somebody else faulted in this pte while we
                // released the pte lock.
                let _ptl = self.pte_lockptr(pte.table).lock(self);
                if self.pte_read(pte) == vmf.orig_pte {
                    return VmFaultT::OOM;
                }
                return VmFaultT::NONE;
            };
            // Had to read the page from swap area: Major fault.
            ret = VmFaultT::MAJOR;
        }
        let page = page.expect("found or read");
        // `swapcache` is the page itself on a device without
        // SWP_SYNCHRONOUS_IO.
        let swapcache = true;
        self.lock_page(page);
        let out_page = |c: &Self| {
            c.unlock_page(page);
            c.put_page(page);
        };
        // Make sure try_to_free_swap or reuse_swap_page did not release the
        // swapcache from under us. The page pin, and pte_same test below,
        // are not enough to exclude that. Even if it is still swapcache, we
        // need to check that the page's swap has not changed.
        if swapcache
            && (!self.page_swapcache(page)
                || self
                    .page(page)
                    .private
                    .load(std::sync::atomic::Ordering::SeqCst)
                    != entry.0)
        {
            self.note(|| "do_swap_page(): the page left the swap cache: retry".to_string());
            out_page(self);
            return ret;
        }
        // Back out if somebody else already faulted in this pte.
        let ptl = self.pte_lockptr(pte.table).lock(self);
        if self.pte_read(pte) != vmf.orig_pte {
            self.note(|| "do_swap_page(): !pte_same(): someone else faulted it in".to_string());
            drop(ptl);
            out_page(self);
            return ret;
        }
        // PageUptodate() is PF_NO_TAIL: a THP subpage reads its head's flag.
        if !self.page(self.compound_head(page)).test_flag(pg::UPTODATE) {
            drop(ptl);
            out_page(self);
            return VmFaultT::SIGBUS;
        }
        // reuse_swap_page() must be called while the page is counted on
        // swap but not yet in mapcount, i.e. before page_add_anon_rmap() and
        // swap_free(); try_to_free_swap() must be called after swap_free().
        let mut flags = vma.vm_page_prot();
        let mut exclusive = false;
        if vmf.flags.write && self.reuse_swap_page(page, None) {
            flags.dirty = true;
            self.maybe_mkwrite(&mut flags, &vma);
            vmf.flags.write = false;
            ret = VmFaultT(ret.0 | VmFaultT::WRITE.0);
            exclusive = true;
        }
        let new = Pte::Present { pfn: page, flags };
        self.set_pte_at(pte, new);
        vmf.orig_pte = new;
        self.do_page_add_anon_rmap(page, &vma, vmf.address, false, exclusive);
        self.activate_page(page);
        self.swap_free(entry);
        if self.vm_swap_full() || vma.vm_flags() & vm::LOCKED != 0 || self.page_mlocked(page) {
            self.try_to_free_swap(page);
        }
        self.unlock_page(page);
        if vmf.flags.write {
            let r = self.do_wp_page(vmf, ptl);
            return VmFaultT(ret.0 | r.0);
        }
        // No need to invalidate - it was non-present before.
        drop(ptl);
        ret
    }

    /// Models do_wp_page(), mm/memory.c, v5.8 (before the 5.9 rewrite): an
    /// anonymous page is reused when reuse_swap_page() finds it mapped once
    /// (page_trans_huge_mapcount() for a THP subpage), else it is copied.
    ///
    /// # Locking
    /// Called with the PTE lock held (`ptl`); takes the page lock (trylock under
    /// the PTE lock, else drops it, sleeps on the page lock, retakes it).
    pub fn do_wp_page<'a>(
        &'a self,
        vmf: &mut VmFault<E>,
        ptl: crate::sync::SpinGuard<'a, E>,
    ) -> VmFaultT {
        let _f = self.func("do_wp_page");
        let pte = vmf.pte.expect("pte");
        let Some(page) = self.vm_normal_page(vmf.orig_pte) else {
            // The zero page: copy.
            drop(ptl);
            return self.wp_page_copy(vmf, None);
        };
        let mut ptl = ptl;
        let f = vmf.vma.vm_flags();
        if f & (vm::WRITE | vm::SHARED) == vm::WRITE | vm::SHARED {
            // wp_page_shared(): shmem has no page_mkwrite; the page is
            // reused (wp_page_reuse()).
            self.wp_page_reuse(vmf, ptl);
            return VmFaultT::WRITE;
        }
        if self.page_anon(page) {
            if !self.trylock_page(page) {
                self.get_page(page);
                drop(ptl);
                self.lock_page(page);
                ptl = self.pte_lockptr(pte.table).lock(self);
                if self.pte_read(pte) != vmf.orig_pte {
                    self.unlock_page(page);
                    drop(ptl);
                    self.put_page(page);
                    return VmFaultT::NONE;
                }
                self.put_page(page);
            }
            let mut total_map_swapcount = 0;
            if self.reuse_swap_page(page, Some(&mut total_map_swapcount)) {
                if total_map_swapcount == 1 {
                    // The page is all ours: move it to our anon_vma so the
                    // rmap code will not search our parent or siblings.
                    self.page_move_anon_rmap(page, &vmf.vma);
                }
                self.unlock_page(page);
                self.mark(Mark::reached("do_wp_page: page reused"));
                self.wp_page_reuse(vmf, ptl);
                return VmFaultT::WRITE;
            }
            self.unlock_page(page);
        }
        self.get_page(page);
        drop(ptl);
        self.mark(Mark::reached("do_wp_page: page copied"));
        self.wp_page_copy(vmf, Some(page))
    }

    /// Models wp_page_reuse(), mm/memory.c, v5.8: make the PTE writable in
    /// place with ptep_set_access_flags(), which on x86 flushes no TLB: other
    /// CPUs may keep a read-only translation and take a spurious fault on
    /// their next write (mmu.rs), as on x86.
    ///
    /// # Locking
    /// Called with the PTE lock held (`ptl`); drops it.
    pub fn wp_page_reuse(&self, vmf: &mut VmFault<E>, ptl: crate::sync::SpinGuard<'_, E>) {
        let _f = self.func("wp_page_reuse");
        let pte = vmf.pte.expect("pte");
        let vma = vmf.vma.clone();
        let entry = vmf.orig_pte.with_flags(|f| {
            f.young = true; // pte_mkyoung()
            f.dirty = true; // pte_mkdirty()
            self.maybe_mkwrite(f, &vma);
        });
        // update_mmu_cache() if it changed: a no-op on x86.
        self.ptep_set_access_flags(pte, entry, true);
        drop(ptl);
    }

    /// Models wp_page_copy(), mm/memory.c, v5.8: copy the page (or allocate a
    /// zeroed one for the zero page), then under the PTE lock, if the PTE did not
    /// change, clear and flush it, map the copy and drop the old page's mapping.
    /// `old_page` carries the reference do_wp_page() took. After a copy in a
    /// VM_LOCKED VMA the old page is munlocked (another task, with possibly
    /// unlocked vma, must not keep the mlocked page).
    ///
    /// # Locking
    /// Takes the PTE lock; then, for the munlock, the old page's lock.
    pub fn wp_page_copy(&self, vmf: &mut VmFault<E>, old_page: Option<Pfn>) -> VmFaultT {
        let _f = self.func("wp_page_copy");
        let vma = vmf.vma.clone();
        let release_old = |s: &Self| {
            if let Some(old) = old_page {
                s.put_page(old);
            }
        };
        if !self.anon_vma_prepare(&vmf.mm, &vma) {
            release_old(self);
            return VmFaultT::OOM;
        }
        let node = self.numa_node_for(&vma, vmf.address);
        let Some(new_page) = self.alloc_pages(0, node, old_page.is_none()) else {
            release_old(self);
            return VmFaultT::OOM;
        };
        if let Some(old) = old_page {
            self.note(|| "cow_user_page()".to_string());
            self.copy_page(new_page, old); // cow_user_page()
        }
        self.page(new_page).__set_flag(pg::UPTODATE); // __SetPageUptodate()
        let ps = self.k.geo.page_size();
        let page_addr = VirtAddr(vmf.address.0 & !(ps - 1));
        self.mmu_notifier_start(
            &vmf.mm,
            NotifyEvent::Clear,
            page_addr,
            page_addr.add_bytes(ps),
        );
        let pte = vmf.pte.unwrap_or_else(|| {
            self.pte_offset(self.pmd_read(vmf.pmd.expect("pmd")), vmf.address)
                .expect("pte table")
        });
        let ptl = self.pte_lockptr(pte.table).lock(self);
        let mut freed = new_page;
        let copied = self.pte_read(pte) == vmf.orig_pte;
        if copied {
            let mut flags = vma.vm_page_prot();
            flags.young = true;
            flags.dirty = true;
            self.maybe_mkwrite(&mut flags, &vma);
            // ptep_clear_flush_notify()
            self.ptep_get_and_clear(pte);
            self.flush_tlb_page(vmf.mm.id, vmf.address);
            self.page_add_new_anon_rmap(new_page, &vma, vmf.address, false);
            self.lru_cache_add_active_or_unevictable(new_page, &vma);
            self.set_pte_at(
                pte,
                Pte::Present {
                    pfn: new_page,
                    flags,
                },
            );
            if let Some(old) = old_page {
                self.page_remove_rmap(old, false);
                freed = old;
            }
        }
        if !copied || old_page.is_some() {
            // put_page(new_page): the new page if unused, else the old page's
            // mapping reference.
            self.put_page(freed);
        }
        drop(ptl);
        // mmu_notifier_invalidate_range_only_end()
        self.mmu_notifier_invalidate_range_end(&vmf.mm);
        if let Some(old) = old_page {
            if copied && vma.vm_flags() & vm::LOCKED != 0 {
                // LRU manipulation
                self.lock_page(old);
                if self.page_mlocked(old) {
                    self.munlock_vma_page(old);
                }
                self.unlock_page(old);
            }
        }
        release_old(self);
        if copied {
            VmFaultT::WRITE
        } else {
            VmFaultT::NONE
        }
    }

    // ---------------------------------------------------------------------
    // fork: copy_page_range()
    // ---------------------------------------------------------------------

    /// Models copy_page_range(), mm/memory.c, v5.8. Returns false on ENOMEM.
    pub fn copy_page_range(
        &self,
        dst: &MmStruct<E>,
        src: &MmStruct<E>,
        vma: &Arc<Vma>,
        new_vma: &Arc<Vma>,
    ) -> bool {
        let _f = self.func("copy_page_range");
        // Don't copy ptes where a page fault will fill them correctly.
        if vma.vm_flags() & vm::HUGETLB == 0 && vma.anon_vma().is_none() {
            return true;
        }
        if vma.is_hugetlb() {
            return self.copy_hugetlb_page_range(dst, src, vma, new_vma);
        }
        let (start, end) = (vma.vm_start(), vma.vm_end());
        // We need to invalidate the secondary MMU mappings only when there
        // could be a permission downgrade on the ptes of the parent mm.
        let range = vma
            .is_cow_mapping()
            .then(|| self.mmu_notifier_start(src, NotifyEvent::ProtectionPage, start, end));
        let mut ok = true;
        let mut addr = start;
        while addr < end {
            let next = self.k.geo.pmd_addr_end(addr, end);
            if let Some(src_pmd) = self.pmd_offset(src, addr) {
                let Some(dst_pmd) = self.pmd_alloc(dst, addr) else {
                    ok = false;
                    break;
                };
                if !self.copy_pmd_range(dst, src, dst_pmd, src_pmd, vma, new_vma, addr, next) {
                    ok = false;
                    break;
                }
            }
            addr = next;
        }
        if range.is_some() {
            self.mmu_notifier_invalidate_range_end(src);
        }
        ok
    }

    /// Models one step of copy_pmd_range(), mm/memory.c, v5.8.
    #[allow(clippy::too_many_arguments)]
    fn copy_pmd_range(
        &self,
        dst: &MmStruct<E>,
        src: &MmStruct<E>,
        dst_pmd: EntryRef,
        src_pmd: EntryRef,
        vma: &Arc<Vma>,
        new_vma: &Arc<Vma>,
        addr: VirtAddr,
        next: VirtAddr,
    ) -> bool {
        let _f = self.func("copy_pmd_range");
        let cur = self.pmd_read(src_pmd);
        if cur.is_swap_pmd() || cur.is_trans_huge() {
            crate::vm_bug_on!(
                self,
                next.0 - addr.0 != self.k.geo.pmd_size(),
                "VM_BUG_ON_VMA(next-addr != HPAGE_PMD_SIZE, vma)"
            );
            match self
                .thp()
                .copy_huge_pmd(self, dst, src, dst_pmd, src_pmd, addr, vma)
            {
                Err(_) => return false,
                Ok(true) => return true,
                Ok(false) => {} // -EAGAIN: the PMD was split; copy the PTEs.
            }
        }
        if self.pmd_read(src_pmd).is_none() {
            return true;
        }
        self.copy_pte_range(dst, src, dst_pmd, src_pmd, vma, new_vma, addr, next)
    }

    /// Models copy_pte_range(), mm/memory.c, v5.8.
    ///
    /// # Locking
    /// Takes the child's PTE lock, then the parent's nested
    /// (`spin_lock_nested(src_ptl, SINGLE_DEPTH_NESTING)`).
    #[allow(clippy::too_many_arguments)]
    fn copy_pte_range(
        &self,
        _dst: &MmStruct<E>,
        _src: &MmStruct<E>,
        dst_pmd: EntryRef,
        src_pmd: EntryRef,
        vma: &Arc<Vma>,
        _new_vma: &Arc<Vma>,
        addr: VirtAddr,
        end: VirtAddr,
    ) -> bool {
        let _f = self.func("copy_pte_range");
        if !self.pte_alloc(dst_pmd) {
            return false;
        }
        let Pmd::Table(dst_t) = self.pmd_read(dst_pmd) else {
            return true;
        };
        let Pmd::Table(src_t) = self.pmd_read(src_pmd) else {
            return true;
        };
        let _dst_ptl = self.pte_lockptr(dst_t).lock(self);
        let _src_ptl = self.pte_lockptr(src_t).lock_nested(self);
        let ps = self.k.geo.page_size();
        let mut a = addr;
        while a < end {
            let idx = self.k.geo.index(Level::Pte, a);
            let s = EntryRef {
                table: src_t,
                index: idx,
            };
            let d = EntryRef {
                table: dst_t,
                index: idx,
            };
            let pte = self.pte_read(s);
            if !pte.is_none() {
                self.copy_one_pte(s, d, pte, vma);
            }
            a = a.add_bytes(ps);
        }
        true
    }

    /// Models copy_one_pte(), mm/memory.c, v5.8: a COW mapping is
    /// write-protected in both parent and child; a present page gains a
    /// reference and a mapping. A migration entry is copied as it is (made a
    /// read entry in a COW mapping) and takes neither: the page's references
    /// and mapcounts were dropped when it was unmapped to the entry, and
    /// remove_migration_ptes() takes them for every entry it restores,
    /// the child's too (dup_mmap() links the child's VMA to the anon_vma
    /// before it copies the page tables).
    ///
    /// # Locking
    /// Called with both PTE locks held (copy_pte_range()).
    pub(crate) fn copy_one_pte(&self, src: EntryRef, dst: EntryRef, pte: Pte, vma: &Vma) {
        let mut pte = pte;
        match pte {
            Pte::Migration { pfn, write } => {
                let _page = self.migration_entry_to_page(pfn);
                self.note(|| "copy_one_pte(): migration entry copied".to_string());
                // rss[mm_counter(page)]++: RSS counters are not modelled.
                if write && vma.is_cow_mapping() {
                    // COW mappings require pages in both parent and child
                    // to be set to read.
                    pte = Pte::Migration { pfn, write: false };
                    self.set_pte_at(src, pte);
                }
            }
            Pte::Swap(entry) => {
                // The PTE holds a reference to the slot, so only a count
                // continuation (not modelled) could make this fail.
                if self.swap_duplicate(entry).is_err() {
                    self.bug(
                        "copy_one_pte(): swap_duplicate() of a swap PTE's slot failed",
                        None,
                    );
                }
                // rss[MM_SWAPENTS]++: RSS counters are not modelled.
            }
            Pte::Present { .. } => {
                // If it's a COW mapping, write protect it both in the parent
                // and the child.
                if vma.is_cow_mapping() && pte.is_write() {
                    self.ptep_set_wrprotect(src);
                    pte = pte.with_flags(|f| f.write = false); // pte_wrprotect()
                }
                if vma.vm_flags() & vm::SHARED != 0 {
                    pte = pte.with_flags(|f| f.dirty = false);
                }
                pte = pte.with_flags(|f| f.young = false);
                if let Some(page) = self.vm_normal_page(pte) {
                    self.get_page(page);
                    self.page_dup_rmap(page, false);
                }
            }
            Pte::None => return,
        }
        self.set_pte_at(dst, pte);
    }

    // ---------------------------------------------------------------------
    // Unmapping: zap and free_pgtables
    // ---------------------------------------------------------------------

    /// Models tlb_gather_mmu(), mm/mmu_gather.c, v5.8.
    pub fn tlb_gather_mmu(&self, mm: MmId, fullmm: bool) -> MmuGather {
        MmuGather {
            mm,
            fullmm,
            start: u64::MAX,
            end: 0,
            pages: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// Models tlb_remove_tlb_entry(): the range to flush grows.
    pub fn tlb_remove_tlb_entry(&self, tlb: &mut MmuGather, addr: VirtAddr, size: u64) {
        tlb.start = tlb.start.min(addr.0);
        tlb.end = tlb.end.max(addr.0 + size);
    }

    /// Models __tlb_remove_page()/tlb_remove_page_size(): freed after the flush.
    pub fn tlb_remove_page(&self, tlb: &mut MmuGather, page: Pfn) {
        tlb.pages.push(page);
    }

    /// Models pte_free_tlb()/pmd_free_tlb()/pud_free_tlb(),
    /// include/asm-generic/tlb.h, v5.8: a page table freed after the flush.
    /// The flush range grows by a page at `addr` (`__tlb_adjust_range()`), so
    /// a gather that frees tables always flushes: the IPI is what a lockless
    /// walker (GUP-fast, interrupts off) holds the table with.
    pub fn tlb_remove_table(&self, tlb: &mut MmuGather, table: Pfn, addr: VirtAddr) {
        self.tlb_remove_tlb_entry(tlb, addr, self.k.geo.page_size());
        tlb.tables.push(table);
    }

    /// Models tlb_finish_mmu()/tlb_flush_mmu(), mm/mmu_gather.c, v5.8: flush the
    /// TLBs, then release the pages (free_pages_and_swap_cache()) and tables.
    pub fn tlb_finish_mmu(&self, tlb: MmuGather) {
        let _f = self.func("tlb_finish_mmu");
        if tlb.fullmm {
            self.flush_tlb_mm(tlb.mm);
        } else if tlb.start < tlb.end {
            self.flush_tlb_range(tlb.mm, VirtAddr(tlb.start), VirtAddr(tlb.end));
        }
        // free_pages_and_swap_cache()
        for page in tlb.pages {
            self.free_swap_cache(page);
            self.put_page(page);
        }
        for t in tlb.tables {
            self.pte_free(t);
        }
    }

    /// Models unmap_single_vma()/unmap_page_range(), mm/memory.c, v5.8.
    pub fn unmap_page_range(
        &self,
        tlb: &mut MmuGather,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
    ) {
        let _f = self.func("unmap_page_range");
        let start = start.max(vma.vm_start());
        let end = end.min(vma.vm_end());
        if vma.is_hugetlb() {
            if start < end {
                self.unmap_hugetlb_vma(tlb, mm, vma, start, end);
            }
            return;
        }
        let mut addr = start;
        while addr < end {
            let next = self.k.geo.pmd_addr_end(addr, end);
            if let Some(pmd) = self.pmd_offset(mm, addr) {
                self.zap_pmd_range(tlb, vma, pmd, addr, next);
            }
            addr = next;
        }
    }

    /// Models one iteration of zap_pmd_range(), mm/memory.c, v5.8: a huge PMD
    /// not wholly covered is split first.
    fn zap_pmd_range(
        &self,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
    ) {
        let _f = self.func("zap_pmd_range");
        let cur = self.pmd_read(pmd);
        if (cur.is_swap_pmd() || cur.is_trans_huge())
            && self
                .thp()
                .zap_huge_pmd_range(self, tlb, vma, pmd, addr, next)
        {
            return;
        }
        // pmd_none_or_trans_huge_or_clear_bad()
        let cur = self.pmd_read(pmd);
        if !matches!(cur, Pmd::Table(_)) {
            return;
        }
        self.zap_pte_range(tlb, vma, pmd, addr, next);
    }

    /// Models zap_pte_range(), mm/memory.c, v5.8.
    ///
    /// # Locking
    /// Takes the PTE lock.
    fn zap_pte_range(
        &self,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        end: VirtAddr,
    ) {
        let _f = self.func("zap_pte_range");
        let Pmd::Table(t) = self.pmd_read(pmd) else {
            return;
        };
        let _ptl = self.pte_lockptr(t).lock(self);
        let ps = self.k.geo.page_size();
        let mut a = addr;
        while a < end {
            let r = EntryRef {
                table: t,
                index: self.k.geo.index(Level::Pte, a),
            };
            let ptent = self.pte_read(r);
            match ptent {
                Pte::None => {}
                Pte::Present { .. } => {
                    let page = self.vm_normal_page(ptent);
                    self.ptep_get_and_clear(r);
                    self.note(|| "ptep_get_and_clear_full()".to_string());
                    self.tlb_remove_tlb_entry(tlb, a, ps);
                    if let Some(page) = page {
                        // if (!PageAnon(page)) ...; rss[mm_counter(page)]--;
                        let _anon = self.page_anon(page);
                        let _swapbacked = self
                            .page(self.compound_head(page))
                            .test_flag(pg::SWAPBACKED);
                        self.page_remove_rmap(page, false);
                        self.note(|| "page_remove_rmap()".to_string());
                        if self.page_mapcount(page) < 0 {
                            self.bad_page(page, "print_bad_pte: negative mapcount");
                        }
                        self.tlb_remove_page(tlb, page);
                    }
                }
                Pte::Migration { pfn, .. } => {
                    // rss[mm_counter(page)]--: RSS counters are not modelled.
                    let _page = self.migration_entry_to_page(pfn);
                    // free_swap_and_cache() is 1 for a non-swap entry.
                    self.ptep_get_and_clear(r); // pte_clear_not_present_full()
                }
                Pte::Swap(entry) => {
                    // rss[MM_SWAPENTS]--: RSS counters are not modelled.
                    self.free_swap_and_cache(entry);
                    self.ptep_get_and_clear(r); // pte_clear_not_present_full()
                }
            }
            a = a.add_bytes(ps);
        }
        let _ = vma;
    }

    /// Models zap_page_range(), mm/memory.c, v5.8: unmap `[start, end)` of one
    /// VMA (MADV_DONTNEED).
    pub fn zap_page_range(&self, mm: &MmStruct<E>, vma: &Arc<Vma>, start: VirtAddr, end: VirtAddr) {
        let _f = self.func("zap_page_range");
        let mut tlb = self.tlb_gather_mmu(mm.id, false);
        self.mmu_notifier_start(mm, NotifyEvent::Clear, start, end);
        self.unmap_page_range(&mut tlb, mm, vma, start, end);
        self.mmu_notifier_invalidate_range_end(mm);
        self.tlb_finish_mmu(tlb);
    }

    /// Models free_pgtables(), mm/memory.c, v5.8: hide each VMA from rmap
    /// (unlink_anon_vmas()), then free the page tables under it that no other
    /// VMA uses, nearby VMAs gathered into one call down. `vmas` are detached
    /// and in address order; `floor` is the end of the VMA before them (0:
    /// FIRST_USER_ADDRESS) and `ceiling` the start of the one after (the
    /// task size: USER_PGTABLES_CEILING, the top).
    /// A hugetlb VMA's tables are freed as any other's: on x86
    /// hugetlb_free_pgd_range() is free_pgd_range().
    pub fn free_pgtables(
        &self,
        tlb: &mut MmuGather,
        mm: &MmStruct<E>,
        vmas: &[Arc<Vma>],
        floor: VirtAddr,
        ceiling: VirtAddr,
    ) {
        let _f = self.func("free_pgtables");
        let pmd_size = self.k.geo.pmd_size();
        let mut i = 0;
        while i < vmas.len() {
            let addr = vmas[i].vm_start();
            self.unlink_anon_vmas(&vmas[i]);
            self.unlink_file_vma(&vmas[i]);
            // Optimization: gather nearby vmas into one call down (never a
            // hugetlb one, which goes down alone).
            while let Some(next) = vmas.get(i + 1) {
                if vmas[i].is_hugetlb()
                    || next.is_hugetlb()
                    || next.vm_start().0 > vmas[i].vm_end().0 + pmd_size
                {
                    break;
                }
                i += 1;
                self.unlink_anon_vmas(&vmas[i]);
                self.unlink_file_vma(&vmas[i]);
            }
            let up_to = vmas.get(i + 1).map_or(ceiling, |n| n.vm_start());
            self.free_pgd_range(tlb, mm, addr.0, vmas[i].vm_end().0, floor.0, up_to.0);
            i += 1;
        }
    }

    /// Models free_pgd_range(), mm/memory.c, v5.8, with its arithmetic: addr
    /// and floor 0 are the bottom of the address space, end and ceiling 0 its
    /// top, hence the "- 1"s. A table is freed when `[floor, ceiling)`, the
    /// hole between the neighbouring VMAs, covers all it maps.
    ///
    /// The walk reads each entry that was ever made (`TableBody::made`): with
    /// mmap_lock held for write, or the mm dead, no other CPU can make one.
    /// 4-level paging: the p4d level is folded into the PGD
    /// (free_p4d_range()'s own pgd_clear() and p4d_free_tlb() do nothing).
    fn free_pgd_range(
        &self,
        tlb: &mut MmuGather,
        mm: &MmStruct<E>,
        addr: u64,
        end: u64,
        floor: u64,
        ceiling: u64,
    ) {
        let g = self.k.geo;
        // USER_PGTABLES_CEILING is 0, the top.
        let ceiling = if ceiling >= g.task_size() { 0 } else { ceiling };
        let pmd_mask = !(g.pmd_size() - 1);
        let mut addr = addr & pmd_mask;
        let mut end = end;
        if addr < floor {
            addr = addr.wrapping_add(g.pmd_size());
            if addr == 0 {
                return;
            }
        }
        let mut ceiling_pmd = ceiling;
        if ceiling_pmd != 0 {
            ceiling_pmd &= pmd_mask;
            if ceiling_pmd == 0 {
                return;
            }
        }
        if end.wrapping_sub(1) > ceiling_pmd.wrapping_sub(1) {
            end -= g.pmd_size();
        }
        if addr > end.wrapping_sub(1) {
            return;
        }
        let pgdir_size = 1u64 << g.pgdir_shift();
        loop {
            let next = addr_end(addr, end, pgdir_size);
            if let Some(pgd) = mm.pgd.made(g.index(Level::Pgd, VirtAddr(addr))) {
                if let Upper::Table(pud_t) = Upper::decode(pgd.load()) {
                    self.free_pud_range(tlb, pgd, pud_t, addr, next, floor, ceiling);
                }
            }
            addr = next;
            if addr == end {
                break;
            }
        }
    }

    /// Models free_pud_range() (and the folded free_p4d_range()), mm/memory.c,
    /// v5.8: free the PMD tables under `[addr, end)`, then the PUD table
    /// itself (p4d_clear() clears the PGD entry) if the hole covers it.
    #[allow(clippy::too_many_arguments)]
    fn free_pud_range(
        &self,
        tlb: &mut MmuGather,
        pgd: &E::Atomic,
        pud_t: Pfn,
        addr: u64,
        end: u64,
        floor: u64,
        ceiling: u64,
    ) {
        let g = self.k.geo;
        let start = addr;
        let mut addr = addr;
        loop {
            let next = addr_end(addr, end, g.pud_size());
            if let Some(pud) = self.table(pud_t).made(g.index(Level::Pud, VirtAddr(addr))) {
                if let Upper::Table(pmd_t) = Upper::decode(pud.load()) {
                    self.free_pmd_range(tlb, pud, pmd_t, addr, next, floor, ceiling);
                }
            }
            addr = next;
            if addr == end {
                break;
            }
        }
        let pgdir_mask = !((1u64 << g.pgdir_shift()) - 1); // P4D_MASK, folded
        if !frees_table(start, end, floor, ceiling, pgdir_mask) {
            return;
        }
        pgd.store(0); // p4d_clear()
        self.tlb_remove_table(tlb, pud_t, VirtAddr(start & pgdir_mask)); // pud_free_tlb()
    }

    /// Models free_pmd_range() and free_pte_range(), mm/memory.c, v5.8: free
    /// the PTE tables under `[addr, end)` (pmd_clear(), no lock: the VMAs are
    /// gone), then the PMD table itself if the hole covers it.
    #[allow(clippy::too_many_arguments)]
    fn free_pmd_range(
        &self,
        tlb: &mut MmuGather,
        pud: &E::Atomic,
        pmd_t: Pfn,
        addr: u64,
        end: u64,
        floor: u64,
        ceiling: u64,
    ) {
        let g = self.k.geo;
        let start = addr;
        let mut addr = addr;
        loop {
            let next = addr_end(addr, end, g.pmd_size());
            let pmd = EntryRef {
                table: pmd_t,
                index: g.index(Level::Pmd, VirtAddr(addr)),
            };
            if self.table(pmd_t).made(pmd.index).is_some() {
                // pmd_none_or_clear_bad(); free_pte_range()
                if let Pmd::Table(t) = self.pmd_read(pmd) {
                    self.set_pmd_at(pmd, Pmd::None); // pmd_clear()
                    self.tlb_remove_table(tlb, t, VirtAddr(addr)); // pte_free_tlb()
                }
            }
            addr = next;
            if addr == end {
                break;
            }
        }
        let pud_mask = !(g.pud_size() - 1);
        if !frees_table(start, end, floor, ceiling, pud_mask) {
            return;
        }
        pud.store(0); // pud_clear()
                      // pmd_free_tlb(): ___pmd_free_tlb() runs pgtable_pmd_page_dtor().
        let deposited = !self
            .table(pmd_t)
            .deposited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        crate::vm_bug_on_page!(
            self,
            deposited,
            pmd_t,
            "pgtable_pmd_page_dtor: VM_BUG_ON_PAGE(page->pmd_huge_pte)"
        );
        self.tlb_remove_table(tlb, pmd_t, VirtAddr(start & pud_mask));
    }
}

/// pgd_addr_end()/pud_addr_end()/pmd_addr_end(): the end of the entry of
/// `size` that holds `addr`, or `end` if that comes first (0 is the top).
fn addr_end(addr: u64, end: u64, size: u64) -> u64 {
    let boundary = addr.wrapping_add(size) & !(size - 1);
    if boundary.wrapping_sub(1) < end.wrapping_sub(1) {
        boundary
    } else {
        end
    }
}

/// The test at the end of free_pmd_range()/free_pud_range(), mm/memory.c,
/// v5.8: the table that maps `start` (rounded down by `mask`) is freed only
/// if `[floor, ceiling)` covers it.
fn frees_table(start: u64, end: u64, floor: u64, ceiling: u64, mask: u64) -> bool {
    if start & mask < floor {
        return false;
    }
    let mut ceiling = ceiling;
    if ceiling != 0 {
        ceiling &= mask;
        if ceiling == 0 {
            return false;
        }
    }
    end.wrapping_sub(1) <= ceiling.wrapping_sub(1)
}

/// assert_spin_locked().
fn vm_assert_locked<E: Engine>(cpu: &Cpu<E>, lock: &SpinLock<E>) {
    crate::vm_bug_on!(
        cpu,
        !lock.is_locked(),
        "assert_spin_locked(pmd_lockptr(mm, pmdp))"
    );
}

#[cfg(test)]
mod tests {
    use crate::check::audit::audit;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::pgtable::{Pmd, Pte};
    use crate::rmap::TtuFlags;
    use crate::types::{CpuId, Geometry, VirtAddr};
    use crate::{Config, Cpu, Kernel, StdEngine};

    /// free_pgtables() frees a table only when the hole between the
    /// neighbouring VMAs covers it (5.8's floor/ceiling rule): munmap of the
    /// middle of three PMD-sized VMAs frees its PTE table and keeps the PMD
    /// table the others use; exit frees every table and every frame comes back.
    #[test]
    fn free_pgtables_frees_what_the_hole_covers() {
        use crate::ThpPolicy;
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let mut cfg = Config::new(geo);
            cfg.thp = ThpPolicy::Never;
            let cpu = Cpu::new(Kernel::<StdEngine>::new(cfg), CpuId(0));
            let free_at_boot = cpu.k.mem.nr_free();
            let mm = cpu.mm_alloc();
            let pmd = geo.pmd_size();
            let a = cpu
                .do_mmap(&mm, 3 * pmd, Prot::ReadWrite, pmd)
                .expect("mmap");
            for i in 0..3 {
                cpu.user_access(&mm, a.add_bytes(i * pmd), Access::Write(7))
                    .expect("write");
            }
            // The middle third becomes its own VMA (mprotect splits it off).
            cpu.do_mprotect(&mm, a.add_bytes(pmd), pmd, Prot::Read)
                .expect("mprotect");
            let table_of = |addr: VirtAddr| match cpu.pmd_read(cpu.pmd_offset(&mm, addr).unwrap()) {
                Pmd::Table(t) => Some(t),
                _ => None,
            };
            let middle = table_of(a.add_bytes(pmd)).expect("a PTE table");
            let pmd_table = cpu.pmd_offset(&mm, a).unwrap().table;
            cpu.do_munmap(&mm, a.add_bytes(pmd), pmd).expect("munmap");
            assert_eq!(
                table_of(a.add_bytes(pmd)),
                None,
                "the PTE table is unhooked"
            );
            assert!(cpu.k.mem.is_free(middle), "the hole's PTE table is freed");
            assert!(table_of(a).is_some() && table_of(a.add_bytes(2 * pmd)).is_some());
            assert!(
                !cpu.k.mem.is_free(pmd_table),
                "the PMD table others use stays"
            );
            assert_eq!(cpu.user_load(&mm, a, 1).expect("read"), vec![7]);
            cpu.mmput(&mm);
            assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
            assert!(cpu.k.mem.is_free(pmd_table), "exit frees the PMD table");
            // Every frame is back (the model's PGD is no frame).
            assert_eq!(cpu.k.mem.nr_free(), free_at_boot, "{}", geo.name);
        }
    }

    /// fork while a PTE-mapped THP is frozen to migration entries (what
    /// unmap_page() leaves for split_huge_page()): copy_one_pte() copies the
    /// entries read-only and takes no reference and no mapcount, so the THP
    /// stays unmapped for the splitter, and remove_migration_ptes() restores
    /// both processes' PTEs with their counts.
    #[test]
    fn fork_copies_a_migration_entry_without_reference_or_mapcount() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let k = Kernel::<StdEngine>::new(Config::new(geo));
            let cpu = Cpu::new(k.clone(), CpuId(0));
            let splitter = Cpu::new(k, CpuId(1));
            let (ps, pmd) = (geo.page_size(), geo.pmd_size());
            let mm = cpu.mm_alloc();
            let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
            for i in 0..geo.hpage_pmd_nr() {
                cpu.user_access(&mm, a.add_bytes(i * ps), Access::Write(0x11))
                    .expect("write");
            }
            // PTE-map the THP: munmap one subpage (queues it for deferred split).
            cpu.do_munmap(&mm, a.add_bytes(ps), ps).expect("munmap");
            let head = cpu.page_info(&mm, a).pfn.expect("mapped");
            assert!(cpu.page_trans_huge(head));
            // What deferred_split_scan() -> split_huge_page_to_list() ->
            // unmap_page() does on another CPU: a reference, the page lock,
            // every PTE frozen to a migration entry.
            // (The anon_vma lock is dropped around the fork here so that one
            // thread can run both: anon_vma_fork() takes it.)
            splitter.get_page(head);
            splitter.lock_page(head);
            let av = splitter.page_get_anon_vma(head).expect("anon_vma");
            splitter.anon_vma_lock_write(av);
            let flags = TtuFlags {
                ignore_mlock: true,
                ignore_access: true,
                rmap_locked: true,
                split_huge_pmd: true,
                split_freeze: true,
                sync: true,
                ..TtuFlags::default()
            };
            assert!(splitter.try_to_unmap(head, flags), "unmapped");
            splitter.anon_vma_unlock_write(av);
            let count = cpu.page_count(head);
            assert_eq!(cpu.total_mapcount(head), 0);

            let child = cpu.dup_mm(&mm).expect("fork");
            assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
            assert_eq!(cpu.total_mapcount(head), 0, "fork added a mapcount");
            assert_eq!(cpu.page_count(head), count, "fork took a reference");
            for (m, addr) in [(&mm, a), (&child, a), (&child, a.add_bytes(2 * ps))] {
                let pmd = cpu.pmd_offset(m, addr).expect("pmd");
                let pte = cpu.pte_offset(cpu.pmd_read(pmd), addr).expect("pte");
                let v = cpu.pte_read(pte);
                assert!(matches!(v, Pte::Migration { write: false, .. }), "{v:?}");
            }
            // remap_page(): both processes map the THP again.
            splitter.anon_vma_lock_write(av);
            splitter.remove_migration_ptes(head, head, true);
            splitter.anon_vma_unlock_write(av);
            splitter.put_anon_vma(av);
            splitter.unlock_page(head);
            splitter.put_page(head);
            assert_eq!(cpu.page_mapcount(head), 2);
            assert_eq!(cpu.page_mapcount(head.add(2)), 2);
            let v = audit(&cpu);
            assert!(v.is_empty(), "audit after the remap: {v:?}");
            assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
            let b = cpu.user_load(&child, a.add_bytes(2 * ps), 1).expect("read");
            assert_eq!(b, vec![0x11]);
        }
    }

    /// A write fault that reuses the page (wp_page_reuse(), and
    /// do_huge_pmd_wp_page() for a THP) flushes no TLB, as on x86: another CPU
    /// keeps its read-only translation, and its next write takes a spurious
    /// fault that finds the entry writable and changes nothing else.
    #[test]
    fn a_reuse_leaves_other_cpus_a_spurious_fault() {
        use crate::kernel::TraceEvent;
        for geo in [Geometry::TINY, Geometry::X86_64] {
            // A base page (a one-page mapping cannot be a THP) and a THP.
            for len in [geo.page_size(), geo.pmd_size()] {
                let k = Kernel::<StdEngine>::new(Config::new(geo));
                let (cpu0, cpu1) = (Cpu::new(k.clone(), CpuId(0)), Cpu::new(k, CpuId(1)));
                let mm = cpu0.mm_alloc();
                let a = cpu0
                    .do_mmap(&mm, len, Prot::ReadWrite, geo.pmd_size())
                    .expect("mmap");
                cpu0.user_access(&mm, a, Access::Write(1)).expect("write");
                let child = cpu0.dup_mm(&mm).expect("fork");
                // CPU 1 caches a read-only translation of the shared page.
                assert_eq!(cpu1.user_access(&mm, a, Access::Read), Ok(1));
                cpu0.mmput(&child);
                let page = cpu0.page_info(&mm, a).pfn.expect("mapped");
                // CPU 0's write reuses the page: nobody else maps it now.
                cpu0.user_access(&mm, a, Access::Write(2)).expect("reuse");
                assert_eq!(cpu0.page_info(&mm, a).pfn, Some(page), "reused");
                let vpn = geo.vpn(a);
                let cached = |c: &Cpu<StdEngine>| {
                    c.k.tlbs[c.id.0]
                        .lock()
                        .unwrap()
                        .entries()
                        .into_iter()
                        .find(|((m, v), _)| *m == mm.id && *v == vpn)
                        .map(|(_, e)| e.write)
                };
                assert_eq!(cached(&cpu1), Some(false), "CPU 1's entry was flushed");
                let v = audit(&cpu0);
                assert!(v.is_empty(), "a stale read-only entry is allowed: {v:?}");
                // CPU 1 writes: a spurious fault, then the write goes through.
                cpu1.k.set_tracing(true);
                cpu1.user_access(&mm, a, Access::Write(3)).expect("write");
                cpu1.k.set_tracing(false);
                let entered: Vec<_> = cpu1
                    .k
                    .take_trace()
                    .into_iter()
                    .filter_map(|r| match r.event {
                        TraceEvent::Enter(f) => Some(f),
                        TraceEvent::Note(_) => None,
                    })
                    .collect();
                assert!(entered.contains(&"do_user_addr_fault"), "{entered:?}");
                assert!(
                    !entered.iter().any(|f| f.contains("wp_page")),
                    "the handler found the entry writable: {entered:?}"
                );
                assert_eq!(cached(&cpu1), Some(true));
                assert_eq!(cpu0.page_info(&mm, a).pfn, Some(page));
                assert_eq!(cpu0.user_access(&mm, a, Access::Read), Ok(3));
                let v = audit(&cpu0);
                assert!(v.is_empty(), "{v:?}");
                assert!(cpu0.k.reports().is_empty(), "{:?}", cpu0.k.reports());
            }
        }
    }
}
