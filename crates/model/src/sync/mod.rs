//! The sync facade: the kernel's locks, built on the engine's [`Monitor`].
//!
//! Models: `spinlock_t` (include/linux/spinlock.h), `struct rw_semaphore`
//! (include/linux/rwsem.h) and the page lock PG_locked (include/linux/pagemap.h,
//! `lock_page`/`trylock_page`/`unlock_page`). Every acquisition goes through
//! [`lockdep`], which checks it against the lock order of [`lock_order`], the one
//! home of the order.
//!
//! Locks are blocking primitives: a waiter sleeps on the monitor's condition
//! variable until the holder releases (never a yield loop), so the exploration
//! engine sees real blocking and can report deadlocks.
//!
//! Leaves out: interrupts (`_irqsave` variants are plain), RCU, lock stealing and
//! the rwsem's optimistic spinning.
//!
//! [`Monitor`]: crate::engine::Monitor

pub mod lock_order;
pub mod lockdep;
pub(crate) mod locks;

pub use lock_order::LockClass;
pub use locks::{
    ArcSpinGuard, PageLockState, RwSem, RwSemReadGuard, RwSemWriteGuard, SpinGuard, SpinLock,
};
