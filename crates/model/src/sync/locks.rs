//! Spinlocks, rw-semaphores and the page lock, built on the engine's monitor and
//! checked by lockdep through the acquiring [`Cpu`].

use super::lockdep::Acquire;
use super::LockClass;
use crate::cpu::Cpu;
use crate::engine::{Engine, Monitor};

fn instance_of<T>(x: &T) -> usize {
    x as *const T as usize
}

/// `spinlock_t`. Blocking in the model: a waiter sleeps until the holder
/// releases.
pub struct SpinLock<E: Engine> {
    class: LockClass,
    locked: E::Monitor<bool>,
}

impl<E: Engine> SpinLock<E> {
    pub fn new(class: LockClass) -> Self {
        SpinLock {
            class,
            locked: E::Monitor::new(false),
        }
    }

    /// `spin_lock()`.
    pub fn lock<'a>(&'a self, cpu: &'a Cpu<E>) -> SpinGuard<'a, E> {
        self.acquire(cpu, Acquire::Normal)
    }

    /// `spin_lock_nested(lock, SINGLE_DEPTH_NESTING)`.
    pub fn lock_nested<'a>(&'a self, cpu: &'a Cpu<E>) -> SpinGuard<'a, E> {
        self.acquire(cpu, Acquire::Nested)
    }

    fn acquire<'a>(&'a self, cpu: &'a Cpu<E>, how: Acquire) -> SpinGuard<'a, E> {
        cpu.lock_acquire(self.class, instance_of(self), how);
        self.locked.wait_until(|l| {
            if *l {
                None
            } else {
                let _: () = *l = true;
                Some(())
            }
        });
        cpu.lock_acquired(self.class, instance_of(self));
        SpinGuard { lock: self, cpu }
    }

    /// A copy of the lock for a copy of the machine (`Kernel::snapshot`): the
    /// same class, free. The lock must be free: a copy is made at a quiescent
    /// point, where no CPU holds a lock; a held one would be a lock the copy
    /// could never release.
    pub fn snapshot(&self) -> Self {
        assert!(
            !self.locked.peek(|l| *l),
            "{} held at a quiescent point: the machine cannot be copied",
            self.class.kernel_name()
        );
        SpinLock::new(self.class)
    }

    /// `spin_trylock()`.
    pub fn try_lock<'a>(&'a self, cpu: &'a Cpu<E>) -> Option<SpinGuard<'a, E>> {
        let got = self.locked.update(|l| {
            if *l {
                false
            } else {
                *l = true;
                true
            }
        });
        if got {
            cpu.lock_acquired(self.class, instance_of(self));
            Some(SpinGuard { lock: self, cpu })
        } else {
            None
        }
    }

    /// `spin_is_locked()` (for `assert_spin_locked`).
    pub fn is_locked(&self) -> bool {
        self.locked.inspect(|l| *l)
    }

    /// Whether `cpu` holds this lock (lockdep's `lockdep_is_held`).
    pub fn held_by(&self, cpu: &Cpu<E>) -> bool {
        cpu.holds(instance_of(self))
    }
}

/// A held spinlock that keeps its lock alive (a lock made on first use and
/// reached through an `Arc`, as the swap device's cluster locks are);
/// `spin_unlock()` on drop.
pub struct ArcSpinGuard<'c, E: Engine> {
    lock: std::sync::Arc<SpinLock<E>>,
    cpu: &'c Cpu<E>,
}

impl<E: Engine> SpinLock<E> {
    /// `spin_lock()` of a lock held through an `Arc`.
    pub fn lock_arc(lock: std::sync::Arc<Self>, cpu: &Cpu<E>) -> ArcSpinGuard<'_, E> {
        let g = lock.acquire(cpu, Acquire::Normal);
        std::mem::forget(g);
        ArcSpinGuard { lock, cpu }
    }
}

impl<E: Engine> Drop for ArcSpinGuard<'_, E> {
    fn drop(&mut self) {
        self.cpu.lock_release(instance_of(&*self.lock));
        self.lock.locked.update(|l| *l = false);
    }
}

/// A held spinlock; `spin_unlock()` on drop.
pub struct SpinGuard<'a, E: Engine> {
    lock: &'a SpinLock<E>,
    cpu: &'a Cpu<E>,
}

impl<E: Engine> Drop for SpinGuard<'_, E> {
    fn drop(&mut self) {
        self.cpu.lock_release(instance_of(self.lock));
        self.lock.locked.update(|l| *l = false);
    }
}

#[derive(Default)]
struct RwState {
    readers: u32,
    writer: bool,
    writers_waiting: u32,
}

/// `struct rw_semaphore`. Readers queue behind a waiting writer, as the kernel's
/// rwsem does, so a recursive read can deadlock exactly where it can in Linux.
pub struct RwSem<E: Engine> {
    class: LockClass,
    state: E::Monitor<RwState>,
}

impl<E: Engine> RwSem<E> {
    pub fn new(class: LockClass) -> Self {
        RwSem {
            class,
            state: E::Monitor::new(RwState::default()),
        }
    }

    /// A copy of the semaphore for a copy of the machine (`Kernel::snapshot`):
    /// the same class, free, nobody waiting. It must be free (see
    /// [`SpinLock::snapshot`]).
    pub fn snapshot(&self) -> Self {
        let (readers, writer, waiting) = self
            .state
            .peek(|s| (s.readers, s.writer, s.writers_waiting));
        assert!(
            readers == 0 && !writer && waiting == 0,
            "{} held at a quiescent point ({readers} readers, writer {writer}, {waiting} \
             writers waiting): the machine cannot be copied",
            self.class.kernel_name()
        );
        RwSem::new(self.class)
    }

    /// `down_read()`.
    pub fn read<'a>(&'a self, cpu: &'a Cpu<E>) -> RwSemReadGuard<'a, E> {
        cpu.lock_acquire(self.class, instance_of(self), Acquire::Normal);
        self.state.wait_until(|s| {
            if s.writer || s.writers_waiting > 0 {
                None
            } else {
                s.readers += 1;
                Some(())
            }
        });
        cpu.lock_acquired(self.class, instance_of(self));
        RwSemReadGuard { sem: self, cpu }
    }

    /// `down_write()` (`down_write_nested()` with `nested`).
    pub fn write<'a>(&'a self, cpu: &'a Cpu<E>) -> RwSemWriteGuard<'a, E> {
        self.write_as(cpu, Acquire::Normal)
    }

    /// `down_write_nested(sem, SINGLE_DEPTH_NESTING)`.
    pub fn write_nested<'a>(&'a self, cpu: &'a Cpu<E>) -> RwSemWriteGuard<'a, E> {
        self.write_as(cpu, Acquire::Nested)
    }

    fn write_as<'a>(&'a self, cpu: &'a Cpu<E>, how: Acquire) -> RwSemWriteGuard<'a, E> {
        cpu.lock_acquire(self.class, instance_of(self), how);
        let mut queued = false;
        self.state.wait_until(|s| {
            if !s.writer && s.readers == 0 {
                if queued {
                    s.writers_waiting -= 1;
                }
                s.writer = true;
                Some(())
            } else {
                if !queued {
                    s.writers_waiting += 1;
                    queued = true;
                }
                None
            }
        });
        cpu.lock_acquired(self.class, instance_of(self));
        RwSemWriteGuard { sem: self, cpu }
    }

    /// `down_read()` without a guard, for locks released in another function
    /// (the anon_vma lock of an rmap walk). Pair with [`RwSem::up_read`].
    pub fn down_read(&self, cpu: &Cpu<E>) {
        std::mem::forget(self.read(cpu));
    }

    /// `up_read()` of a [`RwSem::down_read`].
    pub fn up_read(&self, cpu: &Cpu<E>) {
        cpu.lock_release(instance_of(self));
        self.state.update(|s| s.readers -= 1);
    }

    /// `down_write()` without a guard. Pair with [`RwSem::up_write`].
    pub fn down_write(&self, cpu: &Cpu<E>) {
        std::mem::forget(self.write(cpu));
    }

    /// `down_write_trylock()` without a guard: takes the semaphore for write
    /// if it is free (no ordering constraint). Pair with [`RwSem::up_write`].
    pub fn try_write(&self, cpu: &Cpu<E>) -> bool {
        let got = self.state.update(|s| {
            if !s.writer && s.readers == 0 {
                s.writer = true;
                true
            } else {
                false
            }
        });
        if got {
            cpu.lock_acquired(self.class, instance_of(self));
        }
        got
    }

    /// `up_write()` of a [`RwSem::down_write`].
    pub fn up_write(&self, cpu: &Cpu<E>) {
        cpu.lock_release(instance_of(self));
        self.state.update(|s| s.writer = false);
    }

    /// Whether anyone holds the semaphore (for `lockdep_assert_held`).
    pub fn is_locked(&self) -> bool {
        self.state.inspect(|s| s.writer || s.readers > 0)
    }

    /// Whether it is held for write.
    pub fn is_write_locked(&self) -> bool {
        self.state.inspect(|s| s.writer)
    }

    /// Whether `cpu` holds this rwsem (for read or write).
    pub fn held_by(&self, cpu: &Cpu<E>) -> bool {
        cpu.holds(instance_of(self))
    }
}

/// A read-held rwsem; `up_read()` on drop.
pub struct RwSemReadGuard<'a, E: Engine> {
    sem: &'a RwSem<E>,
    cpu: &'a Cpu<E>,
}

impl<E: Engine> Drop for RwSemReadGuard<'_, E> {
    fn drop(&mut self) {
        self.cpu.lock_release(instance_of(self.sem));
        self.sem.state.update(|s| s.readers -= 1);
    }
}

/// A write-held rwsem; `up_write()` on drop.
pub struct RwSemWriteGuard<'a, E: Engine> {
    sem: &'a RwSem<E>,
    cpu: &'a Cpu<E>,
}

impl<E: Engine> Drop for RwSemWriteGuard<'_, E> {
    fn drop(&mut self) {
        self.cpu.lock_release(instance_of(self.sem));
        self.sem.state.update(|s| s.writer = false);
    }
}

/// The state behind PG_locked: whether the page is locked. The page lock is not
/// scoped (the kernel unlocks in another function than the one that locked), so
/// it has explicit `lock_page`/`unlock_page` operations on the page (see
/// `crate::page`).
#[derive(Default)]
pub struct PageLockState {
    pub locked: bool,
}

/// A copy of PG_locked for a copy of the machine (`Page::snapshot`): unlocked.
/// The page must be unlocked (see [`SpinLock::snapshot`]).
pub(crate) fn page_lock_snapshot<E: Engine>(
    m: &E::Monitor<PageLockState>,
) -> E::Monitor<PageLockState> {
    assert!(
        !m.peek(|s| s.locked),
        "a page is locked at a quiescent point: the machine cannot be copied"
    );
    E::Monitor::new(PageLockState::default())
}

/// Helpers for the page lock, used by `crate::page`.
pub(crate) fn page_lock<E: Engine>(
    m: &E::Monitor<PageLockState>,
    cpu: &Cpu<E>,
    how: Acquire,
    class: LockClass,
) {
    cpu.lock_acquire(class, instance_of(m), how);
    m.wait_until(|s| {
        if s.locked {
            None
        } else {
            let _: () = s.locked = true;
            Some(())
        }
    });
    cpu.lock_acquired(class, instance_of(m));
}

pub(crate) fn page_trylock<E: Engine>(
    m: &E::Monitor<PageLockState>,
    cpu: &Cpu<E>,
    class: LockClass,
) -> bool {
    let got = m.update(|s| {
        if s.locked {
            false
        } else {
            s.locked = true;
            true
        }
    });
    if got {
        cpu.lock_acquired(class, instance_of(m));
    }
    got
}

pub(crate) fn page_unlock<E: Engine>(m: &E::Monitor<PageLockState>, cpu: &Cpu<E>) {
    cpu.lock_release(instance_of(m));
    m.update(|s| s.locked = false);
}

/// Sets PG_locked without a lock operation: __split_huge_page_tail() copies the
/// head's PG_locked into each tail page.
pub(crate) fn page_lock_inherit<E: Engine>(m: &E::Monitor<PageLockState>) {
    m.update(|s| s.locked = true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CpuId, Geometry};
    use crate::{Config, Kernel, StdEngine};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn cpu() -> Cpu<StdEngine> {
        Cpu::new(Kernel::new(Config::new(Geometry::TINY)), CpuId(0))
    }

    /// A free lock copies as a free lock of the same class; a held one (or a
    /// held rwsem, or a locked page) is refused: a copy is made only at a
    /// quiescent point.
    #[test]
    fn locks_copy_free_and_refuse_to_copy_held() {
        let cpu = cpu();
        let l = SpinLock::<StdEngine>::new(LockClass::LruLock);
        {
            let _g = l.lock(&cpu);
            assert!(catch_unwind(AssertUnwindSafe(|| l.snapshot())).is_err());
        }
        let c = l.snapshot();
        assert_eq!(c.class, LockClass::LruLock);
        assert!(!c.is_locked());
        let g = c.lock(&cpu);
        assert!(c.is_locked() && !l.is_locked(), "the copy is its own lock");
        drop(g);

        let s = RwSem::<StdEngine>::new(LockClass::MmapLock);
        {
            let _r = s.read(&cpu);
            assert!(catch_unwind(AssertUnwindSafe(|| s.snapshot())).is_err());
        }
        {
            let _w = s.write(&cpu);
            assert!(catch_unwind(AssertUnwindSafe(|| s.snapshot())).is_err());
        }
        let c = s.snapshot();
        assert_eq!(c.class, LockClass::MmapLock);
        assert!(!c.is_locked());
        drop(c.write(&cpu));

        let m = <StdEngine as Engine>::Monitor::new(PageLockState::default());
        page_lock_inherit::<StdEngine>(&m);
        assert!(catch_unwind(AssertUnwindSafe(|| page_lock_snapshot::<StdEngine>(&m))).is_err());
        page_unlock::<StdEngine>(&m, &cpu);
        let c = page_lock_snapshot::<StdEngine>(&m);
        assert!(!c.inspect(|s| s.locked));
    }
}
