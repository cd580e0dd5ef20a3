//! Physical memory: the frames, their `struct page`s and a free-page allocator
//! per node.
//!
//! Models: mm/page_alloc.c (v5.8) as far as anonymous memory and THP need it:
//! `__alloc_pages_nodemask` for order 0 and HPAGE_PMD_ORDER, `prep_new_page`,
//! `prep_compound_page`, `__free_pages`/`free_unref_page`, the "Bad page state"
//! checks on free, per-node zones and a fixed amount of memory, so allocation can
//! fail and the callers' fallbacks (THP → 4 KiB → OOM) run.
//!
//! Leaves out: watermarks, reclaim and compaction on the allocation path
//! (DIVERGENCE: an order-9 allocation fails as soon as no whole free PMD block is
//! left; Linux would first try to compact), per-cpu lists, migrate types, GFP
//! flags beyond "zeroed".

use crate::cpu::Cpu;
use crate::engine::footprint::Obj;
use crate::engine::{Atomic, Engine, Monitor};
use crate::frames::FrameArena;
use crate::page::{pg, Page};
use crate::types::{Geometry, Pfn};
use std::collections::BTreeSet;

/// The free lists of one node. Whole free PMD-size blocks are kept apart from
/// single free pages so a THP allocation is O(log n); a block whose pages all
/// come back is merged again (the buddy allocator's coalescing).
#[derive(Clone)]
struct FreeArea {
    base: BTreeSet<u64>,
    blocks: BTreeSet<u64>,
    free_in_block: Vec<u32>,
    first_block: u64,
    nr_free: u64,
}

/// A node's memory (`pg_data_t` with one zone).
pub struct Zone<E: Engine> {
    pub node: u32,
    pub start: Pfn,
    pub end: Pfn,
    free: E::Monitor<FreeArea>,
}

impl<E: Engine> Zone<E> {
    /// A copy of the zone for a copy of the machine (`Memory::snapshot`):
    /// its node and range and its free lists, read without a scheduling
    /// point.
    pub fn snapshot(&self) -> Self {
        Zone {
            node: self.node,
            start: self.start,
            end: self.end,
            free: E::Monitor::new(self.free.peek(FreeArea::clone)),
        }
    }
}

/// What a copy of one unchanging memory may skip reading
/// ([`Memory::snapshot_planned`]): the frames found in their boot state.
/// The default plan skips nothing.
#[derive(Clone, Debug, Default)]
pub struct CopyPlan {
    boot: Vec<bool>,
}

impl CopyPlan {
    /// How many frames the plan makes afresh.
    pub fn boot_frames(&self) -> usize {
        self.boot.iter().filter(|&&b| b).count()
    }
}

/// All physical memory.
pub struct Memory<E: Engine> {
    pages: Box<[Page<E>]>,
    /// Every frame's bytes.
    arena: FrameArena,
    /// Frames not on a free list (the zero page included).
    allocated: std::sync::Mutex<BTreeSet<u64>>,
    pub zones: Vec<Zone<E>>,
    block_pages: u64,
}

impl<E: Engine> Memory<E> {
    /// Memory of `bytes` (rounded up to whole PMD blocks per node) spread over
    /// `nodes` nodes. Pfn 0 is reserved for the zero page.
    pub fn new(geo: &Geometry, bytes: u64, nodes: u32) -> Self {
        let block_pages = geo.hpage_pmd_nr();
        let total_pages = bytes.div_ceil(geo.page_size()).max(block_pages);
        let blocks_per_node = total_pages
            .div_ceil(block_pages)
            .div_ceil(nodes as u64)
            .max(1);
        let node_pages = blocks_per_node * block_pages;
        let pages: Box<[Page<E>]> = (0..node_pages * nodes as u64)
            .map(|pfn| Page::new((pfn / node_pages) as u32))
            .collect();
        let zones = (0..nodes)
            .map(|n| {
                let start = n as u64 * node_pages;
                let end = start + node_pages;
                let mut fa = FreeArea {
                    base: BTreeSet::new(),
                    blocks: BTreeSet::new(),
                    free_in_block: vec![0; blocks_per_node as usize],
                    first_block: start / block_pages,
                    nr_free: 0,
                };
                for b in 0..blocks_per_node {
                    let bstart = start + b * block_pages;
                    if bstart == 0 {
                        // The first block of node 0 holds the zero page: its
                        // other pages are single free pages.
                        for p in 1..block_pages {
                            fa.base.insert(p);
                        }
                        fa.free_in_block[0] = (block_pages - 1) as u32;
                        fa.nr_free += block_pages - 1;
                    } else {
                        fa.blocks.insert(bstart);
                        fa.free_in_block[b as usize] = block_pages as u32;
                        fa.nr_free += block_pages;
                    }
                }
                Zone {
                    node: n,
                    start: Pfn(start),
                    end: Pfn(end),
                    free: E::Monitor::new(fa),
                }
            })
            .collect();
        let arena = FrameArena::new(pages.len(), geo.page_size());
        Memory {
            pages,
            arena,
            zones,
            block_pages,
            allocated: std::sync::Mutex::new(BTreeSet::from([0])),
        }
    }

    /// A copy of physical memory for a copy of the machine
    /// (`Kernel::snapshot`): every frame's `struct page`, bytes and page
    /// table ([`Page::snapshot`], in pfn order), the set of allocated frames,
    /// and each zone with its free lists ([`Zone::snapshot`], in node order).
    pub fn snapshot(&self) -> Self {
        self.snapshot_planned(&CopyPlan::default())
    }

    /// The frames of this memory in their boot state ([`Page::in_boot_state`]),
    /// for copies made later of this memory unchanged.
    pub fn copy_plan(&self) -> CopyPlan {
        CopyPlan {
            boot: self.pages.iter().map(Page::in_boot_state).collect(),
        }
    }

    /// [`Memory::snapshot`] that makes the frames `plan` found in their boot
    /// state afresh (`Page::new`, the same objects in the same order)
    /// instead of reading them: most of a big machine's memory was never
    /// used. `plan` must come from [`Memory::copy_plan`] of this memory, and
    /// the memory must not have changed since (the explorer copies the
    /// prefix's machine, which never changes, once per execution).
    pub fn snapshot_planned(&self, plan: &CopyPlan) -> Self {
        assert!(
            plan.boot.is_empty() || plan.boot.len() == self.pages.len(),
            "a copy plan of another memory"
        );
        // Each node has the same number of frames (`Memory::new`): a frame
        // made afresh gets its node from its pfn, without a read of the
        // original (a big machine's memory is mostly such frames).
        let n = self.pages.len();
        let node_pages = n / self.zones.len();
        let boot = |i: usize| plan.boot.get(i) == Some(&true);
        let mut pages = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            if boot(i) {
                // A run of fresh frames, made as `Memory::new` makes them.
                let end = (i..n).find(|&j| !boot(j)).unwrap_or(n);
                pages.extend((i..end).map(|j| Page::new((j / node_pages) as u32)));
                i = end;
            } else {
                pages.push(self.pages[i].snapshot());
                i += 1;
            }
        }
        let pages = pages.into_boxed_slice();
        let arena = FrameArena::new(n, self.arena.page_size());
        for (i, p) in pages.iter().enumerate() {
            if p.bytes_used.load(std::sync::atomic::Ordering::Relaxed) {
                arena.copy_frame_from(&self.arena, i);
            }
        }
        let zones = self.zones.iter().map(Zone::snapshot).collect();
        Memory {
            pages,
            arena,
            allocated: std::sync::Mutex::new(
                self.allocated
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
            zones,
            block_pages: self.block_pages,
        }
    }

    pub fn page(&self, pfn: Pfn) -> &Page<E> {
        &self.pages[pfn.idx()]
    }

    /// The frame's bytes as words (`page_address()`): from now on the frame
    /// counts as used ([`Page::bytes_used`]).
    #[inline]
    pub fn words(&self, pfn: Pfn) -> &[std::sync::atomic::AtomicU64] {
        let used = &self.pages[pfn.idx()].bytes_used;
        if !used.load(std::sync::atomic::Ordering::Relaxed) {
            used.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        self.arena.words(pfn.idx())
    }

    pub fn nr_pages(&self) -> u64 {
        self.pages.len() as u64
    }

    /// Free pages on all nodes.
    pub fn nr_free(&self) -> u64 {
        self.zones
            .iter()
            .map(|z| z.free.inspect(|f| f.nr_free))
            .sum()
    }

    /// Whether a frame is on a free list.
    pub fn is_free(&self, pfn: Pfn) -> bool {
        self.page(pfn)
            .free
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn mark(&self, pfn: Pfn, n: u64, free: bool) {
        let mut allocated = self.allocated.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..n {
            self.page(pfn.add(i))
                .free
                .store(free, std::sync::atomic::Ordering::SeqCst);
            if free {
                allocated.remove(&(pfn.0 + i));
            } else {
                allocated.insert(pfn.0 + i);
            }
        }
    }

    /// The frames in use, in order (for checkers: cheaper than scanning all
    /// of memory).
    pub fn allocated(&self) -> Vec<Pfn> {
        self.allocated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|&p| Pfn(p))
            .collect()
    }

    fn take(&self, node: usize, order: u32) -> Option<Pfn> {
        let bp = self.block_pages;
        let got = self.zones[node].free.update(|f| {
            if order == 0 {
                if f.base.is_empty() {
                    let b = f.blocks.pop_first()?;
                    f.base.extend(b..b + bp);
                }
                let p = f.base.pop_first()?;
                f.free_in_block[(p / bp - f.first_block) as usize] -= 1;
                f.nr_free -= 1;
                Some(Pfn(p))
            } else {
                let b = f.blocks.pop_first()?;
                f.free_in_block[(b / bp - f.first_block) as usize] = 0;
                f.nr_free -= bp;
                Some(Pfn(b))
            }
        });
        if let Some(p) = got {
            self.mark(p, 1 << order, false);
        }
        got
    }

    fn give(&self, pfn: Pfn, order: u32) {
        let bp = self.block_pages;
        self.mark(pfn, 1 << order, true);
        let node = self.page(pfn).node as usize;
        self.zones[node].free.update(|f| {
            let bi = (pfn.0 / bp - f.first_block) as usize;
            if order == 0 {
                f.base.insert(pfn.0);
                f.free_in_block[bi] += 1;
                f.nr_free += 1;
                let b = pfn.0 / bp * bp;
                if f.free_in_block[bi] as u64 == bp && b != 0 {
                    for p in b..b + bp {
                        f.base.remove(&p);
                    }
                    f.blocks.insert(b);
                }
            } else {
                f.free_in_block[bi] = bp as u32;
                f.nr_free += bp;
                f.blocks.insert(pfn.0);
            }
        });
    }
}

impl<E: Engine> Cpu<E> {
    /// Models __alloc_pages_nodemask() followed by prep_new_page() and, for a
    /// compound order, prep_compound_page(), mm/page_alloc.c, v5.8. `zeroed` is
    /// __GFP_ZERO. Orders 0 and HPAGE_PMD_ORDER exist. Tries `node` first, then
    /// the others.
    ///
    /// DIVERGENCE: no reclaim or compaction; failure is immediate.
    pub fn alloc_pages(&self, order: u32, node: u32, zeroed: bool) -> Option<Pfn> {
        let _f = self.func("__alloc_pages_nodemask");
        let mem = &self.k.mem;
        let n = mem.zones.len();
        let pfn = (0..n)
            .map(|i| (node as usize + i) % n)
            .find_map(|z| mem.take(z, order))?;
        Some(self.prep_new_page(pfn, order, zeroed))
    }

    /// [`Cpu::alloc_pages`] with __GFP_THISNODE: `node` or nothing
    /// (alloc_pages_node(), __alloc_pages_node() of a migration target).
    pub fn alloc_pages_thisnode(&self, order: u32, node: u32) -> Option<Pfn> {
        let _f = self.func("__alloc_pages_nodemask");
        let pfn = self.k.mem.take(node as usize, order)?;
        Some(self.prep_new_page(pfn, order, false))
    }

    /// Models prep_new_page() and prep_compound_page(), mm/page_alloc.c, v5.8,
    /// of a block just taken from the free lists.
    fn prep_new_page(&self, pfn: Pfn, order: u32, zeroed: bool) -> Pfn {
        let nr = 1u64 << order;
        // The frames are this CPU's alone until the head's reference count
        // is set: every field is written without a scheduling point.
        for i in 0..nr {
            let p = self.page(pfn.add(i));
            p.flags.init(0);
            p.refcount.init(0);
            p.mapcount.init(u64::MAX); // -1
            p.compound_mapcount.init(u64::MAX);
            p.mapping.init(0);
            p.index.init(0);
            p.init_compound_head(None);
            p.init_compound_order(0);
            if zeroed {
                self.clear_page(pfn.add(i));
            }
        }
        let head = self.page(pfn);
        if order > 0 {
            // prep_compound_page()
            head.__set_flag(pg::HEAD);
            head.init_compound_order(order);
            if order > 1 {
                // hpage_pincount_available()
                head.reset_compound_pincount();
            }
            for i in 1..nr {
                self.page(pfn.add(i)).init_compound_head(Some(pfn));
            }
        }
        // set_page_refcounted(): from here get_page_unless_zero() of the
        // frame can succeed. DIVERGENCE: 5.8 sets it before
        // prep_compound_page() (post_alloc_hook()); the model last, so that
        // no field is written once the frame can be reached.
        head.refcount.store(1);
        pfn
    }

    /// Models free_pages_check() and __free_pages_ok()/free_unref_page(),
    /// mm/page_alloc.c, v5.8: a page still mapped, locked or used as anything is
    /// a "Bad page state" (reported as a violation of BAD-PAGE).
    ///
    /// A page whose reference count has reached 0 is the freeing CPU's alone
    /// (get_page_unless_zero() and GUP-fast's speculative reference fail on
    /// it), so its fields are checked and reset without scheduling points.
    pub fn free_unref_page(&self, pfn: Pfn, order: u32) {
        let _f = self.func("free_unref_page");
        let nr = 1u64 << order;
        for i in 0..nr {
            let p = self.page(pfn.add(i));
            let mapcount = p.mapcount.peek_i64();
            if mapcount != -1 {
                self.bad_page(pfn.add(i), "nonzero mapcount");
            }
            if p.refcount.peek() != 0 && i == 0 {
                self.bad_page(pfn.add(i), "nonzero _refcount");
            }
            // PAGE_FLAGS_CHECK_AT_FREE: PG_locked and __PG_MLOCKED (the last
            // unmap cleared it, page_remove_rmap()). PG_lru and PG_active are
            // not checked: __page_cache_release(), which takes a page off the
            // LRU before it is freed, is not modelled.
            if p.is_locked() || p.test_flag_peek(pg::MLOCKED | pg::WRITEBACK) {
                self.bad_page(pfn.add(i), "PAGE_FLAGS_CHECK_AT_FREE flag(s) set");
            }
            // A page still in the swap cache is reachable from it: freeing
            // it is the use-after-free 5.8 would report later.
            if p.test_flag_peek(pg::SWAPCACHE) && i == 0 {
                self.bad_page(pfn.add(i), "PageSwapCache at free");
            }
            p.flags.init(0);
            p.private.store(0, std::sync::atomic::Ordering::SeqCst);
            p.mapping.init(0);
            p.init_compound_head(None);
            p.init_compound_order(0);
            p.compound_mapcount.init(u64::MAX); // -1
        }
        self.k.mem.give(pfn, order);
    }

    /// Models clear_huge_page(), mm/memory.c (v5.8 and v3.16): every base
    /// page of the PMD-size page at `head`.
    pub fn clear_huge_page(&self, head: Pfn) {
        for i in 0..self.k.geo.hpage_pmd_nr() {
            self.clear_page(head.add(i));
        }
    }

    /// Models copy_user_huge_page(), mm/memory.c (v5.8 and v3.16): every base
    /// page of the PMD-size page `src` into `dst`.
    pub fn copy_user_huge_page(&self, dst: Pfn, src: Pfn) {
        for i in 0..self.k.geo.hpage_pmd_nr() {
            self.copy_page(dst.add(i), src.add(i));
        }
    }

    /// Models clear_page()/clear_user_highpage().
    ///
    /// A frame whose bytes were never handed out still holds the host's
    /// zeros ([`Page::bytes_used`]): there is nothing to write.
    pub fn clear_page(&self, pfn: Pfn) {
        self.touch_data(pfn);
        E::touch(Obj::Frame(pfn.0), true);
        if !self
            .page(pfn)
            .bytes_used
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        for w in self.k.mem.words(pfn) {
            w.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Models copy_user_highpage(): copies the frame's bytes.
    pub fn copy_page(&self, dst: Pfn, src: Pfn) {
        self.touch_data(dst);
        E::touch(Obj::Frame(src.0), false);
        E::touch(Obj::Frame(dst.0), true);
        let (d, s) = (self.k.mem.words(dst), self.k.mem.words(src));
        for (dw, sw) in d.iter().zip(s) {
            dw.store(
                sw.load(std::sync::atomic::Ordering::Relaxed),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StdEngine;

    /// A copy of memory has the same frames in use and the same free lists
    /// on every node: allocation and freeing go on identically in the copy
    /// and the original, and neither sees the other's.
    #[test]
    fn memory_copies_its_free_lists_and_goes_on_alike() {
        let geo = Geometry::TINY;
        let mem = Memory::<StdEngine>::new(&geo, 12 * geo.pmd_size(), 2);
        let a = mem.take(0, 0).expect("page");
        let b = mem.take(1, 2).expect("block");
        mem.take(0, 0).expect("page");
        mem.give(a, 0);
        Atomic::store(&mem.page(b).refcount, 1);
        let copy = mem.snapshot();
        assert_eq!(copy.nr_free(), mem.nr_free());
        assert_eq!(copy.allocated(), mem.allocated());
        assert_eq!(copy.nr_pages(), mem.nr_pages());
        for (z, c) in mem.zones.iter().zip(&copy.zones) {
            assert_eq!((z.node, z.start, z.end), (c.node, c.start, c.end));
        }
        for pfn in 0..mem.nr_pages() {
            assert_eq!(copy.is_free(Pfn(pfn)), mem.is_free(Pfn(pfn)), "{pfn}");
        }
        assert_eq!(copy.page(b).refcount.peek(), 1);
        let from = |m: &Memory<StdEngine>| {
            [(0, 0), (1, 0), (0, 2), (1, 2), (0, 0)].map(|(node, order)| m.take(node, order))
        };
        let (taken, taken_copy) = (from(&mem), from(&copy));
        assert_eq!(taken, taken_copy);
        copy.give(b, 2);
        assert_eq!(mem.nr_free() + 4, copy.nr_free());
        assert!(!mem.is_free(b) && copy.is_free(b));
    }

    /// A planned copy makes the frames in their boot state afresh and reads
    /// the others: frame by frame the same as a full copy, and on the
    /// exploration engine the same number of engine objects.
    #[test]
    fn a_planned_copy_is_the_full_copy() {
        use crate::engine::footprint;
        use crate::ShuttleEngine;
        let geo = Geometry::TINY;
        ShuttleEngine::count_runnable();
        let mem = Memory::<ShuttleEngine>::new(&geo, 12 * geo.pmd_size(), 2);
        let a = mem.take(0, 0).expect("page");
        Atomic::store(&mem.page(a).refcount, 1);
        mem.words(a)[0].store(7, std::sync::atomic::Ordering::Relaxed);
        mem.page(a.add(1)).lock_state();
        let plan = mem.copy_plan();
        assert_eq!(plan.boot_frames() as u64, mem.nr_pages() - 2);
        let mut made = Vec::new();
        let mut copies = Vec::new();
        for planned in [false, true] {
            footprint::reset();
            copies.push(if planned {
                mem.snapshot_planned(&plan)
            } else {
                mem.snapshot()
            });
            assert!(footprint::take_hidden().is_empty());
            made.push(footprint::next_id());
        }
        footprint::stop();
        assert_eq!(made[0], made[1]);
        let (full, planned) = (&copies[0], &copies[1]);
        for pfn in 0..mem.nr_pages() {
            let (f, p) = (full.page(Pfn(pfn)), planned.page(Pfn(pfn)));
            assert_eq!(f.in_boot_state(), p.in_boot_state(), "{pfn}");
            assert_eq!(f.node, p.node, "{pfn}");
            assert_eq!(f.refcount.peek(), p.refcount.peek(), "{pfn}");
            assert_eq!(f.mapcount.peek(), p.mapcount.peek(), "{pfn}");
            assert_eq!(f.is_locked(), p.is_locked(), "{pfn}");
        }
        assert_eq!(full.nr_free(), planned.nr_free());
        assert!(!planned.page(a).in_boot_state());
        for copy in [full, planned] {
            assert_eq!(
                copy.words(a)[0].load(std::sync::atomic::Ordering::Relaxed),
                7
            );
        }
        assert!(!planned.page(a.add(1)).in_boot_state());
        ShuttleEngine::stop_counting();
    }
}
