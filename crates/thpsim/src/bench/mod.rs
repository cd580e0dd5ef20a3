//! `thpsim bench races`: the exploration figures of docs/PERFORMANCE.md
//! (`thpsim bench kernel`, the model beside the live kernel: [`kernel`]).
//!
//! For each bundled race scenario: interleavings per second on one core with
//! the fix in (a clean search), and the time to the first failure with the fix
//! reverted, median and worst over a number of seeds, per strategy (a race
//! scenario without a fix to revert, the regression of a model defect, gets
//! the clean search only); then the bounded search up to two preemptions on
//! one core: its schedules and time with the fix, and the time to the failure
//! with the fix reverted. A bounded search is given [`BOUNDED_CAP_SECS`]: one
//! that does not end by then is reported as not exhaustive, with what it ran.
//! A bounded search that takes over [`PARALLEL_AFTER_SECS`] on one core runs
//! again with a job per core (`thpsim explore`'s default `--jobs`), and both
//! times are reported.

pub mod kernel;

use crate::bundled::BUNDLED;
use crate::explore::{explore, ExploreOptions, Strategy};
use crate::run::RunOptions;
use std::fmt::Write;
use std::time::Instant;
use thpsim_model::fixes::Fix;

/// Which fix each race scenario exercises: its first `--revert` in the header
/// comment.
fn fix_of(src: &str) -> Option<Fix> {
    src.lines()
        .filter_map(|l| l.split("--revert ").nth(1))
        .find_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            Fix::by_name(&name)
        })
}

/// The time a bounded search of the benchmark is given.
pub const BOUNDED_CAP_SECS: u64 = 120;

/// A one-core bounded search longer than this is also timed on every core.
pub const PARALLEL_AFTER_SECS: f64 = 30.0;

/// Runs the race benchmarks and renders a markdown report.
pub fn races(seeds: u64, clean_iterations: usize, max_iterations: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| scenario | fix | strategy | clean search: interleavings/s | reverted: found in (median / worst over {seeds} seeds) | executions to find (median / worst) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let races: Vec<_> = BUNDLED
        .iter()
        .filter(|(n, _)| n.starts_with("races/"))
        .filter_map(|(name, src)| {
            Some((*name, fix_of(src), thpsim_scenario::parse(name, src).ok()?))
        })
        .collect();
    for (name, fix, scn) in &races {
        for strategy in [Strategy::Pct, Strategy::Random] {
            let opts = |reverts: Vec<Fix>, seed: u64, iterations: usize| ExploreOptions {
                run: RunOptions {
                    reverts,
                    ..RunOptions::default()
                },
                strategy,
                iterations,
                seed,
                ..ExploreOptions::default()
            };
            let t = Instant::now();
            let clean = explore(scn, &opts(Vec::new(), 0, clean_iterations));
            let secs = t.elapsed().as_secs_f64();
            let rate = match &clean {
                Ok(r) if r.found.is_none() => format!("{:.0}", r.executions as f64 / secs),
                Ok(_) => "FAILED with the fix".to_string(),
                Err(e) => format!("invalid: {e}"),
            };
            let Some(fix) = *fix else {
                let _ = writeln!(
                    out,
                    "| {name} | (none) | {} | {rate} | - | - |",
                    strategy.name()
                );
                continue;
            };
            let mut times = Vec::new();
            let mut execs = Vec::new();
            let mut missed = 0;
            for seed in 0..seeds {
                let t = Instant::now();
                match explore(scn, &opts(vec![fix], seed, max_iterations)) {
                    Ok(r) if r.found.is_some() => {
                        times.push(t.elapsed().as_secs_f64());
                        execs.push(r.found.map_or(0, |f| f.at_execution));
                    }
                    _ => missed += 1,
                }
            }
            times.sort_by(|a, b| a.total_cmp(b));
            execs.sort_unstable();
            let found = if times.is_empty() {
                format!("not found in {max_iterations} interleavings ({missed}/{seeds} seeds)")
            } else {
                let miss = if missed > 0 {
                    format!("; {missed} seed(s) not found in {max_iterations}")
                } else {
                    String::new()
                };
                format!(
                    "{:.3} s / {:.3} s{miss}",
                    times[times.len() / 2],
                    times[times.len() - 1]
                )
            };
            let ex = if execs.is_empty() {
                "-".to_string()
            } else {
                format!("{} / {}", execs[execs.len() / 2], execs[execs.len() - 1])
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {rate} | {found} | {ex} |",
                fix.name(),
                strategy.name()
            );
        }
    }
    let _ = writeln!(out);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(out, "| scenario | fix | bounded, 2 preemptions, fix in: schedules, pruned, time, schedules/s (one core) | the same search on {cores} cores (when over {PARALLEL_AFTER_SECS:.0} s on one) | reverted: found after (schedules, time) |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for (name, fix, scn) in &races {
        let opts = |reverts: Vec<Fix>| ExploreOptions {
            run: RunOptions {
                reverts,
                ..RunOptions::default()
            },
            strategy: Strategy::Bounded { preemptions: 2 },
            iterations: usize::MAX,
            time: Some(std::time::Duration::from_secs(BOUNDED_CAP_SECS)),
            ..ExploreOptions::default()
        };
        let t = Instant::now();
        let mut long = false;
        let clean = match explore(scn, &opts(Vec::new())) {
            Ok(r) => {
                let secs = t.elapsed().as_secs_f64();
                long = secs > PARALLEL_AFTER_SECS;
                match (r.found, r.bounded) {
                    (None, Some(b)) if b.complete => format!(
                        "{}, {}, {secs:.1} s, {:.0}",
                        b.schedules,
                        b.pruned,
                        b.schedules as f64 / secs
                    ),
                    (Some(_), _) => "FAILED with the fix".to_string(),
                    (None, Some(b)) => format!(
                        "not exhaustive in {BOUNDED_CAP_SECS} s: {} schedules, {} pruned",
                        b.schedules, b.pruned
                    ),
                    _ => "not exhaustive".to_string(),
                }
            }
            Err(e) => format!("invalid: {e}"),
        };
        let parallel = if long && cores > 1 {
            let t = Instant::now();
            let all = ExploreOptions {
                jobs: cores,
                ..opts(Vec::new())
            };
            match explore(scn, &all) {
                Ok(r) if r.found.is_none() && r.bounded.is_some_and(|b| b.complete) => {
                    format!("{:.1} s", t.elapsed().as_secs_f64())
                }
                Ok(r) if r.found.is_some() => "FAILED with the fix".to_string(),
                Ok(_) => format!("not exhaustive in {BOUNDED_CAP_SECS} s"),
                Err(e) => format!("invalid: {e}"),
            }
        } else {
            "-".to_string()
        };
        let reverted = match fix {
            None => "-".to_string(),
            Some(fix) => {
                let t = Instant::now();
                match explore(scn, &opts(vec![*fix])) {
                    Ok(r) if r.found.is_some() => {
                        format!(
                            "{} schedules, {:.2} s",
                            r.executions,
                            t.elapsed().as_secs_f64()
                        )
                    }
                    Ok(r) if r.bounded.is_some_and(|b| b.complete) => {
                        "not found within the bound".to_string()
                    }
                    Ok(r) => format!(
                        "not found in {BOUNDED_CAP_SECS} s ({} schedules)",
                        r.executions
                    ),
                    Err(e) => format!("invalid: {e}"),
                }
            }
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {clean} | {parallel} | {reverted} |",
            fix.map_or("(none)", |f| f.name())
        );
    }
    out
}
