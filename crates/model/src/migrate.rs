//! Migration entries: mm/migrate.c.
//!
//! Models (v5.8): remove_migration_ptes() and remove_migration_pte() (how
//! split_huge_page() remaps the frozen subpages), and the waits of a fault that
//! meets a migration entry (`__migration_entry_wait`,
//! `pmd_migration_entry_wait`), which sleep until the page is unlocked. A page
//! remapped into a VM_LOCKED VMA is mlocked (mlock.rs).
//!
//! Leaves out: migrate_pages()/move_pages() themselves (a later issue), PMD
//! migration entries' removal (remove_migration_pmd), device-private pages.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::mm_types::vm;
use crate::page_vma_mapped::{Pvmw, PvmwFlags};
use crate::pgtable::{EntryRef, Pmd, Pte};
use crate::rmap::RmapLock;
use crate::types::{Pfn, VirtAddr};

impl<E: Engine> Cpu<E> {
    /// Models remove_migration_ptes(), mm/migrate.c, v5.8: replace every
    /// migration entry for `old` by a PTE mapping `new`.
    pub fn remove_migration_ptes(&self, old: Pfn, new: Pfn, locked: bool) {
        let _f = self.func("remove_migration_ptes");
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
                self.unmodelled(
                    "remove_migration_pte(): remove_migration_pmd() (PMD-level THP migration)",
                    Some(page),
                );
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
            self.page_add_anon_rmap(new, vma, pvmw.address, false);
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
}
