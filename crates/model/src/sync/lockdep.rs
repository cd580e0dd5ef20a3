//! A lockdep-like checker: each CPU records the locks it holds; a blocking
//! acquisition that breaks [`super::lock_order`] is reported as a violation.
//!
//! Models: the class-order part of kernel/locking/lockdep.c ("possible circular
//! locking dependency detected", "possible recursive locking detected"). It
//! checks the static order of mm/rmap.c rather than learning a dependency graph.
//! A trylock never creates a dependency (it cannot deadlock), as in lockdep.

use super::LockClass;
use serde::Serialize;

/// One held lock.
#[derive(Clone, Debug, Serialize)]
pub struct HeldLock {
    pub class: LockClass,
    /// Identity of the lock instance (its address).
    pub instance: usize,
    /// The kernel function that took it.
    pub taken_in: &'static str,
}

/// The locks a CPU holds, in acquisition order.
#[derive(Default, Debug)]
pub struct HeldLocks {
    pub stack: Vec<HeldLock>,
}

/// How an acquisition is annotated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// A plain blocking acquisition.
    Normal,
    /// `*_nested(..., SINGLE_DEPTH_NESTING)`: one more lock of a held class.
    Nested,
    /// A trylock: no ordering constraint.
    Try,
}

impl HeldLocks {
    /// Checks an acquisition against the held locks. Returns the description of
    /// an inversion if there is one.
    pub fn check(&self, class: LockClass, instance: usize, how: Acquire) -> Option<String> {
        if how == Acquire::Try {
            return None;
        }
        for held in &self.stack {
            if held.instance == instance {
                return Some(format!(
                    "possible recursive locking detected: {} already held (taken in {}())",
                    class.kernel_name(),
                    held.taken_in
                ));
            }
            if held.class.rank() > class.rank() || (held.class == class && how != Acquire::Nested) {
                let rule = if held.class == class {
                    "a second lock of one class needs a nesting annotation".to_string()
                } else {
                    format!(
                        "mm/rmap.c orders {} before {}",
                        class.kernel_name(),
                        held.class.kernel_name()
                    )
                };
                return Some(format!(
                    "possible circular locking dependency detected: acquiring {} while holding {} (taken in {}()); {}",
                    class.kernel_name(),
                    held.class.kernel_name(),
                    held.taken_in,
                    rule
                ));
            }
        }
        None
    }

    pub fn push(&mut self, lock: HeldLock) {
        self.stack.push(lock);
    }

    /// Removes the most recent record of `instance`; returns whether it was held.
    pub fn release(&mut self, instance: usize) -> bool {
        if let Some(pos) = self.stack.iter().rposition(|h| h.instance == instance) {
            self.stack.remove(pos);
            true
        } else {
            false
        }
    }

    pub fn holds(&self, instance: usize) -> bool {
        self.stack.iter().any(|h| h.instance == instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(class: LockClass, instance: usize) -> HeldLock {
        HeldLock {
            class,
            instance,
            taken_in: "test",
        }
    }

    #[test]
    fn order_follows_rmap_c() {
        let mut h = HeldLocks::default();
        h.push(held(LockClass::MmapLock, 1));
        assert!(h.check(LockClass::PageLock, 2, Acquire::Normal).is_none());
        h.push(held(LockClass::PageLock, 2));
        assert!(h
            .check(LockClass::AnonVmaRwsem, 3, Acquire::Normal)
            .is_none());
        h.push(held(LockClass::PageTableLock, 4));
        // A page lock under a page-table lock is an inversion ...
        let msg = h.check(LockClass::PageLock, 5, Acquire::Normal).unwrap();
        assert!(msg.contains("circular"), "{msg}");
        // ... but a trylock is not.
        assert!(h.check(LockClass::PageLock, 5, Acquire::Try).is_none());
        // A second PTL needs the nesting annotation.
        assert!(h
            .check(LockClass::PageTableLock, 6, Acquire::Normal)
            .is_some());
        assert!(h
            .check(LockClass::PageTableLock, 6, Acquire::Nested)
            .is_none());
        // The same instance twice is recursive locking.
        assert!(h
            .check(LockClass::PageTableLock, 4, Acquire::Nested)
            .unwrap()
            .contains("recursive"));
        assert!(h.release(4));
        assert!(!h.release(4));
    }
}
