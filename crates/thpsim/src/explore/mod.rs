//! Race exploration: a scenario's `together` blocks run as concurrent threads
//! on the shuttle engine, whose scheduler picks the interleaving at every lock
//! operation and every atomic access to a page-table entry or page counter.
//!
//! Each execution builds a fresh machine, runs the whole scenario and its
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

pub mod bounded;
pub mod coverage;
pub mod sched;
pub mod token;

use crate::run::{
    configure, install_oops_hook, Interleaving, Machine, Record, RunOptions, RunReport,
};
use serde::Serialize;
use shuttle::scheduler::{DfsScheduler, RandomScheduler, Schedule, Scheduler, Task, TaskId};
use std::collections::{BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
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
    /// Depth-first enumeration of all schedules (bounded by the iterations).
    Dfs,
    /// Every schedule with at most `preemptions` preemptions, less those
    /// equivalent to one already run (`bounded`).
    Bounded { preemptions: usize },
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Pct => "pct",
            Strategy::Random => "random",
            Strategy::Dfs => "dfs",
            Strategy::Bounded { .. } => "bounded",
        }
    }
}

/// How to explore.
#[derive(Clone)]
pub struct ExploreOptions {
    pub run: RunOptions,
    pub strategy: Strategy,
    pub iterations: usize,
    pub time: Option<Duration>,
    pub depth: usize,
    pub seed: u64,
    /// `(i, n)`: this is slice `i` of `n`.
    pub shard: Option<(u64, u64)>,
    /// Called after each execution with the number run so far.
    pub progress: Option<Arc<dyn Fn(usize) + Send + Sync>>,
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
    /// The execution (1-based) that failed first.
    pub at_execution: usize,
}

/// The result of an exploration.
#[derive(Clone, Debug, Serialize)]
pub struct ExploreReport {
    pub scenario: String,
    pub strategy: Strategy,
    pub seed: u64,
    pub depth: usize,
    pub shard: Option<(u64, u64)>,
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
}

/// What one execution did.
#[derive(Default)]
struct ExecLog {
    /// Per scheduling point: (chosen task, current task, runnable tasks).
    points: Vec<(usize, Option<usize>, Vec<usize>)>,
}

impl ExecLog {
    fn switches(&self) -> Switches {
        Switches(
            self.points
                .iter()
                .enumerate()
                .filter(|(_, (chosen, cur, runnable))| *chosen != default_choice(*cur, runnable))
                .map(|(k, (chosen, _, _))| (k, *chosen))
                .collect(),
        )
    }
    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (c, _, _) in &self.points {
            c.hash(&mut h);
        }
        h.finish()
    }
}

fn default_choice(current: Option<usize>, runnable: &[usize]) -> usize {
    match current {
        Some(c) if runnable.contains(&c) => c,
        _ => runnable.iter().copied().min().unwrap_or(0),
    }
}

/// State shared between the scheduler wrapper and the explorer.
#[derive(Default)]
struct Shared {
    log: ExecLog,
    stop: bool,
    failed: bool,
    executions: usize,
    distinct: HashSet<u64>,
    /// What the executions reached.
    coverage: coverage::CoverageTotals,
}

/// Wraps a shuttle scheduler: records every decision; stops when told.
struct Recorder<S> {
    inner: S,
    shared: Arc<Mutex<Shared>>,
}

impl<S: Scheduler> Scheduler for Recorder<S> {
    fn new_execution(&mut self) -> Option<Schedule> {
        let sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if sh.stop {
            return None;
        }
        drop(sh);
        // The log keeps the last execution's decisions when the search ends.
        let next = self.inner.new_execution()?;
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).log = ExecLog::default();
        Some(next)
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        is_yielding: bool,
    ) -> Option<TaskId> {
        let t = self.inner.next_task(runnable, current, is_yielding)?;
        // Only real decisions (two or more runnable tasks) are points.
        if runnable.len() > 1 {
            let ids: Vec<usize> = runnable.iter().map(|t| usize::from(t.id())).collect();
            let mut sh = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            sh.log
                .points
                .push((usize::from(t), current.map(usize::from), ids));
        }
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

fn shuttle_config(time: Option<Duration>) -> shuttle::Config {
    let mut c = shuttle::Config::new();
    c.failure_persistence = shuttle::FailurePersistence::None;
    c.max_time = time;
    c.silence_warnings = true;
    // The model has no spin loops (every wait blocks), so a long execution is
    // just a big scenario (x86_64 tables have 512 entries); the bound only
    // catches a livelock.
    c.max_steps = shuttle::MaxSteps::FailAfter(200_000_000);
    c
}

/// Runs executions with `scheduler` until one fails or the scheduler ends.
/// Returns the outputs of the last execution and whether it failed.
fn drive<S: Scheduler + 'static>(
    p: &Prepared,
    scheduler: S,
    time: Option<Duration>,
    shared: Arc<Mutex<Shared>>,
    progress: Option<Arc<dyn Fn(usize) + Send + Sync>>,
) -> (Outputs, bool) {
    let outputs = Arc::new(Mutex::new(Outputs::default()));
    let runner = shuttle::Runner::new(
        Recorder {
            inner: scheduler,
            shared: shared.clone(),
        },
        shuttle_config(time),
    );
    let (p2, out2, sh2) = (p.clone(), outputs.clone(), shared.clone());
    let result = catch_unwind(AssertUnwindSafe(move || {
        runner.run(move || {
            let m = Arc::new(Machine::<ShuttleEngine>::new(
                p2.scn.clone(),
                p2.cfg.clone(),
                p2.units,
                Interleaving::Concurrent,
            ));
            {
                let mut o = out2.lock().unwrap_or_else(|p| p.into_inner());
                *o = Outputs {
                    records: Some(m.records_buffer()),
                    trace: Some(m.k.trace_buffer()),
                    report: None,
                    error: None,
                };
            }
            let r = m.run_items();
            let report = m.report();
            let failed = r.is_err() || !report.passed();
            let mut o = out2.lock().unwrap_or_else(|p| p.into_inner());
            o.error = r.err().map(|e| e.to_string());
            o.report = Some(report);
            let mut sh = sh2.lock().unwrap_or_else(|p| p.into_inner());
            sh.executions += 1;
            for (item, reached) in m.take_coverage() {
                sh.coverage.add(item, &reached);
            }
            let fp = sh.log.fingerprint();
            sh.distinct.insert(fp);
            if failed {
                sh.stop = true;
                sh.failed = true;
            }
            // No decision at all: every execution would be this one.
            if sh.log.points.is_empty() {
                sh.stop = true;
            }
            if let Some(f) = &progress {
                f(sh.executions);
            }
        });
    }));
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
            let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
            sh.executions += 1;
            let fp = sh.log.fingerprint();
            sh.distinct.insert(fp);
            sh.stop = true;
            sh.failed = true;
            drop(sh);
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

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

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
            shuttle::Runner::new(RandomScheduler::new_from_seed(0, 1), shuttle_config(None))
                .run(|| {});
            drop(std::panic::take_hook());
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.load(std::sync::atomic::Ordering::SeqCst) {
                    original(info);
                }
            }));
        });
        QUIET.store(true, std::sync::atomic::Ordering::SeqCst);
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        QUIET.store(false, std::sync::atomic::Ordering::SeqCst);
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
fn replay_switches(p: &Prepared, sw: &Switches) -> (Outputs, Switches, bool) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let sched = SwitchReplay {
        switches: sw.0.iter().copied().collect(),
        point: 0,
        started: false,
    };
    let (o, failed) = drive(p, sched, None, shared.clone(), None);
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
    drive(p, sched, None, shared.clone(), None);
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
        let (o, actual, failed) = replay_switches(p, &cand);
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
        // Exploration builds a machine per execution: keep it small.
        cfg.memory_bytes = 12 * cfg.geometry.pmd_size();
    }
    Ok(Prepared {
        scn: Arc::new(scn.clone()),
        cfg,
        units,
    })
}

/// Explores the interleavings of a scenario.
pub fn explore(scn: &Scenario, opts: &ExploreOptions) -> Result<ExploreReport, ScenarioError> {
    install_oops_hook();
    let _quiet = QuietPanics::new();
    let p = prepare(scn, &opts.run)?;
    let seed = opts.seed;
    let mut slice = sched::Slice::all(opts.iterations);
    if let Some((i, n)) = opts.shard {
        slice = slice.shard(i, n);
    }
    let shared = Arc::new(Mutex::new(Shared::default()));
    let start = Instant::now();
    let bounded_stats = Arc::new(Mutex::new(bounded::BoundedStats::default()));
    let (outputs, failed) = match opts.strategy {
        Strategy::Bounded { preemptions } => {
            let limit = (opts.iterations != usize::MAX).then_some(opts.iterations as u64);
            let r = drive(
                &p,
                bounded::Bounded::new(preemptions, limit, bounded_stats.clone()),
                opts.time,
                shared.clone(),
                opts.progress.clone(),
            );
            thpsim_model::engine::footprint::stop();
            r
        }
        Strategy::Pct => {
            // PCT draws its change points from the decisions of an execution:
            // count them once in the default schedule (every shard the same).
            let k = probe_decisions(&p);
            drive(
                &p,
                sched::Pct::new(seed, opts.depth, k as u64, slice),
                opts.time,
                shared.clone(),
                opts.progress.clone(),
            )
        }
        Strategy::Random => drive(
            &p,
            sched::Uniform::new(seed, slice),
            opts.time,
            shared.clone(),
            opts.progress.clone(),
        ),
        Strategy::Dfs => drive(
            &p,
            DfsScheduler::new(slice.count().map(|n| n as usize), false),
            opts.time,
            shared.clone(),
            opts.progress.clone(),
        ),
    };
    let (executions, distinct, first, reached) = {
        let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
        (
            sh.executions,
            sh.distinct.len(),
            sh.log.switches(),
            sh.coverage.report(scn),
        )
    };
    let found = if failed {
        let report = outputs.report.clone();
        let sig = report.as_ref().and_then(signature).unwrap_or_default();
        let found_switches = first.0.len();
        let shrunk = shrink(&p, first, &sig);
        Some(finish(&p, shrunk, found_switches, executions, outputs.error).0)
    } else {
        None
    };
    Ok(ExploreReport {
        scenario: scn.name.clone(),
        strategy: opts.strategy,
        seed,
        depth: opts.depth,
        shard: opts.shard,
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
            Strategy::Bounded { preemptions } => {
                let mut b = *bounded_stats.lock().unwrap_or_else(|p| p.into_inner());
                b.preemptions = preemptions;
                // The search also ends when an execution had no decision.
                if executions == 1 && b.schedules == 0 {
                    b.schedules = 1;
                    b.complete = true;
                }
                Some(b)
            }
            _ => None,
        },
        coverage: reached,
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
    let (o, actual, _failed) = replay_switches(p, &sw);
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
