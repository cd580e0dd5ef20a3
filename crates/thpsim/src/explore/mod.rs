//! Race exploration: a scenario's `together` blocks run as concurrent threads
//! on the shuttle engine, whose scheduler picks the interleaving at every lock
//! operation and every atomic access to a page-table entry or page counter.
//!
//! The steps before the first `together` block run once per search (per
//! shrinking replay, per job) and each execution starts from a copy of the
//! machine they left (`prefix`), then runs the rest of the scenario and its
//! checks. The first failing execution is replayed from its recorded schedule,
//! shrunk (context switches are removed while the same failure still occurs),
//! replayed once more with tracing, and reported with a replay token.
//!
//! A schedule is written as its *switches*: at each decision (a scheduling
//! point where two or more CPUs could run) the
//! default is to keep running the current CPU (or, if it blocked or finished,
//! the lowest runnable one); a switch `k:t` says that at point `k` task `t`
//! runs instead. The replay token (`token`) carries the schedule, the
//! geometry, the reverted fixes and hashes of the build and the scenario.
//!
//! A search is a set of numbered executions (`sched::Slice`). With `jobs` > 1
//! the slice is split among that many OS threads, each with its own shuttle
//! `Runner` (shuttle's state is thread-local), job `j` running
//! `slice.shard(j, jobs)`; the first failure stops every job before its next
//! execution, and the jobs' counts, schedule fingerprints and coverage add up
//! to the search's. A search can itself be a shard of a bigger one
//! (`ExploreOptions::shard`); `shard` writes and merges the shard lines.

pub mod bounded;
pub mod coverage;
pub mod prefix;
pub mod sched;
pub mod shard;
pub mod token;

use crate::run::{
    configure, install_oops_hook, Interleaving, Machine, Record, RunOptions, RunReport,
};
use serde::Serialize;
use shuttle::scheduler::{RandomScheduler, Schedule, Scheduler, Task, TaskId};
use std::collections::{BTreeSet, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thpsim_model::kernel::{TraceEvent, TraceRecord};
use thpsim_model::{Config, ShuttleEngine};
use thpsim_scenario::{Scenario, ScenarioError, UnitSizes};

/// Search strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Probabilistic concurrency testing (PCT) with a bug depth.
    Pct,
    /// A random choice at every scheduling point.
    Random,
    /// Every schedule with at most `preemptions` preemptions, less those
    /// equivalent to one already run (`bounded`).
    Bounded { preemptions: usize },
    /// The same without the reduction: every schedule of the bound (for
    /// checking that the reduction loses nothing; not offered on the command
    /// line).
    BoundedUnreduced { preemptions: usize },
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Pct => "pct",
            Strategy::Random => "random",
            Strategy::Bounded { .. } => "bounded",
            Strategy::BoundedUnreduced { .. } => "bounded-unreduced",
        }
    }
}

/// Where a search is, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Executions run so far (all jobs).
    pub executions: usize,
    /// Distinct schedules among them.
    pub distinct: usize,
    /// A bounded search's estimated fraction of its tree walked, in parts
    /// per million (the mean of its parts'; see `Bounded::progress`).
    pub bounded_done_ppm: Option<u64>,
}

/// How to explore.
#[derive(Clone)]
pub struct ExploreOptions {
    pub run: RunOptions,
    pub strategy: Strategy,
    /// Executions of the whole search (`usize::MAX`: no bound but `time`).
    pub iterations: usize,
    /// A bound on the whole search's time (all jobs).
    pub time: Option<Duration>,
    pub depth: usize,
    pub seed: u64,
    /// `(i, n)`: this is slice `i` of `n`.
    pub shard: Option<(u64, u64)>,
    /// OS threads to split the search among (at least 1; `Strategy::Bounded`
    /// always runs on one).
    pub jobs: usize,
    /// Called after each execution (from the job that ran it).
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

impl ExploreOptions {
    /// Refuses options that do not describe a search.
    pub fn check(&self) -> Result<(), String> {
        if self.iterations == 0 {
            return Err("the search must have at least 1 iteration".to_string());
        }
        if self.depth == 0 {
            return Err("the PCT depth must be at least 1".to_string());
        }
        if self.jobs == 0 {
            return Err("a search needs at least 1 job".to_string());
        }
        if let Some((i, n)) = self.shard {
            if n == 0 || i >= n {
                return Err(format!("shard {i}/{n}: a shard I/N needs 0 <= I < N"));
            }
            let bounded = matches!(
                self.strategy,
                Strategy::Bounded { .. } | Strategy::BoundedUnreduced { .. }
            );
            if bounded && self.iterations != usize::MAX {
                return Err(
                    "a bounded search with --iterations cannot be sharded: its shards would \
                     not stop at the same schedules; shard the whole bounded search"
                        .to_string(),
                );
            }
        }
        Ok(())
    }

    /// The executions this search runs (its shard of the whole search).
    pub fn slice(&self) -> sched::Slice {
        let all = sched::Slice::all(self.iterations);
        match self.shard {
            Some((i, n)) => all.shard(i, n),
            None => all,
        }
    }
}

impl Default for ExploreOptions {
    fn default() -> Self {
        ExploreOptions {
            run: RunOptions::default(),
            strategy: Strategy::Pct,
            iterations: 10_000,
            time: None,
            depth: 3,
            seed: 0,
            shard: None,
            jobs: 1,
            progress: None,
        }
    }
}

/// A schedule as a list of switches `(point, task)`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Switches(pub Vec<(usize, usize)>);

/// A failure found and shrunk.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// What failed (the first failing record).
    pub what: String,
    /// The replay token.
    pub token: String,
    /// The report of the replayed, shrunk execution.
    pub report: RunReport,
    /// The kernel functions of the `together` block, in the order they ran.
    pub trace: Vec<TraceRecord>,
    /// Context switches before and after shrinking.
    pub switches_found: usize,
    pub switches_shrunk: usize,
    /// How many executions the search had run (all jobs) when it stopped.
    pub at_execution: usize,
    /// The search index of the failing execution (the `i` of its
    /// `(seed, i)`; `None` for a replay).
    pub index: Option<u64>,
}

/// The result of an exploration.
#[derive(Clone, Debug, Serialize)]
pub struct ExploreReport {
    pub scenario: String,
    pub strategy: Strategy,
    pub seed: u64,
    pub depth: usize,
    pub shard: Option<(u64, u64)>,
    pub geometry: &'static str,
    /// The jobs (OS threads) the search ran on.
    pub jobs: usize,
    pub reverted: Vec<String>,
    pub executions: usize,
    pub distinct: usize,
    pub elapsed_ms: u128,
    pub found: Option<Found>,
    /// The counts of a bounded search.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounded: Option<bounded::BoundedStats>,
    /// What the search reached, per `together` block (with warnings when it
    /// did not race the threads).
    pub coverage: Vec<coverage::BlockCoverage>,
    /// Remarks on how the search ran (e.g. dfs on one job).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The distinct schedules' fingerprints, sorted (for shard lines).
    #[serde(skip)]
    pub fingerprints: Vec<u64>,
    /// The coverage totals the `coverage` report was made from.
    #[serde(skip)]
    pub coverage_totals: coverage::CoverageTotals,
}

/// What one execution did.
#[derive(Default)]
struct ExecLog {
    /// Per decision: (chosen task, the default choice there).
    points: Vec<(u32, u32)>,
    /// The task the scheduler chose last: the one that goes on at the points
    /// it granted ahead (`ShuttleEngine::grant`).
    last: u32,
}

thread_local! {
    /// The decisions of the execution running on this OS thread (a shuttle
    /// runner runs its executions on the thread that calls it, one at a
    /// time): written by [`Recorder`] at every decision without a lock, and
    /// read at the execution's end ([`account`]) and after the run
    /// ([`drive`] copies it into its job's [`Shared`]).
    static EXEC_LOG: std::cell::RefCell<ExecLog> = const {
        std::cell::RefCell::new(ExecLog { points: Vec::new(), last: 0 })
    };
}

impl ExecLog {
    fn switches(&self) -> Switches {
        Switches(
            self.points
                .iter()
                .enumerate()
                .filter(|(_, (chosen, default))| chosen != default)
                .map(|(k, (chosen, _))| (k, *chosen as usize))
                .collect(),
        )
    }
    /// The chosen threads as 64-bit words, four 16-bit lanes each (a
    /// thread number of 0xffff or more takes its lane's all-ones value
    /// and follows its word whole): an injective encoding of the choices,
    /// hashed a word rather than a decision at a time.
    fn choice_words(&self, mut feed: impl FnMut(u64)) {
        for chunk in self.points.chunks(4) {
            let mut w = 0u64;
            let mut wide = false;
            for (i, (c, _)) in chunk.iter().enumerate() {
                let lane = (*c).min(0xffff);
                wide |= lane == 0xffff;
                w |= u64::from(lane) << (16 * i);
            }
            feed(w);
            if wide {
                for (c, _) in chunk.iter().filter(|(c, _)| *c >= 0xffff) {
                    feed(u64::from(*c));
                }
            }
        }
        feed(self.points.len() as u64);
    }
    /// A hash of the choices, the same in every process of one build (shards
    /// of a search are merged by their fingerprints).
    fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        self.choice_words(|w| h = sched::mix(h ^ w));
        h
    }
    /// Two independent 64-bit hashes of the choices so far, told apart from
    /// a bounded search's traces by a tag: the key of a block end
    /// ([`repeat_of_seen_block`]).
    fn decisions_key(&self) -> (u64, u64) {
        let (mut a, mut b) = (0x5c4e_d01e_u64, 0x0b10_c4e7_u64);
        self.choice_words(|w| {
            a = sched::mix(a ^ w);
            b = (b.rotate_left(5) ^ w).wrapping_mul(0x0100_0000_01b3);
        });
        (a ^ self.points.len() as u64, sched::mix(b))
    }
}

/// Called by the runner after the scenario's last `together` block: whether
/// an earlier execution of this search job ended that block with the same
/// machine, recording this one's end if not. Two executions end the block
/// with the same machine when they made the same decisions up to its end
/// (every execution starts from the same state, and the model is
/// deterministic given its decisions), and, in a reduced bounded search,
/// when they ordered every pair of dependent steps alike (the same trace,
/// [`bounded`]). Everything after the last block runs on one CPU with no
/// decision, so it would repeat that earlier execution's steps and checks
/// exactly, which passed (a failure ends the search): the runner skips them.
/// So it does when the bounded walk knows the whole execution from a covered
/// decision on repeats one run before ([`bounded::repeating`]).
/// The table is emptied at the start of every search job and replay
/// ([`bounded::start_search`]), so a replay never skips anything.
pub fn repeat_of_seen_block() -> bool {
    if bounded::repeating() {
        return true;
    }
    let key = bounded::trace().unwrap_or_else(|| EXEC_LOG.with(|l| l.borrow().decisions_key()));
    bounded::seen_block_end(key)
}

fn default_choice(current: Option<usize>, runnable: &[usize]) -> usize {
    match current {
        Some(c) if runnable.contains(&c) => c,
        _ => runnable.iter().copied().min().unwrap_or(0),
    }
}

/// [`default_choice`] over shuttle's runnable tasks (no allocation).
pub(super) fn default_of(current: Option<TaskId>, runnable: &[&Task]) -> usize {
    match current {
        Some(c) if runnable.iter().any(|t| t.id() == c) => usize::from(c),
        _ => runnable
            .iter()
            .map(|t| usize::from(t.id()))
            .min()
            .unwrap_or(0),
    }
}

/// What the executions of a search add up to (all jobs).
#[derive(Default)]
struct Totals {
    executions: usize,
    distinct: HashSet<u64>,
    /// What the executions reached.
    coverage: coverage::CoverageTotals,
}

/// What every job of one search shares.
#[derive(Default)]
struct Search {
    /// Set at the first failure: every job stops before its next execution.
    stop: AtomicBool,
    /// The end of the search's time.
    deadline: Option<Instant>,
    totals: Mutex<Totals>,
    progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
    /// Each bounded part's estimated fraction done (`Bounded::progress`).
    bounded_parts: Mutex<Vec<Arc<std::sync::atomic::AtomicU64>>>,
}

impl Search {
    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state of one job (one shuttle runner), shared between its scheduler
/// wrapper and the explorer.
struct Shared {
    search: Arc<Search>,
    /// The executions of this job.
    slice: sched::Slice,
    /// Executions started.
    started: u64,
    /// The search index of the current (or last) execution.
    index: Option<u64>,
    log: ExecLog,
    failed: bool,
}

impl Shared {
    fn new(search: Arc<Search>, slice: sched::Slice) -> Shared {
        Shared {
            search,
            slice,
            started: 0,
            index: None,
            log: ExecLog::default(),
            failed: false,
        }
    }
}

impl Default for Shared {
    /// A search of its own, of one execution (replays, probes).
    fn default() -> Self {
        Shared::new(Arc::default(), sched::Slice::all(1))
    }
}

/// The number of the task every shuttle execution starts with: the
/// scenario runner.
const MAIN_TASK: usize = 0;

/// Wraps a shuttle scheduler: records every decision; stops when told.
struct Recorder<S> {
    inner: S,
    shared: Arc<Mutex<Shared>>,
    search: Arc<Search>,
}

impl<S: Scheduler> Scheduler for Recorder<S> {
    fn new_execution(&mut self) -> Option<Schedule> {
        if self.search.stop.load(Ordering::SeqCst)
            || self.search.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return None;
        }
        // The log keeps the last execution's decisions when the search ends.
        let next = self.inner.new_execution()?;
        EXEC_LOG.with(|l| l.borrow_mut().points.clear());
        let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        sh.index = sh.slice.nth(sh.started);
        sh.started += 1;
        Some(next)
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        is_yielding: bool,
    ) -> Option<TaskId> {
        // The execution's main task (the scenario runner, task 0) is never
        // preempted: while CPU threads exist it only spawns them (each spawn
        // is one of shuttle's scheduling points) and then sleeps until the
        // last one finishes (`ShuttleEngine::run_threads`). A choice there
        // would only start a CPU thread before its siblings exist, which
        // orders nothing the model can see.
        // The decisions the inner scheduler granted ahead (each chose the
        // task it chose last, the default there) are points too, logged
        // before this one; the inner scheduler counts them itself.
        let granted = ShuttleEngine::granted();
        if granted > 0 {
            EXEC_LOG.with(|l| {
                let mut l = l.borrow_mut();
                let t = l.last;
                l.points
                    .extend(std::iter::repeat_n((t, t), granted as usize));
            });
        }
        if current.map(usize::from) == Some(MAIN_TASK)
            && runnable.iter().any(|t| usize::from(t.id()) == MAIN_TASK)
        {
            ShuttleEngine::take_granted();
            return current;
        }
        let t = self.inner.next_task(runnable, current, is_yielding)?;
        // A scheduler that grants counts what it granted; one that does not
        // never has any.
        ShuttleEngine::take_granted();
        // Only real decisions (two or more runnable tasks) are points.
        EXEC_LOG.with(|l| {
            let mut l = l.borrow_mut();
            if runnable.len() > 1 {
                let default = default_of(current, runnable) as u32;
                l.points.push((usize::from(t) as u32, default));
            }
            l.last = usize::from(t) as u32;
        });
        Some(t)
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
}

/// Replays a switch list: at each point the listed task if runnable, else the
/// default choice.
struct SwitchReplay {
    switches: std::collections::BTreeMap<usize, usize>,
    point: usize,
    started: bool,
}

impl Scheduler for SwitchReplay {
    fn new_execution(&mut self) -> Option<Schedule> {
        if self.started {
            return None;
        }
        self.started = true;
        Some(Schedule::new(0))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        _y: bool,
    ) -> Option<TaskId> {
        let ids: Vec<usize> = runnable.iter().map(|t| usize::from(t.id())).collect();
        if ids.len() < 2 {
            return ids.first().map(|&t| TaskId::from(t));
        }
        let want = self
            .switches
            .get(&self.point)
            .copied()
            .filter(|t| ids.contains(t));
        self.point += 1;
        Some(TaskId::from(want.unwrap_or_else(|| {
            default_choice(current.map(usize::from), &ids)
        })))
    }

    fn next_u64(&mut self) -> u64 {
        0
    }
}

/// One prepared scenario: everything an execution needs.
#[derive(Clone)]
struct Prepared {
    scn: Arc<Scenario>,
    cfg: Config,
    units: UnitSizes,
}

/// What the last execution left outside shuttle.
#[derive(Default)]
struct Outputs {
    records: Option<Arc<Mutex<Vec<Record>>>>,
    trace: Option<Arc<Mutex<Vec<TraceRecord>>>>,
    report: Option<RunReport>,
    error: Option<String>,
}

fn shuttle_config() -> shuttle::Config {
    let mut c = shuttle::Config::new();
    c.failure_persistence = shuttle::FailurePersistence::None;
    // The search's time is checked by `Recorder::new_execution` (one deadline
    // for all jobs).
    c.max_time = None;
    c.silence_warnings = true;
    // The model has no spin loops (every wait blocks), so a long execution is
    // just a big scenario (x86_64 tables have 512 entries); the bound only
    // catches a livelock.
    c.max_steps = shuttle::MaxSteps::FailAfter(200_000_000);
    c
}

/// Adds an execution to the search's totals; stops the search when it
/// failed, or when it had no decision (every execution would be this one).
fn account(
    shared: &Mutex<Shared>,
    coverage: Vec<(usize, thpsim_model::coverage::ExecCoverage)>,
    failed: bool,
) {
    // Every thread's end runs the scheduler, which logs what it granted.
    assert_eq!(
        ShuttleEngine::granted(),
        0,
        "decisions granted ahead and not logged at the end of an execution"
    );
    let (fp, no_decision) = EXEC_LOG.with(|l| {
        let l = l.borrow();
        (l.fingerprint(), l.points.is_empty())
    });
    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    if failed {
        sh.failed = true;
    }
    let search = sh.search.clone();
    drop(sh);
    if failed || no_decision {
        search.stop.store(true, Ordering::SeqCst);
    }
    // A bounded part's run of the default path only finds its decisions: it
    // is another part's schedule, counted there.
    if bounded::discovering() && !failed {
        return;
    }
    let now = {
        let mut t = search.totals();
        t.executions += 1;
        for (item, reached) in coverage {
            t.coverage.add(item, &reached);
        }
        t.distinct.insert(fp);
        let parts = search
            .bounded_parts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Progress {
            executions: t.executions,
            distinct: t.distinct.len(),
            bounded_done_ppm: (!parts.is_empty()).then(|| {
                parts.iter().map(|p| p.load(Ordering::Relaxed)).sum::<u64>() / parts.len() as u64
            }),
        }
    };
    if let Some(f) = &search.progress {
        f(now);
    }
}

/// Runs executions with `scheduler` until one fails, the scheduler ends, the
/// search is stopped or its time is up. Returns the outputs of the last
/// execution and whether it failed. `trace`: the executions record the
/// kernel trace of their blocks (a replay that shows a failure); a search's
/// executions do not (the trace is only read from the replay of the failing
/// schedule, and recording it is no scheduling point, so the schedules are
/// the same either way).
fn drive<S: Scheduler + 'static>(
    p: &Prepared,
    scheduler: S,
    shared: Arc<Mutex<Shared>>,
    trace: bool,
) -> (Outputs, bool) {
    let outputs = Arc::new(Mutex::new(Outputs::default()));
    // No trace of an earlier search on this thread may cut this run short.
    bounded::start_search();
    let search = shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .search
        .clone();
    let runner = shuttle::Runner::new(
        Recorder {
            inner: scheduler,
            shared: shared.clone(),
            search,
        },
        shuttle_config(),
    );
    // The steps before the first `together` block, run once (`prefix`).
    let prefix = prefix::Prefix::build(p);
    let (p2, out2, sh2) = (p.clone(), outputs.clone(), shared.clone());
    let result = catch_unwind(AssertUnwindSafe(move || {
        runner.run(move || {
            // Every thread of the execution comes from `run_threads`: count
            // them, so that a thread running alone offers no points.
            ShuttleEngine::count_runnable();
            // A copy of the machine the prefix left, or a fresh machine that
            // runs every item.
            let (m, from) = match &prefix {
                Some(pre) => pre.start(),
                None => (
                    Arc::new(Machine::<ShuttleEngine>::new(
                        p2.scn.clone(),
                        p2.cfg.clone(),
                        p2.units,
                        Interleaving::Concurrent,
                    )),
                    Ok(0),
                ),
            };
            m.set_trace_blocks(trace);
            {
                let mut o = out2.lock().unwrap_or_else(|p| p.into_inner());
                *o = Outputs {
                    records: Some(m.records_buffer()),
                    trace: Some(m.k.trace_buffer()),
                    report: None,
                    error: None,
                };
            }
            let r = from.and_then(|i| m.run_items_from(i).map_err(|e| e.to_string()));
            let report = m.report();
            let failed = r.is_err() || !report.passed();
            {
                let mut o = out2.lock().unwrap_or_else(|p| p.into_inner());
                o.error = r.err();
                o.report = Some(report);
            }
            account(&sh2, m.take_coverage(), failed);
        });
    }));
    ShuttleEngine::stop_counting();
    bounded::end_search();
    // The last execution's decisions, for the switch list of a failure.
    shared.lock().unwrap_or_else(|p| p.into_inner()).log = EXEC_LOG.with(|l| ExecLog {
        points: l.borrow().points.clone(),
        last: 0,
    });
    let mut o = std::mem::take(&mut *outputs.lock().unwrap_or_else(|p| p.into_inner()));
    match result {
        Ok(_) => {
            let failed = shared.lock().unwrap_or_else(|p| p.into_inner()).failed;
            (o, failed)
        }
        Err(payload) => {
            // Shuttle stopped the execution: a deadlock, or a panic in the model.
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the execution panicked".to_string());
            account(&shared, Vec::new(), true);
            let records = o
                .records
                .as_ref()
                .map(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone())
                .unwrap_or_default();
            let deadlock = msg.contains("deadlock");
            let mut records = records;
            // A deadlock after an oops is its consequence (the oopsed CPU
            // never releases its locks): report the oops alone.
            if !records.iter().any(Record::failed) {
                let violation = thpsim_model::check::Violation {
                    id: if deadlock {
                        thpsim_model::check::invariants::DEADLOCK
                    } else {
                        "PANIC"
                    },
                    kind: thpsim_model::check::ViolationKind::Deadlock,
                    message: if deadlock {
                        format!("every CPU is blocked: {msg}")
                    } else {
                        msg
                    },
                    cpu: None,
                    backtrace: Vec::new(),
                    page: None,
                };
                records.push(Record::Violation { line: 0, violation });
            }
            o.report = Some(RunReport {
                scenario: p.scn.name.clone(),
                geometry: p.cfg.geometry.name,
                engine: "shuttle",
                reverted: p
                    .cfg
                    .fixes
                    .reverted()
                    .map(|f| f.name().to_string())
                    .collect(),
                records,
            });
            (o, true)
        }
    }
}

/// How many explorations (or replays) are running: while any is, panics are
/// theirs to report. A count, not a flag, since searches can overlap (the
/// jobs of one search share one guard; library callers may run several).
static QUIET: AtomicUsize = AtomicUsize::new(0);

/// While alive, panics print nothing: the explorer reports kernel oopses,
/// deadlocks and model panics itself (shuttle's own hook would print a schedule
/// for each).
struct QuietPanics;

impl QuietPanics {
    fn new() -> Self {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Let shuttle install its hook (once per process), then replace
            // it: while exploring, panics are the explorer's to report; at any
            // other time they go to the hook that was there before shuttle's
            // (shuttle's would print a schedule for a panic outside any
            // execution).
            let original: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send> =
                Arc::from(std::panic::take_hook());
            let o = original.clone();
            std::panic::set_hook(Box::new(move |info| o(info)));
            shuttle::Runner::new(RandomScheduler::new_from_seed(0, 1), shuttle_config()).run(|| {});
            drop(std::panic::take_hook());
            // The hook is process-wide: it silences the panics of every job
            // thread while a search runs.
            std::panic::set_hook(Box::new(move |info| {
                if QUIET.load(Ordering::SeqCst) == 0 {
                    original(info);
                }
            }));
        });
        QUIET.fetch_add(1, Ordering::SeqCst);
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        QUIET.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The identity of a failure, for shrinking: the first failing record.
fn signature(report: &RunReport) -> Option<String> {
    report.failures().next().map(|r| match r {
        Record::Violation { violation, .. } => violation.id.to_string(),
        Record::Step { line, .. } => format!("step line {line}"),
        Record::Expect { line, .. } => format!("expect line {line}"),
        _ => "other".to_string(),
    })
}

/// A human description of the first failure.
fn describe(report: &RunReport) -> String {
    // A kernel assertion says more than the step it stopped.
    let oops = report.failures().find(|r| matches!(r, Record::Violation { violation, .. } if violation.kind == thpsim_model::check::ViolationKind::KernelBug));
    oops.or_else(|| report.failures().next())
        .map(|r| match r {
            Record::Violation { violation, line } => {
                format!("line {line}: {}: {}", violation.id, violation.message)
            }
            Record::Step {
                line,
                text,
                detail,
                outcome,
                expected,
                ..
            } => format!(
                "line {line}: `{text}`: {}",
                detail.clone().unwrap_or_else(|| format!(
                    "{} (expected {})",
                    outcome.keyword(),
                    expected.keyword()
                ))
            ),
            Record::Expect {
                line, text, found, ..
            } => format!("line {line}: `{text}`: found {found}"),
            _ => String::new(),
        })
        .unwrap_or_default()
}

/// Replays one switch list; returns the outputs, the executed schedule, and
/// whether it failed.
fn replay_switches(p: &Prepared, sw: &Switches, trace: bool) -> (Outputs, Switches, bool) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let sched = SwitchReplay {
        switches: sw.0.iter().copied().collect(),
        point: 0,
        started: false,
    };
    let (o, failed) = drive(p, sched, shared.clone(), trace);
    let actual = shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .log
        .switches();
    (o, actual, failed)
}

/// The decisions of the default schedule (no switch).
fn probe_decisions(p: &Prepared) -> usize {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let sched = SwitchReplay {
        switches: Default::default(),
        point: 0,
        started: false,
    };
    drive(p, sched, shared.clone(), false);
    let n = shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .log
        .points
        .len();
    n
}

/// Removes switches while the same failure still occurs.
fn shrink(p: &Prepared, start: Switches, sig: &str) -> Switches {
    let mut best = start;
    let mut budget = 300;
    let mut i = best.0.len();
    while i > 0 && budget > 0 {
        i -= 1;
        if i >= best.0.len() {
            continue;
        }
        let mut cand = best.clone();
        cand.0.remove(i);
        budget -= 1;
        let (o, actual, failed) = replay_switches(p, &cand, false);
        if failed
            && o.report.as_ref().and_then(signature).as_deref() == Some(sig)
            && actual.0.len() < best.0.len()
        {
            best = actual;
            i = best.0.len();
        }
    }
    best
}

fn prepare(scn: &Scenario, opts: &RunOptions) -> Result<Prepared, ScenarioError> {
    let (mut cfg, units) = configure(scn, opts)?;
    if scn.header.memory.is_none() && cfg.geometry == thpsim_model::types::Geometry::TINY {
        // Exploration builds a machine per execution: keep it small, with
        // room beside the hugetlb pool on each node.
        let blocks = ((cfg.hugetlb_pool + 6) * cfg.nodes as u64).max(12);
        cfg.memory_bytes = blocks * cfg.geometry.pmd_size();
    }
    Ok(Prepared {
        scn: Arc::new(scn.clone()),
        cfg,
        units,
    })
}

/// What one job left: the outputs of its last execution, whether it failed,
/// and that execution's schedule and index.
struct JobResult {
    outputs: Outputs,
    failed: bool,
    switches: Switches,
    index: Option<u64>,
}

/// Runs `slice` on `jobs` OS threads, each its own shuttle runner with the
/// scheduler `make` gives for its part (`slice.shard(j, jobs)`).
fn run_jobs<S, F>(
    p: &Prepared,
    search: &Arc<Search>,
    slice: sched::Slice,
    jobs: usize,
    make: F,
) -> Vec<JobResult>
where
    S: Scheduler + 'static,
    F: Fn(sched::Slice) -> S + Sync,
{
    let one = |part: sched::Slice| {
        let shared = Arc::new(Mutex::new(Shared::new(search.clone(), part)));
        let (outputs, failed) = drive(p, make(part), shared.clone(), false);
        let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
        JobResult {
            outputs,
            failed,
            switches: sh.log.switches(),
            index: sh.index,
        }
    };
    if jobs <= 1 {
        return vec![one(slice)];
    }
    std::thread::scope(|sc| {
        let one = &one;
        let handles: Vec<_> = (0..jobs as u64)
            .map(|j| {
                let part = slice.shard(j, jobs as u64);
                let h = std::thread::Builder::new()
                    .name(format!("thpsim-job-{j}"))
                    .spawn_scoped(sc, move || one(part));
                (part, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(part, h)| match h {
                // A panic outside an execution is a bug of the explorer.
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|payload| std::panic::resume_unwind(payload)),
                // No thread for this job (the system refused one): run its
                // part on this thread, while the other jobs run.
                Err(_) => one(part),
            })
            .collect()
    })
}

/// Explores the interleavings of a scenario.
pub fn explore(scn: &Scenario, opts: &ExploreOptions) -> Result<ExploreReport, ScenarioError> {
    if let Err(e) = opts.check() {
        let span = scn
            .items
            .iter()
            .find_map(|it| match it {
                thpsim_scenario::Item::Together(t) => Some(t.span),
                _ => None,
            })
            .unwrap_or_default();
        return Err(ScenarioError::new(span, e));
    }
    install_oops_hook();
    let _quiet = QuietPanics::new();
    let p = prepare(scn, &opts.run)?;
    let seed = opts.seed;
    let start = Instant::now();
    let mut slice = opts.slice();
    let search = Arc::new(Search {
        deadline: opts.time.map(|t| start + t),
        progress: opts.progress.clone(),
        ..Search::default()
    });
    let mut notes = Vec::new();
    // The decisions of the default schedule: PCT draws its change points
    // from them (every shard the same); with none, every execution is the
    // same one, and the search is execution 0 alone.
    let k = probe_decisions(&p);
    let mut jobs = opts.jobs.max(1);
    if k == 0 {
        slice.end = Some(slice.end.unwrap_or(1).min(1));
        jobs = 1;
    }
    if matches!(
        opts.strategy,
        Strategy::Bounded { .. } | Strategy::BoundedUnreduced { .. }
    ) && opts.iterations != usize::MAX
        && jobs > 1
    {
        notes.push(format!(
            "a bounded search stopped after --iterations runs on one job (its parts would not \
             stop at the same schedules): {jobs} jobs asked"
        ));
        jobs = 1;
    }
    let bounded_stats: Mutex<Vec<Arc<Mutex<bounded::BoundedStats>>>> = Mutex::new(Vec::new());
    let results = match opts.strategy {
        Strategy::Bounded { preemptions } | Strategy::BoundedUnreduced { preemptions } => {
            let limit = (opts.iterations != usize::MAX).then_some(opts.iterations as u64);
            let reduce = matches!(opts.strategy, Strategy::Bounded { .. });
            let claims = bounded::Claims::default();
            // The shard's part of the tree (the slice's residue class of
            // units; see `bounded`), walked by the jobs together, each with
            // counts of its own.
            let r = run_jobs(&p, &search, slice, jobs, |part| {
                let stats = Arc::new(Mutex::new(bounded::BoundedStats::default()));
                bounded_stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(stats.clone());
                // The jobs share the shard's part of the tree and claim its
                // units as they reach them (`Bounded::job`), so a job never
                // idles while another has a large unit left.
                let job = ((part.start - slice.start) / slice.step.max(1)) as usize;
                let mut b =
                    bounded::Bounded::new(preemptions, limit, stats).part(slice.start, slice.step);
                if jobs > 1 {
                    b = b.job(job, claims.clone());
                }
                search
                    .bounded_parts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(b.progress());
                if reduce {
                    b
                } else {
                    b.without_reduction()
                }
            });
            thpsim_model::engine::footprint::stop();
            r
        }
        Strategy::Pct => run_jobs(&p, &search, slice, jobs, |part| {
            sched::Pct::new(seed, opts.depth, k as u64, part)
        }),
        Strategy::Random => run_jobs(&p, &search, slice, jobs, |part| {
            sched::Uniform::new(seed, part)
        }),
    };
    let (executions, distinct, fingerprints, totals) = {
        let t = search.totals();
        let mut fps: Vec<u64> = t.distinct.iter().copied().collect();
        fps.sort_unstable();
        (t.executions, t.distinct.len(), fps, t.coverage.clone())
    };
    // Of the jobs that failed (usually one), the lowest execution index.
    let failing = results
        .into_iter()
        .filter(|r| r.failed)
        .min_by_key(|r| r.index.unwrap_or(u64::MAX));
    let found = failing.map(|r| {
        let sig = r
            .outputs
            .report
            .as_ref()
            .and_then(signature)
            .unwrap_or_default();
        let found_switches = r.switches.0.len();
        let shrunk = shrink(&p, r.switches, &sig);
        let mut f = finish(&p, shrunk, found_switches, executions, r.outputs.error).0;
        f.index = r.index;
        f
    });
    let failed = found.is_some();
    Ok(ExploreReport {
        scenario: scn.name.clone(),
        strategy: opts.strategy,
        seed,
        depth: opts.depth,
        shard: opts.shard,
        geometry: p.cfg.geometry.name,
        jobs,
        reverted: p
            .cfg
            .fixes
            .reverted()
            .map(|f| f.name().to_string())
            .collect(),
        executions,
        distinct,
        elapsed_ms: start.elapsed().as_millis(),
        found,
        bounded: match opts.strategy {
            Strategy::Bounded { preemptions } | Strategy::BoundedUnreduced { preemptions } => {
                let parts = bounded_stats.lock().unwrap_or_else(|p| p.into_inner());
                let mut b = bounded::BoundedStats {
                    preemptions,
                    complete: !parts.is_empty(),
                    ..Default::default()
                };
                for part in parts.iter() {
                    let s = *part.lock().unwrap_or_else(|p| p.into_inner());
                    b.schedules += s.schedules;
                    b.pruned += s.pruned;
                    b.complete &= s.complete;
                }
                // The search also ends when an execution had no decision (an
                // execution that failed ends it too, but says nothing of the
                // rest of the tree).
                if executions == 1 && b.schedules == 0 && !failed {
                    b.schedules = 1;
                    b.complete = true;
                }
                Some(b)
            }
            _ => None,
        },
        coverage: totals.report(scn),
        notes,
        fingerprints,
        coverage_totals: totals,
    })
}

/// Replays the final schedule with tracing and packages the failure.
fn finish(
    p: &Prepared,
    sw: Switches,
    found_switches: usize,
    at: usize,
    error: Option<String>,
) -> (Found, Switches) {
    let (o, actual, _failed) = replay_switches(p, &sw, true);
    let trace = o
        .trace
        .as_ref()
        .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_default();
    let report = o.report.unwrap_or(RunReport {
        scenario: p.scn.name.clone(),
        geometry: p.cfg.geometry.name,
        engine: "shuttle",
        reverted: Vec::new(),
        records: Vec::new(),
    });
    let mut what = describe(&report);
    if let Some(e) = error {
        what = format!("{what} ({e})");
    }
    let found = Found {
        what,
        token: token::encode(&p.cfg, &p.scn.source, &actual),
        report,
        trace,
        switches_found: found_switches,
        switches_shrunk: actual.0.len(),
        at_execution: at,
        index: None,
    };
    (found, actual)
}

/// Replays a token: the same schedule, the same failure, the same trace.
/// `Ok(Err(why))` when the token does not belong to this build and scenario,
/// or its schedule is not a failing schedule of this scenario.
pub fn replay(scn: &Scenario, tok: &str) -> Result<Result<Found, String>, ScenarioError> {
    install_oops_hook();
    let _quiet = QuietPanics::new();
    let t = match token::parse(tok).and_then(|t| token::check(&t, &scn.source).map(|()| t)) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    let opts = RunOptions {
        geometry: Some(t.geometry),
        reverts: t.fixes.clone(),
        ..RunOptions::default()
    };
    let p = prepare(scn, &opts)?;
    let n = t.switches.0.len();
    let (found, actual) = finish(&p, t.switches.clone(), n, 1, None);
    if actual != t.switches {
        return Ok(Err(format!(
            "the token's schedule does not fit this scenario: {} of its {} switches never \
             happened (a switch names a decision point or a CPU this scenario does not reach)",
            t.switches
                .0
                .iter()
                .filter(|s| !actual.0.contains(s))
                .count(),
            t.switches.0.len()
        )));
    }
    if found.report.passed() {
        return Ok(Err(
            "the token's schedule runs without a failure: it is not a failing schedule of \
             this scenario"
                .to_string(),
        ));
    }
    Ok(Ok(found))
}

/// Draws a trace as CPU columns, kernel functions indented by call depth.
pub fn render_columns(trace: &[TraceRecord], max_depth: usize, width: usize) -> String {
    let cpus: BTreeSet<usize> = trace.iter().map(|r| r.cpu.0).collect();
    let cols: Vec<usize> = cpus.into_iter().collect();
    let col_of = |c: usize| cols.iter().position(|&x| x == c).unwrap_or(0);
    let mut out = String::new();
    for c in &cols {
        out.push_str(&format!("{:<width$}", format!("CPU{c}")));
    }
    out.push('\n');
    let mut last: Option<(usize, String)> = None;
    for r in trace {
        let text = match &r.event {
            TraceEvent::Enter(f) if r.depth <= max_depth => format!("{f}()"),
            TraceEvent::Note(n) => n.clone(),
            _ => continue,
        };
        let indent = "  ".repeat(r.depth.saturating_sub(1).min(10));
        let cell = format!("{indent}{text}");
        if last.as_ref() == Some(&(r.cpu.0, cell.clone())) {
            continue;
        }
        last = Some((r.cpu.0, cell.clone()));
        let col = col_of(r.cpu.0);
        out.push_str(&" ".repeat(col * width));
        out.push_str(&cell);
        out.push('\n');
    }
    out
}
