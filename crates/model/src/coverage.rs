//! What an execution reached: the kernel functions each CPU entered, the named
//! marks it passed, and which CPUs were inside kernel code (or a user access)
//! at the same time.
//!
//! Models: nothing in the kernel; this is the explorer's evidence that a clean
//! search ran the race path (DESIGN.md, "What a search must say"). It is off
//! unless the runner turns it on, it never creates a scheduling point, and it
//! never changes what the model does.
//!
//! Each CPU records into its own [`CpuCoverage`] (held by its `Cpu`, plain
//! per-thread state: no lock on the path every kernel function takes) and
//! hands what it recorded to the machine's [`Coverage`] when it is dropped or
//! flushed; the runner reads the machine's sink after the block's threads
//! have ended. Which CPUs are inside active code is shared (the overlaps):
//! one bit per CPU in atomic words, set and cleared only on a CPU's
//! outermost entry and exit.
//!
//! A mark is a named point on a path, placed where the kernel decides
//! something a race depends on (`split_huge_page_to_list: unmap_page
//! reached`). A *give-up* mark is one where the path stops before doing its
//! work (`split_huge_page_to_list: EBUSY: extra references`): a thread that
//! gives up in every execution never raced the other threads on the path the
//! scenario is about, and the explorer says so.

use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// A name of a kernel function or a mark, interned: one id a text, at
/// whatever address the text is (two copies of one `&'static str` literal
/// are one name). Ids are small and dense, in the order names were first
/// seen by this process, so a reader can index by them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameId(u32);

/// The process's interned names.
#[derive(Default)]
struct Interner {
    by_text: std::collections::HashMap<&'static str, NameId>,
    texts: Vec<&'static str>,
}

static NAMES: Mutex<Option<Interner>> = Mutex::new(None);

/// Entries of the per-thread cache of [`NameId::of`], by the name's address.
const NAME_CACHE: usize = 256;

thread_local! {
    /// (address, length, id) of names this thread interned.
    static NAME_CACHE_SLOTS: RefCell<[(usize, usize, NameId); NAME_CACHE]> =
        const { RefCell::new([(0, 0, NameId(0)); NAME_CACHE]) };
}

impl NameId {
    /// The id of `name` (a lookup by its address in this thread's cache,
    /// else by its text in the process's table).
    pub fn of(name: &'static str) -> NameId {
        let (addr, len) = (name.as_ptr() as usize, name.len());
        let slot = ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % NAME_CACHE;
        NAME_CACHE_SLOTS.with(|c| {
            let mut c = c.borrow_mut();
            let (a, l, id) = c[slot];
            if a == addr && l == len && a != 0 {
                return id;
            }
            let id = Self::intern(name);
            c[slot] = (addr, len, id);
            id
        })
    }

    fn intern(name: &'static str) -> NameId {
        let mut g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        let t = g.get_or_insert_with(Interner::default);
        if let Some(&id) = t.by_text.get(name) {
            return id;
        }
        let id = NameId(u32::try_from(t.texts.len()).expect("fewer than 2^32 names"));
        t.texts.push(name);
        t.by_text.insert(name, id);
        id
    }

    /// The id of a name already interned, by its text.
    pub fn lookup(name: &str) -> Option<NameId> {
        let g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().and_then(|t| t.by_text.get(name).copied())
    }

    /// The name's text.
    pub fn text(self) -> &'static str {
        let g = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().expect("an id was made").texts[self.0 as usize]
    }

    /// The id of index `i` (as [`NameId::index`] gave it).
    pub fn from_index(i: usize) -> NameId {
        NameId(u32::try_from(i).expect("an index NameId::index gave"))
    }

    /// The id as an index (dense from 0).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What one execution reached (per CPU): each list ordered by CPU, then
/// name id, with one entry a (CPU, name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecCoverage {
    /// Calls of each kernel function: (cpu, function, calls).
    pub calls: Vec<(usize, NameId, u64)>,
    /// Passes through each mark: (cpu, mark's name, gives up, passes).
    pub marks: Vec<(usize, NameId, bool, u64)>,
    /// Pairs of CPUs `(a, b)`, `a < b`, that were both active (inside a kernel
    /// function or a user access) at some moment.
    pub overlaps: BTreeSet<(usize, usize)>,
}

impl ExecCoverage {
    /// Calls of the function named `name` on `cpu`.
    pub fn calls_of(&self, cpu: usize, name: &str) -> u64 {
        NameId::lookup(name).map_or(0, |id| {
            self.calls
                .iter()
                .filter(|&&(c, n, _)| c == cpu && n == id)
                .map(|e| e.2)
                .sum()
        })
    }

    /// Passes through `mark` on `cpu`.
    pub fn passes_of(&self, cpu: usize, mark: Mark) -> u64 {
        NameId::lookup(mark.name).map_or(0, |id| {
            self.marks
                .iter()
                .filter(|&&(c, n, g, _)| c == cpu && n == id && g == mark.gives_up)
                .map(|e| e.3)
                .sum()
        })
    }
}

/// What one CPU recorded and has not handed to its machine's sink yet. A
/// kernel function is entered on every call of `Cpu::func`, so its count is
/// found by the name's address (a hash slot, else a linear scan of the few
/// functions a CPU enters; no string compare), and the maps of
/// [`ExecCoverage`] are built when the machine's sink is read. Two copies of
/// one name at different addresses are two entries here and one in
/// [`ExecCoverage`].
#[derive(Debug, Default)]
pub struct CpuCoverage {
    /// How deep the CPU is in active code (kernel functions, user accesses).
    depth: Cell<u32>,
    rec: RefCell<Local>,
}

/// The records of [`CpuCoverage`].
#[derive(Debug)]
struct Local {
    /// Where a call's entry was last found, by a hash of the name's address
    /// (index + 1 into `calls`; 0: none): most calls find it there at once.
    slots: [u16; SLOTS],
    calls: Vec<(&'static str, u64)>,
    marks: Vec<(Mark, u64)>,
    /// The other CPUs found active when this one became active.
    overlaps: BTreeSet<usize>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            slots: [0; SLOTS],
            calls: Vec::new(),
            marks: Vec::new(),
            overlaps: BTreeSet::new(),
        }
    }
}

impl Local {
    fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.marks.is_empty() && self.overlaps.is_empty()
    }
}

/// The size of [`Local`]'s table of slots.
const SLOTS: usize = 64;

/// The slot of a call of `name`: a hash of the name's address.
fn slot_of(name: &'static str) -> usize {
    let a = name.as_ptr() as u64;
    (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SLOTS
}

/// The same `&'static str` (address and length): no compare of the bytes.
fn same_name(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b)
}

/// What the CPUs handed to the machine's sink: their records appended (a
/// name may appear more than once; [`Sink::exec`] adds them up).
#[derive(Clone, Debug, Default)]
struct Sink {
    calls: Vec<(usize, NameId, u64)>,
    marks: Vec<(usize, NameId, bool, u64)>,
    overlaps: BTreeSet<(usize, usize)>,
}

impl Sink {
    fn exec(&self) -> ExecCoverage {
        let mut calls = self.calls.clone();
        calls.sort_unstable_by_key(|&(c, n, _)| (c, n));
        calls.dedup_by(|b, a| {
            let same = (a.0, a.1) == (b.0, b.1);
            if same {
                a.2 += b.2;
            }
            same
        });
        let mut marks = self.marks.clone();
        marks.sort_unstable_by_key(|&(c, n, g, _)| (c, n, g));
        marks.dedup_by(|b, a| {
            let same = (a.0, a.1, a.2) == (b.0, b.1, b.2);
            if same {
                a.3 += b.3;
            }
            same
        });
        ExecCoverage {
            calls,
            marks,
            overlaps: self.overlaps.clone(),
        }
    }
}

/// The CPUs whose activity is kept in atomic words (the others, in
/// [`Coverage::active_high`]).
const ACTIVE_WORDS: usize = 4;
const LOW_CPUS: usize = ACTIVE_WORDS * 64;

/// The coverage sink of one machine.
#[derive(Default)]
pub struct Coverage {
    on: AtomicBool,
    data: Mutex<Sink>,
    /// The CPUs inside active code: bit `c % 64` of word `c / 64`.
    active: [AtomicU64; ACTIVE_WORDS],
    /// Active CPUs from [`LOW_CPUS`] on (rare: a block of that many threads).
    active_high: Mutex<BTreeSet<usize>>,
    /// How many CPUs `active_high` holds (read without its lock).
    high_count: AtomicUsize,
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

    fn high(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.active_high.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kernel function entered on the CPU that owns `local`.
    pub fn call(&self, local: &CpuCoverage, name: &'static str) {
        if !self.enabled() {
            return;
        }
        let mut guard = local.rec.borrow_mut();
        let d = &mut *guard;
        let h = slot_of(name);
        let hit = (d.slots[h] as usize)
            .checked_sub(1)
            .filter(|&i| same_name(d.calls[i].0, name));
        let i = match hit.or_else(|| d.calls.iter().position(|(n, _)| same_name(n, name))) {
            Some(i) => i,
            None => {
                d.calls.push((name, 0));
                d.calls.len() - 1
            }
        };
        d.calls[i].1 += 1;
        if let Ok(slot) = u16::try_from(i + 1) {
            d.slots[h] = slot;
        }
    }

    /// A mark passed on the CPU that owns `local`.
    pub fn mark(&self, local: &CpuCoverage, mark: Mark) {
        if !self.enabled() {
            return;
        }
        let mut d = local.rec.borrow_mut();
        match d
            .marks
            .iter_mut()
            .find(|(m, _)| same_name(m.name, mark.name) && m.gives_up == mark.gives_up)
        {
            Some((_, count)) => *count += 1,
            None => d.marks.push((mark, 1)),
        }
    }

    /// `cpu` (owning `local`) enters active code (nested entries count
    /// once). Returns whether it was recorded (coverage on): only then must
    /// [`Coverage::leave`] follow.
    pub fn enter(&self, local: &CpuCoverage, cpu: usize) -> bool {
        if !self.enabled() {
            return false;
        }
        let depth = local.depth.get() + 1;
        local.depth.set(depth);
        if depth > 1 {
            return true;
        }
        // Set our bit, then read the others' (SeqCst: of two CPUs entering
        // at once under the std engine, at least one sees the other).
        if cpu < LOW_CPUS {
            self.active[cpu / 64].fetch_or(1 << (cpu % 64), Ordering::SeqCst);
        } else {
            self.high().insert(cpu);
            self.high_count.fetch_add(1, Ordering::SeqCst);
        }
        let mut others: Option<std::cell::RefMut<'_, Local>> = None;
        for (w, word) in self.active.iter().enumerate() {
            let mut bits = word.load(Ordering::SeqCst);
            while bits != 0 {
                let c = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if c != cpu {
                    others
                        .get_or_insert_with(|| local.rec.borrow_mut())
                        .overlaps
                        .insert(c);
                }
            }
        }
        if self.high_count.load(Ordering::SeqCst) > usize::from(cpu >= LOW_CPUS) {
            let high: Vec<usize> = self.high().iter().copied().filter(|&c| c != cpu).collect();
            let mut d = others.unwrap_or_else(|| local.rec.borrow_mut());
            d.overlaps.extend(high);
        }
        true
    }

    /// `cpu` (owning `local`) leaves active code.
    pub fn leave(&self, local: &CpuCoverage, cpu: usize) {
        let depth = local.depth.get().saturating_sub(1);
        local.depth.set(depth);
        if depth > 0 {
            return;
        }
        if cpu < LOW_CPUS {
            self.active[cpu / 64].fetch_and(!(1 << (cpu % 64)), Ordering::SeqCst);
        } else if self.high().remove(&cpu) {
            self.high_count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Hands what `cpu` recorded in `local` to this sink (a `Cpu` does so
    /// when it is dropped).
    pub fn flush(&self, local: &CpuCoverage, cpu: usize) {
        let mut rec = local.rec.borrow_mut();
        if rec.is_empty() {
            return;
        }
        let rec = std::mem::take(&mut *rec);
        let mut d = self.lock();
        d.calls.extend(
            rec.calls
                .iter()
                .map(|&(name, n)| (cpu, NameId::of(name), n)),
        );
        d.marks.extend(
            rec.marks
                .iter()
                .map(|&(m, n)| (cpu, NameId::of(m.name), m.gives_up, n)),
        );
        d.overlaps
            .extend(rec.overlaps.iter().map(|&c| (c.min(cpu), c.max(cpu))));
    }

    /// A copy of the sink for a copy of the machine (`Kernel::snapshot`):
    /// whether it records, what was handed to it, and which CPUs are inside
    /// active code.
    pub fn copy(&self) -> Coverage {
        let data = self.lock().clone();
        let high = self.high().clone();
        Coverage {
            on: AtomicBool::new(self.enabled()),
            data: Mutex::new(data),
            active: std::array::from_fn(|w| AtomicU64::new(self.active[w].load(Ordering::SeqCst))),
            high_count: AtomicUsize::new(high.len()),
            active_high: Mutex::new(high),
        }
    }

    /// What was handed to the sink so far.
    pub fn snapshot(&self) -> ExecCoverage {
        self.lock().exec()
    }

    /// What was handed to the sink so far, and starts afresh.
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
        let cpus: Vec<CpuCoverage> = (0..3).map(|_| CpuCoverage::default()).collect();
        c.call(&cpus[0], "f");
        assert!(!c.enter(&cpus[0], 0));
        c.flush(&cpus[0], 0);
        assert_eq!(c.snapshot(), ExecCoverage::default());
        c.set_enabled(true);
        assert!(c.enter(&cpus[0], 0));
        c.call(&cpus[0], "f");
        c.call(&cpus[0], "f");
        c.mark(&cpus[1], Mark::gives_up("g"));
        c.enter(&cpus[1], 1); // CPU0 is still active
        assert_eq!(c.snapshot(), ExecCoverage::default(), "not handed over yet");
        c.flush(&cpus[0], 0);
        c.flush(&cpus[1], 1);
        let s = c.snapshot();
        assert_eq!(s.calls_of(0, "f"), 2);
        assert_eq!(s.calls.len(), 1);
        assert_eq!(s.passes_of(1, Mark::gives_up("g")), 1);
        assert_eq!(s.passes_of(1, Mark::reached("g")), 0);
        assert!(s.overlaps.contains(&(0, 1)));
        // The same name at another address counts as the same function,
        // and a second hand-over adds to the first.
        let other: &'static str = String::from("f").leak();
        c.call(&cpus[0], other);
        c.flush(&cpus[0], 0);
        let s = c.snapshot();
        assert_eq!(s.calls_of(0, "f"), 3);
        assert_eq!(s.calls.len(), 1, "one entry a (CPU, name)");
        c.leave(&cpus[0], 0);
        c.leave(&cpus[1], 1);
        c.enter(&cpus[2], 2);
        c.flush(&cpus[2], 2);
        assert_eq!(c.snapshot().overlaps.len(), 1, "CPU2 ran alone");
        assert_eq!(c.take().calls_of(0, "f"), 3);
        assert_eq!(c.snapshot(), ExecCoverage::default(), "taken");
    }

    /// Nested entries count once: the CPU stays active until its outermost
    /// exit.
    #[test]
    fn a_cpu_is_active_until_its_outermost_exit() {
        let c = Coverage::default();
        c.set_enabled(true);
        let (a, b) = (CpuCoverage::default(), CpuCoverage::default());
        c.enter(&a, 0);
        c.enter(&a, 0);
        c.leave(&a, 0);
        c.enter(&b, 1);
        c.flush(&b, 1);
        assert!(c.snapshot().overlaps.contains(&(0, 1)), "CPU0 still inside");
        c.leave(&b, 1);
        c.leave(&a, 0);
        let late = CpuCoverage::default();
        c.enter(&late, 1);
        c.flush(&late, 1);
        assert_eq!(c.take().overlaps.len(), 1);
    }

    /// CPUs past the atomic words overlap with the others as well.
    #[test]
    fn high_cpus_overlap_too() {
        let c = Coverage::default();
        c.set_enabled(true);
        let (a, b, d) = (
            CpuCoverage::default(),
            CpuCoverage::default(),
            CpuCoverage::default(),
        );
        c.enter(&a, LOW_CPUS + 3);
        c.enter(&b, 5);
        c.enter(&d, LOW_CPUS + 7);
        for (l, cpu) in [(&a, LOW_CPUS + 3), (&b, 5), (&d, LOW_CPUS + 7)] {
            c.flush(l, cpu);
        }
        let o = c.take().overlaps;
        assert!(o.contains(&(5, LOW_CPUS + 3)));
        assert!(o.contains(&(LOW_CPUS + 3, LOW_CPUS + 7)));
        assert!(o.contains(&(5, LOW_CPUS + 7)));
        c.leave(&a, LOW_CPUS + 3);
        assert_eq!(c.high_count.load(Ordering::SeqCst), 1);
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    /// A copy of the sink records on as the original would: the same
    /// switch, what was handed over, and which CPUs are inside active code
    /// (an overlap with a CPU still active is seen by the copy).
    #[test]
    fn a_copy_keeps_the_switch_the_records_and_the_active_cpus() {
        let c = Coverage::default();
        c.set_enabled(true);
        let (a, b) = (CpuCoverage::default(), CpuCoverage::default());
        c.call(&a, "f");
        c.flush(&a, 0);
        assert!(c.enter(&b, 1));
        let copy = c.copy();
        assert!(copy.enabled());
        assert_eq!(copy.snapshot(), c.snapshot());
        let a2 = CpuCoverage::default();
        copy.enter(&a2, 0);
        copy.flush(&a2, 0);
        assert!(copy.snapshot().overlaps.contains(&(0, 1)));
        assert!(c.snapshot().overlaps.is_empty(), "independent");
        let off = Coverage::default().copy();
        assert!(!off.enabled());
    }
}
