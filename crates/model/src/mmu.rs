//! The software MMU: per-CPU TLBs, the hardware page-table walk, user reads and
//! writes, the page-fault entry, and TLB flushes.
//!
//! Models: what an x86_64 CPU does on a user access (TLB lookup; on a miss, a
//! walk of the page tables without locks that sets the accessed and dirty bits
//! with an atomic compare-and-exchange; a fault when the entry is missing or
//! forbids the access), do_user_addr_fault() of arch/x86/mm/fault.c (v5.8), and
//! the TLB flush primitives of arch/x86/mm/tlb.c (flush_tlb_range,
//! flush_tlb_mm, flush_tlb_page) as immediate shootdowns of every CPU's TLB.
//!
//! A TLB keeps a translation until it is flushed or evicted, so a missing flush
//! shows up as a stale translation, as on hardware. Its shape is x86's
//! first-level data TLB ([`Tlb`]): a bounded number of entries, separate ones
//! for 4 KiB and 2 MiB pages, so a flush costs what the TLB holds, never what
//! the address space spans.
//!
//! A CPU may run with interrupts disabled (`local_irq_save()`, which GUP-fast
//! does around its lockless walk, mm/gup.c): a shootdown's IPI to it is then
//! handled, and the flush completes, only when it enables them again. That
//! is what keeps page tables and pages from being freed, and THPs from being
//! split, under the lockless walk: x86 frees page tables and pages after the
//! flush (mmu_gather), and splitting a THP flushes its mappings first.
//!
//! Leaves out: the second-level TLB (STLB), 1 GiB entries, PCIDs, lazy TLB mode, batched unmap flushes, the paging-structure
//! caches, stack expansion, protection keys.

use crate::cpu::Cpu;
use crate::engine::footprint::Obj;
use crate::engine::{Atomic, Engine, Monitor};
use crate::memory::{FaultFlags, VmFault};
use crate::mm_types::{vm, MmStruct};
use crate::page::{fill_bytes, read_byte, write_byte};
use crate::pgtable::{Pmd, Pte, Upper};
use crate::types::{Level, MmId, Pfn, VirtAddr};
use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// One cached translation of a base page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    pub pfn: Pfn,
    pub write: bool,
}

/// Entries for 4 KiB pages: 16 sets of 4 ways, as the first-level data TLB of
/// recent x86 cores (64 entries, 4-way).
pub const TLB_BASE_SETS: usize = 16;
/// Entries for 2 MiB pages: 8 sets of 4 ways (32 entries, 4-way).
pub const TLB_HUGE_SETS: usize = 8;
/// Ways of a set.
pub const TLB_WAYS: usize = 4;

/// One way of a set: the translation of one page (a base page, or a whole
/// huge page), and when it was last used (for LRU replacement).
#[derive(Clone, Copy, Debug)]
struct Way {
    mm: MmId,
    /// The virtual page number: of a base page, or of the huge page
    /// (address >> PMD_SHIFT).
    vpn: u64,
    entry: TlbEntry,
    used: u64,
}

/// A set-associative array of translations, LRU within a set.
#[derive(Clone, Debug)]
struct TlbArray<const SETS: usize> {
    sets: [[Option<Way>; TLB_WAYS]; SETS],
}

impl<const SETS: usize> Default for TlbArray<SETS> {
    fn default() -> Self {
        TlbArray {
            sets: [[None; TLB_WAYS]; SETS],
        }
    }
}

impl<const SETS: usize> TlbArray<SETS> {
    fn set_of(vpn: u64) -> usize {
        (vpn % SETS as u64) as usize
    }

    fn get(&mut self, mm: MmId, vpn: u64, now: u64) -> Option<TlbEntry> {
        let set = &mut self.sets[Self::set_of(vpn)];
        let w = set
            .iter_mut()
            .flatten()
            .find(|w| w.mm == mm && w.vpn == vpn)?;
        w.used = now;
        Some(w.entry)
    }

    /// As `get`, without counting as a use (for checkers).
    fn peek(&self, mm: MmId, vpn: u64) -> Option<TlbEntry> {
        self.sets[Self::set_of(vpn)]
            .iter()
            .flatten()
            .find(|w| w.mm == mm && w.vpn == vpn)
            .map(|w| w.entry)
    }

    /// Caches a translation, replacing the same page's or, in a full set,
    /// the least recently used one.
    fn insert(&mut self, mm: MmId, vpn: u64, entry: TlbEntry, now: u64) {
        let set = &mut self.sets[Self::set_of(vpn)];
        let way = match set
            .iter()
            .position(|w| w.is_some_and(|w| w.mm == mm && w.vpn == vpn))
            .or_else(|| set.iter().position(|w| w.is_none()))
        {
            Some(i) => i,
            None => set
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.map_or(0, |w| w.used))
                .map_or(0, |(i, _)| i),
        };
        set[way] = Some(Way {
            mm,
            vpn,
            entry,
            used: now,
        });
    }

    fn remove(&mut self, mm: MmId, vpn: u64) {
        for w in self.sets[Self::set_of(vpn)].iter_mut() {
            if w.is_some_and(|w| w.mm == mm && w.vpn == vpn) {
                *w = None;
            }
        }
    }

    /// Drops every translation `drop` names; a bounded amount of work.
    fn retain_not(&mut self, drop: impl Fn(MmId, u64) -> bool) {
        for w in self.sets.iter_mut().flatten() {
            if w.is_some_and(|w| drop(w.mm, w.vpn)) {
                *w = None;
            }
        }
    }

    /// Drops the translations of `mm` for pages `[start, end)`: only the
    /// sets those pages map to when they are fewer than the sets (a flush
    /// of a few pages costs a few sets, as the hardware's `invlpg` does).
    fn flush_range(&mut self, mm: MmId, start: u64, end: u64) {
        let hit = |w: &Option<Way>| w.is_some_and(|w| w.mm == mm && w.vpn >= start && w.vpn < end);
        if end.saturating_sub(start) < SETS as u64 {
            for vpn in start..end {
                for w in self.sets[Self::set_of(vpn)].iter_mut() {
                    if hit(w) {
                        *w = None;
                    }
                }
            }
        } else {
            for w in self.sets.iter_mut().flatten() {
                if hit(w) {
                    *w = None;
                }
            }
        }
    }

    fn ways(&self) -> impl Iterator<Item = &Way> + '_ {
        self.sets.iter().flatten().flatten()
    }
}

/// What a TLB flush drops.
#[derive(Clone, Copy, Debug)]
enum Flush {
    /// The translations of base pages `[start, end)` of an address space
    /// (and of every huge page that overlaps them).
    Range { mm: MmId, start: u64, end: u64 },
    /// Every translation of an address space.
    Mm(MmId),
}

/// A CPU's TLB, shaped like x86's: a bounded number of entries, separate ones
/// for 4 KiB pages and for 2 MiB pages (a huge PMD is cached as one entry for
/// the whole huge page, a walk that ends at a PTE as one for its page), LRU
/// replacement within a set, so a flush costs a bounded amount of work
/// whatever the address space spans. A lookup tries the 4 KiB entries first.
/// `Clone` copies the translations and the shootdown count (a copy of the
/// machine, `Kernel::snapshot`).
///
/// DIVERGENCE: one level of TLB (no second-level STLB), and replacement is
/// exact LRU (hardware uses pseudo-LRU); both only change which translations
/// a CPU still holds, which a flush must cover either way.
#[derive(Debug, Clone)]
pub struct Tlb {
    base: TlbArray<TLB_BASE_SETS>,
    huge: TlbArray<TLB_HUGE_SETS>,
    /// log2 of the base pages of a huge page (the geometry's PMD order).
    huge_order: u32,
    /// Lookups and fills so far (the LRU clock).
    now: u64,
    /// Shootdowns that reached this TLB so far: a hardware walk that saw it
    /// change drops its translation and walks again (see `hw_walk`).
    flushes: u64,
}

impl Tlb {
    /// An empty TLB for a geometry whose huge pages are `2^huge_order` base
    /// pages.
    pub fn new(huge_order: u32) -> Tlb {
        Tlb {
            base: TlbArray::default(),
            huge: TlbArray::default(),
            huge_order,
            now: 0,
            flushes: 0,
        }
    }

    /// The translation of base page `vpn` of `mm`, if cached.
    fn lookup(&mut self, mm: MmId, vpn: u64) -> Option<TlbEntry> {
        self.now += 1;
        if let Some(e) = self.base.get(mm, vpn, self.now) {
            return Some(e);
        }
        let sub = vpn & ((1 << self.huge_order) - 1);
        self.huge
            .get(mm, vpn >> self.huge_order, self.now)
            .map(|e| TlbEntry {
                pfn: e.pfn.add(sub),
                write: e.write,
            })
    }

    /// Caches what a walk of `vpn` found: `huge_head` when the walk ended at
    /// a huge PMD (the huge page's first frame).
    fn fill(&mut self, mm: MmId, vpn: u64, e: TlbEntry, huge_head: Option<Pfn>) {
        self.now += 1;
        match huge_head {
            Some(head) => self.huge.insert(
                mm,
                vpn >> self.huge_order,
                TlbEntry {
                    pfn: head,
                    write: e.write,
                },
                self.now,
            ),
            None => self.base.insert(mm, vpn, e, self.now),
        }
    }

    /// Drops every translation of base page `vpn` (of either size).
    fn invalidate(&mut self, mm: MmId, vpn: u64) {
        self.base.remove(mm, vpn);
        self.huge.remove(mm, vpn >> self.huge_order);
    }

    fn flush(&mut self, f: Flush) {
        let order = self.huge_order;
        match f {
            Flush::Range { mm, start, end } if start < end => {
                self.base.flush_range(mm, start, end);
                // The huge pages that overlap [start, end).
                self.huge
                    .flush_range(mm, start >> order, ((end - 1) >> order) + 1);
            }
            Flush::Range { .. } => {}
            Flush::Mm(mm) => {
                self.base.retain_not(|m, _| m == mm);
                self.huge.retain_not(|m, _| m == mm);
            }
        }
    }

    /// The cached 4 KiB translations: (address space, virtual page number).
    pub fn base_entries(&self) -> Vec<((MmId, u64), TlbEntry)> {
        self.base.ways().map(|w| ((w.mm, w.vpn), w.entry)).collect()
    }

    /// The cached 2 MiB translations: (address space, huge page number
    /// (address >> PMD_SHIFT)), with the huge page's first frame.
    pub fn huge_entries(&self) -> Vec<((MmId, u64), TlbEntry)> {
        self.huge.ways().map(|w| ((w.mm, w.vpn), w.entry)).collect()
    }

    /// Every base page a cached translation covers, with its translation
    /// (a 2 MiB entry once for each of its base pages).
    pub fn entries(&self) -> Vec<((MmId, u64), TlbEntry)> {
        let mut out = self.base_entries();
        for ((mm, h), e) in self.huge_entries() {
            for sub in 0..1u64 << self.huge_order {
                out.push((
                    (mm, (h << self.huge_order) + sub),
                    TlbEntry {
                        pfn: e.pfn.add(sub),
                        write: e.write,
                    },
                ));
            }
        }
        out
    }
}

/// A CPU's interrupt flag as a shootdown sees it (`arch_local_irq_save()`,
/// arch/x86/include/asm/irqflags.h): whether the CPU runs with interrupts
/// disabled, so that an IPI waits. Made on the CPU's first
/// `local_irq_save()`: a CPU that never disabled interrupts has none, and a
/// shootdown reaches it as before (no scheduling point of its own).
pub struct LocalIrq<E: Engine> {
    disabled: OnceLock<E::Monitor<bool>>,
}

impl<E: Engine> Default for LocalIrq<E> {
    fn default() -> Self {
        LocalIrq {
            disabled: OnceLock::new(),
        }
    }
}

impl<E: Engine> LocalIrq<E> {
    /// Whether interrupts are disabled, for checkers (no scheduling point).
    pub fn disabled_peek(&self) -> bool {
        self.disabled.get().is_some_and(|m| m.peek(|d| *d))
    }

    /// A copy for a copy of the machine (`Kernel::snapshot`), made at a
    /// quiescent point, where interrupts are enabled on every CPU (asserted).
    /// A flag made on first use is made in the copy too: whether it exists
    /// decides whether a shootdown reaching this CPU is a scheduling point.
    pub fn snapshot(&self) -> Self {
        let disabled = OnceLock::new();
        if let Some(m) = self.disabled.get() {
            assert!(
                !m.peek(|d| *d),
                "a copy of the machine with interrupts disabled on a CPU"
            );
            let _ = disabled.set(E::Monitor::new(false));
        }
        LocalIrq { disabled }
    }
}

/// Interrupts stay disabled on this CPU until dropped
/// (`local_irq_restore()`).
pub struct IrqGuard<'a, E: Engine> {
    cpu: &'a Cpu<E>,
}

impl<E: Engine> Drop for IrqGuard<'_, E> {
    fn drop(&mut self) {
        self.cpu.local_irq_restore();
    }
}

/// Why a user access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessError {
    /// SIGSEGV.
    Segv,
    /// SIGBUS.
    Sigbus,
    /// VM_FAULT_OOM (DIVERGENCE: no OOM killer; the access fails).
    Oom,
}

/// A user access.
#[derive(Clone, Copy, Debug)]
pub enum Access {
    Read,
    Write(u8),
}

impl<E: Engine> Cpu<E> {
    fn tlb(&self) -> std::sync::MutexGuard<'_, Tlb> {
        E::touch(Obj::Tlb(self.id.0 as u32), true);
        self.k.tlbs[self.id.0]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A user-mode load or store of one byte at `addr` in `mm`, as the CPU does
    /// it: through the TLB, else a hardware walk, else a page fault and retry.
    pub fn user_access(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        access: Access,
    ) -> Result<u8, AccessError> {
        let write = matches!(access, Access::Write(_));
        // Another CPU may run between two user instructions.
        E::schedule_point_on(Obj::Tlb(self.id.0 as u32), false);
        let _active = self.user_active();
        let e = self.user_translate(mm, addr, write)?;
        let off = addr.0 & (self.k.geo.page_size() - 1);
        let words = self.k.mem.words(e.pfn);
        E::touch(Obj::Frame(e.pfn.0), write);
        Ok(match access {
            Access::Read => read_byte(words, off),
            Access::Write(v) => {
                self.touch_data(e.pfn);
                write_byte(words, off, v);
                v
            }
        })
    }

    /// Stores `v` into `[addr, addr + len)` (within one page), as a run of
    /// user stores that hit one translation.
    pub fn user_fill(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        len: u64,
        v: u8,
    ) -> Result<(), AccessError> {
        E::schedule_point_on(Obj::Tlb(self.id.0 as u32), false);
        let _active = self.user_active();
        let e = self.user_translate(mm, addr, true)?;
        let off = addr.0 & (self.k.geo.page_size() - 1);
        let words = self.k.mem.words(e.pfn);
        E::touch(Obj::Frame(e.pfn.0), true);
        self.touch_data(e.pfn);
        fill_bytes(words, off, off + len, v);
        Ok(())
    }

    /// Loads `[addr, addr + len)` (within one page) through one translation.
    pub fn user_load(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        len: u64,
    ) -> Result<Vec<u8>, AccessError> {
        E::schedule_point_on(Obj::Tlb(self.id.0 as u32), false);
        let _active = self.user_active();
        let e = self.user_translate(mm, addr, false)?;
        let off = addr.0 & (self.k.geo.page_size() - 1);
        let words = self.k.mem.words(e.pfn);
        E::touch(Obj::Frame(e.pfn.0), false);
        Ok((off..off + len).map(|o| read_byte(words, o)).collect())
    }

    /// The translation a user access of `addr` uses: the TLB entry, or a
    /// hardware walk, or page faults until the walk succeeds. The caller has
    /// offered the scheduling point of the instruction; from the lookup to
    /// the data access nothing else runs on this CPU, as within one
    /// instruction (a shootdown waits for the instruction to retire).
    pub fn user_translate(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        write: bool,
    ) -> Result<TlbEntry, AccessError> {
        let vpn = self.k.geo.vpn(addr);
        for _attempt in 0..10_000 {
            let cached = self.tlb().lookup(mm.id, vpn);
            match cached {
                Some(e) if !write || e.write => return Ok(e),
                Some(_) => {
                    // A write through a read-only translation is a protection
                    // fault, even if the entry has since been made writable
                    // without a flush (a spurious fault). The fault
                    // invalidates this CPU's translation of the address
                    // (Intel SDM 4.10.4.1); the handler finds the entry
                    // writable and returns, and the retry walks again.
                    self.tlb().invalidate(mm.id, vpn);
                }
                None => {
                    if let Some(e) = self.hw_walk(mm, addr, write) {
                        return Ok(e);
                    }
                }
            }
            self.do_user_addr_fault(mm, addr, write)?;
        }
        self.bug("fault loop: the access never succeeds", None)
    }

    /// The hardware page walk: no locks; sets accessed/dirty atomically; fills
    /// the TLB. Returns `None` when the access must fault.
    ///
    /// The walk and the fill are one step of the CPU: a shootdown of this
    /// TLB is handled before or after it, never in between. The model's walk
    /// has scheduling points (each entry load), so a shootdown that reaches
    /// this TLB during the walk (`Tlb::flushes` moved) means the walk may
    /// have read an entry from before the change that flush announces: the
    /// translation is dropped and the walk starts again.
    fn hw_walk(&self, mm: &Arc<MmStruct<E>>, addr: VirtAddr, write: bool) -> Option<TlbEntry> {
        loop {
            let flushes = self.tlb().flushes;
            let (e, huge_head) = self.hw_walk_once(mm, addr, write)?;
            let mut tlb = self.tlb();
            if tlb.flushes == flushes {
                tlb.fill(mm.id, self.k.geo.vpn(addr), e, huge_head);
                return Some(e);
            }
        }
    }

    /// One walk of [`Cpu::hw_walk`]: the translation, not yet cached, and
    /// the huge page's first frame when the walk ended at a huge PMD.
    fn hw_walk_once(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        write: bool,
    ) -> Option<(TlbEntry, Option<Pfn>)> {
        let geo = self.k.geo;
        let pud_table = match Upper::decode(mm.pgd.raw(geo.index(Level::Pgd, addr)).load()) {
            Upper::Table(t) => t,
            Upper::None => return None,
        };
        let pmd_table = match Upper::decode(
            self.table(pud_table)
                .raw(geo.index(Level::Pud, addr))
                .load(),
        ) {
            Upper::Table(t) => t,
            Upper::None => return None,
        };
        let pmd_slot = self.table(pmd_table).raw(geo.index(Level::Pmd, addr));
        let pmd_raw = pmd_slot.load();
        let (pfn, huge_head, slot, raw, allowed) = match Pmd::decode(pmd_raw) {
            Pmd::Huge {
                pfn,
                flags,
                invalid: false,
            } if !flags.protnone => {
                let sub = geo.index(Level::Pte, addr) as u64;
                (
                    pfn.add(sub),
                    Some(pfn),
                    pmd_slot,
                    pmd_raw,
                    !write || flags.write,
                )
            }
            Pmd::Table(pte_table) => {
                let slot = self.table(pte_table).raw(geo.index(Level::Pte, addr));
                let raw = slot.load();
                match Pte::decode(raw) {
                    Pte::Present { pfn, flags } if !flags.protnone => {
                        (pfn, None, slot, raw, !write || flags.write)
                    }
                    _ => return None,
                }
            }
            _ => return None,
        };
        if !allowed {
            return None;
        }
        // Set _PAGE_ACCESSED (and _PAGE_DIRTY on a write) with a locked cmpxchg,
        // as the page walker does; if the entry changed under us, walk again.
        let young = 1 << 5;
        let dirty = 1 << 4;
        let want = raw | young | if write { dirty } else { 0 };
        if want != raw && slot.compare_exchange(raw, want).is_err() {
            return self.hw_walk_once(mm, addr, write);
        }
        Some((TlbEntry { pfn, write }, huge_head))
    }

    /// Models do_user_addr_fault(), arch/x86/mm/fault.c, v5.8: find the VMA under
    /// mmap_lock for read, check the access, handle_mm_fault().
    ///
    /// # Locking
    /// Takes `mm->mmap_lock` for read.
    pub fn do_user_addr_fault(
        &self,
        mm: &Arc<MmStruct<E>>,
        addr: VirtAddr,
        write: bool,
    ) -> Result<(), AccessError> {
        let _f = self.func("do_user_addr_fault");
        let _mmap = mm.mmap_lock.read(self);
        let Some(vma) = mm.vma_at(addr) else {
            return Err(AccessError::Segv);
        };
        let flags = vma.vm_flags();
        // access_error()
        if write && flags & vm::WRITE == 0 {
            return Err(AccessError::Segv);
        }
        if !write && flags & vm::ACCESS == 0 {
            return Err(AccessError::Segv);
        }
        let ret = self.handle_mm_fault(&VmFault::new(mm.clone(), vma, addr, FaultFlags { write }));
        if ret.oom() {
            Err(AccessError::Oom)
        } else if ret.sigbus() {
            Err(AccessError::Sigbus)
        } else if ret.sigsegv() {
            Err(AccessError::Segv)
        } else {
            Ok(())
        }
    }

    /// Models flush_tlb_range(), arch/x86/mm/tlb.c, v5.8: every CPU drops its
    /// translations of `[start, end)` in `mm`.
    pub fn flush_tlb_range(&self, mm: MmId, start: VirtAddr, end: VirtAddr) {
        let _f = self.func("flush_tlb_range");
        let (s, e) = (
            self.k.geo.vpn(start),
            self.k.geo.vpn(VirtAddr(end.0 + self.k.geo.page_size() - 1)),
        );
        self.shootdown(Flush::Range {
            mm,
            start: s,
            end: e,
        });
    }

    /// The shootdown of flush_tlb_mm_range(), arch/x86/mm/tlb.c, v5.8: this
    /// CPU's TLB first (flush_tlb_func_local()), then every other CPU's
    /// (flush_tlb_others(): an IPI each, waited for). Each other CPU handles
    /// its IPI between two of its own steps, so reaching it is a scheduling
    /// point: until then it may still use the translations being flushed.
    /// Every other CPU is reached, as if all were in `mm_cpumask(mm)`; one
    /// whose TLB holds nothing of `mm` is unaffected, as a CPU outside the
    /// mask would be.
    ///
    /// A CPU that runs with interrupts disabled (GUP-fast) handles the IPI
    /// when it enables them: the shootdown waits for it there.
    fn shootdown(&self, what: Flush) {
        let me = self.id.0;
        let order = std::iter::once(me).chain((0..self.k.tlbs.len()).filter(|&c| c != me));
        for c in order {
            if c != me {
                E::schedule_point_on(Obj::Tlb(c as u32), true);
                if let Some(irq) = self.k.irqs.get(c).and_then(|i| i.disabled.get()) {
                    // flush_tlb_others() -> smp_call_function_many(wait):
                    // the IPI is handled once that CPU enables interrupts.
                    irq.wait_until(|disabled| (!*disabled).then_some(()));
                }
            } else {
                E::touch(Obj::Tlb(c as u32), true);
            }
            let mut tlb = self.k.tlbs[c].lock().unwrap_or_else(|p| p.into_inner());
            tlb.flush(what);
            tlb.flushes += 1;
        }
    }

    /// Models local_irq_save(), include/linux/irqflags.h, v5.8: disables
    /// interrupts on this CPU until the guard is dropped (local_irq_restore());
    /// a shootdown to this CPU waits until then. Nothing that blocks may run
    /// in between (GUP-fast's walk takes no lock).
    pub fn local_irq_save(&self) -> IrqGuard<'_, E> {
        // The step that makes the flag conflicts with a shootdown's step that
        // reads whether there is one.
        E::touch(Obj::Tlb(self.id.0 as u32), true);
        let irq = &self.k.irqs[self.id.0];
        irq.disabled
            .get_or_init(|| E::Monitor::new(false))
            .update(|d| *d = true);
        IrqGuard { cpu: self }
    }

    /// Models local_irq_restore(): interrupts on again, pending IPIs handled.
    fn local_irq_restore(&self) {
        if let Some(irq) = self.k.irqs[self.id.0].disabled.get() {
            irq.update(|d| *d = false);
        }
    }

    /// Models flush_tlb_page().
    pub fn flush_tlb_page(&self, mm: MmId, addr: VirtAddr) {
        self.flush_tlb_range(mm, addr, addr.add_bytes(1));
    }

    /// Models flush_tlb_mm(): every CPU drops all translations of `mm`.
    pub fn flush_tlb_mm(&self, mm: MmId) {
        let _f = self.func("flush_tlb_mm");
        self.shootdown(Flush::Mm(mm));
    }

    /// Whether any CPU caches a translation of `addr` in `mm` (for checkers).
    pub fn tlb_cached(&self, mm: MmId, addr: VirtAddr) -> bool {
        let vpn = self.k.geo.vpn(addr);
        self.k.tlbs.iter().any(|t| {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            t.base.peek(mm, vpn).is_some() || t.huge.peek(mm, vpn >> t.huge_order).is_some()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(pfn: u64, write: bool) -> TlbEntry {
        TlbEntry {
            pfn: Pfn(pfn),
            write,
        }
    }

    const MM: MmId = MmId(1);

    #[test]
    fn a_full_set_replaces_its_least_recently_used_entry() {
        let mut t = Tlb::new(9);
        let sets = TLB_BASE_SETS as u64;
        // Five pages of one set: the first, untouched since, goes.
        for i in 0..TLB_WAYS as u64 {
            t.fill(MM, 3 + i * sets, e(100 + i, false), None);
        }
        // Used again: now the second is the least recently used.
        assert_eq!(t.lookup(MM, 3), Some(e(100, false)));
        t.fill(MM, 3 + 4 * sets, e(104, true), None);
        assert_eq!(t.lookup(MM, 3 + sets), None, "evicted");
        assert_eq!(t.lookup(MM, 3), Some(e(100, false)));
        assert_eq!(t.lookup(MM, 3 + 4 * sets), Some(e(104, true)));
        // Refilling a cached page replaces it in place.
        t.fill(MM, 3, e(200, true), None);
        assert_eq!(t.lookup(MM, 3), Some(e(200, true)));
        assert_eq!(t.base_entries().len(), TLB_WAYS);
    }

    #[test]
    fn the_tlb_holds_a_bounded_number_of_entries() {
        let mut t = Tlb::new(9);
        for v in 0..10_000 {
            t.fill(MM, v, e(v, true), None);
            t.fill(MM, v << 9, e(v << 9, true), Some(Pfn(v << 9)));
        }
        assert_eq!(t.base_entries().len(), TLB_BASE_SETS * TLB_WAYS);
        assert_eq!(t.huge_entries().len(), TLB_HUGE_SETS * TLB_WAYS);
        // The most recent of each survive.
        assert_eq!(t.lookup(MM, 9_999), Some(e(9_999, true)));
    }

    #[test]
    fn a_huge_entry_translates_every_base_page_of_its_huge_page() {
        let mut t = Tlb::new(3);
        // A walk of base page 17 (huge page 2, pages 16..24) ended at a huge
        // PMD mapping frames 64..72.
        t.fill(MM, 17, e(65, false), Some(Pfn(64)));
        assert_eq!(t.lookup(MM, 16), Some(e(64, false)));
        assert_eq!(t.lookup(MM, 23), Some(e(71, false)));
        assert_eq!(t.lookup(MM, 24), None);
        assert_eq!(t.lookup(MmId(2), 17), None, "another address space");
        assert_eq!(t.entries().len(), 8, "one per base page for checkers");
        // A 4 KiB entry of the same page is looked up first.
        t.fill(MM, 18, e(300, true), None);
        assert_eq!(t.lookup(MM, 18), Some(e(300, true)));
        // The fault of a write through it drops both sizes.
        t.invalidate(MM, 18);
        assert_eq!(t.lookup(MM, 18), None);
        assert_eq!(t.lookup(MM, 16), None);
    }

    #[test]
    fn a_range_flush_drops_what_overlaps_the_range_and_nothing_else() {
        let mut t = Tlb::new(3);
        t.fill(MM, 16, e(64, true), Some(Pfn(64)));
        t.fill(MM, 40, e(5, true), None);
        t.fill(MM, 41, e(6, true), None);
        t.fill(MmId(2), 40, e(7, true), None);
        // One base page of the huge page: the whole 2 MiB entry goes.
        t.flush(Flush::Range {
            mm: MM,
            start: 23,
            end: 24,
        });
        assert_eq!(t.lookup(MM, 16), None);
        t.flush(Flush::Range {
            mm: MM,
            start: 40,
            end: 41,
        });
        assert_eq!(t.lookup(MM, 40), None);
        assert_eq!(t.lookup(MM, 41), Some(e(6, true)));
        assert_eq!(t.lookup(MmId(2), 40), Some(e(7, true)));
        // A page of the same set outside the range stays; a range of more
        // pages than sets (the whole-array scan) drops all it covers.
        t.fill(MM, 40 + 16, e(8, true), None);
        t.fill(MM, 40, e(5, true), None);
        t.flush(Flush::Range {
            mm: MM,
            start: 40,
            end: 41,
        });
        assert_eq!(t.lookup(MM, 56), Some(e(8, true)));
        t.fill(MM, 40, e(5, true), None);
        t.flush(Flush::Range {
            mm: MM,
            start: 30,
            end: 57,
        });
        assert_eq!(t.lookup(MM, 40), None);
        assert_eq!(t.lookup(MM, 41), None);
        assert_eq!(t.lookup(MM, 56), None);
        assert_eq!(t.lookup(MmId(2), 40), Some(e(7, true)));
        t.fill(MM, 41, e(6, true), None);
        t.flush(Flush::Mm(MM));
        assert_eq!(t.lookup(MM, 41), None);
        assert_eq!(t.lookup(MmId(2), 40), Some(e(7, true)));
    }
}
