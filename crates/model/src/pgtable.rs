//! Page tables: typed entries, the tables themselves and their split locks.
//!
//! Models: include/linux/pgtable.h, arch/x86/include/asm/pgtable.h and
//! mm/pgtable-generic.c (v5.8): four levels (PGD, PUD, PMD, PTE; p4d folded),
//! entries read and written atomically because the MMU walks them without locks,
//! huge PMDs, migration entries, the split page-table locks (`ptlock_ptr` of the
//! table page: `pte_lockptr` and, with split PMD locks, `pmd_lockptr`), and the
//! deposited page tables of huge PMDs (`pgtable_trans_huge_deposit/withdraw`).
//! A page table occupies a frame of physical memory, as in Linux.
//!
//! An entry is an enum ([`Pte`], [`Pmd`], [`Upper`]); it is stored as a `u64` in
//! an engine atomic so each read or write is one scheduling point.
//!
//! Leaves out: soft-dirty, uffd-wp, NUMA hinting (PROT_NONE is only mprotect's),
//! devmap, PUD-level THP.

use crate::cpu::Cpu;
use crate::engine::{Atomic, Engine};
use crate::sync::{LockClass, SpinLock};
use crate::types::Pfn;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Permission and status bits of a present leaf entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
pub struct PteFlags {
    /// _PAGE_RW.
    pub write: bool,
    /// _PAGE_DIRTY.
    pub dirty: bool,
    /// _PAGE_ACCESSED (`pte_young`).
    pub young: bool,
    /// _PAGE_PROTNONE: present for the kernel, not accessible to the MMU.
    pub protnone: bool,
    /// _PAGE_SPECIAL (the zero page).
    pub special: bool,
    /// _PAGE_SPLITTING (v3.16, arch/x86/include/asm/pgtable_types.h:
    /// _PAGE_BIT_SOFTW2, "only valid on a PSE pmd"): the huge PMD is under
    /// split_huge_page() (`pmd_trans_splitting()`). A software bit the MMU
    /// ignores. Only the `kernel 3.16` profile sets it; 5.8 has no such bit.
    pub splitting: bool,
}

/// _PAGE_RW, _PAGE_DIRTY and _PAGE_ACCESSED in the model's encoding of a
/// present entry.
pub const PAGE_RW: u64 = 1 << 3;
pub const PAGE_DIRTY: u64 = 1 << 4;
pub const PAGE_ACCESSED: u64 = 1 << 5;

impl PteFlags {
    fn bits(self) -> u64 {
        (self.write as u64) << PAGE_RW.trailing_zeros()
            | (self.dirty as u64) << PAGE_DIRTY.trailing_zeros()
            | (self.young as u64) << PAGE_ACCESSED.trailing_zeros()
            | (self.protnone as u64) << 6
            | (self.special as u64) << 7
            | (self.splitting as u64) << SPLITTING.trailing_zeros()
    }
    fn from_bits(v: u64) -> Self {
        PteFlags {
            write: v & PAGE_RW != 0,
            dirty: v & PAGE_DIRTY != 0,
            young: v & PAGE_ACCESSED != 0,
            protnone: v & (1 << 6) != 0,
            special: v & (1 << 7) != 0,
            splitting: v & SPLITTING != 0,
        }
    }
}

/// A swap entry (the swap device comes in a later issue; only its encoding is here).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub struct SwapEntry(pub u64);

const KIND_NONE: u64 = 0;
const KIND_TABLE: u64 = 1;
const KIND_PAGE: u64 = 2;
const KIND_SWAP: u64 = 3;
const KIND_MIGRATION: u64 = 4;
const KIND_MASK: u64 = 7;
/// The "invalid" bit of a huge PMD that pmdp_invalidate() cleared: _PAGE_PRESENT
/// is off but _PAGE_PSE stays, so pmd_present() and pmd_trans_huge() still hold
/// while the MMU faults.
const INVALID: u64 = 1 << 8;
/// _PAGE_SPLITTING of a huge PMD (v3.16; see [`PteFlags::splitting`]).
pub(crate) const SPLITTING: u64 = 1 << 9;
const MIG_WRITE: u64 = 1 << 3;
const PFN_SHIFT: u32 = 16;

/// A PTE (`pte_t`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub enum Pte {
    None,
    Present {
        pfn: Pfn,
        flags: PteFlags,
    },
    Swap(SwapEntry),
    /// A migration entry (`make_migration_entry(page, write)`).
    Migration {
        pfn: Pfn,
        write: bool,
    },
}

/// A PMD (`pmd_t`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub enum Pmd {
    None,
    /// Points to a PTE table.
    Table(Pfn),
    /// A huge PMD mapping a PMD-size page. `invalid` after pmdp_invalidate().
    Huge {
        pfn: Pfn,
        flags: PteFlags,
        invalid: bool,
    },
    /// A PMD migration entry.
    Migration {
        pfn: Pfn,
        write: bool,
    },
}

/// A PUD or PGD entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub enum Upper {
    None,
    Table(Pfn),
}

fn pfn_bits(pfn: Pfn) -> u64 {
    pfn.0 << PFN_SHIFT
}
fn bits_pfn(v: u64) -> Pfn {
    Pfn(v >> PFN_SHIFT)
}

impl Pte {
    pub fn encode(self) -> u64 {
        match self {
            Pte::None => KIND_NONE,
            Pte::Present { pfn, flags } => KIND_PAGE | flags.bits() | pfn_bits(pfn),
            Pte::Swap(e) => KIND_SWAP | (e.0 << PFN_SHIFT),
            Pte::Migration { pfn, write } => {
                KIND_MIGRATION | if write { MIG_WRITE } else { 0 } | pfn_bits(pfn)
            }
        }
    }
    pub fn decode(v: u64) -> Pte {
        match v & KIND_MASK {
            KIND_PAGE => Pte::Present {
                pfn: bits_pfn(v),
                flags: PteFlags::from_bits(v),
            },
            KIND_SWAP => Pte::Swap(SwapEntry(v >> PFN_SHIFT)),
            KIND_MIGRATION => Pte::Migration {
                pfn: bits_pfn(v),
                write: v & MIG_WRITE != 0,
            },
            _ => Pte::None,
        }
    }
    /// pte_none().
    pub fn is_none(self) -> bool {
        self == Pte::None
    }
    /// pte_present() (true for PROT_NONE entries too).
    pub fn is_present(self) -> bool {
        matches!(self, Pte::Present { .. })
    }
    /// pte_write().
    pub fn is_write(self) -> bool {
        matches!(self, Pte::Present { flags, .. } if flags.write)
    }
    /// pte_pfn() of a present entry.
    pub fn pfn(self) -> Option<Pfn> {
        match self {
            Pte::Present { pfn, .. } => Some(pfn),
            _ => None,
        }
    }
    pub fn flags(self) -> PteFlags {
        match self {
            Pte::Present { flags, .. } => flags,
            _ => PteFlags::default(),
        }
    }
    /// Returns the entry with `f` applied to its flags (pte_mkwrite() and co.).
    pub fn with_flags(self, f: impl FnOnce(&mut PteFlags)) -> Pte {
        match self {
            Pte::Present { pfn, mut flags } => {
                f(&mut flags);
                Pte::Present { pfn, flags }
            }
            other => other,
        }
    }
}

impl Pmd {
    pub fn encode(self) -> u64 {
        match self {
            Pmd::None => KIND_NONE,
            Pmd::Table(pfn) => KIND_TABLE | pfn_bits(pfn),
            Pmd::Huge {
                pfn,
                flags,
                invalid,
            } => KIND_PAGE | flags.bits() | if invalid { INVALID } else { 0 } | pfn_bits(pfn),
            Pmd::Migration { pfn, write } => {
                KIND_MIGRATION | if write { MIG_WRITE } else { 0 } | pfn_bits(pfn)
            }
        }
    }
    pub fn decode(v: u64) -> Pmd {
        match v & KIND_MASK {
            KIND_TABLE => Pmd::Table(bits_pfn(v)),
            KIND_PAGE => Pmd::Huge {
                pfn: bits_pfn(v),
                flags: PteFlags::from_bits(v),
                invalid: v & INVALID != 0,
            },
            KIND_MIGRATION => Pmd::Migration {
                pfn: bits_pfn(v),
                write: v & MIG_WRITE != 0,
            },
            _ => Pmd::None,
        }
    }
    /// pmd_none().
    pub fn is_none(self) -> bool {
        self == Pmd::None
    }
    /// pmd_trans_huge() (true for an invalidated huge PMD too).
    pub fn is_trans_huge(self) -> bool {
        matches!(self, Pmd::Huge { .. })
    }
    /// is_pmd_migration_entry().
    pub fn is_migration(self) -> bool {
        matches!(self, Pmd::Migration { .. })
    }
    /// pmd_trans_splitting() (v3.16): a huge PMD with _PAGE_SPLITTING.
    pub fn is_trans_splitting(self) -> bool {
        matches!(self, Pmd::Huge { flags, .. } if flags.splitting)
    }
    /// is_swap_pmd(): a non-present, non-none PMD (migration entries here).
    pub fn is_swap_pmd(self) -> bool {
        self.is_migration()
    }
    /// pmd_present(): x86 counts _PAGE_PSE, so an invalidated huge PMD is present.
    pub fn is_present(self) -> bool {
        matches!(self, Pmd::Table(_) | Pmd::Huge { .. })
    }
    /// pmd_write().
    pub fn is_write(self) -> bool {
        matches!(self, Pmd::Huge { flags, .. } if flags.write)
    }
    /// The flags of a huge PMD (default for other entries).
    pub fn flags(self) -> PteFlags {
        match self {
            Pmd::Huge { flags, .. } => flags,
            _ => PteFlags::default(),
        }
    }
    /// pmd_page() of a huge PMD.
    pub fn huge_pfn(self) -> Option<Pfn> {
        match self {
            Pmd::Huge { pfn, .. } => Some(pfn),
            _ => None,
        }
    }
    pub fn with_flags(self, f: impl FnOnce(&mut PteFlags)) -> Pmd {
        match self {
            Pmd::Huge {
                pfn,
                mut flags,
                invalid,
            } => {
                f(&mut flags);
                Pmd::Huge {
                    pfn,
                    flags,
                    invalid,
                }
            }
            other => other,
        }
    }
}

impl Upper {
    pub fn encode(self) -> u64 {
        match self {
            Upper::None => KIND_NONE,
            Upper::Table(pfn) => KIND_TABLE | pfn_bits(pfn),
        }
    }
    pub fn decode(v: u64) -> Upper {
        match v & KIND_MASK {
            KIND_TABLE => Upper::Table(bits_pfn(v)),
            _ => Upper::None,
        }
    }
}

/// The contents of a frame used as a page table.
///
/// Entries are made on first use (a table's empty entries cost no engine
/// object: the tiny geometry's PGD has 512 of them, most never touched); an
/// entry never made reads as 0 (none).
pub struct TableBody<E: Engine> {
    entries: Box<[OnceLock<E::Atomic>]>,
    /// Entries possibly changed since the quiescent-point checkers last
    /// took them ([`TableBody::take_changed`]): set by every access that can
    /// write one ([`TableBody::raw`], [`TableBody::made`]).
    changed: EntryBits,
    /// Entries ever made (the ones [`TableBody::present`] visits), so that a
    /// checker's walk of a wide table (the tiny geometry's PGD of 512
    /// entries) reads the few made rather than every slot.
    made: EntryBits,
    /// The split page-table lock (`ptlock_ptr(page)`).
    pub ptl: SpinLock<E>,
    /// `pmd_huge_pte`: page tables deposited for the huge PMDs of this PMD table
    /// (mm/pgtable-generic.c keeps them as a list on the PMD table page).
    pub deposited: Mutex<Vec<Pfn>>,
}

/// A set of a table's entry indices: one bit an entry. Checker bookkeeping
/// in std atomics: never a scheduling point, never read by the model.
/// Entries 0..64 in `lo` (no allocation for a small table), the rest in `hi`.
struct EntryBits {
    lo: AtomicU64,
    hi: Box<[AtomicU64]>,
}

impl EntryBits {
    fn new(entries: usize) -> Self {
        EntryBits {
            lo: AtomicU64::new(0),
            hi: (1..entries.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
    fn copy(&self) -> Self {
        EntryBits {
            lo: AtomicU64::new(self.lo.load(Ordering::Relaxed)),
            hi: self
                .hi
                .iter()
                .map(|w| AtomicU64::new(w.load(Ordering::Relaxed)))
                .collect(),
        }
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        match i / 64 {
            0 => &self.lo,
            n => &self.hi[n - 1],
        }
    }
    /// Adds `i` (a load, and an atomic OR only if it is not in yet).
    fn insert(&self, i: usize) {
        let w = self.word(i);
        let bit = 1u64 << (i % 64);
        if w.load(Ordering::Relaxed) & bit == 0 {
            w.fetch_or(bit, Ordering::Relaxed);
        }
    }
    /// The words with their first index; `take` empties them as it reads.
    fn words(&self, take: bool) -> impl Iterator<Item = (usize, u64)> + '_ {
        std::iter::once(&self.lo)
            .chain(self.hi.iter())
            .enumerate()
            .map(move |(wi, w)| {
                let bits = match w.load(Ordering::Relaxed) {
                    0 => 0,
                    b if !take => b,
                    _ => w.swap(0, Ordering::Relaxed),
                };
                (wi * 64, bits)
            })
    }
    /// The indices in the set, in order (emptying it if `take`).
    fn indices(&self, take: bool) -> impl Iterator<Item = usize> + '_ {
        self.words(take).flat_map(|(base, mut bits)| {
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let i = base + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    i
                })
            })
        })
    }
}

impl<E: Engine> TableBody<E> {
    pub fn new(entries: usize) -> Self {
        TableBody {
            entries: (0..entries).map(|_| OnceLock::new()).collect(),
            changed: EntryBits::new(entries),
            made: EntryBits::new(entries),
            ptl: SpinLock::new(LockClass::PageTableLock),
            deposited: Mutex::new(Vec::new()),
        }
    }
    /// A copy of the table for a copy of the machine (`Page::snapshot`,
    /// `MmStruct::snapshot`): every entry that was made, with its value read
    /// without a scheduling point (entries never made stay unmade), the
    /// split lock (free: a copy is made at a quiescent point) and the
    /// deposited page tables. Entries are made in index order, then the lock.
    pub fn snapshot(&self) -> Self {
        let entries = self
            .entries
            .iter()
            .map(|e| match e.get() {
                Some(a) => OnceLock::from(E::Atomic::new(a.peek())),
                None => OnceLock::new(),
            })
            .collect();
        TableBody {
            entries,
            changed: self.changed.copy(),
            made: self.made.copy(),
            ptl: self.ptl.snapshot(),
            deposited: Mutex::new(
                self.deposited
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
        }
    }
    /// Entry `i`, made (empty) if it was never used.
    pub fn raw(&self, i: usize) -> &E::Atomic {
        self.note_changed(i);
        match self.entries[i].get() {
            Some(a) => a,
            None => {
                self.made.insert(i);
                self.entries[i].get_or_init(|| E::Atomic::new(0))
            }
        }
    }
    /// Marks entry `i` as possibly changed (a load, and an atomic OR the
    /// first time since the checkers took the marks).
    fn note_changed(&self, i: usize) {
        self.changed.insert(i);
    }
    /// The entries possibly changed since the last call (in index order),
    /// and forgets them: for the quiescent-point checkers
    /// (`check::watch`), which are their one reader.
    pub fn take_changed(&self) -> Vec<usize> {
        self.changed.indices(true).collect()
    }
    /// The entries ever made and not 0 now, as (index, value) in index
    /// order, read as [`TableBody::peek`] reads them: for checkers, which
    /// treat every other entry as none.
    pub fn present(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.made
            .indices(false)
            .map(|i| (i, self.peek(i)))
            .filter(|&(_, v)| v != 0)
    }
    /// Entry `i` if it was ever made. For a walk that may treat an entry never
    /// made as none without reading it: one under a lock that keeps entries
    /// from being made (free_pgtables() under mmap_lock for write, or of an
    /// mm no one else uses), or one of a frame no other CPU can reach yet.
    pub fn made(&self, i: usize) -> Option<&E::Atomic> {
        let e = self.entries[i].get();
        if e.is_some() {
            self.note_changed(i);
        }
        e
    }
    /// Entry `i`'s value for checkers: no scheduling point, nothing made.
    pub fn peek(&self, i: usize) -> u64 {
        self.entries[i].get().map_or(0, |a| a.peek())
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A pointer to one entry of a table (`pte_t *`, `pmd_t *`): the table's frame
/// and the index in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Serialize)]
pub struct EntryRef {
    pub table: Pfn,
    pub index: usize,
}

// The arch helpers that change a live entry which the MMU may be updating at
// the same time (it sets _PAGE_ACCESSED and _PAGE_DIRTY with a locked cmpxchg,
// mmu.rs). A read followed by a plain store would lose a bit the MMU set in
// between; x86 changes such entries with one atomic read-modify-write.
impl<E: Engine> Cpu<E> {
    /// Models ptep_set_wrprotect(), arch/x86/include/asm/pgtable.h, v5.8:
    /// `clear_bit(_PAGE_BIT_RW, &ptep->pte)`, one atomic operation, so an
    /// accessed or dirty bit the MMU sets concurrently is kept.
    ///
    /// # Locking
    /// Called with the PTE lock held (as every caller in the kernel is); the
    /// MMU does not take it.
    pub fn ptep_set_wrprotect(&self, ptep: EntryRef) {
        self.table(ptep.table).raw(ptep.index).fetch_and(!PAGE_RW);
    }

    /// Models pmdp_set_wrprotect(), arch/x86/include/asm/pgtable.h, v5.8:
    /// `clear_bit(_PAGE_BIT_RW, pmdp)`, one atomic operation.
    ///
    /// # Locking
    /// Called with the PMD lock held; the MMU does not take it.
    pub fn pmdp_set_wrprotect(&self, pmdp: EntryRef) {
        self.table(pmdp.table).raw(pmdp.index).fetch_and(!PAGE_RW);
    }

    /// Models ptep_test_and_clear_young()/ptep_clear_flush_young(),
    /// arch/x86/mm/pgtable.c, v5.8: clear _PAGE_ACCESSED of a present entry
    /// with one atomic operation; whether it was set. x86 does not flush the
    /// TLB for it ("clearing the accessed bit without a TLB flush doesn't
    /// cause data corruption"): a CPU that caches the entry goes on using it
    /// without setting the bit again.
    ///
    /// # Locking
    /// Called with the entry's page-table lock held; the MMU does not take it.
    pub fn ptep_test_and_clear_young(&self, ptep: EntryRef) -> bool {
        let raw = self.table(ptep.table).raw(ptep.index);
        let v = raw.load();
        if !Pte::decode(v).is_present() || v & PAGE_ACCESSED == 0 {
            return false;
        }
        raw.fetch_and(!PAGE_ACCESSED) & PAGE_ACCESSED != 0
    }

    /// Models pmdp_test_and_clear_young()/pmdp_clear_flush_young(),
    /// arch/x86/mm/pgtable.c, v5.8, of a huge PMD (5.8 flushes the TLB
    /// range when the bit was set).
    ///
    /// # Locking
    /// Called with the PMD lock held.
    pub fn pmdp_test_and_clear_young(&self, pmdp: EntryRef) -> bool {
        let raw = self.table(pmdp.table).raw(pmdp.index);
        let v = raw.load();
        if !matches!(Pmd::decode(v), Pmd::Huge { .. }) || v & PAGE_ACCESSED == 0 {
            return false;
        }
        raw.fetch_and(!PAGE_ACCESSED) & PAGE_ACCESSED != 0
    }

    /// Models ptep_set_access_flags(), arch/x86/mm/pgtable.c, v5.8: install
    /// `entry` (the old one plus accessed, dirty or write) only when `dirty`
    /// (a write fault); a read fault leaves the accessed bit to the MMU, so no
    /// store can overwrite a dirty bit it set. No TLB flush: the entry only
    /// became more permissive, and a CPU that still caches the old one takes a
    /// spurious fault, which invalidates it. Returns whether the entry
    /// differed.
    ///
    /// # Locking
    /// Called with the PTE lock held.
    pub fn ptep_set_access_flags(&self, ptep: EntryRef, entry: Pte, dirty: bool) -> bool {
        let changed = self.pte_read(ptep) != entry;
        if changed && dirty {
            self.set_pte_at(ptep, entry); // set_pte()
        }
        changed
    }

    /// Models pmdp_set_access_flags(), arch/x86/mm/pgtable.c, v5.8: as
    /// [`Cpu::ptep_set_access_flags`] for a huge PMD; `haddr` is PMD-aligned.
    ///
    /// # Locking
    /// Called with the PMD lock held.
    pub fn pmdp_set_access_flags(
        &self,
        haddr: crate::types::VirtAddr,
        pmdp: EntryRef,
        entry: Pmd,
        dirty: bool,
    ) -> bool {
        let changed = self.pmd_read(pmdp) != entry;
        crate::vm_bug_on!(
            self,
            haddr.0 & (self.k.geo.pmd_size() - 1) != 0,
            "VM_BUG_ON(address & ~HPAGE_PMD_MASK)"
        );
        if changed && dirty {
            // We had a write-protection fault here and changed the pmd to
            // more permissive. No need to flush the TLB for that, #PF is
            // architecturally guaranteed to do that and in the worst-case
            // we'll generate a spurious fault.
            self.set_pmd_at(pmdp, entry); // set_pmd()
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Kernel, ShuttleEngine};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// What the MMU does to an entry on a write access (mmu.rs, hw_walk): if
    /// the entry allows the write, set accessed and dirty with a cmpxchg,
    /// walking again if the entry changed. Returns whether it set them (else
    /// the access faults).
    fn mmu_write_access(slot: &impl Atomic) -> bool {
        loop {
            let raw = slot.load();
            if raw & PAGE_RW == 0 {
                return false;
            }
            let want = raw | PAGE_ACCESSED | PAGE_DIRTY;
            if raw == want || slot.compare_exchange(raw, want).is_ok() {
                return true;
            }
        }
    }

    /// fork's write-protect of a PTE and of a huge PMD races a write access
    /// of another CPU that sets the dirty bit: in every interleaving the entry
    /// ends read-only, and dirty exactly when the MMU's write went through.
    #[test]
    fn present_visits_the_entries_made_and_not_none_in_order() {
        let t = TableBody::<crate::StdEngine>::new(200);
        assert_eq!(t.present().count(), 0);
        Atomic::store(t.raw(130), 7);
        Atomic::store(t.raw(3), 5);
        Atomic::store(t.raw(64), 0); // made, but none
        assert_eq!(t.present().collect::<Vec<_>>(), vec![(3, 5), (130, 7)]);
        assert_eq!(t.take_changed(), vec![3, 64, 130]);
        assert!(t.take_changed().is_empty(), "taken");
        Atomic::store(t.raw(64), 9);
        let c = t.snapshot();
        assert_eq!(
            c.present().collect::<Vec<_>>(),
            vec![(3, 5), (64, 9), (130, 7)]
        );
        assert_eq!(
            t.present().collect::<Vec<_>>(),
            c.present().collect::<Vec<_>>()
        );
    }

    #[test]
    fn wrprotect_keeps_a_dirty_bit_the_mmu_sets_concurrently() {
        static OUTCOMES: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
        shuttle::check_random(
            || {
                let k = Kernel::<ShuttleEngine>::new(Config::new(Geometry::TINY));
                let cpu = Cpu::new(k.clone(), CpuId(0));
                let pte = EntryRef {
                    table: cpu.pte_alloc_one().expect("pte table"),
                    index: 1,
                };
                let pmd = EntryRef {
                    table: cpu.pte_alloc_one().expect("pmd table"),
                    index: 2,
                };
                let rw = PteFlags {
                    write: true,
                    ..PteFlags::default()
                };
                cpu.set_pte_at(
                    pte,
                    Pte::Present {
                        pfn: Pfn(40),
                        flags: rw,
                    },
                );
                cpu.set_pmd_at(
                    pmd,
                    Pmd::Huge {
                        pfn: Pfn(64),
                        flags: rw,
                        invalid: false,
                    },
                );
                let mmu = shuttle::thread::spawn(move || {
                    let other = Cpu::new(k, CpuId(1));
                    let p = mmu_write_access(other.table(pte.table).raw(pte.index));
                    let h = mmu_write_access(other.table(pmd.table).raw(pmd.index));
                    (p, h)
                });
                cpu.ptep_set_wrprotect(pte);
                cpu.pmdp_set_wrprotect(pmd);
                let (pte_dirtied, pmd_dirtied) = mmu.join().expect("mmu thread");
                let (p, h) = (cpu.pte_read(pte), cpu.pmd_read(pmd));
                assert!(!p.is_write() && !h.is_write(), "{p:?} {h:?}");
                assert_eq!(p.flags().dirty, pte_dirtied, "PTE dirty bit: {p:?}");
                assert_eq!(p.pfn(), Some(Pfn(40)));
                let Pmd::Huge { flags, pfn, .. } = h else {
                    panic!("{h:?}");
                };
                assert_eq!((flags.dirty, pfn), (pmd_dirtied, Pfn(64)), "PMD: {h:?}");
                OUTCOMES[pte_dirtied as usize].fetch_add(1, SeqCst);
            },
            2000,
        );
        // Both orders were explored: the write before and after the protect.
        assert!(OUTCOMES.iter().all(|n| n.load(SeqCst) > 0));
    }

    /// A table copies the entries that were made, with their values, and
    /// leaves unmade the ones that were not (reading as none either way); its
    /// lock copies free, its deposited tables in order; on the exploration
    /// engine it reads through no scheduling point and makes exactly the
    /// made entries and the lock.
    #[test]
    fn a_table_copies_its_made_entries_and_deposits() {
        let t = TableBody::<crate::StdEngine>::new(4);
        Atomic::store(t.raw(1), Pmd::Table(Pfn(3)).encode());
        t.raw(3);
        t.deposited.lock().unwrap().extend([Pfn(5), Pfn(6)]);
        let c = t.snapshot();
        let made: Vec<bool> = c.entries.iter().map(|e| e.get().is_some()).collect();
        assert_eq!(made, vec![false, true, false, true]);
        assert_eq!(Pmd::decode(c.peek(1)), Pmd::Table(Pfn(3)));
        assert_eq!((c.peek(0), c.peek(3)), (0, 0));
        assert_eq!(*c.deposited.lock().unwrap(), vec![Pfn(5), Pfn(6)]);
        assert!(!c.ptl.is_locked());
        Atomic::store(c.raw(1), 0);
        assert_eq!(Pmd::decode(t.peek(1)), Pmd::Table(Pfn(3)), "independent");

        use crate::engine::footprint;
        ShuttleEngine::count_runnable();
        footprint::reset();
        let s = TableBody::<ShuttleEngine>::new(4);
        s.raw(2).store(9);
        footprint::reset();
        let c = s.snapshot();
        let hidden = footprint::take_hidden();
        let objects = footprint::next_id();
        ShuttleEngine::stop_counting();
        footprint::stop();
        assert!(hidden.is_empty(), "{hidden:?}");
        assert_eq!(objects, 2, "one made entry and the lock");
        assert_eq!(c.peek(2), 9);
    }

    #[test]
    fn entries_round_trip() {
        let f = PteFlags {
            write: true,
            dirty: true,
            young: false,
            protnone: false,
            special: true,
            splitting: false,
        };
        for pte in [
            Pte::None,
            Pte::Present {
                pfn: Pfn(77),
                flags: f,
            },
            Pte::Swap(SwapEntry(5)),
            Pte::Migration {
                pfn: Pfn(9),
                write: true,
            },
        ] {
            assert_eq!(Pte::decode(pte.encode()), pte);
        }
        for pmd in [
            Pmd::None,
            Pmd::Table(Pfn(3)),
            Pmd::Huge {
                pfn: Pfn(512),
                flags: f,
                invalid: true,
            },
            Pmd::Huge {
                pfn: Pfn(512),
                flags: PteFlags {
                    splitting: true,
                    ..f
                },
                invalid: false,
            },
            Pmd::Migration {
                pfn: Pfn(1024),
                write: false,
            },
        ] {
            assert_eq!(Pmd::decode(pmd.encode()), pmd);
        }
        assert!(Pmd::Huge {
            pfn: Pfn(1),
            flags: f,
            invalid: true
        }
        .is_present());
        assert!(!Pmd::Migration {
            pfn: Pfn(1),
            write: false
        }
        .is_present());
    }
}
