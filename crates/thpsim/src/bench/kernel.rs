//! `thpsim bench kernel`: the model beside the live kernel it models
//! (issue 13).
//!
//! Each workload is done three ways, alternately, for a number of rounds: by
//! a real process on the running kernel (`thpsim_live::bench`), through the
//! `thpsim run` path (a scenario's steps on the interpreter, with the audit
//! and the memory oracle at every quiescent point, as `thpsim run` does
//! them), and by the raw model (the same kernel functions called directly,
//! no checker). Only the workload's own part is timed on each: the setup
//! (booting the model, mapping and writing the memory the workload starts
//! from) and the teardown are not. A figure is min / median / max over the
//! rounds; a ratio is the kernel's time divided by the model's, per round,
//! so above 1 the model is the faster.
//!
//! The `thpsim run` figure is the time of the workload's steps inside one
//! run of the scenario ([`Machine::run_items_range`] over them, after the
//! setup's steps), so it counts what `thpsim run` spends on them: the
//! interpreter, the model, and the checks at the quiescent point after each
//! step.

use crate::run::{configure, Interleaving, Machine, RunOptions};
use serde::Serialize;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thpsim_live::bench::Workload as Work;
use thpsim_model::mmap::Prot;
use thpsim_model::mmu::Access;
use thpsim_model::types::{CpuId, VirtAddr};
use thpsim_model::{Config, Cpu, Kernel, StdEngine};
use thpsim_scenario::Scenario;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const HPAGE_BYTES: u64 = 2 * MIB;

/// One workload of the benchmark.
#[derive(Clone, Debug)]
pub struct Workload {
    pub name: &'static str,
    /// THP `enabled`: `never` or `always`.
    pub thp: &'static str,
    pub work: Work,
}

/// The workloads of issue 13, in the order the table lists them.
pub fn workloads() -> Vec<Workload> {
    let w = |name, thp, work| Workload { name, thp, work };
    vec![
        w(
            "fault-4k-256m",
            "never",
            Work::Fill {
                len_bytes: 256 * MIB,
            },
        ),
        w("fault-4k-1g", "never", Work::Fill { len_bytes: GIB }),
        w("fault-thp-1g", "always", Work::Fill { len_bytes: GIB }),
        w("fork-cow-1g", "always", Work::ForkCow { len_bytes: GIB }),
        w(
            "fork-chain-2-64m",
            "always",
            Work::ForkChain {
                procs: 2,
                len_bytes: 64 * MIB,
            },
        ),
        w(
            "fork-chain-8-64m",
            "always",
            Work::ForkChain {
                procs: 8,
                len_bytes: 64 * MIB,
            },
        ),
        w(
            "fork-chain-32-64m",
            "always",
            Work::ForkChain {
                procs: 32,
                len_bytes: 64 * MIB,
            },
        ),
        w(
            "munmap-1p-16m",
            "always",
            Work::MunmapOne {
                len_bytes: 16 * MIB,
            },
        ),
        w("munmap-1p-1g", "always", Work::MunmapOne { len_bytes: GIB }),
    ]
}

/// The scenario's first process.
fn first_process(work: Work) -> &'static str {
    match work {
        Work::ForkChain { .. } => "P0",
        _ => "P",
    }
}

impl Workload {
    /// The scenario: its setup (header, process, mmap and, but for a fill,
    /// the write of the whole region), its timed steps, and a last read
    /// (untimed: the end of a run is a full sweep of the memory oracle,
    /// which is the run's cost, not the workload's).
    pub fn scenario(&self) -> (String, String, String) {
        let len = self.work.len_bytes();
        let p = first_process(self.work);
        let mut setup = format!(
            "# thpsim bench kernel: {}\ngeometry x86_64\nthp {}\nmemory {}\nprocess {p}\n{p}: mmap A {len}\n",
            self.name,
            self.thp,
            2 * len + 256 * MIB
        );
        let mut work = String::new();
        match self.work {
            Work::Fill { .. } => {
                let _ = writeln!(work, "{p}: write A[..] = 0x5a");
            }
            Work::ForkCow { .. } => {
                let _ = writeln!(setup, "{p}: write A[..] = 0x5a");
                let _ = writeln!(work, "{p}: fork C");
                let mut off = 0;
                while off < len {
                    let _ = writeln!(work, "C: write A[{off}] = 0x43");
                    off += HPAGE_BYTES;
                }
                let _ = writeln!(work, "C: exit");
            }
            Work::ForkChain { procs, .. } => {
                let _ = writeln!(setup, "{p}: write A[..] = 0x5a");
                for i in 1..procs {
                    let _ = writeln!(work, "P{}: fork P{i}", i - 1);
                }
                for i in (1..procs).rev() {
                    let _ = writeln!(work, "P{i}: exit");
                }
            }
            Work::MunmapOne { .. } => {
                let _ = writeln!(setup, "{p}: write A[..] = 0x5a");
                let mid = len / 2 / 4096 * 4096;
                let _ = writeln!(work, "{p}: munmap A[{mid}..{}]", mid + 4096);
            }
        }
        (setup, work, format!("{p}: read A[0] == 0x5a\n"))
    }

    /// The parsed scenario and the range of its items that is timed.
    fn parsed(&self) -> Result<(Arc<Scenario>, std::ops::Range<usize>), String> {
        let (setup, work, last) = self.scenario();
        let name = format!("bench-{}.thp", self.name);
        let items = |text: &str| -> Result<usize, String> {
            Ok(thpsim_scenario::parse(&name, text)
                .map_err(|e| e.to_string())?
                .items
                .len())
        };
        let timed = items(&setup)?..items(&format!("{setup}{work}"))?;
        let scn = thpsim_scenario::parse(&name, &format!("{setup}{work}{last}"))
            .map_err(|e| e.to_string())?;
        Ok((Arc::new(scn), timed))
    }
}

/// The workload's steps (`timed`) through the `thpsim run` path, after its
/// setup; then the rest of the run, untimed.
fn time_run(scn: &Arc<Scenario>, timed: std::ops::Range<usize>) -> Result<Duration, String> {
    let (cfg, units) = configure(scn, &RunOptions::default()).map_err(|e| e.to_string())?;
    let m = Arc::new(Machine::<StdEngine>::new(
        scn.clone(),
        cfg,
        units,
        Interleaving::Fixed,
    ));
    m.run_items_range(0..timed.start)
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    m.run_items_range(timed.clone())
        .map_err(|e| e.to_string())?;
    let dt = t.elapsed();
    m.run_items_range(timed.end..scn.items.len())
        .map_err(|e| e.to_string())?;
    let report = m.report();
    if !report.passed() {
        return Err(format!(
            "the scenario did not pass on the model: {}",
            crate::output::text(&report)
        ));
    }
    Ok(dt)
}

/// Writes every byte of `[a, a + len)`, a page at a time (as the
/// interpreter's `write A[..]` does).
fn fill(
    cpu: &Cpu<StdEngine>,
    mm: &Arc<thpsim_model::mm_types::MmStruct<StdEngine>>,
    a: VirtAddr,
    len: u64,
) -> Result<(), String> {
    let page = cpu.k.geo.page_size();
    let mut off = 0;
    while off < len {
        cpu.user_fill(mm, a.add_bytes(off), page, 0x5a)
            .map_err(|e| format!("{e:?}"))?;
        off += page;
    }
    Ok(())
}

/// The workload on the raw model: the kernel functions called directly.
fn time_raw(work: Work, cfg: Config) -> Result<Duration, String> {
    let k = Kernel::<StdEngine>::new(cfg);
    let cpu = Cpu::new(k, CpuId(0));
    let mm = cpu.mm_alloc();
    let len = work.len_bytes();
    let a = cpu
        .do_mmap(&mm, len, Prot::ReadWrite, cpu.k.geo.pmd_size())
        .map_err(|e| format!("mmap: {e:?}"))?;
    let err = |what: &str| {
        let what = what.to_string();
        move |e: &dyn std::fmt::Debug| format!("{what}: {e:?}")
    };
    let dt = match work {
        Work::Fill { .. } => {
            let t = Instant::now();
            fill(&cpu, &mm, a, len)?;
            t.elapsed()
        }
        Work::ForkCow { .. } => {
            fill(&cpu, &mm, a, len)?;
            let t = Instant::now();
            let child = cpu.dup_mm(&mm).map_err(|e| err("fork")(&e))?;
            let mut off = 0;
            while off < len {
                cpu.user_access(&child, a.add_bytes(off), Access::Write(0x43))
                    .map_err(|e| err("write")(&e))?;
                off += HPAGE_BYTES;
            }
            cpu.mmput(&child);
            t.elapsed()
        }
        Work::ForkChain { procs, .. } => {
            fill(&cpu, &mm, a, len)?;
            let t = Instant::now();
            let mut chain = vec![mm.clone()];
            for _ in 1..procs {
                let next = cpu
                    .dup_mm(chain.last().expect("the first"))
                    .map_err(|e| err("fork")(&e))?;
                chain.push(next);
            }
            for child in chain[1..].iter().rev() {
                cpu.mmput(child);
            }
            t.elapsed()
        }
        Work::MunmapOne { .. } => {
            fill(&cpu, &mm, a, len)?;
            let mid = a.add_bytes(len / 2 / 4096 * 4096);
            let t = Instant::now();
            cpu.do_munmap(&mm, mid, cpu.k.geo.page_size())
                .map_err(|e| err("munmap")(&e))?;
            t.elapsed()
        }
    };
    let reports = cpu.k.reports();
    if !reports.is_empty() {
        return Err(format!("the raw model reported {reports:?}"));
    }
    Ok(dt)
}

/// Min, median and max of a sample, in seconds (or a plain ratio).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Spread {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Spread {
            min: s.first().copied().unwrap_or(f64::NAN),
            median,
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// One workload's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub workload: &'static str,
    pub thp: &'static str,
    pub rounds: usize,
    /// Seconds.
    pub kernel: Spread,
    pub run: Spread,
    pub raw: Spread,
    /// Kernel time / model time, per round.
    pub ratio_run: Spread,
    pub ratio_raw: Spread,
}

/// Runs the workloads named in `only` (all when empty), `rounds` rounds
/// each, and returns their figures; `progress` is told of each workload as
/// it starts. Needs the live kernel (root): see `thpsim_live::bench`.
pub fn run(
    rounds: usize,
    only: &[String],
    mut progress: impl FnMut(&str),
) -> Result<Vec<Figures>, String> {
    let all = workloads();
    if let Some(bad) = only
        .iter()
        .find(|n| !all.iter().any(|w| w.name == n.as_str()))
    {
        let names: Vec<&str> = all.iter().map(|w| w.name).collect();
        return Err(format!(
            "no workload `{bad}`; the workloads are {}",
            names.join(", ")
        ));
    }
    let chosen: Vec<Workload> = all
        .into_iter()
        .filter(|w| only.is_empty() || only.iter().any(|n| n == w.name))
        .collect();
    let rounds = rounds.max(1);
    let mut out = Vec::new();
    // One live session per THP setting (the knobs are put back when it ends).
    for thp in ["never", "always"] {
        let group: Vec<&Workload> = chosen.iter().filter(|w| w.thp == thp).collect();
        if group.is_empty() {
            continue;
        }
        let live = thpsim_live::bench::KernelBench::start(thp).map_err(|e| e.to_string())?;
        for w in group {
            progress(w.name);
            let (scn, timed) = w.parsed()?;
            let (cfg, _) = configure(&scn, &RunOptions::default()).map_err(|e| e.to_string())?;
            let (mut kernel, mut run, mut raw) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                kernel.push(
                    live.run(w.work)
                        .map_err(|e| format!("{}: {e}", w.name))?
                        .as_secs_f64(),
                );
                run.push(
                    time_run(&scn, timed.clone())
                        .map_err(|e| format!("{}: {e}", w.name))?
                        .as_secs_f64(),
                );
                raw.push(
                    time_raw(w.work, cfg.clone())
                        .map_err(|e| format!("{}: {e}", w.name))?
                        .as_secs_f64(),
                );
            }
            let ratio =
                |m: &[f64]| -> Vec<f64> { kernel.iter().zip(m).map(|(k, m)| k / m).collect() };
            out.push(Figures {
                kind: "bench-kernel",
                workload: w.name,
                thp,
                rounds,
                kernel: Spread::of(&kernel),
                run: Spread::of(&run),
                raw: Spread::of(&raw),
                ratio_run: Spread::of(&ratio(&run)),
                ratio_raw: Spread::of(&ratio(&raw)),
            });
        }
    }
    let order: Vec<&str> = chosen.iter().map(|w| w.name).collect();
    out.sort_by_key(|f| order.iter().position(|n| *n == f.workload));
    Ok(out)
}

/// A time with its unit.
fn secs(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn spread_secs(s: &Spread) -> String {
    format!("{} / {} / {}", secs(s.min), secs(s.median), secs(s.max))
}

fn spread_ratio(s: &Spread) -> String {
    format!("{:.2}× / {:.2}× / {:.2}×", s.min, s.median, s.max)
}

/// The Markdown table of docs/PERFORMANCE.md.
pub fn table(figs: &[Figures], kernel_release: &str) -> String {
    let mut out = String::new();
    let rounds = figs.first().map_or(0, |f| f.rounds);
    let _ = writeln!(
        out,
        "Linux {kernel_release} beside the model, {rounds} rounds, min / median / max; ratio = kernel time ÷ model time (above 1: the model is faster)\n"
    );
    let _ = writeln!(
        out,
        "| workload | THP | kernel | `thpsim run` | ratio (run) | raw model | ratio (raw) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for f in figs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            f.workload,
            f.thp,
            spread_secs(&f.kernel),
            spread_secs(&f.run),
            spread_ratio(&f.ratio_run),
            spread_secs(&f.raw),
            spread_ratio(&f.ratio_raw),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every workload's scenario parses, its setup is a strict prefix, and
    /// the small ones run on the model to a pass through both model paths
    /// (the live side needs root and is run by `thpsim bench kernel`).
    #[test]
    fn workloads_parse_and_the_small_ones_run_on_the_model() {
        for w in workloads() {
            let (scn, timed) = w.parsed().expect("parses");
            assert!(
                !timed.is_empty() && timed.end < scn.items.len(),
                "{}",
                w.name
            );
            let big_chain = matches!(w.work, Work::ForkChain { procs, .. } if procs > 8);
            if w.work.len_bytes() <= 64 * MIB && !big_chain {
                time_run(&scn, timed).expect("run path");
                let (cfg, _) = configure(&scn, &RunOptions::default()).expect("config");
                time_raw(w.work, cfg).expect("raw model");
            }
        }
    }

    #[test]
    fn a_spread_is_min_median_max() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
        let s = Spread::of(&[5.0]);
        assert_eq!((s.min, s.median, s.max), (5.0, 5.0, 5.0));
    }

    #[test]
    fn an_unknown_workload_is_refused_by_name() {
        let e = run(1, &["fault-9k".to_string()], |_| {}).unwrap_err();
        assert!(e.contains("no workload `fault-9k`"), "{e}");
        assert!(e.contains("fork-chain-32-64m"), "{e}");
    }
}
