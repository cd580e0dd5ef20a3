//! The explorer's schedulers for random search: uniform random and PCT, each
//! execution seeded from the search seed and the execution's index, so that a
//! search is a set of numbered executions that any process can rerun one by
//! one. A shard `i/n` runs the executions whose index is `i` modulo `n`: the
//! shards of a search are disjoint and together are exactly the unsharded
//! search.

use shuttle::scheduler::{Schedule, Scheduler, Task, TaskId};
use thpsim_model::engine::ShuttleEngine;

/// splitmix64: a small, well-mixed generator (and a seed mixer).
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

pub use thpsim_model::hash::mix;

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// A value in `[0, n)` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    /// The generator of execution `index` of a search seeded `seed`.
    pub fn for_execution(seed: u64, index: u64) -> SplitMix {
        let mut m = SplitMix(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let s = m.next_u64();
        SplitMix(s)
    }
}

/// Which executions a search runs: indices `start, start + step, ...`
/// below `end` (`None`: no bound but time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub start: u64,
    pub step: u64,
    pub end: Option<u64>,
}

impl Slice {
    /// The whole search of `iterations` executions (`usize::MAX`: unbounded).
    pub fn all(iterations: usize) -> Slice {
        Slice {
            start: 0,
            step: 1,
            end: (iterations != usize::MAX).then_some(iterations as u64),
        }
    }
    /// Shard `i` of `n` of this slice.
    pub fn shard(self, i: u64, n: u64) -> Slice {
        Slice {
            start: self.start + i * self.step,
            step: self.step * n,
            end: self.end,
        }
    }
    /// The `j`-th index of the slice, if it is in it.
    pub fn nth(&self, j: u64) -> Option<u64> {
        let e = self.start.checked_add(j.checked_mul(self.step)?)?;
        match self.end {
            Some(end) if e >= end => None,
            _ => Some(e),
        }
    }
    /// How many executions the slice holds (`None`: unbounded).
    pub fn count(&self) -> Option<u64> {
        self.end
            .map(|end| end.saturating_sub(self.start).div_ceil(self.step))
    }
}

/// A uniformly random choice at every decision.
pub struct Uniform {
    seed: u64,
    slice: Slice,
    next: u64,
    rng: SplitMix,
}

impl Uniform {
    pub fn new(seed: u64, slice: Slice) -> Uniform {
        Uniform {
            seed,
            slice,
            next: 0,
            rng: SplitMix(0),
        }
    }
}

impl Scheduler for Uniform {
    fn new_execution(&mut self) -> Option<Schedule> {
        let e = self.slice.nth(self.next)?;
        self.next += 1;
        self.rng = SplitMix::for_execution(self.seed, e);
        Some(Schedule::new(e))
    }

    fn next_task(&mut self, runnable: &[&Task], _: Option<TaskId>, _: bool) -> Option<TaskId> {
        let i = self.rng.below(runnable.len().max(1) as u64) as usize;
        runnable.get(i).map(|t| t.id())
    }

    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

/// Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010): random
/// distinct thread priorities, the highest-priority runnable thread runs, and
/// at `depth - 1` random decisions the running thread drops below every
/// other. A bug of depth `d` among `k` decisions is found by one execution
/// with probability at least 1/(n k^(d-1)).
pub struct Pct {
    seed: u64,
    depth: usize,
    /// Decisions in an execution (the change points are drawn from `1..=k`).
    k: u64,
    slice: Slice,
    next: u64,
    rng: SplitMix,
    /// Priority by task index (higher runs first).
    priority: Vec<u64>,
    change_points: Vec<u64>,
    decisions: u64,
}

impl Pct {
    /// `k`: the decisions of an execution (from a probe run; at least 1).
    pub fn new(seed: u64, depth: usize, k: u64, slice: Slice) -> Pct {
        Pct {
            seed,
            depth: depth.max(1),
            k: k.max(1),
            slice,
            next: 0,
            rng: SplitMix(0),
            priority: Vec::new(),
            change_points: Vec::new(),
            decisions: 0,
        }
    }

    /// A priority for a task seen for the first time: a random rank among
    /// the initial priorities (all above the change-point ones, `< depth`).
    fn priority_of(&mut self, task: usize) -> u64 {
        while self.priority.len() <= task {
            let n = self.priority.len() as u64;
            // Insert the new task at a random rank among those seen so far.
            let rank = self.rng.below(n + 1);
            for p in self.priority.iter_mut() {
                if *p >= self.depth as u64 + rank {
                    *p += 1;
                }
            }
            self.priority.push(self.depth as u64 + rank);
        }
        self.priority[task]
    }
}

impl Scheduler for Pct {
    fn new_execution(&mut self) -> Option<Schedule> {
        let e = self.slice.nth(self.next)?;
        self.next += 1;
        self.rng = SplitMix::for_execution(self.seed, e);
        self.priority.clear();
        self.decisions = 0;
        let mut points = Vec::new();
        let wanted = (self.depth - 1).min(self.k as usize);
        while points.len() < wanted {
            let c = 1 + self.rng.below(self.k);
            if !points.contains(&c) {
                points.push(c);
            }
        }
        self.change_points = points;
        ShuttleEngine::grant(0);
        ShuttleEngine::take_granted();
        Some(Schedule::new(e))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        _: bool,
    ) -> Option<TaskId> {
        // The decisions passed under the last grant (below): each chose the
        // running thread, which was and stayed the highest-priority one.
        self.decisions += ShuttleEngine::take_granted();
        for t in runnable {
            self.priority_of(usize::from(t.id()));
        }
        if runnable.len() > 1 {
            self.decisions += 1;
            if let Some(j) = self.change_points.iter().position(|&c| c == self.decisions) {
                if let Some(cur) = current.map(usize::from) {
                    self.priority_of(cur);
                    // Below every initial priority; later change points lower.
                    self.priority[cur] = (self.depth - 1 - j) as u64;
                }
            }
        }
        let chosen = runnable
            .iter()
            .max_by_key(|t| self.priority[usize::from(t.id())])
            .map(|t| t.id());
        // Until the next change point, and while the runnable threads stay
        // the same (no priority changes, no newcomer), every decision gives
        // the chosen thread again: the engine lets it go on without asking.
        let grant = if runnable.len() > 1 && chosen.is_some() {
            match self
                .change_points
                .iter()
                .filter(|&&c| c > self.decisions)
                .min()
            {
                Some(&c) => c - self.decisions - 1,
                None => u64::MAX,
            }
        } else {
            0
        };
        ShuttleEngine::grant(grant);
        chosen
    }

    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_search() {
        let all = Slice::all(10);
        let mut seen: Vec<u64> = (0..4)
            .flat_map(|i| {
                let s = all.shard(i, 4);
                (0..).map_while(move |j| s.nth(j))
            })
            .collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(all.shard(1, 4).count(), Some(3));
        assert_eq!(all.shard(3, 4).count(), Some(2));
        // Shards of shards (jobs inside a shard) partition the shard.
        let s = all.shard(1, 2);
        let mut sub: Vec<u64> = (0..3)
            .flat_map(|i| {
                let t = s.shard(i, 3);
                (0..).map_while(move |j| t.nth(j))
            })
            .collect();
        sub.sort();
        assert_eq!(sub, vec![1, 3, 5, 7, 9]);
        assert_eq!(Slice::all(usize::MAX).nth(1 << 40), Some(1 << 40));
    }

    #[test]
    fn an_execution_depends_only_on_the_seed_and_its_index() {
        let a = SplitMix::for_execution(7, 12).next_u64();
        assert_eq!(a, SplitMix::for_execution(7, 12).next_u64());
        assert_ne!(a, SplitMix::for_execution(7, 13).next_u64());
        assert_ne!(a, SplitMix::for_execution(8, 12).next_u64());
        let mut r = SplitMix(1);
        assert!((0..1000).all(|_| r.below(3) < 3));
    }
}
