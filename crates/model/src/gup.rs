//! get_user_pages() and pin_user_pages(): mm/gup.c.
//!
//! Models (v5.8):
//! - the references GUP takes: `try_get_compound_head`,
//!   `try_grab_compound_head`, `try_grab_page` (FOLL_GET: one reference;
//!   FOLL_PIN: GUP_PIN_COUNTING_BIAS references on a base page, or one
//!   reference plus one in the exact pin count `hpage_pinned_refcount` of a
//!   compound page of order > 1, `hpage_pincount_available`),
//!   `put_compound_head`, `unpin_user_page(s)`, `page_maybe_dma_pinned`;
//! - the slow path: `follow_page_mask` (`follow_pmd_mask`, `follow_page_pte`,
//!   and `follow_trans_huge_pmd` in huge_memory.rs, with the huge zero page),
//!   `follow_page`, `no_page_table`, `faultin_page`, `check_vma_flags`,
//!   `__get_user_pages` with 5.8's `should_force_cow_break()` (17839856fd58:
//!   a GUP of a COW mapping faults for write, so the page it returns is the
//!   caller's own), `__get_user_pages_locked`, `__gup_longterm_locked`,
//!   `pin_user_pages`, and mlock's `populate_vma_page_range` and
//!   `__mm_populate` (FOLL_MLOCK: follow_page_pte() and
//!   follow_trans_huge_pmd() mlock what they find);
//! - GUP-fast: `internal_get_user_pages_fast` with interrupts disabled around
//!   the lockless walk `gup_pgd_range` → `gup_pud_range` → `gup_pmd_range` →
//!   `gup_huge_pmd` / `gup_pte_range` (read the entry, take the reference
//!   speculatively, read the entry again, back out if it changed), the fall
//!   back to the slow path (`__gup_longterm_unlocked`), and
//!   `pin_user_pages_fast`.
//!
//! Leaves out: hugetlb (`follow_hugetlb_page`, `gup_huge_pud`), devmap and
//! ZONE_DEVICE pages, hugepd, the gate area, FOLL_SPLIT and FOLL_SPLIT_PMD,
//! FOLL_MIGRATION (no caller here sets it), VM_FAULT_RETRY (every fault
//! completes, so `*locked` never drops), FOLL_REMOTE, fatal signals, the
//! long-term pin's CMA migration and DAX check (the model has no CMA or DAX
//! memory, so `check_and_migrate_cma_pages()` returns every page as it is),
//! `arch_make_page_accessible()` (s390 only), the NR_FOLL_PIN_* counters.
//!
//! # Locking
//! The slow path runs with `mmap_lock` held for read by its caller
//! (`pin_user_pages()`) or takes it (`__gup_longterm_unlocked()`); it takes the
//! PMD lock or the PTE lock to look at an entry, and faults through
//! handle_mm_fault(). GUP-fast takes no lock: it runs with interrupts
//! disabled, which holds off the TLB shootdown that must precede freeing a
//! page table or a page and splitting a THP (mmu.rs).

use crate::coverage::Mark;
use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::errno::Errno;
use crate::memory::{FaultFlags, VmFault};
use crate::mm_types::{vm, MmStruct, Vma};
use crate::page::pg;
use crate::pgtable::{EntryRef, Pmd, Pte, Upper};
use crate::types::{Level, Pfn, VirtAddr};
use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::sync::Arc;

/// `FOLL_*` flags of get_user_pages() (include/linux/mm.h, v5.8 values).
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FollFlags(u32);

impl FollFlags {
    pub const NONE: FollFlags = FollFlags(0);
    /// Check that the entry is writable (fault for write if not).
    pub const WRITE: FollFlags = FollFlags(0x01);
    /// Mark the page accessed.
    pub const TOUCH: FollFlags = FollFlags(0x02);
    /// Take a reference on the page (get_page()).
    pub const GET: FollFlags = FollFlags(0x04);
    /// An error on a hole that would read as zero (core dumps).
    pub const DUMP: FollFlags = FollFlags(0x08);
    /// Read or write without the VMA's permission.
    pub const FORCE: FollFlags = FollFlags(0x10);
    /// Fault the page in (mlock's populate).
    pub const POPULATE: FollFlags = FollFlags(0x40);
    /// Take NUMA hinting faults (set by __get_user_pages() without FOLL_FORCE).
    pub const NUMA: FollFlags = FollFlags(0x200);
    /// mlock the pages found.
    pub const MLOCK: FollFlags = FollFlags(0x1000);
    /// Internal: a write fault broke COW; a dirty read-only entry will do.
    pub const COW: FollFlags = FollFlags(0x4000);
    /// The pin lasts indefinitely (RDMA, io_uring fixed buffers, VFIO).
    pub const LONGTERM: FollFlags = FollFlags(0x10000);
    /// A pin (pin_user_pages()): released by unpin_user_page().
    pub const PIN: FollFlags = FollFlags(0x40000);
    /// GUP-fast only: no fall back to the slow path.
    pub const FAST_ONLY: FollFlags = FollFlags(0x80000);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: FollFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether any flag of `other` is set.
    pub fn intersects(self, other: FollFlags) -> bool {
        self.0 & other.0 != 0
    }
    /// The flags without those of `other`.
    pub fn without(self, other: FollFlags) -> FollFlags {
        FollFlags(self.0 & !other.0)
    }
}

impl BitOr for FollFlags {
    type Output = FollFlags;
    fn bitor(self, rhs: FollFlags) -> FollFlags {
        FollFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for FollFlags {
    fn bitor_assign(&mut self, rhs: FollFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for FollFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(FollFlags, &str); 12] = [
            (FollFlags::WRITE, "WRITE"),
            (FollFlags::TOUCH, "TOUCH"),
            (FollFlags::GET, "GET"),
            (FollFlags::DUMP, "DUMP"),
            (FollFlags::FORCE, "FORCE"),
            (FollFlags::POPULATE, "POPULATE"),
            (FollFlags::NUMA, "NUMA"),
            (FollFlags::MLOCK, "MLOCK"),
            (FollFlags::COW, "COW"),
            (FollFlags::LONGTERM, "LONGTERM"),
            (FollFlags::PIN, "PIN"),
            (FollFlags::FAST_ONLY, "FAST_ONLY"),
        ];
        let names: Vec<_> = NAMES
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, n)| format!("FOLL_{n}"))
            .collect();
        if names.is_empty() {
            f.write_str("0")
        } else {
            f.write_str(&names.join("|"))
        }
    }
}

/// `GUP_PIN_COUNTING_BIAS` (include/linux/mm.h, v5.8): what one FOLL_PIN adds
/// to the `_refcount` of a page without an exact pin count.
pub const GUP_PIN_COUNTING_BIAS: i64 = 1 << 10;

/// `struct follow_page_context`: what follow_page_mask() found out besides
/// the page.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowPageContext {
    /// `page_mask`: HPAGE_PMD_NR - 1 when a huge PMD maps the address (a
    /// caller without a pages array steps over the whole PMD), else 0.
    pub page_mask: u64,
}

/// What follow_page_mask() returns: `Ok(Some(page))` (a `struct page *`,
/// with a reference if FOLL_GET or FOLL_PIN), `Ok(None)` (NULL: nothing
/// usable is mapped, fault it in) or `Err` (an ERR_PTR()).
pub type Followed = Result<Option<Pfn>, Errno>;

/// What faultin_page() decided.
enum Faultin {
    /// 0: the fault is handled; look the page up again.
    Retry,
    /// -ENOENT: skip this page (mlock of a page that is not present).
    Skip,
    /// Another error: stop.
    Err(Errno),
}

impl<E: Engine> Cpu<E> {
    // ---------------------------------------------------------------------
    // The references: try_grab_page() and friends
    // ---------------------------------------------------------------------

    /// Models hpage_pincount_available(), include/linux/mm.h, v5.8: whether
    /// the page's compound head keeps an exact pin count (a compound page of
    /// order > 1, so the count fits in its third page).
    pub fn hpage_pincount_available(&self, page: Pfn) -> bool {
        let head = self.compound_head(page);
        self.page_compound(head) && self.page(head).compound_order() > 1
    }

    /// Models compound_pincount(), include/linux/mm.h, v5.8.
    pub fn compound_pincount(&self, page: Pfn) -> i64 {
        crate::vm_bug_on_page!(
            self,
            !self.hpage_pincount_available(page),
            page,
            "VM_BUG_ON_PAGE(!hpage_pincount_available(page), page)"
        );
        let head = self.compound_head(page);
        self.page(head).compound_pincount().load_i64()
    }

    /// Models hpage_pincount_add() and hpage_pincount_sub() (a negative
    /// `refs`), mm/gup.c, v5.8.
    fn hpage_pincount_add(&self, page: Pfn, refs: i64) {
        crate::vm_bug_on_page!(
            self,
            !self.hpage_pincount_available(page),
            page,
            "VM_BUG_ON_PAGE(!hpage_pincount_available(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            page != self.compound_head(page),
            page,
            "VM_BUG_ON_PAGE(page != compound_head(page), page)"
        );
        self.page(page).compound_pincount().fetch_add(refs as u64);
    }

    /// Models page_maybe_dma_pinned(), include/linux/mm.h, v5.8: exact for a
    /// compound page of order > 1 (its pin count), fuzzy for a base page (a
    /// `_refcount` of at least GUP_PIN_COUNTING_BIAS). Linux 5.8 calls it
    /// nowhere in mm/ (5.9's fork does, to copy pinned pages).
    pub fn page_maybe_dma_pinned(&self, page: Pfn) -> bool {
        if self.hpage_pincount_available(page) {
            return self.compound_pincount(page) > 0;
        }
        let head = self.compound_head(page);
        (self.page(head).refcount.load() as u32) as i64 >= GUP_PIN_COUNTING_BIAS
    }

    /// Models page_ref_add_unless(page, refs, 0) in
    /// __page_cache_add_speculative(), include/linux/pagemap.h, v5.8 (SMP):
    /// add `refs` unless the count is 0 (the page is being freed, or frozen by
    /// split_huge_page()).
    fn page_cache_add_speculative(&self, head: Pfn, refs: i64) -> bool {
        let rc = &self.page(head).refcount;
        let mut cur = rc.load();
        loop {
            if cur == 0 {
                return false;
            }
            match rc.compare_exchange(cur, cur.wrapping_add(refs as u64)) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        crate::vm_bug_on_page!(
            self,
            self.page_tail(head),
            head,
            "VM_BUG_ON_PAGE(PageTail(page), page)"
        );
        true
    }

    /// Models try_get_compound_head(), mm/gup.c, v5.8: the head with `refs`
    /// more references, or None.
    fn try_get_compound_head(&self, page: Pfn, refs: i64) -> Option<Pfn> {
        let head = self.compound_head(page);
        if self.page(head).refcount.load_i64() < 0 {
            self.warn(
                crate::check::invariants::VM_WARN,
                "WARN_ON_ONCE(page_ref_count(head) < 0)",
                Some(head),
            );
            return None;
        }
        if !self.page_cache_add_speculative(head, refs) {
            return None;
        }
        Some(head)
    }

    /// Models try_grab_compound_head(), mm/gup.c, v5.8: GUP-fast's reference
    /// on the compound head for `refs` subpages: `refs` for FOLL_GET; for
    /// FOLL_PIN `refs` plus as many in the exact pin count, or
    /// `refs * GUP_PIN_COUNTING_BIAS` without one. (FOLL_LONGTERM refuses CMA
    /// pages here; the model has none.)
    pub fn try_grab_compound_head(&self, page: Pfn, refs: i64, flags: FollFlags) -> Option<Pfn> {
        if flags.contains(FollFlags::GET) {
            return self.try_get_compound_head(page, refs);
        }
        if flags.contains(FollFlags::PIN) {
            // When pinning a compound page of order > 1, use an exact count,
            // but be sure to also increment the normal page refcount field at
            // least once, so that the page really is pinned.
            let refs = if self.hpage_pincount_available(page) {
                refs
            } else {
                refs * GUP_PIN_COUNTING_BIAS
            };
            let head = self.try_get_compound_head(page, refs)?;
            if self.hpage_pincount_available(head) {
                self.hpage_pincount_add(head, refs);
            }
            return Some(head);
        }
        self.warn(crate::check::invariants::VM_WARN, "WARN_ON_ONCE(1)", None);
        None
    }

    /// Models try_get_page(), include/linux/mm.h, v5.8.
    fn try_get_page(&self, page: Pfn) -> bool {
        let head = self.compound_head(page);
        if self.page(head).refcount.load_i64() <= 0 {
            self.warn(
                crate::check::invariants::VM_WARN,
                "WARN_ON_ONCE(page_ref_count(page) <= 0)",
                Some(head),
            );
            return false;
        }
        self.page(head).refcount.fetch_add(1);
        true
    }

    /// Models try_grab_page(), mm/gup.c, v5.8: the slow path's reference,
    /// taken under the page-table lock: one for FOLL_GET; for FOLL_PIN one
    /// plus one in the exact pin count, or GUP_PIN_COUNTING_BIAS. True also
    /// when neither flag asks for anything.
    pub fn try_grab_page(&self, page: Pfn, flags: FollFlags) -> bool {
        crate::vm_warn_on!(
            self,
            flags.contains(FollFlags::GET | FollFlags::PIN),
            Some(page),
            "WARN_ON_ONCE((flags & (FOLL_GET | FOLL_PIN)) == (FOLL_GET | FOLL_PIN))"
        );
        if flags.contains(FollFlags::GET) {
            return self.try_get_page(page);
        }
        if flags.contains(FollFlags::PIN) {
            let head = self.compound_head(page);
            if self.page(head).refcount.load_i64() <= 0 {
                self.warn(
                    crate::check::invariants::VM_WARN,
                    "WARN_ON_ONCE(page_ref_count(page) <= 0)",
                    Some(head),
                );
                return false;
            }
            let refs = if self.hpage_pincount_available(head) {
                self.hpage_pincount_add(head, 1);
                1
            } else {
                GUP_PIN_COUNTING_BIAS
            };
            self.page_ref_add(head, refs);
        }
        true
    }

    /// Models put_compound_head(), mm/gup.c, v5.8: GUP-fast backs out of
    /// `refs` references it took on `head`.
    pub fn put_compound_head(&self, head: Pfn, refs: i64, flags: FollFlags) {
        let mut refs = refs;
        if flags.contains(FollFlags::PIN) {
            if self.hpage_pincount_available(head) {
                self.hpage_pincount_add(head, -refs);
            } else {
                refs *= GUP_PIN_COUNTING_BIAS;
            }
        }
        crate::vm_bug_on_page!(
            self,
            self.page(head).refcount.load_i64() < refs,
            head,
            "VM_BUG_ON_PAGE(page_ref_count(page) < refs, page)"
        );
        // Calling put_page() for each ref is unnecessarily slow. Only the last
        // ref needs a put_page().
        if refs > 1 {
            self.page_ref_add(head, -(refs - 1));
        }
        self.put_page(head);
    }

    /// Models unpin_user_page(), mm/gup.c, v5.8: releases one FOLL_PIN pin of
    /// `page`; the last reference frees it.
    pub fn unpin_user_page(&self, page: Pfn) {
        let _f = self.func("unpin_user_page");
        let head = self.compound_head(page);
        let refs = if self.hpage_pincount_available(head) {
            self.hpage_pincount_add(head, -1);
            1
        } else {
            GUP_PIN_COUNTING_BIAS
        };
        // page_ref_sub_and_test()
        let new = self.page(head).refcount.add_return(-refs);
        crate::vm_bug_on_page!(
            self,
            new < 0,
            head,
            "VM_BUG_ON_PAGE(page_ref_count(page) < 0, page)"
        );
        if new == 0 {
            self.__put_page(head);
        }
    }

    /// Models unpin_user_pages(), mm/gup.c, v5.8.
    pub fn unpin_user_pages(&self, pages: &[Pfn]) {
        for &p in pages {
            self.unpin_user_page(p);
        }
    }

    // ---------------------------------------------------------------------
    // The slow path: follow_page_mask()
    // ---------------------------------------------------------------------

    /// Models no_page_table(), mm/gup.c, v5.8: NULL, so the caller faults the
    /// page in, except that a core dump (FOLL_DUMP) of anonymous memory gets
    /// -EFAULT for a hole that would read as zero.
    fn no_page_table(&self, vma: &Vma, flags: FollFlags) -> Followed {
        if flags.contains(FollFlags::DUMP) && vma.is_anonymous() {
            return Err(Errno::Efault);
        }
        Ok(None)
    }

    /// Models can_follow_write_pte(), mm/gup.c, v5.8: a writable entry, or a
    /// dirty one after a write fault broke COW (FOLL_COW).
    fn can_follow_write_pte(pte: Pte, flags: FollFlags) -> bool {
        pte.is_write() || (flags.contains(FollFlags::COW) && pte.flags().dirty)
    }

    /// Models should_force_cow_break(), mm/gup.c, v5.8 (17839856fd58): a GUP
    /// that takes a reference (FOLL_GET or FOLL_PIN) of a COW mapping faults
    /// for write even to read, so COW can no longer break the other way and
    /// leave it with a page another process maps (5.9 reverted this for the
    /// page_count() rule of do_wp_page()).
    pub fn should_force_cow_break(vma: &Vma, flags: FollFlags) -> bool {
        vma.is_cow_mapping() && flags.intersects(FollFlags::GET | FollFlags::PIN)
    }

    /// Models follow_page_pte(), mm/gup.c, v5.8: the page a PTE maps, under
    /// the PTE lock, with the reference the flags ask for. With FOLL_MLOCK in
    /// a VM_LOCKED VMA it mlocks a base page (never a PTE-mapped THP).
    ///
    /// # Locking
    /// Takes the PTE lock (pte_offset_map_lock()); trylocks the page to
    /// mlock it.
    fn follow_page_pte(
        &self,
        vma: &Arc<Vma>,
        address: VirtAddr,
        pmdval: Pmd,
        flags: FollFlags,
    ) -> Followed {
        let _f = self.func("follow_page_pte");
        // FOLL_GET and FOLL_PIN are mutually exclusive.
        if flags.contains(FollFlags::PIN | FollFlags::GET) {
            self.warn(
                crate::check::invariants::VM_WARN,
                "WARN_ON_ONCE((flags & (FOLL_PIN | FOLL_GET)) == (FOLL_PIN | FOLL_GET))",
                None,
            );
            return Err(Errno::Einval);
        }
        // pmd_bad(): the caller saw a page table; mmap_lock keeps it there.
        let Some(ptep) = self.pte_offset(pmdval, address) else {
            return self.no_page_table(vma, flags);
        };
        let ptl = self.pte_lockptr(ptep.table).lock(self);
        let pte = self.pte_read(ptep);
        let no_page = |ptl| {
            drop(ptl);
            if !pte.is_none() {
                return Ok(None);
            }
            self.no_page_table(vma, flags)
        };
        let Pte::Present { pfn, flags: pf } = pte else {
            // Not present (swap or migration entry; FOLL_MIGRATION is not
            // set by any caller modelled).
            return no_page(ptl);
        };
        if flags.contains(FollFlags::NUMA) && pf.protnone {
            return no_page(ptl);
        }
        if flags.contains(FollFlags::WRITE) && !Self::can_follow_write_pte(pte, flags) {
            drop(ptl);
            self.note(|| "follow_page_pte(): not writable: fault for write".to_string());
            return Ok(None);
        }
        let page = match self.vm_normal_page(pte) {
            Some(p) => p,
            None => {
                if flags.contains(FollFlags::DUMP) {
                    // Avoid special (like zero) pages in core dumps.
                    return Err(Errno::Efault);
                }
                if !self.is_zero_pfn(pfn) {
                    self.unmodelled("follow_pfn_pte(): a special mapping", Some(pfn));
                }
                pfn
            }
        };
        // try_grab_page() does nothing unless FOLL_GET or FOLL_PIN is set.
        if !self.try_grab_page(page, flags) {
            return Err(Errno::Enomem);
        }
        if flags.contains(FollFlags::TOUCH) {
            if flags.contains(FollFlags::WRITE)
                && !pf.dirty
                && !self.page(self.compound_head(page)).test_flag(pg::DIRTY)
            {
                // set_page_dirty()
                self.page(self.compound_head(page)).set_flag(pg::DIRTY);
            }
            self.mark_page_accessed(page);
        }
        if flags.contains(FollFlags::MLOCK) && vma.vm_flags() & vm::LOCKED != 0 {
            // Do not mlock pte-mapped THP. The preliminary mapping check
            // avoids lock_page() on the zero page; a page already locked is
            // left to vmscan.
            if !self.page_trans_compound(page)
                && self.page(page).mapping.load() != 0
                && self.trylock_page(page)
            {
                // lru_add_drain(): the model's LRU has no per-CPU batches.
                self.mlock_vma_page(page);
                self.unlock_page(page);
            }
        }
        drop(ptl);
        Ok(Some(page))
    }

    /// Models mark_page_accessed(), mm/swap.c, v5.8, for what the model keeps
    /// of the LRU: PG_referenced (the active list is not modelled).
    fn mark_page_accessed(&self, page: Pfn) {
        let head = self.compound_head(page);
        if !self.page(head).test_flag(pg::REFERENCED) {
            self.page(head).set_flag(pg::REFERENCED);
        }
    }

    /// Models follow_page_mask() with follow_p4d_mask(), follow_pud_mask() and
    /// follow_pmd_mask(), mm/gup.c, v5.8: walks to the entry mapping `address`
    /// and returns its page (follow_page_pte(), or follow_trans_huge_pmd()
    /// under the PMD lock for a huge PMD).
    ///
    /// # Locking
    /// Called with `mmap_lock` held; takes the PMD lock or the PTE lock.
    pub fn follow_page_mask(
        &self,
        vma: &Arc<Vma>,
        mm: &MmStruct<E>,
        address: VirtAddr,
        flags: FollFlags,
        ctx: &mut FollowPageContext,
    ) -> Followed {
        let _f = self.func("follow_page_mask");
        let g = self.k.geo;
        ctx.page_mask = 0;
        // follow_huge_addr(): none on x86. p4d is folded.
        let Upper::Table(pud_t) = Upper::decode(mm.pgd.raw(g.index(Level::Pgd, address)).load())
        else {
            return self.no_page_table(vma, flags);
        };
        let Upper::Table(pmd_t) =
            Upper::decode(self.table(pud_t).raw(g.index(Level::Pud, address)).load())
        else {
            return self.no_page_table(vma, flags);
        };
        let pmd = EntryRef {
            table: pmd_t,
            index: g.index(Level::Pmd, address),
        };
        // follow_pmd_mask(): the READ_ONCE() will stabilize the pmdval.
        let pmdval = self.pmd_read(pmd);
        if pmdval.is_none() {
            return self.no_page_table(vma, flags);
        }
        // pmd_huge() (a huge or a non-present entry) of a hugetlb VMA.
        if vma.is_hugetlb() && matches!(pmdval, Pmd::Huge { .. } | Pmd::Migration { .. }) {
            if let Some(page) = self.follow_huge_pmd(mm, address, pmd, flags) {
                return Ok(Some(page));
            }
            return self.no_page_table(vma, flags);
        }
        if !pmdval.is_present() {
            // A migration entry; FOLL_MIGRATION is not set.
            return self.no_page_table(vma, flags);
        }
        if !pmdval.is_trans_huge() {
            return self.follow_page_pte(vma, address, pmdval, flags);
        }
        if flags.contains(FollFlags::NUMA) && pmdval.flags().protnone {
            return self.no_page_table(vma, flags);
        }
        // retry_locked:
        let ptl = self.pmd_lockptr(pmd).lock(self);
        let cur = self.pmd_read(pmd);
        if cur.is_none() {
            drop(ptl);
            return self.no_page_table(vma, flags);
        }
        if !cur.is_present() {
            drop(ptl);
            return self.no_page_table(vma, flags);
        }
        if !cur.is_trans_huge() {
            drop(ptl);
            return self.follow_page_pte(vma, address, cur, flags);
        }
        let page = self.follow_trans_huge_pmd(vma, address, pmd, cur, flags);
        drop(ptl);
        ctx.page_mask = g.hpage_pmd_nr() - 1;
        page
    }

    /// Models follow_page(), mm/gup.c, v5.8: the page mapped at `address` in
    /// `vma` (with a reference for FOLL_GET).
    ///
    /// # Locking
    /// Called with `mmap_lock` held; takes the PMD lock or the PTE lock.
    pub fn follow_page(&self, vma: &Arc<Vma>, address: VirtAddr, flags: FollFlags) -> Followed {
        let _f = self.func("follow_page");
        let mm = self.k.mm(vma.mm);
        let mut ctx = FollowPageContext::default();
        self.follow_page_mask(vma, &mm, address, flags, &mut ctx)
    }

    // ---------------------------------------------------------------------
    // The slow path: __get_user_pages()
    // ---------------------------------------------------------------------

    /// Models faultin_page(), mm/gup.c, v5.8: fault the page in (for write
    /// with FOLL_WRITE) and tell the caller to look it up again. A write
    /// fault that broke COW in a VMA without VM_WRITE sets FOLL_COW, so the
    /// dirty read-only entry it leaves will do.
    fn faultin_page(
        &self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        address: VirtAddr,
        flags: &mut FollFlags,
    ) -> Faultin {
        let _f = self.func("faultin_page");
        // mlock all present pages, but do not fault in new pages.
        if flags.intersects(FollFlags::POPULATE | FollFlags::MLOCK)
            && !flags.contains(FollFlags::POPULATE)
        {
            return Faultin::Skip;
        }
        let write = flags.contains(FollFlags::WRITE);
        let ret = self.handle_mm_fault(&VmFault::new(
            mm.clone(),
            vma.clone(),
            address,
            FaultFlags { write },
        ));
        // VM_FAULT_ERROR: vm_fault_to_errno().
        if ret.oom() {
            return Faultin::Err(Errno::Enomem);
        }
        if ret.sigbus() || ret.sigsegv() {
            return Faultin::Err(Errno::Efault);
        }
        // The VM_FAULT_WRITE bit tells us that do_wp_page has broken COW when
        // necessary, even if maybe_mkwrite decided not to set pte_write.
        if ret.write() && vma.vm_flags() & vm::WRITE == 0 {
            *flags |= FollFlags::COW;
        }
        Faultin::Retry
    }

    /// Models check_vma_flags(), mm/gup.c, v5.8: -EFAULT unless the VMA allows
    /// the access (FOLL_FORCE relaxes it; no VMA is VM_IO or VM_PFNMAP here).
    pub(crate) fn check_vma_flags(vma: &Vma, gup_flags: FollFlags) -> Result<(), Errno> {
        let vm_flags = vma.vm_flags();
        if gup_flags.contains(FollFlags::WRITE) {
            if vm_flags & vm::WRITE == 0 {
                if !gup_flags.contains(FollFlags::FORCE) {
                    return Err(Errno::Efault);
                }
                if !vma.is_cow_mapping() {
                    return Err(Errno::Efault);
                }
            }
        } else if vm_flags & vm::READ == 0 {
            if !gup_flags.contains(FollFlags::FORCE) {
                return Err(Errno::Efault);
            }
            if vm_flags & vm::MAYREAD == 0 {
                return Err(Errno::Efault);
            }
        }
        Ok(())
    }

    /// Models __get_user_pages(), mm/gup.c, v5.8: for each page of `[start,
    /// start + nr_pages pages)`, look it up (follow_page_mask()) and fault it
    /// in until the lookup succeeds. Returns the number of pages done (their
    /// references in `pages`), which may be fewer than asked, or the error
    /// that stopped the first page.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read.
    #[allow(clippy::too_many_arguments)]
    pub fn __get_user_pages(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        gup_flags: FollFlags,
        mut pages: Option<&mut Vec<Pfn>>,
        mut vmas: Option<&mut Vec<Arc<Vma>>>,
    ) -> Result<u64, Errno> {
        let _f = self.func("__get_user_pages");
        if nr_pages == 0 {
            return Ok(0);
        }
        crate::vm_bug_on!(
            self,
            pages.is_some() != gup_flags.intersects(FollFlags::GET | FollFlags::PIN),
            "VM_BUG_ON(!!pages != !!(gup_flags & (FOLL_GET | FOLL_PIN)))"
        );
        let ps = self.k.geo.page_size();
        let mut gup_flags = gup_flags;
        // If FOLL_FORCE is set then do not force a full fault as the hinting
        // fault information is unrelated to the reference behaviour of a task
        // using the address space.
        if !gup_flags.contains(FollFlags::FORCE) {
            gup_flags |= FollFlags::NUMA;
        }
        let mut start = start;
        let mut nr_pages = nr_pages;
        let mut i = 0u64;
        let mut vma: Option<Arc<Vma>> = None;
        let mut ctx = FollowPageContext::default();
        let ret: Result<(), Errno> = 'out: loop {
            let mut foll_flags = gup_flags;
            // First iteration or cross vma bound.
            let v = match &vma {
                Some(v) if start < v.vm_end() => v.clone(),
                _ => {
                    // find_extend_vma(): no stack VMAs to extend here.
                    let found = mm.find_vma(start).filter(|v| v.vm_start() <= start);
                    let Some(v) = found else {
                        self.mark(Mark::gives_up("__get_user_pages: EFAULT: no VMA"));
                        break 'out Err(Errno::Efault);
                    };
                    if Self::check_vma_flags(&v, gup_flags).is_err() {
                        self.mark(Mark::gives_up(
                            "__get_user_pages: EFAULT: check_vma_flags()",
                        ));
                        break 'out Err(Errno::Efault);
                    }
                    vma = Some(v.clone());
                    if v.is_hugetlb() {
                        if Self::should_force_cow_break(&v, foll_flags) {
                            foll_flags |= FollFlags::WRITE;
                        }
                        let write = foll_flags.contains(FollFlags::WRITE);
                        let mut grab = |page: Pfn| {
                            if let Some(p) = pages.as_deref_mut() {
                                if !self.try_grab_page(page, foll_flags) {
                                    return false;
                                }
                                p.push(page);
                            }
                            if let Some(vs) = vmas.as_deref_mut() {
                                vs.push(v.clone());
                            }
                            true
                        };
                        match self.follow_hugetlb_page(
                            mm,
                            &v,
                            &mut start,
                            &mut nr_pages,
                            write,
                            &mut grab,
                        ) {
                            Ok(n) => i += n,
                            Err(e) if i == 0 => break 'out Err(e),
                            Err(_) => {}
                        }
                        if nr_pages == 0 {
                            break Ok(());
                        }
                        continue;
                    }
                    v
                }
            };
            if Self::should_force_cow_break(&v, foll_flags) {
                foll_flags |= FollFlags::WRITE;
            }
            // retry:
            let found = loop {
                match self.follow_page_mask(&v, mm, start, foll_flags, &mut ctx) {
                    Ok(None) => match self.faultin_page(mm, &v, start, &mut foll_flags) {
                        Faultin::Retry => continue,
                        Faultin::Skip => break None,
                        Faultin::Err(e) => break 'out Err(e),
                    },
                    Ok(Some(page)) => break Some(page),
                    Err(e) => break 'out Err(e),
                }
            };
            if let Some(page) = found {
                if let Some(p) = pages.as_deref_mut() {
                    p.push(page);
                    // flush_anon_page(), flush_dcache_page(): no-ops on x86.
                    ctx.page_mask = 0;
                }
            }
            // next_page:
            if let Some(vs) = vmas.as_deref_mut() {
                vs.push(v.clone());
                ctx.page_mask = 0;
            }
            let page_increm =
                (1 + (!(start.0 >> self.k.geo.page_shift) & ctx.page_mask)).min(nr_pages);
            i += page_increm;
            start = start.add_bytes(page_increm * ps);
            nr_pages -= page_increm;
            if nr_pages == 0 {
                break Ok(());
            }
        };
        if i > 0 {
            Ok(i)
        } else {
            ret.map(|()| 0)
        }
    }

    /// Models __get_user_pages_locked(), mm/gup.c, v5.8, with `locked` NULL
    /// (every modelled caller): a caller with a pages array that did not ask
    /// for FOLL_PIN gets FOLL_GET.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read.
    fn __get_user_pages_locked(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        pages: Option<&mut Vec<Pfn>>,
        vmas: Option<&mut Vec<Arc<Vma>>>,
        flags: FollFlags,
    ) -> Result<u64, Errno> {
        let mut flags = flags;
        if pages.is_some() && !flags.contains(FollFlags::PIN) {
            flags |= FollFlags::GET;
        }
        self.__get_user_pages(mm, start, nr_pages, flags, pages, vmas)
    }

    /// Models __gup_longterm_locked(), mm/gup.c, v5.8 (CONFIG_CMA): a
    /// FOLL_LONGTERM GUP needs a pages array and records the VMAs; the DAX
    /// check and the CMA migration find nothing to do in the model (no DAX
    /// VMA, no CMA page).
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read.
    fn __gup_longterm_locked(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        pages: Option<&mut Vec<Pfn>>,
        gup_flags: FollFlags,
    ) -> Result<u64, Errno> {
        if gup_flags.contains(FollFlags::LONGTERM) {
            if pages.is_none() {
                return Err(Errno::Einval);
            }
            let mut vmas_tmp = Vec::new();
            // memalloc_nocma_save()/restore(): no CMA.
            return self.__get_user_pages_locked(
                mm,
                start,
                nr_pages,
                pages,
                Some(&mut vmas_tmp),
                gup_flags,
            );
        }
        self.__get_user_pages_locked(mm, start, nr_pages, pages, None, gup_flags)
    }

    /// The check that opens pin_user_pages() and pin_user_pages_fast(),
    /// mm/gup.c, v5.8: FOLL_GET and FOLL_PIN are mutually exclusive
    /// (`WARN_ON_ONCE(gup_flags & FOLL_GET)`, -EINVAL).
    fn pin_flags_ok(&self, gup_flags: FollFlags) -> Result<(), Errno> {
        if gup_flags.contains(FollFlags::GET) {
            self.warn(
                crate::check::invariants::VM_WARN,
                "WARN_ON_ONCE(gup_flags & FOLL_GET)",
                None,
            );
            return Err(Errno::Einval);
        }
        Ok(())
    }

    /// Models pin_user_pages(), mm/gup.c, v5.8: pins `nr_pages` pages from
    /// `start` (FOLL_PIN) into `pages`. Returns how many were pinned (maybe
    /// fewer), or the error of the first.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read (current->mm).
    pub fn pin_user_pages(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        gup_flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> Result<u64, Errno> {
        let _f = self.func("pin_user_pages");
        self.pin_flags_ok(gup_flags)?;
        self.__gup_longterm_locked(mm, start, nr_pages, Some(pages), gup_flags | FollFlags::PIN)
    }

    /// Models populate_vma_page_range(), mm/gup.c, v5.8: fault in (and, in a
    /// VM_LOCKED VMA, mlock) `[start, end)` of one VMA, as mlock() does;
    /// writable private mappings are faulted for write, to break COW now.
    /// Returns the number of pages done.
    ///
    /// # Locking
    /// Called with `mmap_lock` held.
    pub fn populate_vma_page_range(
        &self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> Result<u64, Errno> {
        let _f = self.func("populate_vma_page_range");
        let ps = self.k.geo.page_size();
        let nr_pages = (end.0 - start.0) / ps;
        crate::vm_bug_on!(
            self,
            start.0 & (ps - 1) != 0 || end.0 & (ps - 1) != 0,
            "VM_BUG_ON(start & ~PAGE_MASK) || VM_BUG_ON(end & ~PAGE_MASK)"
        );
        crate::vm_bug_on!(
            self,
            start < vma.vm_start() || end > vma.vm_end(),
            "VM_BUG_ON_VMA(start < vma->vm_start || end > vma->vm_end, vma)"
        );
        let vm_flags = vma.vm_flags();
        let mut gup_flags = FollFlags::TOUCH | FollFlags::POPULATE | FollFlags::MLOCK;
        if vm_flags & vm::LOCKONFAULT != 0 {
            gup_flags = gup_flags.without(FollFlags::POPULATE);
        }
        // We want to touch writable mappings with a write fault in order to
        // break COW, except for shared mappings because these don't COW and
        // we would not want to dirty them for nothing.
        if vm_flags & (vm::WRITE | vm::SHARED) == vm::WRITE {
            gup_flags |= FollFlags::WRITE;
        }
        // We want mlock to succeed for regions that have any permissions
        // other than PROT_NONE.
        if vm_flags & (vm::READ | vm::WRITE | vm::EXEC) != 0 {
            gup_flags |= FollFlags::FORCE;
        }
        self.__get_user_pages(mm, start, nr_pages, gup_flags, None, None)
    }

    /// Models __mm_populate(), mm/gup.c, v5.8: populate every VMA of `[start,
    /// start + len)` (none is VM_IO/VM_PFNMAP here); with `ignore_errors` a
    /// failing VMA is skipped, else its error is returned.
    ///
    /// # Locking
    /// Takes `mmap_lock` for read.
    pub fn __mm_populate(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        len: u64,
        ignore_errors: bool,
    ) -> Result<(), Errno> {
        let _f = self.func("__mm_populate");
        let end = start.add_bytes(len);
        let ps = self.k.geo.page_size();
        let _mmap = mm.mmap_lock.read(self);
        let mut nstart = start;
        while nstart < end {
            // We want to fault in pages for [nstart; end) address range. Find
            // first corresponding VMA.
            let Some(vma) = mm.find_vma(nstart) else {
                break;
            };
            if vma.vm_start() >= end {
                break;
            }
            // Set [nstart; nend) to intersection of desired address range
            // with the first VMA.
            let nend = vma.vm_end().min(end);
            nstart = nstart.max(vma.vm_start());
            // populate_vma_page_range() double checks the vma flags, so that
            // it won't mlock pages if the vma was already munlocked.
            match self.populate_vma_page_range(mm, &vma, nstart, nend) {
                Err(_) if ignore_errors => nstart = nend, // continue at next VMA
                Err(e) => return Err(e),
                Ok(n) => nstart = nstart.add_bytes(n * ps),
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------
    // GUP-fast: the lockless walk
    // ---------------------------------------------------------------------

    /// Models x86's pte_access_permitted() for GUP-fast: present (not
    /// PROT_NONE), user, and writable for a write.
    fn gup_access_permitted(flags: crate::pgtable::PteFlags, write: bool) -> bool {
        !flags.protnone && (!write || flags.write)
    }

    /// Models gup_pte_range(), mm/gup.c, v5.8 (CONFIG_ARCH_HAS_PTE_SPECIAL):
    /// for each PTE of `[addr, end)` under the PMD value `pmd` read by the
    /// caller: read it, take the reference, read it again and back out if it
    /// changed. False when it stops early (the slow path takes over).
    fn gup_pte_range(
        &self,
        pmd: Pmd,
        addr: VirtAddr,
        end: VirtAddr,
        flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> bool {
        let _f = self.func("gup_pte_range");
        let ps = self.k.geo.page_size();
        let write = flags.contains(FollFlags::WRITE);
        let mut addr = addr;
        loop {
            let Some(ptep) = self.pte_offset(pmd, addr) else {
                return false;
            };
            // gup_get_pte(): x86_64 reads a PTE atomically.
            let raw = self.table(ptep.table).raw(ptep.index);
            let v = raw.load();
            let pte = Pte::decode(v);
            let Pte::Present {
                pfn: page,
                flags: pf,
            } = pte
            else {
                self.mark(Mark::gives_up("gup_pte_range: PTE not present"));
                return false;
            };
            // NUMA hinting must take the slow path (pte_protnone()).
            if pf.protnone || !Self::gup_access_permitted(pf, write) {
                self.mark(Mark::gives_up("gup_pte_range: access not permitted"));
                return false;
            }
            if pf.special {
                return false;
            }
            let Some(head) = self.try_grab_compound_head(page, 1, flags) else {
                self.mark(Mark::gives_up(
                    "gup_pte_range: try_grab_compound_head() failed",
                ));
                return false;
            };
            if raw.load() != v {
                self.mark(Mark::gives_up("gup_pte_range: PTE changed, backed out"));
                self.put_compound_head(head, 1, flags);
                return false;
            }
            crate::vm_bug_on_page!(
                self,
                self.compound_head(page) != head,
                page,
                "VM_BUG_ON_PAGE(compound_head(page) != head, page)"
            );
            self.page(head).set_flag(pg::REFERENCED); // SetPageReferenced()
            pages.push(page);
            addr = addr.add_bytes(ps);
            if addr == end {
                return true;
            }
        }
    }

    /// Models gup_huge_pmd(), mm/gup.c, v5.8: a huge PMD `orig` read by the
    /// caller: take the references for the subpages of `[addr, end)` on the
    /// head at once, read the PMD again and back out if it changed.
    #[allow(clippy::too_many_arguments)]
    fn gup_huge_pmd(
        &self,
        orig: Pmd,
        orig_raw: u64,
        pmdp: EntryRef,
        addr: VirtAddr,
        end: VirtAddr,
        flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> bool {
        let _f = self.func("gup_huge_pmd");
        let Pmd::Huge {
            pfn: head_pfn,
            flags: pf,
            invalid,
        } = orig
        else {
            return false;
        };
        // pmd_access_permitted(): an invalidated PMD is not present.
        if invalid || !Self::gup_access_permitted(pf, flags.contains(FollFlags::WRITE)) {
            self.mark(Mark::gives_up("gup_huge_pmd: access not permitted"));
            return false;
        }
        let g = self.k.geo;
        let first = g.index(Level::Pte, addr) as u64;
        // record_subpages()
        let refs = (end.0 - addr.0) / g.page_size();
        let subpages: Vec<Pfn> = (0..refs).map(|i| head_pfn.add(first + i)).collect();
        let Some(head) = self.try_grab_compound_head(head_pfn, refs as i64, flags) else {
            self.mark(Mark::gives_up(
                "gup_huge_pmd: try_grab_compound_head() failed",
            ));
            return false;
        };
        if self.table(pmdp.table).raw(pmdp.index).load() != orig_raw {
            self.mark(Mark::gives_up("gup_huge_pmd: PMD changed, backed out"));
            self.put_compound_head(head, refs as i64, flags);
            return false;
        }
        self.mark(Mark::reached("gup_huge_pmd: THP pinned"));
        pages.extend(subpages);
        self.page(head).set_flag(pg::REFERENCED); // SetPageReferenced()
        true
    }

    /// Models gup_pmd_range(), mm/gup.c, v5.8.
    fn gup_pmd_range(
        &self,
        pmd_t: Pfn,
        addr: VirtAddr,
        end: VirtAddr,
        flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> bool {
        let g = self.k.geo;
        let mut addr = addr;
        loop {
            let pmdp = EntryRef {
                table: pmd_t,
                index: g.index(Level::Pmd, addr),
            };
            let raw = self.table(pmd_t).raw(pmdp.index).load(); // READ_ONCE(*pmdp)
            let pmd = Pmd::decode(raw);
            let next = g.pmd_addr_end(addr, end);
            if !pmd.is_present() {
                return false;
            }
            if pmd.is_trans_huge() {
                // NUMA hinting faults need to be handled in the GUP slowpath.
                if pmd.flags().protnone {
                    return false;
                }
                if !self.gup_huge_pmd(pmd, raw, pmdp, addr, next, flags, pages) {
                    return false;
                }
            } else if !self.gup_pte_range(pmd, addr, next, flags, pages) {
                return false;
            }
            addr = next;
            if addr == end {
                return true;
            }
        }
    }

    /// Models gup_pgd_range() with gup_p4d_range() (p4d folded) and
    /// gup_pud_range(), mm/gup.c, v5.8: the lockless walk of `[addr, end)`,
    /// appending the pages it pinned to `pages` until it stops.
    fn gup_pgd_range(
        &self,
        mm: &MmStruct<E>,
        addr: VirtAddr,
        end: VirtAddr,
        flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) {
        let _f = self.func("gup_pgd_range");
        let g = self.k.geo;
        let span = |shift: u32, a: VirtAddr| {
            let b = (a.0 + (1 << shift)) & !((1u64 << shift) - 1);
            if b.wrapping_sub(1) < end.0.wrapping_sub(1) {
                VirtAddr(b)
            } else {
                end
            }
        };
        let mut addr = addr;
        while addr != end {
            let Upper::Table(pud_t) = Upper::decode(mm.pgd.raw(g.index(Level::Pgd, addr)).load())
            else {
                return;
            };
            let pgd_next = span(g.pgdir_shift(), addr);
            while addr != pgd_next {
                let Upper::Table(pmd_t) =
                    Upper::decode(self.table(pud_t).raw(g.index(Level::Pud, addr)).load())
                else {
                    return;
                };
                let pud_next = span(g.pud_shift(), addr);
                if !self.gup_pmd_range(pmd_t, addr, pud_next, flags, pages) {
                    return;
                }
                addr = pud_next;
            }
        }
    }

    /// Models __gup_longterm_unlocked(), mm/gup.c, v5.8: GUP-fast's fall
    /// back to the slow path, under `mmap_lock` for read.
    ///
    /// # Locking
    /// Takes `mmap_lock` for read.
    fn __gup_longterm_unlocked(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        gup_flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> Result<u64, Errno> {
        let _f = self.func("__gup_longterm_unlocked");
        let _mmap = mm.mmap_lock.read(self);
        if gup_flags.contains(FollFlags::LONGTERM) {
            self.__gup_longterm_locked(mm, start, nr_pages, Some(pages), gup_flags)
        } else {
            // get_user_pages_unlocked(): VM_FAULT_RETRY is not modelled, so
            // the lock is held throughout.
            self.__get_user_pages_locked(
                mm,
                start,
                nr_pages,
                Some(pages),
                None,
                gup_flags | FollFlags::TOUCH,
            )
        }
    }

    /// Models internal_get_user_pages_fast(), mm/gup.c, v5.8: the lockless
    /// walk with interrupts disabled, for write even to read (only entries
    /// that are already writable are safe to use without the COW break of
    /// the slow path), then the slow path for what it did not get.
    ///
    /// # Locking
    /// No lock for the walk (interrupts disabled); the fall back takes
    /// `mmap_lock` for read.
    pub fn internal_get_user_pages_fast(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        gup_flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> Result<u64, Errno> {
        let _f = self.func("internal_get_user_pages_fast");
        let allowed = FollFlags::WRITE
            | FollFlags::LONGTERM
            | FollFlags::FORCE
            | FollFlags::PIN
            | FollFlags::GET
            | FollFlags::FAST_ONLY;
        if gup_flags.without(allowed) != FollFlags::NONE {
            self.warn(
                crate::check::invariants::VM_WARN,
                "WARN_ON_ONCE(gup_flags & ~(FOLL_WRITE | FOLL_LONGTERM | FOLL_FORCE | FOLL_PIN | FOLL_GET | FOLL_FAST_ONLY))",
                None,
            );
            return Err(Errno::Einval);
        }
        let g = self.k.geo;
        let start = g.page_align_down(start);
        let len = nr_pages << g.page_shift;
        let end = start.0.wrapping_add(len);
        if end <= start.0 {
            return Ok(0);
        }
        // access_ok()
        if end > g.task_size() {
            return Err(Errno::Efault);
        }
        // The FAST_GUP case requires FOLL_WRITE even for pure reads, because
        // get_user_pages() may need to cause an early COW in order to avoid
        // confusing the normal COW routines.
        let mut fast_flags = gup_flags;
        if !gup_flags.contains(FollFlags::FAST_ONLY) {
            fast_flags |= FollFlags::WRITE;
        }
        let before = pages.len();
        {
            let _irq = self.local_irq_save();
            self.gup_pgd_range(mm, start, VirtAddr(end), fast_flags, pages);
        }
        let nr_pinned = (pages.len() - before) as u64;
        self.note(|| format!("gup_pgd_range(): {nr_pinned} of {nr_pages} pages"));
        if nr_pinned == nr_pages || gup_flags.contains(FollFlags::FAST_ONLY) {
            return Ok(nr_pinned);
        }
        // Try to get the remaining pages with get_user_pages.
        self.mark(Mark::reached(
            "internal_get_user_pages_fast: fall back to the slow path",
        ));
        let rest = self.__gup_longterm_unlocked(
            mm,
            start.add_bytes(nr_pinned << g.page_shift),
            nr_pages - nr_pinned,
            gup_flags,
            pages,
        );
        // Have to be a bit careful with return values.
        if nr_pinned > 0 {
            Ok(match rest {
                Err(_) => nr_pinned,
                Ok(n) => n + nr_pinned,
            })
        } else {
            rest
        }
    }

    /// Models pin_user_pages_fast(), mm/gup.c, v5.8: pin_user_pages() through
    /// the lockless walk first.
    ///
    /// # Locking
    /// As internal_get_user_pages_fast(): called without `mmap_lock`.
    pub fn pin_user_pages_fast(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        gup_flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> Result<u64, Errno> {
        let _f = self.func("pin_user_pages_fast");
        self.pin_flags_ok(gup_flags)?;
        self.internal_get_user_pages_fast(mm, start, nr_pages, gup_flags | FollFlags::PIN, pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::audit::{audit, audit_pinned};
    use crate::check::invariants as inv;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::task_mmu::MapKind;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Kernel, StdEngine, ThpPolicy};

    type E = StdEngine;

    use crate::testing::machine;

    fn fill(cpu: &Cpu<E>, mm: &Arc<MmStruct<E>>, a: VirtAddr, v: u8) {
        let g = cpu.k.geo;
        for i in 0..g.hpage_pmd_nr() {
            cpu.user_fill(mm, a.add_bytes(i * g.page_size()), g.page_size(), v)
                .expect("write");
        }
    }

    fn pin(cpu: &Cpu<E>, mm: &Arc<MmStruct<E>>, a: VirtAddr, n: u64, flags: FollFlags) -> Vec<Pfn> {
        let mut pages = Vec::new();
        let _mmap = mm.mmap_lock.read(cpu);
        let got = cpu.pin_user_pages(mm, a, n, flags, &mut pages);
        assert_eq!(got, Ok(n), "{flags:?}");
        pages
    }

    const LONGTERM_WRITE: FollFlags = FollFlags(FollFlags::WRITE.0 | FollFlags::LONGTERM.0);

    /// A pin of a base page adds GUP_PIN_COUNTING_BIAS; it outlives the
    /// process; the unpin after exit frees the page.
    #[test]
    fn a_base_page_pin_adds_the_bias_and_outlives_its_process() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let (cpu, mm, a) = machine(geo, ThpPolicy::Never);
            cpu.user_access(&mm, a, Access::Write(1)).expect("write");
            let pages = pin(&cpu, &mm, a, 1, LONGTERM_WRITE);
            let page = pages[0];
            assert_eq!(cpu.page_info(&mm, a).pfn, Some(page));
            assert_eq!(cpu.page_count(page), 1 + GUP_PIN_COUNTING_BIAS);
            assert!(cpu.page_maybe_dma_pinned(page));
            assert!(!cpu.hpage_pincount_available(page));
            assert!(audit_pinned(&cpu, &pages).is_empty());
            // Without the pins the audit sees references nobody holds.
            assert!(audit(&cpu).iter().any(|v| v.id == inv::AUDIT_REFCOUNT));
            cpu.mmput(&mm);
            assert!(!cpu.k.mem.is_free(page), "the pin keeps the page");
            assert_eq!(cpu.page_count(page), GUP_PIN_COUNTING_BIAS);
            assert!(audit_pinned(&cpu, &pages).is_empty());
            cpu.unpin_user_pages(&pages);
            assert!(cpu.k.mem.is_free(page), "the unpin after exit frees it");
            assert!(audit(&cpu).is_empty());
            assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
        }
    }

    /// A THP keeps an exact pin count (hpage_pinned_refcount): one reference
    /// and one count per pinned subpage, and split_huge_page() refuses it.
    #[test]
    fn a_thp_pin_counts_exactly_and_blocks_the_split() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let (cpu, mm, a) = machine(geo, ThpPolicy::Always);
            fill(&cpu, &mm, a, 3);
            let nr = geo.hpage_pmd_nr();
            let pages = pin(&cpu, &mm, a, nr, LONGTERM_WRITE);
            let head = cpu.page_info(&mm, a).head.expect("a THP");
            assert_eq!(pages, (0..nr).map(|i| head.add(i)).collect::<Vec<_>>());
            assert!(cpu.hpage_pincount_available(head));
            assert_eq!(cpu.compound_pincount(head), nr as i64);
            assert_eq!(cpu.page_count(head), 1 + nr as i64);
            assert!(cpu.page_maybe_dma_pinned(head.add(1)));
            assert!(!cpu.can_split_huge_page(head, None));
            assert_eq!(
                cpu.split_huge_pages_pid(&mm, a),
                Err(crate::huge_memory::Ebusy)
            );
            assert_eq!(cpu.page_info(&mm, a).kind, MapKind::ThpPmd);
            assert!(audit_pinned(&cpu, &pages).is_empty());
            cpu.unpin_user_pages(&pages);
            assert_eq!(cpu.compound_pincount(head), 0);
            assert!(!cpu.page_maybe_dma_pinned(head));
            assert_eq!(cpu.split_huge_pages_pid(&mm, a), Ok(true));
            assert!(audit(&cpu).is_empty());
            assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
        }
    }

    /// 5.8's should_force_cow_break(): even a read-only pin of a page shared
    /// with a child faults for write, so the parent pins a copy of its own.
    #[test]
    fn a_read_only_pin_breaks_cow_first() {
        for thp in [ThpPolicy::Never, ThpPolicy::Always] {
            let (cpu, mm, a) = machine(Geometry::TINY, thp);
            cpu.user_access(&mm, a, Access::Write(5)).expect("write");
            let child = cpu.dup_mm(&mm).expect("fork");
            let shared = cpu.page_info(&mm, a).pfn.expect("mapped");
            assert_eq!(cpu.page_info(&child, a).pfn, Some(shared));
            let pages = pin(&cpu, &mm, a, 1, FollFlags::LONGTERM);
            assert_ne!(pages[0], shared, "{thp:?}: the pin took the shared page");
            assert_eq!(cpu.page_info(&mm, a).pfn, Some(pages[0]));
            assert_eq!(cpu.page_info(&child, a).pfn, Some(shared));
            assert_eq!(cpu.user_access(&mm, a, Access::Read), Ok(5));
            cpu.unpin_user_pages(&pages);
            assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
        }
    }

    /// pin_user_pages() refuses what the VMA does not allow (-EFAULT), and a
    /// pin that stops at a hole returns the pages before it.
    #[test]
    fn pins_of_unmapped_or_inaccessible_memory_fail() {
        let (cpu, mm, a) = machine(Geometry::TINY, ThpPolicy::Never);
        let ps = cpu.k.geo.page_size();
        let try_pin = |addr: VirtAddr, n: u64, flags: FollFlags| {
            let mut pages = Vec::new();
            let _mmap = mm.mmap_lock.read(&cpu);
            let r = cpu.pin_user_pages(&mm, addr, n, flags, &mut pages);
            (r, pages)
        };
        // Beyond the mapping: nothing there.
        let end = a.add_bytes(cpu.k.geo.pmd_size());
        assert_eq!(try_pin(end, 1, LONGTERM_WRITE).0, Err(Errno::Efault));
        // The first two pages, then the hole: two pinned.
        let (r, pages) = try_pin(end.add_bytes(0u64.wrapping_sub(2 * ps)), 3, LONGTERM_WRITE);
        assert_eq!(r, Ok(2));
        cpu.unpin_user_pages(&pages);
        // PROT_NONE: no read pin; PROT_READ: no write pin, a read pin is fine.
        cpu.do_mprotect(&mm, a, ps, Prot::None).expect("mprotect");
        assert_eq!(try_pin(a, 1, FollFlags::LONGTERM).0, Err(Errno::Efault));
        cpu.do_mprotect(&mm, a, ps, Prot::Read).expect("mprotect");
        assert_eq!(try_pin(a, 1, LONGTERM_WRITE).0, Err(Errno::Efault));
        // The forced COW break of a read-only VMA goes through FOLL_COW.
        let (r, pages) = try_pin(a, 1, FollFlags::LONGTERM);
        assert_eq!(r, Ok(1));
        cpu.unpin_user_pages(&pages);
        assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
        assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
    }

    /// GUP-fast pins writable entries without mmap_lock and falls back to the
    /// slow path for the rest: a read-only (COW-shared) THP needs the slow
    /// path's COW break.
    #[test]
    fn gup_fast_pins_writable_entries_and_falls_back_for_the_rest() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let (cpu, mm, a) = machine(geo, ThpPolicy::Always);
            fill(&cpu, &mm, a, 1);
            let nr = geo.hpage_pmd_nr();
            let fast = |m: &Arc<MmStruct<E>>| {
                let mut pages = Vec::new();
                cpu.k.set_tracing(true);
                let r = cpu.pin_user_pages_fast(m, a, nr, LONGTERM_WRITE, &mut pages);
                cpu.k.set_tracing(false);
                let fell_back = cpu.k.take_trace().iter().any(|t| {
                    matches!(
                        t.event,
                        crate::kernel::TraceEvent::Enter("__gup_longterm_unlocked")
                    )
                });
                assert_eq!(r, Ok(nr));
                (pages, fell_back)
            };
            let (pages, fell_back) = fast(&mm);
            assert!(
                !fell_back,
                "a writable huge PMD is pinned by the lockless walk"
            );
            let head = cpu.page_info(&mm, a).head.expect("THP");
            assert_eq!(cpu.compound_pincount(head), nr as i64);
            cpu.unpin_user_pages(&pages);
            let child = cpu.dup_mm(&mm).expect("fork");
            let (pages, fell_back) = fast(&mm);
            assert!(fell_back, "a read-only PMD needs the slow path");
            assert!(
                pages.iter().all(|p| !cpu.page_compound(*p)),
                "copies of 4 KiB"
            );
            assert_eq!(cpu.page_info(&child, a).head, Some(head));
            cpu.unpin_user_pages(&pages);
            assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
            assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
        }
    }

    /// follow_page(FOLL_GET | FOLL_DUMP) skips the zero pages (-EFAULT) and
    /// holes, and takes one reference on a page.
    #[test]
    fn follow_page_dump_skips_zero_pages() {
        for thp in [ThpPolicy::Never, ThpPolicy::Always] {
            let (cpu, mm, a) = machine(Geometry::TINY, thp);
            let vma = mm.vma_at(a).expect("vma");
            let flags = FollFlags::GET | FollFlags::DUMP;
            let _mmap = mm.mmap_lock.read(&cpu);
            assert_eq!(cpu.follow_page(&vma, a, flags), Err(Errno::Efault), "hole");
            drop(_mmap);
            assert_eq!(cpu.user_access(&mm, a, Access::Read), Ok(0));
            assert_eq!(cpu.page_info(&mm, a).kind, MapKind::Zero);
            let _mmap = mm.mmap_lock.read(&cpu);
            assert_eq!(
                cpu.follow_page(&vma, a, flags),
                Err(Errno::Efault),
                "{thp:?}"
            );
            drop(_mmap);
            cpu.user_access(&mm, a, Access::Write(2)).expect("write");
            let page = cpu.page_info(&mm, a).pfn.expect("mapped");
            let count = cpu.page_count(page);
            let _mmap = mm.mmap_lock.read(&cpu);
            assert_eq!(cpu.follow_page(&vma, a, flags), Ok(Some(page)));
            assert_eq!(cpu.page_count(page), count + 1);
            cpu.put_page(page);
        }
    }

    /// The flags print as the kernel names them.
    #[test]
    fn foll_flags_print_as_in_the_kernel() {
        assert_eq!(
            format!("{:?}", FollFlags::PIN | LONGTERM_WRITE),
            "FOLL_WRITE|FOLL_LONGTERM|FOLL_PIN"
        );
        assert_eq!(format!("{:?}", FollFlags::NONE), "0");
        assert!(LONGTERM_WRITE.intersects(FollFlags::WRITE | FollFlags::GET));
        assert_eq!(
            LONGTERM_WRITE.without(FollFlags::WRITE),
            FollFlags::LONGTERM
        );
    }

    /// GUP-fast's protection: a TLB shootdown (what precedes freeing a page
    /// table or a page, or splitting a THP) does not complete while another
    /// CPU runs with interrupts disabled; it waits for the IPI to be handled.
    #[test]
    fn a_shootdown_waits_for_a_cpu_with_interrupts_disabled() {
        use crate::engine::Engine;
        use crate::types::MmId;
        use crate::ShuttleEngine;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        static INSIDE: AtomicBool = AtomicBool::new(false);
        static WAITED: AtomicUsize = AtomicUsize::new(0);
        shuttle::check_random(
            || {
                let k = Kernel::<ShuttleEngine>::new(Config::new(Geometry::TINY));
                let k1 = k.clone();
                let walker = shuttle::thread::spawn(move || {
                    let cpu1 = Cpu::new(k1, CpuId(1));
                    let irq = cpu1.local_irq_save();
                    INSIDE.store(true, SeqCst);
                    ShuttleEngine::schedule_point();
                    INSIDE.store(false, SeqCst);
                    drop(irq);
                });
                let cpu0 = Cpu::new(k, CpuId(0));
                ShuttleEngine::schedule_point();
                let inside_before = INSIDE.load(SeqCst);
                cpu0.flush_tlb_mm(MmId(0));
                if inside_before {
                    // The IPI reached CPU1 inside its section (a flush that
                    // reached it before the section began is done already).
                    assert!(
                        !INSIDE.load(SeqCst),
                        "the flush completed while CPU1 had interrupts disabled"
                    );
                    WAITED.fetch_add(1, SeqCst);
                }
                walker.join().expect("walker");
            },
            1000,
        );
        assert!(WAITED.load(SeqCst) > 0, "no flush ever had to wait");
    }
}
