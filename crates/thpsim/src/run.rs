//! Running a scenario on the model: the interpreter from the scenario language
//! to the model's system calls, user accesses and kernel work, with the
//! checkers run at every quiescent point.
//!
//! Steps outside `together` run one after another on CPU 0. A `together` block
//! runs its threads on CPUs 0..n: under `thpsim run` in one fixed interleaving
//! (round robin, one step of each thread at a time); under `thpsim explore` as
//! real concurrent threads of the exploration engine, which chooses the
//! interleaving. After every step outside a block and after every block, the
//! audit and the memory oracle check the whole machine.

mod hugetlb;
mod kernel316;
mod khugepaged;
mod migrate;
mod mirror;
mod pins;
mod swap;

use crate::labels::Labels;
use serde::Serialize;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};
use thpsim_model::check::oracle::MemoryOracle;
use thpsim_model::check::watch::{check_memory, TranslationWatch};
use thpsim_model::check::{audit::audit_pinned, CpuStalled, KernelOops, Violation};
use thpsim_model::coverage::ExecCoverage;
use thpsim_model::errno::Errno;
use thpsim_model::fixes::Fix;
use thpsim_model::huge_memory::Ebusy;
use thpsim_model::madvise::Advice as MAdvice;
use thpsim_model::mm_types::MmStruct;
use thpsim_model::mmap::Prot;
use thpsim_model::mmu::AccessError;
use thpsim_model::page_alloc::CopyPlan;
use thpsim_model::profile::KernelProfile;
use thpsim_model::task_mmu::{MapKind, PageInfo};
use thpsim_model::types::{CpuId, Geometry, VirtAddr};
use thpsim_model::{Config, Cpu, Engine, Kernel, ThpPolicy};
use thpsim_scenario::{
    check_supported, Advice, Backing, Context, Expectation, Feature, Item, Op, Outcome, PageKind,
    Protection, Scenario, ScenarioError, Selector, Show, Span, Step, Target, Together, UnitSizes,
};

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the file's `geometry` line.
    pub geometry: Option<thpsim_scenario::Geometry>,
    /// Fixes to revert in addition to the file's `revert` lines.
    pub reverts: Vec<Fix>,
    /// The memory oracle compares every mapped page at every quiescent
    /// point ([`Machine::set_full_checks`]).
    pub full_checks: bool,
}

/// One line of a run's report.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Record {
    /// A step and its outcome.
    Step {
        line: usize,
        cpu: usize,
        text: String,
        outcome: Outcome,
        expected: Outcome,
        /// The byte a `read` returned.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<u8>,
        ok: bool,
        /// Why the step failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// What the step did that its outcome does not say (`kernel:
        /// split-huge-page` is `ok` whether or not the THP was split).
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// An `expect` line.
    Expect {
        line: usize,
        text: String,
        ok: bool,
        found: String,
    },
    /// A `show` line; its pages follow.
    Show { line: usize, text: String },
    /// One page of a `show`.
    Page {
        line: usize,
        process: String,
        region: String,
        /// Page index in the region.
        offset: u64,
        kind: MapKind,
        /// The frame's label (`#1`, by first appearance; a THP's subpages share
        /// the THP's label).
        #[serde(skip_serializing_if = "Option::is_none")]
        page: Option<String>,
        /// Subpage index inside the THP.
        #[serde(skip_serializing_if = "Option::is_none")]
        subpage: Option<u64>,
        mapcount: i64,
        value: u8,
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<u32>,
    },
    /// A broken invariant (kernel assertion, audit, memory oracle, lock order).
    Violation { line: usize, violation: Violation },
}

impl Record {
    pub fn failed(&self) -> bool {
        match self {
            Record::Step { ok, .. } | Record::Expect { ok, .. } => !ok,
            Record::Page { .. } | Record::Show { .. } => false,
            Record::Violation { .. } => true,
        }
    }
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub geometry: &'static str,
    pub engine: &'static str,
    pub reverted: Vec<String>,
    pub records: Vec<Record>,
}

impl RunReport {
    /// Whether everything held.
    pub fn passed(&self) -> bool {
        !self.records.iter().any(Record::failed)
    }
    pub fn failures(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(|r| r.failed())
    }
}

/// Checks that a scenario uses only what this version implements, and builds
/// the machine configuration. Errors are invalid input (exit 2).
pub fn configure(scn: &Scenario, opts: &RunOptions) -> Result<(Config, UnitSizes), ScenarioError> {
    let e = |span: Span, msg: String| scn.error_at(span, msg);
    let geo_name = opts
        .geometry
        .or(scn.header.geometry.as_ref().map(|g| g.value))
        .unwrap_or(thpsim_scenario::Geometry::X86_64);
    if geo_name != scn.header.geometry() {
        // The parser checked pins, mirrors and khugepaged limits in the
        // file's geometry; this one is invalid input first, as there.
        scn.check_geometry(geo_name)?;
    }
    check_supported(scn, |f| {
        matches!(
            f,
            Feature::Core
                | Feature::Nodes
                | Feature::KhugepagedLimits
                | Feature::Pin
                | Feature::PinFast
                | Feature::PinReadOnly
                | Feature::Device
                | Feature::Mlock
                | Feature::MovePages
                | Feature::MovePagesAll
                | Feature::Mirror
                | Feature::Hugetlb
                | Feature::Memfd
                | Feature::Swap
                | Feature::Reclaim
                | Feature::Pageout
                | Feature::Collapse
                | Feature::Free
                | Feature::Khugepaged
                | Feature::Kernel316
        )
    })?;
    kernel316::check(scn, &opts.reverts)?;
    let geometry = match geo_name {
        thpsim_scenario::Geometry::X86_64 => Geometry::X86_64,
        thpsim_scenario::Geometry::Tiny => Geometry::TINY,
    };
    let units = geo_name.unit_sizes();
    let mut cfg = Config::new(geometry);
    cfg.kernel = match scn.header.kernel() {
        thpsim_scenario::KernelVersion::V5_8 => KernelProfile::V5_8,
        thpsim_scenario::KernelVersion::V3_16 => KernelProfile::V3_16,
    };
    if let Some(t) = &scn.header.thp {
        cfg.thp = match t.value {
            thpsim_scenario::ThpPolicy::Always => ThpPolicy::Always,
            thpsim_scenario::ThpPolicy::Madvise => ThpPolicy::Madvise,
            thpsim_scenario::ThpPolicy::Never => ThpPolicy::Never,
        };
    }
    if let Some(z) = &scn.header.zero_page {
        cfg.use_zero_page = z.value;
    }
    if let Some(n) = &scn.header.nodes {
        if n.value == 0 || n.value > 64 {
            return Err(e(
                n.span,
                format!("nodes must be between 1 and 64, not {}", n.value),
            ));
        }
        cfg.nodes = n.value;
    }
    if let Some(p) = &scn.header.hugetlb_pool {
        cfg.hugetlb_pool = p.value;
    }
    let limits = scn.khugepaged_limits(Some(geo_name))?;
    cfg.khugepaged = thpsim_model::khugepaged::KhugepagedLimits {
        max_ptes_none: limits.max_ptes_none,
        max_ptes_swap: limits.max_ptes_swap,
        max_ptes_shared: limits.max_ptes_shared,
    };
    if let Some(q) = scn.header.swap() {
        let bytes = scn.resolve(q, &units)?;
        // mkswap's minimum: the header page and at least one slot (5.8's
        // swapon(2) wants 10 pages; smaller devices are allowed here for
        // small scenarios).
        if bytes < 2 * geometry.page_size() {
            return Err(e(
                q.span,
                format!(
                    "swap must be at least 2 pages ({} bytes in this geometry)",
                    2 * geometry.page_size()
                ),
            ));
        }
        if bytes > 1 << 40 {
            return Err(e(q.span, "swap above 1 TiB is not supported".into()));
        }
        cfg.swap_bytes = bytes;
    }
    if let Some(m) = &scn.header.memory {
        let bytes = scn.resolve(m, &units)?;
        let min = 4 * geometry.pmd_size();
        if bytes < min {
            return Err(e(
                m.span,
                format!("memory must be at least 4 huge pages ({min} bytes in this geometry)"),
            ));
        }
        if bytes > 64 << 30 {
            return Err(e(m.span, "memory above 64 GiB is not supported".into()));
        }
        cfg.memory_bytes = bytes;
    }
    for r in &scn.header.reverts {
        let Some(fix) = Fix::by_name(&r.value) else {
            let names: Vec<_> = Fix::ALL.iter().map(|f| f.name()).collect();
            return Err(e(
                r.span,
                format!(
                    "unknown fix `{}`; `thpsim fixes` lists them: {}",
                    r.value,
                    names.join(", ")
                ),
            ));
        };
        cfg.fixes.revert(fix);
    }
    for &fix in &opts.reverts {
        cfg.fixes.revert(fix);
    }
    let threads = scn
        .items
        .iter()
        .map(|i| {
            if let Item::Together(t) = i {
                t.threads.len()
            } else {
                1
            }
        })
        .max()
        .unwrap_or(1);
    cfg.cpus = threads.max(1);
    hugetlb::check_pool(scn, &cfg)?;
    Ok((cfg, units))
}

/// A process of the scenario.
struct Proc<E: Engine> {
    mm: Arc<MmStruct<E>>,
    regions: BTreeMap<String, (u64, u64)>,
    alive: bool,
}

/// The scenario-level state, changed only between kernel operations.
struct State<E: Engine> {
    procs: BTreeMap<String, Proc<E>>,
    /// The pins held (`P: pin R = ...`), by name: the device's buffers (the
    /// memory oracle knows whose memory each pins).
    pins: BTreeMap<String, thpsim_model::dma::DmaBuffer>,
    /// The mirrors registered (`P: mirror M = ...`), by name.
    mirrors: BTreeMap<String, mirror::MirrorInfo>,
    oracle: MemoryOracle,
    labels: Labels,
    /// The memfd files made (`memfd F ...`), by name (hugetlb.rs).
    files: BTreeMap<String, thpsim_model::types::FileId>,
    /// Shared hugetlb mappings made so far (names their oracle objects).
    shared_maps: u64,
    /// The page-table entries as the last memory check saw them (which
    /// translations moved since: `check::watch`).
    watch: TranslationWatch,
    /// The kernel oopsed or a check failed: stop.
    dead: bool,
}

/// How a `together` block runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interleaving {
    /// One fixed interleaving: round robin, a step of each thread at a time.
    Fixed,
    /// Real concurrent threads of the engine.
    Concurrent,
}

/// The machine running one scenario.
pub struct Machine<E: Engine> {
    scn: Arc<Scenario>,
    pub k: Arc<Kernel<E>>,
    units: UnitSizes,
    interleaving: Interleaving,
    st: Mutex<State<E>>,
    out: Arc<Mutex<Vec<Record>>>,
    /// What each concurrent `together` block reached (item index, coverage).
    coverage: Mutex<Vec<(usize, ExecCoverage)>>,
    /// Concurrent blocks record the kernel trace (on unless the explorer
    /// turns it off for a search's executions: [`Machine::set_trace_blocks`]).
    trace_blocks: std::sync::atomic::AtomicBool,
    /// The memory oracle compares every mapped page at every quiescent
    /// point, not only what changed ([`Machine::set_full_checks`]).
    full_checks: std::sync::atomic::AtomicBool,
}

/// What a step did.
struct Done {
    outcome: Outcome,
    value: Option<u8>,
    detail: Option<String>,
    note: Option<String>,
}

impl Done {
    fn ok() -> Self {
        Done {
            outcome: Outcome::Ok,
            value: None,
            detail: None,
            note: None,
        }
    }
    fn outcome(o: Outcome) -> Self {
        Done {
            outcome: o,
            value: None,
            detail: None,
            note: None,
        }
    }
}

fn errno_outcome(e: Errno) -> Outcome {
    match e {
        Errno::Enomem => Outcome::Enomem,
        Errno::Einval | Errno::Eacces => Outcome::Einval,
        Errno::Ebusy => Outcome::Ebusy,
        Errno::Efault => Outcome::Efault,
        // Only a move_pages(2) status, never a call's return; the language
        // has no `enoent` outcome.
        Errno::Enoent => Outcome::Efault,
        // Kernel-internal (a page-cache race, a hugetlb allocation that a
        // fault turns into SIGBUS); no system call of the language returns
        // them.
        Errno::Eexist | Errno::Enospc => Outcome::Enomem,
    }
}

fn access_outcome(e: AccessError) -> Outcome {
    match e {
        AccessError::Segv => Outcome::Segv,
        AccessError::Sigbus => Outcome::Sigbus,
        AccessError::Oom => Outcome::Enomem,
    }
}

/// The record of a step that never finished (its CPU oopsed, or stalled
/// after another CPU's oops): failed, with `why`.
fn unfinished(step: &Step, line: usize, cpu: usize, text: String, why: &str) -> Record {
    Record::Step {
        line,
        cpu,
        text,
        outcome: Outcome::Ok,
        expected: step.expected(),
        value: None,
        ok: false,
        detail: Some(why.to_string()),
        note: None,
    }
}

/// Silences the panic message of a kernel oops (`BUG()`), which the run
/// reports itself; other panics print as usual.
pub fn install_oops_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<KernelOops>().is_none()
                && info.payload().downcast_ref::<CpuStalled>().is_none()
            {
                prev(info);
            }
        }));
    });
}

/// Runs a scenario on the std engine. `Err` is invalid input (exit 2).
pub fn run(scn: &Scenario, opts: &RunOptions) -> Result<RunReport, ScenarioError> {
    run_on::<thpsim_model::StdEngine>(scn, opts)
}

/// Runs a scenario on engine `E`.
pub fn run_on<E: Engine>(scn: &Scenario, opts: &RunOptions) -> Result<RunReport, ScenarioError> {
    install_oops_hook();
    let (cfg, units) = configure(scn, opts)?;
    let m = Arc::new(Machine::<E>::new(
        Arc::new(scn.clone()),
        cfg,
        units,
        Interleaving::Fixed,
    ));
    m.set_full_checks(opts.full_checks);
    m.run_items()?;
    Ok(m.report())
}

impl<E: Engine> Machine<E> {
    pub fn new(
        scn: Arc<Scenario>,
        cfg: Config,
        units: UnitSizes,
        interleaving: Interleaving,
    ) -> Self {
        let k = Kernel::<E>::new(cfg);
        let page_size = k.geo.page_size();
        let st = State {
            procs: BTreeMap::new(),
            pins: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            oracle: MemoryOracle::new(page_size),
            labels: Labels::default(),
            files: BTreeMap::new(),
            shared_maps: 0,
            watch: TranslationWatch::default(),
            dead: false,
        };
        Machine {
            scn,
            k,
            units,
            interleaving,
            st: Mutex::new(st),
            out: Arc::new(Mutex::new(Vec::new())),
            coverage: Mutex::new(Vec::new()),
            trace_blocks: std::sync::atomic::AtomicBool::new(true),
            full_checks: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Appends a record to the report.
    fn push(&self, r: Record) {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).push(r);
    }

    /// The report's records, shared: readable after the machine is gone (an
    /// exploration execution that deadlocked).
    pub fn records_buffer(&self) -> Arc<Mutex<Vec<Record>>> {
        self.out.clone()
    }

    /// What the concurrent `together` blocks reached so far, by item index
    /// (see `thpsim_model::coverage`); taken, so each block is counted once.
    pub fn take_coverage(&self) -> Vec<(usize, ExecCoverage)> {
        std::mem::take(&mut *self.coverage.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn st(&self) -> MutexGuard<'_, State<E>> {
        // The runner's state (processes, the memory oracle) is shared by the
        // CPUs of a `together` block: a step that uses it depends on every
        // other step that does (for the explorer's reduction).
        E::touch(thpsim_model::engine::footprint::Obj::Arena(3), true);
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The report of what ran so far.
    pub fn report(&self) -> RunReport {
        RunReport {
            scenario: self.scn.name.clone(),
            geometry: self.k.geo.name,
            engine: E::NAME,
            reverted: self
                .k
                .cfg
                .fixes
                .reverted()
                .map(|f| f.name().to_string())
                .collect(),
            records: self.out.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Whether the run stopped on a failure.
    pub fn dead(&self) -> bool {
        self.st().dead
    }

    fn cpu(&self, i: usize) -> Cpu<E> {
        Cpu::new(self.k.clone(), CpuId(i))
    }

    fn err(&self, span: Span, msg: impl Into<String>) -> ScenarioError {
        self.scn.error_at(span, msg)
    }

    /// A copy of the machine as it is now, sharing nothing with it: the
    /// kernel ([`Kernel::snapshot`]), the runner's state (the processes, each
    /// with the copy's mm of its id, its regions and whether it is alive;
    /// the memory oracle; the page labels; the data epoch of the last memory
    /// check; whether the run stopped), the records so far, the coverage of
    /// the blocks run so far, and the scenario, unit sizes and interleaving
    /// (the scenario is shared: nothing changes it). Running the remaining
    /// items on the copy ([`Machine::run_items_from`]) reports what running
    /// them on this machine would.
    ///
    /// Made between items (a quiescent point: no CPU in the kernel, no lock
    /// held); nothing is read through a scheduling point or noted in a step's
    /// footprint.
    pub fn snapshot(&self) -> Self {
        self.snapshot_planned(&CopyPlan::default())
    }

    /// [`Machine::snapshot`] with a copy plan of this machine's kernel,
    /// made while the machine has not changed since
    /// ([`Kernel::snapshot_planned`]): the frames found in their boot state
    /// are made afresh instead of read.
    pub fn snapshot_planned(&self, plan: &CopyPlan) -> Self {
        let k = self.k.snapshot_planned(plan);
        let st = self.st.lock().unwrap_or_else(|p| p.into_inner());
        let procs = st
            .procs
            .iter()
            .map(|(name, p)| {
                let copy = Proc {
                    mm: k.mm(p.mm.id),
                    regions: p.regions.clone(),
                    alive: p.alive,
                };
                (name.clone(), copy)
            })
            .collect();
        let state = State {
            procs,
            // A pin names frames by number, the same in the copy.
            pins: st.pins.clone(),
            mirrors: st.mirrors.clone(),
            oracle: st.oracle.clone(),
            labels: st.labels.clone(),
            files: st.files.clone(),
            shared_maps: st.shared_maps,
            watch: st.watch.clone(),
            dead: st.dead,
        };
        drop(st);
        let records = self.out.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let coverage = self
            .coverage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Machine {
            scn: self.scn.clone(),
            k,
            units: self.units,
            interleaving: self.interleaving,
            st: Mutex::new(state),
            out: Arc::new(Mutex::new(records)),
            coverage: Mutex::new(coverage),
            trace_blocks: std::sync::atomic::AtomicBool::new(
                self.trace_blocks.load(std::sync::atomic::Ordering::Relaxed),
            ),
            full_checks: std::sync::atomic::AtomicBool::new(
                self.full_checks.load(std::sync::atomic::Ordering::Relaxed),
            ),
        }
    }

    /// The memory oracle compares every mapped page at every quiescent
    /// point (`thpsim run --full-checks`), not only the pages whose
    /// content, translation or frame changed since the last one; the audit
    /// always checks everything. The last quiescent point of a run is a
    /// full sweep either way.
    pub fn set_full_checks(&self, on: bool) {
        self.full_checks
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs every item of the scenario.
    pub fn run_items(self: &Arc<Self>) -> Result<(), ScenarioError> {
        self.run_items_range(0..self.scn.items.len())
    }

    /// Runs the items from index `from` to the end (after
    /// [`Machine::run_items_range`] of the ones before, possibly on another
    /// machine this one is a [`Machine::snapshot`] of).
    pub fn run_items_from(self: &Arc<Self>, from: usize) -> Result<(), ScenarioError> {
        self.run_items_range(from..self.scn.items.len())
    }

    /// Runs the items of `items` (indexes into the scenario's items), as
    /// [`Machine::run_items`] runs them: stops when the run stopped, checks
    /// at each quiescent point as the interleaving requires.
    pub fn run_items_range(
        self: &Arc<Self>,
        items: std::ops::Range<usize>,
    ) -> Result<(), ScenarioError> {
        let cpu0 = self.cpu(0);
        for idx in items {
            if self.dead() {
                break;
            }
            match &self.scn.items[idx] {
                Item::Process(p) => {
                    let mm = cpu0.mm_alloc();
                    let mut st = self.st();
                    st.procs.insert(
                        p.value.text.clone(),
                        Proc {
                            mm,
                            regions: BTreeMap::new(),
                            alive: true,
                        },
                    );
                    st.oracle.on_spawn(&p.value.text);
                }
                Item::Step(step) => {
                    self.step(&cpu0, step)?;
                    // Exploration repeats the sequential steps identically in
                    // every execution (`thpsim run` audits each of them); it
                    // audits after each block and at the end.
                    let last = idx + 1 == self.scn.items.len();
                    if self.interleaving == Interleaving::Fixed || last {
                        self.quiesce(step.span.line, last);
                    } else {
                        self.report_kernel_violations(step.span.line);
                    }
                }
                Item::Together(t) => {
                    match self.interleaving {
                        Interleaving::Fixed => self.together_fixed(t)?,
                        Interleaving::Concurrent => self.together_concurrent(idx)?,
                    }
                    // A search's execution that ended the last block as an
                    // earlier one did has nothing new to check.
                    if self.interleaving == Interleaving::Concurrent
                        && !self.dead()
                        && !self.scn.items[idx + 1..]
                            .iter()
                            .any(|it| matches!(it, Item::Together(_)))
                        && crate::explore::repeat_of_seen_block()
                    {
                        break;
                    }
                    self.quiesce(t.span.line, idx + 1 == self.scn.items.len());
                }
                Item::Expect(x) => self.expect(x)?,
                Item::Show(s) => self.show(s)?,
            }
        }
        Ok(())
    }

    fn together_fixed(&self, t: &Together) -> Result<(), ScenarioError> {
        let cpus: Vec<Cpu<E>> = (0..t.threads.len()).map(|i| self.cpu(i)).collect();
        let longest = t.threads.iter().map(|th| th.steps.len()).max().unwrap_or(0);
        for round in 0..longest {
            for (i, th) in t.threads.iter().enumerate() {
                if let Some(step) = th.steps.get(round) {
                    self.step(&cpus[i], step)?;
                    if self.dead() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn together_concurrent(self: &Arc<Self>, idx: usize) -> Result<(), ScenarioError> {
        let Item::Together(t) = &self.scn.items[idx] else {
            return Ok(());
        };
        let errors: Arc<Mutex<Vec<ScenarioError>>> = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<Box<dyn FnOnce() + Send + 'static>> = (0..t.threads.len())
            .map(|i| {
                let m = self.clone();
                let errors = errors.clone();
                Box::new(move || {
                    let cpu = m.cpu(i);
                    let Item::Together(t) = &m.scn.items[idx] else {
                        return;
                    };
                    for step in &t.threads[i].steps {
                        if m.dead() {
                            break;
                        }
                        if let Err(e) = m.step(&cpu, step) {
                            errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                            break;
                        }
                    }
                }) as Box<dyn FnOnce() + Send + 'static>
            })
            .collect();
        self.k
            .set_tracing(self.trace_blocks.load(std::sync::atomic::Ordering::Relaxed));
        self.k.coverage.set_enabled(true);
        E::run_threads(threads);
        self.k.coverage.set_enabled(false);
        self.k.set_tracing(false);
        let reached = self.k.coverage.take();
        self.coverage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((idx, reached));
        let mut errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.swap_remove(0)),
        }
    }

    /// Records the kernel's own reports (assertions, lockdep) without an audit.
    fn report_kernel_violations(&self, line: usize) {
        let found = self.k.take_reports();
        if !found.is_empty() {
            self.st().dead = true;
        }
        for v in found {
            self.push(Record::Violation { line, violation: v });
        }
    }

    /// Whether concurrent blocks record the kernel trace (default on). The
    /// trace is no scheduling point: turning it off changes no schedule.
    pub fn set_trace_blocks(&self, on: bool) {
        self.trace_blocks
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs the checkers at a quiescent point.
    /// The checks of a quiescent point: the kernel's reports, the audit
    /// (every table and frame), and the memory oracle, incremental (the
    /// pages whose content, translation or frame changed since the last
    /// check) but at the `last` one of a run, or with
    /// [`Machine::set_full_checks`], where it compares every mapped page.
    fn quiesce(&self, line: usize, last: bool) {
        if self.dead() {
            return;
        }
        let cpu = self.cpu(0);
        let mut found = self.k.take_reports();
        let pinned: Vec<_> = self
            .st()
            .pins
            .values()
            .flat_map(|buf| buf.pages.iter().copied())
            .collect();
        found.extend(audit_pinned(&cpu, &pinned));
        self.forget_unmapped_hugetlb(&cpu);
        let mut guard = self.st();
        let st = &mut *guard;
        let procs = &st.procs;
        let mm_of = |name: &str| procs.get(name).filter(|p| p.alive).map(|p| p.mm.clone());
        // The pin rule first: a process that no longer maps its pinned frame
        // is the cause of what the byte comparison then finds. A page
        // swapped out but still in the swap cache is the frame its next
        // access maps.
        found.extend(st.oracle.check_pins(|name, page| {
            mm_of(name)
                .and_then(|mm| cpu.frame_for_read(&mm, VirtAddr(page)))
                .map(|f| f.0)
        }));
        let alive: Vec<(&str, &Arc<MmStruct<E>>)> = procs
            .iter()
            .filter(|(_, p)| p.alive)
            .map(|(n, p)| (n.as_str(), &p.mm))
            .collect();
        let full = self.full_checks.load(std::sync::atomic::Ordering::Relaxed) || last;
        // An exploration's machine is small and checked after each block:
        // it examines every page rather than keep the index (see
        // `check_memory`).
        let track = self.interleaving == Interleaving::Fixed;
        let mem = check_memory(&cpu, &mut st.oracle, &mut st.watch, &alive, full, track);
        found.extend(mem);
        let mut st = guard;
        if !found.is_empty() {
            st.dead = true;
        }
        for v in found {
            self.push(Record::Violation { line, violation: v });
        }
    }

    fn proc_mm(&self, name: &thpsim_scenario::Name) -> Result<Arc<MmStruct<E>>, ScenarioError> {
        match self.st().procs.get(&name.text) {
            Some(p) if p.alive => Ok(p.mm.clone()),
            Some(_) => Err(self.err(name.span, format!("process `{}` has exited", name.text))),
            None => Err(self.err(name.span, format!("process `{}` does not exist", name.text))),
        }
    }

    /// Resolves a target to `[start, end)` in the process's address space.
    fn range(&self, process: &str, t: &Target) -> Result<(u64, u64), ScenarioError> {
        let region = self
            .st()
            .procs
            .get(process)
            .and_then(|p| p.regions.get(&t.region.text).copied());
        let Some((start, len)) = region else {
            return Err(self.err(
                t.region.span,
                format!("region `{}` is not mapped in this process", t.region.text),
            ));
        };
        let (s, e) = self.selector_range(t, len)?;
        Ok((start + s, start + e))
    }

    /// A read of `[s, e)` (`span`) of `owner`'s memory, page by page through `load`
    /// (the process's own loads, or a mirror's): a byte the memory oracle
    /// did not expect when the page's read began is checked against it as it
    /// is when the read ended (a concurrent store of the same process may
    /// land in between); a byte other than `expect` is the step's detail
    /// (`who` read it, at its offset from `base`).
    fn read_checked(
        &self,
        owner: &str,
        (s, e): (u64, u64),
        expect: Option<u8>,
        base: u64,
        who: &str,
        mut load: impl FnMut(u64, u64) -> Result<Vec<u8>, Outcome>,
    ) -> Done {
        let ps = self.k.geo.page_size();
        let (mut first, mut detail) = (None, None);
        let mut a = s;
        while a < e {
            let chunk = ((a & !(ps - 1)) + ps).min(e) - a;
            let before: Vec<u8> = {
                let st = self.st();
                (a..a + chunk)
                    .map(|x| st.oracle.expected(owner, x))
                    .collect()
            };
            let bytes = match load(a, chunk) {
                Ok(b) => b,
                Err(o) => return Done::outcome(o),
            };
            let st = self.st();
            for (i, &b) in bytes.iter().enumerate() {
                let addr = a + i as u64;
                first.get_or_insert(b);
                if b != before[i] {
                    if let Some(v) = st.oracle.check_read(owner, addr, b) {
                        self.k.report(v);
                    }
                }
                if let Some(x) = expect {
                    if b != x && detail.is_none() {
                        detail = Some(format!(
                            "{who} {b:#04x} at offset {:#x}, expected {x:#04x}",
                            addr - base
                        ));
                    }
                }
            }
            drop(st);
            a += chunk;
        }
        Done {
            outcome: Outcome::Ok,
            value: first,
            detail,
            note: None,
        }
    }

    /// Resolves a target's selector to `[s, e)` within a thing of `len` bytes
    /// (a region, or a pin for `device:` steps).
    fn selector_range(&self, t: &Target, len: u64) -> Result<(u64, u64), ScenarioError> {
        let (s, e) = match &t.selector {
            Selector::At(q) => {
                let off = self.scn.resolve(q, &self.units)?;
                (off, off + 1)
            }
            Selector::Range { start: s, end: e } => {
                let s = s
                    .as_ref()
                    .map(|q| self.scn.resolve(q, &self.units))
                    .transpose()?
                    .unwrap_or(0);
                let e = e
                    .as_ref()
                    .map(|q| self.scn.resolve(q, &self.units))
                    .transpose()?
                    .unwrap_or(len);
                (s, e)
            }
        };
        if s >= e {
            return Err(self.err(
                t.selector_span,
                format!(
                    "empty range {}: the end must be after the start",
                    t.selector
                ),
            ));
        }
        if e > len {
            return Err(self.err(
                t.selector_span,
                format!(
                    "{} reaches past the end of `{}` ({} bytes)",
                    t.selector, t.region.text, len
                ),
            ));
        }
        Ok((s, e))
    }

    /// Runs one step on `cpu`, catching a kernel oops.
    fn step(&self, cpu: &Cpu<E>, step: &Step) -> Result<(), ScenarioError> {
        let r = catch_unwind(AssertUnwindSafe(|| self.exec(cpu, step)));
        let text = self.scn.text(step.span).to_string();
        let line = step.span.line;
        let cpu = cpu.id.0;
        match r {
            Ok(Ok(done)) => {
                let expected = step.expected();
                let ok = done.outcome == expected && done.detail.is_none();
                let rec = Record::Step {
                    line,
                    cpu,
                    text,
                    outcome: done.outcome,
                    expected,
                    value: done.value,
                    ok,
                    detail: done.detail,
                    note: done.note,
                };
                self.push(rec);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(payload) if payload.downcast_ref::<CpuStalled>().is_some() => {
                // Another CPU oopsed, and this one would have waited forever
                // on what it held: the step never ends.
                self.push(unfinished(
                    step,
                    line,
                    cpu,
                    text,
                    "stalled: waits on a lock or page another CPU held when it oopsed",
                ));
                Ok(())
            }
            Err(payload) => {
                if payload.downcast_ref::<KernelOops>().is_none() {
                    std::panic::resume_unwind(payload);
                }
                let reports = self.k.take_reports();
                let mut st = self.st();
                st.dead = true;
                self.push(unfinished(
                    step,
                    line,
                    cpu,
                    text,
                    "kernel BUG: the CPU oopsed",
                ));
                for v in reports {
                    self.push(Record::Violation { line, violation: v });
                }
                drop(st);
                // From here a CPU that would wait on what this one held stops.
                E::note_oops();
                Ok(())
            }
        }
    }

    fn exec(&self, cpu: &Cpu<E>, step: &Step) -> Result<Done, ScenarioError> {
        let pmd_size = self.k.geo.pmd_size();
        let ps = self.k.geo.page_size();
        let page_span = |s: u64, e: u64| (s & !(ps - 1), e.div_ceil(ps) * ps);
        match (&step.context, &step.op) {
            (Context::Process(pn), op) => {
                let name = pn.text.clone();
                let mm = self.proc_mm(pn)?;
                match op {
                    Op::Fork { child } => match cpu.dup_mm(&mm) {
                        Ok(cmm) => {
                            let mut st = self.st();
                            let regions = st.procs[&name].regions.clone();
                            st.procs.insert(
                                child.text.clone(),
                                Proc {
                                    mm: cmm,
                                    regions,
                                    alive: true,
                                },
                            );
                            st.oracle.on_fork(&name, &child.text);
                            Ok(Done::ok())
                        }
                        Err(e) => Ok(Done::outcome(errno_outcome(e))),
                    },
                    Op::Exit => {
                        cpu.mmput(&mm);
                        let mut st = self.st();
                        if let Some(p) = st.procs.get_mut(&name) {
                            p.alive = false;
                        }
                        st.oracle.on_exit(&name);
                        Ok(Done::ok())
                    }
                    Op::Mmap {
                        region,
                        size,
                        shared,
                        backing,
                    } if backing.value != Backing::Anon || *shared => {
                        self.mmap_hugetlb(cpu, &name, &mm, region, size, *shared, &backing.value)
                    }
                    Op::Memfd {
                        file,
                        size,
                        hugetlb,
                    } => self.memfd(cpu, file, size, *hugetlb),
                    Op::Mmap { region, size, .. } => {
                        let len = self.scn.resolve(size, &self.units)?;
                        if len == 0 {
                            return Ok(Done::outcome(Outcome::Einval));
                        }
                        match cpu.do_mmap(&mm, len, Prot::ReadWrite, pmd_size) {
                            Ok(addr) => {
                                let len = len.div_ceil(ps) * ps;
                                let mut st = self.st();
                                st.procs
                                    .get_mut(&name)
                                    .expect("proc")
                                    .regions
                                    .insert(region.text.clone(), (addr.0, len));
                                st.oracle.on_mmap(&name, addr.0, len);
                                Ok(Done::ok())
                            }
                            Err(e) => Ok(Done::outcome(errno_outcome(e))),
                        }
                    }
                    Op::Munmap { target } => {
                        let (s, e) = self.range(&name, target)?;
                        match cpu.do_munmap(&mm, VirtAddr(s), e - s) {
                            Ok(()) => {
                                let (s2, e2) = page_span(s, e);
                                self.st().oracle.on_munmap(&name, s2, e2 - s2);
                                Ok(Done::ok())
                            }
                            Err(e) => Ok(Done::outcome(errno_outcome(e))),
                        }
                    }
                    Op::Mprotect { target, prot } => {
                        let (s, e) = self.range(&name, target)?;
                        let prot = match prot.value {
                            Protection::R => Prot::Read,
                            Protection::Rw => Prot::ReadWrite,
                            Protection::None => Prot::None,
                        };
                        Ok(match cpu.do_mprotect(&mm, VirtAddr(s), e - s, prot) {
                            Ok(()) => Done::ok(),
                            Err(e) => Done::outcome(errno_outcome(e)),
                        })
                    }
                    Op::Madvise { target, advice } => {
                        let (s, e) = self.range(&name, target)?;
                        let a = match advice.value {
                            Advice::Dontneed => MAdvice::DontNeed,
                            Advice::Hugepage => MAdvice::Hugepage,
                            Advice::Nohugepage => MAdvice::NoHugepage,
                            Advice::Pageout => {
                                return self.madvise_pageout(cpu, &name, &mm, target)
                            }
                            Advice::Free => return self.madvise_free(cpu, &name, &mm, target),
                            // MADV_COLLAPSE is 6.1's: madvise_behavior_valid()
                            // of 5.8 rejects it.
                            Advice::Collapse => {
                                return Ok(Done::outcome(errno_outcome(Errno::Einval)))
                            }
                        };
                        let r = cpu.do_madvise(&mm, VirtAddr(s), e - s, a);
                        // MADV_DONTNEED over a hole zaps the mapped parts and
                        // then returns ENOMEM (madvise_vma() goes on past holes).
                        if a == MAdvice::DontNeed && matches!(r, Ok(()) | Err(Errno::Enomem)) {
                            let (s2, e2) = page_span(s, e);
                            self.st().oracle.on_dontneed(&name, s2, e2 - s2);
                        }
                        Ok(match r {
                            Ok(()) => Done::ok(),
                            Err(e) => Done::outcome(errno_outcome(e)),
                        })
                    }
                    Op::Write { target, value } => {
                        let (s, e) = self.range(&name, target)?;
                        let mut a = s;
                        while a < e {
                            let chunk = ((a & !(ps - 1)) + ps).min(e) - a;
                            if let Err(err) = cpu.user_fill(&mm, VirtAddr(a), chunk, value.value) {
                                return Ok(Done::outcome(access_outcome(err)));
                            }
                            self.st().oracle.on_fill(&name, a, chunk, value.value);
                            a += chunk;
                        }
                        Ok(Done::ok())
                    }
                    Op::Read { target, expect } => {
                        let (s, e) = self.range(&name, target)?;
                        let expect = expect.as_ref().map(|x| x.value);
                        Ok(
                            self.read_checked(&name, (s, e), expect, s, "read", |a, chunk| {
                                cpu.user_load(&mm, VirtAddr(a), chunk)
                                    .map_err(access_outcome)
                            }),
                        )
                    }
                    Op::Pin {
                        pin,
                        target,
                        write,
                        fast,
                    } => self.pin(cpu, &name, &mm, pin, target, *write, *fast),
                    Op::Unpin { pin } => self.unpin(cpu, pin),
                    Op::MovePages { target, node, all } => {
                        self.move_pages(cpu, &name, &mm, target, node.value, *all)
                    }
                    Op::Mirror { mirror, target } => self.mirror(cpu, &name, &mm, mirror, target),
                    Op::Mlock { target } => {
                        let (s, e) = self.range(&name, target)?;
                        Ok(match cpu.do_mlock(&mm, VirtAddr(s), e - s) {
                            Ok(()) => Done::ok(),
                            Err(e) => Done::outcome(errno_outcome(e)),
                        })
                    }
                    Op::Munlock { target } => {
                        let (s, e) = self.range(&name, target)?;
                        Ok(match cpu.do_munlock(&mm, VirtAddr(s), e - s) {
                            Ok(()) => Done::ok(),
                            Err(e) => Done::outcome(errno_outcome(e)),
                        })
                    }
                    // The parser gives a process only its own operations.
                    other => Err(self.err(
                        step.op_span,
                        format!("`{}` is not a process's operation", other.keyword()),
                    )),
                }
            }
            (Context::Device, Op::DeviceWrite { target, value }) => {
                self.device_write(cpu, target, value.value)
            }
            (Context::Mirror, Op::MirrorWrite { target, value }) => {
                self.mirror_write(cpu, target, value.value)
            }
            (Context::Mirror, Op::MirrorRead { target, expect }) => {
                self.mirror_read(cpu, target, expect.as_ref().map(|x| x.value))
            }
            (Context::Device, Op::DeviceRead { target, expect }) => {
                self.device_read(cpu, target, expect.as_ref().map(|x| x.value))
            }
            (Context::Kernel, Op::SplitHugePage { process, target }) => {
                // As the debugfs interface: the write succeeds whether or not
                // the THP could be split (a racing unmap or an extra reference
                // makes split_huge_page() return -EBUSY); `expect` shows the
                // result.
                let mm = self.proc_mm(process)?;
                let (s, _) = self.range(&process.text, target)?;
                let r: Result<bool, Ebusy> = cpu.thp().split_huge_pages_pid(cpu, &mm, VirtAddr(s));
                Ok(Done {
                    note: Some(
                        match r {
                            Ok(true) => "the THP was split",
                            Ok(false) => "no THP mapped there: nothing split",
                            Err(Ebusy) => "not split: split_huge_page() returned -EBUSY",
                        }
                        .to_string(),
                    ),
                    ..Done::ok()
                })
            }
            (Context::Kernel, Op::Khugepaged { process, target }) => {
                self.khugepaged(cpu, process, target)
            }
            (Context::Kernel, Op::Reclaim { process, target }) => {
                self.reclaim(cpu, process, target)
            }
            (Context::Kernel, Op::DeferredSplit) => {
                let n = cpu.deferred_split_scan(usize::MAX);
                Ok(Done {
                    note: Some(format!("{n} THP{} split", if n == 1 { "" } else { "s" })),
                    ..Done::ok()
                })
            }
            // The parser pairs each operation with its own context only.
            (ctx, op) => Err(self.err(
                step.op_span,
                format!("`{}` is not an operation of `{ctx}:`", op.keyword()),
            )),
        }
    }

    /// The page at a place of a process.
    fn info_at(
        &self,
        process: &thpsim_scenario::Name,
        t: &Target,
    ) -> Result<(PageInfo, u64), ScenarioError> {
        let mm = self.proc_mm(process)?;
        let (s, _) = self.range(&process.text, t)?;
        Ok((self.cpu(0).page_info(&mm, VirtAddr(s)), s))
    }

    fn expect(&self, x: &thpsim_scenario::Expect) -> Result<(), ScenarioError> {
        if self.dead() {
            return Ok(());
        }
        let (info, addr) = self.info_at(&x.process, &x.target)?;
        let (ok, found) = match &x.what {
            Expectation::Kind(k) if k.value == PageKind::Mlocked => {
                let mm = self.proc_mm(&x.process)?;
                let mlocked = self.cpu(0).page_is_mlocked(&mm, VirtAddr(addr));
                let found = if mlocked {
                    "mlocked".to_string()
                } else {
                    format!("{}, not mlocked", info.kind.keyword())
                };
                (mlocked, found)
            }
            Expectation::Kind(k) => {
                let Some(want) = kind_of(k.value) else {
                    // `mlocked` is parsed as its own expectation, not a kind.
                    return Err(self.err(
                        k.span,
                        format!("`expect ... {}` is not a mapping kind", k.value),
                    ));
                };
                (info.kind == want, info.kind.keyword().to_string())
            }
            Expectation::Mapcount(n) => (
                info.mapcount == n.value as i64,
                format!("mapcount {}", info.mapcount),
            ),
            Expectation::Node(n) => (
                info.node == Some(n.value),
                format!("node {}", info.node.map_or("-".into(), |n| n.to_string())),
            ),
            Expectation::Same { process, target } | Expectation::Other { process, target } => {
                let (other, _) = self.info_at(process, target)?;
                let same = info.pfn.is_some() && info.pfn == other.pfn;
                let want_same = matches!(x.what, Expectation::Same { .. });
                let mut st = self.st();
                let mut name = |p: Option<thpsim_model::types::Pfn>| {
                    p.map_or("nothing".to_string(), |f| st.labels.label(f))
                };
                let (a, b) = (name(info.head.or(info.pfn)), name(other.head.or(other.pfn)));
                (same == want_same, format!("{} and {}", a, b))
            }
        };
        let text = self.scn.text(x.span).to_string();
        self.push(Record::Expect {
            line: x.span.line,
            text,
            ok,
            found,
        });
        Ok(())
    }

    fn show(&self, s: &Show) -> Result<(), ScenarioError> {
        if self.dead() {
            return Ok(());
        }
        let mm = self.proc_mm(&s.process)?;
        let (start, end) = self.range(&s.process.text, &s.target)?;
        let region_start = self.st().procs[&s.process.text].regions[&s.target.region.text].0;
        let ps = self.k.geo.page_size();
        let cpu = self.cpu(0);
        let mut st = self.st();
        self.push(Record::Show {
            line: s.span.line,
            text: self.scn.text(s.span).to_string(),
        });
        let mut a = start & !(ps - 1);
        while a < end {
            let info = cpu.page_info(&mm, VirtAddr(a));
            // A swapped-out page is not read (as /proc/PID/pagemap observers
            // cannot without swapping it in): its value shows as 0.
            let value = if info.kind == MapKind::Swap {
                0
            } else {
                cpu.peek_byte(&mm, VirtAddr(a))
            };
            let label_frame = info.head.or(info.pfn);
            let page = match info.kind {
                MapKind::None | MapKind::Zero => None,
                _ => label_frame.map(|f| st.labels.label(f)),
            };
            let subpage = match (info.head, info.pfn) {
                (Some(h), Some(f)) => Some(f.0 - h.0),
                _ => None,
            };
            self.push(Record::Page {
                line: s.span.line,
                process: s.process.text.clone(),
                region: s.target.region.text.clone(),
                offset: (a - region_start) / ps,
                kind: info.kind,
                page,
                subpage,
                mapcount: info.mapcount,
                value,
                node: info.node,
            });
            a += ps;
        }
        Ok(())
    }
}

/// What is mapped for a page kind; `None` for `mlocked` (a page flag, not a
/// kind of mapping: `expect` checks it apart).
fn kind_of(k: PageKind) -> Option<MapKind> {
    Some(match k {
        PageKind::None => MapKind::None,
        PageKind::Zero => MapKind::Zero,
        PageKind::Base => MapKind::Base,
        PageKind::ThpPmd => MapKind::ThpPmd,
        PageKind::ThpPte => MapKind::ThpPte,
        PageKind::Hugetlb => MapKind::Hugetlb,
        PageKind::Swap => MapKind::Swap,
        PageKind::Migration => MapKind::Migration,
        PageKind::Mlocked => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use thpsim_model::StdEngine;

    /// The copy's processes use the copy's mms (by id), and its state,
    /// records and coverage are copies: changing the copy leaves the
    /// original as it was.
    #[test]
    fn a_machine_copy_owns_its_state() {
        let src = "geometry tiny\nprocess P\nP: mmap A 1h\nP: write A[..] = 0x11\nP: fork C\n\
                   show C A[0]\nC: exit\n";
        let scn = thpsim_scenario::parse("copy.thp", src).expect("parses");
        let (cfg, units) = configure(&scn, &RunOptions::default()).expect("valid");
        let m = Arc::new(Machine::<StdEngine>::new(
            Arc::new(scn),
            cfg,
            units,
            Interleaving::Fixed,
        ));
        // Up to the `show`; the `exit` (item 5) runs on the copy.
        m.run_items_range(0..5).expect("valid");
        m.coverage
            .lock()
            .unwrap()
            .push((4, ExecCoverage::default()));
        let c = Arc::new(m.snapshot());
        {
            let (a, b) = (m.st.lock().unwrap(), c.st.lock().unwrap());
            assert_eq!(a.procs.keys().collect::<Vec<_>>(), ["C", "P"]);
            for (name, p) in &b.procs {
                assert!(Arc::ptr_eq(&p.mm, &c.k.mm(p.mm.id)), "{name}");
                assert!(!Arc::ptr_eq(&p.mm, &a.procs[name].mm), "{name}");
                assert_eq!(p.regions, a.procs[name].regions);
                assert!(p.alive);
            }
            assert_eq!(format!("{:?}", b.labels), format!("{:?}", a.labels));
            assert!(!b.dead);
        }
        assert_eq!(c.take_coverage().len(), 1);
        let records = m.report().records.len();
        assert_eq!(c.report().records.len(), records);
        c.run_items_from(5).expect("valid");
        assert!(!c.st.lock().unwrap().procs["C"].alive);
        assert!(m.st.lock().unwrap().procs["C"].alive, "independent");
        assert_eq!(m.report().records.len(), records);
        assert_eq!(m.take_coverage().len(), 1);
    }
}
