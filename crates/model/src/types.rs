//! Address and page-number newtypes, and the machine geometry.
//!
//! Models: the constants of arch/x86/include/asm/pgtable_64_types.h and
//! page_types.h (PAGE_SHIFT, PMD_SHIFT, PUD_SHIFT, PTRS_PER_*), made a run-time
//! parameter so one model runs both the real `x86_64` geometry and the `tiny`
//! one used for exploration. The kernel's logic never depends on the numbers.
//!
//! Leaves out: 5-level paging (p4d is folded, as on most x86_64 machines).

use serde::Serialize;
use std::fmt;

/// A user virtual address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct VirtAddr(pub u64);

impl fmt::Debug for VirtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl VirtAddr {
    pub fn add_bytes(self, bytes: u64) -> VirtAddr {
        VirtAddr(self.0 + bytes)
    }
}

/// A physical frame number (`pfn`), the index of a `struct page`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Pfn(pub u64);

impl fmt::Debug for Pfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pfn{}", self.0)
    }
}

impl Pfn {
    pub fn idx(self) -> usize {
        self.0 as usize
    }
    /// The frame `n` after this one (`page + n` in C).
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, n: u64) -> Pfn {
        Pfn(self.0 + n)
    }
}

/// A CPU of the model (a column of a race trace).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub struct CpuId(pub usize);

/// Identifies a process address space (`struct mm_struct`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub struct MmId(pub usize);

/// Identifies an `anon_vma`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub struct AnonVmaId(pub usize);

/// Identifies a `vm_area_struct` (unique for the life of a kernel).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub struct VmaId(pub usize);

/// Identifies a file (`struct inode` with its `address_space`): a hugetlbfs
/// file made by mmap(MAP_HUGETLB) or memfd_create(MFD_HUGETLB).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub struct FileId(pub usize);

/// Identifies a hugetlb reservation map (`struct resv_map`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize)]
pub struct ResvMapId(pub usize);

/// The page-table geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Geometry {
    pub name: &'static str,
    /// log2 of the base page size (PAGE_SHIFT).
    pub page_shift: u32,
    /// log2 of the entries in a PTE, PMD, PUD and PGD table.
    pub pte_bits: u32,
    pub pmd_bits: u32,
    pub pud_bits: u32,
    pub pgd_bits: u32,
}

impl Geometry {
    /// x86_64 with 4-level paging: 4 KiB pages, 512 entries a table.
    pub const X86_64: Geometry = Geometry {
        name: "x86_64",
        page_shift: 12,
        pte_bits: 9,
        pmd_bits: 9,
        pud_bits: 9,
        pgd_bits: 9,
    };
    /// Small tables for exploration: 64-byte pages, 4 entries in the PTE, PMD and
    /// PUD tables (a THP has 4 subpages), a 512-entry PGD for address space.
    pub const TINY: Geometry = Geometry {
        name: "tiny",
        page_shift: 6,
        pte_bits: 2,
        pmd_bits: 2,
        pud_bits: 2,
        pgd_bits: 9,
    };

    pub fn by_name(name: &str) -> Option<Geometry> {
        match name {
            "x86_64" => Some(Self::X86_64),
            "tiny" => Some(Self::TINY),
            _ => None,
        }
    }

    /// PAGE_SIZE.
    pub fn page_size(&self) -> u64 {
        1 << self.page_shift
    }
    /// PMD_SHIFT.
    pub fn pmd_shift(&self) -> u32 {
        self.page_shift + self.pte_bits
    }
    /// PUD_SHIFT.
    pub fn pud_shift(&self) -> u32 {
        self.pmd_shift() + self.pmd_bits
    }
    /// PGDIR_SHIFT.
    pub fn pgdir_shift(&self) -> u32 {
        self.pud_shift() + self.pud_bits
    }
    /// HPAGE_PMD_SIZE.
    pub fn pmd_size(&self) -> u64 {
        1 << self.pmd_shift()
    }
    /// PUD_SIZE.
    pub fn pud_size(&self) -> u64 {
        1 << self.pud_shift()
    }
    /// HPAGE_PMD_NR: base pages in a PMD-size huge page.
    pub fn hpage_pmd_nr(&self) -> u64 {
        1 << self.pte_bits
    }
    /// HPAGE_PMD_ORDER.
    pub fn hpage_pmd_order(&self) -> u32 {
        self.pte_bits
    }
    /// TASK_SIZE: the end of the user address space.
    pub fn task_size(&self) -> u64 {
        1 << (self.pgdir_shift() + self.pgd_bits)
    }
    /// Entries in a table at `level` (0 = PTE, 1 = PMD, 2 = PUD, 3 = PGD).
    pub fn ptrs(&self, level: Level) -> usize {
        1 << self.level_bits(level)
    }
    fn level_bits(&self, level: Level) -> u32 {
        match level {
            Level::Pte => self.pte_bits,
            Level::Pmd => self.pmd_bits,
            Level::Pud => self.pud_bits,
            Level::Pgd => self.pgd_bits,
        }
    }
    fn level_shift(&self, level: Level) -> u32 {
        match level {
            Level::Pte => self.page_shift,
            Level::Pmd => self.pmd_shift(),
            Level::Pud => self.pud_shift(),
            Level::Pgd => self.pgdir_shift(),
        }
    }
    /// pte_index()/pmd_index()/pud_index()/pgd_index().
    pub fn index(&self, level: Level, addr: VirtAddr) -> usize {
        ((addr.0 >> self.level_shift(level)) & ((1 << self.level_bits(level)) - 1)) as usize
    }
    /// addr & HPAGE_PMD_MASK.
    pub fn pmd_align_down(&self, addr: VirtAddr) -> VirtAddr {
        VirtAddr(addr.0 & !(self.pmd_size() - 1))
    }
    /// addr & PAGE_MASK.
    pub fn page_align_down(&self, addr: VirtAddr) -> VirtAddr {
        VirtAddr(addr.0 & !(self.page_size() - 1))
    }
    /// pmd_addr_end(): the end of the PMD containing `addr`, capped at `end`.
    pub fn pmd_addr_end(&self, addr: VirtAddr, end: VirtAddr) -> VirtAddr {
        let boundary = (addr.0 + self.pmd_size()) & !(self.pmd_size() - 1);
        if boundary.wrapping_sub(1) < end.0.wrapping_sub(1) {
            VirtAddr(boundary)
        } else {
            end
        }
    }
    /// Virtual page number.
    pub fn vpn(&self, addr: VirtAddr) -> u64 {
        addr.0 >> self.page_shift
    }
}

/// A page-table level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Level {
    Pte,
    Pmd,
    Pud,
    Pgd,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_sizes() {
        let g = Geometry::X86_64;
        assert_eq!(g.page_size(), 4096);
        assert_eq!(g.pmd_size(), 2 << 20);
        assert_eq!(g.pud_size(), 1 << 30);
        assert_eq!(g.hpage_pmd_nr(), 512);
        assert_eq!(g.task_size(), 1 << 48);
        assert_eq!(g.index(Level::Pmd, VirtAddr(3 << 21)), 3);
    }

    #[test]
    fn tiny_sizes() {
        let g = Geometry::TINY;
        assert_eq!(g.page_size(), 64);
        assert_eq!(g.pmd_size(), 256);
        assert_eq!(g.hpage_pmd_nr(), 4);
        assert_eq!(g.pud_size(), 1024);
        assert_eq!(g.pmd_addr_end(VirtAddr(300), VirtAddr(2000)), VirtAddr(512));
        assert_eq!(g.pmd_addr_end(VirtAddr(300), VirtAddr(400)), VirtAddr(400));
    }
}
