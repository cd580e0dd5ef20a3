//! Page migration: mm/migrate.c.
//!
//! Models (v5.8): move_pages(2) for one target node (`do_pages_move`,
//! `add_page_for_migration`, `move_pages_and_store_status`,
//! `do_move_pages_to_node`), `migrate_pages` with `alloc_new_node_page`
//! (mm/mempolicy.c), `unmap_and_move`, `__unmap_and_move`,
//! `move_to_new_page`, `migrate_page`, `migrate_page_move_mapping` and
//! `migrate_page_copy`/`migrate_page_states` for anonymous pages and THPs
//! (x86_64 has ARCH_ENABLE_THP_MIGRATION: a PMD-mapped THP moves whole,
//! through a PMD migration entry, huge_memory.rs), `remove_migration_ptes`
//! and `remove_migration_pte` (also how split_huge_page() remaps its frozen
//! subpages), and the waits of a fault that meets a migration entry
//! (`__migration_entry_wait`, `pmd_migration_entry_wait`), which sleep until
//! the page is unlocked. A page remapped into a VM_LOCKED VMA is mlocked
//! (mlock.rs).
//!
//! Hugetlb pages move through `unmap_and_move_huge_page()` (hugetlb.rs),
//! whole, as a file page (hugetlbfs_migrate_page()) or an anonymous one.
//!
//! Leaves out: file pages but hugetlb ones and swap-cache pages (a
//! mapping's `migratepage`), non-LRU movable pages,
//! PG_writeback waits (no writeback), MIGRATE_ASYNC (move_pages(2) is
//! MIGRATE_SYNC), the split of a THP that cannot be allocated on the target
//! node (reported as unmodelled), device-private pages, the cpuset and
//! mempolicy checks of move_pages(2) (every node is allowed).

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::errno::Errno;
use crate::gup::FollFlags;
use crate::mm_types::{vm, MmStruct};
use crate::page::pg;
use crate::page_vma_mapped::{Pvmw, PvmwFlags};
use crate::pgtable::{EntryRef, Pmd, Pte};
use crate::rmap::{RmapLock, TtuFlags};
use crate::types::{Pfn, VirtAddr};
use std::sync::Arc;

/// One page's entry in move_pages(2)'s status array: the node the page is
/// on, or why it was not moved. `None`: not written (the call stopped first).
pub type PageStatus = Option<Result<u32, Errno>>;

/// What move_pages(2) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovePages {
    /// Per page address, in order.
    pub status: Vec<PageStatus>,
    /// The call's return: the pages that could not be migrated (a positive
    /// return, not an error), or an error.
    pub ret: Result<usize, Errno>,
}

/// What unmap_and_move() returns (MIGRATEPAGE_SUCCESS or an errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrateRc {
    Success,
    /// -EAGAIN: try again in the next pass.
    Again,
    /// -ENOMEM: no page on the target node.
    Nomem,
}

impl<E: Engine> Cpu<E> {
    /// Models remove_migration_ptes(), mm/migrate.c, v5.8: replace every
    /// migration entry for `old` by a PTE mapping `new`.
    pub fn remove_migration_ptes(&self, old: Pfn, new: Pfn, locked: bool) {
        let _f = self.func("remove_migration_ptes");
        if self.page_huge(new) {
            // rmap_walk()/rmap_walk_locked() of the page's file or anon_vma.
            let rmap_one = |c: &Self, vma: &Arc<crate::mm_types::Vma>, addr| {
                c.remove_migration_pte_huge(new, vma, addr, old)
            };
            if self.page_file(new).is_some() {
                self.rmap_walk_file(new, locked, rmap_one, |_| false);
                return;
            }
            let lock = if locked {
                RmapLock::Held
            } else {
                RmapLock::AnonVmaLockRead
            };
            self.rmap_walk_anon(new, lock, rmap_one, |_| false);
            return;
        }
        if self.page_file(new).is_some() {
            // A shmem page: rmap_walk_file().
            self.rmap_walk_file(
                new,
                locked,
                |c, vma, addr| c.remove_migration_pte(new, vma, addr, old),
                |_| false,
            );
            return;
        }
        let lock = if locked {
            RmapLock::Held
        } else {
            RmapLock::AnonVmaLockRead
        };
        self.rmap_walk_anon(
            new,
            lock,
            |c, vma, addr| c.remove_migration_pte(new, vma, addr, old),
            |_| false,
        );
    }

    /// Models remove_migration_pte(), mm/migrate.c, v5.8: each migration
    /// entry for `old` in `vma` maps `page`'s subpage again; in a VM_LOCKED
    /// VMA a base page is mlocked (mlock_vma_page()).
    ///
    /// # Locking
    /// page_vma_mapped_walk() takes the PTE lock.
    fn remove_migration_pte(
        &self,
        page: Pfn,
        vma: &std::sync::Arc<crate::mm_types::Vma>,
        addr: VirtAddr,
        old: Pfn,
    ) -> bool {
        let _f = self.func("remove_migration_pte");
        crate::vm_bug_on_page!(
            self,
            self.page_tail(page),
            page,
            "VM_BUG_ON_PAGE(PageTail(page), page)"
        );
        let mm = self.k.mm(vma.mm);
        let mut pvmw = Pvmw::new(
            old,
            vma.clone(),
            mm,
            addr,
            PvmwFlags {
                sync: true,
                migration: true,
            },
        );
        while self.page_vma_mapped_walk(&mut pvmw) {
            // PMD-mapped THP migration entry
            let Some(pte) = pvmw.pte else {
                crate::vm_bug_on_page!(
                    self,
                    !self.page_trans_compound(page),
                    page,
                    "VM_BUG_ON_PAGE(PageHuge(page) || !PageTransCompound(page), page)"
                );
                let pmd = pvmw.pmd.expect("a PMD-level match has its PMD");
                self.remove_migration_pmd(vma, pvmw.address, pmd, page);
                continue;
            };
            // check_pte() with PVMW_MIGRATION returns only a migration entry
            // for the page; 5.8 decodes it without a check.
            let Pte::Migration {
                pfn: entry_pfn,
                write,
            } = self.pte_read(pte)
            else {
                self.unmodelled(
                    "remove_migration_pte(): page_vma_mapped_walk() returned a PTE that is not a migration entry",
                    Some(page),
                );
            };
            // new = page - pvmw.page->index + linear_page_index(vma, pvmw.address)
            let new = Pfn((page.0 as i64 - self.page_to_pgoff(old) as i64
                + vma.linear_page_index(pvmw.address, self.k.geo.page_shift) as i64)
                as u64);
            let _ = entry_pfn;
            self.get_page(new);
            let mut flags = vma.vm_page_prot();
            flags.young = false;
            if write {
                self.maybe_mkwrite(&mut flags, vma);
            }
            self.set_pte_at(pte, Pte::Present { pfn: new, flags });
            if self.page_anon(new) {
                self.page_add_anon_rmap(new, vma, pvmw.address, false);
            } else {
                self.page_dup_rmap(new, false); // page_add_file_rmap()
            }
            // A subpage of a split THP in a VM_LOCKED VMA is mlocked again
            // (its PMD's split cleared PG_mlocked); `new` is locked, as every
            // subpage is while split_huge_page() remaps it.
            if vma.vm_flags() & vm::LOCKED != 0 && !self.page_trans_compound(new) {
                self.mlock_vma_page(new);
            }
            if self.page_trans_huge(page) && self.page_mlocked(page) {
                self.clear_page_mlock(page);
            }
        }
        true
    }

    /// Models migration_entry_to_page(), include/linux/swapops.h, v5.8: the
    /// page a migration entry names, which must be locked (its head) while
    /// any migration entry for it exists.
    pub fn migration_entry_to_page(&self, pfn: Pfn) -> Pfn {
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(pfn),
            pfn,
            "BUG_ON(!PageLocked(compound_head(p)))"
        );
        pfn
    }

    /// Models migration_entry_wait()/__migration_entry_wait(), mm/migrate.c,
    /// v5.8: if the PTE still holds a migration entry, sleep until its page is
    /// unlocked; the fault is then retried.
    ///
    /// # Locking
    /// Takes the PTE lock, drops it, then waits on the page lock.
    pub fn migration_entry_wait(&self, pmd: EntryRef, addr: VirtAddr) {
        let _f = self.func("migration_entry_wait");
        let Some(pte) = self.pte_offset(self.pmd_read(pmd), addr) else {
            return;
        };
        let ptl = self.pte_lockptr(pte.table).lock(self);
        let Pte::Migration { pfn, .. } = self.pte_read(pte) else {
            return;
        };
        // DIVERGENCE: 5.8 takes the reference on the entry's own page and
        // faults again while its count is 0 (a THP tail until
        // __split_huge_page_tail() sets it, a head that split_huge_page()
        // froze): a spin until the other CPU gets on. The model waits on the
        // head's lock instead (the tails inherit it, and a count is frozen
        // only under the page lock), without a reference when the count is 0
        // (its struct pages are never freed): it ends the same way, and the
        // explorer never schedules a spin that waits for another CPU.
        let page = self.compound_head(self.migration_entry_to_page(pfn));
        if !self.get_page_unless_zero(page) {
            drop(ptl);
            self.wait_on_page_locked(page);
            return;
        }
        drop(ptl);
        // put_and_wait_on_page_locked()
        self.wait_on_page_locked(page);
        self.put_page(page);
    }

    /// Models pmd_migration_entry_wait(), mm/migrate.c, v5.8.
    ///
    /// # Locking
    /// Takes the PMD lock, drops it, then waits on the page lock.
    pub fn pmd_migration_entry_wait(&self, _mm: &crate::mm_types::MmStruct<E>, pmd: EntryRef) {
        let _f = self.func("pmd_migration_entry_wait");
        let ptl = self.pmd_lockptr(pmd).lock(self);
        let Pmd::Migration { pfn, .. } = self.pmd_read(pmd) else {
            return;
        };
        if !self.get_page_unless_zero(pfn) {
            // As migration_entry_wait(): wait for the lock without a
            // reference rather than fault again while the count is frozen.
            drop(ptl);
            self.wait_on_page_locked(pfn);
            return;
        }
        drop(ptl);
        self.wait_on_page_locked(pfn);
        self.put_page(pfn);
    }

    // ---------------------------------------------------------------------
    // move_pages(2)
    // ---------------------------------------------------------------------

    /// Models do_pages_move(), mm/migrate.c, v5.8, with every page bound for
    /// `node`: each page address of `addrs` is looked up and queued
    /// (add_page_for_migration()); the queue is migrated when a page cannot be
    /// queued and at the end (move_pages_and_store_status()). `migrate_all`
    /// is MPOL_MF_MOVE_ALL. The node is valid (the scenario checks it).
    ///
    /// DIVERGENCE: migrate_prep()'s lru_add_drain_all() has nothing to do:
    /// the model has no per-CPU LRU pagevecs.
    pub fn do_pages_move(
        &self,
        mm: &Arc<MmStruct<E>>,
        addrs: &[VirtAddr],
        node: u32,
        migrate_all: bool,
    ) -> MovePages {
        let _f = self.func("do_pages_move");
        let mut status: Vec<PageStatus> = vec![None; addrs.len()];
        let mut pagelist: Vec<Pfn> = Vec::new();
        let mut queued_from: Option<usize> = None; // current_node, start
        for (i, &addr) in addrs.iter().enumerate() {
            let start = *queued_from.get_or_insert(i);
            // Errors in the page lookup or isolation are not fatal: they
            // are the page's status.
            let r = self.add_page_for_migration(mm, addr, node, &mut pagelist, migrate_all);
            if r == Ok(true) {
                continue;
            }
            status[i] = Some(r.map(|_| node));
            if let Err(ret) =
                self.move_pages_and_store_status(node, &mut pagelist, &mut status, start, i)
            {
                return MovePages { status, ret };
            }
            queued_from = None;
        }
        // out_flush:
        let ret = match queued_from {
            Some(start) => self
                .move_pages_and_store_status(node, &mut pagelist, &mut status, start, addrs.len())
                .map(|()| 0)
                .or_else(|r| r),
            None => Ok(0),
        };
        MovePages { status, ret }
    }

    /// Models move_pages_and_store_status(), mm/migrate.c, v5.8: migrate the
    /// queue; the queued pages `start..i` get `node` as their status. On a
    /// failure, `Err` holds the call's return: the pages not migrated (with
    /// those not yet tried, `nr_pages - i - 1`), or an error.
    #[allow(clippy::result_large_err)]
    fn move_pages_and_store_status(
        &self,
        node: u32,
        pagelist: &mut Vec<Pfn>,
        status: &mut [PageStatus],
        start: usize,
        i: usize,
    ) -> Result<(), Result<usize, Errno>> {
        if pagelist.is_empty() {
            return Ok(());
        }
        match self.do_move_pages_to_node(pagelist, node) {
            Ok(0) => {}
            Ok(failed) => {
                // `err += nr_pages - i - 1`, as 5.8 computes it: at the final
                // flush `i` is `nr_pages`, so the count comes out one short.
                let nr = status.len() as i64;
                let ret = failed as i64 + nr - i as i64 - 1;
                return Err(Ok(ret.max(0) as usize));
            }
            Err(e) => return Err(Err(e)),
        }
        for s in &mut status[start..i] {
            *s = Some(Ok(node));
        }
        Ok(())
    }

    /// Models do_move_pages_to_node(), mm/migrate.c, v5.8: migrate_pages()
    /// with alloc_new_node_page(); what is left on the list goes back to the
    /// LRU (putback_movable_pages()).
    fn do_move_pages_to_node(&self, pagelist: &mut Vec<Pfn>, node: u32) -> Result<usize, Errno> {
        let r = self.migrate_pages(pagelist, node);
        if r != Ok(0) {
            // putback_movable_pages()
            for page in pagelist.drain(..) {
                if self.page_huge(page) {
                    self.putback_active_hugepage(page);
                } else {
                    self.putback_lru_page(page);
                }
            }
        }
        r
    }

    /// Models add_page_for_migration(), mm/migrate.c, v5.8: the page at
    /// `addr`, taken off the LRU onto `pagelist` (`Ok(true)`); `Ok(false)`
    /// when it is already on `node`; else the page's status error (EFAULT:
    /// no VMA, or nothing or the zero page mapped (FOLL_DUMP); ENOENT;
    /// EACCES: mapped by another process without MPOL_MF_MOVE_ALL; EBUSY:
    /// not on the LRU, as a THP already queued).
    ///
    /// # Locking
    /// Takes `mmap_lock` for read; follow_page() takes the page-table lock.
    pub fn add_page_for_migration(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        node: u32,
        pagelist: &mut Vec<Pfn>,
        migrate_all: bool,
    ) -> Result<bool, Errno> {
        let _f = self.func("add_page_for_migration");
        let _mmap = mm.mmap_lock.read(self);
        // vma_migratable(): every anonymous VMA is (no VM_IO, VM_PFNMAP).
        let Some(vma) = mm.find_vma(addr).filter(|v| addr >= v.vm_start()) else {
            return Err(Errno::Efault);
        };
        // FOLL_DUMP to ignore special (like zero) pages
        let page = match self.follow_page(&vma, addr, FollFlags::GET | FollFlags::DUMP) {
            Err(e) => return Err(e),
            Ok(None) => return Err(Errno::Enoent),
            Ok(Some(page)) => page,
        };
        let r = if self.page(page).node == node {
            Ok(false)
        } else if self.page_mapcount(page) > 1 && !migrate_all {
            Err(Errno::Eacces)
        } else if self.page_huge(page) {
            // Only the head's address queues the hugetlb page; another
            // subpage's err is 0, so its status is the target node (`err ?:
            // current_node`). The isolation's result is not looked at.
            if self.page_head(page) {
                self.isolate_huge_page(page, pagelist);
                Ok(true)
            } else {
                Ok(false)
            }
        } else {
            let head = self.compound_head(page);
            if self.isolate_lru_page(head) {
                pagelist.push(head);
                Ok(true)
            } else {
                Err(Errno::Ebusy)
            }
        };
        // Either remove the duplicate refcount from isolate_lru_page() or
        // drop the page ref if it was not isolated.
        self.put_page(page);
        r
    }

    /// Models migrate_pages(), mm/migrate.c, v5.8, with
    /// alloc_new_node_page() (mm/mempolicy.c) and MIGRATE_SYNC: up to ten
    /// passes over `from`; a page that fails for good, or moves, leaves the
    /// list, one that may succeed later (-EAGAIN: extra references, a busy
    /// page lock) stays for the next pass. Returns the pages not migrated,
    /// or ENOMEM (the pages not yet tried stay on the list).
    pub fn migrate_pages(&self, from: &mut Vec<Pfn>, node: u32) -> Result<usize, Errno> {
        let _f = self.func("migrate_pages");
        let mut retry = 1;
        let mut nr_failed = 0;
        let mut pass = 0;
        while pass < 10 && retry > 0 {
            retry = 0;
            let mut i = 0;
            while i < from.len() {
                let page = from[i];
                let rc = if self.page_huge(page) {
                    self.unmap_and_move_huge_page(page, node, pass > 2)
                } else {
                    self.unmap_and_move(page, node, pass > 2)
                };
                match rc {
                    MigrateRc::Nomem => {
                        if self.page_trans_huge(page) && !self.page_huge(page) {
                            // 5.8 splits the THP onto the list and tries its
                            // subpages (split_huge_page_to_list(page, from)).
                            self.unmodelled(
                                "migrate_pages(): a THP that cannot be allocated on the target node (split onto the migration list)",
                                Some(page),
                            );
                        }
                        return Err(Errno::Enomem);
                    }
                    MigrateRc::Again => {
                        retry += 1;
                        i += 1;
                    }
                    MigrateRc::Success => {
                        from.remove(i);
                    }
                }
            }
            pass += 1;
        }
        nr_failed += retry;
        Ok(nr_failed)
    }

    /// Models unmap_and_move(), mm/migrate.c, v5.8, with
    /// alloc_new_node_page(): move one isolated page (a THP whole) to a new
    /// page on `node`. On success the old page loses the isolation
    /// reference (and is freed); on -EAGAIN it stays isolated for the next
    /// pass (the caller keeps it on the list).
    fn unmap_and_move(&self, page: Pfn, node: u32, force: bool) -> MigrateRc {
        let _f = self.func("unmap_and_move");
        let rc = if self.page_count(page) == 1 {
            // page was freed from under us. So we are done.
            self.page(page).clear_flag(pg::ACTIVE);
            self.mark(crate::coverage::Mark::reached(
                "unmap_and_move: the page was freed from under us",
            ));
            MigrateRc::Success
        } else {
            // alloc_new_node_page(): __GFP_THISNODE
            let order = if self.page_trans_huge(page) {
                self.k.geo.hpage_pmd_order()
            } else {
                0
            };
            let Some(newpage) = self.alloc_pages_thisnode(order, node) else {
                return MigrateRc::Nomem;
            };
            let rc = self.__unmap_and_move(page, newpage, force);
            if rc != MigrateRc::Success {
                self.put_page(newpage); // put_new:
            }
            rc
        };
        match rc {
            // releases reference grabbed during isolation
            MigrateRc::Success => self.put_page(page),
            MigrateRc::Again => {}
            MigrateRc::Nomem => unreachable!("returned above"),
        }
        rc
    }

    /// Models __unmap_and_move(), mm/migrate.c, v5.8, for an LRU page: lock
    /// it (trylock, or wait from the fourth pass on), replace its mappings
    /// by migration entries (try_to_unmap(TTU_MIGRATION)), move it, and map
    /// the new page (or the old one, if the move failed) where the entries
    /// are.
    ///
    /// # Locking
    /// Takes the page lock, then the new page's; try_to_unmap() and
    /// remove_migration_ptes() take the anon_vma lock and page-table locks.
    fn __unmap_and_move(&self, page: Pfn, newpage: Pfn, force: bool) -> MigrateRc {
        let _f = self.func("__unmap_and_move");
        if !self.trylock_page(page) {
            if !force {
                self.mark(crate::coverage::Mark::gives_up(
                    "__unmap_and_move: the page is locked (tried again in the next pass)",
                ));
                return MigrateRc::Again;
            }
            self.lock_page(page);
        }
        // page_get_anon_vma() keeps the anon_vma while the mapcount is 0.
        let anon_vma = if self.page_anon(page) {
            self.page_get_anon_vma(page)
        } else {
            None
        };
        // Block others from accessing the new page (ours alone: this cannot
        // fail).
        if !self.trylock_page(newpage) {
            self.bug("trylock_page(newpage) of a new page failed", Some(newpage));
        }
        let mut rc = MigrateRc::Again;
        let mut page_was_mapped = false;
        if self.page(page).mapping.load() == 0 {
            crate::vm_bug_on_page!(
                self,
                self.page_anon(page),
                page,
                "VM_BUG_ON_PAGE(PageAnon(page), page)"
            );
        } else if self.page_mapped(page) {
            // Establish migration ptes
            crate::vm_bug_on_page!(
                self,
                self.page_anon(page) && anon_vma.is_none(),
                page,
                "VM_BUG_ON_PAGE(PageAnon(page) && !PageKsm(page) && !anon_vma, page)"
            );
            self.try_to_unmap(
                page,
                TtuFlags {
                    migration: true,
                    ignore_mlock: true,
                    ignore_access: true,
                    ..TtuFlags::default()
                },
            );
            page_was_mapped = true;
        }
        if !self.page_mapped(page) {
            rc = self.move_to_new_page(newpage, page);
        } else {
            self.mark(crate::coverage::Mark::gives_up(
                "__unmap_and_move: still mapped after try_to_unmap()",
            ));
        }
        if page_was_mapped {
            let to = if rc == MigrateRc::Success {
                newpage
            } else {
                page
            };
            self.remove_migration_ptes(page, to, false);
        }
        self.unlock_page(newpage);
        if let Some(av) = anon_vma {
            self.put_anon_vma(av);
        }
        self.unlock_page(page);
        if rc == MigrateRc::Success {
            self.mark(crate::coverage::Mark::reached(
                "__unmap_and_move: page migrated",
            ));
            self.putback_lru_page(newpage);
        }
        rc
    }

    /// Models move_to_new_page() and migrate_page(), mm/migrate.c, v5.8, for
    /// an anonymous page without a swap cache (page_mapping() NULL):
    /// migrate_page_move_mapping(), then the copy of the bytes and states.
    pub(crate) fn move_to_new_page(&self, newpage: Pfn, page: Pfn) -> MigrateRc {
        let _f = self.func("move_to_new_page");
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        if self.page_swapcache(page) {
            // swap_aops.migratepage, migrate_page(): the new page takes the
            // old one's slots in the swap cache (swap_state.rs).
            let rc = self.migrate_swapcache_page_move_mapping(newpage, page);
            if rc == MigrateRc::Success {
                self.migrate_page_copy(newpage, page);
                // migrate_page_states(): the old page leaves the swap cache.
                self.page(page).clear_flag(pg::SWAPCACHE);
                let nr = self.hpage_nr_pages(page);
                for i in 0..nr {
                    self.page(page.add(i))
                        .private
                        .store(0, std::sync::atomic::Ordering::SeqCst);
                }
            }
            return rc;
        }
        if let Some(file) = self.page_file(page) {
            // shmem's a_ops->migratepage, migrate_page(): the new page takes
            // the old one's place in the cache; page->mapping of the old
            // page is cleared.
            let rc = self.migrate_file_page_move_mapping(file, newpage, page);
            if rc == MigrateRc::Success {
                self.migrate_page_copy(newpage, page);
                self.page(page).mapping.store(0);
            }
            return rc;
        }
        let rc = self.migrate_page_move_mapping(newpage, page);
        if rc == MigrateRc::Success {
            self.migrate_page_copy(newpage, page);
            // Anonymous page->mapping is cleared by free_pages_prepare(), so
            // PageAnon stays (PageMappingFlags).
        }
        rc
    }

    /// Models migrate_page_move_mapping(), mm/migrate.c, v5.8, for a page of
    /// a shmem file (and migrate_huge_page_move_mapping() for a hugetlb
    /// file's, which counts the same): only the cache and the isolation may
    /// hold it
    /// (expected_page_refs() is 2); under the `i_pages` lock its count is
    /// frozen, the new page takes its index, mapping, SwapBacked flag and
    /// place in the cache (with the cache's reference), and the old page
    /// keeps the isolation's reference.
    ///
    /// # Locking
    /// Takes the `i_pages` lock.
    pub(crate) fn migrate_file_page_move_mapping(
        &self,
        file: crate::types::FileId,
        newpage: Pfn,
        page: Pfn,
    ) -> MigrateRc {
        let _f = self.func("migrate_page_move_mapping");
        let inode = self.k.file(file);
        let _x = inode.mapping.i_pages_lock.lock(self);
        let idx = self.page(page).index.load();
        let cached = inode
            .mapping
            .pages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&idx)
            .copied();
        let expected = 2;
        if cached != Some(page) || !self.page_ref_freeze(page, expected) {
            self.mark(crate::coverage::Mark::gives_up(
                "migrate_page_move_mapping: extra references (-EAGAIN)",
            ));
            return MigrateRc::Again;
        }
        let (old, new) = (self.page(page), self.page(newpage));
        new.index.init(old.index.load());
        new.mapping.init(old.mapping.load());
        if old.test_flag(pg::SWAPBACKED) {
            new.__set_flag(pg::SWAPBACKED);
        }
        self.get_page(newpage); // page_ref_add(newpage, nr)
        inode
            .mapping
            .pages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(idx, newpage); // xas_store()
        self.page_ref_unfreeze(page, expected - 1);
        MigrateRc::Success
    }

    /// Models migrate_page_move_mapping(), mm/migrate.c, v5.8, for an
    /// anonymous page without a mapping: the only reference left must be
    /// the isolation's (expected_page_refs() is 1); the new page takes the
    /// old one's anon_vma and index.
    fn migrate_page_move_mapping(&self, newpage: Pfn, page: Pfn) -> MigrateRc {
        let _f = self.func("migrate_page_move_mapping");
        if self.page_count(page) != 1 {
            self.mark(crate::coverage::Mark::gives_up(
                "migrate_page_move_mapping: extra references (-EAGAIN)",
            ));
            return MigrateRc::Again;
        }
        // No turning back from here. The new page is locked and mapped
        // nowhere yet: no other CPU reaches its fields.
        let old = self.page(page);
        let new = self.page(newpage);
        new.index.init(old.index.load());
        new.mapping.init(old.mapping.load());
        if old.test_flag(pg::SWAPBACKED) {
            new.__set_flag(pg::SWAPBACKED);
        }
        MigrateRc::Success
    }

    /// Models migrate_page_copy() and migrate_page_states(), mm/migrate.c,
    /// v5.8: the bytes (copy_huge_page() of each subpage for a THP) and the
    /// page flags the model keeps.
    pub(crate) fn migrate_page_copy(&self, newpage: Pfn, page: Pfn) {
        let nr = if self.page_trans_huge(page) {
            self.k.geo.hpage_pmd_nr()
        } else {
            1
        };
        for i in 0..nr {
            self.copy_page(newpage.add(i), page.add(i));
        }
        let (old, new) = (self.page(page), self.page(newpage));
        if old.test_flag(pg::UPTODATE) {
            new.set_flag(pg::UPTODATE);
        }
        if old.test_clear_flag(pg::ACTIVE) {
            new.set_flag(pg::ACTIVE);
        }
        if old.test_flag(pg::DIRTY) {
            new.set_flag(pg::DIRTY);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::audit::audit;
    use crate::errno::Errno;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::task_mmu::MapKind;
    use crate::types::{CpuId, Geometry, VirtAddr};
    use crate::{Config, Cpu, Kernel, StdEngine, ThpPolicy};

    fn two_nodes(geo: Geometry, thp: ThpPolicy) -> Cpu<StdEngine> {
        let mut cfg = Config::new(geo);
        cfg.thp = thp;
        cfg.nodes = 2;
        Cpu::new(Kernel::<StdEngine>::new(cfg), CpuId(0))
    }

    fn pages(a: VirtAddr, n: u64, ps: u64) -> Vec<VirtAddr> {
        (0..n).map(|i| a.add_bytes(i * ps)).collect()
    }

    /// Base pages and a PMD-mapped THP move to node 1 with their bytes; the
    /// old frames are freed, the audit is clean, and a second move to the
    /// same node finds every page there already.
    #[test]
    fn move_pages_moves_base_pages_and_a_thp_whole() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            for thp in [ThpPolicy::Never, ThpPolicy::Always] {
                let cpu = two_nodes(geo, thp);
                let (ps, pmd) = (geo.page_size(), geo.pmd_size());
                let mm = cpu.mm_alloc();
                let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
                let n = geo.hpage_pmd_nr();
                for i in 0..n {
                    cpu.user_access(&mm, a.add_bytes(i * ps), Access::Write(i as u8 + 1))
                        .expect("write");
                }
                let before = cpu.page_info(&mm, a);
                assert_eq!(before.node, Some(0));
                let kind = before.kind;
                let r = cpu.do_pages_move(&mm, &pages(a, n, ps), 1, false);
                assert_eq!(r.ret, Ok(0), "{geo:?} {thp:?}");
                assert!(r.status.iter().all(|s| *s == Some(Ok(1))) || thp == ThpPolicy::Always);
                for i in 0..n {
                    let info = cpu.page_info(&mm, a.add_bytes(i * ps));
                    assert_eq!(info.node, Some(1), "page {i}");
                    assert_eq!(info.kind, kind, "page {i}");
                    let b = cpu.user_load(&mm, a.add_bytes(i * ps), 1).expect("read");
                    assert_eq!(b, vec![i as u8 + 1]);
                }
                if kind == MapKind::ThpPmd {
                    assert!(
                        cpu.k.mem.is_free(before.pfn.unwrap()),
                        "the old THP is freed"
                    );
                }
                let v = audit(&cpu);
                assert!(v.is_empty(), "{v:?}");
                assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
                let again = cpu.do_pages_move(&mm, &pages(a, n, ps), 1, false);
                assert!(again.status.iter().all(|s| *s == Some(Ok(1))), "{again:?}");
                cpu.mmput(&mm);
            }
        }
    }

    /// A THP one process maps by a PMD and another by PTEs (the parent's PMD
    /// split by its write after fork) moves whole with MPOL_MF_MOVE_ALL:
    /// remove_migration_pmd() maps the new THP by the child's PMD and
    /// remove_migration_pte() by the parent's PTEs, without PageDoubleMap,
    /// as in 5.8; every count holds (the audit) and each process keeps its
    /// bytes.
    #[test]
    fn a_thp_mapped_by_a_pmd_and_by_ptes_moves_whole() {
        use crate::page::pg;
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let cpu = two_nodes(geo, ThpPolicy::Always);
            let (ps, pmd) = (geo.page_size(), geo.pmd_size());
            let mm = cpu.mm_alloc();
            let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
            cpu.user_access(&mm, a, Access::Write(1)).expect("write");
            let child = cpu.dup_mm(&mm).expect("fork");
            // The parent's write splits its PMD and copies one subpage.
            cpu.user_access(&mm, a.add_bytes(ps), Access::Write(2))
                .expect("write");
            assert_eq!(cpu.page_info(&child, a).kind, MapKind::ThpPmd);
            assert_eq!(cpu.page_info(&mm, a).kind, MapKind::ThpPte);
            let n = geo.hpage_pmd_nr();
            let r = cpu.do_pages_move(&child, &pages(a, n, ps), 1, true);
            assert_eq!(r.ret, Ok(0), "{geo:?}: {r:?}");
            let (c, p) = (cpu.page_info(&child, a), cpu.page_info(&mm, a));
            assert_eq!((c.kind, c.node), (MapKind::ThpPmd, Some(1)));
            assert_eq!((p.kind, p.node, p.pfn), (MapKind::ThpPte, Some(1), c.pfn));
            let head = c.pfn.unwrap();
            assert!(!cpu.page(head).test_flag_peek(pg::DOUBLE_MAP));
            let v = audit(&cpu);
            assert!(v.is_empty(), "{geo:?}: {v:?}");
            assert_eq!(cpu.user_load(&child, a, 1).unwrap(), vec![1]);
            assert_eq!(cpu.user_load(&child, a.add_bytes(ps), 1).unwrap(), vec![0]);
            assert_eq!(cpu.user_load(&mm, a, 1).unwrap(), vec![1]);
            assert_eq!(cpu.user_load(&mm, a.add_bytes(ps), 1).unwrap(), vec![2]);
            assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
            cpu.mmput(&child);
            cpu.mmput(&mm);
            assert!(audit(&cpu).is_empty());
        }
    }

    /// A page another process maps stays without MPOL_MF_MOVE_ALL (EACCES)
    /// and moves with it, for both; an unmapped address is EFAULT (FOLL_DUMP
    /// of an anonymous VMA) and one outside every VMA too.
    #[test]
    fn move_pages_statuses() {
        let geo = Geometry::TINY;
        let cpu = two_nodes(geo, ThpPolicy::Never);
        let ps = geo.page_size();
        let mm = cpu.mm_alloc();
        let a = cpu.do_mmap(&mm, 2 * ps, Prot::ReadWrite, ps).expect("mmap");
        cpu.user_access(&mm, a, Access::Write(5)).expect("write");
        let child = cpu.dup_mm(&mm).expect("fork");
        let r = cpu.do_pages_move(&mm, &[a, a.add_bytes(ps)], 1, false);
        assert_eq!(
            r.status,
            vec![Some(Err(Errno::Eacces)), Some(Err(Errno::Efault))]
        );
        assert_eq!(r.ret, Ok(0));
        let r = cpu.do_pages_move(&mm, &[a], 1, true);
        assert_eq!(r.status, vec![Some(Ok(1))]);
        let (p, c) = (cpu.page_info(&mm, a), cpu.page_info(&child, a));
        assert_eq!((p.node, c.pfn), (Some(1), p.pfn));
        let far = VirtAddr(geo.task_size() - ps);
        let r = cpu.do_pages_move(&mm, &[far], 1, false);
        assert_eq!(r.status, vec![Some(Err(Errno::Efault))]);
        let v = audit(&cpu);
        assert!(v.is_empty(), "{v:?}");
        cpu.mmput(&child);
        cpu.mmput(&mm);
        assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
    }
}
