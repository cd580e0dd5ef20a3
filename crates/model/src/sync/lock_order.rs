//! The lock order: the one place it is written down.
//!
//! Models the comment at the top of mm/rmap.c (v5.8), which lists the order in
//! which the memory-management locks nest:
//!
//! ```text
//!  * inode->i_mutex    (while writing or truncating, not reading or faulting)
//!  *   mm->mmap_lock
//!  *     page->flags PG_locked (lock_page)
//!  *       hugetlbfs_i_mmap_rwsem_key (in huge_pmd_share)
//!  *         mapping->i_mmap_rwsem
//!  *           hugetlb_fault_mutex (hugetlbfs specific page fault mutex)
//!  *           anon_vma->rwsem
//!  *             mm->page_table_lock or pte_lock
//!  *               pgdat->lru_lock (in mark_page_accessed, isolate_lru_page)
//!  *               swap_lock (in swap_duplicate, swap_info_get)
//!  *                 ...
//! ```
//!
//! Each class has a rank; a blocking acquisition of a class while holding a class
//! of a higher rank (or the same class without a nesting annotation, as
//! `spin_lock_nested(..., SINGLE_DEPTH_NESTING)`) is an inversion that
//! [`super::lockdep`] reports. The deferred-split queue lock and the zone lock,
//! which rmap.c does not list, are leaves taken inside the page-table locks
//! (mm/huge_memory.c takes `split_queue_lock` under `lru_lock` in
//! split_huge_page_to_list()).

use serde::Serialize;

/// A lock class, in the sense of lockdep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum LockClass {
    /// `mm->mmap_lock` (an rwsem).
    MmapLock,
    /// PG_locked, the page lock.
    PageLock,
    /// `mapping->i_mmap_rwsem`.
    IMmapRwsem,
    /// One of `hugetlb_fault_mutex_table[]` (mm/hugetlb.c): serialises the
    /// faults of one (mapping, index).
    HugetlbFaultMutex,
    /// PG_locked of a PageHuge() page, which nests inside the fault mutex
    /// (the hugetlbfs order of mm/rmap.c's comment).
    HugetlbPageLock,
    /// `anon_vma->root->rwsem`.
    AnonVmaRwsem,
    /// A secondary MMU's update lock (lib/test_hmm.c's `dmirror->mutex`,
    /// the driver lock of Documentation/vm/hmm.rst): taken by its
    /// invalidate callback, which mmu_notifier_invalidate_range_start()
    /// calls under mmap_lock, the page lock or the anon_vma lock, never
    /// under a page-table lock.
    DmirrorMutex,
    /// `mm->page_table_lock`, the split PMD lock and the PTE lock.
    PageTableLock,
    /// `pgdat->lru_lock`.
    LruLock,
    /// PG_compound_lock of a THP head (v3.16 only: compound_lock(), a bit
    /// spinlock in the head's flags): __split_huge_page_refcount() takes it
    /// inside `zone->lru_lock`; put_page() of a tail page takes it alone.
    CompoundLock,
    /// `ds_queue->split_queue_lock`.
    SplitQueueLock,
    /// `hugetlb_lock`: the hugetlb pool's free lists and counters.
    HugetlbLock,
    /// `resv_map->lock`: a hugetlb reservation map's regions.
    ResvMapLock,
    /// `si->lock` (5.8's `swap_lock` role for one device): the swap
    /// device's free-cluster list and counters.
    SwapInfoLock,
    /// `ci->lock`: a swap cluster's slots in `swap_map`, nested inside
    /// `si->lock` (scan_swap_map_slots()).
    SwapClusterLock,
    /// `mapping->i_pages` (xa_lock): a file's page cache, and the swap cache.
    IPagesLock,
}

impl LockClass {
    /// Position in the order: a lock may be taken while holding only locks of a
    /// lower rank.
    pub fn rank(self) -> u32 {
        match self {
            LockClass::MmapLock => 10,
            LockClass::PageLock => 20,
            LockClass::IMmapRwsem => 30,
            LockClass::HugetlbFaultMutex => 33,
            LockClass::HugetlbPageLock => 36,
            LockClass::AnonVmaRwsem => 40,
            LockClass::DmirrorMutex => 45,
            LockClass::PageTableLock => 50,
            LockClass::LruLock => 60,
            LockClass::CompoundLock => 61,
            LockClass::SwapInfoLock => 62,
            LockClass::SwapClusterLock => 64,
            LockClass::SplitQueueLock => 70,
            LockClass::HugetlbLock => 72,
            LockClass::ResvMapLock => 74,
            LockClass::IPagesLock => 80,
        }
    }

    /// The kernel's name for the lock.
    pub fn kernel_name(self) -> &'static str {
        match self {
            LockClass::MmapLock => "&mm->mmap_lock",
            LockClass::PageLock => "PG_locked",
            LockClass::IMmapRwsem => "&mapping->i_mmap_rwsem",
            LockClass::HugetlbFaultMutex => "&hugetlb_fault_mutex_table[i]",
            LockClass::HugetlbPageLock => "PG_locked (PageHuge)",
            LockClass::AnonVmaRwsem => "&anon_vma->rwsem",
            LockClass::DmirrorMutex => "&dmirror->mutex",
            LockClass::PageTableLock => "ptlock_ptr(page)",
            LockClass::LruLock => "&pgdat->lru_lock",
            LockClass::CompoundLock => "PG_compound_lock (v3.16)",
            LockClass::SplitQueueLock => "&ds_queue->split_queue_lock",
            LockClass::HugetlbLock => "hugetlb_lock",
            LockClass::ResvMapLock => "&resv_map->lock",
            LockClass::SwapInfoLock => "&si->lock",
            LockClass::SwapClusterLock => "&ci->lock",
            LockClass::IPagesLock => "&mapping->i_pages",
        }
    }
}
