//! The swap cache: mm/swap_state.c (v5.8).
//!
//! Models the swap cache of the one swap device (`swapper_spaces`): a page
//! being swapped out or just swapped in is found by its slot; it holds one
//! reference per subpage and PG_swapcache, and each subpage's
//! `page_private()` is its slot. add_to_swap(), add_to_swap_cache(),
//! __delete_from_swap_cache(), delete_from_swap_cache(), lookup_swap_cache(),
//! __read_swap_cache_async()/read_swap_cache_async(), swapin_readahead(),
//! free_swap_cache() and free_page_and_swap_cache().
//!
//! Leaves out: swap readahead (swapin_readahead() reads the faulting slot
//! only, as with vm.page-cluster 0 and no VMA readahead window), shadow
//! entries (workingset), memcg charging, the swap cache statistics.

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::mm_types::Vma;
use crate::page::pg;
use crate::pgtable::SwapEntry;
use crate::swapfile::SwapDupError;
use crate::types::{Pfn, VirtAddr};
use std::sync::atomic::Ordering::SeqCst;

impl<E: Engine> Cpu<E> {
    /// Models find_get_page() of the swap cache (pagecache_get_page() with
    /// no flags), mm/filemap.c, v5.8: the page at the slot with a reference.
    /// A page whose count is frozen (a split in progress) is looked up again
    /// once the cache changed. DIVERGENCE: the lockless xarray lookup is a
    /// lookup under the `i_pages` lock (one scheduling point, as the page
    /// cache's find_get_page() in the model).
    ///
    /// # Locking
    /// Takes the swap cache's `i_pages` lock.
    pub fn find_get_swap_page(&self, entry: SwapEntry) -> Option<Pfn> {
        let si = self.swap_info();
        loop {
            let seen = si.cache_generation();
            {
                let _x = si.i_pages_lock.lock(self);
                let page = si.state().cache.get(&entry.0).copied()?;
                if self.get_page_unless_zero(self.compound_head(page)) {
                    return Some(page);
                }
            }
            si.wait_cache_change(seen);
        }
    }

    /// Models add_to_swap_cache(), mm/swap_state.c, v5.8: the locked page
    /// (every subpage of a THP) enters the swap cache at `entry`, with one
    /// reference per subpage.
    ///
    /// # Locking
    /// Called with the page locked; takes the swap cache's `i_pages` lock.
    pub fn add_to_swap_cache(&self, page: Pfn, entry: SwapEntry) {
        let _f = self.func("add_to_swap_cache");
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            self.page_swapcache(page),
            page,
            "VM_BUG_ON_PAGE(PageSwapCache(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            !self.page(page).test_flag(pg::SWAPBACKED),
            page,
            "VM_BUG_ON_PAGE(!PageSwapBacked(page), page)"
        );
        let nr = self.hpage_nr_pages(page);
        self.page_ref_add(page, nr as i64);
        self.page(page).set_flag(pg::SWAPCACHE);
        let si = self.swap_info();
        {
            let _x = si.i_pages_lock.lock(self);
            let mut st = si.state();
            for i in 0..nr {
                self.page(page.add(i)).private.store(entry.0 + i, SeqCst);
                st.cache.insert(entry.0 + i, page.add(i));
            }
        }
        si.cache_changed();
    }

    /// Models __delete_from_swap_cache(), mm/swap_state.c, v5.8: the page
    /// (every subpage) leaves the swap cache; the caller drops the cache's
    /// references and its slots. Called with the `i_pages` lock held.
    pub fn __delete_from_swap_cache(&self, page: Pfn, entry: SwapEntry) {
        let _f = self.func("__delete_from_swap_cache");
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            !self.page_swapcache(page),
            page,
            "VM_BUG_ON_PAGE(!PageSwapCache(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            self.page(page).test_flag(pg::WRITEBACK),
            page,
            "VM_BUG_ON_PAGE(PageWriteback(page), page)"
        );
        let si = self.swap_info();
        let nr = self.hpage_nr_pages(page);
        {
            let mut st = si.state();
            for i in 0..nr {
                let was = st.cache.remove(&(entry.0 + i));
                if was != Some(page.add(i)) {
                    drop(st);
                    self.bug("VM_BUG_ON_PAGE(entry != page, entry)", Some(page));
                }
                self.page(page.add(i)).private.store(0, SeqCst);
            }
        }
        self.page(page).clear_flag(pg::SWAPCACHE);
        si.cache_changed();
    }

    /// Models delete_from_swap_cache(), mm/swap_state.c, v5.8: out of the
    /// swap cache, the slots' SWAP_HAS_CACHE dropped (put_swap_page()), the
    /// cache's references dropped.
    ///
    /// # Locking
    /// Called with the page locked; takes the `i_pages` lock, then the
    /// cluster lock (put_swap_page()).
    pub fn delete_from_swap_cache(&self, page: Pfn) {
        let _f = self.func("delete_from_swap_cache");
        let entry = SwapEntry(self.page(page).private.load(SeqCst));
        let si = self.swap_info();
        {
            let _x = si.i_pages_lock.lock(self);
            self.__delete_from_swap_cache(page, entry);
        }
        self.put_swap_page(page, entry);
        let nr = self.hpage_nr_pages(page);
        self.page_ref_add(page, -(nr as i64));
    }

    /// Models add_to_swap(), mm/swap_state.c, v5.8: give the locked page
    /// slots (a whole cluster for a THP) and put it in the swap cache;
    /// false when the device has none to give.
    ///
    /// # Locking
    /// Called with the page locked.
    pub fn add_to_swap(&self, page: Pfn) -> bool {
        let _f = self.func("add_to_swap");
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            !self.page(page).test_flag(pg::UPTODATE),
            page,
            "VM_BUG_ON_PAGE(!PageUptodate(page), page)"
        );
        let Some(entry) = self.get_swap_page(page) else {
            return false;
        };
        self.add_to_swap_cache(page, entry);
        // set_page_dirty(): a MADV_FREE page's PTE may be clean while the
        // page stays SwapBacked; the copy on the device is the only one.
        self.page(page).set_flag(pg::DIRTY);
        true
    }

    /// Models lookup_swap_cache(), mm/swap_state.c, v5.8 (no readahead
    /// statistics): the page holding `entry`, referenced, or None.
    pub fn lookup_swap_cache(&self, entry: SwapEntry) -> Option<Pfn> {
        let _f = self.func("lookup_swap_cache");
        self.find_get_swap_page(entry)
    }

    /// Models __read_swap_cache_async(), mm/swap_state.c, v5.8: the page of
    /// the swap cache for `entry`, or a new locked page claimed for it
    /// (swapcache_prepare()) and added to the swap cache, for the caller to
    /// read into (the bool). None when the slot was freed meanwhile or no
    /// memory. A slot another CPU is adding to or deleting from the cache
    /// (EEXIST) is tried again once the cache changed. DIVERGENCE: 5.8
    /// retries after cond_resched(); the model sleeps until the swap cache
    /// or a SWAP_HAS_CACHE bit changes, which is when a retry can succeed.
    pub fn __read_swap_cache_async(
        &self,
        entry: SwapEntry,
        vma: &Vma,
        addr: VirtAddr,
    ) -> Option<(Pfn, bool)> {
        let _f = self.func("__read_swap_cache_async");
        let si = self.swap_info();
        loop {
            let seen = si.cache_generation();
            if let Some(page) = self.find_get_swap_page(entry) {
                return Some((page, false));
            }
            // alloc_page_vma(): the faulting CPU's node.
            let node = self.numa_node_for(vma, addr);
            let page = self.alloc_pages(0, node, false)?;
            match self.swapcache_prepare(entry) {
                Ok(()) => {
                    // __SetPageLocked(), __SetPageSwapBacked(): the page is
                    // this CPU's alone.
                    self.lock_page(page);
                    self.page(page).set_flag(pg::SWAPBACKED);
                    self.add_to_swap_cache(page, entry);
                    // lru_cache_add(): the page goes on the LRU.
                    self.page(page).set_flag(pg::LRU);
                    return Some((page, true));
                }
                Err(e) => {
                    self.put_page(page);
                    if e != SwapDupError::Exist {
                        return None;
                    }
                    self.note(|| "__read_swap_cache_async(): -EEXIST: wait and retry".to_string());
                    si.wait_cache_change(seen);
                }
            }
        }
    }

    /// Models swapin_readahead() without readahead (read_swap_cache_async()
    /// of the faulting slot), mm/swap_state.c, v5.8: the page holding
    /// `entry`, referenced, read from the device if it was not cached.
    pub fn swapin_readahead(&self, entry: SwapEntry, vma: &Vma, addr: VirtAddr) -> Option<Pfn> {
        let _f = self.func("swapin_readahead");
        let (page, new) = self.__read_swap_cache_async(entry, vma, addr)?;
        if new {
            self.swap_readpage(page);
        }
        Some(page)
    }

    /// Models free_swap_cache(), mm/swap_state.c, v5.8: an unmapped page
    /// leaves the swap cache if no PTE references its slot any more.
    pub fn free_swap_cache(&self, page: Pfn) {
        if self.page_swapcache(page) && !self.page_mapped(page) && self.trylock_page(page) {
            self.try_to_free_swap(page);
            self.unlock_page(page);
        }
    }

    /// Models free_page_and_swap_cache(), mm/swap_state.c, v5.8.
    pub fn free_page_and_swap_cache(&self, page: Pfn) {
        self.free_swap_cache(page);
        if !self.is_huge_zero_page(page) {
            self.put_page(page);
        }
    }
}

impl<E: Engine> Cpu<E> {
    /// Models migrate_page_move_mapping(), mm/migrate.c, v5.8, for a page
    /// in the swap cache: only the isolation and the cache may hold it
    /// (expected_page_refs() is 1 + the subpages); under the `i_pages` lock
    /// its count is frozen, and the new page takes its index, anon_vma,
    /// PageSwapBacked, PageSwapCache, slots and the cache's references.
    ///
    /// # Locking
    /// Called with both pages locked; takes the swap cache's `i_pages` lock.
    pub(crate) fn migrate_swapcache_page_move_mapping(
        &self,
        newpage: Pfn,
        page: Pfn,
    ) -> crate::migrate::MigrateRc {
        let _f = self.func("migrate_page_move_mapping");
        let si = self.swap_info();
        let nr = self.hpage_nr_pages(page);
        let entry = self.page(page).private.load(SeqCst);
        let expected = 1 + nr as i64;
        {
            let _x = si.i_pages_lock.lock(self);
            let cached = si.state().cache.get(&entry).copied();
            if self.page_count(page) != expected
                || cached != Some(page)
                || !self.page_ref_freeze(page, expected)
            {
                self.mark(crate::coverage::Mark::gives_up(
                    "migrate_page_move_mapping: extra references (-EAGAIN)",
                ));
                return crate::migrate::MigrateRc::Again;
            }
            let (old, new) = (self.page(page), self.page(newpage));
            new.index.init(old.index.load());
            new.mapping.init(old.mapping.load());
            self.page_ref_add(newpage, nr as i64); // add cache reference
            new.__set_flag(pg::SWAPBACKED);
            new.set_flag(pg::SWAPCACHE);
            let mut st = si.state();
            for i in 0..nr {
                self.page(newpage.add(i)).private.store(entry + i, SeqCst);
                st.cache.insert(entry + i, newpage.add(i)); // xas_store()
            }
            drop(st);
            if old.test_clear_flag(pg::DIRTY) {
                new.set_flag(pg::DIRTY);
            }
            self.page_ref_unfreeze(page, expected - nr as i64);
        }
        si.cache_changed();
        crate::migrate::MigrateRc::Success
    }
}
