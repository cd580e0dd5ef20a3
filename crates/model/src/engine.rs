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
//! Leaves out: memory orderings. Every access is sequentially consistent; the
//! model explores interleavings, not weak-memory reorderings.

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
    fn peek(&self) -> u64 {
        self.load()
    }

    /// The word read as a signed counter (`atomic_read`).
    fn load_i64(&self) -> i64 {
        self.load() as i64
    }
    /// [`Atomic::peek`] of a signed counter.
    fn peek_i64(&self) -> i64 {
        self.peek() as i64
    }
    /// `atomic_set` of a signed counter.
    fn store_i64(&self, v: i64) {
        self.store(v as u64)
    }
    /// `atomic_add_return`: adds `d` and returns the new value.
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
}

/// The standard library engine: real threads, real mutexes.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdEngine;

impl Engine for StdEngine {
    type Atomic = std::sync::atomic::AtomicU64;
    type Monitor<S: Send + 'static> = StdMonitor<S>;
    const NAME: &'static str = "std";

    fn run_threads(threads: Vec<Box<dyn FnOnce() + Send + 'static>>) {
        let handles: Vec<_> = threads.into_iter().map(std::thread::spawn).collect();
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
            fn new(v: u64) -> Self {
                <$t>::new(v)
            }
            fn load(&self) -> u64 {
                self.load(SC)
            }
            fn store(&self, v: u64) {
                self.store(v, SC)
            }
            fn swap(&self, v: u64) -> u64 {
                self.swap(v, SC)
            }
            fn compare_exchange(&self, current: u64, new: u64) -> Result<u64, u64> {
                self.compare_exchange(current, new, SC, SC)
            }
            fn fetch_add(&self, v: u64) -> u64 {
                self.fetch_add(v, SC)
            }
            fn fetch_sub(&self, v: u64) -> u64 {
                self.fetch_sub(v, SC)
            }
            fn fetch_or(&self, v: u64) -> u64 {
                self.fetch_or(v, SC)
            }
            fn fetch_and(&self, v: u64) -> u64 {
                self.fetch_and(v, SC)
            }
        }
    };
}

impl_atomic!(std::sync::atomic::AtomicU64);

const SC: std::sync::atomic::Ordering = std::sync::atomic::Ordering::SeqCst;

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
    fn wait_until<R>(&self, mut f: impl FnMut(&mut S) -> Option<R>) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = f(&mut g.0) {
                return r;
            }
            g.1 += 1;
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            g.1 -= 1;
        }
    }
}

/// The exploration engine: shuttle's primitives. Every atomic access and every
/// monitor operation is a scheduling point; shuttle's schedulers (random, PCT,
/// DFS, replay) choose the interleaving. Only usable inside a shuttle
/// execution.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShuttleEngine;

impl Engine for ShuttleEngine {
    type Atomic = ShuttleAtomic;
    type Monitor<S: Send + 'static> = ShuttleMonitor<S>;
    const NAME: &'static str = "shuttle";

    fn schedule_point() {
        shuttle_engine::runtime::thread::switch();
    }

    fn run_threads(threads: Vec<Box<dyn FnOnce() + Send + 'static>>) {
        let handles: Vec<_> = threads.into_iter().map(shuttle::thread::spawn).collect();
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    }
}

/// The exploration engine's atomic word: a std atomic behind a shuttle
/// scheduling point. Each operation is one point (as with shuttle's own
/// atomics, which do the same and also keep vector clocks the model does not
/// use); [`Atomic::peek`] is none.
pub struct ShuttleAtomic(std::sync::atomic::AtomicU64);

impl Atomic for ShuttleAtomic {
    fn new(v: u64) -> Self {
        ShuttleAtomic(std::sync::atomic::AtomicU64::new(v))
    }
    fn load(&self) -> u64 {
        ShuttleEngine::schedule_point();
        self.0.load(SC)
    }
    fn store(&self, v: u64) {
        ShuttleEngine::schedule_point();
        self.0.store(v, SC)
    }
    fn swap(&self, v: u64) -> u64 {
        ShuttleEngine::schedule_point();
        self.0.swap(v, SC)
    }
    fn compare_exchange(&self, current: u64, new: u64) -> Result<u64, u64> {
        ShuttleEngine::schedule_point();
        self.0.compare_exchange(current, new, SC, SC)
    }
    fn fetch_add(&self, v: u64) -> u64 {
        ShuttleEngine::schedule_point();
        self.0.fetch_add(v, SC)
    }
    fn fetch_sub(&self, v: u64) -> u64 {
        ShuttleEngine::schedule_point();
        self.0.fetch_sub(v, SC)
    }
    fn fetch_or(&self, v: u64) -> u64 {
        ShuttleEngine::schedule_point();
        self.0.fetch_or(v, SC)
    }
    fn fetch_and(&self, v: u64) -> u64 {
        ShuttleEngine::schedule_point();
        self.0.fetch_and(v, SC)
    }
    fn peek(&self) -> u64 {
        self.0.load(SC)
    }
}

/// [`Monitor`] over shuttle's `Mutex` and `Condvar`.
pub struct ShuttleMonitor<S> {
    inner: shuttle::sync::Mutex<(S, usize)>,
    cv: shuttle::sync::Condvar,
}

impl<S: Send + 'static> Monitor<S> for ShuttleMonitor<S> {
    fn new(state: S) -> Self {
        ShuttleMonitor {
            inner: shuttle::sync::Mutex::new((state, 0)),
            cv: shuttle::sync::Condvar::new(),
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
    fn wait_until<R>(&self, mut f: impl FnMut(&mut S) -> Option<R>) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = f(&mut g.0) {
                return r;
            }
            g.1 += 1;
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
            g.1 -= 1;
        }
    }
}
