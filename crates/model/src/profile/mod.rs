//! The kernel profiles: which THP design the machine runs, and the one seam
//! where the two designs part.
//!
//! Linux 5.8 (the default, [`V5_8`]) maps a THP by PMDs and PTEs at once and
//! splits a PMD without splitting the page. Linux 3.16 ([`V3_16`], the design
//! Linux used until 4.5) maps a THP only by huge PMDs: any operation on part
//! of a THP splits the page itself (`split_huge_page()` under the anon_vma
//! lock, walking every VMA that maps it), and a huge PMD under split carries
//! `_PAGE_SPLITTING` that faults, zap and fork wait on.
//!
//! Everything else is shared: base pages, page tables, VMAs, anon_vmas, the
//! allocator, TLBs, the fault path below the PMD. The seam is the trait
//! [`ThpDesign`]: each of its methods is one place where 5.8's mm/ calls into
//! THP code that 3.16 had in another form. The machine picks its design once
//! (`Config::kernel`); shared code calls `cpu.thp().METHOD(cpu, ..)` and never
//! asks which era it is in. The 5.8 methods are the functions in
//! `huge_memory.rs`, `memory.rs`, `mprotect.rs`; the 3.16 ones are in
//! [`v3_16`], each naming its v3.16 counterpart.
//!
//! Leaves out: any other release. The checkers know the mapcount rules of
//! each design (`check::audit`).

pub mod v3_16;
pub mod v5_8;

pub use v3_16::V3_16;
pub use v5_8::V5_8;

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::gup::FollFlags;
use crate::huge_memory::Ebusy;
use crate::memory::{MmuGather, VmFault, VmFaultT};
use crate::mm_types::{MmStruct, Vma};
use crate::pgtable::{EntryRef, PteFlags};
use crate::types::{Pfn, VirtAddr};
use serde::Serialize;
use std::sync::Arc;

/// The kernel design a machine follows (the scenario's `kernel` line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum KernelProfile {
    /// Linux 5.8.
    #[default]
    #[serde(rename = "5.8")]
    V5_8,
    /// Linux 3.16: the pre-4.5 THP design.
    #[serde(rename = "3.16")]
    V3_16,
}

impl KernelProfile {
    /// `5.8` or `3.16`.
    pub fn name(self) -> &'static str {
        match self {
            KernelProfile::V5_8 => "5.8",
            KernelProfile::V3_16 => "3.16",
        }
    }

    /// The design's THP code (the seam).
    pub fn design<E: Engine>(self) -> &'static dyn ThpDesign<E> {
        match self {
            KernelProfile::V5_8 => &V5_8,
            KernelProfile::V3_16 => &V3_16,
        }
    }
}

/// The THP code that differs between the designs. Each method is named after
/// the kernel function (or the branch of one) that shared code reaches.
pub trait ThpDesign<E: Engine>: Sync {
    /// __handle_mm_fault(), mm/memory.c: the PMD level of a fault (a huge PMD
    /// fault, a WP fault on a huge PMD), then handle_pte_fault().
    fn __handle_mm_fault(&self, cpu: &Cpu<E>, vmf: &mut VmFault<E>) -> VmFaultT;

    /// zap_pmd_range()'s huge PMD branch, mm/memory.c: a huge PMD the range
    /// `[addr, next)` covers is zapped (returns true), one it covers in part
    /// is split first (returns false: zap the PTEs).
    fn zap_huge_pmd_range(
        &self,
        cpu: &Cpu<E>,
        tlb: &mut MmuGather,
        vma: &Arc<Vma>,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
    ) -> bool;

    /// copy_huge_pmd(), mm/huge_memory.c. `Ok(true)`: copied; `Ok(false)`:
    /// -EAGAIN, copy the PTEs; `Err`: -ENOMEM.
    #[allow(clippy::too_many_arguments)]
    fn copy_huge_pmd(
        &self,
        cpu: &Cpu<E>,
        dst: &MmStruct<E>,
        src: &MmStruct<E>,
        dst_pmd: EntryRef,
        src_pmd: EntryRef,
        addr: VirtAddr,
        vma: &Vma,
    ) -> Result<bool, Errno>;

    /// vma_adjust_trans_huge(): before a VMA's bounds move, split what the
    /// new bounds would cut.
    fn vma_adjust_trans_huge(
        &self,
        cpu: &Cpu<E>,
        mm: &MmStruct<E>,
        vma: &Vma,
        start: VirtAddr,
        end: VirtAddr,
        next: Option<(&Vma, VirtAddr)>,
    );

    /// change_pmd_range()'s huge PMD branch, mm/mprotect.c: the pages changed
    /// as one huge PMD, or 0 when the PMD was split (change the PTEs).
    fn change_huge_pmd_range(
        &self,
        cpu: &Cpu<E>,
        vma: &Vma,
        pmd: EntryRef,
        addr: VirtAddr,
        next: VirtAddr,
        newprot: PteFlags,
    ) -> u64;

    /// `kernel: split-huge-page`: split the THP mapped at `addr`. `Ok(false)`:
    /// no THP is mapped there.
    fn split_huge_pages_pid(
        &self,
        cpu: &Cpu<E>,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
    ) -> Result<bool, Ebusy>;

    /// page_mapcount() as /proc/kpagecount reports it.
    fn page_mapcount(&self, cpu: &Cpu<E>, page: Pfn) -> i64;

    /// A driver's long-term pin of `nr_pages` pages from `start` (5.8:
    /// pin_user_pages(FOLL_LONGTERM), gup.rs; 3.16: get_user_pages()), called
    /// with `mmap_lock` held for read; the pages pinned, or the error.
    fn pin_user_pages(
        &self,
        cpu: &Cpu<E>,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        nr_pages: u64,
        gup_flags: FollFlags,
        pages: &mut Vec<Pfn>,
    ) -> Result<u64, Errno>;

    /// The release of such pins (5.8: unpin_user_pages(); 3.16: put_page()
    /// of each page).
    fn unpin_user_pages(&self, cpu: &Cpu<E>, pages: &[Pfn]);
}

impl<E: Engine> Cpu<E> {
    /// The machine's THP design (chosen once, by `Config::kernel`).
    #[inline]
    pub fn thp(&self) -> &'static dyn ThpDesign<E> {
        self.k.cfg.kernel.design()
    }
}
