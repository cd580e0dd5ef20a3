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
use crate::mm_types::{AnonVma, MmStruct};
use crate::mmu::{LocalIrq, Tlb};
use crate::page::pg;
use crate::page_alloc::Memory;
use crate::sync::{LockClass, SpinLock};
use crate::types::{AnonVmaId, CpuId, Geometry, MmId, Pfn, VmaId};
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
    /// CPUs (one per concurrent thread of a scenario).
    pub cpus: usize,
    pub fixes: FixSet,
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
            cpus: 4,
            fixes: FixSet::default(),
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
    trace: Arc<Mutex<Vec<TraceRecord>>>,
    /// What executions reached (off unless the runner turns it on).
    pub coverage: crate::coverage::Coverage,
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
        zp.words(geo.page_size());
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
            tlbs: (0..cfg.cpus).map(|_| Mutex::new(Tlb::default())).collect(),
            irqs: (0..cfg.cpus).map(|_| LocalIrq::default()).collect(),
            reports: Mutex::new(Vec::new()),
            tracing: AtomicBool::new(false),
            data_epoch: AtomicU64::new(1),
            trace: Arc::new(Mutex::new(Vec::new())),
            coverage: crate::coverage::Coverage::default(),
            cfg,
        })
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
