//! Page reclaim: mm/vmscan.c (v5.8).
//!
//! Models shrink_page_list() for anonymous pages (swap-out through the swap
//! cache: add_to_swap(), try_to_unmap() writing swap entries, pageout() →
//! swap_writepage(), __remove_mapping(), freeing), with 5.8's THP rule
//! (CONFIG_THP_SWAP: a THP is swapped out whole when a free cluster exists,
//! its huge PMD split into swap PTEs without splitting the page; else the
//! page is split first), page_check_references() (a page whose accessed
//! bits were set since the last look is activated, not reclaimed),
//! reclaim_pages() (MADV_PAGEOUT's) and, for `kernel: reclaim`, one aging
//! pass of the pages of a range: shrink_active_list()'s deactivation (which
//! clears the accessed bits through page_referenced()) then
//! shrink_page_list().
//!
//! DIVERGENCE: `kernel: reclaim P A[range]` reclaims the range's pages (found
//! as follow_page() finds them), not the tail of the LRU lists, which the
//! model does not keep; between the active and the inactive pass the pages
//! stay isolated (5.8 puts them on the inactive list, whence
//! shrink_inactive_list() isolates them again).
//!
//! Lazily freed pages (MADV_FREE): a clean one is discarded (try_to_unmap()
//! leaves its PTEs none), a dirty one becomes SwapBacked again and stays.
//!
//! Leaves out: file and shmem pages (kept: shmem_writepage() is not
//! modelled), kswapd and direct reclaim's
//! scan control (priorities, congestion, writeback throttling), memcg, the
//! batched TLB flush of TTU_BATCH_FLUSH (try_to_unmap() flushes each entry),
//! and swap slot readahead.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::gup::FollFlags;
use crate::mm_types::MmStruct;
use crate::page::pg;
use crate::pgtable::SwapEntry;
use crate::rmap::TtuFlags;
use crate::types::{Pfn, VirtAddr};
use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// `enum page_references`, mm/vmscan.c, v5.8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageReferences {
    Reclaim,
    ReclaimClean,
    Keep,
    Activate,
}

/// `enum pageout_t`, mm/vmscan.c, v5.8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pageout {
    Keep,
    Activate,
    Success,
    Clean,
}

/// Where a page goes at the end of one pass of shrink_page_list()'s loop.
enum Fate {
    Freed,
    ActivateLocked,
    KeepLocked,
    Keep,
}

impl<E: Engine> Cpu<E> {
    /// Models vm_swap_full(), include/linux/swap.h, v5.8 (and
    /// mem_cgroup_swap_full() without a memory cgroup): more than half the
    /// device's slots are in use.
    pub fn vm_swap_full(&self) -> bool {
        let Some(si) = self.k.swap.as_ref() else {
            return false;
        };
        let st = si.state();
        let total = st.max.saturating_sub(1);
        st.nr_swap_pages * 2 < total
    }

    /// Models activate_page() (__activate_page()), mm/swap.c, v5.8: a page
    /// on the inactive LRU becomes active; an isolated one (off the LRU, as
    /// reclaim and migration hold them) is left alone.
    ///
    /// # Locking
    /// Takes `lru_lock`.
    pub fn activate_page(&self, page: Pfn) {
        let head = self.compound_head(page);
        let _lru = self.k.lru_lock.lock(self);
        let p = self.page(head);
        if p.test_flag(pg::LRU) && !p.test_flag(pg::ACTIVE) && !p.test_flag(pg::MLOCKED) {
            p.set_flag(pg::ACTIVE);
        }
    }

    /// Models mark_page_lazyfree() (lru_lazyfree_fn()), mm/swap.c, v5.8:
    /// an anonymous page on the LRU, not in the swap cache and not mlocked,
    /// becomes lazily freed: not SwapBacked (reclaim discards it if it is
    /// still clean), inactive, unreferenced.
    ///
    /// # Locking
    /// Takes `lru_lock`.
    pub fn mark_page_lazyfree(&self, page: Pfn) {
        let head = self.compound_head(page);
        let ok = |c: &Self| {
            let p = c.page(head);
            p.test_flag(pg::LRU)
                && c.page_anon(head)
                && p.test_flag(pg::SWAPBACKED)
                && !c.page_swapcache(head)
                && !p.test_flag(pg::MLOCKED)
        };
        if !ok(self) {
            return;
        }
        let _lru = self.k.lru_lock.lock(self);
        if ok(self) {
            let p = self.page(head);
            p.clear_flag(pg::ACTIVE | pg::REFERENCED);
            p.clear_flag(pg::SWAPBACKED);
        }
    }

    /// Models page_check_references(), mm/vmscan.c, v5.8.
    fn page_check_references(&self, page: Pfn) -> PageReferences {
        let _f = self.func("page_check_references");
        let (referenced_ptes, vm_locked) = self.page_referenced(page, true);
        let referenced_page = self.page(page).test_clear_flag(pg::REFERENCED);
        // Mlock lost the isolation race with us. Let try_to_unmap() move the
        // page to the unevictable list.
        if vm_locked {
            return PageReferences::Reclaim;
        }
        let swapbacked = self.page(page).test_flag(pg::SWAPBACKED);
        if referenced_ptes > 0 {
            if swapbacked {
                self.note(|| "page_check_references(): referenced: activate".to_string());
                return PageReferences::Activate;
            }
            self.page(page).set_flag(pg::REFERENCED);
            if referenced_page || referenced_ptes > 1 {
                return PageReferences::Activate;
            }
            return PageReferences::Keep;
        }
        if referenced_page && !swapbacked {
            return PageReferences::ReclaimClean;
        }
        PageReferences::Reclaim
    }

    /// Models is_page_cache_freeable(), mm/vmscan.c, v5.8: only the swap
    /// cache (one reference per subpage) and the isolation hold the page.
    fn is_page_cache_freeable(&self, page: Pfn) -> bool {
        self.page_count(page) == 1 + self.hpage_nr_pages(page) as i64
    }

    /// Models pageout(), mm/vmscan.c, v5.8, for a swap cache page: write it
    /// to its slots (swap_writepage(), which unlocks it).
    ///
    /// # Locking
    /// Called with the page locked; unlocked on `Success`.
    fn pageout(&self, page: Pfn) -> Pageout {
        let _f = self.func("pageout");
        if !self.is_page_cache_freeable(page) {
            self.note(|| "pageout(): !is_page_cache_freeable(): keep".to_string());
            return Pageout::Keep;
        }
        // clear_page_dirty_for_io()
        if self.page(page).test_clear_flag(pg::DIRTY) {
            self.swap_writepage(page);
            return Pageout::Success;
        }
        Pageout::Clean
    }

    /// Models __remove_mapping(), mm/vmscan.c, v5.8, for a swap cache page:
    /// with the isolation's and the cache's references the only ones left
    /// (frozen to 0), it leaves the swap cache. Returns whether it did.
    ///
    /// # Locking
    /// Called with the page locked; takes the swap cache's `i_pages` lock,
    /// then (put_swap_page()) the cluster lock.
    fn __remove_mapping(&self, page: Pfn) -> bool {
        let _f = self.func("__remove_mapping");
        if !self.page_locked(page) {
            self.bug("BUG_ON(!PageLocked(page))", Some(page));
        }
        let si = self.swap_info();
        let swap = SwapEntry(self.page(page).private.load(SeqCst));
        {
            let _x = si.i_pages_lock.lock(self);
            let refcount = 1 + self.hpage_nr_pages(page) as i64;
            if !self.page_ref_freeze(page, refcount) {
                self.note(|| "__remove_mapping(): page_ref_freeze() failed".to_string());
                return false;
            }
            if self.page(page).test_flag(pg::DIRTY) {
                self.page_ref_unfreeze(page, refcount);
                return false;
            }
            self.__delete_from_swap_cache(page, swap);
        }
        self.put_swap_page(page, swap);
        true
    }

    /// Models shrink_page_list(), mm/vmscan.c, v5.8, for isolated anonymous
    /// pages (each holds the isolation's reference and is off the LRU).
    /// Returns the pages reclaimed and the pages to put back (as the kernel
    /// splices them back onto `page_list`). The tails of a THP split here
    /// join the list.
    ///
    /// # Locking
    /// Takes each page's lock (trylock), then what the steps take: the
    /// anon_vma lock and page-table locks (page_referenced(),
    /// try_to_unmap()), the swap locks.
    pub fn shrink_page_list(&self, pages: Vec<Pfn>, ignore_references: bool) -> (u64, Vec<Pfn>) {
        let _f = self.func("shrink_page_list");
        let mut list: VecDeque<Pfn> = pages.into();
        let mut ret = Vec::new();
        let mut nr_reclaimed = 0;
        while let Some(page) = list.pop_front() {
            match self.shrink_one_page(page, &mut list, ignore_references) {
                Fate::Freed => {
                    // A THP split on the way counts as the one page left.
                    nr_reclaimed += self.hpage_nr_pages(page);
                    // free_it: the page's count was frozen at 0.
                    if self.page_trans_huge(page) {
                        self.free_transhuge_page(page); // destroy_compound_page()
                    } else {
                        self.free_unref_page(page, 0);
                    }
                    continue;
                }
                Fate::ActivateLocked => {
                    // mem_cgroup_swap_full(page) || PageMlocked(page)
                    if self.page_swapcache(page) && (self.vm_swap_full() || self.page_mlocked(page))
                    {
                        self.try_to_free_swap(page);
                    }
                    if !self.page_mlocked(page) {
                        self.page(page).set_flag(pg::ACTIVE);
                    }
                    self.unlock_page(page);
                }
                Fate::KeepLocked => self.unlock_page(page),
                Fate::Keep => {}
            }
            ret.push(page);
        }
        (nr_reclaimed, ret)
    }

    /// One page of shrink_page_list()'s loop, from trylock_page() to the
    /// label it ends at.
    fn shrink_one_page(
        &self,
        page: Pfn,
        list: &mut VecDeque<Pfn>,
        ignore_references: bool,
    ) -> Fate {
        if !self.trylock_page(page) {
            return Fate::Keep;
        }
        crate::vm_bug_on_page!(
            self,
            self.page(page).test_flag(pg::ACTIVE),
            page,
            "VM_BUG_ON_PAGE(PageActive(page), page)"
        );
        // page_evictable(): an mlocked page goes to the unevictable list.
        if self.page_mlocked(page) {
            return Fate::ActivateLocked;
        }
        let references = if ignore_references {
            PageReferences::Reclaim
        } else {
            self.page_check_references(page)
        };
        match references {
            PageReferences::Activate => return Fate::ActivateLocked,
            PageReferences::Keep => return Fate::KeepLocked,
            PageReferences::Reclaim | PageReferences::ReclaimClean => {}
        }
        let anon = self.page_anon(page);
        if !anon {
            // DIVERGENCE: a file (shmem) page is kept: shmem_writepage(),
            // which moves it to the swap cache, is not modelled.
            self.note(|| {
                "shrink_page_list(): a file page: kept (shmem swap is not modelled)".to_string()
            });
            return Fate::KeepLocked;
        }
        let lazyfree = !self.page(page).test_flag(pg::SWAPBACKED);
        if lazyfree {
            // A lazily freed THP is split (the `else` of the swap branch).
            if self.page_trans_huge(page) && self.split_huge_page_to_list_into(page, list).is_err()
            {
                return Fate::KeepLocked;
            }
        } else if !self.page_swapcache(page) {
            if self.page_trans_huge(page) {
                // Cannot split THP, skip it.
                if !self.can_split_huge_page(page, None) {
                    self.note(|| {
                        "shrink_page_list(): !can_split_huge_page(): activate".to_string()
                    });
                    return Fate::ActivateLocked;
                }
                // Split pages without a PMD map right away. Chances are
                // some or all of the tail pages can be freed without IO.
                if self.compound_mapcount(page) == 0
                    && self.split_huge_page_to_list_into(page, list).is_err()
                {
                    return Fate::ActivateLocked;
                }
            }
            if !self.add_to_swap(page) {
                if !self.page_trans_huge(page) {
                    return Fate::ActivateLocked; // activate_locked_split
                }
                // Fallback to swap normal pages (THP_SWPOUT_FALLBACK).
                self.note(|| "shrink_page_list(): no free swap cluster: split the THP".to_string());
                if self.split_huge_page_to_list_into(page, list).is_err() {
                    return Fate::ActivateLocked;
                }
                if !self.add_to_swap(page) {
                    return Fate::ActivateLocked; // activate_locked_split
                }
            }
        }
        // The page is mapped into the page tables of one or more processes.
        // Try to unmap it here.
        if self.page_mapped(page) {
            let flags = TtuFlags {
                split_huge_pmd: self.page_trans_huge(page),
                ..TtuFlags::default()
            };
            if !self.try_to_unmap(page, flags) {
                self.note(|| "shrink_page_list(): try_to_unmap() failed: activate".to_string());
                return Fate::ActivateLocked;
            }
        }
        if self.page(page).test_flag(pg::DIRTY) {
            if references == PageReferences::ReclaimClean {
                return Fate::KeepLocked;
            }
            match self.pageout(page) {
                Pageout::Keep => return Fate::KeepLocked,
                Pageout::Activate => return Fate::ActivateLocked,
                Pageout::Success => {
                    // A synchronous write: try to reclaim the page.
                    if self.page(page).test_flag(pg::WRITEBACK | pg::DIRTY) {
                        return Fate::Keep;
                    }
                    if !self.trylock_page(page) {
                        return Fate::Keep;
                    }
                    if self.page(page).test_flag(pg::WRITEBACK | pg::DIRTY) {
                        return Fate::KeepLocked;
                    }
                }
                Pageout::Clean => {}
            }
        }
        if !self.page(page).test_flag(pg::SWAPBACKED) {
            // A lazily freed page nobody wrote: free it if the isolation's
            // is the only reference left.
            if !self.page_ref_freeze(page, 1) {
                return Fate::KeepLocked;
            }
            if self.page(page).test_flag(pg::DIRTY) {
                self.page_ref_unfreeze(page, 1);
                return Fate::KeepLocked;
            }
            // PGLAZYFREED
            self.unlock_page(page);
            self.note(|| format!("shrink_page_list(): lazily freed page {} discarded", page.0));
            return Fate::Freed;
        }
        if !self.page_swapcache(page) {
            // swap_writepage() freed the swap (no PTE referenced it): the
            // page has no mapping (`!mapping || !__remove_mapping()`).
            return Fate::KeepLocked;
        }
        if !self.__remove_mapping(page) {
            return Fate::KeepLocked;
        }
        self.unlock_page(page);
        self.note(|| format!("shrink_page_list(): page {} reclaimed", page.0));
        Fate::Freed
    }

    /// Models reclaim_pages(), mm/vmscan.c, v5.8 (MADV_PAGEOUT's): the
    /// isolated pages go through shrink_page_list() with their references
    /// checked; what is left goes back on the LRU.
    pub fn reclaim_pages(&self, pages: Vec<Pfn>) -> u64 {
        let _f = self.func("reclaim_pages");
        if pages.is_empty() {
            return 0;
        }
        for &p in &pages {
            self.page(p).clear_flag(pg::ACTIVE);
        }
        let (nr, back) = self.shrink_page_list(pages, false);
        for p in back {
            self.putback_lru_page(p);
        }
        nr
    }

    /// `kernel: reclaim P A[start..end]`: one aging pass of the range's
    /// pages as kswapd would make it: each page mapped there is isolated;
    /// an active page is deactivated (shrink_active_list(): page_referenced()
    /// clears its accessed bits; anonymous pages are deactivated even when
    /// referenced), then the pages go through shrink_page_list() with their
    /// references checked (shrink_inactive_list()), and the rest goes back
    /// on the LRU. Returns the pages reclaimed.
    ///
    /// # Locking
    /// Takes `mmap_lock` for read to find the pages (follow_page()), then
    /// what shrink_page_list() takes.
    pub fn reclaim_range(&self, mm: &Arc<MmStruct<E>>, start: VirtAddr, end: VirtAddr) -> u64 {
        let _f = self.func("shrink_node");
        let mut found: Vec<Pfn> = Vec::new();
        {
            let _mmap = mm.mmap_lock.read(self);
            let ps = self.k.geo.page_size();
            let mut a = start;
            while a < end {
                if let Some(vma) = mm.vma_at(a) {
                    if let Ok(Some(p)) = self.follow_page(&vma, a, FollFlags::GET) {
                        let head = self.compound_head(p);
                        if found.contains(&head)
                            || self.is_zero_pfn(p)
                            || self.is_huge_zero_page(head)
                        {
                            self.put_page(p);
                        } else {
                            found.push(head);
                        }
                    }
                }
                a = a.add_bytes(ps);
            }
        }
        let mut isolated = Vec::new();
        for page in found {
            if self.isolate_lru_page(page) {
                isolated.push(page);
            }
            self.put_page(page);
        }
        // shrink_active_list()
        for &page in &isolated {
            if self.page_mlocked(page) || !self.page(page).test_flag(pg::ACTIVE) {
                continue;
            }
            self.page_referenced(page, false);
            self.page(page).clear_flag(pg::ACTIVE);
        }
        // shrink_inactive_list()
        let mut back = Vec::new();
        let mut inactive = Vec::new();
        for page in isolated {
            if self.page(page).test_flag(pg::ACTIVE) {
                back.push(page); // mlocked: stays where it is
            } else {
                inactive.push(page);
            }
        }
        let (nr, rest) = self.shrink_page_list(inactive, false);
        for p in back.into_iter().chain(rest) {
            self.putback_lru_page(p);
        }
        nr
    }
}
