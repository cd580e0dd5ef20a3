//! A CPU running kernel code: the model's `current` and per-CPU state.
//!
//! Every modelled kernel function is a method on [`Cpu`], so it knows which CPU
//! it runs on (a column of a race trace), which locks that CPU holds (for
//! lockdep) and which kernel functions are on its stack (for traces and
//! reports). A `Cpu` belongs to one thread.

use crate::check::{invariants, KernelOops, Violation, ViolationKind};
use crate::engine::{Atomic, Engine};
use crate::kernel::Kernel;
use crate::sync::lockdep::{Acquire, HeldLock, HeldLocks};
use crate::sync::LockClass;
use crate::types::{CpuId, Pfn};
use std::cell::RefCell;
use std::sync::Arc;

/// A CPU executing in the kernel on behalf of a task.
pub struct Cpu<E: Engine> {
    pub k: Arc<Kernel<E>>,
    pub id: CpuId,
    held: RefCell<HeldLocks>,
    stack: RefCell<Vec<&'static str>>,
    /// What this CPU reached, handed to the machine's sink when it is
    /// dropped (no lock on the path of every kernel function).
    cov: crate::coverage::CpuCoverage,
}

impl<E: Engine> Drop for Cpu<E> {
    fn drop(&mut self) {
        self.k.coverage.flush(&self.cov, self.id.0);
    }
}

/// Pops the function from the CPU's stack when dropped.
pub struct FuncGuard<'a, E: Engine> {
    cpu: &'a Cpu<E>,
    active: bool,
}

impl<E: Engine> Drop for FuncGuard<'_, E> {
    fn drop(&mut self) {
        self.cpu.stack.borrow_mut().pop();
        if self.active {
            self.cpu.k.coverage.leave(&self.cpu.cov, self.cpu.id.0);
        }
    }
}

/// Marks the CPU active (for coverage: inside a user access) until dropped.
pub struct ActiveGuard<'a, E: Engine> {
    cpu: &'a Cpu<E>,
    active: bool,
}

impl<E: Engine> Drop for ActiveGuard<'_, E> {
    fn drop(&mut self) {
        if self.active {
            self.cpu.k.coverage.leave(&self.cpu.cov, self.cpu.id.0);
        }
    }
}

impl<E: Engine> Cpu<E> {
    pub fn new(k: Arc<Kernel<E>>, id: CpuId) -> Self {
        Cpu {
            k,
            id,
            held: RefCell::new(HeldLocks::default()),
            stack: RefCell::new(Vec::new()),
            cov: Default::default(),
        }
    }

    /// Enters a kernel function (for traces, reports and coverage).
    pub fn func(&self, name: &'static str) -> FuncGuard<'_, E> {
        self.stack.borrow_mut().push(name);
        self.k.trace_event(
            self.id,
            crate::kernel::TraceEvent::Enter(name),
            self.stack.borrow().len(),
        );
        self.k.coverage.call(&self.cov, name);
        let active = self.k.coverage.enter(&self.cov, self.id.0);
        FuncGuard { cpu: self, active }
    }

    /// The CPU runs user code that touches shared state (a user access), for
    /// coverage's overlap of CPUs.
    pub fn user_active(&self) -> ActiveGuard<'_, E> {
        let active = self.k.coverage.enter(&self.cov, self.id.0);
        ActiveGuard { cpu: self, active }
    }

    /// Passes a named mark of a kernel path (coverage; also a trace note).
    pub fn mark(&self, mark: crate::coverage::Mark) {
        self.k.coverage.mark(&self.cov, mark);
        self.note(|| mark.name.to_string());
    }

    /// Records a step that matters for a race trace (`pmd none, skipped`).
    pub fn note(&self, what: impl FnOnce() -> String) {
        if self.k.tracing() {
            let depth = self.stack.borrow().len() + 1;
            self.k
                .trace_event(self.id, crate::kernel::TraceEvent::Note(what()), depth);
        }
    }

    /// The kernel functions on this CPU's stack, innermost first.
    pub fn backtrace(&self) -> Vec<&'static str> {
        self.stack.borrow().iter().rev().copied().collect()
    }

    pub(crate) fn lock_acquire(&self, class: LockClass, instance: usize, how: Acquire) {
        let problem = self.held.borrow().check(class, instance, how);
        if let Some(message) = problem {
            self.k.report(Violation {
                id: invariants::LOCK_ORDER,
                kind: ViolationKind::LockOrder,
                message,
                cpu: Some(self.id),
                backtrace: self.backtrace(),
                page: None,
            });
        }
    }

    pub(crate) fn lock_acquired(&self, class: LockClass, instance: usize) {
        let taken_in = self.stack.borrow().last().copied().unwrap_or("?");
        self.held.borrow_mut().push(HeldLock {
            class,
            instance,
            taken_in,
        });
    }

    pub(crate) fn lock_release(&self, instance: usize) {
        self.held.borrow_mut().release(instance);
    }

    pub(crate) fn holds(&self, instance: usize) -> bool {
        self.held.borrow().holds(instance)
    }

    /// The locks this CPU holds (for the quiescent-point audit).
    pub fn held_locks(&self) -> Vec<HeldLock> {
        self.held.borrow().stack.clone()
    }

    /// A lock this CPU would wait for forever (it holds it itself): report
    /// the self-deadlock as lockdep would (LOCK-ORDER) and stop the CPU,
    /// where the kernel would hang.
    pub fn deadlock(&self, what: &str) -> ! {
        self.k.report(Violation {
            id: invariants::LOCK_ORDER,
            kind: ViolationKind::LockOrder,
            message: format!("possible recursive locking detected: {what}"),
            cpu: Some(self.id),
            backtrace: self.backtrace(),
            page: None,
        });
        std::panic::panic_any(KernelOops)
    }

    /// A failed kernel assertion: report it and oops (`BUG()`).
    pub fn bug(&self, text: &str, page: Option<Pfn>) -> ! {
        let message = match page {
            Some(p) => format!("{text} (page {})", self.dump_page(p)),
            None => text.to_string(),
        };
        self.k.report(Violation {
            id: invariants::VM_BUG_ON,
            kind: ViolationKind::KernelBug,
            message,
            cpu: Some(self.id),
            backtrace: self.backtrace(),
            page,
        });
        std::panic::panic_any(KernelOops)
    }

    /// A kernel path the model does not implement yet, or a state it cannot
    /// represent, was reached: report it (MODEL-LIMIT) and stop the CPU as an
    /// oops does, so the run never goes on silently where 5.8 would do
    /// something else. Not a kernel bug.
    pub fn unmodelled(&self, what: &str, page: Option<Pfn>) -> ! {
        let message = match page {
            Some(p) => format!("not modelled: {what} (page {})", self.dump_page(p)),
            None => format!("not modelled: {what}"),
        };
        self.k.report(Violation {
            id: invariants::MODEL_LIMIT,
            kind: ViolationKind::Unmodelled,
            message,
            cpu: Some(self.id),
            backtrace: self.backtrace(),
            page,
        });
        std::panic::panic_any(KernelOops)
    }

    /// A kernel warning: report it and go on.
    pub fn warn(&self, id: &'static str, text: &str, page: Option<Pfn>) {
        let message = match page {
            Some(p) => format!("{text} (page {})", self.dump_page(p)),
            None => text.to_string(),
        };
        self.k.report(Violation {
            id,
            kind: ViolationKind::KernelWarning,
            message,
            cpu: Some(self.id),
            backtrace: self.backtrace(),
            page,
        });
    }

    /// Models bad_page(), mm/page_alloc.c: "BUG: Bad page state".
    pub fn bad_page(&self, pfn: Pfn, reason: &str) {
        self.warn(
            invariants::BAD_PAGE,
            &format!("BUG: Bad page state: {reason}"),
            Some(pfn),
        );
    }

    /// A one-line dump_page().
    pub fn dump_page(&self, pfn: Pfn) -> String {
        let p = self.page(pfn);
        let head = p.tail_head_peek().unwrap_or(pfn);
        // v3.16's dump_page() has no compound mapcount (the design has none).
        let compound = match self.k.cfg.kernel {
            crate::profile::KernelProfile::V5_8 => format!(
                " compound_mapcount:{}",
                self.page(head).compound_mapcount.peek_i64() + 1
            ),
            crate::profile::KernelProfile::V3_16 => String::new(),
        };
        format!(
            "pfn:{} refcount:{} mapcount:{}{compound} head:{} flags:{:#x}",
            pfn.0,
            self.page(head).refcount.peek_i64(),
            p.mapcount.peek_i64() + 1,
            head.0,
            self.page(head).flags.peek(),
        )
    }
}

/// `VM_BUG_ON(cond)`: reports and oopses when `cond` holds.
#[macro_export]
macro_rules! vm_bug_on {
    ($cpu:expr, $cond:expr, $text:expr) => {
        if $cond {
            $cpu.bug($text, None)
        }
    };
}

/// `VM_BUG_ON_PAGE(cond, page)`.
#[macro_export]
macro_rules! vm_bug_on_page {
    ($cpu:expr, $cond:expr, $page:expr, $text:expr) => {
        if $cond {
            $cpu.bug($text, Some($page))
        }
    };
}

/// `VM_WARN_ON_ONCE(cond)` and friends.
#[macro_export]
macro_rules! vm_warn_on {
    ($cpu:expr, $cond:expr, $page:expr, $text:expr) => {
        if $cond {
            $cpu.warn($crate::check::invariants::VM_WARN, $text, $page)
        }
    };
}
