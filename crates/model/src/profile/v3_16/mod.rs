//! The pre-4.5 THP design as Linux 3.16 has it (read from
//! jyizheng/linux-3.16: mm/huge_memory.c, mm/rmap.c, mm/memory.c,
//! mm/mprotect.c, include/linux/huge_mm.h, arch/x86/mm/pgtable.c).
//!
//! Models: a THP mapped only by huge PMDs; its mapcount on the head page's
//! `_mapcount` (page_mapcount() is `_mapcount + 1` of the page itself, so a
//! tail's is 0); fault, COW (the whole THP copied, or 4 KiB copies of every
//! subpage when no THP is free), fork and zap of a huge PMD, each waiting for
//! a split in progress (`wait_split_huge_page()`); any operation on part of a
//! THP splitting the page itself (`split_huge_page_pmd()`,
//! `vma_adjust_trans_huge()` → `split_huge_page_address()`); and
//! split_huge_page() → __split_huge_page() under the anon_vma lock, walking
//! every VMA twice: __split_huge_page_splitting() marks each huge PMD
//! `_PAGE_SPLITTING`, __split_huge_page_refcount() turns the compound page
//! into base pages (moving the mapcount to every tail), and
//! __split_huge_page_map() replaces each huge PMD by a PTE table, with the
//! era's BUG()s when the two walks and the mapcount disagree.
//!
//! Seed switches of this era: `split-anon-vma-write` (3.8-rc1 took the
//! anon_vma lock for read in split_huge_page(); seed 002) and
//! `rmap-pmd-under-ptl` (3.13's page_check_address_pmd() found the PMD with
//! mm_find_pmd(), which tests pmd_present() without the page-table lock;
//! seed 001).
//!
//! Shared with 5.8 unchanged (the code is the same in both): base-page
//! faults and COW (handle_pte_fault() down), page tables, VMAs and anon_vmas,
//! the allocator and put_page() (3.16's put_compound_page() of a head
//! without tail pins is 5.8's), the huge zero page, huge_pmd_set_accessed(),
//! pmdp_invalidate(), __split_huge_zero_page_pmd().
//!
//! Pins are get_user_pages() (`gup.rs`): a pin of a THP tail is counted on
//! the head's `_count` and the tail's `_mapcount` (the era's tail-page
//! refcounting), and put_page() of a tail takes the head's compound_lock
//! against __split_huge_page_refcount().
//!
//! Leaves out (the runner refuses them under `kernel 3.16`):
//! get_user_pages_fast() (`pin ... fast`), swap and reclaim, khugepaged,
//! mlock, migration, NUMA hinting faults (`pmd_numa`), hugetlb, shmem and
//! file THP, memcg, the deferred split queue (3.16 has none).

mod gup;
mod huge_memory;
mod memory;
mod rmap;

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

/// Linux 3.16's THP design.
pub struct V3_16;

/// A CPU running 3.16's THP code: the 3.16 functions keep their kernel
/// names as methods of this view, which derefs to the shared [`Cpu`] for
/// everything the two eras have in common.
pub(crate) struct Cpu316<'a, E: Engine>(pub &'a Cpu<E>);

impl<E: Engine> std::ops::Deref for Cpu316<'_, E> {
    type Target = Cpu<E>;
    fn deref(&self) -> &Cpu<E> {
        self.0
    }
}

impl<E: Engine> ThpDesign<E> for V3_16 {
    fn __handle_mm_fault(&self, cpu: &Cpu<E>, vmf: &mut VmFault<E>) -> VmFaultT {
        Cpu316(cpu).__handle_mm_fault(vmf)
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
        Cpu316(cpu).zap_pmd_range_huge(tlb, vma, pmd, addr, next)
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
        Cpu316(cpu).copy_huge_pmd(dst, src, dst_pmd, src_pmd, addr, vma)
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
        Cpu316(cpu).vma_adjust_trans_huge(mm, vma, start, end, next)
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
        Cpu316(cpu).change_pmd_range_huge(vma, pmd, addr, next, newprot)
    }

    fn split_huge_pages_pid(
        &self,
        cpu: &Cpu<E>,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
    ) -> Result<bool, Ebusy> {
        Ok(Cpu316(cpu).split_huge_page_at(mm, addr))
    }

    fn page_mapcount(&self, cpu: &Cpu<E>, page: Pfn) -> i64 {
        Cpu316(cpu).page_mapcount(page)
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
        let write = gup_flags.contains(FollFlags::WRITE);
        Cpu316(cpu).get_user_pages(mm, start, nr_pages, write, pages)
    }

    fn unpin_user_pages(&self, cpu: &Cpu<E>, pages: &[Pfn]) {
        let c = Cpu316(cpu);
        for &p in pages {
            c.put_page(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::check::audit::audit;
    use crate::engine::Atomic;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::profile::KernelProfile;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Cpu, Kernel, StdEngine};

    /// A `kernel 3.16` machine (tiny geometry) whose one process has written
    /// one THP: the CPU, the mm, the THP's address and its head.
    fn one_thp() -> (
        Cpu<StdEngine>,
        std::sync::Arc<crate::mm_types::MmStruct<StdEngine>>,
        crate::types::VirtAddr,
        crate::types::Pfn,
    ) {
        let mut cfg = Config::new(Geometry::TINY);
        cfg.kernel = KernelProfile::V3_16;
        let cpu = Cpu::new(Kernel::<StdEngine>::new(cfg), CpuId(0));
        let g = cpu.k.geo;
        let mm = cpu.mm_alloc();
        let a = cpu
            .do_mmap(&mm, g.pmd_size(), Prot::ReadWrite, g.pmd_size())
            .expect("mmap");
        cpu.user_access(&mm, a, Access::Write(1)).expect("write");
        let head = cpu.page_info(&mm, a).pfn.expect("mapped");
        (cpu, mm, a, head)
    }

    /// A 3.16 THP is counted on its head's `_mapcount` (no compound
    /// mapcount), and its tails stay unused: the 3.16 functions ran, not
    /// 5.8's of the same name.
    #[test]
    fn a_thp_is_counted_on_its_head() {
        let (cpu, mm, a, head) = one_thp();
        let g = cpu.k.geo;
        assert!(cpu.page_head(head));
        let p = cpu.page(head);
        assert_eq!(p.mapcount.peek_i64(), 0, "head _mapcount: one huge PMD");
        assert_eq!(
            p.compound_mapcount.peek_i64(),
            -1,
            "no 5.8 compound mapcount"
        );
        assert_eq!(cpu.page(head.add(1)).mapcount.peek_i64(), -1);
        assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
        // fork shares it: the head counts both huge PMDs.
        let child = cpu.dup_mm(&mm).expect("fork");
        assert_eq!(cpu.page(head).mapcount.peek_i64(), 1);
        assert_eq!(cpu.page(head).refcount.peek_i64(), 2);
        assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
        // The split moves the mapcount to every tail and maps both
        // processes by PTEs.
        assert!(super::Cpu316(&cpu).split_huge_page_at(&mm, a));
        for i in 0..g.hpage_pmd_nr() {
            let sub = head.add(i);
            assert!(!cpu.page_compound(sub));
            assert_eq!(cpu.page(sub).mapcount.peek_i64(), 1, "subpage {i}");
            assert_eq!(cpu.page(sub).refcount.peek_i64(), 2, "subpage {i}");
        }
        assert_eq!(cpu.page_info(&child, a).pfn, Some(head));
        assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
    }

    /// 3.16's tail-page refcounting: a pin of a tail counts on the head's
    /// `_count` and the tail's `_mapcount`; put_page() of the tail undoes
    /// both (under the compound_lock).
    #[test]
    fn a_tail_pin_counts_on_head_and_tail() {
        let (cpu, mm, a, head) = one_thp();
        let g = cpu.k.geo;
        let tail_addr = a.add_bytes(g.page_size());
        let c = super::Cpu316(&cpu);
        let mut pages = Vec::new();
        let n = {
            let _mmap = mm.mmap_lock.read(&cpu);
            c.get_user_pages(&mm, tail_addr, 1, true, &mut pages)
        };
        assert_eq!(n, Ok(1));
        assert_eq!(pages, vec![head.add(1)]);
        assert_eq!(cpu.page(head).refcount.peek_i64(), 2, "the PMD and the pin");
        assert_eq!(cpu.page(head.add(1)).mapcount.peek_i64(), 0, "one tail pin");
        assert_eq!(cpu.page(head.add(1)).refcount.peek_i64(), 0);
        assert!(crate::check::audit::audit_pinned(&cpu, &pages).is_empty());
        c.put_page(head.add(1));
        assert_eq!(cpu.page(head).refcount.peek_i64(), 1);
        assert_eq!(cpu.page(head.add(1)).mapcount.peek_i64(), -1);
        assert!(audit(&cpu).is_empty(), "{:?}", audit(&cpu));
    }
}
