//! Heterogeneous memory management: mm/hmm.c.
//!
//! Models (v5.8): `hmm_range_fault()` as a mirroring driver calls it (with
//! HMM_PFN_REQ_FAULT, and HMM_PFN_REQ_WRITE for a write): a lockless walk of
//! the process's page tables (`hmm_vma_walk_pmd`, `hmm_vma_handle_pmd`,
//! `hmm_vma_handle_pte`) that faults in what is missing or read-only
//! (`hmm_vma_fault` -> handle_mm_fault()) and walks again, waits on a
//! migration entry, and gives up (-EBUSY) when an invalidation collided with
//! the read side (`mmu_interval_check_retry()`).
//!
//! A hugetlb VMA's entries are read under their PMD lock
//! (`hmm_vma_walk_hugetlb_entry`).
//!
//! Leaves out: device-private entries, snapshots without faulting
//! (HMM_PFN_REQ_FAULT is always set), the per-range default/mask flags.

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::memory::{FaultFlags, VmFault};
use crate::mm_types::{vm, MmStruct};
use crate::mmu_notifier::MirrorId;
use crate::pgtable::{Pmd, Pte};
use crate::types::{Pfn, VirtAddr};
use std::sync::Arc;

/// Why hmm_range_fault() did not fill the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HmmError {
    /// -EBUSY: an invalidation collided; the caller begins again.
    Busy,
    /// The range cannot be faulted (-EFAULT, -EPERM, -ENOMEM).
    Fault(Errno),
}

/// One page's translation: the frame, and whether the CPU may write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HmmPfn {
    pub pfn: Pfn,
    pub write: bool,
}

impl<E: Engine> Cpu<E> {
    /// Models hmm_range_fault(), mm/hmm.c, v5.8, for `[start, end)` of `mm`
    /// on behalf of `mirror`, whose read side began at `seq`.
    ///
    /// # Locking
    /// Called with `mmap_lock` held for read; reads the page tables without
    /// their locks, as hmm_vma_walk_pmd() does; faults through
    /// handle_mm_fault().
    pub fn hmm_range_fault(
        &self,
        mm: &Arc<MmStruct<E>>,
        mirror: MirrorId,
        seq: u64,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
    ) -> Result<Vec<HmmPfn>, HmmError> {
        let _f = self.func("hmm_range_fault");
        let g = self.k.geo;
        let mut out = Vec::new();
        let mut addr = start;
        // do { check_retry; walk_page_range() } while (ret == -EBUSY): the
        // walk goes on from `hmm_vma_walk.last`, the page that faulted.
        while addr < end {
            if self.mmu_interval_read_retry(mm, mirror, seq) {
                return Err(HmmError::Busy);
            }
            // `None`: faulted or waited; walk again from this page (-EBUSY).
            if let Some(p) = self.hmm_vma_walk_one(mm, addr, write)? {
                out.push(p);
                addr = addr.add_bytes(g.page_size());
            }
        }
        Ok(out)
    }

    /// One page of the walk: its translation, or `None` when it had to be
    /// faulted in or waited for first (the walk then starts again there).
    fn hmm_vma_walk_one(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        write: bool,
    ) -> Result<Option<HmmPfn>, HmmError> {
        // hmm_vma_walk_test(): a hole, or a VMA without VM_READ, cannot be
        // faulted.
        let Some(vma) = mm.vma_at(addr) else {
            return Err(HmmError::Fault(Errno::Efault));
        };
        if vma.vm_flags() & vm::READ == 0 {
            return Err(HmmError::Fault(Errno::Efault));
        }
        let present = if vma.is_hugetlb() {
            self.hmm_vma_walk_hugetlb_entry(mm, addr)
        } else {
            self.hmm_vma_walk_pmd_one(mm, addr)?
        };
        let Some(present) = present else {
            return Ok(None);
        };
        if let Some(p) = present {
            if !write || p.write {
                return Ok(Some(p));
            }
        }
        // hmm_vma_fault()
        if write && vma.vm_flags() & vm::WRITE == 0 {
            return Err(HmmError::Fault(Errno::Efault)); // -EPERM
        }
        let ret = self.handle_mm_fault(&VmFault::new(
            mm.clone(),
            vma.clone(),
            addr,
            FaultFlags { write },
        ));
        if ret.oom() {
            return Err(HmmError::Fault(Errno::Enomem));
        }
        if ret.sigbus() || ret.sigsegv() {
            return Err(HmmError::Fault(Errno::Efault));
        }
        Ok(None)
    }

    /// Models hmm_vma_walk_hugetlb_entry(), mm/hmm.c, v5.8: the hugetlb
    /// entry of `addr` read under its PMD lock; a missing or non-present
    /// one (a migration entry) is faulted (`Some(None)`; hugetlb_fault()
    /// waits on a migration entry).
    ///
    /// # Locking
    /// Takes the PMD lock.
    fn hmm_vma_walk_hugetlb_entry(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
    ) -> Option<Option<HmmPfn>> {
        let g = self.k.geo;
        let Some(ptep) = self.huge_pte_offset(mm, addr) else {
            return Some(None);
        };
        let ptl = self.huge_pte_lockptr(ptep).lock(self);
        let entry = self.pmd_read(ptep);
        drop(ptl);
        Some(Self::huge_entry_pfn(g, entry, addr))
    }

    /// The translation of `addr` a present huge PMD (THP or hugetlb) gives
    /// (pmd_to_hmm_pfn_flags() / pte_to_hmm_pfn_flags()), if it gives one.
    fn huge_entry_pfn(g: crate::types::Geometry, entry: Pmd, addr: VirtAddr) -> Option<HmmPfn> {
        match entry {
            Pmd::Huge {
                pfn,
                flags,
                invalid: false,
            } if !flags.protnone => Some(HmmPfn {
                pfn: pfn.add(g.index(crate::types::Level::Pte, addr) as u64),
                write: flags.write,
            }),
            _ => None,
        }
    }

    /// hmm_vma_walk_pmd() for one page (not hugetlb): `Some(translation)`,
    /// or `None` after a migration wait (walk again).
    fn hmm_vma_walk_pmd_one(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
    ) -> Result<Option<Option<HmmPfn>>, HmmError> {
        let g = self.k.geo;
        Ok(Some(match self.pmd_offset(mm, addr) {
            None => None,
            Some(pmdp) => match self.pmd_read(pmdp) {
                // hmm_vma_handle_pmd()
                e @ Pmd::Huge { .. } => Self::huge_entry_pfn(g, e, addr),
                Pmd::Migration { .. } => {
                    self.pmd_migration_entry_wait(mm, pmdp);
                    return Ok(None);
                }
                Pmd::Table(_) => {
                    let pmd = self.pmd_read(pmdp);
                    match self.pte_offset(pmd, addr).map(|p| (p, self.pte_read(p))) {
                        // hmm_vma_handle_pte()
                        Some((_, Pte::Present { pfn, flags })) if !flags.protnone => {
                            Some(HmmPfn {
                                pfn,
                                // The zero page is mapped read-only.
                                write: flags.write && !self.is_zero_pfn(pfn),
                            })
                        }
                        Some((_, Pte::Migration { .. })) => {
                            self.migration_entry_wait(pmdp, addr);
                            return Ok(None);
                        }
                        _ => None,
                    }
                }
                _ => None,
            },
        }))
    }
}
