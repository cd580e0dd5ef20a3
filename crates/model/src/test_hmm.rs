//! A secondary MMU: lib/test_hmm.c's dmirror, a device with its own page
//! table of a process's memory, kept coherent by an mmu interval notifier.
//!
//! Models (v5.8): `dmirror_fops_open` (mmu_interval_notifier_insert() over
//! the mirrored range), `dmirror_interval_invalidate` (under the driver's
//! mutex: mmu_interval_set_seq(), then `dmirror_do_update` drops the
//! device's entries in the range), `dmirror_range_fault` (the collision-retry
//! loop of Documentation/vm/hmm.rst: mmu_interval_read_begin(),
//! hmm_range_fault() under mmap_lock, then under the mutex
//! mmu_interval_read_retry() and `dmirror_do_fault`), `dmirror_fault`,
//! `dmirror_read`/`dmirror_do_read` and `dmirror_write`/`dmirror_do_write`
//! (the device copies through its own entries, under the mutex, faulting on
//! a miss).
//!
//! Leaves out: device-private memory and migration to it, snapshots
//! (`dmirror_snapshot`), the bounce buffer (one access is one copy), the
//! fault timeout (HMM_RANGE_DEFAULT_TIMEOUT: the model has no clock; a
//! collision is retried until the fault succeeds).

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::errno::Errno;
use crate::hmm::HmmError;
use crate::mm_types::MmStruct;
use crate::mmu_notifier::{MirrorId, MmuNotifierRange};
use crate::sync::{LockClass, SpinLock};
use crate::types::{MmId, Pfn, VirtAddr};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// `struct dmirror`.
pub struct Dmirror<E: Engine> {
    pub id: MirrorId,
    /// The mirrored process.
    pub mm: MmId,
    /// The range the interval notifier covers.
    pub start: VirtAddr,
    pub end: VirtAddr,
    /// `dmirror->mutex`: guards `pt` and orders faults against invalidations.
    pub mutex: SpinLock<E>,
    /// `dmirror->pt`: the device's entries by virtual page number: the frame
    /// and whether the device may write it. Read and written only under
    /// `mutex` (so plain std state, no scheduling point of its own).
    pt: Mutex<BTreeMap<u64, (Pfn, bool)>>,
}

impl<E: Engine> Dmirror<E> {
    fn pt(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Pfn, bool)>> {
        self.pt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's entries, for checkers (no scheduling point): (virtual
    /// page number, frame, writable).
    pub fn entries(&self) -> Vec<(u64, Pfn, bool)> {
        self.pt().iter().map(|(&v, &(p, w))| (v, p, w)).collect()
    }

    /// A copy for a copy of the machine (at a quiescent point: the mutex is
    /// free).
    pub fn snapshot(&self) -> Self {
        Dmirror {
            id: self.id,
            mm: self.mm,
            start: self.start,
            end: self.end,
            mutex: self.mutex.snapshot(),
            pt: Mutex::new(self.pt().clone()),
        }
    }
}

impl<E: Engine> Cpu<E> {
    /// Models dmirror_fops_open(), lib/test_hmm.c, v5.8: a mirror of
    /// `[start, end)` of `mm`, subscribed to its invalidations.
    /// DIVERGENCE: the test driver mirrors the whole address space; the
    /// model's mirror covers the range the scenario names (its notifier
    /// interval and the accesses it allows).
    pub fn dmirror_fops_open(
        &self,
        mm: &Arc<MmStruct<E>>,
        start: VirtAddr,
        end: VirtAddr,
    ) -> MirrorId {
        let _f = self.func("dmirror_fops_open");
        let id = self.k.register_mirror(|id| Dmirror {
            id,
            mm: mm.id,
            start,
            end,
            mutex: SpinLock::new(LockClass::DmirrorMutex),
            pt: Mutex::new(BTreeMap::new()),
        });
        self.mmu_interval_notifier_insert(mm, id, start, end);
        id
    }

    /// Models dmirror_interval_invalidate(), lib/test_hmm.c, v5.8.
    ///
    /// # Locking
    /// Takes `dmirror->mutex` (called from mmu_notifier_invalidate_range_start()).
    pub fn dmirror_interval_invalidate(
        &self,
        mm: &MmStruct<E>,
        id: MirrorId,
        range: &MmuNotifierRange,
        cur_seq: u64,
    ) {
        let _f = self.func("dmirror_interval_invalidate");
        let d = self.k.mirror(id);
        let _m = d.mutex.lock(self);
        self.mmu_interval_set_seq(mm, id, cur_seq);
        // dmirror_do_update()
        let ps = self.k.geo.page_size();
        let (lo, hi) = (range.start.0 / ps, range.end.0.div_ceil(ps));
        let mut pt = d.pt();
        let gone: Vec<u64> = pt.range(lo..hi).map(|(&v, _)| v).collect();
        for v in gone {
            pt.remove(&v);
        }
    }

    /// Models dmirror_range_fault() and dmirror_do_fault(), lib/test_hmm.c,
    /// v5.8: fill the device's entries for `[start, end)`.
    ///
    /// # Locking
    /// Takes `mmap_lock` for read around hmm_range_fault(), then
    /// `dmirror->mutex`.
    fn dmirror_range_fault(
        &self,
        mm: &Arc<MmStruct<E>>,
        id: MirrorId,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
    ) -> Result<(), Errno> {
        let _f = self.func("dmirror_range_fault");
        let d = self.k.mirror(id);
        let ps = self.k.geo.page_size();
        loop {
            let seq = self.mmu_interval_read_begin(mm, id);
            let pfns = {
                let _mmap = mm.mmap_lock.read(self);
                self.hmm_range_fault(mm, id, seq, start, end, write)
            };
            let pfns = match pfns {
                Ok(p) => p,
                Err(HmmError::Busy) => continue,
                Err(HmmError::Fault(e)) => return Err(e),
            };
            let _m = d.mutex.lock(self);
            if self.mmu_interval_read_retry(mm, id, seq) {
                self.mark(crate::coverage::Mark::gives_up(
                    "dmirror_range_fault: mmu_interval_read_retry() (an invalidation collided)",
                ));
                continue;
            }
            // dmirror_do_fault()
            let mut pt = d.pt();
            for (i, p) in pfns.iter().enumerate() {
                pt.insert(start.0 / ps + i as u64, (p.pfn, p.write));
            }
            return Ok(());
        }
    }

    /// Models dmirror_fault(), lib/test_hmm.c, v5.8.
    /// DIVERGENCE: with the mirrored mm gone (mmget_not_zero() fails) the
    /// test driver returns 0 and its read or write loop faults again for
    /// ever; the model fails the access with EFAULT.
    fn dmirror_fault(
        &self,
        id: MirrorId,
        start: VirtAddr,
        end: VirtAddr,
        write: bool,
    ) -> Result<(), Errno> {
        let _f = self.func("dmirror_fault");
        let d = self.k.mirror(id);
        let mm = self.k.mm(d.mm);
        if mm.exited.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Errno::Efault);
        }
        self.dmirror_range_fault(&mm, id, start, end, write)
    }

    /// The loop dmirror_read() and dmirror_write() share (lib/test_hmm.c,
    /// v5.8): under `dmirror->mutex`, `access` the frame the device's entry
    /// for `start`'s page names (a writable one for `write`) at `start`'s
    /// offset in it; on a miss (-ENOENT) fault the page in and try again.
    ///
    /// # Locking
    /// Takes `dmirror->mutex` around the access; the fault takes `mmap_lock`
    /// for read, then the mutex.
    fn dmirror_access<R>(
        &self,
        id: MirrorId,
        start: VirtAddr,
        write: bool,
        access: impl FnOnce(Pfn, u64) -> R,
    ) -> Result<R, Errno> {
        let d = self.k.mirror(id);
        let ps = self.k.geo.page_size();
        let vpn = start.0 / ps;
        let mut access = Some(access);
        loop {
            {
                let _m = d.mutex.lock(self);
                let hit = d.pt().get(&vpn).copied();
                if let Some((pfn, _)) = hit.filter(|&(_, w)| w || !write) {
                    let f = access.take().expect("a hit ends the loop");
                    return Ok(f(pfn, start.0 % ps));
                }
            }
            let page = VirtAddr(vpn * ps);
            self.dmirror_fault(id, page, page.add_bytes(ps), write)?;
        }
    }

    /// Models dmirror_read() and dmirror_do_read(), lib/test_hmm.c, v5.8:
    /// the device reads `[start, start + len)` (within one page) through its
    /// own entry, faulting it in on a miss.
    pub fn dmirror_read(&self, id: MirrorId, start: VirtAddr, len: u64) -> Result<Vec<u8>, Errno> {
        let _f = self.func("dmirror_read");
        self.dmirror_access(id, start, false, |pfn, off| self.dma_read(pfn, off, len))
    }

    /// Models dmirror_write() and dmirror_do_write(), lib/test_hmm.c, v5.8:
    /// the device writes `value` to `[start, start + len)` (within one page)
    /// through its own writable entry, faulting it in for write on a miss.
    /// `on_write` runs right after the copy, still under the mutex (the
    /// runner tells the memory oracle there, in the same step).
    pub fn dmirror_write(
        &self,
        id: MirrorId,
        start: VirtAddr,
        len: u64,
        value: u8,
        on_write: impl FnOnce(),
    ) -> Result<(), Errno> {
        let _f = self.func("dmirror_write");
        self.dmirror_access(id, start, true, |pfn, off| {
            self.dma_write(pfn, off, len, value);
            on_write();
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::check::audit::audit;
    use crate::errno::Errno;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::types::{CpuId, Geometry, VirtAddr};
    use crate::{Config, Cpu, Kernel, StdEngine, ThpPolicy};

    /// A mirror reads and writes the process's memory through its own
    /// entries; every change of the process's page tables that 5.8 brackets
    /// with an invalidation (fork's write-protect, the COW of a write,
    /// migration, mprotect, munmap, exit) drops them, so the audit's
    /// MIRROR-COHERENT holds throughout and the mirror sees what the process
    /// sees.
    #[test]
    fn a_mirror_follows_the_process_through_cow_migration_and_unmap() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            for thp in [ThpPolicy::Never, ThpPolicy::Always] {
                let mut cfg = Config::new(geo);
                cfg.thp = thp;
                cfg.nodes = 2;
                let cpu = Cpu::new(Kernel::<StdEngine>::new(cfg), CpuId(0));
                let (ps, pmd) = (geo.page_size(), geo.pmd_size());
                let mm = cpu.mm_alloc();
                let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
                let m = cpu.dmirror_fops_open(&mm, a, a.add_bytes(pmd));
                let clean = |what: &str| {
                    let v = audit(&cpu);
                    assert!(v.is_empty(), "{geo:?} {thp:?} after {what}: {v:?}");
                    assert!(cpu.k.reports().is_empty(), "{:?}", cpu.k.reports());
                };
                // The mirror faults the page in for write and writes it.
                cpu.dmirror_write(m, a.add_bytes(ps), 1, 0x44, || {})
                    .expect("mirror write");
                assert_eq!(cpu.user_load(&mm, a.add_bytes(ps), 1).unwrap(), vec![0x44]);
                cpu.user_access(&mm, a.add_bytes(ps), Access::Write(0x45))
                    .expect("write");
                assert_eq!(cpu.dmirror_read(m, a.add_bytes(ps), 1).unwrap(), vec![0x45]);
                clean("mirror write");
                // fork write-protects the parent: the mirror's writable
                // entry goes; the parent's write copies.
                let child = cpu.dup_mm(&mm).expect("fork");
                assert!(cpu.k.mirror(m).entries().is_empty(), "fork invalidated");
                clean("fork");
                assert_eq!(cpu.dmirror_read(m, a.add_bytes(ps), 1).unwrap(), vec![0x45]);
                cpu.user_access(&mm, a.add_bytes(ps), Access::Write(0x46))
                    .expect("cow");
                clean("the parent's COW");
                assert_eq!(cpu.dmirror_read(m, a.add_bytes(ps), 1).unwrap(), vec![0x46]);
                cpu.dmirror_write(m, a.add_bytes(ps), 1, 0x47, || {})
                    .expect("mirror write");
                assert_eq!(
                    cpu.user_load(&child, a.add_bytes(ps), 1).unwrap(),
                    vec![0x45]
                );
                assert_eq!(cpu.user_load(&mm, a.add_bytes(ps), 1).unwrap(), vec![0x47]);
                cpu.mmput(&child);
                // Migration moves the page under the mirror.
                let n = geo.hpage_pmd_nr();
                let pages: Vec<VirtAddr> = (0..n).map(|i| a.add_bytes(i * ps)).collect();
                let r = cpu.do_pages_move(&mm, &pages, 1, false);
                assert_eq!(r.ret, Ok(0));
                clean("migration");
                assert_eq!(cpu.dmirror_read(m, a.add_bytes(ps), 1).unwrap(), vec![0x47]);
                // mprotect to read-only: a mirror write faults (EFAULT, the
                // VMA forbids it); reads still work.
                cpu.do_mprotect(&mm, a, pmd, Prot::Read).expect("mprotect");
                clean("mprotect");
                assert_eq!(cpu.dmirror_write(m, a, 1, 1, || {}), Err(Errno::Efault));
                assert_eq!(cpu.dmirror_read(m, a.add_bytes(ps), 1).unwrap(), vec![0x47]);
                cpu.do_munmap(&mm, a, pmd).expect("munmap");
                assert!(cpu.k.mirror(m).entries().is_empty(), "munmap invalidated");
                assert_eq!(cpu.dmirror_read(m, a, 1), Err(Errno::Efault));
                clean("munmap");
                cpu.mmput(&mm);
                clean("exit");
            }
        }
    }
}
