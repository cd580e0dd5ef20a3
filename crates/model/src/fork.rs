//! Process creation and exit: kernel/fork.c and kernel/exit.c.
//!
//! Models (v5.8): `mm_alloc`, `dup_mm`/`dup_mmap` (each VMA duplicated,
//! anon_vma_fork(), copy_page_range(), the parent's TLB flushed at the end)
//! and `mmput` → exit_mmap().
//!
//! A hugetlb VMA's copy shares the file (get_file(), linked into its
//! `i_mmap`) and, if shared, the reservation; a private one's reservation
//! stays the parent's (reset_vma_resv_huge_pages()).
//!
//! Leaves out: tasks and threads (a scenario process is one mm), VM_DONTCOPY,
//! VM_WIPEONFORK, the OOM killer, khugepaged registration.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::mm_types::{vm, MmStruct, Vma};
use crate::types::Level;
use std::sync::Arc;

impl<E: Engine> Cpu<E> {
    /// Models mm_alloc(), kernel/fork.c, v5.8: an empty address space.
    pub fn mm_alloc(&self) -> Arc<MmStruct<E>> {
        let entries = self.k.geo.ptrs(Level::Pgd);
        self.k.register_mm(|id| MmStruct::new(id, entries))
    }

    /// Models dup_mm()/dup_mmap(), kernel/fork.c, v5.8: the child's address
    /// space, sharing every private page copy-on-write.
    ///
    /// # Locking
    /// Takes the parent's `mmap_lock` for write, then the child's nested.
    pub fn dup_mm(&self, oldmm: &Arc<MmStruct<E>>) -> Result<Arc<MmStruct<E>>, Errno> {
        let _f = self.func("dup_mmap");
        let mm = self.mm_alloc();
        let _old = oldmm.mmap_lock.write(self);
        let _new = mm.mmap_lock.write_nested(self);
        let mut result = Ok(());
        for mpnt in oldmm.vma_list() {
            let flags = mpnt.vm_flags() & !(vm::LOCKED | vm::LOCKONFAULT);
            let tmp = Arc::new(
                Vma::new(
                    self.k.new_vma_id(),
                    mm.id,
                    mpnt.vm_start(),
                    mpnt.vm_end(),
                    mpnt.vm_pgoff(),
                    flags,
                )
                .with_file(mpnt.vm_file),
            );
            // `*tmp = *mpnt`: vm_private_data too; a hugetlb VMA's private
            // reservation stays the parent's (reset_vma_resv_huge_pages()).
            if tmp.vm_flags() & vm::MAYSHARE != 0 {
                tmp.set_resv(mpnt.resv());
            }
            self.anon_vma_fork(&tmp, &mpnt);
            if let Some(f) = tmp.vm_file {
                self.get_file(f);
                self.vma_link_file(&tmp); // vma_interval_tree_insert_after()
            }
            mm.vmas
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(tmp.clone());
            if !self.copy_page_range(&mm, oldmm, &mpnt, &tmp) {
                result = Err(Errno::Enomem);
                break;
            }
            if tmp.is_hugetlb() {
                self.hugetlb_vm_op_open(&tmp); // tmp->vm_ops->open(tmp)
            }
        }
        // arch_dup_mmap(); flush_tlb_mm(oldmm): the parent's PTEs were
        // write-protected.
        self.flush_tlb_mm(oldmm.id);
        drop(_new);
        drop(_old);
        if let Err(e) = result {
            self.exit_mmap(&mm);
            return Err(e);
        }
        Ok(mm)
    }

    /// Models mmput() → exit_mmap() for a process that exits.
    pub fn mmput(&self, mm: &Arc<MmStruct<E>>) {
        let _f = self.func("mmput");
        self.exit_mmap(mm);
    }
}
