//! What /proc shows about a process's pages: fs/proc/task_mmu.c and
//! fs/proc/page.c.
//!
//! Models the observables thpsim compares with the live kernel: per base page,
//! what maps it (none, the zero page, a base page, a THP subpage by PMD or by
//! PTE, a hugetlb page, a migration or swap entry), which frame (for labels), the mapcount that
//! /proc/kpagecount reports (page_mapcount(), v5.8) and the node. The walk
//! reads entries without locks, as pagemap_read() effectively does at a
//! quiescent point.

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::mm_types::MmStruct;
use crate::pgtable::{Pmd, Pte, Upper};
use crate::types::{Level, Pfn, VirtAddr};
use serde::Serialize;

/// What maps a base page of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MapKind {
    None,
    Zero,
    Base,
    ThpPmd,
    ThpPte,
    Hugetlb,
    Swap,
    Migration,
}

impl MapKind {
    /// The scenario language's keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            MapKind::None => "none",
            MapKind::Zero => "zero",
            MapKind::Base => "base",
            MapKind::ThpPmd => "thp-pmd",
            MapKind::ThpPte => "thp-pte",
            MapKind::Hugetlb => "hugetlb",
            MapKind::Swap => "swap",
            MapKind::Migration => "migration",
        }
    }
}

/// One base page as /proc/PID/pagemap, /proc/kpagecount and /proc/kpageflags
/// describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PageInfo {
    pub kind: MapKind,
    /// The frame (None when nothing is mapped).
    pub pfn: Option<Pfn>,
    /// The THP's head frame, for THP subpages.
    pub head: Option<Pfn>,
    /// page_mapcount() (/proc/kpagecount).
    pub mapcount: i64,
    pub node: Option<u32>,
    /// The swap entry of a swapped-out page.
    pub swap: Option<crate::pgtable::SwapEntry>,
}

impl<E: Engine> Cpu<E> {
    /// The translation of `addr` in `mm`, read without locks.
    pub fn page_info(&self, mm: &MmStruct<E>, addr: VirtAddr) -> PageInfo {
        let g = self.k.geo;
        let none = PageInfo {
            kind: MapKind::None,
            pfn: None,
            head: None,
            mapcount: 0,
            node: None,
            swap: None,
        };
        let Upper::Table(pud_t) = Upper::decode(mm.pgd.raw(g.index(Level::Pgd, addr)).load())
        else {
            return none;
        };
        let Upper::Table(pmd_t) =
            Upper::decode(self.table(pud_t).raw(g.index(Level::Pud, addr)).load())
        else {
            return none;
        };
        let sub = g.index(Level::Pte, addr) as u64;
        let (kind, pfn) = match Pmd::decode(self.table(pmd_t).raw(g.index(Level::Pmd, addr)).load())
        {
            Pmd::None => return none,
            Pmd::Huge { pfn, .. } if self.is_huge_zero_page(pfn) => (MapKind::Zero, pfn.add(sub)),
            Pmd::Huge { pfn, .. } if self.page(pfn).test_flag_peek(crate::page::pg::HUGETLB) => {
                (MapKind::Hugetlb, pfn.add(sub))
            }
            Pmd::Huge { pfn, .. } => (MapKind::ThpPmd, pfn.add(sub)),
            Pmd::Migration { pfn, .. } => (MapKind::Migration, pfn.add(sub)),
            Pmd::Table(t) => match Pte::decode(self.table(t).raw(g.index(Level::Pte, addr)).load())
            {
                Pte::None => return none,
                Pte::Present { pfn, .. } if self.is_zero_pfn(pfn) => (MapKind::Zero, pfn),
                Pte::Present { pfn, .. } if self.page_compound(pfn) => (MapKind::ThpPte, pfn),
                Pte::Present { pfn, .. } => (MapKind::Base, pfn),
                Pte::Migration { pfn, .. } => (MapKind::Migration, pfn),
                Pte::Swap(e) => {
                    return PageInfo {
                        kind: MapKind::Swap,
                        swap: Some(e),
                        ..none
                    }
                }
            },
        };
        let head = self.page_compound(pfn).then(|| self.compound_head(pfn));
        PageInfo {
            kind,
            pfn: Some(pfn),
            head,
            mapcount: self.thp().page_mapcount(self, pfn),
            node: Some(self.page(pfn).node),
            swap: None,
        }
    }

    /// Whether the page at `addr` is mlocked as /proc shows it: the VMA is
    /// VM_LOCKED (smaps' `Locked:`) and the page PageMlocked (KPF_MLOCKED,
    /// the head's flag for a THP subpage).
    pub fn page_is_mlocked(&self, mm: &MmStruct<E>, addr: VirtAddr) -> bool {
        let locked = mm
            .vma_at(addr)
            .is_some_and(|v| v.vm_flags() & crate::mm_types::vm::LOCKED != 0);
        let info = self.page_info(mm, addr);
        let frame = match info.kind {
            MapKind::Base | MapKind::ThpPmd | MapKind::ThpPte => info.head.or(info.pfn),
            _ => None,
        };
        locked && frame.is_some_and(|f| self.page(f).test_flag_peek(crate::page::pg::MLOCKED))
    }

    /// The frame `mm` maps at `addr` (a present PTE or a huge PMD's subpage),
    /// read for checkers: no scheduling point, nothing made. A checker that
    /// runs inside a step (the memory oracle's view of a device write) uses
    /// this, so it never adds an interleaving.
    pub fn frame_peek(&self, mm: &MmStruct<E>, addr: VirtAddr) -> Option<Pfn> {
        let g = self.k.geo;
        let Upper::Table(pud_t) = Upper::decode(mm.pgd.peek(g.index(Level::Pgd, addr))) else {
            return None;
        };
        let Upper::Table(pmd_t) = Upper::decode(self.table(pud_t).peek(g.index(Level::Pud, addr)))
        else {
            return None;
        };
        match Pmd::decode(self.table(pmd_t).peek(g.index(Level::Pmd, addr))) {
            Pmd::Huge { pfn, .. } => Some(pfn.add(g.index(Level::Pte, addr) as u64)),
            Pmd::Table(t) => Pte::decode(self.table(t).peek(g.index(Level::Pte, addr))).pfn(),
            Pmd::None | Pmd::Migration { .. } => None,
        }
    }

    /// The frame a read of `addr` would see, for checkers: the one mapped
    /// there, a swapped-out page's swap cache page (a swap-in would map it),
    /// or, for a shared file mapping that does not map it yet, the file's
    /// cached page there (a fault would map it). None: it reads as zero, or
    /// as its slot on the swap device.
    pub fn frame_for_read(&self, mm: &MmStruct<E>, addr: VirtAddr) -> Option<Pfn> {
        let info = self.page_info(mm, addr);
        if let Some(pfn) = info.pfn {
            return Some(pfn);
        }
        if let Some(e) = info.swap {
            // A swapped-out page reads as its swap cache page, if any.
            return self.k.swap.as_ref()?.peek_cache(e.0);
        }
        let vma = mm.vma_at(addr)?;
        let file = vma.vm_file?;
        if vma.vm_flags() & crate::mm_types::vm::MAYSHARE == 0 {
            return None;
        }
        let g = self.k.geo;
        let inode = self.k.all_files().into_iter().find(|f| f.id == file)?;
        if inode.shmem {
            let idx = vma.linear_page_index(addr, g.page_shift);
            return inode.cached().get(&idx).copied();
        }
        let idx = self.vma_hugecache_offset(&vma, addr);
        let head = inode.cached().get(&idx).copied()?;
        Some(head.add(g.index(Level::Pte, addr) as u64))
    }

    /// The bytes of the page at `page_addr` as a read would see them, without
    /// faulting (unmapped pages read as zero, or as their file's page).
    pub fn peek_page(&self, mm: &MmStruct<E>, page_addr: VirtAddr) -> Vec<u8> {
        let ps = self.k.geo.page_size();
        match self.frame_for_read(mm, page_addr) {
            Some(pfn) => crate::page::read_page(self.k.mem.words(pfn)),
            None => self
                .swapped_bytes(mm, page_addr)
                .unwrap_or_else(|| vec![0; ps as usize]),
        }
    }

    /// The device's copy of a swapped-out page not in the swap cache (a
    /// slot never written reads as zeros, as swap_readpage() has it).
    fn swapped_bytes(&self, mm: &MmStruct<E>, addr: VirtAddr) -> Option<Vec<u8>> {
        let e = self.page_info(mm, addr).swap?;
        let si = self.k.swap.as_ref()?;
        Some(
            si.peek_slot_bytes(e.0)
                .map(|b| b.to_vec())
                .unwrap_or_else(|| vec![0; self.k.geo.page_size() as usize]),
        )
    }

    /// The byte a read of `addr` would return, without faulting: a page that is
    /// not mapped reads as zero (it would be zero-filled on demand), or as its
    /// file's page.
    pub fn peek_byte(&self, mm: &MmStruct<E>, addr: VirtAddr) -> u8 {
        let off = addr.0 & (self.k.geo.page_size() - 1);
        match self.frame_for_read(mm, addr) {
            Some(pfn) => crate::page::read_byte(self.k.mem.words(pfn), off),
            None => self.swapped_bytes(mm, addr).map_or(0, |b| b[off as usize]),
        }
    }
}
