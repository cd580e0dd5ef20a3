//! MADV_HUGEPAGE/MADV_NOHUGEPAGE: mm/khugepaged.c.
//!
//! Models hugepage_madvise() (v5.8). The khugepaged scan and collapse arrive in
//! a later issue.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::mm_types::vm;

/// The madvise advice hugepage_madvise() handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugepageAdvice {
    Hugepage,
    NoHugepage,
}

impl<E: Engine> Cpu<E> {
    /// Models hugepage_madvise(), mm/khugepaged.c, v5.8: the new vm_flags.
    pub fn hugepage_madvise(&self, vm_flags: u64, advice: HugepageAdvice) -> u64 {
        match advice {
            HugepageAdvice::Hugepage => (vm_flags & !vm::NOHUGEPAGE) | vm::HUGEPAGE,
            HugepageAdvice::NoHugepage => (vm_flags & !vm::HUGEPAGE) | vm::NOHUGEPAGE,
        }
    }
}
