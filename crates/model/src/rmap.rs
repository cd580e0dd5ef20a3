//! Reverse mapping of anonymous pages: mm/rmap.c.
//!
//! Models (v5.8): `__anon_vma_prepare`, `anon_vma_clone`, `anon_vma_fork`,
//! `unlink_anon_vmas`, the mapcount side of mapping a page
//! (`page_add_new_anon_rmap`, `do_page_add_anon_rmap`, `page_dup_rmap`,
//! `page_remove_rmap`, `page_remove_anon_compound_rmap`,
//! `page_move_anon_rmap`, `__page_set_anon_rmap`), the anon_vma lookups
//! (`page_get_anon_vma`, `page_lock_anon_vma_read`), `rmap_walk_anon`,
//! `try_to_unmap` and `try_to_unmap_one` (the parts split and migration need).
//! The lock order lives in `sync::lock_order`.
//!
//! rmap_walk_file() walks a file page's i_mmap (hugetlb and shmem pages).
//!
//! Leaves out: KSM, `page_referenced`, munlock, reclaim's swap-out
//! branch of try_to_unmap_one (a later issue), find_mergeable_anon_vma()
//! (DIVERGENCE: a new VMA never shares a neighbour's anon_vma), anon_vma reuse
//! by degree.

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::fixes::Fix;
use crate::mm_types::{vm, AnonVma, MmStruct, Vma};
use crate::page::{anon_mapping, pg};
use crate::page_vma_mapped::{Pvmw, PvmwFlags};
use crate::pgtable::Pte;
use crate::types::{AnonVmaId, Pfn, VirtAddr};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// How rmap_walk_anon() gets the page's anon_vma: rmap_walk_locked() (the
/// caller holds its lock), or rmap_walk() with `rwc->anon_lock` set to
/// page_lock_anon_vma_read() (try_to_unmap()) or unset (anon_vma_lock_read()
/// of page_anon_vma(), as remove_migration_ptes() has it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmapLock {
    Held,
    PageLockAnonVmaRead,
    AnonVmaLockRead,
}

/// `enum ttu_flags` (the bits the model uses).
#[derive(Clone, Copy, Debug, Default)]
pub struct TtuFlags {
    /// TTU_MIGRATION.
    pub migration: bool,
    /// TTU_SPLIT_HUGE_PMD.
    pub split_huge_pmd: bool,
    /// TTU_SPLIT_FREEZE.
    pub split_freeze: bool,
    /// TTU_RMAP_LOCKED: the caller holds the anon_vma lock.
    pub rmap_locked: bool,
    /// TTU_SYNC: walk page tables under their locks (5.13's fix of seed 001's
    /// race in 5.8 terms). DIVERGENCE: 5.8 has no TTU_SYNC (732ed55823fc,
    /// 5.13); split_huge_page() passes it while the fix `rmap-pmd-under-ptl`
    /// is applied, the default.
    pub sync: bool,
    /// TTU_IGNORE_MLOCK.
    pub ignore_mlock: bool,
    /// TTU_IGNORE_ACCESS: do not keep a recently referenced page mapped.
    pub ignore_access: bool,
    /// TTU_MUNLOCK: try_to_munlock()'s walk: mlock the page again if a
    /// VM_LOCKED VMA maps it, unmap nothing.
    pub munlock: bool,
}

impl<E: Engine> Cpu<E> {
    /// Models anon_vma_prepare()/__anon_vma_prepare(), mm/rmap.c, v5.8: give
    /// the VMA an anon_vma before its first anonymous page. False on ENOMEM.
    ///
    /// # Locking
    /// Takes the anon_vma lock for write, then `mm->page_table_lock`.
    pub fn anon_vma_prepare(&self, mm: &MmStruct<E>, vma: &Arc<Vma>) -> bool {
        if vma.anon_vma().is_some() {
            return true;
        }
        let _f = self.func("__anon_vma_prepare");
        let av = self.k.register_anon_vma(|id| AnonVma::new(id, id, None));
        let root = self.k.anon_vma(av.root);
        root.rwsem.down_write(self);
        let ptl = mm.page_table_lock.lock(self);
        if vma.anon_vma().is_none() {
            vma.set_anon_vma(Some(av.id));
            self.anon_vma_chain_link(vma, &av);
        }
        drop(ptl);
        root.rwsem.up_write(self);
        true
    }

    /// Models anon_vma_chain_link().
    fn anon_vma_chain_link(&self, vma: &Arc<Vma>, av: &AnonVma<E>) {
        vma.chains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(av.id);
        av.vmas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(vma.clone());
    }

    /// Models anon_vma_clone(), mm/rmap.c, v5.8: link `dst` to every anon_vma
    /// `src` is linked to (used by fork and by __split_vma()).
    ///
    /// # Locking
    /// Takes each anon_vma root lock for write.
    pub fn anon_vma_clone(&self, dst: &Arc<Vma>, src: &Arc<Vma>) {
        let _f = self.func("anon_vma_clone");
        let chains = src.chains.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for id in chains.iter().rev() {
            let av = self.k.anon_vma(*id);
            let root = self.k.anon_vma(av.root);
            root.rwsem.down_write(self);
            self.anon_vma_chain_link(dst, &av);
            root.rwsem.up_write(self);
        }
    }

    /// Models anon_vma_fork(), mm/rmap.c, v5.8: the child's VMA is linked to all
    /// of the parent's anon_vmas and gets its own anon_vma under the same root.
    ///
    /// # Locking
    /// Takes the root anon_vma lock for write.
    pub fn anon_vma_fork(&self, vma: &Arc<Vma>, pvma: &Arc<Vma>) {
        let _f = self.func("anon_vma_fork");
        let Some(parent) = pvma.anon_vma() else {
            return;
        };
        vma.set_anon_vma(None);
        self.anon_vma_clone(vma, pvma);
        let root = self.k.anon_vma(parent).root;
        let av = self
            .k
            .register_anon_vma(|id| AnonVma::new(id, root, Some(parent)));
        self.k.anon_vma(root).refcount.fetch_add(1, SeqCst);
        vma.set_anon_vma(Some(av.id));
        let rootav = self.k.anon_vma(root);
        rootav.rwsem.down_write(self);
        self.anon_vma_chain_link(vma, &av);
        rootav.rwsem.up_write(self);
    }

    /// Models unlink_anon_vmas(), mm/rmap.c, v5.8: remove the VMA from the
    /// interval trees of its anon_vmas.
    ///
    /// # Locking
    /// Takes each anon_vma root lock for write.
    pub fn unlink_anon_vmas(&self, vma: &Arc<Vma>) {
        let _f = self.func("unlink_anon_vmas");
        let chains = std::mem::take(&mut *vma.chains.lock().unwrap_or_else(|p| p.into_inner()));
        for id in chains {
            let av = self.k.anon_vma(id);
            let root = self.k.anon_vma(av.root);
            root.rwsem.down_write(self);
            av.vmas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|v| !Arc::ptr_eq(v, vma));
            root.rwsem.up_write(self);
        }
    }

    /// Models __page_set_anon_rmap(), mm/rmap.c, v5.8.
    fn __page_set_anon_rmap(&self, page: Pfn, vma: &Vma, address: VirtAddr, exclusive: bool) {
        let head = self.compound_head(page);
        let Some(mut av) = vma.anon_vma() else {
            self.bug("BUG_ON(!anon_vma)", Some(page));
        };
        if self.page_anon(head) {
            return;
        }
        // An exclusively-mapped page points at the VMA's own anon_vma; else at
        // the root so every process of the tree is searched.
        if !exclusive {
            av = self.k.anon_vma(av).root;
        }
        let p = self.page(head);
        p.mapping.store(anon_mapping(av));
        p.index
            .store(vma.linear_page_index(address, self.k.geo.page_shift));
    }

    /// Models page_add_new_anon_rmap(), mm/rmap.c, v5.8.
    pub fn page_add_new_anon_rmap(&self, page: Pfn, vma: &Vma, address: VirtAddr, compound: bool) {
        crate::vm_bug_on!(
            self,
            address < vma.vm_start() || address >= vma.vm_end(),
            "VM_BUG_ON_VMA(address < vma->vm_start || address >= vma->vm_end, vma)"
        );
        // The page is new: this CPU's alone until it is mapped, so its fields
        // change without scheduling points (__SetPageSwapBacked(),
        // atomic_set(), and __page_set_anon_rmap()'s WRITE_ONCE()s).
        self.page(page).__set_flag(pg::SWAPBACKED);
        if compound {
            crate::vm_bug_on_page!(
                self,
                !self.page_trans_huge(page),
                page,
                "VM_BUG_ON_PAGE(!PageTransHuge(page), page)"
            );
            self.page(page).compound_mapcount.init(0);
            // hpage_pincount_available(): the new page is this CPU's alone, so
            // its order is read without a scheduling point.
            if self.page(page).compound_order_peek() > 1 {
                self.page(page).reset_compound_pincount();
            }
        } else {
            crate::vm_bug_on_page!(
                self,
                self.page_trans_compound(page),
                page,
                "VM_BUG_ON_PAGE(PageTransCompound(page), page)"
            );
            self.page(page).mapcount.init(0);
        }
        // __page_set_anon_rmap(page, vma, address, 1) of a page not yet anon.
        let Some(av) = vma.anon_vma() else {
            self.bug("BUG_ON(!anon_vma)", Some(page));
        };
        let p = self.page(page);
        p.mapping.init(anon_mapping(av));
        p.index
            .init(vma.linear_page_index(address, self.k.geo.page_shift));
    }

    /// Models page_add_anon_rmap(), mm/rmap.c, v5.8.
    pub fn page_add_anon_rmap(&self, page: Pfn, vma: &Vma, address: VirtAddr, compound: bool) {
        self.do_page_add_anon_rmap(page, vma, address, compound, false);
    }

    /// Models do_page_add_anon_rmap(), mm/rmap.c, v5.8: `exclusive` is
    /// RMAP_EXCLUSIVE (do_swap_page() of a page it reused).
    pub fn do_page_add_anon_rmap(
        &self,
        page: Pfn,
        vma: &Vma,
        address: VirtAddr,
        compound: bool,
        exclusive: bool,
    ) {
        let first = if compound {
            crate::vm_bug_on_page!(
                self,
                !self.page_locked(page),
                page,
                "VM_BUG_ON_PAGE(!PageLocked(page), page)"
            );
            crate::vm_bug_on_page!(
                self,
                !self.page_trans_huge(page),
                page,
                "VM_BUG_ON_PAGE(!PageTransHuge(page), page)"
            );
            self.page(page).compound_mapcount.add_return(1) == 0
        } else {
            self.page(page).mapcount.add_return(1) == 0
        };
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        if first {
            self.__page_set_anon_rmap(page, vma, address, exclusive);
        }
    }

    /// Models page_dup_rmap(), include/linux/rmap.h, v5.8 (fork).
    pub fn page_dup_rmap(&self, page: Pfn, compound: bool) {
        if compound {
            self.page(page).compound_mapcount.fetch_add(1);
        } else {
            self.page(page).mapcount.fetch_add(1);
        }
    }

    /// Models page_remove_rmap(), mm/rmap.c, v5.8: the last unmap of a page
    /// clears PG_mlocked (clear_page_mlock()).
    ///
    /// # Locking
    /// Called under the page-table lock of the mapping; clear_page_mlock()
    /// takes `lru_lock`.
    pub fn page_remove_rmap(&self, page: Pfn, compound: bool) {
        let _f = self.func("page_remove_rmap");
        if compound {
            self.page_remove_anon_compound_rmap(page);
            return;
        }
        // page still mapped by someone else?
        if self.page(page).mapcount.add_return(-1) >= 0 {
            return;
        }
        if self.page_mlocked(page) {
            self.clear_page_mlock(page);
        }
        if self.page_trans_compound(page) {
            let head = self.compound_head(page);
            self.deferred_split_huge_page(head);
        }
    }

    /// Models page_remove_anon_compound_rmap(), mm/rmap.c, v5.8: the last PMD
    /// unmap of a THP clears PG_mlocked.
    fn page_remove_anon_compound_rmap(&self, page: Pfn) {
        if self.page(page).compound_mapcount.add_return(-1) >= 0 {
            return;
        }
        let nr_pmd = self.k.geo.hpage_pmd_nr();
        if self.page(page).test_clear_flag(pg::DOUBLE_MAP) {
            // Subpages can be mapped with PTEs too. Check how many of them are
            // still mapped.
            let mut nr = 0;
            for i in 0..nr_pmd {
                if self.page(page.add(i)).mapcount.add_return(-1) < 0 {
                    nr += 1;
                }
            }
            // Queue the page for deferred split if at least one small page of
            // the compound page is unmapped, but at least one small page is
            // still mapped.
            if nr > 0 && nr < nr_pmd {
                self.deferred_split_huge_page(page);
            }
        }
        if self.page_mlocked(page) {
            self.clear_page_mlock(page);
        }
    }

    /// Models page_move_anon_rmap(), mm/rmap.c, v5.8: an exclusively owned page
    /// moves to the faulting VMA's anon_vma.
    pub fn page_move_anon_rmap(&self, page: Pfn, vma: &Vma) {
        let head = self.compound_head(page);
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(head),
            head,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        let Some(av) = vma.anon_vma() else {
            self.bug("VM_BUG_ON_VMA(!anon_vma, vma)", Some(head));
        };
        self.page(head).mapping.store(anon_mapping(av));
    }

    /// page_to_pgoff(): the linear index of a (sub)page; a hugetlb head's
    /// index is in huge pages (PageHeadHuge(): `index << compound_order`).
    pub fn page_to_pgoff(&self, page: Pfn) -> u64 {
        let head = self.compound_head(page);
        if head == page && self.page_huge(page) {
            return self.page(head).index.load() << self.page(head).compound_order_peek();
        }
        self.page(head).index.load() + (page.0 - head.0)
    }

    /// hpage_nr_pages().
    pub fn hpage_nr_pages(&self, page: Pfn) -> u64 {
        if self.page_trans_huge(page) {
            self.k.geo.hpage_pmd_nr()
        } else {
            1
        }
    }

    /// Models __vma_address(), mm/internal.h, v5.8: the user address at which
    /// `page` is expected in `vma`, not clamped to the VMA: a THP's head may
    /// lie below vm_start (unsigned arithmetic, as in the kernel).
    pub fn __vma_address(&self, page: Pfn, vma: &Vma) -> u64 {
        let pgoff = self.page_to_pgoff(page);
        vma.vm_start()
            .0
            .wrapping_add(pgoff.wrapping_sub(vma.vm_pgoff()) << self.k.geo.page_shift)
    }

    /// Models vma_address(), mm/internal.h, v5.8: __vma_address() clamped to
    /// vm_start; the page must overlap the VMA.
    pub fn vma_address(&self, page: Pfn, vma: &Vma) -> VirtAddr {
        let start = self.__vma_address(page, vma);
        let end = start.wrapping_add(self.k.geo.page_size() * (self.hpage_nr_pages(page) - 1));
        // page should be within @vma mapping range
        crate::vm_bug_on!(
            self,
            end < vma.vm_start().0 || start >= vma.vm_end().0,
            "VM_BUG_ON_VMA(end < vma->vm_start || start >= vma->vm_end, vma)"
        );
        VirtAddr(start.max(vma.vm_start().0))
    }

    /// The anon_vma a page's mapping points at (page_anon_vma()).
    pub fn page_anon_vma(&self, page: Pfn) -> Option<AnonVmaId> {
        self.page(self.compound_head(page)).anon_vma()
    }

    /// Models page_get_anon_vma(), mm/rmap.c, v5.8: a reference on the page's
    /// anon_vma, if the page is still mapped.
    pub fn page_get_anon_vma(&self, page: Pfn) -> Option<AnonVmaId> {
        let av = self.page_anon_vma(page)?;
        self.k.anon_vma(av).refcount.fetch_add(1, SeqCst);
        if !self.page_mapped(page) {
            self.put_anon_vma(av);
            return None;
        }
        Some(av)
    }

    /// Models put_anon_vma(). DIVERGENCE: anon_vmas are never freed (they live in
    /// an arena for the whole run); only the count moves.
    pub fn put_anon_vma(&self, av: AnonVmaId) {
        self.k.anon_vma(av).refcount.fetch_sub(1, SeqCst);
    }

    /// Models page_lock_anon_vma_read(), mm/rmap.c, v5.8: the page's anon_vma
    /// with its root locked for read, if the page is mapped.
    ///
    /// # Locking
    /// Takes the root anon_vma rwsem for read; release with
    /// [`Cpu::anon_vma_unlock_read`].
    pub fn page_lock_anon_vma_read(&self, page: Pfn) -> Option<AnonVmaId> {
        let av = self.page_anon_vma(page)?;
        if !self.page_mapped(page) {
            return None;
        }
        let root = self.k.anon_vma(self.k.anon_vma(av).root);
        root.rwsem.down_read(self);
        if !self.page_mapped(page) {
            root.rwsem.up_read(self);
            return None;
        }
        Some(av)
    }

    /// anon_vma_lock_read().
    ///
    /// # Locking
    /// Takes the root anon_vma rwsem for read.
    pub fn anon_vma_lock_read(&self, av: AnonVmaId) {
        let root = self.k.anon_vma(self.k.anon_vma(av).root);
        root.rwsem.down_read(self);
    }

    /// anon_vma_unlock_read().
    pub fn anon_vma_unlock_read(&self, av: AnonVmaId) {
        let root = self.k.anon_vma(self.k.anon_vma(av).root);
        root.rwsem.up_read(self);
    }

    /// anon_vma_lock_write().
    ///
    /// # Locking
    /// Takes the root anon_vma rwsem for write.
    pub fn anon_vma_lock_write(&self, av: AnonVmaId) {
        let root = self.k.anon_vma(self.k.anon_vma(av).root);
        root.rwsem.down_write(self);
    }

    /// anon_vma_unlock_write().
    pub fn anon_vma_unlock_write(&self, av: AnonVmaId) {
        let root = self.k.anon_vma(self.k.anon_vma(av).root);
        root.rwsem.up_write(self);
    }

    /// Models rmap_walk_anon(), mm/rmap.c, v5.8: call `rmap_one` for every VMA
    /// that may map the page, stopping when it returns false or `done` holds.
    /// `lock` says how the anon_vma is found and locked (see [`RmapLock`]).
    ///
    /// # Locking
    /// Takes the root anon_vma rwsem for read unless the caller holds it.
    pub fn rmap_walk_anon(
        &self,
        page: Pfn,
        lock: RmapLock,
        mut rmap_one: impl FnMut(&Self, &Arc<Vma>, VirtAddr) -> bool,
        done: impl Fn(&Self) -> bool,
    ) {
        let _f = self.func("rmap_walk_anon");
        let locked = lock == RmapLock::Held;
        let av = match lock {
            RmapLock::Held => {
                let av = self.page_anon_vma(page);
                // anon_vma disappear under us?
                crate::vm_bug_on_page!(self, av.is_none(), page, "VM_BUG_ON_PAGE(!anon_vma, page)");
                av
            }
            // rmap_walk_anon_lock() with rwc->anon_lock.
            RmapLock::PageLockAnonVmaRead => self.page_lock_anon_vma_read(page),
            // rmap_walk_anon_lock() without it: page_anon_vma(), then
            // anon_vma_lock_read(), whether or not the page is still mapped.
            RmapLock::AnonVmaLockRead => self.page_anon_vma(page).inspect(|&av| {
                let root = self.k.anon_vma(self.k.anon_vma(av).root);
                root.rwsem.down_read(self);
            }),
        };
        let Some(av) = av else {
            return;
        };
        let vmas = self
            .k
            .anon_vma(av)
            .vmas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.rmap_walk_vmas(page, vmas, &mut rmap_one, &done);
        if !locked {
            self.anon_vma_unlock_read(av);
        }
    }

    /// The loop rmap_walk_anon() and rmap_walk_file() share: `rmap_one` for
    /// each VMA of `vmas` whose pgoff range overlaps the page's
    /// (anon_vma_interval_tree_foreach() / vma_interval_tree_foreach()), at
    /// the page's address there, until it returns false or `done` holds.
    fn rmap_walk_vmas(
        &self,
        page: Pfn,
        vmas: Vec<Arc<Vma>>,
        rmap_one: &mut impl FnMut(&Self, &Arc<Vma>, VirtAddr) -> bool,
        done: &impl Fn(&Self) -> bool,
    ) {
        let pgoff_start = self.page_to_pgoff(page);
        let pgoff_end = pgoff_start + self.hpage_nr_pages(page) - 1;
        let ps = self.k.geo.page_shift;
        for vma in vmas {
            let v_start = vma.vm_pgoff();
            let v_end = v_start + ((vma.vm_end().0 - vma.vm_start().0) >> ps) - 1;
            if v_end < pgoff_start || v_start > pgoff_end {
                continue;
            }
            let address = self.vma_address(page, &vma);
            if !rmap_one(self, &vma, address) || done(self) {
                break;
            }
        }
    }

    /// Models rmap_walk_file(), mm/rmap.c, v5.8: `rmap_one` for each VMA of
    /// the page's file whose range covers it, stopping when it returns false
    /// or `done` holds. `locked`: the caller holds the file's
    /// `i_mmap_rwsem` (rmap_walk_locked()).
    ///
    /// # Locking
    /// Takes the file's `i_mmap_rwsem` for read unless the caller holds it.
    pub fn rmap_walk_file(
        &self,
        page: Pfn,
        locked: bool,
        mut rmap_one: impl FnMut(&Self, &Arc<Vma>, VirtAddr) -> bool,
        done: impl Fn(&Self) -> bool,
    ) {
        let _f = self.func("rmap_walk_file");
        // The page lock not only makes sure that page->mapping cannot
        // suddenly be NULLified by truncation, it makes sure that the
        // structure at mapping cannot be freed and reused yet.
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        let Some(file) = self.page_file(page) else {
            return;
        };
        let inode = self.k.file(file);
        if !locked {
            inode.mapping.i_mmap_rwsem.down_read(self);
        }
        self.rmap_walk_vmas(page, inode.mappers(), &mut rmap_one, &done);
        if !locked {
            inode.mapping.i_mmap_rwsem.up_read(self);
        }
    }

    /// Models page_referenced(), mm/rmap.c, v5.8: how many mappings of the
    /// page had their accessed bit set (each is cleared), and whether a
    /// VM_LOCKED VMA maps it (the walk stops there). `is_locked`: the caller
    /// holds the page lock (a file page is otherwise trylocked, and counted
    /// referenced when that fails).
    ///
    /// # Locking
    /// Takes the anon_vma lock for read (or the file's `i_mmap_rwsem`), then
    /// each mapping's page-table lock.
    pub fn page_referenced(&self, page: Pfn, is_locked: bool) -> (i64, bool) {
        let _f = self.func("page_referenced");
        let mapcount = std::cell::Cell::new(self.total_mapcount(page));
        if mapcount.get() == 0 || self.page(page).mapping.load() == 0 {
            return (0, false);
        }
        let file = self.page_file(page);
        let we_locked = !is_locked && file.is_some();
        if we_locked && !self.trylock_page(page) {
            return (1, false);
        }
        let referenced = std::cell::Cell::new(0i64);
        let vm_locked = std::cell::Cell::new(false);
        let one = |c: &Self, vma: &Arc<Vma>, addr: VirtAddr| {
            c.page_referenced_one(page, vma, addr, &mapcount, &referenced, &vm_locked)
        };
        let done = |_: &Self| mapcount.get() <= 0;
        if file.is_some() {
            self.rmap_walk_file(page, false, one, done);
        } else {
            self.rmap_walk_anon(page, RmapLock::PageLockAnonVmaRead, one, done);
        }
        if we_locked {
            self.unlock_page(page);
        }
        (referenced.get(), vm_locked.get())
    }

    /// Models page_referenced_one(), mm/rmap.c, v5.8: clear the accessed bit
    /// of each mapping of the page in `vma`; returns false to stop the walk.
    ///
    /// # Locking
    /// page_vma_mapped_walk() takes the page-table lock of each entry.
    fn page_referenced_one(
        &self,
        page: Pfn,
        vma: &Arc<Vma>,
        address: VirtAddr,
        mapcount: &std::cell::Cell<i64>,
        referenced_total: &std::cell::Cell<i64>,
        vm_locked: &std::cell::Cell<bool>,
    ) -> bool {
        let _f = self.func("page_referenced_one");
        let mm = self.k.mm(vma.mm);
        let mut pvmw = Pvmw::new(page, vma.clone(), mm.clone(), address, PvmwFlags::default());
        let mut referenced = 0;
        while self.page_vma_mapped_walk(&mut pvmw) {
            if vma.vm_flags() & vm::LOCKED != 0 {
                pvmw.done();
                vm_locked.set(true);
                return false;
            }
            if let Some(pte) = pvmw.pte {
                if self.ptep_test_and_clear_young(pte) {
                    referenced += 1;
                }
            } else if let Some(pmd) = pvmw.pmd {
                if self.pmdp_test_and_clear_young(pmd) {
                    // pmdp_clear_flush_young(): x86 flushes the range.
                    let haddr = self.k.geo.pmd_align_down(pvmw.address);
                    self.flush_tlb_range(mm.id, haddr, haddr.add_bytes(self.k.geo.pmd_size()));
                    referenced += 1;
                }
            }
            mapcount.set(mapcount.get() - 1);
        }
        if referenced > 0 {
            referenced_total.set(referenced_total.get() + 1);
        }
        mapcount.get() > 0
    }

    /// Models try_to_unmap(), mm/rmap.c, v5.8: returns whether the page ended
    /// up unmapped (`!page_mapcount(page)`). A file (hugetlb) page is walked
    /// through its file's `i_mmap` (rmap_walk_file()).
    pub fn try_to_unmap(&self, page: Pfn, flags: TtuFlags) -> bool {
        let _f = self.func("try_to_unmap");
        // page_mapcount_is_zero()
        let done = |c: &Self| c.total_mapcount(page) == 0;
        if self.page_file(page).is_some() {
            self.rmap_walk_file(
                page,
                flags.rmap_locked,
                |c, vma, addr| c.try_to_unmap_one(page, vma, addr, flags),
                done,
            );
            return self.page_mapcount(page) == 0;
        }
        // rmap_walk_locked() with TTU_RMAP_LOCKED; else rmap_walk() with
        // .anon_lock = page_lock_anon_vma_read.
        let lock = if flags.rmap_locked {
            RmapLock::Held
        } else {
            RmapLock::PageLockAnonVmaRead
        };
        self.rmap_walk_anon(
            page,
            lock,
            |c, vma, addr| c.try_to_unmap_one(page, vma, addr, flags),
            done,
        );
        self.page_mapcount(page) == 0
    }

    /// Models try_to_unmap_one(), mm/rmap.c, v5.8: each PTE mapping of the
    /// page in `vma` is cleared and flushed; for migration (TTU_MIGRATION) or
    /// a split (TTU_SPLIT_FREEZE) it becomes a migration entry. Returns false
    /// to stop the rmap walk. For try_to_munlock() (TTU_MUNLOCK) it unmaps
    /// nothing: a VM_LOCKED VMA that maps the page mlocks it again. The
    /// branches the model does not implement (PMD-level THP migration, the
    /// access check and swap-out of reclaim, MADV_FREE, file pages) report
    /// MODEL-LIMIT rather than unmap the page some other way.
    ///
    /// # Locking
    /// page_vma_mapped_walk() takes the PTE lock of each entry it returns;
    /// split_huge_pmd_address() the PMD lock.
    pub fn try_to_unmap_one(
        &self,
        page: Pfn,
        vma: &Arc<Vma>,
        address: VirtAddr,
        flags: TtuFlags,
    ) -> bool {
        if self.page_huge(page) {
            return self.try_to_unmap_one_huge(page, vma, address);
        }
        let _f = self.func("try_to_unmap_one");
        let mm = self.k.mm(vma.mm);
        // munlock has nothing to gain from examining un-locked vmas.
        if flags.munlock && vma.vm_flags() & vm::LOCKED == 0 {
            return true;
        }
        if flags.split_huge_pmd {
            self.split_huge_pmd_address(&mm, vma, address, flags.split_freeze, Some(page));
        }
        // DIVERGENCE: PVMW_SYNC for TTU_SYNC is 5.13's (732ed55823fc); applied
        // while the fix `rmap-pmd-under-ptl` is in (see TtuFlags::sync).
        let sync = flags.sync && self.k.cfg.fixes.applied(Fix::RmapPmdUnderPtl);
        let mut pvmw = Pvmw::new(
            page,
            vma.clone(),
            mm.clone(),
            address,
            PvmwFlags {
                sync,
                migration: false,
            },
        );
        // For THP, we have to assume the worse case ie pmd for invalidation
        // (page_size(page): the whole THP for its head). The caller holds
        // the page lock, so its order cannot change: read without a
        // scheduling point.
        let size = self.k.geo.page_size() << self.page(page).compound_order_peek();
        let range_end = VirtAddr(vma.vm_end().0.min(address.0 + size));
        self.mmu_notifier_start(
            &mm,
            crate::mmu_notifier::NotifyEvent::Clear,
            address,
            range_end,
        );
        let mut ret = true;
        while self.page_vma_mapped_walk(&mut pvmw) {
            // PMD-mapped THP migration entry
            if pvmw.pte.is_none() && flags.migration {
                crate::vm_bug_on_page!(
                    self,
                    !self.page_trans_compound(page),
                    page,
                    "VM_BUG_ON_PAGE(PageHuge(page) || !PageTransCompound(page), page)"
                );
                let pmd = pvmw.pmd.expect("a PMD-level match has its PMD");
                self.set_pmd_migration_entry(vma, pvmw.address, pmd, page);
                continue;
            }
            // If the page is mlock()d, we cannot swap it out. If it's
            // recently referenced (perhaps page_referenced skipped mlocked
            // pages) then treat it as mlocked.
            if !flags.ignore_mlock {
                if vma.vm_flags() & vm::LOCKED != 0 {
                    // PTE-mapped THP are never mlocked.
                    if !self.page_trans_compound(page) {
                        // Holding pte lock, we do *not* need mmap_lock
                        // here (try_to_munlock()'s caller holds the page
                        // lock mlock_vma_page() wants).
                        self.mlock_vma_page(page);
                    }
                    ret = false;
                    pvmw.done();
                    break;
                }
                if flags.munlock {
                    continue;
                }
            }
            // Unexpected PMD-mapped THP?
            let Some(pte) = pvmw.pte else {
                self.bug("VM_BUG_ON_PAGE(!pvmw.pte, page)", Some(page));
            };
            // subpage = page - page_to_pfn(page) + pte_pfn(*pvmw.pte): the walk
            // returns only a present PTE mapping the page (check_pte()).
            let Some(subpage) = self.pte_read(pte).pfn() else {
                self.unmodelled(
                    "try_to_unmap_one(): page_vma_mapped_walk() returned a PTE that is not present",
                    Some(page),
                );
            };
            let addr = pvmw.address;
            if !flags.ignore_access && self.ptep_test_and_clear_young(pte) {
                // ptep_clear_flush_young_notify(): referenced since reclaim
                // looked: keep it mapped.
                self.note(|| "try_to_unmap_one(): pte young: keep the page mapped".to_string());
                ret = false;
                pvmw.done();
                break;
            }
            // Nuke the page table entry: ptep_clear_flush().
            let pteval = self.ptep_get_and_clear(pte);
            self.flush_tlb_page(mm.id, addr);
            // Move the dirty bit to the page. Now the pte is gone.
            if pteval.flags().dirty {
                self.page(self.compound_head(page)).set_flag(pg::DIRTY);
            }
            if flags.migration || flags.split_freeze {
                // arch_unmap_one() is 0 on x86. Store the pfn of the page in a
                // special migration pte.
                self.set_pte_at(
                    pte,
                    Pte::Migration {
                        pfn: subpage,
                        write: pteval.is_write(),
                    },
                );
            } else if self.page_anon(page) {
                let head = self.page(self.compound_head(page));
                if head.test_flag(pg::SWAPBACKED) != head.test_flag(pg::SWAPCACHE) {
                    // Reclaim puts an anonymous page in the swap cache
                    // before it unmaps it. As in 5.8 the PTE stays cleared.
                    self.warn(
                        crate::check::invariants::VM_WARN,
                        "WARN_ON_ONCE(PageSwapBacked(page) != PageSwapCache(page))",
                        Some(page),
                    );
                    ret = false;
                    pvmw.done();
                    break;
                }
                // MADV_FREE page check
                if !head.test_flag(pg::SWAPBACKED) {
                    if !head.test_flag(pg::DIRTY) {
                        // Invalidate as we cleared the pte: the lazily
                        // freed page is discarded (its PTE stays none).
                        self.note(|| {
                            "try_to_unmap_one(): a clean MADV_FREE page: discard".to_string()
                        });
                        self.page_remove_rmap(subpage, false);
                        self.put_page(page);
                        continue;
                    }
                    // If the page was redirtied, it cannot be discarded.
                    // Remap the page to page table.
                    self.set_pte_at(pte, pteval);
                    head.set_flag(pg::SWAPBACKED);
                    ret = false;
                    pvmw.done();
                    break;
                }
                let entry = crate::pgtable::SwapEntry(self.page(subpage).private.load(SeqCst));
                if self.swap_duplicate(entry).is_err() {
                    self.set_pte_at(pte, pteval);
                    ret = false;
                    pvmw.done();
                    break;
                }
                // dec_mm_counter(MM_ANONPAGES), inc_mm_counter(MM_SWAPENTS):
                // RSS counters are not modelled.
                self.set_pte_at(pte, Pte::Swap(entry));
                self.note(|| format!("try_to_unmap_one(): swap entry {} installed", entry.0));
            } else {
                self.unmodelled("try_to_unmap_one(): a file page", Some(page));
            }
            // discard:
            self.page_remove_rmap(subpage, false);
            self.put_page(page);
        }
        self.mmu_notifier_invalidate_range_end(&mm);
        ret
    }
}

#[cfg(test)]
mod tests {
    use super::TtuFlags;
    use crate::check::invariants;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Cpu, Kernel, StdEngine};

    /// try_to_unmap() of a mapped anonymous base page with `flags`, on a
    /// fresh machine; returns the result (None if the CPU stopped), the CPU and
    /// the page's mapcount after.
    fn unmap_anon_page(flags: TtuFlags) -> (Option<bool>, Cpu<StdEngine>, i64) {
        let geo = Geometry::TINY;
        let cpu = Cpu::new(Kernel::<StdEngine>::new(Config::new(geo)), CpuId(0));
        let mm = cpu.mm_alloc();
        let a = cpu
            .do_mmap(&mm, geo.page_size(), Prot::ReadWrite, geo.pmd_size())
            .expect("mmap");
        cpu.user_access(&mm, a, Access::Write(1)).expect("write");
        let page = cpu.page_info(&mm, a).pfn.expect("mapped");
        cpu.get_page(page);
        cpu.lock_page(page);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cpu.try_to_unmap(page, flags)
        }))
        .ok();
        let mapcount = cpu.page_mapcount(page);
        (r, cpu, mapcount)
    }

    /// Only migration and a split's freeze replace a mapping by a migration
    /// entry; any other unmap of an anonymous page is reclaim's, which in 5.8
    /// needs the page in the swap cache first: without it 5.8 warns and
    /// stops (the PTE stays cleared). The model used to drop the mapping
    /// silently.
    #[test]
    fn unmapping_an_anon_page_outside_migration_warns_as_5_8() {
        let (r, cpu, mapcount) = unmap_anon_page(TtuFlags {
            ignore_mlock: true,
            ignore_access: true,
            ..TtuFlags::default()
        });
        assert_eq!(
            r,
            Some(false),
            "try_to_unmap() reports the page still mapped"
        );
        assert_eq!(mapcount, 1, "no mapping was dropped");
        let reports = cpu.k.reports();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].id, invariants::VM_WARN);
        assert!(
            reports[0]
                .message
                .starts_with("WARN_ON_ONCE(PageSwapBacked(page) != PageSwapCache(page))"),
            "{}",
            reports[0].message
        );
    }

    /// Without TTU_IGNORE_ACCESS, 5.8 keeps a recently referenced page
    /// mapped (ptep_clear_flush_young_notify()): the walk stops, the accessed
    /// bit is cleared, and nothing is reported.
    #[test]
    fn a_referenced_page_stays_mapped_without_ttu_ignore_access() {
        let (r, cpu, mapcount) = unmap_anon_page(TtuFlags {
            ignore_mlock: true,
            split_freeze: true,
            ..TtuFlags::default()
        });
        assert_eq!(r, Some(false), "the page stayed mapped");
        assert_eq!(mapcount, 1, "no mapping was dropped");
        assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
    }
}
