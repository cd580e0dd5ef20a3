//! The swap device and its swap counts: mm/swapfile.c (v5.8).
//!
//! Models one swap device of the header's size (`swap SIZE`), as
//! `swapon(2)` of a non-rotational block device sets it up in 5.8: a
//! `swap_map` of per-slot counts with SWAP_HAS_CACHE, clusters of
//! SWAPFILE_CLUSTER (HPAGE_PMD_NR with CONFIG_THP_SWAP) slots with their
//! locks and free list, per-CPU clusters for base-page allocation
//! (scan_swap_map_try_ssd_cluster()), whole free clusters for THPs
//! (swap_alloc_cluster()), and the functions that count references to slots:
//! swap_duplicate(), swapcache_prepare(), swap_free(), put_swap_page(),
//! free_swap_and_cache(), page_swapcount(), page_swapped(), and the reuse
//! rule of a write fault, reuse_swap_page() with
//! page_trans_huge_map_swapcount() (seed 000's function), and
//! try_to_free_swap().
//!
//! Which device: an SSD (a swap partition or a swap file on one) without
//! SWP_SYNCHRONOUS_IO, so every swap-in goes through the swap cache, and
//! with cluster info, so a THP can be swapped out whole (5.8 swaps a THP
//! whole only on devices with clusters, never on rotational disks). zram,
//! which 5.8 marks SWP_SYNCHRONOUS_IO, skips the swap cache on swap-in of a
//! slot with one reference; the model does not follow that path.
//!
//! Leaves out: more than one device and priorities, swapoff, discard, bad
//! pages other than the header, the frontswap/zswap hooks, memcg swap
//! accounting, swap count continuation pages (the counts here never
//! overflow, as when add_swap_count_continuation() always succeeds), and the
//! per-CPU swap slots cache (mm/swap_slots.c), which 5.8 leaves off for a
//! device smaller than 5 × 64 slots per CPU: slots are taken and given back
//! one at a time, as with `swap_slot_cache_enabled` false.
//!
//! With the fix `thp-wp-accurate-mapcount` reverted (seed 004), reuse follows
//! the rule before 6d0a07edd17c: a THP subpage is never reused by the PTE fault.

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine, Monitor};
use crate::fixes::Fix;
use crate::page::pg;
use crate::pgtable::SwapEntry;
use crate::sync::{ArcSpinGuard, LockClass, SpinLock};
use crate::types::Pfn;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// One slot of `swap_map`: its count of references (page-table entries)
/// and SWAP_HAS_CACHE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapSlot {
    /// swap_count(): the swap entries (PTEs) that reference the slot.
    pub count: u32,
    /// SWAP_HAS_CACHE: a page is (or is being put) in the swap cache.
    pub has_cache: bool,
    /// SWAP_MAP_BAD: the header page, and slots past the device's end in
    /// its last cluster.
    pub bad: bool,
}

impl SwapSlot {
    fn in_use(self) -> bool {
        self.count > 0 || self.has_cache || self.bad
    }
}

/// `struct swap_cluster_info` of a cluster that is not free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapCluster {
    /// Slots in use.
    pub count: u64,
    /// CLUSTER_FLAG_HUGE: allocated whole for a THP.
    pub huge: bool,
}

/// The device's state, guarded by the kernel's locks: `swap_map` and
/// cluster info by the cluster locks (and `si->lock`), the free-cluster list
/// and counters by `si->lock`, the swap cache by its `i_pages` lock. A plain
/// mutex makes no scheduling point: the locks that guard each part are
/// taken (and scheduled) by the functions, as in 5.8.
#[derive(Clone, Debug, Default)]
pub struct SwapState {
    /// Slots in use (absent: 0).
    pub map: BTreeMap<u64, SwapSlot>,
    /// Clusters that are not free (absent: free, on the free list).
    pub clusters: BTreeMap<u64, SwapCluster>,
    /// The free list: clusters free at swapon, in order, from this index on
    /// (`boot_free_end` excluded) ...
    boot_next: u64,
    boot_free_end: u64,
    /// ... then the clusters freed since, in the order freed.
    freed: VecDeque<u64>,
    /// `si->percpu_cluster`: each CPU's cluster and the next slot to try.
    percpu_next: Vec<Option<(u64, u64)>>,
    /// `si->cluster_next`: where the linear scan starts.
    cluster_next: u64,
    /// `si->max`: slots on the device (the header is slot 0).
    pub max: u64,
    /// `nr_swap_pages`: free slots.
    pub nr_swap_pages: u64,
    /// The swap cache (`swapper_spaces`): slot → the page holding it (a THP's
    /// subpage `i` for slot `entry + i`).
    pub cache: BTreeMap<u64, Pfn>,
    /// The device's contents: what pageout wrote to each slot.
    pub slots: BTreeMap<u64, Box<[u8]>>,
}

impl SwapState {
    /// The first cluster on the free list.
    fn free_head(&self) -> Option<u64> {
        if self.boot_next < self.boot_free_end {
            Some(self.boot_next)
        } else {
            self.freed.front().copied()
        }
    }
    fn cluster_is_free(&self, idx: u64) -> bool {
        !self.clusters.contains_key(&idx)
    }
    /// alloc_cluster(): take the free list's head.
    fn alloc_cluster(&mut self, idx: u64) -> Result<(), ()> {
        if self.free_head() != Some(idx) {
            return Err(());
        }
        if self.boot_next < self.boot_free_end {
            self.boot_next += 1;
        } else {
            self.freed.pop_front();
        }
        self.clusters.insert(idx, SwapCluster::default());
        Ok(())
    }
    /// free_cluster(): to the free list's tail.
    fn free_cluster(&mut self, idx: u64) {
        self.clusters.remove(&idx);
        self.freed.push_back(idx);
    }
    pub fn slot(&self, offset: u64) -> SwapSlot {
        self.map.get(&offset).copied().unwrap_or_default()
    }
    fn set_slot(&mut self, offset: u64, s: SwapSlot) {
        if s.in_use() {
            self.map.insert(offset, s);
        } else {
            self.map.remove(&offset);
        }
    }
}

/// `struct swap_info_struct` of the one swap device.
pub struct SwapInfo<E: Engine> {
    /// `si->lock`.
    pub lock: SpinLock<E>,
    /// `ci->lock` of each cluster, made on first use.
    cluster_locks: Mutex<BTreeMap<u64, Arc<SpinLock<E>>>>,
    /// `swapper_spaces[type].i_pages` (xa_lock): the swap cache's lock.
    pub i_pages_lock: SpinLock<E>,
    state: Mutex<SwapState>,
    /// Advanced at every change of the swap cache and of a SWAP_HAS_CACHE
    /// bit: what a swap-in that found the slot busy waits on.
    cache_events: E::Monitor<u64>,
    /// SWAPFILE_CLUSTER.
    pub cluster_slots: u64,
    /// PAGE_SIZE of the device's slots.
    pub page_size: u64,
}

impl<E: Engine> SwapInfo<E> {
    /// Models setup_swap_map_and_extents() and setup_clusters(),
    /// mm/swapfile.c, v5.8, for a device of `bytes` bytes: slot 0 holds the
    /// header, the slots of the last cluster past the end are bad, and every
    /// other cluster is free. DIVERGENCE: the free list is in address order;
    /// 5.8 interleaves it by SWAP_CLUSTER_COLS from a random `cluster_next`
    /// (which slots a page gets is not observable by a scenario).
    pub fn new(bytes: u64, page_size: u64, cluster_slots: u64, cpus: usize) -> Self {
        let max = bytes / page_size;
        let nr_clusters = max.div_ceil(cluster_slots);
        let mut st = SwapState {
            max,
            percpu_next: vec![None; cpus],
            cluster_next: 1,
            ..SwapState::default()
        };
        let bad = |st: &mut SwapState, off: u64| {
            st.map.insert(
                off,
                SwapSlot {
                    bad: true,
                    ..SwapSlot::default()
                },
            );
            st.clusters.entry(off / cluster_slots).or_default().count += 1;
        };
        bad(&mut st, 0);
        for off in max..nr_clusters * cluster_slots {
            bad(&mut st, off);
        }
        // Cluster 0 holds the header; a partial last cluster is not free.
        st.boot_next = 1;
        st.boot_free_end = max / cluster_slots;
        st.nr_swap_pages = max.saturating_sub(1);
        SwapInfo {
            lock: SpinLock::new(LockClass::SwapInfoLock),
            cluster_locks: Mutex::new(BTreeMap::new()),
            i_pages_lock: SpinLock::new(LockClass::IPagesLock),
            state: Mutex::new(st),
            cache_events: E::Monitor::new(0),
            cluster_slots,
            page_size,
        }
    }

    /// A copy for a copy of the machine (`Kernel::snapshot`): the locks
    /// (free), the state, the cluster locks made so far in cluster order.
    pub fn snapshot(&self) -> Self {
        let locks = self
            .cluster_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(i, l)| (*i, Arc::new(l.snapshot())))
            .collect();
        SwapInfo {
            lock: self.lock.snapshot(),
            cluster_locks: Mutex::new(locks),
            i_pages_lock: self.i_pages_lock.snapshot(),
            state: Mutex::new(self.peek()),
            cache_events: E::Monitor::new(self.cache_events.peek(|g| *g)),
            cluster_slots: self.cluster_slots,
            page_size: self.page_size,
        }
    }

    /// The state, for the functions that hold the lock guarding the part
    /// they touch.
    pub fn state(&self) -> MutexGuard<'_, SwapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the state, for checkers (no scheduling point).
    pub fn peek(&self) -> SwapState {
        self.state().clone()
    }

    /// The swap cache's page at `offset`, for checkers (no scheduling point).
    pub fn peek_cache(&self, offset: u64) -> Option<Pfn> {
        self.state().cache.get(&offset).copied()
    }

    /// The device's copy of slot `offset`, for checkers.
    pub fn peek_slot_bytes(&self, offset: u64) -> Option<Box<[u8]>> {
        self.state().slots.get(&offset).cloned()
    }

    fn cluster_lock(&self, offset: u64) -> Arc<SpinLock<E>> {
        let idx = offset / self.cluster_slots;
        self.cluster_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(idx)
            .or_insert_with(|| Arc::new(SpinLock::new(LockClass::SwapClusterLock)))
            .clone()
    }

    /// A change of the swap cache or of SWAP_HAS_CACHE: wakes swap-ins
    /// waiting for the slot.
    pub(crate) fn cache_changed(&self) {
        self.cache_events.update(|g| *g += 1);
    }

    /// The cache-change count a waiter compares against.
    pub(crate) fn cache_generation(&self) -> u64 {
        self.cache_events.inspect(|g| *g)
    }

    /// Blocks until the swap cache or a SWAP_HAS_CACHE bit changed after
    /// `seen`.
    pub(crate) fn wait_cache_change(&self, seen: u64) {
        self.cache_events.wait_until(|g| (*g != seen).then_some(()));
    }
}

/// What __swap_duplicate() adds: a reference (`1`) or SWAP_HAS_CACHE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Usage {
    Ref,
    Cache,
}

/// Why swap_duplicate()/swapcache_prepare() failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapDupError {
    /// -EEXIST: another CPU has the slot in the swap cache (or is adding it).
    Exist,
    /// -ENOENT: the slot is free (its last user went away).
    NoEnt,
}

impl<E: Engine> Cpu<E> {
    /// The swap device. Callers reach it only through a swap entry or a page
    /// in the swap cache, which exist only with a device.
    pub fn swap_info(&self) -> &SwapInfo<E> {
        match &self.k.swap {
            Some(si) => si,
            None => self.unmodelled("a swap entry without a swap device", None),
        }
    }

    /// Models lock_cluster()/lock_cluster_or_swap_info(), mm/swapfile.c, v5.8.
    ///
    /// # Locking
    /// Takes `ci->lock` of the slot's cluster.
    fn lock_cluster(&self, offset: u64) -> ArcSpinGuard<'_, E> {
        SpinLock::lock_arc(self.swap_info().cluster_lock(offset), self)
    }

    /// Models get_swap_page(), mm/swap_slots.c, v5.8, without the slots
    /// cache: a whole free cluster for a THP (swap_alloc_cluster()), one slot
    /// otherwise (scan_swap_map_slots()); the slots come with SWAP_HAS_CACHE.
    /// None when the device is full (or has no free cluster for a THP).
    ///
    /// # Locking
    /// Takes `si->lock`, then cluster locks.
    pub fn get_swap_page(&self, page: Pfn) -> Option<SwapEntry> {
        let _f = self.func("get_swap_page");
        let si = self.k.swap.as_ref()?;
        let thp = self.page_trans_huge(page);
        let size = if thp { si.cluster_slots } else { 1 };
        // get_swap_pages(): avail_pgs = nr_swap_pages / size.
        {
            let _si = si.lock.lock(self);
            if si.state().nr_swap_pages < size {
                self.note(|| "get_swap_pages(): no free slots".to_string());
                return None;
            }
            let got = if thp {
                self.swap_alloc_cluster(si)
            } else {
                self.scan_swap_map_slots(si)
            };
            if let Some(off) = got {
                si.state().nr_swap_pages -= size;
                self.note(|| format!("get_swap_page(): slot {off} ({size} slots)"));
            }
            got.map(SwapEntry)
        }
    }

    /// Models swap_alloc_cluster(), mm/swapfile.c, v5.8: the free list's
    /// first cluster, every slot SWAP_HAS_CACHE, flagged huge. Called with
    /// `si->lock` held.
    fn swap_alloc_cluster(&self, si: &SwapInfo<E>) -> Option<u64> {
        let idx = si.state().free_head()?;
        let offset = idx * si.cluster_slots;
        let _ci = self.lock_cluster(offset);
        let mut st = si.state();
        st.alloc_cluster(idx).ok()?;
        st.clusters.insert(
            idx,
            SwapCluster {
                count: si.cluster_slots,
                huge: true,
            },
        );
        for i in 0..si.cluster_slots {
            st.set_slot(
                offset + i,
                SwapSlot {
                    has_cache: true,
                    ..SwapSlot::default()
                },
            );
        }
        drop(st);
        si.cache_changed();
        Some(offset)
    }

    /// Models scan_swap_map_slots() for one slot, mm/swapfile.c, v5.8, with
    /// cluster info: the next free slot of this CPU's cluster
    /// (scan_swap_map_try_ssd_cluster(), which takes the free list's head
    /// when it has none), dropping a cluster that was freed meanwhile and is
    /// not the list's head (scan_swap_map_ssd_cluster_conflict()); else a
    /// linear scan from `cluster_next`. Called with `si->lock` held.
    fn scan_swap_map_slots(&self, si: &SwapInfo<E>) -> Option<u64> {
        let cpu = self.id.0;
        let n = si.cluster_slots;
        loop {
            let cur = si.state().percpu_next.get(cpu).copied().flatten();
            let (idx, next) = match cur {
                Some(next) => next,
                None => {
                    let head = si.state().free_head();
                    match head {
                        Some(idx) => (idx, idx * n),
                        // No free cluster: the linear scan.
                        None => break,
                    }
                }
            };
            let max = (idx + 1) * n;
            let found = {
                let _ci = self.lock_cluster(next.min(max - 1));
                let st = si.state();
                (next..max.min(st.max)).find(|o| !st.slot(*o).in_use())
            };
            let Some(off) = found else {
                si.state().percpu_next[cpu] = None;
                continue;
            };
            si.state().percpu_next[cpu] = Some((idx, off + 1));
            // scan_swap_map_ssd_cluster_conflict()
            let conflict = {
                let st = si.state();
                st.free_head().is_some_and(|h| h != idx) && st.cluster_is_free(idx)
            };
            if conflict {
                si.state().percpu_next[cpu] = None;
                continue;
            }
            if self.swap_map_take(si, off) {
                return Some(off);
            }
        }
        let (start, max) = {
            let st = si.state();
            (st.cluster_next, st.max)
        };
        for off in (start..max).chain(1..start) {
            let free = {
                let _ci = self.lock_cluster(off);
                let in_use = si.state().slot(off).in_use();
                !in_use
            };
            if free && self.swap_map_take(si, off) {
                si.state().cluster_next = off + 1;
                return Some(off);
            }
        }
        None
    }

    /// scan_swap_map_slots()'s `checks:` for a chosen slot: under its
    /// cluster lock, if still free, it becomes SWAP_HAS_CACHE and counts in
    /// its cluster (inc_cluster_info_page(), alloc_cluster() of a free one).
    fn swap_map_take(&self, si: &SwapInfo<E>, off: u64) -> bool {
        let _ci = self.lock_cluster(off);
        let mut st = si.state();
        if st.slot(off).in_use() {
            return false;
        }
        let idx = off / si.cluster_slots;
        if st.cluster_is_free(idx) && st.alloc_cluster(idx).is_err() {
            // VM_BUG_ON(cluster_list_first(&si->free_clusters) != idx)
            drop(st);
            self.bug(
                "VM_BUG_ON(cluster_list_first(&si->free_clusters) != idx)",
                None,
            );
        }
        st.clusters.entry(idx).or_default().count += 1;
        st.set_slot(
            off,
            SwapSlot {
                has_cache: true,
                ..SwapSlot::default()
            },
        );
        drop(st);
        si.cache_changed();
        true
    }

    /// Models __swap_duplicate(), mm/swapfile.c, v5.8.
    ///
    /// # Locking
    /// Takes the slot's cluster lock.
    fn __swap_duplicate(&self, entry: SwapEntry, usage: Usage) -> Result<(), SwapDupError> {
        let si = self.swap_info();
        let off = entry.0;
        let _ci = self.lock_cluster(off);
        let mut st = si.state();
        let mut s = st.slot(off);
        let r = match usage {
            Usage::Cache => {
                if !s.has_cache && s.count > 0 {
                    s.has_cache = true;
                    Ok(())
                } else if s.has_cache {
                    Err(SwapDupError::Exist)
                } else {
                    Err(SwapDupError::NoEnt)
                }
            }
            Usage::Ref => {
                if s.count > 0 || s.has_cache {
                    s.count += 1;
                    Ok(())
                } else {
                    Err(SwapDupError::NoEnt)
                }
            }
        };
        st.set_slot(off, s);
        drop(st);
        if usage == Usage::Cache && r.is_ok() {
            si.cache_changed();
        }
        r
    }

    /// Models swap_duplicate(), mm/swapfile.c, v5.8: one more reference to
    /// the slot (fork's copy of a swap PTE, try_to_unmap()'s swap PTE).
    ///
    /// # Locking
    /// Takes the slot's cluster lock.
    pub fn swap_duplicate(&self, entry: SwapEntry) -> Result<(), SwapDupError> {
        let _f = self.func("swap_duplicate");
        self.__swap_duplicate(entry, Usage::Ref)
    }

    /// Models swapcache_prepare(), mm/swapfile.c, v5.8: claim the slot for
    /// the swap cache (SWAP_HAS_CACHE); EEXIST if another CPU has it.
    ///
    /// # Locking
    /// Takes the slot's cluster lock.
    pub fn swapcache_prepare(&self, entry: SwapEntry) -> Result<(), SwapDupError> {
        let _f = self.func("swapcache_prepare");
        self.__swap_duplicate(entry, Usage::Cache)
    }

    /// Models __swap_entry_free_locked(), mm/swapfile.c, v5.8: drop a
    /// reference or SWAP_HAS_CACHE; returns what is left (count, cache). A
    /// slot left with nothing stays SWAP_HAS_CACHE until free_swap_slot().
    /// Called with the slot's cluster lock held.
    fn __swap_entry_free_locked(&self, si: &SwapInfo<E>, off: u64, usage: Usage) -> (u32, bool) {
        let mut st = si.state();
        let mut s = st.slot(off);
        match usage {
            Usage::Cache => {
                if !s.has_cache {
                    drop(st);
                    self.bug("VM_BUG_ON(!has_cache)", None);
                }
                s.has_cache = false;
            }
            Usage::Ref => {
                if s.count == 0 {
                    drop(st);
                    self.bug("swap_free(): free of an unused swap entry (swap_info_get: Unused swap offset entry)", None);
                }
                s.count -= 1;
            }
        }
        let left = (s.count, s.has_cache);
        // p->swap_map[offset] = usage ? : SWAP_HAS_CACHE;
        if s.count == 0 && !s.has_cache {
            s.has_cache = true;
        }
        st.set_slot(off, s);
        left
    }

    /// Models free_swap_slot() without the slots cache
    /// (swapcache_free_entries() → swap_entry_free()), mm/swapfile.c, v5.8:
    /// the slot, left SWAP_HAS_CACHE alone, becomes free; its cluster may
    /// become free (to the free list's tail); the device forgets its
    /// contents.
    ///
    /// # Locking
    /// Takes `si->lock` (swap_info_get_cont()), then the slot's cluster lock.
    fn free_swap_slot(&self, entry: SwapEntry) {
        let _f = self.func("swap_entry_free");
        let si = self.swap_info();
        let off = entry.0;
        let _si = si.lock.lock(self);
        {
            let _ci = self.lock_cluster(off);
            let mut st = si.state();
            let s = st.slot(off);
            if s.count != 0 || !s.has_cache {
                drop(st);
                self.bug("VM_BUG_ON(count != SWAP_HAS_CACHE)", None);
            }
            st.set_slot(off, SwapSlot::default());
            st.slots.remove(&off);
            // dec_cluster_info_page()
            let idx = off / si.cluster_slots;
            let c = st.clusters.entry(idx).or_default();
            c.count -= 1;
            if c.count == 0 {
                st.free_cluster(idx);
            }
        }
        // swap_range_free()
        si.state().nr_swap_pages += 1;
        drop(_si);
        si.cache_changed();
    }

    /// Models __swap_entry_free() and swap_free(), mm/swapfile.c, v5.8: drop
    /// one reference; a slot no one uses any more is freed.
    ///
    /// # Locking
    /// Takes the slot's cluster lock (then, to free it, free_swap_slot()'s).
    pub fn swap_free(&self, entry: SwapEntry) -> (u32, bool) {
        let _f = self.func("swap_free");
        let si = self.swap_info();
        let left = {
            let _ci = self.lock_cluster(entry.0);
            self.__swap_entry_free_locked(si, entry.0, Usage::Ref)
        };
        if left == (0, false) {
            self.free_swap_slot(entry);
        }
        left
    }

    /// Models put_swap_page(), mm/swapfile.c, v5.8: the swap cache lets go
    /// of the slots of `page` (SWAP_HAS_CACHE); a huge cluster no PTE
    /// references is freed whole (swap_free_cluster()).
    ///
    /// # Locking
    /// Takes the cluster lock, then (to free a whole cluster) `si->lock` and
    /// the cluster lock again.
    pub fn put_swap_page(&self, page: Pfn, entry: SwapEntry) {
        let _f = self.func("put_swap_page");
        let si = self.swap_info();
        let off = entry.0;
        let size = if self.page_trans_huge(page) {
            si.cluster_slots
        } else {
            1
        };
        let ci = self.lock_cluster(off);
        if size == si.cluster_slots {
            let idx = off / si.cluster_slots;
            let mut st = si.state();
            if !st.clusters.get(&idx).is_some_and(|c| c.huge) {
                drop(st);
                self.bug("VM_BUG_ON(!cluster_is_huge(ci))", None);
            }
            let mut free_entries = 0;
            for i in 0..size {
                let s = st.slot(off + i);
                if !s.has_cache {
                    drop(st);
                    self.bug("VM_BUG_ON(!(val & SWAP_HAS_CACHE))", None);
                }
                if s.count == 0 {
                    free_entries += 1;
                }
            }
            // cluster_clear_huge(ci)
            st.clusters.entry(idx).or_default().huge = false;
            if free_entries == size {
                drop(st);
                drop(ci);
                let _si = si.lock.lock(self);
                // swap_free_cluster()
                {
                    let _ci = self.lock_cluster(off);
                    let mut st = si.state();
                    for i in 0..size {
                        st.set_slot(off + i, SwapSlot::default());
                        st.slots.remove(&(off + i));
                    }
                    st.free_cluster(idx);
                }
                si.cache_changed();
                si.state().nr_swap_pages += size;
                return;
            }
        }
        let mut ci = Some(ci);
        for i in 0..size {
            if ci.is_none() {
                ci = Some(self.lock_cluster(off));
            }
            let left = self.__swap_entry_free_locked(si, off + i, Usage::Cache);
            si.cache_changed();
            if left == (0, false) {
                drop(ci.take());
                self.free_swap_slot(SwapEntry(off + i));
            }
        }
    }

    /// Models free_swap_and_cache(), mm/swapfile.c, v5.8: zap's drop of a
    /// swap PTE's reference; a slot then held only by the swap cache, whose
    /// page no one maps, is reclaimed from the cache
    /// (__try_to_reclaim_swap(TTRS_UNMAPPED | TTRS_FULL)).
    ///
    /// # Locking
    /// Called under the PTE lock; takes the cluster lock, then the swap
    /// cache's `i_pages` lock and a trylock of the page.
    pub fn free_swap_and_cache(&self, entry: SwapEntry) {
        let _f = self.func("free_swap_and_cache");
        let si = self.swap_info();
        let left = {
            let _ci = self.lock_cluster(entry.0);
            self.__swap_entry_free_locked(si, entry.0, Usage::Ref)
        };
        if left == (0, false) {
            self.free_swap_slot(entry);
        } else if left == (0, true) && !self.swap_page_trans_huge_swapped(entry) {
            self.__try_to_reclaim_swap(entry);
        }
    }

    /// Models __try_to_reclaim_swap(TTRS_UNMAPPED), mm/swapfile.c, v5.8:
    /// free the slot's swap cache page if no one maps it (trylock only: the
    /// caller may hold a page-table lock).
    fn __try_to_reclaim_swap(&self, entry: SwapEntry) {
        let _f = self.func("__try_to_reclaim_swap");
        let Some(page) = self.find_get_swap_page(entry) else {
            return;
        };
        if self.trylock_page(page) {
            if !self.page_mapped(page) {
                self.try_to_free_swap(page);
            }
            self.unlock_page(page);
        }
        self.put_page(page);
    }

    /// Models swap_page_trans_huge_swapped(), mm/swapfile.c, v5.8: whether a
    /// PTE references the slot, or any slot of its huge cluster.
    ///
    /// # Locking
    /// Takes the cluster lock.
    fn swap_page_trans_huge_swapped(&self, entry: SwapEntry) -> bool {
        let si = self.swap_info();
        let n = si.cluster_slots;
        let base = entry.0 / n * n;
        let _ci = self.lock_cluster(entry.0);
        let st = si.state();
        if !st.clusters.get(&(entry.0 / n)).is_some_and(|c| c.huge) {
            return st.slot(entry.0).count > 0;
        }
        (base..base + n).any(|o| st.slot(o).count > 0)
    }

    /// Models page_swapcount(), mm/swapfile.c, v5.8: the PTEs that reference
    /// the slot of a swap cache page.
    ///
    /// # Locking
    /// Takes the cluster lock.
    pub fn page_swapcount(&self, page: Pfn) -> i64 {
        let Some(si) = self.k.swap.as_ref() else {
            return 0;
        };
        let off = self
            .page(page)
            .private
            .load(std::sync::atomic::Ordering::SeqCst);
        if off == 0 {
            return 0;
        }
        let _ci = self.lock_cluster(off);
        // Bound before the cluster lock is dropped: the state's guard, a
        // temporary of a tail expression, would outlive it (its unlock is a
        // scheduling point).
        #[allow(clippy::let_and_return)]
        let count = si.state().slot(off).count as i64;
        count
    }

    /// Models __swap_count(), mm/swapfile.c, v5.8 (read under the cluster
    /// lock here, as __swp_swapcount() does).
    pub fn __swap_count(&self, entry: SwapEntry) -> u32 {
        let si = self.swap_info();
        let _ci = self.lock_cluster(entry.0);
        // Bound first, as in page_swapcount().
        #[allow(clippy::let_and_return)]
        let count = si.state().slot(entry.0).count;
        count
    }

    /// Models page_swapped(), mm/swapfile.c, v5.8: whether any PTE still
    /// references the page's slot (any slot of a THP's cluster).
    fn page_swapped(&self, page: Pfn) -> bool {
        if !self.page_trans_compound(page) {
            return self.page_swapcount(page) != 0;
        }
        let head = self.compound_head(page);
        let off = self
            .page(head)
            .private
            .load(std::sync::atomic::Ordering::SeqCst);
        self.swap_page_trans_huge_swapped(SwapEntry(off))
    }

    /// PageSwapCache(), include/linux/page-flags.h, v5.8: the head is
    /// PageSwapBacked and PG_swapcache.
    pub fn page_swapcache(&self, page: Pfn) -> bool {
        let head = self.page(self.compound_head(page));
        head.test_flag(pg::SWAPCACHE) && head.test_flag(pg::SWAPBACKED)
    }

    /// Models try_to_free_swap(), mm/swapfile.c, v5.8: a swap cache page no
    /// PTE references any more leaves the swap cache (and becomes dirty: its
    /// only copy is in memory now). Returns whether it did.
    ///
    /// # Locking
    /// Called with the page locked.
    pub fn try_to_free_swap(&self, page: Pfn) -> bool {
        let _f = self.func("try_to_free_swap");
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        if !self.page_swapcache(page) {
            return false;
        }
        let head = self.compound_head(page);
        if self.page(head).test_flag(pg::WRITEBACK) {
            return false;
        }
        if self.page_swapped(page) {
            return false;
        }
        self.delete_from_swap_cache(head);
        self.page(head).set_flag(pg::DIRTY);
        true
    }

    /// Models reuse_swap_page(), mm/swapfile.c, v5.8: whether the faulting
    /// process may write the page in place: no other mapping and no swap
    /// entry references it. A swap cache page it may reuse leaves the swap
    /// cache (its slot's last reference is being dropped). `total_map_swapcount`
    /// receives the total mapcount plus swap count.
    ///
    /// # Locking
    /// Called with the page locked; takes cluster locks, and the swap
    /// cache's `i_pages` lock to delete the page from it.
    pub fn reuse_swap_page(&self, page: Pfn, total_map_swapcount: Option<&mut i64>) -> bool {
        let _f = self.func("reuse_swap_page");
        crate::vm_bug_on_page!(
            self,
            !self.page_locked(page),
            page,
            "VM_BUG_ON_PAGE(!PageLocked(page), page)"
        );
        if !self.k.cfg.fixes.applied(Fix::ThpWpAccurateMapcount) {
            // Before 6d0a07edd17c: `!PageTransCompound(page) && page_mapcount(page) == 1`.
            if self.page_trans_compound(page) {
                self.note(|| {
                    "reuse_swap_page(): PageTransCompound: a THP subpage is never reused (the rule before 6d0a07edd17c)".to_string()
                });
                return false;
            }
            let count = self.page_mapcount(page);
            if let Some(t) = total_map_swapcount {
                *t = count;
            }
            return count == 1;
        }
        let (count, total_mapcount, total_swapcount) = self.page_trans_huge_map_swapcount(page);
        if let Some(t) = total_map_swapcount {
            *t = total_mapcount + total_swapcount;
        }
        self.note(|| format!("reuse_swap_page(): page_trans_huge_map_swapcount() == {count}"));
        if count == 1
            && self.page_swapcache(page)
            && (!self.page_trans_compound(page) || total_swapcount == self.page_swapcount(page))
        {
            let head = self.compound_head(page);
            // PageWriteback(): the model's writeback completes within
            // pageout(), so a page is never seen under writeback here.
            if !self.page(head).test_flag(pg::WRITEBACK) {
                self.delete_from_swap_cache(head);
                self.page(head).set_flag(pg::DIRTY);
            }
        }
        count <= 1
    }

    /// Models page_trans_huge_map_swapcount(), mm/swapfile.c, v5.8 (with
    /// CONFIG_THP_SWAP): returns (the highest mapcount + swapcount of any
    /// subpage, total mapcount, total swapcount).
    ///
    /// # Locking
    /// Takes the cluster lock of the page's slots.
    pub fn page_trans_huge_map_swapcount(&self, page: Pfn) -> (i64, i64, i64) {
        crate::vm_bug_on_page!(
            self,
            self.page_huge(page),
            page,
            "VM_BUG_ON_PAGE(PageHuge(page), page)"
        );
        if !self.page_trans_compound(page) {
            let mut total = 0;
            let mapcount = self.page_trans_huge_mapcount(page, Some(&mut total));
            let swapcount = if self.page_swapcache(page) {
                self.page_swapcount(page)
            } else {
                0
            };
            return (mapcount + swapcount, total, swapcount);
        }
        let head = self.compound_head(page);
        let nr = self.k.geo.hpage_pmd_nr();
        let map_off = self.page_swapcache(head).then(|| {
            self.page(head)
                .private
                .load(std::sync::atomic::Ordering::SeqCst)
        });
        let _ci = map_off.map(|off| self.lock_cluster(off));
        let (mut total_map, mut total_swap, mut map_swapcount) = (0i64, 0i64, 0i64);
        for i in 0..nr {
            let mapcount = self.page(head.add(i)).mapcount.load_i64() + 1;
            total_map += mapcount;
            let swapcount = match map_off {
                Some(off) => self.swap_info().state().slot(off + i).count as i64,
                None => 0,
            };
            total_swap += swapcount;
            map_swapcount = map_swapcount.max(mapcount + swapcount);
        }
        drop(_ci);
        if self.page_double_map(head) {
            map_swapcount -= 1;
            total_map -= nr as i64;
        }
        let mapcount = self.compound_mapcount(head);
        map_swapcount += mapcount;
        total_map += mapcount;
        (map_swapcount, total_map, total_swap)
    }

    /// Models split_swap_cluster(), mm/swapfile.c, v5.8: a THP in the swap
    /// cache was split; its cluster is no longer huge.
    ///
    /// # Locking
    /// Takes the cluster lock.
    pub fn split_swap_cluster(&self, entry: SwapEntry) {
        let si = self.swap_info();
        let _ci = self.lock_cluster(entry.0);
        if let Some(c) = si.state().clusters.get_mut(&(entry.0 / si.cluster_slots)) {
            c.huge = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Kernel, StdEngine};

    fn cpu_with_swap(slots: u64) -> Cpu<StdEngine> {
        let geo = Geometry::TINY;
        let mut cfg = Config::new(geo);
        cfg.swap_bytes = slots * geo.page_size();
        Cpu::new(Kernel::<StdEngine>::new(cfg), CpuId(0))
    }

    #[test]
    fn a_device_reserves_its_header_and_partial_cluster() {
        // 10 slots, clusters of 4: slot 0 and slots 10, 11 are bad; only
        // cluster 1 is free at swapon.
        let cpu = cpu_with_swap(10);
        let st = cpu.swap_info().peek();
        assert_eq!(st.nr_swap_pages, 9);
        assert!(st.slot(0).bad && st.slot(10).bad && st.slot(11).bad);
        assert_eq!(st.free_head(), Some(1));
        assert_eq!(st.clusters.get(&0).map(|c| c.count), Some(1));
    }

    #[test]
    fn counts_go_up_and_down_and_free_the_slot() {
        let cpu = cpu_with_swap(16);
        let e = SwapEntry(5);
        // A slot no one holds cannot be duplicated.
        assert_eq!(cpu.swap_duplicate(e), Err(SwapDupError::NoEnt));
        assert_eq!(cpu.swapcache_prepare(e), Err(SwapDupError::NoEnt));
        let off = cpu.scan_swap_map_slots(cpu.swap_info()).expect("a slot");
        // get_swap_pages() counts the slot taken.
        cpu.swap_info().state().nr_swap_pages -= 1;
        let e = SwapEntry(off);
        assert_eq!(cpu.swapcache_prepare(e), Err(SwapDupError::Exist));
        cpu.swap_duplicate(e).unwrap();
        cpu.swap_duplicate(e).unwrap();
        assert_eq!(cpu.__swap_count(e), 2);
        assert_eq!(cpu.swap_free(e), (1, true));
        assert_eq!(cpu.swap_free(e), (0, true));
        // The cache's hold is the last: then the slot is free again.
        let si = cpu.swap_info();
        {
            let _ci = cpu.lock_cluster(off);
            assert_eq!(
                cpu.__swap_entry_free_locked(si, off, Usage::Cache),
                (0, false)
            );
        }
        cpu.free_swap_slot(e);
        assert!(!si.peek().slot(off).in_use());
        assert_eq!(si.peek().nr_swap_pages, 15);
    }

    #[test]
    fn a_whole_cluster_goes_to_a_thp_and_comes_back() {
        let cpu = cpu_with_swap(16);
        let si = cpu.swap_info();
        let off = cpu.swap_alloc_cluster(si).expect("a free cluster");
        assert_eq!(off % 4, 0);
        let st = si.peek();
        assert!(st.clusters[&(off / 4)].huge);
        assert!((off..off + 4).all(|o| st.slot(o).has_cache && st.slot(o).count == 0));
    }
}
