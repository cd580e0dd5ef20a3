//! The copy of a machine loses nothing (issue 8, "The prefix runs once").
//!
//! - Every bundled scenario (`scenarios/`, `scenarios/conform/`,
//!   `scenarios/races/`, with and without its race's fix), on every geometry
//!   the corpus runs it on, reports exactly the same records run straight
//!   through on the std engine as run up to any item boundary, copied
//!   (`Machine::snapshot`) and finished on the copy.
//! - The explorer, which runs the steps before a `together` block once and
//!   starts every execution from a copy, searches exactly as it does with the
//!   copy turned off (`THPSIM_PREFIX_COPY=0`: every execution builds its
//!   machine and runs every item): the same executions, distinct schedules,
//!   coverage and bounded counts, and, with a race's fix reverted, the same
//!   failure, report, trace and replay token.

use std::sync::{Arc, Mutex};
use thpsim::bundled::BUNDLED;
use thpsim::explore::{explore, prefix, ExploreOptions, ExploreReport, Strategy};
use thpsim::run::{configure, Interleaving, Machine, RunOptions};
use thpsim_model::fixes::Fix;
use thpsim_model::StdEngine;
use thpsim_scenario::{Geometry, Scenario};

/// The race scenarios' fixes (the ones that can be reverted).
fn fix_of(name: &str) -> Option<Fix> {
    match name {
        "races/split_page_vs_zap" => Some(Fix::RmapPmdUnderPtl),
        n if n.starts_with("races/split_pmd_vs_wp_fault") => Some(Fix::SplitPmdPageLock),
        _ => None,
    }
}

fn records_json(m: &Machine<StdEngine>) -> Vec<String> {
    m.report()
        .records
        .iter()
        .map(|r| serde_json::to_string(r).expect("serializes"))
        .collect()
}

/// Runs `scn` straight through, then checks every item boundary where the
/// machine is live (a stopped run holds the locks of the CPU that oopsed,
/// and runs nothing more): the items before it on one machine, the rest on
/// a copy, the same records. Returns the boundaries checked.
fn straight_equals_copied(scn: &Scenario, opts: &RunOptions) -> usize {
    let (mut cfg, units) = configure(scn, opts).expect("valid");
    let scn = Arc::new(scn.clone());
    if scn.header.memory.is_none() && cfg.geometry == thpsim_model::types::Geometry::X86_64 {
        // A copy copies every `struct page`: 524,288 of them for the
        // default 2 GiB. The corpus fits in 128 MiB, where the scenario
        // runs exactly as in the default machine (checked here).
        let full = thpsim::run::run(&scn, opts).expect("valid");
        cfg.memory_bytes = 128 << 20;
        let m = Arc::new(Machine::<StdEngine>::new(
            scn.clone(),
            cfg.clone(),
            units,
            Interleaving::Fixed,
        ));
        m.run_items().expect("valid");
        let json = |r: &[thpsim::run::Record]| serde_json::to_string(r).expect("serializes");
        assert_eq!(
            json(&m.report().records),
            json(&full.records),
            "{}: 128 MiB changes the run",
            scn.name
        );
    }
    let new = || {
        Arc::new(Machine::<StdEngine>::new(
            scn.clone(),
            cfg.clone(),
            units,
            Interleaving::Fixed,
        ))
    };
    let straight = new();
    straight.run_items().expect("valid");
    let want = records_json(&straight);
    // One machine walks the items one at a time; at each boundary a copy of
    // it finishes the scenario.
    let walk = new();
    let n = scn.items.len();
    let mut checked = 0;
    for i in 0..=n {
        if !walk.dead() {
            // Tiny machines are copied whole; the big ones with a copy plan,
            // as the explorer copies them (frames in their boot state made
            // afresh): both kinds of copy are checked, and the big ones fast.
            let copy = Arc::new(if cfg.geometry.name == "x86_64" {
                walk.snapshot_planned(&walk.k.copy_plan())
            } else {
                walk.snapshot()
            });
            copy.run_items_from(i).expect("valid");
            assert_eq!(
                records_json(&copy),
                want,
                "{} ({}, reverted {:?}): copied after item {i} of {n}",
                scn.name,
                cfg.geometry.name,
                opts.reverts
            );
            checked += 1;
        }
        if i < n {
            walk.run_items_range(i..i + 1).expect("valid");
        }
    }
    assert_eq!(records_json(&walk), want, "{}: item by item", scn.name);
    checked
}

#[test]
fn every_scenario_reports_the_same_from_a_copy_at_every_item_boundary() {
    let mut runs = 0;
    let mut boundaries = 0;
    for (name, src) in BUNDLED {
        let scn = thpsim_scenario::parse(name, src).unwrap_or_else(|e| panic!("{name}: {e}"));
        // As the corpus: the conformance scenarios on the live kernel's
        // geometry, the others on both.
        // A scenario marked `# geometries: tiny` needs what only the tiny
        // geometry's sizes allow (a PUD-sized hugetlb file is 4 huge pages
        // there, 512 on x86_64).
        let geometries: &[Geometry] = if name.starts_with("conform/") {
            &[Geometry::X86_64]
        } else if src.contains("# geometries: tiny") {
            &[Geometry::Tiny]
        } else {
            &[Geometry::Tiny, Geometry::X86_64]
        };
        let mut reverts = vec![Vec::new()];
        reverts.extend(fix_of(name).map(|f| vec![f]));
        for &geometry in geometries {
            for r in &reverts {
                let opts = RunOptions {
                    geometry: Some(geometry),
                    reverts: r.clone(),
                    ..RunOptions::default()
                };
                boundaries += straight_equals_copied(&scn, &opts);
                runs += 1;
            }
        }
    }
    assert!(runs >= 60, "only {runs} runs");
    assert!(boundaries >= 10 * runs, "only {boundaries} boundaries");
}

/// `THPSIM_PREFIX_COPY` is process-wide: the tests that set it take turns.
static ENV: Mutex<()> = Mutex::new(());

/// Explores with the prefix copy on or off; with it on, checks that the
/// executions did start from a copy (a prefix was built) when the scenario
/// has a `together` block.
fn explore_with(scn: &Scenario, opts: &ExploreOptions, copy: bool) -> ExploreReport {
    std::env::set_var("THPSIM_PREFIX_COPY", if copy { "1" } else { "0" });
    let before = prefix::built();
    let r = explore(scn, opts).expect("valid");
    let built = prefix::built() - before;
    std::env::remove_var("THPSIM_PREFIX_COPY");
    let has_block = scn
        .items
        .iter()
        .any(|i| matches!(i, thpsim_scenario::Item::Together(_)));
    assert_eq!(
        built > 0,
        copy && has_block,
        "{}: {built} prefixes",
        scn.name
    );
    r
}

/// Everything a search reports but its time.
fn essence(r: &ExploreReport) -> String {
    let mut v = serde_json::to_value(r).expect("serializes");
    v.as_object_mut().expect("object").remove("elapsed_ms");
    format!("{v}\nfingerprints {:?}", r.fingerprints)
}

fn races() -> Vec<(&'static str, Scenario)> {
    BUNDLED
        .iter()
        .filter(|(n, _)| n.starts_with("races/"))
        .map(|(n, src)| (*n, thpsim_scenario::parse(n, src).expect("parses")))
        .collect()
}

#[test]
fn searches_are_the_same_with_and_without_the_prefix_copy() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let races = races();
    assert!(races.len() >= 5);
    for (name, scn) in &races {
        let mut searches = vec![
            ExploreOptions {
                iterations: 300,
                seed: 3,
                ..ExploreOptions::default()
            },
            ExploreOptions {
                iterations: 300,
                strategy: Strategy::Random,
                seed: 4,
                ..ExploreOptions::default()
            },
            ExploreOptions {
                iterations: 300,
                strategy: Strategy::Bounded { preemptions: 1 },
                ..ExploreOptions::default()
            },
        ];
        if let Some(fix) = fix_of(name) {
            searches.push(ExploreOptions {
                run: RunOptions {
                    reverts: vec![fix],
                    ..RunOptions::default()
                },
                iterations: 20_000,
                seed: 1,
                ..ExploreOptions::default()
            });
        }
        for opts in &searches {
            let with = explore_with(scn, opts, true);
            let without = explore_with(scn, opts, false);
            assert_eq!(
                essence(&with),
                essence(&without),
                "{name} ({:?}, reverted {:?})",
                opts.strategy,
                opts.run.reverts
            );
            if opts.run.reverts.is_empty() {
                assert!(with.found.is_none(), "{name}: fails with its fix");
            } else {
                let found = with.found.as_ref().expect("the reverted race is found");
                assert!(!found.trace.is_empty());
                let trace = |r: &ExploreReport| {
                    serde_json::to_string(&r.found.as_ref().expect("found").trace)
                        .expect("serializes")
                };
                assert_eq!(trace(&with), trace(&without), "{name}: the trace");
            }
        }
    }
}

/// A step before the block fails: every execution would fail the same way,
/// so the search stops at its first execution and reports that failure with
/// the schedule shrunk to nothing, with the copy as without it. A scenario
/// without a block is one execution either way.
#[test]
fn a_failing_prefix_and_a_scenario_without_a_block_search_as_before() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let failing = thpsim_scenario::parse(
        "failing_prefix.thp",
        "geometry tiny\nthp always\nprocess P\nP: mmap A 1h\nP: write A[..] = 0x11\n\
         P: read A[0] == 0x22\ntogether\n  thread P: write A[0] = 0x22\n  \
         thread P: write A[1p] = 0x33\nend\n",
    )
    .expect("parses");
    let sequential = thpsim_scenario::parse(
        "sequential.thp",
        "geometry tiny\nprocess P\nP: mmap A 1p\nP: write A[0] = 1\nP: read A[0] == 1\n",
    )
    .expect("parses");
    let opts = ExploreOptions {
        iterations: 500,
        ..ExploreOptions::default()
    };
    let with = explore_with(&failing, &opts, true);
    assert_eq!(
        essence(&with),
        essence(&explore_with(&failing, &opts, false))
    );
    assert_eq!(with.executions, 1);
    let found = with.found.expect("the prefix's failure");
    assert!(found.what.contains("line 6"), "{}", found.what);
    assert_eq!(found.switches_shrunk, 0);

    let with = explore_with(&sequential, &opts, true);
    assert_eq!(
        essence(&with),
        essence(&explore_with(&sequential, &opts, false))
    );
    assert_eq!(with.executions, 1);
    assert!(with.found.is_none());
}
