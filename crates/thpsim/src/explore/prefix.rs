//! The prefix of a search: the items before a scenario's first `together`
//! block, run once per search instead of once per execution.
//!
//! Those items run on CPU 0 alone and do the same in every execution (no
//! scheduling point has a choice while one CPU thread runs), so the explorer
//! runs them once, on the calling thread outside any shuttle execution
//! (`ShuttleEngine::count_runnable` keeps every point from switching), and
//! starts each execution from a copy of the machine they left
//! (`Machine::snapshot`), made at the start of the execution, so the copy's
//! engine objects are numbered the same way in every execution (the bounded
//! strategy's reduction relies on it). An execution then costs only the
//! block and what follows it.
//!
//! When the prefix stops the run (a kernel oops, or a report of the kernel's
//! own checks: an assertion, a warning, lockdep; an invalid step ends it with
//! an error), every execution would stop in the
//! same place: each execution reports the prefix's machine as it is, without
//! a copy (the CPU that oopsed may still hold locks), so the search reports
//! that failure once, as one execution would have. A step whose outcome is
//! not the expected one does not stop the run: the executions go on from a
//! copy and the first one fails, as before.
//!
//! `THPSIM_PREFIX_COPY=0` turns the copy off: every execution builds a
//! fresh machine and runs every item (for tests that the copy changes
//! nothing, and for measuring it).

use super::Prepared;
use crate::run::{Interleaving, Machine};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thpsim_model::page_alloc::CopyPlan;
use thpsim_model::ShuttleEngine;
use thpsim_scenario::Item;

/// Whether the prefix is run once and copied (`THPSIM_PREFIX_COPY`, on
/// unless `0`).
pub fn enabled() -> bool {
    !matches!(std::env::var("THPSIM_PREFIX_COPY").as_deref(), Ok("0"))
}

/// Prefixes built so far by this process.
static BUILT: AtomicU64 = AtomicU64::new(0);

/// How many prefixes this process has built (one per search, replay or
/// shrinking run of a scenario with a `together` block): for tests that
/// the executions did start from a copy.
pub fn built() -> u64 {
    BUILT.load(Ordering::Relaxed)
}

/// The machine after a scenario's prefix.
pub(super) struct Prefix {
    machine: Arc<Machine<ShuttleEngine>>,
    /// The index of the first `together` block: where executions resume.
    resume: usize,
    /// The prefix ended with an invalid step (the message every execution
    /// reports).
    error: Option<String>,
    /// The prefix stopped the run (an oops or a kernel report).
    stopped: bool,
    /// The frames of `machine` still in their boot state, made afresh in
    /// each copy rather than read (the machine never changes after `build`).
    plan: CopyPlan,
}

impl Prefix {
    /// Runs the items before the first `together` block of `p`'s scenario
    /// on a machine of its own, exactly as an execution runs them
    /// (`Machine::run_items_range`, concurrent interleaving, the kernel's
    /// reports after each step). `None` when there is no block (the one
    /// execution runs everything), when the copy is turned off, or when the
    /// prefix panicked outside the model's own oops (a model bug, or a CPU
    /// that deadlocked itself): then every execution runs the whole
    /// scenario, and the first reports the panic as it always has.
    pub(super) fn build(p: &Prepared) -> Option<Prefix> {
        if !enabled() {
            return None;
        }
        let resume = p
            .scn
            .items
            .iter()
            .position(|i| matches!(i, Item::Together(_)))?;
        // One CPU thread runs (booting, then CPU 0): no scheduling point
        // switches and no monitor waits, so nothing reaches into shuttle's
        // execution state.
        ShuttleEngine::count_runnable();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let machine = Arc::new(Machine::<ShuttleEngine>::new(
                p.scn.clone(),
                p.cfg.clone(),
                p.units,
                Interleaving::Concurrent,
            ));
            let r = machine.run_items_range(0..resume);
            (machine, r)
        }));
        ShuttleEngine::stop_counting();
        let (machine, r) = r.ok()?;
        BUILT.fetch_add(1, Ordering::Relaxed);
        let error = r.err().map(|e| e.to_string());
        let stopped = machine.dead();
        let plan = machine.k.copy_plan();
        Some(Prefix {
            machine,
            resume,
            error,
            stopped,
            plan,
        })
    }

    /// The machine an execution starts from and the item it resumes at, or
    /// the error the prefix ended with. A fresh copy of the prefix's
    /// machine, made now (inside the execution, after the strategy's
    /// per-execution reset of object numbers), unless the prefix stopped
    /// the run: then the prefix's machine itself, on which nothing more runs.
    pub(super) fn start(&self) -> (Arc<Machine<ShuttleEngine>>, Result<usize, String>) {
        if let Some(e) = &self.error {
            return (self.machine.clone(), Err(e.clone()));
        }
        if self.stopped {
            // `run_items_from` returns at once on a stopped machine.
            return (self.machine.clone(), Ok(self.resume));
        }
        (
            Arc::new(self.machine.snapshot_planned(&self.plan)),
            Ok(self.resume),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::prepare;
    use crate::run::RunOptions;

    fn prepared(src: &str) -> Prepared {
        let scn = thpsim_scenario::parse("prefix.thp", src).expect("parses");
        prepare(&scn, &RunOptions::default()).expect("valid")
    }

    const RACE: &str = "geometry tiny\nthp always\nprocess P\nP: mmap A 1h\n\
        P: write A[..] = 0x11\nP: fork C\ntogether\n  thread P: write A[0] = 0x22\n  \
        thread C: write A[0] = 0x33\nend\nP: read A[0] == 0x22\n";

    /// The prefix stops before the first `together` block; each execution
    /// gets a copy of its own, and the copies hold the prefix's records.
    #[test]
    fn executions_start_from_their_own_copy_of_the_prefix() {
        let pre = Prefix::build(&prepared(RACE)).expect("a prefix");
        assert_eq!(pre.resume, 4, "process, mmap, write, fork, then the block");
        assert!(pre.error.is_none() && !pre.stopped);
        let (a, from) = pre.start();
        let (b, _) = pre.start();
        assert_eq!(from, Ok(4));
        assert!(!Arc::ptr_eq(&a, &pre.machine) && !Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a.k, &b.k));
        let steps = |m: &Machine<ShuttleEngine>| m.report().records.len();
        assert_eq!(steps(&a), 3, "mmap, write, fork");
        assert_eq!(steps(&a), steps(&pre.machine));
    }

    /// A prefix that stopped the run (here: a kernel report pending when the
    /// first step ends, as an assertion of the model leaves one) is handed
    /// out as it is, not copied, and nothing more runs on it.
    #[test]
    fn a_stopped_prefix_is_not_copied_and_runs_nothing_more() {
        let p = prepared(RACE);
        let mut pre = Prefix::build(&p).expect("a prefix");
        ShuttleEngine::count_runnable();
        let m = Arc::new(Machine::<ShuttleEngine>::new(
            p.scn.clone(),
            p.cfg.clone(),
            p.units,
            Interleaving::Concurrent,
        ));
        m.k.report(thpsim_model::check::Violation {
            id: thpsim_model::check::invariants::VM_BUG_ON,
            kind: thpsim_model::check::ViolationKind::KernelBug,
            message: "injected".into(),
            cpu: None,
            backtrace: Vec::new(),
            page: None,
        });
        m.run_items_range(0..pre.resume).expect("valid");
        ShuttleEngine::stop_counting();
        assert!(m.dead());
        pre.plan = m.k.copy_plan();
        pre.machine = m;
        pre.stopped = true;
        let (s, from) = pre.start();
        assert!(Arc::ptr_eq(&s, &pre.machine));
        let before = s.report().records.len();
        s.run_items_from(from.expect("no error")).expect("valid");
        assert_eq!(s.report().records.len(), before);
        assert!(!s.report().passed());
    }

    /// No `together` block: no prefix (the one execution runs everything).
    #[test]
    fn no_block_no_prefix() {
        let p = prepared("geometry tiny\nprocess P\nP: mmap A 1p\nP: write A[0] = 1\n");
        assert!(Prefix::build(&p).is_none());
    }
}
