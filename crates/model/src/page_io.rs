//! Reading and writing swap slots: mm/page_io.c (v5.8).
//!
//! Models swap_writepage() and swap_readpage() for the one swap device of
//! swapfile.rs. The device holds a copy of each written slot's bytes.
//!
//! DIVERGENCE: I/O completes inside the call, as on a synchronous device: a
//! written page is never seen PageWriteback by another CPU, and a read page
//! is up to date and unlocked when swap_readpage() returns (5.8's bio
//! completion, end_swap_bio_read(), unlocks it later). The windows in which
//! 5.8 waits on I/O are not explored.
//!
//! Leaves out: frontswap, swap files' extents, block plugging, and I/O
//! errors.

use crate::cpu::Cpu;
use crate::engine::footprint::Obj;
use crate::engine::Engine;
use crate::page::pg;
use crate::types::Pfn;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

impl<E: Engine> Cpu<E> {
    /// Models swap_writepage() and __swap_writepage(), mm/page_io.c, v5.8:
    /// a swap cache page whose slots no PTE references any more leaves the
    /// cache instead (try_to_free_swap()); else every subpage's bytes go to
    /// its slot. The page is unlocked on return, as 5.8 unlocks it once the
    /// write is queued.
    ///
    /// # Locking
    /// Called with the page locked; unlocks it.
    pub fn swap_writepage(&self, page: Pfn) {
        let _f = self.func("swap_writepage");
        if self.try_to_free_swap(page) {
            self.unlock_page(page);
            return;
        }
        let si = self.swap_info();
        let nr = self.hpage_nr_pages(page);
        for i in 0..nr {
            let sub = page.add(i);
            E::touch(Obj::Frame(sub.0), false);
            let bytes = crate::page::read_page(self.k.mem.words(sub)).into_boxed_slice();
            let slot = self.page(sub).private.load(SeqCst);
            si.state().slots.insert(slot, bytes);
        }
        self.note(|| format!("swap_writepage(): {nr} page(s) written"));
        self.unlock_page(page);
    }

    /// Models swap_readpage(), mm/page_io.c, v5.8: the slot's bytes into the
    /// new, locked swap cache page, which is then up to date and unlocked.
    /// A slot never written reads as zeros (the memory oracle then reports
    /// the data 5.8 would have lost).
    ///
    /// # Locking
    /// Called with the page locked; unlocks it.
    pub fn swap_readpage(&self, page: Pfn) {
        let _f = self.func("swap_readpage");
        let si = self.swap_info();
        let slot = self.page(page).private.load(SeqCst);
        let bytes = si.state().slots.get(&slot).cloned();
        self.touch_data(page);
        E::touch(Obj::Frame(page.0), true);
        let words = self.k.mem.words(page);
        match bytes {
            Some(b) => {
                for (w, chunk) in words.iter().zip(b.chunks(8)) {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(chunk);
                    w.store(u64::from_le_bytes(v), Relaxed);
                }
            }
            None => {
                for w in words {
                    w.store(0, Relaxed);
                }
            }
        }
        self.page(page).set_flag(pg::UPTODATE);
        self.unlock_page(page);
    }
}
