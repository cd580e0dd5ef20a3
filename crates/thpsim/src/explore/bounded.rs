//! The bounded-exhaustive strategy: every schedule of the `together` blocks
//! with at most K preemptions (iterative context bounding, as CHESS does),
//! less the schedules that are equivalent to one already run.
//!
//! **The tree.** A *decision* is a scheduling point where two or more threads
//! could run. Choosing a thread other than the running one while the running
//! one could go on is a *preemption*; choosing when the running thread blocked
//! or finished is free. The search is a depth-first walk of the decision tree:
//! each execution replays the choices of the current path, then takes the
//! default (keep running the current thread, or the lowest runnable one) to
//! the end; the next execution backtracks to the deepest decision with an
//! untried choice the budget allows.
//!
//! **The reduction.** Each step of a thread (from one of its scheduling
//! points to the next) touches objects the model names
//! (`thpsim_model::engine::footprint`: the atomic or lock the point was for,
//! and the frame bytes, TLBs and arenas the step touched on the way). Two
//! steps are *dependent* when they touch a common object and one of them
//! writes it. Two schedule prefixes that order every pair of dependent steps
//! the same way (the same Mazurkiewicz trace) reach the same state. At each
//! decision the search computes the trace's fingerprint: every step as (its
//! thread, its index in that thread, what it touched, and for each other
//! thread how many of that thread's steps happen before it), summed. If an
//! equivalent prefix was met before with the same running thread and at
//! least as many preemptions left, every continuation from here within the
//! bound was already run from there (the walk is depth first, so that subtree
//! is finished): this decision's alternatives are *pruned*. The reduction
//! never loses a schedule of the bound: the equivalent node had at least the
//! budget this one has.
//!
//! **Sleep sets.** Where the running thread A is preempted at a decision
//! (the walk ran A's own choice there first, so it knows A's step `s` from
//! there), A goes to sleep in the preempting subtree with `s`, and stays
//! asleep while every step run since commutes with `s`; a sleeping thread
//! is not chosen (and where only sleeping threads could run, the rest of the
//! execution is a repeat and its alternatives are not walked). A schedule
//! `Y = π·y₁…yₘ·s·ρ` so skipped, with `y₁` the preempting choice, is
//! equivalent to `X = π·s·y₁…yₘ·ρ` in A's subtree, walked earlier, and `X`
//! preempts no more than `Y`: `Y` pays one preemption at the decision and
//! one switch back to A after `yₘ` at most, `X` at most one switch from A to
//! `y₁`'s thread and one after `yₘ`, and every other switch is the same. So
//! the bound's schedules are all covered. Only the preempted thread
//! sleeps: putting a thread chosen at a free decision to sleep would not
//! keep that bound. Sleep sets and the fingerprint table compose: each maps
//! a skipped schedule to an equivalent one with no more preemptions that
//! the walk ran earlier.
//!
//! **Parts.** A search can be split into disjoint parts (shards, jobs)
//! that together are the whole tree. Every schedule either preempts nowhere
//! (it lies in the *shared tree*: the default path and the free choices, made
//! where the running thread blocked or finished) or lies in the subtree of
//! its *first preemption*: a *unit*, named by the decision's index, the
//! thread chosen and the free deviations above it ([`extend_sig`]). Every part
//! walks the shared tree (small: a few to a few dozen schedules) to find the
//! units; part `i` of `n` runs the units whose hash is `i` modulo `n`, and
//! part 0 also counts the shared tree's schedules (the other parts run them
//! without counting). The reduction only uses nodes inside a part's own
//! units, so each part is exhaustive for its units on its own.
//!
//! The parts of a sharded search (`--shard I/N`, one per process) are fixed
//! by the hash. The jobs of one process (`--jobs`) share its part and claim
//! its units as their walks reach them ([`Bounded::job`]): the same
//! partition, balanced as it runs (a unit near the root, or under a free
//! deviation, is far larger than one deep in the tree). With the reduction
//! on, which job ran which unit decides what its table can prune, so the
//! counts of a search with several jobs may differ a little from run to
//! run; the unreduced counts do not.
//!
//! The fingerprints met are kept in a table of fixed size ([`SeenTable`],
//! a transposition table): a newer fingerprint may take an older one's slot,
//! which only loses a chance to prune, never a schedule, and keeps a long
//! search's memory flat (a map of every fingerprint grew to gigabytes while
//! pruning a few in ten thousand).
//!
//! The fingerprint is 128 bits; two different traces could collide with a
//! probability of about n²/2¹²⁸ for n decisions, which the report does not
//! hide (it is far below anything a run could reach).

use shuttle::scheduler::{Schedule, Scheduler, Task, TaskId};
use thpsim_model::engine::footprint::{self, Access, Obj};
use thpsim_model::hash::{mix, FastMap};
use thpsim_model::ShuttleEngine;

/// The trace fingerprints met, with the running thread and the preemptions
/// left there: a direct-mapped table of [`SeenTable::SLOTS`] entries, each
/// holding the whole key (a hit is exact; a slot taken by another key is a
/// miss).
struct SeenTable {
    slots: Vec<SeenSlot>,
}

#[derive(Clone, Copy, Default)]
struct SeenSlot {
    /// The fingerprint; (0, 0) for an empty slot.
    a: u64,
    b: u64,
    /// The running thread + 1 (0: none).
    current: u32,
    /// Preemptions left there.
    left: u32,
}

impl SeenTable {
    /// 2^20 entries of 24 bytes: 24 MiB per search job.
    const SLOTS: usize = 1 << 20;

    fn new() -> SeenTable {
        SeenTable { slots: Vec::new() }
    }

    /// Whether `(fingerprint, current)` was met with at least `left`
    /// preemptions left; if not, it is recorded with `left` (taking the slot).
    fn covered_or_insert(
        &mut self,
        (a, b): (u64, u64),
        current: Option<usize>,
        left: usize,
    ) -> bool {
        if self.slots.is_empty() {
            self.slots = vec![SeenSlot::default(); Self::SLOTS];
        }
        let current = current.map_or(0, |c| c as u32 + 1);
        let left = left as u32;
        let i = (mix(a ^ b.rotate_left(29) ^ u64::from(current)) as usize) & (Self::SLOTS - 1);
        let slot = &mut self.slots[i];
        let same = slot.a == a && slot.b == b && slot.current == current && (a, b) != (0, 0);
        if same && slot.left >= left {
            return true;
        }
        *slot = SeenSlot {
            a,
            b,
            current,
            left,
        };
        false
    }
}

/// One decision on the current path.
#[derive(Debug)]
struct Node {
    /// Every decision above this one took its default choice (this node is
    /// on the default path; for the progress estimate).
    on_default: bool,
    /// No decision above this one preempted (every deviation above was a
    /// free choice): every part and job walks this node, and its
    /// preempting alternatives are the units the parts and jobs divide.
    shared: bool,
    /// The deviations above this node, hashed: with the decision's index
    /// and a thread, the identity of a unit ([`extend_sig`]).
    sig: u64,
    /// The runnable threads: the running one first when it could go on,
    /// then the others in ascending order.
    options: Vec<usize>,
    /// The running thread could go on (so every other choice preempts it).
    current_runnable: bool,
    /// The choice being explored.
    next: usize,
    /// Preemptions before this decision.
    cost: usize,
    /// An equivalent node was explored with at least this budget: no
    /// alternative here.
    covered: bool,
    /// The threads asleep here (bit `t`: [`Bounded`]'s sleep set): choosing
    /// one would only repeat a schedule of an earlier subtree.
    asleep: u64,
    /// What the running thread's step from here touched when it went on
    /// (the default choice, run first): the step it sleeps with in the
    /// subtrees where it is preempted here.
    default_step: Option<Vec<Access>>,
    /// The scheduler's state here, for the executions that backtrack here
    /// (none where no execution will: no alternative, or covered).
    snap: Option<Box<Snap>>,
}

/// The scheduler's state at a decision, once the step that ended there is
/// taken in and before the choice: an execution that backtracks to this
/// decision starts its bookkeeping from here, and replays the decisions
/// above it without any (see [`Bounded::replay_step`]).
#[derive(Debug, Clone)]
struct Snap {
    head: Head,
    /// The length of the tracker's undo log.
    undo_len: usize,
    sleep: Vec<(usize, Vec<Access>)>,
    cost: usize,
    sig: u64,
    pending: [u64; MAXT],
    unreduced: bool,
}

impl Node {
    fn cost_of(&self, i: usize) -> usize {
        usize::from(self.current_runnable && i > 0)
    }
}

/// Whether two steps are dependent: they touch a common object and one of
/// them writes it, or one may touch anything.
fn conflicts(a: &[Access], b: &[Access]) -> bool {
    a.iter().any(|x| {
        b.iter().any(|y| match (x.obj, y.obj) {
            (Obj::Nothing, _) | (_, Obj::Nothing) => false,
            (Obj::All, _) | (_, Obj::All) => true,
            (p, q) => p == q && (x.write || y.write),
        })
    })
}

/// Panics unless a replayed decision offers the threads `ids` it offered
/// when it was recorded (the model must be deterministic given the choices).
fn check_offered(node: &Node, pos: usize, ids: &[usize]) {
    assert!(
        node.options.len() == ids.len() && ids.iter().all(|t| node.options.contains(t)),
        "the model is not deterministic: decision {pos} offered other threads on replay \
         ({ids:?}, recorded {:?})",
        node.options
    );
}

/// The signature of the path before any decision.
const SIG0: u64 = 0xA076_1D64_78BD_642F;

/// The signature of a path that deviated to `thread` at decision `decision`
/// after the path `sig`. It also names a *unit* of the search (a
/// preempting choice at a shared node): the signature of the path that
/// takes it, the same in every process of one build and scenario.
fn extend_sig(sig: u64, decision: usize, thread: usize) -> u64 {
    mix(sig ^ ((decision as u64) << 20 ^ thread as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Thread `t`'s bit in a set of threads (none for a thread past 63).
fn bit(t: usize) -> u64 {
    1u64.checked_shl(t as u32).unwrap_or(0)
}

/// Threads a vector clock has room for; an execution with more threads is
/// not reduced (every alternative is run).
const MAXT: usize = 8;

/// A vector clock: for each thread, how many of its steps come before.
/// 16-bit lanes, so that a join is one SSE2 instruction (`pmaxsw`; the
/// baseline x86-64 has no 32-bit max): an execution whose thread takes more
/// than [`MAX_STEPS`] steps is not reduced.
type Clock = [i16; MAXT];

/// The most steps of one thread a [`Clock`] counts.
const MAX_STEPS: u32 = i16::MAX as u32;

/// What each object was last touched by.
#[derive(Default, Clone, Copy)]
struct ObjState {
    write: Clock,
    reads: Clock,
    /// The execution (`Tracker::generation`) these clocks are from: a state
    /// of an earlier one reads as untouched, so the dense table is kept
    /// between executions and never cleared.
    generation: u32,
}

fn join(into: &mut Clock, other: &Clock) {
    for (a, b) in into.iter_mut().zip(other) {
        *a = (*a).max(*b);
    }
}

/// An access in one word (never 0): the object's kind in the top 3 bits,
/// whether it writes in the next, its number in the rest. Kept this way
/// between a thread's steps: copying the enum through memory cost more than
/// the tracker's arithmetic.
fn pack(a: Access) -> u64 {
    const VALUE: u64 = (1 << 60) - 1;
    let (kind, v) = match a.obj {
        Obj::Id(i) => (1u64, u64::from(i)),
        Obj::Tlb(c) => (2, u64::from(c)),
        Obj::Frame(f) => (3, f & VALUE),
        Obj::Arena(x) => (4, u64::from(x)),
        Obj::All => (5, 0),
        Obj::Nothing => (6, 0),
    };
    kind << 61 | u64::from(a.write) << 60 | v
}

/// The access [`pack`] made (`None` for 0).
fn unpack(w: u64) -> Option<Access> {
    let v = w & ((1 << 60) - 1);
    let obj = match w >> 61 {
        1 => Obj::Id(v as u32),
        2 => Obj::Tlb(v as u32),
        3 => Obj::Frame(v),
        4 => Obj::Arena(v as u8),
        5 => Obj::All,
        6 => Obj::Nothing,
        _ => return None,
    };
    Some(Access {
        obj,
        write: w >> 60 & 1 == 1,
    })
}

/// The tracker's state that is not per object: small, and copied whole
/// into each decision's [`Snap`].
#[derive(Default, Clone, Copy, Debug)]
struct Head {
    clocks: [Clock; MAXT],
    counts: [u32; MAXT],
    /// Join of every step so far (what an `All` step comes after).
    global: Clock,
    /// The last `All` step (what every step comes after).
    last_all: Clock,
    fingerprint: (u64, u64),
    /// A thread took more steps than a clock counts: the clocks are no
    /// longer exact, and the execution must not be reduced.
    overflowed: bool,
}

/// The happens-before order of the steps of one execution, and the
/// fingerprint of its trace.
#[derive(Default)]
struct Tracker {
    head: Head,
    /// Objects by number (`Obj::Id`), dense; entries of other generations
    /// are untouched.
    ids: Vec<ObjState>,
    /// The current search's number for its object states (starts at 1).
    generation: u32,
    /// Other objects (TLBs, frames, arenas).
    others: FastMap<Obj, ObjState>,
    /// Every object state a step changed, with the state before, in order:
    /// [`Tracker::rollback`] takes the tracker back to any decision of the
    /// path.
    undo: Vec<(Obj, ObjState)>,
}

impl Tracker {
    /// Starts from nothing touched (the first execution of a search); the
    /// object table keeps its allocation.
    fn reset(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        let mut others = std::mem::take(&mut self.others);
        others.clear();
        let mut undo = std::mem::take(&mut self.undo);
        undo.clear();
        let generation = self.generation.wrapping_add(1).max(1);
        *self = Tracker {
            ids,
            others,
            undo,
            generation,
            ..Tracker::default()
        };
        if generation == 1 {
            // Wrapped around: an old entry could claim this generation.
            self.ids.clear();
        }
    }

    /// Back to the state `head`, with the first `undo_len` changes of the
    /// undo log: the tracker as it was at a decision of this path.
    fn rollback(&mut self, head: &Head, undo_len: usize) {
        while self.undo.len() > undo_len {
            let Some((obj, old)) = self.undo.pop() else {
                break;
            };
            *self.state(obj) = old;
        }
        self.head = *head;
    }

    fn state(&mut self, obj: Obj) -> &mut ObjState {
        let generation = self.generation;
        let st = match obj {
            Obj::Id(i) => {
                let i = i as usize;
                if self.ids.len() <= i {
                    self.ids.resize(i + 1, ObjState::default());
                }
                &mut self.ids[i]
            }
            other => self.others.entry(other).or_default(),
        };
        if st.generation != generation {
            *st = ObjState {
                generation,
                ..ObjState::default()
            };
        }
        st
    }

    /// A step of thread `t` (< `MAXT`) that touched `fp`.
    fn step(&mut self, t: usize, fp: &[Access]) {
        let all = fp.iter().any(|a| a.obj == Obj::All);
        self.head.counts[t] += 1;
        if self.head.counts[t] > MAX_STEPS {
            self.head.overflowed = true;
        }
        let mut vc = self.head.clocks[t];
        join(&mut vc, &self.head.last_all);
        if all {
            let g = self.head.global;
            join(&mut vc, &g);
        }
        for a in fp {
            if matches!(a.obj, Obj::All | Obj::Nothing) {
                continue;
            }
            let st = *self.state(a.obj);
            join(&mut vc, &st.write);
            if a.write {
                join(&mut vc, &st.reads);
            }
        }
        // This step's own lane, set after the joins (no other clock counts
        // this many of `t`'s steps) and by a select over the whole clock: a
        // store to one lane followed by a load of the clock stalls.
        let own = self.head.counts[t].min(MAX_STEPS) as i16;
        vc = std::array::from_fn(|i| if i == t { own } else { vc[i] });
        for a in fp {
            if matches!(a.obj, Obj::All | Obj::Nothing) {
                continue;
            }
            let st = self.state(a.obj);
            let old = *st;
            if a.write {
                st.write = vc;
                st.reads = Clock::default();
            } else {
                join(&mut st.reads, &vc);
            }
            self.undo.push((a.obj, old));
        }
        if all {
            self.head.last_all = vc;
        }
        join(&mut self.head.global, &vc);
        // The step's identity: thread, index, what it touched, what it
        // comes after.
        let mut h1 = mix(t as u64 ^ 0x5851_F42D_4C95_7F2D);
        let mut h2 = mix(t as u64 ^ 0x1405_7B7E_F767_814F);
        let mut feed = |v: u64| {
            h1 = mix(h1 ^ v);
            h2 = mix(h2.wrapping_add(v).rotate_left(17));
        };
        feed(u64::from(self.head.counts[t]));
        for a in fp {
            let (kind, v) = match a.obj {
                Obj::Id(i) => (1u64, u64::from(i)),
                Obj::Tlb(c) => (2, u64::from(c)),
                Obj::Frame(f) => (3, f),
                Obj::Arena(x) => (4, u64::from(x)),
                Obj::All => (5, 0),
                Obj::Nothing => (6, 0),
            };
            feed((kind << 56) ^ v ^ (u64::from(a.write) << 55));
        }
        for (u, c) in vc.iter().enumerate() {
            if u != t && *c != 0 {
                feed(((u as u64) << 32) | u64::from(*c as u16));
            }
        }
        self.head.fingerprint.0 = self.head.fingerprint.0.wrapping_add(h1);
        self.head.fingerprint.1 = self.head.fingerprint.1.wrapping_add(h2);
        self.head.clocks[t] = vc;
    }
}

thread_local! {
    static DISCOVERING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The trace fingerprint of the running execution so far, when exact
    /// (`None`: not a reduced bounded search, or the clocks overflowed).
    static TRACE: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
    /// The rest of the running execution repeats one run before it
    /// ([`Bounded::repeat_step`]).
    static REPEAT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// How the last `together` block of earlier executions of this search
    /// job ended ([`super::repeat_of_seen_block`]); `None` outside a search
    /// job or replay (a `thpsim run` never skips).
    static ENDS: std::cell::RefCell<Option<EndTable>> = const { std::cell::RefCell::new(None) };
}

/// The traces met at the end of the last `together` block: a direct-mapped
/// table of [`EndTable::SLOTS`] fingerprints (a slot taken by another only
/// loses a chance to skip).
struct EndTable {
    slots: Vec<(u64, u64)>,
}

impl EndTable {
    /// 2^20 entries of 16 bytes: 16 MiB per search job, made on first use.
    const SLOTS: usize = 1 << 20;

    /// Whether `fp` was met; records it if not.
    fn seen_or_insert(&mut self, fp: (u64, u64)) -> bool {
        if self.slots.is_empty() {
            self.slots = vec![(0, 0); Self::SLOTS];
        }
        let i = (mix(fp.0 ^ fp.1.rotate_left(23)) as usize) & (Self::SLOTS - 1);
        if self.slots[i] == fp && fp != (0, 0) {
            return true;
        }
        self.slots[i] = fp;
        false
    }
}

/// Starts a search job or replay on this OS thread: forgets the running
/// execution's trace and every block end met so far:
/// a run that is no reduced bounded search (a replay, another strategy) has
/// no trace, and the ends of another search (another scenario, or the same
/// one with other fixes reverted, so another machine) say nothing about
/// this one's. Called at the start of each search job or replay on this OS
/// thread; [`Bounded`] sets the trace again for its own executions.
pub fn start_search() {
    TRACE.with(|t| t.set(None));
    REPEAT.with(|r| r.set(false));
    ENDS.with(|e| *e.borrow_mut() = Some(EndTable { slots: Vec::new() }));
}

/// Ends a search job or replay on this OS thread: no end is recorded or
/// met until the next [`start_search`].
pub fn end_search() {
    TRACE.with(|t| t.set(None));
    REPEAT.with(|r| r.set(false));
    ENDS.with(|e| *e.borrow_mut() = None);
}

/// The running execution's trace fingerprint, when it is a reduced bounded
/// search's and exact.
pub(super) fn trace() -> Option<(u64, u64)> {
    TRACE.with(|t| t.get())
}

/// Whether the rest of the running execution repeats, decision for
/// decision from a state met before, an execution of this search that was
/// run and checked (a reduced bounded search whose path reached a covered
/// decision, [`Bounded::repeat_step`]).
pub(super) fn repeating() -> bool {
    REPEAT.with(|r| r.get())
}

/// Whether `key` (a trace or a schedule that ended the last `together`
/// block) was met by an earlier execution of this job; records it if not.
/// Always false outside a search job or replay.
pub(super) fn seen_block_end(key: (u64, u64)) -> bool {
    ENDS.with(|e| {
        e.borrow_mut()
            .as_mut()
            .is_some_and(|t| t.seen_or_insert(key))
    })
}

fn set_discovering(v: bool) {
    DISCOVERING.with(|d| d.set(v));
}

/// Whether the execution running on this OS thread only finds the
/// decisions of another part's default path (the explorer does not count it).
pub fn discovering() -> bool {
    DISCOVERING.with(|d| d.get())
}

/// The units the jobs of one part have claimed ([`Bounded::job`]).
pub type Claims = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u64>>>;

/// The counts of a bounded search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BoundedStats {
    /// The preemption bound.
    pub preemptions: usize,
    /// Schedules run.
    pub schedules: u64,
    /// Alternatives not run because an equivalent prefix with at least the
    /// same budget was explored.
    pub pruned: u64,
    /// The whole tree within the bound was explored.
    pub complete: bool,
}

/// The bounded-exhaustive scheduler (see the module documentation).
pub struct Bounded {
    k: usize,
    stack: Vec<Node>,
    started: bool,
    // Per execution:
    pos: usize,
    cost: usize,
    covered: bool,
    tracker: Tracker,
    /// The sleep set: threads preempted at a decision above, each with the
    /// step it would have taken there, while every step since commutes
    /// with it (see the module documentation).
    sleep: Vec<(usize, Vec<Access>)>,
    /// The decision whose running thread went on: its step is recorded
    /// when it ends ([`Node::default_step`]).
    record_default: Option<usize>,
    /// Every decision replayed in this execution is at its default.
    on_default: bool,
    /// This execution passed a covered decision ([`Bounded::repeat_step`]).
    repeating: bool,
    /// This execution is replaying the decisions above the one it
    /// backtracked to (`restore_at`), its bookkeeping already restored
    /// ([`Bounded::replay_step`]).
    replaying: bool,
    restore_at: usize,
    /// The signature of the deviations taken so far in this execution.
    sig: u64,
    /// A buffer for the runnable threads of a decision.
    ids_buf: Vec<usize>,
    /// Per thread: the operation its next step begins with, packed
    /// ([`pack`]; 0: none yet).
    pending: [u64; MAXT],
    /// The current step's footprint (a buffer kept between steps).
    fp: Vec<Access>,
    /// The current execution is not this part's (see [`discovering`]).
    counted_out: bool,
    /// This execution has more threads than a clock holds, or a thread with
    /// more steps than it counts: no reduction.
    unreduced: bool,
    /// The reduction is on (off: every schedule of the bound runs; for tests
    /// that check the reduction loses nothing).
    reduce: bool,
    // Across executions:
    seen: SeenTable,
    limit: Option<u64>,
    /// This part of the search: `(i, n)`.
    part: (u64, u64),
    /// The jobs that walk this part together, if several: this job's index
    /// and the units claimed so far ([`Bounded::job`]).
    job: Option<(usize, Claims)>,
    stats: BoundedStats,
    /// Where the counts are published (the scheduler itself is owned by the
    /// engine while it runs).
    out: std::sync::Arc<std::sync::Mutex<BoundedStats>>,
    /// The estimated size of each first deviation's subtree, by decision of
    /// the default path and option (0: not this part's, or over the bound);
    /// made when the default path has run.
    weights: Vec<Vec<f64>>,
    /// Where the estimated fraction of the part done is published, in parts
    /// per million ([`Bounded::progress`]).
    done_ppm: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The estimated number of schedules under a first deviation with `left`
/// decisions after it and `budget` preemptions to spend there: the ways to
/// place the preemptions, `C(left, budget)`. A rough measure (the other
/// threads and the reduction change it), used only for the progress display.
fn subtree_estimate(left: usize, budget: usize) -> f64 {
    let mut w = 1.0f64;
    for t in 0..budget.min(left) {
        w *= (left - t) as f64 / (t + 1) as f64;
    }
    w.max(1.0)
}

impl Bounded {
    /// A search with at most `preemptions` preemptions, stopping after
    /// `limit` schedules if given.
    pub fn new(
        preemptions: usize,
        limit: Option<u64>,
        out: std::sync::Arc<std::sync::Mutex<BoundedStats>>,
    ) -> Bounded {
        Bounded {
            k: preemptions,
            stack: Vec::new(),
            started: false,
            pos: 0,
            cost: 0,
            covered: false,
            tracker: Tracker::default(),
            sleep: Vec::new(),
            record_default: None,
            on_default: true,
            repeating: false,
            replaying: false,
            restore_at: 0,
            sig: SIG0,
            ids_buf: Vec::new(),
            pending: [0; MAXT],
            fp: Vec::new(),
            counted_out: false,
            unreduced: false,
            reduce: true,
            seen: SeenTable::new(),
            limit,
            part: (0, 1),
            job: None,
            stats: BoundedStats {
                preemptions,
                ..BoundedStats::default()
            },
            out,
            weights: Vec::new(),
            done_ppm: std::sync::Arc::default(),
        }
    }

    /// The estimated fraction of this part's tree walked so far, in parts per
    /// million, updated before each execution: the first deviations are
    /// walked from the deepest decision of the default path up, and each is
    /// weighed by the estimated size of its subtree ([`subtree_estimate`]),
    /// so the shallow ones, walked last, weigh most. For a progress display's
    /// time left; the counts of the report do not use it.
    pub fn progress(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.done_ppm.clone()
    }

    /// Weighs the first deviations once the default path has run (the whole
    /// stack is then the default path).
    fn weigh_default_path(&mut self) {
        let n = self.stack.len();
        self.weights = (0..n)
            .map(|j| {
                let node = &self.stack[j];
                (0..node.options.len())
                    .map(|i| {
                        let cost = node.cost + node.cost_of(i);
                        if i == 0
                            || cost > self.k
                            || !self.in_part(extend_sig(node.sig, j, node.options[i]))
                        {
                            0.0
                        } else {
                            subtree_estimate(n - j - 1, self.k - cost)
                        }
                    })
                    .collect()
            })
            .collect();
    }

    /// Publishes the estimated fraction done ([`Bounded::progress`]); the
    /// path has just moved to its next schedule.
    fn publish_progress(&self) {
        let total: f64 = self.weights.iter().flatten().sum();
        if total <= 0.0 {
            return;
        }
        // The deviation being walked: the deepest node of the default path.
        let Some(d) = self.stack.iter().rposition(|n| n.on_default) else {
            return;
        };
        let next = self.stack[d].next;
        let deeper: f64 = self.weights.iter().skip(d + 1).flatten().sum();
        let here: f64 = self
            .weights
            .get(d)
            .map_or(0.0, |w| w.iter().take(next).sum());
        let done = ((deeper + here) / total).clamp(0.0, 1.0);
        self.done_ppm
            .store((done * 1e6) as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Part `i` of `n` of the search (see the module documentation).
    pub fn part(mut self, i: u64, n: u64) -> Bounded {
        self.part = (i, n.max(1));
        self
    }

    /// Job `j` of the jobs that walk this part together, sharing `claims`:
    /// each job walks the shared tree in the same order (deepest decision
    /// first) and runs the units it claims first, so the jobs split the part
    /// between them as they go (a job in a large unit claims nothing
    /// meanwhile) and every unit is run by exactly one. Job 0 counts the
    /// shared tree's schedules.
    pub fn job(mut self, j: usize, claims: Claims) -> Bounded {
        self.job = Some((j, claims));
        self
    }

    /// Whether the unit `key` ([`extend_sig`]) belongs to this part (of a
    /// sharded search: by a hash, the same in every process).
    fn in_part(&self, key: u64) -> bool {
        let (i, n) = self.part;
        n == 1 || mix(key) % n == i
    }

    /// Whether this job runs the unit `key`: it is in the part and, with
    /// several jobs, this job claimed it first. Asked once per unit by each
    /// job, when its walk reaches it.
    fn owns(&self, key: u64) -> bool {
        self.in_part(key)
            && self.job.as_ref().is_none_or(|(_, claims)| {
                claims.lock().unwrap_or_else(|p| p.into_inner()).insert(key)
            })
    }

    /// The execution now starting preempts nowhere (it lies in the tree every
    /// part and job walks) and this is not part 0's job 0: it runs only to
    /// find the decisions, and is not counted.
    fn discovering(&self) -> bool {
        (self.part.0 != 0 || self.job.as_ref().is_some_and(|(j, _)| *j != 0))
            && self.stack.iter().all(|n| n.cost_of(n.next) == 0)
    }

    /// Whether this execution keeps a sleep set (the reduction is on, and
    /// nothing below is covered already).
    fn sleeping(&self) -> bool {
        self.reduce && !self.covered
    }

    /// The same search without the reduction.
    pub fn without_reduction(mut self) -> Bounded {
        self.reduce = false;
        self
    }

    fn publish(&self) {
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = self.stats;
    }

    /// Moves the path to the next unexplored choice; false when none is left.
    fn backtrack(&mut self) -> bool {
        while let Some(top) = self.stack.last() {
            let depth = self.stack.len() - 1;
            if !top.covered {
                let next = (top.next + 1..top.options.len()).find(|&i| {
                    top.cost + top.cost_of(i) <= self.k
                        && top.asleep & bit(top.options[i]) == 0
                        // At a shared node a preempting choice is a unit: it
                        // belongs to one part, and there to one job (a free
                        // choice stays in the shared tree).
                        && (!top.shared
                            || top.cost_of(i) == 0
                            || self.owns(extend_sig(top.sig, depth, top.options[i])))
                });
                if let Some(i) = next {
                    if let Some(top) = self.stack.last_mut() {
                        top.next = i;
                    }
                    return true;
                }
            }
            self.stack.pop();
        }
        false
    }

    /// A scheduling point above the decision this execution backtracked to
    /// (`restore_at`), or at it; `None` at it, where the caller goes on
    /// with the choice.
    ///
    /// The path above is the one the last execution took, and the
    /// bookkeeping (the trace, the sleep set, the costs) at the decision
    /// backtracked to was restored from its [`Snap`]: replaying needs none,
    /// only the model's own steps to reach that state again. Each decision
    /// takes its recorded choice, and where the chosen thread goes on at the
    /// decisions that follow, the engine lets it go on with no call into
    /// shuttle (`ShuttleEngine::grant`), until the runnable set changes; the
    /// points passed so are counted here. Footprints are not recorded while
    /// replaying. A decision met here still checks that the model offers
    /// the threads it offered before.
    fn replay_step(&mut self, runnable: &[&Task]) -> Option<Option<TaskId>> {
        self.pos += ShuttleEngine::granted() as usize;
        if runnable.len() < 2 {
            ShuttleEngine::grant(0);
            return Some(runnable.first().map(|t| t.id()));
        }
        if self.pos == self.restore_at {
            // The caller checks this decision's threads and chooses.
            self.replaying = false;
            ShuttleEngine::grant(0);
            footprint::resume();
            let exact = self.reduce && !self.unreduced;
            TRACE.with(|tr| tr.set(exact.then_some(self.tracker.head.fingerprint)));
            return None;
        }
        let ids = self.runnable_ids(runnable);
        let node = &self.stack[self.pos];
        check_offered(node, self.pos, &ids);
        self.ids_buf = ids;
        let choice = node.options[node.next];
        let run = self.stack[self.pos + 1..self.restore_at]
            .iter()
            .take_while(|n| n.next == 0 && n.current_runnable)
            .count();
        ShuttleEngine::grant(run as u64);
        self.pos += 1;
        Some(Some(TaskId::from(choice)))
    }

    /// The runnable threads' numbers, ascending (in the reused buffer; hand
    /// it back to `ids_buf`).
    fn runnable_ids(&mut self, runnable: &[&Task]) -> Vec<usize> {
        let mut ids = std::mem::take(&mut self.ids_buf);
        ids.clear();
        ids.extend(runnable.iter().map(|t| usize::from(t.id())));
        ids.sort_unstable();
        ids
    }

    /// A decision past a covered one. From the covered decision on, this
    /// execution takes the default at every decision (every node below is
    /// covered, and the walk never backtracks into it) from a state an
    /// earlier execution of the search was in with the same running thread
    /// (an equivalent trace) or, under a sleep set, one whose continuation
    /// is equivalent to one run earlier: the rest is a repeat of a checked
    /// run. It still runs to the end (shuttle cannot drop a thread in the
    /// middle of the model), but costs what a run without an explorer does:
    /// no node, no trace, no footprint, and the chosen thread goes on with
    /// no call into shuttle until the runnable set changes
    /// (`ShuttleEngine::grant`). The decisions are the same as they were
    /// before this shortcut (the default: the running thread, else the
    /// lowest runnable one), so schedules, counts and tokens are too; the
    /// runner skips the checks after the last block ([`repeating`]), as it
    /// does for a block end met before.
    fn repeat_step(&mut self, runnable: &[&Task], current: Option<usize>) -> Option<TaskId> {
        if !self.repeating {
            self.repeating = true;
            TRACE.with(|tr| tr.set(None));
            REPEAT.with(|r| r.set(true));
            self.sleep.clear();
            self.record_default = None;
            footprint::stop();
        }
        if runnable.len() < 2 {
            return runnable.first().map(|t| t.id());
        }
        ShuttleEngine::grant(u64::MAX);
        Some(TaskId::from(super::default_of(
            current.map(TaskId::from),
            runnable,
        )))
    }

    /// The end of the step `current` was running, and the start of its next.
    fn close_step(&mut self, current: Option<usize>) {
        if current.is_some_and(|t| t >= MAXT) {
            self.unreduced = true;
        }
        let Some(t) = current.filter(|&t| t < MAXT) else {
            if self.unreduced {
                TRACE.with(|tr| tr.set(None));
            }
            self.record_default = None;
            let mut sink = std::mem::take(&mut self.fp);
            footprint::drain_hidden_into(&mut sink);
            sink.clear();
            self.fp = sink;
            return;
        };
        // A thread's first step (from its creation to its first scheduling
        // point) begins with no operation: what it touches is hidden.
        let first = unpack(std::mem::take(&mut self.pending[t])).unwrap_or(Access {
            obj: Obj::Nothing,
            write: false,
        });
        let mut fp = std::mem::take(&mut self.fp);
        fp.clear();
        fp.push(first);
        footprint::drain_hidden_into(&mut fp);
        self.tracker.step(t, &fp);
        if self.tracker.head.overflowed {
            self.unreduced = true;
        }
        let exact = self.reduce && !self.unreduced;
        TRACE.with(|tr| tr.set(exact.then_some(self.tracker.head.fingerprint)));
        if let Some(n) = self.record_default.take() {
            if let Some(node) = self.stack.get_mut(n) {
                if node.default_step.is_none() && node.options[0] == t {
                    node.default_step = Some(fp.clone());
                }
            }
        }
        if !self.sleep.is_empty() {
            // A sleeper stays asleep while the steps commute with its own;
            // one that runs anyway (nothing else could) makes the rest of
            // this execution a repeat.
            let mut ran_asleep = false;
            self.sleep.retain(|(th, st)| {
                if *th == t {
                    ran_asleep = true;
                    return false;
                }
                !conflicts(st, &fp)
            });
            if ran_asleep {
                self.covered = true;
            }
        }
        self.fp = fp;
        self.pending[t] = pack(footprint::take_op().unwrap_or(Access {
            obj: Obj::All,
            write: true,
        }));
    }
}

impl Scheduler for Bounded {
    fn new_execution(&mut self) -> Option<Schedule> {
        if self.started {
            if !self.counted_out {
                self.stats.schedules += 1;
            }
            if self.weights.is_empty() {
                self.weigh_default_path();
            }
            if !self.backtrack() {
                self.stats.complete = true;
                self.done_ppm
                    .store(1_000_000, std::sync::atomic::Ordering::Relaxed);
                self.publish();
                return None;
            }
            self.publish();
            self.publish_progress();
            if self.limit.is_some_and(|l| self.stats.schedules >= l) {
                return None;
            }
        }
        self.started = true;
        self.counted_out = self.discovering();
        set_discovering(self.counted_out);
        self.pos = 0;
        self.covered = false;
        self.record_default = None;
        self.repeating = false;
        REPEAT.with(|r| r.set(false));
        TRACE.with(|tr| tr.set(None));
        footprint::reset();
        if let Some(top) = self.stack.last() {
            // Backtracked to the top decision: the bookkeeping starts from
            // there, and the decisions above it are only replayed.
            let snap = top
                .snap
                .as_deref()
                .cloned()
                .expect("a decision backtracked to keeps its state");
            self.restore_at = self.stack.len() - 1;
            self.replaying = true;
            self.tracker.rollback(&snap.head, snap.undo_len);
            self.sleep = snap.sleep;
            self.cost = snap.cost;
            self.sig = snap.sig;
            self.pending = snap.pending;
            self.unreduced = snap.unreduced;
            footprint::stop();
        } else {
            self.replaying = false;
            self.cost = 0;
            self.unreduced = false;
            self.tracker.reset();
            self.pending = [0; MAXT];
            self.sig = SIG0;
            self.sleep.clear();
        }
        // New decisions sit at the end of the path replayed so far, and
        // start at their default: the path is on the default schedule
        // exactly when every replayed decision is.
        self.on_default = self.stack.iter().all(|n| n.next == 0);
        Some(Schedule::new(0))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        _: bool,
    ) -> Option<TaskId> {
        let current = current.map(usize::from);
        if self.replaying {
            if let Some(chosen) = self.replay_step(runnable) {
                return chosen;
            }
            // At the decision backtracked to: its step is taken in already
            // (the restored state), the choice is made below.
        } else {
            if self.covered && self.pos >= self.stack.len() {
                return self.repeat_step(runnable, current);
            }
            self.close_step(current);
            if runnable.len() < 2 {
                return runnable.first().map(|t| t.id());
            }
        }
        let ids = self.runnable_ids(runnable);
        let choice = if self.pos < self.stack.len() {
            let node = &self.stack[self.pos];
            check_offered(node, self.pos, &ids);
            self.cost += node.cost_of(node.next);
            let choice = node.options[node.next];
            if node.next != 0 {
                self.sig = extend_sig(self.sig, self.pos, choice);
            }
            if self.sleeping() && node.current_runnable {
                let a = node.options[0];
                if node.next == 0 {
                    if node.default_step.is_none() {
                        self.record_default = Some(self.pos);
                    }
                } else if let Some(st) = node.default_step.as_ref().filter(|_| a < 64) {
                    // Preempted here: the running thread sleeps with the
                    // step it took when it went on.
                    if !self.sleep.iter().any(|(t, _)| *t == a) {
                        self.sleep.push((a, st.clone()));
                    }
                }
            }
            choice
        } else {
            let current_runnable = current.is_some_and(|c| ids.contains(&c));
            let mut options = Vec::with_capacity(ids.len());
            if let Some(c) = current.filter(|_| current_runnable) {
                options.push(c);
            }
            options.extend(ids.iter().copied().filter(|&t| Some(t) != current));
            let asleep = if self.sleeping() {
                self.sleep.iter().fold(0u64, |m, (t, _)| m | bit(*t))
            } else {
                0
            };
            let is_asleep = |t: usize| asleep & bit(t) != 0;
            let mut forced = false;
            if asleep != 0 && !current_runnable {
                // Every choice is free here: go on with a thread that is
                // awake. With none, whatever runs next repeats a schedule
                // of an earlier subtree.
                match options.iter().position(|&t| !is_asleep(t)) {
                    Some(i) => {
                        let t = options.remove(i);
                        options.insert(0, t);
                    }
                    None => forced = true,
                }
            }
            let on_default = self.on_default;
            let shared = self.cost == 0;
            let mut node = Node {
                on_default,
                shared,
                sig: self.sig,
                options,
                current_runnable,
                next: 0,
                cost: self.cost,
                covered: self.covered || forced,
                asleep,
                default_step: None,
                snap: None,
            };
            if forced {
                self.covered = true;
            }
            if !node.covered {
                self.stats.pruned += (1..node.options.len())
                    .filter(|&i| {
                        node.cost + node.cost_of(i) <= self.k && is_asleep(node.options[i])
                    })
                    .count() as u64;
            }
            // A shared node spans every part: its subtree is not this part's
            // alone, so it neither prunes nor covers.
            // A node with no alternative within the budget has nothing to
            // prune, and an equivalent node met later (the same state, so
            // the same runnable threads and running one) has none either:
            // such nodes stay out of the table.
            let has_alternative =
                (1..node.options.len()).any(|i| node.cost + node.cost_of(i) <= self.k);
            if has_alternative && !node.covered && !self.unreduced && self.reduce && !shared {
                let left = self.k - self.cost;
                // Where the running thread cannot go on, every choice is
                // free and what follows does not depend on which thread
                // stopped: equivalent prefixes that differ only in the
                // thread that ran last (two independent runs to a block, in
                // either order) are one node.
                let running = current.filter(|_| node.current_runnable);
                if self
                    .seen
                    .covered_or_insert(self.tracker.head.fingerprint, running, left)
                {
                    node.covered = true;
                    self.covered = true;
                    self.stats.pruned += (1..node.options.len())
                        .filter(|&i| node.cost + node.cost_of(i) <= self.k)
                        .count() as u64;
                }
            }
            if has_alternative && !node.covered {
                node.snap = Some(Box::new(Snap {
                    head: self.tracker.head,
                    undo_len: self.tracker.undo.len(),
                    sleep: self.sleep.clone(),
                    cost: self.cost,
                    sig: self.sig,
                    pending: self.pending,
                    unreduced: self.unreduced,
                }));
            }
            let c = node.options[0];
            // Only a decision with an alternative is ever preempted on
            // another path, where its default step would be needed.
            if node.current_runnable && self.sleeping() && has_alternative {
                self.record_default = Some(self.stack.len());
            }
            self.stack.push(node);
            c
        };
        self.pos += 1;
        self.ids_buf = ids;
        Some(TaskId::from(choice))
    }

    fn next_u64(&mut self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(id: u32, write: bool) -> Access {
        Access {
            obj: Obj::Id(id),
            write,
        }
    }

    fn fingerprint(steps: &[(usize, Access)]) -> (u64, u64) {
        let mut t = Tracker::default();
        for (th, acc) in steps {
            t.step(*th, &[*acc]);
        }
        t.head.fingerprint
    }

    #[test]
    fn the_seen_table_covers_only_an_exact_key_with_the_budget() {
        let mut t = SeenTable::new();
        let fp = (0x1234, 0x5678);
        assert!(!t.covered_or_insert(fp, Some(1), 1), "first meeting");
        assert!(
            t.covered_or_insert(fp, Some(1), 1),
            "the same budget is covered"
        );
        assert!(t.covered_or_insert(fp, Some(1), 0), "a smaller one too");
        assert!(
            !t.covered_or_insert(fp, Some(2), 0),
            "another running thread"
        );
        // A larger budget is never covered by a smaller one; it then is.
        assert!(!t.covered_or_insert(fp, Some(1), 2));
        assert!(t.covered_or_insert(fp, Some(1), 2));
        assert!(
            !t.covered_or_insert((fp.0, fp.1 + 1), Some(1), 0),
            "another trace"
        );
    }

    #[test]
    fn commuting_steps_give_one_trace_and_conflicting_ones_two() {
        // Independent: different objects.
        assert_eq!(
            fingerprint(&[(1, a(1, true)), (2, a(2, true))]),
            fingerprint(&[(2, a(2, true)), (1, a(1, true))])
        );
        // Two reads of one object commute.
        assert_eq!(
            fingerprint(&[(1, a(1, false)), (2, a(1, false))]),
            fingerprint(&[(2, a(1, false)), (1, a(1, false))])
        );
        // A write and a read of one object do not.
        assert_ne!(
            fingerprint(&[(1, a(1, true)), (2, a(1, false))]),
            fingerprint(&[(2, a(1, false)), (1, a(1, true))])
        );
        // An `All` step orders everything around it.
        let all = Access {
            obj: Obj::All,
            write: true,
        };
        assert_ne!(
            fingerprint(&[(1, all), (2, a(2, true))]),
            fingerprint(&[(2, a(2, true)), (1, all)])
        );
        // A longer independent interleaving: the same trace.
        assert_eq!(
            fingerprint(&[
                (1, a(1, true)),
                (2, a(2, true)),
                (1, a(3, true)),
                (2, a(1, false))
            ]),
            fingerprint(&[
                (1, a(1, true)),
                (1, a(3, true)),
                (2, a(2, true)),
                (2, a(1, false))
            ])
        );
    }

    #[test]
    fn a_thread_with_more_steps_than_a_clock_counts_is_flagged() {
        let mut t = Tracker::default();
        t.reset();
        for _ in 0..MAX_STEPS {
            t.step(1, &[a(1, true)]);
        }
        assert!(!t.head.overflowed, "a clock counts MAX_STEPS steps");
        t.step(1, &[a(1, true)]);
        assert!(t.head.overflowed);
        t.reset();
        assert!(!t.head.overflowed, "each execution starts exact");
    }

    #[test]
    fn an_end_repeats_only_when_met_exactly_within_one_search() {
        let mut t = EndTable { slots: Vec::new() };
        assert!(!t.seen_or_insert((1, 2)), "first meeting");
        assert!(t.seen_or_insert((1, 2)));
        assert!(!t.seen_or_insert((1, 3)), "another trace");
        assert!(!t.seen_or_insert((0, 0)) && !t.seen_or_insert((0, 0)));
        // Outside a search nothing repeats; a new search forgets the ends
        // of the last.
        end_search();
        assert!(!seen_block_end((1, 2)) && !seen_block_end((1, 2)));
        start_search();
        assert!(!seen_block_end((1, 2)) && seen_block_end((1, 2)));
        start_search();
        assert!(!seen_block_end((1, 2)));
        end_search();
    }

    #[test]
    fn a_packed_access_unpacks_to_itself() {
        for obj in [
            Obj::Id(0),
            Obj::Id(u32::MAX),
            Obj::Tlb(3),
            Obj::Frame(0),
            Obj::Frame((1 << 60) - 1),
            Obj::Arena(3),
            Obj::All,
            Obj::Nothing,
        ] {
            for write in [false, true] {
                let a = Access { obj, write };
                assert_ne!(pack(a), 0);
                assert_eq!(unpack(pack(a)), Some(a));
            }
        }
        assert_eq!(unpack(0), None);
    }

    #[test]
    fn jobs_of_a_part_claim_each_unit_once() {
        let claims = Claims::default();
        let out = std::sync::Arc::new(std::sync::Mutex::new(BoundedStats::default()));
        let a = Bounded::new(2, None, out.clone()).job(0, claims.clone());
        let b = Bounded::new(2, None, out.clone()).job(1, claims.clone());
        let (k3, k2) = (extend_sig(SIG0, 3, 1), extend_sig(SIG0, 2, 1));
        assert!(a.owns(k3), "the first to ask runs it");
        assert!(!b.owns(k3), "and only it");
        assert!(b.owns(k2) && !a.owns(k2));
        // A shard's hash still decides first: a unit outside the part is
        // nobody's here, and asking does not claim it.
        let c = Bounded::new(2, None, out.clone())
            .part(1, 2)
            .job(0, claims.clone());
        let outside = (0..64)
            .map(|d| extend_sig(SIG0, d, 1))
            .find(|&k| !c.in_part(k))
            .expect("some unit is not in part 1");
        assert!(!c.owns(outside));
        assert!(!claims.lock().unwrap().contains(&outside));
        // A unit is named by the path to it: the same decision and thread
        // after another free deviation is another unit.
        assert_ne!(extend_sig(extend_sig(SIG0, 1, 2), 3, 1), k3);
        // Only job 0 counts the default path.
        assert!(!a.discovering() && b.discovering());
    }

    #[test]
    fn backtracking_respects_the_bound() {
        let mut b = Bounded::new(1, None, Default::default());
        b.stack = vec![
            Node {
                on_default: true,
                shared: true,
                sig: SIG0,
                options: vec![1, 2, 3],
                current_runnable: true,
                next: 0,
                cost: 0,
                covered: false,
                asleep: 0,
                default_step: None,
                snap: None,
            },
            Node {
                on_default: false,
                shared: false,
                sig: SIG0,
                options: vec![2, 1],
                current_runnable: true,
                next: 0,
                cost: 1,
                covered: false,
                asleep: 0,
                default_step: None,
                snap: None,
            },
        ];
        // The deeper node has no budget left for its preemption: the walk
        // moves to the shallower one's next choice.
        assert!(b.backtrack());
        assert_eq!((b.stack.len(), b.stack[0].next), (1, 1));
        assert!(b.backtrack());
        assert_eq!(b.stack[0].next, 2);
        assert!(!b.backtrack());
    }
}
