//! What a search reached, summed over its executions: per `together` block,
//! how many executions entered each kernel function and passed each mark on
//! each CPU, how often each pair of CPUs ran at the same time, and the
//! warnings that keep "clean" from meaning "never reached" (a pair of CPUs
//! that never overlapped; a CPU that gave up early in every execution).
//!
//! The model records each execution (`thpsim_model::coverage`); this module
//! only adds them up and words the result. Totals merge ([`CoverageTotals::merge`]:
//! the jobs of a search, the shards of `thpsim merge`) and travel in shard
//! lines (serde), keyed by the block's item index; [`blocks`] carries what the
//! report needs of the scenario (each block's line and thread texts).

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use thpsim_model::coverage::{ExecCoverage, NameId};
use thpsim_scenario::{Item, Scenario};

/// One CPU of a block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub cpu: usize,
    /// The thread's steps, as written.
    pub steps: String,
}

/// A kernel function or a mark, per CPU.
#[derive(Clone, Debug, Serialize)]
pub struct Reach {
    pub name: String,
    /// For marks: the path gives up there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub gives_up: bool,
    /// Executions that reached it, by CPU (index = CPU).
    pub executions: Vec<u64>,
    /// Calls (or passes) over all executions and CPUs.
    pub total: u64,
}

/// Two CPUs inside kernel code or a user access at the same moment.
#[derive(Clone, Debug, Serialize)]
pub struct Overlap {
    pub cpus: (usize, usize),
    /// Executions in which they overlapped.
    pub executions: u64,
}

/// The coverage of one `together` block.
#[derive(Clone, Debug, Serialize)]
pub struct BlockCoverage {
    /// The block's line.
    pub line: usize,
    pub threads: Vec<ThreadInfo>,
    /// Executions that ran the block to its end.
    pub executions: u64,
    pub functions: Vec<Reach>,
    pub marks: Vec<Reach>,
    pub overlaps: Vec<Overlap>,
    pub warnings: Vec<String>,
}

/// What the coverage report needs of one `together` block of the scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// The block's index among the scenario's items (the key of the totals).
    pub item: usize,
    /// The block's line.
    pub line: usize,
    pub threads: Vec<ThreadInfo>,
}

/// The `together` blocks of a scenario.
pub fn blocks(scn: &Scenario) -> Vec<BlockInfo> {
    scn.items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match it {
            Item::Together(item) => Some(BlockInfo {
                item: i,
                line: item.span.line,
                threads: item
                    .threads
                    .iter()
                    .enumerate()
                    .map(|(cpu, th)| ThreadInfo {
                        cpu,
                        steps: th
                            .steps
                            .iter()
                            .map(|s| scn.text(s.span).to_string())
                            .collect::<Vec<_>>()
                            .join("; "),
                    })
                    .collect(),
            }),
            _ => None,
        })
        .collect()
}

/// A name: the model's own (`&'static str`) while exploring, owned when read
/// back from a shard line.
type Name = Cow<'static, str>;

/// Running totals of one block.
#[derive(Clone, Debug, Default)]
struct Totals {
    executions: u64,
    /// (name, cpu) -> (executions, calls)
    functions: BTreeMap<(Name, usize), (u64, u64)>,
    /// (name, gives_up, cpu) -> (executions, passes)
    marks: BTreeMap<(Name, bool, usize), (u64, u64)>,
    overlaps: BTreeMap<(usize, usize), u64>,
    /// Executions added by this process and not yet folded into the maps
    /// above (every reader folds them first: [`Totals::settled`]).
    fresh: Fresh,
}

/// Counts by the model's name ids ([`NameId`], dense in this process),
/// indexed `[id][cpu]` -> (executions, calls or passes): adding an
/// execution's record costs an index an entry, no compare of names.
#[derive(Clone, Debug, Default)]
struct Fresh {
    functions: Vec<Vec<(u64, u64)>>,
    /// By `gives_up` (0: reached, 1: gives up), then as `functions`.
    marks: [Vec<Vec<(u64, u64)>>; 2],
}

impl Fresh {
    fn bump(v: &mut Vec<Vec<(u64, u64)>>, id: NameId, cpu: usize, n: u64) {
        let i = id.index();
        if v.len() <= i {
            v.resize_with(i + 1, Vec::new);
        }
        let row = &mut v[i];
        if row.len() <= cpu {
            row.resize(cpu + 1, (0, 0));
        }
        row[cpu].0 += 1;
        row[cpu].1 += n;
    }

    fn is_empty(&self) -> bool {
        self.functions.is_empty() && self.marks.iter().all(Vec::is_empty)
    }

    /// The counts, by name (`(id, cpu, (executions, count))`), zeros left out.
    fn drain(v: Vec<Vec<(u64, u64)>>) -> impl Iterator<Item = (&'static str, usize, (u64, u64))> {
        v.into_iter().enumerate().flat_map(|(i, row)| {
            let name = (!row.is_empty()).then(|| NameId::from_index(i).text());
            row.into_iter()
                .enumerate()
                .filter(|(_, c)| c.0 > 0)
                .map(move |(cpu, c)| (name.unwrap_or_default(), cpu, c))
        })
    }
}

impl PartialEq for Totals {
    fn eq(&self, o: &Totals) -> bool {
        let (a, b) = (self.settled(), o.settled());
        a.executions == b.executions
            && a.functions == b.functions
            && a.marks == b.marks
            && a.overlaps == b.overlaps
    }
}
impl Eq for Totals {}

impl Totals {
    /// Folds the fresh counts into the maps by name.
    fn settle(&mut self) {
        if self.fresh.is_empty() {
            return;
        }
        let Fresh { functions, marks } = std::mem::take(&mut self.fresh);
        for (name, cpu, (ex, n)) in Fresh::drain(functions) {
            let c = self
                .functions
                .entry((Cow::Borrowed(name), cpu))
                .or_default();
            c.0 += ex;
            c.1 += n;
        }
        for (gives_up, v) in marks.into_iter().enumerate() {
            for (name, cpu, (ex, n)) in Fresh::drain(v) {
                let c = self
                    .marks
                    .entry((Cow::Borrowed(name), gives_up == 1, cpu))
                    .or_default();
                c.0 += ex;
                c.1 += n;
            }
        }
    }

    /// The totals with the fresh counts folded in.
    fn settled(&self) -> Cow<'_, Totals> {
        if self.fresh.is_empty() {
            return Cow::Borrowed(self);
        }
        let mut t = self.clone();
        t.settle();
        Cow::Owned(t)
    }

    fn merge(&mut self, o: &Totals) {
        let o = o.settled();
        self.executions += o.executions;
        for (k, &(ex, n)) in &o.functions {
            let c = self.functions.entry(k.clone()).or_default();
            c.0 += ex;
            c.1 += n;
        }
        for (k, &(ex, n)) in &o.marks {
            let c = self.marks.entry(k.clone()).or_default();
            c.0 += ex;
            c.1 += n;
        }
        for (&k, &n) in &o.overlaps {
            *self.overlaps.entry(k).or_default() += n;
        }
    }
}

/// The sums over a search, by block (item index). Serialized as a list of
/// blocks (see [`BlockTotalsWire`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<BlockTotalsWire>", try_from = "Vec<BlockTotalsWire>")]
pub struct CoverageTotals {
    blocks: BTreeMap<usize, Totals>,
}

/// One block's totals in a shard line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockTotalsWire {
    pub item: usize,
    pub executions: u64,
    pub functions: Vec<CountWire>,
    pub marks: Vec<CountWire>,
    pub overlaps: Vec<OverlapWire>,
}

/// A function's or a mark's count on one CPU.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountWire {
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gives_up: bool,
    pub cpu: usize,
    /// Executions that reached it.
    pub executions: u64,
    /// Calls or passes.
    pub count: u64,
}

/// Executions in which CPUs `a` and `b` overlapped.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlapWire {
    pub a: usize,
    pub b: usize,
    pub executions: u64,
}

impl From<CoverageTotals> for Vec<BlockTotalsWire> {
    fn from(c: CoverageTotals) -> Self {
        c.blocks
            .into_iter()
            .map(|(item, mut t)| {
                t.settle();
                (item, t)
            })
            .map(|(item, t)| BlockTotalsWire {
                item,
                executions: t.executions,
                functions: t
                    .functions
                    .into_iter()
                    .map(|((name, cpu), (executions, count))| CountWire {
                        name: name.into_owned(),
                        gives_up: false,
                        cpu,
                        executions,
                        count,
                    })
                    .collect(),
                marks: t
                    .marks
                    .into_iter()
                    .map(|((name, gives_up, cpu), (executions, count))| CountWire {
                        name: name.into_owned(),
                        gives_up,
                        cpu,
                        executions,
                        count,
                    })
                    .collect(),
                overlaps: t
                    .overlaps
                    .into_iter()
                    .map(|((a, b), executions)| OverlapWire { a, b, executions })
                    .collect(),
            })
            .collect()
    }
}

impl TryFrom<Vec<BlockTotalsWire>> for CoverageTotals {
    type Error = String;
    fn try_from(v: Vec<BlockTotalsWire>) -> Result<Self, String> {
        let mut c = CoverageTotals::default();
        for b in v {
            let mut t = Totals {
                executions: b.executions,
                ..Totals::default()
            };
            let dup = |what: &str, name: &str| {
                format!("block {}: {what} `{name}` is listed twice", b.item)
            };
            for f in b.functions {
                if f.gives_up {
                    return Err(format!(
                        "block {}: function `{}` marked as giving up",
                        b.item, f.name
                    ));
                }
                let name = f.name.clone();
                if t.functions
                    .insert((Cow::Owned(f.name), f.cpu), (f.executions, f.count))
                    .is_some()
                {
                    return Err(dup("function", &name));
                }
            }
            for m in b.marks {
                let name = m.name.clone();
                if t.marks
                    .insert(
                        (Cow::Owned(m.name), m.gives_up, m.cpu),
                        (m.executions, m.count),
                    )
                    .is_some()
                {
                    return Err(dup("mark", &name));
                }
            }
            for o in b.overlaps {
                if o.a >= o.b {
                    return Err(format!(
                        "block {}: overlap of CPU{} and CPU{} (the first must be lower)",
                        b.item, o.a, o.b
                    ));
                }
                t.overlaps.insert((o.a, o.b), o.executions);
            }
            if c.blocks.insert(b.item, t).is_some() {
                return Err(format!("block {} is listed twice", b.item));
            }
        }
        Ok(c)
    }
}

impl CoverageTotals {
    /// Adds one execution's record of one block.
    pub fn add(&mut self, item: usize, e: &ExecCoverage) {
        let t = self.blocks.entry(item).or_default();
        t.executions += 1;
        for &(cpu, name, n) in &e.calls {
            Fresh::bump(&mut t.fresh.functions, name, cpu, n);
        }
        for &(cpu, name, gives_up, n) in &e.marks {
            Fresh::bump(&mut t.fresh.marks[usize::from(gives_up)], name, cpu, n);
        }
        for &pair in &e.overlaps {
            *t.overlaps.entry(pair).or_default() += 1;
        }
    }

    /// Adds another search's totals (another job's, another shard's).
    pub fn merge(&mut self, other: &CoverageTotals) {
        for (&item, t) in &other.blocks {
            self.blocks.entry(item).or_default().merge(t);
        }
    }

    /// The report, with the scenario's block texts and the warnings.
    pub fn report(&self, scn: &Scenario) -> Vec<BlockCoverage> {
        self.report_blocks(&blocks(scn))
    }

    /// The report of the blocks `blocks` (from [`blocks`], or a shard line).
    pub fn report_blocks(&self, blocks: &[BlockInfo]) -> Vec<BlockCoverage> {
        let mut out = Vec::new();
        for info in blocks {
            let Some(t) = self.blocks.get(&info.item) else {
                continue;
            };
            let t = t.settled();
            let threads = info.threads.clone();
            let ncpu = threads.len();
            let mut functions: BTreeMap<&str, Reach> = BTreeMap::new();
            for ((name, cpu), &(ex, calls)) in &t.functions {
                let (name, cpu) = (name.as_ref(), *cpu);
                let r = functions.entry(name).or_insert_with(|| Reach {
                    name: name.to_string(),
                    gives_up: false,
                    executions: vec![0; ncpu],
                    total: 0,
                });
                if let Some(x) = r.executions.get_mut(cpu) {
                    *x = ex;
                }
                r.total += calls;
            }
            let mut marks: BTreeMap<(&str, bool), Reach> = BTreeMap::new();
            for ((name, gives_up, cpu), &(ex, n)) in &t.marks {
                let (name, gives_up, cpu) = (name.as_ref(), *gives_up, *cpu);
                let r = marks.entry((name, gives_up)).or_insert_with(|| Reach {
                    name: name.to_string(),
                    gives_up,
                    executions: vec![0; ncpu],
                    total: 0,
                });
                if let Some(x) = r.executions.get_mut(cpu) {
                    *x = ex;
                }
                r.total += n;
            }
            let mut overlaps = Vec::new();
            let mut warnings = Vec::new();
            for a in 0..ncpu {
                for b in a + 1..ncpu {
                    let n = t.overlaps.get(&(a, b)).copied().unwrap_or(0);
                    overlaps.push(Overlap {
                        cpus: (a, b),
                        executions: n,
                    });
                    if n == 0 && t.executions > 0 {
                        warnings.push(format!(
                            "CPU{a} and CPU{b} never ran at the same time (inside kernel code or \
                             a user access) in any of the {} executions: the search did not race \
                             them",
                            t.executions
                        ));
                    }
                }
            }
            for r in marks.values().filter(|r| r.gives_up) {
                for (cpu, &ex) in r.executions.iter().enumerate() {
                    if t.executions > 0 && ex == t.executions {
                        warnings.push(format!(
                            "CPU{cpu} (`{}`) gave up early in every execution ({ex} of {}): {}",
                            threads.get(cpu).map_or("?", |t| t.steps.as_str()),
                            t.executions,
                            r.name
                        ));
                    }
                }
            }
            out.push(BlockCoverage {
                line: info.line,
                threads,
                executions: t.executions,
                functions: functions.into_values().collect(),
                marks: marks.into_values().collect(),
                overlaps,
                warnings,
            });
        }
        out
    }
}

/// The text table of a block's coverage.
pub fn text(b: &BlockCoverage) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "coverage of the together block at line {} ({} executions):",
        b.line, b.executions
    );
    for t in &b.threads {
        let _ = writeln!(out, "  CPU{}  {}", t.cpu, t.steps);
    }
    let w = b
        .functions
        .iter()
        .chain(&b.marks)
        .map(|r| r.name.len() + if r.gives_up { 9 } else { 0 })
        .max()
        .unwrap_or(0)
        .max(44)
        + 2;
    let cpus: String = b
        .threads
        .iter()
        .map(|t| format!("{:>8}", format!("CPU{}", t.cpu)))
        .collect();
    let _ = writeln!(
        out,
        "  {:<w$}{cpus}{:>10}",
        "kernel function (executions that entered it)", "calls"
    );
    let row = |out: &mut String, r: &Reach, tag: &str| {
        let counts: String = r
            .executions
            .iter()
            .map(|&n| {
                if n == 0 {
                    format!("{:>8}", "-")
                } else {
                    format!("{n:>8}")
                }
            })
            .collect();
        let name = format!("{tag}{}", r.name);
        let _ = writeln!(out, "  {name:<w$}{counts}{:>10}", r.total);
    };
    for r in &b.functions {
        row(&mut out, r, "");
    }
    if !b.marks.is_empty() {
        let _ = writeln!(out, "  {:<w$}{cpus}{:>10}", "mark", "passes");
        for r in &b.marks {
            row(&mut out, r, if r.gives_up { "gave up: " } else { "" });
        }
    }
    for o in &b.overlaps {
        let _ = writeln!(
            out,
            "  CPU{} and CPU{} ran at the same time in {} of {} executions",
            o.cpus.0, o.cpus.1, o.executions, b.executions
        );
    }
    for w in &b.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use thpsim_model::coverage::Mark;

    fn scn() -> Scenario {
        thpsim_scenario::parse(
            "t.thp",
            "process P\nP: mmap A 1h\nP: write A[..] = 1\ntogether\n  thread P: read A[0]\n  thread kernel: split-huge-page P A[0]\nend\n",
        )
        .expect("parses")
    }

    #[test]
    fn warns_when_cpus_never_overlap_or_one_always_gives_up() {
        let mut t = CoverageTotals::default();
        let mut e = ExecCoverage::default();
        e.calls.push((0, NameId::of("do_user_addr_fault"), 2));
        let ebusy = Mark::gives_up("split_huge_pages_pid: EBUSY");
        e.marks.push((1, NameId::of(ebusy.name), ebusy.gives_up, 1));
        let idx = 3;
        t.add(idx, &e);
        t.add(idx, &e);
        let r = t.report(&scn());
        assert_eq!(r.len(), 1);
        let b = &r[0];
        assert_eq!((b.line, b.executions), (4, 2));
        assert_eq!(b.functions[0].executions, vec![2, 0]);
        assert_eq!(b.functions[0].total, 4);
        assert_eq!(b.warnings.len(), 2, "{:?}", b.warnings);
        assert!(b.warnings[0].contains("never ran at the same time"));
        assert!(b.warnings[1].contains("CPU1 (`kernel: split-huge-page P A[0]`) gave up early"));
        let txt = text(b);
        assert!(
            txt.contains("gave up: split_huge_pages_pid: EBUSY"),
            "{txt}"
        );

        // One execution that overlapped and did not give up: no warning.
        let mut f = ExecCoverage::default();
        f.overlaps.insert((0, 1));
        t.add(idx, &f);
        assert!(t.report(&scn())[0].warnings.is_empty());
    }

    #[test]
    fn totals_merge_and_round_trip_through_json() {
        let mut e = ExecCoverage::default();
        e.calls.push((0, NameId::of("do_user_addr_fault"), 2));
        e.calls.push((1, NameId::of("split_huge_page_to_list"), 1));
        let ebusy = Mark::gives_up("split_huge_pages_pid: EBUSY");
        e.marks.push((1, NameId::of(ebusy.name), ebusy.gives_up, 1));
        e.marks.push((0, NameId::of("a mark"), false, 3));
        e.overlaps.insert((0, 1));
        let (mut a, mut b, mut both) = (
            CoverageTotals::default(),
            CoverageTotals::default(),
            CoverageTotals::default(),
        );
        a.add(3, &e);
        b.add(3, &e);
        b.add(3, &ExecCoverage::default());
        b.add(5, &e);
        for _ in 0..2 {
            both.add(3, &e);
        }
        both.add(3, &ExecCoverage::default());
        both.add(5, &e);
        let json = serde_json::to_string(&b).expect("serializes");
        let back: CoverageTotals = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, b);
        a.merge(&back);
        assert_eq!(a, both);
        let r = a.report(&scn());
        assert_eq!(r[0].executions, 3);
        assert_eq!(r[0].overlaps[0].executions, 2);
        // A malformed list is refused.
        let bad = json.replace(r#""a":0,"b":1"#, r#""a":1,"b":0"#);
        assert_ne!(bad, json);
        assert!(serde_json::from_str::<CoverageTotals>(&bad).is_err());
    }
}
