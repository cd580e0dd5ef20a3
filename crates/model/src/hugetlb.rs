//! hugetlb: the pool of PMD-size pages, reservations, faults, COW, fork and
//! unmapping: mm/hugetlb.c and the hugetlb parts of mm/rmap.c (v5.8).
//!
//! Models: one hstate (PMD-size pages, `default_hstate`) with a per-node
//! pool made at boot from `hugetlb-pool N` (hugetlb_hstate_alloc_pages():
//! fresh compound pages with the HUGETLB_PAGE_DTOR destructor, freed into
//! the free lists), `hugetlb_lock` over the free lists and the counters
//! (`nr_huge_pages`, `free_huge_pages`, `resv_huge_pages`, per node), the
//! reservation maps (`struct resv_map` with `region_chg/add/abort/del/
//! count` in their 5.8 meaning: for a shared mapping the map records the
//! reserved pages of the file, for a private one the pages whose
//! reservation was consumed), `hugetlb_reserve_pages()` at mmap and
//! `hugetlb_unreserve_pages()`, the vm_ops open/close/split,
//! `alloc_huge_page()` (with `vma_has_reserves()`/`dequeue_huge_page_vma()`)
//! and `free_huge_page()`, `hugetlb_fault()` with the fault mutex table,
//! `hugetlb_no_page()`, `hugetlb_cow()` with the owner rule
//! (`unmap_ref_private()`), `copy_hugetlb_page_range()`,
//! `__unmap_hugepage_range()`, `hugetlb_change_protection()` and
//! `follow_hugetlb_page()` for GUP.
//!
//! A hugetlb page's entry is the PMD (`huge_pte_offset()` returns the PMD
//! slot on x86 for PMD-size pages): a present one is a [`Pmd::Huge`], a
//! migration entry a [`Pmd::Migration`]; its lock is the PMD table's split
//! lock (`huge_pte_lockptr()`).
//!
//! Leaves out: gigantic (PUD-size) pages, surplus pages and overcommit
//! (`nr_overcommit_hugepages` is 0: an allocation beyond the pool fails),
//! subpools (hugetlbfs mount limits: MAP_HUGETLB and memfd files have none),
//! the hugetlb cgroup, hwpoison, userfaultfd, MAP_NORESERVE, changing the
//! pool size at run time.
//!
//! PMD sharing (x86's CONFIG_ARCH_WANT_HUGE_PMD_SHARE): a shared mapping that
//! covers a whole PUD uses the PMD table of another process's mapping of the
//! same file pages (`huge_pmd_share()`); the table page's reference count is
//! the share count, and `huge_pmd_unshare()` drops one sharer (unmap,
//! mprotect, and, with seed 003's fix, migration's try_to_unmap_one()).

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::errno::Errno;
use crate::memory::{FaultFlags, MmuGather, VmFaultT};
use crate::mm_types::{vm, MmStruct, Vma, VmaResv};
use crate::mmu_notifier::NotifyEvent;
use crate::page::{anon_mapping, pg};
use crate::pgtable::{EntryRef, Pmd, PteFlags, Upper};
use crate::sync::{LockClass, SpinLock};
use crate::types::{FileId, Level, Pfn, ResvMapId, VirtAddr};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};

/// The pool's lists and counters (`struct hstate`), guarded by
/// `hugetlb_lock`.
#[derive(Clone, Debug, Default)]
pub struct Pool {
    /// `hugepage_freelists[nid]`: free pages, most recently freed first.
    pub freelists: Vec<Vec<Pfn>>,
    /// `hugepage_activelist`: pages handed out.
    pub active: BTreeSet<Pfn>,
    pub nr_huge_pages: u64,
    pub nr_huge_pages_node: Vec<u64>,
    pub free_huge_pages: u64,
    pub free_huge_pages_node: Vec<u64>,
    /// Pages promised to mappings and not yet allocated.
    pub resv_huge_pages: u64,
}

/// A reservation map (`struct resv_map`): half-open page ranges of a file
/// (in huge pages), sorted and disjoint, guarded by `lock`.
pub struct ResvMap<E: Engine> {
    pub lock: SpinLock<E>,
    regions: Mutex<Vec<(u64, u64)>>,
    /// `adds_in_progress`: region_chg() calls not yet added or aborted.
    adds_in_progress: AtomicI64,
}

impl<E: Engine> ResvMap<E> {
    fn new() -> Self {
        ResvMap {
            lock: SpinLock::new(LockClass::ResvMapLock),
            regions: Mutex::new(Vec::new()),
            adds_in_progress: AtomicI64::new(0),
        }
    }

    /// A copy for a copy of the machine: the lock (free), the regions and
    /// the count of changes in progress (0 at a quiescent point).
    fn snapshot(&self) -> Self {
        ResvMap {
            lock: self.lock.snapshot(),
            regions: Mutex::new(self.regions()),
            adds_in_progress: AtomicI64::new(self.adds_in_progress.load(SeqCst)),
        }
    }

    /// The regions, for checkers (no scheduling point).
    pub fn regions(&self) -> Vec<(u64, u64)> {
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Pages of `[f, t)` the regions cover.
    fn covered(regions: &[(u64, u64)], f: u64, t: u64) -> u64 {
        regions
            .iter()
            .map(|&(s, e)| e.min(t).saturating_sub(s.max(f)))
            .sum()
    }
}

/// The hstate of PMD-size pages, its lock, the fault mutex table and the
/// reservation maps.
pub struct Hstate<E: Engine> {
    /// `hugetlb_lock`.
    pub hugetlb_lock: SpinLock<E>,
    /// Guarded by `hugetlb_lock`.
    pub pool: Mutex<Pool>,
    /// `hugetlb_fault_mutex_table`: `num_fault_mutexes` mutexes, a power of
    /// two of at least 8 per CPU.
    pub fault_mutex_table: Vec<SpinLock<E>>,
    resv_maps: RwLock<Vec<Arc<ResvMap<E>>>>,
}

impl<E: Engine> Hstate<E> {
    /// An empty hstate for `nodes` nodes and `cpus` CPUs (the pool is filled
    /// at boot by [`Cpu::hugetlb_hstate_alloc_pages`]).
    pub fn new(nodes: u32, cpus: usize) -> Self {
        let n = nodes as usize;
        Hstate {
            hugetlb_lock: SpinLock::new(LockClass::HugetlbLock),
            pool: Mutex::new(Pool {
                freelists: vec![Vec::new(); n],
                nr_huge_pages_node: vec![0; n],
                free_huge_pages_node: vec![0; n],
                ..Pool::default()
            }),
            fault_mutex_table: (0..(8 * cpus.max(1)).next_power_of_two())
                .map(|_| SpinLock::new(LockClass::HugetlbFaultMutex))
                .collect(),
            resv_maps: RwLock::new(Vec::new()),
        }
    }

    /// A copy for a copy of the machine (`Kernel::snapshot`): the locks
    /// (free), the pool and every reservation map, in id order.
    pub fn snapshot(&self) -> Self {
        Hstate {
            hugetlb_lock: self.hugetlb_lock.snapshot(),
            pool: Mutex::new(self.pool_peek()),
            fault_mutex_table: self
                .fault_mutex_table
                .iter()
                .map(|m| m.snapshot())
                .collect(),
            resv_maps: RwLock::new(
                self.all_resv_maps()
                    .iter()
                    .map(|m| Arc::new(m.snapshot()))
                    .collect(),
            ),
        }
    }

    /// The pool, for checkers and for code holding `hugetlb_lock`.
    pub fn pool_peek(&self) -> Pool {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every reservation map, by id (for checkers).
    pub fn all_resv_maps(&self) -> Vec<Arc<ResvMap<E>>> {
        self.resv_maps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The reservation map `id`.
    pub fn resv_map(&self, id: ResvMapId) -> Arc<ResvMap<E>> {
        E::touch(crate::engine::footprint::Obj::Arena(5), false);
        self.resv_maps.read().unwrap_or_else(|p| p.into_inner())[id.0].clone()
    }

    /// Models resv_map_alloc(), mm/hugetlb.c, v5.8.
    pub fn resv_map_alloc(&self) -> ResvMapId {
        E::touch(crate::engine::footprint::Obj::Arena(5), true);
        let mut maps = self.resv_maps.write().unwrap_or_else(|p| p.into_inner());
        maps.push(Arc::new(ResvMap::new()));
        ResvMapId(maps.len() - 1)
    }
}

/// `enum vma_resv_mode` of __vma_reservation_common().
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResvMode {
    Needs,
    Commit,
    End,
    Add,
}

impl<E: Engine> Cpu<E> {
    fn hstate(&self) -> &Hstate<E> {
        &self.k.hstate
    }

    /// `huge_page_shift(h) - PAGE_SHIFT` (the hstate's order).
    fn huge_page_order(&self) -> u32 {
        self.k.geo.pmd_shift() - self.k.geo.page_shift
    }

    // ---------------------------------------------------------------------
    // The pool
    // ---------------------------------------------------------------------

    /// Models hugetlb_hstate_alloc_pages() → alloc_pool_huge_page(), mm/
    /// hugetlb.c, v5.8, at boot: `per_node` fresh pages on each node
    /// (alloc_fresh_huge_page(), prep_new_huge_page()), each freed into the
    /// pool by put_page(). Returns how many pages it made.
    pub fn hugetlb_hstate_alloc_pages(&self, per_node: u64) -> u64 {
        let _f = self.func("hugetlb_hstate_alloc_pages");
        let order = self.huge_page_order();
        let mut made = 0;
        for nid in 0..self.k.cfg.nodes {
            for _ in 0..per_node {
                let Some(page) = self.alloc_pages_thisnode(order, nid) else {
                    break;
                };
                self.prep_new_huge_page(page, nid);
                self.put_page(page); // free it into the hugepage allocator
                made += 1;
            }
        }
        made
    }

    /// Models prep_new_huge_page(), mm/hugetlb.c, v5.8.
    ///
    /// # Locking
    /// Takes `hugetlb_lock`.
    fn prep_new_huge_page(&self, page: Pfn, nid: u32) {
        // set_compound_page_dtor(page, HUGETLB_PAGE_DTOR): the new page is
        // this CPU's alone.
        self.page(page).__set_flag(pg::HUGETLB);
        let _l = self.hstate().hugetlb_lock.lock(self);
        let mut p = self.hstate().pool();
        p.nr_huge_pages += 1;
        p.nr_huge_pages_node[nid as usize] += 1;
        p.active.insert(page);
    }

    /// Models enqueue_huge_page(), mm/hugetlb.c, v5.8.
    ///
    /// # Locking
    /// Called with `hugetlb_lock` held.
    fn enqueue_huge_page(&self, pool: &mut Pool, page: Pfn) {
        let nid = self.page(page).node as usize;
        pool.active.remove(&page);
        pool.freelists[nid].insert(0, page);
        pool.free_huge_pages += 1;
        pool.free_huge_pages_node[nid] += 1;
    }

    /// Models dequeue_huge_page_node_exact(), mm/hugetlb.c, v5.8: the page's
    /// reference count becomes 1 (set_page_refcounted()).
    ///
    /// # Locking
    /// Called with `hugetlb_lock` held.
    fn dequeue_huge_page_node_exact(&self, pool: &mut Pool, nid: usize) -> Option<Pfn> {
        if pool.freelists[nid].is_empty() {
            return None;
        }
        let page = pool.freelists[nid].remove(0);
        pool.active.insert(page);
        // set_page_refcounted(): the free page is unreachable until mapped.
        self.page(page).refcount.init(1);
        pool.free_huge_pages -= 1;
        pool.free_huge_pages_node[nid] -= 1;
        Some(page)
    }

    /// Models dequeue_huge_page_vma() with dequeue_huge_page_nodemask(),
    /// mm/hugetlb.c, v5.8: a page from the faulting node first, then the
    /// others (the zonelist order), unless no free page is left beyond the
    /// reserved ones and the VMA has no reservation to use.
    ///
    /// # Locking
    /// Called with `hugetlb_lock` held.
    fn dequeue_huge_page_vma(
        &self,
        pool: &mut Pool,
        vma: &Vma,
        address: VirtAddr,
        avoid_reserve: bool,
        chg: i64,
    ) -> Option<Pfn> {
        let has_reserves = self.vma_has_reserves(vma, chg);
        // A child process with MAP_PRIVATE mappings created by their parent
        // have no page reserves. This check ensures that reservations are
        // not "stolen". The child may still get SIGKILLed
        if !has_reserves && pool.free_huge_pages - pool.resv_huge_pages == 0 {
            return None;
        }
        // If reserves cannot be used, ensure enough pages are in the pool
        if avoid_reserve && pool.free_huge_pages - pool.resv_huge_pages == 0 {
            return None;
        }
        let nodes = pool.freelists.len();
        let nid = self.numa_node_for(vma, address) as usize;
        let page =
            (0..nodes).find_map(|i| self.dequeue_huge_page_node_exact(pool, (nid + i) % nodes))?;
        if !avoid_reserve && has_reserves {
            // SetPagePrivate(): the page is this CPU's alone.
            self.page(page).__set_flag(pg::PRIVATE);
            pool.resv_huge_pages -= 1;
        }
        Some(page)
    }

    /// Models free_huge_page() → __free_huge_page(), mm/hugetlb.c, v5.8: the
    /// last reference to a hugetlb page returns it to the pool, restoring
    /// the reservation it consumed if PagePrivate.
    ///
    /// # Locking
    /// Takes `hugetlb_lock`.
    pub fn free_huge_page(&self, page: Pfn) {
        let _f = self.func("free_huge_page");
        let p = self.page(page);
        // The page's last reference is gone: its fields are this CPU's.
        crate::vm_bug_on_page!(
            self,
            p.refcount.peek_i64() != 0,
            page,
            "VM_BUG_ON_PAGE(page_count(page), page)"
        );
        crate::vm_bug_on_page!(
            self,
            p.compound_mapcount.peek_i64() != -1,
            page,
            "VM_BUG_ON_PAGE(page_mapcount(page), page)"
        );
        p.mapping.init(0);
        let restore_reserve = p.test_flag_peek(pg::PRIVATE);
        let flags = p.flags.peek();
        p.flags
            .init(flags & !(pg::PRIVATE | pg::HUGE_ACTIVE | pg::DIRTY | pg::UPTODATE | pg::ACTIVE));
        let _l = self.hstate().hugetlb_lock.lock(self);
        let mut pool = self.hstate().pool();
        if restore_reserve {
            pool.resv_huge_pages += 1;
        }
        if p.test_flag_peek(pg::HUGE_TEMPORARY) {
            self.update_and_free_page(&mut pool, page);
        } else {
            self.enqueue_huge_page(&mut pool, page);
        }
    }

    /// Models hugetlb_acct_memory(), mm/hugetlb.c, v5.8, without surplus
    /// pages: a reservation of `delta` pages needs that many free pages
    /// beyond those already reserved (gather_surplus_pages() can add none:
    /// `nr_overcommit_hugepages` is 0), and no more than the free pages of
    /// the nodes (cpuset_mems_nr()).
    ///
    /// # Locking
    /// Takes `hugetlb_lock`.
    fn hugetlb_acct_memory(&self, delta: i64) -> Result<(), Errno> {
        let _l = self.hstate().hugetlb_lock.lock(self);
        let mut pool = self.hstate().pool();
        if delta > 0 {
            // gather_surplus_pages()
            let needed = pool.resv_huge_pages as i64 + delta - pool.free_huge_pages as i64;
            if needed > 0 {
                return Err(Errno::Enomem);
            }
            pool.resv_huge_pages += delta as u64;
            if delta > pool.free_huge_pages_node.iter().sum::<u64>() as i64 {
                // return_unused_surplus_pages(h, delta)
                pool.resv_huge_pages -= delta as u64;
                return Err(Errno::Enomem);
            }
        } else if delta < 0 {
            // return_unused_surplus_pages(h, -delta)
            pool.resv_huge_pages -= (-delta) as u64;
        }
        Ok(())
    }

    // ---------------------------------------------------------------------
    // Reservation maps
    // ---------------------------------------------------------------------

    /// Models region_chg(), mm/hugetlb.c, v5.8: how many pages of `[f, t)`
    /// the map does not cover yet; a region_add() or region_abort() follows.
    ///
    /// # Locking
    /// Takes `resv->lock`.
    fn region_chg(&self, map: ResvMapId, f: u64, t: u64) -> i64 {
        let resv = self.hstate().resv_map(map);
        let _l = resv.lock.lock(self);
        resv.adds_in_progress.fetch_add(1, SeqCst);
        let regions = resv.regions.lock().unwrap_or_else(|p| p.into_inner());
        (t - f - ResvMap::<E>::covered(&regions, f, t)) as i64
    }

    /// Models region_add(), mm/hugetlb.c, v5.8: the map covers `[f, t)`;
    /// returns how many pages were added. DIVERGENCE: the file_region cache
    /// of preallocated entries is not modelled (an add never fails).
    ///
    /// # Locking
    /// Takes `resv->lock`.
    fn region_add(&self, map: ResvMapId, f: u64, t: u64) -> i64 {
        let resv = self.hstate().resv_map(map);
        let _l = resv.lock.lock(self);
        let mut regions = resv.regions.lock().unwrap_or_else(|p| p.into_inner());
        let added = t - f - ResvMap::<E>::covered(&regions, f, t);
        let (mut s, mut e) = (f, t);
        regions.retain(|&(rs, re)| {
            if re < s || rs > e {
                true
            } else {
                s = s.min(rs);
                e = e.max(re);
                false
            }
        });
        let pos = regions.partition_point(|&(rs, _)| rs < s);
        regions.insert(pos, (s, e));
        resv.adds_in_progress.fetch_sub(1, SeqCst);
        added as i64
    }

    /// Models region_abort(), mm/hugetlb.c, v5.8.
    ///
    /// # Locking
    /// Takes `resv->lock`.
    fn region_abort(&self, map: ResvMapId) {
        let resv = self.hstate().resv_map(map);
        let _l = resv.lock.lock(self);
        resv.adds_in_progress.fetch_sub(1, SeqCst);
    }

    /// Models region_del(), mm/hugetlb.c, v5.8: the map no longer covers
    /// `[f, t)`; returns how many pages it covered there.
    ///
    /// # Locking
    /// Takes `resv->lock`.
    fn region_del(&self, map: ResvMapId, f: u64, t: u64) -> i64 {
        let resv = self.hstate().resv_map(map);
        let _l = resv.lock.lock(self);
        let mut regions = resv.regions.lock().unwrap_or_else(|p| p.into_inner());
        let del = ResvMap::<E>::covered(&regions, f, t);
        let mut out = Vec::new();
        for &(s, e) in regions.iter() {
            if e <= f || s >= t {
                out.push((s, e));
                continue;
            }
            if s < f {
                out.push((s, f));
            }
            if e > t {
                out.push((t, e));
            }
        }
        *regions = out;
        del as i64
    }

    /// Models region_count(), mm/hugetlb.c, v5.8.
    ///
    /// # Locking
    /// Takes `resv->lock`.
    fn region_count(&self, map: ResvMapId, f: u64, t: u64) -> i64 {
        let resv = self.hstate().resv_map(map);
        let _l = resv.lock.lock(self);
        let regions = resv.regions.lock().unwrap_or_else(|p| p.into_inner());
        ResvMap::<E>::covered(&regions, f, t) as i64
    }

    /// Models vma_hugecache_offset(), mm/hugetlb.c, v5.8: the file index (in
    /// huge pages) of `address` (linear_hugepage_index()).
    pub fn vma_hugecache_offset(&self, vma: &Vma, address: VirtAddr) -> u64 {
        let g = self.k.geo;
        ((address.0 - vma.vm_start().0) >> g.pmd_shift())
            + (vma.vm_pgoff() >> self.huge_page_order())
    }

    /// Models vma_resv_map(), mm/hugetlb.c, v5.8: the inode's map for a
    /// shared mapping, the VMA's own for a private one.
    fn vma_resv_map(&self, vma: &Vma) -> Option<ResvMapId> {
        if vma.vm_flags() & vm::MAYSHARE != 0 {
            vma.vm_file.map(|f| self.k.file(f).resv_map)
        } else {
            vma.resv().map
        }
    }

    /// Models vma_has_reserves(), mm/hugetlb.c, v5.8 (without
    /// MAP_NORESERVE).
    fn vma_has_reserves(&self, vma: &Vma, chg: i64) -> bool {
        // Shared mappings always use reserves
        if vma.vm_flags() & vm::MAYSHARE != 0 {
            return chg == 0;
        }
        // Only the process that called mmap() has reserves for private
        // mappings.
        vma.resv().owner && chg == 0
    }

    /// Models __vma_reservation_common(), mm/hugetlb.c, v5.8.
    fn __vma_reservation_common(&self, vma: &Vma, addr: VirtAddr, mode: ResvMode) -> i64 {
        let Some(map) = self.vma_resv_map(vma) else {
            return 1;
        };
        let idx = self.vma_hugecache_offset(vma, addr);
        let shared = vma.vm_flags() & vm::MAYSHARE != 0;
        let ret = match mode {
            ResvMode::Needs => self.region_chg(map, idx, idx + 1),
            ResvMode::Commit => self.region_add(map, idx, idx + 1),
            ResvMode::End => {
                self.region_abort(map);
                0
            }
            ResvMode::Add => {
                if shared {
                    self.region_add(map, idx, idx + 1)
                } else {
                    self.region_abort(map);
                    self.region_del(map, idx, idx + 1)
                }
            }
        };
        if shared {
            ret
        } else if vma.resv().owner && ret >= 0 {
            // The reserve map for private mappings has the opposite meaning
            // than that of shared mappings: an entry means the reservation
            // was consumed.
            if ret != 0 {
                0
            } else {
                1
            }
        } else if ret < 0 {
            ret
        } else {
            0
        }
    }

    fn vma_needs_reservation(&self, vma: &Vma, addr: VirtAddr) -> i64 {
        self.__vma_reservation_common(vma, addr, ResvMode::Needs)
    }
    fn vma_commit_reservation(&self, vma: &Vma, addr: VirtAddr) -> i64 {
        self.__vma_reservation_common(vma, addr, ResvMode::Commit)
    }
    fn vma_end_reservation(&self, vma: &Vma, addr: VirtAddr) {
        self.__vma_reservation_common(vma, addr, ResvMode::End);
    }
    fn vma_add_reservation(&self, vma: &Vma, addr: VirtAddr) -> i64 {
        self.__vma_reservation_common(vma, addr, ResvMode::Add)
    }

    /// Models restore_reserve_on_error(), mm/hugetlb.c, v5.8: a page that
    /// consumed a reservation is about to be freed on an error path (its
    /// PagePrivate makes free_huge_page() restore the global count); make
    /// the map agree.
    fn restore_reserve_on_error(&self, vma: &Vma, address: VirtAddr, page: Pfn) {
        if !self.page(page).test_flag(pg::PRIVATE) {
            return;
        }
        let rc = self.vma_needs_reservation(vma, address);
        if rc != 0 {
            self.vma_add_reservation(vma, address);
        } else {
            self.vma_end_reservation(vma, address);
        }
    }

    /// Models alloc_huge_page(), mm/hugetlb.c, v5.8 (no subpool, no
    /// cgroup, no surplus): a page for `vma` at `addr`, consuming the
    /// mapping's reservation unless `avoid_reserve`. ENOSPC when none is
    /// free for it.
    ///
    /// # Locking
    /// Takes `resv->lock`, then `hugetlb_lock` (not nested).
    pub fn alloc_huge_page(
        &self,
        vma: &Vma,
        addr: VirtAddr,
        avoid_reserve: bool,
    ) -> Result<Pfn, Errno> {
        let _f = self.func("alloc_huge_page");
        // A return code of zero indicates a reservation exists (no change).
        let map_chg = self.vma_needs_reservation(vma, addr);
        if map_chg < 0 {
            return Err(Errno::Enomem);
        }
        // hugepage_subpool_get_pages() without a subpool returns the delta.
        let gbl_chg = if map_chg != 0 || avoid_reserve { 1 } else { 0 };
        let page = {
            let _l = self.hstate().hugetlb_lock.lock(self);
            let mut pool = self.hstate().pool();
            self.dequeue_huge_page_vma(&mut pool, vma, addr, avoid_reserve, gbl_chg)
        };
        let Some(page) = page else {
            // alloc_buddy_huge_page_with_mpol(): no surplus pages.
            self.vma_end_reservation(vma, addr);
            return Err(Errno::Enospc);
        };
        let map_commit = self.vma_commit_reservation(vma, addr);
        if map_chg > map_commit {
            // The page was added to the reservation map between
            // vma_needs_reservation and vma_commit_reservation: a race with
            // hugetlb_reserve_pages; the reservation counted there no longer
            // applies.
            let _ = self.hugetlb_acct_memory(-1);
        }
        Ok(page)
    }

    /// Models hugetlb_reserve_pages(), mm/hugetlb.c, v5.8 (no subpool, no
    /// cgroup, no MAP_NORESERVE): reserve the file pages `[from, to)` for a
    /// new mapping. A shared mapping reserves what the file's map does not
    /// cover yet; a private one all of it, in a map of its own (the VMA
    /// becomes HPAGE_RESV_OWNER). ENOMEM if the pool cannot promise them.
    pub fn hugetlb_reserve_pages(
        &self,
        file: FileId,
        from: u64,
        to: u64,
        vma: &Vma,
    ) -> Result<(), Errno> {
        let _f = self.func("hugetlb_reserve_pages");
        let shared = vma.vm_flags() & vm::MAYSHARE != 0;
        let (map, chg) = if shared {
            let map = self.k.file(file).resv_map;
            (map, self.region_chg(map, from, to))
        } else {
            let map = self.hstate().resv_map_alloc();
            vma.set_resv(VmaResv {
                map: Some(map),
                owner: true,
                unmapped: false,
            });
            (map, (to - from) as i64)
        };
        if self.hugetlb_acct_memory(chg).is_err() {
            if shared {
                self.region_abort(map);
            } else {
                // kref_put(&resv_map->refs, resv_map_release)
                vma.set_resv(VmaResv::default());
            }
            return Err(Errno::Enomem);
        }
        if shared {
            let add = self.region_add(map, from, to);
            if chg > add {
                // Pages in this range were added to the reserve map between
                // region_chg and region_add: a race with alloc_huge_page.
                let _ = self.hugetlb_acct_memory(-(chg - add));
            }
        }
        Ok(())
    }

    /// Models hugetlb_unreserve_pages(), mm/hugetlb.c, v5.8: the file loses
    /// `[start, end)` (eviction), of which `freed` pages were in its cache.
    pub fn hugetlb_unreserve_pages(&self, file: FileId, start: u64, end: u64, freed: i64) {
        let map = self.k.file(file).resv_map;
        let chg = self.region_del(map, start, end);
        let _ = self.hugetlb_acct_memory(-(chg - freed));
    }

    /// Models hugetlb_vm_op_open(), mm/hugetlb.c, v5.8: a copy of a VMA (a
    /// split) shares its owner's reservation map (kref_get).
    pub fn hugetlb_vm_op_open(&self, _vma: &Vma) {}

    /// Models hugetlb_vm_op_close(), mm/hugetlb.c, v5.8: the owner of a
    /// private reservation gives back the part of it not consumed in the
    /// VMA's range.
    pub fn hugetlb_vm_op_close(&self, vma: &Vma) {
        let r = vma.resv();
        let (Some(map), true) = (r.map, r.owner) else {
            return;
        };
        let start = self.vma_hugecache_offset(vma, vma.vm_start());
        let end = self.vma_hugecache_offset(vma, vma.vm_end());
        let reserve = (end - start) as i64 - self.region_count(map, start, end);
        if reserve != 0 {
            let _ = self.hugetlb_acct_memory(-reserve);
        }
    }

    /// Models hugetlb_vm_op_split(), mm/hugetlb.c, v5.8: a hugetlb VMA splits
    /// only at a huge page boundary.
    pub fn hugetlb_vm_op_split(&self, _vma: &Vma, addr: VirtAddr) -> Result<(), Errno> {
        if addr.0 & (self.k.geo.pmd_size() - 1) != 0 {
            return Err(Errno::Einval);
        }
        Ok(())
    }

    // ---------------------------------------------------------------------
    // Page tables
    // ---------------------------------------------------------------------

    /// Models huge_pte_offset(), mm/hugetlb.c, v5.8, for PMD-size pages: the
    /// PMD slot of `addr` if the upper levels are present.
    pub fn huge_pte_offset(&self, mm: &MmStruct<E>, addr: VirtAddr) -> Option<EntryRef> {
        self.pmd_offset(mm, addr)
    }

    /// Models huge_pte_alloc(), mm/hugetlb.c, v5.8, for PMD-size pages: the
    /// PMD slot of `addr`, with the PMD table shared with another mapping of
    /// the file when the PUD is empty and sharing is possible
    /// (huge_pmd_share()).
    ///
    /// # Locking
    /// Takes `mm->page_table_lock` to populate an upper level; the caller
    /// should hold the file's `i_mmap_rwsem` (5.8's hugetlb_fault() calls it
    /// once before taking it).
    pub fn huge_pte_alloc(&self, mm: &MmStruct<E>, vma: &Vma, addr: VirtAddr) -> Option<EntryRef> {
        let g = self.k.geo;
        let pgd_slot = mm.pgd.raw(g.index(Level::Pgd, addr));
        let pud_t = self.upper_alloc(mm, pgd_slot)?;
        let pud_slot = self.table(pud_t).raw(g.index(Level::Pud, addr));
        let pmd = if Upper::decode(pud_slot.load()) == Upper::None {
            // want_pmd_share()
            self.huge_pmd_share(mm, vma, addr, pud_slot)?
        } else {
            self.pmd_alloc(mm, addr)?
        };
        let cur = self.pmd_read(pmd);
        crate::vm_bug_on!(
            self,
            matches!(cur, Pmd::Table(_)),
            "BUG_ON(pte && pte_present(*pte) && !pte_huge(*pte))"
        );
        Some(pmd)
    }

    /// Models vma_shareable(), mm/hugetlb.c, v5.8: a shared mapping that
    /// covers the whole PUD of `addr`.
    fn vma_shareable(&self, vma: &Vma, addr: VirtAddr) -> bool {
        let pud = self.k.geo.pud_size();
        let base = addr.0 & !(pud - 1);
        vma.vm_flags() & vm::MAYSHARE != 0
            && vma.vm_start().0 <= base
            && base + pud <= vma.vm_end().0
    }

    /// Models page_table_shareable(), mm/hugetlb.c, v5.8: where `svma` maps
    /// the file page `idx` that `vma` maps at `addr`, if its PMD table there
    /// could be `vma`'s: the same PMD index, the same flags (but the mlock
    /// ones), and the whole PUD inside `svma`.
    fn page_table_shareable(
        &self,
        svma: &Vma,
        vma: &Vma,
        addr: VirtAddr,
        idx: u64,
    ) -> Option<VirtAddr> {
        let g = self.k.geo;
        let saddr = ((idx - svma.vm_pgoff()) << g.page_shift) + svma.vm_start().0;
        let sbase = saddr & !(g.pud_size() - 1);
        let s_end = sbase + g.pud_size();
        // Allow segments to share if only one is marked locked
        let clear = vm::LOCKED | vm::LOCKONFAULT;
        let same_index = g.index(Level::Pmd, addr) == g.index(Level::Pmd, VirtAddr(saddr));
        if !same_index
            || vma.vm_flags() & !clear != svma.vm_flags() & !clear
            || sbase < svma.vm_start().0
            || svma.vm_end().0 < s_end
        {
            return None;
        }
        Some(VirtAddr(saddr))
    }

    /// Models huge_pmd_share(), mm/hugetlb.c, v5.8: search the file's other
    /// mappings for a PMD table this PUD can use; if one is found, take a
    /// reference on its page (the share count) and point the PUD at it.
    /// Then pmd_alloc() as usual (which finds the shared table, or makes
    /// one).
    ///
    /// # Locking
    /// Takes the shared table's PMD lock to populate the PUD.
    fn huge_pmd_share(
        &self,
        mm: &MmStruct<E>,
        vma: &Vma,
        addr: VirtAddr,
        pud_slot: &E::Atomic,
    ) -> Option<EntryRef> {
        let _f = self.func("huge_pmd_share");
        if !self.vma_shareable(vma, addr) {
            return self.pmd_alloc(mm, addr);
        }
        let Some(file) = vma.vm_file else {
            return self.pmd_alloc(mm, addr);
        };
        let ps = self.k.geo.page_shift;
        let idx = ((addr.0 - vma.vm_start().0) >> ps) + vma.vm_pgoff();
        let mut spte = None;
        for svma in self.vma_interval_tree_foreach(file, idx) {
            if svma.id == vma.id {
                continue;
            }
            if let Some(saddr) = self.page_table_shareable(&svma, vma, addr, idx) {
                let smm = self.k.mm(svma.mm);
                if let Some(p) = self.huge_pte_offset(&smm, saddr) {
                    self.get_page(p.table);
                    spte = Some(p);
                    break;
                }
            }
        }
        if let Some(spte) = spte {
            let ptl = self.huge_pte_lockptr(spte).lock(self);
            if Upper::decode(pud_slot.load()) == Upper::None {
                pud_slot.store(Upper::Table(spte.table).encode()); // pud_populate()
                self.note(|| format!("huge_pmd_share(): PMD table {} shared", spte.table.0));
            } else {
                drop(ptl);
                self.put_page(spte.table);
            }
        }
        self.pmd_alloc(mm, addr)
    }

    /// Models huge_pmd_unshare(), mm/hugetlb.c, v5.8: if the PMD table of
    /// `ptep` is shared (its page's reference count above 1), this mm stops
    /// using it: clear the PUD and drop the reference. `addr` moves to the
    /// last huge page of the PUD, so a caller's loop goes on after it.
    /// Returns whether it unshared.
    ///
    /// # Locking
    /// Called with the PMD lock of `ptep` held, and the file's
    /// `i_mmap_rwsem` for write.
    pub fn huge_pmd_unshare(&self, mm: &MmStruct<E>, addr: &mut VirtAddr, ptep: EntryRef) -> bool {
        let g = self.k.geo;
        let count = self.page_count(ptep.table);
        crate::vm_bug_on!(
            self,
            count == 0,
            "BUG_ON(page_count(virt_to_page(ptep)) == 0)"
        );
        if count == 1 {
            return false;
        }
        let _f = self.func("huge_pmd_unshare");
        let Upper::Table(pud_t) = Upper::decode(mm.pgd.raw(g.index(Level::Pgd, *addr)).load())
        else {
            self.bug("huge_pmd_unshare(): no PUD table", None);
        };
        // pud_clear(pud)
        self.table(pud_t)
            .raw(g.index(Level::Pud, *addr))
            .store(Upper::None.encode());
        self.put_page(ptep.table);
        let pud = g.pud_size();
        *addr = VirtAddr(addr.0.div_ceil(pud) * pud - g.pmd_size());
        true
    }

    /// Models huge_pte_lockptr(), include/linux/hugetlb.h, v5.8: the split
    /// PMD lock for PMD-size pages.
    pub fn huge_pte_lockptr(&self, ptep: EntryRef) -> &SpinLock<E> {
        self.pmd_lockptr(ptep)
    }

    /// Models make_huge_pte(), mm/hugetlb.c, v5.8.
    fn make_huge_pte(&self, vma: &Vma, page: Pfn, writable: bool) -> Pmd {
        Pmd::Huge {
            pfn: page,
            flags: PteFlags {
                write: writable,
                dirty: writable,
                young: true,
                protnone: vma.vm_page_prot().protnone,
                special: false,
                splitting: false,
            },
            invalid: false,
        }
    }

    /// Models adjust_range_if_pmd_sharing_possible(), mm/hugetlb.c, v5.8: a
    /// shared mapping's range widens to the PUDs it touches when a whole
    /// PUD-aligned PUD of the VMA could share its PMD table.
    pub fn adjust_range_if_pmd_sharing_possible(
        &self,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
    ) -> (VirtAddr, VirtAddr) {
        let pud = self.k.geo.pud_size();
        let v_start = vma.vm_start().0.div_ceil(pud) * pud;
        let v_end = vma.vm_end().0 / pud * pud;
        // vma need span at least one aligned PUD size and the start,end range
        // must at least partialy within it.
        if vma.vm_flags() & vm::MAYSHARE == 0
            || v_end <= v_start
            || end.0 <= v_start
            || start.0 >= v_end
        {
            return (start, end);
        }
        let s = if start.0 < v_start {
            start
        } else {
            VirtAddr(start.0 / pud * pud)
        };
        let e = if end.0 > v_end {
            end
        } else {
            VirtAddr(end.0.div_ceil(pud) * pud)
        };
        (s, e)
    }

    // ---------------------------------------------------------------------
    // rmap (mm/rmap.c)
    // ---------------------------------------------------------------------

    /// Models hugepage_add_new_anon_rmap(), mm/rmap.c, v5.8: a new private
    /// hugetlb page, not yet mapped (its fields are this CPU's alone).
    pub fn hugepage_add_new_anon_rmap(&self, page: Pfn, vma: &Vma, address: VirtAddr) {
        crate::vm_bug_on!(
            self,
            address < vma.vm_start() || address >= vma.vm_end(),
            "BUG_ON(address < vma->vm_start || address >= vma->vm_end)"
        );
        let p = self.page(page);
        p.compound_mapcount.init(0);
        p.reset_compound_pincount();
        // __page_set_anon_rmap(page, vma, address, 1)
        let Some(av) = vma.anon_vma() else {
            self.bug("BUG_ON(!anon_vma)", Some(page));
        };
        p.mapping.init(anon_mapping(av));
        // linear_page_index() of a hugetlb VMA is linear_hugepage_index().
        p.index.init(self.vma_hugecache_offset(vma, address));
    }

    // ---------------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------------

    /// The index of `hugetlb_fault_mutex_table` for (file, idx). DIVERGENCE:
    /// another hash than jhash2 of (mapping, idx); collisions differ.
    fn hugetlb_fault_mutex_hash(&self, file: FileId, idx: u64) -> usize {
        let n = self.hstate().fault_mutex_table.len() as u64;
        let key = (file.0 as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ idx.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        (key.rotate_left(17).wrapping_mul(0x1656_67b1_9e37_79f9) % n) as usize
    }

    /// Models hugetlb_fault(), mm/hugetlb.c, v5.8.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read. Takes the file's
    /// `i_mmap_rwsem` for read, then the fault mutex of (file, index), then
    /// (in hugetlb_no_page()/hugetlb_cow()) the page lock and the PMD lock.
    pub fn hugetlb_fault(
        &self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        address: VirtAddr,
        flags: FaultFlags,
    ) -> VmFaultT {
        let _f = self.func("hugetlb_fault");
        let haddr = VirtAddr(address.0 & !(self.k.geo.pmd_size() - 1));
        if let Some(ptep) = self.huge_pte_offset(mm, haddr) {
            // Since we hold no locks, ptep could be stale. That is OK as we
            // are only making decisions based on content and not actually
            // modifying content here.
            if let Pmd::Migration { .. } = self.pmd_read(ptep) {
                // migration_entry_wait_huge()
                self.pmd_migration_entry_wait(mm, ptep);
                return VmFaultT::NONE;
            }
        } else if self.huge_pte_alloc(mm, vma, haddr).is_none() {
            return VmFaultT::OOM;
        }
        let Some(file) = vma.vm_file else {
            self.bug("hugetlb VMA without a file", None);
        };
        let mapping = &self.k.file(file).mapping;
        mapping.i_mmap_rwsem.down_read(self);
        let Some(ptep) = self.huge_pte_alloc(mm, vma, haddr) else {
            mapping.i_mmap_rwsem.up_read(self);
            return VmFaultT::OOM;
        };
        // Serialize hugepage allocation and instantiation, so that we don't
        // get spurious allocation failures if two CPUs race to instantiate
        // the same page in the page cache.
        let idx = self.vma_hugecache_offset(vma, haddr);
        let hash = self.hugetlb_fault_mutex_hash(file, idx);
        let fault_mutex = self.hstate().fault_mutex_table[hash].lock(self);
        let ret = self.hugetlb_fault_locked(mm, vma, file, idx, address, haddr, ptep, flags);
        drop(fault_mutex);
        mapping.i_mmap_rwsem.up_read(self);
        if let Some(page) = ret.1 {
            // need_wait_lock: defer the next fault until the page is unlocked.
            self.wait_on_page_locked(page);
        }
        ret.0
    }

    /// The part of hugetlb_fault() under the fault mutex; returns the result
    /// and, when the page lock was busy, the page to wait for.
    #[allow(clippy::too_many_arguments)]
    fn hugetlb_fault_locked(
        &self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        file: FileId,
        idx: u64,
        address: VirtAddr,
        haddr: VirtAddr,
        ptep: EntryRef,
        flags: FaultFlags,
    ) -> (VmFaultT, Option<Pfn>) {
        let entry = self.pmd_read(ptep);
        if entry.is_none() {
            return (
                self.hugetlb_no_page(mm, vma, file, idx, address, ptep, flags),
                None,
            );
        }
        // entry could be a migration entry at this point: the next fault
        // waits for it.
        let Pmd::Huge {
            pfn: page,
            flags: eflags,
            ..
        } = entry
        else {
            return (VmFaultT::NONE, None);
        };
        // If we are going to COW the mapping later, we examine the pending
        // reservations for this page now, and for private mappings look up
        // the pagecache page, used to determine if a reservation has been
        // consumed.
        let mut pagecache_page = None;
        if flags.write && !eflags.write {
            if self.vma_needs_reservation(vma, haddr) < 0 {
                return (VmFaultT::OOM, None);
            }
            // Just decrements count, does not deallocate
            self.vma_end_reservation(vma, haddr);
            if vma.vm_flags() & vm::MAYSHARE == 0 {
                pagecache_page = self.find_lock_page(file, idx);
            }
        }
        let ptl = self.huge_pte_lockptr(ptep).lock(self);
        let mut ret = VmFaultT::NONE;
        let mut wait = None;
        // Check for a racing update before calling hugetlb_cow
        if self.pmd_read(ptep) == entry {
            // hugetlb_cow() requires page locks of pte_page(entry) and
            // pagecache_page.
            let locked = Some(page) == pagecache_page || self.trylock_page(page);
            if !locked {
                wait = Some(page);
            } else {
                self.get_page(page);
                if flags.write && !eflags.write {
                    let ptl = self.hugetlb_cow(mm, vma, address, ptep, pagecache_page, ptl);
                    ret = ptl.0;
                    drop(ptl.1);
                } else {
                    let new = entry.with_flags(|f| {
                        if flags.write {
                            f.dirty = true; // huge_pte_mkdirty()
                        }
                        f.young = true; // pte_mkyoung()
                    });
                    // huge_ptep_set_access_flags()
                    self.pmdp_set_access_flags(haddr, ptep, new, flags.write);
                    drop(ptl);
                }
                if Some(page) != pagecache_page {
                    self.unlock_page(page);
                }
                self.put_page(page);
                if let Some(pc) = pagecache_page {
                    self.unlock_page(pc);
                    self.put_page(pc);
                }
                return (ret, None);
            }
        }
        drop(ptl);
        if let Some(pc) = pagecache_page {
            self.unlock_page(pc);
            self.put_page(pc);
        }
        (ret, wait)
    }

    /// Models hugetlb_no_page(), mm/hugetlb.c, v5.8: instantiate the page of
    /// a none entry: the file's cached page for a shared mapping (a new one
    /// added to the cache if there is none), a new anonymous page for a
    /// private one; a private write COWs at once.
    ///
    /// # Locking
    /// Called with `i_mmap_rwsem` for read and the fault mutex held; takes
    /// the page lock, then the PMD lock.
    #[allow(clippy::too_many_arguments)]
    fn hugetlb_no_page(
        &self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        file: FileId,
        idx: u64,
        address: VirtAddr,
        ptep: EntryRef,
        flags: FaultFlags,
    ) -> VmFaultT {
        let _f = self.func("hugetlb_no_page");
        let haddr = VirtAddr(address.0 & !(self.k.geo.pmd_size() - 1));
        // Currently, we are forced to kill the process in the event the
        // original mapper has unmapped pages from the child due to a failed
        // COW.
        if vma.resv().unmapped {
            self.note(|| "PID killed due to inadequate hugepage pool".into());
            return VmFaultT::SIGBUS;
        }
        let size = self.k.file(file).i_size_bytes.load(SeqCst) >> self.k.geo.pmd_shift();
        if idx >= size {
            return VmFaultT::SIGBUS;
        }
        let shared = vma.vm_flags() & vm::MAYSHARE != 0;
        let (page, new_page, anon_rmap) = loop {
            if let Some(page) = self.find_lock_page(file, idx) {
                break (page, false, false);
            }
            let page = match self.alloc_huge_page(vma, haddr, false) {
                Ok(p) => p,
                Err(e) => {
                    // Page migration does not take the fault mutex, but does
                    // a clear then write of pte's under page table lock.
                    // Before returning error, get ptl and make sure there
                    // really is no pte entry.
                    let ptl = self.huge_pte_lockptr(ptep).lock(self);
                    let present = !self.pmd_read(ptep).is_none();
                    drop(ptl);
                    if present {
                        return VmFaultT::NONE;
                    }
                    return match e {
                        Errno::Enomem => VmFaultT::OOM,
                        _ => VmFaultT::SIGBUS,
                    };
                }
            };
            // clear_huge_page(); __SetPageUptodate(): the page is this CPU's.
            self.clear_huge_page(page);
            self.page(page).__set_flag(pg::UPTODATE);
            if shared {
                // huge_add_to_page_cache()
                match self.add_to_page_cache(page, file, idx) {
                    Ok(()) => {
                        self.page(page).clear_flag(pg::PRIVATE);
                        // set page dirty so that it will not be removed from
                        // cache/file by non-hugetlbfs specific code paths.
                        self.page(page).set_flag(pg::DIRTY);
                        break (page, true, false);
                    }
                    Err(Errno::Eexist) => {
                        self.put_page(page);
                        continue;
                    }
                    Err(_) => {
                        self.put_page(page);
                        return VmFaultT::SIGBUS;
                    }
                }
            }
            self.lock_page(page);
            if !self.anon_vma_prepare(mm, vma) {
                self.unlock_page(page);
                self.restore_reserve_on_error(vma, haddr, page);
                self.put_page(page);
                return VmFaultT::OOM;
            }
            break (page, true, true);
        };
        // If we are going to COW a private mapping later, we examine the
        // pending reservations for this page now.
        if flags.write && vma.vm_flags() & vm::SHARED == 0 {
            if self.vma_needs_reservation(vma, haddr) < 0 {
                self.unlock_page(page);
                self.restore_reserve_on_error(vma, haddr, page);
                self.put_page(page);
                return VmFaultT::OOM;
            }
            // Just decrements count, does not deallocate
            self.vma_end_reservation(vma, haddr);
        }
        let ptl = self.huge_pte_lockptr(ptep).lock(self);
        if !self.pmd_read(ptep).is_none() {
            // backout
            drop(ptl);
            self.unlock_page(page);
            self.restore_reserve_on_error(vma, haddr, page);
            self.put_page(page);
            return VmFaultT::NONE;
        }
        if anon_rmap {
            // ClearPagePrivate(): the page is still this CPU's alone.
            let p = self.page(page);
            p.flags.init(p.flags.peek() & !pg::PRIVATE);
            self.hugepage_add_new_anon_rmap(page, vma, haddr);
        } else {
            self.page_dup_rmap(page, true);
        }
        let f = vma.vm_flags();
        let new_pte = self.make_huge_pte(vma, page, f & vm::WRITE != 0 && f & vm::SHARED != 0);
        self.set_pmd_at(ptep, new_pte); // set_huge_pte_at()
        let mut ret = VmFaultT::NONE;
        let mut ptl = ptl;
        if flags.write && f & vm::SHARED == 0 {
            // Optimization, do the COW without a second fault
            let (r, g) = self.hugetlb_cow(mm, vma, address, ptep, Some(page), ptl);
            ret = r;
            ptl = g;
        }
        drop(ptl);
        // Only make newly allocated pages active.
        if new_page {
            self.page(page).set_flag(pg::HUGE_ACTIVE); // set_page_huge_active()
        }
        self.unlock_page(page);
        ret
    }

    /// Models hugetlb_cow(), mm/hugetlb.c, v5.8: break COW of a private
    /// hugetlb page: reuse it if this is its only mapping, else copy it to
    /// a new page. The owner of the reservation that cannot get a page
    /// unmaps the page from the other (child) VMAs and retries
    /// (unmap_ref_private()). Called and returns with the PMD lock held.
    ///
    /// # Locking
    /// Called with `i_mmap_rwsem` for read, the fault mutex, the page lock
    /// of the old page and its PMD lock held; drops the PMD lock to allocate
    /// and copy, and retakes it.
    fn hugetlb_cow<'a>(
        &'a self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        address: VirtAddr,
        ptep: EntryRef,
        pagecache_page: Option<Pfn>,
        ptl: crate::sync::SpinGuard<'a, E>,
    ) -> (VmFaultT, crate::sync::SpinGuard<'a, E>) {
        let _f = self.func("hugetlb_cow");
        let pmd_size = self.k.geo.pmd_size();
        let haddr = VirtAddr(address.0 & !(pmd_size - 1));
        let mut ptl = ptl;
        let pte = self.pmd_read(ptep);
        loop {
            // retry_avoidcopy:
            let Pmd::Huge { pfn: old_page, .. } = pte else {
                self.bug("BUG_ON(huge_pte_none(pte))", None);
            };
            // If no-one else is actually using this page, avoid the copy and
            // just make the page writable
            if self.page_mapcount(old_page) == 1 && self.page_anon(old_page) {
                self.page_move_anon_rmap(old_page, vma);
                // set_huge_ptep_writable()
                let w = pte.with_flags(|f| {
                    f.write = true;
                    f.dirty = true;
                });
                self.pmdp_set_access_flags(haddr, ptep, w, true);
                return (VmFaultT::NONE, ptl);
            }
            // If the process that created a MAP_PRIVATE mapping is about to
            // perform a COW due to a shared page count, attempt to satisfy
            // the allocation without using the existing reserves.
            let outside_reserve = vma.resv().owner && Some(old_page) != pagecache_page;
            self.get_page(old_page);
            // Drop page table lock as buddy allocator may be called.
            drop(ptl);
            let new_page = match self.alloc_huge_page(vma, haddr, outside_reserve) {
                Ok(p) => p,
                Err(e) => {
                    if outside_reserve {
                        // If a process owning a MAP_PRIVATE mapping fails to
                        // COW, it is due to references held by a child and an
                        // insufficient huge page pool. To guarantee the
                        // original mappers reliability, unmap the page from
                        // child processes.
                        self.put_page(old_page);
                        self.unmap_ref_private(mm, vma, old_page, haddr);
                        ptl = self.huge_pte_lockptr(ptep).lock(self);
                        let now = self.huge_pte_offset(mm, haddr).map(|p| self.pmd_read(p));
                        if now == Some(pte) {
                            continue;
                        }
                        // race occurs while re-acquiring page table lock, and
                        // our job is done.
                        return (VmFaultT::NONE, ptl);
                    }
                    self.put_page(old_page);
                    let ret = match e {
                        Errno::Enomem => VmFaultT::OOM,
                        _ => VmFaultT::SIGBUS,
                    };
                    return (ret, self.huge_pte_lockptr(ptep).lock(self));
                }
            };
            // When the original hugepage is shared one, it does not have
            // anon_vma prepared.
            if !self.anon_vma_prepare(mm, vma) {
                self.restore_reserve_on_error(vma, haddr, new_page);
                self.put_page(new_page);
                self.put_page(old_page);
                return (VmFaultT::OOM, self.huge_pte_lockptr(ptep).lock(self));
            }
            // copy_user_huge_page(); __SetPageUptodate()
            self.copy_user_huge_page(new_page, old_page);
            self.page(new_page).__set_flag(pg::UPTODATE);
            let range =
                self.mmu_notifier_start(mm, NotifyEvent::Clear, haddr, haddr.add_bytes(pmd_size));
            // Retake the page table lock to check for racing updates before
            // the page tables are altered
            ptl = self.huge_pte_lockptr(ptep).lock(self);
            let mut freed = new_page;
            if self.huge_pte_offset(mm, haddr).map(|p| self.pmd_read(p)) == Some(pte) {
                // ClearPagePrivate(new_page): not yet mapped.
                let p = self.page(new_page);
                p.flags.init(p.flags.peek() & !pg::PRIVATE);
                // Break COW: huge_ptep_clear_flush()
                self.pmdp_huge_get_and_clear(ptep);
                self.flush_tlb_range(mm.id, haddr, haddr.add_bytes(pmd_size));
                let _ = range;
                self.hugepage_add_new_anon_rmap(new_page, vma, haddr);
                self.set_pmd_at(ptep, self.make_huge_pte(vma, new_page, true));
                self.page_remove_rmap(old_page, true);
                self.page(new_page).set_flag(pg::HUGE_ACTIVE);
                // Make the old page be freed below
                freed = old_page;
            }
            drop(ptl);
            self.mmu_notifier_invalidate_range_end(mm);
            self.restore_reserve_on_error(vma, haddr, freed);
            self.put_page(freed);
            self.put_page(old_page);
            // Caller expects lock to be held
            return (VmFaultT::NONE, self.huge_pte_lockptr(ptep).lock(self));
        }
    }

    /// Models unmap_ref_private(), mm/hugetlb.c, v5.8: the reservation owner
    /// could not COW `page`; unmap it from every other private VMA of the
    /// file that has no reservation of its own (they SIGBUS on their next
    /// fault there: HPAGE_RESV_UNMAPPED).
    ///
    /// 5.8 calls this from hugetlb_fault() with the same file's
    /// `i_mmap_rwsem` held for read, and takes it here for write: the task
    /// waits for itself forever (later kernels drop the fault mutex and
    /// `i_mmap_rwsem` before this call). The model reports that self-
    /// deadlock (LOCK-ORDER) and stops the CPU instead of hanging.
    ///
    /// # Locking
    /// Takes the file's `i_mmap_rwsem` for write.
    fn unmap_ref_private(
        &self,
        _mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        page: Pfn,
        address: VirtAddr,
    ) {
        let _f = self.func("unmap_ref_private");
        let ps = self.k.geo.page_shift;
        let pmd_size = self.k.geo.pmd_size();
        let address = VirtAddr(address.0 & !(pmd_size - 1));
        let pgoff = ((address.0 - vma.vm_start().0) >> ps) + vma.vm_pgoff();
        let Some(file) = vma.vm_file else { return };
        let inode = self.k.file(file);
        if inode.mapping.i_mmap_rwsem.held_by(self) {
            self.deadlock(
                "i_mmap_lock_write() in unmap_ref_private() while hugetlb_fault() holds the same i_mmap_rwsem for read: the task waits for itself (v5.8)",
            );
        }
        let _w = inode.mapping.i_mmap_rwsem.write(self);
        for iter_vma in self.vma_interval_tree_foreach(file, pgoff) {
            // Do not unmap the current VMA
            if Arc::ptr_eq(&iter_vma, vma) {
                continue;
            }
            // Shared VMAs have their own reserves and do not affect
            // MAP_PRIVATE accounting.
            if iter_vma.vm_flags() & vm::MAYSHARE != 0 {
                continue;
            }
            // Unmap the page from other VMAs without their own reserves.
            if !iter_vma.resv().owner {
                let imm = self.k.mm(iter_vma.mm);
                self.unmap_hugepage_range(
                    &imm,
                    &iter_vma,
                    address,
                    address.add_bytes(pmd_size),
                    Some(page),
                );
            }
        }
    }

    // ---------------------------------------------------------------------
    // fork, unmap, mprotect
    // ---------------------------------------------------------------------

    /// Models copy_hugetlb_page_range(), mm/hugetlb.c, v5.8: fork copies
    /// every hugetlb entry (shared or private); a private writable one is
    /// write-protected in both. Returns false on ENOMEM.
    ///
    /// # Locking
    /// Takes the file's `i_mmap_rwsem` for read for a shared mapping (an
    /// mmu-notifier range for a private one), then per entry the child's
    /// PMD lock and the parent's nested.
    pub fn copy_hugetlb_page_range(
        &self,
        dst: &MmStruct<E>,
        src: &MmStruct<E>,
        vma: &Arc<Vma>,
        dst_vma: &Arc<Vma>,
    ) -> bool {
        let _f = self.func("copy_hugetlb_page_range");
        let sz = self.k.geo.pmd_size();
        let cow = vma.is_cow_mapping();
        let Some(file) = vma.vm_file else { return true };
        let mapping = &self.k.file(file).mapping;
        if cow {
            self.mmu_notifier_start(src, NotifyEvent::Clear, vma.vm_start(), vma.vm_end());
        } else {
            mapping.i_mmap_rwsem.down_read(self);
        }
        let mut ok = true;
        let mut addr = vma.vm_start();
        while addr < vma.vm_end() {
            let Some(src_pte) = self.huge_pte_offset(src, addr) else {
                addr = addr.add_bytes(sz);
                continue;
            };
            let Some(dst_pte) = self.huge_pte_alloc(dst, dst_vma, addr) else {
                ok = false;
                break;
            };
            // If the pagetables are shared don't copy or take references.
            if dst_pte == src_pte || !self.pmd_read(dst_pte).is_none() {
                addr = addr.add_bytes(sz);
                continue;
            }
            let dst_ptl = self.huge_pte_lockptr(dst_pte).lock(self);
            let src_ptl = self.huge_pte_lockptr(src_pte).lock_nested(self);
            let entry = self.pmd_read(src_pte);
            let dst_entry = self.pmd_read(dst_pte);
            match entry {
                _ if entry.is_none() || !dst_entry.is_none() => {}
                Pmd::Migration { pfn, write } => {
                    let mut e = entry;
                    if write && cow {
                        // COW mappings require pages in both parent and
                        // child to be set to read.
                        e = Pmd::Migration { pfn, write: false };
                        self.set_pmd_at(src_pte, e);
                    }
                    self.set_pmd_at(dst_pte, e);
                }
                Pmd::Huge { .. } => {
                    if cow {
                        // huge_ptep_set_wrprotect()
                        self.pmdp_set_wrprotect(src_pte);
                    }
                    let entry = self.pmd_read(src_pte);
                    let Pmd::Huge { pfn: ptepage, .. } = entry else {
                        self.bug("huge entry changed under the PMD lock", None);
                    };
                    self.get_page(ptepage);
                    self.page_dup_rmap(ptepage, true);
                    self.set_pmd_at(dst_pte, entry);
                }
                Pmd::Table(_) | Pmd::None => {
                    self.bug("a page table where a hugetlb entry belongs", None);
                }
            }
            drop(src_ptl);
            drop(dst_ptl);
            addr = addr.add_bytes(sz);
        }
        if cow {
            self.mmu_notifier_invalidate_range_end(src);
        } else {
            mapping.i_mmap_rwsem.up_read(self);
        }
        ok
    }

    /// Models __unmap_hugepage_range(), mm/hugetlb.c, v5.8: clear the
    /// hugetlb entries of `[start, end)` (only `ref_page`'s, then stop, if
    /// given, marking the VMA HPAGE_RESV_UNMAPPED); the pages are freed
    /// after the gather's flush.
    ///
    /// # Locking
    /// Called with the file's `i_mmap_rwsem` held for write (or `mmap_lock`
    /// for write); takes each entry's PMD lock.
    pub fn __unmap_hugepage_range(
        &self,
        tlb: &mut MmuGather,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        ref_page: Option<Pfn>,
    ) {
        let _f = self.func("__unmap_hugepage_range");
        let sz = self.k.geo.pmd_size();
        crate::vm_bug_on!(
            self,
            start.0 & (sz - 1) != 0 || end.0 & (sz - 1) != 0,
            "BUG_ON(start & ~huge_page_mask(h)) / BUG_ON(end & ~huge_page_mask(h))"
        );
        // If sharing possible, alert mmu notifiers of worst case.
        let (rs, re) = self.adjust_range_if_pmd_sharing_possible(vma, start, end);
        self.mmu_notifier_start(mm, NotifyEvent::Unmap, rs, re);
        let mut address = start;
        while address < end {
            let here = address;
            address = address.add_bytes(sz);
            let Some(ptep) = self.huge_pte_offset(mm, here) else {
                continue;
            };
            let ptl = self.huge_pte_lockptr(ptep).lock(self);
            let mut unshared = here;
            if self.huge_pmd_unshare(mm, &mut unshared, ptep) {
                // We just unmapped a page of PMDs by clearing a PUD. The
                // caller's TLB flush range should cover this area. (It does
                // not: 5.8 adds nothing to the gather's range here,
                // CVE-2021-4002, fixed in 5.16 by "hugetlbfs: flush TLBs
                // correctly after huge_pmd_unshare".)
                drop(ptl);
                address = unshared.add_bytes(sz);
                continue;
            }
            let pte = self.pmd_read(ptep);
            let page = match pte {
                Pmd::None => continue,
                // Migrating hugepage is already unmapped and its refcount is
                // dropped, so just clear pte here.
                Pmd::Migration { .. } => {
                    self.pmdp_huge_get_and_clear(ptep); // huge_pte_clear()
                    continue;
                }
                Pmd::Huge { pfn, .. } => pfn,
                Pmd::Table(_) => self.bug("a page table in a hugetlb VMA", None),
            };
            if let Some(r) = ref_page {
                if page != r {
                    continue;
                }
                // Mark the VMA as having unmapped its page so that future
                // faults in this VMA will fail rather than looking like data
                // was lost
                let mut resv = vma.resv();
                resv.unmapped = true;
                vma.set_resv(resv);
            }
            let old = self.pmdp_huge_get_and_clear(ptep); // huge_ptep_get_and_clear()
            self.tlb_remove_tlb_entry(tlb, here, sz); // tlb_remove_huge_tlb_entry()
            if let Pmd::Huge { flags, .. } = old {
                if flags.dirty {
                    self.page(page).set_flag(pg::DIRTY); // set_page_dirty()
                }
            }
            self.page_remove_rmap(page, true);
            drop(ptl);
            self.tlb_remove_page(tlb, page); // tlb_remove_page_size()
                                             // Bail out after unmapping reference page if supplied
            if ref_page.is_some() {
                break;
            }
        }
        self.mmu_notifier_invalidate_range_end(mm);
    }

    /// Models unmap_hugepage_range(), mm/hugetlb.c, v5.8: an unmap with its
    /// own gather, flushing the widest range PMD sharing could need.
    pub fn unmap_hugepage_range(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        ref_page: Option<Pfn>,
    ) {
        // adjust_range_if_pmd_sharing_possible() widens tlb_start/tlb_end,
        // which 5.8's tlb_gather_mmu() does not use: the gather flushes the
        // range its removed entries make.
        let mut tlb = self.tlb_gather_mmu(mm.id, false);
        self.__unmap_hugepage_range(&mut tlb, mm, vma, start, end, ref_page);
        self.tlb_finish_mmu(tlb);
    }

    /// Models unmap_single_vma()'s hugetlb branch, mm/memory.c, v5.8:
    /// `i_mmap_lock_write()`, __unmap_hugepage_range_final() (which also
    /// clears VM_MAYSHARE of the dying VMA, so no later huge_pmd_share()
    /// finds it), `i_mmap_unlock_write()`.
    ///
    /// # Locking
    /// Takes the file's `i_mmap_rwsem` for write.
    pub fn unmap_hugetlb_vma(
        &self,
        tlb: &mut MmuGather,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
    ) {
        let Some(file) = vma.vm_file else { return };
        let inode = self.k.file(file);
        let _w = inode.mapping.i_mmap_rwsem.write(self);
        self.__unmap_hugepage_range(tlb, mm, vma, start, end, None);
        // __unmap_hugepage_range_final(): clear VM_MAYSHARE so that
        // page_table_shareable() fails on a vma being torn down, and no
        // huge_pmd_share() grabs a page table on its way out.
        vma.set_vm_flags(vma.vm_flags() & !vm::MAYSHARE);
    }

    /// Models hugetlb_change_protection(), mm/hugetlb.c, v5.8: mprotect of a
    /// hugetlb range; returns the base pages changed.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for write; takes the file's
    /// `i_mmap_rwsem` for write, then each entry's PMD lock.
    pub fn hugetlb_change_protection(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> u64 {
        let _f = self.func("hugetlb_change_protection");
        let sz = self.k.geo.pmd_size();
        let (rs, re) = self.adjust_range_if_pmd_sharing_possible(vma, start, end);
        self.mmu_notifier_start(mm, NotifyEvent::ProtectionVma, rs, re);
        let Some(file) = vma.vm_file else { return 0 };
        let inode = self.k.file(file);
        let w = inode.mapping.i_mmap_rwsem.write(self);
        let newprot = vma.vm_page_prot();
        let mut pages = 0;
        let mut shared_pmd = false;
        let mut address = start;
        while address < end {
            let here = address;
            address = address.add_bytes(sz);
            let Some(ptep) = self.huge_pte_offset(mm, here) else {
                continue;
            };
            let ptl = self.huge_pte_lockptr(ptep).lock(self);
            let mut unshared = here;
            if self.huge_pmd_unshare(mm, &mut unshared, ptep) {
                pages += 1;
                drop(ptl);
                shared_pmd = true;
                address = unshared.add_bytes(sz);
                continue;
            }
            match self.pmd_read(ptep) {
                Pmd::Migration { pfn, write: true } => {
                    self.set_pmd_at(ptep, Pmd::Migration { pfn, write: false });
                    pages += 1;
                }
                Pmd::Huge { pfn, flags, .. } => {
                    // huge_ptep_modify_prot_start(): clear, then commit
                    self.pmdp_huge_get_and_clear(ptep);
                    let nf = PteFlags {
                        write: newprot.write,
                        protnone: newprot.protnone,
                        ..flags
                    };
                    self.set_pmd_at(
                        ptep,
                        Pmd::Huge {
                            pfn,
                            flags: nf,
                            invalid: false,
                        },
                    );
                    pages += 1;
                }
                _ => {}
            }
            drop(ptl);
        }
        // Must flush TLB before releasing i_mmap_rwsem: x86's
        // huge_pmd_unshare may have cleared our pud entry and done put_page
        // on the page table. If we actually did unshare a page of pmds, flush
        // the range corresponding to the pud.
        if shared_pmd {
            self.flush_tlb_range(mm.id, rs, re);
        } else {
            self.flush_tlb_range(mm.id, start, end);
        }
        drop(w);
        self.mmu_notifier_invalidate_range_end(mm);
        pages << self.huge_page_order()
    }

    // ---------------------------------------------------------------------
    // GUP
    // ---------------------------------------------------------------------

    /// Models follow_hugetlb_page(), mm/hugetlb.c, v5.8: the pages of
    /// `[*position, ...)` in one hugetlb VMA for get_user_pages(), faulting
    /// them in (write-faulting for FOLL_WRITE) as needed; each page taken
    /// gets a reference (`try_grab_page()`, done by `grab`). Returns how many
    /// base pages it took before stopping (the VMA's end, `nr_pages`, or an
    /// error).
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read; takes each entry's PMD lock.
    pub fn follow_hugetlb_page(
        &self,
        mm: &Arc<MmStruct<E>>,
        vma: &Arc<Vma>,
        position: &mut VirtAddr,
        nr_pages: &mut u64,
        write: bool,
        grab: &mut dyn FnMut(Pfn) -> bool,
    ) -> Result<u64, Errno> {
        let _f = self.func("follow_hugetlb_page");
        let g = self.k.geo;
        let sz = g.pmd_size();
        let ps = g.page_size();
        let mut vaddr = *position;
        let mut remainder = *nr_pages;
        let mut taken = 0u64;
        let mut err = Errno::Efault;
        while vaddr < vma.vm_end() && remainder > 0 {
            let haddr = VirtAddr(vaddr.0 & !(sz - 1));
            let pte = self.huge_pte_offset(mm, haddr);
            let ptl = pte.map(|p| self.huge_pte_lockptr(p).lock(self));
            let entry = pte.map_or(Pmd::None, |p| self.pmd_read(p));
            let page = match entry {
                Pmd::Huge { pfn, flags, .. } if !write || flags.write => Some(pfn),
                _ => None,
            };
            let Some(page) = page else {
                drop(ptl);
                let ret = self.hugetlb_fault(mm, vma, vaddr, FaultFlags { write });
                if ret.oom() || ret.sigbus() || ret.sigsegv() {
                    // vm_fault_to_errno()
                    err = if ret.oom() {
                        Errno::Enomem
                    } else {
                        Errno::Efault
                    };
                    remainder = 0;
                    break;
                }
                continue;
            };
            let mut pfn_offset = (vaddr.0 & (sz - 1)) / ps;
            let mut failed = false;
            loop {
                if !grab(page.add(pfn_offset)) {
                    failed = true;
                    err = Errno::Enomem;
                    break;
                }
                vaddr = vaddr.add_bytes(ps);
                pfn_offset += 1;
                remainder -= 1;
                taken += 1;
                if !(vaddr < vma.vm_end() && remainder > 0 && pfn_offset < g.hpage_pmd_nr()) {
                    break;
                }
            }
            drop(ptl);
            if failed {
                remainder = 0;
                break;
            }
        }
        *nr_pages = remainder;
        *position = vaddr;
        if taken > 0 {
            Ok(taken)
        } else {
            Err(err)
        }
    }
}

impl<E: Engine> Cpu<E> {
    // ---------------------------------------------------------------------
    // Migration (mm/migrate.c, mm/hugetlb.c, mm/rmap.c, fs/hugetlbfs)
    // ---------------------------------------------------------------------

    /// Models follow_huge_pmd(), mm/hugetlb.c, v5.8: the subpage a hugetlb
    /// PMD maps at `address`, referenced as `flags` ask (try_grab_page());
    /// a migration entry is waited for and the PMD read again.
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub fn follow_huge_pmd(
        &self,
        mm: &MmStruct<E>,
        address: VirtAddr,
        pmd: EntryRef,
        flags: crate::gup::FollFlags,
    ) -> Option<Pfn> {
        let _f = self.func("follow_huge_pmd");
        let g = self.k.geo;
        loop {
            let ptl = self.pmd_lockptr(pmd).lock(self);
            match self.pmd_read(pmd) {
                Pmd::Huge { pfn, .. } => {
                    let page = pfn.add(g.index(Level::Pte, address) as u64);
                    let got = self.try_grab_page(page, flags);
                    drop(ptl);
                    return got.then_some(page);
                }
                Pmd::Migration { .. } => {
                    drop(ptl);
                    self.pmd_migration_entry_wait(mm, pmd);
                }
                _ => return None,
            }
        }
    }

    /// Models isolate_huge_page(), mm/hugetlb.c, v5.8: an active hugetlb
    /// head with a reference to spare goes onto `list` for migration (it is
    /// no longer page_huge_active()).
    ///
    /// # Locking
    /// Takes `hugetlb_lock`.
    pub fn isolate_huge_page(&self, page: Pfn, list: &mut Vec<Pfn>) -> bool {
        let _l = self.hstate().hugetlb_lock.lock(self);
        let p = self.page(page);
        if !p.test_flag(pg::HEAD)
            || !self.page_huge(page)
            || !p.test_flag(pg::HUGE_ACTIVE)
            || !self.get_page_unless_zero(page)
        {
            return false;
        }
        p.clear_flag(pg::HUGE_ACTIVE); // clear_page_huge_active()
        list.push(page);
        true
    }

    /// Models putback_active_hugepage(), mm/hugetlb.c, v5.8: back on the
    /// active list, and the isolation's (or allocation's) reference dropped.
    ///
    /// # Locking
    /// Takes `hugetlb_lock`.
    pub fn putback_active_hugepage(&self, page: Pfn) {
        {
            let _l = self.hstate().hugetlb_lock.lock(self);
            self.page(page).set_flag(pg::HUGE_ACTIVE);
        }
        self.put_page(page);
    }

    /// Models alloc_huge_page_node(), mm/hugetlb.c, v5.8, as
    /// alloc_new_node_page() calls it for a migration to `nid`
    /// (__GFP_THISNODE): a free pool page of that node if the pool has one
    /// beyond its reservations, else a temporary fresh one from the buddy
    /// allocator (alloc_migrate_huge_page(): PageHugeTemporary, freed back
    /// to the buddy allocator when released).
    ///
    /// # Locking
    /// Takes `hugetlb_lock`.
    pub fn alloc_huge_page_node(&self, nid: u32) -> Option<Pfn> {
        let page = {
            let _l = self.hstate().hugetlb_lock.lock(self);
            let mut pool = self.hstate().pool();
            if pool.free_huge_pages > pool.resv_huge_pages {
                self.dequeue_huge_page_node_exact(&mut pool, nid as usize)
            } else {
                None
            }
        };
        if page.is_some() {
            return page;
        }
        // alloc_migrate_huge_page() -> alloc_fresh_huge_page()
        let page = self.alloc_pages_thisnode(self.huge_page_order(), nid)?;
        self.prep_new_huge_page(page, nid);
        self.page(page).__set_flag(pg::HUGE_TEMPORARY); // SetPageHugeTemporary()
        Some(page)
    }

    /// Models move_hugetlb_state(), mm/hugetlb.c, v5.8: a temporary new page
    /// becomes a pool page, and the old one, about to be freed, temporary
    /// in its place.
    fn move_hugetlb_state(&self, oldpage: Pfn, newpage: Pfn) {
        if self.page(newpage).test_clear_flag(pg::HUGE_TEMPORARY) {
            self.page(oldpage).set_flag(pg::HUGE_TEMPORARY);
        }
    }

    /// Models update_and_free_page(), mm/hugetlb.c, v5.8: a page leaves the
    /// pool for the buddy allocator (called with `hugetlb_lock` held, by
    /// free_huge_page() of a temporary page).
    fn update_and_free_page(&self, pool: &mut Pool, page: Pfn) {
        let nid = self.page(page).node as usize;
        pool.active.remove(&page);
        pool.nr_huge_pages -= 1;
        pool.nr_huge_pages_node[nid] -= 1;
        // set_compound_page_dtor(page, NULL_COMPOUND_DTOR); __free_pages().
        let p = self.page(page);
        p.flags
            .init(p.flags.peek() & !(pg::HUGETLB | pg::HUGE_TEMPORARY));
        self.free_unref_page(page, self.huge_page_order());
    }

    /// Models _get_hugetlb_page_mapping() and
    /// hugetlb_page_mapping_lock_write(), mm/hugetlb.c, v5.8: the file of a
    /// locked hugetlb page (a private page's through its anon_vma's first
    /// VMA), with its `i_mmap_rwsem` taken for write: tried under the page
    /// lock, else the page lock is dropped to sleep on the rwsem (the lock
    /// order puts the rwsem first) and the page checked again.
    ///
    /// # Locking
    /// Called with the page locked; returns with it locked and the file's
    /// `i_mmap_rwsem` held for write (None: neither the rwsem nor a file).
    fn hugetlb_page_mapping_lock_write(&self, hpage: Pfn) -> Option<FileId> {
        let get = |c: &Self| -> Option<FileId> {
            if let Some(f) = c.page_file(hpage) {
                return Some(f);
            }
            // Even anonymous hugetlbfs mappings are associated with an
            // underlying hugetlbfs file: use the first VMA of the anon_vma.
            let av = c.page_lock_anon_vma_read(hpage)?;
            let pgoff = c.page_to_pgoff(hpage);
            let nr = c.k.geo.hpage_pmd_nr();
            let ps = c.k.geo.page_shift;
            let file =
                c.k.anon_vma(av)
                    .vmas
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|v| {
                        let s = v.vm_pgoff();
                        let e = s + ((v.vm_end().0 - v.vm_start().0) >> ps) - 1;
                        !(e < pgoff || s > pgoff + nr - 1)
                    })
                    .and_then(|v| v.vm_file);
            c.anon_vma_unlock_read(av);
            file
        };
        let mut mapping = get(self);
        loop {
            let file = mapping?;
            let inode = self.k.file(file);
            if inode.mapping.i_mmap_rwsem.try_write(self) {
                return Some(file);
            }
            // Must drop page lock and wait on mapping sema. As a hack,
            // increase map count until we lock page again.
            self.page(hpage).mapcount.fetch_add(1);
            self.unlock_page(hpage);
            inode.mapping.i_mmap_rwsem.down_write(self);
            self.lock_page(hpage);
            self.page(hpage).mapcount.fetch_sub(1);
            // verify page is still mapped
            if !self.page_mapped(hpage) {
                inode.mapping.i_mmap_rwsem.up_write(self);
                return None;
            }
            let mapping2 = get(self);
            if mapping2 == Some(file) {
                return Some(file);
            }
            inode.mapping.i_mmap_rwsem.up_write(self);
            mapping = mapping2;
        }
    }

    /// Models hugetlbfs_migrate_page() with
    /// migrate_huge_page_move_mapping(), fs/hugetlbfs/inode.c and
    /// mm/migrate.c, v5.8: the new page takes the old one's place in the
    /// file's page cache if only the cache and the isolation hold the old
    /// one (else -EAGAIN); then the bytes and states are copied.
    ///
    /// # Locking
    /// Takes the `i_pages` lock.
    fn hugetlbfs_migrate_page(&self, file: FileId, newpage: Pfn, page: Pfn) -> bool {
        // migrate_huge_page_move_mapping() is migrate_page_move_mapping()'s
        // file case for a compound page (one cache entry, the same counts).
        if self.migrate_file_page_move_mapping(file, newpage, page)
            != crate::migrate::MigrateRc::Success
        {
            return false;
        }
        self.migrate_page_copy(newpage, page);
        true
    }

    /// Models unmap_and_move_huge_page(), mm/migrate.c, v5.8, with
    /// alloc_new_node_page() and no put_new_page: move one isolated hugetlb
    /// page to a new one on `node`. Its mappings become migration entries
    /// under the file's `i_mmap_rwsem` for write (try_to_unmap() may
    /// unshare PMD tables); the new page, or the old one if the move
    /// failed, is mapped where they are.
    ///
    /// # Locking
    /// Takes the page lock, the new page's, then the file's `i_mmap_rwsem`
    /// for write (hugetlb_page_mapping_lock_write()); try_to_unmap() and
    /// remove_migration_ptes() take the PMD locks.
    pub(crate) fn unmap_and_move_huge_page(
        &self,
        hpage: Pfn,
        node: u32,
        force: bool,
    ) -> crate::migrate::MigrateRc {
        use crate::migrate::MigrateRc;
        let _f = self.func("unmap_and_move_huge_page");
        let Some(new_hpage) = self.alloc_huge_page_node(node) else {
            return MigrateRc::Nomem;
        };
        let mut rc = MigrateRc::Again;
        'out: {
            if !self.trylock_page(hpage) {
                if !force {
                    break 'out;
                }
                self.lock_page(hpage); // MIGRATE_SYNC
            }
            let anon_vma = if self.page_anon(hpage) {
                self.page_get_anon_vma(hpage)
            } else {
                None
            };
            {
                // trylock_page(new_hpage): the new page is this CPU's alone,
                // so its lock cannot fail and makes no CPU wait: it orders
                // nothing (the model does not record it for lockdep, which
                // would otherwise see the i_mmap_rwsem taken below it).
                self.inherit_page_lock(new_hpage);
                let mut mapping = None;
                'unlock_put_anon: {
                    if self.page_mapped(hpage) {
                        // try_to_unmap could potentially call
                        // huge_pmd_unshare: take the semaphore in write mode
                        // and set TTU_RMAP_LOCKED.
                        mapping = self.hugetlb_page_mapping_lock_write(hpage);
                        if mapping.is_none() {
                            break 'unlock_put_anon;
                        }
                        self.try_to_unmap(
                            hpage,
                            crate::rmap::TtuFlags {
                                migration: true,
                                ignore_mlock: true,
                                ignore_access: true,
                                rmap_locked: true,
                                ..Default::default()
                            },
                        );
                    }
                    if !self.page_mapped(hpage) {
                        // move_to_new_page()
                        rc = match self.page_file(hpage) {
                            Some(f) => {
                                if self.hugetlbfs_migrate_page(f, new_hpage, hpage) {
                                    // page->mapping = NULL
                                    self.page(hpage).mapping.store(0);
                                    MigrateRc::Success
                                } else {
                                    MigrateRc::Again
                                }
                            }
                            None => self.move_to_new_page(new_hpage, hpage),
                        };
                    }
                    if let Some(f) = mapping {
                        let target = if rc == MigrateRc::Success {
                            new_hpage
                        } else {
                            hpage
                        };
                        self.remove_migration_ptes(hpage, target, true);
                        self.k.file(f).mapping.i_mmap_rwsem.up_write(self);
                    }
                }
                self.unlock_page(new_hpage);
            }
            if let Some(av) = anon_vma {
                self.put_anon_vma(av);
            }
            if rc == MigrateRc::Success {
                self.move_hugetlb_state(hpage, new_hpage);
            }
            self.unlock_page(hpage);
        }
        if rc != MigrateRc::Again {
            self.putback_active_hugepage(hpage);
        }
        self.putback_active_hugepage(new_hpage);
        rc
    }

    /// The PageHuge() branches of try_to_unmap_one(), mm/rmap.c, v5.8, for
    /// migration (the only unmap of a hugetlb page): the page's entry in
    /// `vma` (page_vma_mapped_walk()'s hugetlb case: the PMD slot, under
    /// its lock) becomes a migration entry. With seed 003's fix
    /// (`migrate-unshare-hugetlb-pmd`), a PMD table this mm shares is
    /// unshared instead (huge_pmd_unshare()), and the TLB and notifier range
    /// cover the whole PUD; reverted, the entry in the shared table is
    /// replaced for every sharer while only this mm's TLB is flushed.
    ///
    /// # Locking
    /// Called with the file's `i_mmap_rwsem` held for write
    /// (TTU_RMAP_LOCKED); takes the PMD lock.
    pub(crate) fn try_to_unmap_one_huge(
        &self,
        page: Pfn,
        vma: &Arc<Vma>,
        address: VirtAddr,
    ) -> bool {
        let _f = self.func("try_to_unmap_one");
        let mm = self.k.mm(vma.mm);
        let sz = self.huge_page_size();
        let fixed = self
            .k
            .cfg
            .fixes
            .applied(crate::fixes::Fix::MigrateUnshareHugetlbPmd);
        // For hugetlb, it could be much worse if we need to do pud
        // invalidation in the case of pmd sharing.
        let (start, end) = (address, VirtAddr(vma.vm_end().0.min(address.0 + sz)));
        let (rs, re) = if fixed {
            self.adjust_range_if_pmd_sharing_possible(vma, start, end)
        } else {
            (start, end)
        };
        self.mmu_notifier_start(&mm, NotifyEvent::Clear, rs, re);
        // page_vma_mapped_walk(): when pud is not present, pte will be NULL
        if let Some(ptep) = self.huge_pte_offset(&mm, address) {
            let ptl = self.huge_pte_lockptr(ptep).lock(self);
            // check_pte(): a present entry of this page
            if let Pmd::Huge { pfn, .. } = self.pmd_read(ptep) {
                if pfn == page {
                    let mut a = address;
                    if fixed && self.huge_pmd_unshare(&mm, &mut a, ptep) {
                        // huge_pmd_unshare unmapped an entire PMD page: flush
                        // them all; start/end cover this range.
                        self.flush_tlb_range(mm.id, rs, re);
                        self.note(|| "try_to_unmap_one(): huge_pmd_unshare()".into());
                    } else {
                        // Nuke the page table entry: ptep_clear_flush(). An
                        // invlpg of an address in a 2 MiB mapping drops its
                        // whole translation (the model's TLB holds one entry
                        // per base page: all of them go).
                        let pteval = self.pmdp_huge_get_and_clear(ptep);
                        self.flush_tlb_range(mm.id, address, address.add_bytes(sz));
                        let write = match pteval {
                            Pmd::Huge { flags, .. } => {
                                if flags.dirty {
                                    self.page(page).set_flag(pg::DIRTY);
                                }
                                flags.write
                            }
                            _ => false,
                        };
                        self.set_pmd_at(ptep, Pmd::Migration { pfn: page, write });
                        self.note(|| "try_to_unmap_one(): hugetlb migration entry".into());
                        // discard:
                        self.page_remove_rmap(page, true);
                        drop(ptl);
                        self.put_page(page);
                        self.mmu_notifier_invalidate_range_end(&mm);
                        return true;
                    }
                }
            }
            drop(ptl);
        }
        self.mmu_notifier_invalidate_range_end(&mm);
        true
    }

    /// The PageHuge() branch of remove_migration_pte(), mm/migrate.c, v5.8:
    /// `vma`'s migration entry for `old` maps `new` again (writable if the
    /// entry was), with its rmap (hugepage_add_anon_rmap() of a private
    /// page, page_dup_rmap() of a file page).
    ///
    /// # Locking
    /// Takes the PMD lock.
    pub(crate) fn remove_migration_pte_huge(
        &self,
        new: Pfn,
        vma: &Arc<Vma>,
        address: VirtAddr,
        old: Pfn,
    ) -> bool {
        let _f = self.func("remove_migration_pte");
        let mm = self.k.mm(vma.mm);
        let Some(ptep) = self.huge_pte_offset(&mm, address) else {
            return true;
        };
        let ptl = self.huge_pte_lockptr(ptep).lock(self);
        if let Pmd::Migration { pfn, write } = self.pmd_read(ptep) {
            if pfn == old {
                self.get_page(new);
                let mut flags = vma.vm_page_prot();
                flags.young = false; // pte_mkold()
                if write {
                    self.maybe_mkwrite(&mut flags, vma);
                }
                self.set_pmd_at(
                    ptep,
                    Pmd::Huge {
                        pfn: new,
                        flags,
                        invalid: false,
                    },
                );
                if self.page_anon(new) {
                    // hugepage_add_anon_rmap()
                    if self.page(new).compound_mapcount.add_return(1) == 0 {
                        self.unmodelled(
                            "hugepage_add_anon_rmap() of a page not yet anonymous",
                            Some(new),
                        );
                    }
                } else {
                    self.page_dup_rmap(new, true);
                }
            }
        }
        drop(ptl);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmap::Prot;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Kernel, StdEngine};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn pool_machine(pages: u64) -> Cpu<StdEngine> {
        let mut cfg = Config::new(Geometry::TINY);
        cfg.hugetlb_pool = pages;
        Cpu::new(Kernel::<StdEngine>::new(cfg), CpuId(0))
    }

    fn counts(cpu: &Cpu<StdEngine>) -> (u64, u64, u64) {
        let p = cpu.k.hstate.pool_peek();
        (p.nr_huge_pages, p.free_huge_pages, p.resv_huge_pages)
    }

    /// The pool is made at boot; a private mapping reserves all its pages
    /// at mmap (and fails with ENOMEM beyond the pool); a fault consumes a
    /// reservation; the unmap gives back the page and the unused
    /// reservations.
    #[test]
    fn reservations_follow_5_8() {
        let cpu = pool_machine(3);
        assert_eq!(counts(&cpu), (3, 3, 0));
        let mm = cpu.mm_alloc();
        let h = cpu.huge_page_size();
        let a = cpu
            .do_mmap_hugetlb(&mm, 2 * h, Prot::ReadWrite, false, None)
            .expect("mmap");
        assert_eq!(counts(&cpu), (3, 3, 2));
        assert_eq!(
            cpu.do_mmap_hugetlb(&mm, 2 * h, Prot::ReadWrite, false, None),
            Err(Errno::Enomem),
            "only one page is left unreserved"
        );
        assert_eq!(counts(&cpu), (3, 3, 2), "a failed mmap reserves nothing");
        cpu.user_fill(&mm, a, 1, 0x11).expect("write");
        assert_eq!(counts(&cpu), (3, 2, 1));
        cpu.do_munmap(&mm, a, 2 * h).expect("munmap");
        assert_eq!(counts(&cpu), (3, 3, 0));
        assert!(crate::check::audit::audit(&cpu).is_empty());
    }

    /// 5.8's owner COW with no free page deadlocks on the file's
    /// i_mmap_rwsem (unmap_ref_private() under hugetlb_fault()): reported as
    /// LOCK-ORDER, and the CPU is stopped instead of hanging.
    #[test]
    fn owner_cow_without_a_page_is_5_8s_self_deadlock() {
        let cpu = pool_machine(1);
        let mm = cpu.mm_alloc();
        let h = cpu.huge_page_size();
        let a = cpu
            .do_mmap_hugetlb(&mm, h, Prot::ReadWrite, false, None)
            .expect("mmap");
        cpu.user_fill(&mm, a, 1, 0x11).expect("write");
        let _child = cpu.dup_mm(&mm).expect("fork");
        let r = catch_unwind(AssertUnwindSafe(|| cpu.user_fill(&mm, a, 1, 0x22)));
        assert!(r.is_err(), "the CPU is stopped");
        let reports = cpu.k.take_reports();
        assert!(
            reports
                .iter()
                .any(|v| v.id == crate::check::invariants::LOCK_ORDER
                    && v.message.contains("unmap_ref_private")),
            "{reports:?}"
        );
    }

    /// The region operations keep 5.8's meanings: region_chg counts what is
    /// not covered, region_add covers and coalesces and counts what it
    /// added, region_del removes and counts what it removed, region_count
    /// counts.
    #[test]
    fn region_operations_count_as_5_8() {
        let k = Kernel::<StdEngine>::new(Config::new(Geometry::TINY));
        let cpu = Cpu::new(k.clone(), CpuId(0));
        let m = k.hstate.resv_map_alloc();
        assert_eq!(cpu.region_chg(m, 0, 4), 4);
        assert_eq!(cpu.region_add(m, 0, 4), 4);
        assert_eq!(cpu.region_chg(m, 2, 6), 2);
        assert_eq!(cpu.region_add(m, 2, 6), 2);
        assert_eq!(k.hstate.resv_map(m).regions(), vec![(0, 6)]);
        assert_eq!(cpu.region_count(m, 1, 3), 2);
        assert_eq!(cpu.region_del(m, 1, 3), 2);
        assert_eq!(k.hstate.resv_map(m).regions(), vec![(0, 1), (3, 6)]);
        assert_eq!(cpu.region_count(m, 0, 10), 4);
        cpu.region_chg(m, 8, 9);
        cpu.region_abort(m);
        assert_eq!(k.hstate.resv_map(m).adds_in_progress.load(SeqCst), 0);
    }
}
