//! The reuse decision of a write-protect fault: mm/swapfile.c.
//!
//! Models reuse_swap_page() and page_trans_huge_map_swapcount() (v5.8). The
//! swap device arrives in a later issue; until then every swap count is 0 and
//! page_trans_huge_map_swapcount() equals page_trans_huge_mapcount().
//!
//! With the fix `thp-wp-accurate-mapcount` reverted (seed 004), reuse follows
//! the rule before 6d0a07edd17c: a THP subpage is never reused by the PTE fault.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::fixes::Fix;
use crate::types::Pfn;

impl<E: Engine> Cpu<E> {
    /// Models reuse_swap_page(), mm/swapfile.c, v5.8: whether the faulting
    /// process may write the page in place. `total_map_swapcount` receives the
    /// total mapcount (plus swap count).
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
        count <= 1
    }

    /// Models page_trans_huge_map_swapcount(), mm/swapfile.c, v5.8: returns
    /// (the highest mapcount + swapcount of any subpage, total mapcount, total
    /// swapcount). Every swap count is 0 until the swap device exists.
    pub fn page_trans_huge_map_swapcount(&self, page: Pfn) -> (i64, i64, i64) {
        let mut total = 0;
        let count = self.page_trans_huge_mapcount(page, Some(&mut total));
        (count, total, 0)
    }
}
