//! Linux 5.8's side of the seam: each method is the 5.8 function (or
//! branch) of `huge_memory.rs`, `memory.rs` and `mprotect.rs` that shared
//! code reaches.

use super::ThpDesign;
use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::gup::FollFlags;
use crate::huge_memory::Ebusy;
use crate::memory::{MmuGather, VmFault, VmFaultT};
use crate::mm_types::{MmStruct, Vma};
use crate::pgtable::{EntryRef, PteFlags};
use crate::types::{Pfn, VirtAddr};
use std::sync::Arc;

/// Linux 5.8's THP design: the functions of huge_memory.rs, memory.rs and
/// mprotect.rs.
pub struct V5_8;

impl<E: Engine> ThpDesign<E> for V5_8 {
    fn __handle_mm_fault(&self, cpu: &Cpu<E>, vmf: &mut VmFault<E>) -> VmFaultT {
        cpu.__handle_mm_fault(vmf)
    }

    fn zap_huge_pmd_range(
        &self,
        cpu: &Cpu<E>,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
    ) -> bool {
        if next.0 - addr.0 != cpu.k.geo.pmd_size() {
            cpu.__split_huge_pmd(vma, pmd, addr, false, None);
            false
        } else {
            cpu.zap_huge_pmd(tlb, vma, pmd, addr)
        }
    }

    fn copy_huge_pmd(
        &self,
        cpu: &Cpu<E>,
        dst: &MmStruct<E>,
        src: &MmStruct<E>,
        dst_pmd: EntryRef,
        src_pmd: EntryRef,
        addr: VirtAddr,
        vma: &Vma,
    ) -> Result<bool, Errno> {
        cpu.copy_huge_pmd(dst, src, dst_pmd, src_pmd, addr, vma)
    }

    fn vma_adjust_trans_huge(
        &self,
        cpu: &Cpu<E>,
        mm: &MmStruct<E>,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
        next: Option<(&Vma, VirtAddr)>,
    ) {
        cpu.vma_adjust_trans_huge(mm, vma, start, end, next)
    }

    fn change_huge_pmd_range(
        &self,
        cpu: &Cpu<E>,
        vma: &Vma,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
        newprot: PteFlags,
    ) -> u64 {
        if next.0 - addr.0 != cpu.k.geo.pmd_size() {
            cpu.__split_huge_pmd(vma, pmd, addr, false, None);
            0
        } else {
            cpu.change_huge_pmd(vma, pmd, addr, newprot)
        }
    }

    fn split_huge_pages_pid(
        &self,
        cpu: &Cpu<E>,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
    ) -> Result<bool, Ebusy> {
        cpu.split_huge_pages_pid(mm, addr)
    }

    fn page_mapcount(&self, cpu: &Cpu<E>, page: Pfn) -> i64 {
        cpu.page_mapcount(page)
    }

    fn pin_user_pages(
        &self,
        cpu: &Cpu<E>,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        gup_flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> Result<u64, Errno> {
        cpu.pin_user_pages(mm, start, nr_pages, gup_flags, pages)
    }

    fn unpin_user_pages(&self, cpu: &Cpu<E>, pages: &[Pfn]) {
        cpu.unpin_user_pages(pages)
    }
}
