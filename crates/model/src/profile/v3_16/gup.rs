//! get_user_pages() and the era's tail-page refcounting (v3.16: mm/memory.c,
//! which held the GUP code until 3.17 moved it to mm/gup.c; mm/huge_memory.c;
//! mm/internal.h; mm/swap.c).
//!
//! A reference on a THP subpage is taken on the head (`_count`) and, for a
//! tail, counted in the tail's `_mapcount` too (get_page_foll()), so that
//! __split_huge_page_refcount() can give each tail its own pins. put_page()
//! of a tail takes the head's compound_lock to drop both against a
//! concurrent split (put_refcounted_compound_page()).
//!
//! Leaves out: get_user_pages_fast() (`pin ... fast` is refused under
//! `kernel 3.16`), FOLL_SPLIT, FOLL_MLOCK, FOLL_NUMA, hugetlb.

use super::Cpu316;
use crate::coverage::Mark;
use crate::engine::{Atomic, Engine};
use crate::errno::Errno;
use crate::gup::FollFlags;
use crate::memory::{FaultFlags, VmFault};
use crate::mm_types::{vm, MmStruct, Vma};
use crate::pgtable::{Pmd, Pte};
use crate::types::{Pfn, VirtAddr};
use std::sync::Arc;

impl<E: Engine> Cpu316<'_, E> {
    /// Models __get_user_pages(), mm/memory.c, v3.16, as a driver's long-term
    /// pin calls it (get_user_pages(write, force 0) with a pages array):
    /// FOLL_TOUCH | FOLL_GET, FOLL_WRITE for a write pin. Each page is
    /// looked up with follow_page_mask() and faulted in (for write: a COW is
    /// broken) until it is there. Unlike 5.8, a read pin of a COW-shared page
    /// does not break COW (the "COW can break either way" behaviour 5.8
    /// fixed).
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read.
    pub(crate) fn get_user_pages(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        write: bool,
        pages: &mut Vec<Pfn>,
    ) -> Result<u64, Errno> {
        let _f = self.func("__get_user_pages");
        let ps = self.k.geo.page_size();
        let mut gup_flags = FollFlags::TOUCH | FollFlags::GET;
        if write {
            gup_flags |= FollFlags::WRITE;
        }
        let mut start = start;
        let mut i = 0u64;
        let mut vma: Option<Arc<Vma>> = None;
        while i < nr_pages {
            let v = match &vma {
                Some(v) if start < v.vm_end() => v.clone(),
                _ => {
                    let found = mm.find_vma(start).filter(|v| v.vm_start() <= start);
                    let ok = found.filter(|v| {
                        !v.is_hugetlb()
                            && crate::cpu::Cpu::<E>::check_vma_flags(v, gup_flags).is_ok()
                    });
                    let Some(v) = ok else {
                        self.mark(Mark::gives_up("__get_user_pages: EFAULT"));
                        return if i > 0 { Ok(i) } else { Err(Errno::Efault) };
                    };
                    vma = Some(v.clone());
                    v
                }
            };
            let mut foll_flags = gup_flags;
            let page = loop {
                if let Some(page) = self.follow_page_mask(&v, mm, start, foll_flags) {
                    break page;
                }
                let fault_write = foll_flags.contains(FollFlags::WRITE);
                let ret = self.handle_mm_fault(&VmFault::new(
                    mm.clone(),
                    v.clone(),
                    start,
                    FaultFlags { write: fault_write },
                ));
                if ret.oom() {
                    return if i > 0 { Ok(i) } else { Err(Errno::Enomem) };
                }
                if ret.sigbus() || ret.sigsegv() {
                    return if i > 0 { Ok(i) } else { Err(Errno::Efault) };
                }
                // The VM_FAULT_WRITE bit tells us that do_wp_page has broken
                // COW when necessary, even if maybe_mkwrite decided not to set
                // pte_write. We can thus safely do subsequent page lookups as
                // if they were reads.
                if ret.write() && v.vm_flags() & vm::WRITE == 0 {
                    foll_flags = FollFlags::TOUCH | FollFlags::GET;
                }
            };
            pages.push(page);
            i += 1;
            start = start.add_bytes(ps);
        }
        Ok(i)
    }

    /// Models follow_page_mask(), mm/memory.c, v3.16, for anonymous memory:
    /// the page mapped at `address` with a reference (FOLL_GET), or `None`
    /// when it must be faulted in (none, or read-only for FOLL_WRITE). A huge
    /// PMD under split is waited for; the zero page is returned as itself.
    ///
    /// # Locking
    /// Takes the PMD lock (a huge PMD) or the PTE lock.
    pub(super) fn follow_page_mask(
        &self,
        vma: &Vma,
        mm: &MmStruct<E>,
        address: VirtAddr,
        flags: FollFlags,
    ) -> Option<Pfn> {
        let _f = self.func("follow_page_mask");
        let pmd = self.pmd_offset(mm, address)?;
        let cpu = self.0;
        let cur = self.pmd_read(pmd);
        if cur.is_none() {
            return None;
        }
        if cur.is_trans_huge() {
            let ptl = cpu.pmd_lockptr(pmd).lock(cpu);
            let cur = self.pmd_read(pmd);
            if cur.is_trans_huge() {
                if cur.is_trans_splitting() {
                    drop(ptl);
                    self.wait_split_huge_page(vma, pmd);
                } else {
                    let page = self.follow_trans_huge_pmd(vma, address, pmd, cur, flags);
                    drop(ptl);
                    return page;
                }
            } else {
                drop(ptl);
            }
            // fall through: the PMD was split.
        }
        // split_fallthrough:
        let Pmd::Table(_) = self.pmd_read(pmd) else {
            return None;
        };
        let pte = self.pte_offset(self.pmd_read(pmd), address)?;
        let _ptl = cpu.pte_lockptr(pte.table).lock(cpu);
        let entry = self.pte_read(pte);
        let Pte::Present { pfn, .. } = entry else {
            return None; // no_page
        };
        if flags.contains(FollFlags::WRITE) && !entry.is_write() {
            return None;
        }
        // vm_normal_page(), or the zero page itself (not FOLL_DUMP).
        let page = self.vm_normal_page(entry).unwrap_or(pfn);
        if flags.contains(FollFlags::GET) {
            self.get_page_foll(page);
        }
        if flags.contains(FollFlags::TOUCH)
            && flags.contains(FollFlags::WRITE)
            && !self.is_zero_pfn(page)
        {
            self.page(self.compound_head(page))
                .set_flag(crate::page::pg::DIRTY); // set_page_dirty()
        }
        Some(page)
    }

    /// Models follow_trans_huge_pmd(), mm/huge_memory.c, v3.16: the subpage
    /// a huge PMD maps at `addr`, with get_page_foll()'s reference; `None`
    /// for FOLL_WRITE on a read-only PMD (the caller faults to break COW).
    ///
    /// # Locking
    /// Called with the PMD lock held.
    fn follow_trans_huge_pmd(
        &self,
        _vma: &Vma,
        addr: VirtAddr,
        pmd: crate::pgtable::EntryRef,
        cur: Pmd,
        flags: FollFlags,
    ) -> Option<Pfn> {
        let _f = self.func("follow_trans_huge_pmd");
        let g = self.k.geo;
        if flags.contains(FollFlags::WRITE) && !cur.is_write() {
            return None;
        }
        let head = cur.huge_pfn()?;
        crate::vm_bug_on_page!(
            self,
            !self.page_head(head),
            head,
            "VM_BUG_ON_PAGE(!PageHead(page), page)"
        );
        if flags.contains(FollFlags::TOUCH) {
            let entry = cur.with_flags(|f| {
                f.young = true; // pmd_mkyoung()
                f.dirty = true; // pmd_mkdirty()
            });
            self.pmdp_set_access_flags(g.pmd_align_down(addr), pmd, entry, true);
        }
        let page = head.add((addr.0 & (g.pmd_size() - 1)) >> g.page_shift);
        crate::vm_bug_on_page!(
            self,
            !self.page_compound(page),
            page,
            "VM_BUG_ON_PAGE(!PageCompound(page), page)"
        );
        if flags.contains(FollFlags::GET) {
            self.get_page_foll(page);
        }
        Some(page)
    }

    /// Models get_page_foll() and __get_page_tail_foll(), mm/internal.h,
    /// v3.16: a tail's reference is taken on the head's `_count` and counted
    /// in the tail's `_mapcount` (get_huge_page_tail()); safe without the
    /// compound lock because the caller holds the page-table lock, which
    /// __split_huge_page_refcount() cannot run under.
    pub(super) fn get_page_foll(&self, page: Pfn) {
        if self.page_tail(page) {
            let head = self.compound_head(page);
            crate::vm_bug_on_page!(
                self,
                self.page(head).refcount.load_i64() <= 0,
                page,
                "VM_BUG_ON_PAGE(atomic_read(&page->first_page->_count) <= 0, page)"
            );
            self.page(head).refcount.fetch_add(1);
            // get_huge_page_tail()
            let tail = self.page(page);
            crate::vm_bug_on_page!(
                self,
                self.page_mapcount(page) < 0,
                page,
                "VM_BUG_ON_PAGE(page_mapcount(page) < 0, page)"
            );
            crate::vm_bug_on_page!(
                self,
                tail.refcount.load_i64() != 0,
                page,
                "VM_BUG_ON_PAGE(atomic_read(&page->_count) != 0, page)"
            );
            tail.mapcount.fetch_add(1);
            self.note(|| "get_page_foll(): head _count += 1, tail _mapcount += 1".to_string());
        } else {
            crate::vm_bug_on_page!(
                self,
                self.page(page).refcount.load_i64() <= 0 && !self.is_zero_pfn(page),
                page,
                "VM_BUG_ON_PAGE(atomic_read(&page->_count) <= 0, page)"
            );
            self.page(page).refcount.fetch_add(1);
        }
    }

    /// Models put_page() and put_compound_page(), mm/swap.c, v3.16. A tail
    /// page's reference goes through put_refcounted_compound_page() (a THP
    /// is tail-refcounted; hugetlb and slab pages are not modelled here).
    pub(crate) fn put_page(&self, page: Pfn) {
        if !self.page_compound(page) {
            self.put_single_ref(page);
            return;
        }
        if !self.page_tail(page) {
            // A THP head: by the time all refcounts have been released
            // split_huge_page cannot run anymore from under us.
            self.put_single_ref(page);
            return;
        }
        let head = self.compound_head(page);
        self.put_refcounted_compound_page(head, page);
    }

    /// put_page_testzero() and the free of a page (or compound page) whose
    /// last reference it was (__put_single_page() / __put_compound_page()).
    fn put_single_ref(&self, page: Pfn) {
        if self.is_zero_pfn(page) || self.is_huge_zero_page(page) {
            // DIVERGENCE: the zero pages are never freed (as for 5.8).
            self.page(page).refcount.fetch_sub(1);
            return;
        }
        let left = self.page(page).refcount.add_return(-1);
        crate::vm_bug_on_page!(
            self,
            left < 0,
            page,
            "VM_BUG_ON_PAGE(atomic_read(&page->_count) == 0, page)"
        );
        if left == 0 {
            self.__put_page(page);
        }
    }

    /// Models put_refcounted_compound_page(), mm/swap.c, v3.16: drop a tail
    /// pin under the head's compound_lock, or, if __split_huge_page_refcount()
    /// ran first (the page is no longer a tail), as the base page it became.
    ///
    /// # Locking
    /// Takes the head's compound_lock (PG_compound_lock).
    fn put_refcounted_compound_page(&self, page_head: Pfn, page: Pfn) {
        let _f = self.func("put_refcounted_compound_page");
        if page != page_head && self.get_page_unless_zero(page_head) {
            // page_head wasn't a dangling pointer but it may not be a head
            // page anymore by the time we obtain the lock.
            let cpu = self.0;
            let lock = self.page(page_head).compound_lock();
            let guard = lock.lock(cpu);
            if !self.page_tail(page) {
                // __split_huge_page_refcount run before us
                drop(guard);
                self.mark(Mark::reached(
                    "put_refcounted_compound_page: split ran first",
                ));
                self.put_single_ref(page_head);
                self.put_single_ref(page);
                return;
            }
            crate::vm_bug_on_page!(
                self,
                self.compound_head(page) != page_head,
                page,
                "VM_BUG_ON_PAGE(page_head != page->first_page, page)"
            );
            // We can release the refcount taken by get_page_unless_zero() now
            // that __split_huge_page_refcount() is blocked on the
            // compound_lock.
            if self.page(page_head).refcount.add_return(-1) == 0 {
                self.bug("VM_BUG_ON_PAGE(1, page_head)", Some(page_head));
            }
            crate::vm_bug_on_page!(
                self,
                self.page_mapcount(page) <= 0,
                page,
                "VM_BUG_ON_PAGE(page_mapcount(page) <= 0, page)"
            );
            self.page(page).mapcount.fetch_sub(1);
            self.note(|| "put_page(): tail _mapcount -= 1 under compound_lock".to_string());
            crate::vm_bug_on_page!(
                self,
                self.page(page_head).refcount.load_i64() <= 0,
                page_head,
                "VM_BUG_ON_PAGE(atomic_read(&page_head->_count) <= 0, page_head)"
            );
            crate::vm_bug_on_page!(
                self,
                self.page(page).refcount.load_i64() != 0,
                page,
                "VM_BUG_ON_PAGE(atomic_read(&page->_count) != 0, page)"
            );
            drop(guard);
            self.put_single_ref(page_head);
        } else {
            // page_head is a dangling pointer
            crate::vm_bug_on_page!(
                self,
                self.page_tail(page),
                page,
                "VM_BUG_ON_PAGE(PageTail(page), page)"
            );
            self.put_single_ref(page);
        }
    }
}
