//! madvise(): mm/madvise.c.
//!
//! Models (v5.8): `do_madvise` over the VMAs of a range, MADV_DONTNEED
//! (`madvise_dontneed_single_vma` → zap_page_range()), MADV_HUGEPAGE and
//! MADV_NOHUGEPAGE (`madvise_behavior`: hugepage_madvise(), split the VMA at
//! the range's ends — which splits huge PMDs there — and merge).
//!
//! Leaves out: MADV_FREE, MADV_PAGEOUT, MADV_COLLAPSE (later issues), the other
//! advices.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::khugepaged::HugepageAdvice;
use crate::mm_types::{vm, MmStruct, Vma};
use crate::types::VirtAddr;
use std::sync::Arc;

/// The advice values the model implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    DontNeed,
    Hugepage,
    NoHugepage,
}

impl<E: Engine> Cpu<E> {
    /// Models do_madvise(), mm/madvise.c, v5.8.
    ///
    /// # Locking
    /// Takes `mmap_lock`: for read (MADV_DONTNEED) or write (the others).
    pub fn do_madvise(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        len: u64,
        advice: Advice,
    ) -> Result<(), Errno> {
        let _f = self.func("do_madvise");
        let Some(end) = self.syscall_range(start, len)? else {
            return Ok(());
        };
        let (_r, _w);
        if advice == Advice::DontNeed {
            _r = Some(mm.mmap_lock.read(self));
            _w = None;
        } else {
            _w = Some(mm.mmap_lock.write(self));
            _r = None;
        }
        let mut unmapped_error = Ok(());
        let mut start = start;
        loop {
            let Some(vma) = mm.find_vma(start) else {
                return Err(Errno::Enomem);
            };
            if start < vma.vm_start() {
                unmapped_error = Err(Errno::Enomem);
                start = vma.vm_start();
                if start >= end {
                    return unmapped_error;
                }
            }
            let tmp = vma.vm_end().min(end);
            self.madvise_vma(mm, &vma, start, tmp, advice)?;
            start = tmp;
            if start >= end {
                return unmapped_error;
            }
        }
    }

    /// Models madvise_vma(), mm/madvise.c, v5.8.
    fn madvise_vma(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        advice: Advice,
    ) -> Result<(), Errno> {
        match advice {
            Advice::DontNeed => {
                // madvise_dontneed_single_vma(), after can_madv_lru_vma().
                if vma.vm_flags() & (vm::LOCKED | vm::HUGETLB) != 0 {
                    return Err(Errno::Einval);
                }
                self.zap_page_range(mm, vma, start, end);
                Ok(())
            }
            Advice::Hugepage | Advice::NoHugepage => {
                let a = if advice == Advice::Hugepage {
                    HugepageAdvice::Hugepage
                } else {
                    HugepageAdvice::NoHugepage
                };
                self.madvise_behavior(mm, vma, start, end, a)
            }
        }
    }

    /// Models madvise_behavior(), mm/madvise.c, v5.8, for MADV_(NO)HUGEPAGE.
    fn madvise_behavior(
        &self,
        mm: &MmStruct<E>,
        vma: &Arc<Vma>,
        start: VirtAddr,
        end: VirtAddr,
        advice: HugepageAdvice,
    ) -> Result<(), Errno> {
        let _f = self.func("madvise_behavior");
        let new_flags = self.hugepage_madvise(vma.vm_flags(), advice);
        if new_flags == vma.vm_flags() {
            return Ok(());
        }
        // A split a VMA refuses (hugetlb, not at a huge page boundary) is
        // EINVAL (out_convert_errno).
        let vma = self.split_vma_to(mm, vma, start, end)?;
        vma.set_vm_flags(new_flags);
        self.vma_merge(mm, &vma);
        Ok(())
    }
}
