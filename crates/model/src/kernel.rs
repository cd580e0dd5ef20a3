//! The machine: physical memory, the processes' address spaces, the global
//! THP state, the per-CPU TLBs and the report sink.
//!
//! Models: the global state scattered over mm/ (the huge zero page of
//! mm/huge_memory.c, the deferred split queue, `transparent_hugepage_flags`,
//! the zero page) gathered in one struct, plus what the checkers need (the
//! violation sink, the trace of kernel functions for race reports).
//!
//! Leaves out: memcg (one deferred split queue per node, as without memcg),
//! sysfs knobs other than `enabled`, `defrag` and `use_zero_page`.

use crate::check::Violation;
use crate::engine::{Atomic, Engine};
use crate::fixes::FixSet;
use crate::mm_types::{AnonVma, MmStruct, VmaCopies};
use crate::mmu::{LocalIrq, Tlb};
use crate::page::pg;
use crate::page_alloc::{CopyPlan, Memory};
use crate::sync::{LockClass, SpinLock};
use crate::types::{AnonVmaId, CpuId, FileId, Geometry, MmId, Pfn, VmaId};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};

/// /sys/kernel/mm/transparent_hugepage/enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThpPolicy {
    Always,
    Madvise,
    Never,
}

/// How the machine is set up.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub geometry: Geometry,
    pub thp: ThpPolicy,
    /// /sys/kernel/mm/transparent_hugepage/use_zero_page.
    pub use_zero_page: bool,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    pub nodes: u32,
    /// Free PMD-size hugetlb pages made at boot on each node (`hugetlb-pool`).
    pub hugetlb_pool: u64,
    /// The swap device's size in bytes (`swap`; 0: no swap).
    pub swap_bytes: u64,
    /// khugepaged's max_ptes_* limits (the `khugepaged` header line).
    pub khugepaged: crate::khugepaged::KhugepagedLimits,
    /// CPUs (one per concurrent thread of a scenario).
    pub cpus: usize,
    pub fixes: FixSet,
    /// The kernel design (`kernel 5.8 | 3.16`; profile.rs).
    pub kernel: crate::profile::KernelProfile,
}

impl Config {
    pub fn new(geometry: Geometry) -> Self {
        let memory_bytes = if geometry == Geometry::TINY {
            64 * geometry.pmd_size()
        } else {
            2 << 30
        };
        Config {
            geometry,
            thp: ThpPolicy::Always,
            use_zero_page: true,
            memory_bytes,
            nodes: 1,
            hugetlb_pool: 0,
            swap_bytes: 0,
            khugepaged: crate::khugepaged::KhugepagedLimits::defaults(geometry.hpage_pmd_nr()),
            cpus: 4,
            fixes: FixSet::default(),
            kernel: crate::profile::KernelProfile::V5_8,
        }
    }
}

/// One entry of the kernel-function trace used to draw races.
#[derive(Clone, Debug, Serialize)]
pub enum TraceEvent {
    Enter(&'static str),
    Note(String),
}

/// A trace record: which CPU, at what call depth, did what.
#[derive(Clone, Debug, Serialize)]
pub struct TraceRecord {
    pub cpu: CpuId,
    pub depth: usize,
    pub event: TraceEvent,
}

/// The deferred split queue (`struct deferred_split`, one per node without memcg).
pub struct DeferredSplitQueue<E: Engine> {
    pub split_queue_lock: SpinLock<E>,
    /// `split_queue`: THP heads, oldest first. Changed only under
    /// `split_queue_lock`.
    pub queue: Mutex<VecDeque<Pfn>>,
}

impl<E: Engine> DeferredSplitQueue<E> {
    /// A copy of the queue for a copy of the machine (`Kernel::snapshot`):
    /// the lock (free at a quiescent point) and the queued THP heads in
    /// order.
    pub fn snapshot(&self) -> Self {
        DeferredSplitQueue {
            split_queue_lock: self.split_queue_lock.snapshot(),
            queue: Mutex::new(self.queue.lock().unwrap_or_else(|p| p.into_inner()).clone()),
        }
    }
}

/// The whole machine.
pub struct Kernel<E: Engine> {
    pub geo: Geometry,
    pub cfg: Config,
    pub mem: Memory<E>,
    /// The 4 KiB zero page (`ZERO_PAGE(0)`).
    pub zero_pfn: Pfn,
    /// `huge_zero_page`: 0, or its pfn + 1.
    huge_zero: AtomicU64,
    mms: RwLock<Vec<Arc<MmStruct<E>>>>,
    anon_vmas: RwLock<Vec<Arc<AnonVma<E>>>>,
    next_vma: AtomicUsize,
    pub deferred_split: DeferredSplitQueue<E>,
    /// `pgdat->lru_lock`.
    pub lru_lock: SpinLock<E>,
    pub tlbs: Vec<Mutex<Tlb>>,
    /// Each CPU's interrupt flag, as a TLB shootdown's IPI sees it
    /// (`local_irq_save()` in GUP-fast; mmu.rs).
    pub irqs: Vec<LocalIrq<E>>,
    reports: Mutex<Vec<Violation>>,
    tracing: AtomicBool,
    /// Advanced by each memory check: a frame whose `data_touched` is older
    /// than the last check's epoch has not changed since.
    data_epoch: AtomicU64,
    /// The frames written in the current data epoch (`Cpu::touch_data`),
    /// for the incremental memory check; checker bookkeeping.
    touched: Mutex<Vec<Pfn>>,
    trace: Arc<Mutex<Vec<TraceRecord>>>,
    /// What executions reached (off unless the runner turns it on).
    pub coverage: crate::coverage::Coverage,
    /// The secondary MMUs (test_hmm.rs), by `MirrorId`.
    mirrors: RwLock<Vec<Arc<crate::test_hmm::Dmirror<E>>>>,
    /// The hugetlb pool and reservation maps (hugetlb.rs).
    pub hstate: crate::hugetlb::Hstate<E>,
    /// The files (filemap.rs), by `FileId`.
    files: RwLock<Vec<Arc<crate::filemap::Inode<E>>>>,
    /// The swap device and its swap cache (swapfile.rs, swap_state.rs).
    pub swap: Option<crate::swapfile::SwapInfo<E>>,
}

impl<E: Engine> Kernel<E> {
    /// Boots a machine.
    pub fn new(cfg: Config) -> Arc<Self> {
        let geo = cfg.geometry;
        let mem: Memory<E> = Memory::new(&geo, cfg.memory_bytes, cfg.nodes);
        let zero_pfn = Pfn(0);
        let zp = mem.page(zero_pfn);
        zp.refcount.store_i64(1);
        zp.set_flag(pg::RESERVED);
        mem.words(zero_pfn);
        Arc::new(Kernel {
            geo,
            mem,
            zero_pfn,
            huge_zero: AtomicU64::new(0),
            mms: RwLock::new(Vec::new()),
            anon_vmas: RwLock::new(Vec::new()),
            next_vma: AtomicUsize::new(0),
            deferred_split: DeferredSplitQueue {
                split_queue_lock: SpinLock::new(LockClass::SplitQueueLock),
                queue: Mutex::new(VecDeque::new()),
            },
            lru_lock: SpinLock::new(LockClass::LruLock),
            tlbs: (0..cfg.cpus)
                .map(|_| Mutex::new(Tlb::new(geo.hpage_pmd_order())))
                .collect(),
            irqs: (0..cfg.cpus).map(|_| LocalIrq::default()).collect(),
            reports: Mutex::new(Vec::new()),
            tracing: AtomicBool::new(false),
            data_epoch: AtomicU64::new(1),
            touched: Mutex::new(Vec::new()),
            trace: Arc::new(Mutex::new(Vec::new())),
            coverage: crate::coverage::Coverage::default(),
            mirrors: RwLock::new(Vec::new()),
            hstate: crate::hugetlb::Hstate::new(cfg.nodes, cfg.cpus),
            files: RwLock::new(Vec::new()),
            swap: (cfg.swap_bytes > 0).then(|| {
                crate::swapfile::SwapInfo::new(
                    cfg.swap_bytes,
                    geo.page_size(),
                    geo.hpage_pmd_nr(),
                    cfg.cpus,
                )
            }),
            cfg,
        })
        .boot_hugetlb()
    }

    /// Fills the hugetlb pool at boot (hugetlb_init()).
    fn boot_hugetlb(self: Arc<Self>) -> Arc<Self> {
        if self.cfg.hugetlb_pool > 0 {
            let cpu = crate::cpu::Cpu::new(self.clone(), CpuId(0));
            cpu.hugetlb_hstate_alloc_pages(self.cfg.hugetlb_pool);
        }
        self
    }

    /// Registers a file made by `make` with its id.
    pub(crate) fn register_file(
        &self,
        make: impl FnOnce(FileId) -> crate::filemap::Inode<E>,
    ) -> Arc<crate::filemap::Inode<E>> {
        E::touch(crate::engine::footprint::Obj::Arena(4), true);
        let mut fs = self.files.write().unwrap_or_else(|p| p.into_inner());
        let f = Arc::new(make(FileId(fs.len())));
        fs.push(f.clone());
        f
    }

    /// The file `id`.
    pub fn file(&self, id: FileId) -> Arc<crate::filemap::Inode<E>> {
        E::touch(crate::engine::footprint::Obj::Arena(4), false);
        self.files.read().unwrap_or_else(|p| p.into_inner())[id.0].clone()
    }

    /// Every file, for checkers.
    pub fn all_files(&self) -> Vec<Arc<crate::filemap::Inode<E>>> {
        self.files.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A copy of the whole machine as it is now, sharing nothing with it,
    /// for starting several runs from one state (the explorer runs the steps
    /// before a `together` block once and starts every execution from a
    /// copy). Made at a quiescent point: no CPU runs kernel code and no lock
    /// is held (asserted for every lock). Nothing is read through a
    /// scheduling point, so a copy adds no interleavings.
    ///
    /// Copies every field: the configuration and geometry, physical memory
    /// ([`Memory::snapshot`]: pages, frames' bytes, page tables, free lists),
    /// the zero page and the huge zero page, the mms ([`MmStruct::snapshot`])
    /// and anon_vmas ([`AnonVma::snapshot`]) in their arenas by id, with each
    /// VMA copied once and shared as in the original (by `VmaId`), the VMA id
    /// counter, the deferred split queue, `lru_lock`, every CPU's TLB, the
    /// violations not yet taken, the tracing switch and trace, the data
    /// epoch and the coverage sink.
    ///
    /// The copy's engine objects are made in a fixed order (memory in pfn
    /// order, the zones, the split queue's lock, `lru_lock`, the mms by id,
    /// the anon_vmas by id), so under exploration copies made after the same
    /// state number their objects the same way in every execution.
    pub fn snapshot(&self) -> Arc<Self> {
        self.snapshot_planned(&CopyPlan::default())
    }

    /// What later copies of this machine, unchanged, may skip reading
    /// ([`Memory::copy_plan`]).
    pub fn copy_plan(&self) -> CopyPlan {
        self.mem.copy_plan()
    }

    /// [`Kernel::snapshot`] with a plan made by [`Kernel::copy_plan`] of
    /// this machine, which has not changed since
    /// ([`Memory::snapshot_planned`]).
    pub fn snapshot_planned(&self, plan: &CopyPlan) -> Arc<Self> {
        let mem = self.mem.snapshot_planned(plan);
        let deferred_split = self.deferred_split.snapshot();
        let lru_lock = self.lru_lock.snapshot();
        let mut vmas = VmaCopies::default();
        let mms: Vec<Arc<MmStruct<E>>> = self
            .all_mms()
            .iter()
            .map(|mm| Arc::new(mm.snapshot(&mut vmas)))
            .collect();
        let anon_vmas: Vec<Arc<AnonVma<E>>> = self
            .all_anon_vmas()
            .iter()
            .map(|av| Arc::new(av.snapshot(&mut vmas)))
            .collect();
        let files: Vec<Arc<crate::filemap::Inode<E>>> = self
            .all_files()
            .iter()
            .map(|f| Arc::new(f.snapshot(&mut vmas)))
            .collect();
        let lock = |t: &Mutex<Tlb>| t.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Arc::new(Kernel {
            geo: self.geo,
            cfg: self.cfg.clone(),
            mem,
            zero_pfn: self.zero_pfn,
            huge_zero: AtomicU64::new(self.huge_zero.load(SeqCst)),
            mms: RwLock::new(mms),
            anon_vmas: RwLock::new(anon_vmas),
            next_vma: AtomicUsize::new(self.next_vma.load(SeqCst)),
            deferred_split,
            lru_lock,
            tlbs: self.tlbs.iter().map(|t| Mutex::new(lock(t))).collect(),
            irqs: self.irqs.iter().map(LocalIrq::snapshot).collect(),
            reports: Mutex::new(self.reports()),
            tracing: AtomicBool::new(self.tracing()),
            data_epoch: AtomicU64::new(self.data_epoch()),
            touched: Mutex::new(
                self.touched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
            trace: Arc::new(Mutex::new(
                self.trace.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            )),
            coverage: self.coverage.copy(),
            mirrors: RwLock::new(
                self.all_mirrors()
                    .iter()
                    .map(|m| Arc::new(m.snapshot()))
                    .collect(),
            ),
            hstate: self.hstate.snapshot(),
            files: RwLock::new(files),
            swap: self.swap.as_ref().map(|s| s.snapshot()),
        })
    }

    /// Registers a secondary MMU made by `make` with its id.
    pub(crate) fn register_mirror(
        &self,
        make: impl FnOnce(crate::mmu_notifier::MirrorId) -> crate::test_hmm::Dmirror<E>,
    ) -> crate::mmu_notifier::MirrorId {
        E::touch(crate::engine::footprint::Obj::Arena(3), true);
        let mut ms = self.mirrors.write().unwrap_or_else(|p| p.into_inner());
        let id = crate::mmu_notifier::MirrorId(ms.len());
        ms.push(Arc::new(make(id)));
        id
    }

    /// The secondary MMU `id`.
    pub fn mirror(&self, id: crate::mmu_notifier::MirrorId) -> Arc<crate::test_hmm::Dmirror<E>> {
        E::touch(crate::engine::footprint::Obj::Arena(3), false);
        self.mirrors.read().unwrap_or_else(|p| p.into_inner())[id.0].clone()
    }

    /// Every secondary MMU, for checkers.
    pub fn all_mirrors(&self) -> Vec<Arc<crate::test_hmm::Dmirror<E>>> {
        self.mirrors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a violation.
    pub fn report(&self, v: Violation) {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(v);
    }

    /// The violations recorded so far.
    pub fn reports(&self) -> Vec<Violation> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the violations recorded so far.
    pub fn take_reports(&self) -> Vec<Violation> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The current data epoch.
    pub fn data_epoch(&self) -> u64 {
        self.data_epoch.load(SeqCst)
    }

    /// Starts a memory check: returns the epoch whose changes it covers and
    /// moves later changes to the next epoch.
    pub fn begin_data_check(&self) -> u64 {
        self.data_epoch.fetch_add(1, SeqCst)
    }

    /// Notes a frame written in this epoch (`Cpu::touch_data`).
    pub(crate) fn note_touched(&self, pfn: Pfn) {
        self.touched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pfn);
    }

    /// The frames written since the last call (each once an epoch; call it
    /// with [`Kernel::begin_data_check`]), and forgets them.
    pub fn take_touched(&self) -> Vec<Pfn> {
        std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_tracing(&self, on: bool) {
        self.tracing.store(on, SeqCst);
    }
    pub fn tracing(&self) -> bool {
        self.tracing.load(SeqCst)
    }
    pub fn trace_event(&self, cpu: CpuId, event: TraceEvent, depth: usize) {
        if self.tracing() {
            self.trace
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(TraceRecord { cpu, depth, event });
        }
    }
    /// The trace buffer, shared so a checker outside an execution can read it
    /// after the execution is gone.
    pub fn trace_buffer(&self) -> Arc<Mutex<Vec<TraceRecord>>> {
        self.trace.clone()
    }
    pub fn take_trace(&self) -> Vec<TraceRecord> {
        std::mem::take(&mut *self.trace.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The huge zero page, if allocated.
    pub fn huge_zero_pfn(&self) -> Option<Pfn> {
        match self.huge_zero.load(SeqCst) {
            0 => None,
            v => Some(Pfn(v - 1)),
        }
    }
    /// Installs the huge zero page if none is (cmpxchg); returns the winner.
    pub(crate) fn install_huge_zero(&self, pfn: Pfn) -> Result<(), Pfn> {
        match self
            .huge_zero
            .compare_exchange(0, pfn.0 + 1, SeqCst, SeqCst)
        {
            Ok(_) => Ok(()),
            Err(v) => Err(Pfn(v - 1)),
        }
    }

    pub fn mm(&self, id: MmId) -> Arc<MmStruct<E>> {
        self.mms.read().unwrap_or_else(|p| p.into_inner())[id.0].clone()
    }
    pub fn all_mms(&self) -> Vec<Arc<MmStruct<E>>> {
        self.mms.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(crate) fn register_mm(&self, make: impl FnOnce(MmId) -> MmStruct<E>) -> Arc<MmStruct<E>> {
        E::touch(crate::engine::footprint::Obj::Arena(0), true);
        let mut mms = self.mms.write().unwrap_or_else(|p| p.into_inner());
        let mm = Arc::new(make(MmId(mms.len())));
        mms.push(mm.clone());
        mm
    }

    pub fn anon_vma(&self, id: AnonVmaId) -> Arc<AnonVma<E>> {
        self.anon_vmas.read().unwrap_or_else(|p| p.into_inner())[id.0].clone()
    }
    pub fn all_anon_vmas(&self) -> Vec<Arc<AnonVma<E>>> {
        self.anon_vmas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    pub(crate) fn register_anon_vma(
        &self,
        make: impl FnOnce(AnonVmaId) -> AnonVma<E>,
    ) -> Arc<AnonVma<E>> {
        E::touch(crate::engine::footprint::Obj::Arena(1), true);
        let mut avs = self.anon_vmas.write().unwrap_or_else(|p| p.into_inner());
        let av = Arc::new(make(AnonVmaId(avs.len())));
        avs.push(av.clone());
        av
    }

    pub(crate) fn new_vma_id(&self) -> VmaId {
        E::touch(crate::engine::footprint::Obj::Arena(2), true);
        VmaId(self.next_vma.fetch_add(1, SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::audit::audit;
    use crate::mmap::Prot;
    use crate::mmu::Access;
    use crate::types::VirtAddr;
    use crate::{Cpu, ShuttleEngine, StdEngine};

    /// A machine with two processes sharing a PTE-mapped THP queued for
    /// deferred split (so anon_vmas, page tables, a split queue entry and
    /// TLB entries all exist). Returns the CPU, the mms and the
    /// region.
    fn busy<E: Engine>(geo: Geometry) -> (Cpu<E>, Vec<Arc<MmStruct<E>>>, VirtAddr) {
        let k = Kernel::<E>::new(Config::new(geo));
        let cpu = Cpu::new(k, CpuId(0));
        let (ps, pmd) = (geo.page_size(), geo.pmd_size());
        let mm = cpu.mm_alloc();
        let a = cpu.do_mmap(&mm, pmd, Prot::ReadWrite, pmd).expect("mmap");
        for i in 0..geo.hpage_pmd_nr() {
            cpu.user_access(&mm, a.add_bytes(i * ps), Access::Write(0x11 + i as u8))
                .expect("write");
        }
        // PTE-maps the THP and queues it for deferred split.
        cpu.do_munmap(&mm, a.add_bytes(ps), ps).expect("munmap");
        let child = cpu.dup_mm(&mm).expect("fork");
        cpu.user_access(&child, a, Access::Read).expect("read");
        (cpu, vec![mm, child], a)
    }

    /// What a process sees of the region, page by page: the mapping and the
    /// bytes.
    fn seen<E: Engine>(cpu: &Cpu<E>, mm: &MmStruct<E>, a: VirtAddr) -> Vec<String> {
        let geo = cpu.k.geo;
        (0..geo.hpage_pmd_nr())
            .map(|i| {
                let at = a.add_bytes(i * geo.page_size());
                format!("{:?} {:?}", cpu.page_info(mm, at), cpu.peek_page(mm, at))
            })
            .collect()
    }

    /// The copy of a machine shows every process the same memory, audits
    /// clean, keeps each VMA shared between its mm and its anon_vmas, has
    /// the same TLBs, queues and counters, and goes on exactly as the
    /// original does, without either seeing the other's changes.
    #[test]
    fn a_kernel_copy_is_complete_shared_alike_and_independent() {
        for geo in [Geometry::TINY, Geometry::X86_64] {
            let (cpu, mms, a) = busy::<StdEngine>(geo);
            let k = &cpu.k;
            // A planned copy (the explorer's) shows the same as a full one.
            let planned = k.snapshot_planned(&k.copy_plan());
            let pcpu = Cpu::new(planned.clone(), CpuId(0));
            assert!(audit(&pcpu).is_empty(), "{:?}", audit(&pcpu));
            for mm in &mms {
                assert_eq!(seen(&pcpu, &planned.mm(mm.id), a), seen(&cpu, mm, a));
            }
            assert_eq!(planned.mem.allocated(), k.mem.allocated());
            let copy = k.snapshot();
            let ccpu = Cpu::new(copy.clone(), CpuId(0));
            assert!(audit(&ccpu).is_empty(), "{:?}", audit(&ccpu));
            assert_eq!(copy.all_mms().len(), 2);
            for mm in &mms {
                let cmm = copy.mm(mm.id);
                assert!(!Arc::ptr_eq(&cmm, mm));
                assert_eq!(seen(&ccpu, &cmm, a), seen(&cpu, mm, a));
            }
            // Each VMA is one object in the copy, shared as in the original.
            let in_mms: Vec<Arc<crate::mm_types::Vma>> =
                copy.all_mms().iter().flat_map(|m| m.vma_list()).collect();
            let mut linked = 0;
            for av in copy.all_anon_vmas() {
                for v in av.vmas.lock().unwrap().iter() {
                    let same = in_mms.iter().find(|m| m.id == v.id).expect("in an mm");
                    assert!(Arc::ptr_eq(same, v), "{:?} copied twice", v.id);
                    linked += 1;
                }
            }
            assert!(linked >= 2, "the anon_vmas link the VMAs");
            assert_eq!(
                *copy.deferred_split.queue.lock().unwrap(),
                *k.deferred_split.queue.lock().unwrap()
            );
            assert_eq!(copy.deferred_split.queue.lock().unwrap().len(), 1);
            let tlb = |k: &Kernel<StdEngine>| {
                let mut e = k.tlbs[0].lock().unwrap().entries();
                e.sort_by_key(|(key, _)| *key);
                e
            };
            assert!(!tlb(k).is_empty());
            assert_eq!(tlb(&copy), tlb(k));
            assert_eq!(copy.huge_zero_pfn(), k.huge_zero_pfn());
            assert_eq!(copy.data_epoch(), k.data_epoch());
            assert_eq!(copy.mem.nr_free(), k.mem.nr_free());
            assert_eq!(copy.new_vma_id(), k.new_vma_id());

            // The same work on both: the same results, and each its own.
            let before = seen(&cpu, &mms[0], a);
            let work = |cpu: &Cpu<StdEngine>, mms: &[Arc<MmStruct<StdEngine>>]| {
                let split = cpu.deferred_split_scan(usize::MAX);
                cpu.user_access(&mms[1], a, Access::Write(0x77))
                    .expect("cow");
                cpu.mmput(&mms[1]);
                (split, seen(cpu, &mms[0], a), cpu.k.mem.nr_free())
            };
            let cmms: Vec<_> = mms.iter().map(|m| copy.mm(m.id)).collect();
            let on_copy = work(&ccpu, &cmms);
            assert_eq!(seen(&cpu, &mms[0], a), before, "the original is untouched");
            assert_eq!(work(&cpu, &mms), on_copy);
            assert!(audit(&ccpu).is_empty() && audit(&cpu).is_empty());
        }
    }

    /// On the exploration engine a copy reads through no scheduling point
    /// and makes its objects in a fixed order (two copies of one state make
    /// the same number of them, so each object gets the same number).
    #[test]
    fn a_kernel_copy_makes_no_scheduling_point_and_numbers_alike() {
        use crate::engine::footprint;
        ShuttleEngine::count_runnable();
        footprint::reset();
        let (cpu, _mms, _) = busy::<ShuttleEngine>(Geometry::TINY);
        let mut made = Vec::new();
        for _ in 0..2 {
            footprint::reset();
            let copy = cpu.k.snapshot();
            assert!(footprint::take_hidden().is_empty());
            made.push(footprint::next_id());
            assert_eq!(copy.all_mms().len(), 2);
        }
        ShuttleEngine::stop_counting();
        footprint::stop();
        assert_eq!(made[0], made[1]);
        assert!(made[0] > 8 * cpu.k.mem.nr_pages() as u32);
    }

    /// A machine with a lock held is not at a quiescent point: no copy.
    #[test]
    fn a_kernel_with_a_lock_held_is_not_copied() {
        let (cpu, mms, _) = busy::<StdEngine>(Geometry::TINY);
        let _g = mms[1].mmap_lock.read(&cpu);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cpu.k.snapshot()));
        assert!(r.is_err());
    }
}
