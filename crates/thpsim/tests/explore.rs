//! The explorer on the bundled race scenarios: each is clean with its fix over
//! a bounded search (PCT and random), fails with the fix reverted, and a
//! committed replay token reproduces the committed trace exactly.

use std::path::{Path, PathBuf};
use thpsim::explore::{explore, render_columns, replay, ExploreOptions, Strategy};
use thpsim::run::RunOptions;
use thpsim_model::fixes::Fix;

/// Race scenario, the fix it exercises.
const RACES: &[(&str, Fix)] = &[
    ("split_pmd_vs_wp_fault", Fix::SplitPmdPageLock),
    ("split_page_vs_zap", Fix::RmapPmdUnderPtl),
];

/// Race scenarios of model defects (issue 7): Linux 5.8 has no failure there,
/// so there is no fix to revert; each must be clean over a bounded search on
/// both geometries.
const CLEAN: &[&str] = &["fork_vs_deferred_split"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scenario(name: &str) -> thpsim_scenario::Scenario {
    let path = root().join(format!("scenarios/races/{name}.thp"));
    let src = std::fs::read_to_string(&path).expect("race scenario");
    thpsim_scenario::parse(&format!("scenarios/races/{name}.thp"), &src).expect("parses")
}

fn opts(strategy: Strategy, iterations: usize, seed: u64, reverts: Vec<Fix>) -> ExploreOptions {
    ExploreOptions {
        run: RunOptions {
            geometry: None,
            reverts,
        },
        strategy,
        iterations,
        seed,
        ..ExploreOptions::default()
    }
}

#[test]
fn races_are_clean_with_their_fix() {
    for (name, _) in RACES {
        let scn = scenario(name);
        for strategy in [Strategy::Pct, Strategy::Random] {
            let r = explore(&scn, &opts(strategy, 1500, 7, Vec::new())).expect("valid");
            assert!(
                r.found.is_none(),
                "{name} ({strategy:?}) failed with the fix: {:?}",
                r.found.map(|f| f.what)
            );
            assert_eq!(r.executions, 1500, "{name}: the whole search ran");
            assert!(
                r.distinct > 100,
                "{name}: only {} distinct interleavings",
                r.distinct
            );
        }
    }
}

#[test]
fn model_defect_races_are_clean() {
    for name in CLEAN {
        let scn = scenario(name);
        for strategy in [Strategy::Pct, Strategy::Random] {
            let r = explore(&scn, &opts(strategy, 1500, 7, Vec::new())).expect("valid");
            assert!(
                r.found.is_none(),
                "{name} ({strategy:?}) failed: {:?}",
                r.found.map(|f| f.what)
            );
            assert_eq!(r.executions, 1500, "{name}: the whole search ran");
            assert!(
                r.distinct > 100,
                "{name}: only {} distinct interleavings",
                r.distinct
            );
        }
        // x86_64: a PMD maps 512 pages, so each execution is slow; a short
        // search still reaches the window (this seed found the defect at the
        // 9th interleaving).
        let mut o = opts(Strategy::Pct, 10, 2, Vec::new());
        o.run.geometry = Some(thpsim_scenario::Geometry::X86_64);
        let r = explore(&scn, &o).expect("valid");
        assert!(
            r.found.is_none(),
            "{name} (x86_64) failed: {:?}",
            r.found.map(|f| f.what)
        );
    }
}

#[test]
fn races_are_found_with_the_fix_reverted() {
    for (name, fix) in RACES {
        let scn = scenario(name);
        // Seed 001's window is one memory access wide while the splitter runs
        // dozens: a uniformly random schedule almost never keeps the zapping
        // CPU out that long (docs/PERFORMANCE.md); PCT finds it at once.
        let strategies: &[(Strategy, u64)] = if *fix == Fix::RmapPmdUnderPtl {
            &[(Strategy::Pct, 1), (Strategy::Pct, 2)]
        } else {
            &[(Strategy::Pct, 1), (Strategy::Random, 2)]
        };
        for &(strategy, seed) in strategies {
            let r = explore(&scn, &opts(strategy, 20_000, seed, vec![*fix])).expect("valid");
            let found = r.found.unwrap_or_else(|| {
                panic!(
                    "{name} ({strategy:?}): not found in {} interleavings",
                    r.executions
                )
            });
            assert!(found.switches_shrunk <= found.switches_found);
            assert!(found.token.starts_with("thp1-t-"), "{}", found.token);
            assert!(!found.trace.is_empty());
        }
    }
}

#[test]
fn committed_tokens_replay_the_committed_traces() {
    let bless = std::env::var_os("THPSIM_BLESS").is_some();
    for (name, _) in RACES {
        let scn = scenario(name);
        let tok_path = root().join(format!("tests/replay/{name}.token"));
        let token = std::fs::read_to_string(&tok_path).expect("token");
        let found = replay(&scn, token.trim())
            .expect("valid")
            .expect("token parses");
        assert!(!found.report.passed(), "{name}: the token no longer fails");
        let trace = format!("{}\n{}\n", found.what, render_columns(&found.trace, 5, 44));
        let trace_path = root().join(format!("tests/replay/{name}.trace"));
        if bless {
            std::fs::write(&trace_path, &trace).expect("write trace");
        }
        let want = std::fs::read_to_string(&trace_path)
            .expect("committed trace (THPSIM_BLESS=1 writes it)");
        assert_eq!(trace, want, "{name}: the replayed trace changed");
        // Twice: replay is deterministic.
        let again = replay(&scn, token.trim()).expect("valid").expect("parses");
        assert_eq!(
            format!("{}\n{}\n", again.what, render_columns(&again.trace, 5, 44)),
            want
        );
    }
}

#[test]
fn bad_tokens_are_refused() {
    let scn = scenario("split_pmd_vs_wp_fault");
    for bad in [
        "",
        "thp2-t-0-0",
        "thp1-q-0-0",
        "thp1-t-zz-0",
        "thp1-t-0-1:x",
    ] {
        assert!(
            replay(&scn, bad).expect("valid scenario").is_err(),
            "{bad:?} accepted"
        );
    }
}
