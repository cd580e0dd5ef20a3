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
//! A TLB keeps a translation until it is flushed, so a missing flush shows up as
//! a stale translation, as on hardware.
//!
//! A CPU may run with interrupts disabled (`local_irq_save()`, which GUP-fast
//! does around its lockless walk, mm/gup.c): a shootdown's IPI to it is then
//! handled, and the flush completes, only when it enables them again. That
//! is what keeps page tables and pages from being freed, and THPs from being
//! split, under the lockless walk: x86 frees page tables and pages after the
//! flush (mmu_gather), and splitting a THP flushes its mappings first.
//!
//! Leaves out: PCIDs, lazy TLB mode, batched unmap flushes, the paging-structure
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
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// One cached translation of a base page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    pub pfn: Pfn,
    pub write: bool,
}

/// A CPU's TLB: translations by (address space, virtual page number).
/// `Clone` copies the translations and the shootdown count (a copy of the
/// machine, `Kernel::snapshot`).
#[derive(Default, Debug, Clone)]
pub struct Tlb {
    map: HashMap<(MmId, u64), TlbEntry>,
    /// Shootdowns that reached this TLB so far: a hardware walk that saw it
    /// change drops its translation and walks again (see `hw_walk`).
    flushes: u64,
}

impl Tlb {
    /// All cached translations (for the audit).
    pub fn entries(&self) -> Vec<((MmId, u64), TlbEntry)> {
        self.map.iter().map(|(k, v)| (*k, *v)).collect()
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
        let words = self.page(e.pfn).words(self.k.geo.page_size());
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
        let words = self.page(e.pfn).words(self.k.geo.page_size());
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
        let words = self.page(e.pfn).words(self.k.geo.page_size());
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
            let cached = self.tlb().map.get(&(mm.id, vpn)).copied();
            match cached {
                Some(e) if !write || e.write => return Ok(e),
                Some(_) => {
                    // A write through a read-only translation is a protection
                    // fault, even if the entry has since been made writable
                    // without a flush (a spurious fault). The fault
                    // invalidates this CPU's translation of the address
                    // (Intel SDM 4.10.4.1); the handler finds the entry
                    // writable and returns, and the retry walks again.
                    self.tlb().map.remove(&(mm.id, vpn));
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
            let e = self.hw_walk_once(mm, addr, write)?;
            let mut tlb = self.tlb();
            if tlb.flushes == flushes {
                tlb.map.insert((mm.id, self.k.geo.vpn(addr)), e);
                return Some(e);
            }
        }
    }

    /// One walk of [`Cpu::hw_walk`]: the translation, not yet cached.
    fn hw_walk_once(&self, mm: &Arc<MmStruct<E>>, addr: VirtAddr, write: bool) -> Option<TlbEntry> {
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
        let (pfn, slot, raw, allowed) = match Pmd::decode(pmd_raw) {
            Pmd::Huge {
                pfn,
                flags,
                invalid: false,
            } if !flags.protnone => {
                let sub = geo.index(Level::Pte, addr) as u64;
                (pfn.add(sub), pmd_slot, pmd_raw, !write || flags.write)
            }
            Pmd::Table(pte_table) => {
                let slot = self.table(pte_table).raw(geo.index(Level::Pte, addr));
                let raw = slot.load();
                match Pte::decode(raw) {
                    Pte::Present { pfn, flags } if !flags.protnone => {
                        (pfn, slot, raw, !write || flags.write)
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
        Some(TlbEntry { pfn, write })
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
        self.shootdown(|(m, v)| *m != mm || *v < s || *v >= e);
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
    fn shootdown(&self, keep: impl Fn(&(MmId, u64)) -> bool) {
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
            tlb.map.retain(|k, _| keep(k));
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
        self.shootdown(|(m, _)| *m != mm);
    }

    /// Whether any CPU caches a translation of `addr` in `mm` (for checkers).
    pub fn tlb_cached(&self, mm: MmId, addr: VirtAddr) -> bool {
        let vpn = self.k.geo.vpn(addr);
        self.k.tlbs.iter().any(|t| {
            t.lock()
                .unwrap_or_else(|p| p.into_inner())
                .map
                .contains_key(&(mm, vpn))
        })
    }
}
