//! `struct page` and the helpers of include/linux/mm.h, page-flags.h and
//! page_ref.h that read and change it.
//!
//! Models: the page flags the THP code uses, `_refcount` (held on the head page
//! of a compound page), `_mapcount` (starting at -1), the compound mapcount
//! (kept on the head here; in Linux it lives in the first tail page), the anon
//! `mapping` and `index`, PG_locked with its wait queue, and the frame's bytes.
//! Every counter is an engine atomic, so each access is a scheduling point.
//!
//! Leaves out: memcg, page owner, the LRU lists themselves (PG_lru is a flag),
//! file-backed mappings, KSM.

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine, Monitor};
use crate::pgtable::TableBody;
use crate::sync::lockdep::Acquire;
use crate::sync::locks::{
    page_lock, page_lock_inherit, page_lock_snapshot, page_trylock, page_unlock, PageLockState,
};
use crate::types::{AnonVmaId, FileId, Pfn};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Page flags (include/linux/page-flags.h), as bits of `Page::flags`.
pub mod pg {
    pub const HEAD: u64 = 1 << 0;
    pub const DIRTY: u64 = 1 << 1;
    pub const UPTODATE: u64 = 1 << 2;
    pub const LRU: u64 = 1 << 3;
    pub const ACTIVE: u64 = 1 << 4;
    pub const SWAPBACKED: u64 = 1 << 5;
    /// PG_double_map (Linux keeps it on the first tail page; here on the head).
    pub const DOUBLE_MAP: u64 = 1 << 6;
    pub const MLOCKED: u64 = 1 << 7;
    pub const SWAPCACHE: u64 = 1 << 8;
    /// PageTable(): the frame holds a page table.
    pub const TABLE: u64 = 1 << 9;
    /// PG_reserved: the zero pages.
    pub const RESERVED: u64 = 1 << 10;
    pub const WRITEBACK: u64 = 1 << 11;
    pub const REFERENCED: u64 = 1 << 12;
    /// PageHuge(): the compound page's destructor is HUGETLB_PAGE_DTOR (a
    /// hugetlb page, set on the head for the page's life in the pool).
    pub const HUGETLB: u64 = 1 << 13;
    /// PG_private of a hugetlb head: the allocation consumed a reservation
    /// (restore_reserve in free_huge_page()).
    pub const PRIVATE: u64 = 1 << 14;
    /// page_huge_active() (5.8 keeps it as PG_private of the first tail).
    pub const HUGE_ACTIVE: u64 = 1 << 15;
    /// PageHugeTemporary() (5.8: `page[2].mapping`): a page allocated beyond
    /// the pool for a migration, freed to the buddy allocator.
    pub const HUGE_TEMPORARY: u64 = 1 << 16;
    /// The flags __split_huge_page_tail() copies from head to tail.
    pub const SPLIT_COPY: u64 =
        DIRTY | UPTODATE | LRU | ACTIVE | SWAPBACKED | MLOCKED | SWAPCACHE | REFERENCED;
}

/// `PAGE_MAPPING_ANON`: the low bit of `page->mapping` for anonymous pages.
const PAGE_MAPPING_ANON: u64 = 1;

/// `page->mapping` of a page in the page cache of file `f` (an
/// `address_space` pointer: the low bits clear).
pub fn file_mapping(f: FileId) -> u64 {
    (f.0 as u64 + 1) << 2
}

/// The file a `page->mapping` value names, if it is a file's.
pub fn mapping_file(mapping: u64) -> Option<FileId> {
    (mapping != 0 && mapping & 3 == 0).then(|| FileId((mapping >> 2) as usize - 1))
}

/// One physical frame's `struct page`, and the frame's bytes.
pub struct Page<E: Engine> {
    pub flags: E::Atomic,
    /// `_refcount`.
    pub refcount: E::Atomic,
    /// `_mapcount`: -1 when unmapped.
    pub mapcount: E::Atomic,
    /// `compound_mapcount` (head pages only): -1 when not PMD-mapped.
    pub compound_mapcount: E::Atomic,
    /// `page->mapping`: 0, or an anon_vma with PAGE_MAPPING_ANON set.
    pub mapping: E::Atomic,
    /// `page->index`: the linear page index of an anonymous page.
    pub index: E::Atomic,
    /// `compound_head` of a tail page: head pfn + 1; 0 when not a tail.
    /// Read without a lock all over mm/ (compound_head() is a READ_ONCE) and
    /// changed by __split_huge_page_tail(), so an engine atomic.
    compound_head: E::Atomic,
    /// `compound_order` of a head page (read locklessly, as compound_head).
    compound_order: E::Atomic,
    /// What most frames never need, made with the first of its parts that
    /// is needed ([`PageExtra`]).
    extra: OnceLock<Box<PageExtra<E>>>,
    /// `page_deferred_list(page)` is not empty (guarded by split_queue_lock).
    pub on_deferred_list: AtomicBool,
    /// The data epoch (see `Kernel::data_epoch`) of the last change to the
    /// frame's bytes, so checkers can skip frames unchanged since their last
    /// look.
    pub data_touched: AtomicU64,
    /// The frame is on a free list (kept by the allocator; not a scheduling
    /// point: only checkers read it).
    pub free: AtomicBool,
    /// `page_private()`: the swap entry of a page in the swap cache (every
    /// subpage of a THP holds its own, `entry + i`). Set and cleared under
    /// the page lock and the swap cache's `i_pages` lock, read under the
    /// page lock (do_swap_page(), reuse_swap_page()), so not a scheduling
    /// point.
    pub private: AtomicU64,
    /// NUMA node of the frame.
    pub node: u32,
    /// The frame's bytes (in the machine's [`crate::frames::FrameArena`])
    /// were handed out at least once (`Memory::words`): until then they are
    /// the host's zeros, which `clear_page()` need not write again and a copy
    /// of the machine need not copy.
    pub bytes_used: AtomicBool,
}

/// The size of a `struct page` under the std engine, checked at compile time:
/// at most 104 bytes (eight counter words, the pointer to [`PageExtra`], the
/// data epoch, `page_private()`, the node and four flags). The kernel's is 64
/// bytes (issue 13's goal, not reached): it keeps `compound_mapcount` and
/// `compound_order` in the first tail page, the node in `flags`, and has no
/// checker bookkeeping. It may shrink, never grow.
const _: () = assert!(std::mem::size_of::<Page<crate::engine::StdEngine>>() <= 104);

/// The parts of a frame's `struct page` that most frames never need, each
/// made on first use, kept apart so that a frame that needs none of them
/// costs a pointer for all of them (a page table, a locked or pinned page
/// pays for the box).
struct PageExtra<E: Engine> {
    /// `hpage_pinned_refcount` (head pages of order > 1 only; in Linux it
    /// lives in the third page of the compound page): FOLL_PIN pins of the
    /// THP, counted exactly (gup.rs); absent reads as 0.
    compound_pincount: OnceLock<E::Atomic>,
    /// PG_locked and its wait queue (under exploration each monitor costs).
    lock: OnceLock<E::Monitor<PageLockState>>,
    /// PG_compound_lock of a THP head (v3.16's compound_lock(); 5.8 has
    /// none).
    compound_lock: OnceLock<crate::sync::SpinLock<E>>,
    /// The entries of a frame used as a page table.
    table: OnceLock<TableBody<E>>,
}

impl<E: Engine> Default for PageExtra<E> {
    fn default() -> Self {
        PageExtra {
            compound_pincount: OnceLock::new(),
            lock: OnceLock::new(),
            compound_lock: OnceLock::new(),
            table: OnceLock::new(),
        }
    }
}

impl<E: Engine> Page<E> {
    /// The frame's [`PageExtra`], made now if it is not yet.
    #[inline]
    fn extra(&self) -> &PageExtra<E> {
        self.extra.get_or_init(Box::default)
    }

    /// The frame's [`PageExtra`], if made.
    #[inline]
    fn extra_peek(&self) -> Option<&PageExtra<E>> {
        self.extra.get().map(|b| &**b)
    }

    pub fn new(node: u32) -> Self {
        Page {
            flags: E::Atomic::new(0),
            refcount: E::Atomic::new(0),
            mapcount: E::Atomic::new(u64::MAX),
            compound_mapcount: E::Atomic::new(u64::MAX),
            mapping: E::Atomic::new(0),
            index: E::Atomic::new(0),
            compound_head: E::Atomic::new(0),
            compound_order: E::Atomic::new(0),
            extra: OnceLock::new(),
            on_deferred_list: AtomicBool::new(false),
            free: AtomicBool::new(true),
            data_touched: AtomicU64::new(0),
            private: AtomicU64::new(0),
            node,
            bytes_used: AtomicBool::new(false),
        }
    }

    /// A copy of this `struct page` and its frame for a copy of the machine
    /// (`Kernel::snapshot`), read without scheduling points: every flag and
    /// counter (`flags`, `_refcount`, `_mapcount`, the compound mapcount,
    /// `mapping`, `index`, `compound_head`, `compound_order`), the deferred
    /// list, free and data-epoch marks, the node, and what was made on first
    /// use: PG_locked (which must be unlocked at a quiescent point), the
    /// frame's bytes and the page-table body ([`TableBody::snapshot`]).
    /// What was never made is not made in the copy either. The copy's engine
    /// objects are made in this order, so copies made in the same order
    /// number them the same.
    pub fn snapshot(&self) -> Self {
        let flags = E::Atomic::new(self.flags.peek());
        let refcount = E::Atomic::new(self.refcount.peek());
        let mapcount = E::Atomic::new(self.mapcount.peek());
        let compound_mapcount = E::Atomic::new(self.compound_mapcount.peek());
        let mapping = E::Atomic::new(self.mapping.peek());
        let index = E::Atomic::new(self.index.peek());
        let compound_head = E::Atomic::new(self.compound_head.peek());
        let compound_order = E::Atomic::new(self.compound_order.peek());
        // What was made is copied, in this order (the engine objects of a
        // copy are made in the same order every time).
        let extra = OnceLock::new();
        if let Some(x) = self.extra_peek() {
            let copy = PageExtra::default();
            if let Some(m) = x.lock.get() {
                let _ = copy.lock.set(page_lock_snapshot::<E>(m));
            }
            if let Some(t) = x.table.get() {
                let _ = copy.table.set(t.snapshot());
            }
            if let Some(c) = x.compound_pincount.get() {
                let _ = copy.compound_pincount.set(E::Atomic::new(c.peek()));
            }
            if let Some(l) = x.compound_lock.get() {
                let _ = copy.compound_lock.set(l.snapshot());
            }
            let _ = extra.set(Box::new(copy));
        }
        Page {
            extra,
            flags,
            refcount,
            mapcount,
            compound_mapcount,
            mapping,
            index,
            compound_head,
            compound_order,
            on_deferred_list: AtomicBool::new(self.on_deferred_list.load(Ordering::SeqCst)),
            data_touched: AtomicU64::new(self.data_touched.load(Ordering::Relaxed)),
            free: AtomicBool::new(self.free.load(Ordering::SeqCst)),
            private: AtomicU64::new(self.private.load(Ordering::SeqCst)),
            node: self.node,
            bytes_used: AtomicBool::new(self.bytes_used.load(Ordering::Relaxed)),
        }
    }

    /// Whether the frame is as [`Page::new`] made it: every counter at its
    /// initial value, free, on no list, its bytes never touched, and nothing
    /// made on first use. Its copy is then `Page::new(node)`, which makes
    /// the same engine objects in the same order as [`Page::snapshot`]
    /// (a copy plan of `Memory` relies on it).
    pub fn in_boot_state(&self) -> bool {
        self.flags.peek() == 0
            && self.refcount.peek() == 0
            && self.mapcount.peek() == u64::MAX
            && self.compound_mapcount.peek() == u64::MAX
            && self.mapping.peek() == 0
            && self.index.peek() == 0
            && self.compound_head.peek() == 0
            && self.compound_order.peek() == 0
            && self
                .extra_peek()
                .is_none_or(|x| x.lock.get().is_none() && x.table.get().is_none())
            && !self.on_deferred_list.load(Ordering::SeqCst)
            && self.data_touched.load(Ordering::Relaxed) == 0
            && self.free.load(Ordering::SeqCst)
            && self.private.load(Ordering::SeqCst) == 0
            && !self.bytes_used.load(Ordering::Relaxed)
            && self
                .extra_peek()
                .is_none_or(|x| x.compound_pincount.get().is_none())
    }

    /// PG_locked's monitor.
    pub fn lock_state(&self) -> &E::Monitor<PageLockState> {
        self.extra()
            .lock
            .get_or_init(|| E::Monitor::new(PageLockState::default()))
    }

    /// PageLocked() for checkers: false if the page was never locked.
    pub fn is_locked(&self) -> bool {
        self.extra_peek()
            .and_then(|x| x.lock.get())
            .is_some_and(|m| m.inspect(|s| s.locked))
    }

    pub fn test_flag(&self, f: u64) -> bool {
        self.flags.load() & f != 0
    }
    /// [`Page::test_flag`] for checkers (no scheduling point).
    pub fn test_flag_peek(&self, f: u64) -> bool {
        self.flags.peek() & f != 0
    }
    pub fn set_flag(&self, f: u64) {
        self.flags.fetch_or(f);
    }
    pub fn clear_flag(&self, f: u64) {
        self.flags.fetch_and(!f);
    }
    /// Models the non-atomic `__SetPage*()`, include/linux/page-flags.h, v5.8:
    /// for a page no other CPU can reach (a new page before it is mapped), so
    /// no scheduling point.
    pub fn __set_flag(&self, f: u64) {
        self.flags.init(self.flags.peek() | f);
    }
    /// TestSetPage*(): returns the old value.
    pub fn test_set_flag(&self, f: u64) -> bool {
        self.flags.fetch_or(f) & f != 0
    }
    /// TestClearPage*(): returns the old value.
    pub fn test_clear_flag(&self, f: u64) -> bool {
        self.flags.fetch_and(!f) & f != 0
    }

    /// The tail page's head, if it is a tail (PageTail()).
    pub fn tail_head(&self) -> Option<Pfn> {
        match self.compound_head.load() {
            0 => None,
            h => Some(Pfn(h - 1)),
        }
    }
    /// [`Page::tail_head`] for checkers (no scheduling point).
    pub fn tail_head_peek(&self) -> Option<Pfn> {
        match self.compound_head.peek() {
            0 => None,
            h => Some(Pfn(h - 1)),
        }
    }
    /// PG_compound_lock (v3.16), made on first use.
    pub(crate) fn compound_lock(&self) -> &crate::sync::SpinLock<E> {
        self.extra()
            .compound_lock
            .get_or_init(|| crate::sync::SpinLock::new(crate::sync::LockClass::CompoundLock))
    }

    pub(crate) fn set_compound_head(&self, head: Option<Pfn>) {
        self.compound_head.store(head.map_or(0, |h| h.0 + 1));
    }
    /// [`Page::set_compound_head`] of a frame no other CPU can reach (no
    /// scheduling point, [`Atomic::init`]).
    pub(crate) fn init_compound_head(&self, head: Option<Pfn>) {
        self.compound_head.init(head.map_or(0, |h| h.0 + 1));
    }
    /// `set_compound_order()` of a frame no other CPU can reach.
    pub(crate) fn init_compound_order(&self, order: u32) {
        self.compound_order.init(order as u64);
    }
    pub fn compound_order(&self) -> u32 {
        self.compound_order.load() as u32
    }
    /// [`Page::compound_order`] for checkers (no scheduling point).
    pub fn compound_order_peek(&self) -> u32 {
        self.compound_order.peek() as u32
    }
    pub(crate) fn set_compound_order(&self, order: u32) {
        self.compound_order.store(order as u64);
    }

    /// `compound_pincount_ptr(page)`: the head's exact pin count.
    pub fn compound_pincount(&self) -> &E::Atomic {
        self.extra()
            .compound_pincount
            .get_or_init(|| E::Atomic::new(0))
    }
    /// The pin count for checkers: no scheduling point, nothing made.
    pub fn compound_pincount_peek(&self) -> i64 {
        self.extra_peek()
            .and_then(|x| x.compound_pincount.get())
            .map_or(0, |a| a.peek_i64())
    }
    /// `atomic_set(compound_pincount_ptr(page), 0)` (prep_compound_page(),
    /// page_add_new_anon_rmap()): a count never made is 0 already.
    /// `atomic_set(compound_pincount_ptr(page), 0)` of a new compound page
    /// (no other CPU can reach it: no scheduling point).
    pub(crate) fn reset_compound_pincount(&self) {
        if let Some(a) = self.extra_peek().and_then(|x| x.compound_pincount.get()) {
            a.init(0);
        }
    }

    /// The page-table body of a frame used as a page table.
    pub fn table_body(&self, entries: usize) -> &TableBody<E> {
        self.extra().table.get_or_init(|| TableBody::new(entries))
    }

    /// The anon_vma this page's mapping points at (PageAnon() pages only).
    pub fn anon_vma(&self) -> Option<AnonVmaId> {
        Self::decode_anon_vma(self.mapping.load())
    }
    /// [`Page::anon_vma`] for checkers (no scheduling point).
    pub fn anon_vma_peek(&self) -> Option<AnonVmaId> {
        Self::decode_anon_vma(self.mapping.peek())
    }
    fn decode_anon_vma(m: u64) -> Option<AnonVmaId> {
        if m & PAGE_MAPPING_ANON != 0 {
            Some(AnonVmaId((m >> 1) as usize))
        } else {
            None
        }
    }
}

/// Encodes an anon_vma as a `page->mapping` value.
pub fn anon_mapping(av: AnonVmaId) -> u64 {
    ((av.0 as u64) << 1) | PAGE_MAPPING_ANON
}

/// Reads one byte of a frame. Frame bytes are plain memory, not scheduling
/// points: relaxed atomics (threads synchronise through the counters and
/// entries, as the CPUs do).
pub fn read_byte(words: &[AtomicU64], off: u64) -> u8 {
    (words[(off / 8) as usize].load(Ordering::Relaxed) >> ((off % 8) * 8)) as u8
}

/// Writes `v` into bytes `[from, to)` of a frame: whole words where it can.
pub fn fill_bytes(words: &[AtomicU64], from: u64, to: u64, v: u8) {
    let word = u64::from_le_bytes([v; 8]);
    let mut o = from;
    while o < to {
        if o.is_multiple_of(8) && o + 8 <= to {
            words[(o / 8) as usize].store(word, Ordering::Relaxed);
            o += 8;
        } else {
            write_byte(words, o, v);
            o += 1;
        }
    }
}

/// Reads a whole frame.
pub fn read_page(words: &[AtomicU64]) -> Vec<u8> {
    // A word at a time into room made once (collecting the bytes of a
    // flat_map went byte by byte, a tenth of a big `thpsim run`).
    let mut out = vec![0u8; words.len() * 8];
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
    }
    out
}

/// Writes one byte of a frame.
pub fn write_byte(words: &[AtomicU64], off: u64, v: u8) {
    let shift = (off % 8) * 8;
    let w = &words[(off / 8) as usize];
    let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some((old & !(0xff << shift)) | ((v as u64) << shift))
    });
}

impl<E: Engine> Cpu<E> {
    /// The `struct page` of a frame (`pfn_to_page`).
    pub fn page(&self, pfn: Pfn) -> &Page<E> {
        self.k.mem.page(pfn)
    }

    /// Notes that the frame's bytes change now (for incremental checkers):
    /// its `data_touched` epoch, and the kernel's list of the frames written
    /// since the last check (`Kernel::take_touched`) the first time in an
    /// epoch.
    pub fn touch_data(&self, pfn: Pfn) {
        let epoch = self.k.data_epoch();
        let before = self.page(pfn).data_touched.swap(epoch, Ordering::Relaxed);
        if before != epoch {
            self.k.note_touched(pfn);
        }
    }

    /// Models compound_head(), include/linux/page-flags.h, v5.8.
    pub fn compound_head(&self, pfn: Pfn) -> Pfn {
        self.page(pfn).tail_head().unwrap_or(pfn)
    }

    /// Models PageHead().
    pub fn page_head(&self, pfn: Pfn) -> bool {
        self.page(pfn).test_flag(pg::HEAD)
    }

    /// Models PageTail().
    pub fn page_tail(&self, pfn: Pfn) -> bool {
        self.page(pfn).tail_head().is_some()
    }

    /// Models PageCompound().
    pub fn page_compound(&self, pfn: Pfn) -> bool {
        self.page_head(pfn) || self.page_tail(pfn)
    }

    /// Models PageTransHuge(): a THP head page.
    pub fn page_trans_huge(&self, pfn: Pfn) -> bool {
        self.page_head(pfn)
    }

    /// Models PageTransCompound().
    pub fn page_trans_compound(&self, pfn: Pfn) -> bool {
        self.page_compound(pfn)
    }

    /// Models PageAnon(): `page->mapping & PAGE_MAPPING_ANON` of the head.
    pub fn page_anon(&self, pfn: Pfn) -> bool {
        self.page(self.compound_head(pfn)).mapping.load() & PAGE_MAPPING_ANON != 0
    }

    /// Models PageHuge(), mm/hugetlb.c, v5.8: the page belongs to a hugetlb
    /// page (its head's compound destructor is HUGETLB_PAGE_DTOR). The
    /// destructor is set when the pool is made and never changes while the
    /// model runs, so it is read without a scheduling point.
    pub fn page_huge(&self, pfn: Pfn) -> bool {
        let head = self.page(pfn).tail_head_peek().unwrap_or(pfn);
        self.page(head).test_flag_peek(pg::HUGETLB)
    }

    /// Models page_mapping() of a file page: the file whose page cache holds
    /// it (`page->mapping` without PAGE_MAPPING_ANON).
    pub fn page_file(&self, pfn: Pfn) -> Option<FileId> {
        mapping_file(self.page(self.compound_head(pfn)).mapping.load())
    }

    /// Models PageDoubleMap() (the flag is on the head here).
    pub fn page_double_map(&self, head: Pfn) -> bool {
        self.page(head).test_flag(pg::DOUBLE_MAP)
    }

    /// Models is_huge_zero_page().
    pub fn is_huge_zero_page(&self, pfn: Pfn) -> bool {
        self.k.huge_zero_pfn() == Some(pfn)
    }

    /// Models is_zero_pfn(): the 4 KiB zero page.
    pub fn is_zero_pfn(&self, pfn: Pfn) -> bool {
        pfn == self.k.zero_pfn
    }

    /// Models page_count(): the head's `_refcount`.
    pub fn page_count(&self, pfn: Pfn) -> i64 {
        self.page(self.compound_head(pfn)).refcount.load_i64()
    }

    /// Models get_page(), include/linux/mm.h, v5.8.
    pub fn get_page(&self, pfn: Pfn) {
        let head = self.compound_head(pfn);
        let old = self.page(head).refcount.fetch_add(1) as i64;
        crate::vm_bug_on_page!(
            self,
            old <= 0,
            head,
            "VM_BUG_ON_PAGE(page_ref_zero_or_close_to_overflow(page))"
        );
    }

    /// Models page_ref_add().
    pub fn page_ref_add(&self, pfn: Pfn, n: i64) {
        self.page(pfn).refcount.fetch_add(n as u64);
    }

    /// Models get_page_unless_zero().
    pub fn get_page_unless_zero(&self, pfn: Pfn) -> bool {
        let p = &self.page(pfn).refcount;
        let mut cur = p.load();
        loop {
            if cur == 0 {
                return false;
            }
            match p.compare_exchange(cur, cur + 1) {
                Ok(_) => return true,
                Err(v) => cur = v,
            }
        }
    }

    /// Models page_ref_freeze(): `_refcount` from `count` to 0, or nothing.
    pub fn page_ref_freeze(&self, pfn: Pfn, count: i64) -> bool {
        self.page(pfn)
            .refcount
            .compare_exchange(count as u64, 0)
            .is_ok()
    }

    /// Models page_ref_unfreeze().
    pub fn page_ref_unfreeze(&self, pfn: Pfn, count: i64) {
        crate::vm_bug_on_page!(
            self,
            self.page(pfn).refcount.load() != 0,
            pfn,
            "VM_BUG_ON_PAGE(page_count(page) != 0, page)"
        );
        self.page(pfn).refcount.store_i64(count);
    }

    /// Models put_page() and __put_page(), include/linux/mm.h and mm/swap.c,
    /// v5.8: the last reference frees the page (a compound page through its
    /// destructor, free_transhuge_page()).
    pub fn put_page(&self, pfn: Pfn) {
        let head = self.compound_head(pfn);
        if self.is_huge_zero_page(head) || self.is_zero_pfn(head) {
            // DIVERGENCE: the zero pages are never freed (no huge zero page shrinker).
            self.page(head).refcount.fetch_sub(1);
            return;
        }
        let new = self.page(head).refcount.add_return(-1);
        crate::vm_bug_on_page!(
            self,
            new < 0,
            head,
            "VM_BUG_ON_PAGE(page_ref_count(page) == 0, page)"
        );
        if new == 0 {
            self.__put_page(head);
        }
    }

    /// Models __put_page(), mm/swap.c, v5.8: frees a page whose last
    /// reference is gone (a compound page through its destructor,
    /// free_transhuge_page()).
    pub fn __put_page(&self, head: Pfn) {
        if self.page_huge(head) {
            // The compound destructor HUGETLB_PAGE_DTOR.
            self.free_huge_page(head);
        } else if self.page_head(head) {
            self.free_transhuge_page(head);
        } else {
            self.free_unref_page(head, 0);
        }
    }

    /// Models page_mapcount() and __page_mapcount(), include/linux/mm.h and
    /// mm/util.c, v5.8: what /proc/kpagecount reports.
    pub fn page_mapcount(&self, pfn: Pfn) -> i64 {
        let mut ret = self.page(pfn).mapcount.load_i64() + 1;
        if !self.page_compound(pfn) {
            return ret;
        }
        let head = self.compound_head(pfn);
        if !self.page_anon(pfn) && !self.page_huge(head) {
            return ret;
        }
        ret += self.page(head).compound_mapcount.load_i64() + 1;
        if self.page_double_map(head) {
            ret -= 1;
        }
        ret
    }

    /// Models compound_mapcount(), include/linux/mm.h, v5.8.
    pub fn compound_mapcount(&self, pfn: Pfn) -> i64 {
        crate::vm_bug_on_page!(
            self,
            !self.page_compound(pfn),
            pfn,
            "VM_BUG_ON_PAGE(!PageCompound(page), page)"
        );
        let head = self.compound_head(pfn);
        self.page(head).compound_mapcount.load_i64() + 1
    }

    /// Models page_mapped(), mm/util.c, v5.8.
    pub fn page_mapped(&self, pfn: Pfn) -> bool {
        if !self.page_compound(pfn) {
            return self.page(pfn).mapcount.load_i64() >= 0;
        }
        let head = self.compound_head(pfn);
        if self.page(head).compound_mapcount.load_i64() >= 0 {
            return true;
        }
        (0..self.k.geo.hpage_pmd_nr()).any(|i| self.page(head.add(i)).mapcount.load_i64() >= 0)
    }

    /// Models lock_page(), include/linux/pagemap.h, v5.8.
    ///
    /// # Locking
    /// Takes PG_locked of the head page; see `sync::lock_order`.
    pub fn lock_page(&self, pfn: Pfn) {
        let head = self.compound_head(pfn);
        page_lock::<E>(
            self.page(head).lock_state(),
            self,
            Acquire::Normal,
            self.page_lock_class(head),
        );
    }

    /// The lock class of a page's PG_locked: a hugetlb page's nests inside
    /// the hugetlb fault mutex (mm/rmap.c's second list). PageHuge() is
    /// stable while the caller holds a reference, so it is read without a
    /// scheduling point.
    fn page_lock_class(&self, head: Pfn) -> crate::sync::LockClass {
        if self.page(head).test_flag_peek(pg::HUGETLB) {
            crate::sync::LockClass::HugetlbPageLock
        } else {
            crate::sync::LockClass::PageLock
        }
    }

    /// Models trylock_page().
    ///
    /// # Locking
    /// Tries PG_locked of the head page (no ordering constraint).
    pub fn trylock_page(&self, pfn: Pfn) -> bool {
        let head = self.compound_head(pfn);
        page_trylock::<E>(
            self.page(head).lock_state(),
            self,
            self.page_lock_class(head),
        )
    }

    /// Models unlock_page().
    pub fn unlock_page(&self, pfn: Pfn) {
        let head = self.compound_head(pfn);
        page_unlock::<E>(self.page(head).lock_state(), self);
    }

    /// Models PageLocked().
    pub fn page_locked(&self, pfn: Pfn) -> bool {
        let head = self.compound_head(pfn);
        self.page(head).is_locked()
    }

    /// Sets PG_locked on a tail page as __split_huge_page_tail() does by copying
    /// the head's flags.
    pub(crate) fn inherit_page_lock(&self, pfn: Pfn) {
        page_lock_inherit::<E>(self.page(pfn).lock_state());
    }
}

impl<E: Engine> Cpu<E> {
    /// Models put_and_wait_on_page_locked()/wait_on_page_locked(),
    /// mm/filemap.c, v5.8: sleep until the page is unlocked, without taking the
    /// lock (a migration-entry wait).
    pub fn wait_on_page_locked(&self, pfn: Pfn) {
        let head = self.compound_head(pfn);
        self.page(head)
            .lock_state()
            .wait_until(|s| if s.locked { None } else { Some(()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::footprint;
    use crate::{ShuttleEngine, StdEngine};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Every field of a `struct page` is copied; what was made on first use
    /// (the page lock, the bytes, the table) is copied, what was not stays
    /// unmade; the copy is independent of the original.
    #[test]
    fn a_page_copies_every_field_and_only_what_was_made() {
        let p = Page::<StdEngine>::new(1);
        Atomic::store(&p.flags, pg::HEAD | pg::DIRTY);
        Atomic::store(&p.refcount, 3);
        Atomic::store(&p.mapcount, 0);
        Atomic::store(&p.compound_mapcount, 2);
        Atomic::store(&p.mapping, anon_mapping(AnonVmaId(5)));
        Atomic::store(&p.index, 9);
        p.set_compound_head(Some(Pfn(4)));
        p.set_compound_order(2);
        p.on_deferred_list.store(true, Ordering::SeqCst);
        p.data_touched.store(6, Ordering::Relaxed);
        p.free.store(false, Ordering::SeqCst);
        p.private.store(9, Ordering::SeqCst);
        p.bytes_used.store(true, Ordering::Relaxed);
        Atomic::store(p.table_body(4).raw(1), 77);
        p.table_body(4).deposited.lock().unwrap().push(Pfn(8));
        p.lock_state();

        let c = p.snapshot();
        assert_eq!(c.flags.peek(), pg::HEAD | pg::DIRTY);
        assert_eq!(c.refcount.peek(), 3);
        assert_eq!(c.mapcount.peek(), 0);
        assert_eq!(c.compound_mapcount.peek(), 2);
        assert_eq!(c.anon_vma_peek(), Some(AnonVmaId(5)));
        assert_eq!(c.index.peek(), 9);
        assert_eq!(c.tail_head_peek(), Some(Pfn(4)));
        assert_eq!(c.compound_order_peek(), 2);
        assert!(c.on_deferred_list.load(Ordering::SeqCst));
        assert_eq!(c.data_touched.load(Ordering::Relaxed), 6);
        assert!(!c.free.load(Ordering::SeqCst));
        assert_eq!(c.private.load(Ordering::SeqCst), 9);
        assert_eq!(c.node, 1);
        assert!(c.bytes_used.load(Ordering::Relaxed));
        let t = c.extra_peek().and_then(|x| x.table.get()).expect("table");
        assert_eq!((t.peek(0), t.peek(1)), (0, 77));
        assert_eq!(*t.deposited.lock().unwrap(), vec![Pfn(8)]);
        assert!(c.extra_peek().is_some_and(|x| x.lock.get().is_some()) && !c.is_locked());

        // Independent: changing the copy leaves the original.
        Atomic::store(&c.refcount, 1);
        Atomic::store(c.table_body(4).raw(1), 0);
        assert_eq!(p.refcount.peek(), 3);
        assert_eq!(p.table_body(4).peek(1), 77);

        let fresh = Page::<StdEngine>::new(0).snapshot();
        assert!(fresh.extra_peek().is_none() && !fresh.bytes_used.load(Ordering::Relaxed));
        assert_eq!(fresh.mapcount.peek(), u64::MAX);
        assert!(fresh.free.load(Ordering::SeqCst));
    }

    /// A fresh frame is in its boot state, and its copy is one too; a change
    /// to any field, or anything made on first use, takes it out.
    #[test]
    fn the_boot_state_is_what_page_new_makes() {
        assert!(Page::<StdEngine>::new(2).in_boot_state());
        assert!(Page::<StdEngine>::new(2).snapshot().in_boot_state());
        let changes: [fn(&Page<StdEngine>); 15] = [
            |p| Atomic::store(&p.flags, pg::LRU),
            |p| Atomic::store(&p.refcount, 1),
            |p| Atomic::store(&p.mapcount, 0),
            |p| Atomic::store(&p.compound_mapcount, 0),
            |p| Atomic::store(&p.mapping, 3),
            |p| Atomic::store(&p.index, 1),
            |p| p.set_compound_head(Some(Pfn(0))),
            |p| p.set_compound_order(9),
            |p| {
                p.lock_state();
            },
            |p| p.on_deferred_list.store(true, Ordering::SeqCst),
            |p| p.data_touched.store(1, Ordering::Relaxed),
            |p| p.free.store(false, Ordering::SeqCst),
            |p| p.bytes_used.store(true, Ordering::Relaxed),
            |p| {
                p.table_body(4);
            },
            |p| {
                p.compound_pincount();
            },
        ];
        for (i, change) in changes.iter().enumerate() {
            let p = Page::<StdEngine>::new(0);
            change(&p);
            assert!(!p.in_boot_state(), "change {i}");
        }
    }

    /// A locked page cannot be copied (a copy is made at a quiescent point).
    #[test]
    fn a_locked_page_is_not_copied() {
        let p = Page::<StdEngine>::new(0);
        page_lock_inherit::<StdEngine>(p.lock_state());
        assert!(catch_unwind(AssertUnwindSafe(|| p.snapshot())).is_err());
    }

    /// On the exploration engine the copy reads through no scheduling point
    /// and makes its objects in a fixed order: two copies number theirs the
    /// same (the 8 counters, the page lock, the table's made entry and its
    /// lock).
    #[test]
    fn a_page_copy_makes_no_scheduling_point_and_numbers_alike() {
        ShuttleEngine::count_runnable();
        footprint::reset();
        let p = Page::<ShuttleEngine>::new(0);
        Atomic::store(&p.refcount, 1);
        p.lock_state();
        Atomic::store(p.table_body(4).raw(2), 5);
        let mut made = Vec::new();
        for _ in 0..2 {
            footprint::reset();
            let c = p.snapshot();
            assert!(footprint::take_hidden().is_empty());
            made.push(footprint::next_id());
            assert_eq!((c.refcount.peek(), c.table_body(4).peek(2)), (1, 5));
        }
        ShuttleEngine::stop_counting();
        footprint::stop();
        assert_eq!(made, vec![11, 11]);
    }
}
