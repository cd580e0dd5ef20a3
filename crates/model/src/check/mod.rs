//! Checkers: the oracles that judge a run, kept apart from the code they check.
//!
//! - [`invariants`]: the list of invariants with their IDs (the one home).
//! - [`audit`]: at a quiescent point, walk every page table of every mm and
//!   recompute every frame's mapcount and refcount from scratch.
//! - [`oracle`]: the memory oracle, a reference model of what each process may
//!   observe, independent of page tables and pages.
//! - [`watch`]: which translations changed since the checkers last looked
//!   (the page tables' change marks), so the oracle examines only those.
//!
//! The kernel's own assertions (VM_BUG_ON and friends) stay inline in the
//! modelled functions, as in Linux, and report through [`Violation`].

pub mod audit;
pub mod invariants;
pub mod oracle;
pub mod watch;

use crate::types::{CpuId, Pfn};
use serde::Serialize;

/// What kind of check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// A kernel assertion (BUG_ON, VM_BUG_ON, VM_BUG_ON_PAGE, ...): the CPU oopses.
    KernelBug,
    /// A kernel warning (WARN_ON, VM_WARN_ON_ONCE, "Bad page state").
    KernelWarning,
    /// The quiescent-point audit found counters that disagree with the tables.
    Audit,
    /// The memory oracle saw a byte a process may not see.
    Memory,
    /// Lock order inversion or recursive locking.
    LockOrder,
    /// Every thread is blocked.
    Deadlock,
    /// The model reached a kernel path it does not implement (MODEL-LIMIT):
    /// the CPU stops as on an oops, but no kernel assertion failed.
    Unmodelled,
}

/// A broken invariant. Not an `Err`: the model reports it and the run fails.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// The invariant's ID (see [`invariants::INVARIANTS`]).
    pub id: &'static str,
    pub kind: ViolationKind,
    /// What failed, in the kernel's words where it has them.
    pub message: String,
    pub cpu: Option<CpuId>,
    /// The kernel function that was running (innermost first).
    pub backtrace: Vec<&'static str>,
    pub page: Option<Pfn>,
}

/// The payload a CPU panics with when a kernel assertion fails (the model's
/// `BUG()`): the run stops there and reports the recorded violation.
#[derive(Debug)]
pub struct KernelOops;

/// The payload a CPU panics with when, after another CPU oopsed, it would
/// wait on a monitor (a lock, a frozen page) that may never be released: in
/// the kernel it would spin or sleep there forever (the oopsed CPU keeps
/// what it held). The run has already failed; the CPU stops where it is
/// instead of deadlocking the execution ([`crate::Engine::note_oops`]).
#[derive(Debug)]
pub struct CpuStalled;
