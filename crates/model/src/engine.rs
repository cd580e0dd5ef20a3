//! The execution engine: the primitives every shared structure of the model is
//! built from.
//!
//! Models: nothing in the kernel directly; this is the seam that lets one model
//! run on two engines (DESIGN.md, "one model, two engines"). The model is generic
//! over [`Engine`] and monomorphised once per engine: [`StdEngine`] uses the
//! standard library's primitives (real threads, benchmarks, `thpsim run`); the
//! exploration engine (shuttle) implements the same trait so that every atomic
//! access to a page-table entry or page counter and every lock operation becomes a
//! scheduling point.
//!
//! Only two kinds of primitive exist:
//! - [`Atomic`]: a 64-bit atomic word (page-table entries, page counters, flags);
//! - [`Monitor`]: a mutex with a condition variable around a small state, from
//!   which the model's locks (spinlock, rwsem, page lock) are built as *blocking*
//!   primitives (waiters sleep; nobody spins).
//!
//! Under exploration every scheduling point also says what the step after it
//! touches ([`footprint`]), so the explorer can tell which steps commute.
//!
//! Leaves out: memory orderings. Every access is sequentially consistent; the
//! model explores interleavings, not weak-memory reorderings.

/// What the step after each scheduling point touches, for the explorer's
/// partial-order reduction (two steps that touch different objects, or only
/// read the same one, commute).
///
/// A *step* runs from one scheduling point of a thread to its next. It begins
/// with the operation the point was offered for ([`footprint::op`], set just
/// before the point) and may touch state that is no scheduling point of its
/// own ([`footprint::hidden`]: frame bytes, TLBs, the arenas of mms and
/// anon_vmas). State guarded by a model lock needs no note: every access to
/// it follows the lock operation, which conflicts with the other holders'.
///
/// Objects are numbered in the order they are created within an execution
/// ([`footprint::next_id`], reset at the start of each), so the same object
/// has the same number in every execution that created the same objects in
/// the same order; a few fixed objects have numbers of their own
/// ([`footprint::Obj`]). Only engines with `FOOTPRINTS` record anything; the
/// state is per OS thread (one execution at a time runs on one).
pub mod footprint {
    use std::cell::{Cell, RefCell};

    /// An object a step touches.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub enum Obj {
        /// An engine atomic or monitor, by creation number.
        Id(u32),
        /// A CPU's TLB.
        Tlb(u32),
        /// The bytes of a frame.
        Frame(u64),
        /// Shared bookkeeping without a lock of the model's: 0 the mms'
        /// arena, 1 the anon_vmas' arena, 2 the VMA id counter; 3 the
        /// scenario runner's state (processes, memory oracle).
        Arena(u8),
        /// Anything: a point whose step the engine cannot describe (thread
        /// creation and exit, the engine's own bookkeeping).
        All,
        /// Nothing: a step that touches no shared state.
        Nothing,
    }

    /// One access.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Access {
        pub obj: Obj,
        pub write: bool,
    }

    thread_local! {
        static NEXT: Cell<u32> = const { Cell::new(0) };
        static OP: Cell<Option<Access>> = const { Cell::new(None) };
        static HIDDEN: RefCell<Vec<Access>> = const { RefCell::new(Vec::new()) };
        static ON: Cell<bool> = const { Cell::new(false) };
    }

    /// Starts an execution: numbering from 0, nothing pending, recording on.
    pub fn reset() {
        NEXT.with(|n| n.set(0));
        OP.with(|o| o.set(None));
        HIDDEN.with(|h| h.borrow_mut().clear());
        ON.with(|o| o.set(true));
    }

    /// Stops recording: outside exploration, or in the middle of an
    /// execution whose steps an explorer knows already (until [`resume`]).
    pub fn stop() {
        ON.with(|o| o.set(false));
        HIDDEN.with(|h| h.borrow_mut().clear());
    }

    /// Records again from here, with nothing pending: the step that starts
    /// now is the first one recorded.
    pub fn resume() {
        OP.with(|o| o.set(None));
        HIDDEN.with(|h| h.borrow_mut().clear());
        ON.with(|o| o.set(true));
    }

    /// The number of the next object created.
    #[inline]
    pub fn next_id() -> u32 {
        NEXT.with(|n| {
            let v = n.get();
            n.set(v.wrapping_add(1));
            v
        })
    }

    /// The operation the coming scheduling point is offered for.
    #[inline]
    pub fn op(obj: Obj, write: bool) {
        OP.with(|o| o.set(Some(Access { obj, write })));
    }

    /// The coming scheduling point's step touches nothing (a parked thread
    /// resuming only to retry).
    #[inline]
    pub fn op_none() {
        OP.with(|o| {
            o.set(Some(Access {
                obj: Obj::Nothing,
                write: false,
            }))
        });
    }

    /// Takes the pending operation (the explorer, at a scheduling point);
    /// `None` when the point was not annotated (then the step may touch
    /// anything).
    pub fn take_op() -> Option<Access> {
        OP.with(|o| o.take())
    }

    /// A step touches `obj` without a scheduling point of its own.
    #[inline]
    pub fn hidden(obj: Obj, write: bool) {
        if ON.with(|o| o.get()) {
            HIDDEN.with(|h| h.borrow_mut().push(Access { obj, write }));
        }
    }

    /// Takes the hidden accesses recorded since the last call.
    pub fn take_hidden() -> Vec<Access> {
        HIDDEN.with(|h| std::mem::take(&mut *h.borrow_mut()))
    }

    /// Moves the hidden accesses recorded since the last call into `out`.
    pub fn drain_hidden_into(out: &mut Vec<Access>) {
        HIDDEN.with(|h| out.append(&mut h.borrow_mut()));
    }
}

/// A 64-bit atomic word. All operations are sequentially consistent.
pub trait Atomic: Send + Sync + 'static {
    fn new(v: u64) -> Self;
    fn load(&self) -> u64;
    fn store(&self, v: u64);
    fn swap(&self, v: u64) -> u64;
    fn compare_exchange(&self, current: u64, new: u64) -> Result<u64, u64>;
    fn fetch_add(&self, v: u64) -> u64;
    fn fetch_sub(&self, v: u64) -> u64;
    fn fetch_or(&self, v: u64) -> u64;
    fn fetch_and(&self, v: u64) -> u64;

    /// Reads the word without a scheduling point: for checkers, which must
    /// never add interleavings, and for state only the running CPU can
    /// change. The same as [`Atomic::load`] on engines without scheduling.
    #[inline]
    fn peek(&self) -> u64 {
        self.load()
    }

    /// Writes the word without a scheduling point: for an object no other CPU
    /// can reach, such as the fields of a frame just taken from the free
    /// lists (the kernel's own rule for its non-atomic `__SetPage*()` and
    /// `set_page_count()`). The same as [`Atomic::store`] on engines without
    /// scheduling.
    #[inline]
    fn init(&self, v: u64) {
        self.store(v)
    }

    /// The word read as a signed counter (`atomic_read`).
    #[inline]
    fn load_i64(&self) -> i64 {
        self.load() as i64
    }
    /// [`Atomic::peek`] of a signed counter.
    #[inline]
    fn peek_i64(&self) -> i64 {
        self.peek() as i64
    }
    /// `atomic_set` of a signed counter.
    #[inline]
    fn store_i64(&self, v: i64) {
        self.store(v as u64)
    }
    /// `atomic_add_return`: adds `d` and returns the new value.
    #[inline]
    fn add_return(&self, d: i64) -> i64 {
        (self.fetch_add(d as u64) as i64).wrapping_add(d)
    }
}

/// A mutex-protected state with a condition variable: the one blocking
/// primitive. The closures never block and never touch other engine state.
pub trait Monitor<S: Send + 'static>: Send + Sync + 'static {
    fn new(state: S) -> Self;
    /// Runs `f` on the state under the monitor's mutex, then wakes waiters.
    fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R;
    /// Runs `f` on the state under the mutex without waking anyone (a read).
    fn inspect<R>(&self, f: impl FnOnce(&S) -> R) -> R;
    /// Reads the state without a scheduling point: for copies of the machine
    /// (`Kernel::snapshot`), which must never add interleavings. The same as
    /// [`Monitor::inspect`] on engines without scheduling.
    fn peek<R>(&self, f: impl FnOnce(&S) -> R) -> R;
    /// Blocks until `f` returns `Some`, re-running it each time another thread
    /// calls [`Monitor::update`].
    fn wait_until<R>(&self, f: impl FnMut(&mut S) -> Option<R>) -> R;
}

/// An engine: the set of primitives the model is instantiated with.
pub trait Engine: Send + Sync + Sized + 'static {
    type Atomic: Atomic;
    type Monitor<S: Send + 'static>: Monitor<S>;
    /// The engine's name, as shown in reports (`std`, `shuttle`).
    const NAME: &'static str;

    /// Runs the closures as concurrent threads (one per CPU) and waits for all.
    fn run_threads(threads: Vec<Box<dyn FnOnce() + Send + 'static>>);

    /// A point where another CPU may run, for shared state that is not an
    /// [`Atomic`] (a user access of a page, a TLB shootdown reaching another
    /// CPU). Nothing on engines without scheduling.
    #[inline]
    fn schedule_point() {}

    /// Whether this engine records step footprints ([`footprint`]).
    const FOOTPRINTS: bool = false;

    /// A CPU oopsed and the run has recorded it: from now on a CPU that
    /// would wait on a monitor stops instead ([`crate::check::CpuStalled`]),
    /// and the CPUs already waiting are woken to stop too, so an execution
    /// ends without a deadlock (which the explorer would see as shuttle's
    /// failure). On the std engine the CPUs of the oopsed CPU's `together`
    /// block see it too: their waits poll for it and stop the same way.
    #[inline]
    fn note_oops() {}

    /// A scheduling point whose step begins by touching `obj`.
    #[inline]
    fn schedule_point_on(obj: footprint::Obj, write: bool) {
        if Self::FOOTPRINTS {
            footprint::op(obj, write);
        }
        Self::schedule_point();
    }

    /// A step touches `obj`, which is no scheduling point of its own.
    #[inline]
    fn touch(obj: footprint::Obj, write: bool) {
        if Self::FOOTPRINTS {
            footprint::hidden(obj, write);
        }
    }
}

/// The standard library engine: real threads, real mutexes.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdEngine;

impl Engine for StdEngine {
    type Atomic = std::sync::atomic::AtomicU64;
    type Monitor<S: Send + 'static> = StdMonitor<S>;
    const NAME: &'static str = "std";

    /// On a CPU thread of a `together` block: the block's CPUs see the oops
    /// (their monitor waits poll for it and stop, `check::CpuStalled`).
    fn note_oops() {
        STD_BLOCK_OOPSED.with(|o| {
            if let Some(flag) = &*o.borrow() {
                flag.store(true, SC);
            }
        });
    }

    fn run_threads(threads: Vec<Box<dyn FnOnce() + Send + 'static>>) {
        // The block's CPUs share one oops flag (`note_oops`).
        let oopsed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = threads
            .into_iter()
            .map(|f| {
                let oopsed = oopsed.clone();
                std::thread::spawn(move || {
                    STD_BLOCK_OOPSED.with(|o| *o.borrow_mut() = Some(oopsed));
                    f()
                })
            })
            .collect();
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

/// Implements [`Atomic`] for an `AtomicU64` type with std's method names.
macro_rules! impl_atomic {
    ($t:ty) => {
        impl Atomic for $t {
            #[inline]
            fn new(v: u64) -> Self {
                <$t>::new(v)
            }
            #[inline]
            fn load(&self) -> u64 {
                self.load(SC)
            }
            #[inline]
            fn store(&self, v: u64) {
                self.store(v, SC)
            }
            #[inline]
            fn swap(&self, v: u64) -> u64 {
                self.swap(v, SC)
            }
            #[inline]
            fn compare_exchange(&self, current: u64, new: u64) -> Result<u64, u64> {
                self.compare_exchange(current, new, SC, SC)
            }
            #[inline]
            fn fetch_add(&self, v: u64) -> u64 {
                self.fetch_add(v, SC)
            }
            #[inline]
            fn fetch_sub(&self, v: u64) -> u64 {
                self.fetch_sub(v, SC)
            }
            #[inline]
            fn fetch_or(&self, v: u64) -> u64 {
                self.fetch_or(v, SC)
            }
            #[inline]
            fn fetch_and(&self, v: u64) -> u64 {
                self.fetch_and(v, SC)
            }
        }
    };
}

impl_atomic!(std::sync::atomic::AtomicU64);

const SC: std::sync::atomic::Ordering = std::sync::atomic::Ordering::SeqCst;

thread_local! {
    /// On a CPU thread of a `together` block on the std engine: the flag its
    /// CPUs share, set when one of them oopsed ([`Engine::note_oops`]).
    static STD_BLOCK_OOPSED: std::cell::RefCell<Option<std::sync::Arc<std::sync::atomic::AtomicBool>>> =
        const { std::cell::RefCell::new(None) };
}

/// How often a std monitor wait on a block's CPU looks whether another CPU
/// oopsed (it is woken at once by any update of the monitor).
const STD_OOPS_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// [`Monitor`] over `std::sync::{Mutex, Condvar}`; it counts its waiters so an
/// uncontended update makes no wake-up system call.
pub struct StdMonitor<S> {
    inner: std::sync::Mutex<(S, usize)>,
    cv: std::sync::Condvar,
}

impl<S: Send + 'static> Monitor<S> for StdMonitor<S> {
    fn new(state: S) -> Self {
        StdMonitor {
            inner: std::sync::Mutex::new((state, 0)),
            cv: std::sync::Condvar::new(),
        }
    }
    fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut g.0);
        let waiters = g.1;
        drop(g);
        if waiters > 0 {
            self.cv.notify_all();
        }
        r
    }
    fn inspect<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&g.0)
    }
    fn peek<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        self.inspect(f)
    }
    fn wait_until<R>(&self, mut f: impl FnMut(&mut S) -> Option<R>) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = f(&mut g.0) {
                return r;
            }
            // After another CPU of the block oopsed, what it held stays held:
            // stop instead of waiting forever (as on the exploration engine).
            let oopsed = STD_BLOCK_OOPSED.with(|o| o.borrow().clone());
            if oopsed.as_ref().is_some_and(|f| f.load(SC)) {
                drop(g);
                std::panic::panic_any(crate::check::CpuStalled);
            }
            g.1 += 1;
            g = match oopsed {
                Some(_) => {
                    self.cv
                        .wait_timeout(g, STD_OOPS_POLL)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
            };
            g.1 -= 1;
        }
    }
}

/// The exploration engine: shuttle's primitives. Every atomic access and every
/// monitor operation is a scheduling point; shuttle's schedulers (random, PCT,
/// DFS, replay) choose the interleaving. Usable inside a shuttle execution,
/// and outside one on a thread that counts runnable CPU threads
/// ([`ShuttleEngine::count_runnable`]) while only that thread runs: then no
/// point switches and no monitor waits (the explorer builds the steps before
/// a `together` block that way, once per search).
#[derive(Debug, Clone, Copy, Default)]
pub struct ShuttleEngine;

thread_local! {
    /// Model CPU threads that can run (not blocked in a monitor, not
    /// finished) in the current execution of this OS thread, when counted
    /// (see [`ShuttleEngine::count_runnable`]; `usize::MAX`: not counted).
    /// With at most one, a scheduling point has no choice to offer and is
    /// skipped: a thread that runs alone costs what it costs on the std
    /// engine.
    static RUNNABLE: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    /// A CPU oopsed in the current execution ([`Engine::note_oops`]).
    static OOPSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The CPU threads blocked in a monitor wait in the current execution.
    static BLOCKED: std::cell::RefCell<Vec<shuttle_engine::runtime::task::TaskId>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The CPU threads of the running `together` block that have not
    /// finished, and the task waiting for the last of them
    /// ([`ShuttleEngine::run_threads`]).
    static UNFINISHED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static JOINER: std::cell::Cell<Option<shuttle_engine::runtime::task::TaskId>> =
        const { std::cell::Cell::new(None) };
    /// Scheduling points decided ahead by the scheduler
    /// ([`ShuttleEngine::grant`]): at each of the next this many points it
    /// would let the running thread go on. Void as soon as the runnable set
    /// changes or the scheduler runs again.
    static GRANT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Points passed under a grant since the scheduler last ran
    /// ([`ShuttleEngine::take_granted`]).
    static GRANTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A scheduling point with a choice that the scheduler granted ahead
/// ([`ShuttleEngine::grant`]): the running thread goes on at once, and the
/// point is counted. False: the scheduler must be asked.
#[inline]
fn granted_point() -> bool {
    let left = GRANT.with(|g| g.get());
    if left > 0 {
        GRANT.with(|g| g.set(left - 1));
        GRANTED.with(|g| g.set(g.get() + 1));
        true
    } else {
        false
    }
}

/// The runnable set changed: what the scheduler decided ahead no longer holds.
#[inline]
fn revoke_grant() {
    GRANT.with(|g| g.set(0));
}

/// Makes runnable again those of `tasks` still blocked (a task in a
/// monitor's waiters may have stopped since, [`Engine::note_oops`]).
fn unblock_tasks(tasks: Vec<shuttle_engine::runtime::task::TaskId>) {
    if tasks.is_empty() {
        return;
    }
    let woken = shuttle_engine::runtime::execution::ExecutionState::with(|s| {
        let mut n = 0;
        for &t in &tasks {
            let task = s.get_mut(t);
            if task.blocked() {
                task.unblock();
                n += 1;
            }
        }
        n
    });
    BLOCKED.with(|b| b.borrow_mut().retain(|t| !tasks.contains(t)));
    runnable_add(woken);
}

/// A new execution (or a new `together` block of one): no oops yet, nobody
/// waiting.
fn reset_execution_state() {
    revoke_grant();
    OOPSED.with(|o| o.set(false));
    BLOCKED.with(|b| b.borrow_mut().clear());
}

fn runnable_add(d: isize) {
    if d != 0 {
        revoke_grant();
    }
    RUNNABLE.with(|r| {
        if r.get() != usize::MAX {
            r.set(r.get().saturating_add_signed(d));
        }
    });
}

fn others_may_run() -> bool {
    RUNNABLE.with(|r| r.get()) > 1
}

impl ShuttleEngine {
    /// Starts counting runnable CPU threads for this OS thread's executions
    /// (the explorer, whose threads are all made by `run_threads`): until a
    /// `together` block runs, one thread runs alone. Threads spawned any
    /// other way are not counted, so code that spawns its own (tests) must
    /// not call this.
    pub fn count_runnable() {
        RUNNABLE.with(|r| r.set(1));
        reset_execution_state();
    }

    /// Stops counting: every scheduling point switches again.
    pub fn stop_counting() {
        RUNNABLE.with(|r| r.set(usize::MAX));
        revoke_grant();
    }

    /// Called by a scheduler as it chooses: at each of the next `points`
    /// scheduling points with a choice it would choose the thread it just
    /// chose again, as long as no thread becomes runnable or stops being
    /// runnable (a monitor wait, a wake, a thread's end). Those points then
    /// cost no call into shuttle: the thread goes on, and the scheduler,
    /// when it next runs, counts them from [`ShuttleEngine::take_granted`].
    /// Every call replaces the last grant; a scheduler that never calls it
    /// sees every point.
    pub fn grant(points: u64) {
        GRANT.with(|g| g.set(points));
    }

    /// The points passed under grants since the last call (0 when the
    /// scheduler was asked at every point).
    pub fn take_granted() -> u64 {
        GRANTED.with(|g| g.replace(0))
    }

    /// [`ShuttleEngine::take_granted`] without taking them.
    pub fn granted() -> u64 {
        GRANTED.with(|g| g.get())
    }
}

/// Counts a CPU thread out of [`RUNNABLE`] when it finishes, however.
struct Finished;

impl Drop for Finished {
    fn drop(&mut self) {
        runnable_add(-1);
        let left = UNFINISHED.with(|u| {
            u.set(u.get().saturating_sub(1));
            u.get()
        });
        if left == 0 {
            if let Some(joiner) = JOINER.with(|j| j.take()) {
                // The last CPU thread of the block wakes the block's runner.
                let _ = shuttle_engine::runtime::execution::ExecutionState::try_with(|s| {
                    let task = s.get_mut(joiner);
                    if task.blocked() {
                        task.unblock();
                    }
                });
            }
        }
    }
}

impl Engine for ShuttleEngine {
    type Atomic = ShuttleAtomic;
    type Monitor<S: Send + 'static> = ShuttleMonitor<S>;
    const NAME: &'static str = "shuttle";
    const FOOTPRINTS: bool = true;

    fn schedule_point() {
        if others_may_run() && !granted_point() {
            shuttle_engine::runtime::thread::switch();
        }
    }

    fn note_oops() {
        use shuttle_engine::runtime::execution::ExecutionState;
        OOPSED.with(|o| o.set(true));
        if ExecutionState::try_with(|_| ()).is_ok() {
            let blocked = BLOCKED.with(|b| std::mem::take(&mut *b.borrow_mut()));
            unblock_tasks(blocked);
        }
    }

    fn schedule_point_on(obj: footprint::Obj, write: bool) {
        if others_may_run() && !granted_point() {
            footprint::op(obj, write);
            shuttle_engine::runtime::thread::switch();
        } else {
            // No other thread can run here, or the scheduler let this one go
            // on: the access belongs to the step in progress.
            footprint::hidden(obj, write);
        }
    }

    fn run_threads(threads: Vec<Box<dyn FnOnce() + Send + 'static>>) {
        let counting = RUNNABLE.with(|r| r.get()) != usize::MAX;
        if counting {
            RUNNABLE.with(|r| r.set(threads.len()));
        }
        // A block runs on a machine that has not oopsed (a dead machine runs
        // no more steps).
        reset_execution_state();
        UNFINISHED.with(|u| u.set(threads.len()));
        JOINER.with(|j| j.set(None));
        let handles: Vec<_> = threads
            .into_iter()
            .map(|f| {
                shuttle::thread::spawn(move || {
                    let _done = Finished;
                    f()
                })
            })
            .collect();
        // The runner sleeps until the last CPU thread finishes, not until
        // each one does: waking at every thread's end would make it a thread
        // the schedulers choose among while the others still run, with
        // nothing to do but wait for the next (decisions that order nothing).
        if UNFINISHED.with(|u| u.get()) > 0 {
            use shuttle_engine::runtime::execution::ExecutionState;
            JOINER.with(|j| j.set(Some(ExecutionState::me())));
            ExecutionState::with(|s| s.current_mut().block(false));
            footprint::op_none();
            shuttle_engine::runtime::thread::switch();
        }
        let mut panicked = None;
        for h in handles {
            if let Err(p) = h.join() {
                panicked.get_or_insert(p);
            }
        }
        if counting {
            RUNNABLE.with(|r| r.set(1));
        }
        revoke_grant();
        if let Some(p) = panicked {
            std::panic::resume_unwind(p);
        }
    }
}

/// The exploration engine's atomic word: a std atomic behind a shuttle
/// scheduling point. Each operation is one point (as with shuttle's own
/// atomics, which do the same and also keep vector clocks the model does not
/// use) and names the word and whether it writes ([`footprint`]);
/// [`Atomic::peek`] is none.
pub struct ShuttleAtomic {
    v: std::sync::atomic::AtomicU64,
    id: u32,
}

impl ShuttleAtomic {
    #[inline]
    fn point(&self, write: bool) {
        ShuttleEngine::schedule_point_on(footprint::Obj::Id(self.id), write);
    }
}

impl Atomic for ShuttleAtomic {
    #[inline]
    fn new(v: u64) -> Self {
        ShuttleAtomic {
            v: std::sync::atomic::AtomicU64::new(v),
            id: footprint::next_id(),
        }
    }
    #[inline]
    fn load(&self) -> u64 {
        self.point(false);
        self.v.load(SC)
    }
    #[inline]
    fn store(&self, v: u64) {
        self.point(true);
        self.v.store(v, SC)
    }
    #[inline]
    fn swap(&self, v: u64) -> u64 {
        self.point(true);
        self.v.swap(v, SC)
    }
    #[inline]
    fn compare_exchange(&self, current: u64, new: u64) -> Result<u64, u64> {
        self.point(true);
        self.v.compare_exchange(current, new, SC, SC)
    }
    #[inline]
    fn fetch_add(&self, v: u64) -> u64 {
        self.point(true);
        self.v.fetch_add(v, SC)
    }
    #[inline]
    fn fetch_sub(&self, v: u64) -> u64 {
        self.point(true);
        self.v.fetch_sub(v, SC)
    }
    #[inline]
    fn fetch_or(&self, v: u64) -> u64 {
        self.point(true);
        self.v.fetch_or(v, SC)
    }
    #[inline]
    fn fetch_and(&self, v: u64) -> u64 {
        self.point(true);
        self.v.fetch_and(v, SC)
    }
    #[inline]
    fn peek(&self) -> u64 {
        self.v.load(SC)
    }
    #[inline]
    fn init(&self, v: u64) {
        // No scheduling point, but the step in progress wrote it.
        footprint::hidden(footprint::Obj::Id(self.id), true);
        self.v.store(v, SC)
    }
}

/// [`Monitor`] for the exploration engine: the state behind one scheduling
/// point per operation, and waiters that block (shuttle's task states, so a
/// thread waiting for a state is not runnable, never spins, and shuttle sees
/// a deadlock when every thread waits). Every execution runs on one OS
/// thread, so the std mutexes inside are never contended.
pub struct ShuttleMonitor<S> {
    state: std::sync::Mutex<S>,
    waiters: std::sync::Mutex<Vec<shuttle_engine::runtime::task::TaskId>>,
    id: u32,
}

impl<S> ShuttleMonitor<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Makes every waiter runnable again (each retries its condition).
    fn wake(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        unblock_tasks(waiters);
    }
}

impl<S: Send + 'static> Monitor<S> for ShuttleMonitor<S> {
    fn new(state: S) -> Self {
        ShuttleMonitor {
            state: std::sync::Mutex::new(state),
            waiters: std::sync::Mutex::new(Vec::new()),
            id: footprint::next_id(),
        }
    }
    fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        ShuttleEngine::schedule_point_on(footprint::Obj::Id(self.id), true);
        let r = f(&mut self.lock());
        self.wake();
        r
    }
    fn inspect<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        ShuttleEngine::schedule_point_on(footprint::Obj::Id(self.id), false);
        f(&self.lock())
    }
    fn peek<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.lock())
    }
    fn wait_until<R>(&self, mut f: impl FnMut(&mut S) -> Option<R>) -> R {
        use shuttle_engine::runtime::execution::ExecutionState;
        loop {
            ShuttleEngine::schedule_point_on(footprint::Obj::Id(self.id), true);
            if let Some(r) = f(&mut self.lock()) {
                return r;
            }
            // Outside an execution (the explorer runs the steps before a
            // `together` block on a plain thread, with one CPU thread
            // counted) nobody can ever wake this thread: it deadlocked
            // itself. Say so instead of reaching into shuttle's state,
            // which exists only inside an execution.
            assert!(
                ExecutionState::try_with(|_| ()).is_ok(),
                "deadlock: the only CPU waits on a monitor outside an exploration execution"
            );
            // After an oops nobody waits: what the oopsed CPU held stays
            // held (Engine::note_oops).
            if OOPSED.with(|o| o.get()) {
                std::panic::panic_any(crate::check::CpuStalled);
            }
            let me = ExecutionState::me();
            BLOCKED.with(|b| b.borrow_mut().push(me));
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(me);
            runnable_add(-1);
            ExecutionState::with(|s| s.current_mut().block(false));
            // Resuming only leads to the retry above, which has its own point.
            footprint::op_none();
            shuttle_engine::runtime::thread::switch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the std engine, a CPU of a block that waits on what an oopsed CPU
    /// kept stops (CpuStalled) instead of waiting forever.
    #[test]
    fn after_an_oops_a_std_wait_stops() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let held = Arc::new(StdMonitor::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let (h, s) = (held.clone(), stalled.clone());
        StdEngine::run_threads(vec![
            Box::new(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                StdEngine::note_oops();
            }),
            Box::new(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    h.wait_until(|locked| if *locked { None } else { Some(()) })
                }));
                let why = r.err();
                s.store(
                    why.is_some_and(|p| p.downcast_ref::<crate::check::CpuStalled>().is_some()),
                    SC,
                );
            }),
        ]);
        assert!(stalled.load(SC));
        assert!(held.peek(|l| *l), "nobody released it");
    }

    /// `Monitor::peek` reads the state; on the exploration engine it is no
    /// scheduling point, where `inspect` is one. On an OS thread that counts
    /// one runnable CPU thread, every point is skipped and noted as a hidden
    /// access of the running step, so the hidden accesses show the points.
    #[test]
    fn monitor_peek_reads_without_a_scheduling_point() {
        let s = StdMonitor::new(5u32);
        s.update(|v| *v += 1);
        assert_eq!(s.peek(|v| *v), 6);

        footprint::reset();
        ShuttleEngine::count_runnable();
        let m = ShuttleMonitor::new(7u32);
        m.update(|v| *v += 1);
        footprint::take_hidden();
        let peeked = m.peek(|v| *v);
        let after_peek = footprint::take_hidden();
        let inspected = m.inspect(|v| *v);
        let after_inspect = footprint::take_hidden();
        ShuttleEngine::stop_counting();
        footprint::stop();
        assert_eq!((peeked, inspected), (8, 8));
        assert!(after_peek.is_empty(), "{after_peek:?}");
        assert_eq!(
            after_inspect,
            vec![footprint::Access {
                obj: footprint::Obj::Id(m.id),
                write: false
            }]
        );
    }

    /// Outside a shuttle execution, a monitor wait that cannot succeed at
    /// once has nobody to wake it: it panics as a deadlock instead of
    /// reaching into shuttle's execution state.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn a_wait_outside_an_execution_that_cannot_succeed_is_a_deadlock() {
        ShuttleEngine::count_runnable();
        let m = ShuttleMonitor::new(true);
        m.wait_until(|held| if *held { None } else { Some(()) });
    }

    /// The same wait succeeds at once when its condition holds.
    #[test]
    fn a_wait_outside_an_execution_that_succeeds_at_once_returns() {
        ShuttleEngine::count_runnable();
        let m = ShuttleMonitor::new(false);
        m.wait_until(|held| {
            if *held {
                None
            } else {
                *held = true;
                Some(())
            }
        });
        ShuttleEngine::stop_counting();
        assert!(m.peek(|held| *held));
    }
}
