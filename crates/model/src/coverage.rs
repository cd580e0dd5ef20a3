//! What an execution reached: the kernel functions each CPU entered, the named
//! marks it passed, and which CPUs were inside kernel code (or a user access)
//! at the same time.
//!
//! Models: nothing in the kernel; this is the explorer's evidence that a clean
//! search ran the race path (DESIGN.md, "What a search must say"). It is off
//! unless the runner turns it on, it is written only by the CPU that runs (so
//! it is plain std state, never a scheduling point), and it never changes what
//! the model does.
//!
//! A mark is a named point on a path, placed where the kernel decides
//! something a race depends on (`split_huge_page_to_list: unmap_page
//! reached`). A *give-up* mark is one where the path stops before doing its
//! work (`split_huge_page_to_list: EBUSY: extra references`): a thread that
//! gives up in every execution never raced the other threads on the path the
//! scenario is about, and the explorer says so.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// A named point on a kernel path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Mark {
    pub name: &'static str,
    /// The path stops here without doing its work.
    pub gives_up: bool,
}

impl Mark {
    /// A point reached on the way.
    pub const fn reached(name: &'static str) -> Mark {
        Mark {
            name,
            gives_up: false,
        }
    }
    /// A point where the path gives up.
    pub const fn gives_up(name: &'static str) -> Mark {
        Mark {
            name,
            gives_up: true,
        }
    }
}

/// What one execution reached (per CPU).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecCoverage {
    /// Calls of each kernel function, by CPU.
    pub calls: BTreeMap<(usize, &'static str), u64>,
    /// Passes through each mark, by CPU.
    pub marks: BTreeMap<(usize, Mark), u64>,
    /// Pairs of CPUs `(a, b)`, `a < b`, that were both active (inside a kernel
    /// function or a user access) at some moment.
    pub overlaps: BTreeSet<(usize, usize)>,
}

/// What the sink gathers, kept for speed: a kernel function is entered on
/// every call of `Cpu::func`, so its count is found by the name's address (a
/// linear scan of the few functions an execution enters, with no string
/// compare), and the maps of [`ExecCoverage`] are built when it is read.
/// Two copies of one name at different addresses are two entries here and
/// one in [`ExecCoverage`].
#[derive(Clone, Debug, Default)]
struct Sink {
    /// Where a call's entry was last found, by a hash of the name's address
    /// and the CPU (index + 1 into `calls`; 0: none): most calls find their
    /// entry there at once.
    slots: Vec<u16>,
    calls: Vec<((usize, &'static str), u64)>,
    marks: Vec<((usize, Mark), u64)>,
    overlaps: BTreeSet<(usize, usize)>,
}

impl Sink {
    fn exec(&self) -> ExecCoverage {
        let mut e = ExecCoverage::default();
        for &(k, n) in &self.calls {
            *e.calls.entry(k).or_default() += n;
        }
        for &(k, n) in &self.marks {
            *e.marks.entry(k).or_default() += n;
        }
        e.overlaps = self.overlaps.clone();
        e
    }
}

/// The size of [`Sink`]'s table of slots.
const SLOTS: usize = 256;

/// The slot of a call of `name` on `cpu`: a hash of the name's address.
fn slot_of(cpu: usize, name: &'static str) -> usize {
    let a = name.as_ptr() as u64 ^ ((cpu as u64) << 56);
    (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SLOTS
}

/// The same `&'static str` (address and length): no compare of the bytes.
fn same_name(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b)
}

/// The coverage sink of one machine.
#[derive(Default)]
pub struct Coverage {
    on: AtomicBool,
    data: Mutex<Sink>,
    /// Per CPU: how deep it is in active code (kernel functions, user accesses).
    active: Mutex<Vec<u32>>,
}

impl Coverage {
    /// Starts recording (the runner turns it on for `together` blocks).
    pub fn set_enabled(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kernel function entered on `cpu`.
    pub fn call(&self, cpu: usize, name: &'static str) {
        if self.enabled() {
            let mut guard = self.lock();
            let d = &mut *guard;
            if d.slots.is_empty() {
                d.slots = vec![0; SLOTS];
            }
            let h = slot_of(cpu, name);
            let hit = (d.slots[h] as usize).checked_sub(1).filter(|&i| {
                let ((c, n), _) = d.calls[i];
                c == cpu && same_name(n, name)
            });
            let i = match hit.or_else(|| {
                d.calls
                    .iter()
                    .position(|((c, n), _)| *c == cpu && same_name(n, name))
            }) {
                Some(i) => i,
                None => {
                    d.calls.push(((cpu, name), 0));
                    d.calls.len() - 1
                }
            };
            d.calls[i].1 += 1;
            if let Ok(slot) = u16::try_from(i + 1) {
                d.slots[h] = slot;
            }
        }
    }

    /// A mark passed on `cpu`.
    pub fn mark(&self, cpu: usize, mark: Mark) {
        if self.enabled() {
            let mut d = self.lock();
            match d.marks.iter_mut().find(|((c, m), _)| {
                *c == cpu && same_name(m.name, mark.name) && m.gives_up == mark.gives_up
            }) {
                Some((_, count)) => *count += 1,
                None => d.marks.push(((cpu, mark), 1)),
            }
        }
    }

    /// `cpu` enters active code (nested entries count once). Returns whether
    /// it was recorded (coverage on): only then must [`Coverage::leave`]
    /// follow.
    pub fn enter(&self, cpu: usize) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.len() <= cpu {
            active.resize(cpu + 1, 0);
        }
        active[cpu] += 1;
        if active[cpu] == 1 && (0..active.len()).any(|c| c != cpu && active[c] > 0) {
            // Lock order: `active`, then `data` (`copy` takes them one at a
            // time); no allocation on this path, which every outermost
            // kernel entry takes.
            let mut d = self.lock();
            for c in (0..active.len()).filter(|&c| c != cpu && active[c] > 0) {
                d.overlaps.insert((c.min(cpu), c.max(cpu)));
            }
        }
        true
    }

    /// `cpu` leaves active code.
    pub fn leave(&self, cpu: usize) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = active.get_mut(cpu) {
            *a = a.saturating_sub(1);
        }
    }

    /// A copy of the sink for a copy of the machine (`Kernel::snapshot`):
    /// whether it records, what it recorded, and how deep each CPU is in
    /// active code.
    pub fn copy(&self) -> Coverage {
        let data = self.lock().clone();
        let active = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Coverage {
            on: AtomicBool::new(self.enabled()),
            data: Mutex::new(data),
            active: Mutex::new(active),
        }
    }

    /// What was recorded so far.
    pub fn snapshot(&self) -> ExecCoverage {
        self.lock().exec()
    }

    /// What was recorded so far, and starts afresh.
    pub fn take(&self) -> ExecCoverage {
        std::mem::take(&mut *self.lock()).exec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_only_when_on_and_sees_overlaps() {
        let c = Coverage::default();
        c.call(0, "f");
        assert!(!c.enter(0));
        assert_eq!(c.snapshot(), ExecCoverage::default());
        c.set_enabled(true);
        assert!(c.enter(0));
        c.call(0, "f");
        c.call(0, "f");
        c.mark(1, Mark::gives_up("g"));
        c.enter(1); // CPU0 is still active
        let s = c.snapshot();
        assert_eq!(s.calls[&(0, "f")], 2);
        assert_eq!(s.marks[&(1, Mark::gives_up("g"))], 1);
        assert!(s.overlaps.contains(&(0, 1)));
        // The same name at another address counts as the same function.
        let other: &'static str = String::from("f").leak();
        c.call(0, other);
        assert_eq!(c.snapshot().calls[&(0, "f")], 3);
        c.leave(0);
        c.leave(1);
        c.enter(2);
        assert_eq!(c.snapshot().overlaps.len(), 1, "CPU2 ran alone");
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    /// A copy of the sink records on as the original would: the same
    /// switch, what was recorded, and which CPUs are inside active code
    /// (an overlap with a CPU still active is seen by the copy).
    #[test]
    fn a_copy_keeps_the_switch_the_records_and_the_active_cpus() {
        let c = Coverage::default();
        c.set_enabled(true);
        c.call(0, "f");
        assert!(c.enter(1));
        let copy = c.copy();
        assert!(copy.enabled());
        assert_eq!(copy.snapshot(), c.snapshot());
        copy.enter(0);
        assert!(copy.snapshot().overlaps.contains(&(0, 1)));
        assert!(c.snapshot().overlaps.is_empty(), "independent");
        let off = Coverage::default().copy();
        assert!(!off.enabled());
    }
}
